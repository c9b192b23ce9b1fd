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
  alignas(16) uint32_t count[2][kBins];    // 16-byte aligned: merged with 16-byte remote loads
  alignas(16) uint32_t mass_lo[2][kBins];  // a CTA's masses: hi * 2^32 + lo
  alignas(16) uint32_t mass_hi[2][kBins];
  alignas(16) uint32_t total_count[kBins];  // the last pass, summed over the cluster
  unsigned long long total_mass[kBins];
  Crossing crossing;
  unsigned long long scan_count[16], scan_mass[16];  // find_crossing's per-warp totals
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

// This CTA's own histogram of a pass, kept when the pass's buffers are reused (level 0).
struct OwnHistogram {
  uint32_t* count = nullptr;
  unsigned long long* mass = nullptr;
};

// Adds every key with bin_of(key) < kBins to this pass's histogram (masses too when with_mass),
// then sums the cluster's histograms into total_count / total_mass (and copies this CTA's own into
// `own` when set). All threads of every CTA of the cluster must call it.
template <class Load, class BinOf, class MassOf>
__device__ void histogram_pass(SelectShared& s, int& pass, const ChunkLayout& L, const Load& load,
                               const BinOf& bin_of, bool with_mass, const MassOf& mass_of,
                               OwnHistogram own = {}) {
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
  // The merge: thread t < 64 sums the counts of bins 4t..4t+3 over the cluster, thread 64 + t
  // their masses, with 16-byte remote loads issued in batches (a remote load takes a round trip
  // through the cluster: one per batch, not one per rank).
  const unsigned n = cluster.num_blocks();
  const int t = threadIdx.x;
  if (t < kBins / 4) {
    uint4 acc = make_uint4(0u, 0u, 0u, 0u);
    for (unsigned r0 = 0; r0 < n; r0 += 8) {
      uint4 v[8];  // every load of the batch is issued before the first add
#pragma unroll
      for (unsigned j = 0; j < 8; ++j) {
        const unsigned r = r0 + j < n ? r0 + j : r0;
        v[j] = *reinterpret_cast<const uint4*>(cluster.map_shared_rank(&count[4 * t], r));
      }
#pragma unroll
      for (unsigned j = 0; j < 8; ++j) {
        if (r0 + j < n) {
          acc.x += v[j].x;
          acc.y += v[j].y;
          acc.z += v[j].z;
          acc.w += v[j].w;
        }
      }
    }
    *reinterpret_cast<uint4*>(&s.total_count[4 * t]) = acc;
    if (own.count != nullptr) {
      *reinterpret_cast<uint4*>(&own.count[4 * t]) = *reinterpret_cast<const uint4*>(&count[4 * t]);
    }
  } else if (with_mass && t < kBins / 2) {
    const int q = 4 * (t - kBins / 4);
    unsigned long long acc[4] = {0ull, 0ull, 0ull, 0ull};
    for (unsigned r0 = 0; r0 < n; r0 += 4) {
      uint4 lo[4], hi[4];
#pragma unroll
      for (unsigned j = 0; j < 4; ++j) {
        const unsigned r = r0 + j < n ? r0 + j : r0;
        lo[j] = *reinterpret_cast<const uint4*>(cluster.map_shared_rank(&mass_lo[q], r));
        hi[j] = *reinterpret_cast<const uint4*>(cluster.map_shared_rank(&mass_hi[q], r));
      }
#pragma unroll
      for (unsigned j = 0; j < 4; ++j) {
        if (r0 + j < n) {
          acc[0] += (static_cast<unsigned long long>(hi[j].x) << 32) | lo[j].x;
          acc[1] += (static_cast<unsigned long long>(hi[j].y) << 32) | lo[j].y;
          acc[2] += (static_cast<unsigned long long>(hi[j].z) << 32) | lo[j].z;
          acc[3] += (static_cast<unsigned long long>(hi[j].w) << 32) | lo[j].w;
        }
      }
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      s.total_mass[q + j] = acc[j];
      if (own.mass != nullptr) {
        own.mass[q + j] = (static_cast<unsigned long long>(mass_hi[q + j]) << 32) | mass_lo[q + j];
      }
    }
  }
  __syncthreads();
  ++pass;
}

