#include "api/arg_check.h"

#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdint>
#include <sstream>

namespace flashserve {
namespace {

std::string shape_str(const TensorView& t) {
  std::ostringstream os;
  os << "[";
  for (int d = 0; d < t.ndim; ++d)
    os << (d ? ", " : "") << t.shape[d];
  os << "]";
  return os.str();
}

}  // namespace

std::string ArgCheck::where() const {
  return std::string(op_) + ": " + name_ + ": ";
}

Status ArgCheck::fail(StatusCode code, const std::string& message) {
  if (status_.ok()) status_ = Status(code, message);
  return status_;
}

ArgCheck& ArgCheck::arg(const TensorView& t, const char* name) {
  current_ = &t;
  name_ = name;
  if (num_seen_ < 16) {
    seen_[num_seen_] = &t;
    seen_names_[num_seen_++] = name;
  }
  return *this;
}

ArgCheck& ArgCheck::defined() {
  if (skip()) return *this;
  if (!current_->defined()) {
    // An empty view may have a null pointer (torch gives those); it is never dereferenced.
    if (!current_->well_formed() || current_->numel() != 0) {
      fail(StatusCode::kInvalidArgument, where() + "expected a device pointer, got null");
    }
  } else if (current_->ndim < 0 || current_->ndim > TensorView::kMaxDims) {
    fail(StatusCode::kInvalidArgument, where() + "expected ndim in [0, " +
                                           std::to_string(TensorView::kMaxDims) + "], got " +
                                           std::to_string(current_->ndim));
  } else {
    for (int d = 0; d < current_->ndim; ++d) {
      if (current_->shape[d] < 0) {
        fail(StatusCode::kInvalidArgument,
             where() + "expected non-negative sizes, got shape " + shape_str(*current_));
        break;
      }
    }
    const int esize = dtype_size(current_->dtype);
    if (status_.ok() && reinterpret_cast<uintptr_t>(current_->data) % esize != 0) {
      std::ostringstream os;
      os << where() << "expected a pointer aligned to " << esize << " bytes ("
         << dtype_name(current_->dtype) << "), got " << current_->data;
      fail(StatusCode::kInvalidArgument, os.str());
    }
  }
  return *this;
}

ArgCheck& ArgCheck::writable() {
  if (skip()) return *this;
  if (!current_->rows_disjoint()) {
    fail(StatusCode::kInvalidArgument,
         where() + "expected an output view whose elements do not overlap, got " +
             current_->describe());
  }
  return *this;
}

ArgCheck& ArgCheck::ndim(int expected) {
  if (skip()) return *this;
  if (current_->ndim != expected) {
    fail(StatusCode::kInvalidArgument, where() + "expected a " + std::to_string(expected) +
                                           "-D tensor, got " + std::to_string(current_->ndim) +
                                           "-D with shape " + shape_str(*current_));
  }
  return *this;
}

ArgCheck& ArgCheck::ndim_in(int lo, int hi) {
  if (skip()) return *this;
  if (current_->ndim < lo || current_->ndim > hi) {
    fail(StatusCode::kInvalidArgument, where() + "expected a " + std::to_string(lo) + "-D to " +
                                           std::to_string(hi) + "-D tensor, got " +
                                           std::to_string(current_->ndim) + "-D with shape " +
                                           shape_str(*current_));
  }
  return *this;
}

ArgCheck& ArgCheck::dtype(DType expected) {
  return dtype_in({expected});
}

ArgCheck& ArgCheck::dtype_in(std::initializer_list<DType> allowed) {
  if (skip()) return *this;
  for (DType d : allowed) {
    if (current_->dtype == d) return *this;
  }
  std::string list;
  for (DType d : allowed)
    list += (list.empty() ? "" : ", ") + std::string(dtype_name(d));
  fail(StatusCode::kInvalidArgument, where() + "expected dtype " +
                                         (allowed.size() > 1 ? "one of {" + list + "}" : list) +
                                         ", got " + dtype_name(current_->dtype));
  return *this;
}

ArgCheck& ArgCheck::float_dtype() {
  return dtype_in({DType::kFloat32, DType::kFloat16, DType::kBFloat16});
}

ArgCheck& ArgCheck::size(int dim, int64_t expected, const char* what) {
  if (skip()) return *this;
  const int d = dim < 0 ? dim + current_->ndim : dim;
  if (d < 0 || d >= current_->ndim || current_->shape[d] != expected) {
    fail(StatusCode::kInvalidArgument, where() + "expected size " + std::to_string(expected) +
                                           (what ? std::string(" (") + what + ")" : std::string()) +
                                           " at dim " + std::to_string(dim) + ", got shape " +
                                           shape_str(*current_));
  }
  return *this;
}

ArgCheck& ArgCheck::size_at_least(int dim, int64_t lo) {
  if (skip()) return *this;
  const int d = dim < 0 ? dim + current_->ndim : dim;
  if (d < 0 || d >= current_->ndim || current_->shape[d] < lo) {
    fail(StatusCode::kInvalidArgument, where() + "expected size >= " + std::to_string(lo) +
                                           " at dim " + std::to_string(dim) + ", got shape " +
                                           shape_str(*current_));
  }
  return *this;
}

ArgCheck& ArgCheck::same_shape(const TensorView& other, const char* other_name) {
  if (skip()) return *this;
  bool same = current_->ndim == other.ndim;
  for (int d = 0; same && d < other.ndim; ++d)
    same = current_->shape[d] == other.shape[d];
  if (!same) {
    fail(StatusCode::kInvalidArgument, where() + "expected the shape of " + other_name + " " +
                                           shape_str(other) + ", got " + shape_str(*current_));
  }
  return *this;
}

ArgCheck& ArgCheck::same_dtype(const TensorView& other, const char* other_name) {
  if (skip()) return *this;
  if (current_->dtype != other.dtype) {
    fail(StatusCode::kInvalidArgument, where() + "expected the dtype of " + other_name + " (" +
                                           dtype_name(other.dtype) + "), got " +
                                           dtype_name(current_->dtype));
  }
  return *this;
}

ArgCheck& ArgCheck::inner_contiguous() {
  if (skip()) return *this;
  if (current_->ndim > 0 && current_->shape[current_->ndim - 1] > 1 &&
      current_->strides[current_->ndim - 1] != 1) {
    fail(StatusCode::kInvalidArgument, where() + "expected stride 1 in the last dim, got " +
                                           std::to_string(current_->strides[current_->ndim - 1]));
  }
  return *this;
}

ArgCheck& ArgCheck::contiguous() {
  if (skip()) return *this;
  if (!current_->is_contiguous()) {
    fail(StatusCode::kInvalidArgument,
         where() + "expected a contiguous tensor, got " + current_->describe());
  }
  return *this;
}

ArgCheck& ArgCheck::numel(int64_t expected) {
  if (skip()) return *this;
  if (current_->numel() != expected) {
    fail(StatusCode::kInvalidArgument, where() + "expected " + std::to_string(expected) +
                                           " element(s), got shape " + shape_str(*current_));
  }
  return *this;
}

ArgCheck& ArgCheck::nonnegative_strides() {
  if (skip()) return *this;
  for (int d = 0; d < current_->ndim; ++d) {
    if (current_->strides[d] < 0) {
      fail(StatusCode::kInvalidArgument,
           where() + "expected non-negative strides, got " + current_->describe());
      break;
    }
  }
  return *this;
}

ArgCheck& ArgCheck::no_partial_alias(const TensorView& other, const char* other_name) {
  if (skip() || !other.defined()) return *this;
  const char* a0 = static_cast<const char*>(current_->data);
  const char* a1 = a0 + current_->nbytes_spanned();
  const char* b0 = static_cast<const char*>(other.data);
  const char* b1 = b0 + other.nbytes_spanned();
  if (a0 >= b1 || b0 >= a1) return *this;  // disjoint
  bool same_view = a0 == b0 && current_->ndim == other.ndim && current_->dtype == other.dtype;
  for (int d = 0; same_view && d < other.ndim; ++d) {
    same_view = current_->shape[d] == other.shape[d] && current_->strides[d] == other.strides[d];
  }
  if (!same_view) {
    fail(StatusCode::kInvalidArgument, where() + "overlaps " + other_name +
                                           " without being the same view; pass the same view "
                                           "for in-place use or disjoint memory");
  }
  return *this;
}

ArgCheck& ArgCheck::require(bool cond, const char* message) {
  if (status_.ok() && !cond) fail(StatusCode::kInvalidArgument, std::string(op_) + ": " + message);
  return *this;
}

ArgCheck& ArgCheck::require(bool cond, const std::string& message) {
  if (status_.ok() && !cond) fail(StatusCode::kInvalidArgument, std::string(op_) + ": " + message);
  return *this;
}

ArgCheck& ArgCheck::on_current_device() {
  if (!status_.ok()) return *this;
  int device = -1;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error of the query
    fail(StatusCode::kNoDevice,
         std::string(op_) + ": no usable CUDA device (" + cudaGetErrorString(err) + ")");
    return *this;
  }
  for (int i = 0; i < num_seen_; ++i) {
    if (seen_[i]->defined() && seen_[i]->device != device) {
      fail(StatusCode::kInvalidArgument,
           std::string(op_) + ": " + seen_names_[i] +
               ": expected a tensor on the current device cuda:" + std::to_string(device) +
               ", got cuda:" + std::to_string(seen_[i]->device));
      break;
    }
  }
  return *this;
}

}  // namespace flashserve
