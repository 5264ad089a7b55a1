// A 4 GiB layer in and out through the mount with the daemon's peak RSS under 256 MiB.
#include "tests/e2e/mount_fixture.h"

namespace modelfs::e2e {
namespace {

long PeakRssKiB(pid_t pid) {
  std::string status = ReadAll("/proc/" + std::to_string(pid) + "/status");
  auto at = status.find("VmHWM:");
  return at == std::string::npos ? -1 : atol(status.c_str() + at + 6);
}

class BigLayer : public MountTest {};

TEST_F(BigLayer, FourGiBLayerStreamsWithBoundedMemory) {
  StartOrDie(*mount_);
  Ok("mkdir " + M() + "/models/1");
  const std::string layer = M() + "/models/1/layers/0";
  // 4 GiB of a repeating random MiB: content that is not all zeros, cheap to check.
  Ok("head -c 1048576 /dev/urandom > " + dir_ + "/block");
  Ok("for i in $(seq 4096); do cat " + dir_ + "/block; done | dd of=" + layer +
     " bs=1M iflag=fullblock status=none");
  EXPECT_EQ(Ok("stat -c %s " + layer), "4294967296\n");
  Ok("cmp <(for i in $(seq 4096); do cat " + dir_ + "/block; done) " + layer);
  long peak = PeakRssKiB(mount_->Pid());
  std::cout << "daemon peak RSS after 4 GiB in and out: " << peak / 1024 << " MiB\n";
  EXPECT_GT(peak, 0);
  EXPECT_LT(peak, 256 * 1024);
}

}  // namespace
}  // namespace modelfs::e2e
