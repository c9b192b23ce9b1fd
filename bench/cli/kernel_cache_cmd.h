// `flashserve compile` (fill the kernel cache ahead of time, in parallel, with a progress bar) and
// `flashserve cache list | clear | info` (docs/kernel_cache.md). Each returns the process exit
// code: 0 done, 1 a kernel failed, 2 a usage error.
#pragma once

namespace fs_bench {

constexpr const char* kKernelCacheUsage =
    R"(  compile  compile kernel specializations into the on-disk cache ahead of time
  cache    list | clear | info of the on-disk kernel cache

compile options (repeatable; together they give the set to compile):
  --preset NAME[,NAME...]   a preset (src/runtime/kernel_presets.txt; "all": everything)
  --from-log FILE           the kernels a run used (FLASHSERVE_KERNEL_LOG, or an API log at
                            FLASHSERVE_LOGLEVEL >= 1)
  --spec "TEXT"             one specialization, e.g. "decode q=bf16 kv=fp8_e4m3 hd=128"
  --arch LIST               targets, e.g. 90a (default: FLASHSERVE_CUDA_ARCH_LIST, the device's,
                            else the library's)
  -j N                      compilers run at once (default: the number of cores)
cache options:
  list [--all]              entries of this library version (--all: every version)
  clear [--all]             remove them
  info [--bench]            locations, compiler, targets, prebuilt kernels; --bench also times a
                            registry lookup and (with a GPU) loading a cached kernel
)";

int run_compile(int argc, char** argv);
int run_cache(int argc, char** argv);

}  // namespace fs_bench
