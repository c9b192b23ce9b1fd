// The accuracy rules of METHOD.md, shared by the GPU tests and `flashserve bench --refcheck`.
#pragma once

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "flashserve/core/dtype.h"

namespace fs_test {

struct Accuracy {
  bool pass = false;
  int64_t nan_count = 0;  // NaN or Inf in the output where the reference is finite
  double max_err = 0;     // max |out - ref|
  double base_err = 0;    // max |base - ref|
  double noise = 0;       // max |(ref + 0.3 - 0.3) - ref| in float32
  double bound = 0;
  double rel_l2 = 0;
  int64_t worst = -1;
  std::string str() const {
    std::ostringstream os;
    os << (pass ? "pass" : "FAIL") << " max_err " << max_err << " bound " << bound << " (base "
       << base_err << ", fp32 noise " << noise << ") rel_l2 " << rel_l2 << " nonfinite "
       << nan_count << " worst@" << worst;
    return os.str();
  }
};

inline double rel_l2(const std::vector<float>& out, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = static_cast<double>(out[i]) - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Reduction kernels: pass when max|out - ref| <= 2 max|base - ref| + 2 fp32_noise, where `base`
// is the same computation done naively in the kernel's own low precision. NaN never passes.
inline Accuracy accuracy_rule(const std::vector<float>& out, const std::vector<double>& ref,
                              const std::vector<float>& base) {
  Accuracy a;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(out[i])) {
      ++a.nan_count;
      if (a.worst < 0) a.worst = static_cast<int64_t>(i);
      continue;
    }
    const double e = std::fabs(out[i] - ref[i]);
    if (e > a.max_err) {
      a.max_err = e;
      if (a.nan_count == 0) a.worst = static_cast<int64_t>(i);
    }
    if (std::isfinite(base[i])) a.base_err = std::fmax(a.base_err, std::fabs(base[i] - ref[i]));
    const float r = static_cast<float>(ref[i]);
    const float shifted = (r + 0.3f) - 0.3f;
    a.noise = std::fmax(a.noise, std::fabs(static_cast<double>(shifted) - ref[i]));
  }
  a.bound = 2 * a.base_err + 2 * a.noise;
  a.rel_l2 = rel_l2(out, ref);
  a.pass = a.nan_count == 0 && a.max_err <= a.bound;
  return a;
}

// Elementwise kernels: relative L2 error below 1e-2 (bf16), 2e-3 (fp16), 1e-5 (fp32).
inline double elementwise_tolerance(flashserve::DType dtype) {
  switch (dtype) {
    case flashserve::DType::kBFloat16:
      return 1e-2;
    case flashserve::DType::kFloat16:
      return 2e-3;
    case flashserve::DType::kFloat32:
      return 1e-5;
    default:
      return 1e-1;  // fp8: checked separately, element by element
  }
}

// Spacing of representable values of `dtype` around |x| (one unit in the last place), subnormals
// included.
inline double ulp_of(flashserve::DType dtype, double x) {
  int mantissa = 23, min_exp = -126;
  switch (dtype) {
    case flashserve::DType::kFloat16:
      mantissa = 10, min_exp = -14;
      break;
    case flashserve::DType::kBFloat16:
      mantissa = 7, min_exp = -126;
      break;
    default:
      break;
  }
  const double a = std::fabs(x);
  const int e = a > 0 ? static_cast<int>(std::floor(std::log2(a))) : min_exp;
  return std::ldexp(1.0, (e < min_exp ? min_exp : e) - mantissa);
}

// Pass when the relative L2 error is under the dtype's tolerance, or, for tensors so small or so
// close to zero that the relative error is dominated by rounding, when every element is within one
// unit of the dtype's spacing of the reference. NaN never passes.
inline Accuracy elementwise_rule(const std::vector<float>& out, const std::vector<double>& ref,
                                 flashserve::DType dtype) {
  Accuracy a;
  bool within_ulp = true;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(out[i])) {
      ++a.nan_count;
      continue;
    }
    const double e = std::fabs(out[i] - ref[i]);
    within_ulp = within_ulp && e <= ulp_of(dtype, ref[i]);
    if (e > a.max_err) {
      a.max_err = e;
      a.worst = static_cast<int64_t>(i);
    }
  }
  a.rel_l2 = rel_l2(out, ref);
  a.bound = elementwise_tolerance(dtype);
  a.pass = a.nan_count == 0 && (a.rel_l2 < a.bound || within_ulp);
  return a;
}

}  // namespace fs_test
