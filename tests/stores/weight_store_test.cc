#include "stores/weights/weight_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "stores/common/file_util.h"
#include "tests/stores/temp_dir.h"

namespace modelfs::weights {
namespace {

using ::modelfs::testing::Pattern;
using ::modelfs::testing::TempDir;
using json = nlohmann::json;

// ---- helpers ----

std::string Sha256Hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

std::string NpyBytes(const WeightTensor& t) { return CanonicalHeader(t.spec) + t.data; }
std::string HashOf(const WeightTensor& t) { return Sha256Hex(NpyBytes(t)); }

WeightTensor Tensor(DType dtype, std::vector<uint64_t> shape, std::string data,
                    CoralMeta meta = {}) {
  WeightTensor t;
  t.spec.dtype = dtype;
  t.spec.shape = std::move(shape);
  t.data = std::move(data);
  t.meta = std::move(meta);
  return t;
}

// n float32 values shaped like trained weights (small, centred, random mantissas): they compress
// a little (sign and exponent bytes), as real checkpoints do.
std::string RandomWeights(uint64_t n, uint64_t seed) {
  std::string out(n * 4, '\0');
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (uint64_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    float u1 = static_cast<float>(x >> 40) / 16777216.0f;
    float u2 = static_cast<float>((x >> 16) & 0xffffff) / 16777216.0f;
    float v = (u1 + u2 - 1.0f) * 0.05f;
    memcpy(out.data() + 4 * i, &v, 4);
  }
  return out;
}

// A fine-tune of `data` (float32): `fraction` of the elements, at pseudo-random places, changed.
// The first changes are special bit patterns: NaNs with payloads (quiet and signalling, both
// signs), -0.0, +inf, a denormal.
std::string FineTune(std::string data, double fraction, uint64_t seed) {
  const uint64_t n = data.size() / 4;
  const uint64_t changes = static_cast<uint64_t>(static_cast<double>(n) * fraction);
  const uint32_t special[] = {0x7fc00123u, 0xffa00001u, 0x7f800001u, 0x80000000u,
                              0x7f800000u, 0x00000001u, 0xffc0beefu};
  uint64_t x = seed * 0x2545f4914f6cdd1dull + 7;
  for (uint64_t c = 0; c < changes; ++c) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    uint64_t i = x % n;
    uint32_t bits;
    if (c < std::size(special)) {
      bits = special[c];
    } else {
      float v;
      memcpy(&v, data.data() + 4 * i, 4);
      v += 0.001f * static_cast<float>(static_cast<int64_t>(x >> 54) - 512) / 512.0f;
      memcpy(&bits, &v, 4);
    }
    memcpy(data.data() + 4 * i, &bits, 4);
  }
  return data;
}

// A fine-tune that changes one contiguous region of a float32 tensor: elements [begin, begin + len)
// as fractions of the size. Versions that change disjoint regions differ from each other in a
// number of sketch samples proportional to the regions between them, so which stored version a
// new one is closest to is certain.
std::string FineTuneRegion(std::string data, double begin, double len) {
  const uint64_t n = data.size() / 4;
  const uint64_t from = static_cast<uint64_t>(static_cast<double>(n) * begin);
  const uint64_t to = static_cast<uint64_t>(static_cast<double>(n) * (begin + len));
  for (uint64_t i = from; i < to && i < n; ++i) {
    float v;
    memcpy(&v, data.data() + 4 * i, 4);
    v = v * 1.01f + 0.0001f;
    memcpy(data.data() + 4 * i, &v, 4);
  }
  return data;
}

std::unique_ptr<WeightStore> OpenStore(const std::string& dir, WeightStore::Options options = {}) {
  Result<std::unique_ptr<WeightStore>> s = WeightStore::Open(dir, options);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(s).value() : nullptr;
}

std::string ReadFile(const std::string& path) { return ReadFileToString(path).value(); }

std::set<std::string> DirNames(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.insert(e.path().filename().string());
  }
  return names;
}

// Runs a Python 3 script (numpy, h5py) with arguments; returns its stdout. Fails the test when it
// does not exit 0.
std::string RunPython(const TempDir& tmp, const std::string& script, const std::string& args) {
  std::string path = tmp.Sub("script.py");
  EXPECT_TRUE(WriteStringToFile(path, script).ok());
  std::string cmd = "/usr/bin/python3 " + path + " " + args;
  FILE* p = ::popen(cmd.c_str(), "r");
  EXPECT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int rc = ::pclose(p);
  EXPECT_EQ(rc, 0) << cmd << "\n" << out;
  return out;
}

Result<StoreResult> StoreFile(WeightStore& store, const std::string& path,
                              const StoreOptions& options = {},
                              std::optional<std::string_view> expected = std::nullopt) {
  Result<ScopedFd> fd = OpenFile(path, O_RDONLY);
  if (!fd.ok()) return fd.status();
  return store.StoreNpy(fd->get(), CoralMeta{}, options, expected);
}

std::string WriteNpyToString(WeightStore& store, const std::string& hash, const TempDir& tmp) {
  std::string path = tmp.Sub("out.npy");
  ::unlink(path.c_str());
  ScopedFd fd = OpenFile(path, O_RDWR | O_CREAT | O_TRUNC, 0644).value();
  Status st = store.WriteNpy(hash, fd.get());
  EXPECT_TRUE(st.ok()) << st.ToString();
  return ReadFile(path);
}

// What a failed call must not change: the index (as the API shows it) and objects/.
struct Snapshot {
  std::vector<std::string> hashes;
  std::vector<std::pair<std::string, std::string>> names;
  uint64_t ingested = 0, stored = 0, logical = 0, deltas = 0;
  std::set<std::string> objects;
  bool operator==(const Snapshot&) const = default;
};

Snapshot Take(WeightStore& store, const std::string& dir) {
  Snapshot s;
  s.hashes = store.List();
  for (const auto& n : store.ListNames()) s.names.emplace_back(n.name, n.hash);
  StorageInfo info = store.GetStorageInfo();
  s.ingested = info.ingested_bytes;
  s.stored = info.stored_bytes;
  s.logical = info.logical_bytes;
  s.deltas = info.deltas;
  s.objects = DirNames(dir + "/objects");
  return s;
}

// The depth of hash's delta chain, walked through GetMetadata.
int Depth(WeightStore& store, const std::string& hash) {
  int depth = 0;
  std::string h = hash;
  for (;;) {
    WeightMetadata m = store.GetMetadata(h).value();
    if (!m.is_delta) return depth;
    ++depth;
    h = *m.base_hash;
  }
}

void ExpectLoads(WeightStore& store, const WeightTensor& t) {
  Result<WeightTensor> got = store.Load(HashOf(t));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->spec, t.spec);
  ASSERT_EQ(got->data.size(), t.data.size());
  EXPECT_TRUE(got->data == t.data) << "data differs";
}

// ---- hashing and the canonical form ----

