#include "stores/common/file_util.h"

#include <sys/file.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <memory>

namespace modelfs {
namespace {

constexpr size_t kBlockSize = 1 << 20;

}  // namespace

Result<size_t> PreadFull(int fd, void* buf, size_t len, off_t off) {
  char* p = static_cast<char*>(buf);
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::pread(fd, p + done, len - done, off + static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("pread", errno);
    }
    if (n == 0) break;  // end of file
    done += static_cast<size_t>(n);
  }
  return done;
}

Status PwriteFull(int fd, const void* buf, size_t len, off_t off) {
  const char* p = static_cast<const char*>(buf);
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::pwrite(fd, p + done, len - done, off + static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("pwrite", errno);
    }
    // pwrite returning 0 for a non-zero length makes no progress; retrying would spin forever.
    if (n == 0) return IOError("pwrite: wrote 0 bytes");
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<StoreDirLock> LockStoreDir(const std::string& dir) {
  StoreDirLock lock;
  ASSIGN_OR_RETURN(lock.fd, OpenFile(dir + "/LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  lock.exclusive = ::flock(lock.fd.get(), LOCK_EX | LOCK_NB) == 0;
  if (!lock.exclusive) {
    if (errno != EWOULDBLOCK) return ErrnoError("flock " + dir + "/LOCK", errno);
    RETURN_IF_ERROR(ShareStoreDirLock(lock.fd.get(), dir));
  }
  return lock;
}

Status ShareStoreDirLock(int lock_fd, const std::string& dir) {
  while (::flock(lock_fd, LOCK_SH) != 0) {
    if (errno != EINTR) return ErrnoError("flock " + dir + "/LOCK", errno);
  }
  return Status::Ok();
}

Result<uint64_t> CopyFromStream(int src, const std::string& src_name, int dst, off_t dst_off) {
  std::unique_ptr<char[]> buf(new char[kBlockSize]);
  uint64_t total = 0;
  for (;;) {
    ssize_t n = ::read(src, buf.get(), kBlockSize);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("read " + src_name, errno);
    if (n == 0) return total;
    RETURN_IF_ERROR(PwriteFull(dst, buf.get(), static_cast<size_t>(n), dst_off));
    dst_off += n;
    total += static_cast<uint64_t>(n);
  }
}

Status CopyToStream(int src, off_t src_off, int dst, uint64_t len) {
  std::unique_ptr<char[]> buf(new char[kBlockSize]);
  while (len > 0) {
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(len, kBlockSize));
    ASSIGN_OR_RETURN(size_t n, PreadFull(src, buf.get(), chunk, src_off));
    if (n < chunk) return IOError("copy: source ended before the requested length");
    for (size_t done = 0; done < n;) {
      ssize_t w = ::write(dst, buf.get() + done, n - done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return ErrnoError("write", errno);
      done += static_cast<size_t>(w);
    }
    src_off += static_cast<off_t>(n);
    len -= n;
  }
  return Status::Ok();
}

Status CopyRange(int src, off_t src_off, int dst, off_t dst_off, uint64_t len) {
  loff_t in = src_off;
  loff_t out = dst_off;
  uint64_t left = len;
  // In-kernel first (reflinks on btrfs/xfs, no user-space copy elsewhere). Where the kernel or
  // filesystem cannot, it says so with one of these errnos and the loop below takes over.
  while (left > 0) {
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(left, 1ull << 30));
    ssize_t n = ::copy_file_range(src, &in, dst, &out, chunk, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP) break;
      return ErrnoError("copy_file_range", errno);
    }
    if (n == 0) return IOError("copy_file_range: source ended before the requested length");
    left -= static_cast<uint64_t>(n);
  }
  if (left == 0) return Status::Ok();

  std::unique_ptr<char[]> buf(new char[kBlockSize]);
  while (left > 0) {
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(left, kBlockSize));
    ASSIGN_OR_RETURN(size_t n, PreadFull(src, buf.get(), chunk, in));
    if (n < chunk) return IOError("copy: source ended before the requested length");
    RETURN_IF_ERROR(PwriteFull(dst, buf.get(), n, out));
    in += static_cast<loff_t>(n);
    out += static_cast<loff_t>(n);
    left -= n;
  }
  return Status::Ok();
}

