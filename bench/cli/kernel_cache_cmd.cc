#include "cli/kernel_cache_cmd.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "api/kernel_families.h"
#include "flashserve/runtime.h"
#include "runtime/file_util.h"
#include "runtime/jit_config.h"
#include "runtime/kernel_cache.h"
#include "runtime/kernel_presets.h"
#include "runtime/kernel_registry.h"

namespace fs_bench {
namespace {

namespace rt = flashserve::runtime;

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string human_bytes(double b) {
  char buf[32];
  if (b >= 1e9) {
    std::snprintf(buf, sizeof(buf), "%.1f GB", b / 1e9);
  } else if (b >= 1e6) {
    std::snprintf(buf, sizeof(buf), "%.1f MB", b / 1e6);
  } else {
    std::snprintf(buf, sizeof(buf), "%.0f KB", b / 1e3);
  }
  return buf;
}

std::string human_age(int64_t mtime) {
  const double s = std::difftime(std::time(nullptr), static_cast<std::time_t>(mtime));
  char buf[32];
  if (s < 120) {
    std::snprintf(buf, sizeof(buf), "%.0f s", s);
  } else if (s < 7200) {
    std::snprintf(buf, sizeof(buf), "%.0f min", s / 60);
  } else if (s < 172800) {
    std::snprintf(buf, sizeof(buf), "%.0f h", s / 3600);
  } else {
    std::snprintf(buf, sizeof(buf), "%.0f d", s / 86400);
  }
  return buf;
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (const std::string& x : v)
    s += (s.empty() ? "" : sep) + x;
  return s;
}

// The device's compute capability (x 10), or 0 without a device.
int device_cc() {
  int count = 0;
  if (!flashserve::device_count(&count).ok() || count == 0) return 0;
  flashserve::DeviceInfo info;
  if (!flashserve::get_device_info(0, &info).ok()) return 0;
  return info.cc_major * 10 + info.cc_minor;
}

// --arch, else FLASHSERVE_CUDA_ARCH_LIST, else the device's, else what the library was built for.
std::vector<std::string> compile_targets(const std::string& arch_flag, std::string* source) {
  std::string error;
  if (!arch_flag.empty()) {
    const std::vector<std::string> a = rt::parse_arch_list(arch_flag, &error);
    if (!error.empty() || a.empty())
      throw UsageError("--arch: " + (error.empty() ? "empty" : error));
    *source = "--arch";
    return a;
  }
  const rt::KernelRegistry& r = rt::KernelRegistry::global();
  if (!r.cache().config().archs.empty()) {
    *source = "FLASHSERVE_CUDA_ARCH_LIST";
    return r.cache().config().archs;
  }
  if (const int cc = device_cc()) {
    *source = "the device";
    return rt::archs_for_device(cc);
  }
  *source = "the library's build (no device)";
  return rt::parse_arch_list(flashserve::build_info().cuda_archs, nullptr);
}

// The progress bar on stderr: redrawn in place on a terminal, one line per kernel otherwise.
class Progress {
 public:
  explicit Progress(size_t total) : total_(total), tty_(::isatty(2) == 1), t0_(now()) {}

  void finished(const std::string& what, const std::string& outcome) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++done_;
    if (tty_) {
      std::fprintf(stderr, "\r\033[K  %s %s\n", outcome.c_str(), what.c_str());
      draw();
    } else {
      std::fprintf(stderr, "[%*zu/%zu] %s %s\n", width(), done_, total_, outcome.c_str(),
                   what.c_str());
    }
    std::fflush(stderr);
  }
  void tick() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (tty_) draw();
  }
  void end() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (tty_) std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
  }

 private:
  static std::chrono::steady_clock::time_point now() { return std::chrono::steady_clock::now(); }
  int width() const { return static_cast<int>(std::to_string(total_).size()); }
  void draw() {
    constexpr int kBar = 32;
    const int fill = total_ ? static_cast<int>(kBar * done_ / total_) : kBar;
    std::string bar(fill, '#');
    bar += std::string(kBar - fill, '.');
    std::fprintf(stderr, "\r\033[K[%s] %zu/%zu  %.1f s", bar.c_str(), done_, total_,
                 seconds_since(t0_));
    std::fflush(stderr);
  }
  std::mutex mutex_;
  size_t total_, done_ = 0;
  bool tty_;
  std::chrono::steady_clock::time_point t0_;
};

