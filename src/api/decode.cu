// Public entry points of paged decode attention: plan (host schedule -> workspace), run (validate,
// log, check the page table in debug mode, dispatch, launch the decode kernel, which also merges
// split-KV partials).
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "api/arg_check.h"
#include "api/common.h"
#include "api/paged_cache_check.h"
#include "api/decode_kernels.h"
#include "flashserve/attention/decode_kernel.cuh"
#include "flashserve/core/dispatch.h"
#include "flashserve/decode.h"
#include "flashserve/runtime.h"
#include "plan/decode_plan.h"
#include "plan/page_table_check.h"
#include "runtime/kernel_loader.h"
#include "runtime/kernel_registry.h"
#include "runtime/logging.h"

namespace flashserve {
namespace {

constexpr const char* kSizeOp = "decode_workspace_size";
constexpr const char* kPlanOp = "decode_plan";
constexpr const char* kRunOp = "decode_run";

bool supported_head_dim(int d) {
  return d == 64 || d == 128 || d == 256;
}

Status validate_request(const char* op, const DecodePlanRequest& r) {
  if (r.batch_size < 0)
    return invalid(op, "req.batch_size: expected >= 0, got " + str(r.batch_size));
  if (r.num_kv_heads < 1)
    return invalid(op, "req.num_kv_heads: expected >= 1, got " + str(r.num_kv_heads));
  if (r.num_qo_heads < 1 || r.num_qo_heads % r.num_kv_heads != 0) {
    return invalid(op, "req.num_qo_heads: expected a positive multiple of num_kv_heads = " +
                           str(r.num_kv_heads) + ", got " + str(r.num_qo_heads));
  }
  if (!supported_head_dim(r.head_dim))
    return invalid(op, "req.head_dim: expected 64, 128 or 256, got " + str(r.head_dim));
  if (r.page_size < 1) return invalid(op, "req.page_size: expected >= 1, got " + str(r.page_size));
  if (r.q_dtype != DType::kFloat16 && r.q_dtype != DType::kBFloat16) {
    return invalid(
        op, std::string("req.q_dtype: expected float16 or bfloat16, got ") + dtype_name(r.q_dtype));
  }
  if (r.kv_dtype != r.q_dtype && !is_fp8(r.kv_dtype)) {
    return invalid(op, std::string("req.kv_dtype: expected ") + dtype_name(r.q_dtype) +
                           " (q_dtype) or float8_e4m3 / float8_e5m2, got " +
                           dtype_name(r.kv_dtype));
  }
  if (r.layout != KVLayout::kNHD && r.layout != KVLayout::kHND)
    return invalid(op, "req.layout: expected KVLayout::kNHD or KVLayout::kHND");
  if (r.fixed_split_tokens < 0)
    return invalid(op, "req.fixed_split_tokens: expected >= 0, got " + str(r.fixed_split_tokens));
  if (r.num_sms < 0) return invalid(op, "req.num_sms: expected >= 0, got " + str(r.num_sms));
  if (r.max_batch_size < 0 || r.max_q_tokens < 0 || r.max_kv_tokens < 0)
    return invalid(op, "req.max_batch_size: capacities must be >= 0");
  if (r.batch_size > 0 && (r.indptr == nullptr || r.last_page_len == nullptr))
    return invalid(op, "req.indptr: expected host copies of indptr and last_page_len");
  return Status();
}

plan::DecodeScheduleInput schedule_input(const DecodePlanRequest& r, int sms) {
  plan::DecodeScheduleInput in;
  in.indptr = r.indptr;
  in.last_page_len = r.last_page_len;
  in.q_indptr = r.q_indptr;
  in.batch = r.batch_size;
  in.page_size = r.page_size;
  in.num_kv_heads = r.num_kv_heads;
  in.group = r.num_qo_heads / r.num_kv_heads;
  in.head_dim = r.head_dim;
  in.deterministic = r.deterministic;
  in.fixed_split_tokens = r.fixed_split_tokens;
  in.max_batch_size = r.max_batch_size;
  in.max_q_tokens = r.max_q_tokens;
  in.max_kv_tokens = r.max_kv_tokens;
  // The wide CTA where the capacity allows few units (tile_policy.h, decode_wide_max_units): a
  // function of the capacity, so every re-plan of one capacity keeps the kernel a graph holds.
  const bool wide = !r.deterministic && plan::decode_capacity_units(in) <=
                                            attention::decode_wide_max_units(
                                                r.head_dim, dtype_size(r.kv_dtype), in.group, sms);
  in.cta_threads = (wide ? attention::kDecodeWideWarps : 4) * 32;
  in.target_ctas = sms * (wide ? 1 : attention::kDecodeCtasPerSm);
  return in;
}

// --- run -------------------------------------------------------------------------------------

Status validate_run(const DecodePlan& plan, const DecodeArgs& a, const void* workspace) {
  ArgCheck check(kRunOp);
  check.require(plan.workspace_bytes > 0 && plan.num_kv_heads > 0,
                "plan: expected a plan made by decode_plan");
  check.require(plan.cta_warps == 4 || plan.cta_warps == attention::kDecodeWideWarps,
                "plan: expected a plan made by decode_plan (cta_warps 4 or 8)");
  check.require(workspace != nullptr,
                "workspace: expected the device workspace given to decode_plan");
  check.require(reinterpret_cast<uintptr_t>(workspace) % 16 == 0,
                "workspace: expected a 16-byte aligned pointer");
  if (!check.ok()) return check.status();
  const int H = plan.num_qo_heads, D = plan.head_dim;
  check.arg(a.q, "q")
      .defined()
      .ndim(3)
      .dtype(plan.q_dtype)
      .size(1, H, "plan.num_qo_heads")
      .size(2, D, "plan.head_dim")
      .inner_contiguous()
      .nonnegative_strides();
  if (!check.ok()) return check.status();
  check.require(a.q.size(0) >= plan.q_tokens, [&] {
    return "q: expected at least " + str(plan.q_tokens) + " query tokens (the plan's), got " +
           str(a.q.size(0));
  });
  check.arg(a.out, "out")
      .defined()
      .same_shape(a.q, "q")
      .dtype(plan.q_dtype)
      .inner_contiguous()
      .nonnegative_strides()
      .writable();
  check.require(disjoint(a.out, a.q), "out: must not overlap q");
  if (a.lse.defined()) {
    check.arg(a.lse, "lse")
        .defined()
        .ndim(2)
        .dtype(DType::kFloat32)
        .size(0, a.q.size(0), "q.size(0)")
        .size(1, H, "plan.num_qo_heads")
        .nonnegative_strides()
        .writable();
    check.require(disjoint(a.lse, a.out), "lse: must not overlap out");
  }
  check.require(a.cache.layout == plan.layout, [&] {
    return std::string("cache.layout: expected ") + kv_layout_name(plan.layout) +
           " (the plan's), got " + kv_layout_name(a.cache.layout);
  });
  check_paged_cache(check, a.cache, plan.layout, plan.kv_dtype, plan.num_kv_heads, plan.page_size,
                    D);
  if (!check.ok()) return check.status();
  check.require(std::isfinite(a.cache.k_scale) && a.cache.k_scale > 0.f, [&] {
    return "cache.k_scale: expected a finite value > 0, got " + format_float(a.cache.k_scale);
  });
  check.require(std::isfinite(a.cache.v_scale) && a.cache.v_scale > 0.f, [&] {
    return "cache.v_scale: expected a finite value > 0, got " + format_float(a.cache.v_scale);
  });
  check.arg(a.table.indptr, "table.indptr")
      .defined()
      .ndim(1)
      .dtype(DType::kInt32)
      .contiguous()
      .size_at_least(0, int64_t{plan.batch_size} + 1);
  check.arg(a.table.last_page_len, "table.last_page_len")
      .defined()
      .ndim(1)
      .dtype(DType::kInt32)
      .contiguous()
      .size_at_least(0, plan.batch_size);
  check.arg(a.table.indices, "table.indices").ndim(1).dtype(DType::kInt32).contiguous();
  if (a.table.indices.numel() > 0) check.defined();
  check.require(std::isfinite(a.sm_scale) && a.sm_scale >= 0.f, [&] {
    return "sm_scale: expected a finite value >= 0 (0 = 1/sqrt(head_dim)), got " +
           format_float(a.sm_scale);
  });
  check.require(std::isfinite(a.logits_soft_cap) && a.logits_soft_cap >= 0.f, [&] {
    return "logits_soft_cap: expected a finite value >= 0 (0 = off), got " +
           format_float(a.logits_soft_cap);
  });
  check.require(a.window_left >= -1, [&] {
    return "window_left: expected >= 0, or -1 for no window, got " + str(a.window_left);
  });
  if (a.sinks.defined()) {
    check.arg(a.sinks, "sinks")
        .defined()
        .ndim(1)
        .dtype(DType::kFloat32)
        .size(0, H, "num_qo_heads")
        .contiguous();
  }
  check.on_current_device();
  return check.status();
}

// FLASHSERVE_DEBUG_CHECKS: the device page table, copied to the host, must be valid and hold at
// least the plan's requests. Skipped during graph capture.
Status debug_check_table(const DecodePlan& plan, const DecodeArgs& a, cudaStream_t stream) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess) cudaGetLastError();
  if (capture != cudaStreamCaptureStatusNone) return Status();
  std::vector<int32_t> indptr(plan.batch_size + 1), last(plan.batch_size),
      indices(a.table.indices.numel());
  cudaError_t err = cudaMemcpyAsync(indptr.data(), a.table.indptr.data, indptr.size() * 4,
                                    cudaMemcpyDeviceToHost, stream);
  if (err == cudaSuccess && !last.empty())
    err = cudaMemcpyAsync(last.data(), a.table.last_page_len.data, last.size() * 4,
                          cudaMemcpyDeviceToHost, stream);
  if (err == cudaSuccess && !indices.empty())
    err = cudaMemcpyAsync(indices.data(), a.table.indices.data, indices.size() * 4,
                          cudaMemcpyDeviceToHost, stream);
  if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return Status(StatusCode::kCudaError,
                  std::string(kRunOp) +
                      ": debug checks: copying the page table failed: " + cudaGetErrorString(err));
  }
  plan::HostPageTable t;
  t.indptr = indptr.data();
  t.indices = indices.data();
  t.last_page_len = last.data();
  t.batch = plan.batch_size;
  t.num_indices = static_cast<int64_t>(indices.size());
  t.num_pages = a.cache.k_cache.shape[0];
  t.page_size = plan.page_size;
  return plan::check_page_table(kRunOp, t);
}

