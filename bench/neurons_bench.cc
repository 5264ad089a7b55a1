// Store-API side of bench/neurons.sh: makes a deterministic neuron graph in memory and times the
// neuron store library (stores/neurons) on it, plus the raw-SQLite limits of the same work.
//
//   neurons_bench fill STORE_DIR              SaveAll of the whole graph into a new store (untimed
//                                             figures printed for information)
//   neurons_bench save-neurons BASE --reps R  per rep: a new store BASE/<r>, SaveAll of the neurons
//   neurons_bench save-synapses BASE --reps R per rep: a new store BASE/<r>, SaveAll of the neurons
//                                             (untimed), then SaveAll of the synapses (timed)
//   neurons_bench load STORE_DIR              Open + LoadAll (run it in a fresh process per sample)
//   neurons_bench list STORE_DIR              ListNeurons without vectors (what the mount's listing
//                                             of neurons/ asks the store)
//   neurons_bench raw-insert BASE --reps R    the neuron rows inserted with one prepared statement
//                                             into the store's schema and pragmas: the SQLite limit
//   neurons_bench raw-scan STORE_DIR          SELECT of every neuron (and synapse) column, touched,
//                                             nothing built: the read limit
//   neurons_bench native-dir STORE_DIR OUT    writes <uuid>.json (the mount's document text) and
//                                             <uuid>.vec of every neuron into the local folder OUT
//                                             (the native side of the listing benchmark)
//
// Graph options (every mode generates the same graph from them): --neurons N (100000), --dim D
// (384), --synapses M (1000000), --seed S (1). --prefault-mb P: before each timed save, write and
// delete a file of P MiB in BASE (untimed; see bench/README.md on this VM's page cache).
//
// Profiling: with NEURONS_BENCH_PERF_CTL=CTL_FIFO,ACK_FIFO the timed calls (SaveAll, LoadAll) are
// bracketed by "enable"/"disable" on perf's control fifo, so that
//   perf record -D -1 --control fifo:CTL_FIFO,ACK_FIFO -g -- neurons_bench save-neurons ...
// samples only them.
//
// The graph: N knowledge neurons with a vector of D float32 drawn from N(0, 1), a position in
// [-100, 100)^3, a small metadata dict, a source_data text of ~90 characters, two semantic_tags and
// a compression_ratio; M knowledge synapses between random pairs of distinct neurons, weights
// uniform in [-1, 1]. Ids are random UUIDs (v4), sorted; created_at = modified_at increase with the
// id (one microsecond apart), so the original's "ORDER BY created_at" lists entities in id order,
// the order of modelfs's export: both systems' exports of this graph then have the same checksum.
//
// Output: one "key value" line per figure (seconds unless the key says otherwise), e.g.
// "save_neurons_s 0.412345"; errors go to stderr with exit status 1.
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "stores/common/file_util.h"
#include "stores/neurons/graph.h"
#include "stores/neurons/neuron_store.h"

namespace nb {

using modelfs::neurons::Graph;
using modelfs::neurons::Json;
using modelfs::neurons::Neuron;
using modelfs::neurons::NeuronStore;
using modelfs::neurons::Synapse;

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "neurons_bench: %s\n", msg.c_str());
  std::exit(1);
}

