/*
 * reduce_table.c -- lays out the final partial of `reduce` as one TABLE
 * item (the layout of agg_internal.h: 8-byte values, 1-byte bools and
 * validity flags, one arena block).
 *
 * Rows: one per cell of the result grid (one for a whole-array reduce;
 * with axis=k one per index of the other axes, C order), times the number
 * of histogram bins when hist is asked for. Columns: i<d> (axis= only: the
 * cell's index along each kept axis d), then each op in the order written
 * in ops=; hist contributes bin_lo, bin_hi and hist. Op columns other than
 * hist's carry a value on a cell's first row and null on its other bin
 * rows, so csv.write/json.write print each statistic once.
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "reduce_internal.h"

typedef enum ocol_kind {
  OC_INDEX, OC_COUNT, OC_SUM, OC_MEAN, OC_VAR, OC_STD, OC_MIN, OC_MAX,
  OC_ARGMIN, OC_ARGMAX, OC_BIN_LO, OC_BIN_HI, OC_HIST
} ocol_kind;

typedef struct ocol {
  ocol_kind kind;
  uint32_t axis; /* OC_INDEX: which kept axis (position in the grid) */
  char name[24];
  sl_dtype type;
  bool nullable;
  size_t data_off, valid_off;
} ocol;

typedef struct tctx {
  const sl__rconf *cf;
  const sl__rpart *p;
  sl__rclass cls;
  uint32_t gdim;               /* axes of the result grid */
  uint64_t gshape[SL_MAX_DIMS];
  uint64_t ncells, nbins;      /* nbins 1 without hist */
  sl__rcell empty;
} tctx;

/* The cell at grid position `pos` (empty when outside the partial's box,
 * which only happens for arrays without elements). */
static const sl__rcell *cell_at(const tctx *t, const uint64_t *pos, uint64_t *k) {
  const sl__rpart *p = t->p;
  uint64_t i = 0;
  for (uint32_t d = 0; d < p->ndim; d++) {
    if (pos[d] < p->origin[d] || pos[d] >= p->origin[d] + p->shape[d]) return &t->empty;
    i = i * p->shape[d] + (pos[d] - p->origin[d]);
  }
  if (i >= p->ncells) return &t->empty;
  *k = i;
  return &p->cells[i];
}

static sl_dtype extreme_type(const sl__rpart *p) {
  switch (sl__rclass_of(p->dtype)) {
  case SL__RC_F: return SL_DT_F64;
  case SL__RC_I: return SL_DT_I64;
  default: return p->dtype == SL_DT_BOOL ? SL_DT_BOOL
                : p->dtype == SL_DT_U64 ? SL_DT_U64 : SL_DT_I64;
  }
}

static int add_col(ocol *oc, size_t *n, ocol_kind kind, const char *name,
                   sl_dtype type) {
  ocol *o = &oc[(*n)++];
  memset(o, 0, sizeof *o);
  o->kind = kind;
  snprintf(o->name, sizeof o->name, "%s", name);
  o->type = type;
  o->nullable = kind != OC_INDEX && kind != OC_BIN_LO && kind != OC_BIN_HI && kind != OC_HIST;
  return 0;
}

/* The value of column o for cell c (bin b) into *v (8 bytes); false when
 * null. @return -1 for an integer sum beyond int64. */
