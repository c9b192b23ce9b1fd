// Rotary position embedding against the CPU reference (METHOD.md rules: fresh random inputs and
// positions, NaN-poisoned outputs and padding, odd sizes, strided / packed views, every dtype).
// Every element of every buffer is checked: rotated dims against the reference, non-rotary dims
// copied (out of place) or untouched (in place), everything outside the views untouched.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <sstream>
#include <vector>

#include "check.h"
#include "flashserve/rope.h"
#include "flashserve/runtime.h"
#include "gpu_test.h"
#include "reference/rope.h"

namespace fs_test {
namespace {

using flashserve::RopeOptions;
using flashserve::Status;

enum class Cache { kNone, kFloat32, kSameDtype };

struct RopeCase {
  DType dtype = DType::kBFloat16;
  DType pos_dtype = DType::kInt64;
  int64_t tokens = 7;
  int64_t q_heads = 4;
  int64_t kv_heads = 2;
  int64_t head_dim = 128;
  int rotary_dim = 0;  // options.rotary_dim (0: head_dim, or the cache width)
  bool interleave = false;
  bool in_place = false;
  bool packed = false;   // q, k and an untouched v are slices of one qkv row
  int64_t head_pad = 0;  // head stride = head_dim + head_pad
  int64_t row_pad = 0;   // extra elements after each token row (odd pads misalign rows)
  float theta = 10000.f;
  float scale = 1.f;
  bool llama31 = false;
  int64_t max_position = 4096;  // positions drawn from [0, max_position), the last one included
  Cache cache = Cache::kNone;
  int64_t bad_token = -1;  // cache variant: this token gets a position outside the cache
};

std::string describe(const RopeCase& c) {
  std::ostringstream os;
  os << flashserve::dtype_name(c.dtype) << " pos " << flashserve::dtype_name(c.pos_dtype)
     << " tokens " << c.tokens << " heads " << c.q_heads << "/" << c.kv_heads << " head_dim "
     << c.head_dim << " rotary " << c.rotary_dim << (c.interleave ? " gptj" : " neox")
     << (c.in_place ? " in_place" : " out_of_place") << (c.packed ? " packed" : "") << " head_pad "
     << c.head_pad << " row_pad " << c.row_pad << " theta " << c.theta << " scale " << c.scale
     << (c.llama31 ? " llama31" : "") << " max_pos " << c.max_position << " cache "
     << static_cast<int>(c.cache) << " bad_token " << c.bad_token;
  return os.str();
}

// A [tokens, width] buffer and the [tokens, heads, head_dim] views carved out of it.
struct Rows {
  DeviceTensor t;
  int64_t width = 0;
  std::vector<float> host;  // what was uploaded (inputs) or empty (poisoned outputs)

  TensorView slice(int64_t col, int64_t heads, int64_t head_dim, int64_t head_stride) const {
    TensorView v = t.view();
    v.data = static_cast<char*>(t.data()) + col * flashserve::dtype_size(t.dtype());
    v.ndim = 3;
    v.shape[0] = t.shape()[0];
    v.shape[1] = heads;
    v.shape[2] = head_dim;
    v.strides[0] = width;
    v.strides[1] = head_stride;
    v.strides[2] = 1;
    return v;
  }
};

Rows make_rows(DType dtype, int64_t tokens, int64_t width, bool fill, uint64_t seed) {
  Rows r;
  r.width = width;
  // At least one element of storage so that zero-token views still carry a real pointer.
  r.t = DeviceTensor(dtype, {tokens, width}, {width, 1}, std::max<int64_t>(tokens * width, 1));
  r.t.poison();
  if (fill) {
    r.host = rounded(dtype, random_normal(tokens * width, seed));
    r.t.upload(r.host);
  }
  return r;
}

// Where a q or k tensor lives: buffer index (0 or 1) and first column.
struct Place {
  int buffer = 0;
  int64_t col = 0;
};

class RopeTest : public GpuTest {
 protected:
  std::vector<int64_t> make_positions(const RopeCase& c) {
    std::mt19937_64 gen(next_seed());
    std::uniform_int_distribution<int64_t> dist(0, c.max_position - 1);
    std::vector<int64_t> pos(c.tokens);
    for (auto& p : pos)
      p = dist(gen);
    if (c.tokens > 0) pos[c.tokens / 2] = c.max_position - 1;
    if (c.bad_token >= 0) pos[c.bad_token] = c.bad_token % 2 ? c.max_position : -1;
    return pos;
  }

