/*
 * csv_write.c -- `csv.write`, a sink writing TABLE items as one CSV file;
 * and what it shares with json.write (csv_internal.h): text buffers, number
 * formatting, reading table cells, and the ordered atomic output file.
 *
 * Ordered output file (sl__csv_out). Several io workers may receive items
 * at once, and items can miss (a chunk failed under --on-error=skip, a
 * filter dropped one), so waiting for "the next seq" could wait forever.
 * Instead each worker formats its item outside any lock (the expensive
 * part, in parallel), then under `mu` appends the text to a temporary file
 * next to the destination and records the extent (seq, offset, length).
 * When the last worker finishes, the file is already in seq order in the
 * common case; otherwise it is rewritten once in seq order from the
 * extents. The suffix is appended and the temporary renamed over the
 * destination, so the output is complete or absent: on a failed write,
 * a stopped run or a cancel, the temporary is removed (by the last
 * worker's close(), or at the latest by the stage's destroy()).
 *
 * Lock order: `mu` is a leaf. The worker count comes from
 * sl_worker_count(): every io worker opens, finishes (unless the run
 * stops) and closes exactly once per run.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "csv_internal.h"
#include "io_internal.h"

/* ====================================================================== */
/* text and numbers                                                        */

bool sl__csv_text_reserve(sl__csv_text *t, size_t more) {
  if (t->oom) return false;
  if (t->cap - t->len >= more) return true;
  size_t cap = t->cap ? t->cap : 4096;
  while (cap - t->len < more) cap *= 2;
  char *d = realloc(t->data, cap);
  if (!d) {
    t->oom = true;
    return false;
  }
  t->data = d;
  t->cap = cap;
  return true;
}

void sl__csv_text_put(sl__csv_text *t, const void *s, size_t n) {
  if (n && sl__csv_text_reserve(t, n)) {
    memcpy(t->data + t->len, s, n);
    t->len += n;
  }
}

void sl__csv_text_free(sl__csv_text *t) {
  free(t->data);
  memset(t, 0, sizeof *t);
}

