// The fs core without a kernel: the same calls the FUSE layer makes, on a real models store.
#include "fs/core.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <cerrno>

#include "fs/errno_map.h"
#include "fs/models_folder.h"
#include "tests/stores/temp_dir.h"

namespace modelfs::fs {
namespace {

class RecordingInvalidator : public KernelCache {
 public:
  void ForgetEntry(Ino parent, const std::string& name) override {
    (void)parent;
    names.push_back(name);
  }
  void ForgetAttributes(Ino ino, bool listing) override {
    (void)listing;
    inodes.push_back(ino);
  }
  std::vector<std::string> names;
  std::vector<Ino> inodes;
};

constexpr Caller kMe{};  // a caller whose process is unknown: its closes commit

class CoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(tmp_.ok());
    auto store = models::ModelStore::Open(tmp_.Sub("models"));
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = store->get();
    ASSERT_TRUE(store_->CreateModelWithId(1).ok());
    std::vector<std::unique_ptr<Folder>> folders;
    folders.push_back(std::make_unique<ModelsFolder>(std::move(*store)));
    core_ = std::make_unique<Core>(std::move(folders), CoreOptions{});
    core_->SetKernelCache(&inv_);
  }
  // Walks a path with Lookup, like the kernel does.
  Ino Walk(const std::vector<std::string>& path) {
    Ino ino = kRootIno;
    for (const auto& c : path) {
      auto e = core_->Lookup(kMe, ino, c);
      if (!e.ok()) return 0;
      ino = e->attr.st_ino;
    }
    return ino;
  }
  // create + write + flush + release under dir/name; returns the flush status.
  Status WriteNew(Ino dir, const std::string& name, const std::string& bytes) {
    auto c = core_->Create(kMe, dir, name, 0644, O_WRONLY | O_CREAT);
    if (!c.ok()) return c.status();
    uint64_t fh = c->second.fh;
    auto w = core_->Write(fh, 0, bytes.data(), bytes.size());
    if (!w.ok()) return w.status();
    Status st = core_->Flush(kMe, fh);
    core_->Release(fh);
    return st;
  }
  std::string ReadWhole(Ino ino) {
    auto o = core_->Open(kMe, ino, O_RDONLY);
    if (!o.ok()) return "<open: " + o.status().message() + ">";
    std::string out;
    while (true) {
      auto r = core_->Read(o->fh, static_cast<off_t>(out.size()), 1 << 16);
      if (!r.ok() || r->length == 0) break;
      std::string chunk(r->length, '\0');
      if (r->data) {
        chunk = r->data->substr(0, r->length);
      } else {
        EXPECT_EQ(pread(r->fd, chunk.data(), r->length, r->offset), static_cast<ssize_t>(r->length));
      }
      out += chunk;
    }
    core_->Release(o->fh);
    return out;
  }
  size_t Versions(int64_t layer) { return store_->ListVersions(1, layer)->size(); }

  testing::TempDir tmp_;
  models::ModelStore* store_ = nullptr;
  std::unique_ptr<Core> core_;
  RecordingInvalidator inv_;
};

TEST_F(CoreTest, RootListsTheStoreFolders) {
  auto dh = core_->OpenDir(kRootIno);
  ASSERT_TRUE(dh.ok());
  auto entries = core_->ReadDir(*dh, 0, false);
  ASSERT_TRUE(entries.ok());
  ASSERT_EQ(entries->size(), 1u);
  EXPECT_EQ((*entries)[0].first, "models");
  EXPECT_TRUE(S_ISDIR((*entries)[0].second.attr.st_mode));
  core_->ReleaseDir(*dh);
}