  void run_case(const RopeCase& c) {
    SCOPED_TRACE(describe(c) + " seed " + std::to_string(seed_));
    const int64_t T = c.tokens, D = c.head_dim, hs = D + c.head_pad;
    const int64_t q_width = c.q_heads * hs, k_width = c.kv_heads * hs;

    // Inputs: one packed [q | k | v | pad] buffer, or a q buffer and a k buffer.
    std::vector<Rows> in, out;
    Place qp, kp;
    if (c.packed) {
      in.push_back(make_rows(c.dtype, T, q_width + 2 * k_width + c.row_pad, true, next_seed()));
      kp = {0, q_width};
    } else {
      in.push_back(make_rows(c.dtype, T, q_width + c.row_pad, true, next_seed()));
      in.push_back(make_rows(c.dtype, T, k_width + c.row_pad, true, next_seed()));
      kp = {1, 0};
    }
    if (!c.in_place) {
      for (const Rows& r : in)
        out.push_back(make_rows(c.dtype, T, r.width, false, 0));
    }
    const std::vector<Rows>& dst = c.in_place ? in : out;
    const TensorView q = in[qp.buffer].slice(qp.col, c.q_heads, D, hs);
    const TensorView k = in[kp.buffer].slice(kp.col, c.kv_heads, D, hs);
    const TensorView q_out = dst[qp.buffer].slice(qp.col, c.q_heads, D, hs);
    const TensorView k_out = dst[kp.buffer].slice(kp.col, c.kv_heads, D, hs);

    const std::vector<int64_t> pos = make_positions(c);
    DeviceTensor positions(c.pos_dtype, {T}, {1}, std::max<int64_t>(T, 1));
    if (T > 0) positions.upload(std::vector<float>(pos.begin(), pos.end()));

    RopeOptions opt;
    opt.rotary_dim = c.rotary_dim;
    opt.interleave = c.interleave;
    opt.theta = c.theta;
    opt.scale = c.scale;
    opt.llama31 = c.llama31;
    const int rotary = c.rotary_dim != 0 ? c.rotary_dim : static_cast<int>(D);

    Status st;
    ref::RopeAngles angles;
    if (c.cache == Cache::kNone) {
      st = flashserve::apply_rope(q_out, k_out, q, k, positions.view(), opt);
      angles = ref::rope_angles(pos, opt, rotary);
    } else {
      // Cache rows from the reference frequencies (cos, sin of the float32 angle), rounded to the
      // cache dtype; the reference then uses exactly the stored values.
      const DType cache_dtype = c.cache == Cache::kFloat32 ? DType::kFloat32 : c.dtype;
      const std::vector<float> inv_freq = ref::rope_inv_freq(opt, rotary);
      const int half = rotary / 2;
      std::vector<float> host(c.max_position * rotary);
      for (int64_t p = 0; p < c.max_position; ++p) {
        for (int i = 0; i < half; ++i) {
          const double a = static_cast<float>(p) * inv_freq[i];
          host[p * rotary + i] = static_cast<float>(std::cos(a));
          host[p * rotary + half + i] = static_cast<float>(std::sin(a));
        }
      }
      host = rounded(cache_dtype, host);
      DeviceTensor cache(cache_dtype, {c.max_position, rotary});
      cache.upload(host);
      st = flashserve::apply_rope_cos_sin_cache(q_out, k_out, q, k, positions.view(), cache.view(),
                                                opt);
      angles = ref::rope_cache_angles(pos, host, c.max_position, rotary);
      cuda_check(cudaDeviceSynchronize(), "rope");  // `cache` is freed at the end of this scope
    }
    ASSERT_TRUE(st.ok()) << st.to_string();

    // Expected content of every destination buffer element.
    enum Kind : char { kUntouched, kExact, kRotated, kNan };
    std::vector<std::vector<double>> want(dst.size());
    std::vector<std::vector<char>> kind(dst.size());
    for (size_t b = 0; b < dst.size(); ++b) {
      const size_t n = static_cast<size_t>(T * dst[b].width);
      want[b].assign(n, 0.0);
      kind[b].assign(n, kUntouched);
      if (c.in_place) {
        for (size_t e = 0; e < n; ++e)
          want[b][e] = in[b].host[e];
      }
    }
    std::vector<double> head(D);
    auto expect_heads = [&](const Place& pl, int64_t heads) {
      const Rows& src = in[pl.buffer];
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t h = 0; h < heads; ++h) {
          const int64_t off = t * src.width + pl.col + h * hs;
          ref::rope_head(&src.host[off], head.data(), t, static_cast<int>(D), rotary, c.interleave,
                         angles);
          for (int64_t d = 0; d < D; ++d) {
            want[pl.buffer][off + d] = head[d];
            kind[pl.buffer][off + d] =
                d >= rotary ? kExact : (std::isnan(head[d]) ? kNan : kRotated);
          }
        }
      }
    };
    expect_heads(qp, c.q_heads);
    expect_heads(kp, c.kv_heads);

