/*
 * reduce_internal.h -- the pieces of the `reduce` stage (stages/reduce*.c):
 * the per-chunk partial result, its merge, pack/unpack to bytes, the
 * kernels that fold a chunk into a partial, and the combination tree that
 * merges partials in an order fixed by the chunk index (item seq).
 *
 * A partial (sl__rpart) is a self-contained value: it holds no pointer into
 * a chunk, so it can outlive the chunk's arena block, be packed into a flat
 * byte string, sent to another process (MPI) and unpacked there. Merging
 * two partials is deterministic: the result depends only on the two values
 * and on which one covers the earlier chunks (dst ⊕ src, dst earlier).
 * Only the public "sluice.h" is used.
 */
#ifndef SLUICE_REDUCE_INTERNAL_H
#define SLUICE_REDUCE_INTERNAL_H

#include <stdint.h>

#include "sluice.h"

/* Operations (bits of sl__rconf.ops), in output column order. */
enum {
  SL__ROP_COUNT = 1u << 0,
  SL__ROP_SUM = 1u << 1,
  SL__ROP_MEAN = 1u << 2,
  SL__ROP_VAR = 1u << 3,
  SL__ROP_STD = 1u << 4,
  SL__ROP_MIN = 1u << 5,
  SL__ROP_MAX = 1u << 6,
  SL__ROP_ARGMIN = 1u << 7,
  SL__ROP_ARGMAX = 1u << 8,
  SL__ROP_HIST = 1u << 9,
};
#define SL__ROP_NOPS 10

/* What a reduce computes; the same for every partial of a run. */
typedef struct sl__rconf {
  unsigned ops;       /* SL__ROP_* */
  unsigned order[SL__ROP_NOPS]; /* ops in the order written in ops= */
  unsigned nops;
  uint32_t nbins;     /* hist: number of bins */
  double lo, hi;      /* hist: range (after numpy's lo == hi widening) */
  bool hist_auto;     /* hist(bins) without a range: not supported yet */
  int64_t axis;       /* as written; SL__RAXIS_NONE: whole array */
  unsigned ddof;      /* var/std: divide by n - ddof */
} sl__rconf;
#define SL__RAXIS_NONE INT64_MIN

/* Parses ops= ("count,sum,hist(100,0,1)") into *cf (axis and ddof are left
 * alone). @return 0, or SL_EINVAL with *err a malloc'd message naming the
 * position, or SL_ENOMEM. */
int sl__rconf_parse(sl__rconf *cf, const char *ops, char **err);

/* Value classes: every element type folds as one of three. */
typedef enum sl__rclass {
  SL__RC_F = 0, /* f32, f64: as double */
  SL__RC_I,     /* i8..i64: as int64 */
  SL__RC_U      /* bool, u8..u64: as uint64 */
} sl__rclass;
sl__rclass sl__rclass_of(sl_dtype t);

#define SL__RNONE UINT64_MAX /* "no index" */

/* The accumulators of one output cell. Fields of ops that were not asked
 * for stay at their initial values. */
typedef struct sl__rcell {
  uint64_t n;        /* elements folded (NaN included) */
  double s, c;       /* F: sum, as Neumaier's (sum, compensation) */
  __int128 w;        /* I, U: the exact sum */
  double mean, m2;   /* var/std: Welford/Chan state over all n elements */
  union { double f; int64_t i; uint64_t u; } min, max; /* over non-NaN */
  uint64_t imin, imax; /* index of the first min / max; SL__RNONE: none */
  uint64_t inan;     /* F: index of the first NaN; SL__RNONE: none */
} sl__rcell;

/* A partial result: cells for a box of the result grid (the array's shape
 * without the reduced axis; one cell, ndim 0, for a whole-array reduce). */
typedef struct sl__rpart {
  unsigned ops;
  sl_dtype dtype;    /* element type of the input */
  uint32_t nbins;
  double lo, hi;
  uint64_t elems;    /* input elements covered (to detect missing chunks) */
  uint32_t ndim;     /* of the box */
  uint64_t origin[SL_MAX_DIMS], shape[SL_MAX_DIMS];
  uint64_t ncells;
  sl__rcell *cells;  /* ncells, C order over the box */
  uint64_t *hist;    /* ncells * nbins counts, or NULL */
} sl__rpart;

/* Initialises *p with empty cells over the box (origin, shape) of `ndim`
 * axes. @return 0, SL_ENOMEM, or SL_ELIMIT when the box is too large. */
int sl__rpart_init(sl__rpart *p, const sl__rconf *cf, sl_dtype dtype,
                   uint32_t ndim, const uint64_t *origin, const uint64_t *shape);
/* Frees the cells; *p may be zeroed or already freed. */
void sl__rpart_free(sl__rpart *p);
/* dst ⊕= src, dst covering the earlier chunks. dst's box grows to the
 * bounding box of both. src is left unchanged. @return 0, SL_ENOMEM,
 * SL_ELIMIT, or SL_EINVAL when the two do not belong to the same reduce
 * (ops, dtype, bins, rank). */
