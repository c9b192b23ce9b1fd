// The headers a generated kernel source depends on, for the kernel cache key: a small #include
// scanner over our own include tree, so that editing a kernel header changes the key of exactly
// the entries that include it (directly or through other headers) and of nothing else.
//
// It over-approximates on purpose: an #include inside #if or a comment still counts (a spurious
// dependency costs one rebuild; a missed one would load a stale kernel). Headers it cannot find
// in the roots (the CUDA toolkit's, the C++ library's) are not hashed: the toolkit version is part
// of the key instead. A root with a version file (CUTLASS: cutlass/version.h) is keyed by that one
// file rather than by scanning its several hundred headers on every key computation.
#pragma once

#include <string>
#include <vector>

#include "flashserve/core/status.h"

namespace flashserve::runtime {

struct IncludeRoot {
  std::string dir;
  std::string version_file;  // relative to dir; empty: scan and hash every header found here
};

struct IncludeDeps {
  // Headers found in scanned roots, as "root-relative path" (e.g. flashserve/core/vec.cuh),
  // sorted: relative, so a build tree and an installed tree with equal headers share entries.
  std::vector<std::string> files;
  std::vector<std::string> versioned_roots;  // roots used through their version file
  std::string digest;                        // sha256 over every file's path and contents
};

// Scans `source` (the text of the generated .cu) and everything it includes from `roots`.
// Fails only when a header that was found cannot be read.
Status scan_includes(const std::string& source, const std::vector<IncludeRoot>& roots,
                     IncludeDeps* out);

// The targets of the #include directives of `text` (quoted and angled), in order.
std::vector<std::string> include_directives(const std::string& text);

}  // namespace flashserve::runtime
