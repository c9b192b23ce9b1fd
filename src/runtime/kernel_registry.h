// The kernel registry: which compiled kernel serves a request.
//
// An op family (decode attention, prefill attention, ...) registers a KernelFamily: the fields of
// its specializations (q dtype, kv dtype, head dim, variant, layout, tile policy ...), a generator
// of the CUDA source of one specialization, and its table of specializations compiled into the
// library (prebuilt). A KernelSpec (the family and its field values, plus the device's compute
// capability) is then resolved once, on the host, outside graph capture:
//   - prebuilt for this device: used directly;
//   - otherwise: generated, taken from the on-disk cache or compiled into it (kernel_cache.h),
//     loaded (kernel_loader.h), and kept for the life of the process.
// Plans keep the resolved pointer; find() (a shared-lock hash lookup, < 1 us) serves code that
// has only the spec. Resolved kernels are never freed, so their pointers stay valid.
//
// Text form of a spec, written to the kernel log and read by `flashserve compile --from-log`:
//   decode q=bf16 kv=fp8_e4m3 hd=128
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "flashserve/core/status.h"
#include "runtime/kernel_cache.h"
#include "runtime/kernel_loader.h"

namespace flashserve::runtime {

constexpr int kMaxSpecFields = 6;

struct KernelSpec {
  int16_t family = -1;
  int16_t cc = 0;         // compute capability x 10 of the device it runs on (90); 0 = unset
  int16_t force_jit = 0;  // 1: ignore the prebuilt kernel (FLASHSERVE_FORCE_JIT; tests)
  int16_t reserved = 0;
  int32_t fields[kMaxSpecFields] = {};
  bool operator==(const KernelSpec& o) const;
};

struct KernelSpecHash {
  size_t operator()(const KernelSpec& s) const;
};

struct SpecField {
  std::string name;                 // "q"
  std::vector<std::string> values;  // names of the values 0, 1, ...; empty: a plain integer
  // An integer field that is 0 unless the text form gives it, and left out of the text form when
  // 0 (a field added to a family without changing the names of its existing specializations).
  bool optional = false;
};

struct KernelFamily {
  std::string op;  // "decode"
  std::vector<SpecField> fields;
  // OK when the field values name a specialization the family has; else the error names the field.
  std::function<Status(const KernelSpec&)> check;
  // The CUDA source of one specialization: it includes the family's kernel headers and either
  // explicitly instantiates each kernel template in `entries` once (the same template the prebuilt
  // build instantiates: the same code) or defines extern "C" kernels of those names. The
  // registry fills in `name`.
  std::function<KernelSource(const KernelSpec&)> generate;
  // Every specialization (the "all" preset).
  std::function<std::vector<KernelSpec>()> enumerate;
  // The kernel compiled into the library for `spec`, or null (family-defined pointer).
  std::function<const void*(const KernelSpec&)> prebuilt;
  // The generated source includes CUTLASS / CuTe: compiling it (or finding it in the cache, whose
  // key holds the CUTLASS version) needs JitConfig::cutlass_dir; without one, the error says so.
  bool needs_cutlass = false;
};

enum class KernelOrigin { kPrebuilt, kDiskCache, kCompiled };
const char* kernel_origin_name(KernelOrigin o);

struct ResolvedKernel {
  KernelSpec spec;
  std::string name;  // text form
  KernelOrigin origin = KernelOrigin::kPrebuilt;
  const void* prebuilt = nullptr;        // the family's prebuilt entry, or null
  std::unique_ptr<LoadedModule> module;  // otherwise: the loaded image, entries in order
  double compile_seconds = 0;            // when compiled (or as recorded in the cache)
  double load_seconds = 0;               // cache read + verify + load
};

struct CompileReport {
  std::string name;
  std::string path;
  bool compiled = false;  // false: it was already cached
  double seconds = 0;     // compiler time (this run's or the recorded one)
};

class KernelRegistry {
 public:
  KernelRegistry();
  // The process-wide registry (never destroyed: loaded kernels must outlive every static).
  static KernelRegistry& global();

