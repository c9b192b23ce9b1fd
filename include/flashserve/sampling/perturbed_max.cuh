// Sampling by perturbed maxima (the Gumbel-max trick): with E_i ~ Exp(1) independent,
// argmax_i (log w_i - log E_i) is element i with probability w_i / sum(w), and restricted to any
// set S the argmax over S is distributed as w restricted to S. So a draw from the kept set of a
// filter is the element of largest perturbed value y_i = log2 w_i - log2(E_i) inside that set.
//
// One sweep over a row gives every CTA's few largest y (no maximum, no sum needed: y of a logit is
// x * log2(e) / T - log2(E)); after one cluster exchange, the row's largest candidates are known,
// and the draw is the first of them (by y) that the filter keeps. Whether a candidate is kept
// needs at most one more sweep (top-p: the mass above each candidate's key). The result is exact
// as long as every element outside the candidate list has a smaller y than the chosen candidate
// (`rest` tracks the largest y left out of the lists); otherwise, and when no candidate is kept,
// the kernel falls back to the exact threshold path, whose draw uses independent random numbers.
//
// Candidates carry a 64-bit key, order_key(y) << 32 | row index (unique; larger y first, ties to
// the larger index), and the raw input value (to compute the candidate's probability key once the
// row maximum is known). Key 0 marks an empty slot.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "flashserve/sampling/cluster_ops.cuh"
#include "flashserve/sampling/key_math.h"
#include "flashserve/sampling/philox.cuh"

