// Tensor object files on real files in a temp dir: every codec and dtype round trips bit for bit,
// deltas (and chains of them) reconstruct NaN payloads and signed zeros, damaged files are reported
// (never crash), h5py and h5dump read what we write, and a 512 MiB tensor streams through in
// bounded memory. Ends with a throughput printout (not an assertion).
#include "stores/weights/tensor_file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <hdf5.h>
#include <malloc.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "stores/common/file_util.h"
#include "stores/weights/hdf5_util.h"
#include "tests/stores/temp_dir.h"

namespace modelfs::weights {
namespace {

using ::modelfs::testing::Exists;
using ::modelfs::testing::Pattern;
using ::modelfs::testing::TempDir;
using Shape = std::vector<uint64_t>;

constexpr char kPython[] = "/usr/bin/python3";
constexpr char kH5Dump[] = "/usr/bin/h5dump";
// Debian's hdf5-plugin-lzf installs h5py's LZF filter here (HDF5's default plugin directory for the
// serial library is /usr/local/hdf5/lib/plugin, so tools need HDF5_PLUGIN_PATH).
constexpr char kDebianPluginDir[] = "/usr/lib/x86_64-linux-gnu/hdf5/serial/plugins";

CodecSpec ParseCodec(std::string_view text) {
  auto c = CodecSpec::Parse(text);
  EXPECT_TRUE(c.ok()) << text;
  return c.ok() ? *c : CodecSpec{};
}

// Float weights as a model has them: small values around zero, a few exponents, noisy mantissas
// (shuffle + a fast codec saves ~10-25%). Element i depends only on (seed, i), so any range can be
// regenerated for comparison without keeping the tensor.
uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
void FillWeights(uint64_t seed, uint64_t first, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const uint64_t r = SplitMix(seed * 0x100000001b3ull + first + i);
    out[i] = static_cast<float>(static_cast<int32_t>(r >> 32)) * (0.05f / 2147483648.0f);
  }
}
std::string Weights(uint64_t seed, size_t count) {
  std::string s(count * 4, '\0');
  FillWeights(seed, 0, reinterpret_cast<float*>(s.data()), count);
  return s;
}

// Bytes any dtype accepts: random patterns, but bool gets 0/1 and floats avoid nothing (NaNs and
// all are welcome: files store bits).
std::string DataFor(const TensorSpec& spec, unsigned seed) {
  std::string data = Pattern(spec.DataBytes(), seed);
  if (spec.dtype == DType::kBool) {
    for (char& c : data) c = static_cast<char>(c & 1);
  }
  return data;
}

struct WriteOptions {
  CodecSpec codec = CodecSpec{Codec::kZstd, 1};
  CoralMeta meta = {"layer.weight", "Linear", "tiny-model"};
  std::optional<std::string> base_hash;
  BaseChunkFn base_fn;
  int threads = 2;
  // Append piece sizes, cycled; empty: one Append of everything.
  std::vector<size_t> pieces;
};

// Writes `data` as a tensor file; returns stored_data_bytes.
Result<uint64_t> WriteTensor(const std::string& path, const TensorSpec& spec, std::string_view data,
                             const std::string& hash, const WriteOptions& wo = {}) {
  TensorFileWriter::Options options;
  options.codec = wo.codec;
  options.meta = wo.meta;
  options.base_hash = wo.base_hash;
  options.base_fn = wo.base_fn;
  options.threads = wo.threads;
  ASSIGN_OR_RETURN(auto writer, TensorFileWriter::Create(path, spec, options));
  size_t pos = 0, k = 0;
  while (pos < data.size()) {
    size_t n = wo.pieces.empty() ? data.size() : wo.pieces[k++ % wo.pieces.size()];
    n = std::min(n, data.size() - pos);
    RETURN_IF_ERROR(writer->Append(data.data() + pos, n));
    pos += n;
  }
  RETURN_IF_ERROR(writer->Finish(hash, /*durable=*/false));
  return writer->stored_data_bytes();
}

Result<std::string> ReadAllToString(TensorFileReader& reader, const BaseChunkFn& base_fn = nullptr,
                                    int threads = 2) {
  std::string out;
  RETURN_IF_ERROR(reader.ReadAll(
      [&](const void* data, size_t len) {
        out.append(static_cast<const char*>(data), len);
        return Status::Ok();
      },
      base_fn, threads));
  return out;
}

Result<std::string> ReadFileTensor(const std::string& path, const BaseChunkFn& base_fn = nullptr,
                                   int threads = 2) {
  ASSIGN_OR_RETURN(auto reader, TensorFileReader::Open(path));
  return ReadAllToString(*reader, base_fn, threads);
}

// The same bytes, chunk by chunk through ReadChunk.
Result<std::string> ReadByChunks(TensorFileReader& reader, const BaseChunkFn& base_fn = nullptr) {
  std::string out;
  const uint64_t cb = reader.info().chunk_bytes;
  const uint64_t total = reader.info().spec.DataBytes();
  for (uint64_t i = 0; i < reader.chunk_count(); ++i) {
    const size_t len = static_cast<size_t>(std::min(cb, total - i * cb));
    std::string chunk(len, '\0');
    RETURN_IF_ERROR(reader.ReadChunk(i, chunk.data(), len, base_fn));
    out += chunk;
  }
  return out;
}

// A base_fn serving chunks of a stored tensor (itself possibly a delta with its own base_fn).
BaseChunkFn BaseFrom(TensorFileReader* reader, BaseChunkFn its_base = nullptr) {
  return [reader, its_base](uint64_t i, void* out, size_t len) {
    return reader->ReadChunk(i, out, len, its_base);
  };
}

// A base_fn serving chunks of an in-memory tensor.
BaseChunkFn BaseFromMemory(const std::string* data, uint64_t chunk_bytes) {
  return [data, chunk_bytes](uint64_t i, void* out, size_t len) {
    if (i * chunk_bytes + len > data->size()) return InvalidArgument("base chunk out of range");
    memcpy(out, data->data() + i * chunk_bytes, len);
    return Status::Ok();
  };
}

std::string Hex(std::string_view s) {
  std::string out;
  char buf[4];
  for (unsigned char c : s.substr(0, 16)) {
    snprintf(buf, sizeof buf, "%02x", c);
    out += buf;
  }
  return out;
}

// Equality of big byte strings without printing megabytes on failure.
#define EXPECT_SAME_BYTES(a, b)                                       \
  do {                                                                \
    const std::string& _a = (a);                                      \
    const std::string& _b = (b);                                      \
    EXPECT_EQ(_a.size(), _b.size());                                  \
    if (_a.size() == _b.size() && _a != _b) {                         \
      size_t _i = 0;                                                  \
      while (_a[_i] == _b[_i]) ++_i;                                  \
      ADD_FAILURE() << "bytes differ first at offset " << _i << ": "  \
                    << Hex(std::string_view(_a).substr(_i)) << " vs " \
                    << Hex(std::string_view(_b).substr(_i));          \
    }                                                                 \
  } while (0)

// ---- codecs and the chunking rule ----

TEST(CodecSpecTest, ParsesCanonicalAndShortForms) {
  struct Case {
    const char* text;
    Codec codec;
    int level;
    const char* canonical;
  } cases[] = {
      {"none", Codec::kNone, 1, "none"},     {"lzf", Codec::kLzf, 1, "lzf"},
      {"gzip", Codec::kGzip, 4, "gzip-4"},   {"gzip-1", Codec::kGzip, 1, "gzip-1"},
      {"gzip-9", Codec::kGzip, 9, "gzip-9"}, {"zstd", Codec::kZstd, 1, "zstd-1"},
      {"zstd-1", Codec::kZstd, 1, "zstd-1"}, {"zstd-22", Codec::kZstd, 22, "zstd-22"},
  };
  for (const Case& c : cases) {
    auto spec = CodecSpec::Parse(c.text);
    ASSERT_TRUE(spec.ok()) << c.text;
    EXPECT_EQ(spec->codec, c.codec) << c.text;
    EXPECT_EQ(spec->level, c.level) << c.text;
    EXPECT_EQ(spec->ToString(), c.canonical);
    EXPECT_EQ(*CodecSpec::Parse(spec->ToString()), *spec);
  }
  // The ignored level of lzf/none is the default one, so aggregate-initialized specs compare equal.
  EXPECT_EQ(*CodecSpec::Parse("lzf"), CodecSpec{Codec::kLzf});
  EXPECT_EQ(*CodecSpec::Parse("none"), CodecSpec{Codec::kNone});
  for (const char* bad : {"", "gzip-0", "gzip-10", "gzip-", "gzip-4x", "gzip-04", "zstd-0",
                          "zstd-23", "zstd--1", "ZSTD-1", "lz4", "none ", "gzip4", "zstd-1000"}) {
    auto spec = CodecSpec::Parse(bad);
    ASSERT_FALSE(spec.ok()) << bad;
    EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ChunkBytesForTest, SlabsOfAboutOneMebibyte) {
  EXPECT_EQ(ChunkBytesFor({DType::kFloat32, {}}), 4u);  // 0-d: the whole (one element)
  EXPECT_EQ(ChunkBytesFor({DType::kFloat32, {0}}), 0u);
  EXPECT_EQ(ChunkBytesFor({DType::kFloat32, {5, 0, 3}}), 0u);
  EXPECT_EQ(ChunkBytesFor({DType::kInt8, {7}}), 7u);  // small: the whole data
  EXPECT_EQ(ChunkBytesFor({DType::kFloat32, {512, 512}}), 1u << 20);
  EXPECT_EQ(ChunkBytesFor({DType::kFloat32, {1000, 1000}}), 262u * 4000);
  // A row larger than the target: slices of a row, dividing it.
  EXPECT_EQ(ChunkBytesFor({DType::kFloat32, {2, 786432}}), 1u << 20);
  // Leading dimensions of 1 do not count: 341 rows of 768 floats, the last chunk short.
  EXPECT_EQ(ChunkBytesFor({DType::kFloat32, {1, 50257, 768}}), 341u * 3072);
  // A prime row length leaves whole rows (or single elements): whole rows, up to 64 MiB.
  EXPECT_EQ(ChunkBytesFor({DType::kFloat32, {2, 3000017}}), 3000017u * 4);
  EXPECT_EQ(ChunkBytesFor({DType::kComplex128, {2, 3000017}}), 3000017u * 16);
  const Shape typical[] = {{1000, 1000},       {3, 5, 70000},      {1, 50257, 768},
                           {50257, 768},       {512, 512, 3, 3},   {4096, 11008},
                           {1 << 28},          {7, 1, 1 << 20},    {100, 3, 224, 224},
                           {1, 1, 1, 3000017}, {32, 4, 1000, 1000}};
  const Shape odd[] = {{2, 3000017}, {3, 1000003, 2}, {5, 2, 1000003}};
  for (DType dtype : {DType::kInt8, DType::kFloat16, DType::kFloat32, DType::kComplex128}) {
    for (const auto& [shapes, is_typical] : {std::pair{std::span<const Shape>(typical), true},
                                             std::pair{std::span<const Shape>(odd), false}}) {
      for (const Shape& shape : shapes) {
        const TensorSpec spec{dtype, shape};
        const uint64_t cb = ChunkBytesFor(spec);
        const std::string what = std::string(DTypeName(dtype)) + spec.ShapeText();
        ASSERT_GT(cb, 0u) << what;
        EXPECT_EQ(cb, ChunkBytesFor(spec)) << what;  // deterministic
        EXPECT_EQ(cb % ItemSize(dtype), 0u) << what;
        EXPECT_LE(cb, 64u << 20) << what;
        // A whole number of steps of some dimension k that divides k's slab, or any number when all
        // dimensions before k are 1: chunk i is then bytes [i·cb, (i+1)·cb) of the data.
        bool slab = false;
        uint64_t trailing = ItemSize(dtype);
        for (int k = static_cast<int>(shape.size()) - 1; k >= 0 && !slab; --k) {
          const uint64_t full = trailing * shape[k];
          uint64_t leading = 1;
          for (int j = 0; j < k; ++j) leading *= shape[j];
          if (cb % trailing == 0 && cb <= full && (leading == 1 || full % cb == 0)) slab = true;
          trailing = full;
        }
        EXPECT_TRUE(slab) << what << " chunk " << cb;
        if (is_typical) {
          EXPECT_GE(cb, 256u << 10) << what;
          EXPECT_LE(cb, 4u << 20) << what;
        } else {
          EXPECT_GE(cb, 64u << 10) << what;  // never thousands of tiny chunks
        }
      }
    }
  }
}

// ---- round trips ----

TEST(TensorFileTest, EveryCodecRoundTripsFloat32) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  const TensorSpec spec{DType::kFloat32, {1000, 1000}};
  const std::string data = Weights(1, 1000 * 1000);
  for (const char* codec_text : {"none", "gzip-1", "gzip-4", "gzip-9", "lzf", "zstd-1", "zstd-9"}) {
    SCOPED_TRACE(codec_text);
    const std::string path = dir.Sub(std::string(codec_text) + ".h5");
    WriteOptions wo;
    wo.codec = ParseCodec(codec_text);
    wo.pieces = {1, 7, 4093, (1 << 20) + 3, 65536};
    auto stored = WriteTensor(path, spec, data, "h-" + std::string(codec_text), wo);
    ASSERT_TRUE(stored.ok()) << stored.status().ToString();
    if (wo.codec.codec == Codec::kNone) {
      EXPECT_EQ(*stored, 4 * 1048000u);  // 4 chunks of 262 rows, the last padded
    } else {
      EXPECT_LT(*stored, data.size()) << "shuffled weights compress";
    }
    auto reader = TensorFileReader::Open(path);
    ASSERT_TRUE(reader.ok()) << reader.status().ToString();
    const TensorFileInfo& info = (*reader)->info();
    EXPECT_EQ(info.hash, "h-" + std::string(codec_text));
    EXPECT_EQ(info.spec, spec);
    EXPECT_EQ(info.codec, wo.codec);
    EXPECT_EQ(info.meta.name, "layer.weight");
    EXPECT_EQ(info.meta.layer_type, "Linear");
    EXPECT_EQ(info.meta.model_name, "tiny-model");
    EXPECT_FALSE(info.base_hash.has_value());
    EXPECT_EQ(info.chunk_bytes, 1048000u);
    EXPECT_EQ((*reader)->chunk_count(), 4u);
    EXPECT_EQ(info.chunk_xxh3.size(), 4u);
    EXPECT_EQ(info.compression_info, std::string("{\"codec\":\"") + codec_text + "\",\"shuffle\":" +
                                         (wo.codec.codec == Codec::kNone ? "false" : "true") +
                                         ",\"delta\":false,\"chunk_bytes\":1048000}");
    for (int threads : {1, 2, 3}) {
      auto back = ReadAllToString(**reader, nullptr, threads);
      ASSERT_TRUE(back.ok()) << back.status().ToString();
      EXPECT_SAME_BYTES(*back, data);
    }
    auto by_chunks = ReadByChunks(**reader);
    ASSERT_TRUE(by_chunks.ok()) << by_chunks.status().ToString();
    EXPECT_SAME_BYTES(*by_chunks, data);
  }
}

TEST(TensorFileTest, IncompressibleChunksAreStoredRawAndReadBack) {
  TempDir dir;
  const TensorSpec spec{DType::kUInt8, {3u << 20}};
  const std::string data = Pattern(spec.DataBytes(), 9);  // random bytes: nothing compresses
  for (const char* codec_text : {"gzip-1", "lzf", "zstd-1"}) {
    SCOPED_TRACE(codec_text);
    const std::string path = dir.Sub(std::string(codec_text) + ".h5");
    WriteOptions wo;
    wo.codec = ParseCodec(codec_text);
    auto stored = WriteTensor(path, spec, data, "raw", wo);
    ASSERT_TRUE(stored.ok()) << stored.status().ToString();
    EXPECT_EQ(*stored, data.size());
    auto back = ReadFileTensor(path);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_SAME_BYTES(*back, data);
  }
}

TEST(TensorFileTest, EveryDTypeAndShapeRoundTrips) {
  TempDir dir;
  const DType dtypes[] = {DType::kBool,    DType::kInt8,      DType::kUInt16,
                          DType::kInt64,   DType::kFloat16,   DType::kFloat32,
                          DType::kFloat64, DType::kComplex64, DType::kComplex128};
  const Shape shapes[] = {{}, {0}, {7}, {3, 5, 70000}, {4, 0, 2}};
  int n = 0;
  for (DType dtype : dtypes) {
    for (const Shape& shape : shapes) {
      const TensorSpec spec{dtype, shape};
      SCOPED_TRACE(std::string(DTypeName(dtype)) + spec.ShapeText());
      const std::string path = dir.Sub("t" + std::to_string(n++) + ".h5");
      const std::string data = DataFor(spec, n);
      WriteOptions wo;
      wo.codec = n % 2 ? CodecSpec{Codec::kZstd, 1} : CodecSpec{Codec::kLzf};
      wo.pieces = {3, 1000, 999999};
      auto stored = WriteTensor(path, spec, data, "hash" + std::to_string(n), wo);
      ASSERT_TRUE(stored.ok()) << stored.status().ToString();
      auto reader = TensorFileReader::Open(path);
      ASSERT_TRUE(reader.ok()) << reader.status().ToString();
      EXPECT_EQ((*reader)->info().spec, spec);
      EXPECT_EQ((*reader)->info().chunk_bytes, ChunkBytesFor(spec));
      EXPECT_EQ((*reader)->chunk_count(),
                spec.DataBytes() == 0
                    ? 0u
                    : (spec.DataBytes() + ChunkBytesFor(spec) - 1) / ChunkBytesFor(spec));
      auto back = ReadAllToString(**reader);
      ASSERT_TRUE(back.ok()) << back.status().ToString();
      EXPECT_SAME_BYTES(*back, data);
      auto by_chunks = ReadByChunks(**reader);
      ASSERT_TRUE(by_chunks.ok()) << by_chunks.status().ToString();
      EXPECT_SAME_BYTES(*by_chunks, data);
    }
  }
}

TEST(TensorFileTest, RowsLargerThanAChunk) {
  TempDir dir;
  // 3 MiB rows cut into 1 MiB slices; and a prime row length (slices must divide the row, so the
  // rule takes whole rows of 12 MB, still one file chunk per row).
  for (const Shape& shape : {Shape{2, 786432}, Shape{2, 3000017}}) {
    const TensorSpec spec{DType::kFloat32, shape};
    SCOPED_TRACE(spec.ShapeText());
    const std::string data = Weights(shape[1], spec.ElementCount());
    const std::string path = dir.Sub("rows" + std::to_string(shape[1]) + ".h5");
    WriteOptions wo;
    wo.pieces = {1 << 20, 12345};
    ASSERT_TRUE(WriteTensor(path, spec, data, "rows", wo).ok());
    auto reader = TensorFileReader::Open(path);
    ASSERT_TRUE(reader.ok()) << reader.status().ToString();
    EXPECT_GE((*reader)->chunk_count(), 2u);
    EXPECT_EQ((*reader)->info().chunk_bytes * (*reader)->chunk_count(), spec.DataBytes());
    auto back = ReadAllToString(**reader);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_SAME_BYTES(*back, data);
  }
}

// ---- deltas ----

std::string F64Bytes(const std::vector<double>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 8);
}
double FromBits(uint64_t bits) {
  double d;
  memcpy(&d, &bits, 8);
  return d;
}

