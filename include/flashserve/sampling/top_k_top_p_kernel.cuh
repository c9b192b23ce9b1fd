// Sampling and renormalization with top-k / top-p / min-p, from logits or probabilities: one
// cluster per row, one read of the row, every filter an exact threshold found on chip.
//
//   1. load: the CTA's slice into shared memory (raw logits, or probability keys); the row maximum
//      (cluster reduction).
//   2. level 0: a histogram of log2(v / v_max) in steps of 1/8 (bin = (max_bits >> 20) -
//      (bits >> 20), the exponent and 3 mantissa bits of the float): logits are turned into
//      probability keys v = exp2((x - max) * log2(e) / T) in the same sweep. Bins of equal width in
//      log-probability spread a row over ~100 bins, so few atomics collide (the raw top byte of
//      the keys would put nearly all of a row into 2-4 bins).
//   3. top-k: radix refinement (radix_select.cuh) of the bin where the counts cross k, down to
//      the k-th largest key. Each CTA first gathers its keys of that bin into a short list (one
//      pass over its slice), and the refinement passes visit only the list.
//   4. top-p: the same over masses, from the level-0 histogram restricted to keys >= the top-k
//      threshold (top-k first) or over the whole row (joint), to the smallest set of largest keys
//      holding top_p of the mass.
//   5. min-p: keys >= min_p * v_max. The kept set is {key >= max of the three thresholds}.
//   6. sampling after a top-k / top-p selection: each CTA's kept mass comes from its own level-0
//      histogram and list, without a pass; one cluster scan picks the CTA, its histogram the bin,
//      and only that CTA walks its slice for the element. Without a selection: inverse CDF over
//      the whole row (inverse_cdf.cuh). Renormalization: kept values times 1 / their sum.
// A row whose values are all zero, negative, NaN or -inf (logits) has nothing to sample: its token
// is 0 and its renormalized row is all zero.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "flashserve/sampling/cluster_ops.cuh"
#include "flashserve/sampling/inverse_cdf.cuh"
#include "flashserve/sampling/launch.cuh"
#include "flashserve/sampling/load_slice.cuh"
#include "flashserve/sampling/params.h"
#include "flashserve/sampling/radix_select.cuh"
#include "flashserve/sampling/rejection_draw.cuh"
#include "flashserve/sampling/stream_hist.cuh"
#include "flashserve/sampling/row_keys.cuh"

namespace flashserve::sampling {

// Writes row `row`'s sampled token id (int32 or int64 ids).
template <class T>
__device__ __forceinline__ void store_id(const FilterParams<T>& p, int64_t row, int64_t id) {
  if (p.ids_int64) {
    static_cast<int64_t*>(p.out_ids)[row] = id;
  } else {
    static_cast<int32_t*>(p.out_ids)[row] = static_cast<int32_t>(id);
  }
}

// A row the streaming kernel left to the resume launch (FilterParams::defer): out_ids holds
// -1 - i when round 1's candidate i is still undecided or was rejected (the resident kernel goes on
// from it), restart_id when the row is drawn again from the start (no candidate drawn: greedy,
// top-k, threshold-path rows). Every marker is negative; token ids are not.
// A marked row a resume cluster has taken (compare-and-swap): negative, so that the other
// clusters' scans still count it, and no marker (candidates are < 2^30: launch_filter defers only
// rows shorter than that). Both as the id type holds them (int32: INT32_MIN, INT32_MIN + 1).
template <class T>
__device__ __forceinline__ int64_t restart_id(const FilterParams<T>& p) {
  return p.ids_int64 ? INT64_MIN : static_cast<int64_t>(INT32_MIN);
}
template <class T>
__device__ __forceinline__ int64_t claimed_id(const FilterParams<T>& p) {
  return restart_id(p) + 1;
}

template <class T>
__device__ __forceinline__ void store_pending(const FilterParams<T>& p, int64_t row,
                                              uint32_t candidate) {
  store_id(p, row,
           candidate != kNoCandidate ? -1 - static_cast<int64_t>(candidate) : restart_id(p));
}

template <class T>
__device__ __forceinline__ int64_t load_id(const FilterParams<T>& p, int64_t r) {
  return p.ids_int64 ? static_cast<int64_t>(__ldcg(static_cast<const long long*>(p.out_ids) + r))
                     : static_cast<int64_t>(__ldcg(static_cast<const int*>(p.out_ids) + r));
}

// Rank 0's thread block: takes a marked row for cluster c. First try: the c-th marked row, taken or
// not (so that clusters starting late still pick what the others did not), none when fewer than
// c + 1 are marked (the clusters before c take them). Then, and after a lost compare-and-swap:
// the (c mod count)-th of the count rows not yet taken, until none is left.
template <class T>
__device__ bool claim_in_block(const FilterParams<T>& p, int64_t c, bool first_try, int64_t* row,
                               uint32_t* candidate) {
  __shared__ int warp_count[kSamplingThreads / 32];
  __shared__ long long pick[2];
  __shared__ int total;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = static_cast<int>(blockDim.x >> 5);
  const int64_t claimed = claimed_id(p);
  for (;;) {
    // Count the open markers, then find the k-th.
    int open = 0;
    for (int64_t r = threadIdx.x; r < p.rows; r += blockDim.x) {
      const int64_t v = load_id(p, r);
      open += v < 0 && (first_try || v != claimed);
    }
    open = warp_reduce(open, SumOp());
    if (lane == 0) warp_count[warp] = open;
    __syncthreads();
    if (threadIdx.x == 0) {
      int t = 0;
      for (int w = 0; w < nwarps; ++w)
        t += warp_count[w];
      total = t;
      pick[0] = -1;
    }
    __syncthreads();
    const int count = total;
    if (count == 0 || (first_try && c >= count)) return false;
    const int64_t k = first_try ? c : c % count;
    int64_t seen = 0;
    for (int64_t r0 = 0; r0 < p.rows; r0 += blockDim.x) {
      const int64_t r = r0 + threadIdx.x;
      const int64_t v = r < p.rows ? load_id(p, r) : 0;
      const bool is_open = v < 0 && (first_try || v != claimed);
      const unsigned ballot = __ballot_sync(0xffffffffu, is_open);
      __syncthreads();  // (warp_count's previous use)
      if (lane == 0) warp_count[warp] = __popc(ballot);
      __syncthreads();
      int64_t before = seen;
      int block = 0;
      for (int w = 0; w < nwarps; ++w) {
        if (w < warp) before += warp_count[w];
        block += warp_count[w];
      }
      before += __popc(ballot & ((1u << lane) - 1u));
      if (is_open && before == k) {
        pick[0] = r;
        pick[1] = v;
      }
      seen += block;
    }
    __syncthreads();
    if (threadIdx.x == 0 && pick[0] >= 0) {
      const int64_t r = pick[0], v = pick[1];
      bool won = false;
      if (v == claimed) {
        // another cluster's (first try only)
      } else if (p.ids_int64) {
        won = atomicCAS(static_cast<unsigned long long*>(p.out_ids) + r,
                        static_cast<unsigned long long>(v),
                        static_cast<unsigned long long>(claimed)) ==
              static_cast<unsigned long long>(v);
      } else {
        won = atomicCAS(static_cast<int*>(p.out_ids) + r, static_cast<int>(v),
                        static_cast<int>(claimed)) == static_cast<int>(v);
      }
      if (!won) pick[0] = -1;
    }
    __syncthreads();
    if (pick[0] >= 0) {
      *row = pick[0];
      *candidate = pick[1] == restart_id(p) ? kNoCandidate : static_cast<uint32_t>(-1 - pick[1]);
      return true;
    }
    first_try = false;  // lost the race (or the rows moved on): look again
  }
}

// Every CTA of resume cluster c: the row it takes next and its round-1 candidate (kNoCandidate:
// drawn from the start); false when no marked row is left for it.
template <class T>
__device__ bool claim_pending(const FilterParams<T>& p, int64_t c, bool first_try, int64_t* row,
                              uint32_t* candidate) {
  __shared__ long long claim[2];  // row (-1: none), candidate
  cg::cluster_group cluster = cg::this_cluster();
  if (cluster.block_rank() == 0) {
    int64_t r = -1;
    uint32_t cand = kNoCandidate;
    if (!claim_in_block(p, c, first_try, &r, &cand)) r = -1;
    if (threadIdx.x == 0) {
      claim[0] = r;
      claim[1] = cand;
    }
  }
  cluster.sync();
  const long long* src = cluster.map_shared_rank(claim, 0);
  const long long r = src[0], cand = src[1];
  cluster.sync();  // rank 0 may exit (or write its next claim) only after every CTA read this one
  *row = r;
  *candidate = static_cast<uint32_t>(cand);
  return r >= 0;
}

#ifdef FLASHSERVE_SAMPLING_TRACE  // phase timestamps for tuning (bench/tools/sampling_trace.cu)
__device__ unsigned long long g_sampling_trace[4096 * 16];
__device__ __forceinline__ void trace_point(int i) {
  __syncthreads();
  if (threadIdx.x == 0 && blockIdx.x < 4096) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    g_sampling_trace[blockIdx.x * 16 + i] = t;
  }
}
#define FS_TRACE(i) trace_point(i)
// A stamp by the calling warp (its lane 0), without a block barrier.
#define FS_STAMP(i)                                          \
  do {                                                       \
    if ((threadIdx.x & 31) == 0 && blockIdx.x < 4096) {      \
      unsigned long long t_;                                 \
      asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t_)); \
      g_sampling_trace[blockIdx.x * 16 + (i)] = t_;          \
    }                                                        \
  } while (0)
__device__ unsigned long long g_sampling_trace_value[4096];  // one value per CTA (e.g. a size)
#define FS_TRACE_VALUE(v) \
  if (threadIdx.x == 0 && blockIdx.x < 4096) g_sampling_trace_value[blockIdx.x] = (v)
#else
#define FS_TRACE(i)
#define FS_STAMP(i)
#define FS_TRACE_VALUE(v)
#endif

// Keys of one level-0 bin a CTA gathers so that the refinement passes of a selection visit only
// them, not its whole slice (a bin that holds more is refined over the slice).
constexpr int kListCap = 2048;

// The rejection draw (rejection_draw.cuh). Every exchange is a push: each CTA writes its 16-byte
// record into every CTA's slot r (r = its rank) by st.async, counted on the receiver's barrier (no
// cluster barrier). Exchange e (0: the load's candidates in `first`, e >= 1: round e's masses in
// `mass[e & 1]`) uses barrier e & 1 (phase (e >> 1) & 1); a rejecting round's candidates go out in
// exchange c of their own (slots and barrier c & 1 of `cand`). A CTA pushes exchange e + 2 only
// after it received every CTA's exchange e + 1, which each pushed after reading its exchange-e
// slots (and the candidates of round e), so a slot is never overwritten before it was read.
struct FastShared {
  unsigned long long bar[2];
  unsigned long long bar_cand[2];
  RoundPush first[16];
  ulonglong2 mass[2][16];               // mass above the pivot, total (when asked)
  uint4 cand[2][16];                    // x bits, row index
  float warp_w[kSamplingThreads / 32];  // exchange 0: each warp's mass and maximum
  float warp_m[kSamplingThreads / 32];
  unsigned long long warp_above[2][kSamplingThreads / 32];  // rounds: each warp's masses
  unsigned long long warp_total[2][kSamplingThreads / 32];
  unsigned long long u_local[2], u_choice[2];  // exchange e's random bits at [e & 1]
  // Streaming: each round's bounds on the mass above its candidate (stream_hist.cuh), exchange
  // b (counted apart from the others) in slots and barrier b & 1.
  unsigned long long bar_bound[2];
  uint4 bound[2][16];
  float2 warp_bound[kSamplingThreads / 32];
};

// The top-k draw by thread maxima (topk_draw): each CTA's keys above the bound, pushed into rank
// 0 (FilterShared::tk_region); rank 0's union of them lives in FilterShared::tk_union (aliasing
// the threshold path's list).
constexpr int kTkMaxK = 256;      // larger top_k take the threshold path
constexpr int kTkUnionCap = 512;  // keys in the union (at most one per thread of rank 0), split
                                  // evenly into the CTAs' regions