template <typename T>
T OrDie(modelfs::Result<T> r, const std::string& what) {
  if (!r.ok()) Die(what + ": " + r.status().ToString());
  return std::move(r).value();
}
void OrDie(const modelfs::Status& st, const std::string& what) {
  if (!st.ok()) Die(what + ": " + st.ToString());
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void Print(const char* key, double seconds) { std::printf("%s %.6f\n", key, seconds); }
void PrintCount(const char* key, uint64_t n) { std::printf("%s %" PRIu64 "\n", key, n); }

long PeakRssKb() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

// ---- The graph ----

struct Options {
  uint64_t neurons = 100000;
  uint32_t dim = 384;
  uint64_t synapses = 1000000;
  uint64_t seed = 1;
  int reps = 3;
  uint64_t prefault_mb = 0;
};

// perf's control fifos (NEURONS_BENCH_PERF_CTL), or nothing.
class PerfControl {
 public:
  PerfControl() {
    const char* env = std::getenv("NEURONS_BENCH_PERF_CTL");
    if (env == nullptr || *env == '\0') return;
    std::string v = env;
    size_t comma = v.find(',');
    if (comma == std::string::npos) Die("NEURONS_BENCH_PERF_CTL: want CTL_FIFO,ACK_FIFO");
    ctl_ = ::open(v.substr(0, comma).c_str(), O_WRONLY | O_CLOEXEC);
    ack_ = ::open(v.substr(comma + 1).c_str(), O_RDONLY | O_CLOEXEC);
    if (ctl_ < 0 || ack_ < 0) Die("NEURONS_BENCH_PERF_CTL: cannot open the fifos");
  }
  void Enable() { Send("enable\n"); }
  void Disable() { Send("disable\n"); }

 private:
  void Send(const char* cmd) {
    if (ctl_ < 0) return;
    if (::write(ctl_, cmd, std::strlen(cmd)) < 0) Die("perf control fifo: write failed");
    char ack[16];
    if (::read(ack_, ack, sizeof ack) <= 0) Die("perf control fifo: no ack");
  }
  int ctl_ = -1, ack_ = -1;
};

PerfControl& Perf() {
  static PerfControl p;
  return p;
}

uint64_t Mix(uint64_t x) {  // splitmix64
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(Mix(seed)) {}
  uint64_t Next() { return Mix(s_++); }
  double Unit() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }  // [0, 1)

 private:
  uint64_t s_;
};

std::string UuidFrom(uint64_t hi, uint64_t lo) {
  hi = (hi & ~0xf000ULL) | 0x4000ULL;                          // version 4
  lo = (lo & ~(0xc0ULL << 56)) | (0x80ULL << 56);              // RFC 4122 variant
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%012" PRIx64,
                hi >> 32, (hi >> 16) & 0xffff, hi & 0xffff, lo >> 48, lo & uint64_t{0xffffffffffff});
  return buf;
}

std::vector<std::string> SortedIds(uint64_t n, uint64_t stream) {
  Rng rng(stream);
  std::vector<std::string> ids(n);
  for (auto& id : ids) {
    uint64_t hi = rng.Next();
    id = UuidFrom(hi, rng.Next());
  }
  std::sort(ids.begin(), ids.end());
  if (std::adjacent_find(ids.begin(), ids.end()) != ids.end()) Die("duplicate generated UUID");
  return ids;
}

constexpr int64_t kNeuronsBaseNs = 1735689600LL * 1000000000;  // 2025-01-01T00:00:00Z
constexpr int64_t kSynapsesBaseNs = 1735776000LL * 1000000000;  // 2025-01-02T00:00:00Z

const char* const kWords[] = {"water", "boils", "at",     "sea",   "level", "under", "normal",
                              "air",   "the",   "neuron", "graph", "holds", "facts", "about",
                              "light", "heat",  "sound",  "motion"};

std::vector<Neuron> MakeNeurons(const Options& o) {
  std::vector<std::string> ids = SortedIds(o.neurons, o.seed * 1000 + 1);
  std::vector<Neuron> out(o.neurons);
  for (uint64_t i = 0; i < o.neurons; ++i) {
    Neuron& n = out[i];
    Rng rng(o.seed * 0x100000000ULL + i);
    n.id = std::move(ids[i]);
    n.type = "knowledge";
    n.position = {rng.Unit() * 200 - 100, rng.Unit() * 200 - 100, rng.Unit() * 200 - 100};
    n.vector.resize(o.dim);
    for (uint32_t k = 0; k < o.dim; k += 2) {  // Box-Muller: two normals per pair of uniforms
      double u1 = 1.0 - rng.Unit(), u2 = rng.Unit();
      double r = std::sqrt(-2.0 * std::log(u1));
      n.vector[k] = static_cast<float>(r * std::cos(2 * M_PI * u2));
      if (k + 1 < o.dim) n.vector[k + 1] = static_cast<float>(r * std::sin(2 * M_PI * u2));
    }
    n.vector_dim = o.dim;
    n.metadata = Json::object({{"source", "neurons_bench"}, {"index", i}, {"batch", i / 1000}});
    n.activation_level = 0.0;
    n.created_at = modelfs::neurons::FormatIsoTime(kNeuronsBaseNs + static_cast<int64_t>(i + 1) * 1000);
    n.modified_at = n.created_at;
    std::string text = "knowledge item " + std::to_string(i) + ":";
    while (text.size() < 90) {
      text += ' ';
      text += kWords[rng.Next() % (sizeof kWords / sizeof kWords[0])];
    }
    n.source_data = std::move(text);
    n.compression_ratio = 0.25 + static_cast<double>(i % 8) * 0.0625;
    n.semantic_tags = Json::array({"bench", "topic-" + std::to_string(i % 100)});
  }
  return out;
}

