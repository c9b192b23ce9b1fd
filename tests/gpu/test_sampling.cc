// sample_from_logits / sample_from_probs: empirical frequencies of many draws against the target
// distribution (Bretagnolle-Huber-Carol bound at a fixed failure probability, with a negative
// control in every statistical check), filtered tokens never drawn, top_k = 1 and temperature 0
// equal to argmax, determinism for a seed and offset, fresh draws when the offset changes (also
// on CUDA-graph replay), bad rows, odd and large vocabularies, strided rows, the streaming path.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>

#include "flashserve/sampling.h"
#include "gpu_test.h"
#include "reference/sampling.h"
#include "sampling_util.h"

namespace fs_test {
namespace {

using flashserve::FilterOrder;
using flashserve::SamplingArgs;
using flashserve::Status;
using flashserve::TensorView;

class SamplingTest : public GpuTest {
 protected:
  // One row on the device (dtype) holding `values` (rounded to dtype by the upload).
  DeviceTensor device_row(DType dtype, const std::vector<float>& values) {
    DeviceTensor t(dtype, {1, static_cast<int64_t>(values.size())});
    t.upload(values);
    return t;
  }
  std::vector<float> lognormal_probs(int vocab, float sigma) {
    std::vector<float> p = random_normal(vocab, next_seed(), 0.f, sigma);
    for (float& v : p)
      v = std::exp(v);
    return p;
  }
  SamplingArgs seeded() {
    SamplingArgs a;
    a.seed_value = next_seed();
    a.offset_value = next_seed() % 1000;
    return a;
  }
};

std::vector<double> normalized(const std::vector<float>& v) {
  const double s = std::accumulate(v.begin(), v.end(), 0.0);
  std::vector<double> p(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    p[i] = v[i] / s;
  return p;
}

std::vector<char> all_kept(const std::vector<double>& p) {
  std::vector<char> k(p.size());
  for (size_t i = 0; i < p.size(); ++i)
    k[i] = p[i] > 0;
  return k;
}

TEST_F(SamplingTest, FromProbsMatchesDistribution) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const int vocab = 37;
  const std::vector<float> host = lognormal_probs(vocab, 1.f);
  const DeviceTensor row = device_row(DType::kFloat32, host);
  const std::vector<double> p = normalized(host);
  const std::vector<int64_t> tokens = sample_calls(false, repeated_rows(row, 1 << 18), seeded(), 4);
  ASSERT_EQ(tokens.size(), size_t{1} << 20);
  const std::vector<double> wrong = perturbed(p);
  EXPECT_TRUE(matches_distribution(tokens, p, &wrong));
}

TEST_F(SamplingTest, FromLogitsMatchesSoftmaxWithTemperature) {
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    for (float temperature : {1.f, 0.6f, 2.5f}) {
      SCOPED_TRACE(std::string(flashserve::dtype_name(dtype)) + " T " +
                   std::to_string(temperature) + " seed " + std::to_string(seed_));
      const int vocab = 50;
      const std::vector<float> x = rounded(dtype, random_normal(vocab, next_seed(), 0.f, 1.5f));
      const DeviceTensor row = device_row(dtype, x);
      SamplingArgs a = seeded();
      a.temperature_value = temperature;
      const std::vector<int64_t> tokens = sample_calls(true, repeated_rows(row, 1 << 18), a, 2);
      const std::vector<double> p = ref::softmax(x, temperature);
      const std::vector<double> wrong = perturbed(p);
      EXPECT_TRUE(matches_distribution(tokens, p, &wrong));
    }
  }
}

// One filter configuration on one random row: the exact kept set (never a token outside it) and
// the distribution over it.
struct FilterCase {
  bool logits = true;
  DType dtype = DType::kFloat32;
  int vocab = 1000;
  float sigma = 2.f;
  ref::Filter filter;
  double want_top_p = 0;  // > 0: choose a top_p near it that no rounding can move
  double want_min_p = 0;  // > 0: likewise for min_p
};

class SamplingFilterTest : public SamplingTest {
 protected:
  void run(FilterCase c) {
    SCOPED_TRACE("seed " + std::to_string(seed_) + " k " + std::to_string(c.filter.top_k) +
                 " first " + std::to_string(c.filter.top_k_first));
    std::vector<float> host = random_normal(c.vocab, next_seed(), 0.f, c.sigma);
    if (!c.logits) {
      for (float& v : host)
        v = std::exp(v);
    }
    host = rounded(c.dtype, host);
    const std::vector<double> p = c.logits ? ref::softmax(host, 1.0) : normalized(host);
    if (c.want_top_p > 0) {
      ref::Filter only_k = c.filter;
      only_k.top_p = 1.0;
      const std::vector<char> within = c.filter.top_k_first ? ref::kept(p, only_k) : all_kept(p);
      c.filter.top_p = ref::safe_top_p(p, within, c.want_top_p);
    }
    if (c.want_min_p > 0) {
      // Halfway between the two ratios to the maximum around want_min_p.
      std::vector<double> r;
      const double pmax = *std::max_element(p.begin(), p.end());
      for (double v : p)
        r.push_back(v / pmax);
      std::sort(r.begin(), r.end());
      const auto it = std::lower_bound(r.begin(), r.end(), c.want_min_p);
      c.filter.min_p = it == r.begin() || it == r.end() ? c.want_min_p : (*it + *(it - 1)) / 2;
    }
    check_row(c.logits, c.dtype, host, p, c.filter);
  }
  // Draws from `host` (already rounded to dtype; p its distribution) against the kept set and its
  // distribution.
  void check_row(bool logits, DType dtype, const std::vector<float>& host,
                 const std::vector<double>& p, const ref::Filter& filter) {
    const std::vector<char> keep = ref::kept(p, filter);
    const std::vector<double> want = ref::restrict_to(p, keep);
    const DeviceTensor row = device_row(dtype, host);
    SamplingArgs a = seeded();
    a.top_k_value = filter.top_k;
    a.top_p_value = static_cast<float>(filter.top_p);
    a.min_p_value = static_cast<float>(filter.min_p);
    a.order = filter.top_k_first ? FilterOrder::kTopKFirst : FilterOrder::kJoint;
    const std::vector<int64_t> tokens = sample_calls(logits, repeated_rows(row, 1 << 17), a, 4);
    EXPECT_EQ(count_outside(tokens, keep), 0);
    const std::vector<double> wrong = perturbed(want);
    EXPECT_TRUE(matches_distribution(tokens, want, &wrong));
  }
};

TEST_F(SamplingFilterTest, TopK) {
  FilterCase c;
  c.filter.top_k = 10;
  run(c);
  c.logits = false;
  c.filter.top_k = 25;
  run(c);
}

TEST_F(SamplingFilterTest, TopP) {
  FilterCase c;
  c.sigma = 3.f;
  c.want_top_p = 0.8;
  run(c);
  c.logits = false;
  c.dtype = DType::kFloat32;
  c.want_top_p = 0.5;
  run(c);
}

TEST_F(SamplingFilterTest, MinP) {
  FilterCase c;
  c.sigma = 3.f;
  c.want_min_p = 0.05;
  run(c);
  c.logits = false;
  c.want_min_p = 0.2;
  run(c);
}

TEST_F(SamplingFilterTest, SmallNucleiTakeSeveralRejectionRounds) {
  // Top-p and min-p without top-k draw by rejection: a candidate from the row (then from the keys
  // above the last rejected one) until the filter keeps one. On flat rows with small kept sets
  // most draws take several rounds (top-p 0.1: ~4), each rejection adding an exchange of the
  // next candidates: the draws must still follow the distribution over the kept set whichever
  // round accepts.
  FilterCase c;
  c.sigma = 0.5f;
  c.want_top_p = 0.1;
  run(c);
  c.want_top_p = 0.35;
  c.dtype = DType::kBFloat16;
  run(c);
  c.want_top_p = 0;
  c.sigma = 1.f;
  c.want_min_p = 0.3;  // the keys are not converted yet when min-p alone falls back
  run(c);
  c.logits = false;
  c.dtype = DType::kFloat32;
  c.want_min_p = 0;
  c.want_top_p = 0.2;
  run(c);
  // Top-p 0.9 keeps most of the row (a longer, flatter row would need more draws than the test
  // makes to tell a wrong distribution apart).
  FilterCase wide;
  wide.vocab = 300;
  wide.sigma = 1.5f;
  wide.want_top_p = 0.9;
  run(wide);
}

TEST_F(SamplingFilterTest, TopKThenTopPAndJoint) {
  for (bool first : {true, false}) {
    FilterCase c;
    c.dtype = DType::kBFloat16;
    c.filter.top_k = 20;
    c.filter.top_k_first = first;
    c.want_top_p = 0.7;
    run(c);
    c.want_min_p = 0.02;
    run(c);
  }
}

TEST_F(SamplingFilterTest, LargeVocabulariesSplitOverClusters) {
  // A row over 8..16 CTAs: each CTA gathers its keys of the crossing bin, the cluster refines on
  // the union of those lists, and top-p after top-k gathers a second bin. The kept sets are small
  // (tens of tokens), so their distribution is checked exactly.
  for (bool first : {true, false}) {
    FilterCase c;
    c.vocab = 128256;
    c.filter.top_k = 50;
    c.filter.top_k_first = first;
    c.want_top_p = 0.7;
    run(c);
  }
  FilterCase c;
  c.vocab = 151936;
  c.sigma = 8.f;  // peaked: top-p 0.9 keeps a few tokens
  c.want_top_p = 0.9;
  run(c);
  c.logits = false;
  c.sigma = 5.f;
  c.want_top_p = 0.6;
  run(c);
}

// Forces sampling calls onto one layout (FLASHSERVE_SAMPLING_LAYOUT) for its scope.
class LayoutScope {
 public:
  explicit LayoutScope(const char* layout) {
    const char* v = std::getenv(kName);
    had_ = v != nullptr;
    if (had_) saved_ = v;
    setenv(kName, layout, 1);
  }
  ~LayoutScope() {
    if (had_) {
      setenv(kName, saved_.c_str(), 1);
    } else {
      unsetenv(kName);
    }
  }

