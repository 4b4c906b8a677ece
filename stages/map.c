/*
 * map.c -- `map expr=... [dtype=] [vars=]`: an elementwise expression over
 * ARRAY items, e.g. `2.5*x - 1` or `where(x > 0, sqrt(x), 0)`.
 *
 * The expression is compiled once in create() (expr_map.c) to a register
 * program over blocks of SL__MAP_BLOCK doubles (expr_eval.c). process()
 * walks the chunk block by block: load x as doubles (no copy when the
 * input is contiguous float64: the program reads the input block in
 * place), run the program, store in the output dtype (float64 results are
 * written straight into the output when the program ends in a temporary).
 * A chunk of at least PAR_MIN_ELEMS elements is split with sl_parallel_for
 * over ranges of GRAIN_BLOCKS blocks, each with its own scratch area, so a
 * few huge chunks use the cores the budget has free; small chunks run on
 * the item's own thread (many small items already run item-parallel).
 *
 * The output is a new contiguous C-order array of the same shape, origin
 * and whole shape, so writers downstream place it where the input was.
 * Integer output dtypes truncate toward zero and refuse NaN and values out
 * of range; the error names the first such element (the smallest flat
 * index, the same for every thread count) by its index in the whole array.
 */
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expr_internal.h"
#include "stages_internal.h"

#define BLOCK SL__MAP_BLOCK
#define GRAIN_BLOCKS 64 /* 32768 elements: per-range scratch set-up is noise */
#define PAR_MIN_ELEMS ((uint64_t)1 << 17)
#define MAX_VARS 64

#define DTYPE_CHOICES "float64|float32|int8|uint8|int16|uint16|int32|uint32|int64|uint64|bool"
static const sl_dtype choice_dtype[] = {SL_DT_F64, SL_DT_F32, SL_DT_I8,  SL_DT_U8,
                                        SL_DT_I16, SL_DT_U16, SL_DT_I32, SL_DT_U32,
                                        SL_DT_I64, SL_DT_U64, SL_DT_BOOL};

typedef struct map_params {
  const char *expr;
  int dtype; /* index into DTYPE_CHOICES */
  const char *vars;
} map_params;

typedef struct map_state {
  sl__mprog *prog;
  sl_dtype out;
} map_state;

static int map_create(sl_stage *st, void **state) {
  const map_params *p = sl_stage_params(st);
  sl__mvar vars[MAX_VARS];
  char *err = NULL;
  sl__mprog *prog = NULL;
  int rc = sl__map_vars_parse(p->vars, vars, MAX_VARS, &err);
  if (rc >= 0) rc = sl__mprog_compile(p->expr, vars, (size_t)rc, &prog, &err);
  if (rc == SL_EPARSE) rc = sl_stage_errorf(st, "%s", err);
  free(err);
  map_state *s = rc >= 0 ? malloc(sizeof *s) : NULL;
  if (!s) {
    sl__mprog_free(prog);
    return rc < 0 ? rc : SL_ENOMEM;
  }
  s->prog = prog;
  s->out = choice_dtype[p->dtype];
  *state = s;
  return 0;
}

static void map_destroy(void *state) {
  map_state *s = state;
  if (!s) return;
  sl__mprog_free(s->prog);
  free(s);
}

/* ======================================================================
 * Loading and storing one block
 * ====================================================================== */

/* Converts m elements of type t at p (contiguous) to doubles. */
static void load_run(sl_dtype t, const char *p, size_t m, double *d) {
#define LOAD(T)                                                                \
  do {                                                                         \
    for (size_t j = 0; j < m; j++) {                                           \
      T v;                                                                     \
      memcpy(&v, p + j * sizeof(T), sizeof(T));                                \
      d[j] = (double)v;                                                        \
    }                                                                          \
  } while (0)
  switch (t) {
  case SL_DT_BOOL: for (size_t j = 0; j < m; j++) d[j] = p[j] != 0; break;
  case SL_DT_I8: LOAD(int8_t); break;
  case SL_DT_U8: LOAD(uint8_t); break;
  case SL_DT_I16: LOAD(int16_t); break;
  case SL_DT_U16: LOAD(uint16_t); break;
  case SL_DT_I32: LOAD(int32_t); break;
  case SL_DT_U32: LOAD(uint32_t); break;
  case SL_DT_I64: LOAD(int64_t); break;
  case SL_DT_U64: LOAD(uint64_t); break;
  case SL_DT_F32: LOAD(float); break;
  default: LOAD(double); break;
  }
#undef LOAD
}

