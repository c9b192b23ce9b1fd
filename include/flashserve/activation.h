// Gated activations: out[..., :] = act(input[..., :d]) * input[..., d:2d], computed in float32.
// input is 2-D [rows, 2d] or 3-D [outer, inner, 2d] with the last dim contiguous and any
// non-negative row strides (up to 2^31 - 1 rows); out has the same leading shape, last dim d, the
// input's dtype (float32, float16 or bfloat16), and must not overlap input. Any d >= 1 works;
// 16-byte-aligned rows take the vectorized path. Empty views may carry null pointers (a no-op).
#pragma once

#include <cuda_runtime_api.h>

#include "flashserve/core/status.h"
#include "flashserve/tensor.h"

namespace flashserve {

enum class Activation {
  kSilu,      // x * sigmoid(x)
  kGelu,      // 0.5 x (1 + erf(x / sqrt 2))
  kGeluTanh,  // 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
};

const char* activation_name(Activation act);

Status act_and_mul(const TensorView& out, const TensorView& input, Activation act,
                   cudaStream_t stream = nullptr);
Status silu_and_mul(const TensorView& out, const TensorView& input, cudaStream_t stream = nullptr);
Status gelu_and_mul(const TensorView& out, const TensorView& input, cudaStream_t stream = nullptr);
Status gelu_tanh_and_mul(const TensorView& out, const TensorView& input,
                         cudaStream_t stream = nullptr);

}  // namespace flashserve
