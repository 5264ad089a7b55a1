// Small POSIX helpers shared by the stores and the fs core: whole-range reads and writes that retry
// short transfers and EINTR, copying between fds, comparing two files, durable renames.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "stores/common/scoped_fd.h"
#include "stores/common/status.h"

namespace modelfs {

// Reads up to len bytes at off; returns the count (short only at end of file).
Result<size_t> PreadFull(int fd, void* buf, size_t len, off_t off);
// Writes all len bytes at off or fails.
Status PwriteFull(int fd, const void* buf, size_t len, off_t off);
// Copies len bytes from src at src_off to dst at dst_off (in-kernel when possible).
Status CopyRange(int src, off_t src_off, int dst, off_t dst_off, uint64_t len);
// Reads src (a file or a pipe) to its end, writing what it reads to dst from dst_off. Returns the
// number of bytes copied. src_name names src in errors.
Result<uint64_t> CopyFromStream(int src, const std::string& src_name, int dst, off_t dst_off);
// Copies len bytes from src at src_off to dst at its current position with write(2): for pipes,
// terminals and sockets, which take no offsets.
Status CopyToStream(int src, off_t src_off, int dst, uint64_t len);
// Size of an open file.
Result<uint64_t> FileSize(int fd);
// True when both fds hold the same bytes (sizes compared first, then content in 1 MiB blocks).
Result<bool> SameContent(int a, int b);
// Opens path with flags (and mode when creating), as a ScopedFd.
Result<ScopedFd> OpenFile(const std::string& path, int flags, mode_t mode = 0600);
// fsyncs a directory so that renames and creations in it survive a machine crash.
Status SyncDir(const std::string& dir);
// Creates dir and its parents (like mkdir -p).
Status MakeDirs(const std::string& dir, mode_t mode = 0755);
// Removes every entry of a flat directory (the directory itself stays).
Status ClearDir(const std::string& dir);
// The open lock of a store directory: DIR/LOCK, taken exclusively when nobody else has the store
// open (then the opener may repair after a crash: delete orphans and staging files, which would
// otherwise be another process's commits in flight), else shared. Hold it shared while open.
struct StoreDirLock {
  ScopedFd fd;
  bool exclusive = false;
};
Result<StoreDirLock> LockStoreDir(const std::string& dir);
// Turns an exclusive StoreDirLock shared once the repair is done. (flock converts by unlocking
// first, which is harmless then: nothing is in flight yet.)
Status ShareStoreDirLock(int lock_fd, const std::string& dir);
// Whole-file helpers for small files (configuration, tests).
Status WriteStringToFile(const std::string& path, std::string_view data);
Result<std::string> ReadFileToString(const std::string& path);

}  // namespace modelfs
