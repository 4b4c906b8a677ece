/*
 * csv_parse.c -- `csv.parse`, CSV chunks (BYTES from csv.read) into typed
 * TABLE payloads; and the shared RFC 4180 tokenizer pieces, value parsers
 * and type inference declared in csv_internal.h.
 *
 * csv.parse lives in io/ (not stages/) because tokenizing a format is io's
 * job and csv.read needs the same tokenizer to infer types and to split
 * the header (docs/csv.md).
 *
 * One pass per chunk: the scanner yields fields; only the selected columns
 * (cols=) are converted, the others are skipped by their boundaries alone.
 * Values go into per-worker column buffers (grown geometrically and reused
 * from chunk to chunk, so there is no allocation per field or row); at the
 * end the table is copied into ONE arena block with the layout of the CSV
 * contract (8-byte aligned values or string offsets, validity bytes only
 * for columns that have nulls, string bytes).
 *
 * Nulls: an empty field is null; for string columns only an unquoted empty
 * field is null and a quoted "" is the empty string (as PostgreSQL's COPY
 * does), so csv.write can round-trip both.
 *
 * Errors name the input file and the global line: values at the line where
 * the field starts, field counts at the line where the record starts. With
 * bad_rows=skip, rows with a bad value or a wrong field count are dropped
 * and counted; malformed quoting still fails the chunk (the record
 * structure itself is unknown past it).
 *
 * Threads: process() runs on several OpenMP threads at once; each uses its
 * own worker-local buffers and schema cache. The shared state is the
 * parsed parameters (read-only) and the bad-row statistics (under `mu`, a
 * leaf lock).
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "csv_internal.h"
#include "io_internal.h"

/* ====================================================================== */
/* tokenizer pieces                                                        */

const char *sl__csv_error_text(int code) {
  switch (code) {
  case SL__CSV_EQUOTE:
    return "quote inside an unquoted field (RFC 4180 allows quotes only "
           "around a whole field; quotes=lenient keeps them literally)";
  case SL__CSV_EAFTER:
    return "unexpected text after the closing quote of a field (a quote "
           "inside a quoted field is written as two quotes)";
  case SL__CSV_EOPEN: return "quoted field is not closed";
  case SL__CSV_ECR:
    return "CR without LF (CR-only line ends are not supported)";
  }
  return "malformed CSV";
}

size_t sl__csv_unescape(unsigned char *dst, const unsigned char *src,
                        size_t len, unsigned char quote) {
  size_t o = 0;
  const unsigned char *p = src, *e = src + len;
  while (p < e) {
    const unsigned char *q = memchr(p, quote, (size_t)(e - p));
    size_t k = q ? (size_t)(q - p) + 1 : (size_t)(e - p);
    memcpy(dst + o, p, k);
    o += k;
    p += k + (q != NULL); /* the tokenizer guarantees the pair */
  }
  return o;
}

long sl__csv_split_record(const void *data, size_t len,
                          const sl__csv_dialect *d, char ***names) {
  sl__csv_scan s;
  sl__csv_scan_init(&s, data, len, d, 1);
  size_t n = 0, cap = 16;
  char **v = malloc(cap * sizeof *v);
  if (!v) return SL_ENOMEM - 100;
  for (int t = SL__CSV_FIELD; t == SL__CSV_FIELD;) {
    sl__csv_field f;
    t = sl__csv_next_field(&s, &f);
    if (t < 0) {
      sl__csv_free_names(v, n);
      return t;
    }
    char **nv = n == cap ? realloc(v, (cap *= 2) * sizeof *v) : v;
    char *name = nv ? malloc(f.len + 1) : NULL;
    if (!name) {
      sl__csv_free_names(nv ? nv : v, n);
      return SL_ENOMEM - 100;
    }
    v = nv;
    size_t k = f.escaped ? sl__csv_unescape((unsigned char *)name, f.ptr,
                                            f.len, d->quote)
                         : (memcpy(name, f.ptr, f.len), f.len);
    name[k] = '\0';
    v[n++] = name;
  }
  *names = v;
  return (long)n;
}

void sl__csv_free_names(char **names, size_t n) {
  if (!names) return;
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
}

/* ====================================================================== */
/* values                                                                  */

static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static locale_t c_locale;

