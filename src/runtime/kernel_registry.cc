#include "runtime/kernel_registry.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <sstream>

#include "runtime/build_config.h"
#include "runtime/jit_build_config.h"
#include "runtime/logging.h"

namespace flashserve::runtime {
namespace {

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string w;
  while (ss >> w)
    out.push_back(w);
  return out;
}

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v && v[0] != '\0' && std::string(v) != "0";
}

std::vector<std::string> prebuilt_archs() {
  return parse_arch_list(FLASHSERVE_CUDA_ARCHS, nullptr);
}

std::string join_archs(const std::vector<std::string>& archs) {
  std::string s;
  for (const std::string& a : archs)
    s += (s.empty() ? "" : ";") + a;
  return s;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

bool KernelSpec::operator==(const KernelSpec& o) const {
  if (family != o.family || cc != o.cc || force_jit != o.force_jit) return false;
  for (int i = 0; i < kMaxSpecFields; ++i)
    if (fields[i] != o.fields[i]) return false;
  return true;
}

size_t KernelSpecHash::operator()(const KernelSpec& s) const {
  uint64_t h = (uint64_t(uint16_t(s.family)) << 32) ^ (uint64_t(uint16_t(s.cc)) << 16) ^
               uint64_t(uint16_t(s.force_jit));
  for (int i = 0; i < kMaxSpecFields; ++i)
    h = (h ^ uint32_t(s.fields[i])) * 0x9e3779b97f4a7c15ull;
  return static_cast<size_t>(h ^ (h >> 29));
}

const char* kernel_origin_name(KernelOrigin o) {
  switch (o) {
    case KernelOrigin::kPrebuilt:
      return "prebuilt";
    case KernelOrigin::kDiskCache:
      return "cached";
    case KernelOrigin::kCompiled:
      return "compiled";
  }
  return "unknown";
}

KernelRegistry::KernelRegistry()
    : cache_(std::make_unique<KernelCache>(JitConfig::from_environment())),
      force_jit_(env_flag("FLASHSERVE_FORCE_JIT")) {}

KernelRegistry& KernelRegistry::global() {
  static KernelRegistry* r = new KernelRegistry();
  return *r;
}

int KernelRegistry::add_family(KernelFamily family) {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  for (size_t i = 0; i < families_.size(); ++i)
    if (families_[i]->op == family.op) return static_cast<int>(i);
  families_.push_back(std::make_unique<KernelFamily>(std::move(family)));
  return static_cast<int>(families_.size() - 1);
}

int KernelRegistry::family_id(const std::string& op) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  for (size_t i = 0; i < families_.size(); ++i)
    if (families_[i]->op == op) return static_cast<int>(i);
  return -1;
}

int KernelRegistry::family_count() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return static_cast<int>(families_.size());
}

const KernelFamily& KernelRegistry::family(int id) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return *families_.at(static_cast<size_t>(id));
}

std::vector<std::string> KernelRegistry::family_names() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  std::vector<std::string> out;
  for (const auto& f : families_)
    out.push_back(f->op);
  return out;
}

std::string KernelRegistry::describe(const KernelSpec& spec) const {
  if (spec.family < 0 || spec.family >= family_count()) return "<unknown kernel family>";
  const KernelFamily& f = family(spec.family);
  std::string s = f.op;
  for (size_t i = 0; i < f.fields.size() && i < size_t(kMaxSpecFields); ++i) {
    const SpecField& field = f.fields[i];
    const int v = spec.fields[i];
    if (field.optional && v == 0) continue;
    s += " " + field.name + "=";
    s += field.values.empty()                                    ? std::to_string(v)
         : (v >= 0 && v < static_cast<int>(field.values.size())) ? field.values[v]
                                                                 : "?" + std::to_string(v);
  }
  return s;
}

