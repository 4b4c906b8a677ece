#!/usr/bin/env bash
# bench/engine/run.sh -- sluice's engine benchmarks, side by side with Python.
#
# usage: bench/engine/run.sh [BUILD_DIR]        (default ./build, a Release build)
#
# Measures, each repeated and reported as the median:
#   1. engine overhead: items/s of tiny items through 0 (ceiling), 1, 2, 4, 8
#      identity stages, against Python's queue.Queue and ThreadPoolExecutor
#      doing the same hand-offs (py_chain.py);
#   2. zero copy: 16 items of 256 MiB through 4 identity stages vs 1, and the
#      machine's memory bandwidth (membw) as the physical limit;
#   3. bounded memory: peak RSS of `gen ! identity sleep_us=2000 ! discard`
#      with 200 and 2000 items of 1 MiB;
#   4. io ordering: files.write and files.read with workers=1, and workers=4
#      with order=source and order=any, against Python (py_io.py).
#
# Prints markdown tables as it goes and writes the same report to
# bench/results/engine-<date>-<time>.md (ignored by git; the figures worth
# keeping go to docs/benchmarks.md by hand). Progress goes to stderr.
#
# Environment knobs: RUNS (timed runs per figure, default 5; zero copy takes
# twice as many, at least 5), TARGET_S (aim for one engine-overhead run,
# default 1.5), THREADS (--threads, default 2), PY (default /usr/bin/python3),
# ONLY (e.g. "1 3": run only those parts), PROFILE=1 (also perf-profile the
# 4-stage chain and print the top symbols), IO_DIR (where part 4 writes its
# files, default a temporary folder under $TMPDIR or /tmp).
set -euo pipefail
export LC_ALL=C # decimal points in awk, printf and $EPOCHREALTIME

BUILD=${1:-./build}
RUNS=${RUNS:-5}
TARGET_S=${TARGET_S:-1.5}
THREADS=${THREADS:-2}
PY=${PY:-/usr/bin/python3}
ONLY=${ONLY:-"1 2 3 4"}
PROFILE=${PROFILE:-0}

HERE=$(cd "$(dirname "$0")" && pwd)
SLUICE=$BUILD/cli/sluice
[ -x "$SLUICE" ] || { echo "run.sh: no $SLUICE; build first:" >&2
  echo "  cmake -S . -B $BUILD -DCMAKE_BUILD_TYPE=Release && cmake --build $BUILD -j" >&2; exit 2; }
for tool in hyperfine jq "$PY"; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool not found" >&2; exit 2; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench.XXXXXX")
IOTMP=$(mktemp -d "${IO_DIR:-$TMP}/sluice-bench-io.XXXXXX") # part 4's files
trap 'rm -rf "$IOTMP" "$TMP"' EXIT
RESULTS=$HERE/../results
mkdir -p "$RESULTS"
REPORT=$RESULTS/engine-$(date +%Y%m%d-%H%M%S).md
: >"$REPORT"

# ---------------------------------------------------------------- helpers

out() { printf '%s\n' "$*" | tee -a "$REPORT"; }
note() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
want() { [[ " $ONLY " == *" $1 "* ]]; }

# fmt_rate X: items/s as "1.23 M" / "92.5 k" / "850".
fmt_rate() {
  awk -v x="$1" 'BEGIN { if (x >= 1e6) printf "%.2f M", x/1e6;
    else if (x >= 1e3) printf "%.1f k", x/1e3; else printf "%.0f", x }'
}
fmt_bytes() {
  awk -v x="$1" 'BEGIN { if (x >= 2^30) printf "%.2f GiB", x/2^30;
    else if (x >= 2^20) printf "%.1f MiB", x/2^20; else printf "%.0f KiB", x/1024 }'
}
# median: the median of the numbers on stdin, one a line.
median() {
  sort -g | awk 'NF { a[++n] = $1 } END {
    if (n == 0) print "nan"; else if (n % 2) print a[(n + 1) / 2];
    else print (a[n / 2] + a[n / 2 + 1]) / 2 }'
}
# calc EXPR: floating-point arithmetic with awk.
calc() { awk "BEGIN { printf \"%.6g\", $1 }"; }
# round2 N: N rounded up to two significant digits (counts that read well).
round2() {
  awk -v n="$1" 'BEGIN { if (n < 100) { print int(n + 0.999); exit }
    e = 10 ^ (length(sprintf("%d", n)) - 2); print int(n / e + 0.999) * e }'
}

