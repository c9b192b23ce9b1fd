// Loading compiled kernel images and launching their kernels through the CUDA driver API.
//
// Images are loaded with cuLibraryLoadData: a CUlibrary is context-independent, so one loaded
// kernel (a CUkernel) serves every device and context of the process, and launching it is one
// cuLaunchKernelEx (launch attributes such as programmatic dependent launch included).
// The driver's entry points are resolved through the runtime (cudaGetDriverEntryPointByVersion)
// instead of linking libcuda: the library then loads on machines without a driver (CI), where the
// cache can still compile, and a deployment never depends on the driver's link-time version.
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "flashserve/core/status.h"

namespace flashserve::runtime {

// One extern "C" kernel of a loaded image.
struct LoadedKernel {
  static constexpr int kMaxDevices = 64;
  std::string name;
  void* handle = nullptr;  // CUkernel
  // Per device ordinal: resident blocks per SM once prepare_kernel ran there (0: not yet), and
  // the dynamic shared memory it was prepared for.
  std::atomic<int> blocks_per_sm[kMaxDevices] = {};
  std::atomic<int> smem_bytes[kMaxDevices] = {};
};

class LoadedModule {
 public:
  LoadedModule() = default;
  ~LoadedModule();  // unloads the library
  LoadedModule(const LoadedModule&) = delete;
  LoadedModule& operator=(const LoadedModule&) = delete;

  // Loads `image` (fatbin / cubin) and finds `entries`, in that order: each is an extern "C"
  // kernel's name, or the name of a kernel template of which the image holds one instantiation
  // (the generated source instantiates exactly the prebuilt template, so the code is the same).
  static Status load(const std::string& image, const std::vector<std::string>& entries,
                     std::unique_ptr<LoadedModule>* out);
  LoadedKernel& kernel(size_t i) { return *kernels_[i]; }
  const LoadedKernel& kernel(size_t i) const { return *kernels_[i]; }
  size_t size() const { return kernels_.size(); }

 private:
  void* library_ = nullptr;  // CUlibrary
  std::vector<std::unique_ptr<LoadedKernel>> kernels_;
};

// OK when the driver's entry points resolved; otherwise why not (no driver, too old).
Status driver_status();

// On the current device: allows `smem_bytes` of dynamic shared memory and returns how many
// blocks of `threads` threads fit on an SM. Cached per device, so that the launch path does no
// driver query after the first call (prepare at plan time, outside graph capture).
Status prepare_kernel(LoadedKernel& k, int threads, int smem_bytes, int* blocks_per_sm);

struct KernelLaunch {
  dim3 grid, block;
  int smem_bytes = 0;
  cudaStream_t stream = nullptr;
  // Programmatic dependent launch: the kernel may start while the previous kernel on the stream
  // runs; it must wait (griddepcontrol.wait) before reading that kernel's output.
  bool programmatic_dependent = false;
};

// cuLaunchKernelEx of `k` with `args` (pointers to each kernel argument). Capturable.
Status launch_kernel(const LoadedKernel& k, const KernelLaunch& launch, void** args);

}  // namespace flashserve::runtime
