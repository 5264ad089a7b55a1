#include "stores/common/status.h"

#include <string.h>

namespace modelfs {
namespace {

std::string_view CodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kNotFound:
      return "NotFound";
    case StatusCode::kAlreadyExists:
      return "AlreadyExists";
    case StatusCode::kInvalidArgument:
      return "InvalidArgument";
    case StatusCode::kPermissionDenied:
      return "PermissionDenied";
    case StatusCode::kReadOnly:
      return "ReadOnly";
    case StatusCode::kNotSupported:
      return "NotSupported";
    case StatusCode::kNotEmpty:
      return "NotEmpty";
    case StatusCode::kTooLarge:
      return "TooLarge";
    case StatusCode::kIOError:
      return "IOError";
    case StatusCode::kCorruption:
      return "Corruption";
    case StatusCode::kNotADirectory:
      return "NotADirectory";
    case StatusCode::kIsADirectory:
      return "IsADirectory";
    case StatusCode::kNameTooLong:
      return "NameTooLong";
    case StatusCode::kStale:
      return "Stale";
  }
  return "Unknown";
}

}  // namespace

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string s(CodeName(code_));
  s += ": ";
  s += message_;
  return s;
}

Status ErrnoError(std::string_view what, int err) {
  // strerror() may share a static buffer between threads; the GNU strerror_r returns a pointer that
  // is either buf or a static immutable string.
  char buf[128];
  const char* text = strerror_r(err, buf, sizeof(buf));
  std::string m(what);
  m += ": ";
  m += text;
  return Status(StatusCode::kIOError, std::move(m), err);
}

Status Status::Annotate(std::string_view context) const {
  if (ok()) return *this;
  std::string m(context);
  m += ": ";
  m += message_;
  return Status(code_, std::move(m), sys_errno_);
}

}  // namespace modelfs