struct TkDrawShared {
  alignas(16) uint32_t hist[kBins];  // this CTA's thread maxima by level-0 bin
  // Pushed into every CTA (rank r's at [r]): block maxima, histograms (FilterShared::tk_union),
  // then {keys >= the bound, mass lo, hi}.
  unsigned long long bar_max, bar_hist, bar_lens;  // phase 0: every CTA's push arrived
  unsigned long long bar_entries;  // rank 0: every CTA's keys arrived (n arrivals announce bytes)
  float max_in[16];
  alignas(16) uint4 lens_in[16];
  int len;        // this CTA's keys >= the bound (may exceed its region: overflow)
  int begin[17];  // the union: CTA r's keys at [begin[r], begin[r + 1])
  unsigned long long row_mass;
  float row_max;
  uint32_t bound_bin;
};

struct TkDrawUnion {  // rank 0 only
  uint32_t key[kTkUnionCap];
  uint32_t index[kTkUnionCap];
  uint32_t mass[kTkUnionCap];
  uint32_t sorted_weight[kTkUnionCap];  // in (key descending, index ascending) order
  uint32_t sorted_index[kTkUnionCap];
};

struct FilterShared {
  FastShared fast;
  TkDrawShared tk;
  union {
    SelectShared select;
    // The top-k draw, rank 0: CTA r pushes its keys >= the bound, {key, row index, mass, 0}, into
    // [r * cap, r * cap + cap) (cap = kTkUnionCap / cluster size). The threshold path, which
    // would take over after an overflow, clears the histograms again first.
    uint4 tk_region[kTkUnionCap];
  };
  InverseCdfShared cdf;
  uint32_t l0_count[kBins];  // level-0 histogram of the cluster, kept for the second selection
  unsigned long long l0_mass[kBins];
  alignas(16)
      uint32_t own_count[kBins];  // this CTA's level-0 histogram (list sizes, the sampling step)
  unsigned long long own_mass[kBins];
  union {
    alignas(16) uint32_t list[kListCap];  // this CTA's keys of level-0 bin list_bin
    TkDrawUnion tk_union;  // the top-k draw (never alive together with a threshold-path list)
  };
  int list_len;            // -1: the bin has more than kListCap keys here
  int list_bin;            // -1: none gathered yet
  int rank_vec_begin[17];  // the cluster's lists as one sequence of 4-key groups (-1: overflow)
  uint32_t lcount[kBins];  // histograms of the passes over the cluster's lists
  uint32_t lmass_lo[kBins];
  uint32_t lmass_hi[kBins];
  float reduce[32];
  uint64_t reduce64[32];
  float max_slot, max_result;
  uint64_t sample_slot, total_slot, total_result;
};

// Shared-memory keys that still hold raw logits: the first visit converts them in place. Padding
// holds -inf, which converts to key 0.
template <class KeyOf, bool kStore = true>
struct ConvertSmemKeys {
  uint4* keys;
  KeyOf key_of;
  __device__ __forceinline__ void operator()(int v, uint32_t (&k)[4]) const {
    const uint4 raw = keys[v];
    k[0] = key_of(__uint_as_float(raw.x));
    k[1] = key_of(__uint_as_float(raw.y));
    k[2] = key_of(__uint_as_float(raw.z));
    k[3] = key_of(__uint_as_float(raw.w));
    if constexpr (kStore) keys[v] = make_uint4(k[0], k[1], k[2], k[3]);
  }
};
// The same keys without storing them back (a sweep that leaves the raw logits in place).
using SmemLogitKeys = ConvertSmemKeys<LogitKey, false>;

struct RowFilter {
  int top_k;
  float top_p;  // in [0, 1]
  float min_p;  // in [0, 1]
};

