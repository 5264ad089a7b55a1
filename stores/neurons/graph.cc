#include "stores/neurons/graph.h"

#include <errno.h>
#include <openssl/evp.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include <array>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <future>
#include <limits>
#include <memory>
#include <random>
#include <utility>

// RapidJSON 1.1.0 predates C++20; only its SAX reader is used (no document.h, whose operators
// clash with C++20's rewritten comparisons). Its headers come from a system include directory, so
// their own warnings stay quiet.
#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>

#include "stores/common/names.h"

namespace modelfs::neurons {
namespace {

// ---------------------------------------------------------------------------------------------
// Small text helpers


std::string Quoted(std::string_view s) {
  std::string out = "\"";
  out.append(s);
  out += '"';
  return out;
}

// ---------------------------------------------------------------------------------------------
// Calendar arithmetic (proleptic Gregorian, days since 1970-01-01): H. Hinnant's algorithms, exact
// for every int64 day count that matters here.

int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

void CivilFromDays(int64_t z, int64_t* y, unsigned* m, unsigned* d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = static_cast<int64_t>(yoe) + era * 400 + (*m <= 2);
}

bool IsLeapYear(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

unsigned DaysInMonth(int64_t y, unsigned m) {
  static constexpr unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && IsLeapYear(y) ? 29 : kDays[m - 1];
}

void AppendDigits(uint64_t v, int width, std::string* out) {
  char buf[24];
  int n = 0;
  do {
    buf[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  for (int i = n; i < width; ++i) out->push_back('0');
  while (n > 0) out->push_back(buf[--n]);
}

// ---------------------------------------------------------------------------------------------
// Python-compatible JSON output

// Per ASCII byte: 0 = copy as is, else the letter after the backslash ('u' = \u00XX).
constexpr std::array<char, 128> MakeEscapeTable() {
  std::array<char, 128> t{};
  for (int c = 0; c < 0x20; ++c) t[c] = 'u';
  t[0x7f] = 'u';  // json's ESCAPE_ASCII is [^ -~]: DEL is escaped too
  t['"'] = '"';
  t['\\'] = '\\';
  t['\n'] = 'n';
  t['\r'] = 'r';
  t['\t'] = 't';
  t['\b'] = 'b';
  t['\f'] = 'f';
  return t;
}
constexpr std::array<char, 128> kEscape = MakeEscapeTable();
constexpr char kHexDigits[] = "0123456789abcdef";

void AppendU16Escape(uint32_t unit, std::string* out) {
  char buf[6] = {'\\',
                 'u',
                 kHexDigits[(unit >> 12) & 0xf],
                 kHexDigits[(unit >> 8) & 0xf],
                 kHexDigits[(unit >> 4) & 0xf],
                 kHexDigits[unit & 0xf]};
  out->append(buf, 6);
}

// Decodes one UTF-8 sequence at s[i..n); returns its length, or 0 when it is not well-formed
// (overlong, surrogate, beyond U+10FFFF, truncated).
size_t DecodeUtf8(const unsigned char* s, size_t i, size_t n, uint32_t* cp) {
  const unsigned char c = s[i];
  size_t len;
  uint32_t min;
  if (c >= 0xf0 && c <= 0xf4) {
    len = 4, min = 0x10000, *cp = c & 0x07;
  } else if (c >= 0xe0) {
    if (c > 0xef) return 0;
    len = 3, min = 0x800, *cp = c & 0x0f;
  } else if (c >= 0xc2) {
    len = 2, min = 0x80, *cp = c & 0x1f;
  } else {
    return 0;
  }
  if (n - i < len) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((s[i + k] & 0xc0) != 0x80) return 0;
    *cp = (*cp << 6) | (s[i + k] & 0x3f);
  }
  if (*cp < min || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff)) return 0;
  return len;
}

// json.dumps(s) with ensure_ascii. Text that is not UTF-8 (which ParseJson never produces, but a
// caller's std::string could hold) is written as U+FFFD per bad byte, as Python's
// bytes.decode(errors="replace") would show it, instead of emitting invalid JSON.
void AppendPyString(std::string_view sv, std::string* out) {
  const auto* s = reinterpret_cast<const unsigned char*>(sv.data());
  const size_t n = sv.size();
  out->push_back('"');
  size_t run = 0;  // start of the pending run of bytes copied as they are
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80 && kEscape[c] == 0) {
      ++i;
      continue;
    }
    out->append(sv.data() + run, i - run);
    if (c < 0x80) {
      const char e = kEscape[c];
      if (e == 'u') {
        AppendU16Escape(c, out);
      } else {
        const char buf[2] = {'\\', e};
        out->append(buf, 2);
      }
      ++i;
    } else {
      uint32_t cp = 0;
      const size_t len = DecodeUtf8(s, i, n, &cp);
      if (len == 0) {
        AppendU16Escape(0xfffd, out);
        ++i;
      } else {
        if (cp >= 0x10000) {
          cp -= 0x10000;
          AppendU16Escape(0xd800 + (cp >> 10), out);
          AppendU16Escape(0xdc00 + (cp & 0x3ff), out);
        } else {
          AppendU16Escape(cp, out);
        }
        i += len;
      }
    }
    run = i;
  }
  out->append(sv.data() + run, n - run);
  out->push_back('"');
}

// repr() of a finite double into buf (at least 32 bytes); returns the length. CPython's repr uses
// the shortest digits that round-trip (dtoa mode 0), which is what std::to_chars without a
// precision gives; only the layout differs: decimal notation when the decimal point position
// decpt (value = 0.DIGITS * 10**decpt) is in (-4, 16], with ".0" when there is no fraction,
// otherwise D[.DDD]e(+|-)XX.
size_t FiniteFloatRepr(double d, char* buf) {
  char sci[32];
  const char* end = std::to_chars(sci, sci + sizeof(sci), d, std::chars_format::scientific).ptr;
  // sci is [-]D[.DDD]e(+|-)XX[X]: the exponent has two or three digits.
  const char* e = end[-4] == 'e' ? end - 4 : end - 5;
  int exp10 = (e[2] - '0') * 10 + (e[3] - '0');
  if (e + 5 == end) exp10 = exp10 * 10 + (e[4] - '0');
  if (e[1] == '-') exp10 = -exp10;
  const char* m = sci;
  char* o = buf;
  if (*m == '-') *o++ = *m++;
  // Mantissa digits: m[0], then m[2..e) when there is a '.'.
  const char* rest = m + 2;
  const int nrest = e - m > 1 ? static_cast<int>(e - rest) : 0;
  const int decpt = exp10 + 1;
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) {
      std::memcpy(o, "0.000", 2 - decpt);
      o += 2 - decpt;
      *o++ = m[0];
      std::memcpy(o, rest, nrest);
      o += nrest;
    } else if (decpt <= nrest) {
      *o++ = m[0];
      std::memcpy(o, rest, decpt - 1);
      o += decpt - 1;
      *o++ = '.';
      std::memcpy(o, rest + decpt - 1, nrest - (decpt - 1));
      o += nrest - (decpt - 1);
    } else {
      *o++ = m[0];
      std::memcpy(o, rest, nrest);
      o += nrest;
      std::memset(o, '0', decpt - 1 - nrest);
      o += decpt - 1 - nrest;
      *o++ = '.';
      *o++ = '0';
    }
  } else {
    // Python's layout is C's %e with the shortest digits: the same as sci.
    std::memcpy(o, m, end - m);
    o += end - m;
  }
  return static_cast<size_t>(o - buf);
}

void AppendJsonFloat(double d, std::string* out) {
  if (std::isnan(d)) {
    out->append("NaN");
  } else if (std::isinf(d)) {
    out->append(d > 0 ? "Infinity" : "-Infinity");
  } else {
    char buf[40];
    out->append(buf, FiniteFloatRepr(d, buf));
  }
}

template <typename Int>
void AppendInt(Int v, std::string* out) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  out->append(buf, r.ptr);
}

