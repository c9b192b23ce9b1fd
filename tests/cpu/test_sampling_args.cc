// Argument validation of the sampling entry points (sample_from_logits / _probs, the
// renormalization helpers, top_k, chain_speculative_sampling). Views point at fake device
// addresses: validation runs before any CUDA call. Calls that pass validation are only made
// without a GPU (they then stop at the device check with kNoDevice).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "arg_test.h"
#include "device_tensor.h"
#include "flashserve/sampling.h"

using namespace flashserve;

namespace {

using fs_test::accepted;
using fs_test::fake;
using fs_test::invalid;

constexpr int64_t kBatch = 4;
constexpr int64_t kVocab = 1000;

struct Call {
  TensorView out_ids = TensorView::contiguous(fake(1), DType::kInt32, {kBatch});
  TensorView input = TensorView::contiguous(fake(0), DType::kFloat32, {kBatch, kVocab});
  SamplingArgs args;
};

Status from_logits(const Call& c) {
  return sample_from_logits(c.out_ids, c.input, c.args);
}
Status from_probs(const Call& c) {
  return sample_from_probs(c.out_ids, c.input, c.args);
}

// ---- sample_from_logits / sample_from_probs -----------------------------------------------------

TEST(SamplingArgs, ValidCallsAccepted) {
  SKIP_IF_GPU();
  Call c;
  EXPECT_TRUE(accepted(from_logits(c), "sample_from_logits"));
  EXPECT_TRUE(accepted(from_probs(c), "sample_from_probs"));
  c.input.dtype = DType::kBFloat16;
  c.out_ids.dtype = DType::kInt64;
  c.args.top_k = TensorView::contiguous(fake(2), DType::kInt32, {kBatch});
  c.args.top_p = TensorView::contiguous(fake(3), DType::kFloat32, {kBatch});
  c.args.min_p = TensorView::contiguous(fake(4), DType::kFloat32, {kBatch});
  c.args.temperature = TensorView::contiguous(fake(5), DType::kFloat32, {kBatch});
  c.args.seed = TensorView::contiguous(fake(6), DType::kInt64, {1});
  c.args.offset = TensorView::contiguous(fake(7), DType::kInt64, {});
  c.args.order = FilterOrder::kJoint;
  EXPECT_TRUE(accepted(from_logits(c), "sample_from_logits"));
  // Row stride 0: every row reads the same logits (many draws of one distribution).
  c.input = TensorView::strided(fake(0), DType::kFloat16, {kBatch, kVocab}, {0, 1});
  EXPECT_TRUE(accepted(from_logits(c), "sample_from_logits"));
  // Scalar edge values that are valid: top_p 1, min_p 0 and 1, temperature 0 (greedy), any top_k.
  Call d;
  d.args.top_p_value = 1.f;
  d.args.min_p_value = 1.f;
  d.args.temperature_value = 0.f;
  d.args.top_k_value = -5;
  EXPECT_TRUE(accepted(from_logits(d), "sample_from_logits"));
  d.args.top_k_value = 1 << 30;
  EXPECT_TRUE(accepted(from_logits(d), "sample_from_logits"));
}

TEST(SamplingArgs, EmptyBatchAccepted) {
  SKIP_IF_GPU();
  Call c;
  c.input = TensorView::contiguous(nullptr, DType::kFloat32, {0, kVocab});
  c.out_ids = TensorView::contiguous(nullptr, DType::kInt32, {0});
  EXPECT_TRUE(accepted(from_probs(c), "sample_from_probs"));
}

TEST(SamplingArgs, InputChecks) {
  Call c;
  c.input.data = nullptr;
  EXPECT_TRUE(invalid(from_logits(c), "sample_from_logits", "logits", "got null"));
  c = Call();
  c.input = TensorView::contiguous(fake(0), DType::kFloat32, {kVocab});
  EXPECT_TRUE(invalid(from_logits(c), "sample_from_logits", "logits", "expected a 2-D tensor"));
  c = Call();
  c.input.dtype = DType::kInt32;
  EXPECT_TRUE(invalid(from_logits(c), "sample_from_logits", "logits", "expected dtype one of"));
  c = Call();
  c.input.dtype = DType::kBFloat16;
  EXPECT_TRUE(invalid(from_probs(c), "sample_from_probs", "probs", "expected dtype float32"));
  c = Call();
  c.input = TensorView::strided(fake(0), DType::kFloat32, {kBatch, kVocab}, {kVocab, 2});
  EXPECT_TRUE(invalid(from_probs(c), "sample_from_probs", "probs", "stride 1 in the last dim"));
  c = Call();
  c.input = TensorView::contiguous(fake(0), DType::kFloat32, {kBatch, 0});
  EXPECT_TRUE(invalid(from_probs(c), "sample_from_probs", "probs", "expected size >= 1 at dim 1"));
  c = Call();
  c.input = TensorView::strided(fake(0), DType::kFloat32, {kBatch, kVocab}, {-kVocab, 1});
  EXPECT_TRUE(invalid(from_probs(c), "sample_from_probs", "probs", "non-negative strides"));
  c = Call();
  c.input = TensorView::contiguous(fake(0), DType::kFloat32, {int64_t{1} << 28, 1});
  c.out_ids = TensorView::contiguous(fake(1), DType::kInt32, {int64_t{1} << 28});
  EXPECT_TRUE(invalid(from_probs(c), "sample_from_probs", "probs", "rows"));
}

TEST(SamplingArgs, OutIdsChecks) {
  Call c;
  c.out_ids = TensorView::contiguous(fake(1), DType::kInt32, {kBatch + 1});
  EXPECT_TRUE(invalid(from_logits(c), "sample_from_logits", "out_ids", "(batch) at dim 0"));
  c = Call();
  c.out_ids.dtype = DType::kFloat32;
  EXPECT_TRUE(invalid(from_logits(c), "sample_from_logits", "out_ids", "int32, int64"));
  c = Call();
  c.out_ids = TensorView::strided(fake(1), DType::kInt32, {kBatch}, {2});
  EXPECT_TRUE(invalid(from_logits(c), "sample_from_logits", "out_ids", "contiguous"));
  c = Call();
  c.out_ids = TensorView::contiguous(fake(0, 64), DType::kInt32, {kBatch});
  EXPECT_TRUE(invalid(from_logits(c), "sample_from_logits", "out_ids", "must not overlap logits"));
  c = Call();
  c.args.top_k = TensorView::contiguous(fake(1, 8), DType::kInt32, {kBatch});
  EXPECT_TRUE(invalid(from_logits(c), "sample_from_logits", "out_ids", "parameter tensor"));
}

TEST(SamplingArgs, PerRowParameterChecks) {
  Call c;
  c.args.top_k = TensorView::contiguous(fake(2), DType::kInt64, {kBatch});
  EXPECT_TRUE(invalid(from_logits(c), "sample_from_logits", "args.top_k", "expected dtype int32"));
  c = Call();
  c.args.top_p = TensorView::contiguous(fake(2), DType::kFloat32, {kBatch - 1});
  EXPECT_TRUE(invalid(from_logits(c), "sample_from_logits", "args.top_p", "(batch) at dim 0"));
  c = Call();
  c.args.min_p = TensorView::contiguous(fake(2), DType::kFloat16, {kBatch});
  EXPECT_TRUE(invalid(from_logits(c), "sample_from_logits", "args.min_p", "float32"));
  c = Call();
  c.args.temperature = TensorView::contiguous(fake(2), DType::kFloat32, {kBatch, 1});
  EXPECT_TRUE(invalid(from_logits(c), "sample_from_logits", "args.temperature", "1-D"));
  c = Call();
  c.args.top_p = TensorView::contiguous(nullptr, DType::kFloat32, {kBatch});
  EXPECT_TRUE(invalid(from_logits(c), "sample_from_logits", "args.top_p", "got null"));
}

TEST(SamplingArgs, ScalarParameterRanges) {
  for (float v : {0.f, -0.1f, 1.5f, NAN}) {
    Call c;
    c.args.top_p_value = v;
    EXPECT_TRUE(invalid(from_logits(c), "sample_from_logits", "args.top_p_value", "(0, 1]"));
  }
  for (float v : {-0.1f, 1.01f, NAN}) {
    Call c;
    c.args.min_p_value = v;
    EXPECT_TRUE(invalid(from_probs(c), "sample_from_probs", "args.min_p_value", "[0, 1]"));
  }
  for (float v : {-1.f, INFINITY, NAN}) {
    Call c;
    c.args.temperature_value = v;
    EXPECT_TRUE(invalid(from_logits(c), "sample_from_logits", "args.temperature_value", ">= 0"));
  }
  Call c;
  c.args.order = static_cast<FilterOrder>(7);
  EXPECT_TRUE(invalid(from_logits(c), "sample_from_logits", "args.order", "got 7"));
}

TEST(SamplingArgs, ScalarIgnoredWhenPerRowTensorGiven) {
  SKIP_IF_GPU();
  Call c;
  c.args.top_p = TensorView::contiguous(fake(2), DType::kFloat32, {kBatch});
  c.args.top_p_value = 7.f;  // not used
  EXPECT_TRUE(accepted(from_logits(c), "sample_from_logits"));
  // sample_from_probs does not use the temperature at all.
  Call d;
  d.args.temperature_value = -3.f;
  EXPECT_TRUE(accepted(from_probs(d), "sample_from_probs"));
}

TEST(SamplingArgs, SeedChecks) {
  Call c;
  c.args.seed = TensorView::contiguous(fake(2), DType::kInt32, {1});
  EXPECT_TRUE(invalid(from_logits(c), "sample_from_logits", "args.seed", "expected dtype int64"));
  c = Call();
  c.args.offset = TensorView::contiguous(fake(2), DType::kInt64, {2});
  EXPECT_TRUE(invalid(from_logits(c), "sample_from_logits", "args.offset", "1 element(s)"));
  c = Call();
  c.args.offset = TensorView::contiguous(fake(2), DType::kInt64, {1, 1});
  EXPECT_TRUE(invalid(from_logits(c), "sample_from_logits", "args.offset", "scalar"));
}

// ---- renormalization and masking ---------------------------------------------------------------

TEST(SamplingArgs, RenormChecks) {
  const TensorView probs = TensorView::contiguous(fake(0), DType::kFloat32, {kBatch, kVocab});
  const TensorView out = TensorView::contiguous(fake(1), DType::kFloat32, {kBatch, kVocab});
  SamplingArgs a;
  EXPECT_TRUE(
      invalid(top_k_renorm_probs(
                  TensorView::contiguous(fake(1), DType::kFloat32, {kBatch, kVocab + 1}), probs, a),
              "top_k_renorm_probs", "out", "expected the shape of probs"));
  EXPECT_TRUE(
      invalid(top_p_renorm_probs(TensorView::contiguous(fake(1), DType::kFloat16, {kBatch, kVocab}),
                                 probs, a),
              "top_p_renorm_probs", "out", "expected dtype float32"));
  EXPECT_TRUE(
      invalid(top_p_renorm_probs(
                  TensorView::contiguous(fake(0, 4), DType::kFloat32, {kBatch, kVocab}), probs, a),
              "top_p_renorm_probs", "out", "overlaps probs"));
  a.top_p_value = 0.f;
  EXPECT_TRUE(invalid(top_p_renorm_probs(out, probs, a), "top_p_renorm_probs", "args.top_p_value",
                      "(0, 1]"));
  a = SamplingArgs();
  a.top_k = TensorView::contiguous(fake(2), DType::kFloat32, {kBatch});
  EXPECT_TRUE(
      invalid(top_k_renorm_probs(out, probs, a), "top_k_renorm_probs", "args.top_k", "int32"));
  const TensorView logits = TensorView::contiguous(fake(0), DType::kBFloat16, {kBatch, kVocab});
  EXPECT_TRUE(invalid(top_k_mask_logits(out, logits, SamplingArgs()), "top_k_mask_logits", "out",
                      "expected dtype bfloat16"));
  EXPECT_TRUE(invalid(top_k_renorm_probs(out, logits, SamplingArgs()), "top_k_renorm_probs",
                      "probs", "float32"));
}

TEST(SamplingArgs, RenormAcceptedInPlace) {
  SKIP_IF_GPU();
  const TensorView probs = TensorView::contiguous(fake(0), DType::kFloat32, {kBatch, kVocab});
  SamplingArgs a;
  a.top_k_value = 10;
  EXPECT_TRUE(accepted(top_k_renorm_probs(probs, probs, a), "top_k_renorm_probs"));
  a.top_p_value = 0.5f;
  EXPECT_TRUE(accepted(top_p_renorm_probs(probs, probs, a), "top_p_renorm_probs"));
  const TensorView logits = TensorView::contiguous(fake(0), DType::kFloat16, {kBatch, kVocab});
  EXPECT_TRUE(accepted(top_k_mask_logits(logits, logits, a), "top_k_mask_logits"));
}

// ---- top_k -------------------------------------------------------------------------------------

TEST(SamplingArgs, TopKChecks) {
  const TensorView in = TensorView::contiguous(fake(0), DType::kFloat16, {kBatch, kVocab});
  auto values = [](int64_t k, DType dt = DType::kFloat16) {
    return TensorView::contiguous(fake(1), dt, {kBatch, k});
  };
  auto indices = [](int64_t k, DType dt = DType::kInt32) {
    return TensorView::contiguous(fake(2), dt, {kBatch, k});
  };
  for (int k : {0, -1, static_cast<int>(kVocab) + 1}) {
    EXPECT_TRUE(invalid(top_k(values(k < 0 ? 1 : k), indices(k < 0 ? 1 : k), in, k), "top_k", "k",
                        "1 <= k <= 1000"));
  }
  EXPECT_TRUE(invalid(top_k(values(5), indices(6), in, 5), "top_k", "indices", "(k) at dim 1"));
  EXPECT_TRUE(
      invalid(top_k(values(5, DType::kFloat32), indices(5), in, 5), "top_k", "values", "float16"));
  EXPECT_TRUE(invalid(top_k(values(5), indices(5, DType::kFloat32), in, 5), "top_k", "indices",
                      "int32, int64"));
  EXPECT_TRUE(invalid(
      top_k(TensorView::contiguous(fake(2, 8), DType::kFloat16, {kBatch, 5}), indices(5), in, 5),
      "top_k", "values", "must not overlap indices"));
}

TEST(SamplingArgs, TopKAccepted) {
  SKIP_IF_GPU();
  const TensorView in = TensorView::contiguous(fake(0), DType::kFloat32, {kBatch, kVocab});
  EXPECT_TRUE(accepted(top_k(TensorView::contiguous(fake(1), DType::kFloat32, {kBatch, kVocab}),
                             TensorView::contiguous(fake(2), DType::kInt64, {kBatch, kVocab}), in,
                             static_cast<int>(kVocab)),
                       "top_k"));
}

// ---- chain_speculative_sampling ----------------------------------------------------------------

ChainSpeculativeArgs spec_args(int64_t n = 3) {
  ChainSpeculativeArgs a;
  a.draft_token_ids = TensorView::contiguous(fake(0), DType::kInt32, {kBatch, n});
  a.draft_probs = TensorView::contiguous(fake(1), DType::kFloat32, {kBatch, n, kVocab});
  a.target_probs = TensorView::contiguous(fake(2), DType::kFloat32, {kBatch, n + 1, kVocab});
  a.output_token_ids = TensorView::contiguous(fake(3), DType::kInt32, {kBatch, n + 1});
  a.accepted_counts = TensorView::contiguous(fake(4), DType::kInt32, {kBatch});
  return a;
}

TEST(SamplingArgs, SpeculativeChecks) {
  const char* op = "chain_speculative_sampling";
  ChainSpeculativeArgs a = spec_args();
  a.target_probs = TensorView::contiguous(fake(2), DType::kFloat32, {kBatch, 4, kVocab + 1});
  EXPECT_TRUE(invalid(chain_speculative_sampling(a), op, "args.draft_probs", "(vocab) at dim 2"));
  a = spec_args();
  a.draft_token_ids = TensorView::contiguous(fake(0), DType::kInt32, {kBatch, 4});
  EXPECT_TRUE(invalid(chain_speculative_sampling(a), op, "args.draft_token_ids", "(n) at dim 1"));
  a = spec_args();
  a.output_token_ids = TensorView::contiguous(fake(3), DType::kInt32, {kBatch, 3});
  EXPECT_TRUE(
      invalid(chain_speculative_sampling(a), op, "args.output_token_ids", "(n + 1) at dim 1"));
  a = spec_args();
  a.accepted_counts = TensorView::contiguous(fake(4), DType::kInt64, {kBatch});
  EXPECT_TRUE(invalid(chain_speculative_sampling(a), op, "args.accepted_counts", "int32"));
  a = spec_args();
  a.draft_probs.dtype = DType::kBFloat16;
  EXPECT_TRUE(invalid(chain_speculative_sampling(a), op, "args.draft_probs", "float32"));
  a = spec_args();
  a.target_probs = TensorView::contiguous(fake(2), DType::kFloat32, {kBatch, 0, kVocab});
  EXPECT_TRUE(
      invalid(chain_speculative_sampling(a), op, "args.target_probs", "size >= 1 at dim 1"));
  a = spec_args();
  a.output_token_ids = TensorView::contiguous(fake(2, 4), DType::kInt32, {kBatch, 4});
  EXPECT_TRUE(
      invalid(chain_speculative_sampling(a), op, "args.output_token_ids", "must not overlap"));
}

TEST(SamplingArgs, SpeculativeAccepted) {
  SKIP_IF_GPU();
  EXPECT_TRUE(accepted(chain_speculative_sampling(spec_args()), "chain_speculative_sampling"));
  // No drafts: the call draws one token from target_probs[:, 0].
  ChainSpeculativeArgs a = spec_args(0);
  a.draft_token_ids.data = nullptr;
  a.draft_probs.data = nullptr;
  EXPECT_TRUE(accepted(chain_speculative_sampling(a), "chain_speculative_sampling"));
}

}  // namespace
