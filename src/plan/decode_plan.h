// The split-KV schedule of paged decode attention: pure host C++, no CUDA. Given host copies of
// the page table's indptr and last_page_len (and the query tokens per request), it cuts every
// (request, kv head, row chunk) into kv splits so that the work items fill the GPU, and lays the
// work lists out in the caller's workspace. Unit-tested on the CPU (tests/cpu/test_decode_plan.cc).
//
// Split policy (see choose_split_tokens):
//  - deterministic: a fixed split length F (from position 0 of each request), so a request's
//    items, and therefore its bits, do not depend on the rest of the batch;
//  - otherwise: the smallest multiple of 64 tokens >= kMinSplitTokens (128) such that the items
//  number about
//    `target_ctas` (a few CTAs per SM): batch 1 with 32k tokens fills the chip, while a large
//    batch is not split at all (no merge).
// A unit whose kv range fits one split writes the final output directly; the others write fp32
// partials that the unit's last item to finish combines, inside the decode kernel.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "flashserve/attention/params.h"
#include "flashserve/core/status.h"

namespace flashserve::plan {

struct DecodeScheduleInput {
  const int32_t* indptr = nullptr;         // [batch + 1] host
  const int32_t* last_page_len = nullptr;  // [batch] host
  const int32_t* q_indptr = nullptr;       // [batch + 1] host, or null for one query each
  int64_t batch = 0;
  int page_size = 1;
  int num_kv_heads = 1;
  int group = 1;  // q heads per kv head
  int head_dim = 128;
  bool deterministic = false;
  int fixed_split_tokens = 0;  // deterministic split length; 0 = kDefaultFixedSplit
  int target_ctas = 0;         // items the non-deterministic policy aims for (SMs x CTAs/SM)
  int cta_threads = 128;       // the kernel's CTA (DecodeTile::kThreads): the merge rules' threads
  // Near-uniform batches (longest unit <= 9/8 of the shortest) take the shortest split whose items
  // fit target_ctas when the proportional split would exceed it (tools: false = proportional only).
  bool fit_uniform_splits = true;
  int64_t max_batch_size = 0;  // capacity; 0 = this batch
  int64_t max_q_tokens = 0;    // capacity; 0 = this batch's (at least max_batch_size)
  int64_t max_kv_tokens = 0;   // capacity (deterministic mode); 0 = this batch's
};

constexpr int kDefaultFixedSplit = 512;
// Shortest non-deterministic split. Merging a partial costs about as much as 16 tokens of KV, but a
// split is also a serial chain of tile waits: at batch 1 x 4096 (8 kv heads, 264 CTA slots) 256
// tokens gave 128 items of 4 tiles per warp; 128 gives 256 items of 2 (bf16) or 1 (fp8) tiles per
// warp, one wave, about half the latency chain. Large batches are not split (units >= target).
constexpr int kMinSplitTokens = 128;
constexpr int kSplitGranularity = 64;
constexpr int kMaxQueryTokens = 8;  // per request

struct DecodeCapacity {
  int64_t batch = 0, q_tokens = 0, kv_tokens = 0;
  int64_t work = 0, merge = 0, partials = 0;
};

// Byte offsets in the workspace, each 256-byte aligned.
struct DecodeWorkspaceLayout {
  size_t counts = 0, work = 0, merge = 0, counters = 0, partial_out = 0, partial_lse = 0, total = 0;
};

// Where the merge counters start (int32, one per merge item, then one per partial slot for the
// groups of two-level merges): after the merge list. A function of
// the plan's public merge_offset and merge_capacity, so decode_run finds them without a new field.
inline size_t decode_counters_offset(size_t merge_offset, int64_t merge_capacity) {
  return (merge_offset + static_cast<size_t>(merge_capacity) * sizeof(attention::DecodeMergeItem) +
          255) /
         256 * 256;
}

struct DecodeSchedule {
  std::vector<attention::DecodeWorkItem> work;
  std::vector<attention::DecodeMergeItem> merge;
  int64_t num_partials = 0;
  int64_t q_tokens = 0;
  int split_tokens = 0;  // 0: nothing split
  DecodeCapacity capacity;
  DecodeWorkspaceLayout layout;
};

// Capacity of the work lists for `in` (its capacity fields, or this batch where they are 0).
DecodeCapacity decode_capacity(const DecodeScheduleInput& in);
// The most units (request, kv head, row chunk) a batch within `in`'s capacity can have (a bound:
// num_kv_heads x (batch + ceil(q_tokens x group / 8))); independent of target_ctas.
int64_t decode_capacity_units(const DecodeScheduleInput& in);
DecodeWorkspaceLayout decode_workspace_layout(const DecodeCapacity& cap, int head_dim);

// Validates the host arrays (indptr sorted from 0, last_page_len in range, 0..8 query tokens per
// request, within capacity) and builds the schedule. Errors are kInvalidArgument naming `op`.
Status make_decode_schedule(const char* op, const DecodeScheduleInput& in, DecodeSchedule* out);

// The host image of the workspace prefix that the plan writes: counts, work list and merge list
// (up to the end of the merge items in use).
std::vector<unsigned char> decode_workspace_image(const DecodeSchedule& s);

}  // namespace flashserve::plan
