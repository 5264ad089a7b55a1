#include "stores/timeseries/timeseries_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bit>
#include <cstdlib>
#include <exception>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <unordered_set>
#include <utility>

#include "stores/common/file_util.h"
#include "stores/common/names.h"
#include "stores/common/sqlite_db.h"

namespace modelfs::timeseries {

// SeriesView hands out the mapped file as doubles without a copy, and the file format is
// little-endian IEEE 754 binary64. A big-endian port would have to byte-swap, i.e. copy.
static_assert(std::endian::native == std::endian::little,
              "SeriesView reinterprets the file's little-endian float64 in place");
static_assert(sizeof(double) == 8 && std::numeric_limits<double>::is_iec559);

namespace {

constexpr uint64_t kPairBytes = 2 * sizeof(double);  // one time and one value
// Numbers skipped because their file exists (see AllocateFileNoLocked) before giving up.
constexpr int kMaxFileNoAttempts = 1000;

// Schema version 1. id is TEXT with the default BINARY collation, so the primary key orders ids by
// bytes, as List() does. file_no names data/<file_no>; file_counter holds the highest number ever
// handed out, so a number (the series' version) is never reused, even after the series holding the
// highest one is removed.
constexpr char kSchemaV1[] = R"sql(
CREATE TABLE series(
  id TEXT PRIMARY KEY,
  file_no INTEGER NOT NULL UNIQUE,
  length INTEGER NOT NULL,
  mtime_ns INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE file_counter(last_file_no INTEGER NOT NULL);
INSERT INTO file_counter(last_file_no) VALUES(0);
)sql";

// The store has no logger of its own; these are errors that happen after a commit succeeded (or
// that cannot be returned) and that the next Open() repairs, so they are reported and not returned.
void LogWarning(const std::string& message) { LogStoreWarning("timeseries", message); }

std::string Describe(std::string_view id) { return QuoteName("timeseries id", id); }

Status WithContext(const std::string& what, const Status& st) {
  return st.Annotate(what);
}

Status NoSuchSeries(std::string_view id) { return NotFound(Describe(id) + ": no such series"); }

int64_t NowNanos() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);  // cannot fail for CLOCK_REALTIME with a valid pointer
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// A random (version 4) UUID in its canonical lower-case text form.
Result<std::string> RandomUuid() {
  unsigned char b[16];
  try {
    // random_device may throw (no entropy source); no exception crosses the store's API.
    std::random_device rd;
    static_assert(sizeof(std::random_device::result_type) == 4);
    for (size_t i = 0; i < sizeof(b); i += 4) {
      std::random_device::result_type r = rd();
      memcpy(b + i, &r, 4);
    }
  } catch (const std::exception& e) {
    return IOError(std::string("generating a timeseries id: random_device: ") + e.what());
  }
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);  // variant 10xx (RFC 4122)
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (size_t i = 0; i < sizeof(b); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += kHex[b[i] >> 4];
    out += kHex[b[i] & 0x0f];
  }
  return out;
}

Status Fdatasync(int fd, const std::string& what) {
  if (::fdatasync(fd) != 0) return ErrnoError("fdatasync " + what, errno);
  return Status::Ok();
}

// What the index holds for one series; the id is the map key.
struct Entry {
  uint64_t file_no = 0;
  uint64_t length = 0;
  int64_t mtime_ns = 0;
};

SeriesInfo MakeInfo(std::string_view id, const Entry& e) {
  SeriesInfo info;
  info.id = std::string(id);
  info.length = e.length;
  info.mtime_ns = e.mtime_ns;
  info.version = e.file_no;
  return info;
}

}  // namespace

// ---- SeriesView ----

SeriesView::SeriesView(SeriesView&& o) noexcept
    : info_(std::move(o.info_)),
      data_(std::exchange(o.data_, nullptr)),
      map_(std::exchange(o.map_, nullptr)),
      map_bytes_(std::exchange(o.map_bytes_, 0)) {
  o.info_ = SeriesInfo();
}

