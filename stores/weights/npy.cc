#include "stores/weights/npy.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>

namespace modelfs::weights {
namespace {

struct DTypeInfo {
  DType dtype;
  std::string_view name;   // NumPy's name
  std::string_view descr;  // canonical descr: byte-order char, kind, item size
  size_t item_size;
};

// Indexed by DType; the order of the enum.
constexpr std::array<DTypeInfo, 14> kDTypes = {{
    {DType::kBool, "bool", "|b1", 1},
    {DType::kInt8, "int8", "|i1", 1},
    {DType::kInt16, "int16", "<i2", 2},
    {DType::kInt32, "int32", "<i4", 4},
    {DType::kInt64, "int64", "<i8", 8},
    {DType::kUInt8, "uint8", "|u1", 1},
    {DType::kUInt16, "uint16", "<u2", 2},
    {DType::kUInt32, "uint32", "<u4", 4},
    {DType::kUInt64, "uint64", "<u8", 8},
    {DType::kFloat16, "float16", "<f2", 2},
    {DType::kFloat32, "float32", "<f4", 4},
    {DType::kFloat64, "float64", "<f8", 8},
    {DType::kComplex64, "complex64", "<c8", 8},
    {DType::kComplex128, "complex128", "<c16", 16},
}};

const DTypeInfo& Info(DType t) { return kDTypes[static_cast<size_t>(t)]; }

constexpr std::string_view kMagic = "\x93NUMPY";
// The largest header (magic through '\n') accepted: what the header file promises callers need to
// read. NumPy itself refuses headers over 10000 characters unless told otherwise.
constexpr uint64_t kMaxHeaderBytes = 64 * 1024;
// NumPy 2's NPY_MAXDIMS (Debian's 1.24 allows 32). Bounds the canonical header far below 64 KiB.
constexpr size_t kMaxDims = 64;
// numpy/lib/format.py: ARRAY_ALIGN and GROWTH_AXIS_MAX_DIGITS.
constexpr size_t kArrayAlign = 64;
constexpr size_t kGrowthAxisMaxDigits = 21;

Status HeaderError(std::string_view what) {
  return InvalidArgument("npy header: " + std::string(what));
}

// A short printable excerpt of `s` for error messages.
std::string Excerpt(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 24)) {
    if (c >= 0x20 && c < 0x7f) {
      out += c;
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      const auto u = static_cast<unsigned char>(c);
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  if (s.size() > 24) out += "...";
  return out;
}

// The three values of the header dict, before validation.
struct HeaderFields {
  std::optional<std::string> descr;
  std::optional<bool> fortran_order;
  std::optional<std::vector<uint64_t>> shape;
};

// A strict parser for the dict literal NumPy writes: {'descr': '<f4', 'fortran_order': False,
// 'shape': (3, 4), } plus padding. It accepts the Python syntax NumPy's reader would accept for
// these three keys in any order (either quote style, any whitespace, optional trailing commas, the
// Python 2 'L' suffix on dimensions in versions 1.0 and 2.0), and refuses everything else Python
// would evaluate but NumPy never writes (expressions, comments, escapes, nested parentheses, True
// as a dimension, duplicate keys).
class HeaderDictParser {
 public:
  HeaderDictParser(std::string_view text, bool allow_long_suffix)
      : s_(text), allow_long_suffix_(allow_long_suffix) {}

  Result<HeaderFields> Parse() {
    HeaderFields f;
    SkipSpace();
    if (!Consume('{')) return Error("expected '{' starting the header dict");
    SkipSpace();
    while (!Consume('}')) {
      auto key = ParseString("a key");
      if (!key.ok()) return key.status();
      SkipSpace();
      if (!Consume(':')) return Error("expected ':' after key '" + *key + "'");
      SkipSpace();
      if (*key == "descr") {
        if (f.descr) return Error("duplicate key 'descr'");
        if (Peek() == '[' || Peek() == '(') {
          return Error("structured and subarray dtypes are not supported");
        }
        auto descr = ParseString("the descr string");
        if (!descr.ok()) return descr.status();
        f.descr = std::move(*descr);
      } else if (*key == "fortran_order") {
        if (f.fortran_order) return Error("duplicate key 'fortran_order'");
        if (ConsumeWord("True")) {
          f.fortran_order = true;
        } else if (ConsumeWord("False")) {
          f.fortran_order = false;
        } else {
          return Error("fortran_order must be True or False");
        }
      } else if (*key == "shape") {
        if (f.shape) return Error("duplicate key 'shape'");
        auto shape = ParseShape();
        if (!shape.ok()) return shape.status();
        f.shape = std::move(*shape);
      } else {
        return HeaderError("unknown key '" + Excerpt(*key) +
                           "' (a .npy header has exactly descr, fortran_order, shape)");
      }
      SkipSpace();
      if (Consume(',')) {
        SkipSpace();
      } else if (Peek() != '}') {
        return Error("expected ',' or '}' after the value of '" + *key + "'");
      }
    }
    SkipSpace();
    if (pos_ != s_.size()) return Error("unexpected text after the header dict");
    if (!f.descr) return HeaderError("missing key 'descr'");
    if (!f.fortran_order) return HeaderError("missing key 'fortran_order'");
    if (!f.shape) return HeaderError("missing key 'shape'");
    return f;
  }

 private:
  char Peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  bool Consume(char c) {
    if (pos_ >= s_.size() || s_[pos_] != c) return false;
    ++pos_;
    return true;
  }
  static bool IsSpace(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
  }
  static bool IsWordChar(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.';
  }
  void SkipSpace() {
    while (pos_ < s_.size() && IsSpace(s_[pos_])) ++pos_;
  }
  // `word` as a whole token (not the start of a longer name such as "Falsehood").
  bool ConsumeWord(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return false;
    const size_t end = pos_ + word.size();
    if (end < s_.size() && IsWordChar(s_[end])) return false;
    pos_ = end;
    return true;
  }
  Status Error(std::string_view what) const {
    return HeaderError(std::string(what) + " at byte " + std::to_string(pos_) + " of the dict: '" +
                       Excerpt(s_.substr(pos_)) + "'");
  }

  // A plain quoted string: no escapes, no prefixes, printable ASCII only.
  Result<std::string> ParseString(std::string_view what) {
    const char quote = Peek();
    if (quote != '\'' && quote != '"') return Error("expected " + std::string(what));
    const size_t start = ++pos_;
    while (pos_ < s_.size() && s_[pos_] != quote) {
      const char c = s_[pos_];
      if (c < 0x20 || c >= 0x7f || c == '\\') return Error("unsupported character in a string");
      ++pos_;
    }
    if (pos_ >= s_.size()) return Error("unterminated string");
    std::string value(s_.substr(start, pos_ - start));
    ++pos_;
    return value;
  }

  // A tuple of non-negative decimal integers: (), (5,), (3, 4), (3, 4,).
  Result<std::vector<uint64_t>> ParseShape() {
    if (!Consume('(')) return Error("shape must be a tuple");
    std::vector<uint64_t> dims;
    bool trailing_comma = false;
    SkipSpace();
    while (!Consume(')')) {
      if (dims.size() == kMaxDims) {
        return HeaderError("more than " + std::to_string(kMaxDims) + " dimensions");
      }
      auto dim = ParseDim();
      if (!dim.ok()) return dim.status();
      dims.push_back(*dim);
      SkipSpace();
      trailing_comma = Consume(',');
      SkipSpace();
      if (!trailing_comma && Peek() != ')') return Error("expected ',' or ')' in shape");
    }
    // "(5)" is the integer 5 in Python, not a tuple.
    if (dims.size() == 1 && !trailing_comma) return Error("shape (n) is not a tuple");
    return dims;
  }

  Result<uint64_t> ParseDim() {
    const size_t start = pos_;
    size_t end = pos_;
    if (end < s_.size() && (s_[end] == '-' || s_[end] == '+')) ++end;
    while (end < s_.size() && IsWordChar(s_[end])) ++end;
    const std::string_view token = s_.substr(start, end - start);
    if (token.empty()) return Error("expected a dimension");
    if (token[0] == '-') return Error("negative dimension " + Excerpt(token));
    std::string_view digits = token;
    if (allow_long_suffix_ && digits.size() > 1 && digits.back() == 'L') digits.remove_suffix(1);
    const bool all_digits =
        std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!all_digits) return Error("dimension " + Excerpt(token) + " is not a non-negative integer");
    if (digits.size() > 1 && digits[0] == '0') return Error("leading zero in dimension");
    uint64_t value = 0;
    for (char c : digits) {
      if (__builtin_mul_overflow(value, 10, &value) ||
          __builtin_add_overflow(value, static_cast<uint64_t>(c - '0'), &value)) {
        return Error("dimension " + Excerpt(token) + " does not fit in 64 bits");
      }
    }
    pos_ = end;
    return value;
  }

  std::string_view s_;
  size_t pos_ = 0;
  const bool allow_long_suffix_;
};

// descr as NumPy writes it: a byte-order character and one of our kinds and sizes.
Result<NpyHeader> ResolveDescr(std::string_view descr, NpyHeader header) {
  auto unsupported = [&] {
    return HeaderError("unsupported dtype '" + Excerpt(descr) +
                       "' (supported: bool, int8..int64, uint8..uint64, float16, float32, "
                       "float64, complex64, complex128)");
  };
  if (descr.size() < 2) return unsupported();
  const char order = descr[0];
  if (order != '<' && order != '>' && order != '|' && order != '=') return unsupported();
  const auto it = std::find_if(kDTypes.begin(), kDTypes.end(), [&](const DTypeInfo& info) {
    return info.descr.substr(1) == descr.substr(1);
  });
  if (it == kDTypes.end()) return unsupported();
  if (it->item_size > 1 && order != '<' && order != '>') {
    // NumPy always writes '<' or '>' for these; '|' or '=' would mean "this machine's order".
    return HeaderError("dtype '" + std::string(descr) + "' does not state its byte order");
  }
  header.spec.dtype = it->dtype;
  header.big_endian = it->item_size > 1 && order == '>';
  return header;
}

// Python's repr of a tuple of ints.
std::string ShapeRepr(const std::vector<uint64_t>& shape) {
  std::string text = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(shape[i]);
  }
  if (shape.size() == 1) text += ',';
  text += ')';
  return text;
}

