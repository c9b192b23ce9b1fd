#include "plan/prefill_plan.h"

#include <algorithm>
#include <cstring>
#include <queue>
#include <utility>
#include <string>

namespace flashserve::plan {
namespace {

Status invalid(const char* op, const std::string& what) {
  return Status(StatusCode::kInvalidArgument, std::string(op) + ": " + what);
}

size_t align256(size_t x) {
  return (x + 255) / 256 * 256;
}

Status fill_indptr(const char* op, const char* name, const int32_t* indptr, int64_t batch,
                   int uniform, std::vector<int32_t>* out) {
  out->assign(batch + 1, 0);
  if (indptr == nullptr) {
    if (uniform < 0) return invalid(op, std::string("req.") + name + ": expected >= 0");
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t next = (*out)[b] + static_cast<int64_t>(uniform);
      if (next > INT32_MAX) return invalid(op, std::string("req.") + name + ": total over 2^31");
      (*out)[b + 1] = static_cast<int32_t>(next);
    }
    return Status();
  }
  const std::string arr = std::string("req.") + name + "_indptr";
  if (indptr[0] != 0) return invalid(op, arr + "[0]: expected 0, got " + std::to_string(indptr[0]));
  for (int64_t b = 0; b < batch; ++b) {
    if (indptr[b + 1] < indptr[b]) {
      return invalid(op, arr + ": expected non-decreasing values, got [" + std::to_string(b) +
                             "] = " + std::to_string(indptr[b]) + " > [" + std::to_string(b + 1) +
                             "] = " + std::to_string(indptr[b + 1]));
    }
    (*out)[b + 1] = indptr[b + 1];
  }
  return Status();
}

// The finishing time of the last of `grid` CTAs that take items of these costs longest first,
// each from a shared queue when it frees (the kernel's schedule, without the L2 groups).
int64_t lpt_makespan(std::vector<int64_t> costs, int grid) {
  std::sort(costs.begin(), costs.end(), std::greater<int64_t>());
  std::priority_queue<int64_t, std::vector<int64_t>, std::greater<int64_t>> free_at;
  for (int c = 0; c < grid; ++c)
    free_at.push(0);
  int64_t end = 0;
  for (int64_t c : costs) {
    const int64_t t = free_at.top() + c;
    free_at.pop();
    free_at.push(t);
    end = std::max(end, t);
  }
  return end;
}

// Pieces a tile of `blocks` kv blocks is cut into when pieces hold at most `piece` blocks, none
// under `min_blocks`.
int64_t split_count(int64_t blocks, int64_t piece, int64_t min_blocks) {
  if (blocks <= piece || blocks < 2 * min_blocks) return 1;
  return std::min((blocks + piece - 1) / piece, blocks / min_blocks);
}

}  // namespace

size_t prefill_split_counter_bytes(int64_t capacity) {
  return align256(static_cast<size_t>(std::max<int64_t>(capacity, 0)) *
                  attention::kPrefillMaxConsumerWG * sizeof(int32_t));
}

PrefillSplitLayout prefill_split_layout(size_t work_offset, int64_t work_capacity, int64_t capacity,
                                        int block_m, int head_dim_v) {
  PrefillSplitLayout l;
  const size_t slots = static_cast<size_t>(std::max<int64_t>(capacity, 0));
  l.counters = work_offset - prefill_split_counter_bytes(capacity);
  l.lse = align256(work_offset + work_capacity * sizeof(attention::PrefillWorkItem));
  l.o = l.lse + align256(slots * block_m * sizeof(float));
  l.end = l.o + align256(slots * block_m * static_cast<size_t>(head_dim_v) * sizeof(float));
  return l;
}

int64_t prefill_visible_keys(int row, int q_len, int kv_len, bool causal, int window_left,
                             int window_right) {
  const int64_t pos = static_cast<int64_t>(row) + kv_len - q_len;
  int64_t hi = kv_len - 1;
  if (causal) hi = std::min(hi, pos);
  if (!causal && window_right >= 0) hi = std::min(hi, pos + window_right);
  int64_t lo = 0;
  if (window_left >= 0) lo = std::max<int64_t>(0, pos - window_left);
  return std::max<int64_t>(0, hi - lo + 1);
}

