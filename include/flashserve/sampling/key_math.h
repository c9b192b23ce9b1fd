// Key and key-range arithmetic of the sampling kernels, host and device: the kernels use it, and
// the CPU tests replay the whole selection with it against brute force.
//
// Keys are 32-bit and ordered like the values: the bits of non-negative floats (probabilities, or
// exp2((x - max) * log2(e) / T) for logits), or order_key() of arbitrary floats (exact top-k).
// Masses are v * 2^(30 - e_max) rounded to an integer, e_max the row maximum's exponent (exact
// scaling by powers of two, identical on every CTA and on the host): every mass is < 2^31 and a
// normal row maximum's is >= 2^30 (subnormal rows are integer multiples of 2^-149, so their masses
// are exact), so a row's sums fit in 64 bits and do not depend on summation order.
#pragma once

#include <cuda_runtime_api.h>

#include <cfloat>
#include <cstdint>
#include <cmath>
#include <cstring>

namespace flashserve::sampling {

constexpr int kBins = 256;  // bins of one radix pass

// Whether top_k filters a row of `vocab` elements (<= 0 or >= vocab: no top-k filter).
__host__ __device__ __forceinline__ bool filters_top_k(int top_k, int vocab) {
  return top_k > 0 && top_k < vocab;
}

constexpr uint32_t kOneBits = 0x3f800000u;  // 1.0f: the row maximum of exp2((x - max) * c)

__host__ __device__ __forceinline__ uint32_t float_bits(float x) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(x);
#else
  uint32_t b;
  std::memcpy(&b, &x, sizeof(b));
  return b;
#endif
}

__host__ __device__ __forceinline__ float bits_float(uint32_t b) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(b);
#else
  float x;
  std::memcpy(&x, &b, sizeof(x));
  return x;
#endif
}

// A probability as a key: its bits, or 0 for values that cannot be sampled (negative, NaN, inf).
__host__ __device__ __forceinline__ uint32_t prob_key(float p) {
  return p > 0.f && p <= FLT_MAX ? float_bits(p) : 0u;
}

