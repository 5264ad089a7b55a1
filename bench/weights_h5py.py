#!/usr/bin/python3
"""Helper of bench/weights.sh: the tensor set, the h5py baseline and numpy.load timings.

Run with Debian's /usr/bin/python3 (python3-numpy, python3-h5py). Every timing is printed as one line
`T <label> <seconds>` (wall time, time.perf_counter); other lines are information.

  gen DIR MAX_MB             writes DIR/orig/<name>.npy (float32, normal(0, 0.02)) and
                             DIR/tuned/<name>.npy (the same with ~1% of the values nudged), sizes
                             4, 16, 64, 256, 1024 MiB up to MAX_MB, each with <file>.sha256 (the
                             key: SHA-256 of the .npy bytes, what modelfs names it by); prints
                             `N <name> <npy bytes> <elements changed in tuned> <elements>`.
  store H5 SRC NAME...       Coral's HDF5Store path: loads SRC/<NAME>.npy into memory (untimed),
                             then times, in one HDF5 file H5 (mode 'a'), per tensor
                             create_dataset('weights/<sha256>', data=a, compression='gzip',
                             compression_opts=4, chunks=True) with Coral's attributes; `T total` runs
                             from opening H5 to closing it. The key (SHA-256 of the .npy bytes, the
                             same as modelfs's hash) comes from gen's .sha256 file. Prints
                             `I <name> chunks <shape> storage <bytes>`. With WEIGHTS_PREFAULT_FILE
                             and WEIGHTS_PREFAULT_MB set, prefaults (see prefault()) after loading.
  load H5 SRC NAME...        opens H5, times f['weights/<sha256>'][()] per tensor (`T total`: these
                             plus opening and closing H5); after each read (untimed) checks the array
                             is bit for bit SRC/<NAME>.npy and drops it.
  npload DIR SRC NAME...     times numpy.load(DIR/<NAME>.npy) per tensor (`T total`: the sum), each
                             checked (untimed) against SRC/<NAME>.npy and dropped.
"""
import hashlib
import json
import os
import sys
import time

import numpy as np

# (name, shape): float32 matrices of a transformer's sizes, 4 MiB .. 1 GiB of data.
SHAPES = [
    ("w0004m", (1024, 1024)),
    ("w0016m", (2048, 2048)),
    ("w0064m", (4096, 4096)),
    ("w0256m", (8192, 8192)),
    ("w1024m", (16384, 16384)),
]
TUNE_FRACTION = 0.01  # share of the elements a "fine-tune" changes
TUNE_STEP = 2e-4      # size of the change (1% of the weights' std 0.02)


def gen(out, max_mb):
    os.makedirs(os.path.join(out, "orig"), exist_ok=True)
    os.makedirs(os.path.join(out, "tuned"), exist_ok=True)
    for seed, (name, shape) in enumerate(SHAPES):
        n = shape[0] * shape[1]
        if n * 4 > max_mb * 1048576:
            continue
        rng = np.random.default_rng(1000 + seed)
        # Trained-weight-like values: normal(0, 0.02), full float32 mantissas (no quantization).
        a = rng.standard_normal(shape, dtype=np.float32)
        a *= np.float32(0.02)
        np.save(os.path.join(out, "orig", name + ".npy"), a)
        # The fine-tuned copy: ~1% of the elements (uniform positions) moved by ~N(0, 2e-4).
        idx = rng.integers(0, n, size=int(n * TUNE_FRACTION))
        flat = a.reshape(-1)
        flat[idx] += rng.standard_normal(idx.size, dtype=np.float32) * np.float32(TUNE_STEP)
        np.save(os.path.join(out, "tuned", name + ".npy"), a)
        del a, flat, idx
        b = np.load(os.path.join(out, "orig", name + ".npy"))
        c = np.load(os.path.join(out, "tuned", name + ".npy"))
        changed = int(np.count_nonzero(b != c))
        del b, c
        for sub in ("orig", "tuned"):
            path = os.path.join(out, sub, name + ".npy")
            with open(path + ".sha256", "w") as f:
                f.write(npy_sha256(path) + "\n")
        size = os.path.getsize(os.path.join(out, "orig", name + ".npy"))
        print(f"N {name} {size} {changed} {n}", flush=True)


