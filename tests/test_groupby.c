/*
 * test_groupby.c -- the table stages of stages/: groupby, aggregate, filter
 * and select.
 *
 * The test registers its own stages through the public API: t.table, a
 * source of TABLE chunks built from an in-memory data set (laid out exactly
 * as the CSV contract says csv.parse does: one arena block, 8-byte aligned
 * values, string offsets + bytes, validity bytes or SIZE_MAX), t.delay and
 * t.iodelay (random delays, to perturb completion order; the io one with
 * workers=3 order=any reorders items), and t.capture, a serial sink that
 * deep-copies every table it receives and serialises it canonically, so two
 * runs can be compared byte for byte.
 *
 * Aggregates are checked against a reference computed here the slow way
 * (sort rows by key; long double sums; two-pass variance), counts exactly
 * and floats to 1e-9 relative. Determinism is checked by comparing the
 * serialised result of 1 thread with 2..4 threads under random delays and
 * reordering. Every test frees what it allocates (ASan checks leaks).
 */
#include "test.h"
#include "sluice.h"
#include "sluice_io.h"
#include "sluice_stages.h"

#include <math.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

/* ======================================================================
 * In-memory data sets
 * ====================================================================== */

#define MAXCOLS 12

typedef struct tcol {
  const char *name;
  sl_dtype type;  /* BOOL, I64, F64 or STRING */
  int64_t *i;     /* I64 and BOOL */
  double *f;      /* F64 */
  char **s;       /* STRING: NUL-terminated copies */
  uint8_t *valid; /* NULL: no nulls */
} tcol;

typedef struct tdata {
  uint32_t ncols;
  uint64_t nrows;
  tcol col[MAXCOLS];
  uint64_t *cuts; /* chunk c holds rows [cuts[c], cuts[c+1]) */
  size_t nchunks;
} tdata;

static uint64_t rng(uint64_t *s) {
  uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}
static double rng_unit(uint64_t *s) { return (double)(rng(s) >> 11) * 0x1p-53; }

static tcol *add_col(tdata *d, const char *name, sl_dtype t) {
  ASSERT(d->ncols < MAXCOLS);
  tcol *c = &d->col[d->ncols++];
  c->name = name;
  c->type = t;
  size_t n = d->nrows ? (size_t)d->nrows : 1;
  if (t == SL_DT_F64) c->f = calloc(n, sizeof *c->f);
  else if (t == SL_DT_STRING) c->s = calloc(n, sizeof *c->s);
  else c->i = calloc(n, sizeof *c->i);
  c->valid = malloc(n);
  ASSERT(c->f || c->s || c->i);
  ASSERT(c->valid);
  memset(c->valid, 1, n);
  return c;
}

static void set_str(tcol *c, uint64_t r, const char *s) {
  free(c->s[r]);
  c->s[r] = strdup(s);
  ASSERT(c->s[r]);
}

/* Chunk boundaries: sizes cycle through `sizes` (0 allowed). */
static void set_cuts(tdata *d, const uint64_t *sizes, size_t nsizes) {
  free(d->cuts);
  size_t cap = 16;
  d->cuts = malloc(cap * sizeof *d->cuts);
  d->cuts[0] = 0;
  d->nchunks = 0;
  uint64_t at = 0;
  for (size_t k = 0; at < d->nrows || d->nchunks == 0; k++) {
    uint64_t sz = sizes[k % nsizes];
    if (at + sz > d->nrows) sz = d->nrows - at;
    at += sz;
    if (d->nchunks + 2 > cap) d->cuts = realloc(d->cuts, (cap *= 2) * sizeof *d->cuts);
    d->cuts[++d->nchunks] = at;
    if (k > 100000) break;
  }
}

/* Random chunk sizes between 0 and max (some 0 and 1). */
static void set_random_cuts(tdata *d, uint64_t *seed, uint64_t max) {
  uint64_t sizes[64];
  for (size_t k = 0; k < 64; k++) {
    uint64_t r = rng(seed) % 10;
    sizes[k] = r == 0 ? 0 : r == 1 ? 1 : 1 + rng(seed) % max;
  }
  set_cuts(d, sizes, 64);
}

static void data_free(tdata *d) {
  for (uint32_t c = 0; c < d->ncols; c++) {
    tcol *t = &d->col[c];
    if (t->s)
      for (uint64_t r = 0; r < d->nrows; r++) free(t->s[r]);
    free(t->s);
    free(t->i);
    free(t->f);
    free(t->valid);
  }
  free(d->cuts);
  memset(d, 0, sizeof *d);
}

static const char *const str_pool[] = {
    "a", "b", "", "Toys", "x,y", "quote\"d", "multi\nline", "\xc3\xbcn\xc3\xaf",
    "aa", "B", "Garden & Outdoor", "a "};
#define NPOOL (sizeof str_pool / sizeof str_pool[0])

/* k int64 (nk values), s string (ns of the pool), b bool, x float64 in
 * [0, 1000) with 4 decimals, y float64 of wide magnitude, n int64 in
 * [-1e6, 1e6]; each with nulls at rate `nulls`; x has a few NaN. */
static void make_data(tdata *d, uint64_t seed, uint64_t nrows, unsigned nk,
                      unsigned ns, double nulls) {
  memset(d, 0, sizeof *d);
  d->nrows = nrows;
  tcol *k = add_col(d, "k", SL_DT_I64), *s = add_col(d, "s", SL_DT_STRING);
  tcol *b = add_col(d, "b", SL_DT_BOOL), *x = add_col(d, "x", SL_DT_F64);
  tcol *y = add_col(d, "y", SL_DT_F64), *n = add_col(d, "n", SL_DT_I64);
  for (uint64_t r = 0; r < nrows; r++) {
    k->i[r] = (int64_t)(rng(&seed) % nk) - (int64_t)(nk / 3);
    set_str(s, r, str_pool[rng(&seed) % (ns < NPOOL ? ns : NPOOL)]);
    b->i[r] = (int64_t)(rng(&seed) & 1);
    x->f[r] = (double)(rng(&seed) % 10000000) / 10000.0;
    if (rng(&seed) % 200 == 0) x->f[r] = NAN;
    y->f[r] = rng_unit(&seed) * pow(10.0, (double)(rng(&seed) % 13) - 3);
    n->i[r] = (int64_t)(rng(&seed) % 2000001) - 1000000;
    for (uint32_t c = 0; c < d->ncols; c++)
      if (rng_unit(&seed) < nulls) d->col[c].valid[r] = 0;
  }
  uint64_t sizes[] = {nrows / 7 + 1, 1, 0, nrows / 5 + 3, 2, nrows / 3};
  set_cuts(d, sizes, 6);
}

/* ======================================================================
 * Test stages
 * ====================================================================== */

static tdata *g_data;
static bool g_retype; /* chunks after the first declare column "n" float64 */
static const void *g_src_ptr[4096]; /* payload.data of each chunk at the source */
static atomic_uint g_delay_seed;

static size_t align8(size_t x) { return (x + 7) & ~(size_t)7; }

/* Layout of chunk rows [r0, r1): returns the block size, fills cols. Odd
 * chunks get validity arrays even without nulls (both paths are legal). */
static size_t chunk_layout(const tdata *d, size_t chunk, uint64_t r0, uint64_t r1,
                           sl_column *cols) {
  uint64_t n = r1 - r0;
  size_t off = 0;
  for (uint32_t c = 0; c < d->ncols; c++) {
    const tcol *t = &d->col[c];
    bool nulls = chunk % 2 == 1;
    for (uint64_t r = r0; r < r1; r++) nulls |= !t->valid[r];
    cols[c].dtype = t->type;
    if (g_retype && chunk > 0 && !strcmp(t->name, "n")) cols[c].dtype = SL_DT_F64;
    cols[c].data_off = off = align8(off);
    off += t->type == SL_DT_BOOL ? n : t->type == SL_DT_STRING ? 8 * (n + 1) : 8 * n;
    cols[c].chars_off = off;
    if (t->type == SL_DT_STRING)
      for (uint64_t r = r0; r < r1; r++) off += t->valid[r] ? strlen(t->s[r]) : 0;
    cols[c].valid_off = nulls ? off : SIZE_MAX;
    off += nulls ? n : 0;
  }
  return align8(off) + 8;
}

static void chunk_fill(const tdata *d, uint64_t r0, uint64_t r1, const sl_column *cols,
                       char *base) {
  for (uint32_t c = 0; c < d->ncols; c++) {
    const tcol *t = &d->col[c];
    const sl_column *o = &cols[c];
    uint64_t pos = 0;
    for (uint64_t r = r0; r < r1; r++) {
      uint64_t j = r - r0;
      if (o->valid_off != SIZE_MAX) base[o->valid_off + j] = (char)t->valid[r];
      char *dst = base + o->data_off;
      if (o->dtype != t->type) {
        double f = (double)t->i[r];
        memcpy(dst + 8 * j, &f, 8);
      } else if (t->type == SL_DT_I64) memcpy(dst + 8 * j, &t->i[r], 8);
      else if (t->type == SL_DT_F64) memcpy(dst + 8 * j, &t->f[r], 8);
      else if (t->type == SL_DT_BOOL) dst[j] = (char)t->i[r];
      else {
        memcpy(dst + 8 * j, &pos, 8);
        if (t->valid[r]) {
          size_t len = strlen(t->s[r]);
          memcpy(base + o->chars_off + pos, t->s[r], len);
          pos += len;
        }
        memcpy(dst + 8 * (j + 1), &pos, 8);
      }
    }
    if (t->type == SL_DT_STRING && r0 == r1) memset(base + o->data_off, 0, 8);
  }
}

