/*
 * filter.c -- `filter expr=...`: keeps the rows of TABLE items for which an
 * expression is true, e.g. `x > 100 && category != "Toys"`.
 *
 * Language (precedence from loosest): `||`, `&&`, comparisons `< <= > >=
 * == !=` (they do not chain), `+ -`, `* /`, unary `! -`, then literals
 * (123, 1.5e3, "text" with \" \\ \n \t \r escapes, true, false, null),
 * column names (bare identifiers [A-Za-z_][A-Za-z0-9_.]*, or col("any
 * name")) and parentheses. int64 + - * int64 stays int64 (wrapping); `/`
 * and anything with a float64 gives float64; int64 and float64 compare
 * exactly. Strings compare bytewise with strings only, bools with bools
 * (== and !=) only.
 *
 * Nulls follow SQL: arithmetic or a comparison with a null value gives
 * null, && and || use three-valued logic (false && null is false, true ||
 * null is true), and a row is kept only when the result is true. A float
 * NaN counts as null, as in pandas. `x == null` / `x != null` test for
 * null and are never null themselves.
 *
 * The expression is parsed once in create() by the parser shared with map
 * (expr_parse.c) into an array of nodes whose children always come before
 * their parent, so evaluation is one pass over the array. Syntax errors
 * name the column in the expression text. Types
 * depend on the columns, so they are checked per chunk (cheap: one pass
 * over the nodes) and a mismatch fails the chunk with the operator's
 * column. Evaluation is vectorised over blocks of BLOCK rows with
 * per-worker buffers. Output: the same item when every row is kept (zero
 * copy), else a new table with the kept rows in a new block (also when none
 * is kept, so downstream reductions see every chunk). first_row and the
 * item's line stay those of the input chunk.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "agg_internal.h"
#include "expr_internal.h"
#include "stages_internal.h"

/* ======================================================================
 * The language (parsed by expr_parse.c, shared with map)
 * ====================================================================== */

/* col("unit price") names a column that is not a bare identifier. */
static const sl__xfunc filter_funcs[] = {
    {"col", 1, "a column name in double quotes"},
};

static const sl__xlang filter_lang = {
    .strings = true, .null_lit = true, .int_lits = true, .mod_pow = false,
    .dotted_names = true, .funcs = filter_funcs, .nfuncs = 1,
    .func_hint = "only col(\"name\")"};

/* ======================================================================
 * Types (per chunk)
 * ====================================================================== */

typedef enum vt { V_BOOL, V_INT, V_FLOAT, V_STR, V_NULL } vt;
static const char *const vt_name[] = {"bool", "int64", "float64", "string", "null"};

static bool numeric(vt t) { return t == V_INT || t == V_FLOAT; }

#define BLOCK 512

typedef struct sref {
  const char *p;
  uint64_t n;
} sref;

/* Values of one node over a block of rows. */
typedef struct vec {
  union {
    int64_t *i;
    double *f;
    uint8_t *b;
    sref *s;
  } u;
  uint8_t *nul;
} vec;

typedef struct flocal {
  vt *type;     /* per node */
  sl__col *col; /* per node: bound column (SL__X_NAME) */
  vec *v;       /* per node */
  unsigned char *mem;
  double *tmp[2];
  uint32_t *idx; /* kept rows of the chunk */
  uint64_t idxcap;
} flocal;

static int type_error2(sl_worker *w, const sl__xnode *n, vt a, vt b) {
  if (n->op >= SL__X_LT && n->op <= SL__X_NE)
    return sl_worker_errorf(w, "expr: cannot compare %s with %s at column %u",
                            vt_name[a], vt_name[b], n->pos);
  return sl_worker_errorf(w, "expr: cannot apply '%s' to %s and %s at column %u",
                          sl__expr_op_text(n->op), vt_name[a], vt_name[b], n->pos);
}

