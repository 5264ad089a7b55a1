#include "stores/models/models_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <utility>

#include "stores/common/file_util.h"
#include "stores/common/names.h"
#include "stores/common/sqlite_db.h"

namespace modelfs::models {
namespace {


// Schema version 1. The UNIQUE constraint's index is (model_id, layer_id, create_time, rowid), and
// rowid is version_id, so it serves "newest", "at time" and "oldest first" without a sort; a
// separate index on those columns would be an exact duplicate. AUTOINCREMENT on both tables: model
// ids are never reused (NeurDB semantics), and version ids name blob files, which must never be
// reused either. retired_model remembers deleted ids, which CreateModelWithId refuses.
constexpr char kSchemaV1[] = R"sql(
CREATE TABLE model(
  model_id INTEGER PRIMARY KEY AUTOINCREMENT,
  meta BLOB NOT NULL,
  create_time INTEGER NOT NULL,
  change_time INTEGER NOT NULL,
  meta_time INTEGER NOT NULL);
CREATE TABLE layer_version(
  version_id INTEGER PRIMARY KEY AUTOINCREMENT,
  model_id INTEGER NOT NULL REFERENCES model(model_id) ON DELETE CASCADE,
  layer_id INTEGER NOT NULL,
  create_time INTEGER NOT NULL,
  size INTEGER NOT NULL,
  UNIQUE(model_id, layer_id, create_time));
CREATE TABLE retired_model(model_id INTEGER PRIMARY KEY);
)sql";

// Schema version 2: when the list of models last changed (a model created or deleted), which is the
// models/ folder's mtime: it must move exactly when the listing does (tar, find -newer, rsync).
constexpr char kSchemaV2[] = R"sql(
CREATE TABLE store_state(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO store_state SELECT 'list_change_time', COALESCE(MAX(create_time), 0) FROM model;
)sql";
// Bumps it, strictly, in the transaction that changes the list.
constexpr char kBumpListChange[] =
    "UPDATE store_state SET value=MAX(?1, value+1) WHERE key='list_change_time'";

constexpr char kSelectVersion[] =
    "SELECT version_id, model_id, layer_id, create_time, size FROM layer_version ";
constexpr char kSelectModel[] =
    "SELECT model_id, length(meta), create_time, change_time, meta_time FROM model ";

// History names can express 1970-01-01T00:00:00.000000Z .. 9999-12-31T23:59:59.999999Z; a version
// outside would have a history file that cannot be named back.
constexpr int64_t kMinHistoryTime = 0;
constexpr int64_t kMaxHistoryTime = 253402300799999999;
constexpr int64_t kMicrosPerSecond = 1000000;

std::string ModelName(int64_t model_id) { return "model " + std::to_string(model_id); }
std::string LayerName(int64_t model_id, int64_t layer_id) {
  return ModelName(model_id) + " layer " + std::to_string(layer_id);
}
Status NoSuchModel(int64_t model_id) { return NotFound(ModelName(model_id) + ": no such model"); }

// The store has no logger of its own; these are errors that happen after a commit succeeded and
// that the next Open() repairs, so they are reported and not returned.
void LogWarning(const std::string& message) { LogStoreWarning("models", message); }

VersionInfo VersionFromRow(const SqliteStmt& s) {
  VersionInfo v;
  v.version_id = s.ColumnInt64(0);
  v.model_id = s.ColumnInt64(1);
  v.layer_id = s.ColumnInt64(2);
  v.create_time_us = s.ColumnInt64(3);
  v.size = static_cast<uint64_t>(s.ColumnInt64(4));
  return v;
}

ModelInfo ModelFromRow(const SqliteStmt& s) {
  ModelInfo m;
  m.model_id = s.ColumnInt64(0);
  m.meta_size = static_cast<uint64_t>(s.ColumnInt64(1));
  m.create_time_us = s.ColumnInt64(2);
  m.change_time_us = s.ColumnInt64(3);
  m.meta_time_us = s.ColumnInt64(4);
  return m;
}

// Blobs renamed into place inside a not yet committed transaction. Unless Committed() is called,
// they are renamed back into staging on destruction (or by Undo()), so a failed commit leaves the
// staged files as the caller gave them.
class BlobMoves {
 public:
  struct Moved {
    StagedFile* staged;
    int64_t version_id;
    mode_t old_mode;
  };
  BlobMoves() = default;
  BlobMoves(const BlobMoves&) = delete;
  BlobMoves& operator=(const BlobMoves&) = delete;
  ~BlobMoves() {
    Status st = Undo();
    if (!st.ok()) LogWarning(st.ToString());
  }

  void Add(Moved m) { moved_.push_back(m); }
  const std::vector<Moved>& moved() const { return moved_; }
  void Committed() { moved_.clear(); }
  // A blob that cannot be moved back is an orphan until the next Open(); its staged file is lost.
  Status Undo() {
    Status first;
    for (auto it = moved_.rbegin(); it != moved_.rend(); ++it) {
      Status st = it->staged->MoveBack();
      if (st.ok() && ::fchmod(it->staged->fd(), it->old_mode) != 0) {
        st = ErrnoError("fchmod " + it->staged->path(), errno);
      }
      if (!st.ok() && first.ok()) first = st;
    }
    moved_.clear();
    return first;
  }

 private:
  std::vector<Moved> moved_;
};

Status Fdatasync(int fd, const std::string& what) {
  if (::fdatasync(fd) != 0) return ErrnoError("fdatasync " + what, errno);
  return Status::Ok();
}

}  // namespace

