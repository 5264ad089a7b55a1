// /neurons and /synapses on a real mount, driven by cp, echo, cat, rm, ls, rsync and python3 with
// numpy (Debian's), as a person would.
#include <sys/xattr.h>

#include "tests/e2e/mount_fixture.h"

namespace modelfs::e2e {
namespace {

const std::string kA = "00000000-0000-4000-8000-00000000000a";
const std::string kB = "00000000-0000-4000-8000-00000000000b";
const std::string kC = "00000000-0000-4000-8000-00000000000c";
const std::string kS1 = "10000000-0000-4000-8000-000000000001";
const std::string kS2 = "10000000-0000-4000-8000-000000000002";
const std::string kS3 = "10000000-0000-4000-8000-000000000003";

// A synapse document from src to dst with extra fields ("\"weight\": 1.5").
std::string SynDoc(const std::string& src, const std::string& dst, const std::string& extra) {
  return "{\"source_neuron_id\": \"" + src + "\", \"target_neuron_id\": \"" + dst + "\"" +
         (extra.empty() ? "" : ", " + extra) + "}";
}

class NeuronsE2E : public MountTest {
 protected:
  void SetUp() override {
    MountTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    StartOrDie(*mount_);
  }
  std::string N(const std::string& rel = "") const { return M() + "/neurons" + (rel.empty() ? "" : "/" + rel); }
  std::string S(const std::string& rel = "") const { return M() + "/synapses" + (rel.empty() ? "" : "/" + rel); }
  // Runs python3 with the script (numpy imported as np, json, os, hashlib available).
  ShResult Py(const std::string& script) {
    std::string path = dir_ + "/script.py";
    std::ofstream(path) << "import json, os, sys, hashlib\nimport numpy as np\n" << script << "\n";
    return Sh("/usr/bin/python3 " + path);
  }
  std::string PyOk(const std::string& script) {
    auto r = Py(script);
    EXPECT_EQ(r.code, 0) << script << "\n" << r.out;
    return r.out;
  }
  // Writes a neuron document with echo.
  void EchoNeuron(const std::string& id, const std::string& json) {
    Ok("echo '" + json + "' > " + N(id + ".json"));
  }
  void EchoSynapse(const std::string& id, const std::string& src, const std::string& dst, double w) {
    Ok("echo '{\"source_neuron_id\": \"" + src + "\", \"target_neuron_id\": \"" + dst +
       "\", \"weight\": " + std::to_string(w) + ", \"synapse_type\": \"knowledge\"}' > " + S(id + ".json"));
  }
  std::string Ls(const std::string& dir) { return Ok("LC_ALL=C ls " + dir + " | tr '\\n' ' '"); }
  // cp of a local file into the mount must fail with EINVAL.
  void ExpectInvalid(const std::string& content, const std::string& dest) {
    std::string src = dir_ + "/bad.in";
    std::ofstream(src, std::ios::binary) << content;
    auto r = Sh("cp " + src + " " + dest);
    EXPECT_NE(r.code, 0) << dest << " accepted: " << content;
    EXPECT_NE(r.out.find("Invalid argument"), std::string::npos) << r.out;
  }
  std::string Xattr(const std::string& path, const std::string& name) {
    char buf[256];
    ssize_t n = getxattr(path.c_str(), name.c_str(), buf, sizeof buf);
    return n < 0 ? "" : std::string(buf, n);
  }
};

TEST_F(NeuronsE2E, EchoCreatesNeuronsAndSynapsesThatReadBackAsDocuments) {
  EchoNeuron(kA, R"J({"type": "knowledge", "position": {"x": 1, "y": 2.5, "z": -3}, "source_data": "water boils", "semantic_tags": ["physics"], "metadata": {"lang": "en"}})J");
  EchoNeuron(kB, R"J({"type": "tool", "function_signature": "f(x)", "executable_code": "result = 1", "input_schema": {"type": "object"}})J");
  EchoSynapse(kS1, kA, kB, 0.75);
  // The documents read back as the original's to_dict(), sorted keys, with the store's fields filled in.
  PyOk("d = json.load(open('" + N(kA + ".json") + "'))\n"
       "assert d['id'] == '" + kA + "', d\n"
       "assert d['type'] == 'knowledge' and d['source_data'] == 'water boils', d\n"
       "assert d['position'] == {'x': 1.0, 'y': 2.5, 'z': -3.0}, d\n"
       "assert d['semantic_tags'] == ['physics'] and d['importance'] == 0.5, d\n"
       "assert d['metadata'] == {'lang': 'en'} and 'vector' not in d, d\n"
       "assert d['created_at'] and d['modified_at'], d\n"
       "t = json.load(open('" + N(kB + ".json") + "'))\n"
       "assert t['execution_count'] == 0 and t['activation_threshold'] == 0.5 and t['output_schema'] == {}, t\n"
       "s = json.load(open('" + S(kS1 + ".json") + "'))\n"
       "assert s['source_neuron_id'] == '" + kA + "' and s['target_neuron_id'] == '" + kB + "', s\n"
       "assert s['weight'] == 0.75 and s['usage_count'] == 0 and s['last_traversed'] is None, s\n");
  // Listings by type and by source / target neuron are links to the documents.
  EXPECT_EQ(Ls(N("by-type")), "knowledge tool ");
  EXPECT_EQ(Ls(N("by-type/knowledge")), kA + ".json ");
  EXPECT_EQ(Ok("readlink " + N("by-type/tool/" + kB + ".json")), "../../" + kB + ".json\n");
  EXPECT_EQ(Ok("cat " + N("by-type/knowledge/" + kA + ".json")), ReadAll(N(kA + ".json")));
  EXPECT_EQ(Ls(S("by-source")), kA + " ");
  EXPECT_EQ(Ls(S("by-target/" + kB)), kS1 + ".json ");
  EXPECT_EQ(Ok("cat " + S("by-source/" + kA + "/" + kS1 + ".json")), ReadAll(S(kS1 + ".json")));
  // stat sizes are exact: what a read returns.
  EXPECT_EQ(Ok("stat -c %s " + N(kA + ".json")), std::to_string(ReadAll(N(kA + ".json")).size()) + "\n");
  // Editing a document (cp of an edited copy) updates the neuron; the id must match the name.
  PyOk("p = '" + N(kA + ".json") + "'\n"
       "d = json.load(open(p)); d['source_data'] = 'water boils at 100 C'; d['metadata']['n'] = 1\n"
       "open('" + dir_ + "/edit.json', 'w').write(json.dumps(d))\n");
  Ok("cp " + dir_ + "/edit.json " + N(kA + ".json"));
  PyOk("d = json.load(open('" + N(kA + ".json") + "'))\n"
       "assert d['source_data'] == 'water boils at 100 C' and d['metadata'] == {'lang': 'en', 'n': 1}, d\n");
}

TEST_F(NeuronsE2E, VectorsAreRawFloat32ForNumpy) {
  EchoNeuron(kA, R"J({"type": "knowledge"})J");
  EXPECT_EQ(Ok("stat -c %s " + N(kA + ".vec")), "0\n");  // no vector yet
  // numpy writes the vector file; numpy reads it back, and the export carries the same values.
  PyOk("v = (np.arange(384, dtype=np.float32) - 100.5) / 7\n"
       "v[3] = -0.0; v[4] = 1e-40  # sign of zero and a subnormal survive\n"
       "v.tofile('" + N(kA + ".vec") + "')\n"
       "w = np.fromfile('" + N(kA + ".vec") + "', dtype=np.float32)\n"
       "assert w.tobytes() == v.tobytes(), (w[:8], v[:8])\n"
       "assert os.getxattr('" + N(kA + ".vec") + "', 'user.modelfs.vector_dim') == b'384'\n"
       "e = json.load(open('" + N("graph/export.json") + "'))\n"
       "[n] = [n for n in e['neurons'] if n['id'] == '" + kA + "']\n"
       "assert np.array(n['vector'], dtype=np.float32).tobytes() == v.tobytes()\n");
  // A "vector" list in a written document sets the vector too.
  Ok("echo '{\"type\": \"memory\", \"vector\": [0.5, -2, 3.25], \"recall\": 7}' > " + N(kB + ".json"));
  PyOk("assert list(np.fromfile('" + N(kB + ".vec") + "', dtype='<f4')) == [0.5, -2.0, 3.25]\n"
       "d = json.load(open('" + N(kB + ".json") + "'))\n"
       "assert d['recall'] == 7 and d['type'] == 'memory', d  # a type's own fields are kept\n");
  // An empty file clears it; a length that is not a multiple of 4 is refused and changes nothing.
  ExpectInvalid(std::string(6, 'x'), N(kB + ".vec"));
  EXPECT_EQ(Ok("stat -c %s " + N(kB + ".vec")), "12\n");
  Ok(": > " + N(kB + ".vec"));
  EXPECT_EQ(Ok("stat -c %s " + N(kB + ".vec")), "0\n");
  // A vector of no neuron cannot be written; removing a vector file removes the vector (the file
  // stays, empty, as long as its neuron exists).
  auto r = Sh("cp " + N(kA + ".vec") + " " + N(kC + ".vec"));
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_NE(Ok("stat -c %s " + N(kA + ".vec")), "0\n");
  Ok("rm " + N(kA + ".vec"));
  EXPECT_EQ(Ok("stat -c %s " + N(kA + ".vec")), "0\n");
  EXPECT_EQ(Ok("stat -c %s " + N(kA + ".json") + " >/dev/null && echo exists"), "exists\n");
}

TEST_F(NeuronsE2E, BadInputIsEinvalAndStoresNothing) {
  EchoNeuron(kA, R"J({"type": "knowledge"})J");
  EchoNeuron(kB, R"J({"type": "knowledge"})J");
  const std::string before_n = Ls(N()), before_s = Ls(S());
  const std::string a_doc = ReadAll(N(kA + ".json"));
  // A synapse to a missing neuron, a weight outside [-1, 1], a bad type, malformed JSON.
  ExpectInvalid(SynDoc(kA, kC, ""), S(kS1 + ".json"));
  ExpectInvalid(SynDoc(kA, kB, R"J("weight": 1.5)J"), S(kS1 + ".json"));
  ExpectInvalid(SynDoc(kA, kB, R"J("weight": "strong")J"), S(kS1 + ".json"));
  ExpectInvalid(SynDoc(kA, kB, R"J("synapse_type": "magic")J"), S(kS1 + ".json"));
  ExpectInvalid("{\"type\": \"knowledge\",", N(kC + ".json"));
  ExpectInvalid("[1, 2]", N(kC + ".json"));
  ExpectInvalid(R"J({"type": "a/b"})J", N(kC + ".json"));
  ExpectInvalid(R"J({"type": "knowledge", "position": {"x": 1}})J", N(kC + ".json"));
  ExpectInvalid("{\"id\": \"" + kB + "\", \"type\": \"knowledge\"}", N(kC + ".json"));  // id != name
  ExpectInvalid(R"J({"type": "knowledge", "vector": [1, "x"]})J", N(kA + ".json"));
  // Names that are no UUID.
  auto r = Sh("echo '{}' > " + N("not-a-uuid.json"));
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(Ls(N()), before_n);
  EXPECT_EQ(Ls(S()), before_s);
  EXPECT_EQ(ReadAll(N(kA + ".json")), a_doc);
  // One log line each, naming the file and the reason.
  const std::string log = mount_->Log();
  for (const char* why : {"target neuron " "00000000-0000-4000-8000-00000000000c does not exist",
                          "\"weight\": expected a number in [-1, 1]", "\"synapse_type\": expected",
                          "position.y", "is not the file's name", "\"vector[1]\": expected a number"}) {
    EXPECT_NE(log.find(why), std::string::npos) << why << "\n" << log;
  }
}

TEST_F(NeuronsE2E, RemovingANeuronRemovesItsSynapsesFromEveryListing) {
  EchoNeuron(kA, R"J({"type": "knowledge"})J");
  EchoNeuron(kB, R"J({"type": "knowledge"})J");
  EchoNeuron(kC, R"J({"type": "tool"})J");
  EchoSynapse(kS1, kA, kB, 0.5);
  EchoSynapse(kS2, kB, kA, -0.25);
  EchoSynapse(kS3, kB, kC, 0.1);
  // Look at everything first, so the kernel has it all cached.
  Ok("ls -lR " + M() + "/neurons " + M() + "/synapses > /dev/null");
  Ok("cat " + S(kS1 + ".json") + " " + S(kS2 + ".json") + " > /dev/null");
  Ok("rm " + N(kA + ".json"));
  EXPECT_EQ(Ls(S()), kS3 + ".json by-source by-target ");
  EXPECT_EQ(Ls(S("by-source")), kB + " ");
  EXPECT_EQ(Ls(S("by-target")), kC + " ");
  EXPECT_NE(Sh("stat " + S(kS1 + ".json")).code, 0);
  EXPECT_NE(Sh("cat " + S(kS2 + ".json")).code, 0);
  EXPECT_NE(Sh("ls " + S("by-source/" + kA)).code, 0);
  EXPECT_EQ(Ls(N()), kB + ".json " + kB + ".vec " + kC + ".json " + kC + ".vec by-type graph ");
  EXPECT_EQ(Ls(N("by-type/knowledge")), kB + ".json ");
  // rm of a synapse and of the last neuron of a type.
  Ok("rm " + S(kS3 + ".json"));
  EXPECT_EQ(Ls(S()), "by-source by-target ");
  Ok("rm " + N(kC + ".json"));
  EXPECT_EQ(Ls(N("by-type")), "knowledge ");
  EXPECT_NE(Sh("rm " + N(kC + ".json")).code, 0);
}

TEST_F(NeuronsE2E, ExportVerifiesWithTheOriginalAlgorithmAndWritingOneImportsIt) {
  EchoNeuron(kA, R"J({"type": "knowledge", "source_data": "é ünïcode ☃", "vector": [0.1, 0.2, 0.3]})J");
  EchoNeuron(kB, R"J({"type": "tool", "metadata": {"nested": {"z": 1, "a": [true, null, 1.5e-7]}}})J");
  EchoSynapse(kS1, kA, kB, 0.5);
  const std::string checker =
      "def checksum(d):\n"
      "    return hashlib.sha256(json.dumps({'neurons': d['neurons'], 'synapses': d['synapses']},\n"
      "                                     sort_keys=True, default=str).encode()).hexdigest()\n";
  // The export verifies with the original's SerializationManager.calculate_checksum.
  PyOk(checker + "d = json.load(open('" + N("graph/export.json") + "'))\n"
       "assert d['version'] == 1 and len(d['neurons']) == 2 and len(d['synapses']) == 1, d\n"
       "assert checksum(d) == d['checksum'], (checksum(d), d['checksum'])\n"
       "assert os.stat('" + N("graph/export.json") + "').st_size == len(open('" + N("graph/export.json") + "', 'rb').read())\n");
  // An export edited and re-checksummed the original's way (json.dump indent=2) imports.
  PyOk(checker + "d = json.load(open('" + N("graph/export.json") + "'))\n"
       "for n in d['neurons']:\n"
       "    if n['id'] == '" + kA + "': n['source_data'] = 'edited'\n"
       "d['synapses'][0]['weight'] = -0.5\n"
       "d['checksum'] = checksum(d)\n"
       "json.dump(d, open('" + dir_ + "/good.json', 'w'), indent=2)\n"
       "d['synapses'][0]['weight'] = 0.9  # tampered: checksum no longer matches\n"
       "json.dump(d, open('" + dir_ + "/tampered.json', 'w'), indent=2)\n");
  Ok("cp " + dir_ + "/good.json " + N("graph/export.json"));
  PyOk("assert json.load(open('" + N(kA + ".json") + "'))['source_data'] == 'edited'\n"
       "assert json.load(open('" + S(kS1 + ".json") + "'))['weight'] == -0.5\n");
  const std::string before = ReadAll(N("graph/export.json"));
  auto r = Sh("cp " + dir_ + "/tampered.json " + N("graph/export.json"));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("Invalid argument"), std::string::npos) << r.out;
  EXPECT_NE(mount_->Log().find("checksum"), std::string::npos);
  EXPECT_EQ(ReadAll(N("graph/export.json")), before);
  // Writing the export's own bytes back changes nothing.
  const std::string gen = Xattr(N(), "user.modelfs.generation");
  Ok("cp " + N("graph/export.json") + " " + dir_ + "/same.json && cp " + dir_ + "/same.json " +
     N("graph/export.json"));
  EXPECT_EQ(Xattr(N(), "user.modelfs.generation"), gen);
  // An export replaces the graph: an empty one empties it.
  PyOk(checker + "d = {'version': 1, 'export_time': 'x', 'neurons': [], 'synapses': [], 'stats': {}}\n"
       "d['checksum'] = checksum(d)\n"
       "json.dump(d, open('" + dir_ + "/empty.json', 'w'))\n");
  Ok("cp " + dir_ + "/empty.json " + N("graph/export.json"));
  EXPECT_EQ(Ls(N()), "by-type graph ");
  EXPECT_EQ(Ls(S()), "by-source by-target ");
}

TEST_F(NeuronsE2E, BackupsAreConsistentSqliteFilesAndTheCliRestoresThem) {
  EchoNeuron(kA, R"J({"type": "knowledge"})J");
  EchoNeuron(kB, R"J({"type": "knowledge"})J");
  EchoSynapse(kS1, kA, kB, 0.5);
  Ok("touch " + N("graph/backups/before.db"));  // an empty file takes a backup
  EXPECT_EQ(Ls(N("graph/backups")), "before.db ");
  EXPECT_NE(Ok("stat -c %s " + N("graph/backups/before.db")), "0\n");  // taken when touch returned
  EXPECT_EQ(Xattr(N("graph/backups/before.db"), "user.modelfs.synapses"), "1");
  // A standalone SQLite file that python's sqlite3 reads.
  Ok("cp " + N("graph/backups/before.db") + " " + dir_ + "/copy.db");
  EXPECT_EQ(PyOk("import sqlite3\nc = sqlite3.connect('" + dir_ + "/copy.db')\n"
                 "print(c.execute('select count(*) from neurons').fetchone()[0],"
                 " c.execute('select count(*) from synapses').fetchone()[0])\n"),
            "2 1\n");
  // Something that is no database is not a backup.
  ExpectInvalid("not a database", N("graph/backups/junk.db"));
  Ok("rm " + N(kA + ".json"));
  ASSERT_EQ(mount_->Stop().code, 0);
  const std::string cli = Bin() + " neurons --data " + mount_->data() + " ";
  EXPECT_NE(Ok(cli + "list-backups").find("before.db"), std::string::npos);
  EXPECT_NE(Ok(cli + "restore before.db").find("pre_restore_"), std::string::npos);
  EXPECT_NE(Ok(cli + "stats").find("neurons\t2\nsynapses\t1\n"), std::string::npos);
  EXPECT_NE(Ok(cli + "verify").find("valid"), std::string::npos);
  Ok(cli + "export " + dir_ + "/cli.json");
  EXPECT_NE(Ok(cli + "prune --threshold 0.6").find("deleted 1 "), std::string::npos);
  Ok(cli + "import " + dir_ + "/cli.json");
  StartOrDie(*mount_);
  EXPECT_EQ(Ls(S()), kS1 + ".json by-source by-target ");
  EXPECT_EQ(Ls(N("graph/backups")).find("before.db pre_restore_"), 0u);
}

TEST_F(NeuronsE2E, RsyncRoundTripIsIdenticalAndIdempotent) {
  // A graph with vectors, several types, synapses and a backup.
  PyOk("import uuid\n"
       "ids = [str(uuid.UUID(int=i + 1, version=4)) for i in range(40)]\n"
       "for i, nid in enumerate(ids):\n"
       "    t = ['knowledge', 'tool', 'memory'][i % 3]\n"
       "    open('" + N() + "/' + nid + '.json', 'w').write(json.dumps({'type': t, 'metadata': {'i': i}}))\n"
       "    if i % 4: (np.arange(16, dtype=np.float32) * i).tofile('" + N() + "/' + nid + '.vec')\n"
       "for i in range(60):\n"
       "    sid = str(uuid.UUID(int=1000 + i, version=4))\n"
       "    s = {'source_neuron_id': ids[i % 40], 'target_neuron_id': ids[(i * 7 + 3) % 40], 'weight': (i % 21 - 10) / 10}\n"
       "    open('" + S() + "/' + sid + '.json', 'w').write(json.dumps(s))\n");
  Ok("touch " + N("graph/backups/nightly.db"));
  const std::string backup = dir_ + "/backup";
  Ok("mkdir -p " + backup + " && rsync -a " + N() + " " + S() + " " + backup + "/");
  // Restore into a fresh, empty store.
  Mount& m2 = Another("restored");
  StartOrDie(m2);
  auto r = Sh("rsync -a " + backup + "/ " + m2.mnt() + "/");
  ASSERT_EQ(r.code, 0) << r.out << m2.Log();
  auto diff = Sh("diff -r --no-dereference " + backup + "/neurons " + m2.mnt() + "/neurons && diff -r --no-dereference " +
                 backup + "/synapses " + m2.mnt() + "/synapses");
  EXPECT_EQ(diff.code, 0) << diff.out;
  // Sizes and mtimes equal too: a second backup run transfers nothing, a second restore changes nothing.
  const std::string gen = Xattr(m2.mnt() + "/neurons", "user.modelfs.generation");
  EXPECT_EQ(Ok("rsync -ai " + N() + " " + S() + " " + backup + "/"), "");
  EXPECT_EQ(Ok("rsync -ai " + backup + "/ " + m2.mnt() + "/ | grep -v '^\\.d' || true"), "");
  EXPECT_EQ(Xattr(m2.mnt() + "/neurons", "user.modelfs.generation"), gen);
  EXPECT_EQ(ReadAll(m2.mnt() + "/neurons/graph/export.json"), ReadAll(N("graph/export.json")));
  // And it survives a remount.
  ASSERT_EQ(m2.Stop().code, 0);
  StartOrDie(m2);
  diff = Sh("diff -r --no-dereference " + backup + "/neurons " + m2.mnt() + "/neurons");
  EXPECT_EQ(diff.code, 0) << diff.out;
}

}  // namespace
}  // namespace modelfs::e2e
