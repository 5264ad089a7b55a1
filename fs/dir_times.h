// DirTimes: folder times set with utimens (rsync -a, cp -a, tar -x), kept across remounts.
//
// A folder's mtime is the store's (models/<id>: the model's change time; timeseries/: when its
// listing last changed). A restore sets every folder's time to the backup's; stores keep none of
// those, so without this a second `rsync -a` would set them all again and itemize every folder. A time
// set here is shown for as long as the folder's listing (the names in it) stays what it was when the
// time was set, as on a local disk: rsync sets a folder's time before the files inside it arrive,
// and their arrival changes the store's own time of the folder but not the names in it.
//
// Kept in a small file (append-only; compacted when opened): "<own ns> <set ns> <names hash> <path>"
// per line.
// Thread-safety: thread-safe (one mutex, never held across anything but the file append).
#pragma once

#include <time.h>

#include <cstdint>
#include <functional>
#include <vector>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "stores/common/scoped_fd.h"
#include "stores/common/status.h"

namespace modelfs::fs {

class DirTimes {
 public:
  // file: where the times are kept; "" keeps them in memory only.
  static Result<std::unique_ptr<DirTimes>> Open(const std::string& file);

  // A hash of the names in a folder (NamesHash), computed only when needed.
  using Names = std::function<Result<uint64_t>()>;
  // The time to show for folder `path` (joined) whose own time is `own`.
  timespec Shown(const std::string& path, const timespec& own, const Names& names);
  // Folder `path`, whose own time is `own` and names hash `names`, was given time `set`.
  Status Set(const std::string& path, const timespec& own, const timespec& set, uint64_t names);
  static uint64_t NamesHash(std::vector<std::string> names);

 private:
  struct Entry {
    int64_t own_ns = 0;
    int64_t set_ns = 0;
    uint64_t names = 0;
  };
  Status Append(const std::string& path, const Entry& e);  // (mu_)
  DirTimes() = default;
  std::mutex mu_;
  std::map<std::string, Entry> times_;  // (mu_)
  ScopedFd file_;                       // (mu_) appended to; invalid: memory only
};

}  // namespace modelfs::fs
