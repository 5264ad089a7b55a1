#!/usr/bin/env bash
# modelfs neuron-graph benchmark (SPEC §3.5, §4): /neurons and /synapses. Measured side by side in one
# run: the store library's save and load of BENCH_NEURONS neurons (BENCH_DIM float32 each) and
# BENCH_SYNAPSES synapses against the raw-SQLite limit and the original Python storage layer
# (bench/neurons_original.py); the whole-graph export and import through the mount, by the CLI and by
# the original; `ls -l` and a warm `find` of neurons/ against a local folder holding the same files;
# the daemon's peak memory. Prints every sample, the medians and a summary table with ratios and the
# SPEC targets.
#
#   bash bench/neurons.sh
#
# Knobs (environment):
#   BENCH_NEURONS=100000      knowledge neurons of the graph
#   BENCH_DIM=384             floats per neuron vector
#   BENCH_SYNAPSES=1000000    synapses of the graph
#   BENCH_REPS=3              repetitions of each modelfs / native / limit measurement (median)
#   BENCH_ORIG_REPS=1         repetitions of the original's slow steps (full-graph load, synapse
#                             save, export, import); its neuron save and neuron load use BENCH_REPS
#   BENCH_ORIGINAL=1          0: skip the original (Python) baseline
#   BENCH_DIR=/tmp            where the work folder is made (space is checked first)
#   BENCH_BUILD_DIR=<repo>/build-bench   where neurons_bench is compiled
#   BENCH_MODELFS_OPTS=       extra -o options for modelfs
#   BENCH_PREFAULT=1          0: no page-cache prefault before the steps that fill new page-cache
#                             pages (see bench/run.sh)
#   BENCH_KEEP=0              1: keep the work folder at the end
#
# Exit status: non-zero when something fails (build, mount, a command, a wrong count or checksum); a
# missed target is only reported as "NOT MET".
set -euo pipefail

T_START=$EPOCHREALTIME
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NEURONS=${BENCH_NEURONS:-100000}
DIM=${BENCH_DIM:-384}
SYNAPSES=${BENCH_SYNAPSES:-1000000}
REPS=${BENCH_REPS:-3}
ORIG_REPS=${BENCH_ORIG_REPS:-1}
RUN_ORIG=${BENCH_ORIGINAL:-1}
BUILD_BENCH=${BENCH_BUILD_DIR:-$ROOT/build-bench}
MFS_OPTS=${BENCH_MODELFS_OPTS:-}
KEEP=${BENCH_KEEP:-0}
PREFAULT=${BENCH_PREFAULT:-1}
PY=/usr/bin/python3
ORIG=$ROOT/bench/neurons_original.py
GRAPH=(--neurons "$NEURONS" --dim "$DIM" --synapses "$SYNAPSES")

BENCH_LOGS=(data/modelfs.log)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
fmt() { awk -v x="$1" 'BEGIN{printf "%.3f", x}'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN{printf "%.1f", b/1e6/s}'; }
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }

