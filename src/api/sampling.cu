// Public entry points of the sampling family: validate, log, plan the cluster layout, launch.
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "api/common.h"
#include "api/sampling_check.h"
#include "flashserve/core/dispatch.h"
#include "flashserve/runtime.h"
#include "flashserve/sampling.h"
#include "flashserve/sampling/speculative_kernel.cuh"
#include "flashserve/sampling/top_k_kernel.cuh"
#include "flashserve/sampling/top_k_top_p_kernel.cuh"
#include "runtime/logging.h"

namespace flashserve {
namespace {

using sampling::DeviceLimits;
using sampling::SamplingTile;

Status device_limits(const char* op, DeviceLimits* dev) {
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return Status(StatusCode::kNoDevice,
                  std::string(op) + ": no usable CUDA device (" + cudaGetErrorString(err) + ")");
  }
  DeviceInfo info;
  Status st = get_device_info(device, &info);
  if (!st.ok()) return Status(st.code(), std::string(op) + ": " + st.message());
  dev->num_sms = info.sm_count;
  dev->smem_optin = info.max_smem_per_block_optin;
  return Status();
}

template <class T>
sampling::RowParam<T> row_param(const TensorView& t, T value) {
  sampling::RowParam<T> p;
  p.per_row = t.defined() ? static_cast<const T*>(t.data) : nullptr;
  p.value = value;
  return p;
}

sampling::SeedParams seed_params(const TensorView& seed, const TensorView& offset,
                                 uint64_t seed_value, uint64_t offset_value) {
  sampling::SeedParams s;
  s.seed_ptr = seed.defined() ? static_cast<const int64_t*>(seed.data) : nullptr;
  s.offset_ptr = offset.defined() ? static_cast<const int64_t*>(offset.data) : nullptr;
  s.seed = seed_value;
  s.offset = offset_value;
  return s;
}

// FLASHSERVE_SAMPLING_LAYOUT=stream | resident forces the layout of sampling calls (tests and
// experiments; read on every call); unset or anything else: the tile policy's choice.
enum class SamplingLayout { kAuto, kStream, kResident };

SamplingLayout sampling_layout() {
  const char* v = std::getenv("FLASHSERVE_SAMPLING_LAYOUT");
  if (v == nullptr) return SamplingLayout::kAuto;
  if (std::strcmp(v, "stream") == 0) return SamplingLayout::kStream;
  if (std::strcmp(v, "resident") == 0) return SamplingLayout::kResident;
  return SamplingLayout::kAuto;
}

// Every CTA's slice of every row starts 16-byte aligned (tile chunks are multiples of 8).
bool rows_aligned(const TensorView& t) {
  const int64_t esize = dtype_size(t.dtype);
  return vec_aligned(t.data, 1, 16) && (t.shape[0] <= 1 || (t.strides[0] * esize) % 16 == 0);
}

int64_t row_stride(const TensorView& t) {
  return t.shape[0] <= 1 ? 0 : t.strides[0];
}

// Sampling (out_ids set) or renormalization (renorm set) through the filter kernel.
struct FilterCall {
  const char* op;
  bool logits;
  const TensorView& input;
  const TensorView* out_ids;
  const TensorView* renorm;
  SamplingArgs args;  // a copy: renormalization clears the filters it does not apply
};

template <class T, bool kLogits>
cudaError_t launch_filter_call(const FilterCall& c, const DeviceLimits& dev, cudaStream_t stream) {
  sampling::FilterParams<T> p;
  p.input = static_cast<const T*>(c.input.data);
  p.input_stride = row_stride(c.input);
  p.rows = c.input.shape[0];
  p.vocab = static_cast<int>(c.input.shape[1]);
  p.vec_loads = rows_aligned(c.input);
  p.top_k = row_param<int32_t>(c.args.top_k, c.args.top_k_value);
  p.top_p = row_param<float>(c.args.top_p, c.args.top_p_value);
  p.min_p = row_param<float>(c.args.min_p, c.args.min_p_value);
  p.temperature = row_param<float>(c.args.temperature, c.args.temperature_value);
  p.top_k_first = c.args.order == FilterOrder::kTopKFirst;
  p.seed = seed_params(c.args.seed, c.args.offset, c.args.seed_value, c.args.offset_value);
  if (c.out_ids != nullptr) {
    p.out_ids = c.out_ids->data;
    p.ids_int64 = c.out_ids->dtype == DType::kInt64;
  } else {
    p.renorm_out = static_cast<float*>(c.renorm->data);
    p.renorm_stride = row_stride(*c.renorm);
  }
  SamplingTile tile;
  cudaError_t err = sampling::plan_filter<T, kLogits>(p.rows, p.vocab, dev, &tile);
  if (err != cudaSuccess) return err;
  const SamplingTile resident = tile;  // a streamed call's resume launch
  if (c.out_ids != nullptr && tile.resident) {
    const SamplingLayout layout = sampling_layout();
    // Streaming decides top-p rounds from its histograms; a filter whose first candidates are
    // mostly rejected (min-p) would read the rows twice, and top-k takes the threshold path.
    const bool only_top_p = kLogits && p.top_k.per_row == nullptr &&
                            !sampling::filters_top_k(p.top_k.value, p.vocab) &&
                            p.min_p.per_row == nullptr && !(p.min_p.value > 0.f);
    const bool plain = only_top_p && p.top_p.per_row == nullptr && !(p.top_p.value < 1.f);
    if (layout == SamplingLayout::kStream ||
        (layout == SamplingLayout::kAuto && only_top_p &&
         sampling::prefer_stream(p.rows, p.vocab, dev.num_sms, tile, plain))) {
      err = sampling::plan_filter_stream<T, kLogits>(p.rows, p.vocab, dev, &tile);
      if (err != cudaSuccess) return err;
    }
  }
  p.chunk = tile.chunk;
  return sampling::launch_filter<T, kLogits>(p, tile, dev, stream,
                                             resident.resident ? &resident : nullptr);
}

Status run_filter(const FilterCall& c, const Status& validation, cudaStream_t stream) {
  if (!validation.ok()) return log_error(c.op, validation);
  Status st;
  if (debug_checks()) {
    st = debug_check_sampling(c.op, c.logits ? nullptr : &c.input, c.args, stream);
    if (!st.ok()) return log_error(c.op, st);
  }
  if (c.input.shape[0] == 0) return Status();
  DeviceLimits dev;
  st = device_limits(c.op, &dev);
  if (!st.ok()) return log_error(c.op, st);
  cudaError_t err = cudaSuccess;
  if (c.logits) {
    dispatch_float(c.input.dtype, [&](auto tag) {
      using T = typename decltype(tag)::type;
      err = launch_filter_call<T, true>(c, dev, stream);
    });
  } else {
    err = launch_filter_call<float, false>(c, dev, stream);
  }
  st = launch_status(c.op, err);
  if (!st.ok()) return log_error(c.op, st);
  if (log_level() >= 5) {
    log_outputs(c.op, stream, {log_arg("out", c.out_ids != nullptr ? *c.out_ids : *c.renorm)});
  }
  return st;
}

void log_filter_call(const char* op, const TensorView& out, const char* out_name,
                     const TensorView& input, const char* in_name, const SamplingArgs& a,
                     cudaStream_t stream) {
  if (log_level() <= 0) return;
  log_call(op, stream,
           {log_arg(out_name, out), log_arg(in_name, input), log_arg("top_k", a.top_k),
            log_arg("top_k_value", a.top_k_value), log_arg("top_p", a.top_p),
            log_arg("top_p_value", a.top_p_value), log_arg("min_p", a.min_p),
            log_arg("min_p_value", a.min_p_value), log_arg("temperature", a.temperature),
            log_arg("temperature_value", a.temperature_value),
            log_arg("order", a.order == FilterOrder::kTopKFirst ? "top_k_first" : "joint"),
            log_arg("seed", a.seed), log_arg("offset", a.offset),
            log_arg("seed_value", static_cast<int64_t>(a.seed_value)),
            log_arg("offset_value", static_cast<int64_t>(a.offset_value))});
}

}  // namespace

