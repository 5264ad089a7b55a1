// The open-file semantics (SPEC §2, fs/core.h) on a real mount: every case of semantics.py over every
// writable folder, each on a fresh mount. A case drives the mount as programs do (shell redirections,
// fork, threads running subprocesses, dup, numpy, cp/dd under concurrent readers) and checks what the
// SPEC promises; its output says what broke.
#include <string>
#include <tuple>
#include <vector>

#include "tests/e2e/mount_fixture.h"

namespace modelfs::e2e {
namespace {

const char* const kCases[] = {
    "shell_group_redirect", "fork_child_exits",   "thread_runs_subprocess", "rejection_is_sticky",
    "numpy_bad_data",       "concurrent_writers", "readers_during_rewrites", "append",
    "removed_while_open",   "create_read_only",   "pread_while_others_open_and_close",
};
const char* const kTargets[] = {"layer", "meta", "series", "weights", "doc", "vec", "groups"};

class SemanticsE2E : public MountTest,
                     public ::testing::WithParamInterface<std::tuple<const char*, const char*>> {
 protected:
  void SetUp() override {
    MountTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    StartOrDie(*mount_);
  }
};

TEST_P(SemanticsE2E, Holds) {
  const auto [c, target] = GetParam();
  const std::string script = std::string(MODELFS_SOURCE_DIR) + "/tests/e2e/semantics.py";
  auto r = Sh("cd " + dir_ + " && timeout 100 /usr/bin/python3 " + script + " " + M() + " " + c + " " + target);
  EXPECT_EQ(r.code, 0) << r.out << "\n--- daemon log:\n" << mount_->Log();
  EXPECT_NE(r.out.find("ok"), std::string::npos) << r.out;
}

INSTANTIATE_TEST_SUITE_P(Folders, SemanticsE2E,
                         ::testing::Combine(::testing::ValuesIn(kCases), ::testing::ValuesIn(kTargets)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param)) + "_" + std::get<1>(info.param);
                         });

}  // namespace
}  // namespace modelfs::e2e
