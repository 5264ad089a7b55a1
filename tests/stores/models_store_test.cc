#include "stores/models/models_store.h"

#include <sys/resource.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <latch>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "stores/common/file_util.h"
#include "tests/stores/temp_dir.h"

namespace modelfs::models {
namespace {

using ::modelfs::testing::Exists;
using ::modelfs::testing::Pattern;
using ::modelfs::testing::TempDir;


size_t CountEntries(const std::string& dir) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

std::string ReadAll(int fd) {
  uint64_t size = FileSize(fd).value();
  std::string s(size, '\0');
  EXPECT_EQ(PreadFull(fd, s.data(), s.size(), 0).value(), size);
  return s;
}

class ModelStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(tmp_.ok());
    Reopen();
  }

  void Reopen() {
    store_.reset();  // releases the lock first, so the new open does the crash repair
    auto store = ModelStore::Open(dir());
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }

  std::string dir() const { return tmp_.Sub("store"); }
  std::string blobs() const { return dir() + "/blobs"; }
  std::string staging() const { return dir() + "/staging"; }

  std::unique_ptr<StagedFile> Stage(std::string_view bytes) {
    auto staged = StagedFile::Create(store_->staging_dir());
    EXPECT_TRUE(staged.ok()) << staged.status().ToString();
    EXPECT_TRUE(PwriteFull((*staged)->fd(), bytes.data(), bytes.size(), 0).ok());
    return std::move(staged).value();
  }

  Result<CommitOutcome> Commit(int64_t model, int64_t layer, std::string_view bytes,
                               std::optional<int64_t> at = std::nullopt) {
    auto staged = Stage(bytes);
    CommitOptions options;
    options.create_time_us = at;
    return store_->CommitLayer(model, layer, *staged, options);
  }

  std::string ReadVersion(const VersionInfo& v) {
    auto fd = store_->OpenVersion(v);
    EXPECT_TRUE(fd.ok()) << fd.status().ToString();
    return fd.ok() ? ReadAll(fd->get()) : "";
  }

  std::vector<VersionInfo> Versions(int64_t model, int64_t layer) {
    auto v = store_->ListVersions(model, layer);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    return v.ok() ? *v : std::vector<VersionInfo>();
  }

  TempDir tmp_;
  std::unique_ptr<ModelStore> store_;
};

// ---- NeurDB API ----

TEST_F(ModelStoreTest, SaveThenLoadReturnsMetaAndLayersInOrder) {
  auto id = store_->SaveModel("meta", {"layer zero", "layer one", ""});
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_GT(*id, 0);
  auto loaded = store_->LoadModel(*id);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->meta, "meta");
  ASSERT_EQ(loaded->layers.size(), 3u);
  EXPECT_EQ(loaded->layers[0], std::make_pair(int64_t{0}, std::string("layer zero")));
  EXPECT_EQ(loaded->layers[1], std::make_pair(int64_t{1}, std::string("layer one")));
  EXPECT_EQ(loaded->layers[2], std::make_pair(int64_t{2}, std::string()));
  EXPECT_EQ(CountEntries(blobs()), 3u);
  EXPECT_EQ(CountEntries(staging()), 0u);

  Reopen();  // persisted
  EXPECT_EQ(store_->LoadModel(*id)->layers[1].second, "layer one");
}

TEST_F(ModelStoreTest, SaveModelWithBinaryMetaAndNoLayers) {
  std::string meta("\0\1\2", 3);
  auto id = store_->SaveModel(meta, {});
  ASSERT_TRUE(id.ok());
  auto loaded = store_->LoadModel(*id);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->meta, meta);
  EXPECT_TRUE(loaded->layers.empty());
  EXPECT_EQ(store_->GetModel(*id)->meta_size, 3u);
}

TEST_F(ModelStoreTest, LoadMissingModelIsNotFound) {
  auto loaded = store_->LoadModel(42);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(loaded.status().message(), "model 42: no such model");
}

TEST_F(ModelStoreTest, UpdateAddsVersionAndLoadSeesNewest) {
  int64_t id = store_->SaveModel("m", {"a0", "b0"}).value();
  ASSERT_OK(store_->UpdateModel(id, 1, "b1"));
  ASSERT_OK(store_->UpdateModel(id, 3, "d0"));  // a new layer id
  auto loaded = store_->LoadModel(id).value();
  ASSERT_EQ(loaded.layers.size(), 3u);
  EXPECT_EQ(loaded.layers[0].second, "a0");
  EXPECT_EQ(loaded.layers[1].second, "b1");
  EXPECT_EQ(loaded.layers[2], std::make_pair(int64_t{3}, std::string("d0")));
  EXPECT_EQ(Versions(id, 1).size(), 2u);
  EXPECT_EQ(store_->ListLayers(id).value(), (std::vector<int64_t>{0, 1, 3}));
}

