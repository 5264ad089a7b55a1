#include "stores/weights/tensor_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "stores/common/file_util.h"
#include "stores/weights/chunk_codec.h"
#include "stores/weights/hdf5_util.h"

namespace modelfs::weights {

using internal::CheckId;
using internal::ChunkCompressor;
using internal::H5Id;
using internal::Hdf5Error;
using internal::Hdf5Lock;
using internal::LockHdf5;

namespace {

// ---- the chunking rule ----
// These constants are part of the file format: a delta is only readable against a base chunked the
// same way, and chunk_xxh3 is per chunk. Changing them needs a new modelfs_format.
constexpr uint64_t kTargetChunkBytes = uint64_t{1} << 20;
// Chunks larger than this are never chosen: memory holds about ten chunks per writer or reader.
// Only shapes whose row length is a large prime (nothing between a few elements and whole rows)
// come near it.
constexpr uint64_t kMaxChunkBytes = uint64_t{64} << 20;

constexpr int64_t kFormatVersion = 1;
constexpr char kWeightsGroup[] = "weights";
constexpr char kDeltasGroup[] = "deltas";
// The dataset's name until Finish knows the hash. A file abandoned mid-write keeps it, so a reader
// sees that the file is incomplete (the name is not the hash attribute).
constexpr char kPartialName[] = ".partial";

using Buffer = std::unique_ptr<uint8_t[]>;

Buffer NewBuffer(size_t n) { return std::make_unique_for_overwrite<uint8_t[]>(n); }

// One way to slice a tensor's C-order data into equal contiguous slabs: chunk shape 1 in dims
// before `dim`, `step` in `dim`, full after it. Chunk i is bytes [i·bytes, (i+1)·bytes) when the
// step divides the dimension or all dims before it are 1 (then only the last chunk is short).
struct Split {
  int dim = 0;
  uint64_t step = 0;
  uint64_t bytes = 0;
};

// How far `bytes` is from the target, as a ratio ≥ 1 (symmetric in log scale).
double Distance(uint64_t bytes) {
  return bytes >= kTargetChunkBytes ? static_cast<double>(bytes) / kTargetChunkBytes
                                    : static_cast<double>(kTargetChunkBytes) / bytes;
}

// Trial divisions spent looking for divisors of one dimension (bounds the work for huge
// dimensions; divisors up to this and their cofactors are still found).
constexpr uint64_t kMaxTrialDivisor = uint64_t{1} << 20;

// The rule: among all slicings (every split dimension, every admissible step) whose chunk is at
// most kMaxChunkBytes, the one closest to kTargetChunkBytes; ties go to the outermost dimension and
// the smaller step. Small tensors are one chunk. Only tensors with data and at least one dimension
// are chunked.
Split ChooseSplit(const TensorSpec& spec) {
  const uint64_t data_bytes = spec.DataBytes();
  const int rank = static_cast<int>(spec.shape.size());
  if (data_bytes <= kTargetChunkBytes) return {0, rank ? spec.shape[0] : 1, data_bytes};
  // trailing[k]: bytes of one step along dim k (≤ data_bytes, so no overflow).
  std::vector<uint64_t> trailing(rank);
  uint64_t row = ItemSize(spec.dtype);
  for (int k = rank - 1; k >= 0; --k) {
    trailing[k] = row;
    row *= spec.shape[k];
  }
  Split best{rank - 1, 1, trailing[rank - 1]};  // one element: always admissible
  auto consider = [&](int dim, uint64_t step) {
    const uint64_t bytes = step * trailing[dim];
    if (bytes <= kMaxChunkBytes && Distance(bytes) < Distance(best.bytes))
      best = {dim, step, bytes};
  };
  uint64_t leading = 1;  // product of the dims before k
  for (int k = 0; k < rank; ++k) {
    const uint64_t d = spec.shape[k];
    const uint64_t tr = trailing[k];
    if (tr <= kMaxChunkBytes) {
      const uint64_t fit = kTargetChunkBytes / tr;  // steps that fit the target
      if (leading == 1) {
        // Any step works: only the last chunk is short.
        const uint64_t step = std::clamp<uint64_t>(fit, 1, d);
        consider(k, step);
        if (step < d) consider(k, step + 1);
      } else {
        // The step must divide the dimension.
        for (uint64_t s = 1; s <= kMaxTrialDivisor && s * s <= d; ++s) {
          if (d % s == 0) {
            consider(k, s);
            consider(k, d / s);
          }
        }
        consider(k, d);
      }
    }
    leading *= d;
  }
  return best;
}

// Where the chunks of one file's dataset are. dims are the dataset's (the tensor's shape; a
// complex128 delta has an extra trailing 2). Non-chunked datasets (0-d and empty tensors) hold
// their data, if any, as one "chunk".
struct Layout {
  bool chunked = false;
  uint64_t data_bytes = 0;
  uint64_t chunk_bytes = 0;
  uint64_t chunk_count = 0;
  std::vector<hsize_t> dims;
  std::vector<hsize_t> chunk_dims;
  int split_dim = 0;
  uint64_t split_step = 0;
  uint64_t chunks_along_split = 0;

