#include "stores/common/sqlite_db.h"

#include <cerrno>

namespace modelfs {

Status SqliteError(sqlite3* db, int rc, std::string_view what) {
  std::string m(what);
  m += ": ";
  // The connection's message is more specific ("UNIQUE constraint failed: t.c") but only describes
  // rc when rc was the connection's last error.
  if (db != nullptr && sqlite3_extended_errcode(db) == rc) {
    m += sqlite3_errmsg(db);
  } else {
    m += sqlite3_errstr(rc);
  }
  switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
      if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return AlreadyExists(std::move(m));
      }
      return InvalidArgument(std::move(m));
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Corruption(std::move(m));
    case SQLITE_READONLY:
      return ReadOnly(std::move(m));
    case SQLITE_TOOBIG:
      return TooLarge(std::move(m));
    // Errors of the OS underneath keep their errno: a full disk stays ENOSPC for the caller.
    case SQLITE_FULL:
      return Status(StatusCode::kIOError, std::move(m), ENOSPC);
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return Status(StatusCode::kIOError, std::move(m), EACCES);
    case SQLITE_NOMEM:
      return Status(StatusCode::kIOError, std::move(m), ENOMEM);
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
      return Status(StatusCode::kIOError, std::move(m), db != nullptr ? sqlite3_system_errno(db) : 0);
    default:
      return IOError(std::move(m));
  }
}

// ---- SqliteStmt ----

SqliteStmt& SqliteStmt::operator=(SqliteStmt&& o) noexcept {
  if (this != &o) {
    sqlite3_finalize(stmt_);  // finalize reports the last step's error, already seen by Step()
    db_ = std::exchange(o.db_, nullptr);
    stmt_ = std::exchange(o.stmt_, nullptr);
  }
  return *this;
}

SqliteStmt::~SqliteStmt() { sqlite3_finalize(stmt_); }  // see operator=

Status SqliteStmt::BindInt64(int index, int64_t value) {
  int rc = sqlite3_bind_int64(stmt_, index, value);
  return rc == SQLITE_OK ? Status::Ok() : SqliteError(db_, rc, "bind");
}

Status SqliteStmt::BindBlob(int index, std::string_view value) {
  // sqlite3_bind_blob with a null pointer binds NULL, which a NOT NULL column rejects.
  int rc = value.empty()
               ? sqlite3_bind_zeroblob(stmt_, index, 0)
               : sqlite3_bind_blob64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT);
  return rc == SQLITE_OK ? Status::Ok() : SqliteError(db_, rc, "bind");
}

Status SqliteStmt::BindText(int index, std::string_view value) {
  int rc = sqlite3_bind_text64(stmt_, index, value.empty() ? "" : value.data(), value.size(),
                               SQLITE_TRANSIENT, SQLITE_UTF8);
  return rc == SQLITE_OK ? Status::Ok() : SqliteError(db_, rc, "bind");
}

Status SqliteStmt::BindDouble(int index, double value) {
  int rc = sqlite3_bind_double(stmt_, index, value);
  return rc == SQLITE_OK ? Status::Ok() : SqliteError(db_, rc, "bind");
}

Status SqliteStmt::BindNull(int index) {
  int rc = sqlite3_bind_null(stmt_, index);
  return rc == SQLITE_OK ? Status::Ok() : SqliteError(db_, rc, "bind");
}

Result<bool> SqliteStmt::Step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return SqliteError(db_, rc, sqlite3_sql(stmt_));
}

Status SqliteStmt::Run() {
  for (;;) {
    ASSIGN_OR_RETURN(bool row, Step());
    if (!row) return Status::Ok();
  }
}

void SqliteStmt::Reset() {
  sqlite3_reset(stmt_);  // returns the last step's error, already reported by Step()
  sqlite3_clear_bindings(stmt_);
}

int64_t SqliteStmt::ColumnInt64(int col) const { return sqlite3_column_int64(stmt_, col); }

std::string SqliteStmt::ColumnBlob(int col) const {
  // Pointer first, then size: the documented order that avoids a conversion in between.
  const void* p = sqlite3_column_blob(stmt_, col);
  int n = sqlite3_column_bytes(stmt_, col);
  if (p == nullptr || n <= 0) return std::string();
  return std::string(static_cast<const char*>(p), static_cast<size_t>(n));
}

std::string SqliteStmt::ColumnText(int col) const {
  const unsigned char* p = sqlite3_column_text(stmt_, col);
  int n = sqlite3_column_bytes(stmt_, col);
  if (p == nullptr || n <= 0) return std::string();
  return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
}

bool SqliteStmt::ColumnIsNull(int col) const {
  return sqlite3_column_type(stmt_, col) == SQLITE_NULL;
}

// ---- SqliteDb ----

Result<SqliteDb> SqliteDb::Open(const std::string& path, int flags) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  SqliteDb db(raw);  // owns raw even on failure: sqlite3_open_v2 allocates a handle to report with
  if (rc != SQLITE_OK) return SqliteError(raw, rc, "open " + path);
  sqlite3_extended_result_codes(raw, 1);
  return db;
}

SqliteDb& SqliteDb::operator=(SqliteDb&& o) noexcept {
  if (this != &o) {
    Close().IgnoreError();  // see destructor
    db_ = std::exchange(o.db_, nullptr);
  }
  return *this;
}

