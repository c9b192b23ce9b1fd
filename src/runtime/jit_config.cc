#include "runtime/jit_config.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <sstream>

#include "runtime/build_config.h"
#include "runtime/file_util.h"
#include "runtime/jit_build_config.h"

namespace flashserve::runtime {
namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

bool env_flag(const char* name) {
  const std::string v = env(name);
  return !v.empty() && v != "0" && v != "false" && v != "off";
}

std::vector<std::string> split_words(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string w;
  while (ss >> w)
    out.push_back(w);
  return out;
}

bool has_flashserve_headers(const std::string& dir) {
  return !dir.empty() && file_exists(path_join(dir, "flashserve/runtime.h"));
}

bool has_cutlass(const std::string& dir) {
  return !dir.empty() && file_exists(path_join(dir, "cutlass/version.h"));
}

// Installed: <prefix>/lib/libflashserve.so -> <prefix>/include; Debian multiarch layouts
// (lib/x86_64-linux-gnu) one level deeper.
std::string headers_next_to_library() {
  const std::string lib = library_path();
  if (lib.empty()) return "";
  const std::string dir = dir_name(lib);
  for (const char* rel : {"../include", "../../include", "include"}) {
    const std::string cand = normalize_path(path_join(dir, rel));
    if (has_flashserve_headers(cand)) return cand;
  }
  return "";
}

std::string find_on_path(const std::string& name) {
  std::stringstream ss(env("PATH"));
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    const std::string cand = path_join(dir.empty() ? "." : dir, name);
    if (is_executable(cand)) return cand;
  }
  return "";
}

std::string find_nvcc(std::vector<std::string>* problems) {
  const std::string forced = env("FLASHSERVE_NVCC");
  if (!forced.empty()) {
    if (is_executable(forced)) return forced;
    problems->push_back("FLASHSERVE_NVCC=" + forced + " is not an executable; ignored");
  }
  for (const char* var : {"CUDA_HOME", "CUDA_PATH"}) {
    const std::string root = env(var);
    if (!root.empty() && is_executable(path_join(root, "bin/nvcc")))
      return path_join(root, "bin/nvcc");
  }
  if (is_executable(FLASHSERVE_JIT_NVCC)) return FLASHSERVE_JIT_NVCC;
  return find_on_path("nvcc");
}

}  // namespace

std::string library_path() {
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(&library_path), &info) == 0 || !info.dli_fname) return "";
  char resolved[4096];
  if (::realpath(info.dli_fname, resolved)) return resolved;
  return info.dli_fname;
}

std::string prebuilt_preset() {
  return FLASHSERVE_PREBUILT_PRESET;
}

std::string normalize_arch(const std::string& arch) {
  std::string a = arch;
  for (const char* prefix : {"sm_", "compute_", "sm", "compute"}) {
    if (a.rfind(prefix, 0) == 0) {
      a = a.substr(std::string(prefix).size());
      break;
    }
  }
  const size_t dot = a.find('.');
  if (dot != std::string::npos && dot > 0) a = a.substr(0, dot) + a.substr(dot + 1);
  size_t digits = 0;
  while (digits < a.size() && std::isdigit(static_cast<unsigned char>(a[digits])))
    ++digits;
  if (digits < 2 || digits > 3) return "";
  const std::string suffix = a.substr(digits);
  if (!suffix.empty() && suffix != "a" && suffix != "f") return "";
  return a;
}

std::vector<std::string> parse_arch_list(const std::string& list, std::string* error) {
  std::string text = list;
  for (char& c : text)
    if (c == ';' || c == ',') c = ' ';
  std::vector<std::string> out;
  for (const std::string& w : split_words(text)) {
    const std::string a = normalize_arch(w);
    if (a.empty()) {
      if (error && error->empty()) *error = "'" + w + "' is not a CUDA architecture (e.g. 90a)";
      continue;
    }
    bool dup = false;
    for (const std::string& o : out)
      dup |= o == a;
    if (!dup) out.push_back(a);
  }
  return out;
}

