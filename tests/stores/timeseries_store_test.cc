#include "stores/timeseries/timeseries_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "stores/common/file_util.h"
#include "stores/common/sqlite_db.h"
#include "tests/stores/temp_dir.h"

namespace modelfs::timeseries {
namespace {

using ::modelfs::testing::Exists;
using ::modelfs::testing::TempDir;

struct Series {
  std::vector<double> times;
  std::vector<double> values;
};

// n pairs: times base, base+1, ...; values base*0.5 + i*0.25 (distinct per base).
Series Make(size_t n, double base) {
  Series s;
  for (size_t i = 0; i < n; ++i) {
    s.times.push_back(base + static_cast<double>(i));
    s.values.push_back(base * 0.5 + static_cast<double>(i) * 0.25);
  }
  return s;
}

// Every time and value equal to k: a series whose every element names the write it came from.
Series Uniform(size_t n, double k) {
  return Series{std::vector<double>(n, k), std::vector<double>(n, k)};
}

std::vector<uint64_t> Bits(std::span<const double> s) {
  std::vector<uint64_t> out(s.size());
  if (!s.empty()) memcpy(out.data(), s.data(), s.size_bytes());
  return out;
}

// The file format: the times, then the values, as raw little-endian float64.
std::string FileBytes(const Series& s) {
  std::string out(16 * s.times.size(), '\0');
  if (!s.times.empty()) {
    memcpy(out.data(), s.times.data(), 8 * s.times.size());
    memcpy(out.data() + 8 * s.times.size(), s.values.data(), 8 * s.values.size());
  }
  return out;
}

std::string ReadAll(int fd) {
  uint64_t size = FileSize(fd).value();
  std::string s(size, '\0');
  EXPECT_EQ(PreadFull(fd, s.data(), s.size(), 0).value(), size);
  return s;
}

std::set<std::string> DirNames(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.insert(e.path().filename().string());
  }
  return names;
}

class TimeSeriesStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(tmp_.ok());
    Reopen();
  }

  void Reopen() {
    store_.reset();  // releases the lock first, so the new open does the crash repair
    auto store = TimeSeriesStore::Open(dir());
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }

  std::string dir() const { return tmp_.Sub("store"); }
  std::string data() const { return dir() + "/data"; }
  std::string staging() const { return dir() + "/staging"; }

  std::unique_ptr<StagedFile> Stage(std::string_view bytes) {
    auto staged = StagedFile::Create(store_->staging_dir());
    EXPECT_TRUE(staged.ok()) << staged.status().ToString();
    EXPECT_TRUE(PwriteFull((*staged)->fd(), bytes.data(), bytes.size(), 0).ok());
    return std::move(staged).value();
  }

  Result<WriteResult> Put(std::optional<std::string_view> id, const Series& s,
                          const WriteOptions& options = {}) {
    return store_->Store(id, s.times, s.values, options);
  }

  // The series' bytes as OpenData reads them.
  std::string Read(std::string_view id) {
    auto data = store_->OpenData(id);
    EXPECT_TRUE(data.ok()) << data.status().ToString();
    return data.ok() ? ReadAll(data->fd.get()) : "";
  }

  // The file names the index points at: data/ should hold exactly these after an Open().
  std::set<std::string> IndexedFiles() {
    std::set<std::string> names;
    for (const SeriesInfo& info : store_->List()) names.insert(std::to_string(info.version));
    return names;
  }

  TempDir tmp_;
  std::unique_ptr<TimeSeriesStore> store_;
};

// ---- the seed's API ----

TEST_F(TimeSeriesStoreTest, StoreThenGetIsBitExactForSpecialValues) {
  const std::vector<uint64_t> patterns = {
      0x7ff8000000000123ull,  // quiet NaN with a payload
      0xfff0000000000001ull,  // negative signalling NaN with a payload
      0x7ff0000000000000ull,  // +inf
      0xfff0000000000000ull,  // -inf
      0x8000000000000000ull,  // -0.0
      0x0000000000000001ull,  // smallest subnormal
      0x800fffffffffffffull,  // largest negative subnormal
      0x7fefffffffffffffull,  // largest finite
      0x3ff0000000000000ull,  // 1.0
  };
  Series s;
  for (size_t i = 0; i < patterns.size(); ++i) {
    s.times.push_back(std::bit_cast<double>(patterns[i]));
    s.values.push_back(std::bit_cast<double>(patterns[patterns.size() - 1 - i]));
  }
  auto w = Put("special", s);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->id, "special");
  EXPECT_EQ(w->outcome, WriteOutcome::kStored);
  EXPECT_EQ(w->info.length, patterns.size());

  auto size = store_->Size("special");
  ASSERT_TRUE(size.ok()) << size.status().ToString();
  EXPECT_EQ(*size, patterns.size());

  auto view = store_->Get("special");
  ASSERT_TRUE(view.ok()) << view.status().ToString();
  EXPECT_EQ(view->size(), patterns.size());
  EXPECT_EQ(Bits(view->times()), Bits(s.times));
  EXPECT_EQ(Bits(view->values()), Bits(s.values));
  EXPECT_EQ(view->info().version, w->info.version);
  // The file is exactly the times, then the values.
  EXPECT_EQ(Read("special"), FileBytes(s));
}

