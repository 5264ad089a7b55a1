// NeuronStore on real SQLite files in temp dirs. Interop with the original program is checked
// against Debian's CPython (/usr/bin/python3 with its sqlite3 module and numpy): a v1 database made
// the original's way is opened and migrated, python reads the migrated one back, and export
// checksums equal python's. Speed is measured by bench/neurons.sh, not here.
#include "stores/neurons/neuron_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "stores/common/file_util.h"
#include "stores/common/sqlite_db.h"
#include "tests/stores/run_python.h"
#include "tests/stores/temp_dir.h"

namespace modelfs::neurons {
namespace {

using ::modelfs::testing::Exists;
using ::modelfs::testing::TempDir;

#define EXPECT_OK(expr)                    \
  do {                                     \
    ::modelfs::Status _s = (expr);         \
    EXPECT_TRUE(_s.ok()) << _s.ToString(); \
  } while (0)

using ::modelfs::testing::RunPython;

// ---- Entities ----

// A neuron of `type` with every field of that type set, distinct per seed.
Neuron MakeNeuron(const std::string& type, int seed, size_t dim = 8) {
  Neuron n;
  n.id = NewUuid();
  n.type = type;
  n.position = {seed * 1.5, -seed * 0.25, 1e-7 * seed};
  for (size_t i = 0; i < dim; ++i) n.vector.push_back(static_cast<float>(seed) + 0.125f * i);
  n.metadata = {{"seed", seed}, {"name", "n" + std::to_string(seed)}, {"w", 0.1 * seed}};
  n.activation_level = 0.01 * seed;
  n.created_at = "2024-01-02T03:04:05.000006";
  n.modified_at = "2024-01-02T03:04:0" + std::to_string(seed % 10);
  if (type == "knowledge") {
    n.source_data = "fact \"" + std::to_string(seed) + "\" \xc3\xa9";
    n.compression_ratio = 0.5 + seed;
    n.semantic_tags = Json::array({"a", "tag" + std::to_string(seed)});
    n.extra = {{"importance", 0.75}};
  } else if (type == "tool") {
    n.function_signature = "f(x: int) -> int";
    n.executable_code = "def f(x):\n    return x + " + std::to_string(seed);
    n.input_schema = {{"type", "object"}, {"properties", {{"x", {{"type", "integer"}}}}}};
    n.output_schema = {{"type", "integer"}};
    n.execution_count = seed;
    n.average_execution_time = 0.25 * seed;
    n.activation_threshold = 0.7;
  } else {
    n.extra = {{"mood", "calm"}, {"level", seed}, {"nested", {{"list", {1, 2.5, nullptr}}}}};
  }
  return n;
}

Synapse MakeSynapse(const Neuron& from, const Neuron& to, double weight,
                    const std::string& type = "knowledge") {
  Synapse s;
  s.id = NewUuid();
  s.source_neuron_id = from.id;
  s.target_neuron_id = to.id;
  s.weight = weight;
  s.usage_count = 3;
  s.last_traversed = "2024-03-04T05:06:07.5";
  s.synapse_type = type;
  s.metadata = {{"why", "test"}};
  s.created_at = "2024-01-02T03:04:05";
  s.modified_at = "2024-01-02T03:04:06";
  return s;
}

std::vector<uint32_t> Bits(const std::vector<float>& v) {
  std::vector<uint32_t> out(v.size());
  if (!v.empty()) memcpy(out.data(), v.data(), v.size() * 4);
  return out;
}

// Every stored field equal (vectors bit for bit); vector_dim and vector_hash are set by reads only
// and checked where a test reads.
void ExpectSameNeuron(const Neuron& want, const Neuron& got) {
  SCOPED_TRACE("neuron " + want.id);
  EXPECT_EQ(want.id, got.id);
  EXPECT_EQ(want.type, got.type);
  EXPECT_EQ(want.position, got.position);
  EXPECT_EQ(Bits(want.vector), Bits(got.vector));
  EXPECT_EQ(want.metadata, got.metadata);
  EXPECT_EQ(want.activation_level, got.activation_level);
  EXPECT_EQ(want.created_at, got.created_at);
  EXPECT_EQ(want.modified_at, got.modified_at);
  EXPECT_EQ(want.source_data, got.source_data);
  EXPECT_EQ(want.compression_ratio, got.compression_ratio);
  EXPECT_EQ(want.semantic_tags, got.semantic_tags);
  EXPECT_EQ(want.function_signature, got.function_signature);
  EXPECT_EQ(want.executable_code, got.executable_code);
  EXPECT_EQ(want.input_schema, got.input_schema);
  EXPECT_EQ(want.output_schema, got.output_schema);
  EXPECT_EQ(want.execution_count, got.execution_count);
  EXPECT_EQ(want.average_execution_time, got.average_execution_time);
  EXPECT_EQ(want.activation_threshold, got.activation_threshold);
  EXPECT_EQ(want.extra, got.extra);
}

void ExpectSameSynapse(const Synapse& want, const Synapse& got) {
  SCOPED_TRACE("synapse " + want.id);
  EXPECT_EQ(want.id, got.id);
  EXPECT_EQ(want.source_neuron_id, got.source_neuron_id);
  EXPECT_EQ(want.target_neuron_id, got.target_neuron_id);
  EXPECT_EQ(want.weight, got.weight);
  EXPECT_EQ(want.usage_count, got.usage_count);
  EXPECT_EQ(want.last_traversed, got.last_traversed);
  EXPECT_EQ(want.synapse_type, got.synapse_type);
  EXPECT_EQ(want.metadata, got.metadata);
  EXPECT_EQ(want.created_at, got.created_at);
  EXPECT_EQ(want.modified_at, got.modified_at);
}

void ExpectSameGraph(const Graph& want, const Graph& got) {
  ASSERT_EQ(want.neurons.size(), got.neurons.size());
  ASSERT_EQ(want.synapses.size(), got.synapses.size());
  for (size_t i = 0; i < want.neurons.size(); ++i)
    ExpectSameNeuron(want.neurons[i], got.neurons[i]);
  for (size_t i = 0; i < want.synapses.size(); ++i) {
    ExpectSameSynapse(want.synapses[i], got.synapses[i]);
  }
}

Graph Sorted(Graph g) {
  std::sort(g.neurons.begin(), g.neurons.end(),
            [](const Neuron& a, const Neuron& b) { return a.id < b.id; });
  std::sort(g.synapses.begin(), g.synapses.end(),
            [](const Synapse& a, const Synapse& b) { return a.id < b.id; });
  return g;
}

// A small graph with all three kinds of neuron and synapses between them.
Graph SampleGraph(int neurons = 9) {
  Graph g;
  const char* types[] = {"knowledge", "tool", "memory"};
  for (int i = 0; i < neurons; ++i) g.neurons.push_back(MakeNeuron(types[i % 3], i + 1));
  for (int i = 0; i + 1 < neurons; ++i) {
    g.synapses.push_back(MakeSynapse(g.neurons[i], g.neurons[i + 1], 0.1 * (i % 10) - 0.45,
                                     std::string(kSynapseTypes[i % 3])));
  }
  return g;
}

std::string ReadAll(const std::string& path) {
  auto s = ReadFileToString(path);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? *s : std::string();
}

ExportCounts ExportTo(NeuronStore& store, const std::string& path);
Result<ExportCounts> ImportFrom(NeuronStore& store, const std::string& path, ImportMode mode,
                                std::optional<int64_t> change_time = {});

// ---- Fixture ----

class NeuronStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(tmp_.ok());
    Reopen();
  }
  void Reopen(StoreOptions options = {}) {
    store_.reset();
    auto s = NeuronStore::Open(StoreDir(), options);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
  }
  std::string StoreDir() const { return tmp_.Sub("store"); }

  Graph Load() {
    auto g = store_->LoadAll();
    EXPECT_TRUE(g.ok()) << g.status().ToString();
    return g.ok() ? std::move(g).value() : Graph();
  }
  int64_t Gen() {
    auto g = store_->Generation();
    EXPECT_TRUE(g.ok()) << g.status().ToString();
    return g.ok() ? *g : -1;
  }
  // Saves g and returns it sorted as LoadAll returns it.
  Graph Save(const Graph& g) {
    auto c = store_->SaveAll(g);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return Sorted(g);
  }

  TempDir tmp_;
  std::unique_ptr<NeuronStore> store_;
};

// ---- CRUD ----

TEST_F(NeuronStoreTest, NeuronsOfEveryTypeRoundTripWithAllFields) {
  for (const char* type : {"knowledge", "tool", "memory"}) {
    Neuron n = MakeNeuron(type, 7, 384);
    n.vector[3] = -0.0f;
    n.vector[4] = std::numeric_limits<float>::denorm_min();
    ASSERT_OK(store_->CreateNeuron(n));
    auto got = store_->GetNeuron(n.id);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    ExpectSameNeuron(n, *got);
    EXPECT_EQ(got->vector_dim, 384u);
    EXPECT_EQ(got->vector_hash, XXH3_64bits(n.vector.data(), n.vector.size() * 4));
  }
}

TEST_F(NeuronStoreTest, NullFieldsStayNull) {
  Neuron n;
  n.id = NewUuid();
  n.type = "knowledge";
  n.metadata = Json::object();
  n.created_at = "2024-01-01T00:00:00";
  n.modified_at = "2024-01-01T00:00:00";
  ASSERT_OK(store_->CreateNeuron(n));
  auto got = store_->GetNeuron(n.id);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ExpectSameNeuron(n, *got);
  EXPECT_TRUE(got->vector.empty());
  EXPECT_EQ(got->vector_dim, 0u);
  EXPECT_EQ(got->vector_hash, 0u);
  EXPECT_FALSE(got->source_data);
  EXPECT_FALSE(got->compression_ratio);
  EXPECT_TRUE(got->semantic_tags.is_null());
  EXPECT_TRUE(got->input_schema.is_null());

  // The columns are really NULL, as the original leaves them.
  auto db = SqliteDb::Open(StoreDir() + "/graph.db", SQLITE_OPEN_READONLY);
  ASSERT_TRUE(db.ok());
  auto row = db->QueryRow(
      "SELECT vector IS NULL, source_data IS NULL, semantic_tags IS NULL, "
      "extra IS NULL, metadata FROM neurons WHERE id = ?",
      n.id);
  ASSERT_TRUE(row.ok() && row->found);
  for (int c = 0; c < 4; ++c) EXPECT_EQ(row->stmt.ColumnInt64(c), 1) << c;
  EXPECT_EQ(row->stmt.ColumnText(4), "{}");
}

