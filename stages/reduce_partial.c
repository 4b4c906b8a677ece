/*
 * reduce_partial.c -- the partial result of `reduce` as a value: parsing
 * ops=, creating, merging, packing and unpacking partials, and the fixed
 * combination tree keyed by chunk index (see reduce_internal.h).
 *
 * Merge rules (dst covers earlier chunks than src):
 *   count, exact integer sums, histograms: added (exact, order-free);
 *   float sums: Neumaier addition of src's (sum, compensation) pair;
 *   var/std: Chan et al.'s pairwise update of (n, mean, m2);
 *   min/max: the smaller/larger value, ties to the smaller index (so the
 *     result is numpy's first occurrence whatever the order);
 *   NaN: the smallest index of a NaN wins.
 * A cell with n == 0 is the identity: merging it leaves dst bit-identical,
 * so empty chunks and cells outside a chunk's box change nothing.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "reduce_internal.h"

/* Largest partial accepted (cells and histogram counts). A reduce along an
 * axis keeps one cell per index of the other axes; beyond this the job is
 * better written differently, and saying so beats running out of memory. */
#define MAX_PART_BYTES ((uint64_t)1 << 30)

/* ======================================================================
 * ops=
 * ====================================================================== */

static const char *const op_names[SL__ROP_NOPS] = {
    "count", "sum", "mean", "var", "std", "min", "max", "argmin", "argmax", "hist"};

static int perr(char **err, const char *text, const char *at, const char *msg) {
  size_t len = strlen(msg) + 64;
  if (!(*err = malloc(len))) return SL_ENOMEM;
  snprintf(*err, len, "ops: %s at position %zu", msg, (size_t)(at - text) + 1);
  return SL_EINVAL;
}

static const char *skipb(const char *p) {
  while (*p == ' ' || *p == '\t') p++;
  return p;
}

/* Parses hist's "(bins[, lo, hi])" at *pp (at the '('). */
static int parse_hist(sl__rconf *cf, const char *text, const char **pp, char **err) {
  const char *p = *pp + 1;
  double v[3];
  int n = 0;
  for (;;) {
    p = skipb(p);
    if (n == 3) return perr(err, text, p, "hist takes at most 3 arguments (bins, lo, hi)");
    char *end;
    v[n] = strtod(p, &end);
    if (end == p) return perr(err, text, p, "expected a number");
    p = skipb(end);
    n++;
    if (*p == ')') break;
    if (*p != ',') return perr(err, text, p, "expected ',' or ')'");
    p++;
  }
  *pp = p + 1;
  if (n == 2) return perr(err, text, p, "hist takes bins, or bins, lo and hi");
  if (!(v[0] >= 1 && v[0] <= 1e7 && v[0] == floor(v[0])))
    return perr(err, text, p, "hist: bins must be an integer between 1 and 10000000");
  cf->nbins = (uint32_t)v[0];
  cf->hist_auto = n == 1;
  if (n == 3) {
    if (!isfinite(v[1]) || !isfinite(v[2]))
      return perr(err, text, p, "hist: the range must be finite");
    if (v[1] > v[2]) return perr(err, text, p, "hist: lo must not exceed hi");
    if (v[1] == v[2]) { /* numpy widens an empty range by 0.5 each side */
      v[1] -= 0.5;
      v[2] += 0.5;
    }
    cf->lo = v[1];
    cf->hi = v[2];
  }
  return 0;
}

int sl__rconf_parse(sl__rconf *cf, const char *ops, char **err) {
  *err = NULL;
  cf->ops = 0;
  cf->nops = 0;
  const char *p = skipb(ops);
  if (!*p) return perr(err, ops, p, "no operation");
  for (;;) {
    const char *start = p = skipb(p);
    while ((*p >= 'a' && *p <= 'z')) p++;
    unsigned k = 0;
    while (k < SL__ROP_NOPS && !((size_t)(p - start) == strlen(op_names[k]) &&
                                 memcmp(start, op_names[k], (size_t)(p - start)) == 0))
      k++;
    if (k == SL__ROP_NOPS) {
      char msg[160];
      snprintf(msg, sizeof msg, "unknown operation \"%.*s\" (count, sum, mean, var, "
               "std, min, max, argmin, argmax, hist(bins,lo,hi))",
               (int)(p - start > 32 ? 32 : p - start), start);
      return perr(err, ops, start, msg);
    }
    if (cf->ops & (1u << k)) return perr(err, ops, start, "operation listed twice");
    cf->ops |= 1u << k;
    cf->order[cf->nops++] = 1u << k;
    p = skipb(p);
    if ((1u << k) == SL__ROP_HIST) {
      if (*p != '(') return perr(err, ops, p, "hist needs (bins, lo, hi)");
      int rc = parse_hist(cf, ops, &p, err);
      if (rc < 0) return rc;
      p = skipb(p);
    } else if (*p == '(') {
      return perr(err, ops, p, "only hist takes arguments");
    }
    if (!*p) return 0;
    if (*p != ',') return perr(err, ops, p, "expected ','");
    p++;
  }
}

