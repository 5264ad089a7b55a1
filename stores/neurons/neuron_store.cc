#include "stores/neurons/neuron_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <condition_variable>
#include <iterator>
#include <optional>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <span>
#include <thread>
#include <tuple>
#include <unordered_map>

#include "stores/common/file_util.h"
#include "stores/common/names.h"
#include "stores/common/scoped_fd.h"
#include "stores/common/sqlite_db.h"

namespace modelfs::neurons {

// Vectors go to and from the BLOB column as the bytes of the floats in memory; the original writes
// np.float32 tobytes(), little-endian on every machine it runs on.
static_assert(std::endian::native == std::endian::little,
              "vectors are stored as little-endian float32 bytes, copied as they are in memory");
static_assert(sizeof(float) == 4 && std::numeric_limits<float>::is_iec559);

namespace {

constexpr int kSchemaVersion = 2;

// The original's migration bookkeeping: one row per applied version.
constexpr char kSchemaVersionTable[] =
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
    "applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)";

// Version 1: the original program's tables, exactly as it creates them, and its indexes below.
constexpr char kSchemaV1Tables[] = R"sql(
CREATE TABLE IF NOT EXISTS neurons (
    id TEXT PRIMARY KEY,
    position_x REAL NOT NULL,
    position_y REAL NOT NULL,
    position_z REAL NOT NULL,
    vector BLOB,
    neuron_type TEXT NOT NULL,
    metadata TEXT,
    activation_level REAL DEFAULT 0.0,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    source_data TEXT,
    compression_ratio REAL,
    semantic_tags TEXT,
    function_signature TEXT,
    executable_code TEXT,
    input_schema TEXT,
    output_schema TEXT,
    execution_count INTEGER DEFAULT 0,
    average_execution_time REAL DEFAULT 0.0,
    activation_threshold REAL DEFAULT 0.5
);
CREATE TABLE IF NOT EXISTS synapses (
    id TEXT PRIMARY KEY,
    source_neuron_id TEXT NOT NULL,
    target_neuron_id TEXT NOT NULL,
    weight REAL NOT NULL CHECK(weight >= -1.0 AND weight <= 1.0),
    usage_count INTEGER DEFAULT 0,
    last_traversed TEXT,
    synapse_type TEXT NOT NULL,
    metadata TEXT,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    FOREIGN KEY (source_neuron_id) REFERENCES neurons(id) ON DELETE CASCADE,
    FOREIGN KEY (target_neuron_id) REFERENCES neurons(id) ON DELETE CASCADE
);
)sql";

// The original's secondary indexes (part of version 1), by table: a bulk load drops them and
// re-creates them with the same statements (see BulkLoad).
struct IndexDef {
  const char* name;
  const char* create;
};
constexpr IndexDef kNeuronIndexes[] = {
    {"idx_neurons_position",
     "CREATE INDEX IF NOT EXISTS idx_neurons_position ON neurons(position_x, position_y, "
     "position_z)"},
    {"idx_neurons_type", "CREATE INDEX IF NOT EXISTS idx_neurons_type ON neurons(neuron_type)"},
    {"idx_neurons_modified",
     "CREATE INDEX IF NOT EXISTS idx_neurons_modified ON neurons(modified_at)"},
};
constexpr IndexDef kSynapseIndexes[] = {
    {"idx_synapses_source",
     "CREATE INDEX IF NOT EXISTS idx_synapses_source ON synapses(source_neuron_id)"},
    {"idx_synapses_target",
     "CREATE INDEX IF NOT EXISTS idx_synapses_target ON synapses(target_neuron_id)"},
    {"idx_synapses_weight", "CREATE INDEX IF NOT EXISTS idx_synapses_weight ON synapses(weight)"},
    {"idx_synapses_modified",
     "CREATE INDEX IF NOT EXISTS idx_synapses_modified ON synapses(modified_at)"},
};

// Rows from which SaveAll into an empty table drops that table's secondary indexes and builds them
// afterwards (sorted, in one pass each): 1,000,000 synapses save in 8 s instead of 13 s; for
// 100,000 neurons with 384-dim vectors it is a wash.
constexpr size_t kBulkLoadRows = 10000;

// Version 2 (modelfs): fields without a column, and the generation / change time. The rows of
// modelfs_state are inserted with the migration (the change time is a parameter).
constexpr char kSchemaV2[] = R"sql(
ALTER TABLE neurons ADD COLUMN extra TEXT;
CREATE TABLE modelfs_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
)sql";

// ---- Columns and statements ----
//
// Neuron parameters (kNeuronInsert, kNeuronUpdate): ?1 id, ?2-?4 position, ?5 vector,
// ?6 neuron_type, ?7 metadata, ?8 activation_level, ?9 created_at (NULL: keep the stored one, or
// now for a new row), ?10 modified_at, ?11 source_data, ?12 compression_ratio, ?13 semantic_tags,
// ?14 function_signature, ?15 executable_code, ?16 input_schema, ?17 output_schema,
// ?18 execution_count, ?19 average_execution_time, ?20 activation_threshold, ?21 extra, ?22 now.
#define MODELFS_NEURON_COLUMNS                                                                \
  "id, position_x, position_y, position_z, vector, neuron_type, metadata, activation_level, " \
  "created_at, modified_at, source_data, compression_ratio, semantic_tags, "                  \
  "function_signature, executable_code, input_schema, output_schema, execution_count, "       \
  "average_execution_time, activation_threshold, extra"

#define MODELFS_NEURON_VALUES                                                                     \
  "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, COALESCE(?9, ?22), ?10, ?11, ?12, ?13, ?14, ?15, ?16, " \
  "?17, ?18, ?19, ?20, ?21)"

constexpr char kNeuronInsert[] =
    "INSERT INTO neurons(" MODELFS_NEURON_COLUMNS ") " MODELFS_NEURON_VALUES;

constexpr char kNeuronUpdate[] =
    "UPDATE neurons SET position_x = ?2, position_y = ?3, position_z = ?4, vector = ?5, "
    "neuron_type = ?6, metadata = ?7, activation_level = ?8, "
    "created_at = COALESCE(?9, created_at, ?22), modified_at = ?10, source_data = ?11, "
    "compression_ratio = ?12, semantic_tags = ?13, function_signature = ?14, "
    "executable_code = ?15, input_schema = ?16, output_schema = ?17, execution_count = ?18, "
    "average_execution_time = ?19, activation_threshold = ?20, extra = ?21 WHERE id = ?1";

// Reading: the columns in MODELFS_NEURON_COLUMNS order. Without vectors, column 4 is the vector's
// length in bytes and column 21 its hash, both computed inside SQLite (no copy of the vector).
constexpr char kNeuronSelect[] = "SELECT " MODELFS_NEURON_COLUMNS " FROM neurons";
constexpr char kNeuronSelectNoVector[] =
    "SELECT id, position_x, position_y, position_z, length(vector), neuron_type, metadata, "
    "activation_level, created_at, modified_at, source_data, compression_ratio, semantic_tags, "
    "function_signature, executable_code, input_schema, output_schema, execution_count, "
    "average_execution_time, activation_threshold, extra, modelfs_xxh3(vector) FROM neurons";

// Synapse parameters: ?1 id, ?2 source, ?3 target, ?4 weight, ?5 usage_count, ?6 last_traversed,
// ?7 synapse_type, ?8 metadata, ?9 created_at (NULL as for neurons), ?10 modified_at, ?11 now.
#define MODELFS_SYNAPSE_COLUMNS                                                                 \
  "id, source_neuron_id, target_neuron_id, weight, usage_count, last_traversed, synapse_type, " \
  "metadata, created_at, modified_at"
#define MODELFS_SYNAPSE_VALUES "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, COALESCE(?9, ?11), ?10)"

constexpr char kSynapseInsert[] =
    "INSERT INTO synapses(" MODELFS_SYNAPSE_COLUMNS ") " MODELFS_SYNAPSE_VALUES;
constexpr char kSynapseUpdate[] =
    "UPDATE synapses SET source_neuron_id = ?2, target_neuron_id = ?3, weight = ?4, "
    "usage_count = ?5, last_traversed = ?6, synapse_type = ?7, metadata = ?8, "
    "created_at = COALESCE(?9, created_at, ?11), modified_at = ?10 WHERE id = ?1";
// The common update, whose neurons stay: without its foreign key columns in the SET list it needs
// no foreign key check and no statement journal (see WriteSynapsesLocked).
constexpr char kSynapseUpdateSameEnds[] =
    "UPDATE synapses SET weight = ?4, usage_count = ?5, last_traversed = ?6, synapse_type = ?7, "
    "metadata = ?8, created_at = COALESCE(?9, created_at, ?11), modified_at = ?10 "
    "WHERE id = ?1 AND source_neuron_id = ?2 AND target_neuron_id = ?3";
constexpr char kSynapseSelect[] = "SELECT " MODELFS_SYNAPSE_COLUMNS " FROM synapses";

// One statement bumps the generation and sets the change time (?1).
constexpr char kBumpGeneration[] =
    "UPDATE modelfs_state SET value = CASE key WHEN 'generation' THEN value + 1 ELSE ?1 END "
    "WHERE key IN ('generation', 'change_time_ns')";

// Entities per ExportWriter batch: enough for its parallel rendering, little memory.
constexpr size_t kExportBatch = 1024;
// The WAL size after which the background thread checkpoints.
constexpr int64_t kCheckpointWalBytes = 32 << 20;
// The WAL file is truncated to this after a checkpoint that reset it (a big save leaves a big one).
constexpr int64_t kJournalSizeLimit = 64 << 20;
// The writer's page cache: a bulk save's index pages stay in memory (the size is a limit, not an
// allocation). SaveAll raises it for the transaction up to the size of what it writes, at most
// kMaxWriterCacheBytes.
constexpr uint64_t kWriterCacheBytes = 128 << 20;
constexpr char kWriterCacheSize[] = "PRAGMA cache_size=-131072";  // KiB: kWriterCacheBytes
constexpr uint64_t kMaxWriterCacheBytes = uint64_t{1} << 30;
// Idle read connections kept for reuse; more are closed when returned.
constexpr size_t kMaxIdleReaders = 8;

