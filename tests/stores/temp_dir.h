// A fresh directory under $TMPDIR (or /tmp) for one test, removed with everything in it afterwards.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <cstdint>

#include <filesystem>
#include <string>
#include <system_error>

namespace modelfs::testing {

class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/modelfs_test.XXXXXX";
    if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;  // best effort: a leftover temp dir must not fail the test
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  bool ok() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Deterministic pseudo-random bytes: distinct contents for distinct seeds, reproducible failures.
inline std::string Pattern(size_t n, unsigned seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

inline bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

}  // namespace modelfs::testing

#define ASSERT_OK(expr)                    \
  do {                                     \
    ::modelfs::Status _s = (expr);         \
    ASSERT_TRUE(_s.ok()) << _s.ToString(); \
  } while (0)