// ---- Data conversion ----

// Copies one element of kItem bytes, reversing each kSwapUnit-byte group (kSwapUnit 1: no swap).
// A complex number swaps its real and imaginary halves separately.
template <size_t kItem, size_t kSwapUnit>
inline void CopyElement(const unsigned char* src, unsigned char* dst) {
  if constexpr (kSwapUnit == 1) {
    std::memcpy(dst, src, kItem);
  } else {
    for (size_t half = 0; half < kItem; half += kSwapUnit) {
      for (size_t b = 0; b < kSwapUnit; ++b) dst[half + b] = src[half + kSwapUnit - 1 - b];
    }
  }
}

template <size_t kItem, size_t kSwapUnit>
void SwapContiguous(const unsigned char* in, unsigned char* out, uint64_t count) {
  for (uint64_t i = 0; i < count; ++i) {
    CopyElement<kItem, kSwapUnit>(in + i * kItem, out + i * kItem);
  }
}

// Fortran order to C order for dims d[0..n) (n >= 2, all > 1): a reversal of all axes. Element
// (i0, ..., in-1) is at sum(ik * fs[k]) in the input (fs[k] = d0*...*dk-1) and at sum(ik * cs[k])
// in the output (cs[k] = dk+1*...*dn-1). Axis 0 is contiguous in the input and axis n-1 in the
// output, so each step over the middle axes transposes a d0 x dn-1 matrix, in square tiles that
// keep both the reads and the writes within a few cache lines. The middle axes advance with an
// odometer that updates both offsets by addition.
template <size_t kItem, size_t kSwapUnit>
void FortranToC(const std::vector<uint64_t>& d, const unsigned char* in, unsigned char* out) {
  const size_t n = d.size();
  std::vector<uint64_t> fs(n), cs(n);
  fs[0] = 1;
  for (size_t k = 1; k < n; ++k) fs[k] = fs[k - 1] * d[k - 1];
  cs[n - 1] = 1;
  for (size_t k = n - 1; k > 0; --k) cs[k - 1] = cs[k] * d[k];

  constexpr uint64_t kTile = std::max<uint64_t>(8, 256 / kItem);
  const uint64_t rows = d[0], cols = d[n - 1];
  const uint64_t in_col_stride = fs[n - 1], out_row_stride = cs[0];
  std::vector<uint64_t> index(n, 0);  // odometer over axes 1..n-2
  uint64_t in_base = 0, out_base = 0;
  while (true) {
    for (uint64_t r0 = 0; r0 < rows; r0 += kTile) {
      const uint64_t r1 = std::min(rows, r0 + kTile);
      for (uint64_t c0 = 0; c0 < cols; c0 += kTile) {
        const uint64_t c1 = std::min(cols, c0 + kTile);
        for (uint64_t r = r0; r < r1; ++r) {
          const unsigned char* src = in + (in_base + r + c0 * in_col_stride) * kItem;
          unsigned char* dst = out + (out_base + r * out_row_stride + c0) * kItem;
          for (uint64_t c = c0; c < c1; ++c) {
            CopyElement<kItem, kSwapUnit>(src, dst);
            src += in_col_stride * kItem;
            dst += kItem;
          }
        }
      }
    }
    size_t k = n - 2;
    for (; k >= 1; --k) {
      if (++index[k] < d[k]) {
        in_base += fs[k];
        out_base += cs[k];
        break;
      }
      index[k] = 0;
      in_base -= (d[k] - 1) * fs[k];
      out_base -= (d[k] - 1) * cs[k];
    }
    if (k == 0) return;
  }
}