TEST(TensorFileTest, DeltaChainIsBitExactForSpecialValues) {
  TempDir dir;
  // 300k float64 = 2.4 MB: three chunks, the last one short.
  const size_t count = 300000;
  const TensorSpec spec{DType::kFloat64, {count}};
  std::vector<double> a(count), b(count), c(count);
  for (size_t i = 0; i < count; ++i) a[i] = std::sin(static_cast<double>(i)) * 1e-3;
  b = a;
  c = a;
  const double specials[] = {FromBits(0x7ff8000000000001ull),  // quiet NaN with a payload
                             FromBits(0xfff0000000000badull),  // signalling NaN, sign set
                             -0.0,
                             0.0,
                             std::numeric_limits<double>::infinity(),
                             -std::numeric_limits<double>::infinity(),
                             std::numeric_limits<double>::denorm_min(),
                             -4.9e-320,
                             std::numeric_limits<double>::max()};
  for (size_t i = 0; i < count; i += 97) b[i] = specials[(i / 97) % std::size(specials)];
  for (size_t i = 0; i < count; i += 89) c[i] = specials[(i / 89 + 3) % std::size(specials)];
  c[count - 1] = -0.0;  // in the short last chunk
  const std::string da = F64Bytes(a), db = F64Bytes(b), dc = F64Bytes(c);

  const std::string pa = dir.Sub("a.h5"), pb = dir.Sub("b.h5"), pc = dir.Sub("c.h5");
  ASSERT_TRUE(WriteTensor(pa, spec, da, "aaaa").ok());
  auto ra = TensorFileReader::Open(pa);
  ASSERT_TRUE(ra.ok()) << ra.status().ToString();

  // b as a delta against a, with a served from its file.
  WriteOptions wb;
  wb.base_hash = "aaaa";
  wb.base_fn = BaseFrom(ra->get());
  wb.pieces = {4096 * 3 + 5};
  auto sb = WriteTensor(pb, spec, db, "bbbb", wb);
  ASSERT_TRUE(sb.ok()) << sb.status().ToString();
  auto rb = TensorFileReader::Open(pb);
  ASSERT_TRUE(rb.ok()) << rb.status().ToString();
  EXPECT_EQ((*rb)->info().base_hash, std::optional<std::string>("aaaa"));
  EXPECT_NE((*rb)->info().compression_info.find("\"delta\":true"), std::string::npos);
  const BaseChunkFn base_b = BaseFrom(rb->get(), BaseFrom(ra->get()));

  // c as a delta against b (a delta itself): a chain of two.
  WriteOptions wc;
  wc.base_hash = "bbbb";
  wc.base_fn = base_b;
  wc.codec = CodecSpec{Codec::kGzip, 1};
  ASSERT_TRUE(WriteTensor(pc, spec, dc, "cccc", wc).ok());
  auto rc = TensorFileReader::Open(pc);
  ASSERT_TRUE(rc.ok()) << rc.status().ToString();

  for (int threads : {1, 2}) {
    auto back_b = ReadAllToString(**rb, BaseFrom(ra->get()), threads);
    ASSERT_TRUE(back_b.ok()) << back_b.status().ToString();
    EXPECT_SAME_BYTES(*back_b, db);
    auto back_c = ReadAllToString(**rc, base_b, threads);
    ASSERT_TRUE(back_c.ok()) << back_c.status().ToString();
    EXPECT_SAME_BYTES(*back_c, dc);
  }
  auto by_chunks = ReadByChunks(**rc, base_b);
  ASSERT_TRUE(by_chunks.ok()) << by_chunks.status().ToString();
  EXPECT_SAME_BYTES(*by_chunks, dc);

  // A delta read without its base, or against the wrong base, fails and says so.
  auto no_base = ReadAllToString(**rb);
  EXPECT_EQ(no_base.status().code(), StatusCode::kInvalidArgument);
  auto wrong = ReadAllToString(**rc, BaseFrom(ra->get()));  // a instead of b
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), StatusCode::kCorruption);
  EXPECT_NE(wrong.status().message().find("checksum mismatch"), std::string::npos);
  // A failing base_fn is passed through with the chunk named.
  auto failing =
      ReadAllToString(**rb, [](uint64_t, void*, size_t) { return IOError("disk gone"); });
  ASSERT_FALSE(failing.ok());
  EXPECT_EQ(failing.status().code(), StatusCode::kIOError);
  EXPECT_NE(failing.status().message().find("base chunk"), std::string::npos);
}

