#include "api/sampling_check.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "api/arg_check.h"
#include "api/common.h"

namespace flashserve {
namespace {

constexpr int64_t kMax32 = std::numeric_limits<int32_t>::max();
// Rows become clusters of up to 16 CTAs along gridDim.x (at most 2^31 - 1 blocks).
constexpr int64_t kMaxRows = kMax32 / 16;

// A 2-D [batch, vocab] input whose rows are what the kernels read.
void check_rows(ArgCheck& check, const TensorView& t, const char* name, bool float32_only) {
  check.arg(t, name).defined().ndim(2).inner_contiguous().nonnegative_strides().size_at_least(1, 1);
  if (float32_only) {
    check.dtype(DType::kFloat32);
  } else {
    check.float_dtype();
  }
  if (!check.ok()) return;
  check.require(
      t.shape[1] <= kMax32,
      std::string(name) + ": expected a vocabulary of at most 2^31-1, got " + str(t.shape[1]));
  check.require(t.shape[0] <= kMaxRows, std::string(name) + ": expected at most " + str(kMaxRows) +
                                            " rows, got " + str(t.shape[0]));
}

// An undefined 0-D view (the default) means "not given": the scalar is used instead.
bool given(const TensorView& t) {
  return t.defined() || t.ndim != 0;
}

void check_per_row(ArgCheck& check, const TensorView& t, const char* name, DType dtype,
                   int64_t batch) {
  if (!given(t)) return;
  check.arg(t, name).defined().ndim(1).size(0, batch, "batch").dtype(dtype).contiguous();
}

void check_scalar_seed(ArgCheck& check, const TensorView& t, const char* name) {
  if (!given(t)) return;
  check.arg(t, name).defined().dtype(DType::kInt64).numel(1);
  check.require(t.ndim <= 1,
                std::string(name) + ": expected a scalar ([] or [1]), got " + str(t.ndim) + "-D");
}

void check_ids(ArgCheck& check, const TensorView& ids, const char* name, int64_t batch) {
  check.arg(ids, name)
      .defined()
      .ndim(1)
      .size(0, batch, "batch")
      .dtype_in({DType::kInt32, DType::kInt64})
      .contiguous();
}

bool in_unit_interval(float v, bool open_left) {
  return (open_left ? v > 0.f : v >= 0.f) && v <= 1.f;
}

void check_top_k_arg(ArgCheck& check, const SamplingArgs& a, int64_t batch) {
  check_per_row(check, a.top_k, "args.top_k", DType::kInt32, batch);
}

void check_top_p_arg(ArgCheck& check, const SamplingArgs& a, int64_t batch) {
  check_per_row(check, a.top_p, "args.top_p", DType::kFloat32, batch);
  if (!a.top_p.defined()) {
    check.require(
        in_unit_interval(a.top_p_value, true),
        "args.top_p_value: expected a value in (0, 1], got " + format_float(a.top_p_value));
  }
}

}  // namespace

Status validate_sampling(const char* op, const TensorView& out_ids, const TensorView& input,
                         const SamplingArgs& args, SamplingInput kind) {
  ArgCheck check(op);
  const bool logits = kind == SamplingInput::kLogits;
  check_rows(check, input, logits ? "logits" : "probs", !logits);
  if (!check.ok()) return check.status();
  const int64_t batch = input.shape[0];
  check_ids(check, out_ids, "out_ids", batch);
  check.require(disjoint(out_ids, input),
                std::string("out_ids: must not overlap ") + (logits ? "logits" : "probs"));
  check_top_k_arg(check, args, batch);
  check_top_p_arg(check, args, batch);
  check_per_row(check, args.min_p, "args.min_p", DType::kFloat32, batch);
  if (!args.min_p.defined()) {
    check.require(
        in_unit_interval(args.min_p_value, false),
        "args.min_p_value: expected a value in [0, 1], got " + format_float(args.min_p_value));
  }
  if (logits) {
    check_per_row(check, args.temperature, "args.temperature", DType::kFloat32, batch);
    if (!args.temperature.defined()) {
      check.require(std::isfinite(args.temperature_value) && args.temperature_value >= 0.f,
                    "args.temperature_value: expected a finite value >= 0 (0: greedy), got " +
                        format_float(args.temperature_value));
    }
  }
  check.require(
      args.order == FilterOrder::kTopKFirst || args.order == FilterOrder::kJoint,
      "args.order: expected kTopKFirst or kJoint, got " + str(static_cast<int64_t>(args.order)));
  check_scalar_seed(check, args.seed, "args.seed");
  check_scalar_seed(check, args.offset, "args.offset");
  for (const TensorView* t :
       {&args.top_k, &args.top_p, &args.min_p, &args.temperature, &args.seed, &args.offset}) {
    check.require(disjoint(out_ids, *t), "out_ids: must not overlap a parameter tensor of args");
  }
  check.on_current_device();
  return check.status();
}

Status validate_renorm(const char* op, const TensorView& out, const TensorView& input,
                       const SamplingArgs& args, RenormKind kind) {
  ArgCheck check(op);
  const bool mask = kind == RenormKind::kTopKMaskLogits;
  const char* in_name = mask ? "logits" : "probs";
  check_rows(check, input, in_name, !mask);
  if (!check.ok()) return check.status();
  const int64_t batch = input.shape[0];
  check.arg(out, "out")
      .defined()
      .same_shape(input, in_name)
      .dtype(input.dtype)
      .inner_contiguous()
      .nonnegative_strides()
      .writable()
      .no_partial_alias(input, in_name);
  if (kind == RenormKind::kTopPProbs) {
    check_top_p_arg(check, args, batch);
    check.require(disjoint(out, args.top_p), "out: must not overlap args.top_p");
  } else {
    check_top_k_arg(check, args, batch);
    check.require(disjoint(out, args.top_k), "out: must not overlap args.top_k");
  }
  check.on_current_device();
  return check.status();
}

Status validate_top_k(const char* op, const TensorView& values, const TensorView& indices,
                      const TensorView& input, int k) {
  ArgCheck check(op);
  check_rows(check, input, "input", false);
  if (!check.ok()) return check.status();
  const int64_t batch = input.shape[0], vocab = input.shape[1];
  check.require(k >= 1 && k <= vocab,
                "k: expected 1 <= k <= " + str(vocab) + " (vocab), got " + str(k));
  if (!check.ok()) return check.status();
  check.arg(values, "values")
      .defined()
      .ndim(2)
      .size(0, batch, "batch")
      .size(1, k, "k")
      .dtype(input.dtype)
      .inner_contiguous()
      .nonnegative_strides()
      .writable();
  check.arg(indices, "indices")
      .defined()
      .ndim(2)
      .size(0, batch, "batch")
      .size(1, k, "k")
      .dtype_in({DType::kInt32, DType::kInt64})
      .inner_contiguous()
      .nonnegative_strides()
      .writable();
  check.require(disjoint(values, input), "values: must not overlap input");
  check.require(disjoint(indices, input), "indices: must not overlap input");
  check.require(disjoint(values, indices), "values: must not overlap indices");
  check.on_current_device();
  return check.status();
}

Status validate_speculative(const char* op, const ChainSpeculativeArgs& a) {
  ArgCheck check(op);
  check.arg(a.target_probs, "args.target_probs")
      .defined()
      .ndim(3)
      .dtype(DType::kFloat32)
      .inner_contiguous()
      .nonnegative_strides()
      .size_at_least(1, 1)
      .size_at_least(2, 1);
  if (!check.ok()) return check.status();
  const int64_t batch = a.target_probs.shape[0], n = a.target_probs.shape[1] - 1,
                vocab = a.target_probs.shape[2];
  check.require(vocab <= kMax32,
                "args.target_probs: expected a vocabulary of at most 2^31-1, got " + str(vocab));
  check.require(batch <= kMaxRows, "args.target_probs: expected at most " + str(kMaxRows) +
                                       " rows, got " + str(batch));
  check.require(n <= (int64_t{1} << 20),
                "args.target_probs: expected at most 2^20 + 1 positions, got " + str(n + 1));
  check.arg(a.draft_probs, "args.draft_probs")
      .defined()
      .ndim(3)
      .size(0, batch, "batch")
      .size(1, n, "n, one less than target_probs' positions")
      .size(2, vocab, "vocab")
      .dtype(DType::kFloat32)
      .inner_contiguous()
      .nonnegative_strides();
  check.arg(a.draft_token_ids, "args.draft_token_ids")
      .defined()
      .ndim(2)
      .size(0, batch, "batch")
      .size(1, n, "n")
      .dtype(DType::kInt32)
      .inner_contiguous()
      .nonnegative_strides();
  check.arg(a.output_token_ids, "args.output_token_ids")
      .defined()
      .ndim(2)
      .size(0, batch, "batch")
      .size(1, n + 1, "n + 1")
      .dtype_in({DType::kInt32, DType::kInt64})
      .inner_contiguous()
      .nonnegative_strides()
      .writable();
  check.arg(a.accepted_counts, "args.accepted_counts")
      .defined()
      .ndim(1)
      .size(0, batch, "batch")
      .dtype(DType::kInt32)
      .contiguous();
  check_scalar_seed(check, a.seed, "args.seed");
  check_scalar_seed(check, a.offset, "args.offset");
  for (const TensorView* in :
       {&a.target_probs, &a.draft_probs, &a.draft_token_ids, &a.seed, &a.offset}) {
    check.require(disjoint(a.output_token_ids, *in),
                  "args.output_token_ids: must not overlap the inputs");
    check.require(disjoint(a.accepted_counts, *in),
                  "args.accepted_counts: must not overlap the inputs");
  }
  check.require(disjoint(a.output_token_ids, a.accepted_counts),
                "args.output_token_ids: must not overlap args.accepted_counts");
  check.on_current_device();
  return check.status();
}

namespace {

bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return capture != cudaStreamCaptureStatusNone;
}

// Copies rows [batch, width] of a 2-D view (last dim contiguous) to the host, row by row.
template <class T>
Status copy_rows(const char* op, const char* name, const TensorView& t, std::vector<T>* out,
                 cudaStream_t stream) {
  const int64_t rows = t.ndim == 2 ? t.shape[0] : 1, width = t.shape[t.ndim - 1];
  const int64_t row_stride = t.ndim == 2 ? t.strides[0] : width;
  out->resize(static_cast<size_t>(rows * width));
  cudaError_t err = cudaSuccess;
  if (rows * width > 0) {
    if (row_stride >= width) {
      err = cudaMemcpy2DAsync(out->data(), width * sizeof(T), t.data, row_stride * sizeof(T),
                              width * sizeof(T), rows, cudaMemcpyDeviceToHost, stream);
    } else {  // overlapping rows (e.g. stride 0: one row read `rows` times)
      for (int64_t r = 0; r < rows && err == cudaSuccess; ++r) {
        err =
            cudaMemcpyAsync(out->data() + r * width, static_cast<const T*>(t.data) + r * row_stride,
                            width * sizeof(T), cudaMemcpyDeviceToHost, stream);
      }
    }
    if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    return Status(
        StatusCode::kCudaError,
        std::string(op) + ": " + name + ": debug check copy failed: " + cudaGetErrorString(err));
  }
  return Status();
}

Status check_param_values(const char* op, const TensorView& t, const char* name,
                          cudaStream_t stream, bool (*valid)(float), const char* expected) {
  if (!t.defined()) return Status();
  std::vector<float> host;
  Status st = copy_rows(op, name, t, &host, stream);
  if (!st.ok()) return st;
  for (size_t i = 0; i < host.size(); ++i) {
    if (!valid(host[i])) {
      return Status(StatusCode::kInvalidArgument,
                    std::string(op) + ": " + name + ": [" + std::to_string(i) +
                        "] = " + format_float(host[i]) + ", expected " + expected +
                        " (FLASHSERVE_DEBUG_CHECKS)");
    }
  }
  return Status();
}

}  // namespace

