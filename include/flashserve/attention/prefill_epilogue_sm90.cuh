// Prefill epilogue on Hopper: each consumer warpgroup converts its 64 x head_dim output rows to
// 16 bits, stages them in its own rows of the output buffer (Traits::kSeparateO) or of Q's
// shared buffer (the swizzled layout keeps 8
// consecutive head_dim elements contiguous, so the global stores are 16 bytes per thread, fully
// coalesced), and stores the rows that belong to the request; rows past the request's end are
// never written (they would belong to the next request in a ragged batch). The LSE is written by
// the first thread of each quad, which holds the row's statistics.
#pragma once

#include <cute/tensor.hpp>

#include "flashserve/attention/prefill_mainloop_sm90.cuh"

namespace flashserve::attention::sm90 {

template <class Traits>
struct PrefillEpilogue {
  using Element = typename Traits::Element;
  static constexpr int kBlockM = Traits::kBlockM, kHeadDim = Traits::kHeadDimV;  // the output's

  template <class TO>
  __device__ static void store(const PrefillParams& p, const PrefillTileInfo& t,
                               typename Traits::SharedStorage& shared, const TO& tOrO,
                               const float (&lse)[2]) {
    using namespace cute;
    const int tid = threadIdx.x - 128;
    const int wg = tid / 128, wg_tid = tid % 128;
    typename Traits::MmaPV mma_pv;
    auto thr_pv = mma_pv.get_thread_slice(tid);
    Element* o_smem = Traits::kSeparateO ? shared.o.data() : shared.q.data();
    Tensor sO = make_tensor(make_smem_ptr(o_smem), typename Traits::SmemLayoutO{});
    Tensor tOsO = thr_pv.partition_C(sO);
    // Its own buffer: every thread of the warpgroup is done reading the previous tile's rows.
    if constexpr (Traits::kSeparateO) named_barrier_sync(kBarrierEpilogue0 + wg, 128);
#pragma unroll
    for (int i = 0; i < size(tOrO); ++i)
      tOsO(i) = static_cast<Element>(tOrO(i));

    const int row0 = t.m_block * kBlockM;
    if (p.lse != nullptr && (tid % 4) == 0) {
      Tensor cO = make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{});
      Tensor tOcO = thr_pv.partition_C(cO);
      Tensor rc = make_tensor(tOcO.data(), acc_rowcol(tOcO.layout()));
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = row0 + get<0>(rc(r, 0));
        if (row < t.q_len)
          p.lse[(t.q_start + row) * p.lse_stride_token + t.qo_head * p.lse_stride_head] = lse[r];
      }
    }
    named_barrier_sync(kBarrierEpilogue0 + wg, 128);

    constexpr int kChunks = kHeadDim / 8;  // 16-byte chunks per row
    Element* out = static_cast<Element*>(p.out) + t.qo_head * p.out_stride_head;
#pragma unroll 4
    for (int i = wg_tid; i < 64 * kChunks; i += 128) {
      const int r = wg * 64 + i / kChunks, c = (i % kChunks) * 8;
      const int row = row0 + r;
      if (row < t.q_len) {
        const uint4 v = *reinterpret_cast<const uint4*>(&sO(r, c));
        *reinterpret_cast<uint4*>(out + (t.q_start + row) * p.out_stride_token + c) = v;
      }
    }
  }
};

}  // namespace flashserve::attention::sm90
