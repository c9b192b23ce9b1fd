// Online softmax over wgmma accumulator fragments, and the layout views it needs.
//
// A warpgroup's 64 x N fp32 accumulator gives each thread values ((2, 2, N / 8), M, N') laid out
// as (column pair, row half, 8-column chunk): a thread holds 2 rows (lane / 4 and + 8 within its
// warp's 16) and the 4 threads of a quad share those rows. Row statistics therefore reduce over
// a quad with two shuffles. Maxima are kept in log2 units (logit x scale_log2) so that every
// probability is one FFMA + EX2; a row that has seen only -inf keeps max -inf and uses 0 as its
// base, so it never computes -inf - -inf.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cute/tensor.hpp>
#include <type_traits>

namespace flashserve::attention::sm90 {

// ((2, 2, V), M, N) -> ((2, M), (2, V, N)): rows x columns of one thread's fragment.
template <class Layout>
__device__ __forceinline__ constexpr auto acc_rowcol(Layout l) {
  using namespace cute;
  return make_layout(make_layout(get<0, 1>(l), get<1>(l)),
                     make_layout(get<0, 0>(l), get<0, 2>(l), get<2>(l)));
}

// ((2, 2, V), M, N) -> ((2, 2, 2), M, (V / 2, N)): the S accumulator read as the register A
// operand of the next wgmma (k = 16 columns per block: two 8-column chunks).
template <class Layout>
__device__ __forceinline__ constexpr auto acc_as_a_operand(Layout l) {
  using namespace cute;
  auto v = logical_divide(get<0>(l), Shape<Underscore, Underscore, _2>{});  // (2, 2, (2, V / 2))
  return make_layout(make_layout(get<0>(v), get<1>(v), get<2, 0>(v)), get<1>(l),
                     coalesce(make_layout(get<2, 1>(v), get<2>(l))));
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// dst = src (fp32 fragment) in 16 bits (Element: cutlass::bfloat16_t or half_t), two values per
// conversion instruction (cvt.rn.bf16x2.f32 / cvt.rn.f16x2.f32).
template <class Element, class TSrc, class TDst>
__device__ __forceinline__ void convert_pairs(const TSrc& src, TDst& dst) {
  using Pair =
      std::conditional_t<std::is_same_v<Element, cutlass::bfloat16_t>, __nv_bfloat162, __half2>;
  Pair* out = reinterpret_cast<Pair*>(dst.data());
#pragma unroll
  for (int i = 0; i < cute::size(src) / 2; ++i) {
    if constexpr (std::is_same_v<Pair, __nv_bfloat162>)
      out[i] = __floats2bfloat162_rn(src(2 * i), src(2 * i + 1));
    else
      out[i] = __floats2half2_rn(src(2 * i), src(2 * i + 1));
  }
}

// 2^x on the SFU without the denormal fix-ups of exp2f (x = -inf gives +0, as needed).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// log2 units: how far a row's maximum may grow before the reference maximum of its exponentials
// is moved (and O rescaled) when rescaling is lazy. 8: P <= 256, exact in bf16 / fp16 like any
// other value.
constexpr float kLazyRescale = 8.f;

// kLazy: lazy rescaling (step() keeps the reference maximum while the row's maximum grows by at
// most kLazyRescale, and rescale() skips O in warps where no row moved it): most blocks of a long
// row skip the multiply of every O element and its place between the P V wait and the next GEMMs.
// Trace-tool A/B on the H100 (spill-free kernels): head_dim 64 -3.5% (16k) / -4% (causal 4k),
// 128 -1.6% (16k) / -3% (512), 256 -5% (16k) / -6% (causal 4k).
template <int kRows, bool kLazy = false>
struct OnlineSoftmax {
  float row_max[kRows];  // log2 units
  float row_sum[kRows];  // this thread's columns only until finalize()
  float scale_log2;

  __device__ explicit OnlineSoftmax(float scale_log2_) : scale_log2(scale_log2_) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      row_max[r] = -INFINITY;
      row_sum[r] = 0.f;
    }
  }

  // s (rows x cols, fp32) becomes exp2(s * scale - max); corr[r] is the factor by which what
  // was accumulated for row r before this block must be rescaled (see rescale()).
  template <bool kFirst, class TS>
  __device__ __forceinline__ void step(TS& s, float (&corr)[kRows]) {
    using namespace cute;
    static_assert(decltype(size<0>(s))::value == kRows);
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      float m = -INFINITY;
#pragma unroll
      for (int c = 0; c < size<1>(s); ++c)
        m = fmaxf(m, s(r, c));
      m = quad_max(m) * scale_log2;
      float m_new = fmaxf(row_max[r], m);
      // Lazy: a new maximum at most kLazyRescale above the reference one keeps the reference
      // (corr 1, and rescale() skips O), so P stays below 2^kLazyRescale. After the first blocks
      // of a long row the maximum rarely grows by that much, so most blocks skip the multiply of
      // every O element. (-inf - -inf is NaN: the comparison fails, m_new stays.)
      bool keep = false;
      if constexpr (kLazy && !kFirst) {
        keep = m_new - row_max[r] <= kLazyRescale;
        if (keep) m_new = row_max[r];
      }
      const float base = m_new == -INFINITY ? 0.f : m_new;
      float sum = 0.f;
#pragma unroll
      for (int c = 0; c < size<1>(s); ++c) {
        s(r, c) = fast_exp2(fmaf(s(r, c), scale_log2, -base));
        sum += s(r, c);
      }
      if constexpr (kFirst) {
        corr[r] = 1.f;
        row_sum[r] = sum;
      } else {
        corr[r] = keep ? 1.f : fast_exp2(row_max[r] - base);
        row_sum[r] = fmaf(row_sum[r], corr[r], sum);
      }
      row_max[r] = m_new;
    }
  }

  // Rescales O by corr; when lazy, skipped by every warp whose rows all kept their reference
  // maximum (the warp votes, so its lanes do not diverge).
  template <class TO>
  __device__ __forceinline__ void rescale(TO& o, const float (&corr)[kRows]) {
    using namespace cute;
    if constexpr (kLazy) {
      bool need = false;
#pragma unroll
      for (int r = 0; r < kRows; ++r)
        need = need || corr[r] != 1.f;
      if (!__any_sync(0xffffffffu, need)) return;
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int c = 0; c < size<1>(o); ++c)
        o(r, c) *= corr[r];
    }
  }

  // Divides o by the row sums (a sink adds exp(sink) to them) and returns the natural-log LSE of
  // each row in lse[]; a row that saw nothing gives 0 and -inf.
  template <class TO>
  __device__ __forceinline__ void finalize(TO& o, const float* sink_logit, float (&lse)[kRows]) {
    using namespace cute;
    constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      float sum = quad_sum(row_sum[r]);
      float m = row_max[r], corr = 1.f;
      if (sink_logit != nullptr) {
        const float sink = *sink_logit * kLog2e;
        const float m_fin = fmaxf(m, sink);
        corr = exp2f(m - m_fin);
        sum = fmaf(sum, corr, exp2f(sink - m_fin));
        m = m_fin;
      }
      const float scale = sum > 0.f ? corr / sum : 0.f;
#pragma unroll
      for (int c = 0; c < size<1>(o); ++c)
        o(r, c) *= scale;
      lse[r] = sum > 0.f ? (m + log2f(sum)) * kLn2 : -INFINITY;
    }
  }
};

}  // namespace flashserve::attention::sm90