// The key of a tensor is sha256(np.save(...)) for C-ordered little-endian arrays, whatever the
// dtype and shape; WriteNpy gives the very bytes back.
TEST(WeightStoreTest, HashIsSha256OfNumpySave) {
  TempDir tmp;
  const char* script = R"py(
import hashlib, sys, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(7)
arrays = {
  "f32_2d": rng.standard_normal((37, 129)).astype(np.float32),
  "i64_1d": np.arange(-50, 1000, dtype=np.int64),
  "f64_0d": np.array(3.25),
  "bool": rng.integers(0, 2, (5, 6, 7)).astype(bool),
  "c64": (rng.standard_normal(300) + 1j * rng.standard_normal(300)).astype(np.complex64),
  "f16": rng.standard_normal((64, 3)).astype(np.float16),
  "u8_empty": np.zeros((0, 3), dtype=np.uint8),
  "i16_4d": rng.integers(-30000, 30000, (3, 4, 5, 6)).astype(np.int16),
}
for name, a in arrays.items():
  np.save(f"{d}/{name}.npy", a)
  print(name, hashlib.sha256(open(f"{d}/{name}.npy", "rb").read()).hexdigest())
)py";
  std::string out = RunPython(tmp, script, tmp.path());
  auto store = OpenStore(tmp.Sub("store"));
  ASSERT_TRUE(store);
  std::istringstream lines(out);
  std::string name, sha;
  int count = 0;
  while (lines >> name >> sha) {
    std::string path = tmp.Sub(name + ".npy");
    Result<StoreResult> r = StoreFile(*store, path);
    ASSERT_TRUE(r.ok()) << name << ": " << r.status().ToString();
    EXPECT_EQ(r->hash, sha) << name;
    EXPECT_TRUE(r->added);
    EXPECT_EQ(WriteNpyToString(*store, sha, tmp), ReadFile(path)) << name;
    WeightMetadata m = store->GetMetadata(sha).value();
    EXPECT_EQ(m.npy_bytes, ReadFile(path).size()) << name;
    ++count;
  }
  EXPECT_EQ(count, 8);
  EXPECT_TRUE(store->Verify().value().empty());
}

TEST(WeightStoreTest, StoreHashesCanonicalBytesAndDeduplicates) {
  TempDir tmp;
  auto store = OpenStore(tmp.Sub("store"));
  ASSERT_TRUE(store);
  WeightTensor t = Tensor(DType::kFloat32, {256, 64}, RandomWeights(256 * 64, 1));
  Result<StoreResult> first = store->Store(t);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->hash, HashOf(t));
  EXPECT_TRUE(first->added);
  EXPECT_TRUE(WeightStore::IsHash(first->hash));
  auto objects_before = DirNames(tmp.Sub("store/objects"));

  Result<StoreResult> second = store->Store(t);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->hash, first->hash);
  EXPECT_FALSE(second->added);
  EXPECT_EQ(store->List(), std::vector<std::string>{first->hash});
  EXPECT_EQ(DirNames(tmp.Sub("store/objects")), objects_before);

  StorageInfo info = store->GetStorageInfo();
  const uint64_t npy = NpyBytes(t).size();
  EXPECT_EQ(info.tensors, 1u);
  EXPECT_EQ(info.logical_bytes, npy);
  EXPECT_EQ(info.ingested_bytes, 2 * npy);
  EXPECT_DOUBLE_EQ(info.dedup_ratio, 2.0);
  EXPECT_TRUE(store->Exists(first->hash));
  EXPECT_FALSE(store->Exists(std::string(64, 'a')));

  // The counters survive a reopen.
  ASSERT_TRUE(store->Close().ok());
  store = OpenStore(tmp.Sub("store"));
  EXPECT_EQ(store->GetStorageInfo().ingested_bytes, 2 * npy);
  ExpectLoads(*store, t);
}

TEST(WeightStoreTest, StoreRejectsWrongDataSize) {
  TempDir tmp;
  auto store = OpenStore(tmp.Sub("store"));
  WeightTensor t = Tensor(DType::kFloat32, {3, 3}, std::string(35, 'x'));
  EXPECT_EQ(store->Store(t).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(store->List().empty());
}

TEST(WeightStoreTest, EveryCodecStoresAndLoads) {
  for (const char* codec : {"none", "gzip-4", "gzip-9", "lzf", "zstd-1", "zstd-9"}) {
    SCOPED_TRACE(codec);
    TempDir tmp;
    WeightStore::Options options;
    options.codec = CodecSpec::Parse(codec).value();
    auto store = OpenStore(tmp.Sub("store"), options);
    ASSERT_TRUE(store);
    EXPECT_EQ(store->codec().ToString(), options.codec->ToString());
    // Compressible (a ramp of small integers) and incompressible tensors, several chunks each.
    std::string ramp(3 << 20, '\0');
    for (size_t i = 0; i < ramp.size() / 4; ++i) {
      float v = static_cast<float>(i % 1000);
      memcpy(ramp.data() + 4 * i, &v, 4);
    }
    WeightTensor a = Tensor(DType::kFloat32, {768, 1024}, ramp);
    WeightTensor b = Tensor(DType::kInt8, {3000, 701}, Pattern(3000 * 701, 3));
    ASSERT_TRUE(store->Store(a).ok());
    ASSERT_TRUE(store->Store(b).ok());
    ExpectLoads(*store, a);
    ExpectLoads(*store, b);
    WeightMetadata m = store->GetMetadata(HashOf(a)).value();
    EXPECT_EQ(json::parse(m.compression_info)["codec"], options.codec->ToString());
    if (std::string(codec) != "none") {
      EXPECT_LT(m.stored_bytes, a.data.size() / 2);
    }
    EXPECT_TRUE(store->Verify().value().empty());
    ASSERT_TRUE(store->Close().ok());

    // The codec is the store's for good.
    WeightStore::Options other;
    other.codec = CodecSpec::Parse(std::string(codec) == "lzf" ? "zstd-1" : "lzf").value();
    EXPECT_EQ(WeightStore::Open(tmp.Sub("store"), other).status().code(),
              StatusCode::kInvalidArgument);
    auto again = OpenStore(tmp.Sub("store"));
    ASSERT_TRUE(again);
    EXPECT_EQ(again->codec().ToString(), options.codec->ToString());
    ExpectLoads(*again, b);
  }
}

TEST(WeightStoreTest, ZeroDimEmptyAndLargeTensors) {
  TempDir tmp;
  auto store = OpenStore(tmp.Sub("store"));
  WeightTensor scalar =
      Tensor(DType::kFloat64, {}, std::string("\x00\x00\x00\x00\x00\x00\x0a\x40", 8));
  WeightTensor empty = Tensor(DType::kFloat32, {0, 5}, "");
  WeightTensor empty1 = Tensor(DType::kInt64, {0}, "");
  WeightTensor large = Tensor(DType::kFloat32, {4096, 4096}, RandomWeights(4096 * 4096, 5));
  for (const WeightTensor* t : {&scalar, &empty, &empty1, &large}) {
    Result<StoreResult> r = store->Store(*t);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->hash, HashOf(*t));
    ExpectLoads(*store, *t);
    EXPECT_EQ(WriteNpyToString(*store, r->hash, tmp), NpyBytes(*t));
  }
  EXPECT_NE(HashOf(empty), HashOf(empty1));
  EXPECT_EQ(store->List().size(), 4u);
  EXPECT_TRUE(store->Verify().value().empty());
}

