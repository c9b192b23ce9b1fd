// Parameters of the gated-activation kernel: out[r, :] = act(x[r, :d]) * x[r, d:2d].
#pragma once

#include <cstdint>

#include "flashserve/core/row_index.h"

namespace flashserve::activation {

template <class T>
struct ActParams {
  const T* input = nullptr;  // [rows, 2d]: the activated half first, then the gate
  RowIndex input_rows;
  T* out = nullptr;  // [rows, d]; never overlaps `input`
  RowIndex out_rows;
  int64_t rows = 0;  // at most 2^31 - 1 (one block per row along gridDim.x)
  int d = 0;
};

}  // namespace flashserve::activation
