// The kernel registry without a GPU: spec text form (decode and prefill), presets, reading specs
// back from a log, the kernel log, the hot-path lookup time, FLASHSERVE_DISABLE_JIT through the
// decode and prefill families, a prefill kernel without CUTLASS, the generated prefill source, and
// one real decode specialization compiled from its generated source (timed).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "api/decode_kernels.h"
#include "api/kernel_families.h"
#include "api/prefill_kernels.h"
#include "flashserve/logging.h"
#include "jit_test_util.h"
#include "runtime/file_util.h"
#include "runtime/kernel_presets.h"
#include "runtime/kernel_registry.h"

namespace fs_test {
namespace {

namespace rt = flashserve::runtime;
using flashserve::DType;
using flashserve::attention::PrefillKind;

rt::KernelRegistry& registry() {
  flashserve::detail::register_kernel_families();
  return rt::KernelRegistry::global();
}

rt::KernelSpec parse_ok(const std::string& text) {
  rt::KernelSpec s;
  const flashserve::Status st = registry().parse(text, &s);
  EXPECT_TRUE(st.ok()) << st.to_string();
  return s;
}

std::string parse_error(const std::string& text) {
  rt::KernelSpec s;
  const flashserve::Status st = registry().parse(text, &s);
  EXPECT_FALSE(st.ok()) << text;
  return st.message();
}

TEST(KernelRegistry, DecodeSpecTextRoundTrip) {
  const rt::KernelSpec s =
      flashserve::detail::decode_kernel_spec(DType::kBFloat16, DType::kFloat8E4M3, 64);
  EXPECT_EQ(registry().describe(s), "decode q=bf16 kv=fp8_e4m3 hd=64");
  EXPECT_TRUE(parse_ok("  decode   hd=64 q=bf16 kv=fp8_e4m3 ") == s) << "field order is free";
  const rt::KernelFamily& f = registry().family(flashserve::detail::decode_kernel_family());
  const std::vector<rt::KernelSpec> all = f.enumerate();
  EXPECT_EQ(all.size(), 18u);  // 2 q dtypes x (same, e4m3, e5m2) x 3 head dims
  for (const rt::KernelSpec& x : all)
    EXPECT_TRUE(parse_ok(registry().describe(x)) == x) << registry().describe(x);
}

TEST(KernelRegistry, PrefillSpecTextRoundTrip) {
  const rt::KernelSpec s =
      flashserve::detail::prefill_kernel_spec(DType::kFloat16, 256, PrefillKind::kGeneral, false);
  EXPECT_EQ(registry().describe(s), "prefill q=fp16 hd=256 kind=general kv=ragged");
  EXPECT_TRUE(parse_ok(" prefill kv=ragged kind=general  hd=256 q=fp16") == s)
      << "field order is free";
  EXPECT_TRUE(
      parse_ok("prefill q=bf16 hd=64 kind=plain kv=ragged") ==
      flashserve::detail::prefill_kernel_spec(DType::kBFloat16, 64, PrefillKind::kPlain, false));
  // A paged specialization: its own spec, the ragged one's twin but for kv.
  const rt::KernelSpec paged =
      flashserve::detail::prefill_kernel_spec(DType::kBFloat16, 128, PrefillKind::kCausal, true);
  EXPECT_EQ(registry().describe(paged), "prefill q=bf16 hd=128 kind=causal kv=paged");
  EXPECT_TRUE(parse_ok("prefill kv=paged q=bf16 kind=causal hd=128") == paged);
  EXPECT_FALSE(paged == flashserve::detail::prefill_kernel_spec(DType::kBFloat16, 128,
                                                                PrefillKind::kCausal, false));
  const rt::KernelFamily& f = registry().family(flashserve::detail::prefill_kernel_family());
  EXPECT_TRUE(f.needs_cutlass);
  const std::vector<rt::KernelSpec> all = f.enumerate();
  // 2 q dtypes x (5 head dims + qk 192 / v 128) x (plain, causal, general) x (ragged, paged),
  // + 2 q dtypes x head_dim 64's 128-row tile x (causal, general) x (ragged, paged)
  EXPECT_EQ(all.size(), 80u);
  EXPECT_NE(std::find(all.begin(), all.end(), paged), all.end());
  for (const rt::KernelSpec& x : all) {
    EXPECT_TRUE(parse_ok(registry().describe(x)) == x) << registry().describe(x);
    EXPECT_TRUE(f.check(x).ok()) << registry().describe(x);
  }
  for (size_t i = 0; i < all.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      EXPECT_FALSE(all[i] == all[j]) << registry().describe(all[i]);
}

// qk head_dim 192 with v head_dim 128: the optional field hdv, left out of the text form when v's
// head dim is hd (so the names of the other specializations do not change).
TEST(KernelRegistry, PrefillHeadDimVSpec) {
  const rt::KernelFamily& f = registry().family(flashserve::detail::prefill_kernel_family());
  const rt::KernelSpec s = flashserve::detail::prefill_kernel_spec(
      DType::kBFloat16, 192, PrefillKind::kCausal, true, /*head_dim_v=*/128);
  EXPECT_EQ(registry().describe(s), "prefill q=bf16 hd=192 kind=causal kv=paged hdv=128");
  EXPECT_TRUE(parse_ok("prefill hdv=128 kv=paged q=bf16 kind=causal hd=192") == s);
  EXPECT_TRUE(f.check(s).ok());
  // v's head dim equal to hd (or 0) is the spec without hdv.
  const rt::KernelSpec same =
      flashserve::detail::prefill_kernel_spec(DType::kBFloat16, 192, PrefillKind::kCausal, true);
  EXPECT_FALSE(s == same);
  EXPECT_TRUE(flashserve::detail::prefill_kernel_spec(DType::kBFloat16, 192, PrefillKind::kCausal,
                                                      true, 192) == same);
  EXPECT_EQ(registry().describe(same), "prefill q=bf16 hd=192 kind=causal kv=paged");
  EXPECT_TRUE(parse_ok("prefill q=bf16 hd=192 kind=causal kv=paged") == same);
  const std::vector<rt::KernelSpec> all = f.enumerate();
  int with_hdv = 0;
  for (const rt::KernelSpec& x : all)
    with_hdv += registry().describe(x).find(" hdv=128") != std::string::npos;
  EXPECT_EQ(with_hdv, 12);  // 2 q dtypes x 3 kinds x (ragged, paged)
  EXPECT_NE(std::find(all.begin(), all.end(), s), all.end());
  // Only 128 with hd 192.
  for (const char* text : {"prefill q=bf16 hd=128 kind=causal kv=ragged hdv=64",
                           "prefill q=bf16 hd=256 kind=causal kv=ragged hdv=128",
                           "prefill q=fp16 hd=192 kind=general kv=paged hdv=64",
                           "prefill q=bf16 hd=128 kind=causal kv=ragged hdv=128"}) {
    EXPECT_NE(parse_error(text).find("hdv: expected 128 with hd=192"), std::string::npos) << text;
  }
  EXPECT_NE(parse_error("prefill q=bf16 hd=192 kind=causal kv=ragged hdv=x").find("hdv"),
            std::string::npos);
}

// head_dim 64's 128-row tile (a short causal plan's): the optional field bm, left out where the
// tile is the head dim's default, and the traits' 6th argument.
TEST(KernelRegistry, PrefillBlockMSpec) {
  const rt::KernelFamily& f = registry().family(flashserve::detail::prefill_kernel_family());
  const rt::KernelSpec s = flashserve::detail::prefill_kernel_spec(
      DType::kBFloat16, 64, PrefillKind::kCausal, false, /*head_dim_v=*/0, /*block_m=*/128);
  EXPECT_EQ(registry().describe(s), "prefill q=bf16 hd=64 kind=causal kv=ragged bm=128");
  EXPECT_TRUE(parse_ok("prefill bm=128 kv=ragged q=bf16 kind=causal hd=64") == s);
  EXPECT_TRUE(f.check(s).ok());
  // The default height (192 at head_dim 64) is the spec without bm.
  const rt::KernelSpec def =
      flashserve::detail::prefill_kernel_spec(DType::kBFloat16, 64, PrefillKind::kCausal, false);
  EXPECT_FALSE(s == def);
  EXPECT_TRUE(flashserve::detail::prefill_kernel_spec(DType::kBFloat16, 64, PrefillKind::kCausal,
                                                      false, 0, 192) == def);
  const std::vector<rt::KernelSpec> all = f.enumerate();
  EXPECT_NE(std::find(all.begin(), all.end(), s), all.end());
  EXPECT_NE(f.generate(s).code.find("prefill_kernel<PrefillTraits<cutlass::bfloat16_t, 64, false, "
                                    "false, 64, 128>, PrefillKind::kCausal>("),
            std::string::npos)
      << f.generate(s).code;
  for (const char* text : {"prefill q=bf16 hd=128 kind=causal kv=ragged bm=128",
                           "prefill q=bf16 hd=64 kind=causal kv=ragged bm=64",
                           "prefill q=bf16 hd=192 kind=causal kv=ragged hdv=128 bm=128"}) {
    EXPECT_NE(parse_error(text).find("bm: expected 128 with hd=64"), std::string::npos) << text;
  }
}

TEST(KernelRegistry, PrefillCheckRejectsWhatTheFamilyDoesNotHave) {
  EXPECT_NE(parse_error("prefill q=bf16 hd=80 kind=causal kv=ragged")
                .find("hd: expected 64, 96, 128, 192 or 256, got 80"),
            std::string::npos);
  EXPECT_NE(parse_error("prefill q=fp8_e4m3 hd=128 kind=causal kv=ragged")
                .find("q: expected one of fp16, bf16, got 'fp8_e4m3'"),
            std::string::npos);
  EXPECT_NE(parse_error("prefill q=bf16 hd=128 kind=sliding kv=ragged")
                .find("kind: expected one of plain, causal, general, got 'sliding'"),
            std::string::npos);
  EXPECT_NE(parse_error("prefill q=bf16 hd=128 kv=ragged").find("missing field 'kind'"),
            std::string::npos);
  // kv is the KV layout (ragged k and v, or a paged cache), not a dtype as in decode.
  EXPECT_NE(parse_error("prefill q=bf16 kv=bf16 hd=128 kind=causal")
                .find("kv: expected one of ragged, paged, got 'bf16'"),
            std::string::npos);
  EXPECT_NE(parse_error("prefill q=bf16 hd=128 kind=causal").find("missing field 'kv'"),
            std::string::npos);
  EXPECT_NE(
      parse_error("prefill q=bf16 hd=128 kind=causal kv=paged tile=3").find("unknown field 'tile'"),
      std::string::npos);
  // check() itself, on specs built in code.
  const rt::KernelFamily& f = registry().family(flashserve::detail::prefill_kernel_family());
  rt::KernelSpec s =
      flashserve::detail::prefill_kernel_spec(DType::kBFloat16, 128, PrefillKind::kCausal, false);
  ASSERT_TRUE(f.check(s).ok());
  ASSERT_TRUE(f.check(flashserve::detail::prefill_kernel_spec(DType::kFloat16, 64,
                                                              PrefillKind::kGeneral, true))
                  .ok());
  rt::KernelSpec bad =
      flashserve::detail::prefill_kernel_spec(DType::kFloat32, 128, PrefillKind::kCausal, false);
  EXPECT_NE(f.check(bad).message().find("q: expected fp16 or bf16"), std::string::npos)
      << f.check(bad).message();
  bad = s;
  bad.fields[1] = 80;
  EXPECT_EQ(f.check(bad).message(), "hd: expected 64, 96, 128, 192 or 256, got 80");
  bad = s;
  bad.fields[2] = 3;
  EXPECT_EQ(f.check(bad).message(), "kind: expected plain, causal or general");
  bad = s;
  bad.fields[3] = 2;
  EXPECT_EQ(f.check(bad).message(), "kv: expected ragged or paged");
  bad.fields[3] = -1;
  EXPECT_EQ(f.check(bad).message(), "kv: expected ragged or paged");
}

TEST(KernelRegistry, PrefillSourceInstantiatesThePrebuiltTemplate) {
  const rt::KernelFamily& f = registry().family(flashserve::detail::prefill_kernel_family());
  struct Case {
    DType q;
    int hd;
    PrefillKind kind;
    bool paged;
    const char* instantiation;
    int hdv = 0;
  };
  const Case cases[] = {
      {DType::kBFloat16, 128, PrefillKind::kCausal, false,
       "prefill_kernel<PrefillTraits<cutlass::bfloat16_t, 128, false, false, 128>, "
       "PrefillKind::kCausal>(\n"
       "    const __grid_constant__ PrefillKernelArgs<PrefillTraits<cutlass::bfloat16_t, 128, "
       "false, false, 128>>);"},
      // The plain kernel's traits are the unmasked ones (launch_prefill_sm90).
      {DType::kFloat16, 64, PrefillKind::kPlain, false,
       "prefill_kernel<PrefillTraits<cutlass::half_t, 64, true, false, 64>, PrefillKind::kPlain>("},
      {DType::kFloat16, 256, PrefillKind::kGeneral, false,
       "prefill_kernel<PrefillTraits<cutlass::half_t, 256, false, false, 256>, "
       "PrefillKind::kGeneral>("},
      // Paged KV: the 4th traits argument.
      {DType::kBFloat16, 128, PrefillKind::kCausal, true,
       "prefill_kernel<PrefillTraits<cutlass::bfloat16_t, 128, false, true, 128>, "
       "PrefillKind::kCausal>(\n"
       "    const __grid_constant__ PrefillKernelArgs<PrefillTraits<cutlass::bfloat16_t, 128, "
       "false, true, 128>>);"},
      {DType::kFloat16, 64, PrefillKind::kPlain, true,
       "prefill_kernel<PrefillTraits<cutlass::half_t, 64, true, true, 64>, PrefillKind::kPlain>("},
      // qk 192 / v 128: v's head dim is the 5th traits argument.
      {DType::kBFloat16, 192, PrefillKind::kCausal, false,
       "prefill_kernel<PrefillTraits<cutlass::bfloat16_t, 192, false, false, 128>, "
       "PrefillKind::kCausal>(\n"
       "    const __grid_constant__ PrefillKernelArgs<PrefillTraits<cutlass::bfloat16_t, 192, "
       "false, false, 128>>);",
       128},
      {DType::kFloat16, 192, PrefillKind::kGeneral, true,
       "prefill_kernel<PrefillTraits<cutlass::half_t, 192, false, true, 128>, "
       "PrefillKind::kGeneral>(",
       128}};
  for (const Case& c : cases) {
    const rt::KernelSource src =
        f.generate(flashserve::detail::prefill_kernel_spec(c.q, c.hd, c.kind, c.paged, c.hdv));
    EXPECT_NE(src.code.find("#include \"flashserve/attention/prefill_kernel_sm90.cuh\""),
              std::string::npos)
        << src.code;
    EXPECT_NE(src.code.find(std::string("template __global__ void ") + c.instantiation),
              std::string::npos)
        << src.code;
    EXPECT_EQ(src.entries, std::vector<std::string>{"prefill_kernel"});
  }
}

TEST(KernelRegistry, SpecErrorsNameTheProblem) {
  const std::string unknown = parse_error("prefil q=bf16");
  EXPECT_NE(unknown.find("unknown op 'prefil' (known: "), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("decode"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("prefill"), std::string::npos) << unknown;
  EXPECT_NE(parse_error("decode q=bf16 kv=bf16").find("missing field 'hd'"), std::string::npos);
  EXPECT_NE(
      parse_error("decode q=bf17 kv=bf16 hd=128").find("q: expected one of fp16, bf16, got 'bf17'"),
      std::string::npos);
  EXPECT_NE(parse_error("decode q=bf16 kv=fp16 hd=128").find("kv: expected the q dtype"),
            std::string::npos);
  EXPECT_NE(parse_error("decode q=bf16 kv=bf16 hd=96").find("hd: expected 64, 128 or 256, got 96"),
            std::string::npos);
  EXPECT_NE(parse_error("decode q=bf16 kv=bf16 hd=1x").find("hd: expected an integer"),
            std::string::npos);
  EXPECT_NE(parse_error("decode q=bf16 kv=bf16 hd=128 tile=3").find("unknown field 'tile'"),
            std::string::npos);
}

TEST(KernelRegistry, PresetsParseAndAllIsEverything) {
  std::vector<std::string> names;
  for (const rt::KernelPreset& p : rt::kernel_presets()) {
    names.push_back(p.name);
    EXPECT_FALSE(p.description.empty()) << p.name;
    std::vector<rt::KernelSpec> specs;
    const flashserve::Status st = rt::preset_specs(registry(), p.name, &specs);
    EXPECT_TRUE(st.ok()) << st.to_string();
    EXPECT_EQ(specs.size(), p.specs.size()) << p.name << ": no duplicates";
  }
  for (const char* want :
       {"default", "llama3", "qwen2.5", "qwen3", "mistral", "deepseek", "deepseek-mla"})
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
  std::vector<rt::KernelSpec> def, all;
  ASSERT_TRUE(rt::preset_specs(registry(), "default", &def).ok());
  std::vector<std::string> def_text;
  for (const rt::KernelSpec& s : def)
    def_text.push_back(registry().describe(s));
  const std::vector<std::string> want_default = {"decode q=bf16 kv=bf16 hd=128",
                                                 "decode q=fp16 kv=fp16 hd=128",
                                                 "prefill q=bf16 hd=128 kind=plain kv=ragged",
                                                 "prefill q=bf16 hd=128 kind=causal kv=ragged",
                                                 "prefill q=bf16 hd=128 kind=general kv=ragged",
                                                 "prefill q=fp16 hd=128 kind=plain kv=ragged",
                                                 "prefill q=fp16 hd=128 kind=causal kv=ragged",
                                                 "prefill q=fp16 hd=128 kind=general kv=ragged",
                                                 "prefill q=bf16 hd=128 kind=causal kv=paged",
                                                 "prefill q=bf16 hd=128 kind=general kv=paged",
                                                 "prefill q=fp16 hd=128 kind=causal kv=paged",
                                                 "prefill q=fp16 hd=128 kind=general kv=paged"};
  EXPECT_EQ(def_text, want_default);
  ASSERT_TRUE(rt::preset_specs(registry(), "all", &all).ok());
  EXPECT_EQ(all.size(), 98u);  // 18 decode + 80 prefill
  // Every model preset has, for each prefill head dim it lists, the causal and the general kernel
  // (prefill_plan resolves both), and has them for ragged and for paged KV.
  const int prefill = flashserve::detail::prefill_kernel_family();
  for (const rt::KernelPreset& p : rt::kernel_presets()) {
    std::vector<rt::KernelSpec> specs;
    ASSERT_TRUE(rt::preset_specs(registry(), p.name, &specs).ok());
    int prefill_specs = 0;
    for (const rt::KernelSpec& s : specs) {
      if (s.family != prefill) continue;
      ++prefill_specs;
      for (PrefillKind k : {PrefillKind::kCausal, PrefillKind::kGeneral}) {
        for (int kv : {0, 1}) {  // ragged, paged
          rt::KernelSpec need = s;
          need.fields[2] = static_cast<int>(k);
          need.fields[3] = kv;
          EXPECT_NE(std::find(specs.begin(), specs.end(), need), specs.end())
              << p.name << ": " << registry().describe(s) << " without "
              << registry().describe(need);
        }
      }
    }
    EXPECT_GT(prefill_specs, 0) << p.name << " has no prefill kernels";
  }
  std::vector<rt::KernelSpec> none;
  const flashserve::Status st = rt::preset_specs(registry(), "llama2", &none);
  EXPECT_EQ(st.code(), flashserve::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("unknown kernel preset 'llama2' (known: all, default"),
            std::string::npos)
      << st.message();
  // The presets parse from the file format.
  const auto p = rt::parse_presets(
      "# comment\npreset a: first\ndecode q=bf16 kv=bf16 hd=64\n\npreset b:second\nx y\n");
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].description, "first");
  EXPECT_EQ(p[1].name, "b");
  EXPECT_EQ(p[1].specs, std::vector<std::string>{"x y"});
}

TEST(KernelRegistry, PrebuiltSetMatchesTheBuildPreset) {
  // The default build compiles the "default" preset in; an "all" build everything.
  const std::string preset = rt::prebuilt_preset();
  std::vector<rt::KernelSpec> want;
  if (preset.find("all") != std::string::npos) {
    ASSERT_TRUE(rt::preset_specs(registry(), "all", &want).ok());
  } else if (preset.find("default") != std::string::npos) {
    ASSERT_TRUE(rt::preset_specs(registry(), "default", &want).ok());
  }
  for (const rt::KernelSpec& s : want) {
    const rt::KernelFamily& f = registry().family(s.family);
    EXPECT_NE(f.prebuilt(s), nullptr) << registry().describe(s) << " in preset " << preset;
  }
  if (preset == "default") {
    // The rest is compiled at first use.
    const rt::KernelFamily& f = registry().family(flashserve::detail::prefill_kernel_family());
    EXPECT_EQ(f.prebuilt(flashserve::detail::prefill_kernel_spec(DType::kBFloat16, 64,
                                                                 PrefillKind::kCausal, false)),
              nullptr);
    // No paged plain kernel in the default set (decoders run causal / general).
    EXPECT_EQ(f.prebuilt(flashserve::detail::prefill_kernel_spec(DType::kBFloat16, 128,
                                                                 PrefillKind::kPlain, true)),
              nullptr);
  }
  EXPECT_TRUE(rt::KernelRegistry::prebuilt_runs_on(90));
  EXPECT_FALSE(rt::KernelRegistry::prebuilt_runs_on(100));
  EXPECT_FALSE(rt::KernelRegistry::prebuilt_runs_on(80));
}

TEST(KernelRegistry, SpecsReadBackFromLogs) {
  const std::string log =
      "[flashserve] decode_plan\n"
      "[flashserve] kernel decode q=bf16 kv=fp8_e4m3 hd=128 sm_90a (compiled)\n"
      "  q: bfloat16 [1, 32, 128]\n"
      "decode q=fp16 kv=fp16 hd=64\n"
      "# decode q=fp16 kv=fp16 hd=256 (commented out)\n"
      "[flashserve] kernel decode q=bf16 kv=fp8_e4m3 hd=128 sm_90a (cached)\n"
      "[flashserve] kernel decode q=bf16 kv=bogus hd=128 sm_90a (cached)\n"
      "decode_run\n"
      "[flashserve] prefill_plan\n"
      "[flashserve] kernel prefill q=bf16 hd=64 kind=causal kv=ragged sm_90a (compiled)\n"
      "[flashserve] kernel prefill q=bf16 hd=64 kind=general kv=ragged sm_90a (cached)\n"
      "[flashserve] kernel prefill q=bf16 hd=64 kind=general kv=paged sm_90a (compiled)\n"
      "prefill q=fp16 hd=256 kind=plain kv=ragged\n"
      "prefill q=fp16 hd=80 kind=plain kv=ragged\n"
      "prefill q=fp16 hd=256 kind=causal\n";  // from before the kv field: not a spec now
  const std::vector<rt::KernelSpec> specs = registry().specs_in_log(log);
  ASSERT_EQ(specs.size(), 6u);
  EXPECT_EQ(registry().describe(specs[0]), "decode q=bf16 kv=fp8_e4m3 hd=128");
  EXPECT_EQ(registry().describe(specs[1]), "decode q=fp16 kv=fp16 hd=64");
  EXPECT_EQ(registry().describe(specs[2]), "prefill q=bf16 hd=64 kind=causal kv=ragged");
  EXPECT_EQ(registry().describe(specs[3]), "prefill q=bf16 hd=64 kind=general kv=ragged");
  EXPECT_EQ(registry().describe(specs[4]), "prefill q=bf16 hd=64 kind=general kv=paged");
  EXPECT_EQ(registry().describe(specs[5]), "prefill q=fp16 hd=256 kind=plain kv=ragged");
}

// A family whose every spec is "prebuilt" (a dummy pointer): resolve() then needs no device.
int bench_family() {
  static int marker = 0;
  static const int id = [] {
    rt::KernelFamily f;
    f.op = "test_bench";
    f.fields = {{"a", {}}, {"b", {"x", "y"}}};
    f.check = [](const rt::KernelSpec&) { return flashserve::Status(); };
    f.generate = [](const rt::KernelSpec&) { return rt::KernelSource{}; };
    f.prebuilt = [](const rt::KernelSpec&) -> const void* { return &marker; };
    return rt::KernelRegistry::global().add_family(std::move(f));
  }();
  return id;
}

TEST(KernelRegistry, HotPathLookupUnderOneMicrosecond) {
  rt::KernelRegistry& r = registry();
  std::vector<rt::KernelSpec> specs;
  for (int i = 0; i < 64; ++i) {
    rt::KernelSpec s;
    s.family = static_cast<int16_t>(bench_family());
    s.cc = 90;
    s.fields[0] = 1000 + i;
    s.fields[1] = i % 2;
    const rt::ResolvedKernel* k = nullptr;
    ASSERT_TRUE(r.resolve(s, &k).ok());
    ASSERT_EQ(k->origin, rt::KernelOrigin::kPrebuilt);
    specs.push_back(s);
  }
  constexpr int kIters = 2000000;
  const auto t0 = std::chrono::steady_clock::now();
  size_t found = 0;
  for (int i = 0; i < kIters; ++i)
    found += r.find(specs[i & 63]) != nullptr;
  const double ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() /
      kIters;
  EXPECT_EQ(found, size_t{kIters});
  std::printf("  registry lookup: %.1f ns per find (64 resolved specs)\n", ns);
  EXPECT_LT(ns, 1000.0);
  rt::KernelSpec missing = specs[0];
  missing.fields[0] = -5;
  EXPECT_EQ(r.find(missing), nullptr);
}

TEST(KernelRegistry, FirstUseIsLogged) {
  ScratchCache scratch;
  const std::string kernel_log = scratch.root + "/kernels.txt";
  const std::string api_log = scratch.root + "/api.log";
  setenv("FLASHSERVE_KERNEL_LOG", kernel_log.c_str(), 1);
  flashserve::set_log_level(1);
  ASSERT_TRUE(flashserve::set_log_destination(api_log));
  rt::KernelSpec s;
  s.family = static_cast<int16_t>(bench_family());
  s.cc = 90;
  s.fields[0] = 7;
  s.fields[1] = 1;
  const rt::ResolvedKernel* k = nullptr;
  ASSERT_TRUE(registry().resolve(s, &k).ok());
  ASSERT_TRUE(registry().resolve(s, &k).ok());  // logged once
  flashserve::set_log_level(0);
  flashserve::set_log_destination("stderr");
  unsetenv("FLASHSERVE_KERNEL_LOG");
  std::string kl, al;
  ASSERT_TRUE(rt::read_file(kernel_log, &kl));
  ASSERT_TRUE(rt::read_file(api_log, &al));
  EXPECT_EQ(kl, "test_bench a=7 b=y\n");
  EXPECT_NE(al.find("[flashserve] kernel test_bench a=7 b=y sm_90a (prebuilt)\n"),
            std::string::npos)
      << al;
  for (const std::string& text : {kl, al}) {
    const std::vector<rt::KernelSpec> back = registry().specs_in_log(text);
    ASSERT_EQ(back.size(), 1u);
    EXPECT_TRUE(back[0] == (rt::KernelSpec{s.family, 0, 0, 0, {7, 1}}));
  }
  scratch.remove();
}

class RegistryJitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (rt::JitConfig::from_environment().nvcc.empty()) GTEST_SKIP() << "skipped: no nvcc";
  }
  void TearDown() override {
    registry().set_config(rt::JitConfig::from_environment());
    scratch_.remove();
  }
  ScratchCache scratch_;
};

