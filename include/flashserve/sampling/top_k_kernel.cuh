// Exact top-k of float rows (values and indices) and the top-k mask of logits: one cluster per
// row, one read of the row, radix select (radix_select.cuh) over order-preserving keys of the raw
// values, starting from the row's [min, max] key range.
//
// top_k returns exactly k elements per row in ascending index order; of the elements tied with the
// k-th largest value, the lowest indices are taken. top_k_mask_logits keeps every element >= the
// k-th largest value (ties included, as engines' torch code does) and writes -inf elsewhere.
// NaN ranks below -inf.
#pragma once

#include <cuda_runtime.h>

#include <cmath>

#include "flashserve/sampling/cluster_ops.cuh"
#include "flashserve/sampling/launch.cuh"
#include "flashserve/sampling/load_slice.cuh"
#include "flashserve/sampling/params.h"
#include "flashserve/sampling/radix_select.cuh"
#include "flashserve/sampling/row_keys.cuh"

namespace flashserve::sampling {

struct TopKShared {
  SelectShared select;
  uint32_t reduce[32];
  uint32_t min_slot, min_result, max_slot, max_result;
  uint64_t scan[33];
  uint64_t count_slot;
  uint64_t prefix[2];
};

// Writes the k selected elements of the row in ascending index order: every key > t, and the
// first `needed` keys == t. Counts of (key > t, key == t) travel packed in one 64-bit value
// (high, low word): each is at most 2^31, so packed sums never carry.
template <class T, class Load>
__device__ void write_top_k(const TopKParams<T>& p, TopKShared& sh, const ChunkLayout& L,
                            int64_t row, int k, uint32_t t, const Load& load) {
  const int lane = threadIdx.x & 31;
  uint64_t mine = 0;
  for_each_group(L, load, [&](int, const uint32_t(&keys)[4], bool active) {
    if (!active) return;
#pragma unroll
    for (int j = 0; j < 4; ++j)
      mine += keys[j] > t ? (uint64_t{1} << 32) : (keys[j] == t ? 1u : 0u);
  });
  // Warps own contiguous runs of the slice: scan warp totals (held by lane 0) in warp order.
  const uint64_t warp_total = warp_reduce(mine, SumOp());
  uint64_t cta_total = 0;
  const uint64_t warp_excl = __shfl_sync(
      0xffffffffu, block_exclusive_scan(lane == 0 ? warp_total : 0, sh.scan, cta_total), 0);
  const ClusterPrefix cta = cluster_exclusive_scan(cta_total, &sh.count_slot, sh.prefix);
  const uint64_t before = cta.before + warp_excl;
  const uint64_t needed = static_cast<uint64_t>(k) - (cta.total >> 32);
  const uint64_t eq_before = before & 0xffffffffu;
  uint64_t run_eq = eq_before;
  uint64_t run_out = (before >> 32) + (eq_before < needed ? eq_before : needed);
  T* values = p.values + row * p.values_stride;
  for_each_group(L, load, [&](int first, const uint32_t(&keys)[4], bool) {
    int n_eq = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j)
      n_eq += keys[j] == t ? 1 : 0;
    const uint64_t eq_incl = warp_inclusive_scan(static_cast<uint64_t>(n_eq));
    uint64_t rank = run_eq + eq_incl - n_eq;
    bool sel[4];
    int n_sel = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      sel[j] = keys[j] > t;
      if (keys[j] == t) sel[j] = rank++ < needed;
      n_sel += sel[j] ? 1 : 0;
    }
    const uint64_t sel_incl = warp_inclusive_scan(static_cast<uint64_t>(n_sel));
    uint64_t pos = run_out + sel_incl - n_sel;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (!sel[j]) continue;
      const int64_t index = L.begin + first + j;
      values[pos] = from_float<T>(order_key_value(keys[j]));
      if (p.indices_int64) {
        static_cast<int64_t*>(p.indices)[row * p.indices_stride + pos] = index;
      } else {
        static_cast<int32_t*>(p.indices)[row * p.indices_stride + pos] =
            static_cast<int32_t>(index);
      }
      ++pos;
    }
    run_eq += __shfl_sync(0xffffffffu, eq_incl, 31);
    run_out += __shfl_sync(0xffffffffu, sel_incl, 31);
  });
}

