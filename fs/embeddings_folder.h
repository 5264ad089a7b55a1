// EmbeddingsFolder: /embeddings over an EmbeddingStore (SPEC §3.2).
//   checkpoint         whole store, damo checkpoint format; writing one replaces the store
//   dump[@cond]        all groups, damo dump format; writing a dump upserts its weights
//   group/<g>[@cond]   one group, damo dump format; writing upserts that group's weights
//   groups             group configuration, text (see fs/embeddings_text.h); writing configures
// Views with conditions resolve but are not listed, and are read-only. Every view is generated once
// per store version into an unlinked file (GeneratedCache), so stat knows the exact size and an open
// reads one consistent snapshot. Writing the bytes a view already holds changes nothing.
// Thread-safety: as the store and the cache.
#pragma once

#include <memory>
#include <mutex>
#include <shared_mutex>

#include "fs/folder.h"
#include "fs/generated_cache.h"
#include "stores/embeddings/embedding_store.h"

namespace modelfs::fs {

class EmbeddingsFolder : public Folder {
 public:
  EmbeddingsFolder(std::unique_ptr<embeddings::EmbeddingStore> store, std::string staging_dir);
  std::string_view name() const override { return "embeddings"; }
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
  Status Sync() override { return store_->Sync(); }
  bool CommitsChangeEverything() const override { return true; }
  // Every file is a view: rm of one changes nothing (and hides it from the remover: tar -x).
  bool IsAutomatic(const Path& p) const override { return !p.empty(); }

 private:
  enum class Kind { kRoot, kGroupDir, kCheckpoint, kDump, kGroup, kGroups };
  struct View {
    Kind kind;
    std::string key;  // cache key: the path
    embeddings::Conditions conditions;
    bool conditioned = false;
  };
  Result<View> Resolve(const Path& p);
  GeneratedCache::Generator GeneratorFor(const View& v);
  Result<std::vector<int>> ListedGroups();    // configured or holding keys
  Result<std::vector<int>> GroupsWithKeys();
  // The content version of every view: bumped by each commit here and whenever the store's change
  // time moves on its own (TTL expiry). Never repeats, unlike the change time, which a restore sets
  // back to its backup's (and which is only the views' mtime).
  uint64_t CurrentVersion();

  std::unique_ptr<embeddings::EmbeddingStore> store_;
  const std::string staging_dir_;
  GeneratedCache cache_;
  // Commits hold it exclusively; a generation holds it shared while it takes its snapshot and
  // version, so a version always names the content of one snapshot. Lock order: before version_mu_.
  std::shared_mutex commit_mu_;
  std::mutex version_mu_;
  uint64_t generation_ = 1;          // (version_mu_)
  int64_t seen_change_time_ = -1;    // (version_mu_)
};

}  // namespace modelfs::fs