def key_of(src, name):
    """The tensor's key: the SHA-256 of its .npy bytes, which gen saved next to it."""
    with open(os.path.join(src, name + ".npy.sha256")) as f:
        return f.read().strip()


def npy_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def store(h5, src, names):
    tensors = []
    for name in names:  # untimed: the baseline gets the data in memory and its key for free
        path = os.path.join(src, name + ".npy")
        tensors.append((name, key_of(src, name), np.load(path)))
    prefault()
    t0 = time.perf_counter()
    with __import__("h5py").File(h5, "a") as f:
        for name, key, a in tensors:
            t = time.perf_counter()
            path = "weights/" + key
            if path not in f:  # Coral's store(): a known hash is not written again
                d = f.create_dataset(path, data=a, compression="gzip", compression_opts=4,
                                     chunks=True)
                d.attrs["name"] = name
                d.attrs["shape"] = list(a.shape)
                d.attrs["dtype"] = str(a.dtype)
                d.attrs["layer_type"] = ""
                d.attrs["model_name"] = ""
                d.attrs["compression_info"] = json.dumps({"compression": "gzip",
                                                          "compression_opts": 4})
                d.attrs["hash"] = key
                info = f"chunks {d.chunks} storage {d.id.get_storage_size()}"
            else:
                info = "already stored"
            print(f"T {name} {time.perf_counter() - t:.6f}")
            print(f"I {name} {info}")
    print(f"T total {time.perf_counter() - t0:.6f}", flush=True)


def prefault():
    """bench/weights.sh's page-cache prefault, done here after the untimed loading: write and delete
    WEIGHTS_PREFAULT_MB MiB at WEIGHTS_PREFAULT_FILE (both from the environment; unset: nothing)."""
    path, mb = os.environ.get("WEIGHTS_PREFAULT_FILE"), int(os.environ.get("WEIGHTS_PREFAULT_MB", "0"))
    if not path or mb <= 0:
        return
    block = bytes(1 << 20)
    with open(path, "wb") as f:
        for _ in range(mb):
            f.write(block)
    os.unlink(path)


def load(h5, src, names):
    keys = [key_of(src, n) for n in names]
    total = 0.0
    t0 = time.perf_counter()
    f = __import__("h5py").File(h5, "r")
    total += time.perf_counter() - t0
    for name, key in zip(names, keys):
        t = time.perf_counter()
        a = f["weights/" + key][()]
        dt = time.perf_counter() - t
        total += dt
        print(f"T {name} {dt:.6f}")
        check(name, a, src)  # untimed
        del a
    t = time.perf_counter()
    f.close()
    total += time.perf_counter() - t
    print(f"T total {total:.6f}", flush=True)


def npload(d, src, names):
    total = 0.0
    for name in names:
        t = time.perf_counter()
        a = np.load(os.path.join(d, name + ".npy"))
        dt = time.perf_counter() - t
        total += dt
        print(f"T {name} {dt:.6f}")
        check(name, a, src)  # untimed
        del a
    print(f"T total {total:.6f}", flush=True)


def check(name, a, src):
    """Exits non-zero unless a is bit for bit SRC/<name>.npy."""
    ref = np.load(os.path.join(src, name + ".npy"))
    if a.dtype != ref.dtype or a.shape != ref.shape or not np.array_equal(
            a.view(np.uint32), ref.view(np.uint32)):
        sys.exit(f"weights_h5py: {name}: loaded array differs from {src}/{name}.npy")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "gen":
        gen(args[0], int(args[1]))
    elif cmd == "store":
        store(args[0], args[1], args[2:])
    elif cmd == "load":
        load(args[0], args[1], args[2:])
    elif cmd == "npload":
        npload(args[0], args[1], args[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