sl__rclass sl__rclass_of(sl_dtype t) {
  switch (t) {
  case SL_DT_F32:
  case SL_DT_F64: return SL__RC_F;
  case SL_DT_I8:
  case SL_DT_I16:
  case SL_DT_I32:
  case SL_DT_I64: return SL__RC_I;
  default: return SL__RC_U;
  }
}

/* ======================================================================
 * Partials
 * ====================================================================== */

static void cell_init(sl__rcell *c) {
  memset(c, 0, sizeof *c);
  c->imin = c->imax = c->inan = SL__RNONE;
}

static int box_cells(uint32_t ndim, const uint64_t *shape, uint32_t nbins,
                     uint64_t *ncells) {
  uint64_t n = 1;
  for (uint32_t d = 0; d < ndim; d++) {
    if (shape[d] && n > UINT64_MAX / shape[d]) return SL_ELIMIT;
    n *= shape[d];
  }
  uint64_t per = sizeof(sl__rcell) + (uint64_t)nbins * 8;
  if (n > MAX_PART_BYTES / per) return SL_ELIMIT;
  *ncells = n;
  return 0;
}

int sl__rpart_init(sl__rpart *p, const sl__rconf *cf, sl_dtype dtype,
                   uint32_t ndim, const uint64_t *origin, const uint64_t *shape) {
  memset(p, 0, sizeof *p);
  if (ndim > SL_MAX_DIMS) return SL_EINVAL;
  p->ops = cf->ops;
  p->dtype = dtype;
  p->nbins = (cf->ops & SL__ROP_HIST) ? cf->nbins : 0;
  p->lo = cf->lo;
  p->hi = cf->hi;
  p->ndim = ndim;
  for (uint32_t d = 0; d < ndim; d++) {
    p->origin[d] = origin[d];
    p->shape[d] = shape[d];
  }
  int rc = box_cells(ndim, shape, p->nbins, &p->ncells);
  if (rc < 0) return rc;
  p->cells = malloc((p->ncells ? p->ncells : 1) * sizeof *p->cells);
  if (p->nbins) p->hist = calloc(p->ncells ? p->ncells * p->nbins : 1, 8);
  if (!p->cells || (p->nbins && !p->hist)) {
    sl__rpart_free(p);
    return SL_ENOMEM;
  }
  for (uint64_t i = 0; i < p->ncells; i++) cell_init(&p->cells[i]);
  return 0;
}

void sl__rpart_free(sl__rpart *p) {
  if (!p) return;
  free(p->cells);
  free(p->hist);
  p->cells = NULL;
  p->hist = NULL;
  p->ncells = 0;
}

double sl__rcell_sum_f(const sl__rcell *c) {
  /* An infinite or NaN sum makes the compensation meaningless (inf - inf). */
  return isfinite(c->s) ? c->s + c->c : c->s;
}

/* Neumaier's compensated addition of x into (s, c). */
static inline void fsum_add(double *s, double *c, double x) {
  double t = *s + x;
  if (fabs(*s) >= fabs(x)) *c += (*s - t) + x;
  else *c += (x - t) + *s;
  *s = t;
}

/* min/max of class `cls` with ties to the smaller index. */
static bool takes_min(sl__rclass cls, const sl__rcell *d, const sl__rcell *s) {
  if (s->imin == SL__RNONE) return false;
  if (d->imin == SL__RNONE) return true;
  bool lt = cls == SL__RC_F ? s->min.f < d->min.f
          : cls == SL__RC_I ? s->min.i < d->min.i : s->min.u < d->min.u;
  bool eq = cls == SL__RC_F ? s->min.f == d->min.f
          : cls == SL__RC_I ? s->min.i == d->min.i : s->min.u == d->min.u;
  return lt || (eq && s->imin < d->imin);
}

