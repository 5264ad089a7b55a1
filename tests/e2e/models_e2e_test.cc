// /models through a real mount, driven by cp, cat, dd, cmp, ls, find, rsync, rm and numpy.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <thread>
#include <vector>

#include "tests/e2e/mount_fixture.h"

namespace modelfs::e2e {
namespace {

constexpr char kPy[] = "/usr/bin/python3";  // Debian's, with python3-numpy

class ModelsE2E : public MountTest {
 protected:
  void SetUp() override {
    MountTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    Ok(Bin() + " demo --data " + mount_->data());
    StartOrDie(*mount_);
  }
  int Versions(const std::string& model, int layer) {
    auto r = Sh("ls " + M() + "/models/" + model + "/history/" + std::to_string(layer) + " | wc -l");
    return atoi(r.out.c_str());
  }
};

TEST_F(ModelsE2E, DemoTreeIsBrowsable) {
  std::string ls = Ok("ls " + M() + " " + M() + "/models " + M() + "/models/1 " + M() + "/models/1/layers");
  EXPECT_NE(ls.find("models"), std::string::npos);
  EXPECT_NE(ls.find("history"), std::string::npos);
  EXPECT_NE(ls.find("meta"), std::string::npos);
  EXPECT_NE(Ok("cat " + M() + "/models/1/meta").find("mnist-mlp"), std::string::npos);
  EXPECT_EQ(Versions("1", 0), 2);
  // stat size equals the bytes read.
  EXPECT_EQ(Ok("stat -c %s " + M() + "/models/1/layers/0"), std::to_string(64 * 784 * 4) + "\n");
  EXPECT_EQ(Ok("cat " + M() + "/models/1/layers/0 | wc -c"), std::to_string(64 * 784 * 4) + "\n");
  // numpy reads a layer directly.
  std::string py = Ok(std::string(kPy) + " -c \"import numpy as np; a=np.fromfile('" + M() +
                      "/models/1/layers/1', dtype=np.float32); print(a.shape, a.dtype)\"");
  EXPECT_EQ(py, "(64,) float32\n");
  // history names are UTC timestamps and their mtime is the create time.
  std::string hist = Ok("ls " + M() + "/models/1/history/0");
  EXPECT_EQ(hist.size(), 2 * 28u) << hist;
  EXPECT_EQ(hist[4], '-');
  EXPECT_EQ(hist[26], 'Z');
  std::string name = hist.substr(0, 27);
  std::string mtime = Ok("TZ=UTC stat -c %y " + M() + "/models/1/history/0/" + name);
  EXPECT_EQ(mtime.substr(0, 10), name.substr(0, 10));
  EXPECT_EQ(mtime.substr(11, 15), name.substr(11, 15));
  // find and du walk the tree.
  EXPECT_EQ(Ok("find " + M() + "/models -type f | wc -l"), "13\n");
  Ok("du -s " + M() + "/models");
  // xattrs name the version.
  EXPECT_NE(Ok("getfattr -d " + M() + "/models/1/layers/0").find("user.modelfs.versions=\"2\""),
            std::string::npos);
}

TEST_F(ModelsE2E, CpAddsVersionAndIdenticalCpAddsNothing) {
  Ok("head -c 100000 /dev/urandom > " + dir_ + "/w.bin");
  Ok("cp " + dir_ + "/w.bin " + M() + "/models/2/layers/0");
  Ok("cmp " + dir_ + "/w.bin " + M() + "/models/2/layers/0");
  EXPECT_EQ(Versions("2", 0), 2);
  Ok("cp " + dir_ + "/w.bin " + M() + "/models/2/layers/0");
  EXPECT_EQ(Versions("2", 0), 2) << "identical bytes must add no version";
  // A new layer number creates the layer.
  Ok("cp " + dir_ + "/w.bin " + M() + "/models/2/layers/7");
  Ok("cmp " + dir_ + "/w.bin " + M() + "/models/2/layers/7");
  EXPECT_EQ(Versions("2", 7), 1);
  // sha256sum through the mount matches.
  EXPECT_EQ(Ok("sha256sum < " + dir_ + "/w.bin"), Ok("sha256sum < " + M() + "/models/2/layers/7"));
  // meta is replaced atomically.
  Ok("echo -n '{\"name\": \"renamed\"}' > " + M() + "/models/2/meta");
  EXPECT_EQ(Ok("cat " + M() + "/models/2/meta"), "{\"name\": \"renamed\"}");
}

TEST_F(ModelsE2E, CpPreserveTimeNamesTheVersionAndIdenticalBytesStillAddNothing) {
  Ok("head -c 5000 /dev/urandom > " + dir_ + "/p.bin");
  Ok("cp " + dir_ + "/p.bin " + M() + "/models/2/layers/6");
  EXPECT_EQ(Versions("2", 6), 1);
  Ok("touch -d '2031-02-03 04:05:06 UTC' " + dir_ + "/p.bin");
  Ok("cp -p " + dir_ + "/p.bin " + M() + "/models/2/layers/6");
  EXPECT_EQ(Versions("2", 6), 1) << "identical bytes with a newer time add nothing";
  Ok("head -c 5000 /dev/urandom > " + dir_ + "/q.bin");
  Ok("touch -d '2031-02-03 04:05:06 UTC' " + dir_ + "/q.bin");
  Ok("cp -p " + dir_ + "/q.bin " + M() + "/models/2/layers/6");
  EXPECT_EQ(Versions("2", 6), 2);
  EXPECT_EQ(Ok("ls " + M() + "/models/2/history/6 | tail -1"), "2031-02-03T04:05:06.000000Z\n");
  EXPECT_EQ(Ok("TZ=UTC stat -c %y " + M() + "/models/2/layers/6"), "2031-02-03 04:05:06.000000000 +0000\n");
}

TEST_F(ModelsE2E, CachedListingsFollowSideEffects) {
  // List everything first so that the kernel holds these listings in its cache.
  Ok("ls -R " + M() + "/models/2 > /dev/null");
  EXPECT_EQ(Versions("2", 0), 1);
  Ok("head -c 999 /dev/urandom > " + M() + "/models/2/layers/0");
  EXPECT_EQ(Versions("2", 0), 2) << "history/0 gained a version through a write to layers/0";
  Ok("head -c 999 /dev/urandom > " + dir_ + "/r.bin && cp " + dir_ + "/r.bin " + M() +
     "/models/2/history/0/2001-01-01T00:00:00.000000Z");
  EXPECT_EQ(Versions("2", 0), 3);
  EXPECT_EQ(Ok("ls " + M() + "/models/2/history"), "0\n");
  Ok("head -c 10 /dev/urandom > " + M() + "/models/2/layers/8");
  EXPECT_EQ(Ok("ls " + M() + "/models/2/history"), "0\n8\n") << "history/ gained folder 8";
  // layers/8 is the newest of history/8: rm of it changes nothing; the layer goes with its history.
  Ok("rm " + M() + "/models/2/layers/8");
  EXPECT_EQ(Ok("ls " + M() + "/models/2/layers"), "0\n8\n");
  Ok("rm -r " + M() + "/models/2/history/8");
  EXPECT_EQ(Ok("ls " + M() + "/models/2/history"), "0\n");
  EXPECT_EQ(Ok("ls " + M() + "/models/2/layers"), "0\n");
  std::string newest = Ok("ls " + M() + "/models/2/history/0 | tail -1");
  newest.pop_back();
  Ok("rm " + M() + "/models/2/history/0/" + newest);
  EXPECT_EQ(Versions("2", 0), 2);
  // layers/0 now reads the previous newest version.
  std::string prev = Ok("ls " + M() + "/models/2/history/0 | tail -1");
  prev.pop_back();
  Ok("cmp " + M() + "/models/2/layers/0 " + M() + "/models/2/history/0/" + prev);
}

TEST_F(ModelsE2E, DdConvNotruncOverwritesInPlace) {
  Ok("head -c 65536 /dev/urandom > " + dir_ + "/a.bin");
  Ok("cp " + dir_ + "/a.bin " + M() + "/models/2/layers/3");
  Ok("printf 'PATCHED!' | dd of=" + M() + "/models/2/layers/3 bs=1 seek=1000 conv=notrunc status=none");
  Ok("printf 'PATCHED!' | dd of=" + dir_ + "/a.bin bs=1 seek=1000 conv=notrunc status=none");
  Ok("cmp " + dir_ + "/a.bin " + M() + "/models/2/layers/3");
  EXPECT_EQ(Versions("2", 3), 2);
  // The old version is still in history, unchanged.
  std::string first = Ok("ls " + M() + "/models/2/history/3 | head -1");
  first.pop_back();
  EXPECT_NE(Ok("head -c 1008 " + M() + "/models/2/history/3/" + first + " | tail -c 8"), "PATCHED!");
}

TEST_F(ModelsE2E, HistoryNameInsertsVersionAtThatTime) {
  Ok("head -c 4096 /dev/urandom > " + dir_ + "/old.bin");
  const std::string t = "2020-01-02T03:04:05.123456Z";
  Ok("cp " + dir_ + "/old.bin " + M() + "/models/2/history/0/" + t);
  Ok("cmp " + dir_ + "/old.bin " + M() + "/models/2/history/0/" + t);
  EXPECT_EQ(Versions("2", 0), 2);
  // Older than the newest: layers/0 still reads the newest version.
  auto r = Sh("cmp " + dir_ + "/old.bin " + M() + "/models/2/layers/0");
  EXPECT_NE(r.code, 0);
  // History files are read-only.
  r = Sh("echo x > " + M() + "/models/2/history/0/" + t);
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(Ok("cmp " + dir_ + "/old.bin " + M() + "/models/2/history/0/" + t), "");
}

TEST_F(ModelsE2E, BadInputGetsClearErrorAndChangesNothing) {
  std::string before = Ok("find " + M() + " -type f | sort; cat " + M() + "/models/*/layers/* | sha256sum");
  auto r = Sh("mkdir " + M() + "/models/abc");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("Invalid argument"), std::string::npos) << r.out;
  r = Sh("echo hi > " + M() + "/models/999/layers/0");
  EXPECT_NE(r.code, 0);
  r = Sh("echo hi > " + M() + "/models/1/layers/x");
  EXPECT_NE(r.out.find("Invalid argument"), std::string::npos) << r.out;
  r = Sh("echo hi > " + M() + "/models/1/history/0/yesterday");
  EXPECT_NE(r.out.find("Invalid argument"), std::string::npos) << r.out;
  r = Sh("echo hi > " + M() + "/models/1/history/0/2024-13-01T00:00:00.000000Z");
  EXPECT_NE(r.out.find("Invalid argument"), std::string::npos) << r.out;
  r = Sh("echo hi > " + M() + "/models/1/layers/" + std::string(300, '7'));
  EXPECT_NE(r.out.find("too long"), std::string::npos) << r.out;
  r = Sh("echo hi > " + M() + "/models/1/notes");
  EXPECT_NE(r.code, 0);
  r = Sh("mv " + M() + "/models/1/layers/0 " + M() + "/models/1/layers/9");
  EXPECT_NE(r.code, 0);
  // `..` never escapes: the kernel resolves it inside the mount.
  EXPECT_EQ(Sh("ls " + M() + "/models/../models/1/..").code, 0);
  EXPECT_EQ(before, Ok("find " + M() + " -type f | sort; cat " + M() + "/models/*/layers/* | sha256sum"));
  std::string log = mount_->Log();
  EXPECT_NE(log.find("'abc' is not a model id"), std::string::npos) << log;
  EXPECT_NE(log.find("yesterday"), std::string::npos) << log;
}

TEST_F(ModelsE2E, MkdirAndRmRfModel) {
  Ok("mkdir " + M() + "/models/10");
  Ok("head -c 1000 /dev/urandom > " + M() + "/models/10/layers/0");
  Ok("head -c 1000 /dev/urandom > " + M() + "/models/10/layers/0");
  Ok("head -c 1000 /dev/urandom > " + M() + "/models/10/layers/1");
  EXPECT_EQ(Versions("10", 0), 2);
  Ok("rm -r " + M() + "/models/10");
  EXPECT_NE(Sh("ls " + M() + "/models/10").code, 0);
  // Ids are never reused.
  auto r = Sh("mkdir " + M() + "/models/10");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("not permitted"), std::string::npos) << r.out;
  Ok("mkdir " + M() + "/models/11");
}

