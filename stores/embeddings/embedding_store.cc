// The embeddings store: damo-embedding's storage on RocksDB, with its formats, plus the fixes the
// SPEC asks for (atomic checkpoint load, persisted per-store group configuration, errors instead of
// exit()).
//
// On disk, in the store directory:
//   LOCK            flock'ed for the store's lifetime: one process at a time
//   CURRENT_DB      "db.<n> plain\n" or "db.<n> ttl\n": the live generation and how it was written
//   db.<n>/         the live RocksDB (see rocks_db.h for its column families)
// Checkpoint values are damo's values exactly: in TTL mode RocksDB's TTL layer strips its timestamp
// suffix on every read, so the suffix never reaches a checkpoint, and loading stamps fresh ones.
// The configuration lives in the generation's meta column family, so a snapshot reads data and
// configuration of one moment, and a config change and its change time commit in one write batch.
//
// Lock order: admin_mu_ -> db_mu_ -> stripes_ (ascending index) -> commit_mu_.
#include "stores/embeddings/embedding_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <rocksdb/write_batch.h>
#include <stdio.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <filesystem>
#include <limits>
#include <mutex>
#include <numeric>
#include <shared_mutex>
#include <system_error>

#include "stores/common/file_util.h"
#include "stores/common/names.h"
#include "stores/common/scoped_fd.h"
#include "stores/embeddings/initializers.h"
#include "stores/embeddings/optimizers.h"
#include "stores/embeddings/record_io.h"
#include "stores/embeddings/rocks_db.h"
#include "stores/embeddings/value_format.h"

namespace modelfs::embeddings {
namespace {

constexpr int kStripes = 64;
constexpr char kChangeTimeKey[] = "change_time_us";
constexpr char kGroupKeyPrefix[] = "group/";
constexpr char kCurrentFile[] = "CURRENT_DB";
constexpr char kCurrentTmpFile[] = "CURRENT_DB.tmp";
constexpr char kGenerationPrefix[] = "db.";
// A checkpoint value larger than this is malformed (the largest legal one, kMaxDim with amsgrad,
// is 16 MiB plus the header).
constexpr uint64_t kMaxValueSize = 64ull << 20;
// Bulk loads write batches of about this many bytes.
constexpr size_t kBulkBatchBytes = 4 << 20;
// LoadDump reads, merges and writes this many records per batch.
constexpr size_t kDumpApplyBatch = 4096;
constexpr int64_t kMillisPerDay = 86400 * 1000;

void LogWarning(const std::string& message) { LogStoreWarning("embeddings", message); }

// RocksDB's TTL removes keys in background compactions, which the store does not see. This listener
// notices compactions of the data family that dropped records other than overwritten versions (the
// store never deletes, so those are expired keys) and raises a flag; the store turns the flag into
// a change-time bump at its next change_time_us() or TakeSnapshot(), so cached views are redone.
class ExpiryListener final : public rocksdb::EventListener {
 public:
  explicit ExpiryListener(std::shared_ptr<std::atomic<bool>> flag) : flag_(std::move(flag)) {}
  void OnCompactionCompleted(rocksdb::DB*, const rocksdb::CompactionJobInfo& info) override {
    if (info.cf_name != rocksdb::kDefaultColumnFamilyName || !info.status.ok()) return;
    const auto& st = info.stats;
    if (st.num_input_records > st.num_output_records + st.num_records_replaced) flag_->store(true);
  }

 private:
  const std::shared_ptr<std::atomic<bool>> flag_;
};

int64_t SystemMicros() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);  // cannot fail for CLOCK_REALTIME with a valid pointer
  return static_cast<int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

std::string GroupName(int group) { return "group " + std::to_string(group); }

Status CheckGroupRange(int group) {
  if (group < 0 || group >= kGroups) {
    return InvalidArgument("group " + std::to_string(group) + " is outside 0..255");
  }
  return Status::Ok();
}

rocksdb::Slice KeySlice(const uint64_t& storage_key) {
  return rocksdb::Slice(reinterpret_cast<const char*>(&storage_key), sizeof storage_key);
}

// Full scans bypass the block cache (they would evict Lookup's working set) and read ahead.
rocksdb::ReadOptions ScanOptions(const rocksdb::Snapshot* snapshot) {
  rocksdb::ReadOptions ro;
  ro.snapshot = snapshot;
  ro.fill_cache = false;
  ro.readahead_size = 2 << 20;
  return ro;
}

// ---- group configuration: validated runtime objects, and their text in the meta family ----

struct GroupRuntime {
  GroupConfig config;
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<Initializer> initializer;
  int slots_per_weight = 0;
  size_t value_size = 0;
};
using GroupTable = std::array<std::shared_ptr<const GroupRuntime>, kGroups>;

Result<std::shared_ptr<const GroupRuntime>> MakeRuntime(int group, const GroupConfig& config) {
  if (config.dim <= 0 || config.dim > kMaxDim) {
    return InvalidArgument(GroupName(group) + ": dim " + std::to_string(config.dim) +
                           " is outside 1.." + std::to_string(kMaxDim));
  }
  auto rt = std::make_shared<GroupRuntime>();
  rt->config = config;
  auto opt = MakeOptimizer(config.optimizer, config.optimizer_params);
  if (!opt.ok()) return InvalidArgument(GroupName(group) + ": " + opt.status().message());
  auto init = MakeInitializer(config.initializer, config.initializer_params);
  if (!init.ok()) return InvalidArgument(GroupName(group) + ": " + init.status().message());
  rt->optimizer = std::move(opt).value();
  rt->initializer = std::move(init).value();
  rt->slots_per_weight = rt->optimizer->SlotsPerWeight();
  rt->value_size = ValueSize(config.dim, rt->slots_per_weight);
  return std::shared_ptr<const GroupRuntime>(std::move(rt));
}

bool SameConfig(const GroupConfig& a, const GroupConfig& b) {
  return a.dim == b.dim && a.optimizer == b.optimizer && a.initializer == b.initializer &&
         a.optimizer_params == b.optimizer_params && a.initializer_params == b.initializer_params;
}

std::string GroupMetaKey(int group) {
  char buf[16];
  snprintf(buf, sizeof buf, "%s%03d", kGroupKeyPrefix, group);
  return buf;
}

// One "name=value" per line; doubles with 17 significant digits, so they read back exactly.
std::string EncodeGroupConfig(const GroupConfig& c) {
  std::string out = "dim=" + std::to_string(c.dim) + "\noptimizer=" + c.optimizer +
                    "\ninitializer=" + c.initializer + "\n";
  char buf[64];
  for (const auto& [prefix, params] : {std::pair{"optimizer.", &c.optimizer_params},
                                       std::pair{"initializer.", &c.initializer_params}}) {
    for (const auto& [name, value] : *params) {
      snprintf(buf, sizeof buf, "%.17g", value);
      out += prefix + name + "=" + buf + "\n";
    }
  }
  return out;
}

Result<GroupConfig> DecodeGroupConfig(std::string_view text, const std::string& what) {
  GroupConfig c;
  bool have_dim = false;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    size_t eq = line.find('=');
    if (eq == std::string_view::npos)
      return Corruption(what + ": bad line '" + std::string(line) + "'");
    std::string name(line.substr(0, eq));
    std::string value(line.substr(eq + 1));
    if (name == "dim") {
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), c.dim);
      if (ec != std::errc() || p != value.data() + value.size())
        return Corruption(what + ": bad dim");
      have_dim = true;
    } else if (name == "optimizer") {
      c.optimizer = value;
    } else if (name == "initializer") {
      c.initializer = value;
    } else {
      char* end = nullptr;
      double v = strtod(value.c_str(), &end);
      if (end != value.c_str() + value.size()) return Corruption(what + ": bad number for " + name);
      if (name.rfind("optimizer.", 0) == 0) {
        c.optimizer_params[name.substr(10)] = v;
      } else if (name.rfind("initializer.", 0) == 0) {
        c.initializer_params[name.substr(12)] = v;
      } else {
        return Corruption(what + ": unknown field " + name);
      }
    }
  }
  if (!have_dim) return Corruption(what + ": no dim");
  return c;
}

