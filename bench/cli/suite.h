// The default benchmark suite: each routine over the shapes of real models.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "harness/routine.h"

namespace fs_bench {

struct Model {
  const char* name;
  int64_t hidden, intermediate, q_heads, kv_heads, head_dim;
};

const std::vector<Model>& models();

// (routine, args) pairs; `routines` filters (empty = all).
std::vector<std::pair<std::string, Args>> default_suite(const std::vector<std::string>& routines);

}  // namespace fs_bench