TEST(TensorFileTest, DeltasOfOtherDTypesAndShapes) {
  TempDir dir;
  int n = 0;
  for (const TensorSpec& spec :
       {TensorSpec{DType::kComplex128, {70000, 3}}, TensorSpec{DType::kComplex128, {}},
        TensorSpec{DType::kFloat16, {5, 7}}, TensorSpec{DType::kBool, {1000}},
        TensorSpec{DType::kFloat32, {}}, TensorSpec{DType::kInt64, {0}}}) {
    SCOPED_TRACE(std::string(DTypeName(spec.dtype)) + spec.ShapeText());
    const std::string base = DataFor(spec, 100 + n);
    std::string target = base;
    for (size_t i = 0; i < target.size(); i += 101) target[i] = static_cast<char>(target[i] ^ 1);
    const std::string path = dir.Sub("d" + std::to_string(n++) + ".h5");
    WriteOptions wo;
    wo.base_hash = "base";
    wo.base_fn = BaseFromMemory(&base, ChunkBytesFor(spec));
    ASSERT_TRUE(WriteTensor(path, spec, target, "target", wo).ok());
    auto back = ReadFileTensor(path, BaseFromMemory(&base, ChunkBytesFor(spec)));
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_SAME_BYTES(*back, target);
  }
}