std::vector<Synapse> MakeSynapses(const Options& o, const std::vector<Neuron>& neurons) {
  std::vector<std::string> ids = SortedIds(o.synapses, o.seed * 1000 + 2);
  std::vector<Synapse> out(o.synapses);
  Rng rng(o.seed * 1000 + 3);
  const uint64_t n = neurons.size();
  for (uint64_t j = 0; j < o.synapses; ++j) {
    Synapse& s = out[j];
    s.id = std::move(ids[j]);
    uint64_t a = rng.Next() % n, b = rng.Next() % n;
    if (b == a) b = (a + 1) % n;
    s.source_neuron_id = neurons[a].id;
    s.target_neuron_id = neurons[b].id;
    s.weight = rng.Unit() * 2 - 1;
    s.usage_count = 0;
    s.synapse_type = "knowledge";
    s.created_at =
        modelfs::neurons::FormatIsoTime(kSynapsesBaseNs + static_cast<int64_t>(j + 1) * 1000);
    s.modified_at = s.created_at;
  }
  return out;
}

// ---- Modes ----

std::unique_ptr<NeuronStore> OpenStore(const std::string& dir) {
  return OrDie(NeuronStore::Open(dir), "open " + dir);
}

void MustNotExist(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) Die(path + " exists (benchmarks write into fresh stores)");
}

// An untimed write and delete of mb MiB in dir: pages freed just before a timed write are reused.
void Prefault(const std::string& dir, uint64_t mb) {
  if (mb == 0) return;
  const std::string path = dir + "/prefault";
  std::vector<char> block(1 << 20, 0);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) Die("create " + path + ": " + std::strerror(errno));
  for (uint64_t i = 0; i < mb; ++i) {
    if (::write(fd, block.data(), block.size()) != static_cast<ssize_t>(block.size())) Die("write " + path);
  }
  ::close(fd);
  ::unlink(path.c_str());
}

int Fill(const Options& o, const std::string& dir) {
  MustNotExist(dir);
  Graph g;
  g.neurons = MakeNeurons(o);
  g.synapses = MakeSynapses(o, g.neurons);
  auto store = OpenStore(dir);
  double t0 = Now();
  auto c = OrDie(store->SaveAll(g), "SaveAll");
  Print("fill_save_s", Now() - t0);
  PrintCount("fill_neurons", c.neurons_saved);
  PrintCount("fill_synapses", c.synapses_saved);
  return 0;
}

int SaveNeurons(const Options& o, const std::string& base) {
  double t0 = Now();
  Graph g;
  g.neurons = MakeNeurons(o);
  Print("generate_neurons_s", Now() - t0);
  OrDie(modelfs::MakeDirs(base), "mkdir " + base);
  for (int r = 1; r <= o.reps; ++r) {
    const std::string dir = base + "/" + std::to_string(r);
    MustNotExist(dir);
    Prefault(base, o.prefault_mb);
    double a = Now();
    auto store = OpenStore(dir);
    double b = Now();
    Perf().Enable();
    auto c = OrDie(store->SaveAll(g), "SaveAll neurons");
    Perf().Disable();
    double d = Now();
    store.reset();  // checkpoints the WAL into the database and truncates it
    double e = Now();
    if (c.neurons_saved != g.neurons.size()) Die("SaveAll saved " + std::to_string(c.neurons_saved));
    Print("open_s", b - a);
    Print("save_neurons_s", d - b);
    Print("close_s", e - d);
  }
  std::printf("peak_rss_kb %ld\n", PeakRssKb());
  return 0;
}

