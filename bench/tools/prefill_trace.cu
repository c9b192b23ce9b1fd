// Phase timestamps of the Hopper prefill kernel, for tuning (not part of the build):
//   nvcc -std=c++17 -arch=sm_90a -O3 --expt-relaxed-constexpr --extended-lambda -lcuda \
//     -DFLASHSERVE_PREFILL_TRACE -Iinclude -Isrc -I.deps/cutlass/include \
//     bench/tools/prefill_trace.cu src/plan/prefill_plan.cc -o prefill_trace
//   ./prefill_trace batch seqlen heads causal(0/1) [head_dim 64|128|256]   (bf16, ragged, MHA)
//   -DFS_TRACE_HEAD_DIM=d builds that head dim only
//   L2_GROUP_MB=n: the plan's L2 group budget
//   FS_TRACE_RANDOM=1: normal(0, 1) q, k, v (default: a constant, which draws less power: at
//   head_dim 128 x 16k the constant data ran 13% faster on the H100, so compare like with like)
// Prints, per tile length (kv blocks), the median over tiles of each phase of consumer
// warpgroup 0: the gap since the previous tile's epilogue, the wait for Q, the first S = Q K^T,
// the first softmax, the remaining blocks (per block) and the epilogue.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <type_traits>
#include <vector>

#include "flashserve/attention/prefill_kernel_sm90.cuh"
#include "plan/prefill_plan.h"

namespace fa = flashserve::attention;
using T = cutlass::bfloat16_t;