  size_t ChunkLen(uint64_t i) const {
    return static_cast<size_t>(std::min(chunk_bytes, data_bytes - i * chunk_bytes));
  }
  // The element coordinates of chunk i's first element (what direct chunk I/O calls an offset).
  void ChunkOffset(uint64_t i, hsize_t* offset) const {
    std::fill(offset, offset + dims.size(), 0);
    uint64_t outer = i / chunks_along_split;
    offset[split_dim] = (i % chunks_along_split) * split_step;
    for (int j = split_dim - 1; j >= 0; --j) {
      offset[j] = outer % dims[j];
      outer /= dims[j];
    }
  }
};

bool HasExtraDim(DType dtype, bool delta) { return delta && dtype == DType::kComplex128; }

// Bytes per element of the dataset's HDF5 type.
size_t StoredItemSize(DType dtype, bool delta) {
  return HasExtraDim(dtype, delta) ? 8 : ItemSize(dtype);
}

std::vector<hsize_t> DatasetDims(const TensorSpec& spec, bool delta) {
  std::vector<hsize_t> dims(spec.shape.begin(), spec.shape.end());
  if (HasExtraDim(spec.dtype, delta)) dims.push_back(2);
  return dims;
}

Layout FinishLayout(Layout layout, int split_dim, uint64_t step, size_t item) {
  layout.split_dim = split_dim;
  layout.split_step = step;
  layout.chunks_along_split = (layout.dims[split_dim] + step - 1) / step;
  layout.chunk_dims.assign(layout.dims.size(), 1);
  layout.chunk_dims[split_dim] = step;
  uint64_t bytes = item * step;
  for (size_t j = split_dim + 1; j < layout.dims.size(); ++j) {
    layout.chunk_dims[j] = layout.dims[j];
    bytes *= layout.dims[j];
  }
  layout.chunk_bytes = bytes;
  layout.chunk_count = (layout.data_bytes + bytes - 1) / bytes;
  return layout;
}

// The layout the writer creates.
Layout LayoutFor(const TensorSpec& spec, bool delta) {
  Layout layout;
  layout.data_bytes = spec.DataBytes();
  layout.dims = DatasetDims(spec, delta);
  if (layout.data_bytes == 0 || spec.shape.empty()) {
    layout.chunk_bytes = layout.data_bytes;
    layout.chunk_count = layout.data_bytes > 0 ? 1 : 0;
    return layout;
  }
  layout.chunked = true;
  const Split split = ChooseSplit(spec);
  return FinishLayout(std::move(layout), split.dim, split.step, StoredItemSize(spec.dtype, delta));
}

// The layout of an existing chunked dataset, from its chunk shape (whatever rule chose it), checked
// to be a slicing into contiguous slabs.
Result<Layout> LayoutFromChunkDims(std::vector<hsize_t> dims, const std::vector<hsize_t>& chunk,
                                   size_t item, uint64_t data_bytes) {
  Layout layout;
  layout.chunked = true;
  layout.data_bytes = data_bytes;
  layout.dims = std::move(dims);
  const int rank = static_cast<int>(layout.dims.size());
  int k = 0;
  for (int j = rank - 1; j >= 0; --j) {
    if (chunk[j] != layout.dims[j]) {
      k = j;
      break;
    }
  }
  uint64_t leading = 1;
  for (int j = 0; j < k; ++j) {
    if (chunk[j] != 1) return Corruption("chunk shape is not a contiguous slab");
    leading *= layout.dims[j];
  }
  const hsize_t step = chunk[k];
  if (step == 0 || step > layout.dims[k] || (leading > 1 && layout.dims[k] % step != 0)) {
    return Corruption("chunk shape is not a contiguous slab");
  }
  if (data_bytes == 0) return Corruption("chunked dataset without data");
  return FinishLayout(std::move(layout), k, step, item);
}

// ---- HDF5 datatypes, as h5py writes (and reads back) NumPy's dtypes ----
Result<H5Id> CopyType(hid_t predefined) { return CheckId(H5Tcopy(predefined), "copying a type"); }

Result<H5Id> MakeFileType(DType dtype, bool delta) {
  if (delta) {
    switch (StoredItemSize(dtype, delta)) {
      case 1:
        return CopyType(H5T_STD_U8LE);
      case 2:
        return CopyType(H5T_STD_U16LE);
      case 4:
        return CopyType(H5T_STD_U32LE);
      default:
        return CopyType(H5T_STD_U64LE);
    }
  }
  switch (dtype) {
    case DType::kBool: {
      // h5py's bool: an enum of int8 with FALSE = 0, TRUE = 1.
      ASSIGN_OR_RETURN(H5Id type, CheckId(H5Tenum_create(H5T_STD_I8LE), "creating the bool type"));
      const int8_t f = 0, t = 1;
      if (H5Tenum_insert(type.get(), "FALSE", &f) < 0 ||
          H5Tenum_insert(type.get(), "TRUE", &t) < 0) {
        return Hdf5Error("creating the bool type");
      }
      return type;
    }
    case DType::kInt8:
      return CopyType(H5T_STD_I8LE);
    case DType::kInt16:
      return CopyType(H5T_STD_I16LE);
    case DType::kInt32:
      return CopyType(H5T_STD_I32LE);
    case DType::kInt64:
      return CopyType(H5T_STD_I64LE);
    case DType::kUInt8:
      return CopyType(H5T_STD_U8LE);
    case DType::kUInt16:
      return CopyType(H5T_STD_U16LE);
    case DType::kUInt32:
      return CopyType(H5T_STD_U32LE);
    case DType::kUInt64:
      return CopyType(H5T_STD_U64LE);
    case DType::kFloat16: {
      // HDF5 has no predefined half float; h5py builds IEEE binary16 from binary32 like this.
      ASSIGN_OR_RETURN(H5Id type, CopyType(H5T_IEEE_F32LE));
      if (H5Tset_fields(type.get(), 15, 10, 5, 0, 10) < 0 || H5Tset_size(type.get(), 2) < 0 ||
          H5Tset_ebias(type.get(), 15) < 0) {
        return Hdf5Error("creating the float16 type");
      }
      return type;
    }
    case DType::kFloat32:
      return CopyType(H5T_IEEE_F32LE);
    case DType::kFloat64:
      return CopyType(H5T_IEEE_F64LE);
    case DType::kComplex64:
    case DType::kComplex128: {
      // h5py's complex: a compound of two floats named r and i.
      const size_t half = ItemSize(dtype) / 2;
      const hid_t part = half == 4 ? H5T_IEEE_F32LE : H5T_IEEE_F64LE;
      ASSIGN_OR_RETURN(H5Id type,
                       CheckId(H5Tcreate(H5T_COMPOUND, 2 * half), "creating a complex type"));
      if (H5Tinsert(type.get(), "r", 0, part) < 0 || H5Tinsert(type.get(), "i", half, part) < 0) {
        return Hdf5Error("creating a complex type");
      }
      return type;
    }
  }
  return InvalidArgument("unknown dtype");
}

// Whether a dataset's HDF5 type can hold this dtype's (or its delta's) bytes as we wrote them.
bool TypeMatches(hid_t type, DType dtype, bool delta) {
  const H5T_class_t cls = H5Tget_class(type);
  if (H5Tget_size(type) != StoredItemSize(dtype, delta)) return false;
  if (delta) return cls == H5T_INTEGER;
  switch (dtype) {
    case DType::kBool:
      return cls == H5T_ENUM || cls == H5T_INTEGER;
    case DType::kFloat16:
    case DType::kFloat32:
    case DType::kFloat64:
      return cls == H5T_FLOAT;
    case DType::kComplex64:
    case DType::kComplex128:
      return cls == H5T_COMPOUND;
    default:
      return cls == H5T_INTEGER;
  }
}

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      char buf[8];
      snprintf(buf, sizeof(buf), "\\u%04x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string CompressionInfoJson(const CodecSpec& codec, const Layout& layout,
                                const std::optional<std::string>& base) {
  std::string json = "{\"codec\":" + JsonString(codec.ToString());
  json += std::string(",\"shuffle\":") + (codec.codec != Codec::kNone ? "true" : "false");
  json += std::string(",\"delta\":") + (base ? "true" : "false");
  json += ",\"chunk_bytes\":" + std::to_string(layout.chunk_bytes);
  if (base) json += ",\"base\":" + JsonString(*base);
  return json + "}";
}

// A name HDF5 accepts as one link of a path.
Status CheckLinkName(std::string_view what, std::string_view name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string_view::npos ||
      name.find('\0') != std::string_view::npos) {
    return InvalidArgument(std::string(what) + " '" + std::string(name) +
                           "' cannot name an HDF5 dataset");
  }
  return Status::Ok();
}

Status CheckNoNul(std::string_view what, std::string_view value) {
  if (value.find('\0') != std::string_view::npos) {
    return InvalidArgument(std::string(what) + " contains a NUL byte");
  }
  return Status::Ok();
}

Status WithPrefix(const std::string& prefix, const Status& st) {
  if (st.ok()) return st;
  return Status(st.code(), prefix + st.message(), st.sys_errno());
}

// A free list of chunk-sized buffers: the pipeline reuses a handful instead of allocating (and
// page-faulting) a fresh megabyte per chunk.
class BufferPool {
 public:
  explicit BufferPool(size_t size) : size_(size) {}
  Buffer Get() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        Buffer b = std::move(free_.back());
        free_.pop_back();
        return b;
      }
    }
    return NewBuffer(size_);
  }
  void Put(Buffer b) {
    if (!b) return;
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(std::move(b));
  }

 private:
  const size_t size_;
  std::mutex mu_;
  std::vector<Buffer> free_;
};

constexpr int kMaxThreads = 64;

// Chunks in flight (queued, compressing or waiting to be written): enough to keep every worker busy
// while the writer is behind, few enough that memory stays a few chunks per worker.
size_t WindowFor(int workers, uint64_t chunk_bytes) {
  const size_t by_memory = static_cast<size_t>(std::max<uint64_t>(1, (64u << 20) / chunk_bytes));
  return std::max<size_t>(workers + 1, std::min<size_t>(2 * workers + 2, by_memory));
}

}  // namespace

// ---- CodecSpec ----

