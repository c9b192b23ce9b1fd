// Argument validation of the normalization entry points (rmsnorm, fused_add_rmsnorm,
// gemma_rmsnorm, gemma_fused_add_rmsnorm, layernorm). Every view points at fake, non-null device
// addresses: validation runs before any CUDA call, so nothing is ever dereferenced. Calls that pass
// validation are only made without a GPU (they then stop at the device check with kNoDevice).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "arg_test.h"
#include "device_tensor.h"
#include "flashserve/norm.h"

using namespace flashserve;

namespace {

using fs_test::accepted;
using fs_test::fake;
using fs_test::invalid;
using fs_test::kBase;

enum class Op { kRms, kFusedAdd, kGemma, kGemmaFusedAdd, kLayer };

const char* op_name(Op op) {
  switch (op) {
    case Op::kRms:
      return "rmsnorm";
    case Op::kFusedAdd:
      return "fused_add_rmsnorm";
    case Op::kGemma:
      return "gemma_rmsnorm";
    case Op::kGemmaFusedAdd:
      return "gemma_fused_add_rmsnorm";
    case Op::kLayer:
      return "layernorm";
  }
  return "?";
}

bool has_residual(Op op) {
  return op == Op::kFusedAdd || op == Op::kGemmaFusedAdd;
}

constexpr int64_t kRows = 4;
constexpr int64_t kHidden = 64;

struct Args {
  TensorView out, input, residual, weight, bias;
  NormOptions options;
};

// A valid bf16 [4, 64] call: every tensor in its own slot.
Args valid_args(DType dt = DType::kBFloat16) {
  Args a;
  a.input = TensorView::contiguous(fake(0), dt, {kRows, kHidden});
  a.out = TensorView::contiguous(fake(1), dt, {kRows, kHidden});
  a.weight = TensorView::contiguous(fake(2), dt, {kHidden});
  a.residual = TensorView::contiguous(fake(3), dt, {kRows, kHidden});
  a.bias = TensorView::contiguous(fake(4), dt, {kHidden});
  return a;
}

Status call(Op op, const Args& a) {
  switch (op) {
    case Op::kRms:
      return rmsnorm(a.out, a.input, a.weight, a.options);
    case Op::kFusedAdd:
      return fused_add_rmsnorm(a.out, a.input, a.residual, a.weight, a.options);
    case Op::kGemma:
      return gemma_rmsnorm(a.out, a.input, a.weight, a.options);
    case Op::kGemmaFusedAdd:
      return gemma_fused_add_rmsnorm(a.out, a.input, a.residual, a.weight, a.options);
    case Op::kLayer:
      return layernorm(a.out, a.input, a.weight, a.bias, a.options);
  }
  return Status(StatusCode::kInternal, "unknown op");
}

class NormArgs : public ::testing::TestWithParam<Op> {
 protected:
  Op op() const { return GetParam(); }
  std::string name() const { return op_name(GetParam()); }
};

// ---- null pointers
// -------------------------------------------------------------------------------

TEST_P(NormArgs, NullInput) {
  Args a = valid_args();
  a.input.data = nullptr;
  EXPECT_TRUE(invalid(call(op(), a), name(), "input", "expected a device pointer, got null"));
}

TEST_P(NormArgs, NullOut) {
  Args a = valid_args();
  a.out.data = nullptr;
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "expected a device pointer, got null"));
}

TEST_P(NormArgs, NullWeight) {
  Args a = valid_args();
  a.weight.data = nullptr;
  EXPECT_TRUE(invalid(call(op(), a), name(), "weight", "expected a device pointer, got null"));
}

TEST_P(NormArgs, DefaultConstructedViews) {
  Args a;
  EXPECT_TRUE(invalid(call(op(), a), name(), "input", "got null"));
}

// ---- input rank, dtype, layout
// -------------------------------------------------------------------

