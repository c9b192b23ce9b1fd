// choose_norm_tile (include/flashserve/norm/tile_policy.h): the launch shape of a row norm.
#include <gtest/gtest.h>

#include <cstdint>

#include "flashserve/norm/tile_policy.h"

using flashserve::norm::choose_norm_tile;
using flashserve::norm::NormTile;

namespace {

constexpr int kVecBf16 = 8;  // 16-byte vectors of bf16 / fp16
constexpr int kVecF32 = 4;

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

bool is_streaming(const NormTile& t) {
  return !t.warp_per_row && t.items == 0;
}

TEST(NormTilePolicy, WarpPerRowForSmallRows) {
  // (hidden, expected items): nvec <= 32 -> 1, <= 64 -> 2, <= 128 -> 4.
  const struct {
    int hidden, items;
  } cases[] = {{8, 1}, {128, 1}, {256, 1}, {264, 2}, {512, 2}, {520, 4}, {1024, 4}};
  for (const auto& c : cases) {
    const NormTile t = choose_norm_tile(100, c.hidden, kVecBf16);
    EXPECT_TRUE(t.warp_per_row) << c.hidden;
    EXPECT_EQ(t.items, c.items) << c.hidden;
    EXPECT_EQ(t.threads, 256) << c.hidden;
    EXPECT_EQ(t.blocks, ceil_div(100, 256 / 32)) << c.hidden;
    // One warp covers the row.
    EXPECT_GE(int64_t{32} * t.items * kVecBf16, c.hidden) << c.hidden;
  }
}

TEST(NormTilePolicy, WarpPerRowBlockCount) {
  for (int64_t rows :
       {int64_t{1}, int64_t{7}, int64_t{8}, int64_t{9}, int64_t{16384}, int64_t{2147483647}}) {
    const NormTile t = choose_norm_tile(rows, 128, kVecBf16);
    ASSERT_TRUE(t.warp_per_row);
    const int rows_per_block = t.threads / 32;
    EXPECT_GE(t.blocks * rows_per_block, rows) << rows;
    EXPECT_LT((t.blocks - 1) * rows_per_block, rows) << rows;
  }
}

TEST(NormTilePolicy, BlockPerRowJustAboveWarpLimit) {
  const NormTile t = choose_norm_tile(16, 1032, kVecBf16);  // 129 vectors
  EXPECT_FALSE(t.warp_per_row);
  EXPECT_EQ(t.items, 1);
  EXPECT_EQ(t.threads, 160);  // 129 threads rounded up to whole warps
  EXPECT_EQ(t.blocks, 16);
}

TEST(NormTilePolicy, Hidden4096Bf16) {
  const NormTile t = choose_norm_tile(16384, 4096, kVecBf16);  // 512 vectors
  EXPECT_FALSE(t.warp_per_row);
  EXPECT_EQ(t.items, 2);
  EXPECT_EQ(t.threads, 256);
  EXPECT_EQ(t.blocks, 16384);
  EXPECT_EQ(int64_t{t.items} * t.threads * kVecBf16, 4096);
}

TEST(NormTilePolicy, Hidden8192Bf16) {
  const NormTile t = choose_norm_tile(16384, 8192, kVecBf16);  // 1024 vectors
  EXPECT_FALSE(t.warp_per_row);
  EXPECT_EQ(t.items, 4);
  EXPECT_EQ(t.threads, 256);
  EXPECT_EQ(t.blocks, 16384);
  EXPECT_EQ(int64_t{t.items} * t.threads * kVecBf16, 8192);
}

TEST(NormTilePolicy, Hidden4096Float32) {
  const NormTile t = choose_norm_tile(3, 4096, kVecF32);  // 1024 vectors
  EXPECT_EQ(t.items, 4);
  EXPECT_EQ(t.threads, 256);
  EXPECT_EQ(t.blocks, 3);
}

TEST(NormTilePolicy, LargestRegisterTile) {
  // 32768 bf16: 4096 vectors = 8 items x 512 threads, the largest row kept in registers.
  const NormTile t = choose_norm_tile(2, 32768, kVecBf16);
  EXPECT_EQ(t.items, 8);
  EXPECT_EQ(t.threads, 512);
  EXPECT_EQ(t.blocks, 2);
  const NormTile t16k = choose_norm_tile(2, 16384, kVecBf16);
  EXPECT_EQ(t16k.items, 8);
  EXPECT_EQ(t16k.threads, 256);
}

TEST(NormTilePolicy, StreamingForHugeHidden) {
  for (int hidden : {32768 + kVecBf16, 65536, 1 << 20, (1 << 30)}) {
    const NormTile t = choose_norm_tile(5, hidden, kVecBf16);
    EXPECT_TRUE(is_streaming(t)) << hidden;
    EXPECT_EQ(t.threads, 512) << hidden;
    EXPECT_EQ(t.blocks, 5) << hidden;
  }
}

TEST(NormTilePolicy, UnalignedHiddenNeedsScalarVectors) {
  // hidden not a multiple of vec: no tiling at all with that vec; the caller retries with vec 1,
  // which always streams.
  for (int hidden : {1, 7, 113, 1023, 4097, 8191}) {
    const NormTile t = choose_norm_tile(9, hidden, kVecBf16);
    EXPECT_FALSE(t.warp_per_row) << hidden;
    EXPECT_EQ(t.items, 0) << hidden;
    const NormTile s = choose_norm_tile(9, hidden, 1);
    EXPECT_TRUE(is_streaming(s)) << hidden;
    EXPECT_EQ(s.threads, 512) << hidden;
    EXPECT_EQ(s.blocks, 9) << hidden;
  }
}

TEST(NormTilePolicy, ScalarVectorsAlwaysStream) {
  for (int hidden : {8, 64, 4096}) {
    const NormTile t = choose_norm_tile(4, hidden, 1);
    EXPECT_TRUE(is_streaming(t)) << hidden;
    EXPECT_EQ(t.blocks, 4) << hidden;
  }
}

TEST(NormTilePolicy, ZeroRows) {
  EXPECT_EQ(choose_norm_tile(0, 128, kVecBf16).blocks, 0);
  EXPECT_EQ(choose_norm_tile(0, 4096, kVecBf16).blocks, 0);
}

// Invariants over every aligned hidden size up to beyond the register limit.
TEST(NormTilePolicy, InvariantsOverAllSizes) {
  for (int vec : {2, 4, 8}) {
    for (int hidden = vec; hidden <= 40000; hidden += vec) {
      const int64_t rows = 37;
      const NormTile t = choose_norm_tile(rows, hidden, vec);
      const int nvec = hidden / vec;
      SCOPED_TRACE(::testing::Message() << "vec " << vec << " hidden " << hidden);
      if (t.warp_per_row) {
        ASSERT_LE(nvec, 128);
        ASSERT_TRUE(t.items == 1 || t.items == 2 || t.items == 4);
        ASSERT_GE(32 * t.items, nvec);  // the warp covers the row
        if (t.items > 1) {              // with the fewest items
          ASSERT_LT(32 * (t.items / 2), nvec);
        }
        ASSERT_EQ(t.threads, 256);
        ASSERT_EQ(t.blocks, ceil_div(rows, 8));
      } else if (t.items > 0) {
        ASSERT_GT(nvec, 128);
        ASSERT_TRUE(t.items == 1 || t.items == 2 || t.items == 4 || t.items == 8);
        ASSERT_EQ(t.threads % 32, 0);
        ASSERT_LE(t.threads, t.items == 8 ? 512 : 256);
        ASSERT_GE(int64_t{t.items} * t.threads, nvec);       // one block covers the row
        ASSERT_LT(t.threads - 32, ceil_div(nvec, t.items));  // no idle warp
        if (t.items > 1) {                                   // with the fewest items
          ASSERT_GT(ceil_div(nvec, t.items / 2), 256);
        }
        ASSERT_EQ(t.blocks, rows);
      } else {
        ASSERT_GT(nvec, 8 * 512);  // only rows too large for registers stream
        ASSERT_EQ(t.threads, 512);
        ASSERT_EQ(t.blocks, rows);
      }
    }
  }
}

}  // namespace