// ---- CURRENT_DB: which generation is live, and in which mode it was written ----

struct Generation {
  uint64_t number = 0;
  DbMode mode = DbMode::kPlain;
};

std::string GenerationName(uint64_t n) { return kGenerationPrefix + std::to_string(n); }

bool ParseGenerationName(std::string_view name, uint64_t* n) {
  if (name.rfind(kGenerationPrefix, 0) != 0) return false;
  std::string_view digits = name.substr(strlen(kGenerationPrefix));
  auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), *n);
  return !digits.empty() && ec == std::errc() && p == digits.data() + digits.size();
}

Result<std::optional<Generation>> ReadCurrent(const std::string& dir) {
  auto text = ReadFileToString(dir + "/" + kCurrentFile);
  if (!text.ok()) {
    if (text.status().code() == StatusCode::kNotFound) return std::optional<Generation>();
    return text.status();
  }
  std::string_view t = *text;
  if (!t.empty() && t.back() == '\n') t.remove_suffix(1);
  size_t sp = t.find(' ');
  Generation g;
  std::string_view mode = sp == std::string_view::npos ? "" : t.substr(sp + 1);
  if (sp == std::string_view::npos || !ParseGenerationName(t.substr(0, sp), &g.number) ||
      (mode != "plain" && mode != "ttl")) {
    return Corruption(dir + "/" + kCurrentFile + ": unreadable ('" + std::string(t) + "')");
  }
  g.mode = mode == "ttl" ? DbMode::kTtl : DbMode::kPlain;
  return std::optional<Generation>(g);
}

// Points CURRENT_DB at generation g. Sets *renamed once the rename happened: from then on the new
// generation is the one a restart opens, even if the directory fsync that follows fails.
Status WriteCurrent(const std::string& dir, const Generation& g, bool* renamed) {
  *renamed = false;
  // 1. write CURRENT_DB.tmp and fsync it; 2. rename it over CURRENT_DB; 3. fsync the directory.
  const std::string tmp = dir + "/" + kCurrentTmpFile;
  const std::string text =
      GenerationName(g.number) + (g.mode == DbMode::kTtl ? " ttl\n" : " plain\n");
  ASSIGN_OR_RETURN(ScopedFd fd, OpenFile(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644));
  RETURN_IF_ERROR(PwriteFull(fd.get(), text.data(), text.size(), 0));
  if (::fsync(fd.get()) != 0) return ErrnoError("fsync " + tmp, errno);
  RETURN_IF_ERROR(fd.Close());
  const std::string current = dir + "/" + kCurrentFile;
  if (::rename(tmp.c_str(), current.c_str()) != 0) return ErrnoError("rename " + tmp, errno);
  *renamed = true;
  return SyncDir(dir);
}

// ---- batches of keys: storage keys, de-duplicated, and the per-stripe locks over them ----

// The storage keys of one call's keys, each distinct key once (`unique`), and for every input
// position the index of its key in `unique` (`slot`).
struct KeyBatch {
  std::vector<uint64_t> unique;
  std::vector<uint32_t> slot;
  std::vector<uint32_t> first;  // an input position of each unique key (the first one)

  static KeyBatch Make(const std::vector<uint64_t>& storage_keys) {
    KeyBatch b;
    const size_t n = storage_keys.size();
    std::vector<uint32_t> order(n);
    std::iota(order.begin(), order.end(), 0u);
    std::stable_sort(order.begin(), order.end(),
                     [&](uint32_t a, uint32_t c) { return storage_keys[a] < storage_keys[c]; });
    b.slot.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const uint32_t pos = order[i];
      if (b.unique.empty() || b.unique.back() != storage_keys[pos]) {
        b.unique.push_back(storage_keys[pos]);
        b.first.push_back(pos);
      }
      b.slot[pos] = static_cast<uint32_t>(b.unique.size() - 1);
    }
    return b;
  }
};

inline int StripeOf(uint64_t storage_key) {
  return static_cast<int>((storage_key * 0x9E3779B97F4A7C15ull) >> 58);  // 6 bits: 64 stripes
}

// Locks the stripes of a set of keys in ascending order (so two batches never deadlock) and
// unlocks them at scope exit. Read-modify-write of one key is serialized by its stripe.
class StripeLocks {
 public:
  StripeLocks(std::array<std::mutex, kStripes>& mutexes, const std::vector<uint64_t>& keys)
      : mutexes_(mutexes) {
    for (uint64_t k : keys) held_ |= 1ull << StripeOf(k);
    for (int i = 0; i < kStripes; ++i) {
      if (held_ & (1ull << i)) mutexes_[i].lock();
    }
  }
  ~StripeLocks() {
    for (int i = 0; i < kStripes; ++i) {
      if (held_ & (1ull << i)) mutexes_[i].unlock();
    }
  }
  StripeLocks(const StripeLocks&) = delete;
  StripeLocks& operator=(const StripeLocks&) = delete;

 private:
  std::array<std::mutex, kStripes>& mutexes_;
  uint64_t held_ = 0;
};

// Writes a new generation in bulk: batches without the WAL, then one flush that makes it durable.
class BulkWriter {
 public:
  explicit BulkWriter(RocksDb& db) : db_(db) {}
  Status Put(rocksdb::ColumnFamilyHandle* family, const rocksdb::Slice& key,
             const rocksdb::Slice& value) {
    rocksdb::Status s = batch_.Put(family, key, value);
    if (!s.ok()) return FromRocks(s, "bulk load");
    return batch_.GetDataSize() >= kBulkBatchBytes ? WriteBatch() : Status::Ok();
  }
  RocksDb& db() const { return db_; }
  // Writes what is batched and flushes every family to synced SST files.
  Status Finish() {
    RETURN_IF_ERROR(WriteBatch());
    rocksdb::FlushOptions fo;
    fo.wait = true;
    RETURN_IF_ERROR(
        FromRocks(db_.db()->Flush(fo, {db_.data(), db_.meta()}), "flush " + db_.path()));
    return SyncDir(db_.path());
  }

 private:
  Status WriteBatch() {
    if (batch_.Count() == 0) return Status::Ok();
    rocksdb::WriteOptions wo;
    wo.disableWAL = true;  // durability comes from Finish()'s flush; a crash before it discards all
    rocksdb::Status s = db_.db()->Write(wo, &batch_);
    batch_.Clear();
    return FromRocks(s, "bulk load into " + db_.path());
  }

  RocksDb& db_;
  rocksdb::WriteBatch batch_;
};

class SnapshotImpl final : public Snapshot {
 public:
  SnapshotImpl(const void* owner, std::shared_ptr<RocksDb> db, GroupTable groups,
               int64_t change_time_us, int64_t taken_at_us)
      : owner_(owner),
        db_(std::move(db)),
        snapshot_(db_->db()->GetSnapshot()),
        groups_(std::move(groups)),
        change_time_us_(change_time_us),
        taken_at_us_(taken_at_us) {}
  ~SnapshotImpl() override { db_->db()->ReleaseSnapshot(snapshot_); }