template <size_t kItem, size_t kSwapUnit>
void Convert(const std::vector<uint64_t>& transpose_dims, uint64_t count, const unsigned char* in,
             unsigned char* out) {
  if (!transpose_dims.empty()) {
    FortranToC<kItem, kSwapUnit>(transpose_dims, in, out);
  } else if constexpr (kSwapUnit == 1) {
    std::memcpy(out, in, count * kItem);
  } else {
    SwapContiguous<kItem, kSwapUnit>(in, out, count);
  }
}

// The dimensions larger than 1: those alone decide the layout.
std::vector<uint64_t> NontrivialDims(const std::vector<uint64_t>& shape) {
  std::vector<uint64_t> dims;
  for (uint64_t d : shape) {
    if (d != 1) dims.push_back(d);
  }
  return dims;
}

}  // namespace

size_t ItemSize(DType t) { return Info(t).item_size; }

std::string_view DTypeName(DType t) { return Info(t).name; }

Result<DType> DTypeFromName(std::string_view name) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.name == name) return info.dtype;
  }
  return InvalidArgument("unknown dtype name '" + Excerpt(name) +
                         "' (expected bool, int8, int16, int32, int64, uint8, uint16, uint32, "
                         "uint64, float16, float32, float64, complex64 or complex128)");
}

