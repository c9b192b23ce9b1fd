// Persistent tile scheduler of the prefill kernel: CTA c takes work items c, c + grid, ... of the
// plan's list (ordered longest first by the host, so static round robin balances causal and
// ragged batches). The producer warp and the consumer warpgroups walk the same sequence.
#pragma once

#include <cuda_runtime.h>

#include "flashserve/attention/prefill_params.h"

namespace flashserve::attention {

struct PrefillTileInfo {
  int request = 0, m_block = 0, qo_head = 0, kv_head = 0;
  int q_start = 0, q_len = 0, kv_start = 0, kv_len = 0;
  int page_start = 0;  // paged KV: the request's first entry of page_indices
};

struct PrefillScheduler {
  const PrefillParams& p;
  int num_work;
  __device__ explicit PrefillScheduler(const PrefillParams& params)
      : p(params), num_work(params.counts->num_work) {}

  __device__ int first() const { return blockIdx.x; }
  __device__ int next(int w) const { return w + gridDim.x; }
  __device__ bool valid(int w) const { return w < num_work; }

  __device__ PrefillTileInfo tile(int w) const {
    const PrefillWorkItem item = p.work[w];
    PrefillTileInfo t;
    t.request = item.request;
    t.m_block = item.m_block;
    t.qo_head = item.qo_head;
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
