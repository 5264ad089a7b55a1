// The core's open-file rules (core.h) on an in-memory folder, driven as the kernel drives them: every
// request says which thread sent it, and an open refused with ESTALE is retried after a fresh lookup.
// Threads are mapped to processes by tid / 100 (threads 100 and 101 belong to process 1).
#include <fcntl.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <future>
#include <set>
#include <thread>

#include "fs/core.h"
#include "fs/errno_map.h"
#include "tests/fs/fake_folder.h"
#include "tests/stores/temp_dir.h"

namespace modelfs::fs {
namespace {

using testing::FakeFolder;

constexpr Caller kA{100};   // process 1
constexpr Caller kA2{101};  // process 1, another thread
constexpr Caller kB{200};   // process 2

class RecordingKernel : public KernelCache {
 public:
  void ForgetEntry(Ino parent, const std::string& name) override {
    std::lock_guard lock(mu);
    entries.emplace_back(parent, name);
  }
  void ForgetAttributes(Ino ino, bool listing) override {
    (void)listing;
    std::lock_guard lock(mu);
    attrs.push_back(ino);
  }
  std::mutex mu;
  std::vector<std::pair<Ino, std::string>> entries;
  std::vector<Ino> attrs;
};

class CoreRules : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(tmp_.ok());
    auto folder = std::make_unique<FakeFolder>("f", tmp_.path());
    folder_ = folder.get();
    folder_->AddDir("d");
    std::vector<std::unique_ptr<Folder>> folders;
    folders.push_back(std::move(folder));
    CoreOptions opts;
    opts.process_of = [](pid_t tid) { return ProcessId{tid / 100}; };
    opts.process_alive = [](const ProcessId&, int) { return true; };
    opts.creating = [this](pid_t) { return creating_.load(); };
    opts.invalidation_wait = std::chrono::milliseconds(500);
    core_ = std::make_unique<Core>(std::move(folders), opts);
    core_->SetKernelCache(&kernel_);
    dir_ = Walk(kA, {"f", "d"});
    ASSERT_NE(dir_, 0u);
  }
  void TearDown() override { core_.reset(); }

  Ino Walk(const Caller& c, const std::vector<std::string>& path) {
    Ino ino = kRootIno;
    for (const auto& name : path) {
      auto e = core_->Lookup(c, ino, name);
      if (!e.ok()) return 0;
      ino = e->attr.st_ino;
    }
    return ino;
  }
  // open(2) of dir_/name as the kernel does it: lookup, open, and once more after ESTALE.
  Result<std::pair<Ino, uint64_t>> OpenPath(const Caller& c, const std::string& name, int flags) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      auto e = core_->Lookup(c, dir_, name);
      if (!e.ok()) return e.status();
      auto o = core_->Open(c, e->attr.st_ino, flags);
      if (o.ok()) return std::make_pair(static_cast<Ino>(e->attr.st_ino), o->fh);
      if (o.status().code() != StatusCode::kStale) return o.status();
    }
    return Stale("retried once already");
  }
  Status WriteAll(uint64_t fh, const std::string& bytes, off_t at = 0) {
    return core_->Write(fh, at, bytes.data(), bytes.size()).status();
  }
  // create + write + close by one process.
  Status CreateFile(const Caller& c, const std::string& name, const std::string& bytes) {
    auto cr = core_->Create(c, dir_, name, 0644, O_WRONLY | O_CREAT | O_TRUNC);
    if (!cr.ok()) return cr.status();
    Status st = WriteAll(cr->second.fh, bytes);
    if (st.ok()) st = core_->Flush(c, cr->second.fh);
    core_->Release(cr->second.fh);
    return st;
  }
  std::string ReadAll(uint64_t fh) {
    std::string out;
    while (true) {
      auto r = core_->Read(fh, static_cast<off_t>(out.size()), 4096);
      if (!r.ok() || r->length == 0) break;
      if (r->data) {
        out += r->data->substr(0, r->length);
      } else {
        std::string chunk(r->length, '\0');
        EXPECT_EQ(pread(r->fd, chunk.data(), r->length, r->offset), static_cast<ssize_t>(r->length));
        out += chunk;
      }
    }
    return out;
  }
  std::string Cat(const Caller& c, const std::string& name) {
    auto o = OpenPath(c, name, O_RDONLY);
    if (!o.ok()) return "<" + o.status().message() + ">";
    std::string s = ReadAll(o->second);
    core_->Release(o->second);
    return s;
  }
  off_t Size(Ino ino) {
    auto a = core_->GetAttr(ino);
    return a.ok() ? a->attr.st_size : -1;
  }

  ::modelfs::testing::TempDir tmp_;
  std::atomic<bool> creating_{false};  // whether a lookup is part of a mkdir or exclusive create
  FakeFolder* folder_ = nullptr;
  RecordingKernel kernel_;
  std::unique_ptr<Core> core_;
  Ino dir_ = 0;
};

