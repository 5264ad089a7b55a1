#include "fs/embeddings_folder.h"

#include <unistd.h>

#include <algorithm>

#include "fs/embeddings_text.h"
#include "stores/common/file_util.h"

namespace modelfs::fs {
namespace {

timespec ToTimespec(int64_t micros) {
  timespec ts;
  ts.tv_sec = micros / 1000000;
  ts.tv_nsec = (micros % 1000000) * 1000;
  return ts;
}

constexpr size_t kCachedViews = 6;

}  // namespace

EmbeddingsFolder::EmbeddingsFolder(std::unique_ptr<embeddings::EmbeddingStore> store,
                                   std::string staging_dir)
    : store_(std::move(store)), staging_dir_(std::move(staging_dir)), cache_(staging_dir_, kCachedViews) {}

Result<EmbeddingsFolder::View> EmbeddingsFolder::Resolve(const Path& p) {
  View v;
  v.key = JoinPath(p);
  if (p.empty()) {
    v.kind = Kind::kRoot;
    return v;
  }
  if (p.size() == 1) {
    if (p[0] == "checkpoint") {
      v.kind = Kind::kCheckpoint;
      return v;
    }
    if (p[0] == "groups") {
      v.kind = Kind::kGroups;
      return v;
    }
    if (p[0] == "group") {
      v.kind = Kind::kGroupDir;
      return v;
    }
    if (p[0].rfind("dump", 0) == 0) {
      ASSIGN_OR_RETURN(auto view, ParseView(p[0], /*allow_group=*/true));
      if (view.first != "dump") return NotFound("embeddings/" + p[0] + ": no such view");
      v.kind = Kind::kDump;
      v.conditions = view.second;
      v.conditioned = p[0] != "dump";
      return v;
    }
    return NotFound("embeddings/" + p[0] + ": no such view (checkpoint, dump, group/<g>, groups)");
  }
  if (p.size() == 2 && p[0] == "group") {
    ASSIGN_OR_RETURN(auto view, ParseView(p[1], /*allow_group=*/false));
    int64_t g = -1;
    const std::string& s = view.first;
    if (s.empty() || s.size() > 3 || s.find_first_not_of("0123456789") != std::string::npos ||
        (s.size() > 1 && s[0] == '0') || (g = std::stoll(s)) >= embeddings::kGroups) {
      return InvalidArgument("embeddings/group/" + p[1] + ": a group is 0..255");
    }
    v.kind = Kind::kGroup;
    v.conditions = view.second;
    v.conditions.group = static_cast<int>(g);
    v.conditioned = p[1] != s;
    return v;
  }
  return NotFound("embeddings/" + JoinPath(p) + ": no such entry");
}

uint64_t EmbeddingsFolder::CurrentVersion() {
  const int64_t ct = store_->change_time_us();
  std::lock_guard lock(version_mu_);
  if (ct != seen_change_time_) {
    seen_change_time_ = ct;
    ++generation_;
  }
  return generation_;
}

GeneratedCache::Generator EmbeddingsFolder::GeneratorFor(const View& v) {
  return [this, v](int fd) -> Result<uint64_t> {
    std::shared_lock no_commit(commit_mu_);
    ASSIGN_OR_RETURN(auto snap, store_->TakeSnapshot());
    const uint64_t version = CurrentVersion();
    no_commit.unlock();
    if (v.kind == Kind::kCheckpoint) {
      RETURN_IF_ERROR(store_->Checkpoint(*snap, fd));
    } else if (v.kind == Kind::kGroups) {
      // Configuration and data change together in change_time; reading it after the snapshot can
      // only make the text newer than the version it is filed under, which a later stat corrects.
      ASSIGN_OR_RETURN(auto groups, store_->Groups());
      std::string text = FormatGroups(groups);
      RETURN_IF_ERROR(PwriteFull(fd, text.data(), text.size(), 0));
    } else {
      RETURN_IF_ERROR(store_->Dump(*snap, v.conditions, fd));
    }
    return version;
  };
}

Result<std::vector<int>> EmbeddingsFolder::GroupsWithKeys() {
  // The counts in the header of the whole-store dump, which is generated once per version and cached
  // anyway (counting keys directly would scan the store at every stat).
  View all;
  all.kind = Kind::kDump;
  all.key = "dump";
  ASSIGN_OR_RETURN(FileContent dump,
                   cache_.Get(all.key, CurrentVersion(), GeneratorFor(all)));
  uint64_t counts[embeddings::kGroups] = {};
  ASSIGN_OR_RETURN(size_t n, PreadFull(dump.fd.get(), counts, sizeof counts, 4 * embeddings::kGroups));
  if (n != sizeof counts) return Corruption("embeddings: dump shorter than its header");
  std::vector<int> out;
  for (int g = 0; g < embeddings::kGroups; ++g) {
    if (counts[g] > 0) out.push_back(g);
  }
  return out;
}

Result<std::vector<int>> EmbeddingsFolder::ListedGroups() {
  ASSIGN_OR_RETURN(auto groups, store_->Groups());
  ASSIGN_OR_RETURN(auto with_keys, GroupsWithKeys());
  for (const auto& kv : groups) with_keys.push_back(kv.first);
  std::sort(with_keys.begin(), with_keys.end());
  with_keys.erase(std::unique(with_keys.begin(), with_keys.end()), with_keys.end());
  return with_keys;
}

Result<NodeAttr> EmbeddingsFolder::Stat(const Path& p) {
  ASSIGN_OR_RETURN(View v, Resolve(p));
  NodeAttr a;
  a.mtime = ToTimespec(store_->change_time_us());
  if (v.kind == Kind::kRoot || v.kind == Kind::kGroupDir) {
    a.type = NodeType::kDir;
    return a;
  }
  if (v.kind == Kind::kGroup) {
    ASSIGN_OR_RETURN(auto listed, ListedGroups());
    if (std::find(listed.begin(), listed.end(), *v.conditions.group) == listed.end()) {
      return NotFound("embeddings/group/" + std::to_string(*v.conditions.group) +
                      ": no configuration or data for this group");
    }
  }
  ASSIGN_OR_RETURN(auto size_version, cache_.SizeOf(v.key, CurrentVersion(), GeneratorFor(v)));
  a.type = NodeType::kFile;
  a.size = size_version.first;
  a.version = size_version.second;
  a.writable = !v.conditioned;
  return a;
}

Result<std::vector<DirEntry>> EmbeddingsFolder::List(const Path& dir) {
  ASSIGN_OR_RETURN(View v, Resolve(dir));
  std::vector<DirEntry> out;
  std::vector<Path> names;
  if (v.kind == Kind::kRoot) {
    // groups first: tools that restore in listing order (tar -x, cp -a of such a backup) configure
    // the groups before they load the records.
    names = {{"groups"}, {"checkpoint"}, {"dump"}, {"group"}};
  } else if (v.kind == Kind::kGroupDir) {
    ASSIGN_OR_RETURN(auto listed, ListedGroups());
    for (int g : listed) names.push_back({"group", std::to_string(g)});
  } else {
    return NotADirectory("embeddings/" + JoinPath(dir) + ": not a folder");
  }
  for (const Path& n : names) {
    ASSIGN_OR_RETURN(NodeAttr a, Stat(n));
    out.push_back({n.back(), a});
  }
  return out;
}

Result<FileContent> EmbeddingsFolder::Open(const Path& p) {
  ASSIGN_OR_RETURN(View v, Resolve(p));
  if (v.kind == Kind::kRoot || v.kind == Kind::kGroupDir) {
    return IsADirectory("embeddings/" + JoinPath(p) + ": a folder");
  }
  return cache_.Get(v.key, CurrentVersion(), GeneratorFor(v));
}

Status EmbeddingsFolder::CheckWritable(const Path& p) {
  ASSIGN_OR_RETURN(View v, Resolve(p));
  if (v.kind == Kind::kRoot || v.kind == Kind::kGroupDir) {
    return IsADirectory("embeddings/" + JoinPath(p) + ": a folder");
  }
  if (v.conditioned) {
    return PermissionDenied("embeddings/" + JoinPath(p) + ": views with conditions are read-only");
  }
  return Status::Ok();
}

Status EmbeddingsFolder::Commit(const Path& p, StagedFile& staged, const CommitContext& ctx,
                                Vanished* vanished) {
  RETURN_IF_ERROR(CheckWritable(p));
  ASSIGN_OR_RETURN(View v, Resolve(p));
  // The bytes the view already holds change nothing (so restoring a backup twice is a no-op).
  ASSIGN_OR_RETURN(FileContent current, Open(p));
  ASSIGN_OR_RETURN(bool same, SameContent(staged.fd(), current.fd.get()));
  if (same) return Status::Ok();
  if (lseek(staged.fd(), 0, SEEK_SET) < 0) return ErrnoError("seek staged file", errno);
  std::unique_lock commit(commit_mu_);
  {
    // Whatever happens below, the views' next version is new (a failed load changes nothing, and
    // a regeneration costs less than a stale view).
    std::lock_guard lock(version_mu_);
    ++generation_;
  }
  switch (v.kind) {
    case Kind::kCheckpoint:
      RETURN_IF_ERROR(store_->LoadCheckpoint(staged.fd()));
      break;
    case Kind::kDump:
      RETURN_IF_ERROR(store_->LoadDump(staged.fd(), std::nullopt));
      break;
    case Kind::kGroup:
      RETURN_IF_ERROR(store_->LoadDump(staged.fd(), v.conditions.group));
      break;
    case Kind::kGroups: {
      ASSIGN_OR_RETURN(uint64_t size, staged.Size());
      if (size > (1u << 20)) return TooLarge("embeddings/groups: over 1 MiB");
      std::string text(size, '\0');
      ASSIGN_OR_RETURN(size_t n, PreadFull(staged.fd(), text.data(), size, 0));
      text.resize(n);
      ASSIGN_OR_RETURN(auto groups, ParseGroups(text));
      // Every line is checked against the store before any is applied, so a bad line changes nothing.
      ASSIGN_OR_RETURN(auto current_groups, store_->Groups());
      commit.unlock();  // GroupsWithKeys reads the cached dump, whose generation takes the lock shared
      ASSIGN_OR_RETURN(auto with_data, GroupsWithKeys());
      commit.lock();
      for (const auto& [g, c] : groups) {
        auto it = current_groups.find(g);
        bool has_keys = std::find(with_data.begin(), with_data.end(), g) != with_data.end();
        if (it != current_groups.end() && it->second.dim != c.dim && has_keys) {
          return InvalidArgument("embeddings/groups: group " + std::to_string(g) +
                                 " has keys of dim " + std::to_string(it->second.dim));
        }
      }
      RETURN_IF_ERROR(store_->ConfigureGroups(groups));  // all lines or none
      break;
    }
    default:
      return IsADirectory("embeddings/" + JoinPath(p) + ": a folder");
  }
  // A time set on the staged file (rsync sets the backup's mtime before its rename) becomes the
  // store's change time, so a restored store shows the backup's mtimes and a second rsync copies
  // nothing. Every view carries the same time, so this cannot hide a change from rsync.
  if (ctx.mtime) {
    RETURN_IF_ERROR(store_->SetChangeTime(static_cast<int64_t>(ctx.mtime->tv_sec) * 1000000 +
                                          ctx.mtime->tv_nsec / 1000));
  }
  {
    std::lock_guard lock(version_mu_);
    ++generation_;
    seen_change_time_ = store_->change_time_us();
  }
  // Every view changed with the store: the kernel's entries for them must be looked up again.
  vanished->push_back({"checkpoint"});
  vanished->push_back({"dump"});
  vanished->push_back({"groups"});
  return Status::Ok();
}

Status EmbeddingsFolder::Remove(const Path& p, Vanished* vanished) {
  (void)vanished;
  // Every file here is a view of the store (IsAutomatic): nothing to remove.
  ASSIGN_OR_RETURN(NodeAttr a, Stat(p));
  if (a.type == NodeType::kDir) return IsADirectory("embeddings/" + JoinPath(p) + ": a folder");
  return Status::Ok();
}

Result<MkdirOutcome> EmbeddingsFolder::MakeDir(const Path& p) {
  return PermissionDenied("embeddings/" + JoinPath(p) + ": the folders here are fixed");
}

Status EmbeddingsFolder::RemoveDir(const Path& p, Vanished* vanished) {
  (void)vanished;
  return PermissionDenied("embeddings/" + JoinPath(p) + ": the folders here are fixed");
}

}  // namespace modelfs::fs
