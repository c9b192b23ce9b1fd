// One draw from a row split across a cluster, proportional to integer weights, by inverse CDF:
// target = floor(u * total / 2^64) for a 64-bit uniform u, and the drawn element is the first (in
// the fixed visiting order of row_keys.cuh) whose running weight exceeds the target. Integer
// weights make the running sums exact: the probability of element i is exactly w_i / total, every
// CTA agrees on the total, exactly one thread in the cluster finds the element, and elements of
// weight 0 are never drawn. No sort and no per-element random numbers: one Philox draw per row.
#pragma once

#include "flashserve/sampling/cluster_ops.cuh"
#include "flashserve/sampling/philox.cuh"
#include "flashserve/sampling/row_keys.cuh"

namespace flashserve::sampling {

struct InverseCdfShared {
  uint64_t scan[33];
  uint64_t prefix[2];
};

// A CTA's share of an inverse-CDF draw: each thread's weight over its groups (in the visiting
// order of row_keys.cuh) and the weight of the threads before it.
struct BlockWeights {
  uint64_t mine = 0, before_me = 0, cta_total = 0;
};

template <class Load, class Weight>
__device__ BlockWeights block_weights(const ChunkLayout& L, const Load& load, const Weight& weight,
                                      uint64_t* scan) {
  BlockWeights b;
  for_each_group(L, load, [&](int, const uint32_t(&k)[4], bool active) {
    if (!active) return;
#pragma unroll
    for (int j = 0; j < 4; ++j)
      b.mine += weight(k[j]);
  });
  b.before_me = block_exclusive_scan(b.mine, scan, b.cta_total);
  return b;
}

// The owner's walk: the one thread whose groups hold position `local` of the CTA's running weight
// (0 <= local < cta_total) walks them again and calls emit(row index) for the element there.
template <class Load, class Weight, class Emit>
__device__ void block_walk(const ChunkLayout& L, const Load& load, const Weight& weight,
                           const BlockWeights& b, uint64_t local, const Emit& emit) {
  if (local < b.before_me || local - b.before_me >= b.mine) return;
  uint64_t run = b.before_me;
  bool found = false;
  for_each_group(L, load, [&](int first, const uint32_t(&k)[4], bool active) {
    if (!active || found) return;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint64_t w = weight(k[j]);
      if (!found && local < run + w) {
        found = true;
        emit(L.begin + first + j);
      }
      run += w;
    }
  });
}

// Returns the cluster's total weight (every thread). When it is > 0, calls emit(row_index) on the
// one thread that owns the drawn element. `slot`: a __shared__ value used by no other exchange.
template <class Load, class Weight, class Emit>
__device__ uint64_t cluster_inverse_cdf(const ChunkLayout& L, const Load& load,
                                        const Weight& weight, uint64_t u, InverseCdfShared& s,
                                        uint64_t* slot, const Emit& emit) {
  const BlockWeights b = block_weights(L, load, weight, s.scan);
  const ClusterPrefix cta = cluster_exclusive_scan(b.cta_total, slot, s.prefix);
  if (cta.total == 0) return 0;
  const uint64_t target = scale_uniform(u, cta.total);
  if (target < cta.before || target - cta.before >= b.cta_total) return cta.total;
  block_walk(L, load, weight, b, target - cta.before, emit);
  return cta.total;
}

}  // namespace flashserve::sampling
