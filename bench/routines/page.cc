// Benchmark of appending new K/V tokens into a paged cache. Decode style by default (one new token
// per request, each request already holding --kv-len tokens); --batch < --tokens spreads the tokens
// over fewer requests (prefill chunks). Page ids are a random permutation of the pool.
#include <algorithm>
#include <numeric>
#include <random>
#include <string>

#include "device_tensor.h"
#include "flashserve/page.h"
#include "harness/fill.h"
#include "harness/routine.h"
#include "reference/page.h"

namespace fs_bench {
namespace {

using fs_test::DeviceTensor;

DType cache_dtype_of(const Args& a) {
  if (a.cache_dtype == "fp8_e4m3") return DType::kFloat8E4M3;
  if (a.cache_dtype == "fp8_e5m2") return DType::kFloat8E5M2;
  return a.dtype;
}

Result run_append(const Args& a, Context& ctx) {
  Result r;
  r.routine = "append_paged_kv";
  r.model = a.model;
  r.dtype = flashserve::dtype_name(a.dtype);
  const int64_t batch = a.batch > 0 ? std::min(a.batch, std::max<int64_t>(a.tokens, 1)) : a.tokens;
  const DType cdt = cache_dtype_of(a);
  const bool nhd = a.layout == "NHD";
  r.shape = std::to_string(a.tokens) + " tok / " + std::to_string(batch) + " req x " +
            std::to_string(a.kv_heads) + " x " + std::to_string(a.head_dim) + " p" +
            std::to_string(a.page_size) + " " + a.layout +
            (cdt != a.dtype ? std::string(" ") + flashserve::dtype_name(cdt) : "");
  r.params = {{"tokens", fmt_int(a.tokens)},
              {"batch", fmt_int(batch)},
              {"kv_heads", fmt_int(a.kv_heads)},
              {"head_dim", fmt_int(a.head_dim)},
              {"page_size", fmt_int(a.page_size)},
              {"kv_len", fmt_int(a.kv_len)},
              {"layout", a.layout},
              {"cache_dtype", a.cache_dtype},
              {"dtype", r.dtype}};

  fs_test::ref::HostPageTable t;
  t.indptr = {0};
  t.append_indptr = {0};
  std::vector<int64_t> pages_per(batch);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t n = a.tokens / batch + (b < a.tokens % batch ? 1 : 0);
    const int64_t len = a.kv_len + n;
    pages_per[b] = (len + a.page_size - 1) / a.page_size;
    t.indptr.push_back(static_cast<int32_t>(t.indptr.back() + pages_per[b]));
    t.last_page_len.push_back(
        static_cast<int32_t>(pages_per[b] ? len - (pages_per[b] - 1) * a.page_size : 0));
    t.append_indptr.push_back(static_cast<int32_t>(t.append_indptr.back() + n));
  }
  const int64_t num_pages = t.indptr.back() + 1;
  t.indices.resize(num_pages - 1);
  std::vector<int32_t> perm(num_pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937_64(fs_test::fresh_seed()));
  std::copy(perm.begin(), perm.begin() + (num_pages - 1), t.indices.begin());

  // K and V caches are two halves of one allocation; k and v new tokens likewise.
  const int64_t page_elems = a.page_size * a.kv_heads * a.head_dim;
  const int64_t tok_elems = a.kv_heads * a.head_dim;
  DeviceTensor cache(cdt, {2, num_pages, page_elems}), input(a.dtype, {2, a.tokens, tok_elems});
  DeviceTensor indptr(DType::kInt32, {batch + 1}), indices(DType::kInt32, {num_pages - 1}),
      last(DType::kInt32, {batch}), append_indptr(DType::kInt32, {batch + 1});
  indptr.upload_raw(t.indptr.data(), 4 * (batch + 1));
  indices.upload_raw(t.indices.data(), 4 * (num_pages - 1));
  last.upload_raw(t.last_page_len.data(), 4 * batch);
  append_indptr.upload_raw(t.append_indptr.data(), 4 * (batch + 1));
  const uint64_t seed = fs_test::fresh_seed();
  fill_normal(cache.view(), seed, 0.f, 1.f, ctx.stream);
  fill_normal(input.view(), seed + 1, 0.f, 1.f, ctx.stream);