TEST_F(NeuronStoreTest, EmptyTimesAreFilledAndCreatedAtKeptOnUpdate) {
  Neuron n = MakeNeuron("memory", 1);
  n.created_at.clear();
  n.modified_at.clear();
  ASSERT_OK(store_->CreateNeuron(n));
  auto got = store_->GetNeuron(n.id);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(ParseIsoTime(got->created_at).ok()) << got->created_at;
  EXPECT_EQ(got->created_at, got->modified_at);
  const std::string created = got->created_at;
  usleep(2000);
  n.activation_level = 0.9;  // created_at still empty: the stored one stays
  ASSERT_OK(store_->UpdateNeuron(n));
  got = store_->GetNeuron(n.id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->created_at, created);
  EXPECT_GT(got->modified_at, created);
  EXPECT_EQ(got->activation_level, 0.9);
  ASSERT_OK(store_->PutNeuron(n));
  got = store_->GetNeuron(n.id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->created_at, created);
}

TEST_F(NeuronStoreTest, UpdatePutDeleteAndTheirErrors) {
  Neuron a = MakeNeuron("knowledge", 1), b = MakeNeuron("tool", 2);
  ASSERT_OK(store_->CreateNeuron(a));
  EXPECT_EQ(store_->CreateNeuron(a).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->UpdateNeuron(b).code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->GetNeuron(b.id).status().code(), StatusCode::kNotFound);
  ASSERT_OK(store_->PutNeuron(b));  // creates
  b.type = "memory";
  b.function_signature.reset();
  b.extra = {{"x", 1}};
  ASSERT_OK(store_->PutNeuron(b));  // updates
  auto got = store_->GetNeuron(b.id);
  ASSERT_TRUE(got.ok());
  ExpectSameNeuron(b, *got);
  a.vector.clear();  // the vector goes: NULL
  ASSERT_OK(store_->UpdateNeuron(a));
  got = store_->GetNeuron(a.id);
  ASSERT_TRUE(got.ok());
  ExpectSameNeuron(a, *got);

  ASSERT_OK(store_->DeleteNeuron(a.id));
  EXPECT_EQ(store_->DeleteNeuron(a.id).code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->GetNeuron(a.id).status().code(), StatusCode::kNotFound);
}

TEST_F(NeuronStoreTest, SynapseCrud) {
  Neuron a = MakeNeuron("knowledge", 1), b = MakeNeuron("tool", 2), c = MakeNeuron("tool", 3);
  ASSERT_OK(store_->BatchCreateNeurons({a, b, c}));
  Synapse s = MakeSynapse(a, b, -1.0, "tool_input");
  ASSERT_OK(store_->CreateSynapse(s));
  auto got = store_->GetSynapse(s.id);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ExpectSameSynapse(s, *got);
  EXPECT_EQ(store_->CreateSynapse(s).code(), StatusCode::kAlreadyExists);

  s.target_neuron_id = c.id;
  s.weight = 1.0;
  s.last_traversed.reset();
  s.metadata = Json::object();
  s.synapse_type = "tool_output";
  ASSERT_OK(store_->UpdateSynapse(s));
  got = store_->GetSynapse(s.id);
  ASSERT_TRUE(got.ok());
  ExpectSameSynapse(s, *got);

  Synapse t = MakeSynapse(c, a, 0.0);
  EXPECT_EQ(store_->UpdateSynapse(t).code(), StatusCode::kNotFound);
  ASSERT_OK(store_->PutSynapse(t));
  t.weight = 0.5;
  ASSERT_OK(store_->PutSynapse(t));
  got = store_->GetSynapse(t.id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->weight, 0.5);

  ASSERT_OK(store_->DeleteSynapse(t.id));
  EXPECT_EQ(store_->DeleteSynapse(t.id).code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->GetSynapse(t.id).status().code(), StatusCode::kNotFound);
}

TEST_F(NeuronStoreTest, PutNeuronKeepsItsSynapses) {
  Neuron a = MakeNeuron("knowledge", 1), b = MakeNeuron("knowledge", 2);
  ASSERT_OK(store_->BatchCreateNeurons({a, b}));
  Synapse s = MakeSynapse(a, b, 0.5);
  ASSERT_OK(store_->CreateSynapse(s));
  a.activation_level = 0.75;
  ASSERT_OK(store_->PutNeuron(a));  // an upsert, never a delete + insert (which would cascade)
  ASSERT_OK(store_->SaveAll(Graph{{a, b}, {}}).status());
  EXPECT_TRUE(store_->GetSynapse(s.id).ok());
}

TEST_F(NeuronStoreTest, DeleteNeuronCascadesAndCounts) {
  Graph g = SampleGraph(4);                                            // 0 -> 1 -> 2 -> 3
  g.synapses.push_back(MakeSynapse(g.neurons[1], g.neurons[1], 0.3));  // a loop on 1
  g.synapses.push_back(MakeSynapse(g.neurons[3], g.neurons[1], 0.3));
  Save(g);
  uint64_t cascaded = 0;
  ASSERT_OK(store_->DeleteNeuron(g.neurons[1].id, &cascaded));
  EXPECT_EQ(cascaded, 4u);  // 0->1, 1->2, 1->1, 3->1
  Graph left = Load();
  ASSERT_EQ(left.synapses.size(), 1u);
  EXPECT_EQ(left.synapses[0].id, g.synapses[2].id);  // 2 -> 3
  EXPECT_EQ(left.neurons.size(), 3u);
}

// ---- Validation: refused before anything is written ----

TEST_F(NeuronStoreTest, InvalidEntitiesAreRefusedAndChangeNothing) {
  Graph g = Save(SampleGraph(3));
  const int64_t gen = Gen();
  auto expect_refused = [&](Status st, StatusCode code, const std::string& text) {
    EXPECT_EQ(st.code(), code) << st.ToString();
    EXPECT_NE(st.message().find(text), std::string::npos) << st.ToString();
  };

  Neuron n = MakeNeuron("knowledge", 10, 32);
  n.vector[17] = std::nanf("");
  expect_refused(store_->CreateNeuron(n), StatusCode::kInvalidArgument,
                 "neuron " + n.id + ": vector element 17 is NaN");
  n.vector[17] = -std::numeric_limits<float>::infinity();
  expect_refused(store_->PutNeuron(n), StatusCode::kInvalidArgument, "vector element 17 is -inf");
  n = MakeNeuron("knowledge", 10);
  n.id = "not-a-uuid";
  expect_refused(store_->CreateNeuron(n), StatusCode::kInvalidArgument, "neuron id");
  n.id = "0A0B0C0D-0000-4000-8000-000000000000";  // upper case is not canonical
  expect_refused(store_->CreateNeuron(n), StatusCode::kInvalidArgument, "neuron id");
  n = MakeNeuron("a/b", 10);
  expect_refused(store_->CreateNeuron(n), StatusCode::kInvalidArgument, "type");
  n = MakeNeuron("memory", 10);
  n.position.y = std::numeric_limits<double>::infinity();
  expect_refused(store_->CreateNeuron(n), StatusCode::kInvalidArgument, "position y is inf");
  n = MakeNeuron("memory", 10);
  n.created_at = "yesterday";
  expect_refused(store_->CreateNeuron(n), StatusCode::kInvalidArgument, "created_at");
  n = MakeNeuron("memory", 10);
  n.metadata = Json::array();
  expect_refused(store_->CreateNeuron(n), StatusCode::kInvalidArgument, "metadata");

  Synapse s = MakeSynapse(g.neurons[0], g.neurons[1], 1.5);
  expect_refused(store_->CreateSynapse(s), StatusCode::kInvalidArgument,
                 "synapse " + s.id + ": weight 1.5 is outside [-1, 1]");
  s.weight = std::nan("");
  expect_refused(store_->PutSynapse(s), StatusCode::kInvalidArgument, "weight is NaN");
  s.weight = -1.0000001;
  expect_refused(store_->CreateSynapse(s), StatusCode::kInvalidArgument, "outside [-1, 1]");
  s.weight = 0.5;
  s.synapse_type = "inhibitory";
  expect_refused(store_->CreateSynapse(s), StatusCode::kInvalidArgument, "synapse_type");
  s = MakeSynapse(g.neurons[0], MakeNeuron("memory", 99), 0.5);
  expect_refused(store_->CreateSynapse(s), StatusCode::kInvalidArgument,
                 "target neuron " + s.target_neuron_id + " does not exist");
  s = MakeSynapse(MakeNeuron("memory", 99), g.neurons[0], 0.5);
  expect_refused(store_->PutSynapse(s), StatusCode::kInvalidArgument,
                 "source neuron " + s.source_neuron_id + " does not exist");
  s = g.synapses[0];
  s.source_neuron_id = NewUuid();  // an update to a missing neuron
  expect_refused(store_->UpdateSynapse(s), StatusCode::kInvalidArgument, "does not exist");
  s = MakeSynapse(g.neurons[0], g.neurons[1], 0.5);
  s.source_neuron_id = "x";
  expect_refused(store_->CreateSynapse(s), StatusCode::kInvalidArgument, "source_neuron_id");

  EXPECT_EQ(Gen(), gen);
  ExpectSameGraph(g, Load());
}

