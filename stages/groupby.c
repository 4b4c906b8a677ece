/*
 * groupby.c -- `groupby keys=a[,b...] aggs=...`: per-group aggregates of a
 * stream of TABLE chunks, emitted as one TABLE sorted by key.
 *
 * The work is in agg.c (shared with `aggregate`): each chunk becomes a
 * partial hash table, partials merge strictly in chunk order, and finish()
 * emits the result, so results are bit-identical for any thread count.
 * This file holds the parameters and the help.
 */
#include "agg_internal.h"
#include "stages_internal.h"

typedef struct groupby_params {
  const char *keys;
  const char *aggs;
  const char *cols;
} groupby_params;

static int groupby_create(sl_stage *st, void **state) {
  const groupby_params *p = sl_stage_params(st);
  return sl__agg_create(st, p->keys, p->aggs, p->cols, state);
}

static const sl_param_def groupby_params_table[] = {
    {"keys", SL_PARAM_STRING, offsetof(groupby_params, keys), NULL, 0, 0, NULL,
     "key columns, comma-separated (\"odd name\" in double quotes)"},
    {"aggs", SL_PARAM_STRING, offsetof(groupby_params, aggs), "count", 0, 0, NULL,
     "aggregates: count, count(x), sum(x), mean(x), min(x), max(x), var(x), "
     "std(x), count_distinct(x), first(x), last(x), fn(*)"},
    {"cols", SL_PARAM_STRING, offsetof(groupby_params, cols), "", 0, 0, NULL,
     "columns that fn(*) in aggs= stands for"},
    SL_PARAM_END,
};

const sl_stage_def sl__stage_groupby = {
    .name = "groupby",
    .summary = "group table rows by key columns and aggregate each group",
    .help =
        "Consumes TABLE chunks and, after the last one, emits one TABLE item\n"
        "(seq 0, named \"result\"): the key columns first, one row per\n"
        "distinct key, sorted by key (numbers ascending, strings bytewise,\n"
        "false before true, nulls first), then one column per aggregate.\n"
        "Nulls in a key column form their own group.\n"
        SL__AGG_HELP_FUNCTIONS
        "A column missing from a chunk fails that chunk, naming the columns\n"
        "it has; if any chunk failed, no result is emitted.\n"
        "Example: csv.read file=sales.csv ! csv.parse\n"
        "  ! groupby keys=region aggs=count,sum(amount),mean(amount)\n"
        "  ! csv.write file=by_region.csv",
    .exec = SL_EXEC_CPU,
    .in_kind = SL_KIND_TABLE,
    .out_kind = SL_KIND_TABLE,
    .params = groupby_params_table,
    .params_size = sizeof(groupby_params),
    .create = groupby_create,
    .destroy = sl__agg_destroy,
    .open = sl__agg_open,
    .process = sl__agg_process,
    .finish = sl__agg_finish,
    .receive = sl__agg_receive,
    .close = sl__agg_close,
};
