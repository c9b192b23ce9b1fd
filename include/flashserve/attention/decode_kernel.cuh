// Paged-KV decode attention: the mainloop kernel and its launcher. See tile_policy.h for the CTA
// layout and src/plan/decode_plan.h for the work lists it reads from the workspace.
//
// Per work item (<= 8 query rows of one kv head, kv positions [kv_begin, kv_end)):
//  1. q rows -> shared memory as fp32, pre-scaled (sm_scale * k_scale * log2 e): q stays out of
//     registers so that 8 rows x head_dim 256 still fit; every lane reads it as a broadcast.
//  2. Each warp streams its tiles through a private 2-stage cp.async pipeline (16-byte copies,
//     zero-filled past the range or on a bad page id). QK: the lanes split the tile's tokens
//     (kLanesPerToken lanes of 128 bytes per token, combined by shuffles), K rows XOR-swizzled in
//     16-byte chunks so the 8 lanes of a shared-memory phase hit distinct banks. Online softmax in
//     exp2 space per row. PV: the lanes split head_dim; p goes through shared memory (a broadcast
//     float4 per 4 tokens) instead of one shuffle per token and row.
//     With Tile::kUseMma (bf16 / fp16 K/V, head_dim 64 / 128; tile_policy.h) QK and PV run on
//     tensor cores instead (decode_item_mma: mma.sync m16n8k16, q rows padded to 16, P reused from
//     the S accumulators in registers, K by ldmatrix and V by ldmatrix.trans from swizzled tiles).
//     fp8 K/V at head_dim 128 (Tile::kFp8Mma) runs the same body in q's type: the tile stays fp8
//     in shared memory, lanes read it with 16-byte loads (k of QK and n of PV permuted so that a
//     lane's bytes are contiguous) and convert pairs into B fragments; k_scale is in q_scale and
//     v_scale is applied to the output, as on the CUDA-core body.
//  3. The 4 warps' (m, l, acc) are combined through shared memory (aliasing the pipeline) and
//     written as the final output + LSE, or as an fp32 partial + log2-LSE; the unit's last split
//     to finish merges the unit's partials into the output (finish_item, merge_unit).
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>
#include <type_traits>

#include "flashserve/attention/params.h"
#include "flashserve/attention/tile_policy.h"
#include "flashserve/attention/variants.cuh"
#include "flashserve/core/cp_async.cuh"
#include "flashserve/core/mma.cuh"
#include "flashserve/core/types.cuh"
#include "flashserve/core/vec.cuh"

namespace flashserve::attention {

// Phase timestamps for tuning (bench/tools/decode_trace.cu): with -DFLASHSERVE_DECODE_TRACE,
// thread 0 of every CTA writes the globaltimer at each FS_DTRACE point of its last item.
#ifdef FLASHSERVE_DECODE_TRACE
__device__ unsigned long long g_decode_trace[4096][16];
__device__ __forceinline__ void decode_trace_point(int i) {
  if (threadIdx.x == 0 && blockIdx.x < 4096) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    g_decode_trace[blockIdx.x][i] = t;
    if (i == 0) {
      unsigned smid;
      asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
      g_decode_trace[blockIdx.x][12] = smid;  // not a time: the SM
    }
  }
}
// The CTA's last item (not a time).
#define FS_DTRACE_ITEM(i) \
  if (threadIdx.x == 0 && blockIdx.x < 4096) g_decode_trace[blockIdx.x][13] = (i)
#define FS_DTRACE(i) decode_trace_point(i)
#else
#define FS_DTRACE(i)
#define FS_DTRACE_ITEM(i)
#endif

template <class Tile>
struct DecodeSmem {
  static constexpr int kRows = kDecodeMaxRows;
  // q: [part][row][elem] with 4 floats of padding per part, so the lanes of different parts (which
  // read different addresses of the same bank otherwise) do not conflict.
  static constexpr int kQPartStride = kRows * Tile::kPartElems + 4;
  static constexpr int kQFloats = Tile::kLanesPerToken * kQPartStride;
  static constexpr int kPFloats = Tile::kWarps * kRows * Tile::kTileTokens;  // p per warp
  // Combine buffers alias the pipeline once every warp has drained it.
  static constexpr int kCombineFloats = Tile::kWarps * kRows * (Tile::kHeadDim + 2);
  static_assert(kCombineFloats * 4 <= Tile::kPipeBytes, "combine buffer must fit the pipeline");
  static constexpr int kBytes = Tile::kPipeBytes + (kQFloats + kPFloats) * 4;
  // The occupancy the plan's split target assumes (tile_policy.h): 228 KiB per SM, 1 KiB reserved
  // per CTA.
  static_assert(Tile::kCtasPerSm * (kBytes + 1024) <= 228 * 1024,
                "Tile::kCtasPerSm CTAs must fit an SM's shared memory");
};

template <class Tile>
constexpr int decode_smem_bytes() {
  return DecodeSmem<Tile>::kBytes;
}

// The page id of a lane's token of one tile (lane < the tile's tokens), looked up one tile ahead
// of its copies: the load is issued here and only consumed by load_tile, so its latency hides
// behind the current tile's wait and compute instead of stalling the warp before every tile's
// copies.
struct PageRef {
  int32_t page = 0;  // the raw table entry (range-checked in load_tile)
  int32_t slot = 0;  // the token's slot in its page
  bool in_range = false;
};

template <class Tile, class TQ, class TKV>
__device__ __forceinline__ PageRef page_ref(const DecodeParams<TQ, TKV>& p, const DecodeWorkItem& w,
                                            int base, int lane) {
  PageRef r;
  const int pos = base + lane;
  if (lane < Tile::kTileTokens && pos < w.kv_end) {
    const int page_local = pos / p.page_size;
    const int64_t idx = static_cast<int64_t>(w.page_begin) + page_local;
    if (idx < w.page_end && idx < p.num_indices) {
      r.page = __ldg(p.indices + idx);
      r.slot = pos - page_local * p.page_size;
      r.in_range = true;
    }
  }
  return r;
}

// Issues one tile's K and V copies (this warp's share of the stage; `ref` is this lane's token
// from page_ref) and commits them as a group. Each copy instruction moves whole rows (consecutive
// lanes take consecutive 16-byte chunks of a token), so the token addresses are shuffled from
// their lanes. Tokens past the range or on a bad page id are zero-filled. (Lanes that copy only
// their own token's chunks, with no shuffles, made each instruction touch 16 rows: b64 x 2048
// fell from 2.84 to 2.50 TB/s on the H100.)
template <class Tile, class TQ, class TKV>
__device__ __forceinline__ void load_tile(const DecodeParams<TQ, TKV>& p, uint8_t* stage,
                                          const PageRef& ref, int kv_head, int lane) {
  const bool ok = ref.in_range && ref.page >= 0 && ref.page < p.num_pages;
  int64_t k_addr = 0, v_addr = 0;
  if (ok) {
    k_addr = ref.page * p.k_strides.page + ref.slot * p.k_strides.slot + kv_head * p.k_strides.head;
    v_addr = ref.page * p.v_strides.page + ref.slot * p.v_strides.slot + kv_head * p.v_strides.head;
  }
  uint8_t* ks = stage;
  uint8_t* vs = stage + Tile::kTileBytes;
  constexpr int kCopies = Tile::kTileTokens * Tile::kRowChunks / 32;
  constexpr int kElemsPerChunk = 16 / static_cast<int>(sizeof(TKV));
#pragma unroll
  for (int i = 0; i < kCopies; ++i) {
    const int f = i * 32 + lane;
    const int tok = f / Tile::kRowChunks;
    const int c = f % Tile::kRowChunks;
    const int64_t koff = __shfl_sync(0xffffffffu, k_addr, tok);
    const int64_t voff = __shfl_sync(0xffffffffu, v_addr, tok);
    const bool valid = __shfl_sync(0xffffffffu, ok, tok);
    const int part = c / Tile::kPartChunks;
    const int cc = c % Tile::kPartChunks;
    const int phys = part * Tile::kPartChunks + (cc ^ (tok & (Tile::kPartChunks - 1)));
    const TKV* ksrc = p.k_cache + (valid ? koff + c * kElemsPerChunk : 0);
    const TKV* vsrc = p.v_cache + (valid ? voff + c * kElemsPerChunk : 0);
    cp_async_16(ks + tok * Tile::kRowBytes + phys * 16, ksrc, valid);
    cp_async_16(vs + tok * Tile::kRowBytes + (Tile::kUseMma ? phys : c) * 16, vsrc, valid);
  }
  cp_async_commit();
}

