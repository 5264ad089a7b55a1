// TimeSeriesFolder: /timeseries over a TimeSeriesStore (SPEC §3.3).
//   timeseries/<id>   2×N little-endian float64: N times, then N values (numpy.fromfile(p).reshape(2, -1)).
//                     Writing stores (an overwrite is atomic), rm deletes. xattr user.modelfs.size = N.
// Thread-safety: stateless beyond the store, which is thread-safe.
#pragma once

#include <memory>

#include "fs/folder.h"
#include "stores/timeseries/timeseries_store.h"

namespace modelfs::fs {

class TimeSeriesFolder : public Folder {
 public:
  explicit TimeSeriesFolder(std::unique_ptr<timeseries::TimeSeriesStore> store)
      : store_(std::move(store)) {}
  std::string_view name() const override { return "timeseries"; }
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

 private:
  std::unique_ptr<timeseries::TimeSeriesStore> store_;
};

}  // namespace modelfs::fs
