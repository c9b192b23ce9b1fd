// The `flashserve` command line: `bench` (benchmark routines) and `info` (device and build facts).
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/kernel_cache_cmd.h"
#include "cli/suite.h"
#include "flashserve/flashserve.h"
#include "harness/output.h"
#include "harness/routine.h"

namespace fs_bench {
namespace {

constexpr const char* kUsage = R"(usage: flashserve <command> [options]

commands:
  bench    run benchmark routines; with no shape flags, the default suite over real model
           shapes (Llama-3-8B/70B, Qwen2.5-7B, Qwen3-14B)
  info     library build, CUDA device and supported ops

bench options:
  --routine NAME[,NAME...]  routines to run (--list shows them)
  --list                    list the routines and exit
  shape flags (each takes a comma-separated list; the run covers every combination):
  --tokens N  --hidden N  --q-heads N  --kv-heads N  --head-dim N  --rotary-dim N
  --page-size N  --batch N  --kv-len N  --q-tokens N  --prefix-len N  --q-len N  --causal 0|1
  --head-dim-v N            prefill: v and out's head dim (0 = --head-dim; 128 with 192)
  --split-kv 0|1            prefill: allow split-KV (default 1)
  --vocab N  --draft-tokens N   sampling: row length; drafts per request (chain_speculative)
  --layout NHD|HND          paged KV layout (append, decode)
  --page-order random|sequential   decode: the pool's pages in a random permutation (default) or
                            in table order (a fresh allocator's)
  --dtype bf16|fp16|fp32    element type (default bf16)
  --cache-dtype same|fp8_e4m3|fp8_e5m2   KV cache type (append)
  --iters N                 launches per timing sample (default: enough for ~2 ms)
  --samples N               timing samples; the median is reported (default 15)
  --cold-l2                 evict L2 before each timed launch
  --graph                   time CUDA-graph replays of the launches
  --warmup-ms N             wall time of launches before a case's samples, so that it is timed at
                            the clock the GPU sustains under load (default: 1000 for the prefill
                            routines, which run at the power cap; 0 for the others)
  --refcheck                check each result against the CPU reference
  --output FILE             also write results to FILE (.json or .csv)
  --no-ceiling              skip measuring the copy-bandwidth ceiling (quick runs, sanitizers)
)";

struct CliError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

int64_t parse_int(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || x < 0) {
    throw CliError(flag + ": expected a non-negative integer, got '" + v + "'");
  }
  return x;
}

DType parse_dtype(const std::string& v) {
  if (v == "bf16" || v == "bfloat16") return DType::kBFloat16;
  if (v == "fp16" || v == "float16") return DType::kFloat16;
  if (v == "fp32" || v == "float32") return DType::kFloat32;
  throw CliError("--dtype: expected bf16, fp16 or fp32, got '" + v + "'");
}

struct BenchCli {
  std::vector<std::string> routines;
  std::map<std::string, std::vector<std::string>> shape;  // flag -> values
  Args base;
  Context ctx;
  std::string output;
  bool list = false;
  bool ceiling = true;
  bool dtype_given = false;  // --dtype overrides the default suite's per-routine dtypes
  double warmup_ms = -1;     // --warmup-ms; < 0: the routine's default (kPrefillWarmupMs)
};

// Prefill is compute-bound and draws the H100's 700 W cap within ~1 s of load, where the clock
// falls from 1.98 to ~1.5 GHz: a second of launches first times every case (and its torch peer,
// which reads warmup_ms from the record) in that sustained state, whatever ran before it.
constexpr double kPrefillWarmupMs = 1000;

const std::vector<std::string> kShapeFlags = {
    "--tokens",     "--hidden",       "--q-heads",     "--kv-heads", "--head-dim",
    "--rotary-dim", "--page-size",    "--batch",       "--kv-len",   "--q-tokens",
    "--prefix-len", "--layout",       "--cache-dtype", "--q-len",    "--causal",
    "--vocab",      "--draft-tokens", "--head-dim-v",  "--split-kv", "--page-order"};

BenchCli parse_bench(int argc, char** argv) {
  BenchCli c;
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw CliError(flag + ": missing value");
      return argv[++i];
    };
    bool is_shape = false;
    for (const auto& f : kShapeFlags)
      is_shape |= flag == f;
    if (is_shape) {
      c.shape[flag] = split(value());
    } else if (flag == "--routine") {
      for (const auto& r : split(value())) {
        if (!find_routine(r)) throw CliError("--routine: unknown routine '" + r + "' (see --list)");
        c.routines.push_back(r);
      }
    } else if (flag == "--dtype") {
      c.base.dtype = parse_dtype(value());
      c.dtype_given = true;
    } else if (flag == "--iters") {
      c.ctx.time.iters = static_cast<int>(parse_int(flag, value()));
    } else if (flag == "--samples") {
      c.ctx.time.samples = static_cast<int>(std::max<int64_t>(1, parse_int(flag, value())));
    } else if (flag == "--cold-l2") {
      c.ctx.time.cold_l2 = true;
    } else if (flag == "--graph") {
      c.ctx.time.graph = true;
    } else if (flag == "--warmup-ms") {
      c.warmup_ms = static_cast<double>(std::max<int64_t>(0, parse_int(flag, value())));
    } else if (flag == "--refcheck") {
      c.ctx.refcheck = true;
    } else if (flag == "--output") {
      c.output = value();
      const bool ok = c.output.size() > 5 && (c.output.substr(c.output.size() - 5) == ".json" ||
                                              c.output.substr(c.output.size() - 4) == ".csv");
      if (!ok)
        throw CliError("--output: expected a .json or .csv file name, got '" + c.output + "'");
    } else if (flag == "--no-ceiling") {
      c.ceiling = false;
    } else if (flag == "--list") {
      c.list = true;
    } else if (flag == "-h" || flag == "--help") {
      std::cout << kUsage;
      std::exit(0);
    } else {
      throw CliError("unknown option '" + flag + "' (flashserve --help)");
    }
  }
  return c;
}

