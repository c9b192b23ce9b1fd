// Warp and block sum reductions in float.
#pragma once

namespace flashserve {

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1)
    x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// Sum over all threads of a 1-D block (blockDim.x a multiple of 32, at most 1024). Every thread
// gets the result. `scratch` holds 32 floats; it may be reused after the call returns.
__device__ __forceinline__ float block_sum(float x, float* scratch) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int num_warps = blockDim.x >> 5;
  x = warp_sum(x);
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  x = lane < num_warps ? scratch[lane] : 0.f;
  x = warp_sum(x);
  __syncthreads();  // scratch is free again for the caller's next reduction
  return x;
}

}  // namespace flashserve