Status make_prefill_schedule(const char* op, const PrefillScheduleInput& in, PrefillSchedule* s) {
  *s = PrefillSchedule();
  if (in.batch < 0) return invalid(op, "req.batch_size: expected >= 0");
  Status st = fill_indptr(op, "qo", in.qo_indptr, in.batch, in.q_len, &s->qo_indptr);
  if (st.ok()) st = fill_indptr(op, "kv", in.kv_indptr, in.batch, in.kv_len, &s->kv_indptr);
  if (!st.ok()) return st;
  s->total_q = s->qo_indptr.back();
  s->total_kv = s->kv_indptr.back();

  const int kv_heads = in.num_kv_heads > 0 ? in.num_kv_heads : in.num_qo_heads;
  if (kv_heads < 1 || in.num_qo_heads % kv_heads != 0)
    return invalid(op, "req.num_kv_heads: expected a divisor of num_qo_heads");
  const int head_group = in.num_qo_heads / kv_heads;
  const int64_t pair_bytes_per_token =
      2 * static_cast<int64_t>(in.head_dim + (in.head_dim_v != 0 ? in.head_dim_v : in.head_dim));
  const int64_t l2_budget = in.l2_group_bytes > 0 ? in.l2_group_bytes : kPrefillL2GroupBytes;

  struct Keyed {
    int64_t group;  // L2 group of the item's (request, kv head)
    int64_t cost;   // kv blocks + 1 (+ 1 for a split piece's partial and merge)
    attention::PrefillWorkItem item;
    int64_t n_min, n_max;  // the tile's visible kv blocks
  };
  std::vector<Keyed> items;
  int64_t group = 0, group_bytes = 0;  // the (request, kv head) pairs of the current L2 group
  for (int64_t b = 0; b < in.batch; ++b) {
    const int q_len = s->qo_indptr[b + 1] - s->qo_indptr[b];
    const int kv_len = s->kv_indptr[b + 1] - s->kv_indptr[b];
    if (q_len == 0) continue;
    // This request's kv heads, in order, join the current group until it holds l2_budget bytes.
    std::vector<int64_t> head_groups(kv_heads);
    for (int h = 0; h < kv_heads; ++h) {
      const int64_t bytes = pair_bytes_per_token * kv_len;
      if (group_bytes > 0 && group_bytes + bytes > l2_budget) {
        ++group;
        group_bytes = 0;
      }
      head_groups[h] = group;
      group_bytes += bytes;
    }
    for (int m = 0; m * in.block_m < q_len; ++m) {
      // kv blocks the kernel will visit for this tile (the same bounds as PrefillMask), plus one
      // for the fixed cost of a tile (Q load, epilogue).
      const int row_first = m * in.block_m;
      const int row_last = std::min(row_first + in.block_m, q_len) - 1;
      const int64_t off = static_cast<int64_t>(kv_len) - q_len;
      int64_t col_end = kv_len;
      if (in.causal) col_end = std::min<int64_t>(col_end, row_last + off + 1);
      if (!in.causal && in.window_right >= 0)
        col_end = std::min<int64_t>(col_end, row_last + off + in.window_right + 1);
      int64_t col_begin = 0;
      if (in.window_left >= 0) col_begin = std::max<int64_t>(0, row_first + off - in.window_left);
      const int64_t n_min = col_begin / in.block_n;
      const int64_t n_max = col_end <= 0 ? 0 : (col_end + in.block_n - 1) / in.block_n;
      const int64_t cost = std::max<int64_t>(0, n_max - n_min) + 1;
      for (int h = 0; h < in.num_qo_heads; ++h) {
        attention::PrefillWorkItem it;
        it.request = static_cast<int32_t>(b);
        it.m_block = m;
        it.qo_head = h;
        items.push_back({head_groups[h / head_group], cost, it, n_min, std::max(n_min, n_max)});
      }
    }
    for (int r = 0; r < q_len; ++r) {
      s->flops += 2.0 * (in.head_dim + (in.head_dim_v != 0 ? in.head_dim_v : in.head_dim)) *
                  in.num_qo_heads *
                  static_cast<double>(prefill_visible_keys(r, q_len, kv_len, in.causal,
                                                           in.window_left, in.window_right));
    }
  }
  s->batch_capacity = std::max<int64_t>(in.max_batch_size, in.batch);
  const int64_t q_cap = std::max<int64_t>(in.max_q_tokens, s->total_q);
  // Tiles per head: each request adds at most one partial tile beyond total / block_m.
  const int64_t tiles = q_cap / in.block_m + s->batch_capacity;
  const int64_t head_dim_v = in.head_dim_v != 0 ? in.head_dim_v : in.head_dim;
  const int64_t slot_bytes = int64_t{in.block_m} * (head_dim_v + 1) * 4;
  s->split_capacity = in.split_bytes > 0
                          ? in.split_bytes / slot_bytes
                          : std::max(kPrefillSplitBytes / slot_bytes, kPrefillMinSplitSlots);
  if (!in.split_kv) s->split_capacity = 0;
  if (s->split_capacity < 2) s->split_capacity = 0;
  // A split tile of n pieces adds n - 1 items, and all pieces fit the partial slots.
  s->work_capacity =
      std::max<int64_t>(static_cast<int64_t>(items.size()), tiles * in.num_qo_heads) +
      s->split_capacity;
  s->grid = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(std::max(in.num_ctas, 1), s->work_capacity)));

  // Split-KV: where the longest tile would run past the mean load of a CTA (too few tiles for
  // the CTAs, or one long request among short ones), cut the longest tiles into pieces of at most
  // `piece` blocks, choosing the piece size whose schedule finishes first (at least 5% sooner than
  // without splitting; each piece costs a block more for its partial and the merge).
  const int64_t min_blocks =
      std::max<int64_t>(1, (kPrefillMinSplitTokens + in.block_n - 1) / in.block_n);
  // The items with every tile of more than `piece` blocks cut into pieces; *partials: the slots
  // the pieces take.
  auto cut = [&](int64_t piece, int64_t* partials) {
    std::vector<Keyed> out;
    out.reserve(items.size());
    *partials = 0;
    for (const Keyed& k : items) {
      const int64_t blocks = k.n_max - k.n_min;
      const int64_t n = split_count(blocks, piece, min_blocks);
      if (n == 1) {
        out.push_back(k);
        continue;
      }
      for (int64_t i = 0; i < n; ++i) {
        Keyed part = k;
        const int64_t lo = k.n_min + blocks * i / n, hi = k.n_min + blocks * (i + 1) / n;
        part.cost = hi - lo + 2;
        part.item.n_begin = i == 0 ? 0 : static_cast<int32_t>(lo);
        part.item.n_end = i == n - 1 ? INT32_MAX : static_cast<int32_t>(hi);
        part.item.split = static_cast<int32_t>(*partials);
        part.item.split_index = static_cast<int16_t>(i);
        part.item.num_splits = static_cast<int16_t>(n);
        out.push_back(part);
      }
      *partials += n;
    }
    return out;
  };
  auto makespan = [&](const std::vector<Keyed>& list) {
    std::vector<int64_t> costs;
    costs.reserve(list.size());
    for (const Keyed& k : list)
      costs.push_back(k.cost);
    return lpt_makespan(std::move(costs), s->grid);
  };
  int64_t total = 0, max_blocks = 0;
  for (const Keyed& k : items) {
    total += k.cost;
    max_blocks = std::max(max_blocks, k.n_max - k.n_min);
  }
  const bool uneven = (max_blocks + 1) * s->grid * 4 > total * 5;
  if (s->split_capacity > 0 && s->grid > 1 && max_blocks >= 2 * min_blocks && uneven) {
    const int64_t base = makespan(items);
    int64_t best = base, best_piece = 0;
    const int64_t max_k = std::min<int64_t>(64, max_blocks / min_blocks);
    for (int64_t k = 2; k <= max_k; ++k) {
      const int64_t piece = (max_blocks + k - 1) / k;
      int64_t partials = 0;
      const std::vector<Keyed> pieces = cut(piece, &partials);
      if (partials > s->split_capacity) break;  // smaller pieces only need more slots
      const int64_t t = makespan(pieces);
      if (t < best) {
        best = t;
        best_piece = piece;
      }
    }
    if (best_piece > 0 && best * 20 <= base * 19) items = cut(best_piece, &s->num_partials);
  }

  // L2 groups in order, longest first within each: the tiles that run at the same time share
  // their K and V in L2, and each group's short tiles fill the gaps its long ones leave. Ties:
  // (request, kv head, m_block, q head), so that neighbours read the same K and V.
  std::stable_sort(items.begin(), items.end(), [&](const Keyed& a, const Keyed& b) {
    if (a.group != b.group) return a.group < b.group;
    if (a.cost != b.cost) return a.cost > b.cost;
    const int ha = a.item.qo_head / head_group, hb = b.item.qo_head / head_group;
    if (a.item.request != b.item.request) return a.item.request < b.item.request;
    if (ha != hb) return ha < hb;
    if (a.item.m_block != b.item.m_block) return a.item.m_block < b.item.m_block;
    if (a.item.qo_head != b.item.qo_head) return a.item.qo_head < b.item.qo_head;
    return a.item.split_index < b.item.split_index;
  });
  s->work.reserve(items.size());
  for (const Keyed& k : items)
    s->work.push_back(k.item);

  // Each CTA's items, as the kernel's persistent CTAs would take them from a shared queue in
  // this order (each takes the next item when it finishes one, the cost in kv blocks + 1):
  // precomputed here, so the kernel needs no atomics and the schedule is deterministic. Item k
  // < grid starts CTA k's chain; each item names its CTA's next one.
  {
    using Slot = std::pair<int64_t, int>;  // (time the CTA is free, CTA)
    std::priority_queue<Slot, std::vector<Slot>, std::greater<Slot>> free_at;
    for (int c = 0; c < s->grid; ++c)
      free_at.push({0, c});
    std::vector<int32_t> last(s->grid, -1);
    for (size_t w = 0; w < items.size(); ++w) {
      const auto [time, cta] = free_at.top();
      free_at.pop();
      if (last[cta] >= 0) s->work[last[cta]].next = static_cast<int32_t>(w);
      last[cta] = static_cast<int32_t>(w);
      free_at.push({time + items[w].cost, cta});
    }
  }
  PrefillWorkspaceLayout& l = s->layout;
  l.counts = 0;
  l.qo_indptr = align256(sizeof(attention::PrefillCounts));
  l.kv_indptr = l.qo_indptr + align256((s->batch_capacity + 1) * sizeof(int32_t));
  l.work = l.kv_indptr + align256((s->batch_capacity + 1) * sizeof(int32_t)) +
           prefill_split_counter_bytes(s->split_capacity);
  l.split = prefill_split_layout(l.work, s->work_capacity, s->split_capacity, in.block_m,
                                 static_cast<int>(head_dim_v));
  l.total = l.split.end;
  return Status();
}

std::vector<unsigned char> prefill_workspace_image(const PrefillSchedule& s) {
  // The split counters (before the work list) start at 0; the partials need no initial value.
  const size_t used = s.layout.work + s.work.size() * sizeof(attention::PrefillWorkItem);
  std::vector<unsigned char> image(used, 0);
  attention::PrefillCounts counts;
  counts.num_work = static_cast<int32_t>(s.work.size());
  counts.num_chains = static_cast<int32_t>(std::min<int64_t>(s.grid, s.work.size()));
  std::memcpy(image.data() + s.layout.counts, &counts, sizeof(counts));
  std::memcpy(image.data() + s.layout.qo_indptr, s.qo_indptr.data(),
              s.qo_indptr.size() * sizeof(int32_t));
  std::memcpy(image.data() + s.layout.kv_indptr, s.kv_indptr.data(),
              s.kv_indptr.size() * sizeof(int32_t));
  if (!s.work.empty()) {
    std::memcpy(image.data() + s.layout.work, s.work.data(),
                s.work.size() * sizeof(attention::PrefillWorkItem));
  }
  return image;
}

}  // namespace flashserve::plan