TEST_F(ModelStoreTest, UpdateMissingModelIsNotFoundAndChangesNothing) {
  Status s = store_->UpdateModel(9, 0, "bytes");
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "model 9: no such model");
  EXPECT_TRUE(store_->ListModels()->empty());
  EXPECT_EQ(CountEntries(blobs()), 0u);
  EXPECT_EQ(CountEntries(staging()), 0u);
}

TEST_F(ModelStoreTest, DeleteModelRemovesEverythingAndMissingIsNoOp) {
  int64_t id = store_->SaveModel("m", {"a", "b"}).value();
  int64_t other = store_->SaveModel("o", {"x"}).value();
  ASSERT_OK(store_->UpdateModel(id, 0, "a2"));
  ASSERT_EQ(CountEntries(blobs()), 4u);
  ASSERT_OK(store_->DeleteModel(id));
  EXPECT_EQ(store_->LoadModel(id).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->ListVersions(id, 0).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(CountEntries(blobs()), 1u);  // only the other model's blob is left
  EXPECT_EQ(store_->LoadModel(other)->layers[0].second, "x");
  ASSERT_OK(store_->DeleteModel(id));      // again: no-op
  ASSERT_OK(store_->DeleteModel(123456));  // never existed: no-op
}

TEST_F(ModelStoreTest, IdsAreNeverReused) {
  int64_t first = store_->SaveModel("m", {}).value();
  ASSERT_OK(store_->DeleteModel(first));
  int64_t second = store_->SaveModel("m", {}).value();
  EXPECT_GT(second, first);
  ASSERT_OK(store_->DeleteModel(second));
  Reopen();
  int64_t third = store_->CreateModel().value();
  EXPECT_GT(third, second);

  Status s = store_->CreateModelWithId(first);
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied) << s.ToString();
  EXPECT_NE(s.message().find("model " + std::to_string(first)), std::string::npos);
  EXPECT_EQ(store_->CreateModelWithId(second).code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(store_->CreateModelWithId(third).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->CreateModelWithId(0).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->CreateModelWithId(-3).code(), StatusCode::kInvalidArgument);
}

TEST_F(ModelStoreTest, CreateModelWithIdAboveSequenceMovesSequence) {
  int64_t a = store_->CreateModel().value();
  ASSERT_OK(store_->CreateModelWithId(a + 100));
  EXPECT_EQ(store_->CreateModel().value(), a + 101);
  ASSERT_OK(store_->CreateModelWithId(a + 50));  // never used and not retired: allowed
  EXPECT_EQ(store_->GetModel(a + 50)->meta_size, 0u);
  auto models = store_->ListModels().value();
  ASSERT_EQ(models.size(), 4u);
  EXPECT_EQ(models[1].model_id, a + 50);  // ascending ids
}

TEST_F(ModelStoreTest, MetaReadWriteAndChangeTime) {
  int64_t id = store_->CreateModel().value();
  ModelInfo before = store_->GetModel(id).value();
  EXPECT_EQ(store_->ReadMeta(id).value(), "");
  ASSERT_OK(store_->SetMeta(id, "new meta"));
  EXPECT_EQ(store_->ReadMeta(id).value(), "new meta");
  ModelInfo after = store_->GetModel(id).value();
  EXPECT_EQ(after.meta_size, 8u);
  EXPECT_GT(after.change_time_us, before.change_time_us);
  EXPECT_EQ(after.create_time_us, before.create_time_us);
  ASSERT_OK(store_->UpdateModel(id, 0, "x"));
  EXPECT_GT(store_->GetModel(id)->change_time_us, after.change_time_us);
  EXPECT_EQ(store_->SetMeta(77, "x").code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->ReadMeta(77).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->GetModel(77).status().code(), StatusCode::kNotFound);
}

TEST_F(ModelStoreTest, SetMetaEqualBytesChangeNothingAndTimeCanBeGiven) {
  int64_t id = store_->CreateModel().value();
  ModelInfo created = store_->GetModel(id).value();
  EXPECT_EQ(created.meta_time_us, created.create_time_us);
  ASSERT_OK(store_->SetMeta(id, "m1"));
  ModelInfo first = store_->GetModel(id).value();
  EXPECT_GT(first.meta_time_us, created.meta_time_us);

  ASSERT_OK(store_->SetMeta(id, "m1"));  // equal bytes: no change at all
  ModelInfo same = store_->GetModel(id).value();
  EXPECT_EQ(same.meta_time_us, first.meta_time_us);
  EXPECT_EQ(same.change_time_us, first.change_time_us);

  for (int i = 0; i < 20; ++i) {  // faster than the clock: still a new meta_time each time
    ASSERT_OK(store_->SetMeta(id, "m" + std::to_string(i + 2)));
    ModelInfo now = store_->GetModel(id).value();
    ASSERT_GT(now.meta_time_us, first.meta_time_us);
    first = now;
  }

  int64_t restored = ParseHistoryTime("2020-05-06T07:08:09.000010Z").value();
  ASSERT_OK(store_->SetMeta(id, "restored", restored));
  ModelInfo after = store_->GetModel(id).value();
  EXPECT_EQ(after.meta_time_us, restored);
  EXPECT_GT(after.change_time_us, first.change_time_us);
  EXPECT_EQ(store_->ReadMeta(id).value(), "restored");
  ASSERT_OK(store_->UpdateModel(id, 0, "layer"));  // layers do not move meta_time
  EXPECT_EQ(store_->GetModel(id)->meta_time_us, restored);
  EXPECT_EQ(store_->SetMeta(id, std::string(ModelStore::kMaxMetaBytes + 1, 'x')).code(),
            StatusCode::kTooLarge);
}

// ---- versions ----

TEST_F(ModelStoreTest, VersionsAccumulateAndNewestWins) {
  int64_t id = store_->CreateModel().value();
  for (int i = 0; i < 5; ++i) {
    auto out = Commit(id, 2, "v" + std::to_string(i));
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    EXPECT_TRUE(out->added);
  }
  auto versions = Versions(id, 2);
  ASSERT_EQ(versions.size(), 5u);
  for (size_t i = 0; i < versions.size(); ++i) {
    EXPECT_EQ(ReadVersion(versions[i]), "v" + std::to_string(i));  // oldest first
    if (i > 0) {
      EXPECT_GT(versions[i].create_time_us, versions[i - 1].create_time_us);
    }
  }
  VersionInfo newest = store_->NewestVersion(id, 2).value();
  EXPECT_EQ(newest.version_id, versions.back().version_id);
  EXPECT_EQ(ReadVersion(newest), "v4");
  EXPECT_EQ(newest.size, 2u);
}

TEST_F(ModelStoreTest, BackToBackCommitsNeverShareACreateTime) {
  // Within one layer create_time is unique (it names the history file); commits faster than the
  // clock get newest+1, so the order is (create_time, version_id) and both agree.
  int64_t id = store_->CreateModel().value();
  for (int i = 0; i < 200; ++i) ASSERT_OK(store_->UpdateModel(id, 0, std::to_string(i)));
  auto versions = Versions(id, 0);
  ASSERT_EQ(versions.size(), 200u);
  for (size_t i = 1; i < versions.size(); ++i) {
    EXPECT_GT(versions[i].create_time_us, versions[i - 1].create_time_us);
    EXPECT_GT(versions[i].version_id, versions[i - 1].version_id);
  }
  EXPECT_EQ(ReadVersion(store_->NewestVersion(id, 0).value()), "199");
}

TEST_F(ModelStoreTest, IdenticalRewriteAddsNothing) {
  int64_t id = store_->SaveModel("m", {"same bytes"}).value();
  VersionInfo v0 = store_->NewestVersion(id, 0).value();
  int64_t change_time = store_->GetModel(id)->change_time_us;

  auto staged = Stage("same bytes");
  auto out = store_->CommitLayer(id, 0, *staged, {});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_FALSE(out->added);
  EXPECT_EQ(out->version.version_id, v0.version_id);
  EXPECT_FALSE(staged->consumed());
  EXPECT_TRUE(Exists(staged->path()));
  EXPECT_EQ(Versions(id, 0).size(), 1u);
  EXPECT_EQ(store_->GetModel(id)->change_time_us, change_time);

  ASSERT_OK(store_->UpdateModel(id, 0, "same bytes"));
  EXPECT_EQ(Versions(id, 0).size(), 1u);
  // Same size, other bytes: a new version.
  ASSERT_OK(store_->UpdateModel(id, 0, "same byteZ"));
  EXPECT_EQ(Versions(id, 0).size(), 2u);
  // Equal to an older version but not the newest: a new version too.
  ASSERT_OK(store_->UpdateModel(id, 0, "same bytes"));
  EXPECT_EQ(Versions(id, 0).size(), 3u);
}

TEST_F(ModelStoreTest, ExplicitCreateTimeRestoresHistory) {
  int64_t id = store_->CreateModel().value();
  ASSERT_OK(store_->UpdateModel(id, 0, "current"));
  VersionInfo current = store_->NewestVersion(id, 0).value();
  int64_t old_time = ParseHistoryTime("2024-01-02T03:04:05.678901Z").value();

  auto restored = Commit(id, 0, "old bytes", old_time);
  ASSERT_TRUE(restored.ok()) << restored.status().ToString();
  EXPECT_TRUE(restored->added);
  EXPECT_EQ(restored->version.create_time_us, old_time);
  EXPECT_GT(restored->version.version_id, current.version_id);
  // An older create_time does not become the newest, though its version_id is larger.
  EXPECT_EQ(store_->NewestVersion(id, 0)->version_id, current.version_id);
  EXPECT_EQ(store_->LoadModel(id)->layers[0].second, "current");
  auto versions = Versions(id, 0);
  ASSERT_EQ(versions.size(), 2u);
  EXPECT_EQ(versions[0].create_time_us, old_time);
  EXPECT_EQ(ReadVersion(store_->VersionAt(id, 0, old_time).value()), "old bytes");

  // The same bytes again at that time (a second restore): nothing added.
  auto again = Commit(id, 0, "old bytes", old_time);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->added);
  EXPECT_EQ(again->version.version_id, restored->version.version_id);
  // Other bytes at that time: history is immutable; the staged file is left alone.
  auto staged = Stage("tampered");
  CommitOptions options;
  options.create_time_us = old_time;
  auto clash = store_->CommitLayer(id, 0, *staged, options);
  ASSERT_FALSE(clash.ok());
  EXPECT_EQ(clash.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(clash.status().message().find("2024-01-02T03:04:05.678901Z"), std::string::npos);
  EXPECT_FALSE(staged->consumed());
  EXPECT_TRUE(Exists(staged->path()));
  EXPECT_EQ(Versions(id, 0).size(), 2u);

  // Explicit times are checked against the version at that time, not the newest: bytes equal to the
  // newest at a new time are a new version.
  auto copy = Commit(id, 0, "current", old_time + 1);
  ASSERT_TRUE(copy.ok());
  EXPECT_TRUE(copy->added);
}

TEST_F(ModelStoreTest, FutureCreateTimeBecomesNewestAndLaterCommitsFollowIt) {
  int64_t id = store_->CreateModel().value();
  int64_t future = NowMicros() + 3600LL * 1000000;  // an hour ahead
  ASSERT_TRUE(Commit(id, 0, "future", future)->added);
  EXPECT_EQ(store_->NewestVersion(id, 0)->create_time_us, future);
  ASSERT_OK(store_->UpdateModel(id, 0, "after"));
  VersionInfo newest = store_->NewestVersion(id, 0).value();
  EXPECT_EQ(newest.create_time_us, future + 1);
  EXPECT_EQ(ReadVersion(newest), "after");
}

TEST_F(ModelStoreTest, CommitValidatesArguments) {
  int64_t id = store_->CreateModel().value();
  EXPECT_EQ(Commit(id, -1, "x").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Commit(id, 0, "x", -1).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Commit(id + 1, 0, "x").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(Commit(id, 0, "x", 1)->added, true);  // 1970-01-01T00:00:00.000001Z is fine

  auto staged = Stage("y");
  ASSERT_TRUE(store_->CommitLayer(id, 1, *staged, {})->added);
  EXPECT_TRUE(staged->consumed());
  EXPECT_EQ(store_->CommitLayer(id, 1, *staged, {}).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(ModelStoreTest, CommittedBlobIsTheStagedFileAndStaysReadable) {
  int64_t id = store_->CreateModel().value();
  auto staged = Stage("bytes");
  std::string staged_path = staged->path();
  auto out = store_->CommitLayer(id, 0, *staged, {});
  ASSERT_TRUE(out.ok());
  EXPECT_TRUE(staged->consumed());
  EXPECT_FALSE(Exists(staged_path));
  std::string blob = blobs() + "/" + std::to_string(out->version.version_id);
  struct stat st;
  ASSERT_EQ(::stat(blob.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u);
  EXPECT_EQ(ReadAll(staged->fd()), "bytes");  // the fd now reads the committed version
  staged.reset();
  EXPECT_TRUE(Exists(blob));  // destroying a consumed StagedFile leaves the blob
}

TEST_F(ModelStoreTest, DeleteLayerAndVersion) {
  int64_t id = store_->SaveModel("m", {"a0", "b0"}).value();
  ASSERT_OK(store_->UpdateModel(id, 0, "a1"));
  ASSERT_OK(store_->UpdateModel(id, 0, "a2"));
  auto versions = Versions(id, 0);
  ASSERT_EQ(versions.size(), 3u);

  // Deleting the newest makes the previous one newest.
  ASSERT_OK(store_->DeleteVersion(id, 0, versions[2].create_time_us));
  EXPECT_EQ(ReadVersion(store_->NewestVersion(id, 0).value()), "a1");
  EXPECT_FALSE(Exists(blobs() + "/" + std::to_string(versions[2].version_id)));
  Status again = store_->DeleteVersion(id, 0, versions[2].create_time_us);
  EXPECT_EQ(again.code(), StatusCode::kNotFound);
  EXPECT_EQ(again.message(), "model " + std::to_string(id) + " layer 0: no version at " +
                                 FormatHistoryTime(versions[2].create_time_us));
  EXPECT_EQ(store_->VersionAt(id, 0, versions[2].create_time_us).status().code(),
            StatusCode::kNotFound);

  ASSERT_OK(store_->DeleteLayer(id, 0));
  EXPECT_EQ(store_->ListLayers(id).value(), std::vector<int64_t>{1});
  EXPECT_EQ(store_->NewestVersion(id, 0).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(Versions(id, 0).empty());
  EXPECT_EQ(CountEntries(blobs()), 1u);
  EXPECT_EQ(store_->DeleteLayer(id, 0).code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->DeleteLayer(id + 1, 0).code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->DeleteVersion(id + 1, 0, 0).code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->NewestVersion(id + 1, 0).status().message(),
            "model " + std::to_string(id + 1) + ": no such model");
}

TEST_F(ModelStoreTest, OpenVersionSurvivesDelete) {
  int64_t id = store_->SaveModel("m", {"keep reading"}).value();
  VersionInfo v = store_->NewestVersion(id, 0).value();
  auto fd = store_->OpenVersion(v);
  ASSERT_TRUE(fd.ok());
  ASSERT_OK(store_->DeleteModel(id));
  EXPECT_EQ(ReadAll(fd->get()), "keep reading");
  EXPECT_EQ(store_->OpenVersion(v).status().code(), StatusCode::kNotFound);
}

// ---- crash repair and failure atomicity ----

TEST_F(ModelStoreTest, ReopenRemovesOrphanBlobsAndStagingGarbage) {
  int64_t id = store_->SaveModel("m", {"a", "b"}).value();
  ASSERT_OK(
      WriteStringToFile(blobs() + "/999999", "orphan from a crash between rename and commit"));
  ASSERT_OK(WriteStringToFile(blobs() + "/01", "not a canonical id"));
  ASSERT_OK(WriteStringToFile(blobs() + "/junk", "x"));
  ASSERT_OK(WriteStringToFile(staging() + "/x", "half-written"));
  Reopen();
  EXPECT_FALSE(Exists(blobs() + "/999999"));
  EXPECT_FALSE(Exists(blobs() + "/01"));
  EXPECT_FALSE(Exists(blobs() + "/junk"));
  EXPECT_FALSE(Exists(staging() + "/x"));
  EXPECT_EQ(CountEntries(blobs()), 2u);
  auto loaded = store_->LoadModel(id).value();
  EXPECT_EQ(loaded.layers[1].second, "b");
}

TEST_F(ModelStoreTest, SecondOpenerDoesNotRepairUnderAnotherOpener) {
  // The staging file may be a commit in flight in the first opener.
  ASSERT_OK(WriteStringToFile(staging() + "/in-flight", "x"));
  auto second = ModelStore::Open(dir());
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_TRUE(Exists(staging() + "/in-flight"));
  // Both see each other's commits.
  int64_t id = (*second)->SaveModel("m", {"from second"}).value();
  EXPECT_EQ(store_->LoadModel(id)->layers[0].second, "from second");
  second->reset();
  Reopen();  // alone now: repairs
  EXPECT_FALSE(Exists(staging() + "/in-flight"));
}

TEST_F(ModelStoreTest, FailedRenameLeavesStoreAndStagedFileUnchanged) {
  int64_t id = store_->SaveModel("m", {"v0"}).value();
  VersionInfo v0 = store_->NewestVersion(id, 0).value();
  // The next version's blob name is taken by a non-empty directory, so the rename in step 4 fails.
  std::string blocker = blobs() + "/" + std::to_string(v0.version_id + 1);
  ASSERT_OK(MakeDirs(blocker));
  ASSERT_OK(WriteStringToFile(blocker + "/f", "x"));
  int64_t change_time = store_->GetModel(id)->change_time_us;

  auto staged = Stage("v1");
  struct stat before;
  ASSERT_EQ(::fstat(staged->fd(), &before), 0);
  auto out = store_->CommitLayer(id, 0, *staged, {});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kIOError) << out.status().ToString();
  EXPECT_FALSE(staged->consumed());
  EXPECT_TRUE(Exists(staged->path()));
  struct stat after;
  ASSERT_EQ(::fstat(staged->fd(), &after), 0);
  EXPECT_EQ(after.st_mode, before.st_mode);
  EXPECT_EQ(Versions(id, 0).size(), 1u);
  EXPECT_EQ(store_->GetModel(id)->change_time_us, change_time);

  // The rolled-back id is handed out again: the same blocker also stops SaveModel, atomically,
  // after its first layer was already moved into blobs/.
  std::filesystem::remove_all(blocker);
  std::string blocker2 = blobs() + "/" + std::to_string(v0.version_id + 2);
  ASSERT_OK(MakeDirs(blocker2));
  ASSERT_OK(WriteStringToFile(blocker2 + "/f", "x"));
  auto saved = store_->SaveModel("m2", {"l0", "l1", "l2"});
  ASSERT_FALSE(saved.ok());
  EXPECT_EQ(store_->ListModels()->size(), 1u);
  EXPECT_FALSE(Exists(blobs() + "/" + std::to_string(v0.version_id + 1)));  // layer 0 moved back
  EXPECT_EQ(CountEntries(staging()), 1u);  // only our own staged file
  std::filesystem::remove_all(blocker2);

  // And the store works normally afterwards.
  ASSERT_TRUE(store_->CommitLayer(id, 0, *staged, {})->added);
  EXPECT_EQ(store_->LoadModel(id)->layers[0].second, "v1");
}

TEST_F(ModelStoreTest, DurableCommitAndSync) {
  int64_t id = store_->CreateModel().value();
  auto staged = Stage("durable");
  CommitOptions options;
  options.durable = true;
  auto out = store_->CommitLayer(id, 0, *staged, options);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_TRUE(out->added);
  auto same = Stage("durable");
  auto again = store_->CommitLayer(id, 0, *same, options);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->added);
  ASSERT_OK(store_->UpdateModel(id, 1, "not durable yet"));
  ASSERT_OK(store_->DeleteLayer(id, 1));  // Sync must tolerate blobs deleted since
  ASSERT_OK(store_->UpdateModel(id, 2, "x"));
  ASSERT_OK(store_->Sync());
  Reopen();
  EXPECT_EQ(store_->ListLayers(id).value(), (std::vector<int64_t>{0, 2}));
}

// ---- large layers and concurrency ----

TEST_F(ModelStoreTest, LargeLayerRoundTrip) {
  int64_t id = store_->CreateModel().value();
  constexpr size_t kSize = 64u << 20;
  constexpr size_t kChunk = 1u << 20;
  auto staged = std::move(StagedFile::Create(store_->staging_dir())).value();
  for (size_t off = 0; off < kSize; off += kChunk) {
    std::string chunk = Pattern(kChunk, static_cast<unsigned>(off / kChunk));
    ASSERT_OK(PwriteFull(staged->fd(), chunk.data(), chunk.size(), static_cast<off_t>(off)));
  }
  auto out = store_->CommitLayer(id, 0, *staged, {});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->version.size, kSize);

  auto fd = store_->OpenVersion(store_->NewestVersion(id, 0).value());
  ASSERT_TRUE(fd.ok());
  EXPECT_EQ(FileSize(fd->get()).value(), kSize);
  std::string buf(kChunk, '\0');
  for (size_t off = 0; off < kSize; off += kChunk) {
    ASSERT_EQ(PreadFull(fd->get(), buf.data(), kChunk, static_cast<off_t>(off)).value(), kChunk);
    ASSERT_EQ(buf, Pattern(kChunk, static_cast<unsigned>(off / kChunk))) << "at " << off;
  }

  // A copy with one byte changed at the very end is a new version; an exact copy is not.
  auto copy = std::move(StagedFile::Create(store_->staging_dir())).value();
  ASSERT_OK(CopyRange(fd->get(), 0, copy->fd(), 0, kSize));
  EXPECT_FALSE(store_->CommitLayer(id, 0, *copy, {})->added);
  char last;
  ASSERT_EQ(PreadFull(copy->fd(), &last, 1, kSize - 1).value(), 1u);
  last ^= 1;
  ASSERT_OK(PwriteFull(copy->fd(), &last, 1, kSize - 1));
  EXPECT_TRUE(store_->CommitLayer(id, 0, *copy, {})->added);
}

TEST_F(ModelStoreTest, ConcurrentCommitsToDifferentLayers) {
  int64_t id = store_->CreateModel().value();
  constexpr int kThreads = 4;
  constexpr int kCommits = 40;
  std::vector<std::thread> threads;
  std::vector<std::string> errors(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCommits; ++i) {
        Status s = store_->UpdateModel(id, t, Pattern(1000 + i, t * 1000 + i));
        if (!s.ok() && errors[t].empty()) errors[t] = s.ToString();
        // Readers interleave with writers.
        if (!store_->ListLayers(id).ok() && errors[t].empty()) errors[t] = "ListLayers failed";
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(errors[t], "") << "thread " << t;
  std::set<int64_t> version_ids;
  for (int t = 0; t < kThreads; ++t) {
    auto versions = Versions(id, t);
    ASSERT_EQ(versions.size(), static_cast<size_t>(kCommits));
    for (const auto& v : versions) version_ids.insert(v.version_id);
    EXPECT_EQ(ReadVersion(versions.back()), Pattern(1000 + kCommits - 1, t * 1000 + kCommits - 1));
  }
  EXPECT_EQ(version_ids.size(), static_cast<size_t>(kThreads * kCommits));
  EXPECT_EQ(CountEntries(blobs()), static_cast<size_t>(kThreads * kCommits));
}

TEST_F(ModelStoreTest, ConcurrentIdenticalCommitsToOneLayerAddOneVersion) {
  // Writers released together race between their unlocked comparison and the insert; the re-check
  // under the write lock must turn all but one into "identical, nothing added".
  int64_t id = store_->CreateModel().value();
  constexpr int kRounds = 30;
  constexpr int kThreads = 4;
  std::string bytes = Pattern(1 << 20, 9);
  std::string base = bytes;
  base.back() ^= 1;  // same size, so every writer compares all of it outside the lock
  for (int round = 0; round < kRounds; ++round) {
    ASSERT_OK(store_->UpdateModel(id, round, base));
    std::latch start(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&] {
        start.arrive_and_wait();
        EXPECT_TRUE(store_->UpdateModel(id, round, bytes).ok());
      });
    }
    for (auto& th : threads) th.join();
    ASSERT_EQ(Versions(id, round).size(), 2u) << "round " << round;
  }
}

// ---- history names ----

TEST(HistoryTimeTest, FormatsUtcWithSixDigits) {
  EXPECT_EQ(FormatHistoryTime(0), "1970-01-01T00:00:00.000000Z");
  EXPECT_EQ(FormatHistoryTime(1), "1970-01-01T00:00:00.000001Z");
  EXPECT_EQ(FormatHistoryTime(1704164645678901), "2024-01-02T03:04:05.678901Z");
  EXPECT_EQ(FormatHistoryTime(951782400000000), "2000-02-29T00:00:00.000000Z");
  EXPECT_EQ(FormatHistoryTime(253402300799999999), "9999-12-31T23:59:59.999999Z");
  // Before 1970: floor division, so the fraction counts forward from the second.
  EXPECT_EQ(FormatHistoryTime(-1), "1969-12-31T23:59:59.999999Z");
  EXPECT_EQ(FormatHistoryTime(-1000000), "1969-12-31T23:59:59.000000Z");
}

TEST(HistoryTimeTest, RoundTrips) {
  for (int64_t t :
       {int64_t{0}, int64_t{1}, int64_t{999999}, int64_t{1000000}, int64_t{1704164645678901},
        int64_t{951782400000000}, int64_t{253402300799999999}, NowMicros()}) {
    std::string name = FormatHistoryTime(t);
    auto back = ParseHistoryTime(name);
    ASSERT_TRUE(back.ok()) << name << ": " << back.status().ToString();
    EXPECT_EQ(*back, t) << name;
  }
  for (int64_t t = 0; t < 4102444800000000; t += 86399999937) {  // every day or so to 2100
    ASSERT_EQ(ParseHistoryTime(FormatHistoryTime(t)).value(), t);
  }
}

TEST(HistoryTimeTest, RejectsEverythingElse) {
  for (const char* bad : {
           "",
           "..",
           "2024-13-01T00:00:00.000000Z",   // month
           "2024-00-01T00:00:00.000000Z",   // month
           "2024-02-30T00:00:00.000000Z",   // day
           "2023-02-29T00:00:00.000000Z",   // not a leap year
           "2100-02-29T00:00:00.000000Z",   // not a leap year either
           "2024-01-00T00:00:00.000000Z",   // day
           "2024-01-01T24:00:00.000000Z",   // hour
           "2024-01-01T00:60:00.000000Z",   // minute
           "2024-01-01T00:00:60.000000Z",   // no leap seconds
           "2024-01-01T00:00:00.000000",    // missing Z
           "2024-01-01T00:00:00.000000z",   // lower-case z
           "2024-01-01T00:00:00.00000Z",    // short fraction
           "2024-01-01T00:00:00.0000000Z",  // long fraction
           "2024-01-01T00:00:00Z",          // no fraction
           "2024-01-01 00:00:00.000000Z",   // space for T
           "2024-01-01T00:00:00.000000Z ",  // trailing
           "2024-01-01T00:00:00.000000Zx",  // trailing
           " 2024-01-01T00:00:00.000000Z",  // leading
           "+024-01-01T00:00:00.000000Z",   // sign
           "2024-01-01T00:00:00.-00000Z",   // sign
           "1969-12-31T23:59:59.999999Z",   // before 1970
           "0000-01-01T00:00:00.000000Z",
       }) {
    auto r = ParseHistoryTime(bad);
    EXPECT_FALSE(r.ok()) << "accepted \"" << bad << "\"";
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    }
  }
  std::string with_nul("2024-01-01T00:00:00.000000Z");
  with_nul[5] = '\0';
  EXPECT_FALSE(ParseHistoryTime(with_nul).ok());
}

}  // namespace
}  // namespace modelfs::models

