/*
 * csv_internal.h -- what the CSV files of io/ share: the RFC 4180
 * tokenizer, the value parsers, type inference, the chunk-boundary search
 * of csv.read, and the ordered output file behind csv.write / json.write.
 *
 * Tokenizer. A scanner walks a buffer of whole records (a csv.read chunk)
 * field by field. It finds the next "special" byte (delimiter, quote, LF,
 * CR) from a 64-bit mask per 64-byte window (four SSE2 compares per 16
 * bytes), so a field costs a count-trailing-zeros, not a byte loop.
 * Invariant: `mask` holds exactly the specials of the window at or after
 * the scan position that have not been consumed yet; every special the
 * scanner moves past is consumed, so the lowest bit is always the next
 * special. Everything is inline so that a scanner that is a local
 * variable of the caller's loop lives in registers.
 *
 * Dialect (docs/csv.md): RFC 4180 with LF or CRLF line ends; a quoted
 * field may hold delimiters, line breaks and doubled quotes; text after a
 * closing quote is an error; a CR that is not followed by LF is an error
 * (CR-only line ends are not supported), except as the very last byte of
 * the input; blank lines are skipped. A quote inside an unquoted field is
 * an error unless `lenient` (then it is kept literally).
 *
 * Everything here is stateless or per-object: thread-safe as long as each
 * scanner / buffer is used by one thread at a time.
 */
#ifndef SLUICE_CSV_INTERNAL_H
#define SLUICE_CSV_INTERNAL_H

#include <locale.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "sluice.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#define SL__CSV_SSE2 1
#endif

#if defined(__GNUC__)
#define SL__CSV_HOT __attribute__((always_inline)) /* inline in the row loop */
#else
#define SL__CSV_HOT
#endif

/* ---------------------------------------------------------------------- */
/* dialect and tokenizer                                                   */

typedef struct sl__csv_dialect {
  unsigned char delim, quote;
  bool lenient; /* keep quotes inside unquoted fields literally */
} sl__csv_dialect;

/* Results of sl__csv_next_field(). */
enum {
  SL__CSV_FIELD = 0,   /* a field; more follow in this record */
  SL__CSV_LAST = 1,    /* the record's last field (line end or end of data) */
  SL__CSV_EQUOTE = -1, /* quote inside an unquoted field (strict) */
  SL__CSV_EAFTER = -2, /* text after a closing quote */
  SL__CSV_EOPEN = -3,  /* a quoted field is not closed before the end */
  SL__CSV_ECR = -4     /* CR not followed by LF */
};

/* @return a static description of a negative tokenizer result. */
const char *sl__csv_error_text(int code);

typedef struct sl__csv_scan {
#ifdef SL__CSV_SSE2
  __m128i vd, vq, vn, vr;
#endif
  const unsigned char *p;   /* start of the next field */
  const unsigned char *end;
  const unsigned char *win; /* window that `mask` describes (64 bytes) */
  uint64_t mask;            /* unconsumed specials in the window */
  uint64_t line;            /* line number at p */
  const unsigned char *err; /* where the last error was found */
  unsigned char delim, quote;
  bool lenient;
} sl__csv_scan;

/* One field. Content excludes the enclosing quotes; doubled quotes inside
 * are still doubled when `escaped` (see sl__csv_unescape). */
typedef struct sl__csv_field {
  const unsigned char *ptr;
  size_t len;
  uint64_t line; /* line where the field starts */
  bool quoted, escaped;
} sl__csv_field;

/* Mask of the specials among the 64 bytes at w (all readable). */
static inline uint64_t sl__csv_mask_full(const sl__csv_scan *s,
                                         const unsigned char *w) {
#ifdef SL__CSV_SSE2
  uint64_t m = 0;
  for (int k = 0; k < 4; k++) {
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(w + 16 * k));
    __m128i a = _mm_or_si128(_mm_cmpeq_epi8(x, s->vd), _mm_cmpeq_epi8(x, s->vq));
    __m128i b = _mm_or_si128(_mm_cmpeq_epi8(x, s->vn), _mm_cmpeq_epi8(x, s->vr));
    m |= (uint64_t)(uint32_t)_mm_movemask_epi8(_mm_or_si128(a, b)) << (16 * k);
  }
  return m;