class ModelStore::Impl {
 public:
  Impl(std::string dir, ScopedFd lock_fd, SqliteDb db)
      : blobs_dir_(dir + "/blobs"),
        staging_dir_(dir + "/staging"),
        dir_(dir),
        lock_fd_(std::move(lock_fd)),
        db_(std::move(db)) {}

  std::string BlobPath(int64_t version_id) const {
    return blobs_dir_ + "/" + std::to_string(version_id);
  }

  // ---- The helpers below require mu_ to be held. ----

  // Versions of an existing model, selected and ordered by `where_order` (kSelectVersion's tail),
  // inside one read transaction. NotFound when the model does not exist.
  template <typename... Args>
  Result<std::vector<VersionInfo>> ModelVersionsLocked(int64_t model_id, std::string_view where_order,
                                                       const Args&... args) {
    ASSIGN_OR_RETURN(SqliteTransaction txn,
                     SqliteTransaction::Begin(db_, SqliteTransaction::Mode::kDeferred));
    ASSIGN_OR_RETURN(bool exists, ModelExistsLocked(model_id));
    if (!exists) return NoSuchModel(model_id);
    ASSIGN_OR_RETURN(SqliteStmt s, db_.Prepare(std::string(kSelectVersion) + std::string(where_order)));
    RETURN_IF_ERROR(s.Bind(args...));
    std::vector<VersionInfo> out;
    for (;;) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      out.push_back(VersionFromRow(s));
    }
    return out;  // the read transaction ends with the scope
  }

  // The model's metadata. NotFound when the model does not exist.
  Result<std::string> MetaLocked(int64_t model_id) {
    ASSIGN_OR_RETURN(auto row, db_.QueryRow("SELECT meta FROM model WHERE model_id=?1", model_id));
    if (!row.found) return NoSuchModel(model_id);
    return row.stmt.ColumnBlob(0);
  }

  Result<bool> ModelExistsLocked(int64_t model_id) {
    ASSIGN_OR_RETURN(auto row, db_.QueryRow("SELECT 1 FROM model WHERE model_id=?1", model_id));
    return row.found;
  }

  Result<std::optional<VersionInfo>> NewestLocked(int64_t model_id, int64_t layer_id) {
    ASSIGN_OR_RETURN(auto row,
                     db_.QueryRow(std::string(kSelectVersion) +
                                      "WHERE model_id=?1 AND layer_id=?2 "
                                      "ORDER BY create_time DESC, version_id DESC LIMIT 1",
                                  model_id, layer_id));
    if (!row.found) return std::optional<VersionInfo>();
    return std::optional<VersionInfo>(VersionFromRow(row.stmt));
  }

  Result<std::optional<VersionInfo>> AtLocked(int64_t model_id, int64_t layer_id, int64_t time) {
    ASSIGN_OR_RETURN(auto row,
                     db_.QueryRow(std::string(kSelectVersion) +
                                      "WHERE model_id=?1 AND layer_id=?2 AND create_time=?3",
                                  model_id, layer_id, time));
    if (!row.found) return std::optional<VersionInfo>();
    return std::optional<VersionInfo>(VersionFromRow(row.stmt));
  }

  // Bumps change_time, strictly, so that every change is visible as a new mtime.
  Status TouchModelLocked(int64_t model_id) {
    return db_
        .Run("UPDATE model SET change_time=MAX(?1, change_time+1) WHERE model_id=?2", NowMicros(),
             model_id)
        .status();
  }

  // Steps 3 (the row) and 4 (the rename) of the CommitLayer protocol, inside the caller's open
  // transaction. On success the staged file is in blobs/ and recorded in moves, so the caller's
  // failure to commit moves it back. A failure here has moved nothing.
  Result<VersionInfo> AddVersionLocked(int64_t model_id, int64_t layer_id,
                                       std::optional<int64_t> create_time, StagedFile& staged,
                                       uint64_t size, BlobMoves& moves) {
    VersionInfo v;
    v.model_id = model_id;
    v.layer_id = layer_id;
    v.size = size;
    if (create_time) {
      v.create_time_us = *create_time;
    } else {
      // Strictly after the layer's newest, even if the clock went back or a restore put a version
      // in the future: the new version must become the newest and its history name must be fresh.
      ASSIGN_OR_RETURN(auto row, db_.QueryRow("SELECT MAX(create_time) FROM layer_version "
                                              "WHERE model_id=?1 AND layer_id=?2",
                                              model_id, layer_id));
      v.create_time_us = NowMicros();
      if (row.found && !row.stmt.ColumnIsNull(0)) {
        v.create_time_us = std::max(v.create_time_us, row.stmt.ColumnInt64(0) + 1);
      }
    }
    RETURN_IF_ERROR(db_.Run("INSERT INTO layer_version(model_id, layer_id, create_time, size) "
                            "VALUES(?1, ?2, ?3, ?4)",
                            model_id, layer_id, v.create_time_us, static_cast<int64_t>(size))
                        .status());
    v.version_id = db_.LastInsertRowid();

    struct stat st;
    if (::fstat(staged.fd(), &st) != 0) return ErrnoError("fstat " + staged.path(), errno);
    // Blobs are immutable; the mode keeps a stray writer with access to the data dir honest.
    if (::fchmod(staged.fd(), 0444) != 0) return ErrnoError("fchmod " + staged.path(), errno);
    Status moved = staged.MoveTo(BlobPath(v.version_id));
    if (!moved.ok()) {
      if (::fchmod(staged.fd(), st.st_mode & 07777) != 0) {
        LogWarning(ErrnoError("fchmod " + staged.path(), errno).ToString());
      }
      return moved;
    }
    moves.Add({&staged, v.version_id, static_cast<mode_t>(st.st_mode & 07777)});
    return v;
  }

  // Step 4's directory sync and step 5 of the CommitLayer protocol. On failure the transaction is
  // rolled back and the blobs are moved back to staging.
  Status CommitLocked(SqliteTransaction& txn, BlobMoves& moves, bool durable) {
    Status st;
    if (durable && !moves.moved().empty()) st = SyncDir(blobs_dir_);
    if (st.ok()) st = txn.Commit();
    if (!st.ok()) {
      // Nobody sees uncommitted rows, so the order of rollback and undo does not matter.
      txn.Rollback()
          .IgnoreError();  // a rollback error leaves nothing to do: the next Open() repairs
      Status undo = moves.Undo();
      if (!undo.ok()) return Status(st.code(), st.message() + "; and undoing: " + undo.message(), st.sys_errno());
      return st;
    }
    if (!durable) {
      for (const auto& m : moves.moved()) unsynced_blobs_.push_back(m.version_id);
    }
    moves.Committed();
    return Status::Ok();
  }

  // After a COMMIT that deleted versions: their blobs go now. Open fds keep reading the old bytes.
  void UnlinkBlobs(const std::vector<int64_t>& version_ids) {
    for (int64_t id : version_ids) {
      std::string path = BlobPath(id);
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        LogWarning(ErrnoError("unlink " + path + " (removed at next open)", errno).ToString());
      }
    }
  }

  template <typename... Args>
  Result<std::vector<int64_t>> VersionIdsLocked(std::string_view where, const Args&... args) {
    ASSIGN_OR_RETURN(SqliteStmt s,
                     db_.Prepare("SELECT version_id FROM layer_version " + std::string(where)));
    RETURN_IF_ERROR(s.Bind(args...));
    std::vector<int64_t> ids;
    for (;;) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      ids.push_back(s.ColumnInt64(0));
    }
    return ids;
  }

  // Open(), with the exclusive lock held: no other process is between steps 3 and 5, so every blob
  // without a committed row and every staging file is garbage from a crash.
  Status RemoveGarbage() {
    RETURN_IF_ERROR(ClearDir(staging_dir_));
    DIR* d = ::opendir(blobs_dir_.c_str());
    if (d == nullptr) return ErrnoError("opendir " + blobs_dir_, errno);
    std::vector<std::string> names;
    errno = 0;
    while (struct dirent* e = ::readdir(d)) {
      if (e->d_type != DT_DIR) names.emplace_back(e->d_name);
      errno = 0;
    }
    int read_err = errno;
    ::closedir(d);  // a read-only directory stream: nothing to lose
    if (read_err != 0) return ErrnoError("readdir " + blobs_dir_, read_err);

    ASSIGN_OR_RETURN(SqliteStmt exists,
                     db_.Prepare("SELECT 1 FROM layer_version WHERE version_id=?1"));
    for (const std::string& name : names) {
      bool committed = false;
      char* end = nullptr;
      errno = 0;
      long long id = strtoll(name.c_str(), &end, 10);
      // Only the canonical spelling of an id is a blob name ("007" is not blob 7).
      if (errno == 0 && *end == '\0' && std::to_string(id) == name) {
        exists.Reset();
        RETURN_IF_ERROR(exists.BindInt64(1, id));
        ASSIGN_OR_RETURN(committed, exists.Step());
      }
      if (committed) continue;
      std::string path = blobs_dir_ + "/" + name;
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        return ErrnoError("unlink orphan blob " + path, errno);
      }
    }
    return Status::Ok();
  }

  // Constant after construction.
  const std::string blobs_dir_;
  const std::string staging_dir_;
  const std::string dir_;
  const ScopedFd lock_fd_;  // flock: shared while open; exclusive only during Open()'s repair

  std::mutex mu_;
  SqliteDb db_;                          // guarded by mu_
  std::vector<int64_t> unsynced_blobs_;  // guarded by mu_: committed without fdatasync since Sync()
};

