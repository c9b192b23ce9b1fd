#include "runtime/file_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace flashserve::runtime {

FileLock::~FileLock() {
  unlock();
  if (fd_ >= 0) ::close(fd_);
}

Status FileLock::open(const std::string& path) {
  if (fd_ >= 0) ::close(fd_);
  held_ = false;
  path_ = path;
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    return Status(StatusCode::kInternal,
                  "cannot open lock file " + path + ": " + std::strerror(errno));
  }
  return Status();
}

bool FileLock::try_lock() {
  if (held_) return true;
  if (fd_ < 0) return false;
  int rc;
  do {
    rc = ::flock(fd_, LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  held_ = rc == 0;
  return held_;
}

Status FileLock::lock() {
  if (held_) return Status();
  if (fd_ < 0) return Status(StatusCode::kInternal, "lock file not open");
  int rc;
  do {
    rc = ::flock(fd_, LOCK_EX);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    return Status(StatusCode::kInternal, "cannot lock " + path_ + ": " + std::strerror(errno));
  }
  held_ = true;
  return Status();
}

void FileLock::unlock() {
  if (held_ && fd_ >= 0) ::flock(fd_, LOCK_UN);
  held_ = false;
}

}  // namespace flashserve::runtime