struct CompileCli {
  std::vector<std::string> presets, logs, specs;
  std::string arch;
  int jobs = 0;
};

CompileCli parse_compile(int argc, char** argv) {
  CompileCli c;
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(flag + ": missing value");
      return argv[++i];
    };
    if (flag == "--preset") {
      for (const std::string& p : split_commas(value()))
        c.presets.push_back(p);
    } else if (flag == "--from-log") {
      c.logs.push_back(value());
    } else if (flag == "--spec") {
      c.specs.push_back(value());
    } else if (flag == "--arch") {
      c.arch = value();
    } else if (flag == "-j" || flag == "--jobs") {
      const std::string v = value();
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 1)
        throw UsageError(flag + ": expected a positive integer, got '" + v + "'");
      c.jobs = static_cast<int>(n);
    } else if (flag.rfind("-j", 0) == 0 && flag.size() > 2) {
      c.jobs = std::max(1, std::atoi(flag.c_str() + 2));
    } else {
      throw UsageError("unknown option '" + flag + "' (flashserve --help)");
    }
  }
  if (c.presets.empty() && c.logs.empty() && c.specs.empty())
    throw UsageError("nothing to compile: give --preset NAME, --from-log FILE or --spec TEXT");
  return c;
}

int compile_main(int argc, char** argv) {
  CompileCli cli = parse_compile(argc, argv);
  flashserve::detail::register_kernel_families();
  rt::KernelRegistry& registry = rt::KernelRegistry::global();
  std::vector<rt::KernelSpec> specs;
  auto add = [&](const rt::KernelSpec& s) {
    for (const rt::KernelSpec& o : specs)
      if (o == s) return;
    specs.push_back(s);
  };
  for (const std::string& p : cli.presets) {
    std::vector<rt::KernelSpec> ps;
    flashserve::Status st = rt::preset_specs(registry, p, &ps);
    if (!st.ok()) throw UsageError("--preset: " + st.message());
    for (const rt::KernelSpec& s : ps)
      add(s);
  }
  for (const std::string& path : cli.logs) {
    std::string text;
    if (!rt::read_file(path, &text)) throw UsageError("--from-log: cannot read '" + path + "'");
    const std::vector<rt::KernelSpec> ls = registry.specs_in_log(text);
    if (ls.empty()) {
      std::fprintf(stderr,
                   "flashserve compile: no kernel lines in %s (run with "
                   "FLASHSERVE_KERNEL_LOG=%s, or FLASHSERVE_LOGLEVEL=1)\n",
                   path.c_str(), path.c_str());
    }
    for (const rt::KernelSpec& s : ls)
      add(s);
  }
  for (const std::string& text : cli.specs) {
    rt::KernelSpec s;
    flashserve::Status st = registry.parse(text, &s);
    if (!st.ok()) throw UsageError("--spec: " + st.message());
    add(s);
  }
  std::string target_source;
  const std::vector<std::string> archs = compile_targets(cli.arch, &target_source);
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int wanted = cli.jobs > 0 ? cli.jobs : cores;
  const int jobs = std::max(1, std::min(wanted, static_cast<int>(specs.size())));
  const std::string tag = rt::arch_tag(archs);
  std::printf("flashserve compile: %zu kernel specialization%s for %s (from %s), -j %d, cache %s\n",
              specs.size(), specs.size() == 1 ? "" : "s", tag.c_str(), target_source.c_str(), jobs,
              rt::cache_dir_for(registry.cache().config(), archs).c_str());
  std::fflush(stdout);

  Progress progress(specs.size());
  std::atomic<size_t> next{0};
  std::mutex mutex;
  std::condition_variable cv;
  size_t finished = 0;
  int compiled = 0, cached = 0, failed = 0;
  double compiler_seconds = 0;
  std::vector<std::string> errors;
  const auto t0 = std::chrono::steady_clock::now();
  auto worker = [&] {
    for (size_t i = next++; i < specs.size(); i = next++) {
      rt::CompileReport rep;
      const flashserve::Status st = registry.compile(specs[i], archs, true, &rep);
      const std::string name = registry.describe(specs[i]);
      char outcome[64];
      if (!st.ok()) {
        std::snprintf(outcome, sizeof(outcome), "FAILED  ");
      } else {
        std::snprintf(outcome, sizeof(outcome), "%s %5.1f s",
                      rep.compiled ? "compiled" : "cached  ", rep.seconds);
      }
      progress.finished(name, outcome);
      std::lock_guard<std::mutex> lock(mutex);
      if (!st.ok()) {
        ++failed;
        errors.push_back(st.message());
      } else {
        ++(rep.compiled ? compiled : cached);
        compiler_seconds += rep.seconds;
      }
      ++finished;
      cv.notify_all();
    }
  };
  std::vector<std::thread> threads;
  for (int j = 0; j < jobs; ++j)
    threads.emplace_back(worker);
  {
    std::unique_lock<std::mutex> lock(mutex);
    while (finished < specs.size()) {
      cv.wait_for(lock, std::chrono::milliseconds(250));
      lock.unlock();
      progress.tick();
      lock.lock();
    }
  }
  for (std::thread& t : threads)
    t.join();
  progress.end();
  for (const std::string& e : errors)
    std::fprintf(stderr, "flashserve compile: %s\n", e.c_str());
  std::printf("done in %.1f s: %d compiled, %d already cached, %d failed\n", seconds_since(t0),
              compiled, cached, failed);
  std::printf(
      "first-use cost: %.1f s of compiler time for these %zu kernels (what the first calls "
      "of a run would wait for, one after another, without this)\n",
      compiler_seconds, specs.size() - failed);
  return failed ? 1 : 0;
}

