// Writing benchmark results: an aligned table for the terminal, JSON or CSV for files.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "harness/routine.h"

namespace fs_bench {

struct RunInfo {
  std::string device;
  std::string library_version;
  double ceiling_tbps = 0;
};

void print_table(std::ostream& os, const std::vector<Result>& results);
void write_json(std::ostream& os, const RunInfo& info, const std::vector<Result>& results);
void write_csv(std::ostream& os, const std::vector<Result>& results);

}  // namespace fs_bench
