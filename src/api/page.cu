// Public entry points of the paged KV-cache family: validate, log, check the page table (debug
// mode), dispatch, launch.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "api/arg_check.h"
#include "api/common.h"
#include "api/paged_cache_check.h"
#include "flashserve/core/dispatch.h"
#include "flashserve/page.h"
#include "flashserve/page/append_kernel.cuh"
#include "flashserve/runtime.h"
#include "plan/page_table_check.h"
#include "runtime/logging.h"

namespace flashserve {
namespace {

constexpr const char* kAppendOp = "append_paged_kv_cache";

struct AppendCall {
  const PagedKVCache& cache;
  const PageTable& table;
  const TensorView& k;
  const TensorView& v;
  const TensorView& append_indptr;
};

bool is_empty(const TensorView& t) {
  if (t.ndim < 1 || t.ndim > TensorView::kMaxDims) return false;
  bool empty = false;
  for (int d = 0; d < t.ndim; ++d) {
    if (t.shape[d] < 0) return false;  // let defined() report it
    empty = empty || t.shape[d] == 0;
  }
  return empty;
}

// Selects `t` and requires a pointer, except for an empty tensor (torch may give those none).
ArgCheck& arg_defined(ArgCheck& check, const TensorView& t, const char* name) {
  check.arg(t, name);
  if (t.data != nullptr || !is_empty(t)) check.defined();
  return check;
}

Status validate(const AppendCall& c) {
  ArgCheck check(kAppendOp);
  const TensorView& kc = c.cache.k_cache;
  const TensorView& vc = c.cache.v_cache;
  check.require(c.cache.layout == KVLayout::kNHD || c.cache.layout == KVLayout::kHND, [&] {
    return "cache.layout: expected KVLayout::kNHD or KVLayout::kHND, got " +
           str(static_cast<int>(c.cache.layout));
  });
  arg_defined(check, kc, "cache.k_cache")
      .ndim(4)
      .dtype_in({DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kFloat8E4M3,
                 DType::kFloat8E5M2})
      .inner_contiguous()
      .nonnegative_strides()
      .writable();
  arg_defined(check, vc, "cache.v_cache")
      .ndim(4)
      .same_shape(kc, "cache.k_cache")
      .same_dtype(kc, "cache.k_cache")
      .inner_contiguous()
      .nonnegative_strides()
      .writable();
  arg_defined(check, c.k, "k").ndim(3).float_dtype().inner_contiguous().nonnegative_strides();
  arg_defined(check, c.v, "v")
      .ndim(3)
      .same_shape(c.k, "k")
      .same_dtype(c.k, "k")
      .inner_contiguous()
      .nonnegative_strides();
  if (!check.ok()) return check.status();

  check.require(kc.dtype == c.k.dtype || is_fp8(kc.dtype), [&] {
    return std::string("cache.k_cache: expected dtype ") + dtype_name(c.k.dtype) +
           " (the dtype of k) or float8_e4m3 / float8_e5m2, got " + dtype_name(kc.dtype);
  });
  const CacheDims dims = cache_dims(c.cache.layout);
  const char* layout = kv_layout_name(c.cache.layout);
  const int64_t kv_heads = c.k.size(1), head_dim = c.k.size(2);
  check.require(kc.shape[dims.heads] == kv_heads, [&] {
    return "cache.k_cache: expected kv_heads = " + str(kv_heads) + " (k.size(1)) at dim " +
           str(dims.heads) + " of the " + layout + " cache, got " + str(kc.shape[dims.heads]);
  });
  check.require(kc.shape[3] == head_dim, [&] {
    return "cache.k_cache: expected head_dim = " + str(head_dim) + " (k.size(2)) at dim 3, got " +
           str(kc.shape[3]);
  });
  check.require(kc.shape[dims.page_size] >= 1, [&] {
    return "cache.k_cache: expected page_size >= 1 at dim " + str(dims.page_size) + " of the " +
           layout + " cache, got " + str(kc.shape[dims.page_size]);
  });
  if (!check.ok()) return check.status();

  arg_defined(check, c.table.indptr, "table.indptr")
      .ndim(1)
      .dtype(DType::kInt32)
      .contiguous()
      .size_at_least(0, 1);
  if (!check.ok()) return check.status();
  const int64_t batch = c.table.indptr.size(0) - 1;
  arg_defined(check, c.table.indices, "table.indices").ndim(1).dtype(DType::kInt32).contiguous();
  arg_defined(check, c.table.last_page_len, "table.last_page_len")
      .ndim(1)
      .dtype(DType::kInt32)
      .contiguous()
      .size(0, batch, "batch = table.indptr.size(0) - 1");
  arg_defined(check, c.append_indptr, "append_indptr")
      .ndim(1)
      .dtype(DType::kInt32)
      .contiguous()
      .size(0, batch + 1, "batch + 1 = table.indptr.size(0)");

  // Used by fp8 caches only, but checked for every dtype: a bad scale is a bug either way.
  check.require(std::isfinite(c.cache.k_scale) && c.cache.k_scale > 0.f, [&] {
    return "cache.k_scale: expected a finite value > 0, got " + format_float(c.cache.k_scale);
  });
  check.require(std::isfinite(c.cache.v_scale) && c.cache.v_scale > 0.f, [&] {
    return "cache.v_scale: expected a finite value > 0, got " + format_float(c.cache.v_scale);
  });
  // Limits of the kernel's 32-bit index arithmetic (page_table.cuh, append_kernel.cuh).
  constexpr int64_t kMax32 = std::numeric_limits<int32_t>::max();
  check.require(c.k.size(0) <= kMax32,
                [&] { return "k: expected at most 2^31-1 new tokens, got " + str(c.k.size(0)); });
  check.require(batch <= (int64_t{1} << 30),
                [&] { return "table.indptr: expected at most 2^30 requests, got " + str(batch); });
  check.require(kv_heads * head_dim <= (int64_t{1} << 30), [&] {
    return "k: expected kv_heads * head_dim <= 2^30, got " + str(kv_heads * head_dim);
  });
  check.require(kc.shape[dims.page_size] <= kMax32, [&] {
    return "cache.k_cache: page_size too large: " + str(kc.shape[dims.page_size]);
  });
  // The cache is written while k and v are read; K and V must land in different memory.
  check.require(disjoint(c.k, kc) && disjoint(c.k, vc),
                "k: must not overlap cache.k_cache or cache.v_cache");
  check.require(disjoint(c.v, kc) && disjoint(c.v, vc),
                "v: must not overlap cache.k_cache or cache.v_cache");
  check.require(kc.data == nullptr || kc.data != vc.data,
                "cache.v_cache: must not start at the same address as cache.k_cache (K and V "
                "would overwrite each other)");
  check.on_current_device();
  return check.status();
}

// FLASHSERVE_DEBUG_CHECKS: copy the index arrays to the host (after the work already queued on
// `stream`) and check them with plan/page_table_check. Skipped while `stream` is being captured
// into a CUDA graph, where a synchronous copy is not allowed.
Status debug_check_table(const AppendCall& c, cudaStream_t stream) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess) cudaGetLastError();
  if (capture != cudaStreamCaptureStatusNone) return Status();
  std::vector<int32_t> indptr, indices, last_page_len, append_indptr;
  cudaError_t err = cudaSuccess;
  const char* failed = "";
  auto copy = [&](const TensorView& t, const char* name, std::vector<int32_t>* out) {
    out->resize(static_cast<size_t>(t.numel()));
    if (err != cudaSuccess || out->empty()) return;
    err = cudaMemcpyAsync(out->data(), t.data, out->size() * sizeof(int32_t),
                          cudaMemcpyDeviceToHost, stream);
    if (err != cudaSuccess) failed = name;
  };
  copy(c.table.indptr, "table.indptr", &indptr);
  copy(c.table.indices, "table.indices", &indices);
  copy(c.table.last_page_len, "table.last_page_len", &last_page_len);
  copy(c.append_indptr, "append_indptr", &append_indptr);
  if (err == cudaSuccess) {
    err = cudaStreamSynchronize(stream);
    if (err != cudaSuccess) failed = "the page table";
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    return Status(StatusCode::kCudaError, std::string(kAppendOp) + ": debug checks: copying " +
                                              failed +
                                              " to the host failed: " + cudaGetErrorString(err));
  }
  const TensorView& kc = c.cache.k_cache;
  plan::HostPageTable t;
  t.indptr = indptr.data();
  t.indices = indices.data();
  t.last_page_len = last_page_len.data();
  t.batch = c.table.indptr.size(0) - 1;
  t.num_indices = c.table.indices.size(0);
  t.num_pages = kc.shape[0];
  t.page_size = kc.shape[cache_dims(c.cache.layout).page_size];
  Status st = plan::check_page_table(kAppendOp, t);
  if (!st.ok()) return st;
  return plan::check_append_indptr(kAppendOp, t, append_indptr.data(), c.k.size(0));
}