static int value(const tctx *t, const ocol *o, const sl__rcell *c, uint64_t hk,
                 const uint64_t *pos, uint64_t b, void *v) {
  const sl__rpart *p = t->p;
  double f;
  int64_t i;
  if (o->nullable && b > 0) return 0;
  switch (o->kind) {
  case OC_INDEX: i = (int64_t)pos[o->axis]; memcpy(v, &i, 8); return 1;
  case OC_COUNT: i = (int64_t)c->n; memcpy(v, &i, 8); return 1;
  case OC_SUM:
    if (t->cls == SL__RC_F) {
      f = c->n ? sl__rcell_sum_f(c) : 0.0;
      memcpy(v, &f, 8);
      return 1;
    }
    if (c->w > INT64_MAX || c->w < INT64_MIN) return -1;
    i = (int64_t)c->w;
    memcpy(v, &i, 8);
    return 1;
  case OC_MEAN:
    if (!c->n) return 0;
    f = (t->cls == SL__RC_F ? sl__rcell_sum_f(c) : (double)c->w) / (double)c->n;
    memcpy(v, &f, 8);
    return 1;
  case OC_VAR:
  case OC_STD:
    if (c->n <= t->cf->ddof) return 0;
    f = c->m2 / (double)(c->n - t->cf->ddof);
    if (o->kind == OC_STD) f = sqrt(f);
    memcpy(v, &f, 8);
    return 1;
  case OC_MIN:
  case OC_MAX:
  case OC_ARGMIN:
  case OC_ARGMAX: {
    bool mn = o->kind == OC_MIN || o->kind == OC_ARGMIN;
    uint64_t at = mn ? c->imin : c->imax;
    if (c->inan != SL__RNONE) at = c->inan;
    if (at == SL__RNONE) return 0;
    if (o->kind == OC_ARGMIN || o->kind == OC_ARGMAX) {
      i = (int64_t)at;
      memcpy(v, &i, 8);
    } else if (c->inan != SL__RNONE) {
      f = NAN;
      memcpy(v, &f, 8);
    } else if (o->type == SL_DT_BOOL) {
      *(uint8_t *)v = (mn ? c->min.u : c->max.u) != 0;
    } else {
      memcpy(v, mn ? &c->min : &c->max, 8);
    }
    return 1;
  }
  case OC_BIN_LO:
  case OC_BIN_HI:
    f = sl__rhist_edge(p->lo, p->hi, p->nbins, (int64_t)b + (o->kind == OC_BIN_HI));
    memcpy(v, &f, 8);
    return 1;
  case OC_HIST:
    i = (int64_t)(hk == SL__RNONE ? 0 : p->hist[hk * p->nbins + b]);
    memcpy(v, &i, 8);
    return 1;
  }
  return 0;
}

static size_t align8(size_t x) { return (x + 7) & ~(size_t)7; }

/* Builds the columns; @return their number. */
static size_t plan_columns(const tctx *t, int axis, ocol *oc) {
  size_t n = 0;
  for (uint32_t d = 0, g = 0; axis >= 0 && d <= t->gdim; d++) {
    if ((int)d == axis) continue;
    char name[24];
    snprintf(name, sizeof name, "i%u", d);
    add_col(oc, &n, OC_INDEX, name, SL_DT_I64);
    oc[n - 1].axis = g++;
  }
  static const struct { unsigned op; ocol_kind k; const char *name; } ops[] = {
      {SL__ROP_COUNT, OC_COUNT, "count"}, {SL__ROP_SUM, OC_SUM, "sum"},
      {SL__ROP_MEAN, OC_MEAN, "mean"},    {SL__ROP_VAR, OC_VAR, "var"},
      {SL__ROP_STD, OC_STD, "std"},       {SL__ROP_MIN, OC_MIN, "min"},
      {SL__ROP_MAX, OC_MAX, "max"},       {SL__ROP_ARGMIN, OC_ARGMIN, "argmin"},
      {SL__ROP_ARGMAX, OC_ARGMAX, "argmax"}};
  for (unsigned j = 0; j < t->cf->nops; j++) {
    unsigned op = t->cf->order[j];
    if (op == SL__ROP_HIST) {
      add_col(oc, &n, OC_BIN_LO, "bin_lo", SL_DT_F64);
      add_col(oc, &n, OC_BIN_HI, "bin_hi", SL_DT_F64);
      add_col(oc, &n, OC_HIST, "hist", SL_DT_I64);
      continue;
    }
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
      if (ops[k].op != op) continue;
      sl_dtype ty = SL_DT_F64;
      if (op == SL__ROP_COUNT || op == SL__ROP_ARGMIN || op == SL__ROP_ARGMAX) ty = SL_DT_I64;
      if (op == SL__ROP_SUM && t->cls != SL__RC_F) ty = SL_DT_I64;
      if (op == SL__ROP_MIN || op == SL__ROP_MAX) ty = extreme_type(t->p);
      add_col(oc, &n, ops[k].k, ops[k].name, ty);
    }
  }
  return n;
}

/* Writes every row; @return 0 or -1 with *bad the column of an integer sum
 * beyond int64. */
