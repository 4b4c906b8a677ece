/*
 * test_map.c -- the `map` stage in pipelines run in-process.
 *
 * The test registers t.array, a source of ARRAY chunks described by the
 * test (dtype, shape, strides, origin, whole shape, values), and
 * t.arrcap, a serial sink that copies every output chunk. Expected values
 * are computed here in C from the input values.
 */
#include <math.h>

#include "sluice_stages.h"
#include "test.h"

typedef struct chunk {
  sl_array_desc d;
  size_t bytes;
  unsigned char *data;
} chunk;

static chunk g_in[16];
static size_t g_nin;
static chunk g_out[16];
static size_t g_nout;

static int src_open(sl_worker *w, void **local) {
  (void)w;
  *local = calloc(1, sizeof(size_t));
  return *local ? 0 : SL_ENOMEM;
}
static void src_close(sl_worker *w) { free(sl_worker_local(w)); }

static int src_produce(sl_worker *w, sl_item **out) {
  size_t *next = sl_worker_local(w);
  if (*next >= g_nin) return SL_DONE;
  const chunk *c = &g_in[*next];
  char name[32];
  snprintf(name, sizeof name, "a#%zu", *next);
  sl_item *it = sl_item_create(*next, name);
  sl_block *b;
  ASSERT_OK(sl_worker_alloc(w, c->bytes ? c->bytes : 8, &b));
  memcpy(sl_block_data(b), c->data, c->bytes);
  sl_item_set_block(it, SL_KIND_ARRAY, b, 0, c->bytes);
  it->payload.u.array = c->d;
  (*next)++;
  *out = it;
  return 0;
}

static const sl_stage_def t_array = {
    .name = "t.array", .summary = "test array source", .exec = SL_EXEC_SERIAL,
    .in_kind = SL_KIND_NONE, .out_kind = SL_KIND_ARRAY, .flags = SL_STAGE_SOURCE,
    .open = src_open, .produce = src_produce, .close = src_close};

static int cap_process(sl_worker *w, sl_item *in, sl_item **out) {
  (void)w;
  *out = NULL;
  chunk *c = &g_out[g_nout++];
  c->d = in->payload.u.array;
  c->bytes = in->payload.size;
  c->data = malloc(c->bytes + 1);
  memcpy(c->data, in->payload.data, c->bytes);
  return 0;
}

static const sl_stage_def t_arrcap = {
    .name = "t.arrcap", .summary = "test array sink", .exec = SL_EXEC_SERIAL,
    .in_kind = SL_KIND_ARRAY, .out_kind = SL_KIND_NONE, .flags = SL_STAGE_SINK,
    .process = cap_process};

static void reset(void) {
  for (size_t k = 0; k < g_nin; k++) free(g_in[k].data);
  for (size_t k = 0; k < g_nout; k++) free(g_out[k].data);
  g_nin = g_nout = 0;
}

/* Adds a C-contiguous chunk of `shape` at `origin` of `whole`; values from
 * f(element index in the chunk). */
static chunk *add_chunk(sl_dtype t, uint32_t nd, const uint64_t *shape, const uint64_t *origin,
                        const uint64_t *whole) {
  chunk *c = &g_in[g_nin++];
  memset(c, 0, sizeof *c);
  c->d.dtype = t;
  c->d.ndim = nd;
  size_t n = 1, es = sl_dtype_size(t);
  for (uint32_t k = 0; k < nd; k++) {
    c->d.shape[k] = shape[k];
    c->d.origin[k] = origin ? origin[k] : 0;
    c->d.whole[k] = whole ? whole[k] : shape[k];
    n *= shape[k];
  }
  int64_t st = (int64_t)es;
  for (uint32_t k = nd; k-- > 0;) {
    c->d.strides[k] = st;
    st *= (int64_t)shape[k];
  }
  c->bytes = n * es;
  c->data = calloc(c->bytes + 1, 1);
  return c;
}

typedef struct result {
  int rc;
  char err[512];
} result;

static result run(const char *text, unsigned threads) {
  result r = {0, ""};
  sl_registry *reg;
  ASSERT_OK(sl_registry_create(&reg));
  ASSERT_OK(sl_stages_register_all(reg));
  ASSERT_OK(sl_registry_add(reg, &t_array));
  ASSERT_OK(sl_registry_add(reg, &t_arrcap));
  sl_pipeline *p;
  ASSERT_OK(sl_pipeline_create(&p, reg));
  r.rc = sl_pipeline_parse(p, "test.pipe", text, strlen(text), NULL, 0);
  if (r.rc < 0) {
    snprintf(r.err, sizeof r.err, "%s", sl_pipeline_errors(p));
  } else {
    sl_run_options o;
    sl_run_options_init(&o);
    o.threads = threads;
    o.progress = SL_PROGRESS_OFF;
    sl_run *run;
    ASSERT_OK(sl_run_create(&run, p, &o));
    r.rc = sl_run_execute(run);
    if (sl_run_failure_count(run) > 0) {
      const char *item, *stage, *msg;
      ASSERT_OK(sl_run_failure(run, 0, &item, &stage, &msg));
      snprintf(r.err, sizeof r.err, "%s|%s|%s", item, stage, msg);
    }
    sl_run_destroy(run);
  }
  sl_pipeline_destroy(p);
  sl_registry_destroy(reg);
  return r;
}

