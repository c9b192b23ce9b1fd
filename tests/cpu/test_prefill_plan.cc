// Prefill planning (src/plan/prefill_plan) and prefill_workspace_size / prefill_plan /
// prefill_run argument validation without a GPU (TensorViews over fake pointers; every run case
// here fails a host check, so nothing is launched even where a GPU is present).
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "arg_test.h"
#include "flashserve/prefill.h"
#include "plan/prefill_plan.h"

namespace {

using flashserve::DType;
using flashserve::TensorView;
using fs_test::fake;
using fs_test::invalid;
namespace plan = flashserve::plan;

plan::PrefillScheduleInput input(const std::vector<int32_t>& q, const std::vector<int32_t>& k) {
  plan::PrefillScheduleInput in;
  in.qo_indptr = q.data();
  in.kv_indptr = k.data();
  in.batch = static_cast<int64_t>(q.size()) - 1;
  in.num_qo_heads = 2;
  in.block_m = 128;
  in.block_n = 128;
  return in;
}

TEST(PrefillPlan, OneItemPerTileAndHeadLongestFirst) {
  const std::vector<int32_t> q{0, 300, 300, 301}, k{0, 300, 310, 1310};
  plan::PrefillScheduleInput in = input(q, k);
  in.causal = true;
  plan::PrefillSchedule s;
  ASSERT_TRUE(plan::make_prefill_schedule("op", in, &s).ok());
  // Request 0: 3 tiles; request 1: no queries; request 2: 1 tile. Two heads each.
  ASSERT_EQ(s.work.size(), 8u);
  // Request 2's single query sees all 1000 keys (8 blocks): the longest item comes first.
  EXPECT_EQ(s.work[0].request, 2);
  EXPECT_EQ(s.work[1].request, 2);
  // Then request 0's last tile (rows 256..299 see 3 blocks), its middle, its first.
  EXPECT_EQ(s.work[2].m_block, 2);
  EXPECT_EQ(s.work[4].m_block, 1);
  EXPECT_EQ(s.work[6].m_block, 0);
  EXPECT_EQ(s.total_q, 301);
  EXPECT_EQ(s.total_kv, 1310);
  // Flops: causal 300 x 300 = 45150 pairs, plus 1000 for the single query; x 4 x d x heads.
  EXPECT_DOUBLE_EQ(s.flops, 4.0 * 128 * 2 * (45150 + 1000));
}

// qk 192 / v 128: the flops count each visible pair's q.k (head_dim) and p.v (head_dim_v)
// multiply-adds; head_dim_v 0 means head_dim.
TEST(PrefillPlan, FlopsCountTheQkAndVDims) {
  const std::vector<int32_t> q{0, 300, 301}, k{0, 300, 1000};
  plan::PrefillScheduleInput in = input(q, k);
  in.causal = true;
  in.head_dim = 192;
  in.head_dim_v = 128;
  in.block_n = 64;
  plan::PrefillSchedule s;
  ASSERT_TRUE(plan::make_prefill_schedule("op", in, &s).ok());
  // Causal 300 x 300 = 45150 pairs, plus 700 for the single query over 700 keys; two heads.
  const double pairs = 2.0 * (45150 + 700);
  EXPECT_DOUBLE_EQ(s.flops, 2.0 * (192 + 128) * pairs);
  in.head_dim_v = 0;
  ASSERT_TRUE(plan::make_prefill_schedule("op", in, &s).ok());
  EXPECT_DOUBLE_EQ(s.flops, 4.0 * 192 * pairs);
  in.head_dim_v = 192;
  ASSERT_TRUE(plan::make_prefill_schedule("op", in, &s).ok());
  EXPECT_DOUBLE_EQ(s.flops, 4.0 * 192 * pairs);
}

TEST(PrefillPlan, VisibleKeysFollowTheMasks) {
  // Bottom-right causal: q_len 4 over kv 10, row 0 sits at position 6.
  EXPECT_EQ(plan::prefill_visible_keys(0, 4, 10, true, -1, -1), 7);
  EXPECT_EQ(plan::prefill_visible_keys(3, 4, 10, true, -1, -1), 10);
  EXPECT_EQ(plan::prefill_visible_keys(0, 4, 10, true, 2, -1), 3);
  EXPECT_EQ(plan::prefill_visible_keys(0, 4, 10, false, 1, 1), 3);
  EXPECT_EQ(plan::prefill_visible_keys(0, 20, 10, true, -1, -1), 0);  // fully masked row
}

TEST(PrefillPlan, UniformLengthsAndCapacity) {
  plan::PrefillScheduleInput in;
  in.batch = 4;
  in.q_len = 200;
  in.kv_len = 500;
  in.num_qo_heads = 3;
  in.max_batch_size = 8;
  in.max_q_tokens = 4096;
  plan::PrefillSchedule s;
  ASSERT_TRUE(plan::make_prefill_schedule("op", in, &s).ok());
  EXPECT_EQ(s.qo_indptr, (std::vector<int32_t>{0, 200, 400, 600, 800}));
  EXPECT_EQ(s.kv_indptr.back(), 2000);
  EXPECT_EQ(s.work.size(), 4u * 2 * 3);
  EXPECT_EQ(s.batch_capacity, 8);
  EXPECT_GE(s.work_capacity, (4096 / 128 + 8) * 3);
  // The image holds the counts, both indptr arrays and the list at the layout's offsets.
  const std::vector<unsigned char> image = plan::prefill_workspace_image(s);
  ASSERT_GE(image.size(), s.layout.work + s.work.size() * 16);
  EXPECT_EQ(*reinterpret_cast<const int32_t*>(image.data()), 24);
  EXPECT_EQ(reinterpret_cast<const int32_t*>(image.data() + s.layout.kv_indptr)[4], 2000);
  EXPECT_LE(image.size(), s.layout.total);
}

// Walks the plan's chains as the kernel's CTAs do (chain c starts at item c); returns each
// chain's items.
std::vector<std::vector<int>> chains_of(const plan::PrefillSchedule& s) {
  const int chains = static_cast<int>(std::min<size_t>(s.grid, s.work.size()));
  std::vector<std::vector<int>> out(chains);
  for (int c = 0; c < chains; ++c) {
    for (int w = c; w >= 0; w = s.work[w].next)
      out[c].push_back(w);
  }
  return out;
}

// The kv blocks + 1 the plan charges a causal tile of a uniform batch (q_len = kv_len).
int64_t causal_cost(const plan::PrefillScheduleInput& in, int m_block) {
  const int row_last = std::min((m_block + 1) * in.block_m, in.q_len) - 1;
  return (row_last + in.block_n) / in.block_n + 1;
}

TEST(PrefillPlan, ChainsCoverEveryItemOnceAndBalanceTheCtas) {
  plan::PrefillScheduleInput in;
  in.batch = 7;
  in.q_len = in.kv_len = 1000;  // 8 causal tiles of 1..8 blocks per head
  in.num_qo_heads = 6;
  in.num_kv_heads = 2;
  in.causal = true;
  in.num_ctas = 13;
  plan::PrefillSchedule s;
  ASSERT_TRUE(plan::make_prefill_schedule("op", in, &s).ok());
  ASSERT_EQ(s.work.size(), 7u * 8 * 6);
  EXPECT_EQ(s.grid, 13);
  const auto chains = chains_of(s);
  std::vector<int> seen(s.work.size(), 0);
  int64_t total = 0, longest = 0, max_item = 0;
  for (const auto& chain : chains) {
    int64_t cost = 0;
    for (size_t i = 0; i < chain.size(); ++i) {
      ++seen[chain[i]];
      if (i > 0) {
        EXPECT_GT(chain[i], chain[i - 1]);  // a chain runs forward through the list
      }
      const int64_t c = causal_cost(in, s.work[chain[i]].m_block);
      cost += c;
      max_item = std::max(max_item, c);
    }
    total += cost;
    longest = std::max(longest, cost);
  }
  for (size_t w = 0; w < seen.size(); ++w)
    EXPECT_EQ(seen[w], 1) << "item " << w;
  // Each item goes to the CTA that frees first: no chain runs past the mean by a whole item.
  EXPECT_LE(longest, total / 13 + max_item);
  // The image carries the chain count for the kernel.
  const std::vector<unsigned char> image = plan::prefill_workspace_image(s);
  EXPECT_EQ(reinterpret_cast<const int32_t*>(image.data())[1], 13);
}

TEST(PrefillPlan, GridIsTheCtaCountWithinTheCapacity) {
  plan::PrefillScheduleInput in;
  in.batch = 1;
  in.q_len = in.kv_len = 100;
  in.num_qo_heads = 2;
  in.num_ctas = 132;
  plan::PrefillSchedule s;
  ASSERT_TRUE(plan::make_prefill_schedule("op", in, &s).ok());
  // Capacity: (100 / 128 + 1) tiles x 2 heads, plus the split-KV pieces: two items, two chains
  // of one, every CTA launched (a re-plan within the capacity may split).
  EXPECT_EQ(s.grid, 132);
  ASSERT_EQ(s.work.size(), 2u);
  EXPECT_EQ(s.work[0].next, -1);
  EXPECT_EQ(s.work[1].next, -1);
  // Without split-KV the capacity is the tiles'.
  in.split_kv = false;
  ASSERT_TRUE(plan::make_prefill_schedule("op", in, &s).ok());
  EXPECT_EQ(s.grid, 2);
  EXPECT_EQ(s.split_capacity, 0);
  in.max_q_tokens = 128 * 200;
  ASSERT_TRUE(plan::make_prefill_schedule("op", in, &s).ok());
  EXPECT_EQ(s.grid, 132);
  EXPECT_EQ(reinterpret_cast<const int32_t*>(plan::prefill_workspace_image(s).data())[1], 2);
  in.num_kv_heads = 3;
  EXPECT_TRUE(invalid(plan::make_prefill_schedule("op", in, &s), "op", "req.num_kv_heads"));
}

// The (request, kv head) pairs are grouped by their KV bytes; a group's tiles all come before the
// next group's, longest first within it.
TEST(PrefillPlan, L2GroupsComeInOrderLongestFirstWithin) {
  const std::vector<int32_t> q{0, 256, 1280}, k{0, 256, 1280};
  plan::PrefillScheduleInput in = input(q, k);  // two q heads, one kv head each (MHA)
  in.causal = true;
  // Request 0's pairs: 256 tokens x 2 x 256 bytes = 128 KB each; request 1's: 512 KB each.
  in.l2_group_bytes = 600 << 10;
  plan::PrefillSchedule s;
  ASSERT_TRUE(plan::make_prefill_schedule("op", in, &s).ok());
  // Groups: {r0 h0, r0 h1} (256 KB), {r1 h0} (512 KB), {r1 h1}.
  ASSERT_EQ(s.work.size(), 2u * 2 + 8 * 2);
  auto key = [](const flashserve::attention::PrefillWorkItem& w) {
    return std::make_tuple(w.request, w.qo_head, w.m_block);
  };
  // Group 0: request 0's m_block 1 tiles of both heads (3 blocks) before its m_block 0 (2).
  EXPECT_EQ(key(s.work[0]), std::make_tuple(0, 0, 1));
  EXPECT_EQ(key(s.work[1]), std::make_tuple(0, 1, 1));
  EXPECT_EQ(key(s.work[2]), std::make_tuple(0, 0, 0));
  EXPECT_EQ(key(s.work[3]), std::make_tuple(0, 1, 0));
  // Group 1: request 1, head 0, longest (m_block 7) first; then group 2 for head 1.
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(key(s.work[4 + i]), std::make_tuple(1, 0, 7 - i));
    EXPECT_EQ(key(s.work[12 + i]), std::make_tuple(1, 1, 7 - i));
  }
  // One group for everything: request 1's longest tiles lead.
  in.l2_group_bytes = 1 << 30;
  ASSERT_TRUE(plan::make_prefill_schedule("op", in, &s).ok());
  EXPECT_EQ(key(s.work[0]), std::make_tuple(1, 0, 7));
  EXPECT_EQ(key(s.work[1]), std::make_tuple(1, 1, 7));
}

