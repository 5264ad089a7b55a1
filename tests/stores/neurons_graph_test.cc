// Tests of the neuron graph's entities and Python-compatible JSON (stores/neurons/graph.h).
//
// Differential against Debian's CPython (/usr/bin/python3): float repr, json.dumps/json.loads,
// datetime, and the original system's export and checksum code, run literally.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "stores/common/file_util.h"
#include "stores/neurons/graph.h"
#include "tests/stores/run_python.h"
#include "tests/stores/temp_dir.h"

namespace modelfs::neurons {
namespace {

using ::modelfs::testing::TempDir;

using ::modelfs::testing::RunPython;

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t end = s.find(sep, start);
    if (end == std::string::npos) {
      parts.push_back(s.substr(start));
      return parts;
    }
    parts.push_back(s.substr(start, end - start));
    start = end + 1;
  }
}

std::string Dump(const Json& v, int indent = -1) {
  std::string s;
  PyJsonDump(v, &s, indent);
  return s;
}

std::string Repr(double d) {
  std::string s;
  PyFloatRepr(d, &s);
  return s;
}

std::string Hex64(uint64_t v) {
  char buf[17];
  snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

Json MustParse(std::string_view text) {
  Result<Json> r = ParseJson(text);
  EXPECT_TRUE(r.ok()) << r.status().ToString() << "\n" << text.substr(0, 200);
  return r.ok() ? *r : Json();
}

// ---------------------------------------------------------------------------------------------
// Identifiers and times

TEST(Uuid, Validate) {
  EXPECT_TRUE(ValidateUuid("id", "123e4567-e89b-42d3-a456-426614174000").ok());
  for (const char* bad :
       {"", "123e4567-e89b-42d3-a456-42661417400", "123e4567-e89b-42d3-a456-4266141740000",
        "123E4567-e89b-42d3-a456-426614174000", "123e4567e89b-42d3-a456-4266141740000",
        "123e4567-e89b-42d3-a456_426614174000", "g23e4567-e89b-42d3-a456-426614174000",
        "{23e4567-e89b-42d3-a456-42661417400}"}) {
    Status st = ValidateUuid("neuron id", bad);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(st.message().find("neuron id"), std::string::npos) << st.message();
  }
}

TEST(Uuid, NewIsVersion4CanonicalAndUnique) {
  std::set<std::string> seen;
  for (int i = 0; i < 5000; ++i) {
    const std::string u = NewUuid();
    ASSERT_TRUE(ValidateUuid("uuid", u).ok()) << u;
    EXPECT_EQ(u[14], '4') << u;
    EXPECT_NE(std::string("89ab").find(u[19]), std::string::npos) << u;
    EXPECT_TRUE(seen.insert(u).second) << u;
  }
}

TEST(Uuid, PythonAcceptsOursAsVersion4) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  std::string ids;
  for (int i = 0; i < 200; ++i) ids += NewUuid() + "\n";
  ASSERT_OK(WriteStringToFile(dir.Sub("ids"), ids));
  const std::string out = RunPython(dir, R"PY(
import sys, uuid
for line in open(sys.argv[1]):
    s = line.strip()
    u = uuid.UUID(s)
    assert u.version == 4 and u.variant == uuid.RFC_4122 and str(u) == s, s
print("ok")
)PY",
                                    {dir.Sub("ids")});
  EXPECT_EQ(out, "ok\n");
}

TEST(IsoTime, FormatMatchesPython) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  std::mt19937_64 rng(7);
  std::vector<int64_t> values = {0,
                                 1,
                                 -1,
                                 999,
                                 1000,
                                 -1000,
                                 -1001,
                                 1000000000,
                                 -1000000000,
                                 1735787045000000000,
                                 1735787045123456000,
                                 1735787045123456789,
                                 951782400000000000 /* 2000-02-29 */,
                                 std::numeric_limits<int64_t>::max(),
                                 std::numeric_limits<int64_t>::min()};
  for (int i = 0; i < 20000; ++i) {
    int64_t v = static_cast<int64_t>(rng());
    switch (i % 4) {
      case 0:
        break;  // anything in int64 (1677..2262)
      case 1:
        v = v / 1000000000 * 1000000000;
        break;  // whole seconds: no fraction printed
      case 2:
        v = v / 1000 * 1000;
        break;  // whole microseconds
      case 3:
        v = (v % 4000000000000000000);
        break;  // 1843..2096
    }
    values.push_back(v);
  }
  std::string in, expected;
  for (int64_t v : values) {
    in += std::to_string(v) + "\n";
    expected += FormatIsoTime(v) + "\n";
  }
  ASSERT_OK(WriteStringToFile(dir.Sub("ns"), in));
  const std::string out = RunPython(dir, R"PY(
import sys, datetime
epoch = datetime.datetime(1970, 1, 1)
print("".join((epoch + datetime.timedelta(microseconds=int(l) // 1000)).isoformat() + "\n"
              for l in open(sys.argv[1])), end="")
)PY",
                                    {dir.Sub("ns")});
  const auto want = Split(out, '\n'), got = Split(expected, '\n');
  ASSERT_EQ(want.size(), got.size());
  int failures = 0;
  for (size_t i = 0; i < want.size() && failures < 10; ++i) {
    if (want[i] != got[i]) {
      ADD_FAILURE() << values[i] << ": python " << want[i] << ", ours " << got[i];
      ++failures;
    }
  }
}

TEST(IsoTime, ParseMatchesPythonFromisoformat) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  std::vector<std::string> texts = {"2025-01-02T03:04:05",
                                    "2025-01-02T03:04:05.123456",
                                    "2025-01-02T03:04:05.5",
                                    "2025-01-02 03:04:05",
                                    "2025-01-02T03:04:05+02:00",
                                    "2025-01-02T03:04:05Z",
                                    "2025-01-02T03:04:05.000001-05:30",
                                    "2025-01-02",
                                    "2025-01-02T03:04",
                                    "2024-02-29T23:59:59.999999",
                                    "1970-01-01T00:00:00",
                                    "1969-12-31T23:59:59.9",
                                    "2000-03-01T00:00:00+23:59",
                                    "2025-01-02T03:04:05.12"};
  std::mt19937_64 rng(11);
  for (int i = 0; i < 2000; ++i) {
    const int64_t ns = static_cast<int64_t>(rng() % 8000000000000000000ull) - 2000000000000000000;
    texts.push_back(FormatIsoTime(ns));
  }
  std::string in;
  for (const auto& t : texts) in += t + "\n";
  ASSERT_OK(WriteStringToFile(dir.Sub("times"), in));
  const std::string out = RunPython(dir, R"PY(
import sys, datetime
utc = datetime.timezone.utc
epoch = datetime.datetime(1970, 1, 1, tzinfo=utc)
for l in open(sys.argv[1]):
    s = l.rstrip("\n")
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"   # 3.11 reads Z itself; kept explicit for older pythons
    d = datetime.datetime.fromisoformat(s)
    if d.tzinfo is None:
        d = d.replace(tzinfo=utc)
    delta = d - epoch
    print((delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000)
)PY",
                                    {dir.Sub("times")});
  const auto want = Split(out, '\n');
  ASSERT_EQ(want.size(), texts.size() + 1);
  for (size_t i = 0; i < texts.size(); ++i) {
    Result<int64_t> ns = ParseIsoTime(texts[i]);
    ASSERT_TRUE(ns.ok()) << texts[i] << ": " << ns.status().ToString();
    EXPECT_EQ(std::to_string(*ns), want[i]) << texts[i];
  }
}

TEST(IsoTime, ParseRejectsGarbage) {
  for (const char* bad : {"",
                          "2025",
                          "2025-1-02",
                          "2025-01-02T",
                          "2025-13-01",
                          "2025-02-29",
                          "2025-01-32",
                          "2025-01-02T24:00:00",
                          "2025-01-02T03:60:00",
                          "2025-01-02T03:04:61",
                          "2025-01-02T03:04:05.",
                          "2025-01-02T03:04:05.1234567",
                          "2025-01-02X03:04:05",
                          "2025-01-02T03:04:05+2",
                          "2025-01-02T03:04:05+02:00x",
                          "2025-01-02T03:04:05 ",
                          " 2025-01-02",
                          "yesterday",
                          "0000-01-01",
                          "2025-01-02T03:04:05ZZ"}) {
    Result<int64_t> r = ParseIsoTime(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    }
  }
  EXPECT_EQ(*ParseIsoTime("2025-01-02T03:04:05Z"), *ParseIsoTime("2025-01-02T05:04:05+02:00"));
  // Beyond int64 nanoseconds: not a time here, but documents keep Python's datetime.min as text.
  EXPECT_FALSE(ParseIsoTime("0001-01-01T00:00:00").ok());
  EXPECT_FALSE(ParseIsoTime("9999-12-31T23:59:59.999999").ok());
  Neuron n;
  ASSERT_OK(NeuronFromDocument(Json{{"type", "x"}, {"created_at", "0001-01-01T00:00:00"}}, &n));
  EXPECT_EQ(n.created_at, "0001-01-01T00:00:00");
}