int SaveSynapses(const Options& o, const std::string& base) {
  double t0 = Now();
  Graph neurons, synapses;
  neurons.neurons = MakeNeurons(o);
  synapses.synapses = MakeSynapses(o, neurons.neurons);
  Print("generate_graph_s", Now() - t0);
  OrDie(modelfs::MakeDirs(base), "mkdir " + base);
  for (int r = 1; r <= o.reps; ++r) {
    const std::string dir = base + "/" + std::to_string(r);
    MustNotExist(dir);
    auto store = OpenStore(dir);
    OrDie(store->SaveAll(neurons).status(), "SaveAll neurons");
    Prefault(base, o.prefault_mb);
    double b = Now();
    Perf().Enable();
    auto c = OrDie(store->SaveAll(synapses), "SaveAll synapses");
    Perf().Disable();
    double d = Now();
    store.reset();
    double e = Now();
    if (c.synapses_saved != synapses.synapses.size()) {
      Die("SaveAll saved " + std::to_string(c.synapses_saved) + " synapses");
    }
    Print("save_synapses_s", d - b);
    Print("close_s", e - d);
  }
  std::printf("peak_rss_kb %ld\n", PeakRssKb());
  return 0;
}

int Load(const std::string& dir) {
  struct stat st;
  if (::stat((dir + "/graph.db").c_str(), &st) != 0) Die(dir + "/graph.db: no such store");
  double a = Now();
  auto store = OpenStore(dir);
  double b = Now();
  Perf().Enable();
  Graph g = OrDie(store->LoadAll(), "LoadAll");
  Perf().Disable();
  double c = Now();
  // A cheap check that everything came: counts and every vector's length.
  uint64_t floats = 0;
  for (const Neuron& n : g.neurons) floats += n.vector.size();
  Print("open_s", b - a);
  Print("load_s", c - b);
  Print("open_load_s", c - a);
  PrintCount("neurons", g.neurons.size());
  PrintCount("synapses", g.synapses.size());
  PrintCount("vector_floats", floats);
  std::printf("peak_rss_kb %ld\n", PeakRssKb());
  return 0;
}

int List(const std::string& dir) {
  auto store = OpenStore(dir);
  double a = Now();
  modelfs::neurons::NeuronQuery q;
  q.with_vectors = false;
  auto page = OrDie(store->ListNeurons(q), "ListNeurons");
  double b = Now();
  Print("list_neurons_s", b - a);
  PrintCount("neurons", page.items.size());
  return 0;
}

// ---- Raw SQLite ----

void Exec(sqlite3* db, const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "?";
    sqlite3_free(err);
    Die(sql.substr(0, 60) + ": " + msg);
  }
}

// The store's version-1 tables and indexes and its v2 column (stores/neurons/neuron_store.cc).
constexpr char kSchema[] = R"sql(
CREATE TABLE neurons (
    id TEXT PRIMARY KEY, position_x REAL NOT NULL, position_y REAL NOT NULL,
    position_z REAL NOT NULL, vector BLOB, neuron_type TEXT NOT NULL, metadata TEXT,
    activation_level REAL DEFAULT 0.0, created_at TEXT NOT NULL, modified_at TEXT NOT NULL,
    source_data TEXT, compression_ratio REAL, semantic_tags TEXT, function_signature TEXT,
    executable_code TEXT, input_schema TEXT, output_schema TEXT, execution_count INTEGER DEFAULT 0,
    average_execution_time REAL DEFAULT 0.0, activation_threshold REAL DEFAULT 0.5, extra TEXT);
