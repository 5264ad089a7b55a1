#!/usr/bin/env bash
# README command 2: install dependencies, build, run every test (unit, fs core, end-to-end on real
# FUSE mounts). Each end-to-end test has a CTest TIMEOUT and unmounts what it mounted.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
bash tools/build.sh
cd build
# Long variants (label "long": more rounds of the same tests) run with `ctest -L long`.
ctest -j"${JOBS:-2}" --output-on-failure --timeout 600 -LE long
