#include "stores/weights/chunk_codec.h"

#include <errno.h>
#include <lzf.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>

namespace modelfs::weights::internal {

static_assert(LZF_VERSION == kLzfApiVersion, "h5py's LZF filter records liblzf's API version");

namespace {

// The transposes below are the hot loops of every load and store (each chunk passes through one
// of them once). Byte-wise loops run at 0.3-2 GB/s; SSE2 (part of x86-64) transposes 16 elements
// per step at several GB/s. The scalar loops handle other item sizes, the tail, other CPUs.

template <size_t S, bool kXor>
void UnshuffleScalar(const uint8_t* in, size_t n, size_t first, size_t count, uint8_t* out) {
  for (size_t i = first; i < count; ++i) {
    for (size_t j = 0; j < S; ++j) {
      if constexpr (kXor) {
        out[i * S + j] ^= in[j * n + i];
      } else {
        out[i * S + j] = in[j * n + i];
      }
    }
  }
}

#if defined(__SSE2__)
// One round of a perfect shuffle over S registers of 16 bytes: byte-interleaves register m with
// register m + S/2. Seen as a (16·S)-byte block whose byte address has 4 + log2(S) bits, a round
// rotates the address left by one bit. Shuffling (element, byte) → (byte, element) is a rotation by
// 4 bits (4 rounds); unshuffling is a rotation by log2(S) bits.
template <size_t S>
inline void PerfectShuffleRound(__m128i* x) {
  __m128i y[S];
  for (size_t m = 0; m < S / 2; ++m) {
    y[2 * m] = _mm_unpacklo_epi8(x[m], x[m + S / 2]);
    y[2 * m + 1] = _mm_unpackhi_epi8(x[m], x[m + S / 2]);
  }
  for (size_t m = 0; m < S; ++m) x[m] = y[m];
}

constexpr int Log2(size_t s) { return s <= 1 ? 0 : 1 + Log2(s / 2); }

template <size_t S>
void ShuffleFixed(const uint8_t* in, size_t n, uint8_t* out) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m128i x[S];
    for (size_t k = 0; k < S; ++k) {
      x[k] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i * S + 16 * k));
    }
    for (int r = 0; r < 4; ++r) PerfectShuffleRound<S>(x);
    for (size_t j = 0; j < S; ++j)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j * n + i), x[j]);
  }
  for (; i < n; ++i) {
    for (size_t j = 0; j < S; ++j) out[j * n + i] = in[i * S + j];
  }
}

template <size_t S, bool kXor>
void UnshuffleFixed(const uint8_t* in, size_t n, size_t count, uint8_t* out) {
  size_t i = 0;
  for (; i + 16 <= count; i += 16) {
    __m128i x[S];
    for (size_t j = 0; j < S; ++j) {
      x[j] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + j * n + i));
    }
    for (int r = 0; r < Log2(S); ++r) PerfectShuffleRound<S>(x);
    for (size_t k = 0; k < S; ++k) {
      auto* dst = reinterpret_cast<__m128i*>(out + i * S + 16 * k);
      if constexpr (kXor) {
        _mm_storeu_si128(dst, _mm_xor_si128(_mm_loadu_si128(dst), x[k]));
      } else {
        _mm_storeu_si128(dst, x[k]);
      }
    }
  }
  UnshuffleScalar<S, kXor>(in, n, i, count, out);
}
#else
template <size_t S>
void ShuffleFixed(const uint8_t* in, size_t n, uint8_t* out) {
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < S; ++j) out[j * n + i] = in[i * S + j];
  }
}

template <size_t S, bool kXor>
void UnshuffleFixed(const uint8_t* in, size_t n, size_t count, uint8_t* out) {
  UnshuffleScalar<S, kXor>(in, n, 0, count, out);
}
#endif

template <bool kXor>
void UnshuffleGeneric(const uint8_t* in, size_t n, size_t count, size_t item, uint8_t* out) {
  for (size_t i = 0; i < count; ++i) {
    for (size_t j = 0; j < item; ++j) {
      if constexpr (kXor) {
        out[i * item + j] ^= in[j * n + i];
      } else {
        out[i * item + j] = in[j * n + i];
      }
    }
  }
}

template <bool kXor>
void UnshuffleDispatch(const uint8_t* in, size_t n, size_t count, size_t item, uint8_t* out) {
  switch (item) {
    case 2:
      return UnshuffleFixed<2, kXor>(in, n, count, out);
    case 4:
      return UnshuffleFixed<4, kXor>(in, n, count, out);
    case 8:
      return UnshuffleFixed<8, kXor>(in, n, count, out);
    case 16:
      return UnshuffleFixed<16, kXor>(in, n, count, out);
    default:
      return UnshuffleGeneric<kXor>(in, n, count, item, out);
  }
}

}  // namespace

void Shuffle(const uint8_t* in, size_t len, size_t item, uint8_t* out) {
  if (item <= 1 || len < item) {
    memcpy(out, in, len);
    return;
  }
  const size_t n = len / item;
  switch (item) {
    case 2:
      ShuffleFixed<2>(in, n, out);
      break;
    case 4:
      ShuffleFixed<4>(in, n, out);
      break;
    case 8:
      ShuffleFixed<8>(in, n, out);
      break;
    case 16:
      ShuffleFixed<16>(in, n, out);
      break;
    default:
      for (size_t i = 0; i < n; ++i) {
        for (size_t j = 0; j < item; ++j) out[j * n + i] = in[i * item + j];
      }
  }
  // HDF5 leaves the bytes after the last whole element where they are.
  memcpy(out + n * item, in + n * item, len - n * item);
}

