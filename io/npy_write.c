/*
 * npy_write.c -- `npy.write file=`, a sink writing ARRAY chunks (in any
 * order, each placed by its origin in the whole shape) or TABLE items (a
 * reduction's result) as one NumPy .npy file, atomically.
 *
 * ARRAY input. The first chunk fixes dtype and whole shape: a temporary
 * file next to the destination is created, the header written and the file
 * sized to its final length (ftruncate); every chunk is then written with
 * pwrite at its own offsets, outside any lock, by however many io workers
 * run, in whatever order chunks arrive. Elements written are counted; when
 * the last worker finishes and every element of the whole array was
 * written, the temporary is renamed over the destination. Otherwise (a
 * chunk failed, the run stopped) the temporary is removed: the output is
 * complete or absent.
 *
 * TABLE input: a 2-D float64 array, rows x numeric columns (bool, integer
 * and float columns in table order, string columns skipped, nulls NaN,
 * integers converted to float64), rows of all items in seq order. Column
 * names are not kept: .npy has no place for them (docs/arrays.md).
 *
 * Lock order: `mu` is a leaf. The worker count comes from
 * sl_worker_count(): every io worker opens, finishes (unless the run
 * stops) and closes exactly once per run.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io_internal.h"

typedef struct nw_params {
  const char *file;
} nw_params;

typedef struct ttab {
  uint64_t seq, nrows;
  double *v; /* nrows x ncols */
} ttab;

typedef struct nw_shared {
  pthread_mutex_t mu;
  /* Guarded by mu. */
  sl_kind kind; /* of the first item; NONE before */
  int fd;
  char *tmp;
  sl_dtype dtype;
  uint32_t ndim;
  uint64_t whole[SL_MAX_DIMS];
  uint64_t header, total, written;
  ttab *tabs;
  size_t ntabs, captabs;
  uint32_t tcols;
  unsigned finished, closed;
} nw_shared;

static atomic_uint_fast64_t tmp_counter;

static void lock(nw_shared *S) {
  if (pthread_mutex_lock(&S->mu)) abort();
}
static void unlock(nw_shared *S) {
  if (pthread_mutex_unlock(&S->mu)) abort();
}

/* Forgets the run and removes the temporary if any. Lock held. */
static void reset(nw_shared *S) {
  if (S->fd >= 0) close(S->fd);
  if (S->tmp) unlink(S->tmp);
  free(S->tmp);
  for (size_t i = 0; i < S->ntabs; i++) free(S->tabs[i].v);
  free(S->tabs);
  S->fd = -1;
  S->tmp = NULL;
  S->tabs = NULL;
  S->ntabs = S->captabs = 0;
  S->kind = SL_KIND_NONE;
  S->written = S->total = 0;
  S->finished = S->closed = 0;
}

/* The .npy header (version 1.0, or 2.0 when longer than 65535 bytes) for
 * `descr` and `shape`, padded so the data starts at a multiple of 64. */
static char *npy_header(const char *descr, const uint64_t *shape, uint32_t ndim,
                        size_t *len) {
  char sh[256], dict[400];
  sl__npy_shape_text(shape, ndim, sh, sizeof sh);
  int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, "
                   "'shape': %s, }", descr, sh);
  size_t pre = (size_t)n + 1 > 65535 - 10 ? 12 : 10;
  size_t total = (pre + (size_t)n + 1 + 63) / 64 * 64;
  char *h = malloc(total);
  if (!h) return NULL;
  size_t hl = total - pre;
  memcpy(h, "\x93NUMPY", 6);
  h[6] = pre == 10 ? 1 : 2;
  h[7] = 0;
  for (size_t i = 0; i < pre - 8; i++) h[8 + i] = (char)(hl >> (8 * i));
  memcpy(h + pre, dict, (size_t)n);
  memset(h + pre + n, ' ', total - pre - (size_t)n - 1);
  h[total - 1] = '\n';
  *len = total;
  return h;
}