template <class TQ, class TKV>
attention::DecodeParams<TQ, TKV> make_params(const DecodePlan& plan, const DecodeArgs& a,
                                             void* workspace) {
  using namespace attention;
  auto* ws = static_cast<uint8_t*>(workspace);
  DecodeParams<TQ, TKV> p;
  p.q = static_cast<const TQ*>(a.q.data);
  p.q_stride_token = a.q.strides[0];
  p.q_stride_head = a.q.strides[1];
  p.out = static_cast<TQ*>(a.out.data);
  p.out_stride_token = a.out.strides[0];
  p.out_stride_head = a.out.strides[1];
  if (a.lse.defined()) {
    p.lse = static_cast<float*>(a.lse.data);
    p.lse_stride_token = a.lse.strides[0];
    p.lse_stride_head = a.lse.strides[1];
  }
  const CacheDims dims = cache_dims(plan.layout);
  const TensorView& kc = a.cache.k_cache;
  const TensorView& vc = a.cache.v_cache;
  p.k_cache = static_cast<const TKV*>(kc.data);
  p.v_cache = static_cast<const TKV*>(vc.data);
  p.k_strides = {kc.strides[0], kc.strides[dims.page_size], kc.strides[dims.heads]};
  p.v_strides = {vc.strides[0], vc.strides[dims.page_size], vc.strides[dims.heads]};
  p.indptr = static_cast<const int32_t*>(a.table.indptr.data);
  p.indices = static_cast<const int32_t*>(a.table.indices.data);
  p.num_indices = a.table.indices.numel();
  p.num_pages = kc.shape[0];
  p.page_size = plan.page_size;
  p.group = plan.num_qo_heads / plan.num_kv_heads;
  const float sm_scale = a.sm_scale > 0.f ? a.sm_scale : 1.f / std::sqrt(float(plan.head_dim));
  const float k_scale = is_fp8(plan.kv_dtype) ? a.cache.k_scale : 1.f;
  p.q_scale = LogitTransform::q_scale(sm_scale, k_scale, a.logits_soft_cap);
  p.v_scale = is_fp8(plan.kv_dtype) ? a.cache.v_scale : 1.f;
  p.variant.logits_soft_cap = a.logits_soft_cap;
  p.variant.window_left = a.window_left;
  p.variant.sinks = a.sinks.defined() ? static_cast<const float*>(a.sinks.data) : nullptr;
  p.counts = reinterpret_cast<const DecodeCounts*>(ws);
  p.work_counter = &reinterpret_cast<DecodeCounts*>(ws)->next_work;
  p.work = reinterpret_cast<const DecodeWorkItem*>(ws + plan.work_offset);
  p.partial_out = reinterpret_cast<float*>(ws + plan.partial_out_offset);
  p.partial_lse = reinterpret_cast<float*>(ws + plan.partial_lse_offset);
  p.merge_counters = reinterpret_cast<int32_t*>(
      ws + plan::decode_counters_offset(plan.merge_offset, plan.merge_capacity));
  p.group_counters = p.merge_counters + plan.merge_capacity;
  return p;
}

