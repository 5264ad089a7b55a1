#include "fs/errno_map.h"

#include <cerrno>

namespace modelfs::fs {

int ToErrno(const Status& status) {
  switch (status.code()) {
    case StatusCode::kOk: return 0;
    case StatusCode::kNotFound: return ENOENT;
    case StatusCode::kAlreadyExists: return EEXIST;
    case StatusCode::kInvalidArgument: return EINVAL;
    // Immutable objects (history versions, retired ids): the caller may not, whoever they are.
    case StatusCode::kPermissionDenied: return EPERM;
    case StatusCode::kReadOnly: return EROFS;
    // ENOTSUP rather than ENOSYS: ENOSYS would make the kernel stop sending the request for good.
    case StatusCode::kNotSupported: return ENOTSUP;
    case StatusCode::kNotEmpty: return ENOTEMPTY;
    case StatusCode::kTooLarge: return EFBIG;
    case StatusCode::kNameTooLong: return ENAMETOOLONG;
    // The OS's own errno where it tells the caller something it can act on (a full disk, a quota,
    // a permission, a read-only filesystem underneath); every other failure is an I/O error. ENOENT
    // and friends are not passed on: a missing store file is not "no such file" for the caller.
    case StatusCode::kIOError:
      switch (status.sys_errno()) {
        case ENOSPC: case EDQUOT: case EACCES: case EPERM: case EROFS: case EFBIG: case EMFILE:
        case ENFILE: case ENOMEM: case EOVERFLOW:
          return status.sys_errno();
        default:
          return EIO;
      }
    case StatusCode::kCorruption: return EIO;
    case StatusCode::kNotADirectory: return ENOTDIR;
    case StatusCode::kIsADirectory: return EISDIR;
    // The kernel retries an open that gets ESTALE once, looking every name up afresh (see Core::Open).
    case StatusCode::kStale: return ESTALE;
  }
  return EIO;
}

}  // namespace modelfs::fs
