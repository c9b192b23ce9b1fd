// Parameters of the row-normalization kernels (RMSNorm, LayerNorm and their fused forms).
#pragma once

#include <cstdint>

#include "flashserve/core/row_index.h"

namespace flashserve::norm {

template <class T, class TOut>
struct NormParams {
  const T* input = nullptr;  // [rows, hidden]
  RowIndex input_rows;
  T* residual = nullptr;  // fused add: residual += input, then the sum is normalized
  RowIndex residual_rows;
  TOut* out = nullptr;  // may be `input` itself (in place)
  RowIndex out_rows;
  const T* weight = nullptr;         // [hidden]
  const T* bias = nullptr;           // [hidden] or null (LayerNorm only)
  const float* out_scale = nullptr;  // fp8 output: out = y / *out_scale; null means 1
  int64_t rows = 0;
  int hidden = 0;
  float eps = 1e-6f;
  float weight_offset = 0.f;  // 1 for Gemma's (1 + weight)
};

}  // namespace flashserve::norm
