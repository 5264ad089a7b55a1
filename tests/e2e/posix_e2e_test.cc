// What POSIX tools and suites probe beyond reads and writes: errnos that keep their meaning (a full
// disk is ENOSPC, a huge truncate EFBIG, mkfifo EPERM with a log line), nlink of an unlinked open file,
// ctime on truncate, mmap(MAP_SHARED) of a file open for writing (numpy.memmap r+), attributes of
// generated files right after the change that alters them, and what `modelfs mount` refuses.
#include <sys/stat.h>

#include "tests/e2e/mount_fixture.h"

namespace modelfs::e2e {
namespace {

constexpr char kPy[] = "/usr/bin/python3";

class PosixE2E : public MountTest {
 protected:
  void SetUp() override {
    MountTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    StartOrDie(*mount_);
    Ok("mkdir " + M() + "/models/1");  // layers/ comes with the model
  }
  std::string L(const std::string& n) { return M() + "/models/1/layers/" + n; }
  std::string Py(const std::string& code) {
    return Ok(std::string(kPy) + " -c '" + code + "'");
  }
};

TEST_F(PosixE2E, SpecialFilesHugeTruncatesAndHardLinksGetTheirErrnos) {
  auto r = Sh("mkfifo " + L("9"));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("Operation not permitted"), std::string::npos) << r.out;
  EXPECT_NE(mount_->Log().find("models/1/layers/9: special files"), std::string::npos) << mount_->Log();
  r = Sh("mknod " + L("8") + " c 1 3");
  EXPECT_NE(r.out.find("Operation not permitted"), std::string::npos) << r.out;
  Ok("printf x > " + L("0"));
  r = Sh("ln " + L("0") + " " + L("1"));
  EXPECT_NE(r.out.find("Operation not permitted"), std::string::npos) << r.out;
  r = Sh("truncate -s 999999999999984 " + L("0"));
  EXPECT_NE(r.out.find("File too large"), std::string::npos) << r.out;
  EXPECT_EQ(Ok("cat " + L("0")), "x");
}

TEST_F(PosixE2E, UnlinkedOpenFileHasNoLinksAndTruncateChangesCtime) {
  EXPECT_EQ(Py("import os\n"
               "p = \"" + L("5") + "\"\n"
               "fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)\n"
               "os.write(fd, b\"abc\")\n"
               "os.unlink(p)\n"
               "print(os.fstat(fd).st_nlink, os.path.exists(p))\n"
               "os.close(fd)\n"
               "print(os.path.exists(p))\n"),
            "0 False\nFalse\n");
  Ok("printf 0123456789 > " + L("6"));
  EXPECT_EQ(Py("import os, time\n"
               "p = \"" + L("6") + "\"\n"
               "before = os.stat(p).st_ctime_ns\n"
               "time.sleep(0.05)\n"
               "f = open(p, \"r+b\")\n"
               "f.truncate(4)\n"
               "after = os.fstat(f.fileno())\n"
               "f.close()\n"
               "print(after.st_size, after.st_ctime_ns > before, open(p, \"rb\").read())\n"),
            "4 True b'0123'\n");
}

TEST_F(PosixE2E, NumpyMemmapReadWriteOfALayer) {
  Ok(std::string(kPy) + " -c 'import numpy as np; np.arange(1000, dtype=np.float32).tofile(\"" + L("2") + "\")'");
  EXPECT_EQ(Py("import numpy as np\n"
               "m = np.memmap(\"" + L("2") + "\", dtype=np.float32, mode=\"r+\")\n"
               "m[10] = -1.5\n"
               "m.flush()\n"
               "del m\n"
               "a = np.fromfile(\"" + L("2") + "\", dtype=np.float32)\n"
               "print(a[10], a[11], a.size)\n"),
            "-1.5 11.0 1000\n");
  EXPECT_EQ(Ok("ls " + M() + "/models/1/history/2 | wc -l"), "2\n");
}

TEST_F(PosixE2E, AFullDataDiskIsEnospcAndChangesNothing) {
  Mount& small = Another("small");
  Ok("mkdir -p " + small.data() + " && mount -t tmpfs -o size=24m modelfs-small " + small.data());
  struct Unmount {  // the daemon first, then its disk, also when an assertion fails
    Mount& m;
    ~Unmount() {
      m.Stop();
      Sh("umount " + m.data());
    }
  } unmount{small};
  StartOrDie(small);
  Ok("mkdir " + small.mnt() + "/models/1 && printf keep > " +
     small.mnt() + "/models/1/layers/0");
  auto r = Sh("head -c 64M /dev/zero > " + dir_ + "/big && cp " + dir_ + "/big " + small.mnt() + "/models/1/layers/0");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("No space left on device"), std::string::npos) << r.out;
  EXPECT_EQ(Ok("cat " + small.mnt() + "/models/1/layers/0"), "keep");
  EXPECT_EQ(small.Stop().code, 0);
}