/* The type of a binary node from its children's, or an error. */
static int type_binary(sl_worker *w, const sl__xnode *n, vt a, vt b, vt *out) {
  bool eq = n->op == SL__X_EQ || n->op == SL__X_NE;
  if (n->op == SL__X_AND || n->op == SL__X_OR) {
    if (a != V_BOOL || b != V_BOOL) return type_error2(w, n, a, b);
  } else if (n->op >= SL__X_LT) {
    bool ok = (numeric(a) && numeric(b)) || (a == V_STR && b == V_STR) ||
              (eq && ((a == V_BOOL && b == V_BOOL) || a == V_NULL || b == V_NULL));
    if (!ok) return type_error2(w, n, a, b);
  } else {
    if (!numeric(a) || !numeric(b)) return type_error2(w, n, a, b);
    *out = (n->op != SL__X_DIV && a == V_INT && b == V_INT) ? V_INT : V_FLOAT;
    return 0;
  }
  *out = V_BOOL;
  return 0;
}

/* Binds the columns of the chunk and types every node (children first). */
static int type_nodes(sl_worker *w, const sl__expr *e, flocal *l, const sl_payload *p) {
  for (size_t k = 0; k < e->count; k++) {
    const sl__xnode *n = &e->n[k];
    vt a = n->a >= 0 ? l->type[n->a] : V_NULL, b = n->b >= 0 ? l->type[n->b] : V_NULL;
    int rc = 0;
    switch (n->op) {
    case SL__X_NAME: {
      int c = sl__table_find(&p->u.table, n->s);
      if (c < 0) return sl__table_no_column(w, "expr: ", &p->u.table, n->s);
      rc = sl__table_bind(p, &p->u.table.cols[c], &l->col[k]);
      if (rc == SL_EUNSUPPORTED)
        return sl_worker_errorf(w, "expr: column \"%s\" has type %s, which filter "
                                "does not support", n->s,
                                sl_dtype_name(p->u.table.cols[c].dtype));
      if (rc < 0) return sl_worker_errorf(w, "column \"%s\": malformed table payload", n->s);
      sl_dtype t = l->col[k].type;
      l->type[k] = t == SL_DT_BOOL ? V_BOOL : t == SL_DT_I64 ? V_INT
                 : t == SL_DT_F64 ? V_FLOAT : V_STR;
      break;
    }
    case SL__X_INT: l->type[k] = V_INT; break;
    case SL__X_NUM: l->type[k] = V_FLOAT; break;
    case SL__X_STR: l->type[k] = V_STR; break;
    case SL__X_BOOL: l->type[k] = V_BOOL; break;
    case SL__X_NULL: l->type[k] = V_NULL; break;
    case SL__X_NEG:
    case SL__X_NOT:
      if (n->op == SL__X_NEG ? !numeric(a) : a != V_BOOL)
        return sl_worker_errorf(w, "expr: cannot apply '%s' to %s at column %u",
                                sl__expr_op_text(n->op), vt_name[a], n->pos);
      l->type[k] = a;
      break;
    default: rc = type_binary(w, n, a, b, &l->type[k]); break;
    }
    if (rc < 0) return rc;
  }
  vt root = l->type[e->count - 1];
  if (root != V_BOOL)
    return sl_worker_errorf(w, "expr: the expression gives %s, not true/false",
                            vt_name[root]);
  return 0;
}

/* ======================================================================
 * Evaluation over a block of m rows starting at row r0
 * ====================================================================== */

/* Exact three-way comparison of an int64 with a (non-NaN) double. */
static int cmp_i_f(int64_t i, double f) {
  if (f >= 0x1p63) return -1;
  if (f < -0x1p63) return 1;
  int64_t t = (int64_t)f; /* toward zero, exact here */
  if (i != t) return i < t ? -1 : 1;
  double frac = f - (double)t;
  return frac > 0 ? -1 : frac < 0;
}