 private:
  static constexpr const char* kName = "FLASHSERVE_SAMPLING_LAYOUT";
  bool had_ = false;
  std::string saved_;
};

TEST_F(SamplingFilterTest, StreamedRowsDecideByHistogramBounds) {
  // The streaming layout bounds each top-p round's mass above its candidate from per-warp
  // histograms of the values and sweeps the row again only when the bounds straddle the target
  // (stream_hist.cuh). Rows that move the warps' anchors on nearly every group (ascending
  // values), that leave the binning's range (logits near 2e5: every round sweeps), whose top
  // token outweighs top_p (the candidate's own count left out of its bounds), and that spread
  // over more than 32 octaves (the open-ended bottom bin): the draws follow the kept set's
  // distribution as the resident layout's do.
  LayoutScope stream("stream");
  const int vocab = 4000;
  auto top_p_case = [&](bool logits, std::vector<float> host, double want_top_p) {
    const std::vector<double> p = logits ? ref::softmax(host, 1.0) : normalized(host);
    ref::Filter f;
    f.top_p = ref::safe_top_p(p, all_kept(p), want_top_p);
    check_row(logits, DType::kFloat32, host, p, f);
  };
  std::vector<float> up(vocab);
  for (int i = 0; i < vocab; ++i)
    up[i] = 0.01f * static_cast<float>(i);
  top_p_case(true, up, 0.9);
  std::vector<float> far = random_normal(vocab, next_seed(), 0.f, 2.f);
  for (float& v : far)
    v += 2e5f;
  top_p_case(true, far, 0.8);
  std::vector<float> peak = random_normal(vocab, next_seed(), 0.f, 1.f);
  peak[1234] = 14.f;  // ~99.5% of the mass
  top_p_case(true, peak, 0.9);
  top_p_case(true, random_normal(vocab, next_seed(), 0.f, 20.f), 0.95);
  top_p_case(false, lognormal_probs(vocab, 3.f), 0.7);
}

TEST_F(SamplingTest, CrossingBinBeyondTheListCapacity) {
  // Four probability levels, 32064 tokens each: top-p 0.55 crosses inside the level-3 bin, which
  // holds ~4000 keys per CTA, more than a CTA's list (2048): the refinement then runs as cluster
  // passes over the slices. Kept: levels 4 and 3, all ties included.
  const int64_t vocab = 128256, per = vocab / 4;
  std::vector<float> host(vocab);
  for (int64_t i = 0; i < vocab; ++i)
    host[i] = static_cast<float>(1 + i / per);
  std::shuffle(host.begin(), host.end(), std::mt19937_64(next_seed()));
  const DeviceTensor row = device_row(DType::kFloat32, host);
  std::vector<char> keep(vocab);
  for (int64_t i = 0; i < vocab; ++i)
    keep[i] = host[i] >= 3.f;
  SamplingArgs a = seeded();
  a.top_p_value = 0.55f;
  const std::vector<int64_t> tokens = sample_calls(false, repeated_rows(row, 1 << 16), a, 4);
  EXPECT_EQ(count_outside(tokens, keep), 0);
  int64_t fours = 0;
  for (int64_t t : tokens)
    fours += t >= 0 && t < vocab && host[t] == 4.f;
  const double frac = static_cast<double>(fours) / static_cast<double>(tokens.size());
  EXPECT_NEAR(frac, 4.0 / 7.0, 0.006) << "level-4 share of the draws";  // ~6 sigma
  // The renormalized row: exactly the kept set, each value over the kept sum 7 * per.
  DeviceTensor out(DType::kFloat32, {1, vocab});
  out.poison();
  const Status st = flashserve::top_p_renorm_probs(out.view(), row.view(), a);
  ASSERT_TRUE(st.ok()) << st.to_string();
  const std::vector<float> got = out.download();
  int64_t bad = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    const double want = keep[i] ? host[i] / (7.0 * per) : 0.0;
    bad += std::fabs(got[i] - want) > 1e-6 * want || (want == 0.0) != (got[i] == 0.f);
  }
  EXPECT_EQ(bad, 0);
}