TEST_F(CoreRules, ACloseByAProcessThatInheritedTheDescriptorCommitsNothing) {
  // { cat a; cat b; } > f: the shell opens, each child writes and closes its copy at exit.
  auto cr = core_->Create(kA, dir_, "f", 0644, O_WRONLY | O_CREAT | O_TRUNC);
  ASSERT_TRUE(cr.ok());
  const uint64_t fh = cr->second.fh;
  ASSERT_TRUE(WriteAll(fh, "first half ").ok());
  ASSERT_TRUE(core_->Flush(kB, fh).ok());  // the child's exit
  EXPECT_EQ(folder_->commits(), 0) << "a child's close published half a file";
  ASSERT_TRUE(WriteAll(fh, "second half", 11).ok());
  ASSERT_TRUE(core_->Flush(kA2, fh).ok());  // the opener's close (any of its threads)
  EXPECT_EQ(folder_->commits(), 1);
  EXPECT_EQ(folder_->Bytes("d/f"), "first half second half");
  core_->Release(fh);
  EXPECT_EQ(folder_->commits(), 1);
}

TEST_F(CoreRules, WhatNoOpenerCloseCommittedCommitsAtRelease) {
  auto cr = core_->Create(kA, dir_, "f", 0644, O_WRONLY | O_CREAT | O_TRUNC);
  ASSERT_TRUE(cr.ok());
  ASSERT_TRUE(core_->Flush(kA, cr->second.fh).ok());  // the shell's dup2 + close: nothing written
  EXPECT_EQ(folder_->commits(), 0);
  ASSERT_TRUE(WriteAll(cr->second.fh, "by a child").ok());
  ASSERT_TRUE(core_->Flush(kB, cr->second.fh).ok());
  EXPECT_EQ(folder_->commits(), 0);
  core_->Release(cr->second.fh);  // the last close: the opener had exited first
  EXPECT_EQ(folder_->Bytes("d/f"), "by a child");
}

TEST_F(CoreRules, ARejectionIsReturnedByEveryLaterCloseWriteAndFsync) {
  auto cr = core_->Create(kA, dir_, "f", 0644, O_WRONLY | O_CREAT | O_TRUNC);
  ASSERT_TRUE(cr.ok());
  const uint64_t fh = cr->second.fh;
  ASSERT_TRUE(WriteAll(fh, "BAD bytes").ok());
  EXPECT_EQ(ToErrno(core_->Flush(kA, fh)), EINVAL);  // numpy closes a dup first, ignoring this
  EXPECT_EQ(ToErrno(core_->Flush(kA, fh)), EINVAL);  // ... and sees it at its own close
  EXPECT_EQ(ToErrno(core_->Flush(kB, fh)), EINVAL);
  EXPECT_EQ(ToErrno(core_->Fsync(fh, false)), EINVAL);
  EXPECT_EQ(ToErrno(WriteAll(fh, "more")), EINVAL);
  core_->Release(fh);
  EXPECT_FALSE(folder_->Has("d/f"));
  EXPECT_EQ(Walk(kA, {"f", "d", "f"}), 0u) << "a rejected new file is gone";
}