// A warp's walk over its tiles w, w + kWarps, ... of the item's range: the two-stage cp.async
// pipeline with the page ids of the tile after next already in flight. start() issues tile 0
// (and looks up tile 1); next(k) issues tile k + 1 (and looks up tile k + 2).
template <class Tile, class TQ, class TKV>
struct TileStream {
  static_assert(Tile::kStages == 2, "the page-id lookahead is written for two stages");
  const DecodeParams<TQ, TKV>& p;
  const DecodeWorkItem& w;
  uint8_t* pipe;
  int warp, lane, my_tiles;
  PageRef ahead;

  __device__ __forceinline__ TileStream(const DecodeParams<TQ, TKV>& p_, const DecodeWorkItem& w_,
                                        uint8_t* smem, int warp_, int lane_)
      : p(p_),
        w(w_),
        pipe(smem + warp_ * Tile::kStages * Tile::kStageBytes),
        warp(warp_),
        lane(lane_) {
    const int num_tiles = (w.kv_end - w.kv_begin + Tile::kTileTokens - 1) / Tile::kTileTokens;
    my_tiles = num_tiles > warp ? (num_tiles - warp + Tile::kWarps - 1) / Tile::kWarps : 0;
  }
  __device__ __forceinline__ int base(int k) const {
    return w.kv_begin + (warp + k * Tile::kWarps) * Tile::kTileTokens;
  }
  __device__ __forceinline__ const uint8_t* stage(int k) const {
    return pipe + (k % Tile::kStages) * Tile::kStageBytes;
  }
  // Tile t's copies from its looked-up page ids, or an empty group past this warp's tiles.
  __device__ __forceinline__ void issue(int t, const PageRef& ref) {
    if (t < my_tiles) {
      load_tile<Tile>(p, pipe + (t % Tile::kStages) * Tile::kStageBytes, ref, w.kv_head, lane);
    } else {
      cp_async_commit();
    }
  }
  // Looks up tiles 0 and 1 (both page-id loads in flight together) and issues tile 0.
  __device__ __forceinline__ void start() {
    const PageRef first = page_ref<Tile>(p, w, base(0), lane);
    ahead = page_ref<Tile>(p, w, base(1), lane);
    issue(0, first);
  }
  // Issues tile k + 1 (looked up one step ago) and looks up tile k + 2.
  __device__ __forceinline__ void next(int k) {
    issue(k + 1, ahead);
    ahead = page_ref<Tile>(p, w, base(k + 2), lane);
  }
};

template <int N, class T>
__device__ __forceinline__ void load_floats(const uint8_t* src, float (&out)[N]) {
  const Vec<T, N> v = *reinterpret_cast<const Vec<T, N>*>(src);
#pragma unroll
  for (int i = 0; i < N; ++i)
    out[i] = to_float(v.v[i]);
}

__device__ __forceinline__ uint32_t uint4_word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// Index of q element (row r, dim d) in the shared-memory q buffer (fp32, [part][row][elem]).
template <class Tile>
__device__ __forceinline__ int q_index(int r, int d) {
  return (d / Tile::kPartElems) * DecodeSmem<Tile>::kQPartStride + r * Tile::kPartElems +
         d % Tile::kPartElems;
}

// Where item row r (r = query token j of the request * group + q head of the group) lives in
// q / out / lse: the query token and the q head.
struct QRow {
  int64_t tok, head;
};
template <class TQ, class TKV>
__device__ __forceinline__ QRow q_row(const DecodeParams<TQ, TKV>& p, const DecodeWorkItem& w,
                                      int r) {
  const int row = w.row_begin + r;
  const int qr = row / p.group;
  return {w.q_begin + qr, static_cast<int64_t>(w.kv_head) * p.group + (row - qr * p.group)};
}

// Whether q and out rows allow 16-byte vectors (the API does not require it; checked once per
// item, warp-uniform).
template <class TQ, class TKV>
__device__ __forceinline__ bool qo_vec_aligned(const DecodeParams<TQ, TKV>& p) {
  constexpr int kV = kVec16<TQ>;
  return (reinterpret_cast<uintptr_t>(p.q) | reinterpret_cast<uintptr_t>(p.out)) % 16 == 0 &&
         (p.q_stride_token | p.q_stride_head | p.out_stride_token | p.out_stride_head) % kV == 0;
}

// The item's q rows in two steps, so that their loads overlap the first page-id lookups:
// fetch_q loads them into registers (one 16-byte load per thread and chunk of kVec16 dims; scalar
// loads if q is not so aligned; rows past the item's are zero), store_q writes them, times
// `scale`, into shared memory as fp32 and synchronizes the CTA.
template <class Tile, class TQ>
struct QFetch {
  static constexpr int kV = kVec16<TQ>;
  static constexpr int kChunks = Tile::kHeadDim / kV;
  static constexpr int kPer = (kDecodeMaxRows * kChunks + Tile::kThreads - 1) / Tile::kThreads;
  static_assert(Tile::kHeadDim % kV == 0 && Tile::kPartElems % kV == 0, "a chunk lies in a part");
  Vec<TQ, kV> v[kPer];
};

template <class Tile, class TQ, class TKV>
__device__ __forceinline__ QFetch<Tile, TQ> fetch_q(const DecodeParams<TQ, TKV>& p,
                                                    const DecodeWorkItem& w) {
  using F = QFetch<Tile, TQ>;
  const int nr = w.row_end - w.row_begin;
  const bool vec = qo_vec_aligned(p);
  F f;
#pragma unroll
  for (int k = 0; k < F::kPer; ++k) {
    const int i = threadIdx.x + k * Tile::kThreads;
    const int r = i / F::kChunks, d0 = (i % F::kChunks) * F::kV;
#pragma unroll
    for (int e = 0; e < F::kV; ++e)
      f.v[k].v[e] = from_float<TQ>(0.f);
    if (r < nr) {
      const QRow q = q_row(p, w, r);
      const TQ* src = p.q + q.tok * p.q_stride_token + q.head * p.q_stride_head + d0;
      if (vec) {
        f.v[k] = Vec<TQ, F::kV>::load(src);
      } else {
#pragma unroll
        for (int e = 0; e < F::kV; ++e)
          f.v[k].v[e] = src[e];
      }
    }
  }
  return f;
}

