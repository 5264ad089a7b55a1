// WeightIndex: the weight store's SQLite index (dir/index.db), one row per stored tensor and per
// name, plus the store's settings and counters. It knows rows, not files: the store decides when a
// row may name an object file (weight_store.cc's commit protocol).
//
// Schema (version 1, PRAGMA user_version):
//   tensors(hash PK, dtype, shape JSON, npy_bytes, kind 'full'|'delta', base_hash, depth, file_no
//           UNIQUE, stored_bytes, codec, mtime_ns, coral_name, layer_type, model_name,
//           compression_info, sketch BLOB)
//   names(name PK, hash -> tensors ON DELETE CASCADE, mtime_ns)
//   meta(key PK, value): 'codec' (fixed at creation), 'last_file_no' (object numbers are never
//           reused, even after the tensor holding the highest one is deleted), 'ingested_bytes'.
//
// Thread-safety: none. The store serializes every use with its mutex; a write transaction is begun
// only with that mutex held (SqliteTransaction on db()).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "stores/common/sqlite_db.h"
#include "stores/common/status.h"
#include "stores/weights/npy.h"
#include "stores/weights/tensor_file.h"

namespace modelfs::weights {

// One row of `tensors`.
struct TensorRow {
  std::string hash;
  TensorSpec spec;
  uint64_t npy_bytes = 0;
  bool is_delta = false;
  std::optional<std::string> base_hash;
  int depth = 0;  // deltas between this tensor and a full one (0: full)
  uint64_t file_no = 0;
  uint64_t stored_bytes = 0;
  std::string codec;
  int64_t mtime_ns = 0;
  CoralMeta meta;
  std::string compression_info;
  std::string sketch;
};

struct NameRow {
  std::string name;
  std::string hash;
  int64_t mtime_ns = 0;
};

// Sums over the index (GetStorageInfo).
struct IndexTotals {
  uint64_t tensors = 0;
  uint64_t deltas = 0;
  uint64_t logical_bytes = 0;
  uint64_t stored_bytes = 0;
  uint64_t names = 0;
  uint64_t ingested_bytes = 0;
};

// Where a tensor's object lives, for walking a delta chain.
struct ChainLink {
  std::string hash;
  uint64_t file_no = 0;
  std::optional<std::string> base_hash;
};

class WeightIndex {
 public:
  // Opens (creating) the database at path in WAL mode and migrates it to the current schema.
  // IOError; Corruption for a file that is not a database.
  static Result<WeightIndex> Open(const std::string& path);
  WeightIndex(WeightIndex&&) = default;
  WeightIndex& operator=(WeightIndex&&) = default;

  SqliteDb& db() { return db_; }
  Status Close() { return db_.Close(); }

  // ---- tensors ----
  Result<std::optional<TensorRow>> FindTensor(std::string_view hash);
  Result<bool> HasTensor(std::string_view hash);
  Result<std::vector<std::string>> ListHashes();  // ascending
  Result<std::vector<TensorRow>> AllTensors();    // ascending hash
  // Tensors of this spec with depth < max_depth (delta candidates): hash, depth and sketch only.
  Result<std::vector<TensorRow>> Candidates(const TensorSpec& spec, int max_depth);
  // Tensors stored as deltas against hash.
  Result<std::vector<TensorRow>> Dependents(std::string_view hash);
  // The chain from hash down to its full tensor: [hash, base, base's base, ...]. NotFound when a
  // link is missing; Corruption for a cycle or a chain longer than max_links.
  Result<std::vector<ChainLink>> Chain(std::string_view hash, int max_links);
  // Tensors no name points to, ascending.
  Result<std::vector<std::string>> Unnamed();
  // Every file number a row names.
  Result<std::vector<uint64_t>> FileNos();
  Status InsertTensor(const TensorRow& row);
  // Points the row at a new object (a dependent re-encoded by Delete).
  Status ReplaceObject(const TensorRow& row);
  // Deletes the tensor's row and its names.
  Status DeleteTensor(std::string_view hash);
  // Recomputes every delta's depth from its base's (after bases changed); chains are short.
  Status RecomputeDepths(int max_depth);
  // Returns the number of rows changed (0: no such tensor).
  Result<int64_t> SetMtime(std::string_view hash, int64_t mtime_ns);
  Result<int64_t> SetCoralMeta(std::string_view hash, const CoralMeta& meta);

  // ---- names ----
  Status SetName(std::string_view name, std::string_view hash, int64_t mtime_ns);
  Result<int64_t> RemoveName(std::string_view name);  // rows changed
  Result<std::optional<NameRow>> FindName(std::string_view name);
  Result<std::vector<NameRow>> ListNames();                         // ascending name
  Result<std::vector<std::string>> NamesOf(std::string_view hash);  // ascending
  Result<int64_t> SetNameMtime(std::string_view name, int64_t mtime_ns);

  // ---- meta ----
  Result<std::optional<std::string>> GetMeta(std::string_view key);
  Status SetMeta(std::string_view key, std::string_view value);
  // The integer counter key (missing: 0).
  Result<uint64_t> GetCounter(std::string_view key);
  // Adds delta to the integer counter key (missing: 0) and returns the new value.
  Result<uint64_t> AddToCounter(std::string_view key, uint64_t delta);

  Result<IndexTotals> Totals();

 private:
  explicit WeightIndex(SqliteDb db) : db_(std::move(db)) {}
  SqliteDb db_;
};

// The shape as the index stores it: a JSON array ("[3,4]", "[]").
std::string ShapeToJson(const std::vector<uint64_t>& shape);
Result<std::vector<uint64_t>> ShapeFromJson(std::string_view text);

}  // namespace modelfs::weights
