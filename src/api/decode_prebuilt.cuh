// What one prebuilt decode specialization compiles: its kernel (decode_kernel<DecodeTile<D, kv
// bytes>, TQ, TKV>, through launch_decode) behind the two function pointers decode_run calls.
// Each specialization of -DFLASHSERVE_PREBUILT_PRESET is its own generated translation unit
// (src/api/decode_prebuilt.cu.in), so a build with many of them compiles in parallel.
#pragma once

#include <cuda_runtime_api.h>

#include "api/decode_kernels.h"
#include "flashserve/attention/decode_kernel.cuh"

namespace flashserve::detail {

template <int kHeadDim, class TQ, class TKV>
cudaError_t prebuilt_decode_launch(const void* params, int grid, cudaStream_t stream) {
  return attention::launch_decode<kHeadDim>(
      *static_cast<const attention::DecodeParams<TQ, TKV>*>(params), grid, stream);
}

template <int kHeadDim, class TQ, class TKV>
constexpr DecodeKernelFns prebuilt_decode_fns() {
  return {&attention::decode_blocks_per_sm<kHeadDim, TQ, TKV>,
          &prebuilt_decode_launch<kHeadDim, TQ, TKV>};
}

}  // namespace flashserve::detail
