// Shared-prefix (cascade) decode through the public API: every request's table points at the same
// prefix pages; a second table holds each request's own suffix; merge_state combines the two
// attention states. Checked against plain attention over prefix + suffix.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>
#include <sstream>

#include "check.h"
#include "flashserve/decode.h"
#include "gpu_test.h"
#include "reference/decode.h"

namespace fs_test {
namespace {

DeviceTensor int_tensor(const std::vector<int32_t>& v) {
  DeviceTensor t(DType::kInt32, {static_cast<int64_t>(std::max<size_t>(v.size(), 1))});
  if (!v.empty()) t.upload_raw(v.data(), static_cast<int64_t>(v.size() * sizeof(int32_t)));
  return t;
}

// One paged cache (NHD, bf16) and its CSR table; `pages_of[b]` lists request b's page ids.
struct Paged {
  int page_size = 16, kv_heads = 2, head_dim = 128;
  int64_t num_pages = 0;
  std::vector<float> k, v;  // host cache elements
  std::vector<int32_t> indptr{0}, indices, last;
  DeviceTensor dk, dv, dindptr, dindices, dlast;

  int64_t elem(int64_t page, int slot, int h, int d) const {
    return ((page * page_size + slot) * kv_heads + h) * head_dim + d;
  }
  void add_request(const std::vector<int32_t>& pages, int len) {
    indices.insert(indices.end(), pages.begin(), pages.end());
    indptr.push_back(static_cast<int32_t>(indices.size()));
    last.push_back(pages.empty() ? 0 : len - (static_cast<int>(pages.size()) - 1) * page_size);
  }
  double kval(int b, int t, int h, int d) const {
    return k[elem(indices[indptr[b] + t / page_size], t % page_size, h, d)];
  }
  double vval(int b, int t, int h, int d) const {
    return v[elem(indices[indptr[b] + t / page_size], t % page_size, h, d)];
  }
  void upload(uint64_t seed) {
    const int64_t n = num_pages * page_size * kv_heads * head_dim;
    k = rounded(DType::kBFloat16, random_normal(n, seed));
    v = rounded(DType::kBFloat16, random_normal(n, seed + 1));
    dk = DeviceTensor(DType::kBFloat16, {num_pages, page_size, kv_heads, head_dim});
    dv = DeviceTensor(DType::kBFloat16, {num_pages, page_size, kv_heads, head_dim});
    dk.upload(k);
    dv.upload(v);
    dindptr = int_tensor(indptr);
    dindices = int_tensor(indices);
    dlast = int_tensor(last);
  }
};

// Plans and runs decode of `q` over `cache`; writes out / lse.
void run_decode(const Paged& cache, int qo_heads, const DeviceTensor& q, const DeviceTensor& out,
                const DeviceTensor& lse) {
  flashserve::DecodePlanRequest req;
  req.indptr = cache.indptr.data();
  req.last_page_len = cache.last.data();
  req.batch_size = static_cast<int>(cache.last.size());
  req.num_qo_heads = qo_heads;
  req.num_kv_heads = cache.kv_heads;
  req.head_dim = cache.head_dim;
  req.page_size = cache.page_size;
  size_t bytes = 0;
  ASSERT_TRUE(flashserve::decode_workspace_size(req, &bytes).ok());
  DeviceTensor ws(DType::kUInt8, {static_cast<int64_t>(bytes)});
  flashserve::DecodePlan plan;
  flashserve::Status st = flashserve::decode_plan(req, ws.data(), bytes, nullptr, &plan);
  ASSERT_TRUE(st.ok()) << st.to_string();
  flashserve::DecodeArgs a;
  a.q = q.view();
  a.out = out.view();
  a.lse = lse.view();
  a.cache.k_cache = cache.dk.view();
  a.cache.v_cache = cache.dv.view();
  a.table = {cache.dindptr.view(), cache.dindices.view(), cache.dlast.view()};
  st = flashserve::decode_run(plan, a, ws.data(), nullptr);
  ASSERT_TRUE(st.ok()) << st.to_string();
  cuda_check(cudaDeviceSynchronize(), "decode");
}

class Cascade : public GpuTest {};

TEST_F(Cascade, SharedPrefixPlusSuffixesMergeToFullAttention) {
  const int qo_heads = 8, kv_heads = 2, D = 128, ps = 16;
  for (int prefix : {16, 1000}) {
    const std::vector<int> suffix = {5, 0, 300, 1, 64};
    const int B = static_cast<int>(suffix.size());
    SCOPED_TRACE("prefix " + std::to_string(prefix) + " seed " + std::to_string(seed_));
    std::mt19937_64 rng(next_seed());
    // Prefix cache: one set of pages shared by every request.
    Paged pre, suf;
    const int prefix_pages = (prefix + ps - 1) / ps;
    pre.num_pages = prefix_pages + 1;
    std::vector<int32_t> shared(prefix_pages);
    std::iota(shared.begin(), shared.end(), 1);
    std::shuffle(shared.begin(), shared.end(), rng);
    for (int b = 0; b < B; ++b)
      pre.add_request(shared, prefix);
    // Suffix cache: each request's own pages.
    int next = 0;
    std::vector<std::vector<int32_t>> own(B);
    for (int b = 0; b < B; ++b) {
      for (int p = 0; p < (suffix[b] + ps - 1) / ps; ++p)
        own[b].push_back(next++);
    }
    suf.num_pages = next + 1;
    std::vector<int32_t> perm(suf.num_pages);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int b = 0; b < B; ++b) {
      for (int32_t& p : own[b])
        p = perm[p];
      suf.add_request(own[b], suffix[b]);
    }
    pre.upload(rng());
    suf.upload(rng());

    const auto q = rounded(DType::kBFloat16, random_normal(int64_t{B} * qo_heads * D, rng()));
    DeviceTensor dq(DType::kBFloat16, {B, qo_heads, D});
    dq.upload(q);
    DeviceTensor o1(DType::kBFloat16, {B, qo_heads, D}), o2(DType::kBFloat16, {B, qo_heads, D}),
        o(DType::kBFloat16, {B, qo_heads, D}), s1(DType::kFloat32, {B, qo_heads}),
        s2(DType::kFloat32, {B, qo_heads}), s(DType::kFloat32, {B, qo_heads});
    for (DeviceTensor* t : {&o1, &o2, &o, &s1, &s2, &s})
      t->poison();
    run_decode(pre, qo_heads, dq, o1, s1);
    run_decode(suf, qo_heads, dq, o2, s2);
    const flashserve::Status st =
        flashserve::merge_state(o1.view(), s1.view(), o2.view(), s2.view(), o.view(), s.view());
    ASSERT_TRUE(st.ok()) << st.to_string();

    ref::DecodeProblem p;
    p.num_qo_heads = qo_heads;
    p.num_kv_heads = kv_heads;
    p.head_dim = D;
    p.sm_scale = 1.f / std::sqrt(float(D));
    std::vector<int> lens(B), q_indptr(B + 1);
    for (int b = 0; b < B; ++b)
      lens[b] = prefix + suffix[b];
    std::iota(q_indptr.begin(), q_indptr.end(), 0);
    const auto r = ref::decode(
        p, q, lens, q_indptr,
        [&](int b, int t, int h, int d) {
          return t < prefix ? pre.kval(b, t, h, d) : suf.kval(b, t - prefix, h, d);
        },
        [&](int b, int t, int h, int d) {
          return t < prefix ? pre.vval(b, t, h, d) : suf.vval(b, t - prefix, h, d);
        });
    const Accuracy acc = accuracy_rule(o.download(), r.out, r.base);
    EXPECT_TRUE(acc.pass) << acc.str();
    const auto lse = s.download();
    for (size_t i = 0; i < r.lse.size(); ++i) {
      ASSERT_NEAR(lse[i], r.lse[i], 2e-2 + 2e-3 * std::fabs(r.lse[i])) << "lse row " << i;
    }
  }
}

}  // namespace
}  // namespace fs_test
