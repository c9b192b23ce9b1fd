// A separate process for the concurrency test (tests/cpu/test_kernel_cache_procs.cc): waits until
// a "go" file exists, so that all copies start together, then asks the scratch cache in <root>
// for the synthetic kernel "syn a" and prints what happened.
//   flashserve_jit_helper <scratch root> <go file>
//   -> "compiled=<0|1> waited=<0|1> image=<sha256 of the image>"
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "jit_test_util.h"
#include "runtime/file_util.h"
#include "runtime/sha256.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s <scratch root> <go file>\n", argv[0]);
    return 2;
  }
  const fs_test::ScratchCache scratch(argv[1]);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!flashserve::runtime::file_exists(argv[2])) {
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "no go file %s\n", argv[2]);
      return 3;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  flashserve::runtime::KernelCache cache(scratch.config());
  flashserve::runtime::EnsureResult r;
  const flashserve::Status st = cache.ensure(fs_test::ScratchCache::source('a'), {"90a"}, {}, &r);
  if (!st.ok()) {
    std::fprintf(stderr, "%s\n", st.to_string().c_str());
    return 1;
  }
  std::printf("compiled=%d waited=%d image=%s\n", r.compiled ? 1 : 0, r.waited ? 1 : 0,
              flashserve::runtime::sha256_hex(r.image).c_str());
  return 0;
}