size_t sl__csv_format_u64(uint64_t v, char *buf) {
  char tmp[24];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  for (size_t i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
  buf[n] = '\0';
  return n;
}

size_t sl__csv_format_i64(int64_t v, char *buf) {
  if (v >= 0) return sl__csv_format_u64((uint64_t)v, buf);
  buf[0] = '-';
  return 1 + sl__csv_format_u64(0 - (uint64_t)v, buf + 1);
}

size_t sl__csv_format_double(double v, char *buf) {
  if (isnan(v)) return (size_t)snprintf(buf, 32, "nan");
  if (isinf(v)) return (size_t)snprintf(buf, 32, v < 0 ? "-inf" : "inf");
  locale_t c = sl__csv_c_locale(), old = c ? uselocale(c) : (locale_t)0;
  int n = 0;
  for (int prec = 15; prec <= 17; prec++) {
    n = snprintf(buf, 32, "%.*g", prec, v);
    if (prec == 17 || strtod(buf, NULL) == v) break;
  }
  if (c) uselocale(old);
  return (size_t)n;
}

/* ====================================================================== */
/* table cells                                                             */

void sl__csv_cell_get(const sl_payload *pl, const sl_column *c, uint64_t r,
                      sl__csv_cell *out) {
  const unsigned char *base = pl->data;
  const unsigned char *d = base + c->data_off;
  memset(out, 0, sizeof *out);
  if (c->valid_off != SIZE_MAX && !base[c->valid_off + r]) return;
  switch (c->dtype) {
  case SL_DT_BOOL: out->kind = SL__CELL_BOOL; out->i = d[r] != 0; return;
  case SL_DT_I8: { int8_t v; memcpy(&v, d + r, 1); out->i = v; break; }
  case SL_DT_U8: out->i = d[r]; break;
  case SL_DT_I16: { int16_t v; memcpy(&v, d + 2 * r, 2); out->i = v; break; }
  case SL_DT_U16: { uint16_t v; memcpy(&v, d + 2 * r, 2); out->i = v; break; }
  case SL_DT_I32: { int32_t v; memcpy(&v, d + 4 * r, 4); out->i = v; break; }
  case SL_DT_U32: { uint32_t v; memcpy(&v, d + 4 * r, 4); out->i = v; break; }
  case SL_DT_I64: memcpy(&out->i, d + 8 * r, 8); break;
  case SL_DT_U64:
    out->kind = SL__CELL_UINT;
    memcpy(&out->u, d + 8 * r, 8);
    return;
  case SL_DT_F32: {
    float f;
    memcpy(&f, d + 4 * r, 4);
    out->kind = SL__CELL_FLOAT;
    out->f = f;
    return;
  }
  case SL_DT_F64:
    out->kind = SL__CELL_FLOAT;
    memcpy(&out->f, d + 8 * r, 8);
    return;
  case SL_DT_STRING: {
    uint64_t a, b;
    memcpy(&a, d + 8 * r, 8);
    memcpy(&b, d + 8 * (r + 1), 8);
    out->kind = SL__CELL_STR;
    out->s = (const char *)base + c->chars_off + a;
    out->n = (size_t)(b - a);
    return;
  }
  default: return; /* NONE: shown as null */
  }
  out->kind = SL__CELL_INT;
}

/* ====================================================================== */
/* ordered atomic output file                                              */

static atomic_uint_fast64_t tmp_counter;

void sl__csv_out_init(sl__csv_out *o, const char *path) {
  memset(o, 0, sizeof *o);
  pthread_mutex_init(&o->mu, NULL);
  o->path = path;
  o->fd = -1;
  o->in_order = true;
  o->first_sep = o->sep = o->end_empty = o->end = o->none = "";
}

/* Drops the temporary and everything recorded. Locked or single-threaded. */
static void out_reset(sl__csv_out *o) {
  if (o->fd >= 0) close(o->fd);
  if (o->tmp) unlink(o->tmp);
  free(o->tmp);
  free(o->prefix);
  free(o->ext);
  o->tmp = NULL;
  o->prefix = NULL;
  o->ext = NULL;
  o->fd = -1;
  o->size = o->prefix_len = o->next = o->cap = 0;
  o->in_order = true;
  o->any_text = o->broken = false;
  o->last_seq = 0;
  o->closed = o->finished = 0;
}

void sl__csv_out_destroy(sl__csv_out *o) {
  if (!o) return;
  out_reset(o);
  pthread_mutex_destroy(&o->mu);
}

int sl__csv_out_check(sl_stage *st, const char *path) {
  if (!path[0]) return sl_stage_errorf(st, "file= must not be empty");
  const char *slash = strrchr(path, '/');
  if (slash && !slash[1]) return sl_stage_errorf(st, "file='%s' names a directory", path);
  char *dir = slash ? sl__io_asprintf("%.*s", (int)(slash - path), path) : strdup(".");
  if (!dir) return sl_stage_errorf(st, "out of memory");
  struct stat sb;
  char eb[128];
  int err = stat(dir[0] ? dir : "/", &sb) < 0 ? errno : S_ISDIR(sb.st_mode) ? 0 : ENOTDIR;
  int rc = err ? sl_stage_errorf(st, "directory of file='%s': %s", path,
                                 sl__io_strerror(err, eb, sizeof eb))
               : 0;
  if (rc == 0 && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
    rc = sl_stage_errorf(st, "file='%s' is a directory", path);
  free(dir);
  return rc;
}

static uint64_t tmp_random(void) {
  uint64_t z = atomic_fetch_add_explicit(&tmp_counter, 1, memory_order_relaxed);
  z = z * UINT64_C(0x9E3779B97F4A7C15) ^ sl_now_ns() ^ (uint64_t)getpid() << 40;
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

static int out_sys_error(sl__csv_out *o, sl_worker *w, const char *what, int err) {
  char eb[128];
  return sl_worker_errorf(w, "%s (%s): '%s'", what,
                          sl__io_strerror(err, eb, sizeof eb), o->path);
}

/* Creates a temporary next to o->path: ".<base>.sluice-tmp-<pid>-<rand>".
 * @return the fd with *tmp malloc'd, or an error (described). */
static int temp_create(sl__csv_out *o, sl_worker *w, char **tmp) {
  const char *slash = strrchr(o->path, '/');
  int dlen = slash ? (int)(slash - o->path) + 1 : 0;
  for (int tries = 0; tries < 16; tries++) {
    *tmp = sl__io_asprintf("%.*s.%.150s.sluice-tmp-%ld-%016" PRIx64, dlen,
                           o->path, o->path + dlen, (long)getpid(), tmp_random());
    if (!*tmp) return SL_ENOMEM;
    int fd = open(*tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) return fd;
    int err = errno;
    free(*tmp);
    *tmp = NULL;
    if (err != EEXIST) return out_sys_error(o, w, "create temporary", err);
  }
  return sl_worker_errorf(w, "create temporary (no free name): '%s'", o->path);
}

static int write_all(sl__csv_out *o, sl_worker *w, int fd, const void *data,
                     size_t n) {
  const char *p = data;
  while (n) {
    ssize_t k = write(fd, p, n);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) return out_sys_error(o, w, "write", errno);
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

/* Creates the temporary with the first item's prefix. Locked. */
static int out_start(sl__csv_out *o, sl_worker *w, const char *prefix, size_t n) {
  int fd = temp_create(o, w, &o->tmp);
  if (fd < 0) return fd;
  o->fd = fd;
  if (!(o->prefix = malloc(n ? n : 1))) return SL_ENOMEM;
  if (n) memcpy(o->prefix, prefix, n);
  o->prefix_len = n;
  o->size = n;
  return write_all(o, w, fd, prefix, n);
}

static int add_extent(sl__csv_out *o, uint64_t seq, uint64_t off, uint64_t len) {
  if (o->next == o->cap) {
    size_t cap = o->cap ? 2 * o->cap : 64;
    sl__csv_extent *e = realloc(o->ext, cap * sizeof *e);
    if (!e) return SL_ENOMEM;
    o->ext = e;
    o->cap = cap;
  }
  if (o->next && seq < o->last_seq) o->in_order = false;
  o->last_seq = seq;
  o->ext[o->next++] = (sl__csv_extent){seq, off, len};
  return 0;
}

/* Locked part of sl__csv_out_write. */
static int out_append(sl__csv_out *o, sl_worker *w, uint64_t seq,
                      const char *prefix, size_t plen, const char *text,
                      size_t len) {
  if (o->broken)
    return sl_worker_errorf(w, "'%s': not written, an earlier write failed", o->path);
  int rc = 0;
  if (o->fd < 0) {
    rc = out_start(o, w, prefix, plen);
  } else if (plen != o->prefix_len || memcmp(prefix, o->prefix, plen) != 0) {
    return sl_worker_errorf(w, "'%s': this item's columns differ from the "
                               "first item's", o->path);
  }
  if (rc == 0 && len) {
    const char *sep = o->any_text ? o->sep : o->first_sep;
    size_t sl = strlen(sep);
    rc = write_all(o, w, o->fd, sep, sl);
    if (rc == 0) rc = write_all(o, w, o->fd, text, len);
    if (rc == 0) rc = add_extent(o, seq, o->size + sl, len);
    o->size += sl + len;
    o->any_text = true;
  }
  if (rc < 0) o->broken = true;
  return rc;
}

int sl__csv_out_write(sl__csv_out *o, sl_worker *w, uint64_t seq,
                      const char *prefix, size_t prefix_len, const char *text,
                      size_t len) {
  pthread_mutex_lock(&o->mu);
  int rc = out_append(o, w, seq, prefix, prefix_len, text, len);
  pthread_mutex_unlock(&o->mu);
  return rc;
}

static int cmp_extent(const void *a, const void *b) {
  const sl__csv_extent *x = a, *y = b;
  if (x->seq != y->seq) return x->seq < y->seq ? -1 : 1;
  return x->off < y->off ? -1 : x->off > y->off;
}

/* Copies n bytes at `off` of fd `from` to the end of `to`. */
static int copy_range(sl__csv_out *o, sl_worker *w, int from, uint64_t off,
                      uint64_t n, int to, char *buf, size_t cap) {
  while (n) {
    size_t want = n < cap ? (size_t)n : cap;
    ssize_t k = pread(from, buf, want, (off_t)off);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return out_sys_error(o, w, "read back", k < 0 ? errno : EIO);
    int rc = write_all(o, w, to, buf, (size_t)k);
    if (rc < 0) return rc;
    off += (uint64_t)k;
    n -= (uint64_t)k;
  }
  return 0;
}

/* Rewrites the temporary in seq order (items arrived out of order). */
static int out_reorder(sl__csv_out *o, sl_worker *w) {
  qsort(o->ext, o->next, sizeof *o->ext, cmp_extent);
  char *tmp2 = NULL;
  int fd2 = temp_create(o, w, &tmp2);
  if (fd2 < 0) return fd2;
  size_t cap = (size_t)1 << 20;
  char *buf = malloc(cap);
  int rc = buf ? write_all(o, w, fd2, o->prefix, o->prefix_len) : SL_ENOMEM;
  uint64_t size = o->prefix_len;
  for (size_t i = 0; rc == 0 && i < o->next; i++) {
    const char *sep = i ? o->sep : o->first_sep;
    rc = write_all(o, w, fd2, sep, strlen(sep));
    if (rc == 0) rc = copy_range(o, w, o->fd, o->ext[i].off, o->ext[i].len, fd2, buf, cap);
    size += strlen(sep) + o->ext[i].len;
  }
  free(buf);
  close(o->fd);
  unlink(o->tmp);
  free(o->tmp);
  o->fd = fd2; /* on failure the caller removes this one */
  o->tmp = tmp2;
  o->size = size;
  return rc;
}

/* Completes and renames the temporary. Locked. */
static int out_publish(sl__csv_out *o, sl_worker *w) {
  if (o->broken)
    return sl_worker_errorf(w, "'%s' not written: an earlier write failed", o->path);
  uint64_t lost = sl_worker_failed_items(w);
  if (lost) /* the file would silently lack their rows */
    return sl_worker_errorf(w, "'%s' not written: %llu item(s) failed upstream",
                            o->path, (unsigned long long)lost);
  int rc = 0;
  const char *end = o->any_text ? o->end : o->end_empty;
  if (o->fd < 0) { /* no item at all */
    rc = out_start(o, w, "", 0);
    end = o->none;
  }
  if (rc == 0 && !o->in_order) rc = out_reorder(o, w);
  if (rc == 0) rc = write_all(o, w, o->fd, end, strlen(end));
  if (rc == 0 && close(o->fd) < 0) rc = out_sys_error(o, w, "close", errno);
  if (rc == 0) o->fd = -1;
  if (rc == 0 && rename(o->tmp, o->path) < 0) rc = out_sys_error(o, w, "rename", errno);
  if (rc == 0) {
    free(o->tmp);
    o->tmp = NULL;
  }
  return rc;
}

int sl__csv_out_finish(sl__csv_out *o, sl_worker *w) {
  pthread_mutex_lock(&o->mu);
  int rc = 0;
  if (++o->finished == sl_worker_count(w)) {
    rc = out_publish(o, w);
    if (rc < 0) o->broken = true; /* close() removes the temporary */
  }
  pthread_mutex_unlock(&o->mu);
  return rc;
}

void sl__csv_out_close(sl__csv_out *o, sl_worker *w) {
  pthread_mutex_lock(&o->mu);
  if (++o->closed == sl_worker_count(w)) out_reset(o);
  pthread_mutex_unlock(&o->mu);
}

/* ====================================================================== */
/* csv.write                                                               */

typedef struct cw_params {
  const char *file;
  bool header;
  const char *delim;
} cw_params;

typedef struct cw_shared {
  sl__csv_out out;
  unsigned char delim;
} cw_shared;

typedef struct cw_local {
  sl__csv_text head, body;
} cw_local;

/* Appends s[0, n) as one CSV field: quoted when it holds the delimiter, a
 * quote, CR or LF, or is the empty string (unquoted empty means null). */
static void put_csv_field(sl__csv_text *t, const char *s, size_t n,
                          unsigned char delim) {
  bool q = n == 0;
  for (size_t i = 0; i < n && !q; i++) {
    unsigned char c = (unsigned char)s[i];
    q = c == delim || c == '"' || c == '\r' || c == '\n';
  }
  if (!q) {
    sl__csv_text_put(t, s, n);
    return;
  }
  sl__csv_text_putc(t, '"');
  for (const char *e = s + n; s < e;) {
    const char *qt = memchr(s, '"', (size_t)(e - s));
    size_t k = qt ? (size_t)(qt - s) + 1 : (size_t)(e - s);
    sl__csv_text_put(t, s, k);
    if (qt) sl__csv_text_putc(t, '"'); /* double it */
    s += k;
  }
  sl__csv_text_putc(t, '"');
}

static void put_csv_cell(sl__csv_text *t, const sl__csv_cell *c, unsigned char delim) {
  char num[40];
  size_t n = 0;
  switch (c->kind) {
  case SL__CELL_NULL: return;
  case SL__CELL_INT: n = sl__csv_format_i64(c->i, num); break;
  case SL__CELL_UINT: n = sl__csv_format_u64(c->u, num); break;
  case SL__CELL_FLOAT: n = sl__csv_format_double(c->f, num); break;
  case SL__CELL_BOOL: n = (size_t)snprintf(num, sizeof num, c->i ? "true" : "false"); break;
  case SL__CELL_STR: put_csv_field(t, c->s, c->n, delim); return;
  }
  sl__csv_text_put(t, num, n);
}

static void format_csv(cw_local *L, const sl_payload *pl, bool header,
                       unsigned char delim) {
  const sl_table_desc *td = &pl->u.table;
  L->head.len = L->body.len = 0;
  for (uint32_t j = 0; header && j < td->ncols; j++) {
    if (j) sl__csv_text_putc(&L->head, (char)delim);
    const char *nm = td->cols[j].name ? td->cols[j].name : "";
    put_csv_field(&L->head, nm, strlen(nm), delim);
  }
  if (header) sl__csv_text_putc(&L->head, '\n');
  for (uint64_t r = 0; r < td->nrows; r++) {
    for (uint32_t j = 0; j < td->ncols; j++) {
      if (j) sl__csv_text_putc(&L->body, (char)delim);
      sl__csv_cell c;
      sl__csv_cell_get(pl, &td->cols[j], r, &c);
      put_csv_cell(&L->body, &c, delim);
    }
    sl__csv_text_putc(&L->body, '\n');
  }
}

static int cw_process(sl_worker *w, sl_item *in, sl_item **out) {
  const cw_params *p = sl_worker_params(w);
  cw_shared *S = sl_worker_shared(w);
  cw_local *L = sl_worker_local(w);
  *out = NULL;
  int rc = sl__csv_table_check(&in->payload, w);
  if (rc < 0) return rc;
  format_csv(L, &in->payload, p->header, S->delim);
  if (L->head.oom || L->body.oom) {
    sl__csv_text_free(&L->head);
    sl__csv_text_free(&L->body);
    return sl_worker_errorf(w, "out of memory formatting %" PRIu64 " rows",
                            in->payload.u.table.nrows);
  }
  return sl__csv_out_write(&S->out, w, in->seq, L->head.data, L->head.len,
                           L->body.data, L->body.len);
}

static int cw_open(sl_worker *w, void **local) {
  int rc = sl__io_single_output_check(w);
  if (rc < 0) return rc;
  cw_local *L = calloc(1, sizeof *L);
  if (!L) return SL_ENOMEM;
  *local = L;
  return 0;
}

static int cw_finish(sl_worker *w) {
  cw_shared *S = sl_worker_shared(w);
  return sl__csv_out_finish(&S->out, w);
}

static void cw_close(sl_worker *w) {
  cw_shared *S = sl_worker_shared(w);
  cw_local *L = sl_worker_local(w);
  if (L) {
    sl__csv_text_free(&L->head);
    sl__csv_text_free(&L->body);
    free(L);
  }
  sl__csv_out_close(&S->out, w);
}

static void cw_destroy(void *state) {
  cw_shared *S = state;
  if (!S) return;
  sl__csv_out_destroy(&S->out);
  free(S);
}

/* A failed create() frees its state (the engine does not destroy it). */
static int cw_create(sl_stage *st, void **state) {
  const cw_params *p = sl_stage_params(st);
  cw_shared *S = calloc(1, sizeof *S);
  if (!S) return sl_stage_errorf(st, "out of memory");
  sl__csv_out_init(&S->out, p->file);
  sl__csv_dialect d = {',', '"', false};
  const char *why = sl__csv_dialect_parse(p->delim, "\"", false, &d);
  int rc = why ? sl_stage_errorf(st, "%s", why) : sl__csv_out_check(st, p->file);
  S->delim = d.delim;
  if (rc < 0) {
    cw_destroy(S);
    S = NULL;
  }
  *state = S;
  return rc;
}

static const sl_param_def cw_params_table[] = {
    {"file", SL_PARAM_STRING, offsetof(cw_params, file), NULL, 0, 0, NULL,
     "the output file (replaced atomically when the run completes)"},
    {"header", SL_PARAM_BOOL, offsetof(cw_params, header), "true", 0, 0, NULL,
     "write the column names as the first line"},
    {"delim", SL_PARAM_STRING, offsetof(cw_params, delim), ",", 0, 0, NULL,
     "field delimiter: one byte, or \\t / tab"},
    SL_PARAM_END,
};

const sl_stage_def sl__stage_csv_write = {
    .name = "csv.write",
    .summary = "write TABLE items as one CSV file, in item order, atomically",
    .help =
        "Writes the rows of every TABLE item (usually one result table) to\n"
        "file=, items in their source order, with RFC 4180 quoting: a field\n"
        "holding the delimiter, a quote, CR or LF is quoted and its quotes\n"
        "doubled; an empty string is written \"\" and a null as an empty\n"
        "field (csv.read/csv.parse read both back as they were). Floats use\n"
        "the shortest of %.15g/%.16g/%.17g that reads back exactly; ints are\n"
        "integers; bools true/false. Values are written as they are (no\n"
        "spreadsheet-formula escaping). Every item must have the same columns.\n"
        "The file is written to a temporary next to it and renamed when the\n"
        "run completes; a failed or stopped run leaves no file behind.\n"
        "Example: ... ! groupby keys=k aggs=count ! csv.write file=out.csv",
    .exec = SL_EXEC_IO,
    .in_kind = SL_KIND_TABLE,
    .out_kind = SL_KIND_NONE,
    .flags = SL_STAGE_SINK,
    .params = cw_params_table,
    .params_size = sizeof(cw_params),
    .create = cw_create,
    .destroy = cw_destroy,
    .open = cw_open,
    .process = cw_process,
    .finish = cw_finish,
    .close = cw_close,
};

/* ====================================================================== */
/* table validation                                                        */

/* A column's bytes [off, off + n) must lie inside the payload. */
static bool in_payload(const sl_payload *pl, size_t off, uint64_t n) {
  return off <= pl->size && n <= pl->size - off;
}

static bool column_ok(const sl_payload *pl, const sl_column *c, uint64_t rows) {
  size_t vs = sl_dtype_size(c->dtype);
  if (rows > SIZE_MAX / 8 - 1) return false;
  if (c->valid_off != SIZE_MAX && !in_payload(pl, c->valid_off, rows)) return false;
  if (c->dtype != SL_DT_STRING) return in_payload(pl, c->data_off, rows * vs);
  if (!in_payload(pl, c->data_off, (rows + 1) * 8)) return false;
  const unsigned char *d = (const unsigned char *)pl->data + c->data_off;
  uint64_t prev = 0;
  for (uint64_t r = 0; r <= rows; r++) {
    uint64_t o;
    memcpy(&o, d + 8 * r, 8);
    if (o < prev) return false;
    prev = o;
  }
  return in_payload(pl, c->chars_off, prev);
}

int sl__csv_table_check(const sl_payload *pl, sl_worker *w) {
  if (pl->kind != SL_KIND_TABLE)
    return sl_worker_errorf(w, "expected a table, got %s", sl_kind_name(pl->kind));
  const sl_table_desc *td = &pl->u.table;
  if (td->ncols && !td->cols) return sl_worker_errorf(w, "table without columns");
  for (uint32_t j = 0; j < td->ncols; j++)
    if (!column_ok(pl, &td->cols[j], td->nrows))
      return sl_worker_errorf(w, "column %u of the table lies outside its "
                                 "payload", (unsigned)j + 1);
  return 0;
}
