// How rotary embedding is laid out on the GPU; the one place its tuning choices live.
//
// Work items: for each token, (head, item) over all q heads then all k heads. A rotation item is
// two 16-byte vectors, dims [i, i + v) and [i + half, i + half + v) in both layouts (v pairs; for
// GPT-J the pairs lie within each vector), so that a warp's loads and stores cover whole
// contiguous lines (adjacent vectors per thread measured ~8% slower for GPT-J); or one scalar pair
// on the unaligned path. A tail item is one vector of the non-rotary dims to copy.
//
// A block is (threads_x, tokens_per_block) threads and handles tokens_per_block * steps tokens.
//  - threads_x covers a token's items in one sweep where it can (32 q + 8 kv heads x 128 bf16 =
//    320 items -> 320 threads), so a decode token costs one load latency; beyond 512 items the
//    sweeps are balanced (1152 items -> 3 sweeps of 384 threads).
//  - tokens with few items are packed up to 128 threads per block (tokens_per_block).
//  - steps: the block first computes cos / sin of all its tokens (once per token, not per head),
//    a position load followed by sincos or a cache read. That chain is longer than a data load,
//    and the block's loads wait for it at the barrier. Measured on H100 at 16384 tokens x 40 heads
//    x 128 bf16 (copy ceiling 3.02 TB/s): one token per block 136 us (computed angles) / 128 us
//    (cache), no angles at all 120 us; with 4 tokens per row, the chain paid once per 4 tokens,
//    120-123 us for both variants and layouts (2.73-2.79 TB/s). Steps > 1 only while the grid
//    keeps at least 8 blocks per SM, so small batches keep all their tokens in parallel.
// Registers (up to 62 on the vector path) allow 3 blocks of 320 threads per SM; two items per
// thread (two load batches in flight) measured slower (81 registers, fewer warps).
#pragma once

#include <cstdint>

namespace flashserve::rope {

constexpr int kRopeMaxThreads = 512;
constexpr int kRopeMaxSteps = 4;

struct RopeTile {
  int threads_x = 0;
  int tokens_per_block = 1;
  int steps = 1;  // tokens each row of the block handles one after the other
  int64_t blocks = 0;
  int smem_bytes = 0;  // cos and sin of every token of the block, float32
};

// `items`: work items of one token (all heads); `half` = rotary_dim / 2.
inline RopeTile choose_rope_tile(int64_t tokens, int64_t items, int half, int num_sms) {
  RopeTile t;
  const int64_t sweeps = (items + kRopeMaxThreads - 1) / kRopeMaxThreads;
  const int64_t warps = ((items + sweeps - 1) / sweeps + 31) / 32;
  t.threads_x = static_cast<int>(warps * 32);
  t.tokens_per_block = t.threads_x >= 128 ? 1 : 128 / t.threads_x;
  const int64_t rows = (tokens + t.tokens_per_block - 1) / t.tokens_per_block;
  for (int steps = kRopeMaxSteps; steps > 1; steps /= 2) {
    if (rows / steps >= 8 * static_cast<int64_t>(num_sms)) {
      t.steps = steps;
      break;
    }
  }
  t.blocks = (rows + t.steps - 1) / t.steps;
  t.smem_bytes = t.steps * t.tokens_per_block * 2 * half * static_cast<int>(sizeof(float));
  return t;
}

}  // namespace flashserve::rope
