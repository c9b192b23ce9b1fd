// What one prebuilt prefill specialization compiles: its kernel (prefill_kernel<PrefillTraits<
// Element, D, kind == plain, paged, Dv, bm>, kind>, through launch_prefill_sm90) behind the
// function pointer prefill_run calls. Each specialization of -DFLASHSERVE_PREBUILT_PRESET is its
// own generated translation unit (src/api/prefill_prebuilt.cu.in), so a build with many of them
// compiles in parallel.
#pragma once

#include <cuda_runtime_api.h>

#include "api/prefill_kernels.h"
#include "flashserve/attention/prefill_kernel_sm90.cuh"

namespace flashserve::detail {

template <class Element, int kHeadDim, attention::PrefillKind kKind, bool kPaged,
          int kHeadDimV = kHeadDim, int kBlockM = 0>
cudaError_t prebuilt_prefill_launch(const void* params, int grid, cudaStream_t stream) {
  return attention::sm90::launch_prefill_sm90<Element, kHeadDim, kKind, kPaged, kHeadDimV, kBlockM>(
      *static_cast<const attention::PrefillParams*>(params), grid, stream);
}

template <class Element, int kHeadDim, attention::PrefillKind kKind, bool kPaged,
          int kHeadDimV = kHeadDim, int kBlockM = 0>
constexpr PrefillKernelFns prebuilt_prefill_fns() {
  PrefillKernelFns fns{};
  fns.launch = &prebuilt_prefill_launch<Element, kHeadDim, kKind, kPaged, kHeadDimV, kBlockM>;
  return fns;
}

}  // namespace flashserve::detail