int64_t NowNanos() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);  // cannot fail for CLOCK_REALTIME with a valid pointer
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// "YYYYmmdd_HHMMSS" in UTC, as the original names its backups (it uses local time; modelfs writes
// UTC everywhere).
std::string BackupStamp(int64_t ns) {
  time_t secs = static_cast<time_t>(ns / 1000000000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[32];
  strftime(buf, sizeof(buf), "%Y%m%d_%H%M%S", &tm);
  return buf;
}

Status WithContext(std::string_view what, const Status& st) {
  if (st.ok()) return st;
  return st.Annotate(what);
}

// A path as the file name of a SQLite URI ("file:<path>?..."): '%', '?' and '#' are escaped.
std::string UriPath(const std::string& path) {
  std::string out;
  for (char c : path) {
    if (c == '%' || c == '?' || c == '#') {
      char buf[4];
      snprintf(buf, sizeof(buf), "%%%02X", static_cast<unsigned char>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

// ---- SQL functions ----

uint64_t VectorHash(const void* p, size_t n) { return n == 0 ? 0 : XXH3_64bits(p, n); }

// Index of the first element that is NaN or infinite, or n when all are finite. Vectors are checked
// on every write, so the scan is a max over |x|'s bits (NaN and +-inf are exactly those >=
// 0x7f800000) in blocks of a fixed size, which the compiler vectorizes.
size_t FirstNonFinite(const float* v, size_t n) {
  constexpr size_t kBlock = 16;
  size_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    uint32_t max_bits = 0;
    for (size_t j = 0; j < kBlock; ++j) {
      uint32_t bits;
      memcpy(&bits, v + i + j, 4);
      max_bits = std::max(max_bits, bits & 0x7fffffffu);
    }
    if (max_bits >= 0x7f800000u) break;
  }
  for (; i < n; ++i) {
    if (!std::isfinite(v[i])) return i;
  }
  return n;
}

// modelfs_xxh3(vector): the vector_hash of a stored vector (0 for NULL or empty), as an INTEGER.
void SqlXxh3(sqlite3_context* ctx, int, sqlite3_value** argv) {
  const void* p = sqlite3_value_blob(argv[0]);
  int n = sqlite3_value_bytes(argv[0]);
  uint64_t h = p == nullptr || n <= 0 ? 0 : VectorHash(p, static_cast<size_t>(n));
  sqlite3_result_int64(ctx, static_cast<int64_t>(h));
}

// modelfs_vector_ok(vector): 1 for NULL or a BLOB of whole float32s that are all finite.
void SqlVectorOk(sqlite3_context* ctx, int, sqlite3_value** argv) {
  int type = sqlite3_value_type(argv[0]);
  if (type == SQLITE_NULL) return sqlite3_result_int(ctx, 1);
  if (type != SQLITE_BLOB) return sqlite3_result_int(ctx, 0);
  const void* p = sqlite3_value_blob(argv[0]);
  size_t n = static_cast<size_t>(sqlite3_value_bytes(argv[0]));
  if (n % 4 != 0) return sqlite3_result_int(ctx, 0);
  // The blob may be unaligned: check a copy in blocks.
  float block[256];
  for (size_t off = 0; off < n; off += sizeof(block)) {
    size_t len = std::min(sizeof(block), n - off);
    memcpy(block, static_cast<const char*>(p) + off, len);
    if (FirstNonFinite(block, len / 4) != len / 4) return sqlite3_result_int(ctx, 0);
  }
  sqlite3_result_int(ctx, 1);
}

Status RegisterFunctions(SqliteDb& db) {
  const int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS;
  int rc = sqlite3_create_function_v2(db.get(), "modelfs_xxh3", 1, flags, nullptr, SqlXxh3, nullptr,
                                      nullptr, nullptr);
  if (rc == SQLITE_OK) {
    rc = sqlite3_create_function_v2(db.get(), "modelfs_vector_ok", 1, flags, nullptr, SqlVectorOk,
                                    nullptr, nullptr, nullptr);
  }
  return rc == SQLITE_OK ? Status::Ok() : SqliteError(db.get(), rc, "register SQL functions");
}

// ---- Connections ----

// Every connection is used by one thread at a time (the writer under the store's mutex, a reader
// by the call that leased it, the checkpointer by its thread), so SQLite's own per-call connection
// mutex is only overhead (8% of LoadAll): NOMUTEX.
constexpr int kOpenExisting = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
constexpr int kOpenCreate = kOpenExisting | SQLITE_OPEN_CREATE;

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
};

// A connection and its prepared statements (by SQL text), which live as long as it does.
struct Conn {
  SqliteDb db;
  std::unordered_map<std::string, SqliteStmt, StringHash, std::equal_to<>> stmts;

  // The cached statement for sql, reset: every user resets it when done (StmtScope), so that no
  // statement keeps a read transaction (an old snapshot) open.
  Result<SqliteStmt*> Stmt(std::string_view sql) {
    auto it = stmts.find(sql);
    if (it == stmts.end()) {
      ASSIGN_OR_RETURN(SqliteStmt stmt, db.Prepare(sql));
      it = stmts.emplace(std::string(sql), std::move(stmt)).first;
    }
    return &it->second;
  }
};

// Resets a cached statement and clears its bindings when the scope ends (bindings without copies
// must not outlive the bytes they point to).
class StmtScope {
 public:
  explicit StmtScope(SqliteStmt* s) : s_(s) {}
  ~StmtScope() { s_->Reset(); }
  StmtScope(const StmtScope&) = delete;
  StmtScope& operator=(const StmtScope&) = delete;

 private:
  SqliteStmt* s_;
};

// Connection settings shared by every connection to graph.db. WAL: readers never block the writer;
// synchronous=NORMAL: a commit is an append without fsync (Sync() makes it durable); busy_timeout:
// another process's write transaction is waited for.
Status ConfigureConnection(SqliteDb& db) {
  RETURN_IF_ERROR(db.Exec("PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON"));
  return RegisterFunctions(db);
}

Result<int64_t> QueryInt(SqliteDb& db, std::string_view sql) {
  ASSIGN_OR_RETURN(auto row, db.QueryRow(sql));
  if (!row.found) return IOError(std::string(sql) + ": no row");
  return row.stmt.ColumnInt64(0);
}

Result<std::string> QueryText(SqliteDb& db, std::string_view sql) {
  ASSIGN_OR_RETURN(auto row, db.QueryRow(sql));
  if (!row.found) return IOError(std::string(sql) + ": no row");
  return row.stmt.ColumnText(0);
}

// The schema version per the original's table (0 without it).
Result<int> SchemaVersion(SqliteDb& db) {
  ASSIGN_OR_RETURN(auto has, db.QueryRow("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND "
                                         "name = 'schema_version'"));
  if (!has.found) return 0;
  has = {};
  ASSIGN_OR_RETURN(int64_t v, QueryInt(db, "SELECT COALESCE(MAX(version), 0) FROM schema_version"));
  return static_cast<int>(v);
}

// Brings db to kSchemaVersion in one write transaction (two processes opening a new store migrate
// once: the second waits for the lock and then finds version 2). what names db in errors.
Status Migrate(SqliteDb& db, const std::string& what) {
  ASSIGN_OR_RETURN(SqliteTransaction txn,
                   SqliteTransaction::Begin(db, SqliteTransaction::Mode::kImmediate));
  RETURN_IF_ERROR(db.Exec(kSchemaVersionTable));
  ASSIGN_OR_RETURN(int64_t version,
                   QueryInt(db, "SELECT COALESCE(MAX(version), 0) FROM schema_version"));
  if (version > kSchemaVersion) {
    return IOError(what + ": schema version " + std::to_string(version) +
                   " is newer than this modelfs's (" + std::to_string(kSchemaVersion) + ")");
  }
  if (version < 1) {
    RETURN_IF_ERROR(db.Exec(kSchemaV1Tables));
    for (const IndexDef& index : kNeuronIndexes) RETURN_IF_ERROR(db.Exec(index.create));
    for (const IndexDef& index : kSynapseIndexes) RETURN_IF_ERROR(db.Exec(index.create));
    RETURN_IF_ERROR(db.Run("INSERT INTO schema_version(version) VALUES(1)").status());
  }
  if (version < 2) {
    RETURN_IF_ERROR(db.Exec(kSchemaV2));
    RETURN_IF_ERROR(db.Run("INSERT INTO modelfs_state(key, value) VALUES('generation', 1), "
                           "('change_time_ns', ?)",
                           NowNanos())
                        .status());
    RETURN_IF_ERROR(db.Run("INSERT INTO schema_version(version) VALUES(2)").status());
  }
  return txn.Commit();
}

Status CheckJournalMode(SqliteDb& db, std::string_view mode, const std::string& what) {
  ASSIGN_OR_RETURN(std::string got, QueryText(db, "PRAGMA journal_mode=" + std::string(mode)));
  if (got != mode) return IOError(what + ": cannot switch to journal mode " + std::string(mode));
  return Status::Ok();
}

// PRAGMA integrity_check's answer, its lines joined with "; " ("ok" when sound).
Result<std::string> IntegrityCheck(SqliteDb& db) {
  ASSIGN_OR_RETURN(SqliteStmt stmt, db.Prepare("PRAGMA integrity_check"));
  std::string out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    if (!out.empty()) out += "; ";
    out += stmt.ColumnText(0);
  }
  return out;
}

Result<uint64_t> ForeignKeyViolations(SqliteDb& db) {
  ASSIGN_OR_RETURN(SqliteStmt stmt, db.Prepare("PRAGMA foreign_key_check"));
  uint64_t n = 0;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return n;
    ++n;
  }
}

Status Fsync(const std::string& path) {
  ASSIGN_OR_RETURN(ScopedFd fd, OpenFile(path, O_RDONLY | O_CLOEXEC));
  if (::fsync(fd.get()) != 0) return ErrnoError("fsync " + path, errno);
  return Status::Ok();
}

// rename(2) that fails with AlreadyExists instead of replacing `to`.
Status RenameNoReplace(const std::string& from, const std::string& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) {
    return Status::Ok();
  }
  int err = errno;
  if (err == EEXIST) return AlreadyExists(to + " already exists");
  if (err != EINVAL && err != ENOSYS) return ErrnoError("rename " + from + " to " + to, err);
  // A filesystem without RENAME_NOREPLACE: link(2) refuses an existing name too.
  if (::link(from.c_str(), to.c_str()) != 0) {
    err = errno;
    if (err == EEXIST) return AlreadyExists(to + " already exists");
    return ErrnoError("link " + from + " to " + to, err);
  }
  if (::unlink(from.c_str()) != 0) {
    LogStoreWarning("neurons", ErrnoError("unlink " + from, errno).ToString());
  }
  return Status::Ok();
}

// Removes a SQLite file made in staging/ (and what SQLite may have left beside it) unless
// released: the staged file of a failed backup or restore.
class StagedDb {
 public:
  explicit StagedDb(std::string path) : path_(std::move(path)) {}
  ~StagedDb() {
    if (path_.empty()) return;
    for (const char* suffix : {"", "-journal", "-wal", "-shm"}) {
      std::string p = path_ + suffix;
      if (::unlink(p.c_str()) != 0 && errno != ENOENT) {
        // staging/ is cleared at the next exclusive open.
        LogStoreWarning("neurons", ErrnoError("unlink " + p, errno).ToString());
      }
    }
  }
  StagedDb(const StagedDb&) = delete;
  StagedDb& operator=(const StagedDb&) = delete;
  const std::string& path() const { return path_; }
  void Release() { path_.clear(); }

 private:
  std::string path_;
};

Status ValidateBackupName(const std::string& name) {
  RETURN_IF_ERROR(ValidatePlainName("backup name", name));
  if (name.size() <= 3 || name.compare(name.size() - 3, 3, ".db") != 0) {
    return InvalidArgument(QuoteName("backup name", name) + ": must end in \".db\"");
  }
  return Status::Ok();
}

// ---- Validation ----

std::string FloatText(double d) {
  std::string s;
  PyFloatRepr(d, &s);
  return s;
}

std::string NonFiniteText(double d) { return std::isnan(d) ? "NaN" : (d > 0 ? "inf" : "-inf"); }

Status CheckTime(std::string_view entity, const std::string& id, std::string_view field,
                 std::string_view value) {
  if (value.empty()) return Status::Ok();
  Status st = ParseIsoTime(value).status();
  if (st.ok()) return st;
  return InvalidArgument(std::string(entity) + " " + id + ": " + std::string(field) + " '" +
                         std::string(value) + "' is not an ISO-8601 time");
}

Status ValidateNeuron(const Neuron& n) {
  RETURN_IF_ERROR(ValidateUuid("neuron id", n.id));
  auto fail = [&](const std::string& msg) {
    return InvalidArgument("neuron " + n.id + ": " + msg);
  };
  if (Status st = ValidatePlainName("type", n.type); !st.ok()) return fail(st.message());
  const std::pair<const char*, double> numbers[] = {
      {"position x", n.position.x},
      {"position y", n.position.y},
      {"position z", n.position.z},
      {"activation_level", n.activation_level},
      {"average_execution_time", n.average_execution_time},
      {"activation_threshold", n.activation_threshold},
      {"compression_ratio", n.compression_ratio.value_or(0.0)},
  };
  for (const auto& [field, value] : numbers) {
    if (!std::isfinite(value)) return fail(std::string(field) + " is " + NonFiniteText(value));
  }
  size_t bad = FirstNonFinite(n.vector.data(), n.vector.size());
  if (bad != n.vector.size()) {
    return fail("vector element " + std::to_string(bad) + " is " + NonFiniteText(n.vector[bad]));
  }
  if (n.vector.size() > std::numeric_limits<uint32_t>::max()) return fail("vector is too long");
  if (!n.metadata.is_object() && !n.metadata.is_null()) return fail("metadata is not an object");
  if (!n.semantic_tags.is_array() && !n.semantic_tags.is_null()) {
    return fail("semantic_tags is not a list");
  }
  if (!n.input_schema.is_object() && !n.input_schema.is_null()) {
    return fail("input_schema is not an object");
  }
  if (!n.output_schema.is_object() && !n.output_schema.is_null()) {
    return fail("output_schema is not an object");
  }
  if (!n.extra.is_object() && !n.extra.is_null()) return fail("extra is not an object");
  RETURN_IF_ERROR(CheckTime("neuron", n.id, "created_at", n.created_at));
  return CheckTime("neuron", n.id, "modified_at", n.modified_at);
}

Status ValidateSynapse(const Synapse& s) {
  RETURN_IF_ERROR(ValidateUuid("synapse id", s.id));
  auto fail = [&](const std::string& msg) {
    return InvalidArgument("synapse " + s.id + ": " + msg);
  };
  if (Status st = ValidateUuid("source_neuron_id", s.source_neuron_id); !st.ok()) {
    return fail(st.message());
  }
  if (Status st = ValidateUuid("target_neuron_id", s.target_neuron_id); !st.ok()) {
    return fail(st.message());
  }
  if (std::isnan(s.weight)) return fail("weight is NaN");
  if (!(s.weight >= -1.0 && s.weight <= 1.0)) {
    return fail("weight " + FloatText(s.weight) + " is outside [-1, 1]");
  }
  if (s.usage_count < 0) return fail("usage_count " + std::to_string(s.usage_count) + " is < 0");
  if (std::find(std::begin(kSynapseTypes), std::end(kSynapseTypes), s.synapse_type) ==
      std::end(kSynapseTypes)) {
    return fail("synapse_type '" + s.synapse_type +
                "' is not one of knowledge, tool_input, tool_output");
  }
  if (!s.metadata.is_object() && !s.metadata.is_null()) return fail("metadata is not an object");
  if (s.last_traversed) {
    RETURN_IF_ERROR(CheckTime("synapse", s.id, "last_traversed", *s.last_traversed));
  }
  RETURN_IF_ERROR(CheckTime("synapse", s.id, "created_at", s.created_at));
  return CheckTime("synapse", s.id, "modified_at", s.modified_at);
}

// ---- Binding and reading rows ----

// JSON text buffers reused from row to row (no allocation per row once they have grown).
struct Scratch {
  std::string metadata, semantic_tags, input_schema, output_schema, extra;
};

// The column text of a JSON value: null → NULL (an empty view with a null data pointer), the empty
// object as a constant (the common case, without PyJsonDump).
std::string_view JsonColumn(const Json& v, std::string* buf, bool null_when_empty_object) {
  if (v.is_null()) return std::string_view();
  if (v.is_object() && v.empty()) return null_when_empty_object ? std::string_view() : "{}";
  buf->clear();
  PyJsonDump(v, buf);
  return *buf;
}

// Bind helpers on the raw statement: these run per row of a bulk save, so they skip the Status
// wrappers; the first error code is kept.
class RowBinder {
 public:
  explicit RowBinder(sqlite3_stmt* st) : st_(st) {}
  void Text(int i, std::string_view v) {  // null data = NULL
    Keep(v.data() == nullptr
             ? sqlite3_bind_null(st_, i)
             : sqlite3_bind_text64(st_, i, v.data(), v.size(), SQLITE_STATIC, SQLITE_UTF8));
  }
  void OptText(int i, const std::optional<std::string>& v) {
    Keep(v ? sqlite3_bind_text64(st_, i, v->data(), v->size(), SQLITE_STATIC, SQLITE_UTF8)
           : sqlite3_bind_null(st_, i));
  }
  void Double(int i, double v) { Keep(sqlite3_bind_double(st_, i, v)); }
  void Int(int i, int64_t v) { Keep(sqlite3_bind_int64(st_, i, v)); }
  void Null(int i) { Keep(sqlite3_bind_null(st_, i)); }
  void Blob(int i, const void* p, size_t n) {
    Keep(sqlite3_bind_blob64(st_, i, p, n, SQLITE_STATIC));
  }
  int rc() const { return rc_; }

