#!/usr/bin/python3
"""bench/hdf5/h5py_ref.py -- the h5py + numpy side of bench/hdf5/run.sh,
written the way a Python user would: chunk by chunk, so memory stays small.

  h5py_ref.py make OUT.h5 ROWS COLS CHUNK_ROWS [gzip|gzip32|contig]   the input "x"
  h5py_ref.py reduce IN.h5 OUT.json                     sum, mean, min, max and
                                                        a 100-bin histogram over
                                                        [min, max] (two passes)
  h5py_ref.py map IN.h5 OUT.h5                          y = 2.5*x - 1 into "y"
  h5py_ref.py check SLUICE.json H5PY.json               the answers agree
  h5py_ref.py checkmap SLUICE.h5 H5PY.h5                the maps agree
"""
import json
import sys

import h5py
import numpy as np


def chunks(d):
    step = d.chunks[0] if d.chunks else 256
    for r in range(0, d.shape[0], step):
        yield d[r:r + step]


def make(path, rows, cols, crows, gzip, f32=False, contig=False):
    """f32: values rounded to float32 precision (stored as float64), as an
    instrument's single-precision samples are: their low mantissa bytes are
    zero, so shuffle + gzip compresses them far better. contig: not chunked
    (what h5py writes when no chunks= nor compression is asked for); the
    same values as the plain file."""
    rng = np.random.default_rng(20261122)
    kw = dict(compression="gzip", compression_opts=1, shuffle=True) if gzip else {}
    with h5py.File(path, "w") as f:
        chunks = None if contig else (crows, cols)
        d = f.create_dataset("x", (rows, cols), dtype="<f8", chunks=chunks, **kw)
        d.attrs["units"] = "K"
        for r in range(0, rows, crows):
            # smooth field plus noise: compresses like measured data
            base = np.sin(np.arange(r, r + crows)[:, None] / 97.0) * 50.0
            if f32:
                d[r:r + crows] = (base + rng.normal(0.0, 1.0, (crows, cols))).astype(np.float32)
            else:
                d[r:r + crows] = base + rng.normal(0.0, 1.0, (crows, cols)).round(3)


def reduce(path, out):
    with h5py.File(path, "r") as f:
        d = f["x"]
        n, s, lo, hi = 0, 0.0, np.inf, -np.inf
        for c in chunks(d):
            n += c.size
            s += c.sum()
            lo = min(lo, c.min())
            hi = max(hi, c.max())
        hist = np.zeros(100, dtype=np.int64)
        for c in chunks(d):
            hist += np.histogram(c, 100, (lo, hi))[0]
    json.dump({"sum": s, "mean": s / n, "min": lo, "max": hi, "hist": hist.tolist()},
              open(out, "w"))


def map_(path, out):
    with h5py.File(path, "r") as f, h5py.File(out, "w") as g:
        d = f["x"]
        y = g.create_dataset("y", d.shape, dtype="<f8", chunks=d.chunks)
        step = d.chunks[0]
        for r in range(0, d.shape[0], step):
            y[r:r + step] = 2.5 * d[r:r + step] - 1


def check(sluice_json, ref_json):
    rows = json.load(open(sluice_json))
    ref = json.load(open(ref_json))
    first = rows[0]
    for k in ("min", "max"):
        if first[k] != ref[k]:
            sys.exit(f"{k}: sluice {first[k]!r}, h5py {ref[k]!r}")
    for k in ("sum", "mean"):
        if abs(first[k] - ref[k]) > 1e-9 * abs(ref[k]):
            sys.exit(f"{k}: sluice {first[k]!r}, h5py {ref[k]!r}")
    hist = [r["hist"] for r in rows]
    if hist != ref["hist"]:
        sys.exit(f"histograms differ: sluice {hist[:5]}..., h5py {ref['hist'][:5]}...")
    print("answers agree (min/max/histogram exact, sum/mean within 1e-9)")


def checkmap(a, b):
    with h5py.File(a, "r") as f, h5py.File(b, "r") as g:
        x, y = f["y"], g["y"]
        if x.shape != y.shape:
            sys.exit(f"shapes differ: {x.shape} {y.shape}")
        for r in range(0, x.shape[0], 1024):
            if not np.array_equal(x[r:r + 1024], y[r:r + 1024]):
                sys.exit(f"maps differ in rows {r}..{r + 1023}")
    print("maps agree (bit for bit)")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        kind = sys.argv[6] if len(sys.argv) > 6 else ""
        make(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
             kind.startswith("gzip"), kind == "gzip32", kind == "contig")
    elif cmd == "reduce":
        reduce(sys.argv[2], sys.argv[3])
    elif cmd == "map":
        map_(sys.argv[2], sys.argv[3])
    elif cmd == "check":
        check(sys.argv[2], sys.argv[3])
    elif cmd == "checkmap":
        checkmap(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
