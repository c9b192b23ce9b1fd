// append_paged_kv_cache against the CPU reference (METHOD.md rules): random cache bytes so that
// every byte outside the appended slots is checked to be unchanged, random page permutations,
// page sizes 1, 5, 16, 64, NHD and HND, K and V as two views of one allocation, slices of a packed
// qkv tensor, ragged batches with empty requests, every cache dtype, and corrupt page tables.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <sstream>
#include <utility>

#include "flashserve/page.h"
#include "flashserve/runtime.h"
#include "gpu_test.h"
#include "reference/page.h"

namespace fs_test {
namespace {

using flashserve::KVLayout;
using flashserve::Status;
using flashserve::StatusCode;

struct AppendCase {
  DType dtype = DType::kBFloat16;        // k and v
  DType cache_dtype = DType::kBFloat16;  // dtype, or fp8
  KVLayout layout = KVLayout::kNHD;
  int page_size = 16;
  int kv_heads = 8;
  int head_dim = 128;
  std::vector<int> new_tokens;  // per request
  std::vector<int> old_len;     // per request: tokens before the append
  bool interleaved = true;      // K and V as two views of one [num_pages, 2, ...] allocation
  int cache_pad = 0;            // extra elements after each head_dim row of the cache
  bool packed_qkv = true;       // k, v: slices of a [tokens, (2 + 2 * kv_heads) * head_dim] tensor
  int input_shift = 0;          // k and v start this many elements later (odd: misaligned)
  float input_stddev = 1.f;
  float k_scale = 1.f;
  float v_scale = 1.f;
  bool poison_cache = false;  // 0xFF bytes (NaN) instead of random bytes
  int spare_pages = 3;        // pages no request owns: must stay untouched
};

std::string describe(const AppendCase& c) {
  std::ostringstream os;
  os << flashserve::dtype_name(c.dtype) << " -> " << flashserve::dtype_name(c.cache_dtype) << " "
     << flashserve::kv_layout_name(c.layout) << " page " << c.page_size << " heads " << c.kv_heads
     << " x " << c.head_dim << " batch " << c.new_tokens.size() << " interleaved " << c.interleaved
     << " pad " << c.cache_pad << " packed " << c.packed_qkv << " shift " << c.input_shift
     << " scales " << c.k_scale << "/" << c.v_scale << " new [";
  for (size_t b = 0; b < c.new_tokens.size() && b < 8; ++b)
    os << (b ? " " : "") << c.new_tokens[b] << "+" << c.old_len[b];
  os << (c.new_tokens.size() > 8 ? " ...]" : "]");
  return os.str();
}

// A ragged batch: new and old lengths up to the given maxima, with at least one request that owns
// no page (0 + 0) and one that appends nothing to existing pages when batch >= 3.
void ragged_batch(AppendCase* c, int batch, int max_new, int max_old, uint64_t seed) {
  std::mt19937_64 rng(seed);
  c->new_tokens.assign(batch, 0);
  c->old_len.assign(batch, 0);
  for (int b = 0; b < batch; ++b) {
    c->new_tokens[b] = static_cast<int>(rng() % (max_new + 1));
    c->old_len[b] = static_cast<int>(rng() % (max_old + 1));
  }
  if (batch >= 3) {
    c->new_tokens[1] = 0;
    c->old_len[1] = 0;
    c->new_tokens[batch - 1] = 0;
    c->old_len[batch - 1] = std::max(c->old_len[batch - 1], 1);
  }
}

// One new token per request (decode), old lengths up to max_old.
void decode_batch(AppendCase* c, int batch, int max_old, uint64_t seed) {
  std::mt19937_64 rng(seed);
  c->new_tokens.assign(batch, 1);
  c->old_len.assign(batch, 0);
  for (int b = 0; b < batch; ++b)
    c->old_len[b] = static_cast<int>(rng() % (max_old + 1));
}

DeviceTensor int_tensor(const std::vector<int32_t>& v) {
  DeviceTensor t(DType::kInt32, {static_cast<int64_t>(v.size())});
  t.upload_raw(v.data(), static_cast<int64_t>(v.size() * sizeof(int32_t)));
  return t;
}

// Everything one append needs, on the host and the device.
struct AppendSetup {
  ref::HostPageTable table;
  ref::AppendProblem problem;
  std::vector<float> input_values;     // input storage, rounded to the input dtype
  std::vector<unsigned char> initial;  // cache storage bytes before the append
  DeviceTensor cache, input, indptr, indices, last_page_len, append_indptr;
  flashserve::PagedKVCache kv;
  flashserve::PageTable pt;
  TensorView k, v, append;
  int64_t new_tokens = 0;

