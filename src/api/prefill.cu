// Public entry points of prefill attention: plan (host tile schedule -> workspace, the kernel
// specializations from the kernel registry), run (validate, log, pick the kernel of the variant
// kind, launch the persistent kernel).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "api/arg_check.h"
#include "api/common.h"
#include "api/paged_cache_check.h"
#include "api/prefill_kernels.h"
#include "flashserve/attention/prefill_tile_policy.h"
#include "flashserve/prefill.h"
#include "flashserve/runtime.h"
#include "plan/prefill_plan.h"
#include "runtime/kernel_loader.h"
#include "runtime/kernel_registry.h"
#include "runtime/logging.h"

namespace flashserve {
namespace {

constexpr const char* kSizeOp = "prefill_workspace_size";
constexpr const char* kPlanOp = "prefill_plan";
constexpr const char* kRunOp = "prefill_run";

bool supported_head_dim(int d) {
  return d == 64 || d == 96 || d == 128 || d == 192 || d == 256;
}

Status validate_request(const char* op, const PrefillPlanRequest& r) {
  if (r.batch_size < 0)
    return invalid(op, "req.batch_size: expected >= 0, got " + str(r.batch_size));
  if (r.num_kv_heads < 1)
    return invalid(op, "req.num_kv_heads: expected >= 1, got " + str(r.num_kv_heads));
  if (r.num_qo_heads < 1 || r.num_qo_heads % r.num_kv_heads != 0) {
    return invalid(op, "req.num_qo_heads: expected a positive multiple of num_kv_heads = " +
                           str(r.num_kv_heads) + ", got " + str(r.num_qo_heads));
  }
  if (!supported_head_dim(r.head_dim))
    return invalid(op, "req.head_dim: expected 64, 96, 128, 192 or 256, got " + str(r.head_dim));
  if (r.head_dim_v != 0 && r.head_dim_v != r.head_dim &&
      !(r.head_dim == 192 && r.head_dim_v == 128)) {
    return invalid(op, "req.head_dim_v: expected 0 or head_dim = " + str(r.head_dim) +
                           (r.head_dim == 192 ? std::string(", or 128") : std::string()) +
                           " (different q/k and v head dims: only 192 / 128), got " +
                           str(r.head_dim_v));
  }
  if (r.dtype != DType::kFloat16 && r.dtype != DType::kBFloat16) {
    return invalid(
        op, std::string("req.dtype: expected float16 or bfloat16, got ") + dtype_name(r.dtype));
  }
  if (r.window_left < -1)
    return invalid(op, "req.window_left: expected -1 (none) or >= 0, got " + str(r.window_left));
  if (r.window_right < -1) {
    return invalid(op, "req.window_right: expected -1 (none) or >= 0, got " + str(r.window_right));
  }
  if (r.causal && r.window_right >= 0) {
    return invalid(op,
                   "req.window_right: expected -1 with causal = true (causal already bounds "
                   "the right side), got " +
                       str(r.window_right));
  }
  if (r.num_sms < 0) return invalid(op, "req.num_sms: expected >= 0, got " + str(r.num_sms));
  if (r.max_batch_size < 0 || r.max_q_tokens < 0)
    return invalid(op, "req.max_batch_size: capacities must be >= 0");
  if (r.qo_indptr == nullptr && r.q_len < 0)
    return invalid(op, "req.q_len: expected >= 0 (used without qo_indptr), got " + str(r.q_len));
  if (r.page_size < 0)
    return invalid(op, "req.page_size: expected >= 0 (0: ragged k and v), got " + str(r.page_size));
  if (r.page_size == 0 && r.kv_indptr == nullptr && r.kv_len < 0) {
    return invalid(op, "req.kv_len: expected >= 0 (used without kv_indptr), got " + str(r.kv_len));
  }
  return Status();
}

// Paged KV: the token indptr of the requests' kv lengths, from the host copies of the page
// table's indptr and last_page_len (validated as decode_plan does).
Status paged_kv_token_indptr(const char* op, const PrefillPlanRequest& r,
                             std::vector<int32_t>* out) {
  const int64_t batch = r.batch_size;
  if (batch > 0 && (r.paged_kv_indptr == nullptr || r.paged_kv_last_page_len == nullptr)) {
    return invalid(op,
                   "req.paged_kv_indptr: expected host copies of table.indptr and "
                   "table.last_page_len with page_size > 0");
  }
  out->assign(static_cast<size_t>(batch) + 1, 0);
  if (batch == 0) return Status();
  if (r.paged_kv_indptr[0] != 0) {
    return invalid(op, "req.paged_kv_indptr: expected paged_kv_indptr[0] == 0, got " +
                           str(r.paged_kv_indptr[0]));
  }
  int64_t total = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t pages = int64_t{r.paged_kv_indptr[b + 1]} - r.paged_kv_indptr[b];
    if (pages < 0) {
      return invalid(op, "req.paged_kv_indptr: request " + str(b) +
                             ": expected a non-decreasing array, got " + str(r.paged_kv_indptr[b]) +
                             " then " + str(r.paged_kv_indptr[b + 1]));
    }
    const int32_t last = r.paged_kv_last_page_len[b];
    if (pages > 0 ? (last < 1 || last > r.page_size) : last != 0) {
      return invalid(op, "req.paged_kv_last_page_len: request " + str(b) + ": expected " +
                             (pages > 0 ? "a value in [1, " + str(r.page_size) + "]"
                                        : std::string("0 for a request without pages")) +
                             ", got " + str(last));
    }
    total += pages > 0 ? (pages - 1) * r.page_size + last : 0;
    if (total > INT32_MAX)
      return invalid(op, "req.paged_kv_indptr: the batch holds over 2^31-1 kv tokens");
    (*out)[b + 1] = static_cast<int32_t>(total);
  }
  return Status();
}

// `paged_kv_indptr`: the token indptr of a paged request (paged_kv_token_indptr), else unused.
int head_dim_v_of(const PrefillPlanRequest& r) {
  return r.head_dim_v != 0 ? r.head_dim_v : r.head_dim;
}

// The plan's tile height: the head dim's, or its alternative (128 rows at head_dim 64) for a
// causal plan (no window) whose queries are all at most kPrefillShortCausalQ long. The bound is
// max_q_tokens where a capacity is given (so every re-plan within it keeps the kernels a captured
// graph holds), else this batch's longest query. Requests are validated first.
int plan_block_m(const PrefillPlanRequest& r) {
  const int hdv = head_dim_v_of(r);
  const int alt = attention::prefill_alt_block_m(r.head_dim, hdv);
  const int def = attention::prefill_tile(r.head_dim, false, hdv).block_m;
  if (alt == 0 || !r.causal || r.window_left >= 0 || r.window_right >= 0) return def;
  int64_t longest = 0;
  if (r.max_q_tokens > 0) {
    longest = r.max_q_tokens;
  } else if (r.qo_indptr != nullptr) {
    for (int b = 0; b < r.batch_size; ++b)
      longest = std::max<int64_t>(longest, int64_t{r.qo_indptr[b + 1]} - r.qo_indptr[b]);
  } else {
    longest = r.q_len;
  }
  return longest <= attention::kPrefillShortCausalQ ? alt : def;
}

// num_ctas: the persistent CTAs of the run (the SM count; 1 where only sizes matter).
plan::PrefillScheduleInput schedule_input(const PrefillPlanRequest& r,
                                          const std::vector<int32_t>& paged_kv_indptr,
                                          int num_ctas) {
  const attention::PrefillTile tile =
      attention::prefill_tile(r.head_dim, false, head_dim_v_of(r), plan_block_m(r));
  plan::PrefillScheduleInput in;
  in.qo_indptr = r.qo_indptr;
  in.kv_indptr = r.page_size > 0 ? paged_kv_indptr.data() : r.kv_indptr;
  in.batch = r.batch_size;
  in.q_len = r.q_len;
  in.kv_len = r.kv_len;
  in.num_qo_heads = r.num_qo_heads;
  in.num_kv_heads = r.num_kv_heads;
  in.num_ctas = num_ctas;
  in.head_dim = r.head_dim;
  in.head_dim_v = head_dim_v_of(r);
  in.block_m = tile.block_m;
  in.block_n = tile.block_n;
  in.causal = r.causal;
  in.window_left = r.window_left;
  in.window_right = r.window_right;
  in.max_batch_size = r.max_batch_size;
  in.max_q_tokens = r.max_q_tokens;
  in.split_kv = r.split_kv;
  return in;
}

// --- run -------------------------------------------------------------------------------------

Status check_heads_tensor(ArgCheck& check, const TensorView& t, const char* name, int heads) {
  if (!t.defined()) return Status();
  check.arg(t, name)
      .ndim(1)
      .dtype(DType::kFloat32)
      .size(0, heads, "plan.num_qo_heads")
      .contiguous();
  return check.status();
}

// Paged KV: the cache ([pages, page_size, heads, dim] NHD or [pages, heads, page_size, dim] HND,
// the plan's dtype, 16-byte aligned rows: cp.async moves 16-byte chunks) and the device table.
void validate_paged_kv(ArgCheck& check, const PrefillPlan& plan, const PrefillArgs& a) {
  check.require(a.cache.layout == KVLayout::kNHD || a.cache.layout == KVLayout::kHND,
                "cache.layout: expected KVLayout::kNHD or KVLayout::kHND");
  check_paged_cache(check, a.cache, a.cache.layout, plan.dtype, plan.num_kv_heads, plan.page_size,
                    plan.head_dim, plan.head_dim_v);
  if (!check.ok()) return;
  check.arg(a.table.indptr, "table.indptr")
      .defined()
      .ndim(1)
      .dtype(DType::kInt32)
      .contiguous()
      .size_at_least(0, int64_t{plan.batch_size} + 1);
  check.arg(a.table.indices, "table.indices").ndim(1).dtype(DType::kInt32).contiguous();
  if (a.table.indices.numel() > 0) check.defined();
  check.require(plan.total_kv == 0 || a.table.indices.numel() > 0,
                "table.indices: expected the pages of the plan's requests, got none");
}

Status validate_run(const PrefillPlan& plan, const PrefillArgs& a, const void* workspace) {
  ArgCheck check(kRunOp);
  check.require(plan.workspace_bytes > 0 && plan.num_kv_heads > 0,
                "plan: expected a plan made by prefill_plan");
  check.require(workspace != nullptr,
                "workspace: expected the device workspace given to prefill_plan");
  if (!check.ok()) return check.status();
  check.require(plan.head_dim_v > 0, "plan: expected a plan made by prefill_plan (head_dim_v)");
  if (!check.ok()) return check.status();
  // The split-KV partials lie inside the plan's workspace bytes.
  check.require(plan.split_capacity >= 0 && plan.split_capacity <= INT32_MAX &&
                    (plan.split_capacity == 0 ||
                     plan::prefill_split_layout(plan.work_offset, plan.work_capacity,
                                                plan.split_capacity, plan.block_m, plan.head_dim_v)
                             .end <= plan.workspace_bytes),
                "plan: expected a plan made by prefill_plan (split_capacity)");
  if (!check.ok()) return check.status();
  struct Operand {
    const TensorView* t;
    const char* name;
    int heads;
    int64_t rows;
    int dim;
  };
  const bool paged = plan.page_size > 0;
  const int D = plan.head_dim, Dv = plan.head_dim_v;
  const Operand ops[] = {{&a.q, "q", plan.num_qo_heads, plan.total_q, D},
                         {&a.out, "out", plan.num_qo_heads, plan.total_q, Dv},
                         {&a.k, "k", plan.num_kv_heads, plan.total_kv, D},
                         {&a.v, "v", plan.num_kv_heads, plan.total_kv, Dv}};
  for (const Operand& o : ops) {
    if (paged && (o.t == &a.k || o.t == &a.v)) {
      check.require(!o.t->defined(), [&] {
        return std::string(o.name) +
               ": expected undefined with a paged plan (the kv comes from cache and table)";
      });
      continue;
    }
    check.arg(*o.t, o.name)
        .defined()
        .ndim(3)
        .dtype(plan.dtype)
        .size(1, o.heads, o.heads == plan.num_qo_heads ? "plan.num_qo_heads" : "plan.num_kv_heads")
        .size(2, o.dim, o.dim == D ? "plan.head_dim" : "plan.head_dim_v")
        .inner_contiguous()
        .nonnegative_strides();
    if (!check.ok()) return check.status();
    check.require(o.t->size(0) >= o.rows, [&] {
      return std::string(o.name) + ": expected at least " + str(o.rows) +
             " rows (the plan's tokens), got " + str(o.t->size(0));
    });
    // TMA: a 16-byte aligned base and 16-byte multiples for the token and head strides.
    const int64_t es = dtype_size(o.t->dtype);
    const bool aligned = reinterpret_cast<uintptr_t>(o.t->data) % 16 == 0 &&
                         (o.t->strides[0] * es) % 16 == 0 && (o.t->strides[1] * es) % 16 == 0;
    check.require(aligned, [&] {
      return std::string(o.name) +
             ": expected a 16-byte aligned pointer and token / head strides "
             "that are multiples of 16 bytes";
    });
  }
  if (!check.ok()) return check.status();
  if (paged) {
    validate_paged_kv(check, plan, a);
    if (!check.ok()) return check.status();
  }
  const TensorView& k = paged ? a.cache.k_cache : a.k;
  const TensorView& v = paged ? a.cache.v_cache : a.v;
  check.arg(a.out, "out").writable();
  check.require(disjoint(a.out, a.q) && disjoint(a.out, k) && disjoint(a.out, v),
                paged ? "out: must not overlap q or the cache" : "out: must not overlap q, k or v");
  if (a.lse.defined()) {
    check.arg(a.lse, "lse")
        .ndim(2)
        .dtype(DType::kFloat32)
        .size(1, plan.num_qo_heads, "plan.num_qo_heads")
        .nonnegative_strides()
        .writable();
    if (check.ok()) {
      check.require(a.lse.size(0) >= plan.total_q, [&] {
        return "lse: expected at least " + str(plan.total_q) + " rows, got " + str(a.lse.size(0));
      });
    }
    check.require(disjoint(a.lse, a.out), "lse: must not overlap out");
  }
  check.require(std::isfinite(a.sm_scale) && a.sm_scale >= 0.f, [&] {
    return "sm_scale: expected a finite value >= 0 (0 = 1 / sqrt(head_dim)), got " +
           format_float(a.sm_scale);
  });
  check.require(std::isfinite(a.logits_soft_cap) && a.logits_soft_cap >= 0.f, [&] {
    return "logits_soft_cap: expected a finite value >= 0 (0 = off), got " +
           format_float(a.logits_soft_cap);
  });
  if (!check.ok()) return check.status();
  check_heads_tensor(check, a.alibi_slopes, "alibi_slopes", plan.num_qo_heads);
  check_heads_tensor(check, a.sinks, "sinks", plan.num_qo_heads);
  if (!check.ok()) return check.status();
  check.require(a.custom_mask.defined() == a.mask_offsets.defined(),
                "custom_mask: expected custom_mask and mask_offsets together");
  if (a.custom_mask.defined()) {
    check.arg(a.custom_mask, "custom_mask").ndim(1).dtype(DType::kUInt8).contiguous();
    check.arg(a.mask_offsets, "mask_offsets")
        .ndim(1)
        .dtype(DType::kInt64)
        .size(0, plan.batch_size, "plan.batch_size")
        .contiguous();
  }
  return check.status();
}

// --- kernels -----------------------------------------------------------------------------------

// The kernel a run takes: general when the plan has a window or the run a soft-cap, ALiBi, sinks
// or a custom mask (`run_variants`); else causal or plain. Without run_variants: the kernel of the
// plan's masks.
attention::PrefillKind kernel_kind(bool causal, int window_left, int window_right,
                                   bool run_variants) {
  if (window_left >= 0 || window_right >= 0 || run_variants)
    return attention::PrefillKind::kGeneral;
  return causal ? attention::PrefillKind::kCausal : attention::PrefillKind::kPlain;
}

// The prefill kernel specialization of (dtype, head_dim, kind, tile height block_m) for the
// current device: prebuilt, from the kernel cache, or compiled now (docs/kernel_cache.md).
// `may_compile` false: only one already resolved in this process (prefill_run during graph
// capture).
Status resolve_kernel(const char* op, DType dtype, int head_dim, int head_dim_v, int block_m,
                      attention::PrefillKind kind, bool paged, bool may_compile,
                      const runtime::ResolvedKernel** out) {
  int cc = 0;
  Status st = runtime::KernelRegistry::current_device_cc(&cc);
  if (!st.ok()) return Status(st.code(), std::string(op) + ": " + st.message());
  runtime::KernelSpec spec =
      detail::prefill_kernel_spec(dtype, head_dim, kind, paged, head_dim_v, block_m);
  spec.cc = static_cast<int16_t>(cc);
  runtime::KernelRegistry& registry = runtime::KernelRegistry::global();
  if (!may_compile) {
    *out = registry.find(spec);
    if (*out != nullptr) return Status();
    return Status(StatusCode::kInvalidArgument,
                  std::string(op) + ": plan: kernel " + registry.describe(spec) +
                      " is not loaded, and it cannot be loaded during graph capture: expected a "
                      "plan made by prefill_plan");
  }
  st = registry.resolve(spec, out);
  if (st.ok() && (*out)->module) {
    // Prepared here, outside capture: prefill_run then only launches.
    const detail::PrefillJitLauncher& l =
        detail::prefill_jit_launcher(dtype, head_dim, kind, paged, head_dim_v, block_m);
    int blocks = 0;
    st = runtime::prepare_kernel((*out)->module->kernel(0), l.threads, l.smem_bytes, &blocks);
  }
  if (!st.ok()) return Status(st.code(), std::string(op) + ": " + st.message());
  return Status();
}

Status launch(const PrefillPlan& plan, attention::PrefillKind kind,
              const attention::PrefillParams& p, cudaStream_t stream,
              const runtime::ResolvedKernel& k) {
  if (k.prebuilt != nullptr) {
    const auto& fns = *static_cast<const detail::PrefillKernelFns*>(k.prebuilt);
    return launch_status(kRunOp, fns.launch(&p, plan.grid, stream));
  }
  const detail::PrefillJitLauncher& l = detail::prefill_jit_launcher(
      plan.dtype, plan.head_dim, kind, plan.page_size > 0, plan.head_dim_v, plan.block_m);
  runtime::LoadedKernel& kernel = k.module->kernel(0);
  // Done by the plan for its device; here a few atomic loads (a driver call only on a device the
  // kernel has not run on yet).
  int blocks = 0;
  Status st = runtime::prepare_kernel(kernel, l.threads, l.smem_bytes, &blocks);
  if (st.ok()) st = l.launch(kernel, p, plan.grid, stream);
  if (!st.ok()) return Status(st.code(), std::string(kRunOp) + ": " + k.name + ": " + st.message());
  return st;
}

}  // namespace

