// ArgCheck (src/api/arg_check.h): message formats, first-failure-wins, aliasing rules, device
// check. Views point at fake addresses; nothing here dereferences them.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "api/arg_check.h"
#include "device_tensor.h"

using namespace flashserve;

namespace {

void* fake(int64_t byte_offset = 0) {
  return reinterpret_cast<void*>(uintptr_t{0x100000} + static_cast<uintptr_t>(byte_offset));
}

// kInvalidArgument whose message starts with "<op>: <name>: " and contains each of `parts`.
::testing::AssertionResult fails_with(const ArgCheck& c, const std::string& op,
                                      const std::string& name,
                                      std::initializer_list<std::string> parts) {
  if (c.ok()) return ::testing::AssertionFailure() << "the check passed";
  const Status& st = c.status();
  if (st.code() != StatusCode::kInvalidArgument)
    return ::testing::AssertionFailure() << "code: " << st.to_string();
  const std::string prefix = op + ": " + name + ": ";
  if (st.message().rfind(prefix, 0) != 0)
    return ::testing::AssertionFailure() << "\"" << st.message() << "\" lacks prefix " << prefix;
  for (const std::string& p : parts) {
    if (st.message().find(p) == std::string::npos)
      return ::testing::AssertionFailure() << "\"" << st.message() << "\" lacks \"" << p << "\"";
  }
  return ::testing::AssertionSuccess();
}

const TensorView kBf16 = TensorView::contiguous(fake(), DType::kBFloat16, {4, 64});

TEST(ArgCheck, PassingChecksStayOk) {
  ArgCheck c("op");
  c.arg(kBf16, "x")
      .defined()
      .ndim(2)
      .ndim_in(1, 3)
      .dtype(DType::kBFloat16)
      .dtype_in({DType::kFloat32, DType::kBFloat16})
      .float_dtype()
      .size(0, 4)
      .size(-1, 64, "hidden")
      .size_at_least(1, 64)
      .same_shape(kBf16, "y")
      .same_dtype(kBf16, "y")
      .inner_contiguous()
      .contiguous()
      .numel(256)
      .nonnegative_strides()
      .no_partial_alias(kBf16, "y")
      .require(true, "unused");
  EXPECT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c.status().code(), StatusCode::kOk);
}

TEST(ArgCheck, ChecksWithoutArgAreNoOps) {
  ArgCheck c("op");
  c.defined().ndim(5).dtype(DType::kInt64).numel(3);
  EXPECT_TRUE(c.ok());
}

TEST(ArgCheck, FirstFailureWins) {
  const TensorView null_view;
  ArgCheck c("myop");
  c.arg(kBf16, "a").ndim(3);
  c.arg(null_view, "b").defined();
  c.require(false, "later scalar failure");
  c.fail(StatusCode::kInternal, "later explicit failure");
  EXPECT_TRUE(fails_with(c, "myop", "a", {"expected a 3-D tensor, got 2-D"}));
}

TEST(ArgCheck, LaterChecksOfTheSameArgAreSkipped) {
  ArgCheck c("myop");
  c.arg(kBf16, "a").dtype(DType::kFloat32).ndim(1).size(0, 7);
  EXPECT_TRUE(fails_with(c, "myop", "a", {"expected dtype float32", "got bfloat16"}));
}

TEST(ArgCheck, FailReturnsTheFirstStatus) {
  ArgCheck c("op");
  const Status first = c.fail(StatusCode::kUnsupported, "first");
  const Status second = c.fail(StatusCode::kInternal, "second");
  EXPECT_EQ(first.code(), StatusCode::kUnsupported);
  EXPECT_EQ(second.code(), StatusCode::kUnsupported);
  EXPECT_EQ(second.message(), "first");
  EXPECT_EQ(c.status().message(), "first");
}

TEST(ArgCheck, Defined) {
  const TensorView null_view = TensorView::contiguous(nullptr, DType::kFloat32, {2});
  ArgCheck c("norm");
  c.arg(null_view, "weight").defined();
  EXPECT_TRUE(fails_with(c, "norm", "weight", {"expected a device pointer", "got null"}));
}

TEST(ArgCheck, DefinedRejectsBadRank) {
  TensorView t = kBf16;
  t.ndim = TensorView::kMaxDims + 1;
  ArgCheck c("op");
  c.arg(t, "x").defined();
  EXPECT_TRUE(fails_with(c, "op", "x", {"expected ndim in [0, 6]", "got 7"}));
  t.ndim = -1;
  ArgCheck c2("op");
  c2.arg(t, "x").defined();
  EXPECT_TRUE(fails_with(c2, "op", "x", {"got -1"}));
}