static void c_locale_init(void) {
  c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

locale_t sl__csv_c_locale(void) {
  pthread_once(&c_locale_once, c_locale_init);
  return c_locale;
}

int sl__csv_strtod(const unsigned char *s, size_t n, double *out) {
  char small[128], *t = small;
  if (n >= sizeof small && !(t = malloc(n + 1))) return SL__CSV_VAL_RANGE;
  memcpy(t, s, n);
  t[n] = '\0';
  locale_t c = sl__csv_c_locale(), old = c ? uselocale(c) : (locale_t)0;
  char *end;
  errno = 0;
  double v = strtod(t, &end);
  int err = errno;
  if (c) uselocale(old);
  bool whole = end == t + n;
  if (t != small) free(t);
  if (!whole) return SL__CSV_VAL_SYNTAX;
  /* ERANGE on underflow gives 0 or a subnormal: accepted (documented). */
  if (err == ERANGE && (v > 1.0 || v < -1.0)) return SL__CSV_VAL_RANGE;
  *out = v;
  return SL__CSV_VAL_OK;
}

/* Case-insensitive s[0, n) == word (lower case). */
static bool word_eq(const unsigned char *s, size_t n, const char *word) {
  size_t k = strlen(word);
  if (n != k) return false;
  for (size_t i = 0; i < n; i++)
    if ((s[i] | 0x20) != (unsigned char)word[i]) return false;
  return true;
}

int sl__csv_parse_special_f64(const unsigned char *s, size_t n, double *out) {
  bool neg = false;
  if (n && (*s == '-' || *s == '+')) {
    neg = *s == '-';
    s++;
    n--;
  }
  double v;
  if (word_eq(s, n, "nan")) v = (double)NAN;
  else if (word_eq(s, n, "inf") || word_eq(s, n, "infinity")) v = (double)INFINITY;
  else return SL__CSV_VAL_SYNTAX;
  *out = neg ? -v : v;
  return SL__CSV_VAL_OK;
}

int sl__csv_parse_bool(const unsigned char *s, size_t n, bool *out) {
  if (n == 1 && (*s == '1' || *s == '0')) {
    *out = *s == '1';
    return SL__CSV_VAL_OK;
  }
  if (word_eq(s, n, "true") || word_eq(s, n, "false")) {
    *out = (*s | 0x20) == 't';
    return SL__CSV_VAL_OK;
  }
  return SL__CSV_VAL_SYNTAX;
}

const char *sl__csv_type_name(sl_dtype t) {
  switch (t) {
  case SL_DT_I64: return "int64";
  case SL_DT_F64: return "float64";
  case SL_DT_BOOL: return "bool";
  default: return "string";
  }
}

sl_dtype sl__csv_type_parse(const char *s, size_t n) {
  static const struct { const char *name; sl_dtype t; } names[] = {
      {"int64", SL_DT_I64},    {"int", SL_DT_I64},   {"float64", SL_DT_F64},
      {"float", SL_DT_F64},    {"double", SL_DT_F64}, {"string", SL_DT_STRING},
      {"str", SL_DT_STRING},   {"bool", SL_DT_BOOL}, {"boolean", SL_DT_BOOL}};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strlen(names[i].name) == n && memcmp(names[i].name, s, n) == 0)
      return names[i].t;
  return SL_DT_NONE;
}

/* ====================================================================== */
/* type inference                                                          */

enum { CAN_BOOL = 1, CAN_INT = 2, CAN_FLOAT = 4, SEEN = 8 };

/* Narrows a column's candidate set by one non-empty value. */
static unsigned narrow(unsigned state, const sl__csv_field *f) {
  unsigned can = 0;
  if (!f->escaped) {
    int64_t i;
    double x;
    bool b;
    if ((state & CAN_INT) && sl__csv_parse_i64(f->ptr, f->len, &i) == 0)
      can |= CAN_INT | CAN_FLOAT;
    else if ((state & CAN_FLOAT) && sl__csv_parse_f64(f->ptr, f->len, &x) == 0)
      can |= CAN_FLOAT;
    if ((state & CAN_BOOL) && sl__csv_parse_bool(f->ptr, f->len, &b) == 0)
      can |= CAN_BOOL; /* 1/0 too: with true/false the column is bool */
  }
  return (state & can) | SEEN;
}

int sl__csv_infer_types(const void *data, size_t len, const sl__csv_dialect *d,
                        size_t ncols, sl_dtype *types) {
  unsigned char *st = malloc(ncols ? ncols : 1);
  if (!st) return SL_ENOMEM;
  memset(st, CAN_BOOL | CAN_INT | CAN_FLOAT, ncols);
  sl__csv_scan s;
  sl__csv_scan_init(&s, data, len, d, 1);
  bool ok = true;
  while (ok && sl__csv_row_begin(&s)) {
    size_t j = 0;
    for (int t = SL__CSV_FIELD; t == SL__CSV_FIELD; j++) {
      sl__csv_field f;
      t = sl__csv_next_field(&s, &f);
      if (t < 0) ok = false;
      else if (j < ncols && f.len > 0 && (st[j] & ~SEEN))
        st[j] = (unsigned char)narrow(st[j], &f);
    }
  }
  for (size_t j = 0; j < ncols; j++) {
    unsigned v = st[j];
    types[j] = !(v & SEEN)      ? SL_DT_STRING
               : v & CAN_INT   ? SL_DT_I64
               : v & CAN_FLOAT ? SL_DT_F64
               : v & CAN_BOOL  ? SL_DT_BOOL
                               : SL_DT_STRING;
  }
  free(st);
  return 0;
}

/* ====================================================================== */
/* csv.parse: parameters and shared state                                  */

typedef struct parse_params {
  const char *types;
  const char *cols;
  int bad_rows; /* 0 stop, 1 skip */
} parse_params;

#define BAD_LINES_KEPT 10

typedef struct parse_shared {
  size_t ntypes;
  char **type_cols;    /* from types=: column names ... */
  sl_dtype *type_vals; /* ... and their types */
  size_t nsel;         /* from cols=; 0 = every column */
  char **sel;
  pthread_mutex_t mu;  /* guards the rest */
  uint64_t bad;        /* rows skipped in this run */
  uint64_t bad_lines[BAD_LINES_KEPT]; /* the smallest line numbers */
  size_t nbad_lines;
  uint64_t first_line;
  char *first_msg;     /* message of the bad row with the smallest line */
  unsigned opened, finished, closed;
} parse_shared;

/* Splits a comma list into malloc'd items. @return the count or -1 on an
 * empty item / allocation failure (with *why set). */
static long split_list(const char *text, char ***out, const char **why) {
  size_t n = 1;
  for (const char *c = text; *c; c++) n += *c == ',';
  char **v = calloc(n, sizeof *v);
  if (!v) return *why = "out of memory", -1;
  const char *c = text;
  for (size_t i = 0; i < n; i++) {
    size_t k = strcspn(c, ",");
    if (k == 0) {
      sl__csv_free_names(v, i);
      return *why = "empty entry in the list", -1;
    }
    if (!(v[i] = malloc(k + 1))) {
      sl__csv_free_names(v, i);
      return *why = "out of memory", -1;
    }
    memcpy(v[i], c, k);
    v[i][k] = '\0';
    c += k + (c[k] == ',');
  }
  *out = v;
  return (long)n;
}