// One refinement pass over the cluster's lists, read from every CTA's shared memory (no cluster
// barrier: the lists do not change until the next gather), into this CTA's total_count /
// total_mass. Every CTA computes the same histogram.
template <class MassOf>
__device__ void union_histogram_pass(FilterShared& sh, uint32_t lo, uint32_t hi, int shift,
                                     const MassOf& mass_of) {
  cg::cluster_group cluster = cg::this_cluster();
  const unsigned n = cluster.num_blocks();
  for (int i = threadIdx.x; i < kBins; i += blockDim.x) {
    sh.lcount[i] = 0u;
    sh.lmass_lo[i] = 0u;
    sh.lmass_hi[i] = 0u;
  }
  __syncthreads();
  const int total = sh.rank_vec_begin[n];
  const auto add = [&](uint32_t k) {
    const uint32_t b = radix_bin(k, lo, hi, shift);
    if (b < kBins) {
      atomicAdd(&sh.lcount[b], 1u);
      const uint32_t m = static_cast<uint32_t>(mass_of(k));
      const uint32_t old = atomicAdd(&sh.lmass_lo[b], m);
      if (old > 0xffffffffu - m) atomicAdd(&sh.lmass_hi[b], 1u);
    }
  };
  constexpr int kInFlight = 4;
  for (int base = threadIdx.x; base < total; base += kInFlight * blockDim.x) {
    uint4 q[kInFlight];
    bool ok[kInFlight];
#pragma unroll
    for (int j = 0; j < kInFlight; ++j) {  // every load issued before the first use
      const int v0 = base + j * static_cast<int>(blockDim.x);
      ok[j] = v0 < total;
      const int v = ok[j] ? v0 : base;
      unsigned r = 0;
      while (sh.rank_vec_begin[r + 1] <= v)
        ++r;
      const uint4* src = reinterpret_cast<const uint4*>(cluster.map_shared_rank(sh.list, r));
      q[j] = src[v - sh.rank_vec_begin[r]];
    }
#pragma unroll
    for (int j = 0; j < kInFlight; ++j) {
      if (!ok[j]) q[j] = make_uint4(kListPad, kListPad, kListPad, kListPad);
    }
#pragma unroll
    for (int j = 0; j < kInFlight; ++j) {
      add(q[j].x);
      add(q[j].y);
      add(q[j].z);
      add(q[j].w);
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < kBins; i += blockDim.x) {
    sh.select.total_count[i] = sh.lcount[i];
    sh.select.total_mass[i] =
        (static_cast<unsigned long long>(sh.lmass_hi[i]) << 32) | sh.lmass_lo[i];
  }
  __syncthreads();
}

// Refines a selection inside level-0 bin `bin` (keys [r.lo, r.hi] of it). Each CTA gathers its
// keys of the bin into sh.list (one pass over its slice) and publishes it with one cluster
// barrier; the refinement passes then read the cluster's lists from every CTA's shared memory,
// so every CTA refines on its own, without further cluster barriers. If some CTA's keys of the
// bin do not fit its list, the passes are cluster passes (radix_refine) over each CTA's list or
// slice.
template <class Load, class MassOf>
__device__ SelectResult refine_in_bin(FilterShared& sh, int& pass, const ChunkLayout& L,
                                      const Load& load, uint32_t max_key, int bin,
                                      const MassOf& mass_of, bool by_mass, RadixRange r) {
  if (!(r.count > 1 && r.lo < r.hi)) {
    return SelectResult{r.lo, r.above_count + r.count, r.above_mass + r.mass};
  }
  cg::cluster_group cluster = cg::this_cluster();
  if (sh.list_bin != bin) {
    // Other CTAs may still read the list of an earlier selection; else every thread has read
    // list_bin.
    if (sh.list_bin >= 0) {
      cluster.sync();
    } else {
      __syncthreads();
    }
    if (sh.own_count[bin] <= static_cast<uint32_t>(kListCap)) {
      const RadixRange b = level0_range(max_key, bin);
      gather_keys(L, load, b.lo, b.hi, sh.list, &sh.list_len);  // ends with a barrier
    } else if (threadIdx.x == 0) {
      sh.list_len = -1;
    }
    if (threadIdx.x == 0) sh.list_bin = bin;
    cluster.sync();          // every CTA's list and its length are published
    if (threadIdx.x < 32) {  // lane r reads rank r's length (one round trip), then a warp scan
      const int lane = threadIdx.x;
      const int n = static_cast<int>(cluster.num_blocks());
      const int len = lane < n ? *cluster.map_shared_rank(&sh.list_len, lane) : 0;
      const bool bad = __any_sync(0xffffffffu, len < 0);
      const int mine = len < 0 ? 0 : (len + 3) / 4;
      int incl = mine;
#pragma unroll
      for (int d = 1; d < 32; d <<= 1) {
        const int y = __shfl_up_sync(0xffffffffu, incl, d);
        if (lane >= d) incl += y;
      }
      const int total = __shfl_sync(0xffffffffu, incl, n - 1);
      if (lane < n) sh.rank_vec_begin[lane] = incl - mine;
      if (lane == 0) sh.rank_vec_begin[n] = bad ? -1 : total;
    }
    __syncthreads();
  }
  FS_TRACE(5);
  if (sh.rank_vec_begin[cluster.num_blocks()] >= 0) {
    while (r.count > 1 && r.lo < r.hi) {
      const uint32_t lo = r.lo, hi = r.hi;
      const int shift = radix_shift(hi - lo);
      union_histogram_pass(sh, lo, hi, shift, mass_of);
      const Crossing c =
          find_crossing(sh.select, sh.select.total_count, sh.select.total_mass, by_mass, r.target);
      descend(r, c, by_mass, sh.select.total_count[c.bin], sh.select.total_mass[c.bin]);
      radix_bin_range(lo, hi, shift, c.bin, &r.lo, &r.hi);
    }
    return SelectResult{r.lo, r.above_count + r.count, r.above_mass + r.mass};
  }
  if (sh.list_len >= 0) {
    return radix_refine(sh.select, pass, make_list_layout(sh.list_len),
                        SmemKeys{reinterpret_cast<const uint4*>(sh.list)}, mass_of, by_mass, true,
                        r);
  }
  return radix_refine(sh.select, pass, L, load, mass_of, by_mass, true, r);
}

// The number of mass units top-p keeps at least: ceil(top_p * base), within [1, base].
__device__ __forceinline__ uint64_t top_p_target(float top_p, uint64_t base) {
  const double want = ceil(static_cast<double>(top_p) * static_cast<double>(base));
  uint64_t target = want >= static_cast<double>(base) ? base : static_cast<uint64_t>(want);
  return target < 1 ? 1 : target;
}

// Steps 2-5: the threshold of the kept set, {key >= threshold}. `first` is the load of the first
// sweep (it may convert the keys in place), `load` that of every later one. Level 0 always builds
// masses and keeps this CTA's own histogram in sh.own_*: the sampling step starts from it.
template <class First, class Load>
__device__ uint32_t select_threshold(FilterShared& sh, const ChunkLayout& L, int vocab,
                                     bool top_k_first, uint32_t max_key, const RowFilter& f,
                                     const First& first, const Load& load) {
  const MassScale ms = mass_scale(mass_exponent(max_key));
  const auto mass_of = [=](uint32_t k) { return key_mass(k, ms); };
  const bool need_k = filters_top_k(f.top_k, vocab);
  const bool need_p = f.top_p < 1.f;
  const bool k_floor = need_k && need_p && top_k_first;
  uint32_t threshold = 0;
  int pass = 0;
  FS_TRACE(2);
  histogram_pass(
      sh.select, pass, L, first, [=](uint32_t k) { return level0_bin(max_key, k); }, true, mass_of,
      OwnHistogram{sh.own_count, sh.own_mass});
  FS_TRACE(3);
  uint64_t total_mass = 0;
  for (int i = threadIdx.x; i < kBins; i += blockDim.x) {
    sh.l0_count[i] = sh.select.total_count[i];
    sh.l0_mass[i] = sh.select.total_mass[i];
    total_mass += sh.select.total_mass[i];
  }
  if (threadIdx.x == 0) sh.list_bin = -1;
  total_mass = block_reduce(total_mass, sh.reduce64, SumOp(), uint64_t{0});  // has a barrier
  Crossing ck{};
  SelectResult rk{0, 0, 0};
  if (need_k) {
    ck = find_crossing(sh.select, sh.l0_count, sh.l0_mass, false, f.top_k);
    RadixRange r = level0_range(max_key, ck.bin);
    r.target = f.top_k;
    descend(r, ck, false, sh.l0_count[ck.bin], sh.l0_mass[ck.bin]);
    rk = refine_in_bin(sh, pass, L, load, max_key, ck.bin, mass_of, false, r);
    threshold = rk.threshold;
  }
  if (need_p) {
    uint64_t base = total_mass;
    if (k_floor) {
      __syncthreads();  // every thread has read the level-0 bin of the top-k crossing
      // Top-p over the top-k set: level 0 without the bins below the top-k bin, whose own
      // count and mass shrink to the part at or above the top-k threshold.
      for (int i = threadIdx.x; i < kBins; i += blockDim.x) {
        if (i > ck.bin) {
          sh.l0_count[i] = 0u;
          sh.l0_mass[i] = 0ull;
        } else if (i == ck.bin) {
          sh.l0_count[i] = static_cast<uint32_t>(rk.count_ge - ck.before_count);
          sh.l0_mass[i] = rk.mass_ge - ck.before_mass;
        }
      }
      __syncthreads();
      base = rk.mass_ge;
    }
    const uint64_t target = top_p_target(f.top_p, base);
    const Crossing cp = find_crossing(sh.select, sh.l0_count, sh.l0_mass, true, target);
    FS_TRACE(4);
    RadixRange r = level0_range(max_key, cp.bin);
    r.target = target;
    descend(r, cp, true, sh.l0_count[cp.bin], sh.l0_mass[cp.bin]);
    if (k_floor && cp.bin == ck.bin && r.lo < rk.threshold) r.lo = rk.threshold;
    const SelectResult rp = refine_in_bin(sh, pass, L, load, max_key, cp.bin, mass_of, true, r);
    FS_TRACE(6);
    threshold = rp.threshold > threshold ? rp.threshold : threshold;
  }
  if (f.min_p > 0.f) {
    const uint32_t m = __float_as_uint(f.min_p * __uint_as_float(max_key));
    threshold = m > threshold ? m : threshold;
  }
  return threshold;
}

// This CTA's mass of the kept set {key >= threshold}, from its level-0 histogram: the bins above
// the threshold's bin whole, and of that bin the keys >= threshold (from the gathered list when
// it holds that bin, else one pass over the slice). Every thread gets it.
template <class Load>
__device__ uint64_t kept_mass(FilterShared& sh, const ChunkLayout& L, const Load& load,
                              uint32_t max_key, uint32_t threshold, MassScale ms, int* bin_out) {
  const int bt = static_cast<int>(level0_bin(max_key, threshold));
  const RadixRange br = level0_range(max_key, bt);
  *bin_out = bt;
  uint64_t mine = 0;
  for (int i = threadIdx.x; i < bt; i += blockDim.x)
    mine += sh.own_mass[i];
  if (threshold <= br.lo) {
    if (threadIdx.x == 0) mine += sh.own_mass[bt];
  } else if (sh.list_bin == bt && sh.list_len >= 0) {
    for (int i = threadIdx.x; i < sh.list_len; i += blockDim.x) {
      const uint32_t k = sh.list[i];
      if (k >= threshold) mine += key_mass(k, ms);  // the list holds only keys <= br.hi
    }
  } else {
    for_each_group(L, load, [&](int, const uint32_t(&k)[4], bool active) {
      if (!active) return;
#pragma unroll
      for (int j = 0; j < 4; ++j)
        mine += k[j] - threshold <= br.hi - threshold ? key_mass(k[j], ms) : 0u;
    });
  }
  return block_reduce(mine, sh.reduce64, SumOp(), uint64_t{0});
}

__device__ __forceinline__ void cluster_arrive() {
  asm volatile("barrier.cluster.arrive.release;" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() {
  asm volatile("barrier.cluster.wait.acquire;" ::: "memory");
}

// Step 6 after a top-k / top-p selection: one draw from the kept set. The CTAs' kept masses are
// scanned in rank order and the draw's target falls in one CTA; that CTA finds the level-0 bin
// from its own histogram and walks only that bin's keys (>= threshold) in its fixed visiting order.
// The probability of an element is exactly its mass over the total, and the result does not
// depend on timing. Returns after this CTA's last read of another CTA's shared memory has been
// followed by its arrival on the cluster barrier (the kernel's last wait completes it).
template <class T, class Load>
__device__ void sample_kept(const FilterParams<T>& p, FilterShared& sh, const ChunkLayout& L,
                            int64_t row, uint32_t max_key, uint32_t threshold, const Load& load) {
  const MassScale ms = mass_scale(mass_exponent(max_key));
  int bt = 0;
  const uint64_t kept = kept_mass(sh, L, load, max_key, threshold, ms, &bt);
  FS_TRACE(7);
  const ClusterPrefix cta = cluster_exclusive_scan(kept, &sh.sample_slot, sh.cdf.prefix);
  FS_TRACE(8);
  cluster_arrive();
  const auto write_id = [&](int64_t id) { store_id(p, row, id); };
  if (cta.total == 0) {
    if (cg::this_cluster().block_rank() == 0 && threadIdx.x == 0) write_id(0);
    return;
  }
  const uint64_t u =
      philox_u64(seed_value(p.seed), offset_value(p.seed), static_cast<uint32_t>(row), 0u);
  const uint64_t target = scale_uniform(u, cta.total);
  if (target < cta.before || target - cta.before >= kept) return;  // uniform over the CTA
  uint64_t local = target - cta.before;
  // The bin: warp 0 scans bins 0..bt (bin bt counts only its kept part, the rest of `kept`).
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    const auto w = [&](int b) -> uint64_t { return b < bt ? sh.own_mass[b] : 0; };
    uint64_t sum = 0;
    for (int j = 0; j < 8; ++j)
      sum += w(8 * lane + j);
    const uint64_t above = warp_reduce(sum, SumOp());  // bins above bt
    const uint64_t incl = warp_inclusive_scan(sum), excl = incl - sum;
    const unsigned here = __ballot_sync(0xffffffffu, excl <= local && local < incl);
    int bin = bt;
    uint64_t before = above;
    if (here != 0u) {
      const int owner = __ffs(here) - 1;
      if (lane == owner) {
        uint64_t cum = excl;
        for (int j = 0; j < 8; ++j) {
          const uint64_t x = w(8 * lane + j);
          if (local < cum + x) {
            bin = 8 * lane + j;
            before = cum;
            break;
          }
          cum += x;
        }
      }
      bin = __shfl_sync(0xffffffffu, bin, owner);
      before = __shfl_sync(0xffffffffu, before, owner);
    }
    if (lane == 0) sh.select.crossing = Crossing{bin, 0, before};
  }
  __syncthreads();
  const int bin = sh.select.crossing.bin;
  local -= sh.select.crossing.before_mass;
  const RadixRange br = level0_range(max_key, bin);
  const uint32_t lo = threshold > br.lo ? threshold : br.lo, hi = br.hi;
  const auto weight = [=](uint32_t k) -> uint64_t {
    return k - lo <= hi - lo ? key_mass(k, ms) : 0u;
  };
  const BlockWeights b = block_weights(L, load, weight, sh.cdf.scan);
  block_walk(L, load, weight, b, local, write_id);
}

// Step 6 without a top-k / top-p selection (min-p or no filter): an inverse-CDF draw over the
// whole row, or, for either, the renormalized row. Ends with this CTA's arrival on the cluster
// barrier, after its last read of another CTA's shared memory.
template <class T, class Load>
__device__ void emit_row(const FilterParams<T>& p, FilterShared& sh, const ChunkLayout& L,
                         int64_t row, uint32_t max_key, uint32_t threshold, bool selected,
                         const Load& load) {
  const MassScale ms = mass_scale(mass_exponent(max_key));
  const auto weight = [=](uint32_t k) -> uint64_t {
    return k >= threshold ? key_mass(k, ms) : uint64_t{0};
  };
  if (p.out_ids != nullptr) {
    if (selected) {
      sample_kept(p, sh, L, row, max_key, threshold, load);
      return;
    }
    const auto write_id = [&](int64_t id) { store_id(p, row, id); };
    const uint64_t u =
        philox_u64(seed_value(p.seed), offset_value(p.seed), static_cast<uint32_t>(row), 0u);
    const uint64_t total =
        cluster_inverse_cdf(L, load, weight, u, sh.cdf, &sh.sample_slot, write_id);
    cluster_arrive();  // the draw's walk reads only this CTA's shared memory
    if (total == 0 && cg::this_cluster().block_rank() == 0 && threadIdx.x == 0) write_id(0);
    return;
  }
  uint64_t mine = 0;
  if (selected) {
    int bt = 0;
    mine = kept_mass(sh, L, load, max_key, threshold, ms, &bt);
  } else {
    for_each_group(L, load, [&](int, const uint32_t(&k)[4], bool active) {
      if (!active) return;
#pragma unroll
      for (int j = 0; j < 4; ++j)
        mine += weight(k[j]);
    });
    mine = block_reduce(mine, sh.reduce64, SumOp(), uint64_t{0});
  }
  const uint64_t total =
      cluster_reduce(mine, &sh.total_slot, &sh.total_result, SumOp(), uint64_t{0});
  cluster_arrive();
  // v / sum(v) = v * 2^(157 - mexp) / total (masses are v * 2^(30 - (mexp - 127))); in double,
  // which neither overflows nor underflows for any float maximum.
  const int mexp = mass_exponent(max_key);
  const double inv = total > 0 ? ldexp(1.0, 157 - mexp) / static_cast<double>(total) : 0.0;
  float* out = p.renorm_out + row * p.renorm_stride + L.begin;
  for_each_group(L, load, [&](int first, const uint32_t(&k)[4], bool active) {
    if (!active) return;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int e = first + j;
      if (e < L.len) {
        out[e] = k[j] >= threshold && total > 0
                     ? static_cast<float>(static_cast<double>(__uint_as_float(k[j])) * inv)
                     : 0.f;
      }
    }
  });
}

// Called by thread 0 at the start of the rejection draw, before the CTA's first cluster barrier
// arrival (which the other CTAs wait for before their first push): both barriers, each expecting
// one push from every CTA of the cluster in its first phase.
__device__ __forceinline__ void init_round_barriers(FastShared& sh, unsigned n) {
  for (int i = 0; i < 2; ++i) {
    mbar_init_bytes(&sh.bar[i], n * 16u);
    mbar_init_bytes(&sh.bar_cand[i], n * 16u);
    mbar_init_bytes(&sh.bar_bound[i], n * 16u);
  }
  fence_mbarrier_init();
}

// Exchange 0 of the rejection draw. One warp of each CTA pushes its RoundPush into every CTA's
// slot (lanes r < n); every warp of every CTA then waits for the n pushes into its CTA
// (receive_pushes) and lane r < n reads CTA r's (the other lanes get zeros).
__device__ __forceinline__ void push_first(FastShared& sh, const RoundPush& v) {
  cg::cluster_group cluster = cg::this_cluster();
  const int lane = threadIdx.x & 31;
  const unsigned n = cluster.num_blocks(), self = cluster.block_rank();
  if (lane < static_cast<int>(n)) {
    push_v4(&sh.first[self], *reinterpret_cast<const uint4*>(&v), &sh.bar[0], lane, n);
  }
}

// Waits for the n 16-byte pushes that complete phase `phase` of `bar` (a cluster of one CTA: a
// block barrier). Thread 0 then re-arms it for its next phase: a warp still waiting for this one
// cannot miss it, since the next phase's pushes need a push of this CTA made after a block barrier
// that every warp passes only after its wait.
__device__ __forceinline__ void receive_pushes(unsigned long long* bar, int phase) {
  const unsigned n = cg::this_cluster().num_blocks();
  if (n > 1) {
    mbar_wait(bar, static_cast<uint32_t>(phase) & 1u);
    __syncwarp();
    if (threadIdx.x == 0) mbar_rearm_bytes(bar, n * 16u);
  } else {
    __syncthreads();
  }
}

// A round's masses (exchange e >= 1): the CTA's mass above the pivot and, when the round needs
// it, its total, into every CTA's slot (lanes r < n of one warp).
__device__ __forceinline__ void push_mass(FastShared& sh, int e, uint64_t above, uint64_t total) {
  cg::cluster_group cluster = cg::this_cluster();
  const int lane = threadIdx.x & 31;
  const unsigned n = cluster.num_blocks(), self = cluster.block_rank();
  if (lane < static_cast<int>(n)) {
    const uint4 v = make_uint4(static_cast<uint32_t>(above), static_cast<uint32_t>(above >> 32),
                               static_cast<uint32_t>(total), static_cast<uint32_t>(total >> 32));
    push_v4(&sh.mass[e & 1][self], v, &sh.bar[e & 1], lane, n);
  }
}

// A rejecting round's candidates (candidate exchange c): this CTA's (x, index) into every CTA.
__device__ __forceinline__ void push_cand(FastShared& sh, int c, float x, uint32_t index) {
  cg::cluster_group cluster = cg::this_cluster();
  const int lane = threadIdx.x & 31;
  const unsigned n = cluster.num_blocks(), self = cluster.block_rank();
  if (lane < static_cast<int>(n)) {
    push_v4(&sh.cand[c & 1][self], make_uint4(__float_as_uint(x), index, 0u, 0u),
            &sh.bar_cand[c & 1], lane, n);
  }
}

__device__ __forceinline__ RoundPush receive_first(FastShared& sh) {
  const int lane = threadIdx.x & 31;
  const unsigned n = cg::this_cluster().num_blocks();
  receive_pushes(&sh.bar[0], 0);
  RoundPush r{};
  if (lane < static_cast<int>(n)) r = sh.first[lane];
  return r;
}

// Lanes 0 and 1 of the calling warp: exchange e's random bits, the CTA's own (u_local) and the
// cluster's (u_choice), double-buffered by e & 1. Round e's are made during exchange e - 1 (after
// round e - 1's block barrier, which every warp passes after its last read of exchange e - 2's).
__device__ __forceinline__ void round_bits(FastShared& sh, uint64_t seed, uint64_t offset,
                                           int64_t row, int e) {
  if ((threadIdx.x & 31) < 2) {
    const bool own = (threadIdx.x & 31) == 0;
    const uint32_t index =
        own ? round_draw_index(e, static_cast<int>(cg::this_cluster().block_rank()))
            : round_choice_index(e);
    const unsigned long long u = philox_u64(seed, offset, static_cast<uint32_t>(row), index);
    if (own) {
      sh.u_local[e & 1] = u;
    } else {
      sh.u_choice[e & 1] = u;
    }
  }
}

// Exchange 0's candidate of this CTA, drawn from its slice in proportion to the float weights
// exp2((x - m) * scale) (probabilities: as they are), and exchange 0 itself. Each warp scans its
// threads' masses from the load against the warp's maximum; after one block barrier every warp
// finds the warp holding the target (lane i takes warp i's mass, in units of the CTA's maximum);
// that warp finds the thread, then the thread's element (warp_walk over the groups it loaded),
// and pushes. Every warp returns with every CTA's push (lane r: CTA r's).
template <class T, bool kLogits, class RawAt>
__device__ RoundPush draw_loaded(FastShared& sh, const RawAt& raw_at, const ChunkLayout& L,
                                 bool vec, const LoadMass& lm, float local_max, float scale,
                                 uint64_t seed, uint64_t offset, int64_t row) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = static_cast<int>(blockDim.x >> 5);
  const float mw = warp_reduce(kLogits ? lm.m : local_max, MaxOp());
  float w = lm.s;
  if constexpr (kLogits) {
    w = lm.s > 0.f ? __fmul_rn(lm.s, ex2_approx(__fmul_rn(__fsub_rn(lm.m, mw), scale))) : 0.f;
  }
  float excl;
  const float incl = warp_scan_incl(w, &excl);
  if (lane == 31) {
    sh.warp_w[warp] = incl;
    sh.warp_m[warp] = mw;
  }
  __syncthreads();
  cluster_wait();  // every CTA has started (the kernel's first arrival): pushes may go out
  FS_TRACE(2);
  const float wi = lane < nwarps ? sh.warp_w[lane] : 0.f;
  const float mi = lane < nwarps ? sh.warp_m[lane] : -INFINITY;
  const float m = warp_reduce(mi, MaxOp());
  float fi = 1.f;
  if constexpr (kLogits) fi = ex2_approx(__fmul_rn(__fsub_rn(mi, m), scale));
  const float ti = wi > 0.f ? __fmul_rn(wi, fi) : 0.f;
  float ti_excl;
  const float ti_incl = warp_scan_incl(ti, &ti_excl);
  const float total = __shfl_sync(0xffffffffu, ti_incl, 31);
  const float target = uniform_from_bits(static_cast<uint32_t>(sh.u_local[0])) * total;
  const unsigned hits =
      __ballot_sync(0xffffffffu, ti > 0.f && ti_excl <= target && target < ti_incl);
  const unsigned some = __ballot_sync(0xffffffffu, ti > 0.f);
  const int hold = hits != 0u ? __ffs(hits) - 1 : (some != 0u ? 31 - __clz(some) : -1);
  const float rest_cta = target - __shfl_sync(0xffffffffu, ti_excl, hold < 0 ? 0 : hold);
  const float f_hold = __shfl_sync(0xffffffffu, fi, hold < 0 ? 0 : hold);
  // Round 1's random bits (in case rounds follow), by a warp that does not walk.
  if (warp == (hold <= 0 ? 1 : 0)) round_bits(sh, seed, offset, row, 1);
  if (warp == (hold < 0 ? 0 : hold)) {
    int pos = -1;
    if (hold >= 0) {
      const float rest = f_hold > 0.f ? rest_cta / f_hold : 0.f;  // in this warp's units
      const unsigned lane_hits = __ballot_sync(0xffffffffu, w > 0.f && excl <= rest && rest < incl);
      const unsigned lane_some = __ballot_sync(0xffffffffu, w > 0.f);
      const int src = lane_hits != 0u ? __ffs(lane_hits) - 1 : 31 - __clz(lane_some);
      const float src_excl = __shfl_sync(0xffffffffu, excl, src);
      // src's units: the 4-element groups of its vectors (vector i = t + k * blockDim), then its
      // tail groups, as load_groups handed them to it.
      constexpr int kPerVec = 16 / static_cast<int>(sizeof(T)) / 4;
      const int bd = static_cast<int>(blockDim.x), t = warp * 32 + src;
      const int nv = vec ? L.len / (4 * kPerVec) : 0;
      const int groups = (L.len + 3) / 4;
      const int vec_units = (t < nv ? (nv - 1 - t) / bd + 1 : 0) * kPerVec;
      const int g0 = nv * kPerVec + t;
      const int tail_units = g0 < groups ? (groups - 1 - g0) / bd + 1 : 0;
      pos = warp_walk<float>(
          vec_units + tail_units,
          [&](int u) -> int {
            if (u < vec_units) return 4 * ((t + (u / kPerVec) * bd) * kPerVec + u % kPerVec);
            return 4 * (g0 + (u - vec_units) * bd);
          },
          [&](int e) -> float {
            const float x = __uint_as_float(raw_at(e));
            if constexpr (kLogits) {
              return logit_weight(x, mw, scale);
            } else {
              return x;
            }
          },
          rest - src_excl);
    }
    FS_STAMP(3);
    RoundPush v;
    v.x = pos >= 0 ? __uint_as_float(raw_at(pos)) : 0.f;
    v.index = pos >= 0 ? static_cast<uint32_t>(L.begin + pos) : kNoCandidate;
    v.m = m;
    v.w = total;
    push_first(sh, v);
    FS_STAMP(4);
  }
  const RoundPush r = receive_first(sh);
  if (warp == 0) FS_STAMP(5);
  return r;
}

