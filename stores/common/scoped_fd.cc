#include "stores/common/scoped_fd.h"

#include <errno.h>

namespace modelfs {

Status ScopedFd::Close() {
  if (fd_ < 0) return Status::Ok();
  // Linux releases the descriptor even when close() fails (also on EINTR), so it must not be
  // retried: the number may already belong to another thread's open().
  int fd = release();
  if (::close(fd) != 0) return ErrnoError("close", errno);
  return Status::Ok();
}

}  // namespace modelfs
