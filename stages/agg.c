/*
 * agg.c -- aggregation machinery shared by `groupby` and `aggregate`, and
 * the table helpers every table stage of stages/ uses.
 *
 * Flow of one run. Each input chunk (a TABLE item) is aggregated on its own,
 * sequentially in row order, into a *partial*: a hash table of the chunk's
 * groups with one accumulator per aggregate (Welford for var/std,
 * Neumaier-compensated sums for floats, 128-bit sums for integers). The
 * partial then copies the few strings it refers to out of the chunk (so the
 * chunk's arena block goes back at once) and is handed to a reorder buffer
 * in the stage's shared state: a min-heap keyed by the item's seq. Partials
 * are merged into the one *merged* table strictly in seq order (Chan's
 * formula for var/std): whichever worker submits while nobody merges takes
 * the merge role and merges every partial that is next in order. So the
 * result depends only on the chunks, never on thread count or completion
 * order: bit-identical across runs. The last worker's finish() merges
 * what is left (chunks after a gap left by a failed upstream item), sorts
 * the groups by key and emits one TABLE item (seq 0, name "result").
 *
 * Memory: the merged table (one entry per group; count_distinct one per
 * distinct (group, value) pair) plus the partials waiting for an earlier
 * chunk; in a cpu stage these are at most one batch, unless an upstream
 * item failed (see the help text).
 *
 * Invariants. A partial's strings live in its own buffer (strbuf) once it
 * is submitted; the merged table owns each string separately, since
 * min/max/last replace theirs. NaN is null and -0.0 is 0.0 everywhere, so
 * keys compare, hash and sort consistently. Lock order: the state's mutex
 * is a leaf; it is never held while merging (the `merging` flag, set under
 * the mutex, gives the merger exclusive use of the merged table).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "agg_internal.h"

/* ======================================================================
 * Lists of names
 * ====================================================================== */

static bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static const char *skip_blanks(const char *p) {
  while (is_blank(*p)) p++;
  return p;
}

/* Reads one name at *pp: either "quoted" ("" is a quote) or bare text up
 * to a character of `stop` or the end, blanks around it trimmed. On success
 * *pp points after the name and *out is malloc'd (possibly ""). @return 0,
 * SL_EINVAL (unterminated quote) or SL_ENOMEM. */
static int scan_name(const char **pp, const char *stop, char **out) {
  const char *p = skip_blanks(*pp);
  size_t n = 0;
  char *s;
  if (*p == '"') {
    const char *q = p + 1;
    for (; *q && !(q[0] == '"' && q[1] != '"'); q += (*q == '"') ? 2 : 1) n++;
    if (!*q) return SL_EINVAL;
    if (!(s = malloc(n + 1))) return SL_ENOMEM;
    n = 0;
    for (q = p + 1; !(q[0] == '"' && q[1] != '"'); q += (*q == '"') ? 2 : 1)
      s[n++] = *q;
    p = q + 1;
  } else {
    const char *e = p;
    while (*e && !strchr(stop, *e)) e++;
    const char *t = e;
    while (t > p && is_blank(t[-1])) t--;
    n = (size_t)(t - p);
    if (!(s = malloc(n + 1))) return SL_ENOMEM;
    memcpy(s, p, n);
    p = e;
  }
  s[n] = '\0';
  *pp = p;
  *out = s;
  return 0;
}

static bool names_has(const sl__names *l, const char *name) {
  for (size_t i = 0; i < l->n; i++)
    if (strcmp(l->v[i], name) == 0) return true;
  return false;
}

/* Appends `name` (taking it over). @return 0 or SL_ENOMEM (name freed). */
static int names_push(sl__names *l, char *name) {
  char **v = realloc(l->v, (l->n + 1) * sizeof *v);
  if (!v) {
    free(name);
    return SL_ENOMEM;
  }
  l->v = v;
  l->v[l->n++] = name;
  return 0;
}

void sl__names_free(sl__names *l) {
  for (size_t i = 0; i < l->n; i++) free(l->v[i]);
  free(l->v);
  l->v = NULL;
  l->n = 0;
}

/* Sets *err to "<what>: <message> at position N" (N from 1). */
static int list_error(char **err, const char *what, const char *text,
                      const char *at, const char *msg) {
  *err = NULL;
  size_t len = strlen(what) + strlen(msg) + 48;
  char *e = malloc(len);
  if (!e) return SL_ENOMEM;
  snprintf(e, len, "%s: %s at position %zu", what, msg, (size_t)(at - text) + 1);
  *err = e;
  return SL_EINVAL;
}

int sl__names_parse(const char *text, const char *what, sl__names *out,
                    char **err) {
  *err = NULL;
  memset(out, 0, sizeof *out);
  const char *p = skip_blanks(text ? text : "");
  if (!*p) return 0;
  for (;;) {
    p = skip_blanks(p);
    const char *start = p;
    char *name = NULL;
    int rc = scan_name(&p, ",", &name);
    if (rc == SL_EINVAL) return list_error(err, what, text, start, "unterminated quote");
    if (rc < 0) return rc;
    if (!*name || names_has(out, name)) {
      bool dup = *name != '\0';
      char *msg = dup ? malloc(strlen(name) + 32) : NULL;
      if (msg) sprintf(msg, "\"%s\" is listed twice", name);
      free(name);
      rc = list_error(err, what, text, start,
                      dup ? (msg ? msg : "name listed twice") : "empty name");
      free(msg);
      return rc;
    }
    if ((rc = names_push(out, name)) < 0) return rc;
    p = skip_blanks(p);
    if (!*p) return 0;
    if (*p != ',') return list_error(err, what, text, p, "expected ','");
    p++;
  }
}

/* ======================================================================
 * Reading tables
 * ====================================================================== */

int sl__table_find(const sl_table_desc *t, const char *name) {
  for (uint32_t i = 0; i < t->ncols; i++)
    if (t->cols[i].name && strcmp(t->cols[i].name, name) == 0) return (int)i;
  return -1;
}

int sl__table_no_column(sl_worker *w, const char *prefix,
                        const sl_table_desc *t, const char *name) {
  char list[320];
  size_t n = 0;
  list[0] = '\0';
  for (uint32_t i = 0; i < t->ncols; i++) {
    const char *c = t->cols[i].name ? t->cols[i].name : "";
    if (n + strlen(c) + 8 >= sizeof list) {
      snprintf(list + n, sizeof list - n, "%s...", i ? ", " : "");
      break;
    }
    n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", c);
  }
  return sl_worker_errorf(w, "%sno column \"%s\" (columns: %s)", prefix, name,
                          list);
}

/* True when [off, off + len) lies inside a payload of `size` bytes. */
static bool in_payload(size_t off, size_t len, size_t size) {
  return off <= size && len <= size - off;
}

int sl__table_bind(const sl_payload *p, const sl_column *c, sl__col *out) {
  const char *base = p->data;
  uint64_t n = p->u.table.nrows;
  size_t width = c->dtype == SL_DT_BOOL ? 1 : 8;
  if (c->dtype != SL_DT_BOOL && c->dtype != SL_DT_I64 &&
      c->dtype != SL_DT_F64 && c->dtype != SL_DT_STRING)
    return SL_EUNSUPPORTED;
  uint64_t cells = c->dtype == SL_DT_STRING ? n + 1 : n;
  if (!base || n >= SIZE_MAX / 16) return SL_EFORMAT;
  if (!in_payload(c->data_off, (size_t)cells * width, p->size)) return SL_EFORMAT;
  if (width == 8 && ((uintptr_t)(base + c->data_off) % 8) != 0) return SL_EFORMAT;
  if (c->valid_off != SIZE_MAX && !in_payload(c->valid_off, (size_t)n, p->size))
    return SL_EFORMAT;
  *out = (sl__col){c->dtype,
                   c->valid_off == SIZE_MAX ? NULL : (const uint8_t *)base + c->valid_off,
                   base + c->data_off, NULL};
  if (c->dtype != SL_DT_STRING) return 0;
  const uint64_t *off = out->data;
  for (uint64_t i = 0; i < n; i++)
    if (off[i] > off[i + 1]) return SL_EFORMAT;
  if (c->chars_off > p->size || off[0] > off[n] ||
      !in_payload(c->chars_off, (size_t)off[n], p->size))
    return SL_EFORMAT;
  out->chars = base + c->chars_off;
  return 0;
}

/* ======================================================================
 * Aggregate specifications
 * ====================================================================== */

static const struct {
  const char *name;
  sl__agg_fn fn;
} fn_names[] = {
    {"count", SL__AGG_COUNT}, {"sum", SL__AGG_SUM},   {"mean", SL__AGG_MEAN},
    {"min", SL__AGG_MIN},     {"max", SL__AGG_MAX},   {"var", SL__AGG_VAR},
    {"std", SL__AGG_STD},     {"count_distinct", SL__AGG_DISTINCT},
    {"first", SL__AGG_FIRST}, {"last", SL__AGG_LAST},
};
#define FN_LIST "count, sum, mean, min, max, var, std, count_distinct, first, last"

/* One parsed term of aggs=, before fn(*) is expanded. */
typedef struct term {
  sl__agg_fn fn;
  const char *fname;
  char *col; /* NULL: none or star */
  bool star;
} term;

typedef struct terms {
  size_t n;
  term *v;
} terms;

static void terms_free(terms *t) {
  for (size_t i = 0; i < t->n; i++) free(t->v[i].col);
  free(t->v);
}

