/*
 * npy_array.c -- what npy.read, raw.read and npy.write share: element type
 * names ("<f8", "float64", "|b1"), byte-order conversion, and the chunked
 * reader that streams an array stored C-ordered in a file as ARRAY items.
 *
 * Chunking. A chunk is a box that is contiguous in the file: whole rows
 * along axis 0 when one row fits in block= bytes, else the first axis k
 * whose sub-rows (the elements of one index of axes 0..k) fit; the chunk
 * then holds as many whole sub-rows along axis k as fit, within one index
 * of the axes before k. So chunks never exceed block= bytes (beyond one
 * element) and every chunk is one pread straight into its arena block.
 * Non-native byte order is swapped in place; dtype= conversion reads into a
 * per-reader buffer first. The file's size is checked against the declared
 * shape before anything is allocated from the shape, and read() hitting
 * the end early (the file shrank) is an error naming both sizes.
 *
 * A source has one worker: the reader state is used by one thread.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io_internal.h"

/* ---- element types ------------------------------------------------------ */

static const struct {
  const char *code; /* kind letter + size, as in numpy's descr */
  const char *name;
  sl_dtype t;
} dtypes[] = {
    {"b1", "bool", SL_DT_BOOL},    {"i1", "int8", SL_DT_I8},
    {"u1", "uint8", SL_DT_U8},     {"i2", "int16", SL_DT_I16},
    {"u2", "uint16", SL_DT_U16},   {"i4", "int32", SL_DT_I32},
    {"u4", "uint32", SL_DT_U32},   {"i8", "int64", SL_DT_I64},
    {"u8", "uint64", SL_DT_U64},   {"f4", "float32", SL_DT_F32},
    {"f8", "float64", SL_DT_F64},
};

static bool host_big_endian(void) {
  const uint16_t one = 1;
  unsigned char b;
  memcpy(&b, &one, 1);
  return b == 0;
}

int sl__npy_dtype_parse(const char *text, sl_dtype *t, bool *swap) {
  char order = '=';
  const char *p = text;
  if (*p == '<' || *p == '>' || *p == '|' || *p == '=') order = *p++;
  for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++) {
    if (strcmp(p, dtypes[i].code) != 0 && strcmp(p, dtypes[i].name) != 0) continue;
    size_t size = sl_dtype_size(dtypes[i].t);
    if (order == '|' && size != 1) return SL_EINVAL; /* '|' only for bytes */
    *t = dtypes[i].t;
    bool big = order == '>' || (order == '=' && host_big_endian());
    *swap = size > 1 && big != host_big_endian();
    return 0;
  }
  return SL_EINVAL;
}

const char *sl__npy_descr(sl_dtype t, char *buf, size_t len) {
  for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
    if (dtypes[i].t == t) {
      char order = sl_dtype_size(t) == 1 ? '|' : host_big_endian() ? '>' : '<';
      snprintf(buf, len, "%c%s", order, dtypes[i].code);
      return buf;
    }
  snprintf(buf, len, "?");
  return buf;
}

/* ---- conversion --------------------------------------------------------- */

static void swap_bytes(unsigned char *p, size_t n, size_t es) {
  for (size_t i = 0; i < n; i++, p += es)
    for (size_t a = 0, b = es - 1; a < b; a++, b--) {
      unsigned char x = p[a];
      p[a] = p[b];
      p[b] = x;
    }
}

static bool is_float(sl_dtype t) { return t == SL_DT_F32 || t == SL_DT_F64; }

bool sl__npy_can_convert(sl_dtype from, sl_dtype to) {
  return from == to || is_float(to) || !is_float(from);
}