// Fortran order and big-endian data are stored as the canonical (C-ordered, little-endian) tensor:
// the key is what np.save of np.ascontiguousarray(a, a.dtype.newbyteorder('<')) hashes to.
TEST(WeightStoreTest, FortranAndBigEndianNpyAreCanonicalized) {
  TempDir tmp;
  const char* script = R"py(
import hashlib, io, sys, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(3)
cases = {
  "fortran_f32": np.asfortranarray(rng.standard_normal((300, 70)).astype(np.float32)),
  "fortran_i16_3d": np.asfortranarray(rng.integers(-9, 9, (5, 6, 7)).astype(np.int16)),
  "big_f64": rng.standard_normal((40, 50)).astype(">f8"),
  "big_fortran_i32": np.asfortranarray(rng.integers(-9, 9, (33, 17)).astype(">i4")),
  "big_c128": (rng.standard_normal(50) + 1j).astype(">c16"),
}
for name, a in cases.items():
  np.save(f"{d}/{name}.npy", a)
  canon = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
  buf = io.BytesIO(); np.save(buf, canon)
  open(f"{d}/{name}.canon.npy", "wb").write(buf.getvalue())
  print(name, hashlib.sha256(buf.getvalue()).hexdigest())
)py";
  std::string out = RunPython(tmp, script, tmp.path());
  auto store = OpenStore(tmp.Sub("store"));
  std::istringstream lines(out);
  std::string name, sha;
  int count = 0;
  while (lines >> name >> sha) {
    std::string before = ReadFile(tmp.Sub(name + ".npy"));
    Result<StoreResult> r = StoreFile(*store, tmp.Sub(name + ".npy"));
    ASSERT_TRUE(r.ok()) << name << ": " << r.status().ToString();
    EXPECT_EQ(r->hash, sha) << name;
    EXPECT_EQ(WriteNpyToString(*store, sha, tmp), ReadFile(tmp.Sub(name + ".canon.npy"))) << name;
    EXPECT_EQ(ReadFile(tmp.Sub(name + ".npy")), before) << "the staged file was modified";
    ++count;
  }
  EXPECT_EQ(count, 5);
  // No scratch file is left behind.
  EXPECT_TRUE(DirNames(store->staging_dir()).empty());
}

TEST(WeightStoreTest, InvalidNpyLeavesStoreUnchanged) {
  TempDir tmp;
  auto store = OpenStore(tmp.Sub("store"));
  WeightTensor t = Tensor(DType::kFloat32, {100}, RandomWeights(100, 9));
  ASSERT_TRUE(store->Store(t).ok());
  ASSERT_TRUE(store->SetName("kept", HashOf(t)).ok());
  const Snapshot before = Take(*store, tmp.Sub("store"));

  const std::string good = NpyBytes(Tensor(DType::kFloat32, {64}, RandomWeights(64, 2)));
  std::string lying = good;  // says 65 elements, holds 64
  lying.replace(lying.find("(64,)"), 5, "(65,)");
  std::string unicode = good;
  unicode.replace(unicode.find("'<f4'"), 5, "'<U3'");
  std::string bad_magic = good;
  bad_magic[1] = 'X';
  const std::map<std::string, std::string> cases = {
      {"bad magic", bad_magic},
      {"lying header", lying},
      {"unicode dtype", unicode},
      {"truncated data", good.substr(0, good.size() - 3)},
      {"trailing data", good + "xyz"},
      {"header only", good.substr(0, 10)},
      {"empty file", ""},
  };
  for (const auto& [what, bytes] : cases) {
    std::string path = tmp.Sub("bad.npy");
    ASSERT_TRUE(WriteStringToFile(path, bytes).ok());
    Result<StoreResult> r = StoreFile(*store, path);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument)
        << what << ": " << r.status().ToString();
    EXPECT_EQ(ReadFile(path), bytes) << what << ": staged file touched";
    EXPECT_TRUE(Take(*store, tmp.Sub("store")) == before) << what;
  }
  EXPECT_TRUE(DirNames(store->staging_dir()).empty());
}

TEST(WeightStoreTest, ExpectedHashMismatchIsInvalidArgument) {
  TempDir tmp;
  auto store = OpenStore(tmp.Sub("store"));
  WeightTensor t = Tensor(DType::kInt32, {1000}, Pattern(4000, 4));
  std::string path = tmp.Sub("t.npy");
  ASSERT_TRUE(WriteStringToFile(path, NpyBytes(t)).ok());
  const Snapshot before = Take(*store, tmp.Sub("store"));
  const std::string wrong(64, '0');
  Result<StoreResult> r = StoreFile(*store, path, {}, wrong);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("content hashes to " + HashOf(t) + ", not " + wrong),
            std::string::npos)
      << r.status().message();
  EXPECT_TRUE(Take(*store, tmp.Sub("store")) == before);
  EXPECT_TRUE(DirNames(store->staging_dir()).empty());
  Result<StoreResult> ok = StoreFile(*store, path, {}, HashOf(t));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->hash, HashOf(t));
}

// ---- deltas ----

TEST(WeightStoreTest, FineTuneIsStoredAsSmallBitExactDelta) {
  TempDir tmp;
  auto store = OpenStore(tmp.Sub("store"));
  const uint64_t n = 4 << 20;  // 16 MiB of float32
  WeightTensor base = Tensor(DType::kFloat32, {2048, 2048}, RandomWeights(n, 11),
                             CoralMeta{"layer.weight", "Linear", "base-model"});
  WeightTensor tuned = Tensor(DType::kFloat32, {2048, 2048}, FineTune(base.data, 0.01, 12),
                              CoralMeta{"layer.weight", "Linear", "tuned-model"});
  Result<StoreResult> rb = store->Store(base);
  ASSERT_TRUE(rb.ok()) << rb.status().ToString();
  EXPECT_FALSE(rb->as_delta);
  ASSERT_TRUE(store->SetName("layer.weight", rb->hash).ok());
  Result<StoreResult> rt = store->Store(tuned);
  ASSERT_TRUE(rt.ok()) << rt.status().ToString();
  EXPECT_TRUE(rt->as_delta);

  WeightMetadata mb = store->GetMetadata(rb->hash).value();
  WeightMetadata mt = store->GetMetadata(rt->hash).value();
  EXPECT_TRUE(mt.is_delta);
  EXPECT_EQ(mt.base_hash, rb->hash);
  EXPECT_EQ(mt.meta.model_name, "tuned-model");
  EXPECT_LT(mt.stored_bytes * 5, mb.stored_bytes)
      << "delta " << mt.stored_bytes << " vs full " << mb.stored_bytes;
  json info = json::parse(mt.compression_info);
  EXPECT_EQ(info["delta"], true);
  EXPECT_EQ(info["base"], rb->hash);

  ExpectLoads(*store, tuned);
  ExpectLoads(*store, base);
  EXPECT_EQ(WriteNpyToString(*store, rt->hash, tmp), NpyBytes(tuned));
  EXPECT_TRUE(store->Verify().value().empty());
  StorageInfo info2 = store->GetStorageInfo();
  EXPECT_EQ(info2.deltas, 1u);
  EXPECT_GT(info2.compression_ratio, 1.5);

  // allow_delta=false stores in full.
  TempDir tmp2;
  auto plain = OpenStore(tmp2.Sub("store"));
  ASSERT_TRUE(plain->Store(base).ok());
  StoreOptions no_delta;
  no_delta.allow_delta = false;
  Result<StoreResult> full = plain->Store(tuned, no_delta);
  ASSERT_TRUE(full.ok());
  EXPECT_FALSE(full->as_delta);
  EXPECT_FALSE(plain->GetMetadata(full->hash)->is_delta);
}

// An unrelated tensor of the same shape is not delta-encoded (the sketch rejects it).
TEST(WeightStoreTest, UnrelatedTensorIsStoredInFull) {
  TempDir tmp;
  auto store = OpenStore(tmp.Sub("store"));
  WeightTensor a = Tensor(DType::kFloat32, {512, 512}, RandomWeights(512 * 512, 1));
  WeightTensor b = Tensor(DType::kFloat32, {512, 512}, RandomWeights(512 * 512, 2));
  ASSERT_TRUE(store->Store(a).ok());
  Result<StoreResult> rb = store->Store(b);
  ASSERT_TRUE(rb.ok());
  EXPECT_FALSE(rb->as_delta);
}

