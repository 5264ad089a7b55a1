#include "fs/weights_folder.h"

#include <time.h>

#include <algorithm>
#include <cstdio>

namespace modelfs::fs {
namespace {

using weights::WeightStore;

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}


// A content version from the hash itself (a tensor's bytes never change under its hash; a link's
// target changes exactly when its hash does). Never 0.
uint64_t VersionOf(const std::string& hash) {
  uint64_t v = 0;
  for (size_t i = 0; i < 16 && i < hash.size(); ++i) {
    char c = hash[i];
    v = (v << 4) | static_cast<uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
  }
  return v | 1;
}

NodeAttr TensorFile(const weights::WeightMetadata& m) {
  NodeAttr a;
  a.type = NodeType::kFile;
  a.size = m.npy_bytes;
  a.mtime = TimespecFromNanos(m.mtime_ns);
  a.version = VersionOf(m.hash);
  a.writable = false;  // mode 0444: a write must reproduce the bytes exactly
  return a;
}

NodeAttr LinkAttr(const std::string& hash, int64_t mtime_ns) {
  NodeAttr a;
  a.type = NodeType::kSymlink;
  a.size = hash.size();
  a.mtime = TimespecFromNanos(mtime_ns);
  a.version = VersionOf(hash);
  return a;
}

std::string Where(const Path& p) { return "weights/" + JoinPath(p); }

Status OneLevel(const Path& p) {
  if (p.empty()) return IsADirectory("weights: a folder");
  if (p.size() > 1) return NotADirectory(Where({p[0]}) + ": not a folder");
  return Status::Ok();
}

std::string Ratio(double r) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", r);
  return buf;
}

std::string ShapeJson(const weights::TensorSpec& spec) {
  std::string s = "[";
  for (size_t i = 0; i < spec.shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(spec.shape[i]);
  }
  return s + "]";
}

// Applies a settable Coral attribute (user.modelfs.name, layer_type, model_name) to meta; false for
// every other (derived) attribute.
bool ApplyCoralXattr(weights::CoralMeta& meta, std::string_view key, const std::string& value) {
  if (key == "user.modelfs.name") meta.name = value;
  else if (key == "user.modelfs.layer_type") meta.layer_type = value;
  else if (key == "user.modelfs.model_name") meta.model_name = value;
  else return false;
  return true;
}

bool SameMeta(const weights::CoralMeta& a, const weights::CoralMeta& b) {
  return a.name == b.name && a.layer_type == b.layer_type && a.model_name == b.model_name;
}

// Link targets written by ln -s: "<hash>" or "./<hash>", or another name (stored by its hash).
std::string StripDotSlash(std::string t) {
  while (t.rfind("./", 0) == 0) t.erase(0, 2);
  return t;
}

}  // namespace

WeightsFolder::WeightsFolder(std::unique_ptr<weights::WeightStore> store, std::string cache_dir)
    : store_(std::move(store)), cache_(std::move(cache_dir), 4), changed_ns_(0) {
  // The folder's time until something changes: its newest entry's, the same at every mount (a time
  // of "now" would look like a change to rsync, and drop a time it set: dir_times.h).
  int64_t newest = 0;
  for (const std::string& hash : store_->List()) {
    if (auto m = store_->GetMetadata(hash); m.ok()) newest = std::max(newest, m->mtime_ns);
  }
  for (const auto& n : store_->ListNames()) newest = std::max(newest, n.mtime_ns);
  changed_ns_.store(newest);
}

void WeightsFolder::Touch() { changed_ns_.store(NowNs()); }

Result<WeightsFolder::Link> WeightsFolder::FindLink(const std::string& name) {
  auto r = store_->ResolveName(name);
  if (r.ok()) return Link{r->hash, r->mtime_ns};
  if (r.status().code() != StatusCode::kNotFound) return r.status();
  std::lock_guard lock(mu_);
  auto it = dangling_.find(name);
  if (it == dangling_.end()) return NotFound(Where({name}) + ": no such tensor or name");
  return it->second;
}

