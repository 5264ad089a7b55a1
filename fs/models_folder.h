// ModelsFolder: /models over a ModelStore (SPEC §3.1).
//   models/<id>/meta               metadata bytes (writable; unlink clears it)
//   models/<id>/layers/<n>         newest version of layer n (writable: each change adds a version)
//   models/<id>/history/<n>/<t>    every version, named by its UTC create_time (read-only; creating a
//                                  new name inserts a version at that time)
// Thread-safety: stateless beyond the store, which is thread-safe.
#pragma once

#include <memory>

#include "fs/folder.h"
#include "stores/models/models_store.h"

namespace modelfs::fs {

class ModelsFolder : public Folder {
 public:
  explicit ModelsFolder(std::unique_ptr<models::ModelStore> store) : store_(std::move(store)) {}
  std::string_view name() const override { return "models"; }
  const std::string& staging_dir() const override { return store_->staging_dir(); }
  Result<NodeAttr> Stat(const Path& p) override;
  Result<std::vector<DirEntry>> List(const Path& dir) override;
  Result<FileContent> Open(const Path& p) override;
  Status CheckWritable(const Path& p) override;
  Status Commit(const Path& p, StagedFile& staged, const CommitContext& ctx,
                Vanished* vanished) override;
  Status Remove(const Path& p, Vanished* vanished) override;
  Result<MkdirOutcome> MakeDir(const Path& p) override;
  Status RemoveDir(const Path& p, Vanished* vanished) override;
  Result<std::vector<std::pair<std::string, std::string>>> Xattrs(const Path& p) override;
  Status Sync() override { return store_->Sync(); }
  // meta stays while its model exists (rm clears it); layers/<n> while history/<n> has a version.
  bool IsAutomatic(const Path& p) const override {
    return (p.size() == 2 && p[1] == "meta") || (p.size() == 3 && p[1] == "layers");
  }
  // A new model shows meta, layers/ and history/ at once (hidden from its maker: see ProcessViews).
  bool MakeDirFillsIt(const Path& p) const override { return p.size() == 1; }

 private:
  // CheckWritable, except that with existing_history an existing history version passes (its commit
  // then compares bytes).
  Status CheckName(const Path& p, bool existing_history);
  std::unique_ptr<models::ModelStore> store_;
};

}  // namespace modelfs::fs