/* Parses types= ("name:type,..."): names are split at the LAST colon so
 * a column name may contain colons. @return 0 or SL_EPARSE. */
static int parse_types_param(sl_stage *st, parse_shared *S, const char *text) {
  const char *why = NULL;
  char **items;
  long n = split_list(text, &items, &why);
  if (n < 0) return sl_stage_errorf(st, "types=: %s", why);
  S->type_cols = items;
  S->ntypes = (size_t)n;
  S->type_vals = calloc((size_t)n, sizeof *S->type_vals);
  if (!S->type_vals) return sl_stage_errorf(st, "out of memory");
  for (size_t i = 0; i < (size_t)n; i++) {
    char *colon = strrchr(items[i], ':');
    sl_dtype t = colon ? sl__csv_type_parse(colon + 1, strlen(colon + 1))
                       : SL_DT_NONE;
    if (!colon || colon == items[i] || t == SL_DT_NONE)
      return sl_stage_errorf(st, "types=: '%s' is not NAME:TYPE with TYPE "
                                 "int64, float64, string or bool", items[i]);
    *colon = '\0';
    S->type_vals[i] = t;
  }
  return 0;
}

static void parse_destroy(void *state) {
  parse_shared *S = state;
  if (!S) return;
  sl__csv_free_names(S->type_cols, S->ntypes);
  free(S->type_vals);
  sl__csv_free_names(S->sel, S->nsel);
  free(S->first_msg);
  pthread_mutex_destroy(&S->mu);
  free(S);
}

/* Parses types= and cols= into S. @return 0 or SL_EPARSE (described). */
static int parse_setup(sl_stage *st, parse_shared *S) {
  const parse_params *p = sl_stage_params(st);
  if (p->types[0] && parse_types_param(st, S, p->types) < 0) return SL_EPARSE;
  if (p->cols[0]) {
    const char *why = NULL;
    long n = split_list(p->cols, &S->sel, &why);
    if (n < 0) return sl_stage_errorf(st, "cols=: %s", why);
    S->nsel = (size_t)n;
    for (size_t i = 0; i < S->nsel; i++)
      for (size_t k = 0; k < i; k++)
        if (strcmp(S->sel[i], S->sel[k]) == 0)
          return sl_stage_errorf(st, "cols=: column '%s' is listed twice",
                                 S->sel[i]);
  }
  return 0;
}

/* The engine never destroys the state of a create() that failed, so a
 * failed setup frees it here. */
static int parse_create(sl_stage *st, void **state) {
  parse_shared *S = calloc(1, sizeof *S);
  if (!S) return sl_stage_errorf(st, "out of memory");
  pthread_mutex_init(&S->mu, NULL);
  int rc = parse_setup(st, S);
  if (rc < 0) {
    parse_destroy(S);
    S = NULL;
  }
  *state = S;
  return rc;
}

/* ====================================================================== */
/* csv.parse: per-worker schema (column names, types, selection)           */

/* What a chunk's metadata says about its columns; rebuilt only when the
 * metadata differs from the previous chunk's (normally never). */
typedef struct schema {
  char *k_header, *k_types, *k_ncols, *k_delim, *k_quote, *k_quotes;
  sl__csv_dialect d;
  size_t ncols;
  char **names;
  sl_dtype *types;
  bool *inferred; /* type came from csv.types, not types= */
  int32_t *sel;   /* per column: output index, or -1 */
  size_t nout;
  size_t *src;    /* per output column: its column */
} schema;

static void schema_free(schema *sc) {
  free(sc->k_header);
  free(sc->k_types);
  free(sc->k_ncols);
  free(sc->k_delim);
  free(sc->k_quote);
  free(sc->k_quotes);
  sl__csv_free_names(sc->names, sc->ncols);
  free(sc->types);
  free(sc->inferred);
  free(sc->sel);
  free(sc->src);
  memset(sc, 0, sizeof *sc);
}

static bool same_str(const char *a, const char *b) {
  return a == b || (a && b && strcmp(a, b) == 0);
}

static bool schema_matches(const schema *sc, const sl_item *in) {
  return sc->names && same_str(sc->k_header, sl_item_meta_get(in, "csv.header")) &&
         same_str(sc->k_types, sl_item_meta_get(in, "csv.types")) &&
         same_str(sc->k_ncols, sl_item_meta_get(in, "csv.ncols")) &&
         same_str(sc->k_delim, sl_item_meta_get(in, "csv.delim")) &&
         same_str(sc->k_quote, sl_item_meta_get(in, "csv.quote")) &&
         same_str(sc->k_quotes, sl_item_meta_get(in, "csv.quotes"));
}

static char *dup_or_null(const char *s) {
  return s ? strdup(s) : NULL;
}

/* Appends up to 12 column names to a message buffer. */
static void list_columns(const schema *sc, char *buf, size_t cap) {
  size_t o = 0;
  buf[0] = '\0';
  for (size_t j = 0; j < sc->ncols && j < 12 && o < cap; j++)
    o += (size_t)snprintf(buf + o, cap - o, "%s\"%s\"", j ? ", " : "",
                          sc->names[j]);
  if (sc->ncols > 12 && o < cap) snprintf(buf + o, cap - o, ", ...");
}

static long find_column(const schema *sc, const char *name) {
  for (size_t j = 0; j < sc->ncols; j++)
    if (strcmp(sc->names[j], name) == 0) return (long)j;
  return -1;
}

