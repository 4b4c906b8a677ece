/*
 * test_npy.c -- npy.read, raw.read and npy.write.
 *
 * Inputs and references come from numpy (/usr/bin/python3): arrays of every
 * supported dtype in both byte orders, header versions 1.0/2.0/3.0, 0-d and
 * empty arrays, rows larger than a block (split along the next axes). Each
 * is copied through npy.read ! npy.write with tiny blocks and reordering
 * (io workers, order=any) and numpy checks the copy equals the input
 * (values, dtype converted to native, shape). Hand-made malformed files
 * check the error messages (file, byte, both sizes): wrong magic, unknown
 * version, malformed dicts, structured dtypes, fortran order, truncated
 * data, trailing bytes, a huge declared shape. raw.read: shapes with -1,
 * size mismatches before and during the run.
 */
#include "test.h"
#include "sluice.h"
#include "sluice_io.h"
#include "sluice_stages.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_err[8192];
static char g_dir[] = "/tmp/sluice-npy-XXXXXX";

static int run_text(const char *text, unsigned threads) {
  sl_registry *reg;
  ASSERT_OK(sl_registry_create(&reg));
  ASSERT_OK(sl_stages_register_all(reg));
  ASSERT_OK(sl_io_register_all(reg));
  sl_pipeline *p;
  ASSERT_OK(sl_pipeline_create(&p, reg));
  g_err[0] = '\0';
  int rc = sl_pipeline_parse(p, "test.pipe", text, strlen(text), NULL, 0);
  if (rc < 0) {
    snprintf(g_err, sizeof g_err, "%s", sl_pipeline_errors(p));
  } else {
    sl_run_options o;
    sl_run_options_init(&o);
    o.threads = threads;
    o.progress = SL_PROGRESS_OFF;
    sl_run *run;
    ASSERT_OK(sl_run_create(&run, p, &o));
    rc = sl_run_execute(run);
    if (rc) snprintf(g_err, sizeof g_err, "%s", sl_run_error(run));
    for (size_t i = 0; rc && i < sl_run_failure_count(run); i++) {
      const char *item, *stage, *msg;
      sl_run_failure(run, i, &item, &stage, &msg);
      size_t at = strlen(g_err);
      snprintf(g_err + at, sizeof g_err - at, "\n%s|%s|%s", item, stage, msg);
    }
    sl_run_destroy(run);
  }
  sl_pipeline_destroy(p);
  sl_registry_destroy(reg);
  return rc;
}

static void run_ok(const char *text, unsigned threads) {
  if (run_text(text, threads) != 0) SL__FAIL("run failed: %s\n  pipeline: %s", g_err, text);
}