TEST_F(CoreRules, AWriterOfAStoredFileGetsAnInodeOfItsOwnAndReadersKeepTheirs) {
  ASSERT_TRUE(CreateFile(kA, "f", "old bytes").ok());
  const Ino reader_ino = Walk(kB, {"f", "d", "f"});
  auto reader = core_->Open(kB, reader_ino, O_RDONLY);
  ASSERT_TRUE(reader.ok());
  EXPECT_TRUE(reader->keep_cache);
  // The writer's first open of the shared inode is refused; the retry's lookup gives it its own.
  auto refused = core_->Open(kA, reader_ino, O_WRONLY);
  ASSERT_EQ(refused.status().code(), StatusCode::kStale);
  auto w = core_->Lookup(kA, dir_, "f");
  ASSERT_TRUE(w.ok());
  const Ino writer_ino = w->attr.st_ino;
  ASSERT_NE(writer_ino, reader_ino);
  EXPECT_EQ(w->entry_timeout, 0) << "other processes must not keep the writer's inode for the name";
  auto writer = core_->Open(kA, writer_ino, O_WRONLY);
  ASSERT_TRUE(writer.ok()) << writer.status().ToString();
  ASSERT_TRUE(WriteAll(writer->fh, "new bytes, longer than before").ok());
  EXPECT_EQ(Size(writer_ino), 29) << "a writer sees its own file";
  EXPECT_EQ(Size(reader_ino), 9) << "readers' inode keeps its size";
  EXPECT_EQ(Walk(kB, {"f", "d", "f"}), reader_ino) << "others still find the stored file";
  ASSERT_TRUE(core_->Flush(kA, writer->fh).ok());
  core_->Release(writer->fh);
  EXPECT_EQ(ReadAll(reader->fh), "old bytes") << "a reader keeps its snapshot";
  EXPECT_EQ(Size(reader_ino), 9);
  core_->Release(reader->fh);
  EXPECT_EQ(Cat(kB, "f"), "new bytes, longer than before");
}

TEST_F(CoreRules, AnOpenOfAnInodeWhoseNameMovedOnIsRetriedOnTheNewOne) {
  ASSERT_TRUE(CreateFile(kA, "f", "v1").ok());
  const Ino v1 = Walk(kB, {"f", "d", "f"});
  ASSERT_TRUE(CreateFile(kA, "f", "version 2").ok());
  kernel_.entries.clear();
  // The kernel still has the old entry (its invalidation not yet processed): the open says ESTALE...
  EXPECT_EQ(core_->Open(kB, v1, O_RDONLY).status().code(), StatusCode::kStale);
  // ... and the retry finds the new inode, with the new size.
  const Ino v2 = Walk(kB, {"f", "d", "f"});
  EXPECT_NE(v1, v2);
  EXPECT_EQ(Size(v2), 9);
  EXPECT_EQ(Size(v1), 2) << "the old inode keeps its attributes for its readers";
  // A retry that could not look up again (an open through /proc/self/fd) is served, bypassing the cache.
  EXPECT_EQ(core_->Open(kB, v1, O_RDONLY).status().code(), StatusCode::kStale);
  auto again = core_->Open(kB, v1, O_RDONLY);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->direct_io);
  core_->Release(again->fh);
}

TEST_F(CoreRules, ARetryThatCannotLookUpAgainIsServedOnTheSharedInode) {
  ASSERT_TRUE(CreateFile(kA, "f", "stored").ok());
  const Ino ino = Walk(kA, {"f", "d", "f"});
  EXPECT_EQ(core_->Open(kA, ino, O_WRONLY).status().code(), StatusCode::kStale);
  auto second = core_->Open(kA, ino, O_WRONLY);  // no lookup between the two: /proc/self/fd/N
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(second->direct_io);
  ASSERT_TRUE(WriteAll(second->fh, "STORED").ok());
  ASSERT_TRUE(core_->Flush(kA, second->fh).ok());
  core_->Release(second->fh);
  EXPECT_EQ(folder_->Bytes("d/f"), "STORED");
}