  int64_t change_time_us() const override { return change_time_us_; }

  const void* owner() const { return owner_; }
  RocksDb& db() const { return *db_; }
  const rocksdb::Snapshot* rocks_snapshot() const { return snapshot_; }
  const GroupTable& groups() const { return groups_; }
  int64_t taken_at_us() const { return taken_at_us_; }

 private:
  const void* const owner_;
  const std::shared_ptr<RocksDb> db_;  // keeps a replaced generation open while this snapshot lives
  const rocksdb::Snapshot* const snapshot_;
  const GroupTable groups_;
  const int64_t change_time_us_;
  const int64_t taken_at_us_;
};

class EmbeddingStoreImpl final : public EmbeddingStore {
 public:
  EmbeddingStoreImpl(std::string dir, StoreOptions options, ScopedFd lock_fd)
      : dir_(std::move(dir)), options_(std::move(options)), lock_fd_(std::move(lock_fd)) {}

  // Open()'s work after the lock: crash leftovers removed, the live generation opened (converted
  // first when the TTL mode changed), configuration and change time loaded.
  Status Init();

  Status ConfigureGroup(int group, const GroupConfig& config) override;
  Status ConfigureGroups(const std::map<int, GroupConfig>& configs) override;
  Result<std::optional<GroupConfig>> GetGroup(int group) override;
  Result<std::map<int, GroupConfig>> Groups() override;
  Result<std::vector<float>> Lookup(int group, const std::vector<uint64_t>& keys) override;
  Status ApplyGradients(int group, const std::vector<uint64_t>& keys,
                        const std::vector<float>& grads) override;
  Result<std::shared_ptr<const Snapshot>> TakeSnapshot() override;
  Status Dump(const Snapshot& snapshot, const Conditions& conditions, int out_fd) override;
  Status Checkpoint(const Snapshot& snapshot, int out_fd) override;
  Status LoadCheckpoint(int fd) override;
  Status LoadDump(int fd, std::optional<int> only_group) override;
  Result<Stats> GetStats() override;
  int64_t change_time_us() override {
    NoteExpiry();
    return change_time_us_.load();
  }
  Status Sync() override;
  Status Compact() override;
  Status SetChangeTime(int64_t time_us) override;

 private:
  // The runtime of a configured group (db_mu_ held): InvalidArgument for a group outside 0..255 or
  // one that is not configured.
  Result<std::shared_ptr<const GroupRuntime>> ConfiguredLocked(int group);
  // Bumps the change time when RocksDB's TTL dropped keys since the last call (see ExpiryListener).
  void NoteExpiry();
  int64_t NowMicros() const { return options_.clock_us ? options_.clock_us() : SystemMicros(); }
  DbMode WantedMode() const { return options_.ttl_seconds > 0 ? DbMode::kTtl : DbMode::kPlain; }
  std::string GenerationPath(uint64_t n) const { return dir_ + "/" + GenerationName(n); }

  std::shared_ptr<RocksDb> CurrentDb() {
    std::shared_lock lock(db_mu_);
    return db_;
  }
  GroupTable CurrentGroups() {
    std::shared_lock lock(db_mu_);
    return groups_;
  }
  Result<const SnapshotImpl*> OwnSnapshot(const Snapshot& snapshot) const {
    auto* s = dynamic_cast<const SnapshotImpl*>(&snapshot);
    if (s == nullptr || s->owner() != this) {
      return InvalidArgument("the snapshot belongs to another embeddings store");
    }
    return s;
  }

  // Adds the change time to `batch` and writes it: the persisted change time only grows, because
  // assigning it and writing happen under commit_mu_.
  Status Commit(RocksDb& db, rocksdb::WriteBatch* batch);
  // MultiGet of storage keys in the live generation (db_mu_ held shared by the caller).
  std::vector<rocksdb::Status> MultiGet(const std::vector<uint64_t>& keys,
                                        std::vector<std::string>* values);

  // An empty generation, new number, marked obsolete until SwitchTo() makes it live.
  Result<std::shared_ptr<RocksDb>> NewGeneration(DbMode mode, uint64_t* number);
  // Steps 4 and 5 of LoadCheckpoint: change time, CURRENT_DB, swap (see LoadCheckpoint).
  Status SwitchTo(std::shared_ptr<RocksDb> db, uint64_t number);
  // Copies a generation written in the other TTL mode into a new one (Open, when the mode changed).
  Status ConvertGeneration(const Generation& old_gen);
  Status LoadMeta();

  // Streams a checkpoint; validate-only when `out` is null, else also writes it into `out`.
  Status ReadCheckpoint(int fd, const GroupTable& groups, BulkWriter* out);
  // Streams a dump; validate-only when `apply` is false, else upserts it in batches.
  Status ReadDump(int fd, const GroupTable& groups, std::optional<int> only_group, bool apply);
  struct DumpRecord {
    uint64_t storage_key;
    uint64_t key;
    int group;
    size_t weights;  // index into the batch's weights
  };
  Status ApplyDumpBatch(const GroupTable& groups, std::vector<DumpRecord>& records,
                        const std::vector<float>& weights);
  // A value of the group in the live generation, if any (a full scan; db_mu_ held by the caller).
  Result<std::optional<std::string>> FindGroupValue(int group);

  // ---- constant after construction ----
  const std::string dir_;
  const StoreOptions options_;
  const ScopedFd lock_fd_;  // flock'ed exclusively for the store's lifetime

  // Serializes whole-store operations (ConfigureGroup, LoadCheckpoint, LoadDump): the configuration
  // they validate against cannot change under them, and a load never straddles a generation swap.
  std::mutex admin_mu_;
  uint64_t last_generation_ = 0;  // protected by admin_mu_ (and Init, before the store is shared)

  // Shared by every data operation for its whole duration, exclusive for swapping the generation
  // and for changing a group's configuration (so no read-modify-write straddles either).
  std::shared_mutex db_mu_;
  std::shared_ptr<RocksDb> db_;  // protected by db_mu_
  GroupTable groups_;            // protected by db_mu_

  std::array<std::mutex, kStripes> stripes_;

  std::mutex commit_mu_;
  std::atomic<int64_t> change_time_us_{0};  // written under commit_mu_

  const std::shared_ptr<std::atomic<bool>> expired_ = std::make_shared<std::atomic<bool>>(false);
  const std::shared_ptr<rocksdb::EventListener> listener_ =
      std::make_shared<ExpiryListener>(expired_);
};

// ---- open ----