TEST_F(TimeSeriesStoreTest, EmptySeries) {
  auto w = Put("empty", Series{});
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->info.length, 0u);
  EXPECT_EQ(store_->Size("empty").value(), 0u);
  auto view = store_->Get("empty");
  ASSERT_TRUE(view.ok()) << view.status().ToString();
  EXPECT_EQ(view->size(), 0u);
  EXPECT_TRUE(view->times().empty());
  EXPECT_TRUE(view->values().empty());
  auto data = store_->OpenData("empty");
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  EXPECT_EQ(FileSize(data->fd.get()).value(), 0u);
  // Storing it again changes nothing.
  auto again = Put("empty", Series{});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->outcome, WriteOutcome::kUnchanged);
}

TEST_F(TimeSeriesStoreTest, GeneratedIdsAreDistinctUuids) {
  const std::regex uuid("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");
  std::set<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    auto w = Put(std::nullopt, Make(3, i));
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    EXPECT_TRUE(std::regex_match(w->id, uuid)) << w->id;
    EXPECT_EQ(w->info.id, w->id);
    EXPECT_EQ(Read(w->id), FileBytes(Make(3, i)));
    ids.insert(w->id);
  }
  EXPECT_EQ(ids.size(), 20u);
  EXPECT_EQ(store_->Count(), 20u);
  // Identical bytes under a generated id are a new series, not "unchanged".
  auto w = Put(std::nullopt, Make(3, 0));
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->outcome, WriteOutcome::kStored);
  EXPECT_FALSE(ids.contains(w->id));
}

TEST_F(TimeSeriesStoreTest, MismatchedSizesAreRejected) {
  std::vector<double> times = {1, 2, 3};
  std::vector<double> values = {1, 2};
  auto w = store_->Store("x", times, values);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(w.status().message().find("'x'"), std::string::npos) << w.status().ToString();
  EXPECT_EQ(store_->Count(), 0u);
  EXPECT_TRUE(DirNames(staging()).empty());
  EXPECT_TRUE(DirNames(data()).empty());
}

TEST_F(TimeSeriesStoreTest, StoreRejectsInvalidIds) {
  auto w = Put("a/b", Make(2, 1));
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
  w = Put(std::string(256, 'x'), Make(2, 1));
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), StatusCode::kNameTooLong);
  EXPECT_EQ(store_->Count(), 0u);
}

