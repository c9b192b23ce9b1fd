// Parameters of the Hopper prefill attention kernel and the work list its host plan writes.
// Plain data, host and device safe. The kernel reads the work list and its length from the
// workspace, so a CUDA graph captured around a run replays correctly after a re-plan.
#pragma once

#include <cstdint>

namespace flashserve::attention {

// The three kernels of each dtype x head_dim (attention::sm90::prefill_kernel): plain (no mask but
// the kv-length edge), causal, and general (the variant switches below, read at run time). A run
// takes the general kernel when it has a window, a soft-cap, ALiBi, sinks or a custom mask. Also
// the `kind` field of the kernel registry's "prefill" specs (src/api/prefill_kernels.cc).
enum class PrefillKind { kPlain, kCausal, kGeneral };

// One CTA tile: query rows [m_block * kBlockM, ...) of one (request, q head), over the kv blocks
// the masks leave visible. The plan assigns the items to the persistent CTAs (longest first
// within groups of requests and heads whose K and V fit L2, each item to the CTA that frees
// first) and chains each CTA's items: CTA c starts at item c and follows `next`.
//
// Split-KV: where the plan finds too few tiles to fill the CTAs, a long tile becomes num_splits
// items over consecutive kv block ranges [n_begin, n_end) (clipped to the masks' range; the first
// piece starts at block 0 and the last ends at INT32_MAX, so the pieces cover whatever the kernel's
// range is). Each piece writes its normalized output and LSE to partial slot split + split_index
// of the workspace and counts itself in the tile's counter; the last piece of each consumer
// warpgroup's rows to finish merges the pieces in index order (deterministic) and stores the
// output. The sinks' logits join piece 0 only.
struct PrefillWorkItem {
  int32_t request = 0;
  int32_t m_block = 0;
  int32_t qo_head = 0;
  int32_t next = -1;  // the same CTA's next item, or -1
  int32_t n_begin = 0;
  int32_t n_end = INT32_MAX;
  int32_t split = -1;  // split pieces: the tile's first partial slot (and counter); else -1
  int16_t split_index = 0, num_splits = 1;
};

// Consumer warpgroups the split counters are laid out for (the tile's counter of warpgroup w is
// split_counters[split * kPrefillMaxConsumerWG + w]).
constexpr int kPrefillMaxConsumerWG = 3;

// The first bytes of the workspace.
struct PrefillCounts {
  int32_t num_work = 0;
  // Chains of items (the plan's grid, at most num_work): chain c starts at item c. A kernel
  // launched with fewer CTAs walks chains c, c + gridDim.x, ...
  int32_t num_chains = 0;
  int32_t pad_[2] = {0, 0};
};

// Runtime switches of the general variant kernel (the plain and causal kernels ignore all but
// `causal`). Logit transform order: scale, soft-cap, ALiBi bias, then masks.
struct PrefillVariant {
  bool causal = false;        // bottom-right aligned: query i sees kv j <= i + kv_len - q_len
  int32_t window_left = -1;   // >= 0: query at position p sees kv >= p - window_left
  int32_t window_right = -1;  // >= 0 (non-causal): query at position p sees kv <= p + window_right
  float logits_soft_cap = 0.f;          // > 0: logit = cap * tanh(logit / cap)
  const float* alibi_slopes = nullptr;  // [num_qo_heads]: logit += slope * (kv_pos - q_pos)
  const float* sinks = nullptr;         // [num_qo_heads] natural-log sink logits
  // Bit-packed boolean mask (1 = visible): request b's bit (i, j) is bit
  // mask_offsets[b] + i * kv_len + j of the array, least significant bit first in each byte.
  const uint8_t* custom_mask = nullptr;
  const int64_t* mask_offsets = nullptr;  // device [batch]
};

struct PrefillParams {
  const void* q = nullptr;  // [total_q, num_qo_heads, head_dim], last dim contiguous
  int64_t q_stride_token = 0, q_stride_head = 0;
  // Ragged: k, v [total_kv, num_kv_heads, head_dim]. Paged (page_size > 0): the caches, with
  // token stride = the stride between slots of a page (NHD or HND, any strides).
  const void* k = nullptr;
  int64_t k_stride_token = 0, k_stride_head = 0, k_stride_page = 0;
  const void* v = nullptr;
  int64_t v_stride_token = 0, v_stride_head = 0, v_stride_page = 0;
  void* out = nullptr;  // like q
  int64_t out_stride_token = 0, out_stride_head = 0;
  float* lse = nullptr;  // optional [total_q, num_qo_heads], natural log
  int64_t lse_stride_token = 0, lse_stride_head = 0;

  // Request b's queries are rows qo_indptr[b] .. qo_indptr[b + 1] - 1 of q; its keys rows
  // kv_indptr[b] .. of k and v (device arrays, batch + 1 entries).
  const int32_t* qo_indptr = nullptr;
  const int32_t* kv_indptr = nullptr;
  int32_t total_q = 0, total_kv = 0;
  // Paged KV (the paged kernels): request b's kv token j sits in page
  // page_indices[page_indptr[b] + j / page_size], slot j % page_size; its kv length is still
  // kv_indptr[b + 1] - kv_indptr[b] (the plan's, from the page counts and last_page_len).
  int32_t page_size = 0;
  int32_t num_pages = 0;  // pages in each cache (the bound of the paged TMA descriptors)
  const int32_t* page_indptr = nullptr;   // device [batch + 1]
  const int32_t* page_indices = nullptr;  // device
  int32_t batch_size = 0, num_qo_heads = 0, num_kv_heads = 0, group = 1;

  float sm_scale = 0.f;
  PrefillVariant variant;

  const PrefillWorkItem* work = nullptr;  // in the workspace
  const PrefillCounts* counts = nullptr;
  // Split-KV partials (PrefillWorkItem::split), in the workspace: per slot, block_m rows of
  // head_dim_v fp32 outputs (normalized) and block_m natural-log LSEs; counters start at 0 (the
  // plan's image) and the merging piece resets its own.
  float* partial_o = nullptr;
  float* partial_lse = nullptr;
  int32_t* split_counters = nullptr;
};

}  // namespace flashserve::attention
