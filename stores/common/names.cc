#include "stores/common/names.h"

#include <cstdio>

namespace modelfs {
namespace {

bool IsControl(char c) {
  auto byte = static_cast<unsigned char>(c);
  return byte < 0x20 || byte == 0x7f;
}

}  // namespace

std::string QuoteName(std::string_view what, std::string_view name) {
  std::string out = std::string(what) + " '";
  for (char c : name) {
    if (IsControl(c)) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "'";
}

Status ValidatePlainName(std::string_view what, std::string_view name) {
  if (name.empty()) return InvalidArgument(std::string(what) + " '': must be 1..255 bytes, not empty");
  if (name.size() > kMaxNameBytes) {
    return NameTooLong(QuoteName(what, name.substr(0, 32)) + "... is " + std::to_string(name.size()) +
                       " bytes: at most 255");
  }
  for (char c : name) {
    if (c == '/') return InvalidArgument(QuoteName(what, name) + ": may not contain '/'");
    if (IsControl(c)) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "0x%02x", static_cast<unsigned char>(c));
      return InvalidArgument(QuoteName(what, name) + ": may not contain control byte " + buf);
    }
  }
  if (name.front() == '.') {
    return InvalidArgument(QuoteName(what, name) + ": names starting with '.' are temporary files");
  }
  return Status::Ok();
}

void LogStoreWarning(std::string_view store, const std::string& message) {
  std::fprintf(stderr, "modelfs: %.*s store: %s\n", static_cast<int>(store.size()), store.data(),
               message.c_str());
}

}  // namespace modelfs
