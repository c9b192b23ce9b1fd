#include "plan/decode_plan.h"

#include "flashserve/attention/tile_policy.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>

namespace flashserve::plan {
namespace {

using attention::decode_merge_group;
using attention::DecodeCounts;
using attention::DecodeMergeItem;
using attention::DecodeWorkItem;
using attention::kDecodeMaxRows;

Status invalid(const char* op, const std::string& what) {
  return Status(StatusCode::kInvalidArgument, std::string(op) + ": " + what);
}

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

size_t align256(size_t x) {
  return (x + 255) / 256 * 256;
}

int64_t q_count(const DecodeScheduleInput& in, int64_t b) {
  return in.q_indptr ? static_cast<int64_t>(in.q_indptr[b + 1]) - in.q_indptr[b] : 1;
}

int64_t kv_len_of(const DecodeScheduleInput& in, int64_t b) {
  const int64_t pages = static_cast<int64_t>(in.indptr[b + 1]) - in.indptr[b];
  return pages > 0 ? (pages - 1) * in.page_size + in.last_page_len[b] : 0;
}

int64_t total_q(const DecodeScheduleInput& in) {
  return in.q_indptr ? in.q_indptr[in.batch] - in.q_indptr[0] : in.batch;
}

int64_t total_kv(const DecodeScheduleInput& in) {
  int64_t t = 0;
  for (int64_t b = 0; b < in.batch; ++b)
    t += kv_len_of(in, b);
  return t;
}

int fixed_split(const DecodeScheduleInput& in) {
  return in.fixed_split_tokens > 0 ? in.fixed_split_tokens : kDefaultFixedSplit;
}

// Row chunks of a request with n query tokens.
int64_t row_chunks(int64_t n, int group) {
  return ceil_div(n * group, kDecodeMaxRows);
}

// A fluid model of a non-deterministic schedule's run time (us) for the choice below: the items
// (longest first) start on `slots` CTAs and later ones on the first CTA to free up; each waits
// kStartUs (its chain of item, page-id and first-tile round trips) and then streams its K / V at
// min(kCtaGBs, kChipGBs / streaming CTAs). Calibrated on the H100 decode kernel (bf16, head_dim
// 128): a CTA alone streams ~22 GB/s, the chip ~3000 GB/s, the start chain ~3.8 us.
double schedule_time_us(const std::vector<int64_t>& tokens, int64_t slots, double kb_per_token) {
  constexpr double kChipGBs = 3000.0, kCtaGBs = 22.0, kStartUs = 3.8;
  struct Run {
    double kb, wait;
  };
  std::vector<Run> active;
  size_t next = 0;
  while (next < tokens.size() && static_cast<int64_t>(active.size()) < slots)
    active.push_back({static_cast<double>(tokens[next++]) * kb_per_token, kStartUs});
  double t = 0.0;
  while (!active.empty()) {
    int streaming = 0;
    for (const Run& r : active)
      streaming += r.wait <= 0.0;
    const double rate = std::min(kCtaGBs, kChipGBs / std::max(streaming, 1));  // KB per us
    double dt = 1e30;
    for (const Run& r : active)
      dt = std::min(dt, r.wait > 0.0 ? r.wait : r.kb / rate);
    t += dt;
    for (size_t i = 0; i < active.size();) {
      Run& r = active[i];
      if (r.wait > 0.0) {
        r.wait -= dt;
        if (r.wait < 1e-9) r.wait = 0.0;
      } else {
        r.kb -= rate * dt;
      }
      if (r.wait <= 0.0 && r.kb <= 1e-9) {
        if (next < tokens.size()) {
          r = {static_cast<double>(tokens[next++]) * kb_per_token, kStartUs};
          ++i;
        } else {
          r = active.back();
          active.pop_back();
        }
      } else {
        ++i;
      }
    }
  }
  return t;
}

// The items' lengths of a split (longest first).
std::vector<int64_t> split_lengths(const DecodeScheduleInput& in, int64_t split) {
  std::vector<int64_t> v;
  for (int64_t b = 0; b < in.batch; ++b) {
    const int64_t len = kv_len_of(in, b);
    const int64_t chunks = row_chunks(q_count(in, b), in.group) * in.num_kv_heads;
    for (int64_t c = 0; c < chunks; ++c) {
      if (split > 0 && len > split) {
        for (int64_t i = 0; i < len; i += split)
          v.push_back(std::min(split, len - i));
      } else {
        v.push_back(len);
      }
    }
  }
  std::sort(v.begin(), v.end(), std::greater<int64_t>());
  return v;
}

// The proportional split (tokens / target, rounded up) cuts each unit into ceil(len / split)
// pieces, so a batch can get up to one item a unit more than the target. With equal lengths the
// pieces past the first wave can then run as a tail on few CTAs after it (12 x 4096 at 8 kv heads:
// 288 items of 1536 / 1536 / 1024 tokens on 264 slots, 84.4 us; at most 2 pieces a unit, 192 items
// of 2048, 78.1 us; 20 x 4096: 320 items 128.2 us, unsplit 121.7 us), or fill in under it (6 x
// 16384: 288 items 140.6 us, 5 pieces a unit 145.6 us). For a near-uniform batch (longest unit <=
// 9/8 of the shortest) whose proportional split gives more items than the target, the alternative
// cuts every unit into at most P = target / units pieces (split = longest / P rounded up; P = 1: no
// split), and schedule_time_us decides: the alternative only where it predicts >= 3% less time.
// Ragged batches keep the proportional split (measured 1..3% faster than fitted splits at 16 x 4k,
// 24 x 4k and 32 x 8k with lengths in [kv / 4, 7 kv / 4), where the model predicted the opposite).
int64_t fit_uniform_split(const DecodeScheduleInput& in, int64_t split, int64_t units,
                          int64_t target) {
  int64_t shortest = INT64_MAX, longest = 0;
  for (int64_t b = 0; b < in.batch; ++b) {
    if (q_count(in, b) == 0) continue;
    const int64_t len = kv_len_of(in, b);
    shortest = std::min(shortest, len);
    longest = std::max(longest, len);
  }
  if (longest == 0 || longest * 8 > shortest * 9) return split;
  const std::vector<int64_t> proportional = split_lengths(in, split);
  if (static_cast<int64_t>(proportional.size()) <= target) return split;
  const int64_t pieces = target / units;
  int64_t fitted = 0;
  if (pieces > 1) {
    fitted = std::max<int64_t>(kMinSplitTokens, ceil_div(longest, pieces));
    fitted = ceil_div(fitted, kSplitGranularity) * kSplitGranularity;
  }
  const double kb_per_token = 2.0 * in.head_dim * 2 / 1024.0;  // K and V, 16-bit
  const double t_split = schedule_time_us(proportional, target, kb_per_token);
  const double t_fitted = schedule_time_us(split_lengths(in, fitted), target, kb_per_token);
  return t_fitted <= 0.97 * t_split ? fitted : split;
}

}  // namespace

namespace {

DecodeCapacity capacity_sizes(const DecodeScheduleInput& in) {
  DecodeCapacity c;
  c.batch = in.max_batch_size > 0 ? in.max_batch_size : in.batch;
  c.q_tokens = in.max_q_tokens > 0
                   ? in.max_q_tokens
                   : std::max(in.max_batch_size > 0 ? c.batch : total_q(in), c.batch);
  c.kv_tokens = in.max_kv_tokens > 0 ? in.max_kv_tokens : total_kv(in);
  return c;
}

// Units (request, kv head, row chunk): sum over requests of ceil(n_b * group / 8) is below
// q_tokens * group / 8 + batch.
int64_t units_of(const DecodeScheduleInput& in, const DecodeCapacity& c) {
  return in.num_kv_heads * (c.batch + ceil_div(c.q_tokens * in.group, kDecodeMaxRows));
}

}  // namespace

int64_t decode_capacity_units(const DecodeScheduleInput& in) {
  return units_of(in, capacity_sizes(in));
}

DecodeCapacity decode_capacity(const DecodeScheduleInput& in) {
  DecodeCapacity c = capacity_sizes(in);
  const int64_t units = units_of(in, c);
  if (in.deterministic) {
    // Each unit adds at most kv_len / F items beyond its first; a request has at most `group`
    // row chunks (8 query tokens x group rows / 8).
    const int64_t chunks_per_request =
        ceil_div(int64_t{kMaxQueryTokens} * in.group, kDecodeMaxRows);
    c.work = units + in.num_kv_heads * chunks_per_request * ceil_div(c.kv_tokens, fixed_split(in));
  } else {
    // split >= total unit tokens / target, so the items beyond one per unit are <= target.
    c.work = units + std::max(in.target_ctas, 1);
  }
  c.merge = units;
  // Every item may write a partial; a two-level merge adds at most 3/8 of a unit's partials as
  // group partials (decode_merge_group).
  c.partials = c.work + (3 * c.work + 7) / 8;
  return c;
}

DecodeWorkspaceLayout decode_workspace_layout(const DecodeCapacity& cap, int head_dim) {
  DecodeWorkspaceLayout l;
  l.counts = 0;
  l.work = align256(sizeof(DecodeCounts));
  l.merge = align256(l.work + cap.work * sizeof(DecodeWorkItem));
  l.counters = decode_counters_offset(l.merge, cap.merge);
  // Counters: one per unit, then one per partial slot (a group's counter sits at the slot of its
  // first partial).
  l.partial_out = align256(l.counters + (cap.merge + cap.partials) * sizeof(int32_t));
  l.partial_lse = align256(l.partial_out + static_cast<size_t>(cap.partials) * kDecodeMaxRows *
                                               head_dim * sizeof(float));
  l.total =
      align256(l.partial_lse + static_cast<size_t>(cap.partials) * kDecodeMaxRows * sizeof(float));
  return l;
}

Status make_decode_schedule(const char* op, const DecodeScheduleInput& in, DecodeSchedule* out) {
  if (in.batch < 0)
    return invalid(op, "batch_size: expected >= 0, got " + std::to_string(in.batch));
  if (in.batch > 0 && (in.indptr == nullptr || in.last_page_len == nullptr)) {
    return invalid(op, "indptr: expected host copies of table.indptr and table.last_page_len");
  }
  if (in.indptr && in.indptr[0] != 0) {
    return invalid(op, "indptr: expected indptr[0] == 0, got " + std::to_string(in.indptr[0]));
  }
  if (in.q_indptr && in.q_indptr[0] != 0) {
    return invalid(op,
                   "q_indptr: expected q_indptr[0] == 0, got " + std::to_string(in.q_indptr[0]));
  }
  for (int64_t b = 0; b < in.batch; ++b) {
    const std::string req = "request " + std::to_string(b) + ": ";
    if (in.indptr[b + 1] < in.indptr[b]) {
      return invalid(op, "indptr: " + req + "expected a non-decreasing array, got indptr[" +
                             std::to_string(b) + "] = " + std::to_string(in.indptr[b]) +
                             " > indptr[" + std::to_string(b + 1) +
                             "] = " + std::to_string(in.indptr[b + 1]));
    }
    const bool has_pages = in.indptr[b + 1] > in.indptr[b];
    const int32_t last = in.last_page_len[b];
    if (has_pages ? (last < 1 || last > in.page_size) : last != 0) {
      return invalid(op, "last_page_len: " + req + "expected " +
                             (has_pages ? "a value in [1, " + std::to_string(in.page_size) + "]"
                                        : std::string("0 for a request without pages")) +
                             ", got " + std::to_string(last));
    }
    const int64_t n = q_count(in, b);
    if (n < 0 || n > kMaxQueryTokens) {
      return invalid(op, "q_indptr: " + req + "expected 0.." + std::to_string(kMaxQueryTokens) +
                             " query tokens, got " + std::to_string(n));
    }
    if (kv_len_of(in, b) > INT32_MAX) {
      return invalid(op, "indptr: " + req + "kv length over 2^31-1");
    }
  }
  DecodeSchedule& s = *out;
  s = DecodeSchedule();
  s.capacity = decode_capacity(in);
  s.layout = decode_workspace_layout(s.capacity, in.head_dim);
  s.q_tokens = total_q(in);
  if (in.batch > s.capacity.batch) {
    return invalid(op, "batch_size: " + std::to_string(in.batch) +
                           " requests exceed max_batch_size " + std::to_string(s.capacity.batch));
  }
  if (s.q_tokens > s.capacity.q_tokens) {
    return invalid(op, "q_indptr: " + std::to_string(s.q_tokens) +
                           " query tokens exceed max_q_tokens " +
                           std::to_string(s.capacity.q_tokens));
  }
  const int64_t kv_tokens = total_kv(in);
  if (in.deterministic && kv_tokens > s.capacity.kv_tokens) {
    return invalid(op, "indptr: " + std::to_string(kv_tokens) + " kv tokens exceed max_kv_tokens " +
                           std::to_string(s.capacity.kv_tokens));
  }

  // Split length.
  int64_t split = 0;
  if (in.deterministic) {
    split = fixed_split(in);
  } else {
    int64_t unit_tokens = 0, units = 0;
    for (int64_t b = 0; b < in.batch; ++b) {
      const int64_t chunks = row_chunks(q_count(in, b), in.group) * in.num_kv_heads;
      unit_tokens += chunks * kv_len_of(in, b);
      units += chunks;
    }
    const int64_t target = std::max(in.target_ctas, 1);
    if (units < target) {
      split = std::max<int64_t>(kMinSplitTokens, ceil_div(unit_tokens, target));
      split = ceil_div(split, kSplitGranularity) * kSplitGranularity;
      if (in.fit_uniform_splits) split = fit_uniform_split(in, split, units, target);
    }
  }

  int64_t partial = 0;
  for (int64_t b = 0; b < in.batch; ++b) {
    const int64_t n = q_count(in, b);
    if (n == 0) continue;
    const int64_t len = kv_len_of(in, b);
    const int64_t splits = split > 0 && len > split ? ceil_div(len, split) : 1;
    const int64_t rows = n * in.group;
    for (int h = 0; h < in.num_kv_heads; ++h) {
      for (int64_t r0 = 0; r0 < rows; r0 += kDecodeMaxRows) {
        DecodeWorkItem w;
        w.request = static_cast<int32_t>(b);
        w.kv_head = h;
        w.row_begin = static_cast<int32_t>(r0);
        w.row_end = static_cast<int32_t>(std::min<int64_t>(rows, r0 + kDecodeMaxRows));
        w.kv_len = static_cast<int32_t>(len);
        w.q_begin = in.q_indptr ? in.q_indptr[b] : static_cast<int32_t>(b);
        w.num_q = static_cast<int32_t>(n);
        w.page_begin = in.indptr[b];
        w.page_end = in.indptr[b + 1];
        int64_t groups = 0;
        if (splits > 1) {
          w.merge = static_cast<int32_t>(s.merge.size());
          w.num_partials = static_cast<int32_t>(splits);
          w.partial_begin = static_cast<int32_t>(partial);
          w.merge_group = decode_merge_group(static_cast<int>(splits), w.row_end - w.row_begin,
                                             in.head_dim, in.cta_threads);
          if (w.merge_group > 0) groups = ceil_div(splits, w.merge_group);
          DecodeMergeItem m;
          m.request = w.request;
          m.kv_head = h;
          m.row_begin = w.row_begin;
          m.row_end = w.row_end;
          m.q_begin = w.q_begin;
          m.num_q = w.num_q;
          m.partial_begin = static_cast<int32_t>(partial);
          m.num_partials = static_cast<int32_t>(splits);
          s.merge.push_back(m);
        }
        for (int64_t i = 0; i < splits; ++i) {
          w.kv_begin = static_cast<int32_t>(i * (splits > 1 ? split : 0));
          w.kv_end = static_cast<int32_t>(splits > 1 ? std::min(len, (i + 1) * split) : len);
          w.partial = splits > 1 ? static_cast<int32_t>(partial++) : -1;
          s.work.push_back(w);
        }
        partial += groups;  // the group partials' slots follow the unit's split partials
      }
    }
  }
  // Longest items first (the persistent grid takes items in order, so short ones fill the tail);
  // the sort is stable, so row chunks of one kv range stay adjacent, run side by side and share
  // their K/V through L2.
  std::stable_sort(s.work.begin(), s.work.end(),
                   [](const DecodeWorkItem& a, const DecodeWorkItem& b) {
                     return a.kv_end - a.kv_begin > b.kv_end - b.kv_begin;
                   });
  s.num_partials = partial;
  s.split_tokens = static_cast<int>(split);
  if (static_cast<int64_t>(s.work.size()) > s.capacity.work ||
      static_cast<int64_t>(s.merge.size()) > s.capacity.merge || partial > s.capacity.partials) {
    return Status(StatusCode::kInternal, std::string(op) + ": the schedule exceeds its capacity");
  }
  return Status();
}

std::vector<unsigned char> decode_workspace_image(const DecodeSchedule& s) {
  // Up to the group counters of this plan's partial slots, all counters 0 (the kernel leaves them
  // at 0 again).
  std::vector<unsigned char> img(
      s.layout.counters + (s.capacity.merge + s.num_partials) * sizeof(int32_t), 0);
  DecodeCounts counts;
  counts.num_work = static_cast<int32_t>(s.work.size());
  counts.num_merge = static_cast<int32_t>(s.merge.size());
  std::memcpy(img.data() + s.layout.counts, &counts, sizeof(counts));
  if (!s.work.empty())
    std::memcpy(img.data() + s.layout.work, s.work.data(), s.work.size() * sizeof(DecodeWorkItem));
  if (!s.merge.empty()) {
    std::memcpy(img.data() + s.layout.merge, s.merge.data(),
                s.merge.size() * sizeof(DecodeMergeItem));
  }
  return img;
}

}  // namespace flashserve::plan