    std::vector<float> got_rot;
    std::vector<double> want_rot;
    int64_t wrong_exact = 0, wrong_untouched = 0, wrong_nan = 0;
    for (size_t b = 0; b < dst.size(); ++b) {
      const std::vector<float> got = dst[b].t.download();
      for (size_t e = 0; e < got.size(); ++e) {
        switch (kind[b][e]) {
          case kRotated:
            got_rot.push_back(got[e]);
            want_rot.push_back(want[b][e]);
            break;
          case kExact:
            wrong_exact += !(got[e] == want[b][e]);
            break;
          case kNan:
            wrong_nan += !std::isnan(got[e]);
            break;
          case kUntouched:
            // In place: the input value; out of place: still the poison.
            wrong_untouched += c.in_place ? !(got[e] == want[b][e]) : !std::isnan(got[e]);
            break;
        }
      }
    }
    const Accuracy acc = elementwise_rule(got_rot, want_rot, c.dtype);
    EXPECT_TRUE(acc.pass) << acc.str();
    EXPECT_EQ(wrong_exact, 0) << "non-rotary dims not copied / not left as they were";
    EXPECT_EQ(wrong_untouched, 0) << "elements outside q_out / k_out were written";
    EXPECT_EQ(wrong_nan, 0) << "an out-of-range position did not give NaN";
    if (!c.in_place) {
      for (const Rows& r : in)
        EXPECT_EQ(r.t.download(), r.host) << "an input was modified out of place";
    }
  }
};

constexpr DType kDtypes[] = {DType::kBFloat16, DType::kFloat16, DType::kFloat32};

TEST_F(RopeTest, LayoutsDtypesAndHeadDims) {
  int n = 0;
  for (DType dt : kDtypes) {
    for (bool interleave : {false, true}) {
      for (int64_t head_dim : {64, 128, 256, 80}) {
        RopeCase c;
        c.dtype = dt;
        c.interleave = interleave;
        c.head_dim = head_dim;
        c.in_place = n % 2 == 0;
        c.pos_dtype = n % 3 == 0 ? DType::kInt32 : DType::kInt64;
        c.tokens = n % 4 == 0 ? 113 : 7;
        run_case(c);
        ++n;
      }
    }
  }
}