static bool takes_max(sl__rclass cls, const sl__rcell *d, const sl__rcell *s) {
  if (s->imax == SL__RNONE) return false;
  if (d->imax == SL__RNONE) return true;
  bool gt = cls == SL__RC_F ? s->max.f > d->max.f
          : cls == SL__RC_I ? s->max.i > d->max.i : s->max.u > d->max.u;
  bool eq = cls == SL__RC_F ? s->max.f == d->max.f
          : cls == SL__RC_I ? s->max.i == d->max.i : s->max.u == d->max.u;
  return gt || (eq && s->imax < d->imax);
}

/* d ⊕= s for one cell (d earlier). */
static void cell_merge(sl__rclass cls, sl__rcell *d, const sl__rcell *s) {
  if (s->n == 0) return;
  if (d->n == 0) {
    *d = *s;
    return;
  }
  uint64_t n = d->n + s->n;
  if (cls == SL__RC_F) {
    fsum_add(&d->s, &d->c, s->s);
    fsum_add(&d->s, &d->c, s->c);
  } else {
    d->w += s->w;
  }
  /* Chan et al.: combine (n, mean, m2) of two disjoint sets. */
  double na = (double)d->n, nb = (double)s->n, nn = (double)n;
  double delta = s->mean - d->mean;
  d->mean += delta * (nb / nn);
  d->m2 += s->m2 + delta * delta * (na * nb / nn);
  d->n = n;
  if (takes_min(cls, d, s)) {
    d->min = s->min;
    d->imin = s->imin;
  }
  if (takes_max(cls, d, s)) {
    d->max = s->max;
    d->imax = s->imax;
  }
  if (s->inan < d->inan) d->inan = s->inan;
}

static bool same_kind(const sl__rpart *a, const sl__rpart *b) {
  return a->ops == b->ops && a->dtype == b->dtype && a->nbins == b->nbins &&
         a->ndim == b->ndim &&
         (!a->nbins || (memcmp(&a->lo, &b->lo, sizeof a->lo) == 0 &&
                        memcmp(&a->hi, &b->hi, sizeof a->hi) == 0));
}

/* Flat index in box (origin, shape) of the cell whose grid position is
 * `pos` (which lies inside the box). */
static uint64_t box_index(uint32_t ndim, const uint64_t *origin,
                          const uint64_t *shape, const uint64_t *pos) {
  uint64_t k = 0;
  for (uint32_t d = 0; d < ndim; d++) k = k * shape[d] + (pos[d] - origin[d]);
  return k;
}

/* Moves dst's cells into a larger box (nb_origin, nb_shape). */
static int regrow(sl__rpart *dst, const uint64_t *no, const uint64_t *ns) {
  sl__rpart g;
  sl__rconf cf = {.ops = dst->ops, .nbins = dst->nbins, .lo = dst->lo, .hi = dst->hi};
  int rc = sl__rpart_init(&g, &cf, dst->dtype, dst->ndim, no, ns);
  if (rc < 0) return rc;
  g.elems = dst->elems;
  uint64_t pos[SL_MAX_DIMS] = {0};
  for (uint32_t d = 0; d < dst->ndim; d++) pos[d] = dst->origin[d];
  for (uint64_t i = 0; i < dst->ncells; i++) {
    uint64_t k = box_index(g.ndim, g.origin, g.shape, pos);
    g.cells[k] = dst->cells[i];
    if (g.nbins)
      memcpy(g.hist + k * g.nbins, dst->hist + i * g.nbins, (size_t)g.nbins * 8);
    for (uint32_t d = dst->ndim; d-- > 0;) { /* next position, C order */
      if (++pos[d] < dst->origin[d] + dst->shape[d]) break;
      pos[d] = dst->origin[d];
    }
  }
  sl__rpart_free(dst);
  *dst = g;
  return 0;
}

int sl__rpart_merge(sl__rpart *dst, const sl__rpart *src) {
  if (!same_kind(dst, src)) return SL_EINVAL;
  uint64_t no[SL_MAX_DIMS], ns[SL_MAX_DIMS];
  bool grow = false;
  if (src->ncells) {
    for (uint32_t d = 0; d < dst->ndim; d++) {
      uint64_t lo = dst->origin[d] < src->origin[d] ? dst->origin[d] : src->origin[d];
      uint64_t he = dst->origin[d] + dst->shape[d], hs = src->origin[d] + src->shape[d];
      uint64_t hi = he > hs ? he : hs;
      if (!dst->ncells) {
        lo = src->origin[d];
        hi = hs;
      }
      no[d] = lo;
      ns[d] = hi - lo;
      grow |= lo != dst->origin[d] || ns[d] != dst->shape[d];
    }
  }
  if (grow) {
    int rc = regrow(dst, no, ns);
    if (rc < 0) return rc;
  }
  sl__rclass cls = sl__rclass_of(dst->dtype);
  uint64_t pos[SL_MAX_DIMS] = {0};
  for (uint32_t d = 0; d < src->ndim; d++) pos[d] = src->origin[d];
  for (uint64_t i = 0; i < src->ncells; i++) {
    uint64_t k = box_index(dst->ndim, dst->origin, dst->shape, pos);
    cell_merge(cls, &dst->cells[k], &src->cells[i]);
    for (uint32_t b = 0; b < dst->nbins; b++)
      dst->hist[k * dst->nbins + b] += src->hist[i * dst->nbins + b];
    for (uint32_t d = src->ndim; d-- > 0;) {
      if (++pos[d] < src->origin[d] + src->shape[d]) break;
      pos[d] = src->origin[d];
    }
  }
  dst->elems += src->elems;
  return 0;
}

