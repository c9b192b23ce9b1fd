// chain_speculative_sampling: the emitted tokens follow the target distribution (first token ~ p_0;
// given an accepted first draft, the second ~ p_1), the acceptance rate is sum_x min(p, q), drafts
// equal to the target are always accepted (the bonus token ~ p_n), the output layout (accepted
// drafts, one token, then -1), invalid draft ids, no drafts, determinism. Drafts are drawn on the
// host from q, as a draft model would propose them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "flashserve/sampling.h"
#include "gpu_test.h"
#include "reference/sampling.h"
#include "sampling_util.h"

namespace fs_test {
namespace {

using flashserve::ChainSpeculativeArgs;
using flashserve::Status;
using flashserve::TensorView;

class SpeculativeTest : public GpuTest {
 protected:
  std::vector<double> random_dist(int vocab, float sigma) {
    std::vector<double> p;
    double s = 0;
    for (float v : random_normal(vocab, next_seed(), 0.f, sigma)) {
      p.push_back(std::exp(v));
      s += p.back();
    }
    for (double& v : p)
      v /= s;
    return p;
  }

  struct Result {
    std::vector<int64_t> out;  // [batch, n + 1]
    std::vector<int64_t> accepted;
    std::vector<int32_t> drafts;
  };

  // `batch` rows sharing the draft distributions q[i] and target distributions p[i] (row stride 0),
  // each with its own drafts drawn on the host from q[i].
  Result run(const std::vector<std::vector<double>>& q, const std::vector<std::vector<double>>& p,
             int64_t batch, uint64_t seed, uint64_t offset, DType id_dtype = DType::kInt32,
             const std::vector<int32_t>* fixed_drafts = nullptr) {
    const int64_t n = static_cast<int64_t>(q.size()), vocab = static_cast<int64_t>(p[0].size());
    std::vector<float> qh, ph;
    for (const auto& d : q)
      qh.insert(qh.end(), d.begin(), d.end());
    for (const auto& d : p)
      ph.insert(ph.end(), d.begin(), d.end());
    DeviceTensor qd(DType::kFloat32, {1, std::max<int64_t>(n, 1), vocab}),
        pd(DType::kFloat32, {1, n + 1, vocab}),
        ids(DType::kInt32, {batch, std::max<int64_t>(n, 1)}), out(id_dtype, {batch, n + 1}),
        acc(DType::kInt32, {batch});
    if (n > 0) qd.upload(qh);
    pd.upload(ph);
    Result r;
    if (fixed_drafts != nullptr) {
      r.drafts = *fixed_drafts;
    } else {
      std::mt19937_64 rng(next_seed());
      r.drafts.resize(batch * n);
      for (int64_t i = 0; i < n; ++i) {
        std::discrete_distribution<int32_t> dist(q[i].begin(), q[i].end());
        for (int64_t b = 0; b < batch; ++b)
          r.drafts[b * n + i] = dist(rng);
      }
    }
    if (n > 0) ids.upload_raw(r.drafts.data(), 4 * batch * n);
    out.poison();
    acc.poison();
    ChainSpeculativeArgs a;
    a.draft_token_ids = TensorView::strided(ids.data(), DType::kInt32, {batch, n}, {n, 1});
    a.draft_probs =
        TensorView::strided(qd.data(), DType::kFloat32, {batch, n, vocab}, {0, vocab, 1});
    a.target_probs =
        TensorView::strided(pd.data(), DType::kFloat32, {batch, n + 1, vocab}, {0, vocab, 1});
    a.output_token_ids = out.view();
    a.accepted_counts = acc.view();
    a.seed_value = seed;
    a.offset_value = offset;
    const Status st = flashserve::chain_speculative_sampling(a);
    EXPECT_TRUE(st.ok()) << st.to_string();
    r.out = download_ids(out);
    r.accepted = download_ids(acc);
    // Layout: accepted drafts, one token in range, then -1.
    int64_t bad = 0;
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t m = r.accepted[b];
      bad += m < 0 || m > n;
      for (int64_t j = 0; j <= n && m >= 0 && m <= n; ++j) {
        const int64_t t = r.out[b * (n + 1) + j];
        if (j < m) bad += t != r.drafts[b * n + j];
        if (j == m) bad += t < 0 || t >= vocab;
        if (j > m) bad += t != -1;
      }
    }
    EXPECT_EQ(bad, 0) << "malformed rows";
    return r;
  }
};

TEST_F(SpeculativeTest, EmittedTokensFollowTheTarget) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const int vocab = 16, n = 3;
  std::vector<std::vector<double>> q, p;
  for (int i = 0; i < n; ++i)
    q.push_back(random_dist(vocab, 1.5f));
  for (int i = 0; i <= n; ++i)
    p.push_back(random_dist(vocab, 1.5f));
  const int64_t batch = 1 << 18;
  std::vector<int64_t> first, second;
  int64_t accepted0 = 0, rows = 0;
  for (int call = 0; call < 2; ++call) {
    const Result r = run(q, p, batch, next_seed(), call);
    for (int64_t b = 0; b < batch; ++b) {
      first.push_back(r.out[b * (n + 1)]);
      if (r.accepted[b] >= 1) {
        ++accepted0;
        second.push_back(r.out[b * (n + 1) + 1]);
      }
    }
    rows += batch;
  }
  // The first token ~ p_0 (negative control: the draft distribution q_0).
  EXPECT_TRUE(matches_distribution(first, p[0], &q[0]));
  // Given an accepted first draft, the next token ~ p_1 (negative control: q_1).
  EXPECT_TRUE(matches_distribution(second, p[1], &q[1]));
  // P(accept the first draft) = sum_x min(p_0(x), q_0(x)).
  double overlap = 0;
  for (int x = 0; x < vocab; ++x)
    overlap += std::min(p[0][x], q[0][x]);
  const double rate = static_cast<double>(accepted0) / rows;
  EXPECT_NEAR(rate, overlap, stats::mean_bound(rows, kStatDelta));
  EXPECT_GT(std::fabs(rate - 1.0), stats::mean_bound(rows, kStatDelta));  // not all accepted
}

