#!/usr/bin/python3
"""Pillow's side of bench/images: thumbnails of every *.png under IN.

usage: pillow_thumbs.py IN OUT [--size 256x256] [--level 6] [--procs 2]

What a Python user would write for the job sluice's thumbnails.pipe does:
a multiprocessing.Pool of PROCS processes, each image opened, shrunk with
Image.thumbnail(SIZE, LANCZOS) (keeps the aspect, fits inside SIZE, never
enlarges; Pillow's default reducing_gap=2.0 first reduces by an integer
box factor, as sluice and libvips do) and saved as PNG at zlib level
LEVEL. The input tree is mirrored under OUT, like files.write does.
Prints one line: images=N failed=F seconds=S.
"""
import argparse
import os
import sys
import time
from multiprocessing import Pool

from PIL import Image

LANCZOS = getattr(Image, "Resampling", Image).LANCZOS


def list_pngs(root):
    """Every *.png under root, as paths relative to it, sorted."""
    found = []
    for parent, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            if name.endswith(".png"):
                found.append(os.path.relpath(os.path.join(parent, name), root))
    return sorted(found)


def thumb(job):
    """One image: returns None, or the error message (broken files go on)."""
    src, dst, size, level = job
    try:
        with Image.open(src) as im:
            im.thumbnail(size, LANCZOS)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            im.save(dst, "PNG", compress_level=level)
        return None
    except Exception as e:  # noqa: BLE001 -- report, as sluice does
        return "%s: %s" % (src, e)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--size", default="256x256")
    ap.add_argument("--level", type=int, default=6)
    ap.add_argument("--procs", type=int, default=2)
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    jobs = [(os.path.join(a.src, r), os.path.join(a.dst, r), (w, h), a.level)
            for r in list_pngs(a.src)]
    t0 = time.perf_counter()
    with Pool(a.procs) as pool:
        errors = [e for e in pool.imap_unordered(thumb, jobs) if e]
    secs = time.perf_counter() - t0
    for e in errors:
        print(e, file=sys.stderr)
    print("images=%d failed=%d seconds=%.3f" % (len(jobs), len(errors), secs))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