template <class Tile, class TQ>
__device__ __forceinline__ void store_q(const QFetch<Tile, TQ>& f, float* q_s, float scale) {
  using F = QFetch<Tile, TQ>;
#pragma unroll
  for (int k = 0; k < F::kPer; ++k) {
    const int i = threadIdx.x + k * Tile::kThreads;
    if (i < kDecodeMaxRows * F::kChunks) {
      const int r = i / F::kChunks, d0 = (i % F::kChunks) * F::kV;
      float* dst = q_s + q_index<Tile>(r, d0);
#pragma unroll
      for (int e = 0; e < F::kV; e += 4)
        *reinterpret_cast<float4*>(dst + e) =
            make_float4(to_float(f.v[k].v[e]) * scale, to_float(f.v[k].v[e + 1]) * scale,
                        to_float(f.v[k].v[e + 2]) * scale, to_float(f.v[k].v[e + 3]) * scale);
    }
  }
  __syncthreads();
}

// Step 3 after every warp wrote its (m, l, acc) rows to the combine buffers at the start of shared
// memory ([warps][rows][D] acc, then [warps][rows] m and l): combines the warps and writes the
// final output + LSE, or the fp32 partial + log2-LSE.
template <class Tile, class TQ, class TKV>
__device__ __forceinline__ void combine_and_store(const DecodeParams<TQ, TKV>& p,
                                                  const DecodeWorkItem& w, uint8_t* smem) {
  constexpr int kRows = kDecodeMaxRows;
  constexpr int D = Tile::kHeadDim;
  constexpr int kV = 8;  // dims per thread and step: two float4 of each warp's accumulator
  constexpr int kChunks = D / kV;
  const int nr = w.row_end - w.row_begin;
  const float* c_acc = reinterpret_cast<const float*>(smem);
  const float* c_m = c_acc + Tile::kWarps * kRows * D;
  const float* c_l = c_m + Tile::kWarps * kRows;
  const bool vec = qo_vec_aligned(p);
  __syncthreads();
  for (int i = threadIdx.x; i < nr * kChunks; i += Tile::kThreads) {
    const int r = i / kChunks, d0 = (i % kChunks) * kV;
    float mm = -INFINITY;
#pragma unroll
    for (int x = 0; x < Tile::kWarps; ++x)
      mm = fmaxf(mm, c_m[x * kRows + r]);
    float lt = 0.f, o[kV];
#pragma unroll
    for (int e = 0; e < kV; ++e)
      o[e] = 0.f;
    if (mm != -INFINITY) {
#pragma unroll
      for (int x = 0; x < Tile::kWarps; ++x) {
        const float f = exp2f(c_m[x * kRows + r] - mm);
        lt += c_l[x * kRows + r] * f;
        const float4* a = reinterpret_cast<const float4*>(c_acc + (x * kRows + r) * D + d0);
#pragma unroll
        for (int h = 0; h < kV / 4; ++h) {
          const float4 v = a[h];
          o[4 * h] += v.x * f;
          o[4 * h + 1] += v.y * f;
          o[4 * h + 2] += v.z * f;
          o[4 * h + 3] += v.w * f;
        }
      }
    }
    if (w.partial >= 0) {
      const int64_t slot = static_cast<int64_t>(w.partial) * kRows + r;
      const float inv = lt > 0.f ? p.v_scale / lt : 0.f;
      float4* dst = reinterpret_cast<float4*>(p.partial_out + slot * D + d0);
#pragma unroll
      for (int h = 0; h < kV / 4; ++h)
        dst[h] =
            make_float4(o[4 * h] * inv, o[4 * h + 1] * inv, o[4 * h + 2] * inv, o[4 * h + 3] * inv);
      if (d0 == 0) p.partial_lse[slot] = lt > 0.f ? mm + log2f(lt) : -INFINITY;
    } else {
      const QRow q = q_row(p, w, r);
      const int64_t qtok = q.tok, head = q.head;
      const RowFinal f =
          finalize_row(mm, lt, p.variant.sinks != nullptr ? p.variant.sinks + head : nullptr);
      TQ* dst = p.out + qtok * p.out_stride_token + head * p.out_stride_head + d0;
      const float sc = f.scale * p.v_scale;
      if (vec) {
#pragma unroll
        for (int h = 0; h < kV; h += kVec16<TQ>) {
          Vec<TQ, kVec16<TQ>> y;
#pragma unroll
          for (int e = 0; e < kVec16<TQ>; ++e)
            y.v[e] = from_float<TQ>(o[h + e] * sc);
          y.store(dst + h);
        }
      } else {
#pragma unroll
        for (int e = 0; e < kV; ++e)
          dst[e] = from_float<TQ>(o[e] * sc);
      }
      if (d0 == 0 && p.lse != nullptr)
        p.lse[qtok * p.lse_stride_token + head * p.lse_stride_head] = f.lse;
    }
  }
}

// The dynamic schedule's ticket for the CTA's next item: thread 0 takes it from the workspace
// counter as soon as the item's tiles are done (take(), in both bodies before the warps' combine),
// so the atomic's latency hides under the combine, the store and a split item's merge count, and
// the CTA still asks only when it is nearly free (an item claimed at the start of the previous one
// would fix the assignment of the first two waves at launch).
struct WorkClaim {
  int32_t* counter = nullptr;  // nullptr: static striding
  int ticket = 0;
  __device__ __forceinline__ void take() {
    if (counter != nullptr && threadIdx.x == 0) ticket = atomicAdd(counter, 1);
  }
};

