#!/usr/bin/env bash
# bench/hdf5/run.sh -- reductions and a map over a 1 GiB HDF5 dataset:
# sluice against h5py + numpy (chunk by chunk, as a Python user writes it),
# and against the floors (reading the file, copying it).
#
# usage: bench/hdf5/run.sh BUILD_DIR [ROWS]     (ROWS default 16384)
#
# Input, made once by h5py_ref.py and cached in bench/data/ (git-ignored):
# dataset "x", ROWS x 8192 float64 (1 GiB for 16384 rows), chunks 256 x 8192
# (16 MiB), a smooth field plus noise; and a shuffle + gzip-1 copy. Tasks:
#
#   reduce       sum, mean, min, max and a 100-bin histogram over [min, max]
#                sluice: pipelines/h5_hist.pipe (two passes in one command)
#                h5py:   h5py_ref.py reduce (two loops over the chunks)
#   reduce-gzip  the same on the gzip copy
#   reduce-gzip32  the same on a shuffle + gzip-1 file of the same field
#                with values at float32 precision (stored as float64), as
#                single-precision instruments give: it compresses to about
#                a third, where the noisy float64 copy barely compresses
#   reduce-contig  the same on a contiguous copy of the plain file (what
#                h5py writes without chunks=): no goal in the issue; h5py
#                reads it 256 rows at a time
#   map          y = 2.5*x - 1 into a new file (no compression)
#                sluice: pipelines/h5_map.pipe;  h5py: h5py_ref.py map
#
# and floors, which are not peers: `cat FILE >/dev/null` (page-cache read),
# `dd if=FILE of=OUT bs=16M` (read + write() of the same bytes: the map's
# floor), `cp FILE` (the same through copy_file_range, which some kernels
# serve without the user-space write path), and sluice reading the
# dataset alone (h5.read ! discard). Answers are checked: the reductions
# must agree (min, max, histogram exact; sum, mean within 1e-9) and the maps
# bit for bit. Tools take turns; the median of RUNS is reported.
# Goals (issue 5): reduce <= 0.45 s (>= 5x h5py, within 3x of the read
# floor); reduce-gzip <= 2.3 s; map <= 0.45 s.
#
# Report: markdown on stdout and in bench/results/hdf5-<date>-<time>.md.
# Knobs: RUNS (3), THREADS (2), ONLY ("speed memory"), PY (/usr/bin/python3
# with h5py), QUIET (0.25), QUIET_WAIT (120).
set -euo pipefail

BUILD=${1:?usage: bench/hdf5/run.sh BUILD_DIR [ROWS]}
ROWS=${2:-16384}
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}
ONLY=${ONLY:-"speed memory"}
PY=${PY:-/usr/bin/python3}
QUIET=${QUIET:-0.25}
QUIET_WAIT=${QUIET_WAIT:-120}

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=$(cd "$BUILD" && pwd)
SLUICE=$BUILD/cli/sluice
[ -x "$SLUICE" ] || { echo "run.sh: no $SLUICE; build first" >&2; exit 2; }
"$PY" -c 'import h5py, numpy' 2>/dev/null || { echo "run.sh: $PY lacks h5py (apt-get install python3-h5py)" >&2; exit 2; }
command -v jq >/dev/null || { echo "run.sh: jq not found" >&2; exit 2; }

DATA=$ROOT/bench/data
mkdir -p "$DATA"
PLAIN=$DATA/h5-$ROWS.h5
GZIP=$DATA/h5-$ROWS-gzip.h5
GZIP32=$DATA/h5-$ROWS-gzip32.h5
CONTIG=$DATA/h5-$ROWS-contig.h5
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench-hdf5.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
RESULTS=$HERE/../results
mkdir -p "$RESULTS"
REPORT=$RESULTS/hdf5-$(date +%Y%m%d-%H%M%S).md
: >"$REPORT"

# out note want calc median fmt_bytes quiet others_share col cpu_s best spread
. "$HERE/../lib.sh"

for f in "$PLAIN" "$GZIP" "$GZIP32" "$CONTIG"; do
  if [ ! -e "$f" ]; then
    note "generating $f (once)"
    "$PY" "$HERE/h5py_ref.py" make "$f.tmp" "$ROWS" 8192 256 \
      $([ "$f" = "$GZIP" ] && echo gzip) $([ "$f" = "$GZIP32" ] && echo gzip32) \
      $([ "$f" = "$CONTIG" ] && echo contig)
    mv "$f.tmp" "$f"
  fi
done
cat "$PLAIN" "$GZIP" "$GZIP32" "$CONTIG" >/dev/null # page cache warm

