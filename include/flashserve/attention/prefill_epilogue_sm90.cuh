// Prefill epilogue on Hopper: each consumer warpgroup converts its 64 x head_dim output rows to
// 16 bits, stages them with stmatrix in its own rows of the output buffer (the whole width, or
// half of it per round where shared memory holds only half: head_dim 256, qk 192 / v 128), and
// stores the rows that belong to the request: all 64 with one TMA store per round that completes
// while the warpgroup goes on, or, for the last partial rows of a request, with 16-byte stores of
// only those rows (rows past the request's end would belong to the next request of a ragged
// batch). The LSE is written by the first thread of each quad, which holds the row's statistics.
#pragma once

#include <cute/tensor.hpp>

#include "flashserve/attention/prefill_mainloop_sm90.cuh"

namespace flashserve::attention::sm90 {

template <class Traits>
struct PrefillEpilogue {
  using Element = typename Traits::Element;
  static constexpr int kBlockM = Traits::kBlockM, kHeadDim = Traits::kHeadDimV;  // the output's
  static constexpr int kOCols = Traits::kOCols;  // columns per round through the buffer

  // Before a thread that issued TMA stores reuses their shared rows or exits: those stores have
  // read them.
  __device__ static void wait_store_reads() {
    if (threadIdx.x % 128 == 0) cute::tma_store_wait<0>();
  }