void apply(Args& a, const std::string& flag, const std::string& v) {
  if (flag == "--tokens")
    a.tokens = parse_int(flag, v);
  else if (flag == "--hidden")
    a.hidden = parse_int(flag, v);
  else if (flag == "--q-heads")
    a.q_heads = parse_int(flag, v);
  else if (flag == "--kv-heads")
    a.kv_heads = parse_int(flag, v);
  else if (flag == "--head-dim")
    a.head_dim = parse_int(flag, v);
  else if (flag == "--head-dim-v")
    a.head_dim_v = parse_int(flag, v);
  else if (flag == "--rotary-dim")
    a.rotary_dim = parse_int(flag, v);
  else if (flag == "--page-size")
    a.page_size = parse_int(flag, v);
  else if (flag == "--batch")
    a.batch = parse_int(flag, v);
  else if (flag == "--kv-len")
    a.kv_len = parse_int(flag, v);
  else if (flag == "--q-tokens")
    a.q_tokens = parse_int(flag, v);
  else if (flag == "--prefix-len")
    a.prefix_len = parse_int(flag, v);
  else if (flag == "--q-len")
    a.q_len = parse_int(flag, v);
  else if (flag == "--causal")
    a.causal = parse_int(flag, v) != 0;
  else if (flag == "--vocab")
    a.vocab = parse_int(flag, v);
  else if (flag == "--draft-tokens")
    a.draft_tokens = parse_int(flag, v);
  else if (flag == "--split-kv")
    a.split_kv = parse_int(flag, v) != 0;
  else if (flag == "--page-order") {
    if (v != "random" && v != "sequential") {
      throw CliError("--page-order: expected random or sequential, got '" + v + "'");
    }
    a.sequential_pages = v == "sequential";
  } else if (flag == "--layout") {
    if (v != "NHD" && v != "HND") throw CliError("--layout: expected NHD or HND, got '" + v + "'");
    a.layout = v;
  } else if (flag == "--cache-dtype") {
    if (v != "same" && v != "fp8_e4m3" && v != "fp8_e5m2") {
      throw CliError("--cache-dtype: expected same, fp8_e4m3 or fp8_e5m2, got '" + v + "'");
    }
    a.cache_dtype = v == "same" ? "" : v;
  }
}

