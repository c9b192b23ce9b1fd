// Small helpers shared by the public entry points.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdio>
#include <string>

#include "flashserve/core/row_index.h"
#include "flashserve/core/status.h"
#include "flashserve/runtime.h"
#include "flashserve/tensor.h"

namespace flashserve {

// Row layout of a 2-D [rows, n] or 3-D [outer, inner, n] view (last dim contiguous).
inline RowIndex row_index_of(const TensorView& t) {
  if (t.ndim == 3) return RowIndex::rows_3d(t.shape[1], t.strides[0], t.strides[1]);
  return RowIndex::rows_2d(t.strides[0]);
}

inline int64_t rows_of(const TensorView& t) {
  return t.ndim == 3 ? t.shape[0] * t.shape[1] : t.shape[0];
}

// True when the memory spanned by `a` and by `b` does not overlap (undefined views never do).
inline bool disjoint(const TensorView& a, const TensorView& b) {
  if (!a.defined() || !b.defined()) return true;
  const char* a0 = static_cast<const char*>(a.data);
  const char* b0 = static_cast<const char*>(b.data);
  return a0 + a.nbytes_spanned() <= b0 || b0 + b.nbytes_spanned() <= a0;
}

// "%g" formatting for messages (std::to_string prints -1e-7 as -0.000000).
// An integer for an error message.
inline std::string str(int64_t v) {
  return std::to_string(v);
}

inline std::string format_float(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

// kInvalidArgument "<op>: <what>" (what starts with the argument's name).
inline Status invalid(const char* op, const std::string& what) {
  return Status(StatusCode::kInvalidArgument, std::string(op) + ": " + what);
}

// The SM count a plan sizes its grid for: `requested` when > 0, else the current device's.
inline Status resolve_num_sms(const char* op, int requested, int* sms) {
  if (requested > 0) {
    *sms = requested;
    return Status();
  }
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return Status(StatusCode::kNoDevice,
                  std::string(op) + ": no CUDA device (set req.num_sms to plan without one)");
  }
  DeviceInfo info;
  Status st = get_device_info(device, &info);
  if (!st.ok()) return Status(st.code(), std::string(op) + ": " + st.message());
  *sms = info.sm_count;
  return Status();
}

// Converts a launcher's cudaError_t into a Status naming the op.
inline Status launch_status(const char* op, cudaError_t err) {
  if (err == cudaSuccess) return Status();
  return Status(StatusCode::kCudaError,
                std::string(op) + ": kernel launch failed: " + cudaGetErrorString(err));
}

}  // namespace flashserve
