#include "stores/embeddings/embedding_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <set>
#include <thread>
#include <vector>

#include "stores/common/file_util.h"
#include "stores/embeddings/initializers.h"
#include "stores/embeddings/optimizers.h"
#include "stores/embeddings/value_format.h"
#include "tests/stores/temp_dir.h"

namespace modelfs::embeddings {
namespace {

using ::modelfs::testing::Exists;
using ::modelfs::testing::TempDir;

constexpr int64_t kDayUs = 86400ll * 1000 * 1000;
constexpr int64_t kStartUs = 1700000000123456;  // 2023-11-14T22:13:20.123456Z

// ---- byte helpers ----

template <typename T>
void Put(std::string* s, T v) {
  s->append(reinterpret_cast<const char*>(&v), sizeof v);
}

std::string ValueBytes(int32_t group, uint64_t key, uint64_t time_ms, uint64_t num,
                       const std::vector<float>& floats, int32_t dim) {
  std::string v;
  Put(&v, group);
  Put(&v, key);
  Put(&v, time_ms);
  Put(&v, num);
  Put(&v, dim);
  for (float f : floats) Put(&v, f);
  return v;
}

struct CkptRecord {
  std::string key;
  std::string value;
};

std::string KeyBytes(int group, uint64_t key) {
  std::string k;
  Put(&k, StorageKey(group, key));
  return k;
}

std::string CheckpointOf(uint64_t count, const std::vector<CkptRecord>& records) {
  std::string s;
  Put(&s, count);
  for (const auto& r : records) {
    Put(&s, static_cast<uint64_t>(r.key.size()));
    s += r.key;
    Put(&s, static_cast<uint64_t>(r.value.size()));
    s += r.value;
  }
  return s;
}

struct DumpRecord {
  uint64_t key;
  int32_t group;
  std::vector<float> weights;
  bool operator==(const DumpRecord&) const = default;
};

std::string DumpOf(const std::vector<std::pair<int, int32_t>>& dims,
                   const std::vector<std::pair<int, uint64_t>>& counts,
                   const std::vector<DumpRecord>& records) {
  int32_t d[kGroups] = {};
  uint64_t c[kGroups] = {};
  for (auto [g, v] : dims) d[g] = v;
  for (auto [g, v] : counts) c[g] = v;
  std::string s(reinterpret_cast<const char*>(d), sizeof d);
  s.append(reinterpret_cast<const char*>(c), sizeof c);
  for (const auto& r : records) {
    Put(&s, r.key);
    Put(&s, r.group);
    for (float f : r.weights) Put(&s, f);
  }
  return s;
}

// The seed's "Extract Weights" reader, in C++: header, then records until the file ends, each read
// with the dim the header gives its group.
struct ParsedDump {
  int32_t dims[kGroups] = {};
  uint64_t counts[kGroups] = {};
  std::vector<DumpRecord> records;
};
ParsedDump ParseDumpLikeSeed(const std::string& bytes) {
  ParsedDump d;
  EXPECT_GE(bytes.size(), kDumpHeaderSize);
  if (bytes.size() < kDumpHeaderSize) return d;
  memcpy(d.dims, bytes.data(), sizeof d.dims);
  memcpy(d.counts, bytes.data() + sizeof d.dims, sizeof d.counts);
  size_t off = kDumpHeaderSize;
  while (off + 8 <= bytes.size()) {
    DumpRecord r;
    memcpy(&r.key, bytes.data() + off, 8);
    memcpy(&r.group, bytes.data() + off + 8, 4);
    off += 12;
    const int32_t dim = d.dims[static_cast<uint32_t>(r.group)];
    r.weights.resize(dim);
    EXPECT_LE(off + 4 * dim, bytes.size());
    if (off + 4 * dim > bytes.size()) break;
    memcpy(r.weights.data(), bytes.data() + off, 4 * dim);
    off += 4 * dim;
    d.records.push_back(r);
  }
  EXPECT_EQ(off, bytes.size());
  return d;
}

std::string ReadAll(int fd) {
  uint64_t size = FileSize(fd).value();
  std::string s(size, '\0');
  EXPECT_EQ(PreadFull(fd, s.data(), s.size(), 0).value(), size);
  return s;
}

Conditions Cond(std::optional<int64_t> expire_days, std::optional<int64_t> min_count = {},
                std::optional<int> group = {}) {
  Conditions c;
  c.expire_days = expire_days;
  c.min_count = min_count;
  c.group = group;
  return c;
}

StoreOptions Ttl(int64_t seconds, std::function<int64_t()> clock = {}) {
  StoreOptions o;
  o.ttl_seconds = seconds;
  o.clock_us = std::move(clock);
  return o;
}

GroupConfig Config(int dim, std::string optimizer, Params op = {},
                   std::string initializer = "zeros", Params ip = {}) {
  GroupConfig c;
  c.dim = dim;
  c.optimizer = std::move(optimizer);
  c.optimizer_params = std::move(op);
  c.initializer = std::move(initializer);
  c.initializer_params = std::move(ip);
  return c;
}

// ---- formats ----

TEST(ValueFormatTest, StorageKeyIsDamosMaskedKeyLittleEndian) {
  EXPECT_EQ(StorageKey(3, 0xAB00000000000005ull), 0x0300000000000005ull);
  EXPECT_EQ(StorageKey(255, ~0ull), ~0ull);
  EXPECT_EQ(GroupOfStorageKey(StorageKey(200, 42)), 200);
  EXPECT_EQ(KeyBytes(3, 0xAB00000000000005ull), std::string("\x05\0\0\0\0\0\0\x03", 8));
}

TEST(ValueFormatTest, HeaderBytesRoundTrip) {
  ValueHeader h{7, 0x0102030405060708ull, 0x1122334455667788ull, 9, 2};
  char buf[kValueHeaderSize];
  EncodeValueHeader(h, buf);
  // packed: int32 group | u64 key | u64 update_time | u64 update_num | int32 dim, little-endian
  const std::string expected(
      "\x07\0\0\0"
      "\x08\x07\x06\x05\x04\x03\x02\x01"
      "\x88\x77\x66\x55\x44\x33\x22\x11"
      "\x09\0\0\0\0\0\0\0"
      "\x02\0\0\0",
      32);
  static_assert(kValueHeaderSize == 32);
  EXPECT_EQ(std::string(buf, sizeof buf), expected);
  ValueHeader back = DecodeValueHeader(buf);
  EXPECT_EQ(back.group, 7);
  EXPECT_EQ(back.key, h.key);
  EXPECT_EQ(back.update_time_ms, h.update_time_ms);
  EXPECT_EQ(back.update_num, 9u);
  EXPECT_EQ(back.dim, 2);
  EXPECT_EQ(ValueSize(16, 2), 32u + 4 * 48);
}

// ---- optimizers, against arithmetic done by hand ----

std::unique_ptr<Optimizer> Make(const std::string& name, const Params& p) {
  auto o = MakeOptimizer(name, p);
  EXPECT_TRUE(o.ok()) << o.status().ToString();
  return o.ok() ? std::move(o).value() : nullptr;
}

TEST(OptimizerTest, SlotLayoutsAndDefaults) {
  const std::pair<const char*, int> slots[] = {{"sgd", 0},   {"adagrad", 1}, {"adam", 2},
                                               {"adamw", 2}, {"amsgrad", 3}, {"ftrl", 2},
                                               {"lion", 1}};
  for (auto [name, n] : slots) EXPECT_EQ(Make(name, {})->SlotsPerWeight(), n) << name;
  // sgd's default gamma is 0.001: w = 1 - 0.001 * 2 = 0.998.
  float w[1] = {1};
  float g[1] = {2};
  Make("sgd", {})->Step(w, g, 1, 1);
  EXPECT_FLOAT_EQ(w[0], 0.998f);
  // adamw's default lambda is 0.01 (gamma 0.001): w = 1 - 0.01*0.001*1 = 0.99999, then the Adam
  // step of the first gradient is gamma * g/|g| = 0.001: 0.99899.
  float d[3] = {1, 0, 0};
  Make("adamw", {})->Step(d, g, 1, 1);
  EXPECT_NEAR(d[0], 0.99899f, 1e-6);
}

TEST(OptimizerTest, RejectsUnknownNamesAndBadValues) {
  EXPECT_EQ(MakeOptimizer("adamax", {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeOptimizer("adam", {{"gama", 0.1}}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeOptimizer("ftrl", {{"gamma", 0.1}}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeOptimizer("ftrl", {{"alpha", 0}}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeOptimizer("adam", {{"beta1", 1.0}}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeOptimizer("sgd", {{"gamma", NAN}}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(MakeOptimizer("adagrad", {{"eta", 0.5}}).ok());  // accepted (damo ignores it)
}

TEST(OptimizerTest, Sgd) {
  // w -= gamma * g:  1 - 0.1*0.5 = 0.95;  -2 - 0.1*(-1) = -1.9
  float w[2] = {1, -2};
  float g[2] = {0.5f, -1};
  Make("sgd", {{"gamma", 0.1}})->Step(w, g, 2, 1);
  EXPECT_FLOAT_EQ(w[0], 0.95f);
  EXPECT_FLOAT_EQ(w[1], -1.9f);
  // with lambda: w -= gamma * (g + lambda*w) = 1 - 0.1*(0.5 + 0.1*1) = 0.94
  float v[1] = {1};
  Make("sgd", {{"gamma", 0.1}, {"lambda", 0.1}})->Step(v, g, 1, 1);
  EXPECT_FLOAT_EQ(v[0], 0.94f);
}

TEST(OptimizerTest, Adagrad) {
  // m += g^2; w -= gamma * g / (sqrt(m) + eps)
  // step 1: m = 0.25, w = 1 - 0.1*0.5/0.5 = 0.9
  // step 2: m = 0.5,  w = 0.9 - 0.1*0.5/sqrt(0.5) = 0.8292893
  auto opt = Make("adagrad", {{"gamma", 0.1}});
  float d[2] = {1, 0};  // w, m
  float g[1] = {0.5f};
  opt->Step(d, g, 1, 1);
  EXPECT_NEAR(d[0], 0.9f, 1e-6);
  EXPECT_FLOAT_EQ(d[1], 0.25f);
  opt->Step(d, g, 1, 2);
  EXPECT_NEAR(d[0], 0.8292893f, 1e-6);
  EXPECT_FLOAT_EQ(d[1], 0.5f);
}

TEST(OptimizerTest, AdamWithBiasCorrectionByStep) {
  // gamma 0.1, beta1 0.9, beta2 0.999, eps 1e-8; layout w, m, v
  // step 1 (t=1, g=0.5): m = 0.1*0.5 = 0.05, v = 0.001*0.25 = 0.00025,
  //   m^ = 0.05/(1-0.9) = 0.5, v^ = 0.00025/(1-0.999) = 0.25, w = 1 - 0.1*0.5/(0.5+1e-8) = 0.9
  // step 2 (t=2, g=-0.25): m = 0.9*0.05 + 0.1*(-0.25) = 0.02,
  //   v = 0.999*0.00025 + 0.001*0.0625 = 0.00031225,
  //   m^ = 0.02/(1-0.81) = 0.1052632, v^ = 0.00031225/(1-0.998001) = 0.1562031,
  //   w = 0.9 - 0.1*0.1052632/(sqrt(0.1562031)+1e-8) = 0.8733663
  auto opt = Make("adam", {{"gamma", 0.1}});
  float d[3] = {1, 0, 0};
  float g1[1] = {0.5f};
  opt->Step(d, g1, 1, 1);
  EXPECT_NEAR(d[0], 0.9f, 1e-6);
  // (float rounding: 1 - 0.9f and 1 - 0.999f are not exactly 0.1 and 0.001)
  EXPECT_NEAR(d[1], 0.05f, 1e-7);
  EXPECT_NEAR(d[2], 0.00025f, 1e-8);
  float g2[1] = {-0.25f};
  opt->Step(d, g2, 1, 2);
  EXPECT_NEAR(d[1], 0.02f, 1e-7);
  EXPECT_NEAR(d[2], 0.00031225f, 1e-8);
  EXPECT_NEAR(d[0], 0.8733663f, 1e-6);
  // adam's lambda is L2 folded into the gradient: g' = 0.5 + 0.5*1 = 1 -> m = 0.1, v = 0.001,
  // m^ = 1, v^ = 1, w = 1 - 0.1*1/(1+1e-8) = 0.9 (the same first step, a different slot state).
  float e[3] = {1, 0, 0};
  Make("adam", {{"gamma", 0.1}, {"lambda", 0.5}})->Step(e, g1, 1, 1);
  EXPECT_NEAR(e[1], 0.1f, 1e-7);
  EXPECT_NEAR(e[2], 0.001f, 2e-8);
}

TEST(OptimizerTest, AdamWDecaysFirst) {
  // gamma 0.1, lambda 0.01: step 1: w = 1 - 0.01*0.1*1 = 0.999, then - 0.1 * 0.5/0.5 -> 0.899
  // step 2 (g=-0.25): w = 0.899 - 0.001*0.899 = 0.898101; m^, v^ as in the Adam test
  //   -> w = 0.898101 - 0.1*0.1052632/0.3952253 = 0.8714673
  auto opt = Make("adamw", {{"gamma", 0.1}, {"lambda", 0.01}});
  float d[3] = {1, 0, 0};
  float g1[1] = {0.5f};
  float g2[1] = {-0.25f};
  opt->Step(d, g1, 1, 1);
  EXPECT_NEAR(d[0], 0.899f, 1e-6);
  opt->Step(d, g2, 1, 2);
  EXPECT_NEAR(d[0], 0.8714673f, 1e-6);
}

TEST(OptimizerTest, AmsGradKeepsTheLargestSecondMoment) {
  // step 1 as Adam: w = 0.9, v^ = 0.25 = v_max.
  // step 2 (g=0.1): m = 0.045 + 0.01 = 0.055, m^ = 0.055/0.19 = 0.2894737,
  //   v = 0.999*0.00025 + 0.001*0.01 = 0.00025975, v^ = 0.1299400 < v_max = 0.25,
  //   w = 0.9 - 0.1*0.2894737/(sqrt(0.25)+1e-8) = 0.8421053
  auto opt = Make("amsgrad", {{"gamma", 0.1}});
  float d[4] = {1, 0, 0, 0};  // w, m, v, v_max
  float g1[1] = {0.5f};
  float g2[1] = {0.1f};
  opt->Step(d, g1, 1, 1);
  EXPECT_NEAR(d[0], 0.9f, 1e-6);
  EXPECT_NEAR(d[3], 0.25f, 1e-6);
  opt->Step(d, g2, 1, 2);
  EXPECT_NEAR(d[3], 0.25f, 1e-6);
  EXPECT_NEAR(d[2], 0.00025975f, 1e-8);
  EXPECT_NEAR(d[0], 0.8421053f, 1e-6);
}

TEST(OptimizerTest, Ftrl) {
  // alpha 0.5, beta 1, lambda1 0.1, lambda2 0.2; layout w, z, n
  // step 1 (g=1): n' = 1, sigma = (1-0)/0.5 = 2, z = 0 + 1 - 2*0 = 1 > lambda1 -> n = 1,
  //   w = -1/((1+1)/0.5 + 0.2) * (1 - 0.1) = -0.9/4.2 = -0.2142857
  // step 2 (g=-0.5): n' = 1.25, sigma = (sqrt(1.25)-1)/0.5 = 0.2360680,
  //   z = 1 - 0.5 - 0.2360680*(-0.2142857) = 0.5505860, n = 1.25,
  //   w = -1/((1+1.1180340)/0.5 + 0.2) * (0.5505860 - 0.1) = -0.1015733
  auto opt = Make("ftrl", {{"alpha", 0.5}, {"beta", 1}, {"lambda1", 0.1}, {"lambda2", 0.2}});
  float d[3] = {0, 0, 0};
  float g1[1] = {1};
  float g2[1] = {-0.5f};
  opt->Step(d, g1, 1, 1);
  EXPECT_NEAR(d[0], -0.2142857f, 1e-6);
  EXPECT_FLOAT_EQ(d[1], 1);
  EXPECT_FLOAT_EQ(d[2], 1);
  opt->Step(d, g2, 1, 2);
  EXPECT_NEAR(d[1], 0.5505860f, 1e-6);
  EXPECT_FLOAT_EQ(d[2], 1.25f);
  EXPECT_NEAR(d[0], -0.1015733f, 1e-6);
  // |z| <= lambda1: the weight is zeroed and n does not accumulate (damo's behaviour).
  float e[3] = {0.3f, 0, 0};
  Make("ftrl", {{"alpha", 0.5}, {"lambda1", 2}})->Step(e, g1, 1, 1);
  EXPECT_FLOAT_EQ(e[0], 0);
  EXPECT_FLOAT_EQ(e[1], 1 - 2 * 0.3f);  // z = g - sigma*w = 1 - 2*0.3
  EXPECT_FLOAT_EQ(e[2], 0);
}

TEST(OptimizerTest, Lion) {
  // eta 0.1, beta1 0.9, beta2 0.99, lambda 0.01; layout w, m
  // step 1 (g=0.5): c = 0.9*0 + 0.1*0.5 = 0.05 -> sign +1; w = 1 - 0.1*(1 + 0.01*1) = 0.899;
  //   m = 0.99*0 + 0.01*0.5 = 0.005
  // step 2 (g=-1): c = 0.9*0.005 + 0.1*(-1) = -0.0955 -> -1; w = 0.899 - 0.1*(-1 + 0.00899)
  //   = 0.998101; m = 0.99*0.005 + 0.01*(-1) = -0.00505
  auto opt = Make("lion", {{"eta", 0.1}});
  float d[2] = {1, 0};
  float g1[1] = {0.5f};
  float g2[1] = {-1};
  opt->Step(d, g1, 1, 1);
  EXPECT_NEAR(d[0], 0.899f, 1e-6);
  EXPECT_NEAR(d[1], 0.005f, 1e-8);
  opt->Step(d, g2, 1, 2);
  EXPECT_NEAR(d[0], 0.998101f, 1e-6);
  EXPECT_NEAR(d[1], -0.00505f, 1e-8);
}

// ---- initializers ----

std::vector<float> Draw(const std::string& name, const Params& p, int n) {
  auto init = MakeInitializer(name, p);
  EXPECT_TRUE(init.ok()) << init.status().ToString();
  std::vector<float> v(n, 123.0f);
  if (init.ok()) (*init)->Fill(v.data(), n);
  return v;
}

void MeanAndStddev(const std::vector<float>& v, double* mean, double* stddev) {
  double s = 0, s2 = 0;
  for (float x : v) s += x;
  *mean = s / v.size();
  for (float x : v) s2 += (x - *mean) * (x - *mean);
  *stddev = std::sqrt(s2 / v.size());
}

TEST(InitializerTest, Constants) {
  for (float x : Draw("zeros", {}, 16)) EXPECT_EQ(x, 0.0f);
  for (float x : Draw("ones", {}, 16)) EXPECT_EQ(x, 1.0f);
}

TEST(InitializerTest, RandomUniform) {
  auto v = Draw("random_uniform", {{"min", -0.5}, {"max", 2}}, 20000);
  double mean, sd;
  MeanAndStddev(v, &mean, &sd);
  for (float x : v) {
    ASSERT_GE(x, -0.5f);
    ASSERT_LE(x, 2.0f);
  }
  EXPECT_NEAR(mean, 0.75, 0.05);
  EXPECT_NEAR(sd, 2.5 / std::sqrt(12.0), 0.03);
  for (float x : Draw("random_uniform", {}, 1000)) {  // defaults: [-1, 1)
    ASSERT_GE(x, -1.0f);
    ASSERT_LE(x, 1.0f);
  }
}

TEST(InitializerTest, RandomNormal) {
  auto v = Draw("random_normal", {{"mean", 1}, {"stddev", 2}}, 20000);
  double mean, sd;
  MeanAndStddev(v, &mean, &sd);
  EXPECT_NEAR(mean, 1.0, 0.1);
  EXPECT_NEAR(sd, 2.0, 0.1);
  int beyond = 0;  // about 4.6% lie beyond two standard deviations
  for (float x : v) beyond += std::fabs(x - 1) > 4;
  EXPECT_GT(beyond, 200);
}

TEST(InitializerTest, TruncateNormalStaysWithinTwoStddev) {
  auto v = Draw("truncate_normal", {{"mean", 1}, {"stddev", 2}}, 20000);
  for (float x : v) ASSERT_LE(std::fabs(x - 1), 4.0f + 1e-6f);
  double mean, sd;
  MeanAndStddev(v, &mean, &sd);
  EXPECT_NEAR(mean, 1.0, 0.1);
  EXPECT_NEAR(sd, 0.8796 * 2, 0.1);  // a normal truncated at 2 sigma has sd 0.8796 sigma
  for (float x : Draw("truncate_normal", {}, 1000)) ASSERT_LE(std::fabs(x), 2.0f);
}

TEST(InitializerTest, RejectsBadConfigurations) {
  EXPECT_EQ(MakeInitializer("xavier", {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeInitializer("zeros", {{"mean", 0}}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeInitializer("random_uniform", {{"min", 1}, {"max", 1}}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeInitializer("random_normal", {{"stddev", 0}}).status().code(),
            StatusCode::kInvalidArgument);
}

// ---- the store ----

class EmbeddingStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(tmp_.ok());
    Reopen();
  }

  std::unique_ptr<EmbeddingStore> OpenStore(const std::string& dir, StoreOptions options = {}) {
    if (!options.clock_us) options.clock_us = [this] { return now_us_.load(); };
    auto s = EmbeddingStore::Open(dir, options);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(s).value() : nullptr;
  }
  void Reopen(StoreOptions options = {}) {
    store_.reset();  // releases the directory lock first
    store_ = OpenStore(dir(), std::move(options));
    ASSERT_NE(store_, nullptr);
  }
  std::string dir() const { return tmp_.Sub("store"); }

  ScopedFd NewFile(const std::string& bytes = "") {
    auto fd = OpenFile(tmp_.Sub("file" + std::to_string(files_++)), O_RDWR | O_CREAT | O_TRUNC);
    EXPECT_TRUE(fd.ok());
    if (!bytes.empty()) {
      EXPECT_TRUE(PwriteFull(fd->get(), bytes.data(), bytes.size(), 0).ok());
    }
    return std::move(fd).value();
  }

  std::string CheckpointBytes(EmbeddingStore& s, const Snapshot* snap = nullptr) {
    std::shared_ptr<const Snapshot> own;
    if (snap == nullptr) {
      own = s.TakeSnapshot().value();
      snap = own.get();
    }
    ScopedFd fd = NewFile();
    EXPECT_TRUE(s.Checkpoint(*snap, fd.get()).ok());
    return ReadAll(fd.get());
  }
  std::string CheckpointBytes() { return CheckpointBytes(*store_); }

  std::string DumpBytes(EmbeddingStore& s, const Conditions& c = {},
                        const Snapshot* snap = nullptr) {
    std::shared_ptr<const Snapshot> own;
    if (snap == nullptr) {
      own = s.TakeSnapshot().value();
      snap = own.get();
    }
    ScopedFd fd = NewFile();
    Status st = s.Dump(*snap, c, fd.get());
    EXPECT_TRUE(st.ok()) << st.ToString();
    return ReadAll(fd.get());
  }
  std::string DumpBytes(const Conditions& c = {}) { return DumpBytes(*store_, c); }

  std::vector<float> Lookup(int group, const std::vector<uint64_t>& keys) {
    auto r = store_->Lookup(group, keys);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : std::vector<float>();
  }

  Status LoadCheckpointBytes(EmbeddingStore& s, const std::string& bytes) {
    ScopedFd fd = NewFile(bytes);
    return s.LoadCheckpoint(fd.get());
  }
  Status LoadDumpBytes(const std::string& bytes, std::optional<int> only_group = std::nullopt) {
    ScopedFd fd = NewFile(bytes);
    return store_->LoadDump(fd.get(), only_group);
  }

  size_t GenerationDirs() const {
    size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir())) {
      n += e.path().filename().string().rfind("db.", 0) == 0;
    }
    return n;
  }

  // A few groups with different optimizers and some trained keys.
  void Populate(EmbeddingStore& s) {
    ASSERT_OK(s.ConfigureGroup(0, Config(4, "adam", {{"gamma", 0.01}}, "random_normal")));
    ASSERT_OK(s.ConfigureGroup(7, Config(3, "ftrl", {}, "ones")));
    ASSERT_OK(s.ConfigureGroup(255, Config(1, "sgd", {}, "truncate_normal", {{"stddev", 0.1}})));
    std::vector<uint64_t> keys;
    for (uint64_t k = 0; k < 50; ++k)
      keys.push_back(k * 1000003 + (k % 3 == 0 ? 0xFF00000000000000 : 0));
    for (int g : {0, 7, 255}) {
      ASSERT_TRUE(s.Lookup(g, keys).ok());
      const int dim = g == 0 ? 4 : g == 7 ? 3 : 1;
      std::vector<uint64_t> half(keys.begin(), keys.begin() + 25);
      std::vector<float> grads(half.size() * dim);
      for (size_t i = 0; i < grads.size(); ++i)
        grads[i] = 0.01f * static_cast<float>(i % 7) - 0.03f;
      ASSERT_OK(s.ApplyGradients(g, half, grads));
    }
  }

  TempDir tmp_;
  std::atomic<int64_t> now_us_{kStartUs};
  std::unique_ptr<EmbeddingStore> store_;
  int files_ = 0;
};

TEST_F(EmbeddingStoreTest, CheckpointHoldsDamosExactBytes) {
  ASSERT_OK(store_->ConfigureGroup(3, Config(2, "sgd", {{"gamma", 0.1}}, "ones")));
  EXPECT_EQ(Lookup(3, {0xAB00000000000005ull}), (std::vector<float>{1, 1}));
  const uint64_t t0 = kStartUs / 1000;
  // damo stores the key as the caller gave it; the RocksDB key has the group in its top byte.
  EXPECT_EQ(
      CheckpointBytes(),
      CheckpointOf(1, {{KeyBytes(3, 5), ValueBytes(3, 0xAB00000000000005ull, t0, 0, {1, 1}, 2)}}));

  now_us_ += 5000;
  ASSERT_OK(store_->ApplyGradients(3, {5}, {0.5f, 0.25f}));
  const float w0 = 1.0f - 0.1f * 0.5f, w1 = 1.0f - 0.1f * 0.25f;
  EXPECT_EQ(CheckpointBytes(),
            CheckpointOf(1, {{KeyBytes(3, 5),
                              ValueBytes(3, 0xAB00000000000005ull, t0 + 5, 1, {w0, w1}, 2)}}));
  EXPECT_EQ(Lookup(3, {5}), (std::vector<float>{w0, w1}));

  // The dump: dims of every configured group, counts, then key, group, weights.
  auto d = ParseDumpLikeSeed(DumpBytes());
  EXPECT_EQ(d.dims[3], 2);
  EXPECT_EQ(d.counts[3], 1u);
  EXPECT_EQ(d.records, (std::vector<DumpRecord>{{0xAB00000000000005ull, 3, {w0, w1}}}));
}

TEST_F(EmbeddingStoreTest, ApplyGradientsStepsByUpdateNum) {
  ASSERT_OK(store_->ConfigureGroup(0, Config(1, "adam", {{"gamma", 0.1}}, "ones")));
  Lookup(0, {9});
  // Two steps as in OptimizerTest.AdamWithBiasCorrectionByStep; the second in one call with a
  // repeated key takes two steps in order (damo's merge operands).
  ASSERT_OK(store_->ApplyGradients(0, {9}, {0.5f}));
  EXPECT_NEAR(Lookup(0, {9})[0], 0.9f, 1e-6);
  ASSERT_OK(store_->ApplyGradients(0, {9, 9}, {-0.25f, 0.0f}));
  std::string ckpt = CheckpointBytes();
  ValueHeader h = DecodeValueHeader(ckpt.data() + 8 + 8 + 8 + 8);
  EXPECT_EQ(h.update_num, 3u);
  // Step 3 with g = 0: m = 0.9*0.02 = 0.018, v = 0.999*0.00031225, t = 3.
  const double m = 0.018, v = 0.999 * 0.00031225;
  const double expected =
      0.8733663 - 0.1 * (m / (1 - 0.729)) / std::sqrt(v / (1 - std::pow(0.999, 3)));
  EXPECT_NEAR(Lookup(0, {9})[0], expected, 2e-6);
}

TEST_F(EmbeddingStoreTest, ConfigurationIsValidatedAndPersisted) {
  EXPECT_EQ(store_->ConfigureGroup(-1, Config(2, "sgd")).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->ConfigureGroup(256, Config(2, "sgd")).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->ConfigureGroup(1, Config(0, "sgd")).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->ConfigureGroup(1, Config(2, "rmsprop")).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->ConfigureGroup(1, Config(2, "sgd", {}, "glorot")).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->ConfigureGroup(1, Config(2, "sgd", {{"momentum", 0.9}})).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->GetGroup(256).status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(store_->GetGroup(1)->has_value());

  GroupConfig c = Config(8, "adam", {{"gamma", 0.0123456789012345}, {"beta1", 0.8}},
                         "random_uniform", {{"min", -0.25}});
  ASSERT_OK(store_->ConfigureGroup(1, c));
  ASSERT_OK(store_->ConfigureGroup(2, Config(2, "sgd")));
  const int64_t t = store_->change_time_us();
  ASSERT_OK(store_->ConfigureGroup(1, c));  // the same configuration changes nothing
  EXPECT_EQ(store_->change_time_us(), t);

  Reopen();
  auto groups = store_->Groups();
  ASSERT_TRUE(groups.ok());
  ASSERT_EQ(groups->size(), 2u);
  const GroupConfig& back = groups->at(1);
  EXPECT_EQ(back.dim, 8);
  EXPECT_EQ(back.optimizer, "adam");
  EXPECT_EQ(back.optimizer_params, c.optimizer_params);
  EXPECT_EQ(back.initializer, "random_uniform");
  EXPECT_EQ(back.initializer_params, c.initializer_params);
  EXPECT_EQ(store_->change_time_us(), t);
}

TEST_F(EmbeddingStoreTest, LayoutChangesNeedAGroupWithoutKeys) {
  ASSERT_OK(store_->ConfigureGroup(1, Config(2, "adam")));
  ASSERT_OK(store_->ConfigureGroup(1, Config(3, "adam")));  // no keys yet: fine
  Lookup(1, {1, 2});
  EXPECT_EQ(store_->ConfigureGroup(1, Config(4, "adam")).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->ConfigureGroup(1, Config(3, "sgd")).code(), StatusCode::kInvalidArgument);
  // Same slot layout, other parameters or optimizer: fine.
  ASSERT_OK(store_->ConfigureGroup(1, Config(3, "adamw", {{"gamma", 0.5}}, "ones")));
  // dim 2 with adam (3 floats per weight) is 6 floats, as dim 3 with adagrad: still a dim change.
  ASSERT_OK(store_->ConfigureGroup(2, Config(2, "adam")));
  Lookup(2, {1});
  EXPECT_EQ(store_->ConfigureGroup(2, Config(3, "adagrad")).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->GetGroup(1).value()->optimizer, "adamw");
}

TEST_F(EmbeddingStoreTest, LookupAndApplyErrors) {
  EXPECT_EQ(store_->Lookup(4, {1}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Lookup(300, {1}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->ApplyGradients(4, {1}, {0}).code(), StatusCode::kInvalidArgument);
  ASSERT_OK(store_->ConfigureGroup(4, Config(2, "sgd")));
  Lookup(4, {1});
  Status st = store_->ApplyGradients(4, {1, 77}, {0, 0, 0, 0});
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("77"), std::string::npos) << st.message();
  EXPECT_EQ(store_->ApplyGradients(4, {1}, {0, 0, 0}).code(), StatusCode::kInvalidArgument);
  // Nothing of the failed calls was applied.
  ValueHeader h = DecodeValueHeader(CheckpointBytes().data() + 32);
  EXPECT_EQ(h.update_num, 0u);
  EXPECT_TRUE(store_->Lookup(4, {}).value().empty());
}

TEST_F(EmbeddingStoreTest, LookupCreatesOnceAndKeepsWeights) {
  ASSERT_OK(store_->ConfigureGroup(5, Config(4, "sgd", {}, "random_uniform")));
  auto a = Lookup(5, {10, 11, 10});
  ASSERT_EQ(a.size(), 12u);
  EXPECT_TRUE(std::equal(a.begin(), a.begin() + 4, a.begin() + 8));  // a repeated key: one key
  EXPECT_NE(std::vector<float>(a.begin(), a.begin() + 4),
            std::vector<float>(a.begin() + 4, a.begin() + 8));
  auto b = Lookup(5, {11, 10});
  EXPECT_EQ(std::vector<float>(b.begin(), b.begin() + 4),
            std::vector<float>(a.begin() + 4, a.begin() + 8));
  EXPECT_EQ(std::vector<float>(b.begin() + 4, b.end()),
            std::vector<float>(a.begin(), a.begin() + 4));
  EXPECT_EQ(store_->GetStats()->keys, 2u);
}

TEST_F(EmbeddingStoreTest, ChangeTimeMovesOnChangesOnly) {
  ASSERT_OK(store_->ConfigureGroup(0, Config(2, "sgd")));
  int64_t t = store_->change_time_us();
  auto bumped = [&] {
    const int64_t now = store_->change_time_us();
    const bool b = now > t;
    t = now;
    return b;
  };
  Lookup(0, {1});
  EXPECT_TRUE(bumped());
  Lookup(0, {1});  // existing key: a read
  EXPECT_FALSE(bumped());
  auto snap = store_->TakeSnapshot().value();
  EXPECT_EQ(snap->change_time_us(), t);
  DumpBytes();
  CheckpointBytes();
  ASSERT_TRUE(store_->GetStats().ok());
  EXPECT_FALSE(bumped());
  ASSERT_OK(store_->ApplyGradients(0, {1}, {1, 1}));
  EXPECT_TRUE(bumped());
  ASSERT_OK(LoadCheckpointBytes(*store_, CheckpointBytes()));
  EXPECT_TRUE(bumped());
  ASSERT_OK(LoadDumpBytes(DumpBytes()));
  EXPECT_TRUE(bumped());
  // Strictly increasing even when the clock stands still, and persisted.
  Lookup(0, {2});
  EXPECT_TRUE(bumped());
  ASSERT_OK(store_->Sync());
  EXPECT_FALSE(bumped());
  Reopen();
  EXPECT_EQ(store_->change_time_us(), t);
}

TEST_F(EmbeddingStoreTest, Conditions) {
  ASSERT_OK(store_->ConfigureGroup(0, Config(1, "sgd", {}, "ones")));
  ASSERT_OK(store_->ConfigureGroup(1, Config(2, "sgd", {}, "ones")));
  const int64_t now = kStartUs + 100 * kDayUs;
  // key 1: last updated 10 days and 1 ms before now; key 2: exactly 10 days before now.
  now_us_ = now - 10 * kDayUs - 1000;
  Lookup(0, {1});
  now_us_ = now - 10 * kDayUs;
  Lookup(0, {2});
  // key 4 (group 1): updated once a day before now; key 3: updated three times now.
  now_us_ = now - kDayUs;
  Lookup(1, {4});
  ASSERT_OK(store_->ApplyGradients(1, {4}, {0, 0}));
  now_us_ = now;
  Lookup(0, {3});
  ASSERT_OK(store_->ApplyGradients(0, {3, 3, 3}, {0, 0, 0}));

  auto keys_of = [&](const Conditions& c) {
    auto d = ParseDumpLikeSeed(DumpBytes(c));
    std::set<uint64_t> keys;
    for (const auto& r : d.records) keys.insert(r.key);
    uint64_t total = 0;
    for (uint64_t n : d.counts) total += n;
    EXPECT_EQ(total, d.records.size());
    EXPECT_EQ(d.dims[0], 1);  // every configured group's dim, whatever the filter
    EXPECT_EQ(d.dims[1], 2);
    return keys;
  };
  using Keys = std::set<uint64_t>;
  EXPECT_EQ(keys_of({}), (Keys{1, 2, 3, 4}));
  // damo drops a key when update_time < now - days: 10 days and 1 ms is older, 10 days is not.
  EXPECT_EQ(keys_of(Cond(10)), (Keys{2, 3, 4}));
  EXPECT_EQ(keys_of(Cond(0)), (Keys{3}));
  EXPECT_EQ(keys_of(Cond(1000000)), (Keys{1, 2, 3, 4}));
  EXPECT_EQ(keys_of(Cond({}, 1)), (Keys{3, 4}));
  EXPECT_EQ(keys_of(Cond({}, 3)), (Keys{3}));
  EXPECT_EQ(keys_of(Cond({}, 4)), (Keys{}));
  EXPECT_EQ(keys_of(Cond({}, {}, 1)), (Keys{4}));
  EXPECT_EQ(keys_of(Cond({}, {}, 9)), (Keys{}));
  EXPECT_EQ(keys_of(Cond(10, 1)), (Keys{3, 4}));
  EXPECT_EQ(keys_of(Cond(10, 1, 0)), (Keys{3}));
  EXPECT_EQ(keys_of(Cond(10, {}, 0)), (Keys{2, 3}));

  // "Now" is the snapshot's time: a snapshot taken now dumps the same bytes a day later.
  auto snap = store_->TakeSnapshot().value();
  const std::string before = DumpBytes(*store_, Cond(10), snap.get());
  now_us_ = now + kDayUs;
  EXPECT_EQ(DumpBytes(*store_, Cond(10), snap.get()), before);

  auto fd = NewFile();
  EXPECT_EQ(store_->Dump(*snap, Cond(-1), fd.get()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Dump(*snap, Cond({}, -1), fd.get()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Dump(*snap, Cond({}, {}, 256), fd.get()).code(), StatusCode::kInvalidArgument);
}

TEST_F(EmbeddingStoreTest, CheckpointRoundTripIntoAFreshStore) {
  Populate(*store_);
  const std::string ckpt = CheckpointBytes();
  const std::string dump = DumpBytes();

  auto fresh = OpenStore(tmp_.Sub("fresh"));
  ASSERT_OK(fresh->ConfigureGroup(0, Config(4, "adam", {{"gamma", 0.01}}, "random_normal")));
  ASSERT_OK(fresh->ConfigureGroup(7, Config(3, "ftrl", {}, "ones")));
  ASSERT_OK(fresh->ConfigureGroup(255, Config(1, "sgd", {}, "truncate_normal", {{"stddev", 0.1}})));
  ASSERT_OK(LoadCheckpointBytes(*fresh, ckpt));
  EXPECT_EQ(CheckpointBytes(*fresh), ckpt);
  EXPECT_EQ(DumpBytes(*fresh), dump);
  auto stats = fresh->GetStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->keys, 150u);
  EXPECT_EQ(stats->keys_per_group[7], 50u);

  // Into a store without configuration: kept as it is; the dump takes the dims from the keys.
  auto bare = OpenStore(tmp_.Sub("bare"));
  ASSERT_OK(LoadCheckpointBytes(*bare, ckpt));
  EXPECT_EQ(CheckpointBytes(*bare), ckpt);
  EXPECT_EQ(DumpBytes(*bare), dump);
  // Configuring it afterwards must match the keys' layout.
  EXPECT_EQ(bare->ConfigureGroup(7, Config(3, "amsgrad")).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bare->ConfigureGroup(7, Config(2, "ftrl")).code(), StatusCode::kInvalidArgument);
  ASSERT_OK(bare->ConfigureGroup(7, Config(3, "ftrl")));
  ASSERT_OK(bare->ApplyGradients(7, {0}, {1, 1, 1}));
}

TEST_F(EmbeddingStoreTest, LoadCheckpointReplacesEverything) {
  Populate(*store_);
  const std::string ckpt = CheckpointBytes();
  // Other keys, in a configured group and in one the checkpoint does not have.
  ASSERT_OK(store_->ConfigureGroup(9, Config(2, "sgd")));
  std::vector<uint64_t> extra;
  for (uint64_t k = 100000; k < 100100; ++k) extra.push_back(k);
  Lookup(0, extra);
  Lookup(9, extra);
  ASSERT_OK(LoadCheckpointBytes(*store_, ckpt));
  EXPECT_EQ(CheckpointBytes(), ckpt);
  EXPECT_EQ(store_->GetStats()->keys, 150u);
  EXPECT_EQ(GenerationDirs(), 1u);
  EXPECT_TRUE(store_->GetGroup(9).value().has_value());  // the configuration is kept
  // An empty checkpoint empties the store.
  ASSERT_OK(LoadCheckpointBytes(*store_, CheckpointOf(0, {})));
  EXPECT_EQ(store_->GetStats()->keys, 0u);
  Reopen();
  EXPECT_EQ(store_->GetStats()->keys, 0u);
  EXPECT_EQ(store_->Groups()->size(), 4u);
}

TEST_F(EmbeddingStoreTest, BadCheckpointsChangeNothing) {
  Populate(*store_);
  const std::string before = CheckpointBytes();
  const int64_t t = store_->change_time_us();
  const std::string good_value =
      ValueBytes(7, 5, 1, 0, std::vector<float>(9, 0.5f), 3);  // ftrl dim 3
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"empty file", ""},
      {"truncated header", std::string("\x01\x00", 2)},
      {"count says more records than there are", CheckpointOf(2, {{KeyBytes(7, 5), good_value}})},
      {"count says fewer records than there are",
       CheckpointOf(1, {{KeyBytes(7, 5), good_value},
                        {KeyBytes(7, 6), ValueBytes(7, 6, 1, 0, std::vector<float>(9, 0), 3)}})},
      {"key_len 9", CheckpointOf(1, {{KeyBytes(7, 5) + "x", good_value}})},
      {"value shorter than the header",
       CheckpointOf(1, {{KeyBytes(7, 5), good_value.substr(0, 20)}})},
      {"value shorter than its length says",
       CheckpointOf(1, {{KeyBytes(7, 5), good_value}}).substr(0, 60)},
      {"dim differs from the group's",
       CheckpointOf(1, {{KeyBytes(7, 5), ValueBytes(7, 5, 1, 0, std::vector<float>(6, 0), 2)}})},
      {"slots of another optimizer",
       CheckpointOf(1, {{KeyBytes(7, 5), ValueBytes(7, 5, 1, 0, std::vector<float>(3, 0), 3)}})},
      {"value of another group",
       CheckpointOf(1, {{KeyBytes(7, 5), ValueBytes(8, 5, 1, 0, std::vector<float>(9, 0), 3)}})},
      {"keys out of order",
       CheckpointOf(2, {{KeyBytes(7, 6), ValueBytes(7, 6, 1, 0, std::vector<float>(9, 0), 3)},
                        {KeyBytes(7, 5), good_value}})},
      {"unconfigured group with two dims",
       CheckpointOf(2, {{KeyBytes(9, 5), ValueBytes(9, 5, 1, 0, {0, 0}, 2)},
                        {KeyBytes(9, 6), ValueBytes(9, 6, 1, 0, {0, 0}, 1)}})},
  };
  for (const auto& [what, bytes] : bad) {
    Status st = LoadCheckpointBytes(*store_, bytes);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << what << ": " << st.ToString();
  }
  EXPECT_EQ(CheckpointBytes(), before);
  EXPECT_EQ(store_->change_time_us(), t);
  EXPECT_EQ(GenerationDirs(), 1u);
  // The good record alone loads.
  ASSERT_OK(LoadCheckpointBytes(*store_, CheckpointOf(1, {{KeyBytes(7, 5), good_value}})));
  EXPECT_EQ(store_->GetStats()->keys, 1u);
}

TEST_F(EmbeddingStoreTest, LoadDumpUpsertsWeights) {
  ASSERT_OK(store_->ConfigureGroup(0, Config(2, "adam", {{"gamma", 0.1}}, "ones")));
  ASSERT_OK(store_->ConfigureGroup(1, Config(1, "sgd")));
  Lookup(0, {1, 2});
  ASSERT_OK(store_->ApplyGradients(0, {1, 2}, {0.5f, 0.5f, 0.5f, 0.5f}));
  const std::string ckpt = CheckpointBytes();
  // The dump sets key 2's weights and brings a new key 3.
  now_us_ += 7000;
  ASSERT_OK(LoadDumpBytes(
      DumpOf({{0, 2}, {1, 1}}, {{0, 2}}, {{2, 0, {7.0f, 8.0f}}, {3, 0, {9.0f, 10.0f}}})));
  auto w = Lookup(0, {1, 2, 3});
  ASSERT_EQ(w.size(), 6u);
  EXPECT_NEAR(w[0], 0.9f, 1e-6);  // key 1: its trained weights (see OptimizerTest.AdamWith...)
  EXPECT_NEAR(w[1], 0.9f, 1e-6);
  EXPECT_EQ(std::vector<float>(w.begin() + 2, w.end()), (std::vector<float>{7, 8, 9, 10}));
  const std::string after = CheckpointBytes();
  // Records are 8 + 8 + 8 + (32 + 4*2*3) = 80 bytes: key 1, key 2, key 3 in RocksDB order.
  const size_t rec = 80;
  ASSERT_EQ(after.size(), 8 + 3 * rec);
  EXPECT_EQ(after.substr(8, rec + 24 + 32),
            ckpt.substr(8, rec + 24 + 32));  // key 1, key 2's header
  const char* v2 = after.data() + 8 + rec + 24;
  const char* old_v2 = ckpt.data() + 8 + rec + 24;
  EXPECT_EQ(DecodeValueHeader(v2).update_num, 1u);         // counters kept
  EXPECT_EQ(memcmp(v2 + 32 + 8, old_v2 + 32 + 8, 16), 0);  // slots kept
  const char* v3 = after.data() + 8 + 2 * rec + 24;
  ValueHeader h3 = DecodeValueHeader(v3);
  EXPECT_EQ(h3.update_num, 0u);
  EXPECT_EQ(h3.update_time_ms, static_cast<uint64_t>(now_us_ / 1000));
  EXPECT_EQ(std::string(v3 + 32 + 8, 16), std::string(16, '\0'));  // new keys get zero slots

  // The current dump loads back without change of weights (idempotent).
  const std::string dump = DumpBytes();
  ASSERT_OK(LoadDumpBytes(dump));
  EXPECT_EQ(DumpBytes(), dump);
  // only_group: a group/<g> file holds only that group.
  ASSERT_OK(LoadDumpBytes(DumpOf({{1, 1}}, {{1, 1}}, {{5, 1, {3.0f}}}), 1));
  EXPECT_EQ(Lookup(1, {5}), (std::vector<float>{3.0f}));
  EXPECT_EQ(LoadDumpBytes(DumpOf({{1, 1}}, {{1, 1}}, {{5, 1, {3.0f}}}), 0).code(),
            StatusCode::kInvalidArgument);
}

TEST_F(EmbeddingStoreTest, BadDumpsChangeNothing) {
  Populate(*store_);
  const std::string before = CheckpointBytes();
  const std::vector<DumpRecord> one = {{5, 7, {1, 2, 3}}};
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"truncated header", std::string(100, '\0')},
      {"counts say more records", DumpOf({{7, 3}}, {{7, 2}}, one)},
      {"counts say fewer records",
       DumpOf({{7, 3}}, {{7, 1}}, {{5, 7, {1, 2, 3}}, {6, 7, {1, 2, 3}}})},
      {"truncated weights", DumpOf({{7, 3}}, {{7, 1}}, one).substr(0, kDumpHeaderSize + 20)},
      {"dim differs from the group's", DumpOf({{7, 2}}, {{7, 1}}, {{5, 7, {1, 2}}})},
      {"records of an unconfigured group", DumpOf({{9, 2}}, {{9, 1}}, {{5, 9, {1, 2}}})},
      {"record of a group the counts do not have",
       DumpOf({{7, 3}, {0, 4}}, {{7, 1}}, {{5, 0, {1, 2, 3, 4}}})},
      {"negative dim", DumpOf({{7, -3}}, {}, {})},
  };
  for (const auto& [what, bytes] : bad) {
    Status st = LoadDumpBytes(bytes);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << what << ": " << st.ToString();
  }
  EXPECT_EQ(LoadDumpBytes(DumpOf({{7, 3}}, {{7, 1}}, one), 0).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadDumpBytes(DumpOf({{7, 3}}, {{7, 1}}, one), 256).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckpointBytes(), before);
}

TEST_F(EmbeddingStoreTest, SnapshotIsAnImmutableView) {
  Populate(*store_);
  auto snap = store_->TakeSnapshot().value();
  const std::string dump = DumpBytes(*store_, {}, snap.get());
  const std::string ckpt = CheckpointBytes(*store_, snap.get());
  ASSERT_OK(store_->ApplyGradients(7, {0, 1000003}, std::vector<float>(6, 1.0f)));
  Lookup(7, {424242});
  EXPECT_EQ(DumpBytes(*store_, {}, snap.get()), dump);
  EXPECT_EQ(CheckpointBytes(*store_, snap.get()), ckpt);
  EXPECT_NE(DumpBytes(), dump);
  EXPECT_GT(store_->change_time_us(), snap->change_time_us());
  // A snapshot of another store is refused.
  auto other = OpenStore(tmp_.Sub("other"));
  auto fd = NewFile();
  EXPECT_EQ(other->Checkpoint(*snap, fd.get()).code(), StatusCode::kInvalidArgument);
}

TEST_F(EmbeddingStoreTest, SnapshotSurvivesLoadCheckpoint) {
  Populate(*store_);
  auto snap = store_->TakeSnapshot().value();
  const std::string ckpt = CheckpointBytes(*store_, snap.get());
  const std::string dump = DumpBytes(*store_, {}, snap.get());
  ASSERT_OK(LoadCheckpointBytes(*store_, CheckpointOf(0, {})));
  EXPECT_EQ(store_->GetStats()->keys, 0u);
  EXPECT_EQ(GenerationDirs(), 2u);  // the old generation lives while the snapshot does
  EXPECT_EQ(CheckpointBytes(*store_, snap.get()), ckpt);
  EXPECT_EQ(DumpBytes(*store_, {}, snap.get()), dump);
  snap.reset();
  EXPECT_EQ(GenerationDirs(), 1u);
  ASSERT_OK(LoadCheckpointBytes(*store_, ckpt));
  EXPECT_EQ(CheckpointBytes(), ckpt);
}

TEST_F(EmbeddingStoreTest, OpenRemovesCrashLeftovers) {
  Populate(*store_);
  const std::string ckpt = CheckpointBytes();
  store_.reset();
  ASSERT_OK(MakeDirs(dir() + "/db.77"));
  ASSERT_OK(WriteStringToFile(dir() + "/db.77/000001.sst", "half a load"));
  ASSERT_OK(WriteStringToFile(dir() + "/CURRENT_DB.tmp", "db.77 plain\n"));
  Reopen();
  EXPECT_FALSE(Exists(dir() + "/db.77"));
  EXPECT_FALSE(Exists(dir() + "/CURRENT_DB.tmp"));
  EXPECT_EQ(CheckpointBytes(), ckpt);
  // The next load takes a number above any seen, and one process at a time opens the store.
  ASSERT_OK(LoadCheckpointBytes(*store_, ckpt));
  EXPECT_TRUE(Exists(dir() + "/db.78"));
  auto second = EmbeddingStore::Open(dir(), {});
  EXPECT_EQ(second.status().code(), StatusCode::kIOError);
}

TEST_F(EmbeddingStoreTest, TtlModeKeepsDamosValuesAndSwitchesBothWays) {
  Populate(*store_);
  const std::string ckpt = CheckpointBytes();
  const std::string dump = DumpBytes();
  Reopen(Ttl(86400));  // converts the generation: RocksDB TTL suffixes every value
  EXPECT_EQ(CheckpointBytes(), ckpt);
  EXPECT_EQ(DumpBytes(), dump);
  ASSERT_OK(store_->ApplyGradients(7, {0}, {1, 1, 1}));
  const std::string trained = CheckpointBytes();
  Reopen(Ttl(86400));
  EXPECT_EQ(CheckpointBytes(), trained);
  Reopen({});
  EXPECT_EQ(CheckpointBytes(), trained);
  EXPECT_EQ(GenerationDirs(), 1u);
}

TEST_F(EmbeddingStoreTest, TtlExpiresKeysAtCompaction) {
  // RocksDB's TTL works in whole seconds against the real clock: a key written at second T is
  // removed by a compaction after second T + ttl.
  Reopen(Ttl(1, [] {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }));
  ASSERT_OK(store_->ConfigureGroup(0, Config(4, "sgd")));
  std::vector<uint64_t> keys(100);
  for (size_t i = 0; i < keys.size(); ++i) keys[i] = i;
  Lookup(0, keys);
  ASSERT_OK(store_->Compact());
  EXPECT_EQ(store_->GetStats()->keys, 100u);
  const int64_t t = store_->change_time_us();
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  ASSERT_OK(store_->Compact());
  EXPECT_EQ(store_->GetStats()->keys, 0u);
  // The expiry counts as a change (so cached views are regenerated).
  for (int i = 0; i < 100 && store_->change_time_us() == t; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_GT(store_->change_time_us(), t);
  EXPECT_TRUE(store_->GetGroup(0).value().has_value());  // configuration never expires
}

TEST_F(EmbeddingStoreTest, ConcurrentTrainingLosesNoStep) {
  ASSERT_OK(store_->ConfigureGroup(0, Config(2, "sgd", {{"gamma", 1.0}})));
  constexpr int kThreads = 4, kRounds = 100, kKeys = 16;
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        std::vector<uint64_t> keys = {static_cast<uint64_t>((t + r) % kKeys),
                                      static_cast<uint64_t>((t * 7 + r * 3) % kKeys)};
        if (!store_->Lookup(0, keys).ok() ||
            !store_->ApplyGradients(0, keys, std::vector<float>(4, 1.0f)).ok()) {
          failed = true;
        }
      }
    });
  }
  threads.emplace_back([&] {
    for (int r = 0; r < 20; ++r) {
      auto snap = store_->TakeSnapshot();
      if (!snap.ok()) failed = true;
      auto d = ParseDumpLikeSeed(DumpBytes(*store_, {}, snap->get()));
      uint64_t total = 0;
      for (uint64_t n : d.counts) total += n;
      if (total != d.records.size()) failed = true;
    }
  });
  for (auto& th : threads) th.join();
  EXPECT_FALSE(failed);
  // Every step of gamma 1 and gradient 1 took 1 off a zero weight: weights sum to -steps, and the
  // update_nums add up to the steps.
  auto d = ParseDumpLikeSeed(DumpBytes());
  double sum = 0;
  for (const auto& r : d.records) sum += r.weights[0];
  EXPECT_EQ(sum, -static_cast<double>(kThreads * kRounds * 2));
  const std::string ckpt = CheckpointBytes();
  uint64_t steps = 0;
  constexpr size_t kRecordSize = 24 + 32 + 4 * 2;  // lengths and key, header, two sgd weights
  for (size_t off = 8; off < ckpt.size(); off += kRecordSize) {
    steps += DecodeValueHeader(ckpt.data() + off + 24).update_num;
  }
  EXPECT_EQ(steps, static_cast<uint64_t>(kThreads * kRounds * 2));
}

// Not a benchmark (bench/ has those), a smoke check of the streaming path's speed: dim 16.
TEST_F(EmbeddingStoreTest, DumpAndCheckpointStreamFast) {
  ASSERT_OK(store_->ConfigureGroup(1, Config(16, "sgd")));
  constexpr uint64_t kRecords = 200000;
  std::vector<CkptRecord> records;
  records.reserve(kRecords);
  std::vector<float> w(16);
  for (uint64_t k = 0; k < kRecords; ++k) {
    for (int i = 0; i < 16; ++i) w[i] = static_cast<float>(k + i);
    records.push_back({KeyBytes(1, k), ValueBytes(1, k, 1, 1, w, 16)});
  }
  std::sort(records.begin(), records.end(),
            [](const CkptRecord& a, const CkptRecord& b) { return a.key < b.key; });
  ASSERT_OK(LoadCheckpointBytes(*store_, CheckpointOf(kRecords, records)));
  auto snap = store_->TakeSnapshot().value();
  for (const char* what : {"dump", "checkpoint"}) {
    ScopedFd fd = NewFile();
    auto start = std::chrono::steady_clock::now();
    ASSERT_OK(std::string(what) == "dump" ? store_->Dump(*snap, {}, fd.get())
                                          : store_->Checkpoint(*snap, fd.get()));
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    printf("%s: %.2f million records/s\n", what, kRecords / s / 1e6);
  }
}

}  // namespace
}  // namespace modelfs::embeddings
