/*
 * reduce.c -- `reduce ops=... [axis=] [ddof=]`: statistics of ARRAY items
 * (count, sum, mean, var, std, min, max, argmin, argmax, hist) over the
 * whole array or along one axis, emitted as one TABLE item.
 *
 * Flow. Each chunk is folded on one worker thread into its own partial
 * (reduce_chunk.c), which is then filed in the stage's combination tree
 * (reduce_partial.c) under the state's mutex; the tree merges partials in
 * an order fixed by the chunk's seq, so the result is bit-identical for any
 * thread count and completion order. The last worker's finish() folds the
 * tree into one partial, checks that every element of the whole array was
 * seen (a chunk that failed upstream would otherwise give a quietly wrong
 * answer), and lays the result out as a table.
 *
 * Memory: the tree holds at most one partial per level plus those of
 * chunks that arrived before an earlier one (a cpu stage keeps them within
 * a batch). A whole-array partial is one cell (~100 bytes, plus the
 * histogram); along an axis, one cell per index of the other axes, capped
 * at 1 GiB (reduce_partial.c).
 *
 * Lock order: the state's mutex is a leaf.
 */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "reduce_internal.h"
#include "stages_internal.h"

typedef struct reduce_params {
  const char *ops;
  const char *axis;
  int64_t ddof;
} reduce_params;

typedef struct red_state {
  sl__rconf cf;
  pthread_mutex_t mu;
  /* Guarded by mu. */
  bool have_shape;
  sl_dtype dtype;
  uint32_t ndim;
  uint64_t whole[SL_MAX_DIMS];
  int axis; /* resolved; -1 whole array */
  sl__rtree tree;
  unsigned opened, finished, live;
  int merge_rc;
} red_state;

typedef struct red_local {
  sl__rscratch scratch;
} red_local;

static void lock(red_state *s) {
  if (pthread_mutex_lock(&s->mu)) abort();
}
static void unlock(red_state *s) {
  if (pthread_mutex_unlock(&s->mu)) abort();
}

/* ---- create / open / close -------------------------------------------- */

static int parse_axis(const char *text, int64_t *axis) {
  if (!text[0] || strcmp(text, "none") == 0) {
    *axis = SL__RAXIS_NONE;
    return 0;
  }
  char *end;
  long long v = strtoll(text, &end, 10);
  if (*end || end == text || v < -(long long)SL_MAX_DIMS || v >= SL_MAX_DIMS)
    return SL_EINVAL;
  *axis = v;
  return 0;
}

static int red_create(sl_stage *st, void **state) {
  const reduce_params *p = sl_stage_params(st);
  red_state *s = calloc(1, sizeof *s);
  if (!s) return sl_stage_errorf(st, "out of memory");
  char *err = NULL;
  int rc = sl__rconf_parse(&s->cf, p->ops, &err);
  if (rc == SL_EINVAL) rc = sl_stage_errorf(st, "%s", err);
  free(err);
  if (rc == 0 && (s->cf.ops & SL__ROP_HIST) && s->cf.hist_auto)
    rc = sl_stage_errorf(st, "ops: hist(%u) without lo, hi needs the global min and "
                         "max first, which needs two passes (not supported yet): "
                         "write hist(%u,lo,hi)", s->cf.nbins, s->cf.nbins);
  if (rc == 0 && parse_axis(p->axis, &s->cf.axis) < 0)
    rc = sl_stage_errorf(st, "axis='%s': expected none or an integer between %d and %d",
                         p->axis, -SL_MAX_DIMS, SL_MAX_DIMS - 1);
  s->cf.ddof = (unsigned)p->ddof;
  if (rc == 0 && pthread_mutex_init(&s->mu, NULL)) rc = sl_stage_errorf(st, "out of memory");
  if (rc < 0) {
    free(s);
    return rc;
  }
  *state = s;
  return 0;
}

/* Forgets a run (the stage may run again). Lock held. */
static void reset_run(red_state *s) {
  sl__rtree_clear(&s->tree);
  s->have_shape = false;
  s->opened = s->finished = 0;
  s->merge_rc = 0;
}

