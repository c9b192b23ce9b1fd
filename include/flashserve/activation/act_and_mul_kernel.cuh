// Gated activation kernel (out = act(x[:, :d]) * x[:, d:]) and its launcher.
#pragma once

#include <cuda_runtime.h>

#include "flashserve/activation/params.h"
#include "flashserve/activation/tile_policy.h"
#include "flashserve/activation/variants.cuh"
#include "flashserve/core/vec.cuh"

namespace flashserve::activation {

// Row blockIdx.x, chunk blockIdx.y. `out` never overlaps `input` (checked by the API), hence
// __restrict__. Two vectors per thread per step: four 16-byte loads in flight before the
// activation's math (erfc for GELU is ~20 instructions an element). The launch bounds hold every
// variant to 32 registers, i.e. 2048 threads a SM: left alone GELU took 43 and ran at half
// occupancy, 80% of the copy bandwidth (ncu: "Block Limit Registers 1").
template <class Act, class T, int kVec>
__global__ void __launch_bounds__(kActMaxThreads, 2048 / kActMaxThreads)
    act_and_mul_kernel(const ActParams<T> p) {
  using V = Vec<T, kVec>;
  const int64_t row = blockIdx.x;
  const T* __restrict__ x = p.input + p.input_rows.offset(row);
  const T* __restrict__ gate = x + p.d;
  T* __restrict__ y = p.out + p.out_rows.offset(row);
  const int nvec = p.d / kVec;
  const int stride = gridDim.y * blockDim.x;
  Act act;
  auto apply = [&](const V& av, const V& gv, int i) {
    float a[kVec], g[kVec], o[kVec];
    av.to_floats(a);
    gv.to_floats(g);
#pragma unroll
    for (int j = 0; j < kVec; ++j)
      o[j] = act(a[j]) * g[j];
    V::from_floats(o).store(y + i * kVec);
  };
  int i = blockIdx.y * blockDim.x + threadIdx.x;
  for (; i + stride < nvec; i += 2 * stride) {
    const V a0 = V::load(x + i * kVec), g0 = V::load(gate + i * kVec);
    const V a1 = V::load(x + (i + stride) * kVec), g1 = V::load(gate + (i + stride) * kVec);
    apply(a0, g0, i);
    apply(a1, g1, i + stride);
  }
  if (i < nvec) apply(V::load(x + i * kVec), V::load(gate + i * kVec), i);
}

namespace detail {
inline bool act_rows_aligned(const void* ptr, const RowIndex& rows, int elem_size, int vec) {
  return vec_aligned(ptr, elem_size, vec) && rows.outer_stride % vec == 0 &&
         rows.inner_stride % vec == 0;
}
}  // namespace detail

// Launches the activation described by `p` (rows == 0 is a no-op). 16-byte vectors when d, both
// pointers and every row stride allow it (d % vec == 0 also aligns the gate half), else scalars.
template <class Act, class T>
cudaError_t launch_act_and_mul(const ActParams<T>& p, cudaStream_t stream) {
  if (p.rows == 0 || p.d == 0) return cudaSuccess;
  constexpr int kV = kVec16<T>;
  const bool aligned = p.d % kV == 0 &&
                       detail::act_rows_aligned(p.input, p.input_rows, sizeof(T), kV) &&
                       detail::act_rows_aligned(p.out, p.out_rows, sizeof(T), kV);
  const int vec = aligned ? kV : 1;
  int device = 0, num_sms = 0;  // unknown: one block per row
  if (cudaGetDevice(&device) == cudaSuccess) {
    cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device);
  }
  const ActTile tile = choose_act_tile(p.rows, p.d / vec, num_sms);
  const dim3 grid(static_cast<unsigned>(p.rows), tile.chunks), block(tile.threads);
  if (aligned) {
    act_and_mul_kernel<Act, T, kV><<<grid, block, 0, stream>>>(p);
  } else {
    act_and_mul_kernel<Act, T, 1><<<grid, block, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace flashserve::activation
