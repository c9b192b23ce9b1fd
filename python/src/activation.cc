// Bindings of the gated activations (flashserve/activation.h).
#include "binding.h"

namespace flashserve::python {
namespace {

template <Status (*Fn)(const TensorView&, const TensorView&, cudaStream_t)>
void act_and_mul(const char* op, const Array& out, const Array& input, uintptr_t stream) {
  const TensorView o = device_view(op, "out", out);
  const TensorView i = device_view(op, "input", input);
  throw_if_error(Fn(o, i, to_stream(stream)));
}

void bind_activation(nb::module_& m) {
  m.def(
      "silu_and_mul",
      [](const Array& out, const Array& input, uintptr_t stream) {
        act_and_mul<&silu_and_mul>("silu_and_mul", out, input, stream);
      },
      nb::arg("out").noconvert(), nb::arg("input").noconvert(), nb::arg("stream"),
      "out = silu(input[..., :d]) * input[..., d:].");
  m.def(
      "gelu_and_mul",
      [](const Array& out, const Array& input, uintptr_t stream) {
        act_and_mul<&gelu_and_mul>("gelu_and_mul", out, input, stream);
      },
      nb::arg("out").noconvert(), nb::arg("input").noconvert(), nb::arg("stream"),
      "out = gelu(input[..., :d]) * input[..., d:] (erf form).");
  m.def(
      "gelu_tanh_and_mul",
      [](const Array& out, const Array& input, uintptr_t stream) {
        act_and_mul<&gelu_tanh_and_mul>("gelu_tanh_and_mul", out, input, stream);
      },
      nb::arg("out").noconvert(), nb::arg("input").noconvert(), nb::arg("stream"),
      "out = gelu_tanh(input[..., :d]) * input[..., d:].");
}

const Registration kActivation("activation", &bind_activation);

}  // namespace
}  // namespace flashserve::python