 private:
  void Keep(int rc) {
    if (rc_ == SQLITE_OK) rc_ = rc;
  }
  sqlite3_stmt* st_;
  int rc_ = SQLITE_OK;
};

// Binds n to the kNeuron* parameters. Text and blobs are not copied: n and scratch must stay as
// they are until the statement has been stepped.
int BindNeuron(sqlite3_stmt* st, const Neuron& n, Scratch& scratch, const std::string& now) {
  RowBinder b(st);
  b.Text(1, n.id);
  b.Double(2, n.position.x);
  b.Double(3, n.position.y);
  b.Double(4, n.position.z);
  if (n.vector.empty()) {
    b.Null(5);  // the original stores no vector as NULL and reads [] as none
  } else {
    b.Blob(5, n.vector.data(), n.vector.size() * sizeof(float));
  }
  b.Text(6, n.type);
  b.Text(7, n.metadata.is_null() ? "{}" : JsonColumn(n.metadata, &scratch.metadata, false));
  b.Double(8, n.activation_level);
  if (n.created_at.empty()) {
    b.Null(9);
  } else {
    b.Text(9, n.created_at);
  }
  b.Text(10, n.modified_at.empty() ? std::string_view(now) : std::string_view(n.modified_at));
  b.OptText(11, n.source_data);
  if (n.compression_ratio) {
    b.Double(12, *n.compression_ratio);
  } else {
    b.Null(12);
  }
  b.Text(13, JsonColumn(n.semantic_tags, &scratch.semantic_tags, false));
  b.OptText(14, n.function_signature);
  b.OptText(15, n.executable_code);
  b.Text(16, JsonColumn(n.input_schema, &scratch.input_schema, false));
  b.Text(17, JsonColumn(n.output_schema, &scratch.output_schema, false));
  b.Int(18, n.execution_count);
  b.Double(19, n.average_execution_time);
  b.Double(20, n.activation_threshold);
  b.Text(21, JsonColumn(n.extra, &scratch.extra, true));
  b.Text(22, now);
  return b.rc();
}

int BindSynapse(sqlite3_stmt* st, const Synapse& s, Scratch& scratch, const std::string& now) {
  RowBinder b(st);
  b.Text(1, s.id);
  b.Text(2, s.source_neuron_id);
  b.Text(3, s.target_neuron_id);
  b.Double(4, s.weight);
  b.Int(5, s.usage_count);
  b.OptText(6, s.last_traversed);
  b.Text(7, s.synapse_type);
  b.Text(8, s.metadata.is_null() ? "{}" : JsonColumn(s.metadata, &scratch.metadata, false));
  if (s.created_at.empty()) {
    b.Null(9);
  } else {
    b.Text(9, s.created_at);
  }
  b.Text(10, s.modified_at.empty() ? std::string_view(now) : std::string_view(s.modified_at));
  b.Text(11, now);
  return b.rc();
}