TEST(IsoTime, NowRoundTrips) {
  const std::string now = NowIsoTime();
  Result<int64_t> ns = ParseIsoTime(now);
  ASSERT_TRUE(ns.ok()) << now;
  EXPECT_EQ(FormatIsoTime(*ns), now);
  EXPECT_GT(*ns, int64_t{1700000000} * 1000000000);
}

// ---------------------------------------------------------------------------------------------
// Float repr

TEST(PyFloat, ReprMatchesPythonOnManyDoubles) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  std::mt19937_64 rng(2024);
  std::vector<double> values = {0.0,
                                -0.0,
                                1.0,
                                -1.0,
                                0.1,
                                0.5,
                                1e16,
                                1e15,
                                9999999999999998.0,
                                1e16 + 2,
                                0.0001,
                                0.00001,
                                0.00009999,
                                1.5e-7,
                                123456789012345678.0,
                                1e22,
                                1e23,
                                std::numeric_limits<double>::max(),
                                std::numeric_limits<double>::min(),
                                std::numeric_limits<double>::denorm_min(),
                                -std::numeric_limits<double>::denorm_min(),
                                static_cast<double>(std::numeric_limits<float>::max()),
                                static_cast<double>(std::numeric_limits<float>::denorm_min()),
                                std::numeric_limits<double>::epsilon(),
                                2.0 / 3.0,
                                100.0,
                                1e100,
                                1e-100};
  for (int k = -330; k <= 310; ++k) {
    const double p = std::pow(10.0, k);
    values.push_back(p);
    values.push_back(std::nextafter(p, 0.0));
    values.push_back(std::nextafter(p, 1e308));
    values.push_back(-p * 1.5);
  }
  for (int i = 0; i < 130000; ++i) {
    const uint64_t bits = rng();
    double d;
    switch (i % 6) {
      case 0:  // any bit pattern (NaN and inf included)
        d = std::bit_cast<double>(bits);
        break;
      case 1:  // subnormals
        d = std::bit_cast<double>(bits & 0x800fffffffffffffull);
        break;
      case 2:  // float32 values widened, as numpy's float32 tolist() gives them
        d = static_cast<double>(std::bit_cast<float>(static_cast<uint32_t>(bits)));
        break;
      case 3:  // ordinary embedding values
        d = static_cast<double>(static_cast<float>(std::normal_distribution<double>(0, 1)(rng)));
        break;
      case 4:  // integers of every size
        d = static_cast<double>(static_cast<int64_t>(bits) >> (bits % 64));
        break;
      default:  // decimal exponents around the notation switches
        d = static_cast<double>(bits % 100000) *
            std::pow(10.0, static_cast<int>(bits >> 40) % 30 - 12);
        break;
    }
    values.push_back(d);
  }
  std::string in, ours;
  ours.reserve(values.size() * 24);
  for (double d : values) {
    in += Hex64(std::bit_cast<uint64_t>(d)) + "\n";
    PyFloatRepr(d, &ours);
    ours += '\n';
  }
  ASSERT_OK(WriteStringToFile(dir.Sub("bits"), in));
  const std::string out = RunPython(dir, R"PY(
import sys, struct
print("".join(repr(struct.unpack(">d", bytes.fromhex(l.strip()))[0]) + "\n" for l in open(sys.argv[1])), end="")
)PY",
                                    {dir.Sub("bits")});
  ASSERT_EQ(Split(out, '\n').size(), values.size() + 1);
  if (out != ours) {
    const auto want = Split(out, '\n'), got = Split(ours, '\n');
    int failures = 0;
    for (size_t i = 0; i < values.size() && failures < 10; ++i) {
      if (want[i] != got[i]) {
        ADD_FAILURE() << Hex64(std::bit_cast<uint64_t>(values[i])) << ": python " << want[i]
                      << ", ours " << got[i];
        ++failures;
      }
    }
  }
}

TEST(PyFloat, SpecialValuesInJson) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const Json v = Json::array({nan, -nan, inf, -inf, -0.0, 0.0, 1e16, 1.0, 3});
  const std::string ours = Dump(v);
  EXPECT_EQ(ours, "[NaN, NaN, Infinity, -Infinity, -0.0, 0.0, 1e+16, 1.0, 3]");
  EXPECT_EQ(Repr(nan), "nan");
  EXPECT_EQ(Repr(-inf), "-inf");
  const std::string out = RunPython(dir, R"PY(
import json, math
print(json.dumps([math.nan, -math.nan, math.inf, -math.inf, -0.0, 0.0, 1e16, 1.0, 3]), end="")
)PY");
  EXPECT_EQ(out, ours);
}

// ---------------------------------------------------------------------------------------------
// JSON text

class RandomJson {
 public:
  explicit RandomJson(uint64_t seed) : rng_(seed) {}