typedef struct map_job {
  const sl__mprog *prog;
  const sl_array_desc *in;
  const char *src; /* element [0, ..., 0] */
  bool contiguous;
  size_t elsize;
  uint64_t n;
  sl_dtype out;
  char *dst;
  atomic_uint_fast64_t bad; /* smallest element that does not fit; UINT64_MAX */
  atomic_bool oom;
} map_job;

/* Loads elements [first, first + m) of a strided chunk, one run of the last
 * axis at a time. */
static void load_strided(const map_job *j, uint64_t first, size_t m, double *d) {
  const sl_array_desc *a = j->in;
  uint32_t nd = a->ndim;
  uint64_t pos[SL_MAX_DIMS], rest = first;
  for (uint32_t k = nd; k-- > 0;) {
    pos[k] = rest % a->shape[k];
    rest /= a->shape[k];
  }
  size_t done = 0;
  while (done < m) {
    int64_t off = 0;
    for (uint32_t k = 0; k < nd; k++) off += (int64_t)pos[k] * a->strides[k];
    uint64_t run = a->shape[nd - 1] - pos[nd - 1];
    if (run > m - done) run = m - done;
    for (uint64_t t = 0; t < run; t++)
      load_run(a->dtype, j->src + off + (int64_t)t * a->strides[nd - 1], 1, d + done + t);
    done += (size_t)run;
    pos[nd - 1] += run;
    for (uint32_t k = nd - 1; k > 0 && pos[k] >= a->shape[k]; k--) {
      pos[k] = 0;
      pos[k - 1]++;
    }
  }
}

/* Exclusive bounds a double must lie strictly within to truncate into an
 * integer dtype (values are exact: powers of two and small integers). */
static bool int_bounds(sl_dtype t, double *gt, double *lt) {
  switch (t) {
  case SL_DT_I8: *gt = -129.0; *lt = 128.0; return true;
  case SL_DT_U8: *gt = -1.0; *lt = 256.0; return true;
  case SL_DT_I16: *gt = -32769.0; *lt = 32768.0; return true;
  case SL_DT_U16: *gt = -1.0; *lt = 65536.0; return true;
  case SL_DT_I32: *gt = -2147483649.0; *lt = 2147483648.0; return true;
  case SL_DT_U32: *gt = -1.0; *lt = 4294967296.0; return true;
  /* -2^63 - 1 is not a double: the next double below -2^63 stands in. */
  case SL_DT_I64: *gt = -0x1.0000000000001p63; *lt = 0x1p63; return true;
  case SL_DT_U64: *gt = -1.0; *lt = 0x1p64; return true;
  default: *gt = *lt = 0; return false;
  }
}

static const char *int_range_text(sl_dtype t) {
  switch (t) {
  case SL_DT_I8: return "-128 to 127";
  case SL_DT_U8: return "0 to 255";
  case SL_DT_I16: return "-32768 to 32767";
  case SL_DT_U16: return "0 to 65535";
  case SL_DT_I32: return "-2147483648 to 2147483647";
  case SL_DT_U32: return "0 to 4294967295";
  case SL_DT_I64: return "-2^63 to 2^63-1";
  default: return "0 to 2^64-1";
  }
}

/* Stores m results at element `first` of the output. @return the index in
 * the block of the first value that does not fit, or m. */
static size_t store(const map_job *j, const double *r, uint64_t first, size_t m) {
  char *d = j->dst + first * sl_dtype_size(j->out);
  double gt, lt;
  if (j->out == SL_DT_F64) {
    if ((const char *)r != d) memcpy(d, r, m * sizeof *r);
    return m;
  }
  if (j->out == SL_DT_F32) {
    float *f = (float *)(void *)d;
    for (size_t k = 0; k < m; k++) f[k] = (float)r[k];
    return m;
  }
  if (j->out == SL_DT_BOOL) {
    for (size_t k = 0; k < m; k++) d[k] = r[k] != 0;
    return m;
  }
  int_bounds(j->out, &gt, &lt);
  bool ok = true;
  for (size_t k = 0; k < m; k++) ok &= r[k] > gt && r[k] < lt; /* false for NaN */
  if (!ok) {
    size_t k = 0;
    while (r[k] > gt && r[k] < lt) k++;
    return k;
  }
#define STORE(T)                                                               \
  do {                                                                         \
    T *o = (T *)(void *)d;                                                     \
    for (size_t k = 0; k < m; k++) o[k] = (T)r[k];                             \
  } while (0)
  switch (j->out) {
  case SL_DT_I8: STORE(int8_t); break;
  case SL_DT_U8: STORE(uint8_t); break;
  case SL_DT_I16: STORE(int16_t); break;
  case SL_DT_U16: STORE(uint16_t); break;
  case SL_DT_I32: STORE(int32_t); break;
  case SL_DT_U32: STORE(uint32_t); break;
  case SL_DT_I64: STORE(int64_t); break;
  default: STORE(uint64_t); break;
  }
#undef STORE
  return m;
}

