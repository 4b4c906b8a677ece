/*
 * raw_read.c -- `raw.read file= dtype= shape= [offset=] [layout=C]`, a
 * source streaming a headerless binary array (what ndarray.tofile() or a
 * C program's fwrite leaves) as ARRAY chunks, through the reader shared
 * with npy.read (npy_array.c).
 *
 * dtype= and shape= are checked when the pipeline is checked; the file's
 * size must then equal offset + the array's bytes exactly (one axis may be
 * -1: inferred from the size, which must divide evenly), so a wrong shape
 * or dtype is an error naming both sizes, never a silently misread array.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io_internal.h"

typedef struct rr_params {
  const char *file;
  const char *dtype;
  const char *shape;
  uint64_t offset;
  int order; /* 0 C, 1 F */
  uint64_t block;
  const char *out;
} rr_params;

typedef struct rr_shared {
  sl__npy_layout L; /* shape with -1 (infer) as UINT64_MAX */
  int infer;        /* axis to infer, -1 none */
  sl_dtype out;
} rr_shared;

/* "16384x8192", "16384,8192", "-1x8", "" (0-d). */
static int parse_shape(const char *text, sl__npy_layout *L, int *infer, char *why,
                       size_t wlen) {
  const char *p = text;
  L->ndim = 0;
  *infer = -1;
  while (*p == ' ') p++;
  if (!*p) return 0;
  for (;;) {
    if (L->ndim == SL_MAX_DIMS) {
      snprintf(why, wlen, "more than %d axes", SL_MAX_DIMS);
      return SL_EINVAL;
    }
    while (*p == ' ') p++;
    if (p[0] == '-' && p[1] == '1' && (p[2] == 'x' || p[2] == ',' || !p[2] || p[2] == ' ')) {
      if (*infer >= 0) {
        snprintf(why, wlen, "at most one axis may be -1");
        return SL_EINVAL;
      }
      *infer = (int)L->ndim;
      L->shape[L->ndim++] = UINT64_MAX;
      p += 2;
    } else {
      char *end;
      if (*p < '0' || *p > '9') {
        snprintf(why, wlen, "expected a size at position %zu", (size_t)(p - text) + 1);
        return SL_EINVAL;
      }
      errno = 0;
      unsigned long long v = strtoull(p, &end, 10);
      if (errno) {
        snprintf(why, wlen, "size out of range at position %zu", (size_t)(p - text) + 1);
        return SL_EINVAL;
      }
      L->shape[L->ndim++] = v;
      p = end;
    }
    while (*p == ' ') p++;
    if (!*p) return 0;
    if (*p != 'x' && *p != ',') {
      snprintf(why, wlen, "expected 'x' or ',' at position %zu", (size_t)(p - text) + 1);
      return SL_EINVAL;
    }
    p++;
  }
}

/* Fills the inferred axis from the data size; checks the size. */
static int fit_shape(sl_worker *w, const char *f, sl__npy_layout *L, int infer,
                     uint64_t size) {
  char sh[256];
  uint64_t data = size > L->offset ? size - L->offset : 0;
  if (L->offset > size)
    return sl_worker_errorf(w, "%s: offset=%" PRIu64 " is past the end of the %" PRIu64
                            "-byte file", f, L->offset, size);
  if (infer < 0) return 0;
  uint64_t rest = sl_dtype_size(L->dtype);
  for (uint32_t d = 0; d < L->ndim; d++)
    if ((int)d != infer) {
      if (L->shape[d] && rest > UINT64_MAX / L->shape[d])
        return sl_worker_errorf(w, "%s: shape too large", f);
      rest *= L->shape[d];
    }
  if (rest == 0 || data % rest) {
    L->shape[infer] = 0;
    sl__npy_shape_text(L->shape, L->ndim, sh, sizeof sh);
    return sl_worker_errorf(w, "%s: %" PRIu64 " bytes of data are not a whole number of "
                            "%" PRIu64 "-byte slices for axis %d = -1 (shape %s with "
                            "axis %d inferred, %s)", f, data, rest, infer, sh, infer,
                            sl_dtype_name(L->dtype));
  }
  L->shape[infer] = data / rest;
  return 0;
}

typedef struct rr_local {
  sl__npy_reader R;
} rr_local;

static int rr_open(sl_worker *w, void **local) {
  const rr_params *p = sl_worker_params(w);
  const rr_shared *S = sl_worker_shared(w);
  rr_local *l = calloc(1, sizeof *l);
  if (!l) return SL_ENOMEM;
  l->R.fd = -1;
  l->R.block = p->block;
  l->R.L = S->L;
  l->R.out = S->out;
  *local = l;
  return 0;
}

static int rr_produce(sl_worker *w, sl_item **out) {
  const rr_params *p = sl_worker_params(w);
  const rr_shared *S = sl_worker_shared(w);
  sl__npy_reader *R = &((rr_local *)sl_worker_local(w))->R;
  *out = NULL;
  if (!R->started) {
    uint64_t size = 0;
    int rc = sl__npy_reader_open(w, R, p->file, &size);
    if (rc == 0) rc = fit_shape(w, p->file, &R->L, S->infer, size);
    if (rc == 0) rc = sl__npy_reader_start(w, R, size);
    if (rc < 0) {
      R->started = true;
      R->pos = R->elems = 0;
      R->seq = 1;
      return rc;
    }
  }
  return sl__npy_reader_next(w, R, out);
}

static void rr_close(sl_worker *w) {
  rr_local *l = sl_worker_local(w);
  if (!l) return;
  sl__npy_reader_close(&l->R);
  free(l);
}

