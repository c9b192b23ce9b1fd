// CPU reference for the paged KV-cache append: applies the append to a host copy of the cache
// storage, byte for byte, with the kernel's rules for tokens the table cannot hold (skipped).
#pragma once

#include <cstdint>
#include <vector>

#include "host_dtype.h"

namespace fs_test::ref {

// A CSR page table and the new tokens' rows, on the host (docs/paged_kv.md).
struct HostPageTable {
  std::vector<int32_t> indptr;         // [batch + 1]
  std::vector<int32_t> indices;        // [>= indptr[batch]]
  std::vector<int32_t> last_page_len;  // [batch]
  std::vector<int32_t> append_indptr;  // [batch + 1]
  int64_t batch() const { return static_cast<int64_t>(indptr.size()) - 1; }
};

// Element offset of (page, slot, head, d) in the cache storage: base + page * page + ...
struct CacheGeometry {
  int64_t base = 0;
  int64_t page = 0, slot = 0, head = 0;
};

// Element offset of (token, head, d) in the input storage: base + token * token + head * head + d.
struct InputGeometry {
  int64_t base = 0;
  int64_t token = 0, head = 0;
};

struct AppendProblem {
  DType cache_dtype = DType::kBFloat16;
  CacheGeometry k_cache, v_cache;
  InputGeometry k, v;
  int64_t num_pages = 0;
  int page_size = 1;
  int kv_heads = 1;
  int head_dim = 1;
  float k_scale = 1.f;
  float v_scale = 1.f;
};

// Appends into `cache` (the raw bytes of the storage that holds both cache views) from `input`
// (the input storage as floats, already rounded to the input dtype). A plain copy stores the
// value unchanged; fp8 stores fp8(value / scale), the division done in float as the kernel does.
// Marks every byte it writes in `written` (same size as `cache`) when given.
inline void append_paged_kv(const AppendProblem& p, const HostPageTable& t,
                            const std::vector<float>& input, std::vector<unsigned char>* cache,
                            std::vector<unsigned char>* written = nullptr) {
  const int es = flashserve::dtype_size(p.cache_dtype);
  const bool fp8 = flashserve::is_fp8(p.cache_dtype);
  auto put = [&](const CacheGeometry& g, int64_t page, int64_t slot, int64_t h, int64_t d,
                 float value, float scale) {
    const int64_t off = (g.base + page * g.page + slot * g.slot + h * g.head + d) * es;
    store_from_float(p.cache_dtype, fp8 ? value / scale : value, cache->data() + off);
    if (written) {
      for (int i = 0; i < es; ++i)
        (*written)[off + i] = 1;
    }
  };
  for (int64_t b = 0; b < t.batch(); ++b) {
    const int64_t pages = t.indptr[b + 1] - t.indptr[b];
    const int64_t n = t.append_indptr[b + 1] - t.append_indptr[b];
    if (pages <= 0) continue;  // no room: every new token of the request is skipped
    const int64_t kv_len = (pages - 1) * p.page_size + t.last_page_len[b];
    for (int64_t j = 0; j < n; ++j) {
      const int64_t pos = kv_len - n + j;
      if (pos < 0) continue;  // more new tokens than kv_len
      const int64_t page_in_req = pos / p.page_size;
      if (page_in_req >= pages) continue;  // last_page_len > page_size
      const int64_t idx = t.indptr[b] + page_in_req;
      if (idx >= static_cast<int64_t>(t.indices.size())) continue;
      const int64_t page = t.indices[idx];
      if (page < 0 || page >= p.num_pages) continue;  // bad page id
      const int64_t slot = pos % p.page_size;
      const int64_t row = t.append_indptr[b] + j;
      for (int64_t h = 0; h < p.kv_heads; ++h) {
        for (int64_t d = 0; d < p.head_dim; ++d) {
          put(p.k_cache, page, slot, h, d, input[p.k.base + row * p.k.token + h * p.k.head + d],
              p.k_scale);
          put(p.v_cache, page, slot, h, d, input[p.v.base + row * p.v.token + h * p.v.head + d],
              p.v_scale);
        }
      }
    }
  }
}

}  // namespace fs_test::ref
