// Tensor object files: one immutable HDF5 file per stored tensor object, readable by h5dump and h5py.
//
// A file holds one dataset, Coral's layout:
//   /weights/<hash>   a full tensor: the canonical data, its dtype and shape (0-d and empty tensors
//                     are contiguous datasets without filters)
//   /deltas/<hash>    a delta: the XOR of the tensor's bit patterns with its base's, stored as unsigned
//                     integers of the tensor's item size (1, 2, 4, 8 bytes; complex128: uint64 with an
//                     extra trailing dimension of 2), same shape; XOR-ing it with the base's data gives
//                     the tensor back bit for bit
// with attributes: Coral's name, shape, dtype, layer_type, model_name, compression_info (JSON text),
// hash; ours: modelfs_format (1), base (the base's hash, deltas only), chunk_bytes, chunk_xxh3 (uint64
// array: XXH3-64 of each chunk of the tensor's *reconstructed* canonical data, so every load verifies
// what it returns, whatever chain produced it).
//
// Chunks are contiguous slabs of the C-order data (≈ 1 MiB; the chunk shape is 1 in the leading
// dimensions, a slice of one dimension, full in the trailing ones), so chunk i is bytes
// [i·chunk_bytes, (i+1)·chunk_bytes) of the data. The filter pipeline is HDF5's shuffle (id 2)
// followed by the store's codec: deflate (id 1, gzip level 1–9), LZF (id 32000, as Debian's
// hdf5-plugin-lzf), zstd (id 32015, as Debian's hdf5-filter-plugin / python3-hdf5plugin), or nothing.
// A chunk that does not compress is stored raw with its filter-mask bits set (HDF5's own convention).
// Chunks are compressed and decompressed in this library by a pool of threads (both cores) and moved
// with HDF5's direct chunk write/read; the LZF and zstd filters are also registered with HDF5 in-process
// (RegisterFilters), so HDF5's normal read path (imports of Coral files) decodes them too.
//
// Streaming: writers take the data chunk by chunk and readers produce it chunk by chunk, with a bounded
// number of chunks in flight, so a 4 GiB tensor never sits in memory.
//
// Thread-safety: HDF5 is called under one process-wide mutex (Debian's serial libhdf5 is not
// thread-safe); compression runs outside it. A TensorFileWriter/Reader is used by one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "stores/common/status.h"
#include "stores/weights/npy.h"

namespace modelfs::weights {

enum class Codec : uint8_t { kNone, kGzip, kLzf, kZstd };

struct CodecSpec {
  Codec codec = Codec::kZstd;
  int level = 1;  // gzip 1–9, zstd 1–22; ignored for lzf and none
  // "gzip-4", "lzf", "zstd-1", "none" (and "gzip" = gzip-4, "zstd" = zstd-1). InvalidArgument otherwise.
  static Result<CodecSpec> Parse(std::string_view text);
  std::string ToString() const;  // canonical form: "gzip-4", "lzf", "zstd-1", "none"
  bool operator==(const CodecSpec&) const = default;
};

// Coral's metadata, kept as attributes of the dataset.
struct CoralMeta {
  std::string name;
  std::string layer_type;
  std::string model_name;
};

// Registers the LZF and zstd HDF5 filters with this process's HDF5 (idempotent). Call before reading
// files made elsewhere (Open paths call it).
Status RegisterFilters();

// The chunking rule: bytes per chunk for a tensor of this spec (a multiple of the item size and of
// the trailing dimensions' row size, ≈ 1 MiB; the whole data when smaller). 0 for empty tensors.
uint64_t ChunkBytesFor(const TensorSpec& spec);

// Supplies the base tensor's canonical data for chunk i (deltas): fills `out` (chunk-sized; the last
// chunk is shorter) or fails. Writers and readers call it one call at a time (never concurrently),
// possibly from their worker threads, not necessarily in chunk order, and never while holding the
// HDF5 lock (so it may read other tensor files).
using BaseChunkFn = std::function<Status(uint64_t chunk_index, void* out, size_t len)>;

// Writes one object file at `path` (a new file; fails if it exists). Feed the canonical data in
// order with Append (any sizes); the file is complete after Finish. Abandoning a writer (destroying it
// before Finish) leaves a partial file for the caller to delete.
class TensorFileWriter {
 public:
  struct Options {
    CodecSpec codec;
    CoralMeta meta;
    // Set: write /deltas/<hash> = data XOR base (base_fn gives the base's data chunk by chunk).
    std::optional<std::string> base_hash;
    BaseChunkFn base_fn;
    int threads = 2;  // compression workers
  };
  static Result<std::unique_ptr<TensorFileWriter>> Create(const std::string& path,
                                                          const TensorSpec& spec, Options options);
  ~TensorFileWriter();
  Status Append(const void* data, size_t len);
  // Names the dataset (the hash is known only after all data was seen), writes the attributes and
  // closes the file (fsync it when durable). InvalidArgument when fewer/more bytes than the spec's.
  Status Finish(const std::string& hash, bool durable);
  // Sum of compressed chunk sizes so far (to compare a delta's size with a full encoding's).
  uint64_t stored_data_bytes() const;

 private:
  class Impl;
  explicit TensorFileWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// What an object file says about itself.
struct TensorFileInfo {
  std::string hash;
  TensorSpec spec;
  CoralMeta meta;
  CodecSpec codec;
  std::optional<std::string> base_hash;  // set for deltas
  uint64_t chunk_bytes = 0;
  std::vector<uint64_t> chunk_xxh3;
  std::string compression_info;  // the JSON text stored
};

// Reads one object file. Chunks are decoded (and, for deltas, XOR-ed with the base's chunks from
// base_fn) in parallel and verified against chunk_xxh3: a mismatch is Corruption naming the file and
// the chunk.
class TensorFileReader {
 public:
  static Result<std::unique_ptr<TensorFileReader>> Open(const std::string& path);
  ~TensorFileReader();
  const TensorFileInfo& info() const;
  uint64_t chunk_count() const;
  // Decodes chunk i into out (len = that chunk's length). base_fn is required for deltas.
  Status ReadChunk(uint64_t i, void* out, size_t len, const BaseChunkFn& base_fn);
  // Decodes the whole tensor in order, handing each verified chunk to sink (in order), with up to
  // `threads` chunks decoded in parallel and bounded memory.
  Status ReadAll(const std::function<Status(const void* data, size_t len)>& sink,
                 const BaseChunkFn& base_fn, int threads = 2);

 private:
  class Impl;
  explicit TensorFileReader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace modelfs::weights
