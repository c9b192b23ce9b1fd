// Device timing for `flashserve bench`: CUDA events around many launches, median / min / max over
// samples. Three modes, mirrored exactly by bench/peers/torch_peers.py so ratios compare like with
// like:
//   hot (default)  `iters` back-to-back launches between two events per sample
//   --graph        the same `iters` launches captured once into a CUDA graph, replayed per sample
//                  (removes host launch gaps: the kernel's own time)
//   --cold-l2      one launch per sample, after writing a 2 x L2-sized buffer to evict the cache
// Before the samples, `warmup_ms` of wall time of the same launches (graph replays, launch
// batches or single launches) brings a compute-bound kernel to the clock it sustains: under load
// the H100 runs at its 700 W cap near 1.5 GHz, so a case timed right after an idle gap runs at up
// to 1.98 GHz and one timed after other heavy cases does not (bench/NOTES.md: prefill head_dim 128
// b32 x 512, 134 us first in a process, 150..172 us in the sweep). torch_peers.py repeats it.
#pragma once

#include <cuda_runtime_api.h>

#include <functional>
#include <string>
#include <vector>

namespace fs_bench {

struct TimeOptions {
  int iters = 0;     // launches per sample (hot, graph); 0 = enough for ~2 ms per sample
  int samples = 15;  // samples; the median is reported
  int warmup = 5;
  double warmup_ms = 0;  // wall time of launches before the samples (see above)
  bool graph = false;
  bool cold_l2 = false;
};

struct Timing {
  double median_us = 0, min_us = 0, max_us = 0;
  int samples = 0;
  int iters = 0;  // launches per sample actually used
};

std::string mode_name(const TimeOptions& o);

class Timer {
 public:
  explicit Timer(cudaStream_t stream);
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  // Times `launch` (which enqueues one op on the stream). Throws std::runtime_error on CUDA errors.
  Timing time(const std::function<void(cudaStream_t)>& launch, const TimeOptions& o);
  // Device-to-device copy bandwidth (bytes read + written per second) on a 1 GiB buffer, in TB/s.
  double measure_copy_tbps();

 private:
  void flush_l2();
  cudaStream_t stream_;
  cudaEvent_t start_, stop_;
  void* flush_ = nullptr;
  size_t flush_bytes_ = 0;
};

}  // namespace fs_bench
