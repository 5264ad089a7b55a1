#include "tools/weights_cmd.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>

#include "stores/common/file_util.h"
#include "stores/common/staged_file.h"

namespace modelfs {
namespace {

struct WeightsArgs {
  std::string action;
  std::string codec;
  std::string target;  // hash or name
  std::string file = "-";
  std::string name, layer_type, model_name;
  bool unnamed = false;
};

int Fail(const std::string& msg) {
  std::cerr << "modelfs weights: " << msg << "\n";
  return 1;
}

std::string Shape(const weights::TensorSpec& spec) {
  std::string s = "(";
  for (size_t i = 0; i < spec.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(spec.shape[i]);
  return s + (spec.shape.size() == 1 ? ",)" : ")");
}

// A hash, or the hash a name points to.
Result<std::string> Resolve(weights::WeightStore& store, const std::string& target) {
  if (weights::WeightStore::IsHash(target)) return target;
  ASSIGN_OR_RETURN(auto n, store.ResolveName(target));
  return n.hash;
}

int Run(const WeightsArgs& a, const std::string& data) {
  auto opened = OpenWeightStore(data, a.codec);
  if (!opened.ok()) return Fail(opened.status().message());
  auto& store = **opened;
  if (a.action == "put") {
    // From a file or a pipe: staged first, so the store reads a complete, seekable file.
    auto staged = StagedFile::CreateFrom(store.staging_dir(), a.file);
    if (!staged.ok()) return Fail(staged.status().message());
    weights::CoralMeta meta{a.name, a.layer_type, a.model_name};
    auto r = store.StoreNpy((*staged)->fd(), meta, {});
    if (!r.ok()) return Fail(a.file + ": " + r.status().message());
    if (!a.name.empty()) {
      Status st = store.SetName(a.name, r->hash);
      if (!st.ok()) return Fail(st.message());
    }
    std::cout << r->hash << (r->added ? (r->as_delta ? "\tstored as delta" : "\tstored") : "\talready stored")
              << "\n";
    return 0;
  }
  if (a.action == "get") {
    auto hash = Resolve(store, a.target);
    if (!hash.ok()) return Fail(hash.status().message());
    if (a.file == "-") {
      // Decoded into an unlinked file next to the store, then copied out (stdout may be a pipe).
      auto tmp = OpenFile(store.staging_dir(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
      if (!tmp.ok()) return Fail(tmp.status().message());
      Status st = store.WriteNpy(*hash, tmp->get());
      if (!st.ok()) return Fail(st.message());
      auto size = FileSize(tmp->get());
      if (!size.ok()) return Fail(size.status().message());
      st = CopyToStream(tmp->get(), 0, STDOUT_FILENO, *size);
      return st.ok() ? 0 : Fail(st.message());
    }
    auto out = OpenFile(a.file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (!out.ok()) return Fail(out.status().message());
    Status st = store.WriteNpy(*hash, out->get());
    if (st.ok()) st = out->Close();
    return st.ok() ? 0 : Fail(st.message());
  }
  if (a.action == "ls") {
    for (const std::string& h : store.List()) {
      auto m = store.GetMetadata(h);
      if (!m.ok()) continue;
      std::string names;
      for (const auto& n : m->names) names += (names.empty() ? "" : ",") + n;
      std::cout << h << "\t" << weights::DTypeName(m->spec.dtype) << Shape(m->spec) << "\t"
                << m->npy_bytes << " B\t" << m->stored_bytes << " B stored"
                << (m->is_delta ? " (delta)" : "") << "\t" << names << "\n";
    }
    return 0;
  }
  if (a.action == "info") {
    weights::StorageInfo i = store.GetStorageInfo();
    std::printf("codec\t%s\ntensors\t%llu\nnames\t%llu\ndeltas\t%llu\nlogical_bytes\t%llu\n"
                "stored_bytes\t%llu\ningested_bytes\t%llu\ncompression_ratio\t%.3f\ndedup_ratio\t%.3f\n",
                i.codec.c_str(), (unsigned long long)i.tensors, (unsigned long long)i.names,
                (unsigned long long)i.deltas, (unsigned long long)i.logical_bytes,
                (unsigned long long)i.stored_bytes, (unsigned long long)i.ingested_bytes,
                i.compression_ratio, i.dedup_ratio);
    return 0;
  }
  if (a.action == "verify") {
    std::optional<std::string_view> one;
    std::string hash;
    if (!a.target.empty()) {
      auto h = Resolve(store, a.target);
      if (!h.ok()) return Fail(h.status().message());
      hash = *h;
      one = hash;
    }
    auto problems = store.Verify(one);
    if (!problems.ok()) return Fail(problems.status().message());
    for (const auto& p : *problems) std::cout << p.hash << "\t" << p.what << "\n";
    if (!problems->empty()) return Fail(std::to_string(problems->size()) + " problem(s)");
    std::cout << "ok\n";
    return 0;
  }
  if (a.action == "gc") {
    auto n = store.Gc(a.unnamed);
    if (!n.ok()) return Fail(n.status().message());
    std::cout << "removed " << *n << "\n";
    return 0;
  }
  if (a.action == "rm") {
    Status st = weights::WeightStore::IsHash(a.target) ? store.Delete(a.target) : store.RemoveName(a.target);
    return st.ok() ? 0 : Fail(st.message());
  }
  if (a.action == "import-coral") {
    auto r = store.ImportCoral(a.file);
    if (!r.ok()) return Fail(a.file + ": " + r.status().message());
    std::cout << "imported " << r->imported << ", already stored " << r->duplicates << ", skipped "
              << r->skipped.size() << "\n";
    for (const auto& s : r->skipped) std::cout << "skipped\t" << s << "\n";
    return 0;
  }
  return Fail("unknown action " + a.action);
}

}  // namespace

Result<std::unique_ptr<weights::WeightStore>> OpenWeightStore(const std::string& data_dir,
                                                              const std::string& codec) {
  weights::WeightStore::Options options;
  if (!codec.empty()) {
    ASSIGN_OR_RETURN(options.codec, weights::CodecSpec::Parse(codec));
  }
  return weights::WeightStore::Open(data_dir + "/weights", options);
}

std::function<int(const std::string&)> AddWeightsCommand(CLI::App& app, CLI::App** sub) {
  auto a = std::make_shared<WeightsArgs>();
  auto* w = app.add_subcommand("weights", "Weight store (content-addressed tensors) without a mount");
  *sub = w;
  w->require_subcommand(1);
  w->add_option("--codec", a->codec,
                "Codec of a new store: zstd-N (default zstd-1), gzip-N (1-9), lzf, none; fixed at creation");
  auto* put = w->add_subcommand("put", "Store a .npy FILE ('-': stdin); prints its hash");
  put->add_option("file", a->file)->required();
  put->add_option("--name", a->name, "Also give the tensor this name");
  put->add_option("--layer-type", a->layer_type, "Coral layer_type");
  put->add_option("--model-name", a->model_name, "Coral model_name");
  auto* get = w->add_subcommand("get", "Write a tensor (by hash or name) as .npy to FILE (default stdout)");
  get->add_option("target", a->target)->required();
  get->add_option("file", a->file);
  w->add_subcommand("ls", "List tensors: hash, dtype(shape), sizes, names");
  w->add_subcommand("info", "Storage statistics: sizes, compression and dedup ratios, deltas");
  auto* verify = w->add_subcommand("verify", "Recompute SHA-256 of every tensor (or one) from its files");
  verify->add_option("target", a->target);
  auto* gc = w->add_subcommand("gc", "Remove files no tensor uses; --unnamed also deletes tensors without names");
  gc->add_flag("--unnamed", a->unnamed);
  w->add_subcommand("rm", "Delete a tensor (by hash) or remove a name")->add_option("target", a->target)->required();
  w->add_subcommand("import-coral", "Import a Coral HDF5 store (weights/, deltas/ and their attributes)")
      ->add_option("file", a->file)->required();
  return [a, w](const std::string& data) {
    for (auto* s : w->get_subcommands()) a->action = s->get_name();
    return Run(*a, data);
  };
}

}  // namespace modelfs
