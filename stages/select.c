/*
 * select.c -- `select cols=a,b`: keeps the listed columns of TABLE items, in
 * the listed order.
 *
 * Zero copy: the output item is a new item (same seq, name, line and
 * metadata) holding another reference to the very same arena block and a new
 * column array; no value is copied. Column offsets are relative to
 * payload.data, which is unchanged, so they carry over as they are. The
 * column list is parsed once in create() and never changes, so any number of
 * workers may run process() at once.
 */
#include <stdlib.h>

#include "agg_internal.h"
#include "stages_internal.h"

typedef struct select_params {
  const char *cols;
} select_params;

static int select_create(sl_stage *st, void **state) {
  const select_params *p = sl_stage_params(st);
  sl__names *names = calloc(1, sizeof *names);
  if (!names) return SL_ENOMEM;
  char *err = NULL;
  int rc = sl__names_parse(p->cols, "cols", names, &err);
  if (rc == 0 && names->n == 0) {
    rc = sl_stage_errorf(st, "cols: no column");
  } else if (rc < 0 && err) {
    rc = sl_stage_errorf(st, "%s", err);
  }
  free(err);
  if (rc < 0) {
    sl__names_free(names);
    free(names);
    return rc;
  }
  *state = names;
  return 0;
}

static void select_destroy(void *state) {
  if (!state) return;
  sl__names_free(state);
  free(state);
}

static void free_cols(sl_column *cols, size_t n) {
  for (size_t i = 0; cols && i < n; i++) free(cols[i].name);
  free(cols);
}

/* A new column array: the chosen columns, names copied. @return 0 with
 * *out (caller owns it), SL_ENOMEM, or a missing column (worker error). */
static int pick(sl_worker *w, const sl__names *names, const sl_table_desc *t,
                sl_column **out) {
  sl_column *cols = calloc(names->n, sizeof *cols);
  if (!cols) return SL_ENOMEM;
  for (size_t i = 0; i < names->n; i++) {
    int k = sl__table_find(t, names->v[i]);
    if (k < 0) {
      free_cols(cols, i);
      return sl__table_no_column(w, "", t, names->v[i]);
    }
    cols[i] = t->cols[k];
    size_t len = strlen(names->v[i]) + 1;
    if (!(cols[i].name = malloc(len))) {
      free_cols(cols, i);
      return SL_ENOMEM;
    }
    memcpy(cols[i].name, names->v[i], len);
  }
  *out = cols;
  return 0;
}

/* On success *out is a new item viewing in's block; `in` is untouched. */
static int select_process(sl_worker *w, sl_item *in, sl_item **out) {
  const sl__names *names = sl_worker_shared(w);
  *out = NULL;
  if (in->payload.kind != SL_KIND_TABLE)
    return sl_worker_errorf(w, "expected a table, got %s",
                            sl_kind_name(in->payload.kind));
  sl_column *cols = NULL;
  int rc = pick(w, names, &in->payload.u.table, &cols);
  if (rc < 0) return rc;
  sl_item *o = sl_item_derive(in);
  if (!o) {
    free_cols(cols, names->n);
    return SL_ENOMEM;
  }
  sl_block *b = in->payload.block;
  size_t offset = b ? (size_t)((char *)in->payload.data - (char *)sl_block_data(b)) : 0;
  if (b) sl_item_set_block(o, SL_KIND_TABLE, sl_block_retain(b), offset, in->payload.size);
  o->payload.kind = SL_KIND_TABLE;
  o->payload.u.table = in->payload.u.table;
  o->payload.u.table.ncols = (uint32_t)names->n;
  o->payload.u.table.cols = cols;
  *out = o;
  return 0;
}

static const sl_param_def select_params_table[] = {
    {"cols", SL_PARAM_STRING, offsetof(select_params, cols), NULL, 0, 0, NULL,
     "columns to keep, in this order, comma-separated (\"odd name\" quoted)"},
    SL_PARAM_END,
};

const sl_stage_def sl__stage_select = {
    .name = "select",
    .summary = "keep some columns of table items (zero copy)",
    .help =
        "Keeps the columns listed in cols=, in that order, and drops the\n"
        "others. No data is copied: the output shares the input's memory and\n"
        "only gets a new column list. A name with commas or blanks goes in\n"
        "double quotes (\"\" for a quote): cols='id,\"unit price\"'. A chunk\n"
        "without one of the columns fails, naming the columns it has.\n"
        "Example: csv.read file=a.csv ! csv.parse ! select cols=id,x\n"
        "  ! csv.write file=b.csv",
    .exec = SL_EXEC_CPU,
    .in_kind = SL_KIND_TABLE,
    .out_kind = SL_KIND_TABLE,
    .params = select_params_table,
    .params_size = sizeof(select_params),
    .create = select_create,
    .destroy = select_destroy,
    .process = select_process,
};