# timeit NAME [hyperfine options...] -- CMD: runs CMD $RUNS times (no shell:
# CMD is one string split into words) and sets MED/MIN/MAX in seconds.
timeit() {
  local name=$1; shift
  local opts=()
  while [ "$1" != "--" ]; do opts+=("$1"); shift; done; shift
  # hyperfine's advice (warm-up, outliers) goes to a log; errors are shown.
  if ! hyperfine -N --style none --runs "$RUNS" "${opts[@]}" \
      --export-json "$TMP/$name.json" "$1" >/dev/null 2>"$TMP/hyperfine.log"; then
    cat "$TMP/hyperfine.log" >&2
    echo "run.sh: failed: $1" >&2
    exit 1
  fi
  MED=$(jq '.results[0].median' "$TMP/$name.json")
  MIN=$(jq '.results[0].min' "$TMP/$name.json")
  MAX=$(jq '.results[0].max' "$TMP/$name.json")
  CPU=$(jq '.results[0].user + .results[0].system' "$TMP/$name.json") # mean s
}

# chain K COUNT SIZE: writes the pipeline `gen ! identity x K ! discard` to a
# file and prints its path (a file rather than stdin, so hyperfine needs no
# shell; `sluice run -` reads the very same text).
chain() {
  local k=$1 count=$2 size=$3 f="$TMP/chain-$1-$2-$3.pipe" p
  p="gen count=$count size=$size"
  for ((i = 0; i < k; i++)); do p+=" ! identity"; done
  printf '%s ! discard\n' "$p" >"$f"
  printf '%s' "$f"
}

# sluice_wall PIPEFILE: one run, prints its wall_s from --stats-json.
sluice_wall() {
  "$SLUICE" run "$1" --threads "$THREADS" --quiet --stats-json "$TMP/pilot.json"
  jq '.wall_s' "$TMP/pilot.json"
}

# py_secs ARGS...: one py_chain.py run, prints its own seconds figure.
py_secs() {
  "$PY" "$HERE/py_chain.py" "$@" | sed -n 's/.*seconds=\([0-9.]*\).*/\1/p'
}

# calibrate FN PILOT: the item count that makes a run last about $TARGET_S.
# FN COUNT runs once and prints its seconds; the pilot grows tenfold until a
# run lasts long enough (0.25 s) to extrapolate from.
calibrate() {
  local fn=$1 p=$2 s n
  while :; do
    s=$("$fn" "$p")
    if awk -v s="$s" 'BEGIN { exit !(s < 0.25) }' && [ "$p" -lt 100000000 ]; then
      p=$((p * 10))
    else
      break
    fi
  done
  n=$(awk -v p="$p" -v s="$s" -v t="$TARGET_S" 'BEGIN { printf "%d", p * t / s }')
  round2 "$((n > p ? n : p))"
}
# The pilots for calibrate: K and M (Python mode) are set by the caller.
pilot_sluice() { sluice_wall "$(chain "$K" "$1" 16)"; }
pilot_py() { py_secs "$M" --stages "$K" --count "$1"; }

# ---------------------------------------------------------------- header