ModelStore::ModelStore(std::unique_ptr<Impl> impl, std::string staging_dir)
    : impl_(std::move(impl)), staging_dir_(std::move(staging_dir)) {}

ModelStore::~ModelStore() = default;

Result<std::unique_ptr<ModelStore>> ModelStore::Open(const std::string& dir) {
  RETURN_IF_ERROR(MakeDirs(dir + "/blobs"));
  RETURN_IF_ERROR(MakeDirs(dir + "/staging"));

  // Several processes may open one store (the daemon and a command-line tool): SQLite arbitrates
  // the database, and this lock decides who may repair after a crash. Only an opener that finds
  // nobody else (exclusive lock) may delete orphans and staging files, which would otherwise be
  // another process's commits in flight. Everyone then holds it shared until closing.
  ASSIGN_OR_RETURN(StoreDirLock dir_lock, LockStoreDir(dir));
  const bool exclusive = dir_lock.exclusive;
  ScopedFd lock_fd = std::move(dir_lock.fd);

  ASSIGN_OR_RETURN(SqliteDb db, OpenStoreDb(dir + "/models.db", {kSchemaV1, kSchemaV2}));

  auto impl = std::make_unique<Impl>(dir, std::move(lock_fd), std::move(db));
  if (exclusive) {
    RETURN_IF_ERROR(impl->RemoveGarbage());
    // Not atomic (flock converts by unlocking first), which is harmless: the repair is done and we
    // have nothing in flight yet.
    RETURN_IF_ERROR(ShareStoreDirLock(impl->lock_fd_.get(), dir));
  }
  std::string staging = impl->staging_dir_;
  return std::unique_ptr<ModelStore>(new ModelStore(std::move(impl), std::move(staging)));
}

