// The prefill mainloop on Hopper: the producer's TMA loads (Q once per tile, K and V per kv block
// through a kStages-deep mbarrier pipeline) and the consumers' loop over kv blocks
// (S = Q K^T by wgmma from shared memory, mask and online softmax in registers, O += P V with P
// from registers). Kv blocks are visited from the last to the first, so the tiles that need an
// element mask (the kv edge, the causal diagonal) come first and the rest run unmasked.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cute/tensor.hpp>
#include <type_traits>
#include <cutlass/arch/barrier.h>
#include <cutlass/pipeline/pipeline.hpp>

#include "flashserve/attention/online_softmax_sm90.cuh"
#include "flashserve/attention/prefill_mask.cuh"
#include "flashserve/attention/prefill_scheduler.cuh"

namespace flashserve::attention::sm90 {

// TMA descriptors of the paged caches, seen as (head_dim, slot, kv head, page) with any strides,
// boxes of (Traits::kSwizzleCols, box_rows, 1, 1) elements. box_rows = min(page_size, kBlockN);
// 0: the page size or the strides do not allow TMA, the warpgroup gathers (load_paged).
struct PagedKvTma {
  CUtensorMap k, v;
  int32_t box_rows = 0;
  int32_t issue_warps = 4;  // producer warps issuing the boxes (1..4), box b by warp b % warps
};
struct NoPagedKvTma {};

template <class Traits>
struct PrefillTma {
  typename Traits::TmaQ q;
  typename Traits::TmaK k;
  typename Traits::TmaV v;
  typename Traits::TmaO o;  // the output, stored by each consumer warpgroup's 64 rows
  std::conditional_t<Traits::kPaged, PagedKvTma, NoPagedKvTma> paged;
};

// One 4-D TMA box (cp.async.bulk.tensor) into shared memory, completing on `bar`.
__device__ __forceinline__ void tma_load_4d(const CUtensorMap* map, uint64_t* bar, void* dst,
                                            int c0, int c1, int c2, int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5, %6}], [%2];" ::"r"(
          static_cast<uint32_t>(__cvta_generic_to_shared(dst))),
      "l"(reinterpret_cast<uint64_t>(map)),
      "r"(static_cast<uint32_t>(__cvta_generic_to_shared(bar))), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
}

// Issues one warpgroup GEMM over all k blocks of the operands; kZero starts from zero, kARegs:
// A comes from registers (and is fenced like the accumulator).
template <bool kZero, bool kARegs, class Mma, class TA, class TB, class TC>
__device__ __forceinline__ void warpgroup_gemm(Mma& mma, const TA& a, const TB& b, TC& c) {
  using namespace cute;
  if constexpr (kARegs) warpgroup_fence_operand(const_cast<TA&>(a));
  warpgroup_fence_operand(c);
  warpgroup_arrive();
  if constexpr (kZero) mma.accumulate_ = GMMA::ScaleOut::Zero;
#pragma unroll
  for (int kb = 0; kb < size<2>(a); ++kb) {
    cute::gemm(mma, a(_, _, kb), b(_, _, kb), c);
    mma.accumulate_ = GMMA::ScaleOut::One;
  }
  warpgroup_commit_batch();
  warpgroup_fence_operand(c);
  if constexpr (kARegs) warpgroup_fence_operand(const_cast<TA&>(a));
}

// Named barriers (id 0 is __syncthreads): Q's buffer is free again; one per consumer warpgroup
// for its epilogue.
// kBarrierTurn0 + w: warpgroup w may issue its GEMMs (ping-pong between two consumer warpgroups).
// kBarrierSplit0 + w: warpgroup w's split-KV count (PrefillEpilogue::merge_split).
enum : int { kBarrierQEmpty = 1, kBarrierEpilogue0 = 2, kBarrierTurn0 = 5, kBarrierSplit0 = 9 };

__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
// A named barrier that also returns whether any of its threads passed `pred`.
__device__ __forceinline__ bool named_barrier_or(int id, int threads, bool pred) {
  uint32_t out;
  asm volatile(
      "{\n .reg .pred p, q;\n setp.ne.u32 q, %1, 0;\n bar.red.or.pred p, %2, %3, q;\n"
      " selp.u32 %0, 1, 0, p;\n}"
      : "=r"(out)
      : "r"(static_cast<uint32_t>(pred)), "r"(id), "r"(threads)
      : "memory");
  return out != 0;
}

