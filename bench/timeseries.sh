#!/usr/bin/env bash
# modelfs time-series benchmark (SPEC §3.3, §4): /timeseries of the mount vs native local files vs
# libfuse's passthrough_ll, measured side by side in one run: one big series (sequential write, first
# and repeated read), many small series (write and read rates, cold and warm), `ls -l` and a warm
# `find` stat walk of the folder of small series, and the daemon's peak memory. Prints every sample,
# the medians and a summary table with ratios and the SPEC targets.
#
#   bash bench/timeseries.sh
#
# Knobs (environment):
#   BENCH_SIZE_MB=1024        size of the big series (sequential write/read), MiB
#   BENCH_FILES=100000        number of small series (2×64 float64 = 1 KiB each)
#   BENCH_REPS=3              repetitions of each timed measurement (the median is reported)
#   BENCH_DIR=/tmp            where the temporary work folder is made (needs about
#                             5×SIZE + (3×REPS+1)×FILES×4 KiB free; checked first)
#   BENCH_BUILD_DIR=<repo>/build-bench   where smallfiles and passthrough_ll are compiled
#   BENCH_PT_OPTS=            extra -o options for passthrough_ll (default: none = its defaults)
#   BENCH_MODELFS_OPTS=       extra -o options for modelfs
#   BENCH_KEEP=0              1: keep the work folder at the end
#   BENCH_PREFAULT=1          0: skip the page-cache prefault before each timed step that fills new
#                             page-cache pages (see bench/run.sh)
#
# Exit status: non-zero when something fails (build, mount, a command, wrong data or entry count); a
# missed target is only reported as "NOT MET".
set -euo pipefail

T_START=$EPOCHREALTIME
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZE_MB=${BENCH_SIZE_MB:-1024}
FILES=${BENCH_FILES:-100000}
REPS=${BENCH_REPS:-3}
BUILD_BENCH=${BENCH_BUILD_DIR:-$ROOT/build-bench}
PT_OPTS=${BENCH_PT_OPTS:-}
MFS_OPTS=${BENCH_MODELFS_OPTS:-}
KEEP=${BENCH_KEEP:-0}
PREFAULT=${BENCH_PREFAULT:-1}
SERIES_BYTES=1024   # one small series: 64 times + 64 values (bench/smallfiles.cc)

BENCH_LOGS=(passthrough_ll.log data/modelfs.log)   # + data-small<i>/modelfs.log as they are made
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
gbps() { awk -v s="$1" -v mb="$SIZE_MB" 'BEGIN{printf "%.3f", mb*1048576/1e9/s}'; }
fps() { awk -v s="$1" -v n="$FILES" 'BEGIN{printf "%.1f", n/s}'; }
fmt() { awk -v x="$1" 'BEGIN{printf "%.3f", x}'; }
num() { awk -v x="$1" 'BEGIN{ if (x >= 100) printf "%.0f", x; else printf "%.3f", x }'; }   # files/s whole
to() { local f=$1 out=(); shift; for s in "$@"; do out+=("$("$f" "$s")"); done; echo "${out[@]}"; }

declare -A R      # results: key -> median value (GB/s, files/s, or seconds for listings)
record() {        # record KEY UNIT samples...  (prints samples and median)
  local key=$1 unit=$2; shift 2
  local m; m=$(median "$@")
  R[$key]=$m
  local shown=""
  for s in "$@"; do shown+="$(num "$s") "; done
  log "  $key: samples [ ${shown}] $unit -> median $(num "$m") $unit"
}

