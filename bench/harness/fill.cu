#include <stdexcept>
#include <string>

#include "flashserve/core/dispatch.h"
#include "harness/fill.h"

namespace fs_bench {
namespace {

__device__ __forceinline__ uint32_t hash32(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}

template <class T>
__global__ void fill_normal_kernel(T* data, int64_t rows, int64_t cols, int64_t row_stride,
                                   uint64_t seed, float mean, float stddev) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t key = seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(i) * 2;
    const float u1 = (hash32(key) + 1.f) * 2.3283064e-10f;  // (0, 1]
    const float u2 = hash32(key + 1) * 2.3283064e-10f;
    const float z = sqrtf(-2.f * logf(u1)) * cospif(2.f * u2);
    data[(i / cols) * row_stride + i % cols] = flashserve::from_float<T>(mean + stddev * z);
  }
}

}  // namespace

void fill_normal(const flashserve::TensorView& t, uint64_t seed, float mean, float stddev,
                 cudaStream_t stream) {
  // Collapse to [rows, cols] where cols is the last dim; rows must be evenly strided.
  const int64_t cols = t.ndim ? t.shape[t.ndim - 1] : 1;
  const int64_t rows = cols ? t.numel() / cols : 0;
  if (rows * cols == 0) return;
  if (t.ndim > 2 && !t.is_contiguous())
    throw std::runtime_error("fill_normal: needs 2-D or contiguous");
  const int64_t row_stride = t.ndim >= 2 ? t.strides[t.ndim - 2] : cols;
  const int blocks = static_cast<int>(std::min<int64_t>((rows * cols + 255) / 256, 4096));
  const bool ok = flashserve::dispatch_storage(t.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    fill_normal_kernel<T><<<blocks, 256, 0, stream>>>(static_cast<T*>(t.data), rows, cols,
                                                      row_stride, seed, mean, stddev);
  });
  if (!ok) throw std::runtime_error("fill_normal: unsupported dtype");
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("fill_normal: ") + cudaGetErrorString(err));
}

}  // namespace fs_bench