CREATE TABLE synapses (
    id TEXT PRIMARY KEY, source_neuron_id TEXT NOT NULL, target_neuron_id TEXT NOT NULL,
    weight REAL NOT NULL CHECK(weight >= -1.0 AND weight <= 1.0), usage_count INTEGER DEFAULT 0,
    last_traversed TEXT, synapse_type TEXT NOT NULL, metadata TEXT, created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    FOREIGN KEY (source_neuron_id) REFERENCES neurons(id) ON DELETE CASCADE,
    FOREIGN KEY (target_neuron_id) REFERENCES neurons(id) ON DELETE CASCADE);
)sql";
constexpr char kNeuronIndexes[] = R"sql(
CREATE INDEX idx_neurons_position ON neurons(position_x, position_y, position_z);
CREATE INDEX idx_neurons_type ON neurons(neuron_type);
CREATE INDEX idx_neurons_modified ON neurons(modified_at);
)sql";

// One neuron row's column values, rendered before the clock starts (the limit is SQLite's work).
struct RawRow {
  std::string metadata, semantic_tags;
};

// Inserts every neuron with one prepared statement in one transaction, with the store's pragmas
// (page_size 65536, WAL, synchronous=NORMAL, foreign_keys=ON, no autocheckpoint, the page cache
// SaveAll gives itself for this much data). indexes_after: the secondary indexes are created after
// the rows (what SaveAll does for a bulk load into an empty table) instead of before.
struct RawTimes {
  double total = 0, rows = 0, indexes = 0, commit = 0;  // rows: BEGIN + the INSERTs
};

RawTimes RawInsert(const std::vector<Neuron>& neurons, const std::vector<RawRow>& rows,
                   const std::string& path, bool indexes_after) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    Die("open " + path);
  }
  uint64_t bytes = 0;
  for (const Neuron& n : neurons) bytes += n.vector.size() * sizeof(float) + 400;
  bytes += bytes / 4;
  Exec(db, "PRAGMA page_size=65536");
  Exec(db, "PRAGMA journal_mode=WAL");
  Exec(db, "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; PRAGMA wal_autocheckpoint=0");
  Exec(db, "PRAGMA cache_size=-" + std::to_string(std::max<uint64_t>(bytes, 128 << 20) / 1024));
  Exec(db, kSchema);
  if (!indexes_after) Exec(db, kNeuronIndexes);
  sqlite3_stmt* st = nullptr;
  const char* sql =
      "INSERT INTO neurons(id, position_x, position_y, position_z, vector, neuron_type, metadata, "
      "activation_level, created_at, modified_at, source_data, compression_ratio, semantic_tags, "
      "function_signature, executable_code, input_schema, output_schema, execution_count, "
      "average_execution_time, activation_threshold, extra) "
      "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, "
      "?20, ?21)";
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK) Die(sqlite3_errmsg(db));
  double t0 = Now();
  Exec(db, "BEGIN IMMEDIATE");
  for (size_t i = 0; i < neurons.size(); ++i) {
    const Neuron& n = neurons[i];
    const RawRow& r = rows[i];
    sqlite3_bind_text(st, 1, n.id.data(), static_cast<int>(n.id.size()), SQLITE_STATIC);
    sqlite3_bind_double(st, 2, n.position.x);
    sqlite3_bind_double(st, 3, n.position.y);
    sqlite3_bind_double(st, 4, n.position.z);
    sqlite3_bind_blob(st, 5, n.vector.data(), static_cast<int>(n.vector.size() * 4), SQLITE_STATIC);
    sqlite3_bind_text(st, 6, n.type.data(), static_cast<int>(n.type.size()), SQLITE_STATIC);
    sqlite3_bind_text(st, 7, r.metadata.data(), static_cast<int>(r.metadata.size()), SQLITE_STATIC);
    sqlite3_bind_double(st, 8, n.activation_level);
    sqlite3_bind_text(st, 9, n.created_at.data(), static_cast<int>(n.created_at.size()), SQLITE_STATIC);
    sqlite3_bind_text(st, 10, n.modified_at.data(), static_cast<int>(n.modified_at.size()), SQLITE_STATIC);
    sqlite3_bind_text(st, 11, n.source_data->data(), static_cast<int>(n.source_data->size()),
                      SQLITE_STATIC);
    sqlite3_bind_double(st, 12, *n.compression_ratio);
    sqlite3_bind_text(st, 13, r.semantic_tags.data(), static_cast<int>(r.semantic_tags.size()),
                      SQLITE_STATIC);
    for (int k = 14; k <= 17; ++k) sqlite3_bind_null(st, k);
    sqlite3_bind_int64(st, 18, 0);
    sqlite3_bind_double(st, 19, 0.0);
    sqlite3_bind_double(st, 20, 0.5);
    sqlite3_bind_null(st, 21);
    if (sqlite3_step(st) != SQLITE_DONE) Die(std::string("insert: ") + sqlite3_errmsg(db));
    sqlite3_reset(st);
  }
  double t1 = Now();
  if (indexes_after) Exec(db, kNeuronIndexes);
  double t2 = Now();
  Exec(db, "COMMIT");
  double t3 = Now();
  sqlite3_finalize(st);
  sqlite3_close(db);
  return {t3 - t0, t1 - t0, t2 - t1, t3 - t2};
}

