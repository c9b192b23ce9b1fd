// Decode and prefill attention kernels compiled at first use (the kernel registry's JIT path) on
// the GPU: a JIT'd specialization gives bit-for-bit the output of the prebuilt one (the same
// template, the same flags), it replays in a CUDA graph, a cached one loads in < 50 ms and a
// registry lookup takes < 1 us; FLASHSERVE_DISABLE_JIT makes decode_plan and prefill_plan fail
// naming the kernel. The kernels go to a scratch cache, so the first run of each specialization
// compiles it (a few seconds for decode, tens of seconds for a CuTe prefill kernel).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "api/decode_kernels.h"
#include "flashserve/decode.h"
#include "flashserve/prefill.h"
#include "gpu_test.h"
#include "jit_test_util.h"
#include "runtime/kernel_registry.h"

namespace fs_test {
namespace {

namespace rt = flashserve::runtime;
using flashserve::KVLayout;
using flashserve::Status;

DeviceTensor int_tensor(const std::vector<int32_t>& v) {
  DeviceTensor t(DType::kInt32, {static_cast<int64_t>(std::max<size_t>(v.size(), 1))});
  if (!v.empty()) t.upload_raw(v.data(), static_cast<int64_t>(v.size() * sizeof(int32_t)));
  return t;
}

struct Problem {
  DType q_dtype = DType::kBFloat16, kv_dtype = DType::kBFloat16;
  int head_dim = 128, qo_heads = 8, kv_heads = 2, page_size = 16;
  KVLayout layout = KVLayout::kNHD;
  std::vector<int> lens;
  std::vector<int32_t> indptr{0}, indices, last;
  DeviceTensor q, out, lse, k, v, dindptr, dindices, dlast, ws;
  size_t ws_bytes = 0;

  void make(uint64_t seed) {
    std::mt19937_64 rng(seed);
    int64_t pages = 2;
    for (int len : lens) {
      const int n = (len + page_size - 1) / page_size;
      indptr.push_back(indptr.back() + n);
      last.push_back(n ? len - (n - 1) * page_size : 0);
      pages += n;
    }
    std::vector<int32_t> perm(pages);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    indices.assign(perm.begin(), perm.begin() + indptr.back());
    const std::vector<int64_t> shape =
        layout == KVLayout::kNHD ? std::vector<int64_t>{pages, page_size, kv_heads, head_dim}
                                 : std::vector<int64_t>{pages, kv_heads, page_size, head_dim};
    const int64_t elems = pages * page_size * kv_heads * head_dim;
    k = DeviceTensor(kv_dtype, shape);
    v = DeviceTensor(kv_dtype, shape);
    k.upload(random_normal(elems, rng()));
    v.upload(random_normal(elems, rng()));
    const int64_t tokens = static_cast<int64_t>(lens.size());
    q = DeviceTensor(q_dtype, {tokens, qo_heads, head_dim});
    q.upload(random_normal(tokens * qo_heads * head_dim, rng()));
    out = DeviceTensor(q_dtype, {tokens, qo_heads, head_dim});
    lse = DeviceTensor(DType::kFloat32, {tokens, qo_heads});
    dindptr = int_tensor(indptr);
    dindices = int_tensor(indices);
    dlast = int_tensor(last);
  }
  flashserve::DecodePlanRequest request() const {
    flashserve::DecodePlanRequest r;
    r.indptr = indptr.data();
    r.last_page_len = last.data();
    r.batch_size = static_cast<int>(lens.size());
    r.num_qo_heads = qo_heads;
    r.num_kv_heads = kv_heads;
    r.head_dim = head_dim;
    r.page_size = page_size;
    r.q_dtype = q_dtype;
    r.kv_dtype = kv_dtype;
    r.layout = layout;
    return r;
  }
  flashserve::DecodeArgs args() const {
    flashserve::DecodeArgs a;
    a.q = q.view();
    a.out = out.view();
    a.lse = lse.view();
    a.cache.k_cache = k.view();
    a.cache.v_cache = v.view();
    a.cache.layout = layout;
    a.cache.k_scale = 0.7f;
    a.cache.v_scale = 1.3f;
    a.table.indptr = dindptr.view();
    a.table.indices = dindices.view();
    a.table.last_page_len = dlast.view();
    return a;
  }
  Status plan(flashserve::DecodePlan* p, cudaStream_t stream = nullptr) {
    size_t bytes = 0;
    Status st = flashserve::decode_workspace_size(request(), &bytes);
    if (!st.ok()) return st;
    if (ws_bytes < bytes) {
      ws = DeviceTensor(DType::kUInt8, {static_cast<int64_t>(bytes)});
      ws_bytes = bytes;
    }
    return flashserve::decode_plan(request(), ws.data(), ws_bytes, stream, p);
  }
  // out and lse bytes after a poisoned run of `p`.
  std::vector<unsigned char> run(const flashserve::DecodePlan& p) {
    out.poison();
    lse.poison();
    const Status st = flashserve::decode_run(p, args(), ws.data(), nullptr);
    EXPECT_TRUE(st.ok()) << st.to_string();
    cuda_check(cudaDeviceSynchronize(), "decode_run");
    std::vector<unsigned char> bytes = out.download_raw();
    const std::vector<unsigned char> l = lse.download_raw();
    bytes.insert(bytes.end(), l.begin(), l.end());
    return bytes;
  }
};

const rt::ResolvedKernel* kernel_of(const flashserve::DecodePlan& p) {
  return static_cast<const rt::ResolvedKernel*>(p.kernel);
}

class JitDecode : public GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped()) return;
    if (rt::JitConfig::from_environment().nvcc.empty()) GTEST_SKIP() << "skipped: no nvcc";
    // A scratch cache: every run measures a real compile and a real cached load.
    rt::JitConfig cfg = rt::JitConfig::from_environment();
    cfg.cache_root = scratch_.cache_dir();
    rt::KernelRegistry::global().set_config(cfg);
  }
  void TearDown() override {
    rt::KernelRegistry::global().set_force_jit(false);
    rt::KernelRegistry::global().set_config(rt::JitConfig::from_environment());
    scratch_.remove();
  }
  ScratchCache scratch_;
};