  Json Value(int depth) {
    const int kind = static_cast<int>(rng_() % (depth >= 4 ? 6 : 8));
    switch (kind) {
      case 0:
        return nullptr;
      case 1:
        return rng_() % 2 == 0;
      case 2:
        return Int();
      case 3:
      case 4:
        return Float();
      case 5:
        return String();
      case 6: {
        Json a = Json::array();
        const int n = static_cast<int>(rng_() % 6);
        for (int i = 0; i < n; ++i) a.push_back(Value(depth + 1));
        return a;
      }
      default: {
        Json o = Json::object();
        const int n = static_cast<int>(rng_() % 6);
        for (int i = 0; i < n; ++i) o[String()] = Value(depth + 1);
        return o;
      }
    }
  }
  Json Int() {
    switch (rng_() % 6) {
      case 0:
        return std::numeric_limits<int64_t>::min();
      case 1:
        return std::numeric_limits<int64_t>::max();
      case 2:
        return std::numeric_limits<uint64_t>::max();
      case 3:
        return static_cast<int64_t>(rng_()) >> (rng_() % 64);
      case 4:
        return rng_() >> (rng_() % 64);
      default:
        return static_cast<int64_t>(rng_() % 201) - 100;
    }
  }
  Json Float() {
    const uint64_t bits = rng_();
    switch (bits % 4) {
      case 0:
        return std::bit_cast<double>(rng_());  // NaN and inf included
      case 1:
        return static_cast<double>(std::bit_cast<float>(static_cast<uint32_t>(rng_())));
      case 2:
        return static_cast<double>(static_cast<int64_t>(rng_() % 2001) - 1000);  // 12.0
      default:
        return std::ldexp(static_cast<double>(rng_() % 1000000),
                          static_cast<int>(rng_() % 120) - 80);
    }
  }
  std::string String() {
    std::string s;
    const int n = static_cast<int>(rng_() % 12);
    for (int i = 0; i < n; ++i) {
      uint32_t cp;
      switch (rng_() % 5) {
        case 0:
          cp = static_cast<uint32_t>(rng_() % 0x80);
          break;  // controls, quote, backslash, 0x7f
        case 1:
          cp = static_cast<uint32_t>("\"\\/\x7f\x1f\b\f\n\r\t"[rng_() % 10]);
          break;
        case 2:
          cp = 0x20 + static_cast<uint32_t>(rng_() % 0x5f);
          break;
        case 3:
          do cp = 0x80 + static_cast<uint32_t>(rng_() % 0xff80);
          while (cp >= 0xd800 && cp <= 0xdfff);
          break;
        default:
          cp = 0x10000 + static_cast<uint32_t>(rng_() % 0x100000);
          break;
      }
      AppendUtf8(cp, &s);
    }
    return s;
  }
  static void AppendUtf8(uint32_t cp, std::string* s) {
    if (cp < 0x80) {
      s->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      s->push_back(static_cast<char>(0xc0 | (cp >> 6)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
      s->push_back(static_cast<char>(0xe0 | (cp >> 12)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else {
      s->push_back(static_cast<char>(0xf0 | (cp >> 18)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    }
  }

 private:
  std::mt19937_64 rng_;
};

constexpr char kRedumpScript[] = R"PY(
import json, sys
compact, indented = [], []
for line in open(sys.argv[1], encoding="ascii", newline=""):
    v = json.loads(line)
    compact.append(json.dumps(v, sort_keys=True))
    indented.append(json.dumps(v, sort_keys=True, indent=2))
open(sys.argv[2], "w", encoding="ascii").write("\n".join(compact) + "\n")
open(sys.argv[3], "w", encoding="ascii").write("\0".join(indented))
)PY";

TEST(PyJson, RandomValuesDumpAsPythonDoes) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  RandomJson gen(99);
  std::vector<Json> values;
  for (int i = 0; i < 3000; ++i) values.push_back(gen.Value(0));
  std::string compact, indented;
  for (size_t i = 0; i < values.size(); ++i) {
    const std::string line = Dump(values[i]);
    ASSERT_EQ(line.find('\n'), std::string::npos);
    for (unsigned char c : line) ASSERT_LT(c, 0x80) << line;  // ensure_ascii
    compact += line + "\n";
    if (i != 0) indented += '\0';
    indented += Dump(values[i], 2);
  }
  ASSERT_OK(WriteStringToFile(dir.Sub("ours.jsonl"), compact));
  RunPython(dir, kRedumpScript, {dir.Sub("ours.jsonl"), dir.Sub("py.jsonl"), dir.Sub("py_indent")});
  auto py_compact = ReadFileToString(dir.Sub("py.jsonl"));
  auto py_indented = ReadFileToString(dir.Sub("py_indent"));
  ASSERT_TRUE(py_compact.ok() && py_indented.ok());
  const auto want = Split(*py_compact, '\n'), got = Split(compact, '\n');
  ASSERT_EQ(want.size(), got.size());
  int failures = 0;
  for (size_t i = 0; i < want.size() && failures < 5; ++i) {
    if (want[i] != got[i]) {
      ADD_FAILURE() << "python: " << want[i] << "\nours:   " << got[i];
      ++failures;
    }
  }
  const auto want_i = Split(*py_indented, '\0'), got_i = Split(indented, '\0');
  ASSERT_EQ(want_i.size(), got_i.size());
  for (size_t i = 0; i < want_i.size() && failures < 5; ++i) {
    if (want_i[i] != got_i[i]) {
      ADD_FAILURE() << "python (indent=2):\n" << want_i[i] << "\nours:\n" << got_i[i];
      ++failures;
    }
  }
  // And what python wrote parses back to the same text (both layouts).
  for (size_t i = 0; i < values.size() && failures < 5; ++i) {
    if (Dump(MustParse(want[i])) != got[i] || Dump(MustParse(want_i[i]), 2) != got_i[i]) {
      ADD_FAILURE() << "reparse of python's text differs: " << want[i];
      ++failures;
    }
  }
}

TEST(PyJson, ParsesWhatPythonGenerates) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  // Python's own random values (its float repr, its string escapes, big and small ints), written
  // by json.dumps both ways; ParseJson + PyJsonDump must give the same bytes back.
  const std::string out = RunPython(dir, R"PY(
import json, math, random, struct, sys
r = random.Random(5)
def rstr():
    cps = []
    for _ in range(r.randrange(10)):
        k = r.randrange(4)
        if k == 0: cps.append(r.randrange(0x80))
        elif k == 1: cps.append(r.randrange(0x80, 0xd800))
        elif k == 2: cps.append(r.randrange(0xe000, 0x10000))
        else: cps.append(r.randrange(0x10000, 0x110000))
    return "".join(map(chr, cps))
def rfloat():
    k = r.randrange(5)
    if k == 0: return struct.unpack("<d", r.randbytes(8))[0]
    if k == 1: return r.random() * 10 ** r.randrange(-30, 30)
    if k == 2: return float(r.randrange(-10**6, 10**6))
    if k == 3: return struct.unpack("<f", r.randbytes(4))[0]
    return r.choice([math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1e16, 1e-5])
def rval(d):
    k = r.randrange(8 if d < 4 else 6)
    if k == 0: return None
    if k == 1: return r.random() < 0.5
    if k == 2: return r.choice([r.randrange(-2**63, 2**64), r.randrange(-100, 100), -2**63, 2**64 - 1])
    if k == 3 or k == 4: return rfloat()
    if k == 5: return rstr()
    if k == 6: return [rval(d + 1) for _ in range(r.randrange(6))]
    return {rstr(): rval(d + 1) for _ in range(r.randrange(6))}
vals = [rval(0) for _ in range(3000)]
with open(sys.argv[1], "w", encoding="ascii") as f:
    f.write("\n".join(json.dumps(v, sort_keys=True) for v in vals) + "\n")
with open(sys.argv[2], "w", encoding="ascii") as f:
    f.write("\0".join(json.dumps(v, sort_keys=True, indent=2) for v in vals))
# Also without ensure_ascii: raw UTF-8 input.
with open(sys.argv[3], "w", encoding="utf-8") as f:
    f.write("\0".join(json.dumps(v, ensure_ascii=False) for v in vals))
)PY",
                                    {dir.Sub("c"), dir.Sub("i"), dir.Sub("u")});
  auto c = ReadFileToString(dir.Sub("c")), i = ReadFileToString(dir.Sub("i")),
       u = ReadFileToString(dir.Sub("u"));
  ASSERT_TRUE(c.ok() && i.ok() && u.ok());
  const auto lines = Split(*c, '\n'), blocks = Split(*i, '\0'), raw = Split(*u, '\0');
  ASSERT_EQ(lines.size(), 3001u);
  ASSERT_EQ(blocks.size(), 3000u);
  ASSERT_EQ(raw.size(), 3000u);
  int failures = 0;
  for (size_t k = 0; k < blocks.size() && failures < 5; ++k) {
    const Json a = MustParse(lines[k]);
    const std::string again = Dump(a);
    const std::string again_i = Dump(MustParse(blocks[k]), 2);
    const std::string again_u = Dump(MustParse(raw[k]));
    if (again != lines[k] || again_i != blocks[k] || again_u != lines[k]) {
      ADD_FAILURE() << "python: " << lines[k] << "\nours:   " << again
                    << "\nfrom utf-8: " << again_u;
      ++failures;
    }
  }
}

TEST(PyJson, ParseKeepsPythonTypes) {
  const Json v = MustParse(R"( {"a": 1, "b": 1.0, "c": -0, "d": -0.0, "e": 18446744073709551615,
      "f": -9223372036854775808, "g": 1E2, "h": [NaN, Infinity, -Infinity], "a": "later wins",
      "i": "\u00e9\ud83d\ude00\u0000\/", "j": 1e-400} )");
  EXPECT_EQ(v["a"], "later wins");
  EXPECT_TRUE(v["b"].is_number_float());
  EXPECT_TRUE(v["c"].is_number_integer());
  EXPECT_TRUE(v["d"].is_number_float());
  EXPECT_TRUE(std::signbit(v["d"].get<double>()));
  EXPECT_EQ(v["e"].get<uint64_t>(), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(v["f"].get<int64_t>(), std::numeric_limits<int64_t>::min());
  EXPECT_TRUE(v["g"].is_number_float());
  EXPECT_TRUE(std::isnan(v["h"][0].get<double>()));
  EXPECT_EQ(v["h"][2].get<double>(), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(v["i"].get<std::string>(), std::string("\xc3\xa9\xf0\x9f\x98\x80\0/", 8));
  EXPECT_EQ(v["j"].get<double>(), 0.0);
  EXPECT_EQ(
      Dump(v),
      "{\"a\": \"later wins\", \"b\": 1.0, \"c\": 0, \"d\": -0.0, \"e\": 18446744073709551615, "
      "\"f\": -9223372036854775808, \"g\": 100.0, \"h\": [NaN, Infinity, -Infinity], "
      "\"i\": \"\\u00e9\\ud83d\\ude00\\u0000/\", \"j\": 0.0}");
  // 512 levels are fine.
  EXPECT_TRUE(ParseJson(std::string(512, '[') + std::string(512, ']')).ok());
  EXPECT_TRUE(ParseJson(" \t\r\n7 \n").ok());
}

TEST(PyJson, ParseErrors) {
  struct Case {
    std::string text;
    std::string needle;  // part of the message
  };
  const std::vector<Case> cases = {
      {"", "at byte 0"},
      {"{", "at byte 1"},
      {"[1,]", "at byte 3"},
      {"{\"a\" 1}", "at byte 5"},
      {"[1] x", "at byte 4"},
      {"[1]]", "at byte 3"},
      {std::string("[1]\0", 4), "at byte 3"},
      {"\"\xff\"", "Invalid encoding"},
      {"\"\xc0\x80\"", "Invalid encoding"},          // overlong NUL
      {"\"\xed\xa0\x80\"", ""},                      // a surrogate encoded in UTF-8
      {"\"\xf4\x90\x80\x80\"", "Invalid encoding"},  // beyond U+10FFFF
      {"\"\\udc00\"", "surrogate"},
      {"\"\\ud800\"", "surrogate"},
      {"\"\\ud800\\u0041\"", "surrogate"},
      {"{\"\\udfff\": 1}", "surrogate"},
      {std::string(600, '[') + std::string(600, ']'), "nesting"},
      {std::string(513, '[') + std::string(513, ']'), "nesting"},
      {"18446744073709551616", "integer out of range"},
      {"-9223372036854775809", "integer out of range"},
      {"[1e400]", "at byte"},  // Python reads inf; json.dumps never writes it (see graph.cc)
      {"[Inf]", "Inf"},
      {"[-Inf]", "Inf"},
      {"[-NaN]", "NaN"},
      {"[nan]", "Invalid value"},
      {"[infinity]", "Invalid value"},
      {"[01]", "at byte"},
      {"[1.]", "at byte"},
      {"[.5]", "at byte"},
      {"[+1]", "at byte"},
      {"\"a\tb\"", "at byte"},  // raw control character
      {"'a'", "at byte 0"},
      {"\xef\xbb\xbf[1]", "at byte 0"},  // BOM: json.loads refuses it too
      {"[1] // comment", "at byte"},
  };
  for (const Case& c : cases) {
    Result<Json> r = ParseJson(c.text);
    EXPECT_FALSE(r.ok()) << c.text.substr(0, 40);
    if (r.ok()) continue;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.needle), std::string::npos)
        << c.text.substr(0, 40) << " -> " << r.status().message();
    EXPECT_NE(r.status().message().find("at byte"), std::string::npos) << r.status().message();
  }
}

TEST(PyJson, PythonRejectsWhatWeReject) {
  // The error cases above that Python also refuses (so that the two systems agree on what is JSON),
  // except the ones modelfs refuses on purpose (lone surrogates, big ints, depth).
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  const std::vector<std::string> texts = {"[1,]",  "[1] x",    "[Inf]", "[-NaN]",
                                          "[nan]", "[01]",     "[1.]",  "[.5]",
                                          "[+1]",  "\"a\tb\"", "'a'",   "[1] // c"};
  std::string in;
  for (const auto& t : texts) {
    in += t;
    in += '\0';
    EXPECT_FALSE(ParseJson(t).ok()) << t;
  }
  ASSERT_OK(WriteStringToFile(dir.Sub("bad"), in));
  const std::string out = RunPython(dir, R"PY(
import json, sys
n = 0
for t in open(sys.argv[1], encoding="utf-8", newline="").read().split("\0")[:-1]:
    try:
        json.loads(t)
        print("python accepts", repr(t))
    except ValueError:
        n += 1
print(n)
)PY",
                                    {dir.Sub("bad")});
  EXPECT_EQ(out, std::to_string(texts.size()) + "\n");
}

// ---------------------------------------------------------------------------------------------
// Documents

constexpr char kId1[] = "11111111-1111-4111-8111-111111111111";
constexpr char kId2[] = "22222222-2222-4222-8222-222222222222";
constexpr char kId3[] = "33333333-3333-4333-8333-333333333333";

Neuron KnowledgeNeuron() {
  Neuron n;
  n.id = kId1;
  n.type = "knowledge";
  n.position = {1.0, -2.5, 3.25};
  n.vector = {0.1f, -1.0f, 3.0e-8f, 12345.678f};
  n.vector_dim = 4;
  n.metadata = {
      {"name", "caf\xc3\xa9"}, {"n", 3}, {"nested", {{"x", Json::array({1, 2.5, nullptr})}}}};
  n.activation_level = 0.75;
  n.created_at = "2025-01-02T03:04:05.123456";
  n.modified_at = "2025-01-02T03:04:06";
  n.source_data = "some text";
  n.compression_ratio = 2.5;
  n.semantic_tags = Json::array({"a", "b"});
  n.extra = {{"importance", 0.9}};
  return n;
}

Neuron ToolNeuron() {
  Neuron n;
  n.id = kId2;
  n.type = "tool";
  n.position = {0.0, 0.0, 1.0};
  n.metadata = Json::object();
  n.function_signature = "def f(x)";
  n.executable_code = "return x\n";
  n.input_schema = {{"type", "object"}};
  n.output_schema = nullptr;
  n.execution_count = 7;
  n.average_execution_time = 0.25;
  n.activation_threshold = 0.6;
  return n;
}

Neuron MemoryNeuron() {
  Neuron n;
  n.id = kId3;
  n.type = "memory";
  n.position = {-1.0, 2.0, 1e-300};
  n.vector = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
              -0.0f, std::numeric_limits<float>::denorm_min()};
  n.vector_dim = 4;
  n.extra = {{"episode", 12},
             {"recall", Json::array({1.5, "x"})},
             {"importance", nullptr},
             {"source_data", "kept"}};
  return n;
}

