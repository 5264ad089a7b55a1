// One open RocksDB directory of the embeddings store (a "generation": <store>/db.<n>), as a
// move-free, reference-counted RAII handle. Two column families:
//   default        the data, exactly damo's keys and values (plus RocksDB TTL's 4-byte timestamp
//                  suffix when opened in TTL mode; reads through the handle never see it)
//   modelfs_meta   group configurations and the change time (never expires; not part of dumps,
//                  checkpoints or statistics)
// Whether a directory was written in TTL mode is not recorded by RocksDB (opening a TTL database as
// a plain one shows the timestamps as value bytes), so the store records it next to the directory
// name (see embedding_store.cc) and opens each generation in the mode it was written in.
//
// The handle is shared: the store holds one for the live generation and every Snapshot holds one
// for the generation it reads, so a generation replaced by LoadCheckpoint stays open until the last
// snapshot of it is released. A generation marked obsolete has its directory deleted at that point.
//
// Thread-safety: RocksDB's own (all methods may be called concurrently); MarkObsolete is atomic.
#pragma once

#include <rocksdb/db.h>
#include <rocksdb/listener.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "stores/common/status.h"

namespace modelfs::embeddings {

// RocksDB's status as ours: Corruption stays Corruption, everything else is an IOError.
Status FromRocks(const rocksdb::Status& s, const std::string& what);

enum class DbMode { kPlain, kTtl };

class RocksDb {
 public:
  // Opens (create: creating) the database at path. ttl_seconds applies in kTtl mode (<= 0: never
  // expire); listener, when set, hears RocksDB's events. IOError when RocksDB cannot open it.
  static Result<std::shared_ptr<RocksDb>> Open(
      const std::string& path, DbMode mode, int64_t ttl_seconds, bool create,
      std::shared_ptr<rocksdb::EventListener> listener = nullptr);
  ~RocksDb();
  RocksDb(const RocksDb&) = delete;
  RocksDb& operator=(const RocksDb&) = delete;

  rocksdb::DB* db() const { return db_; }
  rocksdb::ColumnFamilyHandle* data() const { return data_; }
  rocksdb::ColumnFamilyHandle* meta() const { return meta_; }
  const std::string& path() const { return path_; }
  DbMode mode() const { return mode_; }

  // Delete the directory once the last reference is gone (or undo that).
  void SetObsolete(bool obsolete) { obsolete_.store(obsolete); }

 private:
  RocksDb(std::string path, DbMode mode) : path_(std::move(path)), mode_(mode) {}

  const std::string path_;
  const DbMode mode_;
  rocksdb::DB* db_ = nullptr;  // owned; a DBWithTTL in kTtl mode
  rocksdb::ColumnFamilyHandle* data_ = nullptr;
  rocksdb::ColumnFamilyHandle* meta_ = nullptr;
  std::atomic<bool> obsolete_{false};
};

}  // namespace modelfs::embeddings