#else
  uint64_t m = 0;
  for (int i = 0; i < 64; i++) {
    unsigned char c = w[i];
    m |= (uint64_t)(c == s->delim || c == s->quote || c == '\n' || c == '\r')
         << i;
  }
  return m;
#endif
}

/* Mask of the window at w, which may run past the end of the data. */
static inline uint64_t sl__csv_mask(const sl__csv_scan *s,
                                    const unsigned char *w) {
  size_t left = (size_t)(s->end - w);
  if (left >= 64) return sl__csv_mask_full(s, w);
  unsigned char tmp[64];
  memset(tmp, 0, sizeof tmp);
  if (left) memcpy(tmp, w, left);
  return sl__csv_mask_full(s, tmp) & ((UINT64_C(1) << left) - 1);
}

/* Prepares a scan of data[0, len), whose first byte is on line `line`.
 * The data is borrowed and must outlive the scan. */
static inline void sl__csv_scan_init(sl__csv_scan *s, const void *data,
                                     size_t len, const sl__csv_dialect *d,
                                     uint64_t line) {
  s->p = s->win = data ? (const unsigned char *)data : (const unsigned char *)"";
  s->end = s->p + len;
  s->line = line;
  s->err = NULL;
  s->delim = d->delim;
  s->quote = d->quote;
  s->lenient = d->lenient;
#ifdef SL__CSV_SSE2
  s->vd = _mm_set1_epi8((char)d->delim);
  s->vq = _mm_set1_epi8((char)d->quote);
  s->vn = _mm_set1_epi8('\n');
  s->vr = _mm_set1_epi8('\r');
#endif
  s->mask = sl__csv_mask(s, s->win);
}

/* @return the next unconsumed special byte, or end. */
static inline const unsigned char *sl__csv_next_special(sl__csv_scan *s) {
  while (s->mask == 0) {
    if ((size_t)(s->end - s->win) <= 64) return s->end;
    s->win += 64;
    s->mask = sl__csv_mask(s, s->win);
  }
  return s->win + __builtin_ctzll(s->mask);
}

/* Consumes the special just returned by sl__csv_next_special(). */
static inline void sl__csv_consume(sl__csv_scan *s) { s->mask &= s->mask - 1; }

/* Consumes the next special when the caller knows which byte it is (the
 * quote after a quote, the LF after a CR, ...) but it may lie in the next
 * window. */
static inline void sl__csv_consume_next(sl__csv_scan *s) {
  sl__csv_next_special(s);
  s->mask &= s->mask - 1;
}

/* Skips blank lines. @return false at the end of the data (no record). */
static inline bool sl__csv_row_begin(sl__csv_scan *s) {
  for (;;) {
    const unsigned char *p = s->p;
    if (p == s->end) return false;
    if (*p == '\n') {
      sl__csv_consume_next(s);
      s->p = p + 1;
      s->line++;
    } else if (*p == '\r' && p + 1 == s->end) { /* a final lone CR */
      sl__csv_consume_next(s);
      s->p = p + 1;
    } else if (*p == '\r' && p[1] == '\n') {
      sl__csv_consume_next(s);
      sl__csv_consume_next(s);
      s->p = p + 2;
      s->line++;
    } else {
      return true;
    }
  }
}

/* Ends a field whose content ends at q, where *q is a CR (already
 * consumed from the mask): CRLF or a final
 * CR end the record. @return SL__CSV_LAST or SL__CSV_ECR. */
