/*
 * test_reduce.c -- the `reduce` stage and its partials.
 *
 * Against numpy: a Python script (embedded below, run with /usr/bin/python3)
 * writes .npy inputs of many dtypes, ranks 1..4, with NaN and inf, and a
 * list of cases; each case is run through npy.read ! reduce ! json.write,
 * and the script then checks every JSON value against numpy (and
 * math.fsum for sums): counts, extremes, arg-indices and histograms
 * exactly, sum/mean/var/std to 1e-12 relative.
 *
 * Determinism: t.arr, a source defined here, emits the chunks of a
 * generated float64 array in a scrambled seq order (a permutation chosen
 * by seed=); the result written with npy.write (raw doubles) must be
 * byte-identical for every permutation and for 1, 2 and 4 threads. The
 * partials themselves are checked to give the same bits when chunks are
 * grouped differently (as MPI ranks would) and shipped through pack and
 * unpack, and unpack must reject corrupt bytes cleanly.
 */
#include "test.h"
#include "sluice.h"
#include "sluice_io.h"
#include "sluice_stages.h"
#include "../stages/reduce_internal.h"

#include <math.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ======================================================================
 * Running pipelines
 * ====================================================================== */

static char g_err[8192];

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  ASSERT(buf);
  ASSERT(fread(buf, 1, (size_t)n, f) == (size_t)n);
  fclose(f);
  buf[n] = '\0';
  if (len) *len = (size_t)n;
  return buf;
}

static const sl_stage_def t_arr;

/* Runs pipeline text with `threads`; @return the run's status, the first
 * error (pipeline or item) in g_err. */
static int run_text(const char *text, unsigned threads) {
  sl_registry *reg;
  ASSERT_OK(sl_registry_create(&reg));
  ASSERT_OK(sl_stages_register_all(reg));
  ASSERT_OK(sl_io_register_all(reg));
  ASSERT_OK(sl_registry_add(reg, &t_arr));
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
    const char *item = "", *stage = "", *msg = sl_run_error(run);
    if (rc) snprintf(g_err, sizeof g_err, "%s", msg);
    for (size_t i = 0; rc && i < sl_run_failure_count(run); i++) {
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
  int rc = run_text(text, threads);
  if (rc != 0) SL__FAIL("run failed (%d): %s\n  pipeline: %s", rc, g_err, text);
}

static int python(const char *script, const char *arg) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s", script, arg);
  int st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void make_dir(char *tmpl) { ASSERT(mkdtemp(tmpl)); }

static void remove_tree(const char *dir) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  ASSERT(system(cmd) == 0);
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  ASSERT(f);
  fputs(text, f);
  fclose(f);
}

/* ======================================================================
 * numpy references
 * ====================================================================== */

/* gen DIR: writes the inputs and DIR/cases (name|file|ops|axis|block).
 * check DIR: compares DIR/<name>.json with numpy. */
