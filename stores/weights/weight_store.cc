#include "stores/weights/weight_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "stores/common/file_util.h"
#include "stores/common/names.h"
#include "stores/common/sqlite_db.h"
#include "stores/weights/hdf5_util.h"
#include "stores/weights/weight_index.h"

namespace modelfs::weights {

// Canonical data is little-endian; the store hands it to SHA-256, the writers and Coral's
// arithmetic as it is in memory.
static_assert(std::endian::native == std::endian::little, "canonical .npy data is little-endian");

namespace {

using json = nlohmann::json;

constexpr size_t kBlockBytes = size_t{1} << 20;  // streaming unit (reads, hashing)
constexpr size_t kHashBuffers = 8;               // blocks in flight between reader and hasher
constexpr size_t kNpyPrefixBytes = size_t{64}
                                   << 10;  // enough for any header ParseNpyHeader accepts
constexpr size_t kSketchElements = 256;
constexpr size_t kMinSketchMatches = kSketchElements / 2;  // ≥ 50% of the sampled elements
// Below this a delta cannot save enough to pay for trying (HDF5's own overhead is ~2 KiB).
constexpr uint64_t kMinDeltaBytes = 4096;
// A commit that lost a race with a concurrent Delete (its base or dependents changed) is redone
// from the start this many times before giving up.
constexpr int kCommitAttempts = 4;
// Numbers skipped because their file exists (see AllocateFileNoLocked) before giving up.
constexpr int kMaxFileNoAttempts = 1000;
// Chain readers opened per base: tensor_file.h's writers and readers call base_fn one call at a
// time, so one suffices (ChainPool would serve more callers in parallel with more).
constexpr int kBaseReaders = 1;

constexpr char kIngestedKey[] = "ingested_bytes";
constexpr char kLastFileNoKey[] = "last_file_no";
constexpr char kCodecKey[] = "codec";

// The store has no logger of its own; these are errors that happen after a commit succeeded (or
// that cannot be returned) and that the next Open() or Gc() repairs.
void LogWarning(const std::string& message) { LogStoreWarning("weight", message); }

Status WithContext(const std::string& what, const Status& st) {
  return st.Annotate(what);
}

int64_t NowNanos() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);  // cannot fail for CLOCK_REALTIME with a valid pointer
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::string Hex(const unsigned char* p, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out += kHex[p[i] >> 4];
    out += kHex[p[i] & 0x0f];
  }
  return out;
}

Status NoSuchTensor(std::string_view hash) {
  return NotFound("tensor " + std::string(hash) + ": not stored");
}

std::string DescribeName(std::string_view name) { return QuoteName("name", name); }

Status Fdatasync(const std::string& path) {
  ASSIGN_OR_RETURN(ScopedFd fd, OpenFile(path, O_RDONLY | O_CLOEXEC));
  if (::fdatasync(fd.get()) != 0) return ErrnoError("fdatasync " + path, errno);
  return Status::Ok();
}

Result<uint64_t> PathSize(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoError("stat " + path, errno);
  return static_cast<uint64_t>(st.st_size);
}

// Entries of a directory (not . and ..), with whether each is a directory.
Result<std::vector<std::pair<std::string, bool>>> ListDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return ErrnoError("opendir " + dir, errno);
  std::vector<std::pair<std::string, bool>> out;
  errno = 0;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") {
      errno = 0;
      continue;
    }
    bool is_dir = e->d_type == DT_DIR;
    if (e->d_type == DT_UNKNOWN) {
      struct stat st;
      is_dir = ::lstat((dir + "/" + name).c_str(), &st) == 0 && S_ISDIR(st.st_mode);
    }
    out.emplace_back(std::move(name), is_dir);
    errno = 0;
  }
  int read_err = errno;
  ::closedir(d);  // a read-only directory stream: nothing to lose
  if (read_err != 0) return ErrnoError("readdir " + dir, read_err);
  return out;
}

// Removes a flat directory and its files (staging directories hold no subdirectories).
Result<uint64_t> RemoveFlatDir(const std::string& dir) {
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return uint64_t{0};
    return ErrnoError("lstat " + dir, errno);
  }
  ASSIGN_OR_RETURN(auto entries, ListDir(dir));
  uint64_t removed = 0;
  for (const auto& [name, is_dir] : entries) {
    std::string path = dir + "/" + name;
    if (is_dir) {
      ASSIGN_OR_RETURN(uint64_t n, RemoveFlatDir(path));
      removed += n;
      continue;
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoError("unlink " + path, errno);
    ++removed;
  }
  if (::rmdir(dir.c_str()) != 0 && errno != ENOENT) return ErrnoError("rmdir " + dir, errno);
  return removed;
}

// ---- SHA-256 ----

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) {}
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  Status Init() {
    if (ctx_ == nullptr || EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) {
      return IOError("SHA-256: EVP_DigestInit_ex failed");
    }
    return Status::Ok();
  }
  Status Update(const void* p, size_t n) {
    if (n > 0 && EVP_DigestUpdate(ctx_, p, n) != 1)
      return IOError("SHA-256: EVP_DigestUpdate failed");
    return Status::Ok();
  }
  Result<std::string> FinalHex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx_, md, &len) != 1)
      return IOError("SHA-256: EVP_DigestFinal_ex failed");
    return Hex(md, len);
  }

 private:
  EVP_MD_CTX* ctx_;
};

// SHA-256 of a stream on its own thread, so that hashing overlaps compression (the writers compress
// on their own workers) instead of running before or after it. Blocks are either borrowed (memory
// valid until Finish) or pool buffers, which return to the pool once hashed. One producer thread.
class ParallelSha256 {
 public:
  ParallelSha256() = default;
  ~ParallelSha256() { Stop(); }
  ParallelSha256(const ParallelSha256&) = delete;
  ParallelSha256& operator=(const ParallelSha256&) = delete;

  Status Start() {
    RETURN_IF_ERROR(sha_.Init());
    try {
      thread_ = std::thread([this] { Run(); });
    } catch (const std::system_error& e) {
      return IOError(std::string("SHA-256: starting the hashing thread: ") + e.what());
    }
    return Status::Ok();
  }

  // A free buffer of kBlockBytes; waits while all are queued for hashing.
  std::string* AcquireBuffer() {
    std::unique_lock lock(mu_);
    for (;;) {
      if (!free_.empty()) {
        std::string* b = free_.back();
        free_.pop_back();
        return b;
      }
      if (pool_.size() < kHashBuffers) {
        pool_.push_back(std::make_unique<std::string>(kBlockBytes, '\0'));
        return pool_.back().get();
      }
      cv_.wait(lock);
    }
  }
  void ReleaseBuffer(std::string* buffer) {
    std::lock_guard lock(mu_);
    free_.push_back(buffer);
  }
  // Queues p[0, n) for hashing; buffer (from AcquireBuffer, or null for borrowed memory) returns
  // to the pool once hashed.
  void Submit(const char* p, size_t n, std::string* buffer) {
    std::lock_guard lock(mu_);
    jobs_.push_back(Job{p, n, buffer});
    cv_.notify_all();
  }
  // Copies p[0, n) through pool buffers (for data whose memory is only valid during the call).
  void SubmitCopy(const char* p, size_t n) {
    while (n > 0) {
      size_t m = std::min(n, kBlockBytes);
      std::string* b = AcquireBuffer();
      memcpy(b->data(), p, m);
      Submit(b->data(), m, b);
      p += m;
      n -= m;
    }
  }
  // Waits for the queued blocks and returns the lower-case hex digest.
  Result<std::string> Finish() {
    {
      std::lock_guard lock(mu_);
      finishing_ = true;
      cv_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
    if (!status_.ok()) return status_;
    return sha_.FinalHex();
  }

 private:
  struct Job {
    const char* p;
    size_t n;
    std::string* buffer;
  };

  void Run() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return !jobs_.empty() || finishing_ || stopping_; });
      if (stopping_ || jobs_.empty()) return;
      Job job = jobs_.front();
      jobs_.pop_front();
      lock.unlock();
      Status st = status_.ok() ? sha_.Update(job.p, job.n) : Status::Ok();
      lock.lock();
      if (!st.ok()) status_ = st;
      if (job.buffer != nullptr) {
        free_.push_back(job.buffer);
        cv_.notify_all();
      }
    }
  }

  // Abandons the digest (error paths): the thread exits without hashing what is queued.
  void Stop() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      cv_.notify_all();
    }
    thread_.join();
  }

  Sha256 sha_;  // used by the hashing thread only, then by Finish after the join
  std::mutex mu_;
  std::condition_variable cv_;  // jobs queued, buffers freed, finishing/stopping
  std::deque<Job> jobs_;        // guarded by mu_
  std::vector<std::unique_ptr<std::string>> pool_;  // guarded by mu_
  std::vector<std::string*> free_;                  // guarded by mu_
  bool finishing_ = false;                          // guarded by mu_
  bool stopping_ = false;                           // guarded by mu_
  Status status_;  // written by the hashing thread, read after the join
  std::thread thread_;
};

// ---- Where the canonical data of a tensor being stored comes from ----

class DataSource {
 public:
  virtual ~DataSource() = default;
  // Fills buf with len bytes of canonical data at off.
  virtual Status ReadAt(uint64_t off, void* buf, size_t len) = 0;
  // The whole data when it is in memory that outlives the store call (hashed without a copy).
  virtual const char* memory() const { return nullptr; }
};

class MemorySource : public DataSource {
 public:
  explicit MemorySource(std::string_view data) : data_(data) {}
  Status ReadAt(uint64_t off, void* buf, size_t len) override {
    memcpy(buf, data_.data() + off, len);
    return Status::Ok();
  }
  const char* memory() const override { return data_.data(); }

 private:
  std::string_view data_;
};

// Bytes [base, base + size) of an open file.
class FdSource : public DataSource {
 public:
  FdSource(int fd, uint64_t base, std::string what)
      : fd_(fd), base_(base), what_(std::move(what)) {}
  Status ReadAt(uint64_t off, void* buf, size_t len) override {
    Result<size_t> n = PreadFull(fd_, buf, len, static_cast<off_t>(base_ + off));
    if (!n.ok()) return WithContext(what_, n.status());
    if (*n != len) return InvalidArgument(what_ + ": the file shrank while it was being stored");
    return Status::Ok();
  }

 private:
  int fd_;
  uint64_t base_;
  std::string what_;
};

// ---- Sketches: which stored tensor a new one is probably a small change of ----

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Element indices sampled by the sketch of a tensor with n elements: one in each of
// min(n, kSketchElements) equal strata, at a pseudo-random place inside it, so that the samples are
// spread over the whole tensor without lining up with its rows. Deterministic in n, so two tensors
// of one shape are sampled at the same places.
std::vector<uint64_t> SketchPositions(uint64_t n) {
  std::vector<uint64_t> pos;
  uint64_t k = std::min<uint64_t>(n, kSketchElements);
  pos.reserve(k);
  for (uint64_t i = 0; i < k; ++i) {
    // 128-bit products: n may be close to 2^64 / item size.
    uint64_t lo = static_cast<uint64_t>(static_cast<unsigned __int128>(i) * n / k);
    uint64_t hi = static_cast<uint64_t>(static_cast<unsigned __int128>(i + 1) * n / k);
    pos.push_back(lo + SplitMix64(i ^ (n * 0x100000001b3ull)) % (hi - lo));
  }
  return pos;
}

// The sampled elements' bit patterns, back to back.
Result<std::string> ComputeSketch(const TensorSpec& spec, DataSource& src) {
  const size_t item = ItemSize(spec.dtype);
  std::vector<uint64_t> pos = SketchPositions(spec.ElementCount());
  std::string sketch(pos.size() * item, '\0');
  for (size_t i = 0; i < pos.size(); ++i) {
    RETURN_IF_ERROR(src.ReadAt(pos[i] * item, sketch.data() + i * item, item));
  }
  return sketch;
}

// How many sampled elements two sketches of one spec have bit-identical.
size_t SketchMatches(std::string_view a, std::string_view b, size_t item) {
  if (a.size() != b.size() || item == 0) return 0;
  size_t matches = 0;
  for (size_t off = 0; off + item <= a.size(); off += item) {
    if (memcmp(a.data() + off, b.data() + off, item) == 0) ++matches;
  }
  return matches;
}

// ---- Reading stored tensors ----