void AppendNewline(int indent, int level, std::string* out) {
  out->push_back('\n');
  out->append(static_cast<size_t>(indent) * level, ' ');
}

void Dump(const Json& v, int indent, int level, std::string* out) {
  switch (v.type()) {
    case Json::value_t::null:
      out->append("null");
      return;
    case Json::value_t::boolean:
      out->append(v.get<bool>() ? "true" : "false");
      return;
    case Json::value_t::number_integer:
      AppendInt(v.get<int64_t>(), out);
      return;
    case Json::value_t::number_unsigned:
      AppendInt(v.get<uint64_t>(), out);
      return;
    case Json::value_t::number_float:
      AppendJsonFloat(v.get_ref<const Json::number_float_t&>(), out);
      return;
    case Json::value_t::string:
      AppendPyString(v.get_ref<const std::string&>(), out);
      return;
    case Json::value_t::array: {
      const auto& a = v.get_ref<const Json::array_t&>();
      if (a.empty()) {
        out->append("[]");
        return;
      }
      out->push_back('[');
      bool first = true;
      for (const Json& e : a) {
        if (indent >= 0) {
          if (!first) out->push_back(',');
          AppendNewline(indent, level + 1, out);
        } else if (!first) {
          out->append(", ");
        }
        first = false;
        if (e.is_number_float()) {
          AppendJsonFloat(e.get_ref<const Json::number_float_t&>(), out);  // vectors: the hot path
        } else {
          Dump(e, indent, level + 1, out);
        }
      }
      if (indent >= 0) AppendNewline(indent, level, out);
      out->push_back(']');
      return;
    }
    case Json::value_t::object: {
      const auto& o = v.get_ref<const Json::object_t&>();
      if (o.empty()) {
        out->append("{}");
        return;
      }
      out->push_back('{');
      bool first = true;
      for (const auto& [key, e] : o) {
        if (indent >= 0) {
          if (!first) out->push_back(',');
          AppendNewline(indent, level + 1, out);
        } else if (!first) {
          out->append(", ");
        }
        first = false;
        AppendPyString(key, out);
        out->append(": ");
        Dump(e, indent, level + 1, out);
      }
      if (indent >= 0) AppendNewline(indent, level, out);
      out->push_back('}');
      return;
    }
    case Json::value_t::binary:
    case Json::value_t::discarded:
      // Neither comes out of ParseJson or the document functions; Python has no such value.
      out->append("null");
      return;
  }
}

// ---------------------------------------------------------------------------------------------
// JSON input: RapidJSON's SAX reader builds an nlohmann DOM.

constexpr unsigned kReaderFlags =
    rapidjson::kParseNanAndInfFlag | rapidjson::kParseValidateEncodingFlag |
    rapidjson::kParseIterativeFlag | rapidjson::kParseNumbersAsStringsFlag;
constexpr size_t kMaxJsonDepth = 512;

// RapidJSON hands number text over (kParseNumbersAsStringsFlag) so that ints stay ints of any
// 64-bit size and floats are correctly rounded (its own fast double path is not). Returns an error
// message, empty on success. One difference from Python stays: a literal beyond the double range
// (1e400, which float() reads as inf) is refused by RapidJSON's scanner before it gets here;
// json.dumps never writes one (it writes Infinity).
std::string ConvertNumber(const char* s, size_t len, Json* v) {
  const std::string_view text(s, len);
  // Python's json accepts exactly these three spellings; RapidJSON also takes Inf, -Inf and -NaN.
  if (text == "NaN") {
    *v = std::numeric_limits<double>::quiet_NaN();
    return {};
  }
  if (text == "Infinity" || text == "-Infinity") {
    *v = text[0] == '-' ? -std::numeric_limits<double>::infinity()
                        : std::numeric_limits<double>::infinity();
    return {};
  }
  // One pass over the text (string_view::find_first_of calls memchr per character).
  bool integer = true;
  for (char c : text) {
    if (c == '.' || c == 'e' || c == 'E') {
      integer = false;
    } else if (c == 'N' || c == 'I') {
      return "invalid number " + std::string(text) + " (Python reads NaN, Infinity, -Infinity)";
    }
  }
  if (integer) {
    if (text[0] == '-') {
      int64_t i = 0;
      const auto r = std::from_chars(s, s + len, i);
      if (r.ec != std::errc() || r.ptr != s + len)
        return "integer out of range: " + std::string(text);
      *v = i;
    } else {
      uint64_t u = 0;
      const auto r = std::from_chars(s, s + len, u);
      if (r.ec != std::errc() || r.ptr != s + len)
        return "integer out of range: " + std::string(text);
      *v = u;
    }
    return {};
  }
  double d = 0.0;
  const auto r = std::from_chars(s, s + len, d);
  if (r.ec == std::errc::result_out_of_range) {
    // Underflow to zero or a subnormal edge: strtod gives the correctly rounded value that
    // Python's float() gives.
    d = std::strtod(std::string(text).c_str(), nullptr);
  } else if (r.ec != std::errc() || r.ptr != s + len) {
    return "invalid number " + std::string(text);
  }
  *v = d;
  return {};
}

// True when s holds an encoded UTF-16 surrogate (ED A0..BF): RapidJSON encodes a lone low
// surrogate escape (\udc00) that way, and Python strings with lone surrogates cannot be stored as
// UTF-8 anywhere else in modelfs.
bool HasEncodedSurrogate(const char* s, size_t len) {
  const void* p = s;
  size_t left = len;
  while ((p = std::memchr(p, 0xed, left)) != nullptr) {
    const char* q = static_cast<const char*>(p);
    const size_t at = static_cast<size_t>(q - s);
    if (at + 1 < len && static_cast<unsigned char>(q[1]) >= 0xa0) return true;
    p = q + 1;
    left = len - at - 1;
  }
  return false;
}

// Builds one JSON value from SAX events. Done() once the value is complete. On a handler error it
// returns false with error() set, which stops the reader.
class DomBuilder {
 public:
  explicit DomBuilder(size_t max_depth) : max_depth_(max_depth) {}

  bool Null() { return Add(Json(nullptr)); }
  bool Bool(bool b) { return Add(Json(b)); }
  // With kParseNumbersAsStringsFlag numbers come as RawNumber only; the typed callbacks are
  // required by the handler concept.
  bool Int(int i) { return Add(Json(static_cast<int64_t>(i))); }
  bool Uint(unsigned u) { return Add(Json(static_cast<uint64_t>(u))); }
  bool Int64(int64_t i) { return Add(Json(i)); }
  bool Uint64(uint64_t u) { return Add(Json(u)); }
  bool Double(double d) { return Add(Json(d)); }
  bool RawNumber(const char* s, rapidjson::SizeType len, bool) {
    Json v;
    error_ = ConvertNumber(s, len, &v);
    return error_.empty() && Add(std::move(v));
  }
  bool String(const char* s, rapidjson::SizeType len, bool) {
    if (HasEncodedSurrogate(s, len)) {
      error_ = "lone UTF-16 surrogate in a string";
      return false;
    }
    return Add(Json(std::string(s, len)));
  }
  bool Key(const char* s, rapidjson::SizeType len, bool) {
    if (HasEncodedSurrogate(s, len)) {
      error_ = "lone UTF-16 surrogate in a key";
      return false;
    }
    key_.assign(s, len);
    return true;
  }
  bool StartObject() { return Open(Json::object()); }
  bool StartArray() { return Open(Json::array()); }
  bool EndObject(rapidjson::SizeType) { return Close(); }
  bool EndArray(rapidjson::SizeType) { return Close(); }

  bool Done() const { return done_; }
  size_t depth() const { return stack_.size(); }
  const std::string& error() const { return error_; }
  Json& root() { return root_; }
  // Ready for the next value.
  void Reset() {
    root_ = Json();
    stack_.clear();
    done_ = false;
  }