static const char numpy_script[] =
    "import sys, os, json, math\n"
    "import numpy as np, warnings\n"
    "warnings.simplefilter('ignore')\n"
    "mode, d = sys.argv[1], sys.argv[2]\n"
    "rng = np.random.default_rng(12345)\n"
    "ALL = 'count,sum,mean,var,std,min,max,argmin,argmax'\n"
    "def arrays():\n"
    "    a = {}\n"
    "    a['f8_1d'] = rng.normal(3.0, 2.0, 10007)\n"
    "    x = rng.normal(-1.5, 4.0, (300, 17)).astype('<f4'); a['f4_2d'] = x\n"
    "    x = rng.normal(2.0, 1.0, (50, 7, 9)); x[3, 2, 1] = np.nan; x[10, 0, 0] = np.nan\n"
    "    a['f8_3d_nan'] = x\n"
    "    x = rng.normal(0.5, 1.0, (400,)); x[17] = np.inf; a['f8_inf'] = x\n"
    "    x = rng.normal(0.5, 1.0, (400,)); x[17] = np.inf; x[200] = -np.inf; a['f8_infs'] = x\n"
    "    a['be_f8'] = rng.normal(10.0, 3.0, (123, 45)).astype('>f8')\n"
    "    a['be_i4'] = rng.integers(-2**31, 2**31, (257, 33)).astype('>i4')\n"
    "    a['i8'] = rng.integers(-2**40, 2**40, (5000,)).astype('<i8')\n"
    "    a['u8'] = rng.integers(0, 2**62, (999,), dtype=np.uint64) * np.uint64(3)\n"
    "    a['u1'] = rng.integers(0, 256, (64, 64)).astype('u1')\n"
    "    a['i1'] = rng.integers(-128, 128, (1000,)).astype('i1')\n"
    "    a['i2'] = rng.integers(-3000, 3000, (40, 50)).astype('<i2')\n"
    "    a['u2'] = rng.integers(0, 65536, (40, 50)).astype('>u2')\n"
    "    a['u4'] = rng.integers(0, 2**32, (3000,)).astype('<u4')\n"
    "    a['b1'] = rng.integers(0, 2, (777,)).astype('?')\n"
    "    a['f8_4d'] = rng.normal(1.0, 2.0, (6, 5, 4, 3))\n"
    "    a['wide'] = rng.normal(5.0, 1.0, (4, 3000))\n"
    "    a['ints_edges'] = rng.integers(-2, 13, (2000,)).astype('<i4')\n"
    "    a['zero_d'] = np.array(2.5)\n"
    "    a['empty'] = np.zeros((0, 5))\n"
    "    a['const'] = np.full((100,), 7.0)\n"
    "    # every edge of hist(7,-1,1.3) and its neighbours, NaN, infinities,\n"
    "    # values just outside the range, among uniform ones\n"
    "    e = np.linspace(-1.0, 1.3, 8)\n"
    "    v = np.concatenate([e, np.nextafter(e, np.inf), np.nextafter(e, -np.inf),\n"
    "                        (e[1:] + e[:-1]) / 2, [np.nan, np.inf, -np.inf, -1.5, 1.8],\n"
    "                        rng.uniform(-1.1, 1.4, 3000)])\n"
    "    a['edges'] = rng.permutation(np.tile(v, 2))\n"
    "    return a\n"
    "CASES = [\n"
    "  ('f8_1d', ALL + ',hist(20,-1,7)', 'none', '4KiB'),\n"
    "  ('f8_1d_big', ALL, 'none', '16MiB'),\n"
    "  ('f4_2d', ALL + ',hist(16,-10,8)', 'none', '4KiB'),\n"
    "  ('f8_3d_nan', ALL, 'none', '4KiB'),\n"
    "  ('f8_3d_nan_ax1', ALL, '1', '4KiB'),\n"
    "  ('f8_inf', ALL, 'none', '4KiB'),\n"
    "  ('f8_infs', ALL, 'none', '4KiB'),\n"
    "  ('be_f8', ALL, 'none', '8KiB'),\n"
    "  ('be_i4', ALL + ',hist(7,-1e9,2e9)', 'none', '4KiB'),\n"
    "  ('i8', ALL, 'none', '4KiB'),\n"
    "  ('u8', 'count,min,max,argmin,argmax,mean', 'none', '4KiB'),\n"
    "  ('u1', ALL + ',hist(10,0,255)', 'none', '4KiB'),\n"
    "  ('i1', ALL, 'none', '4KiB'),\n"
    "  ('i2', ALL, '0', '4KiB'),\n"
    "  ('u2', ALL, '-1', '4KiB'),\n"
    "  ('u4', ALL, 'none', '4KiB'),\n"
    "  ('b1', ALL, 'none', '4KiB'),\n"
    "  ('f8_4d', ALL, 'none', '4KiB'),\n"
    "  ('f8_4d_ax0', ALL, '0', '4KiB'),\n"
    "  ('f8_4d_ax1', ALL + ',hist(4,-2,4)', '1', '4KiB'),\n"
    "  ('f8_4d_ax2', ALL, '2', '4KiB'),\n"
    "  ('f8_4d_ax3', ALL, '3', '4KiB'),\n"
    "  ('wide', ALL, 'none', '4KiB'),\n"
    "  ('wide_ax0', ALL, '0', '4KiB'),\n"
    "  ('wide_ax1', ALL, '1', '4KiB'),\n"
    "  ('ints_edges', 'count,hist(10,0,10),hist_dummy', 'none', '4KiB'),\n"
    "  ('zero_d', ALL, 'none', '4KiB'),\n"
    "  ('empty', 'count,sum,mean,min,argmax', 'none', '4KiB'),\n"
    "  ('const', ALL + ',hist(3,7,7)', 'none', '4KiB'),\n"
    "  ('f8_1d_bigh', ALL + ',hist(50,-5,11)', 'none', '16MiB'),\n"
    "  ('edges_s0', 'count,hist(7,-1,1.3)', 'none', '4KiB'),\n"
    "  ('edges_s1', 'count,hist(7,-1,1.3)', 'none', '4KiB'),\n"
    "  ('edges_s2', 'count,hist(7,-1,1.3)', 'none', '4KiB'),\n"
    "  ('edges_wide_s1', 'count,hist(300,-1,1.3)', 'none', '4KiB'),\n"
    "  ('edges_wide_s2', 'count,hist(300,-1,1.3)', 'none', '64KiB'),\n"
    "]\n"
    "# name suffixes: _sN runs with the binning kernels capped at level N\n"
    "# (0 scalar, 1 SSE2, 2 AVX2); the others name variants of one array\n"
    "def base(name):\n"
    "    for k in ('_s0', '_s1', '_s2', '_wide', '_bigh', '_big', '_ax0', '_ax1', '_ax2', '_ax3'):\n"
    "        if name.endswith(k): name = name[:-len(k)]\n"
    "    return name\n"
    "def ops_of(ops): return ops.replace(',hist_dummy', '')\n"
    "if mode == 'gen':\n"
    "    for k, v in arrays().items(): np.save(os.path.join(d, k + '.npy'), v)\n"
    "    with open(os.path.join(d, 'cases'), 'w') as f:\n"
    "        for name, ops, axis, block in CASES:\n"
    "            f.write('%s|%s.npy|%s|%s|%s\\n' % (name, base(name), ops_of(ops), axis, block))\n"
    "    sys.exit(0)\n"
    "bad = []\n"
    "def close(got, want, what, rel=1e-12):\n"
    "    if want is None or (isinstance(want, float) and math.isnan(want)):\n"
    "        if got is not None: bad.append('%s: got %r, want null' % (what, got))\n"
    "        return\n"
    "    if isinstance(want, float) and math.isinf(want):\n"
    "        if got is not None: bad.append('%s: got %r, want null (inf)' % (what, got))\n"
    "        return\n"
    "    if got is None or abs(got - want) > rel * max(abs(want), 1e-300):\n"
    "        bad.append('%s: got %r, want %r' % (what, got, want))\n"
    "def exact(got, want, what):\n"
    "    if isinstance(want, float) and (math.isnan(want) or math.isinf(want)): want = None\n"
    "    if isinstance(want, float) and isinstance(got, int) and not isinstance(got, bool): got = float(got)\n"
    "    if got != want or type(got) != type(want):\n"
    "        bad.append('%s: got %r, want %r' % (what, got, want))\n"
    "def py(v):\n"
    "    if isinstance(v, (np.bool_, bool)): return bool(v)\n"
    "    if isinstance(v, (np.integer, int)): return int(v)\n"
    "    return float(v)\n"
    "def expect(x, ops, what, rows, r0, nb):\n"
    "    # x: a 1-D float64/int view of the cell's elements; rows[r0:r0+nb]\n"
    "    row = rows[r0]\n"
    "    isf = x.dtype.kind == 'f'\n"
    "    xf = x.astype(np.float64)\n"
    "    n = x.size\n"
    "    for op in ops.split(','):\n"
    "        w = what + ' ' + op\n"
    "        if op == 'count': exact(row['count'], n, w)\n"
    "        elif op == 'sum':\n"
    "            if isf:\n"
    "                s = float(np.sum(xf))\n"
    "                if math.isfinite(s):\n"
    "                    close(row['sum'], math.fsum(xf.tolist()), w + ' (fsum)', 1e-13)\n"
    "                close(row['sum'], s, w)\n"
    "            else: exact(row['sum'], int(sum(int(v) for v in x.tolist())), w)\n"
    "        elif op == 'mean': close(row['mean'], float(np.mean(xf)) if n else None, w)\n"
    "        elif op == 'var': close(row['var'], float(np.var(xf)) if n else None, w)\n"
    "        elif op == 'std': close(row['std'], float(np.std(xf)) if n else None, w)\n"
    "        elif op in ('min', 'max', 'argmin', 'argmax'):\n"
    "            if n == 0: exact(row[op], None, w); continue\n"
    "            i = int(np.argmin(x) if op in ('min', 'argmin') else np.argmax(x))\n"
    "            if op.startswith('arg'): exact(row[op], i, w)\n"
    "            else: exact(row[op], py(x[i]) if not (isf and np.isnan(x[i])) else None, w)\n"
    "        elif op.startswith('hist'):\n"
    "            b, lo, hi = op[5:-1].split(';') if ';' in op else (None, None, None)\n"
    "    return\n"
    "def hist_check(x, spec, what, rows, r0):\n"
    "    b, lo, hi = spec\n"
    "    xf = x.astype(np.float64)\n"
    "    h, e = np.histogram(xf, b, (lo, hi))\n"
    "    for k in range(b):\n"
    "        r = rows[r0 + k]\n"
    "        exact(r['hist'], int(h[k]), '%s hist[%d]' % (what, k))\n"
    "        exact(r['bin_lo'], float(e[k]), '%s bin_lo[%d]' % (what, k))\n"
    "        exact(r['bin_hi'], float(e[k + 1]), '%s bin_hi[%d]' % (what, k))\n"
    "        if k: \n"
    "            for c in r:\n"
    "                if c not in ('hist', 'bin_lo', 'bin_hi') and not c.startswith('i') and r[c] is not None:\n"
    "                    bad.append('%s: column %s not null on bin row %d' % (what, c, k))\n"
    "import re\n"
    "arrs = arrays()\n"
    "for name, ops, axis, block in CASES:\n"
    "    ops = ops_of(ops)\n"
    "    a = arrs[base(name)]\n"
    "    with open(os.path.join(d, name + '.json')) as f: rows = json.load(f)\n"
    "    m = re.search(r'hist\\((\\d+),([-0-9.e]+),([-0-9.e]+)\\)', ops)\n"
    "    spec = None\n"
    "    if m:\n"
    "        b, lo, hi = int(m.group(1)), float(m.group(2)), float(m.group(3))\n"
    "        if lo == hi: lo, hi = lo - 0.5, hi + 0.5\n"
    "        spec = (b, lo, hi)\n"
    "    plain = ','.join(o for o in ops.split(',') if not o.startswith('hist') and not o[0].isdigit() and o[-1:] != ')' and not re.match(r'^[-0-9.e]+$', o))\n"
    "    nb = spec[0] if spec else 1\n"
    "    if axis == 'none':\n"
    "        cells = [((), a.reshape(-1))]\n"
    "    else:\n"
    "        ax = int(axis) % a.ndim\n"
    "        kept = [s for i, s in enumerate(a.shape) if i != ax]\n"
    "        cells = [(idx, np.take(a, 0, axis=ax) if False else a[tuple(list(idx[:ax]) + [slice(None)] + list(idx[ax:]))]) for idx in np.ndindex(*kept)]\n"
    "    if len(rows) != len(cells) * nb: bad.append('%s: %d rows, want %d' % (name, len(rows), len(cells) * nb)); continue\n"
    "    for c, (idx, x) in enumerate(cells):\n"
    "        what = '%s%s' % (name, list(idx) if idx else '')\n"
    "        if axis != 'none':\n"
    "            ax = int(axis) % a.ndim\n"
    "            keys = ['i%d' % i for i in range(a.ndim) if i != ax]\n"
    "            for kk, v in zip(keys, idx): exact(rows[c * nb][kk], int(v), what + ' ' + kk)\n"
    "        expect(x, plain, what, rows, c * nb, nb)\n"
    "        if spec: hist_check(x, spec, what, rows, c * nb)\n"
    "for b in bad[:40]: print(b)\n"
    "print('%d mismatches' % len(bad))\n"
    "sys.exit(1 if bad else 0)\n";