TEST_F(SamplingTest, FilterOrdersKeepDifferentSets) {
  // probs 0.3 0.2 0.15 0.1 ... with top_k 3, top_p 0.7: top-k first renormalizes the top 3 to
  // 0.46 0.31 0.23 and keeps 2 tokens; joint needs 4 tokens for 0.7 of the row and keeps the top 3.
  std::vector<float> host = {0.3f, 0.2f, 0.15f, 0.1f, 0.08f, 0.07f, 0.05f, 0.05f};
  const DeviceTensor row = device_row(DType::kFloat32, host);
  SamplingArgs a = seeded();
  a.top_k_value = 3;
  a.top_p_value = 0.7f;
  a.order = FilterOrder::kTopKFirst;
  const std::vector<int64_t> first = sample_calls(false, repeated_rows(row, 1 << 14), a, 1);
  a.order = FilterOrder::kJoint;
  const std::vector<int64_t> joint = sample_calls(false, repeated_rows(row, 1 << 14), a, 1);
  std::vector<int64_t> n_first(8), n_joint(8);
  for (int64_t t : first)
    ++n_first[std::min<int64_t>(t, 7)];
  for (int64_t t : joint)
    ++n_joint[std::min<int64_t>(t, 7)];
  EXPECT_EQ(n_first[2], 0);  // P(token 2 drawn 0 times | joint keeps it) = (1 - 0.23)^16384
  EXPECT_GT(n_joint[2], 0);
  for (int t = 3; t < 8; ++t) {
    EXPECT_EQ(n_first[t], 0);
    EXPECT_EQ(n_joint[t], 0);
  }
}

