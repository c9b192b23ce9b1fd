// Argument validation of the gated activations (act_and_mul, silu_and_mul, gelu_and_mul,
// gelu_tanh_and_mul). Every view points at fake, non-null device addresses: validation runs before
// any CUDA call, so nothing is ever dereferenced. Calls that pass validation are only made without
// a GPU (they then stop at the device check with kNoDevice).
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "arg_test.h"
#include "device_tensor.h"
#include "flashserve/activation.h"

using namespace flashserve;

namespace {

using fs_test::accepted;
using fs_test::fake;
using fs_test::invalid;
using fs_test::kBase;

enum class Op { kActAndMul, kSilu, kGelu, kGeluTanh };

const char* op_name(Op op) {
  switch (op) {
    case Op::kActAndMul:
      return "act_and_mul";
    case Op::kSilu:
      return "silu_and_mul";
    case Op::kGelu:
      return "gelu_and_mul";
    case Op::kGeluTanh:
      return "gelu_tanh_and_mul";
  }
  return "?";
}

constexpr int64_t kRows = 4;
constexpr int64_t kD = 32;

struct Args {
  TensorView out, input;
  Activation act = Activation::kSilu;  // act_and_mul only
};

// A valid bf16 [4, 64] -> [4, 32] call.
Args valid_args(DType dt = DType::kBFloat16) {
  Args a;
  a.input = TensorView::contiguous(fake(0), dt, {kRows, 2 * kD});
  a.out = TensorView::contiguous(fake(1), dt, {kRows, kD});
  return a;
}

Status call(Op op, const Args& a) {
  switch (op) {
    case Op::kActAndMul:
      return act_and_mul(a.out, a.input, a.act);
    case Op::kSilu:
      return silu_and_mul(a.out, a.input);
    case Op::kGelu:
      return gelu_and_mul(a.out, a.input);
    case Op::kGeluTanh:
      return gelu_tanh_and_mul(a.out, a.input);
  }
  return Status(StatusCode::kInternal, "unknown op");
}

class ActivationArgs : public ::testing::TestWithParam<Op> {
 protected:
  Op op() const { return GetParam(); }
  std::string name() const { return op_name(GetParam()); }
};

// ---- null pointers
// -------------------------------------------------------------------------------

TEST_P(ActivationArgs, NullInput) {
  Args a = valid_args();
  a.input.data = nullptr;
  EXPECT_TRUE(invalid(call(op(), a), name(), "input", "expected a device pointer, got null"));
}

TEST_P(ActivationArgs, NullOut) {
  Args a = valid_args();
  a.out.data = nullptr;
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "expected a device pointer, got null"));
}

TEST_P(ActivationArgs, DefaultConstructedViews) {
  Args a;
  EXPECT_TRUE(invalid(call(op(), a), name(), "input", "got null"));
}

// ---- input
// ----------------------------------------------------------------------------------------

TEST_P(ActivationArgs, OneDimInput) {
  Args a = valid_args();
  a.input = TensorView::contiguous(fake(0), DType::kBFloat16, {2 * kD});
  a.out = TensorView::contiguous(fake(1), DType::kBFloat16, {kD});
  EXPECT_TRUE(invalid(call(op(), a), name(), "input", "expected a 2-D to 3-D tensor, got 1-D"));
}

TEST_P(ActivationArgs, FourDimInput) {
  Args a = valid_args();
  a.input = TensorView::contiguous(fake(0), DType::kBFloat16, {2, 2, 1, 2 * kD});
  a.out = TensorView::contiguous(fake(1), DType::kBFloat16, {2, 2, 1, kD});
  EXPECT_TRUE(invalid(call(op(), a), name(), "input", "got 4-D"));
}

TEST_P(ActivationArgs, NegativeSizeInput) {
  Args a = valid_args();
  a.input.shape[0] = -1;
  EXPECT_TRUE(invalid(call(op(), a), name(), "input", "non-negative sizes"));
}

TEST_P(ActivationArgs, IntegerInput) {
  Args a = valid_args(DType::kInt32);
  EXPECT_TRUE(invalid(call(op(), a), name(), "input",
                      "expected dtype one of {float32, float16, bfloat16}, got int32"));
}

