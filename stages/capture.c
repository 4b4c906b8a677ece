/*
 * capture.c -- `capture`, the sink that ends the first pass of a two-pass
 * pipeline file: it keeps the one-row table it receives (a reduction's or
 * an aggregate's result) as variables for the passes after it.
 *
 * A pipeline file may hold several passes separated by a line `---`; the
 * CLI runs them in order, and after each it asks sl_stages_captured() for
 * the variables the pass's capture stages set: `capture name=stats` given
 * the row min=1.5, max=9 sets ${stats_min}=1.5 and ${stats_max}=9. Column
 * names are turned into variable names by replacing every byte that may
 * not appear in one with `_` and trimming `_` at the ends, so `mean(x)`
 * gives ${stats_mean_x}. Floats are written with 17 significant digits,
 * so the next pass reads back exactly the same double.
 *
 * Serial stage: one worker, no lock; the variables live in the stage's
 * shared state, read after the run.
 */
#include "agg_internal.h"
#include "stages_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct capture_params {
  const char *name;
} capture_params;

typedef struct capture_state {
  char **vars; /* "name_column=value", malloc'd */
  size_t n;
  bool got;
} capture_state;

static bool name_byte(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '_';
}

static void clear_vars(capture_state *s) {
  for (size_t i = 0; i < s->n; i++) free(s->vars[i]);
  free(s->vars);
  s->vars = NULL;
  s->n = 0;
  s->got = false;
}

static int capture_create(sl_stage *st, void **state) {
  const capture_params *p = sl_stage_params(st);
  if (!p->name[0]) return sl_stage_errorf(st, "name= must not be empty");
  for (const char *c = p->name; *c; c++)
    if (!name_byte(*c))
      return sl_stage_errorf(st, "name '%s': only letters, digits and _ may "
                             "appear in a variable name", p->name);
  capture_state *s = calloc(1, sizeof *s);
  if (!s) return SL_ENOMEM;
  *state = s;
  return 0;
}

static void capture_destroy(void *state) {
  capture_state *s = state;
  if (!s) return;
  clear_vars(s);
  free(s);
}

/* "prefix_column=value" with the column made a variable name; value is
 * vn bytes (not NUL-terminated). */
static char *make_var(const char *prefix, const char *col, const char *value,
                      size_t vn) {
  size_t pn = strlen(prefix), cn = strlen(col);
  char *v = malloc(pn + cn + vn + 3);
  if (!v) return NULL;
  memcpy(v, prefix, pn);
  size_t at = pn;
  v[at++] = '_';
  size_t start = at;
  for (size_t i = 0; i < cn; i++) {
    char ch = name_byte(col[i]) ? col[i] : '_';
    if (ch == '_' && (at == start || v[at - 1] == '_')) continue; /* squeeze */
    v[at++] = ch;
  }
  while (at > start && v[at - 1] == '_') at--;
  if (at == start) at--; /* a column of only odd bytes: just the prefix */
  v[at++] = '=';
  memcpy(v + at, value, vn);
  v[at + vn] = '\0';
  return v;
}

/* The text of row 0 of a bound column ("" for null): numbers in buf
 * (cap >= 32), a string as a pointer into the payload (*len bytes). */
static const char *cell_text(const sl__col *c, char *buf, size_t cap, uint64_t *len) {
  buf[0] = '\0';
  if (!sl__col_null(c, 0)) {
    switch (c->type) {
    case SL_DT_I64: snprintf(buf, cap, "%" PRId64, sl__col_i64(c, 0)); break;
    case SL_DT_F64: snprintf(buf, cap, "%.17g", sl__col_f64(c, 0)); break;
    case SL_DT_BOOL: snprintf(buf, cap, "%s", sl__col_bool(c, 0) ? "true" : "false"); break;
    case SL_DT_STRING: return sl__col_str(c, 0, len);
    default: break;
    }
  }
  *len = strlen(buf);
  return buf;
}

