// /timeseries through a real mount, driven by numpy (tofile/fromfile), cp, cmp, ls, find, rsync, rm,
// getfattr and the modelfs CLI.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "stores/timeseries/timeseries_store.h"
#include "tests/e2e/mount_fixture.h"

namespace modelfs::e2e {
namespace {

constexpr char kPy[] = "/usr/bin/python3";  // Debian's, with python3-numpy

class TimeseriesE2E : public MountTest {
 protected:
  void SetUp() override {
    MountTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    Ok(Bin() + " demo --data " + mount_->data());
    StartOrDie(*mount_);
  }
  std::string T() const { return M() + "/timeseries"; }
  // Runs a python3 script (numpy imported as np), asserting success; returns its output.
  std::string Py(const std::string& script) {
    const std::string path = dir_ + "/script.py";
    std::ofstream(path) << "import os, sys\nimport numpy as np\n" << script;
    return Ok(std::string(kPy) + " " + path);
  }
  // A local file of 2×n float64 whose bytes depend on seed.
  std::string Series(const std::string& name, int n, int seed) {
    std::string path = dir_ + "/" + name;
    Py("t = np.arange(" + std::to_string(n) + ", dtype='<f8')\n"
       "v = np.sin(t * 0.01 + " + std::to_string(seed) + ")\n"
       "np.concatenate([t, v]).astype('<f8').tofile('" + path + "')\n");
    return path;
  }
};

TEST_F(TimeseriesE2E, DemoSeriesAreFilesNumpyLoads) {
  EXPECT_EQ(Ok("ls " + T()), "damped\ntemperature\n");
  std::string out = Py("a = np.fromfile('" + T() + "/temperature').reshape(2, -1)\n"
                       "print(a.shape[1], a[0][0], a[0][-1], round(float(a[1].max()), 6))\n");
  EXPECT_EQ(out, "168 0.0 167.0 18.0\n");
  EXPECT_EQ(Ok("stat -c %s " + T() + "/temperature"), std::to_string(168 * 16) + "\n");
  EXPECT_EQ(Ok("getfattr --absolute-names --only-values -n user.modelfs.size " + T() + "/temperature"), "168");
  EXPECT_EQ(Ok("getfattr --absolute-names --only-values -n user.modelfs.count " + T()), "2");
}

TEST_F(TimeseriesE2E, NumpyTofileFromfileRoundTripsEveryBitPattern) {
  // NaNs with payloads and sign, infinities, signed zeros, subnormals, extremes: all as bit patterns.
  std::string out = Py(
      "bits = np.array([0x7ff8000000000001, 0xfff0000000000abc, 0x7ff0000000000000,\n"
      "                 0xfff0000000000000, 0x8000000000000000, 0x0000000000000000,\n"
      "                 0x0000000000000001, 0x800fffffffffffff, 0x7fefffffffffffff,\n"
      "                 0x3ff0000000000000], dtype='<u8')\n"
      "vals = bits.view('<f8')\n"
      "times = np.linspace(-1e300, 1e300, len(vals))\n"
      "a = np.stack([times, vals])\n"
      "a.tofile('" + T() + "/edge cases')\n"
      "b = np.fromfile('" + T() + "/edge cases').reshape(2, -1)\n"
      "assert b.view('<u8').tobytes() == a.view('<u8').tobytes(), 'bits changed'\n"
      "print(os.stat('" + T() + "/edge cases').st_size // 16,\n"
      "      os.getxattr('" + T() + "/edge cases', 'user.modelfs.size').decode())\n");
  EXPECT_EQ(out, "10 10\n");
  // The same bits after a remount (they came from the store, not from a cache).
  mount_->Stop();
  StartOrDie(*mount_);
  Py("b = np.fromfile('" + T() + "/edge cases').reshape(2, -1)\n"
     "assert b[1].view('<u8')[0] == 0x7ff8000000000001\n"
     "assert b[1].view('<u8')[4] == 0x8000000000000000\n"
     "assert b[1].view('<u8')[6] == 1\n");
}

TEST_F(TimeseriesE2E, CpCmpOverwriteAndIdenticalRewriteKeepsMtime) {
  std::string a = Series("a.bin", 5000, 1), b = Series("b.bin", 7000, 2);
  Ok("cp " + a + " " + T() + "/s1");
  Ok("cmp " + a + " " + T() + "/s1");
  Ok("cp " + b + " " + T() + "/s1");
  Ok("cmp " + b + " " + T() + "/s1");
  EXPECT_EQ(Ok("getfattr --absolute-names --only-values -n user.modelfs.size " + T() + "/s1"), "7000");
  std::string mtime = Ok("stat -c %y " + T() + "/s1");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  // The same bytes again change nothing, so rsync and make see an unchanged file.
  Ok("cp " + b + " " + T() + "/s1");
  EXPECT_EQ(Ok("stat -c %y " + T() + "/s1"), mtime);
  // cp -p carries the time.
  Ok("touch -d '2021-03-04 05:06:07' " + a + " && cp -p " + a + " " + T() + "/s2");
  EXPECT_EQ(Ok("stat -c %Y " + T() + "/s2"), Ok("stat -c %Y " + a));
  Ok("cat " + T() + "/s2 | cmp - " + a);
}

TEST_F(TimeseriesE2E, BadInputGetsEinvalAndChangesNothing) {
  std::string good = Series("good.bin", 100, 3);
  Ok("cp " + good + " " + T() + "/keep");
  std::string before = Ok("ls -l --time-style=full-iso " + T() + "; sha256sum " + T() + "/*");
  Ok("head -c 17 /dev/urandom > " + dir_ + "/odd.bin");
  auto r = Sh("cp " + dir_ + "/odd.bin " + T() + "/odd");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("Invalid argument"), std::string::npos) << r.out;
  r = Sh("cp " + dir_ + "/odd.bin " + T() + "/keep");  // a bad overwrite keeps the old series
  EXPECT_NE(r.out.find("Invalid argument"), std::string::npos) << r.out;
  r = Sh("cp " + good + " " + T() + "/$'bad\\nname'");
  EXPECT_NE(r.out.find("Invalid argument"), std::string::npos) << r.out;
  r = Sh("cp " + good + " " + T() + "/" + std::string(300, 'x'));
  EXPECT_NE(r.out.find("too long"), std::string::npos) << r.out;
  r = Sh("mkdir " + T() + "/folder");
  EXPECT_NE(r.code, 0);
  r = Sh("rm " + T() + "/missing");
  EXPECT_NE(r.out.find("No such file"), std::string::npos) << r.out;
  // A temporary (dot) name that is never renamed leaves nothing in the store.
  Ok("cp " + good + " " + T() + "/.scratch && rm " + T() + "/.scratch");
  EXPECT_EQ(before, Ok("ls -l --time-style=full-iso " + T() + "; sha256sum " + T() + "/*"));
  std::string log = mount_->Log();
  EXPECT_NE(log.find("is 17 bytes, not a multiple of 16"), std::string::npos) << log;
  // Nothing stored survives a remount either (the store itself, not only the kernel's view).
  mount_->Stop();
  StartOrDie(*mount_);
  EXPECT_EQ(before, Ok("ls -l --time-style=full-iso " + T() + "; sha256sum " + T() + "/*"));
  EXPECT_EQ(Ok("ls " + mount_->data() + "/timeseries/staging | wc -l"), "0\n");
}

TEST_F(TimeseriesE2E, RmDeletesAndListingsFollow) {
  // The folder's mtime moves only when its listing changes (the kernel keeps the listing until then).
  std::string folder_time = Ok("stat -c %.9Y " + T());
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // past the folder's attribute timeout
  EXPECT_EQ(Ok("stat -c %.9Y " + T()), folder_time);
  Ok("cp " + Series("x.bin", 10, 4) + " " + T() + "/gone");
  EXPECT_NE(Ok("stat -c %.9Y " + T()), folder_time);
  EXPECT_EQ(Ok("ls " + T() + " | wc -l"), "3\n");
  Ok("rm " + T() + "/gone");
  EXPECT_EQ(Ok("ls " + T()), "damped\ntemperature\n");
  EXPECT_NE(Sh("cat " + T() + "/gone").code, 0);
  EXPECT_EQ(Ok("getfattr --absolute-names --only-values -n user.modelfs.count " + T()), "2");
}

TEST_F(TimeseriesE2E, HundredThousandSeriesListWithLsAndFind) {
  // Filled through the store library (the daemon's own code) before mounting, then listed through
  // the mount as a person would.
  mount_->Stop();
  {
    auto store = timeseries::TimeSeriesStore::Open(mount_->data() + "/timeseries");
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    std::vector<double> t(4), v(4);
    for (int i = 0; i < 100000; ++i) {
      t[0] = i;
      v[0] = -i;
      const size_t n = 1 + i % 4;
      auto r = (*store)->Store("s" + std::to_string(i), {t.data(), n}, {v.data(), n});
      ASSERT_TRUE(r.ok()) << r.status().ToString();
    }
  }
  StartOrDie(*mount_);
  EXPECT_EQ(Ok("ls -l " + T() + " | tail -n +2 | wc -l"), "100002\n");
  EXPECT_EQ(Ok("find " + T() + " -type f | wc -l"), "100002\n");
  // Sizes are exact: sum of 16·(1 + i % 4) over the 100,000, plus the two demo series.
  const long long expected = 16LL * (25000 * (1 + 2 + 3 + 4)) + 16 * (168 + 1000);
  EXPECT_EQ(Ok("find " + T() + " -type f -printf '%s\\n' | awk '{s+=$1} END {print s}'"),
            std::to_string(expected) + "\n");
  EXPECT_EQ(Ok("getfattr --absolute-names --only-values -n user.modelfs.count " + T()), "100002");
  Py("a = np.fromfile('" + T() + "/s99999').reshape(2, -1)\n"
     "assert a.shape == (2, 4) and a[0][0] == 99999 and a[1][0] == -99999, a\n");
}

TEST_F(TimeseriesE2E, RsyncBackupAndRestoreAreIdentityAndIdempotent) {
  Ok("cp " + Series("r1.bin", 3000, 5) + " " + T() + "/r1");
  Ok("cp " + Series("r2.bin", 1, 6) + " " + T() + "/r2");
  Ok(": > " + dir_ + "/empty && cp " + dir_ + "/empty " + T() + "/empty");
  const std::string backup = dir_ + "/backup";
  Ok("rsync -aX " + T() + "/ " + backup + "/");
  Ok("diff -r " + T() + " " + backup);
  std::string again = Ok("rsync -aXi " + T() + "/ " + backup + "/");
  EXPECT_EQ(again.find(">f"), std::string::npos) << again;

  Mount& fresh = Another("restore");
  StartOrDie(fresh);
  const std::string t2 = fresh.mnt() + "/timeseries";
  Ok("rsync -aX " + backup + "/ " + t2 + "/");
  Ok("diff -r " + backup + " " + t2);
  EXPECT_EQ(Ok("cd " + backup + " && find . -type f -printf '%p %s %T@\\n' | sort"),
            Ok("cd " + t2 + " && find . -type f -printf '%p %s %T@\\n' | sort"));
  std::string state = Ok("cd " + t2 + " && sha256sum * && stat -c '%n %s %Y' *");
  std::string restore_again = Ok("rsync -aXi " + backup + "/ " + t2 + "/");
  EXPECT_EQ(restore_again.find(">f"), std::string::npos) << restore_again;
  EXPECT_EQ(state, Ok("cd " + t2 + " && sha256sum * && stat -c '%n %s %Y' *"));
  // The restore is in the store: it survives a remount.
  fresh.Stop();
  StartOrDie(fresh);
  Ok("diff -r " + backup + " " + t2);
}

TEST_F(TimeseriesE2E, ConcurrentReadersDuringOverwriteSeeOldOrNew) {
  const std::string path = T() + "/hot";
  const size_t kSize = 2 << 20;  // 131072 points
  std::string a(kSize, '\0'), b(kSize, '\0');
  for (size_t i = 0; i < kSize / 8; ++i) {
    double x = static_cast<double>(i), y = -static_cast<double>(i);
    std::memcpy(&a[i * 8], &x, 8);
    std::memcpy(&b[i * 8], &y, 8);
  }
  auto outcome = OverwriteUnderReaders(path, T() + "/.hot.tmp", a, b);
  EXPECT_EQ(outcome.failed_writes, 0);
  EXPECT_GT(outcome.reads, 0);
  EXPECT_EQ(outcome.mixed, 0) << "a reader saw bytes that are neither version";
  EXPECT_EQ(ReadAll(path), a);
}

TEST_F(TimeseriesE2E, KillDuringWriteKeepsLastAcknowledgedSeries) {
  std::string v1 = Series("v1.bin", 20000, 7);
  Ok("cp " + v1 + " " + T() + "/k");
  int fd = open((T() + "/k").c_str(), O_WRONLY | O_TRUNC);
  ASSERT_GE(fd, 0);
  std::string junk(1 << 20, 'j');
  ASSERT_EQ(write(fd, junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
  mount_->Crash();
  close(fd);  // fails: the daemon is gone
  StartOrDie(*mount_);
  Ok("cmp " + v1 + " " + T() + "/k");
  EXPECT_EQ(Ok("ls " + mount_->data() + "/timeseries/staging | wc -l"), "0\n");
  // data/ holds exactly the indexed files: three series, three files.
  EXPECT_EQ(Ok("ls " + mount_->data() + "/timeseries/data | wc -l"), "3\n");
}

TEST_F(TimeseriesE2E, CliWorksOnTheSameStoreWithoutAMount) {
  std::string a = Series("cli.bin", 64, 8);
  Ok("cp " + a + " " + T() + "/via-mount");
  mount_->Stop();
  const std::string cli = Bin() + " timeseries --data " + mount_->data() + " ";
  EXPECT_EQ(Ok(cli + "size via-mount"), "64\n");
  EXPECT_EQ(Ok(cli + "list"), "damped\t1000\ntemperature\t168\nvia-mount\t64\n");
  Ok(cli + "get via-mount " + dir_ + "/out.bin && cmp " + a + " " + dir_ + "/out.bin");
  Ok(cli + "get via-mount | cmp - " + a);
  EXPECT_EQ(Ok(cli + "show via-mount | head -2"),
            Py("print('%.17g %.17g' % (0, np.sin(8.0)))\n"
               "print('%.17g %.17g' % (1, np.sin(np.float64(1) * 0.01 + 8)))\n"));
  EXPECT_EQ(Ok(cli + "put --id named " + a), "named\n");
  std::string generated = Ok("cat " + a + " | " + cli + "put -");
  EXPECT_EQ(generated.size(), 37u) << generated;  // a UUID and a newline
  Ok("head -c 33 /dev/zero > " + dir_ + "/odd.bin");
  auto r = Sh(cli + "put --id odd " + dir_ + "/odd.bin");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("not a multiple of 16"), std::string::npos) << r.out;
  Ok(cli + "rm via-mount");
  EXPECT_NE(Sh(cli + "size via-mount").code, 0);
  StartOrDie(*mount_);
  generated.pop_back();
  std::vector<std::string> want = {"damped", generated, "named", "temperature"};
  std::sort(want.begin(), want.end());
  std::string listing;
  for (const auto& w : want) listing += w + "\n";
  EXPECT_EQ(Ok("ls " + T() + " | LC_ALL=C sort"), listing);
  Ok("cmp " + a + " " + T() + "/" + generated);
}

}  // namespace
}  // namespace modelfs::e2e
