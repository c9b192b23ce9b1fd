// Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC'11):
// a counter-based generator. Output = a keyed bijection of a 128-bit counter, so any draw is a
// pure function of (seed, counter): no state to carry between calls or to save in a CUDA graph.
//
// How the sampling kernels address it: key = the 64-bit seed, counter = (offset low, offset high,
// row, draw index). A call with a given seed and offset is therefore deterministic, rows are
// independent streams, and bumping the offset by one between calls gives fresh numbers for every
// row. Host and device: the CPU tests check it against the published known-answer vectors.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace flashserve::sampling {

struct PhiloxBlock {
  uint32_t v[4];
};

__host__ __device__ __forceinline__ void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi,
                                                        uint32_t& lo) {
#ifdef __CUDA_ARCH__
  hi = __umulhi(a, b);
  lo = a * b;
#else
  const uint64_t product = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(product >> 32);
  lo = static_cast<uint32_t>(product);
#endif
}

constexpr uint32_t kPhiloxWeyl0 = 0x9E3779B9u, kPhiloxWeyl1 = 0xBB67AE85u;

// One round under the round's key.
__host__ __device__ __forceinline__ void philox_round(PhiloxBlock& ctr, uint32_t key0,
                                                      uint32_t key1) {
  uint32_t hi0, lo0, hi1, lo1;
  philox_mulhilo(0xD2511F53u, ctr.v[0], hi0, lo0);
  philox_mulhilo(0xCD9E8D57u, ctr.v[2], hi1, lo1);
  ctr = PhiloxBlock{{hi1 ^ ctr.v[1] ^ key0, lo1, hi0 ^ ctr.v[3] ^ key1, lo0}};
}

// Ten rounds; the key is bumped by the Weyl constants before every round but the first.
__host__ __device__ __forceinline__ PhiloxBlock philox4x32_10(PhiloxBlock ctr, uint32_t key0,
                                                              uint32_t key1) {
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    philox_round(ctr, key0, key1);
    key0 += kPhiloxWeyl0;
    key1 += kPhiloxWeyl1;
  }
  return ctr;
}

// The counter of draw `index` of `row`: (offset low, offset high, row, index).
__host__ __device__ __forceinline__ PhiloxBlock philox_counter(uint64_t offset, uint32_t row,
                                                               uint32_t index) {
  return PhiloxBlock{
      {static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32), row, index}};
}

// The block of random bits for draw `index` of `row`.
__host__ __device__ __forceinline__ PhiloxBlock philox_draw(uint64_t seed, uint64_t offset,
                                                            uint32_t row, uint32_t index) {
  return philox4x32_10(philox_counter(offset, row, index), static_cast<uint32_t>(seed),
                       static_cast<uint32_t>(seed >> 32));
}

// 64 uniform bits (the first two words of the block).
__host__ __device__ __forceinline__ uint64_t philox_u64(uint64_t seed, uint64_t offset,
                                                        uint32_t row, uint32_t index) {
  const PhiloxBlock b = philox_draw(seed, offset, row, index);
  return (static_cast<uint64_t>(b.v[1]) << 32) | b.v[0];
}

// Uniform in [0, 1) with 24 random bits: every value is exact in float, and 1 is never returned.
__host__ __device__ __forceinline__ float uniform_from_bits(uint32_t bits) {
  return static_cast<float>(bits >> 8) * 0x1p-24f;
}

// floor(u * total / 2^64): a uniform integer in [0, total) for a 64-bit uniform u (bias below
// total / 2^64, i.e. below 2^-6 of one unit for the totals the kernels use, which stay < 2^58).
__host__ __device__ __forceinline__ uint64_t scale_uniform(uint64_t u, uint64_t total) {
#ifdef __CUDA_ARCH__
  return __umul64hi(u, total);
#else
  return static_cast<uint64_t>((static_cast<unsigned __int128>(u) * total) >> 64);
#endif
}

}  // namespace flashserve::sampling
