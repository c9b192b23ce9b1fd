// Appends new K/V tokens into a paged KV cache (include/flashserve/page.h): kernel and launcher.
#pragma once

#include <cuda_runtime.h>

#include <type_traits>

#include "flashserve/core/vec.cuh"
#include "flashserve/page/page_table.cuh"
#include "flashserve/page/params.h"
#include "flashserve/page/tile_policy.h"

namespace flashserve::page {

// A plain copy moves the bits (TCache == T); fp8 divides by the scale in float and saturates.
// The division is IEEE (not x * (1 / scale)), so the stored value is exactly fp8(x / scale).
template <class TCache, class T, int N>
__device__ __forceinline__ Vec<TCache, N> to_cache(const Vec<T, N>& x, float scale) {
  if constexpr (std::is_same_v<T, TCache>) {
    return x;
  } else {
    float f[N];
    x.to_floats(f);
#pragma unroll
    for (int j = 0; j < N; ++j)
      f[j] = f[j] / scale;
    return Vec<TCache, N>::from_floats(f);
  }
}

// One warp per (new token, slice of its row); see tile_policy.h. kVec = 16 / sizeof(T) elements
// per access on the vector path, 1 on the scalar path.
template <class T, class TCache, int kVec>
__global__ void __launch_bounds__(kAppendThreads)
    append_paged_kv_kernel(const AppendParams<T, TCache> p, const int64_t slices,
                           const int64_t units) {
  using VecIn = Vec<T, kVec>;
  const int lane = threadIdx.x & 31;
  const int head_vecs = p.head_dim / kVec;
  const int row_vecs = p.kv_heads * head_vecs;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kAppendThreads / 32);

  for (int64_t unit = static_cast<int64_t>(blockIdx.x) * (kAppendThreads / 32) + threadIdx.x / 32;
       unit < units; unit += warps) {  // warp-uniform: every lane takes the same trips
    const int token = static_cast<int>(slices == 1 ? unit : unit / slices);
    const int first = static_cast<int>(unit - token * slices) * (32 * kAppendItems) + lane;

    // Loads first: they do not depend on the page table, so they are in flight while the warp
    // searches for the token's request and page.
    VecIn kr[kAppendItems], vr[kAppendItems];
    int head[kAppendItems], col[kAppendItems];
#pragma unroll
    for (int i = 0; i < kAppendItems; ++i) {
      const int e = first + i * 32;
      head[i] = e / head_vecs;
      col[i] = (e - head[i] * head_vecs) * kVec;
      if (e < row_vecs) {
        kr[i] = VecIn::load(p.k + token * p.k_strides.token + head[i] * p.k_strides.head + col[i]);
        vr[i] = VecIn::load(p.v + token * p.v_strides.token + head[i] * p.v_strides.head + col[i]);
      }
    }

    const AppendSlot s = find_append_slot(p, token, lane);
    if (!s.valid) continue;  // uniform across the warp

    TCache* kc = p.k_cache + s.page * p.k_cache_strides.page + s.slot * p.k_cache_strides.slot;
    TCache* vc = p.v_cache + s.page * p.v_cache_strides.page + s.slot * p.v_cache_strides.slot;
#pragma unroll
    for (int i = 0; i < kAppendItems; ++i) {
      if (first + i * 32 < row_vecs) {
        to_cache<TCache>(kr[i], p.k_scale).store(kc + head[i] * p.k_cache_strides.head + col[i]);
        to_cache<TCache>(vr[i], p.v_scale).store(vc + head[i] * p.v_cache_strides.head + col[i]);
      }
    }
  }
}

namespace detail {
// Every address the kernel forms is ptr + (stride multiples) + col, col a multiple of vec.
inline bool append_aligned(const void* ptr, int elem_size, int vec, const TokenStrides& s) {
  return vec_aligned(ptr, elem_size, vec) && s.token % vec == 0 && s.head % vec == 0;
}
inline bool append_aligned(const void* ptr, int elem_size, int vec, const CacheStrides& s) {
  return vec_aligned(ptr, elem_size, vec) && s.page % vec == 0 && s.slot % vec == 0 &&
         s.head % vec == 0;
}
}  // namespace detail

// Launches the append described by `p` (no new tokens, no requests or empty rows: a no-op).
// Takes 16-byte vectors when head_dim, every pointer and every stride allow it, else the scalar
// path.
template <class T, class TCache>
cudaError_t launch_append_paged_kv(const AppendParams<T, TCache>& p, cudaStream_t stream) {
  if (p.new_tokens == 0 || p.batch == 0 || p.kv_heads == 0 || p.head_dim == 0) return cudaSuccess;
  constexpr int kV = kVec16<T>;
  const bool aligned = p.head_dim % kV == 0 &&
                       detail::append_aligned(p.k, sizeof(T), kV, p.k_strides) &&
                       detail::append_aligned(p.v, sizeof(T), kV, p.v_strides) &&
                       detail::append_aligned(p.k_cache, sizeof(TCache), kV, p.k_cache_strides) &&
                       detail::append_aligned(p.v_cache, sizeof(TCache), kV, p.v_cache_strides);
  const int vec = aligned ? kV : 1;
  const AppendTile tile =
      choose_append_tile(p.new_tokens, static_cast<int64_t>(p.kv_heads) * p.head_dim / vec);
  const dim3 grid(static_cast<unsigned>(tile.blocks)), block(kAppendThreads);
  if (aligned) {
    append_paged_kv_kernel<T, TCache, kV><<<grid, block, 0, stream>>>(p, tile.slices, tile.units);
  } else {
    append_paged_kv_kernel<T, TCache, 1><<<grid, block, 0, stream>>>(p, tile.slices, tile.units);
  }
  return cudaGetLastError();
}

}  // namespace flashserve::page