SqliteDb::~SqliteDb() { Close().IgnoreError(); }  // callers that care call Close() first

Status SqliteDb::Close() {
  if (db_ == nullptr) return Status::Ok();
  // close_v2 waits for outstanding statements to be finalized instead of failing with BUSY.
  int rc = sqlite3_close_v2(db_);
  sqlite3* old = std::exchange(db_, nullptr);
  return rc == SQLITE_OK ? Status::Ok() : SqliteError(old, rc, "close");
}

Status SqliteDb::Exec(std::string_view sql) {
  std::string text(sql);  // sqlite3_exec needs a NUL-terminated string
  int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, nullptr);
  return rc == SQLITE_OK ? Status::Ok() : SqliteError(db_, rc, text);
}

Result<SqliteStmt> SqliteDb::Prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    return SqliteError(db_, rc, "prepare " + std::string(sql));
  }
  if (stmt == nullptr)
    return InvalidArgument("prepare: no statement in \"" + std::string(sql) + "\"");
  return SqliteStmt(db_, stmt);
}

// ---- SqliteTransaction ----

Result<SqliteTransaction> SqliteTransaction::Begin(SqliteDb& db, Mode mode) {
  RETURN_IF_ERROR(db.Exec(mode == Mode::kImmediate ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED"));
  return SqliteTransaction(&db);
}

SqliteTransaction::~SqliteTransaction() {
  if (db_ != nullptr)
    Rollback().IgnoreError();  // an error unwind: the caller already has its error
}

Status SqliteTransaction::Commit() {
  if (db_ == nullptr) return InvalidArgument("commit: transaction is not active");
  SqliteDb* db = std::exchange(db_, nullptr);
  Status st = db->Exec("COMMIT");
  // A failed COMMIT may leave the transaction open (SQLITE_BUSY) or may have rolled it back already
  // (I/O errors); either way the caller is promised no change.
  if (!st.ok() && db->InTransaction()) db->Exec("ROLLBACK").IgnoreError();
  return st;
}

Status SqliteTransaction::Rollback() {
  if (db_ == nullptr) return Status::Ok();
  SqliteDb* db = std::exchange(db_, nullptr);
  // SQLite may already have rolled back on its own after certain errors (SQLITE_FULL, IOERR, ...).
  if (!db->InTransaction()) return Status::Ok();
  return db->Exec("ROLLBACK");
}

// ---- Backup ----

Status SqliteBackupCopy(SqliteDb& dst, const char* dst_name, SqliteDb& src, const char* src_name) {
  sqlite3_backup* b = sqlite3_backup_init(dst.get(), dst_name, src.get(), src_name);
  // On failure the error is dst's.
  if (b == nullptr) {
    return SqliteError(dst.get(), sqlite3_extended_errcode(dst.get()), "backup init");
  }
  // -1: every page in one step, so one read transaction on src (a consistent snapshot) and one
  // write transaction on dst.
  int rc = sqlite3_backup_step(b, -1);
  // finish reports the step's error too and leaves it as dst's error, with its message.
  int finish_rc = sqlite3_backup_finish(b);
  if (rc != SQLITE_DONE) {
    return SqliteError(dst.get(), finish_rc != SQLITE_OK ? finish_rc : rc, "backup");
  }
  if (finish_rc != SQLITE_OK) return SqliteError(dst.get(), finish_rc, "backup");
  return Status::Ok();
}

// ---- SqliteFullSyncScope ----

Status SqliteFullSyncScope::Enter() {
  return db_ != nullptr ? db_->Exec("PRAGMA synchronous=FULL") : Status::Ok();
}

// Failing to go back to NORMAL leaves later commits slower, never less safe.
SqliteFullSyncScope::~SqliteFullSyncScope() {
  if (db_ != nullptr) db_->Exec("PRAGMA synchronous=NORMAL").IgnoreError();
}

Result<SqliteDb> OpenStoreDb(const std::string& path, const std::vector<std::string_view>& migrations) {
  ASSIGN_OR_RETURN(SqliteDb db, SqliteDb::Open(path));
  ASSIGN_OR_RETURN(auto mode, db.QueryRow("PRAGMA journal_mode=WAL"));
  if (!mode.found || mode.stmt.ColumnText(0) != "wal") {
    return IOError(path + ": cannot switch to WAL journal mode");
  }
  mode = {};
  RETURN_IF_ERROR(
      db.Exec("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=10000"));
  ASSIGN_OR_RETURN(SqliteTransaction txn,
                   SqliteTransaction::Begin(db, SqliteTransaction::Mode::kImmediate));
  ASSIGN_OR_RETURN(auto row, db.QueryRow("PRAGMA user_version"));
  const int64_t version = row.found ? row.stmt.ColumnInt64(0) : 0;
  row = {};
  const auto latest = static_cast<int64_t>(migrations.size());
  if (version > latest) {
    return IOError(path + ": schema version " + std::to_string(version) +
                   " is newer than this modelfs (" + std::to_string(latest) + ")");
  }
  for (int64_t v = version; v < latest; ++v) {
    RETURN_IF_ERROR(db.Exec(migrations[static_cast<size_t>(v)]));
    RETURN_IF_ERROR(db.Exec("PRAGMA user_version=" + std::to_string(v + 1)));
  }
  RETURN_IF_ERROR(txn.Commit());
  return db;
}

}  // namespace modelfs