// The grid depends only on the capacity and the device: a captured graph stays valid.
int decode_grid(const DecodePlan& plan, int blocks_per_sm) {
  return static_cast<int>(std::max<int64_t>(
      1,
      std::min<int64_t>(plan.work_capacity, int64_t{plan.num_sms} * std::max(blocks_per_sm, 1))));
}

// Threads and dynamic shared memory of the decode kernel, 4-warp or wide (the same tile for a
// prebuilt and a run-time-compiled specialization); plain constants, no kernel is instantiated.
void kernel_shape(int head_dim, int kv_bytes, bool wide, int* threads, int* smem) {
  dispatch_int<64, 128, 256>(head_dim, [&](auto hd) {
    dispatch_int<1, 2>(kv_bytes, [&](auto kb) {
      auto set = [&](auto tile) {
        using Tile = decltype(tile);
        *threads = Tile::kThreads;
        *smem = attention::decode_smem_bytes<Tile>();
      };
      if (wide) {
        set(attention::DecodeTile<decltype(hd)::value, decltype(kb)::value,
                                  attention::kDecodeWideWarps>{});
      } else {
        set(attention::DecodeTile<decltype(hd)::value, decltype(kb)::value>{});
      }
    });
  });
}

template <class TQ, class TKV>
Status run_typed(const DecodePlan& plan, const DecodeArgs& a, void* ws, cudaStream_t stream,
                 const runtime::ResolvedKernel& k) {
  attention::DecodeParams<TQ, TKV> p = make_params<TQ, TKV>(plan, a, ws);
  const bool wide = plan.cta_warps == attention::kDecodeWideWarps;
  if (k.prebuilt != nullptr) {
    const auto& fns = *static_cast<const detail::DecodeKernelFns*>(k.prebuilt);
    int blocks_per_sm = 0;
    cudaError_t err = fns.blocks_per_sm(&blocks_per_sm, wide);
    if (err == cudaSuccess) err = fns.launch(&p, decode_grid(plan, blocks_per_sm), wide, stream);
    if (err != cudaSuccess) return launch_status(kRunOp, err);
  } else {
    int threads = 0, smem = 0, blocks_per_sm = 0;
    kernel_shape(plan.head_dim, static_cast<int>(sizeof(TKV)), wide, &threads, &smem);
    if (k.module->size() <= (wide ? 1u : 0u)) {
      return Status(StatusCode::kInternal,
                    std::string(kRunOp) + ": " + k.name + ": the image has no wide kernel");
    }
    runtime::LoadedKernel& kernel = k.module->kernel(wide ? 1 : 0);
    Status st = runtime::prepare_kernel(kernel, threads, smem, &blocks_per_sm);
    runtime::KernelLaunch launch;
    launch.grid = dim3(static_cast<unsigned>(decode_grid(plan, blocks_per_sm)));
    launch.block = dim3(static_cast<unsigned>(threads));
    launch.smem_bytes = smem;
    launch.stream = stream;
    void* args[] = {&p};
    if (st.ok()) st = runtime::launch_kernel(kernel, launch, args);
    if (!st.ok())
      return Status(st.code(), std::string(kRunOp) + ": " + k.name + ": " + st.message());
  }
  return Status();
}

