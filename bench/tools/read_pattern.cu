// Read bandwidth of the access patterns a paged KV cache produces, without any attention math:
// how much of the decode gap to a contiguous-KV kernel is the layout's DRAM locality.
//
// The pool holds pages of 16 tokens x kv_heads x 128 dims x 2 bytes (K and V pools apart, as the
// cache). A unit is (request, kv head): its pages are read in table order, 16 rows of 256 bytes
// per page and pool, by one warp of a persistent CTA (units over CTAs round robin, warps of a CTA
// over the unit's pages). Patterns:
//   nhd     pages of a random permutation, a head's rows 256 B apart at kv_heads x 256 B stride
//   hnd     pages of a random permutation, a head's 16 rows contiguous (4 KiB)
//   contig  K and V of each (request, head) one contiguous stream (torch SDPA's [b, h, s, d])
// Each pattern is read twice: by 16-byte ld.global.nc (no L1 allocation), each warp keeping `depth`
// page reads in flight, and by bulk copies (cp.async.bulk) into a per-warp ring of 2 or 4 stages.
// First, for comparison, `linear`: the pools swept as one array (linear_kernel).
//
//   nvcc -std=c++17 -arch=sm_90a -O3 bench/tools/read_pattern.cu -o read_pattern
//   read_pattern <batch> <kv_len> [kv_heads=8] [ctas_per_sm=2] [warps=4]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <vector>

namespace {

constexpr int kPageTokens = 16;
constexpr int kRowBytes = 256;  // 128 dims x 2 bytes

enum class Pattern { kNhd, kHnd, kContig };

struct Params {
  const uint8_t* k;
  const uint8_t* v;
  const int32_t* pages;  // [batch][pages_per] page ids (kNhd, kHnd)
  int batch, pages_per, kv_heads;
  Pattern pattern;
  unsigned long long* sink;
};

__device__ __forceinline__ uint4 ld_nc(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

// Byte offset of row `t` (0..15) of head `h` in page `page` (K or V pool alike).
__device__ __forceinline__ size_t row_offset(const Params& p, int request, int page_slot, int page,
                                             int h, int t) {
  switch (p.pattern) {
    case Pattern::kNhd:
      return (static_cast<size_t>(page) * kPageTokens + t) * p.kv_heads * kRowBytes +
             static_cast<size_t>(h) * kRowBytes;
    case Pattern::kHnd:
      return ((static_cast<size_t>(page) * p.kv_heads + h) * kPageTokens + t) * kRowBytes;
    default: {
      const size_t tokens = static_cast<size_t>(p.pages_per) * kPageTokens;
      return ((static_cast<size_t>(request) * p.kv_heads + h) * tokens +
              static_cast<size_t>(page_slot) * kPageTokens + t) *
             kRowBytes;
    }
  }
}

template <int kDepth>
__global__ void read_kernel(const Params p) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  uint32_t acc = 0;
  const int units = p.batch * p.kv_heads;
  // A page of one head is 16 rows x 256 B = 256 16-byte chunks per pool: 8 per lane, K and V.
  const int t0 = lane >> 4;        // rows t0, t0 + 2, ...
  const int c = (lane & 15) * 16;  // byte column
  for (int u = blockIdx.x; u < units; u += gridDim.x) {
    const int request = u / p.kv_heads, h = u % p.kv_heads;
    const int32_t* table = p.pages + static_cast<size_t>(request) * p.pages_per;
    for (int s0 = warp * kDepth; s0 < p.pages_per; s0 += warps * kDepth) {
      uint4 r[kDepth][16];
#pragma unroll
      for (int d = 0; d < kDepth; ++d) {
        const int slot = s0 + d;
        if (slot < p.pages_per) {
          const int page = table[slot];
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            const size_t off = row_offset(p, request, slot, page, h, t0 + 2 * i) + c;
            r[d][i] = ld_nc(p.k + off);
            r[d][8 + i] = ld_nc(p.v + off);
          }
        } else {
#pragma unroll
          for (int i = 0; i < 16; ++i)
            r[d][i] = make_uint4(0, 0, 0, 0);
        }
      }
#pragma unroll
      for (int d = 0; d < kDepth; ++d)
#pragma unroll
        for (int i = 0; i < 16; ++i)
          acc ^= r[d][i].x ^ r[d][i].y ^ r[d][i].z ^ r[d][i].w;
    }
  }
  if (acc == 0x12345678u) atomicAdd(p.sink, 1ull);
}

