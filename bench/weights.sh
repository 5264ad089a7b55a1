#!/usr/bin/env bash
# modelfs weights benchmark (SPEC §3.4, §4): /weights of the mount vs h5py with gzip-4 in Coral's way
# (Debian's python3-h5py) vs plain .npy files on the local disk, measured side by side in one run on the
# same float32 tensors: store and load throughput, size on disk, delta and dedup savings for a
# fine-tuned copy and an identical copy of the set, and the daemon's peak memory and CPU. Prints every
# sample, the medians and a summary table with ratios and the SPEC target.
#
#   bash bench/weights.sh
#
# Knobs (environment):
#   BENCH_WEIGHTS_MAX_MB=1024 largest tensor, MiB: the set is the float32 matrices of 4, 16, 64, 256,
#                             1024 MiB up to this size (1364 MiB at the default)
#   BENCH_REPS=3              repetitions of each timed measurement (the median is reported)
#   BENCH_WEIGHTS_GZIP=1      0: skip the modelfs -o weights_codec=gzip-4 rows (info)
#   BENCH_DIR=/tmp            where the temporary work folder is made (needs about 9× the set; checked)
#   BENCH_MODELFS_OPTS=       extra -o options for modelfs
#   BENCH_KEEP=0              1: keep the work folder at the end
#   BENCH_PREFAULT=1          0: skip the page-cache prefault before each timed step that fills new
#                             page-cache pages (see bench/run.sh)
#
# Exit status: non-zero when something fails (build, mount, a command, wrong data, a delta or dedup
# that did not happen); a missed target is only reported as "NOT MET".
set -euo pipefail

T_START=$EPOCHREALTIME
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MAX_MB=${BENCH_WEIGHTS_MAX_MB:-1024}
REPS=${BENCH_REPS:-3}
GZIP_INFO=${BENCH_WEIGHTS_GZIP:-1}
MFS_OPTS=${BENCH_MODELFS_OPTS:-}
KEEP=${BENCH_KEEP:-0}
PREFAULT=${BENCH_PREFAULT:-1}
PY=/usr/bin/python3               # Debian's, with python3-numpy and python3-h5py
HELPER=$ROOT/bench/weights_h5py.py

BENCH_LOGS=()   # data-*/modelfs.log as the stores are made
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
fmt() { awk -v x="$1" 'BEGIN{printf "%.3f", x}'; }
num() { awk -v x="$1" 'BEGIN{ if (x >= 100) printf "%.0f", x; else if (x >= 10) printf "%.1f", x; else printf "%.3f", x }'; }
mbps() { awk -v s="$2" -v b="$1" 'BEGIN{printf "%.1f", b/1e6/s}'; }   # mbps BYTES SECONDS
mb() { awk -v b="$1" 'BEGIN{printf "%.1f", b/1e6}'; }
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }
sum() { printf '%s\n' "$@" | awk '{s+=$1} END{printf "%.6f", s}'; }

declare -A R      # results: key -> median value
record() {        # record KEY UNIT samples...  (prints samples and median)
  local key=$1 unit=$2; shift 2
  local m; m=$(median "$@")
  R[$key]=$m
  local shown=""
  for s in "$@"; do shown+="$(num "$s") "; done
  log "  $key: samples [ ${shown}] $unit -> median $(num "$m") $unit"
}
# record_times KEY BYTES seconds...: records the times (s) and the rates (KEY_mbps, MB/s of BYTES)
record_times() {
  local key=$1 bytes=$2; shift 2
  local rates=() s
  for s in "$@"; do rates+=("$(mbps "$bytes" "$s")"); done
  local m; m=$(median "$@")
  R[${key}_s]=$m
  R[${key}_mbps]=$(mbps "$bytes" "$m")   # the rate of the median time
  local shown=""
  for s in "$@"; do shown+="$(fmt "$s") "; done
  log "  $key: samples [ ${shown}] s = [ ${rates[*]} ] MB/s -> median $(fmt "$m") s = ${R[${key}_mbps]} MB/s"
}
declare -A S      # samples: key -> "t1 t2 ..." (per tensor and per set)
add() { S[$1]+="$2 "; }