TEST(ArgCheck, DefinedRejectsNegativeSizes) {
  TensorView t = kBf16;
  t.shape[1] = -3;
  ArgCheck c("op");
  c.arg(t, "x").defined();
  EXPECT_TRUE(fails_with(c, "op", "x", {"expected non-negative sizes", "got shape [4, -3]"}));
}

TEST(ArgCheck, Ndim) {
  ArgCheck c("op");
  c.arg(kBf16, "x").ndim(3);
  EXPECT_TRUE(fails_with(c, "op", "x", {"expected a 3-D tensor", "got 2-D with shape [4, 64]"}));
}

TEST(ArgCheck, NdimIn) {
  const TensorView t = TensorView::contiguous(fake(), DType::kFloat32, {1, 2, 3, 4});
  ArgCheck c("op");
  c.arg(t, "x").ndim_in(2, 3);
  EXPECT_TRUE(fails_with(c, "op", "x",
                         {"expected a 2-D to 3-D tensor", "got 4-D with shape [1, 2, 3, 4]"}));
  ArgCheck ok("op");
  ok.arg(t, "x").ndim_in(4, 4).ndim_in(0, 6);
  EXPECT_TRUE(ok.ok());
}

TEST(ArgCheck, Dtype) {
  ArgCheck c("op");
  c.arg(kBf16, "x").dtype(DType::kFloat16);
  EXPECT_TRUE(fails_with(c, "op", "x", {"expected dtype float16, got bfloat16"}));
  EXPECT_EQ(c.status().message().find("one of"), std::string::npos);
}

TEST(ArgCheck, DtypeInListsAllowed) {
  const TensorView t = TensorView::contiguous(fake(), DType::kInt32, {4});
  ArgCheck c("op");
  c.arg(t, "ids").dtype_in({DType::kInt64, DType::kUInt8, DType::kFloat8E5M2});
  EXPECT_TRUE(
      fails_with(c, "op", "ids", {"expected dtype one of {int64, uint8, float8_e5m2}, got int32"}));
}

TEST(ArgCheck, FloatDtype) {
  for (DType ok_dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    const TensorView t = TensorView::contiguous(fake(), ok_dtype, {4});
    ArgCheck c("op");
    c.arg(t, "x").float_dtype();
    EXPECT_TRUE(c.ok()) << dtype_name(ok_dtype);
  }
  for (DType bad :
       {DType::kFloat8E4M3, DType::kFloat8E5M2, DType::kInt32, DType::kInt64, DType::kUInt8}) {
    const TensorView t = TensorView::contiguous(fake(), bad, {4});
    ArgCheck c("op");
    c.arg(t, "x").float_dtype();
    EXPECT_TRUE(
        fails_with(c, "op", "x",
                   {"one of {float32, float16, bfloat16}", std::string("got ") + dtype_name(bad)}))
        << dtype_name(bad);
  }
}

TEST(ArgCheck, SizeWithAndWithoutWhat) {
  ArgCheck c("op");
  c.arg(kBf16, "w").size(-1, 128, "hidden");
  EXPECT_TRUE(
      fails_with(c, "op", "w", {"expected size 128 (hidden) at dim -1", "got shape [4, 64]"}));
  ArgCheck c2("op");
  c2.arg(kBf16, "w").size(0, 5);
  EXPECT_TRUE(fails_with(c2, "op", "w", {"expected size 5 at dim 0, got shape [4, 64]"}));
}

TEST(ArgCheck, SizeOutOfRangeDim) {
  ArgCheck c("op");
  c.arg(kBf16, "w").size(2, 4);
  EXPECT_TRUE(fails_with(c, "op", "w", {"at dim 2"}));
  ArgCheck c2("op");
  c2.arg(kBf16, "w").size(-3, 4);
  EXPECT_TRUE(fails_with(c2, "op", "w", {"at dim -3"}));
}

TEST(ArgCheck, SizeAtLeast) {
  const TensorView t = TensorView::contiguous(fake(), DType::kFloat32, {4, 0});
  ArgCheck c("op");
  c.arg(t, "x").size_at_least(0, 4);
  EXPECT_TRUE(c.ok());
  c.size_at_least(-1, 1);
  EXPECT_TRUE(fails_with(c, "op", "x", {"expected size >= 1 at dim -1", "got shape [4, 0]"}));
}