// The first bin (from bin 0, the largest keys) at which the running total of counts (or masses)
// reaches `target` (>= 1), with the totals of the bins before it; every thread gets it. If the
// histogram holds less than `target` (never, for valid targets), bin 255. One block-wide scan:
// each thread takes kBins / blockDim.x consecutive bins (at least one), warps scan in parallel.
__device__ __forceinline__ Crossing find_crossing(SelectShared& s, const uint32_t* count,
                                                  const unsigned long long* mass, bool by_mass,
                                                  uint64_t target) {
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const int per = static_cast<int>(blockDim.x) >= kBins ? 1 : kBins / static_cast<int>(blockDim.x);
  const int first = t * per;
  uint64_t c = 0, m = 0;
  if (first < kBins) {
    for (int j = 0; j < per; ++j) {
      c += count[first + j];
      m += mass[first + j];
    }
  }
  const uint64_t ic = warp_inclusive_scan(c), im = warp_inclusive_scan(m);
  if (lane == 31 && warp < 16) {
    s.scan_count[warp] = ic;
    s.scan_mass[warp] = im;
  }
  __syncthreads();
  if (first < kBins) {
    uint64_t bc = ic - c, bm = im - m;  // bins before this thread's
    for (int w = 0; w < warp; ++w) {
      bc += s.scan_count[w];
      bm += s.scan_mass[w];
    }
    for (int j = 0; j < per; ++j) {
      const uint64_t wc = count[first + j], wm = mass[first + j];
      const uint64_t before = by_mass ? bm : bc, w = by_mass ? wm : wc;
      if ((before < target && target <= before + w) ||
          (first + j == kBins - 1 && before + w < target)) {
        s.crossing = Crossing{first + j, bc, bm};
      }
      bc += wc;
      bm += wm;
    }
  }
  __syncthreads();
  const Crossing cr = s.crossing;
  __syncthreads();  // the next call may overwrite s.crossing
  return cr;
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

// Pads a key list to whole 4-key groups: above every level-0 range (whose keys are at most those of
// the largest finite float), so no pass over a bin's keys counts it.
constexpr uint32_t kListPad = 0xffffffffu;

// Gathers this CTA's keys in [lo, hi] into `list` (any order: the passes over it only build
// histograms), padded with kListPad to a whole 4-key group; returns their number. The caller knows
// beforehand that they fit (`capacity`, a multiple of 4, from its own histogram). One ballot and,
// per warp, one shared atomic per 32 keys tested.
template <class Load>
__device__ int gather_keys(const ChunkLayout& L, const Load& load, uint32_t lo, uint32_t hi,
                           uint32_t* list, int* len_slot) {
  const int lane = threadIdx.x & 31;
  if (threadIdx.x == 0) *len_slot = 0;
  __syncthreads();
  const unsigned lower = (1u << lane) - 1u;
  for_each_group(L, load, [&](int, const uint32_t(&k)[4], bool active) {
    bool in[4];
    unsigned m[4];
    int total = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      in[j] = active && k[j] - lo <= hi - lo;
      m[j] = __ballot_sync(0xffffffffu, in[j]);
      total += __popc(m[j]);
    }
    if (total == 0) return;  // the whole warp
    int base = 0;
    if (lane == 0) base = atomicAdd(len_slot, total);
    base = __shfl_sync(0xffffffffu, base, 0);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (in[j]) list[base + __popc(m[j] & lower)] = k[j];
      base += __popc(m[j]);
    }
  });
  __syncthreads();
  const int len = *len_slot;
  if (threadIdx.x < ((4 - (len & 3)) & 3)) list[len + threadIdx.x] = kListPad;
  __syncthreads();
  return len;
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
