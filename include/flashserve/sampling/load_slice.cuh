// The one read of a row from global memory: each CTA reads its slice with 16-byte vector loads
// (four in flight per thread, enough bytes in flight per SM to approach the copy bandwidth) and
// hands every element to a callback, which returns the key to keep in shared memory.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "flashserve/core/vec.cuh"

namespace flashserve::sampling {

// Calls on_element(float) for elements [0, len) of `row`; stores the returned keys at keys[0, len)
// when `keys` is set, and `pad` at [len, padded). `vec`: row is 16-byte aligned.
template <class T, class OnElement>
__device__ __forceinline__ void load_slice(const T* row, int len, bool vec, uint32_t* keys,
                                           int padded, OnElement&& on_element, uint32_t pad = 0u) {
  constexpr int kV = 16 / static_cast<int>(sizeof(T));
  constexpr int kInFlight = 4;
  using VecT = Vec<T, kV>;
  int done = 0;
  if (vec) {
    const int nv = len / kV;
    const int step = static_cast<int>(blockDim.x);
    for (int base = threadIdx.x; base < nv; base += step * kInFlight) {
      VecT r[kInFlight];
#pragma unroll
      for (int b = 0; b < kInFlight; ++b) {
        const int i = base + b * step;
        if (i < nv) r[b] = VecT::load(row + static_cast<int64_t>(i) * kV);
      }
#pragma unroll
      for (int b = 0; b < kInFlight; ++b) {
        const int i = base + b * step;
        if (i >= nv) continue;
        float f[kV];
        r[b].to_floats(f);
        uint32_t k[kV];
#pragma unroll
        for (int j = 0; j < kV; ++j)
          k[j] = on_element(f[j]);
        if (keys != nullptr) {
          uint4* dst = reinterpret_cast<uint4*>(keys + i * kV);
#pragma unroll
          for (int j = 0; j < kV / 4; ++j)
            dst[j] = make_uint4(k[4 * j], k[4 * j + 1], k[4 * j + 2], k[4 * j + 3]);
        }
      }
    }
    done = nv * kV;
  }
  for (int i = done + threadIdx.x; i < len; i += blockDim.x) {
    const uint32_t k = on_element(to_float(row[i]));
    if (keys != nullptr) keys[i] = k;
  }
  if (keys != nullptr) {
    for (int i = len + threadIdx.x; i < padded; i += blockDim.x)
      keys[i] = pad;
  }
}

}  // namespace flashserve::sampling
