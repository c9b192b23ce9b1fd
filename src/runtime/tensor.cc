#include "flashserve/tensor.h"

#include <sstream>

namespace flashserve {
namespace {

// ndim clamped to the storage, so that a malformed view is never read past its arrays.
int dims_of(const TensorView& t) {
  return t.ndim < 0 ? 0 : (t.ndim > TensorView::kMaxDims ? TensorView::kMaxDims : t.ndim);
}

}  // namespace

TensorView TensorView::contiguous(void* data, DType dtype, std::initializer_list<int64_t> shape,
                                  int device) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.ndim = static_cast<int>(shape.size() > kMaxDims ? kMaxDims : shape.size());
  int i = 0;
  for (int64_t s : shape) {
    if (i < kMaxDims) t.shape[i++] = s;
  }
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

bool TensorView::well_formed() const {
  if (ndim < 0 || ndim > kMaxDims) return false;
  for (int d = 0; d < ndim; ++d) {
    if (shape[d] < 0) return false;
  }
  return true;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int d = 0; d < dims_of(*this); ++d)
    n *= shape[d];
  return n;
}

bool TensorView::is_contiguous() const {
  int64_t expected = 1;
  for (int d = dims_of(*this) - 1; d >= 0; --d) {
    if (shape[d] != 1 && strides[d] != expected) return false;
    expected *= shape[d];
  }
  return true;
}

int64_t TensorView::nbytes_spanned() const {
  if (!well_formed() || numel() == 0) return 0;
  int64_t last = 0;
  for (int d = 0; d < ndim; ++d)
    last += (shape[d] - 1) * strides[d];
  return (last + 1) * dtype_size(dtype);
}

bool TensorView::rows_disjoint() const {
  if (!well_formed()) return false;
  if (numel() == 0) return true;  // nothing to write; strides of empty views are arbitrary
  // Dims of size > 1 ordered by stride: each stride must step past all that smaller dims span.
  int order[kMaxDims];
  int n = 0;
  for (int d = 0; d < ndim; ++d) {
    if (shape[d] > 1) order[n++] = d;
  }
  for (int i = 1; i < n; ++i) {
    for (int j = i; j > 0 && strides[order[j]] < strides[order[j - 1]]; --j) {
      const int tmp = order[j];
      order[j] = order[j - 1];
      order[j - 1] = tmp;
    }
  }
  int64_t span = 1;  // elements covered by the dims already visited
  for (int i = 0; i < n; ++i) {
    const int d = order[i];
    if (strides[d] < span) return false;
    span += strides[d] * (shape[d] - 1);
  }
  return true;
}

std::string TensorView::describe() const {
  std::ostringstream os;
  if (!defined()) return "undefined";
  if (ndim < 0 || ndim > kMaxDims) {
    os << dtype_name(dtype) << " with invalid ndim " << ndim;
    return os.str();
  }
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
