#include "runtime/kernel_loader.h"

#include <algorithm>

#include <cuda.h>

#include <mutex>

namespace flashserve::runtime {
namespace {

struct Driver {
  Status status;
  CUresult (*get_error_string)(CUresult, const char**) = nullptr;
  CUresult (*library_load_data)(CUlibrary*, const void*, CUjit_option*, void**, unsigned,
                                CUlibraryOption*, void**, unsigned) = nullptr;
  CUresult (*library_unload)(CUlibrary) = nullptr;
  CUresult (*library_get_kernel)(CUkernel*, CUlibrary, const char*) = nullptr;
  CUresult (*library_kernel_count)(unsigned*, CUlibrary) = nullptr;
  CUresult (*library_enumerate)(CUkernel*, unsigned, CUlibrary) = nullptr;
  CUresult (*kernel_get_name)(const char**, CUkernel) = nullptr;
  CUresult (*kernel_set_attribute)(CUfunction_attribute, int, CUkernel, CUdevice) = nullptr;
  CUresult (*kernel_get_function)(CUfunction*, CUkernel) = nullptr;
  CUresult (*device_get)(CUdevice*, int) = nullptr;
  CUresult (*occupancy)(int*, CUfunction, int, size_t) = nullptr;
  CUresult (*launch_ex)(const CUlaunchConfig*, CUfunction, void**, void**) = nullptr;
};

// `version`: the CUDA version whose ABI of the entry point we call (12000: 12.0, where the
// library API appeared; the kernel enumeration came with 12.4).
template <class F>
void resolve(Driver& d, const char* symbol, F* fn, unsigned version = 12000) {
  if (!d.status.ok()) return;
  void* p = nullptr;
  cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
  const cudaError_t err =
      cudaGetDriverEntryPointByVersion(symbol, &p, version, cudaEnableDefault, &q);
  if (err != cudaSuccess || q != cudaDriverEntryPointSuccess || p == nullptr) {
    cudaGetLastError();
    d.status = Status(StatusCode::kNoDevice,
                      std::string("the CUDA driver is not available (resolving ") + symbol + ": " +
                          (err != cudaSuccess ? cudaGetErrorString(err) : "not found") + ")");
    return;
  }
  *fn = reinterpret_cast<F>(p);
}

const Driver& driver() {
  static const Driver d = [] {
    Driver x;
    resolve(x, "cuGetErrorString", &x.get_error_string);
    resolve(x, "cuLibraryLoadData", &x.library_load_data);
    resolve(x, "cuLibraryUnload", &x.library_unload);
    resolve(x, "cuLibraryGetKernel", &x.library_get_kernel);
    resolve(x, "cuLibraryGetKernelCount", &x.library_kernel_count, 12040);
    resolve(x, "cuLibraryEnumerateKernels", &x.library_enumerate, 12040);
    resolve(x, "cuKernelGetName", &x.kernel_get_name, 12040);
    resolve(x, "cuKernelSetAttribute", &x.kernel_set_attribute);
    resolve(x, "cuKernelGetFunction", &x.kernel_get_function);
    resolve(x, "cuDeviceGet", &x.device_get);
    resolve(x, "cuOccupancyMaxActiveBlocksPerMultiprocessor", &x.occupancy);
    resolve(x, "cuLaunchKernelEx", &x.launch_ex);
    return x;
  }();
  return d;
}

Status driver_error(CUresult r, const std::string& what) {
  const char* text = nullptr;
  if (driver().get_error_string) driver().get_error_string(r, &text);
  return Status(StatusCode::kCudaError,
                what + ": " + (text ? text : "CUDA driver error " + std::to_string(r)));
}

}  // namespace

Status driver_status() {
  return driver().status;
}

LoadedModule::~LoadedModule() {
  if (library_ && driver().library_unload)
    driver().library_unload(static_cast<CUlibrary>(library_));
}

Status LoadedModule::load(const std::string& image, const std::vector<std::string>& entries,
                          std::unique_ptr<LoadedModule>* out) {
  const Driver& d = driver();
  if (!d.status.ok()) return d.status;
  auto m = std::make_unique<LoadedModule>();
  CUlibrary lib = nullptr;
  CUresult r = d.library_load_data(&lib, image.data(), nullptr, nullptr, 0, nullptr, nullptr, 0);
  if (r != CUDA_SUCCESS) return driver_error(r, "loading a compiled kernel image");
  m->library_ = lib;
  // The image's kernels by name, listed once (CUDA >= 12.4): looking a name up with
  // cuLibraryGetKernel first would fail, by design, for every template instantiation, and that
  // failure is an API error in compute-sanitizer's report.
  std::vector<std::pair<std::string, CUkernel>> all;
  const bool can_list = d.library_kernel_count && d.library_enumerate && d.kernel_get_name;
  if (can_list) {
    unsigned n = 0;
    r = d.library_kernel_count(&n, lib);
    if (r != CUDA_SUCCESS) return driver_error(r, "counting the kernels of an image");
    std::vector<CUkernel> ks(n);
    r = d.library_enumerate(ks.data(), n, lib);
    if (r != CUDA_SUCCESS) return driver_error(r, "listing the kernels of an image");
    for (CUkernel kk : ks) {
      const char* kn = nullptr;
      if (d.kernel_get_name(&kn, kk) == CUDA_SUCCESS && kn) all.emplace_back(kn, kk);
    }
  }
  for (const std::string& name : entries) {
    auto k = std::make_unique<LoadedKernel>();
    k->name = name;
    CUkernel kernel = nullptr;
    if (!can_list) {
      r = d.library_get_kernel(&kernel, lib, name.c_str());
      if (r != CUDA_SUCCESS) return driver_error(r, "looking up kernel " + name);
    } else {
      // An extern "C" name, or else the image's only instantiation of the kernel template `name`,
      // whose mangled name holds the length-prefixed identifier ("13decode_kernel").
      const auto exact =
          std::find_if(all.begin(), all.end(), [&](const auto& e) { return e.first == name; });
      if (exact != all.end()) {
        kernel = exact->second;
      } else {
        const std::string needle = std::to_string(name.size()) + name;
        std::string names;
        int matches = 0;
        for (const auto& [kn, kk] : all) {
          names += (names.empty() ? "" : ", ") + kn;
          if (kn.find(needle) != std::string::npos) {
            ++matches;
            kernel = kk;
          }
        }
        if (matches != 1) {
          return Status(StatusCode::kInternal, "kernel image: expected one kernel named " + name +
                                                   " (or one instantiation of it), found " +
                                                   std::to_string(matches) + " among: " + names);
        }
      }
    }
    k->handle = kernel;
    m->kernels_.push_back(std::move(k));
  }
  *out = std::move(m);
  return Status();
}

Status prepare_kernel(LoadedKernel& k, int threads, int smem_bytes, int* blocks_per_sm) {
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return Status(StatusCode::kNoDevice, std::string("no CUDA device: ") + cudaGetErrorString(err));
  }
  const bool cached = device < LoadedKernel::kMaxDevices;
  if (cached && k.smem_bytes[device].load(std::memory_order_acquire) == smem_bytes) {
    const int b = k.blocks_per_sm[device].load(std::memory_order_acquire);
    if (b > 0) {
      *blocks_per_sm = b;
      return Status();
    }
  }
  const Driver& d = driver();
  if (!d.status.ok()) return d.status;
  // cuKernelGetFunction needs a current context: make the device's primary context current, as
  // the runtime does on its first call.
  err = cudaSetDevice(device);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return Status(StatusCode::kCudaError, std::string("cudaSetDevice: ") + cudaGetErrorString(err));
  }
  CUdevice dev = 0;
  CUresult r = d.device_get(&dev, device);
  if (r != CUDA_SUCCESS) return driver_error(r, "cuDeviceGet");
  const CUkernel kernel = static_cast<CUkernel>(k.handle);
  r = d.kernel_set_attribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem_bytes, kernel,
                             dev);
  if (r != CUDA_SUCCESS) return driver_error(r, "setting the shared memory of " + k.name);
  CUfunction f = nullptr;
  r = d.kernel_get_function(&f, kernel);
  if (r != CUDA_SUCCESS)
    return driver_error(r, "loading " + k.name + " on device " + std::to_string(device));
  int blocks = 0;
  r = d.occupancy(&blocks, f, threads, static_cast<size_t>(smem_bytes));
  if (r != CUDA_SUCCESS) return driver_error(r, "occupancy of " + k.name);
  if (cached) {
    k.blocks_per_sm[device].store(blocks, std::memory_order_release);
    k.smem_bytes[device].store(smem_bytes, std::memory_order_release);
  }
  *blocks_per_sm = blocks;
  return Status();
}

Status launch_kernel(const LoadedKernel& k, const KernelLaunch& launch, void** args) {
  const Driver& d = driver();
  if (!d.status.ok()) return d.status;
  CUlaunchConfig cfg = {};
  cfg.gridDimX = launch.grid.x;
  cfg.gridDimY = launch.grid.y;
  cfg.gridDimZ = launch.grid.z;
  cfg.blockDimX = launch.block.x;
  cfg.blockDimY = launch.block.y;
  cfg.blockDimZ = launch.block.z;
  cfg.sharedMemBytes = static_cast<unsigned>(launch.smem_bytes);
  cfg.hStream = reinterpret_cast<CUstream>(launch.stream);
  CUlaunchAttribute attr[1];
  if (launch.programmatic_dependent) {
    attr[0].id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attr[0].value.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }
  // A CUkernel is launched as a CUfunction; the context comes from the stream (cuda.h).
  const CUresult r = d.launch_ex(
      &cfg, reinterpret_cast<CUfunction>(static_cast<CUkernel>(k.handle)), args, nullptr);
  if (r != CUDA_SUCCESS) return driver_error(r, "launching " + k.name);
  return Status();
}

}  // namespace flashserve::runtime
