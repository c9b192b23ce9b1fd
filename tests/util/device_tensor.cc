#include "device_tensor.h"

#include <stdexcept>

namespace fs_test {

bool gpu_available(std::string* reason) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    cudaGetLastError();
    if (reason) {
      *reason = err != cudaSuccess ? std::string("no CUDA device (") + cudaGetErrorString(err) + ")"
                                   : std::string("no CUDA device (device count is 0)");
    }
    return false;
  }
  return true;
}

void cuda_check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
  }
}

DeviceTensor::DeviceTensor(DType dtype, std::vector<int64_t> shape)
    : dtype_(dtype), shape_(std::move(shape)) {
  strides_.assign(shape_.size(), 1);
  int64_t s = 1;
  for (int d = static_cast<int>(shape_.size()) - 1; d >= 0; --d) {
    strides_[d] = s;
    s *= shape_[d];
  }
  storage_elems_ = s;
  if (storage_bytes() > 0) cuda_check(cudaMalloc(&ptr_, storage_bytes()), "cudaMalloc");
}

DeviceTensor::DeviceTensor(DType dtype, std::vector<int64_t> shape, std::vector<int64_t> strides,
                           int64_t storage_elems)
    : dtype_(dtype),
      shape_(std::move(shape)),
      strides_(std::move(strides)),
      storage_elems_(storage_elems) {
  if (storage_bytes() > 0) cuda_check(cudaMalloc(&ptr_, storage_bytes()), "cudaMalloc");
}

DeviceTensor::~DeviceTensor() {
  if (ptr_) cudaFree(ptr_);
}

DeviceTensor::DeviceTensor(DeviceTensor&& o) noexcept {
  *this = std::move(o);
}

DeviceTensor& DeviceTensor::operator=(DeviceTensor&& o) noexcept {
  if (this != &o) {
    if (ptr_) cudaFree(ptr_);
    dtype_ = o.dtype_;
    shape_ = std::move(o.shape_);
    strides_ = std::move(o.strides_);
    storage_elems_ = o.storage_elems_;
    ptr_ = o.ptr_;
    o.ptr_ = nullptr;
    o.storage_elems_ = 0;
  }
  return *this;
}

TensorView DeviceTensor::view() const {
  TensorView t;
  t.data = ptr_;
  t.dtype = dtype_;
  t.ndim = static_cast<int>(shape_.size());
  for (int d = 0; d < t.ndim; ++d) {
    t.shape[d] = shape_[d];
    t.strides[d] = strides_[d];
  }
  int dev = 0;
  cudaGetDevice(&dev);
  t.device = dev;
  return t;
}

int64_t DeviceTensor::numel() const {
  int64_t n = 1;
  for (int64_t s : shape_)
    n *= s;
  return n;
}

int64_t DeviceTensor::offset_of(int64_t linear) const {
  int64_t off = 0;
  for (int d = static_cast<int>(shape_.size()) - 1; d >= 0; --d) {
    off += (linear % shape_[d]) * strides_[d];
    linear /= shape_[d];
  }
  return off;
}

void DeviceTensor::upload(const std::vector<float>& values) {
  if (static_cast<int64_t>(values.size()) != numel()) throw std::runtime_error("upload: size");
  std::vector<unsigned char> host = download_raw();  // keep padding bytes as they are
  const int es = flashserve::dtype_size(dtype_);
  for (int64_t i = 0; i < numel(); ++i)
    store_from_float(dtype_, values[i], &host[offset_of(i) * es]);
  upload_raw(host.data(), static_cast<int64_t>(host.size()));
}

std::vector<float> DeviceTensor::download() const {
  std::vector<unsigned char> host = download_raw();
  const int es = flashserve::dtype_size(dtype_);
  std::vector<float> out(numel());
  for (int64_t i = 0; i < numel(); ++i)
    out[i] = load_as_float(dtype_, &host[offset_of(i) * es]);
  return out;
}

void DeviceTensor::upload_raw(const void* data, int64_t bytes) {
  if (bytes > 0) cuda_check(cudaMemcpy(ptr_, data, bytes, cudaMemcpyHostToDevice), "upload");
}

std::vector<unsigned char> DeviceTensor::download_raw() const {
  std::vector<unsigned char> host(storage_bytes());
  cuda_check(cudaDeviceSynchronize(), "kernel");
  if (!host.empty()) {
    cuda_check(cudaMemcpy(host.data(), ptr_, host.size(), cudaMemcpyDeviceToHost), "download");
  }
  return host;
}

void DeviceTensor::poison() {
  if (storage_bytes() > 0) cuda_check(cudaMemset(ptr_, 0xFF, storage_bytes()), "poison");
}

uint64_t fresh_seed() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

std::vector<float> random_normal(int64_t n, uint64_t seed, float mean, float stddev) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> dist(mean, stddev);
  std::vector<float> v(n);
  for (auto& x : v)
    x = dist(gen);
  return v;
}

std::vector<float> rounded(DType dtype, std::vector<float> values) {
  for (auto& x : values)
    x = round_to(dtype, x);
  return values;
}

}  // namespace fs_test