std::string_view ColText(sqlite3_stmt* st, int col) {
  const unsigned char* p = sqlite3_column_text(st, col);
  int n = sqlite3_column_bytes(st, col);
  if (p == nullptr || n <= 0) return std::string_view();
  return std::string_view(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
}

std::optional<std::string> ColOptText(sqlite3_stmt* st, int col) {
  if (sqlite3_column_type(st, col) == SQLITE_NULL) return std::nullopt;
  return std::string(ColText(st, col));
}

// A column read with the schema's default where it is NULL (a row the original wrote may leave
// the columns of the other neuron type NULL).
double ColDouble(sqlite3_stmt* st, int col, double if_null) {
  return sqlite3_column_type(st, col) == SQLITE_NULL ? if_null : sqlite3_column_double(st, col);
}

// A JSON column: NULL → if_null; "{}" and "[]" without the parser (most rows).
Status ColJson(sqlite3_stmt* st, int col, const char* entity, std::string_view id,
               const char* column, const Json& if_null, Json* out) {
  if (sqlite3_column_type(st, col) == SQLITE_NULL) {
    if (*out != if_null) *out = if_null;
    return Status::Ok();
  }
  std::string_view text = ColText(st, col);
  if (text == "{}") {
    if (!out->is_object() || !out->empty()) *out = Json::object();  // a new Neuron has one
    return Status::Ok();
  }
  if (text == "[]") {
    *out = Json::array();
    return Status::Ok();
  }
  Result<Json> v = ParseJson(text);
  if (!v.ok()) {
    return Corruption(std::string(entity) + " " + std::string(id) + ": column " + column + ": " +
                      v.status().message());
  }
  *out = std::move(v).value();
  return Status::Ok();
}

// Reads a row of kNeuronSelect (with_vector) or kNeuronSelectNoVector into *n.
Status ReadNeuron(sqlite3_stmt* st, bool with_vector, Neuron* n) {
  n->id.assign(ColText(st, 0));
  n->position = {sqlite3_column_double(st, 1), sqlite3_column_double(st, 2),
                 sqlite3_column_double(st, 3)};
  if (with_vector) {
    const void* p = sqlite3_column_blob(st, 4);
    size_t bytes = static_cast<size_t>(sqlite3_column_bytes(st, 4));
    if (p == nullptr) bytes = 0;
    // A length that is not a multiple of 4 (damage; Verify reports it) loses its last bytes.
    n->vector.resize(bytes / 4);
    if (bytes >= 4) memcpy(n->vector.data(), p, n->vector.size() * 4);
    n->vector_dim = static_cast<uint32_t>(bytes / 4);
    n->vector_hash = VectorHash(p, bytes);
  } else {
    n->vector.clear();
    n->vector_dim = static_cast<uint32_t>(sqlite3_column_int64(st, 4) / 4);
    n->vector_hash = static_cast<uint64_t>(sqlite3_column_int64(st, 21));
  }
  n->type.assign(ColText(st, 5));
  const std::string_view id = n->id;
  RETURN_IF_ERROR(ColJson(st, 6, "neuron", id, "metadata", Json::object(), &n->metadata));
  n->activation_level = ColDouble(st, 7, 0.0);
  n->created_at.assign(ColText(st, 8));
  n->modified_at.assign(ColText(st, 9));
  n->source_data = ColOptText(st, 10);
  n->compression_ratio = sqlite3_column_type(st, 11) == SQLITE_NULL
                             ? std::nullopt
                             : std::optional<double>(sqlite3_column_double(st, 11));
  RETURN_IF_ERROR(ColJson(st, 12, "neuron", id, "semantic_tags", Json(), &n->semantic_tags));
  n->function_signature = ColOptText(st, 13);
  n->executable_code = ColOptText(st, 14);
  RETURN_IF_ERROR(ColJson(st, 15, "neuron", id, "input_schema", Json(), &n->input_schema));
  RETURN_IF_ERROR(ColJson(st, 16, "neuron", id, "output_schema", Json(), &n->output_schema));
  n->execution_count = sqlite3_column_int64(st, 17);
  n->average_execution_time = ColDouble(st, 18, 0.0);
  n->activation_threshold = ColDouble(st, 19, 0.5);
  return ColJson(st, 20, "neuron", id, "extra", Json::object(), &n->extra);
}

Status ReadSynapse(sqlite3_stmt* st, Synapse* s) {
  s->id.assign(ColText(st, 0));
  s->source_neuron_id.assign(ColText(st, 1));
  s->target_neuron_id.assign(ColText(st, 2));
  s->weight = sqlite3_column_double(st, 3);
  s->usage_count = sqlite3_column_int64(st, 4);
  s->last_traversed = ColOptText(st, 5);
  s->synapse_type.assign(ColText(st, 6));
  RETURN_IF_ERROR(ColJson(st, 7, "synapse", s->id, "metadata", Json::object(), &s->metadata));
  s->created_at.assign(ColText(st, 8));
  s->modified_at.assign(ColText(st, 9));
  return Status::Ok();
}

// Steps a cached statement over every row, calling read(stmt) for each.
template <typename Read>
Status ForEachRow(SqliteStmt* stmt, Read&& read) {
  for (;;) {
    int rc = sqlite3_step(stmt->get());
    if (rc == SQLITE_DONE) return Status::Ok();
    if (rc != SQLITE_ROW) {
      return SqliteError(sqlite3_db_handle(stmt->get()), rc, sqlite3_sql(stmt->get()));
    }
    RETURN_IF_ERROR(read(stmt->get()));
  }
}

enum class WriteKind { kInsert, kUpdate, kUpsert };

// Validates the rows of a big batch on a second thread while the writer inserts those already
// validated: validation (0.3 us per neuron, 0.5 us per synapse: ids, times, vectors) then costs
// nothing next to SQLite's 4-8 us per row, and the other core has nothing else to do during a
// save. Wait(i) returns row i's status; rows are waited for in order. Small batches validate
// inline, in Wait.
template <typename T>
class ValidatedAhead {
 public:
  static constexpr size_t kMinRows = 4096;  // below, a thread costs more than it saves

  ValidatedAhead(const std::vector<const T*>& rows, Status (*validate)(const T&))
      : rows_(rows), validate_(validate) {
    if (rows_.size() >= kMinRows) thread_ = std::thread([this] { Run(); });
  }
  ~ValidatedAhead() {
    if (thread_.joinable()) {
      stop_.store(true, std::memory_order_relaxed);
      thread_.join();
    }
  }
  ValidatedAhead(const ValidatedAhead&) = delete;
  ValidatedAhead& operator=(const ValidatedAhead&) = delete;

  Status Wait(size_t i) {
    if (!thread_.joinable()) return validate_(*rows_[i]);
    for (;;) {
      if (done_.load(std::memory_order_acquire) > i) return Status::Ok();
      if (failed_at_.load(std::memory_order_acquire) == i) return error_;  // written before
      std::this_thread::yield();
    }
  }

 private:
  void Run() {
    for (size_t i = 0; i < rows_.size() && !stop_.load(std::memory_order_relaxed); ++i) {
      Status st = validate_(*rows_[i]);
      if (!st.ok()) {
        error_ = std::move(st);
        failed_at_.store(i, std::memory_order_release);
        return;
      }
      done_.store(i + 1, std::memory_order_release);
    }
  }

  const std::vector<const T*>& rows_;
  Status (*const validate_)(const T&);
  std::atomic<size_t> done_{0};  // rows [0, done_) are valid
  std::atomic<size_t> failed_at_{SIZE_MAX};
  Status error_;  // written by the thread before failed_at_
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// The order of n ids (id_of(i) gives the i-th) by id, equal ids in their original order. Ids are
// compared by their first 8 bytes as one integer first (UUIDs differ there; byte order is the
// string order), which sorts 100,000 ids in a few ms instead of 50-100 ms of string compares of
// scattered heap strings.
template <typename IdOf>
std::vector<uint32_t> OrderById(size_t n, IdOf id_of) {
  struct Key {
    uint64_t prefix;
    uint32_t index;
  };
  std::vector<Key> keys(n);
  for (size_t i = 0; i < n; ++i) {
    std::string_view id = id_of(i);
    uint64_t prefix = 0;
    for (size_t j = 0; j < 8; ++j) {
      prefix = prefix << 8 | (j < id.size() ? static_cast<unsigned char>(id[j]) : 0u);
    }
    keys[i] = {prefix, static_cast<uint32_t>(i)};
  }
  std::sort(keys.begin(), keys.end(), [&](const Key& a, const Key& b) {
    if (a.prefix != b.prefix) return a.prefix < b.prefix;
    int c = id_of(a.index).compare(id_of(b.index));
    return c != 0 ? c < 0 : a.index < b.index;
  });
  std::vector<uint32_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = keys[i].index;
  return order;
}

// Sorts rows by id in place (stable: of equal ids, the last stays last, so it wins).
template <typename T>
void SortById(std::vector<const T*>& rows) {
  std::vector<uint32_t> order =
      OrderById(rows.size(), [&](size_t i) { return std::string_view(rows[i]->id); });
  std::vector<const T*> sorted(rows.size());
  for (size_t i = 0; i < sorted.size(); ++i) sorted[i] = rows[order[i]];
  rows = std::move(sorted);
}

template <typename T>
std::vector<const T*> Pointers(std::span<const T> batch) {
  std::vector<const T*> rows(batch.size());
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = &batch[i];
  return rows;
}

// Sorts entities by id, moving each entity once.
template <typename T>
void SortById(std::vector<T>& v) {
  auto by_id = [](const T& a, const T& b) { return a.id < b.id; };
  if (std::is_sorted(v.begin(), v.end(), by_id)) return;
  std::vector<uint32_t> order =
      OrderById(v.size(), [&](size_t i) { return std::string_view(v[i].id); });
  std::vector<T> sorted;
  sorted.reserve(v.size());
  for (uint32_t i : order) sorted.push_back(std::move(v[i]));
  v = std::move(sorted);
}

}  // namespace

// ---- ChangeTracker ----

void ChangeTracker::MarkNeuronModified(const std::string& id) {
  modified_neurons_.insert(id);
  deleted_neurons_.erase(id);
}
void ChangeTracker::MarkSynapseModified(const std::string& id) {
  modified_synapses_.insert(id);
  deleted_synapses_.erase(id);
}
void ChangeTracker::MarkNeuronDeleted(const std::string& id) {
  deleted_neurons_.insert(id);
  modified_neurons_.erase(id);
}
void ChangeTracker::MarkSynapseDeleted(const std::string& id) {
  deleted_synapses_.insert(id);
  modified_synapses_.erase(id);
}
bool ChangeTracker::HasChanges() const {
  return !modified_neurons_.empty() || !modified_synapses_.empty() || !deleted_neurons_.empty() ||
         !deleted_synapses_.empty();
}
void ChangeTracker::Clear() {
  modified_neurons_.clear();
  modified_synapses_.clear();
  deleted_neurons_.clear();
  deleted_synapses_.clear();
}

// ---- NeuronStore::Impl ----

struct NeuronStore::Impl {
  // What a write transaction's body knows: one instant for every row it writes.
  struct WriteContext {
    int64_t now_ns = 0;
    std::string now;  // FormatIsoTime(now_ns), for empty created_at/modified_at
    Scratch scratch;
    bool changed = true;       // false: the body changed nothing; no generation bump
    bool cache_grown = false;  // GrowCacheLocked was called: shrink after the transaction
    // The tables were empty when the transaction began (Import kReplace): rows are inserted, and
    // only an id repeated within the import updates.
    bool into_empty = false;
  };

  // A read connection lent by the pool; returned (or closed) when the lease ends.
  class Reader {
   public:
    Reader(Impl* impl, std::unique_ptr<Conn> conn) : impl_(impl), conn_(std::move(conn)) {}
    ~Reader() { impl_->ReturnReader(std::move(conn_)); }
    Reader(Reader&&) = default;
    Reader(const Reader&) = delete;
    Reader& operator=(const Reader&) = delete;
    Conn* operator->() { return conn_.get(); }
    Conn& operator*() { return *conn_; }

   private:
    Impl* impl_;
    std::unique_ptr<Conn> conn_;
  };

  Impl(std::string dir_in, StoreOptions options_in, ScopedFd lock)
      : dir(std::move(dir_in)),
        db_path(dir + "/graph.db"),
        backups_dir(dir + "/backups"),
        staging_dir(dir + "/staging"),
        options(options_in),
        lock_fd(std::move(lock)) {}

  ~Impl() {
    if (checkpointer.joinable()) {
      {
        std::lock_guard lock(ckpt_mu);
        ckpt_stop = true;
      }
      ckpt_cv.notify_one();
      checkpointer.join();
    }
    std::lock_guard lock(mu);
    if (writer.db.get() != nullptr) {
      // Leaves the database file complete and the WAL empty when nobody else has it open; with
      // other connections (another process) it does what it can, which is not an error.
      writer.db.Exec("PRAGMA wal_checkpoint(TRUNCATE)").IgnoreError();
    }
  }

  // ---- Open ----

  Status OpenWriter() {
    ASSIGN_OR_RETURN(writer.db, SqliteDb::Open(db_path, kOpenCreate));
    RETURN_IF_ERROR(ConfigureConnection(writer.db));
    // page_size takes effect only while the database has no content, and in WAL mode it is fixed
    // once the WAL exists: so before journal_mode=WAL. On an existing database it does nothing.
    RETURN_IF_ERROR(writer.db.Exec("PRAGMA page_size=" + std::to_string(options.page_size)));
    RETURN_IF_ERROR(CheckJournalMode(writer.db, "wal", db_path));
    RETURN_IF_ERROR(writer.db.Exec(kWriterCacheSize));
    RETURN_IF_ERROR(writer.db.Exec("PRAGMA synchronous=NORMAL; PRAGMA journal_size_limit=" +
                                   std::to_string(kJournalSizeLimit)));
    if (options.background_checkpoint) {
      // Commits no longer checkpoint inline (a big save returns right after its commit); the hook
      // hands the work to the checkpointer thread instead.
      RETURN_IF_ERROR(writer.db.Exec("PRAGMA wal_autocheckpoint=0"));
      sqlite3_wal_hook(writer.db.get(), &Impl::WalHook, this);
    }
    RETURN_IF_ERROR(Migrate(writer.db, db_path));
    ASSIGN_OR_RETURN(int64_t ps, QueryInt(writer.db, "PRAGMA page_size"));
    page_size = ps;
    return Status::Ok();
  }

  Status StartCheckpointer() {
    ASSIGN_OR_RETURN(SqliteDb db, SqliteDb::Open(db_path, kOpenExisting));
    RETURN_IF_ERROR(db.Exec("PRAGMA busy_timeout=1000"));
    checkpointer = std::thread([this, db = std::move(db)]() mutable { CheckpointLoop(db); });
    return Status::Ok();
  }

  static int WalHook(void* arg, sqlite3*, const char*, int pages) {
    auto* impl = static_cast<Impl*>(arg);
    if (static_cast<int64_t>(pages) * impl->page_size >= kCheckpointWalBytes) {
      {
        std::lock_guard lock(impl->ckpt_mu);
        impl->ckpt_wanted = true;
      }
      impl->ckpt_cv.notify_one();
    }
    return SQLITE_OK;
  }

  void CheckpointLoop(SqliteDb& db) {
    for (;;) {
      {
        std::unique_lock lock(ckpt_mu);
        ckpt_cv.wait(lock, [this] { return ckpt_wanted || ckpt_stop; });
        if (ckpt_stop) return;
        ckpt_wanted = false;
      }
      // PASSIVE: copies what no reader still needs and never waits; the WAL restarts from its
      // beginning at the first commit after a complete checkpoint.
      Status st = db.Exec("PRAGMA wal_checkpoint(PASSIVE)");
      if (!st.ok()) LogStoreWarning("neurons", "background checkpoint: " + st.ToString());
    }
  }

  // ---- Connections ----

  Result<Reader> GetReader() {
    {
      std::lock_guard lock(readers_mu);
      if (!idle_readers.empty()) {
        std::unique_ptr<Conn> c = std::move(idle_readers.back());
        idle_readers.pop_back();
        return Reader(this, std::move(c));
      }
    }
    auto c = std::make_unique<Conn>();
    ASSIGN_OR_RETURN(c->db, SqliteDb::Open(db_path, kOpenExisting));
    RETURN_IF_ERROR(ConfigureConnection(c->db));
    // No mmap: measured, LoadAll was no faster with the database mapped (a fresh process pays the
    // page faults either way), and mapped pages would count in the daemon's RSS.
    RETURN_IF_ERROR(c->db.Exec("PRAGMA query_only=1"));
    return Reader(this, std::move(c));
  }

  void ReturnReader(std::unique_ptr<Conn> c) {
    if (c == nullptr) return;
    // A lease that ended inside a transaction (an error path) must not pin its snapshot.
    if (c->db.InTransaction()) c->db.Exec("ROLLBACK").IgnoreError();  // the caller has its error
    std::lock_guard lock(readers_mu);
    if (idle_readers.size() < kMaxIdleReaders) idle_readers.push_back(std::move(c));
  }

  // ---- Writes ----

  // Runs body(ctx) in one write transaction on the writer connection; unless the body says it
  // changed nothing, the same transaction bumps the generation and sets the change time
  // (change_time_ns, or the transaction's now). Any error rolls everything back.
  template <typename Body>
  Status Write(Body&& body, std::optional<int64_t> change_time_ns = std::nullopt) {
    std::lock_guard lock(mu);
    return WriteLocked(std::forward<Body>(body), change_time_ns);
  }

  template <typename Body>
  Status WriteLocked(Body&& body, std::optional<int64_t> change_time_ns) {
    WriteContext ctx;
    ctx.now_ns = NowNanos();
    ctx.now = FormatIsoTime(ctx.now_ns);
    Status st = [&]() -> Status {
      ASSIGN_OR_RETURN(SqliteTransaction txn,
                       SqliteTransaction::Begin(writer.db, SqliteTransaction::Mode::kImmediate));
      RETURN_IF_ERROR(body(ctx));
      if (ctx.changed) RETURN_IF_ERROR(BumpLocked(change_time_ns.value_or(ctx.now_ns)));
      return txn.Commit();
    }();
    if (ctx.cache_grown) {
      // Lowering the limit frees the pages above it (all clean after the commit or rollback). glibc
      // keeps the memory for the process's next allocations; a malloc_trim here would give it back
      // to the system, but made the LoadAll after a 100,000-neuron save 0.1 s slower (page faults).
      Status shrink = writer.db.Exec(kWriterCacheSize);
      if (!shrink.ok()) {
        LogStoreWarning("neurons", "shrinking the page cache: " + shrink.ToString());
      }
    }
    return st;
  }

  Status GrowCacheLocked(WriteContext& ctx, uint64_t bytes) {
    const uint64_t kib = std::min<uint64_t>(bytes, kMaxWriterCacheBytes) / 1024;
    ctx.cache_grown = true;
    return writer.db.Exec("PRAGMA cache_size=-" + std::to_string(kib));
  }

  Status BumpLocked(int64_t change_time_ns) {
    ASSIGN_OR_RETURN(SqliteStmt * stmt, writer.Stmt(kBumpGeneration));
    StmtScope scope(stmt);
    RETURN_IF_ERROR(stmt->Bind(change_time_ns));
    RETURN_IF_ERROR(stmt->Run());
    if (sqlite3_changes(writer.db.get()) != 2) {
      return Corruption(db_path + ": modelfs_state lacks its generation or change_time_ns row");
    }
    return Status::Ok();
  }

  Result<bool> NeuronExistsLocked(std::string_view id) {
    ASSIGN_OR_RETURN(SqliteStmt * stmt, writer.Stmt("SELECT 1 FROM neurons WHERE id = ?"));
    StmtScope scope(stmt);
    RETURN_IF_ERROR(stmt->Bind(id));
    return stmt->Step();
  }

  // What a single-row INSERT or UPDATE did.
  enum class RowResult { kWritten, kNoRow, kExists };

  // Steps a bound neuron or synapse statement. kNoRow: an UPDATE found no row; kExists: an INSERT
  // found the id taken. For synapses the foreign keys check that both neurons exist (no lookup of
  // ours per row on the happy path); a failure is explained by looking them up.
  Result<RowResult> StepRow(sqlite3_stmt* st, const char* entity, const std::string& id,
                            const Synapse* synapse) {
    int rc = sqlite3_step(st);
    sqlite3* db = writer.db.get();
    if (rc == SQLITE_DONE) {
      sqlite3_reset(st);
      return sqlite3_changes(db) > 0 ? RowResult::kWritten : RowResult::kNoRow;
    }
    const int ext = sqlite3_extended_errcode(db);
    Status err = SqliteError(db, ext, std::string(entity) + " " + id);
    sqlite3_reset(st);
    if (ext == SQLITE_CONSTRAINT_PRIMARYKEY || ext == SQLITE_CONSTRAINT_UNIQUE) {
      return RowResult::kExists;
    }
    if (ext == SQLITE_CONSTRAINT_FOREIGNKEY && synapse != nullptr) {
      for (const auto& [role, nid] : {std::pair{"source", &synapse->source_neuron_id},
                                      std::pair{"target", &synapse->target_neuron_id}}) {
        ASSIGN_OR_RETURN(bool exists, NeuronExistsLocked(*nid));
        if (!exists) {
          return InvalidArgument("synapse " + id + ": " + role + " neuron " + *nid +
                                 " does not exist");
        }
      }
    }
    return err;
  }

  Result<bool> TableEmptyLocked(const char* table) {
    ASSIGN_OR_RETURN(SqliteStmt * stmt,
                     writer.Stmt(std::string("SELECT 1 FROM ") + table + " LIMIT 1"));
    StmtScope scope(stmt);
    ASSIGN_OR_RETURN(bool row, stmt->Step());
    return !row;
  }

  // A bulk load into an empty table, inside the caller's write transaction: the table's secondary
  // indexes are dropped, and Finish() builds them again once the rows are in. If the transaction
  // rolls back instead, so do the drops.
  class BulkLoad {
   public:
    BulkLoad(Impl& impl, std::span<const IndexDef> indexes)
        : db_(impl.writer.db), indexes_(indexes), impl_(impl) {}

    Status BeginIfEmpty(const char* table) {
      ASSIGN_OR_RETURN(bool empty, impl_.TableEmptyLocked(table));
      if (!empty) return Status::Ok();
      for (const IndexDef& index : indexes_) {
        RETURN_IF_ERROR(db_.Exec(std::string("DROP INDEX IF EXISTS ") + index.name));
      }
      active_ = true;
      return Status::Ok();
    }

    Status Finish() {
      if (!active_) return Status::Ok();
      active_ = false;
      for (const IndexDef& index : indexes_) RETURN_IF_ERROR(db_.Exec(index.create));
      return Status::Ok();
    }

   private:
    SqliteDb& db_;
    std::span<const IndexDef> indexes_;
    Impl& impl_;
    bool active_ = false;
  };

  // Every row is written by single-row INSERTs and UPDATEs by id, never by
  // INSERT ... ON CONFLICT DO UPDATE (and never INSERT OR REPLACE, whose delete would cascade to
  // the neuron's synapses): an upsert counts as a statement that may write several rows, so SQLite
  // keeps a statement journal for it, a copy of every page it touches (64 KiB each) for every row,
  // which made bulk saves 5x slower. kUpsert tries the UPDATE first, then the INSERT; into an empty
  // table (a bulk load) the other way round.
  Status WriteNeuronsLocked(std::span<const Neuron> batch, WriteKind kind, WriteContext& ctx,
                            uint64_t* written = nullptr) {
    return WriteNeuronsLocked(Pointers(batch), kind, ctx, written);
  }
  Status WriteNeuronsLocked(std::vector<const Neuron*> rows, WriteKind kind, WriteContext& ctx,
                            uint64_t* written = nullptr) {
    SqliteStmt* ins = nullptr;
    SqliteStmt* upd = nullptr;
    if (kind != WriteKind::kUpdate) {
      ASSIGN_OR_RETURN(ins, writer.Stmt(kNeuronInsert));
    }
    if (kind != WriteKind::kInsert) {
      ASSIGN_OR_RETURN(upd, writer.Stmt(kNeuronUpdate));
    }
    bool insert_first = kind == WriteKind::kInsert || ctx.into_empty;
    if (kind == WriteKind::kUpsert && rows.size() > 1 && !insert_first) {
      ASSIGN_OR_RETURN(insert_first, TableEmptyLocked("neurons"));
    }
    // Rows are written in id order: new rows then get rowids in id order (so that ORDER BY id reads
    // the table sequentially), the primary key index is appended to, and updates visit the pages
    // in their order instead of at random (2x faster when the table exceeds the page cache).
    SortById(rows);
    // Either statement may hold bindings into the batch: cleared when done.
    std::optional<StmtScope> ins_scope, upd_scope;
    if (ins != nullptr) ins_scope.emplace(ins);
    if (upd != nullptr) upd_scope.emplace(upd);
    auto attempt = [&](SqliteStmt* stmt, const Neuron& n) -> Result<RowResult> {
      int rc = BindNeuron(stmt->get(), n, ctx.scratch, ctx.now);
      if (rc != SQLITE_OK) return SqliteError(writer.db.get(), rc, "neuron " + n.id);
      return StepRow(stmt->get(), "neuron", n.id, nullptr);
    };
    ValidatedAhead<Neuron> validated(rows, ValidateNeuron);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Neuron& n = *rows[i];
      RETURN_IF_ERROR(validated.Wait(i));
      SqliteStmt* first = insert_first ? ins : upd;
      ASSIGN_OR_RETURN(RowResult r, attempt(first, n));
      if (r == RowResult::kExists && kind == WriteKind::kUpsert) {
        ASSIGN_OR_RETURN(r, attempt(upd, n));
      } else if (r == RowResult::kNoRow && kind == WriteKind::kUpsert) {
        ASSIGN_OR_RETURN(r, attempt(ins, n));
      }
      if (r == RowResult::kExists) return AlreadyExists("neuron " + n.id + " already exists");
      if (r == RowResult::kNoRow) return NotFound("neuron " + n.id + ": no such neuron");
      if (written != nullptr) ++*written;
    }
    return Status::Ok();
  }

  // As WriteNeuronsLocked. An update first tries kSynapseUpdateSameEnds, which needs no foreign key
  // check (and so no statement journal); only a synapse whose neurons change takes kSynapseUpdate.
  Status WriteSynapsesLocked(std::span<const Synapse> batch, WriteKind kind, WriteContext& ctx,
                             uint64_t* written = nullptr) {
    return WriteSynapsesLocked(Pointers(batch), kind, ctx, written);
  }
  Status WriteSynapsesLocked(std::vector<const Synapse*> rows, WriteKind kind, WriteContext& ctx,
                             uint64_t* written = nullptr) {
    SqliteStmt* ins = nullptr;
    SqliteStmt* upd_same = nullptr;
    SqliteStmt* upd = nullptr;
    if (kind != WriteKind::kUpdate) {
      ASSIGN_OR_RETURN(ins, writer.Stmt(kSynapseInsert));
    }
    if (kind != WriteKind::kInsert) {
      ASSIGN_OR_RETURN(upd_same, writer.Stmt(kSynapseUpdateSameEnds));
      ASSIGN_OR_RETURN(upd, writer.Stmt(kSynapseUpdate));
    }
    bool insert_first = kind == WriteKind::kInsert || ctx.into_empty;
    if (kind == WriteKind::kUpsert && rows.size() > 1 && !insert_first) {
      ASSIGN_OR_RETURN(insert_first, TableEmptyLocked("synapses"));
    }
    SortById(rows);  // as for neurons
    std::optional<StmtScope> ins_scope, upd_same_scope, upd_scope;
    if (ins != nullptr) ins_scope.emplace(ins);
    if (upd != nullptr) {
      upd_same_scope.emplace(upd_same);
      upd_scope.emplace(upd);
    }
    auto attempt = [&](SqliteStmt* stmt, const Synapse& s) -> Result<RowResult> {
      int rc = BindSynapse(stmt->get(), s, ctx.scratch, ctx.now);
      if (rc != SQLITE_OK) return SqliteError(writer.db.get(), rc, "synapse " + s.id);
      return StepRow(stmt->get(), "synapse", s.id, &s);
    };
    auto update = [&](const Synapse& s) -> Result<RowResult> {
      ASSIGN_OR_RETURN(RowResult r, attempt(upd_same, s));
      if (r == RowResult::kNoRow) {
        ASSIGN_OR_RETURN(r, attempt(upd, s));
      }
      return r;
    };
    ValidatedAhead<Synapse> validated(rows, ValidateSynapse);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Synapse& s = *rows[i];
      RETURN_IF_ERROR(validated.Wait(i));
      RowResult r;
      if (kind == WriteKind::kInsert) {
        ASSIGN_OR_RETURN(r, attempt(ins, s));
      } else if (kind == WriteKind::kUpdate) {
        ASSIGN_OR_RETURN(r, update(s));
      } else if (insert_first) {
        ASSIGN_OR_RETURN(r, attempt(ins, s));
        if (r == RowResult::kExists) {
          ASSIGN_OR_RETURN(r, update(s));
        }
      } else {
        // Not kSynapseUpdate yet: a missing synapse would cost a foreign key check for nothing.
        ASSIGN_OR_RETURN(r, attempt(upd_same, s));
        if (r == RowResult::kNoRow) {
          ASSIGN_OR_RETURN(r, attempt(ins, s));
        }
        if (r == RowResult::kExists) {
          ASSIGN_OR_RETURN(r, attempt(upd, s));
        }
      }
      if (r == RowResult::kExists) return AlreadyExists("synapse " + s.id + " already exists");
      if (r == RowResult::kNoRow) return NotFound("synapse " + s.id + ": no such synapse");
      if (written != nullptr) ++*written;
    }
    return Status::Ok();
  }

  // Deletes neuron id with its synapses; returns whether it existed, and adds the synapses that
  // went with it to *cascaded.
  Result<bool> DeleteNeuronLocked(const std::string& id, uint64_t* cascaded) {
    {
      ASSIGN_OR_RETURN(SqliteStmt * count,
                       writer.Stmt("SELECT COUNT(*) FROM synapses WHERE source_neuron_id = ?1 OR "
                                   "target_neuron_id = ?1"));
      StmtScope scope(count);
      RETURN_IF_ERROR(count->Bind(id));
      ASSIGN_OR_RETURN(bool row, count->Step());
      if (row && cascaded != nullptr) *cascaded += static_cast<uint64_t>(count->ColumnInt64(0));
    }
    ASSIGN_OR_RETURN(SqliteStmt * del, writer.Stmt("DELETE FROM neurons WHERE id = ?"));
    StmtScope scope(del);
    RETURN_IF_ERROR(del->Bind(id));
    RETURN_IF_ERROR(del->Run());
    return sqlite3_changes(writer.db.get()) > 0;
  }

  Result<bool> DeleteSynapseLocked(const std::string& id) {
    ASSIGN_OR_RETURN(SqliteStmt * del, writer.Stmt("DELETE FROM synapses WHERE id = ?"));
    StmtScope scope(del);
    RETURN_IF_ERROR(del->Bind(id));
    RETURN_IF_ERROR(del->Run());
    return sqlite3_changes(writer.db.get()) > 0;
  }

  // ---- Reads ----

  Result<int64_t> StateValue(Conn& c, std::string_view key) {
    ASSIGN_OR_RETURN(SqliteStmt * stmt, c.Stmt("SELECT value FROM modelfs_state WHERE key = ?"));
    StmtScope scope(stmt);
    RETURN_IF_ERROR(stmt->Bind(key));
    ASSIGN_OR_RETURN(bool row, stmt->Step());
    if (!row) return Corruption(db_path + ": modelfs_state has no '" + std::string(key) + "'");
    return stmt->ColumnInt64(0);
  }

  // An export's export_time: the newest modified_at of any neuron or synapse (indexed), so that an
  // export is a function of the graph alone (a restored copy exports the same bytes); the graph's
  // change time when it is empty.
  Result<std::string> ExportTime(Conn& c) {
    ASSIGN_OR_RETURN(SqliteStmt * stmt,
                     c.Stmt("SELECT MAX(t) FROM (SELECT MAX(modified_at) AS t FROM neurons "
                            "UNION ALL SELECT MAX(modified_at) FROM synapses)"));
    StmtScope scope(stmt);
    ASSIGN_OR_RETURN(bool row, stmt->Step());
    if (row && !stmt->ColumnIsNull(0)) return stmt->ColumnText(0);
    ASSIGN_OR_RETURN(int64_t change_time, StateValue(c, "change_time_ns"));
    return FormatIsoTime(change_time);
  }

  // Every neuron of the snapshot of c's open transaction, ordered by id, in batches to sink.
  template <typename Sink>
  Status ScanNeurons(Conn& c, size_t batch_size, Sink&& sink) {
    ASSIGN_OR_RETURN(SqliteStmt * stmt, c.Stmt(std::string(kNeuronSelect) + " ORDER BY id"));
    StmtScope scope(stmt);
    std::vector<Neuron> batch;
    batch.reserve(batch_size);
    RETURN_IF_ERROR(ForEachRow(stmt, [&](sqlite3_stmt* st) -> Status {
      RETURN_IF_ERROR(ReadNeuron(st, true, &batch.emplace_back()));
      if (batch.size() < batch_size) return Status::Ok();
      RETURN_IF_ERROR(sink(batch));
      batch.clear();
      return Status::Ok();
    }));
    return batch.empty() ? Status::Ok() : sink(batch);
  }

  template <typename Sink>
  Status ScanSynapses(Conn& c, size_t batch_size, Sink&& sink) {
    ASSIGN_OR_RETURN(SqliteStmt * stmt, c.Stmt(std::string(kSynapseSelect) + " ORDER BY id"));
    StmtScope scope(stmt);
    std::vector<Synapse> batch;
    batch.reserve(batch_size);
    RETURN_IF_ERROR(ForEachRow(stmt, [&](sqlite3_stmt* st) -> Status {
      RETURN_IF_ERROR(ReadSynapse(st, &batch.emplace_back()));
      if (batch.size() < batch_size) return Status::Ok();
      RETURN_IF_ERROR(sink(batch));
      batch.clear();
      return Status::Ok();
    }));
    return batch.empty() ? Status::Ok() : sink(batch);
  }

  // ---- Backups ----

  std::string BackupPath(const std::string& name) const { return backups_dir + "/" + name; }

  // A fresh path in staging/ (unique across the processes sharing the store).
  std::string StagingPath(std::string_view what) {
    return staging_dir + "/" + std::to_string(::getpid()) + "." +
           std::to_string(staging_counter.fetch_add(1)) + "." + std::string(what);
  }

  // Opens a backup file read-only without touching it (immutable: no -shm, no locks).
  static Result<SqliteDb> OpenBackupReadOnly(const std::string& path) {
    ASSIGN_OR_RETURN(SqliteDb db,
                     SqliteDb::Open("file:" + UriPath(path) + "?mode=ro&immutable=1",
                                    SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX));
    RETURN_IF_ERROR(db.Exec("PRAGMA trusted_schema=OFF"));
    return db;
  }

  Result<BackupInfo> BackupInfoOf(const std::string& name) {
    const std::string path = BackupPath(name);
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      if (errno == ENOENT) return NotFound(QuoteName("backup", name) + ": no such backup");
      return ErrnoError("stat " + path, errno);
    }
    if (!S_ISREG(st.st_mode)) return NotFound(QuoteName("backup", name) + ": not a file");
    BackupInfo info;
    info.name = name;
    info.bytes = static_cast<uint64_t>(st.st_size);
    info.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    // Backups never change in place, so counts are remembered per file identity (the fs asks for
    // them on every lookup; counting a big backup takes milliseconds).
    CountKey key{st.st_ino,          st.st_size,        st.st_mtim.tv_sec,
                 st.st_mtim.tv_nsec, st.st_ctim.tv_sec, st.st_ctim.tv_nsec};
    {
      std::lock_guard lock(counts_mu);
      auto it = backup_counts.find(name);
      if (it != backup_counts.end() && it->second.first == key) {
        info.neurons = it->second.second.first;
        info.synapses = it->second.second.second;
        return info;
      }
    }
    Result<std::pair<uint64_t, uint64_t>> counts = CountBackup(path);
    if (!counts.ok()) {
      // A file that is no graph database (copied into backups/ by hand) is still listed, with no
      // entities; Restore and AddBackup say what is wrong with it.
      counts.status().IgnoreError();
      return info;
    }
    info.neurons = counts->first;
    info.synapses = counts->second;
    std::lock_guard lock(counts_mu);
    backup_counts[name] = {key, *counts};
    return info;
  }

  static Result<std::pair<uint64_t, uint64_t>> CountBackup(const std::string& path) {
    ASSIGN_OR_RETURN(SqliteDb db, OpenBackupReadOnly(path));
    ASSIGN_OR_RETURN(int64_t neurons, QueryInt(db, "SELECT COUNT(*) FROM neurons"));
    ASSIGN_OR_RETURN(int64_t synapses, QueryInt(db, "SELECT COUNT(*) FROM synapses"));
    return std::pair{static_cast<uint64_t>(neurons), static_cast<uint64_t>(synapses)};
  }

  // Turns the database at staged path into a standalone file: rollback journal (a copy of a WAL
  // database says WAL in its header, and would grow a -wal beside it when opened).
  static Status MakeStandalone(SqliteDb& db, const std::string& what) {
    return CheckJournalMode(db, "delete", what);
  }

  // The backup protocol (an error at any step leaves backups/ as it was):
  //  1. Copy one snapshot of the live database, page by page (SQLite's backup API from a read
  //     connection), into a new file in staging/.
  //  2. Switch the copy to the rollback journal: one standalone file.
  //  3. fsync the file.
  //  4. Rename it into backups/ (never over an existing name), then fsync backups/.
  Result<BackupInfo> CreateBackupAs(const std::string& name) {
    const std::string path = BackupPath(name);
    if (::access(path.c_str(), F_OK) == 0) {
      return AlreadyExists(QuoteName("backup", name) + " already exists");
    }
    StagedDb staged(StagingPath(name));
    {
      ASSIGN_OR_RETURN(SqliteDb copy, SqliteDb::Open(staged.path(), kOpenCreate));
      {
        ASSIGN_OR_RETURN(Reader r, GetReader());
        RETURN_IF_ERROR(
            WithContext("backup " + name, SqliteBackupCopy(copy, "main", r->db, "main")));
      }
      RETURN_IF_ERROR(MakeStandalone(copy, staged.path()));
      RETURN_IF_ERROR(copy.Close());
    }
    RETURN_IF_ERROR(Fsync(staged.path()));
    RETURN_IF_ERROR(RenameNoReplace(staged.path(), path));
    staged.Release();
    RETURN_IF_ERROR(SyncDir(backups_dir));
    return BackupInfoOf(name);
  }

  // CreateBackupAs(base + ".db"), or base + "_2.db", "_3.db", ... when taken.
  Result<BackupInfo> CreateBackupUnique(const std::string& base) {
    for (int i = 1;; ++i) {
      std::string name = base + (i == 1 ? "" : "_" + std::to_string(i)) + ".db";
      Result<BackupInfo> info = CreateBackupAs(name);
      if (info.ok() || info.status().code() != StatusCode::kAlreadyExists || i >= 1000) return info;
    }
  }

  // ---- Members ----

  // Constant after Open().
  const std::string dir, db_path, backups_dir, staging_dir;
  const StoreOptions options;
  int64_t page_size = 4096;  // of the live database
  ScopedFd lock_fd;          // flock on dir/LOCK: shared while open

  // Lock order: mu, then readers_mu / counts_mu / ckpt_mu (leaves).
  std::mutex mu;
  Conn writer;  // protected by mu: every write transaction, one at a time

  std::mutex readers_mu;
  std::vector<std::unique_ptr<Conn>> idle_readers;  // protected by readers_mu

  using CountKey = std::tuple<ino_t, off_t, time_t, long, time_t, long>;
  std::mutex counts_mu;
  std::map<std::string, std::pair<CountKey, std::pair<uint64_t, uint64_t>>> backup_counts;

  std::mutex ckpt_mu;
  std::condition_variable ckpt_cv;
  bool ckpt_wanted = false;  // protected by ckpt_mu
  bool ckpt_stop = false;    // protected by ckpt_mu
  std::thread checkpointer;

  std::atomic<uint64_t> staging_counter{0};
};