/* Element i of src (type st, native order) as double / as integer bits. */
static double get_f(const unsigned char *s, sl_dtype st) {
  switch (st) {
  case SL_DT_F32: { float v; memcpy(&v, s, 4); return v; }
  case SL_DT_F64: { double v; memcpy(&v, s, 8); return v; }
  case SL_DT_BOOL: return *s != 0;
  case SL_DT_I8: return (int8_t)*s;
  case SL_DT_U8: return *s;
  case SL_DT_I16: { int16_t v; memcpy(&v, s, 2); return v; }
  case SL_DT_U16: { uint16_t v; memcpy(&v, s, 2); return v; }
  case SL_DT_I32: { int32_t v; memcpy(&v, s, 4); return v; }
  case SL_DT_U32: { uint32_t v; memcpy(&v, s, 4); return v; }
  case SL_DT_I64: { int64_t v; memcpy(&v, s, 8); return (double)v; }
  default: { uint64_t v; memcpy(&v, s, 8); return (double)v; }
  }
}

static uint64_t get_bits(const unsigned char *s, sl_dtype st) {
  switch (st) {
  case SL_DT_BOOL: return *s != 0;
  case SL_DT_I8: return (uint64_t)(int64_t)(int8_t)*s;
  case SL_DT_U8: return *s;
  case SL_DT_I16: { int16_t v; memcpy(&v, s, 2); return (uint64_t)(int64_t)v; }
  case SL_DT_U16: { uint16_t v; memcpy(&v, s, 2); return v; }
  case SL_DT_I32: { int32_t v; memcpy(&v, s, 4); return (uint64_t)(int64_t)v; }
  case SL_DT_U32: { uint32_t v; memcpy(&v, s, 4); return v; }
  default: { uint64_t v; memcpy(&v, s, 8); return v; }
  }
}

void sl__npy_convert(void *dst, sl_dtype dt, const void *src, sl_dtype st,
                     bool swap, size_t n) {
  size_t ss = sl_dtype_size(st), ds = sl_dtype_size(dt);
  unsigned char *s = (unsigned char *)src, *d = dst;
  if (swap) swap_bytes(s, n, ss);
  if (st == dt) {
    if (dst != src) memcpy(dst, src, n * ss);
    return;
  }
  for (size_t i = 0; i < n; i++, s += ss, d += ds) {
    if (dt == SL_DT_F64) {
      double v = get_f(s, st);
      memcpy(d, &v, 8);
    } else if (dt == SL_DT_F32) {
      float v = (float)get_f(s, st);
      memcpy(d, &v, 4);
    } else if (dt == SL_DT_BOOL) {
      *d = get_bits(s, st) != 0;
    } else { /* integer to integer: wraps, as numpy's astype */
      uint64_t v = get_bits(s, st);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
      memcpy(d, (unsigned char *)&v + 8 - ds, ds);
#else
      memcpy(d, &v, ds);
#endif
    }
  }
}

/* ---- the chunked reader -------------------------------------------------- */

int sl__npy_shape_bytes(const sl__npy_layout *L, uint64_t *elems, uint64_t *bytes) {
  uint64_t n = 1;
  for (uint32_t d = 0; d < L->ndim; d++) {
    if (L->shape[d] && n > UINT64_MAX / L->shape[d]) return SL_ERANGE;
    n *= L->shape[d];
  }
  size_t es = sl_dtype_size(L->dtype);
  if (n > UINT64_MAX / es) return SL_ERANGE;
  *elems = n;
  *bytes = n * es;
  return 0;
}

const char *sl__npy_shape_text(const uint64_t *shape, uint32_t ndim, char *buf,
                               size_t len) {
  size_t at = (size_t)snprintf(buf, len, "(");
  for (uint32_t d = 0; d < ndim && at < len; d++)
    at += (size_t)snprintf(buf + at, len - at, "%s%" PRIu64, d ? ", " : "", shape[d]);
  if (at < len) snprintf(buf + at, len - at, ndim == 1 ? ",)" : ")");
  return buf;
}