/* Parses "(col)" after a function name; *pp at the '('. */
static int parse_arg(const char *text, const char **pp, term *tm, char **err) {
  const char *p = skip_blanks(*pp + 1);
  if (*p == '*') {
    tm->star = true;
    p = skip_blanks(p + 1);
  } else {
    const char *start = p;
    int rc = scan_name(&p, "),", &tm->col);
    if (rc == SL_EINVAL) return list_error(err, "aggs", text, start, "unterminated quote");
    if (rc < 0) return rc;
    if (!*tm->col) return list_error(err, "aggs", text, start, "expected a column name");
    p = skip_blanks(p);
  }
  if (*p != ')') return list_error(err, "aggs", text, p, "expected ')'");
  *pp = p + 1;
  return 0;
}

/* Parses one term at *pp into *tm. */
static int parse_term(const char *text, const char **pp, term *tm, char **err) {
  const char *p = skip_blanks(*pp), *start = p;
  while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
         (*p >= '0' && *p <= '9'))
    p++;
  size_t len = (size_t)(p - start);
  if (len == 0) return list_error(err, "aggs", text, start, "expected a function name");
  size_t k = 0;
  while (k < sizeof fn_names / sizeof fn_names[0] &&
         (strlen(fn_names[k].name) != len || strncmp(fn_names[k].name, start, len)))
    k++;
  if (k == sizeof fn_names / sizeof fn_names[0]) {
    char msg[160];
    snprintf(msg, sizeof msg, "unknown function \"%.*s\" (known: " FN_LIST ")",
             (int)(len > 40 ? 40 : len), start);
    return list_error(err, "aggs", text, start, msg);
  }
  *tm = (term){fn_names[k].fn, fn_names[k].name, NULL, false};
  p = skip_blanks(p);
  if (*p == '(') {
    int rc = parse_arg(text, &p, tm, err);
    if (rc < 0) return rc;
  } else if (tm->fn == SL__AGG_COUNT) {
    tm->fn = SL__AGG_ROWS;
  } else {
    char msg[96];
    snprintf(msg, sizeof msg, "%s needs a column, e.g. %s(x),", tm->fname, tm->fname);
    return list_error(err, "aggs", text, start, msg);
  }
  *pp = p;
  return 0;
}

static int parse_terms(const char *text, terms *out, char **err) {
  const char *p = skip_blanks(text);
  if (!*p) return list_error(err, "aggs", text, p, "no aggregate");
  for (;;) {
    term tm = {SL__AGG_ROWS, NULL, NULL, false};
    int rc = parse_term(text, &p, &tm, err);
    if (rc < 0) {
      free(tm.col);
      return rc;
    }
    term *v = realloc(out->v, (out->n + 1) * sizeof *v);
    if (!v) {
      free(tm.col);
      return SL_ENOMEM;
    }
    out->v = v;
    out->v[out->n++] = tm;
    p = skip_blanks(p);
    if (!*p) return 0;
    if (*p != ',') return list_error(err, "aggs", text, p, "expected ','");
    p++;
  }
}

/* Appends fn(col) to the plan. @return 0, SL_EINVAL (listed twice),
 * SL_ENOMEM. */
static int plan_add(sl__agg_plan *plan, const term *tm, const char *col,
                    char **err) {
  char *label = col ? malloc(strlen(tm->fname) + strlen(col) + 3)
                    : malloc(sizeof "count");
  char *c = col ? malloc(strlen(col) + 1) : NULL;
  sl__agg_spec *v = realloc(plan->aggs, (plan->naggs + 1) * sizeof *v);
  if (v) plan->aggs = v;
  if (!label || (col && !c) || !v) {
    free(label);
    free(c);
    return SL_ENOMEM;
  }
  if (col) {
    sprintf(label, "%s(%s)", tm->fname, col);
    strcpy(c, col);
  } else {
    strcpy(label, "count");
  }
  for (size_t i = 0; i < plan->naggs; i++) {
    if (strcmp(plan->aggs[i].label, label) == 0) {
      *err = malloc(strlen(label) + 40);
      if (*err) sprintf(*err, "aggs: \"%s\" is listed twice", label);
      free(label);
      free(c);
      return *err ? SL_EINVAL : SL_ENOMEM;
    }
  }
  plan->aggs[plan->naggs++] = (sl__agg_spec){tm->fn, c, label};
  return 0;
}

/* Expands the terms: each run of consecutive fn(*) repeats per column. */
static int plan_expand(sl__agg_plan *plan, const terms *ts, const sl__names *cols,
                       char **err) {
  bool any_star = false;
  for (size_t i = 0; i < ts->n;) {
    if (!ts->v[i].star) {
      int rc = plan_add(plan, &ts->v[i], ts->v[i].col, err);
      if (rc < 0) return rc;
      i++;
      continue;
    }
    size_t j = i;
    while (j < ts->n && ts->v[j].star) j++;
    if (cols->n == 0) {
      *err = malloc(96);
      if (*err) snprintf(*err, 96, "aggs: %s(*) needs cols= (the columns * stands for)", ts->v[i].fname);
      return *err ? SL_EINVAL : SL_ENOMEM;
    }
    for (size_t c = 0; c < cols->n; c++)
      for (size_t k = i; k < j; k++) {
        int rc = plan_add(plan, &ts->v[k], cols->v[c], err);
        if (rc < 0) return rc;
      }
    any_star = true;
    i = j;
  }
  if (cols->n && !any_star) {
    *err = malloc(64);
    if (*err) snprintf(*err, 64, "cols: no fn(*) in aggs= to apply it to");
    return *err ? SL_EINVAL : SL_ENOMEM;
  }
  return 0;
}

int sl__agg_plan_parse(sl__agg_plan *plan, const char *keys, const char *aggs,
                       const char *cols, char **err) {
  memset(plan, 0, sizeof *plan);
  *err = NULL;
  int rc = sl__names_parse(keys, "keys", &plan->keys, err);
  if (rc < 0) return rc;
  sl__names cl;
  if ((rc = sl__names_parse(cols, "cols", &cl, err)) < 0) {
    sl__names_free(&cl);
    return rc;
  }
  terms ts = {0, NULL};
  rc = parse_terms(aggs ? aggs : "", &ts, err);
  if (rc == 0) rc = plan_expand(plan, &ts, &cl, err);
  terms_free(&ts);
  sl__names_free(&cl);
  return rc;
}

void sl__agg_plan_free(sl__agg_plan *plan) {
  sl__names_free(&plan->keys);
  for (size_t i = 0; i < plan->naggs; i++) {
    free(plan->aggs[i].col);
    free(plan->aggs[i].label);
  }
  free(plan->aggs);
  memset(plan, 0, sizeof *plan);
}

/* ======================================================================
 * Values, hashing
 * ====================================================================== */

/* One value of a key (or of a count_distinct set): ints and bools in i,
 * floats canonical (no NaN: that is null; no -0.0). */
typedef struct kv {
  union {
    int64_t i;
    double f;
    const char *s;
  } u;
  uint64_t len; /* string bytes */
  uint8_t null;
} kv;

#define GOLDEN UINT64_C(0x9E3779B97F4A7C15)
#define NULL_HASH UINT64_C(0x6E756C6C6E756C6C)

static inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

static uint64_t hash_bytes(const char *p, uint64_t n) {
  uint64_t h = n * GOLDEN;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    h = (h ^ w) * UINT64_C(0xFF51AFD7ED558CCD);
    h ^= h >> 32;
  }
  if (n) {
    uint64_t w = 0;
    memcpy(&w, p, (size_t)n);
    h = (h ^ w) * UINT64_C(0xFF51AFD7ED558CCD);
  }
  return mix64(h);
}

static inline uint64_t kv_hash(const kv *v, sl_dtype t) {
  if (v->null) return NULL_HASH;
  if (t == SL_DT_STRING) return hash_bytes(v->u.s, v->len);
  uint64_t bits;
  memcpy(&bits, &v->u, 8);
  return mix64(bits + GOLDEN);
}

static inline bool kv_eq(const kv *a, const kv *b, sl_dtype t) {
  if (a->null || b->null) return a->null == b->null;
  switch (t) {
  case SL_DT_STRING: return a->len == b->len && memcmp(a->u.s, b->u.s, a->len) == 0;
  case SL_DT_F64: return a->u.f == b->u.f;
  default: return a->u.i == b->u.i;
  }
}

/* Key order: nulls first, numbers ascending, strings bytewise. */
static int kv_cmp(const kv *a, const kv *b, sl_dtype t) {
  if (a->null || b->null) return (int)b->null - (int)a->null;
  switch (t) {
  case SL_DT_STRING: {
    int c = memcmp(a->u.s, b->u.s, a->len < b->len ? a->len : b->len);
    if (c) return c < 0 ? -1 : 1;
    return a->len < b->len ? -1 : a->len > b->len;
  }
  case SL_DT_F64: return a->u.f < b->u.f ? -1 : a->u.f > b->u.f;
  default: return a->u.i < b->u.i ? -1 : a->u.i > b->u.i;
  }
}

/* Row r of a bound column as a canonical value. */
static inline kv col_kv(const sl__col *c, uint64_t r) {
  kv v = {.u.i = 0, .len = 0, .null = 0};
  if (sl__col_null(c, r)) {
    v.null = 1;
    return v;
  }
  switch (c->type) {
  case SL_DT_F64: {
    double f = sl__col_f64(c, r);
    if (isnan(f)) v.null = 1;
    else v.u.f = f == 0.0 ? 0.0 : f;
    break;
  }
  case SL_DT_STRING: v.u.s = sl__col_str(c, r, &v.len); break;
  case SL_DT_BOOL: v.u.i = sl__col_bool(c, r); break;
  default: v.u.i = sl__col_i64(c, r); break;
  }
  return v;
}