static inline int sl__csv_cr(sl__csv_scan *s, const unsigned char *q) {
  if (q + 1 == s->end) {
    s->p = q + 1;
    return SL__CSV_LAST;
  }
  if (q[1] != '\n') {
    s->err = q;
    return SL__CSV_ECR;
  }
  sl__csv_consume_next(s);
  s->p = q + 2;
  s->line++;
  return SL__CSV_LAST;
}

/* Ends a quoted field whose closing quote is at q. */
static inline int sl__csv_quoted_end(sl__csv_scan *s, const unsigned char *q) {
  const unsigned char *r = q + 1;
  if (r == s->end) {
    s->p = r;
    return SL__CSV_LAST;
  }
  if (*r == s->delim) {
    sl__csv_consume_next(s);
    s->p = r + 1;
    return SL__CSV_FIELD;
  }
  if (*r == '\n') {
    sl__csv_consume_next(s);
    s->p = r + 1;
    s->line++;
    return SL__CSV_LAST;
  }
  if (*r == '\r') {
    sl__csv_consume_next(s); /* sl__csv_cr expects the CR consumed */
    return sl__csv_cr(s, r);
  }
  s->err = r;
  return SL__CSV_EAFTER;
}

/* The scan position is at an opening quote (the lowest mask bit). */
static inline int sl__csv_quoted_field(sl__csv_scan *s, sl__csv_field *f) {
  const unsigned char *start = s->p + 1;
  sl__csv_consume_next(s);
  f->quoted = true;
  f->escaped = false;
  for (;;) {
    const unsigned char *q = sl__csv_next_special(s);
    if (q == s->end) {
      s->err = start - 1;
      return SL__CSV_EOPEN;
    }
    sl__csv_consume(s);
    if (*q == s->quote) {
      if (q + 1 < s->end && q[1] == s->quote) { /* "" inside */
        sl__csv_consume_next(s);
        f->escaped = true;
        continue;
      }
      f->ptr = start;
      f->len = (size_t)(q - start);
      return sl__csv_quoted_end(s, q);
    }
    if (*q == '\n') s->line++;
  }
}


/* Reads the field at the scan position. @return SL__CSV_FIELD,
 * SL__CSV_LAST, or a negative SL__CSV_E* code (s->err points at the
 * offending byte; the scan must not continue). */
static inline int sl__csv_next_field(sl__csv_scan *s, sl__csv_field *f) {
  const unsigned char *p = s->p;
  f->line = s->line;
  if (p < s->end && *p == s->quote) return sl__csv_quoted_field(s, f);
  f->ptr = p;
  f->quoted = f->escaped = false;
  for (;;) {
    const unsigned char *q = sl__csv_next_special(s);
    f->len = (size_t)(q - p);
    if (q == s->end) {
      s->p = q;
      return SL__CSV_LAST;
    }
    unsigned char c = *q;
    sl__csv_consume(s);
    if (c == s->delim) {
      s->p = q + 1;
      return SL__CSV_FIELD;
    }
    if (c == '\n') {
      s->p = q + 1;
      s->line++;
      return SL__CSV_LAST;
    }
    if (c == '\r') return sl__csv_cr(s, q);
    if (!s->lenient) { /* a quote inside an unquoted field */
      s->err = q;
      return SL__CSV_EQUOTE;
    }
  }
}

/* Copies field content src[0, len) to dst with doubled quotes undoubled.
 * dst needs len bytes. @return the bytes written. */
size_t sl__csv_unescape(unsigned char *dst, const unsigned char *src,
                        size_t len, unsigned char quote);

/* ---------------------------------------------------------------------- */
/* values                                                                  */

enum { SL__CSV_VAL_OK = 0, SL__CSV_VAL_SYNTAX = -1, SL__CSV_VAL_RANGE = -2 };

/* Strict int64: [+-]?[0-9]+, nothing else (no blanks). @return
 * SL__CSV_VAL_OK, _SYNTAX, or _RANGE when it does not fit. */