std::vector<std::string> archs_for_device(int cc) {
  // Architecture-specific ("a") targets exist from Hopper on; older parts take the plain one.
  return {std::to_string(cc) + (cc >= 90 ? "a" : "")};
}

std::string arch_tag(const std::vector<std::string>& archs) {
  std::string s;
  for (const std::string& a : archs)
    s += (s.empty() ? "sm_" : "+sm_") + a;
  return s.empty() ? "sm_unknown" : s;
}

std::string cache_dir_for(const JitConfig& config, const std::vector<std::string>& archs) {
  return path_join(path_join(config.cache_root, config.library_version), arch_tag(archs));
}

JitConfig JitConfig::from_environment() {
  JitConfig c;
  c.library_version = FLASHSERVE_VERSION;
  c.toolkit_version = FLASHSERVE_CUDA_VERSION;
  c.cache_root = env("FLASHSERVE_CACHE_DIR");
  if (c.cache_root.empty()) {
    const std::string xdg = env("XDG_CACHE_HOME"), home = env("HOME");
    if (!xdg.empty()) {
      c.cache_root = path_join(xdg, "flashserve");
    } else if (!home.empty()) {
      c.cache_root = path_join(home, ".cache/flashserve");
    } else {
      c.cache_root = "/tmp/flashserve-cache-" + std::to_string(::getuid());
    }
  }
  const std::string inc = env("FLASHSERVE_INCLUDE_DIR");
  if (!inc.empty() && !has_flashserve_headers(inc))
    c.problems.push_back("FLASHSERVE_INCLUDE_DIR=" + inc + " has no flashserve/runtime.h; ignored");
  if (has_flashserve_headers(inc)) {
    c.include_dir = inc;
  } else {
    c.include_dir = headers_next_to_library();
    if (c.include_dir.empty() && has_flashserve_headers(FLASHSERVE_JIT_SOURCE_INCLUDE_DIR))
      c.include_dir = FLASHSERVE_JIT_SOURCE_INCLUDE_DIR;
  }
  const std::string cut = env("FLASHSERVE_CUTLASS_DIR");
  if (!cut.empty() && !has_cutlass(cut))
    c.problems.push_back("FLASHSERVE_CUTLASS_DIR=" + cut + " has no cutlass/version.h; ignored");
  if (has_cutlass(cut)) {
    c.cutlass_dir = cut;
  } else if (has_cutlass(FLASHSERVE_JIT_CUTLASS_DIR)) {
    c.cutlass_dir = FLASHSERVE_JIT_CUTLASS_DIR;
  }
  c.nvcc = find_nvcc(&c.problems);
  std::string error;
  c.archs = parse_arch_list(env("FLASHSERVE_CUDA_ARCH_LIST"), &error);
  if (!error.empty()) c.problems.push_back("FLASHSERVE_CUDA_ARCH_LIST: " + error);
  c.verbose = env_flag("FLASHSERVE_JIT_VERBOSE");
  c.debug = env_flag("FLASHSERVE_JIT_DEBUG");
  c.disabled = env_flag("FLASHSERVE_DISABLE_JIT");
  for (const std::string& f : split_words(FLASHSERVE_JIT_FLAGS)) {
    // Debug builds: device debug info instead of line info, and asserts back on.
    if (c.debug && (f == "-DNDEBUG" || f == "-lineinfo")) continue;
    c.flags.push_back(f);
  }
  if (c.debug) c.flags.push_back("-G");
  return c;
}

std::vector<IncludeRoot> JitConfig::include_roots() const {
  std::vector<IncludeRoot> roots;
  if (!include_dir.empty()) roots.push_back({include_dir, ""});
  if (!cutlass_dir.empty() && cutlass_dir != include_dir)
    roots.push_back({cutlass_dir, "cutlass/version.h"});
  return roots;
}

}  // namespace flashserve::runtime
