// The sampling kernels' arithmetic on the CPU: Philox4x32-10 against the published known-answer
// vectors, the key and mass encodings, the radix bin arithmetic, and a replay of the kernels'
// threshold selection (the same steps with one histogram instead of a cluster's) against brute
// force over the sorted keys, on rows with ties, zeros, subnormals and every filter combination.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "device_tensor.h"
#include "flashserve/sampling/key_math.h"
#include "flashserve/sampling/philox.cuh"
#include "reference/sampling.h"

namespace {

namespace fs = flashserve::sampling;

TEST(SamplingPhilox, KnownAnswerVectors) {
  // Random123 kat_vectors, "philox4x32 10": counter, key, expected output.
  struct Kat {
    std::array<uint32_t, 4> ctr;
    std::array<uint32_t, 2> key;
    std::array<uint32_t, 4> out;
  };
  const Kat kats[] = {
      {{0u, 0u, 0u, 0u}, {0u, 0u}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
      {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
       {0xffffffffu, 0xffffffffu},
       {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
      {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
       {0xa4093822u, 0x299f31d0u},
       {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
  };
  for (const Kat& k : kats) {
    const fs::PhiloxBlock out =
        fs::philox4x32_10({{k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3]}}, k.key[0], k.key[1]);
    for (int i = 0; i < 4; ++i)
      EXPECT_EQ(out.v[i], k.out[i]) << "word " << i;
  }
  // A wrong key schedule (no Weyl bump) must not reproduce the vectors: the check can fail.
  fs::PhiloxBlock c{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}};
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    fs::philox_mulhilo(0xD2511F53u, c.v[0], hi0, lo0);
    fs::philox_mulhilo(0xCD9E8D57u, c.v[2], hi1, lo1);
    c = {{hi1 ^ c.v[1] ^ 0xa4093822u, lo1, hi0 ^ c.v[3] ^ 0x299f31d0u, lo0}};
  }
  EXPECT_NE(c.v[0], 0xd16cfe09u);
}

TEST(SamplingPhilox, CounterLayoutAndUniforms) {
  // The draw of (seed, offset, row, index) is the block of counter (offset lo, offset hi, row,
  // index) under key (seed lo, seed hi).
  const uint64_t seed = 0x123456789abcdef0ull, offset = 0x0fedcba987654321ull;
  const fs::PhiloxBlock a = fs::philox_draw(seed, offset, 7u, 3u);
  const fs::PhiloxBlock b =
      fs::philox4x32_10({{0x87654321u, 0x0fedcba9u, 7u, 3u}}, 0x9abcdef0u, 0x12345678u);
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(a.v[i], b.v[i]);
  EXPECT_EQ(fs::philox_u64(seed, offset, 7u, 3u), (uint64_t{a.v[1]} << 32) | a.v[0]);
  EXPECT_NE(fs::philox_u64(seed, offset, 7u, 3u), fs::philox_u64(seed, offset + 1, 7u, 3u));
  EXPECT_NE(fs::philox_u64(seed, offset, 7u, 3u), fs::philox_u64(seed, offset, 8u, 3u));
  EXPECT_EQ(fs::uniform_from_bits(0u), 0.f);
  EXPECT_LT(fs::uniform_from_bits(0xffffffffu), 1.f);
  EXPECT_EQ(fs::scale_uniform(0, 1000), 0u);
  EXPECT_EQ(fs::scale_uniform(~uint64_t{0}, 1000), 999u);
  EXPECT_EQ(fs::scale_uniform(uint64_t{1} << 63, 1000), 500u);
}

float from_bits(uint32_t b) {
  return fs::bits_float(b);
}

TEST(SamplingKeys, MassIsFixedPointOfTheRatioToTheMaximum) {
  const int e1 = fs::mass_exponent(fs::kOneBits);
  EXPECT_EQ(fs::key_mass(fs::kOneBits, e1), 1u << 30);
  EXPECT_EQ(fs::key_mass(fs::float_bits(0.5f), e1), 1u << 29);
  EXPECT_EQ(fs::key_mass(fs::float_bits(0.75f), e1), 3u << 28);
  EXPECT_EQ(fs::key_mass(0u, e1), 0u);
  EXPECT_EQ(fs::key_mass(fs::float_bits(std::ldexp(1.f, -32)), e1), 0u);
  EXPECT_EQ(fs::key_mass(fs::float_bits(std::ldexp(1.f, -31)), e1), 0u);  // ties to even
  EXPECT_EQ(fs::key_mass(fs::float_bits(std::ldexp(1.5f, -30)), e1), 2u);
  EXPECT_EQ(fs::key_mass(fs::float_bits(std::ldexp(1.25f, -30)), e1), 1u);
  EXPECT_EQ(fs::key_mass(fs::float_bits(std::ldexp(1.f, -30)), e1), 1u);
  EXPECT_EQ(fs::key_mass(fs::float_bits(std::ldexp(1.75f, -29)), e1), 4u);
  // Any normal maximum: its mass is in [2^30, 2^31), and masses scale with the values.
  std::mt19937 rng(fs_test::fresh_seed());
  for (int i = 0; i < 2000; ++i) {
    const float mx = std::ldexp(std::uniform_real_distribution<float>(1.f, 2.f)(rng),
                                std::uniform_int_distribution<int>(-125, 120)(rng));
    const int e = fs::mass_exponent(fs::float_bits(mx));
    const uint32_t m = fs::key_mass(fs::float_bits(mx), e);
    EXPECT_GE(m, 1u << 30);
    EXPECT_LT(m, 1u << 31);
    const float v = mx * std::uniform_real_distribution<float>(0.f, 1.f)(rng);
    const double want = static_cast<double>(v) / mx * static_cast<double>(m);
    EXPECT_NEAR(fs::key_mass(fs::float_bits(v), e), want, 0.5 + want * 1e-7) << mx << " " << v;
  }
  // A subnormal maximum: every value is an integer multiple of 2^-149, and so is its mass: exact.
  const float sub_max = std::ldexp(1.f, -140) * 1.75f;
  const int es = fs::mass_exponent(fs::float_bits(sub_max));
  for (int j = 1; j < 100; ++j) {
    const float v = std::ldexp(static_cast<float>(j), -149);
    EXPECT_EQ(fs::key_mass(fs::float_bits(v), es), static_cast<uint32_t>(j) << 7);
  }
  EXPECT_EQ(fs::key_mass_abs(fs::kOneBits), uint64_t{1} << 40);
  EXPECT_EQ(fs::key_mass_abs(fs::float_bits(0.25f)), uint64_t{1} << 38);
  EXPECT_EQ(fs::key_mass_abs(fs::float_bits(std::ldexp(1.f, -42))), 0u);
  EXPECT_EQ(fs::key_mass_abs(fs::float_bits(std::ldexp(1.f, -41))), 1u);
  EXPECT_EQ(fs::key_mass_abs(fs::float_bits(std::ldexp(1.f, -40))), 1u);
}

TEST(SamplingKeys, OrderKeyPreservesOrder) {
  std::vector<float> v = {-INFINITY, -3.5f, -1e-40f, -0.f, 0.f, 1e-40f, 1.f, 2.f, INFINITY};
  std::mt19937 rng(fs_test::fresh_seed());
  for (int i = 0; i < 1000; ++i)
    v.push_back(std::ldexp(std::normal_distribution<float>()(rng),
                           std::uniform_int_distribution<int>(-130, 120)(rng)));
  for (float a : v) {
    for (float b : {v[0], v[3], v[5], v[100], v[500]}) {
      if (a < b) {
        EXPECT_LT(fs::order_key(a), fs::order_key(b)) << a << " " << b;
      }
      if (a == b) {
        EXPECT_EQ(fs::order_key(a), fs::order_key(b)) << a << " " << b;
      }
    }
    EXPECT_GT(fs::order_key(a), 1u);
    const float back = fs::order_key_value(fs::order_key(a));
    EXPECT_TRUE(back == a) << a;
  }
  EXPECT_EQ(fs::order_key(NAN), 1u);
  EXPECT_LT(fs::order_key(NAN), fs::order_key(-INFINITY));
  EXPECT_TRUE(std::isnan(fs::order_key_value(1u)));
  EXPECT_EQ(fs::prob_key(-1.f), 0u);
  EXPECT_EQ(fs::prob_key(NAN), 0u);
  EXPECT_EQ(fs::prob_key(INFINITY), 0u);
  EXPECT_EQ(fs::prob_key(0.25f), fs::float_bits(0.25f));
}

TEST(SamplingRadix, BinsPartitionTheRangeInOrder) {
  std::mt19937 rng(fs_test::fresh_seed());
  for (int trial = 0; trial < 300; ++trial) {
    uint32_t lo = rng(), hi = rng();
    if (trial % 3 == 0) hi = lo + (rng() % 5000);
    if (lo > hi) std::swap(lo, hi);
    const int shift = fs::radix_shift(hi - lo);
    EXPECT_LE((hi - lo) >> shift, 255u);
    if (hi - lo >= 256u) {
      EXPECT_GE((hi - lo) >> shift, 128u);  // no pass wastes its bins
    }
    uint32_t prev_bin = 0;
    for (int s = 0; s < 200; ++s) {
      const uint32_t k = s == 0 ? hi : (s == 1 ? lo : lo + rng() % (uint64_t{hi} - lo + 1));
      const uint32_t b = fs::radix_bin(k, lo, hi, shift);
      ASSERT_LT(b, 256u);
      uint32_t blo, bhi;
      fs::radix_bin_range(lo, hi, shift, static_cast<int>(b), &blo, &bhi);
      EXPECT_LE(blo, k);
      EXPECT_GE(bhi, k);
      EXPECT_GE(blo, lo);
      EXPECT_LE(bhi, hi);
      if (s == 0) {
        EXPECT_EQ(b, 0u);
      }
      if (s == 1) prev_bin = b;
    }
    EXPECT_EQ(fs::radix_bin(lo, lo, hi, shift), prev_bin);
    if (lo > 0) {
      EXPECT_EQ(fs::radix_bin(lo - 1, lo, hi, shift), fs::kNoBin);
    }
    if (hi < 0xffffffffu) {
      EXPECT_EQ(fs::radix_bin(hi + 1, lo, hi, shift), fs::kNoBin);
    }
    // Consecutive bins tile the range with no gap.
    uint32_t expect_hi = hi;
    for (uint32_t b = 0; b <= (hi - lo) >> shift; ++b) {
      uint32_t blo, bhi;
      fs::radix_bin_range(lo, hi, shift, static_cast<int>(b), &blo, &bhi);
      ASSERT_EQ(bhi, expect_hi);
      ASSERT_LE(blo, bhi);
      if (blo == lo) break;
      expect_hi = blo - 1;
    }
  }
}

TEST(SamplingRadix, Level0BinsFollowTheLogOfTheRatio) {
  std::mt19937 rng(fs_test::fresh_seed());
  for (float mx : {1.f, 0.37f, 3e-30f, 2e-39f, 1e30f}) {
    const uint32_t mk = fs::float_bits(mx);
    for (int s = 0; s < 3000; ++s) {
      const float v =
          s == 0 ? mx : (s == 1 ? 0.f : mx * std::pow(2.f, -40.f * (rng() % 10000) / 1e4f));
      const uint32_t k = fs::float_bits(v);
      const uint32_t b = fs::level0_bin(mk, k);
      const fs::RadixRange r = fs::level0_range(mk, static_cast<int>(b));
      EXPECT_LE(r.lo, k) << mx << " " << v;
      EXPECT_GE(r.hi, k) << mx << " " << v;
      if (v >= mx * 0.5f && mx > 1e-37f) {
        EXPECT_LE(b, 8u);  // 8 bins per octave
      }
    }
    EXPECT_EQ(fs::level0_bin(mk, mk), 0u);
  }
}

// ---- replay of the kernels' threshold selection ------------------------------------------------

struct Hist {
  std::array<uint64_t, fs::kBins> count{}, mass{};
};

// mexp < 0: counts only (order keys have no mass).
template <class BinOf>
Hist histogram(const std::vector<uint32_t>& keys, BinOf bin_of, int mexp) {
  Hist h;
  for (uint32_t k : keys) {
    const uint32_t b = bin_of(k);
    if (b < static_cast<uint32_t>(fs::kBins)) {
      ++h.count[b];
      if (mexp >= 0) h.mass[b] += fs::key_mass(k, mexp);
    }
  }
  return h;
}

struct Cross {
  int bin;
  uint64_t before_count, before_mass;
};

Cross crossing(const Hist& h, bool by_mass, uint64_t target) {
  uint64_t cum = 0, bc = 0, bm = 0;
  for (int b = 0; b < fs::kBins; ++b) {
    const uint64_t w = by_mass ? h.mass[b] : h.count[b];
    if (cum + w >= target) return {b, bc, bm};
    cum += w;
    bc += h.count[b];
    bm += h.mass[b];
  }
  return {fs::kBins - 1, bc - h.count[fs::kBins - 1], bm - h.mass[fs::kBins - 1]};
}

struct Sel {
  uint32_t threshold;
  uint64_t count_ge, mass_ge;
  int passes;
};

void descend(fs::RadixRange& r, const Cross& c, bool by_mass, uint64_t count, uint64_t mass) {
  r.above_count += c.before_count;
  r.above_mass += c.before_mass;
  r.target -= by_mass ? c.before_mass : c.before_count;
  r.count = count;
  r.mass = mass;
}

Sel refine(const std::vector<uint32_t>& keys, int mexp, bool by_mass, fs::RadixRange r) {
  int passes = 0;
  while (r.count > 1 && r.lo < r.hi) {
    const uint32_t lo = r.lo, hi = r.hi;
    const int shift = fs::radix_shift(hi - lo);
    const Hist h = histogram(
        keys, [&](uint32_t k) { return fs::radix_bin(k, lo, hi, shift); }, mexp);
    const Cross c = crossing(h, by_mass, r.target);
    descend(r, c, by_mass, h.count[c.bin], h.mass[c.bin]);
    fs::radix_bin_range(lo, hi, shift, c.bin, &r.lo, &r.hi);
    ++passes;
  }
  return {r.lo, r.above_count + r.count, r.above_mass + r.mass, passes};
}

// select_threshold of top_k_top_p_kernel.cuh, step by step.
uint32_t replay_threshold(const std::vector<uint32_t>& keys, uint32_t max_key, int vocab,
                          const fs_test::ref::Filter& f, int* passes) {
  const int mexp = fs::mass_exponent(max_key);
  const bool need_k = f.top_k > 0 && f.top_k < vocab, need_p = f.top_p < 1.0;
  const bool k_floor = need_k && need_p && f.top_k_first;
  uint32_t threshold = 0;
  *passes = 0;
  if (need_k || need_p) {
    Hist l0 = histogram(
        keys, [&](uint32_t k) { return fs::level0_bin(max_key, k); }, mexp);
    *passes = 1;
    uint64_t total_mass = 0;
    for (uint64_t m : l0.mass)
      total_mass += m;
    Cross ck{};
    Sel rk{};
    if (need_k) {
      ck = crossing(l0, false, f.top_k);
      fs::RadixRange r = fs::level0_range(max_key, ck.bin);
      r.target = f.top_k;
      descend(r, ck, false, l0.count[ck.bin], l0.mass[ck.bin]);
      rk = refine(keys, mexp, false, r);
      *passes += rk.passes;
      threshold = rk.threshold;
    }
    if (need_p) {
      uint64_t base = total_mass;
      if (k_floor) {
        for (int i = ck.bin + 1; i < fs::kBins; ++i)
          l0.count[i] = l0.mass[i] = 0;
        l0.count[ck.bin] = rk.count_ge - ck.before_count;
        l0.mass[ck.bin] = rk.mass_ge - ck.before_mass;
        base = rk.mass_ge;
      }
      const double want = std::ceil(static_cast<double>(static_cast<float>(f.top_p)) * base);
      uint64_t target = want >= static_cast<double>(base) ? base : static_cast<uint64_t>(want);
      if (target < 1) target = 1;
      const Cross cp = crossing(l0, true, target);
      fs::RadixRange r = fs::level0_range(max_key, cp.bin);
      r.target = target;
      descend(r, cp, true, l0.count[cp.bin], l0.mass[cp.bin]);
      if (k_floor && cp.bin == ck.bin && r.lo < rk.threshold) r.lo = rk.threshold;
      const Sel rp = refine(keys, mexp, true, r);
      *passes += rp.passes;
      threshold = std::max(threshold, rp.threshold);
    }
  }
  if (f.min_p > 0) {
    threshold =
        std::max(threshold, fs::float_bits(static_cast<float>(f.min_p) * from_bits(max_key)));
  }
  return threshold;
}

// The same thresholds by brute force over the keys sorted in descending order.
uint32_t brute_threshold(const std::vector<uint32_t>& keys, uint32_t max_key, int vocab,
                         const fs_test::ref::Filter& f) {
  const int mexp = fs::mass_exponent(max_key);
  std::vector<uint32_t> sorted = keys;
  std::sort(sorted.begin(), sorted.end(), std::greater<uint32_t>());
  uint32_t t = 0;
  if (f.top_k > 0 && f.top_k < vocab) t = sorted[f.top_k - 1];
  if (f.top_p < 1.0) {
    std::vector<uint32_t> base;
    for (uint32_t k : sorted) {
      if (!f.top_k_first || k >= t) base.push_back(k);
    }
    uint64_t total = 0;
    for (uint32_t k : base)
      total += fs::key_mass(k, mexp);
    const double want = std::ceil(static_cast<double>(static_cast<float>(f.top_p)) * total);
    uint64_t target = want >= static_cast<double>(total) ? total : static_cast<uint64_t>(want);
    if (target < 1) target = 1;
    uint64_t cum = 0;
    for (uint32_t k : base) {
      cum += fs::key_mass(k, mexp);
      if (cum >= target) {
        t = std::max(t, k);
        break;
      }
    }
  }
  if (f.min_p > 0)
    t = std::max(t, fs::float_bits(static_cast<float>(f.min_p) * from_bits(max_key)));
  return t;
}

int64_t count_ge(const std::vector<uint32_t>& keys, uint32_t t) {
  return std::count_if(keys.begin(), keys.end(), [&](uint32_t k) { return k >= t; });
}

enum class RowKind { kSoftmax, kPeaked, kTies, kSparse, kTiny, kFlat };

// Probability keys of one row (float bits), padded like a CTA chunk with key-0 elements.
std::vector<uint32_t> make_row(RowKind kind, int vocab, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> p(vocab);
  for (int i = 0; i < vocab; ++i) {
    const float x = normal(rng);
    switch (kind) {
      case RowKind::kSoftmax:
        p[i] = std::exp2(x * 1.4426950f);
        break;
      case RowKind::kPeaked:
        p[i] = std::exp2(4.f * x * 1.4426950f);
        break;
      case RowKind::kTies:  // bf16-like: 8 significant bits, many equal values
        p[i] = fs_test::rounded(flashserve::DType::kBFloat16, {std::exp2(x)})[0];
        break;
      case RowKind::kSparse:
        p[i] = rng() % 10 == 0 ? std::fabs(x) : 0.f;
        break;
      case RowKind::kTiny:  // subnormal maximum
        p[i] = std::ldexp(std::fabs(x), -135);
        break;
      case RowKind::kFlat:
        p[i] = 1.f;
        break;
    }
  }
  std::vector<uint32_t> keys;
  for (float v : p)
    keys.push_back(fs::prob_key(v));
  for (int i = 0; i < 5; ++i)
    keys.push_back(0u);  // padding
  return keys;
}

TEST(SamplingSelectReplay, ThresholdsMatchBruteForce) {
  std::mt19937 rng(fs_test::fresh_seed());
  int checked = 0, max_passes = 0;
  for (RowKind kind : {RowKind::kSoftmax, RowKind::kPeaked, RowKind::kTies, RowKind::kSparse,
                       RowKind::kTiny, RowKind::kFlat}) {
    for (int vocab : {1, 7, 113, 4097, 50000}) {
      const std::vector<uint32_t> keys = make_row(kind, vocab, rng);
      const uint32_t max_key = *std::max_element(keys.begin(), keys.end());
      if (max_key == 0u) continue;  // nothing to sample: the kernels skip the selection
      for (int top_k : {0, 1, 2, 3, 50, vocab / 2, vocab - 1, vocab}) {
        for (double top_p : {1.0, 0.0, 1e-6, 0.3, 0.9, 0.999}) {
          for (double min_p : {0.0, 0.1}) {
            for (bool first : {true, false}) {
              fs_test::ref::Filter f{top_k, top_p, min_p, first};
              int passes = 0;
              const uint32_t got = replay_threshold(keys, max_key, vocab, f, &passes);
              const uint32_t want = brute_threshold(keys, max_key, vocab, f);
              SCOPED_TRACE(::testing::Message()
                           << "kind " << static_cast<int>(kind) << " vocab " << vocab << " k "
                           << top_k << " p " << top_p << " min_p " << min_p << " first " << first);
              ASSERT_EQ(count_ge(keys, got), count_ge(keys, want))
                  << "thresholds " << got << " vs " << want;
              max_passes = std::max(max_passes, passes);
              ++checked;
            }
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 1000);
  EXPECT_LE(max_passes, 1 + 4 + 4);  // level 0, then at most 4 radix passes per selection
}

TEST(SamplingSelectReplay, ReplayCanFail) {
  // Negative control: the comparison tells apart selections that differ by one element.
  std::mt19937 rng(fs_test::fresh_seed());
  const std::vector<uint32_t> keys = make_row(RowKind::kSoftmax, 50000, rng);
  const uint32_t max_key = *std::max_element(keys.begin(), keys.end());
  int passes = 0;
  const uint32_t got = replay_threshold(keys, max_key, 50000, {1000, 1.0, 0.0, true}, &passes);
  const uint32_t off_by_one = brute_threshold(keys, max_key, 50000, {999, 1.0, 0.0, true});
  EXPECT_NE(count_ge(keys, got), count_ge(keys, off_by_one));
  EXPECT_GE(passes, 2);  // level 0 alone does not resolve a top-1000 threshold
}

TEST(SamplingSelectReplay, TopKOfOrderKeysTakesLowestIndicesOnTies) {
  std::mt19937 rng(fs_test::fresh_seed());
  for (int vocab : {1, 9, 1000, 20000}) {
    std::vector<float> row(vocab);
    for (float& v : row)
      v = static_cast<float>(static_cast<int>(std::normal_distribution<float>(0.f, 3.f)(rng)));
    if (vocab > 5) row[3] = NAN, row[4] = -INFINITY;
    std::vector<uint32_t> keys;
    uint32_t kmin = 0xffffffffu, kmax = 0;
    for (float v : row) {
      keys.push_back(fs::order_key(v));
      kmin = std::min(kmin, keys.back());
      kmax = std::max(kmax, keys.back());
    }
    for (int k : {1, 2, vocab / 3 + 1, vocab - 1, vocab}) {
      if (k < 1 || k > vocab) continue;
      uint32_t t = kmin;
      if (k < vocab) {
        fs::RadixRange r;
        r.lo = kmin;
        r.hi = kmax;
        r.count = vocab;
        r.target = k;
        t = refine(keys, -1, false, r).threshold;
      }
      int64_t gt = 0;
      for (uint32_t key : keys)
        gt += key > t;
      const int64_t needed = k - gt;
      std::vector<int64_t> got;
      int64_t ties = 0;
      for (int i = 0; i < vocab; ++i) {
        if (keys[i] > t || (keys[i] == t && ties++ < needed)) got.push_back(i);
      }
      EXPECT_EQ(got, fs_test::ref::top_k_indices(row, k)) << "vocab " << vocab << " k " << k;
    }
  }
}

}  // namespace
