// Public entry points of the gated activations: validate, log, dispatch, launch.
#include <limits>
#include <string>

#include "api/arg_check.h"
#include "api/common.h"
#include "flashserve/activation.h"
#include "flashserve/activation/act_and_mul_kernel.cuh"
#include "flashserve/core/dispatch.h"
#include "runtime/logging.h"

namespace flashserve {
namespace {

bool known(Activation act) {
  return act == Activation::kSilu || act == Activation::kGelu || act == Activation::kGeluTanh;
}

Status validate(const char* op, const TensorView& out, const TensorView& input, Activation act) {
  ArgCheck check(op);
  check.require(known(act), [&] {
    return "act: expected one of {silu, gelu, gelu_tanh}, got value " +
           std::to_string(static_cast<int>(act));
  });
  check.arg(input, "input");
  check.defined();
  check.ndim_in(2, 3).float_dtype().inner_contiguous().nonnegative_strides();
  if (!check.ok()) return check.status();
  const int64_t width = input.size(-1);
  check.require(width % 2 == 0 && width >= 2, [&] {
    return "input: expected an even last dim 2d >= 2 (activated half, then gate), got " +
           std::to_string(width);
  });
  check.require(width <= std::numeric_limits<int32_t>::max(),
                [&] { return "input: last dim too large: " + std::to_string(width); });
  check.arg(out, "out");
  check.defined();
  check.ndim(input.ndim).dtype(input.dtype).inner_contiguous().nonnegative_strides().writable();
  if (!check.ok()) return check.status();
  for (int d = 0; d + 1 < input.ndim; ++d) {
    check.size(d, input.shape[d], "the leading dims of input");
  }
  check.size(-1, width / 2, "d, half of input's last dim");
  check.require(disjoint(out, input), "out: must not overlap input");
  check.require(rows_of(input) <= std::numeric_limits<int32_t>::max(), [&] {
    return "input: expected at most 2^31-1 rows, got " + std::to_string(rows_of(input));
  });
  check.on_current_device();
  return check.status();
}

template <class T>
cudaError_t launch(const TensorView& out, const TensorView& input, Activation act,
                   cudaStream_t stream) {
  activation::ActParams<T> p;
  p.input = static_cast<const T*>(input.data);
  p.input_rows = row_index_of(input);
  p.out = static_cast<T*>(out.data);
  p.out_rows = row_index_of(out);
  p.rows = rows_of(input);
  p.d = static_cast<int>(input.size(-1) / 2);
  switch (act) {
    case Activation::kSilu:
      return activation::launch_act_and_mul<activation::Silu>(p, stream);
    case Activation::kGelu:
      return activation::launch_act_and_mul<activation::Gelu>(p, stream);
    case Activation::kGeluTanh:
      return activation::launch_act_and_mul<activation::GeluTanh>(p, stream);
  }
  return cudaErrorInvalidValue;  // unreachable: validate() rejects unknown activations
}

Status run(const char* op, const TensorView& out, const TensorView& input, Activation act,
           cudaStream_t stream) {
  if (log_level() > 0) {
    log_call(op, stream,
             {log_arg("out", out), log_arg("input", input), log_arg("act", activation_name(act))});
  }
  Status st = validate(op, out, input, act);
  if (!st.ok()) return log_error(op, st);
  cudaError_t err = cudaSuccess;
  dispatch_float(input.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    err = launch<T>(out, input, act, stream);
  });
  st = launch_status(op, err);
  if (!st.ok()) return log_error(op, st);
  if (log_level() >= 5) log_outputs(op, stream, {log_arg("out", out)});
  return st;
}

}  // namespace

const char* activation_name(Activation act) {
  switch (act) {
    case Activation::kSilu:
      return "silu";
    case Activation::kGelu:
      return "gelu";
    case Activation::kGeluTanh:
      return "gelu_tanh";
  }
  return "unknown";
}

Status act_and_mul(const TensorView& out, const TensorView& input, Activation act,
                   cudaStream_t stream) {
  return run("act_and_mul", out, input, act, stream);
}

Status silu_and_mul(const TensorView& out, const TensorView& input, cudaStream_t stream) {
  return run("silu_and_mul", out, input, Activation::kSilu, stream);
}

Status gelu_and_mul(const TensorView& out, const TensorView& input, cudaStream_t stream) {
  return run("gelu_and_mul", out, input, Activation::kGelu, stream);
}

Status gelu_tanh_and_mul(const TensorView& out, const TensorView& input, cudaStream_t stream) {
  return run("gelu_tanh_and_mul", out, input, Activation::kGeluTanh, stream);
}

}  // namespace flashserve