TEST_F(RopeTest, PartialRotaryDim) {
  struct R {
    int64_t head_dim;
    int rotary;
  };
  for (DType dt : kDtypes) {
    for (bool interleave : {false, true}) {
      for (bool in_place : {false, true}) {
        for (R r : {R{128, 64}, R{80, 32}, R{256, 128}}) {
          RopeCase c;
          c.dtype = dt;
          c.interleave = interleave;
          c.in_place = in_place;
          c.head_dim = r.head_dim;
          c.rotary_dim = r.rotary;
          run_case(c);
        }
      }
    }
  }
}

// Shapes the 16-byte path cannot take: rotary halves not a multiple of the vector, odd head dims,
// misaligned rows or heads. Also head_dim 512 and a head_dim of 2.
TEST_F(RopeTest, ScalarPathShapes) {
  struct S {
    int64_t head_dim;
    int rotary;
    int64_t head_pad;
    int64_t row_pad;
  };
  for (DType dt : kDtypes) {
    for (bool interleave : {false, true}) {
      for (bool in_place : {false, true}) {
        for (S s : {S{80, 72, 0, 0}, S{18, 10, 0, 0}, S{63, 62, 0, 0}, S{128, 0, 0, 3},
                    S{128, 0, 1, 0}, S{2, 0, 0, 0}, S{512, 0, 0, 0}, S{512, 200, 3, 5}}) {
          RopeCase c;
          c.dtype = dt;
          c.interleave = interleave;
          c.in_place = in_place;
          c.head_dim = s.head_dim;
          c.rotary_dim = s.rotary;
          c.head_pad = s.head_pad;
          c.row_pad = s.row_pad;
          run_case(c);
        }
      }
    }
  }
}

// Head counts: a single head (tokens packed several per block), many heads (several sweeps of the
// block), and the Llama-3-8B decode shape.
TEST_F(RopeTest, HeadCounts) {
  struct H {
    int64_t q, kv, head_dim, tokens;
  };
  for (bool interleave : {false, true}) {
    for (H h : {H{1, 1, 64, 7}, H{1, 1, 64, 1}, H{64, 8, 256, 5}, H{32, 8, 128, 1},
                H{28, 4, 128, 3}, H{3, 1, 32, 129}}) {
      RopeCase c;
      c.interleave = interleave;
      c.q_heads = h.q;
      c.kv_heads = h.kv;
      c.head_dim = h.head_dim;
      c.tokens = h.tokens;
      run_case(c);
    }
  }
}

// Positions up to 131071: angles reach 1.3e5 rad; fp32 holds the 1e-5 rule only with accurate
// sincos of exactly the reference's float32 angle.
TEST_F(RopeTest, LargePositions) {
  for (DType dt : {DType::kFloat32, DType::kBFloat16}) {
    for (DType pos_dt : {DType::kInt32, DType::kInt64}) {
      for (bool interleave : {false, true}) {
        RopeCase c;
        c.dtype = dt;
        c.pos_dtype = pos_dt;
        c.interleave = interleave;
        c.max_position = 131072;
        c.tokens = 113;
        run_case(c);
      }
    }
  }
}

TEST_F(RopeTest, Llama31Scaling) {
  for (DType dt : {DType::kFloat32, DType::kBFloat16}) {
    for (bool interleave : {false, true}) {
      for (int64_t max_position : {4096, 131072}) {
        RopeCase c;
        c.dtype = dt;
        c.interleave = interleave;
        c.llama31 = true;
        c.theta = 500000.f;
        c.max_position = max_position;
        c.tokens = 33;
        c.q_heads = 32;
        c.kv_heads = 8;
        c.pos_dtype = max_position > 4096 ? DType::kInt32 : DType::kInt64;
        run_case(c);
      }
    }
  }
}

TEST_F(RopeTest, ThetaAndLinearScale) {
  for (DType dt : {DType::kFloat32, DType::kFloat16}) {
    for (float scale : {2.f, 2.5f, 0.75f}) {
      for (float theta : {10000.f, 1000000.f}) {
        RopeCase c;
        c.dtype = dt;
        c.scale = scale;
        c.theta = theta;
        c.max_position = 32768;
        c.interleave = scale == 2.5f;
        run_case(c);
      }
    }
  }
}