out "# sluice engine benchmarks"
out ""
out "- date: $(date '+%Y-%m-%d %H:%M %Z')"
out "- machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(free -g | awk '/^Mem/ {print $2}') GiB RAM, $(uname -sr)"
out "- sluice: $("$SLUICE" --version 2>&1 | head -1), build $BUILD ($(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$BUILD/CMakeCache.txt" 2>/dev/null || echo '?')), commit $(git -C "$HERE" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$HERE" diff --quiet HEAD 2>/dev/null || echo ' + local changes')"
out "- python: $("$PY" --version 2>&1); $(hyperfine --version)"
out "- OpenMP environment: $(env | grep -E '^(OMP|GOMP)_' | tr '\n' ' ' || true)(none means libgomp's defaults)"
out "- runs per figure: $RUNS (median reported; spread = min..max), --threads $THREADS"
out "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine makes figures noisy)"
out ""

# ---------------------------------------------------------------- 1. overhead

PY_MODES=(queue queue-batch pool-map pool-chain)
declare -A PY_PILOT=([queue]=20000 [queue-batch]=200000 [pool-map]=2000 [pool-chain]=5000)

if want 1; then
  note "1. engine overhead"
  out "## 1. Engine overhead: tiny items (16 B) through K identity stages"
  out ""
  out "items/s (median of $RUNS); in brackets sluice's rate divided by Python's."
  out "K = 0 is the ceiling: \`gen ! discard\`, source and sink only."
  out ""
  out "µs/stage: what each identity stage adds per item, (1/rate(K) - 1/rate(0)) / K."
  out "CPU µs/item: user + system CPU time per item (mean over the runs); less sensitive to"
  out "other load than the wall time, and the wall time cannot beat it divided by the cores."
  out ""
  out "| K | sluice | % of ceiling | µs/stage | spread | CPU µs/item | bottleneck | queue.Queue | Queue, lists of 64 | executor.map | chained submits |"
  out "|---|---|---|---|---|---|---|---|---|---|---|"
  declare -A RATE CNT
  for k in 0 1 2 4 8; do
    note "  sluice K=$k"
    K=$k
    n=$(calibrate pilot_sluice 100000)
    f=$(chain $k "$n" 16)
    timeit "sluice-$k" -- "$SLUICE run $f --threads $THREADS --quiet --stats-json $TMP/s$k.json"
    RATE[s$k]=$(calc "$n / $MED")
    lo=$(calc "$n / $MAX"); hi=$(calc "$n / $MIN")
    bott=$(jq -r '.bottleneck' "$TMP/s$k.json")
    per="-"
    [ "$k" -gt 0 ] && per=$(calc "1e6 * (1 / ${RATE[s$k]} - 1 / ${RATE[s0]}) / $k" | xargs printf '%.2f')
    row="| $k | **$(fmt_rate "${RATE[s$k]}")** | $(calc "100 * ${RATE[s$k]} / ${RATE[s0]}" | xargs printf '%.0f%%') | $per | $(fmt_rate "$lo")..$(fmt_rate "$hi") | $(calc "1e6 * $CPU / $n" | xargs printf '%.2f') | $bott"
    for m in "${PY_MODES[@]}"; do
      note "  python $m K=$k"
      M=$m
      pn=$(calibrate pilot_py "${PY_PILOT[$m]}")
      timeit "py-$m-$k" -- "$PY $HERE/py_chain.py $m --stages $k --count $pn"
      r=$(calc "$pn / $MED")
      row+=" | $(fmt_rate "$r") ($(calc "${RATE[s$k]} / $r" | xargs printf '%.1f')×)"
    done
    out "$row |"
    CNT[$k]=$n
  done
  out ""
  r4=${RATE[s4]}
  if awk -v r="$r4" 'BEGIN { exit !(r >= 1e6) }'; then verdict="met"; else verdict="**missed**"; fi
  out "Goal ≥ 1 M items/s through 4 stages on this machine: $verdict ($(fmt_rate "$r4") items/s)."
  out ""
  # libgomp's threads spin a while before they sleep (OMP_WAIT_POLICY unset:
  # GOMP_SPINCOUNT); on 2 cores shared by 3+ busy threads that spin can take
  # the core from the thread it waits for. Same runs, interleaved, with the
  # policy passive, unless the caller chose a policy already.
  if [ -z "${OMP_WAIT_POLICY:-}" ]; then
    note "  OMP_WAIT_POLICY default vs passive"
    out "The same chains with \`OMP_WAIT_POLICY=passive\` (libgomp threads sleep at once instead of"
    out "spinning first); $RUNS rounds, each running both one after the other; items/s of the median wall:"
    out ""
    out "| K | default | passive | passive/default |"
    out "|---|---|---|---|"
    for k in 0 2 4; do
      f=$(chain $k "${CNT[$k]}" 16)
      : >"$TMP/wp-d"; : >"$TMP/wp-p"
      for ((r = 0; r < RUNS; r++)); do
        t0=$EPOCHREALTIME
        "$SLUICE" run "$f" --threads "$THREADS" --quiet
        t1=$EPOCHREALTIME
        OMP_WAIT_POLICY=passive "$SLUICE" run "$f" --threads "$THREADS" --quiet
        t2=$EPOCHREALTIME
        printf '%s\n' "$(calc "$t1 - $t0")" >>"$TMP/wp-d"
        printf '%s\n' "$(calc "$t2 - $t1")" >>"$TMP/wp-p"
      done
      rd=$(calc "${CNT[$k]} / $(median <"$TMP/wp-d")")
      rp=$(calc "${CNT[$k]} / $(median <"$TMP/wp-p")")
      out "| $k | $(fmt_rate "$rd") | $(fmt_rate "$rp") | $(calc "$rp / $rd" | xargs printf '%.2f')× |"
    done
    out ""
  fi
  if [ "$PROFILE" = 1 ] && command -v perf >/dev/null; then
    note "  perf profile of K=4"
    f=$(chain 4 500000 16)
    perf record -q --call-graph dwarf,16384 -o "$TMP/perf.data" -- \
      "$SLUICE" run "$f" --threads "$THREADS" --quiet >/dev/null 2>&1 || true
    out "perf profile of K=4 (500 k items), top symbols by self time, then"
    out "sluice's functions by inclusive time (children included):"
    out ""
    out '```'
    perf report -i "$TMP/perf.data" --stdio --no-children --sort dso,symbol 2>/dev/null |
      grep -E '^ +[0-9.]+%' | head -20 | tee -a "$REPORT" || true # head: SIGPIPE
    out ""
    perf report -i "$TMP/perf.data" --stdio --children --sort symbol 2>/dev/null |
      grep -E '^ +[0-9.]+%.*(sl_|gen_|identity_|discard_|source_main)' | head -20 |
      tee -a "$REPORT" || true
    out '```'
    out ""
  fi
fi

# ---------------------------------------------------------------- 2. zero copy

if want 2; then
  note "2. zero copy"
  out "## 2. Zero copy: 16 items of 256 MiB (4 GiB) through identity stages"
  out ""
  zruns=$((2 * RUNS > 5 ? 2 * RUNS : 5))
  out "$zruns rounds after a warm-up round; each round runs K = 0, 1, 4 one after the other, so"
  out "changes in the machine's load hit all three alike. wall: median (spread min..max) of the"
  out "whole command. fresh: memory the run touched for the first time (minor page faults × 4 KiB,"
  out "median), i.e. new arena segments rather than reused ones."
  out ""
  out "| pipeline | wall | spread | GiB/s through the chain | fresh |"
  out "|---|---|---|---|---|"
  declare -A ZC ZF
  total=$((16 * 256 * 1024 * 1024))
  for k in 0 1 4; do ZF[$k]=$(chain $k 16 256MiB); : >"$TMP/zc-$k.wall"; : >"$TMP/zc-$k.flt"; done
  for ((r = -1; r < zruns; r++)); do
    note "  round $((r + 1)) of $zruns"
    for k in 0 1 4; do
      t0=$EPOCHREALTIME
      if [ -x /usr/bin/time ]; then
        /usr/bin/time -f %R -o "$TMP/flt" "$SLUICE" run "${ZF[$k]}" --threads "$THREADS" --quiet
      else
        "$SLUICE" run "${ZF[$k]}" --threads "$THREADS" --quiet; echo 0 >"$TMP/flt"
      fi
      t1=$EPOCHREALTIME
      [ "$r" -ge 0 ] || continue
      printf '%s\n' "$(calc "$t1 - $t0")" >>"$TMP/zc-$k.wall"
      tail -1 "$TMP/flt" >>"$TMP/zc-$k.flt"
    done
  done
  for k in 0 1 4; do
    ZC[$k]=$(median <"$TMP/zc-$k.wall")
    lo=$(sort -g "$TMP/zc-$k.wall" | head -1); hi=$(sort -g "$TMP/zc-$k.wall" | tail -1)
    fresh=$(median <"$TMP/zc-$k.flt")
    out "| gen ! $k × identity ! discard | $(printf '%.3f s' "${ZC[$k]}") | $(printf '%.3f..%.3f' "$lo" "$hi") | $(calc "$total / ${ZC[$k]} / 2^30" | xargs printf '%.2f') | $(fmt_bytes "$(calc "$fresh * 4096")") |"
  done
  diff=$(calc "100 * (${ZC[4]} - ${ZC[1]}) / ${ZC[1]}")
  paired=$(paste "$TMP/zc-4.wall" "$TMP/zc-1.wall" | awk '{ print 100 * ($1 - $2) / $2 }' | median)
  if awk -v d="$diff" 'BEGIN { exit !(d < 5) }'; then verdict="met"; else verdict="**missed**"; fi
  out ""
  out "4 identity stages vs 1: $(printf '%+.1f%%' "$diff") between the medians (claim: < 5%: $verdict);"
  out "median of the per-round differences: $(printf '%+.1f%%' "$paired")."
  out ""
  out "The same runs grouped by how much fresh memory they touched (the arena reuses a"
  out "freed segment when one is cached at the moment gen allocates, so this varies run to run):"
  out ""
  out "| fresh | runs K=1 | wall K=1 | runs K=4 | wall K=4 | K=4 vs K=1 |"
  out "|---|---|---|---|---|---|"
  for k in 1 4; do # lines: K, fresh MiB (faults x 4 KiB, to 64 MiB), wall
    paste "$TMP/zc-$k.flt" "$TMP/zc-$k.wall" | awk -v k="$k" '{ print k, int($1 / 16384 + 0.5) * 64, $2 }'
  done | awk '
    function med(s,   a, n, i, j, t) { # median of the numbers in s (insertion sort)
      n = split(s, a, " ")
      for (i = 2; i <= n; i++) {
        t = a[i] + 0
        for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]
        a[j + 1] = t
      }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    { w[$1, $2] = w[$1, $2] " " $3; n[$1, $2]++; keys[$2] = 1 }
    END {
      for (f in keys) {
        m1 = n[1, f] ? med(w[1, f]) : 0; m4 = n[4, f] ? med(w[4, f]) : 0
        printf "%d %d %s %d %s %s\n", f, n[1, f], m1 ? sprintf("%.3f_s", m1) : "-",
          n[4, f], m4 ? sprintf("%.3f_s", m4) : "-",
          (m1 && m4) ? sprintf("%+.1f%%", 100 * (m4 - m1) / m1) : "-"
      }
    }' | sort -n | while read -r f n1 m1 n4 m4 d; do
    out "| $f MiB | $n1 | ${m1/_/ } | $n4 | ${m4/_/ } | $d |"
  done
  out ""
  note "  memory bandwidth"
  MEMBW=$BUILD/bench/membw
  if [ ! -x "$MEMBW" ]; then
    MEMBW=$TMP/membw
    cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -pthread \
      -o "$MEMBW" "$HERE/membw.c"
  fi
  "$MEMBW" 1024 "$(nproc)" 5 >"$TMP/membw.txt"
  bw() { sed -n "s/^$1=//p" "$TMP/membw.txt"; }
  fill=$(calc "$total / ${ZC[1]} / 2^30")
  copy3=$(calc "3 * $total / ($(bw memcpy_mt) * 2^30)")
  pct() { calc "100 * $1 / $2" | xargs printf '%.0f%%'; }
  out "Physical limits (membw, best of 5 passes):"
  out ""
  out "| memory | 1 thread | $(nproc) threads |"
  out "|---|---|---|"
  out "| memset, touched before (1 GiB) | $(bw memset_1t) GiB/s | $(bw memset_mt) GiB/s |"
  out "| memcpy, touched before (1 GiB) | $(bw memcpy_1t) GiB/s | $(bw memcpy_mt) GiB/s |"
  out "| memset of fresh anonymous memory (page faults) | $(bw fresh_anon) GiB/s | |"
  out "| new shm segment: fallocate + MAP_POPULATE + memset | $(bw fresh_shm) GiB/s | |"
  out ""
  out "- gen's fill rate through the 1-stage chain: $(printf '%.2f' "$fill") GiB/s ="
  out "  $(pct "$fill" "$(bw memset_mt)") of memset bandwidth, $(pct "$fill" "$(bw fresh_shm)") of the rate of filling new shm segments."
  out "- If each of the 3 extra identity stages copied its payload, the copies alone would take"
  out "  about $(printf '%.2f' "$copy3") s at memcpy bandwidth, $(pct "$copy3" "${ZC[1]}") of the 1-stage wall time."
  out ""
fi

# ---------------------------------------------------------------- 3. bounded memory

if want 3; then
  note "3. bounded memory"
  out "## 3. Backpressure: peak RSS does not grow with the input"
  out ""
  out "\`gen count=N size=1MiB ! identity sleep_us=2000 ! discard\`, peak_rss_bytes from --stats-json, median of $RUNS"
  out ""
  out "| N | input | peak RSS | wall |"
  out "|---|---|---|---|"
  declare -A RSS
  for n in 200 2000; do
    note "  N=$n"
    f="$TMP/bp-$n.pipe"
    echo "gen count=$n size=1MiB ! identity sleep_us=2000 ! discard" >"$f"
    rss=() walls=()
    for ((r = 0; r < RUNS; r++)); do
      "$SLUICE" run "$f" --threads "$THREADS" --quiet --stats-json "$TMP/bp.json"
      rss+=("$(jq '.peak_rss_bytes' "$TMP/bp.json")")
      walls+=("$(jq '.wall_s' "$TMP/bp.json")")
    done
    RSS[$n]=$(printf '%s\n' "${rss[@]}" | median)
    w=$(printf '%s\n' "${walls[@]}" | median)
    out "| $n | $(fmt_bytes $((n * 1048576))) | $(fmt_bytes "${RSS[$n]}") | $(printf '%.2f s' "$w") |"
  done
  ratio=$(calc "${RSS[2000]} / ${RSS[200]}")
  if awk -v r="$ratio" 'BEGIN { exit !(r <= 1.2 && r >= 1/1.2) }'; then verdict="met"; else verdict="**missed**"; fi
  out ""
  out "RSS(N=2000) / RSS(N=200) = $(printf '%.2f' "$ratio") (must be within 20%: $verdict)."
  out ""
fi

# ---------------------------------------------------------------- 4. io ordering

if want 4; then
  note "4. io ordering"
  IO_N=20000
  fs=$(df -T "$IOTMP" | awk 'NR == 2 { print $2 }')
  out "## 4. io stages: workers and order ($IO_N items of 4 KiB, $fs, page cache, no fsync)"
  out ""
  out "items/s, median of $RUNS; Python: ThreadPoolExecutor(4) with map (ordered) or as_completed"
  out ""
  out "| stage | workers, order | sluice | spread | Python equivalent | Python | sluice/Python |"
  out "|---|---|---|---|---|---|---|"
  src=$IOTMP/src dst=$IOTMP/dst
  echo "gen count=$IO_N size=4KiB ! files.write dir=$src" | "$SLUICE" run - --threads "$THREADS" --quiet
  for cfg in "1 source write-serial" "4 source write-map" "4 any write-any" \
             "1 source read-serial" "4 source read-map" "4 any read-any"; do
    read -r w o pm <<<"$cfg"
    f="$TMP/io-$pm.pipe"
    if [[ $pm == write-* ]]; then
      stage=files.write
      echo "gen count=$IO_N size=4KiB ! files.write dir=$dst workers=$w order=$o" >"$f"
      pyargs="--dir $dst --count $IO_N --size 4096 --workers 4"
      prep=(--prepare "rm -rf $dst")
    else
      stage=files.read
      echo "files.list dir=$src ! files.read workers=$w order=$o ! discard" >"$f"
      pyargs="--dir $src --workers 4"
      prep=()
    fi
    note "  $stage workers=$w order=$o"
    timeit "io-$pm" "${prep[@]}" -- "$SLUICE run $f --threads $THREADS --quiet"
    rs=$(calc "$IO_N / $MED"); lo=$(calc "$IO_N / $MAX"); hi=$(calc "$IO_N / $MIN")
    timeit "py-$pm" "${prep[@]}" -- "$PY $HERE/py_io.py $pm $pyargs"
    rp=$(calc "$IO_N / $MED")
    out "| $stage | $w, $o | **$(fmt_rate "$rs")** | $(fmt_rate "$lo")..$(fmt_rate "$hi") | $pm | $(fmt_rate "$rp") | $(calc "$rs / $rp" | xargs printf '%.1f')× |"
  done
  out ""
fi

out "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
note "report written to $REPORT"
