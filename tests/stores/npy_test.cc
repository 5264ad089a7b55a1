// The .npy codec against the NumPy of Debian's python3-numpy: reference files are written by
// /usr/bin/python3 into a temp dir (np.save, np.lib.format), and the codec must reproduce their
// header bytes exactly, read every variant NumPy writes (versions 2.0/3.0, big-endian, Fortran
// order), and refuse what it does not support without crashing on any input.
#include "stores/weights/npy.h"

#include <gtest/gtest.h>
#include <stdio.h>
#include <sys/wait.h>

#include <chrono>
#include <cstring>
#include <iostream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "stores/common/file_util.h"
#include "tests/stores/temp_dir.h"

namespace modelfs::weights {
namespace {

using ::modelfs::testing::TempDir;
using Shape = std::vector<uint64_t>;

constexpr char kPython[] = "/usr/bin/python3";  // Debian's, with python3-numpy

constexpr DType kAllDTypes[] = {
    DType::kBool,    DType::kInt8,    DType::kInt16,     DType::kInt32,      DType::kInt64,
    DType::kUInt8,   DType::kUInt16,  DType::kUInt32,    DType::kUInt64,     DType::kFloat16,
    DType::kFloat32, DType::kFloat64, DType::kComplex64, DType::kComplex128,
};

// A Python tuple literal written independently of TensorSpec::ShapeText: "(3,4,)", "()".
std::string PyTuple(const Shape& shape) {
  std::string s = "(";
  for (uint64_t d : shape) s += std::to_string(d) + ",";
  return s + ")";
}

std::string PyShapeList(const std::vector<Shape>& shapes) {
  std::string s = "[";
  for (const Shape& shape : shapes) s += PyTuple(shape) + ", ";
  return s + "]";
}

std::string PyDTypeList() {
  std::string s = "[";
  for (DType t : kAllDTypes) s += "'" + std::string(DTypeName(t)) + "', ";
  return s + "]";
}

// Runs a python3 script (numpy imported as np) from dir; returns its stdout, or an error text
// starting with "FAILED".
std::string RunPython(const std::string& dir, const std::string& script) {
  const std::string path = dir + "/script.py";
  Status st = WriteStringToFile(path,
                                "import os, sys, warnings\nimport numpy as np\n"
                                "from numpy.lib import format as F\nOUT = sys.argv[1]\n" +
                                    script);
  if (!st.ok()) return "FAILED writing the script: " + st.ToString();
  const std::string command = std::string(kPython) + " '" + path + "' '" + dir + "' 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return "FAILED: popen " + command;
  std::string output;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) output.append(buf, n);
  const int rc = pclose(pipe);
  if (rc != 0) return "FAILED (" + std::to_string(rc) + "): " + command + "\n" + output;
  return output;
}

std::string ReadFile(const std::string& path) {
  auto content = ReadFileToString(path);
  EXPECT_TRUE(content.ok()) << content.status().ToString();
  return content.ok() ? *content : std::string();
}

Shape NontrivialDims(const Shape& shape) {
  Shape dims;
  for (uint64_t d : shape) {
    if (d != 1) dims.push_back(d);
  }
  return dims;
}

// The descr NumPy reports for a parsed header (dtype.str): byte order resolved, '|' when moot.
std::string DescrOf(const NpyHeader& h) {
  std::string descr(CanonicalDescr(h.spec.dtype));
  if (h.big_endian) descr[0] = '>';
  return descr;
}

// A .npy prefix with `dict` as its header text, padded like NumPy (64-byte total, final '\n').
std::string MakeNpy(std::string_view dict, int major = 1) {
  const size_t prelude = major == 1 ? 10 : 12;
  std::string text(dict);
  text.append(63 - (prelude + text.size()) % 64, ' ');
  text += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  for (size_t i = 0; i < prelude - 8; ++i)
    out += static_cast<char>((text.size() >> (8 * i)) & 0xff);
  return out + text;
}

void ExpectInvalid(std::string_view prefix, std::string_view message_part) {
  auto h = ParseNpyHeader(prefix);
  ASSERT_FALSE(h.ok()) << "accepted: " << ::testing::PrintToString(std::string(prefix));
  EXPECT_EQ(h.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(h.status().message().find(message_part), std::string::npos)
      << "message: " << h.status().message() << "\nexpected to contain: " << message_part;
}

// ---- DType and TensorSpec ----

TEST(NpyDTypeTest, NamesRoundTripAndUnknownNamesAreRefused) {
  for (DType t : kAllDTypes) {
    auto back = DTypeFromName(DTypeName(t));
    ASSERT_TRUE(back.ok()) << DTypeName(t);
    EXPECT_EQ(*back, t);
  }
  for (std::string_view bad : {"", "float", "f4", "<f4", "Float32", "float32 ", "object", "str"}) {
    auto r = DTypeFromName(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(ItemSize(DType::kComplex64), 8u);
  EXPECT_EQ(CanonicalDescr(DType::kBool), "|b1");
  EXPECT_EQ(CanonicalDescr(DType::kComplex128), "<c16");
}

TEST(NpyDTypeTest, ShapeTextIsPythonsTupleRepr) {
  EXPECT_EQ((TensorSpec{DType::kFloat32, {}}).ShapeText(), "()");
  EXPECT_EQ((TensorSpec{DType::kFloat32, {5}}).ShapeText(), "(5,)");
  EXPECT_EQ((TensorSpec{DType::kFloat32, {3, 4}}).ShapeText(), "(3, 4)");
  EXPECT_EQ((TensorSpec{DType::kFloat32, {18446744073709551615u, 0}}).ShapeText(),
            "(18446744073709551615, 0)");
}

TEST(NpyDTypeTest, ElementCountAndDataBytes) {
  EXPECT_EQ((TensorSpec{DType::kFloat64, {}}).ElementCount(), 1u);
  EXPECT_EQ((TensorSpec{DType::kFloat64, {}}).DataBytes(), 8u);
  EXPECT_EQ((TensorSpec{DType::kComplex128, {3, 4}}).DataBytes(), 192u);
  EXPECT_EQ((TensorSpec{DType::kInt8, {0, 5}}).ElementCount(), 0u);
  // A partial product that wraps does not matter once a dimension is 0.
  EXPECT_EQ((TensorSpec{DType::kInt8, {1ull << 40, 1ull << 40, 0}}).ElementCount(), 0u);
}

// ---- Against files written by NumPy ----

const std::vector<Shape> kSavedShapes = {{},     {0},       {1},    {5},
                                         {3, 4}, {2, 3, 4}, {0, 5}, {1, 1, 1, 1}};

// Header-only shapes (never allocated), including a padding sweep: (1,)*n moves the header text
// through every residue mod 64 (3 characters per dimension), so NumPy's "already aligned: add a
// whole 64 bytes" case is covered, as are first axes of every digit count (the growth spaces).
std::vector<Shape> HeaderOnlyShapes() {
  std::vector<Shape> shapes = {
      {100000, 4096}, {2147483648, 3}, {18446744073709551615u}, {0, 4611686018427387904}};
  for (size_t n = 1; n <= 64; ++n) shapes.push_back(Shape(n, 1));
  uint64_t p = 1;
  for (int k = 0; k < 20; ++k, p *= 10) shapes.push_back({p, 7});
  Shape aligned = {5};  // 10 + hlen is a multiple of 64 for '<f4'
  aligned.insert(aligned.end(), 12, 1);
  aligned.push_back(100);
  shapes.push_back(aligned);
  return shapes;
}

// Shapes for the conversion tests: tiles cut unevenly, size-1 axes between others, 5 dimensions.
const std::vector<Shape> kConvertShapes = {
    {5},        {3, 4},         {2, 3, 4}, {4, 1, 3}, {1, 5, 1},   {3, 5, 7, 2, 9},
    {257, 300}, {33, 1, 65, 2}, {0, 5},    {},        {1, 1, 1, 1}};
// Variants of every conversion case, as np.save / np.lib.format.write_array wrote them.
const char* const kVariants[] = {"F", "B", "FB", "v2F", "v3FB"};

// Headers far larger than any accepted (NumPy switches to version 2.0): one dtype suffices.
constexpr size_t kHugeDims = 22000;

class NumpyReferenceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    if (!dir_->ok()) {
      setup_error_ = "no temp dir";
      return;
    }
    std::string out = RunPython(dir_->path(), R"(
DTYPES = )" + PyDTypeList() + R"(
SAVED = )" + PyShapeList(kSavedShapes) + R"(
HEADERS = )" + PyShapeList(HeaderOnlyShapes()) + R"(
CONVERT = )" + PyShapeList(kConvertShapes) + R"(
HUGE = )" + std::to_string(kHugeDims) + R"(
warnings.simplefilter('ignore')  # "Stored array in format 2.0"

def data(name, shape, seed):
    dt = np.dtype(name)
    n = 1
    for d in shape:
        n *= d
    rng = np.random.default_rng(seed)
    if dt.kind == 'b':
        return rng.integers(0, 2, n).astype(bool).reshape(shape)
    # Arbitrary bytes: every bit pattern (NaN payloads included) must survive.
    return np.frombuffer(rng.bytes(n * dt.itemsize), dtype=dt).reshape(shape).copy()

def path(*parts):
    return os.path.join(OUT, '_'.join(str(p) for p in parts))

with open(path('numpy', 'version'), 'w') as f:
    f.write(np.__version__)
with open(path('dtypes'), 'w') as f:
    for name in DTYPES:
        dt = np.dtype(name)
        f.write('%s %s %s %d\n' % (name, dt.str, dt.newbyteorder('>').str, dt.itemsize))
for i, shape in enumerate(SAVED):
    for name in DTYPES:
        a = data(name, shape, i)
        np.save(path('save', name, i) + '.npy', a)
        with open(path('save', name, i) + '.bin', 'wb') as f:
            f.write(a.tobytes())
for i, shape in enumerate(HEADERS):
    for name in DTYPES:
        # Exactly what np.save does with its array's metadata (write_array -> _write_array_header).
        d = {'descr': np.dtype(name).str, 'fortran_order': False, 'shape': shape}
        with open(path('header', name, i), 'wb') as f:
            F._write_array_header(f, d)
with open(path('header', 'huge'), 'wb') as f:
    F._write_array_header(f, {'descr': '<f4', 'fortran_order': False, 'shape': (1,) * HUGE})
for i, shape in enumerate(CONVERT):
    for name in DTYPES:
        dt = np.dtype(name)
        a = data(name, shape, 100 + i)
        le = a.astype(dt.newbyteorder('<'))
        be = a.astype(dt.newbyteorder('>'))
        np.save(path('convert', name, i, 'C'), np.array(le, order='C'))  # keeps 0-d
        np.save(path('convert', name, i, 'F'), np.array(le, order='F'))
        np.save(path('convert', name, i, 'B'), np.array(be, order='C'))
        np.save(path('convert', name, i, 'FB'), np.array(be, order='F'))
        with open(path('convert', name, i, 'v2F') + '.npy', 'wb') as f:
            F.write_array(f, np.array(le, order='F'), version=(2, 0))
        with open(path('convert', name, i, 'v3FB') + '.npy', 'wb') as f:
            F.write_array(f, np.array(be, order='F'), version=(3, 0))
print('done')
)");
    if (out != "done\n") setup_error_ = out;
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override { ASSERT_EQ(setup_error_, "") << "reference files not written"; }

  static std::string Path(const std::string& name) { return dir_->Sub(name); }

  static inline TempDir* dir_ = nullptr;
  static inline std::string setup_error_;
};

TEST_F(NumpyReferenceTest, NumpyVersionIsRecorded) {
  const std::string version = ReadFile(Path("numpy_version"));
  EXPECT_FALSE(version.empty());
  RecordProperty("numpy_version", version);
  std::cout << "reference NumPy " << version << "\n";
}

TEST_F(NumpyReferenceTest, DescrsNamesAndSizesAreNumpys) {
  std::istringstream lines(ReadFile(Path("dtypes")));
  size_t seen = 0;
  std::string name, descr, big_descr;
  size_t item_size;
  while (lines >> name >> descr >> big_descr >> item_size) {
    SCOPED_TRACE(name);
    auto t = DTypeFromName(name);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    EXPECT_EQ(CanonicalDescr(*t), descr);
    EXPECT_EQ(ItemSize(*t), item_size);
    // What NumPy writes for the big-endian variant reads back as this dtype.
    auto h = ParseNpyHeader(
        MakeNpy("{'descr': '" + big_descr + "', 'fortran_order': False, 'shape': (2,), }"));
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    EXPECT_EQ(h->spec.dtype, *t);
    EXPECT_EQ(h->big_endian, item_size > 1);
    ++seen;
  }
  EXPECT_EQ(seen, std::size(kAllDTypes));
}

TEST_F(NumpyReferenceTest, CanonicalHeaderIsNpSaveHeaderAndFileIsHeaderPlusData) {
  for (size_t i = 0; i < kSavedShapes.size(); ++i) {
    for (DType t : kAllDTypes) {
      const std::string base = Path("save_" + std::string(DTypeName(t)) + "_" + std::to_string(i));
      SCOPED_TRACE(base);
      const TensorSpec spec{t, kSavedShapes[i]};
      const std::string file = ReadFile(base + ".npy");
      const std::string data = ReadFile(base + ".bin");
      const std::string header = CanonicalHeader(spec);
      EXPECT_EQ(file.substr(0, header.size()), header);
      EXPECT_EQ(header.size() % 64, 0u);
      EXPECT_EQ(data.size(), spec.DataBytes());
      EXPECT_TRUE(header + data == file) << "the file is not CanonicalHeader + C-order data";

      auto parsed = ParseNpyHeader(file);
      ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
      EXPECT_EQ(parsed->spec, spec);
      EXPECT_FALSE(parsed->big_endian);
      EXPECT_FALSE(parsed->fortran_order);
      EXPECT_EQ(parsed->data_offset, header.size());
      EXPECT_TRUE(DataIsCanonical(*parsed));
      ASSERT_OK(CheckDataSize(*parsed, file.size()));
    }
  }
}

TEST_F(NumpyReferenceTest, CanonicalHeaderMatchesNumpyForLargeAndManyDimensionalShapes) {
  const std::vector<Shape> shapes = HeaderOnlyShapes();
  for (size_t i = 0; i < shapes.size(); ++i) {
    for (DType t : kAllDTypes) {
      SCOPED_TRACE(std::string(DTypeName(t)) + " " + PyTuple(shapes[i]));
      const TensorSpec spec{t, shapes[i]};
      const std::string expected =
          ReadFile(Path("header_" + std::string(DTypeName(t)) + "_" + std::to_string(i)));
      EXPECT_EQ(CanonicalHeader(spec), expected);
      // Whatever ParseNpyHeader accepts reads back as the same spec.
      auto parsed = ParseNpyHeader(expected);
      if (parsed.ok()) {
        EXPECT_EQ(parsed->spec, spec);
        EXPECT_EQ(parsed->data_offset, expected.size());
      }
    }
  }
  // Spot checks of what the sweep covers.
  auto accepted = [](DType t, const Shape& s) { return ParseNpyHeader(CanonicalHeader({t, s})); };
  EXPECT_TRUE(accepted(DType::kFloat32, {100000, 4096}).ok());
  EXPECT_TRUE(accepted(DType::kComplex128, {2147483648, 3}).ok());
  // NumPy's rule: the nonzero dimensions must fit, even when another dimension is 0.
  EXPECT_TRUE(accepted(DType::kInt8, {0, 4611686018427387904}).ok());
  EXPECT_FALSE(accepted(DType::kInt8, {0, 9223372036854775808u}).ok());
  EXPECT_TRUE(accepted(DType::kInt8, Shape(64, 1)).ok());
  ExpectInvalid(CanonicalHeader({DType::kInt8, Shape(65, 1)}), "more than 64 dimensions");
}

TEST_F(NumpyReferenceTest, PaddingAddsAWhole64BytesWhenTheTextIsAlreadyAligned) {
  Shape aligned = {5};
  aligned.insert(aligned.end(), 12, 1);
  aligned.push_back(100);
  const std::string header = CanonicalHeader({DType::kFloat32, aligned});
  const size_t close = header.find('}');
  // 21 - 1 growth spaces, then NumPy's padlen of 64 (not 0), then '\n'.
  EXPECT_EQ(header.size() - close - 1, 20u + 64u + 1u);
  EXPECT_EQ(header,
            ReadFile(Path("header_float32_" + std::to_string(HeaderOnlyShapes().size() - 1))));
}

TEST_F(NumpyReferenceTest, HugeHeaderFallsBackToVersion2LikeNumpy) {
  const std::string expected = ReadFile(Path("header_huge"));
  ASSERT_GT(expected.size(), 65536u);
  EXPECT_EQ(expected.substr(6, 2), std::string("\x02\x00", 2));
  EXPECT_EQ(CanonicalHeader({DType::kFloat32, Shape(kHugeDims, 1)}), expected);
  ExpectInvalid(expected, "exceeds the 64 KiB");
}

TEST_F(NumpyReferenceTest, CanonicalizeDataMatchesNumpyForBigEndianFortranAndVersions) {
  size_t converted = 0, transposed = 0;
  for (size_t i = 0; i < kConvertShapes.size(); ++i) {
    for (DType t : kAllDTypes) {
      const std::string base =
          Path("convert_" + std::string(DTypeName(t)) + "_" + std::to_string(i) + "_");
      const std::string reference = ReadFile(base + "C.npy");
      const TensorSpec spec{t, kConvertShapes[i]};
      const std::string canonical_header = CanonicalHeader(spec);
      ASSERT_EQ(reference.substr(0, canonical_header.size()), canonical_header) << base;
      const std::string canonical_data = reference.substr(canonical_header.size());
      ASSERT_EQ(canonical_data.size(), spec.DataBytes());

      for (const char* variant : kVariants) {
        const std::string v = variant;
        SCOPED_TRACE(base + v);
        const std::string file = ReadFile(base + v + ".npy");
        auto h = ParseNpyHeader(file);
        ASSERT_TRUE(h.ok()) << h.status().ToString();
        EXPECT_EQ(h->spec, spec);
        const bool fortran = v.find('F') != std::string::npos;
        const bool big = v.find('B') != std::string::npos;
        // NumPy marks an array Fortran only when it is not also C-contiguous.
        EXPECT_EQ(h->fortran_order,
                  fortran && spec.ElementCount() > 0 && NontrivialDims(spec.shape).size() > 1);
        EXPECT_EQ(h->big_endian, big && ItemSize(t) > 1);
        EXPECT_EQ(file.substr(6, 1), std::string(1, v[0] == 'v' ? v[1] - '0' : 1));
        ASSERT_OK(CheckDataSize(*h, file.size()));

        const std::string written = file.substr(h->data_offset);
        std::string out(written.size(), '\x5a');
        CanonicalizeData(*h, written.data(), out.data());
        EXPECT_TRUE(out == canonical_data) << "canonicalized data differ from NumPy's C order";
        EXPECT_TRUE(CanonicalHeader(h->spec) + out == reference);
        if (DataIsCanonical(*h)) {
          EXPECT_TRUE(written == canonical_data) << "DataIsCanonical but the bytes differ";
        } else if (spec.DataBytes() > 16 && t != DType::kBool) {
          EXPECT_FALSE(written == canonical_data) << "conversion claimed needed but not";
        }
        ++converted;
        if (h->fortran_order) ++transposed;
      }
    }
  }
  EXPECT_GT(transposed, 100u);
  std::cout << converted << " NumPy files canonicalized, " << transposed << " transposed\n";
}

// Header texts judged by both ParseNpyHeader and NumPy's own reader (np.lib.format.read_magic and
// _read_array_header, which check the dict but not that an array of that size can exist).
struct DictCase {
  std::string dict;
  int major;            // format version
  bool accepted;        // by ParseNpyHeader
  bool numpy_accepts;   // by NumPy's header reader
  std::string message;  // part of our error when refused
};

std::vector<DictCase> DictCases() {
  const std::string tail = "'fortran_order': False, 'shape': (3,), }";
  return {
      // Accepted by both: NumPy's literal syntax, in its variations.
      {"{'shape': (3, 4), 'fortran_order': True, 'descr': '<f4'}", 1, true, true, ""},
      {"{\"descr\": \"<f8\", \"fortran_order\": False, \"shape\": (3, 4)}", 1, true, true, ""},
      {"{'descr':'>i8','fortran_order':False,'shape':(3,4,),}", 1, true, true, ""},
      {"  { 'descr' : '|b1' ,\n 'fortran_order' : False ,\t'shape' : ( ) , }  \n", 1, true, true,
       ""},
      {"{'descr': '<i1', " + tail, 1, true, true, ""},
      {"{'descr': '>u1', " + tail, 1, true, true, ""},
      {"{'descr': '<b1', " + tail, 1, true, true, ""},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3L, 4L), }", 1, true, true, ""},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3L,), }", 2, true, true, ""},
      {"{'descr': '>c16', 'fortran_order': True, 'shape': (2, 3, 4), }", 3, true, true, ""},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2305843009213693951,), }", 1, true, true,
       ""},
      {"{'descr': '<f2', 'fortran_order': False, 'shape': (0, 0), }", 2, true, true, ""},
      // Refused by both.
      {"{'descr': '<f4', " + tail.substr(0, tail.size() - 1) + "'extra': 1}", 1, false, false,
       "unknown key 'extra'"},
      {"{'descr': '<f4', 'shape': (3,)}", 1, false, false, "missing key 'fortran_order'"},
      {"{'descr': '|O', " + tail, 1, false, true, "unsupported dtype '|O'"},
      {"{'descr': [('a', '<f4')], " + tail, 1, false, true, "structured"},
      {"{'descr': ('<f4', (2,)), " + tail, 1, false, true, "structured and subarray"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (5), }", 1, false, false,
       "is not a tuple"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': [3, 4], }", 1, false, false,
       "shape must be a tuple"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3.0,), }", 1, false, false,
       "dimension 3.0 is not a non-negative integer"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': ('3',), }", 1, false, false,
       "expected a dimension"},
      {"{'descr': '<f4', 'fortran_order': 0, 'shape': (3,), }", 1, false, false,
       "fortran_order must be True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3,), } x", 1, false, false,
       "unexpected text after the header dict"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3L,), }", 3, false, false,
       "dimension 3L"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3,)", 1, false, false,
       "expected ',' or '}'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (03,), }", 1, false, false,
       "leading zero"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }" + std::string(1, '\0'), 1, false,
       false, "unexpected text"},
      // Refused by us, accepted by NumPy's header reader: dtypes we do not store, shapes NumPy
      // refuses later when it creates the array, and Python syntax NumPy never writes.
      {"{'descr': '<U3', " + tail, 1, false, true, "unsupported dtype '<U3'"},
      {"{'descr': '|S5', " + tail, 1, false, true, "unsupported dtype '|S5'"},
      {"{'descr': '|V8', " + tail, 1, false, true, "unsupported dtype '|V8'"},
      {"{'descr': '<M8[s]', " + tail, 1, false, true, "unsupported dtype '<M8[s]'"},
      {"{'descr': '<m8', " + tail, 1, false, true, "unsupported dtype '<m8'"},
      {"{'descr': '<f16', " + tail, 1, false, true, "unsupported dtype '<f16'"},
      {"{'descr': 'f4', " + tail, 1, false, true, "unsupported dtype 'f4'"},
      {"{'descr': 'float32', " + tail, 1, false, true, "unsupported dtype 'float32'"},
      {"{'descr': '|f4', " + tail, 1, false, true, "does not state its byte order"},
      {"{'descr': '=i4', " + tail, 1, false, true, "does not state its byte order"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 3), }", 1, false, true,
       "negative dimension -1"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (True,), }", 1, false, true,
       "dimension True"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': ((3), 4), }", 1, false, true,
       "expected a dimension"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (0x10,), }", 1, false, true,
       "dimension 0x10"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (+3,), }", 1, false, true,
       "dimension +3"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", 1, false,
       true, "does not fit in 64 bits"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2305843009213693952,), }", 1, false,
       true, "overflows a signed 64-bit size"},
      {"{'descr': '<c16', 'fortran_order': False, 'shape': (0, 4611686018427387904, 4), }", 1,
       false, true, "overflows a signed 64-bit size"},
      {"{'descr': '<f4', 'descr': '<f8', " + tail, 1, false, true, "duplicate key 'descr'"},
      {"{'descr': '<f' '4', " + tail, 1, false, true, "expected ',' or '}'"},
      {"{'descr': u'<f4', " + tail, 1, false, true, "expected the descr string"},
      {"{'descr': '<f\\x34', " + tail, 1, false, true, "unsupported character"},
      {"{'descr': '<f4', # comment\n" + tail, 1, false, true, "expected a key"},
  };
}

