# The seed's "Extract Weights" reader (shared/seeds/001), as written; the only change is that the path
# comes from the command line, and a summary line is printed at the end for the test to check.
import struct
import sys
import numpy as np

path = sys.argv[1]

weight_dict = [{} for _ in range(256)]
with open(path, "rb") as f:
    data_for_dim = f.read(256 * 4)
    group_dims = struct.unpack("@256i", data_for_dim)
    print(group_dims)
    data_for_count = f.read(256 * 8)
    group_counts = struct.unpack("@256Q", data_for_count)
    print(group_counts)

    def get_weight(key):
        data_for_group = f.read(4)
        group = struct.unpack("@I", data_for_group)[0]
        key_dim = group_dims[group]
        data_for_weight = f.read(4 * key_dim)
        weight = struct.unpack(f"@{key_dim}f", data_for_weight)
        weight = np.array(weight, dtype=np.float32)
        weight_dict[group][key] = weight
        print(group, key, weight)

    data_for_key = f.read(8)
    while data_for_key:
        key = struct.unpack("@Q", data_for_key)[0]
        get_weight(key)
        data_for_key = f.read(8)

# For the test: records per group, and whether they agree with the header's counts.
summary = {g: len(d) for g, d in enumerate(weight_dict) if d}
print("SUMMARY", sorted(summary.items()),
      "COUNTS_OK", all(group_counts[g] == len(weight_dict[g]) for g in range(256)))
