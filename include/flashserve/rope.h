// Rotary position embedding on q and k by position ids.
//
// q: [tokens, q_heads, head_dim], k: [tokens, kv_heads, head_dim] in float32, float16 or bfloat16
// (one dtype), last dim contiguous, any non-negative token and head strides (slices of a packed
// qkv tensor work). q_out / k_out have the same shapes and dtype; pass q / k themselves to rotate
// in place, or memory that overlaps neither q nor k (nor positions / the cache). q and k must not
// share elements. positions: int32 or int64 [tokens], contiguous. Empty views (0 tokens) may carry
// null pointers; the call is then a no-op.
// The first rotary_dim dims of each head are rotated; the rest are copied (out of place) or left
// untouched (in place).
//
// Layouts: NeoX (default) rotates dim i with dim i + rotary_dim / 2; GPT-J (interleave = true)
// rotates dim 2i with dim 2i + 1; pair i uses frequency i in both.
// Frequencies follow the Hugging Face float32 definition, computed on the host in float32:
//   inv_freq[i] = 1.0f / powf(theta, float(2i) / float(rotary_dim)), with Llama-3.1 scaling if
//   asked (see flashserve/rope/frequencies.h), and
//   angle = (float(position) / scale) * inv_freq[i], each step rounded to float32;
// cos and sin of that float32 angle are accurate to float precision at any position (no fast,
// range-limited intrinsics).
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
  int rotary_dim = 0;       // 0 means head_dim; must be even, <= head_dim and <= 512
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
// [0, max_position) yields NaN in that token's rotated dims (loud, never an out-of-bounds read);
// its other dims are still copied. With FLASHSERVE_DEBUG_CHECKS (flashserve::debug_checks()), the
// positions are first copied to the host (synchronizing `stream`; skipped while it is captured
// into a graph) and an out-of-range one returns kInvalidArgument naming its index.
Status apply_rope_cos_sin_cache(const TensorView& q_out, const TensorView& k_out,
                                const TensorView& q, const TensorView& k,
                                const TensorView& positions, const TensorView& cos_sin_cache,
                                const RopeOptions& options = {}, cudaStream_t stream = nullptr);

}  // namespace flashserve
