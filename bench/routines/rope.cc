// Benchmarks of rotary embedding: in place on q [tokens, q_heads, head_dim] and k, NeoX layout,
// int64 positions in [0, 8192).
#include <cmath>
#include <random>
#include <string>

#include "check.h"
#include "device_tensor.h"
#include "flashserve/rope.h"
#include "harness/fill.h"
#include "harness/routine.h"
#include "reference/rope.h"

namespace fs_bench {
namespace {

using fs_test::DeviceTensor;
constexpr int64_t kMaxPosition = 8192;

Result run_rope(const char* name, bool use_cache, const Args& a, Context& ctx) {
  Result r;
  r.routine = name;
  r.model = a.model;
  r.dtype = flashserve::dtype_name(a.dtype);
  const int64_t rot = a.rotary_dim ? a.rotary_dim : a.head_dim;
  r.shape = std::to_string(a.tokens) + " x " + std::to_string(a.q_heads) + "/" +
            std::to_string(a.kv_heads) + " x " + std::to_string(a.head_dim) +
            (rot != a.head_dim ? " rot " + std::to_string(rot) : "");
  r.params = {{"tokens", fmt_int(a.tokens)},
              {"q_heads", fmt_int(a.q_heads)},
              {"kv_heads", fmt_int(a.kv_heads)},
              {"head_dim", fmt_int(a.head_dim)},
              {"rotary_dim", fmt_int(rot)},
              {"dtype", r.dtype},
              {"max_position", fmt_int(kMaxPosition)},
              {"theta", "10000"}};
  DeviceTensor q(a.dtype, {a.tokens, a.q_heads, a.head_dim}),
      k(a.dtype, {a.tokens, a.kv_heads, a.head_dim}), pos(DType::kInt64, {a.tokens}),
      cache(DType::kFloat32, {kMaxPosition, rot});
  const uint64_t seed = fs_test::fresh_seed();
  fill_normal(q.view(), seed, 0.f, 1.f, ctx.stream);
  fill_normal(k.view(), seed + 1, 0.f, 1.f, ctx.stream);
  std::mt19937_64 gen(seed);
  std::vector<int64_t> positions(a.tokens);
  for (auto& p : positions)
    p = static_cast<int64_t>(gen() % kMaxPosition);
  pos.upload_raw(positions.data(), a.tokens * 8);
  flashserve::RopeOptions opt;
  opt.rotary_dim = static_cast<int>(rot);
  std::vector<float> cache_host;
  if (use_cache) {
    const std::vector<float> inv = fs_test::ref::rope_inv_freq(opt, static_cast<int>(rot));
    cache_host.resize(kMaxPosition * rot);
    for (int64_t p = 0; p < kMaxPosition; ++p) {
      for (int64_t i = 0; i < rot / 2; ++i) {
        const float angle = static_cast<float>(p) * inv[i];
        cache_host[p * rot + i] = std::cos(angle);
        cache_host[p * rot + rot / 2 + i] = std::sin(angle);
      }
    }
    cache.upload(cache_host);
  }
  const auto qt = q.view(), kt = k.view(), pt = pos.view(), ct = cache.view();
  auto launch = [&](cudaStream_t s) {
    expect_ok(use_cache ? flashserve::apply_rope_cos_sin_cache(qt, kt, qt, kt, pt, ct, opt, s)
                        : flashserve::apply_rope(qt, kt, qt, kt, pt, opt, s));
  };
  if (ctx.refcheck) {
    const auto q0 = q.download(), k0 = k.download();
    launch(ctx.stream);
    const auto angles =
        use_cache ? fs_test::ref::rope_cache_angles(positions, cache_host, kMaxPosition, rot)
                  : fs_test::ref::rope_angles(positions, opt, static_cast<int>(rot));
    std::vector<double> ref(q0.size() + k0.size());
    for (int64_t t = 0; t < a.tokens; ++t) {
      for (int64_t h = 0; h < a.q_heads; ++h) {
        const int64_t o = (t * a.q_heads + h) * a.head_dim;
        fs_test::ref::rope_head(&q0[o], &ref[o], t, a.head_dim, rot, false, angles);
      }
      for (int64_t h = 0; h < a.kv_heads; ++h) {
        const int64_t o = (t * a.kv_heads + h) * a.head_dim;
        fs_test::ref::rope_head(&k0[o], &ref[q0.size() + o], t, a.head_dim, rot, false, angles);
      }
    }
    std::vector<float> got = q.download();
    const auto kd = k.download();
    got.insert(got.end(), kd.begin(), kd.end());
    r.check = refcheck_report(got, ref, fs_test::elementwise_tolerance(a.dtype));
  }
  const double elems = static_cast<double>(a.tokens) * (a.q_heads + a.kv_heads) * a.head_dim;
  double bytes = 2.0 * elems * flashserve::dtype_size(a.dtype) + 8.0 * a.tokens;
  if (use_cache) bytes += 4.0 * a.tokens * rot;  // the cache rows read
  finish(r, ctx.timer->time(launch, ctx.time), bytes, ctx);
  return r;
}

}  // namespace

std::vector<Routine> rope_routines() {
  const std::vector<std::string> flags = {"tokens",   "q-heads",    "kv-heads",
                                          "head-dim", "rotary-dim", "dtype"};
  return {
      {"rope", "rope", "NeoX rotary embedding of q and k in place, angles from positions", flags,
       [](const Args& a, Context& ctx) { return run_rope("rope", false, a, ctx); }},
      {"rope_cos_sin_cache", "rope", "the same with a float32 cos/sin cache [8192, rotary_dim]",
       flags,
       [](const Args& a, Context& ctx) { return run_rope("rope_cos_sin_cache", true, a, ctx); }},
  };
}

}  // namespace fs_bench
