// Bindings of the sampling family (flashserve/sampling.h).
//
// SamplingArgs crosses as flat arguments: each filter parameter is an optional per-row device
// tensor followed by the scalar used when it is None, then the filter order, then the Philox seed
// and offset (optional int64 device scalars, each followed by its host value). The names in error
// messages are the C++ API's ("args.top_k", "args.seed", ...).
#include <cstdint>

#include "binding.h"
#include "flashserve/sampling.h"

namespace flashserve::python {
namespace {

// The filter parameters of SamplingArgs, converted in the order of its fields so that the first
// bad argument is the one reported. `temperature` is null for the probability entry points, which
// do not use it.
SamplingArgs filter_args(const char* op, const Array& top_k, int top_k_value, const Array& top_p,
                         float top_p_value, const Array& min_p, float min_p_value,
                         const Array* temperature, float temperature_value, FilterOrder order,
                         const Array& seed, const Array& offset, uint64_t seed_value,
                         uint64_t offset_value) {
  SamplingArgs a;
  a.top_k = optional_device_view(op, "args.top_k", top_k);
  a.top_k_value = top_k_value;
  a.top_p = optional_device_view(op, "args.top_p", top_p);
  a.top_p_value = top_p_value;
  a.min_p = optional_device_view(op, "args.min_p", min_p);
  a.min_p_value = min_p_value;
  if (temperature != nullptr) {
    a.temperature = optional_device_view(op, "args.temperature", *temperature);
    a.temperature_value = temperature_value;
  }
  a.order = order;
  a.seed = optional_device_view(op, "args.seed", seed);
  a.offset = optional_device_view(op, "args.offset", offset);
  a.seed_value = seed_value;
  a.offset_value = offset_value;
  return a;
}

// A SamplingArgs holding only top-k (top_k_renorm_probs, top_k_mask_logits).
SamplingArgs top_k_args(const char* op, const Array& top_k, int top_k_value) {
  SamplingArgs a;
  a.top_k = optional_device_view(op, "args.top_k", top_k);
  a.top_k_value = top_k_value;
  return a;
}

void bind_sampling(nb::module_& m) {
  nb::enum_<FilterOrder>(m, "FilterOrder", "The order of the top-k and top-p filters.")
      .value("top_k_first", FilterOrder::kTopKFirst)
      .value("joint", FilterOrder::kJoint);

  m.def(
      "sample_from_logits",
      [](const Array& out_ids, const Array& logits, const Array& top_k, int top_k_value,
         const Array& top_p, float top_p_value, const Array& min_p, float min_p_value,
         const Array& temperature, float temperature_value, FilterOrder order, const Array& seed,
         const Array& offset, uint64_t seed_value, uint64_t offset_value, uintptr_t stream) {
        constexpr const char* op = "sample_from_logits";
        const TensorView ids = device_view(op, "out_ids", out_ids);
        const TensorView in = device_view(op, "logits", logits);
        const SamplingArgs a = filter_args(op, top_k, top_k_value, top_p, top_p_value, min_p,
                                           min_p_value, &temperature, temperature_value, order,
                                           seed, offset, seed_value, offset_value);
        throw_if_error(sample_from_logits(ids, in, a, to_stream(stream)));
      },
      nb::arg("out_ids").noconvert(), nb::arg("logits").noconvert(),
      nb::arg("top_k").noconvert().none(), nb::arg("top_k_value"),
      nb::arg("top_p").noconvert().none(), nb::arg("top_p_value"),
      nb::arg("min_p").noconvert().none(), nb::arg("min_p_value"),
      nb::arg("temperature").noconvert().none(), nb::arg("temperature_value"), nb::arg("order"),
      nb::arg("seed").noconvert().none(), nb::arg("offset").noconvert().none(),
      nb::arg("seed_value"), nb::arg("offset_value"), nb::arg("stream"),
      "One token id per row (out_ids [batch] int32 / int64) from softmax(logits / temperature), "
      "logits [batch, vocab] fp32 / fp16 / bf16 (last dim contiguous, row stride free). "
      "temperature: float32 [batch] device tensor, or None and temperature_value >= 0 (0: greedy). "
      "Filters, order, seed and offset as in sample_from_probs (computed on the fp32 "
      "probabilities).");
  m.def(
      "sample_from_probs",
      [](const Array& out_ids, const Array& probs, const Array& top_k, int top_k_value,
         const Array& top_p, float top_p_value, const Array& min_p, float min_p_value,
         FilterOrder order, const Array& seed, const Array& offset, uint64_t seed_value,
         uint64_t offset_value, uintptr_t stream) {
        constexpr const char* op = "sample_from_probs";
        const TensorView ids = device_view(op, "out_ids", out_ids);
        const TensorView in = device_view(op, "probs", probs);
        const SamplingArgs a =
            filter_args(op, top_k, top_k_value, top_p, top_p_value, min_p, min_p_value, nullptr,
                        1.f, order, seed, offset, seed_value, offset_value);
        throw_if_error(sample_from_probs(ids, in, a, to_stream(stream)));
      },
      nb::arg("out_ids").noconvert(), nb::arg("probs").noconvert(),
      nb::arg("top_k").noconvert().none(), nb::arg("top_k_value"),
      nb::arg("top_p").noconvert().none(), nb::arg("top_p_value"),
      nb::arg("min_p").noconvert().none(), nb::arg("min_p_value"), nb::arg("order"),
      nb::arg("seed").noconvert().none(), nb::arg("offset").noconvert().none(),
      nb::arg("seed_value"), nb::arg("offset_value"), nb::arg("stream"),
      "One token id per row (out_ids [batch] int32 / int64) from probs [batch, vocab] float32 "
      "(need not sum to 1: only ratios matter; last dim contiguous, row stride free). Filters, "
      "each a per-row device tensor [batch] or, when None, the scalar after it: top_k (int32; <= 0 "
      "or >= vocab: none), top_p (float32; scalar in (0, 1]), min_p (float32; scalar in [0, 1]). "
      "order: FilterOrder.top_k_first (top-p over the top-k set renormalized) or FilterOrder.joint "
      "(top-p over the whole row, then top-k). seed / offset: the Philox key and counter offset, "
      "int64 device scalars ([] or [1]; read when the kernel runs, so a CUDA graph draws new ids "
      "after the offset is bumped in device memory) or, when None, seed_value / offset_value. The "
      "same seed, offset and input give the same ids; bump the offset by 1 per call.");
  m.def(
      "top_k_renorm_probs",
      [](const Array& out, const Array& probs, const Array& top_k, int top_k_value,
         uintptr_t stream) {
        constexpr const char* op = "top_k_renorm_probs";
        const TensorView o = device_view(op, "out", out);
        const TensorView in = device_view(op, "probs", probs);
        throw_if_error(
            top_k_renorm_probs(o, in, top_k_args(op, top_k, top_k_value), to_stream(stream)));
      },
      nb::arg("out").noconvert(), nb::arg("probs").noconvert(), nb::arg("top_k").noconvert().none(),
      nb::arg("top_k_value"), nb::arg("stream"),
      "out = probs (float32 [batch, vocab]) restricted to the top-k set (ties kept) and divided by "
      "its sum, 0 elsewhere; out may be probs. top_k: int32 [batch] device tensor, or None and "
      "top_k_value (<= 0 or >= vocab: no filter).");
  m.def(
      "top_p_renorm_probs",
      [](const Array& out, const Array& probs, const Array& top_p, float top_p_value,
         uintptr_t stream) {
        constexpr const char* op = "top_p_renorm_probs";
        const TensorView o = device_view(op, "out", out);
        const TensorView in = device_view(op, "probs", probs);
        SamplingArgs a;
        a.top_p = optional_device_view(op, "args.top_p", top_p);
        a.top_p_value = top_p_value;
        throw_if_error(top_p_renorm_probs(o, in, a, to_stream(stream)));
      },
      nb::arg("out").noconvert(), nb::arg("probs").noconvert(), nb::arg("top_p").noconvert().none(),
      nb::arg("top_p_value"), nb::arg("stream"),
      "out = probs (float32 [batch, vocab]) restricted to the top-p set (the smallest set of most "
      "likely tokens whose mass reaches top_p) and divided by its sum, 0 elsewhere; out may be "
      "probs. top_p: float32 [batch] device tensor, or None and top_p_value in (0, 1].");
  m.def(
      "top_k_mask_logits",
      [](const Array& out, const Array& logits, const Array& top_k, int top_k_value,
         uintptr_t stream) {
        constexpr const char* op = "top_k_mask_logits";
        const TensorView o = device_view(op, "out", out);
        const TensorView in = device_view(op, "logits", logits);
        throw_if_error(
            top_k_mask_logits(o, in, top_k_args(op, top_k, top_k_value), to_stream(stream)));
      },
      nb::arg("out").noconvert(), nb::arg("logits").noconvert(),
      nb::arg("top_k").noconvert().none(), nb::arg("top_k_value"), nb::arg("stream"),
      "out = logits where the logit is >= the row's k-th largest, -inf elsewhere (fp32 / fp16 / "
      "bf16 [batch, vocab], same dtype); out may be logits. top_k: int32 [batch] device tensor, or "
      "None and top_k_value (<= 0 or >= vocab: no mask).");
  m.def(
      "top_k",
      [](const Array& values, const Array& indices, const Array& input, int k, uintptr_t stream) {
        constexpr const char* op = "top_k";
        const TensorView v = device_view(op, "values", values);
        const TensorView i = device_view(op, "indices", indices);
        const TensorView in = device_view(op, "input", input);
        throw_if_error(top_k(v, i, in, k, to_stream(stream)));
      },
      nb::arg("values").noconvert(), nb::arg("indices").noconvert(), nb::arg("input").noconvert(),
      nb::arg("k"), nb::arg("stream"),
      "The k largest elements of each row of input (fp32 / fp16 / bf16 [batch, vocab]), exactly: "
      "values [batch, k] (input dtype) and indices [batch, k] (int32 / int64) in ascending index "
      "order; ties with the k-th value go to the lowest indices; 1 <= k <= vocab.");
  m.def(
      "chain_speculative_sampling",
      [](const Array& draft_token_ids, const Array& draft_probs, const Array& target_probs,
         const Array& output_token_ids, const Array& accepted_counts, const Array& seed,
         const Array& offset, uint64_t seed_value, uint64_t offset_value, uintptr_t stream) {
        constexpr const char* op = "chain_speculative_sampling";
        ChainSpeculativeArgs a;
        a.draft_token_ids = device_view(op, "args.draft_token_ids", draft_token_ids);
        a.draft_probs = device_view(op, "args.draft_probs", draft_probs);
        a.target_probs = device_view(op, "args.target_probs", target_probs);
        a.output_token_ids = device_view(op, "args.output_token_ids", output_token_ids);
        a.accepted_counts = device_view(op, "args.accepted_counts", accepted_counts);
        a.seed = optional_device_view(op, "args.seed", seed);
        a.offset = optional_device_view(op, "args.offset", offset);
        a.seed_value = seed_value;
        a.offset_value = offset_value;
        throw_if_error(chain_speculative_sampling(a, to_stream(stream)));
      },
      nb::arg("draft_token_ids").noconvert(), nb::arg("draft_probs").noconvert(),
      nb::arg("target_probs").noconvert(), nb::arg("output_token_ids").noconvert(),
      nb::arg("accepted_counts").noconvert(), nb::arg("seed").noconvert().none(),
      nb::arg("offset").noconvert().none(), nb::arg("seed_value"), nb::arg("offset_value"),
      nb::arg("stream"),
      "Verifies draft_token_ids (int32 [batch, n]) drawn from draft_probs (float32 [batch, n, "
      "vocab]) against target_probs (float32 [batch, n + 1, vocab]): writes output_token_ids "
      "(int32 / int64 [batch, n + 1]: the accepted drafts, one more token, then -1) and "
      "accepted_counts (int32 [batch]: drafts accepted). seed / offset as in sample_from_probs.");
}

const Registration kSampling("sampling", &bind_sampling);

}  // namespace
}  // namespace flashserve::python