/* A private copy of n bytes (at least 1 byte allocated). */
static char *bytes_dup(const char *p, uint64_t n) {
  char *s = malloc(n ? (size_t)n : 1);
  if (s && n) memcpy(s, p, (size_t)n);
  return s;
}

/* ======================================================================
 * Group tables
 * ====================================================================== */

/* One aggregate's state for one group. n counts values (rows for count);
 * for min/max/first/last n > 0 means "has a value". */
typedef struct acc {
  union {
    __int128 w;  /* integer sums */
    double f[2]; /* float sum + compensation; Welford mean in f[0]; min/max */
    int64_t i;   /* int/bool min/max/first/last */
    struct {
      const char *p;
      uint64_t len;
    } s;
  } u;
  int64_t n;
  double m2; /* var/std: sum of squared deviations */
} acc;

/* count_distinct: a set of (group, value) pairs. */
typedef struct dent {
  uint64_t hash;
  kv v;
  uint32_t gid;
  uint32_t used;
} dent;

typedef struct dset {
  dent *e;
  uint64_t cap, n; /* cap: power of two (or 0), n <= cap / 2 */
} dset;

typedef struct gtable {
  const sl__agg_plan *plan;
  const sl_dtype *ktype, *atype; /* schema: key / aggregate column types */
  size_t nk, na;
  uint32_t n, cap;  /* groups; capacity of the per-group arrays */
  uint64_t *hash;   /* per group */
  kv *keys;         /* cap * nk */
  acc **acc;        /* na arrays of cap */
  uint32_t *slot;   /* open addressing: group + 1, 0 = empty */
  uint64_t nslots;  /* power of two, >= 4 * cap: probes stay short */
  dset *dset;       /* na sets, used by count_distinct */
  char *strbuf;     /* partial, once detached: all its strings */
  bool owned;       /* merged table: each string malloc'd */
} gtable;

#define MAX_GROUPS (UINT32_MAX / 4)

/* The key values of group g (NULL when there are no keys). */
static inline kv *gkeys(const gtable *t, uint32_t g) {
  return t->nk ? t->keys + (size_t)g * t->nk : NULL;
}

static bool is_str_acc(const gtable *t, size_t a) {
  sl__agg_fn fn = t->plan->aggs[a].fn;
  return t->atype[a] == SL_DT_STRING &&
         (fn == SL__AGG_MIN || fn == SL__AGG_MAX || fn == SL__AGG_FIRST ||
          fn == SL__AGG_LAST);
}

static void gtable_destroy(gtable *t) {
  if (!t) return;
  if (t->owned) {
    for (uint32_t g = 0; g < t->n; g++)
      for (size_t k = 0; k < t->nk; k++)
        if (t->ktype[k] == SL_DT_STRING && !t->keys[g * t->nk + k].null)
          free((char *)t->keys[g * t->nk + k].u.s);
    for (size_t a = 0; a < t->na; a++) {
      if (t->acc && t->acc[a] && is_str_acc(t, a))
        for (uint32_t g = 0; g < t->n; g++)
          if (t->acc[a][g].n) free((char *)t->acc[a][g].u.s.p);
      if (t->dset && t->atype[a] == SL_DT_STRING)
        for (uint64_t i = 0; i < t->dset[a].cap; i++)
          if (t->dset[a].e[i].used) free((char *)t->dset[a].e[i].v.u.s);
    }
  }
  for (size_t a = 0; t->acc && a < t->na; a++) free(t->acc[a]);
  for (size_t a = 0; t->dset && a < t->na; a++) free(t->dset[a].e);
  free(t->acc);
  free(t->dset);
  free(t->hash);
  free(t->keys);
  free(t->slot);
  free(t->strbuf);
  free(t);
}

static gtable *gtable_create(const sl__agg_plan *plan, const sl_dtype *ktype,
                             const sl_dtype *atype, bool owned) {
  gtable *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  *t = (gtable){.plan = plan, .ktype = ktype, .atype = atype,
                .nk = plan->keys.n, .na = plan->naggs, .owned = owned};
  t->acc = calloc(t->na ? t->na : 1, sizeof *t->acc);
  t->dset = calloc(t->na ? t->na : 1, sizeof *t->dset);
  if (!t->acc || !t->dset) {
    gtable_destroy(t);
    return NULL;
  }
  return t;
}

/* Places every group in a fresh slot array of `nslots`. */
static int rehash(gtable *t, uint64_t nslots) {
  uint32_t *slot = calloc((size_t)nslots, sizeof *slot);
  if (!slot) return SL_ENOMEM;
  for (uint32_t g = 0; g < t->n; g++) {
    uint64_t i = t->hash[g] & (nslots - 1);
    while (slot[i]) i = (i + 1) & (nslots - 1);
    slot[i] = g + 1;
  }
  free(t->slot);
  t->slot = slot;
  t->nslots = nslots;
  return 0;
}

/* Doubles the per-group arrays (new accumulators zeroed). */
static int gtable_grow(gtable *t) {
  if (t->cap >= MAX_GROUPS) return SL_ELIMIT;
  uint32_t cap = t->cap ? t->cap * 2 : 16;
  uint64_t *h = realloc(t->hash, cap * sizeof *h);
  if (!h) return SL_ENOMEM;
  t->hash = h;
  if (t->nk) {
    kv *k = realloc(t->keys, (size_t)cap * t->nk * sizeof *k);
    if (!k) return SL_ENOMEM;
    t->keys = k;
  }
  for (size_t a = 0; a < t->na; a++) {
    acc *v = realloc(t->acc[a], cap * sizeof *v);
    if (!v) return SL_ENOMEM;
    memset(v + t->cap, 0, (cap - t->cap) * sizeof *v);
    t->acc[a] = v;
  }
  t->cap = cap;
  return 4 * (uint64_t)cap > t->nslots ? rehash(t, 4 * (uint64_t)cap) : 0;
}

/* Adds a group with hash h and key values `key` (nk of them; strings are
 * copied when the table owns its strings). @return 0 with *g, or < 0. */
static int group_add(gtable *t, uint64_t h, const kv *key, uint32_t *g) {
  int rc;
  if (t->n == t->cap && (rc = gtable_grow(t)) < 0) return rc;
  kv *dst = gkeys(t, t->n);
  for (size_t k = 0; k < t->nk; k++) {
    dst[k] = key[k];
    if (t->owned && t->ktype[k] == SL_DT_STRING && !key[k].null) {
      if (!(dst[k].u.s = bytes_dup(key[k].u.s, key[k].len))) {
        while (k-- > 0)
          if (t->ktype[k] == SL_DT_STRING && !dst[k].null) free((char *)dst[k].u.s);
        return SL_ENOMEM;
      }
    }
  }
  t->hash[t->n] = h;
  uint64_t i = h & (t->nslots - 1);
  while (t->slot[i]) i = (i + 1) & (t->nslots - 1);
  t->slot[i] = t->n + 1;
  *g = t->n++;
  return 0;
}

/* Finds or adds the group of key values `key` (hash h). */
static inline int group_find_kv(gtable *t, uint64_t h, const kv *key,
                                uint32_t *g) {
  for (uint64_t i = t->nslots ? h & (t->nslots - 1) : 0; t->nslots;
       i = (i + 1) & (t->nslots - 1)) {
    uint32_t s = t->slot[i];
    if (!s) break;
    if (t->hash[s - 1] != h) continue;
    const kv *gk = gkeys(t, s - 1);
    size_t k = 0;
    while (k < t->nk && kv_eq(&gk[k], &key[k], t->ktype[k])) k++;
    if (k == t->nk) {
      *g = s - 1;
      return 0;
    }
  }
  return group_add(t, h, key, g);
}

/* Adds (g, v) to set a. @return 1 when new, 0 when present, < 0. */
static int dset_add(gtable *t, size_t a, uint32_t g, const kv *v) {
  dset *d = &t->dset[a];
  sl_dtype type = t->atype[a];
  if (2 * (d->n + 1) > d->cap) {
    uint64_t cap = d->cap ? 2 * d->cap : 64;
    dent *e = calloc((size_t)cap, sizeof *e);
    if (!e) return SL_ENOMEM;
    for (uint64_t i = 0; i < d->cap; i++) {
      if (!d->e[i].used) continue;
      uint64_t j = d->e[i].hash & (cap - 1);
      while (e[j].used) j = (j + 1) & (cap - 1);
      e[j] = d->e[i];
    }
    free(d->e);
    d->e = e;
    d->cap = cap;
  }
  uint64_t h = mix64(kv_hash(v, type) + (uint64_t)g * GOLDEN);
  uint64_t i = h & (d->cap - 1);
  for (; d->e[i].used; i = (i + 1) & (d->cap - 1))
    if (d->e[i].hash == h && d->e[i].gid == g && kv_eq(&d->e[i].v, v, type)) return 0;
  d->e[i] = (dent){h, *v, g, 1};
  if (t->owned && type == SL_DT_STRING &&
      !(d->e[i].v.u.s = bytes_dup(v->u.s, v->len))) {
    d->e[i].used = 0;
    return SL_ENOMEM;
  }
  d->n++;
  return 1;
}

/* ======================================================================
 * Accumulating one chunk (a partial, built sequentially in row order)
 * ====================================================================== */

