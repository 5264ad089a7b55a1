// Byte-level codecs for one chunk of a tensor file (private to stores/weights): HDF5's shuffle and
// the byte formats of the compression filters tensor files use, exactly as HDF5's deflate filter,
// h5py's LZF filter and hdf5plugin's zstd filter produce and expect them:
//   deflate (id 1)   a zlib stream (compress2 / uncompress), cd_values[0] = level
//   LZF (id 32000)   raw lzf_compress output, no header; cd_values = {4, LZF_VERSION, chunk bytes}
//   zstd (id 32015)  one zstd frame with the content size in its header; cd_values[0] = level
// No HDF5 calls here: tensor_file.cc moves the bytes with direct chunk I/O and hdf5_util.cc wraps
// the same functions as HDF5 filters.
//
// Thread-safety: the free functions are pure. A ChunkCompressor holds per-thread state (zstd
// contexts): one per worker thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "stores/common/status.h"
#include "stores/weights/tensor_file.h"

namespace modelfs::weights::internal {

inline constexpr int kFilterIdLzf = 32000;
inline constexpr int kFilterIdZstd = 32015;
// h5py's H5PY_FILTER_LZF_VERSION, the first LZF cd_value.
inline constexpr unsigned kLzfFilterRevision = 4;
// liblzf's LZF_VERSION (API 1.5), the second LZF cd_value.
inline constexpr unsigned kLzfApiVersion = 0x0105;
// hdf5plugin's zstd filter compresses at this level when cd_values is empty.
inline constexpr int kZstdDefaultLevel = 3;

// HDF5's shuffle filter (H5Z_filter_shuffle): byte j of element i goes to out[j * n + i], n = len /
// item; the len % item trailing bytes are copied as they are. in and out must not overlap.
void Shuffle(const uint8_t* in, size_t len, size_t item, uint8_t* out);

// The inverse of Shuffle for an input of `len` shuffled bytes, producing only the first out_len
// bytes (a multiple of item, at most len): the valid part of a zero-padded edge chunk. With
// xor_into, the bytes are XOR-ed into out instead of stored (delta reconstruction in one pass).
void Unshuffle(const uint8_t* in, size_t len, size_t item, uint8_t* out, size_t out_len,
               bool xor_into);

// out[i] ^= in[i] for i < len.
void XorInto(uint8_t* out, const uint8_t* in, size_t len);

// One thread's compressor and decompressor for a codec.
class ChunkCompressor {
 public:
  explicit ChunkCompressor(CodecSpec codec);
  ~ChunkCompressor();
  ChunkCompressor(const ChunkCompressor&) = delete;
  ChunkCompressor& operator=(const ChunkCompressor&) = delete;

  // Compresses src[0, len) into dst (capacity cap). Returns the compressed size, or 0 when the
  // result would not fit in cap (callers pass cap = len - 1: "store it raw"). IOError when the
  // library fails otherwise (out of memory).
  Result<size_t> Compress(const uint8_t* src, size_t len, uint8_t* dst, size_t cap);
  // Decompresses src into exactly out_len bytes at dst. Corruption (saying what the codec
  // reported) when the input is not a valid stream of exactly out_len bytes.
  Status Decompress(const uint8_t* src, size_t len, uint8_t* dst, size_t out_len);

 private:
  struct ZstdContexts;
  CodecSpec codec_;
  std::unique_ptr<ZstdContexts> zstd_;  // created on first use
};

}  // namespace modelfs::weights::internal
