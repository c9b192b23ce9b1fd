// Rotary frequencies, computed on the host in float32 exactly as Hugging Face defines them:
//
//   inv_freq[i] = 1.0f / powf(theta, float(2i) / float(rotary_dim))      i < rotary_dim / 2
//
// and, with Llama-3.1 scaling (transformers' _compute_llama3_parameters), per frequency:
//
//   wavelen = 2 pi / inv_freq
//   wavelen < original_max_position / high_freq_factor: kept
//   wavelen > original_max_position / low_freq_factor:  inv_freq / factor
//   otherwise: smooth = (original_max_position / wavelen - low_freq_factor)
//                       / (high_freq_factor - low_freq_factor)
//              inv_freq = (1 - smooth) * inv_freq / factor + smooth * inv_freq
//
// Why the host: device powf is accurate to a few ulp while the host's is (nearly) correctly
// rounded, and one ulp of inv_freq[0] = 1 moves the angle at position 131071 by 0.008 rad. Doing
// it here makes the frequencies independent of the GPU and reproducible by a host reference.
// The kernel then takes angle = (float(position) / scale) * inv_freq[i], rounded to float32 at
// each step, and sincosf of that angle.
#pragma once

#include <cmath>

#include "flashserve/rope/params.h"

namespace flashserve::rope {

// Writes rotary_dim / 2 frequencies to `inv_freq`.
inline void compute_inv_freq(const FrequencyConfig& c, float* inv_freq) {
  const int half = c.rotary_dim / 2;
  const float two_pi = 6.283185307179586f;
  const float low_wavelen = c.original_max_position / c.low_freq_factor;
  const float high_wavelen = c.original_max_position / c.high_freq_factor;
  for (int i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(c.rotary_dim);
    float f = 1.0f / std::pow(c.theta, exponent);
    if (c.llama31) {
      const float wavelen = two_pi / f;
      if (wavelen < high_wavelen) {
        // high frequency: kept
      } else if (wavelen > low_wavelen) {
        f = f / c.factor;
      } else {
        const float smooth = (c.original_max_position / wavelen - c.low_freq_factor) /
                             (c.high_freq_factor - c.low_freq_factor);
        const float scaled = (1.0f - smooth) * f / c.factor;
        const float kept = smooth * f;
        f = scaled + kept;
      }
    }
    inv_freq[i] = f;
  }
}

}  // namespace flashserve::rope
