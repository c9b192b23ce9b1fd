// A scratch kernel cache for the kernel-cache tests: a temporary directory with its own include
// tree holding tiny synthetic kernel headers, so the tests compile in about a second per kernel
// and can edit headers freely. Shared by tests/cpu/test_kernel_cache*.cc and the helper process
// tests/jit_helper.cc (which must build the same source to hit the same entry).
#pragma once

#include <stdlib.h>

#include <string>

#include "runtime/file_util.h"
#include "runtime/jit_config.h"
#include "runtime/kernel_cache.h"

namespace fs_test {

struct ScratchCache {
  std::string root;  // the temporary directory
  std::string include_dir() const { return root + "/include"; }
  std::string cache_dir() const { return root + "/cache"; }

  // A new directory with the synthetic headers (or, with `existing`, that directory as is).
  explicit ScratchCache(const std::string& existing = "") {
    if (!existing.empty()) {
      root = existing;
      return;
    }
    char tmpl[] = "/tmp/flashserve-jit-test-XXXXXX";
    root = ::mkdtemp(tmpl) ? tmpl : "";
    flashserve::runtime::make_dirs(include_dir() + "/syn");
    write("syn/common.h", "#pragma once\n#define SYN_SCALE 2.f\n");
    write("syn/a.h",
          "#pragma once\n#include \"syn/common.h\"\n"
          "__device__ inline float syn_a(float x) { return x * SYN_SCALE; }\n");
    write("syn/b.h", "#pragma once\n__device__ inline float syn_b(float x) { return x + 1.f; }\n");
  }
  void remove() const {
    int64_t bytes = 0;
    if (!root.empty()) flashserve::runtime::remove_tree(root, &bytes);
  }
  // Writes (or rewrites) a header of the scratch include tree.
  void write(const std::string& rel, const std::string& text) const {
    const std::string path = include_dir() + "/" + rel;
    flashserve::runtime::make_dirs(flashserve::runtime::dir_name(path));
    flashserve::runtime::write_file_atomic(path, path + ".part", text);
  }
  void append(const std::string& rel, const std::string& text) const {
    std::string old;
    flashserve::runtime::read_file(include_dir() + "/" + rel, &old);
    write(rel, old + text);
  }

  // The environment's compiler and flags, this scratch tree, sm_90a.
  flashserve::runtime::JitConfig config() const {
    flashserve::runtime::JitConfig c = flashserve::runtime::JitConfig::from_environment();
    c.cache_root = cache_dir();
    c.include_dir = include_dir();
    c.cutlass_dir.clear();
    c.archs = {"90a"};
    c.verbose = c.debug = c.disabled = false;
    return c;
  }

  // Kernel "syn a" includes syn/a.h (which includes syn/common.h); "syn b" includes syn/b.h.
  static flashserve::runtime::KernelSource source(char which) {
    flashserve::runtime::KernelSource s;
    const std::string w(1, which);
    s.name = "syn " + w;
    s.code = "#include \"syn/" + w + ".h\"\nextern \"C\" __global__ void syn_kernel_" + w +
             "(float* p) { p[threadIdx.x] = syn_" + w + "(p[threadIdx.x]); }\n";
    s.entries = {"syn_kernel_" + w};
    return s;
  }
};

}  // namespace fs_test
