// The tile schedule of prefill attention: pure host C++, no CUDA. Every (request, q tile, q head)
// with at least one query row becomes a work item; items are ordered by their kv work (the number
// of kv blocks the masks leave visible), longest first, so that the persistent CTAs taking items
// round robin finish together on causal and ragged batches. Unit-tested on the CPU
// (tests/cpu/test_prefill_plan.cc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "flashserve/attention/prefill_params.h"
#include "flashserve/core/status.h"

namespace flashserve::plan {

// KV bytes per L2 group of the schedule (PrefillScheduleInput::l2_group_bytes), well inside the
// H100's 50 MB L2 so that a group's K and V stay resident while its tiles run (H100, 16/16 x 128:
// causal 512 tokens 105 / 113 / 124 us with groups of 8 / 16 / 32 MB, 1k 149 / 151 / 158 us; the
// longer and the non-causal points alike; bench/NOTES.md).
constexpr int64_t kPrefillL2GroupBytes = int64_t{8} << 20;

// Split-KV (PrefillWorkItem::split): the workspace holds kPrefillSplitBytes of partial slots
// (block_m x (head_dim_v + 1) fp32 each: 336 at head_dim 64), and at least kPrefillMinSplitSlots
// (two pieces for each tile of a chip's worth; 17 MB at head_dim 128, 34 MB at 256). A piece
// covers at least kPrefillMinSplitTokens keys (it pays a Q load, its partial's write and its share
// of the merge).
constexpr int64_t kPrefillSplitBytes = int64_t{16} << 20;
constexpr int64_t kPrefillMinSplitSlots = 256;
constexpr int kPrefillMinSplitTokens = 512;

struct PrefillScheduleInput {
  const int32_t* qo_indptr = nullptr;  // host [batch + 1], or null: uniform q_len
  const int32_t* kv_indptr = nullptr;  // host [batch + 1], or null: uniform kv_len
  int64_t batch = 0;
  int q_len = 0, kv_len = 0;
  int num_qo_heads = 1;
  int num_kv_heads = 0;  // 0 = num_qo_heads
  // The persistent CTAs the kernel is launched with: min(num_ctas, work capacity) (>= 1) is the
  // schedule's grid, and the kernel must run with exactly that many (PrefillSchedule::grid).
  int num_ctas = 1;
  // KV bytes of (request, kv head) pairs scheduled together so that their tiles share K and V
  // in L2 (0 = kPrefillL2GroupBytes).
  int64_t l2_group_bytes = 0;
  int head_dim = 128;
  int head_dim_v = 0;  // of v and the output; 0 = head_dim
  int block_m = 128, block_n = 128;
  bool causal = false;
  int window_left = -1, window_right = -1;
  int64_t max_batch_size = 0;  // capacity; 0 = this batch
  int64_t max_q_tokens = 0;    // capacity; 0 = this batch's
  // Split-KV where the tiles are too few or too uneven for the CTAs (false: never, and no partial
  // slots in the workspace). split_bytes > 0: the partial slots' bytes instead of the defaults
  // above (tests).
  bool split_kv = true;
  int64_t split_bytes = 0;
};

// The split-KV areas of the workspace for `capacity` partial slots: the counters
// (kPrefillMaxConsumerWG per slot) just before the work list (so that the plan's image, which
// zeroes them, stays short), and the LSEs and outputs after the work list's capacity. The plan
// and the run both derive them from the work list's offset and capacity.
struct PrefillSplitLayout {
  size_t counters = 0, lse = 0, o = 0, end = 0;
};
size_t prefill_split_counter_bytes(int64_t capacity);
PrefillSplitLayout prefill_split_layout(size_t work_offset, int64_t work_capacity, int64_t capacity,
                                        int block_m, int head_dim_v);

// Byte offsets in the workspace, each 256-byte aligned.
struct PrefillWorkspaceLayout {
  size_t counts = 0, qo_indptr = 0, kv_indptr = 0, work = 0;
  PrefillSplitLayout split;  // counters before `work`, partials after its capacity
  size_t total = 0;
};

struct PrefillSchedule {
  std::vector<int32_t> qo_indptr, kv_indptr;  // [batch + 1]
  std::vector<attention::PrefillWorkItem> work;
  int64_t total_q = 0, total_kv = 0;
  int64_t batch_capacity = 0, work_capacity = 0;
  int grid = 1;                // CTAs to launch; the first min(grid, work) items start their chains
  int64_t split_capacity = 0;  // partial slots in the workspace (0: no split-KV)
  int64_t num_partials = 0;    // slots this schedule uses (items of split tiles)
  double flops = 0;            // 2 x visible (query, key) pairs x (head_dim + head_dim_v)
  PrefillWorkspaceLayout layout;
};

// Validates the lengths (non-decreasing indptr starting at 0, or non-negative uniform lengths)
// and builds the schedule. Errors name `op`.
Status make_prefill_schedule(const char* op, const PrefillScheduleInput& in, PrefillSchedule* out);

// The workspace bytes the schedule occupies (counts, indptr arrays, work list).
std::vector<unsigned char> prefill_workspace_image(const PrefillSchedule& s);

// Keys visible to query row `row` of a request (0-based), for the flops count and the tests.
int64_t prefill_visible_keys(int row, int q_len, int kv_len, bool causal, int window_left,
                             int window_right);

}  // namespace flashserve::plan
