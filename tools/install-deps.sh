#!/usr/bin/env bash
# Installs the Debian packages modelfs needs to build, test and benchmark. Idempotent: installs only
# what is missing (apt-get update runs only then).
set -euo pipefail
packages=(
  build-essential cmake pkg-config
  libfuse3-dev fuse3
  libsqlite3-dev librocksdb-dev
  libcli11-dev
  libgtest-dev libgmock-dev
  libhdf5-dev hdf5-tools libssl-dev libzstd-dev zlib1g-dev libxxhash-dev liblzf-dev nlohmann-json3-dev rapidjson-dev
  python3 python3-numpy python3-h5py python3-hdf5plugin hdf5-plugin-lzf
  rsync attr util-linux
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
