// Prefill attention (prefill_plan / prefill_run) against the CPU reference with METHOD.md's
// accuracy rule: ragged batches with lengths such as (113, 203), (1023, 1024), (1, 4096),
// (4224, 4224) and zero-length requests, head_dim 64/96/128/192/256 and qk 192 / v 128 (DeepSeek),
// causal or not, GQA and MQA, every variant (window left/right, soft-cap, ALiBi, sinks, custom
// mask), fully masked rows (0 and -inf), fp16 and bf16, LSE, determinism and CUDA-graph capture.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <sstream>

#include "check.h"
#include "flashserve/prefill.h"
#include "gpu_test.h"
#include "reference/prefill.h"

namespace fs_test {
namespace {

using flashserve::Status;

struct PrefillCase {
  std::vector<std::pair<int, int>> lens;  // (q_len, kv_len) per request
  int qo_heads = 4, kv_heads = 2, head_dim = 128;
  int head_dim_v = 0;  // of v and out; 0 = head_dim
  DType dtype = DType::kBFloat16;
  bool causal = false;
  int window_left = -1, window_right = -1;
  float soft_cap = 0.f;
  bool alibi = false, sinks = false, mask = false;
  // > 0: k and v live in a paged cache (shuffled page ids, every unused slot NaN).
  int page_size = 0;
  bool hnd = false;
  int num_sms = 0;  // > 0: the plan's CTAs (few CTAs: each runs many tiles of its work list)
  // > 0: k at position t of a request of kv_len L is scaled by 1 + k_ramp * (1 - t / L)^2, so the
  // scores of a row grow towards the first kv blocks, which the kernel reaches last.
  float k_ramp = 0.f;
};

std::string describe(const PrefillCase& c) {
  std::ostringstream os;
  os << c.qo_heads << "/" << c.kv_heads << "x" << c.head_dim;
  if (c.head_dim_v > 0) os << "/v" << c.head_dim_v;
  os << " " << flashserve::dtype_name(c.dtype) << " causal " << c.causal << " window "
     << c.window_left << "," << c.window_right << " cap " << c.soft_cap << " alibi " << c.alibi
     << " sinks " << c.sinks << " mask " << c.mask << " page " << c.page_size
     << (c.hnd ? " HND" : " NHD") << " sms " << c.num_sms << " k_ramp " << c.k_ramp << " lens [";
  for (size_t b = 0; b < c.lens.size(); ++b)
    os << (b ? " " : "") << c.lens[b].first << "x" << c.lens[b].second;
  return os.str() + "]";
}

struct PrefillSetup {
  PrefillCase c;
  ref::PrefillProblem prob;
  std::vector<float> q, k, v;
  DeviceTensor dq, dk, dv, dout, dlse, dslopes, dsinks, dmask, dmask_off, ws;
  // Paged: the caches and the table (host copies and device arrays).
  std::vector<int32_t> page_indptr, page_indices, last_page_len;
  DeviceTensor dk_cache, dv_cache, dindptr, dindices, dlast;
  flashserve::PrefillPlan plan;
  size_t ws_bytes = 0;

  PrefillSetup(const PrefillCase& cs, uint64_t seed) : c(cs) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    prob.qo_indptr = {0};
    prob.kv_indptr = {0};
    for (auto [ql, kl] : c.lens) {
      prob.qo_indptr.push_back(prob.qo_indptr.back() + ql);
      prob.kv_indptr.push_back(prob.kv_indptr.back() + kl);
    }
    prob.num_qo_heads = c.qo_heads;
    prob.num_kv_heads = c.kv_heads;
    prob.head_dim = c.head_dim;
    prob.head_dim_v = c.head_dim_v;
    prob.sm_scale = 1.f / std::sqrt(float(c.head_dim));  // of the qk dim, whatever v's is
    prob.causal = c.causal;
    prob.window_left = c.window_left;
    prob.window_right = c.window_right;
    prob.soft_cap = c.soft_cap;
    prob.low = c.dtype;
    const int64_t tq = prob.qo_indptr.back(), tk = prob.kv_indptr.back(), D = c.head_dim,
                  Dv = head_dim_v();
    auto fill = [&](std::vector<float>& x, int64_t n) {
      x.resize(n);
      for (float& e : x)
        e = round_to(c.dtype, nd(rng));
    };
    fill(q, tq * c.qo_heads * D);
    fill(k, tk * c.kv_heads * D);
    if (c.k_ramp > 0.f) {
      for (size_t b = 0; b + 1 < prob.kv_indptr.size(); ++b) {
        const int64_t len = prob.kv_indptr[b + 1] - prob.kv_indptr[b];
        for (int64_t t = 0; t < len; ++t) {
          const double u = 1.0 - double(t) / double(len);
          const float f = static_cast<float>(1.0 + c.k_ramp * u * u);
          float* row = k.data() + (prob.kv_indptr[b] + t) * c.kv_heads * D;
          for (int64_t i = 0; i < c.kv_heads * D; ++i)
            row[i] = round_to(c.dtype, row[i] * f);
        }
      }
    }
    fill(v, tk * c.kv_heads * Dv);
    dq = DeviceTensor(c.dtype, {std::max<int64_t>(tq, 1), c.qo_heads, D});
    dk = DeviceTensor(c.dtype, {std::max<int64_t>(tk, 1), c.kv_heads, D});
    dv = DeviceTensor(c.dtype, {std::max<int64_t>(tk, 1), c.kv_heads, Dv});
    dout = DeviceTensor(c.dtype, {std::max<int64_t>(tq, 1), c.qo_heads, Dv});
    dlse = DeviceTensor(DType::kFloat32, {std::max<int64_t>(tq, 1), c.qo_heads});
    if (tq) dq.upload(q);
    if (tk) {
      dk.upload(k);
      dv.upload(v);
    }
    if (c.page_size > 0) make_paged(rng);
    if (c.alibi) {
      for (int h = 0; h < c.qo_heads; ++h)
        prob.alibi_slopes.push_back(std::exp2(-8.f * (h + 1) / c.qo_heads));
      dslopes = DeviceTensor(DType::kFloat32, {c.qo_heads});
      dslopes.upload(prob.alibi_slopes);
    }
    if (c.sinks) {
      for (int h = 0; h < c.qo_heads; ++h)
        prob.sinks.push_back(nd(rng) * 2.f);
      dsinks = DeviceTensor(DType::kFloat32, {c.qo_heads});
      dsinks.upload(prob.sinks);
    }
    if (c.mask) {
      int64_t bits = 0;
      for (auto [ql, kl] : c.lens) {
        prob.mask_offsets.push_back(bits);
        bits += static_cast<int64_t>(ql) * kl;
      }
      prob.mask.assign((bits + 7) / 8 + 1, 0);
      std::bernoulli_distribution keep(0.7);
      for (int64_t b = 0; b < bits; ++b)
        if (keep(rng)) prob.mask[b >> 3] |= uint8_t(1u << (b & 7));
      dmask = DeviceTensor(DType::kUInt8, {static_cast<int64_t>(prob.mask.size())});
      dmask.upload_raw(prob.mask.data(), static_cast<int64_t>(prob.mask.size()));
      dmask_off = DeviceTensor(DType::kInt64, {static_cast<int64_t>(c.lens.size())});
      dmask_off.upload_raw(prob.mask_offsets.data(),
                           static_cast<int64_t>(prob.mask_offsets.size() * sizeof(int64_t)));
    }
  }