TEST_F(NeuronStoreTest, BatchesAreAllOrNothing) {
  Graph g = Save(SampleGraph(3));
  const int64_t gen = Gen();
  std::vector<Neuron> batch = {MakeNeuron("memory", 20), MakeNeuron("memory", 21),
                               MakeNeuron("memory", 22)};
  batch[2].vector[0] = std::nanf("");
  EXPECT_EQ(store_->BatchCreateNeurons(batch).code(), StatusCode::kInvalidArgument);
  batch[2] = g.neurons[0];  // a duplicate
  EXPECT_EQ(store_->BatchCreateNeurons(batch).code(), StatusCode::kAlreadyExists);
  std::vector<Neuron> updates = {g.neurons[0], MakeNeuron("memory", 23)};
  updates[0].activation_level = 0.125;
  EXPECT_EQ(store_->BatchUpdateNeurons(updates).code(), StatusCode::kNotFound);
  std::vector<Synapse> synapses = {MakeSynapse(g.neurons[0], g.neurons[2], 0.2),
                                   MakeSynapse(g.neurons[2], batch[0], 0.2)};
  EXPECT_EQ(store_->BatchCreateSynapses(synapses).code(), StatusCode::kInvalidArgument);
  std::vector<Synapse> supdates = {g.synapses[0], MakeSynapse(g.neurons[0], g.neurons[1], 0.1)};
  supdates[0].weight = 0.0;
  EXPECT_EQ(store_->BatchUpdateSynapses(supdates).code(), StatusCode::kNotFound);
  Graph bad = {{MakeNeuron("memory", 30)}, {MakeSynapse(g.neurons[0], g.neurons[1], 2.0)}};
  EXPECT_EQ(store_->SaveAll(bad).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Gen(), gen);
  ExpectSameGraph(g, Load());

  // The same batches, valid, go in whole.
  batch[2] = MakeNeuron("memory", 24);
  ASSERT_OK(store_->BatchCreateNeurons(batch));
  updates.pop_back();
  ASSERT_OK(store_->BatchUpdateNeurons(updates));
  synapses[1] = MakeSynapse(g.neurons[2], batch[0], 0.2);
  ASSERT_OK(store_->BatchCreateSynapses(synapses));
  supdates.pop_back();
  ASSERT_OK(store_->BatchUpdateSynapses(supdates));
  Graph now = Load();
  EXPECT_EQ(now.neurons.size(), 6u);
  EXPECT_EQ(now.synapses.size(), 4u);
  EXPECT_EQ(store_->GetNeuron(g.neurons[0].id)->activation_level, 0.125);
  EXPECT_EQ(store_->GetSynapse(g.synapses[0].id)->weight, 0.0);
}

// ---- Listings ----

template <typename T, typename Query, typename List>
std::vector<std::string> AllPages(Query q, size_t limit, List list, size_t* pages) {
  std::vector<std::string> ids;
  q.page.limit = limit;
  q.page.after.clear();
  *pages = 0;
  for (;;) {
    Result<Page<T>> page = list(q);
    EXPECT_TRUE(page.ok()) << page.status().ToString();
    if (!page.ok()) return ids;
    ++*pages;
    EXPECT_LE(page->items.size(), limit == 0 ? SIZE_MAX : limit);
    for (const T& item : page->items) ids.push_back(item.id);
    if (page->next_after.empty()) return ids;
    EXPECT_EQ(page->next_after, page->items.back().id);
    q.page.after = page->next_after;
    if (*pages > 1000) {
      ADD_FAILURE() << "pagination does not end";
      return ids;
    }
  }
}

TEST_F(NeuronStoreTest, ListingsFilterAndPaginate) {
  Graph g = SampleGraph(30);
  for (size_t i = 0; i < g.neurons.size(); ++i) {
    g.neurons[i].modified_at = "2024-05-0" + std::to_string(1 + i % 5) + "T00:00:00";
  }
  // Extra synapses so that some neurons are the source or target of several.
  for (int i = 0; i < 10; ++i) {
    g.synapses.push_back(MakeSynapse(g.neurons[0], g.neurons[i + 2], 0.5));
    g.synapses.push_back(MakeSynapse(g.neurons[i + 5], g.neurons[3], -0.5));
  }
  const Graph sorted = Save(g);  // g keeps the order the references below use
  auto list_neurons = [&](const NeuronQuery& q) { return store_->ListNeurons(q); };
  auto list_synapses = [&](const SynapseQuery& q) { return store_->ListSynapses(q); };

  auto expect_neurons = [&](NeuronQuery q, auto pred) {
    std::vector<std::string> want;
    for (const Neuron& n : sorted.neurons) {
      if (pred(n)) want.push_back(n.id);
    }
    for (size_t limit : {0, 1, 4, 7, 100}) {
      size_t pages = 0;
      EXPECT_EQ(AllPages<Neuron>(q, limit, list_neurons, &pages), want) << "limit " << limit;
      if (limit == 1) {
        EXPECT_EQ(pages, std::max<size_t>(want.size(), 1));
      }
    }
  };
  expect_neurons(NeuronQuery{}, [](const Neuron&) { return true; });
  NeuronQuery q;
  q.type = "tool";
  expect_neurons(q, [](const Neuron& n) { return n.type == "tool"; });
  q.modified_since = "2024-05-03T00:00:00";
  expect_neurons(
      q, [](const Neuron& n) { return n.type == "tool" && n.modified_at > "2024-05-03T00:00:00"; });
  q.type.reset();
  expect_neurons(q, [](const Neuron& n) { return n.modified_at > "2024-05-03T00:00:00"; });
  q = NeuronQuery{};
  q.type = "nosuchtype";
  expect_neurons(q, [](const Neuron&) { return false; });

  auto expect_synapses = [&](SynapseQuery q, auto pred) {
    std::vector<std::string> want;
    for (const Synapse& s : sorted.synapses) {
      if (pred(s)) want.push_back(s.id);
    }
    ASSERT_FALSE(want.empty());
    for (size_t limit : {0, 1, 3, 100}) {
      size_t pages = 0;
      EXPECT_EQ(AllPages<Synapse>(q, limit, list_synapses, &pages), want) << "limit " << limit;
    }
  };
  expect_synapses(SynapseQuery{}, [](const Synapse&) { return true; });
  SynapseQuery sq;
  sq.source = g.neurons[0].id;
  expect_synapses(sq, [&](const Synapse& s) { return s.source_neuron_id == g.neurons[0].id; });
  sq = SynapseQuery{};
  sq.target = g.neurons[3].id;
  expect_synapses(sq, [&](const Synapse& s) { return s.target_neuron_id == g.neurons[3].id; });
  sq.source = g.neurons[5].id;
  expect_synapses(sq, [&](const Synapse& s) {
    return s.target_neuron_id == g.neurons[3].id && s.source_neuron_id == g.neurons[5].id;
  });
}

TEST_F(NeuronStoreTest, ListingWithoutVectorsKeepsDimAndHash) {
  Graph g = Save(SampleGraph(6));
  g.neurons[2].vector.clear();
  ASSERT_OK(store_->UpdateNeuron(g.neurons[2]));
  NeuronQuery q;
  q.with_vectors = false;
  auto without = store_->ListNeurons(q);
  q.with_vectors = true;
  auto with = store_->ListNeurons(q);
  ASSERT_TRUE(without.ok() && with.ok());
  ASSERT_EQ(without->items.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    const Neuron& a = without->items[i];
    const Neuron& b = with->items[i];
    EXPECT_TRUE(a.vector.empty());
    EXPECT_EQ(a.vector_dim, b.vector.size());
    EXPECT_EQ(a.vector_dim, b.vector_dim);
    EXPECT_EQ(a.vector_hash, b.vector_hash);
    EXPECT_EQ(a.vector_hash,
              b.vector.empty() ? 0 : XXH3_64bits(b.vector.data(), b.vector.size() * 4));
    Neuron a2 = a;
    a2.vector = b.vector;
    ExpectSameNeuron(b, a2);
  }
}

TEST_F(NeuronStoreTest, TypesEndpointsAndPruning) {
  Graph g = Save(SampleGraph(7));  // types k, t, m, k, t, m, k; synapses i -> i+1
  auto types = store_->NeuronTypes();
  ASSERT_TRUE(types.ok());
  std::vector<std::pair<std::string, uint64_t>> want_types = {
      {"knowledge", 3}, {"memory", 2}, {"tool", 2}};
  EXPECT_EQ(*types, want_types);

  std::vector<std::string> sources, targets;
  for (const Synapse& s : g.synapses) {
    sources.push_back(s.source_neuron_id);
    targets.push_back(s.target_neuron_id);
  }
  std::sort(sources.begin(), sources.end());
  std::sort(targets.begin(), targets.end());
  EXPECT_EQ(*store_->SynapseEndpoints(true), sources);
  EXPECT_EQ(*store_->SynapseEndpoints(false), targets);

  // Weights are 0.1 * i - 0.45: -0.45 -0.35 -0.25 -0.15 -0.05 0.05.
  const int64_t gen = Gen();
  auto pruned = store_->PruneWeakSynapses(0.2);
  ASSERT_TRUE(pruned.ok());
  EXPECT_EQ(*pruned, 3u);
  EXPECT_GT(Gen(), gen);
  for (const Synapse& s : Load().synapses) EXPECT_GE(std::abs(s.weight), 0.2);
  EXPECT_EQ(Load().synapses.size(), 3u);
  EXPECT_EQ(*store_->PruneWeakSynapses(0.2), 0u);
}

// ---- Whole graph, change tracking, generation ----

TEST_F(NeuronStoreTest, SaveAllAndLoadAll) {
  Graph g = SampleGraph(12);
  auto counts = store_->SaveAll(g);
  ASSERT_TRUE(counts.ok()) << counts.status().ToString();
  EXPECT_EQ(counts->neurons_saved, 12u);
  EXPECT_EQ(counts->synapses_saved, 11u);
  Graph loaded = Load();
  ExpectSameGraph(Sorted(g), loaded);
  for (const Neuron& n : loaded.neurons) {
    EXPECT_EQ(n.vector_dim, n.vector.size());
    EXPECT_EQ(n.vector_hash, XXH3_64bits(n.vector.data(), n.vector.size() * 4));
  }
  // Saving again updates in place.
  g.neurons[0].activation_level = 0.5;
  ASSERT_TRUE(store_->SaveAll(g).ok());
  ExpectSameGraph(Sorted(g), Load());
}