/* Column names: the header's, or c1..cN from csv.ncols. */
static int schema_names(sl_worker *w, schema *sc, const char *header,
                        const char *ncols) {
  if (header) {
    long n = sl__csv_split_record(header, strlen(header), &sc->d, &sc->names);
    if (n < 0)
      return n == SL_ENOMEM - 100 ? SL_ENOMEM
                                  : sl_worker_errorf(w, "header line: %s",
                                                     sl__csv_error_text((int)n));
    sc->ncols = (size_t)n;
    return 0;
  }
  if (!ncols)
    return sl_worker_errorf(w, "input has no CSV metadata (csv.header or "
                               "csv.ncols): csv.parse reads chunks from csv.read");
  long n = strtol(ncols, NULL, 10);
  if (n <= 0 || n > (1L << 24)) return sl_worker_errorf(w, "bad csv.ncols '%s'", ncols);
  if (!(sc->names = calloc((size_t)n, sizeof *sc->names))) return SL_ENOMEM;
  sc->ncols = (size_t)n;
  for (size_t j = 0; j < sc->ncols; j++) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "c%zu", j + 1);
    if (!(sc->names[j] = strdup(tmp))) return SL_ENOMEM;
  }
  return 0;
}

/* Types: csv.types (inferred by csv.read), then types= overrides. */
static int schema_types(sl_worker *w, const parse_shared *S, schema *sc,
                        const char *types) {
  for (size_t j = 0; types && j < sc->ncols; j++) {
    size_t k = strcspn(types, ",");
    sl_dtype t = sl__csv_type_parse(types, k);
    sc->types[j] = t == SL_DT_NONE ? SL_DT_STRING : t;
    sc->inferred[j] = true;
    types += k + (types[k] == ',');
  }
  for (size_t i = 0; i < S->ntypes; i++) {
    long j = find_column(sc, S->type_cols[i]);
    if (j < 0) {
      char cols[400];
      list_columns(sc, cols, sizeof cols);
      return sl_worker_errorf(w, "types=: no column \"%s\" (columns: %s)",
                              S->type_cols[i], cols);
    }
    sc->types[j] = S->type_vals[i];
    sc->inferred[j] = false;
  }
  return 0;
}

/* Selection: cols= in that order, or every column. */
static int schema_select(sl_worker *w, const parse_shared *S, schema *sc) {
  sc->nout = S->nsel ? S->nsel : sc->ncols;
  if (!(sc->src = malloc(sc->nout * sizeof *sc->src))) return SL_ENOMEM;
  for (size_t j = 0; j < sc->ncols; j++) sc->sel[j] = S->nsel ? -1 : (int32_t)j;
  for (size_t i = 0; i < sc->nout; i++) {
    long j = S->nsel ? find_column(sc, S->sel[i]) : (long)i;
    if (j < 0) {
      char cols[400];
      list_columns(sc, cols, sizeof cols);
      return sl_worker_errorf(w, "cols=: no column \"%s\" (columns: %s)",
                              S->sel[i], cols);
    }
    sc->sel[j] = (int32_t)i;
    sc->src[i] = (size_t)j;
  }
  return 0;
}

static int schema_build(sl_worker *w, const parse_shared *S, schema *sc,
                        const sl_item *in) {
  schema_free(sc);
  const char *h = sl_item_meta_get(in, "csv.header");
  const char *t = sl_item_meta_get(in, "csv.types");
  const char *n = sl_item_meta_get(in, "csv.ncols");
  const char *dl = sl_item_meta_get(in, "csv.delim");
  const char *q = sl_item_meta_get(in, "csv.quote");
  const char *qs = sl_item_meta_get(in, "csv.quotes");
  sc->d.delim = dl && dl[0] ? (unsigned char)dl[0] : ',';
  sc->d.quote = q && q[0] ? (unsigned char)q[0] : '"';
  sc->d.lenient = qs && strcmp(qs, "lenient") == 0;
  int rc = schema_names(w, sc, h, n);
  if (rc < 0) return rc;
  sc->types = malloc(sc->ncols * sizeof *sc->types);
  sc->inferred = calloc(sc->ncols, sizeof *sc->inferred);
  sc->sel = malloc(sc->ncols * sizeof *sc->sel);
  if (!sc->types || !sc->inferred || !sc->sel) return SL_ENOMEM;
  for (size_t j = 0; j < sc->ncols; j++) sc->types[j] = SL_DT_STRING;
  if ((rc = schema_types(w, S, sc, t)) < 0 || (rc = schema_select(w, S, sc)) < 0)
    return rc;
  sc->k_header = dup_or_null(h);
  sc->k_types = dup_or_null(t);
  sc->k_ncols = dup_or_null(n);
  sc->k_delim = dup_or_null(dl);
  sc->k_quote = dup_or_null(q);
  sc->k_quotes = dup_or_null(qs);
  if ((h && !sc->k_header) || (t && !sc->k_types) || (n && !sc->k_ncols) ||
      (dl && !sc->k_delim) || (q && !sc->k_quote) || (qs && !sc->k_quotes))
    return SL_ENOMEM;
  return 0;
}

/* ====================================================================== */
/* csv.parse: column buffers                                               */

typedef struct col_buf {
  sl_dtype type;
  unsigned char *vals;  /* 8 bytes per row (int64, double) or 1 (bool) */
  unsigned char *valid; /* 1 byte per row */
  uint64_t *offs;       /* strings: rows + 1 */
  unsigned char *chars;
  size_t clen, ccap;
  bool has_null;
} col_buf;