  int head_dim_v() const { return c.head_dim_v > 0 ? c.head_dim_v : c.head_dim; }

  // Pages of every request in shuffled order, plus unused ones; the cache starts as NaN, so a
  // read of any slot the table does not cover (the tail of a last page, another page) shows.
  // The v cache's rows have head_dim_v elements, the k cache's head_dim.
  void make_paged(std::mt19937_64& rng) {
    const int64_t P = c.page_size, H = c.kv_heads, D = c.head_dim, Dv = head_dim_v();
    page_indptr = {0};
    for (auto [ql, kl] : c.lens) {
      const int pages = static_cast<int>((kl + P - 1) / P);
      page_indptr.push_back(page_indptr.back() + pages);
      last_page_len.push_back(kl == 0 ? 0 : static_cast<int32_t>(kl - (pages - 1) * P));
    }
    const int64_t num_pages = page_indptr.back() + 3;
    std::vector<int32_t> ids(num_pages);
    for (int64_t i = 0; i < num_pages; ++i)
      ids[i] = static_cast<int32_t>(i);
    std::shuffle(ids.begin(), ids.end(), rng);
    page_indices.assign(ids.begin(), ids.begin() + page_indptr.back());
    auto shape = [&](int64_t dim) {
      return c.hnd ? std::vector<int64_t>{num_pages, H, P, dim}
                   : std::vector<int64_t>{num_pages, P, H, dim};
    };
    std::vector<float> kc(num_pages * P * H * D, NAN), vc(num_pages * P * H * Dv, NAN);
    for (size_t b = 0; b < c.lens.size(); ++b) {
      for (int64_t t = 0; t < c.lens[b].second; ++t) {
        const int64_t page = page_indices[page_indptr[b] + t / P], slot = t % P;
        for (int64_t h = 0; h < H; ++h) {
          const int64_t row = c.hnd ? (page * H + h) * P + slot : (page * P + slot) * H + h;
          const int64_t src = (prob.kv_indptr[b] + t) * H + h;
          for (int64_t d = 0; d < D; ++d)
            kc[row * D + d] = k[src * D + d];
          for (int64_t d = 0; d < Dv; ++d)
            vc[row * Dv + d] = v[src * Dv + d];
        }
      }
    }
    dk_cache = DeviceTensor(c.dtype, shape(D));
    dv_cache = DeviceTensor(c.dtype, shape(Dv));
    dk_cache.upload(kc);
    dv_cache.upload(vc);
    auto ints = [](const std::vector<int32_t>& x) {
      DeviceTensor t(DType::kInt32, {static_cast<int64_t>(x.size())});
      if (!x.empty()) t.upload_raw(x.data(), static_cast<int64_t>(x.size() * sizeof(int32_t)));
      return t;
    };
    dindptr = ints(page_indptr);
    dindices = ints(page_indices);
    dlast = ints(last_page_len);
  }

  flashserve::PrefillPlanRequest request() const {
    flashserve::PrefillPlanRequest r;
    r.batch_size = static_cast<int>(c.lens.size());
    r.qo_indptr = prob.qo_indptr.data();
    r.kv_indptr = prob.kv_indptr.data();
    r.num_qo_heads = c.qo_heads;
    r.num_kv_heads = c.kv_heads;
    r.head_dim = c.head_dim;
    r.head_dim_v = c.head_dim_v;
    r.dtype = c.dtype;
    r.causal = c.causal;
    r.window_left = c.window_left;
    r.window_right = c.window_right;
    r.num_sms = c.num_sms;
    if (c.page_size > 0) {
      r.kv_indptr = nullptr;
      r.page_size = c.page_size;
      r.paged_kv_indptr = page_indptr.data();
      r.paged_kv_last_page_len = last_page_len.data();
    }
    return r;
  }

