#include "flashserve/tensor.h"

#include <sstream>

namespace flashserve {

TensorView TensorView::contiguous(void* data, DType dtype, std::initializer_list<int64_t> shape,
                                  int device) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.ndim = static_cast<int>(shape.size());
  int i = 0;
  for (int64_t s : shape)
    t.shape[i++] = s;
  int64_t stride = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    t.strides[d] = stride;
    stride *= t.shape[d];
  }
  return t;
}

TensorView TensorView::strided(void* data, DType dtype, std::initializer_list<int64_t> shape,
                               std::initializer_list<int64_t> strides, int device) {
  TensorView t = contiguous(data, dtype, shape, device);
  int i = 0;
  for (int64_t s : strides) {
    if (i < kMaxDims) t.strides[i++] = s;
  }
  return t;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d)
    n *= shape[d];
  return n;
}

bool TensorView::is_contiguous() const {
  int64_t expected = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    if (shape[d] != 1 && strides[d] != expected) return false;
    expected *= shape[d];
  }
  return true;
}

int64_t TensorView::nbytes_spanned() const {
  if (numel() == 0) return 0;
  int64_t last = 0;
  for (int d = 0; d < ndim; ++d)
    last += (shape[d] - 1) * strides[d];
  return (last + 1) * dtype_size(dtype);
}

std::string TensorView::describe() const {
  std::ostringstream os;
  if (!defined()) return "undefined";
  os << dtype_name(dtype) << "[";
  for (int d = 0; d < ndim; ++d)
    os << (d ? ", " : "") << shape[d];
  os << "] strides [";
  for (int d = 0; d < ndim; ++d)
    os << (d ? ", " : "") << strides[d];
  os << "] cuda:" << device;
  return os.str();
}

}  // namespace flashserve
