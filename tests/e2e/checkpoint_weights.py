# Reads a damo checkpoint (u64 count; records of u64 key_len, key, u64 value_len, value) and prints,
# per key, the group, update_num and weights taken from the value (int32 group, u64 key,
# u64 update_time_ms, u64 update_num, int32 dim, float32[dim], slots), so a test can compare them with a dump.
import struct
import sys

with open(sys.argv[1], "rb") as f:
    (count,) = struct.unpack("<Q", f.read(8))
    for _ in range(count):
        (klen,) = struct.unpack("<Q", f.read(8))
        f.read(klen)
        (vlen,) = struct.unpack("<Q", f.read(8))
        value = f.read(vlen)
        group, key, t, num, dim = struct.unpack("<iQQQi", value[:32])
        weights = struct.unpack(f"<{dim}f", value[32:32 + 4 * dim])
        print(group, key, num, " ".join(repr(w) for w in weights))
    assert f.read(1) == b"", "bytes after the last record"
