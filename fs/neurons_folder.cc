#include "fs/neurons_folder.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <bit>
#include <cstring>
#include <set>

#include "stores/common/file_util.h"
#include "stores/common/names.h"

namespace modelfs::fs {
namespace {

using neurons::Neuron;
using neurons::NeuronStore;
using neurons::Synapse;

static_assert(std::endian::native == std::endian::little, "vector files are little-endian float32");

constexpr char kDocSuffix[] = ".json";
constexpr char kVecSuffix[] = ".vec";
constexpr char kExportName[] = "export.json";
// A document this large is no neuron of any sensible dimension (a 1M-float vector is ~20 MB of text).
constexpr uint64_t kMaxDocumentBytes = 256ull << 20;
constexpr uint64_t kMaxVectorBytes = 1ull << 30;
// Entities asked of the store at a time when a folder is listed.
constexpr size_t kListPage = 4096;

bool HasSuffix(const std::string& s, std::string_view suffix) {
  return s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// "<uuid><suffix>" -> uuid, or nullopt.
std::optional<std::string> IdOf(const std::string& name, std::string_view suffix) {
  if (!HasSuffix(name, suffix)) return std::nullopt;
  std::string id = name.substr(0, name.size() - suffix.size());
  if (!neurons::ValidateUuid("id", id).ok()) return std::nullopt;
  return id;
}

uint64_t ContentVersion(std::string_view bytes) { return XXH3_64bits(bytes.data(), bytes.size()) | 1; }

// The entity's modified_at as a file time; a text that is not a time (written by another program)
// falls back to the graph's change time.
timespec TimeOf(const std::string& iso, int64_t fallback_ns) {
  auto ns = neurons::ParseIsoTime(iso);
  return TimespecFromNanos(ns.ok() ? *ns : fallback_ns);
}

std::string ModifiedAt(const CommitContext& ctx) {
  return ctx.mtime ? neurons::FormatIsoTime(NanosFromTimespec(*ctx.mtime)) : neurons::NowIsoTime();
}

// Whether a time given with the file is `known` (an entity's modified_at) as a tool that keeps only
// whole seconds restores it (tar's archive format): then the entity keeps its own, finer time.
bool SameTimeInSeconds(const timespec& given, const std::string& known) {
  auto ns = neurons::ParseIsoTime(known);
  if (!ns.ok() || given.tv_nsec != 0) return false;
  return TimespecFromNanos(*ns).tv_sec == given.tv_sec;
}

// modified_at for a written document: the file's time (rsync, cp -p) or now; the document's own when
// the file's time is that one in whole seconds.
std::string ModifiedAt(const CommitContext& ctx, const std::string& written) {
  if (ctx.mtime && SameTimeInSeconds(*ctx.mtime, written)) {
    return neurons::FormatIsoTime(*neurons::ParseIsoTime(written));
  }
  return ModifiedAt(ctx);
}

// tar -x puts an empty placeholder file where a link whose target has ".." goes, and makes the link
// at the end only if the placeholder is still there. The store makes these links itself: an empty
// placeholder is accepted and stores nothing (the store's own link is there, or comes with its
// entity); any other file there is refused.
Status PlaceholderOnly(StagedFile& staged, const std::string& where) {
  ASSIGN_OR_RETURN(uint64_t size, staged.Size());
  if (size == 0) return Status::Ok();
  return PermissionDenied(where + ": the listings are made by the store (write the entity's own file)");
}

std::string RenderNeuron(const Neuron& n) {
  std::string out;
  neurons::PyJsonDump(neurons::NeuronToDocument(n, /*with_vector=*/false), &out, /*indent=*/2);
  out += '\n';
  return out;
}

std::string RenderSynapse(const Synapse& s) {
  std::string out;
  neurons::PyJsonDump(neurons::SynapseToDocument(s), &out, /*indent=*/2);
  out += '\n';
  return out;
}

NodeAttr DirAttr(int64_t mtime_ns) {
  NodeAttr a;
  a.type = NodeType::kDir;
  a.mtime = TimespecFromNanos(mtime_ns);
  return a;
}

NodeAttr DocAttr(const std::string& text, const std::string& modified_at, int64_t change_ns) {
  NodeAttr a;
  a.type = NodeType::kFile;
  a.size = text.size();
  a.mtime = TimeOf(modified_at, change_ns);
  a.version = ContentVersion(text);
  a.writable = true;
  return a;
}

NodeAttr VectorAttr(const Neuron& n, int64_t change_ns) {
  NodeAttr a;
  a.type = NodeType::kFile;
  a.size = uint64_t{n.vector_dim} * 4;
  a.mtime = TimeOf(n.modified_at, change_ns);
  a.version = n.vector_hash | 1;
  a.writable = true;
  return a;
}

// A listing's link to "../../<id>.json": its target never changes, its time is the entity's.
NodeAttr LinkAttr(const std::string& target, const std::string& modified_at, int64_t change_ns) {
  NodeAttr a;
  a.type = NodeType::kSymlink;
  a.size = target.size();
  a.mtime = TimeOf(modified_at, change_ns);
  a.version = ContentVersion(target);
  return a;
}

std::string LinkTarget(const std::string& id) { return "../../" + id + kDocSuffix; }

Result<std::string> ReadStaged(StagedFile& staged, uint64_t limit, const std::string& where) {
  ASSIGN_OR_RETURN(uint64_t size, staged.Size());
  if (size > limit) return TooLarge(where + ": " + std::to_string(size) + " bytes is over the limit");
  std::string bytes(size, '\0');
  ASSIGN_OR_RETURN(size_t n, PreadFull(staged.fd(), bytes.data(), size, 0));
  bytes.resize(n);
  return bytes;
}

Result<neurons::Json> ParseObject(const std::string& bytes, const std::string& where) {
  auto doc = neurons::ParseJson(bytes);
  if (!doc.ok()) return InvalidArgument(where + ": " + doc.status().message());
  if (!doc->is_object()) return InvalidArgument(where + ": a document is a JSON object");
  return std::move(*doc);
}

bool IsNotFound(const Status& s) { return s.code() == StatusCode::kNotFound; }

// Paths in /synapses that change when synapse `id` goes (as a neuron's cascade).
void SynapseVanished(const std::string& id, Vanished* vanished) {
  vanished->push_back({"/", "synapses", id + kDocSuffix});
  vanished->push_back({"/", "synapses", "by-source"});
  vanished->push_back({"/", "synapses", "by-target"});
}

// Adds to a listing the expected links of dir that are still expected (Stat answers from them) and not
// listed yet.
template <typename StatFn>
void AddExpected(ExpectedLinks& expected, const Path& dir, std::vector<DirEntry>* out, StatFn stat) {
  auto waiting = expected.In(dir);
  if (waiting.empty()) return;
  std::set<std::string> listed;
  for (const DirEntry& e : *out) listed.insert(e.name);
  for (const auto& [name, mtime] : waiting) {
    (void)mtime;
    if (listed.count(name)) continue;
    Path link = dir;
    link.push_back(name);
    auto a = stat(link);
    if (a.ok()) out->push_back({name, *a});
  }
}

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return NanosFromTimespec(ts);
}

}  // namespace

void ExpectedLinks::Add(const Path& p, int64_t mtime_ns) {
  std::lock_guard lock(mu_);
  links_[p] = mtime_ns;
}

std::optional<int64_t> ExpectedLinks::Find(const Path& p) {
  std::lock_guard lock(mu_);
  auto it = links_.find(p);
  if (it == links_.end()) return std::nullopt;
  return it->second;
}

void ExpectedLinks::Forget(const Path& p) {
  std::lock_guard lock(mu_);
  links_.erase(p);
}

bool ExpectedLinks::SetMtime(const Path& p, int64_t mtime_ns) {
  std::lock_guard lock(mu_);
  auto it = links_.find(p);
  if (it == links_.end()) return false;
  it->second = mtime_ns;
  return true;
}

std::vector<std::pair<std::string, int64_t>> ExpectedLinks::In(const Path& dir) {
  std::lock_guard lock(mu_);
  std::vector<std::pair<std::string, int64_t>> out;
  for (auto it = links_.lower_bound(dir); it != links_.end(); ++it) {
    const Path& p = it->first;
    if (p.size() != dir.size() + 1 || !std::equal(dir.begin(), dir.end(), p.begin())) {
      if (p.size() < dir.size() || !std::equal(dir.begin(), dir.end(), p.begin())) break;
      continue;
    }
    out.emplace_back(p.back(), it->second);
  }
  return out;
}

// ============================================================================================
// neurons/

NeuronsFolder::NeuronsFolder(std::shared_ptr<NeuronStore> store, std::string staging_dir)
    : store_(std::move(store)), staging_dir_(std::move(staging_dir)), cache_(staging_dir_, 1) {}

Result<int64_t> NeuronsFolder::ChangeTime() { return store_->ChangeTimeNs(); }

Result<NeuronsFolder::Ref> NeuronsFolder::Resolve(const Path& p) {
  const std::string where = "neurons/" + JoinPath(p);
  if (p.empty()) return Ref{Kind::kRoot, "", ""};
  if (p[0] == "by-type") {
    if (p.size() == 1) return Ref{Kind::kByType, "", ""};
    RETURN_IF_ERROR(ValidatePlainName("neuron type", p[1]));
    if (p.size() == 2) return Ref{Kind::kTypeDir, p[1], ""};
    if (p.size() == 3) {
      auto id = IdOf(p[2], kDocSuffix);
      if (!id) return NotFound(where + ": entries here are <uuid>.json links");
      return Ref{Kind::kTypeLink, *id, p[1]};
    }
    return NotFound(where + ": no such entry");
  }
  if (p[0] == "graph") {
    if (p.size() == 1) return Ref{Kind::kGraph, "", ""};
    if (p[1] == kExportName && p.size() == 2) return Ref{Kind::kExport, "", ""};
    if (p[1] == "backups") {
      if (p.size() == 2) return Ref{Kind::kBackups, "", ""};
      if (p.size() == 3) {
        RETURN_IF_ERROR(ValidatePlainName("backup name", p[2]));
        if (!HasSuffix(p[2], ".db")) return InvalidArgument(where + ": backup names end in .db");
        return Ref{Kind::kBackup, p[2], ""};
      }
    }
    return NotFound(where + ": graph/ holds export.json and backups/");
  }
  if (p.size() > 1) return NotADirectory("neurons/" + p[0] + ": not a folder");
  if (auto id = IdOf(p[0], kDocSuffix)) return Ref{Kind::kDoc, *id, ""};
  if (auto id = IdOf(p[0], kVecSuffix)) return Ref{Kind::kVector, *id, ""};
  return InvalidArgument(where + ": names here are <uuid>.json and <uuid>.vec (a canonical lowercase UUID)");
}

GeneratedCache::Generator NeuronsFolder::ExportGenerator() {
  return [this](int fd) -> Result<uint64_t> {
    // The generation is read before the snapshot: if a write slips in between, the file is newer than
    // its version and the next stat regenerates it, never the other way round.
    ASSIGN_OR_RETURN(int64_t generation, store_->Generation());
    ASSIGN_OR_RETURN(neurons::ExportCounts c, store_->Export(fd));
    (void)c;
    return static_cast<uint64_t>(generation);
  };
}

Result<NodeAttr> NeuronsFolder::ExportAttr() {
  ASSIGN_OR_RETURN(int64_t generation, store_->Generation());
  ASSIGN_OR_RETURN(auto size_version,
                   cache_.SizeOf(kExportName, static_cast<uint64_t>(generation), ExportGenerator()));
  // Its time is the export_time it shows (the newest entity's), which equal graphs share.
  ASSIGN_OR_RETURN(std::string export_time, store_->ExportTime());
  ASSIGN_OR_RETURN(int64_t changed, ChangeTime());
  NodeAttr a;
  a.type = NodeType::kFile;
  a.size = size_version.first;
  a.version = size_version.second;
  a.mtime = TimeOf(export_time, changed);
  a.writable = true;
  return a;
}

Result<NodeAttr> NeuronsFolder::Stat(const Path& p) {
  ASSIGN_OR_RETURN(Ref r, Resolve(p));
  ASSIGN_OR_RETURN(int64_t changed, ChangeTime());
  switch (r.kind) {
    case Kind::kRoot:
    case Kind::kByType:
    case Kind::kGraph:
      return DirAttr(changed);
    case Kind::kTypeDir: {
      // One indexed row answers whether the type has a neuron (not a count of every type).
      neurons::NeuronQuery q;
      q.type = r.id;
      q.with_vectors = false;
      q.page.limit = 1;
      ASSIGN_OR_RETURN(auto page, store_->ListNeurons(q));
      if (!page.items.empty()) return DirAttr(changed);
      return NotFound("neurons/by-type/" + r.id + ": no neuron of this type");
    }
    case Kind::kTypeLink: {
      auto n = store_->GetNeuron(r.id);
      if (!n.ok() && !IsNotFound(n.status())) return n.status();
      if (n.ok() && n->type == r.type) {
        expected_.Forget(p);
        return LinkAttr(LinkTarget(r.id), n->modified_at, changed);
      }
      if (auto mtime = expected_.Find(p)) return LinkAttr(LinkTarget(r.id), "", *mtime);
      return NotFound("neurons/" + JoinPath(p) + (n.ok() ? ": the neuron is of type " + n->type : ": no such neuron"));
    }
    case Kind::kDoc: {
      ASSIGN_OR_RETURN(Neuron n, store_->GetNeuron(r.id));
      return DocAttr(RenderNeuron(n), n.modified_at, changed);
    }
    case Kind::kVector: {
      ASSIGN_OR_RETURN(Neuron n, store_->GetNeuron(r.id));
      return VectorAttr(n, changed);
    }
    case Kind::kExport:
      return ExportAttr();
    case Kind::kBackups: {
      struct stat st;
      if (::stat((store_->dir() + "/backups").c_str(), &st) != 0) return DirAttr(changed);
      return DirAttr(NanosFromTimespec(st.st_mtim));
    }
    case Kind::kBackup: {
      ASSIGN_OR_RETURN(neurons::BackupInfo b, store_->GetBackup(r.id));
      NodeAttr a;
      a.type = NodeType::kFile;
      a.size = b.bytes;
      a.mtime = TimespecFromNanos(b.mtime_ns);
      // Backups never change under their name (writes must repeat the bytes); a new one with the same
      // name after rm has another time or size.
      a.version = ContentVersion(r.id + "/" + std::to_string(b.mtime_ns) + "/" + std::to_string(b.bytes));
      a.writable = false;
      return a;
    }
  }
  return NotFound("neurons/" + JoinPath(p));
}

Result<std::vector<DirEntry>> NeuronsFolder::List(const Path& dir) {
  ASSIGN_OR_RETURN(Ref r, Resolve(dir));
  ASSIGN_OR_RETURN(int64_t changed, ChangeTime());
  std::vector<DirEntry> out;
  switch (r.kind) {
    case Kind::kRoot: {
      out.push_back({"by-type", DirAttr(changed)});
      out.push_back({"graph", DirAttr(changed)});
      // Page by page, so that a folder of 100,000 neurons never holds them all in memory at once.
      neurons::NeuronQuery q;
      q.with_vectors = false;
      q.page.limit = kListPage;
      do {
        ASSIGN_OR_RETURN(auto page, store_->ListNeurons(q));
        for (const Neuron& n : page.items) {
          out.push_back({n.id + kDocSuffix, DocAttr(RenderNeuron(n), n.modified_at, changed)});
          out.push_back({n.id + kVecSuffix, VectorAttr(n, changed)});
        }
        q.page.after = std::move(page.next_after);
      } while (!q.page.after.empty());
      return out;
    }
    case Kind::kByType: {
      ASSIGN_OR_RETURN(auto types, store_->NeuronTypes());
      for (const auto& [t, n] : types) {
        // A type written by another program that is no file name cannot be listed; its neurons are.
        if (ValidatePlainName("neuron type", t).ok()) out.push_back({t, DirAttr(changed)});
      }
      return out;
    }
    case Kind::kTypeDir: {
      ASSIGN_OR_RETURN(NodeAttr a, Stat(dir));
      (void)a;
      neurons::NeuronQuery q;
      q.type = r.id;
      q.with_vectors = false;
      ASSIGN_OR_RETURN(auto page, store_->ListNeurons(q));
      for (const Neuron& n : page.items) {
        out.push_back({n.id + kDocSuffix, LinkAttr(LinkTarget(n.id), n.modified_at, changed)});
      }
      AddExpected(expected_, dir, &out, [&](const Path& link) { return Stat(link); });
      return out;
    }
    case Kind::kGraph: {
      ASSIGN_OR_RETURN(NodeAttr backups, Stat({"graph", "backups"}));
      out.push_back({"backups", backups});
      ASSIGN_OR_RETURN(NodeAttr exp, ExportAttr());
      out.push_back({kExportName, exp});
      return out;
    }
    case Kind::kBackups: {
      ASSIGN_OR_RETURN(auto backups, store_->ListBackups());
      for (const auto& b : backups) {
        ASSIGN_OR_RETURN(NodeAttr a, Stat({"graph", "backups", b.name}));
        out.push_back({b.name, a});
      }
      return out;
    }
    default:
      break;
  }
  ASSIGN_OR_RETURN(NodeAttr a, Stat(dir));
  (void)a;
  return NotADirectory("neurons/" + JoinPath(dir) + ": not a folder");
}

Result<FileContent> NeuronsFolder::Open(const Path& p) {
  ASSIGN_OR_RETURN(Ref r, Resolve(p));
  switch (r.kind) {
    case Kind::kDoc: {
      ASSIGN_OR_RETURN(Neuron n, store_->GetNeuron(r.id));
      return MemoryFileContent(RenderNeuron(n));
    }
    case Kind::kVector: {
      ASSIGN_OR_RETURN(Neuron n, store_->GetNeuron(r.id));
      return MemoryFileContent(std::string_view(reinterpret_cast<const char*>(n.vector.data()),
                                                n.vector.size() * sizeof(float)));
    }
    case Kind::kExport: {
      ASSIGN_OR_RETURN(int64_t generation, store_->Generation());
      return cache_.Get(kExportName, static_cast<uint64_t>(generation), ExportGenerator());
    }
    case Kind::kBackup: {
      ASSIGN_OR_RETURN(neurons::BackupInfo b, store_->GetBackup(r.id));
      FileContent c;
      ASSIGN_OR_RETURN(c.fd, OpenFile(store_->BackupPath(r.id), O_RDONLY | O_CLOEXEC));
      ASSIGN_OR_RETURN(c.size, FileSize(c.fd.get()));
      return c;
    }
    case Kind::kTypeLink:
      return InvalidArgument("neurons/" + JoinPath(p) + ": a symbolic link");
    default:
      return IsADirectory("neurons/" + JoinPath(p) + ": a folder");
  }
}

Status NeuronsFolder::CheckWritable(const Path& p) {
  ASSIGN_OR_RETURN(Ref r, Resolve(p));
  const std::string where = "neurons/" + JoinPath(p);
  switch (r.kind) {
    case Kind::kDoc:
    case Kind::kExport:
    case Kind::kBackup:
      return Status::Ok();
    case Kind::kVector: {
      auto n = store_->GetNeuron(r.id);
      if (!n.ok() && IsNotFound(n.status())) {
        return NotFound(where + ": no neuron " + r.id + " (write " + r.id + ".json first)");
      }
      return n.status();
    }
    case Kind::kTypeLink:
      return Status::Ok();  // an empty placeholder only (PlaceholderOnly)
    case Kind::kTypeDir:
      return PermissionDenied(where + ": the by-type listings are read-only (write neurons/<uuid>.json)");
    default:
      return IsADirectory(where + ": a folder");
  }
}

Status NeuronsFolder::Commit(const Path& p, StagedFile& staged, const CommitContext& ctx,
                             Vanished* vanished) {
  RETURN_IF_ERROR(CheckWritable(p));
  ASSIGN_OR_RETURN(Ref r, Resolve(p));
  switch (r.kind) {
    case Kind::kDoc:
      return CommitDoc(r.id, staged, ctx, vanished);
    case Kind::kVector:
      return CommitVector(r.id, staged, ctx, vanished);
    case Kind::kExport:
      return CommitExport(staged, ctx, vanished);
    case Kind::kBackup:
      return CommitBackup(r.id, staged, ctx);
    case Kind::kTypeLink:
      return PlaceholderOnly(staged, "neurons/" + JoinPath(p));
    default:
      return PermissionDenied("neurons/" + JoinPath(p) + ": not writable");
  }
}

Status NeuronsFolder::CommitDoc(const std::string& id, StagedFile& staged, const CommitContext& ctx,
                                Vanished* vanished) {
  const std::string where = "neurons/" + id + kDocSuffix;
  ASSIGN_OR_RETURN(std::string bytes, ReadStaged(staged, kMaxDocumentBytes, where));
  auto existing = store_->GetNeuron(id);
  if (!existing.ok() && !IsNotFound(existing.status())) return existing.status();
  if (existing.ok() && bytes == RenderNeuron(*existing)) {
    // The bytes it holds: nothing changes but, perhaps, the time given with them.
    if (!ctx.mtime || SameTimeInSeconds(*ctx.mtime, existing->modified_at)) return Status::Ok();
    return SetMtime({id + kDocSuffix}, *ctx.mtime, vanished);
  }
  ASSIGN_OR_RETURN(neurons::Json doc, ParseObject(bytes, where));
  Neuron n;
  if (existing.ok()) {
    n = *existing;
  } else {
    n.id = id;
  }
  const std::string old_type = n.type;
  const std::string old_created = n.created_at;
  Status parsed = neurons::NeuronFromDocument(doc, &n);
  if (!parsed.ok()) return InvalidArgument(where + ": " + parsed.message());
  if (n.id != id) {
    return InvalidArgument(where + ": the document's id " + n.id + " is not the file's name");
  }
  if (n.created_at.empty()) n.created_at = old_created;  // empty for a new neuron: the store fills in
  n.modified_at = ModifiedAt(ctx, n.modified_at);
  RETURN_IF_ERROR(store_->PutNeuron(n));
  vanished->push_back({id + kVecSuffix});  // its time moved
  if (!existing.ok() || old_type != n.type) vanished->push_back({"by-type"});
  return Status::Ok();
}

Status NeuronsFolder::CommitVector(const std::string& id, StagedFile& staged, const CommitContext& ctx,
                                   Vanished* vanished) {
  const std::string where = "neurons/" + id + kVecSuffix;
  ASSIGN_OR_RETURN(uint64_t size, staged.Size());
  if (size % sizeof(float) != 0) {
    return InvalidArgument(where + ": " + std::to_string(size) +
                           " bytes is not a whole number of float32 values (a multiple of 4)");
  }
  if (size > kMaxVectorBytes) return TooLarge(where + ": a vector is at most 1 GiB");
  ASSIGN_OR_RETURN(Neuron n, store_->GetNeuron(id));
  std::vector<float> v(size / sizeof(float));
  ASSIGN_OR_RETURN(size_t got, PreadFull(staged.fd(), v.data(), size, 0));
  if (got != size) return IOError(where + ": the staged file shrank while it was read");
  if (v.size() == n.vector.size() &&
      (v.empty() || std::memcmp(v.data(), n.vector.data(), size) == 0)) {
    if (!ctx.mtime || SameTimeInSeconds(*ctx.mtime, n.modified_at)) return Status::Ok();
    return SetMtime({id + kVecSuffix}, *ctx.mtime, vanished);
  }
  n.vector = std::move(v);
  n.vector_dim = static_cast<uint32_t>(n.vector.size());
  n.modified_at = ModifiedAt(ctx, n.modified_at);
  Status st = store_->UpdateNeuron(n);
  if (!st.ok()) {
    return st.code() == StatusCode::kInvalidArgument ? InvalidArgument(where + ": " + st.message()) : st;
  }
  vanished->push_back({id + kDocSuffix});  // its modified_at changed
  return Status::Ok();
}

Status NeuronsFolder::CommitExport(StagedFile& staged, const CommitContext& ctx, Vanished* vanished) {
  // The bytes the export already holds change nothing (a second rsync restore).
  ASSIGN_OR_RETURN(FileContent current, Open({"graph", kExportName}));
  ASSIGN_OR_RETURN(bool same, SameContent(staged.fd(), current.fd.get()));
  if (same) return Status::Ok();
  if (lseek(staged.fd(), 0, SEEK_SET) < 0) return ErrnoError("seek staged export", errno);
  std::optional<int64_t> change_time;
  if (ctx.mtime) change_time = NanosFromTimespec(*ctx.mtime);
  auto counts = store_->Import(staged.fd(), neurons::ImportMode::kReplace, change_time);
  if (!counts.ok()) {
    return counts.status().code() == StatusCode::kInvalidArgument
               ? InvalidArgument("neurons/graph/export.json: " + counts.status().message())
               : counts.status();
  }
  // Everything may have changed, in both folders.
  vanished->push_back({"*"});
  vanished->push_back({"by-type"});
  vanished->push_back({"/", "synapses", "*"});
  vanished->push_back({"/", "synapses", "by-source"});
  vanished->push_back({"/", "synapses", "by-target"});
  return Status::Ok();
}

Status NeuronsFolder::CommitBackup(const std::string& name, StagedFile& staged, const CommitContext& ctx) {
  const std::string where = "neurons/graph/backups/" + name;
  ASSIGN_OR_RETURN(uint64_t size, staged.Size());
  auto existing = store_->GetBackup(name);
  if (!existing.ok() && !IsNotFound(existing.status())) return existing.status();
  if (existing.ok()) {
    // Backups are immutable; repeating the bytes (rsync restoring them again) changes nothing.
    ASSIGN_OR_RETURN(ScopedFd fd, OpenFile(store_->BackupPath(name), O_RDONLY | O_CLOEXEC));
    ASSIGN_OR_RETURN(bool same, SameContent(staged.fd(), fd.get()));
    if (!same) return AlreadyExists(where + ": backups never change; rm it first to replace it");
    if (ctx.mtime) return store_->SetBackupMtime(name, NanosFromTimespec(*ctx.mtime));
    return Status::Ok();
  }
  std::optional<int64_t> mtime;
  if (ctx.mtime) mtime = NanosFromTimespec(*ctx.mtime);
  if (size == 0) {
    // An empty file (touch) asks for a backup of the graph as it is now.
    ASSIGN_OR_RETURN(neurons::BackupInfo b, store_->CreateBackup(name));
    (void)b;
    if (mtime) return store_->SetBackupMtime(name, *mtime);
    return Status::Ok();
  }
  auto added = store_->AddBackup(name, staged.fd(), mtime);
  if (!added.ok()) {
    return added.status().code() == StatusCode::kInvalidArgument
               ? InvalidArgument(where + ": " + added.status().message())
               : added.status();
  }
  return Status::Ok();
}

Status NeuronsFolder::Remove(const Path& p, Vanished* vanished) {
  ASSIGN_OR_RETURN(Ref r, Resolve(p));
  const std::string where = "neurons/" + JoinPath(p);
  switch (r.kind) {
    case Kind::kDoc: {
      // Its synapses go with it (ON DELETE CASCADE): their files in /synapses vanish too.
      std::vector<std::string> gone;
      for (bool sources : {true, false}) {
        neurons::SynapseQuery q;
        (sources ? q.source : q.target) = r.id;
        ASSIGN_OR_RETURN(auto page, store_->ListSynapses(q));
        for (const Synapse& s : page.items) gone.push_back(s.id);
      }
      RETURN_IF_ERROR(store_->DeleteNeuron(r.id));
      vanished->push_back({r.id + kVecSuffix});
      vanished->push_back({"by-type"});
      for (const std::string& sid : gone) SynapseVanished(sid, vanished);
      return Status::Ok();
    }
    case Kind::kVector: {
      // The file stays while its neuron exists (IsAutomatic); removing it removes the vector.
      ASSIGN_OR_RETURN(Neuron n, store_->GetNeuron(r.id));
      if (n.vector.empty()) return Status::Ok();
      n.vector.clear();
      n.vector_dim = 0;
      n.modified_at = ModifiedAt(CommitContext{});
      RETURN_IF_ERROR(store_->UpdateNeuron(n));
      vanished->push_back({r.id + kDocSuffix});
      vanished->push_back({r.id + kVecSuffix});
      return Status::Ok();
    }
    case Kind::kBackup:
      return store_->RemoveBackup(r.id);
    case Kind::kExport:
    case Kind::kTypeLink:
      // Made by the store from the graph (IsAutomatic): nothing to remove; rm neurons/<uuid>.json
      // removes a neuron from the listings.
      return Stat(p).status();
    default:
      return IsADirectory(where + ": a folder");
  }
}

bool NeuronsFolder::IsAutomatic(const Path& p) const {
  const std::string_view vec_suffix(kVecSuffix);
  const bool vec = p.size() == 1 && p[0].size() > vec_suffix.size() &&
                   std::string_view(p[0]).substr(p[0].size() - vec_suffix.size()) == vec_suffix;
  const bool type_link = p.size() == 3 && p[0] == "by-type";
  return vec || type_link || MadeOnDemand(p);
}

Vanished NeuronsFolder::Derived() const { return {{"/", "neurons", "graph", "export.json"}}; }

Result<MkdirOutcome> NeuronsFolder::MakeDir(const Path& p) {
  ASSIGN_OR_RETURN(Ref r, Resolve(p));
  if (r.kind == Kind::kTypeDir) {
    // rsync restoring a backup may make a type's folder before the neurons that fill it arrive.
    if (Stat(p).ok()) return AlreadyExists("neurons/" + JoinPath(p) + ": exists");
    return MkdirOutcome::kProvisional;
  }
  if (Stat(p).ok()) return AlreadyExists("neurons/" + JoinPath(p) + ": exists");
  return PermissionDenied("neurons/" + JoinPath(p) + ": the folders here are made by the store");
}

Status NeuronsFolder::RemoveDir(const Path& p, Vanished* vanished) {
  (void)vanished;
  ASSIGN_OR_RETURN(NodeAttr a, Stat(p));
  if (a.type != NodeType::kDir) return NotADirectory("neurons/" + JoinPath(p) + ": not a folder");
  return PermissionDenied("neurons/" + JoinPath(p) + ": the folders here are made by the store");
}

Result<std::string> NeuronsFolder::ReadLink(const Path& p) {
  ASSIGN_OR_RETURN(Ref r, Resolve(p));
  if (r.kind != Kind::kTypeLink) return InvalidArgument("neurons/" + JoinPath(p) + ": not a symbolic link");
  ASSIGN_OR_RETURN(NodeAttr a, Stat(p));
  (void)a;
  return LinkTarget(r.id);
}

Status NeuronsFolder::MakeSymlink(const Path& p, const std::string& target, Vanished* vanished) {
  (void)vanished;
  ASSIGN_OR_RETURN(Ref r, Resolve(p));
  if (r.kind == Kind::kTypeLink && target == LinkTarget(r.id)) {
    // Restating what the listing holds, or will once the neuron arrives (rsync restoring a backup).
    if (!Stat(p).ok()) expected_.Add(p, NowNs());
    return Status::Ok();
  }
  return PermissionDenied("neurons/" + JoinPath(p) +
                          ": links here are made by the store (write neurons/<uuid>.json)");
}

Status NeuronsFolder::SetMtime(const Path& p, const timespec& mtime, Vanished* vanished) {
  ASSIGN_OR_RETURN(Ref r, Resolve(p));
  const int64_t ns = NanosFromTimespec(mtime);
  switch (r.kind) {
    case Kind::kDoc:
    case Kind::kVector: {
      ASSIGN_OR_RETURN(Neuron n, store_->GetNeuron(r.id));
      const std::string t = neurons::FormatIsoTime(ns);
      if (t == n.modified_at) return Status::Ok();
      n.modified_at = t;
      RETURN_IF_ERROR(store_->UpdateNeuron(n));
      // Both files carry the time, and the document shows it.
      vanished->push_back({r.id + kDocSuffix});
      vanished->push_back({r.id + kVecSuffix});
      return Status::Ok();
    }
    case Kind::kExport:
      // The export's time is the export_time it shows, made of its entities' times: accepted and
      // not kept, as for the folders.
      return Status::Ok();
    case Kind::kBackup:
      return store_->SetBackupMtime(r.id, ns);
    case Kind::kTypeLink:
      expected_.SetMtime(p, ns);
      return Status::Ok();
    default:
      // Folders and links carry times the store derives: accepted and not kept (rsync -a sets them).
      return Status::Ok();
  }
}

Result<std::vector<std::pair<std::string, std::string>>> NeuronsFolder::Xattrs(const Path& p) {
  ASSIGN_OR_RETURN(Ref r, Resolve(p));
  std::vector<std::pair<std::string, std::string>> out;
  switch (r.kind) {
    case Kind::kRoot: {
      ASSIGN_OR_RETURN(neurons::StoreStats s, store_->Stats());
      out.emplace_back("user.modelfs.neurons", std::to_string(s.neurons));
      out.emplace_back("user.modelfs.synapses", std::to_string(s.synapses));
      out.emplace_back("user.modelfs.database_bytes", std::to_string(s.database_bytes));
      out.emplace_back("user.modelfs.generation", std::to_string(s.generation));
      out.emplace_back("user.modelfs.schema_version", std::to_string(s.schema_version));
      return out;
    }
    case Kind::kDoc:
    case Kind::kVector: {
      ASSIGN_OR_RETURN(Neuron n, store_->GetNeuron(r.id));
      out.emplace_back("user.modelfs.type", n.type);
      out.emplace_back("user.modelfs.vector_dim", std::to_string(n.vector_dim));
      return out;
    }
    case Kind::kBackup: {
      ASSIGN_OR_RETURN(neurons::BackupInfo b, store_->GetBackup(r.id));
      out.emplace_back("user.modelfs.neurons", std::to_string(b.neurons));
      out.emplace_back("user.modelfs.synapses", std::to_string(b.synapses));
      return out;
    }
    default:
      ASSIGN_OR_RETURN(NodeAttr a, Stat(p));
      (void)a;
      return out;
  }
}

// ============================================================================================
// synapses/

SynapsesFolder::SynapsesFolder(std::shared_ptr<NeuronStore> store, std::string staging_dir)
    : store_(std::move(store)), staging_dir_(std::move(staging_dir)) {}

Result<SynapsesFolder::Ref> SynapsesFolder::Resolve(const Path& p) {
  const std::string where = "synapses/" + JoinPath(p);
  if (p.empty()) return Ref{Kind::kRoot, "", "", true};
  if (p[0] == "by-source" || p[0] == "by-target") {
    const bool sources = p[0] == "by-source";
    if (p.size() == 1) return Ref{Kind::kEnds, "", "", sources};
    RETURN_IF_ERROR(neurons::ValidateUuid("neuron id", p[1]));
    if (p.size() == 2) return Ref{Kind::kEndDir, p[1], p[1], sources};
    if (p.size() == 3) {
      auto id = IdOf(p[2], kDocSuffix);
      if (!id) return NotFound(where + ": entries here are <uuid>.json links");
      return Ref{Kind::kEndLink, *id, p[1], sources};
    }
    return NotFound(where + ": no such entry");
  }
  if (p.size() > 1) return NotADirectory("synapses/" + p[0] + ": not a folder");
  if (auto id = IdOf(p[0], kDocSuffix)) return Ref{Kind::kDoc, *id, "", true};
  return InvalidArgument(where + ": names here are <uuid>.json (a canonical lowercase UUID)");
}

Result<NodeAttr> SynapsesFolder::Stat(const Path& p) {
  ASSIGN_OR_RETURN(Ref r, Resolve(p));
  ASSIGN_OR_RETURN(int64_t changed, store_->ChangeTimeNs());
  switch (r.kind) {
    case Kind::kRoot:
    case Kind::kEnds:
      return DirAttr(changed);
    case Kind::kEndDir: {
      neurons::SynapseQuery q;
      (r.sources ? q.source : q.target) = r.neuron;
      q.page.limit = 1;
      ASSIGN_OR_RETURN(auto page, store_->ListSynapses(q));
      if (page.items.empty()) {
        return NotFound("synapses/" + JoinPath(p) + ": no synapse " + (r.sources ? "from" : "to") +
                        " this neuron");
      }
      return DirAttr(changed);
    }
    case Kind::kEndLink: {
      auto s = store_->GetSynapse(r.id);
      if (!s.ok() && !IsNotFound(s.status())) return s.status();
      if (s.ok() && (r.sources ? s->source_neuron_id : s->target_neuron_id) == r.neuron) {
        expected_.Forget(p);
        return LinkAttr(LinkTarget(r.id), s->modified_at, changed);
      }
      if (auto mtime = expected_.Find(p)) return LinkAttr(LinkTarget(r.id), "", *mtime);
      return NotFound("synapses/" + JoinPath(p) + ": no synapse " + (r.sources ? "from" : "to") +
                      " this neuron with this id");
    }
    case Kind::kDoc: {
      ASSIGN_OR_RETURN(Synapse s, store_->GetSynapse(r.id));
      return DocAttr(RenderSynapse(s), s.modified_at, changed);
    }
  }
  return NotFound("synapses/" + JoinPath(p));
}

Result<std::vector<DirEntry>> SynapsesFolder::List(const Path& dir) {
  ASSIGN_OR_RETURN(Ref r, Resolve(dir));
  ASSIGN_OR_RETURN(int64_t changed, store_->ChangeTimeNs());
  std::vector<DirEntry> out;
  switch (r.kind) {
    case Kind::kRoot: {
      out.push_back({"by-source", DirAttr(changed)});
      out.push_back({"by-target", DirAttr(changed)});
      neurons::SynapseQuery q;
      q.page.limit = kListPage;
      do {
        ASSIGN_OR_RETURN(auto page, store_->ListSynapses(q));
        for (const Synapse& s : page.items) {
          out.push_back({s.id + kDocSuffix, DocAttr(RenderSynapse(s), s.modified_at, changed)});
        }
        q.page.after = std::move(page.next_after);
      } while (!q.page.after.empty());
      return out;
    }
    case Kind::kEnds: {
      ASSIGN_OR_RETURN(auto ids, store_->SynapseEndpoints(r.sources));
      out.reserve(ids.size());
      for (auto& id : ids) out.push_back({std::move(id), DirAttr(changed)});
      return out;
    }
    case Kind::kEndDir: {
      neurons::SynapseQuery q;
      (r.sources ? q.source : q.target) = r.neuron;
      ASSIGN_OR_RETURN(auto page, store_->ListSynapses(q));
      for (const Synapse& s : page.items) {
        out.push_back({s.id + kDocSuffix, LinkAttr(LinkTarget(s.id), s.modified_at, changed)});
      }
      AddExpected(expected_, dir, &out, [&](const Path& link) { return Stat(link); });
      if (out.empty()) return NotFound("synapses/" + JoinPath(dir) + ": no such folder");
      return out;
    }
    default:
      ASSIGN_OR_RETURN(NodeAttr a, Stat(dir));
      (void)a;
      return NotADirectory("synapses/" + JoinPath(dir) + ": not a folder");
  }
}

Result<FileContent> SynapsesFolder::Open(const Path& p) {
  ASSIGN_OR_RETURN(Ref r, Resolve(p));
  if (r.kind == Kind::kDoc) {
    ASSIGN_OR_RETURN(Synapse s, store_->GetSynapse(r.id));
    return MemoryFileContent(RenderSynapse(s));
  }
  if (r.kind == Kind::kEndLink) return InvalidArgument("synapses/" + JoinPath(p) + ": a symbolic link");
  return IsADirectory("synapses/" + JoinPath(p) + ": a folder");
}

Status SynapsesFolder::CheckWritable(const Path& p) {
  ASSIGN_OR_RETURN(Ref r, Resolve(p));
  if (r.kind == Kind::kDoc) return Status::Ok();
  if (r.kind == Kind::kEndLink) return Status::Ok();  // an empty placeholder only (PlaceholderOnly)
  return IsADirectory("synapses/" + JoinPath(p) + ": a folder");
}

Status SynapsesFolder::Commit(const Path& p, StagedFile& staged, const CommitContext& ctx,
                              Vanished* vanished) {
  RETURN_IF_ERROR(CheckWritable(p));
  ASSIGN_OR_RETURN(Ref r, Resolve(p));
  if (r.kind == Kind::kEndLink) return PlaceholderOnly(staged, "synapses/" + JoinPath(p));
  const std::string where = "synapses/" + r.id + kDocSuffix;
  ASSIGN_OR_RETURN(std::string bytes, ReadStaged(staged, kMaxDocumentBytes, where));
  auto existing = store_->GetSynapse(r.id);
  if (!existing.ok() && !IsNotFound(existing.status())) return existing.status();
  if (existing.ok() && bytes == RenderSynapse(*existing)) {
    if (!ctx.mtime || SameTimeInSeconds(*ctx.mtime, existing->modified_at)) return Status::Ok();
    return SetMtime(p, *ctx.mtime, vanished);
  }
  ASSIGN_OR_RETURN(neurons::Json doc, ParseObject(bytes, where));
  Synapse s;
  if (existing.ok()) {
    s = *existing;
  } else {
    s.id = r.id;
  }
  const std::string old_created = s.created_at;
  Status parsed = neurons::SynapseFromDocument(doc, &s);
  if (!parsed.ok()) return InvalidArgument(where + ": " + parsed.message());
  if (s.id != r.id) return InvalidArgument(where + ": the document's id " + s.id + " is not the file's name");
  if (s.created_at.empty()) s.created_at = old_created;
  s.modified_at = ModifiedAt(ctx, s.modified_at);
  Status st = store_->PutSynapse(s);
  if (!st.ok()) {
    return st.code() == StatusCode::kInvalidArgument ? InvalidArgument(where + ": " + st.message()) : st;
  }
  vanished->push_back({"by-source"});
  vanished->push_back({"by-target"});
  return Status::Ok();
}

Status SynapsesFolder::Remove(const Path& p, Vanished* vanished) {
  ASSIGN_OR_RETURN(Ref r, Resolve(p));
  if (r.kind == Kind::kDoc) {
    RETURN_IF_ERROR(store_->DeleteSynapse(r.id));
    vanished->push_back({"by-source"});
    vanished->push_back({"by-target"});
    return Status::Ok();
  }
  if (r.kind == Kind::kEndLink) {
    // Made by the store (IsAutomatic): nothing to remove; rm synapses/<uuid>.json removes a synapse.
    return Stat(p).status();
  }
  return IsADirectory("synapses/" + JoinPath(p) + ": a folder");
}

bool SynapsesFolder::IsAutomatic(const Path& p) const {
  return p.size() == 3 && (p[0] == "by-source" || p[0] == "by-target");
}

Vanished SynapsesFolder::Derived() const { return {{"/", "neurons", "graph", "export.json"}}; }

Result<MkdirOutcome> SynapsesFolder::MakeDir(const Path& p) {
  ASSIGN_OR_RETURN(Ref r, Resolve(p));
  if (Stat(p).ok()) return AlreadyExists("synapses/" + JoinPath(p) + ": exists");
  // rsync restoring a backup may make a neuron's folder before the synapses that fill it arrive.
  if (r.kind == Kind::kEndDir) return MkdirOutcome::kProvisional;
  return PermissionDenied("synapses/" + JoinPath(p) + ": the folders here are made by the store");
}

Status SynapsesFolder::RemoveDir(const Path& p, Vanished* vanished) {
  (void)vanished;
  ASSIGN_OR_RETURN(NodeAttr a, Stat(p));
  if (a.type != NodeType::kDir) return NotADirectory("synapses/" + JoinPath(p) + ": not a folder");
  return PermissionDenied("synapses/" + JoinPath(p) + ": the folders here are made by the store");
}

Result<std::string> SynapsesFolder::ReadLink(const Path& p) {
  ASSIGN_OR_RETURN(Ref r, Resolve(p));
  if (r.kind != Kind::kEndLink) return InvalidArgument("synapses/" + JoinPath(p) + ": not a symbolic link");
  ASSIGN_OR_RETURN(NodeAttr a, Stat(p));
  (void)a;
  return LinkTarget(r.id);
}

Status SynapsesFolder::MakeSymlink(const Path& p, const std::string& target, Vanished* vanished) {
  (void)vanished;
  ASSIGN_OR_RETURN(Ref r, Resolve(p));
  if (r.kind == Kind::kEndLink && target == LinkTarget(r.id)) {
    if (!Stat(p).ok()) expected_.Add(p, NowNs());  // the synapse is on its way (rsync)
    return Status::Ok();
  }
  return PermissionDenied("synapses/" + JoinPath(p) +
                          ": links here are made by the store (write synapses/<uuid>.json)");
}

Status SynapsesFolder::SetMtime(const Path& p, const timespec& mtime, Vanished* vanished) {
  (void)vanished;
  ASSIGN_OR_RETURN(Ref r, Resolve(p));
  if (r.kind == Kind::kEndLink) expected_.SetMtime(p, NanosFromTimespec(mtime));
  if (r.kind != Kind::kDoc) return Status::Ok();  // derived times: accepted, not kept
  ASSIGN_OR_RETURN(Synapse s, store_->GetSynapse(r.id));
  const std::string t = neurons::FormatIsoTime(NanosFromTimespec(mtime));
  if (t == s.modified_at) return Status::Ok();
  s.modified_at = t;
  return store_->UpdateSynapse(s);
}

Result<std::vector<std::pair<std::string, std::string>>> SynapsesFolder::Xattrs(const Path& p) {
  ASSIGN_OR_RETURN(NodeAttr a, Stat(p));
  (void)a;
  std::vector<std::pair<std::string, std::string>> out;
  if (p.empty()) {
    ASSIGN_OR_RETURN(neurons::StoreStats s, store_->Stats());
    out.emplace_back("user.modelfs.synapses", std::to_string(s.synapses));
  }
  return out;
}

}  // namespace modelfs::fs
