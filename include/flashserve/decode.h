// Paged-KV decode attention with a host plan and a device run, split-KV and merge of attention
// states. The cache and page table are those of page.h (docs/paged_kv.md).
//
//   DecodePlanRequest req;  ... host copies of table.indptr / last_page_len, heads, dims, dtypes
//   size_t bytes;  decode_workspace_size(req, &bytes);       // allocate once, for the capacity
//   DecodePlan plan;  decode_plan(req, workspace, bytes, stream, &plan);   // per batch, no capture
//   decode_run(plan, args, workspace, stream);              // capturable, no sync, no allocation
//
// CUDA graphs: decode_run reads the number of work items and the work list from `workspace`
// and sizes its grid from the plan's capacity, so a graph captured around decode_run replays
// correctly after decode_plan wrote a different batch into the same workspace — as long as the
// capacity fields (max_batch_size, max_q_tokens, max_kv_tokens), the head configuration, num_sms
// and the tensors' addresses stay the same (size q, out, lse and the page-table arrays for the
// capacity; the plan's batch decides how much of them is read).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "flashserve/core/status.h"
#include "flashserve/page.h"
#include "flashserve/tensor.h"

namespace flashserve {

struct DecodePlanRequest {                 // host data; decode_plan runs outside graph capture
  const int32_t* indptr = nullptr;         // host copy of table.indptr [batch + 1]
  const int32_t* last_page_len = nullptr;  // host copy [batch]
  int batch_size = 0;
  // host [batch + 1]: request b's query tokens are rows q_indptr[b] .. q_indptr[b + 1] - 1 of q
  // (0..8 each, the request's last kv positions, causal among them); null = one per request.
  const int32_t* q_indptr = nullptr;
  int num_qo_heads = 0, num_kv_heads = 0, head_dim = 0, page_size = 0;
  DType q_dtype = DType::kBFloat16;   // also the output dtype: float16 or bfloat16
  DType kv_dtype = DType::kBFloat16;  // q_dtype, or float8_e4m3 / float8_e5m2
  KVLayout layout = KVLayout::kNHD;
  // Fixed split length: a request's result is bitwise identical across runs and across batch
  // compositions. Otherwise the split adapts to the batch (identical across runs of one plan).
  bool deterministic = false;
  int fixed_split_tokens = 0;  // deterministic split length (0 = 512)
  int num_sms = 0;             // 0 = the current device's
  // Capacity for graph replay after a re-plan (0 = this batch's): requests, query tokens, and
  // (deterministic mode) the sum of kv lengths.
  int max_batch_size = 0, max_q_tokens = 0;
  int64_t max_kv_tokens = 0;
};

// Plain data: what decode_run needs and checks its arguments against.
struct DecodePlan {
  int batch_size = 0, q_tokens = 0;
  int num_qo_heads = 0, num_kv_heads = 0, head_dim = 0, page_size = 0;
  DType q_dtype = DType::kBFloat16, kv_dtype = DType::kBFloat16;
  KVLayout layout = KVLayout::kNHD;
  bool deterministic = false;
  int split_tokens = 0;  // kv tokens per split; 0 when no request is split
  // Warps of a decode CTA: 4 (two CTAs per SM), or 8 (one per SM) where the capacity allows few
  // (request, kv head) units (batch 1..2 at head_dim 128, up to ~SMs / 2 units at 256): fewer,
  // longer splits and a 256-thread merge. Fixed by the capacity, like the fields below.
  int cta_warps = 4;
  int num_work = 0, num_merge = 0, num_partials = 0;
  // Fixed by the capacity (the same for every re-plan of one capacity):
  int64_t work_capacity = 0, merge_capacity = 0, partial_capacity = 0;
  int num_sms = 0;
  size_t workspace_bytes = 0;
  size_t work_offset = 0, merge_offset = 0, partial_out_offset = 0, partial_lse_offset = 0;
  // The kernel specialization decode_plan resolved (prebuilt, or compiled at first use and kept
  // for the life of the process; docs/kernel_cache.md). Opaque; null makes decode_run look it up.
  const void* kernel = nullptr;
};

// Bytes of device workspace decode_plan / decode_run need for `req` (its capacity).
Status decode_workspace_size(const DecodePlanRequest& req, size_t* device_bytes);

// Builds the schedule on the host and writes it into `workspace` (device, 16-byte aligned) with
// cudaMemcpyAsync on `stream` (the host arrays may be freed when it returns). Not capturable.
Status decode_plan(const DecodePlanRequest& req, void* workspace, size_t workspace_bytes,
                   cudaStream_t stream, DecodePlan* plan);

struct DecodeArgs {
  TensorView q;          // [>= plan.q_tokens, num_qo_heads, head_dim], q_dtype, last dim contiguous
  TensorView out;        // like q (strides free, last dim contiguous)
  TensorView lse;        // optional fp32 [>= q_tokens, num_qo_heads]: natural-log sum of exp of the
                         // scaled logits (the sink included); -inf for a row that sees no token
  PagedKVCache cache;    // k_scale / v_scale dequantize fp8 caches
  PageTable table;       // device; the same values as the host copies given to decode_plan
  float sm_scale = 0.f;  // 0 = 1 / sqrt(head_dim)
  float logits_soft_cap = 0.f;  // > 0: logit = cap * tanh(logit / cap) (after sm_scale)
  int window_left = -1;         // >= 0: query at position p sees kv positions [p - window_left, p]
  TensorView sinks;             // optional fp32 [num_qo_heads]: gpt-oss sink logits
};

// For a plan rebuilt from its fields (a language binding keeps plans as plain integers), whose
// kernel pointer is therefore unset: resolves the specialization now (prebuilt, cached, or
// compiled: not inside graph capture), so that decode_run does no per-call lookup.
Status decode_plan_resolve_kernel(DecodePlan* plan);

// Output (and LSE) of every planned query row. Asynchronous on `stream`; no host
// synchronization, no allocation; capturable in a CUDA graph.
Status decode_run(const DecodePlan& plan, const DecodeArgs& args, void* workspace,
                  cudaStream_t stream = nullptr);

// Merging attention states computed over disjoint kv ranges (split-KV, shared-prefix cascade):
// out = sum_i exp(lse_i - lse) v_i with lse = log sum_i exp(lse_i). LSEs are natural logs, as
// decode_run writes them; a state with lse -inf contributes nothing; all -inf gives 0 and -inf.
// v: float16 / bfloat16 / float32, last dim contiguous; s and s_out: float32.
//   merge_state:  v_a, v_b [tokens, heads, head_dim], s_a, s_b [tokens, heads]
//   merge_states: v [tokens, states, heads, head_dim], s [tokens, states, heads]
// v_out like one state (may be the same view as v_a); s_out optional.
Status merge_state(const TensorView& v_a, const TensorView& s_a, const TensorView& v_b,
                   const TensorView& s_b, const TensorView& v_out, const TensorView& s_out,
                   cudaStream_t stream = nullptr);
Status merge_states(const TensorView& v, const TensorView& s, const TensorView& v_out,
                    const TensorView& s_out, cudaStream_t stream = nullptr);

}  // namespace flashserve