static void run_ok(const char *text, unsigned threads) {
  result r = run(text, threads);
  if (r.rc != 0) SL__FAIL("'%s' failed: %d %s", text, r.rc, r.err);
}

static double *f64(chunk *c) { return (double *)(void *)c->data; }

/* 2.5*x - 1 over float64 chunks of 0, 1, 511, 512, 513, 1025 and 300000
 * elements (the last one is split with sl_parallel_for), for 1 and 2
 * threads; compared with the same arithmetic done here. */
TEST(block_sizes) {
  static const uint64_t sizes[] = {0, 1, 511, 512, 513, 1025, 300000};
  for (unsigned threads = 1; threads <= 2; threads++) {
    uint64_t pos = 0, whole = 0;
    for (size_t k = 0; k < 7; k++) whole += sizes[k];
    for (size_t k = 0; k < 7; k++) {
      chunk *c = add_chunk(SL_DT_F64, 1, &sizes[k], &pos, &whole);
      for (uint64_t j = 0; j < sizes[k]; j++) f64(c)[j] = (double)(j * 7919 % 10007) / 3 - 1000;
      pos += sizes[k];
    }
    run_ok("t.array ! map expr='2.5*x - 1' ! t.arrcap", threads);
    ASSERT_EQ(g_nout, 7);
    for (size_t k = 0; k < 7; k++) {
      const chunk *o = &g_out[k], *in = &g_in[k];
      ASSERT_EQ(o->d.dtype, SL_DT_F64);
      ASSERT_EQ(o->d.shape[0], sizes[k]);
      ASSERT_EQ(o->d.origin[0], in->d.origin[0]);
      ASSERT_EQ(o->d.whole[0], whole);
      ASSERT_EQ(o->d.strides[0], 8);
      ASSERT_EQ(o->bytes, sizes[k] * 8);
      for (uint64_t j = 0; j < sizes[k]; j++) {
        double want = 2.5 * ((const double *)(void *)in->data)[j] - 1;
        if (((const double *)(void *)o->data)[j] != want)
          SL__FAIL("chunk %zu element %" PRIu64 ": %.17g != %.17g", k, j,
                   ((const double *)(void *)o->data)[j], want);
      }
    }
    /* The index of a chunk placed in the whole array. */
    run_ok("t.array ! map expr='i' dtype=int64 ! t.arrcap", threads);
    for (size_t k = 0; k < 7; k++)
      for (uint64_t j = 0; j < sizes[k]; j++)
        ASSERT_EQ(((const int64_t *)(void *)g_out[7 + k].data)[j], g_in[k].d.origin[0] + j);
    reset();
  }
}