typedef struct parse_local {
  schema sc;
  col_buf *cols; /* sc.nout of them */
  size_t ncols;
  uint64_t cap;  /* rows every column buffer can hold */
} parse_local;

static void cols_free(parse_local *L) {
  for (size_t i = 0; i < L->ncols; i++) {
    free(L->cols[i].vals);
    free(L->cols[i].valid);
    free(L->cols[i].offs);
    free(L->cols[i].chars);
  }
  free(L->cols);
  L->cols = NULL;
  L->ncols = 0;
  L->cap = 0;
}

/* Matches the buffers to the schema's output columns. */
static int cols_setup(parse_local *L) {
  const schema *sc = &L->sc;
  bool same = L->ncols == sc->nout;
  for (size_t i = 0; same && i < sc->nout; i++)
    same = L->cols[i].type == sc->types[sc->src[i]];
  if (same) return 0;
  cols_free(L);
  if (!(L->cols = calloc(sc->nout ? sc->nout : 1, sizeof *L->cols))) return SL_ENOMEM;
  L->ncols = sc->nout;
  for (size_t i = 0; i < sc->nout; i++) L->cols[i].type = sc->types[sc->src[i]];
  return 0;
}

static size_t value_size(sl_dtype t) {
  return t == SL_DT_BOOL ? 1 : t == SL_DT_STRING ? 0 : 8;
}

/* Grows every column to hold at least `rows` rows. */
static int cols_grow(parse_local *L, uint64_t rows) {
  uint64_t cap = L->cap ? L->cap : 16;
  while (cap < rows) cap *= 2;
  for (size_t i = 0; i < L->ncols; i++) {
    col_buf *c = &L->cols[i];
    size_t vs = value_size(c->type);
    if (vs) {
      void *v = realloc(c->vals, cap * vs);
      if (!v) return SL_ENOMEM;
      c->vals = v;
    } else {
      void *o = realloc(c->offs, (cap + 1) * sizeof *c->offs);
      if (!o) return SL_ENOMEM;
      c->offs = o;
    }
    void *va = realloc(c->valid, cap);
    if (!va) return SL_ENOMEM;
    c->valid = va;
  }
  L->cap = cap;
  return 0;
}

/* Grows a string column's bytes (geometrically, from small: a table may
 * have 100000 string columns). */
static int chars_grow(col_buf *c, size_t more) {
  if (more > SIZE_MAX / 4 - c->clen) return SL_ENOMEM;
  size_t cap = c->ccap ? c->ccap : 256;
  while (cap - c->clen < more) cap *= 2;
  void *p = realloc(c->chars, cap);
  if (!p) return SL_ENOMEM;
  c->chars = p;
  c->ccap = cap;
  return 0;
}

/* ====================================================================== */
/* csv.parse: the chunk loop                                               */

/* Per-chunk context (not the scanner: that stays a local of the row
 * loop so it can live in registers). */
typedef struct chunk {
  sl_worker *w;
  const parse_params *p;
  parse_local *L;
  const char *file;
  uint64_t bad, bad_lines[BAD_LINES_KEPT];
  size_t nbad_lines;
  char *first_msg; /* the chunk's first bad row's message (skip mode) */
  uint64_t first_line;
} chunk;

/* Writes s[0, n) into buf for a message: control bytes and quotes
 * escaped, cut at about 60 bytes. */
static const char *show(const unsigned char *s, size_t n, char *buf, size_t cap) {
  size_t o = 0;
  for (size_t i = 0; i < n && o + 8 < cap; i++) {
    if (i == 60) {
      o += (size_t)snprintf(buf + o, cap - o, "...");
      break;
    }
    unsigned char c = s[i];
    if (c == '"' || c == '\\') {
      buf[o++] = '\\';
      buf[o++] = (char)c;
    } else if (c < 0x20 || c == 0x7f) {
      o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
    } else {
      buf[o++] = (char)c;
    }
  }
  buf[o] = '\0';
  return buf;
}

/* The type a value that did not fit would need (for the hint). */
static const char *wider_type(sl__csv_field f) {
  double x;
  if (!f.escaped && sl__csv_parse_f64(f.ptr, f.len, &x) == 0) return "float64";
  return "string";
}

/* Describes a value that does not fit its column's type. With
 * bad_rows=skip the message is only kept (for the report). */
static int value_error(chunk *c, size_t j, sl__csv_field f, int why) {
  const schema *sc = &c->L->sc;
  const char *tn = sl__csv_type_name(sc->types[j]);
  char val[256], hint[512] = "";
  show(f.ptr, f.len, val, sizeof val);
  if (sc->inferred[j])
    snprintf(hint, sizeof hint, " (type inferred from the first chunk; set "
             "types=%s:%s in csv.parse)", sc->names[j], wider_type(f));
  char *msg;
  if (why == SL__CSV_VAL_RANGE)
    msg = sl__io_asprintf("%s:%" PRIu64 ": column \"%s\": \"%s\" is out of "
                          "range for %s%s", c->file, f.line, sc->names[j], val,
                          tn, hint);
  else
    msg = sl__io_asprintf("%s:%" PRIu64 ": column \"%s\": \"%s\" is not %s %s%s",
                          c->file, f.line, sc->names[j], val,
                          sc->types[j] == SL_DT_I64 ? "an" : "a", tn, hint);
  if (!msg) return SL_ENOMEM;
  if (c->p->bad_rows == 0) {
    sl_worker_errorf(c->w, "%s", msg);
    free(msg);
    return SL_ESTAGE;
  }
  if (!c->first_msg) c->first_msg = msg;
  else free(msg);
  return 1; /* row is bad, keep going */
}

