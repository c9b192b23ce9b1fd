// Compile-time shape of the Hopper prefill kernel: tile sizes (from prefill_tile_policy.h),
// shared-memory layouts, the two warpgroup MMAs and the TMA copy types.
//
// Layout of a CTA: warpgroup 0 is the producer (one warp issues every TMA load), warpgroups
// 1..kNumMmaWG are consumers, each owning 64 query rows of the kBlockM-row tile. S = Q K^T takes
// both operands from shared memory; O += P V takes P from registers (the S accumulator converted
// to 16 bits in place) and V from shared memory read as MN-major (V^T), so V needs no transpose.
//
// kPaged: K and V come from a paged cache. The whole producer warpgroup gathers them row by row
// with cp.async (any page size, NHD or HND) into the same swizzled layout; each thread's copies
// arrive on the stage's barrier when they land (PipelineAsync, 128 producer arrivals), and the
// consumers fence for the async proxy before their wgmma reads. Q still comes in by TMA. When the
// page size is a multiple of 8 rows that divides the kv block or is a multiple of it, up to four
// producer warps load K and V by TMA instead, a box per page (PagedKvTma, load_paged_tma; the
// stage's barrier then counts one arrival with its bytes per issuing warp, and no fence).
#pragma once

#include <cute/tensor.hpp>
#include <type_traits>
#include <cutlass/gemm/collective/builders/sm90_common.inl>
#include <cutlass/pipeline/pipeline.hpp>

#include "flashserve/attention/prefill_tile_policy.h"

namespace flashserve::attention::sm90 {

// kHeadDim: of q and k; kHeadDimV: of v and the output (DeepSeek's qk 192 / v 128), else equal.
// kBlockM_: the tile's query rows, 0 = the head dim's default (prefill_tile_policy.h).
template <class Element_, int kHeadDim_, bool kUnmasked = false, bool kPaged_ = false,
          int kHeadDimV_ = kHeadDim_, int kBlockM_ = 0>
struct PrefillTraits {
  using Element = Element_;  // cutlass::bfloat16_t or cutlass::half_t
  static_assert(kBlockM_ == 0 || kBlockM_ == prefill_alt_block_m(kHeadDim_, kHeadDimV_),
                "kBlockM_: 0 or the head dim's alternative (prefill_alt_block_m)");
  static constexpr PrefillTile kTile = prefill_tile(kHeadDim_, kUnmasked, kHeadDimV_, kBlockM_);
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kHeadDimV = kHeadDimV_;
  static constexpr bool kPaged = kPaged_;
  static constexpr int kBlockM = kTile.block_m;
  static constexpr int kBlockN = kTile.block_n;
  static constexpr int kStages = kTile.stages;
  static constexpr int kNumMmaWG = kBlockM / 64;
  // Lazy O rescaling in the online softmax (online_softmax_sm90.cuh), at every head dim.
  static constexpr bool kLazyRescale = true;
  static constexpr int kNumMmaThreads = 128 * kNumMmaWG;
  static constexpr int kNumThreads = kNumMmaThreads + 128;
  // Register split after setmaxnreg: the producer needs few, the consumers hold S, P and O. The
  // paged producers (gather: an address per 16-byte copy; TMA: page lookups and box coordinates)
  // get more wherever two consumer warpgroups run: 40 / 232 up to v head dim 128, 56 / 224 at 192
  // and 256, whose blocks take 4 TMA boxes a row range (128 x P + 256 x C = the 168 x 384 of the
  // launch). nvdisasm of the head_dim 256 paged kernel: local-memory instructions in the
  // producer's region 61 at 24 registers, 82 -> 21 from 40 to 56 (consumers 9 -> 11); H100, b4 x
  // 4k: 24 -> 40 took paged / ragged from 0.74..0.87 to 0.85..0.93, 40 -> 56 a further 3..5%.
  static constexpr bool kWideProducer = kPaged && kNumMmaWG == 2;
  static constexpr int kProducerRegs =
      kNumMmaWG == 2 ? (kWideProducer ? (kHeadDimV > 128 ? 56 : 40) : 24) : 32;
  static constexpr int kConsumerRegs =
      kNumMmaWG == 2 ? (kWideProducer ? (kHeadDimV > 128 ? 224 : 232) : 240) : 160;