TEST_F(TimeSeriesStoreTest, MissingSeriesIsNotFound) {
  EXPECT_EQ(store_->Size("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->Info("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->Get("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->OpenData("nope").status().code(), StatusCode::kNotFound);
  Status st = store_->Remove("nope");
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_NE(st.message().find("'nope'"), std::string::npos) << st.ToString();
}

// ---- ids ----

TEST(TimeSeriesValidateIdTest, AcceptsOrdinaryNames) {
  for (std::string id : {"a", "series-1", "with space", "tab\x7e", "über_温度", "x.y", "a..b", "-",
                         "UPPER", "#$%&'()*+,;=@[]^_`{|}~"}) {
    Status st = TimeSeriesStore::ValidateId(id);
    EXPECT_TRUE(st.ok()) << id << ": " << st.ToString();
  }
  EXPECT_TRUE(TimeSeriesStore::ValidateId(std::string(255, 'x')).ok());
  EXPECT_TRUE(TimeSeriesStore::ValidateId("\xff\xfe").ok());  // bytes, not necessarily UTF-8
}

TEST(TimeSeriesValidateIdTest, RejectsBadNames) {
  const std::vector<std::string> bad = {
      "",     ".",  "..",      ".x",  ".hidden.swp", "a/b", "/", std::string("a\0b", 3),
      "a\nb", "\t", "del\x7f", "\x1f"};
  for (const std::string& id : bad) {
    Status st = TimeSeriesStore::ValidateId(id);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << "'" << id << "': " << st.ToString();
    EXPECT_NE(st.message().find("timeseries id"), std::string::npos) << st.ToString();
  }
  Status dot = TimeSeriesStore::ValidateId(".x");
  EXPECT_NE(dot.message().find("temporary"), std::string::npos) << dot.ToString();
  Status nl = TimeSeriesStore::ValidateId("a\nb");
  EXPECT_NE(nl.message().find("\\x0a"), std::string::npos) << nl.ToString();  // escaped
  Status too_long = TimeSeriesStore::ValidateId(std::string(256, 'x'));
  EXPECT_EQ(too_long.code(), StatusCode::kNameTooLong) << too_long.ToString();
  EXPECT_NE(too_long.message().find("256"), std::string::npos) << too_long.ToString();
}

TEST_F(TimeSeriesStoreTest, ListIsInByteOrder) {
  for (std::string id : {"b", "a", "Z", "\xc3\xa9t\xc3\xa9", "a b", "a\xff"}) {
    ASSERT_TRUE(Put(id, Make(1, 1)).ok()) << id;
  }
  std::vector<std::string> ids;
  for (const SeriesInfo& info : store_->List()) ids.push_back(info.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"Z", "a", "a b", "a\xff", "b", "\xc3\xa9t\xc3\xa9"}));
  Reopen();
  std::vector<std::string> reopened;
  for (const SeriesInfo& info : store_->List()) reopened.push_back(info.id);
  EXPECT_EQ(reopened, ids);
}

// ---- the filesystem's API ----

TEST_F(TimeSeriesStoreTest, CommitConsumesTheStagedFile) {
  Series s = Make(4, 10);
  auto staged = Stage(FileBytes(s));
  std::string staged_path = staged->path();
  auto w = store_->Commit("c", *staged);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->outcome, WriteOutcome::kStored);
  EXPECT_TRUE(staged->consumed());
  EXPECT_FALSE(Exists(staged_path));
  EXPECT_EQ(w->info.length, 4u);
  EXPECT_GT(w->info.version, 0u);
  std::string file = data() + "/" + std::to_string(w->info.version);
  struct stat st;
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0444u);  // immutable
  EXPECT_EQ(Read("c"), FileBytes(s));
  // The staged fd now refers to the committed file.
  EXPECT_EQ(ReadAll(staged->fd()), FileBytes(s));

  // A consumed staged file cannot be committed again.
  auto again = store_->Commit("d", *staged);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(TimeSeriesStoreTest, CommitWithGeneratedId) {
  auto staged = Stage(FileBytes(Make(2, 1)));
  auto w = store_->Commit(std::nullopt, *staged);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->id.size(), 36u);
  EXPECT_EQ(Read(w->id), FileBytes(Make(2, 1)));
}

TEST_F(TimeSeriesStoreTest, CommitRejectsSizeNotMultipleOf16AndChangesNothing) {
  Series old = Make(2, 1);
  auto first = Put("s", old);
  ASSERT_TRUE(first.ok());
  for (size_t bytes : {1u, 8u, 17u, 40u}) {
    std::string content(bytes, 'x');
    auto staged = Stage(content);
    auto w = store_->Commit("s", *staged);
    ASSERT_FALSE(w.ok()) << bytes;
    EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(w.status().message().find(std::to_string(bytes) + " bytes, not a multiple of 16"),
              std::string::npos)
        << w.status().ToString();
    EXPECT_NE(w.status().message().find("'s'"), std::string::npos) << w.status().ToString();
    // The staged file is intact.
    EXPECT_FALSE(staged->consumed());
    EXPECT_TRUE(Exists(staged->path()));
    EXPECT_EQ(ReadAll(staged->fd()), content);
  }
  // So is the store.
  auto info = store_->Info("s");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->version, first->info.version);
  EXPECT_EQ(Read("s"), FileBytes(old));
  EXPECT_EQ(store_->Count(), 1u);
  EXPECT_EQ(DirNames(data()), IndexedFiles());
}

TEST_F(TimeSeriesStoreTest, CommitRejectsInvalidIdAndKeepsStagedFile) {
  auto staged = Stage(FileBytes(Make(1, 1)));
  auto w = store_->Commit(".tmp", *staged);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(staged->consumed());
  EXPECT_TRUE(Exists(staged->path()));
  EXPECT_EQ(store_->Count(), 0u);
}

TEST_F(TimeSeriesStoreTest, IdenticalBytesAreUnchanged) {
  Series s = Make(5, 2);
  WriteOptions at;
  at.mtime_ns = 1000;
  auto first = Put("s", s, at);
  ASSERT_TRUE(first.ok());
  auto staged = Stage(FileBytes(s));
  auto w = store_->Commit("s", *staged);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->outcome, WriteOutcome::kUnchanged);
  EXPECT_EQ(w->info.version, first->info.version);
  EXPECT_EQ(w->info.mtime_ns, 1000);  // no mtime asked: the old one stays
  EXPECT_FALSE(staged->consumed());
  EXPECT_EQ(store_->Info("s")->mtime_ns, 1000);
  EXPECT_EQ(DirNames(data()).size(), 1u);

  // The same mtime asked explicitly is also no change.
  auto same_time = Put("s", s, at);
  ASSERT_TRUE(same_time.ok());
  EXPECT_EQ(same_time->outcome, WriteOutcome::kUnchanged);
}

