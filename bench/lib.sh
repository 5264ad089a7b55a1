# Shared by the benchmarks (sourced): logging, the cleanup that unmounts what a run mounted and
# stops only the daemons it started, and timing helpers. The sourcing script sets ROOT, T_START,
# KEEP and BENCH_LOGS (log files under $WORK shown when a run fails) before sourcing, and WORK,
# MOUNTS, PIDS as it goes.
# shellcheck shell=bash

log() { printf '[%6.1fs] %s\n' "$(awk -v a="$T_START" -v b="$EPOCHREALTIME" 'BEGIN{print b-a}')" "$*"; }
die() { echo "bench: FAILED: $*" >&2; exit 1; }

# ---------------------------------------------------------------- cleanup
WORK=""
MOUNTS=()   # every mountpoint this run mounted
PIDS=()     # every daemon this run started
MFS=$ROOT/build/bin/modelfs
cleanup() {
  local rc=$?
  set +e
  for m in "${MOUNTS[@]}"; do
    if mountpoint -q "$m" 2>/dev/null; then
      echo "bench: cleanup: unmounting $m" >&2
      fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null
    fi
  done
  for p in "${PIDS[@]}"; do
    if kill -0 "$p" 2>/dev/null; then
      for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$p" 2>/dev/null; then
        echo "bench: cleanup: killing daemon $p" >&2
        kill "$p" 2>/dev/null; sleep 1; kill -9 "$p" 2>/dev/null
      fi
    fi
  done
  if [[ -n "$WORK" && -d "$WORK" ]]; then
    if (( rc != 0 )); then
      for f in "$WORK/cmd.err" "${BENCH_LOGS[@]/#/$WORK/}"; do
        [[ -s "$f" ]] && { echo "bench: --- last lines of $f" >&2; tail -5 "$f" >&2; }
      done
    fi
    if [[ "$KEEP" == 1 ]]; then
      echo "bench: work folder kept: $WORK" >&2
    else
      rm -rf "$WORK"
    fi
  fi
  printf 'bench: total runtime %.1f s (exit %d)\n' \
    "$(awk -v a="$T_START" -v b="$EPOCHREALTIME" 'BEGIN{print b-a}')" "$rc"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers
# Runs "$@" with stdout discarded; prints the elapsed wall time in seconds. Fails on a failing command.
timeit() {
  local t0 t1
  t0=$EPOCHREALTIME
  if ! "$@" >/dev/null 2>"$WORK/cmd.err"; then
    echo "bench: command failed: $*" >&2
    head -5 "$WORK/cmd.err" >&2
    return 1
  fi
  t1=$EPOCHREALTIME
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.6f", b-a}'
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# ---------------------------------------------------------------- CPU used by others
cpu_s() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat" 2>/dev/null || echo 0; }   # user+system CPU s

# This machine is shared (and has 2 cores): another user's build during a timed step decides the
# figures. A mark records the CPU time the whole machine has been busy (/proc/stat: user, nice,
# system, irq, softirq, steal) and the CPU time of this run (the shell and its waited children; the
# modelfs daemon running as $MFS_PID, plus DAEMON_CPU for those already unmounted, which the script
# adds up); the difference between two marks is what others used (other users' processes, and
# kernel threads such as writeback, part of which is this run's I/O).
DAEMON_CPU=0      # CPU seconds of the daemons already unmounted
declare -A MK_BUSY MK_OURS MK_T
mark() {
  times >"$WORK/times.txt"
  MK_OURS[$1]=$(awk -v d="$DAEMON_CPU" -v l="$(cpu_s "${MFS_PID:-self-none}")" '
    function s(x,  m) { m = x; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", x); sub(/s$/, "", x); return 60*m + x }
    { t += s($1) + s($2) } END { printf "%.2f", t + d + l }' "$WORK/times.txt")
  MK_BUSY[$1]=$(awk -v hz="$(getconf CLK_TCK)" '/^cpu /{printf "%.2f", ($2+$3+$4+$7+$8+$9)/hz}' /proc/stat)
  MK_T[$1]=$EPOCHREALTIME
}
others() {   # others FROM TO: "X s of CPU used by others over Y s (Z% of the machine)"
  awk -v b0="${MK_BUSY[$1]}" -v b1="${MK_BUSY[$2]}" -v o0="${MK_OURS[$1]}" -v o1="${MK_OURS[$2]}" \
      -v t0="${MK_T[$1]}" -v t1="${MK_T[$2]}" -v n="$(nproc)" 'BEGIN{
    x = (b1 - b0) - (o1 - o0); if (x < 0) x = 0
    printf "%.1f s of CPU used by others over %.1f s (%.0f%% of the %d cores); this run %.1f s", x, t1 - t0, 100 * x / ((t1 - t0) * n), n, o1 - o0 }'
}
