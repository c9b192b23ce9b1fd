// append_paged_kv_cache argument validation, without a GPU: TensorViews over fake non-null
// pointers (validation runs before any CUDA call). Every case here fails a host check, so nothing
// is launched even on a machine with a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>

#include "flashserve/logging.h"
#include "flashserve/page.h"

namespace {

using flashserve::DType;
using flashserve::KVLayout;
using flashserve::Status;
using flashserve::StatusCode;
using flashserve::TensorView;

void* fake(uint64_t gib) {
  return reinterpret_cast<void*>(static_cast<uintptr_t>(gib) << 30);
}

// A valid call: bf16, NHD, 10 pages of 16 tokens, 8 kv heads x 128, 3 requests, 5 new tokens.
struct Args {
  flashserve::PagedKVCache cache;
  flashserve::PageTable table;
  TensorView k, v, append_indptr;

  Args() {
    cache.k_cache = TensorView::contiguous(fake(1), DType::kBFloat16, {10, 16, 8, 128});
    cache.v_cache = TensorView::contiguous(fake(2), DType::kBFloat16, {10, 16, 8, 128});
    k = TensorView::contiguous(fake(3), DType::kBFloat16, {5, 8, 128});
    v = TensorView::contiguous(fake(4), DType::kBFloat16, {5, 8, 128});
    table.indptr = TensorView::contiguous(fake(5), DType::kInt32, {4});
    table.indices = TensorView::contiguous(fake(6), DType::kInt32, {12});
    table.last_page_len = TensorView::contiguous(fake(7), DType::kInt32, {3});
    append_indptr = TensorView::contiguous(fake(8), DType::kInt32, {4});
  }
  Status run() const {
    return flashserve::append_paged_kv_cache(cache, table, k, v, append_indptr);
  }
};

class PageArgs : public ::testing::Test {
 protected:
  // Keeps level-5 logging (which copies tensors) away from the fake pointers.
  void SetUp() override {
    level_ = flashserve::log_level();
    flashserve::set_log_level(0);
  }
  void TearDown() override { flashserve::set_log_level(level_); }

  // Applies `edit` to a valid call and expects kInvalidArgument naming `arg` with `detail`.
  void expect_rejected(const std::function<void(Args&)>& edit, const std::string& arg,
                       const std::string& detail) {
    Args a;
    edit(a);
    const Status st = a.run();
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
    EXPECT_EQ(st.message().rfind("append_paged_kv_cache: " + arg + ":", 0), 0u) << st.message();
    EXPECT_NE(st.message().find(detail), std::string::npos) << st.message();
  }

  // Every host check passed: the call got as far as the device check, which a tensor placed on
  // device 7 fails (kNoDevice on a machine without a GPU, kInvalidArgument on one with).
  void expect_reaches_device_check(Args a) {
    a.append_indptr.device = 7;
    const Status st = a.run();
    if (st.code() == StatusCode::kNoDevice) return;
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
    EXPECT_NE(st.message().find("append_indptr: expected a tensor on the current device"),
              std::string::npos)
        << st.message();
  }