template <class Tile, int kR, class TQ, class TKV>
__device__ void decode_item(const DecodeParams<TQ, TKV>& p, const DecodeWorkItem& w, uint8_t* smem,
                            WorkClaim& claim) {
  using Smem = DecodeSmem<Tile>;
  constexpr int kRows = kDecodeMaxRows;  // row stride of the shared-memory and partial layouts
  static_assert(kR >= 1 && kR <= kRows, "kR: rows computed (the item's rows must be <= kR)");
  constexpr int D = Tile::kHeadDim;
  constexpr int T = Tile::kTileTokens;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  float* q_s = reinterpret_cast<float*>(smem + Tile::kPipeBytes);
  float* p_s = q_s + Smem::kQFloats + warp * kRows * T;
  const int nr = w.row_end - w.row_begin;

  // 1. q rows, scaled, into shared memory (rows past nr are zero). Their loads go out first, then
  //    the first tile's page-id lookups and copies (the pipelines do not alias q_s).
  const QFetch<Tile, TQ> qf = fetch_q<Tile>(p, w);
  TileStream<Tile, TQ, TKV> tiles(p, w, smem, warp, lane);
  tiles.start();
  store_q<Tile>(qf, q_s, p.q_scale);

  int qpos[kR];
#pragma unroll
  for (int r = 0; r < kR; ++r)
    qpos[r] = r < nr ? w.kv_len - w.num_q + (w.row_begin + r) / p.group : -1;
  const LogitTransform transform{p.variant.logits_soft_cap};
  const DecodeMask mask{p.variant.window_left};

  float m[kR], l[kR], acc[kR][Tile::kDimsPerLane];
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.f;
#pragma unroll
    for (int i = 0; i < Tile::kDimsPerLane; ++i)
      acc[r][i] = 0.f;
  }

  // 2. This warp's tiles: w, w + kWarps, ... of the range.
  const int tok = lane % T, part = lane / T;
  for (int k = 0; k < tiles.my_tiles; ++k) {
    cp_async_wait<Tile::kStages - 2>();
    __syncwarp();
    tiles.next(k);
    const uint8_t* ks = tiles.stage(k);
    const uint8_t* vs = ks + Tile::kTileBytes;
    const int pos = tiles.base(k) + tok;

    // QK over this lane's part of its token's row.
    constexpr int E = 16 / static_cast<int>(sizeof(TKV));
    float s[kR];
#pragma unroll
    for (int r = 0; r < kR; ++r)
      s[r] = 0.f;
    const float* qp = q_s + part * Smem::kQPartStride;
#pragma unroll
    for (int cc = 0; cc < Tile::kPartChunks; ++cc) {
      float kf[E];
      load_floats<E, TKV>(ks + tok * Tile::kRowBytes + part * Tile::kPartBytes +
                              ((cc ^ (tok & (Tile::kPartChunks - 1))) * 16),
                          kf);
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        const float4* q4 = reinterpret_cast<const float4*>(qp + r * Tile::kPartElems + cc * E);
#pragma unroll
        for (int e = 0; e < E / 4; ++e) {
          const float4 qv = q4[e];
          s[r] +=
              qv.x * kf[4 * e] + qv.y * kf[4 * e + 1] + qv.z * kf[4 * e + 2] + qv.w * kf[4 * e + 3];
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kR; ++r) {
#pragma unroll
      for (int off = T; off < 32; off <<= 1)
        s[r] += __shfl_xor_sync(0xffffffffu, s[r], off);
    }

    // Online softmax (exp2 space), one row at a time.
    const bool in_range = pos < w.kv_end;
#pragma unroll
    for (int r = 0; r < kR; ++r) {
      const float x = in_range && mask.visible(pos, qpos[r]) ? transform(s[r]) : -INFINITY;
      float mx = x;
#pragma unroll
      for (int off = 16; off >= 1; off >>= 1)
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float m_new = fmaxf(m[r], mx);
      float pr = 0.f, scale = 1.f;
      if (m_new != -INFINITY) {
        scale = exp2f(m[r] - m_new);
        pr = exp2f(x - m_new);
      }
      m[r] = m_new;
      l[r] = l[r] * scale + (part == 0 ? pr : 0.f);
#pragma unroll
      for (int i = 0; i < Tile::kDimsPerLane; ++i)
        acc[r][i] *= scale;
      if (part == 0) p_s[r * T + tok] = pr;
    }
    __syncwarp();

    // PV: lane owns dims [lane * kDimsPerLane, ...).
#pragma unroll
    for (int t0 = 0; t0 < T; t0 += 4) {
      float4 pv[kR];
#pragma unroll
      for (int r = 0; r < kR; ++r)
        pv[r] = *reinterpret_cast<const float4*>(p_s + r * T + t0);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float vf[Tile::kDimsPerLane];
        load_floats<Tile::kDimsPerLane, TKV>(
            vs + (t0 + j) * Tile::kRowBytes + lane * Tile::kDimsPerLane * sizeof(TKV), vf);
#pragma unroll
        for (int r = 0; r < kR; ++r) {
          const float pj = j == 0 ? pv[r].x : j == 1 ? pv[r].y : j == 2 ? pv[r].z : pv[r].w;
#pragma unroll
          for (int i = 0; i < Tile::kDimsPerLane; ++i)
            acc[r][i] += pj * vf[i];
        }
      }
    }
    __syncwarp();  // the stage and p_s are rewritten next iteration
  }
  cp_async_wait<0>();
#pragma unroll
  for (int r = 0; r < kR; ++r) {
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1)
      l[r] += __shfl_xor_sync(0xffffffffu, l[r], off);
  }

  // 3. Combine the warps through shared memory (aliasing the pipelines).
  claim.take();
  __syncthreads();
  float* c_acc = reinterpret_cast<float*>(smem);  // [warps][rows][D]
  float* c_m = c_acc + Tile::kWarps * kRows * D;  // [warps][rows]
  float* c_l = c_m + Tile::kWarps * kRows;        // [warps][rows]
#pragma unroll
  for (int r = 0; r < kR; ++r) {
#pragma unroll
    for (int i = 0; i < Tile::kDimsPerLane; ++i)
      c_acc[(warp * kRows + r) * D + lane * Tile::kDimsPerLane + i] = acc[r][i];
    if (lane == 0) {
      c_m[warp * kRows + r] = m[r];
      c_l[warp * kRows + r] = l[r];
    }
  }
  combine_and_store<Tile>(p, w, smem);
}