TEST_F(TimeSeriesStoreTest, IdenticalBytesWithOtherMtimeChangeOnlyTheTime) {
  Series s = Make(5, 2);
  auto first = Put("s", s);
  ASSERT_TRUE(first.ok());
  WriteOptions at;
  at.mtime_ns = 1234567890123456789;
  auto staged = Stage(FileBytes(s));
  auto w = store_->Commit("s", *staged, at);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->outcome, WriteOutcome::kTimeChanged);
  EXPECT_EQ(w->info.version, first->info.version);
  EXPECT_EQ(w->info.mtime_ns, *at.mtime_ns);
  EXPECT_FALSE(staged->consumed());
  EXPECT_EQ(store_->Info("s")->mtime_ns, *at.mtime_ns);
  Reopen();
  EXPECT_EQ(store_->Info("s")->mtime_ns, *at.mtime_ns);
  EXPECT_EQ(store_->Info("s")->version, first->info.version);
}

TEST_F(TimeSeriesStoreTest, MtimeDefaultsToNowAndKeepsAGivenTime) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t before = ts.tv_sec * 1000000000LL + ts.tv_nsec;
  auto w = Put("now", Make(1, 1));
  ASSERT_TRUE(w.ok());
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t after = ts.tv_sec * 1000000000LL + ts.tv_nsec;
  EXPECT_GE(w->info.mtime_ns, before);
  EXPECT_LE(w->info.mtime_ns, after);

  WriteOptions old;
  old.mtime_ns = -5;  // before the epoch: a restore may carry any time
  auto restored = Put("restored", Make(1, 1), old);
  ASSERT_TRUE(restored.ok());
  EXPECT_EQ(store_->Info("restored")->mtime_ns, -5);
}

TEST_F(TimeSeriesStoreTest, OverwriteIsANewVersionAndOldReadersKeepOldBytes) {
  Series a = Make(100, 1);
  Series b = Make(50, 7);
  auto first = Put("s", a);
  ASSERT_TRUE(first.ok());
  auto old_view = store_->Get("s");
  ASSERT_TRUE(old_view.ok());
  auto old_data = store_->OpenData("s");
  ASSERT_TRUE(old_data.ok());

  auto staged = Stage(FileBytes(b));
  auto w = store_->Commit("s", *staged);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->outcome, WriteOutcome::kStored);
  EXPECT_GT(w->info.version, first->info.version);
  EXPECT_EQ(w->info.length, 50u);

  // The old view and fd still read the old series; the old file is gone from data/.
  EXPECT_EQ(Bits(old_view->times()), Bits(a.times));
  EXPECT_EQ(Bits(old_view->values()), Bits(a.values));
  EXPECT_EQ(old_view->info().version, first->info.version);
  EXPECT_EQ(ReadAll(old_data->fd.get()), FileBytes(a));
  EXPECT_EQ(old_data->info.length, 100u);

  auto new_view = store_->Get("s");
  ASSERT_TRUE(new_view.ok());
  EXPECT_EQ(Bits(new_view->values()), Bits(b.values));
  EXPECT_EQ(store_->Size("s").value(), 50u);
  EXPECT_EQ(DirNames(data()), IndexedFiles());
  EXPECT_EQ(DirNames(data()).size(), 1u);

  // Same length, other bytes: also a new version.
  Series c = Make(50, 8);
  auto third = Put("s", c);
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->outcome, WriteOutcome::kStored);
  EXPECT_GT(third->info.version, w->info.version);
  EXPECT_EQ(Bits(new_view->values()), Bits(b.values));
  EXPECT_EQ(Read("s"), FileBytes(c));
}

TEST_F(TimeSeriesStoreTest, SeriesViewMoves) {
  Series a = Make(10, 1);
  Series b = Make(20, 2);
  ASSERT_TRUE(Put("a", a).ok());
  ASSERT_TRUE(Put("b", b).ok());
  SeriesView va = std::move(store_->Get("a").value());
  SeriesView moved(std::move(va));
  EXPECT_EQ(va.size(), 0u);  // NOLINT: a moved-from view is empty
  EXPECT_EQ(Bits(moved.values()), Bits(a.values));
  SeriesView vb = std::move(store_->Get("b").value());
  moved = std::move(vb);  // unmaps a's
  EXPECT_EQ(moved.info().id, "b");
  EXPECT_EQ(Bits(moved.times()), Bits(b.times));
  SeriesView empty;
  EXPECT_EQ(empty.size(), 0u);
  moved = std::move(empty);
  EXPECT_EQ(moved.size(), 0u);
}

