#include "fs/models_folder.h"

#include <sys/mman.h>

#include <charconv>

#include "stores/common/file_util.h"

namespace modelfs::fs {
namespace {

using models::FormatHistoryTime;
using models::ParseHistoryTime;

timespec ToTimespec(int64_t micros) {
  timespec ts;
  ts.tv_sec = micros / 1000000;
  ts.tv_nsec = (micros % 1000000) * 1000;
  if (ts.tv_nsec < 0) {
    ts.tv_sec -= 1;
    ts.tv_nsec += 1000000000;
  }
  return ts;
}

int64_t ToMicros(const timespec& ts) {
  return static_cast<int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

// Canonical decimal: digits only, no sign, no leading zero (except "0"), fits in int64.
Result<int64_t> ParseNumber(const std::string& s, const char* what) {
  int64_t v = 0;
  const bool canonical = !s.empty() && s.size() <= 18 && (s == "0" || s[0] != '0') &&
                         s.find_first_not_of("0123456789") == std::string::npos;
  if (!canonical || std::from_chars(s.data(), s.data() + s.size(), v).ec != std::errc()) {
    return InvalidArgument("'" + s + "' is not a " + what + " (a non-negative decimal number)");
  }
  return v;
}

Result<int64_t> ParseModelId(const std::string& s) {
  ASSIGN_OR_RETURN(int64_t id, ParseNumber(s, "model id"));
  if (id <= 0) return InvalidArgument("'" + s + "' is not a model id (ids start at 1)");
  return id;
}

NodeAttr Dir(int64_t micros) {
  NodeAttr a;
  a.type = NodeType::kDir;
  a.mtime = ToTimespec(micros);
  return a;
}

NodeAttr VersionFile(const models::VersionInfo& v, bool writable) {
  NodeAttr a;
  a.type = NodeType::kFile;
  a.size = v.size;
  a.mtime = ToTimespec(v.create_time_us);
  a.version = static_cast<uint64_t>(v.version_id);
  a.writable = writable;
  return a;
}

NodeAttr MetaFile(const models::ModelInfo& m) {
  NodeAttr a;
  a.type = NodeType::kFile;
  a.size = m.meta_size;
  a.mtime = ToTimespec(m.meta_time_us);
  // Meta is not versioned; its time changes exactly when its bytes do, so it serves as the version.
  a.version = static_cast<uint64_t>(m.meta_time_us);
  a.writable = true;
  return a;
}

std::string ModelPath(int64_t id) { return "models/" + std::to_string(id); }

}  // namespace

Result<NodeAttr> ModelsFolder::Stat(const Path& p) {
  if (p.empty()) {
    // Moves exactly when the listing does: a folder time of "now" made tar -c say "file changed as
    // we read it" and find -newer list it always.
    ASSIGN_OR_RETURN(int64_t changed, store_->ListChangeTimeUs());
    return Dir(changed);
  }
  ASSIGN_OR_RETURN(int64_t id, ParseModelId(p[0]));
  ASSIGN_OR_RETURN(models::ModelInfo m, store_->GetModel(id));
  if (p.size() == 1) return Dir(m.change_time_us);
  const std::string& kind = p[1];
  if (kind == "meta" && p.size() == 2) return MetaFile(m);
  if (kind != "layers" && kind != "history") {
    return NotFound(ModelPath(id) + "/" + kind + ": no such entry");
  }
  if (p.size() == 2) return Dir(m.change_time_us);
  ASSIGN_OR_RETURN(int64_t layer, ParseNumber(p[2], "layer number"));
  if (kind == "layers") {
    if (p.size() != 3) return NotADirectory(ModelPath(id) + "/layers/" + p[2] + ": a file");
    ASSIGN_OR_RETURN(models::VersionInfo v, store_->NewestVersion(id, layer));
    return VersionFile(v, true);
  }
  if (p.size() == 3) {
    ASSIGN_OR_RETURN(models::VersionInfo v, store_->NewestVersion(id, layer));
    return Dir(v.create_time_us);
  }
  if (p.size() != 4) return NotFound(ModelPath(id) + ": no such entry");
  ASSIGN_OR_RETURN(int64_t t, ParseHistoryTime(p[3]));
  ASSIGN_OR_RETURN(models::VersionInfo v, store_->VersionAt(id, layer, t));
  return VersionFile(v, false);
}

Result<std::vector<DirEntry>> ModelsFolder::List(const Path& dir) {
  std::vector<DirEntry> out;
  if (dir.empty()) {
    ASSIGN_OR_RETURN(auto all, store_->ListModels());
    out.reserve(all.size());
    for (const auto& m : all) out.push_back({std::to_string(m.model_id), Dir(m.change_time_us)});
    return out;
  }
  ASSIGN_OR_RETURN(NodeAttr self, Stat(dir));
  if (self.type != NodeType::kDir) return NotADirectory("models/" + JoinPath(dir) + ": a file");
  ASSIGN_OR_RETURN(int64_t id, ParseModelId(dir[0]));
  ASSIGN_OR_RETURN(models::ModelInfo m, store_->GetModel(id));
  if (dir.size() == 1) {
    out.push_back({"history", Dir(m.change_time_us)});
    out.push_back({"layers", Dir(m.change_time_us)});
    out.push_back({"meta", MetaFile(m)});
    return out;
  }
  if (dir.size() == 2) {
    ASSIGN_OR_RETURN(auto newest, store_->ListNewestVersions(id));
    out.reserve(newest.size());
    for (const auto& v : newest) {
      out.push_back({std::to_string(v.layer_id),
                     dir[1] == "layers" ? VersionFile(v, true) : Dir(v.create_time_us)});
    }
    return out;
  }
  ASSIGN_OR_RETURN(int64_t layer, ParseNumber(dir[2], "layer number"));
  ASSIGN_OR_RETURN(auto versions, store_->ListVersions(id, layer));
  for (const auto& v : versions) {
    out.push_back({FormatHistoryTime(v.create_time_us), VersionFile(v, false)});
  }
  return out;
}

Result<FileContent> ModelsFolder::Open(const Path& p) {
  ASSIGN_OR_RETURN(NodeAttr a, Stat(p));
  if (a.type == NodeType::kDir) return IsADirectory("models/" + JoinPath(p) + ": a folder");
  ASSIGN_OR_RETURN(int64_t id, ParseModelId(p[0]));
  FileContent c;
  if (p[1] == "meta") {
    // Metadata is small (kMaxMetaBytes): served from an anonymous memory file, one per open.
    ASSIGN_OR_RETURN(std::string meta, store_->ReadMeta(id));
    return MemoryFileContent(meta);
  }
  ASSIGN_OR_RETURN(int64_t layer, ParseNumber(p[2], "layer number"));
  models::VersionInfo v;
  if (p[1] == "layers") {
    ASSIGN_OR_RETURN(v, store_->NewestVersion(id, layer));
  } else {
    ASSIGN_OR_RETURN(int64_t t, ParseHistoryTime(p[3]));
    ASSIGN_OR_RETURN(v, store_->VersionAt(id, layer, t));
  }
  ASSIGN_OR_RETURN(c.fd, store_->OpenVersion(v));
  c.size = v.size;
  return c;
}

Status ModelsFolder::CheckWritable(const Path& p) { return CheckName(p, /*existing_history=*/false); }

Status ModelsFolder::CheckName(const Path& p, bool existing_history) {
  if (p.size() < 2) {
    return PermissionDenied("models/" + JoinPath(p) + ": only meta, layers/<n> and history/<n>/<time> are files");
  }
  ASSIGN_OR_RETURN(int64_t id, ParseModelId(p[0]));
  ASSIGN_OR_RETURN(models::ModelInfo m, store_->GetModel(id));
  (void)m;
  if (p.size() == 2 && p[1] == "meta") return Status::Ok();
  if (p.size() == 3 && p[1] == "layers") return ParseNumber(p[2], "layer number").status();
  if (p.size() == 4 && p[1] == "history") {
    ASSIGN_OR_RETURN(int64_t layer, ParseNumber(p[2], "layer number"));
    ASSIGN_OR_RETURN(int64_t t, ParseHistoryTime(p[3]));
    if (!existing_history && store_->VersionAt(id, layer, t).ok()) {
      return PermissionDenied("models/" + JoinPath(p) + ": history versions are immutable");
    }
    return Status::Ok();
  }
  return InvalidArgument("models/" + JoinPath(p) +
                         ": not a file name here (meta, layers/<n>, history/<n>/<time>)");
}

Status ModelsFolder::Commit(const Path& p, StagedFile& staged, const CommitContext& ctx,
                            Vanished* vanished) {
  // A history version may be written again with its own bytes (a restore that finds it already
  // there): that changes nothing. Other bytes are refused below: history is immutable.
  RETURN_IF_ERROR(CheckName(p, /*existing_history=*/true));
  ASSIGN_OR_RETURN(int64_t id, ParseModelId(p[0]));
  if (p[1] == "meta") {
    ASSIGN_OR_RETURN(uint64_t size, staged.Size());
    if (size > models::ModelStore::kMaxMetaBytes) {
      return TooLarge("models/" + JoinPath(p) + ": metadata over 64 MiB");
    }
    std::string bytes(size, '\0');
    ASSIGN_OR_RETURN(size_t n, PreadFull(staged.fd(), bytes.data(), size, 0));
    bytes.resize(n);
    std::optional<int64_t> t;
    if (ctx.mtime) t = ToMicros(*ctx.mtime);
    return store_->SetMeta(id, bytes, t);
  }
  ASSIGN_OR_RETURN(int64_t layer, ParseNumber(p[2], "layer number"));
  models::CommitOptions opts;
  opts.durable = ctx.durable;
  if (p[1] == "history") {
    ASSIGN_OR_RETURN(opts.create_time_us, ParseHistoryTime(p[3]));
  } else if (ctx.mtime) {
    // A time set before the commit (rsync, cp -p, touch -d on the staged file) names the version when it
    // keeps the new version the newest; otherwise the version gets the current time.
    auto newest = store_->NewestVersion(id, layer);
    int64_t t = ToMicros(*ctx.mtime);
    if (newest.ok()) {
      // Bytes equal to the newest version add nothing, whatever time they carry.
      ASSIGN_OR_RETURN(ScopedFd current, store_->OpenVersion(*newest));
      ASSIGN_OR_RETURN(bool same, SameContent(staged.fd(), current.get()));
      if (same) return Status::Ok();
    }
    // Times a history name cannot carry (before 1970) fall back to the current time.
    if (t >= 0 && (!newest.ok() || t > newest->create_time_us)) opts.create_time_us = t;
  }
  auto committed = store_->CommitLayer(id, layer, staged, opts);
  if (!committed.ok() && committed.status().code() == StatusCode::kAlreadyExists) {
    return PermissionDenied("models/" + JoinPath(p) + ": history versions are immutable (" +
                            committed.status().message() + ")");
  }
  ASSIGN_OR_RETURN(models::CommitOutcome out, std::move(committed));
  if (out.added) {
    // The newest version, and with it layers/<n>, may have changed.
    vanished->push_back({p[0], "layers", p[2]});
  }
  return Status::Ok();
}

Status ModelsFolder::Remove(const Path& p, Vanished* vanished) {
  if (p.size() < 2) return IsADirectory("models/" + JoinPath(p) + ": a folder (use rmdir)");
  ASSIGN_OR_RETURN(int64_t id, ParseModelId(p[0]));
  if (p.size() == 2 && p[1] == "meta") {
    // rm -r removes meta before the model folder; metadata belongs to the model, so it is cleared.
    return store_->SetMeta(id, "");
  }
  if (p.size() == 3 && p[1] == "layers") {
    // layers/<n> is the newest of history/<n> (IsAutomatic): removing it changes nothing, so that
    // tar -x, which unlinks what exists before it writes it again, keeps the history it restored.
    // A layer goes with its versions: rm -r history/<n>.
    ASSIGN_OR_RETURN(int64_t layer, ParseNumber(p[2], "layer number"));
    return store_->NewestVersion(id, layer).status();
  }
  if (p.size() == 4 && p[1] == "history") {
    ASSIGN_OR_RETURN(int64_t layer, ParseNumber(p[2], "layer number"));
    ASSIGN_OR_RETURN(int64_t t, ParseHistoryTime(p[3]));
    RETURN_IF_ERROR(store_->DeleteVersion(id, layer, t));
    // layers/<n> may now read an older version (or nothing). history/<n> itself stays until rmdir
    // even when this was its last version (the core keeps an emptied folder).
    vanished->push_back({p[0], "layers", p[2]});
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(NodeAttr a, Stat(p));
  if (a.type == NodeType::kDir) return IsADirectory("models/" + JoinPath(p) + ": a folder");
  return PermissionDenied("models/" + JoinPath(p) + ": cannot be removed");
}

Result<MkdirOutcome> ModelsFolder::MakeDir(const Path& p) {
  if (p.size() == 1) {
    ASSIGN_OR_RETURN(int64_t id, ParseModelId(p[0]));
    RETURN_IF_ERROR(store_->CreateModelWithId(id));
    return MkdirOutcome::kCreated;
  }
  ASSIGN_OR_RETURN(int64_t id, ParseModelId(p[0]));
  ASSIGN_OR_RETURN(models::ModelInfo m, store_->GetModel(id));
  (void)m;
  if (p.size() == 3 && p[1] == "history") {
    ASSIGN_OR_RETURN(int64_t layer, ParseNumber(p[2], "layer number"));
    (void)layer;
    // Exists once a version of the layer is stored (a restore creates the folder, then its files).
    return MkdirOutcome::kProvisional;
  }
  return PermissionDenied("models/" + JoinPath(p) + ": folders here are fixed (history/<n> may be created)");
}

Status ModelsFolder::RemoveDir(const Path& p, Vanished* vanished) {
  (void)vanished;
  if (p.empty()) return PermissionDenied("models: cannot be removed");
  ASSIGN_OR_RETURN(int64_t id, ParseModelId(p[0]));
  ASSIGN_OR_RETURN(auto layers, store_->ListLayers(id));
  if (p.size() == 1) {
    if (!layers.empty()) return NotEmpty(ModelPath(id) + ": has layers (rm -r removes them)");
    return store_->DeleteModel(id);
  }
  if (p.size() == 2 && (p[1] == "layers" || p[1] == "history")) {
    // Fixed folders of a model: rmdir of an empty one succeeds (so rm -r works) and it stays.
    if (!layers.empty()) return NotEmpty(ModelPath(id) + "/" + p[1] + ": not empty");
    return Status::Ok();
  }
  if (p.size() == 3 && p[1] == "history") {
    ASSIGN_OR_RETURN(int64_t layer, ParseNumber(p[2], "layer number"));
    ASSIGN_OR_RETURN(auto versions, store_->ListVersions(id, layer));
    if (!versions.empty()) return NotEmpty(ModelPath(id) + "/history/" + p[2] + ": not empty");
    return Status::Ok();  // its last version is gone, and with it the folder
  }
  return NotADirectory("models/" + JoinPath(p) + ": not a folder");
}

Result<std::vector<std::pair<std::string, std::string>>> ModelsFolder::Xattrs(const Path& p) {
  std::vector<std::pair<std::string, std::string>> out;
  if (p.size() < 3 || p[1] == "meta") return out;
  ASSIGN_OR_RETURN(int64_t id, ParseModelId(p[0]));
  ASSIGN_OR_RETURN(int64_t layer, ParseNumber(p[2], "layer number"));
  if (p[1] == "layers" && p.size() == 3) {
    ASSIGN_OR_RETURN(models::VersionInfo v, store_->NewestVersion(id, layer));
    ASSIGN_OR_RETURN(auto versions, store_->ListVersions(id, layer));
    out.emplace_back("user.modelfs.create_time", FormatHistoryTime(v.create_time_us));
    out.emplace_back("user.modelfs.versions", std::to_string(versions.size()));
  } else if (p[1] == "history" && p.size() == 4) {
    ASSIGN_OR_RETURN(int64_t t, ParseHistoryTime(p[3]));
    ASSIGN_OR_RETURN(models::VersionInfo v, store_->VersionAt(id, layer, t));
    out.emplace_back("user.modelfs.create_time", FormatHistoryTime(v.create_time_us));
  }
  return out;
}

}  // namespace modelfs::fs