  Status plan_it() {
    const flashserve::PrefillPlanRequest r = request();
    Status st = flashserve::prefill_workspace_size(r, &ws_bytes);
    if (!st.ok()) return st;
    ws = DeviceTensor(DType::kUInt8, {static_cast<int64_t>(ws_bytes)});
    return flashserve::prefill_plan(r, ws.data(), ws_bytes, nullptr, &plan);
  }

  flashserve::PrefillArgs args() const {
    flashserve::PrefillArgs a;
    a.q = dq.view();
    if (c.page_size > 0) {
      a.cache.k_cache = dk_cache.view();
      a.cache.v_cache = dv_cache.view();
      a.cache.layout = c.hnd ? flashserve::KVLayout::kHND : flashserve::KVLayout::kNHD;
      a.table.indptr = dindptr.view();
      a.table.indices = dindices.view();
      a.table.last_page_len = dlast.view();
    } else {
      a.k = dk.view();
      a.v = dv.view();
    }
    a.out = dout.view();
    a.lse = dlse.view();
    a.logits_soft_cap = c.soft_cap;
    if (c.alibi) a.alibi_slopes = dslopes.view();
    if (c.sinks) a.sinks = dsinks.view();
    if (c.mask) {
      a.custom_mask = dmask.view();
      a.mask_offsets = dmask_off.view();
    }
    return a;
  }
};

class PrefillTest : public GpuTest {
 protected:
  // expect_block_m > 0: the tile height the plan must have chosen.
  void check_case(const PrefillCase& c, int expect_block_m = 0) {
    const uint64_t seed = next_seed();
    SCOPED_TRACE(describe(c) + " seed " + std::to_string(seed));
    PrefillSetup s(c, seed);
    ASSERT_TRUE(s.plan_it().ok());
    if (expect_block_m > 0) {
      EXPECT_EQ(s.plan.block_m, expect_block_m);
    }
    s.dout.poison();
    s.dlse.poison();
    const Status st = flashserve::prefill_run(s.plan, s.args(), s.ws.data(), nullptr);
    ASSERT_TRUE(st.ok()) << st.to_string();
    cuda_check(cudaDeviceSynchronize(), "prefill_run");
    const int64_t tq = s.prob.qo_indptr.back();
    if (tq == 0) return;
    const ref::PrefillRef r = ref::prefill(s.prob, s.q, s.k, s.v);
    const std::vector<float> out = s.dout.download();
    const Accuracy a = accuracy_rule(out, r.out, r.base);
    EXPECT_TRUE(a.pass) << "out: " << a.str();
    const std::vector<float> lse = s.dlse.download();
    int64_t bad = 0;
    for (size_t i = 0; i < r.lse.size(); ++i) {
      const bool ok = std::isinf(r.lse[i])
                          ? (std::isinf(lse[i]) && lse[i] < 0)
                          : std::fabs(lse[i] - r.lse[i]) <= 1e-3 + 1e-3 * std::fabs(r.lse[i]);
      if (!ok && bad++ < 3)
        ADD_FAILURE() << "lse[" << i << "] = " << lse[i] << ", reference " << r.lse[i];
    }
    EXPECT_EQ(bad, 0);
  }