TEST_F(NumpyReferenceTest, HeaderDictSyntaxAgreesWithNumpysReader) {
  const std::vector<DictCase> cases = DictCases();
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_OK(WriteStringToFile(Path("dict_" + std::to_string(i)),
                                MakeNpy(cases[i].dict, cases[i].major)));
  }
  const std::string out = RunPython(dir_->path(), "N = " + std::to_string(cases.size()) + R"(
for i in range(N):
    with open(os.path.join(OUT, 'dict_%d' % i), 'rb') as f:
        try:
            version = F.read_magic(f)
            shape, fortran, dtype = F._read_array_header(f, version)
            print(i, 'OK', ','.join(str(d) for d in shape), fortran, dtype.str)
        except Exception as e:
            print(i, 'ERR')
)");
  std::istringstream lines(out);
  std::string line;
  for (size_t i = 0; i < cases.size(); ++i) {
    const DictCase& c = cases[i];
    SCOPED_TRACE(::testing::PrintToString(c.dict) + " v" + std::to_string(c.major));
    ASSERT_TRUE(std::getline(lines, line)) << out;
    std::istringstream fields(line);
    size_t index;
    std::string verdict;
    fields >> index >> verdict;
    ASSERT_EQ(index, i) << out;
    EXPECT_EQ(verdict == "OK", c.numpy_accepts) << line;

    auto h = ParseNpyHeader(MakeNpy(c.dict, c.major));
    if (!c.accepted) {
      ExpectInvalid(MakeNpy(c.dict, c.major), c.message);
      continue;
    }
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    // We read exactly what NumPy reads.
    std::string shape_csv;
    for (uint64_t d : h->spec.shape)
      shape_csv += (shape_csv.empty() ? "" : ",") + std::to_string(d);
    std::string numpy_shape, numpy_fortran, numpy_descr;
    fields >> numpy_shape;
    if (h->spec.shape.empty()) {  // the shape column is empty: fields shift left
      numpy_fortran = numpy_shape;
      numpy_shape = "";
    } else {
      fields >> numpy_fortran;
    }
    fields >> numpy_descr;
    EXPECT_EQ(shape_csv, numpy_shape);
    EXPECT_EQ(h->fortran_order ? "True" : "False", numpy_fortran);
    EXPECT_EQ(DescrOf(*h), numpy_descr);
  }
}

