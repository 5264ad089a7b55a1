#include "fs/process_table.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace modelfs::fs {
namespace {

constexpr auto kCacheFor = std::chrono::seconds(1);
constexpr size_t kMaxCached = 4096;

// Reads a small /proc file whole; "" when it cannot be read.
std::string ReadProcFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  std::string out;
  char buf[1024];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

// Field 22 of /proc/<pid>/stat (starttime); 0 when unreadable. The command name (field 2) may hold
// spaces and parentheses, so fields are counted after its last ')'.
uint64_t StartTime(pid_t pid) {
  std::string stat = ReadProcFile("/proc/" + std::to_string(pid) + "/stat");
  size_t close_paren = stat.rfind(')');
  if (close_paren == std::string::npos) return 0;
  const char* p = stat.c_str() + close_paren + 1;
  // After ')' come field 3 (state) ... field 22 (starttime): skip 19 fields.
  for (int field = 3; field < 22; ++field) {
    while (*p == ' ') ++p;
    while (*p != ' ' && *p != '\0') ++p;
  }
  return strtoull(p, nullptr, 10);
}

}  // namespace

ProcessTable::ProcessTable(Resolver resolver, Liveness liveness)
    : resolver_(resolver ? std::move(resolver) : Resolver(&ProcessTable::FromProc)),
      liveness_(liveness ? std::move(liveness) : Liveness(&ProcessTable::AliveInProc)) {}

ProcessId ProcessTable::FromProc(pid_t tid) {
  ProcessId id;
  if (tid <= 0) return id;
  std::string status = ReadProcFile("/proc/" + std::to_string(tid) + "/status");
  size_t at = status.find("\nTgid:");
  if (at == std::string::npos) return id;
  pid_t tgid = static_cast<pid_t>(strtol(status.c_str() + at + 6, nullptr, 10));
  if (tgid <= 0) return id;
  id.tgid = tgid;
  id.start = StartTime(tgid);
  return id;
}

bool ProcessTable::AliveInProc(const ProcessId& p) {
  if (!p.known()) return false;
  uint64_t start = StartTime(p.tgid);
  return start != 0 && start == p.start;
}

ProcessId ProcessTable::Of(pid_t tid) {
  if (tid <= 0) return {};
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(mu_);
    auto it = cache_.find(tid);
    if (it != cache_.end() && now - it->second.at < kCacheFor) return it->second.id;
  }
  ProcessId id = resolver_(tid);
  std::lock_guard lock(mu_);
  if (cache_.size() >= kMaxCached) cache_.clear();
  cache_[tid] = Cached{id, now};
  return id;
}

bool ProcessTable::Alive(const ProcessId& p) { return liveness_(p); }

}  // namespace modelfs::fs