static bool cmp_result(sl__xop o, int c) {
  switch (o) {
  case SL__X_LT: return c < 0;
  case SL__X_LE: return c <= 0;
  case SL__X_GT: return c > 0;
  case SL__X_GE: return c >= 0;
  case SL__X_EQ: return c == 0;
  default: return c != 0;
  }
}

static void eval_col(const sl__col *c, vt t, vec *v, uint64_t r0, size_t m) {
  for (size_t j = 0; j < m; j++) v->nul[j] = sl__col_null(c, r0 + j);
  switch (t) {
  case V_INT: memcpy(v->u.i, (const int64_t *)c->data + r0, m * 8); break;
  case V_FLOAT:
    memcpy(v->u.f, (const double *)c->data + r0, m * 8);
    for (size_t j = 0; j < m; j++) v->nul[j] |= isnan(v->u.f[j]);
    break;
  case V_BOOL:
    for (size_t j = 0; j < m; j++) v->u.b[j] = ((const uint8_t *)c->data)[r0 + j] != 0;
    break;
  default:
    for (size_t j = 0; j < m; j++) v->u.s[j].p = sl__col_str(c, r0 + j, &v->u.s[j].n);
    break;
  }
}

/* Child k's values as doubles (converted into tmp when int64). */
static const double *as_f(const flocal *l, int k, double *tmp, size_t m) {
  if (l->type[k] == V_FLOAT) return l->v[k].u.f;
  for (size_t j = 0; j < m; j++) tmp[j] = (double)l->v[k].u.i[j];
  return tmp;
}

static void eval_arith(const sl__xnode *n, flocal *l, vec *v, size_t m, vt t) {
  const vec *a = &l->v[n->a], *b = &l->v[n->b];
  for (size_t j = 0; j < m; j++) v->nul[j] = a->nul[j] | b->nul[j];
  if (t == V_INT) {
    for (size_t j = 0; j < m; j++) {
      uint64_t x = (uint64_t)a->u.i[j], y = (uint64_t)b->u.i[j];
      uint64_t r = n->op == SL__X_ADD ? x + y : n->op == SL__X_SUB ? x - y : x * y;
      v->u.i[j] = (int64_t)r;
    }
    return;
  }
  const double *x = as_f(l, n->a, l->tmp[0], m), *y = as_f(l, n->b, l->tmp[1], m);
  for (size_t j = 0; j < m; j++) {
    double r = n->op == SL__X_ADD ? x[j] + y[j] : n->op == SL__X_SUB ? x[j] - y[j]
             : n->op == SL__X_MUL ? x[j] * y[j] : x[j] / y[j];
    v->u.f[j] = r;
    v->nul[j] |= isnan(r);
  }
}

static int cmp_str(sref a, sref b) {
  int c = memcmp(a.p, b.p, a.n < b.n ? a.n : b.n);
  if (c) return c;
  return a.n < b.n ? -1 : a.n > b.n;
}

static void eval_cmp(const sl__xnode *n, flocal *l, vec *v, size_t m) {
  const vec *a = &l->v[n->a], *b = &l->v[n->b];
  vt ta = l->type[n->a], tb = l->type[n->b];
  if (ta == V_NULL || tb == V_NULL) { /* null test: never null itself */
    const vec *x = ta == V_NULL ? b : a;
    bool both = ta == V_NULL && tb == V_NULL;
    for (size_t j = 0; j < m; j++) {
      bool isnull = both || x->nul[j];
      v->u.b[j] = n->op == SL__X_EQ ? isnull : !isnull;
      v->nul[j] = 0;
    }
    return;
  }
  for (size_t j = 0; j < m; j++) {
    v->nul[j] = a->nul[j] | b->nul[j];
    int c;
    if (ta == V_STR) c = cmp_str(a->u.s[j], b->u.s[j]);
    else if (ta == V_BOOL) c = (int)a->u.b[j] - (int)b->u.b[j];
    else if (ta == V_INT && tb == V_INT) c = (a->u.i[j] > b->u.i[j]) - (a->u.i[j] < b->u.i[j]);
    else if (ta == V_INT) c = cmp_i_f(a->u.i[j], b->u.f[j]);
    else if (tb == V_INT) c = -cmp_i_f(b->u.i[j], a->u.f[j]);
    else c = (a->u.f[j] > b->u.f[j]) - (a->u.f[j] < b->u.f[j]);
    v->u.b[j] = cmp_result(n->op, c);
  }
}

