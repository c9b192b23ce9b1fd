// Argument validation of apply_rope and apply_rope_cos_sin_cache, and the host-side frequency
// definition. Every view points at fake, non-null device addresses: validation runs before any
// CUDA call, so nothing is ever dereferenced. Calls that pass validation are only made without a
// GPU (they then stop at the device check with kNoDevice).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <limits>
#include <string>
#include <vector>

#include "arg_test.h"
#include "device_tensor.h"
#include "flashserve/rope.h"
#include "flashserve/rope/frequencies.h"
#include "flashserve/rope/sincos.h"
#include "reference/rope.h"

using namespace flashserve;

namespace {

using fs_test::accepted;
using fs_test::fake;
using fs_test::invalid;
using fs_test::kBase;

enum class Op { kRope, kCache };

const char* op_name(Op op) {
  return op == Op::kRope ? "apply_rope" : "apply_rope_cos_sin_cache";
}

constexpr int64_t kTokens = 4;
constexpr int64_t kQHeads = 8;
constexpr int64_t kKvHeads = 2;
constexpr int64_t kHeadDim = 64;
constexpr int64_t kMaxPosition = 128;

struct Args {
  TensorView q_out, k_out, q, k, positions, cache;
  RopeOptions options;
};

TensorView heads(int slot, DType dt, int64_t tokens, int64_t h, int64_t d = kHeadDim) {
  return TensorView::contiguous(fake(slot), dt, {tokens, h, d});
}

// A valid bf16 out-of-place call, every tensor in its own slot; cache float32 [128, 64].
Args valid_args(DType dt = DType::kBFloat16) {
  Args a;
  a.q = heads(0, dt, kTokens, kQHeads);
  a.k = heads(1, dt, kTokens, kKvHeads);
  a.q_out = heads(2, dt, kTokens, kQHeads);
  a.k_out = heads(3, dt, kTokens, kKvHeads);
  a.positions = TensorView::contiguous(fake(4), DType::kInt64, {kTokens});
  a.cache = TensorView::contiguous(fake(5), DType::kFloat32, {kMaxPosition, kHeadDim});
  return a;
}

Status call(Op op, const Args& a) {
  if (op == Op::kRope) return apply_rope(a.q_out, a.k_out, a.q, a.k, a.positions, a.options);
  return apply_rope_cos_sin_cache(a.q_out, a.k_out, a.q, a.k, a.positions, a.cache, a.options);
}

class RopeArgs : public ::testing::TestWithParam<Op> {
 protected:
  Op op() const { return GetParam(); }
  std::string name() const { return op_name(GetParam()); }
};

// ---- null pointers
// -------------------------------------------------------------------------------

TEST_P(RopeArgs, NullQ) {
  Args a = valid_args();
  a.q.data = nullptr;
  EXPECT_TRUE(invalid(call(op(), a), name(), "q", "expected a device pointer, got null"));
}

TEST_P(RopeArgs, NullK) {
  Args a = valid_args();
  a.k.data = nullptr;
  EXPECT_TRUE(invalid(call(op(), a), name(), "k", "expected a device pointer, got null"));
}

TEST_P(RopeArgs, NullQOut) {
  Args a = valid_args();
  a.q_out.data = nullptr;
  EXPECT_TRUE(invalid(call(op(), a), name(), "q_out", "expected a device pointer, got null"));
}

TEST_P(RopeArgs, NullKOut) {
  Args a = valid_args();
  a.k_out.data = nullptr;
  EXPECT_TRUE(invalid(call(op(), a), name(), "k_out", "expected a device pointer, got null"));
}

TEST_P(RopeArgs, NullPositions) {
  Args a = valid_args();
  a.positions.data = nullptr;
  EXPECT_TRUE(invalid(call(op(), a), name(), "positions", "expected a device pointer, got null"));
}

TEST_P(RopeArgs, DefaultConstructedViews) {
  Args a;
  EXPECT_TRUE(invalid(call(op(), a), name(), "q", "got null"));
}

// ---- q
// --------------------------------------------------------------------------------------------

TEST_P(RopeArgs, TwoDimQ) {
  Args a = valid_args();
  a.q = TensorView::contiguous(fake(0), DType::kBFloat16, {kTokens, kQHeads * kHeadDim});
  EXPECT_TRUE(invalid(call(op(), a), name(), "q", "expected a 3-D tensor, got 2-D"));
}

TEST_P(RopeArgs, IntegerQ) {
  Args a = valid_args(DType::kInt32);
  EXPECT_TRUE(invalid(call(op(), a), name(), "q",
                      "expected dtype one of {float32, float16, bfloat16}, got int32"));
}

TEST_P(RopeArgs, Float8Q) {
  Args a = valid_args(DType::kFloat8E4M3);
  EXPECT_TRUE(invalid(call(op(), a), name(), "q", "got float8_e4m3"));
}

TEST_P(RopeArgs, QLastDimStride) {
  Args a = valid_args();
  a.q = TensorView::strided(fake(0), DType::kBFloat16, {kTokens, kQHeads, kHeadDim},
                            {2 * kQHeads * kHeadDim, 2 * kHeadDim, 2});
  EXPECT_TRUE(invalid(call(op(), a), name(), "q", "expected stride 1 in the last dim, got 2"));
}

TEST_P(RopeArgs, QNegativeStride) {
  Args a = valid_args();
  a.q = TensorView::strided(fake(0, 3 * kQHeads * kHeadDim * 2), DType::kBFloat16,
                            {kTokens, kQHeads, kHeadDim}, {-kQHeads * kHeadDim, kHeadDim, 1});
  EXPECT_TRUE(invalid(call(op(), a), name(), "q", "expected non-negative strides"));
}

// Views spanning gigabytes sit 1 TiB apart.
void* far(int slot) {
  return reinterpret_cast<void*>(kBase + (static_cast<uintptr_t>(slot) << 40));
}

TEST_P(RopeArgs, TooManyTokens) {
  Args a = valid_args();
  const int64_t tokens = int64_t{1} << 31;
  a.q = TensorView::contiguous(far(1), DType::kBFloat16, {tokens, 1, 2});
  a.k = TensorView::contiguous(far(2), DType::kBFloat16, {tokens, 1, 2});
  a.q_out = a.q;
  a.k_out = a.k;
  a.positions = TensorView::contiguous(far(3), DType::kInt64, {tokens});
  a.cache = TensorView::contiguous(far(4), DType::kFloat32, {kMaxPosition, 2});
  EXPECT_TRUE(invalid(call(op(), a), name(), "q", "expected at most 2^31-1 tokens"));
}

TEST_P(RopeArgs, TooManyHeads) {
  Args a = valid_args();
  const int64_t h = int64_t{1} << 24;
  a.q = TensorView::contiguous(far(1), DType::kBFloat16, {kTokens, h, 128});
  a.k = TensorView::contiguous(far(2), DType::kBFloat16, {kTokens, 1, 128});
  a.q_out = a.q;
  a.k_out = a.k;
  a.cache = TensorView::contiguous(far(4), DType::kFloat32, {kMaxPosition, 128});
  EXPECT_TRUE(invalid(call(op(), a), name(), "q", "must stay below 2^31"));
}

// ---- k
// --------------------------------------------------------------------------------------------

TEST_P(RopeArgs, KWrongDtype) {
  Args a = valid_args();
  a.k.dtype = DType::kFloat16;
  EXPECT_TRUE(invalid(call(op(), a), name(), "k", "expected dtype bfloat16, got float16"));
}

TEST_P(RopeArgs, KWrongTokens) {
  Args a = valid_args();
  a.k = heads(1, DType::kBFloat16, kTokens + 1, kKvHeads);
  a.k_out = heads(3, DType::kBFloat16, kTokens + 1, kKvHeads);
  EXPECT_TRUE(invalid(call(op(), a), name(), "k", "expected size 4 (tokens, as q) at dim 0"));
}

TEST_P(RopeArgs, KWrongHeadDim) {
  Args a = valid_args();
  a.k = heads(1, DType::kBFloat16, kTokens, kKvHeads, 2 * kHeadDim);
  a.k_out = heads(3, DType::kBFloat16, kTokens, kKvHeads, 2 * kHeadDim);
  EXPECT_TRUE(invalid(call(op(), a), name(), "k", "expected size 64 (head_dim, as q) at dim 2"));
}

TEST_P(RopeArgs, KTwoDim) {
  Args a = valid_args();
  a.k = TensorView::contiguous(fake(1), DType::kBFloat16, {kTokens, kKvHeads * kHeadDim});
  EXPECT_TRUE(invalid(call(op(), a), name(), "k", "expected a 3-D tensor, got 2-D"));
}

TEST_P(RopeArgs, KLastDimStride) {
  Args a = valid_args();
  a.k = TensorView::strided(fake(1), DType::kBFloat16, {kTokens, kKvHeads, kHeadDim},
                            {4 * kKvHeads * kHeadDim, 2 * kHeadDim, 2});
  EXPECT_TRUE(invalid(call(op(), a), name(), "k", "expected stride 1 in the last dim"));
}

TEST_P(RopeArgs, KNegativeStride) {
  Args a = valid_args();
  a.k = TensorView::strided(fake(1, 4096), DType::kBFloat16, {kTokens, kKvHeads, kHeadDim},
                            {kKvHeads * kHeadDim, -kHeadDim, 1});
  EXPECT_TRUE(invalid(call(op(), a), name(), "k", "expected non-negative strides"));
}

// ---- q_out / k_out
// --------------------------------------------------------------------------------

TEST_P(RopeArgs, QOutWrongShape) {
  Args a = valid_args();
  a.q_out = heads(2, DType::kBFloat16, kTokens, kQHeads - 1);
  EXPECT_TRUE(invalid(call(op(), a), name(), "q_out", "expected the shape of q [4, 8, 64]"));
}

TEST_P(RopeArgs, QOutWrongDtype) {
  Args a = valid_args();
  a.q_out.dtype = DType::kFloat32;
  EXPECT_TRUE(invalid(call(op(), a), name(), "q_out", "expected dtype bfloat16, got float32"));
}

TEST_P(RopeArgs, QOutLastDimStride) {
  Args a = valid_args();
  a.q_out = TensorView::strided(fake(2), DType::kBFloat16, {kTokens, kQHeads, kHeadDim},
                                {2 * kQHeads * kHeadDim, 2 * kHeadDim, 2});
  EXPECT_TRUE(invalid(call(op(), a), name(), "q_out", "expected stride 1 in the last dim"));
}

TEST_P(RopeArgs, QOutNegativeStride) {
  Args a = valid_args();
  a.q_out = TensorView::strided(fake(2, 4 * kQHeads * kHeadDim * 2), DType::kBFloat16,
                                {kTokens, kQHeads, kHeadDim}, {-kQHeads * kHeadDim, kHeadDim, 1});
  EXPECT_TRUE(invalid(call(op(), a), name(), "q_out", "expected non-negative strides"));
}

TEST_P(RopeArgs, QOutPartiallyOverlapsQ) {
  Args a = valid_args();
  a.q_out.data = fake(0, kHeadDim * 2);  // one head past q
  EXPECT_TRUE(invalid(call(op(), a), name(), "q_out", "overlaps q without being the same view"));
}

TEST_P(RopeArgs, QOutOverlapsK) {
  Args a = valid_args();
  a.q_out = TensorView::strided(fake(1), DType::kBFloat16, {kTokens, kQHeads, kHeadDim},
                                {kQHeads * kHeadDim, kHeadDim, 1});
  EXPECT_TRUE(invalid(call(op(), a), name(), "q_out", "must not overlap k"));
}

TEST_P(RopeArgs, KOutWrongShape) {
  Args a = valid_args();
  a.k_out = heads(3, DType::kBFloat16, kTokens, kKvHeads + 1);
  EXPECT_TRUE(invalid(call(op(), a), name(), "k_out", "expected the shape of k [4, 2, 64]"));
}

TEST_P(RopeArgs, KOutWrongDtype) {
  Args a = valid_args();
  a.k_out.dtype = DType::kFloat16;
  EXPECT_TRUE(invalid(call(op(), a), name(), "k_out", "expected dtype bfloat16, got float16"));
}

TEST_P(RopeArgs, KOutPartiallyOverlapsK) {
  Args a = valid_args();
  a.k_out.data = fake(1, 2);
  EXPECT_TRUE(invalid(call(op(), a), name(), "k_out", "overlaps k"));
}

TEST_P(RopeArgs, KOutOverlapsQ) {
  Args a = valid_args();
  a.k_out.data = fake(0, 128);
  EXPECT_TRUE(invalid(call(op(), a), name(), "k_out", "must not overlap q"));
}

TEST_P(RopeArgs, QOutTokensOverlapEachOther) {
  Args a = valid_args();
  a.q_out = TensorView::strided(fake(2), DType::kBFloat16, {kTokens, kQHeads, kHeadDim},
                                {kHeadDim, kHeadDim, 1});
  EXPECT_TRUE(invalid(call(op(), a), name(), "q_out", "elements do not overlap"));
}

TEST_P(RopeArgs, KOutHeadsOverlapEachOther) {
  Args a = valid_args();
  a.k_out = TensorView::strided(fake(3), DType::kBFloat16, {kTokens, kKvHeads, kHeadDim},
                                {kKvHeads * kHeadDim, kHeadDim / 2, 1});
  EXPECT_TRUE(invalid(call(op(), a), name(), "k_out", "elements do not overlap"));
}

TEST_P(RopeArgs, QOutOverlapsPositions) {
  Args a = valid_args();
  a.positions.data = fake(2, 64);
  EXPECT_TRUE(invalid(call(op(), a), name(), "q_out", "must not overlap positions"));
}

TEST_P(RopeArgs, KOutOverlapsPositions) {
  Args a = valid_args();
  a.positions.data = fake(3);
  EXPECT_TRUE(invalid(call(op(), a), name(), "k_out", "must not overlap positions"));
}

// ---- positions
// ------------------------------------------------------------------------------------

TEST_P(RopeArgs, FloatPositions) {
  Args a = valid_args();
  a.positions.dtype = DType::kFloat32;
  EXPECT_TRUE(invalid(call(op(), a), name(), "positions",
                      "expected dtype one of {int32, int64}, got float32"));
}

TEST_P(RopeArgs, PositionsWrongLength) {
  Args a = valid_args();
  a.positions = TensorView::contiguous(fake(4), DType::kInt64, {kTokens + 1});
  EXPECT_TRUE(invalid(call(op(), a), name(), "positions", "expected size 4 (tokens, as q)"));
}

TEST_P(RopeArgs, PositionsTwoDim) {
  Args a = valid_args();
  a.positions = TensorView::contiguous(fake(4), DType::kInt64, {1, kTokens});
  EXPECT_TRUE(invalid(call(op(), a), name(), "positions", "expected a 1-D tensor, got 2-D"));
}

TEST_P(RopeArgs, PositionsStrided) {
  Args a = valid_args();
  a.positions = TensorView::strided(fake(4), DType::kInt32, {kTokens}, {2});
  EXPECT_TRUE(invalid(call(op(), a), name(), "positions", "expected a contiguous tensor"));
}

// ---- rotary_dim
// -----------------------------------------------------------------------------------

TEST_P(RopeArgs, OddRotaryDim) {
  Args a = valid_args();
  a.options.rotary_dim = 33;
  if (op() == Op::kCache) {
    a.cache = TensorView::contiguous(fake(5), DType::kFloat32, {kMaxPosition, 33});
  }
  EXPECT_TRUE(invalid(call(op(), a), name(), "options.rotary_dim", "got 33"));
}

TEST_P(RopeArgs, RotaryDimAboveHeadDim) {
  Args a = valid_args();
  a.options.rotary_dim = 2 * kHeadDim;
  if (op() == Op::kCache) {
    a.cache = TensorView::contiguous(fake(5), DType::kFloat32, {kMaxPosition, 2 * kHeadDim});
  }
  EXPECT_TRUE(invalid(call(op(), a), name(), "options.rotary_dim", "min(head_dim = 64, 512)]"));
  EXPECT_TRUE(invalid(call(op(), a), name(), "options.rotary_dim", "got 128"));
}

TEST_P(RopeArgs, NegativeRotaryDim) {
  Args a = valid_args();
  a.options.rotary_dim = -2;
  EXPECT_TRUE(invalid(call(op(), a), name(), "options.rotary_dim", "got -2"));
}

TEST_P(RopeArgs, RotaryDimAbove512) {
  Args a = valid_args();
  a.q = heads(0, DType::kBFloat16, kTokens, kQHeads, 1024);
  a.k = heads(1, DType::kBFloat16, kTokens, kKvHeads, 1024);
  a.q_out = heads(2, DType::kBFloat16, kTokens, kQHeads, 1024);
  a.k_out = heads(3, DType::kBFloat16, kTokens, kKvHeads, 1024);
  a.cache = TensorView::contiguous(fake(5), DType::kFloat32, {kMaxPosition, 1024});
  EXPECT_TRUE(invalid(call(op(), a), name(), "options.rotary_dim", "got 1024"));
}

// ---- apply_rope scalars (ignored by the cache variant)
// --------------------------------------------

struct ScalarCase {
  const char* arg;
  void (*set)(RopeOptions&);
  const char* detail;
};

const ScalarCase kBadScalars[] = {
    {"options.theta", [](RopeOptions& o) { o.theta = 0.f; }, "expected a finite value > 0"},
    {"options.theta", [](RopeOptions& o) { o.theta = -1.f; }, "got -1"},
    {"options.theta", [](RopeOptions& o) { o.theta = std::numeric_limits<float>::quiet_NaN(); },
     "nan"},
    {"options.scale", [](RopeOptions& o) { o.scale = 0.f; }, "expected a finite value > 0"},
    {"options.scale", [](RopeOptions& o) { o.scale = std::numeric_limits<float>::infinity(); },
     "inf"},
    {"options.llama31_scaling.factor",
     [](RopeOptions& o) {
       o.llama31 = true;
       o.llama31_scaling.factor = 0.f;
     },
     "expected a finite value > 0"},
    {"options.llama31_scaling.low_freq_factor",
     [](RopeOptions& o) {
       o.llama31 = true;
       o.llama31_scaling.low_freq_factor = 0.f;
     },
     "expected a finite value > 0"},
    {"options.llama31_scaling.high_freq_factor",
     [](RopeOptions& o) {
       o.llama31 = true;
       o.llama31_scaling.high_freq_factor = o.llama31_scaling.low_freq_factor;
     },
     "expected a finite value > low_freq_factor"},
    {"options.llama31_scaling.original_max_position",
     [](RopeOptions& o) {
       o.llama31 = true;
       o.llama31_scaling.original_max_position = -8192.f;
     },
     "expected a finite value > 0"},
};

TEST(RopeArgsScalars, RejectedByApplyRope) {
  for (const ScalarCase& s : kBadScalars) {
    Args a = valid_args();
    s.set(a.options);
    EXPECT_TRUE(invalid(call(Op::kRope, a), "apply_rope", s.arg, s.detail)) << s.arg;
  }
}

TEST(RopeArgsScalars, IgnoredByCacheVariant) {
  SKIP_IF_GPU();
  for (const ScalarCase& s : kBadScalars) {
    Args a = valid_args();
    s.set(a.options);
    EXPECT_TRUE(accepted(call(Op::kCache, a), "apply_rope_cos_sin_cache")) << s.arg;
  }
}

TEST(RopeArgsScalars, BadLlama31FactorsIgnoredWithoutLlama31) {
  SKIP_IF_GPU();
  Args a = valid_args();
  a.options.llama31_scaling.factor = -1.f;
  EXPECT_TRUE(accepted(call(Op::kRope, a), "apply_rope"));
}

// ---- cos_sin_cache
// --------------------------------------------------------------------------------

TEST(RopeArgsCache, NullCache) {
  Args a = valid_args();
  a.cache.data = nullptr;
  EXPECT_TRUE(invalid(call(Op::kCache, a), "apply_rope_cos_sin_cache", "cos_sin_cache",
                      "expected a device pointer, got null"));
}

TEST(RopeArgsCache, OneDimCache) {
  Args a = valid_args();
  a.cache = TensorView::contiguous(fake(5), DType::kFloat32, {kMaxPosition * kHeadDim});
  EXPECT_TRUE(invalid(call(Op::kCache, a), "apply_rope_cos_sin_cache", "cos_sin_cache",
                      "expected a 2-D tensor, got 1-D"));
}

TEST(RopeArgsCache, CacheOfAnotherHalfType) {
  Args a = valid_args();
  a.cache.dtype = DType::kFloat16;
  EXPECT_TRUE(invalid(call(Op::kCache, a), "apply_rope_cos_sin_cache", "cos_sin_cache",
                      "expected dtype one of {float32, bfloat16}, got float16"));
}

TEST(RopeArgsCache, IntegerCache) {
  Args a = valid_args();
  a.cache.dtype = DType::kInt32;
  EXPECT_TRUE(
      invalid(call(Op::kCache, a), "apply_rope_cos_sin_cache", "cos_sin_cache", "got int32"));
}

TEST(RopeArgsCache, NonContiguousCache) {
  Args a = valid_args();
  a.cache =
      TensorView::strided(fake(5), DType::kFloat32, {kMaxPosition, kHeadDim}, {2 * kHeadDim, 1});
  EXPECT_TRUE(invalid(call(Op::kCache, a), "apply_rope_cos_sin_cache", "cos_sin_cache",
                      "expected a contiguous tensor"));
}

TEST(RopeArgsCache, EmptyCache) {
  Args a = valid_args();
  a.cache = TensorView::contiguous(fake(5), DType::kFloat32, {0, kHeadDim});
  EXPECT_TRUE(invalid(call(Op::kCache, a), "apply_rope_cos_sin_cache", "cos_sin_cache",
                      "expected size >= 1 at dim 0"));
}

TEST(RopeArgsCache, RotaryDimDiffersFromCacheWidth) {
  Args a = valid_args();
  a.options.rotary_dim = 32;
  EXPECT_TRUE(invalid(call(Op::kCache, a), "apply_rope_cos_sin_cache", "options.rotary_dim",
                      "expected 0 or the cos_sin_cache width 64, got 32"));
}

TEST(RopeArgsCache, OddCacheWidth) {
  Args a = valid_args();
  a.cache = TensorView::contiguous(fake(5), DType::kFloat32, {kMaxPosition, 31});
  EXPECT_TRUE(invalid(call(Op::kCache, a), "apply_rope_cos_sin_cache", "options.rotary_dim",
                      "(the cos_sin_cache width), got 31"));
}

TEST(RopeArgsCache, CacheWiderThanHeadDim) {
  Args a = valid_args();
  a.cache = TensorView::contiguous(fake(5), DType::kFloat32, {kMaxPosition, 2 * kHeadDim});
  EXPECT_TRUE(
      invalid(call(Op::kCache, a), "apply_rope_cos_sin_cache", "options.rotary_dim", "got 128"));
}

TEST(RopeArgsCache, QOutOverlapsCache) {
  Args a = valid_args();
  a.cache.data = fake(2, 256);
  EXPECT_TRUE(invalid(call(Op::kCache, a), "apply_rope_cos_sin_cache", "q_out",
                      "must not overlap cos_sin_cache"));
}

TEST(RopeArgsCache, KOutOverlapsCache) {
  Args a = valid_args();
  a.cache.data = fake(3);
  EXPECT_TRUE(invalid(call(Op::kCache, a), "apply_rope_cos_sin_cache", "k_out",
                      "must not overlap cos_sin_cache"));
}

TEST(RopeArgsCache, CacheLayoutsAccepted) {
  SKIP_IF_GPU();
  Args a = valid_args();
  a.cache.dtype = DType::kBFloat16;  // q's dtype
  EXPECT_TRUE(accepted(call(Op::kCache, a), "apply_rope_cos_sin_cache"));
  a.cache = TensorView::contiguous(fake(5), DType::kFloat32, {kMaxPosition, 32});  // partial
  EXPECT_TRUE(accepted(call(Op::kCache, a), "apply_rope_cos_sin_cache"));
  a.options.rotary_dim = 32;
  EXPECT_TRUE(accepted(call(Op::kCache, a), "apply_rope_cos_sin_cache"));
}

// ---- first failure wins
// --------------------------------------------------------------------------

TEST_P(RopeArgs, FirstFailureIsReported) {
  Args a = valid_args();
  a.k.dtype = DType::kFloat32;
  a.positions.data = nullptr;
  a.options.rotary_dim = 3;
  EXPECT_TRUE(invalid(call(op(), a), name(), "k", "got float32"));
}

// ---- accepted calls
// -------------------------------------------------------------------------------

TEST_P(RopeArgs, ValidCallWithoutDeviceIsNoDevice) {
  if (fs_test::gpu_available()) GTEST_SKIP() << "a device is present";
  const Status st = call(op(), valid_args());
  EXPECT_EQ(st.code(), StatusCode::kNoDevice) << st.to_string();
  EXPECT_TRUE(accepted(st, name()));
}

TEST_P(RopeArgs, DtypesAndPositionTypesAccepted) {
  SKIP_IF_GPU();
  for (DType dt : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    for (DType pt : {DType::kInt32, DType::kInt64}) {
      Args a = valid_args(dt);
      a.positions.dtype = pt;
      EXPECT_TRUE(accepted(call(op(), a), name())) << dtype_name(dt) << " " << dtype_name(pt);
    }
  }
}

TEST_P(RopeArgs, InPlaceAccepted) {
  SKIP_IF_GPU();
  Args a = valid_args();
  a.q_out = a.q;
  a.k_out = a.k;
  EXPECT_TRUE(accepted(call(op(), a), name()));
  a.k_out = heads(3, DType::kBFloat16, kTokens, kKvHeads);  // q in place, k out of place
  EXPECT_TRUE(accepted(call(op(), a), name()));
}

// q and k as slices of one packed qkv row: their spans interleave, which in place is fine.
TEST_P(RopeArgs, PackedQkvAccepted) {
  SKIP_IF_GPU();
  const int64_t width = (kQHeads + 2 * kKvHeads) * kHeadDim;
  Args a = valid_args();
  a.q = TensorView::strided(fake(0), DType::kBFloat16, {kTokens, kQHeads, kHeadDim},
                            {width, kHeadDim, 1});
  a.k = TensorView::strided(fake(0, kQHeads * kHeadDim * 2), DType::kBFloat16,
                            {kTokens, kKvHeads, kHeadDim}, {width, kHeadDim, 1});
  a.q_out = a.q;
  a.k_out = a.k;
  EXPECT_TRUE(accepted(call(op(), a), name()));
  // Out of place into another packed buffer.
  a.q_out.data = fake(2);
  a.k_out.data = fake(2, kQHeads * kHeadDim * 2);
  EXPECT_TRUE(accepted(call(op(), a), name()));
}

TEST_P(RopeArgs, PartialRotaryAndOptionsAccepted) {
  SKIP_IF_GPU();
  Args a = valid_args();
  a.options.interleave = true;
  if (op() == Op::kRope) {
    a.options.rotary_dim = 32;
    a.options.llama31 = true;
    a.options.scale = 4.f;
    a.options.theta = 500000.f;
  }
  EXPECT_TRUE(accepted(call(op(), a), name()));
}

TEST_P(RopeArgs, EmptyViewsWithNullPointersAccepted) {
  SKIP_IF_GPU();
  Args a = valid_args();
  a.q = TensorView::contiguous(nullptr, DType::kBFloat16, {0, kQHeads, kHeadDim});
  a.k = TensorView::contiguous(nullptr, DType::kBFloat16, {0, kKvHeads, kHeadDim});
  a.q_out = a.q;
  a.k_out = a.k;
  a.positions = TensorView::contiguous(nullptr, DType::kInt64, {0});
  EXPECT_TRUE(accepted(call(op(), a), name()));
}

INSTANTIATE_TEST_SUITE_P(BothOps, RopeArgs, ::testing::Values(Op::kRope, Op::kCache),
                         [](const ::testing::TestParamInfo<Op>& info) {
                           return std::string(op_name(info.param));
                         });

// ---- frequencies
// ----------------------------------------------------------------------------------

// The launcher's host-side frequencies are bit-identical to the reference's.
TEST(RopeFrequencies, MatchReferenceBitwise) {
  struct F {
    int rotary_dim;
    float theta;
    bool llama31;
  };
  for (F f : {F{128, 10000.f, false}, F{64, 10000.f, false}, F{128, 500000.f, true},
              F{80, 1000000.f, false}, F{512, 10000.f, true}, F{2, 10000.f, false}}) {
    RopeOptions o;
    o.theta = f.theta;
    o.llama31 = f.llama31;
    rope::FrequencyConfig c;
    c.rotary_dim = f.rotary_dim;
    c.theta = f.theta;
    c.llama31 = f.llama31;
    std::vector<float> got(f.rotary_dim / 2);
    rope::compute_inv_freq(c, got.data());
    const std::vector<float> want = fs_test::ref::rope_inv_freq(o, f.rotary_dim);
    ASSERT_EQ(got.size(), want.size());
    EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
        << "rotary_dim " << f.rotary_dim << " theta " << f.theta << " llama31 " << f.llama31;
    EXPECT_EQ(got[0], 1.f);
  }
}

// Llama-3.1 scaling: high frequencies kept, low ones divided by the factor, smooth in between.
TEST(RopeFrequencies, Llama31Bands) {
  rope::FrequencyConfig plain, scaled;
  plain.rotary_dim = scaled.rotary_dim = 128;
  plain.theta = scaled.theta = 500000.f;
  scaled.llama31 = true;
  std::vector<float> a(64), b(64);
  rope::compute_inv_freq(plain, a.data());
  rope::compute_inv_freq(scaled, b.data());
  int kept = 0, divided = 0, smooth = 0;
  for (int i = 0; i < 64; ++i) {
    const float wavelen = 6.283185307179586f / a[i];
    if (wavelen < 8192.f / 4.f) {
      EXPECT_EQ(b[i], a[i]) << i;
      ++kept;
    } else if (wavelen > 8192.f) {
      EXPECT_EQ(b[i], a[i] / 8.f) << i;
      ++divided;
    } else {
      EXPECT_LT(b[i], a[i]) << i;
      EXPECT_GT(b[i], a[i] / 8.f) << i;
      ++smooth;
    }
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(smooth, 0);
}

// ---- sin / cos of the kernel (the same code runs on the host)
// -------------------------------------

// |error| in float ulps of the long-double truth.
double ulps(float got, long double want) {
  const float w = static_cast<float>(want);
  const float ulp = std::nextafter(std::fabs(w), INFINITY) - std::fabs(w);
  return static_cast<double>(std::fabs(static_cast<long double>(got) - want) / ulp);
}

TEST(RopeSincos, CorrectlyRoundedOverTheFloatRange) {
  std::mt19937_64 gen(fs_test::fresh_seed());
  std::uniform_int_distribution<uint32_t> bits(0, 0x7f7fffffu);  // every finite float
  std::uniform_real_distribution<float> angle(-300000.f, 300000.f);
  double worst = 0;
  float worst_x = 0;
  auto check = [&](float x) {
    float s, c;
    rope::sincos_float(x, &s, &c);
    const double e = std::max(ulps(s, std::sin(static_cast<long double>(x))),
                              ulps(c, std::cos(static_cast<long double>(x))));
    if (e > worst) {
      worst = e;
      worst_x = x;
    }
  };
  for (int i = 0; i < 200000; ++i) {
    uint32_t b = bits(gen);
    float x;
    std::memcpy(&x, &b, sizeof(x));
    check(x);
    check(-x);
    check(angle(gen));
  }
  // RoPE angles: integer positions times a few frequencies, up to 2^20.
  for (int p = 0; p < (1 << 20); p += 7)
    for (float f : {1.f, 0.7498942f, 0.1f})
      check(static_cast<float>(p) * f);
  // Near multiples of pi/2, and the float nearest to a multiple of pi/2 (worst-case reduction).
  for (float x : {1.5707963f, 3.1415927f, 4.712389f, 6.2831855f, 105615.f, 105616.f, 131071.f,
                  0.7853981f, 0.7853982f, 3.4e38f, 16367173.f * 4722366482869645213696.f}) {
    check(x);
    check(-x);
  }
  EXPECT_LE(worst, 0.501) << "worst at x = " << worst_x;
}

TEST(RopeSincos, SpecialValues) {
  float s, c;
  rope::sincos_float(0.f, &s, &c);
  EXPECT_EQ(s, 0.f);
  EXPECT_EQ(c, 1.f);
  rope::sincos_float(-0.f, &s, &c);
  EXPECT_TRUE(s == 0.f && std::signbit(s));
  rope::sincos_float(INFINITY, &s, &c);
  EXPECT_TRUE(std::isnan(s) && std::isnan(c));
  rope::sincos_float(NAN, &s, &c);
  EXPECT_TRUE(std::isnan(s) && std::isnan(c));
  rope::sincos_float(1e-30f, &s, &c);
  EXPECT_EQ(s, 1e-30f);
  EXPECT_EQ(c, 1.f);
}

}  // namespace