TEST(TensorFileTest, DeltaOfASlightlyChangedTensorIsSmall) {
  TempDir dir;
  const size_t count = 2 << 20;  // 8 MiB of float32
  const TensorSpec spec{DType::kFloat32, {count / 1024, 1024}};
  const std::string base = Weights(7, count);
  std::string target = base;
  auto* f = reinterpret_cast<float*>(target.data());
  for (size_t i = 0; i < count; i += 100) f[i] += 0.001f;  // 1% of the weights fine-tuned
  auto full = WriteTensor(dir.Sub("full.h5"), spec, target, "t");
  ASSERT_TRUE(full.ok()) << full.status().ToString();
  WriteOptions wo;
  wo.base_hash = "b";
  wo.base_fn = BaseFromMemory(&base, ChunkBytesFor(spec));
  auto delta = WriteTensor(dir.Sub("delta.h5"), spec, target, "t", wo);
  ASSERT_TRUE(delta.ok()) << delta.status().ToString();
  printf(
      "[ stats    ] 1%%-changed float32 8 MiB: full %llu bytes, delta %llu bytes (%.1fx smaller)\n",
      static_cast<unsigned long long>(*full), static_cast<unsigned long long>(*delta),
      static_cast<double>(*full) / *delta);
  EXPECT_LT(*delta * 10, *full);
  auto back = ReadFileTensor(dir.Sub("delta.h5"), BaseFromMemory(&base, ChunkBytesFor(spec)));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_SAME_BYTES(*back, target);
}

// ---- damage and misuse ----