/* Kleene logic: a known false decides &&, a known true decides ||. */
static void eval_logic(const sl__xnode *n, flocal *l, vec *v, size_t m) {
  const vec *a = &l->v[n->a], *b = &l->v[n->b];
  uint8_t decide = n->op == SL__X_OR;
  for (size_t j = 0; j < m; j++) {
    bool da = !a->nul[j] && a->u.b[j] == decide, db = !b->nul[j] && b->u.b[j] == decide;
    if (da || db) {
      v->u.b[j] = decide;
      v->nul[j] = 0;
    } else {
      v->u.b[j] = !decide;
      v->nul[j] = a->nul[j] | b->nul[j];
    }
  }
}

/* Evaluates every non-literal node over rows [r0, r0 + m). */
static void eval_block(const sl__expr *e, flocal *l, uint64_t r0, size_t m) {
  for (size_t k = 0; k < e->count; k++) {
    const sl__xnode *n = &e->n[k];
    vec *v = &l->v[k];
    switch (n->op) {
    case SL__X_NAME: eval_col(&l->col[k], l->type[k], v, r0, m); break;
    case SL__X_INT: case SL__X_NUM: case SL__X_STR: case SL__X_BOOL: case SL__X_NULL: break;
    case SL__X_NEG:
      for (size_t j = 0; j < m; j++) {
        v->nul[j] = l->v[n->a].nul[j];
        if (l->type[k] == V_INT) v->u.i[j] = (int64_t)(0 - (uint64_t)l->v[n->a].u.i[j]);
        else v->u.f[j] = -l->v[n->a].u.f[j];
      }
      break;
    case SL__X_NOT:
      for (size_t j = 0; j < m; j++) {
        v->nul[j] = l->v[n->a].nul[j];
        v->u.b[j] = !l->v[n->a].u.b[j];
      }
      break;
    case SL__X_ADD: case SL__X_SUB: case SL__X_MUL: case SL__X_DIV:
      eval_arith(n, l, v, m, l->type[k]);
      break;
    case SL__X_AND: case SL__X_OR: eval_logic(n, l, v, m); break;
    default: eval_cmp(n, l, v, m); break;
    }
  }
}

/* Fills the literal nodes' vectors once per chunk. */
static void fill_literals(const sl__expr *e, flocal *l) {
  for (size_t k = 0; k < e->count; k++) {
    const sl__xnode *n = &e->n[k];
    vec *v = &l->v[k];
    if (n->op < SL__X_INT || n->op > SL__X_NULL) continue;
    memset(v->nul, n->op == SL__X_NULL, BLOCK);
    for (size_t j = 0; j < BLOCK; j++) {
      if (n->op == SL__X_INT) v->u.i[j] = n->i;
      else if (n->op == SL__X_NUM) v->u.f[j] = n->f;
      else if (n->op == SL__X_BOOL) v->u.b[j] = (uint8_t)n->i;
      else if (n->op == SL__X_STR) v->u.s[j] = (sref){n->s, n->slen};
    }
  }
}

/* ======================================================================
 * Building the output table
 * ====================================================================== */

/* The layout of one output column. */
typedef struct olay {
  size_t data_off, chars_off, valid_off;
  uint64_t chars;
  bool nulls;
} olay;

static size_t align8(size_t x) { return (x + 7) & ~(size_t)7; }

/* Checks column c can be copied and plans its place in the output.
 * @return the next free offset, or SIZE_MAX when the column is malformed. */