TEST(Documents, NeuronDocumentLayout) {
  const Json k = NeuronToDocument(KnowledgeNeuron(), true);
  EXPECT_EQ(
      Dump(k),
      "{\"activation_level\": 0.75, \"compression_ratio\": 2.5, \"created_at\": "
      "\"2025-01-02T03:04:05.123456\", "
      "\"id\": \"11111111-1111-4111-8111-111111111111\", \"importance\": 0.9, \"metadata\": "
      "{\"n\": 3, \"name\": "
      "\"caf\\u00e9\", \"nested\": {\"x\": [1, 2.5, null]}}, \"modified_at\": "
      "\"2025-01-02T03:04:06\", "
      "\"position\": {\"x\": 1.0, \"y\": -2.5, \"z\": 3.25}, \"semantic_tags\": [\"a\", \"b\"], "
      "\"source_data\": \"some text\", \"type\": \"knowledge\", \"vector\": [0.10000000149011612, "
      "-1.0, "
      "2.999999892949745e-08, 12345.677734375]}");
  const Json t = NeuronToDocument(ToolNeuron(), false);
  EXPECT_FALSE(t.contains("vector"));
  EXPECT_EQ(
      Dump(t),
      "{\"activation_level\": 0.0, \"activation_threshold\": 0.6, \"average_execution_time\": "
      "0.25, "
      "\"created_at\": null, \"executable_code\": \"return x\\n\", \"execution_count\": 7, "
      "\"function_signature\": \"def f(x)\", \"id\": \"22222222-2222-4222-8222-222222222222\", "
      "\"input_schema\": {\"type\": \"object\"}, \"metadata\": {}, \"modified_at\": null, "
      "\"output_schema\": {}, \"position\": {\"x\": 0.0, \"y\": 0.0, \"z\": 1.0}, \"type\": "
      "\"tool\"}");
  const Json m = NeuronToDocument(MemoryNeuron(), true);
  EXPECT_EQ(
      Dump(m),
      "{\"activation_level\": 0.0, \"created_at\": null, \"episode\": 12, \"id\": "
      "\"33333333-3333-4333-8333-333333333333\", \"importance\": null, \"metadata\": {}, "
      "\"modified_at\": null, "
      "\"position\": {\"x\": -1.0, \"y\": 2.0, \"z\": 1e-300}, \"recall\": [1.5, \"x\"], "
      "\"source_data\": "
      "\"kept\", \"type\": \"memory\", \"vector\": [NaN, Infinity, -0.0, 1.401298464324817e-45]}");
  Neuron plain = KnowledgeNeuron();
  plain.vector.clear();
  plain.extra = Json::object();
  plain.source_data.reset();
  plain.compression_ratio.reset();
  plain.semantic_tags = nullptr;
  const Json p = NeuronToDocument(plain, true);
  EXPECT_TRUE(p["vector"].is_null());
  EXPECT_EQ(p["importance"], 0.5);
  EXPECT_TRUE(p["source_data"].is_null());
  EXPECT_TRUE(p["compression_ratio"].is_null());
  EXPECT_EQ(p["semantic_tags"], Json::array());
}

void ExpectSameNeuron(const Neuron& a, const Neuron& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.type, b.type);
  EXPECT_EQ(a.position, b.position);
  ASSERT_EQ(a.vector.size(), b.vector.size());
  if (!a.vector.empty()) {  // bit for bit: NaN too
    EXPECT_EQ(0, std::memcmp(a.vector.data(), b.vector.data(), a.vector.size() * sizeof(float)));
  }
  EXPECT_EQ(a.metadata, b.metadata);
  EXPECT_EQ(a.activation_level, b.activation_level);
  EXPECT_EQ(a.created_at, b.created_at);
  EXPECT_EQ(a.modified_at, b.modified_at);
  EXPECT_EQ(a.extra, b.extra);
  // Everything else through the document, which names every remaining field.
  EXPECT_EQ(Dump(NeuronToDocument(a, true)), Dump(NeuronToDocument(b, true)));
}

TEST(Documents, NeuronRoundTrips) {
  for (const Neuron& n : {KnowledgeNeuron(), ToolNeuron(), MemoryNeuron()}) {
    const std::string text = Dump(NeuronToDocument(n, true));
    Neuron back;
    ASSERT_OK(NeuronFromDocument(MustParse(text), &back));
    ExpectSameNeuron(n, back);
    EXPECT_EQ(Dump(NeuronToDocument(back, true)), text);
    EXPECT_EQ(back.vector_dim, n.vector.size());
  }
  // The tool's null schema comes back as {} (from_dict's `or {}`), which the document showed.
  Neuron back;
  ASSERT_OK(NeuronFromDocument(NeuronToDocument(ToolNeuron(), true), &back));
  EXPECT_EQ(back.output_schema, Json::object());
}

TEST(Documents, NeuronWithoutVectorKeepsTheVector) {
  Neuron n = KnowledgeNeuron();
  n.vector_hash = 42;
  Json doc = NeuronToDocument(n, false);
  doc["activation_level"] = 0.125;
  ASSERT_OK(NeuronFromDocument(doc, &n));
  EXPECT_EQ(n.vector, KnowledgeNeuron().vector);
  EXPECT_EQ(n.vector_hash, 42u);
  EXPECT_EQ(n.activation_level, 0.125);
  doc["vector"] = nullptr;
  ASSERT_OK(NeuronFromDocument(doc, &n));
  EXPECT_TRUE(n.vector.empty());
  EXPECT_EQ(n.vector_dim, 0u);
  doc["vector"] = Json::array({1, 2.5, -3});  // ints are numbers too
  ASSERT_OK(NeuronFromDocument(doc, &n));
  EXPECT_EQ(n.vector, (std::vector<float>{1.0f, 2.5f, -3.0f}));
  EXPECT_EQ(n.vector_dim, 3u);
  EXPECT_NE(n.vector_hash, 0u);
}

