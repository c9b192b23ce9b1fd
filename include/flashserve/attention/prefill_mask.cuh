// Which kv blocks a query tile sees, which tiles need an element mask, and the element mask and
// logit transforms of the variants (causal, sliding window, soft-cap, ALiBi, custom bit mask).
// The plain and causal kernels instantiate this with kGeneral = false: only the kv-length edge
// and the causal diagonal are masked and no transform is applied.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "flashserve/attention/prefill_params.h"

namespace flashserve::attention {

template <PrefillKind kKind>
struct PrefillMask {
  static constexpr bool kGeneral = kKind == PrefillKind::kGeneral;
  int q_len = 0, kv_len = 0, offset = 0;  // offset: kv position of query row 0 is row + offset
  bool causal = false;
  int window_left = -1, window_right = -1;
  const uint8_t* mask = nullptr;  // custom mask bits of this request (bit offset below)
  int64_t mask_bit0 = 0;

  __device__ PrefillMask(const PrefillVariant& v, int request, int q_len_, int kv_len_)
      : q_len(q_len_), kv_len(kv_len_), offset(kv_len_ - q_len_) {
    causal = kKind == PrefillKind::kCausal || (kGeneral && v.causal);
    if constexpr (kGeneral) {
      window_left = v.window_left;
      window_right = causal ? -1 : v.window_right;
      if (v.custom_mask != nullptr) {
        mask = v.custom_mask;
        mask_bit0 = v.mask_offsets[request];
      }
    }
  }

  // kv blocks [n_min, n_max) visible to query rows [m_block * kBlockM, ...).
  template <int kBlockM, int kBlockN>
  __device__ void block_range(int m_block, int& n_min, int& n_max) const {
    const int row_first = m_block * kBlockM;
    const int row_last = min(row_first + kBlockM, q_len) - 1;
    int col_end = kv_len;  // exclusive
    if (causal) col_end = min(col_end, row_last + offset + 1);
    if (window_right >= 0) col_end = min(col_end, row_last + offset + window_right + 1);
    int col_begin = 0;
    if (window_left >= 0) col_begin = max(0, row_first + offset - window_left);
    n_min = col_begin / kBlockN;
    n_max = col_end <= 0 ? 0 : (col_end + kBlockN - 1) / kBlockN;
    if (n_max < n_min) n_max = n_min;
  }

  // Whether some element of tile (m_block, n_block) is masked: only those tiles pay the check.
  template <int kBlockM, int kBlockN>
  __device__ bool tile_needs_mask(int m_block, int n_block) const {
    const int col_first = n_block * kBlockN, col_last = col_first + kBlockN - 1;
    const int row_first = m_block * kBlockM, row_last = row_first + kBlockM - 1;
    bool need = col_last >= kv_len;
    if (causal) need |= col_last > row_first + offset;
    if constexpr (kGeneral) {
      if (window_left >= 0) need |= col_first < row_last + offset - window_left;
      if (window_right >= 0) need |= col_last > row_first + offset + window_right;
      need |= mask != nullptr;
    }
    return need;
  }

  // Query row `row` (within the request) sees kv position `col`.
  __device__ bool visible(int row, int col) const {
    bool ok = col < kv_len;
    if (causal) ok &= col <= row + offset;
    if constexpr (kGeneral) {
      if (window_left >= 0) ok &= col >= row + offset - window_left;
      if (window_right >= 0) ok &= col <= row + offset + window_right;
      if (mask != nullptr && ok && row < q_len) {
        const int64_t bit = mask_bit0 + static_cast<int64_t>(row) * kv_len + col;
        ok = (__ldg(mask + (bit >> 3)) >> (bit & 7)) & 1;
      }
    }
    return ok;
  }
};

// Logit transforms of the general kernel, applied to the raw q.k before masking. When active,
// logits leave in natural units (scaled), so the softmax then uses log2(e) as its scale.
struct PrefillLogits {
  float sm_scale = 1.f, soft_cap = 0.f, alibi_slope = 0.f;
  bool active = false;
  __device__ float operator()(float s, int row, int col, int offset) const {
    float x = s * sm_scale;
    if (soft_cap > 0.f) x = soft_cap * tanhf(x / soft_cap);
    return x + alibi_slope * static_cast<float>(col - (row + offset));
  }
};

}  // namespace flashserve::attention