static size_t plan_column(const sl_payload *p, const sl_column *c, const uint32_t *idx,
                          uint64_t nsel, size_t off, olay *o) {
  uint64_t n = p->u.table.nrows;
  size_t width = sl_dtype_size(c->dtype);
  sl__col b = {c->dtype, NULL, NULL, NULL};
  if (c->dtype == SL_DT_STRING || c->dtype == SL_DT_I64 || c->dtype == SL_DT_F64 ||
      c->dtype == SL_DT_BOOL) {
    if (sl__table_bind(p, c, &b) < 0) return SIZE_MAX;
  } else if (width == 0 || c->data_off > p->size || n > (p->size - c->data_off) / width ||
             (c->valid_off != SIZE_MAX && (c->valid_off > p->size || n > p->size - c->valid_off))) {
    return SIZE_MAX;
  } else if (c->valid_off != SIZE_MAX) {
    b.valid = (const uint8_t *)p->data + c->valid_off;
  }
  *o = (olay){0, 0, SIZE_MAX, 0, false};
  for (uint64_t j = 0; j < nsel; j++) {
    if (b.valid && !b.valid[idx[j]]) o->nulls = true;
    if (c->dtype == SL_DT_STRING) {
      uint64_t len;
      sl__col_str(&b, idx[j], &len);
      o->chars += len;
    }
  }
  o->data_off = off = align8(off);
  off += c->dtype == SL_DT_STRING ? (size_t)(nsel + 1) * 8 : (size_t)nsel * width;
  o->chars_off = off;
  off += (size_t)o->chars;
  if (o->nulls) {
    o->valid_off = off;
    off += (size_t)nsel;
  }
  return off;
}

/* Copies the kept rows of column c into `dst` (the new block's data). */
static void copy_column(const sl_payload *p, const sl_column *c, const uint32_t *idx,
                        uint64_t nsel, const olay *o, char *dst) {
  const char *src = (const char *)p->data;
  if (o->nulls)
    for (uint64_t j = 0; j < nsel; j++)
      dst[o->valid_off + j] = src[c->valid_off + idx[j]];
  if (c->dtype == SL_DT_STRING) {
    const uint64_t *so = (const uint64_t *)(const void *)(src + c->data_off);
    uint64_t *d = (uint64_t *)(void *)(dst + o->data_off), pos = 0;
    for (uint64_t j = 0; j < nsel; j++) {
      uint64_t len = so[idx[j] + 1] - so[idx[j]];
      d[j] = pos;
      memcpy(dst + o->chars_off + pos, src + c->chars_off + so[idx[j]], (size_t)len);
      pos += len;
    }
    d[nsel] = pos;
    return;
  }
  size_t width = sl_dtype_size(c->dtype);
  const char *from = src + c->data_off;
  char *to = dst + o->data_off;
  if (width == 8)
    for (uint64_t j = 0; j < nsel; j++) memcpy(to + j * 8, from + (size_t)idx[j] * 8, 8);
  else
    for (uint64_t j = 0; j < nsel; j++)
      memcpy(to + j * width, from + (size_t)idx[j] * width, width);
}

/* A new item with the nsel kept rows of `in`. @return 0 with *out, or an
 * error (recorded on the worker when it is about the input). */
