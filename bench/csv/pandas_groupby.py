"""pandas_groupby.py -- the pandas side of bench/csv/run.sh.

    python3 pandas_groupby.py IN OUT KEY

Reads only KEY and x (read_csv(usecols=...), pandas' C parser, default
options: what a pandas user writes), groups by KEY and writes count, sum,
mean, min and max of x as CSV in the column order of sluice's
csv_groupby.pipe, rows sorted by key. Prints the time of read_csv and of
the group-by (without Python's and pandas' start-up) on stdout.
"""
import sys
import time

import pandas as pd


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: pandas_groupby.py IN OUT KEY")
    path, out, key = sys.argv[1:]
    t0 = time.perf_counter()
    df = pd.read_csv(path, usecols=[key, "x"])
    t1 = time.perf_counter()
    g = df.groupby(key, sort=True)["x"].agg(["count", "sum", "mean", "min", "max"])
    t2 = time.perf_counter()
    g.columns = ["count", "sum(x)", "mean(x)", "min(x)", "max(x)"]
    g.to_csv(out)
    print(f"read_s={t1 - t0:.4f} groupby_s={t2 - t1:.4f}")


if __name__ == "__main__":
    main()