  // The paged run of `c` by TMA (the page sizes that allow it) and by the gather path
  // (FLASHSERVE_PREFILL_PAGED_GATHER=1) give the same bits, out and LSE.
  void expect_tma_equals_gather(const PrefillCase& c) {
    const uint64_t seed = next_seed();
    SCOPED_TRACE(describe(c) + " seed " + std::to_string(seed));
    PrefillSetup s(c, seed);
    ASSERT_TRUE(s.plan_it().ok());
    s.dout.poison();
    s.dlse.poison();
    ASSERT_TRUE(flashserve::prefill_run(s.plan, s.args(), s.ws.data(), nullptr).ok());
    cuda_check(cudaDeviceSynchronize(), "tma run");
    const auto out_tma = s.dout.download_raw(), lse_tma = s.dlse.download_raw();
    s.dout.poison();
    s.dlse.poison();
    ASSERT_EQ(setenv("FLASHSERVE_PREFILL_PAGED_GATHER", "1", 1), 0);
    const Status st = flashserve::prefill_run(s.plan, s.args(), s.ws.data(), nullptr);
    unsetenv("FLASHSERVE_PREFILL_PAGED_GATHER");
    ASSERT_TRUE(st.ok()) << st.to_string();
    cuda_check(cudaDeviceSynchronize(), "gather run");
    EXPECT_EQ(out_tma, s.dout.download_raw());
    EXPECT_EQ(lse_tma, s.dlse.download_raw());
  }
};

const std::vector<std::pair<int, int>> kRagged = {{113, 203}, {0, 7}, {1023, 1024}, {1, 300},
                                                  {200, 200}, {0, 0}, {65, 64}};

TEST_F(PrefillTest, RaggedEveryHeadDimCausalAndNot) {
  for (int d : {64, 96, 128, 192, 256})
    for (bool causal : {false, true}) {
      PrefillCase c;
      c.lens = kRagged;
      c.head_dim = d;
      c.causal = causal;
      check_case(c);
    }
}

// head_dim 64 has two tile heights: a causal plan whose queries are all <= 2048 tokens takes 128
// rows (its causal and general kernels), any other plan 192. Both against the reference, ragged and
// paged, with a run variant (the general kernel of the same plan).
TEST_F(PrefillTest, HeadDim64TileHeights) {
  PrefillCase c;
  c.head_dim = 64;
  c.causal = true;
  c.lens = {{2048, 2100}, {129, 129}, {0, 5}, {1, 700}};
  check_case(c, 128);
  c.soft_cap = 30.f;  // the general kernel, same plan
  check_case(c, 128);
  c.soft_cap = 0.f;
  c.page_size = 16;
  check_case(c, 128);
  c.page_size = 0;
  c.lens = {{2049, 2049}, {300, 300}};  // one query over 2048: 192 rows
  check_case(c, 192);
  c.lens = {{300, 900}, {64, 64}};
  c.window_left = 100;  // a window: the general kernel of the default tile
  check_case(c, 192);
  c.window_left = -1;
  c.causal = false;
  check_case(c, 192);
}

// Rows whose maximum grows as the kernel walks towards the first kv blocks (k scaled up there):
// with lazy rescaling (online_softmax_sm90.cuh) some blocks move the reference maximum (growth
// > 8 in log2 units) and others keep it with P up to 2^8. Ragged and paged, causal and not, every
// tile shape (64: 192 and 128 rows), with the LSE checked by the reference.
TEST_F(PrefillTest, GrowingRowMaximum) {
  for (int d : {64, 128, 256})
    for (bool causal : {false, true})
      for (int page : {0, 16}) {
        PrefillCase c;
        c.head_dim = d;
        c.causal = causal;
        c.page_size = page;
        c.k_ramp = 5.f;
        c.lens = {{300, 1500}, {64, 2000}, {1, 700}};
        check_case(c);
      }
}

TEST_F(PrefillTest, LongSequences) {
  PrefillCase c;
  c.qo_heads = 2;
  c.kv_heads = 1;
  c.lens = {{4224, 4224}};
  c.causal = true;
  check_case(c);
  c.lens = {{1, 4096}, {17, 4096}};
  c.causal = false;
  check_case(c);
}

// Few persistent CTAs, each running many tiles in a row: the hand-over of Q's buffer between
// tiles (released after the last S = Q K^T where the output has its own buffer, after the
// epilogue otherwise), the pipelines' phases across tiles, every head dim, ragged and paged (TMA
// and gather page sizes), and a plain / causal / general kernel each.
TEST_F(PrefillTest, ManyTilesPerCta) {
  for (int d : {64, 96, 128, 192, 256})
    for (int page : {0, 16, 5})
      for (int variant = 0; variant < 3; ++variant) {
        PrefillCase c;
        c.head_dim = d;
        c.qo_heads = 4;
        c.kv_heads = 1;
        c.lens = {{300, 300}, {1, 513}, {0, 7}, {129, 1000}, {260, 260}};
        c.num_sms = 3;
        c.page_size = page;
        c.causal = variant == 1;
        if (variant == 2) c.soft_cap = 20.f, c.window_left = 200;
        check_case(c);
      }
  PrefillCase c;
  c.head_dim = 192;
  c.head_dim_v = 128;
  c.lens = {{300, 300}, {1, 513}, {129, 1000}};
  c.num_sms = 2;
  for (int page : {0, 16}) {
    c.page_size = page;
    c.causal = page == 16;
    check_case(c);
  }
}

TEST_F(PrefillTest, GqaAndMqaRatios) {
  for (auto [hq, hk] : std::vector<std::pair<int, int>>{{8, 1}, {6, 2}, {5, 5}, {12, 4}}) {
    PrefillCase c;
    c.qo_heads = hq;
    c.kv_heads = hk;
    c.head_dim = 64;
    c.lens = {{130, 260}, {70, 70}};
    c.causal = true;
    check_case(c);
  }
}

TEST_F(PrefillTest, Float16) {
  for (int d : {64, 96, 128, 192, 256}) {
    PrefillCase c;
    c.dtype = DType::kFloat16;
    c.head_dim = d;
    c.lens = {{113, 203}, {256, 256}};
    c.causal = d == 128;
    check_case(c);
  }
}

TEST_F(PrefillTest, FullyMaskedRowsGiveZeroAndMinusInf) {
  PrefillCase c;
  c.causal = true;  // q_len > kv_len: the first q_len - kv_len rows see no key
  c.lens = {{200, 100}, {5, 0}, {64, 1}};
  check_case(c);
}

TEST_F(PrefillTest, Variants) {
  std::vector<PrefillCase> cases(7);
  for (PrefillCase& c : cases)
    c.lens = {{113, 203}, {300, 300}, {0, 10}, {64, 1000}};
  cases[0].causal = true, cases[0].window_left = 100;
  cases[1].window_left = 50, cases[1].window_right = 20;
  cases[2].soft_cap = 5.f, cases[2].causal = true;
  cases[3].alibi = true, cases[3].causal = true;
  cases[4].sinks = true, cases[4].causal = true;
  cases[5].mask = true;
  cases[6].soft_cap = 30.f, cases[6].alibi = true, cases[6].sinks = true, cases[6].mask = true;
  cases[6].window_left = 150;
  for (const PrefillCase& c : cases)
    check_case(c);
  for (int d : {64, 96, 192, 256}) {
    PrefillCase c = cases[6];
    c.head_dim = d;
    check_case(c);
  }
}

// Paged KV: page sizes 1, 5, 16, 64 and 256, NHD and HND, every head dim, causal and not, GQA,
// chunked prefill (q_len < kv_len) and empty requests; shuffled pages in a NaN cache.
TEST_F(PrefillTest, PagedEveryPageSizeAndLayout) {
  for (int ps : {1, 5, 16, 64, 256})
    for (bool hnd : {false, true}) {
      PrefillCase c;
      c.lens = kRagged;
      c.page_size = ps;
      c.hnd = hnd;
      c.causal = ps != 5;
      check_case(c);
    }
  for (int d : {64, 96, 192, 256})
    for (bool causal : {false, true}) {
      PrefillCase c;
      c.lens = {{113, 203}, {0, 17}, {300, 1000}, {1, 4096}};
      c.head_dim = d;
      c.causal = causal;
      c.page_size = 16;
      check_case(c);
    }
}

TEST_F(PrefillTest, PagedVariantsGqaAndFloat16) {
  PrefillCase c;
  c.lens = {{113, 203}, {300, 300}, {0, 10}, {64, 1000}};
  c.page_size = 16;
  c.soft_cap = 30.f, c.alibi = true, c.sinks = true, c.mask = true, c.window_left = 150;
  check_case(c);
  PrefillCase g;
  g.lens = {{129, 4224}, {1023, 1024}};
  g.qo_heads = 8, g.kv_heads = 1, g.causal = true, g.page_size = 64, g.hnd = true;
  g.dtype = DType::kFloat16;
  check_case(g);
}

// A paged plan's run matches the ragged run of the same tokens bitwise: the same mainloop, only
// the loads differ.
// Case c on ragged k / v and on a page-16 cache holding the same tokens: the same bits.
void expect_paged_equals_ragged(PrefillCase c, uint64_t seed) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  PrefillSetup ragged(c, seed);
  c.page_size = 16;
  PrefillSetup paged(c, seed);
  ASSERT_TRUE(ragged.plan_it().ok());
  ASSERT_TRUE(paged.plan_it().ok());
  ASSERT_TRUE(flashserve::prefill_run(ragged.plan, ragged.args(), ragged.ws.data(), nullptr).ok());
  ASSERT_TRUE(flashserve::prefill_run(paged.plan, paged.args(), paged.ws.data(), nullptr).ok());
  cuda_check(cudaDeviceSynchronize(), "runs");
  EXPECT_EQ(ragged.dout.download_raw(), paged.dout.download_raw());
  EXPECT_EQ(ragged.dlse.download_raw(), paged.dlse.download_raw());
}