typedef struct src_local {
  size_t next;
} src_local;

static int src_open(sl_worker *w, void **local) {
  (void)w;
  *local = calloc(1, sizeof(src_local));
  return *local ? 0 : SL_ENOMEM;
}
static void src_close(sl_worker *w) { free(sl_worker_local(w)); }

static int src_produce(sl_worker *w, sl_item **out) {
  src_local *l = sl_worker_local(w);
  const tdata *d = g_data;
  if (l->next >= d->nchunks) return SL_DONE;
  size_t c = l->next++;
  uint64_t r0 = d->cuts[c], r1 = d->cuts[c + 1];
  char name[32];
  snprintf(name, sizeof name, "t.csv#%zu", c + 1);
  sl_item *it = sl_item_create(c, name);
  sl_column *cols = calloc(d->ncols, sizeof *cols);
  ASSERT(it && cols);
  size_t size = chunk_layout(d, c, r0, r1, cols);
  sl_block *b;
  int rc = sl_worker_alloc(w, size, &b);
  if (rc < 0) {
    free(cols);
    sl_item_destroy(it);
    return rc;
  }
  memset(sl_block_data(b), 0xAB, size); /* garbage where nothing is written */
  chunk_fill(d, r0, r1, cols, sl_block_data(b));
  for (uint32_t k = 0; k < d->ncols; k++) cols[k].name = strdup(d->col[k].name);
  sl_item_set_block(it, SL_KIND_TABLE, b, 0, size);
  it->payload.u.table = (sl_table_desc){d->ncols, r1 - r0, r0 + 2, cols};
  it->line = r0 + 2;
  if (c < 4096) g_src_ptr[c] = it->payload.data;
  *out = it;
  return 0;
}

static const sl_stage_def t_table = {
    .name = "t.table", .summary = "test table source", .exec = SL_EXEC_CPU,
    .in_kind = SL_KIND_NONE, .out_kind = SL_KIND_TABLE, .flags = SL_STAGE_SOURCE,
    .open = src_open, .produce = src_produce, .close = src_close};

typedef struct delay_params {
  int64_t max_us;
} delay_params;

/* A random pause: half the time a busy spin, half a sleep. */
static int delay_process(sl_worker *w, sl_item *in, sl_item **out) {
  const delay_params *p = sl_worker_params(w);
  unsigned seed = (unsigned)(in->seq * 2654435761u) ^ atomic_load(&g_delay_seed);
  unsigned us = p->max_us ? (unsigned)rand_r(&seed) % (unsigned)(p->max_us + 1) : 0;
  if (us % 2) {
    struct timespec ts = {0, (long)us * 1000};
    sl_worker_blocking_begin(w);
    nanosleep(&ts, NULL);
    sl_worker_blocking_end(w);
  } else {
    uint64_t end = sl_now_ns() + us * 1000u;
    while (sl_now_ns() < end) {
    }
  }
  *out = in;
  return 0;
}

static const sl_param_def delay_params_def[] = {
    {"max_us", SL_PARAM_INT, offsetof(delay_params, max_us), "200", 0, 1e6, NULL, "max delay"},
    SL_PARAM_END};

static const sl_stage_def t_delay = {
    .name = "t.delay", .summary = "random delays (cpu)", .exec = SL_EXEC_CPU,
    .in_kind = SL_KIND_ANY, .out_kind = SL_KIND_SAME, .params = delay_params_def,
    .params_size = sizeof(delay_params), .process = delay_process};
static const sl_stage_def t_iodelay = {
    .name = "t.iodelay", .summary = "random delays (io)", .exec = SL_EXEC_IO,
    .in_kind = SL_KIND_ANY, .out_kind = SL_KIND_SAME, .params = delay_params_def,
    .params_size = sizeof(delay_params), .process = delay_process};

/* ---- capture: deep copies of the received tables ---- */

typedef struct ccol {
  char *name;
  sl_dtype type;
  uint8_t *valid;
  int64_t *i;
  double *f;
  char **s;
  uint64_t *slen;
} ccol;

typedef struct ctab {
  uint64_t seq, first_row;
  char *name;
  const void *data;
  uint32_t ncols;
  uint64_t nrows;
  ccol *c;
  char *bytes;
  size_t nbytes, capbytes;
} ctab;

static struct {
  ctab t[4096];
  size_t n;
} g_cap;

static void bytes_put(ctab *t, const void *p, size_t n) {
  if (t->nbytes + n > t->capbytes) {
    t->capbytes = 2 * (t->nbytes + n) + 256;
    t->bytes = realloc(t->bytes, t->capbytes);
    ASSERT(t->bytes);
  }
  memcpy(t->bytes + t->nbytes, p, n);
  t->nbytes += n;
}

/* Copies column k of the item, checking that it lies inside the payload. */
static void capture_col(ctab *t, const sl_payload *p, uint32_t k) {
  const sl_column *sc = &p->u.table.cols[k];
  const char *base = p->data;
  uint64_t n = p->u.table.nrows;
  ccol *c = &t->c[k];
  c->name = strdup(sc->name);
  c->type = sc->dtype;
  size_t m = n ? (size_t)n : 1;
  c->valid = malloc(m);
  c->i = calloc(m, 8);
  c->f = calloc(m, 8);
  c->s = calloc(m, sizeof *c->s);
  c->slen = calloc(m, 8);
  bytes_put(t, sc->name, strlen(sc->name) + 1);
  bytes_put(t, &sc->dtype, sizeof sc->dtype);
  size_t w = sc->dtype == SL_DT_BOOL ? 1 : 8;
  ASSERT(sc->data_off + (sc->dtype == SL_DT_STRING ? n + 1 : n) * w <= p->size);
  ASSERT(w == 1 || sc->data_off % 8 == 0);
  ASSERT(sc->valid_off == SIZE_MAX || sc->valid_off + n <= p->size);
  for (uint64_t r = 0; r < n; r++) {
    c->valid[r] = sc->valid_off == SIZE_MAX ? 1 : (uint8_t)base[sc->valid_off + r];
    ASSERT(c->valid[r] <= 1);
    bytes_put(t, &c->valid[r], 1);
    if (!c->valid[r]) continue;
    const char *v = base + sc->data_off;
    if (sc->dtype == SL_DT_I64) memcpy(&c->i[r], v + 8 * r, 8), bytes_put(t, v + 8 * r, 8);
    else if (sc->dtype == SL_DT_F64) memcpy(&c->f[r], v + 8 * r, 8), bytes_put(t, v + 8 * r, 8);
    else if (sc->dtype == SL_DT_BOOL) c->i[r] = (uint8_t)v[r], bytes_put(t, v + r, 1);
    else {
      uint64_t o0, o1;
      memcpy(&o0, v + 8 * r, 8);
      memcpy(&o1, v + 8 * (r + 1), 8);
      ASSERT(o0 <= o1 && sc->chars_off + o1 <= p->size);
      c->slen[r] = o1 - o0;
      c->s[r] = malloc((size_t)(o1 - o0) + 1);
      memcpy(c->s[r], base + sc->chars_off + o0, (size_t)(o1 - o0));
      c->s[r][o1 - o0] = '\0';
      bytes_put(t, &c->slen[r], 8);
      bytes_put(t, c->s[r], (size_t)c->slen[r]);
    }
  }
}

static int capture_process(sl_worker *w, sl_item *in, sl_item **out) {
  (void)w;
  *out = NULL;
  ASSERT(in->payload.kind == SL_KIND_TABLE);
  ASSERT(g_cap.n < 4096);
  ctab *t = &g_cap.t[g_cap.n++];
  memset(t, 0, sizeof *t);
  t->seq = in->seq;
  t->name = strdup(in->name);
  t->data = in->payload.data;
  t->ncols = in->payload.u.table.ncols;
  t->nrows = in->payload.u.table.nrows;
  t->first_row = in->payload.u.table.first_row;
  t->c = calloc(t->ncols ? t->ncols : 1, sizeof *t->c);
  bytes_put(t, &t->nrows, 8);
  for (uint32_t k = 0; k < t->ncols; k++) capture_col(t, &in->payload, k);
  return 0;
}

static const sl_stage_def t_capture = {
    .name = "t.capture", .summary = "test sink", .exec = SL_EXEC_SERIAL,
    .in_kind = SL_KIND_TABLE, .out_kind = SL_KIND_NONE, .flags = SL_STAGE_SINK,
    .process = capture_process};

static void capture_reset(void) {
  for (size_t k = 0; k < g_cap.n; k++) {
    ctab *t = &g_cap.t[k];
    for (uint32_t j = 0; j < t->ncols; j++) {
      ccol *c = &t->c[j];
      for (uint64_t r = 0; r < t->nrows; r++) free(c->s[r]);
      free(c->name);
      free(c->valid);
      free(c->i);
      free(c->f);
      free(c->s);
      free(c->slen);
    }
    free(t->c);
    free(t->name);
    free(t->bytes);
  }
  g_cap.n = 0;
}