// The tensor-core body (Tile::kUseMma: 16-bit K/V, head_dim 64 / 128), for items of any row count
// <= kDecodeMaxRows. Per warp and tile of T tokens, with g = lane / 4 and t = lane % 4 (fragment
// layouts in core/mma.cuh):
//  - S = Q K^T: A = q (16 rows: the item's <= 8 rows, rows 8..15 zero registers), loaded once from
//    q_s; B = K from the swizzled K tile by ldmatrix.x4 (rows = tokens, so the non-transposed
//    8 x 8 matrices are the "col" B layout). S n-tile j: s[j][0..1] = (row g, tokens 8j + 2t +
//    {0,1}), s[j][2..3] = padding rows.
//  - Variants and masks per (row g, token) element, online softmax per row: the 4 lanes of a quad
//    share row g (max by shuffles xor 1, 2; l kept per lane and summed over the quad at the end).
//  - P = exp2(S - m) repacked in registers as the A operand of PV: tokens [16k, 16k + 16) are
//    a[0] = n-tile 2k pair, a[2] = n-tile 2k+1 pair (rows g), a[1] = a[3] = 0 (rows 8..15).
//  - O += P V: B = V tile by ldmatrix.x4.trans (rows = tokens). O n-tile j: o[j][0..1] =
//    (row g, dims 8j + 2t + {0,1}); o[j][2..3] (padding rows) stay 0.
template <class Tile, class TQ, class TKV>
__device__ void decode_item_mma(const DecodeParams<TQ, TKV>& p, const DecodeWorkItem& w,
                                uint8_t* smem, WorkClaim& claim) {
  static_assert(Tile::kUseMma, "decode_item_mma needs an mma tile (tile_policy.h)");
  // fp8 tiles (Tile::kFp8Mma) run the mma in q's type; 16-bit ones in the cache type.
  constexpr bool kF8 = Tile::kFp8Mma;
  static_assert(kF8 ? sizeof(TKV) == 1 && Tile::kRowBytes == 128 && Tile::kTileTokens == 32
                    : sizeof(TKV) == 2,
                "the mma inputs are the 16-bit cache type, or fp8 rows of 128 bytes");
  using TM = std::conditional_t<kF8, TQ, TKV>;
  static_assert(Tile::kPartChunks == 8, "the K/V swizzle spans 8 chunks of 16 bytes");
  constexpr int kRows = kDecodeMaxRows;
  static_assert(kRows == 8, "the fragment rows g = lane / 4 are the item's 8 rows");
  constexpr int D = Tile::kHeadDim;
  constexpr int T = Tile::kTileTokens;
  constexpr int kSTiles = T / 8;   // n-tiles of S
  constexpr int kQSteps = D / 16;  // k-steps of QK
  constexpr int kPSteps = T / 16;  // k-steps of PV
  constexpr int kOTiles = D / 8;   // n-tiles of O
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane / 4, t = lane % 4;
  float* q_s = reinterpret_cast<float*>(smem + Tile::kPipeBytes);
  const int nr = w.row_end - w.row_begin;

  // The tiles of this warp: w, w + kWarps, ... of the range. kDecodeEarlyPrefetch: the first
  // tiles' copies overlap the q load (the pipelines do not alias q_s, and the previous item's
  // combine finished before the kernel's __syncthreads).
  const QFetch<Tile, TQ> qf = fetch_q<Tile>(p, w);  // q loads in flight with the page-id lookups
  TileStream<Tile, TQ, TKV> tiles(p, w, smem, warp, lane);
  if constexpr (kDecodeEarlyPrefetch) tiles.start();
  FS_DTRACE(1);

  // 1. q rows into shared memory, then into A fragments of the mma type. q_scale is applied to the
  //    fp32 scores instead: q scaled and rounded back to 16 bits would put one rounding error per
  //    dim into every score of the row (a bias of ~1e-3 in the LSE at long kv). fp8 tiles permute
  //    the k index of QK (any permutation shared by q and K gives the same dot products): at k-step
  //    ks, lane t's k indices {2t, 2t+1} / {2t+8, 2t+9} are dims 32t + 4ks + {0, 1} / {2, 3}, so a
  //    lane's K bytes for all of QK are one 32-byte run of its token's row (two 16-byte loads).
  store_q<Tile>(qf, q_s, 1.f);
  FS_DTRACE(2);
  uint32_t qa[kQSteps][4];
#pragma unroll
  for (int ks = 0; ks < kQSteps; ++ks) {
    const int d_lo = kF8 ? 32 * t + 4 * ks : ks * 16 + 2 * t;
    const int d_hi = kF8 ? d_lo + 2 : d_lo + 8;
    const float2 lo = *reinterpret_cast<const float2*>(q_s + q_index<Tile>(g, d_lo));
    const float2 hi = *reinterpret_cast<const float2*>(q_s + q_index<Tile>(g, d_hi));
    qa[ks][0] = pack2<TM>(lo.x, lo.y);
    qa[ks][1] = 0u;
    qa[ks][2] = pack2<TM>(hi.x, hi.y);
    qa[ks][3] = 0u;
  }

  const int qpos = g < nr ? w.kv_len - w.num_q + (w.row_begin + g) / p.group : -1;
  const LogitTransform transform{p.variant.logits_soft_cap};
  const DecodeMask mask{p.variant.window_left};
  const float q_scale = p.q_scale;

  float m = -INFINITY, l = 0.f;
  float o[kOTiles][4];
#pragma unroll
  for (int j = 0; j < kOTiles; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      o[j][e] = 0.f;

  // ldmatrix row addresses. Matrix i = lane / 8 of an x4, row lane % 8; every 8-row block starts at
  // a multiple of 8 tokens, so the swizzle term (token & 7) is lane & 7.
  //  K (QK k-step ks, tokens 16 np ..): matrix i = (token half i / 2, dim half i % 2).
  //  V (PV k-step kk, dims 16 dp ..):   matrix i = (token half i % 2, dim half i / 2).
  const int mi = lane / 8, r8 = lane & 7;
  const int k_row = (mi / 2) * 8 + r8;  // token within a 16-token block
  const int k_x = (mi & 1) ^ r8;        // chunk (2 ks + (mi & 1)) % 8 swizzled = (2 ks % 8) ^ k_x
  const int v_row = (mi & 1) * 8 + r8;
  const int v_x = (mi >> 1) ^ r8;

  // 2. The pipeline. kDecodeEarlyPrefetch: tile k + 1 (into the stage tile k - 1 left, drained by
  //    the __syncwarp that ended step k - 1) is issued before waiting for tile k, so two tiles are
  //    in flight while the warp waits; otherwise the wait comes first.
  if constexpr (!kDecodeEarlyPrefetch) tiles.start();
  for (int k = 0; k < tiles.my_tiles; ++k) {
    if constexpr (kDecodeEarlyPrefetch) {
      tiles.next(k);
      cp_async_wait<Tile::kStages - 1>();
    } else {
      cp_async_wait<Tile::kStages - 2>();
    }
    __syncwarp();
    if constexpr (!kDecodeEarlyPrefetch) tiles.next(k);
    if (k == 0) FS_DTRACE(3);
    const uint8_t* ks_tile = tiles.stage(k);
    const uint8_t* vs_tile = ks_tile + Tile::kTileBytes;

    // S = Q K^T.
    float s[kSTiles][4];
#pragma unroll
    for (int j = 0; j < kSTiles; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        s[j][e] = 0.f;
    if constexpr (kF8) {
      // n-tile j: lane (g, t) holds token 8j + g, dims 32t .. 32t + 31 = logical chunks 2t, 2t + 1
      // (swizzled by token & 7 = g: the 8 lanes of a 16-byte phase hit 8 distinct chunks).
#pragma unroll
      for (int j = 0; j < kSTiles; ++j) {
        const uint8_t* krow = ks_tile + (8 * j + g) * Tile::kRowBytes;
        const uint4 k0 = *reinterpret_cast<const uint4*>(krow + ((2 * t) ^ g) * 16);
        const uint4 k1 = *reinterpret_cast<const uint4*>(krow + ((2 * t + 1) ^ g) * 16);
#pragma unroll
        for (int ks = 0; ks < kQSteps; ++ks) {
          const uint4& kw = ks < 4 ? k0 : k1;
          const uint32_t word = uint4_word(kw, ks % 4);
          uint32_t lo, hi;
          fp8x4_to_half2x2<TKV>(word, lo, hi);
          mma_16816<TM>(s[j], qa[ks], half2_to<TM>(lo), half2_to<TM>(hi));
        }
      }
    } else {
#pragma unroll
      for (int ks = 0; ks < kQSteps; ++ks) {
        // Logical 16-byte chunk 2 ks + (mi & 1) of the row: part (2 ks) / 8, in-part (2 ks) % 8.
        const int part = (2 * ks) / 8;
        const int chunk = part * 8 + (((2 * ks) % 8) ^ k_x);
#pragma unroll
        for (int np = 0; np < kSTiles / 2; ++np) {
          uint32_t b[4];
          ldmatrix_x4(b, ks_tile + (np * 16 + k_row) * Tile::kRowBytes + chunk * 16);
          mma_16816<TM>(s[2 * np], qa[ks], b[0], b[1]);
          mma_16816<TM>(s[2 * np + 1], qa[ks], b[2], b[3]);
        }
      }
    }

    // Variants, masks and the online softmax of row g (exp2 space).
    const int pos0 = tiles.base(k) + 2 * t;
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < kSTiles; ++j) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int pos = pos0 + 8 * j + e;
        const float x =
            pos < w.kv_end && mask.visible(pos, qpos) ? transform(s[j][e] * q_scale) : -INFINITY;
        s[j][e] = x;
        mx = fmaxf(mx, x);
      }
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m, mx);
    float scale = 1.f, psum = 0.f;
    if (m_new != -INFINITY) {
      scale = exp2f(m - m_new);
#pragma unroll
      for (int j = 0; j < kSTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          s[j][e] = exp2f(s[j][e] - m_new);
          psum += s[j][e];
        }
      }
    } else {
#pragma unroll
      for (int j = 0; j < kSTiles; ++j)
        s[j][0] = s[j][1] = 0.f;
    }
    m = m_new;
    l = l * scale + psum;
#pragma unroll
    for (int j = 0; j < kOTiles; ++j) {
      o[j][0] *= scale;
      o[j][1] *= scale;
    }

    // O += P V.