// ---- NeuronStore ----

NeuronStore::NeuronStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
NeuronStore::~NeuronStore() = default;

Result<std::unique_ptr<NeuronStore>> NeuronStore::Open(const std::string& dir,
                                                       StoreOptions options) {
  if (options.page_size < 512 || options.page_size > 65536 ||
      !std::has_single_bit(static_cast<unsigned>(options.page_size))) {
    return InvalidArgument("page size " + std::to_string(options.page_size) +
                           " is not a power of two from 512 to 65536");
  }
  RETURN_IF_ERROR(MakeDirs(dir + "/backups"));
  RETURN_IF_ERROR(MakeDirs(dir + "/staging"));
  // Several processes may open one store: SQLite arbitrates the database; the lock decides who
  // may clear staging/ (only an opener that finds nobody else, whose files it would delete).
  ASSIGN_OR_RETURN(StoreDirLock dir_lock, LockStoreDir(dir));
  auto impl = std::make_unique<Impl>(dir, options, std::move(dir_lock.fd));
  RETURN_IF_ERROR(WithContext(impl->db_path, impl->OpenWriter()));
  if (dir_lock.exclusive) {
    RETURN_IF_ERROR(ClearDir(impl->staging_dir));
    RETURN_IF_ERROR(ShareStoreDirLock(impl->lock_fd.get(), dir));
  }
  if (options.background_checkpoint) RETURN_IF_ERROR(impl->StartCheckpointer());
  // graph.db and its WAL (made by the migration) must survive a machine crash for Sync() to.
  RETURN_IF_ERROR(SyncDir(dir));
  return std::unique_ptr<NeuronStore>(new NeuronStore(std::move(impl)));
}