Result<CodecSpec> CodecSpec::Parse(std::string_view text) {
  auto bad = [&] {
    return InvalidArgument("unknown codec '" + std::string(text) +
                           "' (expected none, lzf, gzip-1..9 or zstd-1..22)");
  };
  if (text == "none") return CodecSpec{Codec::kNone, 1};
  if (text == "lzf") return CodecSpec{Codec::kLzf, 1};
  if (text == "gzip") return CodecSpec{Codec::kGzip, 4};
  if (text == "zstd") return CodecSpec{Codec::kZstd, 1};
  Codec codec;
  int max_level;
  std::string_view digits;
  if (text.starts_with("gzip-")) {
    codec = Codec::kGzip;
    max_level = 9;
    digits = text.substr(5);
  } else if (text.starts_with("zstd-")) {
    codec = Codec::kZstd;
    max_level = 22;
    digits = text.substr(5);
  } else {
    return bad();
  }
  int level = 0;
  if (digits.empty() || digits.size() > 2 || digits[0] == '0') return bad();
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), level);
  if (ec != std::errc() || end != digits.data() + digits.size() || level < 1 || level > max_level) {
    return bad();
  }
  return CodecSpec{codec, level};
}

std::string CodecSpec::ToString() const {
  switch (codec) {
    case Codec::kNone:
      return "none";
    case Codec::kLzf:
      return "lzf";
    case Codec::kGzip:
      return "gzip-" + std::to_string(level);
    case Codec::kZstd:
      return "zstd-" + std::to_string(level);
  }
  return "unknown";
}

Status RegisterFilters() { return internal::Hdf5InitStatus(); }

uint64_t ChunkBytesFor(const TensorSpec& spec) { return ChooseSplit(spec).bytes; }

// ==== writer ====
//
// Pipeline: Append copies the caller's bytes into chunk buffers and queues each full chunk;
// `threads` workers hash it, XOR it with the base (deltas), zero-pad an edge chunk, shuffle and
// compress it; whichever worker completes the chunk that is next in order writes it and every
// following ready chunk with H5Dwrite_chunk, so the file is laid out in chunk order. At most
// `window_` chunks are in flight; Append blocks beyond that.
class TensorFileWriter::Impl {
 public:
  Impl(std::string path, const TensorSpec& spec, Options options)
      : path_(std::move(path)),
        spec_(spec),
        options_(std::move(options)),
        delta_(options_.base_hash.has_value()),
        layout_(LayoutFor(spec_, delta_)),
        item_(StoredItemSize(spec_.dtype, delta_)),
        pool_(std::max<uint64_t>(layout_.chunk_bytes, 1)),
        hashes_(layout_.chunk_count) {}

  ~Impl() {
    StopWorkers();
    // An abandoned file stays (the caller deletes it); closing the handles flushes what HDF5 holds.
  }

  Status Create();
  Status Append(const void* data, size_t len);
  Status Finish(const std::string& hash, bool durable);
  uint64_t stored_data_bytes() const { return stored_bytes_.load(std::memory_order_relaxed); }
  bool created_file() const { return created_file_; }

 private:
  struct Job {
    uint64_t index = 0;
    size_t len = 0;  // valid bytes (the last chunk may be short)
    Buffer data;     // chunk_bytes capacity: the canonical bytes, then the delta in place
    Buffer out;      // what H5Dwrite_chunk writes
    size_t out_len = 0;
    uint32_t filter_mask = 0;
  };
  // Per worker: its compressor and scratch buffers.
  struct Worker {
    explicit Worker(CodecSpec codec) : compressor(codec) {}
    ChunkCompressor compressor;
    Buffer shuffled;
    Buffer base;
  };

  Status Submit(std::unique_ptr<Job> job);
  Status Encode(Job& job, Worker& worker);
  Status WriteChunk(const Job& job);
  void WorkerLoop();
  void WriteReadyChunks();      // with writing_ claimed
  void Fail(const Status& st);  // mu_ held
  void StopWorkers();
  Status FinishContiguous();
  Status WriteAttributes(const std::string& hash);

  // Constant after construction.
  const std::string path_;
  const TensorSpec spec_;
  const Options options_;
  const bool delta_;
  const Layout layout_;
  const size_t item_;  // HDF5 element size: the shuffle's unit

  BufferPool pool_;
  // HDF5 handles: created by Create, used by whoever writes chunks (under the HDF5 lock), closed by
  // Finish or the destructor.
  H5Id file_;
  H5Id group_;
  H5Id dataset_;
  bool created_file_ = false;

  // Caller thread only (Append/Finish).
  std::unique_ptr<Job> current_;
  size_t current_filled_ = 0;
  uint64_t next_index_ = 0;
  uint64_t appended_ = 0;
  std::string small_;  // the data of a non-chunked (0-d) dataset
  bool finished_ = false;
  std::unique_ptr<Worker> inline_worker_;  // single-chunk tensors are encoded on the caller thread

  // Each element written by the worker that encodes that chunk, read after all chunks are written.
  std::vector<uint64_t> hashes_;
  std::atomic<uint64_t> stored_bytes_{0};
  // base_fn is called one call at a time (it may be a reader, used by one thread at a time).
  std::mutex base_mu_;

  // Lock order: base_mu_ (held across base_fn, which may read other files) before the HDF5 lock;
  // mu_ is never held while taking either or while calling base_fn, and the HDF5 lock is never
  // held while waiting for mu_ or base_mu_.
  std::mutex mu_;
  std::condition_variable work_cv_;         // queue_ non-empty or stop_
  std::condition_variable space_cv_;        // a chunk was written (in_flight_ dropped) or error_
  std::deque<std::unique_ptr<Job>> queue_;  // guarded by mu_
  std::map<uint64_t, std::unique_ptr<Job>> ready_;  // encoded, waiting for their turn; mu_
  uint64_t next_write_ = 0;                         // mu_
  size_t in_flight_ = 0;                            // mu_
  size_t window_ = 1;                               // constant once workers start
  bool writing_ = false;                            // a worker is writing chunks; mu_
  bool stop_ = false;                               // mu_
  Status error_;                                    // first failure; mu_
  std::vector<std::thread> workers_;
};