int RawInsertMode(const Options& o, const std::string& base) {
  std::vector<Neuron> neurons = MakeNeurons(o);
  std::vector<RawRow> rows(neurons.size());
  for (size_t i = 0; i < neurons.size(); ++i) {
    modelfs::neurons::PyJsonDump(neurons[i].metadata, &rows[i].metadata);
    modelfs::neurons::PyJsonDump(neurons[i].semantic_tags, &rows[i].semantic_tags);
  }
  OrDie(modelfs::MakeDirs(base), "mkdir " + base);
  for (int r = 1; r <= o.reps; ++r) {
    for (bool after : {false, true}) {
      const std::string path = base + "/" + std::to_string(r) + (after ? "-after" : "") + ".db";
      MustNotExist(path);
      Prefault(base, o.prefault_mb);
      RawTimes t = RawInsert(neurons, rows, path, after);
      const std::string key = after ? "raw_insert_indexes_after" : "raw_insert";
      Print((key + "_s").c_str(), t.total);
      // Where it goes: the INSERT loop, the index builds (indexes_after), the COMMIT (the WAL write).
      Print((key + "_rows_s").c_str(), t.rows);
      if (after) Print((key + "_build_s").c_str(), t.indexes);
      Print((key + "_commit_s").c_str(), t.commit);
    }
  }
  return 0;
}

// Steps a SELECT over every row and reads every column as the store's reads do (blob, text,
// double, int), summing lengths so that nothing is optimized away; builds nothing.
uint64_t Scan(sqlite3* db, const char* sql, int columns, uint64_t* rows) {
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK) Die(sqlite3_errmsg(db));
  uint64_t sum = 0;
  *rows = 0;
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    ++*rows;
    for (int c = 0; c < columns; ++c) {
      switch (sqlite3_column_type(st, c)) {
        case SQLITE_BLOB: sum += sqlite3_column_bytes(st, c) + (sqlite3_column_blob(st, c) != nullptr); break;
        case SQLITE_TEXT: sum += sqlite3_column_bytes(st, c) + (sqlite3_column_text(st, c) != nullptr); break;
        case SQLITE_FLOAT: sum += sqlite3_column_double(st, c) > 0; break;
        case SQLITE_INTEGER: sum += static_cast<uint64_t>(sqlite3_column_int64(st, c)); break;
        default: break;
      }
    }
  }
  if (rc != SQLITE_DONE) Die(std::string("scan: ") + sqlite3_errmsg(db));
  sqlite3_finalize(st);
  return sum;
}

int RawScan(const std::string& dir) {
  const std::string path = dir + "/graph.db";
  double a = Now();
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
    Die("open " + path);
  }
  Exec(db, "PRAGMA query_only=1; PRAGMA mmap_size=1073741824");  // the store's read connections
  Exec(db, "BEGIN");
  uint64_t nrows = 0, srows = 0;
  double b = Now();
  uint64_t sum = Scan(db, "SELECT id, position_x, position_y, position_z, vector, neuron_type, metadata, "
                          "activation_level, created_at, modified_at, source_data, compression_ratio, "
                          "semantic_tags, function_signature, executable_code, input_schema, output_schema, "
                          "execution_count, average_execution_time, activation_threshold, extra FROM neurons",
                      21, &nrows);
  double c = Now();
  sum += Scan(db, "SELECT id, source_neuron_id, target_neuron_id, weight, usage_count, last_traversed, "
                  "synapse_type, metadata, created_at, modified_at FROM synapses",
              10, &srows);
  double d = Now();
  Exec(db, "COMMIT");
  sqlite3_close(db);
  Print("raw_open_s", b - a);
  Print("raw_scan_neurons_s", c - b);
  Print("raw_scan_synapses_s", d - c);
  PrintCount("neurons", nrows);
  PrintCount("synapses", srows);
  PrintCount("checksum", sum);
  return 0;
}