TEST(reduce_vs_numpy) {
  char dir[] = "/tmp/sluice-reduce-XXXXXX";
  make_dir(dir);
  char script[700], cases[700];
  snprintf(script, sizeof script, "%s/check.py", dir);
  write_text(script, numpy_script);
  char arg[700];
  snprintf(arg, sizeof arg, "gen %s", dir);
  ASSERT_EQ(python(script, arg), 0);
  snprintf(cases, sizeof cases, "%s/cases", dir);
  char *list = read_file(cases, NULL);
  ASSERT(list);
  int n = 0;
  for (char *line = strtok(list, "\n"); line; line = strtok(NULL, "\n")) {
    char name[64], file[64], ops[256], axis[16], block[16];
    ASSERT(sscanf(line, "%63[^|]|%63[^|]|%255[^|]|%15[^|]|%15s", name, file, ops, axis,
                  block) == 5);
    char text[2048];
    snprintf(text, sizeof text,
             "npy.read file=%s/%s block=%s ! reduce ops=%s axis=%s ! json.write file=%s/%s.json",
             dir, file, block, ops, axis, dir, name);
    const char *cap = strstr(name, "_s");
    sl__reduce_simd_cap(cap && cap[2] >= '0' && cap[2] <= '2' && !cap[3] ? cap[2] - '0'
                                                                         : SL__RSIMD_AVX2);
    run_ok(text, 1 + (unsigned)(n % 3));
    n++;
  }
  free(list);
  sl__reduce_simd_cap(SL__RSIMD_AVX2);
  ASSERT(n >= 20);
  snprintf(arg, sizeof arg, "check %s", dir);
  ASSERT_EQ(python(script, arg), 0);
  remove_tree(dir);
}