static inline int sl__csv_parse_i64(const unsigned char *s, size_t n,
                                    int64_t *out) {
  const unsigned char *e = s + n;
  bool neg = false;
  if (s < e && (*s == '-' || *s == '+')) neg = *s++ == '-';
  if (s == e) return SL__CSV_VAL_SYNTAX;
  while (s + 1 < e && *s == '0') s++; /* leading zeros are not digits */
  if ((size_t)(e - s) > 19) {
    for (; s < e; s++)
      if ((unsigned)(*s - '0') > 9) return SL__CSV_VAL_SYNTAX;
    return SL__CSV_VAL_RANGE;
  }
  uint64_t v = 0;
  for (; s < e; s++) {
    unsigned d = (unsigned)(*s - '0');
    if (d > 9) return SL__CSV_VAL_SYNTAX;
    v = v * 10 + d;
  }
  if (v > (uint64_t)INT64_MAX + neg) return SL__CSV_VAL_RANGE;
  *out = neg ? (int64_t)(0 - v) : (int64_t)v;
  return SL__CSV_VAL_OK;
}

/* Slow path of sl__csv_parse_f64 for syntactically valid text: strtod in
 * the "C" locale. @return SL__CSV_VAL_OK or _RANGE (overflow to inf;
 * underflow gives 0 or a subnormal and is fine). */
int sl__csv_strtod(const unsigned char *s, size_t n, double *out);
/* A "C" locale object (created once, never freed), for strtod and
 * snprintf("%g") that must not depend on the process locale; (locale_t)0
 * when it cannot be created (then the process locale is used). */
locale_t sl__csv_c_locale(void);
/* nan, inf, infinity (any case, optional sign). @return OK or _SYNTAX. */
int sl__csv_parse_special_f64(const unsigned char *s, size_t n, double *out);

/* Strict float64: [+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?
 * or nan/inf/infinity; no blanks, no hex, no thousands separators. The
 * result is exactly what strtod gives: a fast path when the decimal
 * mantissa has at most 19 digits, is below 2^53 and the power of ten is
 * within 10^+-22 (both exact doubles, so one correctly rounded operation),
 * strtod otherwise. @return SL__CSV_VAL_OK, _SYNTAX or _RANGE. */
static inline SL__CSV_HOT int
sl__csv_parse_f64(const unsigned char *s, size_t n, double *out) {
  static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,
                                 1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17,
                                 1e18, 1e19, 1e20, 1e21, 1e22};
  const unsigned char *p = s, *e = s + n;
  bool neg = false;
  if (p < e && (*p == '-' || *p == '+')) neg = *p++ == '-';
  /* Past 19 digits m wraps; it is then not used (slow path). */
  uint64_t m = 0;
  const unsigned char *d0 = p;
  while (p < e && (unsigned)(*p - '0') <= 9) m = m * 10 + (unsigned)(*p++ - '0');
  size_t ndig = (size_t)(p - d0);
  int e10 = 0;
  if (p < e && *p == '.') {
    const unsigned char *f0 = ++p;
    while (p < e && (unsigned)(*p - '0') <= 9) m = m * 10 + (unsigned)(*p++ - '0');
    ndig += (size_t)(p - f0);
    e10 = -(int)(p - f0 < 100000 ? p - f0 : 100000);
  }
  if (ndig == 0) return sl__csv_parse_special_f64(s, n, out);
  if (p < e && (*p == 'e' || *p == 'E')) {
    bool eneg = false;
    int x = 0;
    if (++p < e && (*p == '-' || *p == '+')) eneg = *p++ == '-';
    if (p == e) return SL__CSV_VAL_SYNTAX;
    for (; p < e && (unsigned)(*p - '0') <= 9; p++)
      if (x < 100000) x = x * 10 + (*p - '0');
    e10 += eneg ? -x : x;
  }
  if (p != e) return SL__CSV_VAL_SYNTAX;
  if (ndig > 19 || m > (UINT64_C(1) << 53) || e10 < -22 || e10 > 22) {
    if (m != 0 || ndig > 19) return sl__csv_strtod(s, n, out);
    e10 = 0; /* zero with any exponent is zero */
  }
  double v = (double)m;
  v = e10 < 0 ? v / pow10[-e10] : v * pow10[e10];
  *out = neg ? -v : v;
  return SL__CSV_VAL_OK;
}

