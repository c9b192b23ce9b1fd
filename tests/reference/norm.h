// CPU references for the normalization family: `ref` in double, `base` the same computation done
// naively in the kernel's low precision (every intermediate rounded to the storage dtype, sums
// accumulated sequentially), as METHOD.md's accuracy rule needs.
#pragma once

#include <cmath>
#include <vector>

#include "host_dtype.h"

namespace fs_test::ref {

struct NormRef {
  std::vector<double> out;       // [rows, hidden]
  std::vector<float> base;       // [rows, hidden]
  std::vector<double> residual;  // fused add: input + residual (exact)
};

// kind: 0 rmsnorm, 1 gemma rmsnorm (1 + w), 2 layernorm. `residual` empty for the plain forms,
// `bias` empty for none.
inline NormRef norm(int kind, const std::vector<float>& x, const std::vector<float>& residual,
                    const std::vector<float>& w, const std::vector<float>& bias, int64_t rows,
                    int64_t hidden, double eps, DType dtype) {
  NormRef r;
  r.out.resize(rows * hidden);
  r.base.resize(rows * hidden);
  if (!residual.empty()) r.residual.resize(rows * hidden);
  auto lp = [dtype](double v) { return static_cast<double>(round_to(dtype, v)); };
  std::vector<double> s(hidden);
  std::vector<double> sb(hidden);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < hidden; ++j) {
      const int64_t k = i * hidden + j;
      s[j] = x[k] + (residual.empty() ? 0.0 : residual[k]);
      sb[j] = residual.empty() ? x[k] : lp(x[k] + residual[k]);
      if (!residual.empty()) r.residual[k] = s[j];
    }
    // Exact.
    double mean = 0, var = 0;
    if (kind == 2) {
      for (double v : s)
        mean += v;
      mean /= hidden;
      for (double v : s)
        var += (v - mean) * (v - mean);
      var /= hidden;
    } else {
      for (double v : s)
        var += v * v;
      var /= hidden;
    }
    const double inv = 1.0 / std::sqrt(var + eps);
    // Naive low precision.
    double bmean = 0, bacc = 0;
    if (kind == 2) {
      for (double v : sb)
        bmean = lp(bmean + v);
      bmean = lp(bmean / hidden);
      for (double v : sb)
        bacc = lp(bacc + lp(lp(v - bmean) * lp(v - bmean)));
    } else {
      for (double v : sb)
        bacc = lp(bacc + lp(v * v));
    }
    const double bden = lp(std::sqrt(lp(lp(bacc / hidden) + eps)));
    for (int64_t j = 0; j < hidden; ++j) {
      const int64_t k = i * hidden + j;
      const double wj = kind == 1 ? 1.0 + w[j] : w[j];
      const double bj = bias.empty() ? 0.0 : bias[j];
      const double centered = kind == 2 ? s[j] - mean : s[j];
      r.out[k] = centered * inv * wj + bj;
      const double bw = kind == 1 ? lp(1.0 + w[j]) : w[j];
      const double bc = kind == 2 ? lp(sb[j] - bmean) : sb[j];
      r.base[k] = static_cast<float>(lp(lp(lp(bc / bden) * bw) + bj));
    }
  }
  return r;
}

}  // namespace fs_test::ref
