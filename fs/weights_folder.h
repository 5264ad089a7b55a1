// WeightsFolder: /weights over a WeightStore (SPEC §3.4).
//   weights/<hash>   one tensor as canonical .npy v1.0 bytes; <hash> = their SHA-256. Read-only in the
//                    sense that a write must reproduce exactly those bytes (EINVAL otherwise).
//   weights/<name>   a name of a tensor: a symbolic link to its <hash> (many names per tensor).
// Writing any .npy file under a name stores the tensor and points the name at it; under a hash, the
// content must hash to it. rm <name> removes the name; rm <hash> deletes the tensor and its names.
// `ln -s <hash> <name>` (or to another name) and `mv <name> <other>` re-point names. Coral's metadata
// are xattrs (user.modelfs.*); layer_type, model_name and name can be set with setfattr. The folder's
// own xattrs are the store's storage statistics.
//
// A .npy file is decoded on its first open into an unlinked file (GeneratedCache, a few entries),
// which later opens share; stat never decodes (sizes are in the index).
//
// Links to a hash that is not stored (yet) are kept by this folder, in memory, until the tensor
// arrives: rsync creates links before it copies the files they point to. They are lost at unmount
// if the tensor never comes.
//
// Thread-safety: the store and the cache are thread-safe; dangling_ and changed_ns_ have their own
// mutex / atomic.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>

#include "fs/folder.h"
#include "fs/generated_cache.h"
#include "stores/weights/weight_store.h"

namespace modelfs::fs {

class WeightsFolder : public Folder {
 public:
  // cache_dir: where decoded .npy files are kept (unlinked); cleared by the caller at mount.
  WeightsFolder(std::unique_ptr<weights::WeightStore> store, std::string cache_dir);
  std::string_view name() const override { return "weights"; }
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
  Status Rename(const Path& from, const Path& to, Vanished* vanished) override;
  Result<std::string> ReadLink(const Path& p) override;
  Status MakeSymlink(const Path& p, const std::string& target, Vanished* vanished) override;
  Status SetMtime(const Path& p, const timespec& mtime, Vanished* vanished) override;
  Status SetXattr(const Path& p, const std::string& name, std::string_view value) override;
  // Statistics of the folder, and how a tensor is held (stored_bytes, delta_base, compression_info),
  // are read by name only.
  bool ListsXattr(const Path& p, std::string_view name) const override {
    return !p.empty() && name != "user.modelfs.stored_bytes" && name != "user.modelfs.delta_base" &&
           name != "user.modelfs.compression_info";
  }
  Result<std::vector<std::pair<std::string, std::string>>> Xattrs(const Path& p) override;
  Status Sync() override { return store_->Sync(); }

 private:
  struct Link {
    std::string hash;
    int64_t mtime_ns = 0;
  };
  // A name, stored or dangling. NotFound.
  Result<Link> FindLink(const std::string& name);
  // Points name at hash: in the store when the tensor is stored, else as a dangling link.
  Status PointName(const std::string& name, const std::string& hash, int64_t mtime_ns);
  // Stores the dangling links waiting for hash.
  void ResolveDangling(const std::string& hash);
  void Touch();  // the listing changed: the folder's mtime moves

  std::unique_ptr<weights::WeightStore> store_;
  GeneratedCache cache_;
  std::atomic<int64_t> changed_ns_;
  std::mutex mu_;
  std::map<std::string, Link> dangling_;  // (mu_) name -> link to a hash not stored yet
};

}  // namespace modelfs::fs
