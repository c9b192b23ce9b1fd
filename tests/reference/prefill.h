// CPU reference of ragged prefill attention: `ref` in double, and `base` the same attention done
// the way a naive bf16/fp16 implementation does it (torch in low precision): S = Q K^T rounded
// to the low type, softmax computed in float from it and rounded, O = P V accumulated in float and
// rounded — the `base` of METHOD.md's accuracy rule. Rows run on all host threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <thread>
#include <vector>

#include "host_dtype.h"

namespace fs_test::ref {

struct PrefillProblem {
  std::vector<int> qo_indptr, kv_indptr;  // [batch + 1]
  int num_qo_heads = 0, num_kv_heads = 0, head_dim = 0;
  int head_dim_v = 0;  // of v and out; 0 = head_dim
  float sm_scale = 0;
  bool causal = false;
  int window_left = -1, window_right = -1;
  float soft_cap = 0;
  std::vector<float> alibi_slopes, sinks;  // empty: none
  std::vector<uint8_t> mask;               // custom bit mask; empty: none
  std::vector<int64_t> mask_offsets;       // bit offset per request
  DType low = DType::kBFloat16;
};

struct PrefillRef {
  std::vector<double> out;  // [total_q, heads, Dv]
  std::vector<float> base;
  std::vector<double> lse;  // natural log, -inf where nothing is visible
};

// q: [total_q, Hq, D], k: [total_kv, Hkv, D], v: [total_kv, Hkv, Dv] (values as the kernel sees
// them); D = head_dim, Dv = head_dim_v (or D).
inline PrefillRef prefill(const PrefillProblem& p, const std::vector<float>& q,
                          const std::vector<float>& k, const std::vector<float>& v) {
  const int H = p.num_qo_heads, Hk = p.num_kv_heads, D = p.head_dim, G = H / Hk;
  const int Dv = p.head_dim_v > 0 ? p.head_dim_v : D;
  const int64_t total_q = p.qo_indptr.back();
  PrefillRef r;
  r.out.assign(total_q * H * Dv, 0.0);
  r.base.assign(total_q * H * Dv, 0.f);
  r.lse.assign(total_q * H, -std::numeric_limits<double>::infinity());
  auto lp = [&](double x) { return static_cast<double>(round_to(p.low, x)); };
  struct Row {
    int b, i, h;
  };
  std::vector<Row> rows;
  for (size_t b = 0; b + 1 < p.qo_indptr.size(); ++b)
    for (int i = 0; i < p.qo_indptr[b + 1] - p.qo_indptr[b]; ++i)
      for (int h = 0; h < H; ++h)
        rows.push_back({static_cast<int>(b), i, h});

  auto work = [&](size_t first, size_t step) {
    std::vector<double> s, sb;
    std::vector<int> cols;
    for (size_t n = first; n < rows.size(); n += step) {
      const Row& w = rows[n];
      const int q_len = p.qo_indptr[w.b + 1] - p.qo_indptr[w.b];
      const int kv_len = p.kv_indptr[w.b + 1] - p.kv_indptr[w.b];
      const int64_t pos = static_cast<int64_t>(w.i) + kv_len - q_len;
      const int64_t qrow = p.qo_indptr[w.b] + w.i;
      const float* qr = &q[(qrow * H + w.h) * D];
      s.clear();
      sb.clear();
      cols.clear();
      for (int j = 0; j < kv_len; ++j) {
        if (p.causal && j > pos) continue;
        if (p.window_left >= 0 && j < pos - p.window_left) continue;
        if (!p.causal && p.window_right >= 0 && j > pos + p.window_right) continue;
        if (!p.mask.empty()) {
          const int64_t bit = p.mask_offsets[w.b] + static_cast<int64_t>(w.i) * kv_len + j;
          if (!((p.mask[bit >> 3] >> (bit & 7)) & 1)) continue;
        }
        const float* kr = &k[((p.kv_indptr[w.b] + j) * static_cast<int64_t>(Hk) + w.h / G) * D];
        double acc = 0;
        float accf = 0;
        for (int d = 0; d < D; ++d) {
          acc += double(qr[d]) * kr[d];
          accf += qr[d] * kr[d];
        }
        double x = acc * p.sm_scale, xb = lp(lp(accf) * p.sm_scale);
        if (p.soft_cap > 0) {
          x = p.soft_cap * std::tanh(x / p.soft_cap);
          xb = lp(p.soft_cap * std::tanh(xb / p.soft_cap));
        }
        if (!p.alibi_slopes.empty()) {
          x += double(p.alibi_slopes[w.h]) * (j - pos);
          xb = lp(xb + double(p.alibi_slopes[w.h]) * (j - pos));
        }
        s.push_back(x);
        sb.push_back(xb);
        cols.push_back(j);
      }
      const double sink = p.sinks.empty() ? -INFINITY : p.sinks[w.h];
      double m = sink, mb = sink;
      for (size_t c = 0; c < s.size(); ++c) {
        m = std::max(m, s[c]);
        mb = std::max(mb, sb[c]);
      }
      if (m == -INFINITY) continue;
      double l = p.sinks.empty() ? 0 : std::exp(sink - m);
      float lb = p.sinks.empty() ? 0.f : std::exp(float(sink - mb));
      std::vector<double> o(Dv, 0.0);
      std::vector<float> ob(Dv, 0.f);
      for (size_t c = 0; c < s.size(); ++c)
        lb += std::exp(float(sb[c] - mb));
      for (size_t c = 0; c < s.size(); ++c) {
        const double e = std::exp(s[c] - m);
        const float pb = static_cast<float>(lp(std::exp(float(sb[c] - mb)) / lb));
        l += e;
        const float* vr =
            &v[((p.kv_indptr[w.b] + cols[c]) * static_cast<int64_t>(Hk) + w.h / G) * Dv];
        for (int d = 0; d < Dv; ++d) {
          o[d] += e * vr[d];
          ob[d] += pb * vr[d];
        }
      }
      const int64_t row = qrow * H + w.h;
      r.lse[row] = m + std::log(l);
      for (int d = 0; d < Dv; ++d) {
        r.out[row * Dv + d] = o[d] / l;
        r.base[row * Dv + d] = static_cast<float>(lp(ob[d]));
      }
    }
  };
  const size_t threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t)
    pool.emplace_back(work, t, threads);
  for (auto& t : pool)
    t.join();
  return r;
}

}  // namespace fs_test::ref
