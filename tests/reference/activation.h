// CPU reference for the gated activations, in double.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "flashserve/activation.h"

namespace fs_test::ref {

inline double activation(flashserve::Activation act, double x) {
  switch (act) {
    case flashserve::Activation::kSilu:
      return x / (1.0 + std::exp(-x));
    case flashserve::Activation::kGelu:
      return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case flashserve::Activation::kGeluTanh: {
      const double k = std::sqrt(2.0 / 3.14159265358979323846);
      return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
    }
  }
  return std::nan("");
}

// x: [rows, 2d] row-major (activated half, then gate); returns [rows, d].
inline std::vector<double> act_and_mul(flashserve::Activation act, const std::vector<float>& x,
                                       int64_t rows, int64_t d) {
  std::vector<double> out(static_cast<size_t>(rows * d));
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x.data() + r * 2 * d;
    for (int64_t j = 0; j < d; ++j)
      out[r * d + j] = activation(act, row[j]) * static_cast<double>(row[d + j]);
  }
  return out;
}

}  // namespace fs_test::ref