// ---- Rejections without NumPy ----

TEST(NpyParseTest, RejectsBadMagicVersionsAndTruncation) {
  const std::string good = MakeNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }");
  ASSERT_TRUE(ParseNpyHeader(good).ok());
  ExpectInvalid("PK\x03\x04 an npz archive", "bad magic");
  ExpectInvalid("\x93NUMPZ\x01\x00", "bad magic");
  ExpectInvalid("\x93NUM", "truncated");
  ExpectInvalid("", "truncated");
  ExpectInvalid(std::string("\x93NUMPY\x01\x00", 8), "truncated");
  ExpectInvalid(std::string("\x93NUMPY\x02\x00\x10\x00", 10), "truncated");
  for (auto [major, minor] : {std::pair{0, 0}, {4, 0}, {1, 1}, {2, 1}, {255, 255}}) {
    std::string v = good;
    v[6] = static_cast<char>(major);
    v[7] = static_cast<char>(minor);
    ExpectInvalid(
        v, "unsupported format version " + std::to_string(major) + "." + std::to_string(minor));
  }
  // The header length runs one byte past the prefix.
  ExpectInvalid(std::string_view(good).substr(0, good.size() - 1), "runs past");
  // A version 2.0 length of 4 GiB.
  ExpectInvalid(std::string("\x93NUMPY\x02\x00\xff\xff\xff\xff{}", 14), "exceeds the 64 KiB");
  // Bytes after the header are data: ignored.
  EXPECT_TRUE(ParseNpyHeader(good + "trailing data bytes").ok());
  // Over 64 dimensions, even of size 1.
  std::string many = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  for (int i = 0; i < 65; ++i) many += "1, ";
  ExpectInvalid(MakeNpy(many + "), }"), "more than 64 dimensions");
}