TEST_F(JitDecode, JitMatchesPrebuiltBitwise) {
  struct Case {
    DType q, kv;
    int hd;
    KVLayout layout;
  };
  const Case cases[] = {{DType::kBFloat16, DType::kBFloat16, 128, KVLayout::kNHD},
                        {DType::kFloat16, DType::kFloat16, 128, KVLayout::kHND},
                        {DType::kBFloat16, DType::kFloat8E4M3, 128, KVLayout::kNHD},
                        {DType::kFloat16, DType::kFloat8E5M2, 64, KVLayout::kHND},
                        {DType::kBFloat16, DType::kBFloat16, 256, KVLayout::kNHD}};
  rt::KernelRegistry& reg = rt::KernelRegistry::global();
  for (const Case& c : cases) {
    Problem p;
    p.q_dtype = c.q;
    p.kv_dtype = c.kv;
    p.head_dim = c.hd;
    p.layout = c.layout;
    p.lens = {1, 17, 700, 0, 3001, 64};  // ragged; the long one is split and merged
    const uint64_t seed = next_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    p.make(seed);
    flashserve::DecodePlan normal, jit;
    reg.set_force_jit(false);
    ASSERT_TRUE(p.plan(&normal).ok());
    const std::vector<unsigned char> a = p.run(normal);
    reg.set_force_jit(true);
    const auto t0 = std::chrono::steady_clock::now();
    const Status st = p.plan(&jit);
    const double first_plan =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    reg.set_force_jit(false);
    ASSERT_TRUE(st.ok()) << st.to_string();
    const rt::ResolvedKernel* kn = kernel_of(normal);
    const rt::ResolvedKernel* kj = kernel_of(jit);
    ASSERT_NE(kj, nullptr);
    SCOPED_TRACE(kj->name);
    EXPECT_NE(kj->origin, rt::KernelOrigin::kPrebuilt);
    EXPECT_NE(kn, kj);
    const std::vector<unsigned char> b = p.run(jit);
    ASSERT_EQ(a.size(), b.size());
    EXPECT_TRUE(std::memcmp(a.data(), b.data(), a.size()) == 0)
        << "JIT'd and " << rt::kernel_origin_name(kn->origin) << " kernels differ";
    // Fully written: no poison (0xFF bytes = NaN) left in out.
    const std::vector<float> out = p.out.download();
    EXPECT_EQ(std::count_if(out.begin(), out.end(), [](float x) { return std::isnan(x); }), 0);
    std::printf(
        "  %-36s vs %-8s bitwise %s; first plan %.2f s (%s, compile %.1f s, load %.1f ms)\n",
        kj->name.c_str(), rt::kernel_origin_name(kn->origin),
        std::memcmp(a.data(), b.data(), a.size()) == 0 ? "equal" : "DIFFERENT", first_plan,
        rt::kernel_origin_name(kj->origin), kj->compile_seconds, kj->load_seconds * 1e3);
  }
}

