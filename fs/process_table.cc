#include "fs/process_table.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

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

}  // namespace

bool AliveByPin(const ProcessId& p, int pin) {
  if (pin >= 0) {
    pollfd pfd{pin, POLLIN, 0};
    return poll(&pfd, 1, 0) == 0;  // a pidfd becomes readable when its process has ended
  }
  return p.known() && (kill(p.tgid, 0) == 0 || errno == EPERM);
}

ProcessTable::ProcessTable(Resolver resolver, Liveness liveness)
    : resolver_(resolver ? std::move(resolver) : Resolver(&ProcessTable::FromProc)),
      liveness_(liveness ? std::move(liveness) : Liveness(&AliveByPin)) {}

ProcessId ProcessTable::FromProc(pid_t tid) {
  ProcessId id;
  if (tid <= 0) return id;
  std::string status = ReadProcFile("/proc/" + std::to_string(tid) + "/status");
  size_t at = status.find("\nTgid:");
  if (at == std::string::npos) return id;
  pid_t tgid = static_cast<pid_t>(strtol(status.c_str() + at + 6, nullptr, 10));
  if (tgid <= 0) return id;
  id.tgid = tgid;
  return id;
}

bool ProcessTable::CreatingFromProc(pid_t tid) {
  if (tid <= 0) return false;
  std::string text = ReadProcFile("/proc/" + std::to_string(tid) + "/syscall");
  // "<nr> <arg1> <arg2> ... <sp> <pc>", args in hex; "running" or "-1 ..." when not in a syscall.
  char* end = nullptr;
  long nr = strtol(text.c_str(), &end, 10);
  if (end == text.c_str()) return false;
  unsigned long long args[6] = {};
  const char* p = end;
  for (auto& a : args) {
    a = strtoull(p, &end, 16);
    if (end == p) break;
    p = end;
  }
  auto exclusive = [](unsigned long long flags) { return (flags & O_CREAT) && (flags & O_EXCL); };
  switch (nr) {
#ifdef SYS_mkdir
    case SYS_mkdir:
#endif
#ifdef SYS_mknod
    case SYS_mknod:
#endif
#ifdef SYS_symlink
    case SYS_symlink:
#endif
#ifdef SYS_link
    case SYS_link:
#endif
    case SYS_mkdirat:
    case SYS_mknodat:
    case SYS_symlinkat:
    case SYS_linkat:
      return true;
#ifdef SYS_open
    case SYS_open:
      return exclusive(args[1]);
#endif
    case SYS_openat:
      return exclusive(args[2]);
    default:
      return false;
  }
}

int ProcessTable::Pin(const ProcessId& p) {
  if (!p.known()) return -1;
  return static_cast<int>(syscall(SYS_pidfd_open, p.tgid, 0));
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

bool ProcessTable::Alive(const ProcessId& p, int pin) { return liveness_(p, pin); }

}  // namespace modelfs::fs
