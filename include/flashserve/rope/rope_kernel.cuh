// Rotary position embedding kernel (NeoX and GPT-J layouts, computed or cached angles) and its
// launcher.
#pragma once

#include <cuda_runtime.h>

#include "flashserve/core/dispatch.h"
#include "flashserve/core/vec.cuh"
#include "flashserve/rope/angles.cuh"
#include "flashserve/rope/params.h"
#include "flashserve/rope/tile_policy.h"

namespace flashserve::rope {
namespace detail {

// N floats from 16-byte-aligned (N % 4 == 0) or 8-byte-aligned (N % 2 == 0) shared memory.
template <int N>
__device__ __forceinline__ void load_shared(const float* p, float (&v)[N]) {
  if constexpr (N % 4 == 0) {
#pragma unroll
    for (int k = 0; k < N / 4; ++k) {
      const float4 t = reinterpret_cast<const float4*>(p)[k];
      v[4 * k] = t.x;
      v[4 * k + 1] = t.y;
      v[4 * k + 2] = t.z;
      v[4 * k + 3] = t.w;
    }
  } else if constexpr (N % 2 == 0) {
#pragma unroll
    for (int k = 0; k < N / 2; ++k) {
      const float2 t = reinterpret_cast<const float2*>(p)[k];
      v[2 * k] = t.x;
      v[2 * k + 1] = t.y;
    }
  } else {
#pragma unroll
    for (int k = 0; k < N; ++k)
      v[k] = p[k];
  }
}

// One work item of one head, loaded ahead of its rotation (see tile_policy.h for what an item
// covers). Rotation item j of the vector path (v = kVec) holds dims [j v, j v + v) in a and
// [half + j v, half + j v + v) in b, in both layouts, so that a warp's loads are contiguous:
//   NeoX:  pairs (a[e], b[e]), pair index j v + e.
//   GPT-J: pairs (a[2e], a[2e + 1]), pair index j v / 2 + e, and (b[2e], b[2e + 1]), pair index
//          half / 2 + j v / 2 + e.
// On the scalar path (v = 1) a and b are the two dims of pair j: (j, half + j) for NeoX and
// (2j, 2j + 1) for GPT-J. A tail item (j >= rotary items) copies one vector of dims
// [rotary_dim, head_dim) when out of place.
template <class T, int kVec>
struct RopeItem {
  using V = Vec<T, kVec>;
  T* out = nullptr;  // the head's first element in the output; null: nothing to do
  int j = 0;
  int off_a = 0, off_b = 0;  // element offsets of a and b within the head
  bool rotate = false;
  V a, b;
};

template <class T, class TPos, int kVec, bool kInterleave>
__device__ __forceinline__ RopeItem<T, kVec> load_item(const RopeParams<T, TPos>& p, int64_t token,
                                                       int w, int items, int rot_items) {
  RopeItem<T, kVec> it;
  const int h = w / items;
  it.j = w - h * items;
  const T* in;
  if (h < p.q_heads) {
    in = p.q + p.q_strides.offset(token, h);
    it.out = p.q_out + p.q_out_strides.offset(token, h);
  } else {
    in = p.k + p.k_strides.offset(token, h - p.q_heads);
    it.out = p.k_out + p.k_out_strides.offset(token, h - p.q_heads);
  }
  it.rotate = it.j < rot_items;
  if (it.rotate) {
    const int half = p.rotary_dim / 2;
    it.off_a = kInterleave && kVec == 1 ? 2 * it.j : it.j * kVec;
    it.off_b = kInterleave && kVec == 1 ? it.off_a + 1 : half + it.off_a;
    it.a = RopeItem<T, kVec>::V::load(in + it.off_a);
    it.b = RopeItem<T, kVec>::V::load(in + it.off_b);
  } else if (in != it.out) {
    // Out of place: dims [rotary_dim, head_dim) are copied; in place they stay untouched.
    it.off_a = p.rotary_dim + (it.j - rot_items) * kVec;
    it.a = RopeItem<T, kVec>::V::load(in + it.off_a);
  } else {
    it.out = nullptr;
  }
  return it;
}

// Rotates (or copies) a loaded item and stores it. In place is safe: items never share elements.
template <class T, int kVec, bool kInterleave>
__device__ __forceinline__ void store_item(const RopeItem<T, kVec>& it, const float* cos_s,
                                           const float* sin_s, int half) {
  using V = Vec<T, kVec>;
  if (it.out == nullptr) return;
  if (!it.rotate) {
    it.a.store(it.out + it.off_a);
    return;
  }
  float x[kVec], y[kVec], ox[kVec], oy[kVec];
  it.a.to_floats(x);
  it.b.to_floats(y);
  if constexpr (kInterleave && kVec > 1) {
    constexpr int kPairs = kVec / 2;
    float ca[kPairs], sa[kPairs], cb[kPairs], sb[kPairs];
    load_shared(cos_s + it.j * kPairs, ca);
    load_shared(sin_s + it.j * kPairs, sa);
    load_shared(cos_s + half / 2 + it.j * kPairs, cb);
    load_shared(sin_s + half / 2 + it.j * kPairs, sb);
#pragma unroll
    for (int e = 0; e < kPairs; ++e) {
      ox[2 * e] = x[2 * e] * ca[e] - x[2 * e + 1] * sa[e];
      ox[2 * e + 1] = x[2 * e + 1] * ca[e] + x[2 * e] * sa[e];
      oy[2 * e] = y[2 * e] * cb[e] - y[2 * e + 1] * sb[e];
      oy[2 * e + 1] = y[2 * e + 1] * cb[e] + y[2 * e] * sb[e];
    }
  } else {
    float c[kVec], s[kVec];
    load_shared(cos_s + it.j * kVec, c);
    load_shared(sin_s + it.j * kVec, s);
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      ox[e] = x[e] * c[e] - y[e] * s[e];
      oy[e] = y[e] * c[e] + x[e] * s[e];
    }
  }
  V::from_floats(ox).store(it.out + it.off_a);
  V::from_floats(oy).store(it.out + it.off_b);
}

}  // namespace detail

