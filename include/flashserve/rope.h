// Rotary position embedding on q and k by position ids.
//
// q: [tokens, q_heads, head_dim], k: [tokens, kv_heads, head_dim], last dim contiguous, any token
// and head strides (slices of a packed qkv tensor work). q_out / k_out have the same shapes and
// dtype; pass q / k themselves to rotate in place. positions: int32 or int64 [tokens].
// The first rotary_dim dims of each head are rotated; the rest are copied (out of place) or left
// untouched (in place).
//
// Layouts: NeoX (default) rotates dim i with dim i + rotary_dim / 2; GPT-J (interleave = true)
// rotates dim 2i with dim 2i + 1. Frequencies follow the Hugging Face float32 definition:
// inv_freq[i] = 1 / theta^(2i / rotary_dim), angle = (position / scale) * inv_freq[i].
#pragma once

#include <cuda_runtime_api.h>

#include "flashserve/core/status.h"
#include "flashserve/tensor.h"

namespace flashserve {

struct Llama31Scaling {
  float factor = 8.f;
  float low_freq_factor = 1.f;
  float high_freq_factor = 4.f;
  float original_max_position = 8192.f;
};

struct RopeOptions {
  int rotary_dim = 0;       // 0 means head_dim; must be even and <= head_dim
  bool interleave = false;  // false: NeoX halves; true: GPT-J adjacent pairs
  float theta = 10000.f;
  float scale = 1.f;     // linear position interpolation: positions are divided by scale
  bool llama31 = false;  // apply Llama-3.1 frequency scaling with `llama31_scaling`
  Llama31Scaling llama31_scaling;
};

Status apply_rope(const TensorView& q_out, const TensorView& k_out, const TensorView& q,
                  const TensorView& k, const TensorView& positions, const RopeOptions& options = {},
                  cudaStream_t stream = nullptr);

// The same rotation with angles from a precomputed cache (the vLLM layout):
// cos_sin_cache [max_position, rotary_dim], float32 or q's dtype; row p holds cos(p * inv_freq)
// in its first rotary_dim / 2 columns and sin(p * inv_freq) in the rest. options.rotary_dim
// must be 0 or equal the cache width; theta, scale and llama31 are ignored. A position outside
// [0, max_position) yields NaN in that token's rotated dims (loud, never an out-of-bounds read).
Status apply_rope_cos_sin_cache(const TensorView& q_out, const TensorView& k_out,
                                const TensorView& q, const TensorView& k,
                                const TensorView& positions, const TensorView& cos_sin_cache,
                                const RopeOptions& options = {}, cudaStream_t stream = nullptr);

}  // namespace flashserve