SeriesView& SeriesView::operator=(SeriesView&& o) noexcept {
  if (this != &o) {
    if (map_ != nullptr) ::munmap(map_, map_bytes_);  // see destructor
    info_ = std::exchange(o.info_, SeriesInfo());
    data_ = std::exchange(o.data_, nullptr);
    map_ = std::exchange(o.map_, nullptr);
    map_bytes_ = std::exchange(o.map_bytes_, 0);
  }
  return *this;
}

// munmap of a mapping we made fails only for invalid arguments; there is nothing to report.
SeriesView::~SeriesView() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
}

// ---- TimeSeriesStore::Impl ----

class TimeSeriesStore::Impl {
 public:
  Impl(const std::string& dir, ScopedFd lock_fd, SqliteDb db, CrashHook crash_hook)
      : data_dir_(dir + "/data"),
        staging_dir_(dir + "/staging"),
        dir_(dir),
        lock_fd_(std::move(lock_fd)),
        crash_hook_(std::move(crash_hook)),
        db_(std::move(db)) {}

  std::string DataPath(uint64_t file_no) const { return data_dir_ + "/" + std::to_string(file_no); }

  void CrashPoint(std::string_view point) const {
    if (crash_hook_) crash_hook_(point);
  }

  // After a COMMIT that dropped the row naming file_no: its file goes now. Open fds and maps keep
  // reading the old bytes. A file that cannot be unlinked is collected by the next Open().
  void UnlinkDataFile(uint64_t file_no) const {
    std::string path = DataPath(file_no);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      LogWarning(ErrnoError("unlink " + path + " (removed at next open)", errno).ToString());
    }
  }

  // An fd on data/<file_no>, or nullopt when the file does not exist (the series was overwritten
  // or removed since its number was looked up, or the store is damaged).
  Result<std::optional<ScopedFd>> OpenDataFile(uint64_t file_no) const {
    std::string path = DataPath(file_no);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) return std::optional<ScopedFd>();
      return ErrnoError("open " + path, errno);
    }
    return std::optional<ScopedFd>(ScopedFd(fd));
  }

  // Steps 2-6 of the commit protocol (see TimeSeriesStore::Commit), for a validated staged file
  // of `length` pairs. *name is the id, or empty for a generated one, which is picked here.
  Result<WriteResult> CommitChecked(bool generated, std::string* name, StagedFile& staged,
                                    uint64_t length, const WriteOptions& options) {
    const int64_t mtime_ns = options.mtime_ns.value_or(NowNanos());
    bool synced = false;
    for (;;) {
      // 2. The series as it is now, and whether the staged bytes equal it.
      std::optional<SeriesInfo> ref;
      {
        std::lock_guard lock(mu_);
        RETURN_IF_ERROR(RefreshLocked());
        if (generated) RETURN_IF_ERROR(PickFreeIdLocked(name));
        ref = FindLocked(*name);
      }
      bool same = false;
      if (ref && ref->length == length) {
        ASSIGN_OR_RETURN(std::optional<ScopedFd> fd, OpenDataFile(ref->version));
        // No file: replaced meanwhile (noticed under the lock below) or lost (then replacing it
        // is the repair).
        if (fd) {
          Result<bool> equal = SameContent(fd->get(), staged.fd());
          if (!equal.ok()) {
            return WithContext("comparing " + staged.path() + " with " + DataPath(ref->version),
                               equal.status());
          }
          same = *equal;
        }
      }

      if (same) {
        WriteResult result{*name, WriteOutcome::kUnchanged, *ref};
        if (options.mtime_ns && *options.mtime_ns != ref->mtime_ns) {
          std::lock_guard lock(mu_);
          ASSIGN_OR_RETURN(SqliteTransaction txn,
                           SqliteTransaction::Begin(db_, SqliteTransaction::Mode::kImmediate));
          RETURN_IF_ERROR(RefreshLocked());
          auto it = index_.find(*name);
          if (it == index_.end() || it->second.file_no != ref->version) continue;  // changed: again
          RETURN_IF_ERROR(
              db_.Run("UPDATE series SET mtime_ns=?1 WHERE id=?2", *options.mtime_ns, *name)
                  .status());
          RETURN_IF_ERROR(txn.Commit());
          it->second.mtime_ns = *options.mtime_ns;
          result.outcome = WriteOutcome::kTimeChanged;
          result.info.mtime_ns = *options.mtime_ns;
        }
        // The caller asked for durability of these bytes (and this mtime), which an earlier
        // non-durable commit may not have given yet.
        if (options.durable) RETURN_IF_ERROR(Sync());
        return result;
      }

      // 3. Outside the lock: the file may be GiB.
      if (options.durable && !synced) {
        RETURN_IF_ERROR(Fdatasync(staged.fd(), staged.path()));
        synced = true;
      }
      std::optional<uint64_t> replaced;
      SeriesInfo info;
      {
        std::lock_guard lock(mu_);
        SqliteFullSyncScope full_sync(db_, options.durable);  // ends after txn
        RETURN_IF_ERROR(full_sync.Enter());
        ASSIGN_OR_RETURN(SqliteTransaction txn,
                         SqliteTransaction::Begin(db_, SqliteTransaction::Mode::kImmediate));
        RETURN_IF_ERROR(RefreshLocked());
        if (generated) RETURN_IF_ERROR(PickFreeIdLocked(name));
        std::optional<SeriesInfo> current = FindLocked(*name);
        // Another writer changed the series between our comparison and the lock: compare again.
        if ((current ? current->version : 0) != (ref ? ref->version : 0)) continue;
        ASSIGN_OR_RETURN(
            info, PlaceAndCommitLocked(txn, *name, staged, length, mtime_ns, options.durable));
        if (current) replaced = current->version;
      }
      // 6.
      if (replaced) UnlinkDataFile(*replaced);
      return WriteResult{*name, WriteOutcome::kStored, std::move(info)};
    }
  }

  Status Sync() {
    // 1. fdatasync the data files committed without it (outside the lock: there may be many);
    // 2. fsync data/ and the store directory (new names, the WAL file);
    // 3. checkpoint the WAL, which fsyncs it before copying it into the database and fsyncs that.
    std::vector<uint64_t> pending;
    {
      std::lock_guard lock(mu_);
      pending.swap(unsynced_files_);
    }
    Status st;
    size_t next = 0;  // pending[next..] are not synced yet
    for (; next < pending.size(); ++next) {
      Result<std::optional<ScopedFd>> fd = OpenDataFile(pending[next]);
      if (!fd.ok()) {
        st = fd.status();
        break;
      }
      if (!*fd) continue;  // removed or replaced since: nothing to make durable
      st = Fdatasync((*fd)->get(), DataPath(pending[next]));
      if (!st.ok()) break;
    }
    if (st.ok()) st = SyncDir(data_dir_);
    if (st.ok()) st = SyncDir(dir_);

    std::lock_guard lock(mu_);
    if (!st.ok()) {
      // The next Sync() retries what this one did not finish.
      unsynced_files_.insert(unsynced_files_.end(), pending.begin() + static_cast<ptrdiff_t>(next),
                             pending.end());
      return WithContext("timeseries store " + dir_ + ": sync", st);
    }
    // The result row (busy, wal frames, checkpointed frames) is not an error: busy means another
    // process is reading, and the frames it pins were still fsynced in the WAL.
    Status checkpoint = db_.QueryRow("PRAGMA wal_checkpoint(FULL)").status();
    if (!checkpoint.ok()) return WithContext(dir_ + "/index.db", checkpoint);
    return Status::Ok();
  }

  // ---- The helpers below require mu_ to be held. ----

  // Reloads the in-memory index when another connection (another process) committed since it was
  // last loaded. Own commits do not change data_version; they update the map themselves.
  Status RefreshLocked() {
    data_version_stmt_.Reset();
    Result<bool> row = data_version_stmt_.Step();
    int64_t version = row.ok() && *row ? data_version_stmt_.ColumnInt64(0) : -1;
    // Reset at once: a statement that is not done would keep a read snapshot open.
    data_version_stmt_.Reset();
    if (!row.ok()) return WithContext(dir_ + "/index.db", row.status());
    if (version == data_version_) return Status::Ok();
    // Version first, then the rows: a commit in between is loaded now and merely reloaded again
    // next time, never missed.
    RETURN_IF_ERROR(LoadIndexLocked());
    data_version_ = version;
    return Status::Ok();
  }

  Status LoadIndexLocked() {
    std::map<std::string, Entry, std::less<>> loaded;
    Result<SqliteStmt> s = db_.Prepare("SELECT id, file_no, length, mtime_ns FROM series");
    if (!s.ok()) return WithContext(dir_ + "/index.db", s.status());
    for (;;) {
      Result<bool> row = s->Step();
      if (!row.ok()) return WithContext(dir_ + "/index.db", row.status());
      if (!*row) break;
      Entry e;
      e.file_no = static_cast<uint64_t>(s->ColumnInt64(1));
      e.length = static_cast<uint64_t>(s->ColumnInt64(2));
      e.mtime_ns = s->ColumnInt64(3);
      loaded.emplace_hint(loaded.end(), s->ColumnText(0), e);
    }
    index_.swap(loaded);
    return Status::Ok();
  }

  // For the methods that cannot return an error (List, Count): they answer from the index as last
  // loaded, which is what they would have answered a moment earlier.
  void RefreshOrWarnLocked() {
    Status st = RefreshLocked();
    if (!st.ok()) LogWarning(st.ToString() + " (answering from the index as last loaded)");
  }

  // Replaces an empty *name, or one that a series has, by a random UUID that none has.
  Status PickFreeIdLocked(std::string* name) const {
    while (name->empty() || index_.contains(*name)) {
      ASSIGN_OR_RETURN(*name, RandomUuid());
    }
    return Status::Ok();
  }

  // Deletes id's row in one write transaction; returns the number of the file it named, which the
  // caller unlinks. NotFound.
  Result<uint64_t> RemoveRowLocked(std::string_view id) {
    ASSIGN_OR_RETURN(SqliteTransaction txn,
                     SqliteTransaction::Begin(db_, SqliteTransaction::Mode::kImmediate));
    RETURN_IF_ERROR(RefreshLocked());
    auto it = index_.find(id);
    if (it == index_.end()) return NoSuchSeries(id);
    uint64_t file_no = it->second.file_no;
    RETURN_IF_ERROR(db_.Run("DELETE FROM series WHERE id=?1", id).status());
    RETURN_IF_ERROR(txn.Commit());
    index_.erase(it);
    return file_no;
  }

  // The series as the index (refreshed first) has it now; nullopt when there is none.
  Result<std::optional<SeriesInfo>> LookupLocked(std::string_view id) {
    Status st = RefreshLocked();
    if (!st.ok()) return WithContext(Describe(id), st);
    return FindLocked(id);
  }

  std::optional<SeriesInfo> FindLocked(std::string_view id) const {
    auto it = index_.find(id);
    if (it == index_.end()) return std::nullopt;
    return MakeInfo(it->first, it->second);
  }

  // Inside a write transaction: the next data file number. Numbers whose file exists are skipped:
  // such a file was placed by a writer that crashed before its COMMIT (so the counter increment
  // was rolled back too) while another process kept the store open, which kept Open() from
  // collecting it. Only a writer holding the write lock places files, so the check cannot race.
  Result<uint64_t> AllocateFileNoLocked() {
    for (int attempt = 0; attempt < kMaxFileNoAttempts; ++attempt) {
      ASSIGN_OR_RETURN(int64_t changed,
                       db_.Run("UPDATE file_counter SET last_file_no=last_file_no+1"));
      if (changed != 1) return Corruption(dir_ + "/index.db: file_counter has no row");
      ASSIGN_OR_RETURN(auto row, db_.QueryRow("SELECT last_file_no FROM file_counter"));
      uint64_t file_no = static_cast<uint64_t>(row.stmt.ColumnInt64(0));
      std::string path = DataPath(file_no);
      struct stat st;
      if (::lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return file_no;
        return ErrnoError("lstat " + path, errno);
      }
    }
    return IOError(data_dir_ + ": " + std::to_string(kMaxFileNoAttempts) +
                   " leftover files in a row where new data files would go");
  }

  // Steps 4 and 5 of the commit protocol (see Commit), with the write transaction txn open and the
  // index refreshed inside it. On success the staged file is data/<file_no>, the row committed and
  // the map updated; the replaced file (if any) is the caller's to unlink. On failure the
  // transaction is rolled back and the staged file is back in staging as it was.
  Result<SeriesInfo> PlaceAndCommitLocked(SqliteTransaction& txn, const std::string& id,
                                          StagedFile& staged, uint64_t length, int64_t mtime_ns,
                                          bool durable) {
    ASSIGN_OR_RETURN(uint64_t file_no, AllocateFileNoLocked());
    std::string dest = DataPath(file_no);

    struct stat staged_stat;
    if (::fstat(staged.fd(), &staged_stat) != 0) return ErrnoError("fstat " + staged.path(), errno);
    const mode_t old_mode = staged_stat.st_mode & 07777;
    // Data files are immutable; the mode keeps a stray writer with access to data/ honest.
    if (::fchmod(staged.fd(), 0444) != 0) return ErrnoError("fchmod " + staged.path(), errno);
    auto restore_mode = [&]() -> Status {
      if (::fchmod(staged.fd(), old_mode) != 0) return ErrnoError("fchmod " + staged.path(), errno);
      return Status::Ok();
    };
    Status moved = staged.MoveTo(dest);
    if (!moved.ok()) {
      Status restored = restore_mode();
      if (!restored.ok()) LogWarning(restored.ToString());
      return moved;
    }
    // From here on, a failure moves the file back to staging and rolls back. (A failed COMMIT has
    // already rolled back and released the write lock; a writer that takes the number meanwhile
    // finds the file still there and skips it, see AllocateFileNoLocked.)
    auto undo = [&](const Status& failed) -> Status {
      Status back = staged.MoveBack();
      if (back.ok()) back = restore_mode();
      txn.Rollback().IgnoreError();  // a rollback error leaves nothing to do: no row committed
      // A file that cannot be moved back is an orphan until the next Open(); the staged file is
      // lost, and the caller learns so.
      if (!back.ok()) {
        return Status(failed.code(), failed.message() + "; and undoing: " + back.message(), failed.sys_errno());
      }
      return failed;
    };
    CrashPoint("data-placed");

    Status committed =
        db_.Run(
               "INSERT OR REPLACE INTO series(id, file_no, length, mtime_ns) "
               "VALUES(?1, ?2, ?3, ?4)",
               id, static_cast<int64_t>(file_no), static_cast<int64_t>(length), mtime_ns)
            .status();
    if (committed.ok() && durable) committed = SyncDir(data_dir_);
    if (committed.ok()) committed = txn.Commit();
    if (!committed.ok()) return undo(committed);

    Entry e{file_no, length, mtime_ns};
    index_.insert_or_assign(id, e);
    if (!durable) unsynced_files_.push_back(file_no);
    CrashPoint("index-committed");
    return MakeInfo(id, e);
  }

  // Open(), with the exclusive lock held and before the store is shared (so without mu_): no other
  // process is between placing a file and
  // committing its row, so every file in data/ that no row names, and everything in staging/, is
  // garbage from a crash (or a data file whose unlink failed).
  Status RemoveGarbage() {
    RETURN_IF_ERROR(ClearDir(staging_dir_));
    std::unordered_set<uint64_t> indexed;
    for (const auto& [id, e] : index_) indexed.insert(e.file_no);

    DIR* d = ::opendir(data_dir_.c_str());
    if (d == nullptr) return ErrnoError("opendir " + data_dir_, errno);
    std::vector<std::string> names;
    errno = 0;
    while (struct dirent* e = ::readdir(d)) {
      // The store makes no directories here; one found is left alone rather than guessed at.
      if (e->d_type != DT_DIR) names.emplace_back(e->d_name);
      errno = 0;
    }
    int read_err = errno;
    ::closedir(d);  // a read-only directory stream: nothing to lose
    if (read_err != 0) return ErrnoError("readdir " + data_dir_, read_err);

    for (const std::string& name : names) {
      char* end = nullptr;
      errno = 0;
      unsigned long long n = strtoull(name.c_str(), &end, 10);
      // Only the canonical spelling of a number is a data file name ("007" is not file 7).
      bool canonical = errno == 0 && *end == '\0' && std::to_string(n) == name;
      if (canonical && indexed.contains(n)) continue;
      std::string path = data_dir_ + "/" + name;
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        if (errno == EISDIR) continue;  // d_type was DT_UNKNOWN: a directory, left alone as above
        return ErrnoError("unlink leftover data file " + path, errno);
      }
    }
    return Status::Ok();
  }

  // Constant after construction.
  const std::string data_dir_;
  const std::string staging_dir_;
  const std::string dir_;
  const ScopedFd lock_fd_;  // flock: shared while open; exclusive only during Open()'s repair
  const CrashHook crash_hook_;

  // Lock order: mu_, then SQLite's locks (a write transaction is only begun with mu_ held).
  std::mutex mu_;
  SqliteDb db_;                   // guarded by mu_
  SqliteStmt data_version_stmt_;  // guarded by mu_; "PRAGMA data_version" on db_
  int64_t data_version_ = -1;     // guarded by mu_: data_version index_ was loaded at
  std::map<std::string, Entry, std::less<>> index_;  // guarded by mu_: the index, by id
  std::vector<uint64_t>
      unsynced_files_;  // guarded by mu_: committed without fdatasync since Sync()
};

