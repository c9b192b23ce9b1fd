#include "harness/timer.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>

namespace fs_bench {
namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

Timing summarize(std::vector<double> us) {
  Timing t;
  std::sort(us.begin(), us.end());
  t.samples = static_cast<int>(us.size());
  t.min_us = us.front();
  t.max_us = us.back();
  const size_t n = us.size();
  t.median_us = n % 2 ? us[n / 2] : 0.5 * (us[n / 2 - 1] + us[n / 2]);
  return t;
}

// Calls `run` (which enqueues work on `stream`) until `ms` of wall time have passed.
void run_for(double ms, cudaStream_t stream, const std::function<void()>& run) {
  if (ms <= 0) return;
  const auto t0 = std::chrono::steady_clock::now();
  do {
    run();
    check(cudaStreamSynchronize(stream), "warmup");
  } while (
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() <
      ms);
}

}  // namespace

std::string mode_name(const TimeOptions& o) {
  return o.cold_l2 ? (o.graph ? "cold-graph" : "cold") : (o.graph ? "graph" : "hot");
}

Timer::Timer(cudaStream_t stream) : stream_(stream) {
  check(cudaEventCreate(&start_), "cudaEventCreate");
  check(cudaEventCreate(&stop_), "cudaEventCreate");
}

Timer::~Timer() {
  cudaEventDestroy(start_);
  cudaEventDestroy(stop_);
  if (flush_) cudaFree(flush_);
}

void Timer::flush_l2() {
  if (!flush_) {
    int dev = 0, l2 = 0;
    check(cudaGetDevice(&dev), "cudaGetDevice");
    check(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev), "L2 size");
    flush_bytes_ = 2 * static_cast<size_t>(l2);
    check(cudaMalloc(&flush_, flush_bytes_), "cudaMalloc(flush)");
  }
  check(cudaMemsetAsync(flush_, 0, flush_bytes_, stream_), "flush");
}

Timing Timer::time(const std::function<void(cudaStream_t)>& launch, const TimeOptions& opts) {
  TimeOptions o = opts;
  for (int i = 0; i < o.warmup; ++i)
    launch(stream_);
  check(cudaStreamSynchronize(stream_), "warmup");
  std::vector<double> us;
  float ms = 0;
  if (o.iters <= 0) {
    check(cudaEventRecord(start_, stream_), "record");
    for (int i = 0; i < 3; ++i)
      launch(stream_);
    check(cudaEventRecord(stop_, stream_), "record");
    check(cudaEventSynchronize(stop_), "sync");
    check(cudaEventElapsedTime(&ms, start_, stop_), "elapsed");
    const double one_us = std::max(ms * 1e3 / 3, 1.0);
    o.iters = static_cast<int>(std::min(200.0, std::max(3.0, 2000.0 / one_us)));
  }
  if (o.cold_l2) {
    cudaGraphExec_t exec = nullptr;
    if (o.graph) {
      cudaGraph_t graph;
      check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "capture");
      launch(stream_);
      check(cudaStreamEndCapture(stream_, &graph), "end capture");
      check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
      cudaGraphDestroy(graph);
    }
    run_for(o.warmup_ms, stream_, [&] {
      if (exec) {
        check(cudaGraphLaunch(exec, stream_), "graph launch");
      } else {
        launch(stream_);
      }
    });
    const int n = std::max(o.samples, o.iters);
    for (int s = 0; s < n; ++s) {
      flush_l2();
      check(cudaEventRecord(start_, stream_), "record");
      if (exec) {
        check(cudaGraphLaunch(exec, stream_), "graph launch");
      } else {
        launch(stream_);
      }
      check(cudaEventRecord(stop_, stream_), "record");
      check(cudaEventSynchronize(stop_), "sync");
      check(cudaEventElapsedTime(&ms, start_, stop_), "elapsed");
      us.push_back(ms * 1e3);
    }
    if (exec) cudaGraphExecDestroy(exec);
    Timing t = summarize(us);
    t.iters = 1;
    return t;
  }
  if (o.graph) {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "capture");
    for (int i = 0; i < o.iters; ++i)
      launch(stream_);
    check(cudaStreamEndCapture(stream_, &graph), "end capture");
    check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
    cudaGraphDestroy(graph);
    check(cudaGraphLaunch(exec, stream_), "graph warmup");
    run_for(o.warmup_ms, stream_, [&] { check(cudaGraphLaunch(exec, stream_), "graph warmup"); });
    for (int s = 0; s < o.samples; ++s) {
      check(cudaEventRecord(start_, stream_), "record");
      check(cudaGraphLaunch(exec, stream_), "graph launch");
      check(cudaEventRecord(stop_, stream_), "record");
      check(cudaEventSynchronize(stop_), "sync");
      check(cudaEventElapsedTime(&ms, start_, stop_), "elapsed");
      us.push_back(ms * 1e3 / o.iters);
    }
    cudaGraphExecDestroy(exec);
    Timing t = summarize(us);
    t.iters = o.iters;
    return t;
  }
  run_for(o.warmup_ms, stream_, [&] {
    for (int i = 0; i < o.iters; ++i)
      launch(stream_);
  });
  for (int s = 0; s < o.samples; ++s) {
    check(cudaEventRecord(start_, stream_), "record");
    for (int i = 0; i < o.iters; ++i)
      launch(stream_);
    check(cudaEventRecord(stop_, stream_), "record");
    check(cudaEventSynchronize(stop_), "sync");
    check(cudaEventElapsedTime(&ms, start_, stop_), "elapsed");
    us.push_back(ms * 1e3 / o.iters);
  }
  Timing t = summarize(us);
  t.iters = o.iters;
  return t;
}

double Timer::measure_copy_tbps() {
  const size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  check(cudaMalloc(&a, bytes), "cudaMalloc(copy)");
  check(cudaMalloc(&b, bytes), "cudaMalloc(copy)");
  check(cudaMemsetAsync(a, 1, bytes, stream_), "memset");
  TimeOptions o;
  o.iters = 5;
  o.samples = 9;
  o.warmup = 2;
  Timing t = time(
      [&](cudaStream_t s) {
        check(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s), "copy");
      },
      o);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * bytes / (t.median_us * 1e-6) / 1e12;
}

}  // namespace fs_bench