// The cache's page / slot / head strides, 0 for a dim of size 1 (stride_of: its stride is never
// used, and an odd one must not force the scalar path).
page::CacheStrides cache_strides(const TensorView& t, KVLayout layout) {
  const CacheDims dims = cache_dims(layout);
  return {stride_of(t, 0), stride_of(t, dims.page_size), stride_of(t, dims.heads)};
}

// T, TCache: see page/params.h (a plain copy passes one unsigned type of the element's width).
template <class T, class TCache>
cudaError_t launch(const AppendCall& c, cudaStream_t stream) {
  const TensorView& kc = c.cache.k_cache;
  page::AppendParams<T, TCache> p;
  p.k_cache = static_cast<TCache*>(kc.data);
  p.v_cache = static_cast<TCache*>(c.cache.v_cache.data);
  p.k_cache_strides = cache_strides(kc, c.cache.layout);
  p.v_cache_strides = cache_strides(c.cache.v_cache, c.cache.layout);
  p.k = static_cast<const T*>(c.k.data);
  p.v = static_cast<const T*>(c.v.data);
  p.k_strides = {stride_of(c.k, 0), stride_of(c.k, 1)};
  p.v_strides = {stride_of(c.v, 0), stride_of(c.v, 1)};
  p.indptr = static_cast<const int32_t*>(c.table.indptr.data);
  p.indices = static_cast<const int32_t*>(c.table.indices.data);
  p.last_page_len = static_cast<const int32_t*>(c.table.last_page_len.data);
  p.append_indptr = static_cast<const int32_t*>(c.append_indptr.data);
  p.num_indices = c.table.indices.size(0);
  p.num_pages = kc.shape[0];
  p.batch = static_cast<int>(c.table.indptr.size(0) - 1);
  p.new_tokens = static_cast<int>(c.k.size(0));
  p.page_size = static_cast<int>(kc.shape[cache_dims(c.cache.layout).page_size]);
  p.kv_heads = static_cast<int>(c.k.size(1));
  p.head_dim = static_cast<int>(c.k.size(2));
  p.k_scale = c.cache.k_scale;
  p.v_scale = c.cache.v_scale;
  return page::launch_append_paged_kv(p, stream);
}

