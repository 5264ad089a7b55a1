// NeuronsFolder and SynapsesFolder: /neurons and /synapses over one NeuronStore (SPEC §3.5).
//
//   neurons/<uuid>.json                 one neuron: the original's to_dict() without "vector",
//                                       json.dumps(indent=2, sort_keys=True) text. Writing one creates or
//                                       updates the neuron (a "vector" list in it sets the vector; no
//                                       "vector" key keeps it); rm deletes it and its synapses.
//   neurons/<uuid>.vec                  its vector, raw little-endian float32 (numpy.fromfile); 0 bytes
//                                       when it has none. Writing sets it (a multiple of 4 bytes).
//   neurons/by-type/<type>/<uuid>.json  symbolic links to ../../<uuid>.json, one folder per type
//   neurons/graph/export.json           the whole graph in the original's export format (checksum),
//                                       made on demand; writing one replaces the graph with it, verified
//   neurons/graph/backups/<name>.db     consistent SQLite backups; creating an empty file takes one,
//                                       writing a backup file adds it, rm removes it
//   synapses/<uuid>.json                one synapse (to_dict() text); write creates/updates, rm deletes
//   synapses/by-source/<neuron>/<uuid>.json, synapses/by-target/<neuron>/<uuid>.json
//                                       symbolic links to ../../<uuid>.json
//
// Times: a neuron's or synapse's files have its modified_at as mtime; a write sets modified_at to the
// time given to the staged file (rsync, cp -p) or now, and so does touch. Folders and export.json have
// the graph's change time; touching export.json sets it. Writing the bytes a file already holds changes
// nothing. The listing folders are read-only; creating a link or folder there that already exists (or
// is provisional) is accepted, so that rsync restores work.
//
// Thread-safety: the store is thread-safe; the export cache has its own locks.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "fs/folder.h"
#include "fs/generated_cache.h"
#include "stores/neurons/neuron_store.h"

namespace modelfs::fs {

// Links that rsync makes in a listing before the entity they point to has arrived (its generator
// creates links while the files are still on their way to the receiver): kept in memory and shown as
// they were made, until the entity appears (the store's own link then takes over) or the unmount.
class ExpectedLinks {
 public:
  void Add(const Path& p, int64_t mtime_ns);
  std::optional<int64_t> Find(const Path& p);
  void Forget(const Path& p);
  bool SetMtime(const Path& p, int64_t mtime_ns);  // false if p is not expected
  // The expected links directly in dir: name and mtime.
  std::vector<std::pair<std::string, int64_t>> In(const Path& dir);

 private:
  std::mutex mu_;
  std::map<Path, int64_t> links_;  // (mu_)
};

class NeuronsFolder : public Folder {
 public:
  // staging_dir: staged writes and the generated export (unlinked); cleared by the caller at mount.
  NeuronsFolder(std::shared_ptr<neurons::NeuronStore> store, std::string staging_dir);
  std::string_view name() const override { return "neurons"; }
  const std::string& staging_dir() const override { return staging_dir_; }
  Result<NodeAttr> Stat(const Path& p) override;
  Result<std::vector<DirEntry>> List(const Path& dir) override;
  Result<FileContent> Open(const Path& p) override;
  Status CheckWritable(const Path& p) override;
  Status Commit(const Path& p, StagedFile& staged, const CommitContext& ctx,
                Vanished* vanished) override;
  Status Remove(const Path& p, Vanished* vanished) override;
  Result<MkdirOutcome> MakeDir(const Path& p) override;
  Status RemoveDir(const Path& p, Vanished* vanished) override;
  Result<std::string> ReadLink(const Path& p) override;
  Status MakeSymlink(const Path& p, const std::string& target, Vanished* vanished) override;
  Status SetMtime(const Path& p, const timespec& mtime, Vanished* vanished) override;
  Result<std::vector<std::pair<std::string, std::string>>> Xattrs(const Path& p) override;
  Status Sync() override { return store_->Sync(); }
  bool MadeOnDemand(const Path& p) const override {
    return p.size() == 2 && p[0] == "graph" && p[1] == "export.json";
  }
  // <uuid>.vec, by-type links and the export: rm of one clears the vector or changes nothing.
  bool IsAutomatic(const Path& p) const override;
  Vanished Derived() const override;  // the export changes with every change
  // The graph's statistics (neurons/) are read by name only.
  bool ListsXattr(const Path& p, std::string_view name) const override {
    (void)name;
    return !p.empty();
  }