// Readers for a tensor's delta chain (levels_[0] the tensor, levels_[k + 1] the base of
// levels_[k]): decoding chunk i of level k asks level k + 1 for its chunk i (one spec, one chunk
// size). Used by one thread at a time.
class ChainReader {
 public:
  static Result<std::unique_ptr<ChainReader>> Open(const std::vector<std::string>& paths) {
    auto chain = std::unique_ptr<ChainReader>(new ChainReader());
    for (const std::string& path : paths) {
      ASSIGN_OR_RETURN(std::unique_ptr<TensorFileReader> r, TensorFileReader::Open(path));
      if (!chain->levels_.empty()) {
        const TensorFileInfo& above = chain->levels_.back()->info();
        const TensorFileInfo& here = r->info();
        if (above.base_hash != here.hash || above.spec != here.spec ||
            above.chunk_bytes != here.chunk_bytes) {
          return Corruption(path + " is not the base " + above.base_hash.value_or("(none)") +
                            " that the delta above it names");
        }
      }
      chain->levels_.push_back(std::move(r));
    }
    if (chain->levels_.empty()) return InvalidArgument("an empty delta chain");
    if (chain->levels_.back()->info().base_hash) {
      return Corruption(paths.back() + ": a delta without its base");
    }
    return chain;
  }

  TensorFileReader& top() { return *levels_.front(); }
  Status ReadChunk(uint64_t i, void* out, size_t len) { return ReadLevel(0, i, out, len); }

 private:
  ChainReader() = default;
  Status ReadLevel(size_t k, uint64_t i, void* out, size_t len) {
    BaseChunkFn base_fn;
    if (k + 1 < levels_.size()) {
      base_fn = [this, k](uint64_t j, void* o, size_t l) { return ReadLevel(k + 1, j, o, l); };
    }
    return levels_[k]->ReadChunk(i, out, len, base_fn);
  }
  std::vector<std::unique_ptr<TensorFileReader>> levels_;
};

// Several ChainReaders of one chain, all opened up front (while the index lock guarantees that the
// files exist), so that a BaseChunkFn can serve several decoding or compressing threads at once.
class ChainPool {
 public:
  static Result<std::unique_ptr<ChainPool>> Open(const std::vector<std::string>& paths, int count) {
    auto pool = std::unique_ptr<ChainPool>(new ChainPool());
    for (int i = 0; i < std::max(count, 1); ++i) {
      ASSIGN_OR_RETURN(std::unique_ptr<ChainReader> r, ChainReader::Open(paths));
      pool->free_.push_back(std::move(r));
    }
    return pool;
  }

  Status ReadChunk(uint64_t i, void* out, size_t len) {
    std::unique_ptr<ChainReader> r;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return !free_.empty(); });
      r = std::move(free_.back());
      free_.pop_back();
    }
    Status st = r->ReadChunk(i, out, len);
    std::lock_guard lock(mu_);
    free_.push_back(std::move(r));
    cv_.notify_one();
    return st;
  }

  BaseChunkFn AsBaseFn() {
    return [this](uint64_t i, void* out, size_t len) { return ReadChunk(i, out, len); };
  }

 private:
  ChainPool() = default;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<ChainReader>> free_;  // guarded by mu_
};

// A stored tensor's data as a DataSource (Delete re-encodes dependents from it), decoded chunk by
// chunk through one ChainReader.
class ChainSource : public DataSource {
 public:
  explicit ChainSource(std::unique_ptr<ChainReader> chain)
      : chain_(std::move(chain)),
        chunk_bytes_(chain_->top().info().chunk_bytes),
        data_bytes_(chain_->top().info().spec.DataBytes()) {}

  Status ReadAt(uint64_t off, void* buf, size_t len) override {
    char* out = static_cast<char*>(buf);
    while (len > 0) {
      uint64_t index = off / chunk_bytes_;
      if (index != cached_) {
        uint64_t start = index * chunk_bytes_;
        size_t n = static_cast<size_t>(std::min<uint64_t>(chunk_bytes_, data_bytes_ - start));
        chunk_.resize(n);
        cached_ = UINT64_MAX;
        RETURN_IF_ERROR(chain_->ReadChunk(index, chunk_.data(), n));
        cached_ = index;
      }
      size_t in_chunk = static_cast<size_t>(off - index * chunk_bytes_);
      size_t m = std::min(len, chunk_.size() - in_chunk);
      memcpy(out, chunk_.data() + in_chunk, m);
      out += m;
      off += m;
      len -= m;
    }
    return Status::Ok();
  }

 private:
  std::unique_ptr<ChainReader> chain_;
  const uint64_t chunk_bytes_;
  const uint64_t data_bytes_;
  std::string chunk_;
  uint64_t cached_ = UINT64_MAX;
};

// ---- Files being written ----

// A path in the instance's staging directory, unlinked on destruction unless it was placed into
// objects/ (and not moved back).
class ScratchFile {
 public:
  explicit ScratchFile(std::string path) : path_(std::move(path)) {}
  ~ScratchFile() {
    // An error leaves a staging file that the next Open() or Gc() removes.
    if (!placed_) ::unlink(path_.c_str());
  }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;

  const std::string& path() const { return path_; }

  // Step 4 of the commit protocols: makes the file read-only (objects are immutable; the mode
  // keeps a stray writer honest) and renames it to dest.
  Status PlaceAt(const std::string& dest) {
    if (::chmod(path_.c_str(), 0444) != 0) return ErrnoError("chmod " + path_, errno);
    if (::rename(path_.c_str(), dest.c_str()) != 0) {
      return ErrnoError("rename " + path_ + " to " + dest, errno);
    }
    placed_ = true;
    dest_ = dest;
    return Status::Ok();
  }
  // Undoes PlaceAt after a failed commit.
  Status MoveBack() {
    if (!placed_) return Status::Ok();
    if (::rename(dest_.c_str(), path_.c_str()) != 0) {
      return ErrnoError("rename " + dest_ + " back to " + path_, errno);
    }
    placed_ = false;
    return Status::Ok();
  }

 private:
  std::string path_;
  std::string dest_;
  bool placed_ = false;
};

// Scratch files placed into objects/ inside a not yet committed transaction: moved back on
// destruction unless Committed() was called.
class Placements {
 public:
  Placements() = default;
  Placements(const Placements&) = delete;
  Placements& operator=(const Placements&) = delete;
  ~Placements() {
    Status st = Undo();
    // A file that cannot be moved back is an orphan in objects/ until the next Open() or Gc().
    if (!st.ok()) LogWarning(st.ToString());
  }
  Status Place(ScratchFile& file, const std::string& dest) {
    RETURN_IF_ERROR(file.PlaceAt(dest));
    placed_.push_back(&file);
    return Status::Ok();
  }
  void Committed() { placed_.clear(); }
  Status Undo() {
    Status first;
    for (auto it = placed_.rbegin(); it != placed_.rend(); ++it) {
      Status st = (*it)->MoveBack();
      if (!st.ok() && first.ok()) first = st;
    }
    placed_.clear();
    return first;
  }

 private:
  std::vector<ScratchFile*> placed_;
};

// What Encode produced: a finished object file in staging, not yet in the store.
struct Encoded {
  std::string hash;
  std::unique_ptr<ScratchFile> file;  // null when the tensor turned out to be stored already
  bool is_delta = false;
  std::optional<std::string> base_hash;
  uint64_t stored_bytes = 0;
  std::string compression_info;
};

// Runs fn(i) for i in [0, n) on up to `threads` threads. Returns the error of the lowest index that
// failed; after a failure no new index is started.
Status ParallelFor(size_t n, int threads, const std::function<Status(size_t)>& fn) {
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::vector<Status> statuses(n);
  auto worker = [&] {
    for (;;) {
      if (failed.load()) return;
      size_t i = next.fetch_add(1);
      if (i >= n) return;
      statuses[i] = fn(i);
      if (!statuses[i].ok()) failed.store(true);
    }
  };
  size_t count = std::min<size_t>(n, static_cast<size_t>(std::max(threads, 1)));
  std::vector<std::thread> pool;
  try {
    for (size_t t = 1; t < count; ++t) pool.emplace_back(worker);
  } catch (const std::system_error& e) {
    LogWarning(std::string("starting a worker thread: ") + e.what() + " (continuing with fewer)");
  }
  worker();
  for (std::thread& t : pool) t.join();
  for (const Status& st : statuses) {
    if (!st.ok()) return st;
  }
  return Status::Ok();
}

}  // namespace

// ---- WeightStore::Impl ----

class WeightStore::Impl {
 public:
  Impl(std::string dir, ScopedFd lock_fd, WeightIndex index, CodecSpec codec, int threads)
      : dir_(dir),
        objects_dir_(dir + "/objects"),
        staging_root_(dir + "/staging"),
        codec_(codec),
        threads_(std::max(threads, 1)),
        lock_fd_(std::move(lock_fd)),
        index_(std::move(index)) {}

  // What a store call is asked to encode.
  struct EncodeRequest {
    TensorSpec spec;
    CoralMeta meta;
    DataSource* source = nullptr;
    // Set: also encoded as a delta against base_hash (read through base_pool); the smaller file
    // is kept.
    std::optional<std::string> base_hash;
    ChainPool* base_pool = nullptr;
    std::optional<std::string> expected_hash;  // InvalidArgument when the data hashes otherwise
    bool skip_if_stored = true;        // stop after hashing when the tensor is stored already
    bool durable = false;              // fdatasync the kept file
    json extra_info = json::object();  // merged into compression_info
  };

  enum class CommitOutcome { kStored, kDeduped, kRetry };

  std::string ObjectPath(uint64_t file_no) const {
    return objects_dir_ + "/" + std::to_string(file_no) + ".h5";
  }
  std::unique_ptr<ScratchFile> NewScratch() {
    return std::make_unique<ScratchFile>(staging_dir_ + "/obj-" +
                                         std::to_string(scratch_seq_.fetch_add(1)) + ".h5");
  }

  Status CheckOpen() {
    std::lock_guard lock(mu_);
    return CheckOpenLocked();
  }
  Status CheckOpenLocked() const {
    if (closed_) return IOError("weight store " + dir_ + ": closed");
    return Status::Ok();
  }

  // ---- Storing ----

  // Steps 1-6 of the store protocol (see WeightStore::StoreNpy) for canonical data in src.
  Result<StoreResult> StoreFrom(const TensorSpec& spec, const CoralMeta& meta, DataSource& src,
                                const StoreOptions& options,
                                std::optional<std::string_view> expected_hash,
                                const json& extra_info = json::object()) {
    const uint64_t npy_bytes = CanonicalHeader(spec).size() + spec.DataBytes();
    ASSIGN_OR_RETURN(std::string sketch, ComputeSketch(spec, src));
    TensorRow proto;
    proto.spec = spec;
    proto.npy_bytes = npy_bytes;
    proto.meta = meta;
    proto.sketch = sketch;
    proto.mtime_ns = options.mtime_ns.value_or(NowNanos());
    proto.codec = codec_.ToString();

    bool try_delta = options.allow_delta && spec.DataBytes() >= kMinDeltaBytes;
    for (int attempt = 0; attempt < kCommitAttempts; ++attempt) {
      // The last attempt does without a base: a base that keeps disappearing cannot stop a store.
      if (attempt == kCommitAttempts - 1) try_delta = false;
      EncodeRequest req;
      req.spec = spec;
      req.meta = meta;
      req.source = &src;
      if (expected_hash) req.expected_hash = std::string(*expected_hash);
      req.durable = options.durable;
      req.extra_info = extra_info;
      std::optional<std::pair<std::string, std::unique_ptr<ChainPool>>> base;
      if (try_delta) {
        std::lock_guard lock(mu_);
        RETURN_IF_ERROR(CheckOpenLocked());
        ASSIGN_OR_RETURN(base, ChooseBaseLocked(spec, sketch, meta.name));
      }
      if (base) {
        req.base_hash = base->first;
        req.base_pool = base->second.get();
      }
      ASSIGN_OR_RETURN(Encoded enc, Encode(req));
      ASSIGN_OR_RETURN(CommitOutcome outcome, CommitNew(enc, proto, options));
      switch (outcome) {
        case CommitOutcome::kStored:
          return StoreResult{enc.hash, true, enc.is_delta};
        case CommitOutcome::kDeduped:
          // The caller asked for durability, which the earlier commit may not have given.
          if (options.durable) RETURN_IF_ERROR(Sync());
          return StoreResult{enc.hash, false, false};
        case CommitOutcome::kRetry:
          break;  // a concurrent Delete removed the base (or the tensor we deduplicated against)
      }
    }
    return IOError("storing a tensor: the store changed during every attempt");
  }

