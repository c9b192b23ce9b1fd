// Vec<T, N>: N elements moved as one aligned access (16 bytes when N * sizeof(T) == 16), so that a
// warp's loads coalesce into full 128-byte lines.
#pragma once

#include <cstdint>

#include "flashserve/core/types.cuh"

namespace flashserve {

template <class T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];

  __device__ __forceinline__ static Vec load(const T* ptr) {
    return *reinterpret_cast<const Vec*>(ptr);
  }
  __device__ __forceinline__ void store(T* ptr) const { *reinterpret_cast<Vec*>(ptr) = *this; }

  __device__ __forceinline__ void to_floats(float (&out)[N]) const {
#pragma unroll
    for (int i = 0; i < N; ++i)
      out[i] = to_float(v[i]);
  }
  __device__ __forceinline__ static Vec from_floats(const float (&in)[N]) {
    Vec r;
#pragma unroll
    for (int i = 0; i < N; ++i)
      r.v[i] = from_float<T>(in[i]);
    return r;
  }
};

// Elements of T in one 16-byte access.
template <class T>
constexpr int kVec16 = 16 / static_cast<int>(sizeof(T));

// True when a pointer and every row stride keep N-element vectors aligned.
inline bool vec_aligned(const void* ptr, int64_t elem_size, int vec) {
  return reinterpret_cast<uintptr_t>(ptr) % static_cast<uintptr_t>(elem_size * vec) == 0;
}

}  // namespace flashserve
