#!/usr/bin/env bash
# bench/images/run.sh -- thumbnails of photo-sized PNGs: sluice against
# libvips, ImageMagick and Pillow, and against the decode floor.
#
# usage: bench/images/run.sh BUILD_DIR [COUNT]     (COUNT default 200)
#
# BUILD_DIR is a Release build holding cli/sluice and examples/make_images.
# The input set is made once by make_images (COUNT deterministic photo-like
# PNGs, 1920x1080..4000x3000, 7 in 10 RGB, 2 RGBA, 1 gray) and cached in
# bench/data/photos-COUNT (git-ignored; about 9 MB an image, 3 minutes per
# 200 images on 2 cores). Then, in one run, every tool makes thumbnails that
# fit inside SIZE at zlib level LEVEL, each run into a fresh empty folder:
#
#   sluice          sluice run pipelines/thumbnails.pipe --threads THREADS
#   sluice-qb48     the same with --queue-bytes 48MiB (not a peer: shows what
#                   the default 16 MiB queue cap costs when one decoded photo
#                   is larger than the cap, see docs/benchmarks.md)
#   vips            vipsthumbnail, one process for all files
#   vips-P2-1       vipsthumbnail under xargs -P2, one file per process
#   vips-P2-half    vipsthumbnail under xargs -P2, two processes of half the list
#   magick          ImageMagick mogrify -thumbnail, one process for all files
#   pillow          pillow_thumbs.py: multiprocessing.Pool(2), Image.thumbnail
#   decode          sluice: files.list ! files.read ! png.decode ! discard
#   decode+resize   sluice: ... ! png.decode ! resize fit=SIZE ! discard
#
# The last two are not peers: they are the floor under sluice's own figure
# (what decoding alone costs), giving the share of the total that is decode.
# The tools take turns (run 1 of each, then run 2 of each, ...) so that other
# load on the machine spreads over all of them; the median of RUNS is
# reported. The first run of each tool is checked by check_thumbs.py (every
# input has a thumbnail touching the box, aspect kept, deflated at LEVEL).
#
# Part 2 ("memory"): peak RSS (--stats-json) of sluice's thumbnails.pipe for
# the COUNT set and for MEM_COUNT images (the COUNT set hard-linked again
# into subfolders: the same pixels, MEM_COUNT/COUNT times the files), and
# the worst case that `sluice plan` prints.
#
# Report: markdown on stdout and in bench/results/images-<date>-<time>.md
# (git-ignored; figures worth keeping go to docs/benchmarks.md by hand).
#
# Environment knobs: RUNS (default 3), THREADS (--threads, default 2),
# SIZE (256x256), LEVEL (6), PY (/usr/bin/python3, needs python3-pil),
# ONLY ("speed memory": the parts to run), TOOLS (tool names from the list
# above; default all but vips-P2-1, which measured 2x slower than
# vips-P2-half: a process per image pays libvips' start-up 200 times),
# MEM_COUNT (default 10 * COUNT), PROFILE=1 (perf profile of one sluice
# run: top symbols), QUIET (0.25) and QUIET_WAIT (120): before each run,
# wait up to QUIET_WAIT seconds until other processes use less than QUIET
# of the cores. Each run also records the share of the cores that other
# processes took while it ran ("others" in the table): figures from runs
# where others took much are not worth keeping.
# Needs: vipsthumbnail (libvips-tools), mogrify (imagemagick), jq, GNU time.
set -euo pipefail