TEST_F(CoreTest, WriteCommitsAtFlushAndANewVersionGetsANewInode) {
  Ino layers = Walk({"models", "1", "layers"});
  ASSERT_NE(layers, 0u);
  ASSERT_TRUE(WriteNew(layers, "0", "first").ok());
  EXPECT_EQ(Versions(0), 1u);
  Ino v1 = Walk({"models", "1", "layers", "0"});
  EXPECT_EQ(ReadWhole(v1), "first");
  // Overwrite through an open of the existing file: refused on the readers' inode, served on a
  // private one after the kernel's retry looks the name up again.
  EXPECT_EQ(core_->Open(kMe, v1, O_WRONLY).status().code(), StatusCode::kStale);
  Ino w = Walk({"models", "1", "layers", "0"});
  EXPECT_NE(w, v1);
  auto o = core_->Open(kMe, w, O_WRONLY | O_TRUNC);
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  ASSERT_TRUE(core_->Write(o->fh, 0, "second!", 7).ok());
  EXPECT_EQ(Versions(0), 1u) << "nothing reaches the store before close";
  ASSERT_TRUE(core_->Flush(kMe, o->fh).ok());
  core_->Release(o->fh);
  EXPECT_EQ(Versions(0), 2u);
  core_->DrainInvalidations();
  EXPECT_NE(std::find(inv_.names.begin(), inv_.names.end(), "0"), inv_.names.end());
  Ino v2 = Walk({"models", "1", "layers", "0"});
  EXPECT_NE(v1, v2);
  EXPECT_EQ(ReadWhole(v2), "second!");
  // A new open of the superseded inode says ESTALE (the kernel looks the name up again); a second
  // attempt without a lookup between is served the newest bytes without the page cache.
  EXPECT_EQ(core_->Open(kMe, v1, O_RDONLY).status().code(), StatusCode::kStale);
  auto again = core_->Open(kMe, v1, O_RDONLY);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->direct_io);
  EXPECT_FALSE(again->keep_cache);
  core_->Release(again->fh);
  auto fresh = core_->Open(kMe, v2, O_RDONLY);
  ASSERT_TRUE(fresh.ok());
  EXPECT_TRUE(fresh->keep_cache) << "an inode's bytes never change, so its cache is kept";
  core_->Release(fresh->fh);
}

TEST_F(CoreTest, ACommitDropsCachedListingsOfTheModelsFolders) {
  Ino layers = Walk({"models", "1", "layers"});
  ASSERT_TRUE(WriteNew(layers, "0", "v1").ok());
  Ino history0 = Walk({"models", "1", "history", "0"});
  ASSERT_NE(history0, 0u);
  core_->DrainInvalidations();
  inv_.inodes.clear();
  ASSERT_TRUE(WriteNew(layers, "0", "v2").ok());
  core_->DrainInvalidations();
  // history/0 gained an entry although the write went to layers/0: the kernel must list it afresh.
  EXPECT_NE(std::find(inv_.inodes.begin(), inv_.inodes.end(), history0), inv_.inodes.end());
  EXPECT_NE(std::find(inv_.inodes.begin(), inv_.inodes.end(), layers), inv_.inodes.end());
}

TEST_F(CoreTest, ReaderKeepsItsSnapshotAcrossACommit) {
  Ino layers = Walk({"models", "1", "layers"});
  ASSERT_TRUE(WriteNew(layers, "3", "old bytes").ok());
  Ino ino = Walk({"models", "1", "layers", "3"});
  auto reader = core_->Open(kMe, ino, O_RDONLY);
  ASSERT_TRUE(reader.ok());
  ASSERT_TRUE(WriteNew(layers, "3", "new bytes, longer").ok());
  auto r = core_->Read(reader->fh, 0, 100);
  ASSERT_TRUE(r.ok());
  std::string got(r->length, '\0');
  ASSERT_EQ(pread(r->fd, got.data(), r->length, r->offset), static_cast<ssize_t>(r->length));
  EXPECT_EQ(got, "old bytes");
  core_->Release(reader->fh);
}

TEST_F(CoreTest, TemporaryNameCommitsOnlyWhenRenamed) {
  Ino layers = Walk({"models", "1", "layers"});
  ASSERT_TRUE(WriteNew(layers, ".2.XyZ123", "staged").ok());
  EXPECT_EQ(Versions(2), 0u);
  // The temporary file exists for its creator while it exists.
  auto tmp = core_->Lookup(kMe, layers, ".2.XyZ123");
  ASSERT_TRUE(tmp.ok());
  EXPECT_EQ(tmp->attr.st_size, 6);
  ASSERT_TRUE(core_->Rename(kMe, layers, ".2.XyZ123", layers, "2", 0).ok());
  EXPECT_EQ(Versions(2), 1u);
  EXPECT_EQ(ReadWhole(Walk({"models", "1", "layers", "2"})), "staged");
  EXPECT_FALSE(core_->Lookup(kMe, layers, ".2.XyZ123").ok());
}

TEST_F(CoreTest, RenameOntoAnInvalidNameFailsAndKeepsTheTemporaryFile) {
  Ino layers = Walk({"models", "1", "layers"});
  ASSERT_TRUE(WriteNew(layers, ".tmp", "x").ok());
  Status st = core_->Rename(kMe, layers, ".tmp", layers, "not-a-number", 0);
  EXPECT_EQ(ToErrno(st), EINVAL);
  EXPECT_TRUE(core_->Lookup(kMe, layers, ".tmp").ok());
}

