// Where the kernel cache lives, where the kernel headers and the compiler are, what to compile
// for: read once from the environment (docs/kernel_cache.md lists the variables).
//
//   FLASHSERVE_CACHE_DIR       cache root (default $XDG_CACHE_HOME/flashserve,
//   ~/.cache/flashserve);
//                              entries go to <root>/<library version>/<arch tag>/
//   FLASHSERVE_CUDA_ARCH_LIST  targets, e.g. "90a" or "90a;100a" (default: the device's)
//   FLASHSERVE_DISABLE_JIT=1   a kernel neither prebuilt nor cached is an error, never compiled
//   FLASHSERVE_JIT_VERBOSE=1   print the compiler command and its output
//   FLASHSERVE_JIT_DEBUG=1     compile with device debug info (-G), asserts on
//   FLASHSERVE_INCLUDE_DIR     the kernel headers (default: next to the loaded libflashserve, as
//                              installed, else the source tree it was built from)
//   FLASHSERVE_CUTLASS_DIR     CUTLASS / CuTe headers (default: the build's)
//   FLASHSERVE_NVCC            the compiler (default: $CUDA_HOME/bin/nvcc, the build's, PATH)
#pragma once

#include <string>
#include <vector>

#include "runtime/include_scan.h"

namespace flashserve::runtime {

struct JitConfig {
  std::string cache_root;
  std::string include_dir;         // flashserve's headers (contains flashserve/runtime.h)
  std::string cutlass_dir;         // empty: none found
  std::string nvcc;                // empty: none found
  std::vector<std::string> archs;  // normalized ("90a"); empty: the device's
  std::vector<std::string> flags;  // compiler flags, without -I, -gencode and -o
  std::string toolkit_version;     // part of every key
  std::string library_version;     // part of every key and of the cache path
  bool verbose = false, debug = false, disabled = false;
  std::vector<std::string> problems;  // environment values that were ignored, and why

  static JitConfig from_environment();
  // The include roots the scanner and the compiler use: ours, then CUTLASS (keyed by version).
  std::vector<IncludeRoot> include_roots() const;
};

// "90a", "sm_90a", "compute_90a", "9.0a" -> "90a"; "" when not an architecture.
std::string normalize_arch(const std::string& arch);
// Splits on ';', ',' or spaces and normalizes; *error names the first bad item.
std::vector<std::string> parse_arch_list(const std::string& list, std::string* error);
// The compile targets for a device of compute capability cc (major * 10 + minor): the
// architecture-specific variant ("90a") where there is one, since the kernels use sm_90a features.
std::vector<std::string> archs_for_device(int cc);
// "sm_90a", or "sm_80+sm_90a" for several targets: a path component and a log word.
std::string arch_tag(const std::vector<std::string>& archs);
// <cache_root>/<library version>/<arch tag>
std::string cache_dir_for(const JitConfig& config, const std::vector<std::string>& archs);

// FLASHSERVE_PREBUILT_PRESET of this build ("default", "all", "llama3,qwen3", "none").
std::string prebuilt_preset();

// Where libflashserve.so was loaded from (dladdr), or "" when unknown.
std::string library_path();

}  // namespace flashserve::runtime