#pragma unroll
    for (int kk = 0; kk < kPSteps; ++kk) {
      const uint32_t pa[4] = {pack2<TM>(s[2 * kk][0], s[2 * kk][1]), 0u,
                              pack2<TM>(s[2 * kk + 1][0], s[2 * kk + 1][1]), 0u};
      if constexpr (kF8) {
        // fp8: O's n index is permuted instead: n-tile j, column n = dim 16n + j. Lane (g, t)
        // reads logical chunk g (dims 16g .. 16g + 15) of tokens tb + {0, 1, 8, 9} (its B rows
        // 2t, 2t+1, 2t+8, 2t+9; token & 7 = 2t + {0, 1}: conflict-free like K) and pairs the
        // tokens' bytes of one dim with byte_perm before converting.
        const int tb = kk * 16 + 2 * t;
        const uint8_t* v0 = vs_tile + tb * Tile::kRowBytes;
        const uint4 w0 = *reinterpret_cast<const uint4*>(v0 + (g ^ (2 * t)) * 16);
        const uint4 w1 =
            *reinterpret_cast<const uint4*>(v0 + Tile::kRowBytes + (g ^ (2 * t + 1)) * 16);
        const uint4 w8 =
            *reinterpret_cast<const uint4*>(v0 + 8 * Tile::kRowBytes + (g ^ (2 * t)) * 16);
        const uint4 w9 =
            *reinterpret_cast<const uint4*>(v0 + 9 * Tile::kRowBytes + (g ^ (2 * t + 1)) * 16);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const uint32_t a0 = uint4_word(w0, i), a1 = uint4_word(w1, i);
          const uint32_t a8 = uint4_word(w8, i), a9 = uint4_word(w9, i);
          uint32_t b0[4], b1[4];  // dims 16g + 4i + {0..3}: rows (tb, tb+1) and (tb+8, tb+9)
          fp8x4_to_half2x2<TKV>(__byte_perm(a0, a1, 0x5140), b0[0], b0[1]);
          fp8x4_to_half2x2<TKV>(__byte_perm(a0, a1, 0x7362), b0[2], b0[3]);
          fp8x4_to_half2x2<TKV>(__byte_perm(a8, a9, 0x5140), b1[0], b1[1]);
          fp8x4_to_half2x2<TKV>(__byte_perm(a8, a9, 0x7362), b1[2], b1[3]);
#pragma unroll
          for (int b = 0; b < 4; ++b)
            mma_16816<TM>(o[4 * i + b], pa, half2_to<TM>(b0[b]), half2_to<TM>(b1[b]));
        }
      } else {
        const uint8_t* vrow = vs_tile + (kk * 16 + v_row) * Tile::kRowBytes;
#pragma unroll
        for (int dp = 0; dp < kOTiles / 2; ++dp) {
          // Logical chunk 2 dp + (mi >> 1).
          const int part = (2 * dp) / 8;
          const int chunk = part * 8 + (((2 * dp) % 8) ^ v_x);
          uint32_t b[4];
          ldmatrix_x4_trans(b, vrow + chunk * 16);
          mma_16816<TM>(o[2 * dp], pa, b[0], b[1]);
          mma_16816<TM>(o[2 * dp + 1], pa, b[2], b[3]);
        }
      }
    }
    __syncwarp();  // the stage is rewritten next iteration
  }
  cp_async_wait<0>();
  FS_DTRACE(4);
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);

  // 3. Combine the warps through shared memory (aliasing the pipelines).
  claim.take();
  __syncthreads();
  float* c_acc = reinterpret_cast<float*>(smem);  // [warps][rows][D]
  float* c_m = c_acc + Tile::kWarps * kRows * D;  // [warps][rows]
  float* c_l = c_m + Tile::kWarps * kRows;        // [warps][rows]
  if constexpr (kF8) {
    // o[j][e] is dim 16 (2t + e) + j: the lane's 32 dims 32t .. 32t + 31 are contiguous.
    float* my_acc = c_acc + (warp * kRows + g) * D + 32 * t;
#pragma unroll
    for (int e = 0; e < 2; ++e)
#pragma unroll
      for (int j = 0; j < kOTiles; j += 4)
        *reinterpret_cast<float4*>(my_acc + 16 * e + j) =
            make_float4(o[j][e], o[j + 1][e], o[j + 2][e], o[j + 3][e]);
  } else {
    float* my_acc = c_acc + (warp * kRows + g) * D + 2 * t;
#pragma unroll
    for (int j = 0; j < kOTiles; ++j)
      *reinterpret_cast<float2*>(my_acc + 8 * j) = make_float2(o[j][0], o[j][1]);
  }
  if (t == 0) {
    c_m[warp * kRows + g] = m;
    c_l[warp * kRows + g] = l;
  }
  combine_and_store<Tile>(p, w, smem);
}

// The split-KV merge, run by the last item of a unit (or of a group of its splits) to finish (see
// finish_item): combines `count` partials from slot `first` (fp32 outputs normalized per split,
// log2-LSEs), o = sum_s 2^(lse_s - m) o_s / sum_s 2^(lse_s - m), into the output and the LSE, or
// into partial slot `dest` (a group's partial, same format) when dest >= 0. Only the item's rows of
// each partial are read, with 16-byte L2 loads straight into registers, kDecodeMergeLoads of them
// in flight per thread and round (tile_policy.h). Staging the partials in shared memory was slower:
// bulk copies (TMA) took ~2 us to land the first 32 KB, cp.async ~15 GB/s.
// A column is one float4 of one row; with C columns and T threads:
//  - C <= T: the partials are cut into G = T / C contiguous groups, one thread per (column,
//    group); the groups meet in shared memory and are combined in group order;
//  - C > T: thread t takes columns t, t + T, ..., their loads interleaved in the same rounds.
// Each thread keeps a running max (rescaling its sums when it grows), and its rounds are of equal
// size. The order of every sum depends only on the unit's shape (rows, partials), so the output
// bits do not depend on which CTA merges or on the rest of the batch.
constexpr int kMergeLoads = kDecodeMergeLoads;

struct MergeAcc {
  float m, l;
  float4 acc;
};

__device__ __forceinline__ void merge_acc_init(MergeAcc& a) {
  a.m = -INFINITY;
  a.l = 0.f;
  a.acc = make_float4(0.f, 0.f, 0.f, 0.f);
}

// Folds b into a (a running max and rescaled sums; an empty side, m = -inf, adds nothing).
__device__ __forceinline__ void merge_acc_add(MergeAcc& a, const MergeAcc& b) {
  const float mc = fmaxf(a.m, b.m);
  if (mc == -INFINITY) return;
  const float fa = exp2f(a.m - mc), fb = exp2f(b.m - mc);
  a.l = a.l * fa + b.l * fb;
  a.acc.x = a.acc.x * fa + b.acc.x * fb;
  a.acc.y = a.acc.y * fa + b.acc.y * fb;
  a.acc.z = a.acc.z * fa + b.acc.z * fb;
  a.acc.w = a.acc.w * fa + b.acc.w * fb;
  a.m = mc;
}

// Partials [s_begin, s_end) of kC columns (col[c], of row row[c]; skipped unless on[c]), in equal
// rounds of at most kPer partials per column.
template <int kC, int kPer, int kSlotVecs>
__device__ __forceinline__ void merge_columns(const float4* g_out, const float* g_lse,
                                              const int (&col)[kC], const int (&row)[kC],
                                              const bool (&on)[kC], int s_begin, int s_end,
                                              MergeAcc (&a)[kC]) {
#pragma unroll
  for (int c = 0; c < kC; ++c)
    merge_acc_init(a[c]);
  const int len = s_end - s_begin;
  if (len <= 0) return;
  const int rounds = (len + kPer - 1) / kPer;
  const int per = (len + rounds - 1) / rounds;
  for (int s0 = s_begin; s0 < s_end; s0 += per) {
    float4 x[kC][kPer];
    float l[kC][kPer];
#pragma unroll
    for (int c = 0; c < kC; ++c) {
#pragma unroll
      for (int u = 0; u < kPer; ++u) {
        const int s = s0 + u;
        if (on[c] && u < per && s < s_end) {
          x[c][u] = __ldcg(g_out + static_cast<int64_t>(s) * kSlotVecs + col[c]);
          l[c][u] = __ldcg(g_lse + s * kDecodeMaxRows + row[c]);
        } else {
          x[c][u] = make_float4(0.f, 0.f, 0.f, 0.f);
          l[c][u] = -INFINITY;
        }
      }
    }
#pragma unroll
    for (int c = 0; c < kC; ++c) {
      float mc = a[c].m;
#pragma unroll
      for (int u = 0; u < kPer; ++u)
        mc = fmaxf(mc, l[c][u]);
      if (mc == -INFINITY) continue;
      const float scale = exp2f(a[c].m - mc);  // 0 while m is still -inf
      a[c].l *= scale;
      a[c].acc.x *= scale;
      a[c].acc.y *= scale;
      a[c].acc.z *= scale;
      a[c].acc.w *= scale;
      a[c].m = mc;
#pragma unroll
      for (int u = 0; u < kPer; ++u) {
        const float wgt = exp2f(l[c][u] - mc);
        a[c].l += wgt;
        a[c].acc.x += wgt * x[c][u].x;
        a[c].acc.y += wgt * x[c][u].y;
        a[c].acc.z += wgt * x[c][u].z;
        a[c].acc.w += wgt * x[c][u].w;
      }
    }
  }
}

