#include "fs/log.h"

#include <time.h>

#include <cstdio>
#include <mutex>

namespace modelfs::fs {
namespace {

std::mutex g_mu;
FILE* g_file = nullptr;     // (g_mu)
bool g_stderr = true;       // (g_mu)

void Write(const char* level, const std::string& line) {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t;
  gmtime_r(&ts.tv_sec, &t);
  char stamp[32];
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &t);
  std::lock_guard lock(g_mu);
  if (g_stderr) fprintf(stderr, "%s.%03ldZ modelfs %s: %s\n", stamp, ts.tv_nsec / 1000000, level, line.c_str());
  if (g_file) {
    fprintf(g_file, "%s.%03ldZ %s: %s\n", stamp, ts.tv_nsec / 1000000, level, line.c_str());
    fflush(g_file);
  }
}

}  // namespace

void SetLogFile(const std::string& path, bool also_stderr) {
  std::lock_guard lock(g_mu);
  if (g_file) fclose(g_file);
  g_file = path.empty() ? nullptr : fopen(path.c_str(), "ae");
  g_stderr = also_stderr;
}

void LogError(const std::string& line) { Write("error", line); }
void LogInfo(const std::string& line) { Write("info", line); }

}  // namespace modelfs::fs
