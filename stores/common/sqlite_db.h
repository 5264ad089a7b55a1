// RAII handles for SQLite: a connection (SqliteDb), a prepared statement (SqliteStmt) and a
// transaction guard (SqliteTransaction). Every SQLite error becomes a Status in one function,
// SqliteError(); nothing else looks at SQLite result codes.
//
// Thread-safety: none of these objects is thread-safe. A store owning a SqliteDb serializes every
// use of it (and of its statements and transactions) with its own mutex. Statements and
// transactions refer to their SqliteDb, which must outlive them.
#pragma once

#include <sqlite3.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "stores/common/status.h"

namespace modelfs {

// The Status for SQLite result code rc returned by `what` on db (db may be null). Constraint
// violations on a unique key or primary key are AlreadyExists, other constraints InvalidArgument,
// corrupt or non-database files Corruption, read-only databases ReadOnly, everything else IOError.
Status SqliteError(sqlite3* db, int rc, std::string_view what);

// Marks a bound value as a BLOB (a plain std::string_view binds as TEXT).
struct SqlBlob {
  std::string_view data;
};

class SqliteStmt {
 public:
  SqliteStmt() = default;
  SqliteStmt(SqliteStmt&& o) noexcept
      : db_(std::exchange(o.db_, nullptr)), stmt_(std::exchange(o.stmt_, nullptr)) {}
  SqliteStmt& operator=(SqliteStmt&& o) noexcept;
  SqliteStmt(const SqliteStmt&) = delete;
  SqliteStmt& operator=(const SqliteStmt&) = delete;
  ~SqliteStmt();

  // Parameters are numbered from 1. Values are copied (SQLITE_TRANSIENT): arguments may die.
  Status BindInt64(int index, int64_t value);
  Status BindBlob(int index,
                  std::string_view value);  // an empty view binds an empty BLOB, not NULL
  Status BindText(int index, std::string_view value);
  Status BindDouble(int index, double value);  // NaN binds NULL (SQLite stores no NaN)
  Status BindNull(int index);
  // Binds args to parameters 1..n: integers as INTEGER, floating point as REAL, SqlBlob as BLOB,
  // string_view/std::string/const char* as TEXT, nullptr and an empty std::optional as NULL.
  template <typename... Args>
  Status Bind(const Args&... args) {
    int index = 0;
    Status st;
    ((st.ok() ? (st = BindOne(++index, args), 0) : 0), ...);
    return st;
  }

  // Advances: true when a row is ready for the Column* accessors, false when the statement is done.
  Result<bool> Step();
  // Steps to completion, ignoring rows (INSERT/UPDATE/DELETE).
  Status Run();
  // Makes the statement reusable with new bindings.
  void Reset();

  // Columns are numbered from 0 and valid only after Step() returned true.
  int64_t ColumnInt64(int col) const;
  std::string ColumnBlob(int col) const;
  std::string ColumnText(int col) const;
  bool ColumnIsNull(int col) const;

  sqlite3_stmt* get() const { return stmt_; }

 private:
  friend class SqliteDb;
  SqliteStmt(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}

  template <typename T>
  struct IsOptional : std::false_type {};
  template <typename T>
  struct IsOptional<std::optional<T>> : std::true_type {};