declare -A R      # results: key -> median (seconds unless the key says otherwise)
record() {        # record KEY samples...  (logs the samples and the median)
  local key=$1; shift
  (( $# > 0 )) || die "no samples for $key"
  local m; m=$(median "$@")
  R[$key]=$m
  local shown=""
  for s in "$@"; do shown+="$(fmt "$s") "; done
  log "  $key: samples [ ${shown}] s -> median $(fmt "$m") s"
}
# run_kv NAME CMD...: runs CMD with stdout (its "key value" lines) to $WORK/out/NAME, stderr to
# cmd.err; fails the run when CMD fails. vals NAME KEY: the values of KEY in that output, in order.
run_kv() {
  local name=$1; shift
  if ! "$@" >"$WORK/out/$name" 2>"$WORK/cmd.err"; then
    echo "bench: command failed: $*" >&2
    tail -5 "$WORK/cmd.err" >&2
    exit 1
  fi
}
vals() { awk -v k="$2" '$1 == k {print $2}' "$WORK/out/$1"; }
val1() { vals "$1" "$2" | head -1; }
steps() {   # steps NAME PREFIX: logs the step timings (PREFIX_step_*_s) of a Python run
  log "    steps: $(awk -v p="$2_step_" 'index($1, p) == 1 {sub(p, "", $1); sub(/_s$/, "", $1);
    printf "%s %.2f s; ", $1, $2}' "$WORK/out/$1")"
}

# Page-cache preparation, as in bench/run.sh: on this VM, filling the page cache with pages the guest
# has not used recently is ~8x slower than reusing pages just freed, so every timed step that fills
# new page-cache pages starts right after an untimed write+delete of about that many MiB (+256).
prefault() {
  [[ "$PREFAULT" == 1 ]] || return 0
  dd if=/dev/zero of="$WORK/prefault" bs=1M count=$(( $1 + 256 )) status=none || die "prefault"
  rm -f "$WORK/prefault"
}
pf_arg() { if [[ "$PREFAULT" == 1 ]]; then echo "$(( $1 + 256 ))"; else echo 0; fi; }

# modelfs mount / unmount. The daemon's VmHWM is read before every unmount (per phase), and a sampler
# keeps the largest RssAnon it sees (every 0.1 s): VmHWM also counts the pages of graph.db that the
# store's read connections map (mmap_size 1 GiB), which are page cache, not the daemon's own memory.
MFS_PID=""; MFS_DATA=""; MFS_MNT=""; SAMPLER_PID=""; LOG_LINES=0
declare -A HWM_PHASE ANON_PHASE   # phase -> max VmHWM / sampled RssAnon (kB)
rss_sampler() {   # rss_sampler PID OUT: writes the largest RssAnon (kB) of PID to OUT until PID exits
  local max=0 k v _
  while [[ -r /proc/$1/status ]] && kill -0 "$1" 2>/dev/null; do
    while read -r k v _; do
      if [[ $k == RssAnon: ]]; then (( v > max )) && max=$v; break; fi
    done <"/proc/$1/status" 2>/dev/null || true   # the daemon may exit while it is read
    echo "$max" >"$2"
    sleep 0.1
  done
}
mfs_mount() {   # mfs_mount DATA MNT
  LOG_LINES=0
  if [[ -f "$1/modelfs.log" ]]; then LOG_LINES=$(wc -l <"$1/modelfs.log"); fi
  "$MFS" mount --data "$1" "$2" ${MFS_OPTS:+-o "$MFS_OPTS"} || die "modelfs mount $2"
  MFS_PID=$(cat "$1/daemon.pid")
  PIDS+=("$MFS_PID")
  MFS_DATA=$1; MFS_MNT=$2
  rss_sampler "$MFS_PID" "$WORK/anon.$MFS_PID" &
  SAMPLER_PID=$!
  PIDS+=("$SAMPLER_PID")
}
mfs_umount() {   # mfs_umount PHASE
  local kb anon
  kb=$(awk '/^VmHWM:/{print $2}' "/proc/$MFS_PID/status" 2>/dev/null || echo 0)
  if (( kb > ${HWM_PHASE[$1]:-0} )); then HWM_PHASE[$1]=$kb; fi
  DAEMON_CPU=$(awk -v a="$DAEMON_CPU" -v b="$(cpu_s "$MFS_PID")" 'BEGIN{print a+b}')
  "$MFS" umount "$MFS_MNT" || die "modelfs umount $MFS_MNT"
  wait "$SAMPLER_PID" 2>/dev/null || true
  # Anything the daemon logged other than info lines (errors, store warnings) is shown at the end.
  tail -n +"$(( LOG_LINES + 1 ))" "$MFS_DATA/modelfs.log" 2>/dev/null | grep -v ' info: ' \
    | sed "s|^|$(basename "$MFS_DATA"): |" >>"$WORK/daemon-log-issues" || true
  anon=$(cat "$WORK/anon.$MFS_PID" 2>/dev/null || echo 0)
  if (( anon > ${ANON_PHASE[$1]:-0} )); then ANON_PHASE[$1]=$anon; fi
  MFS_PID=""; SAMPLER_PID=""
}
xattr() { getfattr --only-values --absolute-names -n "user.modelfs.$2" "$1" 2>/dev/null || echo "?"; }
check_counts() {   # check_counts MNT WHAT: the mount's neurons/ counts the whole graph
  local n s
  n=$(xattr "$1/neurons" neurons); s=$(xattr "$1/neurons" synapses)
  [[ "$n" == "$NEURONS" && "$s" == "$SYNAPSES" ]] || die "$2: the mount counts $n neurons and $s synapses"
}
cli_checksum() { sed -n 's/.*checksum \([0-9a-f]\{64\}\).*/\1/p' "$1" | tail -1; }

# ---------------------------------------------------------------- build
log "building modelfs (build/) ..."
cd "$ROOT"
if [[ ! -f build/CMakeCache.txt ]]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null || die "cmake configure"
fi
cmake --build build -j2 --target modelfs >/dev/null || die "cmake --build build"
BUILD_TYPE=$(awk -F= '/^CMAKE_BUILD_TYPE:/{print $2}' build/CMakeCache.txt)
mkdir -p "$BUILD_BENCH"
NB=$BUILD_BENCH/neurons_bench
LIBS=(build/stores/libmodelfs_neurons_store.a build/stores/libmodelfs_neurons_graph.a
      build/stores/libmodelfs_common.a)
stale=0
[[ -x "$NB" && "$NB" -nt bench/neurons_bench.cc ]] || stale=1
for l in "${LIBS[@]}"; do [[ "$NB" -nt "$l" ]] || stale=1; done
if (( stale )); then
  log "compiling bench/neurons_bench.cc ..."
  g++ -O2 -g -DNDEBUG -Wall -Wextra -std=c++20 -I. bench/neurons_bench.cc "${LIBS[@]}" \
    -lsqlite3 -lcrypto -lxxhash -lpthread -o "$NB" || die "compile neurons_bench"
fi
if [[ "$RUN_ORIG" == 1 ]]; then
  "$PY" -c 'import numpy' 2>/dev/null || die "$PY with numpy is needed (apt-get install python3-numpy)"
fi

# ---------------------------------------------------------------- set-up
BASE=${BENCH_DIR:-/tmp}
# Sizes (estimates, for the space check and the prefaults): a neuron row ~ 4*DIM + 600 B, a synapse
# row with its indexes ~ 600 B; an export ~ 21 B per float and ~ 420 B per synapse (the original's
# indent=2 export ~ 1.3x that).
STORE_N_MB=$(( NEURONS * (4 * DIM + 600) / 1048576 + 1 ))
STORE_MB=$(( STORE_N_MB + SYNAPSES * 600 / 1048576 + 1 ))
EXPORT_MB=$(( (NEURONS * (21 * DIM + 450) + SYNAPSES * 420) / 1048576 + 1 ))
NEED_MB=$(( REPS * (3 * STORE_N_MB + STORE_MB) + 2 * STORE_MB + 4 * EXPORT_MB + 2 * STORE_MB + 256
            + NEURONS * 8 * 4 / 1024 + STORE_N_MB * REPS + STORE_MB ))
AVAIL_MB=$(( $(df -Pk "$BASE" | awk 'NR==2{print $4}') / 1024 ))
(( AVAIL_MB > NEED_MB )) || die "$BASE has $AVAIL_MB MiB free, the run needs about $NEED_MB MiB (set BENCH_DIR)"
WORK=$(mktemp -d "$BASE/modelfs-neuronsbench.XXXXXX")
mkdir -p "$WORK/out" "$WORK/api" "$WORK/orig" "$WORK/mnt" "$WORK/mnt2"
DATA=$WORK/data; MNT=$WORK/mnt; MNT2=$WORK/mnt2
MOUNTS+=("$MNT" "$MNT2")
log "work folder $WORK; modelfs build type $BUILD_TYPE; $(nproc) cores; kernel $(uname -r)"
log "graph: $NEURONS neurons (dim $DIM), $SYNAPSES synapses; reps $REPS (original's slow steps: $ORIG_REPS)"

# ---------------------------------------------------------------- 1. store API: save
mark api0
# neurons_bench generates the same deterministic graph in every process (untimed) and times the
# library calls: SaveAll of the neurons into a fresh store, and SaveAll of the synapses into a fresh
# store that holds the neurons; each rep in a new store directory (prefault before each).
log "store API: SaveAll of $NEURONS neurons into a fresh store ..."
run_kv save_n "$NB" save-neurons "$WORK/api/sn" --reps "$REPS" "${GRAPH[@]}" --prefault-mb "$(pf_arg "$STORE_N_MB")"
# shellcheck disable=SC2046
record api_save_neurons $(vals save_n save_neurons_s)
# shellcheck disable=SC2046
log "  (open $(fmt "$(median $(vals save_n open_s))") s, close with WAL checkpoint $(fmt "$(median $(vals save_n close_s))") s, untimed)"
log "store API: SaveAll of $SYNAPSES synapses into a store holding the neurons ..."
run_kv save_s "$NB" save-synapses "$WORK/api/ss" --reps "$REPS" "${GRAPH[@]}" --prefault-mb "$(pf_arg "$STORE_MB")"
# shellcheck disable=SC2046
record api_save_synapses $(vals save_s save_synapses_s)
log "raw SQLite limit: $NEURONS neuron rows, one prepared statement, the store's schema and pragmas ..."
run_kv raw_ins "$NB" raw-insert "$WORK/api/raw" --reps "$REPS" "${GRAPH[@]}" --prefault-mb "$(pf_arg "$STORE_N_MB")"
# shellcheck disable=SC2046
record raw_insert $(vals raw_ins raw_insert_s)
# shellcheck disable=SC2046
record raw_insert_after $(vals raw_ins raw_insert_indexes_after_s)
# shellcheck disable=SC2046
log "  limit, where it goes (medians): indexes first: INSERTs $(fmt "$(median $(vals raw_ins raw_insert_rows_s))") s +" \
    "COMMIT $(fmt "$(median $(vals raw_ins raw_insert_commit_s))") s; indexes after: INSERTs" \
    "$(fmt "$(median $(vals raw_ins raw_insert_indexes_after_rows_s))") s + index builds" \
    "$(fmt "$(median $(vals raw_ins raw_insert_indexes_after_build_s))") s + COMMIT" \
    "$(fmt "$(median $(vals raw_ins raw_insert_indexes_after_commit_s))") s"
rm -rf "$WORK/api/raw"
STORE_N=$WORK/api/sn/$REPS     # neurons only
STORE_F=$WORK/api/ss/$REPS     # the whole graph
log "  store sizes: neurons only $(du -sm "$STORE_N" | cut -f1) MiB, whole graph $(du -sm "$STORE_F" | cut -f1) MiB"

# ---------------------------------------------------------------- 2. store API: load
# A fresh process per sample: Open, then LoadAll (every neuron with its vector, every synapse, sorted
# by id). The databases are page-cached (just written). Raw limit: a SELECT of every column, touched,
# nothing built.
log "store API: Open + LoadAll in a fresh process (neurons only, whole graph) ..."
ln_=(); lno=(); lf=(); lfo=(); rsn=(); rsf=()
for i in $(seq "$REPS"); do
  run_kv load_n "$NB" load "$STORE_N"
  [[ "$(val1 load_n neurons)" == "$NEURONS" ]] || die "LoadAll gave $(val1 load_n neurons) neurons"
  ln_+=("$(val1 load_n load_s)"); lno+=("$(val1 load_n open_load_s)")
  run_kv load_f "$NB" load "$STORE_F"
  [[ "$(val1 load_f synapses)" == "$SYNAPSES" ]] || die "LoadAll gave $(val1 load_f synapses) synapses"
  lf+=("$(val1 load_f load_s)"); lfo+=("$(val1 load_f open_load_s)")
  run_kv scan_n "$NB" raw-scan "$STORE_N"
  rsn+=("$(val1 scan_n raw_scan_neurons_s)")
  run_kv scan_f "$NB" raw-scan "$STORE_F"
  rsf+=("$(awk '{print $1 + $2}' <<<"$(val1 scan_f raw_scan_neurons_s) $(val1 scan_f raw_scan_synapses_s)")")
done
record api_load_neurons "${ln_[@]}"
record api_open_load_neurons "${lno[@]}"
record api_load_full "${lf[@]}"
record api_open_load_full "${lfo[@]}"
record raw_scan_neurons "${rsn[@]}"
record raw_scan_full "${rsf[@]}"
log "  LoadAll peak RSS of the process: neurons $(mib "$(val1 load_n peak_rss_kb)") MiB, whole graph $(mib "$(val1 load_f peak_rss_kb)") MiB"
run_kv list "$NB" list "$STORE_F"
log "  ListNeurons without vectors (what a listing of neurons/ asks the store): $(fmt "$(val1 list list_neurons_s)") s"

mark api1
log "  machine during the store-API phase: $(others api0 api1)"

# ---------------------------------------------------------------- 3. the original (Python)
# bench/neurons_original.py: the original's own code paths. "save" first loads the whole graph from the
# modelfs store's database with the original's load_all (a fresh process: that is the original's
# full-graph load sample; it also shows that the original reads our v2 schema), then batch_creates the
# neurons into a new database per rep, and the synapses (with its per-synapse reference checks) in the
# first BENCH_ORIG_REPS reps. Its neuron-only load reads the same neurons-only database as LoadAll.
if [[ "$RUN_ORIG" == 1 ]]; then
  log "original: load_all of the whole graph, then batch_create of the neurons (x$REPS) and synapses (x$ORIG_REPS) ..."
  run_kv orig_save "$PY" "$ORIG" save "$STORE_F/graph.db" "$WORK/orig" --reps "$REPS" --synapse-reps "$ORIG_REPS"
  [[ "$(val1 orig_save synapses)" == "$SYNAPSES" && "$(val1 orig_save neurons)" == "$NEURONS" ]] \
    || die "the original loaded $(val1 orig_save neurons) neurons and $(val1 orig_save synapses) synapses"
  # shellcheck disable=SC2046
  record orig_save_neurons $(vals orig_save save_neurons_s)
  # shellcheck disable=SC2046
  record orig_save_synapses $(vals orig_save save_synapses_s)
  olf=("$(val1 orig_save source_load_s)")
  steps orig_save source
  for i in $(seq 2 "$ORIG_REPS"); do
    run_kv orig_load_f "$PY" "$ORIG" load "$STORE_F/graph.db"
    olf+=("$(val1 orig_load_f load_s)")
  done
  record orig_load_full "${olf[@]}"
  rm -f "$WORK"/orig/save-*.db*
  log "original: load_all of the neurons-only database (x$REPS, fresh processes) ..."
  oln=(); olno=()
  for i in $(seq "$REPS"); do
    run_kv orig_load_n "$PY" "$ORIG" load "$STORE_N/graph.db"
    [[ "$(val1 orig_load_n neurons)" == "$NEURONS" ]] || die "the original loaded $(val1 orig_load_n neurons) neurons"
    oln+=("$(val1 orig_load_n load_s)")
    olno+=("$(awk '{print $1 + $2}' <<<"$(val1 orig_load_n open_s) $(val1 orig_load_n load_s)")")
  done
  record orig_load_neurons "${oln[@]}"
  record orig_open_load_neurons "${olno[@]}"
fi

mark orig1
[[ "$RUN_ORIG" == 1 ]] && log "  machine during the original's phase: $(others api1 orig1)"

# ---------------------------------------------------------------- 4. export
# The whole graph as the original's export file. CLI: `modelfs neurons export FILE` (no mount). Mount:
# a fresh mount per rep, `cat neurons/graph/export.json >/dev/null` (the first: generation of the
# file from one snapshot + the read; a lone cat's lookup makes it) and the same cat again (the
# generated file and the kernel's page cache). Original: export_to_json of the same database.
mkdir -p "$DATA"
mv "$STORE_F" "$DATA/neurons"
STORE_F=$DATA/neurons
EXPORT=$WORK/export-cli.json
log "export: CLI (modelfs neurons export FILE, no mount) ..."
ce=()
for i in $(seq "$REPS"); do
  rm -f "$EXPORT"; sync; prefault "$EXPORT_MB"
  ce+=("$(timeit "$MFS" neurons --data "$DATA" export "$EXPORT")")
  SUM=$(cli_checksum "$WORK/cmd.err")
done
record cli_export "${ce[@]}"
EXPORT_BYTES=$(stat -c %s "$EXPORT")
[[ -n "$SUM" ]] || die "the CLI export printed no checksum"
log "  export file: $EXPORT_BYTES B, checksum $SUM"
log "export: through the mount, cat neurons/graph/export.json (fresh mount per rep: first, then again) ..."
me1=(); me2=()
for i in $(seq "$REPS"); do
  mfs_mount "$DATA" "$MNT"
  check_counts "$MNT" "the filled store"
  sync; prefault $(( 2 * EXPORT_MB ))
  me1+=("$(timeit cat "$MNT/neurons/graph/export.json")")
  me2+=("$(timeit cat "$MNT/neurons/graph/export.json")")
  if (( i == REPS )); then
    [[ "$(stat -c %s "$MNT/neurons/graph/export.json")" == "$EXPORT_BYTES" ]] || die "the mount's export has another size"
    cmp "$MNT/neurons/graph/export.json" "$EXPORT" || die "the mount's export differs from the CLI's"
    log "  cmp: the mount's export.json is byte-identical to the CLI's export"
  fi
  mfs_umount export
done
record mnt_export_first "${me1[@]}"
record mnt_export_second "${me2[@]}"
if [[ "$RUN_ORIG" == 1 ]]; then
  log "export: the original's export_to_json of the same database (x$ORIG_REPS) ..."
  oe=()
  for i in $(seq "$ORIG_REPS"); do
    rm -f "$WORK/export-orig.json"; sync; prefault "$(( EXPORT_MB * 3 / 2 ))"
    run_kv orig_export "$PY" "$ORIG" export "$STORE_F/graph.db" "$WORK/export-orig.json"
    oe+=("$(val1 orig_export export_s)")
    steps orig_export export
  done
  record orig_export "${oe[@]}"
  ORIG_EXPORT_BYTES=$(val1 orig_export bytes)
  [[ "$(val1 orig_export checksum)" == "$SUM" ]] \
    || die "the original's export checksum $(val1 orig_export checksum) differs from modelfs's $SUM"
  log "  the original read the modelfs database and exported $ORIG_EXPORT_BYTES B (indent=2) with the same checksum"
  log "  original peak RSS $(mib "$(val1 orig_export peak_rss_kb)") MiB"
  rm -f "$WORK/export-orig.json"
fi

mark exp1
log "  machine during the export phase: $(others orig1 exp1)"

# ---------------------------------------------------------------- 5. import
# The CLI's export file into an empty store. CLI: `modelfs neurons import FILE`. Mount: a fresh empty
# data folder mounted per rep, `cp FILE mnt/neurons/graph/export.json`, timed to cp's exit (the daemon
# verifies and commits at close); counts checked through the folder's xattrs; the last store exported
# again by the CLI must carry the same checksum. Original: import_from_json into a new database.
log "import: CLI (modelfs neurons import FILE into an empty store) ..."
ci=()
for i in $(seq "$REPS"); do
  d=$WORK/imp-cli-$i; mkdir "$d"
  sync; prefault $(( EXPORT_MB + 2 * STORE_MB ))
  ci+=("$(timeit "$MFS" neurons --data "$d" import "$EXPORT")")
  rm -rf "$d"
done
record cli_import "${ci[@]}"
log "import: through the mount, cp FILE neurons/graph/export.json into an empty store ..."
mi=()
for i in $(seq "$REPS"); do
  d=$WORK/imp-mnt-$i; mkdir "$d"
  BENCH_LOGS+=("imp-mnt-$i/modelfs.log")
  mfs_mount "$d" "$MNT2"
  sync; prefault $(( 2 * EXPORT_MB + 2 * STORE_MB ))
  mi+=("$(timeit cp "$EXPORT" "$MNT2/neurons/graph/export.json")")
  check_counts "$MNT2" "after the import"
  mfs_umount import
  if (( i == REPS )); then
    "$MFS" neurons --data "$d" export "$WORK/reexport.json" 2>"$WORK/out/reexport.err" \
      || die "CLI export of the imported store"
    [[ "$(cli_checksum "$WORK/out/reexport.err")" == "$SUM" ]] \
      || die "the imported store exports checksum $(cli_checksum "$WORK/out/reexport.err"), not $SUM"
    log "  the imported store exports the same checksum ($SUM)"
    rm -f "$WORK/reexport.json"
  fi
  rm -rf "$d"
done
record mnt_import "${mi[@]}"
if [[ "$RUN_ORIG" == 1 ]]; then
  log "import: the original's import_from_json of the same file into a new database (x$ORIG_REPS) ..."
  oi=()
  for i in $(seq "$ORIG_REPS"); do
    sync; prefault $(( 2 * STORE_MB ))
    run_kv orig_import "$PY" "$ORIG" import "$EXPORT" "$WORK/orig/import-$i/graph.db"
    [[ "$(val1 orig_import synapses)" == "$SYNAPSES" && "$(val1 orig_import checksum)" == "$SUM" ]] \
      || die "the original imported $(val1 orig_import synapses) synapses, checksum $(val1 orig_import checksum)"
    oi+=("$(val1 orig_import import_s)")
    steps orig_import import
    log "  original peak RSS $(mib "$(val1 orig_import peak_rss_kb)") MiB"
    rm -rf "$WORK/orig/import-$i"
  done
  record orig_import "${oi[@]}"
fi

mark imp1
log "  machine during the import phase: $(others exp1 imp1)"

# ---------------------------------------------------------------- 6. listing
# `ls -l neurons/` (NEURONS documents and vectors, by-type/, graph/: 2N+2 entries) and a warm
# `find -maxdepth 1 -printf` stat walk, against a local folder with the same names, sizes and bytes
# (neurons_bench native-dir writes the mount's document text and the raw vector). FUSE "first": the
# first listing after a fresh mount; "again": the next one. Native: warm.
NATIVE=$WORK/native/neurons
log "listing: writing the native folder (${NEURONS} .json + ${NEURONS} .vec, untimed) ..."
run_kv native "$NB" native-dir "$STORE_F" "$NATIVE"
sync
ENTRIES=$(( 2 * NEURONS + 2 ))
FIND_FMT='%s %T@ %m %p\n'
count_check() {   # count_check DIR N: DIR holds N entries (a find stat walk, which also warms it)
  local n; n=$(find "$1" -mindepth 1 -maxdepth 1 -printf "$FIND_FMT" | wc -l)
  [[ "$n" == "$2" ]] || die "$1 lists $n entries, expected $2"
}
log "listing: ls -l and find of $ENTRIES entries ..."
count_check "$NATIVE" "$ENTRIES"; ls -l "$NATIVE" >/dev/null
l_nat=(); f_nat=(); l_m1=(); l_m2=(); f_m=()
for i in $(seq "$REPS"); do l_nat+=("$(timeit ls -l "$NATIVE")"); done
for i in $(seq "$REPS"); do f_nat+=("$(timeit find "$NATIVE" -maxdepth 1 -printf "$FIND_FMT")"); done
for i in $(seq "$REPS"); do
  mfs_mount "$DATA" "$MNT"
  l_m1+=("$(timeit ls -l "$MNT/neurons")")
  l_m2+=("$(timeit ls -l "$MNT/neurons")")
  if (( i < REPS )); then mfs_umount list; fi
done
count_check "$MNT/neurons" "$ENTRIES"
first=$(find "$NATIVE" -maxdepth 1 -name '*.json' -printf '%f\n' -quit)
for f in "$first" "${first%.json}.vec"; do
  cmp "$NATIVE/$f" "$MNT/neurons/$f" || die "native $f differs from the mount's"
done
for i in $(seq "$REPS"); do f_m+=("$(timeit find "$MNT/neurons" -maxdepth 1 -printf "$FIND_FMT")"); done
log "  the mount holds $(xattr "$MNT" inodes) inodes for the kernel after the listings"
mfs_umount list
MOUNTS=()
mark end
log "  machine during the listing phase: $(others imp1 end)"
record ls_native "${l_nat[@]}"
record find_native "${f_nat[@]}"
record ls_first_mfs "${l_m1[@]}"
record ls_again_mfs "${l_m2[@]}"
record find_mfs "${f_m[@]}"

# ---------------------------------------------------------------- summary
# Ratios are speed ratios (reference time / modelfs time): > 1 means modelfs is faster.
ratio() { [[ -z "$1" || -z "$2" ]] && { echo "-"; return; }; awk -v r="$1" -v m="$2" 'BEGIN{printf "%.2f", r/m}'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN{exit !(a+0 <= b+0)}'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN{exit !(a+0 >= b+0)}'; }
cell() { if [[ -n "${1:-}" ]]; then fmt "$1"; else echo "-"; fi; }
ALL_MET=1
ROWF='| %-40s | %8s | %10s | %10s | %8s | %8s | %8s | %8s | %-24s | %-7s |\n'
# row LABEL NATIVE ORIG LIMIT MFS TARGET_KIND TARGET  (TARGET_KIND: max_s = modelfs time <= TARGET;
# native = modelfs/native speed ratio >= TARGET; "" = info)
row() {
  local label=$1 nat=$2 orig=$3 lim=$4 m=$5 kind=$6 target=$7 ttext met
  case $kind in
    max_s) ttext="<= $target s"; if le "$m" "$target"; then met=met; else met="NOT MET"; fi ;;
    native) ttext=">= ${target}x native"; if ge "$(ratio "$nat" "$m")" "$target"; then met=met; else met="NOT MET"; fi ;;
    *) ttext="(info)"; met="-" ;;
  esac
  [[ "$met" == "NOT MET" ]] && ALL_MET=0
  # shellcheck disable=SC2059
  printf "$ROWF" "$label" "$(cell "$nat")" "$(cell "$orig")" "$(cell "$lim")" "$(cell "$m")" \
    "$(ratio "$nat" "$m")" "$(ratio "$orig" "$m")" "$(ratio "$lim" "$m")" "$ttext" "$met"
}
memrow() {   # memrow LABEL PHASE
  local kb=${HWM_PHASE[$2]:-0} met=met
  if (( kb >= 256 * 1024 )); then met="NOT MET"; ALL_MET=0; fi
  # shellcheck disable=SC2059
  printf "$ROWF" "$1" - - - "$(mib "$kb")" - - - "< 256 MiB (anon $(mib "${ANON_PHASE[$2]:-0}"))" "$met"
}
O() { [[ "$RUN_ORIG" == 1 ]] && echo "${R[$1]}" || echo ""; }
MB=$(awk -v b="$EXPORT_BYTES" 'BEGIN{printf "%.0f", b/1e6}')
echo
echo "== modelfs neurons benchmark summary (median of $REPS; original's slow steps: $ORIG_REPS; seconds;" \
     "ratios are speed ratios ref/modelfs, >1 = modelfs faster) =="