TEST_F(SamplingTest, TopKOneAndTemperatureZeroAreArgmax) {
  const int64_t batch = 64, vocab = 128256;
  const std::vector<float> x = random_normal(batch * vocab, next_seed(), 0.f, 2.f);
  DeviceTensor logits(DType::kFloat32, {batch, vocab});
  logits.upload(x);
  std::vector<int64_t> argmax(batch);
  for (int64_t r = 0; r < batch; ++r) {
    argmax[r] = std::max_element(x.begin() + r * vocab, x.begin() + (r + 1) * vocab) -
                (x.begin() + r * vocab);
  }
  SamplingArgs a = seeded();
  a.top_k_value = 1;
  a.top_p_value = 0.9f;
  EXPECT_EQ(sample_calls(true, logits.view(), a, 2), [&] {
    std::vector<int64_t> twice = argmax;
    twice.insert(twice.end(), argmax.begin(), argmax.end());
    return twice;
  }());
  SamplingArgs g = seeded();
  g.temperature_value = 0.f;
  EXPECT_EQ(sample_calls(true, logits.view(), g, 1), argmax);
  // Negative control: plain sampling of the same rows does not always return the argmax.
  EXPECT_NE(sample_calls(true, logits.view(), seeded(), 1), argmax);
}

TEST_F(SamplingTest, PerRowParametersAndInt64Ids) {
  const int64_t batch = 12, vocab = 777;
  const std::vector<float> x = random_normal(batch * vocab, next_seed(), 0.f, 2.f);
  DeviceTensor logits(DType::kFloat32, {batch, vocab});
  logits.upload(x);
  const std::vector<int32_t> top_k = {1, 5, 0, -1, 777, 1000, 37, 2, 0, 0, 3, 0};
  const std::vector<float> top_p = {1.f, 1.f, NAN, 0.f, 1.f, 2.f, 1.f, 1.f, -1.f, 1.f, 1.f, 0.f};
  const std::vector<float> temp = {1.f, 0.5f, 1.f, 1.f, 0.f, 1.f, NAN, 3.f, 1.f, -2.f, 1.f, 1.f};
  const std::vector<float> min_p = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.5f};
  DeviceTensor tk(DType::kInt32, {batch}), tp(DType::kFloat32, {batch}),
      tt(DType::kFloat32, {batch}), mp(DType::kFloat32, {batch});
  tk.upload_raw(top_k.data(), batch * 4);
  tp.upload(top_p);
  tt.upload(temp);
  mp.upload(min_p);
  SamplingArgs a = seeded();
  a.top_k = tk.view();
  a.top_p = tp.view();
  a.temperature = tt.view();
  a.min_p = mp.view();
  const int calls = 64;
  const std::vector<int64_t> tokens = sample_calls(true, logits.view(), a, calls, DType::kInt64);
  ASSERT_EQ(tokens.size(), static_cast<size_t>(batch * calls));
  for (int64_t r = 0; r < batch; ++r) {
    SCOPED_TRACE("row " + std::to_string(r));
    const std::vector<float> row(x.begin() + r * vocab, x.begin() + (r + 1) * vocab);
    const float t = temp[r] == temp[r] ? temp[r] : 1.f;
    ref::Filter f;
    f.top_k = top_k[r];
    f.top_p = top_p[r] == top_p[r] ? std::min(1.0, static_cast<double>(top_p[r])) : 1.0;
    f.min_p = min_p[r];
    const std::vector<char> keep = ref::kept(ref::softmax(row, t), f);
    std::vector<int64_t> drawn;
    for (int c = 0; c < calls; ++c)
      drawn.push_back(tokens[c * batch + r]);
    EXPECT_EQ(count_outside(drawn, keep), 0);
    const int64_t n_kept = std::count(keep.begin(), keep.end(), 1);
    if (n_kept == 1) {
      const int64_t only = std::find(keep.begin(), keep.end(), 1) - keep.begin();
      EXPECT_EQ(std::count(drawn.begin(), drawn.end(), only), calls);
    }
  }
}