TEST(NpyParseTest, DataOffsetIsTheHeaderLengthForEachVersion) {
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }";
  for (int major : {1, 2, 3}) {
    const std::string file = MakeNpy(dict, major);
    auto h = ParseNpyHeader(file);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    EXPECT_EQ(h->data_offset, file.size());
    EXPECT_EQ(h->data_offset % 64, 0u);
  }
}

TEST(NpyParseTest, CheckDataSizeWantsExactlyTheAnnouncedBytes) {
  NpyHeader h;
  h.spec = {DType::kComplex64, {3, 4}};
  h.data_offset = 128;
  ASSERT_OK(CheckDataSize(h, 128 + 96));
  for (uint64_t size : {uint64_t{128 + 95}, uint64_t{128 + 97}, uint64_t{128}, uint64_t{0}}) {
    Status st = CheckDataSize(h, size);
    ASSERT_FALSE(st.ok()) << size;
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("header says 96 data bytes, file has "), std::string::npos)
        << st.message();
  }
  EXPECT_EQ(CheckDataSize(h, 128 + 97).message(), "header says 96 data bytes, file has 97");
  h.spec.shape = {0, 5};
  ASSERT_OK(CheckDataSize(h, 128));
  EXPECT_FALSE(CheckDataSize(h, 129).ok());
  h.spec.shape = {};
  ASSERT_OK(CheckDataSize(h, 136));
}

