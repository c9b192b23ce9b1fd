#include "cli/suite.h"

#include <algorithm>

namespace fs_bench {

const std::vector<Model>& models() {
  static const std::vector<Model> m = {
      {"Llama-3-8B", 4096, 14336, 32, 8, 128},
      {"Llama-3-70B", 8192, 28672, 64, 8, 128},
      {"Qwen2.5-7B", 3584, 18944, 28, 4, 128},
      {"Qwen3-14B", 5120, 17408, 40, 8, 128},
  };
  return m;
}

std::vector<std::pair<std::string, Args>> default_suite(const std::vector<std::string>& routines) {
  // Decode batches (1..256 tokens, one per request) and prefill chunks (1024, 16384 tokens).
  const std::vector<int64_t> tokens = {1, 16, 128, 256, 1024, 16384};
  std::vector<std::pair<std::string, Args>> suite;
  auto wanted = [&](const std::string& r) {
    return routines.empty() || std::find(routines.begin(), routines.end(), r) != routines.end();
  };
  auto add = [&](const std::string& routine, const Model& m, int64_t t) {
    if (!wanted(routine)) return;
    Args a;
    a.model = m.name;
    a.tokens = t;
    a.hidden = m.hidden;
    a.q_heads = m.q_heads;
    a.kv_heads = m.kv_heads;
    a.head_dim = m.head_dim;
    if (routine.find("_and_mul") != std::string::npos) a.hidden = m.intermediate;
    if (routine == "append_paged_kv") {
      a.batch = t <= 256 ? t : t / 1024;  // decode: one token per request; prefill: 1k chunks
      a.kv_len = t <= 256 ? 1024 : 0;
    }
    suite.emplace_back(routine, a);
  };
  const Model& llama8b = models()[0];
  for (const Model& m : models()) {
    for (int64_t t : tokens) {
      add("rmsnorm", m, t);
      add("fused_add_rmsnorm", m, t);
      add("silu_and_mul", m, t);
      add("rope", m, t);
      add("append_paged_kv", m, t);
    }
  }
  // METHOD.md's decode sweep: page size 16, bf16, every head configuration at each (batch, kv_len).
  if (wanted("decode")) {
    const std::pair<int64_t, int64_t> points[] = {{1, 4096},   {1, 32768},  {16, 4096}, {64, 2048},
                                                  {128, 4096}, {256, 1024}, {32, 32768}};
    for (const Model& m : models()) {
      for (const auto& [b, kv] : points) {
        Args a;
        a.model = m.name;
        a.batch = b;
        a.kv_len = kv;
        a.q_heads = m.q_heads;
        a.kv_heads = m.kv_heads;
        a.head_dim = m.head_dim;
        suite.emplace_back("decode", a);
      }
    }
  }
  // Cascade: a 4096-token shared prefix (a system prompt) and 256-token suffixes.
  if (wanted("cascade_decode")) {
    for (int64_t b : {16, 64}) {
      Args a;
      a.model = models()[0].name;
      a.batch = b;
      a.prefix_len = 4096;
      a.kv_len = 256;
      suite.emplace_back("cascade_decode", a);
    }
  }
  // METHOD.md's prefill sweep: batch x seqlen = 16384 tokens, hidden 2048 (heads = 2048 / d), bf16,
  // MHA, causal and not; then GQA 32/8 x 128 at 4k.
  auto sweep_point = [](int64_t d, int64_t causal, int64_t s) {
    Args a;
    a.model = "sweep";
    a.batch = 16384 / s;
    a.kv_len = s;
    a.q_heads = a.kv_heads = 2048 / d;
    a.head_dim = d;
    a.causal = causal;
    return a;
  };
  if (wanted("prefill")) {
    for (int64_t d : {64, 128, 256})
      for (int64_t causal : {0, 1})
        for (int64_t s : {512, 1024, 2048, 4096, 8192, 16384})
          suite.emplace_back("prefill", sweep_point(d, causal, s));
    for (int64_t causal : {0, 1}) {
      Args a;
      a.model = "GQA 32/8";
      a.batch = 4;
      a.kv_len = 4096;
      a.q_heads = 32;
      a.kv_heads = 8;
      a.head_dim = 128;
      a.causal = causal;
      suite.emplace_back("prefill", a);
    }
  }
  // Paged prefill (issue 4: >= 90% of the dense figure for the same tokens): head_dim 128 at 1k,
  // 4k and 16k, 64 and 256 at 4k, pages of 16 and 64, beside the ragged points of the sweep above
  // (compare.py prints the ratio).
  if (wanted("prefill_paged")) {
    for (int64_t d : {64, 128, 256})
      for (int64_t causal : {0, 1})
        for (int64_t s : {1024, 4096, 16384})
          for (int64_t ps : {16, 64}) {
            if (d != 128 && s != 4096) continue;
            Args a = sweep_point(d, causal, s);
            a.page_size = ps;
            suite.emplace_back("prefill_paged", a);
          }
  }
  // Sampling (issue 5): Llama-3 and Qwen2.5 vocabularies at decode batches, float32 logits (the
  // lm_head output engines sample from) and float32 probabilities.
  for (const auto& [label, vocab] : {std::pair<const char*, int64_t>{"Llama-3 vocab", 128256},
                                     std::pair<const char*, int64_t>{"Qwen2.5 vocab", 151936}}) {
    for (int64_t b : {1, 16, 64, 256}) {
      for (const char* r : {"sampling_top_p_from_logits", "sampling_top_k_top_p_from_logits",
                            "sampling_top_p", "top_k", "chain_speculative"}) {
        if (!wanted(r) || (std::string(r) == "chain_speculative" && b > 64)) continue;
        Args a;
        a.model = label;
        a.batch = b;
        a.vocab = vocab;
        a.dtype = DType::kFloat32;
        suite.emplace_back(r, a);
      }
    }
  }
  // METHOD.md's large point, 16384 tokens x hidden 8192, for every routine: activations with
  // d = 8192, rope with 48 q + 16 k heads of 128, append with 64 kv heads of 128.
  const Model sweep{"16384x8192", 8192, 8192, 48, 16, 128};
  for (const Routine& r : all_routines()) {
    if (!wanted(r.name) || r.family == "attention" || r.family == "sampling") continue;
    add(r.name, sweep, 16384);
    if (r.name == "append_paged_kv") suite.back().second.kv_heads = 64;
  }
  for (int64_t t : tokens) {
    for (const char* r :
         {"gemma_rmsnorm", "gemma_fused_add_rmsnorm", "layernorm", "rmsnorm_fp8",
          "fused_add_rmsnorm_fp8", "gelu_and_mul", "gelu_tanh_and_mul", "rope_cos_sin_cache"}) {
      add(r, llama8b, t);
    }
  }
  return suite;
}

}  // namespace fs_bench