/* A range's scratch: one block per slot, constants filled. */
typedef struct scratch {
  double **slot;
  double *mem;
  unsigned n;
} scratch;

static int scratch_init(scratch *s, const sl__mprog *p) {
  s->n = sl__mprog_slots(p);
  s->slot = malloc(s->n * sizeof *s->slot);
  s->mem = malloc((size_t)s->n * BLOCK * sizeof *s->mem);
  if (!s->slot || !s->mem) {
    free(s->slot);
    free(s->mem);
    return SL_ENOMEM;
  }
  for (unsigned k = 0; k < s->n; k++) s->slot[k] = s->mem + (size_t)k * BLOCK;
  sl__mprog_fill_consts(p, s->slot);
  return 0;
}

static void scratch_free(scratch *s) {
  free(s->slot);
  free(s->mem);
}

/* Evaluates block b (m elements). When `direct` the result may be written
 * straight into the float64 output. @return the results. */
static const double *eval_block(const map_job *j, scratch *s, uint64_t b, size_t m,
                                bool direct) {
  const sl__mprog *p = j->prog;
  uint64_t first = b * BLOCK;
  double *x = s->mem, *res = s->mem + (size_t)p->result * BLOCK;
  s->slot[0] = x;
  if (p->uses_x) {
    if (j->contiguous && j->in->dtype == SL_DT_F64)
      s->slot[0] = (double *)(void *)(j->src + first * 8); /* read in place */
    else if (j->contiguous)
      load_run(j->in->dtype, j->src + first * j->elsize, m, x);
    else
      load_strided(j, first, m, x);
  }
  bool temp_result = p->result > p->nconst;
  if (direct && temp_result && j->out == SL_DT_F64)
    s->slot[p->result] = (double *)(void *)(j->dst + first * 8);
  sl__mindex ix = {j->in->ndim, j->in->shape, j->in->origin, j->in->whole, first};
  const double *r = sl__mprog_run(p, s->slot, m, &ix);
  s->slot[p->result] = temp_result ? res : s->slot[p->result];
  return r;
}

/* sl_parallel_for body: blocks [b0, b1). */
static void map_range(void *arg, size_t b0, size_t b1) {
  map_job *j = arg;
  scratch s;
  if (scratch_init(&s, j->prog) < 0) {
    atomic_store(&j->oom, true);
    return;
  }
  for (size_t b = b0; b < b1; b++) {
    uint64_t first = (uint64_t)b * BLOCK;
    size_t m = j->n - first < BLOCK ? (size_t)(j->n - first) : BLOCK;
    const double *r = eval_block(j, &s, b, m, true);
    size_t k = store(j, r, first, m);
    if (k < m) { /* keep the smallest bad index: the same for any split */
      uint_fast64_t bad = first + k, cur = atomic_load(&j->bad);
      while (bad < cur && !atomic_compare_exchange_weak(&j->bad, &cur, bad)) {}
      break;
    }
  }
  scratch_free(&s);
}

/* ======================================================================
 * The stage
 * ====================================================================== */

/* Checks the descriptor against the payload. @return elements, or -1 with
 * *why set. */