TEST(NpyParseTest, DataIsCanonicalFollowsByteOrderAndLayout) {
  auto header = [](DType t, Shape s, bool big, bool fortran) {
    NpyHeader h;
    h.spec = {t, std::move(s)};
    h.big_endian = big;
    h.fortran_order = fortran;
    return h;
  };
  EXPECT_TRUE(DataIsCanonical(header(DType::kFloat32, {3, 4}, false, false)));
  EXPECT_FALSE(DataIsCanonical(header(DType::kFloat32, {3, 4}, true, false)));
  EXPECT_FALSE(DataIsCanonical(header(DType::kFloat32, {3, 4}, false, true)));
  EXPECT_TRUE(DataIsCanonical(header(DType::kFloat32, {1, 4, 1}, false, true)));
  EXPECT_TRUE(DataIsCanonical(header(DType::kFloat32, {}, false, true)));
  EXPECT_FALSE(DataIsCanonical(header(DType::kFloat32, {5}, true, true)));
  EXPECT_TRUE(DataIsCanonical(header(DType::kUInt8, {3, 4}, false, false)));
  EXPECT_FALSE(DataIsCanonical(header(DType::kUInt8, {3, 4}, false, true)));
  // No elements: nothing to convert.
  EXPECT_TRUE(DataIsCanonical(header(DType::kFloat64, {0, 4}, true, true)));
}