TEST_F(ModelsE2E, RsyncBackupAndRestoreAreIdentityAndIdempotent) {
  Ok("head -c 300000 /dev/urandom > " + M() + "/models/2/layers/5");
  const std::string backup = dir_ + "/backup";
  Ok("rsync -aX " + M() + "/ " + backup + "/");
  Ok("diff -r " + M() + " " + backup);
  // A second backup copies nothing.
  std::string again = Ok("rsync -aXi " + M() + "/ " + backup + "/");
  EXPECT_EQ(again.find(">f"), std::string::npos) << again;

  Mount& fresh = Another("restore");
  StartOrDie(fresh);
  Ok("rsync -aX " + backup + "/ " + fresh.mnt() + "/");
  Ok("diff -r " + backup + " " + fresh.mnt());
  // Times came back too (history names and mtimes).
  EXPECT_EQ(Ok("cd " + backup + " && find . -type f -printf '%p %s %T@\\n' | sort"),
            Ok("cd " + fresh.mnt() + " && find . -type f -printf '%p %s %T@\\n' | sort"));
  std::string state = Ok("find " + fresh.mnt() + " -type f | sort | xargs sha256sum");
  std::string restore_again = Ok("rsync -aXi " + backup + "/ " + fresh.mnt() + "/");
  EXPECT_EQ(restore_again.find(">f"), std::string::npos) << restore_again;
  EXPECT_EQ(state, Ok("find " + fresh.mnt() + " -type f | sort | xargs sha256sum"));
  // rsync --inplace onto the mount works too.
  Ok("head -c 300001 /dev/urandom > " + backup + "/models/2/layers/5");
  Ok("rsync -a --inplace " + backup + "/ " + fresh.mnt() + "/");
  Ok("cmp " + backup + "/models/2/layers/5 " + fresh.mnt() + "/models/2/layers/5");
}

