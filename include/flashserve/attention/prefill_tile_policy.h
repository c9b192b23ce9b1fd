// Tile sizes of the Hopper prefill kernel, one place for all of them (bench/NOTES.md holds the
// measurements behind them). Host and device safe.
//
// Shared memory bounds the choice: Q (block_m x d) + stages x (K + V) (block_n x d each), 16-bit.
//   d = 64:  128 x 128, 2 stages =  80 KB
//   d = 128: 128 x 128, 2 stages = 160 KB
//   d = 256: 128 x  80, 2 stages = 224 KB (of 227 KB): a wider kv tile would not fit twice
#pragma once

namespace flashserve::attention {

struct PrefillTile {
  int block_m = 128, block_n = 128, stages = 2;
};

constexpr PrefillTile prefill_tile(int head_dim) {
  return head_dim <= 128 ? PrefillTile{128, 128, 2} : PrefillTile{128, 80, 2};
}

}  // namespace flashserve::attention
