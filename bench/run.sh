#!/usr/bin/env bash
# modelfs benchmark (SPEC §4, I/O part): native local files vs libfuse's passthrough_ll vs modelfs,
# measured side by side in one run. Prints every sample, the medians and a summary table with ratios.
#
#   bash bench/run.sh
#
# Knobs (environment):
#   BENCH_SIZE_MB=1024        size of the sequential read/write file, MiB
#   BENCH_ENTRIES=100000      entries of the big listing folder (ls -l, find)
#   BENCH_SMALL_ENTRIES=10000 entries of the small listing folder (all three contenders; 0 = skip)
#   BENCH_REPS=3              repetitions of each timed measurement (the median is reported)
#   BENCH_DIR=/tmp            where the temporary work folder is made (needs ~3×SIZE free)
#   BENCH_BUILD_DIR=<repo>/build-bench   where the filler and passthrough_ll are compiled
#   BENCH_PT_OPTS=            extra -o options for passthrough_ll (default: none = its defaults)
#   BENCH_MODELFS_OPTS=       extra -o options for modelfs
#   BENCH_KEEP=0              1: keep the work folder at the end
#   BENCH_PREFAULT=1          0: skip the page-cache prefault before each timed write and first read
#                             (see "prefault" below; on this VM it is the difference between ~0.43 and
#                             ~3.5 GB/s for a native write, whatever the file system)
#
# Exit status: non-zero when something fails (build, mount, a command, wrong data); a missed target is
# only reported as "NOT MET".
set -euo pipefail

T_START=$EPOCHREALTIME
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZE_MB=${BENCH_SIZE_MB:-1024}
ENTRIES=${BENCH_ENTRIES:-100000}
SMALL=${BENCH_SMALL_ENTRIES:-10000}
REPS=${BENCH_REPS:-3}
BUILD_BENCH=${BENCH_BUILD_DIR:-$ROOT/build-bench}
PT_OPTS=${BENCH_PT_OPTS:-}
MFS_OPTS=${BENCH_MODELFS_OPTS:-}
KEEP=${BENCH_KEEP:-0}
PREFAULT=${BENCH_PREFAULT:-1}
LAYER_BYTES=64

BENCH_LOGS=(passthrough_ll.log data/modelfs.log)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
gbps() { awk -v s="$1" -v mb="$SIZE_MB" 'BEGIN{printf "%.3f", mb*1048576/1e9/s}'; }
fmt() { awk -v x="$1" 'BEGIN{printf "%.3f", x}'; }

declare -A R      # results: key -> median value (GB/s for I/O, seconds for listings)
record() {        # record KEY UNIT samples...  (prints samples and median)
  local key=$1 unit=$2; shift 2
  local m; m=$(median "$@")
  R[$key]=$m
  local shown=""
  for s in "$@"; do shown+="$(fmt "$s") "; done
  log "  $key: samples [ ${shown}] $unit -> median $(fmt "$m") $unit"
}

# modelfs mount / unmount. The daemon's peak memory is read before every unmount.
MFS_PID=""
HWM_MAX=0; HWM_WHERE=""
declare -A HWM_PHASE   # phase -> max VmHWM (kB) of the daemons that served it
mfs_mount() {
  local t0=$EPOCHREALTIME
  "$MFS" mount --data "$DATA" "$MNT_M" ${MFS_OPTS:+-o "$MFS_OPTS"} || die "modelfs mount"
  MFS_PID=$(cat "$DATA/daemon.pid")
  PIDS+=("$MFS_PID")
  MFS_MOUNT_S=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.3f", b-a}')
}
mfs_umount() {   # mfs_umount PHASE
  local kb
  kb=$(awk '/^VmHWM:/{print $2}' "/proc/$MFS_PID/status" 2>/dev/null || echo 0)
  if (( kb > HWM_MAX )); then HWM_MAX=$kb; HWM_WHERE=$1; fi
  if (( kb > ${HWM_PHASE[$1]:-0} )); then HWM_PHASE[$1]=$kb; fi
  "$MFS" umount "$MNT_M" || die "modelfs umount"
  MFS_PID=""
}
mfs_remount() { mfs_umount "$1"; mfs_mount; }