void Unshuffle(const uint8_t* in, size_t len, size_t item, uint8_t* out, size_t out_len,
               bool xor_into) {
  if (item <= 1 || len < item) {
    if (xor_into) {
      XorInto(out, in, out_len);
    } else {
      memcpy(out, in, out_len);
    }
    return;
  }
  const size_t n = len / item;
  const size_t count = out_len / item;
  if (xor_into) {
    UnshuffleDispatch<true>(in, n, count, item, out);
  } else {
    UnshuffleDispatch<false>(in, n, count, item, out);
  }
}

void XorInto(uint8_t* out, const uint8_t* in, size_t len) {
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t a, b;
    memcpy(&a, out + i, 8);
    memcpy(&b, in + i, 8);
    a ^= b;
    memcpy(out + i, &a, 8);
  }
  for (; i < len; ++i) out[i] ^= in[i];
}

struct ChunkCompressor::ZstdContexts {
  ZSTD_CCtx* cctx = nullptr;
  ZSTD_DCtx* dctx = nullptr;
  ~ZstdContexts() {
    ZSTD_freeCCtx(cctx);
    ZSTD_freeDCtx(dctx);
  }
};

ChunkCompressor::ChunkCompressor(CodecSpec codec) : codec_(codec) {}
ChunkCompressor::~ChunkCompressor() = default;

Result<size_t> ChunkCompressor::Compress(const uint8_t* src, size_t len, uint8_t* dst, size_t cap) {
  switch (codec_.codec) {
    case Codec::kNone:
      return size_t{0};
    case Codec::kGzip: {
      uLongf out_len = cap;
      const int rc = compress2(dst, &out_len, src, len, codec_.level);
      if (rc == Z_BUF_ERROR) return size_t{0};
      if (rc != Z_OK) return IOError("zlib compress2 failed: " + std::to_string(rc));
      return static_cast<size_t>(out_len);
    }
    case Codec::kLzf: {
      if (len > std::numeric_limits<unsigned>::max()) return size_t{0};
      // 0 means "did not fit" (or an empty input, never passed here).
      const unsigned cap_u =
          static_cast<unsigned>(std::min<size_t>(cap, std::numeric_limits<unsigned>::max()));
      return static_cast<size_t>(lzf_compress(src, static_cast<unsigned>(len), dst, cap_u));
    }
    case Codec::kZstd: {
      if (!zstd_) zstd_ = std::make_unique<ZstdContexts>();
      if (!zstd_->cctx && !(zstd_->cctx = ZSTD_createCCtx())) {
        return IOError("zstd: cannot create a compression context");
      }
      // ZSTD_compressCCtx writes the content size into the frame header, which hdf5plugin's
      // decompressor needs (it sizes its output with ZSTD_getDecompressedSize).
      const size_t rc = ZSTD_compressCCtx(zstd_->cctx, dst, cap, src, len, codec_.level);
      if (ZSTD_isError(rc)) {
        if (ZSTD_getErrorCode(rc) == ZSTD_error_dstSize_tooSmall) return size_t{0};
        return IOError(std::string("zstd compression failed: ") + ZSTD_getErrorName(rc));
      }
      return rc;
    }
  }
  return IOError("unknown codec");
}

Status ChunkCompressor::Decompress(const uint8_t* src, size_t len, uint8_t* dst, size_t out_len) {
  switch (codec_.codec) {
    case Codec::kNone:
      if (len != out_len) {
        return Corruption("stored " + std::to_string(len) + " bytes, expected " +
                          std::to_string(out_len));
      }
      memcpy(dst, src, len);
      return Status::Ok();
    case Codec::kGzip: {
      uLongf got = out_len;
      const int rc = uncompress(dst, &got, src, len);
      if (rc == Z_BUF_ERROR) return Corruption("deflate data longer than the chunk or truncated");
      if (rc == Z_MEM_ERROR) return IOError("zlib: out of memory");
      if (rc != Z_OK)
        return Corruption("invalid deflate data (zlib error " + std::to_string(rc) + ")");
      if (got != out_len) {
        return Corruption("deflate data decodes to " + std::to_string(got) + " bytes, expected " +
                          std::to_string(out_len));
      }
      return Status::Ok();
    }
    case Codec::kLzf: {
      if (len > std::numeric_limits<unsigned>::max() ||
          out_len > std::numeric_limits<unsigned>::max()) {
        return Corruption("LZF chunk too large");
      }
      errno = 0;
      const unsigned got =
          lzf_decompress(src, static_cast<unsigned>(len), dst, static_cast<unsigned>(out_len));
      if (got == 0) {
        return Corruption(errno == E2BIG ? "LZF data longer than the chunk" : "invalid LZF data");
      }
      if (got != out_len) {
        return Corruption("LZF data decodes to " + std::to_string(got) + " bytes, expected " +
                          std::to_string(out_len));
      }
      return Status::Ok();
    }
    case Codec::kZstd: {
      if (!zstd_) zstd_ = std::make_unique<ZstdContexts>();
      if (!zstd_->dctx && !(zstd_->dctx = ZSTD_createDCtx())) {
        return IOError("zstd: cannot create a decompression context");
      }
      const size_t rc = ZSTD_decompressDCtx(zstd_->dctx, dst, out_len, src, len);
      if (ZSTD_isError(rc)) return Corruption(std::string("zstd: ") + ZSTD_getErrorName(rc));
      if (rc != out_len) {
        return Corruption("zstd data decodes to " + std::to_string(rc) + " bytes, expected " +
                          std::to_string(out_len));
      }
      return Status::Ok();
    }
  }
  return Corruption("unknown codec");
}

}  // namespace modelfs::weights::internal