echo "   graph: $NEURONS knowledge neurons (float32 x $DIM), $SYNAPSES synapses; export $MB MB;" \
     "original = bench/neurons_original.py (Python $("$PY" -c 'import sys; print(sys.version.split()[0])'));" \
     "limit = raw SQLite (save/load rows) or the CLI (export/import rows)"
# shellcheck disable=SC2059
printf "$ROWF" measure native original limit modelfs "m/native" "m/orig" "m/limit" "SPEC target" "met?"
printf '|%s|\n' "------------------------------------------|----------|------------|------------|----------|----------|----------|----------|--------------------------|---------"
RAW_INS=$(awk -v a="${R[raw_insert]}" -v b="${R[raw_insert_after]}" 'BEGIN{print (a < b ? a : b)}')
row "store API: save $NEURONS neurons"          "" "$(O orig_save_neurons)" "$RAW_INS" "${R[api_save_neurons]}" max_s 0.5
row "store API: save $SYNAPSES synapses"        "" "$(O orig_save_synapses)" "" "${R[api_save_synapses]}" "" ""
row "store API: load $NEURONS neurons (LoadAll)" "" "$(O orig_load_neurons)" "${R[raw_scan_neurons]}" "${R[api_load_neurons]}" max_s 0.3
row "  same, open + LoadAll (fresh process)"     "" "$(O orig_open_load_neurons)" "" "${R[api_open_load_neurons]}" max_s 0.3
row "store API: load whole graph (LoadAll)"      "" "$(O orig_load_full)" "${R[raw_scan_full]}" "${R[api_load_full]}" "" ""
row "export: mount, first cat (gen + read)"      "" "$(O orig_export)" "${R[cli_export]}" "${R[mnt_export_first]}" "" ""
row "export: mount, second cat (cached)"         "" "" "" "${R[mnt_export_second]}" "" ""
row "export: CLI (no mount)"                     "" "$(O orig_export)" "" "${R[cli_export]}" "" ""
row "import: cp into the mount (to close)"       "" "$(O orig_import)" "${R[cli_import]}" "${R[mnt_import]}" "" ""
row "import: CLI (no mount)"                     "" "$(O orig_import)" "" "${R[cli_import]}" "" ""
row "ls -l neurons/ ($ENTRIES), first"          "${R[ls_native]}" "" "" "${R[ls_first_mfs]}" native 0.2
row "ls -l neurons/ ($ENTRIES), again"          "${R[ls_native]}" "" "" "${R[ls_again_mfs]}" native 0.2
row "find neurons/ ($ENTRIES), warm"            "${R[find_native]}" "" "" "${R[find_mfs]}" native 0.9
memrow "daemon VmHWM, export reads (MiB)" export
memrow "daemon VmHWM, imports (MiB)" import
memrow "daemon VmHWM, listings (MiB)" list
echo
printf 'export %s B: mount first cat %s MB/s, second %s MB/s; CLI %s MB/s' "$EXPORT_BYTES" \
  "$(mbps "$EXPORT_BYTES" "${R[mnt_export_first]}")" "$(mbps "$EXPORT_BYTES" "${R[mnt_export_second]}")" \
  "$(mbps "$EXPORT_BYTES" "${R[cli_export]}")"