template <class Traits, PrefillKind kKind>
struct PrefillMainloop {
  using Element = typename Traits::Element;
  static constexpr int kBlockM = Traits::kBlockM, kBlockN = Traits::kBlockN;
  static constexpr int kHeadDim = Traits::kHeadDim, kHeadDimV = Traits::kHeadDimV;
  using Pipeline = typename Traits::Pipeline;
  using PipelineState = typename Traits::PipelineState;
  using SharedStorage = typename Traits::SharedStorage;

  // The kv blocks [n_min, n_max) item t visits: the block range of its masks, within its piece's
  // range where split-KV cut the tile.
  __device__ static void block_range(const PrefillParams& p, const PrefillTileInfo& t, int& n_min,
                                     int& n_max) {
    const PrefillMask<kKind> mask(p.variant, t.request, t.q_len, t.kv_len);
    mask.template block_range<kBlockM, kBlockN>(t.m_block, n_min, n_max);
    n_min = max(n_min, t.n_begin);
    n_max = min(n_max, t.n_end);
  }

  // Producer: one warp; lane 0 issues the copies, the whole warp waits for Q's buffer.
  __device__ static void load(const PrefillParams& p, const PrefillTma<Traits>& tma,
                              SharedStorage& shared, Pipeline& pipe_k, Pipeline& pipe_v) {
    using namespace cute;
    const int lane = threadIdx.x % 32;
    PrefillScheduler sched(p);
    PipelineState write = cutlass::make_producer_start_state<Pipeline>();
    Tensor sQ = make_tensor(make_smem_ptr(shared.q.data()), typename Traits::SmemLayoutQ{});
    Tensor sK = make_tensor(make_smem_ptr(shared.k.data()), typename Traits::SmemLayoutK{});
    Tensor sV = make_tensor(make_smem_ptr(shared.v.data()), typename Traits::SmemLayoutV{});
    Tensor mQ = tma.q.get_tma_tensor(make_shape(p.total_q, Int<kHeadDim>{}, p.num_qo_heads));
    Tensor mK = tma.k.get_tma_tensor(make_shape(p.total_kv, Int<kHeadDim>{}, p.num_kv_heads));
    Tensor mV = tma.v.get_tma_tensor(make_shape(p.total_kv, Int<kHeadDimV>{}, p.num_kv_heads));
    auto& q_full = *reinterpret_cast<cutlass::arch::ClusterTransactionBarrier*>(&shared.q_full);
    bool first = true;
    PrefillTileInfo t;
    for (int w = sched.first(); sched.valid(w); w = sched.next(t)) {
      t = sched.tile(w);
      int n_min, n_max;
      block_range(p, t, n_min, n_max);

      Tensor gQ = local_tile(domain_offset(make_coord(t.q_start, _0{}), mQ(_, _, t.qo_head)),
                             Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(t.m_block, _0{}));
      Tensor gK = local_tile(domain_offset(make_coord(t.kv_start, _0{}), mK(_, _, t.kv_head)),
                             Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(_, _0{}));
      Tensor gV = local_tile(domain_offset(make_coord(t.kv_start, _0{}), mV(_, _, t.kv_head)),
                             Shape<Int<kBlockN>, Int<kHeadDimV>>{}, make_coord(_, _0{}));
      auto [tQg, tQs] =
          tma_partition(tma.q, _0{}, Layout<_1>{}, group_modes<0, 2>(sQ), group_modes<0, 2>(gQ));
      auto [tKg, tKs] =
          tma_partition(tma.k, _0{}, Layout<_1>{}, group_modes<0, 2>(sK), group_modes<0, 2>(gK));
      auto [tVg, tVs] =
          tma_partition(tma.v, _0{}, Layout<_1>{}, group_modes<0, 2>(sV), group_modes<0, 2>(gV));

      // The first K block does not depend on Q's buffer: start it before waiting for the
      // consumers to release the previous tile's output.
      int n = n_max - 1;
      if (n >= n_min && lane == 0) {
        pipe_k.producer_acquire(write);
        copy(tma.k.with(*pipe_k.producer_get_barrier(write), 0), tKg(_, n), tKs(_, write.index()));
      }
      if (!first) named_barrier_sync(kBarrierQEmpty, Traits::kNumMmaThreads + 32);
      first = false;
      if (lane == 0) {
        q_full.arrive_and_expect_tx(Traits::kQBytes);
        copy(tma.q.with(reinterpret_cast<uint64_t&>(shared.q_full), 0), tQg, tQs);
        if (n >= n_min) {
          pipe_v.producer_acquire(write);
          copy(tma.v.with(*pipe_v.producer_get_barrier(write), 0), tVg(_, n),
               tVs(_, write.index()));
          ++write;
        }
        for (--n; n >= n_min; --n) {
          pipe_k.producer_acquire(write);
          copy(tma.k.with(*pipe_k.producer_get_barrier(write), 0), tKg(_, n),
               tKs(_, write.index()));
          pipe_v.producer_acquire(write);
          copy(tma.v.with(*pipe_v.producer_get_barrier(write), 0), tVg(_, n),
               tVs(_, write.index()));
          ++write;
        }
      }
      __syncwarp();
    }
  }

