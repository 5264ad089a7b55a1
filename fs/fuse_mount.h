// Serving a Core on a mount point through libfuse's low-level API.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "fs/core.h"

namespace modelfs::fs {

struct MountOptions {
  std::string mountpoint;
  std::vector<std::string> fuse_options;  // passed as -o to libfuse (ro, allow_other, fsname=...)
  // Requests served at once. Generous: a request may wait (bounded) for the kernel to drop a cache
  // entry, and the request holding the lock that notification needs must still find a thread.
  int max_threads = 64;
  // Kernel readahead for the mount (KiB). FUSE mounts start at 128 KiB, which halves first-read
  // throughput of large files; 0 leaves the kernel's value. Needs root (sysfs); otherwise logged.
  unsigned readahead_kb = 1024;
};

// Mounts, calls ready(OK) once the mount is usable (or ready(error) and returns it), then serves
// requests on a multithreaded loop until unmounted or SIGINT/SIGTERM/SIGHUP. Returns after the mount
// is gone and core.SyncAll() made every acknowledged write durable.
Status ServeMount(Core& core, const MountOptions& options,
                  const std::function<void(const Status&)>& ready);

}  // namespace modelfs::fs