struct FirstPick {
  float max;    // the row maximum
  float total;  // the row's float mass (key units: logits against the row maximum)
  float x;      // round 1's candidate
  uint32_t index;
};

// After exchange 0 (every lane of the calling warp): the row maximum, and the candidate of the
// CTA chosen in proportion to its mass (float weights against the row maximum, as the CTAs' own
// draws: round 1 proposes with float weights, the integer masses decide).
template <bool kLogits>
__device__ __forceinline__ FirstPick choose_first(const RoundPush& r, unsigned long long u,
                                                  float scale) {
  const int lane = threadIdx.x & 31;
  const int n = static_cast<int>(cg::this_cluster().num_blocks());
  const float M = warp_reduce(lane < n ? r.m : -INFINITY, MaxOp());
  float w = 0.f;
  if (lane < n && r.index != kNoCandidate && r.w > 0.f) {
    w = r.w;
    if constexpr (kLogits) w = __fmul_rn(w, ex2_approx(__fmul_rn(__fsub_rn(r.m, M), scale)));
    if (!(w >= 0.f)) w = 0.f;
  }
  float excl;
  const float incl = warp_scan_incl(w, &excl);
  const float total = __shfl_sync(0xffffffffu, incl, 31);
  const float target = uniform_from_bits(static_cast<uint32_t>(u >> 32)) * total;
  const unsigned win =
      __ballot_sync(0xffffffffu, excl < incl && excl <= target && (target < incl || incl == total));
  const int src = win != 0u ? __ffs(win) - 1 : 0;
  FirstPick f;
  f.max = M;
  f.total = total;
  f.x = __shfl_sync(0xffffffffu, r.x, src);
  const uint32_t index = __shfl_sync(0xffffffffu, r.index, src);
  f.index = win != 0u ? index : kNoCandidate;
  return f;
}

// A resumed row (FilterParams::resume) with round 1's candidate from the streaming kernel:
// exchange 0 carries only each CTA's maximum (the row maximum, and the first phase of bar[0] as a
// draw's exchange 0 would), round 1's random bits are made meanwhile, and the candidate is read
// back from the row (its raw key as the draws store it).
template <class T, bool kLogits>
__device__ FirstPick resume_first(FastShared& sh, const FilterParams<T>& p, int64_t row,
                                  uint32_t candidate, float thread_max) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = static_cast<int>(blockDim.x >> 5);
  const int n = static_cast<int>(cg::this_cluster().num_blocks());
  const float mw = warp_reduce(thread_max, MaxOp());
  if (lane == 0) sh.warp_m[warp] = mw;
  __syncthreads();
  cluster_wait();  // every CTA has started (the kernel's first arrival): pushes may go out
  if (warp == 0) {
    RoundPush v{};
    v.x = 0.f;
    v.index = kNoCandidate;
    v.m = warp_reduce(lane < nwarps ? sh.warp_m[lane] : -INFINITY, MaxOp());
    v.w = 0.f;
    push_first(sh, v);
  } else if (warp == 1) {
    round_bits(sh, seed_value(p.seed), offset_value(p.seed), row, 1);
  }
  const RoundPush r = receive_first(sh);
  FirstPick f;
  f.max = warp_reduce(lane < n ? r.m : -INFINITY, MaxOp());
  f.total = 0.f;
  const float x = to_float(p.input[row * p.input_stride + candidate]);
  if constexpr (kLogits) {
    f.x = x;
  } else {
    f.x = __uint_as_float(prob_key(x));
  }
  f.index = candidate;
  return f;
}

struct MassPick {
  uint64_t above, total;  // the row's mass above the pivot, and in all (when asked)
  int src;                // the CTA whose candidate is next, if the round rejects (-1: none)
};

// After round e's mass exchange (every lane of the calling warp, each CTA's masses in lane r):
// the row's masses, and the CTA chosen in proportion to its mass above the pivot (exact integers)
// with `u`.
__device__ __forceinline__ MassPick receive_mass(FastShared& sh, int e, bool need_total,
                                                 unsigned long long u) {
  const int lane = threadIdx.x & 31;
  const int n = static_cast<int>(cg::this_cluster().num_blocks());
  receive_pushes(&sh.bar[e & 1], e >> 1);
  uint64_t mass = 0, total = 0;
  if (lane < n) {
    mass = sh.mass[e & 1][lane].x;
    total = sh.mass[e & 1][lane].y;
  }
  uint64_t excl;
  const uint64_t incl = warp_scan_incl(mass, &excl);
  MassPick mp;
  mp.above = __shfl_sync(0xffffffffu, incl, 31);
  mp.total = need_total ? warp_reduce(total, SumOp()) : 0ull;
  const uint64_t target = scale_uniform(u, mp.above);
  const unsigned win = __ballot_sync(0xffffffffu, mass > 0ull && excl <= target && target < incl);
  mp.src = win != 0u ? __ffs(win) - 1 : -1;
  return mp;
}

