// Public entry points of rotary position embedding: validate, log, dispatch, launch.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "api/arg_check.h"
#include "api/common.h"
#include "flashserve/core/dispatch.h"
#include "flashserve/rope.h"
#include "flashserve/rope/frequencies.h"
#include "flashserve/rope/rope_kernel.cuh"
#include "flashserve/runtime.h"
#include "runtime/logging.h"

namespace flashserve {
namespace {

struct RopeCall {
  const char* op;
  const TensorView& q_out;
  const TensorView& k_out;
  const TensorView& q;
  const TensorView& k;
  const TensorView& positions;
  const TensorView* cache;  // cos_sin_cache variant when set
  const RopeOptions& options;
};

ArgCheck& defined_unless_empty(ArgCheck& check, const TensorView& t, const char* name) {
  check.arg(t, name);
  check.defined();
  return check;
}

bool same_view(const TensorView& a, const TensorView& b) {
  if (a.data != b.data || a.ndim != b.ndim || a.dtype != b.dtype) return false;
  for (int d = 0; d < a.ndim; ++d) {
    if (a.shape[d] != b.shape[d] || a.strides[d] != b.strides[d]) return false;
  }
  return true;
}

bool finite_positive(float v) {
  return std::isfinite(v) && v > 0.f;
}

// The rotary dim the call asks for: options.rotary_dim, or head_dim / the cache width when 0.
int64_t requested_rotary_dim(const RopeCall& c) {
  if (c.options.rotary_dim != 0) return c.options.rotary_dim;
  return c.cache ? c.cache->size(1) : c.q.size(2);
}

Status validate(const RopeCall& c) {
  ArgCheck check(c.op);
  defined_unless_empty(check, c.q, "q")
      .ndim(3)
      .float_dtype()
      .inner_contiguous()
      .nonnegative_strides();
  if (!check.ok()) return check.status();
  const int64_t tokens = c.q.size(0);
  const int64_t head_dim = c.q.size(2);
  defined_unless_empty(check, c.k, "k")
      .ndim(3)
      .dtype(c.q.dtype)
      .size(0, tokens, "tokens, as q")
      .size(2, head_dim, "head_dim, as q")
      .inner_contiguous()
      .nonnegative_strides();
  defined_unless_empty(check, c.q_out, "q_out")
      .same_shape(c.q, "q")
      .dtype(c.q.dtype)
      .inner_contiguous()
      .nonnegative_strides()
      .writable()
      .no_partial_alias(c.q, "q");
  defined_unless_empty(check, c.k_out, "k_out")
      .same_shape(c.k, "k")
      .dtype(c.q.dtype)
      .inner_contiguous()
      .nonnegative_strides()
      .writable()
      .no_partial_alias(c.k, "k");
  // An output written out of place must not touch the other input either. (In place, q and k may
  // be interleaved slices of one packed qkv tensor whose spans overlap: not checked then.)
  if (!same_view(c.q_out, c.q)) {
    check.require(disjoint(c.q_out, c.k), "q_out: must not overlap k (q_out is out of place)");
  }
  if (!same_view(c.k_out, c.k)) {
    check.require(disjoint(c.k_out, c.q), "k_out: must not overlap q (k_out is out of place)");
  }
  defined_unless_empty(check, c.positions, "positions")
      .ndim(1)
      .dtype_in({DType::kInt32, DType::kInt64})
      .size(0, tokens, "tokens, as q")
      .contiguous();
  // The outputs must not overwrite the index data the kernel reads.
  check.require(disjoint(c.q_out, c.positions), "q_out: must not overlap positions");
  check.require(disjoint(c.k_out, c.positions), "k_out: must not overlap positions");
  if (c.cache) {
    check.arg(*c.cache, "cos_sin_cache")
        .defined()
        .ndim(2)
        .dtype_in({DType::kFloat32, c.q.dtype})
        .contiguous()
        .size_at_least(0, 1);
    if (!check.ok()) return check.status();
    const int64_t width = c.cache->size(1);
    check.require(disjoint(c.q_out, *c.cache), "q_out: must not overlap cos_sin_cache");
    check.require(disjoint(c.k_out, *c.cache), "k_out: must not overlap cos_sin_cache");
    check.require(c.options.rotary_dim == 0 || c.options.rotary_dim == width, [&] {
      return "options.rotary_dim: expected 0 or the cos_sin_cache width " + std::to_string(width) +
             ", got " + std::to_string(c.options.rotary_dim);
    });
  }
  if (!check.ok()) return check.status();
  const int64_t rotary_dim = requested_rotary_dim(c);
  check.require(
      rotary_dim > 0 && rotary_dim % 2 == 0 && rotary_dim <= head_dim &&
          rotary_dim <= rope::kMaxRotaryDim,
      [&] {
        return std::string("options.rotary_dim: expected an even value in [2, min(head_dim = ") +
               std::to_string(head_dim) + ", " + std::to_string(rope::kMaxRotaryDim) + ")]" +
               (c.cache ? " (the cos_sin_cache width)" : "") + ", got " +
               std::to_string(rotary_dim);
      });
  if (!c.cache) {
    const RopeOptions& o = c.options;
    check.require(finite_positive(o.theta), [&] {
      return "options.theta: expected a finite value > 0, got " + format_float(o.theta);
    });
    check.require(finite_positive(o.scale), [&] {
      return "options.scale: expected a finite value > 0, got " + format_float(o.scale);
    });
    if (o.llama31) {
      const Llama31Scaling& s = o.llama31_scaling;
      check.require(finite_positive(s.factor), [&] {
        return "options.llama31_scaling.factor: expected a finite value > 0, got " +
               format_float(s.factor);
      });
      check.require(finite_positive(s.low_freq_factor), [&] {
        return "options.llama31_scaling.low_freq_factor: expected a finite value > 0, got " +
               format_float(s.low_freq_factor);
      });
      check.require(
          std::isfinite(s.high_freq_factor) && s.high_freq_factor > s.low_freq_factor, [&] {
            return "options.llama31_scaling.high_freq_factor: expected a finite value > "
                   "low_freq_factor (" +
                   format_float(s.low_freq_factor) + "), got " + format_float(s.high_freq_factor);
          });
      check.require(finite_positive(s.original_max_position), [&] {
        return "options.llama31_scaling.original_max_position: expected a finite value > 0, "
               "got " +
               format_float(s.original_max_position);
      });
    }
  }
  check.require(tokens <= std::numeric_limits<int32_t>::max(),
                [&] { return "q: expected at most 2^31-1 tokens, got " + std::to_string(tokens); });
  check.require((c.q.size(1) + c.k.size(1)) * head_dim <= std::numeric_limits<int32_t>::max(),
                "q: (q heads + k heads) * head_dim must stay below 2^31");
  check.on_current_device();
  return check.status();
}

// FLASHSERVE_DEBUG_CHECKS: every position must index a row of the cache. Synchronous; skipped
// while the stream is being captured into a graph (a copy to the host cannot be captured).
Status check_positions(const RopeCall& c, cudaStream_t stream) {
  const int64_t tokens = c.positions.size(0);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (tokens == 0 || cudaStreamIsCapturing(stream, &capture) != cudaSuccess ||
      capture != cudaStreamCaptureStatusNone) {
    cudaGetLastError();
    return Status();
  }
  const bool wide = c.positions.dtype == DType::kInt64;
  std::vector<int64_t> host64(wide ? tokens : 0);
  std::vector<int32_t> host32(wide ? 0 : tokens);
  void* dst = wide ? static_cast<void*>(host64.data()) : static_cast<void*>(host32.data());
  cudaError_t err = cudaMemcpyAsync(dst, c.positions.data, tokens * dtype_size(c.positions.dtype),
                                    cudaMemcpyDeviceToHost, stream);
  if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return Status(
        StatusCode::kCudaError,
        std::string(c.op) + ": positions: debug check copy failed: " + cudaGetErrorString(err));
  }
  const int64_t max_position = c.cache->size(0);
  for (int64_t i = 0; i < tokens; ++i) {
    const int64_t p = wide ? host64[i] : host32[i];
    if (p < 0 || p >= max_position) {
      return Status(StatusCode::kInvalidArgument,
                    std::string(c.op) + ": positions: positions[" + std::to_string(i) + "] = " +
                        std::to_string(p) + " is outside [0, " + std::to_string(max_position) +
                        "), the rows of cos_sin_cache (FLASHSERVE_DEBUG_CHECKS)");
    }
  }
  return Status();
}

// rope::compute_inv_freq costs rotary_dim / 2 powf calls (~1 us at 128) on every eager call;
// consecutive calls of a thread nearly always share one configuration, so keep the last one.
void cached_inv_freq(const rope::FrequencyConfig& f, float* inv_freq) {
  struct Last {
    bool valid = false;
    rope::FrequencyConfig config;
    float inv_freq[rope::kMaxRotaryDim / 2];
  };
  thread_local Last last;
  const rope::FrequencyConfig& l = last.config;
  const bool hit = last.valid && l.rotary_dim == f.rotary_dim && l.theta == f.theta &&
                   l.llama31 == f.llama31 &&
                   (!f.llama31 || (l.factor == f.factor && l.low_freq_factor == f.low_freq_factor &&
                                   l.high_freq_factor == f.high_freq_factor &&
                                   l.original_max_position == f.original_max_position));
  if (!hit) {
    rope::compute_inv_freq(f, last.inv_freq);
    last.config = f;
    last.valid = true;
  }
  std::copy(last.inv_freq, last.inv_freq + f.rotary_dim / 2, inv_freq);
}

rope::HeadStrides head_strides(const TensorView& t) {
  return {t.strides[0], t.strides[1]};
}

template <class T, class TPos>
cudaError_t launch(const RopeCall& c, int num_sms, cudaStream_t stream) {
  rope::RopeParams<T, TPos> p;
  p.q = static_cast<const T*>(c.q.data);
  p.q_strides = head_strides(c.q);
  p.q_out = static_cast<T*>(c.q_out.data);
  p.q_out_strides = head_strides(c.q_out);
  p.k = static_cast<const T*>(c.k.data);
  p.k_strides = head_strides(c.k);
  p.k_out = static_cast<T*>(c.k_out.data);
  p.k_out_strides = head_strides(c.k_out);
  p.positions = static_cast<const TPos*>(c.positions.data);
  p.tokens = c.q.size(0);
  p.q_heads = static_cast<int>(c.q.size(1));
  p.kv_heads = static_cast<int>(c.k.size(1));
  p.head_dim = static_cast<int>(c.q.size(2));
  p.rotary_dim = static_cast<int>(requested_rotary_dim(c));
  p.interleave = c.options.interleave;
  if (c.cache) {
    const int64_t max_position = c.cache->size(0);
    if (c.cache->dtype == DType::kFloat32) {
      return rope::launch_rope(
          p, rope::CachedAngles<float>{static_cast<const float*>(c.cache->data), max_position},
          num_sms, stream);
    }
    return rope::launch_rope(
        p, rope::CachedAngles<T>{static_cast<const T*>(c.cache->data), max_position}, num_sms,
        stream);
  }
  rope::FrequencyConfig f;
  f.rotary_dim = p.rotary_dim;
  f.theta = c.options.theta;
  f.llama31 = c.options.llama31;
  f.factor = c.options.llama31_scaling.factor;
  f.low_freq_factor = c.options.llama31_scaling.low_freq_factor;
  f.high_freq_factor = c.options.llama31_scaling.high_freq_factor;
  f.original_max_position = c.options.llama31_scaling.original_max_position;
  rope::ComputedAngles angles;
  angles.inv_scale = 1.0 / static_cast<double>(c.options.scale);
  cached_inv_freq(f, angles.inv_freq);
  return rope::launch_rope(p, angles, num_sms, stream);
}

Status run(const RopeCall& c, cudaStream_t stream) {
  if (log_level() > 0) {
    const RopeOptions& o = c.options;
    log_call(c.op, stream,
             {log_arg("q_out", c.q_out), log_arg("k_out", c.k_out), log_arg("q", c.q),
              log_arg("k", c.k), log_arg("positions", c.positions),
              log_arg("cos_sin_cache", c.cache ? *c.cache : TensorView{}),
              log_arg("rotary_dim", o.rotary_dim), log_arg("interleave", o.interleave),
              log_arg("theta", o.theta), log_arg("scale", o.scale), log_arg("llama31", o.llama31),
              log_arg("llama31.factor", o.llama31_scaling.factor),
              log_arg("llama31.low_freq_factor", o.llama31_scaling.low_freq_factor),
              log_arg("llama31.high_freq_factor", o.llama31_scaling.high_freq_factor),
              log_arg("llama31.original_max_position", o.llama31_scaling.original_max_position)});
  }
  Status st = validate(c);
  if (st.ok() && c.cache && debug_checks()) st = check_positions(c, stream);
  if (!st.ok()) return log_error(c.op, st);
  // The tile policy sizes the grid by the SM count (a cached attribute query, no sync).
  int device = 0, num_sms = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess)
    err = cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device);
  if (err == cudaSuccess) {
    dispatch_float(c.q.dtype, [&](auto tag) {
      using T = typename decltype(tag)::type;
      err = c.positions.dtype == DType::kInt64 ? launch<T, int64_t>(c, num_sms, stream)
                                               : launch<T, int32_t>(c, num_sms, stream);
    });
  }
  st = launch_status(c.op, err);
  if (!st.ok()) return log_error(c.op, st);
  if (log_level() >= 5) {
    log_outputs(c.op, stream, {log_arg("q_out", c.q_out), log_arg("k_out", c.k_out)});
  }
  return st;
}

}  // namespace

Status apply_rope(const TensorView& q_out, const TensorView& k_out, const TensorView& q,
                  const TensorView& k, const TensorView& positions, const RopeOptions& options,
                  cudaStream_t stream) {
  return run({"apply_rope", q_out, k_out, q, k, positions, nullptr, options}, stream);
}

Status apply_rope_cos_sin_cache(const TensorView& q_out, const TensorView& k_out,
                                const TensorView& q, const TensorView& k,
                                const TensorView& positions, const TensorView& cos_sin_cache,
                                const RopeOptions& options, cudaStream_t stream) {
  return run({"apply_rope_cos_sin_cache", q_out, k_out, q, k, positions, &cos_sin_cache, options},
             stream);
}

}  // namespace flashserve
