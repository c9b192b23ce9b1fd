// The on-disk kernel cache: generated source -> compiled image, compiled at most once per machine.
//
// An entry's key is the SHA-256 of the generated source, the contents of every header it includes
// from our tree (include_scan.h; CUTLASS by its version), the compiler flags, the targets, the
// toolkit and the library version. Its file is <dir>/<name slug>-<key prefix>.fsk
// (kernel_artifact.h), with <dir> = <root>/<library version>/<arch tag>.
//
// ensure(): a valid file is read and returned. Otherwise the entry's file lock is taken (waiting,
// with a line on stderr, while another process or thread holds it), the file is checked again
// (the holder probably just wrote it), and only then is the compiler run, into temporary names
// that are renamed over the entry atomically. A truncated or corrupt file is reported and rebuilt.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "flashserve/core/status.h"
#include "runtime/include_scan.h"
#include "runtime/jit_config.h"
#include "runtime/kernel_artifact.h"

namespace flashserve::runtime {

struct KernelSource {
  std::string name;  // "decode q=bf16 kv=fp8_e4m3 hd=64": progress lines, file names, errors
  std::string code;  // the .cu text
  // Its kernels: extern "C" names, or names of kernel templates it instantiates once each.
  std::vector<std::string> entries;
};

struct CacheEntry {
  std::string key;  // sha256 hex
  std::string dir;
  std::string path;
  std::vector<std::string> archs;
  IncludeDeps deps;
};

struct EnsureOptions {
  bool quiet = false;  // no progress lines (`flashserve compile` draws a progress bar instead)
  // Shown when the entry is missing and compiling is disabled (FLASHSERVE_DISABLE_JIT): the
  // command that builds it ahead of time.
  std::string build_command;
  // Compile even when FLASHSERVE_DISABLE_JIT is set: an explicit request (`flashserve compile`).
  bool explicit_request = false;
};

struct EnsureResult {
  std::string image;  // the compiled image (fatbin)
  std::string path;
  bool compiled = false;  // this call ran the compiler
  bool waited = false;    // this call waited for another holder of the entry's lock
  ArtifactState found = ArtifactState::kMissing;  // the file's state when first read
  double compile_seconds = 0;                     // compiler wall time (this call's or recorded)
};

class KernelCache {
 public:
  explicit KernelCache(JitConfig config);
  const JitConfig& config() const { return config_; }

  // The key and path of `src` compiled for `archs` (nothing is read but headers).
  Status locate(const KernelSource& src, const std::vector<std::string>& archs,
                CacheEntry* entry) const;
  // The image of `src` for `archs`, compiling it when it is not cached (see the file comment).
  Status ensure(const KernelSource& src, const std::vector<std::string>& archs,
                const EnsureOptions& options, EnsureResult* result) const;
  // Compiler runs made through this object (tests count them).
  int compiles() const { return compiles_.load(); }

 private:
  Status compile_into(const KernelSource& src, const CacheEntry& entry,
                      const EnsureOptions& options, EnsureResult* result) const;
  JitConfig config_;
  mutable std::atomic<int> compiles_{0};
};

// "decode q=bf16 kv=fp8_e4m3 hd=64" -> "decode_q-bf16_kv-fp8_e4m3_hd-64" (file-name safe).
std::string entry_slug(const std::string& name);

// One line on stderr, "[flashserve] <text>", whole even when several threads print.
void progress_line(const std::string& text);

// `flashserve cache list`: every entry file under `dir` (recursively), verified.
struct CacheListing {
  std::string path;
  ArtifactState state = ArtifactState::kMissing;
  ArtifactInfo info;
  int64_t bytes = 0;
  int64_t mtime = 0;
};
std::vector<CacheListing> list_cache(const std::string& dir);
// `flashserve cache clear`: removes `dir` and everything in it; returns the files removed.
int clear_cache(const std::string& dir, int64_t* bytes);

}  // namespace flashserve::runtime