Status debug_check_sampling(const char* op, const TensorView* probs, const SamplingArgs& args,
                            cudaStream_t stream) {
  if (capturing(stream)) return Status();
  Status st = check_param_values(
      op, args.top_p, "args.top_p", stream, [](float v) { return v > 0.f && v <= 1.f; },
      "a value in (0, 1]");
  if (st.ok()) {
    st = check_param_values(
        op, args.min_p, "args.min_p", stream, [](float v) { return v >= 0.f && v <= 1.f; },
        "a value in [0, 1]");
  }
  if (st.ok()) {
    st = check_param_values(
        op, args.temperature, "args.temperature", stream,
        [](float v) { return std::isfinite(v) && v >= 0.f; }, "a finite value >= 0");
  }
  if (!st.ok() || probs == nullptr) return st;
  std::vector<float> host;
  st = copy_rows(op, "probs", *probs, &host, stream);
  if (!st.ok()) return st;
  const int64_t rows = probs->shape[0], vocab = probs->shape[1];
  for (int64_t r = 0; r < rows; ++r) {
    bool positive = false;
    for (int64_t c = 0; c < vocab; ++c) {
      const float v = host[static_cast<size_t>(r * vocab + c)];
      if (!(v >= 0.f) || !std::isfinite(v)) {
        return Status(StatusCode::kInvalidArgument,
                      std::string(op) + ": probs: row " + str(r) + " column " + str(c) + " is " +
                          format_float(v) +
                          ", expected a finite value >= 0 (FLASHSERVE_DEBUG_CHECKS)");
      }
      positive = positive || v > 0.f;
    }
    if (!positive) {
      return Status(StatusCode::kInvalidArgument,
                    std::string(op) + ": probs: row " + str(r) +
                        " has no positive probability (FLASHSERVE_DEBUG_CHECKS)");
    }
  }
  return Status();
}

Status debug_check_speculative(const char* op, const ChainSpeculativeArgs& args,
                               cudaStream_t stream) {
  if (capturing(stream) || args.draft_token_ids.numel() == 0) return Status();
  std::vector<int32_t> ids;
  Status st = copy_rows(op, "args.draft_token_ids", args.draft_token_ids, &ids, stream);
  if (!st.ok()) return st;
  const int64_t vocab = args.target_probs.shape[2], n = args.draft_token_ids.shape[1];
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return Status(StatusCode::kInvalidArgument, std::string(op) + ": args.draft_token_ids: [" +
                                                      str(i / n) + ", " + str(i % n) +
                                                      "] = " + str(ids[i]) + " is outside [0, " +
                                                      str(vocab) + ") (FLASHSERVE_DEBUG_CHECKS)");
    }
  }
  return Status();
}

}  // namespace flashserve
