// Persistent tile scheduler of the prefill kernel: CTA c walks the plan's chains c, c + grid, ...
// of work items (PrefillWorkItem::next; the plan balances them longest first within L2 groups).
// The producer warp and the consumer warpgroups walk the same sequence.
#pragma once

#include <cuda_runtime.h>

#include "flashserve/attention/prefill_params.h"

namespace flashserve::attention {

struct PrefillTileInfo {
  int request = 0, m_block = 0, qo_head = 0, kv_head = 0;
  int q_start = 0, q_len = 0, kv_start = 0, kv_len = 0;
  int page_start = 0;  // paged KV: the request's first entry of page_indices
  int next = -1;       // the next item of this CTA's chain
  // Split-KV (PrefillWorkItem): this piece's kv blocks, the tile's first partial slot (-1: not
  // split) and the piece's index (the merge reads num_splits from the item again: fewer
  // registers live through the mainloop).
  int n_begin = 0, n_end = INT32_MAX;
  int split = -1, split_index = 0;
  int trace_index = 0;  // the CTA's count of tiles before this one (FLASHSERVE_PREFILL_TRACE)
};

// Phase timestamps for tuning (bench/tools/prefill_trace.cu): with -DFLASHSERVE_PREFILL_TRACE,
// the first thread of each consumer warpgroup writes the globaltimer at each FS_PTRACE point of
// each of its CTA's first 64 tiles.
#ifdef FLASHSERVE_PREFILL_TRACE
__device__ unsigned long long g_prefill_trace[1024][64][2][8];
__device__ __forceinline__ void prefill_trace_point(int tile, int i) {
  const int wg = threadIdx.x / 128 - 1;
  if (threadIdx.x % 128 == 0 && wg >= 0 && wg < 2 && blockIdx.x < 1024 && tile < 64) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    g_prefill_trace[blockIdx.x][tile][wg][i] = t;
  }
}
#define FS_PTRACE(tile, i) prefill_trace_point(tile, i)
#else
#define FS_PTRACE(tile, i)
#endif

struct PrefillScheduler {
  const PrefillParams& p;
  int num_work, num_chains, chain;
  __device__ explicit PrefillScheduler(const PrefillParams& params)
      : p(params),
        num_work(params.counts->num_work),
        num_chains(params.counts->num_chains),
        chain(blockIdx.x) {}

  __device__ int first() const { return chain < num_chains ? chain : -1; }
  // The item after t (the next of its chain, or the start of this CTA's next chain).
  __device__ int next(const PrefillTileInfo& t) {
    if (t.next >= 0) return t.next;
    chain += gridDim.x;
    return chain < num_chains ? chain : -1;
  }
  // Whether an item follows t, without advancing.
  __device__ bool has_next(const PrefillTileInfo& t) const {
    return t.next >= 0 || chain + static_cast<int>(gridDim.x) < num_chains;
  }
  __device__ bool valid(int w) const { return w >= 0 && w < num_work; }

  __device__ PrefillTileInfo tile(int w) const {
    const PrefillWorkItem item = p.work[w];
    PrefillTileInfo t;
    t.request = item.request;
    t.m_block = item.m_block;
    t.qo_head = item.qo_head;
    t.next = item.next;
    t.n_begin = item.n_begin;
    t.n_end = item.n_end;
    t.split = item.split;
    t.split_index = item.split_index;
    t.kv_head = item.qo_head / p.group;
    t.q_start = __ldg(p.qo_indptr + item.request);
    t.q_len = __ldg(p.qo_indptr + item.request + 1) - t.q_start;
    t.kv_start = __ldg(p.kv_indptr + item.request);
    t.kv_len = __ldg(p.kv_indptr + item.request + 1) - t.kv_start;
    if (p.page_indptr != nullptr) t.page_start = __ldg(p.page_indptr + item.request);
    return t;
  }
};

}  // namespace flashserve::attention