Status WeightsFolder::PointName(const std::string& name, const std::string& hash, int64_t mtime_ns) {
  RETURN_IF_ERROR(WeightStore::ValidateName(name));
  if (!WeightStore::IsHash(hash)) {
    return InvalidArgument(Where({name}) + ": a name must point to a tensor's hash (64 hex digits), not '" +
                           hash + "'");
  }
  if (store_->Exists(hash)) {
    RETURN_IF_ERROR(store_->SetName(name, hash, mtime_ns));
    std::lock_guard lock(mu_);
    dangling_.erase(name);
  } else {
    // The tensor may still come (rsync makes links before it copies files); the name lives here
    // until then. A stored name being re-pointed at a missing tensor stops being stored.
    if (store_->ResolveName(name).ok()) RETURN_IF_ERROR(store_->RemoveName(name));
    std::lock_guard lock(mu_);
    dangling_[name] = Link{hash, mtime_ns};
  }
  Touch();
  return Status::Ok();
}

void WeightsFolder::ResolveDangling(const std::string& hash) {
  std::vector<std::pair<std::string, Link>> ready;
  {
    std::lock_guard lock(mu_);
    for (auto it = dangling_.begin(); it != dangling_.end();) {
      if (it->second.hash == hash) {
        ready.emplace_back(it->first, it->second);
        it = dangling_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const auto& [name, link] : ready) {
    // The name was accepted when it was made; storing it now can only fail on I/O, which the log shows.
    store_->SetName(name, link.hash, link.mtime_ns).IgnoreError();
  }
}

Result<NodeAttr> WeightsFolder::Stat(const Path& p) {
  if (p.empty()) {
    NodeAttr a;
    a.type = NodeType::kDir;
    a.mtime = TimespecFromNanos(changed_ns_.load());
    return a;
  }
  RETURN_IF_ERROR(OneLevel(p));
  if (WeightStore::IsHash(p[0])) {
    ASSIGN_OR_RETURN(weights::WeightMetadata m, store_->GetMetadata(p[0]));
    return TensorFile(m);
  }
  ASSIGN_OR_RETURN(Link l, FindLink(p[0]));
  return LinkAttr(l.hash, l.mtime_ns);
}

Result<std::vector<DirEntry>> WeightsFolder::List(const Path& dir) {
  if (!dir.empty()) {
    RETURN_IF_ERROR(OneLevel(dir));
    ASSIGN_OR_RETURN(NodeAttr a, Stat(dir));
    (void)a;
    return NotADirectory(Where(dir) + ": not a folder");
  }
  std::vector<DirEntry> out;
  // A failing index is an error of the listing, never an empty folder.
  ASSIGN_OR_RETURN(std::vector<std::string> hashes, store_->Hashes());
  for (const std::string& hash : hashes) {
    auto m = store_->GetMetadata(hash);
    if (!m.ok() && m.status().code() == StatusCode::kNotFound) continue;  // deleted meanwhile
    if (!m.ok()) return m.status();
    out.push_back({hash, TensorFile(*m)});
  }
  ASSIGN_OR_RETURN(std::vector<weights::WeightStore::NameInfo> names, store_->Names());
  for (const auto& n : names) out.push_back({n.name, LinkAttr(n.hash, n.mtime_ns)});
  std::lock_guard lock(mu_);
  for (const auto& [name, l] : dangling_) out.push_back({name, LinkAttr(l.hash, l.mtime_ns)});
  return out;
}

Result<FileContent> WeightsFolder::Open(const Path& p) {
  RETURN_IF_ERROR(OneLevel(p));
  if (!WeightStore::IsHash(p[0])) {
    // The kernel follows links itself; an open never reaches a name.
    return InvalidArgument(Where(p) + ": a link (open its target)");
  }
  const std::string hash = p[0];
  return cache_.Get(hash, 1, [this, hash](int fd) -> Result<uint64_t> {
    RETURN_IF_ERROR(store_->WriteNpy(hash, fd));
    return 1;
  });
}

Status WeightsFolder::CheckWritable(const Path& p) {
  RETURN_IF_ERROR(OneLevel(p));
  // A hash may be written (the bytes must hash to it: checked at commit); anything else is a name.
  if (WeightStore::IsHash(p[0])) return Status::Ok();
  return WeightStore::ValidateName(p[0]);
}

Status WeightsFolder::Commit(const Path& p, StagedFile& staged, const CommitContext& ctx,
                             Vanished* vanished) {
  RETURN_IF_ERROR(CheckWritable(p));
  const std::string& target = p[0];
  const bool by_hash = WeightStore::IsHash(target);
  weights::StoreOptions opts;
  opts.durable = ctx.durable;
  if (ctx.mtime) opts.mtime_ns = NanosFromTimespec(*ctx.mtime);
  weights::CoralMeta meta;
  if (!by_hash) meta.name = target;
  // Coral metadata set on the file before its commit (rsync -aX restoring a backup, setfattr).
  for (const auto& [key, value] : ctx.xattrs) ApplyCoralXattr(meta, key, value);
  std::optional<std::string_view> expected;
  if (by_hash) expected = target;
  ASSIGN_OR_RETURN(weights::StoreResult r, store_->StoreNpy(staged.fd(), meta, opts, expected));
  if (!r.added && !ctx.xattrs.empty()) {
    ASSIGN_OR_RETURN(weights::WeightMetadata m, store_->GetMetadata(r.hash));
    weights::CoralMeta merged = m.meta;
    for (const auto& [key, value] : ctx.xattrs) ApplyCoralXattr(merged, key, value);
    if (!SameMeta(merged, m.meta)) RETURN_IF_ERROR(store_->SetCoralMeta(r.hash, merged));
  }
  if (by_hash) {
    // A restore of a tensor the store already has carries the backup's time.
    if (!r.added && ctx.mtime) {
      RETURN_IF_ERROR(store_->SetMtime(r.hash, NanosFromTimespec(*ctx.mtime)));
      vanished->push_back(p);
    }
  } else {
    RETURN_IF_ERROR(PointName(target, r.hash, opts.mtime_ns.value_or(NowNs())));
    // The name is now a link: the file inode that was written must not stand for it (the core gives
    // the link a fresh inode at the next lookup).
    vanished->push_back(p);
  }
  if (r.added) {
    ResolveDangling(r.hash);
    Touch();
  }
  return Status::Ok();
}

Status WeightsFolder::Remove(const Path& p, Vanished* vanished) {
  RETURN_IF_ERROR(OneLevel(p));
  const std::string& target = p[0];
  if (WeightStore::IsHash(target)) {
    ASSIGN_OR_RETURN(weights::WeightMetadata m, store_->GetMetadata(target));
    RETURN_IF_ERROR(store_->Delete(target));
    for (const auto& n : m.names) vanished->push_back({n});
  } else {
    bool was_dangling = false;
    {
      std::lock_guard lock(mu_);
      was_dangling = dangling_.erase(target) > 0;
    }
    if (!was_dangling) RETURN_IF_ERROR(store_->RemoveName(target));
  }
  Touch();
  return Status::Ok();
}

Result<MkdirOutcome> WeightsFolder::MakeDir(const Path& p) {
  return PermissionDenied(Where(p) + ": weights/ holds tensors and names only, no folders");
}

Status WeightsFolder::RemoveDir(const Path& p, Vanished* vanished) {
  (void)vanished;
  if (p.empty()) return PermissionDenied("weights: cannot be removed");
  ASSIGN_OR_RETURN(NodeAttr a, Stat(p));
  (void)a;
  return NotADirectory(Where(p) + ": not a folder (use rm)");
}

Status WeightsFolder::Rename(const Path& from, const Path& to, Vanished* vanished) {
  RETURN_IF_ERROR(OneLevel(from));
  RETURN_IF_ERROR(OneLevel(to));
  if (WeightStore::IsHash(from[0])) {
    return NotSupported(Where(from) + ": a tensor is named by its hash and cannot be renamed (ln -s it)");
  }
  if (WeightStore::IsHash(to[0])) {
    return InvalidArgument(Where(to) + ": a hash names its tensor; a name cannot take it");
  }
  ASSIGN_OR_RETURN(Link l, FindLink(from[0]));
  // Re-point (or create) the new name first: a crash in between leaves two names, never none.
  RETURN_IF_ERROR(PointName(to[0], l.hash, l.mtime_ns));
  return Remove(from, vanished);
}

Result<std::string> WeightsFolder::ReadLink(const Path& p) {
  RETURN_IF_ERROR(OneLevel(p));
  if (WeightStore::IsHash(p[0])) return InvalidArgument(Where(p) + ": a tensor, not a link");
  ASSIGN_OR_RETURN(Link l, FindLink(p[0]));
  return l.hash;
}

Status WeightsFolder::MakeSymlink(const Path& p, const std::string& target, Vanished* vanished) {
  RETURN_IF_ERROR(OneLevel(p));
  (void)vanished;
  RETURN_IF_ERROR(WeightStore::ValidateName(p[0]));
  std::string t = StripDotSlash(target);
  if (!WeightStore::IsHash(t)) {
    // A link to another name points at that name's tensor.
    auto other = FindLink(t);
    if (!other.ok()) {
      return InvalidArgument(Where(p) + ": links here point to a tensor's hash or to another name, not '" +
                             target + "'");
    }
    t = other->hash;
  }
  return PointName(p[0], t, NowNs());
}

Status WeightsFolder::SetMtime(const Path& p, const timespec& mtime, Vanished* vanished) {
  (void)vanished;
  if (p.empty()) return Status::Ok();  // the folder's time: the core keeps it (dir_times.h)
  RETURN_IF_ERROR(OneLevel(p));
  if (WeightStore::IsHash(p[0])) return store_->SetMtime(p[0], NanosFromTimespec(mtime));
  {
    std::lock_guard lock(mu_);
    auto it = dangling_.find(p[0]);
    if (it != dangling_.end()) {
      it->second.mtime_ns = NanosFromTimespec(mtime);
      return Status::Ok();
    }
  }
  return store_->SetNameMtime(p[0], NanosFromTimespec(mtime));
}

Status WeightsFolder::SetXattr(const Path& p, const std::string& name, std::string_view value) {
  RETURN_IF_ERROR(OneLevel(p));
  std::string hash = p[0];
  if (!WeightStore::IsHash(hash)) {
    ASSIGN_OR_RETURN(Link l, FindLink(hash));
    hash = l.hash;
  }
  if (!store_->Exists(hash)) return Status::Ok();  // a dangling link has no tensor to describe yet
  ASSIGN_OR_RETURN(weights::WeightMetadata m, store_->GetMetadata(hash));
  weights::CoralMeta meta = m.meta;
  // Derived attributes (shape, dtype, ...) are accepted and not kept, so rsync -aX restores work.
  if (!ApplyCoralXattr(meta, name, std::string(value)) || SameMeta(meta, m.meta)) return Status::Ok();
  return store_->SetCoralMeta(hash, meta);
}

Result<std::vector<std::pair<std::string, std::string>>> WeightsFolder::Xattrs(const Path& p) {
  std::vector<std::pair<std::string, std::string>> out;
  if (p.empty()) {
    weights::StorageInfo info = store_->GetStorageInfo();
    out.emplace_back("user.modelfs.tensors", std::to_string(info.tensors));
    out.emplace_back("user.modelfs.names", std::to_string(info.names));
    out.emplace_back("user.modelfs.deltas", std::to_string(info.deltas));
    out.emplace_back("user.modelfs.logical_bytes", std::to_string(info.logical_bytes));
    out.emplace_back("user.modelfs.stored_bytes", std::to_string(info.stored_bytes));
    out.emplace_back("user.modelfs.ingested_bytes", std::to_string(info.ingested_bytes));
    out.emplace_back("user.modelfs.compression_ratio", Ratio(info.compression_ratio));
    out.emplace_back("user.modelfs.dedup_ratio", Ratio(info.dedup_ratio));
    out.emplace_back("user.modelfs.codec", info.codec);
    return out;
  }
  RETURN_IF_ERROR(OneLevel(p));
  // Links have none of their own (Linux allows no user.* attributes on symlinks, so rsync -X could
  // not copy them); getfattr follows a link to its tensor's.
  if (!WeightStore::IsHash(p[0])) return out;
  ASSIGN_OR_RETURN(weights::WeightMetadata m, store_->GetMetadata(p[0]));
  out.emplace_back("user.modelfs.name", m.meta.name);
  out.emplace_back("user.modelfs.shape", ShapeJson(m.spec));
  out.emplace_back("user.modelfs.dtype", std::string(weights::DTypeName(m.spec.dtype)));
  out.emplace_back("user.modelfs.layer_type", m.meta.layer_type);
  out.emplace_back("user.modelfs.model_name", m.meta.model_name);
  out.emplace_back("user.modelfs.compression_info", m.compression_info);
  out.emplace_back("user.modelfs.hash", m.hash);
  out.emplace_back("user.modelfs.stored_bytes", std::to_string(m.stored_bytes));
  std::string names;
  for (const auto& n : m.names) names += (names.empty() ? "" : "\n") + n;
  out.emplace_back("user.modelfs.names", names);
  if (m.base_hash) out.emplace_back("user.modelfs.delta_base", *m.base_hash);
  return out;
}

}  // namespace modelfs::fs
