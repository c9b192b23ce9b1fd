// Turns runtime values into compile-time constants through one small lambda-based switch:
//   dispatch_float(dtype, [&](auto tag) { using T = typename decltype(tag)::type; ... });
//   dispatch_int<1, 2, 4, 8>(items, [&](auto n) { kernel<decltype(n)::value><<<...>>>(); });
// Only the values listed are instantiated.
#pragma once

#include <type_traits>

#include "flashserve/core/types.cuh"

namespace flashserve {

template <class T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<T>{}) for the floating-point DType `dtype`; returns false when unsupported.
template <class F>
bool dispatch_float(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32:
      f(TypeTag<float>{});
      return true;
    case DType::kFloat16:
      f(TypeTag<half>{});
      return true;
    case DType::kBFloat16:
      f(TypeTag<nv_bfloat16>{});
      return true;
    default:
      return false;
  }
}

// Like dispatch_float, for the two 16-bit types and the two fp8 types too.
template <class F>
bool dispatch_storage(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat8E4M3:
      f(TypeTag<__nv_fp8_e4m3>{});
      return true;
    case DType::kFloat8E5M2:
      f(TypeTag<__nv_fp8_e5m2>{});
      return true;
    default:
      return dispatch_float(dtype, std::forward<F>(f));
  }
}

// Calls f(std::integral_constant<int, V>{}) for the V in Vs equal to `value`; false if none is.
template <int... Vs, class F>
bool dispatch_int(int value, F&& f) {
  return ((value == Vs ? (f(std::integral_constant<int, Vs>{}), true) : false) || ...);
}

template <class F>
void dispatch_bool(bool value, F&& f) {
  if (value) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

}  // namespace flashserve