Status prefill_workspace_size(const PrefillPlanRequest& req, size_t* device_bytes) {
  Status st = validate_request(kSizeOp, req);
  if (st.ok() && device_bytes == nullptr) st = invalid(kSizeOp, "device_bytes: expected non-null");
  std::vector<int32_t> paged_indptr;
  if (st.ok() && req.page_size > 0) st = paged_kv_token_indptr(kSizeOp, req, &paged_indptr);
  plan::PrefillSchedule s;
  if (st.ok()) st = plan::make_prefill_schedule(kSizeOp, schedule_input(req, paged_indptr, 1), &s);
  if (!st.ok()) return log_error(kSizeOp, st);
  *device_bytes = s.layout.total;
  return st;
}

Status prefill_plan(const PrefillPlanRequest& req, void* workspace, size_t workspace_bytes,
                    cudaStream_t stream, PrefillPlan* out) {
  if (log_level() > 0) {
    log_call(kPlanOp, stream,
             {log_arg("batch_size", req.batch_size), log_arg("num_qo_heads", req.num_qo_heads),
              log_arg("num_kv_heads", req.num_kv_heads), log_arg("head_dim", req.head_dim),
              log_arg("head_dim_v", req.head_dim_v), log_arg("causal", req.causal),
              log_arg("window_left", req.window_left), log_arg("window_right", req.window_right),
              log_arg("page_size", req.page_size)});
  }
  Status st = validate_request(kPlanOp, req);
  if (st.ok() && out == nullptr) st = invalid(kPlanOp, "plan: expected non-null");
  int sms = 0;
  if (st.ok()) st = resolve_num_sms(kPlanOp, req.num_sms, &sms);
  std::vector<int32_t> paged_indptr;
  if (st.ok() && req.page_size > 0) st = paged_kv_token_indptr(kPlanOp, req, &paged_indptr);
  plan::PrefillSchedule s;
  if (st.ok())
    st = plan::make_prefill_schedule(kPlanOp, schedule_input(req, paged_indptr, sms), &s);
  if (st.ok() && (workspace == nullptr || workspace_bytes < s.layout.total)) {
    st =
        invalid(kPlanOp, "workspace: too small: " + str(static_cast<int64_t>(s.layout.total)) +
                             " bytes needed (prefill_workspace_size), got " +
                             str(static_cast<int64_t>(workspace == nullptr ? 0 : workspace_bytes)));
  }
  if (st.ok() && reinterpret_cast<uintptr_t>(workspace) % 16 != 0)
    st = invalid(kPlanOp, "workspace: expected a 16-byte aligned pointer");
  if (!st.ok()) return log_error(kPlanOp, st);
  const std::vector<unsigned char> image = plan::prefill_workspace_image(s);
  const cudaError_t err =
      cudaMemcpyAsync(workspace, image.data(), image.size(), cudaMemcpyHostToDevice, stream);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return log_error(kPlanOp, Status(StatusCode::kCudaError,
                                     std::string(kPlanOp) + ": writing the work list failed: " +
                                         cudaGetErrorString(err)));
  }
  // The kernel of the plan's masks and the general one, which a run's soft-cap, ALiBi, sinks or
  // custom mask selects: both resolved here, so that prefill_run never compiles or loads.
  const attention::PrefillKind kind =
      kernel_kind(req.causal, req.window_left, req.window_right, false);
  const runtime::ResolvedKernel* kernel = nullptr;
  const runtime::ResolvedKernel* general = nullptr;
  const bool paged = req.page_size > 0;
  const int head_dim_v = head_dim_v_of(req);
  // Both kernels are built for the tile height the schedule was cut with.
  const int block_m = plan_block_m(req);
  st = resolve_kernel(kPlanOp, req.dtype, req.head_dim, head_dim_v, block_m, kind, paged, true,
                      &kernel);
  if (st.ok() && kind != attention::PrefillKind::kGeneral) {
    st = resolve_kernel(kPlanOp, req.dtype, req.head_dim, head_dim_v, block_m,
                        attention::PrefillKind::kGeneral, paged, true, &general);
  }
  if (!st.ok()) return log_error(kPlanOp, st);
  const attention::PrefillTile tile =
      attention::prefill_tile(req.head_dim, false, head_dim_v, block_m);
  PrefillPlan& p = *out;
  p = PrefillPlan();
  p.batch_size = req.batch_size;
  p.total_q = static_cast<int>(s.total_q);
  p.total_kv = static_cast<int>(s.total_kv);
  p.num_qo_heads = req.num_qo_heads;
  p.num_kv_heads = req.num_kv_heads;
  p.head_dim = req.head_dim;
  p.head_dim_v = head_dim_v;
  p.dtype = req.dtype;
  p.causal = req.causal;
  p.window_left = req.window_left;
  p.window_right = req.window_right;
  p.page_size = req.page_size;
  p.block_m = tile.block_m;
  p.block_n = tile.block_n;
  p.num_work = static_cast<int>(s.work.size());
  p.work_capacity = s.work_capacity;
  p.split_capacity = s.split_capacity;
  p.batch_capacity = s.batch_capacity;
  p.num_sms = sms;
  // One CTA per SM (the tile uses most of shared memory); never more CTAs than the capacity.
  // The schedule's chains were built for this grid.
  p.grid = s.grid;
  p.flops = s.flops;
  p.workspace_bytes = s.layout.total;
  p.qo_indptr_offset = s.layout.qo_indptr;
  p.kv_indptr_offset = s.layout.kv_indptr;
  p.work_offset = s.layout.work;
  p.kernel = kernel;
  p.general_kernel = general != nullptr ? general : kernel;
  return st;
}