static int64_t check_array(const sl_payload *p, const char **why) {
  const sl_array_desc *a = &p->u.array;
  size_t es = sl_dtype_size(a->dtype);
  *why = NULL;
  if (es == 0 || a->dtype == SL_DT_STRING) *why = "unsupported dtype";
  else if (a->ndim == 0 || a->ndim > SL_MAX_DIMS) *why = "bad number of dimensions";
  if (*why) return -1;
  uint64_t n = 1;
  int64_t lo = 0, hi = 0;
  for (uint32_t k = 0; k < a->ndim; k++) {
    if (a->shape[k] && n > (UINT64_MAX >> 1) / a->shape[k]) {
      *why = "shape too large";
      return -1;
    }
    n *= a->shape[k];
  }
  if (n == 0) return 0;
  for (uint32_t k = 0; k < a->ndim; k++) {
    int64_t st = a->strides[k];
    uint64_t mag = st < 0 ? 0 - (uint64_t)st : (uint64_t)st;
    if (mag && a->shape[k] - 1 > (uint64_t)(INT64_MAX / 16) / mag) {
      *why = "strides out of range";
      return -1;
    }
    int64_t span = (int64_t)(a->shape[k] - 1) * st;
    if (span < 0) lo += span;
    else hi += span;
  }
  /* The payload view starts at element [0, ..., 0]: negative strides reach
   * below it, which a view cannot express, so they are refused. */
  if (lo < 0 || (uint64_t)hi + es > p->size) {
    *why = "array extends beyond its payload";
    return -1;
  }
  return (int64_t)n;
}

static bool is_contiguous(const sl_array_desc *a) {
  int64_t want = (int64_t)sl_dtype_size(a->dtype);
  for (uint32_t k = a->ndim; k-- > 0;) {
    if (a->shape[k] > 1 && a->strides[k] != want) return false;
    want *= (int64_t)a->shape[k];
  }
  return true;
}

/* Formats element `flat` of the chunk as its index in the whole array. */
static void whole_index(const sl_array_desc *a, uint64_t flat, char *buf, size_t len) {
  uint64_t pos[SL_MAX_DIMS];
  for (uint32_t k = a->ndim; k-- > 0;) {
    pos[k] = flat % a->shape[k] + a->origin[k];
    flat /= a->shape[k];
  }
  size_t used = (size_t)snprintf(buf, len, "[");
  for (uint32_t k = 0; k < a->ndim && used < len; k++)
    used += (size_t)snprintf(buf + used, len - used, "%s%" PRIu64, k ? ", " : "", pos[k]);
  if (used < len) snprintf(buf + used, len - used, "]");
}

/* Describes the element that did not fit the output dtype. */
static int range_error(sl_worker *w, map_job *j) {
  uint64_t bad = atomic_load(&j->bad);
  scratch s;
  if (scratch_init(&s, j->prog) < 0) return SL_ENOMEM;
  uint64_t b = bad / BLOCK;
  size_t m = j->n - b * BLOCK < BLOCK ? (size_t)(j->n - b * BLOCK) : BLOCK;
  double v = eval_block(j, &s, b, m, false)[bad - b * BLOCK];
  scratch_free(&s);
  char where[200];
  whole_index(j->in, bad, where, sizeof where);
  if (isnan(v))
    return sl_worker_errorf(w, "element %s: NaN cannot be stored as %s (use dtype=float64, "
                            "or where(isnan(...), 0, ...))", where, sl_dtype_name(j->out));
  return sl_worker_errorf(w, "element %s: value %.17g is out of range for %s (%s)", where, v,
                          sl_dtype_name(j->out), int_range_text(j->out));
}

static int make_output(sl_worker *w, const sl_item *in, sl_dtype t, uint64_t n,
                       sl_item **out) {
  size_t es = sl_dtype_size(t), size = (size_t)n * es;
  sl_block *block;
  int rc = sl_worker_alloc(w, size ? size : 8, &block);
  if (rc < 0) return rc;
  sl_item *o = sl_item_derive(in);
  if (!o) {
    sl_block_release(block);
    return SL_ENOMEM;
  }
  sl_item_set_block(o, SL_KIND_ARRAY, block, 0, size);
  sl_array_desc *d = &o->payload.u.array;
  *d = in->payload.u.array;
  d->dtype = t;
  int64_t stride = (int64_t)es;
  for (uint32_t k = d->ndim; k-- > 0;) {
    d->strides[k] = stride;
    stride *= (int64_t)d->shape[k];
  }
  *out = o;
  return 0;
}