// ---- Remove ----

TEST_F(TimeSeriesStoreTest, RemoveThenNotFoundAndOldViewStillValid) {
  Series a = Make(10, 3);
  auto w = Put("gone", a);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(Put("kept", Make(2, 2)).ok());
  auto view = store_->Get("gone");
  ASSERT_TRUE(view.ok());
  ASSERT_OK(store_->Remove("gone"));
  EXPECT_EQ(store_->Info("gone").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->Get("gone").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->Remove("gone").code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->Count(), 1u);
  EXPECT_FALSE(Exists(data() + "/" + std::to_string(w->info.version)));
  EXPECT_EQ(Bits(view->values()), Bits(a.values));
  Reopen();
  EXPECT_EQ(store_->Info("gone").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(DirNames(data()), IndexedFiles());
}

TEST_F(TimeSeriesStoreTest, VersionsAreNeverReused) {
  auto a = Put("a", Make(1, 1));
  ASSERT_TRUE(a.ok());
  ASSERT_OK(store_->Remove("a"));  // the highest number goes away
  Reopen();
  auto b = Put("b", Make(1, 2));
  ASSERT_TRUE(b.ok());
  EXPECT_GT(b->info.version, a->info.version);
  // Storing "a" again: a new series with a new version, not the old one back.
  auto a2 = Put("a", Make(1, 1));
  ASSERT_TRUE(a2.ok());
  EXPECT_GT(a2->info.version, b->info.version);
}

// ---- persistence and crash repair ----

TEST_F(TimeSeriesStoreTest, ReopenKeepsListAndInfo) {
  WriteOptions at;
  at.mtime_ns = 42;
  ASSERT_TRUE(Put("one", Make(1, 1), at).ok());
  ASSERT_TRUE(Put("two", Make(2, 2)).ok());
  ASSERT_TRUE(Put("three", Make(3, 3)).ok());
  ASSERT_TRUE(Put("two", Make(20, 2)).ok());
  std::vector<SeriesInfo> before = store_->List();
  Reopen();
  std::vector<SeriesInfo> after = store_->List();
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_EQ(after[i].id, before[i].id);
    EXPECT_EQ(after[i].length, before[i].length);
    EXPECT_EQ(after[i].mtime_ns, before[i].mtime_ns);
    EXPECT_EQ(after[i].version, before[i].version);
  }
  EXPECT_EQ(store_->Info("one")->mtime_ns, 42);
  EXPECT_EQ(Read("two"), FileBytes(Make(20, 2)));
  EXPECT_EQ(DirNames(data()), IndexedFiles());
}

TEST_F(TimeSeriesStoreTest, IndexInMemoryMatchesIndexOnDisk) {
  ASSERT_TRUE(Put("a", Make(1, 1)).ok());
  ASSERT_TRUE(Put("b", Make(2, 2)).ok());
  ASSERT_TRUE(Put("a", Make(3, 3)).ok());
  WriteOptions at;
  at.mtime_ns = 77;
  ASSERT_TRUE(Put("b", Make(2, 2), at).ok());  // time only
  ASSERT_TRUE(Put("c", Make(4, 4)).ok());
  ASSERT_OK(store_->Remove("c"));

  auto db = SqliteDb::Open(dir() + "/index.db", SQLITE_OPEN_READONLY);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  auto stmt = db->Prepare("SELECT id, file_no, length, mtime_ns FROM series ORDER BY id");
  ASSERT_TRUE(stmt.ok()) << stmt.status().ToString();
  std::vector<SeriesInfo> on_disk;
  while (stmt->Step().value()) {
    SeriesInfo info;
    info.id = stmt->ColumnText(0);
    info.version = static_cast<uint64_t>(stmt->ColumnInt64(1));
    info.length = static_cast<uint64_t>(stmt->ColumnInt64(2));
    info.mtime_ns = stmt->ColumnInt64(3);
    on_disk.push_back(info);
  }
  std::vector<SeriesInfo> in_memory = store_->List();
  ASSERT_EQ(in_memory.size(), 2u);
  ASSERT_EQ(on_disk.size(), in_memory.size());
  for (size_t i = 0; i < on_disk.size(); ++i) {
    EXPECT_EQ(on_disk[i].id, in_memory[i].id);
    EXPECT_EQ(on_disk[i].version, in_memory[i].version);
    EXPECT_EQ(on_disk[i].length, in_memory[i].length);
    EXPECT_EQ(on_disk[i].mtime_ns, in_memory[i].mtime_ns);
  }
  EXPECT_EQ(in_memory[1].mtime_ns, 77);
  auto schema = db->QueryRow("PRAGMA user_version");
  ASSERT_TRUE(schema.ok());
  EXPECT_EQ(schema->stmt.ColumnInt64(0), 1);
}