Status prefill_run(const PrefillPlan& plan, const PrefillArgs& args, void* workspace,
                   cudaStream_t stream) {
  if (log_level() > 0) {
    log_call(
        kRunOp, stream,
        {log_arg("q", args.q), log_arg("k", args.k), log_arg("v", args.v),
         log_arg("cache.k_cache", args.cache.k_cache), log_arg("cache.v_cache", args.cache.v_cache),
         log_arg("table.indices", args.table.indices), log_arg("out", args.out),
         log_arg("lse", args.lse), log_arg("sm_scale", args.sm_scale),
         log_arg("logits_soft_cap", args.logits_soft_cap),
         log_arg("alibi_slopes", args.alibi_slopes), log_arg("sinks", args.sinks),
         log_arg("custom_mask", args.custom_mask)});
  }
  Status st = validate_run(plan, args, workspace);
  if (!st.ok()) return log_error(kRunOp, st);
  if (plan.total_q == 0 || plan.num_work == 0) return st;  // nothing to write

  attention::PrefillParams p;
  p.q = args.q.data;
  p.q_stride_token = args.q.strides[0];
  p.q_stride_head = args.q.strides[1];
  if (plan.page_size > 0) {
    // Cache strides: page, slot within the page (the kernel's token stride), head.
    const TensorView& kc = args.cache.k_cache;
    const TensorView& vc = args.cache.v_cache;
    const CacheDims dims = cache_dims(args.cache.layout);
    const int slot = dims.page_size, head = dims.heads;
    p.k = kc.data;
    p.k_stride_page = kc.strides[0];
    p.k_stride_token = kc.strides[slot];
    p.k_stride_head = kc.strides[head];
    p.v = vc.data;
    p.v_stride_page = vc.strides[0];
    p.v_stride_token = vc.strides[slot];
    p.v_stride_head = vc.strides[head];
    p.page_size = plan.page_size;
    p.num_pages = static_cast<int32_t>(std::min<int64_t>({kc.shape[0], vc.shape[0], INT32_MAX}));
    p.page_indptr = static_cast<const int32_t*>(args.table.indptr.data);
    p.page_indices = static_cast<const int32_t*>(args.table.indices.data);
  } else {
    p.k = args.k.data;
    p.k_stride_token = args.k.strides[0];
    p.k_stride_head = args.k.strides[1];
    p.v = args.v.data;
    p.v_stride_token = args.v.strides[0];
    p.v_stride_head = args.v.strides[1];
  }
  p.out = args.out.data;
  p.out_stride_token = args.out.strides[0];
  p.out_stride_head = args.out.strides[1];
  if (args.lse.defined()) {
    p.lse = static_cast<float*>(args.lse.data);
    p.lse_stride_token = args.lse.strides[0];
    p.lse_stride_head = args.lse.strides[1];
  }
  char* ws = static_cast<char*>(workspace);
  p.qo_indptr = reinterpret_cast<const int32_t*>(ws + plan.qo_indptr_offset);
  p.kv_indptr = reinterpret_cast<const int32_t*>(ws + plan.kv_indptr_offset);
  p.work = reinterpret_cast<const attention::PrefillWorkItem*>(ws + plan.work_offset);
  p.counts = reinterpret_cast<const attention::PrefillCounts*>(ws);
  if (plan.split_capacity > 0) {
    const plan::PrefillSplitLayout sl = plan::prefill_split_layout(
        plan.work_offset, plan.work_capacity, plan.split_capacity, plan.block_m, plan.head_dim_v);
    p.split_counters = reinterpret_cast<int32_t*>(ws + sl.counters);
    p.partial_lse = reinterpret_cast<float*>(ws + sl.lse);
    p.partial_o = reinterpret_cast<float*>(ws + sl.o);
  }
  // TMA boxes past the last token read zeros; an empty K/V still needs a 1-row descriptor.
  p.total_q = plan.total_q;
  p.total_kv = std::max(plan.total_kv, 1);
  p.batch_size = plan.batch_size;
  p.num_qo_heads = plan.num_qo_heads;
  p.num_kv_heads = plan.num_kv_heads;
  p.group = plan.num_qo_heads / plan.num_kv_heads;
  p.sm_scale = args.sm_scale > 0.f ? args.sm_scale : 1.f / std::sqrt(float(plan.head_dim));
  attention::PrefillVariant& v = p.variant;
  v.causal = plan.causal;
  v.window_left = plan.window_left;
  v.window_right = plan.window_right;
  v.logits_soft_cap = args.logits_soft_cap;
  v.alibi_slopes = static_cast<const float*>(args.alibi_slopes.data);
  v.sinks = static_cast<const float*>(args.sinks.data);
  v.custom_mask = static_cast<const uint8_t*>(args.custom_mask.data);
  v.mask_offsets = static_cast<const int64_t*>(args.mask_offsets.data);
  const bool run_variants = args.logits_soft_cap > 0.f || args.alibi_slopes.defined() ||
                            args.sinks.defined() || args.custom_mask.defined();
  const attention::PrefillKind kind =
      kernel_kind(plan.causal, plan.window_left, plan.window_right, run_variants);
  // A plan rebuilt field by field (the Python layer's) has no kernel pointers: a registry lookup,
  // or a resolution outside capture.
  const auto* kernel = static_cast<const runtime::ResolvedKernel*>(
      kind == attention::PrefillKind::kGeneral ? plan.general_kernel : plan.kernel);
  if (kernel == nullptr) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess) cudaGetLastError();
    st = resolve_kernel(kRunOp, plan.dtype, plan.head_dim, plan.head_dim_v, plan.block_m, kind,
                        plan.page_size > 0, capture == cudaStreamCaptureStatusNone, &kernel);
  }
  if (st.ok()) st = launch(plan, kind, p, stream, *kernel);
  if (!st.ok()) return log_error(kRunOp, st);
  if (log_level() >= 5) {
    log_outputs(kRunOp, stream, {log_arg("out", args.out), log_arg("lse", args.lse)});
  }
  return st;
}

}  // namespace flashserve