/* Every input dtype converts to double; every output dtype stores. */
TEST(dtypes) {
  static const sl_dtype ts[] = {SL_DT_BOOL, SL_DT_I8,  SL_DT_U8,  SL_DT_I16,
                                SL_DT_U16,  SL_DT_I32, SL_DT_U32, SL_DT_I64,
                                SL_DT_U64,  SL_DT_F32, SL_DT_F64};
  uint64_t n = 600;
  for (size_t t = 0; t < sizeof ts / sizeof ts[0]; t++) {
    chunk *c = add_chunk(ts[t], 1, &n, NULL, NULL);
    for (uint64_t j = 0; j < n; j++) {
      int64_t v = (int64_t)(j % 100);
      switch (ts[t]) {
      case SL_DT_BOOL: c->data[j] = (unsigned char)(j % 3 == 0); break;
      case SL_DT_I8: ((int8_t *)(void *)c->data)[j] = (int8_t)(v - 50); break;
      case SL_DT_U8: c->data[j] = (uint8_t)(v + 150); break;
      case SL_DT_I16: ((int16_t *)(void *)c->data)[j] = (int16_t)(v * 300 - 15000); break;
      case SL_DT_U16: ((uint16_t *)(void *)c->data)[j] = (uint16_t)(v * 600); break;
      case SL_DT_I32: ((int32_t *)(void *)c->data)[j] = (int32_t)(v * 40000000 - 2000000000); break;
      case SL_DT_U32: ((uint32_t *)(void *)c->data)[j] = (uint32_t)v * 40000000u; break;
      case SL_DT_I64: ((int64_t *)(void *)c->data)[j] = v * INT64_C(90000000000000000) - INT64_C(4500000000000000000); break;
      case SL_DT_U64: ((uint64_t *)(void *)c->data)[j] = (uint64_t)v * UINT64_C(180000000000000000); break;
      case SL_DT_F32: ((float *)(void *)c->data)[j] = (float)v / 3.0f; break;
      default: ((double *)(void *)c->data)[j] = (double)v / 3.0; break;
      }
    }
  }
  run_ok("t.array ! map expr='x / 2' ! t.arrcap", 2);
  ASSERT_EQ(g_nout, 11);
  for (size_t t = 0; t < 11; t++) {
    const unsigned char *p = g_in[t].data;
    for (uint64_t j = 0; j < n; j++) {
      double v;
      switch (ts[t]) {
      case SL_DT_BOOL: v = p[j]; break;
      case SL_DT_I8: v = ((const int8_t *)(const void *)p)[j]; break;
      case SL_DT_U8: v = p[j]; break;
      case SL_DT_I16: v = ((const int16_t *)(const void *)p)[j]; break;
      case SL_DT_U16: v = ((const uint16_t *)(const void *)p)[j]; break;
      case SL_DT_I32: v = ((const int32_t *)(const void *)p)[j]; break;
      case SL_DT_U32: v = ((const uint32_t *)(const void *)p)[j]; break;
      case SL_DT_I64: v = (double)((const int64_t *)(const void *)p)[j]; break;
      case SL_DT_U64: v = (double)((const uint64_t *)(const void *)p)[j]; break;
      case SL_DT_F32: v = ((const float *)(const void *)p)[j]; break;
      default: v = ((const double *)(const void *)p)[j]; break;
      }
      if (f64(&g_out[t])[j] != v / 2)
        SL__FAIL("%s element %" PRIu64 ": %.17g != %.17g", sl_dtype_name(ts[t]), j,
                 f64(&g_out[t])[j], v / 2);
    }
  }
  reset();
  /* Outputs: truncation toward zero, float32 rounding, bool. */
  uint64_t m = 8;
  chunk *c = add_chunk(SL_DT_F64, 1, &m, NULL, NULL);
  const double xs[] = {-2.9, -1.5, -0.5, 0, 0.5, 1.5, 2.9, 100.99};
  memcpy(c->data, xs, sizeof xs);
  run_ok("t.array ! map expr=x dtype=int8 ! t.arrcap", 1);
  run_ok("t.array ! map expr=x dtype=float32 ! t.arrcap", 1);
  run_ok("t.array ! map expr='x + 0.5' dtype=bool ! t.arrcap", 1);
  run_ok("t.array ! map expr='x + 3' dtype=uint16 ! t.arrcap", 1);
  ASSERT_EQ(g_out[0].d.dtype, SL_DT_I8);
  ASSERT_EQ(g_out[0].d.strides[0], 1);
  for (int j = 0; j < 8; j++) {
    ASSERT_EQ(((int8_t *)(void *)g_out[0].data)[j], (int8_t)xs[j]);
    ASSERT(((float *)(void *)g_out[1].data)[j] == (float)xs[j]);
    ASSERT_EQ(g_out[2].data[j], xs[j] + 0.5 != 0);
    ASSERT_EQ(((uint16_t *)(void *)g_out[3].data)[j], (uint16_t)(xs[j] + 3));
  }
  reset();
}

/* NaN and out-of-range values for integer dtypes fail the chunk naming the
 * first bad element by its index in the whole array, for any thread
 * count. */
TEST(range_errors) {
  uint64_t shape[2] = {400, 600}, origin[2] = {4, 0}, whole[2] = {1000, 600};
  chunk *c = add_chunk(SL_DT_F64, 2, shape, origin, whole);
  for (uint64_t j = 0; j < 240000; j++) f64(c)[j] = (double)(j % 200);
  f64(c)[200000 * 1 + 1] = 40000;  /* [337, 201] in the whole */
  f64(c)[230000] = NAN;             /* later: not reported */
  for (unsigned threads = 1; threads <= 2; threads++) {
    result r = run("t.array ! map expr='x * 1' dtype=int16 ! t.arrcap", threads);
    ASSERT_EQ(r.rc, SL_EITEMS);
    ASSERT_STREQ(r.err, "a#0|map|element [337, 201]: value 40000 is out of range for int16 "
                        "(-32768 to 32767)");
  }
  f64(c)[100] = NAN;
  result r = run("t.array ! map expr='x' dtype=uint8 ! t.arrcap", 2);
  ASSERT_STREQ(r.err, "a#0|map|element [4, 100]: NaN cannot be stored as uint8 (use "
                      "dtype=float64, or where(isnan(...), 0, ...))");
  r = run("t.array ! map expr='x - 1' dtype=uint64 ! t.arrcap", 2);
  ASSERT_STREQ(r.err, "a#0|map|element [4, 0]: value -1 is out of range for uint64 "
                      "(0 to 2^64-1)");
  /* -2^63 fits int64, 2^63 does not. */
  r = run("t.array ! map expr='where(i1 == 7, 2 ** 63, -(2 ** 63))' dtype=int64 ! t.arrcap", 2);
  ASSERT_STREQ(r.err, "a#0|map|element [4, 7]: value 9.2233720368547758e+18 is out of range "
                      "for int64 (-2^63 to 2^63-1)");
  reset();
}