/* Runs python code with the working folder as argv[1]. */
static int py(const char *code) {
  char path[256], cmd[512];
  snprintf(path, sizeof path, "%s/t.py", g_dir);
  FILE *f = fopen(path, "w");
  ASSERT(f);
  fprintf(f, "import sys, os, numpy as np\nos.chdir(sys.argv[1])\n%s\n", code);
  fclose(f);
  snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s", path, g_dir);
  int st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void setup(void) {
  if (g_dir[strlen(g_dir) - 1] == 'X') ASSERT(mkdtemp(g_dir));
}

static void teardown(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  ASSERT(system(cmd) == 0);
}

static void write_bytes(const char *name, const void *p, size_t n) {
  char path[300];
  snprintf(path, sizeof path, "%s/%s", g_dir, name);
  FILE *f = fopen(path, "wb");
  ASSERT(f);
  ASSERT(fwrite(p, 1, n, f) == n);
  fclose(f);
}

/* A v1.0 .npy file with header dict `dict` (padded) and `data` bytes. */
static void write_npy(const char *name, const char *dict, size_t data, int version) {
  unsigned char buf[4096];
  size_t pre = version == 1 ? 10 : 12, dl = strlen(dict);
  size_t total = (pre + dl + 1 + 63) / 64 * 64, hl = total - pre;
  memcpy(buf, "\x93NUMPY", 6);
  buf[6] = (unsigned char)version;
  buf[7] = 0;
  for (size_t i = 0; i < pre - 8; i++) buf[8 + i] = (unsigned char)(hl >> (8 * i));
  memcpy(buf + pre, dict, dl);
  memset(buf + pre + dl, ' ', total - pre - dl - 1);
  buf[total - 1] = '\n';
  ASSERT(total + data <= sizeof buf);
  memset(buf + total, 0x3F, data);
  write_bytes(name, buf, total + data);
}

static void expect_read_error_args(const char *name, const char *args, const char *msg) {
  char text[512];
  snprintf(text, sizeof text, "npy.read file=%s/%s %s ! reduce ops=count ! npy.write "
           "file=%s/o.npy", g_dir, name, args, g_dir);
  ASSERT(run_text(text, 1) != 0);
  ASSERT_CONTAINS(g_err, msg);
  ASSERT_CONTAINS(g_err, name);
  char out[300];
  snprintf(out, sizeof out, "%s/o.npy", g_dir);
  ASSERT(access(out, F_OK) != 0);
}

static void expect_read_error(const char *name, const char *msg) {
  expect_read_error_args(name, "", msg);
}

TEST(npy_roundtrip_vs_numpy) {
  setup();
  ASSERT_EQ(py("rng = np.random.default_rng(7)\n"
               "A = {}\n"
               "for t in ['<f8','>f8','<f4','>f4','<i8','>i8','<i4','>i4','<i2','>i2','|i1',\n"
               "          '<u8','>u8','<u4','>u4','<u2','>u2','|u1','|b1']:\n"
               "    k = t[1:] + ('be' if t[0] == '>' else 'le')\n"
               "    A[k] = (rng.normal(0, 1e3, (37, 11)) if t[1] == 'f' else rng.integers(0, 200, (37, 11))).astype(t)\n"
               "A['r3'] = rng.normal(0, 1, (5, 6, 7))\n"
               "A['r4wide'] = rng.normal(0, 1, (3, 2, 5, 700))\n"
               "A['zero_d'] = np.array(4.25)\n"
               "A['empty'] = np.zeros((3, 0, 2), '<i4')\n"
               "A['one_d'] = np.arange(10000, dtype='<u2')\n"
               "for k, v in A.items(): np.save(k + '.npy', v)\n"
               "np.lib.format.write_array(open('v2.npy','wb'), A['r3'], version=(2, 0))\n"
               "np.lib.format.write_array(open('v3.npy','wb'), A['r3'], version=(3, 0))\n"
               "open('list','w').write('\\n'.join(list(A) + ['v2', 'v3']) + '\\n')\n"),
            0);
  char list[300];
  snprintf(list, sizeof list, "%s/list", g_dir);
  FILE *f = fopen(list, "r");
  ASSERT(f);
  char name[64];
  int n = 0;
  while (fscanf(f, "%63s", name) == 1) {
    char text[600];
    snprintf(text, sizeof text,
             "npy.read file=%s/%s.npy block=4KiB ! identity ! npy.write file=%s/%s.out.npy "
             "workers=3 order=any", g_dir, name, g_dir, name);
    run_ok(text, 1 + (unsigned)(n++ % 2));
  }
  fclose(f);
  ASSERT(n > 20);
  ASSERT_EQ(py("bad = 0\n"
               "for k in open('list').read().split():\n"
               "    a, b = np.load(k + '.npy'), np.load(k + '.out.npy')\n"
               "    same = a.shape == b.shape and a.dtype.newbyteorder('=') == b.dtype and \\\n"
               "        b.dtype.isnative and np.array_equal(a, b)\n"
               "    if not same: print('differs:', k, a.dtype, b.dtype, a.shape, b.shape); bad += 1\n"
               "sys.exit(1 if bad else 0)\n"),
            0);
  teardown();
}

TEST(npy_dtype_conversion) {
  setup();
  ASSERT_EQ(py("np.save('c.npy', np.arange(-50, 50, dtype='>i2').reshape(10, 10))\n"), 0);
  char text[600];
  snprintf(text, sizeof text, "npy.read file=%s/c.npy dtype=float32 block=4KiB ! npy.write "
           "file=%s/c32.npy", g_dir, g_dir);
  run_ok(text, 2);
  snprintf(text, sizeof text, "npy.read file=%s/c.npy dtype=u1 ! npy.write file=%s/cu1.npy",
           g_dir, g_dir);
  run_ok(text, 1);
  ASSERT_EQ(py("a = np.load('c.npy')\n"
               "b = np.load('c32.npy'); c = np.load('cu1.npy')\n"
               "ok = b.dtype == np.float32 and np.array_equal(a.astype(np.float32), b)\n"
               "ok = ok and c.dtype == np.uint8 and np.array_equal(a.astype(np.uint8), c)\n"
               "sys.exit(0 if ok else 1)\n"),
            0);
  /* float to integer needs a rounding rule: refused with a clear error. */
  ASSERT_EQ(py("np.save('f.npy', np.ones(10))\n"), 0);
  expect_read_error_args("f.npy", "dtype=int32", "cannot convert float64 to int32");
  snprintf(text, sizeof text, "npy.read file=%s/f.npy dtype=int33 ! npy.write file=%s/x.npy",
           g_dir, g_dir);
  ASSERT_EQ(run_text(text, 1), SL_EPARSE);
  ASSERT_CONTAINS(g_err, "dtype='int33'");
  teardown();
}

TEST(npy_malformed_headers) {
  setup();
  static const struct { const char *dict; size_t data; const char *msg; } cases[] = {
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }", 31,
       "truncated: shape (4,) of float64 needs 32 bytes of data after the 128-byte header, the file has 31"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }", 33, "1 bytes after the array data"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (4000000000, 4000000000, 4000000000), }",
       16, "too large"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }", 16,
       "needs 8000000000000 bytes"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (4), }", 32, "a 1-tuple needs a trailing comma"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (-4,), }", 32, "non-negative integer"},
      {"{'descr': '<f8', 'fortran_order': False }", 8, "missing key 'shape'"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'x': 1}", 8, "unknown key"},
      {"{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (1,)}", 8, "key listed twice"},
      {"{'descr': '<f8' 'fortran_order': False, 'shape': (1,)}", 8, "byte 26 (column 17"},
      {"{'descr': '<f8', 'fortran_order': Maybe, 'shape': (1,)}", 8, "expected True or False"},
      {"{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (1,)}", 8, "structured dtypes"},
      {"{'descr': '<c16', 'fortran_order': False, 'shape': (1,)}", 16, "unsupported dtype '<c16'"},
      {"{'descr': '|f8', 'fortran_order': False, 'shape': (1,)}", 8, "unsupported dtype '|f8'"},
      {"{'descr': '<f8', 'fortran_order': True, 'shape': (2, 2)}", 32, "fortran_order is True"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (1,)} x", 8, "unexpected text after the dict"},
      {"{'descr': '<f8, 'fortran_order': False, 'shape': (1,)}", 8, "expected ',' or '}'"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1)}", 8, "more than 8 axes"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char name[32];
    snprintf(name, sizeof name, "bad%zu.npy", i);
    write_npy(name, cases[i].dict, cases[i].data, 1);
    expect_read_error(name, cases[i].msg);
  }
  /* Magic, version, header length. */
  write_bytes("magic.npy", "\x93NUMPX\x01\x00\x10\x00{}              ", 26);
  expect_read_error("magic.npy", "wrong magic");
  write_bytes("ver.npy", "\x93NUMPY\x04\x00\x10\x00{}              ", 26);
  expect_read_error("ver.npy", "unsupported .npy format version 4.0");
  write_bytes("hlen.npy", "\x93NUMPY\x02\x00\xff\xff\xff\x7f{}    ", 18);
  expect_read_error("hlen.npy", "header length 2147483647 exceeds the 1 MiB limit");
  write_bytes("hlen1.npy", "\x93NUMPY\x01\x00\x00\x10{}    ", 16);
  expect_read_error("hlen1.npy", "runs past the end");
  write_bytes("short.npy", "\x93NUM", 4);
  expect_read_error("short.npy", "not a .npy file");
  /* A valid v2 header written by hand reads. */
  write_npy("ok2.npy", "{'shape': (2, 2), 'fortran_order': False, 'descr': '>i4'}", 16, 2);
  char text[512];
  snprintf(text, sizeof text, "npy.read file=%s/ok2.npy ! reduce ops=count,sum ! npy.write "
           "file=%s/o2.npy", g_dir, g_dir);
  run_ok(text, 1);
  ASSERT_EQ(py("r = np.load('o2.npy')\n"
               "sys.exit(0 if r.shape == (1, 2) and r[0, 0] == 4 and r[0, 1] == 4 * 0x3F3F3F3F else 1)\n"),
            0);
  teardown();
}