// File offset and size of chunk `index` as HDF5's chunk index records them.
bool ChunkLocation(const std::string& path, uint64_t index, haddr_t* addr, hsize_t* size) {
  internal::Hdf5Lock lock = internal::LockHdf5();
  internal::H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!file.valid()) return false;
  // The file's one dataset: /weights/<hash>.
  auto reader = TensorFileReader::Open(path);
  if (!reader.ok()) return false;
  internal::H5Id dset(
      H5Dopen2(file.get(), ("/weights/" + (*reader)->info().hash).c_str(), H5P_DEFAULT));
  if (!dset.valid()) return false;
  internal::H5Id space(H5Dget_space(dset.get()));
  hsize_t offset[H5S_MAX_RANK];
  unsigned mask = 0;
  if (H5Dget_chunk_info(dset.get(), space.get(), index, offset, &mask, addr, size) < 0) {
    ADD_FAILURE() << internal::Hdf5Error("H5Dget_chunk_info").ToString();
    return false;
  }
  return true;
}

Status FlipByte(const std::string& path, uint64_t offset) {
  ASSIGN_OR_RETURN(ScopedFd fd, OpenFile(path, O_RDWR));
  char c;
  ASSIGN_OR_RETURN(size_t n, PreadFull(fd.get(), &c, 1, offset));
  if (n != 1) return IOError("short read");
  c = static_cast<char>(c ^ 0x10);
  RETURN_IF_ERROR(PwriteFull(fd.get(), &c, 1, offset));
  return fd.Close();
}

TEST(TensorFileTest, FlippedByteInAChunkIsCorruptionNamingFileAndChunk) {
  TempDir dir;
  const TensorSpec spec{DType::kFloat32, {1000, 1000}};
  const std::string data = Weights(3, 1000 * 1000);
  for (const char* codec_text : {"none", "zstd-1", "gzip-4", "lzf"}) {
    SCOPED_TRACE(codec_text);
    const std::string path = dir.Sub(std::string(codec_text) + ".h5");
    WriteOptions wo;
    wo.codec = ParseCodec(codec_text);
    ASSERT_TRUE(WriteTensor(path, spec, data, "x", wo).ok());
    haddr_t addr = 0;
    hsize_t size = 0;
    ASSERT_TRUE(ChunkLocation(path, 2, &addr, &size));
    ASSERT_GT(size, 100u);
    ASSERT_OK(FlipByte(path, addr + size / 2));
    auto reader = TensorFileReader::Open(path);
    ASSERT_TRUE(reader.ok()) << reader.status().ToString();
    auto all = ReadAllToString(**reader);
    ASSERT_FALSE(all.ok());
    EXPECT_EQ(all.status().code(), StatusCode::kCorruption) << all.status().ToString();
    EXPECT_NE(all.status().message().find(path), std::string::npos) << all.status().ToString();
    EXPECT_NE(all.status().message().find("chunk 2"), std::string::npos) << all.status().ToString();
    // The other chunks are fine; chunk 2 alone fails.
    std::string chunk(1048000, '\0');
    ASSERT_OK((*reader)->ReadChunk(1, chunk.data(), chunk.size(), nullptr));
    const Status st = (*reader)->ReadChunk(2, chunk.data(), chunk.size(), nullptr);
    EXPECT_EQ(st.code(), StatusCode::kCorruption) << st.ToString();
  }
}

TEST(TensorFileTest, TruncatedOrGarbageFilesFailCleanly) {
  TempDir dir;
  const TensorSpec spec{DType::kFloat32, {1000, 1000}};
  const std::string path = dir.Sub("t.h5");
  ASSERT_TRUE(WriteTensor(path, spec, Weights(4, 1000 * 1000), "x").ok());
  auto full = ReadFileToString(path);
  ASSERT_TRUE(full.ok());
  for (size_t keep : {full->size() - 1, full->size() / 2, size_t{4096}, size_t{100}, size_t{0}}) {
    SCOPED_TRACE(keep);
    const std::string cut = dir.Sub("cut" + std::to_string(keep) + ".h5");
    ASSERT_OK(WriteStringToFile(cut, std::string_view(*full).substr(0, keep)));
    auto back = ReadFileTensor(cut);
    ASSERT_FALSE(back.ok());
    EXPECT_EQ(back.status().code(), StatusCode::kCorruption) << back.status().ToString();
  }
  const std::string garbage = dir.Sub("garbage.h5");
  ASSERT_OK(WriteStringToFile(garbage, Pattern(100000, 5)));
  EXPECT_EQ(TensorFileReader::Open(garbage).status().code(), StatusCode::kCorruption);
  EXPECT_EQ(TensorFileReader::Open(dir.Sub("missing.h5")).status().code(), StatusCode::kNotFound);
}