// --- cache ---------------------------------------------------------------------------------------

int cache_list(bool all) {
  const rt::JitConfig& cfg = rt::KernelRegistry::global().cache().config();
  const std::string dir = all ? cfg.cache_root : rt::path_join(cfg.cache_root, cfg.library_version);
  const std::vector<rt::CacheListing> entries = rt::list_cache(dir);
  if (entries.empty()) {
    std::printf("no kernel cache entries under %s\n", dir.c_str());
    return 0;
  }
  std::printf("%-42s %-8s %9s %7s %8s  %s\n", "kernel", "arch", "size", "age", "compile", "state");
  double total = 0;
  for (const rt::CacheListing& e : entries) {
    const bool ok = e.state == rt::ArtifactState::kOk;
    char compile[32] = "-";
    if (ok) std::snprintf(compile, sizeof(compile), "%.1f s", e.info.compile_seconds);
    std::printf("%-42s %-8s %9s %7s %8s  %s%s\n", ok ? e.info.name.c_str() : "?",
                ok ? e.info.arch.c_str() : "?", human_bytes(double(e.bytes)).c_str(),
                human_age(e.mtime).c_str(), compile, rt::artifact_state_name(e.state),
                ok ? "" : ("  " + e.path).c_str());
    total += double(e.bytes);
  }
  std::printf("%zu entries, %s, under %s\n", entries.size(), human_bytes(total).c_str(),
              dir.c_str());
  return 0;
}

int cache_clear(bool all) {
  const rt::JitConfig& cfg = rt::KernelRegistry::global().cache().config();
  const std::string dir = all ? cfg.cache_root : rt::path_join(cfg.cache_root, cfg.library_version);
  int64_t bytes = 0;
  const int n = rt::clear_cache(dir, &bytes);
  std::printf("removed %d file%s (%s) under %s\n", n, n == 1 ? "" : "s",
              human_bytes(double(bytes)).c_str(), dir.c_str());
  return 0;
}

