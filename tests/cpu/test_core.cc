// Host-side core types: TensorView, Status, dtype helpers, row indexing, the dispatch switch.
#include <gtest/gtest.h>

#include "flashserve/core/row_index.h"
#include "flashserve/flashserve.h"

using namespace flashserve;

TEST(TensorView, ContiguousStridesAndDescribe) {
  int dummy;
  TensorView t = TensorView::contiguous(&dummy, DType::kBFloat16, {16, 4096});
  EXPECT_EQ(t.ndim, 2);
  EXPECT_EQ(t.strides[0], 4096);
  EXPECT_EQ(t.strides[1], 1);
  EXPECT_EQ(t.numel(), 16 * 4096);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.nbytes_spanned(), 16 * 4096 * 2);
  EXPECT_EQ(t.size(-1), 4096);
  EXPECT_EQ(t.describe(), "bfloat16[16, 4096] strides [4096, 1] cuda:0");
}

TEST(TensorView, StridedSpan) {
  int dummy;
  TensorView t = TensorView::strided(&dummy, DType::kFloat16, {4, 8}, {24, 1});
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.nbytes_spanned(), (3 * 24 + 7 + 1) * 2);
  TensorView empty = TensorView::contiguous(&dummy, DType::kFloat16, {0, 8});
  EXPECT_EQ(empty.nbytes_spanned(), 0);
}

TEST(Status, ToString) {
  Status ok;
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(ok.to_string(), "ok");
  Status bad(StatusCode::kInvalidArgument, "rmsnorm: input: expected a device pointer, got null");
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.to_string(),
            "invalid argument: rmsnorm: input: expected a device pointer, got null");
}

TEST(DType, SizesAndNames) {
  EXPECT_EQ(dtype_size(DType::kBFloat16), 2);
  EXPECT_EQ(dtype_size(DType::kFloat8E4M3), 1);
  EXPECT_EQ(dtype_size(DType::kInt64), 8);
  EXPECT_STREQ(dtype_name(DType::kFloat8E5M2), "float8_e5m2");
  EXPECT_TRUE(is_fp8(DType::kFloat8E4M3));
  EXPECT_FALSE(is_fp8(DType::kBFloat16));
}

TEST(RowIndex, TwoAndThreeDims) {
  RowIndex r2 = RowIndex::rows_2d(4100);
  EXPECT_EQ(r2.offset(3), 3 * 4100);
  // q heads of a packed qkv row of width 6144: [tokens, 32, 128] strides (6144, 128, 1)
  RowIndex r3 = RowIndex::rows_3d(32, 6144, 128);
  EXPECT_EQ(r3.offset(0), 0);
  EXPECT_EQ(r3.offset(31), 31 * 128);
  EXPECT_EQ(r3.offset(32), 6144);
  EXPECT_EQ(r3.offset(65), 2 * 6144 + 128);
}

TEST(Runtime, VersionAndBuildInfo) {
  EXPECT_STREQ(version(), build_info().version);
  EXPECT_NE(std::string(build_info().cuda_archs).find("90a"), std::string::npos);
}
