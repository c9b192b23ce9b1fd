// Bindings of the normalization family (flashserve/norm.h).
#include "binding.h"

namespace flashserve::python {
namespace {

// The tensor arguments, converted in the order of the signature so that the first bad one is the
// one reported (function arguments are evaluated in an unspecified order).
struct Views {
  TensorView out, input, residual, weight;
  Views(const char* op, const Array& o, const Array& i, const Array& w, const Array* r = nullptr)
      : out(device_view(op, "out", o)),
        input(device_view(op, "input", i)),
        residual(r ? device_view(op, "residual", *r) : TensorView{}),
        weight(device_view(op, "weight", w)) {}
};

NormOptions options(const char* op, float eps, const Array& out_scale) {
  NormOptions o;
  o.eps = eps;
  o.out_scale = optional_device_view(op, "options.out_scale", out_scale);
  return o;
}

void bind_norm(nb::module_& m) {
  m.def(
      "rmsnorm",
      [](const Array& out, const Array& input, const Array& weight, float eps,
         const Array& out_scale, uintptr_t stream) {
        constexpr const char* op = "rmsnorm";
        const Views v(op, out, input, weight);
        throw_if_error(
            rmsnorm(v.out, v.input, v.weight, options(op, eps, out_scale), to_stream(stream)));
      },
      nb::arg("out").noconvert(), nb::arg("input").noconvert(), nb::arg("weight").noconvert(),
      nb::arg("eps"), nb::arg("out_scale").noconvert().none(), nb::arg("stream"),
      "out = input / sqrt(mean(input^2) + eps) * weight; out may be input.");
  m.def(
      "fused_add_rmsnorm",
      [](const Array& out, const Array& input, const Array& residual, const Array& weight,
         float eps, const Array& out_scale, uintptr_t stream) {
        constexpr const char* op = "fused_add_rmsnorm";
        const Views v(op, out, input, weight, &residual);
        throw_if_error(fused_add_rmsnorm(v.out, v.input, v.residual, v.weight,
                                         options(op, eps, out_scale), to_stream(stream)));
      },
      nb::arg("out").noconvert(), nb::arg("input").noconvert(), nb::arg("residual").noconvert(),
      nb::arg("weight").noconvert(), nb::arg("eps"), nb::arg("out_scale").noconvert().none(),
      nb::arg("stream"), "residual += input (in place); out = rmsnorm(residual) * weight.");
  m.def(
      "gemma_rmsnorm",
      [](const Array& out, const Array& input, const Array& weight, float eps,
         const Array& out_scale, uintptr_t stream) {
        constexpr const char* op = "gemma_rmsnorm";
        const Views v(op, out, input, weight);
        throw_if_error(gemma_rmsnorm(v.out, v.input, v.weight, options(op, eps, out_scale),
                                     to_stream(stream)));
      },
      nb::arg("out").noconvert(), nb::arg("input").noconvert(), nb::arg("weight").noconvert(),
      nb::arg("eps"), nb::arg("out_scale").noconvert().none(), nb::arg("stream"),
      "RMSNorm with the weight applied as (1 + weight).");
  m.def(
      "gemma_fused_add_rmsnorm",
      [](const Array& out, const Array& input, const Array& residual, const Array& weight,
         float eps, const Array& out_scale, uintptr_t stream) {
        constexpr const char* op = "gemma_fused_add_rmsnorm";
        const Views v(op, out, input, weight, &residual);
        throw_if_error(gemma_fused_add_rmsnorm(v.out, v.input, v.residual, v.weight,
                                               options(op, eps, out_scale), to_stream(stream)));
      },
      nb::arg("out").noconvert(), nb::arg("input").noconvert(), nb::arg("residual").noconvert(),
      nb::arg("weight").noconvert(), nb::arg("eps"), nb::arg("out_scale").noconvert().none(),
      nb::arg("stream"), "fused_add_rmsnorm with the weight applied as (1 + weight).");
  m.def(
      "layernorm",
      [](const Array& out, const Array& input, const Array& weight, const Array& bias, float eps,
         const Array& out_scale, uintptr_t stream) {
        constexpr const char* op = "layernorm";
        const Views v(op, out, input, weight);
        const TensorView b = optional_device_view(op, "bias", bias);
        throw_if_error(
            layernorm(v.out, v.input, v.weight, b, options(op, eps, out_scale), to_stream(stream)));
      },
      nb::arg("out").noconvert(), nb::arg("input").noconvert(), nb::arg("weight").noconvert(),
      nb::arg("bias").noconvert().none(), nb::arg("eps"), nb::arg("out_scale").noconvert().none(),
      nb::arg("stream"), "out = (input - mean) / sqrt(var + eps) * weight + bias.");
}

const Registration kNorm("norm", &bind_norm);

}  // namespace
}  // namespace flashserve::python