TEST_P(ActivationArgs, Float8Input) {
  Args a = valid_args(DType::kFloat8E4M3);
  EXPECT_TRUE(invalid(call(op(), a), name(), "input", "got float8_e4m3"));
}

TEST_P(ActivationArgs, OddLastDim) {
  Args a = valid_args();
  a.input = TensorView::contiguous(fake(0), DType::kBFloat16, {kRows, 2 * kD + 1});
  EXPECT_TRUE(invalid(call(op(), a), name(), "input", "expected an even last dim 2d >= 2"));
}

TEST_P(ActivationArgs, ZeroLastDim) {
  Args a = valid_args();
  a.input = TensorView::contiguous(fake(0), DType::kBFloat16, {kRows, 0});
  a.out = TensorView::contiguous(fake(1), DType::kBFloat16, {kRows, 0});
  EXPECT_TRUE(invalid(call(op(), a), name(), "input", "got 0"));
}

TEST_P(ActivationArgs, InputLastDimStride) {
  Args a = valid_args();
  a.input = TensorView::strided(fake(0), DType::kBFloat16, {kRows, 2 * kD}, {4 * kD, 2});
  EXPECT_TRUE(invalid(call(op(), a), name(), "input", "expected stride 1 in the last dim, got 2"));
}

TEST_P(ActivationArgs, InputNegativeStride) {
  Args a = valid_args();
  a.input =
      TensorView::strided(fake(0, 3 * 2 * kD * 2), DType::kBFloat16, {kRows, 2 * kD}, {-2 * kD, 1});
  EXPECT_TRUE(invalid(call(op(), a), name(), "input", "expected non-negative strides"));
}

TEST_P(ActivationArgs, TooManyRows) {
  Args a = valid_args();
  const int64_t rows = int64_t{1} << 31;
  // The input repeats one row (stride 0); the output spans 128 GiB, placed 1 TiB away.
  a.input = TensorView::strided(fake(0), DType::kBFloat16, {rows, 2 * kD}, {0, 1});
  a.out = TensorView::contiguous(reinterpret_cast<void*>(kBase + (uintptr_t{1} << 40)),
                                 DType::kBFloat16, {rows, kD});
  EXPECT_TRUE(invalid(call(op(), a), name(), "input", "expected at most 2^31-1 rows"));
}

// ---- out
// ------------------------------------------------------------------------------------------

TEST_P(ActivationArgs, OutWrongLastDim) {
  Args a = valid_args();
  a.out = TensorView::contiguous(fake(1), DType::kBFloat16, {kRows, 2 * kD});
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "expected size 32 (d, half of input's last"));
}

TEST_P(ActivationArgs, OutWrongRows) {
  Args a = valid_args();
  a.out = TensorView::contiguous(fake(1), DType::kBFloat16, {kRows + 1, kD});
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "the leading dims of input"));
}

TEST_P(ActivationArgs, OutWrongRank) {
  Args a = valid_args();
  a.out = TensorView::contiguous(fake(1), DType::kBFloat16, {2, 2, kD});
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "expected a 2-D tensor, got 3-D"));
}

TEST_P(ActivationArgs, OutWrongInnerDimOf3D) {
  Args a = valid_args();
  a.input = TensorView::contiguous(fake(0), DType::kBFloat16, {2, 3, 2 * kD});
  a.out = TensorView::contiguous(fake(1), DType::kBFloat16, {2, 4, kD});
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "at dim 1"));
}

TEST_P(ActivationArgs, OutWrongDtype) {
  Args a = valid_args();
  a.out.dtype = DType::kFloat16;
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "expected dtype bfloat16, got float16"));
}

TEST_P(ActivationArgs, OutFloat32ForBFloat16Input) {
  Args a = valid_args();
  a.out.dtype = DType::kFloat32;
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "got float32"));
}

TEST_P(ActivationArgs, OutLastDimStride) {
  Args a = valid_args();
  a.out = TensorView::strided(fake(1), DType::kBFloat16, {kRows, kD}, {2 * kD, 2});
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "expected stride 1 in the last dim"));
}

TEST_P(ActivationArgs, OutNegativeStride) {
  Args a = valid_args();
  a.out = TensorView::strided(fake(1, 3 * kD * 2), DType::kBFloat16, {kRows, kD}, {-kD, 1});
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "expected non-negative strides"));
}

