// How a row normalization is laid out on the GPU; the one place its tuning choices live.
//
//  - warp per row: rows of at most 32 * 4 vectors (hidden <= 1024 in bf16, e.g. per-head q/k
//    norms); 8 rows per 256-thread block, warp-only reductions.
//  - block per row: the row stays in registers (items vectors per thread), one block reduction,
//    then the output is written from registers: every byte is read once. items <= 8 and at most
//    512 threads keep it under 128 registers a thread. Covers hidden <= 32768 in bf16.
//  - streaming: larger or unaligned rows are read again from global memory (L2) for each pass.
//    Always correct, slower; the fallback for hidden not a multiple of the vector width.
#pragma once

#include <cstdint>

namespace flashserve::norm {

struct NormTile {
  bool warp_per_row = false;
  int items = 0;  // vectors per thread held in registers; 0 = streaming
  int threads = 0;
  int64_t blocks = 0;
  // Load weight (and bias) with the row, before the reduction: one DRAM round trip instead of two
  // in series, which is what a decode-size call (few rows) waits on; with many rows the extra
  // registers cost occupancy instead (LayerNorm 16384 x 4096: 94 -> 115 us), so only few rows.
  bool prefetch = false;
};

// Rows up to which a register tile prefetches its weights (decode batches).
constexpr int64_t kPrefetchMaxRows = 512;

inline NormTile choose_norm_tile(int64_t rows, int hidden, int vec) {
  NormTile t;
  if (hidden % vec != 0) return t;  // the caller picks vec = 1 in that case
  const int nvec = hidden / vec;
  if (vec > 1 && nvec <= 32 * 4) {
    t.warp_per_row = true;
    t.items = nvec <= 32 ? 1 : nvec <= 64 ? 2 : 4;
    t.threads = 256;
    const int rows_per_block = t.threads / 32;
    t.blocks = (rows + rows_per_block - 1) / rows_per_block;
    t.prefetch = t.items <= 2 && rows <= kPrefetchMaxRows;
    return t;
  }
  t.blocks = rows;
  if (vec > 1) {
    // Fewest items per thread such that one block of <= 256 threads covers the row, else 8
    // items with up to 512 threads.
    for (int items : {1, 2, 4, 8}) {
      const int threads = (nvec + items - 1) / items;
      if (threads <= 256 || (items == 8 && threads <= 512)) {
        t.items = items;
        t.threads = (threads + 31) / 32 * 32;
        t.prefetch = items <= 2 && rows <= kPrefetchMaxRows;
        return t;
      }
    }
  }
  t.items = 0;
  t.threads = 512;
  return t;
}

}  // namespace flashserve::norm