TEST(TensorFileTest, MisuseIsReported) {
  TempDir dir;
  const TensorSpec spec{DType::kInt16, {1000}};
  const std::string data = DataFor(spec, 1);
  const std::string path = dir.Sub("a.h5");
  ASSERT_TRUE(WriteTensor(path, spec, data, "a").ok());
  // Never overwrites.
  EXPECT_EQ(TensorFileWriter::Create(path, spec, {}).status().code(), StatusCode::kAlreadyExists);
  // Too much data.
  {
    auto w = TensorFileWriter::Create(dir.Sub("b.h5"), spec, {});
    ASSERT_TRUE(w.ok());
    ASSERT_OK((*w)->Append(data.data(), 1000));
    EXPECT_EQ((*w)->Append(data.data(), 1001).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ((*w)->Finish("b", false).code(), StatusCode::kInvalidArgument);
  }
  // Too little data, for a chunked tensor and a 0-d one.
  for (const TensorSpec& s :
       {TensorSpec{DType::kFloat32, {3 << 20}}, TensorSpec{DType::kFloat32, {}}}) {
    const std::string p = dir.Sub("short" + std::to_string(s.shape.size()) + ".h5");
    auto w = TensorFileWriter::Create(p, s, {});
    ASSERT_TRUE(w.ok());
    ASSERT_OK((*w)->Append("ab", 2));
    EXPECT_EQ((*w)->Finish("s", false).code(), StatusCode::kInvalidArgument);
  }
  // Bad hash names and delta options.
  {
    auto w = TensorFileWriter::Create(dir.Sub("c.h5"), spec, {});
    ASSERT_TRUE(w.ok());
    ASSERT_OK((*w)->Append(data.data(), data.size()));
    EXPECT_EQ((*w)->Finish("a/b", false).code(), StatusCode::kInvalidArgument);
  }
  TensorFileWriter::Options no_fn;
  no_fn.base_hash = "base";
  EXPECT_EQ(TensorFileWriter::Create(dir.Sub("d.h5"), spec, no_fn).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE(Exists(dir.Sub("d.h5")));
  // An abandoned writer leaves a file that does not pass for a tensor file.
  {
    auto w = TensorFileWriter::Create(dir.Sub("e.h5"), TensorSpec{DType::kFloat32, {3 << 20}}, {});
    ASSERT_TRUE(w.ok());
    const std::string some = Weights(1, 1 << 20);
    ASSERT_OK((*w)->Append(some.data(), some.size()));
  }
  auto abandoned = TensorFileReader::Open(dir.Sub("e.h5"));
  EXPECT_EQ(abandoned.status().code(), StatusCode::kCorruption) << abandoned.status().ToString();
  // ReadChunk arguments.
  auto r = TensorFileReader::Open(path);
  ASSERT_TRUE(r.ok());
  std::string buf(2000, '\0');
  EXPECT_EQ((*r)->ReadChunk(1, buf.data(), 2000, nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*r)->ReadChunk(0, buf.data(), 1999, nullptr).code(), StatusCode::kInvalidArgument);
  ASSERT_OK((*r)->ReadChunk(0, buf.data(), 2000, nullptr));
  EXPECT_EQ(buf, data);
  // The sink's error ends ReadAll and comes back as it is.
  const Status sink_error =
      (*r)->ReadAll([](const void*, size_t) { return IOError("sink full"); }, nullptr, 2);
  EXPECT_EQ(sink_error.message(), "sink full");
}

TEST(TensorFileTest, DurableFinishAndDeterministicFiles) {
  TempDir dir;
  const TensorSpec spec{DType::kFloat32, {3, 5, 70000}};
  const std::string data = Weights(11, spec.ElementCount());
  WriteOptions wo;
  wo.threads = 2;
  ASSERT_TRUE(WriteTensor(dir.Sub("a.h5"), spec, data, "same", wo).ok());
  wo.threads = 1;
  wo.pieces = {77777};
  {
    TensorFileWriter::Options options;
    options.meta = wo.meta;
    auto w = TensorFileWriter::Create(dir.Sub("b.h5"), spec, options);
    ASSERT_TRUE(w.ok());
    ASSERT_OK((*w)->Append(data.data(), data.size()));
    ASSERT_OK((*w)->Finish("same", /*durable=*/true));
  }
  // Same tensor, same options: the same bytes, whatever the threads and piece sizes.
  auto a = ReadFileToString(dir.Sub("a.h5"));
  auto b = ReadFileToString(dir.Sub("b.h5"));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(*a == *b) << "files differ";
}

// ---- HDF5's own read path, through the filters RegisterFilters installs ----

// The whole dataset of an HDF5 file, read by H5Dread (HDF5 runs the filter pipeline).
Result<std::string> H5ReadAll(const std::string& path, const std::string& dataset) {
  RETURN_IF_ERROR(RegisterFilters());
  internal::Hdf5Lock lock = internal::LockHdf5();
  internal::H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!file.valid()) return internal::Hdf5Error("open " + path);
  internal::H5Id dset(H5Dopen2(file.get(), dataset.c_str(), H5P_DEFAULT));
  if (!dset.valid()) return internal::Hdf5Error("open " + dataset);
  internal::H5Id type(H5Dget_type(dset.get()));
  internal::H5Id space(H5Dget_space(dset.get()));
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  std::string out(static_cast<size_t>(n) * H5Tget_size(type.get()), '\0');
  if (H5Dread(dset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0) {
    return internal::Hdf5Error("read " + dataset);
  }
  return out;
}

TEST(TensorFileFiltersTest, HdfFiveDecodesOurChunksThroughRegisteredFilters) {
  TempDir dir;
  const TensorSpec spec{DType::kFloat32, {1000, 1000}};
  const std::string data = Weights(21, spec.ElementCount());
  // Half the chunks compress, half (random bytes) are stored raw with the filter-mask bit set.
  std::string mixed = data;
  const std::string noise = Pattern(2 * 1048000, 3);
  memcpy(mixed.data() + 1048000, noise.data(), noise.size());
  for (const char* codec_text : {"lzf", "zstd-1", "zstd-5", "gzip-4", "none"}) {
    SCOPED_TRACE(codec_text);
    const std::string path = dir.Sub(std::string(codec_text) + ".h5");
    WriteOptions wo;
    wo.codec = ParseCodec(codec_text);
    ASSERT_TRUE(WriteTensor(path, spec, mixed, "h", wo).ok());
    auto back = H5ReadAll(path, "/weights/h");
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_SAME_BYTES(*back, mixed);
  }
}

TEST(TensorFileFiltersTest, RegisteredFiltersRoundTripThroughHdf5Writes) {
  // HDF5 itself compressing with our registered LZF and zstd filters (what a dataset created in
  // this process with those ids gets), read back by HDF5.
  TempDir dir;
  ASSERT_OK(RegisterFilters());
  const std::string data = Weights(5, 300000);
  for (int filter : {32000, 32015}) {
    const std::string path = dir.Sub("f" + std::to_string(filter) + ".h5");
    {
      internal::Hdf5Lock lock = internal::LockHdf5();
      internal::H5Id file(H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT));
      ASSERT_TRUE(file.valid());
      const hsize_t dims[1] = {300000}, chunk[1] = {70000};
      internal::H5Id space(H5Screate_simple(1, dims, nullptr));
      internal::H5Id dcpl(H5Pcreate(H5P_DATASET_CREATE));
      ASSERT_GE(H5Pset_chunk(dcpl.get(), 1, chunk), 0);
      ASSERT_GE(H5Pset_shuffle(dcpl.get()), 0);
      const unsigned level[1] = {3};
      ASSERT_GE(
          H5Pset_filter(dcpl.get(), filter, H5Z_FLAG_OPTIONAL, filter == 32015 ? 1 : 0, level), 0);
      internal::H5Id dset(H5Dcreate2(file.get(), "d", H5T_IEEE_F32LE, space.get(), H5P_DEFAULT,
                                     dcpl.get(), H5P_DEFAULT));
      ASSERT_TRUE(dset.valid());
      ASSERT_GE(H5Dwrite(dset.get(), H5T_IEEE_F32LE, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()),
                0);
      if (filter == 32000) {
        // h5py's set_local convention: {revision 4, LZF API version, chunk bytes}.
        internal::H5Id plist(H5Dget_create_plist(dset.get()));
        unsigned flags = 0, cd[8] = {};
        size_t ncd = 8;
        ASSERT_GE(H5Pget_filter_by_id2(plist.get(), 32000, &flags, &ncd, cd, 0, nullptr, nullptr),
                  0);
        ASSERT_EQ(ncd, 3u);
        EXPECT_EQ(cd[0], 4u);
        EXPECT_EQ(cd[1], 0x0105u);
        EXPECT_EQ(cd[2], 280000u);
      }
    }
    auto back = H5ReadAll(path, "/d");
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_SAME_BYTES(*back, data);
  }
}

// ---- other readers: h5py and h5dump ----

std::string RunCommand(const std::string& command, int* rc) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) {
    *rc = -1;
    return "popen failed";
  }
  std::string output;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) output.append(buf, n);
  *rc = pclose(pipe);
  return output;
}

bool HavePythonH5py() {
  int rc = 0;
  RunCommand(std::string(kPython) + " -c 'import h5py, numpy'", &rc);
  return rc == 0;
}

