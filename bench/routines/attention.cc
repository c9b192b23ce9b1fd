// Benchmark of paged decode attention: `batch` requests of `kv_len` tokens each (page ids a random
// permutation of the pool), `q_tokens` query tokens per request. Bytes: the K and V actually read,
// plus q and out. The peers (torch SDPA flash / cuDNN) read a contiguous cache of the same shape.
#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <string>

#include "device_tensor.h"
#include "flashserve/decode.h"
#include "harness/fill.h"
#include "harness/routine.h"

namespace fs_bench {
namespace {

using fs_test::DeviceTensor;

DType kv_dtype_of(const Args& a) {
  return a.cache_dtype == "fp8_e4m3"   ? DType::kFloat8E4M3
         : a.cache_dtype == "fp8_e5m2" ? DType::kFloat8E5M2
                                       : a.dtype;
}

// A planned decode over `batch` requests of `kv_len` tokens in a paged cache (random page
// permutation, or the pages in table order with --page-order sequential). With `shared`, every
// request's table lists the same pages (a shared prefix).
struct PagedDecode {
  DeviceTensor kc, vc, indptr, indices, last, ws;
  flashserve::DecodePlan plan;
  flashserve::DecodeArgs args;
};

void build_decode(PagedDecode& d, const Args& a, int64_t batch, int64_t kv_len, bool shared,
                  const DeviceTensor& q, const DeviceTensor& out, const DeviceTensor* lse,
                  Context& ctx) {
  const bool nhd = a.layout == "NHD";
  const DType kv_dtype = kv_dtype_of(a);
  const int64_t ps = a.page_size, pages_per = (kv_len + ps - 1) / ps;
  const int64_t distinct = shared ? pages_per : batch * pages_per;
  const int64_t num_pages = distinct + 1;
  std::vector<int32_t> indptr(batch + 1), last(batch), indices(batch * pages_per), qptr(batch + 1);
  std::vector<int32_t> perm(num_pages);
  std::iota(perm.begin(), perm.end(), 0);
  if (!a.sequential_pages) {
    std::shuffle(perm.begin(), perm.end(), std::mt19937_64(fs_test::fresh_seed()));
  }
  for (int64_t b = 0; b <= batch; ++b) {
    indptr[b] = static_cast<int32_t>(b * pages_per);
    qptr[b] = static_cast<int32_t>(b * a.q_tokens);
  }
  for (int64_t b = 0; b < batch; ++b) {
    last[b] = static_cast<int32_t>(pages_per ? kv_len - (pages_per - 1) * ps : 0);
    for (int64_t p = 0; p < pages_per; ++p) {
      indices[b * pages_per + p] = perm[(shared ? 0 : b * pages_per) + p];
    }
  }
  const std::vector<int64_t> cache_shape =
      nhd ? std::vector<int64_t>{num_pages, ps, a.kv_heads, a.head_dim}
          : std::vector<int64_t>{num_pages, a.kv_heads, ps, a.head_dim};
  d.kc = DeviceTensor(kv_dtype, cache_shape);
  d.vc = DeviceTensor(kv_dtype, cache_shape);
  d.indptr = DeviceTensor(DType::kInt32, {batch + 1});
  d.indices = DeviceTensor(DType::kInt32, {std::max<int64_t>(1, batch * pages_per)});
  d.last = DeviceTensor(DType::kInt32, {batch});
  const uint64_t seed = fs_test::fresh_seed();
  fill_normal(d.kc.view(), seed, 0.f, 1.f, ctx.stream);
  fill_normal(d.vc.view(), seed + 1, 0.f, 1.f, ctx.stream);
  d.indptr.upload_raw(indptr.data(), 4 * (batch + 1));
  d.indices.upload_raw(indices.data(), 4 * static_cast<int64_t>(indices.size()));
  d.last.upload_raw(last.data(), 4 * batch);

  flashserve::DecodePlanRequest req;
  req.indptr = indptr.data();
  req.last_page_len = last.data();
  req.batch_size = static_cast<int>(batch);
  req.q_indptr = a.q_tokens > 1 ? qptr.data() : nullptr;
  req.num_qo_heads = static_cast<int>(a.q_heads);
  req.num_kv_heads = static_cast<int>(a.kv_heads);
  req.head_dim = static_cast<int>(a.head_dim);
  req.page_size = static_cast<int>(ps);
  req.q_dtype = a.dtype;
  req.kv_dtype = kv_dtype;
  req.layout = nhd ? flashserve::KVLayout::kNHD : flashserve::KVLayout::kHND;
  size_t ws_bytes = 0;
  expect_ok(flashserve::decode_workspace_size(req, &ws_bytes));
  d.ws = DeviceTensor(DType::kUInt8, {static_cast<int64_t>(ws_bytes)});
  expect_ok(flashserve::decode_plan(req, d.ws.data(), ws_bytes, ctx.stream, &d.plan));
  d.args.q = q.view();
  d.args.out = out.view();
  if (lse) d.args.lse = lse->view();
  d.args.cache.k_cache = d.kc.view();
  d.args.cache.v_cache = d.vc.view();
  d.args.cache.layout = req.layout;
  d.args.table = {d.indptr.view(), d.indices.view(), d.last.view()};
}

std::string head_shape(const Args& a) {
  const DType kv_dtype = kv_dtype_of(a);
  return std::to_string(a.q_heads) + "/" + std::to_string(a.kv_heads) + " x " +
         std::to_string(a.head_dim) + " p" + std::to_string(a.page_size) +
         (a.q_tokens > 1 ? " q" + std::to_string(a.q_tokens) : "") +
         (a.layout == "NHD" ? "" : " HND") + (a.sequential_pages ? " seq" : "") +
         (kv_dtype != a.dtype ? std::string(" ") + flashserve::dtype_name(kv_dtype) : "");
}

std::map<std::string, std::string> decode_params(const Args& a, int64_t batch) {
  return {{"batch", fmt_int(batch)},
          {"kv_len", fmt_int(a.kv_len)},
          {"q_heads", fmt_int(a.q_heads)},
          {"kv_heads", fmt_int(a.kv_heads)},
          {"head_dim", fmt_int(a.head_dim)},
          {"page_size", fmt_int(a.page_size)},
          {"q_tokens", fmt_int(a.q_tokens)},
          {"layout", a.layout},
          {"page_order", a.sequential_pages ? "sequential" : "random"},
          {"cache_dtype", a.cache_dtype},
          {"dtype", flashserve::dtype_name(a.dtype)}};
}

Result run_decode(const Args& a, Context& ctx) {
  Result r;
  r.routine = "decode";
  r.model = a.model;
  r.dtype = flashserve::dtype_name(a.dtype);
  const int64_t batch = std::max<int64_t>(a.batch, 1);
  r.shape = "b" + std::to_string(batch) + " kv" + std::to_string(a.kv_len) + " " + head_shape(a);
  r.params = decode_params(a, batch);
  const int64_t q_rows = batch * a.q_tokens;
  DeviceTensor q(a.dtype, {q_rows, a.q_heads, a.head_dim}),
      out(a.dtype, {q_rows, a.q_heads, a.head_dim});
  fill_normal(q.view(), fs_test::fresh_seed(), 0.f, 1.f, ctx.stream);
  PagedDecode d;
  build_decode(d, a, batch, a.kv_len, false, q, out, nullptr, ctx);
  r.params["splits"] = fmt_int(d.plan.split_tokens);
  auto launch = [&](cudaStream_t s) {
    expect_ok(flashserve::decode_run(d.plan, d.args, d.ws.data(), s));
  };
  const double kv_bytes =
      2.0 * batch * a.kv_len * a.kv_heads * a.head_dim * flashserve::dtype_size(kv_dtype_of(a));
  const double qo_bytes = 2.0 * q_rows * a.q_heads * a.head_dim * flashserve::dtype_size(a.dtype);
  finish(r, ctx.timer->time(launch, ctx.time), kv_bytes + qo_bytes, ctx);
  return r;
}

// Shared-prefix (cascade) decode: every request attends to one prefix of --prefix-len tokens plus
// its own suffix of --kv-len tokens: decode over the shared prefix pages, decode over the suffixes,
// merge_state. Bytes: the prefix K/V once, the suffixes, q and out. The peers attend over a
// contiguous prefix + suffix per request (what an engine without cascade does).
Result run_cascade(const Args& a, Context& ctx) {
  Result r;
  r.routine = "cascade_decode";
  r.model = a.model;
  r.dtype = flashserve::dtype_name(a.dtype);
  const int64_t batch = std::max<int64_t>(a.batch, 1);
  r.shape = "b" + std::to_string(batch) + " prefix" + std::to_string(a.prefix_len) + " + kv" +
            std::to_string(a.kv_len) + " " + head_shape(a);
  r.params = decode_params(a, batch);
  r.params["kv_len"] = fmt_int(a.prefix_len + a.kv_len);  // what the peers attend over
  const int64_t q_rows = batch * a.q_tokens;
  const std::vector<int64_t> qshape = {q_rows, a.q_heads, a.head_dim};
  DeviceTensor q(a.dtype, qshape), o1(a.dtype, qshape), o2(a.dtype, qshape), out(a.dtype, qshape),
      s1(DType::kFloat32, {q_rows, a.q_heads}), s2(DType::kFloat32, {q_rows, a.q_heads});
  fill_normal(q.view(), fs_test::fresh_seed(), 0.f, 1.f, ctx.stream);
  PagedDecode prefix, suffix;
  build_decode(prefix, a, batch, a.prefix_len, true, q, o1, &s1, ctx);
  build_decode(suffix, a, batch, a.kv_len, false, q, o2, &s2, ctx);
  const auto o1v = o1.view(), o2v = o2.view(), ov = out.view(), s1v = s1.view(), s2v = s2.view();
  auto launch = [&](cudaStream_t s) {
    expect_ok(flashserve::decode_run(prefix.plan, prefix.args, prefix.ws.data(), s));
    expect_ok(flashserve::decode_run(suffix.plan, suffix.args, suffix.ws.data(), s));
    expect_ok(flashserve::merge_state(o1v, s1v, o2v, s2v, ov, flashserve::TensorView{}, s));
  };
  const int kv_es = flashserve::dtype_size(kv_dtype_of(a));
  const double kv_bytes = 2.0 * (a.prefix_len + batch * a.kv_len) * a.kv_heads * a.head_dim * kv_es;
  const double qo_bytes = 2.0 * q_rows * a.q_heads * a.head_dim * flashserve::dtype_size(a.dtype);
  finish(r, ctx.timer->time(launch, ctx.time), kv_bytes + qo_bytes, ctx);
  return r;
}

}  // namespace

std::vector<Routine> attention_routines() {
  return {
      {"decode",
       "attention",
       "paged decode attention (plan once, time decode_run), K+V bytes read",
       {"batch", "kv-len", "q-heads", "kv-heads", "head-dim", "page-size", "q-tokens", "layout",
        "cache-dtype", "dtype"},
       run_decode},
      {"cascade_decode",
       "attention",
       "shared prefix (--prefix-len) + per-request suffixes (--kv-len): two decodes + merge_state",
       {"batch", "prefix-len", "kv-len", "q-heads", "kv-heads", "head-dim", "page-size", "q-tokens",
        "layout", "cache-dtype", "dtype"},
       run_cascade}};
}

}  // namespace fs_bench
