// Row normalization kernel (RMSNorm, LayerNorm; fused residual add; fp8 output) and its launcher.
#pragma once

#include <cuda_runtime.h>

#include "flashserve/core/dispatch.h"
#include "flashserve/core/reduce.cuh"
#include "flashserve/core/vec.cuh"
#include "flashserve/norm/params.h"
#include "flashserve/norm/tile_policy.h"
#include "flashserve/norm/variants.cuh"

namespace flashserve::norm {

// Launch bounds per configuration, matching choose_norm_tile. Register tiles of 1..4 items run at
// most 256 threads and are held to 64 registers (4 blocks a SM: enough bytes in flight to reach the
// copy bandwidth; 2 blocks at ~100 registers measured 60% for LayerNorm at 8192); 8 items run up
// to 512 threads with 128 registers; streaming 512; warp-per-row 256.
constexpr int norm_max_threads(int items, bool warp_per_row) {
  return warp_per_row ? 256 : (items == 0 || items == 8 ? 512 : 256);
}
constexpr int norm_min_blocks(int items, bool warp_per_row) {
  return !warp_per_row && items >= 1 && items <= 4 ? 4 : 1;
}

template <class Op, class T, class TOut, int kVec, int kItems, bool kWarpRow, bool kResidual,
          bool kPrefetch = false>
__global__ void __launch_bounds__(norm_max_threads(kItems, kWarpRow),
                                  norm_min_blocks(kItems, kWarpRow))
    norm_rows_kernel(const NormParams<T, TOut> p) {
  __shared__ float scratch[32];
  using VecIn = Vec<T, kVec>;
  using VecOut = Vec<TOut, kVec>;

  int64_t row;
  int lane, nthreads;
  if constexpr (kWarpRow) {
    row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    lane = threadIdx.x & 31;
    nthreads = 32;
    if (row >= p.rows) return;  // safe: warp-per-row blocks never synchronize
  } else {
    row = blockIdx.x;
    lane = threadIdx.x;
    nthreads = blockDim.x;
  }
  auto sum = [&](float x) {
    if constexpr (kWarpRow) {
      return warp_sum(x);
    } else {
      return block_sum(x, scratch);
    }
  };

  const T* x = p.input + p.input_rows.offset(row);
  T* res = kResidual ? p.residual + p.residual_rows.offset(row) : nullptr;
  TOut* y = p.out + p.out_rows.offset(row);
  const float out_mul = p.out_scale != nullptr ? 1.f / *p.out_scale : 1.f;
  const int nvec = p.hidden / kVec;
  Op op;

  // Writes one output vector from the normalized inputs `v` and the weight / bias vectors.
  auto write = [&](int idx, const float(&v)[kVec], const VecIn& wv, const VecIn& bv) {
    float w[kVec], b[kVec] = {}, o[kVec];
    wv.to_floats(w);
    if constexpr (Op::kHasBias) bv.to_floats(b);
#pragma unroll
    for (int j = 0; j < kVec; ++j)
      o[j] = op.apply(v[j], w[j] + p.weight_offset, b[j]) * out_mul;
    VecOut::from_floats(o).store(y + idx * kVec);
  };
  auto load_bias = [&](int idx) {
    VecIn bv{};
    if constexpr (Op::kHasBias) {
      if (p.bias != nullptr) bv = VecIn::load(p.bias + idx * kVec);
    }
    return bv;
  };

  if constexpr (kItems > 0) {
    // The row lives in registers between the reduction and the write: read once, written once.
    // kPrefetch (NormTile::prefetch): weight and bias vectors are loaded with the row, in their
    // storage type, instead of after the reduction.
    static_assert(!kPrefetch || kItems <= 2, "prefetch is instantiated for small tiles only");
    constexpr int kPre = kPrefetch ? kItems : 1;
    float v[kItems][kVec];
    VecIn wv[kPre], bv[kPre];
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int idx = lane + i * nthreads;
      if (idx < nvec) {
        VecIn::load(x + idx * kVec).to_floats(v[i]);
        if constexpr (kPrefetch) {
          wv[i] = VecIn::load(p.weight + idx * kVec);
          bv[i] = load_bias(idx);
        }
        if constexpr (kResidual) {
          float r[kVec];
          VecIn::load(res + idx * kVec).to_floats(r);
#pragma unroll
          for (int j = 0; j < kVec; ++j)
            v[i][j] += r[j];
          VecIn::from_floats(v[i]).store(res + idx * kVec);
        }
      }
    }
    op.stats(
        [&](auto&& f) {
#pragma unroll
          for (int i = 0; i < kItems; ++i) {
            if (lane + i * nthreads < nvec) {
#pragma unroll
              for (int j = 0; j < kVec; ++j)
                f(v[i][j]);
            }
          }
        },
        sum, p.hidden, p.eps);
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int idx = lane + i * nthreads;
      if (idx < nvec) {
        if constexpr (kPrefetch) {
          write(idx, v[i], wv[i], bv[i]);
        } else {
          write(idx, v[i], VecIn::load(p.weight + idx * kVec), load_bias(idx));
        }
      }
    }
  } else {
    // Streaming: each pass reads the row again (from L2). A thread only ever re-reads elements it
    // wrote itself, so the residual sum needs no barrier before it is read back.
    const T* src = x;
    if constexpr (kResidual) {
      for (int idx = lane; idx < nvec; idx += nthreads) {
        float a[kVec], r[kVec];
        VecIn::load(x + idx * kVec).to_floats(a);
        VecIn::load(res + idx * kVec).to_floats(r);
#pragma unroll
        for (int j = 0; j < kVec; ++j)
          a[j] += r[j];
        VecIn::from_floats(a).store(res + idx * kVec);
      }
      src = res;
    }
    op.stats(
        [&](auto&& f) {
          for (int idx = lane; idx < nvec; idx += nthreads) {
            float a[kVec];
            VecIn::load(src + idx * kVec).to_floats(a);
#pragma unroll
            for (int j = 0; j < kVec; ++j)
              f(a[j]);
          }
        },
        sum, p.hidden, p.eps);
    for (int idx = lane; idx < nvec; idx += nthreads) {
      float a[kVec];
      VecIn::load(src + idx * kVec).to_floats(a);
      write(idx, a, VecIn::load(p.weight + idx * kVec), load_bias(idx));
    }
  }
}

