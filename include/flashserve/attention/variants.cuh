// Attention variants of decode as small functors the mainloop and the merge call: the logit
// transform (soft-cap), the mask (causal among a request's query tokens, sliding window) and the
// attention sink (a per-head logit that adds to the softmax denominator but carries no value).
// Logits are in log2 units: log2(e) is folded into the q scale, or applied after the soft-cap.
#pragma once

#include <cmath>
#include <cstdint>

#include "flashserve/attention/params.h"

namespace flashserve::attention {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct LogitTransform {
  float soft_cap;  // 0: off; else logit = cap * tanh(logit / cap), on the natural-unit logit

  // q_scale to fold into q: the natural scale, times log2(e) unless the soft-cap needs the
  // natural logit first.
  __host__ __device__ static float q_scale(float sm_scale, float k_scale, float soft_cap) {
    return soft_cap > 0.f ? sm_scale * k_scale : sm_scale * k_scale * kLog2e;
  }
  __device__ __forceinline__ float operator()(float s) const {
    return soft_cap > 0.f ? soft_cap * kLog2e * tanhf(s * (1.f / soft_cap)) : s;
  }
};

// Which kv positions a query row sees: pos <= qpos (causal: query token j of n sits at kv
// position kv_len - n + j) and pos >= qpos - window_left when the window is on.
struct DecodeMask {
  int32_t window_left;
  __device__ __forceinline__ bool visible(int pos, int qpos) const {
    return pos <= qpos && (window_left < 0 || pos >= qpos - window_left);
  }
};

// Final output scale and natural-log LSE of a row from its running max m (log2 units), its
// denominator l (relative to m) and the optional sink logit (natural units). Without visible
// tokens (l == 0) and without a sink the output is 0 and the LSE -inf, never NaN.
struct RowFinal {
  float scale;  // multiply the unnormalized accumulator by this
  float lse;    // natural log
};
__device__ __forceinline__ RowFinal finalize_row(float m, float l, const float* sink) {
  if (sink != nullptr) {
    const float s2 = *sink * kLog2e;
    const float mm = l > 0.f ? fmaxf(m, s2) : s2;
    const float keep = l > 0.f ? exp2f(m - mm) : 0.f;
    const float denom = l * keep + exp2f(s2 - mm);
    return {keep / denom, (mm + log2f(denom)) * kLn2};
  }
  if (!(l > 0.f)) return {0.f, -INFINITY};
  return {1.f / l, (m + log2f(l)) * kLn2};
}

}  // namespace flashserve::attention
