// Helpers of the sampling GPU tests: draw many tokens through the public API and compare their
// frequencies with a distribution at a fixed failure probability.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "device_tensor.h"
#include "flashserve/sampling.h"
#include "reference/sampling.h"

namespace fs_test {

// Failure probability of one statistical assertion by chance (a test makes a handful).
constexpr double kStatDelta = 1e-9;

// A [rows, vocab] view of one device row repeated `rows` times (row stride 0): `rows` independent
// draws (Philox streams differ by row) from one distribution in a single call.
inline flashserve::TensorView repeated_rows(const DeviceTensor& row, int64_t rows) {
  const int64_t vocab = row.shape().back();
  return flashserve::TensorView::strided(row.data(), row.dtype(), {rows, vocab}, {0, 1});
}

inline std::vector<int64_t> download_ids(const DeviceTensor& ids) {
  std::vector<int64_t> out;
  for (float v : ids.download())
    out.push_back(static_cast<int64_t>(v));
  return out;
}

// `calls` calls (offsets offset_value, offset_value + 1, ...) of sample_from_logits (logits) or
// sample_from_probs on `input`; every token of every call, in order. Outputs are poisoned first.
inline std::vector<int64_t> sample_calls(bool logits, const flashserve::TensorView& input,
                                         flashserve::SamplingArgs args, int calls,
                                         DType id_dtype = DType::kInt32) {
  const int64_t rows = input.shape[0];
  DeviceTensor ids(id_dtype, {rows});
  std::vector<int64_t> all;
  for (int c = 0; c < calls; ++c) {
    ids.poison();
    const flashserve::Status st = logits ? flashserve::sample_from_logits(ids.view(), input, args)
                                         : flashserve::sample_from_probs(ids.view(), input, args);
    EXPECT_TRUE(st.ok()) << st.to_string();
    if (!st.ok()) return all;
    const std::vector<int64_t> got = download_ids(ids);
    all.insert(all.end(), got.begin(), got.end());
    ++args.offset_value;
  }
  return all;
}

// Tokens outside [0, vocab) or outside `keep` (the reference's kept set); 0 when all are fine.
inline int64_t count_outside(const std::vector<int64_t>& tokens, const std::vector<char>& keep) {
  int64_t bad = 0;
  for (int64_t t : tokens)
    bad += t < 0 || t >= static_cast<int64_t>(keep.size()) || !keep[t];
  return bad;
}

// Empirical distribution of `tokens` over the kept tokens (plus one "other" category, expected
// 0) against `p` restricted to `keep`: the L1 distance must stay within the Bretagnolle-Huber-Carol
// bound for kStatDelta; and (negative control) the same statistic against `wrong` must exceed it,
// so that the test can fail. Returns a description for messages.
inline ::testing::AssertionResult matches_distribution(const std::vector<int64_t>& tokens,
                                                       const std::vector<double>& p,
                                                       const std::vector<double>* wrong = nullptr) {
  std::vector<int> category(p.size(), -1);
  std::vector<double> want, want_wrong;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] > 0 || (wrong != nullptr && (*wrong)[i] > 0)) {
      category[i] = static_cast<int>(want.size());
      want.push_back(p[i]);
      if (wrong != nullptr) want_wrong.push_back((*wrong)[i]);
    }
  }
  want.push_back(0.0);  // other
  if (wrong != nullptr) want_wrong.push_back(0.0);
  const int k = static_cast<int>(want.size());
  const std::vector<int64_t> counts = stats::histogram(tokens, category, k);
  const double bound = stats::l1_bound(k, static_cast<double>(tokens.size()), kStatDelta);
  const double d = stats::l1_distance(counts, want);
  std::string msg = "L1 " + std::to_string(d) + " bound " + std::to_string(bound) + " over " +
                    std::to_string(k) + " categories, " + std::to_string(tokens.size()) +
                    " draws, other " + std::to_string(counts.back());
  if (counts.back() != 0 || !(d <= bound)) return ::testing::AssertionFailure() << msg;
  if (wrong != nullptr) {
    const double dw = stats::l1_distance(counts, want_wrong);
    msg += "; against the wrong distribution L1 " + std::to_string(dw);
    if (!(dw > bound)) return ::testing::AssertionFailure() << "negative control: " << msg;
  }
  return ::testing::AssertionSuccess() << msg;
}

// `p` with the mass of its two largest entries moved to its two smallest: a distribution at L1
// distance >= 0.1 from p when the largest entries hold >= 0.1 (the tests' rows do).
inline std::vector<double> perturbed(const std::vector<double>& p, double amount = 0.05) {
  std::vector<double> q = p;
  std::vector<size_t> order(p.size());
  for (size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return p[a] > p[b]; });
  double moved = 0;
  for (int j = 0; j < 2; ++j) {
    const double take = std::min(amount, q[order[j]]);
    q[order[j]] -= take;
    moved += take;
  }
  q[order[order.size() - 1]] += moved / 2;
  q[order[order.size() - 2]] += moved / 2;
  return q;
}

}  // namespace fs_test
