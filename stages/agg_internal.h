/*
 * agg_internal.h -- what the table stages of stages/ share (agg.c): reading
 * TABLE payloads, lists of column names, aggregate specifications, and the
 * stage callbacks that groupby and aggregate both use.
 *
 * TABLE layout (docs: the CSV contract): every column lives in the item's one
 * arena block at offsets from payload.data. int64/float64 columns hold nrows
 * 8-byte values at data_off; bool columns nrows bytes (0/1); string columns
 * uint64_t offsets[nrows+1] at data_off, relative to chars_off, the bytes of
 * row i being [chars_off + off[i], chars_off + off[i+1]). valid_off is
 * nrows bytes (1 = present) or SIZE_MAX when the column has no nulls.
 * Only the public "sluice.h" is used; io/ has its own readers.
 */
#ifndef SLUICE_AGG_INTERNAL_H
#define SLUICE_AGG_INTERNAL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "sluice.h"

/* ---- lists of names: keys=, cols= ------------------------------------ */

/* A comma-separated list of column names. A name is trimmed of blanks; one
 * written in double quotes may hold commas, blanks and "" (a quote). */
typedef struct sl__names {
  size_t n;
  char **v; /* malloc'd names */
} sl__names;

/* Parses `text` into *out (which the caller frees with sl__names_free, also
 * after a failure). Duplicates are an error. @return 0, SL_EINVAL with *err
 * a malloc'd message naming `what` ("keys: empty name at position 3"), or
 * SL_ENOMEM. */
int sl__names_parse(const char *text, const char *what, sl__names *out,
                    char **err);
void sl__names_free(sl__names *l);

/* ---- reading tables --------------------------------------------------- */

/* A column bound for one chunk: pointers into the payload. */
typedef struct sl__col {
  sl_dtype type;
  const uint8_t *valid; /* NULL: no nulls */
  const void *data;     /* values, or string offsets */
  const char *chars;    /* strings: base of the bytes */
} sl__col;

/* Index of the column called `name`, or -1. */
int sl__table_find(const sl_table_desc *t, const char *name);
/* Records `<prefix>no column "name" (columns: a, b, c)` as the worker's
 * error (a long list is cut with ", ..."). @return SL_ESTAGE. */
int sl__table_no_column(sl_worker *w, const char *prefix,
                        const sl_table_desc *t, const char *name);
/* Checks that column `c` of `p` (a TABLE payload) lies inside the payload,
 * is aligned, and (strings) has non-decreasing offsets; fills *out.
 * @return 0 or SL_EFORMAT. O(nrows) for strings, O(1) otherwise. */
int sl__table_bind(const sl_payload *p, const sl_column *c, sl__col *out);

static inline bool sl__col_null(const sl__col *c, uint64_t r) {
  return c->valid && !c->valid[r];
}
static inline int64_t sl__col_i64(const sl__col *c, uint64_t r) {
  return ((const int64_t *)c->data)[r];
}
static inline double sl__col_f64(const sl__col *c, uint64_t r) {
  return ((const double *)c->data)[r];
}
static inline uint8_t sl__col_bool(const sl__col *c, uint64_t r) {
  return ((const uint8_t *)c->data)[r] != 0;
}
static inline const char *sl__col_str(const sl__col *c, uint64_t r,
                                      uint64_t *len) {
  const uint64_t *off = c->data;
  *len = off[r + 1] - off[r];
  return c->chars + off[r];
}

/* ---- aggregates ------------------------------------------------------- */

typedef enum sl__agg_fn {
  SL__AGG_ROWS = 0, /* count: rows of the group */
  SL__AGG_COUNT,    /* count(x): non-null values */
  SL__AGG_SUM,
  SL__AGG_MEAN,
  SL__AGG_MIN,
  SL__AGG_MAX,
  SL__AGG_VAR, /* sample variance (ddof 1), as pandas */
  SL__AGG_STD,
  SL__AGG_DISTINCT, /* count_distinct(x) */
  SL__AGG_FIRST,    /* first non-null value in source order */
  SL__AGG_LAST
} sl__agg_fn;

typedef struct sl__agg_spec {
  sl__agg_fn fn;
  char *col;   /* NULL for count */
  char *label; /* output column name: "count", "sum(x)" */
} sl__agg_spec;

typedef struct sl__agg_plan {
  sl__names keys;
  size_t naggs;
  sl__agg_spec *aggs;
} sl__agg_plan;

/* Parses keys= (NULL or "" for none), aggs= and cols= into *plan (freed
 * with sl__agg_plan_free, also after a failure). aggs is a comma-separated
 * list of `count`, `fn(col)`, `fn("odd name")` or `fn(*)`; a run of
 * consecutive fn(*) terms repeats for each column of cols=, column by
 * column. @return 0, SL_EINVAL with *err a malloc'd message, SL_ENOMEM. */
int sl__agg_plan_parse(sl__agg_plan *plan, const char *keys, const char *aggs,
                       const char *cols, char **err);
void sl__agg_plan_free(sl__agg_plan *plan);

/* ---- stage callbacks shared by groupby (keys) and aggregate (none) ---- */

/* Shared state of one groupby/aggregate stage; see agg.c. */
int sl__agg_create(sl_stage *st, const char *keys, const char *aggs,
                   const char *cols, void **state);
void sl__agg_destroy(void *state);
int sl__agg_open(sl_worker *w, void **local);
int sl__agg_process(sl_worker *w, sl_item *in, sl_item **out);
int sl__agg_finish(sl_worker *w);
void sl__agg_close(sl_worker *w);
/* Rank 0 of a distributed run: merges a partial another rank sent. */
int sl__agg_receive(void *state, uint64_t seq, const void *data, size_t len);

/* Text shared by the help of groupby and aggregate. */
#define SL__AGG_HELP_FUNCTIONS                                                 \
  "Aggregates (aggs=, comma-separated; output columns are named as\n"         \
  "written):\n"                                                                \
  "  count              rows of the group (int64)\n"                           \
  "  count(x)           non-null values of x (int64)\n"                        \
  "  sum(x)             int64 for int64/bool x, else float64; 0 when empty\n" \
  "  mean(x)            float64; null when x has no value in the group\n"     \
  "  var(x), std(x)     sample variance / deviation (ddof 1, as pandas);\n"   \
  "                     null with fewer than 2 values\n"                       \
  "  min(x), max(x)     x's type; strings compare bytewise\n"                  \
  "  first(x), last(x)  first / last non-null value in source order\n"        \
  "  count_distinct(x)  distinct non-null values (int64)\n"                    \
  "Nulls are skipped (a float NaN counts as null). sum/mean/var/std need a\n"  \
  "number column (int64, float64 or bool). An odd column name goes in\n"       \
  "double quotes: sum(\"unit price\"). fn(*) stands for each column of\n"      \
  "cols=: aggs=count(*),mean(*) cols=x,y gives count(x),mean(x),count(y),\n"   \
  "mean(y). Results are bit-identical for any thread count: each chunk is\n"   \
  "aggregated in row order (Welford for var/std), and chunk partials are\n"    \
  "merged strictly in chunk (seq) order (Chan's formula for var/std).\n"       \
  "Memory: the merged table holds one entry per group (count_distinct: one\n"  \
  "per distinct (group, value) pair) plus the partials of chunks waiting\n"    \
  "for an earlier chunk; never the input itself. A chunk that fails\n"         \
  "upstream leaves a gap: later partials wait until the end of the input,\n"   \
  "so memory then grows by one partial per later chunk.\n"

#endif