static const ccol *cap_col(const ctab *t, const char *name) {
  for (uint32_t j = 0; j < t->ncols; j++)
    if (strcmp(t->c[j].name, name) == 0) return &t->c[j];
  SL__FAIL("result has no column \"%s\"", name);
}

/* ======================================================================
 * Running pipelines
 * ====================================================================== */

typedef struct runres {
  int rc;
  char *perr;     /* pipeline errors when parsing failed */
  size_t nfail;
  char *fail[8];  /* "item|stage|message" */
} runres;

static void runres_free(runres *r) {
  free(r->perr);
  for (size_t i = 0; i < r->nfail && i < 8; i++) free(r->fail[i]);
  memset(r, 0, sizeof *r);
}

static unsigned g_retries; /* --retries of the next runs */

static sl_registry *make_registry(void) {
  sl_registry *reg;
  ASSERT_OK(sl_registry_create(&reg));
  ASSERT_OK(sl_stages_register_all(reg));
  ASSERT_OK(sl_registry_add(reg, &t_table));
  ASSERT_OK(sl_registry_add(reg, &t_delay));
  ASSERT_OK(sl_registry_add(reg, &t_iodelay));
  ASSERT_OK(sl_registry_add(reg, &t_capture));
  return reg;
}

static void collect(sl_run *run, runres *r) {
  r->nfail = sl_run_failure_count(run);
  for (size_t i = 0; i < r->nfail && i < 8; i++) {
    const char *item, *stage, *msg;
    ASSERT_OK(sl_run_failure(run, i, &item, &stage, &msg));
    size_t len = strlen(item) + strlen(stage) + strlen(msg) + 3;
    r->fail[i] = malloc(len);
    snprintf(r->fail[i], len, "%s|%s|%s", item, stage, msg);
  }
}

/* Parses and runs `text` (`runs` times on the same checked pipeline) with
 * `threads`; the captured tables stay in g_cap. */
static runres run_pipe_n(const char *text, unsigned threads, int runs) {
  runres r = {0};
  capture_reset();
  sl_registry *reg = make_registry();
  sl_pipeline *p;
  ASSERT_OK(sl_pipeline_create(&p, reg));
  r.rc = sl_pipeline_parse(p, "test.pipe", text, strlen(text), NULL, 0);
  if (r.rc < 0) {
    r.perr = strdup(sl_pipeline_errors(p));
  } else {
    for (int k = 0; k < runs; k++) {
      sl_run_options o;
      sl_run_options_init(&o);
      o.threads = threads;
      o.progress = SL_PROGRESS_OFF;
      o.retries = g_retries;
      sl_run *run;
      ASSERT_OK(sl_run_create(&run, p, &o));
      r.rc = sl_run_execute(run);
      collect(run, &r);
      sl_run_destroy(run);
    }
  }
  sl_pipeline_destroy(p);
  sl_registry_destroy(reg);
  return r;
}

static runres run_pipe(const char *text, unsigned threads) {
  return run_pipe_n(text, threads, 1);
}

/* Runs and expects success with exactly one captured table. */
static const ctab *run_one(const char *text, unsigned threads) {
  runres r = run_pipe(text, threads);
  if (r.rc != 0)
    SL__FAIL("run of '%s' failed: %d\n%s%s", text, r.rc, r.perr ? r.perr : "",
             r.nfail ? r.fail[0] : "");
  runres_free(&r);
  ASSERT_EQ(g_cap.n, 1);
  return &g_cap.t[0];
}

/* Expects `text` to be rejected at check time with `msg` in the errors. */
static void expect_check_error(const char *text, const char *msg) {
  runres r = run_pipe(text, 1);
  ASSERT_EQ(r.rc, SL_EPARSE);
  ASSERT_CONTAINS(r.perr, msg);
  runres_free(&r);
}

/* ======================================================================
 * Reference aggregates
 * ====================================================================== */

typedef struct cell {
  bool null;
  int64_t i;
  double f;
  const char *s;
  size_t len;
} cell;

static cell get(const tcol *c, uint64_t r) {
  cell v = {!c->valid[r], 0, 0, NULL, 0};
  if (v.null) return v;
  if (c->type == SL_DT_F64) {
    v.f = c->f[r] == 0.0 ? 0.0 : c->f[r];
    v.null = isnan(v.f);
  } else if (c->type == SL_DT_STRING) {
    v.s = c->s[r];
    v.len = strlen(c->s[r]);
  } else {
    v.i = c->i[r];
  }
  return v;
}

static int cell_cmp(const cell *a, const cell *b, sl_dtype t) {
  if (a->null || b->null) return (int)b->null - (int)a->null;
  if (t == SL_DT_F64) return (a->f > b->f) - (a->f < b->f);
  if (t == SL_DT_STRING) {
    int c = memcmp(a->s, b->s, a->len < b->len ? a->len : b->len);
    if (c) return c < 0 ? -1 : 1;
    return (a->len > b->len) - (a->len < b->len);
  }
  return (a->i > b->i) - (a->i < b->i);
}

static const tdata *ref_data;
static const tcol *ref_keys[4];
static size_t ref_nk;

static const tcol *data_col(const tdata *d, const char *name) {
  for (uint32_t c = 0; c < d->ncols; c++)
    if (strcmp(d->col[c].name, name) == 0) return &d->col[c];
  SL__FAIL("no data column %s", name);
}

static int key_cmp(uint64_t a, uint64_t b) {
  for (size_t k = 0; k < ref_nk; k++) {
    cell x = get(ref_keys[k], a), y = get(ref_keys[k], b);
    int c = cell_cmp(&x, &y, ref_keys[k]->type);
    if (c) return c;
  }
  return 0;
}

static int row_cmp(const void *pa, const void *pb) {
  uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;
  int c = key_cmp(a, b);
  return c ? c : (a > b) - (a < b); /* rows of a group stay in source order */
}

static bool close_to(double a, double b) {
  if (a == b) return true;
  return fabs(a - b) <= 1e-9 * fmax(fabs(a), fabs(b));
}

static int cell_sort_type;
static int cell_qcmp(const void *a, const void *b) {
  return cell_cmp(a, b, (sl_dtype)cell_sort_type);
}

/* Checks one aggregate of one group (rows[0..n), source order) against
 * result row `row`. */
static void check_agg(const ctab *res, uint64_t row, const char *fn, const char *colname,
                      const uint64_t *rows, size_t n) {
  char label[64];
  if (colname) snprintf(label, sizeof label, "%s(%s)", fn, colname);
  else snprintf(label, sizeof label, "%s", fn);
  const ccol *out = cap_col(res, label);
  if (!colname) {
    ASSERT_EQ(out->type, SL_DT_I64);
    ASSERT_EQ(out->i[row], n);
    return;
  }
  const tcol *c = data_col(ref_data, colname);
  cell *vals = calloc(n + 1, sizeof *vals);
  size_t m = 0;
  long double sum = 0;
  __int128 isum = 0;
  for (size_t k = 0; k < n; k++) {
    cell v = get(c, rows[k]);
    if (v.null) continue;
    vals[m++] = v;
    sum += c->type == SL_DT_F64 ? (long double)v.f : (long double)v.i;
    isum += v.i;
  }
  if (!strcmp(fn, "count")) {
    ASSERT_EQ(out->i[row], m);
  } else if (!strcmp(fn, "sum")) {
    if (c->type == SL_DT_F64) {
      ASSERT_EQ(out->type, SL_DT_F64);
      ASSERT(out->valid[row]);
      if (!close_to(out->f[row], (double)sum))
        SL__FAIL("%s row %llu: %.17g vs %.17g", label, (unsigned long long)row, out->f[row], (double)sum);
    } else {
      ASSERT_EQ(out->type, SL_DT_I64);
      ASSERT_EQ(out->i[row], (int64_t)isum);
    }
  } else if (!strcmp(fn, "mean") || !strcmp(fn, "var") || !strcmp(fn, "std")) {
    ASSERT_EQ(out->type, SL_DT_F64);
    bool is_mean = !strcmp(fn, "mean");
    if (m < (is_mean ? 1u : 2u)) {
      ASSERT_EQ(out->valid[row], 0);
    } else {
      long double mean = sum / m, ss = 0, want;
      for (size_t k = 0; k < m; k++) {
        long double x = c->type == SL_DT_F64 ? vals[k].f : vals[k].i;
        ss += (x - mean) * (x - mean);
      }
      want = is_mean ? mean : ss / (m - 1);
      if (!strcmp(fn, "std")) want = sqrtl(want);
      ASSERT(out->valid[row]);
      if (!close_to(out->f[row], (double)want))
        SL__FAIL("%s row %llu: %.17g vs %.17g", label, (unsigned long long)row, out->f[row], (double)want);
    }
  } else if (!strcmp(fn, "count_distinct")) {
    cell_sort_type = c->type;
    qsort(vals, m, sizeof *vals, cell_qcmp);
    size_t u = 0;
    for (size_t k = 0; k < m; k++)
      if (k == 0 || cell_cmp(&vals[k], &vals[k - 1], c->type)) u++;
    ASSERT_EQ(out->i[row], u);
  } else { /* min, max, first, last: the input type */
    ASSERT_EQ(out->type, c->type);
    ASSERT_EQ(out->valid[row], m > 0);
    if (m) {
      cell want = vals[!strcmp(fn, "last") ? m - 1 : 0];
      for (size_t k = 0; k < m; k++) {
        int cmp = cell_cmp(&vals[k], &want, c->type);
        if ((!strcmp(fn, "min") && cmp < 0) || (!strcmp(fn, "max") && cmp > 0)) want = vals[k];
      }
      cell got = {false, out->i[row], out->f[row], out->s[row], (size_t)out->slen[row]};
      if (cell_cmp(&got, &want, c->type) != 0)
        SL__FAIL("%s row %llu differs", label, (unsigned long long)row);
    }
  }
  free(vals);
}