TEST_F(JitDecode, GraphReplayOfAJitKernel) {
  rt::KernelRegistry& reg = rt::KernelRegistry::global();
  Problem p;
  p.kv_dtype = DType::kFloat8E4M3;
  p.head_dim = 128;
  p.lens = {5, 2000, 33};
  p.make(next_seed());
  flashserve::DecodePlan plan;
  reg.set_force_jit(true);
  ASSERT_TRUE(p.plan(&plan).ok());
  reg.set_force_jit(false);
  ASSERT_NE(kernel_of(plan)->origin, rt::KernelOrigin::kPrebuilt);
  const std::vector<unsigned char> eager = p.run(plan);
  cudaStream_t stream;
  cuda_check(cudaStreamCreate(&stream), "stream");
  cudaGraph_t graph;
  cuda_check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "capture");
  const Status st = flashserve::decode_run(plan, p.args(), p.ws.data(), stream);
  cuda_check(cudaStreamEndCapture(stream, &graph), "end capture");
  ASSERT_TRUE(st.ok()) << st.to_string();
  cudaGraphExec_t exec;
  cuda_check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  p.out.poison();
  p.lse.poison();
  for (int i = 0; i < 3; ++i)
    cuda_check(cudaGraphLaunch(exec, stream), "replay");
  cuda_check(cudaStreamSynchronize(stream), "replay sync");
  std::vector<unsigned char> replay = p.out.download_raw();
  const std::vector<unsigned char> l = p.lse.download_raw();
  replay.insert(replay.end(), l.begin(), l.end());
  EXPECT_TRUE(replay == eager);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST_F(JitDecode, CachedLoadUnder50msAndLookupUnder1us) {
  rt::KernelRegistry& reg = rt::KernelRegistry::global();
  int device = 0;
  cuda_check(cudaGetDevice(&device), "device");
  cudaDeviceProp prop{};
  cuda_check(cudaGetDeviceProperties(&prop, device), "props");
  rt::KernelSpec spec =
      flashserve::detail::decode_kernel_spec(DType::kBFloat16, DType::kBFloat16, 128);
  spec.cc = static_cast<int16_t>(prop.major * 10 + prop.minor);
  std::unique_ptr<rt::ResolvedKernel> k;
  Status st = reg.load_fresh(spec, &k);  // compiles it into the scratch cache
  ASSERT_TRUE(st.ok()) << st.to_string();
  std::printf("  compile of %s: %.1f s\n", k->name.c_str(), k->compile_seconds);
  std::vector<double> ms;
  for (int i = 0; i < 9; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    st = reg.load_fresh(spec, &k);
    int blocks = 0;
    // About the kernel's dynamic shared memory (71.7 KB); the load into the context is timed.
    if (st.ok()) st = rt::prepare_kernel(k->module->kernel(0), 128, 70 * 1024, &blocks);
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    ASSERT_TRUE(st.ok()) << st.to_string();
    EXPECT_EQ(k->origin, rt::KernelOrigin::kDiskCache);
    EXPECT_GE(blocks, 1);
  }
  std::sort(ms.begin(), ms.end());
  std::printf(
      "  cached load (read + verify + cuLibraryLoadData + load on the device): median "
      "%.2f ms, min %.2f, max %.2f\n",
      ms[ms.size() / 2], ms.front(), ms.back());
  EXPECT_LT(ms[ms.size() / 2], 50.0);

  spec.force_jit = 1;
  const rt::ResolvedKernel* resolved = nullptr;
  ASSERT_TRUE(reg.resolve(spec, &resolved).ok());
  constexpr int kIters = 1000000;
  size_t hits = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kIters; ++i)
    hits += reg.find(spec) == resolved;
  const double ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() /
      kIters;
  EXPECT_EQ(hits, size_t{kIters});
  std::printf("  registry lookup: %.1f ns\n", ns);
  EXPECT_LT(ns, 1000.0);
}

TEST_F(JitDecode, DisabledJitFailsThePlanNamingTheKernel) {
  rt::JitConfig cfg = rt::JitConfig::from_environment();
  cfg.cache_root = scratch_.cache_dir();
  cfg.disabled = true;
  rt::KernelRegistry::global().set_config(cfg);
  rt::KernelRegistry::global().set_force_jit(true);
  Problem p;
  p.q_dtype = DType::kFloat16;
  p.kv_dtype = DType::kFloat8E5M2;
  p.head_dim = 256;
  p.lens = {3};
  p.make(next_seed());
  flashserve::DecodePlan plan;
  const Status st = p.plan(&plan);
  EXPECT_EQ(st.code(), flashserve::StatusCode::kUnsupported);
  EXPECT_NE(st.message().find("decode_plan: kernel decode q=fp16 kv=fp8_e5m2 hd=256 sm_"),
            std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("flashserve compile --spec 'decode q=fp16 kv=fp8_e5m2 hd=256'"),
            std::string::npos)
      << st.message();
}

