// Benchmark of prefill attention: `batch` requests of `q_len` queries over `kv_len` keys each
// (ragged layout, equal lengths; prefill_paged: the keys in a paged cache of --page-size and
// --layout, pages of each request in shuffled order), MHA or GQA, causal or not; --head-dim-v
// gives v and out another head dim than q and k (128 with 192: DeepSeek's qk 192 / v 128). Reports
// TFLOP/s (2 x visible q.k pairs x (head_dim + head_dim_v), METHOD.md) in params["tflops"] beside
// the bytes of q, k, v and out. The peers (torch SDPA flash / cuDNN) run the dense
// [batch, heads, seq, dim] problem.
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "device_tensor.h"
#include "flashserve/prefill.h"
#include "harness/fill.h"
#include "harness/routine.h"

namespace fs_bench {
namespace {

using fs_test::DeviceTensor;

Result run_prefill_impl(const Args& a, Context& ctx, bool paged) {
  Result r;
  r.routine = paged ? "prefill_paged" : "prefill";
  r.model = a.model;
  r.dtype = flashserve::dtype_name(a.dtype);
  const int64_t batch = std::max<int64_t>(a.batch, 1);
  const int64_t kv_len = a.kv_len, q_len = a.q_len > 0 ? a.q_len : a.kv_len;
  const int64_t D = a.head_dim, Dv = a.head_dim_v > 0 ? a.head_dim_v : a.head_dim;
  r.shape = "b" + std::to_string(batch) + " s" + std::to_string(q_len) +
            (q_len != kv_len ? "/" + std::to_string(kv_len) : "") + " " +
            std::to_string(a.q_heads) + "/" + std::to_string(a.kv_heads) + " x " +
            std::to_string(D) + (Dv != D ? "/" + std::to_string(Dv) : "") +
            (a.causal ? " causal" : "") + (a.split_kv ? "" : " nosplit") +
            (paged ? " p" + std::to_string(a.page_size) + " " + a.layout : "");
  r.params = {{"batch", fmt_int(batch)},
              {"q_len", fmt_int(q_len)},
              {"kv_len", fmt_int(kv_len)},
              {"q_heads", fmt_int(a.q_heads)},
              {"kv_heads", fmt_int(a.kv_heads)},
              {"head_dim", fmt_int(D)},
              {"head_dim_v", fmt_int(Dv)},
              {"causal", fmt_int(a.causal ? 1 : 0)},
              {"dtype", flashserve::dtype_name(a.dtype)}};
  if (paged) {
    r.params["page_size"] = fmt_int(a.page_size);
    r.params["layout"] = a.layout;
  }
  const int64_t tq = batch * q_len, tk = batch * kv_len;
  DeviceTensor q(a.dtype, {tq, a.q_heads, D}), out(a.dtype, {tq, a.q_heads, Dv});
  DeviceTensor k(a.dtype, {tk, a.kv_heads, D}), v(a.dtype, {tk, a.kv_heads, Dv});
  const uint64_t seed = fs_test::fresh_seed();
  fill_normal(q.view(), seed, 0.f, 1.f, ctx.stream);
  fill_normal(k.view(), seed + 1, 0.f, 1.f, ctx.stream);
  fill_normal(v.view(), seed + 2, 0.f, 1.f, ctx.stream);
  // Paged: every request's pages, shuffled, in caches filled with random values (the kernel reads
  // the same number of bytes whatever they hold).
  const int64_t P = std::max<int64_t>(a.page_size, 1);
  const bool hnd = a.layout == "HND";
  const int64_t pages_per_req = (kv_len + P - 1) / P,
                num_pages = std::max<int64_t>(batch * pages_per_req, 1);
  std::vector<int32_t> indptr(batch + 1), last(batch), indices(batch * pages_per_req);
  DeviceTensor k_cache, v_cache, d_indptr, d_indices, d_last;
  if (paged) {
    for (int64_t b = 0; b <= batch; ++b)
      indptr[b] = static_cast<int32_t>(b * pages_per_req);
    for (int64_t b = 0; b < batch; ++b)
      last[b] = kv_len == 0 ? 0 : static_cast<int32_t>(kv_len - (pages_per_req - 1) * P);
    for (size_t i = 0; i < indices.size(); ++i)
      indices[i] = static_cast<int32_t>(i);
    std::shuffle(indices.begin(), indices.end(), std::mt19937_64(seed));
    auto shape = [&](int64_t dim) {
      return hnd ? std::vector<int64_t>{num_pages, a.kv_heads, P, dim}
                 : std::vector<int64_t>{num_pages, P, a.kv_heads, dim};
    };
    k_cache = DeviceTensor(a.dtype, shape(D));
    v_cache = DeviceTensor(a.dtype, shape(Dv));
    fill_normal(k_cache.view(), seed + 3, 0.f, 1.f, ctx.stream);
    fill_normal(v_cache.view(), seed + 4, 0.f, 1.f, ctx.stream);
    auto ints = [](const std::vector<int32_t>& x) {
      DeviceTensor t(DType::kInt32, {std::max<int64_t>(static_cast<int64_t>(x.size()), 1)});
      if (!x.empty()) t.upload_raw(x.data(), static_cast<int64_t>(x.size() * sizeof(int32_t)));
      return t;
    };
    d_indptr = ints(indptr);
    d_indices = ints(indices);
    d_last = ints(last);
  }

  flashserve::PrefillPlanRequest req;
  req.batch_size = static_cast<int>(batch);
  req.q_len = static_cast<int>(q_len);
  req.kv_len = static_cast<int>(kv_len);
  req.num_qo_heads = static_cast<int>(a.q_heads);
  req.num_kv_heads = static_cast<int>(a.kv_heads);
  req.head_dim = static_cast<int>(a.head_dim);
  req.head_dim_v = static_cast<int>(a.head_dim_v);
  req.dtype = a.dtype;
  req.causal = a.causal != 0;
  req.split_kv = a.split_kv != 0;
  if (paged) {
    req.page_size = static_cast<int>(P);
    req.paged_kv_indptr = indptr.data();
    req.paged_kv_last_page_len = last.data();
  }
  size_t ws_bytes = 0;
  expect_ok(flashserve::prefill_workspace_size(req, &ws_bytes));
  DeviceTensor ws(DType::kUInt8, {static_cast<int64_t>(ws_bytes)});
  flashserve::PrefillPlan plan;
  expect_ok(flashserve::prefill_plan(req, ws.data(), ws_bytes, ctx.stream, &plan));
  flashserve::PrefillArgs args;
  args.q = q.view();
  if (paged) {
    args.cache.k_cache = k_cache.view();
    args.cache.v_cache = v_cache.view();
    args.cache.layout = hnd ? flashserve::KVLayout::kHND : flashserve::KVLayout::kNHD;
    args.table.indptr = d_indptr.view();
    args.table.indices = d_indices.view();
    args.table.last_page_len = d_last.view();
  } else {
    args.k = k.view();
    args.v = v.view();
  }
  args.out = out.view();
  auto launch = [&](cudaStream_t s) {
    expect_ok(flashserve::prefill_run(plan, args, ws.data(), s));
  };
  const double es = flashserve::dtype_size(a.dtype);
  // q and out rows (tq x q_heads), k and v rows (tk x kv_heads): D for q and k, Dv for v and out.
  const double bytes = es * double(D + Dv) * (tq * a.q_heads + tk * a.kv_heads);
  finish(r, ctx.timer->time(launch, ctx.time), bytes, ctx);
  r.params["flops"] = std::to_string(plan.flops);
  r.params["tflops"] = std::to_string(plan.flops / (r.timing.median_us * 1e-6) / 1e12);
  return r;
}

Result run_prefill(const Args& a, Context& ctx) {
  return run_prefill_impl(a, ctx, false);
}
Result run_prefill_paged(const Args& a, Context& ctx) {
  return run_prefill_impl(a, ctx, true);
}

}  // namespace

std::vector<Routine> prefill_routines() {
  return {{"prefill",
           "attention",
           "ragged prefill attention (plan once, time prefill_run), TFLOP/s in params",
           {"batch", "q-len", "kv-len", "q-heads", "kv-heads", "head-dim", "head-dim-v", "causal",
            "dtype", "split-kv"},
           run_prefill},
          {"prefill_paged",
           "attention",
           "prefill attention over a paged KV cache (shuffled pages), TFLOP/s in params",
           {"batch", "q-len", "kv-len", "q-heads", "kv-heads", "head-dim", "head-dim-v", "causal",
            "dtype", "page-size", "layout", "split-kv"},
           run_prefill_paged}};
}

}  // namespace fs_bench