  // Q of tile t by warp 0 of the paged producers: it waits until the consumers have released
  // Q's buffer (holding the previous tile's output; not before the first tile), then lane 0
  // issues the TMA.
  __device__ static void load_q(const PrefillParams& p, const PrefillTma<Traits>& tma,
                                SharedStorage& shared, const PrefillTileInfo& t, bool first) {
    using namespace cute;
    if (!first) named_barrier_sync(kBarrierQEmpty, Traits::kNumMmaThreads + 32);
    if (threadIdx.x % 32 == 0) {
      Tensor sQ = make_tensor(make_smem_ptr(shared.q.data()), typename Traits::SmemLayoutQ{});
      Tensor mQ = tma.q.get_tma_tensor(make_shape(p.total_q, Int<kHeadDim>{}, p.num_qo_heads));
      Tensor gQ = local_tile(domain_offset(make_coord(t.q_start, _0{}), mQ(_, _, t.qo_head)),
                             Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(t.m_block, _0{}));
      auto [tQg, tQs] =
          tma_partition(tma.q, _0{}, Layout<_1>{}, group_modes<0, 2>(sQ), group_modes<0, 2>(gQ));
      reinterpret_cast<cutlass::arch::ClusterTransactionBarrier*>(&shared.q_full)
          ->arrive_and_expect_tx(Traits::kQBytes);
      copy(tma.q.with(reinterpret_cast<uint64_t&>(shared.q_full), 0), tQg, tQs);
    }
    __syncwarp();
  }