Status EmbeddingStoreImpl::Init() {
  ASSIGN_OR_RETURN(std::optional<Generation> current, ReadCurrent(dir_));
  // Crash leftovers: generations not named by CURRENT_DB (a load or conversion that did not reach
  // its rename, or an old generation whose deletion did not happen) and a half-written pointer.
  DIR* d = ::opendir(dir_.c_str());
  if (d == nullptr) return ErrnoError("opendir " + dir_, errno);
  std::vector<std::string> stale;
  while (struct dirent* e = ::readdir(d)) {
    uint64_t n = 0;
    if (!ParseGenerationName(e->d_name, &n)) continue;
    last_generation_ = std::max(last_generation_, n);
    if (!current || n != current->number) stale.push_back(dir_ + "/" + e->d_name);
  }
  ::closedir(d);  // a read-only directory stream: its close error cannot lose data
  for (const std::string& path : stale) {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
    if (ec) return IOError("remove leftover " + path + ": " + ec.message());
  }
  if (::unlink((dir_ + "/" + kCurrentTmpFile).c_str()) != 0 && errno != ENOENT) {
    return ErrnoError("unlink " + dir_ + "/" + kCurrentTmpFile, errno);
  }

  if (!current) {
    // A new store: 1. create its first generation; 2. CURRENT_DB names it. A crash in between
    // leaves a generation that the next open removes as a leftover.
    uint64_t number = 0;
    ASSIGN_OR_RETURN(std::shared_ptr<RocksDb> db, NewGeneration(WantedMode(), &number));
    bool renamed = false;
    Status st = WriteCurrent(dir_, {number, WantedMode()}, &renamed);
    if (!renamed) return st;
    db->SetObsolete(false);
    db_ = std::move(db);
    RETURN_IF_ERROR(st);
    rocksdb::WriteBatch batch;  // the creation is the first change
    return Commit(*db_, &batch);
  }
  if (current->mode != WantedMode()) return ConvertGeneration(*current);
  ASSIGN_OR_RETURN(db_, RocksDb::Open(GenerationPath(current->number), current->mode,
                                      options_.ttl_seconds, /*create=*/false, listener_));
  return LoadMeta();
}

Status EmbeddingStoreImpl::LoadMeta() {
  std::unique_ptr<rocksdb::Iterator> it(
      db_->db()->NewIterator(rocksdb::ReadOptions(), db_->meta()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const std::string key = it->key().ToString();
    if (key == kChangeTimeKey) {
      if (it->value().size() != 8) return Corruption(db_->path() + ": bad change time");
      change_time_us_.store(LoadLE<int64_t>(it->value().data()));
      continue;
    }
    int group = -1;
    if (key.rfind(kGroupKeyPrefix, 0) != 0 ||
        std::from_chars(key.data() + 6, key.data() + key.size(), group).ec != std::errc() ||
        group < 0 || group >= kGroups) {
      return Corruption(db_->path() + ": unknown configuration key '" + key + "'");
    }
    const std::string what = db_->path() + " " + GroupName(group);
    ASSIGN_OR_RETURN(GroupConfig config, DecodeGroupConfig(it->value().ToString(), what));
    auto rt = MakeRuntime(group, config);
    if (!rt.ok()) return Corruption(what + ": " + rt.status().message());
    groups_[group] = std::move(rt).value();
  }
  return FromRocks(it->status(), "read configuration of " + db_->path());
}

Result<std::shared_ptr<RocksDb>> EmbeddingStoreImpl::NewGeneration(DbMode mode, uint64_t* number) {
  *number = ++last_generation_;
  const std::string path = GenerationPath(*number);
  ASSIGN_OR_RETURN(std::shared_ptr<RocksDb> db,
                   RocksDb::Open(path, mode, options_.ttl_seconds, /*create=*/true, listener_));
  db->SetObsolete(true);
  return db;
}

Status EmbeddingStoreImpl::ConvertGeneration(const Generation& old_gen) {
  // 1. open the old generation in the mode it was written in; 2. copy data and meta into a new
  // generation in the wanted mode, flushed; 3. CURRENT_DB names the new one; 4. delete the old one.
  // A crash before 3 leaves the old generation live (the copy is a leftover); after 3, the new one.
  ASSIGN_OR_RETURN(
      std::shared_ptr<RocksDb> old_db,
      RocksDb::Open(GenerationPath(old_gen.number), old_gen.mode, 0, /*create=*/false));
  uint64_t number = 0;
  ASSIGN_OR_RETURN(std::shared_ptr<RocksDb> db, NewGeneration(WantedMode(), &number));
  BulkWriter writer(*db);
  for (auto [from, to] :
       {std::pair{old_db->data(), db->data()}, std::pair{old_db->meta(), db->meta()}}) {
    std::unique_ptr<rocksdb::Iterator> it(old_db->db()->NewIterator(ScanOptions(nullptr), from));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      RETURN_IF_ERROR(writer.Put(to, it->key(), it->value()));
    }
    RETURN_IF_ERROR(FromRocks(it->status(), "read " + old_db->path()));
  }
  RETURN_IF_ERROR(writer.Finish());
  bool renamed = false;
  Status st = WriteCurrent(dir_, {number, WantedMode()}, &renamed);
  if (!renamed) return st;
  db->SetObsolete(false);
  old_db->SetObsolete(true);
  old_db.reset();
  db_ = std::move(db);
  RETURN_IF_ERROR(st);
  return LoadMeta();
}

// ---- configuration ----

