// TensorView: a non-owning description of device memory (pointer, dtype, shape, strides, device),
// the currency of the public API. It maps one-to-one onto DLPack and torch tensors. Host only.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "flashserve/core/dtype.h"

namespace flashserve {

struct TensorView {
  static constexpr int kMaxDims = 6;

  void* data = nullptr;
  DType dtype = DType::kFloat32;
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};  // in elements, not bytes
  int device = 0;                  // CUDA device ordinal the memory lives on

  // A contiguous (row-major) view.
  static TensorView contiguous(void* data, DType dtype, std::initializer_list<int64_t> shape,
                               int device = 0);
  // A view with explicit strides (in elements).
  static TensorView strided(void* data, DType dtype, std::initializer_list<int64_t> shape,
                            std::initializer_list<int64_t> strides, int device = 0);

  bool defined() const { return data != nullptr; }
  // ndim in [0, kMaxDims] and no negative size.
  bool well_formed() const;
  // No two elements share memory (a view that is safe to write from many threads).
  bool rows_disjoint() const;
  int64_t numel() const;
  // Negative dims count from the end, as in Python.
  int64_t size(int dim) const { return shape[dim < 0 ? dim + ndim : dim]; }
  int64_t stride(int dim) const { return strides[dim < 0 ? dim + ndim : dim]; }
  bool is_contiguous() const;
  int64_t nbytes_spanned() const;  // bytes from data to one past the last element
  // "bfloat16[16, 4096] strides [4096, 1] cuda:0"
  std::string describe() const;
};

}  // namespace flashserve