// ---- TimeSeriesStore ----

TimeSeriesStore::TimeSeriesStore(std::unique_ptr<Impl> impl, std::string staging_dir)
    : impl_(std::move(impl)), staging_dir_(std::move(staging_dir)) {}

TimeSeriesStore::~TimeSeriesStore() = default;

namespace {

// Opens index.db in WAL mode and brings its schema to the newest version.
Result<SqliteDb> OpenIndex(const std::string& path) { return OpenStoreDb(path, {kSchemaV1}); }

}  // namespace

Result<std::unique_ptr<TimeSeriesStore>> TimeSeriesStore::Open(const std::string& dir,
                                                               CrashHook crash_hook) {
  RETURN_IF_ERROR(MakeDirs(dir + "/data"));
  RETURN_IF_ERROR(MakeDirs(dir + "/staging"));

  // Several processes may open one store (the daemon and a command-line tool): SQLite arbitrates
  // the index, and this lock decides who may repair after a crash. Only an opener that finds
  // nobody else (exclusive lock) may delete leftover data and staging files, which would otherwise
  // be another process's commits in flight. Everyone then holds it shared until closing.
  ASSIGN_OR_RETURN(StoreDirLock dir_lock, LockStoreDir(dir));
  const bool exclusive = dir_lock.exclusive;
  ScopedFd lock_fd = std::move(dir_lock.fd);

  const std::string index_path = dir + "/index.db";
  Result<SqliteDb> db = OpenIndex(index_path);
  if (!db.ok()) return WithContext(index_path, db.status());

  auto impl =
      std::make_unique<Impl>(dir, std::move(lock_fd), std::move(db).value(), std::move(crash_hook));
  {
    Result<SqliteStmt> stmt = impl->db_.Prepare("PRAGMA data_version");
    if (!stmt.ok()) return WithContext(index_path, stmt.status());
    impl->data_version_stmt_ = std::move(stmt).value();
  }
  {
    std::lock_guard lock(impl->mu_);
    RETURN_IF_ERROR(impl->RefreshLocked());
  }
  if (exclusive) {
    RETURN_IF_ERROR(impl->RemoveGarbage());
    // Not atomic (flock converts by unlocking first), which is harmless: the repair is done and we
    // have nothing in flight yet.
    RETURN_IF_ERROR(ShareStoreDirLock(impl->lock_fd_.get(), dir));
  }
  // The names made above (data/, staging/, index.db and its WAL, which the migration transaction
  // created) must survive a machine crash for a durable commit to: durable commits fsync data/ and
  // the WAL, not the store directory. The WAL file stays while any connection is open.
  RETURN_IF_ERROR(SyncDir(dir));

  std::string staging = impl->staging_dir_;
  return std::unique_ptr<TimeSeriesStore>(new TimeSeriesStore(std::move(impl), std::move(staging)));
}