/* Copies a string field: short ones with one fixed 32-byte copy (the
 * buffers have the slack: `end` bounds the source, chars_grow the
 * destination), which beats a memcpy call for typical CSV fields. */
static inline size_t copy_field(unsigned char *dst, const sl__csv_field *f,
                                const unsigned char *end, unsigned char quote) {
  if (f->escaped) return sl__csv_unescape(dst, f->ptr, f->len, quote);
  if (f->len <= 32 && (size_t)(end - f->ptr) >= 32) memcpy(dst, f->ptr, 32);
  else if (f->len) memcpy(dst, f->ptr, f->len);
  return f->len;
}

/* Converts one field into column buffer cb at row r. @return 0, or
 * SL__CSV_VAL_SYNTAX/_RANGE, or SL_ENOMEM - 100. */
static inline int put_value(col_buf *cb, uint64_t r, const sl__csv_field *f,
                            const unsigned char *end, unsigned char quote) {
  int rc = 0;
  bool present = f->len > 0;
  switch (cb->type) {
  case SL_DT_I64: {
    int64_t v = 0;
    if (present) rc = f->escaped ? SL__CSV_VAL_SYNTAX : sl__csv_parse_i64(f->ptr, f->len, &v);
    memcpy(cb->vals + 8 * r, &v, 8);
    break;
  }
  case SL_DT_F64: {
    double v = 0;
    if (present) rc = f->escaped ? SL__CSV_VAL_SYNTAX : sl__csv_parse_f64(f->ptr, f->len, &v);
    memcpy(cb->vals + 8 * r, &v, 8);
    break;
  }
  case SL_DT_BOOL: {
    bool v = false;
    if (present) rc = f->escaped ? SL__CSV_VAL_SYNTAX : sl__csv_parse_bool(f->ptr, f->len, &v);
    cb->vals[r] = v;
    break;
  }
  default:
    present = present || f->quoted;
    if (f->len + 32 > cb->ccap - cb->clen && chars_grow(cb, f->len + 32) < 0)
      return SL_ENOMEM - 100;
    cb->clen += copy_field(cb->chars + cb->clen, f, end, quote);
    cb->offs[r + 1] = cb->clen;
  }
  cb->valid[r] = present;
  cb->has_null |= !present;
  return rc;
}

/* Notes a dropped row (bad_rows=skip) and undoes its string bytes. */
static void drop_row(chunk *c, uint64_t r, uint64_t line) {
  for (size_t i = 0; i < c->L->ncols; i++) {
    col_buf *cb = &c->L->cols[i];
    if (cb->type == SL_DT_STRING) cb->clen = cb->offs[r];
  }
  if (c->nbad_lines < BAD_LINES_KEPT) c->bad_lines[c->nbad_lines++] = line;
  if (!c->bad) c->first_line = line;
  c->bad++;
}

/* Describes malformed quoting at field j of a record. */
static int structure_error(chunk *c, size_t j, uint64_t field_line,
                           uint64_t scan_line, int t) {
  const schema *sc = &c->L->sc;
  uint64_t line = t == SL__CSV_EAFTER ? scan_line : field_line;
  char name[300];
  if (j < sc->ncols) snprintf(name, sizeof name, "column \"%s\"", sc->names[j]);
  else snprintf(name, sizeof name, "field %zu", j + 1);
  if (t == SL__CSV_EOPEN)
    return sl_worker_errorf(c->w, "%s:%" PRIu64 ": %s: quoted field opened on "
                            "this line is not closed at the end of the chunk",
                            c->file, line, name);
  return sl_worker_errorf(c->w, "%s:%" PRIu64 ": %s: %s", c->file, line, name,
                          sl__csv_error_text(t));
}

static int count_error(chunk *c, size_t got, uint64_t line) {
  char *msg = sl__io_asprintf("%s:%" PRIu64 ": expected %zu fields, got %zu",
                              c->file, line, c->L->sc.ncols, got);
  if (!msg) return SL_ENOMEM;
  if (c->p->bad_rows == 0) {
    sl_worker_errorf(c->w, "%s", msg);
    free(msg);
    return SL_ESTAGE;
  }
  if (!c->first_msg) c->first_msg = msg;
  else free(msg);
  return 1;
}

/* Starts the column buffers for a chunk. */
static void cols_reset(parse_local *L) {
  for (size_t i = 0; i < L->ncols; i++) {
    L->cols[i].clen = 0;
    L->cols[i].has_null = false;
  }
}

/* Converts field j of a record at row r. @return 0, 1 (bad value, skip
 * mode) or an error. */
static inline int convert(chunk *c, col_buf *cb, uint64_t r, size_t j,
                          const sl__csv_field *f, const unsigned char *end,
                          unsigned char quote) {
  int rc = put_value(cb, r, f, end, quote);
  if (rc == 0) return 0;
  if (rc == SL_ENOMEM - 100) return SL_ENOMEM;
  return value_error(c, j, *f, rc);
}

/* Runs the rows of data[0, len) (first line `line0`) into the column
 * buffers. The scanner and the hot pointers are locals whose address only
 * inline functions see, so they stay in registers; the slow paths get
 * values. @return the number of rows kept or an error. */