TEST_F(PrefillTest, PagedEqualsRaggedBitwise) {
  PrefillCase c;
  c.lens = {{113, 203}, {1000, 1500}, {0, 3}};
  c.causal = true;
  expect_paged_equals_ragged(c, next_seed());
}

// Page sizes that are a multiple of 8 rows dividing the kv block (or a multiple of it) load K and
// V by TMA, one box per page; FLASHSERVE_PREFILL_PAGED_GATHER=1 takes the gather path instead.
// Both paths give the same bits, including the last page's tail (NaN in the cache) and boxes past
// the kv end, at the swizzle widths of 128 bytes (64, 128, 256) and 64 bytes (96).
TEST_F(PrefillTest, PagedTmaEqualsGatherBitwise) {
  struct Variant {
    int page_size, head_dim;
    bool hnd, causal;
    DType dtype;
  };
  const Variant variants[] = {
      {16, 128, false, true, DType::kBFloat16},   {64, 64, true, false, DType::kFloat16},
      {256, 128, false, false, DType::kBFloat16}, {32, 96, true, true, DType::kBFloat16},
      {8, 256, false, true, DType::kBFloat16},    {128, 192, true, false, DType::kFloat16}};
  for (const Variant& var : variants) {
    PrefillCase c;
    c.lens = {{113, 203}, {0, 17}, {300, 1000}, {1, 4096}, {77, 77}};
    c.page_size = var.page_size;
    c.head_dim = var.head_dim;
    c.hnd = var.hnd;
    c.causal = var.causal;
    c.dtype = var.dtype;
    expect_tma_equals_gather(c);
  }
}

TEST_F(PrefillTest, PagedBadInputIsRejected) {
  PrefillCase c;
  c.lens = {{10, 40}, {5, 20}};
  c.page_size = 16;
  PrefillSetup s(c, next_seed());
  flashserve::PrefillPlanRequest r = s.request();
  auto plan_error = [&](const flashserve::PrefillPlanRequest& req) {
    flashserve::PrefillPlan plan;
    return flashserve::prefill_plan(req, s.ws.data(), s.ws_bytes, nullptr, &plan).to_string();
  };
  ASSERT_TRUE(s.plan_it().ok());
  std::vector<int32_t> last = s.last_page_len;
  last[1] = 17;
  r.paged_kv_last_page_len = last.data();
  EXPECT_NE(
      plan_error(r).find("req.paged_kv_last_page_len: request 1: expected a value in [1, 16]"),
      std::string::npos)
      << plan_error(r);
  r = s.request();
  r.page_size = -1;
  EXPECT_NE(plan_error(r).find("req.page_size"), std::string::npos) << plan_error(r);
  r = s.request();
  r.paged_kv_indptr = nullptr;
  EXPECT_NE(plan_error(r).find("req.paged_kv_indptr"), std::string::npos) << plan_error(r);

  auto run_error = [&](const flashserve::PrefillArgs& a) {
    return flashserve::prefill_run(s.plan, a, s.ws.data(), nullptr).to_string();
  };
  flashserve::PrefillArgs a = s.args();
  a.k = s.dk.view();
  EXPECT_NE(run_error(a).find("k: expected undefined with a paged plan"), std::string::npos)
      << run_error(a);
  a = s.args();
  a.cache.layout = flashserve::KVLayout::kHND;  // the NHD cache read as HND: wrong sizes
  EXPECT_NE(run_error(a).find("cache.k_cache"), std::string::npos) << run_error(a);
  a = s.args();
  a.table.indices = flashserve::TensorView();
  EXPECT_NE(run_error(a).find("table.indices"), std::string::npos) << run_error(a);
  a = s.args();
  a.cache.v_cache = s.dk.view();
  EXPECT_NE(run_error(a).find("cache.v_cache"), std::string::npos) << run_error(a);
}