TEST_F(CoreRules, TwoWritersOfOnePathEachPublishExactlyTheirOwnBytes) {
  ASSERT_TRUE(CreateFile(kA, "f", "0123456789").ok());
  auto w1 = OpenPath(kA, "f", O_WRONLY | O_TRUNC);
  auto w2 = OpenPath(kB, "f", O_WRONLY | O_TRUNC);
  ASSERT_TRUE(w1.ok() && w2.ok());
  EXPECT_NE(w1->first, w2->first);
  ASSERT_TRUE(WriteAll(w1->second, "writer one, long").ok());
  ASSERT_TRUE(WriteAll(w2->second, "two").ok());
  ASSERT_TRUE(core_->Flush(kA, w1->second).ok());
  EXPECT_EQ(folder_->Bytes("d/f"), "writer one, long");
  ASSERT_TRUE(WriteAll(w2->second, "+", 3).ok());
  ASSERT_TRUE(core_->Flush(kB, w2->second).ok());
  EXPECT_EQ(folder_->Bytes("d/f"), "two+") << "the last close wins, never a mix";
  core_->Release(w1->second);
  core_->Release(w2->second);
}

TEST_F(CoreRules, AWriterThatDoesNotTruncateStartsFromTheBytesItOpened) {
  ASSERT_TRUE(CreateFile(kA, "f", "0123456789").ok());
  auto w = OpenPath(kA, "f", O_WRONLY);  // dd conv=notrunc
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(Size(w->first), 10);
  ASSERT_TRUE(CreateFile(kB, "f", "another writer's").ok());  // committed meanwhile
  ASSERT_TRUE(WriteAll(w->second, "AB", 10).ok());              // O_APPEND lands at its size
  ASSERT_TRUE(core_->Flush(kA, w->second).ok());
  core_->Release(w->second);
  EXPECT_EQ(folder_->Bytes("d/f"), "0123456789AB");
}

TEST_F(CoreRules, TruncatingAWritersFileMovesOnlyItsOwnSize) {
  ASSERT_TRUE(CreateFile(kA, "f", "0123456789").ok());
  const Ino shared = Walk(kB, {"f", "d", "f"});
  auto w = OpenPath(kA, "f", O_RDWR);
  ASSERT_TRUE(w.ok());
  SetAttrIn t;
  t.size = 4;
  t.fh = w->second;
  auto a = core_->SetAttr(kA, w->first, t);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->attr.st_size, 4);
  EXPECT_EQ(Size(shared), 10);
  EXPECT_EQ(ReadAll(w->second), "0123") << "an O_RDWR writer reads what it wrote";
  ASSERT_TRUE(core_->Flush(kA, w->second).ok());
  core_->Release(w->second);
  EXPECT_EQ(folder_->Bytes("d/f"), "0123");
}

TEST_F(CoreRules, ANameRemovedWhileOpenForWritingIsNotBroughtBackByItsClose) {
  // create - unlink - use: the temporary-file idiom.
  auto cr = core_->Create(kA, dir_, "tmp", 0644, O_RDWR | O_CREAT | O_EXCL);
  ASSERT_TRUE(cr.ok());
  ASSERT_TRUE(core_->Unlink(kA, dir_, "tmp").ok());
  EXPECT_EQ(core_->GetAttr(cr->first.attr.st_ino)->attr.st_nlink, 0u) << "fstat of an unlinked file";
  ASSERT_TRUE(WriteAll(cr->second.fh, "scratch").ok());
  EXPECT_EQ(ReadAll(cr->second.fh), "scratch");
  ASSERT_TRUE(core_->Flush(kA, cr->second.fh).ok());
  core_->Release(cr->second.fh);
  EXPECT_FALSE(folder_->Has("d/tmp"));
  EXPECT_EQ(Walk(kA, {"f", "d", "tmp"}), 0u);
  // A stored file removed while a writer has it open.
  ASSERT_TRUE(CreateFile(kA, "g", "stored").ok());
  auto w = OpenPath(kB, "g", O_WRONLY | O_TRUNC);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(WriteAll(w->second, "late").ok());
  ASSERT_TRUE(core_->Unlink(kA, dir_, "g").ok());
  ASSERT_TRUE(core_->Flush(kB, w->second).ok());
  core_->Release(w->second);
  EXPECT_FALSE(folder_->Has("d/g"));
}