// q and k as slices of one packed [tokens, (q + 2 kv) heads, head_dim] qkv tensor: in place (v and
// the row padding must stay untouched) and out of place into a packed output.
TEST_F(RopeTest, PackedQkv) {
  for (DType dt : kDtypes) {
    for (bool interleave : {false, true}) {
      for (bool in_place : {false, true}) {
        for (int64_t pad : {0, 8, 3}) {
          RopeCase c;
          c.dtype = dt;
          c.interleave = interleave;
          c.in_place = in_place;
          c.packed = true;
          c.row_pad = pad;
          c.q_heads = 8;
          c.kv_heads = 2;
          c.rotary_dim = pad == 8 ? 64 : 0;
          c.tokens = 17;
          run_case(c);
        }
      }
    }
  }
}

TEST_F(RopeTest, CosSinCache) {
  for (DType dt : kDtypes) {
    for (Cache cache : {Cache::kFloat32, Cache::kSameDtype}) {
      if (dt == DType::kFloat32 && cache == Cache::kSameDtype) continue;
      for (bool interleave : {false, true}) {
        for (bool in_place : {false, true}) {
          RopeCase c;
          c.dtype = dt;
          c.cache = cache;
          c.interleave = interleave;
          c.in_place = in_place;
          c.pos_dtype = in_place ? DType::kInt32 : DType::kInt64;
          c.tokens = 33;
          run_case(c);
          // Partial rotary: the cache width is the rotary dim (options.rotary_dim 0 or equal).
          c.head_dim = 80;
          c.rotary_dim = in_place ? 0 : 32;
          run_case(c);
        }
      }
    }
  }
}

TEST_F(RopeTest, CosSinCacheLargePositionsAndPackedQkv) {
  RopeCase c;
  c.cache = Cache::kFloat32;
  c.dtype = DType::kFloat32;
  c.head_dim = 64;
  c.max_position = 131072;
  c.packed = true;
  c.in_place = true;
  run_case(c);
}

// cos_sin_cache: a position outside [0, max_position) gives NaN in that token's rotated dims and
// nothing else (the other dims are still copied / untouched, other tokens are fine).
TEST_F(RopeTest, OutOfRangePositionGivesNaN) {
  for (bool interleave : {false, true}) {
    for (bool in_place : {false, true}) {
      for (int64_t bad : {0, 3}) {  // position -1, then max_position
        RopeCase c;
        c.cache = Cache::kFloat32;
        c.interleave = interleave;
        c.in_place = in_place;
        c.head_dim = 128;
        c.rotary_dim = 64;
        c.max_position = 512;
        c.bad_token = bad;
        c.pos_dtype = bad ? DType::kInt32 : DType::kInt64;
        run_case(c);
      }
    }
  }
}