TEST(raw_read_shapes_and_sizes) {
  setup();
  ASSERT_EQ(py("a = np.arange(24 * 1000, dtype='>f4').reshape(24, 1000)\n"
               "a.tofile('r.bin')\n"
               "open('h.bin', 'wb').write(b'HEAD' + a.tobytes())\n"),
            0);
  const char *good[] = {"shape=24x1000", "shape=24,1000", "shape=-1x1000", "shape=24x-1",
                        "shape=2x-1x100 offset=0"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    char text[600];
    snprintf(text, sizeof text, "raw.read file=%s/r.bin dtype=>f4 %s block=4KiB ! "
             "npy.write file=%s/r%zu.npy", g_dir, good[i], g_dir, i);
    run_ok(text, 2);
  }
  char text[600];
  snprintf(text, sizeof text, "raw.read file=%s/h.bin dtype=>f4 shape=24x1000 offset=4 "
           "to=float64 ! npy.write file=%s/h.npy", g_dir, g_dir);
  run_ok(text, 1);
  ASSERT_EQ(py("a = np.fromfile('r.bin', '>f4')\n"
               "ok = all(np.array_equal(np.load('r%d.npy' % d).ravel(), a) for d in range(5))\n"
               "ok = ok and np.load('r0.npy').shape == (24, 1000) and np.load('r4.npy').shape == (2, 120, 100)\n"
               "h = np.load('h.npy'); ok = ok and h.dtype == np.float64 and np.array_equal(h.ravel(), a)\n"
               "sys.exit(0 if ok else 1)\n"),
            0);
  const struct { const char *args, *msg; } bad[] = {
      {"dtype=>f4 shape=24x999", "has 96000 bytes, but shape (24, 999) of float32 needs 95904"},
      {"dtype=f8 shape=24x1000", "needs 192000"},
      {"dtype=>f4 shape=-1x7", "not a whole number of 28-byte slices"},
      {"dtype=>f4 shape=-1x-1", "at most one axis may be -1"},
      {"dtype=>f4 shape=24y1000", "expected 'x' or ','"},
      {"dtype=float128 shape=1", "dtype='float128'"},
      {"dtype=>f4 shape=24x1000 layout=F", "layout=F"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    snprintf(text, sizeof text, "raw.read file=%s/r.bin %s ! npy.write file=%s/bad.npy", g_dir,
             bad[i].args, g_dir);
    ASSERT(run_text(text, 1) != 0);
    ASSERT_CONTAINS(g_err, bad[i].msg);
  }
  teardown();
}

/* Tables from reduce: a 2-D float64 array, nulls as NaN. */
TEST(npy_write_table) {
  setup();
  ASSERT_EQ(py("np.save('t.npy', np.arange(12, dtype=np.int64).reshape(3, 4))\n"), 0);
  char text[600];
  snprintf(text, sizeof text, "npy.read file=%s/t.npy ! reduce ops=count,mean,max,hist(2,0,11) "
           "axis=1 ! npy.write file=%s/tab.npy", g_dir, g_dir);
  run_ok(text, 2);
  ASSERT_EQ(py("r = np.load('tab.npy')\n"
               "want = np.array([[0,4,1.5,3,0,5.5,4],[0,np.nan,np.nan,np.nan,5.5,11,0],\n"
               "                 [1,4,5.5,7,0,5.5,2],[1,np.nan,np.nan,np.nan,5.5,11,2],\n"
               "                 [2,4,9.5,11,0,5.5,0],[2,np.nan,np.nan,np.nan,5.5,11,4]])\n"
               "ok = r.dtype == np.float64 and r.shape == want.shape and np.array_equal(r, want, equal_nan=True)\n"
               "print(r) if not ok else None\n"
               "sys.exit(0 if ok else 1)\n"),
            0);
  teardown();
}

/* pipelines/npy_stats.pipe, end to end, against numpy. */
TEST(npy_stats_pipeline) {
  setup();
  ASSERT_EQ(py("np.save('s.npy', np.random.default_rng(3).normal(5, 2, (3000, 40)))\n"), 0);
  const char *src = getenv("SLUICE_SOURCE_DIR");
  const char *bin = getenv("SLUICE_BIN");
  if (!src || !bin) SL__FAIL("SLUICE_SOURCE_DIR / SLUICE_BIN not set (run through ctest)");
  char cmd[1200];
  for (int th = 1; th <= 2; th++) {
    snprintf(cmd, sizeof cmd, "%s run %s/pipelines/npy_stats.pipe in=%s/s.npy out=%s/s%d.json "
             "--threads %d --quiet", bin, src, g_dir, g_dir, th, th);
    ASSERT_EQ(system(cmd), 0);
  }
  ASSERT_EQ(py("import json, math\n"
               "a = np.load('s.npy')\n"
               "r = json.load(open('s1.json'))\n"
               "ok = open('s1.json').read() == open('s2.json').read() and len(r) == 1\n"
               "r = r[0]; want = {'count': a.size, 'sum': a.sum(), 'mean': a.mean(), 'std': a.std(),\n"
               "                  'min': a.min(), 'max': a.max()}\n"
               "ok = ok and list(r) == list(want)\n"
               "for k, v in want.items():\n"
               "    if abs(r[k] - v) > 1e-12 * abs(v): print(k, r[k], v); ok = False\n"
               "sys.exit(0 if ok else 1)\n"),
            0);
  teardown();
}

static const sl_test_case cases[] = {
    SL_CASE(npy_roundtrip_vs_numpy, "unit"),
    SL_CASE(npy_dtype_conversion, "unit"),
    SL_CASE(npy_malformed_headers, "unit"),
    SL_CASE(raw_read_shapes_and_sizes, "unit"),
    SL_CASE(npy_write_table, "unit"),
    SL_CASE(npy_stats_pipeline, "e2e"),
};
SL_TEST_MAIN(cases)