TEST_F(SpeculativeTest, DraftEqualToTargetIsAlwaysAccepted) {
  const int vocab = 29, n = 4;
  std::vector<std::vector<double>> p;
  for (int i = 0; i <= n; ++i)
    p.push_back(random_dist(vocab, 1.f));
  const std::vector<std::vector<double>> q(p.begin(), p.begin() + n);
  const int64_t batch = 1 << 18;
  const Result r = run(q, p, batch, next_seed(), 5, DType::kInt64);
  std::vector<int64_t> bonus;
  for (int64_t b = 0; b < batch; ++b) {
    EXPECT_EQ(r.accepted[b], n);
    if (r.accepted[b] != n) break;
    bonus.push_back(r.out[b * (n + 1) + n]);
  }
  EXPECT_TRUE(matches_distribution(bonus, p[n], &p[0]));
}

TEST_F(SpeculativeTest, InvalidDraftIdsAreRejectedAndNoDraftsSampleTheTarget) {
  const int vocab = 10, n = 2;
  std::vector<std::vector<double>> p(n + 1, std::vector<double>(vocab, 0.1));
  const std::vector<std::vector<double>> q = {p[0], p[1]};
  const std::vector<int32_t> drafts = {-1, 3, 10, 4, 3, 99};  // rows: reject at 0, 0, 1
  const Result r = run(q, p, 3, next_seed(), 0, DType::kInt32, &drafts);
  EXPECT_EQ(r.accepted, (std::vector<int64_t>{0, 0, 1}));
  // No drafts: one token from target_probs[:, 0], here a point mass.
  std::vector<std::vector<double>> point = {std::vector<double>(vocab, 0.0)};
  point[0][6] = 1.0;
  const Result z = run({}, point, 100, next_seed(), 0);
  for (int64_t b = 0; b < 100; ++b) {
    EXPECT_EQ(z.accepted[b], 0);
    EXPECT_EQ(z.out[b], 6);
  }
}

TEST_F(SpeculativeTest, ResidualExcludesOverProposedTokens) {
  // q puts all mass on token 2, p only half: drafts of 2 are rejected half the time, and the
  // residual max(0, p - q) is p off token 2, so the token after a rejection is never 2.
  const int vocab = 8;
  std::vector<double> p(vocab, 0.5 / 7), q(vocab, 0.0);
  p[2] = 0.5;
  q[2] = 1.0;
  const int64_t batch = 4096;
  const std::vector<int32_t> drafts(batch, 2);
  const Result r = run({q}, {p, p}, batch, next_seed(), 0, DType::kInt32, &drafts);
  int64_t rejected = 0;
  for (int64_t b = 0; b < batch; ++b) {
    if (r.accepted[b] == 0) {
      ++rejected;
      EXPECT_NE(r.out[b * 2], 2);
    }
  }
  EXPECT_GT(rejected, 0);
  EXPECT_LT(rejected, batch);
}

TEST_F(SpeculativeTest, ResidualWithoutMassFallsBackToTheTarget) {
  // p = q / 2 (an unnormalized target): drafts are rejected half the time and the residual
  // max(0, p - q) is zero everywhere; the token is then drawn from p, here uniform over 10.
  const int vocab = 10;
  const std::vector<double> q(vocab, 0.1), p(vocab, 0.05);
  const int64_t batch = 1 << 18;
  const Result r = run({q}, {p, p}, batch, next_seed(), 3);
  std::vector<int64_t> after_reject;
  for (int64_t b = 0; b < batch; ++b) {
    if (r.accepted[b] == 0) after_reject.push_back(r.out[b * 2]);
  }
  EXPECT_NEAR(static_cast<double>(after_reject.size()) / batch, 0.5,
              stats::mean_bound(batch, kStatDelta));
  const std::vector<double> uniform(vocab, 0.1);
  std::vector<double> skewed = uniform;
  skewed[0] = 0.3;
  skewed[1] = skewed[2] = 0.0;
  EXPECT_TRUE(matches_distribution(after_reject, uniform, &skewed));
}

TEST_F(SpeculativeTest, DeterministicForSeedAndOffset) {
  const int vocab = 300, n = 5;
  std::vector<std::vector<double>> q, p;
  for (int i = 0; i < n; ++i)
    q.push_back(random_dist(vocab, 1.f));
  for (int i = 0; i <= n; ++i)
    p.push_back(random_dist(vocab, 1.f));
  const int64_t batch = 2048;
  const uint64_t seed = next_seed();
  const Result a = run(q, p, batch, seed, 9);
  const Result b = run(q, p, batch, seed, 9, DType::kInt32, &a.drafts);
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.accepted, b.accepted);
  const Result c = run(q, p, batch, seed, 10, DType::kInt32, &a.drafts);
  EXPECT_NE(a.out, c.out);
}

}  // namespace
}  // namespace fs_test
