// Runs the CUDA compiler as a child process and collects what it prints.
#pragma once

#include <string>
#include <vector>

#include "flashserve/core/status.h"

namespace flashserve::runtime {

struct ProcessResult {
  int exit_code = -1;  // the child's exit status; 128 + signal when it was killed
  std::string output;  // stdout and stderr, interleaved as written
};

// posix_spawn (no fork of a possibly large, multi-threaded process) of argv[0] with the current
// environment; blocks until the child exits. A Status error only when it could not be started.
Status run_process(const std::vector<std::string>& argv, ProcessResult* result);

// "a b 'c d'": for logs and error messages.
std::string shell_quote(const std::vector<std::string>& argv);

}  // namespace flashserve::runtime