TEST_F(RopeTest, DebugChecksRejectOutOfRangePositions) {
  const int64_t T = 6, H = 2, D = 64, max_position = 100;
  DeviceTensor q(DType::kBFloat16, {T, H, D}), k(DType::kBFloat16, {T, H, D});
  DeviceTensor positions(DType::kInt64, {T}), cache(DType::kFloat32, {max_position, D});
  q.upload(random_normal(T * H * D, next_seed()));
  k.upload(random_normal(T * H * D, next_seed()));
  cache.upload(random_normal(max_position * D, next_seed()));
  positions.upload({0, 5, 99, 100, 7, -3});
  const bool was = flashserve::debug_checks();
  flashserve::set_debug_checks(true);
  const Status st = flashserve::apply_rope_cos_sin_cache(q.view(), k.view(), q.view(), k.view(),
                                                         positions.view(), cache.view());
  positions.upload({0, 5, 99, 1, 7, 3});
  const Status ok = flashserve::apply_rope_cos_sin_cache(q.view(), k.view(), q.view(), k.view(),
                                                         positions.view(), cache.view());
  flashserve::set_debug_checks(was);
  EXPECT_EQ(st.code(), flashserve::StatusCode::kInvalidArgument) << st.to_string();
  EXPECT_NE(st.message().find("positions"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("positions[3] = 100"), std::string::npos) << st.message();
  EXPECT_TRUE(ok.ok()) << ok.to_string();
}

// Enough tokens for blocks that handle several tokens per row one after the other (the tile policy
// does so from ~2 * 8 * SMs tokens per row), with a partial last block.
TEST_F(RopeTest, ManyTokens) {
  struct M {
    int64_t tokens, q, kv, head_dim;
  };
  for (bool interleave : {false, true}) {
    for (M m : {M{4099, 32, 8, 128}, M{4229, 32, 8, 128}, M{17003, 1, 1, 64}}) {
      RopeCase c;
      c.interleave = interleave;
      c.tokens = m.tokens;
      c.q_heads = m.q;
      c.kv_heads = m.kv;
      c.head_dim = m.head_dim;
      c.max_position = 131072;
      c.in_place = interleave;
      run_case(c);
      if (m.q == 1) {
        c.cache = Cache::kFloat32;
        c.max_position = 8192;
        c.bad_token = m.tokens - 2;
        run_case(c);
      }
    }
  }
}

TEST_F(RopeTest, ZeroTokensIsANoOp) {
  for (bool cache : {false, true}) {
    RopeCase c;
    c.tokens = 0;
    c.cache = cache ? Cache::kFloat32 : Cache::kNone;
    run_case(c);
  }
  // Empty views with null pointers (what torch hands over for empty tensors) are accepted.
  DeviceTensor q(DType::kBFloat16, {0, 4, 128}), k(DType::kBFloat16, {0, 2, 128}),
      positions(DType::kInt64, {0});
  const Status st =
      flashserve::apply_rope(q.view(), k.view(), q.view(), k.view(), positions.view());
  EXPECT_TRUE(st.ok()) << st.to_string();
}

TEST_F(RopeTest, Deterministic) {
  for (bool cache : {false, true}) {
    const int64_t T = 257, Hq = 32, Hk = 8, D = 128, max_position = 8192;
    DeviceTensor q(DType::kBFloat16, {T, Hq, D}), k(DType::kBFloat16, {T, Hk, D}),
        q_out(DType::kBFloat16, {T, Hq, D}), k_out(DType::kBFloat16, {T, Hk, D}),
        positions(DType::kInt64, {T}), table(DType::kFloat32, {max_position, D});
    q.upload(random_normal(T * Hq * D, next_seed()));
    k.upload(random_normal(T * Hk * D, next_seed()));
    table.upload(random_normal(max_position * D, next_seed()));
    std::vector<float> pos(T);
    for (int64_t t = 0; t < T; ++t)
      pos[t] = static_cast<float>((t * 7919) % max_position);
    positions.upload(pos);
    auto run = [&] {
      q_out.poison();
      k_out.poison();
      const Status st =
          cache ? flashserve::apply_rope_cos_sin_cache(q_out.view(), k_out.view(), q.view(),
                                                       k.view(), positions.view(), table.view())
                : flashserve::apply_rope(q_out.view(), k_out.view(), q.view(), k.view(),
                                         positions.view());
      EXPECT_TRUE(st.ok()) << st.to_string();
      auto a = q_out.download_raw();
      const auto b = k_out.download_raw();
      a.insert(a.end(), b.begin(), b.end());
      return a;
    };
    const auto first = run();
    for (int i = 0; i < 3; ++i)
      EXPECT_EQ(run(), first);
  }
}

TEST_F(RopeTest, WrongDeviceIsRejected) {
  DeviceTensor q(DType::kBFloat16, {2, 4, 64}), k(DType::kBFloat16, {2, 2, 64}),
      positions(DType::kInt64, {2});
  TensorView pv = positions.view();
  pv.device = pv.device + 1;
  const Status st = flashserve::apply_rope(q.view(), k.view(), q.view(), k.view(), pv);
  EXPECT_EQ(st.code(), flashserve::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("positions"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace fs_test
