#!/usr/bin/python3
"""Write load for the kill -9 test: creates, overwrites and renames through a mount until it dies.

Usage: crash_writer.py MOUNT ACKLOG WORKER

Every write whose close returned success is appended to ACKLOG (outside the mount, flushed) as
"<path> <sha256>": what the daemon acknowledged, which must be there, whole, after a crash and a
remount. Writes go to new names (so each acknowledged one can be checked exactly), and to one shared
name per folder (so that commits invalidate entries that other creates in the same folder hold).
"""
import hashlib
import os
import sys
import time

mount, acklog, worker = sys.argv[1], sys.argv[2], int(sys.argv[3])
ack = open(acklog, "a", buffering=1)


def payload(i, unit):
    n = (1 + (i * 7919 + worker * 104729) % 64) * unit * 64
    seed = hashlib.sha256(b"%d-%d" % (worker, i)).digest()
    return (seed * (n // len(seed) + 1))[:n]


def put(path, data, via_rename=False):
    if via_rename:
        tmp = os.path.join(os.path.dirname(path), ".%s.tmp%d" % (os.path.basename(path), worker))
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, path)
    else:
        with open(path, "wb") as f:
            f.write(data)
    ack.write("%s %s\n" % (os.path.relpath(path, mount), hashlib.sha256(data).hexdigest()))


i = 0
deadline = time.monotonic() + 30  # bounded, whatever happens to the test
try:
    while time.monotonic() < deadline:
        i += 1
        series = os.path.join(mount, "timeseries", "w%d_%d" % (worker, i))
        put(series, payload(i, 16), via_rename=(i % 3 == 0))
        layer = os.path.join(mount, "models", str(worker + 1), "layers", str(i))
        put(layer, payload(i, 4), via_rename=(i % 4 == 0))
        # Shared names: overwritten by every worker (not checked; they keep the folders busy).
        with open(os.path.join(mount, "timeseries", "shared"), "wb") as f:
            f.write(payload(i, 16))
        if i % 5 == 0:
            os.listdir(os.path.join(mount, "timeseries"))
except OSError:
    pass  # the daemon is gone: what was acknowledged is in the log