// Each split tile's pieces: consecutive slots from its `split`, consecutive kv block ranges that
// cover the tile (the first from block 0, the last to INT32_MAX), and the pieces' blocks summed.
struct SplitTile {
  std::vector<const flashserve::attention::PrefillWorkItem*> pieces;
};
std::map<std::tuple<int, int, int>, SplitTile> split_tiles(const plan::PrefillSchedule& s) {
  std::map<std::tuple<int, int, int>, SplitTile> out;
  for (const auto& w : s.work) {
    if (w.split >= 0) out[{w.request, w.m_block, w.qo_head}].pieces.push_back(&w);
  }
  return out;
}

// Chunked prefill: 256 queries over 32k keys with 8 q heads fill 16 of 132 CTAs unsplit.
plan::PrefillScheduleInput chunked_prefill() {
  plan::PrefillScheduleInput in;
  in.batch = 1;
  in.q_len = 256;
  in.kv_len = 32768;
  in.num_qo_heads = 8;
  in.num_kv_heads = 2;
  in.causal = true;
  in.num_ctas = 132;
  return in;
}

TEST(PrefillPlan, SplitKvCutsLongTilesIntoPiecesThatCoverThem) {
  const plan::PrefillScheduleInput in = chunked_prefill();
  plan::PrefillSchedule s;
  ASSERT_TRUE(plan::make_prefill_schedule("op", in, &s).ok());
  EXPECT_GT(s.split_capacity, 100);  // 16 MB of 128 x 129 fp32 slots
  const auto tiles = split_tiles(s);
  ASSERT_EQ(tiles.size(), 16u);  // every tile is split
  std::vector<int> slot_used(s.split_capacity, 0);
  for (const auto& [key, tile] : tiles) {
    SCOPED_TRACE(std::get<1>(key));
    const int n = static_cast<int>(tile.pieces.size());
    ASSERT_GE(n, 2);
    std::vector<const flashserve::attention::PrefillWorkItem*> by_index(n, nullptr);
    for (const auto* w : tile.pieces) {
      ASSERT_EQ(w->num_splits, n);
      ASSERT_LT(w->split_index, n);
      EXPECT_EQ(by_index[w->split_index], nullptr);
      by_index[w->split_index] = w;
      EXPECT_EQ(w->split, tile.pieces[0]->split);
      ASSERT_LT(w->split + w->split_index, s.split_capacity);
      ++slot_used[w->split + w->split_index];
    }
    // Causal, bottom-right: tile m's last row sits at 32512 + 128 m + 127.
    const int n_max = (32512 + 128 * std::get<1>(key) + 127) / 128 + 1;
    EXPECT_EQ(by_index[0]->n_begin, 0);
    EXPECT_EQ(by_index[n - 1]->n_end, INT32_MAX);
    for (int i = 0; i + 1 < n; ++i) {
      EXPECT_EQ(by_index[i]->n_end, by_index[i + 1]->n_begin);
      EXPECT_LT(by_index[i]->n_begin, by_index[i]->n_end);
      EXPECT_GE(by_index[i]->n_end - by_index[i]->n_begin, 4);  // >= 512 keys a piece
    }
    EXPECT_LT(by_index[n - 1]->n_begin, n_max);
  }
  int64_t used = 0;
  for (int u : slot_used) {
    EXPECT_LE(u, 1);
    used += u;
  }
  EXPECT_EQ(used, s.num_partials);
  // The pieces spread over the CTAs: the longest chain is well under an unsplit tile (~256
  // blocks).
  int64_t longest = 0;
  for (const auto& chain : chains_of(s)) {
    int64_t cost = 0;
    for (int w : chain) {
      const auto& it = s.work[w];
      const int n_max = (32512 + 128 * it.m_block + 127) / 128 + 1;
      cost += std::min(it.n_end, n_max) - it.n_begin + 2;
    }
    longest = std::max(longest, cost);
  }
  EXPECT_LT(longest, 256 * 3 / 4);
  // The work list's capacity holds the pieces; the image zeroes the counters before the list.
  EXPECT_LE(static_cast<int64_t>(s.work.size()), s.work_capacity);
  const plan::PrefillSplitLayout& l = s.layout.split;
  EXPECT_LT(l.counters, s.layout.work);
  EXPECT_GE(l.lse,
            s.layout.work + s.work_capacity * sizeof(flashserve::attention::PrefillWorkItem));
  EXPECT_GE(l.o, l.lse + s.split_capacity * 128 * 4);
  EXPECT_EQ(s.layout.total, l.end);
  EXPECT_GE(l.end, l.o + s.split_capacity * 128 * 128 * 4);
  const std::vector<unsigned char> image = plan::prefill_workspace_image(s);
  ASSERT_GE(image.size(), s.layout.work);
  for (size_t i = l.counters; i < s.layout.work; ++i)
    ASSERT_EQ(image[i], 0) << i;
  // The run derives the same layout from the plan's fields.
  const plan::PrefillSplitLayout again =
      plan::prefill_split_layout(s.layout.work, s.work_capacity, s.split_capacity, 128, 128);
  EXPECT_EQ(again.counters, l.counters);
  EXPECT_EQ(again.lse, l.lse);
  EXPECT_EQ(again.o, l.o);
  EXPECT_EQ(again.end, l.end);
}

