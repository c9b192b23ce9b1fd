// The normalizations as small functors over one row: `stats` reduces what it needs through the
// caller's `sum` (a warp or block reduction) and `apply` maps one element.
#pragma once

namespace flashserve::norm {

// y = x / sqrt(mean(x^2) + eps) * w
struct RmsNorm {
  static constexpr bool kHasBias = false;
  float inv_rms = 0.f;

  template <class ForEach, class Sum>
  __device__ __forceinline__ void stats(ForEach&& for_each, Sum&& sum, int n, float eps) {
    float ss = 0.f;
    for_each([&](float x) { ss += x * x; });
    inv_rms = rsqrtf(sum(ss) / static_cast<float>(n) + eps);
  }
  __device__ __forceinline__ float apply(float x, float w, float /*b*/) const {
    return x * inv_rms * w;
  }
};

// y = (x - mean) / sqrt(var + eps) * w + b, with the variance taken around the mean in a second
// pass (not E[x^2] - mean^2, which cancels badly for rows with a large mean).
struct LayerNorm {
  static constexpr bool kHasBias = true;
  float mean = 0.f;
  float inv_std = 0.f;

  template <class ForEach, class Sum>
  __device__ __forceinline__ void stats(ForEach&& for_each, Sum&& sum, int n, float eps) {
    float s = 0.f;
    for_each([&](float x) { s += x; });
    mean = sum(s) / static_cast<float>(n);
    float ss = 0.f;
    for_each([&](float x) {
      const float d = x - mean;
      ss += d * d;
    });
    inv_std = rsqrtf(sum(ss) / static_cast<float>(n) + eps);
  }
  __device__ __forceinline__ float apply(float x, float w, float b) const {
    return (x - mean) * inv_std * w + b;
  }
};

}  // namespace flashserve::norm