// ---- NeurDB API ----

Result<int64_t> ModelStore::SaveModel(std::string_view meta,
                                      const std::vector<std::string>& layers) {
  if (meta.size() > kMaxMetaBytes) {
    return TooLarge("model metadata of " + std::to_string(meta.size()) + " bytes exceeds " +
                    std::to_string(kMaxMetaBytes));
  }
  std::lock_guard lock(impl_->mu_);
  SqliteDb& db = impl_->db_;
  // The CommitLayer protocol (steps 3-5) for every layer in one transaction, so that the model
  // appears whole or not at all. The bytes come from memory, so undoing a failure means removing
  // the blobs made so far; each staged file is closed once renamed, so a model may have more layers
  // than the process may open files.
  ASSIGN_OR_RETURN(SqliteTransaction txn,
                   SqliteTransaction::Begin(db, SqliteTransaction::Mode::kImmediate));
  std::vector<int64_t> made;
  auto undo = [&](Status st) {
    txn.Rollback().IgnoreError();  // a rollback error leaves nothing to do: the next Open() repairs
    impl_->UnlinkBlobs(made);
    return st;
  };
  int64_t now = NowMicros();
  Status st = db.Run("INSERT INTO model(meta, create_time, change_time, meta_time) "
                     "VALUES(?1, ?2, ?2, ?2)",
                     SqlBlob{meta}, now)
                  .status();
  if (!st.ok()) return undo(st);
  int64_t model_id = db.LastInsertRowid();
  st = db.Run(kBumpListChange, now).status();
  if (!st.ok()) return undo(st);
  for (size_t i = 0; i < layers.size(); ++i) {
    auto file = StagedFile::Create(staging_dir_);
    if (!file.ok()) return undo(file.status());
    st = PwriteFull((*file)->fd(), layers[i].data(), layers[i].size(), 0);
    if (!st.ok()) return undo(st);
    BlobMoves moves;
    auto v = impl_->AddVersionLocked(model_id, static_cast<int64_t>(i), std::nullopt, **file,
                                     layers[i].size(), moves);
    if (!v.ok()) return undo(v.status());
    made.push_back(v->version_id);
    moves.Committed();  // from here on the undo is the unlink above
  }
  st = txn.Commit();
  if (!st.ok()) return undo(st);
  impl_->unsynced_blobs_.insert(impl_->unsynced_blobs_.end(), made.begin(), made.end());
  return model_id;
}

Result<LoadedModel> ModelStore::LoadModel(int64_t model_id) {
  LoadedModel out;
  std::vector<std::pair<VersionInfo, ScopedFd>> newest;
  {
    std::lock_guard lock(impl_->mu_);
    SqliteDb& db = impl_->db_;
    // One snapshot for meta and layers; the read transaction ends (rolls back) with the scope.
    ASSIGN_OR_RETURN(SqliteTransaction txn,
                     SqliteTransaction::Begin(db, SqliteTransaction::Mode::kDeferred));
    ASSIGN_OR_RETURN(out.meta, impl_->MetaLocked(model_id));
    ASSIGN_OR_RETURN(SqliteStmt s,
                     db.Prepare(std::string(kSelectVersion) +
                                "AS v WHERE model_id=?1 AND version_id=("
                                "SELECT w.version_id FROM layer_version AS w "
                                "WHERE w.model_id=v.model_id AND w.layer_id=v.layer_id "
                                "ORDER BY w.create_time DESC, w.version_id DESC LIMIT 1) "
                                "ORDER BY layer_id"));
    RETURN_IF_ERROR(s.Bind(model_id));
    for (;;) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      VersionInfo v = VersionFromRow(s);
      // Opened under the lock so that a concurrent delete cannot unlink the blob before we read it.
      ASSIGN_OR_RETURN(ScopedFd fd, OpenVersion(v));
      newest.emplace_back(v, std::move(fd));
    }
  }
  for (auto& [v, fd] : newest) {
    std::string bytes(v.size, '\0');
    ASSIGN_OR_RETURN(size_t n, PreadFull(fd.get(), bytes.data(), bytes.size(), 0));
    ASSIGN_OR_RETURN(uint64_t actual, FileSize(fd.get()));
    if (n != v.size || actual != v.size) {
      return Corruption(LayerName(model_id, v.layer_id) + ": blob " +
                        impl_->BlobPath(v.version_id) + " has " + std::to_string(actual) +
                        " bytes, expected " + std::to_string(v.size));
    }
    out.layers.emplace_back(v.layer_id, std::move(bytes));
  }
  return out;
}

Status ModelStore::UpdateModel(int64_t model_id, int64_t layer_id, std::string_view bytes) {
  ASSIGN_OR_RETURN(auto staged, StagedFile::Create(staging_dir_));
  RETURN_IF_ERROR(PwriteFull(staged->fd(), bytes.data(), bytes.size(), 0));
  return CommitLayer(model_id, layer_id, *staged, CommitOptions{}).status();
}

