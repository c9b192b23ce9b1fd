// Benchmark of paged decode attention: `batch` requests of `kv_len` tokens each (page ids a random
// permutation of the pool), `q_tokens` query tokens per request. Bytes: the K and V actually read,
// plus q and out. The peers (torch SDPA flash / cuDNN) read a contiguous cache of the same shape.
#include <algorithm>
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

Result run_decode(const Args& a, Context& ctx) {
  Result r;
  r.routine = "decode";
  r.model = a.model;
  r.dtype = flashserve::dtype_name(a.dtype);
  const int64_t batch = std::max<int64_t>(a.batch, 1);
  const bool nhd = a.layout == "NHD";
  const DType kv_dtype = a.cache_dtype == "fp8_e4m3"   ? DType::kFloat8E4M3
                         : a.cache_dtype == "fp8_e5m2" ? DType::kFloat8E5M2
                                                       : a.dtype;
  r.shape = "b" + std::to_string(batch) + " kv" + std::to_string(a.kv_len) + " " +
            std::to_string(a.q_heads) + "/" + std::to_string(a.kv_heads) + " x " +
            std::to_string(a.head_dim) + " p" + std::to_string(a.page_size) +
            (a.q_tokens > 1 ? " q" + std::to_string(a.q_tokens) : "") + (nhd ? "" : " HND") +
            (kv_dtype != a.dtype ? std::string(" ") + flashserve::dtype_name(kv_dtype) : "");
  r.params = {{"batch", fmt_int(batch)},         {"kv_len", fmt_int(a.kv_len)},
              {"q_heads", fmt_int(a.q_heads)},   {"kv_heads", fmt_int(a.kv_heads)},
              {"head_dim", fmt_int(a.head_dim)}, {"page_size", fmt_int(a.page_size)},
              {"q_tokens", fmt_int(a.q_tokens)}, {"layout", a.layout},
              {"cache_dtype", a.cache_dtype},    {"dtype", r.dtype}};

  const int64_t ps = a.page_size, pages_per = (a.kv_len + ps - 1) / ps;
  const int64_t num_pages = batch * pages_per + 1;
  std::vector<int32_t> indptr(batch + 1), last(batch), indices(batch * pages_per), qptr(batch + 1);
  for (int64_t b = 0; b <= batch; ++b) {
    indptr[b] = static_cast<int32_t>(b * pages_per);
    qptr[b] = static_cast<int32_t>(b * a.q_tokens);
  }
  for (int64_t b = 0; b < batch; ++b) {
    last[b] = static_cast<int32_t>(pages_per ? a.kv_len - (pages_per - 1) * ps : 0);
  }
  std::vector<int32_t> perm(num_pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937_64(fs_test::fresh_seed()));
  std::copy(perm.begin(), perm.begin() + indices.size(), indices.begin());

  const int64_t q_rows = batch * a.q_tokens;
  const std::vector<int64_t> cache_shape =
      nhd ? std::vector<int64_t>{num_pages, ps, a.kv_heads, a.head_dim}
          : std::vector<int64_t>{num_pages, a.kv_heads, ps, a.head_dim};
  DeviceTensor kc(kv_dtype, cache_shape), vc(kv_dtype, cache_shape),
      q(a.dtype, {q_rows, a.q_heads, a.head_dim}), out(a.dtype, {q_rows, a.q_heads, a.head_dim}),
      d_indptr(DType::kInt32, {batch + 1}),
      d_indices(DType::kInt32, {std::max<int64_t>(1, batch * pages_per)}),
      d_last(DType::kInt32, {batch});
  const uint64_t seed = fs_test::fresh_seed();
  fill_normal(kc.view(), seed, 0.f, 1.f, ctx.stream);
  fill_normal(vc.view(), seed + 1, 0.f, 1.f, ctx.stream);
  fill_normal(q.view(), seed + 2, 0.f, 1.f, ctx.stream);
  d_indptr.upload_raw(indptr.data(), 4 * (batch + 1));
  d_indices.upload_raw(indices.data(), 4 * static_cast<int64_t>(indices.size()));
  d_last.upload_raw(last.data(), 4 * batch);

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
  DeviceTensor ws(DType::kUInt8, {static_cast<int64_t>(ws_bytes)});
  flashserve::DecodePlan plan;
  expect_ok(flashserve::decode_plan(req, ws.data(), ws_bytes, ctx.stream, &plan));

  flashserve::DecodeArgs args;
  args.q = q.view();
  args.out = out.view();
  args.cache.k_cache = kc.view();
  args.cache.v_cache = vc.view();
  args.cache.layout = req.layout;
  args.table = {d_indptr.view(), d_indices.view(), d_last.view()};
  r.params["splits"] = fmt_int(plan.split_tokens);
  auto launch = [&](cudaStream_t s) {
    expect_ok(flashserve::decode_run(plan, args, ws.data(), s));
  };
  const double kv_bytes =
      2.0 * batch * a.kv_len * a.kv_heads * a.head_dim * flashserve::dtype_size(kv_dtype);
  const double qo_bytes = 2.0 * q_rows * a.q_heads * a.head_dim * flashserve::dtype_size(a.dtype);
  finish(r, ctx.timer->time(launch, ctx.time), kv_bytes + qo_bytes, ctx);
  return r;
}

}  // namespace

std::vector<Routine> attention_routines() {
  return {{"decode",
           "attention",
           "paged decode attention (plan once, time decode_run), K+V bytes read",
           {"batch", "kv-len", "q-heads", "kv-heads", "head-dim", "page-size", "q-tokens", "layout",
            "cache-dtype", "dtype"},
           run_decode}};
}

}  // namespace fs_bench
