// Parameters of the rotary-embedding kernel.
#pragma once

#include <cstdint>

namespace flashserve::rope {

// The kernel holds rotary_dim / 2 frequencies per launch (host-computed, see frequencies.h).
constexpr int kMaxRotaryDim = 512;

// Element offsets of a [tokens, heads, head_dim] view whose last dim is contiguous.
struct HeadStrides {
  int64_t token = 0;
  int64_t head = 0;

#ifdef __CUDACC__
  __host__ __device__
#endif
      int64_t
      offset(int64_t token_index, int head_index) const {
    return token_index * token + static_cast<int64_t>(head_index) * head;
  }
};

template <class T, class TPos>
struct RopeParams {
  const T* q = nullptr;  // [tokens, q_heads, head_dim]
  HeadStrides q_strides;
  T* q_out = nullptr;  // == q for in place (same strides); else disjoint from q and k
  HeadStrides q_out_strides;
  const T* k = nullptr;  // [tokens, kv_heads, head_dim]
  HeadStrides k_strides;
  T* k_out = nullptr;  // == k for in place (same strides); else disjoint from q and k
  HeadStrides k_out_strides;
  const TPos* positions = nullptr;  // [tokens], contiguous
  int64_t tokens = 0;               // at most 2^31 - 1
  int q_heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  int rotary_dim = 0;       // even, <= head_dim and <= kMaxRotaryDim
  bool interleave = false;  // false: NeoX (i, i + rotary_dim / 2); true: GPT-J (2i, 2i + 1)
};

// What determines the frequencies of apply_rope (Hugging Face's definition, float32).
struct FrequencyConfig {
  int rotary_dim = 0;
  float theta = 10000.f;
  bool llama31 = false;
  float factor = 8.f;
  float low_freq_factor = 1.f;
  float high_freq_factor = 4.f;
  float original_max_position = 8192.f;
};

}  // namespace flashserve::rope
