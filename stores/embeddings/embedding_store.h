// EmbeddingStore: damo-embedding's storage (seed 001) as a library. Sparse embeddings on RocksDB.
//
// Keys are u64 feature ids in groups 0..255; each group has a dimension, an optimizer and an
// initializer (its configuration, persisted in the store). Byte formats are damo's exactly:
//   RocksDB key:  u64 (key & 0x00FFFFFFFFFFFFFF) | (group << 56), little-endian
//   RocksDB value: packed { int32 group; u64 key; u64 update_time_ms; u64 update_num; int32 dim; }
//                  then float32 weights[dim], then the optimizer's float32 slots (damo's layout)
//   dump:        int32 dims[256]; u64 counts[256]; then per record { u64 key; int32 group; float[dim] }
//   checkpoint:  u64 count; then per record { u64 key_len; key bytes; u64 value_len; value bytes }
// (little-endian, no padding). Conditions filter dumps as damo does: expire_days drops keys whose
// last update is older than N days, min_count drops keys with update_num < N, group keeps one group.
//
// Storage (see embedding_store.cc): <dir>/db.<n> RocksDB generations, <dir>/CURRENT_DB names the
// live one; LoadCheckpoint builds a new generation and switches atomically. One process at a time.
//
// Thread-safety: all methods may be called concurrently. Lookup/ApplyGradients on the same keys are
// serialized internally so that read-modify-write steps are not lost. Snapshots are immutable views.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "stores/common/status.h"

namespace modelfs::embeddings {

constexpr int kGroups = 256;
// The largest dim a group may have (4 MiB of weights per key).
constexpr int32_t kMaxDim = 1 << 20;

// Named numeric parameters (damo's Parameters object), e.g. {"gamma": 0.001, "beta1": 0.9}.
// Missing names take damo's defaults.
using Params = std::map<std::string, double>;

struct GroupConfig {
  int32_t dim = 0;
  std::string optimizer;  // sgd, adagrad, adam, adamw, amsgrad, ftrl, lion
  Params optimizer_params;
  std::string initializer;  // zeros, ones, random_uniform, random_normal, truncate_normal
  Params initializer_params;
};

struct Conditions {
  std::optional<int64_t> expire_days;  // drop keys last updated more than N days ago
  std::optional<int64_t> min_count;    // drop keys with update_num < N
  std::optional<int> group;            // keep only this group (0..255)
};

struct StoreOptions {
  int64_t ttl_seconds = 0;  // RocksDB TTL; <= 0: keys never expire
  // Microseconds since the epoch, for update_time, change times and the "now" of expire_days.
  // Empty: the system clock. A test hook.
  std::function<int64_t()> clock_us;
};

struct Stats {
  uint64_t keys = 0;
  uint64_t keys_per_group[kGroups] = {};
};

// A consistent, immutable view of the whole store (a RocksDB snapshot plus the configuration at that
// moment). Dumps and checkpoints read from one.
class Snapshot {
 public:
  virtual ~Snapshot() = default;
  // Microseconds since the epoch of the last change the snapshot contains (persisted in the store).
  virtual int64_t change_time_us() const = 0;
};

class EmbeddingStore {
 public:
  // Opens (creating if needed) the store in dir. IOError when RocksDB cannot open it.
  static Result<std::unique_ptr<EmbeddingStore>> Open(const std::string& dir,
                                                        const StoreOptions& options);
  virtual ~EmbeddingStore() = default;

  // ---- configuration ----
  // Sets a group's configuration (persisted). InvalidArgument: group outside 0..255, dim <= 0,
  // unknown optimizer or initializer, unknown parameter name, or a dim change for a group that has keys.
  // Also InvalidArgument: dim > kMaxDim; a parameter value damo would divide by or that is not
  // finite; for a group that has keys, an optimizer with another slot layout (slots per weight),
  // which its values would no longer fit (adam <-> adamw is fine; sgd -> adam is not). Setting
  // the configuration a group already has changes nothing (no change time bump).
  virtual Status ConfigureGroup(int group, const GroupConfig& config) = 0;
  // nullopt when the group is not configured. InvalidArgument for a group outside 0..255.
  // Several groups at once: all are checked as above before any is written, then written together
  // (a bad one changes nothing). ConfigureGroup is this with one group.
  virtual Status ConfigureGroups(const std::map<int, GroupConfig>& configs) = 0;
  virtual Result<std::optional<GroupConfig>> GetGroup(int group) = 0;
  virtual Result<std::map<int, GroupConfig>> Groups() = 0;