cudaError_t dispatch_append(const AppendCall& c, cudaStream_t stream) {
  const DType cache_dtype = c.cache.k_cache.dtype;
  cudaError_t err = cudaSuccess;
  if (cache_dtype == c.k.dtype) {
    // fp16 and bf16 share one instantiation: the bits are copied unchanged.
    return dtype_size(cache_dtype) == 2 ? launch<uint16_t, uint16_t>(c, stream)
                                        : launch<uint32_t, uint32_t>(c, stream);
  }
  dispatch_float(c.k.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    err = cache_dtype == DType::kFloat8E4M3 ? launch<T, __nv_fp8_e4m3>(c, stream)
                                            : launch<T, __nv_fp8_e5m2>(c, stream);
  });
  return err;
}

}  // namespace

const char* kv_layout_name(KVLayout layout) {
  switch (layout) {
    case KVLayout::kNHD:
      return "NHD";
    case KVLayout::kHND:
      return "HND";
  }
  return "unknown";
}

Status append_paged_kv_cache(const PagedKVCache& cache, const PageTable& table, const TensorView& k,
                             const TensorView& v, const TensorView& append_indptr,
                             cudaStream_t stream) {
  const AppendCall c{cache, table, k, v, append_indptr};
  if (log_level() > 0) {
    log_call(kAppendOp, stream,
             {log_arg("cache.k_cache", cache.k_cache), log_arg("cache.v_cache", cache.v_cache),
              log_arg("cache.layout", kv_layout_name(cache.layout)),
              log_arg("cache.k_scale", cache.k_scale), log_arg("cache.v_scale", cache.v_scale),
              log_arg("table.indptr", table.indptr), log_arg("table.indices", table.indices),
              log_arg("table.last_page_len", table.last_page_len), log_arg("k", k), log_arg("v", v),
              log_arg("append_indptr", append_indptr)});
  }
  Status st = validate(c);
  if (st.ok() && debug_checks()) st = debug_check_table(c, stream);
  if (!st.ok()) return log_error(kAppendOp, st);
  if (k.numel() == 0 || table.indptr.size(0) == 1) return st;  // nothing to append
  st = launch_status(kAppendOp, dispatch_append(c, stream));
  if (!st.ok()) return log_error(kAppendOp, st);
  if (log_level() >= 5) {
    log_outputs(kAppendOp, stream,
                {log_arg("cache.k_cache", cache.k_cache), log_arg("cache.v_cache", cache.v_cache)});
  }
  return st;
}

}  // namespace flashserve