static int build_output(sl_worker *w, const sl_item *in, const uint32_t *idx,
                        uint64_t nsel, sl_item **out) {
  const sl_payload *p = &in->payload;
  uint32_t ncols = p->u.table.ncols;
  olay *lay = calloc(ncols ? ncols : 1, sizeof *lay);
  if (!lay) return SL_ENOMEM;
  size_t off = 0;
  for (uint32_t c = 0; c < ncols; c++) {
    off = plan_column(p, &p->u.table.cols[c], idx, nsel, off, &lay[c]);
    if (off == SIZE_MAX) {
      free(lay);
      return sl_worker_errorf(w, "column \"%s\": malformed table payload",
                              p->u.table.cols[c].name);
    }
  }
  size_t size = align8(off) + 8;
  sl_block *block;
  int rc = sl_worker_alloc(w, size, &block);
  sl_item *o = rc == 0 ? sl_item_derive(in) : NULL;
  sl_column *cols = o ? calloc(ncols ? ncols : 1, sizeof *cols) : NULL;
  if (!cols) {
    if (rc == 0) sl_block_release(block);
    sl_item_destroy(o);
    free(lay);
    return rc < 0 ? rc : SL_ENOMEM;
  }
  char *base = sl_block_data(block);
  memset(base, 0, size);
  sl_item_set_block(o, SL_KIND_TABLE, block, 0, size);
  o->payload.u.table = (sl_table_desc){ncols, nsel, p->u.table.first_row, cols};
  for (uint32_t c = 0; c < ncols; c++) {
    const sl_column *ic = &p->u.table.cols[c];
    copy_column(p, ic, idx, nsel, &lay[c], base);
    size_t len = strlen(ic->name ? ic->name : "") + 1;
    cols[c] = (sl_column){malloc(len), ic->dtype, lay[c].data_off,
                          ic->dtype == SL_DT_STRING ? lay[c].chars_off : 0, lay[c].valid_off};
    if (!cols[c].name) rc = SL_ENOMEM;
    else memcpy(cols[c].name, ic->name ? ic->name : "", len);
  }
  free(lay);
  if (rc < 0) {
    sl_item_destroy(o);
    return rc;
  }
  *out = o;
  return 0;
}

/* ======================================================================
 * The stage
 * ====================================================================== */

typedef struct filter_params {
  const char *expr;
} filter_params;

static int filter_create(sl_stage *st, void **state) {
  const filter_params *p = sl_stage_params(st);
  sl__expr *e;
  char *err;
  int rc = sl__expr_parse(p->expr, &filter_lang, &e, &err);
  if (rc == SL_EPARSE) {
    rc = sl_stage_errorf(st, "%s", err);
    free(err);
  }
  if (rc < 0) return rc;
  *state = e;
  return 0;
}

static void filter_destroy(void *state) { sl__expr_free(state); }

static void flocal_free(flocal *l) {
  if (!l) return;
  free(l->type);
  free(l->col);
  free(l->v);
  free(l->mem);
  free(l->tmp[0]);
  free(l->tmp[1]);
  free(l->idx);
  free(l);
}

/* Per worker: types, bound columns and one BLOCK-row vector per node. */
static int filter_open(sl_worker *w, void **local) {
  const sl__expr *e = sl_worker_shared(w);
  flocal *l = calloc(1, sizeof *l);
  if (!l) return SL_ENOMEM;
  size_t per = BLOCK * sizeof(sref) + BLOCK;
  l->type = calloc(e->count, sizeof *l->type);
  l->col = calloc(e->count, sizeof *l->col);
  l->v = calloc(e->count, sizeof *l->v);
  l->mem = malloc(e->count * per);
  l->tmp[0] = malloc(BLOCK * sizeof(double));
  l->tmp[1] = malloc(BLOCK * sizeof(double));
  if (!l->type || !l->col || !l->v || !l->mem || !l->tmp[0] || !l->tmp[1]) {
    flocal_free(l);
    return SL_ENOMEM;
  }
  for (size_t k = 0; k < e->count; k++) {
    l->v[k].u.s = (sref *)(void *)(l->mem + k * per);
    l->v[k].nul = l->mem + k * per + BLOCK * sizeof(sref);
  }
  fill_literals(e, l);
  *local = l;
  return 0;
}

static void filter_close(sl_worker *w) { flocal_free(sl_worker_local(w)); }

