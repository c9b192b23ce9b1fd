// The sampling tile policy: cluster size, chunk and residency for the shapes the issue names and
// for random ones (invariants the kernels rely on).
#include <gtest/gtest.h>

#include <cstdint>
#include <random>

#include "device_tensor.h"
#include "flashserve/sampling/tile_policy.h"

namespace {

namespace fs = flashserve::sampling;

constexpr int kSms = 132;
constexpr int64_t kMaxDyn = 227 * 1024 - 13 * 1024 - 1024;  // H100 opt-in less static smem

TEST(SamplingPolicy, IssueShapes) {
  // Decode batches: 8 CTAs of 64 KB (128256) / 76 KB (151936): two CTAs per SM.
  for (int64_t rows : {16, 64, 256}) {
    const fs::SamplingTile t = fs::choose_sampling_tile(rows, 128256, kSms, kMaxDyn, 16);
    EXPECT_EQ(t.cluster, 8) << rows;
    EXPECT_EQ(t.chunk, 16032);
    EXPECT_TRUE(t.resident);
    EXPECT_EQ(t.smem_bytes, 16032 * 4);
    const fs::SamplingTile q = fs::choose_sampling_tile(rows, 151936, kSms, kMaxDyn, 16);
    EXPECT_EQ(q.cluster, 8);
    EXPECT_EQ(q.chunk, 18992);
    EXPECT_LE(q.smem_bytes, fs::kTwoPerSmBytes);
  }
  // One row: 16 CTAs (latency), or 8 where the device refuses 16-CTA clusters.
  EXPECT_EQ(fs::choose_sampling_tile(1, 128256, kSms, kMaxDyn, 16).cluster, 16);
  EXPECT_EQ(fs::choose_sampling_tile(1, 128256, kSms, kMaxDyn, 8).cluster, 8);
  EXPECT_EQ(fs::choose_sampling_tile(4, 151936, kSms, kMaxDyn, 16).cluster, 16);
}

TEST(SamplingPolicy, LargeAndSmallVocabularies) {
  // 256k: 16 CTAs of 64 KB, or 8 of 128 KB (one CTA per SM) without 16-CTA clusters.
  const fs::SamplingTile a = fs::choose_sampling_tile(64, 256000, kSms, kMaxDyn, 16);
  EXPECT_EQ(a.cluster, 16);
  EXPECT_TRUE(a.resident);
  const fs::SamplingTile b = fs::choose_sampling_tile(64, 256000, kSms, kMaxDyn, 8);
  EXPECT_EQ(b.cluster, 8);
  EXPECT_TRUE(b.resident);
  EXPECT_EQ(b.smem_bytes, 32000 * 4);
  // Beyond what 16 CTAs hold: streaming, no shared-memory row.
  const fs::SamplingTile c = fs::choose_sampling_tile(2, 1000003, kSms, kMaxDyn, 16);
  EXPECT_FALSE(c.resident);
  EXPECT_EQ(c.cluster, 16);
  EXPECT_EQ(c.smem_bytes, fs::stream_hist_bytes(c.threads));
  EXPECT_GE(int64_t{c.chunk} * c.cluster, 1000003);
  // Tiny rows: one CTA.
  const fs::SamplingTile d = fs::choose_sampling_tile(1, 7, kSms, kMaxDyn, 16);
  EXPECT_EQ(d.cluster, 1);
  EXPECT_EQ(d.chunk, 8);
  EXPECT_EQ(d.threads, fs::kSmallChunkThreads);
  EXPECT_EQ(a.threads, fs::kSamplingThreads);
}

TEST(SamplingPolicy, LargeBatchesStream) {
  // 256 x 128256 resident needs 2048 CTAs of 64 KB (eight waves of two a SM): streaming, one CTA a
  // row. Top-p (a resume launch for the undecided rows) streams from ~SMs rows (128: 2 CTAs a
  // row), plain sampling from 100; 64 rows (4 CTAs a row if streamed) measured slower: resident.
  for (bool plain : {true, false}) {
    for (int64_t rows : {133, 256, 1024}) {
      const fs::SamplingTile r = fs::choose_sampling_tile(rows, 128256, kSms, kMaxDyn, 16);
      EXPECT_TRUE(fs::prefer_stream(rows, 128256, kSms, r, plain)) << rows;
      EXPECT_EQ(fs::choose_stream_tile(rows, 128256, kSms, 16).cluster, 1);
    }
    for (int64_t rows : {1, 16, 32, 64}) {
      const fs::SamplingTile r = fs::choose_sampling_tile(rows, 151936, kSms, kMaxDyn, 16);
      EXPECT_FALSE(fs::prefer_stream(rows, 151936, kSms, r, plain)) << rows;
    }
    const fs::SamplingTile r128 = fs::choose_sampling_tile(128, 151936, kSms, kMaxDyn, 16);
    EXPECT_TRUE(fs::prefer_stream(128, 151936, kSms, r128, plain));
    const fs::SamplingTile r100 = fs::choose_sampling_tile(100, 128256, kSms, kMaxDyn, 16);
    EXPECT_EQ(fs::prefer_stream(100, 128256, kSms, r100, plain), plain);
  }
  EXPECT_EQ(fs::choose_stream_tile(64, 128256, kSms, 16).cluster, 4);
  EXPECT_EQ(fs::choose_stream_tile(128, 128256, kSms, 16).cluster, 2);
  const fs::SamplingTile s = fs::choose_stream_tile(256, 128256, kSms, 16);
  EXPECT_FALSE(s.resident);
  EXPECT_EQ(s.chunk, 128256);
  EXPECT_EQ(s.threads, fs::kSamplingThreads);
  EXPECT_EQ(s.smem_bytes, fs::stream_hist_bytes(fs::kSamplingThreads));
  // Short rows stay resident however many.
  const fs::SamplingTile r1k = fs::choose_sampling_tile(100000, 1000, kSms, kMaxDyn, 16);
  EXPECT_FALSE(fs::prefer_stream(100000, 1000, kSms, r1k, true));
  // Every streaming tile covers the row and runs at most two CTAs a SM when rows allow.
  for (int64_t rows : {1, 3, 17, 64, 100, 131, 132, 133, 264, 265, 4096}) {
    for (int64_t vocab : {1, 4096, 16384, 128256, 151936, 256000}) {
      const fs::SamplingTile t = fs::choose_stream_tile(rows, vocab, kSms, 16);
      ASSERT_GE(int64_t{t.chunk} * t.cluster, vocab);
      ASSERT_EQ(t.chunk % fs::kChunkAlign, 0);
      ASSERT_TRUE(t.cluster == 1 || rows * t.cluster <= 2 * kSms) << rows << " x " << vocab;
    }
  }
}

TEST(SamplingPolicy, Invariants) {
  std::mt19937_64 rng(fs_test::fresh_seed());
  for (int i = 0; i < 5000; ++i) {
    const int64_t rows = 1 + rng() % 512;
    const int64_t vocab = 1 + rng() % (i % 2 ? 300000 : 3000000);
    const int max_cluster = rng() % 2 ? 16 : 8;
    const int64_t max_dyn = 48 * 1024 + rng() % (180 * 1024);
    const fs::SamplingTile t = fs::choose_sampling_tile(rows, vocab, kSms, max_dyn, max_cluster);
    SCOPED_TRACE(::testing::Message() << rows << " x " << vocab << " max_dyn " << max_dyn);
    ASSERT_GE(t.cluster, 1);
    ASSERT_LE(t.cluster, max_cluster);
    ASSERT_EQ(t.cluster & (t.cluster - 1), 0);
    ASSERT_EQ(t.chunk % fs::kChunkAlign, 0);
    ASSERT_TRUE(t.threads == fs::kSamplingThreads ||
                (t.threads == fs::kSmallChunkThreads && t.chunk <= fs::kSmallChunk));
    ASSERT_GE(int64_t{t.chunk} * t.cluster, vocab);
    ASSERT_LT(int64_t{t.chunk} * (t.cluster - 1), vocab + fs::kChunkAlign * t.cluster);
    if (t.resident) {
      ASSERT_EQ(t.smem_bytes, int64_t{t.chunk} * 4);
      ASSERT_LE(t.smem_bytes, max_dyn);
    } else {
      ASSERT_EQ(t.smem_bytes, fs::stream_hist_bytes(t.threads));
      ASSERT_GT(fs::sampling_chunk(vocab, max_cluster) * 4, max_dyn);
    }
  }
}

}  // namespace