TEST_F(CoreRules, ANameReplacedByARenameIsNotOverwrittenByTheOldWritersClose) {
  ASSERT_TRUE(CreateFile(kA, "9", "old").ok());
  auto w = OpenPath(kB, "9", O_WRONLY | O_TRUNC);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(WriteAll(w->second, "stale writer").ok());
  auto t = core_->Create(kA, dir_, ".t9", 0644, O_WRONLY | O_CREAT | O_EXCL);
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(WriteAll(t->second.fh, "moved in").ok());
  ASSERT_TRUE(core_->Flush(kA, t->second.fh).ok());
  core_->Release(t->second.fh);
  EXPECT_EQ(folder_->Bytes("d/9"), "old") << "a temporary name commits only when renamed";
  ASSERT_TRUE(core_->Rename(kA, dir_, ".t9", dir_, "9", 0).ok());
  EXPECT_EQ(folder_->Bytes("d/9"), "moved in");
  ASSERT_TRUE(core_->Flush(kB, w->second).ok());
  core_->Release(w->second);
  EXPECT_EQ(folder_->Bytes("d/9"), "moved in");
}

TEST_F(CoreRules, AFileCreatedReadOnlyIsStoredAtItsLastClose) {
  auto cr = core_->Create(kA, dir_, "lockfile", 0644, O_RDONLY | O_CREAT);  // flock(1)
  ASSERT_TRUE(cr.ok());
  core_->Release(cr->second.fh);
  EXPECT_TRUE(folder_->Has("d/lockfile"));
  EXPECT_EQ(folder_->Bytes("d/lockfile"), "");
}

TEST_F(CoreRules, AFileBeingCreatedExistsOnlyForItsCreatorUntilItsFirstCommit) {
  auto cr = core_->Create(kA, dir_, "new", 0644, O_WRONLY | O_CREAT | O_EXCL);
  ASSERT_TRUE(cr.ok());
  ASSERT_TRUE(WriteAll(cr->second.fh, "half").ok());
  EXPECT_NE(Walk(kA2, {"f", "d", "new"}), 0u) << "its creator sees it";
  EXPECT_EQ(Walk(kB, {"f", "d", "new"}), 0u) << "nobody else sees half a file";
  auto dh = core_->OpenDir(dir_);
  auto entries = core_->ReadDir(*dh, 0, true);
  ASSERT_TRUE(entries.ok());
  for (auto& [name, e] : *entries) {
    EXPECT_NE(name, "new");
    core_->Forget(e.attr.st_ino, 1);
  }
  core_->ReleaseDir(*dh);
  // Another process creating the same name writes its own file; the last close wins.
  auto other = core_->Create(kB, dir_, "new", 0644, O_WRONLY | O_CREAT | O_EXCL);
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  ASSERT_TRUE(WriteAll(other->second.fh, "other").ok());
  ASSERT_TRUE(WriteAll(cr->second.fh, " and half", 4).ok());
  ASSERT_TRUE(core_->Flush(kA, cr->second.fh).ok());
  EXPECT_EQ(folder_->Bytes("d/new"), "half and half");
  ASSERT_TRUE(core_->Flush(kB, other->second.fh).ok());
  EXPECT_EQ(folder_->Bytes("d/new"), "other");
  core_->Release(cr->second.fh);
  core_->Release(other->second.fh);
  EXPECT_EQ(Cat(kB, "new"), "other");
}

