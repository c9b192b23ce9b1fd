// Parameters of the sampling kernels: plain structs of raw pointers, sizes and strides.
#pragma once

#include <cstdint>

namespace flashserve::sampling {

// A per-row parameter: a device array [rows] when `per_row` is set, else `value` for every row.
template <class T>
struct RowParam {
  const T* per_row = nullptr;
  T value{};
#ifdef __CUDACC__
  __host__ __device__
#endif
      T
      get(int64_t row) const {
    return per_row != nullptr ? per_row[row] : value;
  }
};

// Philox key and counter offset. Device values (read by the kernel, so that a captured CUDA graph
// draws new numbers once the caller bumps *offset_ptr) or, when the pointers are null, host values
// baked into the launch.
struct SeedParams {
  const int64_t* seed_ptr = nullptr;
  const int64_t* offset_ptr = nullptr;
  uint64_t seed = 0;
  uint64_t offset = 0;
};

// Sampling and renormalization from logits (kLogits) or probabilities, with top-k / top-p / min-p.
template <class T>
struct FilterParams {
  const T* input = nullptr;  // [rows, vocab], last dim contiguous
  int64_t input_stride = 0;
  int64_t rows = 0;
  int vocab = 0;
  int chunk = 0;                // elements of a row per CTA of the cluster (multiple of 8)
  bool vec_loads = false;       // every CTA's slice of every row is 16-byte aligned
  RowParam<int32_t> top_k;      // <= 0 or >= vocab: no top-k filter
  RowParam<float> top_p;        // >= 1 or NaN: none; <= 0: only the most likely token(s)
  RowParam<float> min_p;        // <= 0 or NaN: none
  RowParam<float> temperature;  // logits only; <= 0: greedy; NaN: 1
  bool top_k_first = true;  // top-p applies to the top-k set renormalized (else to the full row)
  SeedParams seed;
  // Sampling: one token id per row.
  void* out_ids = nullptr;
  bool ids_int64 = false;
  // Renormalization: out[r, :] = the kept probabilities divided by their sum, 0 elsewhere.
  float* renorm_out = nullptr;
  int64_t renorm_stride = 0;
  // Each CTA, after reading its slice of row r, prefetches its slice of row r + d into L2: that
  // row's cluster, which starts about when this one ends, then reads from L2 while the memory
  // streams the rows after it. 0: d = the clusters resident at once (launch_filter sets it);
  // > 0: d = prefetch_rows; < 0: no prefetch.
  int prefetch_rows = 0;
  // Streaming with a resume launch (launch_filter): the streaming kernel decides only what its
  // first candidate and histograms decide and leaves every other row to the resident kernel,
  // marking it in out_ids (store_pending); `resume`: the resident kernel takes only the marked
  // rows.
  bool defer = false;
  bool resume = false;
};

// Exact top-k of each row (values + indices, ascending index order), or the top-k mask of logits.
template <class T>
struct TopKParams {
  const T* input = nullptr;  // [rows, vocab]
  int64_t input_stride = 0;
  int64_t rows = 0;
  int vocab = 0;
  int chunk = 0;
  bool vec_loads = false;
  RowParam<int32_t> top_k;
  // top_k: values [rows, k] (input dtype) and indices [rows, k].
  T* values = nullptr;
  int64_t values_stride = 0;
  void* indices = nullptr;
  int64_t indices_stride = 0;
  bool indices_int64 = false;
  // top_k_mask_logits: masked [rows, vocab] = input where kept, -inf elsewhere.
  T* masked = nullptr;
  int64_t masked_stride = 0;
};

// Chain speculative verification of `num_draft` draft tokens per row.
struct SpeculativeParams {
  const int32_t* draft_ids = nullptr;  // [rows, num_draft]
  int64_t draft_ids_stride = 0;
  const float* draft_probs = nullptr;  // [rows, num_draft, vocab]
  int64_t draft_stride_row = 0, draft_stride_pos = 0;
  const float* target_probs = nullptr;  // [rows, num_draft + 1, vocab]
  int64_t target_stride_row = 0, target_stride_pos = 0;
  void* out_ids = nullptr;  // [rows, num_draft + 1]: accepted drafts, the next token, then -1
  int64_t out_stride = 0;
  bool out_int64 = false;
  int32_t* accepted = nullptr;  // [rows]: number of draft tokens accepted
  int64_t rows = 0;
  int num_draft = 0;
  int vocab = 0;
  int chunk = 0;
  SeedParams seed;
};

}  // namespace flashserve::sampling
