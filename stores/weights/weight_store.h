// WeightStore: Coral's content-addressed weight store (seed 004) as a library, with what Coral
// promised and did not deliver: crash safety, lossless deltas, verified loads, names.
//
// A tensor's key is the SHA-256 (lower-case hex) of its canonical .npy bytes (npy.h). Identical
// tensors are stored once. A tensor is stored either full or as a delta: the XOR of its bit patterns
// with a base tensor of the same dtype and shape, chosen only when the delta's compressed size is
// smaller than the full encoding's; chains are at most kMaxDeltaDepth deltas long.
//
// Layout of a store directory:
//   dir/index.db         SQLite (WAL): tensors (hash, spec, kind, base, depth, object file, sizes,
//                        Coral metadata, mtime, sketch), names (name -> hash, mtime), counters,
//                        the store's codec (fixed when the store is created).
//   dir/objects/<n>.h5   one immutable HDF5 file per stored object (tensor_file.h), never modified.
//   dir/staging/         files being written (same filesystem: a commit is a rename).
//   dir/LOCK             flock: exclusive during Open()'s repair, shared while open.
//
// Crash safety (why a crash never damages an earlier tensor): an HDF5 file is only ever written while
// it is new, in staging/; it becomes part of the store by (1) fsync when durable, (2) rename into
// objects/, (3) commit of the index row that names it. Files in objects/ are never opened for writing
// again, so a crash mid-write can only leave a partial file in staging/ or an unnamed file in objects/,
// both removed at the next Open(). A file is unlinked only after the row naming it is gone.
//
// Integrity: SHA-256 over the canonical bytes at ingest (and by Verify); every load checks each
// ~1 MiB chunk against the XXH3-64 recorded at ingest (Corruption on mismatch), so loads are not
// capped by SHA-256's ~310 MB/s.
//
// Names: a name (a plain file name, not a 64-hex hash) points to one tensor; a tensor may have many.
// Removing a name never deletes a tensor; Delete(hash) deletes the tensor and its names. Deleting a
// tensor that is the base of deltas first re-encodes those as full tensors (or against another base).
//
// Thread-safety: every method may be called from any thread. The index is serialized by an internal
// mutex; encoding, decoding and hashing run outside it (StoreBatch/LoadBatch use both cores).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "stores/common/scoped_fd.h"
#include "stores/common/staged_file.h"
#include "stores/common/status.h"
#include "stores/weights/npy.h"
#include "stores/weights/tensor_file.h"

namespace modelfs::weights {

inline constexpr int kMaxDeltaDepth = 4;

// Coral's WeightMetadata.
struct WeightMetadata {
  std::string hash;
  TensorSpec spec;
  CoralMeta meta;                // name, layer_type, model_name
  std::string compression_info;  // JSON: {"codec": "zstd-1", "shuffle": true, "delta": false, ...}
  bool is_delta = false;
  std::optional<std::string> base_hash;
  uint64_t npy_bytes = 0;        // canonical .npy size (header + data): what a read returns
  uint64_t stored_bytes = 0;     // size of its object file on disk
  int64_t mtime_ns = 0;          // when it was stored (or the time a restore carried)
  std::vector<std::string> names;  // the names pointing to it, ascending
};

// A tensor in memory (API use and tests): canonical data, little-endian C order.
struct WeightTensor {
  TensorSpec spec;
  std::string data;  // spec.DataBytes() bytes
  CoralMeta meta;
};

struct StoreOptions {
  bool durable = false;             // survive a machine crash (fsync file, objects/, WAL)
  std::optional<int64_t> mtime_ns;  // the tensor's time when it is new (restores); default now
  bool allow_delta = true;          // try a delta against a similar stored tensor
};

struct StoreResult {
  std::string hash;
  bool added = false;    // false: the tensor was already stored (dedup)
  bool as_delta = false;
};

// Coral's get_storage_info, plus what Coral only promised.
struct StorageInfo {
  uint64_t tensors = 0;         // distinct tensors stored
  uint64_t names = 0;
  uint64_t deltas = 0;          // tensors stored as deltas
  uint64_t logical_bytes = 0;   // Σ canonical .npy bytes of the distinct tensors
  uint64_t stored_bytes = 0;    // Σ object file sizes
  uint64_t ingested_bytes = 0;  // Σ .npy bytes of every store call since the store was created
                                // (duplicates included): what the user handed over
  double compression_ratio = 1; // logical / stored (includes delta savings)
  double dedup_ratio = 1;       // ingested / logical
  std::string codec;            // "zstd-1", ...
};

// One problem Verify found.
struct VerifyProblem {
  std::string hash;
  std::string what;  // "SHA-256 mismatch", "chunk 3: checksum mismatch", "object file missing", ...
};

class WeightStore {
 public:
  struct Options {
    // The codec of a new store ("zstd-1" by default). An existing store keeps the codec it was
    // created with; a different one given here is InvalidArgument (stores do not mix codecs).
    std::optional<CodecSpec> codec;
    int threads = 2;  // hashing/compression workers
  };
  // Opens (creating if needed) the store in dir. IOError / Corruption / InvalidArgument.
  static Result<std::unique_ptr<WeightStore>> Open(const std::string& dir, const Options& options);
  ~WeightStore();
  // Coral's close(): flushes (Sync) and releases; further calls fail. The destructor closes too.
  Status Close();

