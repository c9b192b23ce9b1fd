// How the paged KV append is laid out on the GPU; the one place its tuning choices live.
//
// The unit of work is one warp: one new token, and a slice of at most 32 * kAppendItems vectors of
// its [kv_heads, head_dim] row, for K and V both. A warp issues all its K and V loads first, then
// finds the token's request and page (a few dependent loads of the page table, overlapping the
// K/V loads in flight), then stores. With 16-byte vectors a slice is 2 KiB of K and 2 KiB of V:
// one warp carries a whole 8 x 128 bf16 token; rows of 4096+ elements (8 x 512) are split over
// several warps, so that a handful of decode tokens still spreads over many SMs.
//  - kAppendItems = 4: 8 vectors (128 bytes) in flight per thread, ~40 registers; at 16 warps per
//    SM that is far more than the bytes in flight HBM needs (~16 KB per SM), so the copy is
//    bandwidth-bound while the search latency of each warp hides behind the others.
//  - 4 warps per block: small grids (1..256 tokens) land on as many SMs as possible.
#pragma once

#include <algorithm>
#include <cstdint>

namespace flashserve::page {

constexpr int kAppendItems = 4;
constexpr int kAppendThreads = 128;

struct AppendTile {
  int64_t slices = 0;  // warps per token
  int64_t units = 0;   // new_tokens * slices warps of work
  int64_t blocks = 0;
};

// row_vecs: vectors (elements on the scalar path) in one token's [kv_heads, head_dim] row.
inline AppendTile choose_append_tile(int64_t new_tokens, int64_t row_vecs) {
  AppendTile t;
  constexpr int64_t kSliceVecs = 32 * kAppendItems;
  constexpr int64_t kWarpsPerBlock = kAppendThreads / 32;
  t.slices = std::max<int64_t>(1, (row_vecs + kSliceVecs - 1) / kSliceVecs);
  t.units = new_tokens * t.slices;
  // Warps stride over the units when the grid would exceed the launch limit (never in practice).
  t.blocks = std::min<int64_t>((t.units + kWarpsPerBlock - 1) / kWarpsPerBlock, int64_t{1} << 30);
  return t;
}

}  // namespace flashserve::page