BUILD=${1:?usage: bench/images/run.sh BUILD_DIR [COUNT]}
COUNT=${2:-200}
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}
SIZE=${SIZE:-256x256}
LEVEL=${LEVEL:-6}
PY=${PY:-/usr/bin/python3}
ONLY=${ONLY:-"speed memory"}
TOOLS=${TOOLS:-"sluice sluice-qb48 vips vips-P2-half magick pillow decode decode+resize"}
QUIET=${QUIET:-0.25}
QUIET_WAIT=${QUIET_WAIT:-120}
MEM_COUNT=${MEM_COUNT:-$((10 * COUNT))}
PROFILE=${PROFILE:-0}

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=$(cd "$BUILD" && pwd)
SLUICE=$BUILD/cli/sluice
MAKE_IMAGES=$BUILD/examples/make_images
for exe in "$SLUICE" "$MAKE_IMAGES"; do
  [ -x "$exe" ] || { echo "run.sh: no $exe; build first:" >&2
    echo "  cmake -S . -B $BUILD -DCMAKE_BUILD_TYPE=Release && cmake --build $BUILD -j" >&2; exit 2; }
done
for tool in vipsthumbnail mogrify jq /usr/bin/time "$PY"; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool not found (apt-get install libvips-tools imagemagick jq time)" >&2; exit 2; }
done
"$PY" -c 'import PIL' 2>/dev/null || { echo "run.sh: $PY has no PIL (apt-get install python3-pil)" >&2; exit 2; }

DATA=$ROOT/bench/data/photos-$COUNT
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench-images.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
RESULTS=$HERE/../results
mkdir -p "$RESULTS"
REPORT=$RESULTS/images-$(date +%Y%m%d-%H%M%S).md
: >"$REPORT"

# ---------------------------------------------------------------- helpers

# out note want calc median fmt_bytes quiet others_share col cpu_s best spread
. "$HERE/../lib.sh"

# ---------------------------------------------------------------- input set

if [ ! -e "$DATA/.complete" ]; then
  note "generating $COUNT images into $DATA (once; about 1 s an image per core)"
  rm -rf "$DATA.tmp"
  "$MAKE_IMAGES" "$DATA.tmp" "$COUNT" --min 1920x1080 --max 4000x3000 >&2
  rm -rf "$DATA"
  mv "$DATA.tmp" "$DATA"
  touch "$DATA/.complete"
