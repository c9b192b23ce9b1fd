// Maps DType to the CUDA element type and back, and converts any element type to and from float.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "flashserve/core/dtype.h"

namespace flashserve {

template <class T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::kFloat32;
};
template <>
struct DTypeOf<half> {
  static constexpr DType value = DType::kFloat16;
};
template <>
struct DTypeOf<nv_bfloat16> {
  static constexpr DType value = DType::kBFloat16;
};
template <>
struct DTypeOf<__nv_fp8_e4m3> {
  static constexpr DType value = DType::kFloat8E4M3;
};
template <>
struct DTypeOf<__nv_fp8_e5m2> {
  static constexpr DType value = DType::kFloat8E5M2;
};

template <class T>
__host__ __device__ __forceinline__ float to_float(T x) {
  return static_cast<float>(x);
}
template <>
__host__ __device__ __forceinline__ float to_float<half>(half x) {
  return __half2float(x);
}
template <>
__host__ __device__ __forceinline__ float to_float<nv_bfloat16>(nv_bfloat16 x) {
  return __bfloat162float(x);
}

// Round-to-nearest conversion; fp8 saturates to the largest finite value (no inf from overflow).
template <class T>
__host__ __device__ __forceinline__ T from_float(float x) {
  return static_cast<T>(x);
}
template <>
__host__ __device__ __forceinline__ half from_float<half>(float x) {
  return __float2half_rn(x);
}
template <>
__host__ __device__ __forceinline__ nv_bfloat16 from_float<nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

}  // namespace flashserve