TEST(Documents, NeuronDefaultsAreFromDicts) {
  Neuron k;
  ASSERT_OK(NeuronFromDocument(Json{{"id", kId1}, {"type", "knowledge"}}, &k));
  EXPECT_EQ(Dump(NeuronToDocument(k, true)),
            "{\"activation_level\": 0.0, \"compression_ratio\": 0.0, \"created_at\": null, \"id\": "
            "\"11111111-1111-4111-8111-111111111111\", \"importance\": 0.5, \"metadata\": {}, "
            "\"modified_at\": null, "
            "\"position\": {\"x\": 0.0, \"y\": 0.0, \"z\": 0.0}, \"semantic_tags\": [], "
            "\"source_data\": \"\", "
            "\"type\": \"knowledge\", \"vector\": null}");
  EXPECT_TRUE(k.extra.empty());
  Neuron t;
  ASSERT_OK(NeuronFromDocument(Json{{"id", kId2}, {"type", "tool"}, {"metadata", nullptr}}, &t));
  EXPECT_EQ(
      Dump(NeuronToDocument(t, false)),
      "{\"activation_level\": 0.0, \"activation_threshold\": 0.5, \"average_execution_time\": 0.0, "
      "\"created_at\": null, \"executable_code\": \"\", \"execution_count\": 0, "
      "\"function_signature\": \"\", "
      "\"id\": \"22222222-2222-4222-8222-222222222222\", \"input_schema\": {}, \"metadata\": {}, "
      "\"modified_at\": null, \"output_schema\": {}, \"position\": {\"x\": 0.0, \"y\": 0.0, \"z\": "
      "0.0}, "
      "\"type\": \"tool\"}");
  // Explicit nulls stay null where the original keeps None; null tags and schemas become [] / {}.
  Neuron kn;
  ASSERT_OK(NeuronFromDocument(Json{{"id", kId1},
                                    {"type", "knowledge"},
                                    {"source_data", nullptr},
                                    {"compression_ratio", nullptr},
                                    {"semantic_tags", nullptr},
                                    {"importance", nullptr},
                                    {"created_at", nullptr}},
                               &kn));
  EXPECT_FALSE(kn.source_data.has_value());
  EXPECT_FALSE(kn.compression_ratio.has_value());
  EXPECT_EQ(kn.semantic_tags, Json::array());
  const Json d = NeuronToDocument(kn, false);
  EXPECT_TRUE(d["source_data"].is_null());
  EXPECT_TRUE(d["importance"].is_null());
  // A neuron without "type" in its document keeps its own type; the other type's fields go to
  // extra.
  Neuron keep = ToolNeuron();
  ASSERT_OK(NeuronFromDocument(Json{{"source_data", "x"}, {"importance", 1}}, &keep));
  EXPECT_EQ(keep.type, "tool");
  EXPECT_EQ(keep.id, kId2);
  EXPECT_EQ(keep.extra, (Json{{"source_data", "x"}, {"importance", 1}}));
  EXPECT_EQ(keep.execution_count, 0);  // absent: the default, not the old value
  // Knowledge's importance is a float.
  Neuron imp;
  ASSERT_OK(NeuronFromDocument(Json{{"id", kId1}, {"type", "knowledge"}, {"importance", 1}}, &imp));
  EXPECT_TRUE(imp.extra["importance"].is_number_float());
  EXPECT_EQ(Dump(NeuronToDocument(imp, false)["importance"]), "1.0");
}

TEST(Documents, NeuronValidation) {
  const Json base = NeuronToDocument(KnowledgeNeuron(), true);
  const Json tool = NeuronToDocument(ToolNeuron(), true);
  struct Case {
    Json doc;
    std::string needle;
  };
  const auto with = [](Json d, const std::string& key, Json v) {
    d[key] = std::move(v);
    return d;
  };
  const auto without = [](Json d, const std::string& key) {
    d.erase(key);
    return d;
  };
  Json no_y = base;
  no_y["position"].erase("y");
  Json str_x = base;
  str_x["position"]["x"] = "1";
  Json extra_w = base;
  extra_w["position"]["w"] = 1.0;
  Json bad_elem = base;
  bad_elem["vector"][2] = "0.5";
  Json bool_elem = base;
  bool_elem["vector"][0] = true;
  const std::vector<Case> cases = {
      {Json::array(), "object"},
      {with(base, "id", "not-a-uuid"), "\"id\""},
      {with(base, "id", "11111111-1111-4111-8111-11111111111A"), "\"id\""},
      {with(base, "id", 5), "\"id\""},
      {with(base, "type", "a/b"), "neuron type"},
      {with(base, "type", ".hidden"), "neuron type"},
      {with(base, "type", ""), "neuron type"},
      {with(base, "type", 3), "\"type\""},
      {without(base, "type"), "type"},
      {with(base, "position", Json::array({1, 2, 3})), "\"position\""},
      {with(base, "position", nullptr), "\"position\""},
      {no_y, "\"position.y\""},
      {str_x, "\"position.x\": expected a number"},
      {extra_w, "\"position\""},
      {with(base, "vector", "1,2"), "\"vector\""},
      {bad_elem, "\"vector[2]\""},
      {bool_elem, "\"vector[0]\""},
      {with(base, "metadata", Json::array()), "\"metadata\""},
      {with(base, "metadata", "x"), "\"metadata\""},
      {with(base, "activation_level", "0.5"), "\"activation_level\""},
      {with(base, "activation_level", nullptr), "\"activation_level\""},
      {with(base, "created_at", "yesterday"), "\"created_at\""},
      {with(base, "modified_at", 5), "\"modified_at\""},
      {with(base, "source_data", 5), "\"source_data\""},
      {with(base, "compression_ratio", "2"), "\"compression_ratio\""},
      {with(base, "semantic_tags", "a"), "\"semantic_tags\""},
      {with(base, "importance", "high"), "\"importance\""},
      {with(tool, "execution_count", 1.5), "\"execution_count\""},
      {with(tool, "execution_count", std::numeric_limits<uint64_t>::max()), "\"execution_count\""},
      {with(tool, "input_schema", Json::array()), "\"input_schema\""},
      {with(tool, "output_schema", 1), "\"output_schema\""},
      {with(tool, "function_signature", Json::array()), "\"function_signature\""},
      {with(tool, "average_execution_time", true), "\"average_execution_time\""},
      {with(tool, "activation_threshold", "x"), "\"activation_threshold\""},
  };
  for (const Case& c : cases) {
    Neuron n = MemoryNeuron();
    n.type.clear();
    Neuron before = n;
    Status st = NeuronFromDocument(c.doc, &n);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << Dump(c.doc);
    EXPECT_NE(st.message().find(c.needle), std::string::npos)
        << st.message() << " (want " << c.needle << ")";
    EXPECT_EQ(Dump(NeuronToDocument(n, true)), Dump(NeuronToDocument(before, true)));  // unchanged
  }
  // NaN and infinity are numbers here (the store refuses them, not the document).
  Neuron n;
  ASSERT_OK(NeuronFromDocument(
      MustParse(R"({"type": "x", "vector": [NaN, -Infinity], "activation_level": 1})"), &n));
  EXPECT_TRUE(std::isnan(n.vector[0]));
  EXPECT_EQ(n.activation_level, 1.0);
}

Synapse SomeSynapse() {
  Synapse s;
  s.id = kId3;
  s.source_neuron_id = kId1;
  s.target_neuron_id = kId2;
  s.weight = -0.25;
  s.usage_count = 4;
  s.last_traversed = "2025-03-04T05:06:07.5";
  s.synapse_type = "tool_input";
  s.metadata = {{"why", "\xe2\x86\x92"}};
  s.created_at = "2025-03-04T05:06:07";
  return s;
}

TEST(Documents, SynapseRoundTripsAndDefaults) {
  const Synapse s = SomeSynapse();
  const std::string text = Dump(SynapseToDocument(s));
  EXPECT_EQ(
      text,
      "{\"created_at\": \"2025-03-04T05:06:07\", \"id\": \"33333333-3333-4333-8333-333333333333\", "
      "\"last_traversed\": \"2025-03-04T05:06:07.5\", \"metadata\": {\"why\": \"\\u2192\"}, "
      "\"modified_at\": "
      "null, \"source_neuron_id\": \"11111111-1111-4111-8111-111111111111\", \"synapse_type\": "
      "\"tool_input\", "
      "\"target_neuron_id\": \"22222222-2222-4222-8222-222222222222\", \"usage_count\": 4, "
      "\"weight\": -0.25}");
  Synapse back;
  ASSERT_OK(SynapseFromDocument(MustParse(text), &back));
  EXPECT_EQ(Dump(SynapseToDocument(back)), text);
  Synapse d;
  d.id = kId1;
  ASSERT_OK(SynapseFromDocument(Json{{"source_neuron_id", kId2}, {"target_neuron_id", kId3}}, &d));
  EXPECT_EQ(d.id, kId1);  // kept
  EXPECT_EQ(d.weight, 0.5);
  EXPECT_EQ(d.usage_count, 0);
  EXPECT_FALSE(d.last_traversed.has_value());
  EXPECT_EQ(d.synapse_type, "knowledge");
  EXPECT_EQ(d.metadata, Json::object());
  EXPECT_EQ(d.created_at, "");
  ASSERT_OK(SynapseFromDocument(Json{{"source_neuron_id", kId2},
                                     {"target_neuron_id", kId3},
                                     {"weight", 1},
                                     {"metadata", nullptr},
                                     {"last_traversed", nullptr}},
                                &d));
  EXPECT_EQ(d.weight, 1.0);
}

