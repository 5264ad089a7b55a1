// modelfs: the command line. `mount` serves the tree; the other subcommands call the same stores
// directly, without a mount.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>
#include <tuple>
#include <vector>

#include "fs/core.h"
#include "fs/fuse_mount.h"
#include "fs/log.h"
#include "fs/embeddings_folder.h"
#include "fs/embeddings_text.h"
#include "fs/models_folder.h"
#include "fs/neurons_folder.h"
#include "fs/timeseries_folder.h"
#include "fs/weights_folder.h"
#include "stores/common/file_util.h"
#include "stores/embeddings/embedding_store.h"
#include "stores/models/models_store.h"
#include "stores/neurons/neuron_store.h"
#include "stores/timeseries/timeseries_store.h"
#include "tools/embeddings_cmd.h"
#include "tools/neurons_cmd.h"
#include "tools/timeseries_cmd.h"
#include "tools/mount_recovery.h"
#include "tools/weights_cmd.h"

namespace modelfs {
namespace {

std::string DefaultDataDir() {
  if (const char* d = getenv("MODELFS_DATA"); d && *d) return d;
  if (const char* x = getenv("XDG_DATA_HOME"); x && *x) return std::string(x) + "/modelfs";
  const char* home = getenv("HOME");
  return std::string(home ? home : "/tmp") + "/.local/share/modelfs";
}

std::string AbsolutePath(const std::string& p) {
  char buf[PATH_MAX];
  if (realpath(p.c_str(), buf) != nullptr) return buf;
  // A dead mount point cannot be resolved itself (ENOTCONN): resolve its folder, keep its name.
  std::string path = p;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  if (realpath(dir.c_str(), buf) != nullptr) return std::string(buf) + (std::string(buf) == "/" ? "" : "/") + name;
  return p;
}

int Fail(const std::string& msg) {
  std::cerr << "modelfs: " << msg << "\n";
  return 1;
}

// Exclusive use of a data directory by one process (daemon or direct store access).
Result<ScopedFd> LockDataDir(const std::string& data) {
  ASSIGN_OR_RETURN(ScopedFd fd, OpenFile(data + "/lock", O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    std::string pid;
    auto r = ReadFileToString(data + "/daemon.pid");
    if (r.ok()) pid = " (daemon pid " + *r + ")";
    return PermissionDenied(data + ": in use by another modelfs process" + pid +
                            "; unmount it first (modelfs umount MOUNTPOINT)");
  }
  return fd;
}

struct Stores {
  ScopedFd lock;
  std::unique_ptr<models::ModelStore> models;
};

Result<Stores> OpenStores(const std::string& data) {
  RETURN_IF_ERROR(MakeDirs(data));
  Stores s;
  ASSIGN_OR_RETURN(s.lock, LockDataDir(data));
  ASSIGN_OR_RETURN(s.models, models::ModelStore::Open(data + "/models"));
  return s;
}

// ---- mount ----

struct MountArgs {
  std::string data;
  std::string mountpoint;
  bool foreground = false;
  std::vector<std::string> options;
  std::optional<int64_t> embeddings_ttl;
  std::string weights_codec;
};

int RunMount(MountArgs a) {
  if (a.data.empty()) a.data = DefaultDataDir();
  Status st = MakeDirs(a.data);
  if (!st.ok()) return Fail(st.message());
  a.data = AbsolutePath(a.data);
  a.mountpoint = AbsolutePath(a.mountpoint);
  if (a.data.find_first_of(", \t\n") != std::string::npos) {
    return Fail(a.data + ": data directory path must not contain commas or spaces");
  }
  fs::MountOptions mo;
  mo.mountpoint = a.mountpoint;
  bool read_only = false;
  bool nonempty = false;
  for (const auto& group : a.options) {
    std::stringstream ss(group);
    std::string o;
    while (std::getline(ss, o, ',')) {
      if (o.empty()) continue;
      if (o == "ro") read_only = true;
      if (o == "nonempty") {  // libfuse 3 has no such option: the check is ours (PrepareMount)
        nonempty = true;
        continue;
      }
      if (o.rfind("embeddings_ttl=", 0) == 0) {
        a.embeddings_ttl = strtoll(o.c_str() + 15, nullptr, 10);
        continue;
      }
      if (o.rfind("weights_codec=", 0) == 0) {
        a.weights_codec = o.substr(14);
        continue;
      }
      if (o.rfind("readahead_kb=", 0) == 0) {
        mo.readahead_kb = static_cast<unsigned>(strtoul(o.c_str() + 13, nullptr, 10));
        continue;
      }
      mo.fuse_options.push_back(o);
      if (o == "allow_other") mo.fuse_options.push_back("default_permissions");
    }
  }
  mo.fuse_options.push_back("fsname=modelfs:" + a.data);
  mo.fuse_options.push_back("subtype=modelfs");
  if (Status st = tools::PrepareMount(a.data, a.mountpoint, nonempty); !st.ok()) return Fail(st.message());

  int ready_pipe[2] = {-1, -1};
  if (!a.foreground) {
    if (pipe2(ready_pipe, O_CLOEXEC) != 0) return Fail(std::string("pipe: ") + strerror(errno));
    pid_t pid = fork();
    if (pid < 0) return Fail(std::string("fork: ") + strerror(errno));
    if (pid > 0) {
      // Parent: wait until the daemon says the mount is ready (or why it is not).
      close(ready_pipe[1]);
      std::string msg;
      char buf[512];
      ssize_t n;
      while ((n = read(ready_pipe[0], buf, sizeof buf)) > 0) msg.append(buf, n);
      close(ready_pipe[0]);
      if (msg == "OK") return 0;
      if (msg.empty()) msg = "daemon exited before the mount was ready (see " + a.data + "/modelfs.log)";
      return Fail(msg);
    }
    close(ready_pipe[0]);
    setsid();
  }
  fs::SetLogFile(a.data + "/modelfs.log", a.foreground);
  auto report = [&](const Status& s) {
    std::string msg = s.ok() ? "OK" : s.message();
    if (!s.ok()) fs::LogError("mount: " + msg);
    if (a.foreground) {
      if (s.ok()) fs::LogInfo("mounted " + a.mountpoint + " (data " + a.data + ")");
      return;
    }
    if (s.ok()) {
      // Detach from the terminal; logs go to the data directory from now on, and so does stderr
      // (where the store libraries write warnings they cannot return, e.g. a failed cleanup).
      int null = open("/dev/null", O_RDWR);
      int log = open((a.data + "/modelfs.log").c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
      dup2(null, 0), dup2(null, 1), dup2(log >= 0 ? log : null, 2);
      if (null > 2) close(null);
      if (log > 2) close(log);
    }
    ssize_t w = write(ready_pipe[1], msg.data(), msg.size());
    (void)w;  // the parent reads until EOF; a lost message shows as "exited before ready"
    close(ready_pipe[1]);
  };
  auto stores = OpenStores(a.data);
  if (!stores.ok()) {
    report(stores.status());
    return 1;
  }
  Status pid_st = WriteStringToFile(a.data + "/daemon.pid", std::to_string(getpid()));
  if (!pid_st.ok()) fs::LogError("daemon.pid: " + pid_st.message());
  std::vector<std::unique_ptr<fs::Folder>> folders;
  folders.push_back(std::make_unique<fs::ModelsFolder>(std::move(stores->models)));
  {
    // Staged writes and generated views of /embeddings live here; a crash leaves only garbage.
    const std::string staging = a.data + "/staging/embeddings";
    Status st = MakeDirs(staging);
    if (st.ok()) st = ClearDir(staging);
    embeddings::StoreOptions eo;
    auto ttl = ResolveEmbeddingsTtl(a.data, a.embeddings_ttl);
    if (st.ok() && !ttl.ok()) st = ttl.status();
    if (st.ok()) eo.ttl_seconds = *ttl;
    auto store = st.ok() ? embeddings::EmbeddingStore::Open(a.data + "/embeddings", eo)
                         : Result<std::unique_ptr<embeddings::EmbeddingStore>>(st);
    if (!store.ok()) {
      report(store.status());
      return 1;
    }
    folders.push_back(std::make_unique<fs::EmbeddingsFolder>(std::move(*store), staging));
  }
  {
    auto store = timeseries::TimeSeriesStore::Open(a.data + "/timeseries");
    if (!store.ok()) {
      report(store.status());
      return 1;
    }
    folders.push_back(std::make_unique<fs::TimeSeriesFolder>(std::move(*store)));
  }
  {
    // Decoded .npy files of /weights live here, unlinked; a crash leaves nothing.
    const std::string cache = a.data + "/staging/weights";
    Status st = MakeDirs(cache);
    if (st.ok()) st = ClearDir(cache);
    auto store = st.ok() ? OpenWeightStore(a.data, a.weights_codec)
                         : Result<std::unique_ptr<weights::WeightStore>>(st);
    if (!store.ok()) {
      report(store.status());
      return 1;
    }
    folders.push_back(std::make_unique<fs::WeightsFolder>(std::move(*store), cache));
  }
  {
    // /neurons and /synapses share one store. Staged documents and the generated export live here.
    const std::string staging = a.data + "/staging/neurons";
    Status st = MakeDirs(staging);
    if (st.ok()) st = ClearDir(staging);
    auto store = st.ok() ? neurons::NeuronStore::Open(a.data + "/neurons")
                         : Result<std::unique_ptr<neurons::NeuronStore>>(st);
    if (!store.ok()) {
      report(store.status());
      return 1;
    }
    std::shared_ptr<neurons::NeuronStore> graph = std::move(*store);
    folders.push_back(std::make_unique<fs::NeuronsFolder>(graph, staging));
    folders.push_back(std::make_unique<fs::SynapsesFolder>(graph, staging));
  }
  fs::CoreOptions co;
  co.uid = getuid();
  co.gid = getgid();
  co.read_only = read_only;
  co.dir_times_file = a.data + "/dir-times";
  // The root's listing never changes: its time is the data directory's first use (the lock file's).
  if (struct stat lst; stat((a.data + "/lock").c_str(), &lst) == 0) co.root_mtime = lst.st_mtim;
  fs::Core core(std::move(folders), co);
  Status served = fs::ServeMount(core, mo, report);
  unlink((a.data + "/daemon.pid").c_str());
  if (!served.ok()) {
    fs::LogError("serve: " + served.message());
    return 1;
  }
  fs::LogInfo("unmounted " + a.mountpoint);
  return 0;
}

int RunUmount(const std::string& mp_arg) {
  const std::string mountpoint = AbsolutePath(mp_arg);
  auto m = tools::MountAt(mountpoint);
  if (!m || !m->modelfs()) return Fail(mountpoint + ": not a modelfs mount");
  const std::string data = m->data_dir();
  const pid_t pid = tools::DaemonPid(data);
  auto recover = [&]() {
    auto done = tools::RecoverDeadMount(*m, pid);
    if (!done.ok()) return Fail(done.status().message());
    std::cerr << "modelfs: " << *done << "\n";
    return 0;
  };
  if (tools::StateOf(pid) != tools::DaemonState::kRunning) return recover();
  Status st = tools::Unmount(mountpoint, /*lazy=*/false);
  if (!st.ok()) {
    if (tools::StateOf(pid) != tools::DaemonState::kRunning) return recover();
    return Fail(mountpoint + ": cannot unmount (is a process using it? close it, or see `fuser -vm " +
                mountpoint + "`): " + st.message());
  }
  // Unmounted; wait for the daemon to finish syncing so that everything acknowledged is durable. Its
  // lock on the data directory goes when the process ends (an exited process that its parent has not
  // reaped yet still answers kill(pid, 0), so that is no test).
  auto lock = OpenFile(data + "/lock", O_RDWR | O_CLOEXEC);
  if (lock.ok()) {
    for (int i = 0; flock(lock->get(), LOCK_EX | LOCK_NB) != 0; ++i) {
      if (i == 12000) return Fail("daemon " + std::to_string(pid) + " still running after 60 s");
      if (i % 100 == 99 && tools::StateOf(pid) == tools::DaemonState::kDying) {
        // Killed while it synced, and stuck: nothing is mounted any more, only the process lingers.
        (void)tools::AbortConnection(m->minor);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  return 0;
}

// ---- demo ----

std::string Floats(size_t n, float scale, float phase) {
  std::string out(n * sizeof(float), '\0');
  for (size_t i = 0; i < n; ++i) {
    float v = scale * std::sin(phase + static_cast<float>(i) * 0.1f);
    std::memcpy(out.data() + i * sizeof(float), &v, sizeof v);
  }
  return out;
}

int RunDemo(std::string data) {
  if (data.empty()) data = DefaultDataDir();
  auto stores = OpenStores(data);
  if (!stores.ok()) return Fail(stores.status().message());
  auto& m = *stores->models;
  // A small MLP (784 -> 64 -> 10, float32) and a second model; layer 0 of the first gets a second
  // version so that history/ shows something.
  auto id1 = m.SaveModel(R"({"name": "mnist-mlp", "dtype": "float32", "layers": [[64, 784], [64], [10, 64], [10]]})",
                         {Floats(64 * 784, 0.05f, 0), Floats(64, 0.01f, 1), Floats(10 * 64, 0.1f, 2),
                          Floats(10, 0.01f, 3)});
  if (!id1.ok()) return Fail(id1.status().message());
  Status st = m.UpdateModel(*id1, 0, Floats(64 * 784, 0.05f, 0.5f));
  if (!st.ok()) return Fail(st.message());
  auto id2 = m.SaveModel(R"({"name": "tiny-linear", "dtype": "float32", "layers": [[4, 4]]})",
                         {Floats(16, 1.0f, 0)});
  if (!id2.ok()) return Fail(id2.status().message());
  stores->models.reset();
  auto emb = embeddings::EmbeddingStore::Open(data + "/embeddings", embeddings::StoreOptions{});
  if (!emb.ok()) return Fail(emb.status().message());
  auto groups = fs::ParseGroups("0 8 adam random_normal(stddev=0.1)\n1 4 adagrad zeros\n");
  for (const auto& [g, c] : *groups) {
    Status gs = (*emb)->ConfigureGroup(g, c);
    if (!gs.ok()) return Fail(gs.message());
  }
  for (int g = 0; g < 2; ++g) {
    std::vector<uint64_t> keys;
    for (uint64_t k = 1; k <= 200; ++k) keys.push_back(k * 7919 + static_cast<uint64_t>(g));
    auto w = (*emb)->Lookup(g, keys);
    if (!w.ok()) return Fail(w.status().message());
    std::vector<float> grads(w->size(), 0.01f);
    for (int step = 0; step <= g; ++step) {
      Status as = (*emb)->ApplyGradients(g, keys, grads);
      if (!as.ok()) return Fail(as.message());
    }
  }
  emb->reset();
  // Two time series: a daily temperature curve (hourly samples) and a damped oscillation.
  auto ts = timeseries::TimeSeriesStore::Open(data + "/timeseries");
  if (!ts.ok()) return Fail(ts.status().message());
  {
    std::vector<double> t(24 * 7), v(24 * 7), t2(1000), v2(1000);
    for (size_t i = 0; i < t.size(); ++i) {
      t[i] = static_cast<double>(i);
      v[i] = 12.0 + 6.0 * std::sin((static_cast<double>(i % 24) - 9.0) * M_PI / 12.0);
    }
    for (size_t i = 0; i < t2.size(); ++i) {
      t2[i] = static_cast<double>(i) * 0.01;
      v2[i] = std::exp(-t2[i] * 0.5) * std::cos(t2[i] * 2.0 * M_PI);
    }
    for (auto [id, times, values] : {std::tuple{"temperature", &t, &v}, std::tuple{"damped", &t2, &v2}}) {
      auto r = (*ts)->Store(std::string_view(id), *times, *values);
      if (!r.ok()) return Fail(r.status().message());
    }
  }
  ts->reset();
  // Weights: an MLP's first layer and bias, and a fine-tuned copy of the layer with 1% of its values
  // changed (stored as a delta against the original).
  auto ws = OpenWeightStore(data, "");
  if (!ws.ok()) return Fail(ws.status().message());
  {
    weights::WeightTensor w1, b1;
    w1.spec = {weights::DType::kFloat32, {64, 784}};
    w1.data = Floats(64 * 784, 0.05f, 0);
    w1.meta = {"fc1.weight", "Linear", "mnist-mlp"};
    b1.spec = {weights::DType::kFloat32, {64}};
    b1.data = Floats(64, 0.01f, 1);
    b1.meta = {"fc1.bias", "Linear", "mnist-mlp"};
    weights::WeightTensor tuned = w1;
    tuned.meta.model_name = "mnist-mlp-finetuned";
    for (size_t i = 0; i < 64 * 784; i += 100) {
      float v;
      std::memcpy(&v, tuned.data.data() + i * 4, 4);
      v *= 1.01f;
      std::memcpy(tuned.data.data() + i * 4, &v, 4);
    }
    for (auto [name, t] : {std::pair{"mnist-mlp.fc1.weight.npy", &w1}, std::pair{"mnist-mlp.fc1.bias.npy", &b1},
                           std::pair{"mnist-mlp-finetuned.fc1.weight.npy", &tuned}}) {
      auto r = (*ws)->Store(*t);
      if (!r.ok()) return Fail(r.status().message());
      Status st = (*ws)->SetName(name, r->hash);
      if (!st.ok()) return Fail(st.message());
    }
  }
  ws->reset();
  // A small neuron graph: three knowledge neurons (8-dim vectors) feeding a tool neuron.
  auto ns = neurons::NeuronStore::Open(data + "/neurons");
  if (!ns.ok()) return Fail(ns.status().message());
  {
    neurons::Graph g;
    const char* facts[] = {"water boils at 100 C at sea level", "ice melts at 0 C",
                           "the Celsius scale has 100 degrees between them"};
    for (int i = 0; i < 3; ++i) {
      neurons::Neuron n;
      n.id = neurons::NewUuid();
      n.type = "knowledge";
      n.position = {static_cast<double>(i), 0.5 * i, 0.0};
      n.vector.resize(8);
      for (size_t k = 0; k < 8; ++k) n.vector[k] = std::sin(0.7f * static_cast<float>(i * 8 + k));
      n.vector_dim = 8;
      n.source_data = facts[i];
      n.compression_ratio = 1.0;
      n.semantic_tags = neurons::Json::array({"physics", "temperature"});
      g.neurons.push_back(n);
    }
    neurons::Neuron tool;
    tool.id = neurons::NewUuid();
    tool.type = "tool";
    tool.position = {1.0, 1.0, 1.0};
    tool.function_signature = "celsius_to_fahrenheit(c: float) -> float";
    tool.executable_code = "result = inputs['c'] * 9 / 5 + 32";
    tool.input_schema = {{"type", "object"}, {"properties", {{"c", {{"type", "number"}}}}}};
    tool.output_schema = {{"type", "number"}};
    g.neurons.push_back(tool);
    for (int i = 0; i < 3; ++i) {
      neurons::Synapse syn;
      syn.id = neurons::NewUuid();
      syn.source_neuron_id = g.neurons[i].id;
      syn.target_neuron_id = tool.id;
      syn.weight = 0.25 * (i + 1);
      syn.synapse_type = "tool_input";
      syn.metadata = {{"parameter_name", "c"}};
      g.synapses.push_back(syn);
    }
    auto saved = (*ns)->SaveAll(g);
    if (!saved.ok()) return Fail(saved.status().message());
  }
  std::cout << "demo data in " << AbsolutePath(data) << ": models " << *id1 << " and " << *id2
            << ", embedding groups 0 and 1 (200 keys each), time series temperature and damped,"
            << " three weight tensors (one a delta), a neuron graph of 4 neurons and 3 synapses\n";
  return 0;
}

// ---- models (direct store access) ----

int RunModels(const std::string& data_arg, const std::string& action, int64_t id, int64_t layer,
              const std::string& file) {
  std::string data = data_arg.empty() ? DefaultDataDir() : data_arg;
  auto stores = OpenStores(data);
  if (!stores.ok()) return Fail(stores.status().message());
  auto& m = *stores->models;
  if (action == "list") {
    auto all = m.ListModels();
    if (!all.ok()) return Fail(all.status().message());
    for (auto& info : *all) {
      auto layers = m.ListLayers(info.model_id);
      std::cout << info.model_id << "\tmeta " << info.meta_size << " B\tlayers "
                << (layers.ok() ? layers->size() : 0) << "\n";
    }
    return 0;
  }
  if (action == "versions") {
    auto vs = m.ListVersions(id, layer);
    if (!vs.ok()) return Fail(vs.status().message());
    for (auto& v : *vs) std::cout << models::FormatHistoryTime(v.create_time_us) << "\t" << v.size << "\n";
    return 0;
  }
  if (action == "put") {
    auto bytes = ReadFileToString(file);
    if (!bytes.ok()) return Fail(bytes.status().message());
    Status st = m.UpdateModel(id, layer, *bytes);
    return st.ok() ? 0 : Fail(st.message());
  }
  if (action == "get") {
    auto v = m.NewestVersion(id, layer);
    if (!v.ok()) return Fail(v.status().message());
    auto fd = m.OpenVersion(*v);
    if (!fd.ok()) return Fail(fd.status().message());
    auto out = OpenFile(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (!out.ok()) return Fail(out.status().message());
    Status st = CopyRange(fd->get(), 0, out->get(), 0, v->size);
    return st.ok() ? 0 : Fail(st.message());
  }
  if (action == "delete") {
    Status st = m.DeleteModel(id);
    return st.ok() ? 0 : Fail(st.message());
  }
  return Fail("unknown models action " + action);
}

}  // namespace
}  // namespace modelfs

int main(int argc, char** argv) {
  using namespace modelfs;
  CLI::App app{"modelfs: ML artefacts (models, embeddings, time series, weights, neurons) as files"};
  app.require_subcommand(1);

  MountArgs ma;
  auto* mount = app.add_subcommand("mount", "Mount the tree; returns once the mount is ready");
  mount->add_option("--data", ma.data, "Data directory (default $MODELFS_DATA, else $XDG_DATA_HOME/modelfs)");
  mount->add_option("mountpoint", ma.mountpoint, "Existing empty folder")->required();
  mount->add_flag("-f,--foreground", ma.foreground, "Stay in the foreground, log to stderr");
  mount->add_option("-o", ma.options,
                    "Mount options: ro, allow_other, readahead_kb=N (default 1024), embeddings_ttl=N, "
                    "weights_codec=zstd-N|gzip-N|lzf|none (a new store's codec), and libfuse's");

  std::string umount_point;
  auto* umount = app.add_subcommand("umount", "Unmount cleanly; returns once all is durable");
  umount->add_option("mountpoint", umount_point)->required();

  std::string demo_data;
  auto* demo = app.add_subcommand("demo", "Fill a store with small sample data");
  demo->add_option("--data", demo_data, "Data directory");

  std::string models_data, models_file;
  int64_t models_id = 0, models_layer = 0;
  auto* models = app.add_subcommand("models", "Models store without a mount");
  models->require_subcommand(1);
  models->add_option("--data", models_data, "Data directory");
  models->add_subcommand("list", "List models");
  auto* mv = models->add_subcommand("versions", "List the versions of a layer");
  mv->add_option("id", models_id)->required();
  mv->add_option("layer", models_layer)->required();
  auto* mp = models->add_subcommand("put", "Add FILE as a new version of a layer");
  mp->add_option("id", models_id)->required();
  mp->add_option("layer", models_layer)->required();
  mp->add_option("file", models_file)->required();
  auto* mg = models->add_subcommand("get", "Write the newest version of a layer to FILE");
  mg->add_option("id", models_id)->required();
  mg->add_option("layer", models_layer)->required();
  mg->add_option("file", models_file)->required();
  auto* md = models->add_subcommand("delete", "Delete a model and all its versions (atomically)");
  md->add_option("id", models_id)->required();

  std::string embeddings_data;
  CLI::App* embeddings_cmd = nullptr;
  auto run_embeddings = AddEmbeddingsCommand(app, &embeddings_cmd);
  embeddings_cmd->add_option("--data", embeddings_data, "Data directory");

  std::string timeseries_data;
  CLI::App* timeseries_cmd = nullptr;
  auto run_timeseries = AddTimeseriesCommand(app, &timeseries_cmd);
  timeseries_cmd->add_option("--data", timeseries_data, "Data directory");

  std::string neurons_data;
  CLI::App* neurons_cmd = nullptr;
  auto run_neurons = AddNeuronsCommand(app, &neurons_cmd);
  neurons_cmd->add_option("--data", neurons_data, "Data directory");

  std::string weights_data;
  CLI::App* weights_cmd = nullptr;
  auto run_weights = AddWeightsCommand(app, &weights_cmd);
  weights_cmd->add_option("--data", weights_data, "Data directory");

  CLI11_PARSE(app, argc, argv);
  // Direct store access: the data directory is resolved and locked here (no mount may be using it).
  auto direct = [](const std::string& given, const auto& run) {
    std::string data = given.empty() ? DefaultDataDir() : given;
    Status st = MakeDirs(data);
    if (!st.ok()) return Fail(st.message());
    auto lock = LockDataDir(data);
    if (!lock.ok()) return Fail(lock.status().message());
    return run(data);
  };
  if (embeddings_cmd->parsed()) return direct(embeddings_data, run_embeddings);
  if (timeseries_cmd->parsed()) return direct(timeseries_data, run_timeseries);
  if (weights_cmd->parsed()) return direct(weights_data, run_weights);
  if (neurons_cmd->parsed()) return direct(neurons_data, run_neurons);
  if (mount->parsed()) return RunMount(ma);
  if (umount->parsed()) return RunUmount(umount_point);
  if (demo->parsed()) return RunDemo(demo_data);
  if (models->parsed()) {
    for (auto* sub : models->get_subcommands()) {
      return RunModels(models_data, sub->get_name(), models_id, models_layer, models_file);
    }
  }
  return 1;
}
