// sin and cos of a float32 angle over the whole float range, in registers only, host and device.
//
// Why not sincosf: its large-argument path (|x| > 105615, reached by positions above 1e5) keeps a
// 28-byte scratch array that ptxas promotes to registers or leaves on the stack depending on the
// surrounding kernel. Here the reduction is exact integer arithmetic (Payne-Hanek: |x| = m 2^e
// times 2/pi, keeping only the bits of 2/pi that matter mod 4, chosen by a switch rather than read
// from a table), then Taylor polynomials in double on [-pi/4, pi/4]. The float results are sin and
// cos of the float input correctly rounded but for inputs within ~1e-16 of a rounding boundary.
// It runs once per (token, pair), never per head, so its cost (about 30 double operations) does
// not show next to the memory traffic.
#pragma once

#include <cstdint>
#ifndef __CUDA_ARCH__
#include <cstring>
#endif

namespace flashserve::rope {
namespace detail {

// 2/pi = sum over i of two_over_pi_chunk(i) * 2^(-24 (i + 1)).
#ifdef __CUDACC__
__host__ __device__
#endif
    constexpr uint64_t
    two_over_pi_chunk(int i) {
  switch (i) {
    case 0:
      return 0xA2F983;
    case 1:
      return 0x6E4E44;
    case 2:
      return 0x1529FC;
    case 3:
      return 0x2757D1;
    case 4:
      return 0xF534DD;
    case 5:
      return 0xC0DB62;
    case 6:
      return 0x95993C;
    case 7:
      return 0x439041;
    case 8:
      return 0xFE5163;
  }
  return 0;
}

#ifdef __CUDACC__
__host__ __device__
#endif
    inline uint32_t
    float_bits(float x) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(x);
#else
  uint32_t b;
  std::memcpy(&b, &x, sizeof(b));
  return b;
#endif
}

}  // namespace detail

#ifdef __CUDACC__
__host__ __device__
#endif
    inline void
    sincos_float(float x, float* sin_out, float* cos_out) {
  const uint32_t abs_bits = detail::float_bits(x) & 0x7fffffffu;
  if (abs_bits >= 0x7f800000u) {  // inf or NaN
    *sin_out = *cos_out = x - x;
    return;
  }
  const double ax = x < 0.f ? -static_cast<double>(x) : static_cast<double>(x);
  double r = ax;
  uint64_t quadrant = 0;
  if (ax > 0.78539816339744831) {
    // |x| = m 2^e with m a 24-bit integer (|x| > pi/4 is a normal float).
    const uint64_t m = (abs_bits & 0x7fffffu) | 0x800000u;
    const int e = static_cast<int>(abs_bits >> 23) - 127 - 23;
    // |x| 2/pi mod 4 as a 2.62 fixed-point number, summed mod 2^64. Chunk i contributes
    // m c_i 2^(e - 24 (i + 1)); the chunks before i0 contribute multiples of 4 and are skipped,
    // the five from i0 on leave an error below 2^-62 (the fixed point's own resolution).
    const int i0 = e >= 2 ? (e - 2) / 24 : 0;
    uint64_t acc = 0;
    for (int k = 0; k < 5; ++k) {
      const int i = i0 + k;
      const int shift = 62 + e - 24 * (i + 1);
      const uint64_t t = m * detail::two_over_pi_chunk(i);
      if (shift >= 0) {
        acc += t << shift;  // shift <= 63: bits beyond 2^64 are multiples of 4, dropped
      } else if (shift > -64) {
        acc += t >> -shift;
      }
    }
    // Nearest quadrant and the signed remainder in [-1/2, 1/2) quadrants (all mod 2^64).
    quadrant = (acc + (uint64_t{1} << 61)) >> 62;
    const int64_t f = static_cast<int64_t>(acc - (quadrant << 62));
    r = static_cast<double>(f) * 3.4061215800865545e-19;  // f 2^-62 pi/2
    quadrant &= 3;
  }
  // Taylor series on |r| <= pi/4: the first omitted terms are below 5e-17.
  const double r2 = r * r;
  const double sp =
      r + r * r2 *
              (-1.0 / 6 +
               r2 * (1.0 / 120 +
                     r2 * (-1.0 / 5040 +
                           r2 * (1.0 / 362880 +
                                 r2 * (-1.0 / 39916800 +
                                       r2 * (1.0 / 6227020800 + r2 * (-1.0 / 1307674368000)))))));
  const double cp =
      1.0 +
      r2 * (-0.5 +
            r2 * (1.0 / 24 +
                  r2 * (-1.0 / 720 +
                        r2 * (1.0 / 40320 +
                              r2 * (-1.0 / 3628800 + r2 * (1.0 / 479001600 +
                                                           r2 * (-1.0 / 87178291200 +
                                                                 r2 * (1.0 / 20922789888000))))))));
  double s, c;
  switch (quadrant) {
    case 0:
      s = sp;
      c = cp;
      break;
    case 1:
      s = cp;
      c = -sp;
      break;
    case 2:
      s = -sp;
      c = -cp;
      break;
    default:
      s = -cp;
      c = sp;
      break;
  }
  *sin_out = static_cast<float>((detail::float_bits(x) >> 31) != 0 ? -s : s);  // sin(-0) = -0
  *cos_out = static_cast<float>(c);
}

}  // namespace flashserve::rope