static int64_t parse_rows(chunk *c, const void *data, size_t len,
                          uint64_t line0) {
  parse_local *L = c->L;
  const int32_t *sel = L->sc.sel;
  const size_t ncols = L->sc.ncols;
  const unsigned char quote = L->sc.d.quote;
  col_buf *cols = L->cols;
  /* Records <= LFs + 1, so one count sizes the buffers for the chunk. */
  uint64_t lf, unused;
  sl__csv_count2(data, len, '\n', '\n', &lf, &unused);
  if (lf + 1 > L->cap && cols_grow(L, lf + 1) < 0) return SL_ENOMEM;
  for (size_t i = 0; i < L->ncols; i++)
    if (cols[i].offs) cols[i].offs[0] = 0;
  sl__csv_scan s;
  sl__csv_scan_init(&s, data, len, &L->sc.d, line0);
  cols_reset(L);
  uint64_t r = 0;
  while (sl__csv_row_begin(&s)) {
    uint64_t line = s.line;
    size_t j = 0;
    bool bad = false;
    int t;
    do {
      sl__csv_field f;
      t = sl__csv_next_field(&s, &f);
      if (t < 0) return structure_error(c, j, f.line, s.line, t);
      if (j < ncols && sel[j] >= 0 && !bad) {
        int rc = convert(c, &cols[sel[j]], r, j, &f, s.end, quote);
        if (rc < 0) return rc;
        bad = rc > 0;
      }
      j++;
    } while (t == SL__CSV_FIELD);
    if (j != ncols && !bad) {
      int rc = count_error(c, j, line);
      if (rc < 0) return rc;
      bad = true;
    }
    if (bad) {
      drop_row(c, r, line);
      continue;
    }
    if ((++r & 0xffff) == 0 && sl_worker_canceled(c->w)) return SL_ECANCELED;
  }
  return (int64_t)r;
}

/* ====================================================================== */
/* csv.parse: output table                                                 */

static size_t align8(size_t x) { return (x + 7) & ~(size_t)7; }

/* Lays out the columns in one block; fills offsets in cols. @return the
 * block size. */
static size_t layout(const parse_local *L, uint64_t n, sl_column *cols) {
  size_t off = 0;
  for (size_t i = 0; i < L->ncols; i++) {
    const col_buf *cb = &L->cols[i];
    off = align8(off);
    cols[i].data_off = off;
    off += cb->type == SL_DT_STRING ? (n + 1) * 8 : n * value_size(cb->type);
    cols[i].valid_off = cb->has_null ? off : SIZE_MAX;
    off += cb->has_null ? n : 0;
    cols[i].chars_off = cb->type == SL_DT_STRING ? off : 0;
    off += cb->type == SL_DT_STRING ? cb->clen : 0;
  }
  return off;
}

static void copy_columns(const parse_local *L, uint64_t n, const sl_column *cols,
                         unsigned char *base) {
  for (size_t i = 0; i < L->ncols; i++) {
    const col_buf *cb = &L->cols[i];
    if (cb->type == SL_DT_STRING) {
      if (n) memcpy(base + cols[i].data_off, cb->offs, (n + 1) * 8);
      else memset(base + cols[i].data_off, 0, 8);
      if (cb->clen) memcpy(base + cols[i].chars_off, cb->chars, cb->clen);
    } else if (n) {
      memcpy(base + cols[i].data_off, cb->vals, n * value_size(cb->type));
    }
    if (cb->has_null) memcpy(base + cols[i].valid_off, cb->valid, n);
  }
}

/* Builds the output item. @return 0 with *out, or an error. */
static int make_table(sl_worker *w, const parse_local *L, const sl_item *in,
                      uint64_t n, sl_item **out) {
  sl_column *cols = calloc(L->ncols ? L->ncols : 1, sizeof *cols);
  sl_item *it = sl_item_derive(in);
  if (!cols || !it) {
    free(cols);
    sl_item_destroy(it);
    return SL_ENOMEM;
  }
  size_t size = layout(L, n, cols);
  sl_block *b = NULL;
  int rc = sl_worker_alloc(w, size, &b);
  if (rc < 0) {
    free(cols);
    sl_item_destroy(it);
    return rc;
  }
  copy_columns(L, n, cols, sl_block_data(b));
  sl_item_set_block(it, SL_KIND_TABLE, b, 0, size);
  sl_table_desc *td = &it->payload.u.table;
  td->cols = cols;
  td->ncols = (uint32_t)L->ncols;
  td->nrows = n;
  td->first_row = in->line;
  for (size_t i = 0; i < L->ncols; i++) {
    cols[i].dtype = L->cols[i].type;
    if (!(cols[i].name = strdup(L->sc.names[L->sc.src[i]]))) {
      sl_item_destroy(it);
      return SL_ENOMEM;
    }
  }
  *out = it;
  return 0;
}

/* ====================================================================== */
/* csv.parse: callbacks                                                    */

static int parse_open(sl_worker *w, void **local) {
  parse_shared *S = sl_worker_shared(w);
  parse_local *L = calloc(1, sizeof *L);
  if (!L) return SL_ENOMEM;
  pthread_mutex_lock(&S->mu);
  S->opened++;
  pthread_mutex_unlock(&S->mu);
  *local = L;
  return 0;
}

/* Inserts v into the sorted a[0, *n), keeping the BAD_LINES_KEPT
 * smallest values. */
static void keep_smallest(uint64_t *a, size_t *n, uint64_t v) {
  size_t k = *n;
  if (k == BAD_LINES_KEPT) {
    if (v >= a[k - 1]) return;
    k--; /* the largest drops out */
  } else {
    (*n)++;
  }
  while (k > 0 && a[k - 1] > v) {
    a[k] = a[k - 1];
    k--;
  }
  a[k] = v;
}

/* Folds a chunk's skipped rows into the run's statistics. */
static void merge_bad(parse_shared *S, chunk *c) {
  pthread_mutex_lock(&S->mu);
  S->bad += c->bad;
  for (size_t i = 0; i < c->nbad_lines; i++)
    keep_smallest(S->bad_lines, &S->nbad_lines, c->bad_lines[i]);
  if (c->first_msg && (!S->first_msg || c->first_line < S->first_line)) {
    free(S->first_msg);
    S->first_msg = c->first_msg;
    S->first_line = c->first_line;
    c->first_msg = NULL;
  }
  pthread_mutex_unlock(&S->mu);
}

