#!/usr/bin/python3
"""py_io.py -- the io benchmarks of bench/engine/run.sh, done in Python.

What a Python user would write instead of sluice's io stages, with the same
guarantees where sluice gives them:

  write-serial  one thread writes `count` files of `size` bytes
  write-map     ThreadPoolExecutor(workers).map(write, items): results in
                source order (sluice's order=source)
  write-any     submit everything, consume with as_completed (order=any)
  read-serial   list `dir` (sorted, like files.list), read every file
  read-map      the listing, then ThreadPoolExecutor(workers).map(read, ...)
  read-any      the listing, then submit + as_completed

Writes are atomic like files.write's: each file goes to a hidden temporary
next to its target and is renamed into place. Items are named item-000001,
... like gen's, with payload bytes that depend on the item number.

Prints one line: mode, items, seconds, items/s.
"""
import argparse
import concurrent.futures
import os
import sys
import time


def payload(seq, size):
    """Deterministic bytes for item seq (cheap: the point is the I/O)."""
    unit = seq.to_bytes(8, "little")
    return (unit * (size // 8 + 1))[:size]


def write_atomic(path, data):
    d, base = os.path.split(path)
    tmp = os.path.join(d, ".%s.py-tmp-%d" % (base, os.getpid()))
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)
    return len(data)


def read_file(path):
    with open(path, "rb") as f:
        return len(f.read())


def write_jobs(args):
    os.makedirs(args.dir, exist_ok=True)
    for seq in range(args.count):
        yield os.path.join(args.dir, "item-%06d" % (seq + 1)), payload(seq, args.size)


def listing(args):
    names = []
    for root, _dirs, files in os.walk(args.dir):
        names.extend(os.path.join(root, f) for f in files)
    names.sort()
    return names


def run(args):
    """Runs the mode. @return the number of items done."""
    kind, how = args.mode.split("-")
    if kind == "write":
        fn, jobs = (lambda job: write_atomic(*job)), write_jobs(args)
    else:
        fn, jobs = read_file, listing(args)
    if how == "serial":
        return sum(1 for job in jobs if fn(job) >= 0)
    with concurrent.futures.ThreadPoolExecutor(args.workers) as ex:
        if how == "map":
            return sum(1 for r in ex.map(fn, jobs) if r >= 0)
        futs = [ex.submit(fn, job) for job in jobs]
        return sum(1 for f in concurrent.futures.as_completed(futs) if f.result() >= 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["write-serial", "write-map", "write-any",
                                     "read-serial", "read-map", "read-any"])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    t0 = time.perf_counter()
    n = run(args)
    dt = time.perf_counter() - t0
    if args.mode.startswith("write") and n != args.count:
        sys.exit("py_io: wrote %d of %d files" % (n, args.count))
    print("%s items=%d seconds=%.3f items_per_s=%.0f"
          % (args.mode, n, dt, n / dt if dt > 0 else 0.0))


if __name__ == "__main__":
    main()
