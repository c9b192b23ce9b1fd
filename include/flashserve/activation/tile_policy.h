// How a gated activation is laid out on the GPU; the one place its tuning choices live.
//
// Rows on gridDim.x (up to 2^31 - 1), chunks of a row on gridDim.y; each thread moves 16-byte
// vectors of the activated half, the gate and the output, two at a time. The block is sized to the
// row: ceil(vectors / 32) warps, at most 1024 threads, so a decode-sized call (one row of
// d = 4096..14336 bf16, 512..1792 vectors) finishes in one or two steps per thread, and large
// calls keep 2048 threads per SM (~34 registers) with two 16-byte loads in flight each. No shared
// memory, no barriers: a block may be any size. Measured on H100 (bf16 silu_and_mul, 16384 rows,
// d = 4096 / 8192 / 14336): 2.99 / 3.05 / 3.04 TB/s, the device-to-device copy's 3.02.
#pragma once

#include <cstdint>

namespace flashserve::activation {

constexpr int kActMaxThreads = 1024;

struct ActTile {
  int threads = 0;  // per block
  int chunks = 1;   // blocks per row (gridDim.y)
};

// Many rows: one block per row, sized to the row (ceil(vectors / 32) warps, at most 1024).
// Fewer rows than SMs (decode): one block per row leaves most SMs idle and makes each thread walk
// the row serially (1 x 14336 bf16: 1792 vectors on one SM), so the row is split into chunks of
// 64-thread blocks with one vector a thread: the call is one load latency plus one vector's math
// (GELU's erfc is ~20 dependent instructions an element; two vectors a thread cost 0.5 us more).
inline ActTile choose_act_tile(int64_t rows, int64_t nvec, int num_sms) {
  ActTile t;
  if (rows < num_sms && nvec > 64) {
    t.threads = 64;
    const int64_t chunks = (nvec + t.threads - 1) / t.threads;
    t.chunks = static_cast<int>(chunks > 65535 ? 65535 : chunks);
    return t;
  }
  const int64_t warps = (nvec + 31) / 32;
  t.threads = static_cast<int>(warps >= kActMaxThreads / 32 ? kActMaxThreads : warps * 32);
  return t;
}

}  // namespace flashserve::activation