# modelfs mount / unmount at MNT. The daemon's peak RSS (VmHWM) is read before every unmount, per phase.
MFS_PID=""; MFS_DATA=""; MFS_O=""
declare -A HWM_PHASE
mfs_mount() {   # mfs_mount DATA [OPTIONS]
  local o=${2:-}
  [[ -n "$MFS_OPTS" ]] && o+=${o:+,}$MFS_OPTS
  "$MFS" mount --data "$1" "$MNT" ${o:+-o "$o"} || die "modelfs mount --data $1 ${o:+-o $o}"
  MFS_PID=$(cat "$1/daemon.pid")
  PIDS+=("$MFS_PID")
  MFS_DATA=$1; MFS_O=${2:-}
}
mfs_umount() {  # mfs_umount PHASE
  local kb
  kb=$(awk '/^VmHWM:/{print $2}' "/proc/$MFS_PID/status" 2>/dev/null || echo 0)
  if (( kb > ${HWM_PHASE[$1]:-0} )); then HWM_PHASE[$1]=$kb; fi
  DAEMON_CPU=$(awk -v a="$DAEMON_CPU" -v b="$(cpu_s "$MFS_PID")" 'BEGIN{print a+b}')
  "$MFS" umount "$MNT" || die "modelfs umount $MNT"
  MFS_PID=""
}
mfs_remount() { local d=$MFS_DATA o=$MFS_O; mfs_umount "$1"; mfs_mount "$d" "$o"; }
wattr() { getfattr --only-values -n "user.modelfs.$1" "$MNT/weights${2:+/$2}" 2>/dev/null || die "getfattr $1 ${2:-weights/}"; }

# Page-cache preparation, as in bench/run.sh: on this VM, filling the page cache with pages the guest
# has not used recently is ~8x slower than reusing pages just freed, so every timed step that fills
# new pages (stores, first loads) starts right after an untimed write+delete of PF_MB MiB. The h5py
# store prefaults inside the helper, after it has loaded the tensors (untimed) into memory.
prefault() {
  [[ "$PREFAULT" == 1 ]] || return 0
  dd if=/dev/zero of="$WORK/prefault" bs=1M count="$PF_MB" status=none || die "prefault"
  rm -f "$WORK/prefault"
}
# recache FILE...: drop the files' pages (fadvise DONTNEED), then read them once, so that every source
# (the .npy files, the h5py file, modelfs's object files) is cached the way a read leaves it.
recache() {
  local f
  for f in "$@"; do
    dd if="$f" iflag=nocache count=0 status=none || die "evict $f"
    cat "$f" >/dev/null
  done
}
# helper OUT ARGS...: runs the Python helper, output in $WORK/OUT (T/I/N lines); fails with its error.
helper() {
  local out=$WORK/$1; shift
  "$PY" "$HELPER" "$@" >"$out" 2>"$WORK/cmd.err" || { head -5 "$WORK/cmd.err" >&2; die "weights_h5py.py $1"; }
}
tline() { awk -v k="$2" '$1=="T" && $2==k {print $3}' "$WORK/$1"; }   # tline OUT LABEL: a T line's time

# ---------------------------------------------------------------- build
log "building modelfs (build/) ..."
cd "$ROOT"
if [[ ! -f build/CMakeCache.txt ]]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null || die "cmake configure"
fi
cmake --build build -j2 --target modelfs >/dev/null || die "cmake --build build"
BUILD_TYPE=$(awk -F= '/^CMAKE_BUILD_TYPE:/{print $2}' build/CMakeCache.txt)
PYVER=$("$PY" -c 'import h5py, numpy; print("h5py", h5py.__version__, "HDF5", h5py.version.hdf5_version, "numpy", numpy.__version__)') \
  || die "$PY cannot import h5py and numpy (apt-get install python3-h5py python3-numpy)"

# ---------------------------------------------------------------- set-up
SIZES=(); SET_MB=0
for m in 4 16 64 256 1024; do
  if (( m <= MAX_MB )); then SIZES+=("$m"); SET_MB=$((SET_MB + m)); fi
