#include "fs/timeseries_folder.h"


namespace modelfs::fs {
namespace {

using timeseries::SeriesInfo;


NodeAttr SeriesFile(const SeriesInfo& s) {
  NodeAttr a;
  a.type = NodeType::kFile;
  a.size = s.length * 16;
  a.mtime = TimespecFromNanos(s.mtime_ns);
  a.version = s.version;
  a.writable = true;
  return a;
}

NodeAttr RootDir(int64_t change_ns) {
  NodeAttr a;
  a.type = NodeType::kDir;
  a.mtime = TimespecFromNanos(change_ns);
  return a;
}

std::string Where(const Path& p) { return "timeseries/" + JoinPath(p); }

// Series are files directly below the folder; deeper paths name nothing.
Status CheckDepth(const Path& p) {
  if (p.empty()) return IsADirectory("timeseries: a folder");
  if (p.size() > 1) return NotADirectory(Where({p[0]}) + ": a series, not a folder");
  return Status::Ok();
}

}  // namespace

Result<NodeAttr> TimeSeriesFolder::Stat(const Path& p) {
  if (p.empty()) {
    // Stable until the listing changes: a folder mtime that moved on every stat would make the
    // kernel drop its cached listing of (possibly 100,000) series each time.
    ASSIGN_OR_RETURN(int64_t changed, store_->ChangeTimeNs());
    return RootDir(changed);
  }
  RETURN_IF_ERROR(CheckDepth(p));
  ASSIGN_OR_RETURN(SeriesInfo s, store_->Info(p[0]));
  return SeriesFile(s);
}

Result<std::vector<DirEntry>> TimeSeriesFolder::List(const Path& dir) {
  if (!dir.empty()) {
    RETURN_IF_ERROR(CheckDepth(dir));
    ASSIGN_OR_RETURN(SeriesInfo s, store_->Info(dir[0]));
    (void)s;
    return NotADirectory(Where(dir) + ": a series, not a folder");
  }
  std::vector<SeriesInfo> all = store_->List();
  std::vector<DirEntry> out;
  out.reserve(all.size());
  for (auto& s : all) {
    NodeAttr a = SeriesFile(s);
    out.push_back({std::move(s.id), a});
  }
  return out;
}

Result<FileContent> TimeSeriesFolder::Open(const Path& p) {
  RETURN_IF_ERROR(CheckDepth(p));
  ASSIGN_OR_RETURN(timeseries::TimeSeriesStore::Data d, store_->OpenData(p[0]));
  FileContent c;
  c.fd = std::move(d.fd);
  c.size = d.info.length * 16;
  return c;
}

Status TimeSeriesFolder::CheckWritable(const Path& p) {
  if (p.empty()) return IsADirectory("timeseries: a folder");
  if (p.size() > 1) return NotADirectory(Where({p[0]}) + ": series are files directly in timeseries/");
  return timeseries::TimeSeriesStore::ValidateId(p[0]);
}

Status TimeSeriesFolder::Commit(const Path& p, StagedFile& staged, const CommitContext& ctx,
                                Vanished* vanished) {
  RETURN_IF_ERROR(CheckWritable(p));
  timeseries::WriteOptions opts;
  if (ctx.mtime) opts.mtime_ns = NanosFromTimespec(*ctx.mtime);
  opts.durable = ctx.durable;
  ASSIGN_OR_RETURN(timeseries::WriteResult r, store_->Commit(p[0], staged, opts));
  // Same bytes with another time (rsync restoring a series whose only difference is its mtime): the
  // inode stays, so its cached attributes must go.
  if (r.outcome == timeseries::WriteOutcome::kTimeChanged) vanished->push_back(p);
  return Status::Ok();
}

Status TimeSeriesFolder::Remove(const Path& p, Vanished* vanished) {
  (void)vanished;
  RETURN_IF_ERROR(CheckDepth(p));
  return store_->Remove(p[0]);
}

Result<MkdirOutcome> TimeSeriesFolder::MakeDir(const Path& p) {
  return PermissionDenied(Where(p) + ": timeseries/ holds series files only, no folders");
}

Status TimeSeriesFolder::RemoveDir(const Path& p, Vanished* vanished) {
  (void)vanished;
  if (p.empty()) return PermissionDenied("timeseries: cannot be removed");
  ASSIGN_OR_RETURN(NodeAttr a, Stat(p));
  (void)a;
  return NotADirectory(Where(p) + ": a series, not a folder (use rm)");
}

Result<std::vector<std::pair<std::string, std::string>>> TimeSeriesFolder::Xattrs(const Path& p) {
  std::vector<std::pair<std::string, std::string>> out;
  if (p.empty()) {
    out.emplace_back("user.modelfs.count", std::to_string(store_->Count()));
    return out;
  }
  RETURN_IF_ERROR(CheckDepth(p));
  ASSIGN_OR_RETURN(SeriesInfo s, store_->Info(p[0]));
  out.emplace_back("user.modelfs.size", std::to_string(s.length));
  return out;
}

}  // namespace modelfs::fs