  const int64_t shape4[4] = {num_pages, nhd ? a.page_size : a.kv_heads,
                             nhd ? a.kv_heads : a.page_size, a.head_dim};
  auto cache_view = [&](int which) {
    flashserve::TensorView v = cache.view();
    v.data =
        static_cast<char*>(v.data) + which * num_pages * page_elems * flashserve::dtype_size(cdt);
    v.ndim = 4;
    int64_t stride = 1;
    for (int d = 3; d >= 0; --d) {
      v.shape[d] = shape4[d];
      v.strides[d] = stride;
      stride *= shape4[d];
    }
    return v;
  };
  auto input_view = [&](int which) {
    flashserve::TensorView v = input.view();
    v.data =
        static_cast<char*>(v.data) + which * a.tokens * tok_elems * flashserve::dtype_size(a.dtype);
    v.ndim = 3;
    v.shape[0] = a.tokens;
    v.shape[1] = a.kv_heads;
    v.shape[2] = a.head_dim;
    v.strides[0] = tok_elems;
    v.strides[1] = a.head_dim;
    v.strides[2] = 1;
    return v;
  };
  flashserve::PagedKVCache kv;
  kv.k_cache = cache_view(0);
  kv.v_cache = cache_view(1);
  kv.layout = nhd ? flashserve::KVLayout::kNHD : flashserve::KVLayout::kHND;
  kv.k_scale = kv.v_scale = flashserve::is_fp8(cdt) ? 0.05f : 1.f;
  const flashserve::PageTable table{indptr.view(), indices.view(), last.view()};
  const auto kt = input_view(0), vt = input_view(1), at = append_indptr.view();
  auto launch = [&](cudaStream_t s) {
    expect_ok(flashserve::append_paged_kv_cache(kv, table, kt, vt, at, s));
  };

  if (ctx.refcheck) {
    std::vector<unsigned char> want = cache.download_raw();
    fs_test::ref::AppendProblem p;
    p.cache_dtype = cdt;
    const int64_t ps = nhd ? a.kv_heads * a.head_dim : a.head_dim;
    const int64_t hs = nhd ? a.head_dim : a.page_size * a.head_dim;
    p.k_cache = {0, page_elems, ps, hs};
    p.v_cache = {num_pages * page_elems, page_elems, ps, hs};
    p.k = {0, tok_elems, a.head_dim};
    p.v = {a.tokens * tok_elems, tok_elems, a.head_dim};
    p.num_pages = num_pages;
    p.page_size = static_cast<int>(a.page_size);
    p.kv_heads = static_cast<int>(a.kv_heads);
    p.head_dim = static_cast<int>(a.head_dim);
    p.k_scale = kv.k_scale;
    p.v_scale = kv.v_scale;
    fs_test::ref::append_paged_kv(p, t, input.download(), &want);
    launch(ctx.stream);
    const std::vector<unsigned char> got = cache.download_raw();
    int64_t diff = 0;
    for (size_t i = 0; i < got.size(); ++i)
      diff += got[i] != want[i];
    r.check = diff == 0 ? "ok exact" : "FAIL " + std::to_string(diff) + " bytes differ";
  }
  const double bytes =
      2.0 * a.tokens * tok_elems * (flashserve::dtype_size(a.dtype) + flashserve::dtype_size(cdt)) +
      4.0 * (3 * batch + 2 + a.tokens / std::max<int64_t>(a.page_size, 1));
  finish(r, ctx.timer->time(launch, ctx.time), bytes, ctx);
  return r;
}

}  // namespace

std::vector<Routine> page_routines() {
  return {{"append_paged_kv",
           "page",
           "append new K/V tokens into a paged cache (CSR page table, random page ids)",
           {"tokens", "batch", "kv-len", "kv-heads", "head-dim", "page-size", "layout",
            "cache-dtype", "dtype"},
           run_append}};
}

}  // namespace fs_bench
