// Small-file loop of bench/timeseries.sh: writes or reads N small time series (2×64 little-endian
// float64 = 1 KiB each, distinct content) in one folder, one file at a time, so that the figures
// measure the file system and not an interpreter.
//
//   smallfiles write DIR N   create, write 1 KiB, close each DIR/tsNNNNNNN (O_CREAT|O_TRUNC)
//   smallfiles read DIR N    open, read to EOF, close each; every file must be exactly the bytes
//                            `write` made for it (compared byte for byte), else exit 1
//
// File i holds times i·64 … i·64+63 (so numpy sees ascending times) and 64 values from a hash of
// (i, j): no two files are equal. Prints "<files> files, <bytes> B, checksum <hex>" on success (the
// checksum is over everything read or written, in order); errors name the file and the reason.
#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

static_assert(std::endian::native == std::endian::little, "series files are little-endian float64");

constexpr int kPoints = 64;
constexpr size_t kBytes = 2 * kPoints * sizeof(double);

uint64_t Mix(uint64_t x) {  // splitmix64 finalizer
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

void Fill(uint64_t i, unsigned char* out) {
  double d[2 * kPoints];
  for (int j = 0; j < kPoints; ++j) {
    d[j] = static_cast<double>(i * kPoints + j);
    // A value in [-1, 1) from 53 random bits.
    d[kPoints + j] = static_cast<double>(Mix(i * kPoints + j) >> 11) * 0x1.0p-52 - 1.0;
  }
  std::memcpy(out, d, kBytes);
}

uint64_t Fnv(uint64_t h, const unsigned char* p, size_t n) {
  for (size_t k = 0; k < n; ++k) h = (h ^ p[k]) * 0x100000001b3ULL;
  return h;
}

std::string Name(const std::string& dir, uint64_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "/ts%07" PRIu64, i);
  return dir + buf;
}

[[noreturn]] void Fail(const std::string& path, const char* what, int err) {
  std::fprintf(stderr, "smallfiles: %s: %s%s%s\n", path.c_str(), what, err ? ": " : "",
               err ? std::strerror(err) : "");
  std::exit(1);
}

int Usage() {
  std::fprintf(stderr, "usage: smallfiles write|read DIR N\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) return Usage();
  const std::string mode = argv[1], dir = argv[2];
  char* end = nullptr;
  const uint64_t n = std::strtoull(argv[3], &end, 10);
  if (end == argv[3] || *end != '\0' || n > 9999999) return Usage();
  const bool write = mode == "write";
  if (!write && mode != "read") return Usage();

  unsigned char want[kBytes];
  unsigned char got[kBytes + 4096];
  uint64_t h = 0xcbf29ce484222325ULL, total = 0;
  for (uint64_t i = 0; i < n; ++i) {
    const std::string p = Name(dir, i);
    Fill(i, want);
    if (write) {
      int fd = open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) Fail(p, "create", errno);
      ssize_t w = ::write(fd, want, kBytes);
      if (w < 0) Fail(p, "write", errno);
      if (static_cast<size_t>(w) != kBytes) Fail(p, "short write", 0);
      if (close(fd) != 0) Fail(p, "close", errno);
      h = Fnv(h, want, kBytes);
      total += kBytes;
    } else {
      int fd = open(p.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) Fail(p, "open", errno);
      size_t have = 0;
      for (;;) {  // to EOF: a longer file is an error too
        ssize_t r = ::read(fd, got + have, sizeof got - have);
        if (r < 0) {
          if (errno == EINTR) continue;
          Fail(p, "read", errno);
        }
        if (r == 0) break;
        have += static_cast<size_t>(r);
        if (have == sizeof got) break;
      }
      if (close(fd) != 0) Fail(p, "close", errno);
      if (have != kBytes) {
        std::fprintf(stderr, "smallfiles: %s: read %zu bytes, expected %zu\n", p.c_str(), have, kBytes);
        return 1;
      }
      if (std::memcmp(got, want, kBytes) != 0) Fail(p, "content differs from what was written", 0);
      h = Fnv(h, got, have);
      total += have;
    }
  }
  std::printf("%" PRIu64 " files, %" PRIu64 " B, checksum %016" PRIx64 "\n", n, total, h);
  return 0;
}
