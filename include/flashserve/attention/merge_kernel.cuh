// Combining attention states: (output o_i, LSE lse_i) pairs computed over disjoint kv ranges give
// o = sum_i exp(lse_i - lse) o_i with lse = log sum_i exp(lse_i).
//  - decode_merge_kernel: the split-KV partials of a decode plan (log2 LSEs in the workspace),
//    persistent over the plan's merge list like the decode kernel; the merge order is the split
//    order, so the result is deterministic.
//  - merge_states_kernel: the public merge_state / merge_states (natural-log LSEs).
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>

#include "flashserve/attention/params.h"
#include "flashserve/attention/tile_policy.h"
#include "flashserve/attention/variants.cuh"
#include "flashserve/core/types.cuh"

namespace flashserve::attention {

constexpr int kMergeThreads = 256;
constexpr int kMergeWarps = kMergeThreads / 32;

// One warp per (merge item, row), lanes over head_dim in float4s: the LSEs of all splits are loaded
// first (lane s holds split s, 32 at a time), the max and the weights come from warp shuffles, then
// every lane streams the partial vectors with several 16-byte loads in flight. The task of global
// warp g is (item t % num_merge, row t / num_merge) for t = g, g + warps, ...; warps are numbered
// across blocks first, so the live rows of a small merge spread over many SMs (the old
// block-per-item layout ran at IPC 0.37, 15.6 us for batch 1 x 4096 on an H200). Sums run in split
// order and a fixed shuffle tree: deterministic.
template <class TQ>
__global__ void __launch_bounds__(kMergeThreads)
    decode_merge_kernel(const __grid_constant__ DecodeMergeParams<TQ> p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Launched as a programmatic dependent of the decode kernel (kDecodeMergePdl): wait for all of
  // it and its partials. A no-op for a plain launch.
  if constexpr (kDecodeMergePdl) asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
  const int num_merge = p.counts->num_merge;
  const int D = p.head_dim;
  const int lane = threadIdx.x & 31;
  const int64_t num_tasks = static_cast<int64_t>(num_merge) * kDecodeMaxRows;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kMergeWarps;
  for (int64_t t = static_cast<int64_t>(threadIdx.x >> 5) * gridDim.x + blockIdx.x; t < num_tasks;
       t += warps) {
    const int item = static_cast<int>(t % num_merge);
    const int r = static_cast<int>(t / num_merge);
    const DecodeMergeItem m = p.merge[item];
    if (r >= m.row_end - m.row_begin) continue;  // warp-uniform
    const int n = m.num_partials;
    const float* lse = p.partial_lse + int64_t{m.partial_begin} * kDecodeMaxRows + r;
    // Max over the splits.
    float mx = -INFINITY;
    for (int s = lane; s < n; s += 32)
      mx = fmaxf(mx, lse[int64_t{s} * kDecodeMaxRows]);
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1)
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    // Weights: lane s of chunk c holds split c * 32 + s; the sum and the vectors follow.
    const float* po = p.partial_out + int64_t{m.partial_begin} * kDecodeMaxRows * D + r * D;
    const int64_t split_stride = int64_t{kDecodeMaxRows} * D;
    float lt = 0.f;
    float4 o0 = make_float4(0.f, 0.f, 0.f, 0.f), o1 = o0;  // dims 4 lane (+ 128)
    const int d0 = lane * 4, d1 = d0 + 128;
    const bool has0 = d0 < D, has1 = d1 < D;
    for (int c = 0; c < n; c += 32) {
      const int s = c + lane;
      const float wl =
          s < n && mx != -INFINITY ? exp2f(lse[int64_t{s} * kDecodeMaxRows] - mx) : 0.f;
      lt += wl;
      const int cn = min(32, n - c);
      const float* src = po + int64_t{c} * split_stride;
#pragma unroll 16
      for (int j = 0; j < cn; ++j) {
        const float f = __shfl_sync(0xffffffffu, wl, j);
        if (has0) {
          const float4 v = __ldg(reinterpret_cast<const float4*>(src + j * split_stride + d0));
          o0.x += f * v.x;
          o0.y += f * v.y;
          o0.z += f * v.z;
          o0.w += f * v.w;
        }
        if (has1) {
          const float4 v = __ldg(reinterpret_cast<const float4*>(src + j * split_stride + d1));
          o1.x += f * v.x;
          o1.y += f * v.y;
          o1.z += f * v.z;
          o1.w += f * v.w;
        }
      }
    }
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1)
      lt += __shfl_xor_sync(0xffffffffu, lt, off);
    const int row = m.row_begin + r;
    const int64_t qtok = m.q_begin + row / p.group;
    const int64_t head = static_cast<int64_t>(m.kv_head) * p.group + row % p.group;
    const RowFinal f = finalize_row(mx, lt, p.sinks != nullptr ? p.sinks + head : nullptr);
    TQ* out = p.out + qtok * p.out_stride_token + head * p.out_stride_head;
    if (has0) {
      out[d0] = from_float<TQ>(o0.x * f.scale);
      out[d0 + 1] = from_float<TQ>(o0.y * f.scale);
      out[d0 + 2] = from_float<TQ>(o0.z * f.scale);
      out[d0 + 3] = from_float<TQ>(o0.w * f.scale);
    }
    if (has1) {
      out[d1] = from_float<TQ>(o1.x * f.scale);
      out[d1 + 1] = from_float<TQ>(o1.y * f.scale);
      out[d1 + 2] = from_float<TQ>(o1.z * f.scale);
      out[d1 + 3] = from_float<TQ>(o1.w * f.scale);
    }
    if (lane == 0 && p.lse != nullptr)
      p.lse[qtok * p.lse_stride_token + head * p.lse_stride_head] = f.lse;
  }
}