TEST(PrefillPlan, NoSplitWhereTheTilesFillTheCtasOrSplitKvIsOff) {
  plan::PrefillScheduleInput in;
  in.batch = 4;
  in.q_len = in.kv_len = 4096;
  in.num_qo_heads = 16;
  in.num_ctas = 132;
  plan::PrefillSchedule s;
  ASSERT_TRUE(plan::make_prefill_schedule("op", in, &s).ok());
  EXPECT_TRUE(split_tiles(s).empty());  // 2048 tiles of 32 blocks
  EXPECT_EQ(s.num_partials, 0);
  in = chunked_prefill();
  in.split_kv = false;
  ASSERT_TRUE(plan::make_prefill_schedule("op", in, &s).ok());
  EXPECT_TRUE(split_tiles(s).empty());
  EXPECT_EQ(s.split_capacity, 0);
  EXPECT_EQ(s.work.size(), 16u);
  // Short kv: nothing to gain (a piece holds at least 512 keys).
  in = chunked_prefill();
  in.kv_len = 700;
  ASSERT_TRUE(plan::make_prefill_schedule("op", in, &s).ok());
  EXPECT_TRUE(split_tiles(s).empty());
}

TEST(PrefillPlan, SplitKvStaysWithinThePartialSlots) {
  plan::PrefillScheduleInput in = chunked_prefill();
  in.split_bytes = 5 * 128 * 129 * 4;  // five slots
  plan::PrefillSchedule s;
  ASSERT_TRUE(plan::make_prefill_schedule("op", in, &s).ok());
  EXPECT_EQ(s.split_capacity, 5);
  EXPECT_LE(s.num_partials, 5);
  for (const auto& w : s.work) {
    if (w.split >= 0) {
      EXPECT_LT(w.split + w.split_index, 5);
    }
  }
}

