// Public entry points of the normalization family: validate, log, dispatch, launch.
#include <cmath>
#include <limits>

#include "api/arg_check.h"
#include "api/common.h"
#include "flashserve/core/dispatch.h"
#include "flashserve/norm.h"
#include "flashserve/norm/norm_kernel.cuh"
#include "runtime/logging.h"

namespace flashserve {
namespace {

enum class NormKind { kRms, kGemmaRms, kLayer };

struct NormCall {
  const char* op;
  NormKind kind;
  const TensorView& out;
  const TensorView& input;
  const TensorView* residual;  // fused add when set
  const TensorView& weight;
  const TensorView* bias;
  const NormOptions& options;
};

Status validate(const NormCall& c) {
  ArgCheck check(c.op);
  check.arg(c.input, "input")
      .defined()
      .ndim_in(2, 3)
      .float_dtype()
      .inner_contiguous()
      .nonnegative_strides()
      .size_at_least(-1, 1);
  if (!check.ok()) return check.status();
  const int64_t hidden = c.input.size(-1);
  check.arg(c.out, "out")
      .defined()
      .same_shape(c.input, "input")
      .inner_contiguous()
      .nonnegative_strides()
      .writable()
      .dtype_in({c.input.dtype, DType::kFloat8E4M3});
  if (c.out.dtype == c.input.dtype) {
    check.no_partial_alias(c.input, "input");
  } else {
    check.require(disjoint(c.out, c.input), "out: a float8 output must not overlap input");
  }
  check.arg(c.weight, "weight")
      .defined()
      .ndim(1)
      .size(0, hidden, "hidden")
      .dtype(c.input.dtype)
      .contiguous();
  if (c.residual) {
    check.arg(*c.residual, "residual")
        .defined()
        .same_shape(c.input, "input")
        .dtype(c.input.dtype)
        .inner_contiguous()
        .nonnegative_strides()
        .writable();
    // The residual is read and written in place; it must not alias the output or the input.
    check.require(disjoint(c.out, *c.residual),
                  "out: must not overlap residual (residual is updated in place)");
    check.require(disjoint(*c.residual, c.input),
                  "residual: must not overlap input (residual is updated in place)");
  }
  if (c.bias && c.bias->defined()) {
    check.arg(*c.bias, "bias")
        .defined()
        .ndim(1)
        .size(0, hidden, "hidden")
        .dtype(c.input.dtype)
        .contiguous();
  }
  check.require(disjoint(c.out, c.weight), "out: must not overlap weight");
  if (c.bias) check.require(disjoint(c.out, *c.bias), "out: must not overlap bias");
  if (c.residual) {
    check.require(disjoint(*c.residual, c.weight), "residual: must not overlap weight");
  }
  if (c.out.dtype == DType::kFloat8E4M3) {
    check.require(c.options.out_scale.defined(),
                  "options.out_scale: expected a float32 scalar on the device when out is "
                  "float8_e4m3, got undefined");
    check.arg(c.options.out_scale, "options.out_scale").defined().dtype(DType::kFloat32).numel(1);
  }
  check.require(std::isfinite(c.options.eps) && c.options.eps >= 0.f, [&] {
    return "options.eps: expected a finite value >= 0, got " + format_float(c.options.eps);
  });
  check.require(rows_of(c.input) <= std::numeric_limits<int32_t>::max(), [&] {
    return "input: expected at most 2^31-1 rows, got " + std::to_string(rows_of(c.input));
  });
  check.require(hidden <= std::numeric_limits<int32_t>::max(),
                [&] { return "input: hidden size too large: " + std::to_string(hidden); });
  check.on_current_device();
  return check.status();
}

template <class T, class TOut>
cudaError_t launch(const NormCall& c, cudaStream_t stream) {
  norm::NormParams<T, TOut> p;
  p.input = static_cast<const T*>(c.input.data);
  p.input_rows = row_index_of(c.input);
  p.out = static_cast<TOut*>(c.out.data);
  p.out_rows = row_index_of(c.out);
  p.weight = static_cast<const T*>(c.weight.data);
  p.rows = rows_of(c.input);
  p.hidden = static_cast<int>(c.input.size(-1));
  p.eps = c.options.eps;
  p.weight_offset = c.kind == NormKind::kGemmaRms ? 1.f : 0.f;
  if (c.out.dtype == DType::kFloat8E4M3)
    p.out_scale = static_cast<const float*>(c.options.out_scale.data);
  if (c.kind == NormKind::kLayer) {
    p.bias = c.bias && c.bias->defined() ? static_cast<const T*>(c.bias->data) : nullptr;
    return norm::launch_norm<norm::LayerNorm, T, TOut, false>(p, stream);
  }
  if (c.residual) {
    p.residual = static_cast<T*>(c.residual->data);
    p.residual_rows = row_index_of(*c.residual);
    return norm::launch_norm<norm::RmsNorm, T, TOut, true>(p, stream);
  }
  return norm::launch_norm<norm::RmsNorm, T, TOut, false>(p, stream);
}

Status run(const NormCall& c, cudaStream_t stream) {
  if (log_level() > 0) {
    log_call(c.op, stream,
             {log_arg("out", c.out), log_arg("input", c.input),
              log_arg("residual", c.residual ? *c.residual : TensorView{}),
              log_arg("weight", c.weight), log_arg("bias", c.bias ? *c.bias : TensorView{}),
              log_arg("eps", c.options.eps), log_arg("out_scale", c.options.out_scale)});
  }
  Status st = validate(c);
  if (!st.ok()) return log_error(c.op, st);
  cudaError_t err = cudaSuccess;
  dispatch_float(c.input.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    err = c.out.dtype == DType::kFloat8E4M3 ? launch<T, __nv_fp8_e4m3>(c, stream)
                                            : launch<T, T>(c, stream);
  });
  st = launch_status(c.op, err);
  if (!st.ok()) return log_error(c.op, st);
  if (log_level() >= 5) {
    log_outputs(
        c.op, stream,
        {log_arg("out", c.out), log_arg("residual", c.residual ? *c.residual : TensorView{})});
  }
  return st;
}

}  // namespace

Status rmsnorm(const TensorView& out, const TensorView& input, const TensorView& weight,
               const NormOptions& options, cudaStream_t stream) {
  return run({"rmsnorm", NormKind::kRms, out, input, nullptr, weight, nullptr, options}, stream);
}

Status fused_add_rmsnorm(const TensorView& out, const TensorView& input, const TensorView& residual,
                         const TensorView& weight, const NormOptions& options,
                         cudaStream_t stream) {
  return run({"fused_add_rmsnorm", NormKind::kRms, out, input, &residual, weight, nullptr, options},
             stream);
}

Status gemma_rmsnorm(const TensorView& out, const TensorView& input, const TensorView& weight,
                     const NormOptions& options, cudaStream_t stream) {
  return run({"gemma_rmsnorm", NormKind::kGemmaRms, out, input, nullptr, weight, nullptr, options},
             stream);
}

Status gemma_fused_add_rmsnorm(const TensorView& out, const TensorView& input,
                               const TensorView& residual, const TensorView& weight,
                               const NormOptions& options, cudaStream_t stream) {
  return run({"gemma_fused_add_rmsnorm", NormKind::kGemmaRms, out, input, &residual, weight,
              nullptr, options},
             stream);
}

Status layernorm(const TensorView& out, const TensorView& input, const TensorView& weight,
                 const TensorView& bias, const NormOptions& options, cudaStream_t stream) {
  return run({"layernorm", NormKind::kLayer, out, input, nullptr, weight, &bias, options}, stream);
}

}  // namespace flashserve
