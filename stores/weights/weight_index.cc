#include "stores/weights/weight_index.h"

#include <errno.h>
#include <stdlib.h>

#include <nlohmann/json.hpp>
#include <utility>

namespace modelfs::weights {
namespace {


// Schema version 1. hash and name are TEXT with the BINARY collation, so the primary keys order
// them by bytes, as List() and ListNames() promise. tensors_by_spec serves the delta-candidate
// query (same dtype and shape, shallow enough), tensors_by_base finds the deltas of a tensor that
// is being deleted. Names are deleted explicitly as well (ON DELETE CASCADE needs foreign_keys=ON
// on every connection that ever touches the file).
constexpr char kSchemaV1[] = R"sql(
CREATE TABLE tensors(
  hash TEXT PRIMARY KEY,
  dtype TEXT NOT NULL,
  shape TEXT NOT NULL,
  npy_bytes INTEGER NOT NULL,
  kind TEXT NOT NULL CHECK(kind IN ('full', 'delta')),
  base_hash TEXT REFERENCES tensors(hash),
  depth INTEGER NOT NULL,
  file_no INTEGER NOT NULL UNIQUE,
  stored_bytes INTEGER NOT NULL,
  codec TEXT NOT NULL,
  mtime_ns INTEGER NOT NULL,
  coral_name TEXT NOT NULL,
  layer_type TEXT NOT NULL,
  model_name TEXT NOT NULL,
  compression_info TEXT NOT NULL,
  sketch BLOB NOT NULL) WITHOUT ROWID;
CREATE INDEX tensors_by_spec ON tensors(dtype, shape, depth);
CREATE INDEX tensors_by_base ON tensors(base_hash) WHERE base_hash IS NOT NULL;
CREATE TABLE names(
  name TEXT PRIMARY KEY,
  hash TEXT NOT NULL REFERENCES tensors(hash) ON DELETE CASCADE,
  mtime_ns INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX names_by_hash ON names(hash);
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
)sql";

constexpr char kSelectTensor[] =
    "SELECT hash, dtype, shape, npy_bytes, kind, base_hash, depth, file_no, stored_bytes, codec, "
    "mtime_ns, coral_name, layer_type, model_name, compression_info, sketch FROM tensors ";

Result<TensorRow> RowFromStmt(const SqliteStmt& s) {
  TensorRow r;
  r.hash = s.ColumnText(0);
  std::string dtype = s.ColumnText(1);
  Result<DType> t = DTypeFromName(dtype);
  if (!t.ok()) return Corruption("index.db: tensor " + r.hash + ": dtype '" + dtype + "'");
  r.spec.dtype = *t;
  Result<std::vector<uint64_t>> shape = ShapeFromJson(s.ColumnText(2));
  if (!shape.ok())
    return Corruption("index.db: tensor " + r.hash + ": " + shape.status().message());
  r.spec.shape = std::move(shape).value();
  r.npy_bytes = static_cast<uint64_t>(s.ColumnInt64(3));
  r.is_delta = s.ColumnText(4) == "delta";
  if (!s.ColumnIsNull(5)) r.base_hash = s.ColumnText(5);
  r.depth = static_cast<int>(s.ColumnInt64(6));
  r.file_no = static_cast<uint64_t>(s.ColumnInt64(7));
  r.stored_bytes = static_cast<uint64_t>(s.ColumnInt64(8));
  r.codec = s.ColumnText(9);
  r.mtime_ns = s.ColumnInt64(10);
  r.meta.name = s.ColumnText(11);
  r.meta.layer_type = s.ColumnText(12);
  r.meta.model_name = s.ColumnText(13);
  r.compression_info = s.ColumnText(14);
  r.sketch = s.ColumnBlob(15);
  return r;
}

template <typename... Args>
Result<std::vector<TensorRow>> SelectTensors(SqliteDb& db, std::string_view tail,
                                             const Args&... args) {
  ASSIGN_OR_RETURN(SqliteStmt s, db.Prepare(std::string(kSelectTensor) + std::string(tail)));
  RETURN_IF_ERROR(s.Bind(args...));
  std::vector<TensorRow> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    ASSIGN_OR_RETURN(TensorRow r, RowFromStmt(s));
    out.push_back(std::move(r));
  }
  return out;
}

template <typename... Args>
Result<std::vector<std::string>> SelectTexts(SqliteDb& db, std::string_view sql,
                                             const Args&... args) {
  ASSIGN_OR_RETURN(SqliteStmt s, db.Prepare(sql));
  RETURN_IF_ERROR(s.Bind(args...));
  std::vector<std::string> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back(s.ColumnText(0));
  }
  return out;
}