/* Neumaier's compensated addition: the rounding error of every addition is
 * kept in f[1], so a long float sum stays accurate to a few ulps. */
static inline void fsum_add(acc *e, double x) {
  double s = e->u.f[0], t = s + x;
  e->u.f[1] += fabs(s) >= fabs(x) ? (s - t) + x : (x - t) + s;
  e->u.f[0] = t;
}

static inline void welford_add(acc *e, double x) {
  e->n++;
  double d = x - e->u.f[0];
  e->u.f[0] += d / (double)e->n;
  e->m2 += d * (x - e->u.f[0]);
}

/* Row r of a number column as a double; false when null (or NaN). */
static inline bool col_num(const sl__col *c, uint64_t r, double *x) {
  if (sl__col_null(c, r)) return false;
  if (c->type == SL_DT_F64) *x = sl__col_f64(c, r);
  else if (c->type == SL_DT_I64) *x = (double)sl__col_i64(c, r);
  else *x = sl__col_bool(c, r);
  return !isnan(*x);
}

/* sum / mean over one chunk; typed loops, this is the hot path. */
static void chunk_sum(acc *A, const sl__col *c, const uint32_t *gid, uint64_t n) {
  const uint8_t *ok = c->valid;
  if (c->type == SL_DT_F64) {
    const double *x = c->data;
    for (uint64_t r = 0; r < n; r++) {
      if ((ok && !ok[r]) || isnan(x[r])) continue;
      acc *e = &A[gid[r]];
      fsum_add(e, x[r]);
      e->n++;
    }
  } else if (c->type == SL_DT_I64) {
    const int64_t *x = c->data;
    for (uint64_t r = 0; r < n; r++) {
      if (ok && !ok[r]) continue;
      A[gid[r]].u.w += x[r];
      A[gid[r]].n++;
    }
  } else {
    const uint8_t *x = c->data;
    for (uint64_t r = 0; r < n; r++) {
      if (ok && !ok[r]) continue;
      A[gid[r]].u.w += x[r] != 0;
      A[gid[r]].n++;
    }
  }
}

/* count(x): values that are not null (nor NaN). */
static void chunk_count(acc *A, const sl__col *c, const uint32_t *gid, uint64_t n) {
  const uint8_t *ok = c->valid;
  const double *x = c->type == SL_DT_F64 ? c->data : NULL;
  for (uint64_t r = 0; r < n; r++)
    A[gid[r]].n += (!ok || ok[r]) && !(x && isnan(x[r]));
}

/* Does value v replace e's current value under fn? */
static bool takes(sl__agg_fn fn, const acc *e, const kv *v, sl_dtype t) {
  if (!e->n) return true;
  if (fn == SL__AGG_LAST) return true;
  if (fn == SL__AGG_FIRST) return false;
  kv cur = {.u.i = 0, .len = 0, .null = 0};
  if (t == SL_DT_STRING) {
    cur.u.s = e->u.s.p;
    cur.len = e->u.s.len;
  } else if (t == SL_DT_F64) {
    cur.u.f = e->u.f[0];
  } else {
    cur.u.i = e->u.i;
  }
  int c = kv_cmp(v, &cur, t);
  return fn == SL__AGG_MIN ? c < 0 : c > 0;
}

/* Stores v in e (a string is borrowed: partials point into the chunk). */
static inline void acc_store(acc *e, const kv *v, sl_dtype t) {
  if (t == SL_DT_STRING) {
    e->u.s.p = v->u.s;
    e->u.s.len = v->len;
  } else if (t == SL_DT_F64) {
    e->u.f[0] = v->u.f;
  } else {
    e->u.i = v->u.i;
  }
}

/* min / max of a float column: typed loop (benchmarked path). */
static void chunk_minmax_f64(acc *A, const sl__col *c, const uint32_t *gid,
                             uint64_t n, bool is_min) {
  const double *x = c->data;
  const uint8_t *ok = c->valid;
  for (uint64_t r = 0; r < n; r++) {
    if ((ok && !ok[r]) || isnan(x[r])) continue;
    acc *e = &A[gid[r]];
    double f = x[r] == 0.0 ? 0.0 : x[r];
    if (!e->n || (is_min ? f < e->u.f[0] : f > e->u.f[0])) e->u.f[0] = f;
    e->n++;
  }
}

/* Folds the rows of one chunk into aggregate a. @return 0 or SL_ENOMEM. */
static int chunk_agg(gtable *t, size_t a, const sl__col *c, const uint32_t *gid,
                     uint64_t n) {
  sl__agg_fn fn = t->plan->aggs[a].fn;
  acc *A = t->acc[a];
  double x;
  switch (fn) {
  case SL__AGG_ROWS:
    for (uint64_t r = 0; r < n; r++) A[gid[r]].n++;
    return 0;
  case SL__AGG_COUNT: chunk_count(A, c, gid, n); return 0;
  case SL__AGG_SUM:
  case SL__AGG_MEAN: chunk_sum(A, c, gid, n); return 0;
  case SL__AGG_VAR:
  case SL__AGG_STD:
    for (uint64_t r = 0; r < n; r++)
      if (col_num(c, r, &x)) welford_add(&A[gid[r]], x);
    return 0;
  default: break;
  }
  if ((fn == SL__AGG_MIN || fn == SL__AGG_MAX) && c->type == SL_DT_F64) {
    chunk_minmax_f64(A, c, gid, n, fn == SL__AGG_MIN);
    return 0;
  }
  for (uint64_t r = 0; r < n; r++) {
    kv v = col_kv(c, r);
    if (v.null) continue;
    acc *e = &A[gid[r]];
    if (fn == SL__AGG_DISTINCT) {
      int rc = dset_add(t, a, gid[r], &v);
      if (rc < 0) return rc;
      e->n += rc;
    } else {
      if (takes(fn, e, &v, c->type)) acc_store(e, &v, c->type);
      e->n++;
    }
  }
  return 0;
}

/* One key column (the common case): hash and probe in one pass, reading
 * the value once. Same hashes and group order as the general path. */
static int groups_one_key(gtable *t, const sl__col *c, uint64_t n, uint32_t *gid) {
  uint32_t prev = UINT32_MAX;
  kv last = {.u.i = 0, .len = 0, .null = 1};
  for (uint64_t r = 0; r < n; r++) {
    kv v = col_kv(c, r);
    /* Runs of one key (sorted or clustered input) skip the hash table. */
    if (prev != UINT32_MAX && kv_eq(&v, &last, c->type)) {
      gid[r] = prev;
      continue;
    }
    uint64_t h = mix64(GOLDEN + kv_hash(&v, c->type));
    int rc = group_find_kv(t, h, &v, &gid[r]);
    if (rc < 0) return rc;
    prev = gid[r];
    last = v;
  }
  return 0;
}

/* Gives every row its group: hashes column by column into hb, then probes
 * row by row, adding groups in order of first appearance. */
static int chunk_groups(gtable *t, const sl__col *kc, uint64_t n, uint64_t *hb,
                        uint32_t *gid) {
  if (t->nk == 0) {
    uint32_t g0;
    if (n && t->n == 0) {
      int rc = group_add(t, 0, NULL, &g0);
      if (rc < 0) return rc;
    }
    if (n) memset(gid, 0, (size_t)n * sizeof *gid);
    return 0;
  }
  if (t->nk == 1) return groups_one_key(t, kc, n, gid);
  for (uint64_t r = 0; r < n; r++) hb[r] = GOLDEN;
  for (size_t k = 0; k < t->nk; k++)
    for (uint64_t r = 0; r < n; r++) {
      kv v = col_kv(&kc[k], r);
      hb[r] = mix64(hb[r] + kv_hash(&v, kc[k].type));
    }
  kv row[16], *key = t->nk <= 16 ? row : malloc(t->nk * sizeof *key);
  if (!key) return SL_ENOMEM;
  int rc = 0;
  for (uint64_t r = 0; r < n && rc == 0; r++) {
    for (size_t k = 0; k < t->nk; k++) key[k] = col_kv(&kc[k], r);
    rc = group_find_kv(t, hb[r], key, &gid[r]);
  }
  if (key != row) free(key);
  return rc;
}

/* Adds the bytes of every string the partial refers to. */
static uint64_t detach_size(const gtable *t) {
  uint64_t total = 0;
  for (uint32_t g = 0; g < t->n; g++)
    for (size_t k = 0; k < t->nk; k++)
      if (t->ktype[k] == SL_DT_STRING) total += t->keys[(size_t)g * t->nk + k].len;
  for (size_t a = 0; a < t->na; a++) {
    if (is_str_acc(t, a))
      for (uint32_t g = 0; g < t->n; g++)
        if (t->acc[a][g].n) total += t->acc[a][g].u.s.len;
    if (t->plan->aggs[a].fn == SL__AGG_DISTINCT && t->atype[a] == SL_DT_STRING)
      for (uint64_t i = 0; i < t->dset[a].cap; i++)
        if (t->dset[a].e[i].used) total += t->dset[a].e[i].v.len;
  }
  return total;
}

static inline const char *stash(char **at, const char *p, uint64_t n) {
  char *dst = *at;
  if (n) memcpy(dst, p, (size_t)n);
  *at += n;
  return dst;
}

/* Copies the strings a partial borrows from its chunk into t->strbuf, so
 * the chunk can be released. @return 0 or SL_ENOMEM. */