static int capture_process(sl_worker *w, sl_item *in, sl_item **out) {
  capture_state *s = sl_worker_shared(w);
  const capture_params *p = sl_worker_params(w);
  *out = NULL;
  const sl_payload *pl = &in->payload;
  if (pl->kind != SL_KIND_TABLE)
    return sl_worker_errorf(w, "expected a table, got %s", sl_kind_name(pl->kind));
  if (pl->u.table.nrows != 1)
    return sl_worker_errorf(w, "capture keeps one row (a reduction's result), "
                            "got %" PRIu64 " rows", pl->u.table.nrows);
  if (s->got)
    return sl_worker_errorf(w, "capture keeps one item, got a second one");
  char **vars = calloc(pl->u.table.ncols + 1, sizeof *vars);
  if (!vars) return SL_ENOMEM;
  int rc = 0;
  for (uint32_t i = 0; i < pl->u.table.ncols && rc == 0; i++) {
    const sl_column *col = &pl->u.table.cols[i];
    sl__col c;
    if (sl__table_bind(pl, col, &c) < 0) {
      rc = sl_worker_errorf(w, "column \"%s\": malformed or unsupported (%s)",
                            col->name, sl_dtype_name(col->dtype));
      break;
    }
    char buf[64];
    uint64_t len;
    const char *text = cell_text(&c, buf, sizeof buf, &len);
    /* Variables travel as lines (between passes, and between ranks). */
    if (memchr(text, '\n', (size_t)len) || memchr(text, '\r', (size_t)len) ||
        memchr(text, '\0', (size_t)len))
      rc = sl_worker_errorf(w, "column \"%s\": a value with a line break or a "
                            "NUL byte cannot become a variable", col->name);
    else if (!(vars[i] = make_var(p->name, col->name, text, (size_t)len)))
      rc = SL_ENOMEM;
  }
  if (rc < 0) {
    for (uint32_t k = 0; k < pl->u.table.ncols; k++) free(vars[k]);
    free(vars);
    return rc;
  }
  clear_vars(s);
  s->vars = vars;
  s->n = pl->u.table.ncols;
  s->got = true;
  return 0;
}

static int capture_open(sl_worker *w, void **local) {
  (void)local;
  if (!sl_worker_sees_all(w))
    return sl_worker_errorf(w, "under mpirun, capture needs a reduction "
                            "(reduce, aggregate, groupby) before it");
  clear_vars(sl_worker_shared(w)); /* a new run starts empty */
  return 0;
}

static int capture_finish(sl_worker *w) {
  capture_state *s = sl_worker_shared(w);
  const capture_params *p = sl_worker_params(w);
  if (!s->got)
    return sl_worker_errorf(w, "nothing to capture: no result reached "
                            "capture name=%s", p->name);
  return 0;
}

size_t sl_stages_captured(const sl_pipeline *p, const char *const **vars) {
  *vars = NULL;
  for (size_t i = 0; i < sl_pipeline_length(p); i++) {
    const sl_stage *st = sl_pipeline_stage(p, i);
    if (sl_stage_definition(st) != &sl__stage_capture) continue;
    const capture_state *s = sl_stage_state(st);
    if (!s || !s->got) continue;
    *vars = (const char *const *)s->vars;
    return s->n;
  }
  return 0;
}

static const sl_param_def capture_tab[] = {
    {"name", SL_PARAM_STRING, offsetof(capture_params, name), NULL, 0, 0, NULL,
     "prefix of the variables: ${NAME_COLUMN}"},
    SL_PARAM_END};

const sl_stage_def sl__stage_capture = {
    .name = "capture",
    .summary = "keep a one-row result as variables for the next pass",
    .help =
        "Ends the first pass of a two-pass pipeline file. A file may hold\n"
        "several passes separated by a line `---`; they run in order, and\n"
        "each pass may use the variables that capture stages of earlier\n"
        "passes set. capture name=NAME takes the one-row table of a reduction\n"
        "(reduce, aggregate) and sets ${NAME_COLUMN} for each column, the\n"
        "column's name with every byte other than a letter, digit or _\n"
        "replaced by _ (mean(x) gives ${NAME_mean_x}). Floats keep all 17\n"
        "digits. Example: standardise a dataset in one command:\n"
        "  h5.read file=${in} dataset=${dataset} ! reduce ops=mean,std\n"
        "  ! capture name=s\n"
        "  ---\n"
        "  h5.read file=${in} dataset=${dataset}\n"
        "  ! map expr=\"(x - ${s_mean}) / ${s_std}\"\n"
        "  ! h5.write file=${out} dataset=${dataset}\n"
        "Variables are substituted outside single quotes only: write\n"
        "expr=\"x > ${s_mean}\", not expr='x > ${s_mean}'. Under mpirun rank 0\n"
        "captures and sends the values to every rank.",
    .exec = SL_EXEC_SERIAL,
    .in_kind = SL_KIND_TABLE,
    .out_kind = SL_KIND_NONE,
    .flags = SL_STAGE_SINK,
    .params = capture_tab,
    .params_size = sizeof(capture_params),
    .create = capture_create,
    .destroy = capture_destroy,
    .open = capture_open,
    .process = capture_process,
    .finish = capture_finish,
};
