// The one read of a row from global memory: each CTA reads its slice with 16-byte vector loads
// (four in flight per thread, enough bytes in flight per SM to approach the copy bandwidth) and
// hands every element to a callback, which returns the key to keep in shared memory.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "flashserve/core/vec.cuh"

namespace flashserve::sampling {

// Reads elements [0, len) of `row` by 4-element groups: on_group(f[4], first, k[4]) gets elements
// [first, first + 4) (those at or past `len` read as `pad_value`) and fills their keys, stored at
// keys[first, first + 4) when `keys` is set (16-byte aligned); keys[4 * ceil(len / 4), padded) get
// `pad`. `vec`: row is 16-byte aligned. Thread t gets the groups of vectors t, t + blockDim, ...
// in that order, then tail groups t, t + blockDim, ... past the vectors: the rejection draw walks
// a thread's elements again in this order (draw_loaded).
template <class T, class OnGroup>
__device__ __forceinline__ void load_groups(const T* row, int len, bool vec, uint32_t* keys,
                                            int padded, float pad_value, uint32_t pad,
                                            OnGroup&& on_group) {
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
#pragma unroll
        for (int g = 0; g < kV / 4; ++g) {
          const float fg[4] = {f[4 * g], f[4 * g + 1], f[4 * g + 2], f[4 * g + 3]};
          uint32_t k[4];
          on_group(fg, i * kV + 4 * g, k);
          if (keys != nullptr) {
            *reinterpret_cast<uint4*>(keys + i * kV + 4 * g) = make_uint4(k[0], k[1], k[2], k[3]);
          }
        }
      }
    }
    done = nv * kV;
  }
  const int groups = (len + 3) / 4;
  for (int g = done / 4 + static_cast<int>(threadIdx.x); g < groups;
       g += static_cast<int>(blockDim.x)) {
    float fg[4];
#pragma unroll
    for (int j = 0; j < 4; ++j)
      fg[j] = 4 * g + j < len ? to_float(row[4 * g + j]) : pad_value;
    uint32_t k[4];
    on_group(fg, 4 * g, k);
    if (keys != nullptr) {
      *reinterpret_cast<uint4*>(keys + 4 * g) = make_uint4(k[0], k[1], k[2], k[3]);
    }
  }
  if (keys != nullptr) {
    for (int i = 4 * groups + static_cast<int>(threadIdx.x); i < padded;
         i += static_cast<int>(blockDim.x))
      keys[i] = pad;
  }
}

// Calls on_element(float) for elements [0, len) of `row`; stores the returned keys at keys[0, len)
// when `keys` is set, and `pad` at [len, padded).
template <class T, class OnElement>
__device__ __forceinline__ void load_slice(const T* row, int len, bool vec, uint32_t* keys,
                                           int padded, OnElement&& on_element, uint32_t pad = 0u) {
  load_groups(row, len, vec, keys, padded, 0.f, pad,
              [&](const float(&f)[4], int first, uint32_t(&k)[4]) {
#pragma unroll
                for (int j = 0; j < 4; ++j)
                  k[j] = first + j < len ? on_element(f[j]) : pad;
              });
}

}  // namespace flashserve::sampling