// One prefill_run of s's plan captured into a graph on its own stream; replay() launches it and
// waits. Destroys the graph and the stream with it.
struct CapturedPrefill {
  cudaStream_t stream = nullptr;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  Status status;
  explicit CapturedPrefill(PrefillSetup& s) {
    cuda_check(cudaStreamCreate(&stream), "stream");
    cuda_check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capture");
    status = flashserve::prefill_run(s.plan, s.args(), s.ws.data(), stream);
    cuda_check(cudaStreamEndCapture(stream, &graph), "end capture");
    if (status.ok()) cuda_check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  }
  CapturedPrefill(const CapturedPrefill&) = delete;
  CapturedPrefill& operator=(const CapturedPrefill&) = delete;
  ~CapturedPrefill() {
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    if (graph != nullptr) cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
  }
  void replay() {
    cuda_check(cudaGraphLaunch(exec, stream), "replay");
    cuda_check(cudaStreamSynchronize(stream), "replay sync");
  }
};

TEST_F(PrefillTest, DeterministicAndGraphReplayAfterReplan) {
  PrefillCase c;
  c.lens = {{100, 300}, {300, 100}};
  c.causal = true;
  PrefillSetup s(c, next_seed());
  ASSERT_TRUE(s.plan_it().ok());
  ASSERT_TRUE(flashserve::prefill_run(s.plan, s.args(), s.ws.data(), nullptr).ok());
  cuda_check(cudaDeviceSynchronize(), "run 1");
  const std::vector<unsigned char> first = s.dout.download_raw();
  s.dout.poison();
  ASSERT_TRUE(flashserve::prefill_run(s.plan, s.args(), s.ws.data(), nullptr).ok());
  cuda_check(cudaDeviceSynchronize(), "run 2");
  EXPECT_EQ(first, s.dout.download_raw()) << "two runs of one plan differ";

  // Capture, then re-plan another composition with the same totals and replay.
  CapturedPrefill g(s);
  ASSERT_TRUE(g.status.ok()) << g.status.to_string();
  const cudaStream_t stream = g.stream;
  PrefillCase c2 = c;
  c2.lens = {{250, 50}, {150, 350}};
  s.c = c2;
  s.prob.qo_indptr = {0, 250, 400};
  s.prob.kv_indptr = {0, 50, 400};
  flashserve::PrefillPlan plan2;
  const flashserve::PrefillPlanRequest r2 = s.request();
  ASSERT_TRUE(flashserve::prefill_plan(r2, s.ws.data(), s.ws_bytes, stream, &plan2).ok());
  s.dout.poison();
  g.replay();
  const ref::PrefillRef r = ref::prefill(s.prob, s.q, s.k, s.v);
  const Accuracy a = accuracy_rule(s.dout.download(), r.out, r.base);
  EXPECT_TRUE(a.pass) << "replay after re-plan: " << a.str();
}

PrefillCase qk192_v128(std::vector<std::pair<int, int>> lens);

// --- split-KV: too few tiles for the SMs, so the plan cuts the long ones into pieces whose
// partials the kernel merges.

// Tiles of the case (query tiles x q heads): a plan with more items than that has split some.
int64_t tiles_of(const PrefillSetup& s) {
  int64_t tiles = 0;
  for (auto [ql, kl] : s.c.lens)
    tiles += (ql + s.plan.block_m - 1) / s.plan.block_m * s.c.qo_heads;
  return tiles;
}

class PrefillSplitTest : public PrefillTest {
 protected:
  void check_split(const PrefillCase& c) {
    {
      PrefillSetup s(c, 1);
      ASSERT_TRUE(s.plan_it().ok());
      ASSERT_GT(s.plan.split_capacity, 0);
      ASSERT_GT(s.plan.num_work, tiles_of(s)) << describe(c) << ": the plan did not split";
    }
    check_case(c);
  }
};

// Every head dim and qk 192 / v 128, causal or not (chunked prefill: q_len < kv_len), a short
// request beside the long ones, and an empty one.
TEST_F(PrefillSplitTest, EveryHeadDimCausalAndNot) {
  for (int d : {64, 96, 128, 192, 256})
    for (bool causal : {false, true}) {
      PrefillCase c;
      c.qo_heads = 2;
      c.kv_heads = 1;
      c.head_dim = d;
      c.lens = {{200, 5000}, {1, 3000}, {0, 9}, {30, 30}};
      c.causal = causal;
      check_split(c);
    }
  PrefillCase c = qk192_v128({{200, 5000}, {1, 3000}});
  c.qo_heads = 2;
  c.kv_heads = 1;
  for (bool causal : {false, true}) {
    c.causal = causal;
    check_split(c);
  }
}