TEST_P(NormArgs, OneDimInput) {
  Args a = valid_args();
  a.input = TensorView::contiguous(fake(0), DType::kBFloat16, {kHidden});
  a.out = TensorView::contiguous(fake(1), DType::kBFloat16, {kHidden});
  a.residual = TensorView::contiguous(fake(3), DType::kBFloat16, {kHidden});
  EXPECT_TRUE(invalid(call(op(), a), name(), "input", "expected a 2-D to 3-D tensor, got 1-D"));
}

TEST_P(NormArgs, FourDimInput) {
  Args a = valid_args();
  a.input = TensorView::contiguous(fake(0), DType::kBFloat16, {2, 2, 1, kHidden});
  a.out = TensorView::contiguous(fake(1), DType::kBFloat16, {2, 2, 1, kHidden});
  a.residual = TensorView::contiguous(fake(3), DType::kBFloat16, {2, 2, 1, kHidden});
  EXPECT_TRUE(invalid(call(op(), a), name(), "input", "got 4-D with shape [2, 2, 1, 64]"));
}

TEST_P(NormArgs, NegativeSizeInput) {
  Args a = valid_args();
  a.input.shape[0] = -1;
  EXPECT_TRUE(invalid(call(op(), a), name(), "input", "non-negative sizes"));
}

TEST_P(NormArgs, IntegerInput) {
  Args a = valid_args(DType::kInt32);
  EXPECT_TRUE(invalid(call(op(), a), name(), "input",
                      "expected dtype one of {float32, float16, bfloat16}, got int32"));
}

TEST_P(NormArgs, Float8Input) {
  Args a = valid_args(DType::kFloat8E4M3);
  EXPECT_TRUE(invalid(call(op(), a), name(), "input", "got float8_e4m3"));
}

TEST_P(NormArgs, InputLastDimStride) {
  Args a = valid_args();
  a.input = TensorView::strided(fake(0), DType::kBFloat16, {kRows, kHidden}, {2 * kHidden, 2});
  EXPECT_TRUE(invalid(call(op(), a), name(), "input", "expected stride 1 in the last dim, got 2"));
}

TEST_P(NormArgs, InputNegativeStride) {
  Args a = valid_args();
  a.input = TensorView::strided(fake(0, 3 * kHidden * 2), DType::kBFloat16, {kRows, kHidden},
                                {-kHidden, 1});
  EXPECT_TRUE(invalid(call(op(), a), name(), "input", "expected non-negative strides"));
}

TEST_P(NormArgs, HiddenZero) {
  Args a = valid_args();
  a.input = TensorView::contiguous(fake(0), DType::kBFloat16, {kRows, 0});
  a.out = TensorView::contiguous(fake(1), DType::kBFloat16, {kRows, 0});
  a.residual = TensorView::contiguous(fake(3), DType::kBFloat16, {kRows, 0});
  a.weight = TensorView::contiguous(fake(2), DType::kBFloat16, {0});
  a.bias = TensorView::contiguous(fake(4), DType::kBFloat16, {0});
  EXPECT_TRUE(invalid(call(op(), a), name(), "input", "expected size >= 1 at dim -1"));
}

// ---- out
// ------------------------------------------------------------------------------------------

TEST_P(NormArgs, OutShapeMismatch) {
  Args a = valid_args();
  a.out = TensorView::contiguous(fake(1), DType::kBFloat16, {kRows, kHidden / 2});
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "expected the shape of input [4, 64]"));
}

TEST_P(NormArgs, OutRankMismatch) {
  Args a = valid_args();
  a.out = TensorView::contiguous(fake(1), DType::kBFloat16, {2, 2, kHidden});
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "got [2, 2, 64]"));
}

TEST_P(NormArgs, OutFloat16ForBFloat16Input) {
  Args a = valid_args();
  a.out.dtype = DType::kFloat16;
  EXPECT_TRUE(invalid(call(op(), a), name(), "out",
                      "expected dtype one of {bfloat16, float8_e4m3}, got float16"));
}

TEST_P(NormArgs, OutFloat8E5M2Rejected) {
  Args a = valid_args();
  a.out.dtype = DType::kFloat8E5M2;
  a.options.out_scale = TensorView::contiguous(fake(5), DType::kFloat32, {1});
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "got float8_e5m2"));
}

