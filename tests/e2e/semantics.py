#!/usr/bin/python3
"""Open-file semantics of a modelfs mount, the same cases over every writable folder.

Usage: semantics.py MOUNT CASE TARGET   (exit 0: the case holds; otherwise it says what broke)

Each TARGET is one kind of writable file (models/1/layers/7, timeseries/s, neurons/<id>.vec, ...)
with two valid contents, optionally an invalid one, and a way to compare what a read returns with
what was written (a neuron document's modified_at is set by the store). Each CASE drives the mount
the way a program does (shells, fork, threads, dup, numpy) and checks what SPEC section 2 promises.
Run by tests/e2e/semantics_e2e_test.cc; every case is also runnable by hand against any mount.
"""
import json
import os
import random
import subprocess
import sys
import threading
import time

import numpy as np

MOUNT = sys.argv[1]
NEURON = "5f0b5c1e-0000-4000-8000-000000000001"


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def read_checked(path):
    """Reads a whole file through one descriptor and checks that fstat agrees with what was read."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read()
        after = os.fstat(f.fileno()).st_size
    if size != len(data) or after != len(data):
        raise AssertionError("fstat said %d then %d bytes, the read returned %d" % (size, after, len(data)))
    return data


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def sh(cmd):
    r = subprocess.run(["bash", "-c", cmd], capture_output=True)
    if r.returncode != 0:
        fail("%s: exit %d: %s" % (cmd, r.returncode, (r.stdout + r.stderr).decode(errors="replace")))
    return r.stdout


def exists(path):
    try:
        os.lstat(path)
        return True
    except FileNotFoundError:
        return False


# ---- targets -------------------------------------------------------------------------------------

class Target:
    new_names = False   # any new name may be created (flock(1) makes an empty one)
    rewritable = True   # a stored file can be written again with other bytes
    appendable = False  # bytes appended to valid bytes stay valid (in whole `unit`s)
    unit = 1
    empty_ok = True     # a 0-byte file is valid
    automatic = False   # the store keeps the file while its folder exists: rm does not remove it

    def fresh_rel(self, tag):
        base, ext = os.path.splitext(self.rel)
        return base + "-" + tag + ext

    def path(self):
        return os.path.join(MOUNT, self.rel)

    def setup(self):
        pass

    def contents(self):
        """Two different valid contents, each longer than 64 KiB where the folder allows."""
        raise NotImplementedError

    def invalid(self):
        return None

    def canon(self, data):
        return data

    def same(self, read_bytes, written):
        return self.canon(read_bytes) == self.canon(written)

    def versions(self):
        """Every stored version of the file (models keep history), or None."""
        return None


class LayerTarget(Target):
    rel = "models/1/layers/7"
    appendable = True
    automatic = True  # the newest of history/7: rm of it changes nothing
    new_names = True

    def fresh_rel(self, tag):
        return "models/1/layers/%d" % (100 + sum(map(ord, tag)) % 900)

    def setup(self):
        if not exists(os.path.join(MOUNT, "models/1")):
            os.mkdir(os.path.join(MOUNT, "models/1"))

    def contents(self):
        r = random.Random(7)
        return bytes(r.getrandbits(8) for _ in range(300000)), bytes(r.getrandbits(8) for _ in range(200000))

    def versions(self):
        d = os.path.join(MOUNT, "models/1/history/7")
        return [read(os.path.join(d, n)) for n in sorted(os.listdir(d))] if exists(d) else []


class MetaTarget(Target):
    rel = "models/1/meta"
    appendable = True
    automatic = True

    def setup(self):
        LayerTarget().setup()

    def contents(self):
        return (json.dumps({"name": "a", "pad": "x" * 70000}).encode(),
                json.dumps({"name": "b", "pad": "y" * 90000}).encode())


class SeriesTarget(Target):
    rel = "timeseries/s"
    new_names = True
    appendable = True
    unit = 16

    def contents(self):
        a = np.arange(2 * 5000, dtype=np.float64)
        b = np.linspace(-1, 1, 2 * 7000)
        return a.tobytes(), b.tobytes()

    def invalid(self):
        return b"x" * 24


class WeightsTarget(Target):
    rel = "weights/t.npy"
    rewritable = False  # a name follows its link to an immutable tensor
    empty_ok = False

    def contents(self):
        import io
        out = []
        for shape, seed in (((128, 200), 1), ((64, 300), 2)):
            buf = io.BytesIO()
            np.save(buf, np.random.default_rng(seed).standard_normal(shape).astype(np.float32))
            out.append(buf.getvalue())
        return tuple(out)

    def invalid(self):
        return b"\x93NUMPY not really"


class DocTarget(Target):
    rel = "neurons/%s.json" % NEURON
    empty_ok = False

    def fresh_rel(self, tag):
        return "neurons/5f0b5c1e-0000-4000-8000-%012x.json" % (sum(map(ord, tag)) + 2)

    def setup(self):
        if not exists(self.path()):
            write(self.path(), json.dumps({"type": "knowledge", "source_data": "seed"}).encode())

    def contents(self):
        doc = json.loads(read(self.path()))
        a, b = dict(doc), dict(doc)
        a["source_data"] = "first " + "a" * 70000
        b["source_data"] = "second " + "b" * 50000
        return tuple(json.dumps(d, indent=2, sort_keys=True).encode() + b"\n" for d in (a, b))

    def invalid(self):
        return b'{"type": "knowledge", "position": "nowhere"'

    def canon(self, data):
        d = json.loads(data)
        d.pop("modified_at", None)  # the store sets it at each write
        return d


class VecTarget(Target):
    rel = "neurons/%s.vec" % NEURON
    appendable = True
    unit = 4
    automatic = True

    def setup(self):
        DocTarget().setup()

    def contents(self):
        return (np.arange(20000, dtype=np.float32).tobytes(), np.linspace(0, 1, 30000, dtype=np.float32).tobytes())

    def invalid(self):
        return b"abcdef"


class GroupsTarget(Target):
    rel = "embeddings/groups"
    empty_ok = False
    automatic = True

    def contents(self):
        return (b"5 4 sgd zeros\n", b"5 4 adagrad ones\n6 8 adam zeros\n")

    def invalid(self):
        return b"5 4 nosuchoptimizer zeros\n"

    @staticmethod
    def parse(data):
        out = {}
        for line in data.decode().splitlines():
            f = line.split()
            if len(f) >= 4:
                out[f[0]] = (f[1], f[2].split("(")[0], f[3].split("(")[0])
        return out

    def same(self, read_bytes, written):
        # The file lists every group, with defaults filled in: what a write set is its own groups.
        got, want = self.parse(read_bytes), self.parse(written)
        return all(got.get(g) == v for g, v in want.items())


TARGETS = {
    "layer": LayerTarget(),
    "meta": MetaTarget(),
    "series": SeriesTarget(),
    "weights": WeightsTarget(),
    "doc": DocTarget(),
    "vec": VecTarget(),
    "groups": GroupsTarget(),
}


def check_is(t, expected_written, what):
    got = read_checked(t.path())
    if not t.same(got, expected_written):
        fail("%s: %s reads %d bytes that are not what was written (%d bytes)" %
             (t.rel, what, len(got), len(expected_written)))


def fresh(t, name):
    """A target at a new name in the same folder (for folders whose files cannot be rewritten)."""
    t2 = type(t)()
    t2.rel = t.fresh_rel(name)
    return t2


# ---- cases ---------------------------------------------------------------------------------------

def case_shell_group_redirect(t):
    """{ a; sleep; b; } > f: the shell opens f once; each child closes its copy when it exits."""
    c, d = t.contents()
    if not t.rewritable:
        t = fresh(t, "group")
    else:
        write(t.path(), c)
    before = t.versions()
    half = len(d) // 2
    dir_ = os.path.dirname(t.path())
    open("scratch-a", "wb").write(d[:half])
    open("scratch-b", "wb").write(d[half:])
    p = subprocess.Popen(["bash", "-c", "{ cat scratch-a; sleep 0.6; cat scratch-b; } > '%s'" % t.path()])
    time.sleep(0.35)
    # The first cat has exited (its close went to the mount): nobody may see half a file.
    if t.rewritable:
        check_is(t, c, "while a shell writes it")
    elif exists(t.path()):
        fail("%s exists (%d bytes) while a shell is still writing it" % (t.rel, len(read(t.path()))))
    if p.wait() != 0:
        fail("the shell's redirection failed")
    check_is(t, d, "after the shell's close")
    if before is not None:
        after = t.versions()
        if len(after) != len(before) + 1 or after[-1] != d:
            fail("%d versions added (one whole one expected): a child's close committed a half" %
                 (len(after) - len(before)))


def case_fork_child_exits(t):
    """A forked child (no exec) exits while the parent is still writing."""
    c, d = t.contents()
    if not t.rewritable:
        t = fresh(t, "fork")
    else:
        write(t.path(), c)
    before = t.versions()
    half = len(d) // 2
    fd = os.open(t.path(), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, d[:half])
    pid = os.fork()
    if pid == 0:
        os._exit(0)  # closes the inherited descriptor
    os.waitpid(pid, 0)
    # Another process looks: the old bytes (or nothing), never the half.
    r = subprocess.run(["cat", t.path()], capture_output=True)
    if t.rewritable and not t.same(r.stdout, c):
        fail("after a forked child exited, %s reads %d bytes (half written?)" % (t.rel, len(r.stdout)))
    if not t.rewritable and r.returncode == 0:
        fail("after a forked child exited, a new %s exists with %d bytes" % (t.rel, len(r.stdout)))
    os.write(fd, d[half:])
    os.close(fd)
    check_is(t, d, "after the parent's close")
    if before is not None and len(t.versions()) != len(before) + 1:
        fail("%d versions added, one expected" % (len(t.versions()) - len(before)))


def case_thread_runs_subprocess(t):
    """One thread writes while another runs a subprocess (which inherits and closes the descriptor)."""
    c, d = t.contents()
    if not t.rewritable:
        t = fresh(t, "thread")
    else:
        write(t.path(), c)
    before = t.versions()
    f = open(t.path(), "wb")
    f.write(d[: len(d) // 2])
    f.flush()
    th = threading.Thread(target=lambda: subprocess.run(["true"], close_fds=False))
    th.start()
    th.join()
    f.write(d[len(d) // 2:])
    f.close()
    check_is(t, d, "after the writer's close")
    if before is not None and len(t.versions()) != len(before) + 1:
        fail("%d versions added, one expected" % (len(t.versions()) - len(before)))


def case_rejection_is_sticky(t):
    """A program that closes a dup first (and ignores that error) sees the rejection at its close."""
    bad = t.invalid()
    if bad is None:
        return
    c, _ = t.contents()
    if t.rewritable:
        write(t.path(), c)
    else:
        t = fresh(t, "sticky")
    fd = os.open(t.path(), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    dup = os.dup(fd)
    os.write(dup, bad)
    errs = []
    for x in (dup, fd):
        try:
            os.close(x)
            errs.append(0)
        except OSError as e:
            errs.append(e.errno)
    if errs[1] == 0:
        fail("a rejected %s: the last close returned success (closes gave %s)" % (t.rel, errs))
    if t.rewritable:
        check_is(t, c, "after a rejected write")
    elif exists(t.path()):
        fail("a rejected new %s exists" % t.rel)


def case_numpy_bad_data(t):
    """numpy's own writers (tofile, save) with data the folder refuses raise an error."""
    if t.invalid() is None:
        return
    if isinstance(t, WeightsTarget):
        p = os.path.join(MOUNT, "weights", "ab" * 32)
        try:
            with open(p, "wb") as f:
                np.save(f, np.arange(7, dtype=np.float32))
            fail("numpy.save of a tensor under a hash it does not have succeeded")
        except OSError:
            pass
        if exists(p):
            fail("the rejected tensor is there")
        return
    p = t.path() if t.rewritable else fresh(t, "np").path()
    before = read(p) if exists(p) else None
    bad = np.frombuffer(t.invalid()[: len(t.invalid()) // 2 * 2], dtype=np.uint8)
    try:
        bad.tofile(p)
        fail("numpy.tofile of invalid bytes to %s succeeded" % p)
    except OSError:
        pass
    after = read(p) if exists(p) else None
    if before != after:
        fail("the store changed after a rejected numpy.tofile")


def case_concurrent_writers(t):
    """Two processes write one path at once: the last close wins, never a mix."""
    c, d = t.contents()
    if not t.rewritable:
        return
    write(t.path(), c)
    before = t.versions()
    code = """
import os, sys, time
data = open(sys.argv[2], 'rb').read()
f = open(sys.argv[1], 'wb')
for i in range(0, len(data), 16384):
    f.write(data[i:i + 16384]); f.flush(); time.sleep(0.002)
f.close()
"""
    open("scratch-c", "wb").write(c)
    open("scratch-d", "wb").write(d)
    ps = [subprocess.Popen([sys.executable, "-c", code, t.path(), src]) for src in ("scratch-c", "scratch-d")]
    for p in ps:
        if p.wait() != 0:
            fail("a writer failed")
    got = read_checked(t.path())
    if not (t.same(got, c) or t.same(got, d)):
        fail("after two concurrent writers %s is neither one's bytes (%d bytes)" % (t.rel, len(got)))
    if before is not None:
        for v in t.versions()[len(before):]:
            if v not in (c, d):
                fail("a version of %d bytes mixes two writers" % len(v))


def case_readers_during_rewrites(t):
    """Readers see a whole old or a whole new file, with fstat equal to what they read."""
    c, d = t.contents()
    if not t.rewritable:
        return
    write(t.path(), c)
    open("scratch-c", "wb").write(c)
    open("scratch-d", "wb").write(d)
    stop = threading.Event()
    problems, reads = [], [0]

    def reader():
        while not stop.is_set():
            try:
                got = read_checked(t.path())
            except AssertionError as e:
                problems.append(str(e))
                continue
            except OSError as e:
                problems.append("read: %s" % e)
                continue
            reads[0] += 1
            if not (t.same(got, c) or t.same(got, d)):
                problems.append("a read of %d bytes is neither version" % len(got))

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for th in readers:
        th.start()
    writers = [
        "cp scratch-%s '%s'",
        "dd if=scratch-%s of='%s' bs=64k status=none",
        "cat scratch-%s > '%s'",
    ]
    for i in range(12):
        src = "d" if i % 2 == 0 else "c"
        if i % 4 == 3:
            write(t.path(), d if src == "d" else c)
        else:
            sh(writers[i % 3] % (src, t.path()))
    stop.set()
    for th in readers:
        th.join()
    if problems:
        fail("%d of %d reads went wrong; first: %s" % (len(problems), reads[0], problems[0]))
    if reads[0] == 0:
        fail("no read completed")


def case_append(t):
    """O_APPEND writes land at the end of the writer's own file, whatever stat says meanwhile."""
    if not t.appendable:
        return
    c, d = t.contents()
    base = c[: 64 * t.unit]
    a1, a2 = d[: 8 * t.unit], d[8 * t.unit: 16 * t.unit]
    write(t.path(), base)
    f = open(t.path(), "ab")
    f.write(a1)
    f.flush()
    os.stat(t.path())
    if os.fstat(f.fileno()).st_size != len(base) + len(a1):
        fail("the appending writer's fstat says %d, it wrote %d" % (os.fstat(f.fileno()).st_size, len(base) + len(a1)))
    f.write(a2)
    f.close()
    check_is(t, base + a1 + a2, "after two appends")


def case_removed_while_open(t):
    """rm of a file open for writing is not undone by its close; nor is a rename over it."""
    c, d = t.contents()
    if not t.rewritable or t.automatic:
        return  # rm does not make an automatic file go away
    tmp = fresh(t, "gone")
    f = open(tmp.path(), "wb")
    f.write(c)
    os.unlink(tmp.path())
    f.write(d)
    f.close()
    if exists(tmp.path()):
        fail("%s came back at the close of a descriptor opened before its rm" % tmp.rel)
    write(t.path(), c)
    f = open(t.path(), "wb")
    f.write(c[:1000])
    tmpname = os.path.join(os.path.dirname(t.path()), "." + os.path.basename(t.path()) + ".new")
    write(tmpname, d)
    os.rename(tmpname, t.path())
    f.close()
    check_is(t, d, "after mv over a file open for writing and that descriptor's close")


def case_create_read_only(t):
    """open(O_CREAT|O_RDONLY) (as flock(1) does) creates a file that is stored."""
    if not t.new_names:
        return
    n = fresh(t, "lock")
    sh("flock '%s' true" % n.path())
    if not exists(n.path()):
        fail("flock(1) created %s, which is gone" % n.rel)
    if read(n.path()) != b"":
        fail("%s is not empty" % n.rel)


def case_pread_while_others_open_and_close(t):
    """pread on an O_RDWR descriptor in a loop while another thread opens and closes the file."""
    if not t.rewritable:
        return
    c, _ = t.contents()
    write(t.path(), c)
    fd = os.open(t.path(), os.O_RDWR)
    stop = threading.Event()
    count = [0, 0]

    def preader():
        while not stop.is_set():
            os.pread(fd, 4096, 0)
            count[0] += 1

    def opener():
        while not stop.is_set():
            g = os.open(t.path(), os.O_RDONLY if count[1] % 2 else os.O_RDWR)
            os.close(g)
            count[1] += 1

    ths = [threading.Thread(target=preader), threading.Thread(target=opener)]
    for th in ths:
        th.start()
    time.sleep(1.0)
    stop.set()
    for th in ths:
        th.join(10)
        if th.is_alive():
            fail("a thread is stuck after 10 s: the mount is deadlocked")
    os.close(fd)
    if min(count) == 0:
        fail("no progress: %s" % count)


CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}

if __name__ == "__main__":
    case, target = sys.argv[2], sys.argv[3]
    t = TARGETS[target]
    t.setup()
    CASES[case](t)
    print("ok")
