// Host-side element conversions for tests and benchmarks (round to nearest even, fp8 saturating).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <cstring>

#include "flashserve/core/dtype.h"

namespace fs_test {

using flashserve::DType;

inline float load_as_float(DType dtype, const void* p) {
  switch (dtype) {
    case DType::kFloat32: {
      float v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case DType::kFloat16: {
      __half_raw r;
      std::memcpy(&r.x, p, 2);
      return __half2float(__half(r));
    }
    case DType::kBFloat16: {
      __nv_bfloat16_raw r;
      std::memcpy(&r.x, p, 2);
      return __bfloat162float(__nv_bfloat16(r));
    }
    case DType::kFloat8E4M3: {
      __nv_fp8_e4m3 v;
      std::memcpy(&v.__x, p, 1);
      return static_cast<float>(v);
    }
    case DType::kFloat8E5M2: {
      __nv_fp8_e5m2 v;
      std::memcpy(&v.__x, p, 1);
      return static_cast<float>(v);
    }
    case DType::kInt32: {
      int32_t v;
      std::memcpy(&v, p, 4);
      return static_cast<float>(v);
    }
    case DType::kInt64: {
      int64_t v;
      std::memcpy(&v, p, 8);
      return static_cast<float>(v);
    }
    case DType::kUInt8:
      return *static_cast<const uint8_t*>(p);
  }
  return 0.f;
}

inline void store_from_float(DType dtype, float x, void* p) {
  switch (dtype) {
    case DType::kFloat32:
      std::memcpy(p, &x, 4);
      return;
    case DType::kFloat16: {
      __half_raw r = __half_raw(__float2half_rn(x));
      std::memcpy(p, &r.x, 2);
      return;
    }
    case DType::kBFloat16: {
      __nv_bfloat16_raw r = __nv_bfloat16_raw(__float2bfloat16_rn(x));
      std::memcpy(p, &r.x, 2);
      return;
    }
    case DType::kFloat8E4M3: {
      __nv_fp8_e4m3 v(x);
      std::memcpy(p, &v.__x, 1);
      return;
    }
    case DType::kFloat8E5M2: {
      __nv_fp8_e5m2 v(x);
      std::memcpy(p, &v.__x, 1);
      return;
    }
    case DType::kInt32: {
      int32_t v = static_cast<int32_t>(x);
      std::memcpy(p, &v, 4);
      return;
    }
    case DType::kInt64: {
      int64_t v = static_cast<int64_t>(x);
      std::memcpy(p, &v, 8);
      return;
    }
    case DType::kUInt8:
      *static_cast<uint8_t*>(p) = static_cast<uint8_t>(x);
      return;
  }
}

// x rounded to the precision of `dtype` (what storing and reloading it gives).
inline float round_to(DType dtype, double x) {
  unsigned char buf[8];
  store_from_float(dtype, static_cast<float>(x), buf);
  return load_as_float(dtype, buf);
}

}  // namespace fs_test