// The schema's text (tables and indexes), as sqlite_schema holds it.
std::string SchemaText(const std::string& db_path) {
  auto db = SqliteDb::Open(db_path, SQLITE_OPEN_READONLY);
  EXPECT_TRUE(db.ok());
  auto stmt = db->Prepare("SELECT type, name, sql FROM sqlite_schema ORDER BY name");
  EXPECT_TRUE(stmt.ok());
  std::string out;
  while (stmt.ok() && *stmt->Step()) {
    out += stmt->ColumnText(0) + " " + stmt->ColumnText(1) + ": " + stmt->ColumnText(2) + "\n";
  }
  return out;
}

// Big saves into empty tables drop the secondary indexes and build them afterwards: the schema
// ends exactly as it began, also when the save fails and rolls back.
TEST_F(NeuronStoreTest, BulkSavesKeepTheSchema) {
  const std::string db_path = StoreDir() + "/graph.db";
  const std::string schema = SchemaText(db_path);
  ASSERT_NE(schema.find("idx_synapses_weight"), std::string::npos);
  Graph g;
  for (int i = 0; i < 12000; ++i) {
    Neuron n;
    n.id = NewUuid();
    n.type = i % 3 ? "memory" : "tool";
    n.position = {i * 1.0, 0, 0};
    n.created_at = n.modified_at = "2024-01-01T00:00:00";
    g.neurons.push_back(std::move(n));
  }
  for (int i = 0; i < 12000; ++i) {
    g.synapses.push_back(MakeSynapse(g.neurons[i], g.neurons[(i * 7 + 1) % 12000], 0.5));
  }
  Graph bad = g;
  bad.synapses.back().target_neuron_id = NewUuid();  // the last row fails
  const int64_t gen = Gen();
  EXPECT_EQ(store_->SaveAll(bad).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SchemaText(db_path), schema);
  EXPECT_EQ(Gen(), gen);
  EXPECT_TRUE(Load().neurons.empty());

  ASSERT_TRUE(store_->SaveAll(g).ok());
  EXPECT_EQ(SchemaText(db_path), schema);
  auto report = store_->Verify();
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->valid) << report->issues[0];
  // The rebuilt indexes answer queries.
  SynapseQuery q;
  q.source = g.neurons[5].id;
  auto page = store_->ListSynapses(q);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->items.size(), 1u);
  EXPECT_EQ(page->items[0].target_neuron_id, g.neurons[36].id);
  NeuronQuery nq;
  nq.type = "tool";
  EXPECT_EQ(store_->ListNeurons(nq)->items.size(), 4000u);

  // An import that replaces everything goes the same way.
  const std::string path = tmp_.Sub("bulk.json");
  ExportTo(*store_, path);
  ASSERT_TRUE(ImportFrom(*store_, path, ImportMode::kReplace).ok());
  EXPECT_EQ(SchemaText(db_path), schema);
  EXPECT_EQ(Load().synapses.size(), 12000u);
}

TEST_F(NeuronStoreTest, ChangeTracker) {
  ChangeTracker t;
  EXPECT_FALSE(t.HasChanges());
  t.MarkNeuronModified("a");
  t.MarkNeuronDeleted("a");
  EXPECT_EQ(t.modified_neurons().size(), 0u);
  EXPECT_EQ(t.deleted_neurons().count("a"), 1u);
  t.MarkNeuronModified("a");
  EXPECT_EQ(t.deleted_neurons().size(), 0u);
  t.MarkSynapseDeleted("s");
  t.MarkSynapseModified("s");
  EXPECT_EQ(t.deleted_synapses().size(), 0u);
  EXPECT_EQ(t.modified_synapses().count("s"), 1u);
  EXPECT_TRUE(t.HasChanges());
  t.Clear();
  EXPECT_FALSE(t.HasChanges());
}

TEST_F(NeuronStoreTest, SaveIncrementalWritesOnlyMarkedEntities) {
  Graph stored = Save(SampleGraph(6));  // 0 -> 1 -> ... -> 5
  Graph app = stored;                   // the application's copy, changed in several places
  for (Neuron& n : app.neurons) n.activation_level = 0.99;
  for (Synapse& s : app.synapses) s.usage_count = 100;
  Neuron added = MakeNeuron("memory", 50);
  app.neurons.push_back(added);
  Synapse new_synapse = MakeSynapse(app.neurons[0], added, 0.7);
  app.synapses.push_back(new_synapse);

  // The deleted neuron, and two synapses that do not touch it: one modified, one deleted.
  const std::string deleted_neuron = stored.neurons[4].id;
  std::vector<std::string> untouched;
  uint64_t cascaded = 0;
  for (const Synapse& s : stored.synapses) {
    if (s.source_neuron_id == deleted_neuron || s.target_neuron_id == deleted_neuron) {
      ++cascaded;
    } else {
      untouched.push_back(s.id);
    }
  }
  ASSERT_GE(untouched.size(), 2u);
  const std::string modified_synapse = untouched[0], deleted_synapse = untouched[1];

  ChangeTracker t;
  t.MarkNeuronModified(app.neurons[1].id);
  t.MarkNeuronModified(added.id);
  t.MarkSynapseModified(modified_synapse);
  t.MarkSynapseModified(new_synapse.id);
  t.MarkNeuronModified(NewUuid());  // not in the graph: skipped
  t.MarkNeuronDeleted(deleted_neuron);
  t.MarkSynapseDeleted(deleted_synapse);

  const int64_t gen = Gen();
  auto counts = store_->SaveIncremental(app, t);
  ASSERT_TRUE(counts.ok()) << counts.status().ToString();
  EXPECT_EQ(counts->neurons_saved, 2u);
  EXPECT_EQ(counts->synapses_saved, 2u);
  EXPECT_EQ(counts->neurons_deleted, 1u);
  EXPECT_EQ(counts->synapses_deleted, 1 + cascaded);
  EXPECT_FALSE(t.HasChanges());
  EXPECT_GT(Gen(), gen);

  for (const Neuron& n : stored.neurons) {
    auto got = store_->GetNeuron(n.id);
    if (n.id == deleted_neuron) {
      EXPECT_EQ(got.status().code(), StatusCode::kNotFound);
    } else if (n.id == app.neurons[1].id) {
      EXPECT_EQ(got->activation_level, 0.99);
    } else {
      ASSERT_TRUE(got.ok());
      ExpectSameNeuron(n, *got);  // untouched
    }
  }
  EXPECT_TRUE(store_->GetNeuron(added.id).ok());
  EXPECT_TRUE(store_->GetSynapse(new_synapse.id).ok());
  EXPECT_EQ(store_->GetSynapse(deleted_synapse).status().code(), StatusCode::kNotFound);
  for (const Synapse& s : stored.synapses) {
    auto got = store_->GetSynapse(s.id);
    if (!got.ok()) continue;
    EXPECT_EQ(got->usage_count, s.id == modified_synapse ? 100 : 3) << s.id;
  }
  // Nothing tracked: nothing written, no new generation.
  const int64_t gen2 = Gen();
  ASSERT_TRUE(store_->SaveIncremental(app, t).ok());
  EXPECT_EQ(Gen(), gen2);
}

TEST_F(NeuronStoreTest, GenerationBumpsOnWritesOnly) {
  int64_t g0 = Gen();
  EXPECT_GE(g0, 1);
  auto t0 = store_->ChangeTimeNs();
  ASSERT_TRUE(t0.ok());
  Neuron a = MakeNeuron("knowledge", 1), b = MakeNeuron("memory", 2);
  std::vector<std::function<Status()>> writes = {
      [&] { return store_->CreateNeuron(a); },
      [&] { return store_->PutNeuron(b); },
      [&] { return store_->UpdateNeuron(a); },
      [&] { return store_->CreateSynapse(MakeSynapse(a, b, 0.5)); },
      [&] {
        return store_->SaveAll(Graph{{a}, {}}).status();
      },
      [&] { return store_->SetChangeTime(123456789); },
      [&] { return store_->DeleteNeuron(b.id); },
  };
  for (auto& w : writes) {
    ASSERT_OK(w());
    const int64_t g = Gen();
    EXPECT_EQ(g, g0 + 1);
    g0 = g;
    // Reads change nothing.
    ASSERT_TRUE(store_->LoadAll().ok());
    ASSERT_TRUE(store_->ListNeurons({}).ok());
    ASSERT_TRUE(store_->Stats().ok());
    ASSERT_TRUE(store_->Verify().ok());
    EXPECT_EQ(Gen(), g0);
  }
  // SetChangeTime sets the given time; a later write sets now.
  ASSERT_OK(store_->SetChangeTime(123456789));
  EXPECT_EQ(*store_->ChangeTimeNs(), 123456789);
  ASSERT_OK(store_->PutNeuron(a));
  EXPECT_GE(*store_->ChangeTimeNs(), *t0);
  // Failed writes change nothing.
  const int64_t before = Gen();
  EXPECT_FALSE(store_->CreateNeuron(a).ok());
  EXPECT_FALSE(store_->DeleteSynapse(NewUuid()).ok());
  EXPECT_EQ(Gen(), before);
  // The generation survives reopening.
  Reopen();
  EXPECT_EQ(Gen(), before);
}

TEST_F(NeuronStoreTest, StatsCountEverything) {
  Save(SampleGraph(7));
  auto s = store_->Stats();
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->neurons, 7u);
  EXPECT_EQ(s->synapses, 6u);
  EXPECT_EQ(s->schema_version, 2);
  EXPECT_EQ(s->generation, Gen());
  EXPECT_EQ(s->change_time_ns, *store_->ChangeTimeNs());
  EXPECT_GE(s->database_bytes, 65536u);
  EXPECT_EQ(s->database_bytes % 65536, 0u);  // the default page size
  std::vector<std::pair<std::string, uint64_t>> want = {
      {"knowledge", 3}, {"memory", 2}, {"tool", 2}};
  EXPECT_EQ(s->neurons_by_type, want);
}

// ---- Schema and migrations ----

