// Public merge_state / merge_states: combine attention states (output, natural-log LSE) computed
// over disjoint kv ranges. Validate, log, dispatch, launch.
#include <cstdint>
#include <string>

#include "api/arg_check.h"
#include "api/common.h"
#include "flashserve/attention/merge_kernel.cuh"
#include "flashserve/core/dispatch.h"
#include "flashserve/decode.h"
#include "runtime/logging.h"

namespace flashserve {
namespace {

// v [tokens, states, heads, D] (states dim given by stride; for merge_state, the distance from
// v_a to v_b), s [tokens, states, heads].
struct MergeCall {
  const char* op;
  const TensorView& v;  // 3-D view of the first state (merge_state) or the 4-D stack
  const TensorView& s;
  int states;
  int64_t v_stride_state, s_stride_state;
  const TensorView& v_out;
  const TensorView& s_out;
};

Status check_outputs(ArgCheck& check, const MergeCall& c, int64_t tokens, int64_t heads,
                     int64_t dim) {
  check.arg(c.v_out, "v_out")
      .defined()
      .ndim(3)
      .dtype(c.v.dtype)
      .size(0, tokens, "tokens")
      .size(1, heads, "heads")
      .size(2, dim, "head_dim")
      .inner_contiguous()
      .nonnegative_strides()
      .writable();
  if (c.s_out.defined()) {
    check.arg(c.s_out, "s_out")
        .defined()
        .ndim(2)
        .dtype(DType::kFloat32)
        .size(0, tokens, "tokens")
        .size(1, heads, "heads")
        .nonnegative_strides()
        .writable();
    check.require(disjoint(c.s_out, c.v_out), "s_out: must not overlap v_out");
  }
  check.on_current_device();
  return check.status();
}

template <class T>
cudaError_t launch(const MergeCall& c, bool stacked, cudaStream_t stream) {
  attention::MergeStatesParams<T> p;
  const int o = stacked ? 1 : 0;  // dims shift by one in the stacked form
  p.v = static_cast<const T*>(c.v.data);
  p.v_stride_token = c.v.strides[0];
  p.v_stride_state = c.v_stride_state;
  p.v_stride_head = c.v.strides[1 + o];
  p.s = static_cast<const float*>(c.s.data);
  p.s_stride_token = c.s.strides[0];
  p.s_stride_state = c.s_stride_state;
  p.s_stride_head = c.s.strides[1 + o];
  p.out = static_cast<T*>(c.v_out.data);
  p.out_stride_token = c.v_out.strides[0];
  p.out_stride_head = c.v_out.strides[1];
  if (c.s_out.defined()) {
    p.lse_out = static_cast<float*>(c.s_out.data);
    p.lse_stride_token = c.s_out.strides[0];
    p.lse_stride_head = c.s_out.strides[1];
  }
  p.tokens = c.v.shape[0];
  p.states = c.states;
  p.heads = static_cast<int>(c.v.shape[1 + o]);
  p.head_dim = static_cast<int>(c.v.shape[2 + o]);
  return attention::launch_merge_states(p, stream);
}

Status run(const MergeCall& c, bool stacked, cudaStream_t stream) {
  cudaError_t err = cudaSuccess;
  dispatch_float(c.v.dtype,
                 [&](auto tag) { err = launch<typename decltype(tag)::type>(c, stacked, stream); });
  Status st = launch_status(c.op, err);
  if (!st.ok()) log_error(c.op, st);
  return st;
}

}  // namespace

Status merge_state(const TensorView& v_a, const TensorView& s_a, const TensorView& v_b,
                   const TensorView& s_b, const TensorView& v_out, const TensorView& s_out,
                   cudaStream_t stream) {
  constexpr const char* op = "merge_state";
  if (log_level() > 0) {
    log_call(op, stream,
             {log_arg("v_a", v_a), log_arg("s_a", s_a), log_arg("v_b", v_b), log_arg("s_b", s_b),
              log_arg("v_out", v_out), log_arg("s_out", s_out)});
  }
  ArgCheck check(op);
  check.arg(v_a, "v_a").defined().ndim(3).float_dtype().inner_contiguous().nonnegative_strides();
  check.arg(v_b, "v_b").defined().same_shape(v_a, "v_a").same_dtype(v_a, "v_a");
  check.arg(s_a, "s_a")
      .defined()
      .ndim(2)
      .dtype(DType::kFloat32)
      .size(0, v_a.shape[0], "tokens")
      .size(1, v_a.shape[1], "heads");
  check.arg(s_b, "s_b").defined().same_shape(s_a, "s_a").dtype(DType::kFloat32);
  if (check.ok()) {
    // The kernel walks the two states as one stack: b's strides must equal a's.
    bool same = true;
    for (int d = 0; d < 3; ++d)
      same = same && v_b.strides[d] == v_a.strides[d];
    check.require(same, "v_b: expected the strides of v_a");
    check.require(s_b.strides[0] == s_a.strides[0] && s_b.strides[1] == s_a.strides[1],
                  "s_b: expected the strides of s_a");
    const int64_t es = dtype_size(v_a.dtype);
    const int64_t vd = reinterpret_cast<intptr_t>(v_b.data) - reinterpret_cast<intptr_t>(v_a.data);
    const int64_t sd = reinterpret_cast<intptr_t>(s_b.data) - reinterpret_cast<intptr_t>(s_a.data);
    check.require(vd % es == 0, "v_b: expected an address a whole number of elements from v_a");
    check.require(sd % 4 == 0, "s_b: expected an address a whole number of elements from s_a");
    if (check.ok()) {
      const MergeCall c{op, v_a, s_a, 2, vd / es, sd / 4, v_out, s_out};
      Status st = check_outputs(check, c, v_a.shape[0], v_a.shape[1], v_a.shape[2]);
      if (st.ok()) return run(c, false, stream);
    }
  }
  return log_error(op, check.status());
}

Status merge_states(const TensorView& v, const TensorView& s, const TensorView& v_out,
                    const TensorView& s_out, cudaStream_t stream) {
  constexpr const char* op = "merge_states";
  if (log_level() > 0) {
    log_call(op, stream,
             {log_arg("v", v), log_arg("s", s), log_arg("v_out", v_out), log_arg("s_out", s_out)});
  }
  ArgCheck check(op);
  check.arg(v, "v").defined().ndim(4).float_dtype().inner_contiguous().nonnegative_strides();
  if (check.ok()) {
    check.arg(s, "s")
        .defined()
        .ndim(3)
        .dtype(DType::kFloat32)
        .size(0, v.shape[0], "tokens")
        .size(1, v.shape[1], "states")
        .size(2, v.shape[2], "heads")
        .nonnegative_strides();
    check.require(v.shape[1] <= (int64_t{1} << 30), "v: too many states");
  }
  if (check.ok()) {
    const MergeCall c{op,           v,     s,    static_cast<int>(v.shape[1]), v.strides[1],
                      s.strides[1], v_out, s_out};
    Status st = check_outputs(check, c, v.shape[0], v.shape[2], v.shape[3]);
    check.require(disjoint(v_out, v), "v_out: must not overlap v");
    if (check.ok()) return run(c, true, stream);
  }
  return log_error(op, check.status());
}

}  // namespace flashserve