PT_PID=""
PT_EXTRA=""   # extra passthrough_ll option of one phase (the xattr rows)
pt_mount() {
  local o="source=$WORK/native${PT_OPTS:+,$PT_OPTS}${PT_EXTRA:+,$PT_EXTRA}"
  # Foreground mode in the background: we know the pid and own it. passthrough_ll keeps one O_PATH fd
  # per inode the kernel knows, so its fd limit is raised to the hard limit.
  ( ulimit -n "$(ulimit -Hn)"; exec "$PT" -f -o "$o" "$MNT_P" ) \
    2>>"$WORK/passthrough_ll.log" &
  PT_PID=$!
  PIDS+=("$PT_PID")
  for _ in $(seq 100); do
    mountpoint -q "$MNT_P" && return 0
    kill -0 "$PT_PID" 2>/dev/null || die "passthrough_ll exited: $(tail -3 "$WORK/passthrough_ll.log")"
    sleep 0.05
  done
  die "passthrough_ll did not mount"
}
pt_umount() {
  fusermount3 -u "$MNT_P" || die "fusermount3 -u $MNT_P"
  wait "$PT_PID" || die "passthrough_ll exited with an error"
  PT_PID=""
}
pt_remount() { pt_umount; pt_mount; }

# On this (Firecracker) VM, filling the page cache with pages the guest has not used recently is ~8x
# slower than reusing pages just freed: a native 1 GiB dd write runs at ~0.43 GB/s after a plain
# `sync`, ~3.5 GB/s right after a same-sized file was written and deleted on the same file system
# (prefaulting through /dev/shm does not help). Every run that fills new page-cache pages (all writes,
# FUSE first reads) therefore starts right after such an untimed write+delete, so all three contenders
# get the same memory and the figures measure the file systems, not the hypervisor.
prefault() {
  [[ "$PREFAULT" == 1 ]] || return 0
  dd if=/dev/zero of="$WORK/prefault" bs=1M count=$((SIZE_MB + 256)) status=none || die "prefault"
  rm -f "$WORK/prefault"
}

# ---------------------------------------------------------------- build
log "building modelfs (build/) ..."
cd "$ROOT"
if [[ ! -f build/CMakeCache.txt ]]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null || die "cmake configure"
fi
cmake --build build -j2 --target modelfs modelfs_models_store modelfs_common >/dev/null \
  || die "cmake --build build"
BUILD_TYPE=$(awk -F= '/^CMAKE_BUILD_TYPE:/{print $2}' build/CMakeCache.txt)
mkdir -p "$BUILD_BENCH"
FILL=$BUILD_BENCH/fill_models
if [[ ! -x "$FILL" || "$FILL" -ot bench/fill_models.cc || "$FILL" -ot build/stores/libmodelfs_models_store.a \
      || "$FILL" -ot build/stores/libmodelfs_common.a ]]; then
  log "compiling bench/fill_models.cc ..."
  g++ -O2 -Wall -std=c++20 -I. bench/fill_models.cc build/stores/libmodelfs_models_store.a \
    build/stores/libmodelfs_common.a -lsqlite3 -lpthread -o "$FILL" || die "compile fill_models"
fi
PT=$BUILD_BENCH/passthrough_ll
if [[ ! -x "$PT" ]]; then
  log "compiling libfuse's passthrough_ll ..."
  ex=/usr/share/doc/libfuse3-dev/examples
  tmpsrc=$(mktemp -d)
  for f in passthrough_ll.c passthrough_helpers.h; do   # shipped plain or gzipped
    if [[ -f $ex/$f ]]; then cp "$ex/$f" "$tmpsrc/"
    elif [[ -f $ex/$f.gz ]]; then gunzip -c "$ex/$f.gz" >"$tmpsrc/$f"
    else die "no $f under $ex (apt-get install libfuse3-dev)"; fi
  done
  # shellcheck disable=SC2046
  gcc -O2 -Wall "$tmpsrc/passthrough_ll.c" $(pkg-config fuse3 --cflags --libs) -o "$PT" \
    || die "compile passthrough_ll"
  rm -rf "$tmpsrc"
fi

# ---------------------------------------------------------------- set-up
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/modelfs-bench.XXXXXX")
DATA=$WORK/data; MNT_M=$WORK/mnt-modelfs; MNT_P=$WORK/mnt-passthrough
mkdir -p "$DATA" "$MNT_M" "$MNT_P" "$WORK/native/io"
log "work folder $WORK; modelfs build type $BUILD_TYPE; $(nproc) cores; kernel $(uname -r)"
log "size ${SIZE_MB} MiB, entries $ENTRIES (+ $SMALL), reps $REPS"

