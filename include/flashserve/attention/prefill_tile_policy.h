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
// block_m is the head dim's unless a plan asks for another (`block_m`: the plan cuts query tiles
// with it, and every kernel it resolves is built for it): causal head_dim 64 takes 128 x 128 tiles
// (two consumer warpgroups, ping-pong) when no query is longer than kPrefillShortCausalQ, where the
// 192-row tiles leave part of the last tile of each request idle and expose the first softmax
// (H100, bench/NOTES.md "128-row tiles for short causal head_dim 64"). block_n may depend on the
// kernel kind (`unmasked`: the plain kernel), kept for tuning.
#pragma once

namespace flashserve::attention {

struct PrefillTile {
  int block_m = 128, block_n = 128, stages = 2;
};

// head_dim_v: of v and the output; 0 = head_dim. block_m: 0 = the head dim's default, else its
// alternative (prefill_alt_block_m).
constexpr PrefillTile prefill_tile(int head_dim, bool unmasked = false, int head_dim_v = 0,
                                   int block_m = 0) {
  if (head_dim_v == 0) head_dim_v = head_dim;
  PrefillTile t = head_dim_v != head_dim ? PrefillTile{128, 128, 2}  // qk 192 / v 128
                  : head_dim <= 64       ? PrefillTile{192, 128, 2}
                  : head_dim <= 128      ? PrefillTile{128, unmasked ? 128 : 128, 2}
                                         : PrefillTile{128, 64, 2};
  if (block_m != 0) t.block_m = block_m;
  return t;
}

// The one alternative tile height: 128 rows at head_dim 64 (q and v alike); 0 where there is
// none. A kernel spec's optional `bm` field names it.
constexpr int prefill_alt_block_m(int head_dim, int head_dim_v = 0) {
  return head_dim == 64 && (head_dim_v == 0 || head_dim_v == 64) ? 128 : 0;
}

// Longest query (tokens) for which a causal plan at head_dim 64 takes the 128-row tile.
constexpr int kPrefillShortCausalQ = 2048;

}  // namespace flashserve::attention