Status TimeSeriesStore::ValidateId(std::string_view id) {
  return ValidatePlainName("timeseries id", id);
}

Result<WriteResult> TimeSeriesStore::Store(std::optional<std::string_view> id,
                                           std::span<const double> times,
                                           std::span<const double> values,
                                           const WriteOptions& options) {
  std::string what = id ? Describe(*id) : "new timeseries";
  if (id) RETURN_IF_ERROR(ValidateId(*id));
  if (times.size() != values.size()) {
    return InvalidArgument(what + ": " + std::to_string(times.size()) + " times but " +
                           std::to_string(values.size()) + " values");
  }
  // The file is the two arrays back to back, written from the caller's memory as they are.
  ASSIGN_OR_RETURN(auto staged, StagedFile::Create(staging_dir_));
  Status st = PwriteFull(staged->fd(), times.data(), times.size_bytes(), 0);
  if (st.ok()) {
    st = PwriteFull(staged->fd(), values.data(), values.size_bytes(),
                    static_cast<off_t>(times.size_bytes()));
  }
  if (!st.ok()) return WithContext(what + ": writing " + staged->path(), st);
  return Commit(id, *staged, options);
  // An unconsumed staged file (kUnchanged, kTimeChanged, errors) is unlinked by its destructor.
}

Result<WriteResult> TimeSeriesStore::Commit(std::optional<std::string_view> id, StagedFile& staged,
                                            const WriteOptions& options) {
  // The commit protocol. Any failure leaves the store and the staged file as they were.
  //  1. Validate the id and the staged size (a whole number of (time, value) pairs).
  //  2. Identical check: when the series exists with the same length, compare the bytes
  //     (SameContent). Equal: no new file; at most the mtime changes (one UPDATE), and the staged
  //     file is untouched. The comparison runs without the mutex (series can be GiB), so every
  //     write below repeats the lookup under the write lock and starts over if the series changed.
  //  3. Durable: fdatasync the staged file (outside the lock). Then, under the mutex, BEGIN
  //     IMMEDIATE (durable: with synchronous=FULL) and refresh the index from disk.
  //  4. Allocate a file number (counter + 1) and rename the staged file to data/<file_no>.
  //     Durable: fsync data/ after.
  //  5. INSERT OR REPLACE the row and COMMIT (durable: the WAL is fsynced).
  //  6. Unlink the replaced data file, if any.
  //  If 4 or 5 fails: rename the file back to staging and ROLLBACK. A crash between 4 and 5 leaves
  //  data/<file_no> with no committed row, a crash between 5 and 6 the replaced file; Open()
  //  deletes both, so the index only ever names complete files.
  const bool generated = !id.has_value();
  std::string name;
  if (id) {
    RETURN_IF_ERROR(ValidateId(*id));
    name = std::string(*id);
  }
  const std::string what = generated ? "new timeseries" : Describe(name);
  if (staged.consumed()) {
    return InvalidArgument(what + ": staged file " + staged.path() + " was already committed");
  }
  Result<uint64_t> size = staged.Size();
  if (!size.ok()) return WithContext(what + ": staged file " + staged.path(), size.status());
  if (*size % kPairBytes != 0) {
    return InvalidArgument(what + ": staged file is " + std::to_string(*size) +
                           " bytes, not a multiple of 16 (2×N float64)");
  }
  Result<WriteResult> result =
      impl_->CommitChecked(generated, &name, staged, *size / kPairBytes, options);
  if (!result.ok()) {
    return WithContext(name.empty() ? what : Describe(name), result.status());
  }
  return result;
}