TEST_F(CoreRules, ReaddirPlusReferencesAreTakenWithTheNodeAndGivenBackWhenNotSent) {
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(CreateFile(kA, "f" + std::to_string(i), "x").ok());
  const size_t before = core_->node_count();
  const Ino looked_up = Walk(kB, {"f", "d", "f0"});  // the kernel holds one reference already
  auto dh = core_->OpenDir(dir_);
  auto entries = core_->ReadDir(*dh, 0, true);
  ASSERT_TRUE(entries.ok());
  ASSERT_EQ(entries->size(), 20u);
  // It forgets the older reference while the listing is on its way: the listing's keeps the inode.
  core_->Forget(looked_up, 1);
  EXPECT_TRUE(core_->GetAttr(looked_up).ok()) << "a FORGET raced the listing's reference";
  // The kernel took ten; the rest did not fit and are given back.
  for (size_t i = 10; i < entries->size(); ++i) core_->Forget((*entries)[i].second.attr.st_ino, 1);
  core_->ReleaseDir(*dh);
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_TRUE(core_->GetAttr((*entries)[i].second.attr.st_ino).ok()) << "a sent entry's inode lives";
  }
  for (size_t i = 0; i < 10; ++i) core_->Forget((*entries)[i].second.attr.st_ino, 1);
  EXPECT_LE(core_->node_count(), before);
}

TEST_F(CoreRules, AProcessThatMadeAFolderSeesOnlyWhatItCreatedInIt) {
  auto top = core_->Lookup(kA, kRootIno, "f");
  ASSERT_TRUE(top.ok());
  const Ino f = top->attr.st_ino;
  auto made = core_->MakeDir(kA, f, "m");
  ASSERT_TRUE(made.ok());
  const Ino m = made->attr.st_ino;
  // The store put meta and sub/ in it; cp -a (process 1) creates them itself, without looking
  // first: its mkdir and exclusive creates must not find them.
  creating_ = true;
  EXPECT_EQ(ToErrno(core_->Lookup(kA, m, "meta").status()), ENOENT);
  EXPECT_EQ(ToErrno(core_->Lookup(kA, m, "sub").status()), ENOENT);
  EXPECT_TRUE(core_->Lookup(kB, m, "meta").ok()) << "other processes see the store";
  EXPECT_TRUE(core_->Lookup(kB, m, "sub").ok());
  creating_ = false;
  EXPECT_TRUE(core_->Lookup(kA, m, "sub").ok()) << "its other requests (a path walk) see the store";
  creating_ = true;
  auto sub = core_->MakeDir(kA, m, "sub");
  ASSERT_TRUE(sub.ok()) << sub.status().ToString();
  EXPECT_TRUE(core_->Lookup(kA, m, "sub").ok()) << "made by it: it sees it now";
  auto meta = core_->Create(kA, m, "meta", 0644, O_WRONLY | O_CREAT | O_EXCL);
  ASSERT_TRUE(meta.ok()) << meta.status().ToString();
  ASSERT_TRUE(WriteAll(meta->second.fh, "restored meta").ok());
  ASSERT_TRUE(core_->Flush(kA, meta->second.fh).ok());
  core_->Release(meta->second.fh);
  EXPECT_EQ(folder_->Bytes("m/meta"), "restored meta");
  EXPECT_TRUE(core_->Lookup(kA, m, "meta").ok());
  EXPECT_EQ(ToErrno(core_->MakeDir(kA, m, "sub").status()), EEXIST);
}

TEST_F(CoreRules, RemovingAnAutomaticEntryHidesItFromTheRemoverUntilItCreatesItAgain) {
  auto top = core_->Lookup(kB, kRootIno, "f");
  auto made = core_->MakeDir(kB, top->attr.st_ino, "m");  // made by process 2
  ASSERT_TRUE(made.ok());
  const Ino m = made->attr.st_ino;
  // tar (process 1): O_EXCL create of meta -> EEXIST, so it unlinks and creates again.
  EXPECT_EQ(ToErrno(core_->Create(kA, m, "meta", 0644, O_WRONLY | O_CREAT | O_EXCL).status()), EEXIST);
  ASSERT_TRUE(core_->Unlink(kA, m, "meta").ok());
  EXPECT_TRUE(folder_->Has("m/meta")) << "an automatic entry stays";
  EXPECT_EQ(ToErrno(core_->Lookup(kA, m, "meta").status()), ENOENT);
  EXPECT_TRUE(core_->Lookup(Caller{300}, m, "meta").ok()) << "everyone else still sees it";
  auto again = core_->Create(kA, m, "meta", 0644, O_WRONLY | O_CREAT | O_EXCL);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  ASSERT_TRUE(WriteAll(again->second.fh, "from the archive").ok());
  ASSERT_TRUE(core_->Flush(kA, again->second.fh).ok());
  core_->Release(again->second.fh);
  EXPECT_EQ(folder_->Bytes("m/meta"), "from the archive");
  EXPECT_TRUE(core_->Lookup(kA, m, "meta").ok());
}