std::string_view CanonicalDescr(DType t) { return Info(t).descr; }

uint64_t TensorSpec::ElementCount() const {
  uint64_t count = 1;
  for (uint64_t d : shape) count *= d;
  // A zero anywhere makes the product zero, even if a partial product wrapped.
  return std::find(shape.begin(), shape.end(), 0) != shape.end() ? 0 : count;
}

std::string TensorSpec::ShapeText() const { return ShapeRepr(shape); }

Result<NpyHeader> ParseNpyHeader(std::string_view prefix) {
  if (prefix.substr(0, kMagic.size()) != kMagic.substr(0, std::min(prefix.size(), kMagic.size()))) {
    return HeaderError("not a .npy file (bad magic: '" + Excerpt(prefix.substr(0, 6)) +
                       "', expected '\\x93NUMPY')");
  }
  if (prefix.size() < kMagic.size() + 2) {
    return HeaderError("truncated: " + std::to_string(prefix.size()) + " bytes");
  }
  const auto major = static_cast<unsigned char>(prefix[6]);
  const auto minor = static_cast<unsigned char>(prefix[7]);
  if (minor != 0 || major < 1 || major > 3) {
    return HeaderError("unsupported format version " + std::to_string(major) + "." +
                       std::to_string(minor) + " (1.0, 2.0 and 3.0 are read)");
  }
  // 1.0: uint16 header length; 2.0 and 3.0: uint32. All little-endian.
  const size_t length_bytes = major == 1 ? 2 : 4;
  const size_t prelude = kMagic.size() + 2 + length_bytes;
  if (prefix.size() < prelude) {
    return HeaderError("truncated: " + std::to_string(prefix.size()) + " bytes");
  }
  uint64_t header_len = 0;
  for (size_t i = 0; i < length_bytes; ++i) {
    header_len |= uint64_t{static_cast<unsigned char>(prefix[8 + i])} << (8 * i);
  }
  NpyHeader header;
  header.data_offset = prelude + header_len;
  if (header.data_offset > kMaxHeaderBytes) {
    return HeaderError("header of " + std::to_string(header.data_offset) +
                       " bytes exceeds the 64 KiB accepted");
  }
  if (header.data_offset > prefix.size()) {
    return HeaderError("truncated: header length " + std::to_string(header_len) +
                       " runs past the " + std::to_string(prefix.size()) + " bytes given");
  }
  // Python 2 wrote longs as "3L"; NumPy's reader drops the 'L' for versions 1.0 and 2.0.
  auto fields =
      HeaderDictParser(prefix.substr(prelude, header_len), /*allow_long_suffix=*/major < 3).Parse();
  if (!fields.ok()) return fields.status();

  header.fortran_order = *fields->fortran_order;
  header.spec.shape = std::move(*fields->shape);
  auto resolved = ResolveDescr(*fields->descr, std::move(header));
  if (!resolved.ok()) return resolved.status();
  // Like NumPy, the nonzero dimensions must give a byte size that fits in a signed 64-bit size
  // (so file offsets and ElementCount() * ItemSize() can never wrap), even when another is 0.
  uint64_t bytes = ItemSize(resolved->spec.dtype);
  for (uint64_t d : resolved->spec.shape) {
    if (d == 0) continue;
    if (__builtin_mul_overflow(bytes, d, &bytes) ||
        bytes > uint64_t{std::numeric_limits<int64_t>::max()}) {
      return HeaderError("shape " + resolved->spec.ShapeText() + " of " +
                         std::string(DTypeName(resolved->spec.dtype)) +
                         " has a byte size that overflows a signed 64-bit size");
    }
  }
  return resolved;
}

