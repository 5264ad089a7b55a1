#include "stores/embeddings/rocks_db.h"

#include <rocksdb/filter_policy.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/db_ttl.h>
#include <stdio.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <system_error>
#include <vector>

namespace modelfs::embeddings {
namespace {

constexpr char kMetaFamily[] = "modelfs_meta";

rocksdb::Options MakeOptions() {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.create_missing_column_families = true;
  options.max_background_jobs = 2;
  // Fewer, larger SST files and a bloom filter for Lookup's point reads; 16 KiB blocks keep full
  // scans (dump, checkpoint) cheap per record.
  rocksdb::BlockBasedTableOptions table;
  table.block_size = 16 << 10;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  options.target_file_size_base = 64 << 20;
  options.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  options.keep_log_file_num = 2;
  return options;
}

}  // namespace

Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return Status::Ok();
  if (s.IsCorruption()) return Corruption(what + ": " + s.ToString());
  return IOError(what + ": " + s.ToString());
}

Result<std::shared_ptr<RocksDb>> RocksDb::Open(const std::string& path, DbMode mode,
                                               int64_t ttl_seconds, bool create,
                                               std::shared_ptr<rocksdb::EventListener> listener) {
  rocksdb::Options options = MakeOptions();
  options.create_if_missing = create;
  if (listener) options.listeners.push_back(std::move(listener));
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions(options)},
      {kMetaFamily, rocksdb::ColumnFamilyOptions(options)}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  std::shared_ptr<RocksDb> out(new RocksDb(path, mode));
  rocksdb::Status s;
  if (mode == DbMode::kTtl) {
    // RocksDB's TTL is an int32 of seconds; non-positive means never (so the meta family's 0).
    int32_t ttl = static_cast<int32_t>(
        std::clamp<int64_t>(ttl_seconds, 0, std::numeric_limits<int32_t>::max()));
    rocksdb::DBWithTTL* db = nullptr;
    s = rocksdb::DBWithTTL::Open(rocksdb::DBOptions(options), path, families, &handles, &db,
                                 {ttl, 0});
    out->db_ = db;
  } else {
    rocksdb::DB* db = nullptr;
    s = rocksdb::DB::Open(rocksdb::DBOptions(options), path, families, &handles, &db);
    out->db_ = db;
  }
  if (!s.ok()) return FromRocks(s, "open RocksDB " + path);
  out->data_ = handles[0];
  out->meta_ = handles[1];
  return out;
}

RocksDb::~RocksDb() {
  if (db_ != nullptr) {
    for (auto* h : {data_, meta_}) {
      if (h != nullptr) db_->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    }
    // Everything acknowledged is in the WAL or in synced SST files already; a failed close can only
    // lose what RocksDB recovers from the WAL at the next open, so it is reported, not returned.
    rocksdb::Status s = db_->Close();
    if (!s.ok())
      fprintf(stderr, "modelfs: embeddings store: close %s: %s\n", path_.c_str(),
              s.ToString().c_str());
    delete db_;
  }
  if (obsolete_.load()) {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
    // A leftover directory is removed at the next open (it is not named by CURRENT_DB).
    if (ec)
      fprintf(stderr, "modelfs: embeddings store: remove %s: %s\n", path_.c_str(),
              ec.message().c_str());
  }
}

}  // namespace modelfs::embeddings