static int parse_process(sl_worker *w, sl_item *in, sl_item **out) {
  parse_local *L = sl_worker_local(w);
  parse_shared *S = sl_worker_shared(w);
  *out = NULL;
  if (in->payload.kind != SL_KIND_BYTES)
    return sl_worker_errorf(w, "expected a CSV chunk (bytes), got %s",
                            sl_kind_name(in->payload.kind));
  int rc = 0;
  if (!schema_matches(&L->sc, in) && (rc = schema_build(w, S, &L->sc, in)) < 0) {
    schema_free(&L->sc); /* rebuilt (and reported) on the next item */
    return rc;
  }
  if ((rc = cols_setup(L)) < 0) return rc;
  const char *file = sl_item_meta_get(in, "csv.file");
  chunk c = {.w = w, .p = sl_worker_params(w), .L = L, .file = file ? file : in->name};
  int64_t n = parse_rows(&c, in->payload.data, in->payload.size,
                         in->line ? in->line : 1);
  if (n >= 0) rc = make_table(w, L, in, (uint64_t)n, out);
  else rc = (int)n;
  if (rc == 0 && c.bad) merge_bad(S, &c);
  free(c.first_msg);
  return rc;
}

/* The last worker to finish reports the skipped rows on stderr. */
static int parse_finish(sl_worker *w) {
  parse_shared *S = sl_worker_shared(w);
  pthread_mutex_lock(&S->mu);
  if (++S->finished == S->opened && S->bad) {
    char lines[256];
    size_t o = 0;
    for (size_t i = 0; i < S->nbad_lines && o < sizeof lines; i++)
      o += (size_t)snprintf(lines + o, sizeof lines - o, "%s%" PRIu64,
                            i ? ", " : "", S->bad_lines[i]);
    fprintf(stderr, "csv.parse: skipped %" PRIu64 " bad row%s (bad_rows=skip) "
            "at line%s %s%s; first: %s\n", S->bad, S->bad == 1 ? "" : "s",
            S->nbad_lines == 1 ? "" : "s", lines,
            S->bad > S->nbad_lines ? ", ..." : "", S->first_msg ? S->first_msg : "?");
  }
  pthread_mutex_unlock(&S->mu);
  return 0;
}

/* Frees the worker's buffers; the last worker resets the statistics so
 * the stage can run again. */
static void parse_close(sl_worker *w) {
  parse_shared *S = sl_worker_shared(w);
  parse_local *L = sl_worker_local(w);
  if (L) {
    schema_free(&L->sc);
    cols_free(L);
    free(L);
  }
  pthread_mutex_lock(&S->mu);
  if (++S->closed == S->opened) {
    S->opened = S->finished = S->closed = 0;
    S->bad = 0;
    S->nbad_lines = 0;
    free(S->first_msg);
    S->first_msg = NULL;
  }
  pthread_mutex_unlock(&S->mu);
}

static const sl_param_def parse_params_table[] = {
    {"types", SL_PARAM_STRING, offsetof(parse_params, types), "", 0, 0, NULL,
     "column types, e.g. id:int64,x:float64,name:string,ok:bool; other "
     "columns take the type csv.read inferred (csv.types), else string"},
    {"cols", SL_PARAM_STRING, offsetof(parse_params, cols), "", 0, 0, NULL,
     "columns to produce, in this order (default: all); only these are "
     "converted"},
    {"bad_rows", SL_PARAM_CHOICE, offsetof(parse_params, bad_rows), "stop", 0,
     0, "stop|skip",
     "stop: a bad value or field count fails the chunk; skip: drop the row, "
     "count it, report on stderr at the end"},
    SL_PARAM_END,
};

const sl_stage_def sl__stage_csv_parse = {
    .name = "csv.parse",
    .summary = "parse CSV chunks from csv.read into typed tables",
    .help =
        "Turns each chunk of whole CSV records (from csv.read, whose metadata\n"
        "gives file, header, delimiter, quote and inferred types) into a TABLE:\n"
        "int64, float64, bool (true/false/1/0, any case) or string columns.\n"
        "Only the columns in cols= are converted; others are skipped.\n"
        "Numbers are strict: no blanks, no hex, no thousands separators;\n"
        "floats read exactly as strtod does in the C locale (nan and inf\n"
        "accepted, overflow is an error, underflow gives 0); int64 overflow is\n"
        "an error. An empty field is null; in a string column a quoted \"\" is\n"
        "the empty string and only an unquoted empty field is null.\n"
        "Errors name file and line, e.g.\n"
        "  sales.csv:1048577: column \"x\": \"12,5\" is not a float64\n"
        "  sales.csv:17: expected 7 fields, got 6\n"
        "bad_rows=skip drops such rows instead and prints their count and\n"
        "first line numbers on stderr at the end; malformed quoting (text\n"
        "after a closing quote, an unclosed quote, a bare CR) always fails\n"
        "the chunk. Runs on the cpu pool, chunks in parallel.\n"
        "Example: csv.read file=sales.csv ! csv.parse cols=key,x ! ...",
    .exec = SL_EXEC_CPU,
    .in_kind = SL_KIND_BYTES,
    .out_kind = SL_KIND_TABLE,
    .params = parse_params_table,
    .params_size = sizeof(parse_params),
    .create = parse_create,
    .destroy = parse_destroy,
    .open = parse_open,
    .process = parse_process,
    .finish = parse_finish,
    .close = parse_close,
};
