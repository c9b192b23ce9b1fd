// Tile sizes of the Hopper prefill kernel, one place for all of them (bench/NOTES.md holds the
// measurements behind them). Host and device safe.
//
// Shared memory bounds the choice: Q (block_m x d) + stages x (K + V) (block_n x d each), 16-bit,
// and so do the consumer registers (S, P and O of 64 rows per warpgroup). Measured on H200
// (bench/NOTES.md, prefill v2): hd 64 gained 8-15% from 192-row tiles; hd 128 with 176-wide kv
// blocks lost 18% (O + S + P no longer fit 240 registers: 40 spill accesses); hd 256 with 80-wide
// blocks spilled 320 accesses.
//   d = 64:  192 x 128, 2 stages = 120 KB; three consumer warpgroups (64 rows each)
//   d = 128: 128 x 128, 2 stages = 160 KB
//   d = 256: 128 x  64, 2 stages = 192 KB: O alone is 128 registers per thread
//   qk 192 / v 128: 128 x 128, 2 stages = 208 KB: S, P and O as at d = 128
// block_m depends on the head dim only (the plan cuts query tiles with it); block_n may depend on
// the kernel kind (`unmasked`: the plain kernel), kept for tuning.
#pragma once

namespace flashserve::attention {

struct PrefillTile {
  int block_m = 128, block_n = 128, stages = 2;
};

// head_dim_v: of v and the output; 0 = head_dim.
constexpr PrefillTile prefill_tile(int head_dim, bool unmasked = false, int head_dim_v = 0) {
  if (head_dim_v == 0) head_dim_v = head_dim;
  if (head_dim_v != head_dim) return PrefillTile{128, 128, 2};  // qk 192 / v 128
  return head_dim <= 64    ? PrefillTile{192, 128, 2}
         : head_dim <= 128 ? PrefillTile{128, unmasked ? 128 : 128, 2}
                           : PrefillTile{128, 64, 2};
}

}  // namespace flashserve::attention
