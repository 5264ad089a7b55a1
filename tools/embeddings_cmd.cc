#include "tools/embeddings_cmd.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include "fs/embeddings_text.h"
#include "stores/common/file_util.h"
#include "stores/embeddings/embedding_store.h"

namespace modelfs {
namespace {

struct EmbeddingsArgs {
  std::string action;
  int group = 0;
  std::vector<uint64_t> keys;
  std::string file;
  std::string where;
  uint64_t count = 0;
  uint64_t first_key = 1;
  int steps = 1;
  std::optional<int64_t> ttl;
};

int Fail(const std::string& msg) {
  std::cerr << "modelfs embeddings: " << msg << "\n";
  return 1;
}

int Run(const EmbeddingsArgs& a, const std::string& data) {
  embeddings::StoreOptions options;
  auto ttl = ResolveEmbeddingsTtl(data, a.ttl);
  if (!ttl.ok()) return Fail(ttl.status().message());
  options.ttl_seconds = *ttl;
  auto opened = embeddings::EmbeddingStore::Open(data + "/embeddings", options);
  if (!opened.ok()) return Fail(opened.status().message());
  auto& store = **opened;
  if (a.action == "groups") {
    auto groups = store.Groups();
    if (!groups.ok()) return Fail(groups.status().message());
    std::cout << fs::FormatGroups(*groups);
    return 0;
  }
  if (a.action == "configure") {
    // Read as a stream, so that pipes work too ('-', or <(...) in a shell).
    std::stringstream ss;
    if (a.file == "-") {
      ss << std::cin.rdbuf();
    } else {
      std::ifstream in(a.file);
      if (!in) return Fail(a.file + ": cannot open");
      ss << in.rdbuf();
    }
    const std::string text = ss.str();
    auto groups = fs::ParseGroups(text);
    if (!groups.ok()) return Fail(groups.status().message());
    Status st = store.ConfigureGroups(*groups);
    return st.ok() ? 0 : Fail(st.message());
  }
  if (a.action == "lookup") {
    auto w = store.Lookup(a.group, a.keys);
    if (!w.ok()) return Fail(w.status().message());
    size_t dim = a.keys.empty() ? 0 : w->size() / a.keys.size();
    for (size_t i = 0; i < a.keys.size(); ++i) {
      std::cout << a.keys[i];
      for (size_t j = 0; j < dim; ++j) std::cout << " " << (*w)[i * dim + j];
      std::cout << "\n";
    }
    return 0;
  }
  if (a.action == "train") {
    // Looks up `count` keys and applies `steps` rounds of small random gradients: sample data for
    // demos and benchmarks, through the same calls a trainer makes.
    auto config = store.GetGroup(a.group);
    if (!config.ok()) return Fail(config.status().message());
    if (!*config) return Fail("group " + std::to_string(a.group) + " is not configured");
    const size_t dim = static_cast<size_t>((*config)->dim);
    std::mt19937 rng(42);
    std::normal_distribution<float> normal(0.0f, 0.01f);
    constexpr uint64_t kBatch = 4096;
    for (uint64_t start = 0; start < a.count; start += kBatch) {
      std::vector<uint64_t> keys;
      for (uint64_t k = start; k < std::min(a.count, start + kBatch); ++k) keys.push_back(a.first_key + k);
      auto w = store.Lookup(a.group, keys);
      if (!w.ok()) return Fail(w.status().message());
      std::vector<float> grads(keys.size() * dim);
      for (int s = 0; s < a.steps; ++s) {
        for (float& g : grads) g = normal(rng);
        Status st = store.ApplyGradients(a.group, keys, grads);
        if (!st.ok()) return Fail(st.message());
      }
    }
    return 0;
  }
  if (a.action == "dump" || a.action == "checkpoint") {
    auto out = OpenFile(a.file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (!out.ok()) return Fail(out.status().message());
    auto snap = store.TakeSnapshot();
    if (!snap.ok()) return Fail(snap.status().message());
    Status st;
    if (a.action == "dump") {
      auto view = fs::ParseView("dump" + (a.where.empty() ? "" : "@" + a.where), true);
      if (!view.ok()) return Fail(view.status().message());
      st = store.Dump(**snap, view->second, out->get());
    } else {
      st = store.Checkpoint(**snap, out->get());
    }
    if (st.ok()) st = out->Close();
    return st.ok() ? 0 : Fail(st.message());
  }
  if (a.action == "load") {
    auto in = OpenFile(a.file, O_RDONLY | O_CLOEXEC);
    if (!in.ok()) return Fail(in.status().message());
    Status st = store.LoadCheckpoint(in->get());
    return st.ok() ? 0 : Fail(st.message());
  }
  if (a.action == "stats") {
    auto stats = store.GetStats();
    if (!stats.ok()) return Fail(stats.status().message());
    std::cout << "keys\t" << stats->keys << "\n";
    for (int g = 0; g < embeddings::kGroups; ++g) {
      if (stats->keys_per_group[g]) std::cout << "group " << g << "\t" << stats->keys_per_group[g] << "\n";
    }
    return 0;
  }
  return Fail("unknown action " + a.action);
}

}  // namespace

Result<int64_t> ResolveEmbeddingsTtl(const std::string& data_dir, std::optional<int64_t> given) {
  const std::string path = data_dir + "/embeddings.ttl";
  if (given) {
    RETURN_IF_ERROR(WriteStringToFile(path, std::to_string(*given) + "\n"));
    return *given;
  }
  auto text = ReadFileToString(path);
  if (!text.ok()) {
    if (text.status().code() == StatusCode::kNotFound) return 0;
    return text.status();
  }
  char* end = nullptr;
  long long v = strtoll(text->c_str(), &end, 10);
  if (end == text->c_str()) return Corruption(path + ": not a number of seconds");
  return static_cast<int64_t>(v);
}

std::function<int(const std::string&)> AddEmbeddingsCommand(CLI::App& app, CLI::App** sub) {
  auto a = std::make_shared<EmbeddingsArgs>();
  auto* e = app.add_subcommand("embeddings", "Embeddings store without a mount");
  *sub = e;
  e->require_subcommand(1);
  e->add_option("--ttl", a->ttl, "RocksDB TTL in seconds (<= 0: never); remembered for the store");
  e->add_subcommand("groups", "Print the group configuration");
  e->add_subcommand("configure", "Configure groups from a groups text FILE ('-': stdin)")
      ->add_option("file", a->file)->required();
  auto* lookup = e->add_subcommand("lookup", "Print the weights of keys (creating missing ones)");
  lookup->add_option("group", a->group)->required();
  lookup->add_option("keys", a->keys)->required();
  auto* train = e->add_subcommand("train", "Look up COUNT keys and apply STEPS random gradients");
  train->add_option("group", a->group)->required();
  train->add_option("count", a->count)->required();
  train->add_option("--steps", a->steps, "Gradient steps per key");
  train->add_option("--first-key", a->first_key, "First key");
  auto* dump = e->add_subcommand("dump", "Write a dump (damo format) to FILE");
  dump->add_option("--where", a->where, "Conditions, e.g. min_count=3,expire_days=100,group=0");
  dump->add_option("file", a->file)->required();
  e->add_subcommand("checkpoint", "Write a checkpoint (damo format) to FILE")
      ->add_option("file", a->file)->required();
  e->add_subcommand("load", "Replace the store with a checkpoint FILE (atomically)")
      ->add_option("file", a->file)->required();
  e->add_subcommand("stats", "Key counts per group");
  return [a, e](const std::string& data) {
    for (auto* s : e->get_subcommands()) a->action = s->get_name();
    return Run(*a, data);
  };
}

}  // namespace modelfs