  Status run(cudaStream_t stream = nullptr) const {
    return flashserve::append_paged_kv_cache(kv, pt, k, v, append, stream);
  }
  // Synchronizes the device: a pageable upload may still be in flight when cudaMemcpy returns,
  // and work on a non-blocking stream would not wait for it.
  void reset_cache() {
    cache.upload_raw(initial.data(), static_cast<int64_t>(initial.size()));
    cuda_check(cudaDeviceSynchronize(), "reset_cache");
  }
};

TensorView view_at(const DeviceTensor& storage, int64_t elem_offset,
                   std::initializer_list<int64_t> shape, std::initializer_list<int64_t> strides) {
  TensorView base = storage.view();
  char* ptr =
      static_cast<char*>(storage.data()) + elem_offset * flashserve::dtype_size(storage.dtype());
  return TensorView::strided(storage.data() ? ptr : nullptr, storage.dtype(), shape, strides,
                             base.device);
}

// Builds the page table (a random permutation of the page pool), the cache storage (random bytes)
// and the inputs; `edit` may corrupt the host table before it is uploaded.
AppendSetup make_setup(const AppendCase& c, uint64_t seed,
                       const std::function<void(ref::HostPageTable&)>& edit = {}) {
  std::mt19937_64 rng(seed);
  AppendSetup s;
  const int64_t batch = static_cast<int64_t>(c.new_tokens.size());
  const int64_t ps = c.page_size, H = c.kv_heads, D = c.head_dim;

  // Page table.
  ref::HostPageTable& t = s.table;
  t.indptr.assign(1, 0);
  t.append_indptr.assign(1, 0);
  std::vector<int64_t> kv_len(batch);
  int64_t used_pages = 0;
  for (int64_t b = 0; b < batch; ++b) {
    kv_len[b] = c.old_len[b] + c.new_tokens[b];
    used_pages += (kv_len[b] + ps - 1) / ps;
  }
  const int64_t num_pages = used_pages + c.spare_pages;
  std::vector<int32_t> perm(num_pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t pages = (kv_len[b] + ps - 1) / ps;
    for (int64_t i = 0; i < pages; ++i)
      t.indices.push_back(perm[t.indices.size()]);
    t.indptr.push_back(static_cast<int32_t>(t.indices.size()));
    t.last_page_len.push_back(static_cast<int32_t>(pages ? kv_len[b] - (pages - 1) * ps : 0));
    t.append_indptr.push_back(t.append_indptr.back() + c.new_tokens[b]);
  }
  // Entries past indptr[batch] are never read; an invalid id would show up as a skipped write.
  t.indices.push_back(-7);
  t.indices.push_back(static_cast<int32_t>(num_pages + 7));
  if (edit) edit(t);
  s.new_tokens = t.append_indptr.back();

  // Cache: NHD pages [page_size, H, D + pad], HND pages [H, page_size, D + pad].
  ref::AppendProblem& p = s.problem;
  p.cache_dtype = c.cache_dtype;
  p.num_pages = num_pages;
  p.page_size = c.page_size;
  p.kv_heads = c.kv_heads;
  p.head_dim = c.head_dim;
  p.k_scale = c.k_scale;
  p.v_scale = c.v_scale;
  const int64_t row = D + c.cache_pad, page_elems = ps * H * row;
  ref::CacheGeometry g;
  g.slot = c.layout == KVLayout::kNHD ? H * row : row;
  g.head = c.layout == KVLayout::kNHD ? row : ps * row;
  g.page = c.interleaved ? 2 * page_elems : page_elems;
  p.k_cache = g;
  p.v_cache = g;
  p.v_cache.base = c.interleaved ? page_elems : num_pages * page_elems;
  s.cache = DeviceTensor(c.cache_dtype, {2 * num_pages * page_elems});
  s.initial.resize(s.cache.storage_bytes());
  if (c.poison_cache) {
    std::fill(s.initial.begin(), s.initial.end(), 0xFF);
  } else {
    for (size_t i = 0; i < s.initial.size(); i += 8) {
      const uint64_t r = rng();
      std::memcpy(&s.initial[i], &r, std::min<size_t>(8, s.initial.size() - i));
    }
  }
  s.reset_cache();
  auto cache_view = [&](const ref::CacheGeometry& cg) {
    return c.layout == KVLayout::kNHD
               ? view_at(s.cache, cg.base, {num_pages, ps, H, D}, {cg.page, cg.slot, cg.head, 1})
               : view_at(s.cache, cg.base, {num_pages, H, ps, D}, {cg.page, cg.head, cg.slot, 1});
  };
  s.kv.k_cache = cache_view(p.k_cache);
  s.kv.v_cache = cache_view(p.v_cache);
  s.kv.layout = c.layout;
  s.kv.k_scale = c.k_scale;
  s.kv.v_scale = c.v_scale;

  // Inputs: [T, (2 + 2H) * D + shift] packed qkv rows (2 q heads first), or contiguous k then v.
  const int64_t T = s.new_tokens;
  int64_t storage;
  if (c.packed_qkv) {
    const int64_t width = (2 + 2 * H) * D + c.input_shift;
    p.k = {2 * D + c.input_shift, width, D};
    p.v = {2 * D + c.input_shift + H * D, width, D};
    storage = T * width;
  } else {
    p.k = {c.input_shift, H * D, D};
    p.v = {c.input_shift + T * H * D, H * D, D};
    storage = c.input_shift + 2 * T * H * D;
  }
  s.input_values = rounded(c.dtype, random_normal(storage, rng(), 0.f, c.input_stddev));
  s.input = DeviceTensor(c.dtype, {storage});
  s.input.upload(s.input_values);
  s.k = view_at(s.input, p.k.base, {T, H, D}, {p.k.token, p.k.head, 1});
  s.v = view_at(s.input, p.v.base, {T, H, D}, {p.v.token, p.v.head, 1});

  s.indptr = int_tensor(t.indptr);
  s.indices = int_tensor(t.indices);
  s.last_page_len = int_tensor(t.last_page_len);
  s.append_indptr = int_tensor(t.append_indptr);
  s.pt = {s.indptr.view(), s.indices.view(), s.last_page_len.view()};
  s.append = s.append_indptr.view();
  return s;
}

bool fp8_nan(DType dtype, unsigned char x) {
  return dtype == DType::kFloat8E4M3 ? (x & 0x7F) == 0x7F : (x & 0x7C) == 0x7C;
}

// Adjacent fp8 values have adjacent codes within one sign; +-0 and the smallest subnormals are
// one step apart across the sign.
bool within_one_fp8_step(DType dtype, unsigned char a, unsigned char b) {
  if (fp8_nan(dtype, a) || fp8_nan(dtype, b)) return false;
  const int ma = a & 0x7F, mb = b & 0x7F;
  return (a & 0x80) == (b & 0x80) ? std::abs(ma - mb) <= 1 : ma + mb <= 1;
}

// The cache after the kernel against the reference: bytes outside the appended slots are
// bit-identical to the initial bytes; appended elements are exact (fp8: within one step).
void expect_cache_matches(const AppendSetup& s) {
  std::vector<unsigned char> want = s.initial, written(s.initial.size(), 0);
  ref::append_paged_kv(s.problem, s.table, s.input_values, &want, &written);
  const std::vector<unsigned char> got = s.cache.download_raw();
  ASSERT_EQ(got.size(), want.size());
  const DType dt = s.problem.cache_dtype;
  const bool fp8 = flashserve::is_fp8(dt);
  int64_t untouched_changed = 0, wrong = 0, near = 0, first_bad = -1, num_written = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num_written += written[i];
    if (got[i] == want[i]) continue;
    if (!written[i]) {
      ++untouched_changed;
    } else if (fp8 && within_one_fp8_step(dt, got[i], want[i])) {
      ++near;
      continue;
    } else {
      ++wrong;
    }
    if (first_bad < 0) first_bad = static_cast<int64_t>(i);
  }
  EXPECT_EQ(untouched_changed, 0) << "bytes outside the appended slots changed";
  EXPECT_EQ(wrong, 0) << "appended bytes differ from the reference";
  if (first_bad >= 0) {
    ADD_FAILURE() << "first bad byte " << first_bad << ": got " << int(got[first_bad]) << " want "
                  << int(want[first_bad]) << " (written " << int(written[first_bad]) << ")";
  }
  // Off-by-one fp8 codes are allowed but should be rare (the division is IEEE on both sides).
  EXPECT_LE(near * 1000, std::max<int64_t>(num_written, 1000))
      << near << " fp8 values off by a step";
}

// Sets the debug-check flag for one scope and restores it (even when an assertion returns early).
class DebugChecks {
 public:
  explicit DebugChecks(bool on) : previous_(flashserve::debug_checks()) {
    flashserve::set_debug_checks(on);
  }
  ~DebugChecks() { flashserve::set_debug_checks(previous_); }