/* Checks a groupby/aggregate result against the reference: keys (up to 4
 * names) and aggregates given as "fn" / "fn:col" strings. */
static void check_result(const ctab *res, const tdata *d, const char *const *keys,
                         size_t nk, const char *const *aggs, size_t na) {
  ref_data = d;
  ref_nk = nk;
  for (size_t k = 0; k < nk; k++) ref_keys[k] = data_col(d, keys[k]);
  uint64_t *rows = malloc((d->nrows + 1) * sizeof *rows);
  for (uint64_t r = 0; r < d->nrows; r++) rows[r] = r;
  qsort(rows, d->nrows, sizeof *rows, row_cmp);
  ASSERT_EQ(res->ncols, nk + na);
  uint64_t g = 0;
  for (uint64_t r = 0; r < d->nrows || (nk == 0 && g == 0);) {
    uint64_t e = r;
    while (e < d->nrows && (e == r || key_cmp(rows[r], rows[e]) == 0)) e++;
    ASSERT(g < res->nrows);
    for (size_t k = 0; k < nk; k++) {
      const ccol *oc = &res->c[k];
      ASSERT_STREQ(oc->name, keys[k]);
      ASSERT_EQ(oc->type, ref_keys[k]->type);
      cell want = get(ref_keys[k], rows[r]);
      cell got = {!oc->valid[g], oc->i[g], oc->f[g], oc->s[g], (size_t)oc->slen[g]};
      if (cell_cmp(&got, &want, oc->type) != 0)
        SL__FAIL("key %s of group %llu differs", keys[k], (unsigned long long)g);
    }
    for (size_t a = 0; a < na; a++) {
      char fn[32];
      const char *colon = strchr(aggs[a], ':');
      snprintf(fn, sizeof fn, "%.*s", colon ? (int)(colon - aggs[a]) : 31, aggs[a]);
      check_agg(res, g, fn, colon ? colon + 1 : NULL, rows + r, (size_t)(e - r));
    }
    g++;
    r = e;
    if (nk == 0) break;
  }
  ASSERT_EQ(g, res->nrows);
  free(rows);
}

/* aggs= text from "fn"/"fn:col" specs. */
static void aggs_text(char *buf, size_t n, const char *const *aggs, size_t na) {
  buf[0] = '\0';
  for (size_t a = 0; a < na; a++) {
    char one[64];
    const char *colon = strchr(aggs[a], ':');
    if (colon) snprintf(one, sizeof one, "%s%.*s(%s)", a ? "," : "", (int)(colon - aggs[a]), aggs[a], colon + 1);
    else snprintf(one, sizeof one, "%s%s", a ? "," : "", aggs[a]);
    strncat(buf, one, n - strlen(buf) - 1);
  }
}

static const char *const all_aggs[] = {
    "count", "count:x", "sum:x", "mean:x", "min:x", "max:x", "var:x", "std:x",
    "count_distinct:x", "first:x", "last:x", "sum:n", "mean:n", "var:n", "min:n",
    "max:n", "sum:y", "std:y", "min:s", "max:s", "first:s", "last:s",
    "count_distinct:s", "count:s", "sum:b", "mean:b", "min:b", "max:b",
    "count_distinct:k", "first:b"};
#define N_ALL (sizeof all_aggs / sizeof all_aggs[0])

/* ======================================================================
 * groupby / aggregate
 * ====================================================================== */

/* Hand-checked values: nulls as their own key, sorted first; count vs
 * count(x); mean of no values is null; strings. */
TEST(groupby_small_exact) {
  tdata d = {0};
  d.nrows = 7;
  tcol *k = add_col(&d, "k", SL_DT_STRING), *x = add_col(&d, "x", SL_DT_I64);
  const char *keys[] = {"b", "a", "b", "", "a", "b", "a"};
  const int64_t xs[] = {5, 1, 7, 3, 2, -4, 0};
  for (uint64_t r = 0; r < 7; r++) {
    set_str(k, r, keys[r]);
    x->i[r] = xs[r];
  }
  k->valid[3] = 0; /* null key */
  x->valid[6] = 0; /* a: 1, 2, null */
  x->valid[3] = 0; /* null group: only null x */
  uint64_t sizes[] = {3, 1, 3};
  set_cuts(&d, sizes, 3);
  g_data = &d;
  const ctab *t = run_one("t.table ! groupby keys=k aggs=count,count(x),sum(x),mean(x),"
                          "min(x),max(x),first(x),last(x) ! t.capture", 2);
  ASSERT_STREQ(t->name, "result");
  ASSERT_EQ(t->seq, 0);
  ASSERT_EQ(t->nrows, 3);
  ASSERT_EQ(t->ncols, 9);
  const char *names[] = {"k", "count", "count(x)", "sum(x)", "mean(x)", "min(x)",
                         "max(x)", "first(x)", "last(x)"};
  const sl_dtype types[] = {SL_DT_STRING, SL_DT_I64, SL_DT_I64, SL_DT_I64, SL_DT_F64,
                            SL_DT_I64, SL_DT_I64, SL_DT_I64, SL_DT_I64};
  for (int j = 0; j < 9; j++) {
    ASSERT_STREQ(t->c[j].name, names[j]);
    ASSERT_EQ(t->c[j].type, types[j]);
  }
  /* rows: null, "a", "b" */
  ASSERT_EQ(t->c[0].valid[0], 0);
  ASSERT_STREQ(t->c[0].s[1], "a");
  ASSERT_STREQ(t->c[0].s[2], "b");
  const int64_t count[] = {1, 3, 3}, countx[] = {0, 2, 3}, sum[] = {0, 3, 8};
  for (int g = 0; g < 3; g++) {
    ASSERT_EQ(t->c[1].i[g], count[g]);
    ASSERT_EQ(t->c[2].i[g], countx[g]);
    ASSERT_EQ(t->c[3].i[g], sum[g]);
  }
  ASSERT_EQ(t->c[4].valid[0], 0); /* mean of no values: null */
  ASSERT(t->c[4].f[1] == 1.5);
  ASSERT(fabs(t->c[4].f[2] - 8.0 / 3.0) < 1e-15);
  ASSERT_EQ(t->c[5].valid[0], 0);
  ASSERT_EQ(t->c[5].i[1], 1);
  ASSERT_EQ(t->c[5].i[2], -4);
  ASSERT_EQ(t->c[6].i[2], 7);
  ASSERT_EQ(t->c[7].i[2], 5);  /* first of b */
  ASSERT_EQ(t->c[8].i[2], -4); /* last of b */
  ASSERT_EQ(t->c[8].i[1], 2);  /* last non-null of a */
  capture_reset();
  data_free(&d);
}

TEST(groupby_vs_reference) {
  tdata d;
  make_data(&d, 7, 5000, 40, 12, 0.05);
  g_data = &d;
  char aggs[1024], text[1200];
  aggs_text(aggs, sizeof aggs, all_aggs, N_ALL);
  const char *keysets[][3] = {{"k"}, {"s"}, {"b"}, {"s", "b", "k"}, {"x"}};
  const size_t nks[] = {1, 1, 1, 3, 1};
  const char *keytext[] = {"k", "s", "b", "s,b,k", "x"};
  for (size_t ks = 0; ks < 5; ks++) {
    snprintf(text, sizeof text, "t.table ! groupby keys=%s aggs=%s ! t.capture",
             keytext[ks], aggs);
    const ctab *t = run_one(text, 2);
    check_result(t, &d, keysets[ks], nks[ks], all_aggs, N_ALL);
  }
  capture_reset();
  data_free(&d);
}

TEST(aggregate_vs_reference) {
  tdata d;
  make_data(&d, 11, 3000, 10, 12, 0.1);
  g_data = &d;
  char aggs[1024], text[1200];
  aggs_text(aggs, sizeof aggs, all_aggs, N_ALL);
  snprintf(text, sizeof text, "t.table ! aggregate aggs=%s ! t.capture", aggs);
  const ctab *t = run_one(text, 2);
  ASSERT_EQ(t->nrows, 1);
  check_result(t, &d, NULL, 0, all_aggs, N_ALL);
  capture_reset();
  data_free(&d);
}