  // Split-KV (PrefillWorkItem::split): this warpgroup writes its rows of the piece's output
  // (normalized, fp32) and LSE to the piece's partial slot, then counts itself in the tile's
  // counter for these rows. The last piece to arrive merges every piece's partial in piece order
  // (so the bits do not depend on which piece is last) straight into the output and the LSE
  // (merge_to_output). The counter is reset for the next run. Writes: each thread its own elements;
  // the warpgroup's barrier orders them before the first thread's release (acq_rel at gpu scope),
  // whose acquire on the last piece orders the merge's loads (L2, ld.cg) after every piece's
  // writes.
  template <class TO>
  __device__ static void merge_split(const PrefillParams& p, const PrefillTileInfo& t,
                                     int num_splits, const TO& tOrO, const float (&lse)[2]) {
    using namespace cute;
    const int tid = threadIdx.x - 128;
    const int wg = tid / 128, wg_tid = tid % 128;
    typename Traits::MmaPV mma_pv;
    Tensor cO = make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{});
    Tensor tOcO = mma_pv.get_thread_slice(tid).partition_C(cO);
    Tensor rc = make_tensor(tOcO.data(), acc_rowcol(tOcO.layout()));
    Tensor o = make_tensor(tOrO.data(), acc_rowcol(tOrO.layout()));
    static_assert(decltype(size<0>(o))::value == 2 && decltype(size<1>(o))::value % 2 == 0);
    // A thread's values of a row come in pairs of adjacent columns.
    const int own = t.split + t.split_index;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = get<0>(rc(r, 0));
      float* dst = p.partial_o + (static_cast<int64_t>(own) * kBlockM + row) * kHeadDim;
#pragma unroll
      for (int c = 0; c < size<1>(o); c += 2)
        *reinterpret_cast<float2*>(dst + get<1>(rc(r, c))) = make_float2(o(r, c), o(r, c + 1));
      if (tid % 4 == 0) p.partial_lse[own * kBlockM + row] = lse[r];
    }
    named_barrier_sync(kBarrierSplit0 + wg, 128);
    bool last = false;
    if (wg_tid == 0) {
      int* counter = p.split_counters + t.split * kPrefillMaxConsumerWG + wg;
      int before;
      asm volatile("atom.add.acq_rel.gpu.s32 %0, [%1], 1;"
                   : "=r"(before)
                   : "l"(counter)
                   : "memory");
      last = before == num_splits - 1;
      if (last) *counter = 0;  // every piece has counted: the next run starts from 0
    }
    if (named_barrier_or(kBarrierSplit0 + wg, 128, last)) merge_to_output(p, t, num_splits, wg);
  }

  // The last piece's merge of this warpgroup's 64 rows: o = sum_s w_s o_s / sum_s w_s with
  // w_s = e^(lse_s - max), pieces in order, from the partials (this piece's included) to the
  // output (16-bit, 8-byte stores) and the LSE. Four columns a thread and step. Not inlined, and
  // O's registers are dead by then: inlined with O live in registers, the merge's loads raised the
  // pressure of the whole kernel and ptxas spilled in the mainloop of every tile (head_dim 256:
  // 444 bytes, 512-token prefill -30%, 16k -9%).
  __device__ __noinline__ static void merge_to_output(const PrefillParams& p,
                                                      const PrefillTileInfo& t, int num_splits,
                                                      int wg) {
    constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;
    constexpr int kVecs = kHeadDim / 4;  // float4 columns of a row
    const int wg_tid = (threadIdx.x - 128) % 128;
    Element* out = static_cast<Element*>(p.out) + t.qo_head * p.out_stride_head;
    for (int i = wg_tid; i < 64 * kVecs; i += 128) {
      const int r = wg * 64 + i / kVecs, v = i % kVecs;  // tile row, float4 column
      const int row = t.m_block * kBlockM + r;
      if (row >= t.q_len) break;  // i grows with the row
      const float* lse_s = p.partial_lse + static_cast<int64_t>(t.split) * kBlockM + r;
      float row_max = -INFINITY;
      for (int s = 0; s < num_splits; ++s)
        row_max = fmaxf(row_max, __ldcg(lse_s + s * kBlockM));
      float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
      float sum = 0.f;
      for (int s = 0; s < num_splits; ++s) {
        // A piece that saw nothing of the row (LSE -inf) has weight 0, as has every piece of a
        // row that nothing reached.
        const float w =
            row_max == -INFINITY ? 0.f : exp2f((__ldcg(lse_s + s * kBlockM) - row_max) * kLog2e);
        sum += w;
        const float4 x =
            __ldcg(reinterpret_cast<const float4*>(
                       p.partial_o + (static_cast<int64_t>(t.split + s) * kBlockM + r) * kHeadDim) +
                   v);
        acc.x = fmaf(w, x.x, acc.x);
        acc.y = fmaf(w, x.y, acc.y);
        acc.z = fmaf(w, x.z, acc.z);
        acc.w = fmaf(w, x.w, acc.w);
      }
      const float inv = sum > 0.f ? __fdividef(1.f, sum) : 0.f;  // sum >= 1: the max piece
      Element e[4];
      e[0] = Element(acc.x * inv);
      e[1] = Element(acc.y * inv);
      e[2] = Element(acc.z * inv);
      e[3] = Element(acc.w * inv);
      *reinterpret_cast<uint2*>(out + (t.q_start + row) * p.out_stride_token + 4 * v) =
          *reinterpret_cast<const uint2*>(e);
      if (v == 0 && p.lse != nullptr) {
        p.lse[(t.q_start + row) * p.lse_stride_token + t.qo_head * p.lse_stride_head] =
            sum > 0.f ? row_max + log2f(sum) * kLn2 : -INFINITY;
      }
    }
  }

  template <class TO>
  __device__ static void store(const PrefillParams& p, const PrefillTma<Traits>& tma,
                               const PrefillTileInfo& t, typename Traits::SharedStorage& shared,
                               const TO& tOrO, const float (&lse)[2]) {
    using namespace cute;
    const int tid = threadIdx.x - 128;
    const int wg = tid / 128, wg_tid = tid % 128;
    const int row0 = t.m_block * kBlockM;
    if (p.lse != nullptr && (tid % 4) == 0) {
      typename Traits::MmaPV mma_pv;
      Tensor cO = make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{});
      Tensor tOcO = mma_pv.get_thread_slice(tid).partition_C(cO);
      Tensor rc = make_tensor(tOcO.data(), acc_rowcol(tOcO.layout()));
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = row0 + get<0>(rc(r, 0));
        if (row < t.q_len)
          p.lse[(t.q_start + row) * p.lse_stride_token + t.qo_head * p.lse_stride_head] = lse[r];
      }
    }
    Tensor tOrO_16 = make_tensor_like<Element>(tOrO);
    convert_pairs<Element>(tOrO, tOrO_16);
    Tensor sO = make_tensor(make_smem_ptr(shared.o.data()), typename Traits::SmemLayoutO{});
    typename Traits::MmaO mma_o;
    auto copy_o = make_tiled_copy_C(Copy_Atom<SM90_U32x4_STSM_N, Element>{}, mma_o);
    auto thr_copy_o = copy_o.get_thread_slice(tid);
    Tensor tOsO = thr_copy_o.partition_D(sO);
    using ChunkLayout =
        decltype(partition_fragment_C(mma_o, Shape<Int<kBlockM>, Int<kOCols>>{}).layout());
    // A warpgroup whose 64 rows all belong to the request stores them by TMA (issued by its first
    // thread, completing in the background); rows past the request's end would belong to the
    // next request of a ragged batch, so a partial warpgroup stores its rows itself.
    const int wg_row0 = row0 + wg * 64;
    const bool full = wg_row0 + 64 <= t.q_len;
    for_each(make_int_sequence<Traits::kOChunks>{}, [&](auto chunk) {
      constexpr int j = decltype(chunk)::value;
      // The buffer's rows are free: the last TMA store from them (the previous tile's, or the
      // previous round's) has read them, and every thread has done its own reads.
      wait_store_reads();
      named_barrier_sync(kBarrierEpilogue0 + wg, 128);
      // Columns [j * kOCols, (j + 1) * kOCols): the j-th part of the fragment's values.
      Tensor part =
          make_tensor(tOrO_16.data() + j * size(tOrO_16) / Traits::kOChunks, ChunkLayout{});
      copy(copy_o, thr_copy_o.retile_S(part), tOsO);
      if (full) cutlass::arch::fence_view_async_shared();  // stmatrix writes before TMA reads
      FS_PTRACE(t.trace_index, 6);
      named_barrier_sync(kBarrierEpilogue0 + wg, 128);
      FS_PTRACE(t.trace_index, 7);
      if (full) {
        if (wg_tid == 0) {
          Tensor mO = tma.o.get_tma_tensor(make_shape(p.total_q, Int<kHeadDim>{}, p.num_qo_heads));
          Tensor gO = local_tile(domain_offset(make_coord(t.q_start, _0{}), mO(_, _, t.qo_head)),
                                 Shape<_64, Int<kOCols>>{}, make_coord(wg_row0 / 64, j));
          Tensor sOwg = local_tile(sO, Shape<_64, Int<kOCols>>{}, make_coord(wg, _0{}));
          auto [tOgO, tOsOwg] = tma_partition(tma.o, _0{}, Layout<_1>{}, group_modes<0, 2>(sOwg),
                                              group_modes<0, 2>(gO));
          copy(tma.o, tOsOwg, tOgO);
          tma_store_arrive();
        }
        return;
      }
      constexpr int kChunks = kOCols / 8;  // 16-byte chunks per row of the round
      Element* out = static_cast<Element*>(p.out) + t.qo_head * p.out_stride_head + j * kOCols;
#pragma unroll 4
      for (int i = wg_tid; i < 64 * kChunks; i += 128) {
        const int r = wg * 64 + i / kChunks, c = (i % kChunks) * 8;
        const int row = row0 + r;
        if (row < t.q_len) {
          const uint4 v = *reinterpret_cast<const uint4*>(&sO(r, c));
          *reinterpret_cast<uint4*>(out + (t.q_start + row) * p.out_stride_token + c) = v;
        }
      }
    });
  }
};

}  // namespace flashserve::attention::sm90