TEST(WeightStoreTest, DeltaChainsAreBounded) {
  TempDir tmp;
  auto store = OpenStore(tmp.Sub("store"));
  const uint64_t n = 1 << 20;  // 4 MiB
  std::vector<WeightTensor> versions;
  versions.push_back(Tensor(DType::kFloat32, {1024, 1024}, RandomWeights(n, 21)));
  for (int i = 1; i < 9; ++i) {
    versions.push_back(
        Tensor(DType::kFloat32, {1024, 1024}, FineTuneRegion(versions.back().data, 0.1 * i, 0.03)));
  }
  int max_depth = 0;
  for (const WeightTensor& v : versions) {
    Result<StoreResult> r = store->Store(v);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    int depth = Depth(*store, r->hash);
    EXPECT_LE(depth, kMaxDeltaDepth);
    max_depth = std::max(max_depth, depth);
  }
  EXPECT_EQ(max_depth, kMaxDeltaDepth) << "chains should grow up to the bound";
  for (const WeightTensor& v : versions) ExpectLoads(*store, v);
  EXPECT_TRUE(store->Verify().value().empty());
}

TEST(WeightStoreTest, DeletingABaseReencodesItsDeltas) {
  TempDir tmp;
  auto store = OpenStore(tmp.Sub("store"));
  const uint64_t n = 1 << 20;
  WeightTensor a = Tensor(DType::kFloat32, {n}, RandomWeights(n, 31));
  WeightTensor b = Tensor(DType::kFloat32, {n}, FineTuneRegion(a.data, 0.1, 0.03));
  WeightTensor c = Tensor(DType::kFloat32, {n}, FineTuneRegion(b.data, 0.4, 0.03));
  WeightTensor d = Tensor(DType::kFloat32, {n}, FineTuneRegion(c.data, 0.7, 0.03));
  for (const WeightTensor* t : {&a, &b, &c, &d}) ASSERT_TRUE(store->Store(*t).ok());
  ASSERT_EQ(store->GetMetadata(HashOf(b))->base_hash, HashOf(a));
  ASSERT_EQ(store->GetMetadata(HashOf(c))->base_hash, HashOf(b));
  ASSERT_EQ(store->GetMetadata(HashOf(d))->base_hash, HashOf(c));
  ASSERT_TRUE(store->SetName("a", HashOf(a)).ok());
  ASSERT_TRUE(store->SetName("a2", HashOf(a)).ok());
  ASSERT_TRUE(store->SetName("c", HashOf(c)).ok());

  // Deleting the middle of a chain: c is re-encoded against b's base, a (smaller than in full).
  ASSERT_TRUE(store->Delete(HashOf(b)).ok());
  EXPECT_FALSE(store->Exists(HashOf(b)));
  WeightMetadata mc = store->GetMetadata(HashOf(c)).value();
  EXPECT_TRUE(mc.is_delta);
  EXPECT_EQ(mc.base_hash, HashOf(a));
  EXPECT_EQ(Depth(*store, HashOf(c)), 1);
  EXPECT_EQ(Depth(*store, HashOf(d)), 2);
  for (const WeightTensor* t : {&a, &c, &d}) ExpectLoads(*store, *t);

  // Deleting the full tensor at the bottom: c becomes full, d stays a delta of c (depth 1).
  ASSERT_TRUE(store->Delete(HashOf(a)).ok());
  EXPECT_FALSE(store->GetMetadata(HashOf(c))->is_delta);
  EXPECT_EQ(store->GetMetadata(HashOf(d))->base_hash, HashOf(c));
  EXPECT_EQ(Depth(*store, HashOf(d)), 1);
  ExpectLoads(*store, c);
  ExpectLoads(*store, d);
  EXPECT_TRUE(store->Verify().value().empty());
  // Its names went with it; others stay.
  std::vector<std::string> names;
  for (const auto& ni : store->ListNames()) names.push_back(ni.name);
  EXPECT_EQ(names, std::vector<std::string>{"c"});
  EXPECT_EQ(store->Delete(HashOf(a)).code(), StatusCode::kNotFound);
  // Only the live objects are left.
  EXPECT_EQ(DirNames(tmp.Sub("store/objects")).size(), 2u);
  EXPECT_EQ(store->GetStorageInfo().tensors, 2u);
}

// ---- integrity ----

TEST(WeightStoreTest, VerifyAndLoadCatchDamagedObjects) {
  TempDir tmp;
  auto store = OpenStore(tmp.Sub("store"));
  WeightTensor t = Tensor(DType::kFloat32, {1 << 20}, RandomWeights(1 << 20, 41));
  WeightTensor u = Tensor(DType::kInt8, {5000}, Pattern(5000, 42));
  ASSERT_TRUE(store->Store(t).ok());
  ASSERT_TRUE(store->Store(u).ok());
  ASSERT_TRUE(store->Verify().value().empty());
  ASSERT_TRUE(store->Verify(HashOf(t)).value().empty());
  EXPECT_EQ(store->Verify(std::string(64, 'f')).status().code(), StatusCode::kNotFound);

  // Flip a byte in the middle of t's chunk data.
  std::set<std::string> objects = DirNames(tmp.Sub("store/objects"));
  std::string t_path, u_path;
  for (const std::string& o : objects) {
    std::string p = tmp.Sub("store/objects/" + o);
    (FileSize(OpenFile(p, O_RDONLY).value().get()).value() > (1u << 20) ? t_path : u_path) = p;
  }
  ASSERT_FALSE(t_path.empty());
  ASSERT_EQ(::chmod(t_path.c_str(), 0644), 0);
  {
    ScopedFd fd = OpenFile(t_path, O_RDWR).value();
    uint64_t size = FileSize(fd.get()).value();
    char byte;
    ASSERT_EQ(PreadFull(fd.get(), &byte, 1, static_cast<off_t>(size * 3 / 5)).value(), 1u);
    byte ^= 0x10;
    ASSERT_TRUE(PwriteFull(fd.get(), &byte, 1, static_cast<off_t>(size * 3 / 5)).ok());
  }
  std::vector<VerifyProblem> problems = store->Verify().value();
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].hash, HashOf(t));
  EXPECT_NE(problems[0].what.find("chunk"), std::string::npos) << problems[0].what;
  EXPECT_EQ(store->Load(HashOf(t)).status().code(), StatusCode::kCorruption);
  ExpectLoads(*store, u);

  // A missing object file.
  ASSERT_EQ(::unlink(u_path.c_str()), 0);
  problems = store->Verify().value();
  ASSERT_EQ(problems.size(), 2u);
  std::map<std::string, std::string> by_hash;
  for (const auto& p : problems) by_hash[p.hash] = p.what;
  EXPECT_NE(by_hash[HashOf(u)].find("object file missing"), std::string::npos)
      << by_hash[HashOf(u)];
  EXPECT_EQ(store->Load(HashOf(u)).status().code(), StatusCode::kCorruption);
}

// ---- crash safety ----