 private:
  Json* Insert(Json v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    Json* top = stack_.back();
    if (top->is_array()) {
      auto& a = top->get_ref<Json::array_t&>();
      a.push_back(std::move(v));
      return &a.back();
    }
    // operator[] replaces an earlier duplicate key, as Python's dict does.
    Json& slot = top->get_ref<Json::object_t&>()[std::move(key_)];
    slot = std::move(v);
    return &slot;
  }
  bool Add(Json v) {
    Insert(std::move(v));
    if (stack_.empty()) done_ = true;
    return true;
  }
  bool Open(Json container) {
    if (stack_.size() >= max_depth_) {
      error_ = "nesting deeper than " + std::to_string(kMaxJsonDepth) + " levels";
      return false;
    }
    stack_.push_back(Insert(std::move(container)));
    return true;
  }
  bool Close() {
    stack_.pop_back();
    if (stack_.empty()) done_ = true;
    return true;
  }

  const size_t max_depth_;
  Json root_;
  // Containers being filled, outermost first. Pointers stay valid: only the innermost container
  // grows while they are held (a vector's elements move only when it grows).
  std::vector<Json*> stack_;
  std::string key_;
  bool done_ = false;
  std::string error_;
};

std::string ReaderError(const rapidjson::ParseResult& r, const std::string& handler_error) {
  std::string what = r.Code() == rapidjson::kParseErrorTermination && !handler_error.empty()
                         ? handler_error
                         : std::string(rapidjson::GetParseError_En(r.Code()));
  return "at byte " + std::to_string(r.Offset()) + ": " + what;
}

// ---------------------------------------------------------------------------------------------
// Document fields

Status ParseIsoParts(std::string_view text, int64_t* secs_out, int64_t* micros_out);

class FieldReader {
 public:
  explicit FieldReader(std::string_view kind) : kind_(kind) {}

  Status Bad(std::string_view field, std::string_view expected) const {
    return InvalidArgument(std::string(kind_) + " field " + Quoted(field) + ": expected " +
                           std::string(expected));
  }
  Result<double> Number(std::string_view field, const Json& v) const {
    if (!v.is_number()) return Bad(field, "a number");
    return v.get<double>();
  }
  Result<int64_t> Int(std::string_view field, const Json& v) const {
    if (v.is_number_unsigned()) {
      if (v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Bad(field, "an integer within 64 bits");
      }
      return static_cast<int64_t>(v.get<uint64_t>());
    }
    if (!v.is_number_integer()) return Bad(field, "an integer");
    return v.get<int64_t>();
  }
  Result<std::optional<std::string>> OptString(std::string_view field, const Json& v) const {
    if (v.is_null()) return std::optional<std::string>();
    if (!v.is_string()) return Bad(field, "a string or null");
    return std::optional<std::string>(v.get<std::string>());
  }
  Result<std::optional<double>> OptNumber(std::string_view field, const Json& v) const {
    if (v.is_null()) return std::optional<double>();
    if (!v.is_number()) return Bad(field, "a number or null");
    return std::optional<double>(v.get<double>());
  }
  // null/absent -> "", else an ISO-8601 text kept as written.
  Result<std::string> Time(std::string_view field, const Json& v) const {
    if (v.is_null()) return std::string();
    if (!v.is_string()) return Bad(field, "an ISO-8601 time string or null");
    const std::string& s = v.get_ref<const std::string&>();
    // Any year Python's datetime takes (datetime.min included), not only the years of int64 ns.
    int64_t secs, micros;
    if (!ParseIsoParts(s, &secs, &micros).ok())
      return Bad(field, "an ISO-8601 time, not " + Quoted(s));
    return s;
  }
  Result<Json> ObjectOrEmpty(std::string_view field, const Json& v) const {
    if (v.is_null()) return Json::object();
    if (!v.is_object()) return Bad(field, "an object or null");
    return v;
  }
  Result<std::string> Uuid(std::string_view field, const Json& v) const {
    if (!v.is_string()) return Bad(field, "a UUID string");
    const std::string& s = v.get_ref<const std::string&>();
    RETURN_IF_ERROR(ValidateUuid(std::string(kind_) + " field " + Quoted(field), s));
    return s;
  }

 private:
  std::string_view kind_;
};

const Json* Find(const Json& doc, std::string_view key) {
  const auto& o = doc.get_ref<const Json::object_t&>();
  const auto it = o.find(key);
  return it == o.end() ? nullptr : &it->second;
}

const Json kNull;

const Json& FieldOr(const Json& doc, std::string_view key, const Json& fallback) {
  const Json* v = Find(doc, key);
  return v != nullptr ? *v : fallback;
}

Json FloatOrNull(const std::optional<double>& d) { return d ? Json(*d) : Json(nullptr); }
Json StringOrNull(const std::optional<std::string>& s) { return s ? Json(*s) : Json(nullptr); }
Json TimeOrNull(const std::string& t) { return t.empty() ? Json(nullptr) : Json(t); }

constexpr std::string_view kBaseFields[] = {"id",         "type",       "position",
                                            "vector",     "metadata",   "activation_level",
                                            "created_at", "modified_at"};
constexpr std::string_view kKnowledgeFields[] = {"source_data", "compression_ratio",
                                                 "semantic_tags"};
constexpr std::string_view kToolFields[] = {
    "function_signature", "executable_code",        "input_schema",        "output_schema",
    "execution_count",    "average_execution_time", "activation_threshold"};