// Runs `write` in a forked child whose store crashes (_exit) at crash point `point`, and expects
// the crash to have happened there. The parent has closed its store, so the child is the only
// opener and the parent's next Open() does the repair.
void CrashChildAt(const std::string& dir, const std::string& point,
                  const std::function<Result<WriteResult>(TimeSeriesStore&)>& write) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // The child never returns into gtest: every path ends in _exit.
    auto store = TimeSeriesStore::Open(dir, [point](std::string_view p) {
      if (p == point) ::_exit(0);
    });
    if (!store.ok()) ::_exit(2);
    Result<WriteResult> w = write(**store);
    ::_exit(w.ok() ? 3 : 4);  // the hook did not fire
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0) << "child did not crash at " << point;
}

TEST_F(TimeSeriesStoreTest, CrashAfterDataPlacedLeavesOldState) {
  Series old = Make(8, 1);
  auto first = Put("existing", old);
  ASSERT_TRUE(first.ok());
  store_.reset();

  Series fresh = Make(16, 9);
  // An overwrite of an existing series, then a new series.
  CrashChildAt(dir(), "data-placed",
               [&](TimeSeriesStore& s) { return s.Store("existing", fresh.times, fresh.values); });
  EXPECT_EQ(DirNames(data()).size(), 2u);  // the placed file is there until the repair
  CrashChildAt(dir(), "data-placed",
               [&](TimeSeriesStore& s) { return s.Store("new", fresh.times, fresh.values); });

  Reopen();
  EXPECT_EQ(store_->Count(), 1u);
  EXPECT_EQ(store_->Info("new").status().code(), StatusCode::kNotFound);
  auto info = store_->Info("existing");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->version, first->info.version);
  EXPECT_EQ(Read("existing"), FileBytes(old));
  EXPECT_EQ(DirNames(data()), IndexedFiles());  // no orphan left
  EXPECT_TRUE(DirNames(staging()).empty());
  // The numbers the crashed writers used are free again or skipped; either way writes work.
  auto w = Put("new", fresh);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(Read("new"), FileBytes(fresh));
}

TEST_F(TimeSeriesStoreTest, CrashAfterIndexCommittedKeepsNewStateAndCollectsOldFile) {
  Series old = Make(8, 1);
  auto first = Put("existing", old);
  ASSERT_TRUE(first.ok());
  store_.reset();

  Series fresh = Make(16, 9);
  CrashChildAt(dir(), "index-committed",
               [&](TimeSeriesStore& s) { return s.Store("existing", fresh.times, fresh.values); });
  // The replaced file outlived the crash...
  EXPECT_TRUE(Exists(data() + "/" + std::to_string(first->info.version)));
  EXPECT_EQ(DirNames(data()).size(), 2u);
  Reopen();  // ...and is collected by the next Open()
  EXPECT_FALSE(Exists(data() + "/" + std::to_string(first->info.version)));
  store_.reset();
  CrashChildAt(dir(), "index-committed",
               [&](TimeSeriesStore& s) { return s.Store("new", fresh.times, fresh.values); });

  Reopen();
  EXPECT_EQ(store_->Count(), 2u);
  auto info = store_->Info("existing");
  ASSERT_TRUE(info.ok());
  EXPECT_GT(info->version, first->info.version);
  EXPECT_EQ(Read("existing"), FileBytes(fresh));
  EXPECT_EQ(Read("new"), FileBytes(fresh));
  EXPECT_EQ(DirNames(data()), IndexedFiles());
  EXPECT_EQ(DirNames(data()).size(), 2u);
}

TEST_F(TimeSeriesStoreTest, OpenRemovesLeftoverStagingAndStrayDataFiles) {
  auto w = Put("s", Make(2, 2));
  ASSERT_TRUE(w.ok());
  store_.reset();
  ASSERT_OK(WriteStringToFile(staging() + "/stage.abcdef", "half written"));
  // Not canonical numbers, or numbers no row names: all garbage.
  std::string indexed = std::to_string(w->info.version);
  for (const std::string& name :
       std::vector<std::string>{"0" + indexed, "999", "junk", indexed + ".tmp", "-1"}) {
    ASSERT_OK(WriteStringToFile(data() + "/" + name, "x"));
  }
  Reopen();
  EXPECT_TRUE(DirNames(staging()).empty());
  EXPECT_EQ(DirNames(data()), std::set<std::string>{indexed});
  EXPECT_EQ(Read("s"), FileBytes(Make(2, 2)));
}