/* true/false/1/0, any case. @return SL__CSV_VAL_OK or _SYNTAX. */
int sl__csv_parse_bool(const unsigned char *s, size_t n, bool *out);

/* ---------------------------------------------------------------------- */
/* header, types, boundaries                                               */

/* Splits one record (a header line) into fields, unescaped.
 * @return the number of fields (>= 1) with *names a malloc'd array of
 * malloc'd NUL-terminated strings (free with sl__csv_free_names), or a
 * negative SL__CSV_E* code, or SL_ENOMEM - 100 on allocation failure. */
long sl__csv_split_record(const void *data, size_t len,
                          const sl__csv_dialect *d, char ***names);
void sl__csv_free_names(char **names, size_t n);

/* The column types csv.parse understands, as named in csv.types/types=. */
const char *sl__csv_type_name(sl_dtype t);
/* "int64"/"int", "float64"/"float"/"double", "string"/"str",
 * "bool"/"boolean". @return the dtype or SL_DT_NONE. */
sl_dtype sl__csv_type_parse(const char *s, size_t n);

/* Infers the type of each of `ncols` columns from the records in
 * data[0, len): int64 if every non-empty value is an int64, else float64
 * if every one is a float64, else bool if every one is true/false, else
 * string (also for columns with no values). Stops quietly at the first
 * malformed record (csv.parse reports it). @return 0 or SL_ENOMEM. */
int sl__csv_infer_types(const void *data, size_t len, const sl__csv_dialect *d,
                        size_t ncols, sl_dtype *types);

/* Counts bytes equal to a and to b in p[0, n) (SSE2: byte counters summed
 * with psadbw every 255 blocks). */
void sl__csv_count2(const unsigned char *p, size_t n, unsigned char a,
                    unsigned char b, uint64_t *na, uint64_t *nb);

/* Strict chunking (csv.read): in buf[0, len), which starts at a record
 * boundary, finds the last LF preceded by an even number of quote
 * characters, i.e. the last line end outside quoted fields when the input
 * is RFC 4180. @return the offset just after it (0 when there is none),
 * with *lines the number of LFs before that offset. */
size_t sl__csv_find_cut(const unsigned char *buf, size_t len,
                        unsigned char quote, uint64_t *lines);

/* Lenient chunking: the same by running the tokenizer (exact under the
 * lenient dialect; a malformed record resynchronises at the next LF). */
size_t sl__csv_find_cut_exact(const unsigned char *buf, size_t len,
                              const sl__csv_dialect *d, uint64_t *lines);

/* Tests only: when nonzero, csv.read uses this chunk size instead of
 * chunk= (whose lower bound is 64KiB), to force many chunk boundaries. */
extern size_t sl__csv_read_chunk_override;

/* csv.read's dialect parameters: delim= is one byte, or "\t" / "tab";
 * quote= one byte. @return 0 or a static message. */
const char *sl__csv_dialect_parse(const char *delim, const char *quote,
                                  bool lenient, sl__csv_dialect *d);

/* ---------------------------------------------------------------------- */
/* formatting and the ordered output file (csv_write.c)                    */

/* Growable byte buffer for output text. `oom` sticks once set. */
typedef struct sl__csv_text {
  char *data;
  size_t len, cap;
  bool oom;
} sl__csv_text;