TEST_P(NormArgs, OutFloat8WithoutScale) {
  Args a = valid_args();
  a.out.dtype = DType::kFloat8E4M3;
  EXPECT_TRUE(invalid(call(op(), a), name(), "options.out_scale", "got undefined"));
}

TEST_P(NormArgs, OutScaleWrongDtype) {
  Args a = valid_args();
  a.out.dtype = DType::kFloat8E4M3;
  a.options.out_scale = TensorView::contiguous(fake(5), DType::kBFloat16, {1});
  EXPECT_TRUE(
      invalid(call(op(), a), name(), "options.out_scale", "expected dtype float32, got bfloat16"));
}

TEST_P(NormArgs, OutScaleWrongNumel) {
  Args a = valid_args();
  a.out.dtype = DType::kFloat8E4M3;
  a.options.out_scale = TensorView::contiguous(fake(5), DType::kFloat32, {2});
  EXPECT_TRUE(invalid(call(op(), a), name(), "options.out_scale", "expected 1 element(s)"));
}

TEST_P(NormArgs, OutScaleIgnoredWhenOutIsNotFloat8) {
  SKIP_IF_GPU();
  Args a = valid_args();
  a.options.out_scale = TensorView::contiguous(fake(5), DType::kInt32, {3});
  EXPECT_TRUE(accepted(call(op(), a), name()));
}

TEST_P(NormArgs, OutFloat8WithScaleAccepted) {
  SKIP_IF_GPU();
  Args a = valid_args();
  a.out.dtype = DType::kFloat8E4M3;
  a.options.out_scale = TensorView::contiguous(fake(5), DType::kFloat32, {1});
  EXPECT_TRUE(accepted(call(op(), a), name()));
}

TEST_P(NormArgs, OutFloat8OverlappingInput) {
  Args a = valid_args();
  a.out = TensorView::contiguous(fake(0), DType::kFloat8E4M3, {kRows, kHidden});
  a.options.out_scale = TensorView::contiguous(fake(5), DType::kFloat32, {1});
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "must not overlap input"));
}

TEST_P(NormArgs, OutLastDimStride) {
  Args a = valid_args();
  a.out = TensorView::strided(fake(1), DType::kBFloat16, {kRows, kHidden}, {2 * kHidden, 2});
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "expected stride 1 in the last dim"));
}

TEST_P(NormArgs, OutNegativeStride) {
  Args a = valid_args();
  a.out = TensorView::strided(fake(1, 3 * kHidden * 2), DType::kBFloat16, {kRows, kHidden},
                              {-kHidden, 1});
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "expected non-negative strides"));
}

TEST_P(NormArgs, OutPartiallyOverlapsInputByOneElement) {
  Args a = valid_args();
  a.out.data = fake(0, 2);  // one bf16 element past input
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "overlaps input"));
}

TEST_P(NormArgs, OutPartiallyOverlapsInputByRows) {
  Args a = valid_args();
  a.out.data = fake(0, 2 * kHidden * 2);  // rows 2.. of input
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "overlaps input"));
}

TEST_P(NormArgs, OutSameAddressDifferentStridesOverlapsInput) {
  Args a = valid_args();
  a.input = TensorView::strided(fake(0), DType::kBFloat16, {kRows, kHidden}, {2 * kHidden, 1});
  a.out = TensorView::contiguous(fake(0), DType::kBFloat16, {kRows, kHidden});
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "without being the same view"));
}

// ---- weight
// ---------------------------------------------------------------------------------------

TEST_P(NormArgs, WeightWrongSize) {
  Args a = valid_args();
  a.weight = TensorView::contiguous(fake(2), DType::kBFloat16, {kHidden - 1});
  EXPECT_TRUE(invalid(call(op(), a), name(), "weight", "expected size 64 (hidden) at dim 0"));
}

TEST_P(NormArgs, WeightTwoDim) {
  Args a = valid_args();
  a.weight = TensorView::contiguous(fake(2), DType::kBFloat16, {1, kHidden});
  EXPECT_TRUE(invalid(call(op(), a), name(), "weight", "expected a 1-D tensor, got 2-D"));
}

