// What one prebuilt decode specialization compiles: its kernels (decode_kernel<DecodeTile<D, kv
// bytes>, TQ, TKV>, and decode_kernel_wide where the specialization has one, through
// launch_decode) behind the two function pointers decode_run calls.
// Each specialization of -DFLASHSERVE_PREBUILT_PRESET is its own generated translation unit
// (src/api/decode_prebuilt.cu.in), so a build with many of them compiles in parallel.
#pragma once

#include <cuda_runtime_api.h>

#include "api/decode_kernels.h"
#include "flashserve/attention/decode_kernel.cuh"

namespace flashserve::detail {

template <int kHeadDim, class TQ, class TKV>
cudaError_t prebuilt_decode_blocks(int* blocks, bool wide) {
  if constexpr (attention::decode_has_wide(kHeadDim, sizeof(TKV))) {
    if (wide) return attention::decode_blocks_per_sm<kHeadDim, TQ, TKV, true>(blocks);
  }
  if (wide) return cudaErrorInvalidValue;  // the plan never picks it (decode_wide_max_units)
  return attention::decode_blocks_per_sm<kHeadDim, TQ, TKV, false>(blocks);
}

template <int kHeadDim, class TQ, class TKV>
cudaError_t prebuilt_decode_launch(const void* params, int grid, bool wide, cudaStream_t stream) {
  const auto& p = *static_cast<const attention::DecodeParams<TQ, TKV>*>(params);
  if constexpr (attention::decode_has_wide(kHeadDim, sizeof(TKV))) {
    if (wide) return attention::launch_decode<kHeadDim, TQ, TKV, true>(p, grid, stream);
  }
  if (wide) return cudaErrorInvalidValue;
  return attention::launch_decode<kHeadDim, TQ, TKV, false>(p, grid, stream);
}

template <int kHeadDim, class TQ, class TKV>
constexpr DecodeKernelFns prebuilt_decode_fns() {
  return {&prebuilt_decode_blocks<kHeadDim, TQ, TKV>, &prebuilt_decode_launch<kHeadDim, TQ, TKV>};
}

}  // namespace flashserve::detail
