// Phase timestamps of the top-p / top-k sampling kernel, for tuning (not part of the build):
//   nvcc -std=c++17 -arch=sm_90a -O3 --expt-relaxed-constexpr -DFLASHSERVE_SAMPLING_TRACE \
//     -Iinclude bench/tools/sampling_trace.cu -o sampling_trace && ./sampling_trace 64 128256 0 0.9
// (rows, vocab, top_k, top_p[, cluster size instead of the tile policy's]). Prints, per trace point
// reached, the median and max over CTAs of the time since the CTA started. FS_STREAM=1: the
// streaming layout (stream_hist.cuh) instead of the resident one. Without
// -DFLASHSERVE_SAMPLING_TRACE it times 20 launches; with -DFLASHSERVE_STREAM_DEBUG as well it
// counts how a streamed row's top-p rounds were decided (histogram bounds: kept / rejected /
// undecided).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "flashserve/sampling/top_k_top_p_kernel.cuh"

namespace fs = flashserve::sampling;

int main(int argc, char** argv) {
  const int rows = argc > 1 ? std::atoi(argv[1]) : 64;
  const int vocab = argc > 2 ? std::atoi(argv[2]) : 128256;
  const int top_k = argc > 3 ? std::atoi(argv[3]) : 0;
  const float top_p = argc > 4 ? static_cast<float>(std::atof(argv[4])) : 0.9f;
  std::vector<float> host(static_cast<size_t>(rows) * vocab);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (float& x : host)
    x = nd(rng);
  float* d_in = nullptr;
  int* d_ids = nullptr;
  cudaMalloc(&d_in, host.size() * 4);
  cudaMalloc(&d_ids, rows * 4);
  cudaMemcpy(d_in, host.data(), host.size() * 4, cudaMemcpyHostToDevice);
  fs::DeviceLimits dev;
  cudaDeviceGetAttribute(&dev.num_sms, cudaDevAttrMultiProcessorCount, 0);
  cudaDeviceGetAttribute(&dev.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0);
  fs::SamplingTile tile;
  if (fs::plan_filter<float, true>(rows, vocab, dev, &tile) != cudaSuccess) return 1;
  const fs::SamplingTile resident = tile;  // the resume launch of a streamed call
  if (std::getenv("FS_STREAM") && std::atoi(std::getenv("FS_STREAM")) != 0) {
    fs::plan_filter_stream<float, true>(rows, vocab, dev, &tile);
  }
  if (argc > 5) {  // an experiment: another cluster size than the policy's
    tile.cluster = std::atoi(argv[5]);
    tile.chunk = static_cast<int>(fs::sampling_chunk(vocab, tile.cluster));
    tile.smem_bytes = static_cast<int64_t>(tile.chunk) * 4;
  }
  fs::FilterParams<float> p;
  p.input = d_in;
  p.input_stride = vocab;
  p.rows = rows;
  p.vocab = vocab;
  p.chunk = tile.chunk;
  p.vec_loads = true;
  p.top_k.value = top_k;
  p.top_p.value = top_p;
  p.min_p.value = 0.f;
  p.temperature.value = 1.f;
  p.seed.seed = 1;
  p.out_ids = d_ids;
  if (const char* d = std::getenv("FS_PREFETCH_ROWS")) p.prefetch_rows = std::atoi(d);  // -1: none
  // FS_RESUME=0: streamed rows finish on their own (no resume launch).
  const fs::SamplingTile* resume =
      std::getenv("FS_RESUME") && std::atoi(std::getenv("FS_RESUME")) == 0 ? nullptr : &resident;
  for (int it = 0; it < 5; ++it)
    fs::launch_filter<float, true>(p, tile, dev, nullptr, resume);
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
#ifndef FLASHSERVE_SAMPLING_TRACE  // a plain timing (and a binary for ncu): the mean of 20 launches
#ifdef FLASHSERVE_STREAM_DEBUG
  unsigned long long stats[4] = {0, 0, 0, 0};
  cudaMemcpyToSymbol(fs::g_stream_stats, stats, sizeof(stats));
#endif
  cudaEventRecord(a);
  for (int it = 0; it < 20; ++it)
    fs::launch_filter<float, true>(p, tile, dev, nullptr, resume);
  cudaEventRecord(b);
  cudaEventSynchronize(b);
  float total_ms = 0;
  cudaEventElapsedTime(&total_ms, a, b);
  printf("rows %d vocab %d top_k %d top_p %.2f cluster %d chunk %d: %.2f us per launch (%s)\n",
         rows, vocab, top_k, top_p, tile.cluster, tile.chunk, total_ms * 50,
         cudaGetErrorString(cudaGetLastError()));
#ifdef FLASHSERVE_STREAM_DEBUG
  cudaMemcpyFromSymbol(stats, fs::g_stream_stats, sizeof(stats));
  printf("streamed top-p rounds over 20 launches: kept %llu, rejected %llu, undecided %llu\n",
         stats[2], stats[0], stats[1]);
#endif
  return 0;
#else
  {
    const std::vector<unsigned long long> zero(4096 * 16, 0ull);
    cudaMemcpyToSymbol(fs::g_sampling_trace, zero.data(), zero.size() * 8);
    cudaMemcpyToSymbol(fs::g_sampling_trace_value, zero.data(), 4096 * 8);
  }
  cudaEventRecord(a);
  fs::launch_filter<float, true>(p, tile, dev, nullptr, resume);
  cudaEventRecord(b);
  cudaEventSynchronize(b);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  std::vector<unsigned long long> tr(4096 * 16);
  cudaMemcpyFromSymbol(tr.data(), fs::g_sampling_trace, tr.size() * 8);
  const int ctas = std::min(4096, rows * tile.cluster);
  printf("rows %d vocab %d cluster %d chunk %d threads %d: %.2f us (event)\n", rows, vocab,
         tile.cluster, tile.chunk, tile.threads, ms * 1000);
  unsigned long long t0 = ~0ull, tend = 0;
  for (int c = 0; c < ctas; ++c) {
    t0 = std::min(t0, tr[c * 16 + 0]);
    tend = std::max(tend, tr[c * 16 + 10]);
  }
  printf("first start to last end: %.2f us\n", (tend - t0) / 1000.0);
  // Trace points in path order: the threshold path (2..8), the rejection draw (11, then per round
  // 14, 12, 13: the last round's) or the top-k draw (11..15: histogram, bound, gather, union read,
  // ranks).
  // (The rejection draw also stamps 2: exchange 0's block barrier, 3 / 4: the holder warp's walk
  // and push, 5: exchange 0 received, 6: a round's block barrier, 7: its walk, 12: its masses
  // received, 13: the next candidates received (a rejecting round); with
  // FS_TRACE_FAST=1 these print in time order under their numbers.)
  if (std::getenv("FS_TRACE_FAST")) {
    std::vector<std::pair<double, int> > pts;
    for (int i = 1; i < 16; ++i) {
      std::vector<double> d;
      for (int c = 0; c < ctas; ++c) {
        const unsigned long long x = tr[c * 16 + i], y = tr[c * 16];
        if (x != 0 && y != 0 && x >= y && !(x >> 63)) d.push_back((x - y) / 1000.0);
      }
      if (d.empty()) continue;
      std::sort(d.begin(), d.end());
      pts.push_back({d[d.size() / 2], i});
    }
    std::sort(pts.begin(), pts.end());
    for (auto& q : pts)
      printf("  point %2d: median %7.2f us\n", q.second, q.first);
  }
  const int order[] = {1, 11, 14, 12, 13, 15, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  const char* names[16] = {"start",
                           "load",
                           "level0 start",
                           "level0+merge",
                           "crossing",
                           "gather",
                           "refine",
                           "kept_mass",
                           "cluster scan",
                           "walk",
                           "final wait",
                           "exchange 0|tk hist",
                           "round draw|tk bound",
                           "round exch|tk gather",
                           "sweep|tk union",
                           "tk ranks"};
  for (int i : order) {
    std::vector<double> d;
    for (int c = 0; c < ctas; ++c) {
      const unsigned long long x = tr[c * 16 + i], y = tr[c * 16];
      if (x != 0 && y != 0 && x >= y && !(x >> 63)) d.push_back((x - y) / 1000.0);
    }
    std::sort(d.begin(), d.end());
    if (d.empty()) continue;
    printf("%-14s  since start: median %7.2f us  max %7.2f us  (%zu CTAs)\n", names[i],
           d[d.size() / 2], d.back(), d.size());
  }
  std::vector<unsigned long long> vals(4096);
  cudaMemcpyFromSymbol(vals.data(), fs::g_sampling_trace_value, vals.size() * 8);
  std::vector<long long> vs;
  for (int c = 0; c < ctas; ++c)
    if (vals[c] != 0) vs.push_back(static_cast<long long>(vals[c]) - 1);
  std::sort(vs.begin(), vs.end());
  if (!vs.empty())
    printf("traced value (top-k union size): min %lld median %lld max %lld (%zu CTAs)\n", vs[0],
           vs[vs.size() / 2], vs.back(), vs.size());
  // When did CTAs start, relative to the first (waves)?
  std::vector<double> st;
  for (int c = 0; c < ctas; ++c)
    st.push_back((tr[c * 16] - t0) / 1000.0);
  std::sort(st.begin(), st.end());
  // Exchange 0 against the cluster's slowest load: how long a CTA waits for the others, and what
  // is left between the last load's end and the exchange.
  {
    const int cl = tile.cluster;
    std::vector<double> wait, after;
    for (int c0 = 0; c0 + cl <= ctas; c0 += cl) {
      unsigned long long last_load = 0;
      for (int c = c0; c < c0 + cl; ++c)
        last_load = std::max(last_load, tr[c * 16 + 1]);
      for (int c = c0; c < c0 + cl; ++c) {
        if (tr[c * 16 + 1] == 0 || tr[c * 16 + 11] == 0) continue;
        wait.push_back((last_load - tr[c * 16 + 1]) / 1000.0);
        after.push_back((static_cast<double>(tr[c * 16 + 11]) - last_load) / 1000.0);
      }
    }
    std::sort(wait.begin(), wait.end());
    std::sort(after.begin(), after.end());
    if (!wait.empty())
      printf(
          "load end to the cluster's last load end: median %.2f us; last load end to exchange "
          "0: median %.2f max %.2f us\n",
          wait[wait.size() / 2], after[after.size() / 2], after.back());
  }
  // Residency over time per SM (the kernel stamps its SM in point 15 with the top bit set):
  // how long each SM held 0, 1, 2, ... CTAs between the first start and the last end.
  if (tr[15] >> 63) {
    std::vector<std::vector<std::pair<unsigned long long, int> > > ev(1024);
    for (int c = 0; c < ctas; ++c) {
      const int sm = static_cast<int>(tr[c * 16 + 15] & 1023);
      ev[sm].push_back({tr[c * 16], +1});
      ev[sm].push_back({tr[c * 16 + 10], -1});
    }
    double held[8] = {0};
    for (auto& e : ev) {
      if (e.empty()) continue;
      std::sort(e.begin(), e.end());
      unsigned long long prev = t0;
      int cur = 0;
      for (auto& q : e) {
        held[std::min(cur, 7)] += (q.first - prev) / 1000.0;
        prev = q.first;
        cur += q.second;
      }
      held[0] += (tend - prev) / 1000.0;
    }
    printf("SM-time holding 0 / 1 / 2 / 3 CTAs: %.0f / %.0f / %.0f / %.0f us\n", held[0], held[1],
           held[2], held[3]);
    // The same within the middle of the run (excluding the first and last 15 us).
    double mid[8] = {0};
    const unsigned long long a = t0 + 15000, b = tend - 15000;
    for (auto& e : ev) {
      if (e.empty() || b <= a) continue;
      unsigned long long prev = a;
      int cur = 0;
      for (auto& q : e) {
        const unsigned long long t = std::min(std::max(q.first, a), b);
        mid[std::min(cur, 7)] += (t - prev) / 1000.0;
        prev = t;
        cur += q.second;
      }
      mid[std::min(cur, 7)] += (b - prev) / 1000.0;
    }
    printf("  in the middle: %.0f / %.0f / %.0f / %.0f us\n", mid[0], mid[1], mid[2], mid[3]);
  }
  printf("start offsets: p0 %.1f p25 %.1f p50 %.1f p75 %.1f p100 %.1f us\n", st[0],
         st[st.size() / 4], st[st.size() / 2], st[3 * st.size() / 4], st.back());
  return 0;
#endif
}