log "filling the store: model with $ENTRIES layers of $LAYER_BYTES bytes (+ the same files natively) ..."
t0=$EPOCHREALTIME
BIG_ID=$("$FILL" "$DATA" "$ENTRIES" "$LAYER_BYTES" "$WORK/native/list") || die "fill_models $ENTRIES"
SMALL_ID=""
if (( SMALL > 0 )); then
  SMALL_ID=$("$FILL" "$DATA" "$SMALL" "$LAYER_BYTES" "$WORK/native/small") || die "fill_models $SMALL"
fi
log "  filled in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}') s (models $BIG_ID ${SMALL_ID})"

log "generating a ${SIZE_MB} MiB random source file ..."
SRC=$WORK/src.bin
head -c "$((SIZE_MB * 1048576))" /dev/urandom >"$SRC"
cp "$SRC" "$WORK/native/io/big"
cat "$SRC" "$WORK/native/io/big" >/dev/null   # page-cache both
sync

MOUNTS+=("$MNT_M" "$MNT_P")
pt_mount
mfs_mount
MFS_MOUNT_FIRST=$MFS_MOUNT_S
log "mounted: modelfs pid $MFS_PID (mount took $MFS_MOUNT_S s), passthrough_ll pid $PT_PID" \
    "(options: source=...${PT_OPTS:+,$PT_OPTS}; otherwise its defaults)"

# ---------------------------------------------------------------- sequential write
# dd bs=1M from a page-cached random file, timed up to and including close; no fsync anywhere.
# A sync (untimed) before each run keeps earlier dirty pages from being flushed during it.
# modelfs: each run writes layer 0 of a fresh model (an identical rewrite of a layer would add nothing).
log "sequential write, ${SIZE_MB} MiB, dd bs=1M (incl. close) ..."
w_nat=(); w_pt=(); w_mfs=()
READ_MODEL=""
for i in $(seq "$REPS"); do
  sync; prefault; w_nat+=("$(timeit dd if="$SRC" of="$WORK/native/io/w$i" bs=1M status=none)")
  rm -f "$WORK/native/io/w$i"
  sync; prefault; w_pt+=("$(timeit dd if="$SRC" of="$MNT_P/io/w$i" bs=1M status=none)")
  rm -f "$MNT_P/io/w$i"
  id=$((900000 + i))
  mkdir "$MNT_M/models/$id" || die "mkdir models/$id"
  sync; prefault; w_mfs+=("$(timeit dd if="$SRC" of="$MNT_M/models/$id/layers/0" bs=1M status=none)")
  if [[ -z "$READ_MODEL" ]]; then READ_MODEL=$id; else rm -r "$MNT_M/models/$id" || die "rm -r models/$id"; fi
done
sz=$(stat -c %s "$MNT_M/models/$READ_MODEL/layers/0")
[[ "$sz" == $((SIZE_MB * 1048576)) ]] || die "modelfs layer size after write: $sz"
to_gbps() { local out=(); for s in "$@"; do out+=("$(gbps "$s")"); done; echo "${out[@]}"; }
# shellcheck disable=SC2046
record write_native GB/s $(to_gbps "${w_nat[@]}")
# shellcheck disable=SC2046
record write_pt GB/s $(to_gbps "${w_pt[@]}")
# shellcheck disable=SC2046
record write_mfs GB/s $(to_gbps "${w_mfs[@]}")
sync

# ---------------------------------------------------------------- sequential read
# native: a page-cached local file. FUSE "first read": the first read through a fresh mount, with the
# backing file in the page cache; "repeated": the same file read again through the same mount.
# How a file got into the page cache matters a lot here: with large folios, a file just written with
# 1 MiB writes reads back at ~18 GB/s on this machine, one written by `head` at ~8, one cached by
# reading it at ~7-10. So every backing file (the native file, which passthrough_ll also serves, and
# modelfs's blob of the layer) is evicted and read back once: cached the way a read leaves it.
recache() {   # recache FILE: drop FILE's pages (fadvise DONTNEED), then read it once
  dd if="$1" iflag=nocache count=0 status=none || die "evict $1"
  cat "$1" >/dev/null
  if command -v fincore >/dev/null; then log "  cached: $(fincore -n -o RES,FILE "$1")"; fi
}
log "sequential read, ${SIZE_MB} MiB, dd bs=1M ..."
MFS_FILE=$MNT_M/models/$READ_MODEL/layers/0
r_nat=(); r_pt1=(); r_pt2=(); r_mfs1=(); r_mfs2=()
sync
recache "$WORK/native/io/big"
n_blobs=0
while IFS= read -r -d '' b; do recache "$b"; n_blobs=$((n_blobs + 1)); done \
  < <(find "$DATA/models/blobs" -type f -size "$((SIZE_MB * 1024))k" -print0)