Result<uint64_t> TimeSeriesStore::Size(std::string_view id) {
  ASSIGN_OR_RETURN(SeriesInfo info, Info(id));
  return info.length;
}

Result<SeriesInfo> TimeSeriesStore::Info(std::string_view id) {
  std::lock_guard lock(impl_->mu_);
  ASSIGN_OR_RETURN(std::optional<SeriesInfo> info, impl_->LookupLocked(id));
  if (!info) return NoSuchSeries(id);
  return *std::move(info);
}

std::vector<SeriesInfo> TimeSeriesStore::List() {
  std::lock_guard lock(impl_->mu_);
  impl_->RefreshOrWarnLocked();
  std::vector<SeriesInfo> out;
  out.reserve(impl_->index_.size());
  for (const auto& [id, e] : impl_->index_) out.push_back(MakeInfo(id, e));
  return out;
}

size_t TimeSeriesStore::Count() {
  std::lock_guard lock(impl_->mu_);
  impl_->RefreshOrWarnLocked();
  return impl_->index_.size();
}

Result<TimeSeriesStore::Data> TimeSeriesStore::OpenData(std::string_view id) {
  // The lookup and the open are not one atomic step (the open runs without the mutex), so a
  // writer may replace or remove the file in between: then the file is gone and the lookup is
  // repeated. A file missing while the index still names it is damage, not a race.
  std::optional<uint64_t> missing;  // the file number found missing by the previous attempt
  for (;;) {
    SeriesInfo info;
    {
      std::lock_guard lock(impl_->mu_);
      ASSIGN_OR_RETURN(std::optional<SeriesInfo> found, impl_->LookupLocked(id));
      if (!found) return NoSuchSeries(id);
      info = *std::move(found);
    }
    const std::string path = impl_->DataPath(info.version);
    if (missing == info.version) {
      return Corruption(Describe(id) + ": data file " + path + " is missing");
    }
    Result<std::optional<ScopedFd>> fd = impl_->OpenDataFile(info.version);
    if (!fd.ok()) return WithContext(Describe(id), fd.status());
    if (!*fd) {
      missing = info.version;
      continue;
    }
    struct stat st;
    if (::fstat((*fd)->get(), &st) != 0) return ErrnoError(Describe(id) + ": fstat " + path, errno);
    // Files are immutable, so a size other than 16·N is damage (a truncated copy, a stray write).
    const auto actual = static_cast<uint64_t>(st.st_size);
    if (info.length > std::numeric_limits<uint64_t>::max() / kPairBytes ||
        actual != info.length * kPairBytes) {
      return Corruption(Describe(id) + ": data file " + path + " has " + std::to_string(actual) +
                        " bytes, but the index says " + std::to_string(info.length) +
                        " pairs (16 bytes each)");
    }
    return Data{std::move(**fd), std::move(info)};
  }
}