static void rr_destroy(void *state) { free(state); }

static int rr_check(sl_stage *st, const rr_params *p, rr_shared *S) {
  char why[128];
  if (sl__npy_dtype_parse(p->dtype, &S->L.dtype, &S->L.swap) < 0)
    return sl_stage_errorf(st, "dtype='%s': expected e.g. <f8, >i4, |u1, float64, int16, "
                           "bool", p->dtype);
  if (parse_shape(p->shape, &S->L, &S->infer, why, sizeof why) < 0)
    return sl_stage_errorf(st, "shape='%s': %s (e.g. 16384x8192, 16384,8192 or -1x8)",
                           p->shape, why);
  if (p->order == 1)
    return sl_stage_errorf(st, "layout=F: Fortran-ordered raw arrays are not supported "
                           "(give the reversed shape and transpose downstream)");
  S->L.offset = p->offset;
  S->out = S->L.dtype;
  bool swap;
  if (p->out[0] && sl__npy_dtype_parse(p->out, &S->out, &swap) < 0)
    return sl_stage_errorf(st, "to='%s': not a type", p->out);
  if (!sl__npy_can_convert(S->L.dtype, S->out))
    return sl_stage_errorf(st, "to=%s: cannot convert %s to an integer type on read",
                           p->out, sl_dtype_name(S->L.dtype));
  int rc = sl__npy_check_file(st, p->file);
  if (rc < 0 || S->infer >= 0) return rc;
  /* Known shape: check the size now, so the mistake shows before the run. */
  struct stat sb;
  uint64_t elems, bytes;
  char sh[256];
  sl__npy_shape_text(S->L.shape, S->L.ndim, sh, sizeof sh);
  if (sl__npy_shape_bytes(&S->L, &elems, &bytes) < 0)
    return sl_stage_errorf(st, "shape %s is too large", sh);
  if (stat(p->file, &sb) == 0 && S_ISREG(sb.st_mode) &&
      ((uint64_t)sb.st_size < p->offset || (uint64_t)sb.st_size - p->offset != bytes))
    return sl_stage_errorf(st, "file '%s' has %" PRIu64 " bytes%s, but shape %s of %s "
                           "needs %" PRIu64, p->file, (uint64_t)sb.st_size,
                           p->offset ? " (before offset=)" : "", sh,
                           sl_dtype_name(S->L.dtype), bytes);
  return 0;
}

static int rr_create(sl_stage *st, void **state) {
  const rr_params *p = sl_stage_params(st);
  rr_shared *S = calloc(1, sizeof *S);
  if (!S) return sl_stage_errorf(st, "out of memory");
  int rc = rr_check(st, p, S);
  if (rc < 0) {
    free(S);
    S = NULL;
  }
  *state = S;
  return rc;
}

static uint64_t rr_item_bytes(const sl_stage *st) {
  const rr_params *p = sl_stage_params(st);
  return p->block;
}

static const sl_param_def rr_params_table[] = {
    {"file", SL_PARAM_STRING, offsetof(rr_params, file), NULL, 0, 0, NULL,
     "the binary file"},
    {"dtype", SL_PARAM_STRING, offsetof(rr_params, dtype), NULL, 0, 0, NULL,
     "element type as stored: <f8, >i4, |u1, float64 (native order), ..."},
    {"shape", SL_PARAM_STRING, offsetof(rr_params, shape), NULL, 0, 0, NULL,
     "e.g. 16384x8192 or 16384,8192; one axis may be -1 (inferred)"},
    {"offset", SL_PARAM_SIZE, offsetof(rr_params, offset), "0", 0, 0, NULL,
     "bytes to skip before the first element"},
    {"layout", SL_PARAM_CHOICE, offsetof(rr_params, order), "C", 0, 0, "C|F",
     "element order in the file (only C is supported; named layout= since order= is the engine's output-order parameter)"},
    {"block", SL_PARAM_SIZE, offsetof(rr_params, block), "16MiB", 4096,
     1073741824.0, NULL, "bytes per chunk (whole rows, as npy.read)"},
    {"to", SL_PARAM_STRING, offsetof(rr_params, out), "", 0, 0, NULL,
     "convert elements to this type on read; empty: keep"},
    SL_PARAM_END,
};

const sl_stage_def sl__stage_raw_read = {
    .name = "raw.read",
    .summary = "stream a headerless binary array (dtype=, shape=) as chunks",
    .help =
        "Reads file= as a C-ordered array of dtype= (byte order '<', '>', '|',\n"
        "or native when omitted) and shape= from byte offset=, and emits ARRAY\n"
        "items of at most block= bytes exactly as npy.read does. The file's\n"
        "size must be offset + the array's bytes: otherwise an error gives both\n"
        "(checked before the run when the shape is fully given). One axis of\n"
        "shape= may be -1, inferred from the size. to= converts on read (any\n"
        "type to float; integer to integer).\n"
        "Example: raw.read file=t.bin dtype=<f4 shape=-1x1024 ! reduce ops=max",
    .exec = SL_EXEC_IO,
    .in_kind = SL_KIND_NONE,
    .out_kind = SL_KIND_ARRAY,
    .flags = SL_STAGE_SOURCE,
    .params = rr_params_table,
    .params_size = sizeof(rr_params),
    .create = rr_create,
    .destroy = rr_destroy,
    .open = rr_open,
    .produce = rr_produce,
    .close = rr_close,
    .item_bytes = rr_item_bytes,
};
