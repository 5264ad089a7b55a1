// bench_fill_models: fills a modelfs data directory (not mounted) with one model holding N small layers,
// so that MOUNT/models/<id>/layers is a folder of N entries; optionally makes the same N files in a
// plain local folder (the native baseline of the listing benchmarks).
//
// Usage: fill_models DATA_DIR N LAYER_BYTES [NATIVE_DIR]
// Prints the new model id on stdout. The first layers are saved with ModelStore::SaveModel in one
// transaction; SaveModel keeps one open staged file per layer until it commits, so it is capped below
// RLIMIT_NOFILE and the remaining layers are added with UpdateModel (one transaction each).
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "stores/models/models_store.h"

namespace {

std::string LayerBytes(size_t i, size_t n) {
  std::string s(n, '\0');
  uint64_t x = 0x9E3779B97F4A7C15ull * (i + 1);  // distinct content per layer
  for (size_t k = 0; k < n; ++k) {
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    s[k] = static_cast<char>(x);
  }
  return s;
}

bool WriteAll(const std::string& path, const std::string& bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  bool ok = ::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
  return ::close(fd) == 0 && ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4 || argc > 5) {
    std::fprintf(stderr, "usage: %s DATA_DIR N LAYER_BYTES [NATIVE_DIR]\n", argv[0]);
    return 2;
  }
  const std::string data = argv[1];
  const size_t n = std::strtoull(argv[2], nullptr, 10);
  const size_t bytes = std::strtoull(argv[3], nullptr, 10);
  ::mkdir(data.c_str(), 0755);
  auto store = modelfs::models::ModelStore::Open(data + "/models");
  if (!store.ok()) {
    std::fprintf(stderr, "open %s/models: %s\n", data.c_str(), store.status().ToString().c_str());
    return 1;
  }
  std::vector<std::string> layers;
  layers.reserve(n);
  for (size_t i = 0; i < n; ++i) layers.push_back(LayerBytes(i, bytes));
  // Raise the soft fd limit to the hard one; SaveModel needs one fd per layer of the batch.
  rlimit rl{};
  size_t batch = 1000;
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur > 2048) batch = rl.rlim_cur - 1024;
  }
  if (batch > n) batch = n;
  std::vector<std::string> first(layers.begin(), layers.begin() + static_cast<long>(batch));
  auto id = (*store)->SaveModel("bench model", first);
  if (!id.ok()) {
    std::fprintf(stderr, "SaveModel of %zu layers: %s\n", batch, id.status().ToString().c_str());
    return 1;
  }
  for (size_t i = batch; i < n; ++i) {
    auto st = (*store)->UpdateModel(*id, static_cast<int64_t>(i), layers[i]);
    if (!st.ok()) {
      std::fprintf(stderr, "UpdateModel layer %zu: %s\n", i, st.ToString().c_str());
      return 1;
    }
  }
  if (argc == 5) {
    const std::string native = argv[4];
    if (::mkdir(native.c_str(), 0755) != 0) { std::perror(native.c_str()); return 1; }
    for (size_t i = 0; i < n; ++i) {
      std::string p = native + "/" + std::to_string(i);
      if (!WriteAll(p, layers[i])) { std::perror(p.c_str()); return 1; }
    }
  }
  std::printf("%lld\n", static_cast<long long>(*id));
  return 0;
}
