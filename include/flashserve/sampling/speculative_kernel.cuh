// Chain speculative verification: for each row, draft token d_i (proposed from draft distribution
// q_i) is accepted with probability min(1, p_i(d_i) / q_i(d_i)) against the target distribution
// p_i, in order, until the first rejection; at a rejection at position i the next token is drawn
// from the residual max(0, p_i - q_i) (normalized), and when all n drafts are accepted a bonus
// token is drawn from p_n. The emitted tokens then follow the target distribution exactly
// (Leviathan et al. 2023, Chen et al. 2023).
//
// One cluster per row. Thread 0 of every CTA makes the accept decisions (a few scalar reads; all
// CTAs reach the same result from the same Philox draws), then the cluster draws the next token by
// inverse CDF over the residual (or p_n), streamed from global memory: at most two rows of the
// vocabulary are read per request. Masses are fixed point with 2^-40 resolution (probabilities
// are clamped to [0, 1]). If the residual has no mass (p_i == q_i up to rounding), the token is
// drawn from p_i; a target row with no mass at all yields token 0.
//
// Philox draws of row r: accept test i uses draw 2i, the token drawn at position i draw 2i + 1.
#pragma once

#include <cuda_runtime.h>

#include "flashserve/sampling/inverse_cdf.cuh"
#include "flashserve/sampling/launch.cuh"
#include "flashserve/sampling/params.h"
#include "flashserve/sampling/philox.cuh"
#include "flashserve/sampling/row_keys.cuh"

namespace flashserve::sampling {

struct SpeculativeShared {
  InverseCdfShared cdf;
  uint64_t slot[2];
  int pos;
};

__device__ __forceinline__ float clamp_prob(float x) {
  return x > 0.f ? fminf(x, 1.f) : 0.f;  // NaN: 0
}

// Keys of max(0, p - q) (or of p when q is null) for this CTA's slice, as float bits.
struct ResidualKeys {
  const float* p;
  const float* q;
  int len;
  __device__ __forceinline__ void operator()(int v, uint32_t (&k)[4]) const {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int e = 4 * v + j;
      float r = 0.f;
      if (e < len) {
        r = clamp_prob(p[e]);
        if (q != nullptr) r = fmaxf(r - clamp_prob(q[e]), 0.f);
      }
      k[j] = __float_as_uint(r);
    }
  }
};

template <class TId>
__global__ void __launch_bounds__(kSamplingThreads)
    chain_speculative_kernel(const SpeculativeParams p) {
  __shared__ SpeculativeShared sh;
  cg::cluster_group cluster = cg::this_cluster();
  const int64_t row = blockIdx.x / cluster.num_blocks();
  const ChunkLayout L = make_chunk_layout(p.vocab, p.chunk, cluster.block_rank());
  const uint64_t seed = seed_value(p.seed), offset = offset_value(p.seed);
  const uint32_t row32 = static_cast<uint32_t>(row);
  const int n = p.num_draft;
  if (threadIdx.x == 0) {
    int pos = n;
    for (int i = 0; i < n; ++i) {
      const int32_t d = p.draft_ids[row * p.draft_ids_stride + i];
      bool accept = false;
      if (d >= 0 && d < p.vocab) {
        const float pt = p.target_probs[row * p.target_stride_row + i * p.target_stride_pos + d];
        const float qd = p.draft_probs[row * p.draft_stride_row + i * p.draft_stride_pos + d];
        const float u = uniform_from_bits(philox_draw(seed, offset, row32, 2u * i).v[0]);
        accept = u * qd < pt;  // P = min(1, p / q); NaN rejects
      }
      if (!accept) {
        pos = i;
        break;
      }
    }
    sh.pos = pos;
  }
  __syncthreads();
  const int pos = sh.pos;
  const auto write_id = [&](int j, int64_t id) {
    static_cast<TId*>(p.out_ids)[row * p.out_stride + j] = static_cast<TId>(id);
  };
  if (cluster.block_rank() == 0) {
    for (int j = threadIdx.x; j <= n; j += blockDim.x) {
      if (j != pos) write_id(j, j < pos ? p.draft_ids[row * p.draft_ids_stride + j] : -1);
    }
    if (threadIdx.x == 0) p.accepted[row] = pos;
  }
  const float* target = p.target_probs + row * p.target_stride_row + pos * p.target_stride_pos;
  const float* draft =
      pos < n ? p.draft_probs + row * p.draft_stride_row + pos * p.draft_stride_pos : nullptr;
  const uint64_t u = philox_u64(seed, offset, row32, 2u * pos + 1u);
  const auto weight = [](uint32_t k) { return key_mass_abs(k); };
  const auto emit = [&](int64_t id) { write_id(pos, id); };
  const ResidualKeys residual{target + L.begin, draft != nullptr ? draft + L.begin : nullptr,
                              L.len};
  uint64_t total = cluster_inverse_cdf(L, residual, weight, u, sh.cdf, &sh.slot[0], emit);
  if (total == 0 && draft != nullptr) {
    const ResidualKeys plain{target + L.begin, nullptr, L.len};
    total = cluster_inverse_cdf(L, plain, weight, u, sh.cdf, &sh.slot[1], emit);
  }
  if (total == 0 && cluster.block_rank() == 0 && threadIdx.x == 0) emit(0);
  cluster.sync();  // no CTA leaves while another may still read its shared memory
}

// Streams the rows (nothing is kept in shared memory): the cluster only splits the vocabulary.
inline cudaError_t plan_speculative(int64_t rows, int64_t vocab, const DeviceLimits& dev,
                                    SamplingTile* tile) {
  const cudaError_t err = plan_tile(chain_speculative_kernel<int32_t>, rows, vocab, dev, tile);
  tile->resident = false;
  tile->smem_bytes = 0;
  return err;
}

inline cudaError_t launch_speculative(const SpeculativeParams& p, const SamplingTile& tile,
                                      const DeviceLimits& dev, cudaStream_t stream) {
  if (p.out_int64) {
    return launch_clusters(chain_speculative_kernel<int64_t>, p, p.rows, tile, dev, stream);
  }
  return launch_clusters(chain_speculative_kernel<int32_t>, p, p.rows, tile, dev, stream);
}

}  // namespace flashserve::sampling
