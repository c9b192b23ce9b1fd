// RowIndex: the offset (in elements) of row r of a 2-D [rows, n] or 3-D [outer, inner, n] view
// whose last dim is contiguous. 3-D views cover per-head ops on slices of fused tensors, e.g. the
// q part of a packed qkv activation: strides (qkv_width, head_dim, 1) cannot be flattened.
#pragma once

#include <cstdint>

namespace flashserve {

struct RowIndex {
  int64_t inner = 1;         // size of the middle dim (1 for 2-D views)
  int64_t outer_stride = 0;  // elements between consecutive outer rows
  int64_t inner_stride = 0;  // elements between consecutive inner rows

  static RowIndex rows_2d(int64_t row_stride) { return {1, row_stride, 0}; }
  static RowIndex rows_3d(int64_t inner, int64_t outer_stride, int64_t inner_stride) {
    return {inner, outer_stride, inner_stride};
  }

#ifdef __CUDACC__
  __host__ __device__
#endif
      int64_t
      offset(int64_t row) const {
    if (inner == 1) return row * outer_stride;
    return (row / inner) * outer_stride + (row % inner) * inner_stride;
  }
};

}  // namespace flashserve