Status TensorFileWriter::Impl::Create() {
  if (delta_) {
    if (options_.base_hash->empty()) return InvalidArgument("empty base hash");
    RETURN_IF_ERROR(CheckNoNul("base hash", *options_.base_hash));
    if (!options_.base_fn) return InvalidArgument("a delta needs base_fn");
  }
  RETURN_IF_ERROR(CheckNoNul("name", options_.meta.name));
  RETURN_IF_ERROR(CheckNoNul("layer_type", options_.meta.layer_type));
  RETURN_IF_ERROR(CheckNoNul("model_name", options_.meta.model_name));
  if (layout_.dims.size() > H5S_MAX_RANK) {
    return InvalidArgument("tensor file " + path_ + ": HDF5 datasets have at most " +
                           std::to_string(H5S_MAX_RANK) + " dimensions");
  }
  if (options_.codec.codec == Codec::kGzip &&
      (options_.codec.level < 1 || options_.codec.level > 9)) {
    return InvalidArgument("gzip level must be 1-9");
  }
  if (options_.codec.codec == Codec::kZstd &&
      (options_.codec.level < 1 || options_.codec.level > 22)) {
    return InvalidArgument("zstd level must be 1-22");
  }
  struct stat st;
  if (::lstat(path_.c_str(), &st) == 0) return AlreadyExists("tensor file " + path_ + " exists");

  Hdf5Lock lock = LockHdf5();
  RETURN_IF_ERROR(internal::Hdf5InitStatus());
  const std::string what = "creating tensor file " + path_;
  ASSIGN_OR_RETURN(H5Id fapl, CheckId(H5Pcreate(H5P_FILE_ACCESS), what));
  // 1.8 object headers: attributes too large for the header (chunk_xxh3 of a huge tensor) go to
  // dense storage instead of failing. Readable by every HDF5 since 1.8 (h5py, h5dump).
  if (H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_LATEST) < 0)
    return Hdf5Error(what);
  ASSIGN_OR_RETURN(file_,
                   CheckId(H5Fcreate(path_.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, fapl.get()), what));
  created_file_ = true;
  // No timestamps in object headers: the same tensor and options give the same file.
  ASSIGN_OR_RETURN(H5Id gcpl, CheckId(H5Pcreate(H5P_GROUP_CREATE), what));
  if (H5Pset_obj_track_times(gcpl.get(), false) < 0) return Hdf5Error(what);
  ASSIGN_OR_RETURN(group_, CheckId(H5Gcreate2(file_.get(), delta_ ? kDeltasGroup : kWeightsGroup,
                                              H5P_DEFAULT, gcpl.get(), H5P_DEFAULT),
                                   what));
  ASSIGN_OR_RETURN(H5Id type, MakeFileType(spec_.dtype, delta_));
  H5Id space;
  if (layout_.dims.empty()) {
    ASSIGN_OR_RETURN(space, CheckId(H5Screate(H5S_SCALAR), what));
  } else {
    ASSIGN_OR_RETURN(space, CheckId(H5Screate_simple(static_cast<int>(layout_.dims.size()),
                                                     layout_.dims.data(), nullptr),
                                    what));
  }
  ASSIGN_OR_RETURN(H5Id dcpl, CheckId(H5Pcreate(H5P_DATASET_CREATE), what));
  if (H5Pset_obj_track_times(dcpl.get(), false) < 0 ||
      H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER) < 0) {
    return Hdf5Error(what);
  }
  if (layout_.chunked) {
    if (H5Pset_chunk(dcpl.get(), static_cast<int>(layout_.chunk_dims.size()),
                     layout_.chunk_dims.data()) < 0) {
      return Hdf5Error(what);
    }
    // Pipeline order matters: the chunk filter mask numbers filters by position (shuffle bit 0,
    // compressor bit 1).
    const CodecSpec& codec = options_.codec;
    herr_t rc = 0;
    if (codec.codec != Codec::kNone) rc = H5Pset_shuffle(dcpl.get());
    if (rc >= 0 && codec.codec == Codec::kGzip) rc = H5Pset_deflate(dcpl.get(), codec.level);
    if (rc >= 0 && codec.codec == Codec::kLzf) {
      const unsigned cd[3] = {internal::kLzfFilterRevision, internal::kLzfApiVersion,
                              static_cast<unsigned>(layout_.chunk_bytes)};
      rc = H5Pset_filter(dcpl.get(), internal::kFilterIdLzf, H5Z_FLAG_OPTIONAL, 3, cd);
    }
    if (rc >= 0 && codec.codec == Codec::kZstd) {
      const unsigned cd[1] = {static_cast<unsigned>(codec.level)};
      rc = H5Pset_filter(dcpl.get(), internal::kFilterIdZstd, H5Z_FLAG_OPTIONAL, 1, cd);
    }
    if (rc < 0) return Hdf5Error(what + ": setting filters");
  }
  ASSIGN_OR_RETURN(H5Id dapl, CheckId(H5Pcreate(H5P_DATASET_ACCESS), what));
  // Direct chunk writes bypass the chunk cache; a cache would only hold memory.
  if (H5Pset_chunk_cache(dapl.get(), 0, 0, H5D_CHUNK_CACHE_W0_DEFAULT) < 0) return Hdf5Error(what);
  ASSIGN_OR_RETURN(dataset_, CheckId(H5Dcreate2(group_.get(), kPartialName, type.get(), space.get(),
                                                H5P_DEFAULT, dcpl.get(), dapl.get()),
                                     what));
  lock.unlock();

  if (layout_.chunk_count > 1) {
    const int threads = std::clamp(options_.threads, 1, kMaxThreads);
    window_ = WindowFor(threads, layout_.chunk_bytes);
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  }
  return Status::Ok();
}

void TensorFileWriter::Impl::Fail(const Status& st) {
  if (error_.ok()) error_ = st;
  space_cv_.notify_all();
}

Status TensorFileWriter::Impl::Append(const void* data, size_t len) {
  if (finished_) return InvalidArgument("tensor file " + path_ + ": Append after Finish");
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!error_.ok()) return error_;
    if (len > layout_.data_bytes - appended_) {
      Fail(InvalidArgument("tensor file " + path_ + ": more data than the spec's " +
                           std::to_string(layout_.data_bytes) + " bytes"));
      return error_;
    }
  }
  if (!layout_.chunked) {
    small_.append(static_cast<const char*>(data), len);
    appended_ += len;
    return Status::Ok();
  }
  const auto* p = static_cast<const uint8_t*>(data);
  while (len > 0) {
    if (!current_) {
      current_ = std::make_unique<Job>();
      current_->index = next_index_++;
      current_->len = layout_.ChunkLen(current_->index);
      current_->data = pool_.Get();
      current_filled_ = 0;
    }
    const size_t n = std::min(len, current_->len - current_filled_);
    memcpy(current_->data.get() + current_filled_, p, n);
    current_filled_ += n;
    p += n;
    len -= n;
    appended_ += n;
    if (current_filled_ == current_->len) RETURN_IF_ERROR(Submit(std::move(current_)));
  }
  return Status::Ok();
}

Status TensorFileWriter::Impl::Submit(std::unique_ptr<Job> job) {
  if (workers_.empty()) {
    // One chunk: encoding it here costs less than waking a thread.
    if (!inline_worker_) inline_worker_ = std::make_unique<Worker>(options_.codec);
    Status st = Encode(*job, *inline_worker_);
    if (st.ok()) st = WriteChunk(*job);
    std::lock_guard<std::mutex> lock(mu_);
    if (!st.ok()) {
      Fail(st);
      return error_;
    }
    ++next_write_;
    return Status::Ok();
  }
  std::unique_lock<std::mutex> lock(mu_);
  space_cv_.wait(lock, [&] { return !error_.ok() || in_flight_ < window_; });
  if (!error_.ok()) return error_;
  ++in_flight_;
  queue_.push_back(std::move(job));
  work_cv_.notify_one();
  return Status::Ok();
}

Status TensorFileWriter::Impl::Encode(Job& job, Worker& worker) {
  const size_t cb = layout_.chunk_bytes;
  uint8_t* data = job.data.get();
  hashes_[job.index] = XXH3_64bits(data, job.len);
  if (delta_) {
    if (!worker.base) worker.base = pool_.Get();
    Status st;
    {
      std::lock_guard<std::mutex> lock(base_mu_);
      st = options_.base_fn(job.index, worker.base.get(), job.len);
    }
    if (!st.ok()) {
      return WithPrefix("tensor file " + path_ + ": base chunk " + std::to_string(job.index) + ": ",
                        st);
    }
    internal::XorInto(data, worker.base.get(), job.len);  // the delta, in place
  }
  // HDF5 chunks are full-sized: the edge chunk is padded (zeros compress to nearly nothing).
  if (job.len < cb) memset(data + job.len, 0, cb - job.len);
  if (options_.codec.codec == Codec::kNone) {
    job.out = std::move(job.data);
    job.out_len = cb;
    job.filter_mask = 0;
    stored_bytes_.fetch_add(cb, std::memory_order_relaxed);
    return Status::Ok();
  }
  if (!worker.shuffled) worker.shuffled = pool_.Get();
  internal::Shuffle(data, cb, item_, worker.shuffled.get());
  job.out = pool_.Get();
  // Only a result smaller than the raw chunk is worth storing compressed.
  Result<size_t> n = worker.compressor.Compress(worker.shuffled.get(), cb, job.out.get(), cb - 1);
  if (!n.ok()) return WithPrefix("tensor file " + path_ + ": ", n.status());
  if (*n == 0) {
    // Stored shuffled but uncompressed, with the compressor's bit set in the chunk's filter mask
    // (bit i = pipeline filter i skipped): what HDF5 itself does when an optional filter fails,
    // so HDF5 (and h5py) undo only the shuffle.
    std::swap(job.out, worker.shuffled);
    job.out_len = cb;
    job.filter_mask = 1u << 1;
  } else {
    job.out_len = *n;
    job.filter_mask = 0;
  }
  pool_.Put(std::move(job.data));
  stored_bytes_.fetch_add(job.out_len, std::memory_order_relaxed);
  return Status::Ok();
}