Result<std::optional<std::string>> EmbeddingStoreImpl::FindGroupValue(int group) {
  std::unique_ptr<rocksdb::Iterator> it(db_->db()->NewIterator(ScanOptions(nullptr), db_->data()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    rocksdb::Slice k = it->key();
    if (k.size() == kStorageKeySize && GroupOfStorageKey(LoadLE<uint64_t>(k.data())) == group) {
      return std::optional<std::string>(it->value().ToString());
    }
  }
  RETURN_IF_ERROR(FromRocks(it->status(), "scan " + db_->path()));
  return std::optional<std::string>();
}

Status EmbeddingStoreImpl::ConfigureGroup(int group, const GroupConfig& config) {
  return ConfigureGroups({{group, config}});
}

Status EmbeddingStoreImpl::ConfigureGroups(const std::map<int, GroupConfig>& configs) {
  // 1. Every configuration is checked (names, parameters, layout against stored keys) before any is
  //    written; 2. all of them are written in one batch: a bad one changes nothing.
  std::map<int, std::shared_ptr<const GroupRuntime>> runtimes;
  for (const auto& [group, config] : configs) {
    RETURN_IF_ERROR(CheckGroupRange(group));
    ASSIGN_OR_RETURN(runtimes[group], MakeRuntime(group, config));
  }
  std::lock_guard admin(admin_mu_);
  std::unique_lock lock(db_mu_);
  rocksdb::WriteBatch batch;
  std::vector<int> changed;
  for (const auto& [group, config] : configs) {
    const std::shared_ptr<const GroupRuntime>& old = groups_[group];
    const std::shared_ptr<const GroupRuntime>& rt = runtimes[group];
    if (old && SameConfig(old->config, config)) continue;
    if (!old || old->config.dim != config.dim || old->value_size != rt->value_size) {
      // Stored values must keep fitting the group's layout (dump, checkpoint and the optimizers rely
      // on it), so a layout change needs a group without keys. The scan is the price of a rare call.
      ASSIGN_OR_RETURN(std::optional<std::string> value, FindGroupValue(group));
      if (value) {
        const int32_t dim =
            value->size() >= kValueHeaderSize ? LoadLE<int32_t>(value->data() + kValueDimOffset) : -1;
        if (dim != config.dim) {
          return InvalidArgument(GroupName(group) + " has keys of dim " + std::to_string(dim) +
                                 ": its dim cannot change to " + std::to_string(config.dim));
        }
        if (value->size() != rt->value_size) {
          return InvalidArgument(GroupName(group) + " has keys with " +
                                 std::to_string((value->size() - kValueHeaderSize) / 4 / dim - 1) +
                                 " optimizer slot(s) per weight; " + config.optimizer + " needs " +
                                 std::to_string(rt->slots_per_weight) +
                                 " (another slot layout needs a group without keys)");
        }
      }
    }
    RETURN_IF_ERROR(FromRocks(batch.Put(db_->meta(), GroupMetaKey(group), EncodeGroupConfig(config)),
                              "configure " + GroupName(group)));
    changed.push_back(group);
  }
  if (changed.empty()) return Status::Ok();
  RETURN_IF_ERROR(Commit(*db_, &batch));
  for (int group : changed) groups_[group] = runtimes[group];
  return Status::Ok();
}

Result<std::optional<GroupConfig>> EmbeddingStoreImpl::GetGroup(int group) {
  RETURN_IF_ERROR(CheckGroupRange(group));
  std::shared_lock lock(db_mu_);
  if (!groups_[group]) return std::optional<GroupConfig>();
  return std::optional<GroupConfig>(groups_[group]->config);
}

Result<std::map<int, GroupConfig>> EmbeddingStoreImpl::Groups() {
  std::shared_lock lock(db_mu_);
  std::map<int, GroupConfig> out;
  for (int g = 0; g < kGroups; ++g) {
    if (groups_[g]) out.emplace(g, groups_[g]->config);
  }
  return out;
}

// ---- damo API ----

Status EmbeddingStoreImpl::Commit(RocksDb& db, rocksdb::WriteBatch* batch) {
  std::lock_guard lock(commit_mu_);
  const int64_t t = std::max(NowMicros(), change_time_us_.load() + 1);
  char buf[8];
  StoreLE(buf, t);
  RETURN_IF_ERROR(
      FromRocks(batch->Put(db.meta(), kChangeTimeKey, rocksdb::Slice(buf, 8)), "write"));
  RETURN_IF_ERROR(FromRocks(db.db()->Write(rocksdb::WriteOptions(), batch), "write " + db.path()));
  change_time_us_.store(t);
  return Status::Ok();
}

Status EmbeddingStoreImpl::SetChangeTime(int64_t time_us) {
  if (time_us < 0) return InvalidArgument("change time " + std::to_string(time_us) + " is negative");
  std::shared_ptr<RocksDb> db = CurrentDb();
  std::lock_guard lock(commit_mu_);
  char buf[8];
  StoreLE(buf, time_us);
  rocksdb::WriteBatch batch;
  RETURN_IF_ERROR(FromRocks(batch.Put(db->meta(), kChangeTimeKey, rocksdb::Slice(buf, 8)), "write"));
  RETURN_IF_ERROR(FromRocks(db->db()->Write(rocksdb::WriteOptions(), &batch), "write " + db->path()));
  change_time_us_.store(time_us);
  return Status::Ok();
}

std::vector<rocksdb::Status> EmbeddingStoreImpl::MultiGet(const std::vector<uint64_t>& keys,
                                                          std::vector<std::string>* values) {
  std::vector<rocksdb::Slice> slices;
  slices.reserve(keys.size());
  for (const uint64_t& k : keys) slices.push_back(KeySlice(k));
  // The vector form: it is the one RocksDB's TTL layer strips its timestamps from.
  std::vector<rocksdb::ColumnFamilyHandle*> families(keys.size(), db_->data());
  return db_->db()->MultiGet(rocksdb::ReadOptions(), families, slices, values);
}

Result<std::shared_ptr<const GroupRuntime>> EmbeddingStoreImpl::ConfiguredLocked(int group) {
  RETURN_IF_ERROR(CheckGroupRange(group));
  if (!groups_[group]) return InvalidArgument(GroupName(group) + " is not configured");
  return groups_[group];
}

Result<std::vector<float>> EmbeddingStoreImpl::Lookup(int group,
                                                      const std::vector<uint64_t>& keys) {
  std::shared_lock lock(db_mu_);
  ASSIGN_OR_RETURN(const std::shared_ptr<const GroupRuntime> rt, ConfiguredLocked(group));
  const int dim = rt->config.dim;
  std::vector<float> out(keys.size() * static_cast<size_t>(dim));
  if (keys.empty()) return out;

  std::vector<uint64_t> storage_keys(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) storage_keys[i] = StorageKey(group, keys[i]);
  const KeyBatch batch = KeyBatch::Make(storage_keys);
  StripeLocks stripes(stripes_, batch.unique);
  std::vector<std::string> values;
  std::vector<rocksdb::Status> found = MultiGet(batch.unique, &values);

  rocksdb::WriteBatch writes;
  const uint64_t now_ms = static_cast<uint64_t>(NowMicros() / 1000);
  for (size_t u = 0; u < batch.unique.size(); ++u) {
    const uint64_t key = keys[batch.first[u]];
    if (found[u].ok()) {
      if (values[u].size() != rt->value_size) {
        return Corruption(GroupName(group) + " key " + std::to_string(key) + ": stored value has " +
                          std::to_string(values[u].size()) + " bytes, the group's layout " +
                          std::to_string(rt->value_size));
      }
      continue;
    }
    if (!found[u].IsNotFound()) return FromRocks(found[u], "lookup " + GroupName(group));
    // damo's create(): the initializer's weights, zero slots, update_num 0, the key as given.
    std::string& v = values[u];
    v.assign(rt->value_size, '\0');
    EncodeValueHeader({group, key, now_ms, 0, dim}, v.data());
    rt->initializer->Fill(ValueFloats(v.data()), dim);
    RETURN_IF_ERROR(FromRocks(writes.Put(db_->data(), KeySlice(batch.unique[u]), v), "lookup"));
  }
  if (writes.Count() > 0) RETURN_IF_ERROR(Commit(*db_, &writes));
  for (size_t i = 0; i < keys.size(); ++i) {
    memcpy(out.data() + i * dim, ValueFloats(values[batch.slot[i]].data()), sizeof(float) * dim);
  }
  return out;
}

Status EmbeddingStoreImpl::ApplyGradients(int group, const std::vector<uint64_t>& keys,
                                          const std::vector<float>& grads) {
  std::shared_lock lock(db_mu_);
  ASSIGN_OR_RETURN(const std::shared_ptr<const GroupRuntime> rt, ConfiguredLocked(group));
  const int dim = rt->config.dim;
  if (grads.size() != keys.size() * static_cast<size_t>(dim)) {
    return InvalidArgument(GroupName(group) + ": " + std::to_string(grads.size()) +
                           " gradients for " + std::to_string(keys.size()) + " keys of dim " +
                           std::to_string(dim) + " (expected " + std::to_string(keys.size() * dim) +
                           ")");
  }
  if (keys.empty()) return Status::Ok();

  std::vector<uint64_t> storage_keys(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) storage_keys[i] = StorageKey(group, keys[i]);
  const KeyBatch batch = KeyBatch::Make(storage_keys);
  StripeLocks stripes(stripes_, batch.unique);
  std::vector<std::string> values;
  std::vector<rocksdb::Status> found = MultiGet(batch.unique, &values);
  for (size_t u = 0; u < batch.unique.size(); ++u) {
    const uint64_t key = keys[batch.first[u]];
    if (found[u].IsNotFound()) {
      return InvalidArgument(GroupName(group) + " key " + std::to_string(key) +
                             ": no such key (gradients need a Lookup first)");
    }
    if (!found[u].ok()) return FromRocks(found[u], "apply gradients to " + GroupName(group));
    if (values[u].size() != rt->value_size) {
      return Corruption(GroupName(group) + " key " + std::to_string(key) + ": stored value has " +
                        std::to_string(values[u].size()) + " bytes, the group's layout " +
                        std::to_string(rt->value_size));
    }
  }
  // Repeated keys take one step each, in order, as damo's merge operands did.
  for (size_t i = 0; i < keys.size(); ++i) {
    char* v = values[batch.slot[i]].data();
    const uint64_t step = LoadLE<uint64_t>(v + kValueUpdateNumOffset) + 1;
    StoreLE(v + kValueUpdateNumOffset, step);
    rt->optimizer->Step(ValueFloats(v), grads.data() + i * dim, dim, step);
  }
  const uint64_t now_ms = static_cast<uint64_t>(NowMicros() / 1000);
  rocksdb::WriteBatch writes;
  for (size_t u = 0; u < batch.unique.size(); ++u) {
    StoreLE(values[u].data() + kValueUpdateTimeOffset, now_ms);
    RETURN_IF_ERROR(FromRocks(writes.Put(db_->data(), KeySlice(batch.unique[u]), values[u]),
                              "apply gradients"));
  }
  return Commit(*db_, &writes);
}

// ---- whole-store views ----

void EmbeddingStoreImpl::NoteExpiry() {
  if (!expired_->exchange(false)) return;
  std::shared_lock lock(db_mu_);
  rocksdb::WriteBatch batch;
  Status st = Commit(*db_, &batch);
  if (!st.ok()) {
    expired_->store(true);  // retried at the next call
    LogWarning("recording a TTL expiry: " + st.ToString());
  }
}

Result<std::shared_ptr<const Snapshot>> EmbeddingStoreImpl::TakeSnapshot() {
  NoteExpiry();
  std::shared_lock lock(db_mu_);
  // Under commit_mu_ no write is between its change time and its RocksDB write, so the snapshot
  // holds exactly the changes up to the change time it reports.
  std::lock_guard commit(commit_mu_);
  return std::shared_ptr<const Snapshot>(
      std::make_shared<SnapshotImpl>(this, db_, groups_, change_time_us_.load(), NowMicros()));
}

Status EmbeddingStoreImpl::Dump(const Snapshot& snapshot, const Conditions& conditions,
                                int out_fd) {
  ASSIGN_OR_RETURN(const SnapshotImpl* snap, OwnSnapshot(snapshot));
  if (conditions.expire_days && *conditions.expire_days < 0) {
    return InvalidArgument("expire_days must not be negative");
  }
  if (conditions.min_count && *conditions.min_count < 0) {
    return InvalidArgument("min_count must not be negative");
  }
  if (conditions.group) RETURN_IF_ERROR(CheckGroupRange(*conditions.group));

  int32_t dims[kGroups] = {};
  uint64_t counts[kGroups] = {};
  bool configured[kGroups] = {};
  for (int g = 0; g < kGroups; ++g) {
    if (snap->groups()[g]) {
      dims[g] = snap->groups()[g]->config.dim;
      configured[g] = true;
    }
  }
  // damo keeps a key when update_time >= now - expire_days (ms); a threshold before the epoch
  // keeps every key (damo's unsigned arithmetic wrapped around and dropped them all).
  const int64_t now_ms = snap->taken_at_us() / 1000;
  uint64_t oldest_ms = 0;
  if (conditions.expire_days) {
    const int64_t days = *conditions.expire_days;
    if (days <= now_ms / kMillisPerDay)
      oldest_ms = static_cast<uint64_t>(now_ms - days * kMillisPerDay);
  }
  const uint64_t min_count =
      conditions.min_count ? static_cast<uint64_t>(*conditions.min_count) : 0;
  const int only_group = conditions.group ? *conditions.group : -1;

  RocksDb& db = snap->db();
  std::unique_ptr<rocksdb::Iterator> it(
      db.db()->NewIterator(ScanOptions(snap->rocks_snapshot()), db.data()));
  FileWriter out(out_fd, kDumpHeaderSize);
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const rocksdb::Slice v = it->value();
    if (v.size() < kValueHeaderSize) {
      return Corruption("dump: a stored value of " + std::to_string(v.size()) + " bytes");
    }
    const char* p = v.data();
    const int32_t group = LoadLE<int32_t>(p + kValueGroupOffset);
    if (group < 0 || group >= kGroups) {
      return Corruption("dump: a stored value of group " + std::to_string(group));
    }
    if (only_group >= 0 && group != only_group) continue;
    if (LoadLE<uint64_t>(p + kValueUpdateTimeOffset) < oldest_ms) continue;
    if (LoadLE<uint64_t>(p + kValueUpdateNumOffset) < min_count) continue;
    const int32_t dim = LoadLE<int32_t>(p + kValueDimOffset);
    if (dim != dims[group]) {
      // An unconfigured group's header dim is its keys' dim (they all have one, see
      // LoadCheckpoint).
      if (configured[group] || counts[group] != 0 || dim <= 0) {
        return Corruption("dump: " + GroupName(group) + " has a value of dim " +
                          std::to_string(dim) + ", expected " + std::to_string(dims[group]));
      }
      dims[group] = dim;
    }
    const size_t weight_bytes = sizeof(float) * static_cast<size_t>(dim);
    if (v.size() < kValueHeaderSize + weight_bytes) {
      return Corruption("dump: a stored value shorter than its dim says");
    }
    char* rec = out.Claim(kDumpRecordPrefix + weight_bytes);
    if (rec == nullptr) return out.status();
    memcpy(rec, p + kValueKeyOffset, sizeof(uint64_t));
    memcpy(rec + sizeof(uint64_t), p + kValueGroupOffset, sizeof(int32_t));
    memcpy(rec + kDumpRecordPrefix, p + kValueHeaderSize, weight_bytes);
    ++counts[group];
  }
  RETURN_IF_ERROR(FromRocks(it->status(), "dump: scan " + db.path()));
  RETURN_IF_ERROR(out.Flush());
  char header[kDumpHeaderSize];
  memcpy(header, dims, sizeof dims);
  memcpy(header + sizeof dims, counts, sizeof counts);
  RETURN_IF_ERROR(PwriteFull(out_fd, header, sizeof header, 0));
  return TruncateIfLonger(out_fd, out.end_offset());
}