// A child stores a 256 MiB tensor and is killed mid-write; everything stored before survives and
// no partial object remains, whether the repair is Open()'s (nobody else has the store open) or
// Gc()'s (the parent kept it open).
void CrashDuringStore(bool parent_keeps_store_open) {
  TempDir tmp;
  const std::string dir = tmp.Sub("store");
  std::vector<WeightTensor> before;
  {
    auto store = OpenStore(dir);
    for (int i = 0; i < 3; ++i) {
      before.push_back(Tensor(DType::kFloat32, {1 << 18}, RandomWeights(1 << 18, 50 + i)));
      ASSERT_TRUE(store->Store(before.back()).ok());
    }
    ASSERT_TRUE(store->SetName("first", HashOf(before[0])).ok());
  }
  std::unique_ptr<WeightStore> parent_store;
  if (parent_keeps_store_open) parent_store = OpenStore(dir);

  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(pipe_fds[0]);
    Result<std::unique_ptr<WeightStore>> store = WeightStore::Open(dir, {});
    if (!store.ok()) ::_exit(2);
    WeightTensor big = Tensor(DType::kFloat32, {64u << 20}, RandomWeights(64u << 20, 99));
    if (::write(pipe_fds[1], "go", 2) != 2) ::_exit(3);
    Result<StoreResult> r = (*store)->Store(big);
    ::_exit(r.ok() ? 0 : 4);
  }
  ::close(pipe_fds[1]);
  char buf[2];
  ASSERT_EQ(::read(pipe_fds[0], buf, 2), 2);
  ::close(pipe_fds[0]);
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the child finished before it was killed";

  std::unique_ptr<WeightStore> store;
  if (parent_keeps_store_open) {
    store = std::move(parent_store);
    // The dead child's staging directory is still there until collected.
    EXPECT_GT(DirNames(dir + "/staging").size(), 2u);
    Result<uint64_t> removed = store->Gc(false);
    ASSERT_TRUE(removed.ok()) << removed.status().ToString();
    EXPECT_GE(*removed, 1u);
  } else {
    store = OpenStore(dir);
  }
  ASSERT_TRUE(store);
  EXPECT_EQ(store->List().size(), 3u);
  for (const WeightTensor& t : before) ExpectLoads(*store, t);
  EXPECT_TRUE(store->Verify().value().empty());
  EXPECT_EQ(store->ResolveName("first")->hash, HashOf(before[0]));
  // No partial objects: objects/ holds exactly the stored ones; staging/ only this instance's
  // (empty) directory and its owner file.
  EXPECT_EQ(DirNames(dir + "/objects").size(), 3u);
  EXPECT_EQ(DirNames(dir + "/staging").size(), 2u);
  EXPECT_TRUE(DirNames(store->staging_dir()).empty());
}

TEST(WeightStoreTest, CrashMidStoreIsRepairedByOpen) { CrashDuringStore(false); }
TEST(WeightStoreTest, CrashMidStoreIsRepairedByGc) { CrashDuringStore(true); }

TEST(WeightStoreTest, OrphanObjectsAndStagingLeftoversAreRemovedAtOpen) {
  TempDir tmp;
  const std::string dir = tmp.Sub("store");
  WeightTensor t = Tensor(DType::kUInt16, {77}, Pattern(154, 5));
  {
    auto store = OpenStore(dir);
    ASSERT_TRUE(store->Store(t).ok());
  }
  ASSERT_TRUE(WriteStringToFile(dir + "/objects/999.h5", "partial").ok());
  ASSERT_TRUE(WriteStringToFile(dir + "/objects/junk", "x").ok());
  ASSERT_TRUE(WriteStringToFile(dir + "/staging/stray", "x").ok());
  ASSERT_TRUE(MakeDirs(dir + "/staging/123-deadbeef").ok());
  ASSERT_TRUE(WriteStringToFile(dir + "/staging/123-deadbeef/obj-0.h5", "x").ok());
  auto store = OpenStore(dir);
  EXPECT_EQ(DirNames(dir + "/objects").size(), 1u);
  EXPECT_EQ(DirNames(dir + "/staging").size(), 2u);
  ExpectLoads(*store, t);
  // A file that reappears while the store is open is collected by Gc.
  ASSERT_TRUE(WriteStringToFile(dir + "/objects/1000.h5", "partial").ok());
  EXPECT_EQ(store->Gc(false).value(), 1u);
  EXPECT_EQ(DirNames(dir + "/objects").size(), 1u);
}

// ---- names, metadata ----

TEST(WeightStoreTest, NamesPointAtTensors) {
  TempDir tmp;
  auto store = OpenStore(tmp.Sub("store"));
  WeightTensor a = Tensor(DType::kInt32, {10}, Pattern(40, 1));
  WeightTensor b = Tensor(DType::kInt32, {10}, Pattern(40, 2));
  ASSERT_TRUE(store->Store(a).ok());
  ASSERT_TRUE(store->Store(b).ok());

  ASSERT_TRUE(store->SetName("w", HashOf(a), 1000).ok());
  ASSERT_TRUE(store->SetName("v", HashOf(a)).ok());
  EXPECT_EQ(store->ResolveName("w")->hash, HashOf(a));
  EXPECT_EQ(store->ResolveName("w")->mtime_ns, 1000);
  ASSERT_TRUE(store->SetName("w", HashOf(b), 2000).ok());  // re-point
  EXPECT_EQ(store->ResolveName("w")->hash, HashOf(b));
  EXPECT_EQ(store->ResolveName("w")->mtime_ns, 2000);
  ASSERT_TRUE(store->SetNameMtime("w", 3000).ok());
  EXPECT_EQ(store->ResolveName("w")->mtime_ns, 3000);
  EXPECT_EQ(store->SetNameMtime("nope", 1).code(), StatusCode::kNotFound);

  std::vector<WeightStore::NameInfo> names = store->ListNames();
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[0].name, "v");
  EXPECT_EQ(names[1].name, "w");
  EXPECT_EQ(store->GetMetadata(HashOf(a))->names, std::vector<std::string>{"v"});

  EXPECT_EQ(store->SetName("x", std::string(64, 'e')).code(), StatusCode::kNotFound);
  ASSERT_TRUE(store->RemoveName("v").ok());
  EXPECT_EQ(store->RemoveName("v").code(), StatusCode::kNotFound);
  EXPECT_EQ(store->ResolveName("v").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store->Exists(HashOf(a)));  // removing a name never deletes a tensor

  // Gc(unnamed_too) deletes a, which no name points to any more.
  Result<uint64_t> removed = store->Gc(true);
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(*removed, 1u);
  EXPECT_FALSE(store->Exists(HashOf(a)));
  EXPECT_TRUE(store->Exists(HashOf(b)));
}