// The script compares every listed file with its raw canonical bytes, reads the attributes as str,
// and for zstd without a registered filter checks the chunks by hand (read_direct_chunk, the zstd
// command-line tool, numpy's byte transpose): the same bytes a zstd plugin would decode.
constexpr char kInteropScript[] = R"py(
import json, shutil, subprocess, sys
import numpy as np, h5py
try:
    import hdf5plugin  # registers its bundled filters, when the build has any
except ImportError:
    hdf5plugin = None
zstd_ok = h5py.h5z.filter_avail(32015)
for line in open(sys.argv[1]):
    path, raw, dtype, shape, codec = line.split()
    shape = tuple(int(x) for x in shape.split(',') if x)
    want = np.fromfile(raw, dtype=np.dtype(dtype).newbyteorder('<')).reshape(shape)
    with h5py.File(path, 'r') as f:
        (name,) = list(f['weights'])
        d = f['weights'][name]
        a = d.attrs
        for key in ('name', 'dtype', 'layer_type', 'model_name', 'compression_info', 'hash'):
            assert isinstance(a[key], str), (key, type(a[key]))
        assert a['hash'] == name and a['dtype'] == dtype, (a['hash'], a['dtype'])
        assert tuple(int(x) for x in a['shape']) == shape, a['shape']
        assert json.loads(a['compression_info'])['codec'] == codec
        assert int(a['modelfs_format']) == 1 and len(a['chunk_xxh3']) >= 0
        if codec.startswith('zstd') and not zstd_ok:
            n = 0
            for i in range(d.id.get_num_chunks()):
                info = d.id.get_chunk_info(i)
                mask, data = d.id.read_direct_chunk(info.chunk_offset)
                if not mask & 2:
                    if shutil.which('zstd') is None:
                        print('no zstd tool: skipped', path); break
                    data = subprocess.run(['zstd', '-d', '-c', '-q'], input=data, check=True,
                                          stdout=subprocess.PIPE).stdout
                item = d.dtype.itemsize
                chunk = np.frombuffer(data, np.uint8).reshape(item, -1).T.copy().view(d.dtype)
                sl = tuple(slice(o, o + c) for o, c in zip(info.chunk_offset, d.chunks))
                part = want[sl]
                assert part.tobytes() == chunk.reshape(d.chunks)[tuple(slice(0, s) for s in part.shape)].tobytes()
                n += 1
            print('zstd-by-hand', path, n, 'chunks')
            continue
        got = d[()]
    assert got.dtype == want.dtype, (path, got.dtype, want.dtype)
    assert got.shape == want.shape, (path, got.shape, want.shape)
    assert got.tobytes() == want.tobytes(), path
    print('ok', path, codec, dtype, shape)
print('zstd filter available to h5py:', bool(zstd_ok))
)py";

TEST(TensorFileInteropTest, H5pyReadsWhatWeWrite) {
  if (!HavePythonH5py()) GTEST_SKIP() << "needs /usr/bin/python3 with h5py (python3-h5py)";
  TempDir dir;
  struct Case {
    const char* codec;
    TensorSpec spec;
  } cases[] = {
      {"gzip-4", {DType::kFloat32, {1000, 1000}}},
      {"lzf", {DType::kFloat32, {1000, 1000}}},
      {"zstd-1", {DType::kFloat32, {1000, 1000}}},
      {"none", {DType::kFloat32, {3, 5, 7}}},
      {"gzip-1", {DType::kFloat16, {300, 1000}}},
      {"lzf", {DType::kBool, {17, 3}}},
      {"gzip-4", {DType::kComplex64, {50, 50}}},
      {"lzf", {DType::kComplex128, {70000, 2}}},
      {"gzip-4", {DType::kInt64, {}}},
      {"gzip-4", {DType::kUInt16, {0, 4}}},
      {"zstd-3", {DType::kInt8, {3u << 20}}},
      {"lzf", {DType::kUInt8, {2u << 20}}},
  };
  std::string list;
  int n = 0;
  for (const Case& c : cases) {
    const std::string base = dir.Sub("f" + std::to_string(n));
    const std::string data =
        c.spec.dtype == DType::kFloat32 ? Weights(n, c.spec.ElementCount()) : DataFor(c.spec, n);
    ++n;
    WriteOptions wo;
    wo.codec = ParseCodec(c.codec);
    ASSERT_TRUE(WriteTensor(base + ".h5", c.spec, data, "hash" + std::to_string(n), wo).ok());
    ASSERT_OK(WriteStringToFile(base + ".bin", data));
    std::string shape;
    for (uint64_t d : c.spec.shape) shape += std::to_string(d) + ",";
    list += base + ".h5 " + base + ".bin " + std::string(DTypeName(c.spec.dtype)) + " " +
            (shape.empty() ? "," : shape) + " " + c.codec + "\n";
  }
  ASSERT_OK(WriteStringToFile(dir.Sub("list.txt"), list));
  ASSERT_OK(WriteStringToFile(dir.Sub("check.py"), kInteropScript));
  int rc = 0;
  const std::string out =
      RunCommand(std::string(kPython) + " " + dir.Sub("check.py") + " " + dir.Sub("list.txt"), &rc);
  EXPECT_EQ(rc, 0) << out;
  printf("%s", out.c_str());
}

TEST(TensorFileInteropTest, OurFiltersReadWhatH5pyWrites) {
  if (!HavePythonH5py()) GTEST_SKIP() << "needs /usr/bin/python3 with h5py (python3-h5py)";
  TempDir dir;
  int rc = 0;
  const std::string script =
      "import numpy as np, h5py\n"
      "a = (np.arange(250000, dtype=np.float32) * np.float32(1e-3)).reshape(500, 500)\n"
      "a[7, :] = np.frombuffer(np.random.default_rng(1).bytes(2000), np.float32)\n"
      "a.tofile('" +
      dir.Sub("coral.bin") +
      "')\n"
      "with h5py.File('" +
      dir.Sub("coral.h5") +
      "', 'w') as f:\n"
      "    f.create_dataset('weights/lzf', data=a, compression='lzf', shuffle=True, chunks=(100, "
      "500))\n"
      "    f.create_dataset('weights/gzip', data=a, compression='gzip', compression_opts=4, "
      "chunks=(64, 64))\n";
  ASSERT_OK(WriteStringToFile(dir.Sub("make.py"), script));
  const std::string out = RunCommand(std::string(kPython) + " " + dir.Sub("make.py"), &rc);
  ASSERT_EQ(rc, 0) << out;
  auto want = ReadFileToString(dir.Sub("coral.bin"));
  ASSERT_TRUE(want.ok());
  for (const char* name : {"/weights/lzf", "/weights/gzip"}) {
    auto got = H5ReadAll(dir.Sub("coral.h5"), name);
    ASSERT_TRUE(got.ok()) << name << ": " << got.status().ToString();
    EXPECT_SAME_BYTES(*got, *want);
  }
}