Status dispatch_run(const DecodePlan& plan, const DecodeArgs& a, void* ws, cudaStream_t stream,
                    const runtime::ResolvedKernel& k) {
  auto with_q = [&](auto qtag) {
    using TQ = typename decltype(qtag)::type;
    switch (plan.kv_dtype) {
      case DType::kFloat8E4M3:
        return run_typed<TQ, __nv_fp8_e4m3>(plan, a, ws, stream, k);
      case DType::kFloat8E5M2:
        return run_typed<TQ, __nv_fp8_e5m2>(plan, a, ws, stream, k);
      default:
        return run_typed<TQ, TQ>(plan, a, ws, stream, k);
    }
  };
  return plan.q_dtype == DType::kFloat16 ? with_q(TypeTag<half>{}) : with_q(TypeTag<nv_bfloat16>{});
}

// The decode kernel specialization of (q dtype, kv dtype, head_dim) for the current device:
// prebuilt, from the kernel cache, or compiled now (docs/kernel_cache.md). `may_compile` false:
// only one already resolved in this process (decode_run during graph capture).
Status resolve_kernel(const char* op, DType q, DType kv, int head_dim, bool may_compile,
                      const runtime::ResolvedKernel** out) {
  int cc = 0;
  Status st = runtime::KernelRegistry::current_device_cc(&cc);
  if (!st.ok()) return Status(st.code(), std::string(op) + ": " + st.message());
  runtime::KernelSpec spec = detail::decode_kernel_spec(q, kv, head_dim);
  spec.cc = static_cast<int16_t>(cc);
  runtime::KernelRegistry& registry = runtime::KernelRegistry::global();
  if (!may_compile) {
    *out = registry.find(spec);
    if (*out != nullptr) return Status();
    return Status(StatusCode::kInvalidArgument,
                  std::string(op) + ": plan: kernel " + registry.describe(spec) +
                      " is not loaded, and it cannot be loaded during graph capture: expected a "
                      "plan made by decode_plan");
  }
  st = registry.resolve(spec, out);
  if (st.ok() && (*out)->module) {
    // Prepared here, outside capture: decode_run then only launches (either kernel).
    for (size_t i = 0; st.ok() && i < (*out)->module->size() && i < 2; ++i) {
      int threads = 0, smem = 0, blocks = 0;
      kernel_shape(head_dim, dtype_size(kv), i == 1, &threads, &smem);
      st = runtime::prepare_kernel((*out)->module->kernel(i), threads, smem, &blocks);
    }
  }
  if (!st.ok()) return Status(st.code(), std::string(op) + ": " + st.message());
  return Status();
}

}  // namespace