static int map_process(sl_worker *w, sl_item *in, sl_item **out) {
  const map_state *s = sl_worker_shared(w);
  const sl__mprog *p = s->prog;
  *out = NULL;
  if (in->payload.kind != SL_KIND_ARRAY)
    return sl_worker_errorf(w, "expected an array, got %s", sl_kind_name(in->payload.kind));
  const sl_array_desc *a = &in->payload.u.array;
  const char *why;
  int64_t n = check_array(&in->payload, &why);
  if (n < 0) return sl_worker_errorf(w, "malformed array payload: %s", why);
  if (p->max_axis >= (int)a->ndim)
    return sl_worker_errorf(w, "expr: i%d at column %u needs an array of at least %d "
                            "dimensions; this one has %u", p->max_axis, p->axis_pos,
                            p->max_axis + 1, a->ndim);
  sl_item *o;
  int rc = make_output(w, in, s->out, (uint64_t)n, &o);
  if (rc < 0) return rc == SL_ECANCELED ? rc : sl_worker_errorf(w, "cannot allocate "
                                                                "output: %s", sl_strerror(rc));
  map_job j = {.prog = p, .in = a, .src = in->payload.data, .contiguous = is_contiguous(a),
               .elsize = sl_dtype_size(a->dtype), .n = (uint64_t)n, .out = s->out,
               .dst = o->payload.data};
  atomic_init(&j.bad, UINT64_MAX);
  atomic_init(&j.oom, false);
  size_t nblocks = (size_t)(((uint64_t)n + BLOCK - 1) / BLOCK);
  if ((uint64_t)n >= PAR_MIN_ELEMS) sl_parallel_for(w, nblocks, GRAIN_BLOCKS, map_range, &j);
  else map_range(&j, 0, nblocks);
  rc = atomic_load(&j.oom) ? SL_ENOMEM : atomic_load(&j.bad) != UINT64_MAX ? range_error(w, &j) : 0;
  if (rc < 0) {
    sl_item_destroy(o);
    return rc;
  }
  *out = o;
  return 0;
}

static const sl_param_def map_params_table[] = {
    {"expr", SL_PARAM_STRING, offsetof(map_params, expr), NULL, 0, 0, NULL,
     "elementwise expression of x, e.g. '2.5*x - 1' or 'where(x > 0, sqrt(x), 0)'"},
    {"dtype", SL_PARAM_CHOICE, offsetof(map_params, dtype), "float64", 0, 0, DTYPE_CHOICES,
     "output element type"},
    {"vars", SL_PARAM_STRING, offsetof(map_params, vars), "", 0, 0, NULL,
     "named constants for expr, e.g. 'a=1.5, b=2'"},
    SL_PARAM_END,
};

const sl_stage_def sl__stage_map = {
    .name = "map",
    .summary = "elementwise expression over arrays",
    .help =
        "Computes expr= for every element of each ARRAY chunk, in double\n"
        "precision, and stores it as dtype= (default float64). The output keeps\n"
        "the chunk's shape, origin and whole shape.\n"
        "Names: x (the element), i (its flat C-order index in the whole array),\n"
        "i0..i7 (its index along each axis), inf, nan, pi, true (1), false (0),\n"
        "and the constants of vars=.\n"
        "Operators, loosest first: ||, &&, comparisons (< <= > >= == !=; they\n"
        "do not chain), + -, * / %, unary - !, ** (right-associative; -x**2 is\n"
        "-(x**2)). Functions: where(c,a,b) abs sqrt exp log log10 sin cos tan\n"
        "floor ceil round min(a,b) max(a,b) clip(x,lo,hi) isnan.\n"
        "Semantics: IEEE arithmetic (1/0 = inf, 0/0 = nan); % is C's fmod (sign\n"
        "of the dividend, unlike numpy's %); comparisons, !, && and || give 1\n"
        "or 0 and treat any non-zero value, NaN included, as true; comparisons\n"
        "with NaN are false except !=; min, max and clip propagate NaN; round\n"
        "is half to even. Integer inputs above 2^53 lose precision as doubles.\n"
        "Integer dtypes truncate toward zero; NaN or a value out of range fails\n"
        "the chunk naming the element. float32 rounds (overflow gives inf);\n"
        "bool stores 1 for any non-zero value (NaN too).\n"
        "Example: h5.read file=in.h5 dataset=/t ! map expr='a*x + b' vars='a=2, b=-1'",
    .exec = SL_EXEC_CPU,
    .in_kind = SL_KIND_ARRAY,
    .out_kind = SL_KIND_ARRAY,
    .params = map_params_table,
    .params_size = sizeof(map_params),
    .create = map_create,
    .destroy = map_destroy,
    .process = map_process,
};
