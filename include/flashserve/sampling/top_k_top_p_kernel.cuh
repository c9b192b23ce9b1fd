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
//      the k-th largest key.
//   4. top-p: the same over masses, from the level-0 histogram restricted to keys >= the top-k
//      threshold (top-k first) or over the whole row (joint), to the smallest set of largest keys
//      holding top_p of the mass.
//   5. min-p: keys >= min_p * v_max. The kept set is {key >= max of the three thresholds}.
//   6. sampling: inverse CDF over the kept masses (inverse_cdf.cuh); or renormalization: kept
//      values times 1 / their sum.
// A row whose values are all zero, negative, NaN or -inf (logits) has nothing to sample: its token
// is 0 and its renormalized row is all zero.
#pragma once

#include <cuda_runtime.h>

#include <cfloat>
#include <cmath>
#include <type_traits>

#include "flashserve/sampling/cluster_ops.cuh"
#include "flashserve/sampling/inverse_cdf.cuh"
#include "flashserve/sampling/launch.cuh"
#include "flashserve/sampling/load_slice.cuh"
#include "flashserve/sampling/params.h"
#include "flashserve/sampling/radix_select.cuh"
#include "flashserve/sampling/row_keys.cuh"

namespace flashserve::sampling {

struct FilterShared {
  SelectShared select;
  InverseCdfShared cdf;
  uint32_t l0_count[kBins];  // level-0 histogram, kept for the second selection
  unsigned long long l0_mass[kBins];
  float reduce[32];
  uint64_t reduce64[32];
  float max_slot, max_result;
  uint64_t sample_slot, total_slot, total_result;
};

// Shared-memory keys that still hold raw logits: the first visit converts them in place.
template <class KeyOf>
struct ConvertSmemKeys {
  uint4* keys;
  int len;
  KeyOf key_of;
  __device__ __forceinline__ void operator()(int v, uint32_t (&k)[4]) const {
    const uint4 raw = keys[v];
    const uint32_t r[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int j = 0; j < 4; ++j)
      k[j] = 4 * v + j < len ? key_of(__uint_as_float(r[j])) : 0u;
    keys[v] = make_uint4(k[0], k[1], k[2], k[3]);
  }
};

struct RowFilter {
  int top_k;
  float top_p;  // in [0, 1]
  float min_p;  // in [0, 1]
};

// Steps 2-5: the threshold of the kept set, {key >= threshold}. `first` is the load of the first
// sweep (it may convert the keys in place), `load` that of every later one.
template <class First, class Load>
__device__ uint32_t select_threshold(FilterShared& sh, const ChunkLayout& L, int vocab,
                                     bool top_k_first, uint32_t max_key, const RowFilter& f,
                                     const First& first, const Load& load) {
  const int mexp = mass_exponent(max_key);
  const auto mass_of = [=](uint32_t k) { return key_mass(k, mexp); };
  const bool need_k = f.top_k > 0 && f.top_k < vocab;
  const bool need_p = f.top_p < 1.f;
  const bool k_floor = need_k && need_p && top_k_first;
  uint32_t threshold = 0;
  if (need_k || need_p) {
    int pass = 0;
    histogram_pass(
        sh.select, pass, L, first, [=](uint32_t k) { return level0_bin(max_key, k); }, need_p,
        mass_of);
    uint64_t total_mass = 0;
    for (int i = threadIdx.x; i < kBins; i += blockDim.x) {
      sh.l0_count[i] = sh.select.total_count[i];
      sh.l0_mass[i] = sh.select.total_mass[i];
      total_mass += sh.select.total_mass[i];
    }
    total_mass = block_reduce(total_mass, sh.reduce64, SumOp(), uint64_t{0});  // has a barrier
    Crossing ck{};
    SelectResult rk{0, 0, 0};
    if (need_k) {
      ck = find_crossing(sh.select, sh.l0_count, sh.l0_mass, false, f.top_k);
      RadixRange r = level0_range(max_key, ck.bin);
      r.target = f.top_k;
      descend(r, ck, false, sh.l0_count[ck.bin], sh.l0_mass[ck.bin]);
      rk = radix_refine(sh.select, pass, L, load, mass_of, false, k_floor, r);
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
      const double want = ceil(static_cast<double>(f.top_p) * static_cast<double>(base));
      uint64_t target = want >= static_cast<double>(base) ? base : static_cast<uint64_t>(want);
      if (target < 1) target = 1;
      const Crossing cp = find_crossing(sh.select, sh.l0_count, sh.l0_mass, true, target);
      RadixRange r = level0_range(max_key, cp.bin);
      r.target = target;
      descend(r, cp, true, sh.l0_count[cp.bin], sh.l0_mass[cp.bin]);
      if (k_floor && cp.bin == ck.bin && r.lo < rk.threshold) r.lo = rk.threshold;
      const SelectResult rp = radix_refine(sh.select, pass, L, load, mass_of, true, true, r);
      threshold = rp.threshold > threshold ? rp.threshold : threshold;
    }
  } else if constexpr (!std::is_same_v<First, Load>) {
    for_each_group(L, first, [](int, const uint32_t(&)[4], bool) {});
    __syncthreads();
  }
  if (f.min_p > 0.f) {
    const uint32_t m = __float_as_uint(f.min_p * __uint_as_float(max_key));
    threshold = m > threshold ? m : threshold;
  }
  return threshold;
}

// Step 6 for the kept set {key >= threshold}.
template <class T, class Load>
__device__ void emit_row(const FilterParams<T>& p, FilterShared& sh, const ChunkLayout& L,
                         int64_t row, uint32_t max_key, uint32_t threshold, const Load& load) {
  const int mexp = mass_exponent(max_key);
  const auto weight = [=](uint32_t k) -> uint64_t {
    return k >= threshold ? key_mass(k, mexp) : uint64_t{0};
  };
  if (p.out_ids != nullptr) {
    const auto write_id = [&](int64_t id) {
      if (p.ids_int64) {
        static_cast<int64_t*>(p.out_ids)[row] = id;
      } else {
        static_cast<int32_t*>(p.out_ids)[row] = static_cast<int32_t>(id);
      }
    };
    const uint64_t u =
        philox_u64(seed_value(p.seed), offset_value(p.seed), static_cast<uint32_t>(row), 0u);
    const uint64_t total =
        cluster_inverse_cdf(L, load, weight, u, sh.cdf, &sh.sample_slot, write_id);
    if (total == 0 && cg::this_cluster().block_rank() == 0 && threadIdx.x == 0) write_id(0);
    return;
  }
  uint64_t mine = 0;
  for_each_group(L, load, [&](int, const uint32_t(&k)[4], bool active) {
    if (!active) return;
#pragma unroll
    for (int j = 0; j < 4; ++j)
      mine += weight(k[j]);
  });
  mine = block_reduce(mine, sh.reduce64, SumOp(), uint64_t{0});
  const uint64_t total =
      cluster_reduce(mine, &sh.total_slot, &sh.total_result, SumOp(), uint64_t{0});
  // v / sum(v) = v * 2^(157 - mexp) / total (masses are v * 2^(30 - (mexp - 127))); in double,
  // which neither overflows nor underflows for any float maximum.
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

template <class T, bool kLogits, bool kResident>
__global__ void __launch_bounds__(kSamplingThreads) filter_kernel(const FilterParams<T> p) {
  extern __shared__ uint4 smem_keys[];
  __shared__ FilterShared sh;
  cg::cluster_group cluster = cg::this_cluster();
  const int64_t row = blockIdx.x / cluster.num_blocks();
  const ChunkLayout L = make_chunk_layout(p.vocab, p.chunk, cluster.block_rank());
  const T* in = p.input + row * p.input_stride + L.begin;
  clear_histograms(sh.select);

  float local_max = -INFINITY;
  load_slice(in, L.len, p.vec_loads, kResident ? reinterpret_cast<uint32_t*>(smem_keys) : nullptr,
             4 * L.nvec, [&](float x) -> uint32_t {
               if constexpr (kLogits) {
                 local_max = fmaxf(local_max, x);
                 return __float_as_uint(x);
               } else {
                 const uint32_t k = prob_key(x);
                 local_max = fmaxf(local_max, __uint_as_float(k));
                 return k;
               }
             });
  const float block_max = block_reduce(local_max, sh.reduce, MaxOp(), -INFINITY);
  const float row_max = cluster_reduce(block_max, &sh.max_slot, &sh.max_result, MaxOp(), -INFINITY);

  RowFilter f;
  f.top_k = p.top_k.get(row);
  const float top_p = p.top_p.get(row), min_p = p.min_p.get(row);
  f.top_p = top_p < 1.f ? (top_p > 0.f ? top_p : 0.f) : 1.f;  // NaN: 1
  f.min_p = min_p > 0.f ? (min_p < 1.f ? min_p : 1.f) : 0.f;  // NaN: 0

  uint32_t max_key;
  LogitKey logit_key;
  if constexpr (kLogits) {
    const float t = p.temperature.get(row);
    const float temp = t == t ? t : 1.f;
    logit_key.max = row_max;
    logit_key.scale = 1.4426950408889634f / temp;
    logit_key.greedy = row_max > -INFINITY &&
                       (!(temp > 0.f) || !(logit_key.scale <= FLT_MAX) || row_max == INFINITY);
    max_key = row_max > -INFINITY ? kOneBits : 0u;
  } else {
    max_key = row_max > 0.f ? __float_as_uint(row_max) : 0u;
  }

  if (max_key != 0u) {
    if constexpr (kResident) {
      const SmemKeys load{smem_keys};
      uint32_t threshold;
      if constexpr (kLogits) {
        const ConvertSmemKeys<LogitKey> convert{smem_keys, L.len, logit_key};
        threshold = select_threshold(sh, L, p.vocab, p.top_k_first, max_key, f, convert, load);
      } else {
        threshold = select_threshold(sh, L, p.vocab, p.top_k_first, max_key, f, load, load);
      }
      emit_row(p, sh, L, row, max_key, threshold, load);
    } else {
      if constexpr (kLogits) {
        const GlobalKeys<T, LogitKey> load{in, L.len, logit_key};
        const uint32_t threshold =
            select_threshold(sh, L, p.vocab, p.top_k_first, max_key, f, load, load);
        emit_row(p, sh, L, row, max_key, threshold, load);
      } else {
        const GlobalKeys<T, ProbKey> load{in, L.len, ProbKey{}};
        const uint32_t threshold =
            select_threshold(sh, L, p.vocab, p.top_k_first, max_key, f, load, load);
        emit_row(p, sh, L, row, max_key, threshold, load);
      }
    }
  } else if (p.out_ids != nullptr) {
    if (cluster.block_rank() == 0 && threadIdx.x == 0) {
      if (p.ids_int64) {
        static_cast<int64_t*>(p.out_ids)[row] = 0;
      } else {
        static_cast<int32_t*>(p.out_ids)[row] = 0;
      }
    }
  } else {
    float* out = p.renorm_out + row * p.renorm_stride + L.begin;
    for (int i = threadIdx.x; i < L.len; i += blockDim.x)
      out[i] = 0.f;
  }
  cluster.sync();  // no CTA leaves while another may still read its shared memory
}

template <class T, bool kLogits>
cudaError_t plan_filter(int64_t rows, int64_t vocab, const DeviceLimits& dev, SamplingTile* tile) {
  return plan_tile(filter_kernel<T, kLogits, true>, rows, vocab, dev, tile);
}

template <class T, bool kLogits>
cudaError_t launch_filter(const FilterParams<T>& p, const SamplingTile& tile,
                          const DeviceLimits& dev, cudaStream_t stream) {
  if (tile.resident) {
    return launch_clusters(filter_kernel<T, kLogits, true>, p, p.rows, tile, dev, stream);
  }
  return launch_clusters(filter_kernel<T, kLogits, false>, p, p.rows, tile, dev, stream);
}

}  // namespace flashserve::sampling
