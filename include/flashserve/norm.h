// Normalizations over the last dim of a 2-D [rows, hidden] or 3-D [outer, inner, hidden] tensor
// whose last dim is contiguous (other strides are free: slices of packed tensors work in place).
// Input, weight, bias and residual share one dtype: float32, float16 or bfloat16. The output has
// the input's dtype, or float8_e4m3 with `options.out_scale` (out = y / scale, saturated).
// Any hidden size works; multiples of 16 bytes per row take the vectorized path.
#pragma once

#include <cuda_runtime_api.h>

#include "flashserve/core/status.h"
#include "flashserve/tensor.h"

namespace flashserve {

struct NormOptions {
  float eps = 1e-6f;
  // float32 scalar on the device; required when `out` is float8_e4m3, ignored otherwise. A device
  // value (not a host float) so that a captured CUDA graph picks up a new scale on replay.
  TensorView out_scale;
};

// out = input / sqrt(mean(input^2) + eps) * weight. `out` may be `input` (in place).
Status rmsnorm(const TensorView& out, const TensorView& input, const TensorView& weight,
               const NormOptions& options = {}, cudaStream_t stream = nullptr);

// residual = input + residual (in place); out = rmsnorm(residual) * weight.
// `out` may be `input`; `residual` must not overlap either.
Status fused_add_rmsnorm(const TensorView& out, const TensorView& input, const TensorView& residual,
                         const TensorView& weight, const NormOptions& options = {},
                         cudaStream_t stream = nullptr);

// Gemma's RMSNorm: the weight is applied as (1 + weight).
Status gemma_rmsnorm(const TensorView& out, const TensorView& input, const TensorView& weight,
                     const NormOptions& options = {}, cudaStream_t stream = nullptr);
Status gemma_fused_add_rmsnorm(const TensorView& out, const TensorView& input,
                               const TensorView& residual, const TensorView& weight,
                               const NormOptions& options = {}, cudaStream_t stream = nullptr);

// out = (input - mean) / sqrt(var + eps) * weight + bias. `bias` may be undefined (no bias).
Status layernorm(const TensorView& out, const TensorView& input, const TensorView& weight,
                 const TensorView& bias, const NormOptions& options = {},
                 cudaStream_t stream = nullptr);

}  // namespace flashserve