TEST_F(SamplingTest, DeterministicForSeedAndOffsetFreshOtherwise) {
  const int64_t batch = 4096, vocab = 1000;
  const std::vector<float> x = random_normal(batch * vocab, next_seed(), 0.f, 0.5f);
  DeviceTensor logits(DType::kBFloat16, {batch, vocab});
  logits.upload(x);
  SamplingArgs a = seeded();
  a.top_p_value = 0.95f;
  const std::vector<int64_t> one = sample_calls(true, logits.view(), a, 1);
  const std::vector<int64_t> two = sample_calls(true, logits.view(), a, 1);
  EXPECT_EQ(one, two);
  // Another offset (and another seed) redraws: a row repeats its token with probability
  // sum(p^2) ~ 1.3e-3 here; Hoeffding bounds the repeats.
  double collide = 0;
  for (int64_t r = 0; r < batch; ++r) {
    const std::vector<float> row(x.begin() + r * vocab, x.begin() + (r + 1) * vocab);
    for (double v : ref::softmax(rounded(DType::kBFloat16, row), 1.0))
      collide += v * v / batch;
  }
  const double limit = (collide + stats::mean_bound(batch, kStatDelta)) * batch;
  SamplingArgs b = a;
  ++b.offset_value;
  SamplingArgs c = a;
  c.seed_value ^= 0x9e3779b97f4a7c15ull;
  for (const SamplingArgs& other : {b, c}) {
    const std::vector<int64_t> three = sample_calls(true, logits.view(), other, 1);
    int64_t same = 0;
    for (int64_t r = 0; r < batch; ++r)
      same += one[r] == three[r];
    EXPECT_LT(same, limit);
  }
}