static int detach(gtable *t) {
  uint64_t total = detach_size(t);
  if (total == 0) return 0;
  if (total > SIZE_MAX / 2 || !(t->strbuf = malloc((size_t)total))) return SL_ENOMEM;
  char *at = t->strbuf;
  for (uint32_t g = 0; g < t->n; g++)
    for (size_t k = 0; k < t->nk; k++) {
      kv *v = &t->keys[(size_t)g * t->nk + k];
      if (t->ktype[k] == SL_DT_STRING && !v->null) v->u.s = stash(&at, v->u.s, v->len);
    }
  for (size_t a = 0; a < t->na; a++) {
    if (is_str_acc(t, a))
      for (uint32_t g = 0; g < t->n; g++) {
        acc *e = &t->acc[a][g];
        if (e->n) e->u.s.p = stash(&at, e->u.s.p, e->u.s.len);
      }
    if (t->plan->aggs[a].fn == SL__AGG_DISTINCT && t->atype[a] == SL_DT_STRING)
      for (uint64_t i = 0; i < t->dset[a].cap; i++) {
        dent *e = &t->dset[a].e[i];
        if (e->used) e->v.u.s = stash(&at, e->v.u.s, e->v.len);
      }
  }
  return 0;
}

/* ======================================================================
 * Merging a partial into the merged table (in seq order)
 * ====================================================================== */

/* Chan et al.'s pairwise update of (n, mean, m2). */
static void welford_merge(acc *a, const acc *b) {
  if (!b->n) return;
  if (!a->n) {
    *a = *b;
    return;
  }
  double na = (double)a->n, nb = (double)b->n, n = na + nb;
  double d = b->u.f[0] - a->u.f[0];
  a->u.f[0] += d * (nb / n);
  a->m2 += b->m2 + d * d * (na * nb / n);
  a->n += b->n;
}

/* Merges one accumulator; strings are copied into the (owned) merged
 * table. @return 0 or SL_ENOMEM. */
static int acc_merge(gtable *m, size_t a, acc *dst, const acc *src) {
  sl__agg_fn fn = m->plan->aggs[a].fn;
  sl_dtype t = m->atype[a];
  switch (fn) {
  case SL__AGG_ROWS:
  case SL__AGG_COUNT: dst->n += src->n; return 0;
  case SL__AGG_DISTINCT: return 0; /* recounted from the set */
  case SL__AGG_VAR:
  case SL__AGG_STD: welford_merge(dst, src); return 0;
  case SL__AGG_SUM:
  case SL__AGG_MEAN:
    if (t == SL_DT_F64) {
      fsum_add(dst, src->u.f[0]);
      dst->u.f[1] += src->u.f[1];
    } else {
      dst->u.w += src->u.w;
    }
    dst->n += src->n;
    return 0;
  default: break;
  }
  if (!src->n) return 0;
  kv v = {.u.i = 0, .len = 0, .null = 0};
  if (t == SL_DT_STRING) {
    v.u.s = src->u.s.p;
    v.len = src->u.s.len;
  } else if (t == SL_DT_F64) {
    v.u.f = src->u.f[0];
  } else {
    v.u.i = src->u.i;
  }
  if (takes(fn, dst, &v, t)) {
    if (t == SL_DT_STRING) {
      char *s = bytes_dup(v.u.s, v.len);
      if (!s) return SL_ENOMEM;
      if (dst->n) free((char *)dst->u.s.p);
      v.u.s = s;
    }
    acc_store(dst, &v, t);
  }
  dst->n += src->n;
  return 0;
}

/* Merges partial p into m. @return 0, SL_ENOMEM or SL_ELIMIT. */
static int gtable_merge(gtable *m, const gtable *p) {
  uint32_t *map = malloc((p->n ? p->n : 1) * sizeof *map);
  if (!map) return SL_ENOMEM;
  int rc = 0;
  for (uint32_t g = 0; g < p->n && rc == 0; g++)
    rc = group_find_kv(m, p->hash[g], gkeys(p, g), &map[g]);
  for (size_t a = 0; a < p->na && rc == 0; a++)
    for (uint32_t g = 0; g < p->n && rc == 0; g++)
      rc = acc_merge(m, a, &m->acc[a][map[g]], &p->acc[a][g]);
  for (size_t a = 0; a < p->na && rc == 0; a++) {
    const dset *d = &p->dset[a];
    for (uint64_t i = 0; i < d->cap && rc == 0; i++) {
      if (!d->e[i].used) continue;
      uint32_t g = map[d->e[i].gid];
      rc = dset_add(m, a, g, &d->e[i].v);
      if (rc > 0) m->acc[a][g].n++;
      if (rc > 0) rc = 0;
    }
  }
  free(map);
  return rc;
}

/* ======================================================================
 * The result table
 * ====================================================================== */

typedef struct ocol {
  const char *name;
  sl_dtype type;
  bool nullable;
  uint64_t strbytes;
  size_t data_off, chars_off, valid_off;
} ocol;

static sl_dtype out_type(const gtable *t, size_t a) {
  switch (t->plan->aggs[a].fn) {
  case SL__AGG_ROWS:
  case SL__AGG_COUNT:
  case SL__AGG_DISTINCT: return SL_DT_I64;
  case SL__AGG_SUM: return t->atype[a] == SL_DT_F64 ? SL_DT_F64 : SL_DT_I64;
  case SL__AGG_MEAN:
  case SL__AGG_VAR:
  case SL__AGG_STD: return SL_DT_F64;
  default: return t->atype[a];
  }
}

/* The output value of column j (keys, then aggregates) for group g.
 * @return 0 or SL_ERANGE (an integer sum beyond int64). */
static int out_value(const gtable *t, size_t j, uint32_t g, kv *v) {
  *v = (kv){.u.i = 0, .len = 0, .null = 0};
  if (j < t->nk) {
    *v = t->keys[(size_t)g * t->nk + j];
    return 0;
  }
  size_t a = j - t->nk;
  const acc *e = &t->acc[a][g];
  sl_dtype at = t->atype[a];
  switch (t->plan->aggs[a].fn) {
  case SL__AGG_ROWS:
  case SL__AGG_COUNT:
  case SL__AGG_DISTINCT: v->u.i = e->n; return 0;
  case SL__AGG_SUM:
    if (at == SL_DT_F64) {
      v->u.f = isfinite(e->u.f[0]) ? e->u.f[0] + e->u.f[1] : e->u.f[0];
      return 0;
    }
    if (e->u.w > INT64_MAX || e->u.w < INT64_MIN) return SL_ERANGE;
    v->u.i = (int64_t)e->u.w;
    return 0;
  case SL__AGG_MEAN:
    v->null = e->n == 0;
    if (at == SL_DT_F64)
      v->u.f = (isfinite(e->u.f[0]) ? e->u.f[0] + e->u.f[1] : e->u.f[0]) / (double)e->n;
    else
      v->u.f = (double)e->u.w / (double)e->n;
    return 0;
  case SL__AGG_VAR:
  case SL__AGG_STD:
    v->null = e->n < 2;
    v->u.f = e->m2 / (double)(e->n - 1);
    if (t->plan->aggs[a].fn == SL__AGG_STD) v->u.f = sqrt(v->u.f);
    return 0;
  default: break;
  }
  v->null = e->n == 0;
  if (at == SL_DT_STRING) {
    v->u.s = e->u.s.p;
    v->len = e->u.s.len;
  } else if (at == SL_DT_F64) {
    v->u.f = e->u.f[0];
  } else {
    v->u.i = e->u.i;
  }
  return 0;
}

typedef struct srec {
  const gtable *t;
  uint32_t g;
} srec;

static int srec_cmp(const void *pa, const void *pb) {
  const srec *a = pa, *b = pb;
  const gtable *t = a->t;
  for (size_t k = 0; k < t->nk; k++) {
    int c = kv_cmp(&t->keys[(size_t)a->g * t->nk + k],
                   &t->keys[(size_t)b->g * t->nk + k], t->ktype[k]);
    if (c) return c;
  }
  return a->g < b->g ? -1 : a->g > b->g; /* keys are unique: never reached */
}

static size_t align8(size_t x) { return (x + 7) & ~(size_t)7; }

/* Pass 1: types, null flags and string bytes of every output column, then
 * the block layout. @return the block size, or 0 with *bad the column of
 * an integer sum that overflows. */
static size_t result_layout(const gtable *t, const uint32_t *order, ocol *oc,
                            size_t *bad) {
  size_t ncols = t->nk + t->na, off = 0;
  for (size_t j = 0; j < ncols; j++) {
    ocol *o = &oc[j];
    o->name = j < t->nk ? t->plan->keys.v[j] : t->plan->aggs[j - t->nk].label;
    o->type = j < t->nk ? t->ktype[j] : out_type(t, j - t->nk);
    for (uint32_t i = 0; i < t->n; i++) {
      kv v;
      if (out_value(t, j, order[i], &v) < 0) {
        *bad = j;
        return 0;
      }
      o->nullable |= v.null;
      if (!v.null && o->type == SL_DT_STRING) o->strbytes += v.len;
    }
    o->data_off = off = align8(off);
    off += (o->type == SL_DT_STRING ? (size_t)t->n + 1 : t->n) *
           (o->type == SL_DT_BOOL ? 1 : 8);
    o->chars_off = off;
    off += (size_t)o->strbytes;
    o->valid_off = o->nullable ? off : SIZE_MAX;
    off += o->nullable ? t->n : 0;
  }
  return align8(off) + 8;
}