static int fill(const tctx *t, ocol *oc, size_t ncols, char *base, size_t *bad) {
  uint64_t pos[SL_MAX_DIMS] = {0}, row = 0;
  for (uint64_t cidx = 0; cidx < t->ncells; cidx++) {
    uint64_t hk = SL__RNONE;
    const sl__rcell *c = cell_at(t, pos, &hk);
    for (uint64_t b = 0; b < t->nbins; b++, row++)
      for (size_t j = 0; j < ncols; j++) {
        ocol *o = &oc[j];
        unsigned char v[8] = {0};
        int r = value(t, o, c, hk, pos, b, v);
        if (r < 0) {
          *bad = j;
          return -1;
        }
        size_t w = o->type == SL_DT_BOOL ? 1 : 8;
        memcpy(base + o->data_off + row * w, v, w);
        if (o->nullable) base[o->valid_off + row] = (char)(r > 0);
      }
    for (uint32_t d = t->gdim; d-- > 0;) {
      if (++pos[d] < t->gshape[d]) break;
      pos[d] = 0;
    }
  }
  return 0;
}

static sl_item *make_item(const ocol *oc, size_t ncols, uint64_t rows,
                          sl_block *block, size_t size) {
  sl_item *it = sl_item_create(0, "result");
  sl_column *cols = calloc(ncols, sizeof *cols);
  bool ok = it && cols;
  for (size_t j = 0; ok && j < ncols; j++) {
    cols[j] = (sl_column){NULL, oc[j].type, oc[j].data_off, 0,
                          oc[j].nullable ? oc[j].valid_off : SIZE_MAX};
    ok = (cols[j].name = strdup(oc[j].name)) != NULL;
  }
  if (!ok) {
    for (size_t j = 0; cols && j < ncols; j++) free(cols[j].name);
    free(cols);
    sl_item_destroy(it);
    sl_block_release(block);
    return NULL;
  }
  sl_item_set_block(it, SL_KIND_TABLE, block, 0, size);
  it->payload.u.table = (sl_table_desc){(uint32_t)ncols, rows, 0, cols};
  return it;
}

int sl__reduce_table(sl_worker *w, const sl__rconf *cf, const sl__rpart *p,
                     int axis, uint32_t ndim, const uint64_t *whole, sl_item **out) {
  tctx t = {.cf = cf, .p = p, .cls = sl__rclass_of(p->dtype), .ncells = 1,
            .nbins = p->nbins ? p->nbins : 1};
  memset(&t.empty, 0, sizeof t.empty);
  t.empty.imin = t.empty.imax = t.empty.inan = SL__RNONE;
  for (uint32_t d = 0; axis >= 0 && d < ndim; d++)
    if ((int)d != axis) {
      t.gshape[t.gdim++] = whole[d];
      t.ncells *= whole[d];
    }
  if (t.ncells > ((uint64_t)1 << 40) / t.nbins)
    return sl_worker_errorf(w, "the result would have too many rows");
  uint64_t rows = t.ncells * t.nbins;
  ocol oc[SL_MAX_DIMS + 2 * SL__ROP_NOPS + 4];
  size_t ncols = plan_columns(&t, axis, oc), off = 0;
  for (size_t j = 0; j < ncols; j++) {
    oc[j].data_off = off = align8(off);
    off += (size_t)rows * (oc[j].type == SL_DT_BOOL ? 1 : 8);
    oc[j].valid_off = off;
    off += oc[j].nullable ? (size_t)rows : 0;
  }
  size_t size = align8(off) + 8, bad = 0;
  sl_block *block = NULL;
  int rc = sl_worker_alloc(w, size, &block);
  if (rc < 0)
    return rc == SL_ECANCELED ? rc
         : sl_worker_errorf(w, "cannot allocate the result (%zu bytes): %s", size,
                            sl_strerror(rc));
  char *base = sl_block_data(block);
  memset(base, 0, size);
  if (fill(&t, oc, ncols, base, &bad) < 0) {
    sl_block_release(block);
    return sl_worker_errorf(w, "%s: the exact integer sum does not fit in int64 "
                            "(read the array with dtype=f8 to sum in float64)",
                            oc[bad].name);
  }
  *out = make_item(oc, ncols, rows, block, size);
  return *out ? 0 : SL_ENOMEM;
}