TEST_F(SamplingTest, GraphReplayDrawsNewNumbersAfterOffsetBump) {
  const int64_t batch = 256, vocab = 32000;
  DeviceTensor logits(DType::kFloat16, {batch, vocab});
  logits.upload(random_normal(batch * vocab, next_seed(), 0.f, 1.f));
  DeviceTensor seed(DType::kInt64, {1}), offset(DType::kInt64, {1}), ids(DType::kInt32, {batch});
  const int64_t seed_v = static_cast<int64_t>(next_seed() >> 1), off0 = 17, off1 = 18;
  seed.upload_raw(&seed_v, 8);
  offset.upload_raw(&off0, 8);
  SamplingArgs a;
  a.seed = seed.view();
  a.offset = offset.view();
  a.top_k_value = 100;
  a.top_p_value = 0.9f;
  cudaStream_t stream;
  cuda_check(cudaStreamCreate(&stream), "cudaStreamCreate");
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  cuda_check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "begin capture");
  const Status st = flashserve::sample_from_logits(ids.view(), logits.view(), a, stream);
  cuda_check(cudaStreamEndCapture(stream, &graph), "end capture");
  ASSERT_TRUE(st.ok()) << st.to_string();
  cuda_check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  auto replay = [&] {
    ids.poison();
    cuda_check(cudaGraphLaunch(exec, stream), "launch");
    cuda_check(cudaStreamSynchronize(stream), "sync");
    return download_ids(ids);
  };
  const std::vector<int64_t> r0 = replay();
  offset.upload_raw(&off1, 8);
  const std::vector<int64_t> r1 = replay();
  SamplingArgs eager = a;
  eager.seed = eager.offset = TensorView{};
  eager.seed_value = static_cast<uint64_t>(seed_v);
  eager.offset_value = static_cast<uint64_t>(off0);
  EXPECT_EQ(r0, sample_calls(true, logits.view(), eager, 1));
  eager.offset_value = static_cast<uint64_t>(off1);
  EXPECT_EQ(r1, sample_calls(true, logits.view(), eager, 1));
  EXPECT_NE(r0, r1);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST_F(SamplingTest, BadRowsNeverGiveAnOutOfRangeId) {
  const int64_t vocab = 301;
  std::vector<std::vector<float>> rows;
  rows.push_back(std::vector<float>(vocab, 0.f));       // all zero
  rows.push_back(std::vector<float>(vocab, NAN));       // all NaN
  rows.push_back(std::vector<float>(vocab, -1.f));      // all negative
  rows.push_back(std::vector<float>(vocab, INFINITY));  // all inf
  std::vector<float> one(vocab, -2.f);
  one[123] = 0.5f;
  one[7] = NAN;
  rows.push_back(one);  // a single valid entry among negatives and a NaN
  std::vector<float> host;
  for (const auto& r : rows)
    host.insert(host.end(), r.begin(), r.end());
  const int64_t batch = static_cast<int64_t>(rows.size());
  DeviceTensor probs(DType::kFloat32, {batch, vocab});
  probs.upload(host);
  SamplingArgs a = seeded();
  a.top_k_value = 10;
  a.top_p_value = 0.5f;
  const std::vector<int64_t> t = sample_calls(false, probs.view(), a, 8);
  for (size_t i = 0; i < t.size(); ++i) {
    const int64_t r = static_cast<int64_t>(i) % batch;
    EXPECT_EQ(t[i], r == 4 ? 123 : 0) << "row " << r;  // nothing to sample: token 0
  }
  // Logits: all -inf, all NaN, +inf present (the +inf entries share the draw), NaN among finite.
  std::vector<float> lhost(4 * vocab, -INFINITY);
  std::fill(lhost.begin() + vocab, lhost.begin() + 2 * vocab, NAN);
  for (int64_t i = 0; i < vocab; ++i)
    lhost[2 * vocab + i] = static_cast<float>(i % 7);
  lhost[2 * vocab + 50] = lhost[2 * vocab + 60] = INFINITY;
  for (int64_t i = 0; i < vocab; ++i)
    lhost[3 * vocab + i] = i % 2 ? NAN : -static_cast<float>(i);
  DeviceTensor logits(DType::kBFloat16, {4, vocab});
  logits.upload(lhost);
  const std::vector<int64_t> l = sample_calls(true, logits.view(), seeded(), 16);
  for (size_t i = 0; i < l.size(); ++i) {
    const int64_t r = static_cast<int64_t>(i) % 4;
    const bool ok = r < 2    ? l[i] == 0
                    : r == 2 ? (l[i] == 50 || l[i] == 60)
                             : (l[i] >= 0 && l[i] < vocab && l[i] % 2 == 0);
    EXPECT_TRUE(ok) << "row " << r << " token " << l[i];
  }
}