done
(( ${#SIZES[@]} > 0 )) || die "BENCH_WEIGHTS_MAX_MB=$MAX_MB: no tensor size fits (smallest 4 MiB)"
BASE=${BENCH_DIR:-/tmp}
# Peak use: the set twice (original, fine-tuned), a native copy, the h5py file (with the fine-tuned
# set), two modelfs stores (the kept one, the one being written, its staged file), the decoded-tensor
# cache, the gzip-4 stores and the prefault file: about 9× the set.
PF_MB=$(( 2 * SET_MB + 256 ))   # a store fills ~2× the set (modelfs: staged .npy + object files)
NEED=$(( (9 * SET_MB + PF_MB) * 1048576 ))
AVAIL=$(( $(df -Pk "$BASE" | awk 'NR==2{print $4}') * 1024 ))
(( AVAIL > NEED )) \
  || die "$BASE has $((AVAIL >> 20)) MiB free, the run needs about $((NEED >> 20)) MiB (set BENCH_DIR)"
WORK=$(mktemp -d "$BASE/modelfs-wbench.XXXXXX")
MNT=$WORK/mnt-modelfs; SET=$WORK/set; H5=$WORK/coral.h5
mkdir -p "$MNT" "$SET" "$WORK/native"
MOUNTS+=("$MNT")
log "work folder $WORK; modelfs build type $BUILD_TYPE; $(nproc) cores; kernel $(uname -r); $PYVER"
log "tensors: float32 ${SIZES[*]} MiB (set $SET_MB MiB), reps $REPS"

log "generating the tensors (normal(0, 0.02) float32) and their fine-tuned copies (~1% of values changed) ..."
t0=$EPOCHREALTIME
helper gen.out gen "$SET" "$MAX_MB"
NAMES=(); declare -A NPY_BYTES
while read -r _ name bytes changed elems; do
  NAMES+=("$name"); NPY_BYTES[$name]=$bytes
  log "  $name: $bytes B .npy; fine-tuned copy: $changed of $elems elements changed" \
      "($(awk -v c="$changed" -v n="$elems" 'BEGIN{printf "%.3f", 100*c/n}')%)"
done < <(awk '$1=="N"' "$WORK/gen.out")
(( ${#NAMES[@]} == ${#SIZES[@]} )) || die "generated ${#NAMES[@]} tensors, expected ${#SIZES[@]}"
SET_BYTES=0; for n in "${NAMES[@]}"; do SET_BYTES=$((SET_BYTES + NPY_BYTES[$n])); done
log "  generated in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}') s; set: $SET_BYTES B of .npy"
ORIG=(); TUNED=()
for n in "${NAMES[@]}"; do ORIG+=("$SET/orig/$n.npy"); TUNED+=("$SET/tuned/$n.npy"); done
sync
recache "${ORIG[@]}" "${TUNED[@]}"

# ---------------------------------------------------------------- 1. store
# Each rep stores the whole set, tensor by tensor, into an empty target, right after a sync and a
# prefault (untimed):
#   native  cp SET/orig/<n>.npy NATIVE/<n>.npy (page-cached source; no fsync), each timed.
#   h5py    the helper loads the tensors into memory and prefaults (untimed), then stores them into a
#           new HDF5 file the way Coral's HDF5Store does (weights/<sha256>, gzip-4, chunks=True, its
#           attributes), timed from opening the file to closing it. The key (SHA-256) is computed
#           untimed: the baseline is charged neither reading the .npy files nor hashing.
#   modelfs cp SET/orig/<n>.npy MNT/weights/<n>.npy into a fresh empty store (mounted before the
#           timer), each timed up to and including close (the daemon hashes, compresses and commits
#           the tensor at close). The set figure is the sum of the cp times.
log "store: the set (${SET_MB} MiB), $REPS reps: native cp, h5py gzip-4, modelfs cp ... (load average $(cut -d' ' -f1-3 /proc/loadavg))"
mark store0
DATA_KEEP=""
for i in $(seq "$REPS"); do
  mkdir "$WORK/native/s$i"
  sync; prefault
  for n in "${NAMES[@]}"; do add "st_nat,$n" "$(timeit cp "$SET/orig/$n.npy" "$WORK/native/s$i/$n.npy")"; done
  rm -rf "$WORK/native/s$i"

  rm -f "$H5"; sync
  WEIGHTS_PREFAULT_FILE=$WORK/prefault WEIGHTS_PREFAULT_MB=$(( PREFAULT == 1 ? PF_MB : 0 )) \
    helper h5store.out store "$H5" "$SET/orig" "${NAMES[@]}"
  for n in "${NAMES[@]}"; do add "st_h5,$n" "$(tline h5store.out "$n")"; done
  add st_h5_set "$(tline h5store.out total)"

  d=$WORK/data-s$i; mkdir "$d"; BENCH_LOGS+=("data-s$i/modelfs.log")
  mfs_mount "$d"
  sync; prefault
  c0=$(cpu_s "$MFS_PID"); w0=$EPOCHREALTIME
  for n in "${NAMES[@]}"; do add "st_mfs,$n" "$(timeit cp "$SET/orig/$n.npy" "$MNT/weights/$n.npy")"; done
  c1=$(cpu_s "$MFS_PID"); w1=$EPOCHREALTIME
  add st_mfs_cores "$(awk -v c="$(awk -v a="$c0" -v b="$c1" 'BEGIN{print b-a}')" -v a="$w0" -v b="$w1" 'BEGIN{printf "%.3f", c/(b-a)}')"
  [[ "$(wattr tensors)" == "${#NAMES[@]}" ]] || die "store $i: $(wattr tensors) tensors, expected ${#NAMES[@]}"
  [[ "$(wattr deltas)" == 0 ]] || die "store $i: $(wattr deltas) deltas among unrelated tensors"
  for n in "${NAMES[@]}"; do
    h=$(readlink "$MNT/weights/$n.npy"); [[ "$h" == "$(cat "$SET/orig/$n.npy.sha256")" ]] \
      || die "weights/$n.npy -> '$h', expected the SHA-256 of the .npy"
  done
  mfs_umount store
  if [[ -n "$DATA_KEEP" ]]; then rm -rf "$DATA_KEEP"; fi
  DATA_KEEP=$d
done
mark store1
log "  machine during the store phase: $(others store0 store1)"
for n in "${NAMES[@]}"; do
  # shellcheck disable=SC2086
  { record_times "store_native_$n" "${NPY_BYTES[$n]}" ${S[st_nat,$n]}
    record_times "store_h5py_$n" "${NPY_BYTES[$n]}" ${S[st_h5,$n]}
    record_times "store_mfs_$n" "${NPY_BYTES[$n]}" ${S[st_mfs,$n]}; }
done
# the set: the sum of each rep's per-tensor times (h5py: open to close of its file)
set_sums() {   # set_sums PREFIX: prints rep r's sum over the tensors of S[PREFIX,<n>], r = 1..REPS
  local r n t a
  for r in $(seq "$REPS"); do
    t=()
    for n in "${NAMES[@]}"; do read -ra a <<<"${S[$1,$n]}"; t+=("${a[$((r - 1))]}"); done
    sum "${t[@]}"; echo
  done
}
# shellcheck disable=SC2046
record_times store_native_set "$SET_BYTES" $(set_sums st_nat)
# shellcheck disable=SC2086
record_times store_h5py_set "$SET_BYTES" ${S[st_h5_set]}
# shellcheck disable=SC2046
record_times store_mfs_set "$SET_BYTES" $(set_sums st_mfs)
# shellcheck disable=SC2086
record store_mfs_cores cores ${S[st_mfs_cores]}

# sizes on disk
SIZE_NPY=$SET_BYTES
SIZE_H5=$(stat -c %s "$H5")
SIZE_MFS=$(du -sb "$DATA_KEEP/weights/objects" | awk '{print $1}')
declare -A SZ_H5
while read -r name bytes; do SZ_H5[$name]=$bytes; done < <(awk '$1=="I" && $3=="chunks"{print $2, $NF}' "$WORK/h5store.out")
log "  sizes on disk: .npy $SIZE_NPY B; h5py file $SIZE_H5 B; modelfs objects/ (du -sb) $SIZE_MFS B"
log "  h5py chunk shapes: $(awk '$1=="I"{c=""; for (k=4; k<NF-1; k++) c=c $k; printf "%s %s; ", $2, c}' "$WORK/h5store.out")"

# ---------------------------------------------------------------- 2. load
# All sources page-cached the way a read leaves them (the .npy files, the h5py file, modelfs's object
# files). Per rep, after a prefault:
#   native  cat SET/orig/<n>.npy >/dev/null, and (after a prefault) numpy.load of each (the helper).
#   h5py    the helper opens the HDF5 file and reads each dataset into memory (f[...][()]); the set
#           figure runs from opening the file to closing it.
#   modelfs cat MNT/weights/<n>.npy >/dev/null on a fresh mount (first: the open decodes the tensor into
#           the daemon's cache file), then the same cat again (second: the kernel's page cache); and,
#           on another fresh mount, numpy.load of each (first). Loads go through the name (a link).
# Every loaded array is compared with its .npy (untimed); the mount's files with cmp after the loads.
log "load: the set, $REPS reps: native cat/numpy.load, h5py, modelfs cat (first, second)/numpy.load ..." \
    "(load average $(cut -d' ' -f1-3 /proc/loadavg))"
mark load0
sync
recache "$H5" "$DATA_KEEP"/weights/objects/*.h5
mfs_mount "$DATA_KEEP"
for i in $(seq "$REPS"); do
  for n in "${NAMES[@]}"; do add "ld_nat,$n" "$(timeit cat "$SET/orig/$n.npy")"; done
  sync; prefault   # numpy.load fills new (anonymous) pages
  helper npload.out npload "$SET/orig" "$SET/orig" "${NAMES[@]}"
  for n in "${NAMES[@]}"; do add "np_nat,$n" "$(tline npload.out "$n")"; done

  sync; prefault
  helper h5load.out load "$H5" "$SET/orig" "${NAMES[@]}"
  for n in "${NAMES[@]}"; do add "ld_h5,$n" "$(tline h5load.out "$n")"; done
  add ld_h5_set "$(tline h5load.out total)"

  mfs_remount load
  sync; prefault
  for n in "${NAMES[@]}"; do
    add "ld1_mfs,$n" "$(timeit cat "$MNT/weights/$n.npy")"
    add "ld2_mfs,$n" "$(timeit cat "$MNT/weights/$n.npy")"
  done
  mfs_remount load
  sync; prefault
  helper npload.out npload "$MNT/weights" "$SET/orig" "${NAMES[@]}"
  for n in "${NAMES[@]}"; do add "np_mfs,$n" "$(tline npload.out "$n")"; done
done
for n in "${NAMES[@]}"; do
  cmp "$SET/orig/$n.npy" "$MNT/weights/$n.npy" || die "weights/$n.npy differs from the stored .npy"
done
log "  cmp: every weights/<name>.npy is byte-identical to its .npy; numpy.load and h5py arrays equal"
mfs_umount load
mark load1
log "  machine during the load phase: $(others load0 load1)"
for n in "${NAMES[@]}"; do
  # shellcheck disable=SC2086
  { record_times "load_native_$n" "${NPY_BYTES[$n]}" ${S[ld_nat,$n]}
    record_times "npload_native_$n" "${NPY_BYTES[$n]}" ${S[np_nat,$n]}
    record_times "load_h5py_$n" "${NPY_BYTES[$n]}" ${S[ld_h5,$n]}
    record_times "load1_mfs_$n" "${NPY_BYTES[$n]}" ${S[ld1_mfs,$n]}
    record_times "load2_mfs_$n" "${NPY_BYTES[$n]}" ${S[ld2_mfs,$n]}
    record_times "npload_mfs_$n" "${NPY_BYTES[$n]}" ${S[np_mfs,$n]}; }
done
# shellcheck disable=SC2046
record_times load_native_set "$SET_BYTES" $(set_sums ld_nat)
# shellcheck disable=SC2046
record_times npload_native_set "$SET_BYTES" $(set_sums np_nat)
# shellcheck disable=SC2086
record_times load_h5py_set "$SET_BYTES" ${S[ld_h5_set]}
# shellcheck disable=SC2046
record_times load1_mfs_set "$SET_BYTES" $(set_sums ld1_mfs)
# shellcheck disable=SC2046
record_times load2_mfs_set "$SET_BYTES" $(set_sums ld2_mfs)
# shellcheck disable=SC2046
record_times npload_mfs_set "$SET_BYTES" $(set_sums np_mfs)

# ---------------------------------------------------------------- 3. fine-tuned copy, identical copy
# Once, on the kept store (which holds the set): (a) cp the fine-tuned set in as tuned-<n>.npy; every
# tensor must be stored as a delta against its original; the growth of stored_bytes is what the
# fine-tune cost. (b) cp the original set in again as dup-<n>.npy: stored_bytes and the tensor count
# must not change (dedup). (c) on a fresh mount, cat the fine-tuned set (first read: base + delta
# decoded) and cmp it. h5py: the fine-tuned set stored into its file the same way (Coral's HDF5Store
# writes a changed tensor in full); the growth of the file is its cost.
log "fine-tuned copy (delta) and identical copy (dedup) of the set ..."
mfs_mount "$DATA_KEEP"
B0=$(wattr stored_bytes); T0=$(wattr tensors)
sync; prefault
tuned_t=()
for n in "${NAMES[@]}"; do tuned_t+=("$(timeit cp "$SET/tuned/$n.npy" "$MNT/weights/tuned-$n.npy")"); done
B1=$(wattr stored_bytes); T1=$(wattr tensors); D1=$(wattr deltas)
declare -A SZ_MFS SZ_DELTA
for n in "${NAMES[@]}"; do
  SZ_MFS[$n]=$(wattr stored_bytes "$n.npy")
  SZ_DELTA[$n]=$(wattr stored_bytes "tuned-$n.npy")
  base=$(getfattr --only-values -n user.modelfs.delta_base "$MNT/weights/tuned-$n.npy" 2>/dev/null || true)
  [[ "$base" == "$(readlink "$MNT/weights/$n.npy")" ]] \
    || die "tuned-$n.npy is not stored as a delta against $n.npy (delta_base '$base')"
  log "  $n: full ${SZ_MFS[$n]} B, fine-tuned as a delta ${SZ_DELTA[$n]} B" \
      "($(awk -v d="${SZ_DELTA[$n]}" -v f="${SZ_MFS[$n]}" 'BEGIN{printf "%.1f", 100*d/f}')% of full)"
done
(( T1 == T0 + ${#NAMES[@]} && D1 == ${#NAMES[@]} )) || die "fine-tuned set: tensors $T0 -> $T1, deltas $D1"
sync; prefault
dup_t=()
for n in "${NAMES[@]}"; do dup_t+=("$(timeit cp "$SET/orig/$n.npy" "$MNT/weights/dup-$n.npy")"); done
B2=$(wattr stored_bytes); T2=$(wattr tensors); DEDUP_RATIO=$(wattr dedup_ratio)
for n in "${NAMES[@]}"; do
  [[ "$(readlink "$MNT/weights/dup-$n.npy")" == "$(readlink "$MNT/weights/$n.npy")" ]] \
    || die "dup-$n.npy does not name the same tensor as $n.npy"
done
log "  stored_bytes: set $B0 -> + fine-tuned $B1 -> + identical copy $B2; tensors $T0 -> $T1 -> $T2;" \
    "deltas $D1; dedup_ratio $DEDUP_RATIO; compression_ratio $(wattr compression_ratio)"
mfs_remount delta
sync; prefault
tl_t=()
for n in "${NAMES[@]}"; do tl_t+=("$(timeit cat "$MNT/weights/tuned-$n.npy")"); done
for n in "${NAMES[@]}"; do
  cmp "$SET/tuned/$n.npy" "$MNT/weights/tuned-$n.npy" || die "weights/tuned-$n.npy differs"
done
log "  cmp: every weights/tuned-<name>.npy (a delta) is byte-identical to its .npy"
mfs_umount delta
H5_B0=$SIZE_H5
sync
WEIGHTS_PREFAULT_FILE=$WORK/prefault WEIGHTS_PREFAULT_MB=$(( PREFAULT == 1 ? PF_MB : 0 )) \
  helper h5tuned.out store "$H5" "$SET/tuned" "${NAMES[@]}"
H5_B1=$(stat -c %s "$H5")
record_times store_tuned_mfs "$SET_BYTES" "$(sum "${tuned_t[@]}")"
record_times store_dup_mfs "$SET_BYTES" "$(sum "${dup_t[@]}")"
record_times load1_tuned_mfs "$SET_BYTES" "$(sum "${tl_t[@]}")"
record_times store_tuned_h5py "$SET_BYTES" "$(tline h5tuned.out total)"
GROW_TUNED_MFS=$((B1 - B0)); GROW_DUP_MFS=$((B2 - B1)); GROW_TUNED_H5=$((H5_B1 - H5_B0))
log "  growth for the fine-tuned set: modelfs $GROW_TUNED_MFS B, h5py $GROW_TUNED_H5 B;" \
    "for the identical set: modelfs $GROW_DUP_MFS B"

# ---------------------------------------------------------------- 4. modelfs with gzip-4 (info)
# The same store and first-load measurements with -o weights_codec=gzip-4 (Coral's codec; modelfs
# still adds HDF5's shuffle and compresses on both cores).
if [[ "$GZIP_INFO" == 1 ]]; then
  log "modelfs -o weights_codec=gzip-4 (info): store and first load of the set, $REPS reps ..."
  GZ_KEEP=""
  for i in $(seq "$REPS"); do
    d=$WORK/data-g$i; mkdir "$d"; BENCH_LOGS+=("data-g$i/modelfs.log")
    mfs_mount "$d" weights_codec=gzip-4
    [[ "$(wattr codec)" == gzip-4 ]] || die "codec of $d is $(wattr codec)"
    sync; prefault
    for n in "${NAMES[@]}"; do add "st_gz,$n" "$(timeit cp "$SET/orig/$n.npy" "$MNT/weights/$n.npy")"; done
    mfs_umount gzip
    if [[ -n "$GZ_KEEP" ]]; then rm -rf "$GZ_KEEP"; fi
    GZ_KEEP=$d
  done
  SIZE_GZ=$(du -sb "$GZ_KEEP/weights/objects" | awk '{print $1}')
  sync
  recache "$GZ_KEEP"/weights/objects/*.h5
  mfs_mount "$GZ_KEEP" weights_codec=gzip-4
  for i in $(seq "$REPS"); do
    mfs_remount gzip
    sync; prefault
    for n in "${NAMES[@]}"; do add "ld_gz,$n" "$(timeit cat "$MNT/weights/$n.npy")"; done
  done
  for n in "${NAMES[@]}"; do
    cmp "$SET/orig/$n.npy" "$MNT/weights/$n.npy" || die "gzip-4 store: weights/$n.npy differs"
  done
  mfs_umount gzip
  # shellcheck disable=SC2046
  record_times store_gz_set "$SET_BYTES" $(set_sums st_gz)
  # shellcheck disable=SC2046
  record_times load1_gz_set "$SET_BYTES" $(set_sums ld_gz)
  log "  size on disk, modelfs gzip-4: $SIZE_GZ B"
fi
MOUNTS=()
mark end
log "machine during the whole run (from the first store): $(others store0 end); load average now" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- summary
# Speed ratios: modelfs rate / reference rate (>1 = faster). Size ratios: modelfs / reference (<1 =
# smaller).
ratio() { [[ -z "$1" || -z "$2" ]] && { echo "-"; return; }; awk -v m="$1" -v r="$2" 'BEGIN{printf "%.2f", m/r}'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN{exit !(a+0 >= b+0)}'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN{exit !(a+0 <= b+0)}'; }
ALL_MET=1
ROWF='| %-38s | %10s | %11s | %10s | %8s | %8s | %-30s | %-8s |\n'
# row LABEL NATIVE H5PY MFS KIND TARGET: KIND rate (target: ratio to h5py >= TARGET) or size (target:
# ratio <= TARGET); an empty TARGET makes an (info) row.
row() {
  local label=$1 nat=$2 h5=$3 mfs=$4 kind=$5 tgt=$6
  local rh rn target met
  rh=$(ratio "$mfs" "$h5"); rn=$(ratio "$mfs" "$nat")
  if [[ -z "$tgt" ]]; then target="(info)"; met="-"
  elif [[ $kind == rate ]]; then
    target=">=${tgt}x h5py gzip-4"
    if ge "$rh" "$tgt"; then met=met; else met="NOT MET"; fi
  else
    target="<= h5py gzip-4"
    if le "$mfs" "$h5"; then met=met; else met="NOT MET"; fi
  fi
  [[ "$met" == "NOT MET" ]] && ALL_MET=0
  # shellcheck disable=SC2059
  printf "$ROWF" "$label" "${nat:--}" "${h5:--}" "$mfs" "$rh" "$rn" "$target" "$met"
}
echo
echo "== modelfs weights benchmark summary (median of $REPS; rates in MB/s = 1e6 B/s of .npy bytes," \
     "sizes in MB = 1e6 B; m/h5py and m/native: speed ratios (>1 = faster) for rates, size ratios" \
     "(<1 = smaller) for sizes) =="
echo "   set: float32 ${SIZES[*]} MiB = $SET_BYTES B of .npy, values normal(0, 0.02) (full-entropy" \
     "mantissas: the worst case for compression); modelfs codec $(
     [[ -n "$MFS_OPTS" ]] && echo "default + -o $MFS_OPTS" || echo "zstd-1 + shuffle (default)");" \
     "baseline $PYVER in Coral's way (one file, weights/<sha256>, gzip-4, chunks=True, no shuffle) from" \
     "and into memory, key hashed untimed; modelfs stores by cp of the page-cached .npy (incl. close =" \
     "commit), loads from a fresh mount (first: includes the decode)"
# shellcheck disable=SC2059
printf "$ROWF" measure "native .npy" "h5py gzip-4" modelfs "m/h5py" "m/native" "SPEC target" "met?"
printf '|%s|\n' "----------------------------------------|------------|-------------|------------|----------|----------|--------------------------------|----------"
row "store set (MB/s)"                     "${R[store_native_set_mbps]}" "${R[store_h5py_set_mbps]}" "${R[store_mfs_set_mbps]}" rate 5
row "load set first, numpy.load (MB/s)"    "${R[npload_native_set_mbps]}" "${R[load_h5py_set_mbps]}" "${R[npload_mfs_set_mbps]}" rate 5
row "load set first, cat (MB/s)"           "${R[load_native_set_mbps]}" "${R[load_h5py_set_mbps]}" "${R[load1_mfs_set_mbps]}" rate ""
row "load set second, cat (MB/s)"          "${R[load_native_set_mbps]}" "${R[load_h5py_set_mbps]}" "${R[load2_mfs_set_mbps]}" rate ""
row "size on disk (MB)"                    "$(mb "$SIZE_NPY")" "$(mb "$SIZE_H5")" "$(mb "$SIZE_MFS")" size 1
LAST=${NAMES[-1]}
row "store ${LAST} (MB/s)"                 "${R[store_native_${LAST}_mbps]}" "${R[store_h5py_${LAST}_mbps]}" "${R[store_mfs_${LAST}_mbps]}" rate ""
row "load ${LAST} first, cat (MB/s)"       "${R[load_native_${LAST}_mbps]}" "${R[load_h5py_${LAST}_mbps]}" "${R[load1_mfs_${LAST}_mbps]}" rate ""
row "fine-tuned set: size growth (MB)"     "$(mb "$SIZE_NPY")" "$(mb "$GROW_TUNED_H5")" "$(mb "$GROW_TUNED_MFS")" size ""
row "fine-tuned set: store (MB/s)"         "${R[store_native_set_mbps]}" "${R[store_tuned_h5py_mbps]}" "${R[store_tuned_mfs_mbps]}" rate ""
row "fine-tuned set: load first, cat (MB/s)" "${R[load_native_set_mbps]}" "" "${R[load1_tuned_mfs_mbps]}" rate ""
if (( GROW_DUP_MFS == 0 )); then dmet=met; else dmet="NOT MET"; ALL_MET=0; fi
# shellcheck disable=SC2059
printf "$ROWF" "identical set again: growth (B)" - - "$GROW_DUP_MFS" - - "+0 B (dedup)" "$dmet"
row "identical set again: store (MB/s)"    "${R[store_native_set_mbps]}" "" "${R[store_dup_mfs_mbps]}" rate ""
if [[ "$GZIP_INFO" == 1 ]]; then
  row "modelfs gzip-4: store set (MB/s)"   "${R[store_native_set_mbps]}" "${R[store_h5py_set_mbps]}" "${R[store_gz_set_mbps]}" rate ""
  row "modelfs gzip-4: load first, cat (MB/s)" "${R[load_native_set_mbps]}" "${R[load_h5py_set_mbps]}" "${R[load1_gz_set_mbps]}" rate ""
  row "modelfs gzip-4: size on disk (MB)"  "$(mb "$SIZE_NPY")" "$(mb "$SIZE_H5")" "$(mb "$SIZE_GZ")" size ""
fi
memrow() {   # memrow LABEL KB
  local met=met
  if (( $2 >= 256 * 1024 )); then met="NOT MET"; ALL_MET=0; fi
  # shellcheck disable=SC2059
  printf "$ROWF" "$1" - - "$(mib "$2")" - - "<256 MiB (SPEC §4 stream)" "$met"
}
memrow "daemon VmHWM, store (MiB)" "${HWM_PHASE[store]:-0}"
memrow "daemon VmHWM, load (MiB)" "${HWM_PHASE[load]:-0}"
# shellcheck disable=SC2059
printf "$ROWF" "daemon CPU/wall during store (cores)" - - "$(fmt "${R[store_mfs_cores]}")" - - "(info: 2 cores)" -
echo
echo "per tensor (median MB/s; store: native cp, h5py, modelfs cp; load first: native cat, h5py, modelfs cat," \
     "modelfs numpy.load; st m/h5 = modelfs cp / h5py store, np m/h5 = modelfs numpy.load / h5py load;" \
     "sizes in MB; delta = the fine-tuned copy as stored by modelfs):"
PTF='| %-7s | %8s | %8s | %8s | %7s | %8s | %8s | %8s | %8s | %7s | %8s | %8s | %8s |\n'
# shellcheck disable=SC2059
printf "$PTF" tensor "st nat" "st h5py" "st mfs" "st m/h5" "ld nat" "ld h5py" "ld mfs" "np mfs" "np m/h5" "MB h5py" "MB mfs" "MB delta"
for n in "${NAMES[@]}"; do
  # shellcheck disable=SC2059
  printf "$PTF" "$n" "${R[store_native_${n}_mbps]}" "${R[store_h5py_${n}_mbps]}" "${R[store_mfs_${n}_mbps]}" \
    "$(ratio "${R[store_mfs_${n}_mbps]}" "${R[store_h5py_${n}_mbps]}")" \
    "${R[load_native_${n}_mbps]}" "${R[load_h5py_${n}_mbps]}" "${R[load1_mfs_${n}_mbps]}" "${R[npload_mfs_${n}_mbps]}" \
    "$(ratio "${R[npload_mfs_${n}_mbps]}" "${R[load_h5py_${n}_mbps]}")" \
    "$(mb "${SZ_H5[$n]:-0}")" "$(mb "${SZ_MFS[$n]}")" "$(mb "${SZ_DELTA[$n]}")"
done
echo
echo "fine-tuned set (~1% of values changed): modelfs stored $(mb "$GROW_TUNED_MFS") MB more" \
     "($(awk -v g="$GROW_TUNED_MFS" -v s="$((B0))" 'BEGIN{printf "%.1f", 100*g/s}')% of the set's" \
     "$(mb "$B0") MB), h5py $(mb "$GROW_TUNED_H5") MB more; the identical set again: modelfs +$GROW_DUP_MFS B" \
     "(dedup_ratio $DEDUP_RATIO)."
echo "modelfs daemon peak RSS (VmHWM): store $(mib "${HWM_PHASE[store]:-0}") MiB, load" \
     "$(mib "${HWM_PHASE[load]:-0}") MiB, delta/dedup $(mib "${HWM_PHASE[delta]:-0}") MiB${HWM_PHASE[gzip]:+, gzip-4 $(mib "${HWM_PHASE[gzip]}") MiB}."
echo "shared machine: during the store phase $(others store0 store1); during the load phase" \
     "$(others load0 load1) (others = other users' processes and kernel threads, e.g. writeback)."
if (( ALL_MET )); then echo "All SPEC targets met."; else echo "Some SPEC targets NOT MET (see table)."; fi
