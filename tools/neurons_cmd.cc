#include "tools/neurons_cmd.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>

#include "stores/common/file_util.h"
#include "stores/neurons/neuron_store.h"

namespace modelfs {
namespace {

struct NeuronsArgs {
  std::string action;
  std::string file = "-";
  std::string name;
  bool merge = false;
  bool unverified = false;
  double threshold = 0.01;
};

int Fail(const std::string& msg) {
  std::cerr << "modelfs neurons: " << msg << "\n";
  return 1;
}

void PrintBackup(const neurons::BackupInfo& b) {
  std::cout << b.name << "\t" << b.bytes << " B\t" << neurons::FormatIsoTime(b.mtime_ns) << "\t" << b.neurons
            << " neurons\t" << b.synapses << " synapses\n";
}

int Run(const NeuronsArgs& a, const std::string& data) {
  auto opened = neurons::NeuronStore::Open(data + "/neurons");
  if (!opened.ok()) return Fail(opened.status().message());
  neurons::NeuronStore& store = **opened;
  if (a.action == "export") {
    ScopedFd out;
    int fd = STDOUT_FILENO;
    if (a.file != "-") {
      auto f = OpenFile(a.file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (!f.ok()) return Fail(f.status().message());
      out = std::move(*f);
      fd = out.get();
    }
    auto c = store.Export(fd);
    if (!c.ok()) return Fail("export: " + c.status().message());
    if (out.valid()) {
      Status st = out.Close();
      if (!st.ok()) return Fail(a.file + ": " + st.message());
    }
    std::cerr << c->neurons << " neurons, " << c->synapses << " synapses, " << c->bytes
              << " bytes, checksum " << c->checksum << "\n";
    return 0;
  }
  if (a.action == "import") {
    ScopedFd in;
    int fd = STDIN_FILENO;
    if (a.file != "-") {
      auto f = OpenFile(a.file, O_RDONLY | O_CLOEXEC);
      if (!f.ok()) return Fail(f.status().message());
      in = std::move(*f);
      fd = in.get();
    }
    auto c = store.Import(fd, a.merge ? neurons::ImportMode::kMerge : neurons::ImportMode::kReplace, {},
                          a.unverified);
    if (!c.ok()) return Fail((a.file == "-" ? "stdin" : a.file) + ": " + c.status().message());
    std::cout << "imported " << c->neurons << " neurons and " << c->synapses << " synapses (checksum "
              << (c->checksum.empty() ? "not given" : c->checksum + " verified") << ")\n";
    return 0;
  }
  if (a.action == "backup") {
    auto b = store.CreateBackup(a.name);
    if (!b.ok()) return Fail(b.status().message());
    PrintBackup(*b);
    return 0;
  }
  if (a.action == "restore") {
    auto safety = store.Restore(a.name);
    if (!safety.ok()) return Fail(safety.status().message());
    std::cout << "restored " << a.name << "; the graph before it is kept as " << safety->name << "\n";
    return 0;
  }
  if (a.action == "list-backups") {
    auto all = store.ListBackups();
    if (!all.ok()) return Fail(all.status().message());
    for (const auto& b : *all) PrintBackup(b);
    return 0;
  }
  if (a.action == "verify") {
    auto r = store.Verify();
    if (!r.ok()) return Fail(r.status().message());
    std::cout << "sqlite integrity_check: " << r->sqlite_check << "\n";
    for (const auto& issue : r->issues) std::cout << "issue: " << issue << "\n";
    std::cout << (r->valid ? "valid" : "NOT valid") << "\n";
    return r->valid ? 0 : 2;
  }
  if (a.action == "prune") {
    auto n = store.PruneWeakSynapses(a.threshold);
    if (!n.ok()) return Fail(n.status().message());
    std::cout << "deleted " << *n << " synapses with |weight| < " << a.threshold << "\n";
    return 0;
  }
  if (a.action == "stats") {
    auto s = store.Stats();
    if (!s.ok()) return Fail(s.status().message());
    std::cout << "neurons\t" << s->neurons << "\nsynapses\t" << s->synapses << "\ndatabase_bytes\t"
              << s->database_bytes << "\nschema_version\t" << s->schema_version << "\ngeneration\t"
              << s->generation << "\nchanged\t" << neurons::FormatIsoTime(s->change_time_ns) << "\n";
    for (const auto& [type, n] : s->neurons_by_type) std::cout << "type " << type << "\t" << n << "\n";
    return 0;
  }
  return Fail("unknown action " + a.action);
}

}  // namespace

std::function<int(const std::string&)> AddNeuronsCommand(CLI::App& app, CLI::App** sub) {
  auto a = std::make_shared<NeuronsArgs>();
  auto* t = app.add_subcommand("neurons", "Neuron graph store without a mount");
  *sub = t;
  t->require_subcommand(1);
  auto* exp = t->add_subcommand("export", "Write the whole graph as the original's JSON export (with checksum)");
  exp->add_option("file", a->file, "Output file, '-' (default) for stdout");
  auto* imp = t->add_subcommand(
      "import", "Read an export (either system's), verify its checksum, and make the graph equal to it");
  imp->add_option("file", a->file, "Input file, '-' for stdin")->required();
  imp->add_flag("--merge", a->merge, "Create or update the file's entities, keep the others");
  imp->add_flag("--unverified", a->unverified, "Accept a file without a checksum");
  auto* bk = t->add_subcommand("backup", "Take a consistent backup (SQLite online backup); prints it");
  bk->add_option("name", a->name, "NAME.db (default neuron_system_backup_<time>.db)");
  auto* rs = t->add_subcommand("restore", "Replace the graph with a backup, keeping a safety copy first");
  rs->add_option("name", a->name, "A backup's name (see list-backups)")->required();
  t->add_subcommand("list-backups", "List backups: name, size, time, neurons, synapses");
  t->add_subcommand("verify", "Check integrity: orphans, weights, vectors, SQLite (exit 2 if not valid)");
  auto* pr = t->add_subcommand("prune", "Delete weak synapses (|weight| < threshold)");
  pr->add_option("--threshold", a->threshold, "Weight threshold (default 0.01)");
  t->add_subcommand("stats", "Counts, database size, schema version, neurons by type");
  return [a, t](const std::string& data) {
    for (auto* s : t->get_subcommands()) a->action = s->get_name();
    return Run(*a, data);
  };
}

}  // namespace modelfs
