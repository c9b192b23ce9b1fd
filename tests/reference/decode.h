// CPU reference of paged decode attention: `ref` in double from the paged cache (K and V
// gathered per request, softmax with the variants), and `base` the same attention computed
// naively in bf16 (every intermediate rounded), as METHOD.md's accuracy rule needs.
#pragma once

#include <cmath>
#include <limits>
#include <vector>

#include "host_dtype.h"

namespace fs_test::ref {

struct DecodeProblem {
  int num_qo_heads = 0, num_kv_heads = 0, head_dim = 0;
  float sm_scale = 0, soft_cap = 0;
  int window_left = -1;
  std::vector<float> sinks;  // empty: none
  DType low = DType::kBFloat16;
};

struct DecodeRef {
  std::vector<double> out;  // [q_tokens, heads, D]
  std::vector<float> base;
  std::vector<double> lse;  // natural log
};

// k(b, pos, h, d) and v(...) give dequantized cache values; q: [q_tokens, heads, D] floats.
template <class KF, class VF>
DecodeRef decode(const DecodeProblem& p, const std::vector<float>& q,
                 const std::vector<int>& kv_len, const std::vector<int>& q_indptr, KF k, VF v) {
  const int H = p.num_qo_heads, D = p.head_dim, G = H / p.num_kv_heads;
  const int64_t Q = q_indptr.back();
  DecodeRef r;
  r.out.assign(Q * H * D, 0.0);
  r.base.assign(Q * H * D, 0.f);
  r.lse.assign(Q * H, -std::numeric_limits<double>::infinity());
  auto lp = [&](double x) { return static_cast<double>(round_to(p.low, x)); };
  for (size_t b = 0; b + 1 < q_indptr.size(); ++b) {
    const int n = q_indptr[b + 1] - q_indptr[b], L = kv_len[b];
    for (int j = 0; j < n; ++j) {
      const int qpos = L - n + j;
      for (int h = 0; h < H; ++h) {
        const int kh = h / G;
        const float* qr = &q[((q_indptr[b] + j) * static_cast<int64_t>(H) + h) * D];
        std::vector<double> s, sb;
        std::vector<int> pos;
        for (int t = 0; t < L; ++t) {
          if (t > qpos || (p.window_left >= 0 && t < qpos - p.window_left)) continue;
          double acc = 0, accb = 0;
          for (int d = 0; d < D; ++d) {
            acc += double(qr[d]) * k(b, t, kh, d);
            accb = lp(accb + lp(double(qr[d]) * k(b, t, kh, d)));
          }
          acc *= p.sm_scale;
          accb = lp(accb * p.sm_scale);
          if (p.soft_cap > 0) {
            acc = p.soft_cap * std::tanh(acc / p.soft_cap);
            accb = lp(p.soft_cap * std::tanh(accb / p.soft_cap));
          }
          s.push_back(acc);
          sb.push_back(accb);
          pos.push_back(t);
        }
        const double sink = p.sinks.empty() ? -INFINITY : p.sinks[h];
        double m = sink, mb = sink;
        for (size_t i = 0; i < s.size(); ++i) {
          m = std::max(m, s[i]);
          mb = std::max(mb, sb[i]);
        }
        const int64_t row = (q_indptr[b] + j) * static_cast<int64_t>(H) + h;
        if (m == -INFINITY) continue;  // nothing visible: 0 and -inf
        double l = p.sinks.empty() ? 0 : std::exp(sink - m);
        double lb = p.sinks.empty() ? 0 : lp(std::exp(sink - mb));
        std::vector<double> o(D, 0), ob(D, 0);
        for (size_t i = 0; i < s.size(); ++i) {
          const double e = std::exp(s[i] - m), eb = lp(std::exp(sb[i] - mb));
          l += e;
          lb = lp(lb + eb);
          for (int d = 0; d < D; ++d) {
            o[d] += e * v(b, pos[i], kh, d);
            ob[d] = lp(ob[d] + lp(eb * v(b, pos[i], kh, d)));
          }
        }
        r.lse[row] = m + std::log(l);
        for (int d = 0; d < D; ++d) {
          r.out[row * D + d] = o[d] / l;
          r.base[row * D + d] = static_cast<float>(lp(ob[d] / lb));
        }
      }
    }
  }
  return r;
}

}  // namespace fs_test::ref