// Core::Read used to take a file's write lock then the table lock, and the flush path the reverse:
// pread on an O_RDWR descriptor in a loop while another thread opened and closed the file hung the
// mount within a second.
TEST_F(CoreRules, ReadsOnAWritersHandleWhileOthersOpenAndCloseNeverDeadlock) {
  ASSERT_TRUE(CreateFile(kA, "f", std::string(4096, 'x')).ok());
  auto rw = OpenPath(kA, "f", O_RDWR);
  ASSERT_TRUE(rw.ok());
  ASSERT_TRUE(WriteAll(rw->second, "yy").ok());
  std::atomic<bool> stop{false};
  auto work = std::async(std::launch::async, [&] {
    std::vector<std::thread> threads;
    threads.emplace_back([&] {
      while (!stop) EXPECT_TRUE(core_->Read(rw->second, 0, 4096).ok());
    });
    for (int t = 0; t < 3; ++t) {
      threads.emplace_back([&, t] {
        const Caller c{static_cast<pid_t>(300 + 100 * t)};
        while (!stop) {
          auto w = OpenPath(c, "f", t == 0 ? O_WRONLY : O_RDONLY);
          if (!w.ok()) continue;
          if (t == 0) (void)WriteAll(w->second, "z");
          (void)core_->Flush(c, w->second);
          core_->Release(w->second);
        }
      });
    }
    threads.emplace_back([&] {
      while (!stop) (void)core_->Flush(kA, rw->second);
    });
    std::this_thread::sleep_for(std::chrono::seconds(1));
    stop = true;
    for (auto& th : threads) th.join();
  });
  ASSERT_EQ(work.wait_for(std::chrono::seconds(20)), std::future_status::ready) << "deadlock";
  core_->Release(rw->second);
}

TEST_F(CoreRules, OsErrnosKeepTheirMeaning) {
  EXPECT_EQ(ToErrno(ErrnoError("write", ENOSPC)), ENOSPC);
  EXPECT_EQ(ToErrno(ErrnoError("write", EDQUOT)), EDQUOT);
  EXPECT_EQ(ToErrno(ErrnoError("open", EACCES)), EACCES);
  EXPECT_EQ(ToErrno(ErrnoError("truncate", EFBIG)), EFBIG);
  EXPECT_EQ(ToErrno(ErrnoError("write", EROFS)), EROFS);
  EXPECT_EQ(ToErrno(ErrnoError("open", ENOENT)), EIO) << "a missing store file is not the caller's ENOENT";
  EXPECT_EQ(ToErrno(ErrnoError("write", ENOSPC).Annotate("models/1/layers/0")), ENOSPC);
  // A truncate the OS refuses keeps its errno.
  auto cr = core_->Create(kA, dir_, "big", 0644, O_WRONLY | O_CREAT);
  ASSERT_TRUE(cr.ok());
  SetAttrIn t;
  t.size = 999999999999984ull;
  t.fh = cr->second.fh;
  EXPECT_EQ(ToErrno(core_->SetAttr(kA, cr->first.attr.st_ino, t).status()), EFBIG);
  core_->Release(cr->second.fh);
}

TEST_F(CoreRules, SpecialFilesAndHardLinksAreRefusedWithTheirName) {
  Status fifo = core_->MakeSpecial(dir_, "fifo", S_IFIFO | 0644);
  EXPECT_EQ(ToErrno(fifo), EPERM);
  EXPECT_NE(fifo.message().find("f/d/fifo"), std::string::npos);
  EXPECT_EQ(ToErrno(core_->HardLink(dir_, dir_, "x")), EPERM);
}

}  // namespace
}  // namespace modelfs::fs
