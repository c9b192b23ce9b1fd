#include "runtime/file_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace flashserve::runtime {

bool read_file(const std::string& path, std::string* contents) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  contents->clear();
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0) contents->reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  bool ok = true;
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ok = false;
    if (n <= 0) break;
    contents->append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return ok;
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_executable(const std::string& path) {
  return file_exists(path) && ::access(path.c_str(), X_OK) == 0;
}

int64_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : -1;
}

int64_t file_mtime(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_mtime) : -1;
}

Status make_dirs(const std::string& dir) {
  if (dir.empty() || is_directory(dir)) return Status();
  const std::string parent = dir_name(dir);
  if (parent != dir) {
    Status st = make_dirs(parent);
    if (!st.ok()) return st;
  }
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return Status(StatusCode::kInternal,
                  "cannot create directory " + dir + ": " + std::strerror(errno));
  }
  return Status();
}

Status write_file_atomic(const std::string& path, const std::string& tmp_path,
                         const std::string& bytes) {
  auto fail = [&](const char* what) {
    const std::string reason = std::strerror(errno);
    ::unlink(tmp_path.c_str());
    return Status(StatusCode::kInternal, std::string(what) + " " + tmp_path + ": " + reason);
  };
  const int fd = ::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return fail("cannot create");
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return fail("cannot write");
    }
    done += static_cast<size_t>(n);
  }
  // The data must be on disk before the rename makes it visible, or a crash could leave a
  // complete-looking name over incomplete data (the checksum would still catch it on load).
  if (::fsync(fd) != 0) {
    ::close(fd);
    return fail("cannot flush");
  }
  ::close(fd);
  if (::rename(tmp_path.c_str(), path.c_str()) != 0) return fail("cannot rename");
  return Status();
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return names;
  while (const dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  return names;
}

int remove_tree(const std::string& path, int64_t* bytes) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return 0;
  if (S_ISDIR(st.st_mode)) {
    int n = 0;
    for (const std::string& name : list_dir(path))
      n += remove_tree(path_join(path, name), bytes);
    ::rmdir(path.c_str());
    return n;
  }
  if (::unlink(path.c_str()) != 0) return 0;
  if (bytes) *bytes += static_cast<int64_t>(st.st_size);
  return 1;
}

std::string path_join(const std::string& a, const std::string& b) {
  if (a.empty() || (!b.empty() && b[0] == '/')) return b;
  return a.back() == '/' ? a + b : a + "/" + b;
}

std::string dir_name(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return "";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string normalize_path(const std::string& path) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i <= path.size()) {
    const size_t j = path.find('/', i);
    const std::string part = path.substr(i, j == std::string::npos ? std::string::npos : j - i);
    if (part == "..") {
      if (!parts.empty() && parts.back() != "..") {
        parts.pop_back();
      } else if (path.empty() || path[0] != '/') {
        parts.push_back(part);
      }
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    if (j == std::string::npos) break;
    i = j + 1;
  }
  std::string out = !path.empty() && path[0] == '/' ? "/" : "";
  for (size_t k = 0; k < parts.size(); ++k)
    out += (k ? "/" : "") + parts[k];
  return out.empty() ? "." : out;
}

}  // namespace flashserve::runtime
