// kill -9 of the daemon under write load, again and again: the mount never wedges (modelfs umount
// and a new modelfs mount recover it by themselves, saying so), the writers get errors instead of
// hanging, and every write whose close succeeded is there, whole, after the remount.
// MODELFS_CRASH_ROUNDS sets the rounds (CI: 4; the "long" label runs 25).
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <thread>

#include "tests/e2e/mount_fixture.h"

namespace modelfs::e2e {
namespace {

constexpr int kWorkers = 3;

pid_t Spawn(const std::vector<std::string>& argv) {
  pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

// Waits for pid to exit within `limit`; false (and kills it) if it did not: it is stuck on the mount.
bool Reap(pid_t pid, std::chrono::seconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return false;
}

class CrashE2E : public MountTest {};

TEST_F(CrashE2E, KillUnderWriteLoadNeverWedgesAndKeepsWhatCloseAcknowledged) {
  const char* env = getenv("MODELFS_CRASH_ROUNDS");
  const int rounds = env != nullptr ? atoi(env) : 4;
  StartOrDie(*mount_);
  Ok("mkdir -p " + dir_ + "/acks");
  for (int w = 1; w <= kWorkers; ++w) Ok("mkdir -p " + M() + "/models/" + std::to_string(w + 1));
  const std::string script = std::string(MODELFS_SOURCE_DIR) + "/tests/e2e/crash_writer.py";
  std::mt19937 rng(12345);
  for (int round = 0; round < rounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    std::vector<pid_t> writers;
    for (int w = 1; w <= kWorkers; ++w) {
      writers.push_back(Spawn({"/usr/bin/python3", script, M(), dir_ + "/acks/" + std::to_string(w),
                               std::to_string(w)}));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 700));
    const pid_t daemon = mount_->Pid();
    ASSERT_GT(daemon, 0);
    ASSERT_EQ(kill(daemon, SIGKILL), 0);
    // Recovery, alternately by umount and by mounting again over the dead mount.
    ShResult r;
    if (round % 2 == 0) {
      r = Sh("timeout 60 " + Bin() + " umount " + M());
      EXPECT_EQ(r.code, 0) << r.out;
      EXPECT_NE(r.out.find("had died"), std::string::npos) << r.out;
      r = Sh("timeout 60 " + Bin() + " mount --data " + mount_->data() + " " + M());
      EXPECT_EQ(r.code, 0) << r.out;
    } else {
      r = Sh("timeout 60 " + Bin() + " mount --data " + mount_->data() + " " + M());
      EXPECT_EQ(r.code, 0) << r.out;
      EXPECT_NE(r.out.find("had died"), std::string::npos) << r.out;
    }
    for (pid_t w : writers) EXPECT_TRUE(Reap(w, std::chrono::seconds(20))) << "a writer is stuck on the mount";
    if (HasFailure()) break;
    // Every acknowledged write is there, whole.
    auto check = Sh("cat " + dir_ + "/acks/* | awk '{print $2\"  \"$1}' > " + dir_ + "/acked.sha256 && "
                    "wc -l < " + dir_ + "/acked.sha256 && cd " + M() + " && sha256sum --quiet -c " + dir_ +
                    "/acked.sha256");
    EXPECT_EQ(check.code, 0) << check.out;
    EXPECT_GT(atoi(check.out.c_str()), 0) << "no write was acknowledged before the kill";
    EXPECT_EQ(Ok("ls " + M() + "/timeseries > /dev/null && echo fine"), "fine\n");
  }
}

}  // namespace
}  // namespace modelfs::e2e
