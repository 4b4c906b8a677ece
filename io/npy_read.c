/*
 * npy_read.c -- `npy.read`, a source streaming a NumPy .npy file (format
 * versions 1.0, 2.0 and 3.0) as ARRAY chunks of whole rows (npy_array.c).
 *
 * The header is a Python dict literal. It is parsed strictly, not
 * evaluated: exactly the keys 'descr' (a string: structured dtypes are
 * refused), 'fortran_order' (True/False) and 'shape' (a tuple of
 * non-negative integers), each once, in any order, with an optional
 * trailing comma, then only blanks up to the declared header length. Every
 * error names the file and the byte offset of the problem in the file.
 * The header length field is checked against the file size (and capped)
 * before the header is read, and the shape against the size of the data
 * before any chunk is allocated, so a file declaring a huge shape costs
 * nothing.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io_internal.h"

#define MAX_HEADER ((uint64_t)1 << 20) /* numpy itself writes < 10 kB */

typedef struct npr_params {
  const char *file;
  uint64_t block;
  const char *dtype;
} npr_params;

typedef struct hparse {
  const char *s; /* header text */
  size_t n, at;
  uint64_t base; /* file offset of s[0] */
  char err[160];
} hparse;

static bool herr(hparse *h, const char *msg) {
  snprintf(h->err, sizeof h->err, "%s", msg);
  return false;
}

static void blanks(hparse *h) {
  while (h->at < h->n && (h->s[h->at] == ' ' || h->s[h->at] == '\t' ||
                          h->s[h->at] == '\n' || h->s[h->at] == '\r'))
    h->at++;
}

static bool expect(hparse *h, char c) {
  blanks(h);
  if (h->at >= h->n || h->s[h->at] != c) {
    char m[40];
    snprintf(m, sizeof m, "expected '%c'", c);
    return herr(h, m);
  }
  h->at++;
  return true;
}

/* A Python string literal in ' or " without escapes (numpy never writes
 * them for these keys and values). */
static bool string_lit(hparse *h, char *out, size_t cap) {
  blanks(h);
  if (h->at >= h->n || (h->s[h->at] != '\'' && h->s[h->at] != '"'))
    return herr(h, "expected a quoted string");
  char q = h->s[h->at++];
  size_t k = 0;
  while (h->at < h->n && h->s[h->at] != q) {
    if (h->s[h->at] == '\\') return herr(h, "escapes in strings are not supported");
    if (k + 1 >= cap) return herr(h, "string too long");
    out[k++] = h->s[h->at++];
  }
  if (h->at >= h->n) return herr(h, "unterminated string");
  h->at++;
  out[k] = '\0';
  return true;
}

static bool shape_lit(hparse *h, sl__npy_layout *L) {
  if (!expect(h, '(')) return false;
  L->ndim = 0;
  for (;;) {
    blanks(h);
    if (h->at < h->n && h->s[h->at] == ')') break;
    if (h->at >= h->n || h->s[h->at] < '0' || h->s[h->at] > '9')
      return herr(h, "expected a non-negative integer in the shape");
    uint64_t v = 0;
    while (h->at < h->n && h->s[h->at] >= '0' && h->s[h->at] <= '9') {
      unsigned dg = (unsigned)(h->s[h->at++] - '0');
      if (v > (UINT64_MAX - dg) / 10) return herr(h, "shape value out of range");
      v = v * 10 + dg;
    }
    if (h->at < h->n && h->s[h->at] == 'L') h->at++; /* Python 2 longs */
    if (L->ndim == SL_MAX_DIMS) return herr(h, "more than 8 axes");
    L->shape[L->ndim++] = v;
    blanks(h);
    if (h->at < h->n && h->s[h->at] == ',') {
      h->at++;
      continue;
    }
    if (h->at < h->n && h->s[h->at] == ')') {
      if (L->ndim == 1) return herr(h, "a 1-tuple needs a trailing comma: (n,)");
      break;
    }
    return herr(h, "expected ',' or ')' in the shape");
  }
  h->at++;
  return true;
}

