// Warp-level tensor-core wrappers (sm_80+): ldmatrix and mma.sync m16n8k16 with 16-bit inputs
// (bf16 or fp16) and fp32 accumulators.
//
// Fragment layouts (g = lane / 4, t = lane % 4), 16-bit pairs packed low element first:
//   A (16 x 16, row-major): a[0] = (row g, cols 2t, 2t+1), a[1] = (row g+8, cols 2t, 2t+1),
//                           a[2] = (row g, cols 2t+8, 2t+9), a[3] = (row g+8, cols 2t+8, 2t+9)
//   B (16 x 8, "col"):      b[0] = (rows 2t, 2t+1, col g), b[1] = (rows 2t+8, 2t+9, col g)
//   C (16 x 8, fp32):       c[0], c[1] = (row g, cols 2t, 2t+1), c[2], c[3] = (row g+8, ...)
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

#include "flashserve/core/cp_async.cuh"

namespace flashserve {

// The ldmatrix reads stay after the cp.async waits and warp barriers ("memory" clobber).
// Four 8 x 8 matrices of 16-bit elements; lanes 8i..8i+7 give the 16-byte row addresses of matrix
// i, and r[i] receives lane's part of matrix i: (row lane / 4, elements 2 (lane % 4) + {0, 1}).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row_addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row_addr))
               : "memory");
}

// As ldmatrix_x4, transposed: r[i] receives (rows 2 (lane % 4) + {0, 1}, element lane / 4).
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row_addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row_addr))
               : "memory");
}

// Two floats as a packed 16-bit pair of T (lo in the low half).
template <class T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<half>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Four fp8 values (bytes 0..3 of w, TF = __nv_fp8_e4m3 or __nv_fp8_e5m2) as two packed 16-bit
// pairs of T: lo = (byte 0, byte 1), hi = (byte 2, byte 3), low element first. Exact: every e4m3 /
// e5m2 value is an fp16 value (cvt.rn.f16x2.e4m3x2 / e5m2x2, sm_89+), and every fp16 value from an
// fp8 one (at most 3 mantissa bits) is a bf16 value.
template <class TF>
__device__ __forceinline__ void fp8x4_to_half2x2(uint32_t w, uint32_t& lo, uint32_t& hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  if constexpr (std::is_same_v<TF, __nv_fp8_e4m3>) {
    asm("{\n .reg .b16 l, h;\n mov.b32 {l, h}, %2;\n cvt.rn.f16x2.e4m3x2 %0, l;\n"
        " cvt.rn.f16x2.e4m3x2 %1, h;\n}\n"
        : "=r"(lo), "=r"(hi)
        : "r"(w));
  } else {
    asm("{\n .reg .b16 l, h;\n mov.b32 {l, h}, %2;\n cvt.rn.f16x2.e5m2x2 %0, l;\n"
        " cvt.rn.f16x2.e5m2x2 %1, h;\n}\n"
        : "=r"(lo), "=r"(hi)
        : "r"(w));
  }
#else
  constexpr __nv_fp8_interpretation_t kind =
      std::is_same_v<TF, __nv_fp8_e4m3> ? __NV_E4M3 : __NV_E5M2;
  const __half2_raw l = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w), kind);
  const __half2_raw h =
      __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w >> 16), kind);
  lo = static_cast<uint32_t>(l.x) | (static_cast<uint32_t>(l.y) << 16);
  hi = static_cast<uint32_t>(h.x) | (static_cast<uint32_t>(h.y) << 16);
#endif
}

// A packed fp16 pair as a packed pair of T (identity for half; exact for values from fp8).
template <class T>
__device__ __forceinline__ uint32_t half2_to(uint32_t h) {
  if constexpr (std::is_same_v<T, half>) {
    return h;
  } else {
    const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&h));
    return pack2<T>(f.x, f.y);
  }
}

// c += A B, m16n8k16, 16-bit inputs of type T, fp32 accumulators.
template <class T>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1);
template <>
__device__ __forceinline__ void mma_16816<nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4],
                                                       uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

}  // namespace flashserve
