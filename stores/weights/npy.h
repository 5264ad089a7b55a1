// The NumPy .npy format (version 1.0, and reading 2.0/3.0), and the canonical form that names a tensor.
//
// A tensor's identity is its canonical .npy bytes: the v1.0 header exactly as current NumPy writes it
// for a little-endian, C-ordered array (dict text, padding, trailing '\n', total header a multiple of
// 64 bytes), followed by the data, little-endian, C order. The weight store's key is the SHA-256 of
// these bytes, so `sha256sum weights/<hash>` prints <hash>, and numpy.save of a C-ordered
// little-endian array produces exactly these bytes.
//
// Thread-safety: plain functions and values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "stores/common/status.h"

namespace modelfs::weights {

// The element types a tensor may have. Others (object, strings, void/structured, datetime) are
// rejected with InvalidArgument.
enum class DType : uint8_t {
  kBool,  // '|b1'
  kInt8, kInt16, kInt32, kInt64,
  kUInt8, kUInt16, kUInt32, kUInt64,
  kFloat16, kFloat32, kFloat64,
  kComplex64, kComplex128,
};

// Bytes per element (complex64: 8).
size_t ItemSize(DType t);
// NumPy's name: "float32", "int8", "bool", "complex64", ... (Coral's dtype attribute).
std::string_view DTypeName(DType t);
// Inverse of DTypeName; InvalidArgument for anything else.
Result<DType> DTypeFromName(std::string_view name);
// The canonical little-endian descr: "<f4", "|b1", "|u1", "<c8", ...
std::string_view CanonicalDescr(DType t);

struct TensorSpec {
  DType dtype = DType::kFloat32;
  std::vector<uint64_t> shape;  // empty: a 0-d array (one element)
  uint64_t ElementCount() const;  // product of shape (1 for 0-d; 0 when a dimension is 0)
  uint64_t DataBytes() const { return ElementCount() * ItemSize(dtype); }
  // "(3, 4)", "(5,)", "()": Python's repr of the shape tuple, as in the header.
  std::string ShapeText() const;
  bool operator==(const TensorSpec&) const = default;
};

// What a .npy file's header says, as written (before canonicalization).
struct NpyHeader {
  TensorSpec spec;             // dtype with byte order resolved
  bool big_endian = false;     // descr was '>…' (multi-byte types only)
  bool fortran_order = false;
  uint64_t data_offset = 0;    // where the data starts in the file (header length)
};

// Parses the header at the start of a .npy file. `prefix` holds at least the first bytes of the file
// (the header; up to 64 KiB is enough for any header we accept; more is ignored).
// InvalidArgument naming the problem for: bad magic, unknown version, a header length beyond the
// prefix, a dict that is not NumPy's literal syntax (keys descr, fortran_order, shape; nothing else),
// an unsupported dtype, a negative or non-integer dimension, an element count whose byte size overflows
// 64 bits. Versions 1.0, 2.0 and 3.0 (utf-8 header) are read.
Result<NpyHeader> ParseNpyHeader(std::string_view prefix);

// The canonical v1.0 header (magic through the final '\n') for spec, byte for byte what the NumPy of
// Debian's python3-numpy writes for np.save of a C-ordered little-endian array of that dtype and shape
// (including NumPy's padding rule and the room it leaves for growing the first axis).
std::string CanonicalHeader(const TensorSpec& spec);

// Whether a file of `file_size` bytes with this header holds exactly the data the header announces.
// InvalidArgument ("header says N data bytes, file has M") otherwise.
Status CheckDataSize(const NpyHeader& header, uint64_t file_size);

// Converts data as written (big-endian and/or Fortran order, per header) into canonical data
// (little-endian, C order): `in` and `out` are header.spec.DataBytes() long and must not overlap.
// Fortran order is converted by a transpose (the store accepts it and documents that the stored
// tensor, and thus its hash, is the C-ordered array; numpy.load gives an equal array).
void CanonicalizeData(const NpyHeader& header, const void* in, void* out);

// True when the data needs no conversion (little-endian or single-byte, and C order or at most one
// dimension larger than 1): the written bytes after the header are already canonical.
bool DataIsCanonical(const NpyHeader& header);

}  // namespace modelfs::weights
