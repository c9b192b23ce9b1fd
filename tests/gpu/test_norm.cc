// RMSNorm / fused add / Gemma / LayerNorm / fp8 output against the CPU reference (METHOD.md rules:
// fresh random inputs, NaN-poisoned outputs and padding, odd sizes, strided and 3-D views).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "check.h"
#include "flashserve/norm.h"
#include "gpu_test.h"
#include "reference/norm.h"

namespace fs_test {
namespace {

using flashserve::NormOptions;
using flashserve::Status;

enum Kind { kRms = 0, kGemma = 1, kLayer = 2 };

struct NormCase {
  Kind kind = kRms;
  bool fused = false;
  DType dtype = DType::kBFloat16;
  int64_t rows = 7;
  int64_t hidden = 4096;
  int64_t pad = 0;        // extra elements after each row (odd pads misalign rows)
  bool three_d = false;   // [rows, 3, hidden] view with a skipped 4th block per row
  bool in_place = false;  // out is input
  bool bias = true;       // LayerNorm only
  bool fp8_out = false;
};

std::string describe(const NormCase& c) {
  std::ostringstream os;
  os << "kind " << c.kind << " fused " << c.fused << " " << flashserve::dtype_name(c.dtype)
     << " rows " << c.rows << " hidden " << c.hidden << " pad " << c.pad << " 3d " << c.three_d
     << " in_place " << c.in_place << " bias " << c.bias << " fp8 " << c.fp8_out;
  return os.str();
}

// A [rows, hidden] (or [rows, 3, hidden]) view over padded storage, poisoned everywhere.
DeviceTensor make_rows(DType dtype, const NormCase& c) {
  const int64_t row = c.hidden + c.pad;
  DeviceTensor t =
      c.three_d ? DeviceTensor(dtype, {c.rows, 3, c.hidden}, {4 * row, row, 1}, c.rows * 4 * row)
                : DeviceTensor(dtype, {c.rows, c.hidden}, {row, 1}, c.rows * row);
  t.poison();
  return t;
}

// Distance from v to the next representable e4m3 value above |v| (one quantization step).
double fp8_step(double v) {
  const double a = std::fabs(v);
  if (a < std::ldexp(1.0, -6)) return std::ldexp(1.0, -9);  // subnormal spacing
  return std::ldexp(1.0, static_cast<int>(std::floor(std::log2(a))) - 3);
}

class NormTest : public GpuTest {
 protected:
  void run_case(const NormCase& c) {
    SCOPED_TRACE(describe(c) + " seed " + std::to_string(seed_));
    const int64_t rows = c.three_d ? c.rows * 3 : c.rows;
    const int64_t n = rows * c.hidden;
    DeviceTensor input = make_rows(c.dtype, c), residual, weight(c.dtype, {c.hidden}),
                 bias(c.dtype, {c.hidden});
    const auto x = rounded(c.dtype, random_normal(n, next_seed()));
    input.upload(x);
    std::vector<float> r, b;
    if (c.fused) {
      residual = make_rows(c.dtype, c);
      r = rounded(c.dtype, random_normal(n, next_seed()));
      residual.upload(r);
    }
    const auto w = rounded(c.dtype, random_normal(c.hidden, next_seed(), 0.f, 1.f));
    weight.upload(w);
    const bool use_bias = c.kind == kLayer && c.bias;
    if (use_bias) {
      b = rounded(c.dtype, random_normal(c.hidden, next_seed()));
      bias.upload(b);
    }
    DeviceTensor out_storage;
    if (!c.in_place) out_storage = make_rows(c.fp8_out ? DType::kFloat8E4M3 : c.dtype, c);
    const DeviceTensor& out = c.in_place ? input : out_storage;

    NormOptions opt;
    opt.eps = 1e-5f;
    DeviceTensor scale(DType::kFloat32, {1});
    const float scale_value = 0.125f;
    if (c.fp8_out) {
      scale.upload({scale_value});
      opt.out_scale = scale.view();
    }
    Status st;
    if (c.kind == kLayer) {
      st = flashserve::layernorm(out.view(), input.view(), weight.view(),
                                 use_bias ? bias.view() : flashserve::TensorView{}, opt);
    } else if (c.fused) {
      st = c.kind == kGemma ? flashserve::gemma_fused_add_rmsnorm(
                                  out.view(), input.view(), residual.view(), weight.view(), opt)
                            : flashserve::fused_add_rmsnorm(out.view(), input.view(),
                                                            residual.view(), weight.view(), opt);
    } else {
      st = c.kind == kGemma
               ? flashserve::gemma_rmsnorm(out.view(), input.view(), weight.view(), opt)
               : flashserve::rmsnorm(out.view(), input.view(), weight.view(), opt);
    }
    ASSERT_TRUE(st.ok()) << st.to_string();

    const auto ref = ref::norm(c.kind, x, r, w, b, rows, c.hidden, opt.eps, c.dtype);
    const auto got = out.download();
    if (c.fp8_out) {
      int64_t bad = 0, worst = -1;
      for (int64_t i = 0; i < n; ++i) {
        const double target = std::fmin(std::fmax(ref.out[i] / scale_value, -448.0), 448.0);
        if (!std::isfinite(got[i]) || std::fabs(got[i] - target) > fp8_step(target) * 1.001) {
          if (worst < 0) worst = i;
          ++bad;
        }
      }
      EXPECT_EQ(bad, 0) << "first bad element " << worst << ": got "
                        << got[std::max<int64_t>(worst, 0)] << " want "
                        << ref.out[std::max<int64_t>(worst, 0)] / scale_value;
    } else {
      const Accuracy acc = accuracy_rule(got, ref.out, ref.base);
      EXPECT_TRUE(acc.pass) << acc.str();
    }
    if (c.fused) {
      const Accuracy acc = elementwise_rule(residual.download(), ref.residual, c.dtype);
      EXPECT_TRUE(acc.pass) << "residual: " << acc.str();
    }
  }
};

TEST_F(NormTest, RmsNormSizesAndDtypes) {
  for (DType dt : {DType::kBFloat16, DType::kFloat16, DType::kFloat32}) {
    for (int64_t hidden : {1, 7, 64, 113, 1000, 1024, 4096, 4097, 8192, 16384, 32768, 40000}) {
      NormCase c;
      c.dtype = dt;
      c.hidden = hidden;
      c.rows = hidden > 8192 ? 3 : 33;
      run_case(c);
    }
  }
}

TEST_F(NormTest, RmsNormManyRowsWarpPath) {
  for (int64_t hidden : {64, 128, 256, 1024}) {
    NormCase c;
    c.rows = 1023;
    c.hidden = hidden;
    run_case(c);
  }
}

TEST_F(NormTest, StridedThreeDAndInPlace) {
  for (DType dt : {DType::kBFloat16, DType::kFloat32}) {
    for (int64_t pad : {0, 8, 3}) {
      for (bool three_d : {false, true}) {
        for (bool in_place : {false, true}) {
          NormCase c;
          c.dtype = dt;
          c.hidden = three_d ? 128 : 2048;
          c.pad = pad;
          c.three_d = three_d;
          c.in_place = in_place;
          run_case(c);
        }
      }
    }
  }
}

TEST_F(NormTest, FusedAddRmsNorm) {
  for (DType dt : {DType::kBFloat16, DType::kFloat16, DType::kFloat32}) {
    for (int64_t hidden : {7, 128, 4096, 4097, 40000}) {
      for (bool in_place : {false, true}) {
        NormCase c;
        c.fused = true;
        c.dtype = dt;
        c.hidden = hidden;
        c.rows = 9;
        c.in_place = in_place;
        c.pad = hidden == 128 ? 8 : 0;
        run_case(c);
      }
    }
  }
}

TEST_F(NormTest, GemmaForms) {
  for (bool fused : {false, true}) {
    for (int64_t hidden : {113, 2048, 3072}) {
      NormCase c;
      c.kind = kGemma;
      c.fused = fused;
      c.hidden = hidden;
      run_case(c);
    }
  }
}

TEST_F(NormTest, LayerNorm) {
  for (DType dt : {DType::kBFloat16, DType::kFloat16, DType::kFloat32}) {
    for (int64_t hidden : {1, 7, 128, 1024, 4096, 4097, 40000}) {
      for (bool bias : {true, false}) {
        NormCase c;
        c.kind = kLayer;
        c.dtype = dt;
        c.hidden = hidden;
        c.bias = bias;
        c.rows = 5;
        run_case(c);
      }
    }
  }
}

TEST_F(NormTest, Fp8Output) {
  for (DType dt : {DType::kBFloat16, DType::kFloat16, DType::kFloat32}) {
    for (int64_t hidden : {64, 4096, 4097}) {
      for (bool fused : {false, true}) {
        NormCase c;
        c.dtype = dt;
        c.hidden = hidden;
        c.fused = fused;
        c.fp8_out = true;
        run_case(c);
      }
    }
  }
  NormCase ln;
  ln.kind = kLayer;
  ln.fp8_out = true;
  run_case(ln);
}

TEST_F(NormTest, ZeroRowsIsANoOp) {
  DeviceTensor x(DType::kBFloat16, {0, 4096}), w(DType::kBFloat16, {4096});
  Status st = flashserve::rmsnorm(x.view(), x.view(), w.view());
  EXPECT_TRUE(st.ok()) << st.to_string();
}

TEST_F(NormTest, Deterministic) {
  NormCase c;
  c.rows = 64;
  c.hidden = 8192;
  DeviceTensor in = make_rows(c.dtype, c), out = make_rows(c.dtype, c), w(c.dtype, {c.hidden});
  in.upload(random_normal(c.rows * c.hidden, next_seed()));
  w.upload(random_normal(c.hidden, next_seed()));
  ASSERT_TRUE(flashserve::rmsnorm(out.view(), in.view(), w.view()).ok());
  const auto first = out.download_raw();
  for (int i = 0; i < 3; ++i) {
    out.poison();
    ASSERT_TRUE(flashserve::rmsnorm(out.view(), in.view(), w.view()).ok());
    EXPECT_EQ(out.download_raw(), first);
  }
}

// Captured once into a CUDA graph, the op reads whatever the buffers hold at replay time.
TEST_F(NormTest, CapturedInACudaGraphAndReplayed) {
  const int64_t rows = 5, hidden = 4096;
  DeviceTensor x(DType::kBFloat16, {rows, hidden}), r(DType::kBFloat16, {rows, hidden}),
      y(DType::kBFloat16, {rows, hidden}), w(DType::kBFloat16, {hidden});
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  const Status st =
      flashserve::fused_add_rmsnorm(y.view(), x.view(), r.view(), w.view(), {}, stream);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_TRUE(st.ok()) << st.to_string();
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int replay = 0; replay < 2; ++replay) {
    const auto xv = rounded(DType::kBFloat16, random_normal(rows * hidden, next_seed()));
    const auto rv = rounded(DType::kBFloat16, random_normal(rows * hidden, next_seed()));
    const auto wv = rounded(DType::kBFloat16, random_normal(hidden, next_seed()));
    x.upload(xv);
    r.upload(rv);
    w.upload(wv);
    y.poison();
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    const auto ref = ref::norm(kRms, xv, rv, wv, {}, rows, hidden, 1e-6, DType::kBFloat16);
    const Accuracy acc = accuracy_rule(y.download(), ref.out, ref.base);
    EXPECT_TRUE(acc.pass) << "replay " << replay << ": " << acc.str();
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST_F(NormTest, WrongDeviceIsRejected) {
  DeviceTensor x(DType::kBFloat16, {2, 64}), w(DType::kBFloat16, {64});
  flashserve::TensorView xv = x.view();
  xv.device = xv.device + 1;
  Status st = flashserve::rmsnorm(x.view(), xv, w.view());
  EXPECT_EQ(st.code(), flashserve::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("input"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace fs_test
