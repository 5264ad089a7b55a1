// End-to-end harness: a real modelfs daemon on a real FUSE mount in a temp dir, driven by real
// programs. The fixture always unmounts (TearDown, and a kill of the daemon if unmount fails), so a
// failing test never leaves a mount behind. Without /dev/fuse the tests skip loudly, unless
// MODELFS_REQUIRE_FUSE=1 (CI), where that is a failure.
#pragma once

#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace modelfs::e2e {

struct ShResult {
  int code = -1;
  std::string out;  // stdout and stderr
};

// Runs a bash command, capturing stdout+stderr.
inline ShResult Sh(const std::string& cmd) {
  ShResult r;
  std::string full = "bash -c '" ;
  for (char c : cmd) full += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  full += "' 2>&1";
  FILE* p = popen(full.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

inline std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string Bin() { return MODELFS_BIN; }

// Writes `first`, then overwrites `path` 20 times with `a` and `b` alternately (half through a
// temporary file renamed onto it, half in place with O_TRUNC) while 3 threads read it whole.
struct OverwriteOutcome {
  int reads = 0;
  int mixed = 0;        // reads that returned neither a nor b
  int failed_writes = 0;
};
inline OverwriteOutcome OverwriteUnderReaders(const std::string& path, const std::string& tmp,
                                              const std::string& a, const std::string& b) {
  auto write_via_rename = [&](const std::string& bytes) {
    std::ofstream(tmp, std::ios::binary).write(bytes.data(), bytes.size());
    return rename(tmp.c_str(), path.c_str()) == 0;
  };
  auto write_in_place = [&](const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), bytes.size());
    out.close();
    return !out.fail();
  };
  OverwriteOutcome out;
  if (!write_via_rename(a)) out.failed_writes++;
  std::atomic<bool> stop{false};
  std::atomic<int> reads{0}, mixed{0};
  std::vector<std::thread> readers;
  for (int i = 0; i < 3; ++i) {
    readers.emplace_back([&] {
      while (!stop) {
        std::string got = ReadAll(path);
        reads++;
        if (got != a && got != b) mixed++;
      }
    });
  }
  for (int i = 0; i < 20; ++i) {
    const std::string& next = i % 2 ? a : b;
    if (!(i % 4 < 2 ? write_via_rename(next) : write_in_place(next))) out.failed_writes++;
  }
  stop = true;
  for (auto& t : readers) t.join();
  out.reads = reads;
  out.mixed = mixed;
  return out;
}

class Mount {
 public:
  // data: the store's directory; mnt: an empty folder.
  Mount(std::string data, std::string mnt) : data_(std::move(data)), mnt_(std::move(mnt)) {}
  ~Mount() { Stop(); }

  ShResult Start(const std::string& extra = "") {
    mkdir(mnt_.c_str(), 0755);
    auto r = Sh(Bin() + " mount --data " + data_ + " " + mnt_ + " " + extra);
    if (r.code == 0) mounted_ = true;
    return r;
  }
  pid_t Pid() const { return atoi(ReadAll(data_ + "/daemon.pid").c_str()); }
  // Clean unmount through the CLI (waits for the daemon to sync and exit).
  ShResult Stop() {
    if (!mounted_) return {0, ""};
    pid_t pid = Pid();
    auto r = Sh(Bin() + " umount " + mnt_);
    if (r.code != 0) {
      Sh("fusermount3 -uz " + mnt_);
      if (pid > 0) kill(pid, SIGKILL);
    }
    mounted_ = false;
    return r;
  }
  // Simulates a crash: SIGKILL, then clear the dead mount.
  void Crash() {
    pid_t pid = Pid();
    if (pid > 0) kill(pid, SIGKILL);
    WaitForExit();
    Sh("fusermount3 -uz " + mnt_);
    mounted_ = false;
  }
  // Waits until no process holds the data directory's lock (the daemon has exited; a zombie that is
  // not reaped yet still answers kill(pid, 0), so that is no test).
  bool WaitForExit() {
    int fd = open((data_ + "/lock").c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return true;
    bool free = false;
    for (int i = 0; i < 3000 && !(free = flock(fd, LOCK_EX | LOCK_NB) == 0); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    close(fd);
    return free;
  }
  // Sends a signal to the daemon and waits for it to exit (it unmounts itself on SIGTERM/SIGINT).
  bool SignalAndWait(int sig) {
    pid_t pid = Pid();
    if (pid <= 0 || kill(pid, sig) != 0) return false;
    if (!WaitForExit()) return false;
    mounted_ = false;
    return true;
  }
  const std::string& mnt() const { return mnt_; }
  const std::string& data() const { return data_; }
  std::string Log() const { return ReadAll(data_ + "/modelfs.log"); }

 private:
  std::string data_, mnt_;
  bool mounted_ = false;
};

class MountTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/dev/fuse", R_OK | W_OK) != 0) {
      const char* req = getenv("MODELFS_REQUIRE_FUSE");
      if (req != nullptr && std::string(req) == "1") {
        FAIL() << "/dev/fuse is not usable and MODELFS_REQUIRE_FUSE=1";
      }
      GTEST_SKIP() << "*** SKIPPING END-TO-END TEST: /dev/fuse is not usable here ***";
    }
    char tmpl[] = "/tmp/modelfs-e2e-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    mount_ = std::make_unique<Mount>(dir_ + "/data", dir_ + "/mnt");
  }
  void TearDown() override {
    for (auto& m : extra_) m->Stop();
    if (mount_) mount_->Stop();
    if (!dir_.empty()) Sh("rm -rf " + dir_);
  }
  // A second store and mount in the same temp dir (restores).
  Mount& Another(const std::string& name) {
    extra_.push_back(std::make_unique<Mount>(dir_ + "/" + name + "-data", dir_ + "/" + name + "-mnt"));
    return *extra_.back();
  }
  void StartOrDie(Mount& m, const std::string& extra = "") {
    auto r = m.Start(extra);
    ASSERT_EQ(r.code, 0) << r.out;
  }
  // Asserts that a shell command succeeds, showing its output otherwise.
  std::string Ok(const std::string& cmd) {
    auto r = Sh(cmd);
    EXPECT_EQ(r.code, 0) << cmd << "\n" << r.out;
    return r.out;
  }
  std::string M() const { return mount_->mnt(); }

  std::string dir_;
  std::unique_ptr<Mount> mount_;
  std::vector<std::unique_ptr<Mount>> extra_;
};

}  // namespace modelfs::e2e
