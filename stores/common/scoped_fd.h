// Move-only owner of a file descriptor. Close() reports the close error; the destructor closes and
// ignores it (visibly) for the paths where the error cannot matter (read-only fds, error unwinds).
#pragma once

#include <unistd.h>

#include <utility>

#include "stores/common/status.h"

namespace modelfs {

class ScopedFd {
 public:
  ScopedFd() = default;
  explicit ScopedFd(int fd) : fd_(fd) {}
  ScopedFd(ScopedFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  ScopedFd& operator=(ScopedFd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  Status Close();

 private:
  void Reset() {
    if (fd_ >= 0) ::close(fd_);  // error deliberately ignored: see class comment
    fd_ = -1;
  }
  int fd_ = -1;
};

}  // namespace modelfs
