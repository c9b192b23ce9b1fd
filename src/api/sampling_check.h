// Argument validation of the sampling entry points (host only), and the FLASHSERVE_DEBUG_CHECKS
// checks of device values: probability rows, per-row parameters and draft token ids copied to
// the host.
#pragma once

#include <cuda_runtime_api.h>

#include "flashserve/core/status.h"
#include "flashserve/sampling.h"
#include "flashserve/tensor.h"

namespace flashserve {

enum class SamplingInput { kLogits, kProbs };

// sample_from_logits / sample_from_probs.
Status validate_sampling(const char* op, const TensorView& out_ids, const TensorView& input,
                         const SamplingArgs& args, SamplingInput kind);

enum class RenormKind { kTopKProbs, kTopPProbs, kTopKMaskLogits };

// top_k_renorm_probs / top_p_renorm_probs / top_k_mask_logits.
Status validate_renorm(const char* op, const TensorView& out, const TensorView& input,
                       const SamplingArgs& args, RenormKind kind);

Status validate_top_k(const char* op, const TensorView& values, const TensorView& indices,
                      const TensorView& input, int k);

Status validate_speculative(const char* op, const ChainSpeculativeArgs& args);

// FLASHSERVE_DEBUG_CHECKS (skipped while `stream` is being captured): every row of the float32
// probabilities has a positive finite entry and no negative, NaN or infinite one; per-row top_p is
// in (0, 1], min_p in [0, 1], temperature finite and >= 0. Synchronizes `stream`.
Status debug_check_sampling(const char* op, const TensorView* probs, const SamplingArgs& args,
                            cudaStream_t stream);

// FLASHSERVE_DEBUG_CHECKS for chain_speculative_sampling: draft ids in [0, vocab).
Status debug_check_speculative(const char* op, const ChainSpeculativeArgs& args,
                               cudaStream_t stream);

}  // namespace flashserve