int sl__npy_reader_start(sl_worker *w, sl__npy_reader *R, uint64_t file_size) {
  const sl__npy_layout *L = &R->L;
  uint64_t elems, bytes;
  char sh[256], a[40], b[40];
  sl__npy_shape_text(L->shape, L->ndim, sh, sizeof sh);
  if (sl__npy_shape_bytes(L, &elems, &bytes) < 0 || L->offset > file_size ||
      bytes > file_size - L->offset) {
    if (sl__npy_shape_bytes(L, &elems, &bytes) < 0)
      return sl_worker_errorf(w, "%s: shape %s is too large (more than 2^64 bytes)",
                              R->shown, sh);
    return sl_worker_errorf(w, "%s: truncated: shape %s of %s needs %" PRIu64
                            " bytes of data after the %" PRIu64 "-byte header, the file "
                            "has %" PRIu64 " (%s)", R->shown, sh, sl_dtype_name(L->dtype),
                            bytes, L->offset,
                            file_size > L->offset ? file_size - L->offset : 0,
                            sl__io_format_size(file_size, a, sizeof a));
  }
  if (bytes < file_size - L->offset)
    return sl_worker_errorf(w, "%s: %" PRIu64 " bytes after the array data (shape %s "
                            "of %s needs %s): not an array of this shape", R->shown,
                            file_size - L->offset - bytes, sh, sl_dtype_name(L->dtype),
                            sl__io_format_size(bytes, b, sizeof b));
  if (!sl__npy_can_convert(L->dtype, R->out))
    return sl_worker_errorf(w, "%s: cannot convert %s to %s on read (float to integer "
                            "needs a rounding rule: use map)", R->shown,
                            sl_dtype_name(L->dtype), sl_dtype_name(R->out));
  /* Split axis k: the first whose sub-rows fit in a block. */
  size_t es = sl_dtype_size(R->out);
  uint64_t inner = elems;
  R->k = 0;
  for (uint32_t d = 0; d < L->ndim; d++) {
    inner = 1;
    for (uint32_t e = d + 1; e < L->ndim; e++) inner *= L->shape[e];
    R->k = d;
    if (inner * es <= R->block) break;
  }
  R->inner = L->ndim ? inner : 1;
  R->per = R->inner == 0 || R->inner * es > R->block ? 1 : R->block / (R->inner * es);
  R->elems = elems;
  R->pos = 0;
  memset(R->idx, 0, sizeof R->idx);
  R->started = true;
  return 0;
}

/* pread of exactly n bytes at off. @return 0, SL_ECANCELED, or described. */
static int read_at(sl_worker *w, sl__npy_reader *R, void *dst, size_t n, uint64_t off) {
  size_t done = 0;
  while (done < n) {
    if (sl_worker_canceled(w)) return SL_ECANCELED;
    size_t want = n - done < ((size_t)8 << 20) ? n - done : ((size_t)8 << 20);
    ssize_t got = pread(R->fd, (char *)dst + done, want, (off_t)(off + done));
    if (got < 0 && errno == EINTR) continue;
    char eb[128];
    if (got < 0)
      return sl_worker_errorf(w, "%s: read: %s", R->shown, sl__io_strerror(errno, eb, sizeof eb));
    if (got == 0)
      return sl_worker_errorf(w, "%s: truncated while reading: expected %zu bytes at "
                              "offset %" PRIu64 ", the file ends at %" PRIu64, R->shown,
                              n, off, off + done);
    done += (size_t)got;
  }
  return 0;
}

/* Fills the item's descriptor for the chunk at R->idx of `rows` sub-rows. */
static void describe(const sl__npy_reader *R, sl_array_desc *a, uint64_t rows) {
  const sl__npy_layout *L = &R->L;
  memset(a, 0, sizeof *a);
  a->dtype = R->out;
  a->ndim = L->ndim;
  int64_t st = (int64_t)sl_dtype_size(R->out);
  for (uint32_t d = L->ndim; d-- > 0;) {
    a->whole[d] = L->shape[d];
    a->origin[d] = d <= R->k ? R->idx[d] : 0;
    a->shape[d] = d < R->k ? 1 : d == R->k ? rows : L->shape[d];
    a->strides[d] = st;
    st *= (int64_t)a->shape[d];
  }
}