// Sinks (in one piece only), windows that leave pieces empty for some rows, soft-cap + ALiBi +
// custom mask, fully masked rows, fp16, GQA, and paged KV by TMA and by the gather path.
TEST_F(PrefillSplitTest, VariantsPagedAndFloat16) {
  std::vector<PrefillCase> cases(8);
  for (PrefillCase& c : cases) {
    c.qo_heads = 4;
    c.kv_heads = 2;
    c.lens = {{150, 4000}, {3, 2500}};
  }
  cases[0].sinks = true, cases[0].causal = true;
  cases[1].window_left = 1500, cases[1].causal = true;
  cases[2].window_left = 700, cases[2].window_right = 900;
  cases[3].soft_cap = 20.f, cases[3].alibi = true, cases[3].mask = true, cases[3].sinks = true;
  cases[4].dtype = DType::kFloat16, cases[4].causal = true;
  cases[5].page_size = 16, cases[5].causal = true;
  cases[6].page_size = 5, cases[6].hnd = true;
  cases[7].causal = true, cases[7].lens = {{300, 100}, {2, 3000}};  // rows that see no key
  for (const PrefillCase& c : cases)
    check_split(c);
}

// The merge takes the pieces in order whichever finishes last: runs agree bitwise, and a graph
// captured on a plan without split pieces replays a re-plan with them (and back).
TEST_F(PrefillSplitTest, DeterministicAndGraphReplayAfterReplan) {
  PrefillCase c;
  c.qo_heads = 4;
  c.kv_heads = 2;
  c.lens = {{600, 600}, {600, 600}};
  c.causal = true;
  PrefillSetup s(c, next_seed());
  ASSERT_TRUE(s.plan_it().ok());
  ASSERT_EQ(s.plan.num_work, tiles_of(s));  // 5-block tiles: nothing to split

  CapturedPrefill g(s);
  ASSERT_TRUE(g.status.ok()) << g.status.to_string();
  const cudaStream_t stream = g.stream;

  auto replan = [&](std::vector<std::pair<int, int>> lens) {
    s.c.lens = lens;
    s.prob.qo_indptr = {0};
    s.prob.kv_indptr = {0};
    for (auto [ql, kl] : lens) {
      s.prob.qo_indptr.push_back(s.prob.qo_indptr.back() + ql);
      s.prob.kv_indptr.push_back(s.prob.kv_indptr.back() + kl);
    }
    const flashserve::PrefillPlanRequest r = s.request();
    ASSERT_TRUE(flashserve::prefill_plan(r, s.ws.data(), s.ws_bytes, stream, &s.plan).ok());
  };
  auto replay = [&] {
    s.dout.poison();
    g.replay();
    return s.dout.download_raw();
  };
  auto expect_reference = [&](const char* what) {
    const ref::PrefillRef r = ref::prefill(s.prob, s.q, s.k, s.v);
    const Accuracy a = accuracy_rule(s.dout.download(), r.out, r.base);
    EXPECT_TRUE(a.pass) << what << ": " << a.str();
  };
  // Same totals (1200 queries, 1200 keys): one request's 100 queries over 1100 keys split.
  replan({{1100, 100}, {100, 1100}});
  EXPECT_GT(s.plan.num_work, tiles_of(s));
  const std::vector<unsigned char> first = replay();
  expect_reference("replay of a split plan");
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(first, replay()) << "replay " << i << " differs";
  replan({{600, 600}, {600, 600}});
  replay();
  expect_reference("replay after going back to no split");
}

// --- qk head_dim 192 with v head_dim 128 (DeepSeek): q and k rows of 192, v and out rows of 128,
// sm_scale 1 / sqrt(192), the LSE as for any head dim.

PrefillCase qk192_v128(std::vector<std::pair<int, int>> lens) {
  PrefillCase c;
  c.lens = std::move(lens);
  c.head_dim = 192;
  c.head_dim_v = 128;
  return c;
}

TEST_F(PrefillTest, Qk192V128RaggedCausalAndNotBothDtypes) {
  for (DType dtype : {DType::kBFloat16, DType::kFloat16})
    for (bool causal : {false, true}) {
      PrefillCase c = qk192_v128(kRagged);  // zero-length requests, fully masked causal rows
      c.dtype = dtype;
      c.causal = causal;
      check_case(c);
    }
  PrefillCase c = qk192_v128({{1, 4096}, {0, 9}, {17, 4096}});
  check_case(c);
  c.causal = true;
  c.dtype = DType::kFloat16;
  check_case(c);
}

TEST_F(PrefillTest, Qk192V128Gqa) {
  PrefillCase c = qk192_v128({{130, 260}, {0, 3}, {70, 70}, {1, 129}});
  c.qo_heads = 16;
  c.kv_heads = 2;
  c.causal = true;
  check_case(c);
  c.causal = false;
  c.dtype = DType::kFloat16;
  check_case(c);
}

// The general kernel: window, soft-cap, and every run-time variant at once.
TEST_F(PrefillTest, Qk192V128GeneralKernel) {
  std::vector<PrefillCase> cases(4, qk192_v128({{113, 203}, {300, 300}, {0, 10}, {64, 1000}}));
  cases[0].causal = true, cases[0].window_left = 100, cases[0].soft_cap = 30.f;
  cases[1].window_left = 50, cases[1].window_right = 20, cases[1].soft_cap = 5.f;
  cases[1].dtype = DType::kFloat16;
  cases[2].soft_cap = 30.f, cases[2].alibi = true, cases[2].sinks = true, cases[2].mask = true;
  cases[2].window_left = 150;
  cases[3] = cases[0];
  cases[3].qo_heads = 16, cases[3].kv_heads = 2, cases[3].dtype = DType::kFloat16;
  for (const PrefillCase& c : cases)
    check_case(c);
}

