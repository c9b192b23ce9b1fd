// The renormalization helpers (top_k_renorm_probs, top_p_renorm_probs), top_k_mask_logits and
// the exact top_k against CPU references: exact kept sets, renormalized values within the fp32
// elementwise tolerance, NaN-poisoned outputs fully written, ties, odd and large vocabularies,
// strided and in-place views.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "check.h"
#include "flashserve/sampling.h"
#include "gpu_test.h"
#include "reference/sampling.h"
#include "sampling_util.h"

namespace fs_test {
namespace {

using flashserve::SamplingArgs;
using flashserve::Status;

class SamplingOpsTest : public GpuTest {};

std::vector<float> positive_rows(int64_t n, uint64_t seed, float sigma) {
  std::vector<float> v = random_normal(n, seed, 0.f, sigma);
  for (float& x : v)
    x = std::exp(x);
  return v;
}

// Checks one renormalized row against p restricted to `keep` (exact zeros elsewhere).
void expect_renormalized(const std::vector<float>& got, const std::vector<double>& p,
                         const std::vector<char>& keep, const std::string& what) {
  const std::vector<double> want = ref::restrict_to(p, keep);
  int64_t wrong_zero = 0;
  for (size_t i = 0; i < want.size(); ++i)
    wrong_zero += (want[i] == 0.0) != (got[i] == 0.f);
  EXPECT_EQ(wrong_zero, 0) << what;
  const Accuracy a = elementwise_rule(got, want, DType::kFloat32);
  EXPECT_TRUE(a.pass) << what << ": " << a.str();
}

TEST_F(SamplingOpsTest, TopKRenormProbs) {
  for (int64_t vocab : {1, 9, 1000, 128256}) {
    for (bool in_place : {false, true}) {
      SCOPED_TRACE("vocab " + std::to_string(vocab) + " in place " + std::to_string(in_place) +
                   " seed " + std::to_string(seed_));
      const int64_t batch = 7;
      const std::vector<float> host = positive_rows(batch * vocab, next_seed(), 2.f);
      DeviceTensor probs(DType::kFloat32, {batch, vocab}), out(DType::kFloat32, {batch, vocab});
      probs.upload(host);
      out.poison();
      const std::vector<int32_t> ks = {1, 5, 0, static_cast<int32_t>(vocab), 50, -3, 2};
      DeviceTensor tk(DType::kInt32, {batch});
      tk.upload_raw(ks.data(), 4 * batch);
      SamplingArgs a;
      a.top_k = tk.view();
      const DeviceTensor& dst = in_place ? probs : out;
      const Status st = flashserve::top_k_renorm_probs(dst.view(), probs.view(), a);
      ASSERT_TRUE(st.ok()) << st.to_string();
      const std::vector<float> got = dst.download();
      for (int64_t r = 0; r < batch; ++r) {
        const std::vector<float> row(host.begin() + r * vocab, host.begin() + (r + 1) * vocab);
        const std::vector<double> p(row.begin(), row.end());
        ref::Filter f;
        f.top_k = ks[r];
        expect_renormalized(
            std::vector<float>(got.begin() + r * vocab, got.begin() + (r + 1) * vocab), p,
            ref::kept(p, f), "row " + std::to_string(r));
      }
    }
  }
}

TEST_F(SamplingOpsTest, TopPRenormProbs) {
  const int64_t batch = 6, vocab = 50000;
  const std::vector<float> host = positive_rows(batch * vocab, next_seed(), 3.f);
  DeviceTensor probs(DType::kFloat32, {batch, vocab}), out(DType::kFloat32, {batch, vocab});
  probs.upload(host);
  out.poison();
  std::vector<float> tp(batch);
  std::vector<std::vector<double>> rows;
  const double wants[] = {0.1, 0.5, 0.9, 0.99, 1.0, 0.0};
  for (int64_t r = 0; r < batch; ++r) {
    rows.emplace_back(host.begin() + r * vocab, host.begin() + (r + 1) * vocab);
    tp[r] =
        wants[r] >= 1.0 ? 1.f
        : wants[r] <= 0
            ? 0.f
            : static_cast<float>(ref::safe_top_p(rows[r], std::vector<char>(vocab, 1), wants[r]));
  }
  DeviceTensor tpd(DType::kFloat32, {batch});
  tpd.upload(tp);
  SamplingArgs a;
  a.top_p = tpd.view();
  const Status st = flashserve::top_p_renorm_probs(out.view(), probs.view(), a);
  ASSERT_TRUE(st.ok()) << st.to_string();
  const std::vector<float> got = out.download();
  for (int64_t r = 0; r < batch; ++r) {
    ref::Filter f;
    f.top_p = tp[r];
    expect_renormalized(std::vector<float>(got.begin() + r * vocab, got.begin() + (r + 1) * vocab),
                        rows[r], ref::kept(rows[r], f), "row " + std::to_string(r));
  }
}

TEST_F(SamplingOpsTest, RenormOfARowWithoutMassIsZero) {
  const int64_t vocab = 100;
  DeviceTensor probs(DType::kFloat32, {2, vocab}), out(DType::kFloat32, {2, vocab});
  std::vector<float> host(2 * vocab, 0.f);
  std::fill(host.begin() + vocab, host.end(), -1.f);
  probs.upload(host);
  out.poison();
  SamplingArgs a;
  a.top_p_value = 0.5f;
  ASSERT_TRUE(flashserve::top_p_renorm_probs(out.view(), probs.view(), a).ok());
  for (float v : out.download())
    EXPECT_EQ(v, 0.f);
}

TEST_F(SamplingOpsTest, TopKMaskLogits) {
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    for (int64_t vocab : {3, 1000, 151936}) {
      SCOPED_TRACE(std::string(flashserve::dtype_name(dtype)) + " vocab " + std::to_string(vocab) +
                   " seed " + std::to_string(seed_));
      const int64_t batch = 5, stride = vocab + 5;
      // Integers in bf16: many ties, which are kept.
      std::vector<float> host = random_normal(batch * vocab, next_seed(), 0.f, 4.f);
      for (float& v : host)
        v = std::round(v);
      host = rounded(dtype, host);
      host[1] = NAN;
      DeviceTensor logits(dtype, {batch, vocab}, {stride, 1}, batch * stride);
      DeviceTensor out(dtype, {batch, vocab});
      logits.upload(host);
      out.poison();
      const std::vector<int32_t> ks = {1, 2, 0, 17, static_cast<int32_t>(vocab) + 1};
      DeviceTensor tk(DType::kInt32, {batch});
      tk.upload_raw(ks.data(), 4 * batch);
      SamplingArgs a;
      a.top_k = tk.view();
      const Status st = flashserve::top_k_mask_logits(out.view(), logits.view(), a);
      ASSERT_TRUE(st.ok()) << st.to_string();
      const std::vector<float> got = out.download();
      for (int64_t r = 0; r < batch; ++r) {
        const std::vector<float> row(host.begin() + r * vocab, host.begin() + (r + 1) * vocab);
        const int k = ks[r];
        float t = -INFINITY;
        if (k > 0 && k < vocab) {
          std::vector<float> sorted;
          for (float v : row) {
            if (v == v) sorted.push_back(v);
          }
          std::sort(sorted.begin(), sorted.end(), std::greater<float>());
          t = k <= static_cast<int>(sorted.size()) ? sorted[k - 1] : -INFINITY;
        }
        int64_t bad = 0;
        for (int64_t i = 0; i < vocab; ++i) {
          const float g = got[r * vocab + i], x = row[i];
          const bool keep = (k <= 0 || k >= vocab) || x >= t;
          if (keep) {
            bad += !(g == x || (g != g && x != x));
          } else {
            bad += g != -INFINITY;
          }
        }
        EXPECT_EQ(bad, 0) << "row " << r << " k " << k;
      }
    }
  }
}

TEST_F(SamplingOpsTest, TopKValuesAndIndices) {
  for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
    for (int64_t vocab : {1, 13, 4097, 128256}) {
      for (int k : {1, 7, 100, static_cast<int>(vocab)}) {
        if (k > vocab) continue;
        SCOPED_TRACE(std::string(flashserve::dtype_name(dtype)) + " vocab " +
                     std::to_string(vocab) + " k " + std::to_string(k));
        const int64_t batch = 3;
        std::vector<float> host = random_normal(batch * vocab, next_seed(), 0.f, 3.f);
        if (dtype == DType::kBFloat16) {
          for (float& v : host)
            v = std::round(v);  // ties: the lowest indices win
        }
        host = rounded(dtype, host);
        if (vocab > 5) host[2] = -INFINITY;
        DeviceTensor in(dtype, {batch, vocab}), values(dtype, {batch, k}),
            indices(DType::kInt64, {batch, k});
        in.upload(host);
        values.poison();
        indices.poison();
        const Status st = flashserve::top_k(values.view(), indices.view(), in.view(), k);
        ASSERT_TRUE(st.ok()) << st.to_string();
        const std::vector<float> v = values.download();
        const std::vector<int64_t> idx = download_ids(indices);
        for (int64_t r = 0; r < batch; ++r) {
          const std::vector<float> row(host.begin() + r * vocab, host.begin() + (r + 1) * vocab);
          const std::vector<int64_t> want = ref::top_k_indices(row, k);
          const std::vector<int64_t> got(idx.begin() + r * k, idx.begin() + (r + 1) * k);
          EXPECT_EQ(got, want) << "row " << r;
          for (int j = 0; j < k; ++j)
            EXPECT_EQ(v[r * k + j], row[want[j]]) << "row " << r << " j " << j;
        }
      }
    }
  }
}

}  // namespace
}  // namespace fs_test