TEST_F(CoreTest, FlushWithoutWritesWaitsForRelease) {
  Ino layers = Walk({"models", "1", "layers"});
  auto c = core_->Create(kMe, layers, "5", 0644, O_WRONLY | O_CREAT | O_TRUNC);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(core_->Flush(kMe, c->second.fh).ok());  // the shell's dup2 + close
  EXPECT_EQ(Versions(5), 0u);
  ASSERT_TRUE(core_->Write(c->second.fh, 0, "data", 4).ok());
  ASSERT_TRUE(core_->Flush(kMe, c->second.fh).ok());
  core_->Release(c->second.fh);
  EXPECT_EQ(Versions(5), 1u);
  EXPECT_EQ(store_->NewestVersion(1, 5)->size, 4u);
}

TEST_F(CoreTest, BadNamesAndTargetsGetPreciseErrors) {
  Ino layers = Walk({"models", "1", "layers"});
  EXPECT_EQ(ToErrno(core_->Create(kMe, layers, "x", 0644, O_WRONLY).status()), EINVAL);
  EXPECT_EQ(ToErrno(core_->Create(kMe, layers, std::string(300, '1'), 0644, O_WRONLY).status()), ENAMETOOLONG);
  EXPECT_EQ(ToErrno(core_->Lookup(kMe, layers, "x").status()), ENOENT);
  Ino models = Walk({"models"});
  EXPECT_EQ(ToErrno(core_->MakeDir(kMe, models, "abc").status()), EINVAL);
  EXPECT_EQ(ToErrno(core_->MakeDir(kMe, models, "1").status()), EEXIST);
  EXPECT_EQ(ToErrno(core_->Create(kMe, models, "file", 0644, O_WRONLY).status()), EPERM);
  EXPECT_EQ(ToErrno(core_->Unlink(kMe, kRootIno, "models")), EPERM);
  // History versions are immutable.
  ASSERT_TRUE(WriteNew(layers, "0", "v").ok());
  Ino hist = Walk({"models", "1", "history", "0"});
  auto dh = core_->OpenDir(hist);
  auto entries = core_->ReadDir(*dh, 0, true);
  ASSERT_EQ(entries->size(), 1u);
  core_->ReleaseDir(*dh);
  Ino version = Walk({"models", "1", "history", "0", (*entries)[0].first});
  EXPECT_EQ(ToErrno(core_->Open(kMe, version, O_WRONLY).status()), EPERM);
  EXPECT_EQ(Versions(0), 1u);
}

TEST_F(CoreTest, ForgottenNodesAreDropped) {
  Ino layers = Walk({"models", "1", "layers"});
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(WriteNew(layers, std::to_string(i), "x").ok());
  size_t before = core_->node_count();
  std::vector<Ino> seen;
  for (int i = 0; i < 50; ++i) seen.push_back(Walk({"models", "1", "layers", std::to_string(i)}));
  EXPECT_GE(core_->node_count(), before);
  // Each Walk took one reference on every component; give them all back.
  for (Ino ino : seen) core_->Forget(ino, 1000);
  EXPECT_LE(core_->node_count(), before);
}

TEST_F(CoreTest, ErrnoMappingIsOneTable) {
  EXPECT_EQ(ToErrno(NotFound("x")), ENOENT);
  EXPECT_EQ(ToErrno(AlreadyExists("x")), EEXIST);
  EXPECT_EQ(ToErrno(InvalidArgument("x")), EINVAL);
  EXPECT_EQ(ToErrno(PermissionDenied("x")), EPERM);
  EXPECT_EQ(ToErrno(ReadOnly("x")), EROFS);
  EXPECT_EQ(ToErrno(NotSupported("x")), ENOTSUP);
  EXPECT_EQ(ToErrno(NotEmpty("x")), ENOTEMPTY);
  EXPECT_EQ(ToErrno(TooLarge("x")), EFBIG);
  EXPECT_EQ(ToErrno(NameTooLong("x")), ENAMETOOLONG);
  EXPECT_EQ(ToErrno(IOError("x")), EIO);
}

TEST_F(CoreTest, ReadOnlyCoreRefusesEveryChange) {
  std::vector<std::unique_ptr<Folder>> folders;
  auto store = models::ModelStore::Open(tmp_.Sub("ro"));
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->CreateModelWithId(1).ok());
  folders.push_back(std::make_unique<ModelsFolder>(std::move(*store)));
  CoreOptions opts;
  opts.read_only = true;
  Core ro(std::move(folders), opts);
  auto models = ro.Lookup(kMe, kRootIno, "models");
  ASSERT_TRUE(models.ok());
  EXPECT_EQ(ToErrno(ro.MakeDir(kMe, models->attr.st_ino, "2").status()), EROFS);
  auto one = ro.Lookup(kMe, models->attr.st_ino, "1");
  auto layers = ro.Lookup(kMe, one->attr.st_ino, "layers");
  EXPECT_EQ(ToErrno(ro.Create(kMe, layers->attr.st_ino, "0", 0644, O_WRONLY).status()), EROFS);
}

}  // namespace
}  // namespace modelfs::fs