/* Evaluates the expression on every row; fills l->idx with the kept ones. */
static int select_rows(flocal *l, const sl__expr *e, uint64_t n, uint64_t *nsel) {
  if (n > l->idxcap) {
    free(l->idx);
    l->idxcap = 0;
    if (!(l->idx = malloc((size_t)n * sizeof *l->idx))) return SL_ENOMEM;
    l->idxcap = n;
  }
  const vec *root = &l->v[e->count - 1];
  uint64_t k = 0;
  for (uint64_t r0 = 0; r0 < n; r0 += BLOCK) {
    size_t m = n - r0 < BLOCK ? (size_t)(n - r0) : BLOCK;
    eval_block(e, l, r0, m);
    for (size_t j = 0; j < m; j++)
      if (!root->nul[j] && root->u.b[j]) l->idx[k++] = (uint32_t)(r0 + j);
  }
  *nsel = k;
  return 0;
}

static int filter_process(sl_worker *w, sl_item *in, sl_item **out) {
  const sl__expr *e = sl_worker_shared(w);
  flocal *l = sl_worker_local(w);
  *out = NULL;
  if (in->payload.kind != SL_KIND_TABLE)
    return sl_worker_errorf(w, "expected a table, got %s", sl_kind_name(in->payload.kind));
  uint64_t n = in->payload.u.table.nrows, nsel = 0;
  if (n > UINT32_MAX) return sl_worker_errorf(w, "chunk of %" PRIu64 " rows is too large", n);
  int rc = type_nodes(w, e, l, &in->payload);
  if (rc == 0) rc = select_rows(l, e, n, &nsel);
  if (rc < 0) return rc;
  if (nsel == n) {
    *out = in; /* every row kept: zero copy */
    return 0;
  }
  return build_output(w, in, l->idx, nsel, out);
}

static const sl_param_def filter_params_table[] = {
    {"expr", SL_PARAM_STRING, offsetof(filter_params, expr), NULL, 0, 0, NULL,
     "condition on columns, e.g. 'x > 100 && category != \"Toys\"'"},
    SL_PARAM_END,
};

const sl_stage_def sl__stage_filter = {
    .name = "filter",
    .summary = "keep the table rows for which an expression is true",
    .help =
        "Keeps the rows of each TABLE chunk where expr= is true.\n"
        "Operators, loosest first: ||, &&, comparisons (< <= > >= == !=; they\n"
        "do not chain), + -, * /, unary ! and -. Operands: numbers (int64\n"
        "unless written with . or e), \"strings\" (escapes \\\" \\\\ \\n \\t \\r),\n"
        "true, false, null, column names (letters, digits, _ and .; other\n"
        "names as col(\"unit price\")) and parentheses.\n"
        "Types: int64 op int64 stays int64 except /, which gives float64;\n"
        "int64 and float64 mix and compare exactly; strings compare bytewise\n"
        "with strings; bools with == and != only. A type mismatch fails the\n"
        "chunk with the operator's column in the expression.\n"
        "Nulls (and float NaN) follow SQL: any comparison or arithmetic with\n"
        "a null is null, false && null is false, true || null is true, and\n"
        "only rows where the result is true are kept. x == null and\n"
        "x != null test for null.\n"
        "A chunk whose rows all match passes through untouched (zero copy);\n"
        "otherwise the kept rows are copied into a new table (possibly of\n"
        "0 rows: the chunk is not dropped, so groupby/aggregate see every\n"
        "chunk). Row numbers (first_row) stay those of the input chunk.\n"
        "Example: csv.read file=sales.csv ! csv.parse\n"
        "  ! filter expr='x > 100 && category != \"Toys\"' ! csv.write file=big.csv",
    .exec = SL_EXEC_CPU,
    .in_kind = SL_KIND_TABLE,
    .out_kind = SL_KIND_TABLE,
    .params = filter_params_table,
    .params_size = sizeof(filter_params),
    .create = filter_create,
    .destroy = filter_destroy,
    .open = filter_open,
    .process = filter_process,
    .close = filter_close,
};