TEST_F(RegistryJitTest, DisabledJitErrorNamesTheKernelAndTheCommand) {
  rt::JitConfig cfg = rt::JitConfig::from_environment();
  cfg.cache_root = scratch_.cache_dir();
  cfg.archs.clear();
  cfg.disabled = true;
  registry().set_config(cfg);
  rt::KernelSpec s =
      flashserve::detail::decode_kernel_spec(DType::kBFloat16, DType::kFloat8E5M2, 64);
  s.cc = 90;
  s.force_jit = 1;  // not prebuilt, even in an "all" build
  const rt::ResolvedKernel* k = nullptr;
  const flashserve::Status st = registry().resolve(s, &k);
  EXPECT_EQ(st.code(), flashserve::StatusCode::kUnsupported);
  const std::string& m = st.message();
  EXPECT_NE(m.find("kernel decode q=bf16 kv=fp8_e5m2 hd=64 sm_90a is not prebuilt"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("FLASHSERVE_DISABLE_JIT"), std::string::npos) << m;
  EXPECT_NE(m.find("flashserve compile --spec 'decode q=bf16 kv=fp8_e5m2 hd=64' --arch '90a'"),
            std::string::npos)
      << m;
  EXPECT_EQ(registry().find(s), nullptr);
}

TEST_F(RegistryJitTest, DisabledJitPrefillErrorNamesTheKernelAndTheCommand) {
  rt::JitConfig cfg = rt::JitConfig::from_environment();
  cfg.cache_root = scratch_.cache_dir();
  cfg.archs.clear();
  cfg.disabled = true;
  registry().set_config(cfg);
  rt::KernelSpec s =
      flashserve::detail::prefill_kernel_spec(DType::kBFloat16, 64, PrefillKind::kGeneral, false);
  s.cc = 90;
  s.force_jit = 1;  // not prebuilt, even in an "all" build
  const rt::ResolvedKernel* k = nullptr;
  const flashserve::Status st = registry().resolve(s, &k);
  EXPECT_EQ(st.code(), flashserve::StatusCode::kUnsupported);
  const std::string& m = st.message();
  if (cfg.cutlass_dir.empty()) {
    EXPECT_NE(m.find("FLASHSERVE_CUTLASS_DIR"), std::string::npos) << m;
  } else {
    EXPECT_NE(m.find("kernel prefill q=bf16 hd=64 kind=general kv=ragged sm_90a is not prebuilt"),
              std::string::npos)
        << m;
    EXPECT_NE(m.find("FLASHSERVE_DISABLE_JIT"), std::string::npos) << m;
  }
  EXPECT_NE(m.find("flashserve compile --spec 'prefill q=bf16 hd=64 kind=general kv=ragged' "
                   "--arch '90a'"),
            std::string::npos)
      << m;
  EXPECT_EQ(registry().find(s), nullptr);
}

TEST_F(RegistryJitTest, PrefillWithoutCutlassSaysWhatToSet) {
  rt::JitConfig cfg = rt::JitConfig::from_environment();
  cfg.cache_root = scratch_.cache_dir();
  cfg.cutlass_dir.clear();
  registry().set_config(cfg);
  rt::KernelSpec s =
      flashserve::detail::prefill_kernel_spec(DType::kFloat16, 128, PrefillKind::kPlain, false);
  s.cc = 90;
  s.force_jit = 1;
  const rt::ResolvedKernel* k = nullptr;
  flashserve::Status st = registry().resolve(s, &k);
  EXPECT_EQ(st.code(), flashserve::StatusCode::kUnsupported);
  EXPECT_NE(st.message().find(
                "compiling kernel prefill q=fp16 hd=128 kind=plain kv=ragged sm_90a needs the "
                "CUTLASS / CuTe headers"),
            std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("set FLASHSERVE_CUTLASS_DIR"), std::string::npos) << st.message();
  EXPECT_NE(
      st.message().find("flashserve compile --spec 'prefill q=fp16 hd=128 kind=plain kv=ragged'"),
      std::string::npos)
      << st.message();
  rt::CompileReport rep;
  st = registry().compile(s, {"90a"}, true, &rep);  // `flashserve compile`: no command hint
  EXPECT_EQ(st.code(), flashserve::StatusCode::kUnsupported);
  EXPECT_NE(st.message().find("set FLASHSERVE_CUTLASS_DIR"), std::string::npos) << st.message();
  EXPECT_EQ(st.message().find("flashserve compile --spec"), std::string::npos) << st.message();
  // Decode kernels do not need CUTLASS.
  rt::KernelSpec d = flashserve::detail::decode_kernel_spec(DType::kBFloat16, DType::kBFloat16, 64);
  d.cc = 90;
  cfg.disabled = true;
  registry().set_config(cfg);
  d.force_jit = 1;
  st = registry().resolve(d, &k);
  EXPECT_EQ(st.message().find("CUTLASS"), std::string::npos) << st.message();
}

TEST_F(RegistryJitTest, GeneratedDecodeSourceCompiles) {
  rt::JitConfig cfg = rt::JitConfig::from_environment();
  cfg.cache_root = scratch_.cache_dir();
  registry().set_config(cfg);
  // The fp8 tensor-core body at head_dim 128 (the largest decode kernel).
  const rt::KernelSpec s =
      flashserve::detail::decode_kernel_spec(DType::kFloat16, DType::kFloat8E4M3, 128);
  rt::CompileReport first, second;
  const flashserve::Status st = registry().compile(s, {"90a"}, false, &first);
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_TRUE(first.compiled);
  std::printf("  decode q=fp16 kv=fp8_e4m3 hd=128 compiled for sm_90a in %.1f s\n", first.seconds);
  ASSERT_TRUE(registry().compile(s, {"90a"}, true, &second).ok());
  EXPECT_FALSE(second.compiled);
  rt::ArtifactInfo info;
  std::string image;
  ASSERT_EQ(rt::read_artifact(first.path, &info, &image), rt::ArtifactState::kOk);
  EXPECT_EQ(info.name, "decode q=fp16 kv=fp8_e4m3 hd=128");
  EXPECT_EQ(info.entries, std::vector<std::string>{"decode_kernel"});
  // The image holds the instantiation of the prebuilt template (Itanium-mangled name).
  EXPECT_NE(image.find("13decode_kernelINS0_10DecodeTileILi128ELi1ELi4EEE6__half13__nv_fp8_e4m3"),
            std::string::npos);
  bool dep = false;
  for (const std::string& d : info.deps)
    dep |= d == "flashserve/attention/decode_kernel.cuh";
  EXPECT_TRUE(dep);
  // A specialization with a wide CTA (256-byte rows: bf16 at head_dim 128) holds both kernels,
  // the 4-warp one first (decode_run's kernel(0) and kernel(1)).
  const rt::KernelSpec w =
      flashserve::detail::decode_kernel_spec(DType::kBFloat16, DType::kBFloat16, 128);
  rt::CompileReport wide;
  ASSERT_TRUE(registry().compile(w, {"90a"}, false, &wide).ok());
  ASSERT_EQ(rt::read_artifact(wide.path, &info, &image), rt::ArtifactState::kOk);
  EXPECT_EQ(info.entries, (std::vector<std::string>{"decode_kernel", "decode_kernel_wide"}));
  EXPECT_NE(image.find("13decode_kernelINS0_10DecodeTileILi128ELi2ELi4EEE"), std::string::npos);
  EXPECT_NE(image.find("18decode_kernel_wideINS0_10DecodeTileILi128ELi2ELi8EEE"),
            std::string::npos);
}

}  // namespace
}  // namespace fs_test