// ---- Properties ----

TensorSpec RandomSpec(std::mt19937_64& rng) {
  TensorSpec spec;
  spec.dtype = kAllDTypes[rng() % std::size(kAllDTypes)];
  const size_t ndim = rng() % 7;
  static constexpr uint64_t kDims[] = {0, 1, 1, 2, 3, 7, 64, 1000, 65535, 100000};
  uint64_t bytes = ItemSize(spec.dtype);
  for (size_t i = 0; i < ndim; ++i) {
    uint64_t d = rng() % 4 == 0 ? rng() % (uint64_t{1} << (rng() % 40)) : kDims[rng() % 10];
    uint64_t next = 0;
    if (d != 0 && (__builtin_mul_overflow(bytes, d, &next) || next > (uint64_t{1} << 62))) {
      d = 1;  // keep the byte size representable
    } else if (d != 0) {
      bytes = next;
    }
    spec.shape.push_back(d);
  }
  return spec;
}

TEST(NpyPropertyTest, CanonicalHeadersParseBackToTheirSpec) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 5000; ++i) {
    const TensorSpec spec = RandomSpec(rng);
    const std::string header = CanonicalHeader(spec);
    SCOPED_TRACE(header);
    ASSERT_EQ(header.size() % 64, 0u);
    ASSERT_EQ(header.back(), '\n');
    auto h = ParseNpyHeader(header);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    EXPECT_EQ(h->spec, spec);
    EXPECT_EQ(h->data_offset, header.size());
    EXPECT_FALSE(h->fortran_order);
    EXPECT_FALSE(h->big_endian);
  }
}

