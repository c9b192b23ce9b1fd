// Benchmarks of the sampling family over [batch, vocab] rows (--batch, --vocab): sampling from
// logits (normal(0, 1), the routine's dtype) or from probabilities (their softmax, float32), the
// renormalization helpers, top-k, and chain speculative verification (--draft-tokens).
//
// Bytes: one read of the inputs (the yardstick: "within 2x of one read") plus the outputs
// written. Timed loops never reread one input from L2: consecutive launches rotate through enough
// copies of the input that they span 2x the L2 size (or the input alone exceeds it).
#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "device_tensor.h"
#include "flashserve/runtime.h"
#include "flashserve/sampling.h"
#include "harness/fill.h"
#include "harness/routine.h"
#include "reference/sampling.h"

namespace fs_bench {
namespace {

using flashserve::SamplingArgs;
using flashserve::TensorView;
using fs_test::DeviceTensor;

enum class Op { kSample, kTopK, kMaskLogits, kRenormTopP, kRenormTopK, kSpeculative };

struct Spec {
  const char* name;
  const char* description;
  Op op;
  bool logits;  // input: logits in the routine's dtype, else float32 probabilities
  int top_k;
  float top_p;
  float min_p;
};

// Copies of the input such that consecutive launches do not find the previous input in L2.
int input_sets(double bytes_per_set, const Context& ctx) {
  if (ctx.time.cold_l2) return 1;
  flashserve::DeviceInfo dev;
  int device = 0;
  cudaGetDevice(&device);
  if (!flashserve::get_device_info(device, &dev).ok()) return 1;
  const double want = 2.0 * static_cast<double>(dev.l2_bytes) / std::max(bytes_per_set, 1.0);
  return static_cast<int>(std::clamp(std::ceil(want), 1.0, 64.0));
}

// softmax of normal(0, 1) logits: `distinct` random rows, repeated over the batch.
std::vector<float> softmax_rows(int64_t distinct, int64_t vocab, uint64_t seed) {
  std::vector<float> p = fs_test::random_normal(distinct * vocab, seed);
  for (int64_t r = 0; r < distinct; ++r) {
    float* row = p.data() + r * vocab;
    const float m = *std::max_element(row, row + vocab);
    double s = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      row[i] = std::exp(row[i] - m);
      s += row[i];
    }
    for (int64_t i = 0; i < vocab; ++i)
      row[i] = static_cast<float>(row[i] / s);
  }
  return p;
}

// Fills `t` ([rows, cols] contiguous float32) with `block` ([distinct, cols]) repeated.
void fill_repeated(DeviceTensor& t, const std::vector<float>& block, int64_t distinct,
                   int64_t cols) {
  const int64_t rows = t.numel() / cols;
  DeviceTensor src(flashserve::DType::kFloat32, {distinct, cols});
  src.upload(block);
  for (int64_t r = 0; r < rows; r += distinct) {
    const int64_t n = std::min(distinct, rows - r);
    fs_test::cuda_check(cudaMemcpy(static_cast<float*>(t.data()) + r * cols, src.data(),
                                   n * cols * 4, cudaMemcpyDeviceToDevice),
                        "cudaMemcpy");
  }
}

std::string check_ids(const std::vector<float>& ids, const std::vector<float>& input, bool logits,
                      int64_t batch, int64_t vocab, int top_k) {
  int64_t bad = 0;
  for (int64_t r = 0; r < std::min<int64_t>(batch, 8); ++r) {
    const std::vector<float> row(input.begin() + r * vocab, input.begin() + (r + 1) * vocab);
    std::vector<double> p;
    if (logits) {
      p = fs_test::ref::softmax(row, 1.0);
    } else {
      p.assign(row.begin(), row.end());
    }
    fs_test::ref::Filter f;
    f.top_k = top_k;  // top-p boundaries may be ambiguous at fp32 rounding: check top-k only
    const std::vector<char> keep = fs_test::ref::kept(p, f);
    const int64_t t = static_cast<int64_t>(ids[r]);
    bad += t < 0 || t >= vocab || !keep[t];
  }
  for (float v : ids)
    bad += v < 0 || v >= vocab;
  return bad == 0 ? "ok in range, kept" : "FAIL " + std::to_string(bad) + " bad ids";
}

Result run_sampling(const Spec& s, const Args& a, Context& ctx) {
  Result r;
  r.routine = s.name;
  r.model = a.model;
  const int64_t batch = std::max<int64_t>(a.batch, 1), vocab = a.vocab;
  const DType dtype = s.logits ? a.dtype : DType::kFloat32;
  const int esize = flashserve::dtype_size(dtype);
  r.dtype = flashserve::dtype_name(dtype);
  r.shape = std::to_string(batch) + " x " + std::to_string(vocab);
  r.params = {{"batch", fmt_int(batch)},
              {"vocab", fmt_int(vocab)},
              {"dtype", r.dtype},
              {"top_k", fmt_int(s.top_k)},
              {"top_p", std::to_string(s.top_p)},
              {"min_p", std::to_string(s.min_p)},
              {"logits", s.logits ? "1" : "0"}};
  const double in_bytes = static_cast<double>(batch) * vocab * esize;
  const int sets = input_sets(in_bytes, ctx);
  const uint64_t seed = fs_test::fresh_seed();
  std::vector<DeviceTensor> inputs;
  for (int i = 0; i < sets; ++i)
    inputs.emplace_back(dtype, std::vector<int64_t>{batch, vocab});
  if (s.logits) {
    for (int i = 0; i < sets; ++i)
      fill_normal(inputs[i].view(), seed + i, 0.f, 1.f, ctx.stream);
  } else {
    const int64_t distinct = std::min<int64_t>(batch, 16);
    const std::vector<float> block = softmax_rows(distinct, vocab, seed);
    for (DeviceTensor& t : inputs)
      fill_repeated(t, block, distinct, vocab);
  }
  DeviceTensor ids(DType::kInt32, {batch});
  const int k = std::max(1, static_cast<int>(std::min<int64_t>(s.top_k, vocab)));
  DeviceTensor values(dtype, {batch, k}), indices(DType::kInt32, {batch, k});
  DeviceTensor out;
  if (s.op == Op::kMaskLogits || s.op == Op::kRenormTopK || s.op == Op::kRenormTopP) {
    out = DeviceTensor(dtype, {batch, vocab});
  }
  SamplingArgs args;
  args.top_k_value = s.top_k;
  args.top_p_value = s.top_p;
  args.min_p_value = s.min_p;
  args.seed_value = seed;
  int next = 0;
  auto launch = [&](cudaStream_t st) {
    const TensorView in = inputs[next].view();
    next = (next + 1) % sets;
    ++args.offset_value;
    switch (s.op) {
      case Op::kSample:
        expect_ok(s.logits ? flashserve::sample_from_logits(ids.view(), in, args, st)
                           : flashserve::sample_from_probs(ids.view(), in, args, st));
        break;
      case Op::kTopK:
        expect_ok(flashserve::top_k(values.view(), indices.view(), in, k, st));
        break;
      case Op::kMaskLogits:
        expect_ok(flashserve::top_k_mask_logits(out.view(), in, args, st));
        break;
      case Op::kRenormTopK:
        expect_ok(flashserve::top_k_renorm_probs(out.view(), in, args, st));
        break;
      case Op::kRenormTopP:
        expect_ok(flashserve::top_p_renorm_probs(out.view(), in, args, st));
        break;
      case Op::kSpeculative:
        break;
    }
  };
  if (ctx.refcheck) {
    next = 0;
    launch(ctx.stream);
    fs_test::cuda_check(cudaStreamSynchronize(ctx.stream), "refcheck");
    const std::vector<float> in = inputs[0].download();
    if (s.op == Op::kSample) {
      r.check = check_ids(ids.download(), in, s.logits, batch, vocab, s.top_k);
    } else if (s.op == Op::kTopK) {
      const std::vector<float> idx = indices.download();
      int64_t bad = 0;
      for (int64_t row = 0; row < std::min<int64_t>(batch, 8); ++row) {
        const std::vector<float> v(in.begin() + row * vocab, in.begin() + (row + 1) * vocab);
        const std::vector<int64_t> want = fs_test::ref::top_k_indices(v, k);
        for (int j = 0; j < k; ++j)
          bad += static_cast<int64_t>(idx[row * k + j]) != want[j];
      }
      r.check = bad == 0 ? "ok exact" : "FAIL " + std::to_string(bad) + " indices differ";
    } else {
      const std::vector<float> got = out.download();
      std::vector<double> want;
      int64_t rows_checked = std::min<int64_t>(batch, 4);
      for (int64_t row = 0; row < rows_checked; ++row) {
        const std::vector<float> v(in.begin() + row * vocab, in.begin() + (row + 1) * vocab);
        fs_test::ref::Filter f;
        f.top_k = s.top_k;
        if (s.op == Op::kMaskLogits) {
          const std::vector<char> keep = fs_test::ref::kept(fs_test::ref::softmax(v, 1.0), f);
          for (int64_t i = 0; i < vocab; ++i)
            want.push_back(keep[i] ? v[i] : -INFINITY);
        } else {
          if (s.op == Op::kRenormTopP) f = {0, s.top_p, 0.0, true};
          const std::vector<double> p(v.begin(), v.end());
          const std::vector<double> q = fs_test::ref::restrict_to(p, fs_test::ref::kept(p, f));
          want.insert(want.end(), q.begin(), q.end());
        }
      }
      const std::vector<float> head(got.begin(), got.begin() + rows_checked * vocab);
      if (s.op == Op::kMaskLogits) {
        int64_t bad = 0;
        for (size_t i = 0; i < head.size(); ++i)
          bad += head[i] != static_cast<float>(want[i]);
        r.check = bad == 0 ? "ok exact" : "FAIL " + std::to_string(bad) + " differ";
      } else {
        r.check = refcheck_report(head, want, 1e-4);
      }
    }
  }
  double bytes = in_bytes + 4.0 * batch;
  if (s.op == Op::kTopK) bytes += static_cast<double>(batch) * k * (esize + 4);
  if (out.data() != nullptr) bytes += in_bytes;  // (a default tensor has numel 1: no shape)
  next = 0;
  finish(r, ctx.timer->time(launch, ctx.time), bytes, ctx);
  r.params["sets"] = std::to_string(sets);
  return r;
}

// Chain speculative verification of --draft-tokens drafts per request: float32 draft [batch, n,
// vocab] and target [batch, n + 1, vocab] distributions, random draft ids. Bytes: the two rows a
// request reads at most (target and draft at the first rejection) and the ids.
Result run_speculative(const Args& a, Context& ctx) {
  Result r;
  r.routine = "chain_speculative";
  r.model = a.model;
  const int64_t batch = std::max<int64_t>(a.batch, 1), vocab = a.vocab,
                n = std::max<int64_t>(a.draft_tokens, 1);
  r.dtype = "float32";
  r.shape =
      std::to_string(batch) + " x " + std::to_string(n) + " drafts x " + std::to_string(vocab);
  r.params = {{"batch", fmt_int(batch)},
              {"vocab", fmt_int(vocab)},
              {"draft_tokens", fmt_int(n)},
              {"dtype", r.dtype}};
  const int64_t distinct = std::min<int64_t>(batch, 8);
  const uint64_t seed = fs_test::fresh_seed();
  DeviceTensor draft(DType::kFloat32, {batch, n, vocab}),
      target(DType::kFloat32, {batch, n + 1, vocab});
  fill_repeated(draft, softmax_rows(distinct * n, vocab, seed), distinct * n, vocab);
  fill_repeated(target, softmax_rows(distinct * (n + 1), vocab, seed + 1), distinct * (n + 1),
                vocab);
  std::vector<int32_t> host_ids(batch * n);
  std::mt19937_64 rng(seed);
  for (int32_t& t : host_ids)
    t = static_cast<int32_t>(rng() % vocab);
  DeviceTensor ids(DType::kInt32, {batch, n}), out(DType::kInt32, {batch, n + 1}),
      accepted(DType::kInt32, {batch});
  ids.upload_raw(host_ids.data(), 4 * batch * n);
  flashserve::ChainSpeculativeArgs s;
  s.draft_token_ids = ids.view();
  s.draft_probs = draft.view();
  s.target_probs = target.view();
  s.output_token_ids = out.view();
  s.accepted_counts = accepted.view();
  s.seed_value = seed;
  auto launch = [&](cudaStream_t st) {
    ++s.offset_value;
    expect_ok(flashserve::chain_speculative_sampling(s, st));
  };
  if (ctx.refcheck) {
    launch(ctx.stream);
    const std::vector<float> o = out.download(), acc = accepted.download();
    int64_t bad = 0;
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t m = static_cast<int64_t>(acc[b]);
      bad += m < 0 || m > n;
      for (int64_t j = 0; j <= n && m >= 0 && m <= n; ++j) {
        const int64_t t = static_cast<int64_t>(o[b * (n + 1) + j]);
        bad += j < m ? t != host_ids[b * n + j] : (j == m ? (t < 0 || t >= vocab) : t != -1);
      }
    }
    r.check = bad == 0 ? "ok layout" : "FAIL " + std::to_string(bad) + " bad entries";
  }
  const double bytes = 2.0 * batch * vocab * 4 + 4.0 * batch * (2 * n + 2);
  finish(r, ctx.timer->time(launch, ctx.time), bytes, ctx);
  return r;
}