TEST_P(NormArgs, WeightWrongDtype) {
  Args a = valid_args();
  a.weight.dtype = DType::kFloat32;
  EXPECT_TRUE(invalid(call(op(), a), name(), "weight", "expected dtype bfloat16, got float32"));
}

TEST_P(NormArgs, WeightNonContiguous) {
  Args a = valid_args();
  a.weight = TensorView::strided(fake(2), DType::kBFloat16, {kHidden}, {2});
  EXPECT_TRUE(invalid(call(op(), a), name(), "weight", "expected a contiguous tensor"));
}

// ---- options.eps
// ----------------------------------------------------------------------------------

TEST_P(NormArgs, NegativeEps) {
  Args a = valid_args();
  a.options.eps = -1e-5f;
  EXPECT_TRUE(invalid(call(op(), a), name(), "options.eps", "expected a finite value >= 0"));
}

TEST_P(NormArgs, NanEps) {
  Args a = valid_args();
  a.options.eps = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(invalid(call(op(), a), name(), "options.eps", "nan"));
}

TEST_P(NormArgs, InfiniteEps) {
  Args a = valid_args();
  a.options.eps = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(invalid(call(op(), a), name(), "options.eps", "expected a finite value >= 0"));
}

TEST_P(NormArgs, ZeroEpsAccepted) {
  SKIP_IF_GPU();
  Args a = valid_args();
  a.options.eps = 0.f;
  EXPECT_TRUE(accepted(call(op(), a), name()));
}

// ---- first failure wins
// --------------------------------------------------------------------------

TEST_P(NormArgs, FirstFailureIsReported) {
  Args a = valid_args();
  a.weight.data = nullptr;  // checked after out
  a.out.dtype = DType::kFloat16;
  a.options.eps = -1.f;
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "got float16"));
}

// ---- accepted calls
// -------------------------------------------------------------------------------

TEST_P(NormArgs, ValidCallWithoutDeviceIsNoDevice) {
  Args a = valid_args();
  if (fs_test::gpu_available()) GTEST_SKIP() << "a device is present";
  const Status st = call(op(), a);
  EXPECT_EQ(st.code(), StatusCode::kNoDevice) << st.to_string();
  EXPECT_TRUE(accepted(st, name()));
}

TEST_P(NormArgs, EveryFloatDtypeAccepted) {
  SKIP_IF_GPU();
  for (DType dt : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    EXPECT_TRUE(accepted(call(op(), valid_args(dt)), name())) << dtype_name(dt);
  }
}

TEST_P(NormArgs, InPlaceAccepted) {
  SKIP_IF_GPU();
  Args a = valid_args();
  a.out = a.input;
  EXPECT_TRUE(accepted(call(op(), a), name()));
}

TEST_P(NormArgs, InPlaceStridedThreeDimAccepted) {
  SKIP_IF_GPU();
  // The q heads of a packed [tokens, 48 heads, 128] qkv tensor, normalized per head in place.
  Args a = valid_args();
  a.input = TensorView::strided(fake(0), DType::kBFloat16, {3, 32, 128}, {48 * 128, 128, 1});
  a.out = a.input;
  a.residual = TensorView::contiguous(fake(3), DType::kBFloat16, {3, 32, 128});
  a.weight = TensorView::contiguous(fake(2), DType::kBFloat16, {128});
  a.bias = TensorView::contiguous(fake(4), DType::kBFloat16, {128});
  EXPECT_TRUE(accepted(call(op(), a), name()));
}

TEST_P(NormArgs, HiddenOneWithAnyLastStrideAccepted) {
  SKIP_IF_GPU();
  Args a = valid_args();
  a.input = TensorView::strided(fake(0), DType::kBFloat16, {kRows, 1}, {1, 7});
  a.out = TensorView::strided(fake(1), DType::kBFloat16, {kRows, 1}, {1, 7});
  a.residual = TensorView::contiguous(fake(3), DType::kBFloat16, {kRows, 1});
  a.weight = TensorView::contiguous(fake(2), DType::kBFloat16, {1});
  a.bias = TensorView::contiguous(fake(4), DType::kBFloat16, {1});
  EXPECT_TRUE(accepted(call(op(), a), name()));
}

