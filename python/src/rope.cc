// Bindings of rotary position embedding (flashserve/rope.h).
#include <new>

#include "binding.h"

namespace flashserve::python {
namespace {

// Converted in signature order: the first bad argument is the one reported.
struct RopeViews {
  TensorView q_out, k_out, q, k, positions;
  RopeViews(const char* op, const Array& qo, const Array& ko, const Array& qi, const Array& ki,
            const Array& pos)
      : q_out(device_view(op, "q_out", qo)),
        k_out(device_view(op, "k_out", ko)),
        q(device_view(op, "q", qi)),
        k(device_view(op, "k", ki)),
        positions(device_view(op, "positions", pos)) {}
};

void bind_rope(nb::module_& m) {
  // Built once per configuration by the Python layer (cached), then passed to every call.
  nb::class_<RopeOptions>(m, "RopeOptions")
      .def(
          "__init__",
          [](RopeOptions* self, int rotary_dim, bool interleave, float theta, float scale,
             bool llama31, float factor, float low_freq_factor, float high_freq_factor,
             float original_max_position) {
            RopeOptions* o = new (self) RopeOptions();
            o->rotary_dim = rotary_dim;
            o->interleave = interleave;
            o->theta = theta;
            o->scale = scale;
            o->llama31 = llama31;
            o->llama31_scaling.factor = factor;
            o->llama31_scaling.low_freq_factor = low_freq_factor;
            o->llama31_scaling.high_freq_factor = high_freq_factor;
            o->llama31_scaling.original_max_position = original_max_position;
          },
          nb::kw_only(), nb::arg("rotary_dim") = 0, nb::arg("interleave") = false,
          nb::arg("theta") = 10000.f, nb::arg("scale") = 1.f, nb::arg("llama31") = false,
          nb::arg("llama31_factor") = 8.f, nb::arg("low_freq_factor") = 1.f,
          nb::arg("high_freq_factor") = 4.f, nb::arg("original_max_position") = 8192.f)
      .def_ro("rotary_dim", &RopeOptions::rotary_dim)
      .def_ro("interleave", &RopeOptions::interleave)
      .def_ro("theta", &RopeOptions::theta)
      .def_ro("scale", &RopeOptions::scale)
      .def_ro("llama31", &RopeOptions::llama31);

  m.def(
      "apply_rope",
      [](const Array& q_out, const Array& k_out, const Array& q, const Array& k,
         const Array& positions, const RopeOptions& options, uintptr_t stream) {
        constexpr const char* op = "apply_rope";
        const RopeViews v(op, q_out, k_out, q, k, positions);
        throw_if_error(
            apply_rope(v.q_out, v.k_out, v.q, v.k, v.positions, options, to_stream(stream)));
      },
      nb::arg("q_out").noconvert(), nb::arg("k_out").noconvert(), nb::arg("q").noconvert(),
      nb::arg("k").noconvert(), nb::arg("positions").noconvert(), nb::arg("options"),
      nb::arg("stream"),
      "Rotates q [tokens, q_heads, head_dim] and k [tokens, kv_heads, head_dim] by position; "
      "q_out / k_out may be q / k (in place).");
  m.def(
      "apply_rope_cos_sin_cache",
      [](const Array& q_out, const Array& k_out, const Array& q, const Array& k,
         const Array& positions, const Array& cos_sin_cache, const RopeOptions& options,
         uintptr_t stream) {
        constexpr const char* op = "apply_rope_cos_sin_cache";
        const RopeViews v(op, q_out, k_out, q, k, positions);
        const TensorView cache = device_view(op, "cos_sin_cache", cos_sin_cache);
        throw_if_error(apply_rope_cos_sin_cache(v.q_out, v.k_out, v.q, v.k, v.positions, cache,
                                                options, to_stream(stream)));
      },
      nb::arg("q_out").noconvert(), nb::arg("k_out").noconvert(), nb::arg("q").noconvert(),
      nb::arg("k").noconvert(), nb::arg("positions").noconvert(),
      nb::arg("cos_sin_cache").noconvert(), nb::arg("options"), nb::arg("stream"),
      "The same rotation with angles from a [max_position, rotary_dim] cos|sin cache.");
}

const Registration kRope("rope", &bind_rope);

}  // namespace
}  // namespace flashserve::python