std::vector<int64_t> SchemaVersions(const std::string& db_path) {
  std::vector<int64_t> out;
  auto db = SqliteDb::Open(db_path, SQLITE_OPEN_READONLY);
  EXPECT_TRUE(db.ok());
  auto stmt = db->Prepare("SELECT version FROM schema_version ORDER BY version");
  EXPECT_TRUE(stmt.ok());
  while (stmt.ok() && *stmt->Step()) out.push_back(stmt->ColumnInt64(0));
  return out;
}

TEST_F(NeuronStoreTest, NewStoreIsVersion2WithTheOriginalsTables) {
  const std::string db = StoreDir() + "/graph.db";
  EXPECT_EQ(SchemaVersions(db), (std::vector<int64_t>{1, 2}));
  auto conn = SqliteDb::Open(db, SQLITE_OPEN_READONLY);
  ASSERT_TRUE(conn.ok());
  auto names = conn->Prepare(
      "SELECT name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' "
      "ORDER BY name");
  ASSERT_TRUE(names.ok());
  std::vector<std::string> got;
  while (*names->Step()) got.push_back(names->ColumnText(0));
  std::vector<std::string> want = {"idx_neurons_modified",
                                   "idx_neurons_position",
                                   "idx_neurons_type",
                                   "idx_synapses_modified",
                                   "idx_synapses_source",
                                   "idx_synapses_target",
                                   "idx_synapses_weight",
                                   "modelfs_state",
                                   "neurons",
                                   "schema_version",
                                   "synapses"};
  EXPECT_EQ(got, want);
  auto page = conn->QueryRow("PRAGMA page_size");
  EXPECT_EQ(page->stmt.ColumnInt64(0), 65536);
  auto mode = conn->QueryRow("PRAGMA journal_mode");
  EXPECT_EQ(mode->stmt.ColumnText(0), "wal");
}

TEST(NeuronStoreMigration, EmptyFileAndPageSizeOption) {
  TempDir tmp;
  ASSERT_OK(MakeDirs(tmp.Sub("s")));
  ASSERT_OK(WriteStringToFile(tmp.Sub("s/graph.db"), ""));  // an empty file is an empty database
  StoreOptions options;
  options.page_size = 16384;
  auto store = NeuronStore::Open(tmp.Sub("s"), options);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(SchemaVersions(tmp.Sub("s/graph.db")), (std::vector<int64_t>{1, 2}));
  auto stats = (*store)->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->database_bytes % 16384, 0u);
  EXPECT_EQ(stats->schema_version, 2);
  options.page_size = 1000;
  EXPECT_EQ(NeuronStore::Open(tmp.Sub("t"), options).status().code(), StatusCode::kInvalidArgument);
}

TEST(NeuronStoreMigration, NewerSchemaIsRefused) {
  TempDir tmp;
  ASSERT_OK(MakeDirs(tmp.Sub("s")));
  {
    auto db = SqliteDb::Open(tmp.Sub("s/graph.db"));
    ASSERT_TRUE(db.ok());
    ASSERT_OK(
        db->Exec("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at "
                 "TIMESTAMP DEFAULT CURRENT_TIMESTAMP); INSERT INTO schema_version(version) "
                 "VALUES(1), (2), (3)"));
  }
  auto store = NeuronStore::Open(tmp.Sub("s"));
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kIOError);
  EXPECT_NE(store.status().message().find("schema version 3"), std::string::npos)
      << store.status().ToString();
  EXPECT_NE(store.status().message().find("(2)"), std::string::npos) << store.status().ToString();
}

// The original program's DDL and row writing, in its own language.
constexpr char kPythonOriginalV1[] = R"py(
import json, sqlite3, sys, datetime
import numpy as np
conn = sqlite3.connect(sys.argv[1])
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA foreign_keys=ON")
conn.execute("""CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)""")
conn.executescript("""
CREATE TABLE IF NOT EXISTS neurons (
    id TEXT PRIMARY KEY, position_x REAL NOT NULL, position_y REAL NOT NULL, position_z REAL NOT NULL,
    vector BLOB, neuron_type TEXT NOT NULL, metadata TEXT, activation_level REAL DEFAULT 0.0,
    created_at TEXT NOT NULL, modified_at TEXT NOT NULL,
    source_data TEXT, compression_ratio REAL, semantic_tags TEXT,
    function_signature TEXT, executable_code TEXT, input_schema TEXT, output_schema TEXT,
    execution_count INTEGER DEFAULT 0, average_execution_time REAL DEFAULT 0.0, activation_threshold REAL DEFAULT 0.5);
CREATE TABLE IF NOT EXISTS synapses (
    id TEXT PRIMARY KEY, source_neuron_id TEXT NOT NULL, target_neuron_id TEXT NOT NULL,
    weight REAL NOT NULL CHECK(weight >= -1.0 AND weight <= 1.0), usage_count INTEGER DEFAULT 0,
    last_traversed TEXT, synapse_type TEXT NOT NULL, metadata TEXT, created_at TEXT NOT NULL, modified_at TEXT NOT NULL,
    FOREIGN KEY (source_neuron_id) REFERENCES neurons(id) ON DELETE CASCADE,
    FOREIGN KEY (target_neuron_id) REFERENCES neurons(id) ON DELETE CASCADE);
CREATE INDEX IF NOT EXISTS idx_neurons_position ON neurons(position_x, position_y, position_z);
CREATE INDEX IF NOT EXISTS idx_neurons_type ON neurons(neuron_type);
CREATE INDEX IF NOT EXISTS idx_neurons_modified ON neurons(modified_at);
CREATE INDEX IF NOT EXISTS idx_synapses_source ON synapses(source_neuron_id);
CREATE INDEX IF NOT EXISTS idx_synapses_target ON synapses(target_neuron_id);
CREATE INDEX IF NOT EXISTS idx_synapses_weight ON synapses(weight);
CREATE INDEX IF NOT EXISTS idx_synapses_modified ON synapses(modified_at);
""")
conn.execute("INSERT INTO schema_version (version) VALUES (1)")
t1 = datetime.datetime(2024, 2, 3, 4, 5, 6, 789012)
t2 = datetime.datetime(2024, 2, 3, 4, 5, 7)
K = "11111111-2222-4333-8444-555555555555"
T = "66666666-7777-4888-9999-aaaaaaaaaaaa"
vec = np.array([0.1 * i - 3.0 for i in range(384)], dtype=np.float32)
conn.execute("""INSERT INTO neurons (id, position_x, position_y, position_z, vector, neuron_type,
    metadata, activation_level, created_at, modified_at, source_data, compression_ratio,
    semantic_tags, function_signature, executable_code, input_schema, output_schema,
    execution_count, average_execution_time, activation_threshold)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
    (K, 1.5, -2.25, 1e-300, vec.tobytes(), "knowledge", json.dumps({"src": "wiki", "n": 3}),
     0.75, t1.isoformat(), t2.isoformat(), "Paris is in France", 0.125,
     json.dumps(["geo", "fr\u00e9"]), None, None, None, None, None, None, None))
conn.execute("""INSERT INTO neurons (id, position_x, position_y, position_z, vector, neuron_type,
    metadata, activation_level, created_at, modified_at, source_data, compression_ratio,
    semantic_tags, function_signature, executable_code, input_schema, output_schema,
    execution_count, average_execution_time, activation_threshold)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
    (T, 0.0, 0.0, 0.0, None, "tool", json.dumps({}), 0.0, t2.isoformat(), t2.isoformat(),
     None, None, None, "add(a, b)", "return a + b", json.dumps({"a": "int", "b": "int"}),
     json.dumps({"type": "int"}), 7, 0.002, 0.6))
conn.execute("""INSERT INTO synapses (id, source_neuron_id, target_neuron_id, weight, usage_count,
    last_traversed, synapse_type, metadata, created_at, modified_at) VALUES (?,?,?,?,?,?,?,?,?,?)""",
    ("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", T, K, -0.5, 4, t1.isoformat(), "tool_output",
     json.dumps({"k": [1, 2]}), t1.isoformat(), t2.isoformat()))
conn.commit()
conn.close()
)py";

// The original's row parsing (SELECT *, columns by name) of a database modelfs migrated.
constexpr char kPythonReadRows[] = R"py(
import json, sqlite3, sys
import numpy as np
conn = sqlite3.connect(sys.argv[1])
conn.row_factory = sqlite3.Row
out = {"neurons": [], "synapses": []}
for row in conn.execute("SELECT * FROM neurons ORDER BY id"):
    vec = np.frombuffer(row["vector"], dtype=np.float32) if row["vector"] else None
    out["neurons"].append({
        "id": row["id"], "type": row["neuron_type"],
        "position": [row["position_x"], row["position_y"], row["position_z"]],
        "vector_sum": float(vec.astype(np.float64).sum()) if vec is not None else None,
        "vector_len": len(vec) if vec is not None else 0,
        "metadata": json.loads(row["metadata"]) if row["metadata"] else {},
        "created_at": row["created_at"], "modified_at": row["modified_at"],
        "semantic_tags": json.loads(row["semantic_tags"]) if row["semantic_tags"] else None,
        "input_schema": json.loads(row["input_schema"]) if row["input_schema"] else None,
        "execution_count": row["execution_count"]})
for row in conn.execute("SELECT * FROM synapses ORDER BY id"):
    out["synapses"].append({"id": row["id"], "weight": row["weight"],
                            "metadata": json.loads(row["metadata"]) if row["metadata"] else {}})
print(json.dumps(out, sort_keys=True))
)py";