static int write_all(int fd, const void *p, size_t n, uint64_t off) {
  size_t done = 0;
  while (done < n) {
    ssize_t k = pwrite(fd, (const char *)p + done, n - done, (off_t)(off + done));
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) return -errno;
    done += (size_t)k;
  }
  return 0;
}

/* Creates the temporary next to the destination. Lock held. */
static int make_tmp(sl_worker *w, nw_shared *S, const char *path) {
  const char *slash = strrchr(path, '/');
  uint64_t r = atomic_fetch_add(&tmp_counter, 1);
  S->tmp = sl__io_asprintf("%.*s.%s.sluice-tmp-%ld-%" PRIu64,
                           slash ? (int)(slash - path + 1) : 0, path,
                           slash ? slash + 1 : path, (long)getpid(), r);
  if (!S->tmp) return SL_ENOMEM;
  S->fd = open(S->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (S->fd < 0) {
    char eb[128];
    int e = errno;
    free(S->tmp);
    S->tmp = NULL;
    return sl_worker_errorf(w, "cannot create a temporary next to %s: %s", path,
                            sl__io_strerror(e, eb, sizeof eb));
  }
  return 0;
}

static int sys_fail(sl_worker *w, const char *what, const char *path, int err) {
  char eb[128];
  return sl_worker_errorf(w, "%s %s: %s", what, path, sl__io_strerror(-err, eb, sizeof eb));
}

/* First ARRAY chunk: header, size, temporary. Lock held. */
static int array_start(sl_worker *w, nw_shared *S, const char *path,
                       const sl_array_desc *a) {
  char descr[8];
  int rc = make_tmp(w, S, path);
  if (rc < 0) return rc;
  S->kind = SL_KIND_ARRAY;
  S->dtype = a->dtype;
  S->ndim = a->ndim;
  memcpy(S->whole, a->whole, sizeof S->whole);
  sl__npy_layout L = {.dtype = a->dtype, .ndim = a->ndim};
  memcpy(L.shape, a->whole, sizeof L.shape);
  uint64_t bytes;
  if (sl__npy_shape_bytes(&L, &S->total, &bytes) < 0)
    return sl_worker_errorf(w, "array too large");
  size_t hl;
  char *h = npy_header(sl__npy_descr(a->dtype, descr, sizeof descr), a->whole, a->ndim, &hl);
  if (!h) return SL_ENOMEM;
  S->header = hl;
  rc = write_all(S->fd, h, hl, 0);
  free(h);
  if (rc == 0 && ftruncate(S->fd, (off_t)(hl + bytes)) < 0) rc = -errno;
  if (rc < 0) return sys_fail(w, "writing", S->tmp, rc);
  return 0;
}

/* Checks the chunk against the first and that it lies inside its payload. */
static int array_check(sl_worker *w, const nw_shared *S, const sl_payload *pl) {
  const sl_array_desc *a = &pl->u.array;
  size_t es = sl_dtype_size(a->dtype);
  if (es == 0 || a->ndim > SL_MAX_DIMS)
    return sl_worker_errorf(w, "array of type %s cannot be written", sl_dtype_name(a->dtype));
  if (S->kind == SL_KIND_ARRAY &&
      (a->dtype != S->dtype || a->ndim != S->ndim ||
       memcmp(a->whole, S->whole, a->ndim * sizeof a->whole[0]) != 0))
    return sl_worker_errorf(w, "chunk of %s with %u axes does not match the first chunk "
                            "(%s, %u axes, same whole shape)", sl_dtype_name(a->dtype),
                            a->ndim, sl_dtype_name(S->dtype), S->ndim);
  uint64_t end = es, n = 1;
  for (uint32_t d = 0; d < a->ndim; d++) {
    if (a->origin[d] > a->whole[d] || a->shape[d] > a->whole[d] - a->origin[d] ||
        a->strides[d] < 0)
      return sl_worker_errorf(w, "malformed array chunk (axis %u)", d);
    n *= a->shape[d];
    if (a->shape[d]) end += (a->shape[d] - 1) * (uint64_t)a->strides[d];
  }
  if (n && (!pl->data || end > pl->size))
    return sl_worker_errorf(w, "malformed array chunk: elements outside the payload");
  return 0;
}

/* Writes the chunk: runs contiguous in the file (and in memory when the
 * chunk is C-contiguous; otherwise each row is gathered first). */
static int array_write(sl_worker *w, int fd, uint64_t header, const sl_array_desc *a,
                       const char *data, const char *shown) {
  size_t es = sl_dtype_size(a->dtype);
  uint32_t nd = a->ndim;
  uint64_t n = 1;
  for (uint32_t d = 0; d < nd; d++) n *= a->shape[d];
  if (n == 0) return 0;
  if (nd == 0) {
    int rc = write_all(fd, data, es, header);
    return rc < 0 ? sys_fail(w, "writing", shown, rc) : 0;
  }
  bool contig = true;
  int64_t want = (int64_t)es;
  for (uint32_t d = nd; d-- > 0; want *= (int64_t)a->shape[d])
    contig &= a->shape[d] == 1 || a->strides[d] == want;
  uint32_t s = nd - 1;
  while (contig && s > 0 && a->shape[s] == a->whole[s]) s--;
  uint64_t len = 1, wst[SL_MAX_DIMS];
  for (uint32_t d = s; d < nd; d++) len *= a->shape[d];
  wst[nd - 1] = 1;
  for (uint32_t d = nd - 1; d-- > 0;) wst[d] = wst[d + 1] * a->whole[d + 1];
  char *buf = contig ? NULL : malloc((size_t)(len * es));
  if (!contig && !buf) return SL_ENOMEM;
  uint64_t idx[SL_MAX_DIMS] = {0};
  int rc = 0;
  for (;;) {
    const char *src = data;
    uint64_t flat = 0;
    for (uint32_t d = 0; d < nd; d++) {
      src += (ptrdiff_t)idx[d] * a->strides[d];
      flat += (a->origin[d] + idx[d]) * wst[d];
    }
    if (!contig) {
      for (uint64_t j = 0; j < len; j++)
        memcpy(buf + j * es, src + (ptrdiff_t)j * a->strides[nd - 1], es);
      src = buf;
    }
    if ((rc = write_all(fd, src, (size_t)(len * es), header + flat * es)) < 0) break;
    if (s == 0) break;
    uint32_t d = s;
    while (d-- > 0 && ++idx[d] == a->shape[d]) idx[d] = 0;
    if (d == UINT32_MAX) break;
  }
  free(buf);
  return rc < 0 ? sys_fail(w, "writing", shown, rc) : 0;
}

static int array_item(sl_worker *w, nw_shared *S, const char *path, const sl_item *in) {
  const sl_array_desc *a = &in->payload.u.array;
  lock(S);
  int rc = S->kind == SL_KIND_TABLE ? sl_worker_errorf(w, "an array after tables")
                                    : array_check(w, S, &in->payload);
  if (rc == 0 && S->kind == SL_KIND_NONE) rc = array_start(w, S, path, a);
  int fd = S->fd;
  uint64_t header = S->header;
  unlock(S);
  if (rc < 0) return rc;
  if ((rc = array_write(w, fd, header, a, in->payload.data, path)) < 0) return rc;
  uint64_t n = 1;
  for (uint32_t d = 0; d < a->ndim; d++) n *= a->shape[d];
  lock(S);
  S->written += n;
  unlock(S);
  return 0;
}

/* ---- TABLE input ---------------------------------------------------------- */

static bool numeric(sl_dtype t) { return t != SL_DT_STRING && sl_dtype_size(t) > 0; }

static double cell_f64(const sl_payload *pl, const sl_column *c, uint64_t r) {
  const unsigned char *base = pl->data;
  if (c->valid_off != SIZE_MAX && !base[c->valid_off + r]) return NAN;
  sl_dtype t = c->dtype;
  size_t es = sl_dtype_size(t);
  double v;
  sl__npy_convert(&v, SL_DT_F64, base + c->data_off + r * es, t, false, 1);
  return v;
}

static int table_item(sl_worker *w, nw_shared *S, const sl_item *in) {
  const sl_payload *pl = &in->payload;
  const sl_table_desc *td = &pl->u.table;
  uint32_t nc = 0;
  for (uint32_t j = 0; j < td->ncols; j++) {
    const sl_column *c = &td->cols[j];
    if (!numeric(c->dtype)) continue;
    uint64_t need = td->nrows * sl_dtype_size(c->dtype);
    if (c->data_off > pl->size || need > pl->size - c->data_off ||
        (c->valid_off != SIZE_MAX && (c->valid_off > pl->size || td->nrows > pl->size - c->valid_off)))
      return sl_worker_errorf(w, "malformed table payload (column %s)", c->name);
    nc++;
  }
  if (nc == 0) return sl_worker_errorf(w, "the table has no numeric column to write");
  double *v = malloc((size_t)(td->nrows * nc + 1) * sizeof *v);
  if (!v) return SL_ENOMEM;
  for (uint64_t r = 0; r < td->nrows; r++)
    for (uint32_t j = 0, k = 0; j < td->ncols; j++)
      if (numeric(td->cols[j].dtype)) v[r * nc + k++] = cell_f64(pl, &td->cols[j], r);
  int rc = 0;
  lock(S);
  if (S->kind == SL_KIND_NONE) {
    S->kind = SL_KIND_TABLE;
    S->tcols = nc;
  }
  if (S->kind != SL_KIND_TABLE) rc = sl_worker_errorf(w, "a table after arrays");
  else if (nc != S->tcols)
    rc = sl_worker_errorf(w, "%u numeric columns, unlike the first table (%u)", nc, S->tcols);
  if (rc == 0 && S->ntabs == S->captabs) {
    size_t cap = S->captabs ? 2 * S->captabs : 8;
    ttab *t = realloc(S->tabs, cap * sizeof *t);
    if (!t) rc = SL_ENOMEM;
    else S->tabs = t, S->captabs = cap;
  }
  if (rc == 0) S->tabs[S->ntabs++] = (ttab){in->seq, td->nrows, v};
  unlock(S);
  if (rc < 0) free(v);
  return rc;
}

static int ttab_cmp(const void *a, const void *b) {
  const ttab *x = a, *y = b;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Writes the collected tables into a new temporary. Lock held. */
static int table_flush(sl_worker *w, nw_shared *S, const char *path) {
  qsort(S->tabs, S->ntabs, sizeof *S->tabs, ttab_cmp);
  uint64_t shape[2] = {0, S->tcols};
  for (size_t i = 0; i < S->ntabs; i++) shape[0] += S->tabs[i].nrows;
  char descr[8];
  size_t hl;
  char *h = npy_header(sl__npy_descr(SL_DT_F64, descr, sizeof descr), shape, 2, &hl);
  int rc = h ? make_tmp(w, S, path) : SL_ENOMEM;
  uint64_t off = hl;
  if (rc == 0) rc = write_all(S->fd, h, hl, 0);
  for (size_t i = 0; rc == 0 && i < S->ntabs; i++) {
    size_t n = (size_t)(S->tabs[i].nrows * S->tcols * 8);
    rc = write_all(S->fd, S->tabs[i].v, n, off);
    off += n;
  }
  free(h);
  if (rc < 0 && rc != SL_ESTAGE && rc != SL_ENOMEM) rc = sys_fail(w, "writing", S->tmp, rc);
  return rc;
}

/* ---- callbacks ------------------------------------------------------------ */

static int nw_process(sl_worker *w, sl_item *in, sl_item **out) {
  const nw_params *p = sl_worker_params(w);
  nw_shared *S = sl_worker_shared(w);
  *out = NULL;
  if (in->payload.kind == SL_KIND_ARRAY) return array_item(w, S, p->file, in);
  if (in->payload.kind == SL_KIND_TABLE) return table_item(w, S, in);
  return sl_worker_errorf(w, "expected an array or a table, got %s",
                          sl_kind_name(in->payload.kind));
}

static int nw_open(sl_worker *w, void **local) {
  *local = NULL;
  return sl__io_single_output_check(w);
}

static int nw_finish(sl_worker *w) {
  const nw_params *p = sl_worker_params(w);
  nw_shared *S = sl_worker_shared(w);
  int rc = 0;
  lock(S);
  if (++S->finished == sl_worker_count(w)) {
    if (S->kind == SL_KIND_NONE)
      rc = sl_worker_errorf(w, "no input: nothing written to %s", p->file);
    else if (S->kind == SL_KIND_ARRAY && S->written != S->total)
      rc = sl_worker_errorf(w, "%s not written: %" PRIu64 " of %" PRIu64 " elements "
                            "arrived (a chunk failed upstream?)", p->file, S->written, S->total);
    else if (S->kind == SL_KIND_TABLE)
      rc = table_flush(w, S, p->file);
    if (rc == 0 && close(S->fd) < 0) rc = sys_fail(w, "closing", S->tmp, -errno);
    S->fd = -1;
    if (rc == 0 && rename(S->tmp, p->file) < 0) rc = sys_fail(w, "renaming to", p->file, -errno);
    if (rc == 0) {
      free(S->tmp);
      S->tmp = NULL;
    }
  }
  unlock(S);
  return rc;
}

static void nw_close(sl_worker *w) {
  nw_shared *S = sl_worker_shared(w);
  lock(S);
  if (++S->closed == sl_worker_count(w)) reset(S);
  unlock(S);
}

static void nw_destroy(void *state) {
  nw_shared *S = state;
  if (!S) return;
  reset(S);
  pthread_mutex_destroy(&S->mu);
  free(S);
}

static int nw_create(sl_stage *st, void **state) {
  const nw_params *p = sl_stage_params(st);
  *state = NULL;
  if (!p->file[0]) return sl_stage_errorf(st, "file= must not be empty");
  const char *slash = strrchr(p->file, '/');
  if (slash && !slash[1]) return sl_stage_errorf(st, "file='%s' names a directory", p->file);
  nw_shared *S = calloc(1, sizeof *S);
  if (!S || pthread_mutex_init(&S->mu, NULL)) {
    free(S);
    return sl_stage_errorf(st, "out of memory");
  }
  S->fd = -1;
  *state = S;
  return 0;
}

static const sl_param_def nw_params_table[] = {
    {"file", SL_PARAM_STRING, offsetof(nw_params, file), NULL, 0, 0, NULL,
     "the output .npy file (replaced atomically when the run completes)"},
    SL_PARAM_END,
};

const sl_stage_def sl__stage_npy_write = {
    .name = "npy.write",
    .summary = "write ARRAY chunks (or a result TABLE) as one .npy file, atomically",
    .help =
        "ARRAY items: the first fixes dtype and whole shape; each chunk is\n"
        "written at its origin with pwrite, in any order, by any number of\n"
        "workers, into a temporary sized up front; when every element has\n"
        "been written the temporary is renamed to file=, otherwise removed.\n"
        "TABLE items (e.g. reduce's result): a 2-D float64 array, rows x\n"
        "numeric columns in table order (strings skipped, nulls NaN), rows of\n"
        "all items in seq order; column names are not kept (docs/arrays.md).\n"
        "Example: npy.read file=a.npy ! npy.write file=copy.npy",
    .exec = SL_EXEC_IO,
    .in_kind = SL_KIND_ANY,
    .out_kind = SL_KIND_NONE,
    .flags = SL_STAGE_SINK,
    .params = nw_params_table,
    .params_size = sizeof(nw_params),
    .create = nw_create,
    .destroy = nw_destroy,
    .open = nw_open,
    .process = nw_process,
    .finish = nw_finish,
    .close = nw_close,
};