// A naive reference: per element, the Fortran offset from the C index by division.
std::string NaiveCanonical(const NpyHeader& h, const std::string& in) {
  const size_t item = ItemSize(h.spec.dtype);
  const size_t swap_unit =
      !h.big_endian                                                               ? 1
      : (h.spec.dtype == DType::kComplex64 || h.spec.dtype == DType::kComplex128) ? item / 2
                                                                                  : item;
  const uint64_t count = h.spec.ElementCount();
  const Shape& shape = h.spec.shape;
  std::string out(in.size(), '\0');
  for (uint64_t c = 0; c < count; ++c) {
    uint64_t rest = c, f = 0, stride = 1;
    std::vector<uint64_t> idx(shape.size());
    for (size_t k = shape.size(); k-- > 0;) {
      idx[k] = rest % shape[k];
      rest /= shape[k];
    }
    for (size_t k = 0; k < shape.size(); ++k) {
      f += idx[k] * stride;
      stride *= shape[k];
    }
    const uint64_t src = h.fortran_order ? f : c;
    for (size_t b = 0; b < item; ++b) {
      const size_t group = b / swap_unit * swap_unit;
      out[c * item + b] = in[src * item + group + (swap_unit - 1 - (b - group))];
    }
  }
  return out;
}

TEST(NpyPropertyTest, CanonicalizeDataMatchesANaiveTranspose) {
  std::mt19937_64 rng(11);
  for (int i = 0; i < 400; ++i) {
    NpyHeader h;
    h.spec.dtype = kAllDTypes[rng() % std::size(kAllDTypes)];
    const size_t ndim = rng() % 6;
    for (size_t k = 0; k < ndim; ++k) h.spec.shape.push_back(rng() % (k == 0 ? 260 : 6));
    h.fortran_order = rng() % 4 != 0;
    h.big_endian = ItemSize(h.spec.dtype) > 1 && rng() % 2 == 0;
    SCOPED_TRACE(std::string(DTypeName(h.spec.dtype)) + h.spec.ShapeText() +
                 (h.fortran_order ? " F" : " C") + (h.big_endian ? " BE" : " LE"));
    const std::string in = ::modelfs::testing::Pattern(h.spec.DataBytes(), i);
    std::string out(in.size(), '\0');
    CanonicalizeData(h, in.data(), out.data());
    ASSERT_TRUE(out == NaiveCanonical(h, in));
    if (DataIsCanonical(h)) {
      EXPECT_TRUE(out == in);
    }
  }
}