static void red_destroy(void *state) {
  red_state *s = state;
  if (!s) return;
  reset_run(s);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

static int red_open(sl_worker *w, void **local) {
  red_state *s = sl_worker_shared(w);
  red_local *l = calloc(1, sizeof *l);
  if (!l) return SL_ENOMEM;
  *local = l;
  lock(s);
  s->opened++;
  s->live++;
  unlock(s);
  return 0;
}

static void red_close(sl_worker *w) {
  red_state *s = sl_worker_shared(w);
  red_local *l = sl_worker_local(w);
  lock(s);
  if (--s->live == 0) reset_run(s);
  unlock(s);
  sl__rscratch_free(&l->scratch);
  free(l);
}

/* ---- process ------------------------------------------------------------ */

/* Checks that the descriptor is sane and its elements lie inside the
 * payload. */
static int check_chunk(sl_worker *w, const sl_payload *pl) {
  const sl_array_desc *a = &pl->u.array;
  if (pl->kind != SL_KIND_ARRAY)
    return sl_worker_errorf(w, "expected an array, got %s", sl_kind_name(pl->kind));
  size_t es = sl_dtype_size(a->dtype);
  if (a->dtype < SL_DT_BOOL || a->dtype > SL_DT_F64 || es == 0)
    return sl_worker_errorf(w, "array of type %s cannot be reduced", sl_dtype_name(a->dtype));
  if (a->ndim > SL_MAX_DIMS) return sl_worker_errorf(w, "malformed array: %u axes", a->ndim);
  uint64_t n = 1, end = es;
  for (uint32_t d = 0; d < a->ndim; d++) {
    if (a->origin[d] > a->whole[d] || a->shape[d] > a->whole[d] - a->origin[d])
      return sl_worker_errorf(w, "malformed array: axis %u: chunk [%" PRIu64 ", +%" PRIu64
                              ") outside the whole (%" PRIu64 ")", d, a->origin[d],
                              a->shape[d], a->whole[d]);
    if (a->strides[d] < 0)
      return sl_worker_errorf(w, "arrays with negative strides are not supported");
    n *= a->shape[d];
    if (a->shape[d] && (uint64_t)a->strides[d] > (UINT64_MAX - end) / a->shape[d])
      return sl_worker_errorf(w, "malformed array: strides overflow");
    if (a->shape[d]) end += (a->shape[d] - 1) * (uint64_t)a->strides[d];
  }
  if (n && (!pl->data || end > pl->size))
    return sl_worker_errorf(w, "malformed array: elements reach byte %" PRIu64
                            " of a %zu-byte payload", end, pl->size);
  return 0;
}

/* The first chunk fixes dtype and whole shape; later ones must match. */
static int check_shape(sl_worker *w, red_state *s, const sl_array_desc *a) {
  int rc = 0;
  lock(s);
  if (!s->have_shape) {
    int64_t ax = s->cf.axis;
    if (ax != SL__RAXIS_NONE && ax < 0) ax += a->ndim;
    if (s->cf.axis != SL__RAXIS_NONE && (ax < 0 || ax >= (int64_t)a->ndim)) {
      unlock(s);
      return sl_worker_errorf(w, "axis=%" PRId64 " but the array has %u axes",
                              s->cf.axis, a->ndim);
    }
    s->axis = s->cf.axis == SL__RAXIS_NONE ? -1 : (int)ax;
    s->have_shape = true;
    s->dtype = a->dtype;
    s->ndim = a->ndim;
    memcpy(s->whole, a->whole, sizeof s->whole);
  } else if (a->dtype != s->dtype || a->ndim != s->ndim ||
             memcmp(a->whole, s->whole, a->ndim * sizeof a->whole[0]) != 0) {
    rc = sl_worker_errorf(w, "this chunk is a %s array of %u axes, unlike the first "
                          "chunk (%s, %u axes, or another whole shape)",
                          sl_dtype_name(a->dtype), a->ndim, sl_dtype_name(s->dtype), s->ndim);
  }
  unlock(s);
  return rc;
}

static int red_process(sl_worker *w, sl_item *in, sl_item **out) {
  red_state *s = sl_worker_shared(w);
  red_local *l = sl_worker_local(w);
  *out = NULL;
  int rc = check_chunk(w, &in->payload);
  const sl_array_desc *a = &in->payload.u.array;
  if (rc == 0) rc = check_shape(w, s, a);
  if (rc < 0) return rc;
  sl__rpart *p = malloc(sizeof *p);
  if (!p) return SL_ENOMEM;
  uint32_t bnd;
  uint64_t bo[SL_MAX_DIMS], bs[SL_MAX_DIMS];
  sl__rchunk_box(a, s->axis, &bnd, bo, bs);
  rc = sl__rpart_init(p, &s->cf, a->dtype, bnd, bo, bs);
  if (rc == 0) rc = sl__rchunk_fold(p, a, in->payload.data, s->axis, &l->scratch);
  if (rc < 0) {
    sl__rpart_free(p);
    free(p);
    if (rc == SL_ELIMIT)
      return sl_worker_errorf(w, "the result along axis=%d would exceed 1 GiB", s->axis);
    return rc;
  }
  if (sl_worker_ranks(w) > 1 && sl_worker_rank(w) > 0) {
    /* Distributed: rank 0 files it in its tree (red_receive). */
    void *bytes = NULL;
    size_t len = 0;
    rc = sl__rpart_pack(p, &bytes, &len);
    sl__rpart_free(p);
    free(p);
    int sent = rc < 0 ? rc : sl_worker_send_partial(w, in->seq, bytes, len);
    free(bytes);
    if (sent < 0)
      return sl_worker_errorf(w, "sending the partial result to rank 0: %s",
                              sl_strerror(sent));
    return 0;
  }
  lock(s);
  rc = sl__rtree_add_node(&s->tree, 0, in->seq, p);
  unlock(s);
  if (rc == SL_EEXIST)
    return sl_worker_errorf(w, "chunk seq %" PRIu64 " arrived twice", in->seq);
  if (rc == SL_ELIMIT)
    return sl_worker_errorf(w, "the result along axis=%d would exceed 1 GiB", s->axis);
  return rc;
}

/* Rank 0 of a distributed run: files another rank's chunk partial. */
static int red_receive(void *state, uint64_t seq, const void *data, size_t len) {
  red_state *s = state;
  sl__rpart *p = malloc(sizeof *p);
  if (!p) return SL_ENOMEM;
  int rc = sl__rpart_unpack(data, len, p);
  if (rc < 0) {
    free(p);
    return rc;
  }
  lock(s);
  rc = sl__rtree_add_node(&s->tree, 0, seq, p);
  unlock(s);
  return rc;
}

/* ---- finish: the result table -------------------------------------------- */

static int red_finish(sl_worker *w) {
  red_state *s = sl_worker_shared(w);
  lock(s);
  bool last = ++s->finished == s->opened;
  sl__rpart *root = NULL;
  int rc = last ? sl__rtree_finish(&s->tree, &root) : 0;
  unlock(s);
  if (!last || sl_worker_rank(w) > 0) { /* rank 0 publishes */
    if (root) sl__rpart_free(root);
    free(root);
    return 0;
  }
  if (rc < 0) return sl_worker_errorf(w, "merging partial results: %s", sl_strerror(rc));
  if (!root) return sl_worker_errorf(w, "no input array");
  uint64_t total = 1;
  for (uint32_t d = 0; d < s->ndim; d++) total *= s->whole[d];
  sl_item *res = NULL;
  if (root->elems != total)
    rc = sl_worker_errorf(w, "no result: the chunks held %" PRIu64 " of the array's %" PRIu64
                          " elements (a chunk failed upstream, or chunks overlap)",
                          root->elems, total);
  else
    rc = sl__reduce_table(w, &s->cf, root, s->axis, s->ndim, s->whole, &res);
  sl__rpart_free(root);
  free(root);
  if (rc < 0) return rc;
  return sl_worker_emit(w, res);
}

static const sl_param_def reduce_params_table[] = {
    {"ops", SL_PARAM_STRING, offsetof(reduce_params, ops), "count,sum,mean,std,min,max",
     0, 0, NULL,
     "comma-separated: count, sum, mean, var, std, min, max, argmin, argmax, "
     "hist(bins,lo,hi)"},
    {"axis", SL_PARAM_STRING, offsetof(reduce_params, axis), "none", 0, 0, NULL,
     "none: over the whole array; k (or -1 for the last): along axis k"},
    {"ddof", SL_PARAM_INT, offsetof(reduce_params, ddof), "0", 0, 1000, NULL,
     "var/std divide by n - ddof (numpy's default 0; pandas uses 1)"},
    SL_PARAM_END,
};

const sl_stage_def sl__stage_reduce = {
    .name = "reduce",
    .summary = "deterministic statistics of an array (sum, mean, std, min, max, hist)",
    .help =
        "Consumes ARRAY chunks (npy.read, raw.read, h5.read, map) and emits one\n"
        "TABLE item (seq 0, named \"result\"); see docs/arrays.md.\n"
        "ops= (output columns in the order written):\n"
        "  count         elements (NaN included), int64\n"
        "  sum           float input: float64 (float32 is summed in float64);\n"
        "                integer/bool input: exact, int64 (an error if it does\n"
        "                not fit)\n"
        "  mean var std  float64; var/std divide by n - ddof (ddof=0 as numpy)\n"
        "  min max       the input's type (bool, int64, uint64 or float64)\n"
        "  argmin argmax first occurrence, as numpy: a flat C-order index into\n"
        "                the whole array, or with axis= the index along axis\n"
        "  hist(b,lo,hi) numpy.histogram: b equal bins over [lo, hi], the last\n"
        "                bin closed, values outside and NaN ignored; adds the\n"
        "                columns bin_lo, bin_hi, hist and one row per bin (the\n"
        "                other columns are filled on each cell's first bin row\n"
        "                and null on the others)\n"
        "NaN, as numpy: sum/mean/var/std become NaN; min/max are NaN and\n"
        "argmin/argmax point at the first NaN. Over no elements: count 0, sum 0,\n"
        "the others null. With axis=k: one row per index of the other axes, in\n"
        "C order, led by columns i<d> holding that index.\n"
        "Determinism: each chunk is folded alone in a fixed order; partials are\n"
        "merged in a binary tree keyed by the chunk's seq (Chan's formula for\n"
        "var/std), so results are bit-identical for any thread count and\n"
        "completion order. A result needs every element: if a chunk failed\n"
        "upstream the stage reports the missing count instead of a result.\n"
        "Example: npy.read file=x.npy ! reduce ops=mean,std,hist(10,0,1) ! "
        "json.write file=s.json",
    .exec = SL_EXEC_CPU,
    .in_kind = SL_KIND_ARRAY,
    .out_kind = SL_KIND_TABLE,
    .params = reduce_params_table,
    .params_size = sizeof(reduce_params),
    .create = red_create,
    .destroy = red_destroy,
    .open = red_open,
    .process = red_process,
    .receive = red_receive,
    .finish = red_finish,
    .close = red_close,
};
