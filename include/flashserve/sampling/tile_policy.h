// How a sampling kernel lays a row out on the GPU; the one place its tuning choices live.
//
// A row is owned by one thread-block cluster. Each CTA of the cluster holds a `chunk` of the row
// in shared memory (4 bytes an element: float bits or an order-preserving key), so the row is
// read from global memory once and every filtering pass runs on chip; cluster-wide histograms and
// scans go through distributed shared memory.
//
//  - cluster: the fewest CTAs (a power of two) whose chunks fit in kTwoPerSmBytes, so that two
//    CTAs share an SM and one loads while the other filters (128256 fp32 -> 8 CTAs of 64 KB,
//    151936 -> 8 of 76 KB); else the fewest that fit at all (one CTA per SM).
//  - small batches: clusters grow (up to max_cluster, 16 with the non-portable attribute) while
//    the whole grid still has at most one CTA per SM and each chunk keeps >= kMinSplitChunk
//    elements: a single row then spreads over 16 SMs, which cuts its latency.
//  - short rows (<= kSmallChunk elements per CTA): 128 threads a CTA.
//  - rows too long for even max_cluster CTAs (> ~800k elements): streaming. Nothing of the row is
//    kept in shared memory (only each warp's value histogram, stream_hist.cuh) and a pass after
//    the load reads the row again from global memory.
//  - sampling from logits in batches of about as many rows as SMs or more, which the resident
//    layout runs in waves (prefer_stream): streaming as well, one or two CTAs a row
//    (choose_stream_tile), every row's CTAs resident at once and the memory streaming without
//    pause; the rows it leaves undecided go to a resume launch of the resident kernel.
#pragma once

#include <algorithm>
#include <cstdint>

namespace flashserve::sampling {

constexpr int kSamplingThreads = 512;
constexpr int kChunkAlign = 8;  // a 16-byte-aligned row stays aligned in every CTA's slice
constexpr int64_t kTwoPerSmBytes = 100 * 1024;
constexpr int64_t kMinSplitChunk = 4096;
// Short rows (up to a few thousand elements) take 128 threads: a 512-thread CTA would idle most of
// its warps and hold registers that other rows' CTAs could use.
constexpr int64_t kSmallChunk = 2048;
constexpr int kSmallChunkThreads = 128;
// Streaming: each warp's histogram of its values (stream_hist.cuh), in dynamic shared memory.
constexpr int kHistBins = 1024;
// Streaming pays for its histogram and later passes over global memory only when the rows are
// long enough that the resident layout's waves cost more.
constexpr int64_t kMinStreamVocab = 16384;

inline int64_t stream_hist_bytes(int threads) {
  return static_cast<int64_t>(threads / 32) * kHistBins * 4;
}
struct SamplingTile {
  int cluster = 1;  // CTAs per row
  int threads = kSamplingThreads;
  int chunk = 0;  // row elements per CTA, a multiple of kChunkAlign
  bool resident = true;
  int64_t smem_bytes = 0;  // dynamic shared memory per CTA
};

inline int64_t sampling_chunk(int64_t vocab, int cluster) {
  const int64_t per = (vocab + cluster - 1) / cluster;
  return std::max<int64_t>(kChunkAlign, (per + kChunkAlign - 1) / kChunkAlign * kChunkAlign);
}

// rows, vocab: the call's shape; num_sms: the device's; max_dyn_smem: dynamic shared memory a CTA
// may use (opt-in limit minus the kernel's static shared memory); max_cluster: 8, or 16 where the
// device accepts non-portable cluster sizes.
inline SamplingTile choose_sampling_tile(int64_t rows, int64_t vocab, int num_sms,
                                         int64_t max_dyn_smem, int max_cluster) {
  SamplingTile t;
  auto bytes = [&](int c) { return sampling_chunk(vocab, c) * 4; };
  int cluster = 0;
  for (int c = 1; c <= max_cluster && cluster == 0; c *= 2) {
    if (bytes(c) <= std::min(kTwoPerSmBytes, max_dyn_smem)) cluster = c;
  }
  for (int c = 1; c <= max_cluster && cluster == 0; c *= 2) {
    if (bytes(c) <= max_dyn_smem) cluster = c;
  }
  if (cluster == 0) {
    t.cluster = max_cluster;
    t.resident = false;
    t.chunk = static_cast<int>(sampling_chunk(vocab, max_cluster));
    t.smem_bytes = stream_hist_bytes(t.threads);
    return t;
  }
  while (cluster < max_cluster && rows * cluster * 2 <= num_sms &&
         sampling_chunk(vocab, cluster * 2) >= kMinSplitChunk) {
    cluster *= 2;
  }
  t.cluster = cluster;
  t.chunk = static_cast<int>(sampling_chunk(vocab, cluster));
  t.smem_bytes = bytes(cluster);
  t.threads = t.chunk <= kSmallChunk ? kSmallChunkThreads : kSamplingThreads;
  return t;
}

// Whether a sampling call from logits (token ids, no top-k or min-p filter on any row) streams:
// when the resident tile `resident` would need more than one wave of two CTAs a SM, the rows are
// long, and there are more rows than SMs, so that each row streams through one CTA. Measured on
// the H100 (bench/NOTES.md, sampling v10): top-p 0.9 from fp32 logits at 256 x 128256 113 -> 102
// us, 512 rows 214 -> 171; but 128 rows (two CTAs a row) 64 -> 67 and 64 rows (four) 35 -> 38:
// with a few load rounds per CTA the rows that sweep again set the time.
// `plain`: no filter on any row (the streaming kernel decides every row itself); else rows it
// leaves undecided go to a resume launch of the resident kernel (launch_filter), which pays off
// from about as many rows as SMs (measured on the H100: 128 rows faster streamed, 100 slower;
// plain sampling faster streamed from 100 rows, 2 CTAs a row).
inline bool prefer_stream(int64_t rows, int64_t vocab, int num_sms, const SamplingTile& resident,
                          bool plain) {
  const int64_t sms = num_sms;
  const bool enough = plain ? 2 * rows > sms : 8 * rows > 7 * sms;
  return resident.resident && vocab >= kMinStreamVocab && enough &&
         rows * resident.cluster > 2 * sms;
}

// The streaming tile: the largest cluster (a power of two, at most max_cluster) whose CTAs, two a
// SM, all run at once (at least one CTA a row), 512 threads, each warp's histogram in dynamic
// shared memory.
inline SamplingTile choose_stream_tile(int64_t rows, int64_t vocab, int num_sms, int max_cluster) {
  SamplingTile t;
  int cluster = 1;
  while (cluster < max_cluster && rows * cluster * 2 <= 2 * static_cast<int64_t>(num_sms) &&
         sampling_chunk(vocab, cluster * 2) >= kMinSplitChunk) {
    cluster *= 2;
  }
  t.cluster = cluster;
  t.chunk = static_cast<int>(sampling_chunk(vocab, cluster));
  t.resident = false;
  t.threads = kSamplingThreads;
  t.smem_bytes = stream_hist_bytes(t.threads);
  return t;
}

}  // namespace flashserve::sampling