  const std::string& staging_dir() const { return staging_dir_; }
  CodecSpec codec() const;

  // ---- Coral's API ----
  Result<StoreResult> Store(const WeightTensor& tensor, const StoreOptions& options = {});
  // The whole tensor in memory (API use). NotFound; Corruption on a failed chunk check.
  Result<WeightTensor> Load(std::string_view hash);
  bool Exists(std::string_view hash);
  // Deletes the tensor and its names. NotFound.
  Status Delete(std::string_view hash);
  // Hashes, ascending. List() logs a failure and answers empty (for callers that only look);
  // Hashes() returns it.
  std::vector<std::string> List();
  Result<std::vector<std::string>> Hashes();
  // NotFound.
  Result<WeightMetadata> GetMetadata(std::string_view hash);
  // Stores each tensor (in parallel: hashing and compression use every worker); results in order.
  // Each tensor is its own commit: on error the ones before it stay stored.
  Result<std::vector<StoreResult>> StoreBatch(const std::vector<WeightTensor>& tensors,
                                              const StoreOptions& options = {});
  Result<std::map<std::string, WeightTensor>> LoadBatch(const std::vector<std::string>& hashes);
  StorageInfo GetStorageInfo();

  // ---- files (the filesystem's and the CLI's path) ----
  // Stores the .npy file in `staged` (any version 1–3 header; big-endian data is byte-swapped and
  // Fortran-ordered data transposed into the canonical form). InvalidArgument (store unchanged,
  // staged file untouched) for an invalid .npy: bad magic or header, unsupported dtype, a size that
  // disagrees with the header; or when expected_hash is given and differs from the tensor's hash.
  // Streams: memory stays bounded for any size.
  Result<StoreResult> StoreNpy(int fd, const CoralMeta& meta, const StoreOptions& options,
                               std::optional<std::string_view> expected_hash = std::nullopt);
  // Writes the canonical .npy bytes of the tensor into fd from offset 0 (verified chunk by chunk,
  // decoded in parallel). NotFound; Corruption.
  Status WriteNpy(std::string_view hash, int fd);
  // Sets the time of a stored tensor (a restore carrying the backup's mtime). NotFound.
  Status SetMtime(std::string_view hash, int64_t mtime_ns);
  // Sets Coral metadata of a stored tensor (layer_type, model_name, name). NotFound.
  Status SetCoralMeta(std::string_view hash, const CoralMeta& meta);

  // ---- names ----
  // OK when name may be a name: a plain file name (1–255 bytes, no '/', NUL or control bytes, not
  // starting with '.') that is not a 64-character lower-case hex string (those are hashes).
  static Status ValidateName(std::string_view name);
  static bool IsHash(std::string_view s);  // 64 lower-case hex digits
  // Points name at hash (creating or re-pointing it). NotFound when hash is not stored.
  Status SetName(std::string_view name, std::string_view hash,
                 std::optional<int64_t> mtime_ns = std::nullopt);
  Status RemoveName(std::string_view name);  // NotFound
  struct NameInfo {
    std::string name;
    std::string hash;
    int64_t mtime_ns = 0;
  };
  Result<NameInfo> ResolveName(std::string_view name);  // NotFound
  std::vector<NameInfo> ListNames();                     // ascending name (as List())
  Result<std::vector<NameInfo>> Names();                 // ascending name, or the error
  Status SetNameMtime(std::string_view name, int64_t mtime_ns);  // NotFound

  // ---- maintenance ----
  // Recomputes the SHA-256 of every tensor (or of one) from its object files. Empty when all is well.
  Result<std::vector<VerifyProblem>> Verify(std::optional<std::string_view> hash = std::nullopt);
  // Removes object files no row names and staging leftovers (what Open() does after a crash); with
  // unnamed_too, also deletes tensors no name points to. Returns the number of files/tensors removed.
  Result<uint64_t> Gc(bool unnamed_too);
  // Imports a Coral HDF5 store (weights/<hash> datasets with attributes name, shape, dtype,
  // layer_type, model_name, compression_info, hash; deltas/ as far as Coral's encodings are lossless),
  // storing every tensor with its metadata; names each by its Coral name when it is a valid name.
  struct ImportReport {
    uint64_t imported = 0;    // tensors newly stored
    uint64_t duplicates = 0;  // already stored
    std::vector<std::string> skipped;  // "deltas/<h>: <why>" for what could not be imported
  };
  Result<ImportReport> ImportCoral(const std::string& h5_path);

  // Makes everything committed so far survive a machine crash.
  Status Sync();

 private:
  class Impl;
  WeightStore(std::unique_ptr<Impl> impl, std::string staging_dir);
  std::unique_ptr<Impl> impl_;
  std::string staging_dir_;
};

}  // namespace modelfs::weights