# modelfs mount / unmount of one store at a time (the big series' store DATA on MNT_M, the small
# series' store DATA_S on MNT_S). The daemon's peak RSS (VmHWM) is read before every unmount, per phase.
MFS_PID=""; MFS_DATA=""; MFS_MNT=""
declare -A HWM_PHASE   # phase -> max VmHWM (kB) of the daemons that served it
mfs_mount() {   # mfs_mount DATA MNT
  local t0=$EPOCHREALTIME
  "$MFS" mount --data "$1" "$2" ${MFS_OPTS:+-o "$MFS_OPTS"} || die "modelfs mount $2"
  MFS_PID=$(cat "$1/daemon.pid")
  PIDS+=("$MFS_PID")
  MFS_DATA=$1; MFS_MNT=$2
  MFS_MOUNT_S=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.3f", b-a}')
}
mfs_umount() {   # mfs_umount PHASE
  local kb
  kb=$(awk '/^VmHWM:/{print $2}' "/proc/$MFS_PID/status" 2>/dev/null || echo 0)
  if (( kb > ${HWM_PHASE[$1]:-0} )); then HWM_PHASE[$1]=$kb; fi
  "$MFS" umount "$MFS_MNT" || die "modelfs umount $MFS_MNT"
  MFS_PID=""
}
mfs_remount() { local d=$MFS_DATA m=$MFS_MNT; mfs_umount "$1"; mfs_mount "$d" "$m"; }

