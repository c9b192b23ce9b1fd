// decode_workspace_size / decode_plan / decode_run / merge_state(s) argument validation without a
// GPU: host plan requests with an explicit num_sms, TensorViews over fake pointers. Every case
// here fails a host check (nothing is launched even where a GPU is present).
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "arg_test.h"
#include "flashserve/decode.h"
#include "flashserve/logging.h"

namespace {

using flashserve::DType;
using flashserve::KVLayout;
using flashserve::TensorView;
using fs_test::fake;
using fs_test::invalid;

struct Host {
  std::vector<int32_t> indptr{0, 2, 2, 5}, last{3, 0, 16};
  flashserve::DecodePlanRequest req() const {
    flashserve::DecodePlanRequest r;
    r.indptr = indptr.data();
    r.last_page_len = last.data();
    r.batch_size = 3;
    r.num_qo_heads = 40;
    r.num_kv_heads = 8;
    r.head_dim = 128;
    r.page_size = 16;
    r.num_sms = 132;
    return r;
  }
};

// A plan as decode_plan returns it for Host::req(), built by hand (no device needed).
flashserve::DecodePlan plan_for(const flashserve::DecodePlanRequest& r) {
  flashserve::DecodePlan p;
  p.batch_size = r.batch_size;
  p.q_tokens = r.batch_size;
  p.num_qo_heads = r.num_qo_heads;
  p.num_kv_heads = r.num_kv_heads;
  p.head_dim = r.head_dim;
  p.page_size = r.page_size;
  p.q_dtype = r.q_dtype;
  p.kv_dtype = r.kv_dtype;
  p.layout = r.layout;
  p.work_capacity = 100;
  p.num_sms = 132;
  p.workspace_bytes = 1 << 20;
  return p;
}

struct RunArgs {
  flashserve::DecodeArgs a;
  RunArgs() {
    a.q = TensorView::contiguous(fake(1), DType::kBFloat16, {3, 40, 128});
    a.out = TensorView::contiguous(fake(2), DType::kBFloat16, {3, 40, 128});
    a.lse = TensorView::contiguous(fake(3), DType::kFloat32, {3, 40});
    a.cache.k_cache = TensorView::contiguous(fake(4), DType::kBFloat16, {10, 16, 8, 128});
    a.cache.v_cache = TensorView::contiguous(fake(5), DType::kBFloat16, {10, 16, 8, 128});
    a.table.indptr = TensorView::contiguous(fake(6), DType::kInt32, {4});
    a.table.indices = TensorView::contiguous(fake(7), DType::kInt32, {5});
    a.table.last_page_len = TensorView::contiguous(fake(8), DType::kInt32, {3});
  }
};

class DecodeArgs : public ::testing::Test {
 protected:
  void SetUp() override {
    level_ = flashserve::log_level();
    flashserve::set_log_level(0);
  }
  void TearDown() override { flashserve::set_log_level(level_); }
  int level_ = 0;
};

TEST_F(DecodeArgs, WorkspaceSizeNeedsNoDevice) {
  Host h;
  size_t bytes = 0;
  ASSERT_TRUE(flashserve::decode_workspace_size(h.req(), &bytes).ok());
  EXPECT_GT(bytes, 0u);
  auto r = h.req();
  r.max_batch_size = 256;
  size_t big = 0;
  ASSERT_TRUE(flashserve::decode_workspace_size(r, &big).ok());
  EXPECT_GT(big, bytes);
}

TEST_F(DecodeArgs, RequestChecks) {
  Host h;
  size_t bytes = 0;
  auto expect = [&](const std::function<void(flashserve::DecodePlanRequest&)>& edit,
                    const std::string& arg, const std::string& detail) {
    auto r = h.req();
    edit(r);
    EXPECT_TRUE(invalid(flashserve::decode_workspace_size(r, &bytes), "decode_workspace_size", arg,
                        detail));
  };
  expect([](auto& r) { r.num_qo_heads = 12; }, "req.num_qo_heads", "multiple of num_kv_heads = 8");
  expect([](auto& r) { r.head_dim = 96; }, "req.head_dim", "got 96");
  expect([](auto& r) { r.page_size = 0; }, "req.page_size", "got 0");
  expect([](auto& r) { r.q_dtype = DType::kFloat32; }, "req.q_dtype", "float32");
  expect([](auto& r) { r.kv_dtype = DType::kFloat16; }, "req.kv_dtype", "float16");
  expect([](auto& r) { r.indptr = nullptr; }, "req.indptr", "host copies");
}

TEST_F(DecodeArgs, AnyGroupSizeAccepted) {
  Host h;
  for (int group : {1, 2, 3, 5, 6, 7, 12, 16, 20}) {
    auto r = h.req();
    r.num_qo_heads = 8 * group;
    size_t bytes = 0;
    EXPECT_TRUE(flashserve::decode_workspace_size(r, &bytes).ok()) << group;
  }
}

TEST_F(DecodeArgs, PlanChecks) {
  Host h;
  size_t bytes = 0;
  ASSERT_TRUE(flashserve::decode_workspace_size(h.req(), &bytes).ok());
  flashserve::DecodePlan plan;
  EXPECT_TRUE(invalid(flashserve::decode_plan(h.req(), fake(9), bytes - 1, nullptr, &plan),
                      "decode_plan", "workspace", std::to_string(bytes) + " bytes needed"));
  h.last[2] = 17;
  EXPECT_TRUE(invalid(flashserve::decode_plan(h.req(), fake(9), bytes, nullptr, &plan),
                      "decode_plan", "last_page_len", "request 2"));
  h.last[2] = 16;
  std::vector<int32_t> q_indptr{0, 1, 10, 11};
  auto r = h.req();
  r.q_indptr = q_indptr.data();
  EXPECT_TRUE(invalid(flashserve::decode_plan(r, fake(9), 1 << 30, nullptr, &plan), "decode_plan",
                      "q_indptr", "request 1"));
}

TEST_F(DecodeArgs, RunChecksArgsAgainstPlan) {
  Host h;
  const auto plan = plan_for(h.req());
  auto expect = [&](const std::function<void(flashserve::DecodeArgs&)>& edit,
                    const std::string& arg, const std::string& detail) {
    RunArgs ra;
    edit(ra.a);
    EXPECT_TRUE(invalid(flashserve::decode_run(plan, ra.a, fake(9)), "decode_run", arg, detail));
  };
  expect(
      [](auto& a) {
        a.q = TensorView::contiguous(fake(1), DType::kBFloat16, {3, 32, 128});
      },
      "q", "num_qo_heads");
  expect(
      [](auto& a) {
        a.q = TensorView::contiguous(fake(1), DType::kFloat16, {3, 40, 128});
      },
      "q", "bfloat16");
  expect(
      [](auto& a) {
        a.q = TensorView::contiguous(fake(1), DType::kBFloat16, {2, 40, 128});
      },
      "q", "at least 3");
  expect(
      [](auto& a) {
        a.out = TensorView::contiguous(fake(2), DType::kBFloat16, {3, 40, 64});
      },
      "out", "");
  expect(
      [](auto& a) {
        a.lse = TensorView::contiguous(fake(3), DType::kFloat16, {3, 40});
      },
      "lse", "float32");
  expect([](auto& a) { a.cache.layout = KVLayout::kHND; }, "cache.layout", "NHD");
  expect(
      [](auto& a) {
        a.cache.k_cache = TensorView::contiguous(fake(4), DType::kBFloat16, {10, 16, 4, 128});
        a.cache.v_cache = a.cache.k_cache;
        a.cache.v_cache.data = fake(5);
      },
      "cache.k_cache", "num_kv_heads");
  expect(
      [](auto& a) {
        a.cache.k_cache = TensorView::contiguous(fake(4), DType::kFloat8E4M3, {10, 16, 8, 128});
        a.cache.v_cache = a.cache.k_cache;
        a.cache.v_cache.data = fake(5);
      },
      "cache.k_cache", "bfloat16");
  expect([](auto& a) { a.cache.k_cache.data = fake(4, 2); }, "cache.k_cache", "16-byte");
  expect([](auto& a) { a.cache.v_scale = 0.f; }, "cache.v_scale", "> 0");
  expect([](auto& a) { a.table.indptr = TensorView::contiguous(fake(6), DType::kInt32, {3}); },
         "table.indptr", "");
  expect([](auto& a) { a.table.indices.dtype = DType::kInt64; }, "table.indices", "int32");
  expect([](auto& a) { a.window_left = -2; }, "window_left", "-2");
  expect([](auto& a) { a.logits_soft_cap = -1.f; }, "logits_soft_cap", "");
  expect([](auto& a) { a.sinks = TensorView::contiguous(fake(10), DType::kFloat32, {8}); }, "sinks",
         "num_qo_heads");
  RunArgs ra;
  EXPECT_TRUE(invalid(flashserve::decode_run(plan, ra.a, nullptr), "decode_run", "workspace"));
  EXPECT_TRUE(invalid(flashserve::decode_run(flashserve::DecodePlan(), ra.a, fake(9)), "decode_run",
                      "plan"));
}

TEST_F(DecodeArgs, ValidRunReachesTheDeviceCheck) {
  SKIP_IF_GPU();
  Host h;
  RunArgs ra;
  EXPECT_TRUE(
      fs_test::accepted(flashserve::decode_run(plan_for(h.req()), ra.a, fake(9)), "decode_run"));
}

TEST_F(DecodeArgs, MergeChecks) {
  const TensorView v = TensorView::contiguous(fake(1), DType::kBFloat16, {4, 3, 8, 128});
  const TensorView s = TensorView::contiguous(fake(2), DType::kFloat32, {4, 3, 8});
  const TensorView o = TensorView::contiguous(fake(3), DType::kBFloat16, {4, 8, 128});
  const TensorView so = TensorView::contiguous(fake(4), DType::kFloat32, {4, 8});
  EXPECT_TRUE(invalid(flashserve::merge_states(
                          v, TensorView::contiguous(fake(2), DType::kFloat32, {4, 2, 8}), o, so),
                      "merge_states", "s", "states"));
  EXPECT_TRUE(invalid(flashserve::merge_states(
                          v, s, TensorView::contiguous(fake(3), DType::kFloat16, {4, 8, 128}), so),
                      "merge_states", "v_out", "bfloat16"));
  const TensorView va = TensorView::contiguous(fake(5), DType::kBFloat16, {4, 8, 128});
  const TensorView vb = TensorView::contiguous(fake(6), DType::kBFloat16, {4, 8, 64});
  const TensorView sa = TensorView::contiguous(fake(7), DType::kFloat32, {4, 8});
  EXPECT_TRUE(invalid(flashserve::merge_state(va, sa, vb, sa, o, so), "merge_state", "v_b", ""));
}

}  // namespace
