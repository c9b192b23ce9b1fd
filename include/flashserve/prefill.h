// Prefill attention (Hopper, FlashAttention-3 class) over ragged (varlen) batches, with a host
// plan and a device run like decode.h. Dense (batch, seqlen, heads, dim) inputs are the ragged
// case with equal lengths: flatten them to [batch * seqlen, heads, dim] and give q_len / kv_len.
//
//   PrefillPlanRequest req;  ... host indptr copies (or uniform lengths), heads, head_dim, mask
//   size_t bytes;  prefill_workspace_size(req, &bytes);    // allocate once, for the capacity
//   PrefillPlan plan;  prefill_plan(req, workspace, bytes, stream, &plan);  // per batch
//   prefill_run(plan, args, workspace, stream);            // capturable, no sync, no allocation
//
// Paged KV: give the plan page_size and host copies of the page table's indptr and last_page_len
// (the table of decode.h and append_paged_kv_cache, docs/paged_kv.md), and the run the cache and
// the device table instead of k and v. Any page size, NHD or HND.
//
// A query row i of a request with q_len queries and kv_len keys sits at kv position
// i + kv_len - q_len (bottom-right alignment: q_len < kv_len is chunked prefill / append).
// CUDA graphs: prefill_run reads the work list from the workspace; a captured run replays
// correctly after a re-plan with the same capacity, heads, tensors and total token counts.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "flashserve/core/status.h"
#include "flashserve/page.h"
#include "flashserve/tensor.h"

namespace flashserve {

struct PrefillPlanRequest {  // host data; prefill_plan runs outside graph capture
  int batch_size = 0;
  // host [batch + 1]: request b's queries are rows qo_indptr[b] .. qo_indptr[b + 1] - 1 of q,
  // its keys and values rows kv_indptr[b] .. of k and v. Null: every request has q_len (kv_len).
  const int32_t* qo_indptr = nullptr;
  const int32_t* kv_indptr = nullptr;
  int q_len = 0, kv_len = 0;
  // Paged KV (page_size > 0): request b's keys are the tokens of its pages, host copies of
  // table.indptr [batch + 1] and table.last_page_len [batch]; kv_indptr and kv_len are unused.
  int page_size = 0;
  const int32_t* paged_kv_indptr = nullptr;
  const int32_t* paged_kv_last_page_len = nullptr;
  // head_dim: of q and k (64, 96, 128, 192, 256). head_dim_v: of v and out; 0 = head_dim, or 128
  // with head_dim 192 (DeepSeek's qk 192 / v 128).
  int num_qo_heads = 0, num_kv_heads = 0, head_dim = 0, head_dim_v = 0;
  DType dtype = DType::kBFloat16;  // q, k, v and out: float16 or bfloat16
  bool causal = false;
  int window_left = -1;   // >= 0: query at position p sees kv positions >= p - window_left
  int window_right = -1;  // >= 0, non-causal only: and <= p + window_right
  int num_sms = 0;        // 0 = the current device's
  // Capacity for graph replay after a re-plan (0 = this batch's): requests and query tokens.
  int max_batch_size = 0;
  int64_t max_q_tokens = 0;
  // Split-KV: where the batch has too few (or too uneven) tiles for the SMs, the plan cuts the
  // longest tiles' kv ranges into pieces whose partial outputs the kernel merges (the workspace
  // then holds 16 MB of partial slots, 34 MB at head_dim 256). false: never, and no partials in
  // the workspace.
  bool split_kv = true;
};

struct PrefillPlan {
  int batch_size = 0, total_q = 0, total_kv = 0;
  int num_qo_heads = 0, num_kv_heads = 0, head_dim = 0;
  int head_dim_v = 0;  // of v and out (the request's, resolved: never 0)
  DType dtype = DType::kBFloat16;
  bool causal = false;
  int window_left = -1, window_right = -1;
  int page_size = 0;             // > 0: paged KV
  int block_m = 0, block_n = 0;  // the kernel's tile
  int num_work = 0;
  int64_t work_capacity = 0, batch_capacity = 0;
  int64_t split_capacity = 0;  // partial slots of split-KV in the workspace (0: none)
  int num_sms = 0, grid = 0;
  // 2 * q.k pairs visible * (head_dim + head_dim_v): attention forward, masks applied
  double flops = 0;
  size_t workspace_bytes = 0;
  size_t qo_indptr_offset = 0, kv_indptr_offset = 0, work_offset = 0;
  // The kernel specializations prefill_plan resolved (prebuilt, or compiled at first use and kept
  // for the life of the process; docs/kernel_cache.md): the one of the plan's masks, and the
  // general one that a run with a soft-cap, ALiBi, sinks or a custom mask takes (the same when
  // the plan has a window). Opaque; null makes prefill_run look them up.
  const void* kernel = nullptr;
  const void* general_kernel = nullptr;
};

Status prefill_workspace_size(const PrefillPlanRequest& req, size_t* device_bytes);

// Builds the tile schedule on the host (tiles grouped so that concurrent ones share K and V in
// L2, longest first within a group, chained per persistent CTA; long tiles split over several
// CTAs where the tiles are too few for the SMs) and copies it, with the indptr
// arrays, into `workspace` (device, 16-byte aligned) on `stream`, and resolves the kernels a run
// may launch (the first plan of a specialization that is not prebuilt compiles it, or loads it
// from the kernel cache). Not capturable.
Status prefill_plan(const PrefillPlanRequest& req, void* workspace, size_t workspace_bytes,
                    cudaStream_t stream, PrefillPlan* plan);

struct PrefillArgs {
  TensorView q;  // [>= total_q, num_qo_heads, head_dim], last dim contiguous
  TensorView k;  // ragged KV: [>= total_kv, num_kv_heads, head_dim]
  TensorView v;  // ragged KV: [>= total_kv, num_kv_heads, head_dim_v]
  // Paged KV (plan.page_size > 0; k and v undefined): the cache (the plan's dtype; k_scale and
  // v_scale unused) and the device page table, with the values the plan's host copies had.
  PagedKVCache cache;
  PageTable table;
  TensorView out;  // [>= total_q, num_qo_heads, head_dim_v]
  TensorView lse;  // optional fp32 [>= total_q, num_qo_heads], natural log, -inf if nothing seen
  float sm_scale = 0.f;         // 0 = 1 / sqrt(head_dim) (q and k's)
  float logits_soft_cap = 0.f;  // > 0: logit = cap * tanh(logit / cap) (after sm_scale)
  TensorView alibi_slopes;      // optional fp32 [num_qo_heads]: logit += slope * (kv_pos - q_pos)
  TensorView sinks;             // optional fp32 [num_qo_heads]: gpt-oss sink logits
  // Optional custom mask, 1 = visible: request b's bit (i, j) is bit mask_offsets[b] + i * kv_len
  // + j of `custom_mask` (uint8, least significant bit first); mask_offsets int64 [batch].
  TensorView custom_mask;
  TensorView mask_offsets;
};

// Output (and LSE) of every query row. Asynchronous; no host synchronization, no allocation.
Status prefill_run(const PrefillPlan& plan, const PrefillArgs& args, void* workspace,
                   cudaStream_t stream = nullptr);

}  // namespace flashserve