Status EmbeddingStoreImpl::Checkpoint(const Snapshot& snapshot, int out_fd) {
  ASSIGN_OR_RETURN(const SnapshotImpl* snap, OwnSnapshot(snapshot));
  RocksDb& db = snap->db();
  std::unique_ptr<rocksdb::Iterator> it(
      db.db()->NewIterator(ScanOptions(snap->rocks_snapshot()), db.data()));
  FileWriter out(out_fd, sizeof(uint64_t));
  uint64_t count = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const rocksdb::Slice k = it->key();
    const rocksdb::Slice v = it->value();
    char* rec = out.Claim(2 * sizeof(uint64_t) + k.size() + v.size());
    if (rec == nullptr) return out.status();
    StoreLE<uint64_t>(rec, k.size());
    memcpy(rec + sizeof(uint64_t), k.data(), k.size());
    rec += sizeof(uint64_t) + k.size();
    StoreLE<uint64_t>(rec, v.size());
    memcpy(rec + sizeof(uint64_t), v.data(), v.size());
    ++count;
  }
  RETURN_IF_ERROR(FromRocks(it->status(), "checkpoint: scan " + db.path()));
  RETURN_IF_ERROR(out.Flush());
  char header[sizeof(uint64_t)];
  StoreLE(header, count);
  RETURN_IF_ERROR(PwriteFull(out_fd, header, sizeof header, 0));
  return TruncateIfLonger(out_fd, out.end_offset());
}

