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
