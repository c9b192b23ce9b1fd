// ArgCheck: argument validation for the public entry points. Each check names the op, the
// argument, what it expected and what it got; the first failure wins and later checks are no-ops.
//
//   ArgCheck c("rmsnorm");
//   c.arg(input, "input").defined().ndim_in(2, 3).float_dtype().inner_contiguous();
//   if (!c.ok()) return c.status();
#pragma once

#include <initializer_list>
#include <string>
#include <type_traits>

#include "flashserve/core/status.h"
#include "flashserve/tensor.h"

namespace flashserve {

class ArgCheck {
 public:
  explicit ArgCheck(const char* op) : op_(op) {}

  // Selects the tensor that the following checks apply to.
  ArgCheck& arg(const TensorView& t, const char* name);

  // Non-null, well-formed (ndim in range, sizes >= 0), pointer aligned to the element size.
  ArgCheck& defined();
  ArgCheck& ndim(int expected);
  ArgCheck& ndim_in(int lo, int hi);
  ArgCheck& dtype(DType expected);
  ArgCheck& dtype_in(std::initializer_list<DType> allowed);
  ArgCheck& float_dtype();  // float32, float16 or bfloat16
  ArgCheck& size(int dim, int64_t expected, const char* what = nullptr);
  ArgCheck& size_at_least(int dim, int64_t lo);
  ArgCheck& same_shape(const TensorView& other, const char* other_name);
  ArgCheck& same_dtype(const TensorView& other, const char* other_name);
  ArgCheck& inner_contiguous();  // stride of the last dim is 1
  ArgCheck& contiguous();
  ArgCheck& numel(int64_t expected);
  ArgCheck& nonnegative_strides();
  // For outputs: no two elements of the view share memory (e.g. a row stride smaller than the row).
  ArgCheck& writable();
  // `t` (the selected tensor) either does not overlap `other` or is exactly the same view.
  ArgCheck& no_partial_alias(const TensorView& other, const char* other_name);

  // A scalar condition; `message` is used only when `cond` is false. On the hot path (every call
  // of every op) nothing may be built for a condition that holds: pass a literal, or a callable
  // returning the message for one that is computed (`[&] { return "x: got " + str(x); }`).
  ArgCheck& require(bool cond, const char* message);
  ArgCheck& require(bool cond, const std::string& message);
  template <class F, class = std::enable_if_t<std::is_invocable_r_v<std::string, F&>>>
  ArgCheck& require(bool cond, F&& message) {
    if (status_.ok() && !cond)
      fail(StatusCode::kInvalidArgument, std::string(op_) + ": " + message());
    return *this;
  }

  // Every tensor passed to arg() lives on the current CUDA device. Touches the CUDA runtime, so
  // call it after the pure-host checks.
  ArgCheck& on_current_device();

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  Status fail(StatusCode code, const std::string& message);

 private:
  bool skip() const { return !status_.ok() || current_ == nullptr; }
  std::string where() const;

  const char* op_;
  const TensorView* current_ = nullptr;
  const char* name_ = "";
  const TensorView* seen_[16] = {};
  const char* seen_names_[16] = {};
  int num_seen_ = 0;
  Status status_;
};

}  // namespace flashserve