  template <typename T>
  Status BindOne(int index, const T& v) {
    if constexpr (std::is_same_v<T, SqlBlob>) {
      return BindBlob(index, v.data);
    } else if constexpr (std::is_same_v<T, std::nullptr_t>) {
      return BindNull(index);
    } else if constexpr (IsOptional<T>::value) {
      return v ? BindOne(index, *v) : BindNull(index);
    } else if constexpr (std::is_integral_v<T>) {
      return BindInt64(index, static_cast<int64_t>(v));
    } else if constexpr (std::is_floating_point_v<T>) {
      return BindDouble(index, static_cast<double>(v));
    } else {
      return BindText(index, std::string_view(v));
    }
  }

  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
};

class SqliteDb {
 public:
  // Opens (by default creating) the database file at path, with extended result codes on.
  static Result<SqliteDb> Open(const std::string& path,
                               int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  SqliteDb() = default;
  SqliteDb(SqliteDb&& o) noexcept : db_(std::exchange(o.db_, nullptr)) {}
  SqliteDb& operator=(SqliteDb&& o) noexcept;
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;
  // Closes; an error is ignored (visibly) as with ScopedFd. Call Close() to see it.
  ~SqliteDb();
  Status Close();

  // Runs one or more statements that take no parameters; result rows are discarded.
  Status Exec(std::string_view sql);
  // Prepares one statement.
  Result<SqliteStmt> Prepare(std::string_view sql);
  // Prepares sql, binds args and steps once: the statement positioned on its first row, for reading
  // with Column*; found is false when there is no row.
  struct Row;
  template <typename... Args>
  Result<Row> QueryRow(std::string_view sql, const Args&... args);
  // Prepares sql, binds args and runs it to completion; returns the number of rows changed.
  template <typename... Args>
  Result<int64_t> Run(std::string_view sql, const Args&... args);

  int64_t LastInsertRowid() const { return sqlite3_last_insert_rowid(db_); }
  bool InTransaction() const { return db_ != nullptr && sqlite3_get_autocommit(db_) == 0; }
  sqlite3* get() const { return db_; }

 private:
  explicit SqliteDb(sqlite3* db) : db_(db) {}
  sqlite3* db_ = nullptr;
};

struct SqliteDb::Row {
  bool found = false;
  SqliteStmt stmt;
};

template <typename... Args>
Result<SqliteDb::Row> SqliteDb::QueryRow(std::string_view sql, const Args&... args) {
  ASSIGN_OR_RETURN(SqliteStmt stmt, Prepare(sql));
  RETURN_IF_ERROR(stmt.Bind(args...));
  ASSIGN_OR_RETURN(bool found, stmt.Step());
  return Row{found, std::move(stmt)};
}

template <typename... Args>
Result<int64_t> SqliteDb::Run(std::string_view sql, const Args&... args) {
  ASSIGN_OR_RETURN(SqliteStmt stmt, Prepare(sql));
  RETURN_IF_ERROR(stmt.Bind(args...));
  RETURN_IF_ERROR(stmt.Run());
  return static_cast<int64_t>(sqlite3_changes64(db_));
}

// Rolls back on destruction unless Commit() succeeded. After a failed Commit() the transaction has
// been rolled back too, so "not committed" always means "no change".
class SqliteTransaction {
 public:
  enum class Mode {
    kDeferred,   // takes the write lock at the first write (read-only snapshots)
    kImmediate,  // takes the write lock now: no SQLITE_BUSY halfway through a read-modify-write
  };
  static Result<SqliteTransaction> Begin(SqliteDb& db, Mode mode);
  SqliteTransaction(SqliteTransaction&& o) noexcept : db_(std::exchange(o.db_, nullptr)) {}
  SqliteTransaction& operator=(SqliteTransaction&&) = delete;
  SqliteTransaction(const SqliteTransaction&) = delete;
  SqliteTransaction& operator=(const SqliteTransaction&) = delete;
  ~SqliteTransaction();

  Status Commit();
  // Rolls back now (the destructor would do it anyway).
  Status Rollback();
  bool active() const { return db_ != nullptr; }

 private:
  explicit SqliteTransaction(SqliteDb* db) : db_(db) {}
  SqliteDb* db_ = nullptr;  // null once committed or rolled back
};

// Copies database src_name of src into database dst_name of dst with SQLite's online backup API, in
// one step: the copy is the snapshot of src at one instant (one read transaction), and dst changes
// in one write transaction (other connections to dst see the old or the new content). dst must have
// no open transaction. Pages are copied as they are, so dst takes src's page size; a WAL-mode dst
// must already have that page size (SQLite refuses otherwise).
Status SqliteBackupCopy(SqliteDb& dst, const char* dst_name, SqliteDb& src, const char* src_name);

// Raises synchronous to FULL for the lifetime of the scope, so that the next COMMIT fsyncs the WAL
// (a durable commit on a connection that otherwise runs at NORMAL), then lowers it back to NORMAL.
// With enable false it does nothing. SQLite refuses to change the setting inside a transaction:
// create the scope and Enter() it before BEGIN, so that it ends after the transaction.
class SqliteFullSyncScope {
 public:
  SqliteFullSyncScope(SqliteDb& db, bool enable) : db_(enable ? &db : nullptr) {}
  SqliteFullSyncScope(const SqliteFullSyncScope&) = delete;
  SqliteFullSyncScope& operator=(const SqliteFullSyncScope&) = delete;
  ~SqliteFullSyncScope();

  Status Enter();

 private:
  SqliteDb* db_;  // null when disabled
};

// Opens a store's database: WAL (readers do not block the writer, a commit is one append),
// synchronous=NORMAL (a commit survives a process crash without an fsync; durable commits raise it
// with SqliteFullSyncScope), foreign keys on, a 10 s busy timeout. Then brings the schema to version
// migrations.size(): migrations[i] takes PRAGMA user_version i to i+1, all under the write lock so
// that two processes opening a new store migrate once. IOError for a schema newer than this
// program's; Corruption for a file that is not a database.
Result<SqliteDb> OpenStoreDb(const std::string& path, const std::vector<std::string_view>& migrations);

}  // namespace modelfs
