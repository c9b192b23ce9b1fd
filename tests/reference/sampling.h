// CPU references for the sampling family (in double), and the statistics the sampling tests use
// to compare empirical frequencies with a target distribution at a fixed failure probability.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

namespace fs_test::ref {

// softmax(x / temperature); temperature <= 0: uniform over the maxima (the kernels' greedy mode).
// NaN and -inf get probability 0; a row without a finite maximum gives all zeros.
inline std::vector<double> softmax(const std::vector<float>& x, double temperature) {
  std::vector<double> p(x.size(), 0.0);
  double m = -INFINITY;
  for (float v : x) {
    if (v == v) m = std::max(m, static_cast<double>(v));
  }
  if (!(m > -INFINITY)) return p;
  double sum = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    if (!(v > -INFINITY)) continue;
    if (temperature <= 0 || m == INFINITY) {
      p[i] = v == m ? 1.0 : 0.0;
    } else {
      p[i] = std::exp((v - m) / temperature);
    }
    sum += p[i];
  }
  for (double& v : p)
    v /= sum;
  return p;
}

struct Filter {
  int top_k = 0;       // <= 0 or >= n: none
  double top_p = 1.0;  // >= 1: none
  double min_p = 0.0;
  bool top_k_first = true;
};

// Kept set {p >= threshold} of one filter given the values sorted in descending order.
inline double top_k_threshold(std::vector<double> v, int k) {
  std::sort(v.begin(), v.end(), std::greater<double>());
  return v[k - 1];
}

// Smallest value t such that the values >= t (ties included) hold >= top_p of the total.
inline double top_p_threshold(std::vector<double> v, double top_p) {
  std::sort(v.begin(), v.end(), std::greater<double>());
  const double total = std::accumulate(v.begin(), v.end(), 0.0);
  const double target = top_p * total;
  double cum = 0;
  for (double x : v) {
    cum += x;
    if (cum >= target) return x;
  }
  return v.back();
}

// Which tokens may be drawn, as flashserve defines the filters: top-k keeps the values >= the
// k-th largest; top-p the smallest set of largest values whose mass reaches top_p of the mass of
// the top-k set (top_k_first) or of the whole row (joint: a token must pass both); min-p the
// values >= min_p * max. Ties at a threshold are kept. Zero-probability tokens are never drawn.
inline std::vector<char> kept(const std::vector<double>& p, const Filter& f) {
  const int n = static_cast<int>(p.size());
  std::vector<char> keep(n, 1);
  const double pmax = *std::max_element(p.begin(), p.end());
  if (f.top_k > 0 && f.top_k < n) {
    const double t = top_k_threshold(p, f.top_k);
    for (int i = 0; i < n; ++i)
      keep[i] = p[i] >= t;
  }
  if (f.top_p < 1.0) {
    std::vector<double> base;
    for (int i = 0; i < n; ++i) {
      if (!f.top_k_first || keep[i]) base.push_back(p[i]);
    }
    const double t = top_p_threshold(base, std::max(f.top_p, 0.0));
    for (int i = 0; i < n; ++i)
      keep[i] = keep[i] && p[i] >= t;
  }
  if (f.min_p > 0) {
    for (int i = 0; i < n; ++i)
      keep[i] = keep[i] && p[i] >= f.min_p * pmax;
  }
  for (int i = 0; i < n; ++i)
    keep[i] = keep[i] && p[i] > 0;
  return keep;
}

// p restricted to `keep` and renormalized.
inline std::vector<double> restrict_to(const std::vector<double>& p,
                                       const std::vector<char>& keep) {
  std::vector<double> q(p.size(), 0.0);
  double sum = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (keep[i]) sum += p[i];
  }
  for (size_t i = 0; i < p.size(); ++i)
    q[i] = keep[i] && sum > 0 ? p[i] / sum : 0.0;
  return q;
}

// A top_p halfway between two consecutive cumulative fractions of the values in `within` (sorted
// descending), the pair around `want`: a boundary that the kernels' rounding (~1e-7 relative)
// cannot move, so the kept set is unambiguous.
inline double safe_top_p(const std::vector<double>& p, const std::vector<char>& within,
                         double want) {
  std::vector<double> v;
  for (size_t i = 0; i < p.size(); ++i) {
    if (within[i] && p[i] > 0) v.push_back(p[i]);
  }
  std::sort(v.begin(), v.end(), std::greater<double>());
  const double total = std::accumulate(v.begin(), v.end(), 0.0);
  double cum = 0, prev = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    cum += v[i] / total;
    if (cum >= want || i + 1 == v.size()) return (prev + cum) / 2;
    prev = cum;
  }
  return 1.0;
}

// Indices of the k largest values (NaN below -inf, ties to the lowest index), ascending.
inline std::vector<int64_t> top_k_indices(const std::vector<float>& row, int k) {
  std::vector<int64_t> idx(row.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
    const bool na = row[a] != row[a], nb = row[b] != row[b];
    if (na || nb) return !na && nb;  // NaN ranks below every number, -inf included
    return row[a] > row[b];
  });
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace fs_test::ref

namespace fs_test::stats {

// Bretagnolle-Huber-Carol inequality: for N draws from a distribution p over K categories, the
// empirical frequencies q satisfy P(sum_i |q_i - p_i| >= eps) <= 2^K exp(-N eps^2 / 2). The eps
// whose bound is `delta`: a test that fails when the L1 distance exceeds it fails by chance with
// probability at most delta.
inline double l1_bound(int categories, double draws, double delta) {
  return std::sqrt(2.0 * (categories * std::log(2.0) + std::log(1.0 / delta)) / draws);
}

inline double l1_distance(const std::vector<int64_t>& counts, const std::vector<double>& p) {
  double n = 0, d = 0;
  for (int64_t c : counts)
    n += static_cast<double>(c);
  for (size_t i = 0; i < counts.size(); ++i)
    d += std::fabs(static_cast<double>(counts[i]) / n - p[i]);
  return d;
}

// Hoeffding: the mean of N Bernoulli(p) draws is within eps of p except with probability delta.
inline double mean_bound(double draws, double delta) {
  return std::sqrt(std::log(2.0 / delta) / (2.0 * draws));
}

// Counts of tokens per category: category[token] in [0, num_categories - 1); tokens with category
// -1 or outside [0, category.size()) are counted in the last category, "other".
inline std::vector<int64_t> histogram(const std::vector<int64_t>& tokens,
                                      const std::vector<int>& category, int num_categories) {
  std::vector<int64_t> counts(num_categories, 0);
  for (int64_t t : tokens) {
    const int c = t >= 0 && t < static_cast<int64_t>(category.size()) ? category[t] : -1;
    ++counts[c >= 0 ? c : num_categories - 1];
  }
  return counts;
}

}  // namespace fs_test::stats