Status sample_from_logits(const TensorView& out_ids, const TensorView& logits,
                          const SamplingArgs& args, cudaStream_t stream) {
  const char* op = "sample_from_logits";
  log_filter_call(op, out_ids, "out_ids", logits, "logits", args, stream);
  return run_filter({op, true, logits, &out_ids, nullptr, args},
                    validate_sampling(op, out_ids, logits, args, SamplingInput::kLogits), stream);
}

Status sample_from_probs(const TensorView& out_ids, const TensorView& probs,
                         const SamplingArgs& args, cudaStream_t stream) {
  const char* op = "sample_from_probs";
  log_filter_call(op, out_ids, "out_ids", probs, "probs", args, stream);
  SamplingArgs a = args;
  a.temperature = TensorView{};
  a.temperature_value = 1.f;
  return run_filter({op, false, probs, &out_ids, nullptr, a},
                    validate_sampling(op, out_ids, probs, args, SamplingInput::kProbs), stream);
}

namespace {

// A SamplingArgs holding only the one filter a renormalization applies.
SamplingArgs only_top_k(const SamplingArgs& in) {
  SamplingArgs a;
  a.top_k = in.top_k;
  a.top_k_value = in.top_k_value;
  return a;
}
SamplingArgs only_top_p(const SamplingArgs& in) {
  SamplingArgs a;
  a.top_p = in.top_p;
  a.top_p_value = in.top_p_value;
  return a;
}

}  // namespace

