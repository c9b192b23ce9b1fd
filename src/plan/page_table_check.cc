#include "plan/page_table_check.h"

#include <string>

namespace flashserve::plan {
namespace {

Status invalid(const char* op, const std::string& what) {
  return Status(StatusCode::kInvalidArgument, std::string(op) + ": " + what);
}

std::string request(int64_t b) {
  return "request " + std::to_string(b) + ": ";
}

}  // namespace

int64_t kv_len(const HostPageTable& t, int64_t b) {
  const int64_t pages = t.indptr[b + 1] - t.indptr[b];
  return pages > 0 ? (pages - 1) * t.page_size + t.last_page_len[b] : 0;
}

Status check_page_table(const char* op, const HostPageTable& t) {
  if (t.indptr[0] != 0) {
    return invalid(op, "table.indptr: expected indptr[0] == 0, got " + std::to_string(t.indptr[0]));
  }
  for (int64_t b = 0; b < t.batch; ++b) {
    if (t.indptr[b + 1] < t.indptr[b]) {
      return invalid(op, "table.indptr: " + request(b) +
                             "expected a non-decreasing array, got indptr[" + std::to_string(b) +
                             "] = " + std::to_string(t.indptr[b]) + " > indptr[" +
                             std::to_string(b + 1) + "] = " + std::to_string(t.indptr[b + 1]));
    }
  }
  if (t.indptr[t.batch] > t.num_indices) {
    return invalid(op, "table.indptr: expected indptr[batch] <= " + std::to_string(t.num_indices) +
                           " (the size of table.indices), got indptr[" + std::to_string(t.batch) +
                           "] = " + std::to_string(t.indptr[t.batch]));
  }
  for (int64_t b = 0; b < t.batch; ++b) {
    const bool has_pages = t.indptr[b + 1] > t.indptr[b];
    const int32_t last = t.last_page_len[b];
    if (has_pages && (last < 1 || last > t.page_size)) {
      return invalid(op, "table.last_page_len: " + request(b) + "expected a value in [1, " +
                             std::to_string(t.page_size) +
                             "] (page_size) for a request with pages, got " + std::to_string(last));
    }
    if (!has_pages && last != 0) {
      return invalid(op, "table.last_page_len: " + request(b) +
                             "expected 0 for a request without pages, got " + std::to_string(last));
    }
    for (int64_t i = t.indptr[b]; i < t.indptr[b + 1]; ++i) {
      const int32_t page = t.indices[i];
      if (page < 0 || page >= t.num_pages) {
        return invalid(op, "table.indices: " + request(b) + "expected page ids in [0, " +
                               std::to_string(t.num_pages) + ") (num_pages), got " +
                               std::to_string(page) + " at indices[" + std::to_string(i) + "]");
      }
    }
  }
  return Status();
}

Status check_append_indptr(const char* op, const HostPageTable& t, const int32_t* append_indptr,
                           int64_t new_tokens) {
  if (append_indptr[0] != 0) {
    return invalid(op, "append_indptr: expected append_indptr[0] == 0, got " +
                           std::to_string(append_indptr[0]));
  }
  for (int64_t b = 0; b < t.batch; ++b) {
    const int64_t n = static_cast<int64_t>(append_indptr[b + 1]) - append_indptr[b];
    if (n < 0) {
      return invalid(op, "append_indptr: " + request(b) +
                             "expected a non-decreasing array, got append_indptr[" +
                             std::to_string(b) + "] = " + std::to_string(append_indptr[b]) +
                             " > append_indptr[" + std::to_string(b + 1) +
                             "] = " + std::to_string(append_indptr[b + 1]));
    }
    const int64_t len = kv_len(t, b);
    if (n > len) {
      return invalid(op, "append_indptr: " + request(b) +
                             "expected at most kv_len = " + std::to_string(len) +
                             " new tokens (the page table gives the length "
                             "after the append), got " +
                             std::to_string(n));
    }
  }
  if (append_indptr[t.batch] != new_tokens) {
    return invalid(op,
                   "append_indptr: expected append_indptr[batch] == " + std::to_string(new_tokens) +
                       " (the rows of k), got append_indptr[" + std::to_string(t.batch) +
                       "] = " + std::to_string(append_indptr[t.batch]));
  }
  return Status();
}

}  // namespace flashserve::plan