TEST(Documents, SynapseValidation) {
  const Json base = SynapseToDocument(SomeSynapse());
  const auto with = [](Json d, const std::string& key, Json v) {
    d[key] = std::move(v);
    return d;
  };
  Json no_target = base;
  no_target.erase("target_neuron_id");
  const std::vector<std::pair<Json, std::string>> cases = {
      {with(base, "weight", 1.5), "\"weight\""},
      {with(base, "weight", -1.0000001), "\"weight\""},
      {with(base, "weight", "x"), "\"weight\""},
      {with(base, "weight", std::numeric_limits<double>::quiet_NaN()), "\"weight\""},
      {with(base, "weight", nullptr), "\"weight\""},
      {with(base, "usage_count", -1), "\"usage_count\""},
      {with(base, "usage_count", 2.0), "\"usage_count\""},
      {with(base, "synapse_type", "friend"), "\"synapse_type\""},
      {with(base, "source_neuron_id", "x"), "\"source_neuron_id\""},
      {with(base, "id", "33333333-3333-4333-8333-33333333333"), "\"id\""},
      {no_target, "\"target_neuron_id\""},
      {with(base, "last_traversed", 5), "\"last_traversed\""},
      {with(base, "last_traversed", "soon"), "\"last_traversed\""},
      {with(base, "metadata", Json::array()), "\"metadata\""},
      {with(base, "created_at", "2025-02-30"), "\"created_at\""},
      {with(base, "strength", 1), "\"strength\""},
      {Json("x"), "object"},
  };
  for (const auto& [doc, needle] : cases) {
    Synapse s = SomeSynapse();
    Status st = SynapseFromDocument(doc, &s);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << Dump(doc);
    EXPECT_NE(st.message().find(needle), std::string::npos)
        << st.message() << " (want " << needle << ")";
    EXPECT_EQ(Dump(SynapseToDocument(s)), Dump(base));  // unchanged
  }
}

// ---------------------------------------------------------------------------------------------
// Exports

// The original's SerializationManager, literally (calculate_checksum and the import's check).
constexpr char kOriginalChecksum[] = R"PY(
import hashlib, json
def calculate_checksum(data):
    return hashlib.sha256(json.dumps({"neurons": data["neurons"], "synapses": data["synapses"]},
                                     sort_keys=True, default=str).encode()).hexdigest()
)PY";

struct Collected {
  std::vector<Neuron> neurons;
  std::vector<Synapse> synapses;
  int neuron_batches = 0, synapse_batches = 0;
};

ImportCallbacks CollectInto(Collected* c) {
  ImportCallbacks cb;
  cb.neurons = [c](std::vector<Neuron>&& batch) {
    ++c->neuron_batches;
    for (auto& n : batch) c->neurons.push_back(std::move(n));
    return Status::Ok();
  };
  cb.synapses = [c](std::vector<Synapse>&& batch) {
    ++c->synapse_batches;
    for (auto& s : batch) c->synapses.push_back(std::move(s));
    return Status::Ok();
  };
  return cb;
}

Result<ExportCounts> ReadExportFile(const std::string& path, Collected* c,
                                    bool allow_unverified = false) {
  ASSIGN_OR_RETURN(ScopedFd fd, OpenFile(path, O_RDONLY));
  return ReadExport(fd.get(), CollectInto(c), allow_unverified);
}

Result<ExportCounts> WriteExportFile(const std::string& path, const std::vector<Neuron>& neurons,
                                     const std::vector<Synapse>& synapses, size_t batch = 100) {
  ASSIGN_OR_RETURN(ScopedFd fd, OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC, 0644));
  ExportWriter w(fd.get(), "2025-05-06T07:08:09.101112");
  RETURN_IF_ERROR(w.Begin());
  for (size_t i = 0; i < neurons.size(); i += batch) {
    RETURN_IF_ERROR(w.AddNeurons(std::vector<Neuron>(
        neurons.begin() + i, neurons.begin() + std::min(neurons.size(), i + batch))));
  }
  for (size_t i = 0; i < synapses.size(); i += batch) {
    RETURN_IF_ERROR(w.AddSynapses(std::vector<Synapse>(
        synapses.begin() + i, synapses.begin() + std::min(synapses.size(), i + batch))));
  }
  return w.Finish();
}

// A small graph: every type, odd values, enough neurons for AddNeurons to render on two threads.
void SmallGraph(std::vector<Neuron>* neurons, std::vector<Synapse>* synapses) {
  neurons->push_back(KnowledgeNeuron());
  neurons->push_back(ToolNeuron());
  neurons->push_back(MemoryNeuron());
  std::mt19937_64 rng(3);
  for (int i = 0; i < 40; ++i) {
    Neuron n;
    n.id = NewUuid();
    n.type = i % 3 == 0 ? "knowledge" : i % 3 == 1 ? "tool" : "episodic";
    n.position = {static_cast<double>(i), -0.1 * i, 1e20 * i};
    for (int k = 0; k < 16; ++k)
      n.vector.push_back(std::bit_cast<float>(static_cast<uint32_t>(rng()) & 0xbfffffffu));
    n.metadata = {{"i", i}, {"label", RandomJson(i).String()}};
    n.created_at = FormatIsoTime(static_cast<int64_t>(rng() % 2000000000000000000ull));
    n.modified_at = n.created_at;
    if (n.type == "knowledge") n.source_data = "s" + std::to_string(i);
    if (n.type == "tool") n.execution_count = -i;
    if (n.type == "episodic") n.extra = {{"when", i * 1.5}};
    neurons->push_back(std::move(n));
  }
  for (int i = 0; i < 30; ++i) {
    Synapse s;
    s.id = NewUuid();
    s.source_neuron_id = (*neurons)[i % neurons->size()].id;
    s.target_neuron_id = (*neurons)[(i * 7 + 1) % neurons->size()].id;
    s.weight = (i - 15) / 15.0;
    s.usage_count = i;
    s.synapse_type = std::string(kSynapseTypes[i % 3]);
    if (i % 2) s.last_traversed = "2025-01-01T00:00:0" + std::to_string(i % 10);
    s.metadata = {{"k", RandomJson(100 + i).String()}};
    synapses->push_back(std::move(s));
  }
}

std::string EntitiesText(const std::vector<Neuron>& neurons, const std::vector<Synapse>& synapses) {
  Json all = {{"neurons", Json::array()}, {"synapses", Json::array()}};
  for (const auto& n : neurons) all["neurons"].push_back(NeuronToDocument(n, true));
  for (const auto& s : synapses) all["synapses"].push_back(SynapseToDocument(s));
  return Dump(all);
}

TEST(Export, OriginalProgramVerifiesOurs) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  std::vector<Neuron> neurons;
  std::vector<Synapse> synapses;
  SmallGraph(&neurons, &synapses);
  Result<ExportCounts> counts = WriteExportFile(dir.Sub("ours.json"), neurons, synapses, 20);
  ASSERT_TRUE(counts.ok()) << counts.status().ToString();
  EXPECT_EQ(counts->neurons, neurons.size());
  EXPECT_EQ(counts->synapses, synapses.size());
  auto file = ReadFileToString(dir.Sub("ours.json"));
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(counts->bytes, file->size());
  EXPECT_EQ(
      file->rfind(
          "{\"version\": 1, \"export_time\": \"2025-05-06T07:08:09.101112\", \"neurons\": [\n", 0),
      0u);
  EXPECT_NE(file->find("\n], \"synapses\": [\n"), std::string::npos);
  EXPECT_NE(
      file->find(
          "\n], \"stats\": {\"neurons_loaded\": 43, \"synapses_loaded\": 30}, \"checksum\": \"" +
          counts->checksum + "\"}\n"),
      std::string::npos);
  ASSERT_OK(WriteStringToFile(dir.Sub("expected.json"), EntitiesText(neurons, synapses)));
  const std::string out = RunPython(dir, std::string(kOriginalChecksum) + R"PY(
import sys
with open(sys.argv[1]) as f:
    data = json.load(f)
assert list(data) == ["version", "export_time", "neurons", "synapses", "stats", "checksum"], list(data)
assert data["version"] == 1 and data["export_time"] == "2025-05-06T07:08:09.101112"
assert data["stats"] == {"neurons_loaded": 43, "synapses_loaded": 30}
assert calculate_checksum(data) == data["checksum"], (calculate_checksum(data), data["checksum"])
want = open(sys.argv[2]).read()
got = json.dumps({"neurons": data["neurons"], "synapses": data["synapses"]}, sort_keys=True)
assert got == want
print(data["checksum"])
)PY",
                                    {dir.Sub("ours.json"), dir.Sub("expected.json")});
  EXPECT_EQ(out, counts->checksum + "\n");

  // And we read our own file back: same entities, same checksum, in batches.
  Collected c;
  Result<ExportCounts> read = ReadExportFile(dir.Sub("ours.json"), &c);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->checksum, counts->checksum);
  EXPECT_EQ(read->bytes, counts->bytes);
  EXPECT_EQ(read->neurons, neurons.size());
  EXPECT_EQ(EntitiesText(c.neurons, c.synapses), EntitiesText(neurons, synapses));
  for (size_t i = 0; i < neurons.size(); ++i) ExpectSameNeuron(c.neurons[i], neurons[i]);
}

