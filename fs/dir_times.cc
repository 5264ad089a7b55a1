#include "fs/dir_times.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <sstream>

#include "fs/folder.h"
#include "fs/log.h"
#include "stores/common/file_util.h"

namespace modelfs::fs {
namespace {

std::string Line(const std::string& path, int64_t own, int64_t set, uint64_t names) {
  return std::to_string(own) + " " + std::to_string(set) + " " + std::to_string(names) + " " + path + "\n";
}

}  // namespace

Result<std::unique_ptr<DirTimes>> DirTimes::Open(const std::string& file) {
  std::unique_ptr<DirTimes> t(new DirTimes());
  if (file.empty()) return t;
  auto text = ReadFileToString(file);
  if (text.ok()) {
    std::istringstream in(*text);
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      Entry e;
      std::string path;
      // A torn last line (a crash during an append) is skipped.
      if (!(fields >> e.own_ns >> e.set_ns >> e.names) || fields.get() != ' ' || !std::getline(fields, path)) {
        continue;
      }
      t->times_[path] = e;
    }
  } else if (text.status().code() != StatusCode::kNotFound) {
    return text.status();
  }
  // Compacted: one line per folder, written whole, then renamed over the log (crash-safe: the old
  // log or the new one).
  std::string compact;
  for (const auto& [path, e] : t->times_) compact += Line(path, e.own_ns, e.set_ns, e.names);
  RETURN_IF_ERROR(WriteStringToFile(file + ".tmp", compact));
  if (rename((file + ".tmp").c_str(), file.c_str()) != 0) return ErrnoError("rename " + file, errno);
  ASSIGN_OR_RETURN(t->file_, OpenFile(file, O_WRONLY | O_APPEND | O_CLOEXEC));
  return t;
}

uint64_t DirTimes::NamesHash(std::vector<std::string> names) {
  std::sort(names.begin(), names.end());
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  for (const auto& n : names) XXH3_64bits_update(st, n.c_str(), n.size() + 1);  // with its NUL
  uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return h;
}

timespec DirTimes::Shown(const std::string& path, const timespec& own, const Names& names) {
  const int64_t own_ns = NanosFromTimespec(own);
  Entry e;
  {
    std::lock_guard lock(mu_);
    auto it = times_.find(path);
    if (it == times_.end()) return own;
    e = it->second;
  }
  if (e.own_ns == own_ns) return TimespecFromNanos(e.set_ns);
  // The store's time moved: did the names change, or only what is below them?
  auto now = names();
  std::lock_guard lock(mu_);
  auto it = times_.find(path);
  if (it == times_.end()) return own;
  if (!now.ok() || *now != it->second.names) {
    times_.erase(it);  // the listing changed: the folder's own time from now on
    return own;
  }
  it->second.own_ns = own_ns;  // (not written: recomputed the same way after a remount)
  return TimespecFromNanos(it->second.set_ns);
}

Status DirTimes::Set(const std::string& path, const timespec& own, const timespec& set, uint64_t names) {
  Entry e{NanosFromTimespec(own), NanosFromTimespec(set), names};
  std::lock_guard lock(mu_);
  auto it = times_.find(path);
  if (it != times_.end() && it->second.own_ns == e.own_ns && it->second.set_ns == e.set_ns &&
      it->second.names == e.names) {
    return Status::Ok();
  }
  times_[path] = e;
  return Append(path, e);
}

Status DirTimes::Append(const std::string& path, const Entry& e) {
  if (!file_.valid()) return Status::Ok();
  // One write(2) per line on an O_APPEND file: lines never interleave.
  const std::string line = Line(path, e.own_ns, e.set_ns, e.names);
  return PwriteFull(file_.get(), line.data(), line.size(), 0);
}

}  // namespace modelfs::fs
