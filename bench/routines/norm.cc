// Benchmarks of the normalization family.
#include <string>

#include "device_tensor.h"
#include "flashserve/norm.h"
#include "harness/fill.h"
#include "harness/routine.h"
#include "reference/norm.h"

namespace fs_bench {
namespace {

using fs_test::DeviceTensor;

enum Kind { kRms = 0, kGemma = 1, kLayer = 2 };

Result run_norm(const char* name, Kind kind, bool fused, bool fp8_out, const Args& a,
                Context& ctx) {
  Result r;
  r.routine = name;
  r.model = a.model;
  r.dtype = flashserve::dtype_name(a.dtype);
  r.shape = std::to_string(a.tokens) + " x " + std::to_string(a.hidden);
  r.params = {{"tokens", fmt_int(a.tokens)}, {"hidden", fmt_int(a.hidden)}, {"dtype", r.dtype}};
  const DType out_dtype = fp8_out ? DType::kFloat8E4M3 : a.dtype;
  const int64_t n = a.tokens * a.hidden;
  DeviceTensor x(a.dtype, {a.tokens, a.hidden}), res(a.dtype, {a.tokens, a.hidden}),
      w(a.dtype, {a.hidden}), b(a.dtype, {a.hidden}), out(out_dtype, {a.tokens, a.hidden}),
      scale(DType::kFloat32, {1});
  const uint64_t seed = fs_test::fresh_seed();
  fill_normal(x.view(), seed, 0.f, 1.f, ctx.stream);
  fill_normal(res.view(), seed + 1, 0.f, 1.f, ctx.stream);
  fill_normal(w.view(), seed + 2, 0.f, 1.f, ctx.stream);
  fill_normal(b.view(), seed + 3, 0.f, 1.f, ctx.stream);
  const float scale_value = 0.125f;
  scale.upload({scale_value});
  flashserve::NormOptions opt;
  if (fp8_out) opt.out_scale = scale.view();
  const auto xt = x.view(), rt = res.view(), wt = w.view(), bt = b.view(), ot = out.view();

  auto launch = [&](cudaStream_t s) {
    if (kind == kLayer) {
      expect_ok(flashserve::layernorm(ot, xt, wt, bt, opt, s));
    } else if (fused) {
      expect_ok(kind == kGemma ? flashserve::gemma_fused_add_rmsnorm(ot, xt, rt, wt, opt, s)
                               : flashserve::fused_add_rmsnorm(ot, xt, rt, wt, opt, s));
    } else {
      expect_ok(kind == kGemma ? flashserve::gemma_rmsnorm(ot, xt, wt, opt, s)
                               : flashserve::rmsnorm(ot, xt, wt, opt, s));
    }
  };

  if (ctx.refcheck) {
    const auto xv = x.download(), rv = res.download(), wv = w.download(), bv = b.download();
    launch(ctx.stream);
    const auto ref = fs_test::ref::norm(kind, xv, fused ? rv : std::vector<float>{}, wv,
                                        kind == kLayer ? bv : std::vector<float>{}, a.tokens,
                                        a.hidden, opt.eps, a.dtype);
    std::vector<double> want = ref.out;
    if (fp8_out) {
      for (double& v : want)
        v /= scale_value;
    }
    r.check = refcheck_report(out.download(), want, fp8_out ? 6e-2 : 1e-2);
  }
  const int in = flashserve::dtype_size(a.dtype), outb = flashserve::dtype_size(out_dtype);
  double bytes = static_cast<double>(n) * (in + outb) + a.hidden * in;
  if (fused) bytes += 2.0 * n * in;                                 // residual read + written
  if (kind == kLayer) bytes += static_cast<double>(a.hidden) * in;  // bias
  finish(r, ctx.timer->time(launch, ctx.time), bytes, ctx);
  return r;
}

Routine make(const char* name, const char* description, Kind kind, bool fused, bool fp8) {
  return {
      name, "norm", description, {"tokens", "hidden", "dtype"}, [=](const Args& a, Context& ctx) {
        return run_norm(name, kind, fused, fp8, a, ctx);
      }};
}

}  // namespace

std::vector<Routine> norm_routines() {
  return {
      make("rmsnorm", "out = x / rms(x) * w", kRms, false, false),
      make("fused_add_rmsnorm", "r += x; out = rmsnorm(r) * w", kRms, true, false),
      make("gemma_rmsnorm", "out = x / rms(x) * (1 + w)", kGemma, false, false),
      make("gemma_fused_add_rmsnorm", "r += x; out = rmsnorm(r) * (1 + w)", kGemma, true, false),
      make("layernorm", "out = (x - mean) / std * w + b", kLayer, false, false),
      make("rmsnorm_fp8", "rmsnorm with float8_e4m3 output (scale)", kRms, false, true),
      make("fused_add_rmsnorm_fp8", "fused add + rmsnorm, float8_e4m3 output", kRms, true, true),
  };
}

}  // namespace fs_bench
