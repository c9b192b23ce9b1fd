// How paged decode attention is laid out on the GPU; the one place its tuning choices live.
//
// A CTA of 4 warps runs one work item (<= 8 query rows of one kv head over a kv range). Each warp
// streams its own tiles of the range (tiles w, w + 4, ...) through a private 2-stage cp.async
// pipeline, so warps never wait on each other until the final combine. A tile is 32 lanes wide:
// each token's K row is split over kLanesPerToken lanes of 128 bytes, so a tile is always 4 KiB of
// K plus 4 KiB of V (32 tokens at head_dim 64 bf16 / 128 fp8, 16 at 128 bf16, 8 at 256 bf16):
// 8 KiB per stage, 64 KiB per CTA (+ ~6 KiB of q and p), 2 CTAs per SM (kDecodeCtasPerSm). Plans
// whose capacity has few units take the wide CTA instead: 8 warps, one per SM
// (decode_wide_max_units below).
//
// Why 2 stages: with 3 stages (104.5 KB per CTA) and 168 registers; ncu on an H200
// (bf16, 32/8 heads x 128, page 16, batch 64 x kv 2048) showed 12.5% theoretical occupancy,
// SM issue 51%, DRAM 29% (1.84 TB/s): the warps stall on their own dependent QK/softmax/PV
// chains, not on memory (a tile's compute takes several us per warp, far more than one DRAM
// latency, so one tile of prefetch per warp is enough). 3 CTAs/SM fit in shared memory but cap
// registers at 168 and spill (measured below); 4 would need <= 56 KiB and <= 128 registers.
#pragma once