Routine make(const Spec& s) {
  return {s.name,
          "sampling",
          s.description,
          {"batch", "vocab", "dtype"},
          [s](const Args& a, Context& ctx) { return run_sampling(s, a, ctx); }};
}

}  // namespace

std::vector<Routine> sampling_routines() {
  return {
      make({"sampling_from_logits", "token ids from softmax(logits)", Op::kSample, true, 0, 1.f,
            0.f}),
      make({"sampling_top_p_from_logits", "top-p 0.9 sampling from logits", Op::kSample, true, 0,
            0.9f, 0.f}),
      make({"sampling_top_k_top_p_from_logits", "top-k 50 then top-p 0.9 from logits", Op::kSample,
            true, 50, 0.9f, 0.f}),
      make({"sampling_top_p", "top-p 0.9 sampling from float32 probabilities", Op::kSample, false,
            0, 0.9f, 0.f}),
      make({"sampling_top_k", "top-k 50 sampling from float32 probabilities", Op::kSample, false,
            50, 1.f, 0.f}),
      make({"sampling_min_p", "min-p 0.1 sampling from float32 probabilities", Op::kSample, false,
            0, 1.f, 0.1f}),
      make({"top_k", "exact top-50 values and indices", Op::kTopK, true, 50, 1.f, 0.f}),
      make({"top_k_mask_logits", "logits outside the top 50 set to -inf", Op::kMaskLogits, true, 50,
            1.f, 0.f}),
      make({"top_p_renorm_probs", "probabilities outside the top-p 0.9 set zeroed, renormalized",
            Op::kRenormTopP, false, 0, 0.9f, 0.f}),
      make({"top_k_renorm_probs", "probabilities outside the top 50 zeroed, renormalized",
            Op::kRenormTopK, false, 50, 1.f, 0.f}),
      {"chain_speculative",
       "sampling",
       "chain speculative verification of --draft-tokens drafts per request",
       {"batch", "vocab", "draft-tokens"},
       run_speculative},
  };
}

}  // namespace fs_bench