TEST_F(PosixE2E, GeneratedFilesStatExactlyRightAfterAChange) {
  const std::string a = "5f0b5c1e-0000-4000-8000-00000000000a", b = "5f0b5c1e-0000-4000-8000-00000000000b";
  const std::string s = "5f0b5c1e-0000-4000-8000-0000000000c1";
  const std::string exp = M() + "/neurons/graph/export.json";
  Ok("stat " + exp + " > /dev/null");  // the kernel now holds its attributes
  for (const auto& id : {a, b}) Ok("echo '{\"type\": \"knowledge\"}' > " + M() + "/neurons/" + id + ".json");
  EXPECT_EQ(Ok("stat -c %s " + exp), Ok("cat " + exp + " | wc -c")) << "wc -c trusts st_size";
  Ok("echo '{\"source_neuron_id\": \"" + a + "\", \"target_neuron_id\": \"" + b +
     "\", \"weight\": 0.5, \"synapse_type\": \"knowledge\"}' > " + M() + "/synapses/" + s + ".json");
  EXPECT_EQ(Ok("stat -c %s " + exp), Ok("cat " + exp + " | wc -c"));
  Ok("ls -lR " + M() + "/synapses > /dev/null");
  Ok("rm " + M() + "/neurons/" + a + ".json");
  EXPECT_NE(Sh("stat " + M() + "/synapses/" + s + ".json").code, 0) << "a cascaded removal shows at once";
  EXPECT_EQ(Ok("stat -c %s " + exp), Ok("cat " + exp + " | wc -c"));
}

TEST_F(PosixE2E, MountRefusesWhatWouldGoWrongAndRecognisesADeadMount) {
  auto r = Sh(Bin() + " mount --data " + dir_ + "/d2 " + dir_ + "/d2");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("overlap"), std::string::npos) << r.out;
  r = Sh(Bin() + " mount --data " + dir_ + "/d3 " + M());
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("already a modelfs mount"), std::string::npos) << r.out;
  Ok("mkdir " + dir_ + "/full && touch " + dir_ + "/full/x");
  r = Sh(Bin() + " mount --data " + dir_ + "/d4 " + dir_ + "/full");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("not empty"), std::string::npos) << r.out;
  r = Sh("mkdir " + dir_ + "/other && " + Bin() + " mount --data " + mount_->data() + " " + dir_ + "/other");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("in use by the modelfs daemon"), std::string::npos) << r.out;
  // A dead mount is named and cleared by the next mount.
  Ok("printf kept > " + L("3"));
  ASSERT_EQ(kill(mount_->Pid(), SIGKILL), 0);
  mount_->WaitForExit();
  EXPECT_NE(Sh("ls " + M()).code, 0);
  r = Sh(Bin() + " mount --data " + mount_->data() + " " + M());
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("had died"), std::string::npos) << r.out;
  EXPECT_EQ(Ok("cat " + L("3")), "kept");
}

}  // namespace
}  // namespace modelfs::e2e