Status decode_workspace_size(const DecodePlanRequest& req, size_t* device_bytes) {
  Status st = validate_request(kSizeOp, req);
  if (st.ok() && device_bytes == nullptr) st = invalid(kSizeOp, "device_bytes: expected non-null");
  int sms = 0;
  if (st.ok()) st = resolve_num_sms(kSizeOp, req.num_sms, &sms);
  if (!st.ok()) return log_error(kSizeOp, st);
  const plan::DecodeScheduleInput in = schedule_input(req, sms);
  *device_bytes = plan::decode_workspace_layout(plan::decode_capacity(in), req.head_dim).total;
  return st;
}

Status decode_plan(const DecodePlanRequest& req, void* workspace, size_t workspace_bytes,
                   cudaStream_t stream, DecodePlan* out) {
  if (log_level() > 0) {
    log_call(kPlanOp, stream,
             {log_arg("batch_size", req.batch_size), log_arg("num_qo_heads", req.num_qo_heads),
              log_arg("num_kv_heads", req.num_kv_heads), log_arg("head_dim", req.head_dim),
              log_arg("page_size", req.page_size), log_arg("deterministic", req.deterministic)});
  }
  Status st = validate_request(kPlanOp, req);
  if (st.ok() && out == nullptr) st = invalid(kPlanOp, "plan: expected non-null");
  int sms = 0;
  if (st.ok()) st = resolve_num_sms(kPlanOp, req.num_sms, &sms);
  plan::DecodeSchedule s;
  plan::DecodeScheduleInput in;
  if (st.ok()) {
    in = schedule_input(req, sms);
    st = plan::make_decode_schedule(kPlanOp, in, &s);
  }
  if (st.ok() && (workspace == nullptr || workspace_bytes < s.layout.total)) {
    st =
        invalid(kPlanOp, "workspace: too small: " + str(static_cast<int64_t>(s.layout.total)) +
                             " bytes needed (decode_workspace_size), got " +
                             str(static_cast<int64_t>(workspace == nullptr ? 0 : workspace_bytes)));
  }
  if (st.ok() && reinterpret_cast<uintptr_t>(workspace) % 16 != 0)
    st = invalid(kPlanOp, "workspace: expected a 16-byte aligned pointer");
  if (!st.ok()) return log_error(kPlanOp, st);
  const std::vector<unsigned char> image = plan::decode_workspace_image(s);
  const cudaError_t err =
      cudaMemcpyAsync(workspace, image.data(), image.size(), cudaMemcpyHostToDevice, stream);
  if (err != cudaSuccess) {
    cudaGetLastError();
    st =
        Status(StatusCode::kCudaError,
               std::string(kPlanOp) + ": writing the work list failed: " + cudaGetErrorString(err));
    return log_error(kPlanOp, st);
  }
  const runtime::ResolvedKernel* kernel = nullptr;
  st = resolve_kernel(kPlanOp, req.q_dtype, req.kv_dtype, req.head_dim, true, &kernel);
  if (!st.ok()) return log_error(kPlanOp, st);
  DecodePlan& p = *out;
  p = DecodePlan();
  p.batch_size = req.batch_size;
  p.q_tokens = static_cast<int>(s.q_tokens);
  p.num_qo_heads = req.num_qo_heads;
  p.num_kv_heads = req.num_kv_heads;
  p.head_dim = req.head_dim;
  p.page_size = req.page_size;
  p.q_dtype = req.q_dtype;
  p.kv_dtype = req.kv_dtype;
  p.layout = req.layout;
  p.deterministic = req.deterministic;
  p.split_tokens = s.split_tokens;
  p.cta_warps = in.cta_threads / 32;
  p.num_work = static_cast<int>(s.work.size());
  p.num_merge = static_cast<int>(s.merge.size());
  p.num_partials = static_cast<int>(s.num_partials);
  p.work_capacity = s.capacity.work;
  p.merge_capacity = s.capacity.merge;
  p.partial_capacity = s.capacity.partials;
  p.num_sms = sms;
  p.workspace_bytes = s.layout.total;
  p.work_offset = s.layout.work;
  p.merge_offset = s.layout.merge;
  p.partial_out_offset = s.layout.partial_out;
  p.partial_lse_offset = s.layout.partial_lse;
  p.kernel = kernel;
  return st;
}