/* ======================================================================
 * Pack / unpack
 * ====================================================================== */

#define PACK_MAGIC UINT64_C(0x31745072646c5300) /* "\0SldrPt1" read as LE */

typedef struct wbuf {
  unsigned char *p;
  size_t len;
} wbuf;

static void put(wbuf *b, const void *v, size_t n) {
  memcpy(b->p + b->len, v, n);
  b->len += n;
}

/* Fixed header: magic, ops, dtype, nbins, ndim, lo, hi, elems, ncells,
 * origin[ndim], shape[ndim]; then per cell n, s, c, w (16), mean, m2, min,
 * max, imin, imax, inan; then the histogram counts. */
static size_t packed_size(const sl__rpart *p) {
  return 8 + 4 * 4 + 3 * 8 + 8 + 16 * (size_t)p->ndim +
         (size_t)p->ncells * (12 * 8) + (size_t)p->ncells * p->nbins * 8;
}

int sl__rpart_pack(const sl__rpart *p, void **out, size_t *len) {
  size_t size = packed_size(p);
  wbuf b = {malloc(size), 0};
  if (!b.p) return SL_ENOMEM;
  uint64_t magic = PACK_MAGIC;
  uint32_t hdr[4] = {p->ops, (uint32_t)p->dtype, p->nbins, p->ndim};
  put(&b, &magic, 8);
  put(&b, hdr, sizeof hdr);
  put(&b, &p->lo, 8);
  put(&b, &p->hi, 8);
  put(&b, &p->elems, 8);
  put(&b, &p->ncells, 8);
  put(&b, p->origin, 8 * (size_t)p->ndim);
  put(&b, p->shape, 8 * (size_t)p->ndim);
  for (uint64_t i = 0; i < p->ncells; i++) {
    const sl__rcell *c = &p->cells[i];
    put(&b, &c->n, 8);
    put(&b, &c->s, 8);
    put(&b, &c->c, 8);
    put(&b, &c->w, 16);
    put(&b, &c->mean, 8);
    put(&b, &c->m2, 8);
    put(&b, &c->min, 8);
    put(&b, &c->max, 8);
    put(&b, &c->imin, 8);
    put(&b, &c->imax, 8);
    put(&b, &c->inan, 8);
  }
  if (p->nbins) put(&b, p->hist, (size_t)p->ncells * p->nbins * 8);
  *out = b.p;
  *len = b.len;
  return 0;
}

typedef struct rbuf {
  const unsigned char *p;
  size_t len, at;
} rbuf;

static bool get(rbuf *b, void *v, size_t n) {
  if (b->len - b->at < n) return false;
  memcpy(v, b->p + b->at, n);
  b->at += n;
  return true;
}