Status TensorFileWriter::Impl::WriteChunk(const Job& job) {
  hsize_t offset[H5S_MAX_RANK];
  layout_.ChunkOffset(job.index, offset);
  Hdf5Lock lock = LockHdf5();
  if (H5Dwrite_chunk(dataset_.get(), H5P_DEFAULT, job.filter_mask, offset, job.out_len,
                     job.out.get()) < 0) {
    return Hdf5Error("tensor file " + path_ + ": writing chunk " + std::to_string(job.index));
  }
  return Status::Ok();
}

void TensorFileWriter::Impl::WorkerLoop() {
  Worker worker(options_.codec);
  while (true) {
    std::unique_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      if (!error_.ok()) {
        // Nothing more will be written; drop the job.
        --in_flight_;
        space_cv_.notify_all();
        continue;
      }
    }
    const Status st = Encode(*job, worker);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!st.ok()) {
        --in_flight_;
        Fail(st);
        continue;
      }
      ready_.emplace(job->index, std::move(job));
      if (writing_) continue;  // the worker writing will pick it up in turn
      writing_ = true;
    }
    WriteReadyChunks();
  }
}

void TensorFileWriter::Impl::WriteReadyChunks() {
  std::unique_lock<std::mutex> lock(mu_);
  while (error_.ok()) {
    auto it = ready_.find(next_write_);
    if (it == ready_.end()) break;
    std::unique_ptr<Job> job = std::move(it->second);
    ready_.erase(it);
    lock.unlock();
    const Status st = WriteChunk(*job);
    pool_.Put(std::move(job->out));
    pool_.Put(std::move(job->data));
    lock.lock();
    --in_flight_;
    if (!st.ok()) {
      Fail(st);
      break;
    }
    ++next_write_;
    space_cv_.notify_all();
  }
  writing_ = false;
}

void TensorFileWriter::Impl::StopWorkers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
  workers_.clear();
}

Status TensorFileWriter::Impl::FinishContiguous() {
  if (layout_.data_bytes == 0) return Status::Ok();
  std::string& data = small_;
  hashes_[0] = XXH3_64bits(data.data(), data.size());
  if (delta_) {
    std::string base(data.size(), '\0');
    RETURN_IF_ERROR(WithPrefix("tensor file " + path_ + ": base chunk 0: ",
                               options_.base_fn(0, base.data(), base.size())));
    internal::XorInto(reinterpret_cast<uint8_t*>(data.data()),
                      reinterpret_cast<const uint8_t*>(base.data()), data.size());
  }
  Hdf5Lock lock = LockHdf5();
  ASSIGN_OR_RETURN(H5Id type, CheckId(H5Dget_type(dataset_.get()), path_));
  // Memory type = file type: the bytes go in unconverted.
  if (H5Dwrite(dataset_.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()) < 0) {
    return Hdf5Error("tensor file " + path_ + ": writing data");
  }
  stored_bytes_.fetch_add(data.size(), std::memory_order_relaxed);
  return Status::Ok();
}

Status TensorFileWriter::Impl::WriteAttributes(const std::string& hash) {
  const hid_t d = dataset_.get();
  std::vector<int64_t> shape(spec_.shape.begin(), spec_.shape.end());
  // Coral's attributes, then ours.
  RETURN_IF_ERROR(internal::WriteStringAttr(d, "name", options_.meta.name));
  RETURN_IF_ERROR(
      internal::WriteInt64ArrayAttr(d, "shape", H5T_STD_I64LE, shape.data(), shape.size()));
  RETURN_IF_ERROR(internal::WriteStringAttr(d, "dtype", DTypeName(spec_.dtype)));
  RETURN_IF_ERROR(internal::WriteStringAttr(d, "layer_type", options_.meta.layer_type));
  RETURN_IF_ERROR(internal::WriteStringAttr(d, "model_name", options_.meta.model_name));
  RETURN_IF_ERROR(internal::WriteStringAttr(
      d, "compression_info", CompressionInfoJson(options_.codec, layout_, options_.base_hash)));
  RETURN_IF_ERROR(internal::WriteStringAttr(d, "hash", hash));
  RETURN_IF_ERROR(internal::WriteIntAttr(d, "modelfs_format", H5T_STD_I64LE, kFormatVersion));
  RETURN_IF_ERROR(internal::WriteIntAttr(d, "chunk_bytes", H5T_STD_U64LE,
                                         static_cast<int64_t>(layout_.chunk_bytes)));
  RETURN_IF_ERROR(internal::WriteInt64ArrayAttr(d, "chunk_xxh3", H5T_STD_U64LE, hashes_.data(),
                                                hashes_.size()));
  if (delta_) RETURN_IF_ERROR(internal::WriteStringAttr(d, "base", *options_.base_hash));
  return Status::Ok();
}

Status TensorFileWriter::Impl::Finish(const std::string& hash, bool durable) {
  if (finished_) return InvalidArgument("tensor file " + path_ + ": Finish called twice");
  finished_ = true;
  RETURN_IF_ERROR(CheckLinkName("hash", hash));
  if (appended_ != layout_.data_bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    Fail(InvalidArgument("tensor file " + path_ + ": got " + std::to_string(appended_) +
                         " bytes, the spec needs " + std::to_string(layout_.data_bytes)));
  }
  {
    // Every chunk queued has been submitted (a short last chunk was submitted by Append when
    // complete); wait for them to be written.
    std::unique_lock<std::mutex> lock(mu_);
    space_cv_.wait(lock, [&] { return !error_.ok() || next_write_ == next_index_; });
  }
  StopWorkers();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!error_.ok()) return error_;
  }
  if (!layout_.chunked) RETURN_IF_ERROR(FinishContiguous());

  // Naming and closing: (1) attributes, (2) move the dataset from its temporary name to its hash,
  // (3) close (HDF5 flushes its metadata), (4) fsync when durable. The caller renames the file into
  // place afterwards; until then a crash leaves a file it discards.
  {
    Hdf5Lock lock = LockHdf5();
    const std::string what = "tensor file " + path_;
    RETURN_IF_ERROR(WithPrefix(what + ": ", WriteAttributes(hash)));
    if (H5Lmove(group_.get(), kPartialName, group_.get(), hash.c_str(), H5P_DEFAULT, H5P_DEFAULT) <
        0) {
      return Hdf5Error(what + ": naming the dataset");
    }
    RETURN_IF_ERROR(dataset_.Close(what + ": closing the dataset"));
    RETURN_IF_ERROR(group_.Close(what + ": closing the group"));
    RETURN_IF_ERROR(file_.Close(what + ": closing the file"));
  }
  if (durable) {
    ASSIGN_OR_RETURN(ScopedFd fd, OpenFile(path_, O_RDONLY));
    if (::fsync(fd.get()) != 0) return ErrnoError("fsync " + path_, errno);
    RETURN_IF_ERROR(fd.Close());
  }
  return Status::Ok();
}

Result<std::unique_ptr<TensorFileWriter>> TensorFileWriter::Create(const std::string& path,
                                                                   const TensorSpec& spec,
                                                                   Options options) {
  auto impl = std::make_unique<Impl>(path, spec, std::move(options));
  const Status st = impl->Create();
  if (!st.ok()) {
    const bool created = impl->created_file();
    impl.reset();  // closes the handles first
    // We created the file exclusively, so it is ours to remove.
    if (created) ::unlink(path.c_str());  // best effort: the error being returned matters more
    return st;
  }
  return std::unique_ptr<TensorFileWriter>(new TensorFileWriter(std::move(impl)));
}