// The hot-path lookup (a resolved prebuilt spec), and with a device the cold load of a cached
// kernel as a new process pays it (cache read + checksum + cuLibraryLoadData + load on the device).
void cache_bench(rt::KernelRegistry& registry) {
  const std::vector<std::string> built =
      rt::parse_arch_list(flashserve::build_info().cuda_archs, nullptr);
  const int build_cc = built.empty() ? 90 : std::atoi(built[0].c_str());
  rt::KernelSpec probe;
  bool have = false;
  for (int id = 0; id < registry.family_count() && !have; ++id) {
    const rt::KernelFamily& f = registry.family(id);
    if (!f.enumerate || !f.prebuilt) continue;
    for (rt::KernelSpec s : f.enumerate()) {
      s.family = static_cast<int16_t>(id);
      if (f.prebuilt(s)) {
        probe = s;
        have = true;
        break;
      }
    }
  }
  if (have && !registry.force_jit()) {
    probe.cc = static_cast<int16_t>(build_cc);
    const rt::ResolvedKernel* k = nullptr;
    if (registry.resolve(probe, &k).ok()) {
      constexpr int kIters = 2000000;
      size_t hits = 0;
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < kIters; ++i)
        hits += registry.find(probe) == k;
      const double ns = seconds_since(t0) * 1e9 / kIters;
      std::printf("  lookup:       %.1f ns per registry lookup (%s; %zu of %d hit)\n", ns,
                  k->name.c_str(), hits, kIters);
    }
  } else {
    std::printf("  lookup:       no prebuilt kernel to look up\n");
  }
  const int cc = device_cc();
  if (cc == 0) {
    std::printf("  cached load:  needs a GPU\n");
    return;
  }
  rt::KernelSpec spec;
  if (!registry.parse("decode q=bf16 kv=bf16 hd=128", &spec).ok()) return;
  spec.cc = static_cast<int16_t>(cc);
  std::unique_ptr<rt::ResolvedKernel> k;
  flashserve::Status st = registry.load_fresh(spec, &k);  // compiles it first if needed
  std::vector<double> ms;
  for (int i = 0; i < 7 && st.ok(); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    st = registry.load_fresh(spec, &k);
    int blocks = 0;
    if (st.ok()) st = rt::prepare_kernel(k->module->kernel(0), 128, 0, &blocks);
    ms.push_back(seconds_since(t0) * 1e3);
  }
  if (!st.ok()) {
    std::printf("  cached load:  failed: %s\n", st.to_string().c_str());
    return;
  }
  std::sort(ms.begin(), ms.end());
  std::printf("  cached load:  %.2f ms median (min %.2f, max %.2f) for %s: read, verify, load\n",
              ms[ms.size() / 2], ms.front(), ms.back(), registry.describe(spec).c_str());
}

