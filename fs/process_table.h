// ProcessTable: which process a FUSE request comes from.
//
// The kernel tags each request with the id of the calling *thread*. The core's rules are about
// processes (a file is committed by a close from the process that opened it; a process that creates a
// model sees only what it put there), so a thread id is mapped to its thread group (the process) and
// that process's start time, which together name one process for its whole life even after its pid is
// reused.
//
// Thread-safety: thread-safe. A thread's answer is cached for a second (a thread id is not reused that
// fast), so a burst of requests from one thread reads /proc once.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <unordered_map>

namespace modelfs::fs {

struct ProcessId {
  pid_t tgid = 0;      // 0: unknown (a caller outside this pid namespace, or one that is gone)
  uint64_t start = 0;  // start time in clock ticks since boot (/proc/<pid>/stat field 22)
  bool known() const { return tgid > 0; }
  bool operator==(const ProcessId& o) const { return tgid == o.tgid && start == o.start; }
  bool operator!=(const ProcessId& o) const { return !(*this == o); }
  bool operator<(const ProcessId& o) const {
    return tgid != o.tgid ? tgid < o.tgid : start < o.start;
  }
};

class ProcessTable {
 public:
  // Maps a thread id to its process; the default reads /proc. Tests pass their own.
  using Resolver = std::function<ProcessId(pid_t tid)>;
  // Whether a process still runs; the default compares /proc/<tgid>/stat's start time.
  using Liveness = std::function<bool(const ProcessId&)>;

  ProcessTable() : ProcessTable(nullptr, nullptr) {}
  ProcessTable(Resolver resolver, Liveness liveness);

  // The process of thread `tid` (unknown for tid 0 or when /proc has no such thread).
  ProcessId Of(pid_t tid);
  bool Alive(const ProcessId& p);

  // /proc readers, also used by the mount tools.
  static ProcessId FromProc(pid_t tid);
  static bool AliveInProc(const ProcessId& p);

 private:
  struct Cached {
    ProcessId id;
    std::chrono::steady_clock::time_point at;
  };
  const Resolver resolver_;
  const Liveness liveness_;
  std::mutex mu_;
  std::unordered_map<pid_t, Cached> cache_;  // (mu_)
};

}  // namespace modelfs::fs