TensorFileWriter::TensorFileWriter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TensorFileWriter::~TensorFileWriter() = default;
Status TensorFileWriter::Append(const void* data, size_t len) { return impl_->Append(data, len); }
Status TensorFileWriter::Finish(const std::string& hash, bool durable) {
  return impl_->Finish(hash, durable);
}
uint64_t TensorFileWriter::stored_data_bytes() const { return impl_->stored_data_bytes(); }

// ==== reader ====

class TensorFileReader::Impl {
 public:
  explicit Impl(std::string path) : path_(std::move(path)) {}

  Status Open();
  const TensorFileInfo& info() const { return info_; }
  uint64_t chunk_count() const { return layout_.chunk_count; }
  Status ReadChunk(uint64_t i, void* out, size_t len, const BaseChunkFn& base_fn);
  Status ReadAll(const std::function<Status(const void*, size_t)>& sink, const BaseChunkFn& base_fn,
                 int threads);

 private:
  // One decoding thread's buffers.
  struct Scratch {
    explicit Scratch(CodecSpec codec) : compressor(codec) {}
    ChunkCompressor compressor;
    std::vector<uint8_t> raw;  // the chunk as stored
    Buffer plain;              // decompressed, still shuffled
  };

  Status FindDataset(std::string* name);
  Status ReadAttributes();
  Status ReadLayout();
  Status ReadPipeline();
  Status CheckArgs(const BaseChunkFn& base_fn) const;
  // Reconstructs chunk i into out (len bytes; out_room ≥ len is what out can hold, so a full
  // stored chunk may be read into it directly) and verifies it.
  Status DecodeChunk(uint64_t i, uint8_t* out, size_t len, size_t out_room,
                     const BaseChunkFn& base_fn, std::mutex* base_mu, Scratch& scratch);
  Status ReadStored(uint64_t i, uint8_t* out, size_t len, size_t out_room, Scratch& scratch,
                    size_t* stored, uint32_t* mask, bool* into_out);
  Status Corrupt(uint64_t i, std::string_view what) const {
    return Corruption("tensor file " + path_ + ": chunk " + std::to_string(i) + ": " +
                      std::string(what));
  }

  // Constant after Open.
  const std::string path_;
  TensorFileInfo info_;
  bool delta_ = false;
  Layout layout_;
  size_t item_ = 0;
  int shuffle_pos_ = -1;  // position in the filter pipeline, -1 when absent
  int codec_pos_ = -1;
  H5Id file_;
  H5Id dataset_;

  std::unique_ptr<Scratch> scratch_;  // ReadChunk's (one caller at a time)
};

Status TensorFileReader::Impl::FindDataset(std::string* name) {
  int found = 0;
  for (const char* group_name : {kWeightsGroup, kDeltasGroup}) {
    const htri_t exists = H5Lexists(file_.get(), group_name, H5P_DEFAULT);
    if (exists < 0) return Hdf5Error(group_name);
    if (exists == 0) continue;
    ASSIGN_OR_RETURN(H5Id group,
                     CheckId(H5Gopen2(file_.get(), group_name, H5P_DEFAULT), group_name));
    std::vector<std::string> names;
    auto collect = [](hid_t, const char* link, const H5L_info_t*, void* data) -> herr_t {
      static_cast<std::vector<std::string>*>(data)->push_back(link);
      return 0;
    };
    if (H5Literate(group.get(), H5_INDEX_NAME, H5_ITER_NATIVE, nullptr, collect, &names) < 0) {
      return Hdf5Error(std::string("listing /") + group_name);
    }
    for (const std::string& n : names) {
      ++found;
      *name = std::string("/") + group_name + "/" + n;
      delta_ = group_name == kDeltasGroup;
    }
  }
  if (found != 1) {
    return Corruption("tensor file " + path_ +
                      ": expected one dataset under /weights or /deltas, found " +
                      std::to_string(found));
  }
  return Status::Ok();
}

Status TensorFileReader::Impl::ReadAttributes() {
  const hid_t d = dataset_.get();
  Result<std::vector<int64_t>> format = internal::ReadInt64Attr(d, "modelfs_format");
  if (!format.ok()) {
    if (format.status().code() == StatusCode::kNotFound) {
      return Corruption("not a modelfs tensor file (no modelfs_format attribute)");
    }
    return format.status();
  }
  if (format->size() != 1 || (*format)[0] != kFormatVersion) {
    return NotSupported("modelfs_format " + (format->empty() ? "?" : std::to_string((*format)[0])) +
                        " (this version reads 1)");
  }
  ASSIGN_OR_RETURN(info_.hash, internal::ReadStringAttr(d, "hash"));
  ASSIGN_OR_RETURN(const std::string dtype_name, internal::ReadStringAttr(d, "dtype"));
  Result<DType> dtype = DTypeFromName(dtype_name);
  if (!dtype.ok()) return Corruption("dtype attribute '" + dtype_name + "' is not a known dtype");
  info_.spec.dtype = *dtype;
  ASSIGN_OR_RETURN(const std::vector<int64_t> shape, internal::ReadInt64Attr(d, "shape"));
  for (int64_t dim : shape) {
    if (dim < 0) return Corruption("negative dimension in the shape attribute");
    info_.spec.shape.push_back(static_cast<uint64_t>(dim));
  }
  // Coral's descriptive attributes may be absent in files written by hand; they are not needed.
  for (auto [attr, field] :
       {std::pair{"name", &info_.meta.name}, std::pair{"layer_type", &info_.meta.layer_type},
        std::pair{"model_name", &info_.meta.model_name},
        std::pair{"compression_info", &info_.compression_info}}) {
    if (!internal::HasAttr(d, attr)) continue;
    ASSIGN_OR_RETURN(*field, internal::ReadStringAttr(d, attr));
  }
  ASSIGN_OR_RETURN(const std::vector<uint64_t> chunk_bytes,
                   internal::ReadUInt64Attr(d, "chunk_bytes"));
  if (chunk_bytes.size() != 1) return Corruption("chunk_bytes attribute is not one number");
  info_.chunk_bytes = chunk_bytes[0];
  ASSIGN_OR_RETURN(info_.chunk_xxh3, internal::ReadUInt64Attr(d, "chunk_xxh3"));
  if (delta_) {
    ASSIGN_OR_RETURN(std::string base, internal::ReadStringAttr(d, "base"));
    info_.base_hash = std::move(base);
  }
  return Status::Ok();
}