int sl__rpart_unpack(const void *buf, size_t len, sl__rpart *p) {
  memset(p, 0, sizeof *p);
  rbuf b = {buf, len, 0};
  uint64_t magic, elems, ncells;
  uint32_t hdr[4];
  double lo, hi;
  if (!get(&b, &magic, 8) || magic != PACK_MAGIC || !get(&b, hdr, sizeof hdr) ||
      !get(&b, &lo, 8) || !get(&b, &hi, 8) || !get(&b, &elems, 8) ||
      !get(&b, &ncells, 8))
    return SL_EFORMAT;
  if (hdr[0] >= (1u << SL__ROP_NOPS) || hdr[1] < SL_DT_BOOL || hdr[1] > SL_DT_F64 ||
      hdr[2] > 10000000 || hdr[3] > SL_MAX_DIMS || ((hdr[0] & SL__ROP_HIST) != 0) != (hdr[2] != 0))
    return SL_EFORMAT;
  uint64_t origin[SL_MAX_DIMS], shape[SL_MAX_DIMS];
  if (!get(&b, origin, 8 * (size_t)hdr[3]) || !get(&b, shape, 8 * (size_t)hdr[3]))
    return SL_EFORMAT;
  for (uint32_t d = 0; d < hdr[3]; d++)
    if (origin[d] > UINT64_MAX - shape[d]) return SL_EFORMAT;
  sl__rconf cf = {.ops = hdr[0], .nbins = hdr[2], .lo = lo, .hi = hi};
  uint64_t want;
  if (box_cells(hdr[3], shape, hdr[2], &want) < 0 || want != ncells) return SL_EFORMAT;
  /* The length must match before anything is allocated from the counts. */
  sl__rpart probe = {.ndim = hdr[3], .ncells = ncells, .nbins = hdr[2]};
  if (packed_size(&probe) != len) return SL_EFORMAT;
  int rc = sl__rpart_init(p, &cf, (sl_dtype)hdr[1], hdr[3], origin, shape);
  if (rc < 0) return rc == SL_ELIMIT ? SL_EFORMAT : rc;
  p->elems = elems;
  for (uint64_t i = 0; i < ncells; i++) {
    sl__rcell *c = &p->cells[i];
    get(&b, &c->n, 8);
    get(&b, &c->s, 8);
    get(&b, &c->c, 8);
    get(&b, &c->w, 16);
    get(&b, &c->mean, 8);
    get(&b, &c->m2, 8);
    get(&b, &c->min, 8);
    get(&b, &c->max, 8);
    get(&b, &c->imin, 8);
    get(&b, &c->imax, 8);
    get(&b, &c->inan, 8);
  }
  if (p->nbins) get(&b, p->hist, (size_t)ncells * p->nbins * 8);
  return 0;
}

/* ======================================================================
 * The combination tree
 * ====================================================================== */

static void node_free(sl__rpart *p) {
  sl__rpart_free(p);
  free(p);
}

static int tree_push(sl__rtree *t, sl__rtree_node nd) {
  if (t->n == t->cap) {
    size_t cap = t->cap ? 2 * t->cap : 32;
    sl__rtree_node *v = realloc(t->v, cap * sizeof *v);
    if (!v) return SL_ENOMEM;
    t->v = v;
    t->cap = cap;
  }
  t->v[t->n++] = nd;
  return 0;
}

int sl__rtree_add_node(sl__rtree *t, uint32_t level, uint64_t index,
                       sl__rpart *part) {
  for (;;) {
    size_t k = 0;
    for (size_t i = 0; i < t->n; i++)
      if (t->v[i].level == level && t->v[i].index == index) {
        node_free(part); /* a chunk seen twice: the sums would be wrong */
        return SL_EEXIST;
      }
    while (k < t->n && !(t->v[k].level == level && t->v[k].index == (index ^ 1)))
      k++;
    if (k == t->n || level >= 63) {
      int rc = tree_push(t, (sl__rtree_node){level, index, part});
      if (rc < 0) node_free(part);
      return rc;
    }
    sl__rpart *sib = t->v[k].part;
    t->v[k] = t->v[--t->n];
    sl__rpart *left = (index & 1) ? sib : part, *right = (index & 1) ? part : sib;
    int rc = sl__rpart_merge(left, right);
    node_free(right);
    if (rc < 0) {
      node_free(left);
      return rc;
    }
    part = left;
    level++;
    index >>= 1;
  }
}

/* Position of a node's first chunk, for ordering the leftovers. */
static int node_cmp(const void *a, const void *b) {
  const sl__rtree_node *x = a, *y = b;
  uint64_t fx = x->index << x->level, fy = y->index << y->level;
  return fx < fy ? -1 : fx > fy;
}

int sl__rtree_finish(sl__rtree *t, sl__rpart **out) {
  *out = NULL;
  if (!t->n) return 0;
  qsort(t->v, t->n, sizeof *t->v, node_cmp);
  int rc = 0;
  sl__rpart *acc = t->v[t->n - 1].part;
  for (size_t k = t->n - 1; k-- > 0;) {
    sl__rpart *left = t->v[k].part;
    if (rc == 0) rc = sl__rpart_merge(left, acc);
    node_free(acc);
    acc = left;
  }
  t->n = 0;
  if (rc < 0) {
    node_free(acc);
    return rc;
  }
  *out = acc;
  return 0;
}

void sl__rtree_clear(sl__rtree *t) {
  for (size_t k = 0; k < t->n; k++) node_free(t->v[k].part);
  free(t->v);
  memset(t, 0, sizeof *t);
}