TEST(ArgCheck, SameShape) {
  const TensorView t = TensorView::contiguous(fake(), DType::kBFloat16, {4, 32});
  ArgCheck c("op");
  c.arg(t, "out").same_shape(kBf16, "input");
  EXPECT_TRUE(fails_with(c, "op", "out", {"expected the shape of input [4, 64]", "got [4, 32]"}));
  const TensorView t3 = TensorView::contiguous(fake(), DType::kBFloat16, {4, 64, 1});
  ArgCheck c2("op");
  c2.arg(t3, "out").same_shape(kBf16, "input");
  EXPECT_TRUE(fails_with(c2, "op", "out", {"got [4, 64, 1]"}));
}

TEST(ArgCheck, SameDtype) {
  const TensorView t = TensorView::contiguous(fake(), DType::kFloat16, {4, 64});
  ArgCheck c("op");
  c.arg(t, "out").same_dtype(kBf16, "input");
  EXPECT_TRUE(
      fails_with(c, "op", "out", {"expected the dtype of input (bfloat16)", "got float16"}));
}

TEST(ArgCheck, InnerContiguous) {
  const TensorView t = TensorView::strided(fake(), DType::kFloat32, {4, 8}, {16, 2});
  ArgCheck c("op");
  c.arg(t, "x").inner_contiguous();
  EXPECT_TRUE(fails_with(c, "op", "x", {"expected stride 1 in the last dim", "got 2"}));
  // A last dim of size 1 has no meaningful stride.
  const TensorView one = TensorView::strided(fake(), DType::kFloat32, {4, 1}, {3, 5});
  ArgCheck c2("op");
  c2.arg(one, "x").inner_contiguous();
  EXPECT_TRUE(c2.ok());
}

TEST(ArgCheck, Contiguous) {
  const TensorView t = TensorView::strided(fake(), DType::kFloat32, {4, 8}, {16, 1});
  ArgCheck c("op");
  c.arg(t, "x").contiguous();
  EXPECT_TRUE(fails_with(c, "op", "x", {"expected a contiguous tensor", t.describe()}));
}

TEST(ArgCheck, Numel) {
  const TensorView t = TensorView::contiguous(fake(), DType::kFloat32, {2, 3});
  ArgCheck c("op");
  c.arg(t, "scale").numel(1);
  EXPECT_TRUE(fails_with(c, "op", "scale", {"expected 1 element(s)", "got shape [2, 3]"}));
  const TensorView scalar = TensorView::contiguous(fake(), DType::kFloat32, {});
  ArgCheck c2("op");
  c2.arg(scalar, "scale").numel(1);
  EXPECT_TRUE(c2.ok());
}

TEST(ArgCheck, NonnegativeStrides) {
  const TensorView t = TensorView::strided(fake(1024), DType::kFloat32, {4, 8}, {-8, 1});
  ArgCheck c("op");
  c.arg(t, "x").nonnegative_strides();
  EXPECT_TRUE(fails_with(c, "op", "x", {"expected non-negative strides", "strides [-8, 1]"}));
}

TEST(ArgCheck, RequirePrefixesTheOp) {
  ArgCheck c("rope");
  c.require(true, "never shown").require(false, "options.theta: expected > 0, got -1");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.status().message(), "rope: options.theta: expected > 0, got -1");
}

// ---- no_partial_alias
// -----------------------------------------------------------------------------

TEST(ArgCheckAlias, SameViewAccepted) {
  const TensorView a = TensorView::strided(fake(), DType::kBFloat16, {4, 64}, {128, 1});
  const TensorView b = a;
  ArgCheck c("op");
  c.arg(a, "out").no_partial_alias(b, "input");
  EXPECT_TRUE(c.ok()) << c.status().to_string();
}

TEST(ArgCheckAlias, DisjointAccepted) {
  const TensorView a = TensorView::contiguous(fake(), DType::kBFloat16, {4, 64});
  // Starts exactly one past the last byte of `a`.
  const TensorView b = TensorView::contiguous(fake(a.nbytes_spanned()), DType::kBFloat16, {4, 64});
  ArgCheck c("op");
  c.arg(a, "out").no_partial_alias(b, "input");
  c.arg(b, "input").no_partial_alias(a, "out");
  EXPECT_TRUE(c.ok()) << c.status().to_string();
}

TEST(ArgCheckAlias, UndefinedOtherAccepted) {
  ArgCheck c("op");
  c.arg(kBf16, "out").no_partial_alias(TensorView{}, "input");
  EXPECT_TRUE(c.ok());
}