TEST(Export, EmptyGraph) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  Result<ExportCounts> counts = WriteExportFile(dir.Sub("e.json"), {}, {});
  ASSERT_TRUE(counts.ok()) << counts.status().ToString();
  auto file = ReadFileToString(dir.Sub("e.json"));
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(*file,
            "{\"version\": 1, \"export_time\": \"2025-05-06T07:08:09.101112\", \"neurons\": [], "
            "\"synapses\": [], \"stats\": {\"neurons_loaded\": 0, \"synapses_loaded\": 0}, "
            "\"checksum\": \"" +
                counts->checksum + "\"}\n");
  const std::string out = RunPython(dir, std::string(kOriginalChecksum) + R"PY(
import sys
data = json.load(open(sys.argv[1]))
print(calculate_checksum(data) == data["checksum"])
)PY",
                                    {dir.Sub("e.json")});
  EXPECT_EQ(out, "True\n");
  Collected c;
  Result<ExportCounts> read = ReadExportFile(dir.Sub("e.json"), &c);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->neurons + read->synapses, 0u);
  EXPECT_EQ(c.neuron_batches + c.synapse_batches, 0);
}

// The original's export_to_json: json.dump(export_data, f, indent=2), insertion-ordered keys.
constexpr char kOriginalExport[] = R"PY(
import math, struct, sys
def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]
def neuron(i, kind):
    d = {"id": "%08x-0000-4000-8000-%012x" % (i, i), "type": kind,
         "position": {"x": float(i), "y": -0.5 * i, "z": 1e-7 * i},
         "vector": [f32(math.sin(i * 7 + k)) for k in range(8)] if i % 5 else None,
         "metadata": {"name": "n\u00e9uron %d \u2603 \U0001F600" % i, "count": i, "ratio": i / 3,
                      "tags": ["x", None, True, 2 ** 63]},
         "activation_level": i / 7, "created_at": "2024-12-%02dT10:11:12.%06d" % (i % 28 + 1, i * 37),
         "modified_at": "2024-12-%02dT10:11:12" % (i % 28 + 1)}
    if kind == "knowledge":
        d.update({"source_data": "src %d" % i, "compression_ratio": 1.5, "semantic_tags": ["a", "b"],
                  "importance": 0.5 + i / 100})
    elif kind == "tool":
        d.update({"function_signature": "def f%d()" % i, "executable_code": "pass\n\tq = '\"'",
                  "input_schema": {"type": "object"}, "output_schema": {}, "execution_count": i * 10,
                  "average_execution_time": 0.001 * i, "activation_threshold": 0.5})
    else:
        d.update({"episode": i, "strength": 0.125, "context": {"where": "k\u00fcche"}})
    return d
neurons = [neuron(i, ("knowledge", "tool", "memory")[i % 3]) for i in range(1, 3001)]
neurons[0]["vector"] = [f32(0.2109375), math.nan, -0.0, f32(1e-40)]
synapses = [{"id": "%08x-1111-4111-8111-%012x" % (i, i), "source_neuron_id": neurons[i % 3000]["id"],
             "target_neuron_id": neurons[(i * 13) % 3000]["id"], "weight": (i % 21 - 10) / 10,
             "usage_count": i, "last_traversed": None if i % 2 else "2025-01-01T00:00:00.%06d" % i,
             "synapse_type": ("knowledge", "tool_input", "tool_output")[i % 3],
             "metadata": {"note": "h\u00e9llo" if i == 7 else i}, "created_at": "2025-01-01T00:00:00",
             "modified_at": None} for i in range(1, 2001)]
export_data = {"version": 1, "export_time": "2025-01-01T00:00:00.000001", "neurons": neurons,
               "synapses": synapses, "stats": {"neurons_loaded": 3000, "synapses_loaded": 2000}}
export_data["checksum"] = calculate_checksum(export_data)
with open(sys.argv[1], "w") as f:
    json.dump(export_data, f, indent=2)
with open(sys.argv[2], "w") as f:
    f.write("\n".join(json.dumps(e, sort_keys=True) for e in neurons + synapses))
print(export_data["checksum"])
)PY";

class OriginalExport : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    checksum_ = RunPython(dir_, std::string(kOriginalChecksum) + kOriginalExport,
                          {dir_.Sub("orig.json"), dir_.Sub("entities")});
    ASSERT_EQ(checksum_.size(), 65u);
    checksum_.pop_back();
    auto f = ReadFileToString(dir_.Sub("orig.json"));
    ASSERT_TRUE(f.ok());
    file_ = *f;
  }
  // Writes text as a file and reads it as an export.
  Result<ExportCounts> ReadText(const std::string& text, Collected* c) {
    EXPECT_OK_INLINE(WriteStringToFile(dir_.Sub("t.json"), text));
    return ReadExportFile(dir_.Sub("t.json"), c);
  }
  static void EXPECT_OK_INLINE(const Status& st) { EXPECT_TRUE(st.ok()) << st.ToString(); }
  // Replaces the one occurrence of from.
  std::string Tamper(const std::string& from, const std::string& to) {
    const size_t at = file_.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    EXPECT_EQ(file_.find(from, at + 1), std::string::npos) << from;
    std::string t = file_;
    if (at != std::string::npos) t.replace(at, from.size(), to);
    return t;
  }

  TempDir dir_;
  std::string checksum_;
  std::string file_;
};

TEST_F(OriginalExport, ReadsAndVerifies) {
  Collected c;
  Result<ExportCounts> r = ReadExportFile(dir_.Sub("orig.json"), &c);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->checksum, checksum_);
  EXPECT_EQ(r->neurons, 3000u);
  EXPECT_EQ(r->synapses, 2000u);
  EXPECT_EQ(r->bytes, file_.size());
  EXPECT_EQ(c.neuron_batches, 3);  // batches of 1024
  EXPECT_EQ(c.synapse_batches, 2);
  ASSERT_EQ(c.neurons.size(), 3000u);
  ASSERT_EQ(c.synapses.size(), 2000u);
  // Every entity's document is exactly what the original program holds.
  auto entities = ReadFileToString(dir_.Sub("entities"));
  ASSERT_TRUE(entities.ok());
  const auto want = Split(*entities, '\n');
  ASSERT_EQ(want.size(), 5000u);
  int failures = 0;
  for (size_t i = 0; i < want.size() && failures < 5; ++i) {
    const std::string got = i < 3000 ? Dump(NeuronToDocument(c.neurons[i], true))
                                     : Dump(SynapseToDocument(c.synapses[i - 3000]));
    if (got != want[i]) {
      ADD_FAILURE() << "python: " << want[i] << "\nours:   " << got;
      ++failures;
    }
  }
  EXPECT_TRUE(std::isnan(c.neurons[0].vector[1]));
  EXPECT_EQ(c.neurons[1].type, "memory");  // i = 2
  EXPECT_EQ(c.neurons[1].extra["context"]["where"],
            "k\xc3\xbc"
            "che");
  EXPECT_EQ(c.neurons[0].execution_count, 10);  // i = 1: a tool
  EXPECT_TRUE(c.neurons[4].vector.empty());     // i = 5: None
  EXPECT_EQ(c.synapses[0].created_at, "2025-01-01T00:00:00");
}

TEST_F(OriginalExport, TamperingIsDetected) {
  const std::vector<std::pair<std::string, std::string>> edits = {
      {"0.2109375,", "0.2109376,"},    // one float digit in a vector
      {"h\\u00e9llo", "h\\u00e9llp"},  // one metadata character
      {"\"checksum\": \"" + checksum_,
       "\"checksum\": \"" + std::string(checksum_.rbegin(), checksum_.rend())},
  };
  for (const auto& [from, to] : edits) {
    Collected c;
    Result<ExportCounts> r = ReadText(Tamper(from, to), &c);
    ASSERT_FALSE(r.ok()) << from;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("export checksum mismatch: file says "), std::string::npos)
        << r.status().message();
  }
  // Whitespace does not matter (a checksum of the data, not of the text).
  Collected c;
  Result<ExportCounts> r =
      ReadText(Tamper("\"note\": \"h\\u00e9llo\"", "\"note\"  :\n\t\"h\\u00e9llo\" "), &c);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
}

