// Where the kernel's cos / sin come from, as small functors: `get(position, i, half, c, s)` gives
// cos and sin of pair i's angle for one token. The kernel calls it once per (token, pair) and
// shares the result across all heads of the token through shared memory.
#pragma once

#include <cstdint>

#include "flashserve/core/types.cuh"
#include "flashserve/rope/params.h"
#include "flashserve/rope/sincos.h"

namespace flashserve::rope {

// Angles from host-computed frequencies (frequencies.h): angle = (float(position) / scale) *
// inv_freq[i], each step rounded to float32, then sin and cos of that float angle, accurate over
// the whole range (angles reach 1e5 rad and more, far beyond what __sinf / __cosf handle); see
// sincos.h for why not sincosf.
//
// The quotient is formed without a division instruction (whose slow-path subroutine costs a call
// per element): float(float(position) * (1 / scale)) with the product in double and 1 / scale
// rounded to double on the host. The double product is within 2^-52 (relative) of the exact
// quotient, while a quotient of two floats is never closer than ~2^-49 to a float rounding
// boundary, so the final rounding gives exactly the float32 quotient. The multiply by inv_freq is
// __fmul_rn so that the compiler cannot fuse it into anything.
struct ComputedAngles {
  double inv_scale = 1.0;  // 1.0 / double(scale), computed on the host
  float inv_freq[kMaxRotaryDim / 2] = {};

  __device__ __forceinline__ void get(int64_t position, int i, int /*half*/, float& c,
                                      float& s) const {
    const float t =
        __double2float_rn(__dmul_rn(static_cast<double>(static_cast<float>(position)), inv_scale));
    sincos_float(__fmul_rn(t, inv_freq[i]), &s, &c);
  }
};

// Angles from a [max_position, 2 * half] cache (cos in the first half of a row, sin in the
// second). A position outside [0, max_position) reads nothing and gives NaN: loud in the output,
// never an out-of-bounds read.
template <class TCache>
struct CachedAngles {
  const TCache* cache = nullptr;
  int64_t max_position = 0;

  __device__ __forceinline__ void get(int64_t position, int i, int half, float& c, float& s) const {
    if (position < 0 || position >= max_position) {
      c = s = __int_as_float(0x7fc00000);
      return;
    }
    const TCache* row = cache + position * (2 * half);
    c = to_float(row[i]);
    s = to_float(row[half + i]);
  }
};

}  // namespace flashserve::rope