TEST(NpyPropertyTest, TransposesA100MBTensor) {
  NpyHeader h;
  h.spec = {DType::kFloat32, {200, 250, 500}};
  h.fortran_order = true;
  const uint64_t count = h.spec.ElementCount();
  // Element (i, j, k) holds its C-order index, stored at its Fortran offset.
  std::vector<uint32_t> in(count), out(count);
  for (uint64_t i = 0; i < 200; ++i) {
    for (uint64_t j = 0; j < 250; ++j) {
      for (uint64_t k = 0; k < 500; ++k) {
        in[i + 200 * (j + 250 * k)] = static_cast<uint32_t>((i * 250 + j) * 500 + k);
      }
    }
  }
  const auto start = std::chrono::steady_clock::now();
  CanonicalizeData(h, in.data(), out.data());
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - start)
                      .count();
  std::cout << "100 MB Fortran-order float32 to C order in " << ms << " ms\n";
  for (uint64_t c = 0; c < count; ++c) {
    if (out[c] != c) FAIL() << "element " << c << " is " << out[c];
  }
}

// Thousands of mutated headers: ParseNpyHeader must answer (never crash, never read past the
// prefix), and whatever it accepts must be self-consistent.
TEST(NpyRobustnessTest, MutatedHeadersNeverCrashAndAcceptedOnesAreConsistent) {
  std::mt19937_64 rng(20240601);
  std::vector<std::string> seeds;
  for (const DictCase& c : DictCases()) seeds.push_back(c.dict);
  for (int i = 0; i < 50; ++i) {
    std::string h = CanonicalHeader(RandomSpec(rng));
    seeds.push_back(h.substr(10));
  }
  static const char* const kTokens[] = {
      "(",
      ")",
      ",",
      ":",
      "'",
      "\"",
      "{",
      "}",
      "[",
      "]",
      "True",
      "False",
      "-1",
      "0",
      "L",
      "3L",
      "'descr'",
      "'shape'",
      "'<f4'",
      "'>c16'",
      "'|b1'",
      "1, ",
      "(1,)",
      "\\",
      "\0",
      "\x93",
      "\n",
      "  ",
      "#",
      "99999999999999999999",
      "18446744073709551615",
      "9223372036854775807",
      "'fortran_order'",
      "u",
      "((",
      "),",
      "'<U3'",
      "[('a', '<f4')]",
  };
  size_t accepted = 0;
  const int kIterations = 30000;
  for (int iter = 0; iter < kIterations; ++iter) {
    std::string text = seeds[rng() % seeds.size()];
    const int mutations = 1 + rng() % 4;
    for (int m = 0; m < mutations; ++m) {
      const size_t pos = text.empty() ? 0 : rng() % (text.size() + 1);
      switch (rng() % 5) {
        case 0:
          if (!text.empty()) text[rng() % text.size()] = static_cast<char>(rng());
          break;
        case 1:
          if (pos < text.size()) text.erase(pos, 1 + rng() % 8);
          break;
        case 2: {
          const std::string token(kTokens[rng() % std::size(kTokens)]);
          text.insert(pos, token.empty() ? std::string(1, '\0') : token);
          break;
        }
        case 3:
          text.resize(pos);
          break;
        case 4:
          if (pos < text.size()) text.insert(pos, text.substr(rng() % text.size(), 1 + rng() % 6));
          break;
      }
    }
    std::string file = MakeNpy(text, 1 + rng() % 3);
    switch (rng() % 8) {
      case 0:  // a wrong header length
        file[8] = static_cast<char>(rng());
        break;
      case 1:  // cut short
        file.resize(rng() % (file.size() + 1));
        break;
      case 2:  // a wrong version or magic byte
        file[rng() % 8] = static_cast<char>(rng());
        break;
      default:
        break;
    }
    // Parse from an exactly sized heap copy so that ASan sees any read past the prefix.
    std::unique_ptr<char[]> copy(new char[file.size() + 1]);
    std::memcpy(copy.get(), file.data(), file.size());
    auto h = ParseNpyHeader(std::string_view(copy.get(), file.size()));
    if (!h.ok()) {
      ASSERT_EQ(h.status().code(), StatusCode::kInvalidArgument);
      ASSERT_EQ(h.status().message().rfind("npy header: ", 0), 0u) << h.status().message();
      continue;
    }
    ++accepted;
    ASSERT_LE(h->data_offset, file.size());
    ASSERT_LE(h->spec.shape.size(), 64u);
    uint64_t bytes = ItemSize(h->spec.dtype);
    for (uint64_t d : h->spec.shape) {
      ASSERT_TRUE(d == 0 || !__builtin_mul_overflow(bytes, d, &bytes));
    }
    auto again = ParseNpyHeader(CanonicalHeader(h->spec));
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    ASSERT_EQ(again->spec, h->spec);
  }
  std::cout << accepted << " of " << kIterations << " mutated headers accepted\n";
  EXPECT_GT(accepted, 300u);
  EXPECT_LT(accepted, kIterations / 2u);
}

}  // namespace
}  // namespace modelfs::weights