/* Pass 2: writes column j's values into the block at `base`. */
static void result_fill(const gtable *t, const uint32_t *order, const ocol *o,
                        size_t j, char *base) {
  uint64_t pos = 0;
  for (uint32_t i = 0; i < t->n; i++) {
    kv v;
    out_value(t, j, order[i], &v);
    if (o->nullable) base[o->valid_off + i] = !v.null;
    char *d = base + o->data_off;
    switch (o->type) {
    case SL_DT_STRING:
      ((uint64_t *)(void *)d)[i] = pos;
      if (!v.null && v.len) memcpy(base + o->chars_off + pos, v.u.s, (size_t)v.len);
      pos += v.null ? 0 : v.len;
      ((uint64_t *)(void *)d)[i + 1] = pos;
      break;
    case SL_DT_BOOL: d[i] = v.null ? 0 : (char)(v.u.i != 0); break;
    case SL_DT_F64: ((double *)(void *)d)[i] = v.null ? 0.0 : v.u.f; break;
    default: ((int64_t *)(void *)d)[i] = v.null ? 0 : v.u.i; break;
    }
  }
  if (o->type == SL_DT_STRING && t->n == 0) ((uint64_t *)(void *)(base + o->data_off))[0] = 0;
}

/* Group indices sorted by key. Caller frees. */
static uint32_t *sorted_groups(const gtable *t) {
  srec *r = malloc((t->n ? t->n : 1) * sizeof *r);
  uint32_t *order = malloc((t->n ? t->n : 1) * sizeof *order);
  if (!r || !order) {
    free(r);
    free(order);
    return NULL;
  }
  for (uint32_t g = 0; g < t->n; g++) r[g] = (srec){t, g};
  if (t->nk) qsort(r, t->n, sizeof *r, srec_cmp);
  for (uint32_t g = 0; g < t->n; g++) order[g] = r[g].g;
  free(r);
  return order;
}

/* Builds the item (seq 0, "result") from the column layout. Takes over
 * `block`. @return the item or NULL (out of memory; block released). */
static sl_item *result_item(const gtable *t, const ocol *oc, sl_block *block,
                            size_t size) {
  size_t ncols = t->nk + t->na;
  sl_item *it = sl_item_create(0, "result");
  sl_column *cols = calloc(ncols ? ncols : 1, sizeof *cols);
  bool ok = it && cols;
  for (size_t j = 0; ok && j < ncols; j++) {
    cols[j] = (sl_column){NULL, oc[j].type, oc[j].data_off,
                          oc[j].type == SL_DT_STRING ? oc[j].chars_off : 0,
                          oc[j].valid_off};
    ok = (cols[j].name = bytes_dup(oc[j].name, strlen(oc[j].name) + 1)) != NULL;
  }
  if (!ok) {
    for (size_t j = 0; cols && j < ncols; j++) free(cols[j].name);
    free(cols);
    sl_item_destroy(it);
    sl_block_release(block);
    return NULL;
  }
  sl_item_set_block(it, SL_KIND_TABLE, block, 0, size);
  it->payload.u.table = (sl_table_desc){(uint32_t)ncols, t->n, 0, cols};
  return it;
}

/* Sorts, lays out and writes the result table. @return 0 with *out, or an
 * error recorded on the worker. */
static int result_build(sl_worker *w, const gtable *t, sl_item **out) {
  size_t ncols = t->nk + t->na, bad = 0;
  uint32_t *order = sorted_groups(t);
  ocol *oc = calloc(ncols ? ncols : 1, sizeof *oc);
  if (!order || !oc) {
    free(order);
    free(oc);
    return SL_ENOMEM;
  }
  size_t size = result_layout(t, order, oc, &bad);
  sl_block *block = NULL;
  int rc = size ? sl_worker_alloc(w, size, &block) : SL_ERANGE;
  if (rc == SL_ERANGE)
    rc = sl_worker_errorf(w, "%s: the sum does not fit in int64", oc[bad].name);
  else if (rc < 0 && rc != SL_ECANCELED)
    rc = sl_worker_errorf(w, "cannot allocate the result (%zu bytes): %s", size,
                          sl_strerror(rc));
  if (rc == 0) {
    char *base = sl_block_data(block);
    memset(base, 0, size);
    for (size_t j = 0; j < ncols; j++) result_fill(t, order, &oc[j], j, base);
    *out = result_item(t, oc, block, size);
    if (!*out) rc = SL_ENOMEM;
  }
  free(order);
  free(oc);
  return rc;
}

/* ======================================================================
 * The stage: shared state, reorder buffer, callbacks
 * ====================================================================== */

/* A partial waiting for its turn; t NULL: nothing to merge (a chunk
 * without rows, or one that failed here). */
typedef struct pend {
  uint64_t seq, order;
  gtable *t;
} pend;

typedef struct agg_state {
  sl__agg_plan plan;
  sl_dtype *ktype, *atype; /* schema, set by the first chunk of a run */
  pthread_mutex_t mu;
  /* Guarded by mu. */
  bool have_schema;
  bool tentative; /* schema only from chunks without rows */
  pend *heap; /* min-heap on (seq, order) */
  size_t nheap, capheap;
  uint64_t next_seq, order;
  bool merging; /* someone holds the merge role */
  unsigned opened, finished, live;
  uint64_t *failed; /* seqs of chunks that failed here (and not since) */
  size_t nfailed, capfailed;
  int merge_rc;
  /* Used only by the holder of the merge role, or by the last finish(). */
  gtable *merged;
} agg_state;

typedef struct agg_local {
  uint64_t *hb; /* per row: key hash */
  uint32_t *gid; /* per row: group */
  uint64_t cap;
  sl__col *kc, *ac; /* bound key / aggregate columns */
} agg_local;

/* A failing lock is a bug: abort rather than run on unprotected. */
static void lock(agg_state *s) {
  if (pthread_mutex_lock(&s->mu)) abort();
}
static void unlock(agg_state *s) {
  if (pthread_mutex_unlock(&s->mu)) abort();
}

static bool pend_less(const pend *a, const pend *b) {
  return a->seq < b->seq || (a->seq == b->seq && a->order < b->order);
}

static int heap_push(agg_state *s, pend p) {
  if (s->nheap == s->capheap) {
    size_t cap = s->capheap ? 2 * s->capheap : 64;
    pend *h = realloc(s->heap, cap * sizeof *h);
    if (!h) return SL_ENOMEM;
    s->heap = h;
    s->capheap = cap;
  }
  size_t i = s->nheap++;
  for (; i && pend_less(&p, &s->heap[(i - 1) / 2]); i = (i - 1) / 2)
    s->heap[i] = s->heap[(i - 1) / 2];
  s->heap[i] = p;
  return 0;
}

static pend heap_pop(agg_state *s) {
  pend top = s->heap[0], last = s->heap[--s->nheap];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= s->nheap) break;
    if (c + 1 < s->nheap && pend_less(&s->heap[c + 1], &s->heap[c])) c++;
    if (!pend_less(&s->heap[c], &last)) break;
    s->heap[i] = s->heap[c];
    i = c;
  }
  if (s->nheap) s->heap[i] = last;
  return top;
}

/* Merges partial p (and destroys it); called without the lock by the
 * holder of the merge role. */
static int merge_one(agg_state *s, gtable *p) {
  int rc = 0;
  if (!s->merged && !(s->merged = gtable_create(&s->plan, s->ktype, s->atype, true)))
    rc = SL_ENOMEM;
  if (rc == 0) rc = gtable_merge(s->merged, p);
  gtable_destroy(p);
  return rc;
}

/* With the lock and the merge role held: merges every partial that is next
 * in seq order (all of them when `all`, at the end of the input). */
static void drain(agg_state *s, bool all) {
  while (s->nheap && (all || s->heap[0].seq <= s->next_seq)) {
    pend p = heap_pop(s);
    if (p.seq >= s->next_seq) s->next_seq = p.seq + 1;
    if (!p.t) continue;
    unlock(s);
    int rc = merge_one(s, p.t);
    lock(s);
    if (rc < 0 && s->merge_rc == 0) s->merge_rc = rc;
  }
}

/* Remembers which chunks failed here. A retry that succeeds (the engine
 * retries at once, with --retries) clears its chunk: its partial is then
 * merged late, out of seq order, the one case where float bits may depend
 * on timing. Failures are few, so a plain array. Lock held. */
static void note_outcome(agg_state *s, uint64_t seq, bool failed) {
  size_t i = 0;
  while (i < s->nfailed && s->failed[i] != seq) i++;
  if (!failed) {
    if (i < s->nfailed) s->failed[i] = s->failed[--s->nfailed];
    return;
  }
  if (i < s->nfailed) return;
  if (s->nfailed == s->capfailed) {
    size_t cap = s->capfailed ? 2 * s->capfailed : 16;
    uint64_t *f = realloc(s->failed, cap * sizeof *f);
    if (!f) {
      if (s->merge_rc == 0) s->merge_rc = SL_ENOMEM;
      return;
    }
    s->failed = f;
    s->capfailed = cap;
  }
  s->failed[s->nfailed++] = seq;
}

/* Files the partial of chunk `seq` (NULL: nothing to merge, e.g. the
 * chunk failed) and merges what is in order unless another worker is
 * merging. Takes over t. */
static void submit(agg_state *s, uint64_t seq, gtable *t, bool failed) {
  lock(s);
  note_outcome(s, seq, failed);
  if (heap_push(s, (pend){seq, s->order++, t}) < 0) {
    gtable_destroy(t);
    if (s->merge_rc == 0) s->merge_rc = SL_ENOMEM;
  } else if (!s->merging) {
    s->merging = true;
    drain(s, false);
    s->merging = false;
  }
  unlock(s);
}