Status ModelStore::DeleteModel(int64_t model_id) {
  std::vector<int64_t> doomed;
  {
    std::lock_guard lock(impl_->mu_);
    SqliteDb& db = impl_->db_;
    ASSIGN_OR_RETURN(SqliteTransaction txn,
                     SqliteTransaction::Begin(db, SqliteTransaction::Mode::kImmediate));
    ASSIGN_OR_RETURN(bool exists, impl_->ModelExistsLocked(model_id));
    if (!exists) return Status::Ok();  // NeurDB: deleting a missing model is not an error
    ASSIGN_OR_RETURN(doomed, impl_->VersionIdsLocked("WHERE model_id=?1", model_id));
    // Explicit rather than relying on ON DELETE CASCADE, which needs foreign_keys=ON on every
    // connection that ever touches the file.
    RETURN_IF_ERROR(db.Run("DELETE FROM layer_version WHERE model_id=?1", model_id).status());
    RETURN_IF_ERROR(db.Run("DELETE FROM model WHERE model_id=?1", model_id).status());
    RETURN_IF_ERROR(
        db.Run("INSERT OR IGNORE INTO retired_model(model_id) VALUES(?1)", model_id).status());
    RETURN_IF_ERROR(db.Run(kBumpListChange, NowMicros()).status());
    RETURN_IF_ERROR(txn.Commit());
  }
  impl_->UnlinkBlobs(doomed);
  return Status::Ok();
}

// ---- models ----

Result<int64_t> ModelStore::CreateModel() {
  std::lock_guard lock(impl_->mu_);
  SqliteDb& db = impl_->db_;
  ASSIGN_OR_RETURN(SqliteTransaction txn,
                   SqliteTransaction::Begin(db, SqliteTransaction::Mode::kImmediate));
  int64_t now = NowMicros();
  RETURN_IF_ERROR(db.Run("INSERT INTO model(meta, create_time, change_time, meta_time) "
                         "VALUES(?1, ?2, ?2, ?2)",
                         SqlBlob{}, now)
                      .status());
  int64_t model_id = db.LastInsertRowid();
  RETURN_IF_ERROR(db.Run(kBumpListChange, now).status());
  RETURN_IF_ERROR(txn.Commit());
  return model_id;
}

Result<int64_t> ModelStore::ListChangeTimeUs() {
  std::lock_guard lock(impl_->mu_);
  ASSIGN_OR_RETURN(auto row, impl_->db_.QueryRow(
                                 "SELECT value FROM store_state WHERE key='list_change_time'"));
  if (!row.found) return Corruption("models.db: store_state has no list_change_time");
  return row.stmt.ColumnInt64(0);
}

Status ModelStore::CreateModelWithId(int64_t model_id) {
  if (model_id <= 0) return InvalidArgument(ModelName(model_id) + ": ids start at 1");
  std::lock_guard lock(impl_->mu_);
  SqliteDb& db = impl_->db_;
  ASSIGN_OR_RETURN(SqliteTransaction txn,
                   SqliteTransaction::Begin(db, SqliteTransaction::Mode::kImmediate));
  ASSIGN_OR_RETURN(bool exists, impl_->ModelExistsLocked(model_id));
  if (exists) return AlreadyExists(ModelName(model_id) + ": already exists");
  {
    ASSIGN_OR_RETURN(auto row,
                     db.QueryRow("SELECT 1 FROM retired_model WHERE model_id=?1", model_id));
    if (row.found) {
      return PermissionDenied(ModelName(model_id) +
                              ": id belonged to a deleted model; ids are never reused");
    }
  }
  // An explicit rowid above sqlite_sequence raises it, so later AUTOINCREMENT ids continue above.
  int64_t now = NowMicros();
  RETURN_IF_ERROR(db.Run("INSERT INTO model(model_id, meta, create_time, change_time, meta_time) "
                         "VALUES(?1, ?2, ?3, ?3, ?3)",
                         model_id, SqlBlob{}, now)
                      .status());
  RETURN_IF_ERROR(db.Run(kBumpListChange, now).status());
  return txn.Commit();
}

Result<std::vector<ModelInfo>> ModelStore::ListModels() {
  std::lock_guard lock(impl_->mu_);
  ASSIGN_OR_RETURN(SqliteStmt s,
                   impl_->db_.Prepare(std::string(kSelectModel) + "ORDER BY model_id"));
  std::vector<ModelInfo> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back(ModelFromRow(s));
  }
  return out;
}

Result<ModelInfo> ModelStore::GetModel(int64_t model_id) {
  std::lock_guard lock(impl_->mu_);
  ASSIGN_OR_RETURN(auto row,
                   impl_->db_.QueryRow(std::string(kSelectModel) + "WHERE model_id=?1", model_id));
  if (!row.found) return NoSuchModel(model_id);
  return ModelFromRow(row.stmt);
}

Result<std::string> ModelStore::ReadMeta(int64_t model_id) {
  std::lock_guard lock(impl_->mu_);
  return impl_->MetaLocked(model_id);
}

Status ModelStore::SetMeta(int64_t model_id, std::string_view meta,
                           std::optional<int64_t> time_us) {
  if (meta.size() > kMaxMetaBytes) {
    return TooLarge(ModelName(model_id) + ": metadata of " + std::to_string(meta.size()) +
                    " bytes exceeds " + std::to_string(kMaxMetaBytes));
  }
  std::lock_guard lock(impl_->mu_);
  SqliteDb& db = impl_->db_;
  ASSIGN_OR_RETURN(SqliteTransaction txn,
                   SqliteTransaction::Begin(db, SqliteTransaction::Mode::kImmediate));
  {
    ASSIGN_OR_RETURN(std::string current, impl_->MetaLocked(model_id));
    // Equal bytes are not a change: meta_time is the file's mtime, which tools like rsync compare.
    // Equal bytes given with another time (rsync restoring only the time) take that time.
    if (current == meta) {
      if (!time_us) return Status::Ok();
      RETURN_IF_ERROR(
          db.Run("UPDATE model SET meta_time=?1 WHERE model_id=?2", *time_us, model_id).status());
      return txn.Commit();
    }
  }
  // Without a given time, meta_time moves strictly forward so that a change is always a new mtime.
  int64_t now = NowMicros();
  RETURN_IF_ERROR(db.Run("UPDATE model SET meta=?1, change_time=MAX(?2, change_time+1), "
                         "meta_time=COALESCE(?3, MAX(?2, meta_time+1)) WHERE model_id=?4",
                         SqlBlob{meta}, now, time_us, model_id)
                      .status());
  return txn.Commit();
}