  int level_ = 0;
};

TEST_F(PageArgs, ValidCallsReachTheDeviceCheck) {
  expect_reaches_device_check(Args());
  // HND, fp8 caches, fp32 inputs, page size 1, odd head_dim.
  Args hnd;
  hnd.cache.layout = KVLayout::kHND;
  hnd.cache.k_cache = TensorView::contiguous(fake(1), DType::kFloat8E4M3, {10, 8, 1, 7});
  hnd.cache.v_cache = TensorView::contiguous(fake(2), DType::kFloat8E4M3, {10, 8, 1, 7});
  hnd.cache.k_scale = 0.25f;
  hnd.k = TensorView::contiguous(fake(3), DType::kFloat32, {5, 8, 7});
  hnd.v = TensorView::contiguous(fake(4), DType::kFloat32, {5, 8, 7});
  expect_reaches_device_check(hnd);
  // K and V as two views of one [num_pages, 2, page_size, heads, dim] allocation; k and v as
  // slices of a packed [tokens, (32 + 8 + 8) * 128] qkv tensor.
  Args one;
  const int64_t page = 16 * 8 * 128;
  one.cache.k_cache =
      TensorView::strided(fake(1), DType::kBFloat16, {10, 16, 8, 128}, {2 * page, 8 * 128, 128, 1});
  one.cache.v_cache = TensorView::strided(static_cast<char*>(fake(1)) + page * 2, DType::kBFloat16,
                                          {10, 16, 8, 128}, {2 * page, 8 * 128, 128, 1});
  const int64_t row = 48 * 128;
  one.k = TensorView::strided(static_cast<char*>(fake(3)) + 32 * 128 * 2, DType::kBFloat16,
                              {5, 8, 128}, {row, 128, 1});
  one.v = TensorView::strided(static_cast<char*>(fake(3)) + 40 * 128 * 2, DType::kBFloat16,
                              {5, 8, 128}, {row, 128, 1});
  expect_reaches_device_check(one);
  // Nothing to append: empty tensors may come without a pointer.
  Args empty;
  empty.k = TensorView::contiguous(nullptr, DType::kBFloat16, {0, 8, 128});
  empty.v = TensorView::contiguous(nullptr, DType::kBFloat16, {0, 8, 128});
  empty.table.indptr = TensorView::contiguous(fake(5), DType::kInt32, {1});
  empty.table.indices = TensorView::contiguous(nullptr, DType::kInt32, {0});
  empty.table.last_page_len = TensorView::contiguous(nullptr, DType::kInt32, {0});
  empty.append_indptr = TensorView::contiguous(fake(8), DType::kInt32, {1});
  expect_reaches_device_check(empty);
}

TEST_F(PageArgs, NullPointers) {
  expect_rejected([](Args& a) { a.cache.k_cache.data = nullptr; }, "cache.k_cache",
                  "expected a device pointer, got null");
  expect_rejected([](Args& a) { a.cache.v_cache.data = nullptr; }, "cache.v_cache", "null");
  expect_rejected([](Args& a) { a.k.data = nullptr; }, "k", "null");
  expect_rejected([](Args& a) { a.v.data = nullptr; }, "v", "null");
  expect_rejected([](Args& a) { a.table.indptr.data = nullptr; }, "table.indptr", "null");
  expect_rejected([](Args& a) { a.table.indices.data = nullptr; }, "table.indices", "null");
  expect_rejected([](Args& a) { a.table.last_page_len.data = nullptr; }, "table.last_page_len",
                  "null");
  expect_rejected([](Args& a) { a.append_indptr.data = nullptr; }, "append_indptr", "null");
}

TEST_F(PageArgs, InputShapesAndDtypes) {
  expect_rejected(
      [](Args& a) {
        a.k = TensorView::contiguous(fake(3), DType::kBFloat16, {5, 1024});
      },
      "k", "expected a 3-D tensor, got 2-D");
  expect_rejected(
      [](Args& a) {
        a.v = TensorView::contiguous(fake(4), DType::kBFloat16, {6, 8, 128});
      },
      "v", "expected the shape of k [5, 8, 128], got [6, 8, 128]");
  expect_rejected([](Args& a) { a.k.dtype = a.v.dtype = DType::kInt32; }, "k",
                  "expected dtype one of {float32, float16, bfloat16}, got int32");
  expect_rejected([](Args& a) { a.k.dtype = a.v.dtype = DType::kFloat8E4M3; }, "k",
                  "got float8_e4m3");
  expect_rejected([](Args& a) { a.v.dtype = DType::kFloat16; }, "v",
                  "expected the dtype of k (bfloat16), got float16");
}

TEST_F(PageArgs, CacheShapesAndDtypes) {
  expect_rejected(
      [](Args& a) {
        a.cache.k_cache = TensorView::contiguous(fake(1), DType::kBFloat16, {10, 16, 1024});
      },
      "cache.k_cache", "expected a 4-D tensor, got 3-D");
  expect_rejected(
      [](Args& a) {
        a.cache.v_cache = TensorView::contiguous(fake(2), DType::kBFloat16, {11, 16, 8, 128});
      },
      "cache.v_cache",
      "expected the shape of cache.k_cache [10, 16, 8, 128], got [11, 16, 8, 128]");
  expect_rejected([](Args& a) { a.cache.v_cache.dtype = DType::kFloat16; }, "cache.v_cache",
                  "expected the dtype of cache.k_cache (bfloat16), got float16");
  expect_rejected([](Args& a) { a.cache.k_cache.dtype = a.cache.v_cache.dtype = DType::kInt32; },
                  "cache.k_cache", "got int32");
  expect_rejected(
      [](Args& a) { a.cache.k_cache.dtype = a.cache.v_cache.dtype = DType::kFloat32; },
      "cache.k_cache",
      "expected dtype bfloat16 (the dtype of k) or float8_e4m3 / float8_e5m2, got float32");
}

TEST_F(PageArgs, CacheMatchesInputsPerLayout) {
  expect_rejected(
      [](Args& a) {
        a.k = TensorView::contiguous(fake(3), DType::kBFloat16, {5, 4, 128});
        a.v = TensorView::contiguous(fake(4), DType::kBFloat16, {5, 4, 128});
      },
      "cache.k_cache", "expected kv_heads = 4 (k.size(1)) at dim 2 of the NHD cache, got 8");
  // The NHD-shaped cache read as HND: dim 1 (16) is taken for the heads.
  expect_rejected([](Args& a) { a.cache.layout = KVLayout::kHND; }, "cache.k_cache",
                  "expected kv_heads = 8 (k.size(1)) at dim 1 of the HND cache, got 16");
  expect_rejected(
      [](Args& a) {
        a.k = TensorView::contiguous(fake(3), DType::kBFloat16, {5, 8, 64});
        a.v = TensorView::contiguous(fake(4), DType::kBFloat16, {5, 8, 64});
      },
      "cache.k_cache", "expected head_dim = 64 (k.size(2)) at dim 3, got 128");
  expect_rejected(
      [](Args& a) {
        const std::initializer_list<int64_t> strides = {16 * 1024, 1024, 128, 1};
        a.cache.k_cache = TensorView::strided(fake(1), DType::kBFloat16, {10, 0, 8, 128}, strides);
        a.cache.v_cache = TensorView::strided(fake(2), DType::kBFloat16, {10, 0, 8, 128}, strides);
      },
      "cache.k_cache", "expected page_size >= 1 at dim 1 of the NHD cache, got 0");
}

TEST_F(PageArgs, LayoutValue) {
  Args a;
  a.cache.layout = static_cast<KVLayout>(7);
  const Status st = a.run();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("cache.layout: expected KVLayout::kNHD or KVLayout::kHND, got 7"),
            std::string::npos)
      << st.message();
  EXPECT_STREQ(flashserve::kv_layout_name(KVLayout::kNHD), "NHD");
  EXPECT_STREQ(flashserve::kv_layout_name(KVLayout::kHND), "HND");
}