TEST(PrefillPlan, RejectsBadIndptr) {
  const std::vector<int32_t> q{0, 5, 3}, k{0, 5, 10};
  plan::PrefillSchedule s;
  EXPECT_TRUE(invalid(plan::make_prefill_schedule("op", input(q, k), &s), "op", "req.qo_indptr",
                      "non-decreasing"));
  const std::vector<int32_t> q2{1, 5, 7};
  EXPECT_TRUE(
      invalid(plan::make_prefill_schedule("op", input(q2, k), &s), "op", "req.qo_indptr[0]"));
}

flashserve::PrefillPlanRequest request() {
  flashserve::PrefillPlanRequest r;
  r.batch_size = 2;
  r.q_len = 100;
  r.kv_len = 100;
  r.num_qo_heads = 8;
  r.num_kv_heads = 2;
  r.head_dim = 128;
  r.num_sms = 132;
  return r;
}

TEST(PrefillArgs, RequestChecksNameTheField) {
  size_t bytes = 0;
  auto r = request();
  r.head_dim = 80;
  EXPECT_TRUE(invalid(flashserve::prefill_workspace_size(r, &bytes), "prefill_workspace_size",
                      "req.head_dim", "64, 96, 128, 192 or 256"));
  r = request();
  r.num_qo_heads = 7;
  EXPECT_TRUE(invalid(flashserve::prefill_workspace_size(r, &bytes), "prefill_workspace_size",
                      "req.num_qo_heads", "multiple of num_kv_heads = 2"));
  r = request();
  r.dtype = DType::kFloat32;
  EXPECT_TRUE(invalid(flashserve::prefill_workspace_size(r, &bytes), "prefill_workspace_size",
                      "req.dtype", "float16 or bfloat16"));
  r = request();
  r.causal = true;
  r.window_right = 3;
  EXPECT_TRUE(invalid(flashserve::prefill_workspace_size(r, &bytes), "prefill_workspace_size",
                      "req.window_right", "causal"));
  r = request();
  r.window_left = -5;
  EXPECT_TRUE(invalid(flashserve::prefill_workspace_size(r, &bytes), "prefill_workspace_size",
                      "req.window_left"));
  r = request();
  ASSERT_TRUE(flashserve::prefill_workspace_size(r, &bytes).ok());
  EXPECT_GT(bytes, 0u);
  flashserve::PrefillPlan p;
  EXPECT_TRUE(invalid(flashserve::prefill_plan(r, fake(9), bytes - 1, nullptr, &p), "prefill_plan",
                      "workspace", std::to_string(bytes) + " bytes needed"));
}

