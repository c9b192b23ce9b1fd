// The host-side page-table checker (src/plan/page_table_check.h): valid tables pass, and each
// defect is reported with the array, the request and the bad value.
#include <gtest/gtest.h>

#include <vector>

#include "plan/page_table_check.h"

namespace {

using flashserve::Status;
using flashserve::StatusCode;
using flashserve::plan::check_append_indptr;
using flashserve::plan::check_page_table;
using flashserve::plan::HostPageTable;

// The example of docs/paged_kv.md: page_size 4, 12 pages; request 0 holds 6 tokens (pages 7, 2),
// request 1 none, request 2 holds 9 tokens (pages 0, 11, 5).
struct Example {
  std::vector<int32_t> indptr = {0, 2, 2, 5};
  std::vector<int32_t> indices = {7, 2, 0, 11, 5};
  std::vector<int32_t> last_page_len = {2, 0, 1};
  std::vector<int32_t> append_indptr = {0, 1, 1, 4};  // 1 new token for request 0, 3 for 2
  int64_t num_pages = 12;
  int64_t page_size = 4;

  HostPageTable table() const {
    HostPageTable t;
    t.indptr = indptr.data();
    t.indices = indices.data();
    t.last_page_len = last_page_len.data();
    t.batch = static_cast<int64_t>(indptr.size()) - 1;
    t.num_indices = static_cast<int64_t>(indices.size());
    t.num_pages = num_pages;
    t.page_size = page_size;
    return t;
  }
  Status check() const { return check_page_table("op", table()); }
  Status check_append(int64_t new_tokens = 4) const {
    return check_append_indptr("op", table(), append_indptr.data(), new_tokens);
  }
};

void expect_invalid(const Status& st, std::initializer_list<const char*> parts) {
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  EXPECT_EQ(st.message().rfind("op: ", 0), 0u) << st.message();
  for (const char* part : parts)
    EXPECT_NE(st.message().find(part), std::string::npos)
        << "missing '" << part << "' in " << st.message();
}

TEST(PageTableCheck, ValidTablePassesAndGivesLengths) {
  Example e;
  EXPECT_TRUE(e.check().ok()) << e.check().to_string();
  EXPECT_TRUE(e.check_append().ok()) << e.check_append().to_string();
  const HostPageTable t = e.table();
  EXPECT_EQ(flashserve::plan::kv_len(t, 0), 6);
  EXPECT_EQ(flashserve::plan::kv_len(t, 1), 0);
  EXPECT_EQ(flashserve::plan::kv_len(t, 2), 9);
}

TEST(PageTableCheck, TrailingIndicesAndFullLastPageAreFine) {
  Example e;
  e.indices.push_back(-1);  // past indptr[batch]: never used
  e.last_page_len[2] = 4;
  EXPECT_TRUE(e.check().ok()) << e.check().to_string();
  // Every token of a request may be new.
  e.append_indptr = {0, 6, 6, 17};
  EXPECT_TRUE(e.check_append(17).ok()) << e.check_append(17).to_string();
}

TEST(PageTableCheck, EmptyBatch) {
  Example e;
  e.indptr = {0};
  e.last_page_len = {};
  e.append_indptr = {0};
  EXPECT_TRUE(e.check().ok());
  EXPECT_TRUE(e.check_append(0).ok());
  expect_invalid(e.check_append(3), {"append_indptr", "== 3", "got append_indptr[0] = 0"});
}

TEST(PageTableCheck, IndptrMustStartAtZero) {
  Example e;
  e.indptr[0] = 1;
  expect_invalid(e.check(), {"table.indptr", "indptr[0] == 0", "got 1"});
}

TEST(PageTableCheck, IndptrMustNotDecrease) {
  Example e;
  e.indptr = {0, 3, 2, 5};
  expect_invalid(e.check(), {"table.indptr", "request 1", "non-decreasing", "indptr[1] = 3"});
}

TEST(PageTableCheck, IndptrMustFitIndices) {
  Example e;
  e.indptr[3] = 6;
  expect_invalid(e.check(), {"table.indptr", "<= 5", "table.indices", "indptr[3] = 6"});
}

TEST(PageTableCheck, LastPageLenInRange) {
  for (int32_t bad : {0, 5, -2}) {
    Example e;
    e.last_page_len[2] = bad;
    expect_invalid(e.check(), {"table.last_page_len", "request 2", "[1, 4]",
                               ("got " + std::to_string(bad)).c_str()});
  }
  Example e;
  e.last_page_len[1] = 3;  // request 1 owns no page
  expect_invalid(e.check(), {"table.last_page_len", "request 1", "expected 0", "got 3"});
}

TEST(PageTableCheck, PageIdsInPool) {
  for (int32_t bad : {12, -1, 1000}) {
    Example e;
    e.indices[3] = bad;
    expect_invalid(e.check(), {"table.indices", "request 2", "[0, 12)",
                               ("got " + std::to_string(bad) + " at indices[3]").c_str()});
  }
}

TEST(PageTableCheck, AppendIndptrStartsAtZero) {
  Example e;
  e.append_indptr[0] = 1;
  expect_invalid(e.check_append(), {"append_indptr", "append_indptr[0] == 0", "got 1"});
}

TEST(PageTableCheck, AppendIndptrMustNotDecrease) {
  Example e;
  e.append_indptr = {0, 2, 1, 4};
  expect_invalid(e.check_append(), {"append_indptr", "request 1", "non-decreasing"});
}

TEST(PageTableCheck, AppendIndptrEndsAtNewTokens) {
  Example e;
  expect_invalid(e.check_append(5), {"append_indptr", "== 5", "append_indptr[3] = 4"});
}

TEST(PageTableCheck, NewTokensFitInKvLen) {
  Example e;
  e.append_indptr = {0, 7, 7, 8};  // request 0 holds 6 tokens
  expect_invalid(e.check_append(8), {"append_indptr", "request 0", "kv_len = 6", "got 7"});
  Example none;
  none.append_indptr = {0, 1, 2, 3};  // request 1 owns no page
  expect_invalid(none.check_append(3), {"append_indptr", "request 1", "kv_len = 0", "got 1"});
}

}  // namespace