task_file() {
  case $1 in
    reduce-gzip) echo "$GZIP" ;;
    reduce-gzip32) echo "$GZIP32" ;;
    reduce-contig) echo "$CONTIG" ;;
    *) echo "$PLAIN" ;;
  esac
}
# run_TOOL TASK OUT: one run writing its answer to OUT.
run_sluice() {
  case $1 in
    map) "$SLUICE" run "$ROOT/pipelines/h5_map.pipe" in="$PLAIN" dataset=x out="$2" \
           out_dataset=y expr='2.5*x - 1' --threads "$THREADS" --quiet ;;
    *) "$SLUICE" run "$ROOT/pipelines/h5_hist.pipe" in="$(task_file "$1")" dataset=x \
         out="$2" --threads "$THREADS" --quiet ;;
  esac
}
run_h5py() {
  case $1 in
    map) "$PY" "$HERE/h5py_ref.py" map "$PLAIN" "$2" ;;
    *) "$PY" "$HERE/h5py_ref.py" reduce "$(task_file "$1")" "$2" ;;
  esac
}
run_read() { # floor: sluice reading and decoding the dataset, nothing else
  printf 'h5.read file=${in} dataset=x ! discard\n' >"$TMP/read.pipe"
  "$SLUICE" run "$TMP/read.pipe" in="$(task_file "$1")" --threads "$THREADS" --quiet
}
run_cat() { cat "$(task_file "$1")" >/dev/null; }
run_cp() { cp "$(task_file "$1")" "$2"; }
# floor of the map: writing 1 GiB with write(), as every HDF5 writer does
# (cp uses copy_file_range, which this VM's kernel serves far more cheaply)
run_dd() { dd if="$(task_file "$1")" of="$2" bs=16M status=none; }
export -f run_sluice run_h5py run_read run_cat run_cp run_dd task_file
export SLUICE ROOT PLAIN GZIP GZIP32 CONTIG THREADS PY HERE TMP

# timed TOOL TASK RUN: appends "wall user sys maxrss_kb others" to
# $TMP/TOOL-TASK.times; keeps the answer of run 1 as $TMP/TOOL-TASK.out.
timed() {
  local tool=$1 task=$2 r=$3 o="$TMP/$1-$2.run" j0 j1
  rm -f "$o"
  sync # the previous run's written file must not be flushed during this one
  quiet
  j0=$(cpu_jiffies)
  if ! /usr/bin/time -f '%e %U %S %M' -o "$TMP/time" bash -c "run_$tool \"\$1\" \"\$2\"" _ "$task" "$o" \
      >"$TMP/log" 2>&1; then
    cat "$TMP/log" >&2
    echo "run.sh: $tool $task failed" >&2
    exit 1
  fi
  j1=$(cpu_jiffies)
  read -r wall user sys rss <"$TMP/time"
  echo "$wall $user $sys $rss $(others_share "$j0" "$j1" "$user" "$sys")" >>"$TMP/$tool-$task.times"
  note "  $tool $task run $r: ${wall} s"
  if [ "$r" = 1 ] && [ -e "$o" ]; then mv "$o" "$TMP/$tool-$task.out"; else rm -f "$o"; fi
}

out "# sluice HDF5 benchmarks: reductions and a map"
out ""
out "- date: $(date '+%Y-%m-%d %H:%M %Z')"
out "- machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(free -g | awk '/^Mem/ {print $2}') GiB RAM"
out "- sluice: $("$SLUICE" --version), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), --threads $THREADS"
out "- peers: h5py $("$PY" -c 'import h5py; print(h5py.__version__)') (HDF5 $("$PY" -c 'import h5py; print(h5py.version.hdf5_version)')), numpy $("$PY" -c 'import numpy; print(numpy.__version__)')"
out "- input: $ROWS x 8192 float64, chunks 256 x 8192; plain $(fmt_bytes "$(stat -c %s "$PLAIN")"), shuffle+gzip-1 $(fmt_bytes "$(stat -c %s "$GZIP")"), float32-precision values shuffle+gzip-1 $(fmt_bytes "$(stat -c %s "$GZIP32")"), contiguous (not chunked) $(fmt_bytes "$(stat -c %s "$CONTIG")"); page cache warm"
out "- runs: $RUNS, tools taking turns, median (spread = min..max)"
out ""

