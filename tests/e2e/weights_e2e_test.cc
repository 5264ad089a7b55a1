// /weights through a real mount: numpy.save / numpy.load (also mmap_mode='r'), sha256sum, cp, ln -s,
// mv, rm, getfattr/setfattr, rsync -aX round trips, and a Coral HDF5 file made with h5py imported by
// the CLI.
#include <algorithm>
#include <string>
#include <vector>

#include "tests/e2e/mount_fixture.h"

namespace modelfs::e2e {
namespace {

constexpr char kPy[] = "/usr/bin/python3";  // Debian's, with python3-numpy and python3-h5py

class WeightsE2E : public MountTest {
 protected:
  void SetUp() override {
    MountTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    StartOrDie(*mount_);
  }
  std::string W() const { return M() + "/weights"; }
  // Runs a python3 script with numpy as np, os, hashlib and io imported; W is the weights folder.
  std::string Py(const std::string& script, const std::string& w = "") {
    const std::string path = dir_ + "/script.py";
    std::ofstream(path) << "import os, sys, io, hashlib\nimport numpy as np\nW = '"
                        << (w.empty() ? W() : w) << "'\n"
                        << "def npy(a):\n    b = io.BytesIO(); np.save(b, a); return b.getvalue()\n"
                        << "def sha(a): return hashlib.sha256(npy(a)).hexdigest()\n"
                        << script;
    return Ok(std::string(kPy) + " " + path);
  }
  std::string Attr(const std::string& path, const std::string& name) {
    return Ok("getfattr --absolute-names --only-values -n user.modelfs." + name + " " + path);
  }
  std::string Listing(const std::string& dir) {
    return Ok("cd " + dir + " && ls -l --time-style=+%s . | tail -n +2 | awk '{print $1, $5, $6, $7, $8, $9}'");
  }
};

TEST_F(WeightsE2E, NumpySaveStoresAndLoadReadsBackByNameAndHash) {
  std::string out = Py(
      "a = np.arange(12, dtype=np.float32).reshape(3, 4) / 7\n"
      "np.save(W + '/layer1.npy', a)\n"
      "h = os.readlink(W + '/layer1.npy')\n"
      "assert h == sha(a), (h, sha(a))\n"
      "assert np.array_equal(np.load(W + '/layer1.npy'), a)\n"
      "m = np.load(W + '/' + h, mmap_mode='r')\n"
      "assert m.dtype == np.float32 and m.shape == (3, 4) and np.array_equal(m, a)\n"
      "print(h)\n");
  ASSERT_EQ(out.size(), 65u) << out;
  const std::string hash = out.substr(0, 64);
  // sha256sum prints the name, both through the hash and through the name.
  EXPECT_EQ(Ok("cd " + W() + " && sha256sum " + hash + " | cut -c1-64"), hash + "\n");
  EXPECT_EQ(Ok("sha256sum " + W() + "/layer1.npy | cut -c1-64"), hash + "\n");
  EXPECT_EQ(Attr(W() + "/" + hash, "shape"), "[3, 4]");
  EXPECT_EQ(Attr(W() + "/" + hash, "dtype"), "float32");
  EXPECT_EQ(Attr(W() + "/" + hash, "name"), "layer1.npy");
  EXPECT_EQ(Ok("stat -c %s " + W() + "/" + hash), std::to_string(128 + 48) + "\n");
  // cp in and out: the same bytes, the same tensor (no second copy).
  Ok("cp " + W() + "/layer1.npy " + dir_ + "/out.npy && cp " + dir_ + "/out.npy " + W() + "/copy.npy");
  Ok("cmp " + dir_ + "/out.npy " + W() + "/copy.npy");
  EXPECT_EQ(Ok("readlink " + W() + "/copy.npy"), hash + "\n");
  EXPECT_EQ(Attr(W(), "tensors"), "1");
  // After a remount: the same bytes, from the store.
  mount_->Stop();
  StartOrDie(*mount_);
  EXPECT_EQ(Ok("cd " + W() + " && sha256sum " + hash + " | cut -c1-64"), hash + "\n");
  Py("a = np.arange(12, dtype=np.float32).reshape(3, 4) / 7\n"
     "assert np.array_equal(np.load(W + '/layer1.npy'), a)\n");
}

TEST_F(WeightsE2E, IdenticalTensorsAreStoredOnceUnderManyNames) {
  std::string h = Py(
      "a = np.linspace(-1, 1, 50000, dtype=np.float64)\n"
      "np.save(W + '/a.npy', a); np.save(W + '/b.npy', a)\n"
      "print(sha(a))\n");
  h.pop_back();
  EXPECT_EQ(Ok("readlink " + W() + "/a.npy " + W() + "/b.npy"), h + "\n" + h + "\n");
  EXPECT_EQ(Ok("ls " + W() + " | wc -l"), "3\n");
  EXPECT_EQ(Attr(W(), "tensors"), "1");
  EXPECT_EQ(Attr(W(), "names"), "2");
  EXPECT_EQ(Attr(W(), "dedup_ratio"), "2.000");
  // Removing names never removes the tensor; rm of the hash does, with its names.
  Ok("rm " + W() + "/a.npy");
  Ok("rm " + W() + "/b.npy");
  EXPECT_EQ(Ok("ls " + W()), h + "\n");
  Ok("ln -s " + h + " " + W() + "/c.npy");
  Ok("rm " + W() + "/" + h);
  EXPECT_EQ(Ok("ls " + W() + " | wc -l"), "0\n");
}

TEST_F(WeightsE2E, LinksArePointedAndRepointedWithLnAndMv) {
  std::string hs = Py(
      "a = np.ones((10, 10), np.float32); b = np.zeros((5,), np.int64)\n"
      "np.save(W + '/x.npy', a); np.save(W + '/y.npy', b)\n"
      "print(sha(a)); print(sha(b))\n");
  const std::string ha = hs.substr(0, 64), hb = hs.substr(65, 64);
  Ok("ln -s " + ha + " " + W() + "/alias");
  EXPECT_EQ(Ok("readlink " + W() + "/alias"), ha + "\n");
  Ok("ln -sf " + hb + " " + W() + "/alias");  // re-point
  EXPECT_EQ(Ok("readlink " + W() + "/alias"), hb + "\n");
  Ok("ln -s y.npy " + W() + "/alias2");  // a link to a name points at that name's tensor
  EXPECT_EQ(Ok("readlink " + W() + "/alias2"), hb + "\n");
  Ok("mv " + W() + "/alias2 " + W() + "/renamed");
  std::vector<std::string> want = {ha, hb, "alias", "renamed", "x.npy", "y.npy"};
  std::sort(want.begin(), want.end());
  std::string listing;
  for (const auto& n : want) listing += n + "\n";
  EXPECT_EQ(Ok("cd " + W() + " && ls | LC_ALL=C sort"), listing);
  Py("assert np.load(W + '/renamed').dtype == np.int64\n");
  auto r = Sh("ln -s nothing-here " + W() + "/bad");
  EXPECT_NE(r.out.find("Invalid argument"), std::string::npos) << r.out;
  r = Sh("mv " + W() + "/" + ha + " " + W() + "/z");
  EXPECT_NE(r.code, 0);
}

TEST_F(WeightsE2E, InvalidNpyAndWrongHashGetEinvalAndStoreNothing) {
  Py("np.save(W + '/keep.npy', np.arange(4))\n");
  std::string before = Listing(W()) + Attr(W(), "stored_bytes");
  const std::string bad = dir_ + "/bad";
  Py("d = '" + bad + "'\n"
     "os.makedirs(d, exist_ok=True)\n"
     "def raw(hdr, data):\n"
     "    h = hdr.ljust(117) + '\\n'\n"
     "    return b'\\x93NUMPY\\x01\\x00' + len(h).to_bytes(2, 'little') + h.encode() + data\n"
     "open(d + '/magic.npy', 'wb').write(b'NOTNUMPY' + bytes(100))\n"
     "b = npy(np.arange(100, dtype=np.float32)); open(d + '/short.npy', 'wb').write(b[:-8])\n"
     "open(d + '/str.npy', 'wb').write(npy(np.array(['ab', 'cd'])))\n"
     "open(d + '/obj.npy', 'wb').write(raw(\"{'descr': '|O', 'fortran_order': False, 'shape': (2,), }\", bytes(16)))\n"
     "open(d + '/lies.npy', 'wb').write(raw(\"{'descr': '<f8', 'fortran_order': False, 'shape': (1000,), }\", bytes(80)))\n"
     "open(d + '/other.npy', 'wb').write(npy(np.arange(3)))\n");
  for (const std::string f : {"magic.npy", "short.npy", "str.npy", "obj.npy", "lies.npy"}) {
    auto r = Sh("cp " + bad + "/" + f + " " + W() + "/" + f);
    EXPECT_NE(r.out.find("Invalid argument"), std::string::npos) << f << ": " << r.out;
  }
  // A file named as a hash must hash to it.
  auto r = Sh("cp " + bad + "/other.npy " + W() + "/" + std::string(64, 'a'));
  EXPECT_NE(r.out.find("Invalid argument"), std::string::npos) << r.out;
  r = Sh("mkdir " + W() + "/dir");
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(Listing(W()) + Attr(W(), "stored_bytes"), before);
  std::string log = mount_->Log();
  EXPECT_NE(log.find("magic"), std::string::npos) << log;
  mount_->Stop();
  StartOrDie(*mount_);
  EXPECT_EQ(Listing(W()) + Attr(W(), "stored_bytes"), before);
}

TEST_F(WeightsE2E, FortranOrderAndBigEndianAreStoredCanonically) {
  Py("a = np.arange(24, dtype=np.float64).reshape(2, 3, 4)\n"
     "np.save(W + '/f.npy', np.asfortranarray(a))\n"
     "np.save(W + '/be.npy', a.astype('>f8'))\n"
     "assert os.readlink(W + '/f.npy') == sha(a)\n"
     "assert os.readlink(W + '/be.npy') == sha(a)\n"
     "b = np.load(W + '/f.npy'); assert b.flags['C_CONTIGUOUS'] and np.array_equal(a, b)\n");
  EXPECT_EQ(Attr(W(), "tensors"), "1");
}

TEST_F(WeightsE2E, FineTunedCopyIsStoredAsADeltaAndLoadsBitExact) {
  std::string out = Py(
      "rng = np.random.default_rng(7)\n"
      "a = rng.standard_normal((512, 1024)).astype(np.float32)\n"
      "b = a.copy(); idx = rng.choice(a.size, a.size // 100, replace=False)\n"
      "b.flat[idx] += np.float32(0.001)\n"
      "b.flat[idx[:3]] = [np.float32('nan'), np.float32(-0.0), np.float32('inf')]\n"
      "np.save(W + '/base.npy', a); np.save(W + '/tuned.npy', b)\n"
      "c = np.load(W + '/tuned.npy')\n"
      "assert c.tobytes() == b.tobytes(), 'not bit-exact'\n"
      "print(sha(a))\n");
  const std::string base = out.substr(0, 64);
  EXPECT_EQ(Attr(W() + "/tuned.npy", "delta_base"), base);
  EXPECT_EQ(Attr(W(), "deltas"), "1");
  const long long logical = std::stoll(Attr(W(), "logical_bytes"));
  const long long stored = std::stoll(Attr(W(), "stored_bytes"));
  // Two 2 MiB tensors; the delta of 1% changed values is a small fraction of the second.
  EXPECT_LT(stored, logical * 6 / 10) << stored << " of " << logical;
}

TEST_F(WeightsE2E, RsyncRoundTripIntoAnEmptyStoreAndIdempotence) {
  Py("np.save(W + '/w1.npy', np.arange(1000, dtype=np.float32))\n"
     "np.save(W + '/w2.npy', np.eye(30))\n"
     "os.symlink(os.readlink(W + '/w1.npy'), W + '/w1-alias')\n");
  Ok("setfattr -n user.modelfs.layer_type -v Linear " + W() + "/w1.npy");
  EXPECT_EQ(Attr(W() + "/w1.npy", "layer_type"), "Linear");
  const std::string backup = dir_ + "/backup";
  Ok("rsync -aX " + W() + "/ " + backup + "/");
  EXPECT_EQ(Ok("find " + backup + " -type l | wc -l"), "3\n");
  std::string again = Ok("rsync -aXi " + W() + "/ " + backup + "/");
  EXPECT_EQ(again.find(">f"), std::string::npos) << again;
  EXPECT_EQ(again.find("cL"), std::string::npos) << again;

  Mount& fresh = Another("restore");
  StartOrDie(fresh);
  const std::string w2 = fresh.mnt() + "/weights";
  Ok("rsync -aX " + backup + "/ " + w2 + "/");
  EXPECT_EQ(Listing(backup), Listing(w2));
  Ok("cd " + backup + " && for f in *; do cmp $f " + w2 + "/$f || exit 1; done");
  EXPECT_EQ(Attr(w2 + "/w1.npy", "layer_type"), "Linear");
  std::string state = Listing(w2) + Attr(w2, "stored_bytes");
  std::string restore_again = Ok("rsync -aXi " + backup + "/ " + w2 + "/");
  EXPECT_EQ(restore_again.find(">f"), std::string::npos) << restore_again;
  EXPECT_EQ(state, Listing(w2) + Attr(w2, "stored_bytes"));
  fresh.Stop();
  StartOrDie(fresh);
  EXPECT_EQ(Listing(backup), Listing(w2));
}

TEST_F(WeightsE2E, StoredFilesOpenInH5pyAndH5dumpWithTheBuiltPlugins) {
  // zstd (the default codec) and shuffle: h5py and h5dump decode the store's own files with the
  // filter plugins this build makes (Debian 12 ships no zstd plugin).
  Py("a = np.random.default_rng(1).standard_normal((300, 700)).astype(np.float32)\n"
     "np.save(W + '/t.npy', a); np.save('" + dir_ + "/t.npy', a)\n");
  const std::string hash = Ok("readlink " + W() + "/t.npy").substr(0, 64);
  mount_->Stop();
  const std::string bin = Bin();
  const std::string plugins = bin.substr(0, bin.rfind('/')) + "/../lib/hdf5-plugins";
  const std::string env = "HDF5_PLUGIN_PATH=" + plugins + " ";
  Ok(env + std::string(kPy) + " -c \"import h5py, numpy as np, glob\n"
     "f = h5py.File(glob.glob('" + mount_->data() + "/weights/objects/*.h5')[0], 'r')\n"
     "d = f['weights/" + hash + "']\n"
     "assert d.attrs['hash'] == '" + hash + "' and d.attrs['name'] == 't.npy'\n"
     "assert np.array_equal(d[...], np.load('" + dir_ + "/t.npy'))\"");
  std::string dump = Ok(env + "h5dump -d /weights/" + hash + " -s 0,0 -c 1,3 " + mount_->data() +
                        "/weights/objects/*.h5");
  EXPECT_NE(dump.find("(0,0):"), std::string::npos) << dump;
  EXPECT_EQ(dump.find("unable"), std::string::npos) << dump;
  EXPECT_EQ(Ok(Bin() + " weights --data " + mount_->data() + " verify"), "ok\n");
}

TEST_F(WeightsE2E, CoralFileMadeWithH5pyIsImportedAndEveryTensorEqual) {
  const std::string coral = dir_ + "/coral.h5";
  Py("import h5py, json\n"
     "rng = np.random.default_rng(3)\n"
     "ts = {'enc.weight': rng.standard_normal((64, 32)).astype(np.float32),\n"
     "      'enc.bias': rng.standard_normal(64).astype(np.float32),\n"
     "      'steps': np.arange(10, dtype=np.int64),\n"
     "      'dec.weight': rng.standard_normal((32, 64)).astype(np.float64)}\n"
     "with h5py.File('" + coral + "', 'w') as f:\n"
     "    g = f.create_group('weights'); f.create_group('metadata'); f.create_group('deltas')\n"
     "    for i, (name, a) in enumerate(ts.items()):\n"
     "        h = hashlib.sha256(a.tobytes()).hexdigest()[:16]\n"
     "        kw = dict(compression='gzip', compression_opts=4) if i % 2 == 0 else dict(compression='lzf')\n"
     "        d = g.create_dataset(h, data=a, **kw)\n"
     "        d.attrs['name'] = name; d.attrs['shape'] = a.shape; d.attrs['dtype'] = str(a.dtype)\n"
     "        d.attrs['layer_type'] = 'Linear'; d.attrs['model_name'] = 'coral-demo'\n"
     "        d.attrs['compression_info'] = json.dumps({}); d.attrs['hash'] = h\n"
     "for name, a in ts.items(): np.save('" + dir_ + "/' + name + '.npy', a)\n",
     W());
  mount_->Stop();
  std::string out = Ok(Bin() + " weights --data " + mount_->data() + " import-coral " + coral);
  EXPECT_NE(out.find("imported 4"), std::string::npos) << out;
  StartOrDie(*mount_);
  for (const std::string name : {"enc.weight", "enc.bias", "steps", "dec.weight"}) {
    Ok("cmp " + dir_ + "/" + name + ".npy " + W() + "/" + name);
    EXPECT_EQ(Attr(W() + "/" + name, "model_name"), "coral-demo");
  }
}

}  // namespace
}  // namespace modelfs::e2e