/* Parses the dict into L. On failure h->err says why at h->at. */
static bool header_dict(hparse *h, sl__npy_layout *L, bool *fortran, char *descr,
                        size_t dcap) {
  bool seen[3] = {false, false, false};
  if (!expect(h, '{')) return false;
  for (;;) {
    blanks(h);
    if (h->at < h->n && h->s[h->at] == '}') break;
    size_t kat = h->at;
    char key[32];
    if (!string_lit(h, key, sizeof key)) return false;
    int k = strcmp(key, "descr") == 0 ? 0 : strcmp(key, "fortran_order") == 0 ? 1
          : strcmp(key, "shape") == 0 ? 2 : -1;
    if (k < 0 || seen[k]) {
      h->at = kat;
      return herr(h, k < 0 ? "unknown key (expected 'descr', 'fortran_order', 'shape')"
                           : "key listed twice");
    }
    seen[k] = true;
    if (!expect(h, ':')) return false;
    blanks(h);
    if (k == 0) {
      if (h->at < h->n && h->s[h->at] == '[')
        return herr(h, "structured dtypes (a list descr) are not supported");
      if (!string_lit(h, descr, dcap)) return false;
    } else if (k == 1) {
      if (h->n - h->at >= 4 && memcmp(h->s + h->at, "True", 4) == 0) *fortran = true, h->at += 4;
      else if (h->n - h->at >= 5 && memcmp(h->s + h->at, "False", 5) == 0) *fortran = false, h->at += 5;
      else return herr(h, "expected True or False");
    } else if (!shape_lit(h, L)) {
      return false;
    }
    blanks(h);
    if (h->at < h->n && h->s[h->at] == ',') {
      h->at++;
      continue;
    }
    if (h->at < h->n && h->s[h->at] == '}') break;
    return herr(h, "expected ',' or '}'");
  }
  h->at++;
  if (!seen[0] || !seen[1] || !seen[2])
    return herr(h, !seen[0] ? "missing key 'descr'" : !seen[1] ? "missing key 'fortran_order'"
                                                                : "missing key 'shape'");
  blanks(h);
  if (h->at != h->n) return herr(h, "unexpected text after the dict");
  return true;
}

/* Reads and parses the header of R's file into R->L. */
static int read_header(sl_worker *w, sl__npy_reader *R, uint64_t size) {
  unsigned char pre[12];
  const char *f = R->shown;
  if (size < 10) return sl_worker_errorf(w, "%s: not a .npy file (%" PRIu64 " bytes)", f, size);
  if (pread(R->fd, pre, size < 12 ? 10 : 12, 0) < (size < 12 ? 10 : 12))
    return sl_worker_errorf(w, "%s: cannot read the header", f);
  if (memcmp(pre, "\x93NUMPY", 6) != 0)
    return sl_worker_errorf(w, "%s: not a .npy file (byte 0: wrong magic; expected "
                            "\\x93NUMPY)", f);
  if (pre[6] < 1 || pre[6] > 3 || pre[7] != 0)
    return sl_worker_errorf(w, "%s: byte 6: unsupported .npy format version %u.%u "
                            "(1.0, 2.0 and 3.0 are read)", f, pre[6], pre[7]);
  uint64_t hl, start = pre[6] == 1 ? 10 : 12;
  if (pre[6] == 1) hl = (uint64_t)pre[8] | (uint64_t)pre[9] << 8;
  else if (size < 12) return sl_worker_errorf(w, "%s: truncated header", f);
  else hl = (uint64_t)pre[8] | (uint64_t)pre[9] << 8 | (uint64_t)pre[10] << 16 |
            (uint64_t)pre[11] << 24;
  if (hl > MAX_HEADER || hl > size - start)
    return sl_worker_errorf(w, "%s: byte 8: header length %" PRIu64 " %s (the file has %"
                            PRIu64 " bytes)", f, hl,
                            hl > MAX_HEADER ? "exceeds the 1 MiB limit" : "runs past the end",
                            size);
  char *text = malloc(hl ? (size_t)hl : 1);
  if (!text) return SL_ENOMEM;
  int rc = 0;
  if (pread(R->fd, text, (size_t)hl, (off_t)start) != (ssize_t)hl)
    rc = sl_worker_errorf(w, "%s: cannot read the %" PRIu64 "-byte header", f, hl);
  hparse h = {text, (size_t)hl, 0, start, ""};
  bool fortran = false;
  char descr[32];
  if (rc == 0 && !header_dict(&h, &R->L, &fortran, descr, sizeof descr))
    rc = sl_worker_errorf(w, "%s: malformed header at byte %" PRIu64 " (column %zu of the "
                          "header dict): %s", f, start + h.at, h.at + 1, h.err);
  if (rc == 0 && sl__npy_dtype_parse(descr, &R->L.dtype, &R->L.swap) < 0)
    rc = sl_worker_errorf(w, "%s: unsupported dtype '%s' (bool, i1..i8, u1..u8, f4, f8 in "
                          "either byte order)", f, descr);
  if (rc == 0 && fortran && R->L.ndim > 1)
    rc = sl_worker_errorf(w, "%s: fortran_order is True: Fortran-ordered arrays are not "
                          "supported (save np.ascontiguousarray(a))", f);
  R->L.offset = start + hl;
  free(text);
  return rc;
}