// Every combination of the shape flags' values, for each chosen routine.
std::vector<std::pair<std::string, Args>> expand(const BenchCli& c) {
  std::vector<Args> points = {c.base};
  for (const auto& [flag, values] : c.shape) {
    std::vector<Args> next;
    for (const Args& p : points) {
      for (const auto& v : values) {
        Args a = p;
        apply(a, flag, v);
        next.push_back(a);
      }
    }
    points = std::move(next);
  }
  std::vector<std::pair<std::string, Args>> cases;
  std::vector<std::string> routines = c.routines;
  if (routines.empty()) {
    for (const Routine& r : all_routines())
      routines.push_back(r.name);
  }
  for (const auto& r : routines) {
    for (const Args& a : points)
      cases.emplace_back(r, a);
  }
  return cases;
}

int run_bench(int argc, char** argv) {
  BenchCli cli = parse_bench(argc, argv);
  if (cli.list) {
    for (const Routine& r : all_routines()) {
      std::string flags;
      for (const auto& f : r.flags)
        flags += (flags.empty() ? "--" : " --") + f;
      std::printf("%-26s %-11s %s  [%s]\n", r.name.c_str(), r.family.c_str(), r.description.c_str(),
                  flags.c_str());
    }
    return 0;
  }
  for (auto& [flag, values] : cli.shape) {
    Args probe;
    for (const auto& v : values)
      apply(probe, flag, v);  // reject bad values before any work
  }
  int count = 0;
  flashserve::Status st = flashserve::device_count(&count);
  if (!st.ok()) {
    std::fprintf(stderr, "flashserve bench: %s; the benchmarks need an NVIDIA GPU\n",
                 st.message().c_str());
    return 1;
  }
  auto cases = cli.shape.empty() ? default_suite(cli.routines) : expand(cli);
  if (cli.shape.empty() && cli.dtype_given) {
    for (auto& [name, a] : cases)
      a.dtype = cli.base.dtype;
  }

  flashserve::DeviceInfo dev;
  flashserve::get_device_info(0, &dev);
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  Timer timer(stream);
  cli.ctx.stream = stream;
  cli.ctx.timer = &timer;
  cli.ctx.ceiling_tbps = cli.ceiling ? timer.measure_copy_tbps() : 0.0;
  std::printf("flashserve %s on %s (%d SMs); measured copy ceiling %.3f TB/s; %zu cases, mode %s\n",
              flashserve::version(), dev.name.c_str(), dev.sm_count, cli.ctx.ceiling_tbps,
              cases.size(), mode_name(cli.ctx.time).c_str());
  std::fflush(stdout);

  std::vector<Result> results;
  int failures = 0;
  for (const auto& [name, args] : cases) {
    const Routine* routine = find_routine(name);
    Result r;
    Context ctx = cli.ctx;
    ctx.time.warmup_ms =
        cli.warmup_ms >= 0 ? cli.warmup_ms : (name.rfind("prefill", 0) == 0 ? kPrefillWarmupMs : 0);
    try {
      r = routine->run(args, ctx);
    } catch (const std::exception& e) {
      r.routine = name;
      r.model = args.model;
      r.error = e.what();
      cudaGetLastError();
      cudaStreamSynchronize(stream);
    }
    failures += !r.error.empty() || r.check.rfind("FAIL", 0) == 0;
    results.push_back(r);
  }
  print_table(std::cout, results);
  if (!cli.output.empty()) {
    std::ofstream f(cli.output);
    if (!f) throw CliError("--output: cannot write '" + cli.output + "'");
    if (cli.output.substr(cli.output.size() - 4) == ".csv") {
      write_csv(f, results);
    } else {
      write_json(f, {dev.name, flashserve::version(), cli.ctx.ceiling_tbps}, results);
    }
  }
  cudaStreamDestroy(stream);
  if (failures) std::fprintf(stderr, "flashserve bench: %d case(s) failed\n", failures);
  return failures ? 1 : 0;
}

