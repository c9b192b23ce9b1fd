// The Hopper prefill attention kernel (FlashAttention-3 class) and its launcher: a persistent,
// warp-specialized kernel. Warpgroup 0 gives up registers (setmaxnreg) and one of its warps
// streams Q, K and V in with TMA; the consumer warpgroups take the registers and run
// mainloop + epilogue for each tile the scheduler hands them.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include <cute/tensor.hpp>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/cluster_launch.hpp>

#include "flashserve/attention/prefill_epilogue_sm90.cuh"
#include "flashserve/attention/prefill_mainloop_sm90.cuh"
#include "flashserve/attention/prefill_traits_sm90.cuh"

namespace flashserve::attention::sm90 {

template <class Traits>
struct PrefillKernelArgs {
  PrefillParams p;
  PrefillTma<Traits> tma;
};

template <class Traits, PrefillKind kKind>
__global__ void __launch_bounds__(Traits::kNumThreads, 1)
    prefill_kernel(const __grid_constant__ PrefillKernelArgs<Traits> args) {
  using namespace cute;
  using Mainloop = PrefillMainloop<Traits, kKind>;
  using Pipeline = typename Traits::Pipeline;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  auto& shared = *reinterpret_cast<typename Traits::SharedStorage*>(smem_raw);
  const PrefillParams& p = args.p;
  const int warp = threadIdx.x / 32;
  const bool producer = threadIdx.x < 128;
  bool paged_tma = false;  // paged K and V by TMA (load_paged_tma) rather than gathered
  if constexpr (Traits::kPaged) paged_tma = args.tma.paged.box_rows > 0;

  if (threadIdx.x == 0) {
    prefetch_tma_descriptor(args.tma.q.get_tma_descriptor());
    if constexpr (!Traits::kPaged) {
      prefetch_tma_descriptor(args.tma.k.get_tma_descriptor());
      prefetch_tma_descriptor(args.tma.v.get_tma_descriptor());
    } else if (paged_tma) {
      prefetch_tma_descriptor(&args.tma.paged.k);
      prefetch_tma_descriptor(&args.tma.paged.v);
    }
    reinterpret_cast<cutlass::arch::ClusterTransactionBarrier*>(&shared.q_full)->init(1);
    if constexpr (Traits::kPaged) {
      reinterpret_cast<cutlass::arch::ClusterTransactionBarrier*>(&shared.kv_tail)
          ->init(paged_tma ? args.tma.paged.issue_warps : 1);
    }
  }
  // `bytes`: of one K or V block (the ragged kernels' TMA transactions).
  auto make_pipeline = [&](auto& storage, uint32_t bytes) {
    typename Pipeline::Params pp;
    pp.role = producer ? Pipeline::ThreadCategory::Producer : Pipeline::ThreadCategory::Consumer;
    if constexpr (Traits::kPaged) {
      // TMA: one arrival (with its bytes) per issuing warp; gather: every producer thread's copies.
      pp.producer_arv_count = paged_tma ? args.tma.paged.issue_warps : Traits::kNumProducerThreads;
      pp.consumer_arv_count = Traits::kNumMmaThreads;
      return Pipeline(storage, pp);
    } else {
      pp.transaction_bytes = bytes;
      pp.is_leader = threadIdx.x == 0;
      pp.num_consumers = Traits::kNumMmaThreads;
      return Pipeline(storage, pp, Shape<_1, _1, _1>{});
    }
  };
  Pipeline pipe_k = make_pipeline(shared.pipeline_k, Traits::kKBytes);
  Pipeline pipe_v = make_pipeline(shared.pipeline_v, Traits::kVBytes);
  cutlass::arch::fence_barrier_init();
  __syncthreads();

  if (producer) {
    cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegs>();
    if constexpr (Traits::kPaged) {
      if (!paged_tma)
        Mainloop::load_paged(p, args.tma, shared, pipe_k, pipe_v);
      else if (warp < args.tma.paged.issue_warps)
        Mainloop::load_paged_tma(p, args.tma, shared, pipe_k, pipe_v);
    } else if (warp == 0)
      Mainloop::load(p, args.tma, shared, pipe_k, pipe_v);
    return;
  }
  cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegs>();
  // The first GEMM turn goes to consumer warpgroup 0 (see the ping-pong in the mainloop).
  if (Traits::kNumMmaWG == 2 && threadIdx.x >= 256) named_barrier_arrive(kBarrierTurn0, 256);
  PrefillScheduler sched(p);
  typename Traits::PipelineState read;
  int q_phase = 0;
  typename Traits::MmaPV mma_pv;
  Tensor tOrO = partition_fragment_C(mma_pv, Shape<Int<Traits::kBlockM>, Int<Traits::kHeadDimV>>{});
  int tile_count = 0;
  for (int w = sched.first(); sched.valid(w); ++tile_count) {
    PrefillTileInfo t = sched.tile(w);
    t.trace_index = tile_count;
    FS_PTRACE(tile_count, 0);
    float lse[2];
    const bool has_next = sched.has_next(t);
    Mainloop::compute(p, t, shared, pipe_k, pipe_v, read, q_phase, tOrO, lse,
                      Traits::kPaged && !paged_tma, has_next);
    FS_PTRACE(tile_count, 4);
    // A split piece writes a partial (the last of its tile's pieces merges them to the output).
    if (t.split >= 0)
      PrefillEpilogue<Traits>::merge_split(p, t, p.work[w].num_splits, tOrO, lse);
    else
      PrefillEpilogue<Traits>::store(p, args.tma, t, shared, tOrO, lse);
    FS_PTRACE(tile_count, 5);
    w = sched.next(t);
  }
  // Shared memory must outlive the reads of the last TMA stores.
  PrefillEpilogue<Traits>::wait_store_reads();
}

// The paged caches' TMA descriptors (PagedKvTma), or box_rows = 0 where TMA cannot load them: a
// page size that is not a multiple of 8 rows dividing the kv block or a multiple of it, strides
// or a base address TMA cannot take, or FLASHSERVE_PREFILL_PAGED_GATHER=1 (tests compare the two
// paths).
template <class Traits>
PagedKvTma make_paged_kv_tma(const PrefillParams& p) {
  using Element = typename Traits::Element;
  constexpr int kBlockN = Traits::kBlockN;
  PagedKvTma out;
  const int ps = p.page_size;
  if (ps <= 0 || ps % 8 != 0 || (kBlockN % ps != 0 && ps % kBlockN != 0) || p.num_pages < 1)
    return out;
  const char* force_gather = std::getenv("FLASHSERVE_PREFILL_PAGED_GATHER");
  if (force_gather != nullptr && force_gather[0] == '1') return out;
  const int box_rows = ps < kBlockN ? ps : kBlockN;
  // `dim`, `cols`: the cache's head dim and the columns of its swizzle atom (one box's width).
  auto encode = [&](CUtensorMap& map, const void* base, int64_t token, int64_t head, int64_t page,
                    int dim, int cols) {
    constexpr int64_t e = sizeof(Element);
    if (reinterpret_cast<uintptr_t>(base) % 16 != 0) return false;
    cuuint64_t dims[4] = {static_cast<cuuint64_t>(dim), static_cast<cuuint64_t>(ps),
                          static_cast<cuuint64_t>(p.num_kv_heads),
                          static_cast<cuuint64_t>(p.num_pages)};
    cuuint64_t strides[3] = {static_cast<cuuint64_t>(token * e), static_cast<cuuint64_t>(head * e),
                             static_cast<cuuint64_t>(page * e)};
    for (int64_t s : {token, head, page})
      if (s <= 0 || s * e % 16 != 0 || s * e >= (int64_t{1} << 40)) return false;
    cuuint32_t box[4] = {static_cast<cuuint32_t>(cols), static_cast<cuuint32_t>(box_rows), 1, 1};
    cuuint32_t element_strides[4] = {1, 1, 1, 1};
    const CUtensorMapDataType type = std::is_same_v<Element, cutlass::bfloat16_t>
                                         ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                         : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
    const CUtensorMapSwizzle swizzle =
        cols == 64 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B;
    return cutlass::call_cuTensorMapEncodeTiled(
               &map, type, 4, const_cast<void*>(base), dims, strides, box, element_strides,
               CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
               CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
  };
  if (encode(out.k, p.k, p.k_stride_token, p.k_stride_head, p.k_stride_page, Traits::kHeadDim,
             Traits::kSwizzleCols) &&
      encode(out.v, p.v, p.v_stride_token, p.v_stride_head, p.v_stride_page, Traits::kHeadDimV,
             Traits::kSwizzleColsV))
    out.box_rows = box_rows;
  // Issuing warps: about four TMAs each, at most one per box and the warpgroup's four. One warp
  // issuing a block's 16 TMAs (page 16 at head_dim 128) serializes them: 0.70 of the ragged speed,
  // 0.93 with four warps; but a warp with little to issue still costs its barrier traffic (page
  // 64 at head_dim 128, 4 TMAs: one warp 0.92, two 0.87).
  const int boxes = kBlockN / box_rows;
  const int tmas = boxes * (Traits::kHeadDim / Traits::kSwizzleCols);
  out.issue_warps = std::max(1, std::min({(tmas + 3) / 4, boxes, 4}));
  return out;
}

template <class Traits>
PrefillTma<Traits> make_prefill_tma(const PrefillParams& p) {
  using namespace cute;
  using Element = typename Traits::Element;
  constexpr int D = Traits::kHeadDim, Dv = Traits::kHeadDimV;
  auto view = [](auto dim, const void* ptr, int rows, int heads, int64_t stride_row,
                 int64_t stride_head) {
    return make_tensor(
        make_gmem_ptr(static_cast<const Element*>(ptr)),
        make_layout(make_shape(rows, dim, heads), make_stride(stride_row, _1{}, stride_head)));
  };
  auto q_view = view(Int<D>{}, p.q, p.total_q, p.num_qo_heads, p.q_stride_token, p.q_stride_head);
  auto o_view = make_tensor(make_gmem_ptr(static_cast<Element*>(p.out)),
                            make_layout(make_shape(p.total_q, Int<Dv>{}, p.num_qo_heads),
                                        make_stride(p.out_stride_token, _1{}, p.out_stride_head)));
  // The paged kernels load K and V without these descriptors: theirs (unused) describe q.
  auto k_view = Traits::kPaged ? q_view
                               : view(Int<D>{}, p.k, p.total_kv, p.num_kv_heads, p.k_stride_token,
                                      p.k_stride_head);
  auto v_view =
      Traits::kPaged
          ? view(Int<Dv>{}, p.q, p.total_q, p.num_qo_heads, p.q_stride_token, p.q_stride_head)
          : view(Int<Dv>{}, p.v, p.total_kv, p.num_kv_heads, p.v_stride_token, p.v_stride_head);
  PrefillTma<Traits> tma{
      make_tma_copy(SM90_TMA_LOAD{}, q_view, typename Traits::SmemLayoutQ{},
                    Shape<Int<Traits::kBlockM>, Int<D>>{}, _1{}),
      make_tma_copy(SM90_TMA_LOAD{}, k_view, take<0, 2>(typename Traits::SmemLayoutK{}),
                    Shape<Int<Traits::kBlockN>, Int<D>>{}, _1{}),
      make_tma_copy(SM90_TMA_LOAD{}, v_view, take<0, 2>(typename Traits::SmemLayoutV{}),
                    Shape<Int<Traits::kBlockN>, Int<Dv>>{}, _1{}),
      make_tma_copy(SM90_TMA_STORE{}, o_view, typename Traits::SmemLayoutOWG{},
                    Shape<_64, Int<Traits::kOCols>>{}, _1{}),
      {}};
  if constexpr (Traits::kPaged) tma.paged = make_paged_kv_tma<Traits>(p);
  return tma;
}

// Launches `grid` persistent CTAs over the plan's work list (p.work / p.counts in the workspace).
// kPaged: K and V from the paged cache (p.page_size > 0). kHeadDimV: of V and the output.
// kBlockM: the tile's rows (0: the head dim's default), as the plan cut the query tiles.
template <class Element, int kHeadDim, PrefillKind kKind, bool kPaged = false,
          int kHeadDimV = kHeadDim, int kBlockM = 0>
cudaError_t launch_prefill_sm90(const PrefillParams& p, int grid, cudaStream_t stream) {
  using Traits =
      PrefillTraits<Element, kHeadDim, kKind == PrefillKind::kPlain, kPaged, kHeadDimV, kBlockM>;
  PrefillKernelArgs<Traits> args{p, make_prefill_tma<Traits>(p)};
  auto kernel = prefill_kernel<Traits, kKind>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Traits::kSmemBytes);
  if (err != cudaSuccess) return err;
  kernel<<<grid, Traits::kNumThreads, Traits::kSmemBytes, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace flashserve::attention::sm90