// ---- layers and versions ----

Result<std::vector<int64_t>> ModelStore::ListLayers(int64_t model_id) {
  std::lock_guard lock(impl_->mu_);
  SqliteDb& db = impl_->db_;
  ASSIGN_OR_RETURN(SqliteTransaction txn,
                   SqliteTransaction::Begin(db, SqliteTransaction::Mode::kDeferred));
  ASSIGN_OR_RETURN(bool exists, impl_->ModelExistsLocked(model_id));
  if (!exists) return NoSuchModel(model_id);
  ASSIGN_OR_RETURN(SqliteStmt s, db.Prepare("SELECT DISTINCT layer_id FROM layer_version "
                                            "WHERE model_id=?1 ORDER BY layer_id"));
  RETURN_IF_ERROR(s.Bind(model_id));
  std::vector<int64_t> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back(s.ColumnInt64(0));
  }
  return out;  // the read transaction ends with the scope
}

Result<std::vector<VersionInfo>> ModelStore::ListVersions(int64_t model_id, int64_t layer_id) {
  std::lock_guard lock(impl_->mu_);
  return impl_->ModelVersionsLocked(
      model_id, "WHERE model_id=?1 AND layer_id=?2 ORDER BY create_time, version_id", model_id,
      layer_id);
}

Result<std::vector<VersionInfo>> ModelStore::ListNewestVersions(int64_t model_id) {
  std::lock_guard lock(impl_->mu_);
  // One pass over the (model_id, layer_id, create_time) index: the last row of each layer is its
  // newest (create_time is unique per layer), so listing a folder of N layers is one query, not N.
  ASSIGN_OR_RETURN(auto all, impl_->ModelVersionsLocked(
                                 model_id, "WHERE model_id=?1 ORDER BY layer_id, create_time", model_id));
  std::vector<VersionInfo> out;
  for (const VersionInfo& v : all) {
    if (!out.empty() && out.back().layer_id == v.layer_id) {
      out.back() = v;
    } else {
      out.push_back(v);
    }
  }
  return out;
}

Result<VersionInfo> ModelStore::NewestVersion(int64_t model_id, int64_t layer_id) {
  std::lock_guard lock(impl_->mu_);
  ASSIGN_OR_RETURN(auto newest, impl_->NewestLocked(model_id, layer_id));
  if (newest) return *newest;
  // Only the failure path needs to tell a missing model from a missing layer.
  ASSIGN_OR_RETURN(bool exists, impl_->ModelExistsLocked(model_id));
  if (!exists) return NoSuchModel(model_id);
  return NotFound(LayerName(model_id, layer_id) + ": no such layer");
}

Result<VersionInfo> ModelStore::VersionAt(int64_t model_id, int64_t layer_id,
                                          int64_t create_time_us) {
  std::lock_guard lock(impl_->mu_);
  ASSIGN_OR_RETURN(auto at, impl_->AtLocked(model_id, layer_id, create_time_us));
  if (at) return *at;
  ASSIGN_OR_RETURN(bool exists, impl_->ModelExistsLocked(model_id));
  if (!exists) return NoSuchModel(model_id);
  return NotFound(LayerName(model_id, layer_id) + ": no version at " +
                  FormatHistoryTime(create_time_us));
}

Result<ScopedFd> ModelStore::OpenVersion(const VersionInfo& version) {
  // No lock: blobs are immutable and blobs_dir_ is constant. The caller's fd keeps the bytes
  // readable even if the version is deleted later.
  std::string path = impl_->BlobPath(version.version_id);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    std::string what = LayerName(version.model_id, version.layer_id) + ": version at " +
                       FormatHistoryTime(version.create_time_us);
    if (err == ENOENT) return NotFound(what + ": deleted");
    return ErrnoError(what + ": open " + path, err);
  }
  return ScopedFd(fd);
}

