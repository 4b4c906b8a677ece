#!/usr/bin/python3
"""Checks that a tool really made the thumbnails bench/images asked for.

usage: check_thumbs.py IN OUT [--size 256x256] [--level 6]

Every *.png under IN must have exactly one output under OUT with the same
file name (any subfolder: vipsthumbnail and mogrify write flat, sluice and
pillow_thumbs.py mirror the tree), and each output must
  - be a PNG that Pillow opens and whose pixels decode,
  - fit inside SIZE touching it (the inputs are all larger), with the
    aspect kept (the other side within 1 pixel of the exact value),
  - have been deflated at LEVEL: the zlib header of the IDAT stream
    carries the level class (FLEVEL: 0 for levels 0-1, 1 for 2-5, 2 for
    6, 3 for 7-9), which zlib, libdeflate and libvips all write.
Prints one line (count, modes, FLEVEL values seen); exit status 1 and the
problems on stderr when anything is off.
"""
import argparse
import collections
import os
import struct
import sys

from PIL import Image


def pngs_by_name(root):
    out = {}
    for parent, _, files in os.walk(root):
        for name in files:
            if name.endswith(".png"):
                out.setdefault(name, []).append(os.path.join(parent, name))
    return out


def zlib_flevel(path):
    """FLEVEL (0..3) of the first IDAT's zlib header, or None."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT" and length >= 2:
            return data[pos + 9] >> 6
        pos += 12 + length
    return None


def expected_flevel(level):
    return 0 if level < 2 else 1 if level < 6 else 2 if level == 6 else 3


def check_one(src, dst, bw, bh, want_flevel):
    """Returns (problem or None, mode, flevel)."""
    with Image.open(src) as im:
        w, h = im.size
    with Image.open(dst) as im:
        tw, th = im.size
        mode = im.mode
        im.load()
    flevel = zlib_flevel(dst)
    scale = min(bw / w, bh / h)
    ew, eh = w * scale, h * scale
    if tw > bw or th > bh or (tw != bw and th != bh):
        return "%s: %dx%d does not touch the %dx%d box" % (dst, tw, th, bw, bh), mode, flevel
    if abs(tw - ew) > 1 or abs(th - eh) > 1:
        return "%s: %dx%d, expected about %.1fx%.1f" % (dst, tw, th, ew, eh), mode, flevel
    if flevel != want_flevel:
        return "%s: zlib FLEVEL %s, level %s expected" % (dst, flevel, want_flevel), mode, flevel
    return None, mode, flevel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--size", default="256x256")
    ap.add_argument("--level", type=int, default=6)
    a = ap.parse_args()
    bw, bh = (int(v) for v in a.size.split("x"))
    want = expected_flevel(a.level)
    inputs, outputs = pngs_by_name(a.src), pngs_by_name(a.dst)
    problems, modes, flevels = [], collections.Counter(), collections.Counter()
    for name, srcs in sorted(inputs.items()):
        dsts = outputs.get(name, [])
        if len(srcs) != 1 or len(dsts) != 1:
            problems.append("%s: %d inputs, %d outputs" % (name, len(srcs), len(dsts)))
            continue
        problem, mode, flevel = check_one(srcs[0], dsts[0], bw, bh, want)
        modes[mode] += 1
        flevels[flevel] += 1
        if problem:
            problems.append(problem)
    extra = sorted(set(outputs) - set(inputs))
    problems += ["%s: output without an input" % n for n in extra]
    for p in problems[:20]:
        print("check_thumbs: " + p, file=sys.stderr)
    print("%d outputs checked: modes %s, zlib FLEVEL %s, %d problems" % (
        len(inputs), dict(sorted(modes.items())), dict(flevels), len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
