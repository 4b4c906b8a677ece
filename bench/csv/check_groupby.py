"""check_groupby.py -- do two group-by results agree? (bench/csv/run.sh)

    python3 check_groupby.py REFERENCE OTHER [--name NAME]

Both files are CSV with a header and the columns key, count, sum, mean,
min, max in this order (names may differ: miller writes x_count, ...).
They agree when they hold the same set of keys (compared as text, after
CSV unquoting), the same count for each key exactly, and sum, mean, min and
max within 1e-9 relative (tools add in different orders, and not every
parser rounds every decimal to the nearest double). Row order does not
matter. Prints one line saying so and exits 0, or lists the first
differences and exits 1. Standard library only.
"""
import csv
import math
import sys

REL = 1e-9


def load(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or len(rows[0]) != 6:
        sys.exit(f"{path}: expected a header of 6 columns, got {rows[:1]}")
    table = {}
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != 6:
            sys.exit(f"{path}:{n}: expected 6 fields, got {len(row)}")
        if row[0] in table:
            sys.exit(f"{path}:{n}: key {row[0]!r} appears twice")
        table[row[0]] = row[1:]
    return table


def close(a, b):
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= REL * max(abs(a), abs(b))


def main():
    args = sys.argv[1:]
    name = None
    if "--name" in args:
        i = args.index("--name")
        name = args[i + 1]
        del args[i : i + 2]
    if len(args) != 2:
        sys.exit("usage: check_groupby.py REFERENCE OTHER [--name NAME]")
    ref, other = load(args[0]), load(args[1])
    name = name or args[1]
    bad = []
    for k in sorted(set(ref) ^ set(other)):
        bad.append(f"key {k!r} only in {'the reference' if k in ref else name}")
    cols = ["count", "sum", "mean", "min", "max"]
    for k in sorted(set(ref) & set(other)):
        a, b = ref[k], other[k]
        if int(float(a[0])) != int(float(b[0])) or float(a[0]) != int(float(a[0])):
            bad.append(f"key {k!r}: count {a[0]} vs {b[0]}")
        for c, x, y in zip(cols[1:], a[1:], b[1:]):
            if not close(float(x), float(y)):
                bad.append(f"key {k!r}: {c} {x} vs {y} (relative difference "
                           f"{abs(float(x) - float(y)) / max(abs(float(x)), abs(float(y))):.2g})")
    if bad:
        print(f"{name} DISAGREES with {args[0]} ({len(bad)} differences):")
        for line in bad[:10]:
            print("  " + line)
        sys.exit(1)
    print(f"{name}: {len(ref)} groups agree (counts exact, sum/mean/min/max within {REL:g} relative)")


if __name__ == "__main__":
    main()
