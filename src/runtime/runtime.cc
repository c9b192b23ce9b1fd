#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "flashserve/runtime.h"
#include "runtime/build_config.h"

namespace flashserve {

const char* version() {
  return FLASHSERVE_VERSION;
}

BuildInfo build_info() {
  return {FLASHSERVE_VERSION,    FLASHSERVE_BUILD_TYPE, FLASHSERVE_CUDA_VERSION,
          FLASHSERVE_CUDA_ARCHS, FLASHSERVE_CUDA_FLAGS, FLASHSERVE_CXX_FLAGS};
}

Status device_count(int* count) {
  *count = 0;
  cudaError_t err = cudaGetDeviceCount(count);
  if (err != cudaSuccess || *count == 0) {
    cudaGetLastError();
    *count = 0;
    return Status(StatusCode::kNoDevice,
                  std::string("no CUDA device found (") +
                      (err != cudaSuccess ? cudaGetErrorString(err) : "device count is 0") + ")");
  }
  return Status();
}

Status get_device_info(int device, DeviceInfo* info) {
  static std::mutex mutex;
  static std::vector<DeviceInfo> cache;
  int count = 0;
  Status st = device_count(&count);
  if (!st.ok()) return st;
  if (device < 0 || device >= count) {
    return Status(StatusCode::kInvalidArgument, "get_device_info: device: expected 0.." +
                                                    std::to_string(count - 1) + ", got " +
                                                    std::to_string(device));
  }
  std::lock_guard<std::mutex> lock(mutex);
  if (cache.empty()) cache.resize(count);
  if (cache[device].ordinal < 0) {
    cudaDeviceProp prop{};
    cudaError_t err = cudaGetDeviceProperties(&prop, device);
    if (err != cudaSuccess) return Status(StatusCode::kCudaError, cudaGetErrorString(err));
    DeviceInfo d;
    d.ordinal = device;
    d.name = prop.name;
    d.cc_major = prop.major;
    d.cc_minor = prop.minor;
    d.sm_count = prop.multiProcessorCount;
    d.l2_bytes = prop.l2CacheSize;
    d.global_mem_bytes = static_cast<int64_t>(prop.totalGlobalMem);
    d.max_smem_per_block_optin = static_cast<int>(prop.sharedMemPerBlockOptin);
    cudaDriverGetVersion(&d.driver_version);
    cudaRuntimeGetVersion(&d.runtime_version);
    cache[device] = d;
  }
  *info = cache[device];
  return Status();
}

namespace {
std::atomic<bool>& debug_flag() {
  static std::atomic<bool> flag{[] {
    const char* env = std::getenv("FLASHSERVE_DEBUG_CHECKS");
    return env && env[0] != '\0' && env[0] != '0';
  }()};
  return flag;
}
}  // namespace

bool debug_checks() {
  return debug_flag().load(std::memory_order_relaxed);
}
void set_debug_checks(bool enabled) {
  debug_flag().store(enabled, std::memory_order_relaxed);
}

}  // namespace flashserve