// Writes one merged column (row r, float4 v of the row) to the output, and the row's LSE.
template <class TQ, class TKV>
__device__ __forceinline__ void store_merged(const DecodeParams<TQ, TKV>& p,
                                             const DecodeWorkItem& w, int r, int v,
                                             const MergeAcc& a) {
  const QRow q = q_row(p, w, r);
  const RowFinal f =
      finalize_row(a.m, a.l, p.variant.sinks != nullptr ? p.variant.sinks + q.head : nullptr);
  TQ* out = p.out + q.tok * p.out_stride_token + q.head * p.out_stride_head + 4 * v;
  out[0] = from_float<TQ>(a.acc.x * f.scale);
  out[1] = from_float<TQ>(a.acc.y * f.scale);
  out[2] = from_float<TQ>(a.acc.z * f.scale);
  out[3] = from_float<TQ>(a.acc.w * f.scale);
  if (v == 0 && p.lse != nullptr)
    p.lse[q.tok * p.lse_stride_token + q.head * p.lse_stride_head] = f.lse;
}

// Writes one merged column as a partial (normalized, log2-LSE) into slot `dest`.
template <int D, class TQ, class TKV>
__device__ __forceinline__ void store_group_partial(const DecodeParams<TQ, TKV>& p, int dest, int r,
                                                    int v, const MergeAcc& a) {
  const int64_t slot = static_cast<int64_t>(dest) * kDecodeMaxRows + r;
  const float inv = a.l > 0.f ? 1.f / a.l : 0.f;
  reinterpret_cast<float4*>(p.partial_out + slot * D)[v] =
      make_float4(a.acc.x * inv, a.acc.y * inv, a.acc.z * inv, a.acc.w * inv);
  if (v == 0) p.partial_lse[slot] = a.l > 0.f ? a.m + log2f(a.l) : -INFINITY;
}

template <class Tile, class TQ, class TKV>
__device__ void merge_unit(const DecodeParams<TQ, TKV>& p, const DecodeWorkItem& w, uint8_t* smem,
                           int first, int count, int dest) {
  constexpr int D = Tile::kHeadDim;
  constexpr int T = Tile::kThreads;
  constexpr int kVecsPerRow = D / 4;
  constexpr int kSlotVecs = kDecodeMaxRows * kVecsPerRow;  // one partial in the workspace
  // Columns per thread at most (decode_merge_rounds, which the plan's merge rules use, assumes
  // these for T = Tile::kThreads threads).
  constexpr int kCols = kSlotVecs >= T ? kSlotVecs / T : 1;
  static_assert(kSlotVecs % T == 0 || T % kSlotVecs == 0, "whole columns per thread");
  static_assert(kMergeLoads % kCols == 0, "equal loads per column");
  static_assert(T * (sizeof(float4) + 2 * sizeof(float)) <= Tile::kPipeBytes,
                "the groups' partial sums fit the pipeline buffers");
  const int t = threadIdx.x;
  const int n = count;
  const int C = (w.row_end - w.row_begin) * kVecsPerRow;
  const float4* g_out =
      reinterpret_cast<const float4*>(p.partial_out) + static_cast<int64_t>(first) * kSlotVecs;
  const float* g_lse = p.partial_lse + static_cast<int64_t>(first) * kDecodeMaxRows;
  auto store = [&](int r, int v, const MergeAcc& a) {
    if (dest >= 0) {
      store_group_partial<D>(p, dest, r, v, a);
    } else {
      store_merged(p, w, r, v, a);
    }
  };
  FS_DTRACE(8);
  if (C <= T) {
    const int G = min(T / C, n);
    const int col = t % C, g = t / C;
    MergeAcc a[1];
    {
      const int cols[1] = {col}, rows[1] = {col / kVecsPerRow};
      const bool on[1] = {g < G};
      merge_columns<1, kMergeLoads, kSlotVecs>(g_out, g_lse, cols, rows, on, g * n / G,
                                               (g + 1) * n / G, a);
    }
    FS_DTRACE(9);
    if (G > 1) {
      float4* s_acc = reinterpret_cast<float4*>(smem);
      float* s_m = reinterpret_cast<float*>(s_acc + T);
      float* s_l = s_m + T;
      if (g < G) {
        s_acc[t] = a[0].acc;
        s_m[t] = a[0].m;
        s_l[t] = a[0].l;
      }
      __syncthreads();
      if (g == 0) {
        for (int h = 1; h < G; ++h) {
          const int e = h * C + col;
          const MergeAcc b{s_m[e], s_l[e], s_acc[e]};
          merge_acc_add(a[0], b);
        }
      }
    }
    if (g == 0) store(col / kVecsPerRow, col % kVecsPerRow, a[0]);
  } else if constexpr (kCols > 1) {
    int cols[kCols], rows[kCols];
    bool on[kCols];
#pragma unroll
    for (int j = 0; j < kCols; ++j) {
      cols[j] = t + j * T;
      rows[j] = cols[j] / kVecsPerRow;
      on[j] = cols[j] < C;
    }
    MergeAcc a[kCols];
    merge_columns<kCols, kMergeLoads / kCols, kSlotVecs>(g_out, g_lse, cols, rows, on, 0, n, a);
    FS_DTRACE(9);
#pragma unroll
    for (int j = 0; j < kCols; ++j)
      if (on[j]) store(rows[j], cols[j] % kVecsPerRow, a[j]);
  }
  FS_DTRACE(10);
}

// Counts one arrival in *counter after this CTA's stores; true, in every thread, for the
// `total`-th arrival, which then sees every earlier arrival's stores. The barrier orders every
// thread's stores before thread 0's atomic, whose release (cumulative over what the barrier
// ordered before it) publishes them and whose acquire orders the merge's loads after the other
// CTAs' releases (the loads bypass L1: ld.global.cg; the barrier after orders them after the
// atomic). One acq_rel atomic instead of __threadfence() in every thread before and after: those
// are sequentially consistent fences (MEMBAR.SC), this is one MEMBAR.ALL.
__device__ __forceinline__ bool arrive_last(int32_t* counter, int total) {
  __shared__ int last;
  __syncthreads();
  if (threadIdx.x == 0) {
    int before;
    asm volatile("atom.add.acq_rel.gpu.s32 %0, [%1], 1;" : "=r"(before) : "l"(counter) : "memory");
    last = before == total - 1;
  }
  __syncthreads();
  return last;
}

