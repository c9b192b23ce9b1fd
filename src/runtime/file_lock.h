// One exclusive lock per kernel cache entry, shared by every process on the machine: flock(2) on
// "<entry>.lock". The kernel drops a flock when the last descriptor of the holder closes, which
// includes the holder being killed (kill -9, OOM, a crash): a lock can never outlive its process,
// so there is no stale-lock detection, no pid files and no timeout to guess. The lock file itself
// stays (deleting it would let two processes lock two different inodes of the same name); it is
// empty and `flashserve cache clear` removes it.
//
// Separate FileLock objects conflict even inside one process (each opens its own descriptor), so
// two threads compiling the same entry also serialize.
#pragma once

#include <string>

#include "flashserve/core/status.h"

namespace flashserve::runtime {

class FileLock {
 public:
  FileLock() = default;
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

  // Opens (creating) the lock file; does not lock.
  Status open(const std::string& path);
  // true when the lock was free and is now held.
  bool try_lock();
  // Blocks until held.
  Status lock();
  void unlock();
  bool held() const { return held_; }
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  bool held_ = false;
  std::string path_;
};

}  // namespace flashserve::runtime