(( n_blobs >= 1 )) || die "no ${SIZE_MB} MiB blob under $DATA/models/blobs"
for i in $(seq "$REPS"); do
  r_nat+=("$(timeit dd if="$WORK/native/io/big" of=/dev/null bs=1M status=none)")
  pt_remount
  prefault
  r_pt1+=("$(timeit dd if="$MNT_P/io/big" of=/dev/null bs=1M status=none)")
  r_pt2+=("$(timeit dd if="$MNT_P/io/big" of=/dev/null bs=1M status=none)")
  mfs_remount write+read
  prefault
  r_mfs1+=("$(timeit dd if="$MFS_FILE" of=/dev/null bs=1M status=none)")
  r_mfs2+=("$(timeit dd if="$MFS_FILE" of=/dev/null bs=1M status=none)")
done
cmp "$SRC" "$MFS_FILE" || die "modelfs layer content differs from what was written"
# shellcheck disable=SC2046
record read_native GB/s $(to_gbps "${r_nat[@]}")
# shellcheck disable=SC2046
record read_first_pt GB/s $(to_gbps "${r_pt1[@]}")
# shellcheck disable=SC2046
record read_rep_pt GB/s $(to_gbps "${r_pt2[@]}")
# shellcheck disable=SC2046
record read_first_mfs GB/s $(to_gbps "${r_mfs1[@]}")
# shellcheck disable=SC2046
record read_rep_mfs GB/s $(to_gbps "${r_mfs2[@]}")

