#include "plan/decode_plan.h"

#include "flashserve/attention/tile_policy.h"

#include <algorithm>
#include <cstring>
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