Result<CommitOutcome> ModelStore::CommitLayer(int64_t model_id, int64_t layer_id,
                                              StagedFile& staged, const CommitOptions& options) {
  // The commit protocol. Any failure leaves the store and the staged file as they were.
  //  1. Validate: layer_id >= 0, create_time nameable as history, the model exists (NotFound).
  //  2. Identical check: compare the staged bytes with the reference version (the newest, or the
  //     one at the given create_time) by SameContent: size first, then bytes. Equal: nothing is
  //     added and the staged file is untouched. Different from the one at a given create_time:
  //     AlreadyExists. The comparison runs without the mutex (layers can be GiB), so step 3
  //     repeats the lookup under the write lock and starts over if the reference changed.
  //  3. BEGIN IMMEDIATE; insert the layer_version row (create_time = the given one, or
  //     max(now, newest + 1) across the layer); bump model.change_time.
  //  4. Rename the staged file to blobs/<version_id>. Durable: fdatasync it before (done in step 2,
  //     outside the lock) and fsync blobs/ after.
  //  5. COMMIT; durable: with synchronous=FULL, so the WAL is fsynced.
  //  If 4 or 5 fails: ROLLBACK and rename the blob back to staging. A crash between 4 and 5 leaves
  //  blobs/<version_id> with no committed row; a crash before 4 leaves a staging file. Open()
  //  deletes both, so no partial version is ever visible.
  if (layer_id < 0) {
    return InvalidArgument(LayerName(model_id, layer_id) + ": layer ids start at 0");
  }
  const std::optional<int64_t>& at = options.create_time_us;
  if (at && (*at < kMinHistoryTime || *at > kMaxHistoryTime)) {
    return InvalidArgument(LayerName(model_id, layer_id) + ": create_time " + std::to_string(*at) +
                           "us is outside 1970..9999");
  }
  if (staged.consumed()) {
    return InvalidArgument(LayerName(model_id, layer_id) + ": staged file was already committed");
  }
  ASSIGN_OR_RETURN(uint64_t size, staged.Size());

  // version_id of the reference the staged bytes differ from; 0: none (version ids start at 1).
  std::optional<int64_t> differs_from;
  bool synced = false;
  for (;;) {
    std::optional<VersionInfo> ref;
    {
      std::lock_guard lock(impl_->mu_);
      SqliteDb& db = impl_->db_;
      if (differs_from) {
        SqliteFullSyncScope full_sync(db, options.durable);
        RETURN_IF_ERROR(full_sync.Enter());
        ASSIGN_OR_RETURN(SqliteTransaction txn,
                         SqliteTransaction::Begin(db, SqliteTransaction::Mode::kImmediate));
        BlobMoves moves;  // after txn: an error return undoes the rename, then rolls back
        ASSIGN_OR_RETURN(bool exists, impl_->ModelExistsLocked(model_id));
        if (!exists) return NoSuchModel(model_id);
        ASSIGN_OR_RETURN(ref, at ? impl_->AtLocked(model_id, layer_id, *at)
                                 : impl_->NewestLocked(model_id, layer_id));
        if ((ref ? ref->version_id : 0) == *differs_from) {
          RETURN_IF_ERROR(impl_->TouchModelLocked(model_id));
          ASSIGN_OR_RETURN(VersionInfo v,
                           impl_->AddVersionLocked(model_id, layer_id, at, staged, size, moves));
          RETURN_IF_ERROR(impl_->CommitLocked(txn, moves, options.durable));
          return CommitOutcome{true, v};
        }
        // Another writer changed the reference between our comparison and the lock: compare again.
      } else {
        ASSIGN_OR_RETURN(bool exists, impl_->ModelExistsLocked(model_id));
        if (!exists) return NoSuchModel(model_id);
        ASSIGN_OR_RETURN(ref, at ? impl_->AtLocked(model_id, layer_id, *at)
                                 : impl_->NewestLocked(model_id, layer_id));
      }
    }

    bool same = false;
    if (ref && ref->size == size) {
      Result<ScopedFd> fd = OpenVersion(*ref);
      if (!fd.ok()) {
        if (fd.status().code() == StatusCode::kNotFound) continue;  // deleted meanwhile: look again
        return fd.status();
      }
      ASSIGN_OR_RETURN(same, SameContent(fd->get(), staged.fd()));
    }
    if (same) {
      // The caller asked for durability of these bytes, which an earlier non-durable commit of the
      // same bytes may not have given yet.
      if (options.durable) RETURN_IF_ERROR(Sync());
      return CommitOutcome{false, *ref};
    }
    if (ref && at) {
      return AlreadyExists(LayerName(model_id, layer_id) + ": a version at " +
                           FormatHistoryTime(*at) +
                           " exists with other bytes (history is immutable)");
    }
    differs_from = ref ? ref->version_id : 0;
    if (options.durable && !synced) {
      RETURN_IF_ERROR(Fdatasync(staged.fd(), staged.path()));
      synced = true;
    }
  }
}

Status ModelStore::DeleteLayer(int64_t model_id, int64_t layer_id) {
  std::vector<int64_t> doomed;
  {
    std::lock_guard lock(impl_->mu_);
    SqliteDb& db = impl_->db_;
    ASSIGN_OR_RETURN(SqliteTransaction txn,
                     SqliteTransaction::Begin(db, SqliteTransaction::Mode::kImmediate));
    ASSIGN_OR_RETURN(bool exists, impl_->ModelExistsLocked(model_id));
    if (!exists) return NoSuchModel(model_id);
    ASSIGN_OR_RETURN(
        doomed, impl_->VersionIdsLocked("WHERE model_id=?1 AND layer_id=?2", model_id, layer_id));
    if (doomed.empty()) return NotFound(LayerName(model_id, layer_id) + ": no such layer");
    RETURN_IF_ERROR(
        db.Run("DELETE FROM layer_version WHERE model_id=?1 AND layer_id=?2", model_id, layer_id)
            .status());
    RETURN_IF_ERROR(impl_->TouchModelLocked(model_id));
    RETURN_IF_ERROR(txn.Commit());
  }
  impl_->UnlinkBlobs(doomed);
  return Status::Ok();
}