namespace detail {
inline bool rows_aligned(const void* ptr, const RowIndex& rows, int elem_size, int vec) {
  return vec_aligned(ptr, elem_size, vec) && rows.outer_stride % vec == 0 &&
         rows.inner_stride % vec == 0;
}
}  // namespace detail

// Launches the normalization described by `p` (rows == 0 is a no-op). Picks 16-byte vectors when
// hidden, every pointer and every row stride allow it, else the scalar streaming path.
template <class Op, class T, class TOut, bool kResidual>
cudaError_t launch_norm(const NormParams<T, TOut>& p, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  constexpr int kV = kVec16<T>;
  const bool aligned =
      p.hidden % kV == 0 && detail::rows_aligned(p.input, p.input_rows, sizeof(T), kV) &&
      detail::rows_aligned(p.out, p.out_rows, sizeof(TOut), kV) &&
      (!kResidual || detail::rows_aligned(p.residual, p.residual_rows, sizeof(T), kV)) &&
      vec_aligned(p.weight, sizeof(T), kV) &&
      (p.bias == nullptr || vec_aligned(p.bias, sizeof(T), kV));
  const NormTile tile = choose_norm_tile(p.rows, p.hidden, aligned ? kV : 1);
  const dim3 grid(static_cast<unsigned>(tile.blocks)), block(tile.threads);

  if (!aligned) {
    norm_rows_kernel<Op, T, TOut, 1, 0, false, kResidual><<<grid, block, 0, stream>>>(p);
  } else if (tile.prefetch) {
    dispatch_bool(tile.warp_per_row, [&](auto warp) {
      dispatch_int<1, 2>(tile.items, [&](auto items) {
        norm_rows_kernel<Op, T, TOut, kV, decltype(items)::value, decltype(warp)::value,
                         kResidual, true><<<grid, block, 0, stream>>>(p);
      });
    });
  } else if (tile.warp_per_row) {
    dispatch_int<1, 2, 4>(tile.items, [&](auto items) {
      norm_rows_kernel<Op, T, TOut, kV, decltype(items)::value, true, kResidual>
          <<<grid, block, 0, stream>>>(p);
    });
  } else {
    dispatch_int<0, 1, 2, 4, 8>(tile.items, [&](auto items) {
      norm_rows_kernel<Op, T, TOut, kV, decltype(items)::value, false, kResidual>
          <<<grid, block, 0, stream>>>(p);
    });
  }
  return cudaGetLastError();
}

}  // namespace flashserve::norm