std::string CanonicalHeader(const TensorSpec& spec) {
  // numpy/lib/format.py, _write_array_header: the dict's keys sorted, each "'key': repr(value), ".
  std::string dict = "{'descr': '" + std::string(CanonicalDescr(spec.dtype)) +
                     "', 'fortran_order': False, 'shape': " + spec.ShapeText() + ", }";
  // Spaces so that the first axis can later grow to 21 digits in place (none for a 0-d array).
  if (!spec.shape.empty()) {
    const size_t digits = std::to_string(spec.shape[0]).size();
    if (digits < kGrowthAxisMaxDigits) dict.append(kGrowthAxisMaxDigits - digits, ' ');
  }
  // _wrap_header: hlen counts the final '\n'; padlen = ARRAY_ALIGN - (prelude + hlen) % ARRAY_ALIGN
  // lies in 1..64, so an already aligned length still gets a whole 64 bytes of spaces.
  // _wrap_header_guess_version falls back to 2.0 (uint32 length) when the length exceeds uint16;
  // that takes some 20000 dimensions, so for headers ParseNpyHeader accepts it is always 1.0.
  const size_t hlen = dict.size() + 1;
  size_t length_bytes = 2;
  size_t padlen = kArrayAlign - (kMagic.size() + 2 + length_bytes + hlen) % kArrayAlign;
  if (hlen + padlen > 0xffff) {
    length_bytes = 4;
    padlen = kArrayAlign - (kMagic.size() + 2 + length_bytes + hlen) % kArrayAlign;
  }
  const uint64_t stored_len = hlen + padlen;
  std::string out(kMagic);
  out += static_cast<char>(length_bytes == 2 ? 1 : 2);
  out += '\0';
  for (size_t i = 0; i < length_bytes; ++i)
    out += static_cast<char>((stored_len >> (8 * i)) & 0xff);
  out += dict;
  out.append(padlen, ' ');
  out += '\n';
  return out;
}