Status KernelRegistry::parse(const std::string& text, KernelSpec* out) const {
  const std::vector<std::string> w = words(text);
  auto bad = [&](const std::string& what) {
    return Status(StatusCode::kInvalidArgument, "kernel spec '" + text + "': " + what);
  };
  if (w.empty()) return bad("expected '<op> field=value ...'");
  const int id = family_id(w[0]);
  if (id < 0) {
    std::string known;
    for (const std::string& n : family_names())
      known += (known.empty() ? "" : ", ") + n;
    return bad("unknown op '" + w[0] + "' (known: " + known + ")");
  }
  const KernelFamily& f = family(id);
  KernelSpec spec;
  spec.family = static_cast<int16_t>(id);
  std::vector<bool> seen(f.fields.size(), false);
  for (size_t i = 1; i < w.size(); ++i) {
    const size_t eq = w[i].find('=');
    if (eq == std::string::npos) return bad("expected field=value, got '" + w[i] + "'");
    const std::string name = w[i].substr(0, eq), value = w[i].substr(eq + 1);
    size_t k = 0;
    while (k < f.fields.size() && f.fields[k].name != name)
      ++k;
    if (k == f.fields.size()) return bad("unknown field '" + name + "' of " + f.op);
    const SpecField& field = f.fields[k];
    if (field.values.empty()) {
      char* end = nullptr;
      const long v = std::strtol(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0')
        return bad(name + ": expected an integer, got '" + value + "'");
      spec.fields[k] = static_cast<int32_t>(v);
    } else {
      size_t j = 0;
      while (j < field.values.size() && field.values[j] != value)
        ++j;
      if (j == field.values.size()) {
        std::string allowed;
        for (const std::string& v : field.values)
          allowed += (allowed.empty() ? "" : ", ") + v;
        return bad(name + ": expected one of " + allowed + ", got '" + value + "'");
      }
      spec.fields[k] = static_cast<int32_t>(j);
    }
    seen[k] = true;
  }
  for (size_t k = 0; k < f.fields.size(); ++k)
    if (!seen[k] && !f.fields[k].optional) return bad("missing field '" + f.fields[k].name + "'");
  Status st = f.check ? f.check(spec) : Status();
  if (!st.ok()) return bad(st.message());
  *out = spec;
  return Status();
}

std::vector<KernelSpec> KernelRegistry::specs_in_log(const std::string& log_text) const {
  std::vector<KernelSpec> out;
  std::stringstream ss(log_text);
  std::string line;
  const std::string prefix = "[flashserve] kernel ";
  while (std::getline(ss, line)) {
    const size_t start = line.find_first_not_of(" \t");
    if (start == std::string::npos || line[start] == '#') continue;
    line = line.substr(start);
    if (line.rfind(prefix, 0) == 0) {
      line = line.substr(prefix.size());
    } else if (line.rfind("[flashserve]", 0) == 0) {
      continue;  // another log line
    }
    // The spec is the op and its field=value words; the arch and origin that follow are not.
    std::string text;
    for (const std::string& w : words(line)) {
      if (!text.empty() && w.find('=') == std::string::npos) break;
      text += (text.empty() ? "" : " ") + w;
    }
    KernelSpec spec;
    if (!parse(text, &spec).ok()) continue;
    bool dup = false;
    for (const KernelSpec& s : out)
      dup |= s == spec;
    if (!dup) out.push_back(spec);
  }
  return out;
}

Status KernelRegistry::check_spec(const KernelSpec& spec) const {
  if (spec.family < 0 || spec.family >= family_count())
    return Status(StatusCode::kInternal, "kernel registry: unknown family id");
  const KernelFamily& f = family(spec.family);
  Status st = f.check ? f.check(spec) : Status();
  if (!st.ok()) return Status(st.code(), "kernel " + describe(spec) + ": " + st.message());
  return Status();
}

Status KernelRegistry::check_jit_needs(const KernelSpec& spec,
                                       const std::vector<std::string>& archs,
                                       bool hint_command) const {
  if (!family(spec.family).needs_cutlass || !cache_->config().cutlass_dir.empty()) return Status();
  std::string msg = "compiling kernel " + describe(spec) + " " + arch_tag(archs) +
                    " needs the CUTLASS / CuTe headers, and none were found: set "
                    "FLASHSERVE_CUTLASS_DIR to the include directory that holds cute/ and "
                    "cutlass/ (this library was built with '" +
                    std::string(FLASHSERVE_JIT_CUTLASS_DIR) + "')";
  if (hint_command) msg += ", or build it where they are: " + build_command(spec, archs);
  return Status(StatusCode::kUnsupported, msg);
}

const ResolvedKernel* KernelRegistry::find(const KernelSpec& spec) const {
  if (!spec.force_jit && force_jit()) {
    KernelSpec forced = spec;
    forced.force_jit = 1;
    return find(forced);
  }
  std::shared_lock<std::shared_mutex> lock(mutex_);
  const auto it = slots_.find(spec);
  return it == slots_.end() ? nullptr : it->second->ready.load(std::memory_order_acquire);
}

Status KernelRegistry::current_device_cc(int* cc) {
  static std::atomic<int> cached[LoadedKernel::kMaxDevices] = {};
  int device = 0;
  const cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return Status(StatusCode::kNoDevice, std::string("no CUDA device: ") + cudaGetErrorString(err));
  }
  const bool cacheable = device >= 0 && device < LoadedKernel::kMaxDevices;
  if (cacheable && (*cc = cached[device].load(std::memory_order_relaxed)) > 0) return Status();
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    cudaGetLastError();
    return Status(StatusCode::kCudaError,
                  "cannot query the compute capability of device " + std::to_string(device));
  }
  *cc = major * 10 + minor;
  if (cacheable) cached[device].store(*cc, std::memory_order_relaxed);
  return Status();
}