// Block: (threads_x, tokens_per_block); it handles tokens_per_block * steps tokens, row y taking
// tokens base + s * tokens_per_block + y for s < steps. Each thread first issues the loads of its
// first work item (they do not depend on the angles); meanwhile the block puts cos / sin of all its
// tokens into shared memory, spread over all its threads, so that the position load -> sincos /
// cache chain is paid once per block, overlapping those loads. After the one barrier each row
// rotates and stores its tokens' items, loading the next item after each store.
template <class Angles, class T, class TPos, int kVec, bool kInterleave>
__global__ void __launch_bounds__(kRopeMaxThreads)
    rope_kernel(const __grid_constant__ RopeParams<T, TPos> p,
                const __grid_constant__ Angles angles, const int steps) {
  extern __shared__ float4 rope_smem[];  // [steps][tokens_per_block][cos half | sin half]
  float* smem = reinterpret_cast<float*>(rope_smem);
  const int half = p.rotary_dim / 2;
  const int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.y * steps;
  const int rows = blockDim.y * steps;  // tokens of this block, some past the end at the tail

  const int rot_items = half / kVec;
  const int items = rot_items + (p.head_dim - p.rotary_dim) / kVec;
  const int heads_items = (p.q_heads + p.kv_heads) * items;
  auto token_of = [&](int s) { return base + s * blockDim.y + threadIdx.y; };

  int64_t token = token_of(0);
  int total = token < p.tokens ? heads_items : 0;
  int w = threadIdx.x;
  detail::RopeItem<T, kVec> it;
  if (w < total) it = detail::load_item<T, TPos, kVec, kInterleave>(p, token, w, items, rot_items);

  const int block_threads = blockDim.x * blockDim.y;
  for (int e = threadIdx.y * blockDim.x + threadIdx.x; e < rows * half; e += block_threads) {
    const int row = e / half;
    const int i = e - row * half;
    const int64_t t = base + row;
    if (t < p.tokens) {
      float* cos_s = smem + row * p.rotary_dim;
      angles.get(static_cast<int64_t>(p.positions[t]), i, half, cos_s[i], cos_s[half + i]);
    }
  }
  __syncthreads();

  for (int s = 0;;) {
    const float* cos_s = smem + (s * blockDim.y + threadIdx.y) * p.rotary_dim;
    while (w < total) {
      detail::store_item<T, kVec, kInterleave>(it, cos_s, cos_s + half, half);
      w += blockDim.x;
      if (w < total)
        it = detail::load_item<T, TPos, kVec, kInterleave>(p, token, w, items, rot_items);
    }
    if (++s == steps) break;
    token = token_of(s);
    total = token < p.tokens ? heads_items : 0;
    w = threadIdx.x;
    if (w < total)
      it = detail::load_item<T, TPos, kVec, kInterleave>(p, token, w, items, rot_items);
  }
}

namespace detail {
inline bool heads_aligned(const void* ptr, const HeadStrides& s, int elem_size, int vec) {
  return vec_aligned(ptr, elem_size, vec) && s.token % vec == 0 && s.head % vec == 0;
}
}  // namespace detail

// Launches the rotation described by `p` with angles from `angles` (tokens == 0 is a no-op) on a
// device of `num_sms` multiprocessors.
// 16-byte vectors when rotary_dim / 2 and head_dim are multiples of the vector, and the four
// pointers and all their strides are aligned to it; else scalar pairs. The layout is a template
// parameter of the kernel.
template <class Angles, class T, class TPos>
cudaError_t launch_rope(const RopeParams<T, TPos>& p, const Angles& angles, int num_sms,
                        cudaStream_t stream) {
  if (p.tokens == 0) return cudaSuccess;
  constexpr int kV = kVec16<T>;
  const bool aligned = (p.rotary_dim / 2) % kV == 0 && p.head_dim % kV == 0 &&
                       detail::heads_aligned(p.q, p.q_strides, sizeof(T), kV) &&
                       detail::heads_aligned(p.q_out, p.q_out_strides, sizeof(T), kV) &&
                       detail::heads_aligned(p.k, p.k_strides, sizeof(T), kV) &&
                       detail::heads_aligned(p.k_out, p.k_out_strides, sizeof(T), kV);
  const int vec = aligned ? kV : 1;
  const int64_t items = static_cast<int64_t>(p.q_heads + p.kv_heads) *
                        (p.rotary_dim / 2 / vec + (p.head_dim - p.rotary_dim) / vec);
  const RopeTile tile = choose_rope_tile(p.tokens, items, p.rotary_dim / 2, num_sms);
  const dim3 grid(static_cast<unsigned>(tile.blocks)), block(tile.threads_x, tile.tokens_per_block);
  dispatch_bool(p.interleave, [&](auto interleave) {
    constexpr bool kInterleave = decltype(interleave)::value;
    if (aligned) {
      rope_kernel<Angles, T, TPos, kV, kInterleave>
          <<<grid, block, tile.smem_bytes, stream>>>(p, angles, tile.steps);
    } else {
      rope_kernel<Angles, T, TPos, 1, kInterleave>
          <<<grid, block, tile.smem_bytes, stream>>>(p, angles, tile.steps);
    }
  });
  return cudaGetLastError();
}

}  // namespace flashserve::rope