TEST_P(NormArgs, ZeroRowsAccepted) {
  SKIP_IF_GPU();
  Args a = valid_args();
  a.input = TensorView::contiguous(fake(0), DType::kBFloat16, {0, kHidden});
  a.out = TensorView::contiguous(fake(1), DType::kBFloat16, {0, kHidden});
  a.residual = TensorView::contiguous(fake(3), DType::kBFloat16, {0, kHidden});
  EXPECT_TRUE(accepted(call(op(), a), name()));
}

// An output whose rows overlap each other (row stride smaller than the row) would be written
// by several blocks at once (a data race): validation rejects it.
TEST_P(NormArgs, OutWithSelfOverlappingRowsRejected) {
  Args a = valid_args();
  a.out = TensorView::strided(fake(1), DType::kBFloat16, {kRows, kHidden}, {0, 1});
  EXPECT_TRUE(invalid(call(op(), a), name(), "out"));
  a.out = TensorView::strided(fake(1), DType::kBFloat16, {kRows, kHidden}, {kHidden / 2, 1});
  EXPECT_TRUE(invalid(call(op(), a), name(), "out"));
}

INSTANTIATE_TEST_SUITE_P(AllOps, NormArgs,
                         ::testing::Values(Op::kRms, Op::kFusedAdd, Op::kGemma, Op::kGemmaFusedAdd,
                                           Op::kLayer),
                         [](const ::testing::TestParamInfo<Op>& info) {
                           return std::string(op_name(info.param));
                         });

// ---- residual (fused_add_rmsnorm, gemma_fused_add_rmsnorm)
// -----------------------------------------

class NormResidualArgs : public NormArgs {};

TEST_P(NormResidualArgs, NullResidual) {
  Args a = valid_args();
  a.residual.data = nullptr;
  EXPECT_TRUE(invalid(call(op(), a), name(), "residual", "expected a device pointer, got null"));
}

TEST_P(NormResidualArgs, ResidualWrongShape) {
  Args a = valid_args();
  a.residual = TensorView::contiguous(fake(3), DType::kBFloat16, {kRows - 1, kHidden});
  EXPECT_TRUE(invalid(call(op(), a), name(), "residual", "expected the shape of input [4, 64]"));
  a.residual = TensorView::contiguous(fake(3), DType::kBFloat16, {kRows, kHidden, 1});
  EXPECT_TRUE(invalid(call(op(), a), name(), "residual", "got [4, 64, 1]"));
}

TEST_P(NormResidualArgs, ResidualWrongDtype) {
  Args a = valid_args();
  a.residual.dtype = DType::kFloat32;
  EXPECT_TRUE(invalid(call(op(), a), name(), "residual", "expected dtype bfloat16, got float32"));
}

TEST_P(NormResidualArgs, ResidualLastDimStride) {
  Args a = valid_args();
  a.residual = TensorView::strided(fake(3), DType::kBFloat16, {kRows, kHidden}, {2 * kHidden, 2});
  EXPECT_TRUE(invalid(call(op(), a), name(), "residual", "expected stride 1 in the last dim"));
}

TEST_P(NormResidualArgs, ResidualNegativeStride) {
  Args a = valid_args();
  a.residual = TensorView::strided(fake(3, 3 * kHidden * 2), DType::kBFloat16, {kRows, kHidden},
                                   {-kHidden, 1});
  EXPECT_TRUE(invalid(call(op(), a), name(), "residual", "expected non-negative strides"));
}

TEST_P(NormResidualArgs, ResidualPartiallyOverlapsInput) {
  Args a = valid_args();
  a.residual.data = fake(0, kHidden * 2);  // starts at row 1 of input
  EXPECT_TRUE(invalid(call(op(), a), name(), "residual", "must not overlap input"));
}

