// TimeSeriesStore: the time-series storage manager (seed 002) as a library.
//
// A series is N times and N values, float64. It is stored as one immutable file of 16·N bytes:
// N little-endian times, then N little-endian values (exactly what /timeseries/<id> reads as, and
// what numpy.fromfile(p).reshape(2, -1) loads). Ids are strings that are plain file names.
//
// Layout of a store directory:
//   dir/index.db      SQLite (WAL): id -> (file number, length N, mtime). The index on disk.
//   dir/data/<n>      the bytes of one stored series; never modified after it is written.
//   dir/staging/      files being written (StagedFile), same filesystem, so a commit is a rename.
//   dir/LOCK          flock: exclusive during Open()'s crash repair, shared while open.
// The index is also held in memory (id -> entry, sorted by id), so Size, Info and List never read
// the disk. Another process writing the same store (the CLI while a mount runs) is noticed through
// SQLite's data_version and the in-memory index is reloaded before the next answer.
//
// Commit protocol (Store, Commit, Remove): a data file is complete and renamed into data/ before the
// index row naming it commits, and a data file is unlinked only after the row that named it is gone.
// So a crash at any moment leaves the index naming only complete files; Open() deletes data files no
// row names and everything in staging/. Overwrites are atomic: readers see the old or the new series.
//
// Zero copy: Get() maps the immutable file (mmap) and returns a view of it; OpenData() returns an fd
// whose bytes [0, 16·N) are the series (the filesystem splices from it). Both stay valid after the
// series is overwritten or removed (the old file lives until the last map or fd goes).
//
// Thread-safety: every method may be called from any thread (an internal mutex serializes the index);
// SeriesView and the fds returned are owned by the caller and used without any lock.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "stores/common/scoped_fd.h"
#include "stores/common/staged_file.h"
#include "stores/common/status.h"

namespace modelfs::timeseries {

// What the index knows about a series.
struct SeriesInfo {
  std::string id;
  uint64_t length = 0;   // N: number of (time, value) pairs; the file has 16·N bytes
  int64_t mtime_ns = 0;  // when the bytes last changed (or the time a restore carried), ns since epoch
  // Changes exactly when the bytes change (the data file's number; never reused within a store).
  uint64_t version = 0;
};

// A read-only view of one stored series, mapped from its file: no copy is made. Movable, not
// copyable; unmaps on destruction. An empty series (N = 0) maps nothing.
class SeriesView {
 public:
  SeriesView() = default;
  SeriesView(SeriesView&& o) noexcept;
  SeriesView& operator=(SeriesView&& o) noexcept;
  SeriesView(const SeriesView&) = delete;
  SeriesView& operator=(const SeriesView&) = delete;
  ~SeriesView();

  const SeriesInfo& info() const { return info_; }
  size_t size() const { return static_cast<size_t>(info_.length); }
  std::span<const double> times() const { return {data_, size()}; }
  std::span<const double> values() const { return {data_ + size(), size()}; }

 private:
  friend class TimeSeriesStore;
  SeriesInfo info_;
  const double* data_ = nullptr;  // 2·N doubles, times then values
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
};

struct WriteOptions {
  // The series' mtime; unset: now. (A restore with rsync sets the backup's time before the rename.)
  std::optional<int64_t> mtime_ns;
  // Make the write survive a machine crash (fdatasync the file, fsync data/, fsync the WAL).
  // Without it a write survives a crash of the process, not of the machine.
  bool durable = false;
};

enum class WriteOutcome : uint8_t {
  kStored,       // new bytes: a new data file; version changed
  kUnchanged,    // bytes equal to the stored series and no other mtime asked: nothing changed
  kTimeChanged,  // bytes equal, but options.mtime_ns differs from the stored mtime: only mtime changed
};

struct WriteResult {
  std::string id;
  WriteOutcome outcome = WriteOutcome::kStored;
  SeriesInfo info;  // the series after the write
};

class TimeSeriesStore {
 public:
  // Test hook: called with "data-placed" (the new data file is in data/, its index row not yet
  // committed) and "index-committed" (the row committed, the replaced file not yet unlinked). A test
  // calls _exit() in it (in a forked child) to simulate a crash at that point.
  using CrashHook = std::function<void(std::string_view point)>;

  // Opens (creating if needed) the store in dir. IOError when it cannot; Corruption when the index
  // is not a database.
  static Result<std::unique_ptr<TimeSeriesStore>> Open(const std::string& dir,
                                                       CrashHook crash_hook = nullptr);
  ~TimeSeriesStore();

  // Where callers create StagedFiles so that Commit is a rename. Same filesystem as data/.
  const std::string& staging_dir() const { return staging_dir_; }

  // OK when id may name a series: 1..255 bytes, no '/', NUL or other control byte (< 0x20, 0x7f),
  // not starting with '.' (so neither "." nor ".."; dot names are temporary files in the mount).
  // InvalidArgument otherwise (NameTooLong above 255 bytes), naming the id and the rule broken.
  static Status ValidateId(std::string_view id);

  // ---- the seed's API ----
  // Stores times and values under id (generated when unset: a random UUID, lower-case hex, that no
  // series has). InvalidArgument when the sizes differ or the id is invalid. Overwrites atomically.
  // Writes the two spans straight to a staged file (no concatenated copy).
  Result<WriteResult> Store(std::optional<std::string_view> id, std::span<const double> times,
                            std::span<const double> values, const WriteOptions& options = {});
  // N for id. NotFound. From memory.
  Result<uint64_t> Size(std::string_view id);
  // A zero-copy view of the series. NotFound; Corruption when the data file's size disagrees with
  // the index.
  Result<SeriesView> Get(std::string_view id);

  // ---- the filesystem's API ----
  // Stores the staged file (16·N bytes) under id (generated when unset). InvalidArgument when the
  // size is not a multiple of 16 or the id is invalid; the store and the staged file are then
  // unchanged. Bytes equal to the stored series change nothing (see WriteOutcome). On kStored the
  // staged file is consumed (it became the data file).
  Result<WriteResult> Commit(std::optional<std::string_view> id, StagedFile& staged,
                             const WriteOptions& options = {});
  // NotFound.
  Result<SeriesInfo> Info(std::string_view id);
  // Every series, ascending id (byte order).
  std::vector<SeriesInfo> List();
  // A read-only fd whose bytes [0, 16·N) are the series, and the info it belongs to (one snapshot).
  struct Data {
    ScopedFd fd;
    SeriesInfo info;
  };
  Result<Data> OpenData(std::string_view id);
  // Deletes the series. NotFound.
  Status Remove(std::string_view id);
  // Number of series (from memory).
  size_t Count();
  // When the set of series last changed (one added, replaced or removed), in ns since the epoch: the
  // mtime of data/, which the filesystem updates exactly then. The folder's mtime, so that it changes
  // only when its listing does. IOError when data/ cannot be stat'ed.
  Result<int64_t> ChangeTimeNs();
  // Makes everything committed so far survive a machine crash.
  Status Sync();

 private:
  class Impl;
  TimeSeriesStore(std::unique_ptr<Impl> impl, std::string staging_dir);
  std::unique_ptr<Impl> impl_;
  std::string staging_dir_;
};

}  // namespace modelfs::timeseries