/* Forgets everything of a run (the stage may run again). Lock held. */
static void reset_run(agg_state *s) {
  gtable_destroy(s->merged);
  s->merged = NULL;
  while (s->nheap) gtable_destroy(heap_pop(s).t);
  s->have_schema = s->tentative = false;
  s->next_seq = s->order = 0;
  s->opened = s->finished = 0;
  s->nfailed = 0;
  s->merge_rc = 0;
}

/* ======================================================================
 * Partials on the wire (distributed runs: ranks > 0 send each chunk's
 * partial to rank 0, see sl_worker_send_partial)
 * ====================================================================== */

/* Layout, native byte order (every rank runs the same build):
 *   "SLAG" u32 nk u32 na, u8 ktype[nk], u8 atype[na], u32 groups,
 *   per group: u64 hash, its nk key values;
 *   per aggregate, per group: the acc (strings: n, then the value);
 *   per aggregate: u64 count of set entries, each u32 gid + value.
 * A value is u8 null, then 8 bytes or (strings) u64 len + bytes. An empty
 * message stands for "no partial" (a chunk without rows). */
#define WIRE_MAGIC 0x47414c53u /* "SLAG" */

typedef struct wbuf {
  unsigned char *p;
  size_t n, cap;
  bool oom;
} wbuf;

static void wput(wbuf *b, const void *src, size_t len) {
  if (b->oom || !len) return;
  if (b->n + len > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + len) cap *= 2;
    unsigned char *q = realloc(b->p, cap);
    if (!q) {
      b->oom = true;
      return;
    }
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->n, src, len);
  b->n += len;
}

static void wput_kv(wbuf *b, const kv *v, sl_dtype t) {
  wput(b, &v->null, 1);
  if (v->null) return;
  if (t == SL_DT_STRING) {
    wput(b, &v->len, 8);
    wput(b, v->u.s, (size_t)v->len);
  } else {
    wput(b, &v->u, 8);
  }
}

/* Serialises partial t into *b. */
static void wire_pack(const gtable *t, wbuf *b) {
  uint32_t head[3] = {WIRE_MAGIC, (uint32_t)t->nk, (uint32_t)t->na};
  wput(b, head, sizeof head);
  for (size_t k = 0; k < t->nk; k++) wput(b, &(uint8_t){(uint8_t)t->ktype[k]}, 1);
  for (size_t a = 0; a < t->na; a++) wput(b, &(uint8_t){(uint8_t)t->atype[a]}, 1);
  wput(b, &t->n, 4);
  for (uint32_t g = 0; g < t->n; g++) {
    wput(b, &t->hash[g], 8);
    for (size_t k = 0; k < t->nk; k++) wput_kv(b, &gkeys(t, g)[k], t->ktype[k]);
  }
  for (size_t a = 0; a < t->na; a++)
    for (uint32_t g = 0; g < t->n; g++) {
      const acc *e = &t->acc[a][g];
      if (!is_str_acc(t, a)) {
        wput(b, e, sizeof *e);
        continue;
      }
      wput(b, &e->n, 8);
      if (e->n) {
        wput(b, &e->u.s.len, 8);
        wput(b, e->u.s.p, (size_t)e->u.s.len);
      }
    }
  for (size_t a = 0; a < t->na; a++) {
    const dset *d = &t->dset[a];
    wput(b, &d->n, 8);
    for (uint64_t i = 0; i < d->cap; i++)
      if (d->e[i].used) {
        wput(b, &d->e[i].gid, 4);
        wput_kv(b, &d->e[i].v, t->atype[a]);
      }
  }
}

typedef struct rbuf {
  const unsigned char *p;
  size_t n, at;
  bool bad;
} rbuf;

static const void *rget(rbuf *r, size_t len) {
  if (r->bad || len > r->n - r->at) {
    r->bad = true;
    return NULL;
  }
  const void *q = r->p + r->at;
  r->at += len;
  return q;
}

static void rcopy(rbuf *r, void *dst, size_t len) {
  const void *q = rget(r, len);
  if (q) memcpy(dst, q, len);
  else memset(dst, 0, len);
}

/* Reads a value; strings point into the message (copied by detach()). */
static kv rget_kv(rbuf *r, sl_dtype t) {
  kv v = {.u.i = 0, .len = 0, .null = 0};
  rcopy(r, &v.null, 1);
  if (v.null > 1) r->bad = true;
  if (v.null || r->bad) return v;
  if (t == SL_DT_STRING) {
    rcopy(r, &v.len, 8);
    v.u.s = rget(r, (size_t)(v.len <= r->n ? v.len : r->n + 1));
  } else {
    rcopy(r, &v.u, 8);
  }
  return v;
}

/* Rebuilds a partial from a message, against the stage's schema (which
 * the message sets when the stage has none yet). Lock not held: the schema
 * is written under the lock, read here only after it is set. @return 0
 * with *out (NULL for "no partial"), or SL_EFORMAT / SL_ENOMEM. */
static int wire_unpack(agg_state *s, const void *data, size_t len, gtable **out) {
  *out = NULL;
  if (len == 0) return 0;
  rbuf r = {data, len, 0, false};
  uint32_t head[3];
  rcopy(&r, head, sizeof head);
  if (r.bad || head[0] != WIRE_MAGIC || head[1] != s->plan.keys.n ||
      head[2] != s->plan.naggs)
    return SL_EFORMAT;
  size_t nk = head[1], na = head[2];
  const uint8_t *types = rget(&r, nk + na);
  if (!types) return SL_EFORMAT;
  lock(s);
  if (!s->have_schema || s->tentative) {
    for (size_t k = 0; k < nk; k++) s->ktype[k] = (sl_dtype)types[k];
    for (size_t a = 0; a < na; a++) s->atype[a] = (sl_dtype)types[nk + a];
    s->have_schema = true;
    s->tentative = false;
  }
  bool same = true;
  for (size_t k = 0; k < nk; k++) same &= s->ktype[k] == (sl_dtype)types[k];
  for (size_t a = 0; a < na; a++) same &= s->atype[a] == (sl_dtype)types[nk + a];
  unlock(s);
  if (!same) return SL_EFORMAT;
  gtable *t = gtable_create(&s->plan, s->ktype, s->atype, false);
  if (!t) return SL_ENOMEM;
  uint32_t groups;
  rcopy(&r, &groups, 4);
  int rc = 0;
  kv *key = calloc(nk ? nk : 1, sizeof *key);
  if (!key) rc = SL_ENOMEM;
  for (uint32_t g = 0; g < groups && rc == 0 && !r.bad; g++) {
    uint64_t h;
    uint32_t id;
    rcopy(&r, &h, 8);
    for (size_t k = 0; k < nk; k++) key[k] = rget_kv(&r, t->ktype[k]);
    if (!r.bad) rc = group_add(t, h, key, &id);
  }
  free(key);
  for (size_t a = 0; a < na && rc == 0 && !r.bad; a++)
    for (uint32_t g = 0; g < t->n && !r.bad; g++) {
      acc *e = &t->acc[a][g];
      if (!is_str_acc(t, a)) {
        rcopy(&r, e, sizeof *e);
        continue;
      }
      rcopy(&r, &e->n, 8);
      if (e->n) {
        rcopy(&r, &e->u.s.len, 8);
        e->u.s.p = rget(&r, (size_t)(e->u.s.len <= r.n ? e->u.s.len : r.n + 1));
      }
    }
  for (size_t a = 0; a < na && rc == 0 && !r.bad; a++) {
    uint64_t count;
    rcopy(&r, &count, 8);
    if (count > r.n) r.bad = true;
    for (uint64_t i = 0; i < count && rc >= 0 && !r.bad; i++) {
      uint32_t gid;
      rcopy(&r, &gid, 4);
      kv v = rget_kv(&r, t->atype[a]);
      if (gid >= t->n) r.bad = true;
      if (!r.bad) rc = dset_add(t, a, gid, &v);
    }
    if (rc > 0) rc = 0;
  }
  if (rc == 0 && (r.bad || r.at != r.n)) rc = SL_EFORMAT;
  if (rc == 0) rc = detach(t); /* strings out of the message */
  if (rc < 0) {
    gtable_destroy(t);
    return rc;
  }
  *out = t;
  return 0;
}

int sl__agg_create(sl_stage *st, const char *keys, const char *aggs,
                   const char *cols, void **state) {
  agg_state *s = calloc(1, sizeof *s);
  if (!s) return SL_ENOMEM;
  char *err = NULL;
  int rc = sl__agg_plan_parse(&s->plan, keys, aggs, cols, &err);
  if (rc == 0 && keys && s->plan.keys.n == 0) {
    rc = SL_EINVAL;
    err = malloc(64);
    if (err) strcpy(err, "keys: no key column (use aggregate for none)");
  }
  if (rc == 0) {
    s->ktype = calloc(s->plan.keys.n + 1, sizeof *s->ktype);
    s->atype = calloc(s->plan.naggs + 1, sizeof *s->atype);
    if (!s->ktype || !s->atype) rc = SL_ENOMEM;
  }
  if (rc == 0 && pthread_mutex_init(&s->mu, NULL)) rc = SL_ENOMEM;
  if (rc < 0) {
    if (err) rc = sl_stage_errorf(st, "%s", err);
    free(err);
    sl__agg_plan_free(&s->plan);
    free(s->ktype);
    free(s->atype);
    free(s);
    return rc;
  }
  *state = s;
  return 0;
}