  // ---- damo API ----
  // Weights of keys (row-major, keys.size() * dim), creating missing keys with the group's
  // initializer. InvalidArgument: group not configured.
  virtual Result<std::vector<float>> Lookup(int group, const std::vector<uint64_t>& keys) = 0;
  // One optimizer step per key (grads row-major, keys.size() * dim): update_num += 1,
  // update_time = now. InvalidArgument: group not configured, grads of the wrong length, or a key
  // that was never looked up (damo exited the process there).
  virtual Status ApplyGradients(int group, const std::vector<uint64_t>& keys,
                                const std::vector<float>& grads) = 0;

  // ---- whole-store views ----
  virtual Result<std::shared_ptr<const Snapshot>> TakeSnapshot() = 0;
  // Writes the dump of `snapshot` under `conditions` into out_fd from offset 0 (the header is
  // written last, with pwrite, once counts are known). Streams: memory does not grow with the store.
  // "Now" for expire_days is the time the snapshot was taken, so a dump of one snapshot is always
  // the same bytes. Header dims: the configured dim of every configured group, the dim of its keys
  // for a group that holds keys but has no configuration, else 0. InvalidArgument: a snapshot of
  // another store, negative expire_days or min_count, group outside 0..255.
  virtual Status Dump(const Snapshot& snapshot, const Conditions& conditions, int out_fd) = 0;
  // Writes the checkpoint of `snapshot` into out_fd from offset 0. Streams.
  virtual Status Checkpoint(const Snapshot& snapshot, int out_fd) = 0;
  // Replaces the whole store with the checkpoint in fd (no key that is not in it survives). The
  // whole input is validated first: malformed or truncated input -> InvalidArgument and the store
  // is unchanged. Atomic: after a crash the store is either the old one or the new one.
  // Valid input: key_len 8; value_len >= 32 (the value header); the value's group and key agree
  // with the RocksDB key; keys strictly increasing (as a checkpoint lists them); for a configured
  // group, values of its dim and optimizer layout; for an unconfigured group, values of one dim
  // and one length (kept as they are, until the group is configured to match). The group
  // configuration is kept. Checkpoint values are damo's: never RocksDB TTL's timestamp suffix.
  virtual Status LoadCheckpoint(int fd) = 0;
  // Upserts the weights a dump holds (keys that exist keep their optimizer slots and counters;
  // new keys get zero slots). Validated first as above; a dim that differs from the group's
  // configured dim -> InvalidArgument. only_group: every record must belong to it (group/<g> files).
  // Also InvalidArgument: records of a group that is not configured here (their slot layout is
  // unknown); counts that do not add up to the records. Applied in batches after validation: a
  // crash in the middle leaves some records applied (each batch is atomic).
  virtual Status LoadDump(int fd, std::optional<int> only_group) = 0;

  virtual Result<Stats> GetStats() = 0;
  // Microseconds since the epoch of the last change to data or configuration (persisted).
  virtual int64_t change_time_us() = 0;
  // Sets the change time (persisted): a restore gives the store back the time of the backup it came
  // from, so views keep their mtimes and a second rsync copies nothing. The next change still moves
  // it to max(now, time + 1). InvalidArgument for a negative time.
  virtual Status SetChangeTime(int64_t time_us) = 0;
  // Makes everything so far survive a machine crash.
  virtual Status Sync() = 0;
  // Compacts the data (RocksDB CompactRange). With a TTL this is when expired keys are removed (as
  // RocksDB's background compactions also do); removals bump the change time.
  virtual Status Compact() = 0;
};

}  // namespace modelfs::embeddings
