// NeuronStore: the neuron-system storage layer (seed 003) as a library: neurons and synapses in
// SQLite with the original's schema, CRUD and batches, listings with pagination, pruning, change
// tracking, integrity checks, verified JSON export/import and consistent backups.
//
// Layout of a store directory:
//   dir/graph.db       SQLite (WAL, foreign keys on). Schema versions are rows of the original's
//                      `schema_version` table; migrations run on open, under the write lock:
//                        v1  the original's tables and indexes, exactly (neurons, synapses,
//                            idx_neurons_position/type/modified, idx_synapses_source/target/
//                            weight/modified; FKs ON DELETE CASCADE; CHECK weight in [-1, 1])
//                        v2  neurons.extra TEXT (fields without a column, a JSON object) and
//                            modelfs_state(key, value): 'generation' (bumped by every write
//                            transaction) and 'change_time_ns'
//                      A database the original program made (v1) opens and is migrated; the
//                      original program still reads a v2 database (it names its columns).
//   dir/backups/<name>.db   backups: standalone SQLite files (rollback journal, no -wal) made with
//                      SQLite's online backup API from a read snapshot, so a backup taken while a
//                      writer works holds exactly the transactions committed before it started.
//   dir/staging/       backups and safety copies being written; cleared on open.
//   dir/LOCK           flock: exclusive while Open() migrates and clears staging, shared after.
//
// Writes: every method that writes is one SQLite transaction (all or nothing); a failed call leaves
// the store as it was. Synapses whose neurons are missing, weights outside [-1, 1] or not finite,
// invalid ids or types are InvalidArgument before anything is written. Deleting a neuron deletes its
// synapses (ON DELETE CASCADE). Timestamps: a write keeps created_at/modified_at given in the entity
// when set (imports, restores), and fills in now (FormatIsoTime) where they are empty.
//
// Speed: WAL with synchronous=NORMAL (a commit survives a process crash without fsync; Sync() makes
// everything survive a machine crash); checkpoints run on a background thread with its own connection,
// so a large save does not pay for copying the WAL back into the database; new databases use
// options.page_size. Reads that take long (Export, CreateBackup, LoadAll) use their own read
// connection and snapshot, so they neither block nor see concurrent writes.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "stores/common/status.h"
#include "stores/neurons/graph.h"

namespace modelfs::neurons {

struct StoreOptions {
  int page_size = 65536;  // for a new database only (SQLite fixes it at creation in WAL mode)
  bool background_checkpoint = true;
};

// Pagination: entries are ordered by id; `after` is the last id of the previous page ("" = from the
// start); limit 0 = no limit. next_after is the id to pass for the next page, "" at the end.
struct PageSpec {
  std::string after;
  size_t limit = 0;
};
template <typename T>
struct Page {
  std::vector<T> items;
  std::string next_after;
};

struct NeuronQuery {
  std::optional<std::string> type;
  std::optional<std::string> modified_since;  // modified_at > this (ISO text, compared as text)
  bool with_vectors = true;  // false: vector left empty (vector_dim and vector_hash still set)
  PageSpec page;
};

struct SynapseQuery {
  std::optional<std::string> source;  // source_neuron_id
  std::optional<std::string> target;  // target_neuron_id
  std::optional<std::string> modified_since;
  PageSpec page;
};

struct Graph {
  std::vector<Neuron> neurons;
  std::vector<Synapse> synapses;
};

// The original's ChangeTracker: which entities an application modified or deleted since its last
// save, for SaveIncremental.
class ChangeTracker {
 public:
  void MarkNeuronModified(const std::string& id);   // and no longer deleted
  void MarkSynapseModified(const std::string& id);
  void MarkNeuronDeleted(const std::string& id);    // and no longer modified
  void MarkSynapseDeleted(const std::string& id);
  bool HasChanges() const;
  void Clear();
  const std::set<std::string>& modified_neurons() const { return modified_neurons_; }
  const std::set<std::string>& modified_synapses() const { return modified_synapses_; }
  const std::set<std::string>& deleted_neurons() const { return deleted_neurons_; }
  const std::set<std::string>& deleted_synapses() const { return deleted_synapses_; }

 private:
  std::set<std::string> modified_neurons_, modified_synapses_, deleted_neurons_, deleted_synapses_;
};

struct SaveCounts {
  uint64_t neurons_saved = 0;
  uint64_t synapses_saved = 0;
  uint64_t neurons_deleted = 0;
  uint64_t synapses_deleted = 0;  // including those cascaded
};

struct IntegrityReport {
  bool valid = true;
  std::vector<std::string> issues;  // one line each, e.g. "3 synapses with missing source neurons"
  uint64_t orphaned_sources = 0;
  uint64_t orphaned_targets = 0;
  uint64_t invalid_weights = 0;   // outside [-1, 1] or NULL
  uint64_t bad_vectors = 0;       // length not a multiple of 4, or a NaN / infinite element
  std::string sqlite_check;       // PRAGMA integrity_check's answer ("ok")
};

struct StoreStats {
  uint64_t neurons = 0;
  uint64_t synapses = 0;
  uint64_t database_bytes = 0;    // page_count * page_size
  std::vector<std::pair<std::string, uint64_t>> neurons_by_type;  // sorted by type
  int64_t generation = 0;
  int64_t change_time_ns = 0;
  int schema_version = 0;
};

struct BackupInfo {
  std::string name;      // "<name>.db"
  uint64_t bytes = 0;
  int64_t mtime_ns = 0;  // the backup file's mtime (when it was taken, or as restored)
  uint64_t neurons = 0;
  uint64_t synapses = 0;
};

enum class ImportMode {
  kReplace,  // the graph becomes exactly the file's content
  kMerge,    // the file's entities are created or updated; others are kept
};

class NeuronStore {
 public:
  // Creates the directory and database if needed, migrates, clears staging/.
  static Result<std::unique_ptr<NeuronStore>> Open(const std::string& dir, StoreOptions options = {});
  ~NeuronStore();
  NeuronStore(const NeuronStore&) = delete;
  NeuronStore& operator=(const NeuronStore&) = delete;

