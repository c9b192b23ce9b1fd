// Combining attention states: (output o_i, LSE lse_i) pairs computed over disjoint kv ranges give
// o = sum_i exp(lse_i - lse) o_i with lse = log sum_i exp(lse_i). merge_states_kernel is the public
// merge_state / merge_states (natural-log LSEs); the split-KV partials of a decode plan are merged
// inside the decode kernel (merge_unit in decode_kernel.cuh).
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>

#include "flashserve/attention/params.h"
#include "flashserve/attention/tile_policy.h"
#include "flashserve/attention/variants.cuh"
#include "flashserve/core/types.cuh"

namespace flashserve::attention {

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