void sl__agg_destroy(void *state) {
  agg_state *s = state;
  if (!s) return;
  reset_run(s);
  free(s->heap);
  free(s->failed);
  pthread_mutex_destroy(&s->mu);
  sl__agg_plan_free(&s->plan);
  free(s->ktype);
  free(s->atype);
  free(s);
}

int sl__agg_open(sl_worker *w, void **local) {
  agg_state *s = sl_worker_shared(w);
  agg_local *l = calloc(1, sizeof *l);
  if (l) {
    l->kc = calloc(s->plan.keys.n + 1, sizeof *l->kc);
    l->ac = calloc(s->plan.naggs + 1, sizeof *l->ac);
  }
  if (!l || !l->kc || !l->ac) {
    if (l) {
      free(l->kc);
      free(l->ac);
    }
    free(l);
    return SL_ENOMEM;
  }
  *local = l;
  lock(s);
  s->opened++;
  s->live++;
  unlock(s);
  return 0;
}

void sl__agg_close(sl_worker *w) {
  agg_state *s = sl_worker_shared(w);
  agg_local *l = sl_worker_local(w);
  lock(s);
  if (--s->live == 0) reset_run(s);
  unlock(s);
  free(l->hb);
  free(l->gid);
  free(l->kc);
  free(l->ac);
  free(l);
}

static bool is_number(sl_dtype t) {
  return t == SL_DT_I64 || t == SL_DT_F64 || t == SL_DT_BOOL;
}

/* Binds column `name` of the chunk. @return 0 or an error on the worker. */
static int bind_one(sl_worker *w, const sl_payload *p, const char *name,
                    sl__col *out) {
  int i = sl__table_find(&p->u.table, name);
  if (i < 0) return sl__table_no_column(w, "", &p->u.table, name);
  const sl_column *c = &p->u.table.cols[i];
  int rc = sl__table_bind(p, c, out);
  if (rc == SL_EUNSUPPORTED)
    return sl_worker_errorf(w, "column \"%s\" has type %s, which is not supported "
                            "(int64, float64, bool, string)", name, sl_dtype_name(c->dtype));
  if (rc < 0)
    return sl_worker_errorf(w, "column \"%s\": malformed table payload", name);
  return 0;
}

/* Binds every column the plan uses and checks what the aggregates need
 * (not in a chunk without rows: it has no value of the wrong type). */
static int bind_columns(sl_worker *w, const agg_state *s, agg_local *l,
                        const sl_payload *p) {
  bool check = p->u.table.nrows > 0;
  const sl__agg_plan *pl = &s->plan;
  for (size_t k = 0; k < pl->keys.n; k++) {
    int rc = bind_one(w, p, pl->keys.v[k], &l->kc[k]);
    if (rc < 0) return rc;
  }
  for (size_t a = 0; a < pl->naggs; a++) {
    const sl__agg_spec *sp = &pl->aggs[a];
    l->ac[a] = (sl__col){SL_DT_NONE, NULL, NULL, NULL};
    if (!sp->col) continue;
    int rc = bind_one(w, p, sp->col, &l->ac[a]);
    if (rc < 0) return rc;
    bool numeric = sp->fn == SL__AGG_SUM || sp->fn == SL__AGG_MEAN ||
                   sp->fn == SL__AGG_VAR || sp->fn == SL__AGG_STD;
    if (check && numeric && !is_number(l->ac[a].type))
      return sl_worker_errorf(w, "%s: column \"%s\" is %s, not a number", sp->label,
                              sp->col, sl_dtype_name(l->ac[a].type));
  }
  return 0;
}

/* The first chunk with rows fixes the column types; later chunks must
 * match. A chunk without rows (say, a CSV file with only a header, whose
 * types could not be inferred) sets them only until a chunk with rows
 * comes: its types then serve only for an all-empty result. The types are
 * written only while no partial uses them (none is built before a chunk
 * with rows got here), so partials read them without the lock. */
static int check_schema(sl_worker *w, agg_state *s, const agg_local *l,
                        bool empty) {
  const sl__agg_plan *pl = &s->plan;
  int rc = 0;
  lock(s);
  if (!s->have_schema || (s->tentative && !empty)) {
    for (size_t k = 0; k < pl->keys.n; k++) s->ktype[k] = l->kc[k].type;
    for (size_t a = 0; a < pl->naggs; a++) s->atype[a] = l->ac[a].type;
    s->have_schema = true;
    s->tentative = empty;
  }
  for (size_t j = 0; j < pl->keys.n + pl->naggs && rc == 0 && !empty; j++) {
    bool key = j < pl->keys.n;
    sl_dtype want = key ? s->ktype[j] : s->atype[j - pl->keys.n];
    sl_dtype got = key ? l->kc[j].type : l->ac[j - pl->keys.n].type;
    if (want != got)
      rc = sl_worker_errorf(w, "column \"%s\" is %s here but %s in an earlier chunk",
                            key ? pl->keys.v[j] : pl->aggs[j - pl->keys.n].col,
                            sl_dtype_name(got), sl_dtype_name(want));
  }
  unlock(s);
  return rc;
}

/* Builds the chunk's partial. @return 0 with *out, or SL_ENOMEM/SL_ELIMIT. */
static int build_partial(const agg_state *s, agg_local *l, uint64_t n,
                         gtable **out) {
  if (n > l->cap) {
    free(l->hb);
    free(l->gid);
    l->cap = 0;
    l->hb = malloc((size_t)n * sizeof *l->hb);
    l->gid = malloc((size_t)n * sizeof *l->gid);
    if (!l->hb || !l->gid) return SL_ENOMEM;
    l->cap = n;
  }
  gtable *t = gtable_create(&s->plan, s->ktype, s->atype, false);
  if (!t) return SL_ENOMEM;
  int rc = chunk_groups(t, l->kc, n, l->hb, l->gid);
  for (size_t a = 0; a < t->na && rc == 0; a++)
    rc = chunk_agg(t, a, &l->ac[a], l->gid, n);
  if (rc == 0) rc = detach(t);
  if (rc < 0) {
    gtable_destroy(t);
    return rc;
  }
  *out = t;
  return 0;
}

int sl__agg_process(sl_worker *w, sl_item *in, sl_item **out) {
  agg_state *s = sl_worker_shared(w);
  agg_local *l = sl_worker_local(w);
  *out = NULL;
  int rc = 0;
  gtable *t = NULL;
  if (in->payload.kind != SL_KIND_TABLE)
    rc = sl_worker_errorf(w, "expected a table, got %s", sl_kind_name(in->payload.kind));
  if (rc == 0 && in->payload.u.table.nrows >= SIZE_MAX / 16)
    rc = sl_worker_errorf(w, "malformed table payload");
  if (rc == 0) rc = bind_columns(w, s, l, &in->payload);
  uint64_t n = rc == 0 ? in->payload.u.table.nrows : 0;
  if (rc == 0) rc = check_schema(w, s, l, n == 0);
  if (rc == 0 && n > 0) rc = build_partial(s, l, n, &t);
  if (rc == SL_ELIMIT)
    rc = sl_worker_errorf(w, "more than %u groups", (unsigned)MAX_GROUPS);
  if (rc == 0 && sl_worker_ranks(w) > 1 && sl_worker_rank(w) > 0) {
    wbuf b = {0};
    if (t) wire_pack(t, &b);
    gtable_destroy(t);
    int sent = b.oom ? SL_ENOMEM : sl_worker_send_partial(w, in->seq, b.p, b.n);
    free(b.p);
    if (sent < 0)
      return sl_worker_errorf(w, "sending the partial result to rank 0: %s",
                              sl_strerror(sent));
    return 0;
  }
  submit(s, in->seq, rc < 0 ? NULL : t, rc < 0);
  return rc;
}

int sl__agg_receive(void *state, uint64_t seq, const void *data, size_t len) {
  agg_state *s = state;
  gtable *t = NULL;
  int rc = wire_unpack(s, data, len, &t);
  if (rc < 0) return rc;
  submit(s, seq, t, false);
  return 0;
}

/* Only the last worker to finish emits, after every chunk is merged. */
int sl__agg_finish(sl_worker *w) {
  agg_state *s = sl_worker_shared(w);
  lock(s);
  bool last = ++s->finished == s->opened;
  if (last) {
    s->merging = true;
    drain(s, true);
    s->merging = false;
  }
  size_t failed = s->nfailed;
  int rc = s->merge_rc;
  bool schema = s->have_schema;
  unlock(s);
  if (!last || sl_worker_rank(w) > 0) return 0; /* rank 0 publishes */
  if (failed)
    return sl_worker_errorf(w, "%zu input chunk(s) failed here; no result", failed);
  uint64_t lost = sl_worker_failed_items(w);
  if (lost)
    return sl_worker_errorf(w, "%llu item(s) failed upstream; no result (it "
                            "would silently leave their rows out)",
                            (unsigned long long)lost);
  if (rc < 0) return sl_worker_errorf(w, "merging partial results: %s", sl_strerror(rc));
  if (!schema) return sl_worker_errorf(w, "no input table");
  if (!s->merged && !(s->merged = gtable_create(&s->plan, s->ktype, s->atype, true)))
    return SL_ENOMEM;
  uint32_t g;
  if (s->plan.keys.n == 0 && s->merged->n == 0 &&
      (rc = group_add(s->merged, 0, NULL, &g)) < 0)
    return rc;
  sl_item *res = NULL;
  if ((rc = result_build(w, s->merged, &res)) < 0) return rc;
  return sl_worker_emit(w, res);
}