// Called by thread 0 at the start of the top-k draw, before the CTA's first cluster barrier
// arrival: the barriers of its pushes.
__device__ __forceinline__ void init_topk_exchanges(TkDrawShared& t, unsigned n) {
  mbar_init_bytes(&t.bar_max, n * static_cast<uint32_t>(sizeof(float)));
  mbar_init_bytes(&t.bar_hist, n * static_cast<uint32_t>(kBins * sizeof(uint16_t)));
  mbar_init_bytes(&t.bar_lens, n * static_cast<uint32_t>(sizeof(uint4)));
  mbar_init_arrivals(&t.bar_entries, n);
  fence_mbarrier_init();
}

// The row maximum for the top-k draw: warp 0 pushes the block's maximum into every CTA once
// they all started (the kernel's first arrival), and reduces what it received.
__device__ __forceinline__ float exchange_row_max(TkDrawShared& t, float block_max) {
  cg::cluster_group cluster = cg::this_cluster();
  const int lane = threadIdx.x & 31;
  const int n = static_cast<int>(cluster.num_blocks()), self = cluster.block_rank();
  cluster_wait();
  if (threadIdx.x < 32) {
    if (lane < n) push_b32(&t.max_in[self], __float_as_uint(block_max), &t.bar_max, lane, n);
    push_wait(&t.bar_max, n);
    const float m = warp_reduce(lane < n ? t.max_in[lane] : -INFINITY, MaxOp());
    if (lane == 0) t.row_max = m;
  }
  __syncthreads();
  return t.row_max;
}

// Sampling with top-k (k <= kTkMaxK) without a threshold search. Every CTA has ~chunk / blockDim
// elements per thread; the k-th largest key of the row is at least the lower edge of the level-0
// bin where the cluster's count of *thread maxima* (each a distinct element) reaches k. So the
// elements at or above that bound, typically a few times k, hold the whole top-k set and every
// element above any of its members: each CTA gathers its own (one sweep of its shared memory),
// and rank 0 ranks the union (count and mass of the keys above each), applies top-k, top-p
// (after top-k, or joint with the row's mass) and min-p exactly as the threshold path defines
// them, and draws one element by inverse CDF over the kept masses in (key, index) order. Returns
// false, on every CTA alike, when a list or the union would overflow: the caller then takes the
// threshold path (the keys in shared memory are still raw logits for logit rows). Returns true
// when the token is drawn. Every exchange is a push (the row maximum, the histograms and each
// CTA's count and mass into every CTA, the keys into rank 0), each waited for by its receiver
// and no CTA reads another's shared memory: the kernel then ends without a cluster barrier.
template <class T, bool kLogits>
__device__ bool topk_draw(const FilterParams<T>& p, FilterShared& sh, const ChunkLayout& L,
                          int64_t row, const RowFilter& f, uint32_t max_key,
                          const LogitKey& logit_key, float thread_max, uint32_t min_p_threshold,
                          uint4* smem_keys) {
  cg::cluster_group cluster = cg::this_cluster();
  TkDrawShared& t = sh.tk;
  const int n = static_cast<int>(cluster.num_blocks());
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const MassScale ms = mass_scale(mass_exponent(max_key));
  const bool need_p = f.top_p < 1.f, joint_p = need_p && !p.top_k_first;
  // 1. The CTA's thread maxima by level-0 bin.
  for (int i = threadIdx.x; i < kBins; i += blockDim.x)
    t.hist[i] = 0u;
  if (threadIdx.x == 0) t.len = 0;
  __syncthreads();
  uint32_t tkey;
  if constexpr (kLogits) {
    tkey = thread_max > -INFINITY ? logit_key(thread_max) : 0u;
  } else {
    tkey = thread_max > 0.f ? __float_as_uint(thread_max) : 0u;
  }
  if (tkey != 0u) atomicAdd(&t.hist[level0_bin(max_key, tkey)], 1u);
  __syncthreads();
  // 2. The cluster's counts per bin, and the bin where they reach k (block scan over bins). Each
  // CTA pushes its histogram as 16-bit counts (at most blockDim a bin) into every CTA's
  // hist_in[rank] (the union's shared memory, unused until step 5): 32 parts of 8 bins, one
  // 16-byte push each. Then thread t owns bins [per t, per t + per) (per = 2 for 128-thread
  // CTAs), in bin order.
  uint16_t(*hist_in)[kBins] = reinterpret_cast<uint16_t(*)[kBins]>(&sh.tk_union);
  for (int i = threadIdx.x; i < n * (kBins / 8); i += blockDim.x) {
    const int r = i / (kBins / 8), part = i % (kBins / 8);
    const uint32_t* h = &t.hist[8 * part];
    const uint4 v = make_uint4(h[0] | (h[1] << 16), h[2] | (h[3] << 16), h[4] | (h[5] << 16),
                               h[6] | (h[7] << 16));
    push_v4(&hist_in[cluster.block_rank()][8 * part], v, &t.bar_hist, static_cast<unsigned>(r),
            static_cast<unsigned>(n));
  }
  if (threadIdx.x < 32) push_wait(&t.bar_hist, static_cast<unsigned>(n));
  __syncthreads();
  FS_TRACE(11);
  const int per = blockDim.x >= kBins ? 1 : 2;
  uint32_t cb[2] = {0u, 0u};
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int b = per * static_cast<int>(threadIdx.x) + h;
    if (h >= per || b >= kBins) continue;
    for (int r = 0; r < n; ++r)
      cb[h] += hist_in[r][b];
  }
  uint64_t total = 0;
  const uint64_t before = block_exclusive_scan(uint64_t{cb[0]} + cb[1], sh.cdf.scan, total);
  if (threadIdx.x == 0) t.bound_bin = kNoBin;
  __syncthreads();
  const uint64_t k = static_cast<uint64_t>(f.top_k);
  if (before < k && before + cb[0] >= k) {
    t.bound_bin = per * threadIdx.x;
  } else if (before + cb[0] < k && before + cb[0] + cb[1] >= k) {
    t.bound_bin = per * threadIdx.x + 1;
  }
  __syncthreads();
  const uint32_t bound_bin = t.bound_bin;
  FS_TRACE(12);
  if (bound_bin == kNoBin) return false;  // fewer thread maxima than k (every CTA alike)
  const uint32_t lo = level0_range(max_key, static_cast<int>(bound_bin)).lo;
  // 3. Gather the keys >= lo: each pushed at once into this CTA's region of rank 0's tk_region,
  // and the row's mass for joint top-p.
  const int self = static_cast<int>(cluster.block_rank());
  const int cap = kTkUnionCap / n;
  uint4* region = sh.tk_region + self * cap;
  uint64_t mine = 0;
  const auto take = [&](uint32_t key, int e) {  // element e of the slice
    if (key >= lo && key != 0u) {
      const int pos = atomicAdd(&t.len, 1);
      if (pos < cap) {
        push_v4(region + pos,
                make_uint4(key, static_cast<uint32_t>(L.begin + e), key_mass(key, ms), 0u),
                &t.bar_entries, 0u, n);
      }
    }
  };
  if constexpr (kLogits) {
    // Without joint top-p, only groups with a raw logit at or above x_pre can hold a key >= lo:
    // x_pre is below the smallest such logit by a margin (1/16 in log2 units of the key, and the
    // rounding of the subtraction below) far above the error of the key's ex2.approx and of
    // lg2.approx here. The keys stay raw logits in shared memory (the threshold path converts
    // them).
    float x_pre = -INFINITY;
    if (lo != 0u && !joint_p) {
      const float d_pre = (lg2_approx(__uint_as_float(lo)) - 0.0625f) / logit_key.scale;
      x_pre = logit_key.max + d_pre * 1.001f - fabsf(logit_key.max) * 0x1p-20f;
    }
    for_each_group(L, SmemKeys{smem_keys}, [&](int first, const uint32_t(&raw)[4], bool active) {
      if (!active) return;
      const float top = fmaxf(fmaxf(__uint_as_float(raw[0]), __uint_as_float(raw[1])),
                              fmaxf(__uint_as_float(raw[2]), __uint_as_float(raw[3])));
      if (!(top >= x_pre) && !joint_p) return;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const uint32_t key = logit_key(__uint_as_float(raw[e]));
        if (joint_p) mine += key_mass(key, ms);
        take(key, first + e);
      }
    });
  } else {
    for_each_group(L, SmemKeys{smem_keys}, [&](int first, const uint32_t(&kk)[4], bool active) {
      if (!active) return;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (joint_p) mine += key_mass(kk[e], ms);
        take(kk[e], first + e);
      }
    });
  }
  if (joint_p) mine = block_reduce(mine, sh.reduce64, SumOp(), uint64_t{0});
  __syncthreads();
  {
    const int len = t.len;
    if (threadIdx.x == 0 && n > 1) {
      arrive_expect_remote(&t.bar_entries, static_cast<uint32_t>(min(len, cap)) * 16u, 0u);
    }
    if (warp == 0 && lane < n) {
      push_v4(&t.lens_in[self],
              make_uint4(static_cast<uint32_t>(len), static_cast<uint32_t>(mine),
                         static_cast<uint32_t>(mine >> 32), 0u),
              &t.bar_lens, lane, n);
    }
  }
  FS_TRACE(13);
  // 4. Every CTA: the lengths (the same overflow decision everywhere) and the union's layout.
  if (warp == 0) {
    push_wait(&t.bar_lens, n);
    int len = 0;
    unsigned long long m = 0;
    if (lane < n) {
      const uint4 v = t.lens_in[lane];
      len = static_cast<int>(v.x);
      m = (static_cast<unsigned long long>(v.z) << 32) | v.y;
    }
    const bool bad = __any_sync(0xffffffffu, len > cap);
    int incl = len;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, incl, d);
      if (lane >= d) incl += y;
    }
    if (lane < n) t.begin[lane] = incl - len;
    const int u = __shfl_sync(0xffffffffu, incl, 31);
    if (lane == 0) t.begin[n] = bad ? -1 : u;
    m = warp_reduce(m, SumOp());
    if (lane == 0) t.row_mass = m;
    if (self == 0 && n > 1) mbar_wait(&t.bar_entries, 0u);  // every push into tk_region landed
  }
  __syncthreads();
  const int u = t.begin[n];
  FS_TRACE_VALUE(static_cast<unsigned long long>(u + 1));
  if (u < 0 || u > static_cast<int>(blockDim.x) || u > kTkUnionCap) {
    clear_histograms(sh.select);  // rank 0's were overwritten by the pushes
    __syncthreads();
    return false;
  }
  if (self != 0) return true;
  // 5. Rank 0: the union, compacted from the regions.
  TkDrawUnion& un = sh.tk_union;
  for (int i = threadIdx.x; i < u; i += blockDim.x) {
    int r = 0;
    while (t.begin[r + 1] <= i)
      ++r;
    const uint4 v = sh.tk_region[r * cap + i - t.begin[r]];
    un.key[i] = v.x;
    un.index[i] = v.y;
    un.mass[i] = v.z;
  }
  __syncthreads();
  FS_TRACE(14);
  // Each key is ranked by a group of `gs` consecutive threads (a power of two <= 32, as many as
  // the block holds), each comparing it with every gs-th key of the union; the group's counts
  // meet by shuffles.
  int gs = 1;
  while (gs < 32 && 2 * gs * u <= static_cast<int>(blockDim.x))
    gs *= 2;
  const int i = threadIdx.x / gs, sub = threadIdx.x % gs;
  uint32_t key = 0, index = 0, mass = 0, count_gt = 0, pos = 0;
  uint64_t mass_gt = 0;
  if (i < u) {
    key = un.key[i];
    index = un.index[i];
    mass = un.mass[i];
#pragma unroll 4
    for (int j = sub; j < u; j += gs) {
      const uint32_t kj = un.key[j];
      const bool gt = kj > key;
      count_gt += gt;
      mass_gt += gt ? un.mass[j] : 0u;
      pos += gt || (kj == key && un.index[j] < index);
    }
  }
  for (int o = 1; o < gs; o <<= 1) {
    count_gt += __shfl_xor_sync(0xffffffffu, count_gt, o);
    mass_gt += __shfl_xor_sync(0xffffffffu, mass_gt, o);
    pos += __shfl_xor_sync(0xffffffffu, pos, o);
  }
  const bool lead = i < u && sub == 0;  // one thread per key from here
  FS_TRACE(15);
  const bool kept_k = lead && count_gt < k;
  uint64_t target = 0;
  if (need_p) {
    const uint64_t base = joint_p ? t.row_mass
                                  : block_reduce(kept_k ? uint64_t{mass} : uint64_t{0}, sh.reduce64,
                                                 SumOp(), uint64_t{0});
    target = top_p_target(f.top_p, base);
  }
  const bool kept = kept_k && key >= min_p_threshold && (!need_p || mass_gt < target);
  if (lead) {
    un.sorted_weight[pos] = kept ? mass : 0u;
    un.sorted_index[pos] = index;
  }
  __syncthreads();
  const int sorted = threadIdx.x;
  const uint64_t w = sorted < u ? un.sorted_weight[sorted] : 0u;
  uint64_t kept_total = 0;
  const uint64_t w_before = block_exclusive_scan(w, sh.cdf.scan, kept_total);
  const uint64_t draw = scale_uniform(
      philox_u64(seed_value(p.seed), offset_value(p.seed), static_cast<uint32_t>(row), 0u),
      kept_total);
  const bool here =
      kept_total > 0 ? (w > 0 && w_before <= draw && draw < w_before + w) : threadIdx.x == 0;
  if (here) {
    const int64_t id = kept_total > 0 ? static_cast<int64_t>(un.sorted_index[sorted]) : 0;
    store_id(p, row, id);
  }
  return true;
}