// The PTX both bulk kernels use: a warp's stage barriers (one arrival each), a stage armed for
// `bytes`, one bulk copy into it, and a spin until a stage's phase completes.
template <int kStages>
__device__ __forceinline__ void init_stage_barriers(uint64_t (&bars)[kStages], int lane) {
  if (lane < kStages) {
    const uint32_t b = static_cast<uint32_t>(__cvta_generic_to_shared(&bars[lane]));
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(b));
  }
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  __syncwarp();
}
__device__ __forceinline__ void expect_bytes(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void bulk_copy(uint32_t dst, const void* src, uint32_t bytes,
                                          uint32_t bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::
          "r"(dst),
      "l"(src), "r"(bytes), "r"(bar)
      : "memory");
}
__device__ __forceinline__ void wait_phase(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{ .reg .pred q; mbarrier.try_wait.parity.shared::cta.b64 q, [%1], %2; selp.u32 %0, 1, "
        "0, q; }"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  }
}

// The same pages moved by bulk copies (TMA engine, `cp.async.bulk`) into a per-warp ring of
// `kStages` shared-memory stages of one page (K 4 KiB + V 4 KiB), completion on one mbarrier per
// stage: lanes 0..15 copy row `lane` of K and V (256 B each; one 4 KiB copy per pool where the
// head's rows are contiguous). Nothing reads the stage: this is the DRAM side only.
template <int kStages>
__global__ void bulk_kernel(const Params p) {
  extern __shared__ __align__(128) uint8_t smem[];
  __shared__ __align__(8) uint64_t bars[32][kStages];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  uint8_t* ring = smem + static_cast<size_t>(warp) * kStages * 8192;
  init_stage_barriers<kStages>(bars[warp], lane);
  const bool contiguous = p.pattern != Pattern::kNhd;
  const int units = p.batch * p.kv_heads;
  uint32_t phase_bits = 0;
  for (int u = blockIdx.x; u < units; u += gridDim.x) {
    const int request = u / p.kv_heads, h = u % p.kv_heads;
    const int32_t* table = p.pages + static_cast<size_t>(request) * p.pages_per;
    auto issue = [&](int slot, int stage) {
      const uint32_t bar = static_cast<uint32_t>(__cvta_generic_to_shared(&bars[warp][stage]));
      if (lane == 0) expect_bytes(bar, 8192);
      __syncwarp();
      const int page = table[slot];
      const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(ring + stage * 8192));
      const int rows = contiguous ? 1 : 16;
      const uint32_t bytes = contiguous ? 4096 : 256;
      if (lane < rows) {
        const size_t off = row_offset(p, request, slot, page, h, lane);
        bulk_copy(dst + lane * 256, p.k + off, bytes, bar);
        bulk_copy(dst + 4096 + lane * 256, p.v + off, bytes, bar);
      }
    };
    int n = 0;  // this warp's pages of the unit, in order
    for (int s = warp; s < p.pages_per && n < kStages; s += warps, ++n)
      issue(s, n);
    for (int i = 0, s = warp; s < p.pages_per; ++i, s += warps) {
      const int stage = i % kStages;
      const uint32_t bar = static_cast<uint32_t>(__cvta_generic_to_shared(&bars[warp][stage]));
      const uint32_t parity = (phase_bits >> stage) & 1u;
      wait_phase(bar, parity);
      phase_bits ^= 1u << stage;
      const int next = s + kStages * warps;
      if (next < p.pages_per) issue(next, stage);
    }
  }
}