TASKS="reduce reduce-gzip reduce-gzip32 reduce-contig map"
if want speed; then
  for ((r = 1; r <= RUNS; r++)); do
    for task in $TASKS; do
      # peers, then the floors that apply: reading for reductions, writing for the map
      if [ "$task" = map ]; then tools="sluice h5py cp dd"; else tools="sluice h5py read cat"; fi
      for tool in $tools; do
        timed "$tool" "$task" "$r"
      done
    done
  done
  for task in reduce reduce-gzip reduce-gzip32 reduce-contig; do
    "$PY" "$HERE/h5py_ref.py" check "$TMP/sluice-$task.out" "$TMP/h5py-$task.out" >"$TMP/check-$task" ||
      { cat "$TMP/check-$task" >&2; echo "run.sh: sluice and h5py disagree on $task" >&2; exit 1; }
  done
  "$PY" "$HERE/h5py_ref.py" checkmap "$TMP/sluice-map.out" "$TMP/h5py-map.out" >"$TMP/check-map" ||
    { cat "$TMP/check-map" >&2; echo "run.sh: the maps disagree" >&2; exit 1; }

  out "| task | sluice | h5py + numpy | h5py / sluice | floor | sluice / floor | goal |"
  out "|---|---|---|---|---|---|---|"
  for task in $TASKS; do
    s=$(col "sluice-$task" 1) h=$(col "h5py-$task" 1)
    if [ "$task" = map ]; then
      f=$(col "dd-$task" 1) fname="dd (cp $(printf '%.2f' "$(col "cp-$task" 1)") s)"
      goal=0.45
    else
      f=$(col "cat-$task" 1) fname="cat"
      goal=$([ "$task" = reduce ] && echo 0.45 || echo 2.3)
    fi
    met=$(awk -v s="$s" -v g="$goal" 'BEGIN { print (s <= g) ? "met" : "**missed**" }')
    goalcell="≤ $goal s: $met"
    [ "$task" = reduce-contig ] && goalcell="none (not in the issue)"
    out "| $task | $(printf '%.2f' "$s") s ($(spread "sluice-$task"), others $(calc "100 * $(col "sluice-$task" 5)" | xargs printf '%.0f')%) | $(printf '%.2f' "$h") s | $(calc "$h / $s" | xargs printf '%.1f')× | $fname $(printf '%.2f' "$f") s | $(calc "$s / $f" | xargs printf '%.1f')× | $goalcell |"
  done
  out ""
  out "sluice reading alone (h5.read ! discard): $(printf '%.2f' "$(col read-reduce 1)") s plain, $(printf '%.2f' "$(col read-reduce-gzip 1)") s gzip, $(printf '%.2f' "$(col read-reduce-gzip32 1)") s gzip32 (decompression on $THREADS threads), $(printf '%.2f' "$(col read-reduce-contig 1)") s contiguous."
  out "CPU seconds (user+sys, median): sluice $(printf '%.2f' "$(cpu_s sluice-reduce)") / $(printf '%.2f' "$(cpu_s sluice-reduce-gzip)") / $(printf '%.2f' "$(cpu_s sluice-reduce-gzip32)") / $(printf '%.2f' "$(cpu_s sluice-reduce-contig)") / $(printf '%.2f' "$(cpu_s sluice-map)"), h5py $(printf '%.2f' "$(cpu_s h5py-reduce)") / $(printf '%.2f' "$(cpu_s h5py-reduce-gzip)") / $(printf '%.2f' "$(cpu_s h5py-reduce-gzip32)") / $(printf '%.2f' "$(cpu_s h5py-reduce-contig)") / $(printf '%.2f' "$(cpu_s h5py-map)") (reduce / reduce-gzip / reduce-gzip32 / reduce-contig / map)."
  out ""
  out "Checks: $(cat "$TMP/check-reduce") (plain); $(cat "$TMP/check-reduce-gzip") (gzip); $(cat "$TMP/check-reduce-gzip32") (gzip32); $(cat "$TMP/check-reduce-contig") (contiguous); $(cat "$TMP/check-map")."
  out ""
  out "Commands:"
  out '```'
  out "sluice run pipelines/h5_hist.pipe in=FILE dataset=x out=OUT.json --threads $THREADS"
  out "sluice run pipelines/h5_map.pipe in=FILE dataset=x out=OUT.h5 out_dataset=y expr='2.5*x - 1' --threads $THREADS"
  out "/usr/bin/python3 bench/hdf5/h5py_ref.py reduce|map FILE OUT"
  out '```'
  out ""
fi

if want memory; then
  # Peak memory must not depend on the dataset's size: ROWS/4 rows vs ROWS.
  SMALL=$DATA/h5-$((ROWS / 4)).h5
  [ -e "$SMALL" ] || { "$PY" "$HERE/h5py_ref.py" make "$SMALL.tmp" $((ROWS / 4)) 8192 256; mv "$SMALL.tmp" "$SMALL"; }
  # The peak of RUNS runs each: how many chunks are in flight at the peak
  # varies from run to run (about 16 MiB a chunk), the bound does not.
  for f in "$SMALL" "$PLAIN"; do
    : >"$TMP/rss1"
    for ((r = 1; r <= RUNS; r++)); do
      "$SLUICE" run "$ROOT/pipelines/h5_stats.pipe" in="$f" dataset=x out="$TMP/m.json" \
        --threads "$THREADS" --quiet --stats-json "$TMP/m.stats"
      jq .peak_rss_bytes "$TMP/m.stats" >>"$TMP/rss1"
    done
    sort -n "$TMP/rss1" | tail -1 >>"$TMP/rss"
  done
  a=$(sed -n 1p "$TMP/rss") b=$(sed -n 2p "$TMP/rss")
  ratio=$(calc "$b / $a")
  met=$(awk -v r="$ratio" 'BEGIN { print (r <= 1.2 && r >= 1 / 1.2) ? "met" : "**missed**" }')
  out "Peak memory (h5_stats.pipe, --stats-json, highest of $RUNS runs): $(fmt_bytes "$a") for $((ROWS / 4)) rows, $(fmt_bytes "$b") for $ROWS rows: ratio $(printf '%.2f' "$ratio") (within 20%: $met)."
  out ""
fi
out "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
note "report written to $REPORT"
