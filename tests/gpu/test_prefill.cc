// Prefill attention (prefill_plan / prefill_run) against the CPU reference with METHOD.md's
// accuracy rule: ragged batches with lengths such as (113, 203), (1023, 1024), (1, 4096),
// (4224, 4224) and zero-length requests, head_dim 64/128/256, causal or not, GQA and MQA, every
// variant (window left/right, soft-cap, ALiBi, sinks, custom mask), fully masked rows (0 and
// -inf), fp16 and bf16, LSE, determinism and CUDA-graph capture.
#include <gtest/gtest.h>

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
  DType dtype = DType::kBFloat16;
  bool causal = false;
  int window_left = -1, window_right = -1;
  float soft_cap = 0.f;
  bool alibi = false, sinks = false, mask = false;
};

std::string describe(const PrefillCase& c) {
  std::ostringstream os;
  os << c.qo_heads << "/" << c.kv_heads << "x" << c.head_dim << " "
     << flashserve::dtype_name(c.dtype) << " causal " << c.causal << " window " << c.window_left
     << "," << c.window_right << " cap " << c.soft_cap << " alibi " << c.alibi << " sinks "
     << c.sinks << " mask " << c.mask << " lens [";
  for (size_t b = 0; b < c.lens.size(); ++b)
    os << (b ? " " : "") << c.lens[b].first << "x" << c.lens[b].second;
  return os.str() + "]";
}

struct PrefillSetup {
  PrefillCase c;
  ref::PrefillProblem prob;
  std::vector<float> q, k, v;
  DeviceTensor dq, dk, dv, dout, dlse, dslopes, dsinks, dmask, dmask_off, ws;
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
    prob.sm_scale = 1.f / std::sqrt(float(c.head_dim));
    prob.causal = c.causal;
    prob.window_left = c.window_left;
    prob.window_right = c.window_right;
    prob.soft_cap = c.soft_cap;
    prob.low = c.dtype;
    const int64_t tq = prob.qo_indptr.back(), tk = prob.kv_indptr.back(), D = c.head_dim;
    auto fill = [&](std::vector<float>& x, int64_t n) {
      x.resize(n);
      for (float& e : x)
        e = round_to(c.dtype, nd(rng));
    };
    fill(q, tq * c.qo_heads * D);
    fill(k, tk * c.kv_heads * D);
    fill(v, tk * c.kv_heads * D);
    dq = DeviceTensor(c.dtype, {std::max<int64_t>(tq, 1), c.qo_heads, D});
    dk = DeviceTensor(c.dtype, {std::max<int64_t>(tk, 1), c.kv_heads, D});
    dv = DeviceTensor(c.dtype, {std::max<int64_t>(tk, 1), c.kv_heads, D});
    dout = DeviceTensor(c.dtype, {std::max<int64_t>(tq, 1), c.qo_heads, D});
    dlse = DeviceTensor(DType::kFloat32, {std::max<int64_t>(tq, 1), c.qo_heads});
    if (tq) dq.upload(q);
    if (tk) {
      dk.upload(k);
      dv.upload(v);
    }
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

  flashserve::PrefillPlanRequest request() const {
    flashserve::PrefillPlanRequest r;
    r.batch_size = static_cast<int>(c.lens.size());
    r.qo_indptr = prob.qo_indptr.data();
    r.kv_indptr = prob.kv_indptr.data();
    r.num_qo_heads = c.qo_heads;
    r.num_kv_heads = c.kv_heads;
    r.head_dim = c.head_dim;
    r.dtype = c.dtype;
    r.causal = c.causal;
    r.window_left = c.window_left;
    r.window_right = c.window_right;
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
    a.k = dk.view();
    a.v = dv.view();
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
  void check_case(const PrefillCase& c) {
    const uint64_t seed = next_seed();
    SCOPED_TRACE(describe(c) + " seed " + std::to_string(seed));
    PrefillSetup s(c, seed);
    ASSERT_TRUE(s.plan_it().ok());
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
};

const std::vector<std::pair<int, int>> kRagged = {{113, 203}, {0, 7}, {1023, 1024}, {1, 300},
                                                  {200, 200}, {0, 0}, {65, 64}};

TEST_F(PrefillTest, RaggedEveryHeadDimCausalAndNot) {
  for (int d : {64, 128, 256})
    for (bool causal : {false, true}) {
      PrefillCase c;
      c.lens = kRagged;
      c.head_dim = d;
      c.causal = causal;
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
  for (int d : {64, 128, 256}) {
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
  for (int d : {64, 256}) {
    PrefillCase c = cases[6];
    c.head_dim = d;
    check_case(c);
  }
}

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
  cudaStream_t stream;
  cuda_check(cudaStreamCreate(&stream), "stream");
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  cuda_check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capture");
  const Status st = flashserve::prefill_run(s.plan, s.args(), s.ws.data(), stream);
  cuda_check(cudaStreamEndCapture(stream, &graph), "end capture");
  ASSERT_TRUE(st.ok()) << st.to_string();
  cuda_check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  PrefillCase c2 = c;
  c2.lens = {{250, 50}, {150, 350}};
  s.c = c2;
  s.prob.qo_indptr = {0, 250, 400};
  s.prob.kv_indptr = {0, 50, 400};
  flashserve::PrefillPlan plan2;
  const flashserve::PrefillPlanRequest r2 = s.request();
  ASSERT_TRUE(flashserve::prefill_plan(r2, s.ws.data(), s.ws_bytes, stream, &plan2).ok());
  s.dout.poison();
  cuda_check(cudaGraphLaunch(exec, stream), "replay");
  cuda_check(cudaStreamSynchronize(stream), "replay sync");
  const ref::PrefillRef r = ref::prefill(s.prob, s.q, s.k, s.v);
  const Accuracy a = accuracy_rule(s.dout.download(), r.out, r.base);
  EXPECT_TRUE(a.pass) << "replay after re-plan: " << a.str();
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

}  // namespace
}  // namespace fs_test
