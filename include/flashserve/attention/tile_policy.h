// How paged decode attention is laid out on the GPU; the one place its tuning choices live.
//
// A CTA of 4 warps runs one work item (<= 8 query rows of one kv head over a kv range). Each warp
// streams its own tiles of the range (tiles w, w + 4, ...) through a private 3-stage cp.async
// pipeline, so warps never wait on each other until the final combine. A tile is 32 lanes wide:
// each token's K row is split over kLanesPerToken lanes of 128 bytes, so a tile is always 4 KiB of
// K plus 4 KiB of V (32 tokens at head_dim 64 bf16 / 128 fp8, 16 at 128 bf16, 8 at 256 bf16):
// 8 KiB per stage, 96 KiB per CTA, 2 CTAs (8 pipelines, ~128 KiB of loads in flight) per SM.
#pragma once

namespace flashserve::attention {

template <int kHeadDim_, int kKVBytes_>
struct DecodeTile {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kKVBytes = kKVBytes_;  // bytes per cache element (2, or 1 for fp8)
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kStages = 3;
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
  static_assert(kRowBytes % 64 == 0, "head_dim * element size must be a multiple of 64 bytes");
  static_assert(kTileTokens * kRowChunks % 32 == 0, "a tile must be whole warp copies");
};

// CTAs per SM the non-deterministic split policy aims to fill (the kernel's occupancy).
constexpr int kDecodeCtasPerSm = 2;

}  // namespace flashserve::attention
