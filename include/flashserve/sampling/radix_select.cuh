// Exact threshold selection over a row split across a thread-block cluster, without sorting:
// most-significant-digit radix select on the 32-bit keys.
//
// A pass builds, in every CTA, a 256-bin histogram (element counts and, when asked, masses) of
// the keys that fall in the current key range, then sums the CTAs' histograms through distributed
// shared memory. Bin 0 holds the largest keys. The first bin whose running total (from the top)
// reaches the target contains the threshold; the next pass refines that bin's key range, until
// the range is one key or the bin holds a single element. Counts select the k-th largest key
// (top-k); masses select the smallest set of largest keys whose mass reaches a target (top-p).
// The kept set is always {key >= threshold}: ties at the threshold are all kept.
//
// Histograms are integer (u32 counts, u64 masses), so every CTA derives the same threshold and the
// result does not depend on the order of the atomics: same input, same threshold, every run. A
// CTA's u64 masses are kept as two u32 words: Hopper has no native 64-bit shared-memory add (it
// compiles to a compare-and-swap loop, ATOMS.CAST.SPIN.64, which contended bins serialize), so
// each element adds its u32 mass to the low word and carries into the high word when that wraps.
// Two histogram buffers alternate between passes, so one cluster barrier per pass suffices: after
// pass i's barrier no CTA still reads pass i - 1's buffer, which is then cleared for pass i + 1.
#pragma once

#include "flashserve/sampling/cluster_ops.cuh"
#include "flashserve/sampling/key_math.h"
#include "flashserve/sampling/row_keys.cuh"

namespace flashserve::sampling {

struct Crossing {
  int bin;
  uint64_t before_count;  // elements in bins above `bin`
  uint64_t before_mass;
};

struct SelectShared {
  uint32_t count[2][kBins];
  uint32_t mass_lo[2][kBins];  // a CTA's masses: hi * 2^32 + lo
  uint32_t mass_hi[2][kBins];
  uint32_t total_count[kBins];  // the last pass, summed over the cluster
  unsigned long long total_mass[kBins];
  Crossing crossing;
};

struct SelectResult {
  uint32_t threshold;  // kept: key >= threshold
  uint64_t count_ge;   // elements with key >= threshold
  uint64_t mass_ge;    // their mass (when masses were gathered)
};

__device__ __forceinline__ void clear_histograms(SelectShared& s) {
  for (int i = threadIdx.x; i < kBins; i += blockDim.x) {
    s.count[0][i] = s.count[1][i] = 0u;
    s.mass_lo[0][i] = s.mass_lo[1][i] = 0u;
    s.mass_hi[0][i] = s.mass_hi[1][i] = 0u;
    s.total_count[i] = 0u;
    s.total_mass[i] = 0ull;
  }
}

// Adds every key with bin_of(key) < kBins to this pass's histogram (masses too when with_mass),
// then sums the cluster's histograms into total_count / total_mass. All threads of every CTA of
// the cluster must call it.
template <class Load, class BinOf, class MassOf>
__device__ void histogram_pass(SelectShared& s, int& pass, const ChunkLayout& L, const Load& load,
                               const BinOf& bin_of, bool with_mass, const MassOf& mass_of) {
  cg::cluster_group cluster = cg::this_cluster();
  const int buf = pass & 1;
  uint32_t* count = s.count[buf];
  uint32_t* mass_lo = s.mass_lo[buf];
  uint32_t* mass_hi = s.mass_hi[buf];
  for_each_group(L, load, [&](int, const uint32_t(&k)[4], bool active) {
    if (!active) return;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint32_t b = bin_of(k[j]);
      if (b < kBins) {
        atomicAdd(&count[b], 1u);
        if (with_mass) {
          const uint32_t m = static_cast<uint32_t>(mass_of(k[j]));
          const uint32_t old = atomicAdd(&mass_lo[b], m);
          if (old > 0xffffffffu - m) atomicAdd(&mass_hi[b], 1u);  // the low word wrapped
        }
      }
    }
  });
  cluster.sync();
  for (int i = threadIdx.x; i < kBins; i += blockDim.x) {
    s.count[buf ^ 1][i] = 0u;
    s.mass_lo[buf ^ 1][i] = 0u;
    s.mass_hi[buf ^ 1][i] = 0u;
  }
  const unsigned n = cluster.num_blocks();
  for (int i = threadIdx.x; i < 2 * kBins; i += blockDim.x) {
    const int bin = i & (kBins - 1);
    if (i < kBins) {
      uint32_t t = 0;
#pragma unroll 4
      for (unsigned r = 0; r < n; ++r)
        t += *cluster.map_shared_rank(&count[bin], r);
      s.total_count[bin] = t;
    } else if (with_mass) {
      unsigned long long t = 0;
#pragma unroll 4
      for (unsigned r = 0; r < n; ++r) {
        t += (static_cast<unsigned long long>(*cluster.map_shared_rank(&mass_hi[bin], r)) << 32) |
             *cluster.map_shared_rank(&mass_lo[bin], r);
      }
      s.total_mass[bin] = t;
    }
  }
  __syncthreads();
  ++pass;
}