fi
find "$DATA" -name '*.png' | sort >"$TMP/list"
N=$(wc -l <"$TMP/list")
[ "$N" = "$COUNT" ] || { echo "run.sh: $DATA holds $N images, not $COUNT; delete it" >&2; exit 1; }
HALF=$(((N + 1) / 2))
PIXELS=$("$PY" -c '
import sys
from PIL import Image
print(sum(Image.open(p.strip()).size[0] * Image.open(p.strip()).size[1] for p in open(sys.argv[1])))' "$TMP/list")

printf 'files.list dir=${in} glob=*.png ! files.read ! png.decode ! discard\n' >"$TMP/decode.pipe"
printf 'files.list dir=${in} glob=*.png ! files.read ! png.decode ! resize fit=${size} ! discard\n' >"$TMP/resize.pipe"

# ---------------------------------------------------------------- the tools

# tool_NAME OUT RUN: one run of the tool, thumbnails into the empty folder
# OUT. Run under GNU time through `bash -c`, so they are exported.
tool_sluice() {
  "$SLUICE" run "$ROOT/pipelines/thumbnails.pipe" in="$DATA" out="$1" size="$SIZE" \
    level="$LEVEL" --threads "$THREADS" --quiet --stats-json "$TMP/sluice-$2.json"
}
tool_sluice-qb48() {
  "$SLUICE" run "$ROOT/pipelines/thumbnails.pipe" in="$DATA" out="$1" size="$SIZE" \
    level="$LEVEL" --threads "$THREADS" --queue-bytes 48MiB --quiet --stats-json "$TMP/qb48-$2.json"
}
tool_vips() {
  xargs -a "$TMP/list" -d '\n' vipsthumbnail --size "$SIZE" -o "$1/%s.png[compression=$LEVEL]"
}
tool_vips-P2-1() {
  xargs -a "$TMP/list" -d '\n' -P2 -n1 vipsthumbnail --size "$SIZE" -o "$1/%s.png[compression=$LEVEL]"
}
tool_vips-P2-half() {
  xargs -a "$TMP/list" -d '\n' -P2 -n "$HALF" vipsthumbnail --size "$SIZE" -o "$1/%s.png[compression=$LEVEL]"
}
tool_magick() {
  xargs -a "$TMP/list" -d '\n' mogrify -path "$1" -thumbnail "$SIZE" \
    -define png:compression-level="$LEVEL" -format png
}
tool_pillow() {
  "$PY" "$HERE/pillow_thumbs.py" "$DATA" "$1" --size "$SIZE" --level "$LEVEL" --procs 2 >/dev/null
}
tool_decode() {
  "$SLUICE" run "$TMP/decode.pipe" in="$DATA" --threads "$THREADS" --quiet --stats-json "$TMP/decode-$2.json"
}
tool_decode+resize() {
  "$SLUICE" run "$TMP/resize.pipe" in="$DATA" size="$SIZE" --threads "$THREADS" --quiet \
    --stats-json "$TMP/decode+resize-$2.json"
}
export -f tool_sluice tool_sluice-qb48 tool_vips tool_vips-P2-1 tool_vips-P2-half tool_magick tool_pillow \
  tool_decode tool_decode+resize
export SLUICE ROOT DATA SIZE LEVEL THREADS TMP HALF PY HERE

# The exact command lines, for the report.
declare -A CMD=(
  [sluice]="sluice run pipelines/thumbnails.pipe in=DIR out=OUT size=$SIZE level=$LEVEL --threads $THREADS --quiet --stats-json S.json"
  [sluice-qb48]="sluice run pipelines/thumbnails.pipe in=DIR out=OUT size=$SIZE level=$LEVEL --threads $THREADS --queue-bytes 48MiB --quiet --stats-json S.json"
  [vips]="xargs -a LIST -d '\n' vipsthumbnail --size $SIZE -o 'OUT/%s.png[compression=$LEVEL]'"
  [vips-P2-1]="xargs -a LIST -d '\n' -P2 -n1 vipsthumbnail --size $SIZE -o 'OUT/%s.png[compression=$LEVEL]'"
  [vips-P2-half]="xargs -a LIST -d '\n' -P2 -n $HALF vipsthumbnail --size $SIZE -o 'OUT/%s.png[compression=$LEVEL]'"
  [magick]="xargs -a LIST -d '\n' mogrify -path OUT -thumbnail $SIZE -define png:compression-level=$LEVEL -format png"
  [pillow]="/usr/bin/python3 bench/images/pillow_thumbs.py DIR OUT --size $SIZE --level $LEVEL --procs 2"
  [decode]="sluice run decode.pipe in=DIR --threads $THREADS  # files.list dir=\${in} glob=*.png ! files.read ! png.decode ! discard"
  [decode+resize]="sluice run resize.pipe in=DIR size=$SIZE --threads $THREADS  # ... ! png.decode ! resize fit=\${size} ! discard"
)


# timed NAME RUN: one run of tool NAME into a fresh folder; appends
# "wall user sys maxrss_kb others" to $TMP/NAME.times, where `others` is the
# share of the machine's cores that other processes (and steal) took
# during the run. The first run's thumbnails are checked.
timed() {
  local name=$1 r=$2 o="$TMP/out-$1" j0 j1
  rm -rf "$o"
  mkdir -p "$o"
  sync
  quiet
  j0=$(cpu_jiffies)
  if ! /usr/bin/time -f '%e %U %S %M' -o "$TMP/time" bash -c "tool_$name \"\$1\" $r" _ "$o" \
      >"$TMP/$name.log" 2>&1; then
    cat "$TMP/$name.log" >&2
    echo "run.sh: $name failed" >&2
    exit 1
  fi
  j1=$(cpu_jiffies)
  tail -1 "$TMP/time" | awk -v a="$j0" -v b="$j1" -v hz="$(getconf CLK_TCK)" -v n="$(nproc)" '{
    split(a, x, " "); split(b, y, " "); busy = (y[1] - x[1]) / hz; all = (y[2] - x[2]) / hz
    others = (busy - $2 - $3) / (all > 0 ? all : 1); if (others < 0) others = 0
    print $1, $2, $3, $4, others }' >>"$TMP/$name.times"
  note "  $name run $r: $(tail -1 "$TMP/$name.times" | awk '{ printf "%.2f s, others took %.0f%% of the cores", $1, 100 * $5 }')"
  if [ "$r" = 1 ] && [[ $name != decode* ]]; then
    "$PY" "$HERE/check_thumbs.py" "$DATA" "$o" --size "$SIZE" --level "$LEVEL" >"$TMP/$name.check" ||
      { cat "$TMP/$name.check" >&2; echo "run.sh: $name made wrong thumbnails" >&2; exit 1; }
  fi
  rm -rf "$o"
}

