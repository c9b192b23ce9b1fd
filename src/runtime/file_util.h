// Small POSIX file helpers of the kernel cache (host only).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "flashserve/core/status.h"

namespace flashserve::runtime {

bool read_file(const std::string& path, std::string* contents);
bool file_exists(const std::string& path);
bool is_directory(const std::string& path);
bool is_executable(const std::string& path);
int64_t file_size(const std::string& path);   // -1 when missing
int64_t file_mtime(const std::string& path);  // seconds since the epoch, -1 when missing
// mkdir -p; an error names the directory and the reason.
Status make_dirs(const std::string& dir);
// Writes `bytes` to `tmp_path`, flushes it to disk, then renames it over `path`: readers see
// either the old file or the complete new one, never a partial write.
Status write_file_atomic(const std::string& path, const std::string& tmp_path,
                         const std::string& bytes);
// Names (not paths) of the entries of `dir`, without "." and ".."; empty when unreadable.
std::vector<std::string> list_dir(const std::string& dir);
// rm -rf; returns the number of regular files removed and adds their bytes to *bytes.
int remove_tree(const std::string& path, int64_t* bytes);

std::string path_join(const std::string& a, const std::string& b);
std::string dir_name(const std::string& path);
// Lexically normalized: "a/./b/../c" -> "a/c"; keeps a leading "/".
std::string normalize_path(const std::string& path);

}  // namespace flashserve::runtime