// head_dim_v: qk 192 / v 128 (DeepSeek) is the one pair of unequal dims; 0 means head_dim, and
// an equal value is accepted at every head_dim.
TEST(PrefillArgs, HeadDimVChecksNameTheField) {
  size_t bytes = 0;
  struct Bad {
    int head_dim, head_dim_v;
  };
  const Bad bad[] = {{128, 64}, {256, 128}, {192, 64}, {192, 256}, {64, 128},
                     {96, 128}, {128, 192}, {192, -1}, {128, 96}};
  for (const Bad& b : bad) {
    auto r = request();
    r.head_dim = b.head_dim;
    r.head_dim_v = b.head_dim_v;
    SCOPED_TRACE(std::to_string(b.head_dim) + " / " + std::to_string(b.head_dim_v));
    EXPECT_TRUE(invalid(flashserve::prefill_workspace_size(r, &bytes), "prefill_workspace_size",
                        "req.head_dim_v", std::to_string(b.head_dim_v)));
    flashserve::PrefillPlan p;
    EXPECT_TRUE(invalid(flashserve::prefill_plan(r, fake(9), size_t{1} << 30, nullptr, &p),
                        "prefill_plan", "req.head_dim_v", std::to_string(b.head_dim_v)));
  }
  for (int d : {64, 96, 128, 192, 256})
    for (int dv : {0, d}) {
      auto r = request();
      r.head_dim = d;
      r.head_dim_v = dv;
      EXPECT_TRUE(flashserve::prefill_workspace_size(r, &bytes).ok()) << d << " / " << dv;
      EXPECT_GT(bytes, 0u);
    }
  auto r = request();
  r.head_dim = 192;
  r.head_dim_v = 128;
  size_t bytes_192_128 = 0, bytes_192 = 0;
  ASSERT_TRUE(flashserve::prefill_workspace_size(r, &bytes_192_128).ok());
  r.head_dim_v = 0;
  ASSERT_TRUE(flashserve::prefill_workspace_size(r, &bytes_192).ok());
  // The work list does not depend on v's width, the split-KV partials do.
  EXPECT_LT(bytes_192_128, bytes_192);
  r.split_kv = false;
  ASSERT_TRUE(flashserve::prefill_workspace_size(r, &bytes_192).ok());
  r.head_dim_v = 128;
  ASSERT_TRUE(flashserve::prefill_workspace_size(r, &bytes_192_128).ok());
  EXPECT_EQ(bytes_192_128, bytes_192);
  r.split_kv = true;
  // Paged requests are checked the same way.
  const std::vector<int32_t> indptr{0, 7, 14}, last{4, 4};
  r = request();
  r.page_size = 16;
  r.paged_kv_indptr = indptr.data();
  r.paged_kv_last_page_len = last.data();
  r.head_dim = 192;
  r.head_dim_v = 128;
  EXPECT_TRUE(flashserve::prefill_workspace_size(r, &bytes).ok());
  r.head_dim = 256;
  EXPECT_TRUE(invalid(flashserve::prefill_workspace_size(r, &bytes), "prefill_workspace_size",
                      "req.head_dim_v"));
}