TEST(NeuronStoreMigration, OpensAndMigratesTheOriginalsDatabase) {
  TempDir tmp;
  ASSERT_OK(MakeDirs(tmp.Sub("s")));
  const std::string db = tmp.Sub("s/graph.db");
  RunPython(tmp, kPythonOriginalV1, {db});
  ASSERT_EQ(SchemaVersions(db), (std::vector<int64_t>{1}));

  auto opened = NeuronStore::Open(tmp.Sub("s"));
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  NeuronStore& store = **opened;
  EXPECT_EQ(SchemaVersions(db), (std::vector<int64_t>{1, 2}));

  auto k = store.GetNeuron("11111111-2222-4333-8444-555555555555");
  ASSERT_TRUE(k.ok()) << k.status().ToString();
  EXPECT_EQ(k->type, "knowledge");
  EXPECT_EQ(k->position, (Position{1.5, -2.25, 1e-300}));
  ASSERT_EQ(k->vector.size(), 384u);
  for (size_t i = 0; i < 384; ++i) {
    EXPECT_EQ(k->vector[i], static_cast<float>(0.1 * static_cast<double>(i) - 3.0)) << i;
  }
  EXPECT_EQ(k->metadata, Json({{"src", "wiki"}, {"n", 3}}));
  EXPECT_EQ(k->activation_level, 0.75);
  EXPECT_EQ(k->created_at, "2024-02-03T04:05:06.789012");
  EXPECT_EQ(k->modified_at, "2024-02-03T04:05:07");
  EXPECT_EQ(k->source_data, "Paris is in France");
  EXPECT_EQ(k->compression_ratio, 0.125);
  EXPECT_EQ(k->semantic_tags, Json::array({"geo", "fr\xc3\xa9"}));
  EXPECT_FALSE(k->function_signature);
  EXPECT_TRUE(k->input_schema.is_null());
  EXPECT_EQ(k->execution_count, 0);         // NULL
  EXPECT_EQ(k->activation_threshold, 0.5);  // NULL: the column's default
  EXPECT_EQ(k->extra, Json::object());

  auto t = store.GetNeuron("66666666-7777-4888-9999-aaaaaaaaaaaa");
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->vector.empty());
  EXPECT_EQ(t->function_signature, "add(a, b)");
  EXPECT_EQ(t->executable_code, "return a + b");
  EXPECT_EQ(t->input_schema, Json({{"a", "int"}, {"b", "int"}}));
  EXPECT_EQ(t->output_schema, Json({{"type", "int"}}));
  EXPECT_EQ(t->execution_count, 7);
  EXPECT_EQ(t->average_execution_time, 0.002);
  EXPECT_EQ(t->activation_threshold, 0.6);
  EXPECT_FALSE(t->source_data);

  auto s = store.GetSynapse("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->weight, -0.5);
  EXPECT_EQ(s->usage_count, 4);
  EXPECT_EQ(s->synapse_type, "tool_output");
  EXPECT_EQ(s->last_traversed, "2024-02-03T04:05:06.789012");
  EXPECT_EQ(s->metadata, Json({{"k", {1, 2}}}));
  EXPECT_EQ(*store.Generation(), 1);

  // modelfs writes, then the original reads everything back its way.
  Neuron added = MakeNeuron("knowledge", 5, 16);
  ASSERT_OK(store.CreateNeuron(added));
  ASSERT_OK(store.Sync());
  std::string out = RunPython(tmp, kPythonReadRows, {db});
  auto parsed = ParseJson(out);
  ASSERT_TRUE(parsed.ok()) << out;
  const Json& neurons = (*parsed)["neurons"];
  ASSERT_EQ(neurons.size(), 3u);
  Json mine;
  for (const Json& n : neurons) {
    if (n["id"] == added.id) mine = n;
  }
  ASSERT_FALSE(mine.is_null()) << out;
  EXPECT_EQ(mine["vector_len"], 16);
  double sum = 0;
  for (float f : added.vector) sum += f;
  EXPECT_EQ(mine["vector_sum"].get<double>(), sum);
  EXPECT_EQ(mine["metadata"], added.metadata);
  EXPECT_EQ(mine["semantic_tags"], added.semantic_tags);
  EXPECT_EQ(mine["created_at"], added.created_at);
  EXPECT_EQ(mine["position"], Json({added.position.x, added.position.y, added.position.z}));
  EXPECT_EQ((*parsed)["synapses"][0]["weight"], -0.5);
}

// ---- Export and import ----

// Writes the store's export to path; returns its counts.
ExportCounts ExportTo(NeuronStore& store, const std::string& path) {
  auto fd = OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC);
  EXPECT_TRUE(fd.ok());
  auto c = store.Export(fd->get());
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  Status st = fd->Close();
  EXPECT_TRUE(st.ok()) << st.ToString();
  return c.ok() ? *c : ExportCounts();
}

Result<ExportCounts> ImportFrom(NeuronStore& store, const std::string& path, ImportMode mode,
                                std::optional<int64_t> change_time) {
  auto fd = OpenFile(path, O_RDONLY | O_CLOEXEC);
  if (!fd.ok()) return fd.status();
  return store.Import(fd->get(), mode, change_time);
}

TEST_F(NeuronStoreTest, ExportChecksumEqualsTheOriginalsAlgorithm) {
  Graph g = SampleGraph(9);
  g.neurons[0].metadata["text"] = "caf\xc3\xa9 \xf0\x9f\x98\x80 \"q\"\n";
  g.neurons[1].metadata["big"] = 1e300;
  g.neurons[2].metadata["small"] = 1e-7;
  Save(g);
  const std::string path = tmp_.Sub("export.json");
  ExportCounts c = ExportTo(*store_, path);
  EXPECT_EQ(c.neurons, 9u);
  EXPECT_EQ(c.synapses, 8u);
  EXPECT_EQ(c.checksum.size(), 64u);
  std::string out = RunPython(tmp_, R"py(
import hashlib, json, sys
d = json.load(open(sys.argv[1]))
print(hashlib.sha256(json.dumps({"neurons": d["neurons"], "synapses": d["synapses"]}, sort_keys=True, default=str).encode()).hexdigest())
print(d["checksum"])
print(d["export_time"])
print(len(d["neurons"]), len(d["synapses"]))
)py",
                              {path});
  // export_time is the newest modified_at of the graph (ExportTime), so equal graphs export equally.
  std::string expected_time;
  for (const auto& n : g.neurons) expected_time = std::max(expected_time, n.modified_at);
  for (const auto& s : g.synapses) expected_time = std::max(expected_time, s.modified_at);
  EXPECT_EQ(expected_time, *store_->ExportTime());
  EXPECT_EQ(out, c.checksum + "\n" + c.checksum + "\n" + expected_time + "\n9 8\n");
}

TEST_F(NeuronStoreTest, ExportImportRoundTripIsExact) {
  Graph g = Save(SampleGraph(12));
  const std::string first = tmp_.Sub("first.json"), second = tmp_.Sub("second.json");
  ExportCounts c1 = ExportTo(*store_, first);

  auto other = NeuronStore::Open(tmp_.Sub("other"));
  ASSERT_TRUE(other.ok());
  auto imported = ImportFrom(**other, first, ImportMode::kReplace, *store_->ChangeTimeNs());
  ASSERT_TRUE(imported.ok()) << imported.status().ToString();
  EXPECT_EQ(imported->neurons, 12u);
  EXPECT_EQ(imported->synapses, 11u);
  EXPECT_EQ(imported->checksum, c1.checksum);
  auto loaded = (*other)->LoadAll();
  ASSERT_TRUE(loaded.ok());
  ExpectSameGraph(g, *loaded);
  EXPECT_EQ(*(*other)->ChangeTimeNs(), *store_->ChangeTimeNs());
  ExportTo(**other, second);
  EXPECT_EQ(ReadAll(first), ReadAll(second));
}

TEST_F(NeuronStoreTest, TamperedImportChangesNothing) {
  Graph g = Save(SampleGraph(5));
  const std::string path = tmp_.Sub("export.json");
  ExportTo(*store_, path);
  const std::string text = ReadAll(path);

  // Another store with content of its own receives the tampered files.
  auto other_or = NeuronStore::Open(tmp_.Sub("other"));
  ASSERT_TRUE(other_or.ok());
  NeuronStore& other = **other_or;
  Graph own = SampleGraph(3);
  ASSERT_TRUE(other.SaveAll(own).ok());
  const int64_t gen = *other.Generation();
  const std::string schema = SchemaText(tmp_.Sub("other/graph.db"));

  auto tamper = [&](const std::string& from, const std::string& to) {
    std::string t = text;
    size_t pos = t.find(from);
    EXPECT_NE(pos, std::string::npos) << from;
    if (pos != std::string::npos) t.replace(pos, from.size(), to);
    EXPECT_OK(WriteStringToFile(tmp_.Sub("tampered.json"), t));
  };
  // One digit of a vector element (neuron 1's vector starts at 1.0, 1.125, ...).
  tamper("\"vector\": [1.0, 1.125", "\"vector\": [1.0, 1.126");
  for (ImportMode mode : {ImportMode::kReplace, ImportMode::kMerge}) {
    auto r = ImportFrom(other, tmp_.Sub("tampered.json"), mode);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
    EXPECT_NE(r.status().message().find("checksum"), std::string::npos) << r.status().ToString();
  }
  // One weight.
  std::string weight = "\"weight\": ";
  std::string w;
  PyFloatRepr(g.synapses[0].weight, &w);
  tamper(weight + w, weight + "0.0");
  EXPECT_EQ(ImportFrom(other, tmp_.Sub("tampered.json"), ImportMode::kReplace).status().code(),
            StatusCode::kInvalidArgument);
  // A weight out of range (the checksum does not get that far).
  tamper(weight + w, weight + "1.5");
  EXPECT_EQ(ImportFrom(other, tmp_.Sub("tampered.json"), ImportMode::kReplace).status().code(),
            StatusCode::kInvalidArgument);
  // Truncated.
  EXPECT_OK(WriteStringToFile(tmp_.Sub("tampered.json"), text.substr(0, text.size() / 2)));
  EXPECT_EQ(ImportFrom(other, tmp_.Sub("tampered.json"), ImportMode::kReplace).status().code(),
            StatusCode::kInvalidArgument);

  EXPECT_EQ(*other.Generation(), gen);
  EXPECT_EQ(SchemaText(tmp_.Sub("other/graph.db")), schema);  // kReplace's index drops undone
  auto loaded = other.LoadAll();
  ASSERT_TRUE(loaded.ok());
  ExpectSameGraph(Sorted(own), *loaded);
}