  // Producer of the paged kernels: the whole warpgroup (128 threads). Each K or V block is
  // gathered row by row: warp w copies rows w, w + 4, w + 8, ... (kBlockN / 4 rows, at most 32),
  // its lanes taking the rows' 16-byte chunks in order (lane l: chunks l, l + 32, ... of the
  // warp's rows), into the swizzled position the MMA reads. Lane r of the warp holds the cache
  // offsets of the warp's row r (K and V share the row), from a page id it loaded one block ahead;
  // the lanes copying that row fetch them by shuffles, so the warps share nothing and never wait
  // for each other. Rows past the kv length are zero-filled. Each thread's copies arrive on the
  // stage's barrier when they land (128 arrivals complete a stage).
  __device__ static void load_paged(const PrefillParams& p, const PrefillTma<Traits>& tma,
                                    SharedStorage& shared, Pipeline& pipe_k, Pipeline& pipe_v) {
    using namespace cute;
    constexpr int kWarps = Traits::kNumProducerThreads / 32;
    constexpr int kRowsPerWarp = kBlockN / kWarps;
    static_assert(kBlockN % kWarps == 0 && kRowsPerWarp <= 32,
                  "each lane of a producer warp looks up at most one row of a kv block");
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;  // 0..3: the producer warpgroup
    PrefillScheduler sched(p);
    PipelineState write = cutlass::make_producer_start_state<Pipeline>();
    Tensor sK = make_tensor(make_smem_ptr(shared.k.data()), typename Traits::SmemLayoutK{});
    Tensor sV = make_tensor(make_smem_ptr(shared.v.data()), typename Traits::SmemLayoutV{});

    // The page of this lane's row of block n (page 0 past the kv length: never read).
    auto fetch_page = [&](const PrefillTileInfo& t, int n) {
      const int j = n * kBlockN + warp + kWarps * lane;
      return lane < kRowsPerWarp && j < t.kv_len
                 ? __ldg(p.page_indices + t.page_start + j / p.page_size)
                 : 0;
    };
    // Of the block being gathered: this lane's row's byte offsets in the K and V caches, and how
    // many of the block's rows lie below the kv length.
    int64_t row_k = 0, row_v = 0;
    int rows_valid = 0;
    auto set_rows = [&](const PrefillTileInfo& t, int n, int page) {
      const int j = n * kBlockN + warp + kWarps * lane;
      const int64_t slot = j < t.kv_len ? j % p.page_size : 0;
      row_k = (page * p.k_stride_page + slot * p.k_stride_token) * int64_t{sizeof(Element)};
      row_v = (page * p.v_stride_page + slot * p.v_stride_token) * int64_t{sizeof(Element)};
      rows_valid = t.kv_len - n * kBlockN;
    };
    // The block of the last set_rows into stage write.index() of `smem` (sK or sV) of `pipe`,
    // from the cache at `base` (`row_off`: row_k or row_v). The stage is signalled by the
    // hardware when this thread's copies land (cp.async.mbarrier.arrive; the consumers then fence
    // for the async proxy), so the producer never waits for memory.
    auto gather = [&](auto dim, Pipeline& pipe, auto& smem, const Element* base, int64_t row_off) {
      constexpr int kChunks = decltype(dim)::value / 8;
      constexpr int kCopies = kRowsPerWarp * kChunks / 32;
      static_assert(kRowsPerWarp * kChunks % 32 == 0,
                    "a warp's chunks of a kv block must split evenly over its lanes");
      pipe.producer_acquire(write);
      const int stage = write.index();
      const auto dst_of = [&](int r, int col) {
        return static_cast<uint32_t>(
            __cvta_generic_to_shared(raw_pointer_cast(&smem(warp + kWarps * r, col, stage))));
      };
      // The chunk at `src` into `dst`; zeros where `skip`.
      const auto copy = [](const char* src, uint32_t dst, bool skip) {
        asm volatile(
            "{\n .reg .pred p;\n setp.ne.b32 p, %2, 0;\n"
            " cp.async.cg.shared.global [%0], [%1], 16, p;\n}\n" ::"r"(dst),
            "l"(src), "r"(static_cast<uint32_t>(skip))
            : "memory");
      };
      const char* cache = reinterpret_cast<const char*>(base);
      if constexpr (32 % kChunks == 0) {
        // A fixed column per lane (head dim 64, 128, 256): lane l copies rows r0, r0 + step, ...
        // Two copies apart the rows differ by a multiple of the 8-row swizzle atom, so the
        // destinations advance by a constant.
        constexpr int kStep = 32 / kChunks;
        static_assert(kCopies > 2 && kWarps * 2 * kStep % 8 == 0, "the destinations' period");
        const int r0 = lane / kChunks, col = lane % kChunks * 8;
        const uint32_t d0 = dst_of(r0, col), d1 = dst_of(r0 + kStep, col);
        const uint32_t delta = dst_of(r0 + 2 * kStep, col) - d0;
        const char* src_col = cache + col * int{sizeof(Element)};
        const int left = rows_valid - (warp + kWarps * r0);  // copy i: row warp + 4 (r0 + i step)
        // Four rows' offsets by shuffles before their four copies: the shuffles' latencies
        // overlap instead of each copy waiting for its own.
        static_assert(kCopies % 4 == 0, "copies in groups of four");
#pragma unroll
        for (int i0 = 0; i0 < kCopies; i0 += 4) {
          int64_t off[4];
#pragma unroll
          for (int j = 0; j < 4; ++j)
            off[j] = __shfl_sync(0xffffffffu, row_off, r0 + (i0 + j) * kStep);
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const int i = i0 + j;
            copy(src_col + off[j], ((i & 1) ? d1 : d0) + (i >> 1) * delta,
                 kWarps * kStep * i >= left);
          }
        }
      } else {
#pragma unroll 2
        for (int i = 0; i < kCopies; ++i) {
          const int r = (lane + 32 * i) / kChunks, col = (lane + 32 * i) % kChunks * 8;
          copy(cache + col * int{sizeof(Element)} + __shfl_sync(0xffffffffu, row_off, r),
               dst_of(r, col), warp + kWarps * r >= rows_valid);
        }
      }
      pipe.producer_commit(write, cutlass::arch::cpasync_barrier_arrive);
    };