struct RunCase {
  flashserve::PrefillPlan plan;
  flashserve::PrefillArgs a;
  RunCase() {
    plan.batch_size = 2;
    plan.total_q = 200;
    plan.total_kv = 200;
    plan.num_qo_heads = 8;
    plan.num_kv_heads = 2;
    plan.head_dim = 128;
    plan.head_dim_v = 128;
    plan.num_work = 16;
    plan.grid = 16;
    plan.workspace_bytes = 4096;
    a.q = TensorView::contiguous(fake(1), DType::kBFloat16, {200, 8, 128});
    a.k = TensorView::contiguous(fake(2), DType::kBFloat16, {200, 2, 128});
    a.v = TensorView::contiguous(fake(3), DType::kBFloat16, {200, 2, 128});
    a.out = TensorView::contiguous(fake(4), DType::kBFloat16, {200, 8, 128});
  }
  // A plan of qk head_dim 192 with v head_dim 128, and tensors that fit it.
  static RunCase qk192_v128() {
    RunCase r;
    r.plan.head_dim = 192;
    r.plan.head_dim_v = 128;
    r.plan.block_n = 64;
    r.a.q = TensorView::contiguous(fake(1), DType::kBFloat16, {200, 8, 192});
    r.a.k = TensorView::contiguous(fake(2), DType::kBFloat16, {200, 2, 192});
    r.a.v = TensorView::contiguous(fake(3), DType::kBFloat16, {200, 2, 128});
    r.a.out = TensorView::contiguous(fake(4), DType::kBFloat16, {200, 8, 128});
    return r;
  }
  flashserve::Status run() const { return flashserve::prefill_run(plan, a, fake(9)); }
};