namespace modelfs::models {
namespace {

class ModelStoreListingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(tmp_.ok());
    auto store = ModelStore::Open(tmp_.Sub("store"));
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }
  modelfs::testing::TempDir tmp_;
  std::unique_ptr<ModelStore> store_;
};

TEST_F(ModelStoreListingTest, ListNewestVersionsGivesTheNewestOfEachLayerInOneCall) {
  auto id = store_->SaveModel("m", {"a0", "b0", "c0"});
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(store_->UpdateModel(*id, 1, "b1").ok());
  ASSERT_TRUE(store_->UpdateModel(*id, 1, "b22").ok());
  ASSERT_TRUE(store_->UpdateModel(*id, 7, "h").ok());
  auto newest = store_->ListNewestVersions(*id);
  ASSERT_TRUE(newest.ok());
  std::vector<std::pair<int64_t, uint64_t>> got;
  for (auto& v : *newest) got.emplace_back(v.layer_id, v.size);
  EXPECT_EQ(got, (std::vector<std::pair<int64_t, uint64_t>>{{0, 2}, {1, 3}, {2, 2}, {7, 1}}));
  for (auto& v : *newest) {
    auto n = store_->NewestVersion(*id, v.layer_id);
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(n->version_id, v.version_id);
  }
  EXPECT_EQ(store_->ListNewestVersions(*id + 100).status().code(), StatusCode::kNotFound);
}

TEST_F(ModelStoreListingTest, SaveModelWithMoreLayersThanOpenFilesAllowed) {
  rlimit old;
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
  rlimit low = old;
  low.rlim_cur = 64;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  std::vector<std::string> layers;
  for (int i = 0; i < 500; ++i) layers.push_back("layer " + std::to_string(i));
  auto id = store_->SaveModel("many", layers);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto loaded = store_->LoadModel(*id);
  ASSERT_TRUE(loaded.ok());
  ASSERT_EQ(loaded->layers.size(), 500u);
  EXPECT_EQ(loaded->layers[499].second, "layer 499");
}

}  // namespace
}  // namespace modelfs::models
