// Paged decode attention (decode_plan / decode_run) and merge_state(s) against the CPU reference
// with METHOD.md's accuracy rule: ragged batches with kv lengths 0, 1, 17, 1000, 33000, GQA
// ratios 1..16 (5, 6, 7 included), page sizes 1/16/64, NHD/HND, head_dim 64/128/256, split and
// unsplit, fp8 caches, multi-token queries, window, soft-cap, sinks, determinism across runs and
// batch compositions, and CUDA-graph replay after a re-plan.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <sstream>

#include "check.h"
#include "flashserve/attention/params.h"
#include "flashserve/decode.h"
#include "gpu_test.h"
#include "reference/decode.h"

namespace fs_test {
namespace {

using flashserve::KVLayout;
using flashserve::Status;

struct DecodeCase {
  std::vector<int> lens;
  std::vector<int> nq;  // query tokens per request; empty = 1 each
  int qo_heads = 8, kv_heads = 2, head_dim = 128, page_size = 16;
  KVLayout layout = KVLayout::kNHD;
  DType kv_dtype = DType::kBFloat16;
  float k_scale = 1.f, v_scale = 1.f;
  float soft_cap = 0.f;
  int window_left = -1;
  bool sinks = false;
  bool deterministic = false;
  int fixed_split = 0;
  int num_sms = 0;         // 0 = the device's
  int max_batch_size = 0;  // capacity; 0 = the batch's
};

std::string describe(const DecodeCase& c) {
  std::ostringstream os;
  os << c.qo_heads << "/" << c.kv_heads << "x" << c.head_dim << " page " << c.page_size << " "
     << flashserve::kv_layout_name(c.layout) << " " << flashserve::dtype_name(c.kv_dtype) << " cap "
     << c.soft_cap << " window " << c.window_left << " sinks " << c.sinks << " det "
     << c.deterministic << " lens [";
  for (size_t b = 0; b < c.lens.size(); ++b)
    os << (b ? " " : "") << c.lens[b] << (c.nq.empty() ? "" : "q" + std::to_string(c.nq[b]));
  os << "]";
  return os.str();
}

DeviceTensor int_tensor(const std::vector<int32_t>& v) {
  DeviceTensor t(DType::kInt32, {static_cast<int64_t>(std::max<size_t>(v.size(), 1))});
  if (!v.empty()) t.upload_raw(v.data(), static_cast<int64_t>(v.size() * sizeof(int32_t)));
  return t;
}

struct DecodeSetup {
  DecodeCase c;
  std::vector<int32_t> indptr{0}, indices, last, q_indptr{0};
  std::vector<float> q, k_elems, v_elems;  // host values (cache elements, before scales)
  int64_t num_pages = 0;
  DeviceTensor dq, dout, dlse, dk, dv, dindptr, dindices, dlast, dsinks, ws;
  std::vector<float> sinks;
  size_t ws_bytes = 0;

  int64_t elem(int64_t page, int slot, int h, int d) const {
    const int64_t H = c.kv_heads, D = c.head_dim, ps = c.page_size;
    return c.layout == KVLayout::kNHD ? ((page * ps + slot) * H + h) * D + d
                                      : ((page * H + h) * ps + slot) * D + d;
  }
  double kval(int b, int t, int h, int d) const {
    const int64_t page = indices[indptr[b] + t / c.page_size];
    return double(k_elems[elem(page, t % c.page_size, h, d)]) * c.k_scale;
  }
  double vval(int b, int t, int h, int d) const {
    const int64_t page = indices[indptr[b] + t / c.page_size];
    return double(v_elems[elem(page, t % c.page_size, h, d)]) * c.v_scale;
  }
  int64_t q_tokens() const { return q_indptr.back(); }