// Grid: one warp per (merge item, row) of the capacity, at most 8 blocks per SM; depends only on
// the capacity and the device, so a captured graph stays valid after a re-plan.
inline int64_t decode_merge_grid(int64_t merge_capacity, int num_sms) {
  const int64_t tasks = merge_capacity * kDecodeMaxRows;
  return std::max<int64_t>(
      1, std::min<int64_t>((tasks + kMergeWarps - 1) / kMergeWarps, int64_t{num_sms} * 8));
}

template <class TQ>
cudaError_t launch_decode_merge(const DecodeMergeParams<TQ>& p, int grid, cudaStream_t stream) {
  if constexpr (kDecodeMergePdl) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(static_cast<unsigned>(grid));
    cfg.blockDim = dim3(kMergeThreads);
    cfg.dynamicSmemBytes = 0;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    const cudaError_t err = cudaLaunchKernelEx(&cfg, decode_merge_kernel<TQ>, p);
    if (err != cudaSuccess) return err;
  } else {
    decode_merge_kernel<TQ><<<grid, kMergeThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

// merge_states: v [tokens, states, heads, head_dim] (strides in elements, last dim contiguous),
// s [tokens, states, heads] fp32 natural log; out like v without the states dim.
template <class T>
struct MergeStatesParams {
  const T* v = nullptr;
  int64_t v_stride_token = 0, v_stride_state = 0, v_stride_head = 0;
  const float* s = nullptr;
  int64_t s_stride_token = 0, s_stride_state = 0, s_stride_head = 0;
  T* out = nullptr;
  int64_t out_stride_token = 0, out_stride_head = 0;
  float* lse_out = nullptr;  // optional
  int64_t lse_stride_token = 0, lse_stride_head = 0;
  int64_t tokens = 0;
  int states = 0, heads = 0, head_dim = 0;
};

// One block of 128 threads per (token, head); threads over head_dim.
template <class T>
__global__ void __launch_bounds__(128)
    merge_states_kernel(const __grid_constant__ MergeStatesParams<T> p) {
  const int64_t row = blockIdx.x;
  const int64_t tok = row / p.heads;
  const int head = static_cast<int>(row % p.heads);
  const float* s = p.s + tok * p.s_stride_token + head * p.s_stride_head;
  float mx = -INFINITY;
  for (int i = 0; i < p.states; ++i)
    mx = fmaxf(mx, s[i * p.s_stride_state] * kLog2e);
  float lt = 0.f;
  if (mx != -INFINITY) {
    for (int i = 0; i < p.states; ++i)
      lt += exp2f(s[i * p.s_stride_state] * kLog2e - mx);
  }
  const T* v = p.v + tok * p.v_stride_token + head * p.v_stride_head;
  for (int d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
    float o = 0.f;
    if (mx != -INFINITY) {
      for (int i = 0; i < p.states; ++i)
        o += exp2f(s[i * p.s_stride_state] * kLog2e - mx) * to_float(v[i * p.v_stride_state + d]);
      o /= lt;
    }
    p.out[tok * p.out_stride_token + head * p.out_stride_head + d] = from_float<T>(o);
  }
  if (threadIdx.x == 0 && p.lse_out != nullptr) {
    p.lse_out[tok * p.lse_stride_token + head * p.lse_stride_head] =
        mx != -INFINITY ? (mx + log2f(lt)) * kLn2 : -INFINITY;
  }
}

template <class T>
cudaError_t launch_merge_states(const MergeStatesParams<T>& p, cudaStream_t stream) {
  const int64_t rows = p.tokens * p.heads;
  if (rows == 0) return cudaSuccess;
  merge_states_kernel<T><<<static_cast<unsigned>(rows), 128, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace flashserve::attention
