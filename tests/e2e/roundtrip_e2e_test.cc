// Backups and restores of the whole demo tree with the tools people use: tar -c / tar -xp, cp -a, and
// rsync -aX --delete (also into a populated store), each into a fresh mount. Identical content
// (diff -r), history versions and their times kept, exit 0, and a second rsync itemizes nothing.
#include <chrono>
#include <thread>

#include "tests/e2e/mount_fixture.h"

namespace modelfs::e2e {
namespace {

class RoundTripE2E : public MountTest {
 protected:
  void SetUp() override {
    MountTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    Ok(Bin() + " demo --data " + mount_->data());
    StartOrDie(*mount_);
  }
  // Every history file with its mtime, for comparing two trees.
  std::string History(const std::string& mnt) {
    return Ok("cd " + mnt + "/models && find . -path '*/history/*' -type f -printf '%p %TY-%Tm-%Td %TT\\n' | sort");
  }
  void ExpectSameTree(const std::string& restored, const std::string& log = "") {
    auto d = Sh("diff -r " + M() + " " + restored);
    EXPECT_EQ(d.code, 0) << d.out << "\n--- restored daemon's log:\n" << log;
    EXPECT_EQ(History(M()), History(restored));
    EXPECT_NE(History(restored).find("history"), std::string::npos);
  }
};

TEST_F(RoundTripE2E, TarCreateAndExtractIntoAFreshMount) {
  // models/ keeps its time while nothing changes in it: no "file changed as we read it".
  Ok("tar -cf " + dir_ + "/b.tar -C " + M() + " .");
  Mount& fresh = Another("tar");
  StartOrDie(fresh);
  auto r = Sh("timeout 120 tar -xpf " + dir_ + "/b.tar -C " + fresh.mnt());
  EXPECT_EQ(r.code, 0) << r.out;
  ExpectSameTree(fresh.mnt(), fresh.Log());
  // Extracting again over what is there (tar unlinks each file, then writes it) changes nothing.
  r = Sh("timeout 120 tar -xpf " + dir_ + "/b.tar -C " + fresh.mnt());
  EXPECT_EQ(r.code, 0) << r.out;
  ExpectSameTree(fresh.mnt());
  EXPECT_EQ(Sh("grep -c 'error' " + fresh.data() + "/modelfs.log").out, "0\n") << fresh.Log();
}

TEST_F(RoundTripE2E, CpArchiveIntoAFreshMount) {
  // cp -a copies a folder's entries in the order of their inode numbers. On a busy disk a backup's
  // numbers may come out of creation order (freed inodes are reused); synapses need their neurons
  // first. A tmpfs numbers strictly in creation order, so the restore order is the mount's listing
  // order, which puts what is referred to first (README: restores).
  const std::string backup = dir_ + "/backup";
  Ok("mkdir " + backup + " && mount -t tmpfs -o size=256m modelfs-test " + backup);
  struct Unmount {
    std::string path;
    ~Unmount() { Sh("umount " + path); }
  } unmount{backup};
  Ok("cp -a " + M() + "/. " + backup);
  Mount& fresh = Another("cp");
  StartOrDie(fresh);
  auto r = Sh("timeout 120 cp -a " + backup + "/. " + fresh.mnt() + "/");
  EXPECT_EQ(r.code, 0) << r.out;
  ExpectSameTree(fresh.mnt());
  EXPECT_EQ(Sh("grep -c 'error' " + fresh.data() + "/modelfs.log").out, "0\n") << fresh.Log();
}

TEST_F(RoundTripE2E, RsyncBothWaysAndASecondRunChangesNothing) {
  Ok("rsync -aX " + M() + "/ " + dir_ + "/backup/");
  Mount& fresh = Another("rsync");
  StartOrDie(fresh);
  auto r = Sh("timeout 120 rsync -aX --delete " + dir_ + "/backup/ " + fresh.mnt() + "/");
  EXPECT_EQ(r.code, 0) << r.out;
  ExpectSameTree(fresh.mnt());
  EXPECT_EQ(Ok("rsync -aXi --delete " + dir_ + "/backup/ " + fresh.mnt() + "/"), "")
      << "a second restore changed something";
  EXPECT_EQ(Ok("rsync -aXi --delete " + M() + "/ " + dir_ + "/backup/"), "") << "a second backup copied something";
  // The restore survives a remount, and so do the folder times it set.
  ASSERT_EQ(fresh.Stop().code, 0);
  StartOrDie(fresh);
  EXPECT_EQ(Ok("rsync -aXi --delete " + dir_ + "/backup/ " + fresh.mnt() + "/"), "");
}

TEST_F(RoundTripE2E, RsyncDeleteIntoAPopulatedStore) {
  Ok("rsync -aX " + M() + "/ " + dir_ + "/backup/");
  Mount& other = Another("populated");
  // Other models, series, tensors, neurons, a second later: rsync -a tells files apart by size and
  // time (in seconds), and the demo makes files of the same sizes.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  Ok(Bin() + " demo --data " + other.data());
  StartOrDie(other);
  Ok("head -c 64 /dev/zero > " + other.mnt() + "/timeseries/extra");  // not in the backup: deleted
  auto r = Sh("timeout 120 rsync -aX --delete " + dir_ + "/backup/ " + other.mnt() + "/");
  EXPECT_EQ(r.code, 0) << r.out;
  auto d = Sh("diff -r " + M() + " " + other.mnt());
  EXPECT_EQ(d.code, 0) << d.out;
  EXPECT_EQ(Ok("rsync -aXi --delete " + dir_ + "/backup/ " + other.mnt() + "/"), "");
}

}  // namespace
}  // namespace modelfs::e2e