# stat NAME JQ: median over runs of a --stats-json figure of sluice runs.
stat() { for f in "$TMP/$1"-*.json; do jq "$2" "$f"; done | median; }

# ---------------------------------------------------------------- header

out "# sluice image benchmarks: thumbnails"
out ""
out "- date: $(date '+%Y-%m-%d %H:%M %Z')"
out "- machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(free -g | awk '/^Mem/ {print $2}') GiB RAM, $(uname -sr)"
out "- sluice: $("$SLUICE" --version 2>&1 | head -1), build $BUILD ($(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$BUILD/CMakeCache.txt" 2>/dev/null || echo '?')), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' + local changes')"
out "- peers: $(vipsthumbnail --vips-version 2>/dev/null | head -1 || vips --version); $(mogrify -version | sed -n 's/^Version: //p' | cut -d' ' -f1-3); Pillow $("$PY" -c 'import PIL; print(PIL.__version__)') on $("$PY" --version 2>&1)"
out "- ImageMagick resource limits (policy.xml): $(identify -list resource | awk 'NR > 1 && NF >= 2 { printf "%s ", $0 }' | tr -s ' ')"
out "- input: $N PNGs in bench/data/photos-$COUNT (make_images --min 1920x1080 --max 4000x3000), $(du -sh --apparent-size "$DATA" | cut -f1), $(calc "$PIXELS / 1e6" | xargs printf '%.0f') Mpixels; page cache warm (read once before timing)"
out "- task: fit inside $SIZE keeping the aspect, PNG at zlib level $LEVEL, into an empty folder each run"
out "- runs per figure: $RUNS, tools taking turns; median reported (spread = min..max wall)"
out "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine makes figures noisy)"
out ""

# ---------------------------------------------------------------- 1. speed

