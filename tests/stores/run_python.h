// Runs Debian's CPython on a script, for tests that compare with what python (and numpy, sqlite3)
// does on the same data.
#pragma once

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "stores/common/file_util.h"
#include "tests/stores/temp_dir.h"

namespace modelfs::testing {

inline constexpr char kPython[] = "/usr/bin/python3";

// Runs kPython on `script` (written into dir) with args; returns its stdout. A non-zero exit
// fails the test and returns "" (with python's stderr in the failure message).
inline std::string RunPython(const TempDir& dir, const std::string& script,
                             const std::vector<std::string>& args = {}) {
  const std::string path = dir.Sub("script.py");
  EXPECT_TRUE(WriteStringToFile(path, script).ok());
  std::string cmd = std::string(kPython) + " " + path;
  for (const std::string& a : args) cmd += " '" + a + "'";  // temp paths hold no quotes
  cmd += " 2>" + dir.Sub("python_stderr.txt");
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) {
    ADD_FAILURE() << "popen failed: " << strerror(errno);
    return "";
  }
  std::string out;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int rc = pclose(p);
  if (rc != 0) {
    auto err = ReadFileToString(dir.Sub("python_stderr.txt"));
    ADD_FAILURE() << "python exited with " << rc << ":\n" << (err.ok() ? *err : "");
    return "";
  }
  return out;
}

}  // namespace modelfs::testing
