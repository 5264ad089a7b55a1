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
    case StatusCode::kIOError: return EIO;
    case StatusCode::kCorruption: return EIO;
    case StatusCode::kNotADirectory: return ENOTDIR;
    case StatusCode::kIsADirectory: return EISDIR;
  }
  return EIO;
}

}  // namespace modelfs::fs