 private:
  bool previous_;
};

class AppendTest : public GpuTest {
 protected:
  void run_case(const AppendCase& c) {
    SCOPED_TRACE(describe(c) + " seed " + std::to_string(seed_));
    DebugChecks checks(true);  // valid tables must also pass the host-side checks
    AppendSetup s = make_setup(c, next_seed());
    const Status st = s.run();
    ASSERT_TRUE(st.ok()) << st.to_string();
    expect_cache_matches(s);
  }
};

// 2 x 80 takes the vector path too (80 bf16 = 160 bytes); 3 x 7 and 5 x 1 the scalar path.
constexpr std::pair<int, int> kShapes[] = {{8, 128}, {1, 64}, {4, 256}, {2, 80}, {3, 7}, {5, 1}};

TEST_F(AppendTest, ShapesPageSizesLayouts) {
  for (auto [heads, dim] : kShapes) {
    for (int ps : {1, 16, 64, 5}) {
      for (KVLayout layout : {KVLayout::kNHD, KVLayout::kHND}) {
        AppendCase c;
        c.kv_heads = heads;
        c.head_dim = dim;
        c.page_size = ps;
        c.layout = layout;
        ragged_batch(&c, 7, 40, 70, next_seed());
        run_case(c);
      }
    }
  }
}

TEST_F(AppendTest, CopyDtypes) {
  for (DType dt : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
    for (KVLayout layout : {KVLayout::kNHD, KVLayout::kHND}) {
      for (auto [heads, dim] : {std::pair{8, 128}, std::pair{3, 7}}) {
        AppendCase c;
        c.dtype = c.cache_dtype = dt;
        c.layout = layout;
        c.kv_heads = heads;
        c.head_dim = dim;
        ragged_batch(&c, 5, 50, 40, next_seed());
        run_case(c);
      }
    }
  }
}

TEST_F(AppendTest, Fp8CachesWithScales) {
  struct Scales {
    float k, v, stddev;
  };
  // Unit scales, non-powers of two, and scales small enough to saturate e4m3 (|x| / s > 448).
  const Scales scales[] = {{1.f, 1.f, 1.f}, {0.37f, 2.5f, 1.f}, {1.f / 512, 1.f / 300, 2.f}};
  for (DType dt : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
    for (DType cache_dt : {DType::kFloat8E4M3, DType::kFloat8E5M2}) {
      for (const Scales& sc : scales) {
        for (auto [heads, dim] : {std::pair{8, 128}, std::pair{3, 7}}) {
          AppendCase c;
          c.dtype = dt;
          c.cache_dtype = cache_dt;
          c.k_scale = sc.k;
          c.v_scale = sc.v;
          c.input_stddev = sc.stddev;
          c.kv_heads = heads;
          c.head_dim = dim;
          c.layout = heads == 3 ? KVLayout::kHND : KVLayout::kNHD;
          ragged_batch(&c, 5, 40, 40, next_seed());
          run_case(c);
        }
      }
    }
  }
}

TEST_F(AppendTest, DecodeBatches) {
  // Batch sizes around the 32-ary search's round boundaries (32, 1024) and past them.
  for (int batch : {1, 2, 31, 32, 33, 100, 256, 1024, 1025, 5000}) {
    AppendCase c;
    if (batch > 256) {  // keep the page pool small
      c.kv_heads = 2;
      c.head_dim = 64;
    }
    decode_batch(&c, batch, batch > 256 ? 40 : 300, next_seed());
    run_case(c);
  }
  for (DType cache_dt : {DType::kFloat8E4M3, DType::kBFloat16}) {
    AppendCase c;
    c.cache_dtype = cache_dt;
    c.layout = KVLayout::kHND;
    c.k_scale = 0.5f;
    c.v_scale = 0.75f;
    decode_batch(&c, 256, 64, next_seed());
    run_case(c);
  }
}

TEST_F(AppendTest, DecodeWithEmptyRequests) {
  // Many requests append nothing (or own no page): the search must skip runs of equal offsets.
  for (int batch : {40, 3000}) {
    AppendCase c;
    c.kv_heads = 2;
    c.head_dim = 64;
    decode_batch(&c, batch, 50, next_seed());
    std::mt19937_64 rng(next_seed());
    for (int b = 0; b < batch; ++b) {
      if (rng() % 3 == 0) c.new_tokens[b] = 0;
      if (rng() % 7 == 0) c.new_tokens[b] = c.old_len[b] = 0;
    }
    c.new_tokens[0] = c.old_len[0] = 0;
    c.new_tokens[batch - 1] = 0;
    run_case(c);
  }
}

TEST_F(AppendTest, PrefillAcrossPageBoundaries) {
  for (int ps : {1, 5, 16, 64}) {
    for (KVLayout layout : {KVLayout::kNHD, KVLayout::kHND}) {
      AppendCase c;
      c.page_size = ps;
      c.layout = layout;
      c.new_tokens = {300, 0, 517, 0, 64};
      c.old_len = {0, 40, 29, 0, 3};
      run_case(c);
    }
  }
}

TEST_F(AppendTest, StridedInputsAndCaches) {
  for (bool packed : {true, false}) {
    for (int shift : {0, 1}) {     // 1: misaligned k and v, scalar path
      for (int pad : {0, 8, 3}) {  // 3: misaligned cache rows, scalar path
        for (bool interleaved : {true, false}) {
          AppendCase c;
          c.packed_qkv = packed;
          c.input_shift = shift;
          c.cache_pad = pad;
          c.interleaved = interleaved;
          c.layout = pad == 8 ? KVLayout::kHND : KVLayout::kNHD;
          ragged_batch(&c, 4, 30, 30, next_seed());
          run_case(c);
        }
      }
    }
  }
  AppendCase fp8;
  fp8.cache_dtype = DType::kFloat8E5M2;
  fp8.input_shift = 1;
  fp8.k_scale = 0.3f;
  ragged_batch(&fp8, 4, 30, 30, next_seed());
  run_case(fp8);
}

TEST_F(AppendTest, LargeRowsSplitOverWarps) {
  // 8 x 512 bf16 is four warps' slices per token; 8 x 128 fp32 two.
  for (auto [heads, dim] : {std::pair{8, 512}, std::pair{2, 512}, std::pair{1, 4096}}) {
    AppendCase c;
    c.kv_heads = heads;
    c.head_dim = dim;
    ragged_batch(&c, 4, 20, 20, next_seed());
    run_case(c);
  }
  AppendCase scalar;  // misaligned inputs: 4096 single elements per token, 32 warps
  scalar.head_dim = 512;
  scalar.input_shift = 1;
  ragged_batch(&scalar, 4, 20, 20, next_seed());
  run_case(scalar);
  AppendCase f32;
  f32.dtype = f32.cache_dtype = DType::kFloat32;
  f32.layout = KVLayout::kHND;
  ragged_batch(&f32, 4, 20, 20, next_seed());
  run_case(f32);
  AppendCase f8;
  f8.cache_dtype = DType::kFloat8E4M3;
  f8.head_dim = 512;
  f8.k_scale = 0.25f;
  ragged_batch(&f8, 4, 20, 20, next_seed());
  run_case(f8);
}

TEST_F(AppendTest, LargePrefillBatch) {
  // 16384 new tokens x 8 x 128, the throughput shape.
  AppendCase c;
  c.new_tokens.assign(64, 256);
  c.old_len.assign(64, 0);
  std::mt19937_64 rng(next_seed());
  for (int& len : c.old_len)
    len = static_cast<int>(rng() % 100);
  run_case(c);
}

TEST_F(AppendTest, PoisonedCacheIsFullyWritten) {
  for (DType cache_dt : {DType::kBFloat16, DType::kFloat8E4M3}) {
    for (auto [heads, dim] : {std::pair{8, 128}, std::pair{3, 7}}) {
      AppendCase c;
      c.cache_dtype = cache_dt;
      c.poison_cache = true;
      c.kv_heads = heads;
      c.head_dim = dim;
      ragged_batch(&c, 6, 50, 30, next_seed());
      run_case(c);
    }
  }
}

TEST_F(AppendTest, Deterministic) {
  for (DType cache_dt : {DType::kBFloat16, DType::kFloat8E4M3}) {
    AppendCase c;
    c.cache_dtype = cache_dt;
    c.k_scale = 0.7f;
    ragged_batch(&c, 16, 100, 100, next_seed());
    AppendSetup s = make_setup(c, next_seed());
    ASSERT_TRUE(s.run().ok());
    const auto first = s.cache.download_raw();
    for (int i = 0; i < 3; ++i) {
      s.reset_cache();
      ASSERT_TRUE(s.run().ok());
      EXPECT_EQ(s.cache.download_raw(), first);
    }
  }
}

TEST_F(AppendTest, CapturedInACudaGraph) {
  // Debug checks are skipped while capturing (no synchronous copy is allowed there); the replayed
  // graph gives the same cache as a direct call.
  DebugChecks checks(true);
  AppendCase c;
  decode_batch(&c, 64, 100, next_seed());
  AppendSetup s = make_setup(c, next_seed());
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  const Status st = s.run(stream);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_TRUE(st.ok()) << st.to_string();
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int i = 0; i < 2; ++i) {
    s.reset_cache();
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    expect_cache_matches(s);
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST_F(AppendTest, NothingToAppendIsANoOp) {
  AppendCase c;
  c.new_tokens = {0, 0, 0};
  c.old_len = {5, 0, 17};
  run_case(c);  // zero new tokens: the cache is unchanged

  AppendCase empty;  // zero requests
  run_case(empty);
}

// A corrupt table: the kernel skips what it cannot place (no fault, nothing else written); the
// debug-check mode reports it as an invalid argument naming the array, the request and the value.
void expect_skipped_and_reported(const AppendCase& c, uint64_t seed,
                                 const std::function<void(ref::HostPageTable&)>& corrupt,
                                 const std::string& array, const std::string& value) {
  AppendSetup s = make_setup(c, seed, corrupt);
  {
    DebugChecks checks(false);
    const Status st = s.run();
    ASSERT_TRUE(st.ok()) << st.to_string();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    expect_cache_matches(s);
  }
  {
    DebugChecks checks(true);
    s.reset_cache();
    const Status st = s.run();
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
    EXPECT_NE(st.message().find(array), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("request 2"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find(value), std::string::npos) << st.message();
    // Nothing was launched.
    EXPECT_EQ(s.cache.download_raw(), s.initial);
  }
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
}

AppendCase corrupt_case() {
  AppendCase c;
  c.page_size = 4;
  c.kv_heads = 2;
  c.head_dim = 64;
  c.new_tokens = {3, 0, 9, 2};
  c.old_len = {1, 6, 2, 5};
  return c;
}

TEST_F(AppendTest, BadPageIdIsSkippedAndReported) {
  // Request 2 owns indices[3..6); its second page id points past the pool, then before it.
  for (int32_t bad : {1000000, -3}) {
    SCOPED_TRACE(bad);
    expect_skipped_and_reported(
        corrupt_case(), next_seed(),
        [bad](ref::HostPageTable& t) { t.indices[t.indptr[2] + 1] = bad; }, "table.indices",
        std::to_string(bad));
  }
}

TEST_F(AppendTest, MoreNewTokensThanKvLenIsSkippedAndReported) {
  // Request 2 holds 11 tokens; claim 13 new ones: the first two positions are negative.
  expect_skipped_and_reported(
      corrupt_case(), next_seed(),
      [](ref::HostPageTable& t) {
        for (size_t b = 2; b < t.append_indptr.size(); ++b)
          t.append_indptr[b] += b == 2 ? 0 : 4;  // request 2: 9 -> 13 rows
      },
      "append_indptr", "13");
}

TEST_F(AppendTest, LastPageLenPastPageSizeIsSkippedAndReported) {
  expect_skipped_and_reported(
      corrupt_case(), next_seed(), [](ref::HostPageTable& t) { t.last_page_len[2] = 7; },
      "table.last_page_len", "7");
}

}  // namespace
}  // namespace fs_test