template <class T, class Load>
__device__ void top_k_row(const TopKParams<T>& p, TopKShared& sh, const ChunkLayout& L, int64_t row,
                          uint32_t kmin, uint32_t kmax, const Load& load) {
  const int k = p.top_k.get(row);
  uint32_t t = kmin;  // every element of the row
  if (k > 0 && k < p.vocab) {
    RadixRange r;
    r.lo = kmin;
    r.hi = kmax;
    r.count = static_cast<uint64_t>(p.vocab);
    r.target = static_cast<uint64_t>(k);
    int pass = 0;
    const auto no_mass = [](uint32_t) { return 0u; };
    t = radix_refine(sh.select, pass, L, load, no_mass, false, false, r).threshold;
  }
  if (p.masked != nullptr) {
    T* out = p.masked + row * p.masked_stride + L.begin;
    for_each_group(L, load, [&](int first, const uint32_t(&keys)[4], bool active) {
      if (!active) return;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (first + j < L.len) {
          out[first + j] = from_float<T>(keys[j] >= t ? order_key_value(keys[j]) : -INFINITY);
        }
      }
    });
    return;
  }
  write_top_k(p, sh, L, row, k < p.vocab ? k : p.vocab, t, load);
}

template <class T, bool kResident>
__global__ void __launch_bounds__(kSamplingThreads) top_k_kernel(const TopKParams<T> p) {
  extern __shared__ uint4 smem_keys[];
  __shared__ TopKShared sh;
  cg::cluster_group cluster = cg::this_cluster();
  const int64_t row = blockIdx.x / cluster.num_blocks();
  const ChunkLayout L = make_chunk_layout(p.vocab, p.chunk, cluster.block_rank());
  const T* in = p.input + row * p.input_stride + L.begin;
  clear_histograms(sh.select);
  uint32_t kmin = 0xffffffffu, kmax = 0u;
  load_slice(in, L.len, p.vec_loads, kResident ? reinterpret_cast<uint32_t*>(smem_keys) : nullptr,
             4 * L.nvec, [&](float x) -> uint32_t {
               const uint32_t k = order_key(x);
               kmin = k < kmin ? k : kmin;
               kmax = k > kmax ? k : kmax;
               return k;
             });
  kmin = block_reduce(kmin, sh.reduce, MinOp(), 0xffffffffu);
  kmax = block_reduce(kmax, sh.reduce, MaxOp(), 0u);
  kmin = cluster_reduce(kmin, &sh.min_slot, &sh.min_result, MinOp(), 0xffffffffu);
  kmax = cluster_reduce(kmax, &sh.max_slot, &sh.max_result, MaxOp(), 0u);
  if constexpr (kResident) {
    top_k_row(p, sh, L, row, kmin, kmax, SmemKeys{smem_keys});
  } else {
    top_k_row(p, sh, L, row, kmin, kmax, GlobalKeys<T, OrderKey>{in, L.len, OrderKey{}});
  }
  cluster.sync();  // no CTA leaves while another may still read its shared memory
}

template <class T>
cudaError_t plan_top_k(int64_t rows, int64_t vocab, const DeviceLimits& dev, SamplingTile* tile) {
  return plan_tile(top_k_kernel<T, true>, rows, vocab, dev, tile);
}

template <class T>
cudaError_t launch_top_k(const TopKParams<T>& p, const SamplingTile& tile, const DeviceLimits& dev,
                         cudaStream_t stream) {
  if (tile.resident) return launch_clusters(top_k_kernel<T, true>, p, p.rows, tile, dev, stream);
  return launch_clusters(top_k_kernel<T, false>, p, p.rows, tile, dev, stream);
}

}  // namespace flashserve::sampling
