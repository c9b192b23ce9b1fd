// Uses the installed library the way a downstream engine would. Without a GPU it checks what runs
// on the host (version, argument validation); with one it also runs an RMSNorm and checks it.
#include <flashserve/flashserve.h>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  std::printf("flashserve %s\n", flashserve::version());
  flashserve::TensorView none;
  flashserve::Status st = flashserve::rmsnorm(none, none, none);
  if (st.code() != flashserve::StatusCode::kInvalidArgument) {
    std::printf("expected invalid argument for null input, got %s\n", st.to_string().c_str());
    return 1;
  }
  int count = 0;
  if (!flashserve::device_count(&count).ok()) {
    std::printf("no CUDA device: host checks passed\n");
    return 0;
  }
  const int rows = 3, hidden = 64;
  std::vector<float> x(rows * hidden), w(hidden, 2.f), y(rows * hidden);
  for (int i = 0; i < rows * hidden; ++i)
    x[i] = static_cast<float>(i % 7) - 3.f;
  void *dx, *dw, *dy;
  cudaMalloc(&dx, x.size() * 4);
  cudaMalloc(&dw, w.size() * 4);
  cudaMalloc(&dy, y.size() * 4);
  cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dw, w.data(), w.size() * 4, cudaMemcpyHostToDevice);
  using flashserve::DType;
  using flashserve::TensorView;
  st = flashserve::rmsnorm(TensorView::contiguous(dy, DType::kFloat32, {rows, hidden}),
                           TensorView::contiguous(dx, DType::kFloat32, {rows, hidden}),
                           TensorView::contiguous(dw, DType::kFloat32, {hidden}));
  cudaMemcpy(y.data(), dy, y.size() * 4, cudaMemcpyDeviceToHost);
  if (!st.ok()) {
    std::printf("rmsnorm failed: %s\n", st.to_string().c_str());
    return 1;
  }
  for (int r = 0; r < rows; ++r) {
    double ss = 0;
    for (int i = 0; i < hidden; ++i)
      ss += x[r * hidden + i] * x[r * hidden + i];
    const double inv = 1.0 / std::sqrt(ss / hidden + 1e-6);
    for (int i = 0; i < hidden; ++i) {
      if (std::fabs(y[r * hidden + i] - x[r * hidden + i] * inv * 2.0) > 1e-4) {
        std::printf("mismatch at row %d col %d\n", r, i);
        return 1;
      }
    }
  }
  std::printf("rmsnorm on the GPU: ok\n");
  return 0;
}