/* No rows at all (every chunk empty): one row, count 0, sum 0, others null. */
TEST(aggregate_empty_chunks) {
  tdata d;
  make_data(&d, 3, 0, 5, 5, 0);
  uint64_t zero[] = {0};
  set_cuts(&d, zero, 1);
  ASSERT_EQ(d.nchunks, 1);
  g_data = &d;
  const ctab *t = run_one("t.table ! aggregate aggs=count,sum(x),sum(n),mean(x),min(s),"
                          "var(x) ! t.capture", 1);
  ASSERT_EQ(t->nrows, 1);
  ASSERT_EQ(cap_col(t, "count")->i[0], 0);
  ASSERT(cap_col(t, "sum(x)")->f[0] == 0.0);
  ASSERT_EQ(cap_col(t, "sum(n)")->i[0], 0);
  ASSERT_EQ(cap_col(t, "mean(x)")->valid[0], 0);
  ASSERT_EQ(cap_col(t, "min(s)")->valid[0], 0);
  ASSERT_EQ(cap_col(t, "var(x)")->valid[0], 0);
  /* no row, so no value of the wrong type: a string column sums to 0 */
  t = run_one("t.table ! aggregate aggs=sum(s),mean(s),std(s) ! t.capture", 1);
  ASSERT_EQ(cap_col(t, "sum(s)")->type, SL_DT_I64);
  ASSERT_EQ(cap_col(t, "sum(s)")->i[0], 0);
  ASSERT_EQ(cap_col(t, "mean(s)")->valid[0], 0);
  /* groupby over no rows: a table with no rows */
  t = run_one("t.table ! groupby keys=s aggs=count ! t.capture", 1);
  ASSERT_EQ(t->nrows, 0);
  ASSERT_EQ(t->ncols, 2);
  capture_reset();
  data_free(&d);
}

/* fn(*) with cols= expands column by column; names as written. */
TEST(aggregate_star_cols) {
  tdata d;
  make_data(&d, 5, 2000, 10, 12, 0.05);
  g_data = &d;
  const ctab *t = run_one("t.table ! aggregate cols=x,n aggs=count(*),mean(*),std(*),"
                          "min(*),max(*) ! t.capture", 2);
  const char *names[] = {"count(x)", "mean(x)", "std(x)", "min(x)", "max(x)",
                         "count(n)", "mean(n)", "std(n)", "min(n)", "max(n)"};
  ASSERT_EQ(t->ncols, 10);
  for (int j = 0; j < 10; j++) ASSERT_STREQ(t->c[j].name, names[j]);
  const char *const specs[] = {"count:x", "mean:x", "std:x", "min:x", "max:x",
                               "count:n", "mean:n", "std:n", "min:n", "max:n"};
  check_result(t, &d, NULL, 0, specs, 10);
  /* plain terms keep their place; a run of fn(*) repeats per column */
  t = run_one("t.table ! groupby keys=b cols=x,n aggs=count,sum(*),max(*),min(s) "
              "! t.capture", 2);
  const char *names2[] = {"b", "count", "sum(x)", "max(x)", "sum(n)", "max(n)", "min(s)"};
  for (int j = 0; j < 7; j++) ASSERT_STREQ(t->c[j].name, names2[j]);
  const char *keys[] = {"b"};
  const char *const specs2[] = {"count", "sum:x", "max:x", "sum:n", "max:n", "min:s"};
  check_result(t, &d, keys, 1, specs2, 6);
  capture_reset();
  data_free(&d);
}

/* Float keys: -0.0 and 0.0 are one group, NaN is null (first); NaN values
 * are skipped like nulls. */
TEST(groupby_float_keys) {
  tdata d = {0};
  d.nrows = 6;
  tcol *k = add_col(&d, "k", SL_DT_F64), *x = add_col(&d, "x", SL_DT_F64);
  const double ks[] = {0.0, -0.0, NAN, 2.5, -1.0, 2.5};
  const double xs[] = {1.0, 2.0, 3.0, NAN, 5.0, 6.0};
  for (int r = 0; r < 6; r++) {
    k->f[r] = ks[r];
    x->f[r] = xs[r];
  }
  k->valid[4] = 0; /* a real null joins NaN's group */
  uint64_t sizes[] = {2, 1};
  set_cuts(&d, sizes, 2);
  g_data = &d;
  const ctab *t = run_one("t.table ! groupby keys=k aggs=count,count(x),mean(x) ! t.capture", 2);
  ASSERT_EQ(t->nrows, 3); /* null, 0, 2.5 */
  ASSERT_EQ(t->c[0].valid[0], 0);
  ASSERT(t->c[0].f[1] == 0.0 && !signbit(t->c[0].f[1]));
  ASSERT(t->c[0].f[2] == 2.5);
  ASSERT_EQ(t->c[1].i[0], 2);
  ASSERT_EQ(t->c[1].i[1], 2);
  ASSERT_EQ(t->c[2].i[2], 1); /* NaN not counted */
  ASSERT(t->c[3].f[0] == 4.0);
  ASSERT(t->c[3].f[1] == 1.5);
  ASSERT(t->c[3].f[2] == 6.0);
  capture_reset();
  data_free(&d);
}

/* var/std merge (Chan) with chunks of 0, 1, 2 and many rows, against a
 * two-pass reference; values offset by 1e6 to make naive formulas fail. */
TEST(groupby_variance_chunks) {
  tdata d = {0};
  d.nrows = 4000;
  tcol *k = add_col(&d, "k", SL_DT_I64), *x = add_col(&d, "x", SL_DT_F64);
  uint64_t seed = 99;
  for (uint64_t r = 0; r < d.nrows; r++) {
    k->i[r] = (int64_t)(rng(&seed) % 3);
    x->f[r] = 1e6 + rng_unit(&seed);
  }
  const uint64_t patterns[][6] = {{1, 0, 2, 1, 997, 3}, {4000}, {1}, {2, 0, 0, 5, 1, 1}};
  for (int pt = 0; pt < 4; pt++) {
    set_cuts(&d, patterns[pt], pt == 1 || pt == 2 ? 1 : 6);
    g_data = &d;
    const ctab *t = run_one("t.table ! groupby keys=k aggs=var(x),std(x),mean(x) ! t.capture",
                            pt % 2 + 1);
    const char *keys[] = {"k"};
    const char *const specs[] = {"var:x", "std:x", "mean:x"};
    check_result(t, &d, keys, 1, specs, 3);
  }
  capture_reset();
  data_free(&d);
}

/* The same data, the same chunks: bytes identical for 1..4 threads, with
 * random delays before groupby and items reordered by an io stage. */
static void determinism_round(uint64_t seed, const char *aggs, const char *keys) {
  char text[1400];
  snprintf(text, sizeof text, "t.table ! groupby keys=%s aggs=%s ! t.capture", keys, aggs);
  const ctab *t = run_one(text, 1);
  size_t n = t->nbytes;
  char *want = malloc(n);
  memcpy(want, t->bytes, n);
  const char *perturb[] = {"t.delay max_us=300", "t.iodelay max_us=300 workers=3 order=any",
                           "t.iodelay max_us=100 workers=4 order=any ! t.delay max_us=100"};
  for (unsigned th = 1; th <= 4; th++)
    for (int k = 0; k < 3; k++) {
      atomic_store(&g_delay_seed, (unsigned)(seed * 31 + th * 7 + (unsigned)k));
      snprintf(text, sizeof text, "t.table ! %s ! groupby keys=%s aggs=%s ! t.capture",
               perturb[k], keys, aggs);
      t = run_one(text, th);
      if (t->nbytes != n || memcmp(t->bytes, want, n) != 0)
        SL__FAIL("result differs with %u threads, %s", th, perturb[k]);
    }
  free(want);
}

TEST(groupby_determinism) {
  tdata d;
  make_data(&d, 21, 6000, 30, 12, 0.05);
  uint64_t seed = 5;
  set_random_cuts(&d, &seed, 300);
  g_data = &d;
  char aggs[1024];
  aggs_text(aggs, sizeof aggs, all_aggs, N_ALL);
  determinism_round(1, aggs, "k");
  determinism_round(2, aggs, "s,b");
  /* The check can fail: other chunk boundaries change the merge order, and
   * with it some low-order bits (so order does matter to the bytes). */
  const ctab *t = run_one("t.table ! groupby keys=k aggs=mean(y),var(y),std(x),var(x) ! t.capture", 1);
  size_t n = t->nbytes;
  char *first = malloc(n);
  memcpy(first, t->bytes, n);
  seed = 77;
  set_random_cuts(&d, &seed, 50);
  t = run_one("t.table ! groupby keys=k aggs=mean(y),var(y),std(x),var(x) ! t.capture", 1);
  ASSERT(t->nbytes == n);
  ASSERT(memcmp(t->bytes, first, n) != 0);
  free(first);
  capture_reset();
  data_free(&d);
}

/* A checked pipeline runs twice: the stage state starts afresh each run. */
TEST(groupby_rerun) {
  tdata d;
  make_data(&d, 8, 1000, 7, 12, 0.05);
  g_data = &d;
  runres r = run_pipe_n("t.table ! groupby keys=k aggs=count,sum(n),min(s) ! t.capture", 2, 2);
  ASSERT_EQ(r.rc, 0);
  ASSERT_EQ(g_cap.n, 2);
  ASSERT_EQ(g_cap.t[0].nbytes, g_cap.t[1].nbytes);
  ASSERT(memcmp(g_cap.t[0].bytes, g_cap.t[1].bytes, g_cap.t[0].nbytes) == 0);
  const char *keys[] = {"k"};
  const char *const specs[] = {"count", "sum:n", "min:s"};
  check_result(&g_cap.t[1], &d, keys, 1, specs, 3);
  runres_free(&r);
  capture_reset();
  data_free(&d);
}