Result<uint64_t> FileSize(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoError("fstat", errno);
  return static_cast<uint64_t>(st.st_size);
}

Result<bool> SameContent(int a, int b) {
  ASSIGN_OR_RETURN(uint64_t size_a, FileSize(a));
  ASSIGN_OR_RETURN(uint64_t size_b, FileSize(b));
  if (size_a != size_b) return false;
  std::unique_ptr<char[]> buf_a(new char[kBlockSize]);
  std::unique_ptr<char[]> buf_b(new char[kBlockSize]);
  off_t off = 0;
  while (static_cast<uint64_t>(off) < size_a) {
    ASSIGN_OR_RETURN(size_t n_a, PreadFull(a, buf_a.get(), kBlockSize, off));
    ASSIGN_OR_RETURN(size_t n_b, PreadFull(b, buf_b.get(), kBlockSize, off));
    // Differing counts mean a file changed size under us: not the same content either way.
    if (n_a != n_b || memcmp(buf_a.get(), buf_b.get(), n_a) != 0) return false;
    if (n_a == 0) break;
    off += static_cast<off_t>(n_a);
  }
  return true;
}

Result<ScopedFd> OpenFile(const std::string& path, int flags, mode_t mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) {
    int err = errno;
    Status st = ErrnoError("open " + path, err);
    if (err == ENOENT) return NotFound(st.message());
    return st;
  }
  return ScopedFd(fd);
}

Status SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open directory " + dir, errno);
  ScopedFd owned(fd);
  if (::fsync(fd) != 0) return ErrnoError("fsync directory " + dir, errno);
  return owned.Close();
}

Status MakeDirs(const std::string& dir, mode_t mode) {
  if (dir.empty()) return InvalidArgument("MakeDirs: empty path");
  // Walk the prefixes ending before each '/', then the whole path.
  for (size_t pos = 1;; ++pos) {
    pos = dir.find('/', pos);
    std::string prefix = dir.substr(0, pos);
    if (::mkdir(prefix.c_str(), mode) != 0 && errno != EEXIST) {
      return ErrnoError("mkdir " + prefix, errno);
    }
    if (pos == std::string::npos) break;
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return ErrnoError("stat " + dir, errno);
  if (!S_ISDIR(st.st_mode)) return NotADirectory(dir + ": exists and is not a directory");
  return Status::Ok();
}

Status ClearDir(const std::string& dir) {
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return ErrnoError("open directory " + dir, errno);
  DIR* d = ::fdopendir(dfd);
  if (d == nullptr) {
    int err = errno;
    ::close(dfd);
    return ErrnoError("fdopendir " + dir, err);
  }
  Status first_error;
  errno = 0;
  while (struct dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    // The directory is meant to be flat: an empty subdirectory goes too, a full one is an error.
    int flags = e->d_type == DT_DIR ? AT_REMOVEDIR : 0;
    if (::unlinkat(dirfd(d), e->d_name, flags) != 0 && errno != ENOENT && first_error.ok()) {
      first_error = ErrnoError("remove " + dir + "/" + std::string(name), errno);
    }
    errno = 0;
  }
  int read_err = errno;
  ::closedir(d);  // read-only directory stream: its close error cannot lose data
  if (read_err != 0 && first_error.ok()) return ErrnoError("readdir " + dir, read_err);
  return first_error;
}

Status WriteStringToFile(const std::string& path, std::string_view data) {
  ASSIGN_OR_RETURN(ScopedFd fd, OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC, 0644));
  RETURN_IF_ERROR(PwriteFull(fd.get(), data.data(), data.size(), 0));
  return fd.Close();
}

Result<std::string> ReadFileToString(const std::string& path) {
  ASSIGN_OR_RETURN(ScopedFd fd, OpenFile(path, O_RDONLY));
  std::string out;
  // Read to end of file: fstat says 0 for /proc files and races with writers.
  constexpr size_t kChunk = 64 << 10;
  for (;;) {
    size_t old = out.size();
    out.resize(old + kChunk);
    ASSIGN_OR_RETURN(size_t n,
                     PreadFull(fd.get(), out.data() + old, kChunk, static_cast<off_t>(old)));
    out.resize(old + n);
    if (n < kChunk) break;
  }
  return out;
}

}  // namespace modelfs
