// Phase timestamps of the paged decode kernel, for tuning (not part of the build):
//   nvcc -std=c++17 -arch=sm_90a -O3 --expt-relaxed-constexpr -DFLASHSERVE_DECODE_TRACE \
//     -Iinclude -Isrc bench/tools/decode_trace.cu src/plan/decode_plan.cc -o decode_trace
//   ./decode_trace batch kv_len q_heads kv_heads [fixed_split [static [target_mult [ragged
//   [wide [hnd [fit]]]]]]]] (bf16, head_dim 128 or -DFS_HD=64 / 256, page 16; static = 1: items
//   by static striding instead of tickets; target_mult < 0: a split target of -target_mult items;
//   wide = 1: the 8-warp CTA, one per SM, whatever the plan would pick; hnd = 1: HND pages (else
//   NHD); fit = 0: proportional splits only (DecodeScheduleInput::fit_uniform_splits)).
//   Environment: GRID=n caps the grid; DUMP=1 prints each CTA's SM, item and times.
// Prints, per phase, the median and max over CTAs (their last item) of the time since the
// previous point, and the spread of CTA start and end times. The merge points are those of the
// units' last items.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <vector>

#include "flashserve/attention/decode_kernel.cuh"
#include "plan/decode_plan.h"

namespace fa = flashserve::attention;
using T = __nv_bfloat16;