Status EmbeddingStoreImpl::ReadCheckpoint(int fd, const GroupTable& groups, BulkWriter* out) {
  FileReader in(fd);
  ASSIGN_OR_RETURN(const char* p, in.Read(sizeof(uint64_t), "checkpoint header (u64 count)"));
  const uint64_t count = LoadLE<uint64_t>(p);
  // An unconfigured group's values are kept as they are, but they must agree with each other so
  // that the group can be dumped and later configured.
  int32_t loose_dim[kGroups] = {};
  uint64_t loose_size[kGroups] = {};
  char prev_key[kStorageKeySize];
  for (uint64_t i = 0; i < count; ++i) {
    const std::string what = "checkpoint record " + std::to_string(i);
    ASSIGN_OR_RETURN(p, in.Read(sizeof(uint64_t), what + " key length"));
    const uint64_t key_len = LoadLE<uint64_t>(p);
    if (key_len != kStorageKeySize) {
      return InvalidArgument(what + ": key length " + std::to_string(key_len) + ", expected 8");
    }
    ASSIGN_OR_RETURN(p, in.Read(kStorageKeySize, what + " key"));
    char key[kStorageKeySize];  // p is only valid until the next Read
    memcpy(key, p, kStorageKeySize);
    if (i > 0 && memcmp(prev_key, key, kStorageKeySize) >= 0) {
      return InvalidArgument(what +
                             ": keys must be strictly increasing, as a checkpoint lists them");
    }
    memcpy(prev_key, key, kStorageKeySize);
    const uint64_t storage_key = LoadLE<uint64_t>(key);
    ASSIGN_OR_RETURN(p, in.Read(sizeof(uint64_t), what + " value length"));
    const uint64_t value_len = LoadLE<uint64_t>(p);
    if (value_len < kValueHeaderSize || value_len > kMaxValueSize) {
      return InvalidArgument(what + ": value length " + std::to_string(value_len) + " is outside " +
                             std::to_string(kValueHeaderSize) + ".." +
                             std::to_string(kMaxValueSize));
    }
    ASSIGN_OR_RETURN(const char* value, in.Read(value_len, what + " value"));
    const ValueHeader h = DecodeValueHeader(value);
    const int group = GroupOfStorageKey(storage_key);
    if (h.group != group) {
      return InvalidArgument(what + ": the value says group " + std::to_string(h.group) +
                             ", the key group " + std::to_string(group));
    }
    if ((h.key & kKeyMask) != (storage_key & kKeyMask)) {
      return InvalidArgument(what + ": the value holds key " + std::to_string(h.key) +
                             ", the RocksDB key is " + std::to_string(storage_key));
    }
    if (h.dim <= 0 || h.dim > kMaxDim || value_len < ValueSize(h.dim, 0) ||
        (value_len - kValueHeaderSize) % (sizeof(float) * h.dim) != 0) {
      return InvalidArgument(what + ": a value of " + std::to_string(value_len) +
                             " bytes cannot have dim " + std::to_string(h.dim));
    }
    if (const auto& rt = groups[group]) {
      if (h.dim != rt->config.dim || value_len != rt->value_size) {
        return InvalidArgument(what + ": " + GroupName(group) + " has dim " +
                               std::to_string(rt->config.dim) + " and " + rt->config.optimizer +
                               "'s " + std::to_string(rt->value_size) +
                               "-byte values; this one has dim " + std::to_string(h.dim) + " and " +
                               std::to_string(value_len) + " bytes");
      }
    } else if (loose_size[group] == 0) {
      loose_dim[group] = h.dim;
      loose_size[group] = value_len;
    } else if (loose_dim[group] != h.dim || loose_size[group] != value_len) {
      return InvalidArgument(
          what + ": " + GroupName(group) + " (not configured here) has values of dim " +
          std::to_string(loose_dim[group]) + " and " + std::to_string(loose_size[group]) +
          " bytes; this one has dim " + std::to_string(h.dim) + " and " +
          std::to_string(value_len) + " bytes");
    }
    if (out != nullptr) {
      RETURN_IF_ERROR(out->Put(out->db().data(), rocksdb::Slice(key, kStorageKeySize),
                               rocksdb::Slice(value, value_len)));
    }
  }
  ASSIGN_OR_RETURN(bool at_end, in.AtEnd());
  if (!at_end) {
    return InvalidArgument("checkpoint: bytes follow the " + std::to_string(count) +
                           " records its header counts");
  }
  return Status::Ok();
}

Status EmbeddingStoreImpl::LoadCheckpoint(int fd) {
  std::lock_guard admin(admin_mu_);
  const GroupTable groups = CurrentGroups();  // stable: ConfigureGroup needs admin_mu_
  // 1. Validate the whole input; nothing is written before it passed.
  RETURN_IF_ERROR(ReadCheckpoint(fd, groups, nullptr));
  // 2. Build a new generation beside the live one: the records, then the configuration. Until
  //    step 4 it is marked obsolete, so any failure deletes it (and a crash leaves a leftover that
  //    the next open removes).
  uint64_t number = 0;
  ASSIGN_OR_RETURN(std::shared_ptr<RocksDb> db, NewGeneration(WantedMode(), &number));
  {
    BulkWriter writer(*db);
    RETURN_IF_ERROR(ReadCheckpoint(fd, groups, &writer));
    for (int g = 0; g < kGroups; ++g) {
      if (groups[g]) {
        RETURN_IF_ERROR(
            writer.Put(db->meta(), GroupMetaKey(g), EncodeGroupConfig(groups[g]->config)));
      }
    }
    // 3. Make it durable: flush every family to synced SST files.
    RETURN_IF_ERROR(writer.Finish());
  }
  // 4. and 5. in SwitchTo.
  return SwitchTo(std::move(db), number);
}

Status EmbeddingStoreImpl::SwitchTo(std::shared_ptr<RocksDb> db, uint64_t number) {
  // No data operation runs while db_mu_ is exclusive, so no change can land in the old generation
  // after the new one got its change time.
  std::unique_lock lock(db_mu_);
  std::lock_guard commit(commit_mu_);
  const int64_t t = std::max(NowMicros(), change_time_us_.load() + 1);
  char buf[8];
  StoreLE(buf, t);
  rocksdb::WriteBatch batch;
  RETURN_IF_ERROR(FromRocks(batch.Put(db->meta(), kChangeTimeKey, rocksdb::Slice(buf, 8)), "load"));
  rocksdb::WriteOptions sync;
  sync.sync = true;
  RETURN_IF_ERROR(FromRocks(db->db()->Write(sync, &batch), "write " + db->path()));
  // 4. CURRENT_DB names the new generation (tmp, fsync, rename, fsync dir): the atomic switch.
  bool renamed = false;
  Status st = WriteCurrent(dir_, {number, WantedMode()}, &renamed);
  if (!renamed) return st;
  // 5. Swap. The old generation closes, and its directory goes, when the last snapshot of it does.
  db->SetObsolete(false);
  db_->SetObsolete(true);
  db_ = std::move(db);
  change_time_us_.store(t);
  return st;
}