TEST_F(SamplingTest, OddVocabulariesStridesAndLargeRows) {
  for (int64_t vocab : {1, 2, 7, 113, 1023, 4097, 128256, 151936, 262144}) {
    for (int64_t pad : {0, 3}) {
      SCOPED_TRACE("vocab " + std::to_string(vocab) + " pad " + std::to_string(pad) + " seed " +
                   std::to_string(seed_));
      const int64_t batch = 5, stride = vocab + pad;
      const std::vector<float> x =
          rounded(DType::kFloat16, random_normal(batch * stride, next_seed(), 0.f, 3.f));
      DeviceTensor storage(DType::kFloat16, {batch, vocab}, {stride, 1}, batch * stride);
      std::vector<float> logical;
      for (int64_t r = 0; r < batch; ++r)
        logical.insert(logical.end(), x.begin() + r * stride, x.begin() + r * stride + vocab);
      storage.upload(logical);
      SamplingArgs a = seeded();
      a.top_k_value = 40;
      a.top_p_value = 0.9f;
      a.order = pad ? FilterOrder::kJoint : FilterOrder::kTopKFirst;
      const std::vector<int64_t> t = sample_calls(true, storage.view(), a, 6);
      for (int64_t r = 0; r < batch; ++r) {
        const std::vector<float> row(logical.begin() + r * vocab,
                                     logical.begin() + (r + 1) * vocab);
        // top_p 0.9 may sit on a rounding boundary here: check the top-k set, which cannot.
        ref::Filter f;
        f.top_k = 40;
        const std::vector<char> keep = ref::kept(ref::softmax(row, 1.0), f);
        std::vector<int64_t> drawn;
        for (size_t c = 0; c < 6; ++c)
          drawn.push_back(t[c * batch + r]);
        EXPECT_EQ(count_outside(drawn, keep), 0) << "row " << r;
      }
    }
  }
}

TEST_F(SamplingTest, StreamingVocabularyBeyondSharedMemory) {
  // 1,000,003 elements do not fit in 16 CTAs' shared memory: the rows are streamed. 30 tokens
  // share almost all the mass, the rest is at -20.
  const int64_t vocab = 1000003;
  std::mt19937_64 rng(next_seed());
  std::vector<float> x(vocab, -20.f);
  std::vector<int64_t> hot;
  for (int i = 0; i < 30; ++i) {
    const int64_t t = static_cast<int64_t>(rng() % vocab);
    x[t] = std::normal_distribution<float>(2.f, 1.f)(rng);
    hot.push_back(t);
  }
  const DeviceTensor row = device_row(DType::kFloat32, x);
  SamplingArgs a = seeded();
  a.top_k_value = 20;
  const std::vector<int64_t> tokens = sample_calls(true, repeated_rows(row, 4096), a, 4);
  ref::Filter f;
  f.top_k = 20;
  const std::vector<double> p = ref::softmax(x, 1.0);
  const std::vector<char> keep = ref::kept(p, f);
  EXPECT_EQ(count_outside(tokens, keep), 0);
  const std::vector<double> want = ref::restrict_to(p, keep);
  const std::vector<double> wrong = perturbed(want, 0.1);
  EXPECT_TRUE(matches_distribution(tokens, want, &wrong));
}

TEST_F(SamplingTest, EmptyBatchIsANoOp) {
  DeviceTensor ids(DType::kInt32, {1});
  const TensorView logits = TensorView::contiguous(nullptr, DType::kFloat32, {0, 1000});
  const TensorView out = TensorView::contiguous(ids.data(), DType::kInt32, {0});
  EXPECT_TRUE(flashserve::sample_from_logits(out, logits, SamplingArgs()).ok());
}

}  // namespace
}  // namespace fs_test
