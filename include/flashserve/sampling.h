// Sampling: token ids from logits or probabilities with top-k / top-p / min-p filters, the
// renormalization helpers, exact top-k, and chain speculative verification. No sort of the
// vocabulary: every filter is an exact threshold found by radix select, the row read from memory
// once (docs/sampling.md).
//
// Shapes: logits / probs [batch, vocab] (last dim contiguous, row stride free: a stride of 0 gives
// `batch` draws from one row), token ids [batch] int32 or int64. Every call is asynchronous on
// `stream`, allocates nothing and can be captured in a CUDA graph. Randomness is Philox4x32-10
// keyed by a seed with a counter offset: the same seed and offset give the same tokens; pass them
// as device scalars so that a captured graph draws new numbers after the caller bumps the offset
// in device memory. A call uses counter values (offset, row, 0..) only, so bumping the offset by 1
// between calls suffices.
//
// Defined behaviour on bad values (never an id outside [0, vocab)):
//  - probabilities that are negative, NaN or infinite count as 0; logits NaN count as -inf;
//    a row with nothing to sample (all zero, or all -inf / NaN logits) yields token 0 (and an
//    all-zero renormalized row). FLASHSERVE_DEBUG_CHECKS=1 reports such probability rows.
//  - top_k <= 0 or >= vocab: no top-k filter. Per-row top_p: >= 1 or NaN: no filter, <= 0: only the
//    most likely token(s). min_p: <= 0 or NaN: none. temperature <= 0: greedy (argmax; tied maxima
//    are drawn uniformly); NaN: 1. Scalar arguments outside their range are errors instead.
//  - ties at a threshold are kept (top-k may keep more than k tokens when values tie).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "flashserve/core/status.h"
#include "flashserve/tensor.h"

namespace flashserve {

enum class FilterOrder {
  kTopKFirst,  // top-p applies to the top-k tokens, renormalized (vLLM, SGLang)
  kJoint,      // top-p applies to the full distribution; a token must pass both (top-p, then top-k)
};

struct SamplingArgs {
  // Each parameter is a per-row device tensor ([batch], contiguous) or, when undefined, a scalar.
  TensorView top_k;  // int32
  int top_k_value = 0;
  TensorView top_p;               // float32
  float top_p_value = 1.f;        // (0, 1]
  TensorView min_p;               // float32: keep tokens with p >= min_p * max p
  float min_p_value = 0.f;        // [0, 1]
  TensorView temperature;         // float32, logits only: softmax(logits / temperature)
  float temperature_value = 1.f;  // >= 0 (0: greedy)
  FilterOrder order = FilterOrder::kTopKFirst;
  // Philox key and counter offset: int64 scalars on the device ([1] or []), else these values.
  TensorView seed;
  TensorView offset;
  uint64_t seed_value = 0;
  uint64_t offset_value = 0;
};

// One token id per row from softmax(logits / temperature) (float32 / float16 / bfloat16), filtered
// by top-k, top-p and min-p (computed on the float32 probabilities).
Status sample_from_logits(const TensorView& out_ids, const TensorView& logits,
                          const SamplingArgs& args, cudaStream_t stream = nullptr);

// One token id per row from probabilities (float32, need not sum to 1: only ratios matter).
// args.temperature is not used.
Status sample_from_probs(const TensorView& out_ids, const TensorView& probs,
                         const SamplingArgs& args, cudaStream_t stream = nullptr);

// out = probs restricted to the top-k (top_k_renorm_probs: args.top_k) or top-p
// (top_p_renorm_probs: args.top_p) set and divided by its sum; 0 elsewhere. float32 [batch, vocab];
// `out` may be `probs` itself. Other fields of `args` are not used.
Status top_k_renorm_probs(const TensorView& out, const TensorView& probs, const SamplingArgs& args,
                          cudaStream_t stream = nullptr);
Status top_p_renorm_probs(const TensorView& out, const TensorView& probs, const SamplingArgs& args,
                          cudaStream_t stream = nullptr);

// out = logits where the logit is >= the row's k-th largest (args.top_k), -inf elsewhere. Same
// dtype and shape as logits (float32 / float16 / bfloat16); `out` may be `logits` itself.
Status top_k_mask_logits(const TensorView& out, const TensorView& logits, const SamplingArgs& args,
                         cudaStream_t stream = nullptr);

// The k largest elements of each row, exactly: values [batch, k] (input dtype) and indices
// [batch, k] (int32 / int64), in ascending index order; ties with the k-th value are resolved
// to the lowest indices. input float32 / float16 / bfloat16 [batch, vocab]; 1 <= k <= vocab.
Status top_k(const TensorView& values, const TensorView& indices, const TensorView& input, int k,
             cudaStream_t stream = nullptr);

struct ChainSpeculativeArgs {
  TensorView draft_token_ids;   // int32 [batch, n]: tokens proposed by the draft model
  TensorView draft_probs;       // float32 [batch, n, vocab]: the draft distributions they came from
  TensorView target_probs;      // float32 [batch, n + 1, vocab]: the target model's
  TensorView output_token_ids;  // int32 / int64 [batch, n + 1]: accepted drafts, one more token,
                                // then -1
  TensorView accepted_counts;   // int32 [batch]: drafts accepted (tokens emitted = accepted + 1)
  TensorView seed;              // as in SamplingArgs
  TensorView offset;
  uint64_t seed_value = 0;
  uint64_t offset_value = 0;
};

// Verifies the drafts against the target (accept d_i with probability min(1, p_i / q_i) until the
// first rejection, then draw from max(0, p_i - q_i) normalized, or from p_n when all n are
// accepted): the emitted tokens follow the target distribution. Draft ids outside [0, vocab) are
// rejected.
Status chain_speculative_sampling(const ChainSpeculativeArgs& args, cudaStream_t stream = nullptr);

}  // namespace flashserve
