// CPU reference for rotary position embedding. Frequencies in float32 exactly as the kernel defines
// them (flashserve/rope/frequencies.h, written out again here), the angle in float32, then cos, sin
// and the rotation in double.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "flashserve/rope.h"

namespace fs_test::ref {

// inv_freq[i] = 1 / theta^(2i / rotary_dim) in float32, with Llama-3.1 scaling when asked.
inline std::vector<float> rope_inv_freq(const flashserve::RopeOptions& o, int rotary_dim) {
  const int half = rotary_dim / 2;
  std::vector<float> f(half);
  const flashserve::Llama31Scaling& s = o.llama31_scaling;
  const float low_wavelen = s.original_max_position / s.low_freq_factor;
  const float high_wavelen = s.original_max_position / s.high_freq_factor;
  for (int i = 0; i < half; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(rotary_dim);
    float v = 1.0f / std::pow(o.theta, e);
    if (o.llama31) {
      const float wavelen = 6.283185307179586f / v;
      if (wavelen > low_wavelen) {
        v = v / s.factor;
      } else if (!(wavelen < high_wavelen)) {
        const float smooth = (s.original_max_position / wavelen - s.low_freq_factor) /
                             (s.high_freq_factor - s.low_freq_factor);
        const float a = (1.0f - smooth) * v / s.factor;
        const float b = smooth * v;
        v = a + b;
      }
    }
    f[i] = v;
  }
  return f;
}

// cos / sin per (token, pair): [tokens, rotary_dim / 2] each.
struct RopeAngles {
  std::vector<double> cos, sin;
};

inline RopeAngles rope_angles(const std::vector<int64_t>& positions,
                              const flashserve::RopeOptions& o, int rotary_dim) {
  const std::vector<float> inv_freq = rope_inv_freq(o, rotary_dim);
  const size_t half = inv_freq.size();
  RopeAngles a;
  a.cos.resize(positions.size() * half);
  a.sin.resize(positions.size() * half);
  for (size_t t = 0; t < positions.size(); ++t) {
    const float scaled = static_cast<float>(positions[t]) / o.scale;
    for (size_t i = 0; i < half; ++i) {
      const float angle = scaled * inv_freq[i];
      a.cos[t * half + i] = std::cos(static_cast<double>(angle));
      a.sin[t * half + i] = std::sin(static_cast<double>(angle));
    }
  }
  return a;
}

// From a cos_sin_cache [max_position, rotary_dim] (values as stored); NaN for positions outside
// [0, max_position).
inline RopeAngles rope_cache_angles(const std::vector<int64_t>& positions,
                                    const std::vector<float>& cache, int64_t max_position,
                                    int rotary_dim) {
  const int half = rotary_dim / 2;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  RopeAngles a;
  a.cos.resize(positions.size() * half);
  a.sin.resize(positions.size() * half);
  for (size_t t = 0; t < positions.size(); ++t) {
    const int64_t p = positions[t];
    const bool ok = p >= 0 && p < max_position;
    for (int i = 0; i < half; ++i) {
      a.cos[t * half + i] = ok ? cache[p * rotary_dim + i] : nan;
      a.sin[t * half + i] = ok ? cache[p * rotary_dim + half + i] : nan;
    }
  }
  return a;
}

// Rotates one head x[head_dim] of token t; dims >= rotary_dim are returned unchanged.
inline void rope_head(const float* x, double* out, int64_t t, int head_dim, int rotary_dim,
                      bool interleave, const RopeAngles& a) {
  const int half = rotary_dim / 2;
  for (int d = rotary_dim; d < head_dim; ++d)
    out[d] = x[d];
  for (int i = 0; i < half; ++i) {
    const int ia = interleave ? 2 * i : i;
    const int ib = interleave ? 2 * i + 1 : i + half;
    const double c = a.cos[t * half + i], s = a.sin[t * half + i];
    const double xa = x[ia], xb = x[ib];
    out[ia] = xa * c - xb * s;
    out[ib] = xb * c + xa * s;
  }
}

}  // namespace fs_test::ref
