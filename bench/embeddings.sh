#!/usr/bin/env bash
# modelfs embeddings benchmark (SPEC §3.2, §4): fill through Lookup/ApplyGradients, the raw store scan
# (CLI dump/checkpoint, no mount: the limit), dump and checkpoint end to end through the mount, cp of a
# checkpoint vs a native cp, restore of a checkpoint through the mount, and the daemon's peak memory.
# Prints every sample, the medians and a summary table with the SPEC targets.
#
#   bash bench/embeddings.sh
#
# Knobs (environment):
#   BENCH_KEYS=10000000       keys in group 0 (the store every read is measured on)
#   BENCH_DIM=16              dim of group 0 (adam: value = 32 + 3*4*dim bytes)
#   BENCH_REPS=3              repetitions of each timed read/cp/restore (the median is reported); the
#                             fill and the Lookup/ApplyGradients split runs run once
#   BENCH_SPLIT_KEYS=1000000  keys of each Lookup/ApplyGradients split run (a scratch store; capped at
#                             BENCH_KEYS)
#   BENCH_DIR=/tmp            where the temporary work folder is made (needs ~8x the checkpoint size free)
#   BENCH_MODELFS_OPTS=       extra -o options for modelfs
#   BENCH_KEEP=0              1: keep the work folder at the end
#   BENCH_PREFAULT=1          0: skip the page-cache prefault before each timed step (see bench/run.sh)
#
# Exit status: non-zero when something fails (build, mount, a command, wrong data or record count); a
# missed target is only reported as "NOT MET".
set -euo pipefail

T_START=$EPOCHREALTIME
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KEYS=${BENCH_KEYS:-10000000}
DIM=${BENCH_DIM:-16}
REPS=${BENCH_REPS:-3}
SPLIT=${BENCH_SPLIT_KEYS:-1000000}
MFS_OPTS=${BENCH_MODELFS_OPTS:-}
KEEP=${BENCH_KEEP:-0}
PREFAULT=${BENCH_PREFAULT:-1}
(( SPLIT > KEYS )) && SPLIT=$KEYS

BENCH_LOGS=(data/modelfs.log data2/modelfs.log)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
fmt() { awk -v x="$1" 'BEGIN{printf "%.3f", x}'; }
secs() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}'; }