#ifdef FLASHSERVE_STREAM_DEBUG  // decision counts of the streaming draw (bench tools only)
__device__ unsigned long long g_stream_stats[4];  // rejected, undecided, kept by the bounds
#endif

// Resident rows: no histograms, every top-p round sweeps shared memory.
struct NoStream {
  static constexpr bool kOn = false;
};

// Streamed rows: this warp's histogram from the load, and the load's layout (to find the warp
// that counted a candidate).
struct StreamRound {
  static constexpr bool kOn = true;
  WarpHist h;
  bool vec;
  int per_vec;  // elements of one vector load
  float sr;     // scale * kHistPerLog2, as the load binned the logits
};

// Streaming, a top-p round: +1 when the histograms' bounds keep the candidate, -1 when they
// reject it, 0 when undecided; the same on every CTA (bounds exchange `bx`). Exact: the bounds
// contain the integer masses of key_math.h (keys against the row maximum, rounded; their total
// `exact_total` when known, else the load's float total within its rounding), so a decided round
// decides as the sweep would.
template <bool kLogits>
__device__ int bounds_decision(FastShared& sh, const StreamRound& st, int bx, const ChunkLayout& L,
                               int vocab, float x, uint32_t kc, uint32_t index, float ms,
                               uint32_t max_key, float top_p, bool have_total, uint64_t exact_total,
                               float float_total) {
  cg::cluster_group cluster = cg::this_cluster();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = static_cast<int>(blockDim.x >> 5);
  const unsigned n = cluster.num_blocks(), self = cluster.block_rank();
  const int nc = kLogits ? logit_bin_n(x, st.sr) : prob_bin_n(kc);
  int exclude = -1;  // the candidate's own count, in the warp that loaded it
  const int64_t pos = static_cast<int64_t>(index) - L.begin;
  if (pos >= 0 && pos < L.len && st.h.anchor != kNoAnchor &&
      load_warp_of(static_cast<int>(pos), L.len, st.vec, st.per_vec) == warp) {
    const uint32_t b = static_cast<uint32_t>(st.h.anchor - nc);
    exclude = b < kHistBins - 1 ? static_cast<int>(b) : kHistBins - 1;
  }
  MassBounds mb;
  if constexpr (kLogits) {
    mb = logit_warp_bounds(st.h, nc, ms, exclude);
  } else {
    mb = prob_warp_bounds(st.h, nc, exclude);
  }
  if (!st.h.ok) {  // values beyond the binning's range: no bounds
    mb.lo = 0.f;
    mb.hi = INFINITY;
  }
  if (lane == 0) sh.warp_bound[warp] = make_float2(mb.lo, mb.hi);
  __syncthreads();
  if (warp == 0) {
    const float2 w = lane < nwarps ? sh.warp_bound[lane] : make_float2(0.f, 0.f);
    const float lo = warp_reduce(w.x, SumOp()), hi = warp_reduce(w.y, SumOp());
    if (lane < static_cast<int>(n)) {
      push_v4(&sh.bound[bx & 1][self], make_uint4(__float_as_uint(lo), __float_as_uint(hi), 0u, 0u),
              &sh.bar_bound[bx & 1], lane, n);
    }
  }
  receive_pushes(&sh.bar_bound[bx & 1], bx >> 1);
  const uint4 r = lane < static_cast<int>(n) ? sh.bound[bx & 1][lane] : make_uint4(0u, 0u, 0u, 0u);
  const float lo = warp_reduce(__uint_as_float(r.x), SumOp());
  const float hi = warp_reduce(__uint_as_float(r.y), SumOp());
  // Integer mass units: S per key unit; each element's mass is rounded (half a unit each).
  const double S = kLogits ? 0x1p30 : ldexp(1.0, 157 - mass_exponent(max_key));
  const double V = 0.5 * static_cast<double>(vocab) + 1.0;
  double tlo = static_cast<double>(exact_total), thi = tlo;
  if (!have_total) {
    tlo = static_cast<double>(float_total) * S * (1.0 - 3e-4) - V;
    thi = static_cast<double>(float_total) * S * (1.0 + 3e-4) + V;
  }
  const double alo = static_cast<double>(lo) * S * (1.0 - 1e-4) - V;
  const double ahi = static_cast<double>(hi) * S * (1.0 + 1e-4) + V;
  const double p = static_cast<double>(top_p);
  int d = 0;
  if (ahi < p * tlo) {
    d = 1;  // mass above < top_p * total: kept
  } else if (alo >= fmax(1.0, p * thi)) {
    d = -1;  // >= the target: rejected
  }
#ifdef FLASHSERVE_STREAM_DEBUG
  if (threadIdx.x == 0 && self == 0) atomicAdd(&g_stream_stats[d + 1], 1ull);
#endif
  return d;
}

// Streaming with a resume launch: round 1 only, decided by the histograms' bounds when they can
// (the candidate kept by top-p, or no top-p filter). False leaves the row to the resume launch,
// which goes on from the same candidate (an undecided round) or rejects it there exactly.
template <bool kLogits>
__device__ bool stream_first_round(FastShared& sh, const StreamRound& st, const ChunkLayout& L,
                                   int vocab, const RowFilter& f, const FirstPick& first,
                                   uint32_t max_key, const LogitKey& logit_key,
                                   uint32_t min_p_threshold, float scale) {
  if (first.index == kNoCandidate) return false;
  uint32_t kc;
  if constexpr (kLogits) {
    kc = logit_key(first.x);
  } else {
    kc = __float_as_uint(first.x);
  }
  if (kc == 0u || kc < min_p_threshold) return false;  // min-p rejects it (or not drawable)
  if (f.top_p >= 1.f) return true;
  const float ms = kLogits ? __fmul_rn(first.max, scale) : 0.f;
  const int d = bounds_decision<kLogits>(sh, st, 0, L, vocab, first.x, kc, first.index, ms, max_key,
                                         f.top_p, false, 0ull, first.total);
  return d > 0;
}