TEST(TensorFileInteropTest, H5dumpReadsOurFiles) {
  if (access(kH5Dump, X_OK) != 0) GTEST_SKIP() << "needs h5dump (hdf5-tools)";
  TempDir dir;
  const TensorSpec spec{DType::kFloat32, {300, 1000}};
  const std::string data = Weights(5, spec.ElementCount());
  WriteOptions wo;
  wo.codec = ParseCodec("gzip-4");
  ASSERT_TRUE(WriteTensor(dir.Sub("g.h5"), spec, data, "gzhash", wo).ok());
  int rc = 0;
  std::string out = RunCommand(std::string(kH5Dump) + " -H " + dir.Sub("g.h5"), &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("DATASET \"gzhash\""), std::string::npos) << out;
  EXPECT_NE(out.find("chunk_xxh3"), std::string::npos) << out;
  // The data, as raw little-endian bytes (h5dump -b): h5dump exits 0 and prints nothing when it
  // lacks a filter, so only the bytes tell.
  auto dump = [&](const std::string& env, const std::string& file, const std::string& dataset) {
    const std::string bin = dir.Sub("dump.bin");
    ::unlink(bin.c_str());
    out = RunCommand(env + " " + kH5Dump + " -d " + dataset + " -b LE -o " + bin + " " + file, &rc);
    EXPECT_EQ(rc, 0) << out;
    auto bytes = ReadFileToString(bin);
    return bytes.ok() ? *bytes : std::string();
  };
  EXPECT_SAME_BYTES(dump("", dir.Sub("g.h5"), "/weights/gzhash"), data);
  // LZF: Debian's hdf5-plugin-lzf, whose plugin is not linked against liblzf (3.7.0-8), hence the
  // preload.
  const std::string lzf_plugin = std::string(kDebianPluginDir) + "/liblzf_filter.so";
  const char* liblzf = "/usr/lib/x86_64-linux-gnu/liblzf.so.1";
  if (access(lzf_plugin.c_str(), R_OK) != 0 || access(liblzf, R_OK) != 0) {
    GTEST_SKIP() << "LZF part needs hdf5-plugin-lzf and liblzf1";
  }
  wo.codec = ParseCodec("lzf");
  ASSERT_TRUE(WriteTensor(dir.Sub("l.h5"), spec, data, "lzfhash", wo).ok());
  EXPECT_SAME_BYTES(
      dump(std::string("HDF5_PLUGIN_PATH=") + kDebianPluginDir + " LD_PRELOAD=" + liblzf,
           dir.Sub("l.h5"), "/weights/lzfhash"),
      data);
}

// ---- memory and speed ----

// Peak resident set since the last reset, in KiB.
long PeakRssKib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}
long CurrentRssKib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}
// Resets VmHWM to the current RSS (Linux ≥ 4.0); false when not allowed.
bool ResetPeakRss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return out.good();
}

TEST(TensorFileStreamingTest, HalfGibibyteStreamsInBoundedMemory) {
  TempDir dir;
  const uint64_t count = 128ull << 20;  // 512 MiB of float32
  const TensorSpec spec{DType::kFloat32, {count / 4096, 4096}};
  const std::string path = dir.Sub("big.h5");
  malloc_trim(0);  // what earlier tests freed is not this test's peak
  const bool reset = ResetPeakRss();
  const long before = reset ? PeakRssKib() : CurrentRssKib();
  const size_t piece = 1 << 20;
  std::vector<float> buf(piece / 4);
  {
    TensorFileWriter::Options options;
    options.codec = CodecSpec{Codec::kZstd, 1};
    auto w = TensorFileWriter::Create(path, spec, options);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    for (uint64_t first = 0; first < count; first += buf.size()) {
      FillWeights(42, first, buf.data(), buf.size());
      ASSERT_OK((*w)->Append(buf.data(), piece));
    }
    ASSERT_OK((*w)->Finish("big", false));
  }
  auto r = TensorFileReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  uint64_t pos = 0;
  bool same = true;
  std::vector<float> want;
  ASSERT_OK((*r)->ReadAll(
      [&](const void* data, size_t len) {
        want.resize(len / 4);
        FillWeights(42, pos / 4, want.data(), want.size());
        same = same && memcmp(data, want.data(), len) == 0;
        pos += len;
        return Status::Ok();
      },
      nullptr, 2));
  EXPECT_EQ(pos, spec.DataBytes());
  EXPECT_TRUE(same);
  const long growth_mib = (PeakRssKib() - before) / 1024;
  printf(
      "[ stats    ] 512 MiB write+read: peak RSS growth %ld MiB (%s; before %ld KiB, peak %ld "
      "KiB)\n",
      growth_mib, reset ? "VmHWM reset before" : "VmHWM vs RSS before", before, PeakRssKib());
  EXPECT_LT(growth_mib, 100);
}

TEST(TensorFileStreamingTest, ThroughputPrintout) {
  TempDir dir;
  const uint64_t total = 256ull << 20;
  const TensorSpec spec{DType::kFloat32, {total / 4 / 4096, 4096}};
  // 16 MiB of weights, cycled (generation must not be what is measured); chunks are compressed
  // independently, so repetition beyond a chunk does not help the codecs.
  const std::string block = Weights(77, 4 << 20);
  for (const char* codec_text : {"zstd-1", "gzip-4"}) {
    const std::string path = dir.Sub(std::string(codec_text) + ".h5");
    TensorFileWriter::Options options;
    options.codec = ParseCodec(codec_text);
    options.threads = 2;
    const auto t0 = std::chrono::steady_clock::now();
    auto w = TensorFileWriter::Create(path, spec, options);
    ASSERT_TRUE(w.ok());
    for (uint64_t pos = 0; pos < total; pos += block.size()) {
      ASSERT_OK((*w)->Append(block.data(), block.size()));
    }
    ASSERT_OK((*w)->Finish("t", false));
    const auto t1 = std::chrono::steady_clock::now();
    const uint64_t stored = (*w)->stored_data_bytes();
    auto r = TensorFileReader::Open(path);
    ASSERT_TRUE(r.ok());
    uint64_t seen = 0;
    ASSERT_OK((*r)->ReadAll(
        [&](const void*, size_t len) {
          seen += len;
          return Status::Ok();
        },
        nullptr, 2));
    const auto t2 = std::chrono::steady_clock::now();
    ASSERT_EQ(seen, total);
    const double mb = total / 1e6;
    printf(
        "[ stats    ] %s 256 MiB float32, 2 threads: write %.0f MB/s, read %.0f MB/s, "
        "stored %.1f%%\n",
        codec_text, mb / std::chrono::duration<double>(t1 - t0).count(),
        mb / std::chrono::duration<double>(t2 - t1).count(), 100.0 * stored / total);
  }
}

}  // namespace
}  // namespace modelfs::weights