int sl__rpart_merge(sl__rpart *dst, const sl__rpart *src);

/* Packs *p into a malloc'd byte string (native byte order and layout
 * versioned by a magic number). @return 0 or SL_ENOMEM. */
int sl__rpart_pack(const sl__rpart *p, void **out, size_t *len);
/* Unpacks bytes made by sl__rpart_pack into *p (freed with
 * sl__rpart_free). Every field is checked against the length, so foreign or
 * corrupt bytes are SL_EFORMAT, never a crash. @return 0, SL_EFORMAT or
 * SL_ENOMEM. */
int sl__rpart_unpack(const void *buf, size_t len, sl__rpart *p);

/* Final values of one cell. */
double sl__rcell_sum_f(const sl__rcell *c);

/* numpy.histogram's bin edge i of `nbins` equal bins over [lo, hi]:
 * linspace's i * step + lo (two roundings, no fused multiply-add: C11
 * without extensions does not contract), the last edge exactly hi. */
static inline double sl__rhist_edge(double lo, double hi, uint32_t nbins, int64_t i) {
  if (i >= (int64_t)nbins) return hi;
  double step = (hi - lo) / (double)nbins;
  if (step == 0) /* denormal step: numpy divides first (gh-5437) */
    return (double)i / (double)nbins * (hi - lo) + lo;
  double y = (double)i * step;
  return y + lo;
}

/* ---- the result table (reduce_table.c) ------------------------------- */

/* Lays out the final partial `p` of a reduce over an array of `ndim` axes
 * of shape `whole` (axis -1: whole array) as one TABLE item (seq 0,
 * "result"; caller owns it). @return 0, or an error recorded on w. */
int sl__reduce_table(sl_worker *w, const sl__rconf *cf, const sl__rpart *p,
                     int axis, uint32_t ndim, const uint64_t *whole, sl_item **out);

/* ---- folding a chunk (reduce_chunk.c) -------------------------------- */

/* Per-worker scratch memory for the kernels (zeroed to start). */
#define SL__RSUB 4 /* interleaved copies of a histogram (reduce_chunk.c) */
typedef struct sl__rscratch {
  void *buf;      /* BLK elements loaded as class values */
  uint64_t *sub;  /* SL__RSUB interleaved sub-histograms */
  size_t sub_cap; /* counts in sub */
} sl__rscratch;
void sl__rscratch_free(sl__rscratch *s);

/* Histogram binning kernels: the best the CPU has, at most `level` (tests
 * check each against numpy; all give the same counts). Process-wide. */
enum { SL__RSIMD_SCALAR = 0, SL__RSIMD_SSE2 = 1, SL__RSIMD_AVX2 = 2 };
void sl__reduce_simd_cap(int level);

/* Folds the chunk `a` (elements at `data`, strides in bytes) into *p,
 * which the caller initialised over the chunk's box (sl__rchunk_box).
 * axis: -1 for the whole array, else the reduced axis (< a->ndim).
 * @return 0 or SL_ENOMEM. */
int sl__rchunk_fold(sl__rpart *p, const sl_array_desc *a, const void *data,
                    int axis, sl__rscratch *scratch);
/* The box of the result grid that chunk `a` touches. */
void sl__rchunk_box(const sl_array_desc *a, int axis, uint32_t *ndim,
                    uint64_t *origin, uint64_t *shape);

/* ---- fixed combination tree (reduce_partial.c) ----------------------- */

/* Partials of chunk seq s enter as leaf (level 0, index s). Node (l, j)
 * covers chunks [j*2^l, (j+1)*2^l) and is node (l-1, 2j) ⊕ node (l-1,
 * 2j+1), formed as soon as both children exist. At the end the remaining
 * nodes (the maximal complete blocks, which depend only on the set of seqs
 * present) are folded right to left. So the result depends only on the
 * chunks and their seqs: never on arrival order, thread count, or how
 * chunks were grouped into nodes elsewhere (another process may send
 * complete nodes: sl__rtree_add_node). */
typedef struct sl__rtree_node {
  uint32_t level;
  uint64_t index;
  sl__rpart *part;
} sl__rtree_node;

typedef struct sl__rtree {
  sl__rtree_node *v;
  size_t n, cap;
} sl__rtree;

/* Adds the node (level, index) (taking over `part`, a malloc'd partial)
 * and merges up as far as siblings allow. @return 0, or an error from
 * merging (part is then freed). */
int sl__rtree_add_node(sl__rtree *t, uint32_t level, uint64_t index,
                       sl__rpart *part);
/* Folds what is left into one partial (*out, malloc'd, caller frees with
 * sl__rpart_free + free), or NULL when the tree is empty. The tree is
 * empty afterwards. @return 0 or an error from merging. */
int sl__rtree_finish(sl__rtree *t, sl__rpart **out);
/* Frees every node. */
void sl__rtree_clear(sl__rtree *t);

#endif
