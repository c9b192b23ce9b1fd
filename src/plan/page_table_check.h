// Host-side validation of a CSR page table (docs/paged_kv.md) and of the ragged rows appended to
// it. Pure C++ on host copies of the arrays: the debug-check mode of the entry points uses it
// (FLASHSERVE_DEBUG_CHECKS=1), and attention planning can run it on the tables it is given.
#pragma once

#include <cstdint>

#include "flashserve/core/status.h"

namespace flashserve::plan {

// Host copies of the page table arrays; sizes as the entry point's tensors declare them.
struct HostPageTable {
  const int32_t* indptr = nullptr;         // [batch + 1]
  const int32_t* indices = nullptr;        // [num_indices]
  const int32_t* last_page_len = nullptr;  // [batch]
  int64_t batch = 0;
  int64_t num_indices = 0;
  int64_t num_pages = 0;  // page ids must lie in [0, num_pages)
  int64_t page_size = 0;  // >= 1
};

// Tokens held by request b: (pages - 1) * page_size + last_page_len[b], 0 without pages.
// Meaningful for a table that passed check_page_table.
int64_t kv_len(const HostPageTable& table, int64_t b);

// Checks, in this order: indptr[0] == 0, indptr non-decreasing, indptr[batch] <= num_indices;
// last_page_len[b] in [1, page_size] for a request with pages and 0 without; every page id a
// request uses in [0, num_pages). Returns kInvalidArgument naming `op`, the array ("table.indptr",
// "table.last_page_len", "table.indices"), the request and the bad value.
Status check_page_table(const char* op, const HostPageTable& table);

// Checks the rows appended to a valid table: append_indptr[0] == 0, non-decreasing,
// append_indptr[batch] == new_tokens, and each request's new tokens fit in its length
// (append_indptr[b + 1] - append_indptr[b] <= kv_len(b)). Errors name "append_indptr".
Status check_append_indptr(const char* op, const HostPageTable& table, const int32_t* append_indptr,
                           int64_t new_tokens);

}  // namespace flashserve::plan