    bool first = true;
    PrefillTileInfo t;
    for (int w = sched.first(); sched.valid(w); w = sched.next(t)) {
      t = sched.tile(w);
      int n_min, n_max;
      block_range(p, t, n_min, n_max);
      const Element* k_base = static_cast<const Element*>(p.k) + t.kv_head * p.k_stride_head;
      const Element* v_base = static_cast<const Element*>(p.v) + t.kv_head * p.v_stride_head;

      // Block n's K, then the next block's page ids (their latency hides behind V's copies and
      // the wait for the next K stage), then block n's V.
      int next_page = 0;
      for (int n = n_max - 1; n >= n_min; --n) {
        set_rows(t, n, n == n_max - 1 ? fetch_page(t, n) : next_page);
        gather(Int<kHeadDim>{}, pipe_k, sK, k_base, row_k);
        if (n == n_max - 1 && warp == 0) load_q(p, tma, shared, t, first);
        if (n > n_min) next_page = fetch_page(t, n - 1);
        gather(Int<kHeadDimV>{}, pipe_v, sV, v_base, row_v);
        ++write;
      }
      if (n_max <= n_min && warp == 0) load_q(p, tma, shared, t, first);
      first = false;
    }
    // Leave only once every copy has landed.
    asm volatile("cp.async.wait_all;\n" ::: "memory");
  }

  // Producer of the paged kernels when the caches allow TMA (tma.paged.box_rows = R > 0): warps
  // 0 .. issue_warps - 1 of the producer warpgroup. A kv block is kBlockN / R boxes of R rows,
  // each inside one page; box b is issued by warp b % issue_warps (one TMA per swizzle-atom column
  // of head_dim), whose lane looks up its page one block ahead. Each warp arrives once per stage
  // with its bytes. A box past the kv length gets page -1, which the TMA fills with zeros (the
  // bytes still count). Rows past the kv length inside the last page hold whatever the cache
  // holds: K's are masked like every position past kv_len, but V's must be finite (P = 0 times
  // NaN is NaN), so the V block holding the kv end lands on the kv_tail barrier first, warp 0
  // zeroes those rows, and only then arrives on the stage's barrier. That patch waits until the
  // next K block is issued, so the round trip overlaps the consumers' first S = Q K^T.
  __device__ static void load_paged_tma(const PrefillParams& p, const PrefillTma<Traits>& tma,
                                        SharedStorage& shared, Pipeline& pipe_k, Pipeline& pipe_v) {
    using namespace cute;
    using Barrier = cutlass::arch::ClusterTransactionBarrier;
    constexpr int kChunksV = kHeadDimV / 8;  // 16-byte chunks of a V row
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;  // 0 .. warps - 1
    const int warps = tma.paged.issue_warps;
    const int box_rows = tma.paged.box_rows;
    const int boxes = kBlockN / box_rows;
    // This lane's box (box `warp + lane * warps` of each block) and this warp's bytes per block.
    const int my_box = warp + lane * warps;
    const uint32_t my_rows = (boxes - warp + warps - 1) / warps * box_rows;
    const uint32_t my_bytes_k = my_rows * kHeadDim * static_cast<uint32_t>(sizeof(Element));
    const uint32_t my_bytes_v = my_rows * kHeadDimV * static_cast<uint32_t>(sizeof(Element));
    PrefillScheduler sched(p);
    PipelineState write = cutlass::make_producer_start_state<Pipeline>();
    Tensor sK = make_tensor(make_smem_ptr(shared.k.data()), typename Traits::SmemLayoutK{});
    Tensor sV = make_tensor(make_smem_ptr(shared.v.data()), typename Traits::SmemLayoutV{});
    auto& kv_tail = *reinterpret_cast<Barrier*>(&shared.kv_tail);
    int tail_phase = 0;

    // Lane i's box of block n of tile t: its page (-1 past the kv length) and first slot. Looked
    // up one block ahead of its copies, so the page-table load overlaps the stage wait.
    struct Box {
      int page = -1, slot = 0;
    };
    auto box_of = [&](const PrefillTileInfo& t, int n) {
      Box b;
      const int j = n * kBlockN + my_box * box_rows;
      if (my_box < boxes && j < t.kv_len) {
        b.page = __ldg(p.page_indices + t.page_start + j / p.page_size);
        b.slot = j % p.page_size;
      }
      return b;
    };
    // The boxes of a block into stage `stage` of smem (sK or sV, of head dim `dim` and swizzle
    // atoms of `cols` columns), completing on `bar`. Box rows start at multiples of 8, so each
    // box begins a swizzle atom: element (row, first column of the atom) is its first byte.
    auto issue = [&](auto dim, auto cols, const CUtensorMap* map, auto& smem, int stage,
                     uint64_t* bar, const PrefillTileInfo& t, const Box& b) {
      if (my_box < boxes) {
#pragma unroll
        for (int c = 0; c < decltype(dim)::value; c += decltype(cols)::value)
          tma_load_4d(map, bar, raw_pointer_cast(&smem(my_box * box_rows, c, stage)), c, b.slot,
                      t.kv_head, b.page);
      }
    };
    auto load_k = [&](const PrefillTileInfo& t, const Box& b) {
      pipe_k.producer_acquire(write);
      uint64_t* full = reinterpret_cast<uint64_t*>(pipe_k.producer_get_barrier(write));
      if (lane == 0) Barrier::arrive_and_expect_tx(full, my_bytes_k);
      __syncwarp();
      issue(Int<kHeadDim>{}, Int<Traits::kSwizzleCols>{}, &tma.paged.k, sK, write.index(), full, t,
            b);
    };
    // The V block waiting for its patch: stage, rows [patch_lo, patch_hi) to zero.
    PipelineState patch_state;
    int patch_lo = 0, patch_hi = 0;
    auto load_v = [&](const PrefillTileInfo& t, int n, const Box& b) {
      pipe_v.producer_acquire(write);
      uint64_t* full = reinterpret_cast<uint64_t*>(pipe_v.producer_get_barrier(write));
      // Rows of this block past the kv length but inside the box holding the kv end.
      const int lo = t.kv_len - n * kBlockN;
      const int hi = min(kBlockN, (t.kv_len + box_rows - 1) / box_rows * box_rows - n * kBlockN);
      uint64_t* bar = lo < hi ? reinterpret_cast<uint64_t*>(&shared.kv_tail) : full;
      if (lane == 0) Barrier::arrive_and_expect_tx(bar, my_bytes_v);
      __syncwarp();
      issue(Int<kHeadDimV>{}, Int<Traits::kSwizzleColsV>{}, &tma.paged.v, sV, write.index(), bar, t,
            b);
      // Warp 0 patches the block and then arrives on the stage's barrier; the others are done.
      if (lo < hi && warp > 0 && lane == 0) Barrier::arrive(full);
      if (lo < hi && warp == 0) {
        patch_state = write;
        patch_lo = lo;
        patch_hi = hi;
      }
    };
    auto finish_patch = [&] {
      if (patch_lo >= patch_hi) return;
      kv_tail.wait(tail_phase);
      tail_phase ^= 1;
      for (int i = lane; i < (patch_hi - patch_lo) * kChunksV; i += 32) {
        Element* dst =
            raw_pointer_cast(&sV(patch_lo + i / kChunksV, (i % kChunksV) * 8, patch_state.index()));
        *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
      }
      // The zeros (generic proxy) before the consumers' wgmma reads (async proxy); the arrive
      // releases them.
      cutlass::arch::fence_view_async_shared();
      __syncwarp();
      if (lane == 0) Barrier::arrive(pipe_v.producer_get_barrier(patch_state));
      patch_lo = patch_hi = 0;
    };

    bool first = true;
    PrefillTileInfo t;
    for (int w = sched.first(); sched.valid(w); w = sched.next(t)) {
      t = sched.tile(w);
      int n_min, n_max;
      block_range(p, t, n_min, n_max);

      int n = n_max - 1;
      Box box = n >= n_min ? box_of(t, n) : Box{};
      if (n >= n_min) load_k(t, box);
      if (warp == 0) load_q(p, tma, shared, t, first);
      first = false;
      for (; n >= n_min; --n) {
        const Box next = n > n_min ? box_of(t, n - 1) : Box{};
        if (n < n_max - 1) {
          load_k(t, box);
          finish_patch();
        }
        load_v(t, n, box);
        ++write;
        box = next;
      }
      finish_patch();
    }
  }

  // Consumers: attention of one tile into the O accumulator tOrO and the per-row LSE (tOrO is 0
  // and the LSE -inf, or the sink's, when no kv block is visible). With `release_q` (another
  // tile follows), Q's buffer is handed back to the producer as soon as the last S = Q K^T has
  // completed (the output has its own buffer).
  template <class TO>
  __device__ static void compute(const PrefillParams& p, const PrefillTileInfo& t,
                                 SharedStorage& shared, Pipeline& pipe_k, Pipeline& pipe_v,
                                 PipelineState& read, int& q_phase, TO& tOrO, float (&lse)[2],
                                 bool kv_gathered, bool release_q) {
    using namespace cute;
    constexpr float kLog2e = 1.4426950408889634f;
    const int tid = threadIdx.x - 128;
    typename Traits::MmaQK mma_qk;
    typename Traits::MmaPV mma_pv;
    auto thr_qk = mma_qk.get_thread_slice(tid);
    auto thr_pv = mma_pv.get_thread_slice(tid);
    Tensor sQ = make_tensor(make_smem_ptr(shared.q.data()), typename Traits::SmemLayoutQ{});
    Tensor sK = make_tensor(make_smem_ptr(shared.k.data()), typename Traits::SmemLayoutK{});
    Tensor sVt = make_tensor(make_smem_ptr(shared.v.data()), typename Traits::SmemLayoutVt{});
    Tensor tSrQ = thr_qk.partition_fragment_A(sQ);   // (MMA, MMA_M, MMA_K)
    Tensor tSrK = thr_qk.partition_fragment_B(sK);   // (MMA, MMA_N, MMA_K, stages)
    Tensor tOrV = thr_pv.partition_fragment_B(sVt);  // (MMA, MMA_N, MMA_K, stages)
    // Coordinates (row in the tile, column in the kv block) of each S element this thread holds.
    Tensor cS = make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{});
    Tensor tScS = thr_qk.partition_C(cS);
    Tensor tScS_rc = make_tensor(tScS.data(), acc_rowcol(tScS.layout()));

    const PrefillMask<kKind> mask(p.variant, t.request, t.q_len, t.kv_len);
    int n_min, n_max;
    block_range(p, t, n_min, n_max);

    PrefillLogits logits;
    float scale_log2 = p.sm_scale * kLog2e;
    if constexpr (kKind == PrefillKind::kGeneral) {
      logits.sm_scale = p.sm_scale;
      logits.soft_cap = p.variant.logits_soft_cap;
      logits.alibi_slope =
          p.variant.alibi_slopes != nullptr ? __ldg(p.variant.alibi_slopes + t.qo_head) : 0.f;
      logits.active = logits.soft_cap > 0.f || p.variant.alibi_slopes != nullptr;
      if (logits.active) scale_log2 = kLog2e;
    }
    OnlineSoftmax<2, Traits::kLazyRescale> softmax(scale_log2);
    Tensor tOrO_rc = make_tensor(tOrO.data(), acc_rowcol(tOrO.layout()));
    clear(tOrO);

    auto& q_full = *reinterpret_cast<cutlass::arch::ClusterTransactionBarrier*>(&shared.q_full);
    // kv_gathered (paged kernels on the gather path): K and V were written by cp.async (the
    // generic proxy); order them before the wgmma reads (the async proxy) once their stage's
    // barrier has completed. TMA writes need no fence, nor do the zeros of load_paged_tma (the
    // producer fences them before it arrives).
    auto wait_k = [&](PipelineState st) {
      pipe_k.consumer_wait(st);
      if constexpr (Traits::kPaged) {
        if (kv_gathered) cutlass::arch::fence_view_async_shared();
      }
    };
    auto wait_v = [&](PipelineState st) {
      pipe_v.consumer_wait(st);
      if constexpr (Traits::kPaged) {
        if (kv_gathered) cutlass::arch::fence_view_async_shared();
      }
    };
    q_full.wait(q_phase);
    q_phase ^= 1;
    FS_PTRACE(t.trace_index, 1);
    // Every read of Q (the wgmma of S = Q K^T) has completed: the next tile's Q may land.
    auto q_done = [&] {
      if (release_q) {
        cutlass::arch::fence_view_async_shared();
        named_barrier_arrive(kBarrierQEmpty, Traits::kNumMmaThreads + 32);
      }
    };
    if (n_max <= n_min) q_done();

    const int row0 = t.m_block * kBlockM;
    // S of block n: Q K^T, then the logit transform and the element mask where needed.
    auto scores = [&](int n, auto& tSrS) {
      Tensor s = make_tensor(tSrS.data(), acc_rowcol(tSrS.layout()));
      const int col0 = n * kBlockN;
      if constexpr (kKind == PrefillKind::kGeneral) {
        if (logits.active) {
#pragma unroll
          for (int i = 0; i < size(s); ++i)
            s(i) = logits(s(i), row0 + get<0>(tScS_rc(i)), col0 + get<1>(tScS_rc(i)), mask.offset);
        }
      }
      if (mask.template tile_needs_mask<kBlockM, kBlockN>(t.m_block, n)) {
#pragma unroll
        for (int i = 0; i < size(s); ++i) {
          if (!mask.visible(row0 + get<0>(tScS_rc(i)), col0 + get<1>(tScS_rc(i)))) s(i) = -INFINITY;
        }
      }
      return s;
    };
    // P in 16 bits, kept in registers as the A operand of O += P V.
    Tensor tOrP = make_tensor<Element>(
        partition_fragment_C(mma_qk, Shape<Int<kBlockM>, Int<kBlockN>>{}).layout());
    auto to_p = [&](const auto& tSrS) { convert_pairs<Element>(tSrS, tOrP); };
    Tensor tOrP_a = make_tensor(tOrP.data(), acc_as_a_operand(tOrP.layout()));

    // Ping-pong: with two consumer warpgroups, each issues its GEMMs only in its turn and then
    // hands the turn over, so one warpgroup's softmax runs while the other's GEMMs keep the
    // tensor cores busy. Both warpgroups of a CTA take the same number of turns per tile.
    constexpr bool kPingPong = Traits::kNumMmaWG == 2;
    const int wg = tid / 128;
    auto turn_begin = [&] {
      if constexpr (kPingPong) named_barrier_sync(kBarrierTurn0 + wg, 256);
    };
    auto turn_end = [&] {
      if constexpr (kPingPong) named_barrier_arrive(kBarrierTurn0 + (1 - wg), 256);
    };

    if (n_max > n_min) {
      // First (last-in-order) block: nothing to overlap with yet.
      {
        Tensor tSrS = partition_fragment_C(mma_qk, Shape<Int<kBlockM>, Int<kBlockN>>{});
        wait_k(read);
        turn_begin();
        warpgroup_gemm<true, false>(mma_qk, tSrQ, tSrK(_, _, _, read.index()), tSrS);
        turn_end();
        warpgroup_wait<0>();
        FS_PTRACE(t.trace_index, 2);
        pipe_k.consumer_release(read);
        if (n_max - 1 == n_min) q_done();
        auto s = scores(n_max - 1, tSrS);
        float corr[2];
        softmax.template step<true>(s, corr);
        to_p(tSrS);
        FS_PTRACE(t.trace_index, 3);
      }
      // Steady state: S of block n is issued, then P V of the previous block, and the softmax
      // of S runs on the CUDA cores while the tensor cores still do P V; O is rescaled once both
      // are done (the rescale factor of block n applies to everything up to block n + 1).
      PipelineState prev = read;
      ++read;
      for (int n = n_max - 2; n >= n_min; --n) {
        Tensor tSrS = partition_fragment_C(mma_qk, Shape<Int<kBlockM>, Int<kBlockN>>{});
        wait_k(read);
        wait_v(prev);
        turn_begin();
        warpgroup_gemm<true, false>(mma_qk, tSrQ, tSrK(_, _, _, read.index()), tSrS);
        warpgroup_gemm<false, true>(mma_pv, tOrP_a, tOrV(_, _, _, prev.index()), tOrO);
        turn_end();
        warpgroup_wait<1>();
        pipe_k.consumer_release(read);
        if (n == n_min) q_done();
        auto s = scores(n, tSrS);
        float corr[2];
        softmax.template step<false>(s, corr);
        // Three consumer warpgroups (head_dim 64, 192-row tiles, no ping-pong): the exponentials
        // of S run while the previous block's P V does, before its wait. ptxas hoists that wait
        // above them (SASS of every head dim: the wait right after the row maximum); a store of
        // values made from them (each warp's lane 0 writes its row sums to its own slot, never
        // read) stays before the wait, and so do they. H100, head_dim 64: 1k -4%, 4k -7.5%, 16k
        // -8%; with ping-pong (two warpgroups) neutral or up to 2% slower, so not there; paged
        // K / V +8% slower with it (page 16 and 64, causal too), so ragged only (bench/NOTES.md).
        if constexpr (Traits::kNumMmaWG == 3 && !Traits::kPaged) {
          const uint32_t lane = threadIdx.x % 32;
          const uint32_t addr = static_cast<uint32_t>(
              __cvta_generic_to_shared(&shared.sched_sink[(threadIdx.x - 128) / 32]));
          asm volatile(
              "{\n .reg .pred p;\n setp.eq.u32 p, %0, 0;\n @p st.shared.f32 [%1], %2;\n}\n" ::"r"(
                  lane),
              "r"(addr), "f"(softmax.row_sum[0] + softmax.row_sum[1])
              : "memory");
        }
        warpgroup_wait<0>();
        pipe_v.consumer_release(prev);
        softmax.rescale(tOrO_rc, corr);
        to_p(tSrS);
        prev = read;
        ++read;
      }
      wait_v(prev);
      turn_begin();
      warpgroup_gemm<false, true>(mma_pv, tOrP_a, tOrV(_, _, _, prev.index()), tOrO);
      turn_end();
      warpgroup_wait<0>();
      pipe_v.consumer_release(prev);
    }
    const float* sink = nullptr;
    if constexpr (kKind == PrefillKind::kGeneral) {
      // A split tile's sink joins its first piece only (the merge adds the pieces' masses).
      if (p.variant.sinks != nullptr && t.split_index == 0) sink = p.variant.sinks + t.qo_head;
    }
    softmax.finalize(tOrO_rc, sink, lse);
  }
};

}  // namespace flashserve::attention::sm90
