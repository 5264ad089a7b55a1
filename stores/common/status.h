// Status and Result<T>: how every store and the fs core report failure.
//
// No exceptions cross a store's API. A Status is either OK or a code plus a human-readable message
// that names what failed and why ("model 7: no such model"). The fs layer turns codes into errnos in
// exactly one function (fs/errno_map.cc); nothing else looks at codes to pick an errno.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace modelfs {

enum class StatusCode : uint8_t {
  kOk = 0,
  kNotFound,         // the named thing does not exist
  kAlreadyExists,    // creating something that is already there
  kInvalidArgument,  // malformed name or content; nothing was changed
  kPermissionDenied, // the operation is never allowed on this object (immutable, id retired, ...)
  kReadOnly,         // the store or file is read-only
  kNotSupported,     // the operation has no meaning here
  kNotEmpty,         // removing a folder that still has content
  kTooLarge,         // content exceeds a documented limit
  kIOError,          // the OS or a native library failed; message carries its text
  kCorruption,       // stored data is inconsistent
  kNotADirectory,
  kIsADirectory,
  kNameTooLong,      // a name over 255 bytes
  kStale,            // the thing named was replaced meanwhile: look it up again (ESTALE)
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  // An error from the OS (or a library reporting one): the errno is kept, so that the fs layer can
  // return it unchanged where it keeps its meaning (ENOSPC, EDQUOT, EACCES, ...).
  Status(StatusCode code, std::string message, int sys_errno)
      : code_(code), message_(std::move(message)), sys_errno_(sys_errno) {}

  static Status Ok() { return Status(); }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // The OS errno behind this error, or 0.
  int sys_errno() const { return sys_errno_; }
  // The same error (code and errno) with `context` and ": " in front of its message.
  Status Annotate(std::string_view context) const;
  std::string ToString() const;
  // Marks a deliberately ignored error as such at the call site.
  void IgnoreError() const {}

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
  int sys_errno_ = 0;
};

inline Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status AlreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
inline Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
inline Status PermissionDenied(std::string m) { return {StatusCode::kPermissionDenied, std::move(m)}; }
inline Status ReadOnly(std::string m) { return {StatusCode::kReadOnly, std::move(m)}; }
inline Status NotSupported(std::string m) { return {StatusCode::kNotSupported, std::move(m)}; }
inline Status NotEmpty(std::string m) { return {StatusCode::kNotEmpty, std::move(m)}; }
inline Status TooLarge(std::string m) { return {StatusCode::kTooLarge, std::move(m)}; }
inline Status IOError(std::string m) { return {StatusCode::kIOError, std::move(m)}; }
inline Status Corruption(std::string m) { return {StatusCode::kCorruption, std::move(m)}; }
inline Status NotADirectory(std::string m) { return {StatusCode::kNotADirectory, std::move(m)}; }
inline Status IsADirectory(std::string m) { return {StatusCode::kIsADirectory, std::move(m)}; }
inline Status NameTooLong(std::string m) { return {StatusCode::kNameTooLong, std::move(m)}; }
inline Status Stale(std::string m) { return {StatusCode::kStale, std::move(m)}; }
// An IOError carrying strerror(err) after `what`, and err itself (Status::sys_errno).
Status ErrnoError(std::string_view what, int err);

// A value or the Status saying why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT: must not be OK

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOkStatus;
    return ok() ? kOkStatus : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace modelfs

#define MODELFS_CONCAT_INNER(a, b) a##b
#define MODELFS_CONCAT(a, b) MODELFS_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function if `expr` is not OK.
#define RETURN_IF_ERROR(expr)                    \
  do {                                           \
    ::modelfs::Status _st = (expr);              \
    if (!_st.ok()) return _st;                   \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, MakeX());` declares x from a Result or returns its Status.
#define ASSIGN_OR_RETURN(lhs, expr)                                      \
  auto MODELFS_CONCAT(_res_, __LINE__) = (expr);                        \
  if (!MODELFS_CONCAT(_res_, __LINE__).ok())                            \
    return MODELFS_CONCAT(_res_, __LINE__).status();                    \
  lhs = std::move(MODELFS_CONCAT(_res_, __LINE__)).value()