// After an item's partial is stored: the unit's last item to finish (whichever CTA that is)
// merges the unit's partials and resets its counter to 0 for the next run. With a two-level merge
// (w.merge_group > 0) the last item of each group of splits first merges the group into a group
// partial, and the last group then merges the groups.
template <class Tile, class TQ, class TKV>
__device__ __forceinline__ void finish_item(const DecodeParams<TQ, TKV>& p, const DecodeWorkItem& w,
                                            uint8_t* smem) {
  const int n = w.num_partials, k = w.merge_group;
  int first = w.partial_begin, count = n;  // what the unit's final merge combines
  if (k > 0) {
    const int g = (w.partial - w.partial_begin) / k;
    const int in_group = min(k, n - g * k);
    int32_t* gc = p.group_counters + w.partial_begin + g;
    if (!arrive_last(gc, in_group)) return;
    merge_unit<Tile>(p, w, smem, w.partial_begin + g * k, in_group, w.partial_begin + n + g);
    if (threadIdx.x == 0) *gc = 0;
    first = w.partial_begin + n;
    count = (n + k - 1) / k;
  }
  if (!arrive_last(p.merge_counters + w.merge, count)) return;
  FS_DTRACE(7);
  merge_unit<Tile>(p, w, smem, first, count, -1);
  FS_DTRACE(11);
  if (threadIdx.x == 0) p.merge_counters[w.merge] = 0;
}

// One 64-byte work item in four 16-byte loads.
__device__ __forceinline__ DecodeWorkItem load_work_item(const DecodeWorkItem* src) {
  static_assert(sizeof(DecodeWorkItem) == 4 * sizeof(uint4), "four 16-byte words");
  DecodeWorkItem w;
  const uint4* s = reinterpret_cast<const uint4*>(src);
  uint4* d = reinterpret_cast<uint4*>(&w);
#pragma unroll
  for (int i = 0; i < 4; ++i)
    d[i] = __ldg(s + i);
  return w;
}

// Persistent over the work list: the grid is sized from the plan's capacity (at most its work
// capacity, so the first item's slot always exists and is loaded together with the count), the
// item count is read from the workspace (a graph replayed after a re-plan sees the new list).
// CTA c runs item c first; when the list is longer than the grid, the later items go to the CTAs
// in the order they finish (WorkClaim: ticket k is item gridDim.x + k). Every item a CTA runs costs
// one ticket, so a launch takes exactly num_work tickets and the one that draws num_work - 1 resets
// the counter for the next launch (a captured graph replays with it at 0; the plan writes 0).
// Outputs do not depend on which CTA runs an item (a unit's partials merge in split order).
// mma tiles run every item on the tensor-core body (its cost does not depend on the row count).
// Otherwise items of at most kDecodeSmallRows rows (GQA group <= 4 with one query token:
// Llama-3-8B, Qwen2.5-7B) run a body that computes only those rows (half the QK/PV FMAs and q loads
// of the 8-row body); the choice is per item and warp-uniform, so any plan runs on the same kernel.
// decode_kernel (4-warp tiles) and decode_kernel_wide (DecodeTile<..., kDecodeWideWarps>, one CTA
// per SM; tile_policy.h) run this body; two kernel names so that a run-time-compiled image holds
// one instantiation of each (runtime/kernel_loader.cc finds a template's kernel by name).
template <class Tile, class TQ, class TKV>
__device__ __forceinline__ void decode_kernel_body(const DecodeParams<TQ, TKV>& p) {
  extern __shared__ __align__(128) uint8_t smem[];
  __shared__ int next_item;
  FS_DTRACE(0);
  const int num_work = __ldg(&p.counts->num_work);
  const int grid = static_cast<int>(gridDim.x);
  WorkClaim claim;
  claim.counter = num_work > grid ? p.work_counter : nullptr;
  int i = blockIdx.x;
  DecodeWorkItem w = load_work_item(p.work + i);
  while (i < num_work) {
    FS_DTRACE_ITEM(i);
    if constexpr (Tile::kUseMma) {
      decode_item_mma<Tile>(p, w, smem, claim);
    } else if (w.row_end - w.row_begin <= kDecodeSmallRows) {
      decode_item<Tile, kDecodeSmallRows>(p, w, smem, claim);
    } else {
      decode_item<Tile, kDecodeMaxRows>(p, w, smem, claim);
    }
    FS_DTRACE(5);
    if (w.partial >= 0) finish_item<Tile>(p, w, smem);
    FS_DTRACE(6);
    if (threadIdx.x == 0) {
      int next = i + grid;
      if (claim.counter != nullptr) {
        if (claim.ticket == num_work - 1) atomicExch(claim.counter, 0);
        next = grid + claim.ticket;
      }
      next_item = next;
    }
    __syncthreads();  // publishes next_item; the next item rewrites q_s and the pipelines
    i = next_item;
    if (i < num_work) w = load_work_item(p.work + i);
  }
}

template <class Tile, class TQ, class TKV>
__global__ void __launch_bounds__(Tile::kThreads, Tile::kCtasPerSm)
    decode_kernel(const __grid_constant__ DecodeParams<TQ, TKV> p) {
  static_assert(Tile::kWarps == 4, "decode_kernel_wide runs the wide tile");
  decode_kernel_body<Tile>(p);
}

template <class Tile, class TQ, class TKV>
__global__ void __launch_bounds__(Tile::kThreads, Tile::kCtasPerSm)
    decode_kernel_wide(const __grid_constant__ DecodeParams<TQ, TKV> p) {
  static_assert(Tile::kWarps == kDecodeWideWarps, "decode_kernel runs the 4-warp tile");
  decode_kernel_body<Tile>(p);
}

// The tile of a (head_dim, TKV) specialization, 4-warp or wide.
template <int kHeadDim, class TKV, bool kWide>
using DecodeTileOf =
    DecodeTile<kHeadDim, static_cast<int>(sizeof(TKV)), kWide ? kDecodeWideWarps : 4>;

template <class Tile, class TQ, class TKV>
constexpr auto decode_kernel_fn() {
  if constexpr (Tile::kWarps == 4) {
    return &decode_kernel<Tile, TQ, TKV>;
  } else {
    return &decode_kernel_wide<Tile, TQ, TKV>;
  }
}

// Blocks the kernel can keep resident per SM (for sizing the persistent grid). The shared-memory
// opt-in and the occupancy query run once per device: together they cost several microseconds,
// more than the launch itself, on every decode step otherwise.
template <int kHeadDim, class TQ, class TKV, bool kWide = false>
cudaError_t decode_blocks_per_sm(int* blocks) {
  using Tile = DecodeTileOf<kHeadDim, TKV, kWide>;
  constexpr int smem = decode_smem_bytes<Tile>();
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cache[kMaxDevices];  // blocks + 1; 0: not prepared on that device
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  if (device < kMaxDevices) {
    const int c = cache[device].load(std::memory_order_acquire);
    if (c > 0) {
      *blocks = c - 1;
      return cudaSuccess;
    }
  }
  constexpr auto kernel = decode_kernel_fn<Tile, TQ, TKV>();
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, kernel, Tile::kThreads, smem);
  if (err == cudaSuccess && device < kMaxDevices) {
    cache[device].store(*blocks + 1, std::memory_order_release);
  }
  return err;
}

// Launches the persistent grid; prepares the kernel on this device first if needed.
template <int kHeadDim, class TQ, class TKV, bool kWide = false>
cudaError_t launch_decode(const DecodeParams<TQ, TKV>& p, int grid, cudaStream_t stream) {
  using Tile = DecodeTileOf<kHeadDim, TKV, kWide>;
  constexpr int smem = decode_smem_bytes<Tile>();
  int blocks = 0;
  cudaError_t err = decode_blocks_per_sm<kHeadDim, TQ, TKV, kWide>(&blocks);
  if (err != cudaSuccess) return err;
  constexpr auto kernel = decode_kernel_fn<Tile, TQ, TKV>();
  kernel<<<grid, Tile::kThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace flashserve::attention
