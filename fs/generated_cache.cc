#include "fs/generated_cache.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include "stores/common/file_util.h"

namespace modelfs::fs {

Result<std::shared_ptr<GeneratedCache::Entry>> GeneratedCache::Fresh(const std::string& name,
                                                                     uint64_t version,
                                                                     const Generator& generate) {
  std::shared_ptr<Entry> e;
  {
    std::lock_guard lock(mu_);
    auto& slot = entries_[name];
    if (!slot) slot = std::make_shared<Entry>();
    e = slot;
    lru_.remove(name);
    lru_.push_front(name);
    while (lru_.size() > capacity_) {
      entries_.erase(lru_.back());
      lru_.pop_back();
    }
  }
  std::lock_guard gen(e->gen_mu);
  {
    std::lock_guard lock(mu_);
    // Exact match: a store's change time can be set back by a restore, so "newer" proves nothing.
    if (e->valid && e->version == version) return e;
  }
  // O_TMPFILE: the file has no name, so nothing is left behind if the daemon dies.
  int raw = open(dir_.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (raw < 0) return ErrnoError("temporary file in " + dir_, errno);
  ScopedFd fd(raw);
  ASSIGN_OR_RETURN(uint64_t made_version, generate(fd.get()));
  ASSIGN_OR_RETURN(uint64_t size, FileSize(fd.get()));
  std::lock_guard lock(mu_);
  e->fd = std::move(fd);
  e->size = size;
  e->version = made_version;
  e->valid = true;
  return e;
}

Result<FileContent> GeneratedCache::Get(const std::string& name, uint64_t version,
                                        const Generator& generate) {
  ASSIGN_OR_RETURN(auto e, Fresh(name, version, generate));
  std::lock_guard lock(mu_);
  // Each reader gets its own descriptor of the same bytes, so dropping the entry later is harmless.
  int dup = fcntl(e->fd.get(), F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return ErrnoError("dup of generated " + name, errno);
  FileContent c;
  c.fd = ScopedFd(dup);
  c.size = e->size;
  return c;
}

Result<std::pair<uint64_t, uint64_t>> GeneratedCache::SizeOf(const std::string& name,
                                                            uint64_t version,
                                                            const Generator& generate) {
  ASSIGN_OR_RETURN(auto e, Fresh(name, version, generate));
  std::lock_guard lock(mu_);
  return std::make_pair(e->size, e->version);
}

}  // namespace modelfs::fs
