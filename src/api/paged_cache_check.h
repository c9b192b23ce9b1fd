// The 4-D paged KV cache tensors of decode, prefill and append (flashserve/page.h): their dims by
// layout, and the argument checks the attention runs share.
#pragma once

#include <cstdint>
#include <string>

#include "api/arg_check.h"
#include "flashserve/page.h"

namespace flashserve {

// Dims of a 4-D cache tensor by layout: NHD [pages, page_size, heads, dim], HND [pages, heads,
// page_size, dim].
struct CacheDims {
  int page_size;
  int heads;
};
inline CacheDims cache_dims(KVLayout layout) {
  return layout == KVLayout::kNHD ? CacheDims{1, 2} : CacheDims{2, 1};
}

// The stride of dim d, 0 where the dim has one element (its stride is never used).
inline int64_t stride_of(const TensorView& t, int d) {
  return t.shape[d] == 1 ? 0 : t.strides[d];
}

// cache.k_cache / cache.v_cache: defined, 4-D, `dtype`, the same shape (but for v's head dim,
// `head_dim_v`; 0: head_dim), last dim contiguous, heads / page size / head dim as given for
// `layout`, and (cp.async moves 16-byte chunks) a 16-byte aligned pointer and 16-byte multiple
// strides. Stops at the first failing group.
inline void check_paged_cache(ArgCheck& check, const PagedKVCache& cache, KVLayout layout,
                              DType dtype, int num_kv_heads, int page_size, int head_dim,
                              int head_dim_v = 0) {
  const TensorView& kc = cache.k_cache;
  const TensorView& vc = cache.v_cache;
  if (head_dim_v == 0) head_dim_v = head_dim;
  check.arg(kc, "cache.k_cache")
      .defined()
      .ndim(4)
      .dtype(dtype)
      .inner_contiguous()
      .nonnegative_strides();
  check.arg(vc, "cache.v_cache").defined();
  if (head_dim_v == head_dim) {
    check.same_shape(kc, "cache.k_cache");
  } else if (check.ok()) {
    check.ndim(4);
    for (int d = 0; d < 3 && check.ok(); ++d)
      check.size(d, kc.shape[d], "cache.k_cache");
  }
  check.same_dtype(kc, "cache.k_cache").inner_contiguous().nonnegative_strides();
  if (!check.ok()) return;
  const CacheDims dims = cache_dims(layout);
  check.arg(kc, "cache.k_cache")
      .size(dims.heads, num_kv_heads, "plan.num_kv_heads")
      .size(dims.page_size, page_size, "plan.page_size")
      .size(3, head_dim, "plan.head_dim");
  check.arg(vc, "cache.v_cache").size(3, head_dim_v, "plan.head_dim_v");
  for (const TensorView* t : {&kc, &vc}) {
    const int64_t es = dtype_size(t->dtype);
    bool aligned = reinterpret_cast<uintptr_t>(t->data) % 16 == 0;
    for (int d = 0; d < 3; ++d)
      aligned = aligned && (stride_of(*t, d) * es) % 16 == 0;
    check.require(aligned, [&] {
      return std::string(t == &kc ? "cache.k_cache" : "cache.v_cache") +
             ": expected a 16-byte aligned pointer and 16-byte multiple strides, got " +
             t->describe();
    });
  }
}

}  // namespace flashserve
