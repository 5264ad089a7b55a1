// /embeddings through a real mount: the seed's own reader, cp, rsync, stat, bad input, snapshots.
#include <fcntl.h>

#include "tests/e2e/mount_fixture.h"

namespace modelfs::e2e {
namespace {

constexpr char kPy[] = "/usr/bin/python3";

std::string Script(const std::string& name) { return std::string(MODELFS_SOURCE_DIR) + "/tests/e2e/" + name; }

class EmbeddingsE2E : public MountTest {
 protected:
  void SetUp() override {
    MountTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    const std::string cli = Bin() + " embeddings --data " + mount_->data() + " ";
    Ok("mkdir -p " + mount_->data());
    Ok("printf '0 4 adam random_normal(stddev=0.1)\\n3 2 sgd ones\\n' | " + cli + "configure -");
    Ok(cli + "train 0 100 --steps 3");
    Ok(cli + "train 3 50 --steps 1 --first-key 1000");
    StartOrDie(*mount_);
  }
  std::string E() const { return M() + "/embeddings"; }
  std::string Sha(const std::string& path) { return Ok("sha256sum < " + path); }
};

TEST_F(EmbeddingsE2E, ViewsAreListedAndStatSizesAreTrue) {
  EXPECT_EQ(Ok("ls " + E()), "checkpoint\ndump\ngroup\ngroups\n");
  EXPECT_EQ(Ok("ls " + E() + "/group"), "0\n3\n");
  for (const char* view : {"checkpoint", "dump", "group/0", "group/3", "groups", "dump@min_count=2",
                           "dump@group=3", "group/0@min_count=3,expire_days=1", "dump@expire_days=0"}) {
    std::string p = E() + "/" + view;
    EXPECT_EQ(Ok("stat -c %s " + p), Ok("cat " + p + " | wc -c")) << view;
  }
  // dump: header (256 dims, 256 counts) + records of key, group, weights.
  EXPECT_EQ(Ok("stat -c %s " + E() + "/dump"),
            std::to_string(256 * 4 + 256 * 8 + 100 * (8 + 4 + 4 * 4) + 50 * (8 + 4 + 2 * 4)) + "\n");
  EXPECT_EQ(Ok("cat " + E() + "/groups | grep -v '^#'"), "0 4 adam random_normal(stddev=0.1)\n3 2 sgd ones\n");
}

TEST_F(EmbeddingsE2E, TheSeedsReaderParsesDumpAndGroups) {
  std::string out = Ok(std::string(kPy) + " " + Script("damo_extract_weights.py") + " " + E() + "/dump | tail -1");
  EXPECT_EQ(out, "SUMMARY [(0, 100), (3, 50)] COUNTS_OK True\n");
  out = Ok(std::string(kPy) + " " + Script("damo_extract_weights.py") + " " + E() + "/group/3 | tail -1");
  EXPECT_EQ(out, "SUMMARY [(3, 50)] COUNTS_OK True\n");
  // Conditions: group 3 keys were updated once, group 0 keys three times.
  out = Ok(std::string(kPy) + " " + Script("damo_extract_weights.py") + " '" + E() + "/dump@min_count=2' | tail -1");
  EXPECT_EQ(out, "SUMMARY [(0, 100)] COUNTS_OK True\n");
  // The checkpoint's values hold the same keys, counters and weights.
  const std::string ckpt = std::string(kPy) + " " + Script("checkpoint_weights.py") + " " + E() + "/checkpoint";
  EXPECT_EQ(Ok(ckpt + " | awk '$1==3' | wc -l"), "50\n");
  EXPECT_EQ(Ok(ckpt + " | awk '$1==0 && $3==3' | wc -l"), "100\n") << "group 0 keys were updated 3 times";
  // sgd from the ones initializer after one step: every weight moved away from 1.
  EXPECT_EQ(Ok(ckpt + " | awk '$1==3 && ($4==\"1.0\" || $5==\"1.0\")' | wc -l"), "0\n");
}

TEST_F(EmbeddingsE2E, CheckpointCopiedIntoAFreshMountReproducesTheStore) {
  Mount& fresh = Another("fresh");
  StartOrDie(fresh);
  Ok("cp " + E() + "/checkpoint " + fresh.mnt() + "/embeddings/checkpoint");
  Ok("cmp " + E() + "/checkpoint " + fresh.mnt() + "/embeddings/checkpoint");
  Ok("cmp " + E() + "/dump " + fresh.mnt() + "/embeddings/dump");
}

TEST_F(EmbeddingsE2E, RsyncBackupAndRestoreIntoAnEmptyStore) {
  const std::string backup = dir_ + "/backup";
  Ok("rsync -a " + E() + "/ " + backup + "/");
  Ok("diff -r " + E() + " " + backup);
  Mount& fresh = Another("restore");
  StartOrDie(fresh);
  Ok("rsync -a " + backup + "/ " + fresh.mnt() + "/embeddings/");
  Ok("diff -r " + backup + " " + fresh.mnt() + "/embeddings");
  std::string state = Sha(fresh.mnt() + "/embeddings/checkpoint") + Sha(fresh.mnt() + "/embeddings/groups");
  Ok("rsync -a " + backup + "/ " + fresh.mnt() + "/embeddings/");
  EXPECT_EQ(state, Sha(fresh.mnt() + "/embeddings/checkpoint") + Sha(fresh.mnt() + "/embeddings/groups"))
      << "a second restore changes nothing";
}

TEST_F(EmbeddingsE2E, BadInputIsRejectedAndChangesNothing) {
  std::string before = Sha(E() + "/checkpoint") + Sha(E() + "/groups");
  Ok("head -c 100 " + E() + "/checkpoint > " + dir_ + "/truncated");
  auto r = Sh("cp " + dir_ + "/truncated " + E() + "/checkpoint");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("Invalid argument"), std::string::npos) << r.out;
  Ok("head -c 5000 /dev/urandom > " + dir_ + "/noise");
  r = Sh("cp " + dir_ + "/noise " + E() + "/dump");
  EXPECT_NE(r.out.find("Invalid argument"), std::string::npos) << r.out;
  // (cp, not the shell's `>`: bash does not report an error from close.)
  Ok("echo '0 8 adam zeros' > " + dir_ + "/g1 && echo '9 4 nosuchopt zeros' > " + dir_ + "/g2");
  r = Sh("cp " + dir_ + "/g1 " + E() + "/groups");
  EXPECT_NE(r.out.find("Invalid argument"), std::string::npos) << "group 0 has keys of dim 4: " << r.out;
  r = Sh("cp " + dir_ + "/g2 " + E() + "/groups");
  EXPECT_NE(r.out.find("Invalid argument"), std::string::npos) << r.out;
  // A good line followed by a bad one: neither is applied.
  Ok("printf '8 4 sgd zeros\\n9 4 nosuchopt zeros\\n' > " + dir_ + "/g3");
  r = Sh("cp " + dir_ + "/g3 " + E() + "/groups");
  EXPECT_NE(r.out.find("Invalid argument"), std::string::npos) << r.out;
  EXPECT_EQ(Ok("ls " + E() + "/group"), "0\n3\n") << "group 8 must not be configured";
  r = Sh("cp " + E() + "/dump '" + E() + "/dump@min_count=1'");
  EXPECT_NE(r.code, 0);
  // A view cannot go away: rm of one succeeds (tar -x unlinks before it creates) and changes nothing.
  Ok("rm " + E() + "/checkpoint");
  EXPECT_EQ(before, Sha(E() + "/checkpoint") + Sha(E() + "/groups"));
  EXPECT_NE(mount_->Log().find("embeddings"), std::string::npos);
}

TEST_F(EmbeddingsE2E, WritingGroupsAndDumpsChangesTheStore) {
  Ok("(cat " + E() + "/groups; echo '7 3 adagrad zeros') > " + dir_ + "/groups.txt");
  Ok("cp " + dir_ + "/groups.txt " + E() + "/groups");
  EXPECT_EQ(Ok("ls " + E() + "/group"), "0\n3\n7\n");
  // Every view follows a change made through another one (no stale sizes from the kernel's cache).
  std::string g3_size = Ok("stat -c %s " + E() + "/group/3 '" + E() + "/dump@group=3'");
  Mount& other = Another("small");
  StartOrDie(other);
  Ok("printf '3 2 sgd ones\\n' > " + dir_ + "/g3.txt && cp " + dir_ + "/g3.txt " + other.mnt() + "/embeddings/groups");
  Ok("cp " + other.mnt() + "/embeddings/checkpoint " + E() + "/checkpoint");
  // The configuration survives a checkpoint load (it is not part of damo's format); the data does not.
  EXPECT_EQ(Ok("ls " + E() + "/group"), "0\n3\n7\n");
  EXPECT_EQ(Ok("stat -c %s " + E() + "/group/0"), std::to_string(256 * 4 + 256 * 8) + "\n");
  EXPECT_EQ(Ok("stat -c %s " + E() + "/group/3 '" + E() + "/dump@group=3'"),
            Ok("cat " + E() + "/group/3 | wc -c; cat '" + E() + "/dump@group=3' | wc -c"));
  EXPECT_NE(Ok("stat -c %s " + E() + "/group/3 '" + E() + "/dump@group=3'"), g3_size);
  // Writing a group's own dump back changes nothing; writing another store's dump upserts it.
  std::string before = Sha(E() + "/checkpoint");
  Ok("cp " + E() + "/group/3 " + dir_ + "/g3 && cp " + dir_ + "/g3 " + E() + "/group/3");
  EXPECT_EQ(before, Sha(E() + "/checkpoint"));
}

TEST_F(EmbeddingsE2E, AnOpenDumpKeepsItsSnapshot) {
  const std::string ckpt = E() + "/checkpoint";
  std::string original = ReadAll(ckpt);
  int fd = open(ckpt.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::string head(100, '\0');
  ASSERT_EQ(read(fd, head.data(), head.size()), 100);
  // Change the store under the open file: replace it with a checkpoint of one group only.
  Mount& other = Another("other");
  StartOrDie(other);
  Ok("printf '5 2 sgd ones\\n' > " + other.mnt() + "/embeddings/groups");
  Ok("cp " + E() + "/group/3 " + other.mnt() + "/embeddings/group/3 || true");
  Ok("cp " + other.mnt() + "/embeddings/checkpoint " + ckpt);
  EXPECT_NE(Sha(ckpt), Ok("printf '%s' '' | sha256sum")) ;
  std::string rest;
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) rest.append(buf, n);
  close(fd);
  EXPECT_EQ(head + rest, original) << "a reader opened before the change reads the old snapshot whole";
  EXPECT_NE(ReadAll(ckpt), original);
}

TEST_F(EmbeddingsE2E, TheTtlIsRememberedByTheStore) {
  mount_->Stop();
  StartOrDie(*mount_, "-o embeddings_ttl=864000");
  std::string before = Sha(E() + "/checkpoint");
  mount_->Stop();
  EXPECT_EQ(ReadAll(mount_->data() + "/embeddings.ttl"), "864000\n");
  std::string current = ReadAll(mount_->data() + "/embeddings/CURRENT_DB");
  EXPECT_NE(current.find("ttl"), std::string::npos) << current;
  // A command without --ttl opens the store as it is (no conversion to a TTL-less database).
  Ok(Bin() + " embeddings --data " + mount_->data() + " stats");
  EXPECT_EQ(ReadAll(mount_->data() + "/embeddings/CURRENT_DB"), current);
  StartOrDie(*mount_);
  EXPECT_EQ(ReadAll(mount_->data() + "/embeddings/CURRENT_DB"), current);
  EXPECT_EQ(before, Sha(E() + "/checkpoint"));
}

}  // namespace
}  // namespace modelfs::e2e