  // ---- Neurons ----
  Status CreateNeuron(const Neuron& n);              // AlreadyExists if the id is taken
  Result<Neuron> GetNeuron(const std::string& id);   // NotFound
  Status UpdateNeuron(const Neuron& n);              // NotFound; the row becomes n
  Status PutNeuron(const Neuron& n);                 // create or update (never deletes synapses)
  // NotFound; its synapses go too, and their number is added to *cascaded when given.
  Status DeleteNeuron(const std::string& id, uint64_t* cascaded = nullptr);
  Status BatchCreateNeurons(const std::vector<Neuron>& batch);  // one transaction
  Status BatchUpdateNeurons(const std::vector<Neuron>& batch);  // one transaction; NotFound if any is
  Result<Page<Neuron>> ListNeurons(const NeuronQuery& q);
  // Every type with its number of neurons, sorted by type.
  Result<std::vector<std::pair<std::string, uint64_t>>> NeuronTypes();

  // ---- Synapses ----
  Status CreateSynapse(const Synapse& s);
  Result<Synapse> GetSynapse(const std::string& id);
  Status UpdateSynapse(const Synapse& s);
  Status PutSynapse(const Synapse& s);
  Status DeleteSynapse(const std::string& id);
  Status BatchCreateSynapses(const std::vector<Synapse>& batch);
  Status BatchUpdateSynapses(const std::vector<Synapse>& batch);
  Result<Page<Synapse>> ListSynapses(const SynapseQuery& q);
  // Ids of the neurons that are the source (sources=true) or target of at least one synapse, sorted.
  Result<std::vector<std::string>> SynapseEndpoints(bool sources);
  // Deletes the synapses with |weight| < threshold (the original's delete_weak_synapses); returns how
  // many.
  Result<uint64_t> PruneWeakSynapses(double threshold);

  // ---- The whole graph ----
  // The original's save_all: every entity created or updated, in one transaction.
  Result<SaveCounts> SaveAll(const Graph& g);
  // The original's save_incremental: only the entities tracker marks, in one transaction (modified
  // ones taken from g, deleted ones deleted); the tracker is cleared on success.
  Result<SaveCounts> SaveIncremental(const Graph& g, ChangeTracker& tracker);
  // The original's load_all, from one snapshot; neurons and synapses ordered by id.
  Result<Graph> LoadAll();

  // Writes the export file of one snapshot to fd (graph.h); export_time is ExportTime().
  Result<ExportCounts> Export(int fd);
  // Reads an export from fd (either system's), verifies its checksum and applies it in one
  // transaction: nothing changes unless the whole file is valid. change_time_ns: the store's change
  // time afterwards (a restore carries the backup's), else now.
  Result<ExportCounts> Import(int fd, ImportMode mode, std::optional<int64_t> change_time_ns = {},
                              bool allow_unverified = false);

  Result<IntegrityReport> Verify();
  Result<StoreStats> Stats();

  // ---- Backups ----
  // name: "<plain name>.db", or "" for the original's neuron_system_backup_YYYYmmdd_HHMMSS.db.
  // AlreadyExists if taken.
  Result<BackupInfo> CreateBackup(const std::string& name = "");
  // Adopts the SQLite file at fd as backup `name` (a backup copied back in, e.g. by rsync): it must be
  // a database holding the neurons and synapses tables and pass PRAGMA integrity_check, else
  // InvalidArgument. mtime_ns: the file's mtime to keep.
  Result<BackupInfo> AddBackup(const std::string& name, int fd, std::optional<int64_t> mtime_ns = {});
  Result<std::vector<BackupInfo>> ListBackups();     // sorted by name
  Result<BackupInfo> GetBackup(const std::string& name);
  std::string BackupPath(const std::string& name) const;
  Status RemoveBackup(const std::string& name);
  Status SetBackupMtime(const std::string& name, int64_t mtime_ns);
  // Replaces the graph with backup `name` (migrated to the current schema, integrity-checked), after
  // saving the current graph as the safety copy "pre_restore_YYYYmmdd_HHMMSS.db"; returns the safety
  // copy's info. Readers see the old graph or the new one.
  Result<BackupInfo> Restore(const std::string& name);

  // ---- Change time and generation ----
  // Bumped by every write transaction; never repeats (a cache key for views of the whole graph).
  Result<int64_t> Generation();
  // The export_time an export of the graph as it is now carries: the newest modified_at of its
  // neurons and synapses (so equal graphs export equal bytes), or the change time when it is empty.
  Result<std::string> ExportTime();
  // When the graph last changed (ns); a write sets now, Import/SetChangeTime may set another time.
  Result<int64_t> ChangeTimeNs();
  Status SetChangeTime(int64_t ns);

  // Checkpoints the WAL and makes everything committed survive a machine crash.
  Status Sync();
  const std::string& dir() const;

 private:
  struct Impl;
  explicit NeuronStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace modelfs::neurons
