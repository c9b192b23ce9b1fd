#include "runtime/include_scan.h"

#include <algorithm>
#include <map>
#include <set>

#include "runtime/file_util.h"
#include "runtime/sha256.h"

namespace flashserve::runtime {
namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t';
}

struct Scanner {
  const std::vector<IncludeRoot>& roots;
  std::map<std::string, std::string> found;  // root-relative path -> contents (scanned roots)
  std::set<size_t> versioned;                // indices of roots used through their version file
  Status status;

  // Resolves `target` included from the file at root-relative `from_rel` (empty: the generated
  // source) and recurses into headers of scanned roots.
  void visit(const std::string& target, bool quoted, const std::string& from_rel,
             size_t from_root) {
    std::vector<std::pair<size_t, std::string>> candidates;  // (root, root-relative path)
    if (quoted && !from_rel.empty()) {
      const std::string dir = dir_name(from_rel);
      candidates.emplace_back(from_root, normalize_path(dir.empty() ? target : dir + "/" + target));
    }
    for (size_t r = 0; r < roots.size(); ++r)
      candidates.emplace_back(r, normalize_path(target));
    for (const auto& [r, rel] : candidates) {
      if (rel.rfind("../", 0) == 0 || rel[0] == '/') continue;  // outside the root
      const std::string path = path_join(roots[r].dir, rel);
      if (!file_exists(path)) continue;
      if (!roots[r].version_file.empty()) {
        versioned.insert(r);
        return;
      }
      if (found.count(rel)) return;
      std::string text;
      if (!read_file(path, &text)) {
        if (status.ok()) status = Status(StatusCode::kInternal, "cannot read header " + path);
        return;
      }
      const std::vector<std::string> includes = include_directives(text);
      found.emplace(rel, std::move(text));
      for (const std::string& inc : includes)
        visit(inc.substr(1), inc[0] == '"', rel, r);
      return;
    }
  }
};

}  // namespace

std::vector<std::string> include_directives(const std::string& text) {
  // Returns each target prefixed by its opening delimiter ('"' or '<') so callers know which
  // search rule applies.
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    size_t i = pos;
    while (i < end && is_space(text[i]))
      ++i;
    if (i < end && text[i] == '#') {
      ++i;
      while (i < end && is_space(text[i]))
        ++i;
      if (text.compare(i, 7, "include") == 0) {
        i += 7;
        while (i < end && is_space(text[i]))
          ++i;
        if (i < end && (text[i] == '"' || text[i] == '<')) {
          const char close = text[i] == '"' ? '"' : '>';
          const size_t stop = text.find(close, i + 1);
          if (stop != std::string::npos && stop < end && stop > i + 1)
            out.push_back(text[i] + text.substr(i + 1, stop - i - 1));
        }
      }
    }
    pos = end + 1;
  }
  return out;
}

Status scan_includes(const std::string& source, const std::vector<IncludeRoot>& roots,
                     IncludeDeps* out) {
  Scanner s{roots, {}, {}, Status()};
  for (const std::string& inc : include_directives(source))
    s.visit(inc.substr(1), inc[0] == '"', "", 0);
  if (!s.status.ok()) return s.status;
  IncludeDeps deps;
  Sha256 h;
  for (const auto& [rel, text] : s.found) {  // std::map: sorted by path
    deps.files.push_back(rel);
    h.update(rel);
    h.update("\0", 1);
    h.update(std::to_string(text.size()));
    h.update("\0", 1);
    h.update(text);
  }
  for (size_t r : s.versioned) {
    std::string version;
    const std::string path = path_join(roots[r].dir, roots[r].version_file);
    if (!read_file(path, &version))
      return Status(StatusCode::kInternal, "cannot read version header " + path);
    deps.versioned_roots.push_back(roots[r].dir);
    h.update("versioned:");
    h.update(roots[r].version_file);
    h.update("\0", 1);
    h.update(version);
  }
  deps.digest = h.hex();
  *out = std::move(deps);
  return Status();
}

}  // namespace flashserve::runtime
