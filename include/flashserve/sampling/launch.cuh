// Launching the sampling kernels: one thread-block cluster per row, its size chosen at run time by
// the tile policy (16 only where the device accepts non-portable cluster sizes).
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "flashserve/sampling/params.h"
#include "flashserve/sampling/tile_policy.h"

namespace flashserve::sampling {

// What the launchers need to know about the device (the API layer caches it).
struct DeviceLimits {
  int num_sms = 0;
  int smem_optin = 0;  // cudaDevAttrMaxSharedMemoryPerBlockOptin
};

template <class Kernel>
cudaLaunchConfig_t cluster_config(Kernel, int64_t rows, const SamplingTile& tile,
                                  cudaStream_t stream, cudaLaunchAttribute* attr) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(rows * tile.cluster));
  cfg.blockDim = dim3(static_cast<unsigned>(tile.threads));
  cfg.dynamicSmemBytes = static_cast<size_t>(tile.smem_bytes);
  cfg.stream = stream;
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = static_cast<unsigned>(tile.cluster);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cfg;
}

// Largest cluster size (16 or 8) that `kernel` can be launched with on this device, probed once per
// kernel signature (a 16-CTA cluster needs the non-portable attribute and a GPC with 16 free SMs).
template <class Kernel>
int max_cluster_size(Kernel kernel) {
  static std::atomic<int> cached{0};
  int c = cached.load(std::memory_order_relaxed);
  if (c != 0) return c;
  c = 8;
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) ==
      cudaSuccess) {
    SamplingTile probe;
    probe.cluster = 16;
    probe.smem_bytes = 0;
    cudaLaunchAttribute attr[1];
    cudaLaunchConfig_t cfg = cluster_config(kernel, 1, probe, nullptr, attr);
    int clusters = 0;
    if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) == cudaSuccess && clusters > 0) {
      c = 16;
    }
  }
  cudaGetLastError();  // a refused probe leaves no sticky error behind
  cached.store(c, std::memory_order_relaxed);
  return c;
}

// Dynamic shared memory `kernel` may use on this device: the opt-in limit less its static shared
// memory and the 1 KB the driver reserves per CTA.
template <class Kernel>
cudaError_t max_dynamic_smem(Kernel kernel, const DeviceLimits& dev, int64_t* bytes) {
  cudaFuncAttributes attr;
  const cudaError_t err = cudaFuncGetAttributes(&attr, kernel);
  if (err != cudaSuccess) return err;
  *bytes = static_cast<int64_t>(dev.smem_optin) - static_cast<int64_t>(attr.sharedSizeBytes) - 1024;
  return cudaSuccess;
}

// The tile for `kernel`: the dynamic shared memory left after its static shared memory, and the
// cluster sizes it accepts.
template <class Kernel>
cudaError_t plan_tile(Kernel kernel, int64_t rows, int64_t vocab, const DeviceLimits& dev,
                      SamplingTile* tile) {
  int64_t max_dyn = 0;
  const cudaError_t err = max_dynamic_smem(kernel, dev, &max_dyn);
  if (err != cudaSuccess) return err;
  *tile = choose_sampling_tile(rows, vocab, dev.num_sms, max_dyn, max_cluster_size(kernel));
  return cudaSuccess;
}

// Every launch sets the kernel's dynamic shared memory limit to the same value (the device's
// maximum), never to its own size: concurrent launches of one kernel with different sizes would
// otherwise race on the attribute.
template <class Kernel, class Params>
cudaError_t launch_clusters(Kernel kernel, const Params& p, int64_t rows, const SamplingTile& tile,
                            const DeviceLimits& dev, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  int64_t max_dyn = 0;
  cudaError_t err = max_dynamic_smem(kernel, dev, &max_dyn);
  if (err == cudaSuccess) {
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(max_dyn));
  }
  if (err == cudaSuccess && tile.cluster > 8) {
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  }
  if (err != cudaSuccess) return err;
  cudaLaunchAttribute attr[1];
  const cudaLaunchConfig_t cfg = cluster_config(kernel, rows, tile, stream, attr);
  err = cudaLaunchKernelEx(&cfg, kernel, p);
  if (err != cudaSuccess) return err;
  return cudaGetLastError();
}

__device__ __forceinline__ uint64_t seed_value(const SeedParams& s) {
  return s.seed_ptr != nullptr ? static_cast<uint64_t>(*s.seed_ptr) : s.seed;
}
__device__ __forceinline__ uint64_t offset_value(const SeedParams& s) {
  return s.offset_ptr != nullptr ? static_cast<uint64_t>(*s.offset_ptr) : s.offset;
}

}  // namespace flashserve::sampling