template <int D, fa::PrefillKind kKind>
int run(int batch, int seqlen, int heads) {
  constexpr bool kCausal = kKind == fa::PrefillKind::kCausal;
  const fa::PrefillTile tile = fa::prefill_tile(D, !kCausal);
  flashserve::plan::PrefillScheduleInput in;
  in.batch = batch;
  in.q_len = in.kv_len = seqlen;
  in.num_qo_heads = heads;
  in.head_dim = D;
  in.block_m = tile.block_m;
  in.block_n = tile.block_n;
  in.causal = kCausal;
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  in.num_ctas = sms;
  if (const char* g = std::getenv("L2_GROUP_MB")) in.l2_group_bytes = std::atoll(g) << 20;
  flashserve::plan::PrefillSchedule s;
  if (!flashserve::plan::make_prefill_schedule("trace", in, &s).ok()) return 1;
  const auto img = flashserve::plan::prefill_workspace_image(s);
  const size_t elems = size_t(batch) * seqlen * heads * D;
  T *q, *k, *v, *o;
  cudaMalloc(&q, elems * 2);
  cudaMalloc(&k, elems * 2);
  cudaMalloc(&v, elems * 2);
  cudaMalloc(&o, elems * 2);
  if (std::getenv("FS_TRACE_RANDOM") != nullptr) {  // normal(0, 1) data, as the bench uses
    std::vector<T> h(elems);
    std::mt19937 gen(3);
    std::normal_distribution<float> nd;
    for (T* dst : {q, k, v}) {
      for (auto& x : h)
        x = T(nd(gen));
      cudaMemcpy(dst, h.data(), elems * 2, cudaMemcpyHostToDevice);
    }
  } else {
    cudaMemset(q, 0x3c, elems * 2);
    cudaMemset(k, 0x3c, elems * 2);
    cudaMemset(v, 0x3c, elems * 2);
  }
  unsigned char* ws;
  cudaMalloc(&ws, s.layout.total);
  cudaMemcpy(ws, img.data(), img.size(), cudaMemcpyHostToDevice);
  fa::PrefillParams p;
  p.q = q;
  p.k = k;
  p.v = v;
  p.out = o;
  p.q_stride_token = p.k_stride_token = p.v_stride_token = p.out_stride_token = int64_t{heads} * D;
  p.q_stride_head = p.k_stride_head = p.v_stride_head = p.out_stride_head = D;
  p.qo_indptr = reinterpret_cast<const int32_t*>(ws + s.layout.qo_indptr);
  p.kv_indptr = reinterpret_cast<const int32_t*>(ws + s.layout.kv_indptr);
  p.work = reinterpret_cast<const fa::PrefillWorkItem*>(ws + s.layout.work);
  p.counts = reinterpret_cast<const fa::PrefillCounts*>(ws);
  p.total_q = p.total_kv = static_cast<int32_t>(s.total_q);
  p.batch_size = batch;
  p.num_qo_heads = p.num_kv_heads = heads;
  p.sm_scale = 1.f / std::sqrt(float(D));
  p.variant.causal = kCausal;
  const int grid = s.grid;
  auto launch = [&](cudaStream_t st) {
    return fa::sm90::launch_prefill_sm90<T, D, kKind>(p, grid, st);
  };
  for (int i = 0; i < 5; ++i)
    launch(nullptr);
  if (cudaDeviceSynchronize() != cudaSuccess) return 2;
  cudaStream_t gs;
  cudaStreamCreate(&gs);
  cudaGraph_t g;
  cudaGraphExec_t ge;
  cudaStreamBeginCapture(gs, cudaStreamCaptureModeGlobal);
  for (int i = 0; i < 20; ++i)
    launch(gs);
  cudaStreamEndCapture(gs, &g);
  cudaGraphInstantiate(&ge, g, 0);
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  cudaGraphLaunch(ge, gs);
  cudaEventRecord(a, gs);
  for (int i = 0; i < 5; ++i)
    cudaGraphLaunch(ge, gs);
  cudaEventRecord(b, gs);
  cudaEventSynchronize(b);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  const double us = ms * 1000 / 100;
  printf("b%d s%d %d x %d %s: %zu tiles, grid %d: %.2f us per launch, %.0f TFLOP/s\n", batch,
         seqlen, heads, D, kCausal ? "causal" : "plain", s.work.size(), grid, us,
         s.flops / us * 1e-6);
  launch(nullptr);  // the traced launch
  if (cudaDeviceSynchronize() != cudaSuccess) return 3;
  std::vector<unsigned long long> tr(1024 * 64 * 2 * 8);
  cudaMemcpyFromSymbol(tr.data(), fa::g_prefill_trace, tr.size() * 8);
  auto at = [&](int cta, int t, int wg, int i) { return tr[((cta * 64 + t) * 2 + wg) * 8 + i]; };

  unsigned long long t_min = ~0ull, t_max = 0;
  // Phases by tile length: gap, q wait, first QK, first softmax, rest per block, epilogue.
  std::map<int, std::vector<std::vector<double>>> phases;
  std::vector<double> ends;
  for (int c = 0; c < grid; ++c) {
    int tiles = 0;
    for (int w = c < int(s.work.size()) ? c : -1; w >= 0 && tiles < 64;
         w = s.work[w].next, ++tiles) {
      const fa::PrefillWorkItem& it = s.work[w];
      const int row_last = std::min((it.m_block + 1) * tile.block_m, seqlen) - 1;
      const int col_end = kCausal ? row_last + 1 : seqlen;
      const int blocks = (col_end + tile.block_n - 1) / tile.block_n;
      for (int wg = 0; wg < 2; ++wg) {
        t_min = std::min(t_min, at(c, tiles, wg, 0));
        t_max = std::max(t_max, at(c, tiles, wg, 5));
      }
      const int wg = 0;  // (64-row warpgroups; the third of head_dim 64 is not traced)
      std::vector<double> ph(8);
      ph[0] = tiles == 0 ? 0 : double(at(c, tiles, wg, 0) - at(c, tiles - 1, wg, 5));
      ph[1] = double(at(c, tiles, wg, 1) - at(c, tiles, wg, 0));
      ph[2] = double(at(c, tiles, wg, 2) - at(c, tiles, wg, 1));
      ph[3] = double(at(c, tiles, wg, 3) - at(c, tiles, wg, 2));
      ph[4] = blocks > 1 ? double(at(c, tiles, wg, 4) - at(c, tiles, wg, 3)) / (blocks - 1)
                         : double(at(c, tiles, wg, 4) - at(c, tiles, wg, 3));
      ph[5] = double(at(c, tiles, wg, 5) - at(c, tiles, wg, 4));
      ph[6] = double(at(c, tiles, wg, 6) - at(c, tiles, wg, 4));  // epilogue: to shared + LSE
      ph[7] = double(at(c, tiles, wg, 7) - at(c, tiles, wg, 6));  // its barrier
      phases[blocks].push_back(ph);
      if (s.work[w].next < 0)
        ends.push_back(double(std::max(at(c, tiles, 0, 5), at(c, tiles, 1, 5))));
    }
  }
  std::sort(ends.begin(), ends.end());
  if (!ends.empty())
    printf("CTA end times after the first start: min %.2f median %.2f max %.2f us\n",
           (ends.front() - t_min) * 1e-3, (ends[ends.size() / 2] - t_min) * 1e-3,
           (ends.back() - t_min) * 1e-3);
  printf("traced launch: first tile start to last epilogue end %.2f us\n",
         double(t_max - t_min) * 1e-3);
  printf("%7s %6s | %7s %7s %7s %7s %9s %7s %7s %7s  (us, medians; rest: per block)\n", "blocks",
         "tiles", "gap", "q wait", "QK1", "smax1", "rest/blk", "epi", "e.smem", "e.bar");
  for (auto& [blocks, v] : phases) {
    printf("%7d %6zu |", blocks, v.size());
    for (int i = 0; i < 8; ++i) {
      std::vector<double> col;
      for (auto& ph : v)
        col.push_back(ph[i]);
      std::nth_element(col.begin(), col.begin() + col.size() / 2, col.end());
      printf(" %*.2f", i == 4 ? 9 : 7, col[col.size() / 2] * 1e-3);
    }
    printf("\n");
  }
  return 0;
}

int main(int argc, char** argv) {
  const int batch = argc > 1 ? std::atoi(argv[1]) : 32;
  const int seqlen = argc > 2 ? std::atoi(argv[2]) : 512;
  const int heads = argc > 3 ? std::atoi(argv[3]) : 16;
  const bool causal = argc > 4 ? std::atoi(argv[4]) != 0 : true;
  const int d = argc > 5 ? std::atoi(argv[5]) : 128;
  auto go = [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    return causal ? run<D, fa::PrefillKind::kCausal>(batch, seqlen, heads)
                  : run<D, fa::PrefillKind::kPlain>(batch, seqlen, heads);
  };
#ifdef FS_TRACE_HEAD_DIM  // one head dim only (a quicker build)
  if (d != FS_TRACE_HEAD_DIM) return 3;
  const int rc = go(std::integral_constant<int, FS_TRACE_HEAD_DIM>{});
#else
  const int rc = d == 64    ? go(std::integral_constant<int, 64>{})
                 : d == 256 ? go(std::integral_constant<int, 256>{})
                            : go(std::integral_constant<int, 128>{});
#endif
  if (rc != 0) printf("error %d: %s\n", rc, cudaGetErrorString(cudaGetLastError()));
  return rc;
}