  // The stored tensor of this spec whose sketch matches the new one's best (≥ 50% of the sampled
  // elements bit-identical), preferring the tensor `name` points to on ties, with its chain opened
  // for the delta writer's compression workers. nullopt when none qualifies (or its files cannot
  // be read: then the tensor is simply stored in full).
  Result<std::optional<std::pair<std::string, std::unique_ptr<ChainPool>>>> ChooseBaseLocked(
      const TensorSpec& spec, std::string_view sketch, std::string_view name) {
    using Choice = std::optional<std::pair<std::string, std::unique_ptr<ChainPool>>>;
    ASSIGN_OR_RETURN(std::vector<TensorRow> candidates, index_.Candidates(spec, kMaxDeltaDepth));
    if (candidates.empty()) return Choice();
    std::optional<std::string> preferred;
    if (!name.empty()) {
      ASSIGN_OR_RETURN(std::optional<NameRow> n, index_.FindName(name));
      if (n) preferred = n->hash;
    }
    const size_t item = ItemSize(spec.dtype);
    const size_t sampled = sketch.size() / item;
    const TensorRow* best = nullptr;
    size_t best_matches = 0;
    for (const TensorRow& c : candidates) {
      size_t m = SketchMatches(sketch, c.sketch, item);
      if (best == nullptr || m > best_matches || (m == best_matches && c.hash == preferred)) {
        best = &c;
        best_matches = m;
      }
    }
    if (best == nullptr || 2 * best_matches < sampled || sampled == 0) return Choice();
    Result<std::vector<std::string>> paths = ChainPathsLocked(best->hash);
    Result<std::unique_ptr<ChainPool>> pool =
        paths.ok() ? ChainPool::Open(*paths, kBaseReaders) : paths.status();
    if (!pool.ok()) {
      LogWarning("tensor " + best->hash +
                 " cannot serve as a delta base: " + pool.status().ToString());
      return Choice();
    }
    return Choice(std::make_pair(best->hash, std::move(pool).value()));
  }

  // Step 1 of the store protocol: writes the object file(s) in staging while hashing. The data is
  // read once, in blocks, and handed to the hashing thread and to the writer(s), which compress on
  // their own workers; with a base, a full and a delta encoding are written side by side and the
  // smaller file is kept (a delta only when strictly smaller).
  Result<Encoded> Encode(const EncodeRequest& req) {
    const TensorSpec& spec = req.spec;
    const uint64_t data_bytes = spec.DataBytes();
    TensorFileWriter::Options wopt;
    wopt.codec = codec_;
    wopt.meta = req.meta;
    wopt.threads = threads_;

    // Declaration order matters: a writer is destroyed (its file closed) before its path is
    // unlinked.
    std::unique_ptr<ScratchFile> full_file = NewScratch();
    ASSIGN_OR_RETURN(std::unique_ptr<TensorFileWriter> full,
                     TensorFileWriter::Create(full_file->path(), spec, wopt));
    std::unique_ptr<ScratchFile> delta_file;
    std::unique_ptr<TensorFileWriter> delta;
    if (req.base_pool != nullptr) {
      delta_file = NewScratch();
      TensorFileWriter::Options dopt = wopt;
      dopt.base_hash = req.base_hash;
      dopt.base_fn = req.base_pool->AsBaseFn();
      Result<std::unique_ptr<TensorFileWriter>> w =
          TensorFileWriter::Create(delta_file->path(), spec, std::move(dopt));
      if (w.ok()) {
        delta = std::move(w).value();
      } else {
        LogWarning("delta against " + *req.base_hash + ": " + w.status().ToString());
      }
    }
    // A delta that fails (say, its base's chunk check fails) costs the store nothing: the full
    // encoding is kept.
    auto drop_delta = [&](const Status& why) {
      LogWarning("delta against " + *req.base_hash + " abandoned: " + why.ToString());
      delta.reset();
    };

    // Declared before the hasher, so that it outlives the hashing thread on every path.
    const std::string header = CanonicalHeader(spec);
    ParallelSha256 hasher;
    RETURN_IF_ERROR(hasher.Start());
    hasher.Submit(header.data(), header.size(), nullptr);
    const char* memory = req.source->memory();
    for (uint64_t off = 0; off < data_bytes;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(kBlockBytes, data_bytes - off));
      const char* block;
      if (memory != nullptr) {
        block = memory + off;
        hasher.Submit(block, n, nullptr);
      } else {
        std::string* buffer = hasher.AcquireBuffer();
        Status st = req.source->ReadAt(off, buffer->data(), n);
        if (!st.ok()) {
          hasher.ReleaseBuffer(buffer);
          return st;
        }
        block = buffer->data();
        // The buffer returns to the pool once hashed; until then it is only read, here too, and
        // only this thread takes buffers from the pool.
        hasher.Submit(block, n, buffer);
      }
      RETURN_IF_ERROR(full->Append(block, n));
      if (delta) {
        Status st = delta->Append(block, n);
        if (!st.ok()) drop_delta(st);
      }
      off += n;
    }
    ASSIGN_OR_RETURN(std::string hash, hasher.Finish());

    if (req.expected_hash && *req.expected_hash != hash) {
      return InvalidArgument("content hashes to " + hash + ", not " + *req.expected_hash);
    }
    Encoded out;
    out.hash = hash;
    if (req.skip_if_stored) {
      std::lock_guard lock(mu_);
      ASSIGN_OR_RETURN(bool stored, index_.HasTensor(hash));
      if (stored) return out;  // deduplicated: the writers' partial files go with their paths
    }