TEST(PrefillArgs, RunChecksNameTheArgument) {
  {
    RunCase r;
    r.a.k = TensorView::contiguous(fake(2), DType::kBFloat16, {200, 4, 128});
    EXPECT_TRUE(invalid(r.run(), "prefill_run", "k", "plan.num_kv_heads"));
  }
  {
    RunCase r;
    r.a.q = TensorView::contiguous(fake(1), DType::kFloat16, {200, 8, 128});
    EXPECT_TRUE(invalid(r.run(), "prefill_run", "q", "bfloat16"));
  }
  {
    RunCase r;
    r.a.v = TensorView::contiguous(fake(3), DType::kBFloat16, {199, 2, 128});
    EXPECT_TRUE(invalid(r.run(), "prefill_run", "v", "at least 200 rows"));
  }
  {
    RunCase r;
    r.a.q = TensorView::contiguous(fake(1, 2), DType::kBFloat16, {200, 8, 128});
    EXPECT_TRUE(invalid(r.run(), "prefill_run", "q", "16-byte aligned"));
  }
  {
    RunCase r;
    r.a.out = r.a.q;
    EXPECT_TRUE(invalid(r.run(), "prefill_run", "out", "overlap"));
  }
  {
    RunCase r;
    r.a.sinks = TensorView::contiguous(fake(5), DType::kFloat32, {4});
    EXPECT_TRUE(invalid(r.run(), "prefill_run", "sinks", "plan.num_qo_heads"));
  }
  {
    RunCase r;
    r.a.custom_mask = TensorView::contiguous(fake(5), DType::kUInt8, {100});
    EXPECT_TRUE(invalid(r.run(), "prefill_run", "custom_mask", "mask_offsets"));
  }
  {
    RunCase r;
    r.a.logits_soft_cap = -1.f;
    EXPECT_TRUE(invalid(r.run(), "prefill_run", "logits_soft_cap"));
  }
  {
    RunCase r;
    r.plan.workspace_bytes = 0;
    EXPECT_TRUE(invalid(r.run(), "prefill_run", "plan"));
  }
}

