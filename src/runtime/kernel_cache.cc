#include "runtime/kernel_cache.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <sstream>
#include <thread>

#include "runtime/file_lock.h"
#include "runtime/file_util.h"
#include "runtime/sha256.h"
#include "runtime/subprocess.h"

namespace flashserve::runtime {
namespace {

constexpr const char* kEntrySuffix = ".fsk";
constexpr int kKeyChars = 16;  // of the key in the file name (the full key is in the file)

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string format_seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f s", s);
  return buf;
}

std::string last_lines(const std::string& text, int n) {
  size_t pos = text.size();
  while (pos > 0 && (text[pos - 1] == '\n' || text[pos - 1] == ' '))
    --pos;
  size_t start = pos;
  for (int i = 0; i < n && start > 0; ++i) {
    start = text.rfind('\n', start - 1);
    if (start == std::string::npos) {
      start = 0;
      break;
    }
  }
  return text.substr(start == 0 ? 0 : start + 1, pos - (start == 0 ? 0 : start + 1));
}

// Temporary files of the entry: a crashed or killed compile leaves them behind; the next holder
// of the entry's lock removes them (nobody else can be writing them while it holds the lock).
void remove_temporaries(const CacheEntry& e) {
  const std::string base = e.path.substr(e.dir.size() + 1) + ".tmp.";
  for (const std::string& name : list_dir(e.dir)) {
    if (name.rfind(base, 0) == 0) ::unlink(path_join(e.dir, name).c_str());
  }
}

// The generated source, under a stable name: the image's line info names it (profilers show it),
// and a name without a pid keeps the image the same from one compile to the next. Only the holder
// of the entry's lock writes it.
std::string source_name(const CacheEntry& e) {
  return e.path.substr(0, e.path.size() - std::char_traits<char>::length(kEntrySuffix)) + ".cu";
}

std::string temp_name(const CacheEntry& e, const char* suffix) {
  static std::atomic<int> counter{0};
  return e.path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++) + suffix;
}

}  // namespace

std::string entry_slug(const std::string& name) {
  std::string s;
  for (char c : name) {
    if (c == ' ') {
      s += '_';
    } else if (c == '=') {
      s += '-';
    } else if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') {
      s += c;
    } else {
      s += '+';
    }
  }
  return s.substr(0, 96);
}

void progress_line(const std::string& text) {
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  std::fprintf(stderr, "[flashserve] %s\n", text.c_str());
  std::fflush(stderr);
}

KernelCache::KernelCache(JitConfig config) : config_(std::move(config)) {}

Status KernelCache::locate(const KernelSource& src, const std::vector<std::string>& archs,
                           CacheEntry* entry) const {
  if (archs.empty())
    return Status(StatusCode::kInternal, "kernel cache: no target architecture for " + src.name);
  CacheEntry e;
  e.archs = archs;
  Status st = scan_includes(src.code, config_.include_roots(), &e.deps);
  if (!st.ok()) return Status(st.code(), "kernel cache: " + src.name + ": " + st.message());
  std::ostringstream key;
  key << "flashserve kernel key v1\nlibrary " << config_.library_version << "\ntoolkit "
      << config_.toolkit_version << "\ntargets";
  for (const std::string& a : archs)
    key << ' ' << a;
  key << "\nflags";
  for (const std::string& f : config_.flags)
    key << ' ' << f;
  key << "\nentries";
  for (const std::string& n : src.entries)
    key << ' ' << n;
  key << "\nheaders " << e.deps.digest << "\nsource\n" << src.code;
  e.key = sha256_hex(key.str());
  e.dir = cache_dir_for(config_, archs);
  e.path = path_join(e.dir, entry_slug(src.name) + "-" + e.key.substr(0, kKeyChars) + kEntrySuffix);
  *entry = std::move(e);
  return Status();
}

Status KernelCache::ensure(const KernelSource& src, const std::vector<std::string>& archs,
                           const EnsureOptions& options, EnsureResult* result) const {
  EnsureResult r;
  CacheEntry entry;
  Status st = locate(src, archs, &entry);
  if (!st.ok()) return st;
  r.path = entry.path;
  const std::string what = src.name + " " + arch_tag(archs);
  ArtifactInfo info;
  r.found = read_artifact(entry.path, &info, &r.image);
  // A file under this name with another key (a 64-bit prefix collision) is as good as corrupt.
  if (r.found == ArtifactState::kOk && info.key != entry.key) r.found = ArtifactState::kCorrupt;
  if (r.found == ArtifactState::kOk) {
    r.compile_seconds = info.compile_seconds;
    *result = std::move(r);
    return Status();
  }
  if (r.found != ArtifactState::kMissing && !options.quiet) {
    progress_line("kernel cache: " + entry.path + ": " + artifact_state_name(r.found) +
                  "; rebuilding");
  }
  if (config_.disabled && !options.explicit_request) {
    std::string msg = "kernel " + what + " is not prebuilt into this library and not in the ";
    msg += "kernel cache (" + entry.dir + "), and FLASHSERVE_DISABLE_JIT is set, so it is not ";
    msg += "compiled";
    if (!options.build_command.empty())
      msg += "; build it ahead of time with: " + options.build_command;
    return Status(StatusCode::kUnsupported, msg);
  }
  if (config_.nvcc.empty()) {
    std::string msg = "kernel " + what + " must be compiled, but no CUDA compiler was found ";
    msg += "(set FLASHSERVE_NVCC or CUDA_HOME)";
    if (!options.build_command.empty())
      msg += ", or build it on a machine with the toolkit: " + options.build_command;
    return Status(StatusCode::kUnsupported, msg);
  }
  st = make_dirs(entry.dir);
  if (!st.ok())
    return Status(st.code(), "kernel cache: " + st.message() + " (set FLASHSERVE_CACHE_DIR)");

  FileLock lock;
  st = lock.open(entry.path + ".lock");
  if (!st.ok()) return Status(st.code(), "kernel cache: " + st.message());
  if (!lock.try_lock()) {
    r.waited = true;
    if (!options.quiet) {
      progress_line("waiting for " + what + ": another process is compiling it (lock " +
                    lock.path() + ")");
    }
    // Poll instead of blocking so that a long wait keeps saying so; a holder that dies releases
    // the lock at once (file_lock.h), so this never hangs on a dead process.
    const auto t0 = std::chrono::steady_clock::now();
    double next_note = 30;
    while (!lock.try_lock()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      if (seconds_since(t0) >= next_note) {
        if (!options.quiet) {
          progress_line("still waiting for " + what + " after " + format_seconds(next_note) +
                        " (lock " + lock.path() + ")");
        }
        next_note += 30;
      }
    }
  }
  // The previous holder has most likely written it.
  const ArtifactState again = read_artifact(entry.path, &info, &r.image);
  if (again == ArtifactState::kOk && info.key == entry.key) {
    r.compile_seconds = info.compile_seconds;
    *result = std::move(r);
    return Status();
  }
  st = compile_into(src, entry, options, &r);
  if (!st.ok()) return st;
  *result = std::move(r);
  return Status();
}

