// DeviceTensor: an owning device allocation with host upload/download in float, NaN poisoning and
// a TensorView of itself. For tests and benchmarks only.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "flashserve/tensor.h"
#include "host_dtype.h"

namespace fs_test {

using flashserve::TensorView;

// True when a CUDA device can be used; otherwise `reason` says why.
bool gpu_available(std::string* reason = nullptr);

// Throws std::runtime_error naming `what` when `err` is not cudaSuccess.
void cuda_check(cudaError_t err, const char* what);

class DeviceTensor {
 public:
  DeviceTensor() = default;
  DeviceTensor(DType dtype, std::vector<int64_t> shape);
  // Row-major storage of `storage_shape` (e.g. padded rows), viewed as `shape` with `strides`.
  DeviceTensor(DType dtype, std::vector<int64_t> shape, std::vector<int64_t> strides,
               int64_t storage_elems);
  ~DeviceTensor();
  DeviceTensor(DeviceTensor&& o) noexcept;
  DeviceTensor& operator=(DeviceTensor&& o) noexcept;
  DeviceTensor(const DeviceTensor&) = delete;
  DeviceTensor& operator=(const DeviceTensor&) = delete;

  TensorView view() const;
  DType dtype() const { return dtype_; }
  int64_t numel() const;
  const std::vector<int64_t>& shape() const { return shape_; }
  void* data() const { return ptr_; }
  int64_t storage_bytes() const { return storage_elems_ * flashserve::dtype_size(dtype_); }

  // Logical elements (row-major over `shape`), converted from/to float.
  void upload(const std::vector<float>& values);
  std::vector<float> download() const;
  // Raw bytes of the whole storage.
  void upload_raw(const void* data, int64_t bytes);
  std::vector<unsigned char> download_raw() const;
  // Fills the whole storage with 0xFF bytes: NaN in every float type (also fp8 e4m3/e5m2).
  void poison();

 private:
  int64_t offset_of(int64_t linear) const;
  DType dtype_ = DType::kFloat32;
  std::vector<int64_t> shape_, strides_;
  int64_t storage_elems_ = 0;
  void* ptr_ = nullptr;
};

// Fresh randomness for every run; the seed is printed by tests on failure.
uint64_t fresh_seed();
std::vector<float> random_normal(int64_t n, uint64_t seed, float mean = 0.f, float stddev = 1.f);
// Values rounded to dtype precision (so host references see exactly what the kernel reads).
std::vector<float> rounded(DType dtype, std::vector<float> values);

}  // namespace fs_test