// q and k have head_dim elements per row, v and out head_dim_v.
TEST(PrefillArgs, RunChecksTheVAndOutHeadDim) {
  {
    RunCase r = RunCase::qk192_v128();
    r.a.v = TensorView::contiguous(fake(3), DType::kBFloat16, {200, 2, 192});
    EXPECT_TRUE(invalid(r.run(), "prefill_run", "v", "expected size 128"));
  }
  {
    RunCase r = RunCase::qk192_v128();
    r.a.out = TensorView::contiguous(fake(4), DType::kBFloat16, {200, 8, 192});
    EXPECT_TRUE(invalid(r.run(), "prefill_run", "out", "expected size 128"));
  }
  {
    RunCase r = RunCase::qk192_v128();
    r.a.k = TensorView::contiguous(fake(2), DType::kBFloat16, {200, 2, 128});
    EXPECT_TRUE(invalid(r.run(), "prefill_run", "k", "expected size 192"));
  }
  {
    RunCase r = RunCase::qk192_v128();
    r.a.q = TensorView::contiguous(fake(1), DType::kBFloat16, {200, 8, 128});
    EXPECT_TRUE(invalid(r.run(), "prefill_run", "q", "expected size 192"));
  }
  {
    // A 192 / 192 plan given the 128-wide v and out of a 192 / 128 problem.
    RunCase r = RunCase::qk192_v128();
    r.plan.head_dim_v = 192;
    EXPECT_TRUE(invalid(r.run(), "prefill_run", "out", "expected size 192"));
    r.a.out = TensorView::contiguous(fake(4), DType::kBFloat16, {200, 8, 192});
    EXPECT_TRUE(invalid(r.run(), "prefill_run", "v", "expected size 192"));
  }
  {
    // Paged: the v cache's rows are head_dim_v long, the k cache's head_dim.
    RunCase r = RunCase::qk192_v128();
    r.plan.page_size = 16;
    r.a.k = TensorView();
    r.a.v = TensorView();
    r.a.cache.k_cache = TensorView::contiguous(fake(2), DType::kBFloat16, {20, 16, 2, 192});
    r.a.cache.v_cache = TensorView::contiguous(fake(3), DType::kBFloat16, {20, 16, 2, 192});
    r.a.cache.layout = flashserve::KVLayout::kNHD;
    r.a.table.indptr = TensorView::contiguous(fake(5), DType::kInt32, {3});
    r.a.table.indices = TensorView::contiguous(fake(6), DType::kInt32, {14});
    r.a.table.last_page_len = TensorView::contiguous(fake(7), DType::kInt32, {2});
    EXPECT_TRUE(invalid(r.run(), "prefill_run", "cache.v_cache", "128"));
    r.a.cache.v_cache = TensorView::contiguous(fake(3), DType::kBFloat16, {20, 16, 2, 128});
    r.a.cache.k_cache = TensorView::contiguous(fake(2), DType::kBFloat16, {20, 16, 2, 128});
    EXPECT_TRUE(invalid(r.run(), "prefill_run", "cache.k_cache", "192"));
  }
}

}  // namespace