TEST_F(TimeSeriesStoreTest, SecondOpenerDoesNotRepair) {
  // A second opener (the CLI while the daemon runs) must not delete what may be another
  // process's commit in flight.
  ASSERT_OK(WriteStringToFile(staging() + "/stage.inflight", "x"));
  ASSERT_OK(WriteStringToFile(data() + "/12345", "x"));
  auto second = TimeSeriesStore::Open(dir());
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_TRUE(Exists(staging() + "/stage.inflight"));
  EXPECT_TRUE(Exists(data() + "/12345"));
  second->reset();
  Reopen();
  EXPECT_FALSE(Exists(staging() + "/stage.inflight"));
  EXPECT_FALSE(Exists(data() + "/12345"));
}

TEST_F(TimeSeriesStoreTest, OpenOnANonDatabaseIsCorruption) {
  TempDir other;
  ASSERT_TRUE(other.ok());
  ASSERT_OK(WriteStringToFile(other.path() + "/index.db", std::string(4096, 'z')));
  auto store = TimeSeriesStore::Open(other.path());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kCorruption) << store.status().ToString();
  EXPECT_NE(store.status().message().find("index.db"), std::string::npos)
      << store.status().ToString();
}

TEST_F(TimeSeriesStoreTest, DataFileOfWrongSizeIsCorruption) {
  auto w = Put("s", Make(4, 1));
  ASSERT_TRUE(w.ok());
  std::string file = data() + "/" + std::to_string(w->info.version);
  ASSERT_EQ(::chmod(file.c_str(), 0644), 0);
  ASSERT_EQ(::truncate(file.c_str(), 40), 0);
  auto view = store_->Get("s");
  ASSERT_FALSE(view.ok());
  EXPECT_EQ(view.status().code(), StatusCode::kCorruption);
  EXPECT_NE(view.status().message().find(file), std::string::npos) << view.status().ToString();
  EXPECT_EQ(store_->OpenData("s").status().code(), StatusCode::kCorruption);

  ASSERT_EQ(::unlink(file.c_str()), 0);
  auto missing = store_->OpenData("s");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kCorruption) << missing.status().ToString();
  // Writing the series again repairs it.
  auto repaired = Put("s", Make(4, 1));
  ASSERT_TRUE(repaired.ok()) << repaired.status().ToString();
  EXPECT_EQ(repaired->outcome, WriteOutcome::kStored);
  EXPECT_EQ(Read("s"), FileBytes(Make(4, 1)));
}

// ---- several connections and threads ----

TEST_F(TimeSeriesStoreTest, AnotherConnectionsWritesAreSeen) {
  auto other = TimeSeriesStore::Open(dir());  // gets the shared lock
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  TimeSeriesStore& cli = **other;
  EXPECT_EQ(store_->Count(), 0u);

  Series a = Make(3, 1);
  auto w = cli.Store("from-cli", a.times, a.values);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  auto info = store_->Info("from-cli");
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->version, w->info.version);
  EXPECT_EQ(store_->Count(), 1u);
  ASSERT_EQ(store_->List().size(), 1u);
  EXPECT_EQ(Bits(store_->Get("from-cli")->values()), Bits(a.values));

  // Writes from both sides get distinct versions, and each sees the other's overwrite.
  auto mine = Put("from-daemon", Make(2, 2));
  ASSERT_TRUE(mine.ok());
  EXPECT_NE(mine->info.version, w->info.version);
  EXPECT_TRUE(cli.Info("from-daemon").ok());
  Series b = Make(5, 5);
  auto over = cli.Store("from-daemon", b.times, b.values);
  ASSERT_TRUE(over.ok());
  EXPECT_GT(over->info.version, mine->info.version);
  EXPECT_EQ(store_->Size("from-daemon").value(), 5u);
  EXPECT_EQ(Read("from-daemon"), FileBytes(b));

  // An identical write through the daemon's store compares against the CLI's bytes.
  auto same = Put("from-daemon", b);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->outcome, WriteOutcome::kUnchanged);

  ASSERT_OK(cli.Remove("from-cli"));
  EXPECT_EQ(store_->Info("from-cli").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->Count(), 1u);

  other->reset();
  Reopen();
  EXPECT_EQ(DirNames(data()), IndexedFiles());
}

