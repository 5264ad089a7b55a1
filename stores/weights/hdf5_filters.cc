#include "stores/weights/hdf5_filters.h"

#include <errno.h>
#include <lzf.h>
#include <zstd.h>

#include <algorithm>
#include <limits>

#include "stores/weights/chunk_codec.h"

namespace modelfs::weights::internal {
namespace {

// ---- the LZF and zstd filters, for HDF5's own read and write paths ----
// tensor_file.cc compresses chunks itself and moves them with direct chunk I/O; these are what
// HDF5 calls when it filters a chunk (H5Dread of such a file, or a dataset created elsewhere in
// this process). They follow h5py's lzf_filter.c and hdf5plugin's zstd filter, so the bytes are the
// same whichever side wrote them. HDF5 hands filters buffers from its allocator, hence
// H5allocate_memory / H5free_memory.

// A failed filter returns 0; HDF5 then fails the read (or, for an optional filter on write, stores
// the chunk unfiltered and sets its bit in the chunk's filter mask).
size_t LzfFilter(unsigned flags, size_t cd_nelmts, const unsigned cd_values[], size_t nbytes,
                 size_t* buf_size, void** buf) {
  if (nbytes > std::numeric_limits<unsigned>::max()) return 0;
  if (!(flags & H5Z_FLAG_REVERSE)) {
    // Output no larger than the input: otherwise the chunk is better stored raw.
    void* out = H5allocate_memory(nbytes, false);
    if (out == nullptr) return 0;
    const unsigned n =
        lzf_compress(*buf, static_cast<unsigned>(nbytes), out, static_cast<unsigned>(nbytes));
    if (n == 0) {
      H5free_memory(out);
      return 0;
    }
    H5free_memory(*buf);
    *buf = out;
    *buf_size = nbytes;
    return n;
  }
  // h5py records the chunk size in cd_values[2]; without it, grow from the input size.
  size_t guess =
      (cd_nelmts >= 3 && cd_values[2] != 0) ? cd_values[2] : std::max<size_t>(*buf_size, 1);
  constexpr size_t kMaxOut = std::numeric_limits<unsigned>::max();
  while (true) {
    void* out = H5allocate_memory(guess, false);
    if (out == nullptr) return 0;
    errno = 0;
    const unsigned n =
        lzf_decompress(*buf, static_cast<unsigned>(nbytes), out, static_cast<unsigned>(guess));
    if (n != 0) {
      H5free_memory(*buf);
      *buf = out;
      *buf_size = guess;
      return n;
    }
    H5free_memory(out);
    if (errno != E2BIG || guess >= kMaxOut) return 0;
    guess = std::min(guess * 2, kMaxOut);
  }
}

// As h5py's lzf_set_local: cd_values = {filter revision, LZF API version, chunk size in bytes}.
herr_t LzfSetLocal(hid_t dcpl, hid_t type, hid_t /*space*/) {
  unsigned flags = 0;
  size_t n = 8;
  unsigned values[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  if (H5Pget_filter_by_id2(dcpl, kFilterIdLzf, &flags, &n, values, 0, nullptr, nullptr) < 0) {
    return -1;
  }
  n = std::clamp<size_t>(n, 3, 8);
  if (values[0] == 0) values[0] = kLzfFilterRevision;
  if (values[1] == 0) values[1] = LZF_VERSION;
  hsize_t chunk[H5S_MAX_RANK];
  const int rank = H5Pget_chunk(dcpl, H5S_MAX_RANK, chunk);
  if (rank < 0) return -1;
  uint64_t bytes = H5Tget_size(type);
  if (bytes == 0) return -1;
  for (int i = 0; i < rank; ++i) bytes *= chunk[i];
  // 0 (no guess) when it does not fit: the decompressor then grows its buffer.
  values[2] = bytes <= std::numeric_limits<unsigned>::max() ? static_cast<unsigned>(bytes) : 0;
  if (H5Pmodify_filter(dcpl, kFilterIdLzf, flags, n, values) < 0) return -1;
  return 1;
}

size_t ZstdFilter(unsigned flags, size_t cd_nelmts, const unsigned cd_values[], size_t nbytes,
                  size_t* buf_size, void** buf) {
  if (!(flags & H5Z_FLAG_REVERSE)) {
    int level = cd_nelmts > 0 ? static_cast<int>(cd_values[0]) : kZstdDefaultLevel;
    level = std::clamp(level, 1, ZSTD_maxCLevel());
    const size_t bound = ZSTD_compressBound(nbytes);
    void* out = H5allocate_memory(bound, false);
    if (out == nullptr) return 0;
    const size_t n = ZSTD_compress(out, bound, *buf, nbytes, level);
    if (ZSTD_isError(n)) {
      H5free_memory(out);
      return 0;
    }
    H5free_memory(*buf);
    *buf = out;
    *buf_size = bound;
    return n;
  }
  const unsigned long long size = ZSTD_getFrameContentSize(*buf, nbytes);
  if (size == ZSTD_CONTENTSIZE_ERROR) return 0;
  if (size != ZSTD_CONTENTSIZE_UNKNOWN) {
    void* out = H5allocate_memory(size, false);
    if (out == nullptr) return 0;
    const size_t n = ZSTD_decompress(out, size, *buf, nbytes);
    if (ZSTD_isError(n) || n != size) {
      H5free_memory(out);
      return 0;
    }
    H5free_memory(*buf);
    *buf = out;
    *buf_size = size;
    return n;
  }
  // A frame written without its content size (streaming compressors): decode in steps.
  ZSTD_DStream* stream = ZSTD_createDStream();
  if (stream == nullptr) return 0;
  size_t cap = std::max<size_t>(nbytes * 4, 4096);
  void* out = H5allocate_memory(cap, false);
  ZSTD_inBuffer in{*buf, nbytes, 0};
  ZSTD_outBuffer ob{out, cap, 0};
  size_t ret = 1;
  while (out != nullptr) {
    ob.dst = out;
    ob.size = cap;
    ret = ZSTD_decompressStream(stream, &ob, &in);
    if (ZSTD_isError(ret) || ret == 0) break;
    if (ob.pos < ob.size && in.pos == in.size) break;  // truncated input
    cap *= 2;
    void* grown = H5resize_memory(out, cap);
    if (grown == nullptr) H5free_memory(out);
    out = grown;
  }
  ZSTD_freeDStream(stream);
  if (out == nullptr) return 0;
  if (ZSTD_isError(ret) || ret != 0) {
    H5free_memory(out);
    return 0;
  }
  H5free_memory(*buf);
  *buf = out;
  *buf_size = cap;
  return ob.pos;
}

}  // namespace

const H5Z_class2_t kLzfFilterClass = {
    H5Z_CLASS_T_VERS, static_cast<H5Z_filter_t>(kFilterIdLzf), 1, 1, "lzf", nullptr, LzfSetLocal,
    LzfFilter};
const H5Z_class2_t kZstdFilterClass = {
    H5Z_CLASS_T_VERS, static_cast<H5Z_filter_t>(kFilterIdZstd), 1, 1, "zstd", nullptr, nullptr,
    ZstdFilter};


}  // namespace modelfs::weights::internal