Status decode_plan_resolve_kernel(DecodePlan* plan) {
  if (plan == nullptr)
    return Status(StatusCode::kInvalidArgument, std::string(kRunOp) + ": plan: null");
  const runtime::ResolvedKernel* kernel = nullptr;
  Status st = resolve_kernel(kRunOp, plan->q_dtype, plan->kv_dtype, plan->head_dim, true, &kernel);
  if (st.ok()) plan->kernel = kernel;
  return st;
}

Status decode_run(const DecodePlan& plan, const DecodeArgs& args, void* workspace,
                  cudaStream_t stream) {
  if (log_level() > 0) {
    log_call(
        kRunOp, stream,
        {log_arg("q", args.q), log_arg("out", args.out), log_arg("lse", args.lse),
         log_arg("cache.k_cache", args.cache.k_cache), log_arg("cache.v_cache", args.cache.v_cache),
         log_arg("table.indptr", args.table.indptr), log_arg("table.indices", args.table.indices),
         log_arg("table.last_page_len", args.table.last_page_len),
         log_arg("sm_scale", args.sm_scale), log_arg("logits_soft_cap", args.logits_soft_cap),
         log_arg("window_left", args.window_left), log_arg("sinks", args.sinks)});
  }
  Status st = validate_run(plan, args, workspace);
  if (st.ok() && debug_checks()) st = debug_check_table(plan, args, stream);
  if (!st.ok()) return log_error(kRunOp, st);
  // A plan rebuilt field by field (the Python layer's) has no kernel pointer: a registry lookup,
  // or a resolution outside capture.
  const auto* kernel = static_cast<const runtime::ResolvedKernel*>(plan.kernel);
  if (kernel == nullptr) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess) cudaGetLastError();
    st = resolve_kernel(kRunOp, plan.q_dtype, plan.kv_dtype, plan.head_dim,
                        capture == cudaStreamCaptureStatusNone, &kernel);
  }
  if (st.ok()) st = dispatch_run(plan, args, workspace, stream, *kernel);
  if (!st.ok()) return log_error(kRunOp, st);
  if (log_level() >= 5) {
    log_outputs(kRunOp, stream, {log_arg("out", args.out), log_arg("lse", args.lse)});
  }
  return st;
}

namespace detail {

void decode_launch_shape(DType q, DType kv, int head_dim, bool wide, int* threads, int* smem_bytes,
                         int* params_bytes) {
  kernel_shape(head_dim, dtype_size(kv), wide, threads, smem_bytes);
  auto with_q = [&](auto qtag) {
    using TQ = typename decltype(qtag)::type;
    switch (kv) {
      case DType::kFloat8E4M3:
        return sizeof(attention::DecodeParams<TQ, __nv_fp8_e4m3>);
      case DType::kFloat8E5M2:
        return sizeof(attention::DecodeParams<TQ, __nv_fp8_e5m2>);
      default:
        return sizeof(attention::DecodeParams<TQ, TQ>);
    }
  };
  *params_bytes = static_cast<int>(q == DType::kFloat16 ? with_q(TypeTag<half>{})
                                                        : with_q(TypeTag<nv_bfloat16>{}));
}

}  // namespace detail
}  // namespace flashserve