TEST(groupby_runtime_errors) {
  tdata d;
  make_data(&d, 4, 300, 7, 12, 0.05);
  uint64_t sizes[] = {100};
  set_cuts(&d, sizes, 1);
  g_data = &d;
  runres r = run_pipe("t.table ! groupby keys=zz aggs=count ! t.capture", 1);
  ASSERT_EQ(r.rc, SL_EITEMS);
  ASSERT_EQ(g_cap.n, 0); /* no result when chunks failed */
  ASSERT_EQ(r.nfail, 4); /* three chunks, then finish */
  ASSERT_STREQ(r.fail[0], "t.csv#1|groupby|no column \"zz\" (columns: k, s, b, x, y, n)");
  ASSERT_STREQ(r.fail[3], "(finish)|groupby|3 input chunk(s) failed here; no result");
  runres_free(&r);
  /* retried chunks count once */
  g_retries = 2;
  r = run_pipe("t.table ! groupby keys=zz aggs=count ! t.capture", 2);
  g_retries = 0;
  ASSERT_EQ(r.nfail, 4);
  ASSERT_STREQ(r.fail[3], "(finish)|groupby|3 input chunk(s) failed here; no result");
  runres_free(&r);
  r = run_pipe("t.table ! groupby keys=k aggs=count,sum(s) ! t.capture", 1);
  ASSERT_EQ(r.rc, SL_EITEMS);
  ASSERT_STREQ(r.fail[0], "t.csv#1|groupby|sum(s): column \"s\" is string, not a number");
  runres_free(&r);
  r = run_pipe("t.table ! aggregate aggs=mean(zz) ! t.capture", 1);
  ASSERT_EQ(r.rc, SL_EITEMS);
  ASSERT_STREQ(r.fail[0], "t.csv#1|aggregate|no column \"zz\" (columns: k, s, b, x, y, n)");
  runres_free(&r);
  /* a column whose type changes between chunks */
  g_retype = true;
  r = run_pipe("t.table ! groupby keys=k aggs=sum(n) ! t.capture", 1);
  g_retype = false;
  ASSERT_EQ(r.rc, SL_EITEMS);
  ASSERT_EQ(r.nfail, 3);
  ASSERT_STREQ(r.fail[0], "t.csv#2|groupby|column \"n\" is float64 here but int64 in an "
                          "earlier chunk");
  runres_free(&r);
  /* an int64 sum beyond int64 is an error, not a wrapped number */
  for (uint64_t i = 0; i < d.nrows; i++) {
    d.col[5].i[i] = INT64_MAX / 100;
    d.col[5].valid[i] = 1;
  }
  r = run_pipe("t.table ! aggregate aggs=sum(n) ! t.capture", 2);
  ASSERT_EQ(r.rc, SL_EITEMS);
  ASSERT_STREQ(r.fail[0], "(finish)|aggregate|sum(n): the sum does not fit in int64");
  runres_free(&r);
  /* ...but a sum whose partial sums overflow and come back is exact */
  for (uint64_t i = 0; i < d.nrows; i++) d.col[5].i[i] = i < 150 ? INT64_MAX / 2 : -(INT64_MAX / 2);
  const ctab *t = run_one("t.table ! aggregate aggs=sum(n) ! t.capture", 2);
  ASSERT_EQ(t->c[0].i[0], 0);
  capture_reset();
  data_free(&d);
}

TEST(groupby_check_errors) {
  expect_check_error("t.table ! groupby keys=k aggs=median(x) ! t.capture",
                     "stage 'groupby': aggs: unknown function \"median\" (known: count, sum, "
                     "mean, min, max, var, std, count_distinct, first, last) at position 1");
  expect_check_error("t.table ! groupby keys=k aggs=count,sum ! t.capture",
                     "aggs: sum needs a column, e.g. sum(x), at position 7");
  expect_check_error("t.table ! groupby keys=k aggs='sum(x),sum( x )' ! t.capture",
                     "aggs: \"sum(x)\" is listed twice");
  expect_check_error("t.table ! groupby keys=k,k ! t.capture",
                     "keys: \"k\" is listed twice at position 3");
  expect_check_error("t.table ! groupby keys= ! t.capture",
                     "keys: no key column (use aggregate for none)");
  expect_check_error("t.table ! groupby keys=k aggs=sum(x ! t.capture",
                     "aggs: expected ')' at position 6");
  expect_check_error("t.table ! groupby keys=k aggs='sum(\"x)' ! t.capture",
                     "aggs: unterminated quote at position 5");
  expect_check_error("t.table ! groupby keys=k aggs='count,,sum(x)' ! t.capture",
                     "aggs: expected a function name at position 7");
  expect_check_error("t.table ! aggregate aggs=mean(*) ! t.capture",
                     "aggs: mean(*) needs cols= (the columns * stands for)");
  expect_check_error("t.table ! aggregate aggs=count cols=x ! t.capture",
                     "cols: no fn(*) in aggs= to apply it to");
  expect_check_error("t.table ! groupby aggs=count ! t.capture", "keys");
}

/* Quoted names: a column called "unit price" and one with a comma. */
TEST(groupby_quoted_names) {
  tdata d = {0};
  d.nrows = 4;
  tcol *k = add_col(&d, "a,b", SL_DT_I64), *x = add_col(&d, "unit price", SL_DT_F64);
  for (int r = 0; r < 4; r++) {
    k->i[r] = r % 2;
    x->f[r] = r;
  }
  uint64_t sizes[] = {4};
  set_cuts(&d, sizes, 1);
  g_data = &d;
  const ctab *t = run_one("t.table ! groupby keys='\"a,b\"' aggs='sum(\"unit price\")' "
                          "! t.capture", 1);
  ASSERT_STREQ(t->c[0].name, "a,b");
  ASSERT_STREQ(t->c[1].name, "sum(unit price)");
  ASSERT(t->c[1].f[0] == 2.0 && t->c[1].f[1] == 4.0);
  capture_reset();
  data_free(&d);
}

/* Randomised sweep: data, chunking, keys, threads and delays vary; every
 * result equals the reference and the 1-thread bytes. */
TEST(groupby_stress_sweep) {
  const char *keytext[] = {"k", "s", "b,k", "s,k,b"};
  const char *keysets[][3] = {{"k"}, {"s"}, {"b", "k"}, {"s", "k", "b"}};
  const size_t nks[] = {1, 1, 2, 3};
  char aggs[1024], text[1400];
  aggs_text(aggs, sizeof aggs, all_aggs, N_ALL);
  for (uint64_t it = 0; it < 12; it++) {
    uint64_t seed = 1000 + it;
    tdata d;
    make_data(&d, seed, 500 + rng(&seed) % 2500, 1 + (unsigned)(rng(&seed) % 60),
              1 + (unsigned)(rng(&seed) % 12), rng_unit(&seed) * 0.3);
    set_random_cuts(&d, &seed, 1 + rng(&seed) % 400);
    g_data = &d;
    size_t ks = it % 4;
    snprintf(text, sizeof text, "t.table ! groupby keys=%s aggs=%s ! t.capture",
             keytext[ks], aggs);
    const ctab *t = run_one(text, 1);
    check_result(t, &d, keysets[ks], nks[ks], all_aggs, N_ALL);
    size_t n = t->nbytes;
    char *want = malloc(n);
    memcpy(want, t->bytes, n);
    for (int rep = 0; rep < 3; rep++) {
      unsigned th = 2 + (unsigned)(rng(&seed) % 3);
      atomic_store(&g_delay_seed, (unsigned)rng(&seed));
      snprintf(text, sizeof text,
               "t.table ! t.iodelay max_us=%d workers=%d order=any ! t.delay max_us=50 "
               "! groupby keys=%s aggs=%s ! t.capture",
               (int)(rng(&seed) % 200), 2 + (int)(rng(&seed) % 3), keytext[ks], aggs);
      t = run_one(text, th);
      if (t->nbytes != n || memcmp(t->bytes, want, n) != 0)
        SL__FAIL("iteration %llu: result differs with %u threads", (unsigned long long)it, th);
    }
    free(want);
    capture_reset();
    data_free(&d);
  }
}

/* ======================================================================
 * filter
 * ====================================================================== */

/* Rows kept by `expr` over all chunks (every chunk reaches the sink). */
static uint64_t filter_count(const char *expr, unsigned threads) {
  char text[512];
  snprintf(text, sizeof text, "t.table ! filter expr='%s' ! t.capture", expr);
  runres r = run_pipe(text, threads);
  if (r.rc != 0)
    SL__FAIL("filter '%s' failed: %s%s", expr, r.perr ? r.perr : "", r.nfail ? r.fail[0] : "");
  runres_free(&r);
  ASSERT_EQ(g_cap.n, g_data->nchunks);
  uint64_t n = 0;
  for (size_t k = 0; k < g_cap.n; k++) {
    ASSERT_EQ(g_cap.t[k].seq, k);
    n += g_cap.t[k].nrows;
  }
  return n;
}