TEST_F(ModelsE2E, ConcurrentReadersSeeOldOrNewNeverAMix) {
  const std::string layer = M() + "/models/2/layers/4";
  const size_t kSize = 4 << 20;
  std::string a(kSize, 'a'), b(kSize, 'b');
  auto outcome = OverwriteUnderReaders(layer, M() + "/models/2/layers/.4.tmp", a, b);
  EXPECT_EQ(outcome.failed_writes, 0);
  EXPECT_GT(outcome.reads, 0);
  EXPECT_EQ(outcome.mixed, 0) << "a reader saw bytes that are neither version";
  EXPECT_EQ(ReadAll(layer), a);
}

TEST_F(ModelsE2E, KillDuringWriteKeepsLastAcknowledgedVersion) {
  Ok("head -c 200000 /dev/urandom > " + dir_ + "/v1.bin");
  Ok("cp " + dir_ + "/v1.bin " + M() + "/models/2/layers/0");
  int versions = Versions("2", 0);
  // A writer that is in the middle of a layer (written, not closed) when the daemon dies.
  int fd = open((M() + "/models/2/layers/0").c_str(), O_WRONLY | O_TRUNC);
  ASSERT_GE(fd, 0);
  std::string junk(1 << 20, 'j');
  ASSERT_EQ(write(fd, junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
  mount_->Crash();
  close(fd);  // fails: the daemon is gone
  StartOrDie(*mount_);
  Ok("cmp " + dir_ + "/v1.bin " + M() + "/models/2/layers/0");
  EXPECT_EQ(Versions("2", 0), versions);
  EXPECT_EQ(Ok("ls " + mount_->data() + "/models/staging | wc -l"), "0\n");
}

TEST_F(ModelsE2E, ReadOnlyMountRejectsWrites) {
  mount_->Stop();
  StartOrDie(*mount_, "-o ro");
  auto r = Sh("echo x > " + M() + "/models/1/layers/0");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("Read-only"), std::string::npos) << r.out;
  EXPECT_NE(Sh("mkdir " + M() + "/models/50").code, 0);
  Ok("cat " + M() + "/models/1/layers/0 > /dev/null");
}

TEST_F(ModelsE2E, UmountMakesEverythingDurableAndRemountShowsIt) {
  Ok("head -c 123456 /dev/urandom > " + dir_ + "/x.bin");
  Ok("cp " + dir_ + "/x.bin " + M() + "/models/1/layers/2");
  ASSERT_EQ(mount_->Stop().code, 0);
  EXPECT_NE(Sh("mountpoint -q " + M()).code, 0);
  StartOrDie(*mount_);
  Ok("cmp " + dir_ + "/x.bin " + M() + "/models/1/layers/2");
}

TEST_F(ModelsE2E, SigtermUnmountsCleanlyAndKeepsEveryAcknowledgedWrite) {
  Ok("head -c 77777 /dev/urandom > " + dir_ + "/t.bin");
  Ok("cp " + dir_ + "/t.bin " + M() + "/models/1/layers/2");
  ASSERT_TRUE(mount_->SignalAndWait(SIGTERM));
  EXPECT_NE(Sh("grep -q ' " + M() + " ' /proc/mounts").code, 0) << "the daemon left its mount behind";
  StartOrDie(*mount_);
  Ok("cmp " + dir_ + "/t.bin " + M() + "/models/1/layers/2");
  ASSERT_TRUE(mount_->SignalAndWait(SIGINT));
  StartOrDie(*mount_);
  Ok("cmp " + dir_ + "/t.bin " + M() + "/models/1/layers/2");
}

TEST_F(ModelsE2E, AllowOtherChecksPermissionsInTheKernel) {
  mount_->Stop();
  StartOrDie(*mount_, "-o allow_other");
  Ok("chmod 755 " + dir_);  // mkdtemp made it 0700: others could not even reach the mount point
  const std::string as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups ";
  // Others may read (0644 files, 0755 folders) ...
  Ok(as_nobody + "cat " + M() + "/models/1/meta");
  // ... but not write: files belong to the mounting user.
  auto r = Sh(as_nobody + "sh -c 'echo x > " + M() + "/models/1/layers/0'");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("Permission denied"), std::string::npos) << r.out;
  EXPECT_EQ(Versions("1", 0), 2);
}

TEST_F(ModelsE2E, InodeTableStaysBoundedUnderFind) {
  auto inodes = [&] {
    return atol(Ok("getfattr --only-values -n user.modelfs.inodes " + M() + " 2>/dev/null").c_str());
  };
  Ok("mkdir " + M() + "/models/20");
  Ok("cd " + M() + "/models/20/layers && for i in $(seq 0 1999); do printf x > $i; done");
  Ok("find " + M() + " > /dev/null");
  long after_walk = inodes();
  EXPECT_GT(after_walk, 2000) << "the walk made the kernel look up every file";
  // When the kernel lets go of its inodes (memory pressure; here: drop_caches), so does the daemon.
  Ok("sync && echo 2 > /proc/sys/vm/drop_caches");
  long after_drop = 0;
  for (int i = 0; i < 100 && (after_drop = inodes()) > 100; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_LT(after_drop, 100) << "forgotten inodes must leave the table";
  EXPECT_EQ(Ok("find " + M() + "/models/20 -type f | wc -l"), "4001\n");
}

}  // namespace
}  // namespace modelfs::e2e
