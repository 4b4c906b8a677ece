# bench/lib.sh -- what the benchmark scripts share: report output, number
# formatting, medians, and waiting for a quiet machine. Sourced by
# bench/*/run.sh after they set REPORT, ONLY, QUIET and QUIET_WAIT.

out() { printf '%s\n' "$*" | tee -a "$REPORT"; }
note() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
want() { [[ " $ONLY " == *" $1 "* ]]; }
calc() { awk "BEGIN { printf \"%.6g\", $1 }"; }
median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
fmt_bytes() {
  awk -v x="$1" 'BEGIN { if (x >= 2^30) printf "%.2f GiB", x/2^30;
    else if (x >= 2^20) printf "%.0f MiB", x/2^20; else printf "%.0f KiB", x/1024 }'
}

# cpu_jiffies: "busy total" jiffies of all cores so far (/proc/stat; busy
# counts steal, time the hypervisor gave to other guests).
cpu_jiffies() {
  awk '/^cpu / { b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6 }' /proc/stat
}
# quiet: waits (at most QUIET_WAIT seconds) until other work takes less
# than QUIET of the machine's cores over a 1-second look.
quiet() {
  local waited=0 a b
  while :; do
    a=$(cpu_jiffies); sleep 1; b=$(cpu_jiffies)
    if awk -v a="$a" -v b="$b" -v q="$QUIET" 'BEGIN { split(a, x, " "); split(b, y, " ");
        exit !((y[1] - x[1]) <= q * (y[2] - x[2])) }'; then return 0; fi
    waited=$((waited + 1))
    [ "$waited" -ge "$QUIET_WAIT" ] && { note "  machine still busy after ${QUIET_WAIT}s; running anyway"; return 0; }
  done
}
# others_share J0 J1 USER SYS: the share of the cores that other processes
# (and steal) took between two cpu_jiffies readings, given the measured
# process's user and sys seconds.
others_share() {
  awk -v a="$1" -v b="$2" -v u="$3" -v s="$4" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    split(a, x, " "); split(b, y, " "); busy = (y[1] - x[1]) / hz; all = (y[2] - x[2]) / hz
    o = (busy - u - s) / (all > 0 ? all : 1); if (o < 0) o = 0; print o }'
}

# Columns of $TMP/NAME.times ("wall user sys maxrss_kb others" per run):
# col NAME K: median of column K; cpu_s: median user+sys; best: least wall;
# spread: "min..max" wall.
col() { awk -v k="$2" '{ print $k }' "$TMP/$1.times" | median; }
cpu_s() { awk '{ print $2 + $3 }' "$TMP/$1.times" | median; }
best() { awk '{ print $1 }' "$TMP/$1.times" | sort -g | head -1; }
spread() { awk '{ print $1 }' "$TMP/$1.times" | sort -g | awk '{ a[NR] = $1 } END { printf "%.2f..%.2f", a[1], a[NR] }'; }