const std::string& NeuronStore::dir() const { return impl_->dir; }

// ---- Neurons ----

Status NeuronStore::CreateNeuron(const Neuron& n) {
  return impl_->Write([&](Impl::WriteContext& ctx) {
    return impl_->WriteNeuronsLocked({&n, 1}, WriteKind::kInsert, ctx);
  });
}

Status NeuronStore::UpdateNeuron(const Neuron& n) {
  return impl_->Write([&](Impl::WriteContext& ctx) {
    return impl_->WriteNeuronsLocked({&n, 1}, WriteKind::kUpdate, ctx);
  });
}

Status NeuronStore::PutNeuron(const Neuron& n) {
  return impl_->Write([&](Impl::WriteContext& ctx) {
    return impl_->WriteNeuronsLocked({&n, 1}, WriteKind::kUpsert, ctx);
  });
}

Status NeuronStore::BatchCreateNeurons(const std::vector<Neuron>& batch) {
  return impl_->Write([&](Impl::WriteContext& ctx) {
    ctx.changed = !batch.empty();
    return impl_->WriteNeuronsLocked(batch, WriteKind::kInsert, ctx);
  });
}

Status NeuronStore::BatchUpdateNeurons(const std::vector<Neuron>& batch) {
  return impl_->Write([&](Impl::WriteContext& ctx) {
    ctx.changed = !batch.empty();
    return impl_->WriteNeuronsLocked(batch, WriteKind::kUpdate, ctx);
  });
}

Status NeuronStore::DeleteNeuron(const std::string& id, uint64_t* cascaded) {
  uint64_t n = 0;
  Status st = impl_->Write([&](Impl::WriteContext&) -> Status {
    ASSIGN_OR_RETURN(bool existed, impl_->DeleteNeuronLocked(id, &n));
    if (!existed) return NotFound("neuron " + id + ": no such neuron");
    return Status::Ok();
  });
  if (st.ok() && cascaded != nullptr) *cascaded += n;
  return st;
}

Result<Neuron> NeuronStore::GetNeuron(const std::string& id) {
  ASSIGN_OR_RETURN(Impl::Reader r, impl_->GetReader());
  ASSIGN_OR_RETURN(SqliteStmt * stmt, r->Stmt(std::string(kNeuronSelect) + " WHERE id = ?"));
  StmtScope scope(stmt);
  RETURN_IF_ERROR(stmt->Bind(id));
  ASSIGN_OR_RETURN(bool row, stmt->Step());
  if (!row) return NotFound("neuron " + id + ": no such neuron");
  Neuron n;
  RETURN_IF_ERROR(ReadNeuron(stmt->get(), true, &n));
  return n;
}

Result<Page<Neuron>> NeuronStore::ListNeurons(const NeuronQuery& q) {
  std::string sql = q.with_vectors ? kNeuronSelect : kNeuronSelectNoVector;
  sql += " WHERE id > ?1";
  if (q.type) sql += " AND neuron_type = ?2";
  if (q.modified_since) sql += " AND modified_at > ?3";
  sql += " ORDER BY id LIMIT ?4";
  ASSIGN_OR_RETURN(Impl::Reader r, impl_->GetReader());
  ASSIGN_OR_RETURN(SqliteStmt * stmt, r->Stmt(sql));
  StmtScope scope(stmt);
  RETURN_IF_ERROR(stmt->BindText(1, q.page.after));
  if (q.type) RETURN_IF_ERROR(stmt->BindText(2, *q.type));
  if (q.modified_since) RETURN_IF_ERROR(stmt->BindText(3, *q.modified_since));
  // One more than asked tells whether there is a next page.
  RETURN_IF_ERROR(
      stmt->BindInt64(4, q.page.limit == 0 ? -1 : static_cast<int64_t>(q.page.limit) + 1));
  Page<Neuron> page;
  RETURN_IF_ERROR(ForEachRow(stmt, [&](sqlite3_stmt* st) -> Status {
    return ReadNeuron(st, q.with_vectors, &page.items.emplace_back());
  }));
  if (q.page.limit != 0 && page.items.size() > q.page.limit) {
    page.items.pop_back();
    page.next_after = page.items.back().id;
  }
  return page;
}

Result<std::vector<std::pair<std::string, uint64_t>>> NeuronStore::NeuronTypes() {
  ASSIGN_OR_RETURN(Impl::Reader r, impl_->GetReader());
  ASSIGN_OR_RETURN(SqliteStmt * stmt, r->Stmt("SELECT neuron_type, COUNT(*) FROM neurons "
                                              "GROUP BY neuron_type ORDER BY neuron_type"));
  StmtScope scope(stmt);
  std::vector<std::pair<std::string, uint64_t>> types;
  RETURN_IF_ERROR(ForEachRow(stmt, [&](sqlite3_stmt* st) -> Status {
    types.emplace_back(std::string(ColText(st, 0)),
                       static_cast<uint64_t>(sqlite3_column_int64(st, 1)));
    return Status::Ok();
  }));
  return types;
}

// ---- Synapses ----

Status NeuronStore::CreateSynapse(const Synapse& s) {
  return impl_->Write([&](Impl::WriteContext& ctx) {
    return impl_->WriteSynapsesLocked({&s, 1}, WriteKind::kInsert, ctx);
  });
}

Status NeuronStore::UpdateSynapse(const Synapse& s) {
  return impl_->Write([&](Impl::WriteContext& ctx) {
    return impl_->WriteSynapsesLocked({&s, 1}, WriteKind::kUpdate, ctx);
  });
}

Status NeuronStore::PutSynapse(const Synapse& s) {
  return impl_->Write([&](Impl::WriteContext& ctx) {
    return impl_->WriteSynapsesLocked({&s, 1}, WriteKind::kUpsert, ctx);
  });
}

Status NeuronStore::BatchCreateSynapses(const std::vector<Synapse>& batch) {
  return impl_->Write([&](Impl::WriteContext& ctx) {
    ctx.changed = !batch.empty();
    return impl_->WriteSynapsesLocked(batch, WriteKind::kInsert, ctx);
  });
}

Status NeuronStore::BatchUpdateSynapses(const std::vector<Synapse>& batch) {
  return impl_->Write([&](Impl::WriteContext& ctx) {
    ctx.changed = !batch.empty();
    return impl_->WriteSynapsesLocked(batch, WriteKind::kUpdate, ctx);
  });
}

Status NeuronStore::DeleteSynapse(const std::string& id) {
  return impl_->Write([&](Impl::WriteContext&) -> Status {
    ASSIGN_OR_RETURN(bool existed, impl_->DeleteSynapseLocked(id));
    if (!existed) return NotFound("synapse " + id + ": no such synapse");
    return Status::Ok();
  });
}

Result<Synapse> NeuronStore::GetSynapse(const std::string& id) {
  ASSIGN_OR_RETURN(Impl::Reader r, impl_->GetReader());
  ASSIGN_OR_RETURN(SqliteStmt * stmt, r->Stmt(std::string(kSynapseSelect) + " WHERE id = ?"));
  StmtScope scope(stmt);
  RETURN_IF_ERROR(stmt->Bind(id));
  ASSIGN_OR_RETURN(bool row, stmt->Step());
  if (!row) return NotFound("synapse " + id + ": no such synapse");
  Synapse s;
  RETURN_IF_ERROR(ReadSynapse(stmt->get(), &s));
  return s;
}

Result<Page<Synapse>> NeuronStore::ListSynapses(const SynapseQuery& q) {
  std::string sql = std::string(kSynapseSelect) + " WHERE id > ?1";
  if (q.source) sql += " AND source_neuron_id = ?2";
  if (q.target) sql += " AND target_neuron_id = ?3";
  if (q.modified_since) sql += " AND modified_at > ?4";
  sql += " ORDER BY id LIMIT ?5";
  ASSIGN_OR_RETURN(Impl::Reader r, impl_->GetReader());
  ASSIGN_OR_RETURN(SqliteStmt * stmt, r->Stmt(sql));
  StmtScope scope(stmt);
  RETURN_IF_ERROR(stmt->BindText(1, q.page.after));
  if (q.source) RETURN_IF_ERROR(stmt->BindText(2, *q.source));
  if (q.target) RETURN_IF_ERROR(stmt->BindText(3, *q.target));
  if (q.modified_since) RETURN_IF_ERROR(stmt->BindText(4, *q.modified_since));
  RETURN_IF_ERROR(
      stmt->BindInt64(5, q.page.limit == 0 ? -1 : static_cast<int64_t>(q.page.limit) + 1));
  Page<Synapse> page;
  RETURN_IF_ERROR(ForEachRow(stmt, [&](sqlite3_stmt* st) -> Status {
    return ReadSynapse(st, &page.items.emplace_back());
  }));
  if (q.page.limit != 0 && page.items.size() > q.page.limit) {
    page.items.pop_back();
    page.next_after = page.items.back().id;
  }
  return page;
}

Result<std::vector<std::string>> NeuronStore::SynapseEndpoints(bool sources) {
  ASSIGN_OR_RETURN(Impl::Reader r, impl_->GetReader());
  ASSIGN_OR_RETURN(SqliteStmt * stmt,
                   r->Stmt(sources ? "SELECT DISTINCT source_neuron_id FROM synapses ORDER BY 1"
                                   : "SELECT DISTINCT target_neuron_id FROM synapses ORDER BY 1"));
  StmtScope scope(stmt);
  std::vector<std::string> ids;
  RETURN_IF_ERROR(ForEachRow(stmt, [&](sqlite3_stmt* st) -> Status {
    ids.emplace_back(ColText(st, 0));
    return Status::Ok();
  }));
  return ids;
}