// The rounds of the rejection draw after exchange 0 (`first`: round 1's candidate). Round e's
// sweep gives each thread its mass above the pivot (and, in the first top-p round, the row's
// total); exchange e sums them and picks the CTA whose candidate is next. Each CTA draws that
// candidate from the same masses while the exchange is in flight and pushes it only when the
// round rejects (a candidate exchange). Returns true when a candidate was accepted (rank 0 stored
// it), false after kMaxRounds (the caller takes the threshold path: the keys in shared memory are
// still raw logits for logit rows). Every warp of every CTA takes the same decisions, from the
// same pushes. `groups` visits the slice's keys (shared memory, or global memory when streamed),
// `raw_at` reads one; streamed rows (Stream::kOn) try each top-p round's histogram bounds first
// and sweep only when they leave it undecided or reject.
template <bool kLogits, class T, class Groups, class RawAt, class Stream>
__device__ bool rejection_rounds(const FilterParams<T>& p, FastShared& sh, const ChunkLayout& L,
                                 int64_t row, const RowFilter& f, const FirstPick& first,
                                 uint32_t max_key, const LogitKey& logit_key,
                                 uint32_t min_p_threshold, float scale, const Groups& groups,
                                 const RawAt& raw_at, const Stream& st) {
  const MassScale ms = mass_scale(mass_exponent(max_key));
  const auto key_of = [&](uint32_t raw) -> uint32_t {
    if constexpr (kLogits) {
      return logit_key(__uint_as_float(raw));
    } else {
      return raw;
    }
  };
  const auto mass_of = [&](uint32_t k) -> uint32_t {
    if constexpr (kLogits) {
      return key_mass_of_one(k);  // the row maximum's key is 1: scale 2^30
    } else {
      return key_mass(k, ms);
    }
  };
  const uint64_t seed = seed_value(p.seed), offset = offset_value(p.seed);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = static_cast<int>(blockDim.x >> 5);
  float x = first.x;
  uint32_t index = first.index;
  uint32_t kc = index != kNoCandidate ? key_of(__float_as_uint(x)) : 0u;
  bool alive = kc != 0u && kc >= min_p_threshold;  // kept by min-p (and drawable)
  uint64_t target = 0, exact_total = 0;
  bool have_total = false;
  int c = 0;   // candidate exchanges so far
  int bx = 0;  // bounds exchanges so far (streaming)
  for (int e = 1;; ++e) {
    if (alive && f.top_p >= 1.f) break;
    if (e > kMaxRounds) return false;
    if constexpr (Stream::kOn) {
      if (alive) {
        const float ms = kLogits ? __fmul_rn(first.max, scale) : 0.f;
        const int d = bounds_decision<kLogits>(sh, st, bx++, L, p.vocab, x, kc, index, ms, max_key,
                                               f.top_p, have_total, exact_total, first.total);
        if (d > 0) break;  // kept; a rejection still sweeps for the next candidate
      }
    }
    // Keys above the pivot: above the candidate's (its own acceptance needs their mass), or, when
    // min-p rejected it, those min-p keeps.
    const uint32_t pivot = alive ? kc : (min_p_threshold > 0u ? min_p_threshold - 1u : 0u);
    // A group whose largest logit lies below x_skip holds no key above the candidate's (keys grow
    // with the logit; the margin, 1/64 in log2 units, is far above the rounding of x - max and the
    // error of ex2.approx).
    const float x_skip = kLogits && alive ? x - 0x1p-6f / scale : -INFINITY;
    const bool need_total = f.top_p < 1.f && !have_total;
    uint64_t above = 0, total = 0;
    groups([&](int, const uint32_t(&r)[4], bool active) {
      if (!active) return;
      if (!need_total) {
        if constexpr (kLogits) {
          const float gm = fmaxf(fmaxf(__uint_as_float(r[0]), __uint_as_float(r[1])),
                                 fmaxf(__uint_as_float(r[2]), __uint_as_float(r[3])));
          if (!(gm >= x_skip)) return;
        } else {
          if (max(max(r[0], r[1]), max(r[2], r[3])) <= pivot) return;
        }
      }
      uint32_t k[4], m[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        k[j] = key_of(r[j]);
        m[j] = mass_of(k[j]);
      }
      // Masses are < 2^31: pairs sum in 32 bits.
      if (need_total) total += static_cast<uint64_t>(m[0] + m[1]) + (m[2] + m[3]);
      uint32_t lo = 0u, hi = 0u;
      lo += k[0] > pivot ? m[0] : 0u;
      lo += k[1] > pivot ? m[1] : 0u;
      hi += k[2] > pivot ? m[2] : 0u;
      hi += k[3] > pivot ? m[3] : 0u;
      above += static_cast<uint64_t>(lo) + hi;
    });
    FS_TRACE(14);
    // The CTA's masses go out at once (by a warp that does not walk); meanwhile the holding warp
    // draws this CTA's candidate for round e + 1 from the same masses (warps, then threads in
    // order; the holder's groups as the sweep visited them, searched by its warp), pushed only if
    // the round rejects: a second, smaller exchange that accepting rounds skip.
    uint64_t excl;
    const uint64_t incl = warp_scan_incl(above, &excl);
    if (need_total) total = warp_reduce(total, SumOp());
    if (lane == 31) sh.warp_above[e & 1][warp] = incl;
    if (lane == 0) sh.warp_total[e & 1][warp] = total;
    __syncthreads();
    if (warp == 0) FS_STAMP(6);
    const uint64_t ai = lane < nwarps ? sh.warp_above[e & 1][lane] : 0ull;
    uint64_t ai_excl;
    const uint64_t ai_incl = warp_scan_incl(ai, &ai_excl);
    const uint64_t cta_above = __shfl_sync(0xffffffffu, ai_incl, 31);
    const uint64_t t = scale_uniform(sh.u_local[e & 1], cta_above);
    const unsigned hits = __ballot_sync(0xffffffffu, ai > 0ull && ai_excl <= t && t < ai_incl);
    const int hold = hits != 0u ? __ffs(hits) - 1 : -1;  // exact integers: one warp, if any mass
    const int walker = hold < 0 ? 0 : hold, pusher = walker == 0 ? 1 : 0;
    if (warp == pusher) {
      const uint64_t cta_total =
          need_total ? warp_reduce(lane < nwarps ? static_cast<uint64_t>(sh.warp_total[e & 1][lane])
                                                 : uint64_t{0},
                                   SumOp())
                     : 0ull;
      push_mass(sh, e, cta_above, cta_total);
      round_bits(sh, seed, offset, row, e + 1);  // (while the exchange is in flight)
    }
    int pos = -1;
    if (warp == walker && hold >= 0) {
      const uint64_t rest_cta = t - __shfl_sync(0xffffffffu, ai_excl, hold);
      const unsigned lane_hits =
          __ballot_sync(0xffffffffu, above > 0ull && excl <= rest_cta && rest_cta < incl);
      const int src = __ffs(lane_hits) - 1;
      const uint64_t src_excl = __shfl_sync(0xffffffffu, excl, src);
      pos = warp_walk<uint64_t>(
          L.iters,
          [&](int u) -> int {
            const int v = L.vec_begin + u * 32 + src;
            return v < L.vec_end ? 4 * v : -1;
          },
          [&](int i) -> uint64_t {
            const uint32_t k = key_of(raw_at(i));
            return k > pivot ? mass_of(k) : 0u;
          },
          rest_cta - src_excl);
      FS_STAMP(7);
    }
    const MassPick mp = receive_mass(sh, e, need_total, sh.u_choice[e & 1]);
    if (warp == 0) FS_STAMP(12);
    if (need_total) {
      target = top_p_target(f.top_p, mp.total);
      exact_total = mp.total;
      have_total = true;
    }
    if (alive && mp.above < target) break;  // top-p keeps the candidate
    // Rejected, and with it every key <= the pivot: the next candidate lies above it.
    if (warp == walker) {
      push_cand(sh, c, pos >= 0 ? __uint_as_float(raw_at(pos)) : 0.f,
                pos >= 0 ? static_cast<uint32_t>(L.begin + pos) : kNoCandidate);
    }
    receive_pushes(&sh.bar_cand[c & 1], c >> 1);
    const uint4 next = mp.src >= 0 ? sh.cand[c & 1][mp.src] : make_uint4(0u, kNoCandidate, 0u, 0u);
    ++c;
    if (warp == 0) FS_STAMP(13);
    if (next.y == kNoCandidate) return false;  // nothing above (cannot happen)
    x = __uint_as_float(next.x);
    index = next.y;
    kc = key_of(next.x);
    alive = true;
  }
  if (cg::this_cluster().block_rank() == 0 && threadIdx.x == 0) store_id(p, row, index);
  return true;
}

// Thread 0: this CTA's slice of row `row` + p.prefetch_rows into L2, in 32 KB pieces (aligned
// rows only; the slice's last bytes short of 16 are left out).
template <class T>
__device__ __forceinline__ void prefetch_next(const FilterParams<T>& p, int64_t row,
                                              const ChunkLayout& L) {
  if (threadIdx.x != 0 || p.prefetch_rows <= 0 || !p.vec_loads) return;
  const int64_t next = row + p.prefetch_rows;
  if (next >= p.rows) return;
  const char* src = reinterpret_cast<const char*>(p.input + next * p.input_stride + L.begin);
  const int64_t bytes = (static_cast<int64_t>(L.len) * static_cast<int64_t>(sizeof(T))) & ~15ll;
  for (int64_t o = 0; o < bytes; o += 32768)
    prefetch_l2(src + o, static_cast<uint32_t>(bytes - o < 32768 ? bytes - o : 32768));
}

// Which draws a kernel instance holds: every one (per-row top_k), or only those a scalar top_k
// can reach (no top-k filter on any row: the rejection draw; a top-k filter on every row:
// the top-k draw). The threshold path is in all. Fewer paths, fewer registers held across the
// hot loops.
enum FilterPath : int { kAnyPath = 0, kNoTopKPath = 1, kTopKPath = 2 };

// One row of filter_kernel. `resume_cand`: a resumed row's round-1 candidate (kNoCandidate: drawn
// from the start).
template <class T, bool kLogits, bool kResident, int kPath>
__device__ __forceinline__ void filter_row(const FilterParams<T>& p, int64_t row,
                                           uint32_t resume_cand) {
  extern __shared__ uint4 smem_keys[];
  __shared__ FilterShared sh;
  cg::cluster_group cluster = cg::this_cluster();
  const ChunkLayout L = make_chunk_layout(p.vocab, p.chunk, cluster.block_rank());
  const T* in = p.input + row * p.input_stride + L.begin;
  clear_histograms(sh.select);

  RowFilter f;
  f.top_k = p.top_k.get(row);
  const float top_p = p.top_p.get(row), min_p = p.min_p.get(row);
  f.top_p = top_p < 1.f ? (top_p > 0.f ? top_p : 0.f) : 1.f;  // NaN: 1
  f.min_p = min_p > 0.f ? (min_p < 1.f ? min_p : 1.f) : 0.f;  // NaN: 0
  const bool need_k = filters_top_k(f.top_k, p.vocab);
  const bool selected = need_k || f.top_p < 1.f;
  float temp = 1.f;
  if constexpr (kLogits) {
    const float t = p.temperature.get(row);
    temp = t == t ? t : 1.f;
  }
  const float scale = 1.4426950408889634f / temp;
  // The rejection draw (rejection_draw.cuh): sampling without top-k, at a positive temperature;
  // streamed rows decide top-p rounds by their histograms (stream_hist.cuh). Everything else takes
  // the threshold path directly.
  const bool positive_t = !kLogits || (temp > 0.f && scale <= FLT_MAX);
  const bool fast = kPath != kTopKPath && p.out_ids != nullptr && !need_k && positive_t;
  // Sampling with a small top-k: topk_draw (needs each thread's maximum from the load).
  const bool tk_fast = kPath != kNoTopKPath && kResident && p.out_ids != nullptr && need_k &&
                       f.top_k <= kTkMaxK && positive_t &&
                       2 * static_cast<int>(blockDim.x) >= kBins;
  float thread_max = -INFINITY;
  if constexpr (!kResident) {
    if (p.defer && !fast) {  // the resident kernel draws it (no load here)
      if (cluster.block_rank() == 0 && threadIdx.x == 0) store_pending(p, row, kNoCandidate);
      return;
    }
  }

  FS_TRACE(0);
#ifdef FLASHSERVE_SAMPLING_TRACE
  if (threadIdx.x == 0 && blockIdx.x < 4096) {
    unsigned smid;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
    g_sampling_trace[blockIdx.x * 16 + 15] = 1ull << 63 | smid;  // not a time: the SM
  }
#endif
  float row_max;
  FirstPick first{};
  // Streaming: this warp's histogram (dynamic shared memory) and its anchor.
  WarpHist hist;
  hist.bins = reinterpret_cast<uint32_t*>(smem_keys) + (threadIdx.x >> 5) * kHistBins;
  const float sr = __fmul_rn(scale, static_cast<float>(kHistPerLog2));
  const GlobalRaw<T, kLogits> global_raw{in, L.len, p.vec_loads};
  if (fast) {
    // The first cluster-barrier phase: arrived now (after the exchanges' barriers are set up),
    // waited for before exchange 0's pushes.
    if (threadIdx.x == 0) init_round_barriers(sh.fast, cluster.num_blocks());
    asm volatile("barrier.cluster.arrive.relaxed;" ::: "memory");
    if (threadIdx.x < 32) round_bits(sh.fast, seed_value(p.seed), offset_value(p.seed), row, 0);
    LoadMass lm;
    float local_max = -INFINITY;  // probabilities (logits: lm.m)
    if constexpr (kResident) {
      load_groups(in, L.len, p.vec_loads, reinterpret_cast<uint32_t*>(smem_keys), 4 * L.nvec,
                  kLogits ? -INFINITY : 0.f, kLogits ? 0xff800000u : 0u,
                  [&](const float(&x)[4], int, uint32_t(&k)[4]) {
                    if constexpr (kLogits) {
#pragma unroll
                      for (int j = 0; j < 4; ++j)
                        k[j] = __float_as_uint(x[j]);
                      lm.add<true>(x, scale);
                    } else {
                      float v[4];
#pragma unroll
                      for (int j = 0; j < 4; ++j) {
                        k[j] = prob_key(x[j]);
                        v[j] = __uint_as_float(k[j]);
                        local_max = fmaxf(local_max, v[j]);
                      }
                      lm.add<false>(v, scale);
                    }
                  });
    } else {
      hist.clear();
      stream_groups(in, L.len, p.vec_loads, kLogits ? -INFINITY : 0.f,
                    [&](const float(&x)[4], bool active) {
                      int nb[4];
                      if constexpr (kLogits) {
                        lm.add<true>(x, scale);
#pragma unroll
                        for (int j = 0; j < 4; ++j)
                          nb[j] = logit_bin_n(x[j], sr);
                      } else {
                        float v[4];
#pragma unroll
                        for (int j = 0; j < 4; ++j) {
                          const uint32_t k = prob_key(x[j]);
                          v[j] = __uint_as_float(k);
                          local_max = fmaxf(local_max, v[j]);
                          nb[j] = prob_bin_n(k);
                        }
                        lm.add<false>(v, scale);
                      }
                      const int top = max(max(nb[0], nb[1]), max(nb[2], nb[3]));
                      hist.fit(active ? top : INT_MIN, kLogits ? kLogitHeadroom : kProbHeadroom);
                      if (active) {
#pragma unroll
                        for (int j = 0; j < 4; ++j)
                          hist.add(nb[j]);
                      }
                    });
    }
    FS_TRACE(1);
    if constexpr (kResident) prefetch_next(p, row, L);
    const auto draw_raw = [&](int e) -> uint32_t {
      if constexpr (kResident) {
        return reinterpret_cast<const uint32_t*>(smem_keys)[e];
      } else {
        return global_raw(e);
      }
    };
    if (kResident && resume_cand != kNoCandidate) {
      first = resume_first<T, kLogits>(sh.fast, p, row, resume_cand, kLogits ? lm.m : local_max);
    } else {
      first = choose_first<kLogits>(
          draw_loaded<T, kLogits>(sh.fast, draw_raw, L, p.vec_loads, lm, local_max, scale,
                                  seed_value(p.seed), offset_value(p.seed), row),
          sh.fast.u_choice[0], scale);
    }
    FS_TRACE(11);
    row_max = first.max;
  } else {
    if (tk_fast) {  // as in the fast path: arrived now, waited for before the first push
      if (threadIdx.x == 0) init_topk_exchanges(sh.tk, cluster.num_blocks());
      asm volatile("barrier.cluster.arrive.relaxed;" ::: "memory");
    }
    float local_max = -INFINITY;
    load_slice(
        in, L.len, p.vec_loads, kResident ? reinterpret_cast<uint32_t*>(smem_keys) : nullptr,
        4 * L.nvec,
        [&](float x) -> uint32_t {
          if constexpr (kLogits) {
            local_max = fmaxf(local_max, x);
            return __float_as_uint(x);
          } else {
            const uint32_t k = prob_key(x);
            local_max = fmaxf(local_max, __uint_as_float(k));
            return k;
          }
        },
        kLogits ? 0xff800000u : 0u);  // padding: -inf logits, zero probabilities
    thread_max = local_max;
    if constexpr (kResident) prefetch_next(p, row, L);
    const float block_max = block_reduce(local_max, sh.reduce, MaxOp(), -INFINITY);
    FS_TRACE(1);
    row_max = tk_fast ? exchange_row_max(sh.tk, block_max)
                      : cluster_reduce(block_max, &sh.max_slot, &sh.max_result, MaxOp(), -INFINITY);
  }

  uint32_t max_key;
  LogitKey logit_key;
  if constexpr (kLogits) {
    logit_key.max = row_max;
    logit_key.scale = scale;
    logit_key.greedy = row_max > -INFINITY &&
                       (!(temp > 0.f) || !(logit_key.scale <= FLT_MAX) || row_max == INFINITY);
    max_key = row_max > -INFINITY ? kOneBits : 0u;
  } else {
    max_key = row_max > 0.f ? __float_as_uint(row_max) : 0u;
  }
  const uint32_t min_p_threshold =
      f.min_p > 0.f ? __float_as_uint(f.min_p * __uint_as_float(max_key)) : 0u;

  // Each path ends with this CTA's arrival on the cluster barrier once it no longer reads another
  // CTA's shared memory; the wait below keeps every CTA's shared memory alive until all arrived.
  // The rejection draw, when it accepts, ends without: its exchanges are pushes that every
  // receiver waited for (the same decision on every CTA of the cluster).
  bool end_barrier = true;
  if (max_key != 0u) {
    const auto run = [&](const auto& first, const auto& load) {
      uint32_t threshold = min_p_threshold;
      if (selected) {
        threshold = select_threshold(sh, L, p.vocab, p.top_k_first, max_key, f, first, load);
      } else if constexpr (!std::is_same_v<std::decay_t<decltype(first)>,
                                           std::decay_t<decltype(load)>>) {
        for_each_group(L, first, [](int, const uint32_t(&)[4], bool) {});  // convert the keys
        __syncthreads();
      }
      emit_row(p, sh, L, row, max_key, threshold, selected, load);
    };
    bool drawn = false, tk_drawn = false;  // (logit rows still hold raw logits in shared memory)
    if constexpr (kResident) {
      if (tk_fast && !logit_key.greedy) {
        tk_drawn = topk_draw<T, kLogits>(p, sh, L, row, f, max_key, logit_key, thread_max,
                                         min_p_threshold, smem_keys);
      }
      if (fast && !logit_key.greedy) {
        drawn = rejection_rounds<kLogits>(
            p, sh.fast, L, row, f, first, max_key, logit_key, min_p_threshold, scale,
            [&](auto&& g) { for_each_group(L, SmemKeys{smem_keys}, g); },
            [&](int e) { return reinterpret_cast<const uint32_t*>(smem_keys)[e]; }, NoStream{});
      }
    } else {
      if (fast && !logit_key.greedy) {
        StreamRound st;
        st.h = hist;
        st.vec = p.vec_loads;
        st.per_vec = 16 / static_cast<int>(sizeof(T));
        st.sr = sr;
        if (p.defer) {
          const bool kept = stream_first_round<kLogits>(sh.fast, st, L, p.vocab, f, first, max_key,
                                                        logit_key, min_p_threshold, scale);
          if (cluster.block_rank() == 0 && threadIdx.x == 0) {
            if (kept) {
              store_id(p, row, first.index);
            } else {
              store_pending(p, row, first.index);
            }
          }
          drawn = true;  // (or left to the resume launch: nothing more here)
        } else {
          drawn = rejection_rounds<kLogits>(
              p, sh.fast, L, row, f, first, max_key, logit_key, min_p_threshold, scale,
              [&](auto&& g) { for_each_group_ahead<4>(L, global_raw, g); }, global_raw, st);
        }
      } else if (p.defer) {  // greedy (an infinite maximum): the resident kernel draws it
        if (cluster.block_rank() == 0 && threadIdx.x == 0) store_pending(p, row, kNoCandidate);
        drawn = true;
      }
    }
    if (drawn || tk_drawn) {
      // Only pushes since the first barrier, all received: no CTA reads another's shared memory.
      end_barrier = false;
    } else if constexpr (kResident) {
      if constexpr (kLogits) {
        run(ConvertSmemKeys<LogitKey>{smem_keys, logit_key}, SmemKeys{smem_keys});
      } else {
        run(SmemKeys{smem_keys}, SmemKeys{smem_keys});
      }
    } else if constexpr (kLogits) {
      const GlobalKeys<T, LogitKey> load{in, L.len, logit_key};
      run(load, load);
    } else {
      const GlobalKeys<T, ProbKey> load{in, L.len, ProbKey{}};
      run(load, load);
    }
  } else {
    cluster_arrive();
    if (p.out_ids != nullptr) {
      if (cluster.block_rank() == 0 && threadIdx.x == 0) {
        store_id(p, row, 0);
      }
    } else {
      float* out = p.renorm_out + row * p.renorm_stride + L.begin;
      for (int i = threadIdx.x; i < L.len; i += blockDim.x)
        out[i] = 0.f;
    }
  }
  FS_TRACE(9);
  if (end_barrier) cluster_wait();
  FS_TRACE(10);
}