PT_PID=""
pt_mount() {
  local o="source=$WORK/native${PT_OPTS:+,$PT_OPTS}"
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

# Page-cache preparation, as in bench/run.sh. prefault MiB: on this VM, filling the page cache with
# pages the guest has not used recently is ~8x slower than reusing pages just freed, so every timed
# step that fills new page-cache pages (writes, FUSE first reads, small-file runs: one 4 KiB page per
# file) starts right after an untimed write+delete of about that many MiB (+256).
prefault() {
  [[ "$PREFAULT" == 1 ]] || return 0
  dd if=/dev/zero of="$WORK/prefault" bs=1M count=$(( $1 + 256 )) status=none || die "prefault"
  rm -f "$WORK/prefault"
}
SMALL_PF_MB=$(( FILES * 4 / 1024 ))   # the page-cache pages of FILES small files
# recache FILE: drop FILE's pages (fadvise DONTNEED), then read it once, so that every backing file is
# cached the way a read leaves it (how a file got into the page cache changes a native read by 2x).
recache() {
  dd if="$1" iflag=nocache count=0 status=none || die "evict $1"
  cat "$1" >/dev/null
  if command -v fincore >/dev/null; then log "  cached: $(fincore -n -o RES,FILE "$1")"; fi
}
FIND_FMT='%s %T@ %m %p\n'
count_check() {   # count_check DIR N: DIR holds N entries (a find stat walk, which also warms it)
  local n; n=$(find "$1" -mindepth 1 -printf "$FIND_FMT" | wc -l)
  [[ "$n" == "$2" ]] || die "$1 lists $n entries, expected $2"
}
small() { "$SMALLF" "$@"; }   # bench/smallfiles: write|read DIR N (verifies every byte it reads)

# ---------------------------------------------------------------- build
log "building modelfs (build/) ..."
cd "$ROOT"
if [[ ! -f build/CMakeCache.txt ]]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null || die "cmake configure"
fi
cmake --build build -j2 --target modelfs >/dev/null || die "cmake --build build"
BUILD_TYPE=$(awk -F= '/^CMAKE_BUILD_TYPE:/{print $2}' build/CMakeCache.txt)
mkdir -p "$BUILD_BENCH"
SMALLF=$BUILD_BENCH/smallfiles
if [[ ! -x "$SMALLF" || "$SMALLF" -ot bench/smallfiles.cc ]]; then
  log "compiling bench/smallfiles.cc ..."
  g++ -O2 -Wall -std=c++20 bench/smallfiles.cc -o "$SMALLF" || die "compile smallfiles"
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
BASE=${BENCH_DIR:-/tmp}
# Peak use: source + native copy + modelfs's big series + one written copy + the prefault file, and
# the small series (~4 KiB each; every run's native folder and modelfs store are kept, see below).
NEED=$(( (5 * SIZE_MB + 256) * 1048576 + FILES * 4096 * (3 * REPS + 1) ))
AVAIL=$(( $(df -Pk "$BASE" | awk 'NR==2{print $4}') * 1024 ))
(( AVAIL > NEED )) \
  || die "$BASE has $((AVAIL >> 20)) MiB free, the run needs about $((NEED >> 20)) MiB (set BENCH_DIR)"
WORK=$(mktemp -d "$BASE/modelfs-tsbench.XXXXXX")
DATA=$WORK/data; DATA_S=""   # DATA_S: the small series' store of the current run (data-small<i>)
MNT_M=$WORK/mnt-modelfs; MNT_S=$WORK/mnt-modelfs-small; MNT_P=$WORK/mnt-passthrough
mkdir -p "$DATA" "$MNT_M" "$MNT_S" "$MNT_P" "$WORK/native/io"
MOUNTS+=("$MNT_M" "$MNT_S" "$MNT_P")
log "work folder $WORK; modelfs build type $BUILD_TYPE; $(nproc) cores; kernel $(uname -r)"
log "big series ${SIZE_MB} MiB, $FILES small series of $SERIES_BYTES B, reps $REPS"

log "generating a ${SIZE_MB} MiB random source file ..."
SRC=$WORK/src.bin
head -c "$((SIZE_MB * 1048576))" /dev/urandom >"$SRC"
cp "$SRC" "$WORK/native/io/big"
cat "$SRC" "$WORK/native/io/big" >/dev/null   # page-cache both
sync

pt_mount
mfs_mount "$DATA" "$MNT_M"
log "mounted: modelfs pid $MFS_PID (mount took $MFS_MOUNT_S s), passthrough_ll pid $PT_PID" \
    "(options: source=...${PT_OPTS:+,$PT_OPTS}; otherwise its defaults)"

# ---------------------------------------------------------------- 1a. big series: sequential write
# dd bs=1M from a page-cached random file, timed up to and including close (modelfs commits the series
# at close); no fsync. A sync (untimed) before each run keeps earlier dirty pages from being flushed
# during it. modelfs: each run writes timeseries/big after removing the previous one (untimed), so every
# run stores new bytes (rewriting identical bytes would only compare them).
BIG=$MNT_M/timeseries/big
log "big series: sequential write, ${SIZE_MB} MiB, dd bs=1M (incl. close) ..."
w_nat=(); w_pt=(); w_mfs=()
for i in $(seq "$REPS"); do
  sync; prefault "$SIZE_MB"; w_nat+=("$(timeit dd if="$SRC" of="$WORK/native/io/w$i" bs=1M status=none)")
  rm -f "$WORK/native/io/w$i"
  sync; prefault "$SIZE_MB"; w_pt+=("$(timeit dd if="$SRC" of="$MNT_P/io/w$i" bs=1M status=none)")
  rm -f "$MNT_P/io/w$i"
  if [[ -e "$BIG" ]]; then rm "$BIG" || die "rm timeseries/big"; fi
  sync; prefault "$SIZE_MB"; w_mfs+=("$(timeit dd if="$SRC" of="$BIG" bs=1M status=none)")
done
sz=$(stat -c %s "$BIG")
[[ "$sz" == $((SIZE_MB * 1048576)) ]] || die "timeseries/big size after write: $sz"
n_attr=$(getfattr --only-values -n user.modelfs.size "$BIG" 2>/dev/null || echo "?")
log "  timeseries/big: $sz B, user.modelfs.size = $n_attr (N)"
# shellcheck disable=SC2046
record write_native GB/s $(to gbps "${w_nat[@]}")
# shellcheck disable=SC2046
record write_pt GB/s $(to gbps "${w_pt[@]}")
# shellcheck disable=SC2046
record write_mfs GB/s $(to gbps "${w_mfs[@]}")
sync

# ---------------------------------------------------------------- 1b. big series: sequential read
# native: the page-cached local file. FUSE "first": the first read through a fresh mount, with the
# backing file in the page cache; "repeated": the same file again on that mount. Every backing file (the
# native file, which passthrough_ll also serves, and modelfs's data file of the series) is evicted and
# read back once first (bench/run.sh explains why).
log "big series: sequential read, ${SIZE_MB} MiB, dd bs=1M ..."
r_nat=(); r_pt1=(); r_pt2=(); r_mfs1=(); r_mfs2=()
recache "$WORK/native/io/big"
n_blobs=0
while IFS= read -r -d '' b; do recache "$b"; n_blobs=$((n_blobs + 1)); done \
  < <(find "$DATA/timeseries/data" -type f -size "$((SIZE_MB * 1024))k" -print0)
(( n_blobs == 1 )) || die "$n_blobs data files of ${SIZE_MB} MiB under $DATA/timeseries/data, expected 1"
for i in $(seq "$REPS"); do
  r_nat+=("$(timeit dd if="$WORK/native/io/big" of=/dev/null bs=1M status=none)")
  pt_remount
  prefault "$SIZE_MB"
  r_pt1+=("$(timeit dd if="$MNT_P/io/big" of=/dev/null bs=1M status=none)")
  r_pt2+=("$(timeit dd if="$MNT_P/io/big" of=/dev/null bs=1M status=none)")
  mfs_remount stream
  prefault "$SIZE_MB"
  r_mfs1+=("$(timeit dd if="$BIG" of=/dev/null bs=1M status=none)")
  r_mfs2+=("$(timeit dd if="$BIG" of=/dev/null bs=1M status=none)")
done
cmp "$SRC" "$BIG" || die "timeseries/big differs from what was written"
log "  cmp: timeseries/big is byte-identical to the source"
# shellcheck disable=SC2046
record read_native GB/s $(to gbps "${r_nat[@]}")
# shellcheck disable=SC2046
record read_first_pt GB/s $(to gbps "${r_pt1[@]}")
# shellcheck disable=SC2046
record read_rep_pt GB/s $(to gbps "${r_pt2[@]}")
# shellcheck disable=SC2046
record read_first_mfs GB/s $(to gbps "${r_mfs1[@]}")
# shellcheck disable=SC2046
record read_rep_mfs GB/s $(to gbps "${r_mfs2[@]}")
mfs_umount stream
rm -f "$WORK/native/io/big"   # the big files are done with; the small phase needs the page cache
rm -rf "$DATA"
pt_remount
sync

# ---------------------------------------------------------------- 2. small series: write and read
# bench/smallfiles writes FILES series (create, write 1 KiB, close each, in one folder) or reads them
# (open, read to EOF, close each, every byte compared with what was written). Write: each run into a
# fresh empty folder (native: a new folder; modelfs: a new empty store, mounted before the timer;
# passthrough_ll: a new folder of its source, on a fresh mount). The last run's folder and store serve
# the reads and listings. Read: native warm (one untimed run first); FUSE "cold": the first run through
# a fresh mount (backing files in the page cache); "warm": the next run on that mount.
# Nothing is deleted during this phase: this machine's ext4 has no journal, and then every inode
# allocation skips the inodes freed in the last 5 s (305 s while their inode-table block is dirty),
# reading each one (ext4's recently_deleted(): over 80% of a native create's time after an `rm -rf` of
# 100,000 files; creates up to ~25x slower). Every run's files stay until the end, so no contender pays
# for another's deletes (other users' deletes on this shared disk still show as noise).
PT_NOFILE=$(ulimit -Hn)
RUN_PT=1; PT_SKIP=""
if [[ "$PT_NOFILE" != unlimited ]] && (( FILES + 1000 > PT_NOFILE )); then
  RUN_PT=0; PT_SKIP="n/a (fd limit $PT_NOFILE)"
  log "passthrough_ll skipped for $FILES small series: it holds one fd per inode the kernel knows and" \
      "the fd hard limit is $PT_NOFILE (no CAP_SYS_RESOURCE to raise it)"
fi
log "small series: write $FILES files of $SERIES_BYTES B (create, write, close) ..."
sw_nat=(); sw_pt=(); sw_mfs=()
for i in $(seq "$REPS"); do
  mkdir "$WORK/native/sw$i"
  sync; prefault "$SMALL_PF_MB"
  sw_nat+=("$(timeit small write "$WORK/native/sw$i" "$FILES")")
  if (( RUN_PT )); then
    mkdir "$WORK/native/pw$i"
    pt_remount
    sync; prefault "$SMALL_PF_MB"
    sw_pt+=("$(timeit small write "$MNT_P/pw$i" "$FILES")")
    pt_remount   # drops the fds it holds for the new files
  fi
  if (( i > 1 )); then mfs_umount small; fi
  DATA_S=$WORK/data-small$i
  BENCH_LOGS+=("data-small$i/modelfs.log")
  mkdir "$DATA_S"
  mfs_mount "$DATA_S" "$MNT_S"
  sync; prefault "$SMALL_PF_MB"
  sw_mfs+=("$(timeit small write "$MNT_S/timeseries" "$FILES")")
done
SDIR_M=$MNT_S/timeseries
SDIR_N=$WORK/native/sw$REPS
SDIR_P=$MNT_P/sw$REPS
count_check "$SDIR_N" "$FILES"
count_check "$SDIR_M" "$FILES"
n_attr=$(getfattr --only-values -n user.modelfs.count "$SDIR_M" 2>/dev/null || echo "?")
log "  modelfs: user.modelfs.count of timeseries/ = $n_attr"
to_fps() { to fps "$@"; }
# shellcheck disable=SC2046
record swrite_native files/s $(to_fps "${sw_nat[@]}")
if (( RUN_PT )); then
  # shellcheck disable=SC2046
  record swrite_pt files/s $(to_fps "${sw_pt[@]}")
fi
# shellcheck disable=SC2046
record swrite_mfs files/s $(to_fps "${sw_mfs[@]}")
sync

log "small series: read $FILES files (open, read, close; every byte checked) ..."
sr_nat=(); sr_pt1=(); sr_pt2=(); sr_mfs1=(); sr_mfs2=()
small read "$SDIR_N" "$FILES" >/dev/null || die "smallfiles read $SDIR_N"
for i in $(seq "$REPS"); do sr_nat+=("$(timeit small read "$SDIR_N" "$FILES")"); done
for i in $(seq "$REPS"); do
  mfs_remount small
  prefault "$SMALL_PF_MB"
  sr_mfs1+=("$(timeit small read "$SDIR_M" "$FILES")")
  sr_mfs2+=("$(timeit small read "$SDIR_M" "$FILES")")
  if (( RUN_PT )); then
    pt_remount
    prefault "$SMALL_PF_MB"
    sr_pt1+=("$(timeit small read "$SDIR_P" "$FILES")")
    sr_pt2+=("$(timeit small read "$SDIR_P" "$FILES")")
  fi
done
# shellcheck disable=SC2046
record sread_native files/s $(to_fps "${sr_nat[@]}")
if (( RUN_PT )); then
  # shellcheck disable=SC2046
  record sread_cold_pt files/s $(to_fps "${sr_pt1[@]}")
  # shellcheck disable=SC2046
  record sread_warm_pt files/s $(to_fps "${sr_pt2[@]}")
fi
# shellcheck disable=SC2046
record sread_cold_mfs files/s $(to_fps "${sr_mfs1[@]}")
# shellcheck disable=SC2046
record sread_warm_mfs files/s $(to_fps "${sr_mfs2[@]}")

# ---------------------------------------------------------------- 3. listings of the small series
# ls -l DIR >/dev/null and find DIR -printf (a stat walk) of the FILES series. native: warm (one
# untimed run first). FUSE "cold": the first listing after a fresh mount; "warm": the next one on that
# mount. find: after an untimed run (count_check), REPS timed runs on the same mount.
log "listing the $FILES small series: ls -l and find ..."
l_nat=(); f_nat=(); l_mfs1=(); l_mfs2=(); f_mfs=(); l_pt1=(); l_pt2=(); f_pt=()
count_check "$SDIR_N" "$FILES"; ls -l "$SDIR_N" >/dev/null
for i in $(seq "$REPS"); do l_nat+=("$(timeit ls -l "$SDIR_N")"); done
for i in $(seq "$REPS"); do f_nat+=("$(timeit find "$SDIR_N" -printf "$FIND_FMT")"); done
for i in $(seq "$REPS"); do
  mfs_remount small
  l_mfs1+=("$(timeit ls -l "$SDIR_M")")
  l_mfs2+=("$(timeit ls -l "$SDIR_M")")
done
count_check "$SDIR_M" "$FILES"
for i in $(seq "$REPS"); do f_mfs+=("$(timeit find "$SDIR_M" -printf "$FIND_FMT")"); done
if (( RUN_PT )); then
  for i in $(seq "$REPS"); do
    pt_remount
    l_pt1+=("$(timeit ls -l "$SDIR_P")")
    l_pt2+=("$(timeit ls -l "$SDIR_P")")
  done
  count_check "$SDIR_P" "$FILES"
  for i in $(seq "$REPS"); do f_pt+=("$(timeit find "$SDIR_P" -printf "$FIND_FMT")"); done
fi
record ls_native s "${l_nat[@]}"
record find_native s "${f_nat[@]}"
record ls_cold_mfs s "${l_mfs1[@]}"
record ls_warm_mfs s "${l_mfs2[@]}"
record find_mfs s "${f_mfs[@]}"
if (( RUN_PT )); then
  record ls_cold_pt s "${l_pt1[@]}"
  record ls_warm_pt s "${l_pt2[@]}"
  record find_pt s "${f_pt[@]}"
fi

# ---------------------------------------------------------------- memory, unmount
mfs_umount small
pt_umount
MOUNTS=()

# ---------------------------------------------------------------- summary
# Ratios are speed ratios: > 1 means faster than the reference. Rates: modelfs/ref; times: ref/modelfs.
ratio() {   # ratio KIND MFS REF   (KIND: rate | time); prints "-" when REF is missing
  local kind=$1 m=$2 r=$3
  [[ -z "$m" || -z "$r" ]] && { echo "-"; return; }
  if [[ $kind == rate ]]; then awk -v m="$m" -v r="$r" 'BEGIN{printf "%.2f", m/r}'
  else awk -v m="$m" -v r="$r" 'BEGIN{printf "%.2f", r/m}'; fi
}
ge() { awk -v a="$1" -v b="$2" 'BEGIN{exit !(a+0 >= b+0)}'; }
ALL_MET=1
ROWF='| %-32s | %9s | %20s | %9s | %8s | %8s | %-32s | %-8s |\n'
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
  # shellcheck disable=SC2059
  printf "$ROWF" "$label" "$( [[ -n $nat ]] && num "$nat" || echo -)" \
    "$( [[ -n $pt ]] && num "$pt" || echo "$ptmiss")" "$(num "$mfs")" "$rn" "$rp" "$target" "$met"
}
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }
memrow() {   # memrow LABEL KB TARGET_TEXT
  local met=met
  if (( $2 >= 256 * 1024 )); then met="NOT MET"; ALL_MET=0; fi
  # shellcheck disable=SC2059
  printf "$ROWF" "$1" - - "$(mib "$2")" - - "$3" "$met"
}
echo
echo "== modelfs timeseries benchmark summary (median of $REPS; big series in GB/s = 1e9 B/s, small" \
     "series in files/s, listings in seconds; ratios are speed ratios, >1 = faster) =="
