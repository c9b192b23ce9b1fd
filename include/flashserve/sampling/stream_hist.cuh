// The streaming rejection draw: rows read once from global memory, nothing of them kept on chip.
//
// Large batches do not fit in shared memory at once (64 x 128256 fp32 is 32.8 MB, the SMs hold
// ~30 MB), so the resident layout runs them in waves and the memory idles while a wave filters.
// Streaming keeps every row's CTAs resident at once: the load pass reads the row, accumulates the
// threads' masses and draws round 1's candidate as the resident draw does (the holding thread's
// elements read again, from L2), and builds one count histogram per warp of its elements by
// value: 32 bins per unit of log2 weight (logits: round(x * log2(e) / T * 32); probabilities: the
// exponent and 5 mantissa bits of the key), 1024 bins below a warp anchor that moves up (the
// counts shifted) when a larger value arrives, the last bin open-ended.
//
// Top-p acceptance needs the row's mass above the candidate's key. From the counts, each warp
// bounds it: bins two or more above the candidate's are surely above, bins within one are
// maybe above, each bin's keys lie between known powers of two; with the load's float total the
// bounds decide most rounds exactly (the same decision as the integer masses of key_math.h, whose
// rounding the bounds' slack covers). A round whose bounds straddle the target, or that rejects
// (its next candidate is drawn above the rejected key), needs the row again: with a resume launch
// (FilterParams::defer, launch_filter) the row is left to the resident kernel, which goes on from
// the same candidate; without one (rows too long for a resident tile) the streaming kernel sweeps
// the row again from global memory. Rows whose values leave the binning's range (|x / T| beyond
// ~2 x 10^4) never decide by the bounds.
#pragma once

#include <cuda_runtime.h>

#include <cfloat>
#include <climits>
#include <cstdint>

#include "flashserve/core/types.cuh"
#include "flashserve/core/vec.cuh"
#include "flashserve/sampling/cluster_ops.cuh"
#include "flashserve/sampling/row_keys.cuh"
#include "flashserve/sampling/tile_policy.h"

namespace flashserve::sampling {

constexpr int kHistPerLog2 = 32;       // bins per unit of log2 weight (logits)
constexpr int kLogitHeadroom = 64;     // bins above the largest value when a warp re-anchors
constexpr int kProbHeadroom = 32;      // (probabilities: one octave)
constexpr int kNoAnchor = INT_MIN;     // a warp that has seen no element yet
constexpr float kBinClamp = 0x1p21f;   // |x * scale * 32| is clamped here before rounding
constexpr int kAnchorLimit = 1 << 20;  // anchors beyond +-this: the bounds are not used

// The integer bin coordinate of a logit: round(x * sr) (sr = scale * kHistPerLog2), clamped to
// +-2^21 (NaN and -inf to the bottom), by the float magic-number rounding.
__device__ __forceinline__ int logit_bin_n(float x, float sr) {
  const float u = fminf(fmaxf(__fmul_rn(x, sr), -kBinClamp), kBinClamp);
  return static_cast<int>(__float_as_uint(__fadd_rn(u, 0x1.8p23f)) - 0x4b400000u);
}

// A probability key's bin coordinate: its exponent and 5 mantissa bits (keys are >= 0).
__device__ __forceinline__ int prob_bin_n(uint32_t key) {
  return static_cast<int>(key >> 18);
}

// One warp's histogram state, warp-uniform: the anchor (bin 0's coordinate) and whether the
// bounds may use it.
struct WarpHist {
  uint32_t* bins;  // this warp's kHistBins counts
  int anchor = kNoAnchor;
  bool ok = true;

  __device__ __forceinline__ void clear() {
    const int lane = threadIdx.x & 31;
    for (int b = lane; b < kHistBins; b += 32)
      bins[b] = 0u;
    __syncwarp();
  }

  // Every lane: `top` is its largest coordinate this step (INT_MIN: none). Moves the anchor to
  // the warp's largest + headroom when some lane's exceeds it, the counts with it.
  __device__ __forceinline__ void fit(int top, int headroom) {
    if (!__any_sync(0xffffffffu, top > anchor)) return;
    const int lane = threadIdx.x & 31;
    const int m = warp_reduce(top, MaxOp());
    const int next = m + headroom;
    if (m >= kAnchorLimit || m <= -kAnchorLimit) ok = false;
    if (anchor != kNoAnchor) {
      const int d = next - anchor;  // > 0
      // The open-ended last bin takes every bin that falls off the bottom.
      uint32_t tail = 0u;
      for (int b = kHistBins - 1 - d + lane; b < kHistBins; b += 32)
        if (b >= 0) tail += bins[b];
      tail = warp_reduce(tail, SumOp());
      for (int top_bin = kHistBins - 2; top_bin >= 0; top_bin -= 32) {
        const int b = top_bin - lane;
        const uint32_t v = b >= 0 && b - d >= 0 ? bins[b - d] : 0u;
        __syncwarp();
        if (b >= 0) bins[b] = v;
        __syncwarp();
      }
      if (lane == 0) bins[kHistBins - 1] = tail;
      __syncwarp();
    }
    anchor = next;
  }