bool KernelRegistry::prebuilt_runs_on(int cc) {
  for (const std::string& a : prebuilt_archs()) {
    const bool specific = !a.empty() && (a.back() == 'a' || a.back() == 'f');
    const int built = std::atoi(a.c_str());
    // Architecture-specific code runs on exactly that architecture; plain SASS on later minor
    // versions of the same major one.
    if (specific ? built == cc : (built / 10 == cc / 10 && built <= cc)) return true;
  }
  return false;
}

std::vector<std::string> KernelRegistry::targets_for(int cc) const {
  const std::vector<std::string>& forced = cache_->config().archs;
  return forced.empty() ? archs_for_device(cc) : forced;
}

std::string KernelRegistry::build_command(const KernelSpec& spec,
                                          const std::vector<std::string>& archs) const {
  return "flashserve compile --spec '" + describe(spec) + "' --arch '" + join_archs(archs) + "'";
}

Status KernelRegistry::resolve(const KernelSpec& request, const ResolvedKernel** out) {
  KernelSpec spec = request;
  if (force_jit()) spec.force_jit = 1;
  if (const ResolvedKernel* k = find(spec)) {
    *out = k;
    return Status();
  }
  if (spec.cc <= 0)
    return Status(StatusCode::kInternal, "kernel registry: spec without a compute capability");
  Status st = check_spec(spec);
  if (!st.ok()) return st;
  Slot* slot = nullptr;
  {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    auto& s = slots_[spec];
    if (!s) s = std::make_unique<Slot>();
    slot = s.get();
  }
  std::lock_guard<std::mutex> guard(slot->mutex);
  if (const ResolvedKernel* k = slot->ready.load(std::memory_order_acquire)) {
    *out = k;
    return Status();
  }
  std::unique_ptr<ResolvedKernel> k;
  const KernelFamily& f = family(spec.family);
  const void* pre =
      !spec.force_jit && prebuilt_runs_on(spec.cc) && f.prebuilt ? f.prebuilt(spec) : nullptr;
  if (pre) {
    k = std::make_unique<ResolvedKernel>();
    k->spec = spec;
    k->name = describe(spec);
    k->origin = KernelOrigin::kPrebuilt;
    k->prebuilt = pre;
  } else {
    st = resolve_jit(spec, &k);
    if (!st.ok()) return st;  // the slot stays empty: a later call tries again
  }
  note_use(*k);
  slot->kernel = std::move(k);
  slot->ready.store(slot->kernel.get(), std::memory_order_release);
  *out = slot->kernel.get();
  return Status();
}

