// GeneratedCache: files made on demand (dumps, checkpoints, configuration text), generated once per
// content version and shared by stat and every open of that version.
//
// stat needs the exact size before any read, and generating a multi-GiB dump twice (once for stat,
// once for open) would double the work; so a generated file is kept, unlinked, in the staging
// directory (on disk, not in memory) and keyed by (name, version). Readers get their own fd on it, so a
// newer version replacing the entry never disturbs an open snapshot. At most `capacity` entries are
// kept (least recently used goes first).
//
// Thread-safety: all methods may be called concurrently; a generation holds the lock of its key only.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "fs/folder.h"

namespace modelfs::fs {

class GeneratedCache {
 public:
  // Writes the file's bytes into fd from offset 0 and returns the version they are of.
  using Generator = std::function<Result<uint64_t>(int fd)>;

  GeneratedCache(std::string dir, size_t capacity) : dir_(std::move(dir)), capacity_(capacity) {}

  // The content of `name` at `version`: the cached file when it is of exactly that version, otherwise
  // a new generation (whose own version may differ from the one asked, if the store changed meanwhile).
  Result<FileContent> Get(const std::string& name, uint64_t version, const Generator& generate);
  // Size and version of `name` at `version` (generating it if needed).
  Result<std::pair<uint64_t, uint64_t>> SizeOf(const std::string& name, uint64_t version,
                                               const Generator& generate);

 private:
  struct Entry {
    std::mutex gen_mu;  // one generation at a time per name
    ScopedFd fd;        // (mu_) unlinked file; empty until generated
    uint64_t size = 0;      // (mu_)
    uint64_t version = 0;   // (mu_)
    bool valid = false;     // (mu_)
  };
  Result<std::shared_ptr<Entry>> Fresh(const std::string& name, uint64_t version,
                                       const Generator& generate);

  const std::string dir_;
  const size_t capacity_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> entries_;  // (mu_)
  std::list<std::string> lru_;                             // (mu_) most recent first
};

}  // namespace modelfs::fs