Result<uint64_t> NeuronStore::PruneWeakSynapses(double threshold) {
  if (std::isnan(threshold)) return InvalidArgument("prune threshold is NaN");
  uint64_t deleted = 0;
  RETURN_IF_ERROR(impl_->Write([&](Impl::WriteContext& ctx) -> Status {
    ASSIGN_OR_RETURN(int64_t n,
                     impl_->writer.db.Run("DELETE FROM synapses WHERE abs(weight) < ?", threshold));
    deleted = static_cast<uint64_t>(n);
    ctx.changed = n > 0;
    return Status::Ok();
  }));
  return deleted;
}

// ---- The whole graph ----

Result<SaveCounts> NeuronStore::SaveAll(const Graph& g) {
  SaveCounts counts;
  RETURN_IF_ERROR(impl_->Write([&](Impl::WriteContext& ctx) -> Status {
    ctx.changed = !g.neurons.empty() || !g.synapses.empty();
    // A big save gets a page cache that holds what it writes: the index builds of a bulk load and
    // updates then read pages from memory, not back from the WAL. The graph is in memory already;
    // the cache shrinks back after the commit (WriteLocked).
    uint64_t bytes = 0;
    for (const Neuron& n : g.neurons) bytes += n.vector.size() * sizeof(float) + 400;
    bytes += g.synapses.size() * 300;
    if (bytes > kWriterCacheBytes) RETURN_IF_ERROR(impl_->GrowCacheLocked(ctx, bytes + bytes / 4));
    Impl::BulkLoad neurons_bulk(*impl_, kNeuronIndexes), synapses_bulk(*impl_, kSynapseIndexes);
    if (g.neurons.size() >= kBulkLoadRows) RETURN_IF_ERROR(neurons_bulk.BeginIfEmpty("neurons"));
    if (g.synapses.size() >= kBulkLoadRows) RETURN_IF_ERROR(synapses_bulk.BeginIfEmpty("synapses"));
    RETURN_IF_ERROR(
        impl_->WriteNeuronsLocked(g.neurons, WriteKind::kUpsert, ctx, &counts.neurons_saved));
    RETURN_IF_ERROR(neurons_bulk.Finish());
    RETURN_IF_ERROR(
        impl_->WriteSynapsesLocked(g.synapses, WriteKind::kUpsert, ctx, &counts.synapses_saved));
    return synapses_bulk.Finish();
  }));
  return counts;
}

Result<SaveCounts> NeuronStore::SaveIncremental(const Graph& g, ChangeTracker& tracker) {
  SaveCounts counts;
  RETURN_IF_ERROR(impl_->Write([&](Impl::WriteContext& ctx) -> Status {
    ctx.changed = tracker.HasChanges();
    // Modified entities that g does not hold are skipped (the original looks them up in the
    // collections it is given). Saves come before deletions, so that a modified synapse of a
    // deleted neuron goes with it instead of failing its foreign key.
    std::vector<const Neuron*> neurons;
    for (const Neuron& n : g.neurons) {
      if (tracker.modified_neurons().count(n.id) != 0) neurons.push_back(&n);
    }
    RETURN_IF_ERROR(impl_->WriteNeuronsLocked(std::move(neurons), WriteKind::kUpsert, ctx,
                                              &counts.neurons_saved));
    std::vector<const Synapse*> synapses;
    for (const Synapse& s : g.synapses) {
      if (tracker.modified_synapses().count(s.id) != 0) synapses.push_back(&s);
    }
    RETURN_IF_ERROR(impl_->WriteSynapsesLocked(std::move(synapses), WriteKind::kUpsert, ctx,
                                               &counts.synapses_saved));
    for (const std::string& id : tracker.deleted_synapses()) {
      ASSIGN_OR_RETURN(bool existed, impl_->DeleteSynapseLocked(id));
      counts.synapses_deleted += existed ? 1 : 0;
    }
    for (const std::string& id : tracker.deleted_neurons()) {
      ASSIGN_OR_RETURN(bool existed, impl_->DeleteNeuronLocked(id, &counts.synapses_deleted));
      counts.neurons_deleted += existed ? 1 : 0;
    }
    return Status::Ok();
  }));
  tracker.Clear();
  return counts;
}

Result<Graph> NeuronStore::LoadAll() {
  // Two read connections, each scanning half of every table by rowid on its own core: building the
  // entities (vectors, strings, JSON values) costs twice what SQLite's scan does. Both must read one
  // snapshot: their read transactions begin while this process can commit nothing (the writer's
  // mutex), and the generation each sees proves it (a write of another process in between shows
  // as two generations: then the halves start again).
  ASSIGN_OR_RETURN(Impl::Reader a, impl_->GetReader());
  ASSIGN_OR_RETURN(Impl::Reader b, impl_->GetReader());
  std::optional<SqliteTransaction> ta, tb;
  for (int attempt = 0;; ++attempt) {
    std::lock_guard no_writes(impl_->mu);
    ASSIGN_OR_RETURN(SqliteTransaction t1,
                     SqliteTransaction::Begin(a->db, SqliteTransaction::Mode::kDeferred));
    ASSIGN_OR_RETURN(SqliteTransaction t2,
                     SqliteTransaction::Begin(b->db, SqliteTransaction::Mode::kDeferred));
    ASSIGN_OR_RETURN(int64_t g1, impl_->StateValue(*a, "generation"));
    ASSIGN_OR_RETURN(int64_t g2, impl_->StateValue(*b, "generation"));
    if (g1 == g2) {
      ta.emplace(std::move(t1));
      tb.emplace(std::move(t2));
      break;
    }
    if (attempt == 10) return IOError("LoadAll: the database kept changing under its readers");
  }
  // Rows in rowid order (sequential pages; ORDER BY id would visit them in the id index's order),
  // sorted here when they are not in id order already, as they are after a bulk save.
  auto scan = [](Conn& c, const char* select, int64_t lo, int64_t hi, auto read,
                 auto* out) -> Status {
    const std::string sql = std::string(select) + " WHERE rowid BETWEEN ?1 AND ?2";
    ASSIGN_OR_RETURN(SqliteStmt * stmt, c.Stmt(sql));
    StmtScope scope(stmt);
    RETURN_IF_ERROR(stmt->Bind(lo, hi));
    return ForEachRow(stmt, [&](sqlite3_stmt* st) { return read(st, &out->emplace_back()); });
  };
  auto halves = [&](const char* table, const char* select, auto read, auto* all) -> Status {
    ASSIGN_OR_RETURN(int64_t count, QueryInt(a->db, std::string("SELECT COUNT(*) FROM ") + table));
    ASSIGN_OR_RETURN(int64_t max_rowid,
                     QueryInt(a->db, std::string("SELECT IFNULL(MAX(rowid), 0) FROM ") + table));
    const int64_t mid = max_rowid / 2;
    std::remove_reference_t<decltype(*all)> upper;
    upper.reserve(static_cast<size_t>(count / 2 + 16));
    all->reserve(static_cast<size_t>(count));
    Status upper_status;
    std::thread other([&] { upper_status = scan(*b, select, mid + 1, max_rowid, read, &upper); });
    Status lower_status = scan(*a, select, std::numeric_limits<int64_t>::min(), mid, read, all);
    other.join();
    RETURN_IF_ERROR(lower_status);
    RETURN_IF_ERROR(upper_status);
    std::move(upper.begin(), upper.end(), std::back_inserter(*all));
    SortById(*all);
    return Status::Ok();
  };
  Graph g;
  RETURN_IF_ERROR(halves("neurons", kNeuronSelect,
                         [](sqlite3_stmt* st, Neuron* n) { return ReadNeuron(st, true, n); },
                         &g.neurons));
  RETURN_IF_ERROR(halves("synapses", kSynapseSelect, ReadSynapse, &g.synapses));
  RETURN_IF_ERROR(ta->Commit());
  RETURN_IF_ERROR(tb->Commit());
  return g;
}

Result<ExportCounts> NeuronStore::Export(int fd) {
  ASSIGN_OR_RETURN(Impl::Reader r, impl_->GetReader());
  // One read snapshot for the export time, the neurons and the synapses.
  ASSIGN_OR_RETURN(SqliteTransaction txn,
                   SqliteTransaction::Begin(r->db, SqliteTransaction::Mode::kDeferred));
  ASSIGN_OR_RETURN(std::string export_time, impl_->ExportTime(*r));
  ExportWriter writer(fd, export_time);
  RETURN_IF_ERROR(writer.Begin());
  RETURN_IF_ERROR(impl_->ScanNeurons(
      *r, kExportBatch, [&](std::vector<Neuron>& batch) { return writer.AddNeurons(batch); }));
  RETURN_IF_ERROR(impl_->ScanSynapses(
      *r, kExportBatch, [&](std::vector<Synapse>& batch) { return writer.AddSynapses(batch); }));
  RETURN_IF_ERROR(txn.Commit());
  return writer.Finish();
}

Result<ExportCounts> NeuronStore::Import(int fd, ImportMode mode,
                                         std::optional<int64_t> change_time_ns,
                                         bool allow_unverified) {
  ExportCounts counts;
  // One transaction: ReadExport hands over entities as it parses them and checks the checksum
  // only at the end, so everything written before an error is rolled back with it.
  RETURN_IF_ERROR(impl_->Write(
      [&](Impl::WriteContext& ctx) -> Status {
        Impl::BulkLoad neurons_bulk(*impl_, kNeuronIndexes), synapses_bulk(*impl_, kSynapseIndexes);
        if (mode == ImportMode::kReplace) {
          RETURN_IF_ERROR(impl_->writer.db.Exec("DELETE FROM synapses; DELETE FROM neurons"));
          ctx.into_empty = true;
          RETURN_IF_ERROR(neurons_bulk.BeginIfEmpty("neurons"));
          RETURN_IF_ERROR(synapses_bulk.BeginIfEmpty("synapses"));
        }
        ImportCallbacks callbacks;
        callbacks.neurons = [&](std::vector<Neuron>&& batch) {
          return impl_->WriteNeuronsLocked(batch, WriteKind::kUpsert, ctx);
        };
        callbacks.synapses = [&](std::vector<Synapse>&& batch) {
          return impl_->WriteSynapsesLocked(batch, WriteKind::kUpsert, ctx);
        };
        Result<ExportCounts> read = ReadExport(fd, callbacks, allow_unverified);
        if (!read.ok()) return read.status();
        counts = std::move(read).value();
        RETURN_IF_ERROR(neurons_bulk.Finish());
        return synapses_bulk.Finish();
      },
      change_time_ns));
  return counts;
}

Result<IntegrityReport> NeuronStore::Verify() {
  ASSIGN_OR_RETURN(Impl::Reader r, impl_->GetReader());
  ASSIGN_OR_RETURN(SqliteTransaction txn,
                   SqliteTransaction::Begin(r->db, SqliteTransaction::Mode::kDeferred));
  IntegrityReport rep;
  ASSIGN_OR_RETURN(int64_t sources,
                   QueryInt(r->db,
                            "SELECT COUNT(*) FROM synapses s LEFT JOIN neurons n ON "
                            "s.source_neuron_id = n.id WHERE n.id IS NULL"));
  ASSIGN_OR_RETURN(int64_t targets,
                   QueryInt(r->db,
                            "SELECT COUNT(*) FROM synapses s LEFT JOIN neurons n ON "
                            "s.target_neuron_id = n.id WHERE n.id IS NULL"));
  ASSIGN_OR_RETURN(int64_t weights,
                   QueryInt(r->db,
                            "SELECT COUNT(*) FROM synapses WHERE weight IS NULL OR "
                            "weight < -1.0 OR weight > 1.0"));
  ASSIGN_OR_RETURN(int64_t vectors, QueryInt(r->db,
                                             "SELECT COUNT(*) FROM neurons WHERE NOT "
                                             "modelfs_vector_ok(vector)"));
  ASSIGN_OR_RETURN(rep.sqlite_check, IntegrityCheck(r->db));
  ASSIGN_OR_RETURN(uint64_t fk, ForeignKeyViolations(r->db));
  RETURN_IF_ERROR(txn.Commit());
  rep.orphaned_sources = static_cast<uint64_t>(sources);
  rep.orphaned_targets = static_cast<uint64_t>(targets);
  rep.invalid_weights = static_cast<uint64_t>(weights);
  rep.bad_vectors = static_cast<uint64_t>(vectors);
  // The original's lines first, then the checks it did not make.
  if (sources > 0) {
    rep.issues.push_back(std::to_string(sources) + " synapses with missing source neurons");
  }
  if (targets > 0) {
    rep.issues.push_back(std::to_string(targets) + " synapses with missing target neurons");
  }
  if (weights > 0) rep.issues.push_back(std::to_string(weights) + " synapses with invalid weights");
  if (vectors > 0) rep.issues.push_back(std::to_string(vectors) + " neurons with invalid vectors");
  if (rep.sqlite_check != "ok") rep.issues.push_back("integrity_check: " + rep.sqlite_check);
  // Every orphan is also a foreign key violation; only others are worth their own line.
  if (fk > rep.orphaned_sources + rep.orphaned_targets) {
    rep.issues.push_back(std::to_string(fk) + " foreign key violations");
  }
  rep.valid = rep.issues.empty();
  return rep;
}