  using TileQK = cute::Shape<cute::Int<kBlockM>, cute::Int<kBlockN>, cute::Int<kHeadDim>>;
  using TilePV = cute::Shape<cute::Int<kBlockM>, cute::Int<kHeadDimV>, cute::Int<kBlockN>>;
  using WGLayout = cute::Layout<cute::Shape<cute::Int<kNumMmaWG>, cute::_1, cute::_1>>;
  using MmaQK = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float, TileQK>(), WGLayout{}));
  using MmaPV = decltype(cute::make_tiled_mma(
      cute::GMMA::rs_op_selector<Element, Element, float, TilePV, cute::GMMA::Major::K,
                                 cute::GMMA::Major::MN>(),
      WGLayout{}));

  using SmemAtomQ =
      decltype(cutlass::gemm::collective::detail::ss_smem_selector<
               cute::GMMA::Major::K, Element, cute::Int<kBlockM>, cute::Int<kHeadDim>>());
  using SmemLayoutQ = decltype(cute::tile_to_shape(
      SmemAtomQ{}, cute::Shape<cute::Int<kBlockM>, cute::Int<kHeadDim>>{}));
  using SmemAtomK =
      decltype(cutlass::gemm::collective::detail::ss_smem_selector<
               cute::GMMA::Major::K, Element, cute::Int<kBlockN>, cute::Int<kHeadDim>>());
  using SmemAtomV =
      decltype(cutlass::gemm::collective::detail::ss_smem_selector<
               cute::GMMA::Major::K, Element, cute::Int<kBlockN>, cute::Int<kHeadDimV>>());
  // (kBlockN, kHeadDim, kStages) and (kBlockN, kHeadDimV, kStages)
  using SmemLayoutK = decltype(cute::tile_to_shape(
      SmemAtomK{}, cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDim>, cute::Int<kStages>>{}));
  using SmemLayoutV = decltype(cute::tile_to_shape(
      SmemAtomV{}, cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDimV>, cute::Int<kStages>>{}));
  // The output buffer: kOCols columns of the (kBlockM, kHeadDimV) output tile, the whole width
  // where shared memory allows it (head_dim 64, 96, 128, 192), else half (256, qk 192 / v 128),
  // which the epilogue stores in two rounds. With its own buffer the consumers release Q's after
  // their last S = Q K^T, so the next tile's Q loads under the last P V and the epilogue (H100,
  // 512..4k tokens: +6..25% for head_dim 64 and 128; bench/NOTES.md).
  static constexpr int kTileSmemBytes =
      (kBlockM * kHeadDim + kStages * kBlockN * (kHeadDim + kHeadDimV)) * sizeof(Element);
  static constexpr bool o_fits(int cols) {
    return kTileSmemBytes + kBlockM * cols * int(sizeof(Element)) + 3072 <= 227 * 1024;
  }
  static constexpr int kOCols = o_fits(kHeadDimV) ? kHeadDimV : kHeadDimV / 2;
  static_assert(o_fits(kOCols) && kOCols % 16 == 0, "no room for the output buffer");
  static constexpr int kOChunks = kHeadDimV / kOCols;
  using SmemAtomO =
      decltype(cutlass::gemm::collective::detail::ss_smem_selector<
               cute::GMMA::Major::K, Element, cute::Int<kBlockM>, cute::Int<kOCols>>());
  using SmemLayoutO = decltype(cute::tile_to_shape(
      SmemAtomO{}, cute::Shape<cute::Int<kBlockM>, cute::Int<kOCols>>{}));
  // The output rows of one consumer warpgroup, (64, kOCols) within SmemLayoutO: the shared side
  // of its TMA store.
  using SmemLayoutOWG = decltype(cute::layout<0>(
      cute::zipped_divide(SmemLayoutO{}, cute::Shape<cute::_64, cute::Int<kOCols>>{})));
  // The P V accumulator restricted to kOCols columns: its C fragment is the first (or second)
  // half of the values of MmaPV's (the 8-column chunks are the fragment's outermost value mode),
  // which the epilogue's stmatrix copy partitions chunk by chunk.
  using MmaO = decltype(cute::make_tiled_mma(
      cute::GMMA::rs_op_selector<
          Element, Element, float,
          cute::Shape<cute::Int<kBlockM>, cute::Int<kOCols>, cute::Int<kBlockN>>,
          cute::GMMA::Major::K, cute::GMMA::Major::MN>(),
      WGLayout{}));
  // Columns of the K-major swizzle atom the selector picked (128-byte swizzle when the head dim is
  // a multiple of 64 elements, 64-byte at 96): the width of one TMA box of the paged loads.
  static constexpr int swizzle_cols(int d) { return d % 64 == 0 ? 64 : 32; }
  static constexpr int kSwizzleCols = swizzle_cols(kHeadDim);
  static constexpr int kSwizzleColsV = swizzle_cols(kHeadDimV);
  template <int kCols>
  using SwizzleAtom = std::conditional_t<kCols == 64, cute::GMMA::Layout_K_SW128_Atom<Element>,
                                         cute::GMMA::Layout_K_SW64_Atom<Element>>;
  static_assert(std::is_same_v<SmemAtomK, SwizzleAtom<kSwizzleCols>> &&
                    std::is_same_v<SmemAtomV, SwizzleAtom<kSwizzleColsV>>,
                "the paged TMA boxes assume the swizzle atom of kSwizzleCols columns");
  // V^T (kHeadDimV, kBlockN, kStages): the same bytes seen with head_dim as the MN mode.
  using SmemLayoutVt = decltype(cute::composition(
      SmemLayoutV{},
      cute::make_ordered_layout(
          cute::Shape<cute::Int<kHeadDimV>, cute::Int<kBlockN>, cute::Int<kStages>>{},
          cute::Step<cute::_2, cute::_1, cute::_3>{})));

  // Global views the TMA descriptors are built over: (tokens, head_dim, heads).
  using GmemShape = cute::Shape<int32_t, int32_t, int32_t>;
  using GmemStride = cute::Stride<int64_t, cute::_1, int64_t>;
  using GmemLayout = cute::Layout<GmemShape, GmemStride>;
  using TmaQ = decltype(cute::make_tma_copy(
      cute::SM90_TMA_LOAD{},
      cute::make_tensor(cute::make_gmem_ptr(static_cast<const Element*>(nullptr)), GmemLayout{}),
      SmemLayoutQ{}, cute::Shape<cute::Int<kBlockM>, cute::Int<kHeadDim>>{}, cute::_1{}));
  using TmaK = decltype(cute::make_tma_copy(
      cute::SM90_TMA_LOAD{},
      cute::make_tensor(cute::make_gmem_ptr(static_cast<const Element*>(nullptr)), GmemLayout{}),
      cute::take<0, 2>(SmemLayoutK{}), cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDim>>{},
      cute::_1{}));
  using TmaV = decltype(cute::make_tma_copy(
      cute::SM90_TMA_LOAD{},
      cute::make_tensor(cute::make_gmem_ptr(static_cast<const Element*>(nullptr)), GmemLayout{}),
      cute::take<0, 2>(SmemLayoutV{}), cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDimV>>{},
      cute::_1{}));
  using TmaO = decltype(cute::make_tma_copy(
      cute::SM90_TMA_STORE{},
      cute::make_tensor(cute::make_gmem_ptr(static_cast<Element*>(nullptr)), GmemLayout{}),
      SmemLayoutOWG{}, cute::Shape<cute::_64, cute::Int<kOCols>>{}, cute::_1{}));

  static constexpr int kNumProducerThreads = 128;  // the paged gather: the whole warpgroup
  using Pipeline = std::conditional_t<kPaged, cutlass::PipelineAsync<kStages>,
                                      cutlass::PipelineTmaAsync<kStages>>;
  using PipelineState = typename cutlass::PipelineState<kStages>;

  struct SharedStorage {
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutQ>> q;
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutK>> k;
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutV>> v;
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutO>> o;
    typename Pipeline::SharedStorage pipeline_k;
    typename Pipeline::SharedStorage pipeline_v;
    alignas(8) uint64_t q_full;
    // Paged TMA loads: the barrier of the V block holding the kv end, which lands here first so
    // that the rows past the kv length can be zeroed before the consumers see it.
    alignas(8) uint64_t kv_tail;
    // Written, never read: a slot per consumer warp that keeps the softmax's exponentials before
    // the P V wait (prefill_mainloop_sm90.cuh: three consumer warpgroups, ragged K / V).
    float sched_sink[kNumMmaThreads / 32];
  };
  static constexpr int kSmemBytes = sizeof(SharedStorage);
  static_assert(kSmemBytes <= 227 * 1024, "prefill tile does not fit in shared memory");
  static constexpr uint32_t kQBytes = kBlockM * kHeadDim * sizeof(Element);
  static constexpr uint32_t kKBytes = kBlockN * kHeadDim * sizeof(Element);
  static constexpr uint32_t kVBytes = kBlockN * kHeadDimV * sizeof(Element);
};

}  // namespace flashserve::attention::sm90