Status KernelCache::compile_into(const KernelSource& src, const CacheEntry& entry,
                                 const EnsureOptions& options, EnsureResult* r) const {
  remove_temporaries(entry);
  const std::string what = src.name + " " + arch_tag(entry.archs);
  const std::string cu = source_name(entry);
  const std::string bin = temp_name(entry, ".fatbin");
  Status st = write_file_atomic(cu, temp_name(entry, ".cu"), src.code);
  if (!st.ok()) return Status(st.code(), "kernel cache: " + st.message());
  std::vector<std::string> cmd = {config_.nvcc};
  cmd.insert(cmd.end(), config_.flags.begin(), config_.flags.end());
  for (const std::string& a : entry.archs)
    cmd.push_back("-gencode=arch=compute_" + a + ",code=sm_" + a);
  for (const IncludeRoot& root : config_.include_roots()) {
    // Versioned roots are third-party (CUTLASS): system headers, as in the library build.
    if (root.version_file.empty()) {
      cmd.push_back("-I" + root.dir);
    } else {
      cmd.insert(cmd.end(), {"-isystem", root.dir});
    }
  }
  cmd.insert(cmd.end(), {"-fatbin", "-o", bin, cu});

  if (!options.quiet) progress_line("compiling " + what + " …");
  if (config_.verbose) progress_line(shell_quote(cmd));
  const auto t0 = std::chrono::steady_clock::now();
  ProcessResult pr;
  st = run_process(cmd, &pr);
  const double seconds = seconds_since(t0);
  ++compiles_;
  std::string image;
  const bool built = st.ok() && pr.exit_code == 0 && read_file(bin, &image) && !image.empty();
  ::unlink(cu.c_str());
  ::unlink(bin.c_str());
  if (config_.verbose && !pr.output.empty()) std::fprintf(stderr, "%s", pr.output.c_str());
  if (!st.ok()) return Status(st.code(), "kernel cache: compiling " + what + ": " + st.message());
  if (!built) {
    const std::string log = entry.path + ".log";
    write_file_atomic(log, log + ".part", shell_quote(cmd) + "\n" + pr.output);
    if (!options.quiet) {
      progress_line("compiling " + what + " … failed (exit " + std::to_string(pr.exit_code) +
                    ") after " + format_seconds(seconds) + "; the compiler's output is in " + log);
    }
    return Status(StatusCode::kInternal, "compiling kernel " + what + " failed (exit " +
                                             std::to_string(pr.exit_code) + "); " + log + ":\n" +
                                             last_lines(pr.output, 20));
  }
  ArtifactInfo info;
  info.name = src.name;
  info.key = entry.key;
  info.arch = arch_tag(entry.archs);
  info.entries = src.entries;
  info.deps = entry.deps.files;
  info.library_version = config_.library_version;
  info.compile_seconds = seconds;
  info.created = static_cast<int64_t>(std::time(nullptr));
  st = write_file_atomic(entry.path, temp_name(entry, ""), encode_artifact(info, image));
  if (!st.ok()) return Status(st.code(), "kernel cache: " + st.message());
  if (!options.quiet) progress_line("compiling " + what + " … done in " + format_seconds(seconds));
  r->image = std::move(image);
  r->compiled = true;
  r->compile_seconds = seconds;
  return Status();
}

std::vector<CacheListing> list_cache(const std::string& dir) {
  std::vector<CacheListing> out;
  std::vector<std::string> names = list_dir(dir);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    const std::string path = path_join(dir, name);
    if (is_directory(path)) {
      for (CacheListing& l : list_cache(path))
        out.push_back(std::move(l));
      continue;
    }
    const size_t n = name.size(), s = std::char_traits<char>::length(kEntrySuffix);
    if (n <= s || name.compare(n - s, s, kEntrySuffix) != 0) continue;
    CacheListing l;
    l.path = path;
    l.state = read_artifact(path, &l.info, nullptr);
    l.bytes = file_size(path);
    l.mtime = file_mtime(path);
    out.push_back(std::move(l));
  }
  return out;
}

int clear_cache(const std::string& dir, int64_t* bytes) {
  return remove_tree(dir, bytes);
}

}  // namespace flashserve::runtime