Status top_k_renorm_probs(const TensorView& out, const TensorView& probs, const SamplingArgs& args,
                          cudaStream_t stream) {
  const char* op = "top_k_renorm_probs";
  log_filter_call(op, out, "out", probs, "probs", args, stream);
  return run_filter({op, false, probs, nullptr, &out, only_top_k(args)},
                    validate_renorm(op, out, probs, args, RenormKind::kTopKProbs), stream);
}

Status top_p_renorm_probs(const TensorView& out, const TensorView& probs, const SamplingArgs& args,
                          cudaStream_t stream) {
  const char* op = "top_p_renorm_probs";
  log_filter_call(op, out, "out", probs, "probs", args, stream);
  return run_filter({op, false, probs, nullptr, &out, only_top_p(args)},
                    validate_renorm(op, out, probs, args, RenormKind::kTopPProbs), stream);
}

namespace {

template <class T>
cudaError_t launch_top_k_call(const TensorView& input, const sampling::RowParam<int32_t>& k,
                              const TensorView* values, const TensorView* indices,
                              const TensorView* masked, const DeviceLimits& dev,
                              cudaStream_t stream) {
  sampling::TopKParams<T> p;
  p.input = static_cast<const T*>(input.data);
  p.input_stride = row_stride(input);
  p.rows = input.shape[0];
  p.vocab = static_cast<int>(input.shape[1]);
  p.vec_loads = rows_aligned(input);
  p.top_k = k;
  if (masked != nullptr) {
    p.masked = static_cast<T*>(masked->data);
    p.masked_stride = row_stride(*masked);
  } else {
    p.values = static_cast<T*>(values->data);
    p.values_stride = values->shape[0] <= 1 ? 0 : values->strides[0];
    p.indices = indices->data;
    p.indices_stride = indices->shape[0] <= 1 ? 0 : indices->strides[0];
    p.indices_int64 = indices->dtype == DType::kInt64;
  }
  SamplingTile tile;
  cudaError_t err = sampling::plan_top_k<T>(p.rows, p.vocab, dev, &tile);
  if (err != cudaSuccess) return err;
  p.chunk = tile.chunk;
  return sampling::launch_top_k<T>(p, tile, dev, stream);
}

Status run_top_k(const char* op, const TensorView& input, const sampling::RowParam<int32_t>& k,
                 const TensorView* values, const TensorView* indices, const TensorView* masked,
                 const Status& validation, cudaStream_t stream) {
  if (!validation.ok()) return log_error(op, validation);
  if (input.shape[0] == 0) return Status();
  DeviceLimits dev;
  Status st = device_limits(op, &dev);
  if (!st.ok()) return log_error(op, st);
  cudaError_t err = cudaSuccess;
  dispatch_float(input.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    err = launch_top_k_call<T>(input, k, values, indices, masked, dev, stream);
  });
  st = launch_status(op, err);
  if (!st.ok()) return log_error(op, st);
  if (log_level() >= 5) {
    log_outputs(op, stream,
                {log_arg("out", masked != nullptr ? *masked : *values),
                 log_arg("indices", indices != nullptr ? *indices : TensorView{})});
  }
  return st;
}

}  // namespace