echo "   big series ${SIZE_MB} MiB (timeseries/big); $FILES small series of $SERIES_BYTES B" \
     "(2x64 float64) in one folder; native small-series reads are warm (page cache, dcache);" \
     "passthrough_ll with its defaults${PT_OPTS:+ plus -o $PT_OPTS} (cache=auto: timeout 1 s, no keep_cache;" \
     "no writeback; xattr off; multithreaded)"
# shellcheck disable=SC2059
printf "$ROWF" measure native passthrough_ll modelfs "m/native" "m/pt" "SPEC target" "met?"
printf '|%s|\n' "----------------------------------|-----------|----------------------|-----------|----------|----------|----------------------------------|----------"
row "seq write ${SIZE_MB} MiB (GB/s)"   rate "${R[write_native]}" "${R[write_pt]}"      "${R[write_mfs]}"      0.4 1
row "seq read first (GB/s)"            rate "${R[read_native]}"  "${R[read_first_pt]}" "${R[read_first_mfs]}" 0.3 1
row "seq read repeated (GB/s)"         rate "${R[read_native]}"  "${R[read_rep_pt]}"   "${R[read_rep_mfs]}"   0.9 0
row "small write $FILES (files/s)"     rate "${R[swrite_native]}" "${R[swrite_pt]:-}"  "${R[swrite_mfs]}" "" 0 "$PT_SKIP"
row "small read cold $FILES (files/s)" rate "${R[sread_native]}" "${R[sread_cold_pt]:-}" "${R[sread_cold_mfs]}" "" 0 "$PT_SKIP"
row "small read warm $FILES (files/s)" rate "${R[sread_native]}" "${R[sread_warm_pt]:-}" "${R[sread_warm_mfs]}" "" 0 "$PT_SKIP"
row "ls -l $FILES cold (s)"            time "${R[ls_native]}" "${R[ls_cold_pt]:-}" "${R[ls_cold_mfs]}" 0.2 0 "$PT_SKIP"
row "ls -l $FILES warm (s)"            time "${R[ls_native]}" "${R[ls_warm_pt]:-}" "${R[ls_warm_mfs]}" 0.2 0 "$PT_SKIP"
row "find $FILES warm (s)"             time "${R[find_native]}" "${R[find_pt]:-}" "${R[find_mfs]}" 0.9 0 "$PT_SKIP"
memrow "daemon VmHWM big series (MiB)" "${HWM_PHASE[stream]:-0}" "<256 MiB (SPEC: 4 GiB stream)"
memrow "daemon VmHWM small (MiB)" "${HWM_PHASE[small]:-0}" "<256 MiB"
echo
echo "modelfs daemon peak RSS (VmHWM): streaming ${SIZE_MB} MiB in and out $(mib "${HWM_PHASE[stream]:-0}") MiB;" \
     "$FILES small series (write, read, listings) $(mib "${HWM_PHASE[small]:-0}") MiB."
printf 'small series, median time per file (us): write native %.1f, modelfs %.1f; read native %.1f, modelfs cold %.1f, warm %.1f\n' \
  "$(awk -v r="${R[swrite_native]}" 'BEGIN{print 1e6/r}')" "$(awk -v r="${R[swrite_mfs]}" 'BEGIN{print 1e6/r}')" \
  "$(awk -v r="${R[sread_native]}" 'BEGIN{print 1e6/r}')" "$(awk -v r="${R[sread_cold_mfs]}" 'BEGIN{print 1e6/r}')" \
  "$(awk -v r="${R[sread_warm_mfs]}" 'BEGIN{print 1e6/r}')"
if (( ALL_MET )); then echo "All SPEC targets met."; else echo "Some SPEC targets NOT MET (see table)."; fi