TEST_F(PageArgs, PageTableArrays) {
  expect_rejected([](Args& a) { a.table.indptr.dtype = DType::kInt64; }, "table.indptr",
                  "expected dtype int32, got int64");
  expect_rejected(
      [](Args& a) {
        a.table.indptr = TensorView::contiguous(fake(5), DType::kInt32, {2, 2});
      },
      "table.indptr", "expected a 1-D tensor");
  expect_rejected(
      [](Args& a) { a.table.indptr = TensorView::strided(fake(5), DType::kInt32, {4}, {2}); },
      "table.indptr", "expected a contiguous tensor");
  expect_rejected(
      [](Args& a) { a.table.indptr = TensorView::contiguous(fake(5), DType::kInt32, {0}); },
      "table.indptr", "expected size >= 1");
  expect_rejected([](Args& a) { a.table.indices.dtype = DType::kInt64; }, "table.indices",
                  "expected dtype int32");
  expect_rejected(
      [](Args& a) { a.table.indices = TensorView::strided(fake(6), DType::kInt32, {12}, {3}); },
      "table.indices", "expected a contiguous tensor");
  expect_rejected(
      [](Args& a) { a.table.last_page_len = TensorView::contiguous(fake(7), DType::kInt32, {4}); },
      "table.last_page_len", "expected size 3 (batch = table.indptr.size(0) - 1) at dim 0");
  expect_rejected([](Args& a) { a.table.last_page_len.dtype = DType::kFloat32; },
                  "table.last_page_len", "expected dtype int32, got float32");
  expect_rejected(
      [](Args& a) { a.append_indptr = TensorView::contiguous(fake(8), DType::kInt32, {3}); },
      "append_indptr", "expected size 4 (batch + 1 = table.indptr.size(0)) at dim 0");
  expect_rejected([](Args& a) { a.append_indptr.dtype = DType::kInt64; }, "append_indptr",
                  "expected dtype int32");
  expect_rejected(
      [](Args& a) { a.append_indptr = TensorView::strided(fake(8), DType::kInt32, {4}, {2}); },
      "append_indptr", "expected a contiguous tensor");
}