TEST_F(NeuronStoreTest, ImportReplaceAndMerge) {
  Graph file_graph = Save(SampleGraph(4));
  const std::string path = tmp_.Sub("export.json");
  ExportTo(*store_, path);

  auto other_or = NeuronStore::Open(tmp_.Sub("other"));
  ASSERT_TRUE(other_or.ok());
  NeuronStore& other = **other_or;
  Graph own = SampleGraph(3);
  // One of the file's neurons already there, changed: the file's version wins.
  Neuron changed = file_graph.neurons[0];
  changed.activation_level = 0.3125;
  own.neurons.push_back(changed);
  ASSERT_TRUE(other.SaveAll(own).ok());

  const int64_t gen = *other.Generation();
  ASSERT_TRUE(ImportFrom(other, path, ImportMode::kMerge).ok());
  EXPECT_EQ(*other.Generation(), gen + 1);
  Graph merged = *other.LoadAll();
  EXPECT_EQ(merged.neurons.size(), 3u + 4u);
  EXPECT_EQ(merged.synapses.size(), 2u + 3u);
  ExpectSameNeuron(file_graph.neurons[0], *other.GetNeuron(changed.id));
  for (const Neuron& n : own.neurons) EXPECT_TRUE(other.GetNeuron(n.id).ok());

  ASSERT_TRUE(ImportFrom(other, path, ImportMode::kReplace).ok());
  ExpectSameGraph(file_graph, *other.LoadAll());
}

// ---- Backups ----

// Opens a file as python's sqlite3 would and answers "integrity neurons synapses".
constexpr char kPythonCheckDb[] = R"py(
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
print(c.execute("PRAGMA integrity_check").fetchone()[0], c.execute("PRAGMA journal_mode").fetchone()[0],
      c.execute("SELECT COUNT(*) FROM neurons").fetchone()[0], c.execute("SELECT COUNT(*) FROM synapses").fetchone()[0],
      len(c.execute("PRAGMA foreign_key_check").fetchall()))
)py";

TEST_F(NeuronStoreTest, BackupIsOneStandaloneFile) {
  Save(SampleGraph(5));
  auto b = store_->CreateBackup();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->name.rfind("neuron_system_backup_", 0), 0u) << b->name;
  EXPECT_EQ(b->name.size(), std::string("neuron_system_backup_20240101_000000.db").size());
  EXPECT_EQ(b->neurons, 5u);
  EXPECT_EQ(b->synapses, 4u);
  const std::string path = store_->BackupPath(b->name);
  EXPECT_EQ(path, StoreDir() + "/backups/" + b->name);
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(b->bytes, static_cast<uint64_t>(st.st_size));
  const std::string header = ReadAll(path).substr(0, 20);
  EXPECT_EQ(header[18], 1);  // rollback journal, not WAL
  EXPECT_EQ(header[19], 1);
  EXPECT_FALSE(Exists(path + "-wal"));
  EXPECT_FALSE(Exists(path + "-journal"));
  // A second default backup in the same second gets its own name.
  auto b2 = store_->CreateBackup();
  ASSERT_TRUE(b2.ok()) << b2.status().ToString();
  EXPECT_NE(b2->name, b->name);

  std::string out = RunPython(tmp_, kPythonCheckDb, {path});
  EXPECT_EQ(out, "ok delete 5 4 0\n");
  EXPECT_FALSE(Exists(path + "-wal"));

  EXPECT_EQ(store_->CreateBackup(b->name).status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->CreateBackup("noext").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->CreateBackup("a/b.db").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->CreateBackup(".db").status().code(), StatusCode::kInvalidArgument);
  auto named = store_->CreateBackup("mine.db");
  ASSERT_TRUE(named.ok());
  auto list = store_->ListBackups();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 3u);
  EXPECT_EQ((*list)[0].name, "mine.db");
  EXPECT_EQ((*list)[0].neurons, 5u);
  auto got = store_->GetBackup("mine.db");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->synapses, 4u);
  ASSERT_OK(store_->SetBackupMtime("mine.db", 1500000000123456789));
  EXPECT_EQ(store_->GetBackup("mine.db")->mtime_ns, 1500000000123456789);
  ASSERT_OK(store_->RemoveBackup("mine.db"));
  EXPECT_EQ(store_->RemoveBackup("mine.db").code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->GetBackup("mine.db").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->SetBackupMtime("mine.db", 1).code(), StatusCode::kNotFound);
  // Nothing left in staging.
  std::vector<std::string> staging;
  for (auto& e : std::filesystem::directory_iterator(StoreDir() + "/staging")) {
    staging.push_back(e.path().string());
  }
  EXPECT_TRUE(staging.empty()) << staging[0];
}

// The invariant the writer below keeps in every transaction: a chain of neurons 0 -> 1 -> ...,
// one synapse per link, and neuron 0's metadata counting the links.
void ExpectChainInvariant(const Graph& g, const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_FALSE(g.neurons.empty());
  const Neuron* head = nullptr;
  for (const Neuron& n : g.neurons) {
    if (n.metadata.contains("links")) head = &n;
  }
  ASSERT_NE(head, nullptr);
  EXPECT_EQ(head->metadata["links"].get<int64_t>(), static_cast<int64_t>(g.synapses.size()));
  EXPECT_EQ(g.synapses.size() + 1, g.neurons.size());
  std::map<std::string, int> seq;
  for (const Neuron& n : g.neurons) seq[n.id] = n.metadata["seq"].get<int>();
  for (const Synapse& s : g.synapses) {
    ASSERT_TRUE(seq.count(s.source_neuron_id) && seq.count(s.target_neuron_id));
    EXPECT_EQ(seq[s.source_neuron_id] + 1, seq[s.target_neuron_id]);
  }
}

TEST_F(NeuronStoreTest, BackupDuringWritesRestoresAConsistentGraph) {
  Neuron head = MakeNeuron("memory", 0, 64);
  head.metadata = {{"seq", 0}, {"links", 0}};
  ASSERT_OK(store_->CreateNeuron(head));
  std::atomic<bool> stop{false};
  std::atomic<int> commits{0};
  std::thread writer([&] {
    Neuron prev = head;
    for (int i = 1; !stop.load(); ++i) {
      Neuron n = MakeNeuron("memory", i, 64);
      n.metadata = {{"seq", i}};
      head.metadata["links"] = i;
      Graph g{{head, n}, {MakeSynapse(prev, n, 0.5)}};
      auto st = store_->SaveAll(g);
      ASSERT_TRUE(st.ok()) << st.status().ToString();
      prev = n;
      commits.fetch_add(1);
    }
  });
  while (commits.load() < 20) std::this_thread::yield();
  std::vector<std::string> names;
  for (int i = 0; i < 3; ++i) {
    auto b = store_->CreateBackup("during" + std::to_string(i) + ".db");
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    names.push_back(b->name);
    EXPECT_EQ(b->synapses + 1, b->neurons);
    const int seen = commits.load();
    while (commits.load() < seen + 10) std::this_thread::yield();
  }
  // A concurrent export is one snapshot too.
  const std::string exported = tmp_.Sub("during.json");
  ExportCounts ec = ExportTo(*store_, exported);
  EXPECT_EQ(ec.synapses + 1, ec.neurons);
  stop = true;
  writer.join();

  for (const std::string& name : names) {
    std::string out = RunPython(tmp_, kPythonCheckDb, {store_->BackupPath(name)});
    EXPECT_EQ(out.substr(0, 9), "ok delete") << out;
    EXPECT_EQ(out.substr(out.size() - 2), "0\n") << out;  // no foreign key violation
  }

  const Graph before = Load();
  ExpectChainInvariant(before, "live");
  const int64_t gen = Gen();
  // Readers during the restores see the old graph or the new one, never a mix.
  std::atomic<bool> restoring{true};
  std::atomic<int> reads{0};
  std::thread reader([&] {
    while (restoring.load()) {
      auto g = store_->LoadAll();
      ASSERT_TRUE(g.ok()) << g.status().ToString();
      ExpectChainInvariant(*g, "during restore");
      reads.fetch_add(1);
    }
  });
  auto safety = store_->Restore(names[1]);
  ASSERT_TRUE(safety.ok()) << safety.status().ToString();
  EXPECT_EQ(safety->name.rfind("pre_restore_", 0), 0u) << safety->name;
  EXPECT_EQ(safety->neurons, before.neurons.size());
  EXPECT_EQ(safety->synapses, before.synapses.size());

  const Graph restored = Load();
  ExpectChainInvariant(restored, "restored");
  auto info = store_->GetBackup(names[1]);
  EXPECT_EQ(restored.neurons.size(), info->neurons);
  EXPECT_LT(restored.neurons.size(), before.neurons.size());
  EXPECT_EQ(Gen(), gen + 1);
  auto report = store_->Verify();
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->valid) << report->issues[0];

  // The safety copy restores the graph as it was before.
  auto safety2 = store_->Restore(safety->name);
  ASSERT_TRUE(safety2.ok()) << safety2.status().ToString();
  EXPECT_NE(safety2->name, safety->name);
  ExpectSameGraph(before, Load());
  EXPECT_EQ(Gen(), gen + 2);
  restoring = false;
  reader.join();
  EXPECT_GT(reads.load(), 0);
  // The store keeps working after restores, and another opener sees the restored graph.
  ASSERT_OK(store_->CreateNeuron(MakeNeuron("memory", 1000)));
  auto second = NeuronStore::Open(StoreDir());
  ASSERT_TRUE(second.ok());
  EXPECT_EQ((*second)->LoadAll()->neurons.size(), before.neurons.size() + 1);
  EXPECT_EQ(store_->Restore("nosuch.db").status().code(), StatusCode::kNotFound);
}