TEST(WeightStoreTest, ValidateName) {
  EXPECT_TRUE(WeightStore::ValidateName("layer1.weight").ok());
  EXPECT_TRUE(WeightStore::ValidateName("model:encoder.0 (copy)").ok());
  EXPECT_TRUE(WeightStore::ValidateName(std::string(255, 'n')).ok());
  EXPECT_TRUE(WeightStore::ValidateName(std::string(64, 'A')).ok());  // not lower-case hex
  EXPECT_TRUE(WeightStore::ValidateName(std::string(63, 'a')).ok());
  EXPECT_EQ(WeightStore::ValidateName(std::string(64, 'a')).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(WeightStore::ValidateName(Sha256Hex("x")).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(WeightStore::ValidateName("").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(WeightStore::ValidateName(".hidden").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(WeightStore::ValidateName(".").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(WeightStore::ValidateName("a/b").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(WeightStore::ValidateName(std::string("a\0b", 3)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(WeightStore::ValidateName("tab\there").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(WeightStore::ValidateName(std::string(256, 'n')).code(), StatusCode::kNameTooLong);
  EXPECT_TRUE(WeightStore::IsHash(Sha256Hex("x")));
  EXPECT_FALSE(WeightStore::IsHash("abc"));
}

TEST(WeightStoreTest, MetadataGetAndSet) {
  TempDir tmp;
  auto store = OpenStore(tmp.Sub("store"));
  WeightTensor t =
      Tensor(DType::kFloat16, {4, 8}, Pattern(64, 6), CoralMeta{"fc.bias", "Linear", "m1"});
  StoreOptions options;
  options.mtime_ns = 1234567;
  ASSERT_TRUE(store->Store(t, options).ok());
  WeightMetadata m = store->GetMetadata(HashOf(t)).value();
  EXPECT_EQ(m.hash, HashOf(t));
  EXPECT_EQ(m.spec, t.spec);
  EXPECT_EQ(m.meta.name, "fc.bias");
  EXPECT_EQ(m.meta.layer_type, "Linear");
  EXPECT_EQ(m.meta.model_name, "m1");
  EXPECT_EQ(m.mtime_ns, 1234567);
  EXPECT_EQ(m.npy_bytes, NpyBytes(t).size());
  EXPECT_GT(m.stored_bytes, 0u);
  EXPECT_FALSE(m.is_delta);
  EXPECT_TRUE(json::parse(m.compression_info).is_object());

  ASSERT_TRUE(store->SetMtime(HashOf(t), 42).ok());
  ASSERT_TRUE(store->SetCoralMeta(HashOf(t), CoralMeta{"renamed", "Conv2d", "m2"}).ok());
  m = store->GetMetadata(HashOf(t)).value();
  EXPECT_EQ(m.mtime_ns, 42);
  EXPECT_EQ(m.meta.name, "renamed");
  EXPECT_EQ(m.meta.layer_type, "Conv2d");
  EXPECT_EQ(store->Load(HashOf(t))->meta.model_name, "m2");

  // A duplicate keeps the stored tensor's time and metadata.
  options.mtime_ns = 99;
  t.meta.model_name = "other";
  ASSERT_FALSE(store->Store(t, options)->added);
  EXPECT_EQ(store->GetMetadata(HashOf(t))->mtime_ns, 42);
  EXPECT_EQ(store->GetMetadata(HashOf(t))->meta.model_name, "m2");

  const std::string missing(64, 'c');
  EXPECT_EQ(store->GetMetadata(missing).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->SetMtime(missing, 1).code(), StatusCode::kNotFound);
  EXPECT_EQ(store->SetCoralMeta(missing, {}).code(), StatusCode::kNotFound);
  EXPECT_EQ(store->Load(missing).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->Delete(missing).code(), StatusCode::kNotFound);
}

TEST(WeightStoreTest, StorageInfoRatios) {
  TempDir tmp;
  auto store = OpenStore(tmp.Sub("store"));
  StorageInfo empty = store->GetStorageInfo();
  EXPECT_EQ(empty.tensors, 0u);
  EXPECT_DOUBLE_EQ(empty.compression_ratio, 1.0);
  EXPECT_DOUBLE_EQ(empty.dedup_ratio, 1.0);
  EXPECT_EQ(empty.codec, "zstd-1");

  WeightTensor zeros = Tensor(DType::kFloat32, {1 << 20}, std::string(4 << 20, '\0'));
  WeightTensor noise = Tensor(DType::kUInt8, {1 << 20}, Pattern(1 << 20, 8));
  ASSERT_TRUE(store->Store(zeros).ok());
  ASSERT_TRUE(store->Store(zeros).ok());
  ASSERT_TRUE(store->Store(zeros).ok());
  ASSERT_TRUE(store->Store(noise).ok());
  ASSERT_TRUE(store->SetName("z", HashOf(zeros)).ok());
  StorageInfo info = store->GetStorageInfo();
  const uint64_t logical = NpyBytes(zeros).size() + NpyBytes(noise).size();
  EXPECT_EQ(info.tensors, 2u);
  EXPECT_EQ(info.names, 1u);
  EXPECT_EQ(info.deltas, 0u);
  EXPECT_EQ(info.logical_bytes, logical);
  EXPECT_EQ(info.ingested_bytes, 3 * NpyBytes(zeros).size() + NpyBytes(noise).size());
  uint64_t on_disk = 0;
  for (const std::string& o : DirNames(tmp.Sub("store/objects"))) {
    on_disk += FileSize(OpenFile(tmp.Sub("store/objects/" + o), O_RDONLY).value().get()).value();
  }
  EXPECT_EQ(info.stored_bytes, on_disk);
  EXPECT_DOUBLE_EQ(info.compression_ratio,
                   static_cast<double>(logical) / static_cast<double>(on_disk));
  EXPECT_GT(info.compression_ratio, 4.0);  // 4 MiB of zeros compress to almost nothing
  EXPECT_DOUBLE_EQ(info.dedup_ratio,
                   static_cast<double>(info.ingested_bytes) / static_cast<double>(logical));
}

// ---- batches ----

TEST(WeightStoreTest, StoreBatchAndLoadBatch) {
  TempDir tmp;
  WeightStore::Options options;
  options.threads = 2;
  auto store = OpenStore(tmp.Sub("store"), options);
  std::vector<WeightTensor> tensors;
  for (int i = 0; i < 10; ++i) {
    tensors.push_back(Tensor(DType::kFloat32, {static_cast<uint64_t>(1000 + 37 * i)},
                             RandomWeights(1000 + 37 * i, 60 + i)));
  }
  tensors.push_back(tensors[3]);  // a duplicate inside the batch
  Result<std::vector<StoreResult>> results = store->StoreBatch(tensors);
  ASSERT_TRUE(results.ok()) << results.status().ToString();
  ASSERT_EQ(results->size(), tensors.size());
  std::vector<std::string> hashes;
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ((*results)[i].hash, HashOf(tensors[i]));
    hashes.push_back(HashOf(tensors[i]));
  }
  EXPECT_EQ(store->List().size(), 10u);
  Result<std::map<std::string, WeightTensor>> loaded = store->LoadBatch(hashes);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->size(), 10u);
  for (const WeightTensor& t : tensors) EXPECT_TRUE(loaded->at(HashOf(t)).data == t.data);

  hashes.push_back(std::string(64, 'd'));
  EXPECT_EQ(store->LoadBatch(hashes).status().code(), StatusCode::kNotFound);
  std::vector<WeightTensor> bad = {tensors[0], Tensor(DType::kInt8, {5}, "123")};
  EXPECT_EQ(store->StoreBatch(bad).status().code(), StatusCode::kInvalidArgument);
}

TEST(WeightStoreTest, ClosedStoreRefusesCalls) {
  TempDir tmp;
  auto store = OpenStore(tmp.Sub("store"));
  WeightTensor t = Tensor(DType::kInt8, {3}, "abc");
  ASSERT_TRUE(store->Store(t).ok());
  ASSERT_TRUE(store->Close().ok());
  EXPECT_FALSE(store->Store(t).ok());
  EXPECT_FALSE(store->Load(HashOf(t)).ok());
  EXPECT_FALSE(store->Exists(HashOf(t)));
  EXPECT_TRUE(store->List().empty());
  EXPECT_TRUE(store->Close().ok());
  // Reopening finds everything; the closed instance left no staging directory behind.
  auto again = OpenStore(tmp.Sub("store"));
  ExpectLoads(*again, t);
  EXPECT_EQ(DirNames(tmp.Sub("store/staging")).size(), 2u);
}

// Two instances on one directory (the daemon and a command-line tool) see each other's commits.
TEST(WeightStoreTest, TwoInstancesShareTheStore) {
  TempDir tmp;
  auto a = OpenStore(tmp.Sub("store"));
  auto b = OpenStore(tmp.Sub("store"));
  ASSERT_TRUE(a && b);
  EXPECT_NE(a->staging_dir(), b->staging_dir());
  WeightTensor t = Tensor(DType::kFloat32, {1 << 16}, RandomWeights(1 << 16, 3));
  ASSERT_TRUE(a->Store(t).ok());
  ASSERT_TRUE(a->SetName("t", HashOf(t)).ok());
  ExpectLoads(*b, t);
  EXPECT_EQ(b->ResolveName("t")->hash, HashOf(t));
  // b's Gc must not take a's staging directory or a's objects.
  ASSERT_TRUE(b->Gc(false).ok());
  EXPECT_TRUE(::access(a->staging_dir().c_str(), F_OK) == 0);
  ExpectLoads(*a, t);
  ASSERT_TRUE(b->Delete(HashOf(t)).ok());
  EXPECT_EQ(a->Load(HashOf(t)).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(a->List().empty());
}

// Stores of fine-tunes, loads and deletes of their bases at once: every commit either wins or
// starts over, and whatever is stored at the end loads bit-exact.
TEST(WeightStoreTest, ConcurrentStoresLoadsAndDeletes) {
  TempDir tmp;
  auto store = OpenStore(tmp.Sub("store"));
  const uint64_t n = 1 << 18;
  WeightTensor base = Tensor(DType::kFloat32, {n}, RandomWeights(n, 70));
  std::vector<WeightTensor> tunes;
  for (int i = 0; i < 12; ++i) {
    tunes.push_back(Tensor(DType::kFloat32, {n}, FineTuneRegion(base.data, 0.05 * i, 0.02)));
  }
  ASSERT_TRUE(store->Store(base).ok());
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      for (size_t i = w; i < tunes.size(); i += 2) {
        Result<StoreResult> r = store->Store(tunes[i]);
        if (!r.ok()) {
          ADD_FAILURE() << r.status().ToString();
          failed = true;
        }
      }
    });
  }
  threads.emplace_back([&] {
    for (size_t i = 0; i < tunes.size(); ++i) {
      // Delete whatever got stored so far among the even ones; load the odd ones.
      if (i % 2 == 0) {
        Status st = store->Delete(HashOf(tunes[i]));
        if (!st.ok() && st.code() != StatusCode::kNotFound) {
          ADD_FAILURE() << st.ToString();
          failed = true;
        }
      } else {
        Result<WeightTensor> t = store->Load(HashOf(tunes[i]));
        if (t.ok() && t->data != tunes[i].data) {
          ADD_FAILURE() << "tensor " << i << " loaded wrong";
          failed = true;
        }
      }
    }
    Status st = store->Delete(HashOf(base));
    if (!st.ok()) ADD_FAILURE() << st.ToString();
  });
  for (std::thread& t : threads) t.join();
  ASSERT_FALSE(failed);
  EXPECT_FALSE(store->Exists(HashOf(base)));
  for (const WeightTensor& t : tunes) {
    if (store->Exists(HashOf(t))) ExpectLoads(*store, t);
  }
  EXPECT_TRUE(store->Verify().value().empty());
  // No orphans: objects/ has one file per stored tensor.
  EXPECT_EQ(DirNames(tmp.Sub("store/objects")).size(), store->List().size());
}

// ---- Coral ----

// A Coral HDF5 store as Coral's HDF5Store writes it (weights/ with gzip-4 and lzf, deltas/ with
// every DeltaEncoder encoding), made by h5py; every tensor comes back equal, deltas rebuilt as
// Coral's decode_delta rebuilds them.
TEST(WeightStoreTest, ImportCoralStore) {
  TempDir tmp;
  const char* script = R"py(
import hashlib, io, json, sys, zlib
import h5py, numpy as np

path = sys.argv[1]
rng = np.random.default_rng(5)
def npy_sha(a):
  # astype, not ascontiguousarray: that one turns a 0-d array into a 1-d one.
  buf = io.BytesIO(); np.save(buf, a.astype(a.dtype.newbyteorder("<"), order="C"))
  return hashlib.sha256(buf.getvalue()).hexdigest()

weights = {
  "enc.weight": (rng.standard_normal((64, 48)).astype(np.float32), "gzip", 4),
  "enc.bias": (rng.standard_normal(48).astype(np.float32), "lzf", None),
  "emb.table": (rng.integers(-100, 100, (30, 7)).astype(np.int32), "gzip", 4),
  "scale": (np.array(2.5, dtype=np.float64), None, None),
  "mask": (rng.integers(0, 2, (9, 9)).astype(bool), "gzip", 4),
  "be.weight": (rng.standard_normal((20, 20)).astype(">f4"), "lzf", None),
  "f64/with/slashes": (rng.standard_normal(100), "gzip", 4),
  "big.weight": (rng.standard_normal((700, 600)).astype(np.float32), "gzip", 4),
}
expected = {"weights": {}, "deltas": {}, "skipped": []}
keys = {}
with h5py.File(path, "w") as f:
  for g in ("weights", "metadata", "deltas"): f.create_group(g)
  for i, (name, (a, comp, opts)) in enumerate(weights.items()):
    key = "%016x" % (0x1000 + i)
    keys[name] = key
    kw = {}
    if comp: kw["compression"] = comp
    if opts: kw["compression_opts"] = opts
    if a.ndim and a.size > 1000: kw["chunks"] = (max(1, a.shape[0] // 7),) + a.shape[1:]
    ds = f["weights"].create_dataset(key, data=a, **kw)
    ds.attrs["name"] = name
    ds.attrs["shape"] = a.shape
    ds.attrs["dtype"] = np.dtype(a.dtype).name
    ds.attrs["layer_type"] = "Linear"
    ds.attrs["model_name"] = "coral-model"
    ds.attrs["compression_info"] = json.dumps({})
    ds.attrs["hash"] = key
    expected["weights"][name] = npy_sha(a)

  ref = weights["big.weight"][0]
  tuned = ref.copy()
  idx = rng.choice(ref.size, ref.size // 100, replace=False)
  tuned.flat[idx] += rng.standard_normal(idx.size).astype(np.float32) * 0.01
  diff = (tuned - ref).astype(np.float32)
  def put(key, dtype_name, data, meta, ref_key=keys["big.weight"]):
    ds = f["deltas"].create_dataset(key, data=data, compression="gzip", compression_opts=4)
    ds.attrs["delta_type"] = dtype_name
    ds.attrs["original_shape"] = ref.shape
    ds.attrs["original_dtype"] = "float32"
    ds.attrs["reference_hash"] = ref_key
    ds.attrs["compression_ratio"] = 0.5
    ds.attrs["metadata"] = json.dumps(meta)

  # float32_raw and compressed: reference + (weight - reference), as Coral decodes.
  put("d_raw", "float32_raw", diff, {})
  expected["deltas"]["d_raw"] = npy_sha((ref + diff).astype(np.float32))
  comp = np.frombuffer(zlib.compress(diff.tobytes(), 6), dtype=np.uint8)
  put("d_comp", "compressed", comp, {"original_shape": ref.shape})
  expected["deltas"]["d_comp"] = npy_sha((ref + diff).astype(np.float32))
  # xor_float32: bit-exact.
  x = tuned.view(np.uint32) ^ ref.view(np.uint32)
  se = ((x >> 23) & 0x1FF).astype(np.uint16); man = (x & 0x7FFFFF).astype(np.uint32)
  cs = zlib.compress(se.tobytes(), 9)
  packed = np.array([len(cs)], dtype=np.uint32).tobytes() + cs + zlib.compress(man.tobytes(), 6)
  put("d_xor", "xor_float32", np.frombuffer(packed, dtype=np.uint8), {})
  expected["deltas"]["d_xor"] = npy_sha(tuned)
  # xor_bfloat16
  t2 = tuned.copy(); t2.flat[0] = np.float32(-0.0)
  hi = ((t2.view(np.uint32) >> 16).astype(np.uint16)) ^ ((ref.view(np.uint32) >> 16).astype(np.uint16))
  lo = ((t2.view(np.uint32) & 0xFFFF).astype(np.uint16)) ^ ((ref.view(np.uint32) & 0xFFFF).astype(np.uint16))
  ch = zlib.compress(hi.tobytes(), 9)
  packed = np.array([len(ch)], dtype=np.uint32).tobytes() + ch + zlib.compress(lo.tobytes(), 6)
  put("d_bf16", "xor_bfloat16", np.frombuffer(packed, dtype=np.uint8), {})
  expected["deltas"]["d_bf16"] = npy_sha(t2)
  # exponent_mantissa
  t3 = tuned.copy(); t3.flat[1] += np.float32(0.5)
  dd = (t3 - ref).astype(np.float32); bits = dd.view(np.uint32)
  signs = np.packbits(((bits >> 31) & 1).astype(np.uint8).flatten())
  exps = ((bits >> 23) & 0xFF).astype(np.uint8); mans = (bits & 0x7FFFFF).astype(np.uint32)
  c1 = zlib.compress(signs.tobytes(), 9); c2 = zlib.compress(exps.tobytes(), 9)
  packed = np.array([len(c1), len(c2)], dtype=np.uint32).tobytes() + c1 + c2 + zlib.compress(mans.tobytes(), 6)
  put("d_em", "exponent_mantissa", np.frombuffer(packed, dtype=np.uint8), {})
  expected["deltas"]["d_em"] = npy_sha(ref.astype(np.float32) + dd)
  # Lossy, and a delta whose reference is not in the file: skipped.
  put("d_q8", "int8_quantized", np.zeros(ref.shape, dtype=np.int8), {"scale": 1.0, "offset": 0.0, "bits": 8})
  put("d_orphan", "float32_raw", diff, {}, ref_key="ffffffffffffffff")
  expected["skipped"] = ["deltas/d_orphan", "deltas/d_q8"]
print(json.dumps(expected))
)py";
  std::string coral = tmp.Sub("coral.h5");
  json expected = json::parse(RunPython(tmp, script, coral));
  auto store = OpenStore(tmp.Sub("store"));
  Result<WeightStore::ImportReport> report = store->ImportCoral(coral);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  // Deltas of different encodings may rebuild the same tensor (float32_raw and compressed always
  // do): those are duplicates.
  std::set<std::string> distinct;
  for (const auto& [k, sha] : expected["weights"].items()) distinct.insert(sha.get<std::string>());
  for (const auto& [k, sha] : expected["deltas"].items()) distinct.insert(sha.get<std::string>());
  EXPECT_EQ(report->imported, distinct.size());
  EXPECT_EQ(report->imported + report->duplicates,
            expected["weights"].size() + expected["deltas"].size());
  ASSERT_EQ(report->skipped.size(), 2u);
  EXPECT_EQ(report->skipped[0].rfind("deltas/d_orphan: ", 0), 0u) << report->skipped[0];
  EXPECT_EQ(report->skipped[1].rfind("deltas/d_q8: ", 0), 0u) << report->skipped[1];

  for (const auto& [name, sha] : expected["weights"].items()) {
    std::string hash = sha.get<std::string>();
    ASSERT_TRUE(store->Exists(hash)) << name;
    WeightMetadata m = store->GetMetadata(hash).value();
    EXPECT_EQ(m.meta.name, name);
    EXPECT_EQ(m.meta.layer_type, "Linear");
    EXPECT_EQ(m.meta.model_name, "coral-model");
    EXPECT_FALSE(json::parse(m.compression_info)["coral"]["hash"].get<std::string>().empty());
    if (WeightStore::ValidateName(name).ok()) {
      EXPECT_EQ(store->ResolveName(name)->hash, hash) << name;
    } else {
      EXPECT_TRUE(m.names.empty()) << name;
    }
  }
  for (const auto& [key, sha] : expected["deltas"].items()) {
    EXPECT_TRUE(store->Exists(sha.get<std::string>())) << key;
  }
  EXPECT_EQ(store->ListNames().size(), expected["weights"].size() - 1);  // one name has '/'
  EXPECT_TRUE(store->Verify().value().empty());

  // Importing again stores nothing new.
  Result<WeightStore::ImportReport> again = store->ImportCoral(coral);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->imported, 0u);
  EXPECT_EQ(again->duplicates, report->imported + report->duplicates);

  EXPECT_EQ(store->ImportCoral(tmp.Sub("missing.h5")).status().code(), StatusCode::kIOError);
  ASSERT_TRUE(WriteStringToFile(tmp.Sub("not.h5"), "hello").ok());
  EXPECT_EQ(store->ImportCoral(tmp.Sub("not.h5")).status().code(), StatusCode::kInvalidArgument);
}

// ---- throughput ----

// Not a benchmark gate: prints store/load rates for a 256 MiB float32 tensor with the default
// codec (zstd-1), so regressions are visible in the test log.
TEST(WeightStoreTest, Throughput256MiB) {
  TempDir tmp;
  auto store = OpenStore(tmp.Sub("store"));
  const uint64_t n = 64u << 20;
  WeightTensor t = Tensor(DType::kFloat32, {8192, 8192}, RandomWeights(n, 77));
  auto t0 = std::chrono::steady_clock::now();
  Result<StoreResult> r = store->Store(t);
  auto t1 = std::chrono::steady_clock::now();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  Result<WeightTensor> loaded = store->Load(r->hash);
  auto t2 = std::chrono::steady_clock::now();
  ASSERT_TRUE(loaded.ok());
  EXPECT_TRUE(loaded->data == t.data);
  std::string out = tmp.Sub("out.npy");
  ScopedFd fd = OpenFile(out, O_RDWR | O_CREAT | O_TRUNC, 0644).value();
  auto t3 = std::chrono::steady_clock::now();
  ASSERT_TRUE(store->WriteNpy(r->hash, fd.get()).ok());
  auto t4 = std::chrono::steady_clock::now();
  auto mbps = [&](auto a, auto b) {
    return static_cast<double>(t.data.size()) / 1e6 / std::chrono::duration<double>(b - a).count();
  };
  WeightMetadata m = store->GetMetadata(r->hash).value();
  printf(
      "[ throughput ] 256 MiB float32, zstd-1: store %.0f MB/s, load %.0f MB/s, "
      "WriteNpy %.0f MB/s, stored %.1f%% of logical\n",
      mbps(t0, t1), mbps(t1, t2), mbps(t3, t4),
      100.0 * static_cast<double>(m.stored_bytes) / static_cast<double>(m.npy_bytes));
}

}  // namespace
}  // namespace modelfs::weights
