#include "stores/common/staged_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "stores/common/file_util.h"

namespace modelfs {

Result<std::unique_ptr<StagedFile>> StagedFile::Create(const std::string& dir) {
  std::string path = dir + "/stage.XXXXXX";
  int fd = ::mkostemp(path.data(), O_CLOEXEC);
  if (fd < 0) return ErrnoError("create staged file in " + dir, errno);
  return std::unique_ptr<StagedFile>(new StagedFile(std::move(path), ScopedFd(fd)));
}

StagedFile::~StagedFile() {
  // An unconsumed staged file is garbage; if unlink fails the store's next Open() clears staging.
  if (!consumed_) ::unlink(path_.c_str());
}

Result<std::unique_ptr<StagedFile>> StagedFile::CreateFrom(const std::string& dir,
                                                          const std::string& input) {
  ScopedFd in;
  int fd = STDIN_FILENO;
  if (input != "-") {
    ASSIGN_OR_RETURN(in, OpenFile(input, O_RDONLY | O_CLOEXEC));
    fd = in.get();
  }
  ASSIGN_OR_RETURN(auto staged, Create(dir));
  RETURN_IF_ERROR(CopyFromStream(fd, input == "-" ? "stdin" : input, staged->fd(), 0).status());
  return staged;
}

Result<uint64_t> StagedFile::Size() const { return FileSize(fd_.get()); }

Status StagedFile::MoveTo(const std::string& dest) {
  if (consumed_) return InvalidArgument(path_ + ": staged file already moved to " + moved_to_);
  if (::rename(path_.c_str(), dest.c_str()) != 0) {
    return ErrnoError("rename " + path_ + " to " + dest, errno);
  }
  consumed_ = true;
  moved_to_ = dest;
  return Status::Ok();
}

Status StagedFile::MoveBack() {
  if (!consumed_) return InvalidArgument(path_ + ": staged file was not moved");
  // The staging name was free while the file was away; NOREPLACE keeps us from clobbering a file
  // that mkostemp may have handed out under the same name meanwhile.
  if (::renameat2(AT_FDCWD, moved_to_.c_str(), AT_FDCWD, path_.c_str(), RENAME_NOREPLACE) != 0) {
    int err = errno;
    if (err != EINVAL && err != ENOSYS) return ErrnoError("rename " + moved_to_ + " back", err);
    // No NOREPLACE on this filesystem; a collision with a fresh random name is too unlikely.
    if (::rename(moved_to_.c_str(), path_.c_str()) != 0) {
      return ErrnoError("rename " + moved_to_ + " back", errno);
    }
  }
  consumed_ = false;
  moved_to_.clear();
  return Status::Ok();
}

}  // namespace modelfs