// Paged: page sizes 1 (gather), 16 and 64 (TMA), NHD and HND: the k cache's rows have 192
// elements, the v cache's 128.
TEST_F(PrefillTest, Qk192V128PagedEveryPageSizeAndLayout) {
  for (int ps : {1, 16, 64})
    for (bool hnd : {false, true}) {
      PrefillCase c = qk192_v128({{113, 203}, {0, 17}, {300, 1000}, {1, 4096}, {65, 64}});
      c.page_size = ps;
      c.hnd = hnd;
      c.causal = !(ps == 16 && hnd);
      c.dtype = ps == 64 ? DType::kFloat16 : DType::kBFloat16;
      check_case(c);
    }
  PrefillCase g = qk192_v128({{129, 1100}, {1023, 1024}, {0, 0}});
  g.qo_heads = 16, g.kv_heads = 2, g.causal = true, g.page_size = 16, g.hnd = true;
  g.soft_cap = 30.f, g.window_left = 300;
  check_case(g);
}

TEST_F(PrefillTest, Qk192V128PagedTmaEqualsGatherBitwise) {
  struct Variant {
    int page_size;
    bool hnd, causal;
    DType dtype;
  };
  const Variant variants[] = {{16, false, true, DType::kBFloat16},
                              {64, true, false, DType::kFloat16},
                              {8, true, true, DType::kBFloat16},
                              {128, false, false, DType::kBFloat16}};
  for (const Variant& var : variants) {
    PrefillCase c = qk192_v128({{113, 203}, {0, 17}, {300, 1000}, {1, 4096}, {77, 77}});
    c.page_size = var.page_size;
    c.hnd = var.hnd;
    c.causal = var.causal;
    c.dtype = var.dtype;
    expect_tma_equals_gather(c);
  }
}

TEST_F(PrefillTest, Qk192V128PagedEqualsRaggedBitwise) {
  PrefillCase c = qk192_v128({{113, 203}, {1000, 1500}, {0, 3}});
  c.causal = true;
  expect_paged_equals_ragged(c, next_seed());
}

// The plan resolves head_dim_v; a run whose v, v cache or out rows are not head_dim_v long is
// rejected naming the argument, as is a 192 / 192 plan given the 128-wide v and out.
TEST_F(PrefillTest, Qk192V128WrongVOrOutDimIsRejected) {
  PrefillSetup s(qk192_v128({{10, 40}, {5, 20}}), next_seed());
  ASSERT_TRUE(s.plan_it().ok());
  EXPECT_EQ(s.plan.head_dim, 192);
  EXPECT_EQ(s.plan.head_dim_v, 128);
  ASSERT_TRUE(flashserve::prefill_run(s.plan, s.args(), s.ws.data(), nullptr).ok());
  auto run_error = [](const PrefillSetup& x, const flashserve::PrefillArgs& a) {
    return flashserve::prefill_run(x.plan, a, x.ws.data(), nullptr).to_string();
  };
  DeviceTensor v192(s.c.dtype, {s.dv.shape()[0], s.c.kv_heads, 192});
  DeviceTensor out192(s.c.dtype, {s.dout.shape()[0], s.c.qo_heads, 192});
  flashserve::PrefillArgs a = s.args();
  a.v = v192.view();
  EXPECT_NE(run_error(s, a).find("prefill_run: v:"), std::string::npos) << run_error(s, a);
  a = s.args();
  a.out = out192.view();
  EXPECT_NE(run_error(s, a).find("prefill_run: out:"), std::string::npos) << run_error(s, a);
  a = s.args();
  a.v = s.dk.view();  // k's rows: 192
  EXPECT_NE(run_error(s, a).find("prefill_run: v:"), std::string::npos) << run_error(s, a);

  // The same tokens planned as 192 / 192 (head_dim_v 0): the 128-wide v and out do not fit.
  PrefillCase same = s.c;
  same.head_dim_v = 0;
  PrefillSetup s192(same, next_seed());
  ASSERT_TRUE(s192.plan_it().ok());
  EXPECT_EQ(s192.plan.head_dim_v, 192);
  a = s192.args();
  a.v = s.dv.view();
  EXPECT_NE(run_error(s192, a).find("prefill_run: v:"), std::string::npos) << run_error(s192, a);
  a = s192.args();
  a.out = s.dout.view();
  EXPECT_NE(run_error(s192, a).find("prefill_run: out:"), std::string::npos) << run_error(s192, a);

  // Paged: the v cache must have head_dim_v, the k cache head_dim.
  PrefillCase pc = s.c;
  pc.page_size = 16;
  PrefillSetup p(pc, next_seed());
  ASSERT_TRUE(p.plan_it().ok());
  ASSERT_TRUE(flashserve::prefill_run(p.plan, p.args(), p.ws.data(), nullptr).ok());
  a = p.args();
  a.cache.v_cache = p.dk_cache.view();  // rows of 192
  EXPECT_NE(run_error(p, a).find("prefill_run: cache.v_cache:"), std::string::npos)
      << run_error(p, a);
  a = p.args();
  a.cache.k_cache = p.dv_cache.view();  // rows of 128
  EXPECT_NE(run_error(p, a).find("prefill_run: cache.k_cache:"), std::string::npos)
      << run_error(p, a);
  a = p.args();
  a.out = out192.view();
  EXPECT_NE(run_error(p, a).find("prefill_run: out:"), std::string::npos) << run_error(p, a);
  cuda_check(cudaDeviceSynchronize(), "runs");
}

}  // namespace
}  // namespace fs_test