  flashserve::DecodePlanRequest request() const {
    flashserve::DecodePlanRequest r;
    r.indptr = indptr.data();
    r.last_page_len = last.data();
    r.batch_size = static_cast<int>(last.size());
    r.q_indptr = q_indptr.data();
    r.num_qo_heads = c.qo_heads;
    r.num_kv_heads = c.kv_heads;
    r.head_dim = c.head_dim;
    r.page_size = c.page_size;
    r.kv_dtype = c.kv_dtype;
    r.layout = c.layout;
    r.deterministic = c.deterministic;
    r.fixed_split_tokens = c.fixed_split;
    r.num_sms = c.num_sms;
    r.max_batch_size = c.max_batch_size;
    return r;
  }
  flashserve::DecodeArgs args() const {
    flashserve::DecodeArgs a;
    a.q = dq.view();
    a.out = dout.view();
    a.lse = dlse.view();
    a.cache.k_cache = dk.view();
    a.cache.v_cache = dv.view();
    a.cache.layout = c.layout;
    a.cache.k_scale = c.k_scale;
    a.cache.v_scale = c.v_scale;
    a.table.indptr = dindptr.view();
    a.table.indices = dindices.view();
    a.table.last_page_len = dlast.view();
    a.logits_soft_cap = c.soft_cap;
    a.window_left = c.window_left;
    if (c.sinks) a.sinks = dsinks.view();
    return a;
  }
};

// Random page permutation, random cache (rounded to its dtype), random q; `q_vals` / `kv_seed`
// let two setups share a request's data.
void make_setup(DecodeSetup* s, const DecodeCase& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  s->c = c;
  const int ps = c.page_size;
  for (size_t b = 0; b < c.lens.size(); ++b) {
    const int pages = (c.lens[b] + ps - 1) / ps;
    s->num_pages += pages;
    s->indptr.push_back(s->indptr.back() + pages);
    s->last.push_back(pages ? c.lens[b] - (pages - 1) * ps : 0);
    s->q_indptr.push_back(s->q_indptr.back() + (c.nq.empty() ? 1 : c.nq[b]));
  }
  s->num_pages += 2;
  s->indices.resize(s->indptr.back());
  std::vector<int32_t> perm(s->num_pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::copy(perm.begin(), perm.begin() + s->indices.size(), s->indices.begin());
  const int64_t cache_elems = s->num_pages * ps * c.kv_heads * c.head_dim;
  auto quant = [&](float scale, uint64_t sd) {
    std::vector<float> x = random_normal(cache_elems, sd);
    for (float& v : x)
      v /= scale;
    return rounded(c.kv_dtype, x);
  };
  s->k_elems = quant(c.k_scale, rng());
  s->v_elems = quant(c.v_scale, rng());
  s->q = rounded(DType::kBFloat16, random_normal(s->q_tokens() * c.qo_heads * c.head_dim, rng()));
  const std::vector<int64_t> shape =
      c.layout == KVLayout::kNHD ? std::vector<int64_t>{s->num_pages, ps, c.kv_heads, c.head_dim}
                                 : std::vector<int64_t>{s->num_pages, c.kv_heads, ps, c.head_dim};
  s->dk = DeviceTensor(c.kv_dtype, shape);
  s->dv = DeviceTensor(c.kv_dtype, shape);
  s->dk.upload(s->k_elems);
  s->dv.upload(s->v_elems);
  const int64_t Q = std::max<int64_t>(s->q_tokens(), 1);
  s->dq = DeviceTensor(DType::kBFloat16, {Q, c.qo_heads, c.head_dim});
  if (s->q_tokens() > 0) s->dq.upload(s->q);
  s->dout = DeviceTensor(DType::kBFloat16, {Q, c.qo_heads, c.head_dim});
  s->dlse = DeviceTensor(DType::kFloat32, {Q, c.qo_heads});
  s->dindptr = int_tensor(s->indptr);
  s->dindices = int_tensor(s->indices);
  s->dlast = int_tensor(s->last);
  s->sinks = random_normal(c.qo_heads, rng(), 1.f, 2.f);
  s->dsinks = DeviceTensor(DType::kFloat32, {c.qo_heads});
  s->dsinks.upload(s->sinks);
}

// Plans and runs; returns the status of the first failing call.
Status plan_and_run(DecodeSetup* s, cudaStream_t stream = nullptr,
                    flashserve::DecodePlan* plan_out = nullptr) {
  const auto req = s->request();
  size_t bytes = 0;
  Status st = flashserve::decode_workspace_size(req, &bytes);
  if (!st.ok()) return st;
  if (s->ws_bytes < bytes) {
    s->ws = DeviceTensor(DType::kUInt8, {static_cast<int64_t>(bytes)});
    s->ws_bytes = bytes;
  }
  flashserve::DecodePlan plan;
  st = flashserve::decode_plan(req, s->ws.data(), s->ws_bytes, stream, &plan);
  if (!st.ok()) return st;
  if (plan_out) *plan_out = plan;
  s->dout.poison();
  s->dlse.poison();
  return flashserve::decode_run(plan, s->args(), s->ws.data(), stream);
}

ref::DecodeRef reference_of(const DecodeSetup& s) {
  ref::DecodeProblem p;
  p.num_qo_heads = s.c.qo_heads;
  p.num_kv_heads = s.c.kv_heads;
  p.head_dim = s.c.head_dim;
  p.sm_scale = 1.f / std::sqrt(float(s.c.head_dim));
  p.soft_cap = s.c.soft_cap;
  p.window_left = s.c.window_left;
  if (s.c.sinks) p.sinks = s.sinks;
  std::vector<int> q_indptr(s.q_indptr.begin(), s.q_indptr.end());
  return ref::decode(
      p, s.q, s.c.lens, q_indptr, [&](int b, int t, int h, int d) { return s.kval(b, t, h, d); },
      [&](int b, int t, int h, int d) { return s.vval(b, t, h, d); });
}

void check_against_reference(const DecodeSetup& s, const ref::DecodeRef& r) {
  cuda_check(cudaDeviceSynchronize(), "decode");
  if (s.q_tokens() == 0) return;
  const std::vector<float> out = s.dout.download();
  const Accuracy a = accuracy_rule(out, r.out, r.base);
  EXPECT_TRUE(a.pass) << describe(s.c) << ": " << a.str();
  const std::vector<float> lse = s.dlse.download();
  for (size_t i = 0; i < r.lse.size(); ++i) {
    if (std::isinf(r.lse[i])) {
      ASSERT_TRUE(std::isinf(lse[i]) && lse[i] < 0)
          << describe(s.c) << " lse row " << i << ": " << lse[i];
    } else {
      ASSERT_NEAR(lse[i], r.lse[i], 2e-2 + 2e-3 * std::fabs(r.lse[i]))
          << describe(s.c) << " lse row " << i;
    }
  }
}

void check_against_reference(const DecodeSetup& s) {
  check_against_reference(s, reference_of(s));
}

class Decode : public GpuTest {
 protected:
  void run_case(const DecodeCase& c) {
    SCOPED_TRACE(describe(c));
    const uint64_t seed = next_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    DecodeSetup s;
    make_setup(&s, c, seed);
    flashserve::DecodePlan plan;
    Status st = plan_and_run(&s, nullptr, &plan);
    ASSERT_TRUE(st.ok()) << st.to_string();
    const ref::DecodeRef r = reference_of(s);
    check_against_reference(s, r);
    if (plan.cta_warps == 8 && s.c.max_batch_size == 0) {
      // The plan took the wide CTA (few units): the same inputs through the 4-warp kernel too, by
      // a capacity with many units.
      SCOPED_TRACE("4-warp CTAs (capacity of 256 requests)");
      s.c.max_batch_size = 256;
      st = plan_and_run(&s, nullptr, &plan);
      ASSERT_TRUE(st.ok()) << st.to_string();
      EXPECT_EQ(plan.cta_warps, 4);
      check_against_reference(s, r);
      s.c.max_batch_size = 0;
    }
  }
  // One request of `len` tokens in deterministic mode: bitwise identical across runs and inside a
  // bigger batch, and right.
  void check_deterministic(int len, int qo_heads, int fixed_split);
  // Captures a run of c1 with a plan of `capacity` requests, re-plans c2 into the same workspace,
  // replays: the plan's CTA must be `cta_warps` wide and both outputs right.
  void graph_replay_after_replan(const DecodeCase& c1, const DecodeCase& c2, int capacity,
                                 int cta_warps);
};

const std::vector<int> kRagged{1, 17, 0, 1000, 5};

TEST_F(Decode, GqaRatios) {
  for (int group : {1, 2, 3, 4, 5, 6, 7, 8, 16}) {
    DecodeCase c;
    c.lens = kRagged;
    c.kv_heads = 2;
    c.qo_heads = 2 * group;
    run_case(c);
  }
}

TEST_F(Decode, PageSizesLayoutsHeadDims) {
  for (int ps : {1, 16, 64}) {
    for (KVLayout layout : {KVLayout::kNHD, KVLayout::kHND}) {
      for (int d : {64, 128, 256}) {
        DecodeCase c;
        c.lens = kRagged;
        c.page_size = ps;
        c.layout = layout;
        c.head_dim = d;
        c.qo_heads = 6;
        c.kv_heads = 2;
        run_case(c);
      }
    }
  }
}

TEST_F(Decode, LongContextSplitsAndMerges) {
  DecodeCase c;
  c.lens = {33000, 0, 17, 1000};
  c.qo_heads = 4;
  c.kv_heads = 1;
  run_case(c);
  c.lens = {33000};  // batch 1: split over the whole chip
  run_case(c);
  // Two-level merges (decode_merge_group picks them for these units: 7 and 8 + 8 rows, ~170
  // splits), beside single-level ones (the 5000-token request), at every head_dim.
  for (int d : {64, 128, 256}) {
    for (int group : {7, 16}) {
      c.lens = {33000, 17, 5000};
      c.head_dim = d;
      c.qo_heads = group;
      run_case(c);
    }
  }
}

// Which CTA a plan takes (tile_policy.h, decode_wide_max_units): the wide one for few units at
// head_dim 128 (bf16, group > 4) and 256, never at 64 or in deterministic mode; both right at batch
// 1 x 33000 (the shape it is for: Qwen2.5-7B's 28 / 4 heads, a 7-row merge of 32 partials in one
// round).
TEST_F(Decode, WideCtaChoice) {
  struct Want {
    int head_dim;
    DType kv;
    std::vector<int> lens;
    int qo_heads, kv_heads;
    bool det;
    int max_batch;
    int warps;
  };
  const std::vector<Want> wants = {
      {128, DType::kBFloat16, {33000}, 28, 4, false, 0, 8},
      {128, DType::kBFloat16, {4096}, 64, 8, false, 0, 8},
      {128, DType::kBFloat16, {4096}, 32, 8, false, 0, 4},        // 4-row units: one merge round
      {128, DType::kBFloat16, {4096, 4096}, 64, 8, false, 0, 4},  // 8 x (2 + 2) units > 16
      {128, DType::kBFloat16, {4096}, 64, 8, false, 64, 4},
      {128, DType::kBFloat16, {4096}, 64, 8, true, 0, 4},
      {256, DType::kBFloat16, {4096, 100, 7, 1}, 32, 8, false, 0, 8},
      {256, DType::kFloat8E4M3, {4096}, 64, 8, false, 0, 8},
      {128, DType::kFloat8E4M3, {4096}, 32, 8, false, 0, 4},
      {64, DType::kBFloat16, {4096}, 32, 8, false, 0, 4},
  };
  for (const Want& w : wants) {
    DecodeCase c;
    c.lens = w.lens;
    c.head_dim = w.head_dim;
    c.kv_dtype = w.kv;
    c.qo_heads = w.qo_heads;
    c.kv_heads = w.kv_heads;
    c.deterministic = w.det;
    c.max_batch_size = w.max_batch;
    if (flashserve::is_fp8(w.kv)) {
      c.k_scale = 0.05f;
      c.v_scale = 0.03f;
    }
    SCOPED_TRACE(describe(c) + " max_batch " + std::to_string(w.max_batch));
    const uint64_t seed = next_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    DecodeSetup s;
    make_setup(&s, c, seed);
    flashserve::DecodePlan plan;
    const Status st = plan_and_run(&s, nullptr, &plan);
    ASSERT_TRUE(st.ok()) << st.to_string();
    EXPECT_EQ(plan.cta_warps, w.warps);
    if (w.lens.size() == 1 && w.lens[0] == 33000) run_case(c);  // both kernels, both right
  }
}

TEST_F(Decode, Fp8Cache) {
  for (DType dt : {DType::kFloat8E4M3, DType::kFloat8E5M2}) {
    for (int d : {64, 128, 256}) {
      DecodeCase c;
      c.lens = {1, 17, 0, 1000, 3000};
      c.kv_dtype = dt;
      c.head_dim = d;
      c.k_scale = 0.05f;
      c.v_scale = 0.03f;
      run_case(c);
    }
  }
}

TEST_F(Decode, MultiTokenQueriesCausal) {
  DecodeCase c;
  c.lens = {8, 17, 1000, 3, 2000};
  c.nq = {8, 1, 5, 2, 3};
  c.qo_heads = 14;
  c.kv_heads = 2;
  run_case(c);
}

TEST_F(Decode, Variants) {
  DecodeCase c;
  c.lens = {1, 17, 0, 1000, 3000};
  c.nq = {1, 2, 1, 4, 1};
  c.window_left = 100;
  run_case(c);
  c.window_left = -1;
  c.soft_cap = 5.f;
  run_case(c);
  c.soft_cap = 0.f;
  c.sinks = true;
  run_case(c);
  c.window_left = 0;
  c.soft_cap = 30.f;
  run_case(c);
}

TEST_F(Decode, DeterministicAcrossRunsAndBatches) {
  check_deterministic(5000, 8, 256);
  // 258 splits of 7 rows: a two-level merge (decode_merge_group), deterministic too.
  check_deterministic(33000, 14, 128);
}

void Decode::check_deterministic(int len, int qo_heads, int fixed_split) {
  DecodeCase c;
  c.lens = {len};
  c.qo_heads = qo_heads;
  c.deterministic = true;
  c.fixed_split = fixed_split;
  SCOPED_TRACE(describe(c));
  const uint64_t seed = next_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  DecodeSetup a;
  make_setup(&a, c, seed);
  ASSERT_TRUE(plan_and_run(&a).ok());
  cuda_check(cudaDeviceSynchronize(), "run");
  const auto first = a.dout.download_raw();
  ASSERT_TRUE(plan_and_run(&a).ok());
  cuda_check(cudaDeviceSynchronize(), "run");
  EXPECT_EQ(first, a.dout.download_raw());
  check_against_reference(a);

  // The same request inside a bigger batch (request 2 of 4): the same bits.
  DecodeCase cb = c;
  cb.lens = {100, 7000, len, 3};
  DecodeSetup b;
  make_setup(&b, cb, seed + 1);
  // Copy request 0 of `a` into request 2 of `b`: its q row and its pages' K/V.
  const int D = c.head_dim, H = c.qo_heads;
  std::copy(a.q.begin(), a.q.begin() + H * D, b.q.begin() + 2 * H * D);
  for (int t = 0; t < c.lens[0]; ++t) {
    for (int h = 0; h < c.kv_heads; ++h) {
      for (int d = 0; d < D; ++d) {
        const int64_t pa = a.indices[a.indptr[0] + t / c.page_size];
        const int64_t pb = b.indices[b.indptr[2] + t / c.page_size];
        b.k_elems[b.elem(pb, t % c.page_size, h, d)] = a.k_elems[a.elem(pa, t % c.page_size, h, d)];
        b.v_elems[b.elem(pb, t % c.page_size, h, d)] = a.v_elems[a.elem(pa, t % c.page_size, h, d)];
      }
    }
  }
  b.dq.upload(b.q);
  b.dk.upload(b.k_elems);
  b.dv.upload(b.v_elems);
  ASSERT_TRUE(plan_and_run(&b).ok());
  cuda_check(cudaDeviceSynchronize(), "run");
  const auto bytes_b = b.dout.download_raw();
  const size_t row = static_cast<size_t>(H) * D * 2;
  EXPECT_EQ(0, std::memcmp(first.data(), bytes_b.data() + 2 * row, row));
  check_against_reference(b);
}

// More items than CTAs: a grid of 2 x 2 CTAs (req.num_sms) takes the items after its first four
// by tickets from the workspace counter. Runs again without a re-plan (which would rewrite the
// counter), so each launch depends on the previous one leaving the counter at 0: every run must
// be right, bitwise equal to the first, and leave the counter at 0. Unsplit items, then
// deterministic splits whose merges run on whichever CTA finishes a unit last.
TEST_F(Decode, DynamicScheduleOnFewCtas) {
  for (bool det : {false, true}) {
    DecodeCase c;
    c.lens = {2500, 17, 0, 1000, 5, 700, 64, 1300};
    c.qo_heads = 8;
    c.kv_heads = 2;
    c.num_sms = 2;
    c.deterministic = det;
    c.fixed_split = 256;
    SCOPED_TRACE(describe(c));
    const uint64_t seed = next_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    DecodeSetup s;
    make_setup(&s, c, seed);
    flashserve::DecodePlan plan;
    ASSERT_TRUE(plan_and_run(&s, nullptr, &plan).ok());
    ASSERT_GT(plan.num_work, 4 * 2) << "the case must have more items than CTAs";
    cuda_check(cudaDeviceSynchronize(), "run");
    check_against_reference(s);
    const auto first = s.dout.download_raw();
    for (int run = 1; run <= 3; ++run) {
      SCOPED_TRACE("run " + std::to_string(run));
      const auto ws = s.ws.download_raw();
      flashserve::attention::DecodeCounts counts;
      std::memcpy(&counts, ws.data(), sizeof(counts));
      ASSERT_EQ(counts.next_work, 0) << "the ticket counter was not reset";
      s.dout.poison();
      ASSERT_TRUE(flashserve::decode_run(plan, s.args(), s.ws.data(), nullptr).ok());
      cuda_check(cudaDeviceSynchronize(), "run");
      EXPECT_EQ(first, s.dout.download_raw());
    }
  }
}

TEST_F(Decode, GraphReplayAfterReplan) {
  // Capacity for 8 requests (4-warp CTAs), then for 2 at group 8 (the wide CTA: 2 x (2 + 2) units).
  DecodeCase c1;
  c1.lens = {4000, 10, 0, 700, 20000, 3, 1, 64};
  DecodeCase c2 = c1;
  c2.lens = {20000, 5, 200};
  graph_replay_after_replan(c1, c2, 8, 4);
  c1.lens = {33000, 10};
  c1.qo_heads = 16;  // group 8: 8-row units
  c2 = c1;
  c2.lens = {0, 20000};
  graph_replay_after_replan(c1, c2, 2, 8);
}

void Decode::graph_replay_after_replan(const DecodeCase& c1, const DecodeCase& c2, int capacity,
                                       int cta_warps) {
  SCOPED_TRACE(describe(c1) + " then " + describe(c2));
  const uint64_t seed = next_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  DecodeSetup s1, s2;
  make_setup(&s1, c1, seed);
  make_setup(&s2, c2, seed + 1);
  // s2's data goes through s1's buffers (same addresses as captured): its pool must fit.
  ASSERT_GE(s1.num_pages, s2.num_pages);
  cudaStream_t stream;
  cuda_check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
  auto req1 = s1.request();
  req1.max_batch_size = capacity;
  req1.max_q_tokens = capacity;
  size_t bytes = 0;
  ASSERT_TRUE(flashserve::decode_workspace_size(req1, &bytes).ok());
  DeviceTensor ws(DType::kUInt8, {static_cast<int64_t>(bytes)});
  flashserve::DecodePlan plan;
  ASSERT_TRUE(flashserve::decode_plan(req1, ws.data(), bytes, stream, &plan).ok());
  EXPECT_EQ(plan.cta_warps, cta_warps);
  s1.dout.poison();
  cudaGraph_t graph;
  cuda_check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capture");
  const Status st = flashserve::decode_run(plan, s1.args(), ws.data(), stream);
  cuda_check(cudaStreamEndCapture(stream, &graph), "end capture");
  ASSERT_TRUE(st.ok()) << st.to_string();
  cudaGraphExec_t exec;
  cuda_check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  cuda_check(cudaGraphLaunch(exec, stream), "launch");
  cuda_check(cudaStreamSynchronize(stream), "sync");
  check_against_reference(s1);

  // Re-plan batch 2 into the same workspace; copy its data into s1's buffers; replay.
  auto req2 = s2.request();
  req2.max_batch_size = capacity;
  req2.max_q_tokens = capacity;
  flashserve::DecodePlan plan2;
  ASSERT_TRUE(flashserve::decode_plan(req2, ws.data(), bytes, stream, &plan2).ok());
  auto copy = [&](const DeviceTensor& from, const DeviceTensor& to) {
    cuda_check(cudaMemcpyAsync(to.data(), from.data(), from.storage_bytes(),
                               cudaMemcpyDeviceToDevice, stream),
               "copy");
  };
  copy(s2.dk, s1.dk);
  copy(s2.dv, s1.dv);
  copy(s2.dq, s1.dq);
  copy(s2.dindptr, s1.dindptr);
  copy(s2.dindices, s1.dindices);
  copy(s2.dlast, s1.dlast);
  s1.dout.poison();
  s1.dlse.poison();
  cuda_check(cudaStreamSynchronize(stream), "sync");
  cuda_check(cudaGraphLaunch(exec, stream), "replay");
  cuda_check(cudaStreamSynchronize(stream), "sync");
  // Compare s1's output buffers (first q_tokens rows) with the reference of s2.
  const int64_t n = s2.q_tokens() * c2.qo_heads * c2.head_dim;
  std::vector<float> out = s1.dout.download();
  std::vector<float> lse = s1.dlse.download();
  s2.dout.upload(std::vector<float>(out.begin(), out.begin() + n));
  s2.dlse.upload(std::vector<float>(lse.begin(), lse.begin() + s2.q_tokens() * c2.qo_heads));
  // s2's cache layout differs from s1's page count only past s2's pages: the reference reads s2.
  check_against_reference(s2);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST_F(Decode, MergeStates) {
  const int T = 5, S = 3, H = 4, D = 128;
  const uint64_t seed = next_seed();
  std::vector<float> v = rounded(DType::kBFloat16, random_normal(T * S * H * D, seed));
  std::vector<float> s = random_normal(T * S * H, seed + 1, 0.f, 3.f);
  s[0] = -INFINITY;  // a state without tokens
  for (int i = 0; i < S; ++i)
    s[(1 * S + i) * H + 2] = -INFINITY;  // a row without any
  DeviceTensor dv(DType::kBFloat16, {T, S, H, D}), ds(DType::kFloat32, {T, S, H});
  DeviceTensor out(DType::kBFloat16, {T, H, D}), lse(DType::kFloat32, {T, H});
  dv.upload(v);
  ds.upload(s);
  out.poison();
  ASSERT_TRUE(flashserve::merge_states(dv.view(), ds.view(), out.view(), lse.view()).ok());
  cuda_check(cudaDeviceSynchronize(), "merge");
  std::vector<double> ref(T * H * D, 0), ref_lse(T * H, -INFINITY);
  std::vector<float> base(T * H * D, 0);
  for (int t = 0; t < T; ++t) {
    for (int h = 0; h < H; ++h) {
      double m = -INFINITY;
      for (int i = 0; i < S; ++i)
        m = std::max(m, double(s[(t * S + i) * H + h]));
      if (m == -INFINITY) continue;
      double l = 0;
      for (int i = 0; i < S; ++i)
        l += std::exp(s[(t * S + i) * H + h] - m);
      ref_lse[t * H + h] = m + std::log(l);
      for (int d = 0; d < D; ++d) {
        double o = 0;
        for (int i = 0; i < S; ++i)
          o += std::exp(s[(t * S + i) * H + h] - m) / l * v[((t * S + i) * H + h) * D + d];
        ref[(t * H + h) * D + d] = o;
        base[(t * H + h) * D + d] = round_to(DType::kBFloat16, o);
      }
    }
  }
  const Accuracy a = accuracy_rule(out.download(), ref, base);
  EXPECT_TRUE(a.pass) << a.str();
  const auto got = lse.download();
  for (int i = 0; i < T * H; ++i) {
    if (std::isinf(ref_lse[i])) {
      EXPECT_TRUE(std::isinf(got[i]) && got[i] < 0);
    } else {
      EXPECT_NEAR(got[i], ref_lse[i], 1e-4 * (1 + std::fabs(ref_lse[i])));
    }
  }
  // merge_state of states 0 and 1 equals merge_states of the first two.
  DeviceTensor out2(DType::kBFloat16, {T, H, D}), lse2(DType::kFloat32, {T, H});
  TensorView va = TensorView::strided(dv.data(), DType::kBFloat16, {T, H, D}, {S * H * D, D, 1});
  TensorView vb = TensorView::strided(static_cast<char*>(dv.data()) + H * D * 2, DType::kBFloat16,
                                      {T, H, D}, {S * H * D, D, 1});
  TensorView sa = TensorView::strided(ds.data(), DType::kFloat32, {T, H}, {S * H, 1});
  TensorView sb = TensorView::strided(static_cast<char*>(ds.data()) + H * 4, DType::kFloat32,
                                      {T, H}, {S * H, 1});
  ASSERT_TRUE(flashserve::merge_state(va, sa, vb, sb, out2.view(), lse2.view()).ok());
  cuda_check(cudaDeviceSynchronize(), "merge_state");
  const auto o2 = out2.download();
  for (int t = 0; t < T; ++t) {
    for (int h = 0; h < H; ++h) {
      const double s0 = s[(t * S + 0) * H + h], s1 = s[(t * S + 1) * H + h];
      const double m = std::max(s0, s1);
      if (m == -INFINITY) continue;
      const double w0 = std::exp(s0 - m), w1 = std::exp(s1 - m);
      for (int d = 0; d < D; ++d) {
        const double e =
            (w0 * v[((t * S + 0) * H + h) * D + d] + w1 * v[((t * S + 1) * H + h) * D + d]) /
            (w0 + w1);
        EXPECT_NEAR(o2[(t * H + h) * D + d], e, 2e-2 * (1 + std::fabs(e)));
      }
    }
  }
}

}  // namespace
}  // namespace fs_test