Status top_k_mask_logits(const TensorView& out, const TensorView& logits, const SamplingArgs& args,
                         cudaStream_t stream) {
  const char* op = "top_k_mask_logits";
  if (log_level() > 0) {
    log_call(op, stream,
             {log_arg("out", out), log_arg("logits", logits), log_arg("top_k", args.top_k),
              log_arg("top_k_value", args.top_k_value)});
  }
  return run_top_k(op, logits, row_param<int32_t>(args.top_k, args.top_k_value), nullptr, nullptr,
                   &out, validate_renorm(op, out, logits, args, RenormKind::kTopKMaskLogits),
                   stream);
}

Status top_k(const TensorView& values, const TensorView& indices, const TensorView& input, int k,
             cudaStream_t stream) {
  const char* op = "top_k";
  if (log_level() > 0) {
    log_call(op, stream,
             {log_arg("values", values), log_arg("indices", indices), log_arg("input", input),
              log_arg("k", k)});
  }
  return run_top_k(op, input, row_param<int32_t>(TensorView{}, k), &values, &indices, nullptr,
                   validate_top_k(op, values, indices, input, k), stream);
}

Status chain_speculative_sampling(const ChainSpeculativeArgs& a, cudaStream_t stream) {
  const char* op = "chain_speculative_sampling";
  if (log_level() > 0) {
    log_call(
        op, stream,
        {log_arg("draft_token_ids", a.draft_token_ids), log_arg("draft_probs", a.draft_probs),
         log_arg("target_probs", a.target_probs), log_arg("output_token_ids", a.output_token_ids),
         log_arg("accepted_counts", a.accepted_counts), log_arg("seed", a.seed),
         log_arg("offset", a.offset), log_arg("seed_value", static_cast<int64_t>(a.seed_value)),
         log_arg("offset_value", static_cast<int64_t>(a.offset_value))});
  }
  Status st = validate_speculative(op, a);
  if (!st.ok()) return log_error(op, st);
  if (debug_checks()) {
    st = debug_check_speculative(op, a, stream);
    if (!st.ok()) return log_error(op, st);
  }
  const int64_t batch = a.target_probs.shape[0];
  if (batch == 0) return Status();
  DeviceLimits dev;
  st = device_limits(op, &dev);
  if (!st.ok()) return log_error(op, st);
  sampling::SpeculativeParams p;
  p.draft_ids = static_cast<const int32_t*>(a.draft_token_ids.data);
  p.draft_ids_stride = a.draft_token_ids.strides[0];
  p.draft_probs = static_cast<const float*>(a.draft_probs.data);
  p.draft_stride_row = a.draft_probs.strides[0];
  p.draft_stride_pos = a.draft_probs.strides[1];
  p.target_probs = static_cast<const float*>(a.target_probs.data);
  p.target_stride_row = a.target_probs.strides[0];
  p.target_stride_pos = a.target_probs.strides[1];
  p.out_ids = a.output_token_ids.data;
  p.out_stride = a.output_token_ids.strides[0];
  p.out_int64 = a.output_token_ids.dtype == DType::kInt64;
  p.accepted = static_cast<int32_t*>(a.accepted_counts.data);
  p.rows = batch;
  p.num_draft = static_cast<int>(a.target_probs.shape[1] - 1);
  p.vocab = static_cast<int>(a.target_probs.shape[2]);
  p.seed = seed_params(a.seed, a.offset, a.seed_value, a.offset_value);
  SamplingTile tile;
  cudaError_t err = sampling::plan_speculative(batch, p.vocab, dev, &tile);
  if (err == cudaSuccess) {
    p.chunk = tile.chunk;
    err = sampling::launch_speculative(p, tile, dev, stream);
  }
  st = launch_status(op, err);
  if (!st.ok()) return log_error(op, st);
  if (log_level() >= 5) {
    log_outputs(op, stream,
                {log_arg("output_token_ids", a.output_token_ids),
                 log_arg("accepted_counts", a.accepted_counts)});
  }
  return st;
}

}  // namespace flashserve