// The first bin (from bin 0, the largest keys) at which the running total of counts (or masses)
// reaches `target` (>= 1), with the totals of the bins before it. Warp 0 computes it; every thread
// gets it. If the histogram holds less than `target` (never, for valid targets), bin 255.
__device__ __forceinline__ Crossing find_crossing(SelectShared& s, const uint32_t* count,
                                                  const unsigned long long* mass, bool by_mass,
                                                  uint64_t target) {
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    uint64_t w[8], sum = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      w[j] = by_mass ? mass[8 * lane + j] : count[8 * lane + j];
      sum += w[j];
    }
    const uint64_t incl = warp_inclusive_scan(sum), excl = incl - sum;
    const unsigned here = __ballot_sync(0xffffffffu, excl < target && target <= incl);
    const int owner = here != 0u ? __ffs(here) - 1 : 31;
    int bin = kBins - 1;
    if (lane == owner) {
      uint64_t cum = excl;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        if (cum + w[j] >= target) {
          bin = 8 * lane + j;
          break;
        }
        cum += w[j];
      }
    }
    bin = __shfl_sync(0xffffffffu, bin, owner);
    uint64_t bc = 0, bm = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      if (8 * lane + j < bin) {
        bc += count[8 * lane + j];
        bm += mass[8 * lane + j];
      }
    }
    bc = warp_reduce(bc, SumOp());
    bm = warp_reduce(bm, SumOp());
    if (lane == 0) s.crossing = Crossing{bin, bc, bm};
  }
  __syncthreads();
  const Crossing c = s.crossing;
  __syncthreads();  // the next call may overwrite s.crossing
  return c;
}

// Moves into the crossing bin: its keys, counts and the totals above it.
__device__ __forceinline__ void descend(RadixRange& r, const Crossing& c, bool by_mass,
                                        uint64_t bin_count, uint64_t bin_mass) {
  r.above_count += c.before_count;
  r.above_mass += c.before_mass;
  r.target -= by_mass ? c.before_mass : c.before_count;
  r.count = bin_count;
  r.mass = bin_mass;
}

// Refines `r` (whose bin already crossed the target) pass by pass until one key or one element
// remains. Every CTA of the cluster gets the same result.
template <class Load, class MassOf>
__device__ SelectResult radix_refine(SelectShared& s, int& pass, const ChunkLayout& L,
                                     const Load& load, const MassOf& mass_of, bool by_mass,
                                     bool with_mass, RadixRange r) {
  while (r.count > 1 && r.lo < r.hi) {
    const uint32_t lo = r.lo, hi = r.hi;
    const int shift = radix_shift(hi - lo);  // at most 256 bins of 2^shift keys cover [lo, hi]
    histogram_pass(
        s, pass, L, load, [=](uint32_t k) { return radix_bin(k, lo, hi, shift); }, with_mass,
        mass_of);
    const Crossing c = find_crossing(s, s.total_count, s.total_mass, by_mass, r.target);
    descend(r, c, by_mass, s.total_count[c.bin], s.total_mass[c.bin]);
    radix_bin_range(lo, hi, shift, c.bin, &r.lo, &r.hi);
  }
  return SelectResult{r.lo, r.above_count + r.count, r.above_mass + r.mass};
}

}  // namespace flashserve::sampling