int main(int argc, char** argv) {
  const int batch = argc > 1 ? std::atoi(argv[1]) : 1;
  const int kv_len = argc > 2 ? std::atoi(argv[2]) : 4096;
  const int qh = argc > 3 ? std::atoi(argv[3]) : 32;
  const int kvh = argc > 4 ? std::atoi(argv[4]) : 8;
  const int fixed_split = argc > 5 ? std::atoi(argv[5]) : 0;  // > 0: deterministic, this split
  const bool static_schedule = argc > 6 && std::atoi(argv[6]) != 0;  // items by static striding
  const int target_mult = argc > 7 ? std::atoi(argv[7]) : 1;         // split target: SMs x 2 x this
  // ragged = 1: request lengths uniform in [kv_len / 4, 7 kv_len / 4) (fixed seed), mean kv_len.
  const bool ragged = argc > 8 && std::atoi(argv[8]) != 0;
  const bool wide = argc > 9 && std::atoi(argv[9]) != 0;
  const bool hnd = argc > 10 && std::atoi(argv[10]) != 0;     // 1: HND pages
  const bool fit = !(argc > 11 && std::atoi(argv[11]) == 0);  // 0: proportional splits only
#ifndef FS_HD
#define FS_HD 128
#endif
  constexpr int D = FS_HD, PS = 16;
  const int ctas_per_sm = wide ? 1 : fa::kDecodeCtasPerSm;
  std::vector<int> lens(batch, kv_len);
  std::mt19937 len_rng(7);
  if (ragged) {
    for (int& l : lens)
      l = kv_len / 4 + static_cast<int>(len_rng() % (3u * kv_len / 2));
  }
  std::vector<int32_t> indptr(batch + 1, 0), last(batch);
  for (int b = 0; b < batch; ++b)
    indptr[b + 1] = indptr[b] + (lens[b] + PS - 1) / PS;
  const int num_pages = indptr[batch] + 1;
  std::vector<int32_t> indices(indptr[batch]), perm(num_pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(1));
  for (int b = 0; b < batch; ++b) {
    const int pages = indptr[b + 1] - indptr[b];
    last[b] = lens[b] - (pages - 1) * PS;
    for (int i = indptr[b]; i < indptr[b + 1]; ++i)
      indices[i] = perm[i];
  }
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  flashserve::plan::DecodeScheduleInput in;
  in.indptr = indptr.data();
  in.last_page_len = last.data();
  in.batch = batch;
  in.page_size = PS;
  in.num_kv_heads = kvh;
  in.group = qh / kvh;
  in.head_dim = D;
  in.target_ctas = target_mult > 0 ? sms * ctas_per_sm * target_mult : -target_mult;  // < 0: this
  in.cta_threads = wide ? fa::kDecodeWideWarps * 32 : 128;
  in.deterministic = fixed_split > 0;
  in.fit_uniform_splits = fit;
  in.fixed_split_tokens = fixed_split;
  flashserve::plan::DecodeSchedule s;
  if (!flashserve::plan::make_decode_schedule("trace", in, &s).ok()) return 1;
  const auto img = flashserve::plan::decode_workspace_image(s);

  const size_t cache_elems = static_cast<size_t>(num_pages) * PS * kvh * D;
  T *q, *out, *kc, *vc;
  int32_t *d_indptr, *d_indices;
  uint8_t* ws;
  cudaMalloc(&q, sizeof(T) * batch * qh * D);
  cudaMalloc(&out, sizeof(T) * batch * qh * D);
  cudaMalloc(&kc, sizeof(T) * cache_elems);
  cudaMalloc(&vc, sizeof(T) * cache_elems);
  cudaMemset(q, 0x3c, sizeof(T) * batch * qh * D);
  cudaMemset(kc, 0x3c, sizeof(T) * cache_elems);
  cudaMemset(vc, 0x3c, sizeof(T) * cache_elems);
  cudaMalloc(&d_indptr, 4 * indptr.size());
  cudaMalloc(&d_indices, 4 * indices.size());
  cudaMalloc(&ws, s.layout.total);
  cudaMemcpy(d_indptr, indptr.data(), 4 * indptr.size(), cudaMemcpyHostToDevice);
  cudaMemcpy(d_indices, indices.data(), 4 * indices.size(), cudaMemcpyHostToDevice);
  cudaMemcpy(ws, img.data(), img.size(), cudaMemcpyHostToDevice);

  fa::DecodeParams<T, T> p;
  p.q = q;
  p.q_stride_token = qh * D;
  p.q_stride_head = D;
  p.out = out;
  p.out_stride_token = qh * D;
  p.out_stride_head = D;
  p.k_cache = kc;
  p.v_cache = vc;
  p.k_strides = hnd ? fa::KVStrides{int64_t{PS} * kvh * D, D, int64_t{PS} * D}
                    : fa::KVStrides{int64_t{PS} * kvh * D, int64_t{kvh} * D, D};
  p.v_strides = p.k_strides;
  p.indptr = d_indptr;
  p.indices = d_indices;
  p.num_indices = static_cast<int64_t>(indices.size());
  p.num_pages = num_pages;
  p.page_size = PS;
  p.group = qh / kvh;
  p.q_scale = 1.f / std::sqrt(float(D)) * 1.4426950408889634f;
  p.counts = reinterpret_cast<const fa::DecodeCounts*>(ws);
  if (!static_schedule) p.work_counter = &reinterpret_cast<fa::DecodeCounts*>(ws)->next_work;
  p.work = reinterpret_cast<const fa::DecodeWorkItem*>(ws + s.layout.work);
  p.partial_out = reinterpret_cast<float*>(ws + s.layout.partial_out);
  p.partial_lse = reinterpret_cast<float*>(ws + s.layout.partial_lse);
  p.merge_counters = reinterpret_cast<int32_t*>(ws + s.layout.counters);
  p.group_counters = p.merge_counters + s.capacity.merge;
  int grid = static_cast<int>(std::min<int64_t>(s.capacity.work, int64_t{sms} * ctas_per_sm));
  if (getenv("GRID")) grid = std::min(grid, std::atoi(getenv("GRID")));
  auto launch = [&](cudaStream_t st) {
    if (wide) {
      fa::launch_decode<D, T, T, true>(p, grid, st);
    } else {
      fa::launch_decode<D, T, T, false>(p, grid, st);
    }
  };
  for (int it = 0; it < 20; ++it)
    launch(nullptr);
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  cudaEventRecord(a);
  launch(nullptr);
  cudaEventRecord(b);
  cudaEventSynchronize(b);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  // Back-to-back launches in a graph: the per-launch time the bench reports.
  cudaStream_t gs;
  cudaStreamCreate(&gs);
  cudaGraph_t g;
  cudaGraphExec_t ge;
  cudaStreamBeginCapture(gs, cudaStreamCaptureModeGlobal);
  for (int it = 0; it < 50; ++it)
    launch(gs);
  cudaStreamEndCapture(gs, &g);
  cudaGraphInstantiate(&ge, g, 0);
  cudaGraphLaunch(ge, gs);
  cudaEventRecord(a, gs);
  for (int it = 0; it < 10; ++it)
    cudaGraphLaunch(ge, gs);
  cudaEventRecord(b, gs);
  cudaEventSynchronize(b);
  float gms = 0;
  cudaEventElapsedTime(&gms, a, b);
  printf("graph of 50 launches: %.2f us per launch\n", gms * 1000 / 500);
  cudaGraphLaunch(ge, gs);  // the trace below is of this graph's last launch
  cudaStreamSynchronize(gs);
  if (cudaGetLastError() != cudaSuccess) return 2;
  fa::DecodeCounts left;
  cudaMemcpy(&left, ws, sizeof(left), cudaMemcpyDeviceToHost);
  if (left.next_work != 0) {
    printf("error: the ticket counter is %d after the launches (expected 0)\n", left.next_work);
    return 3;
  }
  {
    std::vector<int32_t> ctr(s.capacity.merge + s.capacity.partials);
    cudaMemcpy(ctr.data(), ws + s.layout.counters, 4 * ctr.size(), cudaMemcpyDeviceToHost);
    for (size_t i = 0; i < ctr.size(); ++i) {
      if (ctr[i] != 0) {
        printf("error: counter %zu is %d after the launches (expected 0)\n", i, ctr[i]);
        return 4;
      }
    }
  }
  std::vector<unsigned long long> tr(4096 * 16);
  cudaMemcpyFromSymbol(tr.data(), fa::g_decode_trace, tr.size() * 8);
  const int ctas = std::min(4096, grid);
  printf("b%d kv%d %d/%d: %zu items, %zu merges, split %d, grid %d: %.2f us (event)\n", batch,
         kv_len, qh, kvh, s.work.size(), s.merge.size(), s.split_tokens, grid, ms * 1000);
  unsigned long long t0 = ~0ull, tend = 0;
  for (int c = 0; c < ctas; ++c) {
    if (tr[c * 16 + 6] == 0) continue;
    t0 = std::min(t0, tr[c * 16 + 0]);
    tend = std::max(tend, std::max(tr[c * 16 + 6], tr[c * 16 + 11]));
  }
  printf("first start to last end: %.2f us\n", (tend - t0) / 1000.0);
  const char* names[] = {"start",         "item+page ids", "q",
                         "tile 0 wait",   "tiles",         "combine+store",
                         "count+merge",   "(last) count",  "(merge) start",
                         "(merge) loads", "(merge) store", "(merge) end"};
  const int prev_of[12] = {0, 0, 1, 2, 3, 4, 5, 5, 7, 8, 9, 10};
  for (int i = 1; i < 12; ++i) {
    if (names[i][0] == 0) continue;
    std::vector<double> d;
    for (int c = 0; c < ctas; ++c) {
      const unsigned long long x = tr[c * 16 + i], y = tr[c * 16 + prev_of[i]];
      if (x != 0 && y != 0 && x >= y) d.push_back((x - y) / 1000.0);
    }
    std::sort(d.begin(), d.end());
    if (d.empty()) continue;
    printf("%-14s  median %7.2f us  max %7.2f us  (%zu CTAs)\n", names[i], d[d.size() / 2],
           d.back(), d.size());
  }
  std::vector<double> st, en;
  for (int c = 0; c < ctas; ++c) {
    if (tr[c * 16 + 6] == 0) continue;  // a CTA without an item
    st.push_back((tr[c * 16] - t0) / 1000.0);
    en.push_back((tr[c * 16 + 6] - t0) / 1000.0);
  }
  std::sort(st.begin(), st.end());
  std::sort(en.begin(), en.end());
  auto pct = [](const std::vector<double>& v, const char* n) {
    printf("%s: p0 %.1f p25 %.1f p50 %.1f p75 %.1f p100 %.1f us\n", n, v[0], v[v.size() / 4],
           v[v.size() / 2], v[3 * v.size() / 4], v.back());
  };
  pct(st, "CTA start");
  pct(en, "CTA end  ");
  // Balance estimate (CTAs with one item each): each CTA's K/V rate over its tiles phase; a unit
  // whose splits shared its tiles dynamically would end at (its first start) + tokens / (sum of
  // its CTAs' rates); all units sharing all CTAs: total tokens / all rates.
  const size_t nu = s.capacity.merge + 4096;
  std::vector<double> unit_tok(nu, 0), unit_rate(nu, 0), unit_start(nu, 1e30), unit_end(nu, 0);
  double tot_tok = 0, tot_rate = 0, max_end = 0;
  for (int c = 0; c < ctas; ++c) {
    if (tr[c * 16 + 6] == 0 || tr[c * 16 + 4] <= tr[c * 16 + 1]) continue;
    const auto& it = s.work[tr[c * 16 + 13]];
    const int u = it.merge >= 0 ? it.merge : static_cast<int>(s.capacity.merge) + c;
    const double tok = it.kv_end - it.kv_begin;
    const double dur = (tr[c * 16 + 4] - tr[c * 16 + 1]) / 1000.0;
    unit_tok[u] += tok;
    unit_rate[u] += tok / dur;
    unit_start[u] = std::min(unit_start[u], (tr[c * 16 + 1] - t0) / 1000.0);
    unit_end[u] = std::max(unit_end[u], (tr[c * 16 + 4] - t0) / 1000.0);
    tot_tok += tok;
    tot_rate += tok / dur;
    max_end = std::max(max_end, (tr[c * 16 + 4] - t0) / 1000.0);
    if (getenv("DUMP"))
      printf("cta %d sm %llu item %llu unit %d tok %.0f start %.2f tiles_end %.2f end %.2f\n", c,
             tr[c * 16 + 12], tr[c * 16 + 13], u, tok, (tr[c * 16 + 1] - t0) / 1000.0,
             (tr[c * 16 + 4] - t0) / 1000.0, (tr[c * 16 + 6] - t0) / 1000.0);
  }
  double pair_end = 0;
  for (size_t u = 0; u < unit_tok.size(); ++u)
    if (unit_rate[u] > 0) pair_end = std::max(pair_end, unit_start[u] + unit_tok[u] / unit_rate[u]);
  printf(
      "tiles end: static max %.2f us; unit-shared estimate %.2f us; all-shared estimate %.2f us\n",
      max_end, pair_end, st[st.size() / 2] + tot_tok / tot_rate);
  return 0;
}
