// Parameters of the paged-KV decode kernels and the work lists the host plan writes for them.
// Plain data, host and device safe: the plan (src/plan/decode_plan.cc) fills the work lists, the
// kernels read them from the workspace on the device, so a CUDA graph captured once replays
// correctly after a re-plan (the kernel arguments stay the same, only the workspace changes).
#pragma once

#include <cstdint>

namespace flashserve::attention {

// Query rows one work item handles: a row is (query token j of the request, q head h of the kv
// head's GQA group), numbered r = j * group + h. Larger groups or more query tokens are cut into
// several row chunks by the plan; 8 keeps the per-thread accumulators (8 x head_dim / 32 floats)
// in registers for head_dim 256.
constexpr int kDecodeMaxRows = 8;

// One CTA's work: rows [row_begin, row_end) of one (request, kv_head) over kv positions
// [kv_begin, kv_end). partial < 0: the item covers the whole kv range and writes the final output;
// otherwise it writes an fp32 partial output and log2-LSE into workspace slot `partial`, and the
// last of the unit's `num_partials` items to finish (counted in the workspace's merge counter
// `merge`) combines the unit's partials [partial_begin, partial_begin + num_partials) into the
// output. page_begin / page_end are the request's range of table.indices (indptr[request] and
// indptr[request + 1], copied here by the plan so the kernel does not wait on a load of indptr).
struct DecodeWorkItem {
  int32_t request = 0;
  int32_t kv_head = 0;
  int32_t row_begin = 0, row_end = 0;
  int32_t kv_begin = 0, kv_end = 0;
  int32_t kv_len = 0;   // the request's length (query positions are its last num_q tokens)
  int32_t q_begin = 0;  // first query token of the request in q / out
  int32_t num_q = 1;    // query tokens of the request
  int32_t partial = -1;
  int32_t merge = -1;  // the unit's merge counter (partial >= 0)
  int32_t num_partials = 0;
  int32_t partial_begin = 0;
  int32_t page_begin = 0, page_end = 0;
  // > 0: two-level merge (decode_merge_group): partial i of the unit belongs to group i /
  // merge_group, whose counter is group_counters[partial_begin + group] and whose merged partial
  // goes to slot partial_begin + num_partials + group; the last group merges the groups. 0: one
  // level.
  int32_t merge_group = 0;  // 64 bytes: four 16-byte words
};
static_assert(sizeof(DecodeWorkItem) == 64, "a work item is four 16-byte loads");

// Combines the partials [partial_begin, partial_begin + num_partials) of one row chunk.
struct DecodeMergeItem {
  int32_t request = 0;
  int32_t kv_head = 0;
  int32_t row_begin = 0, row_end = 0;
  int32_t q_begin = 0;
  int32_t num_q = 1;
  int32_t partial_begin = 0;
  int32_t num_partials = 0;
};

// The first bytes of the workspace: how many items the lists hold for the current plan, and the
// ticket counter of the dynamic schedule (decode_kernel: items after the first gridDim.x go to the
// CTAs in the order they ask; the plan writes it as 0 and the launch's last ticket resets it).
struct DecodeCounts {
  int32_t num_work = 0;
  int32_t num_merge = 0;
  int32_t next_work = 0;
  int32_t pad_ = 0;
};

// Element strides of one cache tensor (the last dim is contiguous).
struct KVStrides {
  int64_t page = 0, slot = 0, head = 0;
};

// Attention variants applied to every logit (see variants.cuh).
struct DecodeVariant {
  float logits_soft_cap = 0.f;   // > 0: logit = cap * tanh(logit / cap)
  int32_t window_left = -1;      // >= 0: a query at position p sees kv positions >= p - window_left
  const float* sinks = nullptr;  // [num_qo_heads] natural-log logits added to the denominator
};

template <class TQ, class TKV>
struct DecodeParams {
  const TQ* q = nullptr;  // [q_tokens, num_qo_heads, head_dim]
  int64_t q_stride_token = 0, q_stride_head = 0;
  TQ* out = nullptr;  // like q
  int64_t out_stride_token = 0, out_stride_head = 0;
  float* lse = nullptr;  // [q_tokens, num_qo_heads] natural log, optional
  int64_t lse_stride_token = 0, lse_stride_head = 0;

  const TKV* k_cache = nullptr;
  const TKV* v_cache = nullptr;
  KVStrides k_strides, v_strides;
  const int32_t* indptr = nullptr;
  const int32_t* indices = nullptr;
  int64_t num_indices = 0;
  int64_t num_pages = 0;
  int page_size = 1;

  int group = 1;        // num_qo_heads / num_kv_heads
  float q_scale = 1.f;  // sm_scale * k_scale (* log2(e) unless soft-capping)
  float v_scale = 1.f;
  DecodeVariant variant;

  // Workspace.
  const DecodeCounts* counts = nullptr;
  int32_t* work_counter = nullptr;  // &counts->next_work; nullptr: static striding (tools, tests)
  const DecodeWorkItem* work = nullptr;
  float* partial_out = nullptr;  // [partials, kDecodeMaxRows, head_dim]
  float* partial_lse = nullptr;  // [partials, kDecodeMaxRows] log2
  int32_t* merge_counters =
      nullptr;  // [merge items]: partials (or groups) finished; 0 between runs
  int32_t* group_counters =
      nullptr;  // [partial slots]: a group's partials finished; 0 between runs
};

}  // namespace flashserve::attention
