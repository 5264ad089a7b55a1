// ProcessTable: which process a FUSE request comes from.
//
// The kernel tags each request with the id of the calling *thread*. The core's rules are about
// processes (a file is committed by a close from the process that opened it; a process that creates a
// model sees only what it put there), so a thread id is mapped to its thread group (the process).
//
// Only /proc/<tid>/status is read, never /proc/<pid>/stat: reading stat takes the target's
// exec_update_lock, which a process holds while execve closes its O_CLOEXEC descriptors, and each of
// those closes is a FLUSH request waiting for this daemon: a deadlock. A process's identity over time
// (a pid is reused once its process ends) comes from a pidfd, which pins the pid while held (Pin).
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
  pid_t tgid = 0;  // 0: unknown (a caller outside this pid namespace, or one that is gone)
  bool known() const { return tgid > 0; }
  bool operator==(const ProcessId& o) const { return tgid == o.tgid; }
  bool operator!=(const ProcessId& o) const { return !(*this == o); }
  bool operator<(const ProcessId& o) const { return tgid < o.tgid; }
};

class ProcessTable {
 public:
  // Maps a thread id to its process; the default reads /proc. Tests pass their own.
  using Resolver = std::function<ProcessId(pid_t tid)>;
  // Whether a process still runs, given what Pin returned for it (default: polls the pidfd).
  using Liveness = std::function<bool(const ProcessId&, int pin)>;

  ProcessTable() : ProcessTable(nullptr, nullptr) {}
  ProcessTable(Resolver resolver, Liveness liveness);

  // The process of thread `tid` (unknown for tid 0 or when /proc has no such thread).
  ProcessId Of(pid_t tid);
  // A pidfd of the process (-1 if none could be had): while it is open the pid is not reused, and
  // Alive tells when the process ended. The caller owns and closes it.
  int Pin(const ProcessId& p);
  bool Alive(const ProcessId& p, int pin);

  // /proc/<tid>/status's Tgid (see above for why nothing else).
  static ProcessId FromProc(pid_t tid);

  // Whether thread `tid`, blocked in a request to this daemon, is creating a name: mkdir, mknod,
  // symlink, link, or an open with O_CREAT|O_EXCL (from /proc/<tid>/syscall, which the daemon may
  // read for its own callers; it is not taken during an execve's closes). False when unknown.
  using Intent = std::function<bool(pid_t tid)>;
  static bool CreatingFromProc(pid_t tid);

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