    RETURN_IF_ERROR(full->Finish(hash, /*durable=*/false));
    full.reset();
    ASSIGN_OR_RETURN(uint64_t full_bytes, PathSize(full_file->path()));
    std::optional<uint64_t> delta_bytes;  // set when a delta file was finished
    if (delta) {
      Status st = delta->Finish(hash, /*durable=*/false);
      delta.reset();
      Result<uint64_t> size = st.ok() ? PathSize(delta_file->path()) : st;
      if (size.ok()) {
        delta_bytes = *size;
      } else {
        drop_delta(size.status());
      }
    }
    json info = req.extra_info.is_object() ? req.extra_info : json::object();
    info["codec"] = codec_.ToString();
    info["shuffle"] = data_bytes > 0;
    if (delta_bytes && *delta_bytes < full_bytes) {
      out.file = std::move(delta_file);
      out.is_delta = true;
      out.base_hash = req.base_hash;
      out.stored_bytes = *delta_bytes;
      info["delta"] = true;
      info["base"] = *req.base_hash;
    } else {
      out.file = std::move(full_file);
      out.stored_bytes = full_bytes;
      info["delta"] = false;
    }
    out.compression_info = info.dump();
    if (req.durable) RETURN_IF_ERROR(Fdatasync(out.file->path()));
    return out;
  }

  // Steps 2-6 of the store protocol for an encoded tensor. proto carries the row's other columns.
  Result<CommitOutcome> CommitNew(Encoded& enc, const TensorRow& proto,
                                  const StoreOptions& options) {
    std::lock_guard lock(mu_);
    RETURN_IF_ERROR(CheckOpenLocked());
    SqliteFullSyncScope full_sync(index_.db(), options.durable);  // ends after txn
    RETURN_IF_ERROR(full_sync.Enter());
    ASSIGN_OR_RETURN(SqliteTransaction txn,
                     SqliteTransaction::Begin(index_.db(), SqliteTransaction::Mode::kImmediate));
    // 2.
    ASSIGN_OR_RETURN(bool stored, index_.HasTensor(enc.hash));
    if (stored) {
      RETURN_IF_ERROR(index_.AddToCounter(kIngestedKey, proto.npy_bytes).status());
      RETURN_IF_ERROR(txn.Commit());
      return CommitOutcome::kDeduped;
    }
    if (!enc.file) return CommitOutcome::kRetry;  // deduplicated against a tensor deleted since

    TensorRow row = proto;
    row.hash = enc.hash;
    row.is_delta = enc.is_delta;
    row.base_hash = enc.base_hash;
    row.stored_bytes = enc.stored_bytes;
    row.compression_info = enc.compression_info;
    row.depth = 0;
    // 3.
    if (enc.is_delta) {
      ASSIGN_OR_RETURN(std::optional<TensorRow> base, index_.FindTensor(*enc.base_hash));
      if (!base || base->depth + 1 > kMaxDeltaDepth) return CommitOutcome::kRetry;
      row.depth = base->depth + 1;
    }
    // 4.
    ASSIGN_OR_RETURN(row.file_no, AllocateFileNoLocked());
    Placements placed;  // from here on a failure moves the file back (and txn rolls back)
    RETURN_IF_ERROR(placed.Place(*enc.file, ObjectPath(row.file_no)));
    // 5.
    RETURN_IF_ERROR(index_.InsertTensor(row));
    RETURN_IF_ERROR(index_.AddToCounter(kIngestedKey, proto.npy_bytes).status());
    if (options.durable) RETURN_IF_ERROR(SyncDir(objects_dir_));
    RETURN_IF_ERROR(txn.Commit());
    placed.Committed();
    if (!options.durable) unsynced_.push_back(row.file_no);
    return CommitOutcome::kStored;
  }

  // Inside a write transaction: the next object number. Numbers whose file exists are skipped:
  // such a file was placed by a writer that crashed before its COMMIT (so the counter increment
  // was rolled back too) while another process kept the store open, which kept Open() from
  // collecting it. Only a writer holding the write lock places files, so the check cannot race.
  Result<uint64_t> AllocateFileNoLocked() {
    for (int attempt = 0; attempt < kMaxFileNoAttempts; ++attempt) {
      ASSIGN_OR_RETURN(uint64_t file_no, index_.AddToCounter(kLastFileNoKey, 1));
      std::string path = ObjectPath(file_no);
      struct stat st;
      if (::lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return file_no;
        return ErrnoError("lstat " + path, errno);
      }
    }
    return IOError(objects_dir_ + ": " + std::to_string(kMaxFileNoAttempts) +
                   " leftover files in a row where new objects would go");
  }

  // ---- Reading ----

  // The object paths of hash's chain, [hash's, its base's, ...], each checked to exist.
  // Corruption naming the missing file; NotFound when hash is not stored.
  Result<std::vector<std::string>> ChainPathsLocked(std::string_view hash) {
    ASSIGN_OR_RETURN(std::vector<ChainLink> links, index_.Chain(hash, kMaxDeltaDepth + 1));
    std::vector<std::string> paths;
    for (const ChainLink& link : links) {
      std::string path = ObjectPath(link.file_no);
      if (::access(path.c_str(), F_OK) != 0) {
        if (errno != ENOENT) return ErrnoError("access " + path, errno);
        std::string who = link.hash == hash ? "" : "base " + link.hash + ": ";
        return Corruption(who + "object file missing (" + path + ")");
      }
      paths.push_back(std::move(path));
    }
    return paths;
  }

  struct OpenedTensor {
    TensorRow row;
    std::unique_ptr<TensorFileReader> top;
    std::unique_ptr<ChainPool> base;  // null for a full tensor
  };

  // Opens the tensor's object and its chain. Under mu_, so that no Delete of this process unlinks
  // a file between the lookup and the open; open files stay readable after an unlink. Another
  // process's Delete may unlink one between the two; then the lookup is repeated once.
  Result<OpenedTensor> OpenTensorLocked(std::string_view hash) {
    for (int attempt = 0;; ++attempt) {
      ASSIGN_OR_RETURN(std::optional<TensorRow> row, index_.FindTensor(hash));
      if (!row) return NoSuchTensor(hash);
      Result<std::vector<std::string>> paths = ChainPathsLocked(hash);
      if (!paths.ok()) {
        if (attempt == 0 && paths.status().code() != StatusCode::kIOError) continue;
        return paths.status();
      }
      OpenedTensor t;
      t.row = std::move(*row);
      ASSIGN_OR_RETURN(t.top, TensorFileReader::Open(paths->front()));
      const TensorFileInfo& info = t.top->info();
      if (info.hash != t.row.hash || info.spec != t.row.spec || info.base_hash != t.row.base_hash) {
        return Corruption(paths->front() + " does not hold tensor " + t.row.hash +
                          " as the index describes it");
      }
      if (paths->size() > 1) {
        std::vector<std::string> base_paths(paths->begin() + 1, paths->end());
        ASSIGN_OR_RETURN(t.base, ChainPool::Open(base_paths, kBaseReaders));
      }
      return t;
    }
  }

  Result<OpenedTensor> OpenTensor(std::string_view hash) {
    std::lock_guard lock(mu_);
    RETURN_IF_ERROR(CheckOpenLocked());
    Result<OpenedTensor> t = OpenTensorLocked(hash);
    if (!t.ok() && t.status().code() != StatusCode::kNotFound) {
      return WithContext("tensor " + std::string(hash), t.status());
    }
    return t;
  }

  // Decodes the whole tensor in order into sink, chunks verified, `threads_` decoded in parallel.
  Status ReadOpened(OpenedTensor& t, const std::function<Status(const void*, size_t)>& sink) {
    BaseChunkFn base_fn;
    if (t.base) base_fn = t.base->AsBaseFn();
    Status st = t.top->ReadAll(sink, base_fn, threads_);
    if (!st.ok()) return WithContext("tensor " + t.row.hash, st);
    return Status::Ok();
  }

  Result<WeightTensor> Load(std::string_view hash) {
    ASSIGN_OR_RETURN(OpenedTensor t, OpenTensor(hash));
    WeightTensor out;
    out.spec = t.row.spec;
    out.meta = t.row.meta;
    const uint64_t data_bytes = t.row.spec.DataBytes();
    out.data.reserve(data_bytes);
    RETURN_IF_ERROR(ReadOpened(t, [&](const void* p, size_t n) -> Status {
      if (out.data.size() + n > data_bytes)
        return Corruption("tensor " + t.row.hash + ": too much data");
      out.data.append(static_cast<const char*>(p), n);
      return Status::Ok();
    }));
    if (out.data.size() != data_bytes) {
      return Corruption("tensor " + t.row.hash + ": " + std::to_string(out.data.size()) +
                        " data bytes decoded, " + std::to_string(data_bytes) + " expected");
    }
    return out;
  }

  // One tensor's Verify: nullopt when it is sound; NotFound when it is not stored.
  Result<std::optional<VerifyProblem>> VerifyOne(std::string_view hash) {
    using Problem = std::optional<VerifyProblem>;
    Result<OpenedTensor> t = OpenTensor(hash);
    if (!t.ok()) {
      if (t.status().code() == StatusCode::kNotFound) return t.status();
      return Problem(VerifyProblem{std::string(hash), t.status().message()});
    }
    Sha256 sha;
    RETURN_IF_ERROR(sha.Init());
    std::string header = CanonicalHeader(t->row.spec);
    RETURN_IF_ERROR(sha.Update(header.data(), header.size()));
    uint64_t seen = 0;
    Status st = ReadOpened(*t, [&](const void* p, size_t n) {
      seen += n;
      return sha.Update(p, n);
    });
    if (!st.ok()) {
      // "tensor <h>: " is implied by the problem's hash.
      std::string what = st.message();
      std::string prefix = "tensor " + std::string(hash) + ": ";
      if (what.rfind(prefix, 0) == 0) what = what.substr(prefix.size());
      return Problem(VerifyProblem{std::string(hash), what});
    }
    ASSIGN_OR_RETURN(std::string digest, sha.FinalHex());
    if (seen != t->row.spec.DataBytes()) {
      return Problem(VerifyProblem{std::string(hash), "decoded " + std::to_string(seen) +
                                                          " data bytes, expected " +
                                                          std::to_string(t->row.spec.DataBytes())});
    }
    if (digest != hash) {
      return Problem(
          VerifyProblem{std::string(hash), "SHA-256 mismatch: content hashes to " + digest});
    }
    return Problem();
  }

  // ---- Deleting ----

  // Deletes hash (and its names), first re-encoding the deltas stored against it: as deltas against
  // its own base when that is smaller (their depth stays bounded: it becomes the deleted tensor's),
  // else in full. Protocol:
  //  1. Under the lock: the tensor, its dependents, readers for their chains (and the new base's).
  //  2. Outside the lock: re-encode each dependent into staging, checking that its data still
  //     hashes to its key; fdatasync each.
  //  3. Under the lock, BEGIN IMMEDIATE (synchronous=FULL): start over when the tensor or its
  //     dependents changed meanwhile; allocate numbers, rename the new files into objects/,
  //     point the dependents' rows at them, delete the tensor's row and names, recompute depths,
  //     fsync objects/, COMMIT (the WAL is fsynced: a row is gone for good before its file goes).
  //  4. Unlink the deleted tensor's file and the dependents' old files.
  //  A failure in 3 moves the new files back to staging (where they are deleted) and rolls back.
  // Returns false (and changes nothing) when only_if_unnamed and a name points to the tensor.
  Result<bool> Delete(std::string_view hash, bool only_if_unnamed) {
    for (int attempt = 0; attempt < kCommitAttempts; ++attempt) {
      // 1.
      TensorRow doomed;
      std::vector<TensorRow> deps;
      std::optional<std::string> new_base;
      std::unique_ptr<ChainPool> new_base_pool;
      {
        std::lock_guard lock(mu_);
        RETURN_IF_ERROR(CheckOpenLocked());
        ASSIGN_OR_RETURN(std::optional<TensorRow> row, index_.FindTensor(hash));
        if (!row) return NoSuchTensor(hash);
        doomed = std::move(*row);
        if (only_if_unnamed) {
          ASSIGN_OR_RETURN(std::vector<std::string> names, index_.NamesOf(hash));
          if (!names.empty()) return false;
        }
        ASSIGN_OR_RETURN(deps, index_.Dependents(hash));
        if (!deps.empty() && doomed.base_hash) {
          Result<std::vector<std::string>> paths = ChainPathsLocked(*doomed.base_hash);
          Result<std::unique_ptr<ChainPool>> pool =
              paths.ok() ? ChainPool::Open(*paths, kBaseReaders) : paths.status();
          if (pool.ok()) {
            new_base = doomed.base_hash;
            new_base_pool = std::move(pool).value();
          } else {
            LogWarning("re-encoding the deltas of " + std::string(hash) +
                       " in full: " + pool.status().ToString());
          }
        }
      }

      // 2. One dependent's chain open at a time (there may be many dependents), opened under the
      // lock like every read; a dependent that went meanwhile means starting over.
      std::vector<Encoded> encoded;
      bool changed = false;
      for (size_t i = 0; i < deps.size() && !changed; ++i) {
        Result<std::unique_ptr<ChainReader>> chain = [&]() -> Result<std::unique_ptr<ChainReader>> {
          std::lock_guard lock(mu_);
          RETURN_IF_ERROR(CheckOpenLocked());
          ASSIGN_OR_RETURN(std::vector<std::string> paths, ChainPathsLocked(deps[i].hash));
          return ChainReader::Open(paths);
        }();
        if (!chain.ok() && chain.status().code() == StatusCode::kNotFound) {
          changed = true;
          break;
        }
        if (!chain.ok()) return WithContext("deleting " + std::string(hash), chain.status());
        ChainSource source(std::move(chain).value());
        EncodeRequest req;
        req.spec = deps[i].spec;
        req.meta = deps[i].meta;
        req.source = &source;
        req.base_hash = new_base;
        req.base_pool = new_base_pool.get();
        req.expected_hash = deps[i].hash;
        req.skip_if_stored = false;
        req.durable = true;
        req.extra_info = json::parse(deps[i].compression_info, nullptr, false);
        if (req.extra_info.is_object()) {
          for (const char* ours : {"codec", "shuffle", "delta", "base"}) req.extra_info.erase(ours);
        }
        Result<Encoded> enc = Encode(req);
        if (!enc.ok()) {
          Status st = enc.status();
          if (st.code() == StatusCode::kInvalidArgument) st = Corruption(st.message());
          return WithContext(
              "deleting " + std::string(hash) + ": re-encoding its delta " + deps[i].hash, st);
        }
        encoded.push_back(std::move(enc).value());
      }
      if (changed) continue;

      // 3.
      std::vector<uint64_t> unlink_nos;
      {
        std::lock_guard lock(mu_);
        RETURN_IF_ERROR(CheckOpenLocked());
        SqliteFullSyncScope full_sync(index_.db(), true);
        RETURN_IF_ERROR(full_sync.Enter());
        ASSIGN_OR_RETURN(
            SqliteTransaction txn,
            SqliteTransaction::Begin(index_.db(), SqliteTransaction::Mode::kImmediate));
        ASSIGN_OR_RETURN(std::optional<TensorRow> now, index_.FindTensor(hash));
        if (!now) return NoSuchTensor(hash);
        ASSIGN_OR_RETURN(std::vector<TensorRow> now_deps, index_.Dependents(hash));
        changed = now->file_no != doomed.file_no || now_deps.size() != deps.size();
        for (size_t i = 0; !changed && i < deps.size(); ++i) {
          changed = now_deps[i].hash != deps[i].hash || now_deps[i].file_no != deps[i].file_no;
        }
        std::optional<TensorRow> base_row;
        if (!changed && new_base) {
          ASSIGN_OR_RETURN(base_row, index_.FindTensor(*new_base));
          changed = !base_row.has_value();
        }
        if (!changed && only_if_unnamed) {
          ASSIGN_OR_RETURN(std::vector<std::string> names, index_.NamesOf(hash));
          if (!names.empty()) return false;
        }
        if (changed) continue;  // a concurrent store or delete: start over

        Placements placed;
        for (size_t i = 0; i < deps.size(); ++i) {
          TensorRow row = deps[i];
          row.is_delta = encoded[i].is_delta;
          row.base_hash = encoded[i].base_hash;
          row.depth = encoded[i].is_delta ? base_row->depth + 1 : 0;
          row.stored_bytes = encoded[i].stored_bytes;
          row.codec = codec_.ToString();
          row.compression_info = encoded[i].compression_info;
          ASSIGN_OR_RETURN(row.file_no, AllocateFileNoLocked());
          RETURN_IF_ERROR(placed.Place(*encoded[i].file, ObjectPath(row.file_no)));
          RETURN_IF_ERROR(index_.ReplaceObject(row));
          unlink_nos.push_back(deps[i].file_no);
        }
        RETURN_IF_ERROR(index_.DeleteTensor(hash));
        RETURN_IF_ERROR(index_.RecomputeDepths(kMaxDeltaDepth));
        if (!deps.empty()) RETURN_IF_ERROR(SyncDir(objects_dir_));
        RETURN_IF_ERROR(txn.Commit());
        placed.Committed();
        unlink_nos.push_back(doomed.file_no);
      }
      // 4.
      UnlinkObjects(unlink_nos);
      return true;
    }
    return IOError("deleting " + std::string(hash) + ": the store changed during every attempt");
  }

  // After a COMMIT that dropped the rows naming these objects. Open readers keep reading them.
  // A file that cannot be unlinked is collected by the next Open() or Gc().
  void UnlinkObjects(const std::vector<uint64_t>& file_nos) {
    for (uint64_t n : file_nos) {
      std::string path = ObjectPath(n);
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        LogWarning(
            ErrnoError("unlink " + path + " (removed at the next open or gc)", errno).ToString());
      }
    }
  }

  // ---- Garbage ----

  // Files in objects/ that no row names: left by a crash between the rename and the COMMIT, or by
  // a failed unlink. Every file is placed inside a write transaction, so holding one here means no
  // writer of any process is between those two steps.
  Result<uint64_t> RemoveOrphanObjects() {
    std::lock_guard lock(mu_);
    RETURN_IF_ERROR(CheckOpenLocked());
    ASSIGN_OR_RETURN(SqliteTransaction txn,
                     SqliteTransaction::Begin(index_.db(), SqliteTransaction::Mode::kImmediate));
    ASSIGN_OR_RETURN(std::vector<uint64_t> nos, index_.FileNos());
    std::unordered_set<uint64_t> named(nos.begin(), nos.end());
    ASSIGN_OR_RETURN(auto entries, ListDir(objects_dir_));
    uint64_t removed = 0;
    for (const auto& [name, is_dir] : entries) {
      if (is_dir) continue;  // the store makes no directories here; one found is left alone
      if (name.size() > 3 && name.compare(name.size() - 3, 3, ".h5") == 0) {
        std::string stem = name.substr(0, name.size() - 3);
        char* end = nullptr;
        errno = 0;
        unsigned long long n = strtoull(stem.c_str(), &end, 10);
        // Only the canonical spelling of a number is an object name ("007.h5" is not object 7).
        if (errno == 0 && *end == '\0' && std::to_string(n) == stem && named.contains(n)) continue;
      }
      std::string path = objects_dir_ + "/" + name;
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        return ErrnoError("unlink leftover object " + path, errno);
      }
      ++removed;
    }
    RETURN_IF_ERROR(txn.Rollback());  // nothing was written
    return removed;
  }

  // Staging directories of store instances that are gone (their owner lock is free), and the
  // staging files in them.
  Result<uint64_t> RemoveDeadStaging() {
    ASSIGN_OR_RETURN(auto entries, ListDir(staging_root_));
    std::set<std::string> owners;
    for (const auto& [name, is_dir] : entries) {
      if (!is_dir && name.size() > 6 && name.compare(name.size() - 6, 6, ".owner") == 0 &&
          name[0] != '.') {
        owners.insert(name.substr(0, name.size() - 6));
      }
    }
    uint64_t removed = 0;
    for (const auto& [name, is_dir] : entries) {
      if (!is_dir || staging_root_ + "/" + name == staging_dir_) continue;
      if (owners.contains(name)) continue;  // handled below, under its lock
      // A live instance creates its owner file before its directory and removes it after.
      ASSIGN_OR_RETURN(uint64_t n, RemoveFlatDir(staging_root_ + "/" + name));
      removed += n;
    }
    for (const std::string& owner : owners) {
      std::string dir = staging_root_ + "/" + owner;
      if (dir == staging_dir_) continue;
      std::string lock_path = dir + ".owner";
      int fd = ::open(lock_path.c_str(), O_RDWR | O_CLOEXEC);
      if (fd < 0) continue;  // removed meanwhile by another collector
      ScopedFd lock_fd(fd);
      if (::flock(fd, LOCK_EX | LOCK_NB) != 0) continue;  // alive
      ASSIGN_OR_RETURN(uint64_t n, RemoveFlatDir(dir));
      removed += n;
      if (::unlink(lock_path.c_str()) != 0 && errno != ENOENT) {
        return ErrnoError("unlink " + lock_path, errno);
      }
    }
    return removed;
  }

  // This instance's staging directory, staging/<pid>-<random>/, with its owner lock
  // staging/<pid>-<random>.owner held for the instance's life: other instances (Gc, Open) remove
  // a staging directory only when they can take its owner lock. The owner file is locked under a
  // temporary name and renamed, so nobody sees it unlocked.
  Status CreateInstanceStaging() {
    std::string id;
    try {
      std::random_device rd;
      char buf[32];
      snprintf(buf, sizeof(buf), "%d-%08x", static_cast<int>(::getpid()), rd());
      id = buf;
    } catch (const std::exception& e) {
      return IOError(std::string("weight store: random_device: ") + e.what());
    }
    std::string tmp = staging_root_ + "/.tmp-" + id + ".owner";
    ASSIGN_OR_RETURN(ScopedFd fd, OpenFile(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (::flock(fd.get(), LOCK_EX) != 0) return ErrnoError("flock " + tmp, errno);
    std::string owner = staging_root_ + "/" + id + ".owner";
    if (::rename(tmp.c_str(), owner.c_str()) != 0) {
      Status st = ErrnoError("rename " + tmp, errno);
      ::unlink(tmp.c_str());  // best effort: an Open() with the exclusive lock clears staging
      return st;
    }
    std::string dir = staging_root_ + "/" + id;
    if (::mkdir(dir.c_str(), 0755) != 0) return ErrnoError("mkdir " + dir, errno);
    staging_dir_ = dir;
    owner_path_ = owner;
    owner_fd_ = std::move(fd);
    return Status::Ok();
  }

  // ---- Durability ----

  Status Sync() {
    // 1. fdatasync the objects committed without it (outside the lock: there may be many);
    // 2. fsync objects/ and the store directory (new names, the WAL file);
    // 3. checkpoint the WAL, which fsyncs it before copying it into the database and fsyncs that.
    std::vector<uint64_t> pending;
    {
      std::lock_guard lock(mu_);
      RETURN_IF_ERROR(CheckOpenLocked());
      pending.swap(unsynced_);
    }
    Status st;
    size_t next = 0;  // pending[next..] are not synced yet
    for (; next < pending.size(); ++next) {
      std::string path = ObjectPath(pending[next]);
      st = Fdatasync(path);
      if (!st.ok() && ::access(path.c_str(), F_OK) != 0 && errno == ENOENT) {
        st = Status::Ok();  // deleted since: nothing to make durable
      }
      if (!st.ok()) break;
    }
    if (st.ok()) st = SyncDir(objects_dir_);
    if (st.ok()) st = SyncDir(dir_);
    std::lock_guard lock(mu_);
    if (!st.ok()) {
      // The next Sync() retries what this one did not finish.
      unsynced_.insert(unsynced_.end(), pending.begin() + static_cast<ptrdiff_t>(next),
                       pending.end());
      return WithContext("weight store " + dir_ + ": sync", st);
    }
    RETURN_IF_ERROR(CheckOpenLocked());
    // The result row (busy, frames) is not an error: busy means another process is reading, and
    // the frames it pins were fsynced in the WAL all the same.
    Status checkpoint = index_.db().QueryRow("PRAGMA wal_checkpoint(FULL)").status();
    if (!checkpoint.ok()) return WithContext(dir_ + "/index.db", checkpoint);
    return Status::Ok();
  }

  Status Close() {
    {
      std::lock_guard lock(mu_);
      if (closed_) return Status::Ok();
    }
    Status st = Sync();
    std::lock_guard lock(mu_);
    closed_ = true;
    Status closed = index_.Close();
    if (st.ok()) st = closed;
    // Leftovers here would be staging files of callers that did not clean up; the lock is released
    // below either way, so Gc() or Open() would remove them.
    Result<uint64_t> removed = RemoveFlatDir(staging_dir_);
    if (!removed.ok()) LogWarning(removed.status().ToString());
    if (!owner_path_.empty() && ::unlink(owner_path_.c_str()) != 0 && errno != ENOENT) {
      LogWarning(ErrnoError("unlink " + owner_path_, errno).ToString());
    }
    owner_fd_.Close().IgnoreError();  // a lock file: nothing was written to it
    lock_fd_.Close().IgnoreError();   // releases the store's shared lock; nothing was written
    return st;
  }

  // Constant after Open().
  const std::string dir_;
  const std::string objects_dir_;
  const std::string staging_root_;
  std::string staging_dir_;  // this instance's staging/<id>; set by CreateInstanceStaging
  std::string owner_path_;
  const CodecSpec codec_;
  const int threads_;
  ScopedFd lock_fd_;   // flock on LOCK: shared while open; exclusive only during Open()'s repair
  ScopedFd owner_fd_;  // flock on owner_path_, held while open
  std::atomic<uint64_t> scratch_seq_{0};

  // Lock order: mu_, then SQLite's locks (a write transaction is only begun with mu_ held). HDF5's
  // process-wide mutex (tensor_file.cc) is taken inside TensorFile* calls, some under mu_.
  std::mutex mu_;
  WeightIndex index_;               // guarded by mu_
  std::vector<uint64_t> unsynced_;  // guarded by mu_: committed without fdatasync since Sync()
  bool closed_ = false;             // guarded by mu_
};

// ---- Coral's HDF5 files (ImportCoral) ----

namespace {

using internal::CheckId;
using internal::H5Id;
using internal::Hdf5Error;
using internal::LockHdf5;

// How a Coral dataset's elements map to a dtype, with the memory type that reads them as canonical
// (little-endian) elements; HDF5 converts the byte order.
struct CoralType {
  DType dtype;
  H5Id mem_type;
};

// With the HDF5 lock held. InvalidArgument for element types a tensor cannot have.
Result<CoralType> MapCoralType(hid_t file_type) {
  const H5T_class_t cls = H5Tget_class(file_type);
  const size_t size = H5Tget_size(file_type);
  auto copy = [](hid_t t) { return CheckId(H5Tcopy(t), "copying a datatype"); };
  switch (cls) {
    case H5T_INTEGER: {
      const bool is_signed = H5Tget_sign(file_type) != H5T_SGN_NONE;
      struct {
        size_t size;
        DType s, u;
        hid_t ns, nu;
      } const kInts[] = {{1, DType::kInt8, DType::kUInt8, H5T_NATIVE_INT8, H5T_NATIVE_UINT8},
                         {2, DType::kInt16, DType::kUInt16, H5T_NATIVE_INT16, H5T_NATIVE_UINT16},
                         {4, DType::kInt32, DType::kUInt32, H5T_NATIVE_INT32, H5T_NATIVE_UINT32},
                         {8, DType::kInt64, DType::kUInt64, H5T_NATIVE_INT64, H5T_NATIVE_UINT64}};
      for (const auto& k : kInts) {
        if (k.size != size) continue;
        ASSIGN_OR_RETURN(H5Id t, copy(is_signed ? k.ns : k.nu));
        return CoralType{is_signed ? k.s : k.u, std::move(t)};
      }
      break;
    }
    case H5T_FLOAT: {
      if (size == 4 || size == 8) {
        ASSIGN_OR_RETURN(H5Id t, copy(size == 4 ? H5T_NATIVE_FLOAT : H5T_NATIVE_DOUBLE));
        return CoralType{size == 4 ? DType::kFloat32 : DType::kFloat64, std::move(t)};
      }
      if (size == 2) {
        // HDF5 1.10 has no native half type: the file's own layout in little-endian order.
        ASSIGN_OR_RETURN(H5Id t, copy(file_type));
        if (H5Tset_order(t.get(), H5T_ORDER_LE) < 0) return Hdf5Error("float16 memory type");
        return CoralType{DType::kFloat16, std::move(t)};
      }
      break;
    }
    case H5T_ENUM:
      // h5py stores numpy's bool as an enum {FALSE = 0, TRUE = 1} over int8.
      if (size == 1) {
        ASSIGN_OR_RETURN(H5Id t, copy(file_type));
        return CoralType{DType::kBool, std::move(t)};
      }
      break;
    case H5T_COMPOUND: {
      // h5py stores complex numbers as a compound {r, i} of two floats.
      if (H5Tget_nmembers(file_type) != 2 || (size != 8 && size != 16)) break;
      const size_t half = size / 2;
      bool floats = true;
      for (unsigned m = 0; m < 2; ++m) {
        ASSIGN_OR_RETURN(H5Id mt, CheckId(H5Tget_member_type(file_type, m), "member type"));
        floats = floats && H5Tget_class(mt.get()) == H5T_FLOAT && H5Tget_size(mt.get()) == half &&
                 H5Tget_member_offset(file_type, m) == m * half;
      }
      if (!floats) break;
      ASSIGN_OR_RETURN(H5Id t, CheckId(H5Tcreate(H5T_COMPOUND, size), "complex memory type"));
      for (unsigned m = 0; m < 2; ++m) {
        char* name = H5Tget_member_name(file_type, m);
        if (name == nullptr) return Hdf5Error("complex member name");
        herr_t rc =
            H5Tinsert(t.get(), name, m * half, half == 4 ? H5T_NATIVE_FLOAT : H5T_NATIVE_DOUBLE);
        H5free_memory(name);
        if (rc < 0) return Hdf5Error("complex memory type");
      }
      return CoralType{size == 8 ? DType::kComplex64 : DType::kComplex128, std::move(t)};
    }
    default:
      break;
  }
  return InvalidArgument("unsupported HDF5 element type (class " + std::to_string(cls) + ", " +
                         std::to_string(size) + " bytes)");
}

// The dataset's shape (a scalar dataspace is a 0-d tensor). With the HDF5 lock held.
Result<std::vector<uint64_t>> DatasetShape(hid_t ds) {
  ASSIGN_OR_RETURN(H5Id space, CheckId(H5Dget_space(ds), "dataspace"));
  switch (H5Sget_simple_extent_type(space.get())) {
    case H5S_SCALAR:
      return std::vector<uint64_t>();
    case H5S_SIMPLE: {
      const int rank = H5Sget_simple_extent_ndims(space.get());
      if (rank < 0) return Hdf5Error("dataspace rank");
      std::vector<hsize_t> dims(static_cast<size_t>(rank));
      if (H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0) {
        return Hdf5Error("dataspace dimensions");
      }
      return std::vector<uint64_t>(dims.begin(), dims.end());
    }
    default:
      return InvalidArgument("an empty (null) dataspace");
  }
}

// Reads the whole dataset (as mem_type, C order) into fd from offset 0, in hyperslabs of about
// kBlockBytes: the slab is one index in the leading dimensions, a run of indices in one dimension
// and everything in the trailing ones, so a large tensor never sits in memory. Takes the HDF5 lock
// for each read only, so that loads on other threads interleave with a long import.
Status ExtractDataset(hid_t ds, hid_t mem_type, const TensorSpec& spec, int fd) {
  const uint64_t item = ItemSize(spec.dtype);
  const uint64_t data_bytes = spec.DataBytes();
  if (data_bytes == 0) return Status::Ok();
  std::string buf;
  if (spec.shape.empty()) {
    buf.resize(item);
    {
      internal::Hdf5Lock lock = LockHdf5();
      if (H5Dread(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) < 0) {
        return Hdf5Error("reading the dataset");
      }
    }
    return PwriteFull(fd, buf.data(), buf.size(), 0);
  }
  const size_t rank = spec.shape.size();
  // step[k]: bytes of one index in dimension k (the trailing dimensions' product).
  std::vector<uint64_t> step(rank);
  for (size_t k = rank; k-- > 0;) step[k] = k + 1 == rank ? item : step[k + 1] * spec.shape[k + 1];
  size_t split = 0;  // the dimension that is cut into runs
  while (step[split] > kBlockBytes && split + 1 < rank) ++split;
  const uint64_t run = std::max<uint64_t>(1, kBlockBytes / step[split]);

  H5Id file_space;
  {
    internal::Hdf5Lock lock = LockHdf5();
    ASSIGN_OR_RETURN(file_space, CheckId(H5Dget_space(ds), "dataspace"));
  }
  std::vector<hsize_t> start(rank, 0), count(rank, 1);
  for (size_t k = split + 1; k < rank; ++k) count[k] = spec.shape[k];
  uint64_t off = 0;
  while (off < data_bytes) {
    const uint64_t n = std::min<uint64_t>(run, spec.shape[split] - start[split]);
    count[split] = n;
    const uint64_t bytes = n * step[split];
    buf.resize(static_cast<size_t>(bytes));
    {
      internal::Hdf5Lock lock = LockHdf5();
      if (H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(),
                              nullptr) < 0) {
        return Hdf5Error("selecting a hyperslab");
      }
      const hsize_t mem_dims[1] = {bytes / item};
      ASSIGN_OR_RETURN(H5Id mem_space,
                       CheckId(H5Screate_simple(1, mem_dims, nullptr), "dataspace"));
      if (H5Dread(ds, mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, buf.data()) < 0) {
        return Hdf5Error("reading the dataset at offset " + std::to_string(off));
      }
    }
    RETURN_IF_ERROR(PwriteFull(fd, buf.data(), buf.size(), static_cast<off_t>(off)));
    off += bytes;
    // Advance like an odometer: the run, then the leading dimensions.
    start[split] += n;
    for (size_t k = split; k > 0 && start[k] == spec.shape[k]; --k) {
      start[k] = 0;
      ++start[k - 1];
    }
  }
  return Status::Ok();
}

// A string attribute, or "" when it is missing or not a string (Coral leaves some empty).
std::string OptionalStringAttr(hid_t obj, const char* name) {
  Result<std::string> v = internal::ReadStringAttr(obj, name);
  if (!v.ok()) {
    H5Eclear2(H5E_DEFAULT);
    return "";
  }
  return std::move(v).value();
}

// The names in group `group` of file, ascending; empty when the group does not exist.
Result<std::vector<std::string>> ChildNames(hid_t file, const char* group) {
  std::vector<std::string> names;
  const htri_t exists = H5Lexists(file, group, H5P_DEFAULT);
  if (exists < 0) return Hdf5Error(group);
  if (exists == 0) return names;
  ASSIGN_OR_RETURN(H5Id g, CheckId(H5Gopen2(file, group, H5P_DEFAULT), group));
  auto collect = [](hid_t, const char* name, const H5L_info_t*, void* data) -> herr_t {
    static_cast<std::vector<std::string>*>(data)->emplace_back(name);
    return 0;
  };
  if (H5Literate(g.get(), H5_INDEX_NAME, H5_ITER_INC, nullptr, collect, &names) < 0) {
    return Hdf5Error(std::string("listing ") + group);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// zlib.decompress of a stream that must inflate to exactly `size` bytes.
Result<std::string> Inflate(std::string_view in, size_t size, std::string_view what) {
  std::string out(size, '\0');
  uLongf len = size;
  // uncompress wants a non-null destination even for an empty result.
  char dummy = 0;
  int rc = ::uncompress(reinterpret_cast<Bytef*>(size > 0 ? out.data() : &dummy), &len,
                        reinterpret_cast<const Bytef*>(in.data()), in.size());
  if (rc != Z_OK || len != size) {
    return InvalidArgument(std::string(what) + ": zlib stream does not inflate to " +
                           std::to_string(size) + " bytes");
  }
  return out;
}

uint32_t LoadU32(const char* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

// Coral's lossless delta encodings (DeltaEncoder in coral/delta/delta_encoder.py). Coral marks
// five as lossless; the XOR ones are bit-exact for float32, the others are lossless only in exact
// arithmetic (reference + (weight - reference) rounds), so what is imported is what Coral's own
// decode_delta returns.
bool IsCoralLossless(std::string_view type) {
  return type == "float32_raw" || type == "compressed" || type == "xor_float32" ||
         type == "xor_bfloat16" || type == "exponent_mantissa";
}

// Coral's decode_delta for the lossless encodings, bit for bit as numpy computes it. spec is the
// reference's (Coral deltas keep shape and dtype); ref its canonical data; delta the dataset's
// elements as read. InvalidArgument (a reason to skip) for what is not reproduced exactly.
Result<std::string> ReconstructCoralDelta(std::string_view type, const TensorSpec& spec,
                                          std::string_view ref, std::string_view delta,
                                          DType delta_dtype) {
  const uint64_t n = spec.ElementCount();
  const std::string what = std::string(type) + " delta";
  std::string out(ref.size(), '\0');

  // reference.data + float32 differences, in numpy's result type (float32 + float32 -> float32,
  // float64 + float32 -> float64), cast back to the reference's dtype (a no-op for these two).
  auto add_f32_diffs = [&](std::string_view diffs) -> Result<std::string> {
    if (diffs.size() != 4 * n) return InvalidArgument(what + ": size does not match the reference");
    for (uint64_t i = 0; i < n; ++i) {
      float d;
      memcpy(&d, diffs.data() + 4 * i, 4);
      if (spec.dtype == DType::kFloat32) {
        float r;
        memcpy(&r, ref.data() + 4 * i, 4);
        float v = r + d;
        memcpy(out.data() + 4 * i, &v, 4);
      } else {
        double r;
        memcpy(&r, ref.data() + 8 * i, 8);
        double v = r + static_cast<double>(d);
        memcpy(out.data() + 8 * i, &v, 8);
      }
    }
    return std::move(out);
  };
  const bool float_ref = spec.dtype == DType::kFloat32 || spec.dtype == DType::kFloat64;

  if (type == "float32_raw" || type == "compressed") {
    if (!float_ref) {
      return InvalidArgument(what + " of a " + std::string(DTypeName(spec.dtype)) +
                             " tensor (numpy's mixed-type rounding is not reproduced)");
    }
    if (type == "float32_raw") {
      if (delta_dtype != DType::kFloat32) return InvalidArgument(what + ": data is not float32");
      return add_f32_diffs(delta);
    }
    if (delta_dtype != DType::kUInt8) return InvalidArgument(what + ": data is not bytes");
    ASSIGN_OR_RETURN(std::string diffs, Inflate(delta, 4 * n, what));
    return add_f32_diffs(diffs);
  }

  // The XOR and exponent/mantissa encodings go through float32 views of both tensors.
  if (spec.dtype != DType::kFloat32) {
    return InvalidArgument(what + " of a " + std::string(DTypeName(spec.dtype)) +
                           " tensor (Coral round-trips it through float32: lossy)");
  }
  if (delta_dtype != DType::kUInt8) return InvalidArgument(what + ": data is not bytes");
  auto ref_bits = [&](uint64_t i) { return LoadU32(ref.data() + 4 * i); };
  auto store = [&](uint64_t i, uint32_t bits) { memcpy(out.data() + 4 * i, &bits, 4); };

  if (type == "xor_float32" || type == "xor_bfloat16") {
    // uint32 length of the first stream, then two zlib streams of uint16/uint32 (xor_float32:
    // 9 sign+exponent bits and 23 mantissa bits of the XOR) or uint16/uint16 (xor_bfloat16: the
    // XOR's upper and lower halves).
    if (delta.size() < 4) return InvalidArgument(what + ": shorter than its header");
    const uint32_t len1 = LoadU32(delta.data());
    if (len1 > delta.size() - 4) return InvalidArgument(what + ": first stream overruns the data");
    const bool f32 = type == "xor_float32";
    ASSIGN_OR_RETURN(std::string s1, Inflate(delta.substr(4, len1), 2 * n, what));
    ASSIGN_OR_RETURN(std::string s2, Inflate(delta.substr(4 + len1), (f32 ? 4 : 2) * n, what));
    for (uint64_t i = 0; i < n; ++i) {
      uint16_t hi;
      memcpy(&hi, s1.data() + 2 * i, 2);
      uint32_t x;
      if (f32) {
        uint32_t mantissa = LoadU32(s2.data() + 4 * i);
        x = (static_cast<uint32_t>(hi) << 23) | mantissa;
      } else {
        uint16_t lo;
        memcpy(&lo, s2.data() + 2 * i, 2);
        x = (static_cast<uint32_t>(hi) << 16) | lo;
      }
      store(i, ref_bits(i) ^ x);
    }
    return out;
  }

  if (type == "exponent_mantissa") {
    // Two uint32 lengths, then zlib streams of numpy.packbits(signs) (most significant bit
    // first), uint8 exponents and uint32 mantissas of the float32 difference; the result is
    // reference (as float32) + difference.
    if (delta.size() < 8) return InvalidArgument(what + ": shorter than its header");
    const uint64_t len_signs = LoadU32(delta.data());
    const uint64_t len_exps = LoadU32(delta.data() + 4);
    if (len_signs + len_exps > delta.size() - 8) {
      return InvalidArgument(what + ": streams overrun the data");
    }
    ASSIGN_OR_RETURN(std::string signs, Inflate(delta.substr(8, len_signs), (n + 7) / 8, what));
    ASSIGN_OR_RETURN(std::string exps, Inflate(delta.substr(8 + len_signs, len_exps), n, what));
    ASSIGN_OR_RETURN(std::string mants,
                     Inflate(delta.substr(8 + len_signs + len_exps), 4 * n, what));
    for (uint64_t i = 0; i < n; ++i) {
      const uint32_t sign = (static_cast<uint8_t>(signs[i / 8]) >> (7 - i % 8)) & 1;
      const uint32_t bits = (sign << 31) |
                            (static_cast<uint32_t>(static_cast<uint8_t>(exps[i])) << 23) |
                            (LoadU32(mants.data() + 4 * i) & 0x7fffff);
      float d, r;
      memcpy(&d, &bits, 4);
      const uint32_t rb = ref_bits(i);
      memcpy(&r, &rb, 4);
      float v = r + d;
      memcpy(out.data() + 4 * i, &v, 4);
    }
    return out;
  }
  return InvalidArgument("unknown delta type '" + std::string(type) + "'");
}

// Coral's compression_info attribute as JSON when it parses, else as the text it is.
json CoralInfo(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return text;
  return j;
}

}  // namespace

// ---- WeightStore ----

WeightStore::WeightStore(std::unique_ptr<Impl> impl, std::string staging_dir)
    : impl_(std::move(impl)), staging_dir_(std::move(staging_dir)) {}

WeightStore::~WeightStore() {
  Status st = impl_->Close();
  if (!st.ok()) LogWarning("closing: " + st.ToString());
}

Result<std::unique_ptr<WeightStore>> WeightStore::Open(const std::string& dir,
                                                       const Options& options) {
  RETURN_IF_ERROR(MakeDirs(dir + "/objects"));
  RETURN_IF_ERROR(MakeDirs(dir + "/staging"));

  // Several processes may open one store (the daemon and a command-line tool): SQLite arbitrates
  // the index, and this lock decides who may repair after a crash. Only an opener that finds
  // nobody else (exclusive lock) may delete leftover objects and staging files, which would
  // otherwise be another process's commits in flight. Everyone then holds it shared until closing.
  ASSIGN_OR_RETURN(StoreDirLock dir_lock, LockStoreDir(dir));
  const bool exclusive = dir_lock.exclusive;
  ScopedFd lock_fd = std::move(dir_lock.fd);

  const std::string index_path = dir + "/index.db";
  Result<WeightIndex> index = WeightIndex::Open(index_path);
  if (!index.ok()) return WithContext(index_path, index.status());

  // The codec is fixed when the store is created (under the write lock, so two creators agree).
  CodecSpec codec;
  {
    ASSIGN_OR_RETURN(SqliteTransaction txn,
                     SqliteTransaction::Begin(index->db(), SqliteTransaction::Mode::kImmediate));
    ASSIGN_OR_RETURN(std::optional<std::string> stored, index->GetMeta(kCodecKey));
    if (stored) {
      Result<CodecSpec> parsed = CodecSpec::Parse(*stored);
      if (!parsed.ok()) return WithContext(index_path + ": stored codec", parsed.status());
      codec = *parsed;
      if (options.codec && options.codec->ToString() != codec.ToString()) {
        return InvalidArgument("weight store " + dir + " uses codec " + codec.ToString() +
                               ", not " + options.codec->ToString() +
                               " (stores do not mix codecs)");
      }
    } else {
      codec = options.codec.value_or(CodecSpec{});
      RETURN_IF_ERROR(index->SetMeta(kCodecKey, codec.ToString()));
    }
    RETURN_IF_ERROR(txn.Commit());
  }
  // Coral files compressed with LZF or zstd are read through HDF5's own filter pipeline.
  RETURN_IF_ERROR(RegisterFilters());

  auto impl = std::make_unique<Impl>(dir, std::move(lock_fd), std::move(index).value(), codec,
                                     options.threads);
  if (exclusive) {
    // Nobody else has the store open: everything in staging/ is garbage from a crash, and so is
    // every object no row names.
    ASSIGN_OR_RETURN(auto entries, ListDir(impl->staging_root_));
    for (const auto& [name, is_dir] : entries) {
      std::string path = impl->staging_root_ + "/" + name;
      if (is_dir) {
        RETURN_IF_ERROR(RemoveFlatDir(path).status());
      } else if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        return ErrnoError("unlink leftover staging file " + path, errno);
      }
    }
    RETURN_IF_ERROR(impl->RemoveOrphanObjects().status());
    // Not atomic (flock converts by unlocking first), which is harmless: the repair is done and we
    // have nothing in flight yet.
    RETURN_IF_ERROR(ShareStoreDirLock(impl->lock_fd_.get(), dir));
  } else {
    Result<uint64_t> removed = impl->RemoveDeadStaging();
    if (!removed.ok()) LogWarning("collecting staging leftovers: " + removed.status().ToString());
  }
  RETURN_IF_ERROR(impl->CreateInstanceStaging());
  // The names made above (objects/, staging/, index.db and its WAL) must survive a machine crash
  // for a durable commit to: durable commits fsync objects/ and the WAL, not the store directory.
  RETURN_IF_ERROR(SyncDir(dir));
  RETURN_IF_ERROR(SyncDir(dir + "/staging"));

  std::string staging = impl->staging_dir_;
  return std::unique_ptr<WeightStore>(new WeightStore(std::move(impl), std::move(staging)));
}

Status WeightStore::Close() { return impl_->Close(); }

CodecSpec WeightStore::codec() const { return impl_->codec_; }

namespace {

// InvalidArgument when the spec's data size does not fit in 64 bits.
Status CheckSpecSize(const TensorSpec& spec) {
  unsigned __int128 bytes = ItemSize(spec.dtype);
  for (uint64_t d : spec.shape) {
    bytes *= d;
    if (bytes > UINT64_MAX) {
      if (spec.ElementCount() == 0) return Status::Ok();  // a zero dimension later
      return InvalidArgument("tensor of shape " + spec.ShapeText() + ": size overflows 64 bits");
    }
  }
  return Status::Ok();
}

}  // namespace

Result<StoreResult> WeightStore::Store(const WeightTensor& tensor, const StoreOptions& options) {
  RETURN_IF_ERROR(impl_->CheckOpen());
  RETURN_IF_ERROR(CheckSpecSize(tensor.spec));
  if (tensor.data.size() != tensor.spec.DataBytes()) {
    return InvalidArgument("tensor of shape " + tensor.spec.ShapeText() + " and dtype " +
                           std::string(DTypeName(tensor.spec.dtype)) + " has " +
                           std::to_string(tensor.spec.DataBytes()) + " data bytes, not " +
                           std::to_string(tensor.data.size()));
  }
  MemorySource source(tensor.data);
  return impl_->StoreFrom(tensor.spec, tensor.meta, source, options, std::nullopt);
}

Result<StoreResult> WeightStore::StoreNpy(int fd, const CoralMeta& meta,
                                          const StoreOptions& options,
                                          std::optional<std::string_view> expected_hash) {
  // The store protocol. Any failure leaves the store as it was; the staged file is only read.
  //  1. Parse and check the .npy (header, size); canonicalize into a scratch file when the data is
  //     big-endian or Fortran-ordered. Sample the sketch; pick a delta base. Stream the data once,
  //     in 1 MiB blocks, into the SHA-256 thread and the writer(s), which write objects in this
  //     instance's staging directory; keep the smaller of the full and the delta encoding;
  //     durable: fdatasync it. A hash other than expected_hash: InvalidArgument.
  //  2. Under the mutex, BEGIN IMMEDIATE (durable: synchronous=FULL). A tensor already stored:
  //     count the ingested bytes, COMMIT, drop the new file (dedup).
  //  3. A delta whose base was deleted meanwhile: start over (the last attempt without a base).
  //  4. Allocate an object number (counter + 1) and rename the file to objects/<n>.h5, read-only.
  //     Durable: fsync objects/.
  //  5. INSERT the row, add the ingested bytes and COMMIT (durable: the WAL is fsynced).
  //  6. If 4 or 5 fails: rename the file back to staging (where it is deleted) and ROLLBACK.
  //  A crash before 4 leaves a file in staging/, between 4 and 5 an object no row names; Open()
  //  (and Gc()) delete both, so the index only ever names complete objects.
  RETURN_IF_ERROR(impl_->CheckOpen());
  ASSIGN_OR_RETURN(uint64_t file_size, FileSize(fd));
  std::string prefix(static_cast<size_t>(std::min<uint64_t>(file_size, kNpyPrefixBytes)), '\0');
  ASSIGN_OR_RETURN(size_t got, PreadFull(fd, prefix.data(), prefix.size(), 0));
  prefix.resize(got);
  ASSIGN_OR_RETURN(NpyHeader header, ParseNpyHeader(prefix));
  RETURN_IF_ERROR(CheckDataSize(header, file_size));
  const uint64_t data_bytes = header.spec.DataBytes();
  if (DataIsCanonical(header)) {
    FdSource source(fd, header.data_offset, "reading the .npy file");
    return impl_->StoreFrom(header.spec, meta, source, options, expected_hash);
  }

  // Big-endian or Fortran order: convert through a scratch file, both sides mapped, so that memory
  // stays bounded (the kernel pages both files) whatever the size.
  ASSIGN_OR_RETURN(std::unique_ptr<StagedFile> scratch, StagedFile::Create(staging_dir_));
  if (data_bytes > 0) {
    if (::ftruncate(scratch->fd(), static_cast<off_t>(data_bytes)) != 0) {
      return ErrnoError("ftruncate " + scratch->path(), errno);
    }
    void* in = ::mmap(nullptr, file_size, PROT_READ, MAP_SHARED, fd, 0);
    if (in == MAP_FAILED) return ErrnoError("mmap of the .npy file", errno);
    void* out = ::mmap(nullptr, data_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, scratch->fd(), 0);
    if (out == MAP_FAILED) {
      int err = errno;
      ::munmap(in, file_size);
      return ErrnoError("mmap " + scratch->path(), err);
    }
    CanonicalizeData(header, static_cast<const char*>(in) + header.data_offset, out);
    ::munmap(in, file_size);  // munmap of our own mappings fails only for invalid arguments
    ::munmap(out, data_bytes);
  }
  FdSource source(scratch->fd(), 0, "reading " + scratch->path());
  return impl_->StoreFrom(header.spec, meta, source, options, expected_hash);
}

Result<WeightTensor> WeightStore::Load(std::string_view hash) { return impl_->Load(hash); }

bool WeightStore::Exists(std::string_view hash) {
  std::lock_guard lock(impl_->mu_);
  if (!impl_->CheckOpenLocked().ok()) return false;
  Result<bool> found = impl_->index_.HasTensor(hash);
  if (!found.ok()) {
    LogWarning("Exists(" + std::string(hash) + "): " + found.status().ToString());
    return false;
  }
  return *found;
}

Status WeightStore::Delete(std::string_view hash) {
  return impl_->Delete(hash, /*only_if_unnamed=*/false).status();
}

Result<std::vector<std::string>> WeightStore::Hashes() {
  std::lock_guard lock(impl_->mu_);
  RETURN_IF_ERROR(impl_->CheckOpenLocked());
  return impl_->index_.ListHashes();
}

std::vector<std::string> WeightStore::List() {
  Result<std::vector<std::string>> hashes = Hashes();
  if (!hashes.ok()) {
    LogWarning("List(): " + hashes.status().ToString());
    return {};
  }
  return std::move(hashes).value();
}

Result<WeightMetadata> WeightStore::GetMetadata(std::string_view hash) {
  std::lock_guard lock(impl_->mu_);
  RETURN_IF_ERROR(impl_->CheckOpenLocked());
  // One snapshot for the row and its names.
  ASSIGN_OR_RETURN(
      SqliteTransaction txn,
      SqliteTransaction::Begin(impl_->index_.db(), SqliteTransaction::Mode::kDeferred));
  ASSIGN_OR_RETURN(std::optional<TensorRow> row, impl_->index_.FindTensor(hash));
  if (!row) return NoSuchTensor(hash);
  WeightMetadata m;
  m.hash = row->hash;
  m.spec = row->spec;
  m.meta = row->meta;
  m.compression_info = row->compression_info;
  m.is_delta = row->is_delta;
  m.base_hash = row->base_hash;
  m.npy_bytes = row->npy_bytes;
  m.stored_bytes = row->stored_bytes;
  m.mtime_ns = row->mtime_ns;
  ASSIGN_OR_RETURN(m.names, impl_->index_.NamesOf(hash));
  return m;
}

Result<std::vector<StoreResult>> WeightStore::StoreBatch(const std::vector<WeightTensor>& tensors,
                                                         const StoreOptions& options) {
  std::vector<StoreResult> results(tensors.size());
  RETURN_IF_ERROR(ParallelFor(tensors.size(), impl_->threads_, [&](size_t i) -> Status {
    Result<StoreResult> r = Store(tensors[i], options);
    if (!r.ok()) return WithContext("tensor " + std::to_string(i) + " of the batch", r.status());
    results[i] = std::move(r).value();
    return Status::Ok();
  }));
  return results;
}

Result<std::map<std::string, WeightTensor>> WeightStore::LoadBatch(
    const std::vector<std::string>& hashes) {
  std::vector<std::optional<WeightTensor>> loaded(hashes.size());
  RETURN_IF_ERROR(ParallelFor(hashes.size(), impl_->threads_, [&](size_t i) -> Status {
    ASSIGN_OR_RETURN(WeightTensor t, Load(hashes[i]));
    loaded[i] = std::move(t);
    return Status::Ok();
  }));
  std::map<std::string, WeightTensor> out;
  for (size_t i = 0; i < hashes.size(); ++i) out.insert_or_assign(hashes[i], std::move(*loaded[i]));
  return out;
}

StorageInfo WeightStore::GetStorageInfo() {
  StorageInfo info;
  info.codec = impl_->codec_.ToString();
  std::lock_guard lock(impl_->mu_);
  if (!impl_->CheckOpenLocked().ok()) return info;
  Result<IndexTotals> totals = [&]() -> Result<IndexTotals> {
    // One snapshot for all the sums.
    ASSIGN_OR_RETURN(
        SqliteTransaction txn,
        SqliteTransaction::Begin(impl_->index_.db(), SqliteTransaction::Mode::kDeferred));
    return impl_->index_.Totals();
  }();
  if (!totals.ok()) {
    LogWarning("GetStorageInfo(): " + totals.status().ToString());
    return info;
  }
  info.tensors = totals->tensors;
  info.names = totals->names;
  info.deltas = totals->deltas;
  info.logical_bytes = totals->logical_bytes;
  info.stored_bytes = totals->stored_bytes;
  info.ingested_bytes = totals->ingested_bytes;
  if (info.stored_bytes > 0) {
    info.compression_ratio =
        static_cast<double>(info.logical_bytes) / static_cast<double>(info.stored_bytes);
  }
  if (info.logical_bytes > 0) {
    info.dedup_ratio =
        static_cast<double>(info.ingested_bytes) / static_cast<double>(info.logical_bytes);
  }
  return info;
}

Status WeightStore::WriteNpy(std::string_view hash, int fd) {
  ASSIGN_OR_RETURN(Impl::OpenedTensor t, impl_->OpenTensor(hash));
  const std::string header = CanonicalHeader(t.row.spec);
  RETURN_IF_ERROR(PwriteFull(fd, header.data(), header.size(), 0));
  uint64_t off = header.size();
  return impl_->ReadOpened(t, [&](const void* p, size_t n) -> Status {
    RETURN_IF_ERROR(PwriteFull(fd, p, n, static_cast<off_t>(off)));
    off += n;
    return Status::Ok();
  });
}

Status WeightStore::SetMtime(std::string_view hash, int64_t mtime_ns) {
  std::lock_guard lock(impl_->mu_);
  RETURN_IF_ERROR(impl_->CheckOpenLocked());
  ASSIGN_OR_RETURN(int64_t changed, impl_->index_.SetMtime(hash, mtime_ns));
  if (changed == 0) return NoSuchTensor(hash);
  return Status::Ok();
}

Status WeightStore::SetCoralMeta(std::string_view hash, const CoralMeta& meta) {
  // The index's copy only: object files are immutable, so their attributes keep what the tensor
  // was stored with.
  std::lock_guard lock(impl_->mu_);
  RETURN_IF_ERROR(impl_->CheckOpenLocked());
  ASSIGN_OR_RETURN(int64_t changed, impl_->index_.SetCoralMeta(hash, meta));
  if (changed == 0) return NoSuchTensor(hash);
  return Status::Ok();
}

// ---- names ----

bool WeightStore::IsHash(std::string_view s) {
  if (s.size() != 64) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

Status WeightStore::ValidateName(std::string_view name) {
  RETURN_IF_ERROR(ValidatePlainName("name", name));
  if (IsHash(name)) {
    return InvalidArgument(DescribeName(name) + ": 64 lower-case hex digits name a hash");
  }
  return Status::Ok();
}

Status WeightStore::SetName(std::string_view name, std::string_view hash,
                            std::optional<int64_t> mtime_ns) {
  RETURN_IF_ERROR(ValidateName(name));
  std::lock_guard lock(impl_->mu_);
  RETURN_IF_ERROR(impl_->CheckOpenLocked());
  ASSIGN_OR_RETURN(
      SqliteTransaction txn,
      SqliteTransaction::Begin(impl_->index_.db(), SqliteTransaction::Mode::kImmediate));
  ASSIGN_OR_RETURN(bool stored, impl_->index_.HasTensor(hash));
  if (!stored) return WithContext(DescribeName(name), NoSuchTensor(hash));
  RETURN_IF_ERROR(impl_->index_.SetName(name, hash, mtime_ns.value_or(NowNanos())));
  return txn.Commit();
}

Status WeightStore::RemoveName(std::string_view name) {
  std::lock_guard lock(impl_->mu_);
  RETURN_IF_ERROR(impl_->CheckOpenLocked());
  ASSIGN_OR_RETURN(int64_t changed, impl_->index_.RemoveName(name));
  if (changed == 0) return NotFound(DescribeName(name) + ": no such name");
  return Status::Ok();
}

Result<WeightStore::NameInfo> WeightStore::ResolveName(std::string_view name) {
  std::lock_guard lock(impl_->mu_);
  RETURN_IF_ERROR(impl_->CheckOpenLocked());
  ASSIGN_OR_RETURN(std::optional<NameRow> row, impl_->index_.FindName(name));
  if (!row) return NotFound(DescribeName(name) + ": no such name");
  return NameInfo{row->name, row->hash, row->mtime_ns};
}

Result<std::vector<WeightStore::NameInfo>> WeightStore::Names() {
  std::lock_guard lock(impl_->mu_);
  RETURN_IF_ERROR(impl_->CheckOpenLocked());
  ASSIGN_OR_RETURN(std::vector<NameRow> rows, impl_->index_.ListNames());
  std::vector<NameInfo> out;
  out.reserve(rows.size());
  for (NameRow& r : rows) out.push_back(NameInfo{std::move(r.name), std::move(r.hash), r.mtime_ns});
  return out;
}

std::vector<WeightStore::NameInfo> WeightStore::ListNames() {
  Result<std::vector<NameInfo>> names = Names();
  if (!names.ok()) {
    LogWarning("ListNames(): " + names.status().ToString());
    return {};
  }
  return std::move(names).value();
}

Status WeightStore::SetNameMtime(std::string_view name, int64_t mtime_ns) {
  std::lock_guard lock(impl_->mu_);
  RETURN_IF_ERROR(impl_->CheckOpenLocked());
  ASSIGN_OR_RETURN(int64_t changed, impl_->index_.SetNameMtime(name, mtime_ns));
  if (changed == 0) return NotFound(DescribeName(name) + ": no such name");
  return Status::Ok();
}

// ---- maintenance ----

Result<std::vector<VerifyProblem>> WeightStore::Verify(std::optional<std::string_view> hash) {
  std::vector<std::string> hashes;
  if (hash) {
    hashes.emplace_back(*hash);
  } else {
    std::lock_guard lock(impl_->mu_);
    RETURN_IF_ERROR(impl_->CheckOpenLocked());
    ASSIGN_OR_RETURN(hashes, impl_->index_.ListHashes());
  }
  std::vector<VerifyProblem> problems;
  for (const std::string& h : hashes) {
    Result<std::optional<VerifyProblem>> p = impl_->VerifyOne(h);
    if (!p.ok()) {
      // Deleted since the listing: nothing to verify. Asked for by hash: NotFound.
      if (p.status().code() == StatusCode::kNotFound && !hash) continue;
      return p.status();
    }
    if (*p) problems.push_back(std::move(**p));
  }
  return problems;
}

Result<uint64_t> WeightStore::Gc(bool unnamed_too) {
  uint64_t removed = 0;
  if (unnamed_too) {
    std::vector<TensorRow> doomed;
    {
      std::lock_guard lock(impl_->mu_);
      RETURN_IF_ERROR(impl_->CheckOpenLocked());
      ASSIGN_OR_RETURN(std::vector<std::string> hashes, impl_->index_.Unnamed());
      for (const std::string& h : hashes) {
        ASSIGN_OR_RETURN(std::optional<TensorRow> row, impl_->index_.FindTensor(h));
        if (row) doomed.push_back(std::move(*row));
      }
    }
    // Deepest first: deleting a delta before its base spares re-encoding it.
    std::stable_sort(doomed.begin(), doomed.end(),
                     [](const TensorRow& a, const TensorRow& b) { return a.depth > b.depth; });
    for (const TensorRow& row : doomed) {
      Result<bool> deleted = impl_->Delete(row.hash, /*only_if_unnamed=*/true);
      if (!deleted.ok()) {
        if (deleted.status().code() == StatusCode::kNotFound) continue;  // deleted meanwhile
        return deleted.status();
      }
      if (*deleted) ++removed;
    }
  }
  RETURN_IF_ERROR(impl_->CheckOpen());
  ASSIGN_OR_RETURN(uint64_t staging, impl_->RemoveDeadStaging());
  ASSIGN_OR_RETURN(uint64_t orphans, impl_->RemoveOrphanObjects());
  return removed + staging + orphans;
}

Status WeightStore::Sync() { return impl_->Sync(); }

Result<WeightStore::ImportReport> WeightStore::ImportCoral(const std::string& h5_path) {
  // Coral's layout (coral/storage/hdf5_store.py): weights/<key> datasets, key = Coral's xxh3-64
  // hash of (shape, dtype name, data), with attributes name, shape, dtype, layer_type, model_name,
  // compression_info (JSON), hash; deltas/<key> datasets (key = xxh3-64 of the reference hash,
  // the encoded bytes and the type) with delta_type, original_shape, original_dtype,
  // reference_hash, compression_ratio, metadata (JSON). A delta does not say which tensor it
  // rebuilds (Coral keeps name -> delta in its commits), so it is imported unnamed.
  // Raw HDF5 calls are made under the process-wide HDF5 lock and never across a store call (which
  // takes the store's mutex: lock order).
  RETURN_IF_ERROR(impl_->CheckOpen());
  RETURN_IF_ERROR(internal::Hdf5InitStatus());
  ImportReport report;
  H5Id file;
  std::vector<std::string> weight_keys, delta_keys;
  {
    internal::Hdf5Lock lock = LockHdf5();
    const htri_t is_hdf5 = H5Fis_hdf5(h5_path.c_str());
    if (is_hdf5 <= 0) {
      H5Eclear2(H5E_DEFAULT);
      if (::access(h5_path.c_str(), R_OK) != 0) return ErrnoError("open " + h5_path, errno);
      return InvalidArgument(h5_path + ": not an HDF5 file");
    }
    ASSIGN_OR_RETURN(
        file, CheckId(H5Fopen(h5_path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), "opening " + h5_path));
    ASSIGN_OR_RETURN(weight_keys, ChildNames(file.get(), "weights"));
    ASSIGN_OR_RETURN(delta_keys, ChildNames(file.get(), "deltas"));
  }

  struct Imported {
    std::string hash;  // ours
    CoralMeta meta;
  };
  std::unordered_map<std::string, Imported> by_coral_hash;  // Coral's key (and hash attribute)

  for (const std::string& key : weight_keys) {
    const std::string path = "weights/" + key;
    ASSIGN_OR_RETURN(std::unique_ptr<StagedFile> scratch, StagedFile::Create(staging_dir_));
    TensorSpec spec;
    CoralMeta meta;
    std::string coral_hash, coral_info;
    // Reading Coral's dataset: a failure here is the file's, reported as skipped.
    Status read = [&]() -> Status {
      H5Id ds;
      std::optional<CoralType> type;
      {
        internal::Hdf5Lock lock = LockHdf5();
        ASSIGN_OR_RETURN(ds, CheckId(H5Dopen2(file.get(), path.c_str(), H5P_DEFAULT), "open"));
        ASSIGN_OR_RETURN(H5Id file_type, CheckId(H5Dget_type(ds.get()), "datatype"));
        ASSIGN_OR_RETURN(type, MapCoralType(file_type.get()));
        spec.dtype = type->dtype;
        ASSIGN_OR_RETURN(spec.shape, DatasetShape(ds.get()));
        RETURN_IF_ERROR(CheckSpecSize(spec));
        meta.name = OptionalStringAttr(ds.get(), "name");
        meta.layer_type = OptionalStringAttr(ds.get(), "layer_type");
        meta.model_name = OptionalStringAttr(ds.get(), "model_name");
        coral_hash = OptionalStringAttr(ds.get(), "hash");
        coral_info = OptionalStringAttr(ds.get(), "compression_info");
      }
      return ExtractDataset(ds.get(), type->mem_type.get(), spec, scratch->fd());
    }();
    if (!read.ok()) {
      report.skipped.push_back(path + ": " + read.message());
      continue;
    }
    json extra = {{"coral", {{"hash", coral_hash.empty() ? key : coral_hash}}}};
    if (!coral_info.empty()) extra["coral"]["compression_info"] = CoralInfo(coral_info);
    FdSource source(scratch->fd(), 0, "reading " + scratch->path());
    Result<StoreResult> stored =
        impl_->StoreFrom(spec, meta, source, StoreOptions{}, std::nullopt, extra);
    if (!stored.ok()) return WithContext(h5_path + ": " + path, stored.status());
    ++(stored->added ? report.imported : report.duplicates);
    if (ValidateName(meta.name).ok()) RETURN_IF_ERROR(SetName(meta.name, stored->hash));
    by_coral_hash[key] = Imported{stored->hash, meta};
    if (!coral_hash.empty()) by_coral_hash[coral_hash] = Imported{stored->hash, meta};
  }

  for (const std::string& key : delta_keys) {
    const std::string path = "deltas/" + key;
    std::string delta_type, reference, original_dtype, delta_bytes;
    DType delta_dtype = DType::kUInt8;
    std::optional<std::vector<uint64_t>> original_shape;
    Status read = [&]() -> Status {
      internal::Hdf5Lock lock = LockHdf5();
      ASSIGN_OR_RETURN(H5Id ds, CheckId(H5Dopen2(file.get(), path.c_str(), H5P_DEFAULT), "open"));
      delta_type = OptionalStringAttr(ds.get(), "delta_type");
      reference = OptionalStringAttr(ds.get(), "reference_hash");
      original_dtype = OptionalStringAttr(ds.get(), "original_dtype");
      Result<std::vector<uint64_t>> shape = internal::ReadUInt64Attr(ds.get(), "original_shape");
      if (shape.ok()) {
        original_shape = std::move(shape).value();
      } else {
        H5Eclear2(H5E_DEFAULT);  // an empty tuple is stored as an empty float array
      }
      if (!IsCoralLossless(delta_type)) return Status::Ok();  // skipped below, unread
      ASSIGN_OR_RETURN(H5Id file_type, CheckId(H5Dget_type(ds.get()), "datatype"));
      ASSIGN_OR_RETURN(CoralType type, MapCoralType(file_type.get()));
      TensorSpec data_spec{type.dtype, {}};
      ASSIGN_OR_RETURN(data_spec.shape, DatasetShape(ds.get()));
      RETURN_IF_ERROR(CheckSpecSize(data_spec));
      delta_dtype = type.dtype;
      // Coral's encodings are whole-array zlib streams: decoding needs them in memory anyway.
      delta_bytes.resize(static_cast<size_t>(data_spec.DataBytes()));
      if (!delta_bytes.empty() && H5Dread(ds.get(), type.mem_type.get(), H5S_ALL, H5S_ALL,
                                          H5P_DEFAULT, delta_bytes.data()) < 0) {
        return Hdf5Error("reading the delta");
      }
      return Status::Ok();
    }();
    if (!read.ok()) {
      report.skipped.push_back(path + ": " + read.message());
      continue;
    }
    if (!IsCoralLossless(delta_type)) {
      report.skipped.push_back(path + ": lossy encoding '" + delta_type +
                               "' (Coral cannot rebuild the tensor exactly)");
      continue;
    }
    auto ref = by_coral_hash.find(reference);
    if (ref == by_coral_hash.end()) {
      report.skipped.push_back(path + ": its reference " + reference + " is not in weights/");
      continue;
    }
    ASSIGN_OR_RETURN(WeightTensor base, Load(ref->second.hash));
    if ((!original_dtype.empty() && original_dtype != DTypeName(base.spec.dtype)) ||
        (original_shape && *original_shape != base.spec.shape)) {
      report.skipped.push_back(path + ": shape or dtype differs from its reference's");
      continue;
    }
    Result<std::string> data =
        ReconstructCoralDelta(delta_type, base.spec, base.data, delta_bytes, delta_dtype);
    if (!data.ok()) {
      report.skipped.push_back(path + ": " + data.status().message());
      continue;
    }
    WeightTensor rebuilt;
    rebuilt.spec = base.spec;
    rebuilt.data = std::move(data).value();
    rebuilt.meta.layer_type = ref->second.meta.layer_type;
    rebuilt.meta.model_name = ref->second.meta.model_name;
    json extra = {
        {"coral", {{"delta", key}, {"delta_type", delta_type}, {"reference_hash", reference}}}};
    MemorySource source(rebuilt.data);
    Result<StoreResult> stored =
        impl_->StoreFrom(rebuilt.spec, rebuilt.meta, source, StoreOptions{}, std::nullopt, extra);
    if (!stored.ok()) return WithContext(h5_path + ": " + path, stored.status());
    ++(stored->added ? report.imported : report.duplicates);
  }
  return report;
}

}  // namespace modelfs::weights