declare -A R      # results: key -> median seconds
record() {        # record KEY samples...  (seconds; prints samples and median)
  local key=$1; shift
  local m; m=$(median "$@")
  R[$key]=$m
  local shown=""
  for s in "$@"; do shown+="$(fmt "$s") "; done
  log "  $key: samples [ ${shown}] s -> median $(fmt "$m") s"
}
# Rates from a median time: records (or keys) per second, and MB/s (1 MB = 1e6 B).
rate() { awk -v n="$1" -v s="$2" 'BEGIN{printf "%.0f", n/s}'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN{printf "%.0f", b/1e6/s}'; }

# modelfs mount / unmount. The daemon's peak RSS (VmHWM) is read before every unmount, per phase.
MFS_PID=""; MNT_CUR=""
declare -A HWM_PHASE   # phase -> max VmHWM (kB) of the daemons that served it
mfs_mount() {   # mfs_mount DATA MNT
  "$MFS" mount --data "$1" "$2" ${MFS_OPTS:+-o "$MFS_OPTS"} || die "modelfs mount $2"
  MFS_PID=$(cat "$1/daemon.pid")
  PIDS+=("$MFS_PID")
  MNT_CUR=$2
}
mfs_umount() {   # mfs_umount PHASE
  local kb
  kb=$(awk '/^VmHWM:/{print $2}' "/proc/$MFS_PID/status" 2>/dev/null || echo 0)
  if (( kb > ${HWM_PHASE[$1]:-0} )); then HWM_PHASE[$1]=$kb; fi
  "$MFS" umount "$MNT_CUR" || die "modelfs umount $MNT_CUR"
  MFS_PID=""; MNT_CUR=""
}

# Page-cache prefault, as in bench/run.sh: on this VM, filling the page cache with pages the guest has
# not used recently is ~8x slower than reusing pages just freed (a 2.5 GB dd: ~6.5 s after a sync,
# ~0.7 s right after a same-sized file was written and deleted). Every timed step that fills new
# page-cache pages starts right after an untimed write+delete of about the bytes it will cache.
prefault() {   # prefault BYTES
  [[ "$PREFAULT" == 1 ]] || return 0
  dd if=/dev/zero of="$WORK/prefault" bs=1M count=$(( $1 / 1048576 + 256 )) status=none || die "prefault"
  rm -f "$WORK/prefault"
}

mfs_cli() { "$MFS" embeddings --data "$@"; }

# ---------------------------------------------------------------- build
log "building modelfs (build/) ..."
cd "$ROOT"
if [[ ! -f build/CMakeCache.txt ]]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null || die "cmake configure"
fi
cmake --build build -j2 --target modelfs >/dev/null || die "cmake --build build"
BUILD_TYPE=$(awk -F= '/^CMAKE_BUILD_TYPE:/{print $2}' build/CMakeCache.txt)

# ---------------------------------------------------------------- set-up
VALUE_BYTES=$(( 32 + 4 * DIM * 3 ))             # adam: weights + m + v
CKPT_BYTES=$(( 8 + KEYS * (8 + 8 + 8 + VALUE_BYTES) ))
DUMP_BYTES=$(( 256 * 4 + 256 * 8 + KEYS * (8 + 4 + 4 * DIM) ))
BASE=${BENCH_DIR:-/tmp}
# Peak use: store (~1.1x checkpoint), raw checkpoint + dump, two local cp copies, the daemon's
# generated views, and during a restore a second store plus the staged checkpoint.
NEED=$(( CKPT_BYTES * 8 + DUMP_BYTES * 2 ))
AVAIL=$(( $(df -Pk "$BASE" | awk 'NR==2{print $4}') * 1024 ))
(( AVAIL > NEED )) || die "$BASE has $((AVAIL >> 30)) GiB free, the run needs about $((NEED >> 30)) GiB (set BENCH_DIR)"
WORK=$(mktemp -d "$BASE/modelfs-embbench.XXXXXX")
DATA=$WORK/data; DATA2=$WORK/data2; DATA_S=$WORK/data-split
MNT=$WORK/mnt; MNT2=$WORK/mnt2
mkdir -p "$DATA" "$MNT" "$MNT2" "$DATA_S"
MOUNTS+=("$MNT" "$MNT2")
log "work folder $WORK; modelfs build type $BUILD_TYPE; $(nproc) cores; kernel $(uname -r)"
log "keys $KEYS, group 0 dim $DIM adam (value $VALUE_BYTES B); checkpoint $CKPT_BYTES B, dump $DUMP_BYTES B;" \
    "reps $REPS; split runs $SPLIT keys"
GROUPS_TEXT="0 $DIM adam random_normal(stddev=0.01)"

# ---------------------------------------------------------------- 1. fill
# `train G COUNT --steps S` looks COUNT keys up in batches of 4096 (Lookup creates the missing ones with
# the initializer and writes them) and applies S random gradients per batch (ApplyGradients: read,
# optimizer step, write). The fill is one run of `--steps 1` on fresh keys 1..KEYS.
# To split Lookup from ApplyGradients, a scratch store (same group configuration) gets four runs of
# SPLIT keys each, all in batches of 4096:
#   a) --steps 0 on fresh keys         -> Lookup, creating keys
#   b) --steps 0 on the keys of a)     -> Lookup of existing keys (read only)
#   c) --steps 1 on other fresh keys   -> Lookup creating + ApplyGradients on keys just written
#   d) --steps 1 on the keys of a)     -> Lookup existing + ApplyGradients on existing keys (a trainer's
#                                         steady state)
# ApplyGradients keys/s = SPLIT / (c - a) for fresh keys and SPLIT / (d - b) for existing keys.
log "fill: train 0 $KEYS --steps 1 (Lookup creating keys + ApplyGradients) ..."
printf '%s\n' "$GROUPS_TEXT" | mfs_cli "$DATA" configure - || die "configure"
sync; prefault $(( CKPT_BYTES * 2 ))
T_FILL=$(timeit mfs_cli "$DATA" train 0 "$KEYS" --steps 1 --first-key 1) || die "fill"
log "  fill: $(fmt "$T_FILL") s -> $(rate "$KEYS" "$T_FILL") keys/s (Lookup + ApplyGradients)"
STATS=$(mfs_cli "$DATA" stats) || die "stats"
NREC=$(awk '$1=="keys"{print $2}' <<<"$STATS")
[[ "$NREC" == "$KEYS" ]] || die "store holds $NREC keys after the fill, expected $KEYS"
log "  store on disk: $(du -sb "$DATA" | cut -f1) B"

log "Lookup/ApplyGradients split: four runs of $SPLIT keys in a scratch store ..."
printf '%s\n' "$GROUPS_TEXT" | mfs_cli "$DATA_S" configure - || die "configure (split)"
sync; prefault $(( SPLIT * 600 ))
T_LC=$(timeit mfs_cli "$DATA_S" train 0 "$SPLIT" --steps 0 --first-key 1) || die "split a"
T_LE=$(timeit mfs_cli "$DATA_S" train 0 "$SPLIT" --steps 0 --first-key 1) || die "split b"
prefault $(( SPLIT * 600 ))
T_LCA=$(timeit mfs_cli "$DATA_S" train 0 "$SPLIT" --steps 1 --first-key $(( SPLIT + 1 ))) || die "split c"
T_LEA=$(timeit mfs_cli "$DATA_S" train 0 "$SPLIT" --steps 1 --first-key 1) || die "split d"
log "  a) Lookup creating $(fmt "$T_LC") s, b) Lookup existing $(fmt "$T_LE") s," \
    "c) + ApplyGradients fresh $(fmt "$T_LCA") s, d) + ApplyGradients existing $(fmt "$T_LEA") s"
rm -rf "$DATA_S"
apply_rate() {   # apply_rate T_WITH T_WITHOUT: keys/s of ApplyGradients alone, "-" if not measurable
  awk -v n="$SPLIT" -v a="$1" -v b="$2" 'BEGIN{ if (a > b) printf "%.0f", n/(a-b); else print "-" }'
}

# ---------------------------------------------------------------- 2. raw scan (CLI, no mount)
# `modelfs embeddings dump|checkpoint FILE`: opens the store, scans it under one snapshot, writes FILE.
log "raw scan (CLI, no mount): dump and checkpoint to local files ..."
RAW_DUMP=$WORK/raw.dump; RAW_CKPT=$WORK/raw.ckpt
rd=(); rc=()
for i in $(seq "$REPS"); do
  rm -f "$RAW_DUMP" "$RAW_CKPT"
  sync; prefault "$DUMP_BYTES"
  rd+=("$(timeit mfs_cli "$DATA" dump "$RAW_DUMP")") || die "raw dump"
  sync; prefault "$CKPT_BYTES"
  rc+=("$(timeit mfs_cli "$DATA" checkpoint "$RAW_CKPT")") || die "raw checkpoint"
done
S_DUMP=$(stat -c %s "$RAW_DUMP"); S_CKPT=$(stat -c %s "$RAW_CKPT")
[[ "$S_DUMP" == "$DUMP_BYTES" ]] || die "raw dump is $S_DUMP B, expected $DUMP_BYTES"
[[ "$S_CKPT" == "$CKPT_BYTES" ]] || die "raw checkpoint is $S_CKPT B, expected $CKPT_BYTES"
record raw_dump "${rd[@]}"
record raw_ckpt "${rc[@]}"
# The local copy every later comparison uses: cached the way a read leaves it (evict, read once).
sync
dd if="$RAW_CKPT" iflag=nocache count=0 status=none; cat "$RAW_CKPT" >/dev/null
dd if="$RAW_DUMP" iflag=nocache count=0 status=none; cat "$RAW_DUMP" >/dev/null

# ---------------------------------------------------------------- 3. reads through the mount
# Each rep mounts afresh (no generated view, no kernel cache). "first": `stat VIEW` then
# `cat VIEW >/dev/null`, each timed; their sum is the end-to-end time, from before the first lookup
# (whose stat generates the view into an unlinked file in the daemon's staging folder) to the end of the
# read: what a user sees (a lone `cat` does the same lookup itself; the split shows generation vs read).
# "second": the same cat again on the same mount (served from the generated file and the kernel's
# page cache).
log "reads through the mount: cat embeddings/dump and embeddings/checkpoint, fresh mount per rep ..."
md1=(); md2=(); mc1=(); mc2=(); mdg=(); mcg=(); mdr=(); mcr=()
sum() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.6f", a+b}'; }
for i in $(seq "$REPS"); do
  mfs_mount "$DATA" "$MNT"
  sync; prefault $(( DUMP_BYTES * 2 ))
  g=$(timeit stat "$MNT/embeddings/dump") || die "stat dump"
  r=$(timeit cat "$MNT/embeddings/dump") || die "cat dump"
  mdg+=("$g"); mdr+=("$r"); md1+=("$(sum "$g" "$r")")
  md2+=("$(timeit cat "$MNT/embeddings/dump")") || die "cat dump (second)"
  sync; prefault $(( CKPT_BYTES * 2 ))
  g=$(timeit stat "$MNT/embeddings/checkpoint") || die "stat checkpoint"
  r=$(timeit cat "$MNT/embeddings/checkpoint") || die "cat checkpoint"
  mcg+=("$g"); mcr+=("$r"); mc1+=("$(sum "$g" "$r")")
  mc2+=("$(timeit cat "$MNT/embeddings/checkpoint")") || die "cat checkpoint (second)"
  if (( i == 1 )); then   # content check, untimed: the same snapshot of an unchanged store
    cmp "$RAW_DUMP" "$MNT/embeddings/dump" || die "the mount's dump differs from the CLI's"
    [[ "$(stat -c %s "$MNT/embeddings/checkpoint")" == "$S_CKPT" ]] || die "checkpoint size through the mount"
  fi
  mfs_umount read
done
record mnt_dump_gen "${mdg[@]}"
record mnt_dump_read "${mdr[@]}"
record mnt_ckpt_gen "${mcg[@]}"
record mnt_ckpt_read "${mcr[@]}"
record mnt_dump_first "${md1[@]}"
record mnt_dump_second "${md2[@]}"
record mnt_ckpt_first "${mc1[@]}"
record mnt_ckpt_second "${mc2[@]}"

# cp of the checkpoint to a local file, fresh mount per rep ("first" includes the generation; "second"
# is the next cp on the same mount), vs native: cp of the page-cached local checkpoint.
log "cp checkpoint to a local file: through the mount vs native ..."
LOCAL=$WORK/local.ckpt
cn=(); cm1=(); cm2=()
for i in $(seq "$REPS"); do
  rm -f "$LOCAL"; sync; prefault "$CKPT_BYTES"
  cn+=("$(timeit cp "$RAW_CKPT" "$LOCAL")") || die "native cp"
  rm -f "$LOCAL"
  mfs_mount "$DATA" "$MNT"
  sync; prefault $(( CKPT_BYTES * 3 ))
  cm1+=("$(timeit cp "$MNT/embeddings/checkpoint" "$LOCAL")") || die "cp checkpoint"
  if (( i == 1 )); then cmp "$RAW_CKPT" "$LOCAL" || die "the mount's checkpoint differs from the CLI's"; fi
  rm -f "$LOCAL"; sync; prefault "$CKPT_BYTES"
  cm2+=("$(timeit cp "$MNT/embeddings/checkpoint" "$LOCAL")") || die "cp checkpoint (second)"
  rm -f "$LOCAL"
  mfs_umount read
done
record cp_native "${cn[@]}"
record cp_mnt_first "${cm1[@]}"
record cp_mnt_second "${cm2[@]}"

# ---------------------------------------------------------------- 4. restore
# Into a fresh empty store per rep: the group configuration first (untimed, as a restore would), then
# `cp LOCAL_CHECKPOINT MNT2/embeddings/checkpoint`, timed up to and including close (the daemon
# validates the staged checkpoint and loads it into a new RocksDB generation at close).
log "restore: cp checkpoint into a fresh empty store's mount ..."
rr=()
for i in $(seq "$REPS"); do
  rm -rf "$DATA2"; mkdir -p "$DATA2"
  mfs_mount "$DATA2" "$MNT2"
  printf '%s\n' "$GROUPS_TEXT" >"$MNT2/embeddings/groups" || die "restore: write groups"
  sync; prefault $(( CKPT_BYTES * 2 ))
  rr+=("$(timeit cp "$RAW_CKPT" "$MNT2/embeddings/checkpoint")") || die "restore cp"
  mfs_umount restore
done
record restore "${rr[@]}"
# Check the last restore, untimed: same key count, and the same checkpoint bytes.
STATS2=$(mfs_cli "$DATA2" stats) || die "stats (restored)"
[[ "$(awk '$1=="keys"{print $2}' <<<"$STATS2")" == "$KEYS" ]] || die "restored store: $STATS2"
mfs_cli "$DATA2" checkpoint "$WORK/restored.ckpt" || die "checkpoint (restored)"
cmp "$RAW_CKPT" "$WORK/restored.ckpt" || die "the restored store's checkpoint differs"
rm -f "$WORK/restored.ckpt"

# ---------------------------------------------------------------- summary
ge() { awk -v a="$1" -v b="$2" 'BEGIN{exit !(a+0 >= b+0)}'; }
ALL_MET=1
# row LABEL REFERENCE MODELFS RATIO TARGET MIN   (MIN empty: info row; else met when MODELFS >= MIN)
row() {
  local met="-"
  if [[ -n "$6" ]]; then
    if ge "$3" "$6"; then met=met; else met="NOT MET"; ALL_MET=0; fi
  fi
  printf '| %-48s | %13s | %13s | %6s | %-24s | %-7s |\n' "$1" "$2" "$3" "$4" "$5" "$met"
}
ratio() { awk -v m="$1" -v r="$2" 'BEGIN{ if (r+0 > 0 && m != "-") printf "%.2f", m/r; else print "-" }'; }
pair() {   # pair KEY BYTES RECORDS -> sets RPS MBS
  RPS=$(rate "$3" "${R[$1]}"); MBS=$(mbps "$2" "${R[$1]}")
}
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }

FILL_RATE=$(rate "$KEYS" "$T_FILL")
L_CREATE=$(rate "$SPLIT" "$T_LC"); L_EXIST=$(rate "$SPLIT" "$T_LE")
A_FRESH=$(apply_rate "$T_LCA" "$T_LC"); A_EXIST=$(apply_rate "$T_LEA" "$T_LE")
pair raw_dump "$S_DUMP" "$KEYS"; RAW_D_RPS=$RPS; RAW_D_MBS=$MBS
pair raw_ckpt "$S_CKPT" "$KEYS"; RAW_C_RPS=$RPS; RAW_C_MBS=$MBS

echo
echo "== modelfs embeddings benchmark summary (median of $REPS; fill and split runs once; 1 MB = 1e6 B) =="
echo "   $KEYS keys, group 0 dim $DIM adam (value $VALUE_BYTES B); dump $S_DUMP B, checkpoint $S_CKPT B;" \
     "reference = raw CLI scan (the limit) or native cp; ratio = modelfs/reference (speed, >1 = faster)"
printf '| %-48s | %13s | %13s | %6s | %-24s | %-7s |\n' measure reference modelfs ratio "SPEC target" "met?"
printf '|%s|\n' "--------------------------------------------------|---------------|---------------|--------|--------------------------|---------"
row "fill: Lookup+ApplyGradients, fresh (keys/s)" - "$FILL_RATE" - "(info)" ""
row "Lookup creating keys (keys/s, ${SPLIT})" - "$L_CREATE" - "(info)" ""
row "Lookup existing keys (keys/s, ${SPLIT})" - "$L_EXIST" - "(info)" ""
row "ApplyGradients fresh keys (keys/s, ${SPLIT})" - "$A_FRESH" - "(info)" ""
row "ApplyGradients existing keys (keys/s, ${SPLIT})" - "$A_EXIST" - "(info)" ""
row "raw scan: CLI dump (records/s)" - "$RAW_D_RPS" - "(info: the limit)" ""
row "raw scan: CLI dump (MB/s)" - "$RAW_D_MBS" - "(info: the limit)" ""
row "raw scan: CLI checkpoint (records/s)" - "$RAW_C_RPS" - "(info: the limit)" ""
row "raw scan: CLI checkpoint (MB/s)" - "$RAW_C_MBS" - "(info: the limit)" ""
pair mnt_dump_first "$S_DUMP" "$KEYS"
row "mount: cat dump, end to end (records/s)" "$RAW_D_RPS" "$RPS" "$(ratio "$RPS" "$RAW_D_RPS")" ">= 3,000,000 (SPEC 4)" 3000000
row "mount: cat dump, end to end (MB/s)" "$RAW_D_MBS" "$MBS" "$(ratio "$MBS" "$RAW_D_MBS")" ">= 500 (issue)" 500
pair mnt_dump_gen "$S_DUMP" "$KEYS"
row "  of which generation, stat (records/s)" "$RAW_D_RPS" "$RPS" "$(ratio "$RPS" "$RAW_D_RPS")" "(info)" ""
pair mnt_dump_read "$S_DUMP" "$KEYS"
row "  of which read, cat (MB/s)" - "$MBS" - "(info)" ""
pair mnt_ckpt_first "$S_CKPT" "$KEYS"
row "mount: cat checkpoint, end to end (records/s)" "$RAW_C_RPS" "$RPS" "$(ratio "$RPS" "$RAW_C_RPS")" ">= 3,000,000 (SPEC 4)" 3000000
row "mount: cat checkpoint, end to end (MB/s)" "$RAW_C_MBS" "$MBS" "$(ratio "$MBS" "$RAW_C_MBS")" ">= 500 (issue)" 500
pair mnt_ckpt_gen "$S_CKPT" "$KEYS"
row "  of which generation, stat (records/s)" "$RAW_C_RPS" "$RPS" "$(ratio "$RPS" "$RAW_C_RPS")" "(info)" ""
pair mnt_ckpt_read "$S_CKPT" "$KEYS"
row "  of which read, cat (MB/s)" - "$MBS" - "(info)" ""
pair mnt_dump_second "$S_DUMP" "$KEYS"
row "mount: cat dump, second (MB/s)" - "$MBS" - "(info)" ""
pair mnt_ckpt_second "$S_CKPT" "$KEYS"
row "mount: cat checkpoint, second (MB/s)" - "$MBS" - "(info)" ""
pair cp_native "$S_CKPT" "$KEYS"; CPN=$MBS
pair cp_mnt_first "$S_CKPT" "$KEYS"
row "cp checkpoint to local, first vs native (MB/s)" "$CPN" "$MBS" "$(ratio "$MBS" "$CPN")" "(info)" ""
pair cp_mnt_second "$S_CKPT" "$KEYS"
row "cp checkpoint to local, second vs native (MB/s)" "$CPN" "$MBS" "$(ratio "$MBS" "$CPN")" "(info)" ""
pair restore "$S_CKPT" "$KEYS"
row "restore: cp checkpoint into mount (records/s)" - "$RPS" - "(info)" ""
row "restore: cp checkpoint into mount (MB/s)" - "$MBS" - "(info)" ""
for ph in read restore; do
  kb=${HWM_PHASE[$ph]:-0}
  if (( kb < 256 * 1024 )); then met=met; else met="NOT MET"; ALL_MET=0; fi
  printf '| %-48s | %13s | %13s | %6s | %-24s | %-7s |\n' "daemon VmHWM, $ph (MiB)" - "$(mib "$kb")" - \
    "< 256 MiB (SPEC 1, 4)" "$met"
done
echo
echo "median times (s): fill $(fmt "$T_FILL"); raw dump $(fmt "${R[raw_dump]}"), checkpoint $(fmt "${R[raw_ckpt]}");" \
     "mount dump $(fmt "${R[mnt_dump_first]}")/$(fmt "${R[mnt_dump_second]}"), checkpoint" \
     "$(fmt "${R[mnt_ckpt_first]}")/$(fmt "${R[mnt_ckpt_second]}") (first/second); cp native $(fmt "${R[cp_native]}")," \
     "mount $(fmt "${R[cp_mnt_first]}")/$(fmt "${R[cp_mnt_second]}"); restore $(fmt "${R[restore]}")"
if (( ALL_MET )); then echo "All SPEC targets met."; else echo "Some SPEC targets NOT MET (see table)."; fi