// kResume: a resume launch (FilterParams::resume), the clusters taking the marked rows
// (claim_pending) until none is left; a separate instance (the loop around the row costs the
// plain launches ~3 us a CTA).
template <class T, bool kLogits, bool kResident, int kPath = kAnyPath, bool kResume = false>
__global__ void __launch_bounds__(kSamplingThreads, 2) filter_kernel(const FilterParams<T> p) {
  const unsigned n = cg::this_cluster().num_blocks();
  if constexpr (kResume) {
    static_assert(kResident && kPath != kTopKPath, "resume launches are resident, with the draw");
    for (bool first_try = true;; first_try = false) {
      int64_t row;
      uint32_t candidate;
      if (!claim_pending(p, blockIdx.x / n, first_try, &row, &candidate)) return;
      filter_row<T, kLogits, kResident, kPath>(p, row, candidate);
      __syncthreads();
      cg::this_cluster().sync();  // the next row reuses every CTA's shared memory and barriers
    }
  } else {
    filter_row<T, kLogits, kResident, kPath>(p, blockIdx.x / n, kNoCandidate);
  }
}

template <class T, bool kLogits>
cudaError_t plan_filter(int64_t rows, int64_t vocab, const DeviceLimits& dev, SamplingTile* tile) {
  return plan_tile(filter_kernel<T, kLogits, true>, rows, vocab, dev, tile);
}

// The streaming tile for a sampling call (choose_stream_tile with the cluster sizes the kernel
// accepts).
template <class T, bool kLogits>
cudaError_t plan_filter_stream(int64_t rows, int64_t vocab, const DeviceLimits& dev,
                               SamplingTile* tile) {
  *tile = choose_stream_tile(rows, vocab, dev.num_sms,
                             max_cluster_size(filter_kernel<T, kLogits, false, kNoTopKPath>));
  return cudaSuccess;
}

// The resident kernel instance for p's top_k (scalar: only the draws it can reach).
template <class T, bool kLogits>
cudaError_t launch_resident(const FilterParams<T>& q, int64_t clusters, const SamplingTile& tile,
                            const DeviceLimits& dev, cudaStream_t stream) {
  if (q.resume) {  // (scalar top-k too: the instance with every path)
    const bool plain = q.top_k.per_row == nullptr && !filters_top_k(q.top_k.value, q.vocab);
    return plain ? launch_clusters(filter_kernel<T, kLogits, true, kNoTopKPath, true>, q, clusters,
                                   tile, dev, stream)
                 : launch_clusters(filter_kernel<T, kLogits, true, kAnyPath, true>, q, clusters,
                                   tile, dev, stream);
  }
  if (q.top_k.per_row == nullptr) {
    const bool need_k = filters_top_k(q.top_k.value, q.vocab);
    return need_k ? launch_clusters(filter_kernel<T, kLogits, true, kTopKPath>, q, clusters, tile,
                                    dev, stream)
                  : launch_clusters(filter_kernel<T, kLogits, true, kNoTopKPath>, q, clusters, tile,
                                    dev, stream);
  }
  return launch_clusters(filter_kernel<T, kLogits, true>, q, clusters, tile, dev, stream);
}

// Launches the filter for `tile`. A streaming tile for sampling (out_ids) with `resume_tile`, a
// resident tile of the same shape: the streaming kernel decides the rows its first candidate and
// histograms decide and marks the others, then the resident kernel (as many clusters as run at
// once, two CTAs a SM) takes the marked rows. Without it, streamed rows finish on their own
// (every further round a pass over global memory).
template <class T, bool kLogits>
cudaError_t launch_filter(const FilterParams<T>& p, const SamplingTile& tile,
                          const DeviceLimits& dev, cudaStream_t stream,
                          const SamplingTile* resume_tile = nullptr) {
  if (!tile.resident) {
    FilterParams<T> s = p;
    // Plain sampling (no filter on any row, a positive temperature) decides every row in the
    // streaming kernel: no resume launch (~8 us even with nothing to take).
    const bool plain = p.top_k.per_row == nullptr && !filters_top_k(p.top_k.value, p.vocab) &&
                       p.top_p.per_row == nullptr && !(p.top_p.value < 1.f) &&
                       p.min_p.per_row == nullptr && !(p.min_p.value > 0.f) &&
                       p.temperature.per_row == nullptr && p.temperature.value > 0.f;
    s.defer = resume_tile != nullptr && resume_tile->resident && p.out_ids != nullptr &&
              p.vocab < (1 << 30) && !plain;
    cudaError_t err;
    if (p.out_ids != nullptr && p.top_k.per_row == nullptr &&
        !filters_top_k(p.top_k.value, p.vocab)) {
      err = launch_clusters(filter_kernel<T, kLogits, false, kNoTopKPath>, s, p.rows, tile, dev,
                            stream);
    } else {
      err = launch_clusters(filter_kernel<T, kLogits, false>, s, p.rows, tile, dev, stream);
    }
    if (err != cudaSuccess || !s.defer || p.rows == 0) return err;
    FilterParams<T> r = p;
    r.chunk = resume_tile->chunk;
    r.prefetch_rows = -1;
    r.resume = true;
    const int64_t at_once =
        std::max<int64_t>(1, 2 * static_cast<int64_t>(dev.num_sms) / resume_tile->cluster);
    return launch_resident<T, kLogits>(r, std::min<int64_t>(p.rows, at_once), *resume_tile, dev,
                                       stream);
  }
  FilterParams<T> q = p;
  if (p.prefetch_rows == 0) {
    // The rows resident at once (two CTAs a SM): a row's cluster starts about when the cluster of
    // the row that many before it ends.
    const int64_t resident_rows = 2 * static_cast<int64_t>(dev.num_sms) / tile.cluster;
    q.prefetch_rows = p.rows > resident_rows ? static_cast<int>(resident_rows) : -1;
  }
  return launch_resident<T, kLogits>(q, p.rows, tile, dev, stream);
}

}  // namespace flashserve::sampling