Status ModelStore::DeleteVersion(int64_t model_id, int64_t layer_id, int64_t create_time_us) {
  int64_t doomed;
  {
    std::lock_guard lock(impl_->mu_);
    SqliteDb& db = impl_->db_;
    ASSIGN_OR_RETURN(SqliteTransaction txn,
                     SqliteTransaction::Begin(db, SqliteTransaction::Mode::kImmediate));
    ASSIGN_OR_RETURN(bool exists, impl_->ModelExistsLocked(model_id));
    if (!exists) return NoSuchModel(model_id);
    ASSIGN_OR_RETURN(auto at, impl_->AtLocked(model_id, layer_id, create_time_us));
    if (!at) {
      return NotFound(LayerName(model_id, layer_id) + ": no version at " +
                      FormatHistoryTime(create_time_us));
    }
    doomed = at->version_id;
    RETURN_IF_ERROR(db.Run("DELETE FROM layer_version WHERE version_id=?1", doomed).status());
    RETURN_IF_ERROR(impl_->TouchModelLocked(model_id));
    RETURN_IF_ERROR(txn.Commit());
  }
  impl_->UnlinkBlobs({doomed});
  return Status::Ok();
}

Status ModelStore::Sync() {
  // 1. fdatasync the blobs committed without it (outside the lock: there may be many);
  // 2. fsync blobs/ and the store directory (new names, the WAL file);
  // 3. checkpoint the WAL, which fsyncs it before copying it into the database and fsyncs that.
  std::vector<int64_t> pending;
  {
    std::lock_guard lock(impl_->mu_);
    pending.swap(impl_->unsynced_blobs_);
  }
  Status st;
  size_t next = 0;  // pending[next..] are not synced yet
  for (; next < pending.size(); ++next) {
    std::string path = impl_->BlobPath(pending[next]);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) continue;  // deleted since: nothing to make durable
      st = ErrnoError("open " + path, errno);
      break;
    }
    ScopedFd owned(fd);
    st = Fdatasync(fd, path);
    if (!st.ok()) break;
  }
  if (st.ok()) st = SyncDir(impl_->blobs_dir_);
  if (st.ok()) st = SyncDir(impl_->dir_);

  std::lock_guard lock(impl_->mu_);
  if (!st.ok()) {
    // The next Sync() retries what this one did not finish.
    impl_->unsynced_blobs_.insert(impl_->unsynced_blobs_.end(), pending.begin() + next,
                                  pending.end());
    return st;
  }
  // The result row (busy, wal frames, checkpointed frames) is not an error: busy means another
  // process is reading, and the frames it pins were still fsynced in the WAL.
  return impl_->db_.QueryRow("PRAGMA wal_checkpoint(FULL)").status();
}

// ---- times ----

int64_t NowMicros() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);  // cannot fail for CLOCK_REALTIME with a valid pointer
  return static_cast<int64_t>(ts.tv_sec) * kMicrosPerSecond + ts.tv_nsec / 1000;
}

std::string FormatHistoryTime(int64_t micros) {
  // Floor division, so that times before 1970 format correctly too (1969-12-31T23:59:59.999999Z for
  // -1). Only 1970..9999 parse back; CommitLayer refuses other explicit times.
  int64_t secs = micros / kMicrosPerSecond;
  int64_t frac = micros % kMicrosPerSecond;
  if (frac < 0) {
    frac += kMicrosPerSecond;
    --secs;
  }
  time_t t = static_cast<time_t>(secs);
  struct tm tm;
  if (gmtime_r(&t, &tm) == nullptr) return "invalid-time-" + std::to_string(micros);
  char buf[64];
  snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
           static_cast<long long>(frac));
  return buf;
}

Result<int64_t> ParseHistoryTime(std::string_view name) {
  // "YYYY-MM-DDTHH:MM:SS.ffffffZ", fixed width. Strict, because the name is the version's identity:
  // two spellings of one time would be two files for one version.
  constexpr std::string_view kPattern = "dddd-dd-ddTdd:dd:dd.ddddddZ";
  auto bad = [&](std::string_view why) {
    return InvalidArgument("history name \"" + std::string(name) + "\": " + std::string(why) +
                           " (want YYYY-MM-DDTHH:MM:SS.ffffffZ)");
  };
  if (name.size() != kPattern.size()) return bad("wrong length");
  for (size_t i = 0; i < kPattern.size(); ++i) {
    bool ok = kPattern[i] == 'd' ? (name[i] >= '0' && name[i] <= '9') : name[i] == kPattern[i];
    if (!ok) return bad("unexpected character at " + std::to_string(i));
  }
  auto num = [&](size_t pos, size_t len) {
    int64_t v = 0;
    for (size_t i = pos; i < pos + len; ++i) v = v * 10 + (name[i] - '0');
    return v;
  };
  int64_t year = num(0, 4), month = num(5, 2), day = num(8, 2);
  int64_t hour = num(11, 2), minute = num(14, 2), second = num(17, 2), frac = num(20, 6);
  if (year < 1970) return bad("years before 1970 are not supported");
  if (month < 1 || month > 12) return bad("month out of range");
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  int64_t days_in_month = kDays[month - 1] + (month == 2 && leap ? 1 : 0);
  if (day < 1 || day > days_in_month) return bad("day out of range");
  // No leap seconds: the formatter never produces :60, so accepting it would create a second name.
  if (hour > 23 || minute > 59 || second > 59) return bad("time of day out of range");
  struct tm tm = {};
  tm.tm_year = static_cast<int>(year - 1900);
  tm.tm_mon = static_cast<int>(month - 1);
  tm.tm_mday = static_cast<int>(day);
  tm.tm_hour = static_cast<int>(hour);
  tm.tm_min = static_cast<int>(minute);
  tm.tm_sec = static_cast<int>(second);
  time_t secs = timegm(&tm);
  return static_cast<int64_t>(secs) * kMicrosPerSecond + frac;
}

}  // namespace modelfs::models