// ---- The native folder of the listing benchmark ----

void WriteFile(const std::string& path, const void* data, size_t n) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) Die("create " + path + ": " + std::strerror(errno));
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) Die("write " + path + ": " + std::strerror(errno));
    p += w;
    n -= static_cast<size_t>(w);
  }
  if (::close(fd) != 0) Die("close " + path + ": " + std::strerror(errno));
}

int NativeDir(const std::string& dir, const std::string& out) {
  auto store = OpenStore(dir);
  OrDie(modelfs::MakeDirs(out + "/by-type/knowledge"), "mkdir " + out);
  OrDie(modelfs::MakeDirs(out + "/graph"), "mkdir " + out);
  modelfs::neurons::NeuronQuery q;
  q.page.limit = 10000;
  uint64_t files = 0;
  std::string text;
  for (;;) {
    auto page = OrDie(store->ListNeurons(q), "ListNeurons");
    for (const Neuron& n : page.items) {
      // The mount's document of a neuron (fs/neurons_folder.cc RenderNeuron).
      text.clear();
      modelfs::neurons::PyJsonDump(modelfs::neurons::NeuronToDocument(n, false), &text, 2);
      text += '\n';
      WriteFile(out + "/" + n.id + ".json", text.data(), text.size());
      WriteFile(out + "/" + n.id + ".vec", n.vector.data(), n.vector.size() * sizeof(float));
      files += 2;
    }
    if (page.next_after.empty()) break;
    q.page.after = page.next_after;
  }
  PrintCount("files", files);
  return 0;
}

int Usage() {
  std::fprintf(stderr,
               "usage: neurons_bench fill STORE_DIR | save-neurons BASE | save-synapses BASE | load STORE_DIR |\n"
               "                     list STORE_DIR | raw-insert BASE | raw-scan STORE_DIR |\n"
               "                     native-dir STORE_DIR OUT\n"
               "       options: --neurons N --dim D --synapses M --seed S --reps R --prefault-mb P\n");
  return 2;
}

}  // namespace nb

int main(int argc, char** argv) {
  using namespace nb;
  Options o;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> uint64_t {
      if (i + 1 >= argc) std::exit(Usage());
      char* end = nullptr;
      uint64_t v = std::strtoull(argv[++i], &end, 10);
      if (*end != '\0') std::exit(Usage());
      return v;
    };
    if (a == "--neurons") o.neurons = value();
    else if (a == "--dim") o.dim = static_cast<uint32_t>(value());
    else if (a == "--synapses") o.synapses = value();
    else if (a == "--seed") o.seed = value();
    else if (a == "--reps") o.reps = static_cast<int>(value());
    else if (a == "--prefault-mb") o.prefault_mb = value();
    else if (a.rfind("--", 0) == 0) return Usage();
    else pos.push_back(a);
  }
  if (pos.empty()) return Usage();
  if (o.neurons < 2 || o.dim == 0 || o.reps < 1) return Usage();
  const std::string& mode = pos[0];
  if (pos.size() == 2) {
    if (mode == "fill") return Fill(o, pos[1]);
    if (mode == "save-neurons") return SaveNeurons(o, pos[1]);
    if (mode == "save-synapses") return SaveSynapses(o, pos[1]);
    if (mode == "load") return Load(pos[1]);
    if (mode == "list") return List(pos[1]);
    if (mode == "raw-insert") return RawInsertMode(o, pos[1]);
    if (mode == "raw-scan") return RawScan(pos[1]);
  }
  if (pos.size() == 3 && mode == "native-dir") return NativeDir(pos[1], pos[2]);
  return Usage();
}