// The whole K and V pools as one linear sweep: global warp g reads chunks g, g + W, ... of
// `kChunk` bytes (W = all warps of the grid), so the warps in flight read neighbouring memory:
// the best-case DRAM order, for comparison.
template <int kStages, int kChunk>
__global__ void linear_kernel(const uint8_t* k, const uint8_t* v, size_t pool) {
  extern __shared__ __align__(128) uint8_t smem[];
  __shared__ __align__(8) uint64_t bars[32][kStages];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  uint8_t* ring = smem + static_cast<size_t>(warp) * kStages * 2 * kChunk;
  init_stage_barriers<kStages>(bars[warp], lane);
  const size_t chunks = pool / kChunk;
  const size_t W = static_cast<size_t>(gridDim.x) * warps;
  const size_t g = static_cast<size_t>(blockIdx.x) * warps + warp;
  auto issue = [&](size_t c, int stage) {
    const uint32_t bar = static_cast<uint32_t>(__cvta_generic_to_shared(&bars[warp][stage]));
    const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(ring + stage * 2 * kChunk));
    if (lane == 0) {
      expect_bytes(bar, 2 * kChunk);
      bulk_copy(dst, k + c * kChunk, kChunk, bar);
      bulk_copy(dst + kChunk, v + c * kChunk, kChunk, bar);
    }
  };
  int n = 0;
  for (size_t c = g; c < chunks && n < kStages; c += W, ++n)
    issue(c, n);
  uint32_t phase_bits = 0;
  int i = 0;
  for (size_t c = g; c < chunks; c += W, ++i) {
    const int stage = i % kStages;
    const uint32_t bar = static_cast<uint32_t>(__cvta_generic_to_shared(&bars[warp][stage]));
    const uint32_t parity = (phase_bits >> stage) & 1u;
    wait_phase(bar, parity);
    phase_bits ^= 1u << stage;
    __syncwarp();
    const size_t next = c + kStages * W;
    if (next < chunks) issue(next, stage);
  }
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: read_pattern batch kv_len [kv_heads] [ctas_per_sm] [warps]\n");
    return 2;
  }
  const int batch = std::atoi(argv[1]);
  const int kv_len = std::atoi(argv[2]);
  const int kv_heads = argc > 3 ? std::atoi(argv[3]) : 8;
  const int ctas_per_sm = argc > 4 ? std::atoi(argv[4]) : 2;
  const int warps = argc > 5 ? std::atoi(argv[5]) : 4;
  const int pages_per = (kv_len + kPageTokens - 1) / kPageTokens;
  const size_t num_pages = static_cast<size_t>(batch) * pages_per;
  const size_t pool = num_pages * kPageTokens * kv_heads * kRowBytes;

  std::vector<int32_t> perm(num_pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937_64(12345));

  uint8_t *k = nullptr, *v = nullptr, *flush = nullptr;
  int32_t* pages = nullptr;
  unsigned long long* sink = nullptr;
  check(cudaMalloc(&k, pool), "k");
  check(cudaMalloc(&v, pool), "v");
  check(cudaMalloc(&pages, num_pages * 4), "pages");
  check(cudaMalloc(&sink, 8), "sink");
  check(cudaMalloc(&flush, size_t{200} << 20), "flush");
  check(cudaMemset(k, 1, pool), "k");
  check(cudaMemset(v, 2, pool), "v");
  check(cudaMemcpy(pages, perm.data(), num_pages * 4, cudaMemcpyHostToDevice), "pages");

  int sms = 0;
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), "sms");
  const double bytes = 2.0 * static_cast<double>(pool);
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  const char* names[] = {"nhd", "hnd", "contig"};
  const dim3 grid(sms * ctas_per_sm), block(32 * warps);
  // Median of 9 launches after a warm-up, L2 flushed before each; the configuration's label, or
  // "does not launch" (e.g. more shared memory than an SM has).
  auto report = [&](const char* label, auto&& launch) {
    launch();
    if (cudaGetLastError() != cudaSuccess) {
      std::printf("%s: does not launch\n", label);
      return;
    }
    check(cudaDeviceSynchronize(), label);
    std::vector<float> ts;
    for (int s = 0; s < 9; ++s) {
      check(cudaMemsetAsync(flush, s, size_t{200} << 20), "flush");
      cudaEventRecord(a);
      launch();
      cudaEventRecord(b);
      check(cudaEventSynchronize(b), "sync");
      float ms = 0;
      cudaEventElapsedTime(&ms, a, b);
      ts.push_back(ms);
    }
    std::sort(ts.begin(), ts.end());
    const double us = ts[ts.size() / 2] * 1e3;
    std::printf("%s: %9.1f us  %.3f TB/s\n", label, us, bytes / us * 1e-6);
  };
  const int kMaxSmem = 200000;
  cudaFuncSetAttribute(linear_kernel<2, 4096>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                       kMaxSmem);
  cudaFuncSetAttribute(linear_kernel<2, 16384>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                       kMaxSmem);
  cudaFuncSetAttribute(bulk_kernel<2>, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxSmem);
  cudaFuncSetAttribute(bulk_kernel<4>, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxSmem);
  char label[160];
  for (int chunk : {4096, 16384}) {
    std::snprintf(label, sizeof(label), "linear %2dK chunks ctas/SM %d warps %d", chunk / 1024,
                  ctas_per_sm, warps);
    const int smem = warps * 2 * 2 * chunk;
    report(label, [&] {
      if (chunk == 4096)
        linear_kernel<2, 4096><<<grid, block, smem>>>(k, v, pool);
      else
        linear_kernel<2, 16384><<<grid, block, smem>>>(k, v, pool);
    });
  }
  for (int pat = 0; pat < 3; ++pat) {
    const Params p{k, v, pages, batch, pages_per, kv_heads, static_cast<Pattern>(pat), sink};
    for (int stages : {2, 4}) {
      std::snprintf(label, sizeof(label),
                    "%-6s b%d kv%d heads %d ctas/SM %d warps %d bulk stages %d", names[pat], batch,
                    kv_len, kv_heads, ctas_per_sm, warps, stages);
      const int smem = warps * stages * 8192;
      report(label, [&] {
        if (stages == 2)
          bulk_kernel<2><<<grid, block, smem>>>(p);
        else
          bulk_kernel<4><<<grid, block, smem>>>(p);
      });
    }
    for (int depth : {1, 2}) {
      std::snprintf(label, sizeof(label), "%-6s b%d kv%d heads %d ctas/SM %d warps %d depth %d",
                    names[pat], batch, kv_len, kv_heads, ctas_per_sm, warps, depth);
      report(label, [&] {
        if (depth == 1)
          read_kernel<1><<<grid, block>>>(p);
        else
          read_kernel<2><<<grid, block>>>(p);
      });
    }
  }
  return 0;
}