std::optional<std::string_view> BaseOf(const TensorRow& row) {
  if (!row.base_hash) return std::nullopt;
  return std::string_view(*row.base_hash);
}

}  // namespace

std::string ShapeToJson(const std::vector<uint64_t>& shape) { return nlohmann::json(shape).dump(); }

Result<std::vector<uint64_t>> ShapeFromJson(std::string_view text) {
  // The index's own text; a parse failure means a damaged row, reported rather than thrown.
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_array()) return Corruption("shape '" + std::string(text) + "' is not a JSON array");
  std::vector<uint64_t> shape;
  for (const auto& d : j) {
    if (!d.is_number_unsigned()) {
      return Corruption("shape '" + std::string(text) + "' has a non-integer dimension");
    }
    shape.push_back(d.get<uint64_t>());
  }
  return shape;
}

Result<WeightIndex> WeightIndex::Open(const std::string& path) {
  // Later versions: append their migration (ALTER TABLE ...) to the list.
  ASSIGN_OR_RETURN(SqliteDb db, OpenStoreDb(path, {kSchemaV1}));
  return WeightIndex(std::move(db));
}

// ---- tensors ----

Result<std::optional<TensorRow>> WeightIndex::FindTensor(std::string_view hash) {
  ASSIGN_OR_RETURN(std::vector<TensorRow> rows, SelectTensors(db_, "WHERE hash=?1", hash));
  if (rows.empty()) return std::optional<TensorRow>();
  return std::optional<TensorRow>(std::move(rows.front()));
}

Result<bool> WeightIndex::HasTensor(std::string_view hash) {
  ASSIGN_OR_RETURN(auto row, db_.QueryRow("SELECT 1 FROM tensors WHERE hash=?1", hash));
  return row.found;
}

Result<std::vector<std::string>> WeightIndex::ListHashes() {
  return SelectTexts(db_, "SELECT hash FROM tensors ORDER BY hash");
}

Result<std::vector<TensorRow>> WeightIndex::AllTensors() {
  return SelectTensors(db_, "ORDER BY hash");
}

Result<std::vector<TensorRow>> WeightIndex::Candidates(const TensorSpec& spec, int max_depth) {
  ASSIGN_OR_RETURN(SqliteStmt s, db_.Prepare("SELECT hash, depth, sketch FROM tensors "
                                             "WHERE dtype=?1 AND shape=?2 AND depth<?3"));
  RETURN_IF_ERROR(s.Bind(DTypeName(spec.dtype), ShapeToJson(spec.shape), max_depth));
  std::vector<TensorRow> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    TensorRow r;
    r.hash = s.ColumnText(0);
    r.spec = spec;
    r.depth = static_cast<int>(s.ColumnInt64(1));
    r.sketch = s.ColumnBlob(2);
    out.push_back(std::move(r));
  }
  return out;
}

Result<std::vector<TensorRow>> WeightIndex::Dependents(std::string_view hash) {
  return SelectTensors(db_, "WHERE base_hash=?1 ORDER BY hash", hash);
}

Result<std::vector<ChainLink>> WeightIndex::Chain(std::string_view hash, int max_links) {
  std::vector<ChainLink> chain;
  std::string next(hash);
  for (;;) {
    ASSIGN_OR_RETURN(auto row,
                     db_.QueryRow("SELECT file_no, base_hash FROM tensors WHERE hash=?1", next));
    if (!row.found) {
      if (chain.empty()) return NotFound("tensor " + next + ": not stored");
      return NotFound("tensor " + chain.back().hash + ": its base " + next + " is not stored");
    }
    ChainLink link;
    link.hash = next;
    link.file_no = static_cast<uint64_t>(row.stmt.ColumnInt64(0));
    if (!row.stmt.ColumnIsNull(1)) link.base_hash = row.stmt.ColumnText(1);
    chain.push_back(link);
    if (!link.base_hash) return chain;
    if (static_cast<int>(chain.size()) >= max_links) {
      return Corruption("tensor " + std::string(hash) + ": delta chain longer than " +
                        std::to_string(max_links - 1));
    }
    next = *link.base_hash;
  }
}