Status TensorFileReader::Impl::ReadLayout() {
  const hid_t d = dataset_.get();
  const TensorSpec& spec = info_.spec;
  ASSIGN_OR_RETURN(H5Id type, CheckId(H5Dget_type(d), "dataset type"));
  if (!TypeMatches(type.get(), spec.dtype, delta_)) {
    return Corruption(std::string("dataset type does not hold ") + (delta_ ? "a delta of " : "") +
                      std::string(DTypeName(spec.dtype)));
  }
  item_ = StoredItemSize(spec.dtype, delta_);
  const std::vector<hsize_t> want_dims = DatasetDims(spec, delta_);
  if (want_dims.size() > H5S_MAX_RANK) return Corruption("too many dimensions");
  ASSIGN_OR_RETURN(H5Id space, CheckId(H5Dget_space(d), "dataset space"));
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) return Hdf5Error("dataset space");
  std::vector<hsize_t> dims(rank);
  if (rank > 0 && H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0) {
    return Hdf5Error("dataset space");
  }
  if (dims != want_dims) return Corruption("dataset shape differs from the shape attribute");

  ASSIGN_OR_RETURN(H5Id dcpl, CheckId(H5Dget_create_plist(d), "dataset properties"));
  const uint64_t data_bytes = spec.DataBytes();
  if (H5Pget_layout(dcpl.get()) == H5D_CHUNKED && data_bytes > 0) {
    std::vector<hsize_t> chunk(rank);
    if (H5Pget_chunk(dcpl.get(), rank, chunk.data()) != rank) return Hdf5Error("chunk shape");
    ASSIGN_OR_RETURN(layout_, LayoutFromChunkDims(dims, chunk, item_, data_bytes));
  } else {
    // Contiguous or compact: the data, if any, is one piece (bounded, as it is read at once).
    if (data_bytes > kMaxChunkBytes) return NotSupported("unchunked dataset larger than 64 MiB");
    layout_ = Layout{};
    layout_.data_bytes = data_bytes;
    layout_.dims = dims;
    layout_.chunk_bytes = data_bytes;
    layout_.chunk_count = data_bytes > 0 ? 1 : 0;
  }
  if (layout_.chunk_bytes != info_.chunk_bytes) {
    return Corruption("chunk_bytes attribute " + std::to_string(info_.chunk_bytes) +
                      " differs from the dataset's chunks of " +
                      std::to_string(layout_.chunk_bytes));
  }
  if (info_.chunk_xxh3.size() != layout_.chunk_count) {
    return Corruption("chunk_xxh3 has " + std::to_string(info_.chunk_xxh3.size()) +
                      " checksums for " + std::to_string(layout_.chunk_count) + " chunks");
  }
  return Status::Ok();
}

Status TensorFileReader::Impl::ReadPipeline() {
  ASSIGN_OR_RETURN(H5Id dcpl, CheckId(H5Dget_create_plist(dataset_.get()), "dataset properties"));
  const int n = H5Pget_nfilters(dcpl.get());
  if (n < 0) return Hdf5Error("filters");
  info_.codec = CodecSpec{Codec::kNone, 1};
  for (int idx = 0; idx < n; ++idx) {
    unsigned flags = 0, config = 0;
    unsigned cd[8] = {};
    size_t ncd = 8;
    char name[64];
    const H5Z_filter_t id =
        H5Pget_filter2(dcpl.get(), idx, &flags, &ncd, cd, sizeof(name), name, &config);
    if (id < 0) return Hdf5Error("filters");
    const bool first_codec = codec_pos_ < 0;
    if (id == H5Z_FILTER_SHUFFLE && shuffle_pos_ < 0 && codec_pos_ < 0) {
      shuffle_pos_ = idx;
    } else if (id == H5Z_FILTER_DEFLATE && first_codec) {
      codec_pos_ = idx;
      info_.codec = CodecSpec{Codec::kGzip, ncd > 0 ? static_cast<int>(cd[0]) : 6};
    } else if (id == internal::kFilterIdLzf && first_codec) {
      codec_pos_ = idx;
      info_.codec = CodecSpec{Codec::kLzf, 1};
    } else if (id == internal::kFilterIdZstd && first_codec) {
      codec_pos_ = idx;
      info_.codec =
          CodecSpec{Codec::kZstd, ncd > 0 ? static_cast<int>(cd[0]) : internal::kZstdDefaultLevel};
    } else {
      return NotSupported("filter pipeline with filter " + std::to_string(id) + " at position " +
                          std::to_string(idx));
    }
  }
  return Status::Ok();
}

Status TensorFileReader::Impl::Open() {
  struct stat st;
  if (::stat(path_.c_str(), &st) != 0) {
    if (errno == ENOENT) return NotFound("tensor file " + path_ + ": no such file");
    return ErrnoError("stat " + path_, errno);
  }
  {
    // Permission and similar problems are the OS's to report; what HDF5 cannot parse is corrupt.
    ASSIGN_OR_RETURN(ScopedFd probe, OpenFile(path_, O_RDONLY));
  }
  Hdf5Lock lock = LockHdf5();
  RETURN_IF_ERROR(internal::Hdf5InitStatus());
  const std::string prefix = "tensor file " + path_ + ": ";
  Result<H5Id> file = CheckId(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), "H5Fopen");
  if (!file.ok())
    return Corruption(prefix + "not a readable HDF5 file (" + file.status().message() + ")");
  file_ = std::move(file).value();
  std::string name;
  RETURN_IF_ERROR(FindDataset(&name));
  ASSIGN_OR_RETURN(H5Id dapl, CheckId(H5Pcreate(H5P_DATASET_ACCESS), path_));
  if (H5Pset_chunk_cache(dapl.get(), 0, 0, H5D_CHUNK_CACHE_W0_DEFAULT) < 0) return Hdf5Error(path_);
  Result<H5Id> dataset =
      CheckId(H5Dopen2(file_.get(), name.c_str(), dapl.get()), "opening " + name);
  if (!dataset.ok()) return WithPrefix(prefix, dataset.status());
  dataset_ = std::move(dataset).value();
  Status s = ReadAttributes();
  if (s.ok() && name.substr(name.rfind('/') + 1) != info_.hash) {
    s = Corruption("dataset " + name + " is not named by its hash attribute (incomplete file?)");
  }
  if (s.ok()) s = ReadLayout();
  if (s.ok()) s = ReadPipeline();
  if (!s.ok()) {
    // Everything wrong inside a file that HDF5 opened is a damaged or foreign file.
    const StatusCode code =
        s.code() == StatusCode::kNotSupported ? s.code() : StatusCode::kCorruption;
    return Status(code, prefix + s.message(), s.sys_errno());
  }
  scratch_ = std::make_unique<Scratch>(info_.codec);
  return Status::Ok();
}

Status TensorFileReader::Impl::CheckArgs(const BaseChunkFn& base_fn) const {
  if (delta_ && !base_fn) {
    return InvalidArgument("tensor file " + path_ + " is a delta against " + *info_.base_hash +
                           ": base_fn is required");
  }
  return Status::Ok();
}