static int npr_open(sl_worker *w, void **local) {
  const npr_params *p = sl_worker_params(w);
  sl__npy_reader *R = calloc(1, sizeof *R);
  if (!R) return SL_ENOMEM;
  R->fd = -1;
  R->block = p->block;
  *local = R;
  return 0;
}

static int npr_produce(sl_worker *w, sl_item **out) {
  const npr_params *p = sl_worker_params(w);
  sl__npy_reader *R = sl_worker_local(w);
  *out = NULL;
  if (!R->started) {
    uint64_t size = 0;
    bool conv = false;
    int rc = sl__npy_reader_open(w, R, p->file, &size);
    if (rc == 0) rc = read_header(w, R, size);
    R->out = R->L.dtype;
    if (rc == 0 && p->dtype[0] && sl__npy_dtype_parse(p->dtype, &R->out, &conv) < 0)
      rc = SL_EINVAL; /* checked in create() */
    if (rc == 0) rc = sl__npy_reader_start(w, R, size);
    if (rc < 0) {
      R->started = true;
      R->pos = R->elems = 0;
      R->seq = 1; /* nothing more */
      return rc;
    }
  }
  return sl__npy_reader_next(w, R, out);
}

static void npr_close(sl_worker *w) {
  sl__npy_reader *R = sl_worker_local(w);
  if (!R) return;
  sl__npy_reader_close(R);
  free(R);
}

static int npr_create(sl_stage *st, void **state) {
  const npr_params *p = sl_stage_params(st);
  *state = NULL;
  sl_dtype t;
  bool swap;
  if (p->dtype[0] && sl__npy_dtype_parse(p->dtype, &t, &swap) < 0)
    return sl_stage_errorf(st, "dtype='%s': expected bool, int8..int64, uint8..uint64, "
                           "float32, float64 (or i1, u2, f4, ...)", p->dtype);
  if (p->dtype[0] && swap)
    return sl_stage_errorf(st, "dtype='%s': items are always in native byte order", p->dtype);
  return sl__npy_check_file(st, p->file);
}

static uint64_t npr_item_bytes(const sl_stage *st) {
  const npr_params *p = sl_stage_params(st);
  return p->block;
}

static const sl_param_def npr_params_table[] = {
    {"file", SL_PARAM_STRING, offsetof(npr_params, file), NULL, 0, 0, NULL,
     "the .npy file"},
    {"block", SL_PARAM_SIZE, offsetof(npr_params, block), "16MiB", 4096,
     1073741824.0, NULL, "bytes per chunk (whole rows; see help)"},
    {"dtype", SL_PARAM_STRING, offsetof(npr_params, dtype), "", 0, 0, NULL,
     "convert elements to this type on read (e.g. float64); empty: keep"},
    SL_PARAM_END,
};

const sl_stage_def sl__stage_npy_read = {
    .name = "npy.read",
    .summary = "stream a NumPy .npy array as chunks of whole rows",
    .help =
        "Reads file= (.npy format 1.0, 2.0 or 3.0; C order; dtypes bool, i1..i8,\n"
        "u1..u8, f4, f8 in either byte order, converted to native, or to\n"
        "dtype= when given: any type to float, integer to integer wrapping as\n"
        "numpy's astype) and emits ARRAY items of at most block= bytes: whole\n"
        "rows along axis 0, or, when one row is larger than a block, pieces of\n"
        "a row along the first axis whose sub-rows fit (see docs/arrays.md).\n"
        "Each item carries its shape, its origin in the whole array and the\n"
        "whole shape; names are <file>#<n>. The header is parsed strictly;\n"
        "errors name the file and the byte: wrong magic, unknown version,\n"
        "malformed dict, structured or unsupported dtype, fortran_order True,\n"
        "a shape larger than the file (truncated: both sizes given) or\n"
        "smaller (trailing bytes). An array without elements gives one empty\n"
        "item, so downstream still sees its shape.\n"
        "Example: npy.read file=x.npy ! reduce ops=sum,mean ! json.write file=s.json",
    .exec = SL_EXEC_IO,
    .in_kind = SL_KIND_NONE,
    .out_kind = SL_KIND_ARRAY,
    .flags = SL_STAGE_SOURCE,
    .params = npr_params_table,
    .params_size = sizeof(npr_params),
    .create = npr_create,
    .open = npr_open,
    .produce = npr_produce,
    .close = npr_close,
    .item_bytes = npr_item_bytes,
};