# ---------------------------------------------------------------- listings
# ls -l DIR >/dev/null and find DIR -printf (a stat walk). native: warm dcache (one untimed run first).
# FUSE "cold": the first listing after a fresh mount; "warm": the next one on the same mount.
# find: one untimed run (which also checks the entry count), then REPS timed runs.
FIND_FMT='%s %T@ %m %p\n'
count_check() {   # count_check DIR N
  local n; n=$(find "$1" -mindepth 1 -printf "$FIND_FMT" | wc -l)
  [[ "$n" == "$2" ]] || die "$1 lists $n entries, expected $2"
}
PT_NOFILE=$(ulimit -Hn)
list_bench() {   # list_bench TAG N NATIVE_DIR MODEL_ID
  local tag=$1 n=$2 ndir=$3 mid=$4
  local mdir=$MNT_M/models/$mid/layers pdir=$MNT_P/${ndir##*/}
  local run_pt=1
  if [[ "$PT_NOFILE" != unlimited ]] && (( n + 1000 > PT_NOFILE )); then
    run_pt=0
    log "  passthrough_ll skipped for $n entries: it holds one fd per inode and the fd hard limit is" \
        "$PT_NOFILE (no CAP_SYS_RESOURCE to raise it)"
    PT_SKIP_REASON="n/a (fd limit $PT_NOFILE)"
  fi
  local a=() b=() c=() d=() e=() f=() g=() h=() k=()
  count_check "$ndir" "$n"; ls -l "$ndir" >/dev/null
  for i in $(seq "$REPS"); do a+=("$(timeit ls -l "$ndir")"); done
  for i in $(seq "$REPS"); do b+=("$(timeit find "$ndir" -printf "$FIND_FMT")"); done
  for i in $(seq "$REPS"); do
    mfs_remount list
    c+=("$(timeit ls -l "$mdir")")
    d+=("$(timeit ls -l "$mdir")")
  done
  count_check "$mdir" "$n"
  for i in $(seq "$REPS"); do e+=("$(timeit find "$mdir" -printf "$FIND_FMT")"); done
  record "ls_native_$tag" s "${a[@]}"
  record "find_native_$tag" s "${b[@]}"
  record "ls_cold_mfs_$tag" s "${c[@]}"
  record "ls_warm_mfs_$tag" s "${d[@]}"
  record "find_mfs_$tag" s "${e[@]}"
  if (( run_pt )); then
    for i in $(seq "$REPS"); do
      pt_remount
      f+=("$(timeit ls -l "$pdir")")
      g+=("$(timeit ls -l "$pdir")")
    done
    count_check "$pdir" "$n"
    for i in $(seq "$REPS"); do h+=("$(timeit find "$pdir" -printf "$FIND_FMT")"); done
    record "ls_cold_pt_$tag" s "${f[@]}"
    record "ls_warm_pt_$tag" s "${g[@]}"
    record "find_pt_$tag" s "${h[@]}"
  fi
}
PT_SKIP_REASON=""
log "listing a folder of $ENTRIES entries ..."
list_bench big "$ENTRIES" "$WORK/native/list" "$BIG_ID"
if (( SMALL > 0 )); then
  log "listing a folder of $SMALL entries ..."
  list_bench small "$SMALL" "$WORK/native/small" "$SMALL_ID"
  # passthrough_ll's default is no_xattr: it answers ENOSYS once and the kernel stops asking, while
  # modelfs has xattrs, so each `ls -l` costs it two GETXATTR round trips per entry (security.selinux,
  # system.posix_acl_access). These rows give the reference with -o xattr: the same round trips.
  log "listing $SMALL entries through passthrough_ll -o xattr ..."
  PT_EXTRA=xattr; x=(); y=()
  for i in $(seq "$REPS"); do
    pt_remount
    x+=("$(timeit ls -l "$MNT_P/small")")
    y+=("$(timeit ls -l "$MNT_P/small")")
  done
  PT_EXTRA=""; pt_remount
  record ls_cold_ptx_small s "${x[@]}"
  record ls_warm_ptx_small s "${y[@]}"
fi

# ---------------------------------------------------------------- memory, unmount
mfs_umount list
pt_umount
MOUNTS=()

# ---------------------------------------------------------------- summary
# Ratios are speed ratios: > 1 means faster than the reference. For timed listings: ref_s / modelfs_s.
ratio() {   # ratio KIND MFS REF   (KIND: rate | time); prints "-" when REF is missing
  local kind=$1 m=$2 r=$3
  [[ -z "$m" || -z "$r" ]] && { echo "-"; return; }
  if [[ $kind == rate ]]; then awk -v m="$m" -v r="$r" 'BEGIN{printf "%.2f", m/r}'
  else awk -v m="$m" -v r="$r" 'BEGIN{printf "%.2f", r/m}'; fi
}
ge() { awk -v a="$1" -v b="$2" 'BEGIN{exit !(a+0 >= b+0)}'; }
ALL_MET=1
row() {   # row LABEL KIND NATIVE PT MFS TARGET_NATIVE TARGET_PT_FLAG PT_MISSING_TEXT
  local label=$1 kind=$2 nat=$3 pt=$4 mfs=$5 tn=$6 tp=$7 ptmiss=${8:-n/a}
  local rn rp target met
  rn=$(ratio "$kind" "$mfs" "$nat"); rp=$(ratio "$kind" "$mfs" "$pt")
  target=""; met=""
  if [[ -n "$tn" ]]; then
    target=">=${tn}x native"
    if ge "$rn" "$tn"; then met=met; else met="NOT MET"; fi
  fi
  if [[ "$tp" == 1 ]]; then
    target+=", >= passthrough_ll"
    if [[ "$rp" == "-" ]]; then met+=" (pt n/a)"
    elif ! ge "$rp" 1; then met="NOT MET"; fi
  fi
  [[ -z "$target" ]] && { target="(info)"; met="-"; }
  [[ "$met" == "NOT MET" ]] && ALL_MET=0
  printf '| %-28s | %9s | %20s | %9s | %8s | %8s | %-32s | %-8s |\n' "$label" \
    "$( [[ -n $nat ]] && fmt "$nat" || echo -)" "$( [[ -n $pt ]] && fmt "$pt" || echo "$ptmiss")" \
    "$(fmt "$mfs")" "$rn" "$rp" "$target" "$met"
}
echo
echo "== modelfs benchmark summary (median of $REPS; I/O in GB/s = 1e9 B/s, listings in seconds;" \
     "ratios are speed ratios, >1 = faster) =="
echo "   file ${SIZE_MB} MiB; folders of $ENTRIES (big) and $SMALL (small) entries of $LAYER_BYTES B;" \
     "passthrough_ll with its defaults${PT_OPTS:+ plus -o $PT_OPTS} (cache=auto: timeout 1 s, no keep_cache;" \
     "no writeback; xattr off; multithreaded)"
printf '| %-28s | %9s | %20s | %9s | %8s | %8s | %-32s | %-8s |\n' measure native passthrough_ll modelfs \
  "m/native" "m/pt" "SPEC target" "met?"
printf '|%s|\n' "------------------------------|-----------|----------------------|-----------|----------|----------|----------------------------------|----------"
row "seq read first (GB/s)"    rate "${R[read_native]}" "${R[read_first_pt]}" "${R[read_first_mfs]}" 0.3 1
row "seq read repeated (GB/s)" rate "${R[read_native]}" "${R[read_rep_pt]}"   "${R[read_rep_mfs]}"   0.9 0
row "seq write (GB/s)"         rate "${R[write_native]}" "${R[write_pt]}"     "${R[write_mfs]}"      0.4 1
row "ls -l $ENTRIES cold (s)"  time "${R[ls_native_big]}" "${R[ls_cold_pt_big]:-}" "${R[ls_cold_mfs_big]}" 0.2 0 "$PT_SKIP_REASON"
row "ls -l $ENTRIES warm (s)"  time "${R[ls_native_big]}" "${R[ls_warm_pt_big]:-}" "${R[ls_warm_mfs_big]}" 0.2 0 "$PT_SKIP_REASON"
row "find $ENTRIES warm (s)"   time "${R[find_native_big]}" "${R[find_pt_big]:-}" "${R[find_mfs_big]}" 0.9 0 "$PT_SKIP_REASON"
if (( SMALL > 0 )); then
  row "ls -l $SMALL cold (s)"  time "${R[ls_native_small]}" "${R[ls_cold_pt_small]:-}" "${R[ls_cold_mfs_small]}" "" 0
  row "ls -l $SMALL warm (s)"  time "${R[ls_native_small]}" "${R[ls_warm_pt_small]:-}" "${R[ls_warm_mfs_small]}" "" 0
  row "find $SMALL warm (s)"   time "${R[find_native_small]}" "${R[find_pt_small]:-}" "${R[find_mfs_small]}" "" 0
  row "ls -l $SMALL cold, pt xattr" time "${R[ls_native_small]}" "${R[ls_cold_ptx_small]}" "${R[ls_cold_mfs_small]}" "" 0
  row "ls -l $SMALL warm, pt xattr" time "${R[ls_native_small]}" "${R[ls_warm_ptx_small]}" "${R[ls_warm_mfs_small]}" "" 0
fi
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }
# The SPEC bound is for streaming; the daemons of the write/read phase streamed SIZE_MB in and out.
STREAM_KB=${HWM_PHASE[write+read]:-0}
if (( STREAM_KB < 256 * 1024 )); then mem_met=met; else mem_met="NOT MET"; ALL_MET=0; fi
printf '| %-28s | %9s | %20s | %9s | %8s | %8s | %-32s | %-8s |\n' "daemon VmHWM stream (MiB)" - - \
  "$(mib "$STREAM_KB")" - - "<256 MiB (SPEC: 4 GiB stream)" "$mem_met"
printf '| %-28s | %9s | %20s | %9s | %8s | %8s | %-32s | %-8s |\n' "daemon VmHWM listing (MiB)" - - \
  "$(mib "${HWM_PHASE[list]:-0}")" - - "(info)" -
echo
echo "modelfs daemon peak RSS (VmHWM): max $(mib "$HWM_MAX") MiB (phase '$HWM_WHERE'); streaming" \
     "${SIZE_MB} MiB in and out: $(mib "$STREAM_KB") MiB; listings: $(mib "${HWM_PHASE[list]:-0}") MiB."
echo "modelfs mount time with the filled store: first $MFS_MOUNT_FIRST s, last $MFS_MOUNT_S s."
if (( ALL_MET )); then echo "All SPEC targets met."; else echo "Some SPEC targets NOT MET (see table)."; fi
