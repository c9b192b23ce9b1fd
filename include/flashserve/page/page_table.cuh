// Device-side reads of the CSR page table (docs/paged_kv.md): which request owns a row of a
// ragged batch, and where a request's token position lives in the page pool. Every read is
// bounds-checked, so a corrupt table makes the caller skip work instead of faulting.
#pragma once

#include <cstdint>

namespace flashserve::page {

// The request that owns row `row` of a ragged batch: the largest b in [0, n) with
// indptr[b] <= row (empty requests, whose indptr[b] == indptr[b + 1], are passed over).
// Requires indptr[0] <= row < indptr[n]; on a corrupt (unsorted) array it still returns some b in
// [0, n) and terminates, and the caller rejects it by re-checking indptr[b] <= row < indptr[b+1].
//
// Warp-collective: all 32 lanes call it with the same `row`. Each round, the lanes sample 32
// evenly spaced points of the remaining range with one load each and a ballot keeps the interval
// between the last point <= row and the next: batch <= 32 takes one round, <= 1024 two, <= 32768
// three, where a binary search would chain log2(batch) dependent loads (9 at batch 256).
__device__ __forceinline__ int warp_find_segment(const int32_t* indptr, int n, int row, int lane) {
  int lo = 0, hi = n;  // invariant: the answer lies in [lo, hi); indptr[hi] > row
  while (hi - lo > 1) {
    const int step = (hi - lo + 31) / 32;
    const int off = (lane + 1) * step;  // <= n + 31: no overflow for n < 2^30 (checked by the API)
    const bool le = off < hi - lo && __ldg(indptr + lo + off) <= row;
    const unsigned mask = __ballot_sync(0xffffffffu, le);
    // k = 1 + the highest lane whose point is <= row (0 if none). Lane k - 1's point lies below
    // hi, so lo < new_hi and the range shrinks to at most `step`: the loop always ends.
    const int k = 32 - __clz(static_cast<int>(mask));
    const int new_lo = lo + k * step;
    hi = min(hi, new_lo + step);
    lo = new_lo;
  }
  return lo;
}

// Where new token `row` of the batch is stored, or valid == false when the page table cannot hold
// it: a corrupt append_indptr, more new tokens than kv_len, a position past the request's pages,
// or a page id outside [0, num_pages). Warp-collective (see warp_find_segment); the result is the
// same in every lane.
struct AppendSlot {
  int64_t page = 0;
  int slot = 0;
  bool valid = false;
};

template <class Params>
__device__ __forceinline__ AppendSlot find_append_slot(const Params& p, int row, int lane) {
  AppendSlot s;
  const int b = warp_find_segment(p.append_indptr, p.batch, row, lane);
  // Five independent loads of one word each (every lane reads the same address: one broadcast).
  const int64_t new_begin = __ldg(p.append_indptr + b);
  const int64_t new_end = __ldg(p.append_indptr + b + 1);
  const int64_t page_begin = __ldg(p.indptr + b);
  const int64_t page_end = __ldg(p.indptr + b + 1);
  const int64_t last_len = __ldg(p.last_page_len + b);
  if (row < new_begin || row >= new_end) return s;
  const int64_t num_req_pages = page_end - page_begin;
  if (num_req_pages <= 0 || page_begin < 0) return s;
  // The table already describes the length after the append; the new tokens are its last ones.
  const int64_t kv_len = (num_req_pages - 1) * p.page_size + last_len;
  const int64_t pos = kv_len - (new_end - new_begin) + (row - new_begin);
  if (pos < 0) return s;
  const int64_t page_in_req = pos / p.page_size;
  if (page_in_req >= num_req_pages || page_begin + page_in_req >= p.num_indices) return s;
  const int64_t page = __ldg(p.indices + page_begin + page_in_req);
  if (page < 0 || page >= p.num_pages) return s;
  s.page = page;
  s.slot = static_cast<int>(pos - page_in_req * p.page_size);
  s.valid = true;
  return s;
}

}  // namespace flashserve::page
