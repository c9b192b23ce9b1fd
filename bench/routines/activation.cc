// Benchmarks of the gated activations.
#include <string>

#include "device_tensor.h"
#include "flashserve/activation.h"
#include "harness/fill.h"
#include "harness/routine.h"
#include "reference/activation.h"

namespace fs_bench {
namespace {

using fs_test::DeviceTensor;

Result run_act(const char* name, flashserve::Activation act, const Args& a, Context& ctx) {
  Result r;
  r.routine = name;
  r.model = a.model;
  r.dtype = flashserve::dtype_name(a.dtype);
  r.shape = std::to_string(a.tokens) + " x 2*" + std::to_string(a.hidden);
  r.params = {{"tokens", fmt_int(a.tokens)}, {"hidden", fmt_int(a.hidden)}, {"dtype", r.dtype}};
  DeviceTensor in(a.dtype, {a.tokens, 2 * a.hidden}), out(a.dtype, {a.tokens, a.hidden});
  fill_normal(in.view(), fs_test::fresh_seed(), 0.f, 1.f, ctx.stream);
  const auto it = in.view(), ot = out.view();
  auto launch = [&](cudaStream_t s) { expect_ok(flashserve::act_and_mul(ot, it, act, s)); };
  if (ctx.refcheck) {
    launch(ctx.stream);
    const auto ref = fs_test::ref::act_and_mul(act, in.download(), a.tokens, a.hidden);
    r.check = refcheck_report(out.download(), ref, 1e-2);
  }
  const double bytes = 3.0 * a.tokens * a.hidden * flashserve::dtype_size(a.dtype);
  finish(r, ctx.timer->time(launch, ctx.time), bytes, ctx);
  return r;
}

Routine make(const char* name, const char* description, flashserve::Activation act) {
  return {name,
          "activation",
          description,
          {"tokens", "hidden", "dtype"},
          [=](const Args& a, Context& ctx) { return run_act(name, act, a, ctx); }};
}

}  // namespace

std::vector<Routine> activation_routines() {
  return {
      make("silu_and_mul", "out = silu(x[:, :d]) * x[:, d:]  (d = --hidden)",
           flashserve::Activation::kSilu),
      make("gelu_and_mul", "out = gelu(x[:, :d]) * x[:, d:]", flashserve::Activation::kGelu),
      make("gelu_tanh_and_mul", "out = gelu_tanh(x[:, :d]) * x[:, d:]",
           flashserve::Activation::kGeluTanh),
  };
}

}  // namespace fs_bench