if want speed; then
  note "1. speed: warming the page cache"
  xargs -a "$TMP/list" -d '\n' cat >/dev/null
  for ((r = 1; r <= RUNS; r++)); do
    for t in $TOOLS; do timed "$t" "$r"; done
  done

  S_WALL=$(col sluice 1) S_BEST=$(best sluice)
  out "## Thumbnails of $N photos ($SIZE, zlib level $LEVEL), --threads $THREADS / 2 processes"
  out ""
  out "Wall seconds: median and best of $RUNS; *× sluice* is the tool's time over sluice's"
  out "(median / best); *others* is the share of the cores that other processes took"
  out "during the tool's runs (median)."
  out ""
  out "| tool | wall median | best | spread | images/s | × sluice | CPU s (user+sys) | peak RSS | others |"
  out "|---|---|---|---|---|---|---|---|---|"
  BEST="" BEST_WALL="" BEST_BEST=""
  for t in $TOOLS; do
    w=$(col "$t" 1) b=$(best "$t")
    ratio="$(calc "$w / $S_WALL" | xargs printf '%.2f×') / $(calc "$b / $S_BEST" | xargs printf '%.2f×')"
    [ "$t" = sluice ] && ratio="1"
    [[ $t == decode* ]] && ratio="floor: $(calc "100 * $w / $S_WALL" | xargs printf '%.0f%%') / $(calc "100 * $b / $S_BEST" | xargs printf '%.0f%%') of sluice"
    name=$t
    [ "$t" = sluice ] && name="**sluice**"
    out "| $name | $(printf '%.2f s' "$w") | $(printf '%.2f s' "$b") | $(spread "$t") | $(calc "$N / $w" | xargs printf '%.1f') | $ratio | $(printf '%.1f' "$(cpu_s "$t")") | $(fmt_bytes $(($(col "$t" 4 | cut -d. -f1) * 1024))) | $(calc "100 * $(col "$t" 5)" | xargs printf '%.0f%%') |"
    if [[ $t != sluice* && $t != decode* ]]; then
      if [ -z "$BEST" ] || awk -v a="$w" -v b="$BEST_WALL" 'BEGIN { exit !(a < b) }'; then
        BEST=$t BEST_WALL=$w BEST_BEST=$b
      fi
    fi
  done
  out ""
  out "Peak RSS is GNU time's: the largest single process (Pillow's pool"
  out "workers and xargs' vipsthumbnail processes each count alone)."
  out ""
  out "Commands (DIR = the input folder, OUT = an empty folder, LIST = the $N paths, one a line):"
  out ""
  out '```'
  for t in $TOOLS; do out "$t: ${CMD[$t]}"; done
  out '```'
  out ""
  out "Thumbnails checked (check_thumbs.py, first run of each tool):"
  out ""
  for t in $TOOLS; do [ -e "$TMP/$t.check" ] && out "- $t: $(cat "$TMP/$t.check")"; done
  out ""
  if [ -n "$BEST" ] && [[ " $TOOLS " == *" sluice "* ]]; then
    speedup=$(calc "$BEST_WALL / $S_WALL")
    if awk -v s="$speedup" 'BEGIN { exit !(s >= 1.75) }'; then verdict="met"; else verdict="**missed**"; fi
    out "Best peer (by median): $BEST, $(printf '%.2f' "$BEST_WALL") s (best run $(printf '%.2f' "$BEST_BEST") s)."
    out "sluice: $(printf '%.2f' "$S_WALL") s (best run $(printf '%.2f' "$S_BEST") s), $(printf '%.2f' "$speedup")× the best peer by median,"
    out "$(calc "$BEST_BEST / $S_BEST" | xargs printf '%.2f')× by best runs (goal ≥ 1.75×: $verdict; stretch 2×)."
    if [[ " $TOOLS " == *" sluice-qb48 "* ]]; then
      out "With --queue-bytes 48MiB: $(printf '%.2f' "$(col sluice-qb48 1)") s, $(calc "$BEST_WALL / $(col sluice-qb48 1)" | xargs printf '%.2f')× the best peer by median."
    fi
    out ""
    out "sluice's own runs (--stats-json, median of $RUNS): bottleneck $(jq -r '.bottleneck' "$TMP/sluice-1.json");"
    busy="" total=0
    for st in png.decode resize png.encode; do
      b=$(stat sluice ".stages[] | select(.name == \"$st\") | .busy_s")
      busy+="$st $(printf '%.1f' "$b") s, "
      total=$(calc "$total + $b")
    done
    out "busy worker-seconds of the cpu stages: ${busy%, } (decode $(calc "100 * $(stat sluice '.stages[] | select(.name == "png.decode") | .busy_s') / $total" | xargs printf '%.0f%%') of them)."
    if [[ " $TOOLS " == *" decode+resize "* ]]; then
      dw=$(col decode 1) db=$(best decode) rw=$(col decode+resize 1) rb=$(best decode+resize)
      out "Decode floor (files.list ! files.read ! png.decode ! discard, --threads $THREADS): $(printf '%.2f' "$dw") s"
      out "median, $(printf '%.2f' "$db") s best = $(calc "100 * $dw / $S_WALL" | xargs printf '%.0f%%') / $(calc "100 * $db / $S_BEST" | xargs printf '%.0f%%') of sluice's thumbnails run;"
      out "with resize $(printf '%.2f' "$rw") s / $(printf '%.2f' "$rb") s; encode + write are the rest."
    fi
    out ""
  fi
fi

# ---------------------------------------------------------------- profile