template <size_t N>
bool In(const std::string_view (&list)[N], std::string_view key) {
  for (std::string_view k : list) {
    if (k == key) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Writing files

Status WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("export: write", errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

std::string HexDigest(EVP_MD_CTX* ctx) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  std::string hex;
  hex.reserve(2 * len);
  for (unsigned i = 0; i < len; ++i) {
    hex.push_back(kHexDigits[md[i] >> 4]);
    hex.push_back(kHexDigits[md[i] & 0xf]);
  }
  return hex;
}

struct EvpCtxDeleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using EvpCtx = std::unique_ptr<EVP_MD_CTX, EvpCtxDeleter>;

EvpCtx NewSha256() {
  EvpCtx ctx(EVP_MD_CTX_new());
  if (ctx) EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  return ctx;
}

// Rendered entity texts, one after another; ends[i] is where entity i's text stops.
struct RenderedBatch {
  std::string text;
  std::vector<size_t> ends;
};

template <typename Entity, typename ToDoc>
void Render(const Entity* begin, const Entity* end, ToDoc to_doc, RenderedBatch* r) {
  r->text.clear();
  r->ends.clear();
  for (const Entity* e = begin; e != end; ++e) {
    PyJsonDump(to_doc(*e), &r->text);
    r->ends.push_back(r->text.size());
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Identifiers and times

Status ValidateUuid(std::string_view what, std::string_view id) {
  // Branch-free over the 36 bytes (a bulk save checks three ids per synapse): each byte's class
  // against the class its position needs, OR-ed together.
  static constexpr auto kClass = [] {
    std::array<uint8_t, 256> t{};  // 0: neither, 1: lowercase hex, 2: '-'
    for (int c = '0'; c <= '9'; ++c) t[c] = 1;
    for (int c = 'a'; c <= 'f'; ++c) t[c] = 1;
    t['-'] = 2;
    return t;
  }();
  static constexpr char kShape[] = "111111112111121111211112111111111111";
  bool ok = id.size() == 36;
  if (ok) {
    unsigned bad = 0;
    for (size_t i = 0; i < 36; ++i) {
      bad |= kClass[static_cast<unsigned char>(id[i])] ^ static_cast<unsigned>(kShape[i] - '0');
    }
    ok = bad == 0;
  }
  if (ok) return Status::Ok();
  return InvalidArgument(QuoteName(what, id) +
                         " is not a canonical UUID (36 lowercase characters, 8-4-4-4-12)");
}

std::string NewUuid() {
  // Batches of kernel randomness: one getrandom(2) per 256 UUIDs rather than one per UUID.
  thread_local unsigned char pool[4096];
  thread_local size_t used = sizeof(pool);
  thread_local pid_t owner = 0;
  // A forked child (the daemon forks at mount) must not hand out its parent's remaining UUIDs.
  const pid_t pid = getpid();
  if (used + 16 > sizeof(pool) || pid != owner) {
    owner = pid;
    size_t got = 0;
    while (got < sizeof(pool)) {
      const ssize_t n = getrandom(pool + got, sizeof(pool) - got, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        // No getrandom (very old kernel, seccomp): std::random_device still reads the kernel's
        // entropy another way.
        std::random_device rd;
        for (; got < sizeof(pool); ++got) pool[got] = static_cast<unsigned char>(rd());
        break;
      }
      got += static_cast<size_t>(n);
    }
    used = 0;
  }
  unsigned char b[16];
  std::memcpy(b, pool + used, 16);
  std::memset(pool + used, 0, 16);  // a UUID's randomness is not reused, even by accident
  used += 16;
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
  std::string s;
  s.reserve(36);
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s.push_back('-');
    s.push_back(kHexDigits[b[i] >> 4]);
    s.push_back(kHexDigits[b[i] & 0xf]);
  }
  return s;
}

std::string FormatIsoTime(int64_t ns) {
  // Python's datetime keeps microseconds; floor, so that times before 1970 round down as
  // ns // 1000 does.
  int64_t us = ns / 1000;
  if (ns % 1000 < 0) --us;
  int64_t days = us / 86400000000;
  int64_t rem = us % 86400000000;
  if (rem < 0) {
    rem += 86400000000;
    --days;
  }
  int64_t y;
  unsigned m, d;
  CivilFromDays(days, &y, &m, &d);
  const int64_t secs = rem / 1000000;
  const int64_t frac = rem % 1000000;
  std::string s;
  s.reserve(26);
  if (y < 0) s.push_back('-');
  AppendDigits(static_cast<uint64_t>(y < 0 ? -y : y), 4, &s);
  s.push_back('-');
  AppendDigits(m, 2, &s);
  s.push_back('-');
  AppendDigits(d, 2, &s);
  s.push_back('T');
  AppendDigits(static_cast<uint64_t>(secs / 3600), 2, &s);
  s.push_back(':');
  AppendDigits(static_cast<uint64_t>(secs / 60 % 60), 2, &s);
  s.push_back(':');
  AppendDigits(static_cast<uint64_t>(secs % 60), 2, &s);
  if (frac != 0) {
    s.push_back('.');
    AppendDigits(static_cast<uint64_t>(frac), 6, &s);
  }
  return s;
}

std::string NowIsoTime() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return FormatIsoTime(static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec);
}

namespace {

// Seconds since the epoch (UTC) and microseconds of an ISO-8601 text, for any year 1..9999 as
// Python's datetime allows.
Status ParseIsoParts(std::string_view text, int64_t* secs_out, int64_t* micros_out) {
  const auto bad = [&] {
    return InvalidArgument(QuoteName("time", text) +
                           " is not ISO-8601 (YYYY-MM-DD[THH:MM[:SS[.ffffff]]][Z|+HH:MM])");
  };
  size_t i = 0;
  // Reads exactly n digits.
  const auto digits = [&](size_t n, int64_t* v) {
    if (text.size() - i < n) return false;
    int64_t x = 0;
    for (size_t k = 0; k < n; ++k) {
      const char c = text[i + k];
      if (c < '0' || c > '9') return false;
      x = x * 10 + (c - '0');
    }
    i += n;
    *v = x;
    return true;
  };
  const auto literal = [&](char c) {
    if (i < text.size() && text[i] == c) {
      ++i;
      return true;
    }
    return false;
  };
  int64_t year, month, day, hour = 0, minute = 0, second = 0, micros = 0;
  if (!digits(4, &year) || !literal('-') || !digits(2, &month) || !literal('-') ||
      !digits(2, &day)) {
    return bad();
  }
  if (year < 1 || month < 1 || month > 12 || day < 1 ||
      day > DaysInMonth(year, static_cast<unsigned>(month))) {
    return bad();
  }
  int64_t offset_s = 0;
  if (i < text.size()) {
    if (!literal('T') && !literal(' ')) return bad();
    if (!digits(2, &hour) || !literal(':') || !digits(2, &minute)) return bad();
    if (literal(':')) {
      if (!digits(2, &second)) return bad();
      if (literal('.')) {
        size_t n = 0;
        while (i < text.size() && text[i] >= '0' && text[i] <= '9' && n < 6) {
          micros = micros * 10 + (text[i] - '0');
          ++i, ++n;
        }
        if (n == 0 || (i < text.size() && text[i] >= '0' && text[i] <= '9')) return bad();
        for (; n < 6; ++n) micros *= 10;
      }
    }
    if (hour > 23 || minute > 59 || second > 59) return bad();
    if (literal('Z')) {
      // UTC, as a naive time.
    } else if (i < text.size() && (text[i] == '+' || text[i] == '-')) {
      const bool minus = text[i] == '-';
      ++i;
      int64_t oh, om, os = 0;
      if (!digits(2, &oh) || !literal(':') || !digits(2, &om)) return bad();
      if (literal(':') && !digits(2, &os)) return bad();
      if (oh > 23 || om > 59 || os > 59) return bad();
      offset_s = (oh * 3600 + om * 60 + os) * (minus ? -1 : 1);
    }
    if (i != text.size()) return bad();
  }
  const int64_t days =
      DaysFromCivil(year, static_cast<unsigned>(month), static_cast<unsigned>(day));
  *secs_out = days * 86400 + hour * 3600 + minute * 60 + second - offset_s;
  *micros_out = micros;
  return Status::Ok();
}

}  // namespace

Result<int64_t> ParseIsoTime(std::string_view text) {
  int64_t secs, micros;
  RETURN_IF_ERROR(ParseIsoParts(text, &secs, &micros));
  // int64 nanoseconds span 1677-09-21 to 2262-04-11.
  constexpr int64_t kMaxSecs = std::numeric_limits<int64_t>::max() / 1000000000 - 1;
  if (secs > kMaxSecs || secs < -kMaxSecs) {
    return InvalidArgument(QuoteName("time", text) + " is outside the years 1678..2261");
  }
  return secs * 1000000000 + micros * 1000;
}

// ---------------------------------------------------------------------------------------------
// Python-compatible JSON text

void PyJsonDump(const Json& v, std::string* out, int indent) { Dump(v, indent, 0, out); }

void PyFloatRepr(double d, std::string* out) {
  if (std::isnan(d)) {
    out->append("nan");
  } else if (std::isinf(d)) {
    out->append(d > 0 ? "inf" : "-inf");
  } else {
    char buf[40];
    out->append(buf, FiniteFloatRepr(d, buf));
  }
}

Result<Json> ParseJson(std::string_view text) {
  rapidjson::MemoryStream is(text.data(), text.size());
  DomBuilder builder(kMaxJsonDepth);
  rapidjson::Reader reader;
  const rapidjson::ParseResult r = reader.Parse<kReaderFlags>(is, builder);
  if (r.IsError()) return InvalidArgument("JSON " + ReaderError(r, builder.error()));
  // MemoryStream reads a NUL byte as its end: one after the value is trailing data too.
  if (is.Tell() != text.size()) {
    return InvalidArgument(
        "JSON at byte " + std::to_string(is.Tell()) + ": " +
        rapidjson::GetParseError_En(rapidjson::kParseErrorDocumentRootNotSingular));
  }
  return std::move(builder.root());
}

// ---------------------------------------------------------------------------------------------
// Documents

Json NeuronToDocument(const Neuron& n, bool with_vector) {
  Json doc = Json::object();
  auto& o = doc.get_ref<Json::object_t&>();
  o["id"] = n.id;
  o["type"] = n.type;
  o["position"] = Json::object({{"x", n.position.x}, {"y", n.position.y}, {"z", n.position.z}});
  if (with_vector) {
    if (n.vector.empty()) {
      o["vector"] = nullptr;
    } else {
      Json::array_t a;
      a.reserve(n.vector.size());
      for (float f : n.vector) a.emplace_back(static_cast<double>(f));
      o["vector"] = std::move(a);
    }
  }
  o["metadata"] = n.metadata.is_null() ? Json::object() : n.metadata;
  o["activation_level"] = n.activation_level;
  o["created_at"] = TimeOrNull(n.created_at);
  o["modified_at"] = TimeOrNull(n.modified_at);
  if (n.type == "knowledge") {
    o["source_data"] = StringOrNull(n.source_data);
    o["compression_ratio"] = FloatOrNull(n.compression_ratio);
    o["semantic_tags"] = n.semantic_tags.is_null() ? Json::array() : n.semantic_tags;
    const Json* importance = n.extra.is_object() ? Find(n.extra, "importance") : nullptr;
    o["importance"] = importance != nullptr ? *importance : Json(0.5);
  } else if (n.type == "tool") {
    o["function_signature"] = StringOrNull(n.function_signature);
    o["executable_code"] = StringOrNull(n.executable_code);
    o["input_schema"] = n.input_schema.is_null() ? Json::object() : n.input_schema;
    o["output_schema"] = n.output_schema.is_null() ? Json::object() : n.output_schema;
    o["execution_count"] = n.execution_count;
    o["average_execution_time"] = n.average_execution_time;
    o["activation_threshold"] = n.activation_threshold;
  }
  if (n.extra.is_object()) {
    for (const auto& [key, value] : n.extra.get_ref<const Json::object_t&>()) {
      o.emplace(key, value);  // never overrides a field set above
    }
  }
  return doc;
}

Json SynapseToDocument(const Synapse& s) {
  Json doc = Json::object();
  auto& o = doc.get_ref<Json::object_t&>();
  o["id"] = s.id;
  o["source_neuron_id"] = s.source_neuron_id;
  o["target_neuron_id"] = s.target_neuron_id;
  o["weight"] = s.weight;
  o["usage_count"] = s.usage_count;
  o["last_traversed"] = StringOrNull(s.last_traversed);
  o["synapse_type"] = s.synapse_type;
  o["metadata"] = s.metadata.is_null() ? Json::object() : s.metadata;
  o["created_at"] = TimeOrNull(s.created_at);
  o["modified_at"] = TimeOrNull(s.modified_at);
  return doc;
}

Status NeuronFromDocument(const Json& doc, Neuron* n) {
  const FieldReader f("neuron");
  if (!doc.is_object()) return InvalidArgument("neuron document: expected a JSON object");
  // Everything not in the document takes from_dict()'s default; only id, type and vector carry
  // over from *n.
  Neuron out;
  out.id = n->id;
  out.type = n->type;
  out.vector = n->vector;
  out.vector_dim = n->vector_dim;
  out.vector_hash = n->vector_hash;

  if (const Json* v = Find(doc, "id")) {
    ASSIGN_OR_RETURN(out.id, f.Uuid("id", *v));
  }
  if (const Json* v = Find(doc, "type")) {
    if (!v->is_string()) return f.Bad("type", "a string");
    out.type = v->get<std::string>();
  } else if (out.type.empty()) {
    return InvalidArgument("neuron document: no \"type\"");
  }
  RETURN_IF_ERROR(ValidatePlainName("neuron type", out.type));

  if (const Json* v = Find(doc, "position")) {
    if (!v->is_object()) return f.Bad("position", "an object {\"x\", \"y\", \"z\"}");
    for (const auto& [key, value] : v->get_ref<const Json::object_t&>()) {
      (void)value;
      if (key != "x" && key != "y" && key != "z") {
        return f.Bad("position", "only the keys x, y and z, not " + Quoted(key));
      }
    }
    double* const axes[] = {&out.position.x, &out.position.y, &out.position.z};
    const char* const names[] = {"position.x", "position.y", "position.z"};
    for (int a = 0; a < 3; ++a) {
      const Json* c = Find(*v, std::string_view(names[a] + 9));
      if (c == nullptr) return f.Bad(names[a], "a number (it is missing)");
      ASSIGN_OR_RETURN(*axes[a], f.Number(names[a], *c));
    }
  }
  if (const Json* v = Find(doc, "vector")) {
    out.vector.clear();
    if (!v->is_null()) {
      if (!v->is_array()) return f.Bad("vector", "a list of numbers or null");
      const auto& a = v->get_ref<const Json::array_t&>();
      out.vector.reserve(a.size());
      for (size_t i = 0; i < a.size(); ++i) {
        if (!a[i].is_number()) return f.Bad("vector[" + std::to_string(i) + "]", "a number");
        out.vector.push_back(static_cast<float>(a[i].get<double>()));
      }
    }
    out.vector_dim = static_cast<uint32_t>(out.vector.size());
    out.vector_hash =
        out.vector.empty() ? 0 : XXH3_64bits(out.vector.data(), out.vector.size() * sizeof(float));
  }
  ASSIGN_OR_RETURN(out.metadata, f.ObjectOrEmpty("metadata", FieldOr(doc, "metadata", kNull)));
  if (const Json* v = Find(doc, "activation_level")) {
    ASSIGN_OR_RETURN(out.activation_level, f.Number("activation_level", *v));
  }
  ASSIGN_OR_RETURN(out.created_at, f.Time("created_at", FieldOr(doc, "created_at", kNull)));
  ASSIGN_OR_RETURN(out.modified_at, f.Time("modified_at", FieldOr(doc, "modified_at", kNull)));

  const bool knowledge = out.type == "knowledge";
  const bool tool = out.type == "tool";
  if (knowledge) {
    static const Json kEmptyString = "";
    static const Json kZero = 0.0;
    ASSIGN_OR_RETURN(out.source_data,
                     f.OptString("source_data", FieldOr(doc, "source_data", kEmptyString)));
    ASSIGN_OR_RETURN(out.compression_ratio,
                     f.OptNumber("compression_ratio", FieldOr(doc, "compression_ratio", kZero)));
    const Json& tags = FieldOr(doc, "semantic_tags", kNull);
    if (!tags.is_null() && !tags.is_array()) return f.Bad("semantic_tags", "a list or null");
    out.semantic_tags = tags.is_null() ? Json::array() : tags;
  } else if (tool) {
    static const Json kEmptyString = "";
    ASSIGN_OR_RETURN(
        out.function_signature,
        f.OptString("function_signature", FieldOr(doc, "function_signature", kEmptyString)));
    ASSIGN_OR_RETURN(out.executable_code,
                     f.OptString("executable_code", FieldOr(doc, "executable_code", kEmptyString)));
    ASSIGN_OR_RETURN(out.input_schema,
                     f.ObjectOrEmpty("input_schema", FieldOr(doc, "input_schema", kNull)));
    ASSIGN_OR_RETURN(out.output_schema,
                     f.ObjectOrEmpty("output_schema", FieldOr(doc, "output_schema", kNull)));
    if (const Json* v = Find(doc, "execution_count")) {
      ASSIGN_OR_RETURN(out.execution_count, f.Int("execution_count", *v));
    }
    if (const Json* v = Find(doc, "average_execution_time")) {
      ASSIGN_OR_RETURN(out.average_execution_time, f.Number("average_execution_time", *v));
    }
    if (const Json* v = Find(doc, "activation_threshold")) {
      ASSIGN_OR_RETURN(out.activation_threshold, f.Number("activation_threshold", *v));
    }
  }
  auto& extra = out.extra.get_ref<Json::object_t&>();
  for (const auto& [key, value] : doc.get_ref<const Json::object_t&>()) {
    if (In(kBaseFields, key) || (knowledge && In(kKnowledgeFields, key)) ||
        (tool && In(kToolFields, key))) {
      continue;
    }
    if (knowledge && key == "importance") {
      // The original's KnowledgeNeuron.importance is a float (or None).
      ASSIGN_OR_RETURN(std::optional<double> importance, f.OptNumber("importance", value));
      // 0.5 is what NeuronToDocument writes for none, so it needs no entry: a neuron read from
      // its own document equals the neuron.
      if (importance != 0.5) extra.emplace(key, FloatOrNull(importance));
      continue;
    }
    extra.emplace(key, value);
  }
  *n = std::move(out);
  return Status::Ok();
}

Status SynapseFromDocument(const Json& doc, Synapse* s) {
  const FieldReader f("synapse");
  if (!doc.is_object()) return InvalidArgument("synapse document: expected a JSON object");
  static constexpr std::string_view kFields[] = {
      "id",          "source_neuron_id", "target_neuron_id", "weight",
      "usage_count", "last_traversed",   "synapse_type",     "metadata",
      "created_at",  "modified_at"};
  for (const auto& [key, value] : doc.get_ref<const Json::object_t&>()) {
    (void)value;
    if (!In(kFields, key)) {
      return InvalidArgument("synapse document: unknown field " + Quoted(key) +
                             " (a synapse has only the original's fields)");
    }
  }
  Synapse out;
  out.id = s->id;
  if (const Json* v = Find(doc, "id")) {
    ASSIGN_OR_RETURN(out.id, f.Uuid("id", *v));
  }
  for (const auto& [name, field] : {std::pair{"source_neuron_id", &out.source_neuron_id},
                                    std::pair{"target_neuron_id", &out.target_neuron_id}}) {
    const Json* v = Find(doc, name);
    if (v == nullptr) return f.Bad(name, "a UUID string (it is missing)");
    ASSIGN_OR_RETURN(*field, f.Uuid(name, *v));
  }
  if (const Json* v = Find(doc, "weight")) {
    ASSIGN_OR_RETURN(out.weight, f.Number("weight", *v));
    if (!std::isfinite(out.weight) || out.weight < -1.0 || out.weight > 1.0) {
      return f.Bad("weight", "a number in [-1, 1]");
    }
  }
  if (const Json* v = Find(doc, "usage_count")) {
    ASSIGN_OR_RETURN(out.usage_count, f.Int("usage_count", *v));
    if (out.usage_count < 0) return f.Bad("usage_count", "an integer >= 0");
  }
  if (const Json* v = Find(doc, "last_traversed"); v != nullptr && !v->is_null()) {
    ASSIGN_OR_RETURN(std::string t, f.Time("last_traversed", *v));
    out.last_traversed = std::move(t);
  }
  if (const Json* v = Find(doc, "synapse_type")) {
    if (!v->is_string()) return f.Bad("synapse_type", "a string");
    out.synapse_type = v->get<std::string>();
    bool known = false;
    for (std::string_view t : kSynapseTypes) known = known || t == out.synapse_type;
    if (!known) return f.Bad("synapse_type", "knowledge, tool_input or tool_output");
  }
  ASSIGN_OR_RETURN(out.metadata, f.ObjectOrEmpty("metadata", FieldOr(doc, "metadata", kNull)));
  ASSIGN_OR_RETURN(out.created_at, f.Time("created_at", FieldOr(doc, "created_at", kNull)));
  ASSIGN_OR_RETURN(out.modified_at, f.Time("modified_at", FieldOr(doc, "modified_at", kNull)));
  *s = std::move(out);
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// ExportWriter

namespace {
constexpr size_t kWriteBufferBytes = 1 << 20;
// Below this many neurons a batch is rendered on the calling thread: a thread costs ~20 us.
constexpr size_t kParallelRenderMin = 16;
}  // namespace

struct ExportWriter::Impl {
  enum class Phase { kNew, kNeurons, kSynapses, kFinished, kFailed };

  int fd;
  std::string export_time;
  Phase phase = Phase::kNew;
  uint64_t neurons = 0;
  uint64_t synapses = 0;
  uint64_t bytes = 0;
  EvpCtx sha;
  std::string buffer;  // file bytes not yet written
  RenderedBatch first_half, second_half;

  Status Flush() {
    Status st = WriteAll(fd, buffer.data(), buffer.size());
    bytes += buffer.size();
    buffer.clear();
    if (!st.ok()) phase = Phase::kFailed;
    return st;
  }
  Status MaybeFlush() { return buffer.size() >= kWriteBufferBytes ? Flush() : Status::Ok(); }
  // Appends the same bytes to the file and to the checksummed text.
  void Both(std::string_view file, std::string_view hash) {
    buffer.append(file);
    EVP_DigestUpdate(sha.get(), hash.data(), hash.size());
  }
  // Adds rendered entities: file "[\n" a ",\n" b ..., checksum "[" a ", " b ...
  Status Emit(const RenderedBatch& r, uint64_t* count) {
    size_t start = 0;
    for (size_t end : r.ends) {
      const std::string_view text(r.text.data() + start, end - start);
      if (*count == 0) {
        buffer.push_back('\n');
      } else {
        buffer.append(",\n");
        EVP_DigestUpdate(sha.get(), ", ", 2);
      }
      Both(text, text);
      ++*count;
      start = end;
      RETURN_IF_ERROR(MaybeFlush());
    }
    return Status::Ok();
  }
  void CloseArray(uint64_t count) { buffer.append(count == 0 ? "]" : "\n]"); }
  Status Check(Phase want_at_most, const char* what) {
    if (phase == Phase::kFailed)
      return InvalidArgument(std::string("export: ") + what + " after a failure");
    if (phase == Phase::kNew || phase > want_at_most) {
      return InvalidArgument(std::string("export: ") + what +
                             " out of order (Begin, neurons, synapses, Finish)");
    }
    return Status::Ok();
  }
  void StartSynapses() {
    CloseArray(neurons);
    buffer.append(", \"synapses\": [");
    EVP_DigestUpdate(sha.get(), "], \"synapses\": [", 16);
    phase = Phase::kSynapses;
  }
};

ExportWriter::ExportWriter(int fd, std::string export_time) : impl_(new Impl) {
  impl_->fd = fd;
  impl_->export_time = std::move(export_time);
}

ExportWriter::~ExportWriter() { delete impl_; }

Status ExportWriter::Begin() {
  Impl& m = *impl_;
  if (m.phase != Impl::Phase::kNew) return InvalidArgument("export: Begin called twice");
  m.sha = NewSha256();
  if (!m.sha) return IOError("export: cannot create an OpenSSL SHA-256 context");
  m.buffer.reserve(kWriteBufferBytes + (kWriteBufferBytes >> 2));
  m.buffer.append("{\"version\": 1, \"export_time\": ");
  AppendPyString(m.export_time, &m.buffer);
  m.buffer.append(", \"neurons\": [");
  EVP_DigestUpdate(m.sha.get(), "{\"neurons\": [", 13);
  m.phase = Impl::Phase::kNeurons;
  return Status::Ok();
}

Status ExportWriter::AddNeurons(const std::vector<Neuron>& batch) {
  Impl& m = *impl_;
  RETURN_IF_ERROR(m.Check(Impl::Phase::kNeurons, "AddNeurons"));
  const auto to_doc = [](const Neuron& n) { return NeuronToDocument(n, /*with_vector=*/true); };
  const Neuron* begin = batch.data();
  const Neuron* end = begin + batch.size();
  if (batch.size() < kParallelRenderMin) {
    Render(begin, end, to_doc, &m.first_half);
    return m.Emit(m.first_half, &m.neurons);
  }
  // Two halves on two threads; the calling thread then hashes and writes the first half while
  // the other may still render the second.
  const Neuron* mid = begin + batch.size() / 2;
  // async|deferred: rendered inline at wait() when no thread can be started.
  std::future<void> second = std::async(std::launch::async | std::launch::deferred,
                                        [&] { Render(mid, end, to_doc, &m.second_half); });
  Render(begin, mid, to_doc, &m.first_half);
  Status st = m.Emit(m.first_half, &m.neurons);
  second.wait();
  RETURN_IF_ERROR(st);
  return m.Emit(m.second_half, &m.neurons);
}

Status ExportWriter::AddSynapses(const std::vector<Synapse>& batch) {
  Impl& m = *impl_;
  RETURN_IF_ERROR(m.Check(Impl::Phase::kSynapses, "AddSynapses"));
  if (m.phase == Impl::Phase::kNeurons) m.StartSynapses();
  Render(batch.data(), batch.data() + batch.size(), SynapseToDocument, &m.first_half);
  return m.Emit(m.first_half, &m.synapses);
}

Result<ExportCounts> ExportWriter::Finish() {
  Impl& m = *impl_;
  RETURN_IF_ERROR(m.Check(Impl::Phase::kSynapses, "Finish"));
  if (m.phase == Impl::Phase::kNeurons) m.StartSynapses();
  m.CloseArray(m.synapses);
  EVP_DigestUpdate(m.sha.get(), "]}", 2);
  ExportCounts counts;
  counts.neurons = m.neurons;
  counts.synapses = m.synapses;
  counts.checksum = HexDigest(m.sha.get());
  m.buffer.append(", \"stats\": {\"neurons_loaded\": ");
  AppendInt(m.neurons, &m.buffer);
  m.buffer.append(", \"synapses_loaded\": ");
  AppendInt(m.synapses, &m.buffer);
  m.buffer.append("}, \"checksum\": \"");
  m.buffer.append(counts.checksum);
  m.buffer.append("\"}\n");
  RETURN_IF_ERROR(m.Flush());
  m.phase = Impl::Phase::kFinished;
  counts.bytes = m.bytes;
  return counts;
}

// ---------------------------------------------------------------------------------------------
// ReadExport

namespace {

// RapidJSON input stream over read(2), buffered; reads as a NUL at the end (RapidJSON's
// convention) and remembers a read error.
class FdReadStream {
 public:
  typedef char Ch;
  explicit FdReadStream(int fd) : fd_(fd), buffer_(kBufferBytes) {
    current_ = last_ = buffer_.data();
    *current_ = '\0';
    Fill();
  }
  Ch Peek() const { return *current_; }
  Ch Take() {
    const Ch c = *current_;
    if (current_ < last_) {
      ++current_;
    } else if (!eof_) {
      Fill();
    }
    return c;
  }
  size_t Tell() const { return consumed_ + static_cast<size_t>(current_ - buffer_.data()); }
  bool AtEnd() const { return eof_ && current_ == last_ && Tell() == total_; }
  uint64_t total() const { return total_; }
  int read_errno() const { return errno_; }

  Ch* PutBegin() { return nullptr; }
  void Put(Ch) {}
  void Flush() {}
  size_t PutEnd(Ch*) { return 0; }

 private:
  static constexpr size_t kBufferBytes = 1 << 16;
  void Fill() {
    consumed_ = total_;
    ssize_t n;
    do {
      n = ::read(fd_, buffer_.data(), buffer_.size());
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
      if (n < 0) errno_ = errno;
      eof_ = true;
      buffer_[0] = '\0';
      current_ = last_ = buffer_.data();
      return;
    }
    total_ += static_cast<uint64_t>(n);
    current_ = buffer_.data();
    last_ = current_ + n - 1;
  }

  const int fd_;
  std::vector<Ch> buffer_;
  Ch* current_;
  Ch* last_;             // last valid byte (the NUL sentinel at the end of input)
  size_t consumed_ = 0;  // bytes before buffer_[0]
  uint64_t total_ = 0;
  bool eof_ = false;
  int errno_ = 0;
};

struct ParsedEntity {
  Json doc;
  uint64_t index;   // in its array
  uint64_t offset;  // of the file, just after it
};

struct Converted {
  std::vector<Neuron> neurons;
  std::vector<Synapse> synapses;
  Status status;
};

// Adds the canonical text of each entity to the checksum and converts it. Stops at the first
// invalid entity.
Converted ConvertBatch(int array, std::vector<ParsedEntity> batch, EVP_MD_CTX* sha) {
  Converted out;
  const char* kind = array == 0 ? "neuron" : "synapse";
  if (array == 0) {
    out.neurons.reserve(batch.size());
  } else {
    out.synapses.reserve(batch.size());
  }
  std::string text;
  for (ParsedEntity& e : batch) {
    text.clear();
    if (e.index != 0) text.append(", ");
    PyJsonDump(e.doc, &text);
    EVP_DigestUpdate(sha, text.data(), text.size());
    const auto fail = [&](const std::string& why) {
      out.status = InvalidArgument("export at byte " + std::to_string(e.offset) + ": " + kind +
                                   " #" + std::to_string(e.index) + ": " + why);
      return std::move(out);
    };
    if (!e.doc.is_object()) return fail("not a JSON object");
    if (Find(e.doc, "id") == nullptr) return fail("no \"id\"");
    Status st;
    if (array == 0) {
      st = NeuronFromDocument(e.doc, &out.neurons.emplace_back());
    } else {
      st = SynapseFromDocument(e.doc, &out.synapses.emplace_back());
    }
    if (!st.ok()) return fail(st.message());
  }
  return out;
}

// Routes the events of the export's top-level object: entity arrays element by element into a
// DomBuilder, "checksum" remembered, everything else skipped.
class ExportHandler {
 public:
  ExportHandler(const ImportCallbacks& callbacks, const FdReadStream& is)
      : callbacks_(callbacks), is_(is), element_(kMaxJsonDepth - 2), sha_(NewSha256()) {}

  bool Null() {
    return Scalar([&](DomBuilder& b) { return b.Null(); });
  }
  bool Bool(bool v) {
    return Scalar([&](DomBuilder& b) { return b.Bool(v); });
  }
  bool Int(int v) {
    return Scalar([&](DomBuilder& b) { return b.Int(v); });
  }
  bool Uint(unsigned v) {
    return Scalar([&](DomBuilder& b) { return b.Uint(v); });
  }
  bool Int64(int64_t v) {
    return Scalar([&](DomBuilder& b) { return b.Int64(v); });
  }
  bool Uint64(uint64_t v) {
    return Scalar([&](DomBuilder& b) { return b.Uint64(v); });
  }
  bool Double(double v) {
    return Scalar([&](DomBuilder& b) { return b.Double(v); });
  }
  bool RawNumber(const char* s, rapidjson::SizeType n, bool c) {
    return Scalar([&](DomBuilder& b) { return b.RawNumber(s, n, c); });
  }
  bool String(const char* s, rapidjson::SizeType n, bool c) {
    if (state_ == State::kChecksum) {
      checksum_.assign(s, n);
      has_checksum_ = true;
      state_ = State::kTopKey;
      return true;
    }
    return Scalar([&](DomBuilder& b) { return b.String(s, n, c); });
  }
  bool Key(const char* s, rapidjson::SizeType n, bool c) {
    switch (state_) {
      case State::kTopKey:
        return TopKey(std::string_view(s, n));
      case State::kElement:
        return Forward(element_.Key(s, n, c));
      default:  // kSkip: keys of skipped objects
        return true;
    }
  }
  bool StartObject() {
    return Open([&](DomBuilder& b) { return b.StartObject(); }, true);
  }
  bool StartArray() {
    return Open([&](DomBuilder& b) { return b.StartArray(); }, false);
  }
  bool EndObject(rapidjson::SizeType n) {
    if (state_ == State::kTopKey) {
      state_ = State::kDone;
      return true;
    }
    return Close([&](DomBuilder& b) { return b.EndObject(n); });
  }
  bool EndArray(rapidjson::SizeType n) {
    if (state_ == State::kInArray) return EndEntityArray();
    return Close([&](DomBuilder& b) { return b.EndArray(n); });
  }

  // After a successful parse.
  Status Finish(bool allow_unverified, ExportCounts* counts) {
    if (!status_.ok()) return status_;
    if (!seen_neurons_) return InvalidArgument("export: no \"neurons\" list");
    if (!seen_synapses_) return InvalidArgument("export: no \"synapses\" list");
    counts->neurons = counts_[0];
    counts->synapses = counts_[1];
    counts->checksum = HexDigest(sha_.get());
    if (!has_checksum_) {
      if (allow_unverified) return Status::Ok();
      return InvalidArgument("export: no \"checksum\" (the file cannot be verified)");
    }
    if (checksum_ != counts->checksum) {
      return InvalidArgument("export checksum mismatch: file says " + checksum_ +
                             ", content hashes to " + counts->checksum);
    }
    return Status::Ok();
  }
  const Status& status() const { return status_; }
  const std::string& builder_error() const { return element_.error(); }

 private:
  enum class State { kStart, kTopKey, kExpectArray, kInArray, kElement, kChecksum, kSkip, kDone };

  bool Fail(Status st) {
    status_ = std::move(st);
    return false;
  }
  bool Fail(const std::string& what) {
    return Fail(InvalidArgument("export at byte " + std::to_string(is_.Tell()) + ": " + what));
  }
  std::string EntityName() const {
    return std::string(array_ == 0 ? "neuron" : "synapse") + " #" + std::to_string(counts_[array_]);
  }
  // An error of the element builder (number, surrogate, depth).
  bool Forward(bool ok) {
    if (!ok) return Fail(EntityName() + ": " + element_.error());
    return true;
  }

  bool TopKey(std::string_view key) {
    if (key == "neurons" || key == "synapses") {
      const int which = key == "neurons" ? 0 : 1;
      if ((which == 0 ? seen_neurons_ : seen_synapses_))
        return Fail("duplicate key \"" + std::string(key) + "\"");
      if (which == 1 && !seen_neurons_) return Fail("\"synapses\" before \"neurons\"");
      array_ = which;
      state_ = State::kExpectArray;
    } else if (key == "checksum") {
      state_ = State::kChecksum;
    } else {
      state_ = State::kSkip;
      skip_depth_ = 0;
    }
    return true;
  }

  template <typename Event>
  bool Scalar(Event event) {
    switch (state_) {
      case State::kInArray:
        state_ = State::kElement;
        element_.Reset();
        [[fallthrough]];
      case State::kElement:
        if (!Forward(event(element_))) return false;
        return element_.Done() ? EndElement() : true;
      case State::kSkip:
        if (skip_depth_ == 0) state_ = State::kTopKey;
        return true;
      case State::kStart:
        return Fail("an export is a JSON object");
      case State::kChecksum:
        return Fail("\"checksum\" is not a string");
      case State::kExpectArray:
        return Fail(Quoted(array_ == 0 ? "neurons" : "synapses") + " is not a list");
      default:
        return Fail("unexpected value");
    }
  }
  template <typename Event>
  bool Open(Event event, bool object) {
    switch (state_) {
      case State::kStart:
        if (!object) return Fail("an export is a JSON object");
        state_ = State::kTopKey;
        return true;
      case State::kExpectArray:
        if (object) return Fail(Quoted(array_ == 0 ? "neurons" : "synapses") + " is not a list");
        return StartEntityArray();
      case State::kInArray:
        state_ = State::kElement;
        element_.Reset();
        [[fallthrough]];
      case State::kElement:
        return Forward(event(element_));
      case State::kSkip:
        // The top-level object is one level already.
        if (++skip_depth_ >= kMaxJsonDepth) return Fail("nesting deeper than 512 levels");
        return true;
      case State::kChecksum:
        return Fail("\"checksum\" is not a string");
      default:
        return Fail("unexpected value");
    }
  }
  template <typename Event>
  bool Close(Event event) {
    switch (state_) {
      case State::kElement:
        if (!Forward(event(element_))) return false;
        return element_.Done() ? EndElement() : true;
      case State::kSkip:
        if (--skip_depth_ == 0) state_ = State::kTopKey;
        return true;
      default:
        return Fail("unexpected end of a container");
    }
  }

  bool StartEntityArray() {
    (array_ == 0 ? seen_neurons_ : seen_synapses_) = true;
    if (array_ == 0) {
      EVP_DigestUpdate(sha_.get(), "{\"neurons\": [", 13);
    } else {
      EVP_DigestUpdate(sha_.get(), "], \"synapses\": [", 16);
    }
    state_ = State::kInArray;
    return true;
  }
  bool EndEntityArray() {
    state_ = State::kTopKey;
    // The array's last entities are hashed before its closing text.
    if (!Dispatch() || !Collect()) return false;
    if (array_ == 1) EVP_DigestUpdate(sha_.get(), "]}", 2);
    return true;
  }

  bool EndElement() {
    state_ = State::kInArray;
    pending_.push_back({std::move(element_.root()), counts_[array_], is_.Tell()});
    ++counts_[array_];
    if (pending_.size() >= kBatch || is_.Tell() - pending_start_ >= kBatchBytes) return Dispatch();
    return true;
  }

  // Hands the pending entities to a worker that hashes and converts them, after taking the
  // previous worker's results: one batch in flight, so the hash sees the entities in file order.
  bool Dispatch() {
    if (pending_.empty()) return true;
    if (!Collect()) return false;
    // async|deferred: runs inline (at Collect) when no thread can be started.
    inflight_ = std::async(std::launch::async | std::launch::deferred, ConvertBatch, array_,
                           std::move(pending_), sha_.get());
    pending_ = {};
    pending_.reserve(kBatch);
    pending_start_ = is_.Tell();
    return true;
  }
  // Waits for the batch in flight and hands its entities to the callbacks, on this thread (the
  // caller's transaction lives here).
  bool Collect() {
    if (!inflight_.valid()) return true;
    Converted c = inflight_.get();
    if (!c.status.ok()) return Fail(std::move(c.status));
    Status st;
    if (!c.neurons.empty() && callbacks_.neurons) st = callbacks_.neurons(std::move(c.neurons));
    if (st.ok() && !c.synapses.empty() && callbacks_.synapses)
      st = callbacks_.synapses(std::move(c.synapses));
    if (!st.ok()) return Fail(std::move(st));
    return true;
  }

  static constexpr size_t kBatch = 1024;
  // Also dispatched after this many bytes of file, so that long vectors keep memory bounded.
  static constexpr uint64_t kBatchBytes = 4 << 20;
  const ImportCallbacks& callbacks_;
  const FdReadStream& is_;
  State state_ = State::kStart;
  int array_ = 0;  // 0 neurons, 1 synapses
  bool seen_neurons_ = false, seen_synapses_ = false;
  size_t skip_depth_ = 0;
  uint64_t counts_[2] = {0, 0};  // entities parsed per array
  DomBuilder element_;
  EvpCtx sha_;
  std::string checksum_;
  bool has_checksum_ = false;
  std::vector<ParsedEntity> pending_;
  uint64_t pending_start_ = 0;
  Status status_;
  // Declared last: destroyed (waited for) first, before sha_ that it uses.
  std::future<Converted> inflight_;
};

}  // namespace

Result<ExportCounts> ReadExport(int fd, const ImportCallbacks& callbacks, bool allow_unverified) {
  FdReadStream is(fd);
  ExportHandler handler(callbacks, is);
  rapidjson::Reader reader;
  const rapidjson::ParseResult r = reader.Parse<kReaderFlags>(is, handler);
  if (is.read_errno() != 0) return ErrnoError("export: read", is.read_errno());
  if (r.IsError()) {
    if (!handler.status().ok()) return handler.status();
    return InvalidArgument("export: malformed JSON " + ReaderError(r, handler.builder_error()));
  }
  if (!is.AtEnd()) {
    return InvalidArgument("export at byte " + std::to_string(is.Tell()) +
                           ": data after the JSON object");
  }
  ExportCounts counts;
  RETURN_IF_ERROR(handler.Finish(allow_unverified, &counts));
  counts.bytes = is.total();
  return counts;
}

}  // namespace modelfs::neurons