Status TensorFileReader::Impl::ReadStored(uint64_t i, uint8_t* out, size_t len, size_t out_room,
                                          Scratch& scratch, size_t* stored, uint32_t* mask,
                                          bool* into_out) {
  Hdf5Lock lock = LockHdf5();
  if (!layout_.chunked) {
    // The whole (tiny) dataset, unconverted.
    *into_out = !delta_;
    uint8_t* dst = out;
    if (delta_) {
      scratch.raw.resize(len);
      dst = scratch.raw.data();
    }
    ASSIGN_OR_RETURN(H5Id type, CheckId(H5Dget_type(dataset_.get()), path_));
    if (H5Dread(dataset_.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0) {
      return WithPrefix("tensor file " + path_ + ": ", Hdf5Error("reading the data"));
    }
    *stored = len;
    *mask = 0;
    return Status::Ok();
  }
  hsize_t offset[H5S_MAX_RANK];
  layout_.ChunkOffset(i, offset);
  unsigned filter_mask = 0;
  haddr_t addr = HADDR_UNDEF;
  hsize_t size = 0;
  if (H5Dget_chunk_info_by_coord(dataset_.get(), offset, &filter_mask, &addr, &size) < 0) {
    return Corrupt(i, Hdf5Error("locating the chunk").message());
  }
  if (addr == HADDR_UNDEF || size == 0) return Corrupt(i, "chunk missing");
  const uint64_t cb = layout_.chunk_bytes;
  // Compressed chunks are smaller than raw ones here; allow some slack for other writers, but do
  // not let a damaged index make us allocate gigabytes.
  if (size > cb + cb / 8 + 4096) {
    return Corrupt(i, "stored size " + std::to_string(size) + " exceeds the chunk's " +
                          std::to_string(cb) + " bytes");
  }
  // Without filters, a full chunk goes straight to the caller's buffer.
  *into_out =
      shuffle_pos_ < 0 && codec_pos_ < 0 && !delta_ && size == cb && out_room >= cb && len == cb;
  uint8_t* dst = out;
  if (!*into_out) {
    scratch.raw.resize(size);
    dst = scratch.raw.data();
  }
  uint32_t read_mask = 0;
  if (H5Dread_chunk(dataset_.get(), H5P_DEFAULT, offset, &read_mask, dst) < 0) {
    return WithPrefix("tensor file " + path_ + ": ",
                      Hdf5Error("reading chunk " + std::to_string(i)));
  }
  *stored = size;
  *mask = read_mask;
  return Status::Ok();
}

Status TensorFileReader::Impl::DecodeChunk(uint64_t i, uint8_t* out, size_t len, size_t out_room,
                                           const BaseChunkFn& base_fn, std::mutex* base_mu,
                                           Scratch& scratch) {
  size_t stored = 0;
  uint32_t mask = 0;
  bool into_out = false;
  // HDF5 first, base_fn after: base_fn may read other files (and take the HDF5 lock itself).
  RETURN_IF_ERROR(ReadStored(i, out, len, out_room, scratch, &stored, &mask, &into_out));
  if (!into_out) {
    if (delta_) {
      Status st;
      if (base_mu != nullptr) {
        std::lock_guard<std::mutex> lock(*base_mu);
        st = base_fn(i, out, len);
      } else {
        st = base_fn(i, out, len);
      }
      if (!st.ok()) {
        return WithPrefix("tensor file " + path_ + ": base chunk " + std::to_string(i) + ": ", st);
      }
    }
    const size_t cb = layout_.chunked ? layout_.chunk_bytes : len;
    const uint8_t* data = scratch.raw.data();
    const bool decompress = codec_pos_ >= 0 && !(mask & (1u << codec_pos_));
    const bool unshuffle = shuffle_pos_ >= 0 && !(mask & (1u << shuffle_pos_));
    if (decompress) {
      if (!scratch.plain) scratch.plain = NewBuffer(cb);
      const Status st = scratch.compressor.Decompress(data, stored, scratch.plain.get(), cb);
      if (!st.ok()) return Corrupt(i, st.message());
      data = scratch.plain.get();
    } else if (stored != cb) {
      return Corrupt(i, "stored " + std::to_string(stored) + " bytes uncompressed, expected " +
                            std::to_string(cb));
    }
    if (unshuffle) {
      internal::Unshuffle(data, cb, item_, out, len, delta_);
    } else if (delta_) {
      internal::XorInto(out, data, len);
    } else {
      memcpy(out, data, len);
    }
  }
  if (XXH3_64bits(out, len) != info_.chunk_xxh3[i]) return Corrupt(i, "checksum mismatch");
  return Status::Ok();
}

Status TensorFileReader::Impl::ReadChunk(uint64_t i, void* out, size_t len,
                                         const BaseChunkFn& base_fn) {
  RETURN_IF_ERROR(CheckArgs(base_fn));
  if (i >= layout_.chunk_count) {
    return InvalidArgument("tensor file " + path_ + ": chunk " + std::to_string(i) + " of " +
                           std::to_string(layout_.chunk_count));
  }
  if (len != layout_.ChunkLen(i)) {
    return InvalidArgument("tensor file " + path_ + ": chunk " + std::to_string(i) + " has " +
                           std::to_string(layout_.ChunkLen(i)) + " bytes, not " +
                           std::to_string(len));
  }
  return DecodeChunk(i, static_cast<uint8_t*>(out), len, len, base_fn, nullptr, *scratch_);
}

// Workers claim chunks in order, at most `window` ahead of the one the caller's thread hands to the
// sink next; each decodes into its slot (chunk i uses slot i % window) and marks it ready.
Status TensorFileReader::Impl::ReadAll(const std::function<Status(const void*, size_t)>& sink,
                                       const BaseChunkFn& base_fn, int threads) {
  RETURN_IF_ERROR(CheckArgs(base_fn));
  const uint64_t n = layout_.chunk_count;
  if (n == 0) return Status::Ok();
  if (n == 1) {
    const size_t len = layout_.ChunkLen(0);
    Buffer buf = NewBuffer(std::max<size_t>(layout_.chunk_bytes, 1));
    RETURN_IF_ERROR(
        DecodeChunk(0, buf.get(), len, layout_.chunk_bytes, base_fn, nullptr, *scratch_));
    return sink(buf.get(), len);
  }
  const int workers = std::clamp(threads, 1, kMaxThreads);
  const size_t window = static_cast<size_t>(std::min<uint64_t>(
      n, std::max<size_t>(workers + 2, WindowFor(workers, layout_.chunk_bytes))));
  struct Slot {
    Buffer buf;
    Status status;
    bool ready = false;
  };
  std::vector<Slot> slots(window);
  for (Slot& s : slots) s.buf = NewBuffer(layout_.chunk_bytes);
  std::mutex mu;  // guards everything below and the slots' status/ready
  std::condition_variable ready_cv, space_cv;
  uint64_t next_claim = 0, next_deliver = 0;
  bool stop = false;
  Status failure;
  std::mutex base_mu;

  auto work = [&] {
    Scratch scratch(info_.codec);
    while (true) {
      uint64_t i;
      {
        std::unique_lock<std::mutex> lock(mu);
        space_cv.wait(
            lock, [&] { return stop || next_claim >= n || next_claim < next_deliver + window; });
        if (stop || next_claim >= n) return;
        i = next_claim++;
      }
      Slot& slot = slots[i % window];
      const Status st = DecodeChunk(i, slot.buf.get(), layout_.ChunkLen(i), layout_.chunk_bytes,
                                    base_fn, &base_mu, scratch);
      std::lock_guard<std::mutex> lock(mu);
      slot.status = st;
      slot.ready = true;
      if (!st.ok()) {
        if (failure.ok()) failure = st;
        stop = true;
        space_cv.notify_all();
      }
      ready_cv.notify_all();
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < workers; ++t) pool.emplace_back(work);

  Status result;
  for (uint64_t d = 0; d < n && result.ok(); ++d) {
    Slot& slot = slots[d % window];
    {
      std::unique_lock<std::mutex> lock(mu);
      ready_cv.wait(lock, [&] { return slot.ready || !failure.ok(); });
      if (!slot.ready || !slot.status.ok()) {
        result = slot.ready ? slot.status : failure;
        break;
      }
    }
    result = sink(slot.buf.get(), layout_.ChunkLen(d));
    std::lock_guard<std::mutex> lock(mu);
    slot.ready = false;
    slot.status = Status::Ok();
    ++next_deliver;
    space_cv.notify_all();
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    stop = true;
  }
  space_cv.notify_all();
  for (std::thread& t : pool) t.join();
  return result;
}

Result<std::unique_ptr<TensorFileReader>> TensorFileReader::Open(const std::string& path) {
  auto impl = std::make_unique<Impl>(path);
  RETURN_IF_ERROR(impl->Open());
  return std::unique_ptr<TensorFileReader>(new TensorFileReader(std::move(impl)));
}

TensorFileReader::TensorFileReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TensorFileReader::~TensorFileReader() = default;
const TensorFileInfo& TensorFileReader::info() const { return impl_->info(); }
uint64_t TensorFileReader::chunk_count() const { return impl_->chunk_count(); }
Status TensorFileReader::ReadChunk(uint64_t i, void* out, size_t len, const BaseChunkFn& base_fn) {
  return impl_->ReadChunk(i, out, len, base_fn);
}
Status TensorFileReader::ReadAll(const std::function<Status(const void* data, size_t len)>& sink,
                                 const BaseChunkFn& base_fn, int threads) {
  return impl_->ReadAll(sink, base_fn, threads);
}

}  // namespace modelfs::weights