bool sl__csv_text_reserve(sl__csv_text *t, size_t more);
void sl__csv_text_put(sl__csv_text *t, const void *s, size_t n);
static inline void sl__csv_text_putc(sl__csv_text *t, char c) {
  if (t->len < t->cap || sl__csv_text_reserve(t, 1)) t->data[t->len++] = c;
}
void sl__csv_text_free(sl__csv_text *t);

/* Shortest "%.*g" (15, 16 or 17 digits) that reads back as exactly v, in
 * the "C" locale; "nan", "inf", "-inf" for non-finite values. buf needs 32
 * bytes. @return the length. */
size_t sl__csv_format_double(double v, char *buf);
/* Decimal int64 / uint64. buf needs 24 bytes. @return the length. */
size_t sl__csv_format_i64(int64_t v, char *buf);
size_t sl__csv_format_u64(uint64_t v, char *buf);

/* A column value of a table payload as a number (for the writers). */
typedef struct sl__csv_cell {
  enum { SL__CELL_NULL, SL__CELL_INT, SL__CELL_UINT, SL__CELL_FLOAT,
         SL__CELL_BOOL, SL__CELL_STR } kind;
  int64_t i;
  uint64_t u;
  double f;
  const char *s;
  size_t n;
} sl__csv_cell;
/* Reads row `r` of column `c` of a TABLE payload `pl`. */
void sl__csv_cell_get(const sl_payload *pl, const sl_column *c, uint64_t r,
                      sl__csv_cell *out);

/* One output file written by a sink's workers in item order: items are
 * appended to a temporary next to the final path as they arrive (under a
 * mutex) and their extents recorded; when the last worker finishes, the
 * file is rewritten in seq order if items arrived out of order, the
 * suffix is added, and the temporary is renamed over the final path. On
 * failure or cancellation the temporary is removed. */
typedef struct sl__csv_extent {
  uint64_t seq, off, len;
} sl__csv_extent;

typedef struct sl__csv_out {
  pthread_mutex_t mu;
  const char *path;       /* final path (borrowed from the params) */
  const char *first_sep;  /* before the first non-empty item */
  const char *sep;        /* between non-empty items */
  const char *end_empty;  /* suffix when no item had text */
  const char *end;        /* suffix otherwise */
  const char *none;       /* the whole file when no item arrived */
  char *tmp;              /* temporary path while open */
  int fd;
  uint64_t size;          /* bytes in the temporary */
  char *prefix;           /* the first item's prefix, to compare later ones */
  size_t prefix_len;
  sl__csv_extent *ext;
  size_t next, cap;
  bool in_order, any_text, broken;
  uint64_t last_seq;
  unsigned closed, finished;
} sl__csv_out;

void sl__csv_out_init(sl__csv_out *o, const char *path);
void sl__csv_out_destroy(sl__csv_out *o); /* removes a temporary left */
/* Checks at create() time that the directory of o->path exists and that
 * the path is not a directory. @return 0 or SL_EPARSE (sl_stage_errorf). */
int sl__csv_out_check(sl_stage *st, const char *path);
/* Appends an item's text; `prefix` (e.g. the CSV header) is written when
 * the file is created and must be identical for every later item.
 * @return 0 or SL_ESTAGE (described via w). */
int sl__csv_out_write(sl__csv_out *o, sl_worker *w, uint64_t seq,
                      const char *prefix, size_t prefix_len, const char *text,
                      size_t len);
/* Per worker from finish(): the last one publishes the file.
 * @return 0 or an error (described). */
int sl__csv_out_finish(sl__csv_out *o, sl_worker *w);

/* Per worker from close(): the last one removes an unpublished temporary
 * and resets the state for another run. */
void sl__csv_out_close(sl__csv_out *o, sl_worker *w);

/* Checks that `pl` is a TABLE whose every column lies inside the payload
 * (string offsets ascending), so a writer cannot read out of bounds.
 * @return 0 or SL_ESTAGE (described). */
int sl__csv_table_check(const sl_payload *pl, sl_worker *w);

#endif /* SLUICE_CSV_INTERNAL_H */