int cache_info(bool bench) {
  flashserve::detail::register_kernel_families();
  rt::KernelRegistry& registry = rt::KernelRegistry::global();
  const rt::JitConfig& cfg = registry.cache().config();
  const flashserve::BuildInfo b = flashserve::build_info();
  std::printf("flashserve %s kernel cache\n", b.version);
  std::printf("  cache root:   %s%s\n", cfg.cache_root.c_str(),
              std::getenv("FLASHSERVE_CACHE_DIR") ? " (FLASHSERVE_CACHE_DIR)" : "");
  const std::string vdir = rt::path_join(cfg.cache_root, cfg.library_version);
  std::map<std::string, int> per_arch;
  double bytes = 0;
  const std::vector<rt::CacheListing> entries = rt::list_cache(vdir);
  for (const rt::CacheListing& e : entries) {
    ++per_arch[e.state == rt::ArtifactState::kOk ? e.info.arch : "unreadable"];
    bytes += double(e.bytes);
  }
  std::string arches;
  for (const auto& [a, n] : per_arch)
    arches += (arches.empty() ? "" : ", ") + a + ": " + std::to_string(n);
  std::printf("  this version: %s: %zu entries, %s%s\n", vdir.c_str(), entries.size(),
              human_bytes(bytes).c_str(), arches.empty() ? "" : (" (" + arches + ")").c_str());
  std::printf("  headers:      %s\n", cfg.include_dir.empty()
                                          ? "NOT FOUND (set FLASHSERVE_INCLUDE_DIR)"
                                          : cfg.include_dir.c_str());
  std::printf("  CUTLASS:      %s\n",
              cfg.cutlass_dir.empty() ? "not found" : cfg.cutlass_dir.c_str());
  std::printf("  compiler:     %s\n",
              cfg.nvcc.empty() ? "NOT FOUND (set FLASHSERVE_NVCC or CUDA_HOME)" : cfg.nvcc.c_str());
  std::printf("  flags:        %s\n", join(cfg.flags, " ").c_str());
  const int cc = device_cc();
  if (!cfg.archs.empty()) {
    std::printf("  targets:      %s (FLASHSERVE_CUDA_ARCH_LIST)\n",
                rt::arch_tag(cfg.archs).c_str());
  } else if (cc) {
    std::printf("  targets:      %s (the device's)\n",
                rt::arch_tag(rt::archs_for_device(cc)).c_str());
  } else {
    std::printf("  targets:      the device's (none here; `compile` uses --arch or sm_%s)\n",
                b.cuda_archs);
  }
  std::printf("  JIT:          %s%s\n",
              cfg.disabled ? "disabled (FLASHSERVE_DISABLE_JIT)" : "enabled",
              registry.force_jit() ? ", prebuilt kernels ignored (FLASHSERVE_FORCE_JIT)" : "");
  std::vector<std::string> prebuilt;
  for (int id = 0; id < registry.family_count(); ++id) {
    const rt::KernelFamily& f = registry.family(id);
    if (!f.enumerate || !f.prebuilt) continue;
    for (rt::KernelSpec s : f.enumerate()) {
      s.family = static_cast<int16_t>(id);
      if (f.prebuilt(s)) prebuilt.push_back(registry.describe(s));
    }
  }
  std::printf("  prebuilt:     %zu specializations for sm_%s (FLASHSERVE_PREBUILT_PRESET=%s)\n",
              prebuilt.size(), b.cuda_archs, rt::prebuilt_preset().c_str());
  for (const std::string& p : prebuilt)
    std::printf("                  %s\n", p.c_str());
  std::string presets = "all";
  for (const rt::KernelPreset& p : rt::kernel_presets())
    presets += ", " + p.name + " (" + std::to_string(p.specs.size()) + ")";
  std::printf("  presets:      %s\n", presets.c_str());
  for (const std::string& p : cfg.problems)
    std::printf("  warning:      %s\n", p.c_str());
  if (bench) cache_bench(registry);
  return 0;
}

int cache_main(int argc, char** argv) {
  const std::string sub = argc > 2 ? argv[2] : "";
  bool all = false, bench = false;
  for (int i = 3; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--all" && (sub == "list" || sub == "clear")) {
      all = true;
    } else if (flag == "--bench" && sub == "info") {
      bench = true;
    } else {
      throw UsageError("cache " + sub + ": unknown option '" + flag + "'");
    }
  }
  if (sub == "list") return cache_list(all);
  if (sub == "clear") return cache_clear(all);
  if (sub == "info") return cache_info(bench);
  throw UsageError("expected list, clear or info, got '" + sub + "'");
}

}  // namespace

int run_compile(int argc, char** argv) {
  try {
    return compile_main(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "flashserve compile: %s\n", e.what());
    return 2;
  }
}

int run_cache(int argc, char** argv) {
  try {
    return cache_main(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "flashserve cache: %s\n", e.what());
    return 2;
  }
}

}  // namespace fs_bench
