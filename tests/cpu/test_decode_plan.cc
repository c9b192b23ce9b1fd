// The decode split-KV schedule (src/plan/decode_plan.h) on the CPU: coverage of every (request,
// kv head, query row, kv token) exactly once, SM filling, deterministic split invariance,
// capacities and the workspace layout.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <tuple>
#include <vector>

#include "flashserve/attention/tile_policy.h"
#include "plan/decode_plan.h"

namespace {

using flashserve::plan::DecodeSchedule;
using flashserve::plan::DecodeScheduleInput;

struct Table {
  std::vector<int32_t> indptr{0}, last, q_indptr{0};
  Table(const std::vector<int>& lens, int page_size, const std::vector<int>& q = {}) {
    for (size_t b = 0; b < lens.size(); ++b) {
      const int pages = (lens[b] + page_size - 1) / page_size;
      indptr.push_back(indptr.back() + pages);
      last.push_back(pages ? lens[b] - (pages - 1) * page_size : 0);
      q_indptr.push_back(q_indptr.back() + (q.empty() ? 1 : q[b]));
    }
  }
  DecodeScheduleInput input(int kv_heads, int group, int page_size, bool multi = false) const {
    DecodeScheduleInput in;
    in.indptr = indptr.data();
    in.last_page_len = last.data();
    in.q_indptr = multi ? q_indptr.data() : nullptr;
    in.batch = static_cast<int64_t>(last.size());
    in.page_size = page_size;
    in.num_kv_heads = kv_heads;
    in.group = group;
    in.head_dim = 128;
    in.target_ctas = 132 * 2;
    return in;
  }
};

// Every (request, head, row, token) covered once; merges list exactly the split units.
void expect_cover(const DecodeScheduleInput& in, const std::vector<int>& lens,
                  const std::vector<int>& nq, const DecodeSchedule& s) {
  std::map<std::tuple<int, int, int>, std::vector<int>> seen;  // (b, head, row) -> token counts
  std::map<int, int> items_of_merge;  // merge item -> work items that count into it
  for (const auto& w : s.work) {
    ASSERT_LE(w.row_end - w.row_begin, flashserve::attention::kDecodeMaxRows);
    ASSERT_EQ(w.kv_len, lens[w.request]);
    ASSERT_EQ(w.page_begin, in.indptr[w.request]);
    ASSERT_EQ(w.page_end, in.indptr[w.request + 1]);
    if (w.partial >= 0) {
      // The unit's merge record: same rows, and the partial inside its range.
      ASSERT_GE(w.merge, 0);
      ASSERT_LT(w.merge, static_cast<int>(s.merge.size()));
      const auto& m = s.merge[w.merge];
      EXPECT_EQ(m.request, w.request);
      EXPECT_EQ(m.kv_head, w.kv_head);
      EXPECT_EQ(m.row_begin, w.row_begin);
      EXPECT_EQ(m.num_partials, w.num_partials);
      EXPECT_EQ(m.partial_begin, w.partial_begin);
      EXPECT_GE(w.partial, m.partial_begin);
      EXPECT_LT(w.partial, m.partial_begin + m.num_partials);
      items_of_merge[w.merge]++;
    }
    for (int r = w.row_begin; r < w.row_end; ++r) {
      auto& v = seen[{w.request, w.kv_head, r}];
      v.resize(lens[w.request] + 1, 0);
      if (w.kv_begin == w.kv_end) v[lens[w.request]]++;  // the empty item of a kv_len 0 request
      for (int t = w.kv_begin; t < w.kv_end; ++t)
        v[t]++;
    }
  }
  for (size_t b = 0; b < lens.size(); ++b) {
    for (int h = 0; h < in.num_kv_heads; ++h) {
      for (int r = 0; r < nq[b] * in.group; ++r) {
        auto it = seen.find({static_cast<int>(b), h, r});
        ASSERT_NE(it, seen.end()) << "request " << b << " head " << h << " row " << r;
        if (lens[b] == 0) {
          EXPECT_EQ(it->second[0], 1);
        } else {
          for (int t = 0; t < lens[b]; ++t)
            ASSERT_EQ(it->second[t], 1) << "request " << b << " head " << h << " token " << t;
        }
      }
    }
  }
  // Slots: a unit's split partials, then its group partials (two-level merge), disjoint from every
  // other unit's; the tree is the one decode_merge_group picks for the unit's shape.
  std::map<int, int> group_of_merge;
  for (const auto& w : s.work) {
    if (w.partial < 0) {
      EXPECT_EQ(w.merge_group, 0);
      continue;
    }
    const int expected = flashserve::attention::decode_merge_group(
        w.num_partials, w.row_end - w.row_begin, in.head_dim, in.cta_threads);
    EXPECT_EQ(w.merge_group, expected) << "merge " << w.merge;
    group_of_merge[w.merge] = w.merge_group;
  }
  int64_t partials = 0;
  std::vector<std::pair<int, int>> ranges;
  for (size_t i = 0; i < s.merge.size(); ++i) {
    const int n = s.merge[i].num_partials, k = group_of_merge[static_cast<int>(i)];
    const int slots = n + (k > 0 ? (n + k - 1) / k : 0);
    partials += slots;
    ranges.emplace_back(s.merge[i].partial_begin, s.merge[i].partial_begin + slots);
    EXPECT_EQ(items_of_merge[static_cast<int>(i)], s.merge[i].num_partials) << "merge " << i;
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    EXPECT_LE(ranges[i - 1].second, ranges[i].first) << "overlapping partial slots";
  EXPECT_EQ(partials, s.num_partials);
  EXPECT_LE(s.num_partials, s.capacity.partials);
  EXPECT_LE(static_cast<int64_t>(s.work.size()), s.capacity.work);
  EXPECT_LE(static_cast<int64_t>(s.merge.size()), s.capacity.merge);
}

TEST(DecodePlan, CoversEveryTokenOnceRagged) {
  const std::vector<int> lens{1, 17, 1000, 33000, 0, 5};
  for (int group : {1, 3, 5, 7, 8, 16}) {
    for (int ps : {1, 16, 64}) {
      Table t(lens, ps);
      DecodeSchedule s;
      const auto in = t.input(2, group, ps);
      ASSERT_TRUE(make_decode_schedule("test", in, &s).ok());
      expect_cover(in, lens, std::vector<int>(lens.size(), 1), s);
    }
  }
}

TEST(DecodePlan, MultiTokenQueries) {
  const std::vector<int> lens{8, 300, 5000}, nq{8, 3, 1};
  Table t(lens, 16, nq);
  const auto in = t.input(4, 6, 16, true);
  DecodeSchedule s;
  ASSERT_TRUE(make_decode_schedule("test", in, &s).ok());
  expect_cover(in, lens, nq, s);
  EXPECT_EQ(s.q_tokens, 12);
}

TEST(DecodePlan, Batch1LongContextFillsTheChip) {
  Table t({32768}, 16);
  DecodeSchedule s;
  ASSERT_TRUE(make_decode_schedule("test", t.input(8, 4, 16), &s).ok());
  EXPECT_GE(static_cast<int64_t>(s.work.size()), 132 * 2 * 3 / 4);
  EXPECT_GE(s.split_tokens, flashserve::plan::kMinSplitTokens);
  EXPECT_EQ(s.split_tokens % flashserve::plan::kSplitGranularity, 0);
}

// The wide CTA (one 8-warp CTA per SM): its plans aim for one item per SM and merge with 256
// threads; decode_run takes it where the capacity's unit bound is within decode_wide_max_units.
TEST(DecodePlan, WideCtaSchedule) {
  using flashserve::attention::decode_wide_max_units;
  EXPECT_EQ(decode_wide_max_units(128, 2, 7, 132), 16);  // 256-byte rows, > 4 rows a unit
  EXPECT_EQ(decode_wide_max_units(128, 2, 4, 132), 0);   // 4 rows merge in one round anyway
  EXPECT_EQ(decode_wide_max_units(256, 1, 8, 132), 16);
  EXPECT_EQ(decode_wide_max_units(256, 2, 1, 132), 66);  // 512-byte rows
  EXPECT_EQ(decode_wide_max_units(64, 2, 8, 132), 0);    // 128-byte rows: never
  EXPECT_EQ(decode_wide_max_units(128, 1, 8, 132), 0);
  Table t({4096}, 16);
  auto in = t.input(4, 7, 16);  // Qwen2.5-7B: 28 / 4 heads
  EXPECT_EQ(flashserve::plan::decode_capacity_units(in), 4 * (1 + 1));
  in.max_batch_size = 64;
  EXPECT_EQ(flashserve::plan::decode_capacity_units(in), 4 * (64 + 56));
  in.max_batch_size = 0;
  in.target_ctas = 132;
  in.cta_threads = 256;
  DecodeSchedule s;
  ASSERT_TRUE(make_decode_schedule("test", in, &s).ok());
  expect_cover(in, {4096}, {1}, s);
  EXPECT_EQ(s.work.size(), 4u * 32);  // 128-token splits (the shortest), one wave of 132
  for (const auto& w : s.work) {
    EXPECT_EQ(w.merge_group, 0);  // 32 partials of 224 columns: one round of 256 threads
    EXPECT_EQ(flashserve::attention::decode_merge_rounds(w.num_partials, w.row_end - w.row_begin,
                                                         128, in.cta_threads),
              1);
  }
}

// Near-uniform batches whose proportional split would give more items than CTA slots take the
// shortest split that fits (one wave instead of a partial second one); ragged batches keep the
// proportional split; both cover every token once.
TEST(DecodePlan, UniformBatchSplitsFitTheSlots) {
  const int64_t target = 132 * 2;
  {
    const std::vector<int> lens(12, 4096);  // proportional: 1536 -> 3 pieces a unit, 288 items
    Table t(lens, 16);
    auto in = t.input(8, 4, 16);
    DecodeSchedule s;
    ASSERT_TRUE(make_decode_schedule("test", in, &s).ok());
    expect_cover(in, lens, std::vector<int>(lens.size(), 1), s);
    EXPECT_EQ(s.split_tokens, 2048);
    EXPECT_EQ(s.work.size(), 12u * 8 * 2);
    in.fit_uniform_splits = false;
    DecodeSchedule p;
    ASSERT_TRUE(make_decode_schedule("test", in, &p).ok());
    EXPECT_EQ(p.split_tokens, 1536);
    EXPECT_GT(static_cast<int64_t>(p.work.size()), target);
  }
  {
    const std::vector<int> lens{
        4096, 4000, 4100, 3900, 4096, 4096, 4050, 4096, 4096, 4096, 4096,
        4010, 4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096};  // within 9/8: fitted (no split)
    Table t(lens, 16);
    const auto in = t.input(8, 4, 16);
    DecodeSchedule s;
    ASSERT_TRUE(make_decode_schedule("test", in, &s).ok());
    expect_cover(in, lens, std::vector<int>(lens.size(), 1), s);
    EXPECT_LE(static_cast<int64_t>(s.work.size()), target);
    EXPECT_EQ(s.split_tokens, 0);
  }
  {
    const std::vector<int> lens{1000, 7000, 3000, 4096, 2000, 6000, 5000, 1500,
                                4000, 3500, 2500, 6500, 800,  7100, 4100, 2900};  // ragged
    Table t(lens, 16);
    auto in = t.input(8, 4, 16);
    DecodeSchedule s, p;
    ASSERT_TRUE(make_decode_schedule("test", in, &s).ok());
    in.fit_uniform_splits = false;
    ASSERT_TRUE(make_decode_schedule("test", in, &p).ok());
    expect_cover(in, lens, std::vector<int>(lens.size(), 1), s);
    EXPECT_EQ(s.split_tokens, p.split_tokens);
    EXPECT_EQ(s.work.size(), p.work.size());
  }
}

TEST(DecodePlan, LargeBatchIsNotSplit) {
  Table t(std::vector<int>(128, 4096), 16);
  DecodeSchedule s;
  ASSERT_TRUE(make_decode_schedule("test", t.input(8, 4, 16), &s).ok());
  EXPECT_EQ(s.split_tokens, 0);
  EXPECT_TRUE(s.merge.empty());
  EXPECT_EQ(s.work.size(), 128u * 8);
}

TEST(DecodePlan, DeterministicSplitIndependentOfBatch) {
  auto items_of = [](const DecodeSchedule& s, int request) {
    std::vector<std::tuple<int, int, int, int>> v;
    for (const auto& w : s.work)
      if (w.request == request) v.emplace_back(w.kv_head, w.row_begin, w.kv_begin, w.kv_end);
    std::sort(v.begin(), v.end());
    return v;
  };
  Table a({3000}, 16), b({100, 7, 3000, 50000}, 16);
  auto ia = a.input(2, 4, 16), ib = b.input(2, 4, 16);
  ia.deterministic = ib.deterministic = true;
  DecodeSchedule sa, sb;
  ASSERT_TRUE(make_decode_schedule("test", ia, &sa).ok());
  ASSERT_TRUE(make_decode_schedule("test", ib, &sb).ok());
  EXPECT_EQ(items_of(sa, 0), items_of(sb, 2));
  EXPECT_EQ(sa.split_tokens, flashserve::plan::kDefaultFixedSplit);
}

TEST(DecodePlan, CapacityAndWorkspace) {
  Table small({10, 20}, 16), big(std::vector<int>(64, 2048), 16);
  auto in = small.input(8, 4, 16);
  in.max_batch_size = 64;
  DecodeSchedule s1, s2;
  ASSERT_TRUE(make_decode_schedule("test", in, &s1).ok());
  auto in2 = big.input(8, 4, 16);
  in2.max_batch_size = 64;
  ASSERT_TRUE(make_decode_schedule("test", in2, &s2).ok());
  // The same capacity gives the same layout whatever the batch (graph replay after re-plan).
  EXPECT_EQ(s1.layout.total, s2.layout.total);
  EXPECT_EQ(s1.layout.partial_lse, s2.layout.partial_lse);
  EXPECT_EQ(s1.layout.work % 256, 0u);
  // Over capacity: an error naming the capacity.
  in2.max_batch_size = 32;
  const auto st = make_decode_schedule("test", in2, &s2);
  EXPECT_EQ(st.code(), flashserve::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("max_batch_size"), std::string::npos) << st.message();
  // The image holds the counts, the lists and the plan's merge counters, zeroed.
  const auto img = flashserve::plan::decode_workspace_image(s1);
  EXPECT_EQ(s1.layout.counters,
            flashserve::plan::decode_counters_offset(s1.layout.merge, s1.capacity.merge));
  EXPECT_GE(s1.layout.partial_out, s1.layout.counters + s1.capacity.merge * sizeof(int32_t));
  EXPECT_GE(s1.layout.partial_out,
            s1.layout.counters + (s1.capacity.merge + s1.capacity.partials) * sizeof(int32_t));
  ASSERT_EQ(img.size(),
            s1.layout.counters + (s1.capacity.merge + s1.num_partials) * sizeof(int32_t));
  for (size_t i = s1.layout.counters; i < img.size(); ++i)
    ASSERT_EQ(img[i], 0) << "counter byte " << i;
  // The counts: the list lengths, and the dynamic schedule's ticket counter at 0.
  flashserve::attention::DecodeCounts counts;
  std::memcpy(&counts, img.data() + s1.layout.counts, sizeof(counts));
  EXPECT_EQ(counts.num_work, static_cast<int32_t>(s1.work.size()));
  EXPECT_EQ(counts.num_merge, static_cast<int32_t>(s1.merge.size()));
  EXPECT_EQ(counts.next_work, 0);
}

TEST(DecodePlan, RejectsBadTables) {
  Table t({10, 20}, 16);
  auto in = t.input(1, 1, 16);
  t.last[1] = 17;
  DecodeSchedule s;
  auto st = make_decode_schedule("op", in, &s);
  EXPECT_NE(st.message().find("last_page_len: request 1"), std::string::npos) << st.message();
  t.last[1] = 4;
  t.indptr[2] = 0;
  st = make_decode_schedule("op", in, &s);
  EXPECT_NE(st.message().find("indptr: request 1"), std::string::npos) << st.message();
  Table q({10}, 16, {9});
  st = make_decode_schedule("op", q.input(1, 1, 16, true), &s);
  EXPECT_NE(st.message().find("q_indptr"), std::string::npos) << st.message();
}

}  // namespace

// The merge rules: rounds of loads of one CTA, and where a two-level merge saves >= 2 of them.
TEST(DecodePlan, MergeRoundsAndTwoLevelTrees) {
  using flashserve::attention::decode_merge_group;
  using flashserve::attention::decode_merge_rounds;
  EXPECT_EQ(decode_merge_rounds(33, 4, 128, 128), 2);  // Llama-3-8B 1 x 4k: 128 columns, 32 a round
  EXPECT_EQ(decode_merge_rounds(66, 7, 128, 128), 5);  // Qwen2.5-7B 1 x 32k: 2 columns x 16 a round
  EXPECT_EQ(decode_merge_rounds(16, 1, 128, 128), 1);  // 32 columns: 4 groups of 4 partials
  EXPECT_EQ(decode_merge_rounds(40, 8, 256, 128), 5);  // 4 columns per thread x 8 per round
  // The wide CTA's 256 threads: Qwen2.5-7B 1 x 4k (32 partials of 224 columns) in one round, an
  // 8-row head_dim 256 unit with 2 columns per thread x 16 partials a round.
  EXPECT_EQ(decode_merge_rounds(32, 7, 128, 128), 2);
  EXPECT_EQ(decode_merge_rounds(32, 7, 128, 256), 1);
  EXPECT_EQ(decode_merge_rounds(40, 8, 256, 256), 3);
  EXPECT_EQ(decode_merge_rounds(16, 4, 64, 256), 1);  // 64 columns: 4 groups of 4
  EXPECT_EQ(decode_merge_group(33, 4, 128, 128), 0);
  EXPECT_EQ(decode_merge_group(32, 4, 128, 128), 0);
  EXPECT_EQ(decode_merge_group(33, 8, 128, 128), 0);
  EXPECT_GT(decode_merge_group(66, 7, 128, 128), 0);
  for (int threads : {128, 256}) {
    for (int d : {64, 128, 256}) {
      for (int rows = 1; rows <= flashserve::attention::kDecodeMaxRows; ++rows) {
        for (int n = 2; n <= 700; ++n) {
          const int k = decode_merge_group(n, rows, d, threads);
          if (k == 0) continue;
          const int ng = (n + k - 1) / k;
          ASSERT_GE(k, 4);
          ASSERT_GE(n, 2 * k);
          ASSERT_LE(8 * ng, 3 * n) << "n " << n << " k " << k;
          ASSERT_LE(
              decode_merge_rounds(k, rows, d, threads) + decode_merge_rounds(ng, rows, d, threads),
              decode_merge_rounds(n, rows, d, threads) - 2)
              << "n " << n << " rows " << rows << " d " << d << " threads " << threads;
        }
      }
    }
  }
  // Batch 1 at 32k with Qwen2.5-7B's heads (28 / 4): every unit merges in two levels.
  Table t({32768}, 16);
  DecodeSchedule s;
  const auto in = t.input(4, 7, 16);
  ASSERT_TRUE(make_decode_schedule("test", in, &s).ok());
  ASSERT_FALSE(s.merge.empty());
  for (const auto& w : s.work)
    EXPECT_GT(w.merge_group, 0);
  expect_cover(in, {32768}, {1}, s);
}