TEST(filter_precedence) {
  tdata d;
  make_data(&d, 3, 50, 5, 5, 0);
  g_data = &d;
  const char *all[] = {"1 + 2 * 3 == 7", "(1 + 2) * 3 == 9", "10 - 2 - 3 == 5",
                       "2 * 3 - 4 / 2 == 4", "-2 * -3 == 6", "7 / 2 == 3.5",
                       "true || false && false", "!false", "!(1 > 2)",
                       "1 < 2 && 2 <= 2 && 3 > 2 && 3 >= 3 && 1 != 2",
                       "\"abc\" < \"abd\" && \"ab\" < \"abc\" && \"b\" > \"abc\"",
                       "\"q\\\"\" == \"q\\\"\"", "1 == 1.0 && 2 > 1.5 && 9007199254740993 > 9007199254740992.0",
                       "null == null", "1.5e1 == 15", "true == !false", "--1 == 1"};
  const char *none[] = {"(true || false) && false", "!true", "false && true || false",
                        "1 > 2 || 2 < 1", "\"a\" == \"b\"", "!!false",
                        "9007199254740993 == 9007199254740992.0", "null != null"};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    if (filter_count(all[i], 1) != 50) SL__FAIL("'%s' should keep every row", all[i]);
  for (size_t i = 0; i < sizeof none / sizeof none[0]; i++)
    if (filter_count(none[i], 1) != 0) SL__FAIL("'%s' should keep no row", none[i]);
  capture_reset();
  data_free(&d);
}

/* Counts the rows where pred holds, the slow way. */
static uint64_t count_rows(const tdata *d, bool (*pred)(const tdata *, uint64_t)) {
  uint64_t n = 0;
  for (uint64_t r = 0; r < d->nrows; r++) n += pred(d, r);
  return n;
}

/* x > 500 && s != "Toys" (SQL: a null operand makes it false) */
static bool pred1(const tdata *d, uint64_t r) {
  cell x = get(&d->col[3], r), s = get(&d->col[1], r);
  return !x.null && x.f > 500 && !s.null && strcmp(s.s, "Toys") != 0;
}
/* k == null || n * 2 + 1 >= 0 && b */
static bool pred2(const tdata *d, uint64_t r) {
  cell k = get(&d->col[0], r), n = get(&d->col[5], r), b = get(&d->col[2], r);
  return k.null || (!n.null && n.i * 2 + 1 >= 0 && !b.null && b.i);
}
/* !(x < 100) || s == "a" -- Kleene: null || true is true */
static bool pred3(const tdata *d, uint64_t r) {
  cell x = get(&d->col[3], r), s = get(&d->col[1], r);
  return (!x.null && !(x.f < 100)) || (!s.null && !strcmp(s.s, "a"));
}
/* x / 2 > n + 0.5 (mixed types) */
static bool pred4(const tdata *d, uint64_t r) {
  cell x = get(&d->col[3], r), n = get(&d->col[5], r);
  return !x.null && !n.null && x.f / 2 > (double)n.i + 0.5;
}

TEST(filter_rows) {
  tdata d;
  make_data(&d, 17, 3000, 9, 12, 0.1);
  g_data = &d;
  struct {
    const char *expr;
    bool (*pred)(const tdata *, uint64_t);
  } cases[] = {{"x > 500 && s != \"Toys\"", pred1},
               {"k == null || n * 2 + 1 >= 0 && b", pred2},
               {"!(x < 100) || s == \"a\"", pred3},
               {"x / 2 > n + 0.5", pred4},
               {"col(\"x\") > 500 && col(\"s\") != \"Toys\"", pred1}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    uint64_t want = count_rows(&d, cases[i].pred);
    ASSERT(want > 0 && want < d.nrows);
    ASSERT_EQ(filter_count(cases[i].expr, 1 + (unsigned)(i % 3)), want);
  }
  /* the kept rows are the right ones, values and nulls intact */
  filter_count("x > 500 && s != \"Toys\"", 2);
  uint64_t r = 0;
  for (size_t k = 0; k < g_cap.n; k++) {
    const ctab *t = &g_cap.t[k];
    ASSERT_EQ(t->ncols, d.ncols);
    ASSERT_EQ(t->first_row, d.cuts[k] + 2);
    for (uint64_t j = 0; j < t->nrows; j++, r++) {
      while (!pred1(&d, r)) r++;
      ASSERT(r < d.cuts[k + 1]);
      for (uint32_t c = 0; c < d.ncols; c++) {
        cell want = get(&d.col[c], r);
        const ccol *oc = &t->c[c];
        if (d.col[c].type == SL_DT_F64 && oc->valid[j] && isnan(oc->f[j])) {
          ASSERT(want.null);
          continue;
        }
        cell got = {!oc->valid[j], oc->i[j], oc->f[j], oc->s[j], (size_t)oc->slen[j]};
        ASSERT_EQ(cell_cmp(&got, &want, d.col[c].type), 0);
      }
    }
  }
  capture_reset();
  data_free(&d);
}

/* Every row kept: the very same payload passes (zero copy); none kept: an
 * empty table, not a dropped item. */
TEST(filter_passthrough_and_empty) {
  tdata d;
  make_data(&d, 2, 400, 5, 5, 0);
  g_data = &d;
  ASSERT_EQ(filter_count("n >= -1000000", 2), 400);
  for (size_t k = 0; k < g_cap.n; k++) ASSERT(g_cap.t[k].data == g_src_ptr[k]);
  ASSERT_EQ(filter_count("x < 0", 2), 0);
  for (size_t k = 0; k < g_cap.n; k++) {
    ASSERT_EQ(g_cap.t[k].ncols, 6);
    ASSERT(g_cap.t[k].data != g_src_ptr[k] || d.cuts[k] == d.cuts[k + 1]);
  }
  capture_reset();
  data_free(&d);
}

TEST(filter_parse_errors) {
  struct {
    const char *expr, *msg;
  } cases[] = {
      {"x > )", "expr: unexpected ')' at column 5"},
      {"(x > 1", "expr: missing ')' at column 7 (for '(' at column 1)"},
      {"(x > 1 y", "expr: unexpected name \"y\" at column 8"},
      {"x = 1", "expr: unexpected '=' at column 3 (use == to compare)"},
      {"x > 1 & y", "expr: unexpected '&' at column 7 (use && for 'and')"},
      {"a < b < c", "expr: unexpected '<' at column 7 (comparisons do not chain; use &&)"},
      {"s == \"abc", "expr: unterminated string at column 6"},
      {"x > 1.2.3", "expr: bad number \"1.2.3\" at column 5"},
      {"x > 12abc", "expr: bad number \"12abc\" at column 5"},
      {"x > 99999999999999999999", "expr: number 99999999999999999999 out of range at column 5"},
      {"", "expr: empty expression"},
      {"   ", "expr: empty expression"},
      {"foo(x) > 1", "expr: unknown function \"foo\" at column 1 (only col(\"name\"))"},
      {"col(x) > 1", "expr: col() needs a column name in double quotes at column 5"},
      {"x @ 1", "expr: unexpected '@' at column 3"},
      {"x > 1 )", "expr: unexpected ')' at column 7"},
      {"x >", "expr: unexpected end of expression at column 4"},
      {"s == \"a\\qb\"", "expr: unknown escape \\q at column 8"},
      {"x 1", "expr: unexpected number 1 at column 3"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char text[256], want[256];
    snprintf(text, sizeof text, "t.table ! filter expr='%s' ! t.capture", cases[i].expr);
    snprintf(want, sizeof want, "stage 'filter': %s\n", cases[i].msg);
    expect_check_error(text, want);
  }
  char deep[400] = "";
  for (int i = 0; i < 100; i++) strcat(deep, "(");
  char text[600];
  snprintf(text, sizeof text, "t.table ! filter expr='%s1' ! t.capture", deep);
  expect_check_error(text, "expr: nested too deeply at column 65");
}

TEST(filter_type_errors) {
  tdata d;
  make_data(&d, 2, 40, 5, 5, 0);
  uint64_t sizes[] = {40};
  set_cuts(&d, sizes, 1);
  g_data = &d;
  struct {
    const char *expr, *msg;
  } cases[] = {
      {"s > 5", "expr: cannot compare string with int64 at column 3"},
      {"x + s > 1", "expr: cannot apply '+' to float64 and string at column 3"},
      {"k", "expr: the expression gives int64, not true/false"},
      {"zz > 1", "expr: no column \"zz\" (columns: k, s, b, x, y, n)"},
      {"b && k", "expr: cannot apply '&&' to bool and int64 at column 3"},
      {"!k", "expr: cannot apply '!' to int64 at column 1"},
      {"-s == 1", "expr: cannot apply '-' to string at column 1"},
      {"b < true", "expr: cannot compare bool with bool at column 3"},
      {"x + null > 1", "expr: cannot apply '+' to float64 and null at column 3"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char text[256], want[256];
    snprintf(text, sizeof text, "t.table ! filter expr='%s' ! t.capture", cases[i].expr);
    runres r = run_pipe(text, 1);
    ASSERT_EQ(r.rc, SL_EITEMS);
    ASSERT_EQ(r.nfail, 1);
    snprintf(want, sizeof want, "t.csv#1|filter|%s", cases[i].msg);
    ASSERT_STREQ(r.fail[0], want);
    runres_free(&r);
  }
  capture_reset();
  data_free(&d);
}

/* filter ! groupby: the filtered stream aggregates like the reference on
 * the kept rows. */
TEST(filter_then_groupby) {
  tdata d;
  make_data(&d, 41, 3000, 12, 12, 0.05);
  g_data = &d;
  const ctab *t = run_one("t.table ! filter expr='x > 500' ! groupby keys=k aggs=count,sum(x) "
                          "! t.capture", 2);
  /* reference on a copy that keeps only matching rows */
  tdata f;
  memset(&f, 0, sizeof f);
  uint64_t n = 0;
  for (uint64_t r = 0; r < d.nrows; r++) n += !isnan(d.col[3].f[r]) && d.col[3].valid[r] && d.col[3].f[r] > 500;
  f.nrows = n;
  tcol *k = add_col(&f, "k", SL_DT_I64), *x = add_col(&f, "x", SL_DT_F64);
  uint64_t j = 0;
  for (uint64_t r = 0; r < d.nrows; r++) {
    if (!(d.col[3].valid[r] && !isnan(d.col[3].f[r]) && d.col[3].f[r] > 500)) continue;
    k->i[j] = d.col[0].i[r];
    k->valid[j] = d.col[0].valid[r];
    x->f[j++] = d.col[3].f[r];
  }
  const char *keys[] = {"k"};
  const char *const specs[] = {"count", "sum:x"};
  check_result(t, &f, keys, 1, specs, 2);
  data_free(&f);
  capture_reset();
  data_free(&d);
}

/* ======================================================================
 * select
 * ====================================================================== */

TEST(select_zero_copy) {
  tdata d;
  make_data(&d, 6, 500, 5, 12, 0.1);
  g_data = &d;
  runres r = run_pipe("t.table ! select cols=n,s ! t.capture", 2);
  ASSERT_EQ(r.rc, 0);
  runres_free(&r);
  ASSERT_EQ(g_cap.n, d.nchunks);
  for (size_t k = 0; k < g_cap.n; k++) {
    const ctab *t = &g_cap.t[k];
    ASSERT(t->data == g_src_ptr[k]); /* same payload memory: nothing copied */
    ASSERT_EQ(t->ncols, 2);
    ASSERT_STREQ(t->c[0].name, "n");
    ASSERT_STREQ(t->c[1].name, "s");
    for (uint64_t j = 0; j < t->nrows; j++) {
      uint64_t row = d.cuts[k] + j;
      cell n = get(&d.col[5], row), s = get(&d.col[1], row);
      cell gn = {!t->c[0].valid[j], t->c[0].i[j], 0, NULL, 0};
      cell gs = {!t->c[1].valid[j], 0, 0, t->c[1].s[j], (size_t)t->c[1].slen[j]};
      ASSERT_EQ(cell_cmp(&gn, &n, SL_DT_I64), 0);
      ASSERT_EQ(cell_cmp(&gs, &s, SL_DT_STRING), 0);
    }
  }
  r = run_pipe("t.table ! select cols=n,nope ! t.capture", 1);
  ASSERT_EQ(r.rc, SL_EITEMS);
  ASSERT_STREQ(r.fail[0], "t.csv#1|select|no column \"nope\" (columns: k, s, b, x, y, n)");
  runres_free(&r);
  expect_check_error("t.table ! select cols=a,,b ! t.capture", "cols: empty name at position 3");
  expect_check_error("t.table ! select cols=a,a ! t.capture", "cols: \"a\" is listed twice");
  /* select ! groupby reads through the shared block */
  const ctab *t = run_one("t.table ! select cols=s,x ! groupby keys=s aggs=mean(x) ! t.capture", 2);
  const char *keys[] = {"s"};
  const char *const specs[] = {"mean:x"};
  check_result(t, &d, keys, 1, specs, 1);
  capture_reset();
  data_free(&d);
}

/* ======================================================================
 * pipelines/csv_groupby.pipe and csv_stats.pipe, end to end (csv.read and
 * csv.parse from io/): exact output for a small file with a BOM, CRLF,
 * quoted commas, escaped quotes, an embedded newline, empty fields, a
 * quoted empty string (a value) and an unquoted one (null).
 * ====================================================================== */

static const char small_csv[] =
    "\xef\xbb\xbfid,cat,x,n\r\n1,\"a,b\",1.5,10\r\n2,plain,2.25,\r\n"
    "3,\"q\"\"uote\",,7\r\n4,\"a,b\",0.25,-3\r\n5,\"multi\r\nline\",4,1\r\n"
    "6,plain,,2\r\n7,\"\",8.5,5\r\n8,,1,1\r\n";

static char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) SL__FAIL("cannot open %s", path);
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  for (size_t k; (k = fread(buf + n, 1, cap - n - 1, f)) > 0;)
    if ((n += k) + 1 == cap) buf = realloc(buf, cap *= 2);
  fclose(f);
  buf[n] = '\0';
  if (len) *len = n;
  return buf;
}