Result<std::vector<std::string>> WeightIndex::Unnamed() {
  return SelectTexts(db_,
                     "SELECT hash FROM tensors AS t WHERE NOT EXISTS "
                     "(SELECT 1 FROM names AS n WHERE n.hash=t.hash) ORDER BY hash");
}

Result<std::vector<uint64_t>> WeightIndex::FileNos() {
  ASSIGN_OR_RETURN(SqliteStmt s, db_.Prepare("SELECT file_no FROM tensors"));
  std::vector<uint64_t> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back(static_cast<uint64_t>(s.ColumnInt64(0)));
  }
  return out;
}

Status WeightIndex::InsertTensor(const TensorRow& r) {
  return db_
      .Run(
          "INSERT INTO tensors(hash, dtype, shape, npy_bytes, kind, base_hash, depth, file_no, "
          "stored_bytes, codec, mtime_ns, coral_name, layer_type, model_name, compression_info, "
          "sketch) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
          r.hash, DTypeName(r.spec.dtype), ShapeToJson(r.spec.shape),
          static_cast<int64_t>(r.npy_bytes), r.is_delta ? "delta" : "full", BaseOf(r), r.depth,
          static_cast<int64_t>(r.file_no), static_cast<int64_t>(r.stored_bytes), r.codec,
          r.mtime_ns, r.meta.name, r.meta.layer_type, r.meta.model_name, r.compression_info,
          SqlBlob{r.sketch})
      .status();
}

Status WeightIndex::ReplaceObject(const TensorRow& r) {
  ASSIGN_OR_RETURN(int64_t changed,
                   db_.Run("UPDATE tensors SET kind=?2, base_hash=?3, depth=?4, file_no=?5, "
                           "stored_bytes=?6, codec=?7, compression_info=?8 WHERE hash=?1",
                           r.hash, r.is_delta ? "delta" : "full", BaseOf(r), r.depth,
                           static_cast<int64_t>(r.file_no), static_cast<int64_t>(r.stored_bytes),
                           r.codec, r.compression_info));
  if (changed != 1) return NotFound("tensor " + r.hash + ": not stored");
  return Status::Ok();
}

Status WeightIndex::DeleteTensor(std::string_view hash) {
  RETURN_IF_ERROR(db_.Run("DELETE FROM names WHERE hash=?1", hash).status());
  ASSIGN_OR_RETURN(int64_t changed, db_.Run("DELETE FROM tensors WHERE hash=?1", hash));
  if (changed != 1) return NotFound("tensor " + std::string(hash) + ": not stored");
  return Status::Ok();
}

Status WeightIndex::RecomputeDepths(int max_depth) {
  // Each pass fixes one more level below a changed tensor; max_depth + 1 passes reach every delta
  // of a valid chain.
  for (int pass = 0; pass <= max_depth; ++pass) {
    ASSIGN_OR_RETURN(
        int64_t changed,
        db_.Run("UPDATE tensors SET depth=(SELECT b.depth+1 FROM tensors AS b "
                "WHERE b.hash=tensors.base_hash) "
                "WHERE base_hash IS NOT NULL AND depth IS NOT (SELECT b.depth+1 FROM tensors AS b "
                "WHERE b.hash=tensors.base_hash)"));
    if (changed == 0) break;
  }
  return Status::Ok();
}

Result<int64_t> WeightIndex::SetMtime(std::string_view hash, int64_t mtime_ns) {
  return db_.Run("UPDATE tensors SET mtime_ns=?2 WHERE hash=?1", hash, mtime_ns);
}

Result<int64_t> WeightIndex::SetCoralMeta(std::string_view hash, const CoralMeta& meta) {
  return db_.Run("UPDATE tensors SET coral_name=?2, layer_type=?3, model_name=?4 WHERE hash=?1",
                 hash, meta.name, meta.layer_type, meta.model_name);
}

// ---- names ----

