#!/usr/bin/env bash
# README command 1: install dependencies, build, fill a store with sample data and mount it.
#   bash mount-scripts/demo.sh [MOUNTPOINT]     (default ./demo/mnt; data in ./demo/data)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bash tools/install-deps.sh
bash tools/build.sh
mnt=${1:-$root/demo/mnt}
data=${MODELFS_DATA:-$root/demo/data}
mkdir -p "$mnt"
if mountpoint -q "$mnt"; then build/bin/modelfs umount "$mnt"; fi
if [ ! -e "$data/models/models.db" ]; then build/bin/modelfs demo --data "$data"; fi
build/bin/modelfs mount --data "$data" "$mnt"
cat <<EOT

modelfs is mounted at $mnt (data in $data). Try:
  ls -l $mnt/models/1 $mnt/models/1/layers $mnt/models/1/history/0
  cat $mnt/models/1/meta
  /usr/bin/python3 -c "import numpy as np; print(np.fromfile('$mnt/models/1/layers/0', dtype=np.float32).reshape(64, 784))"
  cp /etc/hostname $mnt/models/2/layers/1 && ls $mnt/models/2/history/1
  cat $mnt/embeddings/groups; ls -l $mnt/embeddings/group
  ls -l $mnt/timeseries; getfattr -n user.modelfs.size $mnt/timeseries/temperature
  /usr/bin/python3 -c "import numpy as np; t, v = np.fromfile('$mnt/timeseries/temperature').reshape(2, -1); print(t[:5], v[:5])"
  /usr/bin/python3 -c "import numpy as np; np.stack([np.arange(5.0), np.ones(5)]).tofile('$mnt/timeseries/mine')"
  ls -l $mnt/weights; getfattr -d $mnt/weights; getfattr -d $mnt/weights/mnist-mlp-finetuned.fc1.weight.npy
  /usr/bin/python3 -c "import numpy as np; print(np.load('$mnt/weights/mnist-mlp.fc1.weight.npy', mmap_mode='r').shape)"
  /usr/bin/python3 -c "import numpy as np; np.save('$mnt/weights/mine.npy', np.eye(3))" && ls -l $mnt/weights/mine.npy
  ls -l $mnt/neurons $mnt/neurons/by-type/knowledge $mnt/synapses; cat $mnt/neurons/by-type/tool/*.json
  /usr/bin/python3 -c "import glob, numpy as np; print([np.fromfile(p, dtype=np.float32) for p in glob.glob('$mnt/neurons/*.vec')][:2])"
  echo '{"type": "knowledge", "source_data": "mine"}' > $mnt/neurons/\$(cat /proc/sys/kernel/random/uuid).json
  head -c 300 $mnt/neurons/graph/export.json; touch $mnt/neurons/graph/backups/mine.db; ls -l $mnt/neurons/graph/backups
  rsync -aX $mnt/ /tmp/modelfs-backup/
Unmount with:
  $root/build/bin/modelfs umount $mnt
EOT