TEST_P(ActivationArgs, OutRowsOverlapEachOther) {
  Args a = valid_args();
  a.out = TensorView::strided(fake(1), DType::kBFloat16, {kRows, kD}, {kD / 2, 1});
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "elements do not overlap"));
}

TEST_P(ActivationArgs, OutIsTheActivatedHalf) {
  Args a = valid_args();
  a.out = TensorView::strided(fake(0), DType::kBFloat16, {kRows, kD}, {2 * kD, 1});
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "must not overlap input"));
}

TEST_P(ActivationArgs, OutOverlapsInputByOneElement) {
  Args a = valid_args();
  a.out.data = fake(0, (kRows * 2 * kD - 1) * 2);  // starts at input's last element
  EXPECT_TRUE(invalid(call(op(), a), name(), "out", "must not overlap input"));
}

// ---- act
// ------------------------------------------------------------------------------------------

TEST(ActivationArgsAct, UnknownActivation) {
  Args a = valid_args();
  a.act = static_cast<Activation>(7);
  EXPECT_TRUE(invalid(act_and_mul(a.out, a.input, a.act), "act_and_mul", "act",
                      "expected one of {silu, gelu, gelu_tanh}, got value 7"));
}

TEST(ActivationArgsAct, Names) {
  EXPECT_STREQ(activation_name(Activation::kSilu), "silu");
  EXPECT_STREQ(activation_name(Activation::kGelu), "gelu");
  EXPECT_STREQ(activation_name(Activation::kGeluTanh), "gelu_tanh");
  EXPECT_STREQ(activation_name(static_cast<Activation>(7)), "unknown");
}

TEST(ActivationArgsAct, EveryActivationAccepted) {
  SKIP_IF_GPU();
  for (Activation act : {Activation::kSilu, Activation::kGelu, Activation::kGeluTanh}) {
    Args a = valid_args();
    a.act = act;
    EXPECT_TRUE(accepted(act_and_mul(a.out, a.input, a.act), "act_and_mul"))
        << activation_name(act);
  }
}

// ---- first failure wins
// --------------------------------------------------------------------------

TEST_P(ActivationArgs, FirstFailureIsReported) {
  Args a = valid_args();
  a.input.dtype = DType::kInt64;
  a.out.data = nullptr;
  EXPECT_TRUE(invalid(call(op(), a), name(), "input", "got int64"));
}

// ---- accepted calls
// -------------------------------------------------------------------------------

TEST_P(ActivationArgs, ValidCallWithoutDeviceIsNoDevice) {
  if (fs_test::gpu_available()) GTEST_SKIP() << "a device is present";
  const Status st = call(op(), valid_args());
  EXPECT_EQ(st.code(), StatusCode::kNoDevice) << st.to_string();
  EXPECT_TRUE(accepted(st, name()));
}

TEST_P(ActivationArgs, EveryFloatDtypeAccepted) {
  SKIP_IF_GPU();
  for (DType dt : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    EXPECT_TRUE(accepted(call(op(), valid_args(dt)), name())) << dtype_name(dt);
  }
}

TEST_P(ActivationArgs, ThreeDAndPaddedViewsAccepted) {
  SKIP_IF_GPU();
  Args a = valid_args();
  a.input = TensorView::strided(fake(0), DType::kBFloat16, {2, 3, 2 * kD}, {8 * kD, 2 * kD + 3, 1});
  a.out = TensorView::strided(fake(1), DType::kBFloat16, {2, 3, kD}, {4 * kD, kD + 1, 1});
  EXPECT_TRUE(accepted(call(op(), a), name()));
}

TEST_P(ActivationArgs, EmptyViewsWithNullPointersAccepted) {
  SKIP_IF_GPU();
  Args a = valid_args();
  a.input = TensorView::contiguous(nullptr, DType::kBFloat16, {0, 2 * kD});
  a.out = TensorView::contiguous(nullptr, DType::kBFloat16, {0, kD});
  EXPECT_TRUE(accepted(call(op(), a), name()));
}

INSTANTIATE_TEST_SUITE_P(AllOps, ActivationArgs,
                         ::testing::Values(Op::kActAndMul, Op::kSilu, Op::kGelu, Op::kGeluTanh),
                         [](const ::testing::TestParamInfo<Op>& info) {
                           return std::string(op_name(info.param));
                         });

}  // namespace