Result<StoreStats> NeuronStore::Stats() {
  ASSIGN_OR_RETURN(Impl::Reader r, impl_->GetReader());
  ASSIGN_OR_RETURN(SqliteTransaction txn,
                   SqliteTransaction::Begin(r->db, SqliteTransaction::Mode::kDeferred));
  StoreStats s;
  ASSIGN_OR_RETURN(int64_t neurons, QueryInt(r->db, "SELECT COUNT(*) FROM neurons"));
  ASSIGN_OR_RETURN(int64_t synapses, QueryInt(r->db, "SELECT COUNT(*) FROM synapses"));
  ASSIGN_OR_RETURN(int64_t pages, QueryInt(r->db, "PRAGMA page_count"));
  ASSIGN_OR_RETURN(int64_t page_size, QueryInt(r->db, "PRAGMA page_size"));
  {
    ASSIGN_OR_RETURN(SqliteStmt stmt, r->db.Prepare("SELECT neuron_type, COUNT(*) FROM neurons "
                                                    "GROUP BY neuron_type ORDER BY neuron_type"));
    for (;;) {
      ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      s.neurons_by_type.emplace_back(stmt.ColumnText(0),
                                     static_cast<uint64_t>(stmt.ColumnInt64(1)));
    }
  }
  ASSIGN_OR_RETURN(s.generation, impl_->StateValue(*r, "generation"));
  ASSIGN_OR_RETURN(s.change_time_ns, impl_->StateValue(*r, "change_time_ns"));
  ASSIGN_OR_RETURN(s.schema_version, SchemaVersion(r->db));
  RETURN_IF_ERROR(txn.Commit());
  s.neurons = static_cast<uint64_t>(neurons);
  s.synapses = static_cast<uint64_t>(synapses);
  s.database_bytes = static_cast<uint64_t>(pages * page_size);
  return s;
}

// ---- Backups ----

std::string NeuronStore::BackupPath(const std::string& name) const {
  return impl_->BackupPath(name);
}

Result<BackupInfo> NeuronStore::CreateBackup(const std::string& name) {
  if (name.empty()) {
    // The original's default name. Two in one second get _2, _3, ...: a caller that names no
    // backup wants one, not an error.
    return impl_->CreateBackupUnique("neuron_system_backup_" + BackupStamp(NowNanos()));
  }
  RETURN_IF_ERROR(ValidateBackupName(name));
  return impl_->CreateBackupAs(name);
}

Result<BackupInfo> NeuronStore::AddBackup(const std::string& name, int fd,
                                          std::optional<int64_t> mtime_ns) {
  RETURN_IF_ERROR(ValidateBackupName(name));
  const std::string path = impl_->BackupPath(name);
  if (::access(path.c_str(), F_OK) == 0) {
    return AlreadyExists(QuoteName("backup", name) + " already exists");
  }
  const std::string what = QuoteName("backup", name);
  // The adoption protocol (nothing appears in backups/ unless every step succeeds):
  //  1. Copy the file into staging/ (the caller's fd may be a file it goes on changing).
  //  2. Check it: a SQLite header, then (opened as a database) integrity_check "ok" and the
  //     neurons and synapses tables. A copy of a WAL database becomes a standalone file.
  //  3. Set its mtime, fsync it, rename it into backups/ (never over an existing name), fsync
  //     backups/.
  StagedDb staged(impl_->StagingPath(name));
  {
    ASSIGN_OR_RETURN(ScopedFd out,
                     OpenFile(staged.path(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC));
    ASSIGN_OR_RETURN(uint64_t size, FileSize(fd));
    RETURN_IF_ERROR(CopyRange(fd, 0, out.get(), 0, size));
    char header[16] = {};
    ASSIGN_OR_RETURN(size_t got, PreadFull(fd, header, sizeof(header), 0));
    if (got < sizeof(header) || memcmp(header, "SQLite format 3", 16) != 0) {
      return InvalidArgument(what + ": not a SQLite database");
    }
    RETURN_IF_ERROR(out.Close());
  }
  {
    // What SQLite says about a foreign file that is no database, or a damaged one (Corruption),
    // means: not a backup. Other errors (I/O) are what they are.
    auto refused = [&](const Status& st) {
      return st.code() == StatusCode::kCorruption || st.code() == StatusCode::kInvalidArgument
                 ? InvalidArgument(what + ": " + st.message())
                 : WithContext(what, st);
    };
    Result<SqliteDb> opened = SqliteDb::Open(staged.path(), kOpenExisting);
    if (!opened.ok()) return refused(opened.status());
    SqliteDb& db = *opened;
    auto check = [&]() -> Status {
      RETURN_IF_ERROR(db.Exec("PRAGMA trusted_schema=OFF"));
      RETURN_IF_ERROR(Impl::MakeStandalone(db, staged.path()));
      ASSIGN_OR_RETURN(std::string integrity, IntegrityCheck(db));
      if (integrity != "ok") return InvalidArgument("integrity_check: " + integrity);
      ASSIGN_OR_RETURN(int64_t tables,
                       QueryInt(db,
                                "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND "
                                "name IN ('neurons', 'synapses')"));
      if (tables != 2) return InvalidArgument("no neurons and synapses tables");
      return Status::Ok();
    };
    if (Status st = check(); !st.ok()) return refused(st);
    RETURN_IF_ERROR(db.Close());
  }
  if (mtime_ns) {
    struct timespec times[2];
    times[0].tv_nsec = UTIME_OMIT;
    times[1].tv_sec = static_cast<time_t>(*mtime_ns / 1000000000);
    times[1].tv_nsec = static_cast<long>(*mtime_ns % 1000000000);
    if (times[1].tv_nsec < 0) {
      times[1].tv_nsec += 1000000000;
      times[1].tv_sec -= 1;
    }
    if (::utimensat(AT_FDCWD, staged.path().c_str(), times, 0) != 0) {
      return ErrnoError("utimensat " + staged.path(), errno);
    }
  }
  RETURN_IF_ERROR(Fsync(staged.path()));
  RETURN_IF_ERROR(RenameNoReplace(staged.path(), path));
  staged.Release();
  RETURN_IF_ERROR(SyncDir(impl_->backups_dir));
  return impl_->BackupInfoOf(name);
}

Result<std::vector<BackupInfo>> NeuronStore::ListBackups() {
  std::vector<std::string> names;
  {
    DIR* d = ::opendir(impl_->backups_dir.c_str());
    if (d == nullptr) return ErrnoError("opendir " + impl_->backups_dir, errno);
    errno = 0;
    while (struct dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (ValidateBackupName(name).ok()) names.push_back(std::move(name));
      errno = 0;
    }
    int err = errno;
    ::closedir(d);  // a read-only directory stream: its close error loses nothing
    if (err != 0) return ErrnoError("readdir " + impl_->backups_dir, err);
  }
  std::sort(names.begin(), names.end());
  std::vector<BackupInfo> out;
  for (const std::string& name : names) {
    Result<BackupInfo> info = impl_->BackupInfoOf(name);
    if (!info.ok()) {
      if (info.status().code() == StatusCode::kNotFound) continue;  // removed meanwhile
      return info.status();
    }
    out.push_back(std::move(info).value());
  }
  return out;
}

Result<BackupInfo> NeuronStore::GetBackup(const std::string& name) {
  RETURN_IF_ERROR(ValidateBackupName(name));
  return impl_->BackupInfoOf(name);
}

Status NeuronStore::RemoveBackup(const std::string& name) {
  RETURN_IF_ERROR(ValidateBackupName(name));
  const std::string path = impl_->BackupPath(name);
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return NotFound(QuoteName("backup", name) + ": no such backup");
    return ErrnoError("unlink " + path, errno);
  }
  return SyncDir(impl_->backups_dir);
}

Status NeuronStore::SetBackupMtime(const std::string& name, int64_t mtime_ns) {
  RETURN_IF_ERROR(ValidateBackupName(name));
  const std::string path = impl_->BackupPath(name);
  struct timespec times[2];
  times[0].tv_nsec = UTIME_OMIT;
  times[1].tv_sec = static_cast<time_t>(mtime_ns / 1000000000);
  times[1].tv_nsec = static_cast<long>(mtime_ns % 1000000000);
  if (times[1].tv_nsec < 0) {
    times[1].tv_nsec += 1000000000;
    times[1].tv_sec -= 1;
  }
  if (::utimensat(AT_FDCWD, path.c_str(), times, 0) != 0) {
    if (errno == ENOENT) return NotFound(QuoteName("backup", name) + ": no such backup");
    return ErrnoError("utimensat " + path, errno);
  }
  return Status::Ok();
}

Result<BackupInfo> NeuronStore::Restore(const std::string& name) {
  RETURN_IF_ERROR(ValidateBackupName(name));
  const std::string what = QuoteName("backup", name);
  RETURN_IF_ERROR(impl_->BackupInfoOf(name).status());  // NotFound before any work
  // Writers wait for the whole restore, so the safety copy holds exactly the graph it replaces.
  std::lock_guard lock(impl_->mu);
  // The restore protocol (any failure before step 4 leaves the live graph untouched):
  //  1. The safety copy of the current graph: backups/pre_restore_<time>.db.
  //  2. Copy the backup into staging/ with the backup API, as a standalone file with the live
  //     database's page size (the backup API cannot copy into a WAL database of another page
  //     size), migrated to the current schema; integrity_check and foreign_key_check must pass.
  //  3. In the copy: generation = live generation + 1 (never a value the live store had; readers
  //     must not see a new graph under an old cache key), change time = now.
  //  4. Copy the copy into the live database with the backup API: one write transaction; other
  //     connections see the old graph or the new one.
  ASSIGN_OR_RETURN(BackupInfo safety,
                   impl_->CreateBackupUnique("pre_restore_" + BackupStamp(NowNanos())));
  StagedDb staged(impl_->StagingPath("restore.db"));
  ASSIGN_OR_RETURN(SqliteDb copy, SqliteDb::Open(staged.path(), kOpenCreate));
  auto prepare = [&]() -> Status {
    {
      ASSIGN_OR_RETURN(SqliteDb src, Impl::OpenBackupReadOnly(impl_->BackupPath(name)));
      RETURN_IF_ERROR(SqliteBackupCopy(copy, "main", src, "main"));
    }
    RETURN_IF_ERROR(copy.Exec("PRAGMA trusted_schema=OFF"));
    RETURN_IF_ERROR(Impl::MakeStandalone(copy, staged.path()));
    ASSIGN_OR_RETURN(int64_t page_size, QueryInt(copy, "PRAGMA page_size"));
    if (page_size != impl_->page_size) {
      RETURN_IF_ERROR(copy.Exec("PRAGMA page_size=" + std::to_string(impl_->page_size)));
      RETURN_IF_ERROR(copy.Exec("VACUUM"));
    }
    RETURN_IF_ERROR(Migrate(copy, what));
    ASSIGN_OR_RETURN(std::string integrity, IntegrityCheck(copy));
    if (integrity != "ok") return Corruption("integrity_check: " + integrity);
    ASSIGN_OR_RETURN(uint64_t fk, ForeignKeyViolations(copy));
    if (fk != 0) return Corruption(std::to_string(fk) + " foreign key violations");
    return Status::Ok();
  };
  RETURN_IF_ERROR(WithContext("restore " + what, prepare()));
  // 3. No writer of this process can run now (mu); another process writing between this read and
  // step 4 could reuse old + 1, which the CLI avoids by refusing a store the daemon has open.
  ASSIGN_OR_RETURN(int64_t old_generation, impl_->StateValue(impl_->writer, "generation"));
  RETURN_IF_ERROR(copy.Run("INSERT INTO modelfs_state(key, value) VALUES('generation', ?1), "
                           "('change_time_ns', ?2) ON CONFLICT(key) DO UPDATE SET value = "
                           "excluded.value",
                           old_generation + 1, NowNanos())
                      .status());
  // 4.
  RETURN_IF_ERROR(
      WithContext("restore " + what, SqliteBackupCopy(impl_->writer.db, "main", copy, "main")));
  return safety;
}

// ---- Change time and generation ----

Result<int64_t> NeuronStore::Generation() {
  ASSIGN_OR_RETURN(Impl::Reader r, impl_->GetReader());
  return impl_->StateValue(*r, "generation");
}

Result<std::string> NeuronStore::ExportTime() {
  ASSIGN_OR_RETURN(Impl::Reader r, impl_->GetReader());
  return impl_->ExportTime(*r);
}

Result<int64_t> NeuronStore::ChangeTimeNs() {
  ASSIGN_OR_RETURN(Impl::Reader r, impl_->GetReader());
  return impl_->StateValue(*r, "change_time_ns");
}

Status NeuronStore::SetChangeTime(int64_t ns) {
  return impl_->Write([](Impl::WriteContext&) { return Status::Ok(); }, ns);
}

Status NeuronStore::Sync() {
  std::lock_guard lock(impl_->mu);
  SqliteDb& db = impl_->writer.db;
  // 1. Checkpoint everything into graph.db and empty the WAL. It waits for readers still on an
  //    old snapshot for at most a second; what it cannot copy stays in the WAL.
  // 2. fsync the WAL (whatever is left in it is then durable too), graph.db and the directory:
  //    at synchronous=NORMAL a checkpoint syncs only what it copied.
  RETURN_IF_ERROR(db.Exec("PRAGMA busy_timeout=1000"));
  // A checkpoint that could not finish (busy) still answers SQLITE_OK, with busy = 1 in its row.
  Status st = db.Exec("PRAGMA wal_checkpoint(TRUNCATE)");
  RETURN_IF_ERROR(db.Exec("PRAGMA busy_timeout=10000"));
  RETURN_IF_ERROR(st);
  const std::string wal = impl_->db_path + "-wal";
  if (::access(wal.c_str(), F_OK) == 0) RETURN_IF_ERROR(Fsync(wal));
  RETURN_IF_ERROR(Fsync(impl_->db_path));
  return SyncDir(impl_->dir);
}

}  // namespace modelfs::neurons