/* Index variables of a 2-D chunk inside a larger array; a strided
 * (transposed) input. */
TEST(index_and_strides) {
  uint64_t shape[2] = {3, 700}, origin[2] = {5, 1000}, whole[2] = {10, 2000};
  chunk *c = add_chunk(SL_DT_I32, 2, shape, origin, whole);
  for (uint64_t j = 0; j < 2100; j++) ((int32_t *)(void *)c->data)[j] = (int32_t)j;
  run_ok("t.array ! map expr='i0 * 1e6 + i1 + x / 1e4 + 0 * i' ! t.arrcap", 2);
  for (uint64_t r0 = 0; r0 < 3; r0++)
    for (uint64_t c0 = 0; c0 < 700; c0++) {
      double want = (double)(5 + r0) * 1e6 + (double)(1000 + c0) + (double)(r0 * 700 + c0) / 1e4;
      ASSERT(f64(&g_out[0])[r0 * 700 + c0] == want);
    }
  run_ok("t.array ! map expr='i' ! t.arrcap", 1);
  ASSERT(f64(&g_out[1])[700 + 5] == (double)((5 + 1) * 2000 + 1000 + 5));
  /* The transpose of a 600x3 buffer: shape 3x600, strides (8, 24). */
  c->d.dtype = SL_DT_F64;
  c->d.ndim = 2;
  c->d.shape[0] = 3;
  c->d.shape[1] = 600;
  c->d.strides[0] = 8;
  c->d.strides[1] = 24;
  free(c->data);
  c->bytes = 1800 * 8;
  c->data = malloc(c->bytes);
  for (uint64_t j = 0; j < 1800; j++) f64(c)[j] = (double)j;
  run_ok("t.array ! map expr='x + 0.5' ! t.arrcap", 1);
  for (uint64_t r0 = 0; r0 < 3; r0++)
    for (uint64_t c0 = 0; c0 < 600; c0++)
      ASSERT(f64(&g_out[2])[r0 * 600 + c0] == (double)(c0 * 3 + r0) + 0.5);
  ASSERT_EQ(g_out[2].d.strides[0], 600 * 8);
  reset();
}

TEST(stage_errors) {
  uint64_t n = 4;
  add_chunk(SL_DT_F64, 1, &n, NULL, NULL);
  result r = run("t.array ! map expr='sqr(x)' ! t.arrcap", 1);
  ASSERT_EQ(r.rc, SL_EPARSE);
  ASSERT_CONTAINS(r.err, "stage 'map': expr: unknown function \"sqr\" at column 1 (did you "
                         "mean \"sqrt\"?)");
  r = run("t.array ! map expr='a*x' vars='a=1,a=2' ! t.arrcap", 1);
  ASSERT_CONTAINS(r.err, "stage 'map': vars: \"a\" is given twice");
  r = run("t.array ! map expr='x' dtype=int128 ! t.arrcap", 1);
  ASSERT_EQ(r.rc, SL_EPARSE);
  r = run("t.array ! map expr='x + i1' ! t.arrcap", 1);
  ASSERT_EQ(r.rc, SL_EITEMS);
  ASSERT_STREQ(r.err, "a#0|map|expr: i1 at column 5 needs an array of at least 2 dimensions; "
                      "this one has 1");
  g_in[0].bytes = 16; /* 4 elements do not fit 16 bytes */
  r = run("t.array ! map expr='x' ! t.arrcap", 1);
  ASSERT_STREQ(r.err, "a#0|map|malformed array payload: array extends beyond its payload");
  /* vars= constants. */
  g_in[0].bytes = 32;
  for (int j = 0; j < 4; j++) f64(&g_in[0])[j] = j;
  run_ok("t.array ! map expr='a*x + b' vars='a=1.5, b=-2' ! t.arrcap", 1);
  for (int j = 0; j < 4; j++) ASSERT(f64(&g_out[0])[j] == 1.5 * j - 2);
  reset();
}

static const sl_test_case cases[] = {
    SL_CASE(block_sizes, "unit"),
    SL_CASE(dtypes, "unit"),
    SL_CASE(range_errors, "unit"),
    SL_CASE(index_and_strides, "unit"),
    SL_CASE(stage_errors, "unit"),
};
SL_TEST_MAIN(cases)