int run_info() {
  const flashserve::BuildInfo b = flashserve::build_info();
  std::printf("flashserve %s (%s build)\n", b.version, b.build_type);
  std::printf("  built with CUDA %s for sm_%s\n", b.cuda_version, b.cuda_archs);
  std::printf("  CUDA flags: %s\n  C++ flags: %s\n", b.cuda_flags, b.cxx_flags);
  int count = 0;
  flashserve::Status st = flashserve::device_count(&count);
  if (!st.ok()) {
    std::printf("device: none (%s)\n", st.message().c_str());
  }
  for (int d = 0; d < count; ++d) {
    flashserve::DeviceInfo info;
    if (!flashserve::get_device_info(d, &info).ok()) continue;
    std::printf("device %d: %s, sm_%d%d, %d SMs, L2 %.0f MB, %.1f GiB, driver %d, runtime %d\n", d,
                info.name.c_str(), info.cc_major, info.cc_minor, info.sm_count, info.l2_bytes / 1e6,
                info.global_mem_bytes / 1073741824.0, info.driver_version, info.runtime_version);
    if (info.cc_major != 9) {
      std::printf(
          "  warning: flashserve kernels are built for Hopper (sm_90a); this device "
          "cannot run them\n");
    }
  }
  std::printf(
      "supported:\n"
      "  rmsnorm, fused_add_rmsnorm, gemma_rmsnorm, gemma_fused_add_rmsnorm, layernorm\n"
      "      fp32/fp16/bf16 in, same or fp8 e4m3 out; any hidden; 2-D/3-D strided views\n"
      "  silu_and_mul, gelu_and_mul, gelu_tanh_and_mul   fp32/fp16/bf16; any width\n"
      "  apply_rope, apply_rope_cos_sin_cache   NeoX/GPT-J, partial rotary, Llama-3.1 scaling,\n"
      "      int32/int64 positions, in place or out of place\n"
      "  append_paged_kv_cache   NHD/HND, any page size, fp16/bf16/fp32 or fp8 e4m3/e5m2 cache\n"
      "  decode_plan/decode_run, merge_state(s)   paged decode attention, any GQA ratio,\n"
      "      head_dim 64/128/256, fp16/bf16 q, same or fp8 KV, 1..8 query tokens\n"
      "  sample_from_logits/_probs   top-k/top-p/min-p (either order), per-row or scalar\n"
      "      parameters, Philox seed/offset on the device; fp32/fp16/bf16 logits, fp32 probs\n"
      "  top_k_renorm_probs, top_p_renorm_probs, top_k_mask_logits, top_k (values + indices),\n"
      "      chain_speculative_sampling   vocabularies of any size (on chip up to ~800k)\n");
  return 0;
}

}  // namespace
}  // namespace fs_bench

int main(int argc, char** argv) {
  const std::string cmd = argc > 1 ? argv[1] : "";
  try {
    if (cmd == "bench") return fs_bench::run_bench(argc, argv);
    if (cmd == "info") return fs_bench::run_info();
    if (cmd == "compile") return fs_bench::run_compile(argc, argv);
    if (cmd == "cache") return fs_bench::run_cache(argc, argv);
    if (cmd == "-h" || cmd == "--help" || cmd == "help") {
      std::cout << fs_bench::kUsage << "\n" << fs_bench::kKernelCacheUsage;
      return 0;
    }
    std::fprintf(stderr, "%s%s", cmd.empty() ? "" : ("unknown command '" + cmd + "'\n").c_str(),
                 fs_bench::kUsage);
    return 2;
  } catch (const fs_bench::CliError& e) {
    std::fprintf(stderr, "flashserve %s: %s\n", cmd.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "flashserve %s: error: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
