#!/usr/bin/python3
"""h5_reference.py -- reference values for tests/test_h5.c, from h5py/numpy.

Usage: h5_reference.py OUTDIR FILE...

Visits every dataset of every FILE with h5py and writes one line per dataset
to stdout (tab-separated), and for readable numeric datasets the values, as
native-order bytes of the dtype h5.read should produce, to OUTDIR/<n>.bin:

  ok     FILE  DATASET  DTYPE  SHAPE(comma-separated)  BINFILE
  empty  FILE  DATASET  -      -                       -      (H5S_NULL)
  error  FILE  DATASET  WHAT   -                       -      (h5.read must fail;
                                                        WHAT must be in the message)
  skip   FILE  DATASET  WHY    -                       -
  openerror FILE  -     MESSAGE

h5.read's dtype rules: integers keep their width and sign (enums and
bitfields too: h5py's bool is an enum over int8), float16 becomes float32.
"""
import os
import sys

import h5py
import numpy as np

READABLE_FILTERS = {1, 2, 3, 4, 5, 6}  # built into Debian's libhdf5 (szip via libaec)
MAX_ELEMENTS = 1 << 24
MAX_PER_FILE = 24  # big groups: a sample keeps the test fast


def filters_of(ds):
    plist = ds.id.get_create_plist()
    return [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]


def expected_dtype(dt, ds):
    if dt.kind == 'b':  # h5py's bool: an enum over a 1-byte integer
        signed = ds.id.get_type().get_super().get_sign() == h5py.h5t.SGN_2
        return np.dtype('int8' if signed else 'uint8')
    if dt.kind == 'f' and dt.itemsize < 4:
        return np.dtype('float32')
    if dt.kind in 'iuf':
        return dt.newbyteorder('=')
    return None


def main():
    out, files = sys.argv[1], sys.argv[2:]
    n = 0
    for path in files:
        try:
            f = h5py.File(path, 'r')
        except Exception as e:  # noqa: BLE001 - any failure is the answer
            print('openerror\t%s\t-\t%s' % (path, str(e).replace('\t', ' ')))
            continue
        names = []
        f.visititems(lambda name, obj: names.append(name)
                     if isinstance(obj, h5py.Dataset) else None)
        if len(names) > MAX_PER_FILE:
            step = len(names) / MAX_PER_FILE
            names = [names[int(i * step)] for i in range(MAX_PER_FILE)]
        for name in names:
            ds = f[name]
            dname = '/' + name
            base = ds.dtype
            if h5py.check_enum_dtype(base) is not None or base.kind in 'iufb':
                want = expected_dtype(base, ds)
            else:
                want = None
            if want is None:
                print('error\t%s\t%s\tunsupported datatype\t-\t-' % (path, dname))
                continue
            bad = [x for x in filters_of(ds) if x not in READABLE_FILTERS]
            if bad:
                print('error\t%s\t%s\tfilter %d\t-\t-' % (path, dname, bad[0]))
                continue
            if ds.shape is None:
                print('empty\t%s\t%s\t-\t-\t-' % (path, dname))
                continue
            if ds.size > MAX_ELEMENTS:
                print('skip\t%s\t%s\ttoo large\t-\t-' % (path, dname))
                continue
            try:
                values = np.ascontiguousarray(ds[()], dtype=want)
            except Exception as e:  # noqa: BLE001 - h5py could not read it
                print('error\t%s\t%s\t-\t%s\t-' % (path, dname,
                                                  str(e).replace('\t', ' ')))
                continue
            n += 1
            binfile = os.path.join(out, '%d.bin' % n)
            with open(binfile, 'wb') as fh:
                fh.write(values.tobytes())
            print('ok\t%s\t%s\t%s\t%s\t%s' % (path, dname, want.name,
                                              ','.join(str(x) for x in ds.shape),
                                              binfile))
        f.close()


if __name__ == '__main__':
    main()
