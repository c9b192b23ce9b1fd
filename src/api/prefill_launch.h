// The compiled prefill kernels, one translation unit per head_dim (src/api/prefill_sm90_hd*.cu)
// so that they build in parallel. Each instantiates float16 and bfloat16 x {plain, causal,
// general}.
#pragma once

#include <cuda_runtime_api.h>

#include "flashserve/attention/prefill_mask.cuh"
#include "flashserve/attention/prefill_params.h"
#include "flashserve/core/dtype.h"

namespace flashserve::detail {

cudaError_t launch_prefill_hd64(DType dtype, attention::PrefillKind kind,
                                const attention::PrefillParams& p, int grid, cudaStream_t stream);
cudaError_t launch_prefill_hd128(DType dtype, attention::PrefillKind kind,
                                 const attention::PrefillParams& p, int grid, cudaStream_t stream);
cudaError_t launch_prefill_hd256(DType dtype, attention::PrefillKind kind,
                                 const attention::PrefillParams& p, int grid, cudaStream_t stream);

}  // namespace flashserve::detail