TEST(ArgCheckAlias, EmptyViewNeverOverlaps) {
  const TensorView empty = TensorView::contiguous(fake(), DType::kBFloat16, {0, 64});
  ArgCheck c("op");
  c.arg(empty, "out").no_partial_alias(kBf16, "input");
  EXPECT_TRUE(c.ok());
}

TEST(ArgCheckAlias, ShiftedByOneByteRejected) {
  const TensorView b = TensorView::contiguous(fake(1), DType::kBFloat16, {4, 64});
  ArgCheck c("op");
  c.arg(b, "out").no_partial_alias(kBf16, "input");
  EXPECT_TRUE(fails_with(c, "op", "out", {"overlaps input without being the same view"}));
}

TEST(ArgCheckAlias, LastByteOverlapRejected) {
  const TensorView b =
      TensorView::contiguous(fake(kBf16.nbytes_spanned() - 1), DType::kBFloat16, {4, 64});
  ArgCheck c("op");
  c.arg(b, "out").no_partial_alias(kBf16, "input");
  EXPECT_TRUE(fails_with(c, "op", "out", {"overlaps input"}));
}

TEST(ArgCheckAlias, SubviewRejected) {
  const TensorView rows = TensorView::contiguous(fake(2 * 64 * 2), DType::kBFloat16, {1, 64});
  ArgCheck c("op");
  c.arg(rows, "residual").no_partial_alias(kBf16, "input");
  EXPECT_TRUE(fails_with(c, "op", "residual", {"overlaps input"}));
}

TEST(ArgCheckAlias, SameAddressDifferentDtypeRejected) {
  TensorView b = kBf16;
  b.dtype = DType::kFloat16;
  ArgCheck c("op");
  c.arg(b, "out").no_partial_alias(kBf16, "input");
  EXPECT_TRUE(fails_with(c, "op", "out", {"overlaps input"}));
}

TEST(ArgCheckAlias, SameAddressDifferentStridesRejected) {
  const TensorView a = TensorView::strided(fake(), DType::kBFloat16, {4, 64}, {128, 1});
  ArgCheck c("op");
  c.arg(kBf16, "out").no_partial_alias(a, "input");
  EXPECT_TRUE(fails_with(c, "op", "out", {"overlaps input"}));
}

TEST(ArgCheckAlias, SameAddressDifferentShapeRejected) {
  const TensorView a = TensorView::contiguous(fake(), DType::kBFloat16, {2, 64});
  ArgCheck c("op");
  c.arg(kBf16, "out").no_partial_alias(a, "input");
  EXPECT_TRUE(fails_with(c, "op", "out", {"overlaps input"}));
}

// ---- on_current_device
// ----------------------------------------------------------------------------

TEST(ArgCheckDevice, NoDeviceWithoutGpu) {
  if (fs_test::gpu_available()) GTEST_SKIP() << "a device is present";
  ArgCheck c("rmsnorm");
  c.arg(kBf16, "input").defined().on_current_device();
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kNoDevice);
  EXPECT_EQ(c.status().message().rfind("rmsnorm: no usable CUDA device (", 0), 0u)
      << c.status().message();
}

TEST(ArgCheckDevice, EarlierFailureIsKept) {
  // Runs on every machine: a failed check makes on_current_device a no-op.
  ArgCheck c("rmsnorm");
  c.arg(kBf16, "input").ndim(3).on_current_device();
  EXPECT_TRUE(fails_with(c, "rmsnorm", "input", {"expected a 3-D tensor"}));
}

TEST(ArgCheckDevice, WrongDeviceNamesTheArgument) {
  if (!fs_test::gpu_available()) GTEST_SKIP() << "needs a CUDA device";
  TensorView other = kBf16;
  other.device = 97;
  ArgCheck c("rmsnorm");
  c.arg(kBf16, "input").arg(other, "weight").on_current_device();
  EXPECT_TRUE(fails_with(c, "rmsnorm", "weight",
                         {"expected a tensor on the current device cuda:", "got cuda:97"}));
}

TEST(ArgCheckDevice, UndefinedTensorsIgnored) {
  if (!fs_test::gpu_available()) GTEST_SKIP() << "needs a CUDA device";
  TensorView undefined;
  undefined.device = 97;
  ArgCheck c("rmsnorm");
  c.arg(kBf16, "input").arg(undefined, "bias").on_current_device();
  EXPECT_TRUE(c.ok()) << c.status().to_string();
}

}  // namespace
