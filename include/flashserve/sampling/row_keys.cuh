// A row as the sampling passes see it: the functors that turn input elements into 32-bit keys
// (key_math.h), and the fixed order in which a CTA visits its slice of them.
//
// Visiting order: CTA `rank` owns elements [rank * chunk, rank * chunk + len) of the row. Its warps
// take contiguous runs of 4-element groups; in each iteration lane l of a warp takes the l-th group
// of the run's next 32. Every pass (and the final inverse-CDF walk) visits the same elements in the
// same order, with keys from shared memory (resident rows) or recomputed from global memory
// (streaming): so the two modes draw identical tokens. Within a CTA, a warp's run is a contiguous
// index range visited in index order, which top_k uses to emit indices in ascending order.
#pragma once

#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

#include "flashserve/core/types.cuh"
#include "flashserve/sampling/key_math.h"

namespace flashserve::sampling {

// Logits as probability keys relative to the row maximum `max`: exp2((x - max) * scale), where
// scale = log2(e) / temperature. `greedy` (temperature <= 0, or an infinite maximum) keeps exactly
// the maxima: their key is 1.0 and every other key 0, so sampling picks among tied maxima.
// The exponential is the SFU's ex2.approx.ftz (2 ulp; results below 2^-126, whose masses are 0
// anyway, flush to 0): -inf gives 0, NaN is clamped to 0 and x == max gives exactly 1.
__device__ __forceinline__ float ex2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float lg2_approx(float x) {  // subnormal inputs kept (no .ftz)
  float y;
  asm("lg2.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

struct LogitKey {
  float max = 0.f;
  float scale = 0.f;
  bool greedy = false;
  __device__ __forceinline__ uint32_t operator()(float x) const {
    if (greedy) return x == max ? kOneBits : 0u;
    return __float_as_uint(fminf(fmaxf(ex2_approx((x - max) * scale), 0.f), 1.f));
  }
};

struct ProbKey {
  __device__ __forceinline__ uint32_t operator()(float p) const { return prob_key(p); }
};

struct OrderKey {
  __device__ __forceinline__ uint32_t operator()(float x) const { return order_key(x); }
};

// This CTA's slice of the row and how its warps walk it.
struct ChunkLayout {
  int64_t begin = 0;  // first element of the row held by this CTA
  int len = 0;        // elements held (the rest of the chunk is padding, key 0)
  int nvec = 0;       // 4-element groups in the chunk
  int vec_begin = 0;  // this warp's groups: [vec_begin, vec_end)
  int vec_end = 0;
  int iters = 0;  // iterations of every warp (the same for all: warp-synchronous passes)
};

// Splits L's nvec 4-key groups over the CTA's warps: equal contiguous runs, the last ones shorter
// or empty; iters = loop iterations of 32 lanes per run.
__device__ __forceinline__ void split_over_warps(ChunkLayout& L) {
  const int nwarps = blockDim.x >> 5;
  const int per_warp = (L.nvec + nwarps - 1) / nwarps;
  const int warp = threadIdx.x >> 5;
  L.vec_begin = warp * per_warp < L.nvec ? warp * per_warp : L.nvec;
  L.vec_end = L.vec_begin + per_warp < L.nvec ? L.vec_begin + per_warp : L.nvec;
  L.iters = (per_warp + 31) / 32;
}

__device__ __forceinline__ ChunkLayout make_chunk_layout(int vocab, int chunk, int rank) {
  ChunkLayout L;
  L.begin = static_cast<int64_t>(rank) * chunk;
  const int64_t left = vocab - L.begin;
  L.len = left <= 0 ? 0 : (left < chunk ? static_cast<int>(left) : chunk);
  L.nvec = chunk / 4;
  split_over_warps(L);
  return L;
}

// The layout of a key list held in shared memory (radix_select.cuh's candidate lists): `len` keys
// padded with key 0 to whole 4-key groups, split over the warps like a chunk.
__device__ __forceinline__ ChunkLayout make_list_layout(int len) {
  ChunkLayout L;
  L.len = len;
  L.nvec = (len + 3) / 4;
  split_over_warps(L);
  return L;
}

// Calls g(first_element, keys[4], active) once per iteration on every lane of every warp (so g may
// use warp shuffles); `load(group, keys)` fills the keys of an active group.
template <class Load, class G>
__device__ __forceinline__ void for_each_group(const ChunkLayout& L, const Load& load, G&& g) {
  const int lane = threadIdx.x & 31;
  for (int it = 0; it < L.iters; ++it) {
    const int v = L.vec_begin + it * 32 + lane;
    const bool active = v < L.vec_end;
    uint32_t k[4] = {0u, 0u, 0u, 0u};
    if (active) load(v, k);
    g(4 * v, k, active);
  }
}

// Keys resident in shared memory (padding holds key 0).
struct SmemKeys {
  const uint4* keys;
  __device__ __forceinline__ void operator()(int v, uint32_t (&k)[4]) const {
    const uint4 q = keys[v];
    k[0] = q.x;
    k[1] = q.y;
    k[2] = q.z;
    k[3] = q.w;
  }
};

// Keys recomputed from the row in global memory (the streaming fallback).
template <class T, class KeyOf>
struct GlobalKeys {
  const T* row;  // this CTA's slice
  int len;
  KeyOf key_of;
  __device__ __forceinline__ void operator()(int v, uint32_t (&k)[4]) const {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int e = 4 * v + j;
      k[j] = e < len ? key_of(to_float(row[e])) : 0u;
    }
  }
};

}  // namespace flashserve::sampling