  // Registers `family` (once per op name) and returns its id.
  int add_family(KernelFamily family);
  int family_id(const std::string& op) const;  // -1 when unknown
  int family_count() const;
  const KernelFamily& family(int id) const;
  std::vector<std::string> family_names() const;

  std::string describe(const KernelSpec& spec) const;  // "decode q=bf16 kv=bf16 hd=128"
  // Parses the text form; the error names the bad word.
  Status parse(const std::string& text, KernelSpec* spec) const;
  // The specs named by the kernel lines of a log (see kernel_log_line): lines that are not one
  // are skipped; each spec once, in order of first appearance.
  std::vector<KernelSpec> specs_in_log(const std::string& log_text) const;

  // Hot path: the resolved kernel of `spec` (spec.cc set) if resolve() made it, else null
  // (FLASHSERVE_FORCE_JIT applies as in resolve).
  const ResolvedKernel* find(const KernelSpec& spec) const;
  // Prebuilt, cached or compiled + loaded, for the device of compute capability spec.cc. The
  // first resolution of a spec in the process is logged (log level >= 1, FLASHSERVE_KERNEL_LOG).
  Status resolve(const KernelSpec& spec, const ResolvedKernel** out);
  // Like resolve() for a JIT kernel, but always from the disk cache (or compiler) into a fresh,
  // caller-owned object: what a new process pays for a cached kernel (the GPU timing test).
  Status load_fresh(const KernelSpec& spec, std::unique_ptr<ResolvedKernel>* out);
  // Ahead of time (`flashserve compile`): makes sure `spec` is in the disk cache for `archs`.
  // Needs no device.
  Status compile(const KernelSpec& spec, const std::vector<std::string>& archs, bool quiet,
                 CompileReport* report);

  // The command that builds `spec` ahead of time, for error messages.
  std::string build_command(const KernelSpec& spec, const std::vector<std::string>& archs) const;
  // The current device's compute capability x 10 (cached per device: plans call it every step).
  static Status current_device_cc(int* cc);
  // Whether the library's prebuilt kernels run on a device of compute capability cc.
  static bool prebuilt_runs_on(int cc);
  // The compile targets for a device of compute capability cc (FLASHSERVE_CUDA_ARCH_LIST wins).
  std::vector<std::string> targets_for(int cc) const;

  const KernelCache& cache() const { return *cache_; }
  // Tests and tools: replace the configuration (not while other threads resolve kernels).
  void set_config(const JitConfig& config);
  bool force_jit() const { return force_jit_.load(std::memory_order_relaxed); }
  void set_force_jit(bool on) { force_jit_.store(on, std::memory_order_relaxed); }

 private:
  struct Slot {
    std::mutex mutex;  // held while this spec is resolved (one compile per spec per process)
    std::atomic<const ResolvedKernel*> ready{nullptr};
    std::unique_ptr<ResolvedKernel> kernel;
  };
  Status check_spec(const KernelSpec& spec) const;
  // OK when the JIT has what `spec`'s family needs to build it (KernelFamily::needs_cutlass);
  // else the error names the kernel, the variable to set and (hint_command) the build command.
  Status check_jit_needs(const KernelSpec& spec, const std::vector<std::string>& archs,
                         bool hint_command) const;
  Status resolve_jit(const KernelSpec& spec, std::unique_ptr<ResolvedKernel>* out);
  void note_use(const ResolvedKernel& k) const;

  mutable std::shared_mutex mutex_;
  std::vector<std::unique_ptr<KernelFamily>> families_;  // stable addresses for family()
  std::unordered_map<KernelSpec, std::unique_ptr<Slot>, KernelSpecHash> slots_;
  std::unique_ptr<KernelCache> cache_;
  std::atomic<bool> force_jit_{false};
};

// "[flashserve] kernel decode q=bf16 kv=bf16 hd=128 sm_90a (prebuilt)": the line the registry
// logs on first use; specs_in_log() reads it back.
std::string kernel_log_line(const ResolvedKernel& k, const std::vector<std::string>& archs);

}  // namespace flashserve::runtime