Result<SeriesView> TimeSeriesStore::Get(std::string_view id) {
  ASSIGN_OR_RETURN(Data data, OpenData(id));
  SeriesView view;
  view.info_ = std::move(data.info);
  const size_t bytes = static_cast<size_t>(view.info_.length * kPairBytes);
  if (bytes == 0) return view;  // mmap refuses length 0; an empty view needs no memory
  // MAP_SHARED of an immutable file: the pages are the page cache's, no copy. The mapping keeps
  // the file alive after the fd closes and after the series is overwritten or removed.
  void* p = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, data.fd.get(), 0);
  if (p == MAP_FAILED) {
    return ErrnoError(Describe(id) + ": mmap " + impl_->DataPath(view.info_.version), errno);
  }
  view.map_ = p;
  view.map_bytes_ = bytes;
  view.data_ = static_cast<const double*>(p);
  return view;
}

Status TimeSeriesStore::Remove(std::string_view id) {
  // 1. BEGIN IMMEDIATE, refresh, delete the row, COMMIT; 2. unlink the file. A crash in between
  // leaves a file no row names, which Open() deletes.
  uint64_t doomed;
  {
    std::lock_guard lock(impl_->mu_);
    Result<uint64_t> removed = impl_->RemoveRowLocked(id);
    if (!removed.ok()) {
      if (removed.status().code() == StatusCode::kNotFound) return removed.status();
      return WithContext(Describe(id), removed.status());
    }
    doomed = *removed;
  }
  impl_->UnlinkDataFile(doomed);
  return Status::Ok();
}

Result<int64_t> TimeSeriesStore::ChangeTimeNs() {
  struct stat st;
  if (::stat(impl_->data_dir_.c_str(), &st) != 0) return ErrnoError("stat " + impl_->data_dir_, errno);
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

Status TimeSeriesStore::Sync() { return impl_->Sync(); }

}  // namespace modelfs::timeseries
