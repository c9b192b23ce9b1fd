// Combining attention states: (output o_i, LSE lse_i) pairs computed over disjoint kv ranges give
// o = sum_i exp(lse_i - lse) o_i with lse = log sum_i exp(lse_i).
//  - decode_merge_kernel: the split-KV partials of a decode plan (log2 LSEs in the workspace),
//    persistent over the plan's merge list like the decode kernel; the merge order is the split
//    order, so the result is deterministic.
//  - merge_states_kernel: the public merge_state / merge_states (natural-log LSEs).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "flashserve/attention/params.h"
#include "flashserve/attention/variants.cuh"
#include "flashserve/core/types.cuh"

namespace flashserve::attention {

constexpr int kMergeThreads = 256;

template <class TQ>
__global__ void __launch_bounds__(kMergeThreads)
    decode_merge_kernel(const __grid_constant__ DecodeMergeParams<TQ> p) {
  const int num_merge = p.counts->num_merge;
  const int D = p.head_dim;
  for (int item = blockIdx.x; item < num_merge; item += gridDim.x) {
    const DecodeMergeItem m = p.merge[item];
    const int nr = m.row_end - m.row_begin;
    for (int i = threadIdx.x; i < nr * D; i += kMergeThreads) {
      const int r = i / D, d = i % D;
      float mx = -INFINITY;
      for (int s = 0; s < m.num_partials; ++s)
        mx = fmaxf(mx, p.partial_lse[(int64_t{m.partial_begin} + s) * kDecodeMaxRows + r]);
      float lt = 0.f, o = 0.f;
      if (mx != -INFINITY) {
        for (int s = 0; s < m.num_partials; ++s) {
          const int64_t slot = (int64_t{m.partial_begin} + s) * kDecodeMaxRows + r;
          const float f = exp2f(p.partial_lse[slot] - mx);
          lt += f;
          o += f * p.partial_out[slot * D + d];
        }
      }
      const int row = m.row_begin + r;
      const int64_t qtok = m.q_begin + row / p.group;
      const int64_t head = static_cast<int64_t>(m.kv_head) * p.group + row % p.group;
      const RowFinal f = finalize_row(mx, lt, p.sinks != nullptr ? p.sinks + head : nullptr);
      p.out[qtok * p.out_stride_token + head * p.out_stride_head + d] = from_float<TQ>(o * f.scale);
      if (d == 0 && p.lse != nullptr)
        p.lse[qtok * p.lse_stride_token + head * p.lse_stride_head] = f.lse;
    }
  }
}

template <class TQ>
cudaError_t launch_decode_merge(const DecodeMergeParams<TQ>& p, int grid, cudaStream_t stream) {
  decode_merge_kernel<TQ><<<grid, kMergeThreads, 0, stream>>>(p);
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