TEST_F(TimeSeriesStoreTest, ConcurrentWritersAndReadersSeeWholeSeries) {
  constexpr int kWriters = 4;
  constexpr int kReaders = 4;
  constexpr int kRounds = 30;
  // Pattern k: 100 + k pairs, every element k. A reader checks that the length and every element
  // agree, i.e. that it saw one whole write.
  auto pattern = [](int k) { return Uniform(100 + static_cast<size_t>(k), k); };
  auto check = [](const SeriesView& v) {
    if (v.size() < 100) return false;
    double k = v.size() - 100.0;
    for (double t : v.times()) {
      if (t != k) return false;
    }
    for (double x : v.values()) {
      if (x != k) return false;
    }
    return true;
  };
  ASSERT_TRUE(Put("shared", pattern(0)).ok());

  std::atomic<bool> failed{false};
  std::atomic<int> writers_done{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      std::string own = "own" + std::to_string(w);
      for (int r = 0; r < kRounds; ++r) {
        int k = w * kRounds + r;
        Series s = pattern(k);
        if (!store_->Store("shared", s.times, s.values).ok()) failed = true;
        if (!store_->Store(own, s.times, s.values).ok()) failed = true;
        auto v = store_->Get(own);  // only this thread writes it
        if (!v.ok() || !check(*v) || v->size() != s.times.size()) failed = true;
      }
      ++writers_done;
    });
  }
  for (int r = 0; r < kReaders; ++r) {
    threads.emplace_back([&] {
      while (writers_done < kWriters) {
        auto v = store_->Get("shared");
        if (!v.ok() || !check(*v)) failed = true;
        auto d = store_->OpenData("shared");
        if (!d.ok()) {
          failed = true;
          continue;
        }
        std::string bytes = ReadAll(d->fd.get());
        if (bytes.size() != 16 * d->info.length) failed = true;
        (void)store_->List();
        (void)store_->Count();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_FALSE(failed);
  EXPECT_EQ(store_->Count(), static_cast<size_t>(kWriters) + 1);
  auto last = store_->Get("shared");
  ASSERT_TRUE(last.ok());
  EXPECT_TRUE(check(*last));
  EXPECT_EQ(DirNames(data()), IndexedFiles());
  EXPECT_TRUE(DirNames(staging()).empty());
}

TEST_F(TimeSeriesStoreTest, ConcurrentGeneratedIdsAcrossTwoStores) {
  auto other = TimeSeriesStore::Open(dir());
  ASSERT_TRUE(other.ok());
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    TimeSeriesStore* s = t % 2 == 0 ? store_.get() : other->get();
    threads.emplace_back([&failed, s, t] {
      for (int i = 0; i < 20; ++i) {
        Series x = Make(2, t * 100 + i);
        if (!s->Store(std::nullopt, x.times, x.values).ok()) failed = true;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_FALSE(failed);
  EXPECT_EQ(store_->Count(), 80u);
  EXPECT_EQ((*other)->Count(), 80u);
  std::set<uint64_t> versions;
  for (const SeriesInfo& info : store_->List()) versions.insert(info.version);
  EXPECT_EQ(versions.size(), 80u);
}

// ---- durability ----

TEST_F(TimeSeriesStoreTest, DurableWritesAndSync) {
  WriteOptions durable;
  durable.durable = true;
  Series a = Make(64, 1);
  auto w = Put("durable", a, durable);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->outcome, WriteOutcome::kStored);
  auto staged = Stage(FileBytes(Make(64, 2)));
  auto c = store_->Commit("durable", *staged, durable);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->outcome, WriteOutcome::kStored);
  // Identical bytes, durable: nothing new, but the bytes are made durable (a Sync).
  auto same = Put("durable", Make(64, 2), durable);
  ASSERT_TRUE(same.ok()) << same.status().ToString();
  EXPECT_EQ(same->outcome, WriteOutcome::kUnchanged);
  WriteOptions durable_at = durable;
  durable_at.mtime_ns = 5;
  auto touched = Put("durable", Make(64, 2), durable_at);
  ASSERT_TRUE(touched.ok()) << touched.status().ToString();
  EXPECT_EQ(touched->outcome, WriteOutcome::kTimeChanged);

  // Non-durable writes, one removed and one replaced before the Sync.
  ASSERT_TRUE(Put("lazy1", Make(3, 3)).ok());
  ASSERT_TRUE(Put("lazy2", Make(3, 4)).ok());
  ASSERT_TRUE(Put("lazy2", Make(3, 5)).ok());
  ASSERT_TRUE(Put("lazy3", Make(3, 6)).ok());
  ASSERT_OK(store_->Remove("lazy3"));
  ASSERT_OK(store_->Sync());
  ASSERT_OK(store_->Sync());  // nothing pending: still fine

  Reopen();
  EXPECT_EQ(Read("durable"), FileBytes(Make(64, 2)));
  EXPECT_EQ(store_->Info("durable")->mtime_ns, 5);
  EXPECT_EQ(Read("lazy2"), FileBytes(Make(3, 5)));
  EXPECT_EQ(store_->Count(), 3u);
  EXPECT_EQ(DirNames(data()), IndexedFiles());
}

}  // namespace
}  // namespace modelfs::timeseries