// --- prefill
// ---------------------------------------------------------------------------------------

struct PrefillProblem {
  DType dtype = DType::kBFloat16;
  int head_dim = 128, qo_heads = 8, kv_heads = 2;
  int head_dim_v = 0;  // of v and out; 0 = head_dim
  bool causal = false;
  std::vector<std::pair<int, int>> lens;  // (q_len, kv_len) per request
  std::vector<int32_t> qo_indptr{0}, kv_indptr{0};
  DeviceTensor q, k, v, out, lse, ws;
  size_t ws_bytes = 0;

  void make(uint64_t seed) {
    std::mt19937_64 rng(seed);
    for (auto [ql, kl] : lens) {
      qo_indptr.push_back(qo_indptr.back() + ql);
      kv_indptr.push_back(kv_indptr.back() + kl);
    }
    const int64_t tq = qo_indptr.back(), tk = kv_indptr.back();
    const int dv = head_dim_v > 0 ? head_dim_v : head_dim;
    q = DeviceTensor(dtype, {tq, qo_heads, head_dim});
    k = DeviceTensor(dtype, {tk, kv_heads, head_dim});
    v = DeviceTensor(dtype, {tk, kv_heads, dv});
    q.upload(random_normal(tq * qo_heads * head_dim, rng()));
    k.upload(random_normal(tk * kv_heads * head_dim, rng()));
    v.upload(random_normal(tk * kv_heads * dv, rng()));
    out = DeviceTensor(dtype, {tq, qo_heads, dv});
    lse = DeviceTensor(DType::kFloat32, {tq, qo_heads});
  }
  flashserve::PrefillPlanRequest request() const {
    flashserve::PrefillPlanRequest r;
    r.batch_size = static_cast<int>(lens.size());
    r.qo_indptr = qo_indptr.data();
    r.kv_indptr = kv_indptr.data();
    r.num_qo_heads = qo_heads;
    r.num_kv_heads = kv_heads;
    r.head_dim = head_dim;
    r.head_dim_v = head_dim_v;
    r.dtype = dtype;
    r.causal = causal;
    return r;
  }
  Status plan(flashserve::PrefillPlan* p) {
    size_t bytes = 0;
    Status st = flashserve::prefill_workspace_size(request(), &bytes);
    if (!st.ok()) return st;
    if (ws_bytes < bytes) {
      ws = DeviceTensor(DType::kUInt8, {static_cast<int64_t>(bytes)});
      ws_bytes = bytes;
    }
    return flashserve::prefill_plan(request(), ws.data(), ws_bytes, nullptr, p);
  }
  // out and lse bytes after a poisoned run of `p` (soft_cap > 0: the general kernel).
  std::vector<unsigned char> run(const flashserve::PrefillPlan& p, float soft_cap = 0.f) {
    out.poison();
    lse.poison();
    flashserve::PrefillArgs a;
    a.q = q.view();
    a.k = k.view();
    a.v = v.view();
    a.out = out.view();
    a.lse = lse.view();
    a.logits_soft_cap = soft_cap;
    const Status st = flashserve::prefill_run(p, a, ws.data(), nullptr);
    EXPECT_TRUE(st.ok()) << st.to_string();
    cuda_check(cudaDeviceSynchronize(), "prefill_run");
    std::vector<unsigned char> bytes = out.download_raw();
    const std::vector<unsigned char> l = lse.download_raw();
    bytes.insert(bytes.end(), l.begin(), l.end());
    return bytes;
  }
};

class JitPrefill : public JitDecode {};