 private:
  enum class Kind { kRoot, kDoc, kVector, kByType, kTypeDir, kTypeLink, kGraph, kExport, kBackups, kBackup };
  struct Ref {
    Kind kind;
    std::string id;    // neuron id (kDoc, kVector, kTypeLink), type (kTypeDir), backup name (kBackup)
    std::string type;  // kTypeLink: its folder
  };
  Result<Ref> Resolve(const Path& p);
  Result<NodeAttr> ExportAttr();
  GeneratedCache::Generator ExportGenerator();
  Result<int64_t> ChangeTime();
  Status CommitDoc(const std::string& id, StagedFile& staged, const CommitContext& ctx,
                   Vanished* vanished);
  Status CommitVector(const std::string& id, StagedFile& staged, const CommitContext& ctx,
                      Vanished* vanished);
  Status CommitExport(StagedFile& staged, const CommitContext& ctx, Vanished* vanished);
  Status CommitBackup(const std::string& name, StagedFile& staged, const CommitContext& ctx);

  const std::shared_ptr<neurons::NeuronStore> store_;
  const std::string staging_dir_;
  GeneratedCache cache_;
  ExpectedLinks expected_;
};

class SynapsesFolder : public Folder {
 public:
  SynapsesFolder(std::shared_ptr<neurons::NeuronStore> store, std::string staging_dir);
  std::string_view name() const override { return "synapses"; }
  const std::string& staging_dir() const override { return staging_dir_; }
  Result<NodeAttr> Stat(const Path& p) override;
  Result<std::vector<DirEntry>> List(const Path& dir) override;
  Result<FileContent> Open(const Path& p) override;
  Status CheckWritable(const Path& p) override;
  Status Commit(const Path& p, StagedFile& staged, const CommitContext& ctx,
                Vanished* vanished) override;
  Status Remove(const Path& p, Vanished* vanished) override;
  Result<MkdirOutcome> MakeDir(const Path& p) override;
  Status RemoveDir(const Path& p, Vanished* vanished) override;
  Result<std::string> ReadLink(const Path& p) override;
  Status MakeSymlink(const Path& p, const std::string& target, Vanished* vanished) override;
  Status SetMtime(const Path& p, const timespec& mtime, Vanished* vanished) override;
  Result<std::vector<std::pair<std::string, std::string>>> Xattrs(const Path& p) override;
  Status Sync() override { return store_->Sync(); }
  bool IsAutomatic(const Path& p) const override;  // the by-source / by-target links
  Vanished Derived() const override;               // neurons/graph/export.json
  bool ListsXattr(const Path& p, std::string_view name) const override {
    (void)name;
    return !p.empty();  // the synapse count on synapses/ is read by name only
  }

 private:
  enum class Kind { kRoot, kDoc, kEnds, kEndDir, kEndLink };
  struct Ref {
    Kind kind;
    std::string id;      // synapse id (kDoc, kEndLink); neuron id (kEndDir, and kEndLink's folder)
    std::string neuron;  // kEndLink: the neuron folder it is in
    bool sources = true; // kEnds, kEndDir, kEndLink: by-source (true) or by-target
  };
  Result<Ref> Resolve(const Path& p);

  const std::shared_ptr<neurons::NeuronStore> store_;
  const std::string staging_dir_;
  ExpectedLinks expected_;
};

}  // namespace modelfs::fs