int sl__npy_reader_next(sl_worker *w, sl__npy_reader *R, sl_item **out) {
  const sl__npy_layout *L = &R->L;
  *out = NULL;
  bool empty = R->elems == 0;
  if (R->pos >= R->elems && !(empty && R->seq == 0)) return SL_DONE;
  uint64_t rows = 0;
  if (!empty) {
    uint64_t left = L->ndim ? L->shape[R->k] - R->idx[R->k] : 1;
    rows = R->per < left ? R->per : left;
  }
  uint64_t n = empty ? 0 : rows * R->inner;
  size_t ses = sl_dtype_size(L->dtype), des = sl_dtype_size(R->out);
  char name[320];
  snprintf(name, sizeof name, "%s#%" PRIu64, R->base, R->seq + 1);
  sl_item *it = sl_item_create(R->seq, name);
  if (!it) return SL_ENOMEM;
  it->payload.kind = SL_KIND_ARRAY;
  if (n) {
    sl_block *b;
    int rc = sl_worker_alloc(w, (size_t)(n * des), &b);
    if (rc < 0) {
      sl_item_destroy(it);
      return rc == SL_ECANCELED ? rc
           : sl_worker_errorf(w, "%s: cannot allocate a %" PRIu64 "-byte chunk: %s",
                              R->shown, n * des, sl_strerror(rc));
    }
    bool direct = L->dtype == R->out;
    if (!direct && R->tmpcap < n * ses) {
      free(R->tmp);
      R->tmpcap = 0;
      if (!(R->tmp = malloc((size_t)(n * ses)))) rc = SL_ENOMEM;
      else R->tmpcap = (size_t)(n * ses);
    }
    void *dst = direct ? sl_block_data(b) : R->tmp;
    if (rc == 0) rc = read_at(w, R, dst, (size_t)(n * ses), L->offset + R->pos * ses);
    if (rc < 0) {
      sl_block_release(b);
      sl_item_destroy(it);
      return rc;
    }
    sl__npy_convert(sl_block_data(b), R->out, dst, L->dtype, L->swap, (size_t)n);
    sl_item_set_block(it, SL_KIND_ARRAY, b, 0, (size_t)(n * des));
  }
  describe(R, &it->payload.u.array, rows);
  it->total_hint = 0;
  R->seq++;
  R->pos += n;
  if (!empty && L->ndim) { /* next position: along k, then the axes before */
    R->idx[R->k] += rows;
    for (uint32_t d = R->k + 1; d-- > 0 && d > 0 && R->idx[d] >= L->shape[d];) {
      R->idx[d] = 0;
      R->idx[d - 1]++;
    }
  }
  *out = it;
  return 0;
}

int sl__npy_reader_open(sl_worker *w, sl__npy_reader *R, const char *path,
                        uint64_t *size) {
  char eb[128];
  R->fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (R->fd < 0)
    return sl_worker_errorf(w, "%s: %s", path, sl__io_strerror(errno, eb, sizeof eb));
  struct stat sb;
  if (fstat(R->fd, &sb) < 0)
    return sl_worker_errorf(w, "%s: %s", path, sl__io_strerror(errno, eb, sizeof eb));
  if (!S_ISREG(sb.st_mode)) return sl_worker_errorf(w, "%s: not a regular file", path);
  *size = (uint64_t)sb.st_size;
  const char *slash = strrchr(path, '/');
  R->shown = path;
  R->base = slash ? slash + 1 : path;
  return 0;
}

void sl__npy_reader_close(sl__npy_reader *R) {
  if (R->fd >= 0) close(R->fd);
  R->fd = -1;
  free(R->tmp);
  R->tmp = NULL;
  R->tmpcap = 0;
}

int sl__npy_check_file(sl_stage *st, const char *path) {
  struct stat sb;
  char eb[128];
  if (!path[0]) return sl_stage_errorf(st, "file= must not be empty");
  if (stat(path, &sb) < 0)
    return sl_stage_errorf(st, "file '%s': %s", path, sl__io_strerror(errno, eb, sizeof eb));
  if (S_ISDIR(sb.st_mode)) return sl_stage_errorf(st, "file '%s' is a directory", path);
  if (access(path, R_OK) < 0)
    return sl_stage_errorf(st, "file '%s': %s", path, sl__io_strerror(errno, eb, sizeof eb));
  return 0;
}