if [[ "$RUN_ORIG" == 1 ]]; then
  printf '; original %s MB/s (its file: %s B, indent=2)' "$(mbps "$ORIG_EXPORT_BYTES" "${R[orig_export]}")" "$ORIG_EXPORT_BYTES"
fi
echo
printf 'import: mount %s MB/s, CLI %s MB/s' "$(mbps "$EXPORT_BYTES" "${R[mnt_import]}")" "$(mbps "$EXPORT_BYTES" "${R[cli_import]}")"
[[ "$RUN_ORIG" == 1 ]] && printf ', original %s MB/s' "$(mbps "$EXPORT_BYTES" "${R[orig_import]}")"
echo
echo "raw SQLite insert of the neuron rows: indexes first $(fmt "${R[raw_insert]}") s, indexes after the rows $(fmt "${R[raw_insert_after]}") s;" \
     "raw scan: neurons $(fmt "${R[raw_scan_neurons]}") s, whole graph $(fmt "${R[raw_scan_full]}") s"
echo "daemon peak RSS (VmHWM, includes graph.db pages its readers map) / largest sampled RssAnon:" \
     "export $(mib "${HWM_PHASE[export]:-0}") / $(mib "${ANON_PHASE[export]:-0}") MiB," \
     "import $(mib "${HWM_PHASE[import]:-0}") / $(mib "${ANON_PHASE[import]:-0}") MiB," \
     "listing $(mib "${HWM_PHASE[list]:-0}") / $(mib "${ANON_PHASE[list]:-0}") MiB"
echo "shared machine: store API $(others api0 api1); export $(others orig1 exp1); import $(others exp1 imp1);" \
     "listing $(others imp1 end) (others = other users' processes and kernel threads, e.g. writeback)"
if [[ -s "$WORK/daemon-log-issues" ]]; then
  echo "daemon logs: $(wc -l <"$WORK/daemon-log-issues") lines other than info, the first ones:"
  head -5 "$WORK/daemon-log-issues"
else
  echo "daemon logs: info lines only"
fi
if (( ALL_MET )); then echo "All SPEC targets met."; else echo "Some SPEC targets NOT MET (see table)."; fi
