// The streaming sampling layout (stream_hist.cuh) against the resident one, for tuning (not part of
// the build):
//   nvcc -std=c++17 -arch=sm_90a -O3 --expt-relaxed-constexpr -DFLASHSERVE_STREAM_DEBUG \
//     -Iinclude bench/tools/sampling_stream.cu -o sampling_stream
//   ./sampling_stream rows vocab top_p stream(0|1)
// Prints the tile, how the histogram bounds decided round 1..n over 20 launches (with
// FLASHSERVE_STREAM_DEBUG: each round's atomics cost a little time) and the mean time of 50
// launches (fp32 normal(0, 1) logits, temperature 1).
#include <cuda_runtime.h>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>
#include "flashserve/sampling/top_k_top_p_kernel.cuh"
namespace fs = flashserve::sampling;
int main(int argc, char** argv) {
  const int rows = argc > 1 ? std::atoi(argv[1]) : 64;
  const int vocab = argc > 2 ? std::atoi(argv[2]) : 128256;
  const float top_p = argc > 3 ? std::atof(argv[3]) : 0.9f;
  const int stream = argc > 4 ? std::atoi(argv[4]) : 1;
  std::vector<float> host(size_t(rows) * vocab);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (float& x : host)
    x = nd(rng);
  float* d_in;
  int* d_ids;
  cudaMalloc(&d_in, host.size() * 4);
  cudaMalloc(&d_ids, rows * 4);
  cudaMemcpy(d_in, host.data(), host.size() * 4, cudaMemcpyHostToDevice);
  fs::DeviceLimits dev;
  cudaDeviceGetAttribute(&dev.num_sms, cudaDevAttrMultiProcessorCount, 0);
  cudaDeviceGetAttribute(&dev.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0);
  fs::SamplingTile tile;
  fs::plan_filter<float, true>(rows, vocab, dev, &tile);
  if (stream) fs::plan_filter_stream<float, true>(rows, vocab, dev, &tile);
  printf("tile cluster %d chunk %d resident %d smem %lld\n", tile.cluster, tile.chunk,
         tile.resident, (long long)tile.smem_bytes);
  fs::FilterParams<float> p;
  p.input = d_in;
  p.input_stride = vocab;
  p.rows = rows;
  p.vocab = vocab;
  p.chunk = tile.chunk;
  p.vec_loads = true;
  p.top_k.value = 0;
  p.top_p.value = top_p;
  p.min_p.value = 0.f;
  p.temperature.value = 1.f;
  p.seed.seed = 1;
  p.out_ids = d_ids;
  fs::launch_filter<float, true>(p, tile, dev, nullptr);
  cudaError_t e = cudaDeviceSynchronize();
  printf("first launch: %s\n", cudaGetErrorString(e));
  unsigned long long z[4] = {0, 0, 0, 0};
#ifdef FLASHSERVE_STREAM_DEBUG
  cudaMemcpyToSymbol(fs::g_stream_stats, z, sizeof(z));
#endif
  for (int it = 0; it < 20; ++it) {
    p.seed.offset = it;
    fs::launch_filter<float, true>(p, tile, dev, nullptr);
  }
  cudaDeviceSynchronize();
#ifdef FLASHSERVE_STREAM_DEBUG
  cudaMemcpyFromSymbol(z, fs::g_stream_stats, sizeof(z));
#endif
  printf("decisions over 20 launches: rejected %llu undecided %llu kept %llu\n", z[0], z[1], z[2]);
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  cudaEventRecord(a);
  for (int it = 0; it < 50; ++it)
    fs::launch_filter<float, true>(p, tile, dev, nullptr);
  cudaEventRecord(b);
  cudaEventSynchronize(b);
  float ms;
  cudaEventElapsedTime(&ms, a, b);
  printf("mean %.2f us per launch\n", ms * 1000 / 50);
  return 0;
}