if [ "$PROFILE" = 1 ] && command -v perf >/dev/null; then
  note "profile of one sluice run"
  rm -rf "$TMP/out-prof"
  perf record -q -g -o "$TMP/perf.data" -- "$SLUICE" run "$ROOT/pipelines/thumbnails.pipe" \
    in="$DATA" out="$TMP/out-prof" size="$SIZE" level="$LEVEL" --threads "$THREADS" --quiet >/dev/null 2>&1 || true
  out "perf profile of one sluice run: self time by library, then top symbols"
  out "(libdeflate ships without symbols: its lines are inflate/deflate):"
  out ""
  out '```'
  perf report -i "$TMP/perf.data" --stdio --no-children --sort dso 2>/dev/null |
    grep -E '^ +[0-9.]+%' | head -6 | tee -a "$REPORT" || true
  out ""
  perf report -i "$TMP/perf.data" --stdio --no-children --sort dso,symbol 2>/dev/null |
    grep -E '^ +[0-9.]+%' | head -25 | tee -a "$REPORT" || true
  out '```'
  out ""
  rm -rf "$TMP/out-prof"
fi

# ---------------------------------------------------------------- 2. memory

if want memory; then
  note "2. memory: $COUNT vs $MEM_COUNT images"
  BIG=$TMP/many
  for ((c = 0; c * COUNT < MEM_COUNT; c++)); do
    mkdir -p "$BIG/copy$c"
    cp -al "$DATA/." "$BIG/copy$c/"
  done
  rm -f "$BIG"/copy*/.complete
  M=$(find "$BIG" -name '*.png' | wc -l)
  out "## Peak memory: $COUNT vs $M photos"
  out ""
  out "sluice run pipelines/thumbnails.pipe --threads $THREADS, peak_rss_bytes from --stats-json."
  out "The $M are the $COUNT hard-linked $((M / COUNT)) times into subfolders (the same"
  out "pixels, $((M / COUNT))× the files: what memory depends on is the item sizes and how"
  out "many are in flight, not whether they repeat)."
  out ""
  out "| images | peak RSS | wall |"
  out "|---|---|---|"
  declare -A RSS
  for dir in "$DATA" "$BIG"; do
    n=$(find "$dir" -name '*.png' | wc -l)
    runs=$RUNS
    [ "$n" -gt "$COUNT" ] && runs=1  # the big set runs once: it takes long
    for ((r = 1; r <= runs; r++)); do
      rm -rf "$TMP/out-mem"
      "$SLUICE" run "$ROOT/pipelines/thumbnails.pipe" in="$dir" out="$TMP/out-mem" \
        --threads "$THREADS" --quiet --stats-json "$TMP/mem$n-$r.json"
      note "  $n images run $r: $(jq .peak_rss_bytes "$TMP/mem$n-$r.json") B"
    done
    RSS[$n]=$(stat "mem$n" .peak_rss_bytes)
    out "| $n | $(fmt_bytes "${RSS[$n]}") | $(printf '%.1f s' "$(stat "mem$n" .wall_s)") |"
  done
  rm -rf "$TMP/out-mem"
  ratio=$(calc "${RSS[$M]} / ${RSS[$COUNT]}")
  if awk -v r="$ratio" 'BEGIN { exit !(r <= 1.2 && r >= 1 / 1.2) }'; then verdict="met"; else verdict="**missed**"; fi
  out ""
  out "RSS($M) / RSS($COUNT) = $(printf '%.2f' "$ratio") (must be within 20%: $verdict)."
  out ""
  out "\`sluice plan pipelines/thumbnails.pipe in=... out=... --threads $THREADS\` says:"
  out ""
  out '```'
  "$SLUICE" plan "$ROOT/pipelines/thumbnails.pipe" in="$BIG" out="$TMP/out-mem" --threads "$THREADS" |
    sed -n '/^memory:/,$p' | tee -a "$REPORT"
  out '```'
  out ""
  rm -rf "$BIG"
fi

out "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
note "report written to $REPORT"
