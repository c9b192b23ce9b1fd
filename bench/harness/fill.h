// Device-side random fill for benchmark inputs (host generation of GB-sized inputs is too slow).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "flashserve/tensor.h"

namespace fs_bench {

// Fills every element of `t` (float32 / float16 / bfloat16 / fp8) with normal(mean, stddev) values
// from a counter-based hash of (seed, index): reproducible, no state.
void fill_normal(const flashserve::TensorView& t, uint64_t seed, float mean, float stddev,
                 cudaStream_t stream);

}  // namespace fs_bench