/* ======================================================================
 * t.arr: a generated float64 array emitted in a scrambled order
 * ====================================================================== */

typedef struct arr_params {
  int64_t rows, cols, chunk, seed, perm, specials;
} arr_params;

typedef struct arr_local {
  uint64_t next, nchunks;
  uint64_t *order;
} arr_local;

static uint64_t mix(uint64_t z) {
  z += UINT64_C(0x9E3779B97F4A7C15);
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

/* Element (r, c): values of varied magnitude and sign, a few NaN-free
 * cancellations; a pure function of (seed, r, c). */
static double elem(int64_t seed, uint64_t r, uint64_t c) {
  uint64_t z = mix((uint64_t)seed * 1000003u + r * 7919u + c);
  double u = (double)(z >> 11) * 0x1p-53;
  return (u - 0.3) * ldexp(1.0, (int)(z % 40) - 10);
}

static int arr_open(sl_worker *w, void **local) {
  const arr_params *p = sl_worker_params(w);
  arr_local *l = calloc(1, sizeof *l);
  ASSERT(l);
  l->nchunks = (uint64_t)((p->rows + p->chunk - 1) / p->chunk);
  l->order = malloc(l->nchunks * sizeof *l->order);
  for (uint64_t i = 0; i < l->nchunks; i++) l->order[i] = i;
  uint64_t s = (uint64_t)p->perm;
  for (uint64_t i = l->nchunks; p->perm && i > 1; i--) { /* Fisher-Yates */
    s = mix(s);
    uint64_t j = s % i, t = l->order[i - 1];
    l->order[i - 1] = l->order[j];
    l->order[j] = t;
  }
  *local = l;
  return 0;
}

static int arr_produce(sl_worker *w, sl_item **out) {
  const arr_params *p = sl_worker_params(w);
  arr_local *l = sl_worker_local(w);
  if (l->next == l->nchunks) return SL_DONE;
  uint64_t k = l->order[l->next++], r0 = k * (uint64_t)p->chunk;
  uint64_t nr = (uint64_t)p->rows - r0 < (uint64_t)p->chunk ? (uint64_t)p->rows - r0
                                                            : (uint64_t)p->chunk;
  char name[64];
  snprintf(name, sizeof name, "arr#%" PRIu64, k);
  sl_item *it = sl_item_create(k, name);
  sl_block *b;
  size_t size = (size_t)(nr * (uint64_t)p->cols * 8);
  int rc = sl_worker_alloc(w, size, &b);
  if (rc < 0) {
    sl_item_destroy(it);
    return rc;
  }
  double *v = sl_block_data(b);
  for (uint64_t r = 0; r < nr; r++)
    for (uint64_t c = 0; c < (uint64_t)p->cols; c++)
      v[r * (uint64_t)p->cols + c] = elem(p->seed, r0 + r, c);
  for (uint64_t j = 0; p->specials && j < nr * (uint64_t)p->cols; j++) {
    uint64_t g = r0 * (uint64_t)p->cols + j; /* flat index in the array */
    if (g % 97 == 5 || (g >= 4000 && g < 4300)) v[j] = NAN; /* a NaN-only stretch too */
    else if (g % 89 == 3) v[j] = -0.0;
    else if (g % 83 == 7) v[j] = 0.0;
    else if (g % 1009 == 11) v[j] = INFINITY;
    else if (g % 1013 == 12) v[j] = -INFINITY;
  }
  sl_item_set_block(it, SL_KIND_ARRAY, b, 0, size);
  sl_array_desc *a = &it->payload.u.array;
  memset(a, 0, sizeof *a);
  a->dtype = SL_DT_F64;
  a->ndim = 2;
  a->shape[0] = nr;
  a->shape[1] = (uint64_t)p->cols;
  a->whole[0] = (uint64_t)p->rows;
  a->whole[1] = (uint64_t)p->cols;
  a->origin[0] = r0;
  a->strides[0] = p->cols * 8;
  a->strides[1] = 8;
  *out = it;
  return 0;
}

static void arr_close(sl_worker *w) {
  arr_local *l = sl_worker_local(w);
  free(l->order);
  free(l);
}

static const sl_param_def arr_params_def[] = {
    {"rows", SL_PARAM_INT, offsetof(arr_params, rows), "1000", 1, 1e9, NULL, "rows"},
    {"cols", SL_PARAM_INT, offsetof(arr_params, cols), "7", 1, 1e6, NULL, "columns"},
    {"chunk", SL_PARAM_INT, offsetof(arr_params, chunk), "10", 1, 1e9, NULL, "rows per chunk"},
    {"seed", SL_PARAM_INT, offsetof(arr_params, seed), "1", 0, 1e9, NULL, "data seed"},
    {"perm", SL_PARAM_INT, offsetof(arr_params, perm), "0", 0, 1e9, NULL,
     "0: chunks in order; else the seed of a permutation"},
    {"specials", SL_PARAM_INT, offsetof(arr_params, specials), "0", 0, 1, NULL,
     "1: NaN, signed zeros and infinities among the values"},
    SL_PARAM_END};

static const sl_stage_def t_arr = {
    .name = "t.arr", .summary = "test array source", .exec = SL_EXEC_IO,
    .in_kind = SL_KIND_NONE, .out_kind = SL_KIND_ARRAY, .flags = SL_STAGE_SOURCE,
    .params = arr_params_def, .params_size = sizeof(arr_params),
    .open = arr_open, .produce = arr_produce, .close = arr_close};

/* Runs t.arr ... ! reduce ... ! npy.write and returns the file's bytes. */
static char *reduce_bytes(const char *dir, const char *src, const char *ops,
                          const char *axis, unsigned threads, size_t *len) {
  char text[1024], out[600];
  snprintf(out, sizeof out, "%s/r.npy", dir);
  snprintf(text, sizeof text, "%s ! reduce ops=%s axis=%s ! npy.write file=%s", src, ops,
           axis, out);
  run_ok(text, threads);
  char *b = read_file(out, len);
  ASSERT(b);
  unlink(out);
  return b;
}

static void check_deterministic(const char *arr, const char *axis, bool delays) {
  char dir[] = "/tmp/sluice-reduce-det-XXXXXX";
  make_dir(dir);
  const char *ops = "count,sum,mean,var,std,min,max,argmin,argmax,hist(13,-100,300)";
  char src[256];
  snprintf(src, sizeof src, "t.arr %s perm=0", arr);
  size_t n0, n;
  char *want = reduce_bytes(dir, src, ops, axis, 1, &n0);
  for (int perm = 0; perm <= 6; perm++)
    for (unsigned th = 1; th <= 4; th *= 2) {
      snprintf(src, sizeof src, "t.arr %s perm=%d%s", arr, perm,
               delays ? " ! identity workers=3 order=any" : "");
      char *got = reduce_bytes(dir, src, ops, axis, th, &n);
      if (n != n0 || memcmp(got, want, n) != 0)
        SL__FAIL("result differs for perm=%d threads=%u axis=%s", perm, th, axis);
      free(got);
    }
  free(want);
  remove_tree(dir);
}

TEST(reduce_deterministic_order_threads) {
  check_deterministic("rows=2000 cols=7 chunk=13", "none", false);
  check_deterministic("rows=2000 cols=7 chunk=13", "0", true);
  check_deterministic("rows=300 cols=9 chunk=7", "1", true);
}

/* The scalar, SSE2 and AVX2 kernels give the very same bytes: sums keep
 * their lanes, extremes and their first indices do not depend on the lane
 * that found them, NaN is found where it first is (odd lengths leave tails
 * of every size; signed zeros, infinities and a NaN-only stretch too). */
TEST(reduce_kernels_bit_identical) {
  char dir[] = "/tmp/sluice-reduce-simd-XXXXXX";
  make_dir(dir);
  const char *ops = "count,sum,mean,var,std,min,max,argmin,argmax,hist(13,-100,300)";
  const char *arrs[] = {"t.arr rows=3000 cols=37 chunk=29 specials=1",
                        "t.arr rows=3000 cols=37 chunk=29",
                        "t.arr rows=500 cols=1000 chunk=3 specials=1"};
  const char *axes[] = {"none", "0", "1"};
  for (size_t i = 0; i < sizeof arrs / sizeof *arrs; i++)
    for (size_t x = 0; x < 3; x++) {
      size_t n0, n;
      sl__reduce_simd_cap(SL__RSIMD_SCALAR);
      char *want = reduce_bytes(dir, arrs[i], ops, axes[x], 2, &n0);
      for (int cap = SL__RSIMD_SSE2; cap <= SL__RSIMD_AVX2; cap++) {
        sl__reduce_simd_cap(cap);
        char *got = reduce_bytes(dir, arrs[i], ops, axes[x], 2, &n);
        if (n != n0 || memcmp(got, want, n) != 0)
          SL__FAIL("%s axis=%s: kernel level %d differs from scalar", arrs[i], axes[x], cap);
        free(got);
      }
      free(want);
    }
  sl__reduce_simd_cap(SL__RSIMD_AVX2);
  remove_tree(dir);
}

/* Many tiny chunks (one row of 4 values each), 4 threads, reordered. */
TEST(reduce_stress_tiny_chunks) {
  char dir[] = "/tmp/sluice-reduce-stress-XXXXXX";
  make_dir(dir);
  size_t n1, n4;
  char *a = reduce_bytes(dir, "t.arr rows=20000 cols=4 chunk=1 perm=0", "count,sum,var,min,argmax",
                         "none", 1, &n1);
  char *b = reduce_bytes(dir, "t.arr rows=20000 cols=4 chunk=1 perm=99 ! identity "
                         "workers=4 order=any", "count,sum,var,min,argmax", "none", 4, &n4);
  ASSERT_EQ(n1, n4);
  ASSERT(memcmp(a, b, n1) == 0);
  /* The count must be exact: the table is 1 row x 5 float64 columns. */
  double v[5];
  ASSERT(n1 >= 40);
  memcpy(v, a + n1 - 40, 40);
  ASSERT(v[0] == 80000.0);
  free(a);
  free(b);
  remove_tree(dir);
}

/* ======================================================================
 * Partials: grouping, pack/unpack, corrupt bytes
 * ====================================================================== */

/* Partial of rows [r0, r1) of a rows x cols t.arr array (seed 3). */
static sl__rpart *chunk_part(const sl__rconf *cf, int axis, uint64_t rows, uint64_t cols,
                             uint64_t r0, uint64_t r1, sl__rscratch *sc) {
  double *v = malloc((size_t)((r1 - r0) * cols * 8));
  for (uint64_t r = r0; r < r1; r++)
    for (uint64_t c = 0; c < cols; c++) v[(r - r0) * cols + c] = elem(3, r, c);
  sl_array_desc a = {.dtype = SL_DT_F64, .ndim = 2, .shape = {r1 - r0, cols},
                     .strides = {(int64_t)cols * 8, 8}, .origin = {r0, 0},
                     .whole = {rows, cols}};
  sl__rpart *p = malloc(sizeof *p);
  uint32_t nd;
  uint64_t bo[SL_MAX_DIMS], bs[SL_MAX_DIMS];
  sl__rchunk_box(&a, axis, &nd, bo, bs);
  ASSERT_OK(sl__rpart_init(p, cf, SL_DT_F64, nd, bo, bs));
  ASSERT_OK(sl__rchunk_fold(p, &a, v, axis, sc));
  free(v);
  return p;
}

/* Through pack/unpack (as over MPI). */
static sl__rpart *ship(sl__rpart *p) {
  void *buf;
  size_t len;
  ASSERT_OK(sl__rpart_pack(p, &buf, &len));
  sl__rpart_free(p);
  ASSERT_OK(sl__rpart_unpack(buf, len, p));
  free(buf);
  return p;
}

static void *packed_root(sl__rpart *root, size_t *len) {
  void *buf;
  ASSERT_OK(sl__rpart_pack(root, &buf, len));
  sl__rpart_free(root);
  free(root);
  return buf;
}

TEST(partials_grouping_and_pack) {
  sl__rconf cf = {0};
  char *err = NULL;
  ASSERT_OK(sl__rconf_parse(&cf, "count,sum,var,min,max,argmin,argmax,hist(9,-50,50)", &err));
  sl__rscratch sc = {0};
  const uint64_t rows = 500, cols = 6, chunk = 7, nch = (rows + chunk - 1) / chunk;
  for (int axis = -1; axis <= 1; axis++) {
    /* One process: every chunk's partial into one tree. */
    sl__rtree t = {0};
    for (uint64_t k = 0; k < nch; k++) {
      uint64_t r1 = (k + 1) * chunk < rows ? (k + 1) * chunk : rows;
      ASSERT_OK(sl__rtree_add_node(&t, 0, k, chunk_part(&cf, axis, rows, cols, k * chunk, r1, &sc)));
    }
    sl__rpart *root;
    ASSERT_OK(sl__rtree_finish(&t, &root));
    ASSERT_EQ(root->elems, rows * cols);
    size_t wlen;
    void *want = packed_root(root, &wlen);
    /* "Ranks": contiguous ranges of chunks, each its own tree; their
     * remaining nodes go through pack/unpack into the final tree. */
    for (uint64_t nranks = 2; nranks <= 5; nranks++) {
      sl__rtree fin = {0};
      for (uint64_t rk = 0; rk < nranks; rk++) {
        sl__rtree loc = {0};
        for (uint64_t k = rk * nch / nranks; k < (rk + 1) * nch / nranks; k++) {
          uint64_t r1 = (k + 1) * chunk < rows ? (k + 1) * chunk : rows;
          ASSERT_OK(sl__rtree_add_node(&loc, 0, k, chunk_part(&cf, axis, rows, cols, k * chunk, r1, &sc)));
        }
        for (size_t i = 0; i < loc.n; i++)
          ASSERT_OK(sl__rtree_add_node(&fin, loc.v[i].level, loc.v[i].index, ship(loc.v[i].part)));
        loc.n = 0;
        sl__rtree_clear(&loc);
      }
      ASSERT_OK(sl__rtree_finish(&fin, &root));
      sl__rtree_clear(&fin);
      size_t glen;
      void *got = packed_root(root, &glen);
      ASSERT_EQ(glen, wlen);
      if (memcmp(got, want, wlen) != 0) SL__FAIL("axis %d: %u ranks differ", axis, (unsigned)nranks);
      free(got);
    }
    /* Corrupt bytes: every truncation and a few flipped header bytes. */
    for (size_t cut = 0; cut < wlen; cut += 1 + cut / 3) {
      sl__rpart q;
      ASSERT_EQ(sl__rpart_unpack(want, cut, &q), SL_EFORMAT);
    }
    for (size_t at = 0; at < 64 && at < wlen; at++) {
      unsigned char *c = want;
      c[at] ^= 0x5A;
      sl__rpart q;
      int rc = sl__rpart_unpack(want, wlen, &q);
      if (rc == 0) sl__rpart_free(&q); /* a value byte: still well-formed */
      else ASSERT_EQ(rc, SL_EFORMAT);
      c[at] ^= 0x5A;
    }
    sl__rtree_clear(&t);
    free(want);
  }
  sl__rscratch_free(&sc);
}

/* ======================================================================
 * Errors
 * ====================================================================== */

TEST(reduce_errors) {
  const struct { const char *ops, *axis, *msg; } bad[] = {
      {"sum,foo", "none", "unknown operation \"foo\""},
      {"sum,sum", "none", "listed twice"},
      {"hist(10)", "none", "needs the global min and max first"},
      {"hist(0,0,1)", "none", "bins must be"},
      {"hist(10,2,1)", "none", "lo must not exceed hi"},
      {"hist(10,0,inf)", "none", "must be finite"},
      {"mean(x)", "none", "only hist takes arguments"},
      {"", "none", "no operation"},
      {"sum", "abc", "axis='abc'"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char text[256];
    snprintf(text, sizeof text, "t.arr ! reduce ops='%s' axis=%s ! json.write file=/tmp/x.json",
             bad[i].ops, bad[i].axis);
    ASSERT_EQ(run_text(text, 1), SL_EPARSE);
    ASSERT_CONTAINS(g_err, bad[i].msg);
  }
  /* Axis beyond the array's rank: a run-time error naming the axis. */
  char out[64];
  snprintf(out, sizeof out, "/tmp/sluice-never-%ld.npy", (long)getpid());
  char text[256];
  snprintf(text, sizeof text, "t.arr ! reduce ops=sum axis=2 ! npy.write file=%s", out);
  ASSERT(run_text(text, 1) != 0);
  ASSERT_CONTAINS(g_err, "axis=2 but the array has 2 axes");
  ASSERT(access(out, F_OK) != 0);
  /* A chunk failing upstream: no result rather than a wrong one. */
  snprintf(text, sizeof text, "t.arr ! identity fail_every=5 ! reduce ops=sum ! "
           "npy.write file=%s", out);
  ASSERT(run_text(text, 2) != 0);
  ASSERT(access(out, F_OK) != 0);
  ASSERT_CONTAINS(g_err, "no result: the chunks held 5600 of the array's 7000 elements");
}

static const sl_test_case cases[] = {
    SL_CASE(reduce_vs_numpy, "unit"),
    SL_CASE(reduce_deterministic_order_threads, "unit"),
    SL_CASE(reduce_kernels_bit_identical, "unit"),
    SL_CASE(reduce_stress_tiny_chunks, "stress"),
    SL_CASE(partials_grouping_and_pack, "unit"),
    SL_CASE(reduce_errors, "unit"),
};
SL_TEST_MAIN(cases)