TEST_F(PageArgs, Scales) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (float bad : {0.f, -1.f, nan, inf}) {
    expect_rejected([bad](Args& a) { a.cache.k_scale = bad; }, "cache.k_scale",
                    "expected a finite value > 0, got ");
    expect_rejected([bad](Args& a) { a.cache.v_scale = bad; }, "cache.v_scale",
                    "expected a finite value > 0");
  }
}

TEST_F(PageArgs, Strides) {
  expect_rejected(
      [](Args& a) {
        a.k = TensorView::strided(fake(3), DType::kBFloat16, {5, 8, 128}, {2048, 256, 2});
      },
      "k", "expected stride 1 in the last dim, got 2");
  expect_rejected(
      [](Args& a) {
        a.v = TensorView::strided(fake(4), DType::kBFloat16, {5, 8, 128}, {-1024, 128, 1});
      },
      "v", "expected non-negative strides");
  expect_rejected(
      [](Args& a) {
        a.cache.k_cache =
            TensorView::strided(fake(1), DType::kBFloat16, {10, 16, 8, 128}, {32768, 2048, 256, 2});
      },
      "cache.k_cache", "expected stride 1 in the last dim, got 2");
  expect_rejected(
      [](Args& a) {
        a.cache.v_cache = TensorView::strided(fake(2), DType::kBFloat16, {10, 16, 8, 128},
                                              {-16384, 1024, 128, 1});
      },
      "cache.v_cache", "expected non-negative strides");
}

TEST_F(PageArgs, WrittenCacheElementsMustNotOverlap) {
  // A slot stride of one head: token t's head h + 1 is token t + 1's head h.
  expect_rejected(
      [](Args& a) {
        a.cache.k_cache =
            TensorView::strided(fake(1), DType::kBFloat16, {10, 16, 8, 128}, {16384, 128, 128, 1});
      },
      "cache.k_cache", "expected an output view whose elements do not overlap");
  expect_rejected(
      [](Args& a) {
        a.cache.v_cache =
            TensorView::strided(fake(2), DType::kBFloat16, {10, 16, 8, 128}, {0, 1024, 128, 1});
      },
      "cache.v_cache", "expected an output view whose elements do not overlap");
}

TEST_F(PageArgs, MisalignedPointer) {
  expect_rejected([](Args& a) { a.k.data = static_cast<char*>(fake(3)) + 1; }, "k",
                  "expected a pointer aligned to 2 bytes");
}

TEST_F(PageArgs, Overlaps) {
  expect_rejected([](Args& a) { a.k.data = static_cast<char*>(fake(1)) + 4096; }, "k",
                  "must not overlap cache.k_cache or cache.v_cache");
  expect_rejected([](Args& a) { a.v.data = fake(2); }, "v",
                  "must not overlap cache.k_cache or cache.v_cache");
  expect_rejected([](Args& a) { a.cache.v_cache.data = a.cache.k_cache.data; }, "cache.v_cache",
                  "must not start at the same address as cache.k_cache");
}

}  // namespace