Status EmbeddingStoreImpl::ReadDump(int fd, const GroupTable& groups, std::optional<int> only_group,
                                    bool apply) {
  FileReader in(fd);
  ASSIGN_OR_RETURN(const char* p, in.Read(kDumpHeaderSize, "dump header (dims and counts)"));
  int32_t dims[kGroups];
  uint64_t counts[kGroups];
  memcpy(dims, p, sizeof dims);
  memcpy(counts, p + sizeof dims, sizeof counts);
  uint64_t total = 0;
  for (int g = 0; g < kGroups; ++g) {
    const std::string what = "dump: " + GroupName(g);
    if (dims[g] < 0 || dims[g] > kMaxDim) {
      return InvalidArgument(what + ": dim " + std::to_string(dims[g]) + " is outside 0.." +
                             std::to_string(kMaxDim));
    }
    if (groups[g] && dims[g] != 0 && dims[g] != groups[g]->config.dim) {
      return InvalidArgument(what + ": dim " + std::to_string(dims[g]) + " in the dump, " +
                             std::to_string(groups[g]->config.dim) + " in the store");
    }
    if (counts[g] == 0) continue;
    if (!groups[g]) {
      return InvalidArgument(what + ": " + std::to_string(counts[g]) +
                             " records, but the group is not configured in this store");
    }
    if (dims[g] == 0) return InvalidArgument(what + ": records of dim 0");
    if (only_group && g != *only_group) {
      return InvalidArgument(what + ": records in a file of " + GroupName(*only_group));
    }
    if (counts[g] > std::numeric_limits<uint64_t>::max() - total) {
      return InvalidArgument("dump: the counts overflow");
    }
    total += counts[g];
  }

  uint64_t seen[kGroups] = {};
  std::vector<DumpRecord> batch;
  std::vector<float> weights;
  for (uint64_t i = 0; i < total; ++i) {
    const std::string what = "dump record " + std::to_string(i);
    ASSIGN_OR_RETURN(p, in.Read(kDumpRecordPrefix, what));
    const uint64_t key = LoadLE<uint64_t>(p);
    const int32_t group = LoadLE<int32_t>(p + sizeof(uint64_t));
    if (group < 0 || group >= kGroups || seen[group] == counts[group]) {
      return InvalidArgument(what + ": " + GroupName(group) +
                             " has more records than the header's count");
    }
    ++seen[group];
    const size_t dim = static_cast<size_t>(dims[group]);
    ASSIGN_OR_RETURN(p, in.Read(sizeof(float) * dim, what + " weights"));
    if (!apply) continue;
    batch.push_back({StorageKey(group, key), key, group, weights.size()});
    weights.resize(weights.size() + dim);
    memcpy(weights.data() + batch.back().weights, p, sizeof(float) * dim);
    if (batch.size() == kDumpApplyBatch) {
      RETURN_IF_ERROR(ApplyDumpBatch(groups, batch, weights));
      batch.clear();
      weights.clear();
    }
  }
  ASSIGN_OR_RETURN(bool at_end, in.AtEnd());
  if (!at_end) {
    return InvalidArgument("dump: bytes follow the " + std::to_string(total) +
                           " records its header counts");
  }
  if (!batch.empty()) RETURN_IF_ERROR(ApplyDumpBatch(groups, batch, weights));
  return Status::Ok();
}

Status EmbeddingStoreImpl::ApplyDumpBatch(const GroupTable& groups,
                                          std::vector<DumpRecord>& records,
                                          const std::vector<float>& weights) {
  // The last record of a key wins, as if the records were applied one by one.
  std::stable_sort(records.begin(), records.end(), [](const DumpRecord& a, const DumpRecord& b) {
    return a.storage_key < b.storage_key;
  });
  std::vector<DumpRecord> last;
  for (size_t i = 0; i < records.size(); ++i) {
    if (i + 1 < records.size() && records[i + 1].storage_key == records[i].storage_key) continue;
    last.push_back(records[i]);
  }
  std::vector<uint64_t> keys(last.size());
  for (size_t i = 0; i < last.size(); ++i) keys[i] = last[i].storage_key;

  std::shared_lock lock(db_mu_);
  StripeLocks stripes(stripes_, keys);
  std::vector<std::string> values;
  std::vector<rocksdb::Status> found = MultiGet(keys, &values);
  const uint64_t now_ms = static_cast<uint64_t>(NowMicros() / 1000);
  rocksdb::WriteBatch writes;
  for (size_t i = 0; i < last.size(); ++i) {
    const DumpRecord& r = last[i];
    const GroupRuntime& rt = *groups[r.group];
    const int dim = rt.config.dim;
    std::string& v = values[i];
    if (found[i].ok()) {
      // Existing keys keep their slots and counters; only the weights change.
      if (v.size() != rt.value_size) {
        return Corruption(GroupName(r.group) + " key " + std::to_string(r.key) +
                          ": stored value has " + std::to_string(v.size()) + " bytes, the layout " +
                          std::to_string(rt.value_size));
      }
    } else if (found[i].IsNotFound()) {
      v.assign(rt.value_size, '\0');
      EncodeValueHeader({r.group, r.key, now_ms, 0, dim}, v.data());
    } else {
      return FromRocks(found[i], "load dump");
    }
    memcpy(ValueFloats(v.data()), weights.data() + r.weights, sizeof(float) * dim);
    RETURN_IF_ERROR(FromRocks(writes.Put(db_->data(), KeySlice(keys[i]), v), "load dump"));
  }
  return Commit(*db_, &writes);
}

Status EmbeddingStoreImpl::LoadDump(int fd, std::optional<int> only_group) {
  if (only_group) RETURN_IF_ERROR(CheckGroupRange(*only_group));
  std::lock_guard admin(admin_mu_);
  const GroupTable groups = CurrentGroups();  // stable: ConfigureGroup needs admin_mu_
  // 1. Validate everything; 2. apply in batches (each one atomic, with its change time).
  RETURN_IF_ERROR(ReadDump(fd, groups, only_group, /*apply=*/false));
  return ReadDump(fd, groups, only_group, /*apply=*/true);
}

Result<Stats> EmbeddingStoreImpl::GetStats() {
  std::shared_ptr<RocksDb> db = CurrentDb();
  std::unique_ptr<rocksdb::Iterator> it(db->db()->NewIterator(ScanOptions(nullptr), db->data()));
  Stats stats;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const rocksdb::Slice k = it->key();
    if (k.size() != kStorageKeySize)
      return Corruption("stats: a key of " + std::to_string(k.size()) + " bytes");
    ++stats.keys_per_group[GroupOfStorageKey(LoadLE<uint64_t>(k.data()))];
    ++stats.keys;
  }
  RETURN_IF_ERROR(FromRocks(it->status(), "stats: scan " + db->path()));
  return stats;
}

Status EmbeddingStoreImpl::Compact() {
  std::shared_ptr<RocksDb> db = CurrentDb();
  rocksdb::CompactRangeOptions options;
  options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  return FromRocks(db->db()->CompactRange(options, db->data(), nullptr, nullptr),
                   "compact " + db->path());
}

Status EmbeddingStoreImpl::Sync() {
  std::shared_ptr<RocksDb> db = CurrentDb();
  return FromRocks(db->db()->SyncWAL(), "sync " + db->path());
}

}  // namespace

Result<std::unique_ptr<EmbeddingStore>> EmbeddingStore::Open(const std::string& dir,
                                                             const StoreOptions& options) {
  RETURN_IF_ERROR(MakeDirs(dir));
  ASSIGN_OR_RETURN(ScopedFd lock_fd, OpenFile(dir + "/LOCK", O_RDWR | O_CREAT, 0644));
  while (::flock(lock_fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK)
      return IOError(dir + ": the embeddings store is open in another process");
    return ErrnoError("flock " + dir + "/LOCK", errno);
  }
  auto store = std::make_unique<EmbeddingStoreImpl>(dir, options, std::move(lock_fd));
  RETURN_IF_ERROR(store->Init());
  return std::unique_ptr<EmbeddingStore>(std::move(store));
}

}  // namespace modelfs::embeddings