Status WeightIndex::SetName(std::string_view name, std::string_view hash, int64_t mtime_ns) {
  return db_
      .Run(
          "INSERT INTO names(name, hash, mtime_ns) VALUES(?1, ?2, ?3) "
          "ON CONFLICT(name) DO UPDATE SET hash=excluded.hash, mtime_ns=excluded.mtime_ns",
          name, hash, mtime_ns)
      .status();
}

Result<int64_t> WeightIndex::RemoveName(std::string_view name) {
  return db_.Run("DELETE FROM names WHERE name=?1", name);
}

Result<std::optional<NameRow>> WeightIndex::FindName(std::string_view name) {
  ASSIGN_OR_RETURN(auto row,
                   db_.QueryRow("SELECT name, hash, mtime_ns FROM names WHERE name=?1", name));
  if (!row.found) return std::optional<NameRow>();
  return std::optional<NameRow>(
      NameRow{row.stmt.ColumnText(0), row.stmt.ColumnText(1), row.stmt.ColumnInt64(2)});
}

Result<std::vector<NameRow>> WeightIndex::ListNames() {
  ASSIGN_OR_RETURN(SqliteStmt s,
                   db_.Prepare("SELECT name, hash, mtime_ns FROM names ORDER BY name"));
  std::vector<NameRow> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back(NameRow{s.ColumnText(0), s.ColumnText(1), s.ColumnInt64(2)});
  }
  return out;
}

Result<std::vector<std::string>> WeightIndex::NamesOf(std::string_view hash) {
  return SelectTexts(db_, "SELECT name FROM names WHERE hash=?1 ORDER BY name", hash);
}

Result<int64_t> WeightIndex::SetNameMtime(std::string_view name, int64_t mtime_ns) {
  return db_.Run("UPDATE names SET mtime_ns=?2 WHERE name=?1", name, mtime_ns);
}

// ---- meta ----

Result<std::optional<std::string>> WeightIndex::GetMeta(std::string_view key) {
  ASSIGN_OR_RETURN(auto row, db_.QueryRow("SELECT value FROM meta WHERE key=?1", key));
  if (!row.found) return std::optional<std::string>();
  return std::optional<std::string>(row.stmt.ColumnText(0));
}

Status WeightIndex::SetMeta(std::string_view key, std::string_view value) {
  return db_
      .Run(
          "INSERT INTO meta(key, value) VALUES(?1, ?2) "
          "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
          key, value)
      .status();
}

Result<uint64_t> WeightIndex::GetCounter(std::string_view key) {
  ASSIGN_OR_RETURN(std::optional<std::string> text, GetMeta(key));
  if (!text) return uint64_t{0};
  char* end = nullptr;
  errno = 0;
  uint64_t value = strtoull(text->c_str(), &end, 10);
  if (text->empty() || *end != '\0' || errno != 0) {
    return Corruption("index.db: meta '" + std::string(key) + "' is '" + *text + "', not a number");
  }
  return value;
}

Result<uint64_t> WeightIndex::AddToCounter(std::string_view key, uint64_t delta) {
  ASSIGN_OR_RETURN(uint64_t value, GetCounter(key));
  value += delta;
  RETURN_IF_ERROR(SetMeta(key, std::to_string(value)));
  return value;
}

Result<IndexTotals> WeightIndex::Totals() {
  IndexTotals t;
  {
    ASSIGN_OR_RETURN(auto row,
                     db_.QueryRow("SELECT COUNT(*), COALESCE(SUM(kind='delta'), 0), "
                                  "COALESCE(SUM(npy_bytes), 0), COALESCE(SUM(stored_bytes), 0) "
                                  "FROM tensors"));
    t.tensors = static_cast<uint64_t>(row.stmt.ColumnInt64(0));
    t.deltas = static_cast<uint64_t>(row.stmt.ColumnInt64(1));
    t.logical_bytes = static_cast<uint64_t>(row.stmt.ColumnInt64(2));
    t.stored_bytes = static_cast<uint64_t>(row.stmt.ColumnInt64(3));
  }
  {
    ASSIGN_OR_RETURN(auto row, db_.QueryRow("SELECT COUNT(*) FROM names"));
    t.names = static_cast<uint64_t>(row.stmt.ColumnInt64(0));
  }
  ASSIGN_OR_RETURN(t.ingested_bytes, GetCounter("ingested_bytes"));
  return t;
}

}  // namespace modelfs::weights