  __device__ __forceinline__ void add(int n) {
    const uint32_t b = static_cast<uint32_t>(anchor - n);
    atomicAdd(&bins[b < kHistBins - 1 ? b : kHistBins - 1], 1u);
  }
};

// The load pass of a streamed slice: on_group(x[4], active) for the thread's 4-element groups in
// load_groups' order (vectors t, t + blockDim, ..., then tail groups), every lane of every warp
// calling it the same number of times (inactive calls get `pad_value`), so that the callback
// may use warp collectives.
template <class T, class OnGroup>
__device__ __forceinline__ void stream_groups(const T* row, int len, bool vec, float pad_value,
                                              OnGroup&& on_group) {
  constexpr int kV = 16 / static_cast<int>(sizeof(T));
  constexpr int kInFlight = 4;
  using VecT = Vec<T, kV>;
  const int bd = static_cast<int>(blockDim.x), t = static_cast<int>(threadIdx.x);
  int done = 0;
  if (vec) {
    const int nv = len / kV;
    const int rounds = (nv + bd * kInFlight - 1) / (bd * kInFlight);
    for (int r = 0; r < rounds; ++r) {
      VecT v[kInFlight];
#pragma unroll
      for (int b = 0; b < kInFlight; ++b) {
        const int i = t + (r * kInFlight + b) * bd;
        if (i < nv) v[b] = VecT::load(row + static_cast<int64_t>(i) * kV);
      }
#pragma unroll
      for (int b = 0; b < kInFlight; ++b) {
        const int i = t + (r * kInFlight + b) * bd;
        const bool active = i < nv;
        float f[kV];
        if (active) {
          v[b].to_floats(f);
        } else {
#pragma unroll
          for (int j = 0; j < kV; ++j)
            f[j] = pad_value;
        }
#pragma unroll
        for (int g = 0; g < kV / 4; ++g) {
          const float fg[4] = {f[4 * g], f[4 * g + 1], f[4 * g + 2], f[4 * g + 3]};
          on_group(fg, active);
        }
      }
    }
    done = nv * kV;
  }
  const int groups = (len + 3) / 4, first = done / 4;
  const int rounds = (groups - first + bd - 1) / bd;
  for (int r = 0; r < rounds; ++r) {
    const int g = first + t + r * bd;
    const bool active = g < groups;
    float fg[4];
#pragma unroll
    for (int j = 0; j < 4; ++j)
      fg[j] = active && 4 * g + j < len ? to_float(row[4 * g + j]) : pad_value;
    on_group(fg, active);
  }
}

// The warp (of the load pass) that read element `pos` of the slice (load_groups' assignment).
__device__ __forceinline__ int load_warp_of(int pos, int len, bool vec, int elems_per_vec) {
  const int bd = static_cast<int>(blockDim.x);
  const int nv = vec ? len / elems_per_vec : 0;
  int t;
  if (pos < nv * elems_per_vec) {
    t = (pos / elems_per_vec) % bd;
  } else {
    t = (pos / 4 - nv * elems_per_vec / 4) % bd;
  }
  return t >> 5;
}

// Bounds on this warp's key mass above a candidate, in key units (the row maximum's key is 1 for
// logits; probabilities as they are): [lo, hi] holds the exact sum of the keys > the candidate's
// over the warp's elements, less the candidate itself when `exclude_bin` >= 0 (its bin).
struct MassBounds {
  float lo = 0.f, hi = 0.f;
};

// Logits: bin b holds coordinates n = anchor - b (the last: n <= anchor - kHistBins + 1), i.e.
// x * scale in [(n - 1/2) / 32, (n + 1/2) / 32] up to rounding, keys exp2(x * scale - ms)
// (ms = max * scale), within `eps` (log2 units) of the exact bounds. Elements of coordinate
// >= nc + 2 are surely above the candidate (keys differ by >= 2^(1/32)), within 1 maybe.
__device__ __forceinline__ MassBounds logit_warp_bounds(const WarpHist& h, int nc, float ms,
                                                        int exclude_bin) {
  MassBounds r;
  if (h.anchor == kNoAnchor) return r;
  const int lane = threadIdx.x & 31;
  const int a = h.anchor;
  const float eps =
      (fabsf(static_cast<float>(a)) * (1.f / kHistPerLog2) + 64.f + fabsf(ms)) * 0x1p-20f +
      0x1p-16f;
  const int b_sure = a - nc - 2;   // bins <= this: surely above
  const int b_maybe = a - nc + 1;  // bins <= this: maybe above
  const int last = b_maybe < kHistBins - 1 ? b_maybe : kHistBins - 1;
  if (last < 0) return r;
  // Lane l takes bins l, l + 32, ...: 32 bins (one unit of log2) apart, so each step halves.
  const float n0 = static_cast<float>(a - lane);
  float khi = ex2_approx((n0 + 0.5f) * (1.f / kHistPerLog2) - ms + eps);
  float klo = ex2_approx((n0 - 0.5f) * (1.f / kHistPerLog2) - ms - eps);
  for (int b = lane; b <= last; b += 32) {
    const uint32_t cnt = h.bins[b];
    const float c = static_cast<float>(b == exclude_bin && cnt > 0u ? cnt - 1u : cnt);
    r.hi += c * fminf(khi, 1.f);
    if (b <= b_sure && b < kHistBins - 1) r.lo += c * fminf(klo, 1.f);
    khi *= 0.5f;
    klo *= 0.5f;
  }
  r.lo = warp_reduce(r.lo, SumOp());
  r.hi = warp_reduce(r.hi, SumOp());
  return r;
}

// Probabilities: bin b holds keys with (key >> 18) == anchor - b (the last: <=), exactly
// [n << 18, (n << 18) | 0x3ffff]; coordinates > the candidate's are surely above, equal maybe.
__device__ __forceinline__ MassBounds prob_warp_bounds(const WarpHist& h, int nc, int exclude_bin) {
  MassBounds r;
  if (h.anchor == kNoAnchor) return r;
  const int lane = threadIdx.x & 31;
  const int a = h.anchor;
  const int b_sure = a - nc - 1;
  const int b_maybe = a - nc;
  const int last = b_maybe < kHistBins - 1 ? b_maybe : kHistBins - 1;
  for (int b = lane; b <= last; b += 32) {
    uint32_t cnt = h.bins[b];
    if (b == exclude_bin && cnt > 0u) --cnt;
    if (cnt == 0u) continue;
    const int n = a - b;
    const float c = static_cast<float>(cnt);
    r.hi += c * __uint_as_float((static_cast<uint32_t>(n) << 18) | 0x3ffffu);
    if (b <= b_sure && b < kHistBins - 1)
      r.lo += c * __uint_as_float(static_cast<uint32_t>(n) << 18);
  }
  r.lo = warp_reduce(r.lo, SumOp());
  r.hi = warp_reduce(r.hi, SumOp());
  return r;
}

// The raw keys of a streamed slice as the resident layout keeps them in shared memory: logits as
// float bits (padding -inf), probabilities as prob_key (padding 0). Groups by vector loads when
// the slice is aligned.
template <class T, bool kLogits>
struct GlobalRaw {
  const T* row;  // this CTA's slice
  int len;
  bool vec;
  __device__ __forceinline__ static uint32_t raw(float x) {
    if constexpr (kLogits) {
      return __float_as_uint(x);
    } else {
      return prob_key(x);
    }
  }
  static constexpr uint32_t kPad = kLogits ? 0xff800000u : 0u;
  __device__ __forceinline__ uint32_t operator()(int e) const {
    return e < len ? raw(to_float(row[e])) : kPad;
  }
  __device__ __forceinline__ void operator()(int v, uint32_t (&k)[4]) const {
    const int e = 4 * v;
    if (vec && e + 3 < len) {
      const Vec<T, 4> q = Vec<T, 4>::load(row + e);
      float f[4];
      q.to_floats(f);
#pragma unroll
      for (int j = 0; j < 4; ++j)
        k[j] = raw(f[j]);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j)
        k[j] = (*this)(e + j);
    }
  }
};

// for_each_group with the loads of kAhead iterations issued before any is used (global memory:
// one round trip per kAhead iterations, not per iteration).
template <int kAhead, class Load, class G>
__device__ __forceinline__ void for_each_group_ahead(const ChunkLayout& L, const Load& load,
                                                     G&& g) {
  const int lane = threadIdx.x & 31;
  for (int it0 = 0; it0 < L.iters; it0 += kAhead) {
    uint32_t k[kAhead][4];
#pragma unroll
    for (int u = 0; u < kAhead; ++u) {
      const int v = L.vec_begin + (it0 + u) * 32 + lane;
      k[u][0] = k[u][1] = k[u][2] = k[u][3] = 0u;
      if (it0 + u < L.iters && v < L.vec_end) load(v, k[u]);
    }
#pragma unroll
    for (int u = 0; u < kAhead; ++u) {
      if (it0 + u < L.iters) {
        const int v = L.vec_begin + (it0 + u) * 32 + lane;
        g(4 * v, k[u], v < L.vec_end);
      }
    }
  }
}

}  // namespace flashserve::sampling
