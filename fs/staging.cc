#include "fs/staging.h"

#include <unistd.h>

#include "stores/common/file_util.h"

namespace modelfs::fs {
namespace {

timespec Now() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts;
}

}  // namespace

Staging::Staging(std::string staging_dir) : dir(std::move(staging_dir)), changed(Now()) {}

Status Staging::Ensure(bool truncate) {
  if (staged && !staged->consumed()) return Status::Ok();
  ASSIGN_OR_RETURN(auto fresh, StagedFile::Create(dir));
  if (!truncate) {
    // Copy-on-write (dd conv=notrunc, rsync --inplace, O_APPEND): the bytes this file had so far,
    // which after a commit are the consumed staged file's (its fd still reads them).
    int from = ReadFd();
    if (from >= 0) {
      ASSIGN_OR_RETURN(uint64_t size, Size());
      RETURN_IF_ERROR(CopyRange(from, 0, fresh->fd(), 0, size));
    }
  }
  staged = std::move(fresh);
  return Status::Ok();
}

Result<uint64_t> Staging::Size() {
  if (staged) return FileSize(staged->fd());
  if (base) return base->size;
  return uint64_t{0};
}

int Staging::ReadFd() const {
  if (staged) return staged->fd();
  if (base) return base->fd.get();
  return -1;
}

void Staging::DropStaged() {
  staged.reset();
  dirty = false;
  unsaved_changes = 0;
  time_set = false;
}

void Staging::Touch() { changed = Now(); }

timespec Staging::Mtime() const { return mtime ? *mtime : changed; }

}  // namespace modelfs::fs
