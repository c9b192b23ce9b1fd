// The paged KV cache and its page table (docs/paged_kv.md describes the format in full).
//
// A cache is a pool of pages; each page holds page_size tokens of K (and, in a second tensor, V):
//   NHD: [num_pages, page_size, kv_heads, head_dim]
//   HND: [num_pages, kv_heads, page_size, head_dim]
// The last dim is contiguous; the other strides are free, so K and V may be two views of one
// [num_pages, 2, ...] allocation.
//
// The page table of a batch is CSR, all int32 on the device:
//   indptr        [batch + 1]  request b owns indices[indptr[b] .. indptr[b + 1])
//   indices       [>= indptr[batch]]  page ids in token order
//   last_page_len [batch]  tokens used in the request's last page: 1..page_size, or 0 when the
//                          request owns no page
// so request b holds kv_len(b) = (indptr[b+1] - indptr[b] - 1) * page_size + last_page_len[b]
// tokens (0 when it owns no page). Attention reads exactly this format.
#pragma once

#include <cuda_runtime_api.h>

#include "flashserve/core/status.h"
#include "flashserve/tensor.h"

namespace flashserve {

enum class KVLayout { kNHD, kHND };

const char* kv_layout_name(KVLayout layout);

struct PageTable {
  TensorView indptr;
  TensorView indices;
  TensorView last_page_len;
};

struct PagedKVCache {
  TensorView k_cache;
  TensorView v_cache;
  KVLayout layout = KVLayout::kNHD;
  // fp8 caches store fp8(value / scale) (divided in float, saturated to the largest finite
  // value); unused otherwise, but must be finite and > 0 for every dtype.
  float k_scale = 1.f;
  float v_scale = 1.f;
};

// Appends new tokens to each request of the batch. k, v: [new_tokens, kv_heads, head_dim] (last dim
// contiguous, token and head strides free, float16 / bfloat16 / float32). append_indptr: int32
// [batch + 1]; request b's new tokens are rows append_indptr[b] .. append_indptr[b + 1] - 1 and
// become its last n_b = append_indptr[b + 1] - append_indptr[b] tokens: the page table already
// describes the lengths after the append, so row j of request b goes to position
// kv_len(b) - n_b + j. The cache dtype is k's dtype (bits copied unchanged) or float8 (e4m3 /
// e5m2), quantized with the scale. No new tokens or no requests: a no-op. Asynchronous on `stream`
// and capturable in a CUDA graph.
// Page ids outside [0, num_pages), requests whose new tokens exceed kv_len and other malformed
// tables are never written out of bounds (those tokens are skipped); with FLASHSERVE_DEBUG_CHECKS=1
// (or set_debug_checks(true)) the table is copied to the host and checked first, and a violation
// is returned as kInvalidArgument naming the array, the request and the value (skipped while
// `stream` is being captured).
Status append_paged_kv_cache(const PagedKVCache& cache, const PageTable& table, const TensorView& k,
                             const TensorView& v, const TensorView& append_indptr,
                             cudaStream_t stream = nullptr);

}  // namespace flashserve
