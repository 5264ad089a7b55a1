// ModelStore: NeurDB's storage manager (seed 000) as a library. Versioned model layers.
//
// A model has an integer id (AUTOINCREMENT: never reused after delete), metadata bytes and numbered
// layers. Every layer write adds a version (create_time in microseconds since the epoch, plus a
// version_id that breaks ties); nothing is overwritten. The newest version of a layer is the one with
// the greatest (create_time, version_id).
//
// Storage: SQLite (WAL) holds models, versions and metadata; the bytes of each layer version live in an
// immutable file <dir>/blobs/<version_id> that SQLite references. Keeping layer bytes out of SQLite's
// pages is what lets layers of any size (SQLite's 1 GB blob limit does not apply), lets a commit be a
// rename of an already-written staged file (no copy), and lets readers stream a version from a plain fd.
//
// Crash safety: see CommitLayer in models_store.cc. After any crash, Open() removes blob files that no
// committed row references and empties the staging directory, so no partial version is ever visible.
//
// Thread-safety: every method may be called from any thread; SQLite access is serialized by an internal
// mutex. File descriptors returned by OpenVersion are owned by the caller and read without the lock.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "stores/common/scoped_fd.h"
#include "stores/common/staged_file.h"
#include "stores/common/status.h"

namespace modelfs::models {

struct ModelInfo {
  int64_t model_id = 0;
  uint64_t meta_size = 0;
  int64_t create_time_us = 0;
  int64_t change_time_us = 0;  // last time anything in the model changed (meta, a version, a delete)
  int64_t meta_time_us = 0;    // last time the metadata bytes changed (create time until then)
};

struct VersionInfo {
  int64_t version_id = 0;
  int64_t model_id = 0;
  int64_t layer_id = 0;
  int64_t create_time_us = 0;
  uint64_t size = 0;
};

// NeurDB's LoadModel result: metadata and the newest version of each layer, ascending layer id.
struct LoadedModel {
  std::string meta;
  std::vector<std::pair<int64_t, std::string>> layers;
};

struct CommitOptions {
  // When set, the version gets this create_time (history restore). When unset the version gets the
  // current time, made strictly greater than the layer's newest create_time so that history names
  // (which have microsecond resolution) never collide and the new version is the newest.
  std::optional<int64_t> create_time_us;
  // Make the commit survive a machine crash (fsync the blob, its directory and the SQLite WAL).
  // Without it a commit survives a crash of the process, not of the machine.
  bool durable = false;
};

struct CommitOutcome {
  bool added = false;  // false: the bytes equal the newest version (or the version at that time); nothing added
  VersionInfo version; // the added version, or the existing identical one
};

class ModelStore {
 public:
  // Opens (creating if needed) the store in dir: dir/models.db, dir/blobs/, dir/staging/.
  // Errors: IOError when the directory or database cannot be opened or migrated.
  static Result<std::unique_ptr<ModelStore>> Open(const std::string& dir);
  ~ModelStore();

  // Where callers create StagedFiles so that commits are renames. Same filesystem as the blobs.
  const std::string& staging_dir() const { return staging_dir_; }

  // ---- NeurDB API ----
  // Saves a new model with a fresh id; layers get ids 0..n-1. One transaction.
  Result<int64_t> SaveModel(std::string_view meta, const std::vector<std::string>& layers);
  // NotFound when the model does not exist.
  Result<LoadedModel> LoadModel(int64_t model_id);
  // Adds a version of layer_id. NotFound when the model does not exist. Identical bytes add nothing.
  Status UpdateModel(int64_t model_id, int64_t layer_id, std::string_view bytes);
  // Deletes the model, all its layers and versions, in one transaction. A missing id is a no-op.
  Status DeleteModel(int64_t model_id);

  // ---- models ----
  // Creates a model with a fresh id and empty metadata.
  Result<int64_t> CreateModel();
  // Creates a model with this id (mkdir models/<id>, restores). AlreadyExists when it exists;
  // PermissionDenied when the id belonged to a deleted model (ids are never reused); InvalidArgument
  // when id <= 0.
  Status CreateModelWithId(int64_t model_id);
  Result<std::vector<ModelInfo>> ListModels();
  // When a model was last created or deleted (microseconds): changes exactly when ListModels does.
  Result<int64_t> ListChangeTimeUs();
  Result<ModelInfo> GetModel(int64_t model_id);  // NotFound
  Result<std::string> ReadMeta(int64_t model_id);  // NotFound
  // Replaces the metadata (it is not versioned). NotFound; TooLarge above kMaxMetaBytes. Bytes equal
  // to the current metadata change nothing but meta_time_us, to time_us when given. time_us, when
  // given, becomes meta_time_us (restores keep the original time); otherwise NowMicros().
  Status SetMeta(int64_t model_id, std::string_view meta,
                 std::optional<int64_t> time_us = std::nullopt);
  static constexpr uint64_t kMaxMetaBytes = 64ull << 20;

  // ---- layers and versions ----
  // Layer ids that have at least one version, ascending. NotFound when the model does not exist.
  Result<std::vector<int64_t>> ListLayers(int64_t model_id);
  // Versions of a layer, oldest first. NotFound when the model does not exist; empty when the layer
  // has no versions.
  Result<std::vector<VersionInfo>> ListVersions(int64_t model_id, int64_t layer_id);
  // The newest version of every layer that has one, ascending layer id (one query). NotFound when
  // the model does not exist.
  Result<std::vector<VersionInfo>> ListNewestVersions(int64_t model_id);
  // NotFound when the model or the layer does not exist.
  Result<VersionInfo> NewestVersion(int64_t model_id, int64_t layer_id);
  // The version with exactly this create_time. NotFound when none.
  Result<VersionInfo> VersionAt(int64_t model_id, int64_t layer_id, int64_t create_time_us);
  // A read-only fd on the version's bytes. Stays readable after the version is deleted.
  Result<ScopedFd> OpenVersion(const VersionInfo& version);

  // Commits a staged file as a new version of the layer (the write path of the filesystem).
  // Validation first (model exists: else NotFound; layer_id >= 0: else InvalidArgument), then:
  //  - without create_time: bytes equal to the newest version -> nothing added (outcome.added=false);
  //  - with create_time: a version at that time with equal bytes -> nothing added; with other bytes ->
  //    AlreadyExists (history is immutable).
  // On success with added=true the staged file is consumed (it became the version's blob). On any
  // error the store is unchanged and the staged file is left as it was.
  Result<CommitOutcome> CommitLayer(int64_t model_id, int64_t layer_id, StagedFile& staged,
                                    const CommitOptions& options);
  // Deletes every version of a layer (one transaction). NotFound when model or layer is missing.
  Status DeleteLayer(int64_t model_id, int64_t layer_id);
  // Deletes one version. NotFound when missing.
  Status DeleteVersion(int64_t model_id, int64_t layer_id, int64_t create_time_us);

  // Makes everything committed so far survive a machine crash (checkpoints the WAL, syncs dirs).
  Status Sync();

 private:
  class Impl;
  explicit ModelStore(std::unique_ptr<Impl> impl, std::string staging_dir);
  std::unique_ptr<Impl> impl_;
  std::string staging_dir_;
};

// Current time in microseconds since the Unix epoch (UTC).
int64_t NowMicros();
// "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC) for a time in microseconds; the history file name.
std::string FormatHistoryTime(int64_t micros);
// Parses exactly the format above; InvalidArgument for anything else (also out-of-range fields).
Result<int64_t> ParseHistoryTime(std::string_view name);

}  // namespace modelfs::models
