// Parameters of the paged KV-cache append kernel (include/flashserve/page.h, docs/paged_kv.md).
#pragma once

#include <cstdint>

namespace flashserve::page {

// Element offset of (page, slot, head, d) in one cache tensor:
//   page * page + slot * slot + head * head + d.
// NHD and HND differ only in which of `slot` and `head` is the larger stride, so the kernel needs
// no layout switch. Strides of size-1 dims are set to 0 by the caller (they are never used, and
// an odd one must not push the copy onto the scalar path).
struct CacheStrides {
  int64_t page = 0;
  int64_t slot = 0;
  int64_t head = 0;
};

// Element offset of (token, head, d) in k or v: token * token + head * head + d.
struct TokenStrides {
  int64_t token = 0;
  int64_t head = 0;
};

// T: the element type of k and v. TCache: the cache's. For a plain copy (cache dtype == k dtype)
// the caller passes the same unsigned type of the element's width for both (uint16_t for fp16 and
// bf16, uint32_t for fp32): the bits move unchanged and one instantiation serves both 16-bit types.
template <class T, class TCache>
struct AppendParams {
  TCache* k_cache = nullptr;  // [num_pages, page_size, kv_heads, head_dim] (NHD) or HND
  TCache* v_cache = nullptr;
  CacheStrides k_cache_strides;
  CacheStrides v_cache_strides;
  const T* k = nullptr;  // [new_tokens, kv_heads, head_dim]
  const T* v = nullptr;
  TokenStrides k_strides;
  TokenStrides v_strides;

  // The CSR page table and the new tokens' rows, all int32 on the device.
  const int32_t* indptr = nullptr;         // [batch + 1]
  const int32_t* indices = nullptr;        // [num_indices]
  const int32_t* last_page_len = nullptr;  // [batch]
  const int32_t* append_indptr = nullptr;  // [batch + 1]
  int64_t num_indices = 0;                 // entries of `indices` that may be read
  int64_t num_pages = 0;                   // page ids outside [0, num_pages) are skipped

  int batch = 0;
  int new_tokens = 0;
  int page_size = 0;
  int kv_heads = 0;
  int head_dim = 0;
  // fp8 caches store value / scale; unused by the plain copy.
  float k_scale = 1.f;
  float v_scale = 1.f;
};

}  // namespace flashserve::page