namespace flashserve::attention {

// Tensor-core QK / PV (mma.sync m16n8k16, fp32 accumulate) instead of the CUDA-core chains; the
// global switch, refined per tile below (DecodeTile::kUseMma).
constexpr bool kDecodeUseMma = true;

// fp8 (e4m3 / e5m2) K/V at head_dim 128 on the tensor-core body too (decode_item_mma,
// DecodeTile::kFp8Mma): the fp8 tile stays in shared memory as loaded (no 16-bit staging, no extra
// shared memory); lanes read it with 16-byte loads and convert pairs (cvt.rn.f16x2.e4m3x2 / e5m2x2,
// then to bf16 when q is bf16) straight into B fragments. false: the CUDA-core body, as before.
constexpr bool kDecodeFp8UseMma = true;

// mma body: issue tile k + 1's copies before waiting for tile k (two tiles in flight while a warp
// waits, not one; same shared memory), and start the first tile's copies before loading q.
// false: the previous order (wait, then issue the next tile; q first).
constexpr bool kDecodeEarlyPrefetch = true;

// The wide CTA (kDecodeWideWarps warps, one CTA per SM) for plans whose capacity has few units;
// see decode_use_wide_ctas below.
constexpr int kDecodeWideWarps = 8;

template <int kHeadDim_, int kKVBytes_, int kWarps_ = 4>
struct DecodeTile {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kKVBytes = kKVBytes_;  // bytes per cache element (2, or 1 for fp8)
  static constexpr int kWarps = kWarps_;      // 4, or kDecodeWideWarps for the wide CTA
  static_assert(kWarps == 4 || kWarps == kDecodeWideWarps, "4 or 8 warps a CTA");
  static constexpr int kThreads = kWarps * 32;
  // CTAs per SM the kernel is built for (__launch_bounds__ min blocks; the shared-memory fit is
  // static_asserted in decode_kernel.cuh): two 4-warp CTAs or one wide CTA, 8 warps either way.
  static constexpr int kCtasPerSm = 8 / kWarps;
  static constexpr int kStages = 2;
  static constexpr int kRowBytes = kHeadDim * kKVBytes;  // one token's K (or V) of one head
  static constexpr int kLanesPerToken = kRowBytes >= 128 ? kRowBytes / 128 : 1;
  static constexpr int kTileTokens = 32 / kLanesPerToken;
  static constexpr int kPartBytes = kRowBytes / kLanesPerToken;  // of K, per lane in the QK dot
  static constexpr int kPartChunks = kPartBytes / 16;
  static constexpr int kPartElems = kHeadDim / kLanesPerToken;
  static constexpr int kRowChunks = kRowBytes / 16;
  static constexpr int kDimsPerLane = kHeadDim / 32;          // of V and the output, per lane
  static constexpr int kTileBytes = kTileTokens * kRowBytes;  // K (or V) of one stage
  static constexpr int kStageBytes = 2 * kTileBytes;
  static constexpr int kPipeBytes = kWarps * kStages * kStageBytes;
  // mma path (decode_item_mma in decode_kernel.cuh), for every item of the tile:
  //  - 16-bit K/V (bf16 / fp16 are the mma inputs; K by ldmatrix, V by ldmatrix.trans), or fp8
  //    at head_dim 128 (the last item below);
  //  - tiles of >= 16 tokens (the k of the PV mma): head_dim 64 (32 tokens) and 128 (16 tokens);
  //    head_dim 256 has 8-token tiles and its 16 x 256 fp32 output fragment would be 128
  //    registers per lane (on top of ~70 for the rest, at the 255 cap of 2 CTAs/SM): CUDA cores.
  //  - registers (ptxas, sm_90a, no spills): head_dim 128 bf16 201 (CUDA-core body: 216), 64: 168
  //    (196); fp8 at 128: 190 with bf16 q, 187 with fp16 q. Since the merge loads 32 partials a
  //    round (kDecodeMergeLoads below) the kernel's count is the merge's: 234 / 222 / 234 (fp8).
  // With it V is XOR-swizzled like K, so that ldmatrix.trans over 8 token rows is conflict-free.
  //  - fp8 at head_dim 128 (kDecodeFp8UseMma): 32-token tiles of 128-byte rows, converted to the
  //    q type while building the B fragments (decode_item_mma); head_dim 64 / 256 fp8: CUDA cores.
  static constexpr bool kFp8Mma = kDecodeUseMma && kDecodeFp8UseMma && kKVBytes == 1 &&
                                  kHeadDim == 128 && kTileTokens == 32 && kPartBytes == 128;
  static constexpr bool kUseMma =
      (kDecodeUseMma && kKVBytes == 2 && kTileTokens >= 16 && kTileTokens % 16 == 0 &&
       kHeadDim <= 128 && kHeadDim % 16 == 0 && kPartBytes == 128) ||
      kFp8Mma;
  static_assert(kRowBytes % 64 == 0, "head_dim * element size must be a multiple of 64 bytes");
  static_assert(kTileTokens * kRowChunks % 32 == 0, "a tile must be whole warp copies");
};

// Measured on an H200 (bf16, 32/8 x 128, page 16), 2-stage pipeline: 2 CTAs/SM (no spills)
// 3.10 / 3.32 TB/s at b64 x kv4096 / 32768; 3 CTAs/SM (168-register cap, 72 B spills) 2.76 / 2.98
// there but 2.91 vs 2.68 at b16 x 4096. Large batches decide: 2.
// CTAs per SM of the 4-warp tile (DecodeTile::kCtasPerSm), which the non-deterministic split
// policy aims to fill (src/api/decode.cu: target_ctas = SMs x this), so batch-1 long-context splits
// fill every slot.
constexpr int kDecodeCtasPerSm = 2;

// The wide CTA: 8 warps and one CTA per SM instead of two 4-warp CTAs (the same warps and shared
// memory per SM), so a unit is cut into half as many splits, each warp keeps its tiles, and the
// merge has 256 threads and half the partials. Measured on the H100 with bench/tools/decode_trace
// (bf16, page 16, graph; 4-warp -> wide, us):
//  - 256-byte rows (head_dim 128): batch 1 x 4k Llama-3-70B 11.27 -> 9.95, Qwen2.5-7B 10.79 ->
//    8.64, Qwen3-14B 10.69 -> 9.82, Llama-3-8B 9.90 -> 9.88 (its merge already took one round);
//    1 x 32k Qwen2.5 34.1 -> 31.2, Llama-3-8B 53.3 -> 53.6; but b2 x 4k Llama-3-8B 12.5 -> 12.8,
//    b16 x 4k 97 -> 101, b64 x 2k 184 -> 187, b256 x 1k 362 -> 375 (a CTA's item changes idle
//    the whole SM).
//  - 512-byte rows (head_dim 256, CUDA-core body): 1 x 4k 28.4 -> 19.8, Qwen2.5 28.1 -> 18.3, 1 x
//  32k
//    115 -> 105, b16 x 4k 197 -> 196, b64 x 2k 370 -> 373.
//  - 128-byte rows (head_dim 64): 1 x 4k 8.27 -> 8.43, b16 x 4k 54.8 -> 59.0: never.
// The gain at 256-byte rows is the merge's second round of loads, which a unit of more than 4 rows
// (group > 4 for one query token) needs with 128 threads; Llama-3-8B's 4-row units merge in one
// and gained nothing (bench beside cuDNN: 1 x 32k 52.2 -> 54.0 us across two sessions).
// So the plan takes it (non-deterministic plans only: the warps' combine order is part of the
// bits) when the units its capacity allows (decode_capacity_units in src/plan/decode_plan.h) are
// at most this many; 0: never.
constexpr int decode_wide_max_units(int head_dim, int kv_bytes, int group, int num_sms) {
  const int row_bytes = head_dim * kv_bytes;
  return row_bytes >= 512 ? num_sms / 2 : row_bytes >= 256 && group > 4 ? 16 : 0;
}

// Whether a (head_dim, cache element bytes) specialization has a wide kernel at all: some group
// and device take it. The prebuilt and run-time-compiled images instantiate it only then.
constexpr bool decode_has_wide(int head_dim, int kv_bytes) {
  return decode_wide_max_units(head_dim, kv_bytes, /*group=*/8, /*num_sms=*/1 << 20) > 0;
}

// CUDA-core path (tiles without kUseMma): items with at most this many rows run the reduced-row
// body (GQA group 4 x 1 query token: half the per-token FMAs and shared-memory q reads of the 8-row
// body).
constexpr int kDecodeSmallRows = 4;

// The split-KV merge (merge_unit in decode_kernel.cuh) by the CTA of a unit's last item: its T
// threads (128, or 256 in the wide CTA) load partials straight into registers, up to
// kDecodeMergeLoads 16-byte loads per thread and round; a round costs one L2 round trip (0.6..1 us
// at batch 1 on the H100: the partials were just written by other SMs). A column is 4 dims of one
// row: with at most T columns the partials are shared out between T / columns thread groups,
// otherwise each thread takes 2 x head_dim / T columns (an 8-row partial's share),
// kDecodeMergeLoads / (2 x head_dim / T) partials of each per round.
// 32 (was 24): batch 1 x 4096 units (32 partials of 4..8 rows) need one round fewer; the merge
// runs after the tiles, so its registers are free (ptxas, sm_90a: 222..255 registers, no spills;
// 40 spills at head_dim 256). Trace tool A/B on the H100: b1 x 4k -0.35..-0.55 us a model.
constexpr int kDecodeMergeLoads = 32;

// Rounds of loads to merge n partials of `rows` rows in one CTA of `threads` threads
// (DecodeTile::kThreads).
constexpr int decode_merge_rounds(int n, int rows, int head_dim, int threads) {
  const int cols = rows * head_dim / 4;
  if (cols <= threads) {
    const int groups = threads / cols < n ? threads / cols : n;
    const int per_thread = (n + groups - 1) / groups;
    return (per_thread + kDecodeMergeLoads - 1) / kDecodeMergeLoads;
  }
  // merge_unit's columns per thread: those of an 8-row partial (kDecodeMaxRows x head_dim / 4).
  const int per_round = kDecodeMergeLoads / (2 * head_dim / threads);
  return (n + per_round - 1) / per_round;
}

// Two-level merge of a unit's n partials: groups of k consecutive splits are merged by their own
// last item into a group partial, and the last group merges the groups. Each level costs a count
// (an acq_rel atomic, ~0.8 us) on top of its rounds, so a tree is used only where it saves >= 2
// rounds (Qwen2.5-7B, 7 rows, at 1 x 32k: 66 partials, 6 rounds -> 1 + 1). Returns k, or 0 for one
// level; k >= 4 and n >= 2k, so a unit adds ceil(n / k) <= 3n / 8 group partials.
constexpr int decode_merge_group(int n, int rows, int head_dim, int threads) {
  const int single = decode_merge_rounds(n, rows, head_dim, threads);
  int best_k = 0, best_r = single - 1, best_w = 0;
  for (int k = 4; 2 * k <= n; ++k) {
    const int ng = (n + k - 1) / k;
    const int r = decode_merge_rounds(k, rows, head_dim, threads) +
                  decode_merge_rounds(ng, rows, head_dim, threads);
    const int w = k > ng ? k : ng;  // ties: the most even split of the two levels
    if (r < best_r || (r == best_r && best_k > 0 && w < best_w)) {
      best_k = k;
      best_r = r;
      best_w = w;
    }
  }
  return best_k;
}

}  // namespace flashserve::attention