TEST_P(NormResidualArgs, ResidualSameViewAsOut) {
  Args a = valid_args();
  a.residual = a.out;
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "must not overlap residual"));
}

TEST_P(NormResidualArgs, ResidualPartiallyOverlapsOut) {
  Args a = valid_args();
  a.residual.data = fake(1, 2 * kHidden * 2);  // rows 2.. of out
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "must not overlap residual"));
}

TEST_P(NormResidualArgs, InPlaceOutWithResidualEqualToInputRejected) {
  // out == input (in place) and residual == input: residual overlaps out.
  Args a = valid_args();
  a.out = a.input;
  a.residual = a.input;
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "must not overlap residual"));
}

TEST_P(NormResidualArgs, InPlaceWithDisjointResidualAccepted) {
  SKIP_IF_GPU();
  Args a = valid_args();
  a.out = a.input;
  EXPECT_TRUE(accepted(call(op(), a), name()));
}

// As OutWithSelfOverlappingRowsRejected: the residual is read and written in place.
TEST_P(NormResidualArgs, ResidualWithSelfOverlappingRowsRejected) {
  Args a = valid_args();
  a.residual = TensorView::strided(fake(3), DType::kBFloat16, {kRows, kHidden}, {0, 1});
  EXPECT_TRUE(invalid(call(op(), a), name(), "residual"));
}

INSTANTIATE_TEST_SUITE_P(FusedAdd, NormResidualArgs,
                         ::testing::Values(Op::kFusedAdd, Op::kGemmaFusedAdd),
                         [](const ::testing::TestParamInfo<Op>& info) {
                           return std::string(op_name(info.param));
                         });

// ---- ops without a residual ignore it; bias only matters to layernorm
// ----------------------------

TEST(NormArgsUnfused, ResidualArgumentIsNotChecked) {
  SKIP_IF_GPU();
  for (Op op : {Op::kRms, Op::kGemma, Op::kLayer}) {
    ASSERT_FALSE(has_residual(op));
    Args a = valid_args();
    a.residual = TensorView::contiguous(fake(1), DType::kInt32, {1});  // would be invalid
    EXPECT_TRUE(accepted(call(op, a), op_name(op)));
  }
}

TEST(LayerNormArgs, BiasWrongSize) {
  Args a = valid_args();
  a.bias = TensorView::contiguous(fake(4), DType::kBFloat16, {kHidden + 1});
  EXPECT_TRUE(invalid(call(Op::kLayer, a), "layernorm", "bias", "expected size 64 (hidden)"));
}

TEST(LayerNormArgs, BiasTwoDim) {
  Args a = valid_args();
  a.bias = TensorView::contiguous(fake(4), DType::kBFloat16, {1, kHidden});
  EXPECT_TRUE(invalid(call(Op::kLayer, a), "layernorm", "bias", "expected a 1-D tensor"));
}

TEST(LayerNormArgs, BiasWrongDtype) {
  Args a = valid_args();
  a.bias.dtype = DType::kFloat16;
  EXPECT_TRUE(invalid(call(Op::kLayer, a), "layernorm", "bias", "got float16"));
}

TEST(LayerNormArgs, BiasNonContiguous) {
  Args a = valid_args();
  a.bias = TensorView::strided(fake(4), DType::kBFloat16, {kHidden}, {3});
  EXPECT_TRUE(invalid(call(Op::kLayer, a), "layernorm", "bias", "expected a contiguous tensor"));
}

TEST(LayerNormArgs, UndefinedBiasAccepted) {
  SKIP_IF_GPU();
  Args a = valid_args();
  a.bias = TensorView{};
  EXPECT_TRUE(accepted(call(Op::kLayer, a), "layernorm"));
}

TEST(LayerNormArgs, BiasCheckedAfterWeight) {
  Args a = valid_args();
  a.weight.dtype = DType::kFloat32;
  a.bias.dtype = DType::kFloat32;
  EXPECT_TRUE(invalid(call(Op::kLayer, a), "layernorm", "weight", "got float32"));
}

}  // namespace