Status CheckDataSize(const NpyHeader& header, uint64_t file_size) {
  const uint64_t expected = header.spec.DataBytes();
  if (file_size < header.data_offset || file_size - header.data_offset != expected) {
    const uint64_t actual = file_size < header.data_offset ? 0 : file_size - header.data_offset;
    std::string message = "header says " + std::to_string(expected) + " data bytes, file has " +
                          std::to_string(actual);
    if (file_size < header.data_offset) {
      message += " (" + std::to_string(file_size) + " bytes is shorter than the " +
                 std::to_string(header.data_offset) + "-byte header)";
    }
    return InvalidArgument(message);
  }
  return Status::Ok();
}

void CanonicalizeData(const NpyHeader& header, const void* in_ptr, void* out_ptr) {
  const uint64_t count = header.spec.ElementCount();
  if (count == 0) return;
  const auto* in = static_cast<const unsigned char*>(in_ptr);
  auto* out = static_cast<unsigned char*>(out_ptr);
  std::vector<uint64_t> transpose_dims;
  if (header.fortran_order) {
    transpose_dims = NontrivialDims(header.spec.shape);
    if (transpose_dims.size() < 2) transpose_dims.clear();  // the same bytes in either order
  }
  const bool swap = header.big_endian;
  switch (ItemSize(header.spec.dtype)) {
    case 1:
      return Convert<1, 1>(transpose_dims, count, in, out);
    case 2:
      return swap ? Convert<2, 2>(transpose_dims, count, in, out)
                  : Convert<2, 1>(transpose_dims, count, in, out);
    case 4:
      return swap ? Convert<4, 4>(transpose_dims, count, in, out)
                  : Convert<4, 1>(transpose_dims, count, in, out);
    case 8:
      if (!swap) return Convert<8, 1>(transpose_dims, count, in, out);
      return header.spec.dtype == DType::kComplex64 ? Convert<8, 4>(transpose_dims, count, in, out)
                                                    : Convert<8, 8>(transpose_dims, count, in, out);
    case 16:  // complex128: two float64
      return swap ? Convert<16, 8>(transpose_dims, count, in, out)
                  : Convert<16, 1>(transpose_dims, count, in, out);
  }
}

bool DataIsCanonical(const NpyHeader& header) {
  if (header.spec.ElementCount() == 0) return true;  // no bytes to convert
  if (header.big_endian && ItemSize(header.spec.dtype) > 1) return false;
  return !header.fortran_order || NontrivialDims(header.spec.shape).size() <= 1;
}

}  // namespace modelfs::weights