TEST_F(OriginalExport, StructuralErrors) {
  const auto read = [&](const std::string& text, bool allow_unverified = false) {
    EXPECT_OK_INLINE(WriteStringToFile(dir_.Sub("s.json"), text));
    Collected c;
    return ReadExportFile(dir_.Sub("s.json"), &c, allow_unverified);
  };
  struct Case {
    std::string text;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {"[]", "object"},
      {"{\"synapses\": [], \"neurons\": [], \"checksum\": \"x\"}",
       "\"synapses\" before \"neurons\""},
      {"{\"neurons\": [], \"checksum\": \"x\"}", "no \"synapses\""},
      {"{\"synapses\": []}", "before"},
      {"{\"checksum\": \"x\"}", "no \"neurons\""},
      {"{\"neurons\": [], \"synapses\": []}", "no \"checksum\""},
      {"{\"neurons\": {}, \"synapses\": []}", "not a list"},
      {"{\"neurons\": [], \"synapses\": [], \"checksum\": 5}", "checksum"},
      {"{\"neurons\": [5], \"synapses\": []}", "neuron #0"},
      {"{\"neurons\": [{\"type\": \"x\"}], \"synapses\": []}", "neuron #0: no \"id\""},
      {"{\"neurons\": [{\"id\": \"11111111-1111-4111-8111-111111111111\", \"type\": \"a/b\"}], "
       "\"synapses\": []}",
       "neuron #0"},
      {"{\"neurons\": [], \"synapses\": [{\"id\": \"11111111-1111-4111-8111-111111111111\"}]}",
       "synapse #0"},
      {"{\"neurons\": [], \"synapses\": [], \"checksum\": \"x\"} x", "at byte"},
      {std::string("{\"neurons\": [], \"synapses\": [], \"checksum\": \"x\"}") + '\0', "at byte"},
      {"{\"neurons\": [], \"synapses\": [], \"neurons\": []}", "duplicate"},
      {"{\"neurons\": [[" + std::string(600, '[') + std::string(600, ']') + "]], \"synapses\": []}",
       "nesting"},
      {"{\"x\": " + std::string(600, '[') + std::string(600, ']') +
           ", \"neurons\": [], \"synapses\": []}",
       "nesting"},
      {"{\"neurons\": [1e", "at byte"},
      {"", "at byte 0"},
  };
  for (const Case& c : cases) {
    Result<ExportCounts> r = read(c.text);
    ASSERT_FALSE(r.ok()) << c.text.substr(0, 80);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.needle), std::string::npos)
        << c.text.substr(0, 80) << " -> " << r.status().message();
  }
  // Without a checksum, allowed when asked; other keys are ignored wherever they are.
  Result<ExportCounts> r = read(
      "{\"a\": {\"b\": [1, {\"c\": null}]}, \"neurons\": [], \"z\": 1, \"synapses\": [], "
      "\"stats\": {}}",
      true);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // The checksum of an empty graph, as python computes it.
  const std::string out =
      RunPython(dir_, std::string(kOriginalChecksum) +
                          "print(calculate_checksum({'neurons': [], 'synapses': []}))\n");
  EXPECT_EQ(r->checksum + "\n", out);
  // A callback's error stops the import and is returned as is.
  ImportCallbacks cb;
  cb.neurons = [](std::vector<Neuron>&&) { return AlreadyExists("stop here"); };
  auto fd = OpenFile(dir_.Sub("orig.json"), O_RDONLY);
  ASSERT_TRUE(fd.ok());
  Result<ExportCounts> stopped = ReadExport(fd->get(), cb);
  ASSERT_FALSE(stopped.ok());
  EXPECT_EQ(stopped.status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(stopped.status().message(), "stop here");
}

TEST(Export, WriterCallOrder) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  auto fd = OpenFile(dir.Sub("x.json"), O_WRONLY | O_CREAT, 0644);
  ASSERT_TRUE(fd.ok());
  ExportWriter w(fd->get(), "t");
  EXPECT_FALSE(w.AddNeurons({}).ok());  // before Begin
  ASSERT_OK(w.Begin());
  EXPECT_FALSE(w.Begin().ok());
  ASSERT_OK(w.AddSynapses({SomeSynapse()}));
  EXPECT_FALSE(w.AddNeurons({KnowledgeNeuron()}).ok());  // neurons after synapses
  ASSERT_TRUE(w.Finish().ok());
  EXPECT_FALSE(w.Finish().ok());
  // A write error is reported.
  auto ro = OpenFile(dir.Sub("x.json"), O_RDONLY);
  ASSERT_TRUE(ro.ok());
  ExportWriter bad(ro->get(), "t");
  ASSERT_OK(bad.Begin());
  Result<ExportCounts> r = bad.Finish();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kIOError);
}

// ---------------------------------------------------------------------------------------------
// Size and speed

size_t PeakRssKb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoul(line.substr(6));
  }
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return static_cast<size_t>(u.ru_maxrss);
}
size_t RssKb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoul(line.substr(6));
  }
  return 0;
}
// Lets the peak RSS start again from the current RSS (Linux >= 4.0); false when not possible, and
// then the peak may include earlier tests.
bool ResetPeakRss() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  return static_cast<bool>(clear);
}

#if defined(__SANITIZE_ADDRESS__)
// ASan keeps freed memory in quarantine (RSS says nothing) and runs ~5x slower.
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

TEST(Export, LargeFileStreamsInBoundedMemory) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  // ~200 MB: 26,000 neurons of 384 float32 values (~20 bytes each as text).
  constexpr int kDim = 384, kBatch = 1000;
  const int kNeurons = kSanitized ? 5000 : 26000;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<Neuron> batch(kBatch);
  for (int i = 0; i < kBatch; ++i) {
    batch[i].type = "knowledge";
    batch[i].vector.resize(kDim);
    for (float& f : batch[i].vector) f = normal(rng);
    batch[i].metadata = {{"i", i}};
  }
  const bool reset = ResetPeakRss();
  const size_t rss0 = RssKb();
  auto fd = OpenFile(dir.Sub("big.json"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_TRUE(fd.ok());
  ExportWriter w(fd->get(), NowIsoTime());
  ASSERT_OK(w.Begin());
  const auto t0 = std::chrono::steady_clock::now();
  for (int b = 0; b < kNeurons / kBatch; ++b) {
    for (int i = 0; i < kBatch; ++i) {
      batch[i].id = NewUuid();
      batch[i].vector[0] = static_cast<float>(b);
    }
    ASSERT_OK(w.AddNeurons(batch));
  }
  Result<ExportCounts> written = w.Finish();
  const double write_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(written.ok()) << written.status().ToString();
  fd->Close().IgnoreError();
  EXPECT_GT(written->bytes, kSanitized ? 30u << 20 : 150u << 20);
  const size_t write_peak_growth_kb = PeakRssKb() - rss0;

  uint64_t seen = 0, dims = 0;
  ImportCallbacks cb;
  cb.neurons = [&](std::vector<Neuron>&& b) {
    seen += b.size();
    for (const Neuron& n : b) dims += n.vector.size();
    return Status::Ok();
  };
  auto in = OpenFile(dir.Sub("big.json"), O_RDONLY);
  ASSERT_TRUE(in.ok());
  const auto t1 = std::chrono::steady_clock::now();
  Result<ExportCounts> read = ReadExport(in->get(), cb);
  const double read_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->checksum, written->checksum);
  EXPECT_EQ(read->bytes, written->bytes);
  EXPECT_EQ(seen, static_cast<uint64_t>(kNeurons));
  EXPECT_EQ(dims, static_cast<uint64_t>(kNeurons) * kDim);
  // Since before the write: the reader may reuse heap the writer freed.
  const size_t read_peak_growth_kb = PeakRssKb() - rss0;
  printf(
      "[ info ] export %.1f MB: write %.0f MB/s, read+verify %.0f MB/s; peak RSS growth write %zu "
      "KB, "
      "write+read %zu KB (peak reset: %s)\n",
      written->bytes / 1e6, written->bytes / 1e6 / write_s, written->bytes / 1e6 / read_s,
      write_peak_growth_kb, read_peak_growth_kb, reset ? "yes" : "no");
  if (!kSanitized) {
    EXPECT_LT(write_peak_growth_kb, 64u * 1024);
    EXPECT_LT(read_peak_growth_kb, 64u * 1024);
  }
}

TEST(Speed, DumpOfOneNeuron) {
  Neuron n = KnowledgeNeuron();
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  n.vector.resize(384);
  for (float& f : n.vector) f = normal(rng);
  const Json doc = NeuronToDocument(n, true);
  std::string out;
  out.reserve(16384);
  constexpr int kRounds = 2000;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kRounds; ++i) {
    out.clear();
    PyJsonDump(doc, &out);
  }
  const double dump_ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
  const auto t1 = std::chrono::steady_clock::now();
  size_t total = 0;
  for (int i = 0; i < kRounds; ++i) {
    out.clear();
    PyJsonDump(NeuronToDocument(n, true), &out);
    total += out.size();
  }
  const double full_ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t1).count();
  printf(
      "[ info ] PyJsonDump of a 384-float neuron: %.1f ns/float (with NeuronToDocument: %.1f "
      "ns/float), "
      "%zu bytes\n",
      dump_ns / kRounds / 384, full_ns / kRounds / 384, out.size());
  EXPECT_EQ(total, out.size() * kRounds);
  EXPECT_EQ(Dump(MustParse(out)), out);
}

}  // namespace
}  // namespace modelfs::neurons