TEST_F(NeuronStoreTest, AddBackupChecksTheFile) {
  Graph g = Save(SampleGraph(4));
  auto b = store_->CreateBackup("orig.db");
  ASSERT_TRUE(b.ok());
  auto add = [&](const std::string& name, const std::string& file,
                 std::optional<int64_t> mtime = {}) {
    auto fd = OpenFile(file, O_RDONLY | O_CLOEXEC);
    EXPECT_TRUE(fd.ok());
    return store_->AddBackup(name, fd->get(), mtime);
  };
  // A copy of a backup (as rsync brings it back) is adopted, with the mtime asked for.
  auto copy = add("copy.db", store_->BackupPath("orig.db"), 1600000000000000000);
  ASSERT_TRUE(copy.ok()) << copy.status().ToString();
  EXPECT_EQ(copy->neurons, 4u);
  EXPECT_EQ(copy->mtime_ns, 1600000000000000000);
  EXPECT_EQ(ReadAll(store_->BackupPath("copy.db")), ReadAll(store_->BackupPath("orig.db")));
  EXPECT_EQ(add("copy.db", store_->BackupPath("orig.db")).status().code(),
            StatusCode::kAlreadyExists);

  // The live database file itself (WAL mode; checkpointed): adopted as a standalone file.
  ASSERT_OK(store_->Sync());
  auto live = add("live.db", StoreDir() + "/graph.db");
  ASSERT_TRUE(live.ok()) << live.status().ToString();
  EXPECT_EQ(ReadAll(store_->BackupPath("live.db"))[18], 1);
  EXPECT_EQ(live->synapses, 3u);

  ASSERT_OK(WriteStringToFile(tmp_.Sub("text.db"), "this is not a database, just some text\n"));
  auto r = add("text.db", tmp_.Sub("text.db"));
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  {
    auto other = SqliteDb::Open(tmp_.Sub("other.db"));
    ASSERT_TRUE(other.ok());
    ASSERT_OK(other->Exec("CREATE TABLE neurons(id TEXT); INSERT INTO neurons VALUES('x')"));
  }
  r = add("other.db", tmp_.Sub("other.db"));
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("tables"), std::string::npos) << r.status().ToString();
  // A database with a damaged page.
  std::string bytes = ReadAll(store_->BackupPath("orig.db"));
  for (size_t i = 65536; i < 65536 + 12; ++i)
    bytes[i] = static_cast<char>(0xA5);  // page 2's header
  ASSERT_OK(WriteStringToFile(tmp_.Sub("damaged.db"), bytes));
  r = add("damaged.db", tmp_.Sub("damaged.db"));
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  for (const char* name : {"text.db", "other.db", "damaged.db"}) {
    EXPECT_FALSE(Exists(store_->BackupPath(name))) << name;
  }
  EXPECT_EQ(add("bad", store_->BackupPath("orig.db")).status().code(),
            StatusCode::kInvalidArgument);

  // An adopted backup restores.
  ASSERT_OK(store_->DeleteNeuron(g.neurons[0].id));
  ASSERT_TRUE(store_->Restore("copy.db").ok());
  ExpectSameGraph(g, Load());
}

TEST_F(NeuronStoreTest, RestoreTakesTheLivePageSizeAndMigratesAV1Backup) {
  // A backup the original made: its v1 database (4 KiB pages), copied into backups/.
  RunPython(tmp_, kPythonOriginalV1, {tmp_.Sub("original.db")});
  {
    // The original's backup is a file copy of a checkpointed database.
    auto db = SqliteDb::Open(tmp_.Sub("original.db"));
    ASSERT_TRUE(db.ok());
    ASSERT_OK(db->Exec("PRAGMA wal_checkpoint(TRUNCATE)"));
  }
  auto fd = OpenFile(tmp_.Sub("original.db"), O_RDONLY | O_CLOEXEC);
  ASSERT_TRUE(fd.ok());
  auto added = store_->AddBackup("neuron_system_backup_20240101_000000.db", fd->get());
  ASSERT_TRUE(added.ok()) << added.status().ToString();
  EXPECT_EQ(added->neurons, 2u);
  Save(SampleGraph(3));
  const int64_t gen = Gen();
  ASSERT_TRUE(store_->Restore(added->name).ok());
  EXPECT_EQ(Gen(), gen + 1);
  Graph g = Load();
  ASSERT_EQ(g.neurons.size(), 2u);
  EXPECT_EQ(g.neurons[0].id, "11111111-2222-4333-8444-555555555555");
  EXPECT_EQ(g.neurons[0].vector.size(), 384u);
  auto stats = store_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->schema_version, 2);
  EXPECT_EQ(stats->database_bytes % 65536, 0u);
  EXPECT_EQ(SchemaVersions(StoreDir() + "/graph.db"), (std::vector<int64_t>{1, 2}));
  // Writes work on the restored schema (the extra column exists).
  ASSERT_OK(store_->CreateNeuron(MakeNeuron("memory", 4)));
  auto conn = SqliteDb::Open(StoreDir() + "/graph.db", SQLITE_OPEN_READONLY);
  EXPECT_EQ(conn->QueryRow("PRAGMA page_size")->stmt.ColumnInt64(0), 65536);
  EXPECT_EQ(conn->QueryRow("PRAGMA journal_mode")->stmt.ColumnText(0), "wal");
}

// ---- Verify ----

TEST_F(NeuronStoreTest, VerifyFindsDamage) {
  Graph g = Save(SampleGraph(5));
  auto clean = store_->Verify();
  ASSERT_TRUE(clean.ok()) << clean.status().ToString();
  EXPECT_TRUE(clean->valid);
  EXPECT_TRUE(clean->issues.empty());
  EXPECT_EQ(clean->sqlite_check, "ok");

  // Damage written behind the store's back, as only a foreign program could.
  RunPython(tmp_, R"py(
import sqlite3, struct, sys
c = sqlite3.connect(sys.argv[1])
c.execute("PRAGMA foreign_keys=OFF")
c.execute("PRAGMA ignore_check_constraints=ON")
src, dst = sys.argv[2], sys.argv[3]
missing = "99999999-9999-4999-8999-999999999999"
ins = "INSERT INTO synapses (id, source_neuron_id, target_neuron_id, weight, synapse_type, created_at, modified_at) VALUES (?, ?, ?, ?, 'knowledge', 't', 't')"
c.execute(ins, ("00000000-0000-4000-8000-000000000001", missing, dst, 0.5))
c.execute(ins, ("00000000-0000-4000-8000-000000000002", missing, dst, 0.5))
c.execute(ins, ("00000000-0000-4000-8000-000000000003", src, missing, 0.5))
c.execute(ins, ("00000000-0000-4000-8000-000000000004", src, dst, 1.5))
c.execute("UPDATE neurons SET vector = ? WHERE id = ?", (struct.pack("<3f", 1.0, float("nan"), 2.0), src))
c.execute("UPDATE neurons SET vector = ? WHERE id = ?", (b"12345", dst))
c.commit()
)py",
            {StoreDir() + "/graph.db", g.neurons[0].id, g.neurons[1].id});
  auto r = store_->Verify();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->valid);
  EXPECT_EQ(r->orphaned_sources, 2u);
  EXPECT_EQ(r->orphaned_targets, 1u);
  EXPECT_EQ(r->invalid_weights, 1u);
  EXPECT_EQ(r->bad_vectors, 2u);
  // integrity_check also checks CHECK constraints: it sees the weight too.
  EXPECT_EQ(r->sqlite_check, "CHECK constraint failed in synapses");
  std::vector<std::string> want = {
      "2 synapses with missing source neurons", "1 synapses with missing target neurons",
      "1 synapses with invalid weights", "2 neurons with invalid vectors",
      "integrity_check: CHECK constraint failed in synapses"};
  EXPECT_EQ(r->issues, want);
}

// ---- Several users ----

TEST_F(NeuronStoreTest, TwoInstancesSeeEachOthersWrites) {
  auto second_or = NeuronStore::Open(StoreDir());
  ASSERT_TRUE(second_or.ok()) << second_or.status().ToString();
  NeuronStore& second = **second_or;
  Neuron a = MakeNeuron("knowledge", 1), b = MakeNeuron("tool", 2);
  ASSERT_OK(store_->CreateNeuron(a));
  ASSERT_TRUE(second.GetNeuron(a.id).ok());
  ASSERT_OK(second.CreateNeuron(b));
  ASSERT_TRUE(store_->GetNeuron(b.id).ok());
  EXPECT_EQ(*second.Generation(), Gen());
  ASSERT_OK(second.CreateSynapse(MakeSynapse(a, b, 0.5)));
  EXPECT_EQ(store_->LoadAll()->synapses.size(), 1u);
  EXPECT_EQ(*second.Generation(), Gen());
}

TEST_F(NeuronStoreTest, ConcurrentReadersAndWriters) {
  Save(SampleGraph(10));
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  std::atomic<int> writes{0};
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < 40; ++i) {
        Neuron n = MakeNeuron("memory", 100 * w + i);
        EXPECT_OK(store_->PutNeuron(n));
        writes.fetch_add(1);
      }
    });
  }
  threads.emplace_back([&] {
    int64_t last = 0;
    while (!stop.load()) {
      auto g = store_->Generation();
      ASSERT_TRUE(g.ok());
      EXPECT_GE(*g, last);  // never goes back
      last = *g;
      auto page = store_->ListNeurons({});
      ASSERT_TRUE(page.ok());
      auto loaded = store_->LoadAll();
      ASSERT_TRUE(loaded.ok());
    }
  });
  for (int i = 0; i < 2; ++i) threads[i].join();
  stop = true;
  threads[2].join();
  EXPECT_EQ(writes.load(), 80);
  EXPECT_EQ(Load().neurons.size(), 90u);
}

TEST_F(NeuronStoreTest, SyncCheckpointsEverything) {
  Save(SampleGraph(20));
  ASSERT_OK(store_->Sync());
  struct stat st;
  // TRUNCATE left an empty WAL: everything is in graph.db, which a copy of the file alone holds.
  ASSERT_EQ(::stat((StoreDir() + "/graph.db-wal").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 0);
  ASSERT_OK(WriteStringToFile(tmp_.Sub("copy.db"), ReadAll(StoreDir() + "/graph.db")));
  std::string out = RunPython(tmp_, kPythonCheckDb, {tmp_.Sub("copy.db")});
  EXPECT_EQ(out, "ok wal 20 19 0\n");
}

TEST_F(NeuronStoreTest, WithoutBackgroundCheckpointAndAfterReopen) {
  StoreOptions options;
  options.background_checkpoint = false;
  Reopen(options);
  Graph g = Save(SampleGraph(6));
  Reopen();
  ExpectSameGraph(g, Load());
}

}  // namespace
}  // namespace modelfs::neurons