/* Runs pipelines/<name> with vars and `threads`; returns the out= file. */
static char *run_pipe_file(const char *name, const char *const *vars, size_t nvars,
                           unsigned threads, const char *out) {
  const char *src = getenv("SLUICE_SOURCE_DIR");
  if (!src) SL__FAIL("SLUICE_SOURCE_DIR is not set (run through ctest)");
  char path[1024];
  snprintf(path, sizeof path, "%s/pipelines/%s", src, name);
  size_t len;
  char *text = read_all(path, &len);
  sl_registry *reg;
  ASSERT_OK(sl_registry_create(&reg));
  ASSERT_OK(sl_stages_register_all(reg));
  ASSERT_OK(sl_io_register_all(reg));
  sl_pipeline *p;
  ASSERT_OK(sl_pipeline_create(&p, reg));
  if (sl_pipeline_parse(p, path, text, len, vars, nvars) < 0)
    SL__FAIL("%s", sl_pipeline_errors(p));
  sl_run_options o;
  sl_run_options_init(&o);
  o.threads = threads;
  o.progress = SL_PROGRESS_OFF;
  sl_run *run;
  ASSERT_OK(sl_run_create(&run, p, &o));
  int rc = sl_run_execute(run);
  if (rc != 0) {
    const char *item = "", *stage = "", *msg = sl_run_error(run);
    if (sl_run_failure_count(run)) sl_run_failure(run, 0, &item, &stage, &msg);
    SL__FAIL("%s failed: %d %s %s %s", name, rc, item, stage, msg);
  }
  sl_run_destroy(run);
  sl_pipeline_destroy(p);
  sl_registry_destroy(reg);
  free(text);
  return read_all(out, NULL);
}

TEST(pipelines_e2e) {
  char dir[] = "/tmp/sluice-groupby-XXXXXX";
  ASSERT(mkdtemp(dir));
  char in[128], out[128], v_in[160], v_out[160];
  snprintf(in, sizeof in, "%s/small.csv", dir);
  snprintf(out, sizeof out, "%s/out.csv", dir);
  FILE *f = fopen(in, "wb");
  ASSERT(f);
  fwrite(small_csv, 1, sizeof small_csv - 1, f);
  fclose(f);
  snprintf(v_in, sizeof v_in, "in=%s", in);
  snprintf(v_out, sizeof v_out, "out=%s", out);
  const char *gvars[] = {v_in, v_out, "keys=cat",
                         "aggs=count,sum(x),mean(x),min(n),max(n),count(x)"};
  const char *want_g =
      "cat,count,sum(x),mean(x),min(n),max(n),count(x)\n"
      ",1,1,1,1,1,1\n"
      "\"\",1,8.5,8.5,5,5,1\n"
      "\"a,b\",2,1.75,0.875,-3,10,2\n"
      "\"multi\r\nline\",1,4,4,1,1,1\n"
      "plain,2,2.25,2.25,2,2,1\n"
      "\"q\"\"uote\",1,0,,7,7,0\n";
  /* pandas: df[["x","n"]].agg(["count","mean","std","min","max"]) */
  const char *svars[] = {v_in, v_out, "cols=x,n"};
  const char *want_s =
      "count(x),mean(x),std(x),min(x),max(x),count(n),mean(n),std(n),min(n),max(n)\n"
      "6,2.9166666666666665,3.019381835188565,0.25,8.5,7,3.2857142857142856,"
      "4.347960660443227,-3,10\n";
  for (unsigned th = 1; th <= 2; th++) {
    char *got = run_pipe_file("csv_groupby.pipe", gvars, 4, th, out);
    ASSERT_STREQ(got, want_g);
    free(got);
    got = run_pipe_file("csv_stats.pipe", svars, 3, th, out);
    ASSERT_STREQ(got, want_s);
    free(got);
  }
  unlink(in);
  unlink(out);
  rmdir(dir);
}

static const sl_test_case cases[] = {
    SL_CASE(groupby_small_exact, "unit"),
    SL_CASE(groupby_vs_reference, "unit"),
    SL_CASE(aggregate_vs_reference, "unit"),
    SL_CASE(aggregate_empty_chunks, "unit"),
    SL_CASE(aggregate_star_cols, "unit"),
    SL_CASE(groupby_float_keys, "unit"),
    SL_CASE(groupby_variance_chunks, "unit"),
    SL_CASE(groupby_determinism, "unit"),
    SL_CASE(groupby_rerun, "unit"),
    SL_CASE(groupby_runtime_errors, "unit"),
    SL_CASE(groupby_check_errors, "unit"),
    SL_CASE(groupby_quoted_names, "unit"),
    SL_CASE(filter_precedence, "unit"),
    SL_CASE(filter_rows, "unit"),
    SL_CASE(filter_passthrough_and_empty, "unit"),
    SL_CASE(filter_parse_errors, "unit"),
    SL_CASE(filter_type_errors, "unit"),
    SL_CASE(filter_then_groupby, "unit"),
    SL_CASE(select_zero_copy, "unit"),
    SL_CASE(groupby_stress_sweep, "stress"),
    SL_CASE(pipelines_e2e, "e2e"),
};
SL_TEST_MAIN(cases)