// An order-preserving key of any float: larger values get larger keys, -0 == +0, and NaN ranks
// below -inf (key 1). Key 0 is never produced: it marks padding.
__host__ __device__ __forceinline__ uint32_t order_key(float x) {
  if (x != x) return 1u;
  uint32_t b = float_bits(x);
  if (b == 0x80000000u) b = 0u;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__host__ __device__ __forceinline__ float order_key_value(uint32_t k) {
  return bits_float(k >= 0x80000000u ? (k & 0x7fffffffu) : ~k);
}

// The exponent field used to scale masses: that of the row maximum (1 for subnormals).
__host__ __device__ __forceinline__ int mass_exponent(uint32_t max_bits) {
  const int e = static_cast<int>(max_bits >> 23);
  return e > 0 ? e : 1;
}

// The factor 2^(157 - e_max) of a row's masses, as two float powers of two (one float cannot hold
// it when the maximum is below 2^-96): v * s1 * s2 is exact for every v <= the row maximum whose
// mass is >= 1, and < 2^31.
struct MassScale {
  float s1 = 1.f, s2 = 1.f;
};

__host__ __device__ __forceinline__ float pow2f(int e) {  // 2^e for -126 <= e <= 127
  return bits_float(static_cast<uint32_t>(e + 127) << 23);
}

__host__ __device__ __forceinline__ MassScale mass_scale(int max_exponent) {
  const int e = 157 - max_exponent;  // in [-97, 156]
  MassScale s;
  s.s1 = pow2f(e < 126 ? e : 126);
  s.s2 = pow2f(e > 126 ? e - 126 : 0);
  return s;
}

// v * 2^(30 - e_max), rounded to nearest (ties to even: no bias over a long tail of small
// values), for the non-negative float v with bits `k` (v <= the row maximum): two exact
// multiplications by powers of two and one conversion, the same bits on the host and the device
// (no fused operations, no flush of subnormal inputs).
__host__ __device__ __forceinline__ uint32_t key_mass(uint32_t k, MassScale s) {
#ifdef __CUDA_ARCH__
  return __float2uint_rn(__fmul_rn(__fmul_rn(__uint_as_float(k), s.s1), s.s2));
#else
  const float a = bits_float(k) * s.s1;
  return static_cast<uint32_t>(std::nearbyint(a * s.s2));
#endif
}

// key_mass for rows whose maximum's key is 1.0 (logit rows): the scale is 2^30 and s2 = 1, so
// one multiplication gives the same bits.
__host__ __device__ __forceinline__ uint32_t key_mass_of_one(uint32_t k) {
#ifdef __CUDA_ARCH__
  return __float2uint_rn(__fmul_rn(__uint_as_float(k), 0x1p30f));
#else
  return static_cast<uint32_t>(std::nearbyint(bits_float(k) * 0x1p30f));
#endif
}

__host__ __device__ __forceinline__ uint32_t key_mass(uint32_t k, int max_exponent) {
  return key_mass(k, mass_scale(max_exponent));
}

// v * 2^40, rounded half up, for a probability v in [0, 1] given as float bits (speculative
// sampling, whose rows are not rescaled to their maximum).
__host__ __device__ __forceinline__ uint64_t key_mass_abs(uint32_t k) {
  const int e = static_cast<int>(k >> 23);
  uint64_t m = k & 0x7fffffu;
  if (e > 0) m |= 0x800000u;
  const int shift = (e > 0 ? e : 1) - 110;  // 2^(e - 127 - 23 + 40)
  if (shift >= 0) return m << shift;
  const int d = -shift;
  return d >= 25 ? 0u : (m + (uint64_t{1} << (d - 1))) >> d;
}

// Bits needed for the span hi - lo, less the 8 a pass resolves: the shift of this pass's digit.
__host__ __device__ __forceinline__ int radix_shift(uint32_t span) {
#ifdef __CUDA_ARCH__
  const int used = span != 0u ? 32 - __clz(span) : 0;
#else
  const int used = span != 0u ? 32 - __builtin_clz(span) : 0;
#endif
  return used > 8 ? used - 8 : 0;
}

// Bin of key k in the pass over [lo, hi] (bin 0 holds the largest keys), or kNoBin outside.
constexpr uint32_t kNoBin = 0xffffffffu;
__host__ __device__ __forceinline__ uint32_t radix_bin(uint32_t k, uint32_t lo, uint32_t hi,
                                                       int shift) {
  return k - lo <= hi - lo ? (hi - k) >> shift : kNoBin;
}

// Keys of bin `bin` in the pass over [lo, hi]: [*bin_lo, *bin_hi].
__host__ __device__ __forceinline__ void radix_bin_range(uint32_t lo, uint32_t hi, int shift,
                                                         int bin, uint32_t* bin_lo,
                                                         uint32_t* bin_hi) {
  const uint64_t width = uint64_t{1} << shift;
  const uint64_t top = hi - (static_cast<uint64_t>(bin) << shift);
  *bin_hi = static_cast<uint32_t>(top);
  *bin_lo = top - lo >= width - 1 ? static_cast<uint32_t>(top - (width - 1)) : lo;
}

// A key range being refined, with what is known above it.
struct RadixRange {
  uint32_t lo = 0, hi = 0;  // keys of the selected bin: [lo, hi]
  uint64_t count = 0;       // elements (and mass) in [lo, hi]
  uint64_t mass = 0;
  uint64_t above_count = 0;  // elements (and mass) with key > hi
  uint64_t above_mass = 0;
  uint64_t target = 0;  // what is still needed from [lo, hi] (count or mass)
};

// Level 0: 8 bins per octave below the row maximum (the exponent and 3 mantissa bits of the float
// keys), the last bin open-ended. Host and device (the CPU tests replay the selection).
__host__ __device__ __forceinline__ uint32_t level0_bin(uint32_t max_key, uint32_t k) {
  const uint32_t d = (max_key >> 20) - (k >> 20);
  return d < kBins - 1 ? d : kBins - 1;
}

__host__ __device__ __forceinline__ RadixRange level0_range(uint32_t max_key, int bin) {
  const int top = static_cast<int>(max_key >> 20) - bin;
  RadixRange r;
  r.hi = (static_cast<uint32_t>(top) << 20) | 0xfffffu;
  r.lo = bin < kBins - 1 ? static_cast<uint32_t>(top) << 20 : 0u;
  return r;
}

}  // namespace flashserve::sampling
