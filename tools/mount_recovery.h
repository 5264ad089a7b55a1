// Mount safety and recovery: what `modelfs mount` refuses, and how mount and umount recover a mount
// whose daemon died.
//
// A daemon killed with SIGKILL normally leaves a dead mount ("Transport endpoint is not connected")
// that only needs unmounting. It can also leave a wedged one: a daemon thread blocked in the kernel
// on a folder lock that a request it will never answer holds (fs/invalidation.h) keeps /dev/fuse
// open, so every process touching the mount hangs and the data directory stays locked. The only way
// out is to abort the FUSE connection (/sys/fs/fuse/connections/<n>/abort): the blocked requests fail,
// the thread returns and the process exits. Both cases are recognised here, by the daemon's pid
// (daemon.pid) and the state /proc shows for it, and repaired with a message that says what was done.
//
// Thread-safety: plain functions; not meant for concurrent use on one mount.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "stores/common/status.h"

namespace modelfs::tools {

struct MountEntry {
  std::string mountpoint;
  std::string fstype;  // "fuse.modelfs", ...
  std::string source;  // "modelfs:/data/dir" for ours
  unsigned minor = 0;  // the FUSE connection number for a FUSE mount (st_dev's minor)
  bool modelfs() const { return fstype == "fuse.modelfs"; }
  std::string data_dir() const { return modelfs() && source.rfind("modelfs:", 0) == 0 ? source.substr(8) : ""; }
};

// The mount whose mount point is exactly `path` (the last one, if stacked).
std::optional<MountEntry> MountAt(const std::string& path);
// A modelfs mount of data directory `data`.
std::optional<MountEntry> MountOfData(const std::string& data);

enum class DaemonState {
  kGone,     // no such process (or not a modelfs process any more)
  kRunning,  // alive
  kDying,    // killed: its main thread is gone, or SIGKILL is pending, but the process lingers
};
DaemonState StateOf(pid_t pid);
// The pid in DATA/daemon.pid, or 0.
pid_t DaemonPid(const std::string& data);

// Aborts a FUSE connection (mounting the fusectl filesystem first if needed). Requires root.
Status AbortConnection(unsigned minor);
// fusermount3 -u (lazy: -uz).
Status Unmount(const std::string& mountpoint, bool lazy);

// Frees a mount whose daemon is dead or dying: aborts its connection, unmounts it lazily and waits
// (bounded) until the data directory's lock is free. Returns what it did, for the user.
Result<std::string> RecoverDeadMount(const MountEntry& m, pid_t pid);

// What `modelfs mount` checks before it mounts data at mountpoint (both absolute); recovers a stale or
// wedged mount of the same data or at the same place, and says so on stderr.
Status PrepareMount(const std::string& data, const std::string& mountpoint, bool nonempty);

}  // namespace modelfs::tools
