// Sampling from a kept set {key >= threshold} whose threshold is not known yet, by rejection
// (top-p, min-p, or no filter, without top-k). Each round draws one candidate from the row
// restricted to {key > pivot} (round 1: the whole row) and keeps it if the filter keeps it;
// otherwise every key <= the candidate's is rejected as well (the kept set of top-p and min-p is
// an upper set of keys), so the next round draws from {key > candidate's key}. A draw from a set
// that contains the kept set, accepted only when it lands in the kept set, is distributed over the
// kept set exactly as the filter's renormalized weights: whichever round accepts, the token is
// exact. After kMaxRounds without acceptance the caller takes the threshold path (an exact draw on
// independent random numbers: the mixture stays exact).
//
// The load pass only accumulates each thread's mass (no per-element random numbers); each CTA
// then draws its own candidate from its slice (the threads' masses scanned by warps, the holding
// thread's elements searched by its warp: warp_walk), and one cluster exchange picks the CTA in
// proportion to its mass:
// choosing the CTA by its mass and the element inside it by its own is one draw from the row. A
// top-p round needs the mass above the candidate's key (one sweep, one exchange); the same sweep
// gives each thread its mass above the pivot, from which every CTA draws the next round's
// candidate before the exchange, in case the round rejects.
//
// Round 1 works with float weights exp2((x - m) * scale) against the CTA's maximum m (the row
// maximum is not known before the first exchange); the keys and integer masses of key_math.h
// (against the row maximum, as the threshold path uses them) decide acceptance and weigh every
// later round exactly.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "flashserve/sampling/cluster_ops.cuh"
#include "flashserve/sampling/philox.cuh"
#include "flashserve/sampling/row_keys.cuh"

namespace flashserve::sampling {

constexpr int kMaxRounds = 24;  // rounds before the threshold path takes over

// What a CTA pushes into every CTA of the cluster in exchange 0, after the load (16 bytes): its
// maximum and float mass (m, w) and its candidate (x, index).
struct alignas(16) RoundPush {
  float x;         // the candidate's input value
  uint32_t index;  // its row index (kNoCandidate: none)
  float m, w;
};
constexpr uint32_t kNoCandidate = 0xffffffffu;

// Philox indices of the rejection draw: exchange e's local draws (one per rank) and its choice of
// a CTA; apart from index 0 (the threshold path's one draw per row).
__host__ __device__ __forceinline__ uint32_t round_draw_index(int exchange, int rank) {
  return 0x40000000u | (static_cast<uint32_t>(exchange) << 8) | static_cast<uint32_t>(rank);
}
__host__ __device__ __forceinline__ uint32_t round_choice_index(int exchange) {
  return 0x40000000u | (static_cast<uint32_t>(exchange) << 8) | 0xffu;
}

// The weight of a logit x against a maximum m: exp2((x - m) * scale), 0 for NaN (x = -inf: 0).
__device__ __forceinline__ float logit_weight(float x, float m, float scale) {
  return fmaxf(ex2_approx(__fmul_rn(__fsub_rn(x, m), scale)), 0.f);
}

// A thread's mass over the elements it loads: logits against its running maximum (rescaled when
// a group raises it), probabilities as they are.
struct LoadMass {
  float m = -INFINITY;  // logits: the largest value seen (NaN ignored)
  float s = 0.f;
  template <bool kLogits>
  __device__ __forceinline__ void add(const float (&x)[4], float scale) {
    if constexpr (kLogits) {
      const float gm = fmaxf(fmaxf(x[0], x[1]), fmaxf(x[2], x[3]));
      if (gm > m) {
        s = s > 0.f ? __fmul_rn(s, ex2_approx(__fmul_rn(__fsub_rn(m, gm), scale))) : 0.f;
        m = gm;
      }
      s += (logit_weight(x[0], m, scale) + logit_weight(x[1], m, scale)) +
           (logit_weight(x[2], m, scale) + logit_weight(x[3], m, scale));
    } else {
      s += (x[0] + x[1]) + (x[2] + x[3]);  // probability keys: sanitized, >= 0
    }
  }
};

// warp_inclusive_scan, and in *excl the lane before's inclusive value (0 on lane 0): the lanes'
// intervals [excl, incl) then tile the warp's sum exactly, floats included.
template <class W>
__device__ __forceinline__ W warp_scan_incl(W x, W* excl) {
  const W incl = warp_inclusive_scan(x);
  const W before = __shfl_up_sync(0xffffffffu, incl, 1);
  *excl = (threadIdx.x & 31) == 0 ? W(0) : before;
  return incl;
}

// The element of thread `src`'s units (4 consecutive elements each, unit_pos(u) the first one's
// position, u < units) at which the running sum of weight(position) over the units in order first
// exceeds `residual`, searched by the whole warp (lane l takes units l, l + 32, ...). Returns the
// position on every lane; if rounding leaves the residual unreached (floats), the last element of
// positive weight; -1 if there is none.
template <class W, class UnitPos, class Weight>
__device__ __forceinline__ int warp_walk(int units, const UnitPos& unit_pos, const Weight& weight,
                                         W residual) {
  const int lane = threadIdx.x & 31;
  W base = W(0);
  int last = -1;
  for (int c = 0; c < units; c += 32) {
    const int u = c + lane;
    const int pos = u < units ? unit_pos(u) : -1;
    W w[4] = {W(0), W(0), W(0), W(0)};
    if (pos >= 0) {
#pragma unroll
      for (int j = 0; j < 4; ++j)
        w[j] = weight(pos + j);
    }
    const W lw = (w[0] + w[1]) + (w[2] + w[3]);
    W excl;
    const W incl = warp_scan_incl(lw, &excl);
    const unsigned hits = __ballot_sync(0xffffffffu, lw > W(0) && base + incl > residual);
    int found = -1, mine_last = -1;
    {
      W cum = base + excl;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (w[j] > W(0)) {
          cum += w[j];
          mine_last = pos + j;
          if (found < 0 && cum > residual) found = pos + j;
        }
      }
      if (found < 0) found = mine_last;
    }
    if (hits != 0u) return __shfl_sync(0xffffffffu, found, __ffs(hits) - 1);
    const unsigned some = __ballot_sync(0xffffffffu, mine_last >= 0);
    if (some != 0u) last = __shfl_sync(0xffffffffu, mine_last, 31 - __clz(some));
    base += __shfl_sync(0xffffffffu, incl, 31);
  }
  return last;
}

}  // namespace flashserve::sampling