TEST_F(JitPrefill, JitMatchesPrebuiltBitwise) {
  struct Case {
    DType dtype;
    int hd;
    bool causal;
  };
  // Each plan resolves two kernels (its own and the general one): four compiles in all. bf16 / 128
  // is prebuilt in every build; fp16 / 64 (three consumer warpgroups) in the gpu-check build.
  const Case cases[] = {{DType::kBFloat16, 128, true}, {DType::kFloat16, 64, false}};
  rt::KernelRegistry& reg = rt::KernelRegistry::global();
  for (const Case& c : cases) {
    PrefillProblem p;
    p.dtype = c.dtype;
    p.head_dim = c.hd;
    p.causal = c.causal;
    p.lens = {{113, 203}, {0, 7}, {1023, 1024}, {1, 300}, {200, 200}};  // ragged, GQA 4
    const uint64_t seed = next_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    p.make(seed);
    flashserve::PrefillPlan normal, jit;
    reg.set_force_jit(false);
    ASSERT_TRUE(p.plan(&normal).ok());
    const std::vector<unsigned char> a = p.run(normal);
    const std::vector<unsigned char> a_general = p.run(normal, 30.f);
    reg.set_force_jit(true);
    const auto t0 = std::chrono::steady_clock::now();
    const Status st = p.plan(&jit);
    const double first_plan =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    reg.set_force_jit(false);
    ASSERT_TRUE(st.ok()) << st.to_string();
    struct Pair {
      const void* normal;
      const void* jit;
      const std::vector<unsigned char>* expected;
      float soft_cap;
    };
    const Pair pairs[] = {{normal.kernel, jit.kernel, &a, 0.f},
                          {normal.general_kernel, jit.general_kernel, &a_general, 30.f}};
    for (const Pair& pr : pairs) {
      const auto* kn = static_cast<const rt::ResolvedKernel*>(pr.normal);
      const auto* kj = static_cast<const rt::ResolvedKernel*>(pr.jit);
      ASSERT_NE(kn, nullptr);
      ASSERT_NE(kj, nullptr);
      SCOPED_TRACE(kj->name);
      EXPECT_NE(kj->origin, rt::KernelOrigin::kPrebuilt);
      EXPECT_NE(kn, kj);
      const std::vector<unsigned char> b = p.run(jit, pr.soft_cap);
      ASSERT_EQ(pr.expected->size(), b.size());
      const bool equal = std::memcmp(pr.expected->data(), b.data(), b.size()) == 0;
      EXPECT_TRUE(equal) << "JIT'd and " << rt::kernel_origin_name(kn->origin) << " kernels differ";
      const std::vector<float> out = p.out.download();
      EXPECT_EQ(std::count_if(out.begin(), out.end(), [](float x) { return std::isnan(x); }), 0);
      std::printf("  %-36s vs %-8s bitwise %s; %s, compile %.1f s, load %.1f ms\n",
                  kj->name.c_str(), rt::kernel_origin_name(kn->origin),
                  equal ? "equal" : "DIFFERENT", rt::kernel_origin_name(kj->origin),
                  kj->compile_seconds, kj->load_seconds * 1e3);
    }
    std::printf("  first prefill_plan with both kernels compiled at first use: %.1f s\n",
                first_plan);
  }
}

TEST_F(JitPrefill, DisabledJitFailsThePlanNamingTheKernel) {
  rt::JitConfig cfg = rt::JitConfig::from_environment();
  cfg.cache_root = scratch_.cache_dir();
  cfg.disabled = true;
  rt::KernelRegistry::global().set_config(cfg);
  rt::KernelRegistry::global().set_force_jit(true);
  PrefillProblem p;
  p.dtype = DType::kFloat16;
  p.head_dim = 256;
  p.causal = true;
  p.lens = {{3, 5}};
  p.make(next_seed());
  flashserve::PrefillPlan plan;
  const Status st = p.plan(&plan);
  EXPECT_EQ(st.code(), flashserve::StatusCode::kUnsupported);
  EXPECT_NE(
      st.message().find("prefill_plan: kernel prefill q=fp16 hd=256 kind=causal kv=ragged sm_"),
      std::string::npos)
      << st.message();
  EXPECT_NE(
      st.message().find("flashserve compile --spec 'prefill q=fp16 hd=256 kind=causal kv=ragged'"),
      std::string::npos)
      << st.message();
  // qk 192 / v 128: the spec names v's head dim.
  PrefillProblem mla;
  mla.head_dim = 192;
  mla.head_dim_v = 128;
  mla.causal = true;
  mla.lens = {{3, 5}};
  mla.make(next_seed());
  const Status st_mla = mla.plan(&plan);
  EXPECT_EQ(st_mla.code(), flashserve::StatusCode::kUnsupported);
  EXPECT_NE(st_mla.message().find(
                "flashserve compile --spec 'prefill q=bf16 hd=192 kind=causal kv=ragged hdv=128'"),
            std::string::npos)
      << st_mla.message();
}

}  // namespace
}  // namespace fs_test