namespace flashserve::sampling {

constexpr int kCands = 4;  // candidates per list: the draw falls back when none is kept

struct Cand {
  unsigned long long key;
  float x;
};

struct CandList {
  Cand c[kCands];           // descending keys; empty slots (key 0) last
  unsigned long long rest;  // largest key of the elements not in the list (0: none)
};

// A warp's best element and the largest key among its others: every lane gets the warp's
// (64-bit maxima by two 32-bit warp reductions each; keys are unique but for 0).
__device__ __forceinline__ void warp_best(Cand& best, unsigned long long& rest) {
  const unsigned long long top = warp_max_u64(best.key);
  const bool mine = best.key == top;
  const unsigned win = __ballot_sync(0xffffffffu, mine);
  const float x = __shfl_sync(0xffffffffu, best.x, win != 0u ? __ffs(win) - 1 : 0);
  const unsigned long long other = mine ? 0ull : best.key;
  rest = warp_max_u64(other > rest ? other : rest);
  best = Cand{top, x};
}

// The kCands largest keys of up to 32 lists, lane r holding list r (descending keys, empty slots
// 0 last; lanes without a list hold only zeros), and the largest key left out: the lanes' `rest`
// and what the lists still hold after the merge. Keys are unique but for 0. Called by a whole
// warp; every lane returns the result. kCands rounds of a warp maximum over the lists' heads.
__device__ __forceinline__ CandList merge_lists(const Cand (&list)[kCands],
                                                unsigned long long rest) {
  CandList out;
  int pos = 0;  // this lane's next entry
#pragma unroll
  for (int i = 0; i < kCands; ++i) {
    unsigned long long head = 0ull;
    float hx = 0.f;
#pragma unroll
    for (int j = 0; j < kCands; ++j) {
      if (pos == j) {
        head = list[j].key;
        hx = list[j].x;
      }
    }
    const unsigned long long top = warp_max_u64(head);
    const bool mine = top != 0ull && head == top;
    const unsigned win = __ballot_sync(0xffffffffu, mine);
    const float x = __shfl_sync(0xffffffffu, hx, win != 0u ? __ffs(win) - 1 : 0);
    out.c[i] = Cand{top, top != 0ull ? x : 0.f};
    pos += mine ? 1 : 0;
  }
  unsigned long long head = 0ull;
#pragma unroll
  for (int j = 0; j < kCands; ++j)
    head = pos == j ? list[j].key : head;
  out.rest = warp_max_u64(head > rest ? head : rest);
  return out;
}

// A thread's running best element (largest y; the first of equal ones), as its position in the
// CTA's slice, and the largest y of its others. Branch-free: two selects and two min/max a
// element. The best element's input value is read back from shared memory once the sweep is done
// (best()), and its keys take the row index: rest_key() takes the largest index, so it is at least
// the key of every other element, which keeps the check exact. A NaN y is never the best and
// leaves rest_y alone.
struct ThreadCands {
  float best_y = -INFINITY, rest_y = -INFINITY;
  int best_pos = -1;  // none yet
  __device__ __forceinline__ void add(float y, int pos) {
    const bool better = y > best_y;
    rest_y = fmaxf(rest_y, better ? best_y : y);
    best_y = better ? y : best_y;
    best_pos = better ? pos : best_pos;
  }
  // x: the best element's input value; begin: the slice's first row index.
  __device__ __forceinline__ Cand best(int64_t begin, float x) const {
    if (best_pos < 0) return Cand{0ull, 0.f};
    return Cand{(static_cast<unsigned long long>(order_key(best_y)) << 32) |
                    static_cast<uint32_t>(begin + best_pos),
                x};
  }
  __device__ __forceinline__ unsigned long long rest_key() const {
    return rest_y > -INFINITY
               ? (static_cast<unsigned long long>(order_key(rest_y)) << 32) | 0xffffffffull
               : 0ull;
  }
};

__device__ __forceinline__ float lg2_approx(float x) {  // subnormal inputs kept (no .ftz)
  float y;
  asm("lg2.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float lg2_approx_ftz(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// -log2(E) for E ~ Exp(1) up to a constant (E = -ln u = -log2(u) ln 2; the constant log2(ln 2)
// shifts every y alike): u = (23 random bits + 1/2) / 2^23 lies in [2^-24, 1 - 2^-24], so the
// perturbation is finite (within [-4.6, 22.5]).
// u is built from the bits directly: (1 + k 2^-23) - (1 - 2^-24) = (2k + 1) 2^-24, exact.
__device__ __forceinline__ float gumbel2(uint32_t bits) {
  const float u = __fsub_rn(__uint_as_float((bits >> 9) | 0x3f800000u), 1.f - 0x1p-24f);
  return -lg2_approx_ftz(-lg2_approx_ftz(u));  // no subnormal argument on either
}

// The perturbed value of an element: logits x * log2(e) / T, probabilities log2(p) (0 for an
// invalid p: -inf), plus gumbel2. Explicitly rounded operations, so that every pass that
// recomputes it gets the same bits.
template <bool kLogits>
__device__ __forceinline__ float perturbed_value(float x, float scale, uint32_t bits) {
  if constexpr (kLogits) {
    return __fmaf_rn(x, scale, gumbel2(bits));
  } else {
    return __fadd_rn(lg2_approx(__uint_as_float(prob_key(x))), gumbel2(bits));
  }
}

// The four perturbations of group `group` (elements 4 * group .. + 3 of the row): one Philox
// block, on a counter apart from the one-draw-per-row streams (index 0) of the other paths.
__device__ __forceinline__ PhiloxBlock gumbel_block(uint64_t seed, uint64_t offset, uint32_t row,
                                                    uint32_t group) {
  return philox_draw(seed, offset, row, 0x80000000u | group);
}

// gumbel_block for N groups at once: groups first / 4 + ..., one key schedule.
template <int N>
__device__ __forceinline__ void gumbel_blocks(uint64_t seed, uint64_t offset, uint32_t row,
                                              const uint32_t (&group)[N], PhiloxBlock (&out)[N]) {
#pragma unroll
  for (int b = 0; b < N; ++b)
    out[b] = philox_counter(offset, row, 0x80000000u | group[b]);
  philox4x32_10_n<N>(out, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

}  // namespace flashserve::sampling