Status KernelRegistry::load_fresh(const KernelSpec& request, std::unique_ptr<ResolvedKernel>* out) {
  KernelSpec spec = request;
  spec.force_jit = 1;
  Status st = check_spec(spec);
  if (!st.ok()) return st;
  return resolve_jit(spec, out);
}

Status KernelRegistry::resolve_jit(const KernelSpec& spec, std::unique_ptr<ResolvedKernel>* out) {
  const KernelFamily& f = family(spec.family);
  const std::vector<std::string> archs = targets_for(spec.cc);
  Status st = check_jit_needs(spec, archs, true);
  if (!st.ok()) return st;
  KernelSource src = f.generate(spec);
  src.name = describe(spec);
  EnsureOptions options;
  options.build_command = build_command(spec, archs);
  const auto t0 = std::chrono::steady_clock::now();
  EnsureResult r;
  st = cache_->ensure(src, archs, options, &r);
  if (!st.ok()) return st;
  auto k = std::make_unique<ResolvedKernel>();
  k->spec = spec;
  k->name = src.name;
  k->origin = r.compiled ? KernelOrigin::kCompiled : KernelOrigin::kDiskCache;
  k->compile_seconds = r.compile_seconds;
  st = LoadedModule::load(r.image, src.entries, &k->module);
  if (!st.ok()) {
    std::string hint;
    if (st.message().find("no kernel image") != std::string::npos ||
        st.message().find("NO_BINARY") != std::string::npos) {
      hint = " (compiled for " + arch_tag(archs) + "; check FLASHSERVE_CUDA_ARCH_LIST)";
    }
    return Status(st.code(), "kernel " + src.name + ": " + st.message() + hint);
  }
  k->load_seconds = seconds_since(t0) - (r.compiled ? r.compile_seconds : 0.0);
  *out = std::move(k);
  return Status();
}

Status KernelRegistry::compile(const KernelSpec& spec, const std::vector<std::string>& archs,
                               bool quiet, CompileReport* report) {
  Status st = check_spec(spec);
  if (!st.ok()) return st;
  if (archs.empty()) return Status(StatusCode::kInvalidArgument, "compile: no target architecture");
  st = check_jit_needs(spec, archs, false);
  if (!st.ok()) return st;
  KernelSource src = family(spec.family).generate(spec);
  src.name = describe(spec);
  EnsureOptions options;
  options.quiet = quiet;
  options.explicit_request = true;
  EnsureResult r;
  st = cache_->ensure(src, archs, options, &r);
  if (!st.ok()) return st;
  report->name = src.name;
  report->path = r.path;
  report->compiled = r.compiled;
  report->seconds = r.compile_seconds;
  return Status();
}

void KernelRegistry::set_config(const JitConfig& config) {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  cache_ = std::make_unique<KernelCache>(config);
}

std::string kernel_log_line(const ResolvedKernel& k, const std::vector<std::string>& archs) {
  return "[flashserve] kernel " + k.name + " " + arch_tag(archs) + " (" +
         kernel_origin_name(k.origin) + ")\n";
}

void KernelRegistry::note_use(const ResolvedKernel& k) const {
  const std::vector<std::string> archs =
      k.origin == KernelOrigin::kPrebuilt ? prebuilt_archs() : targets_for(k.spec.cc);
  log_line(1, kernel_log_line(k, archs));
  // FLASHSERVE_KERNEL_LOG: the specs alone, one per line, appended (O_APPEND keeps the lines of
  // concurrent processes whole), for `flashserve compile --from-log`.
  const char* path = std::getenv("FLASHSERVE_KERNEL_LOG");
  if (path && path[0] != '\0') {
    const int fd = ::open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      const std::string line = k.name + "\n";
      const ssize_t n = ::write(fd, line.data(), line.size());
      (void)n;
      ::close(fd);
    }
  }
}

}  // namespace flashserve::runtime
