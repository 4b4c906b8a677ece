/*
 * aggregate.c -- `aggregate aggs=...`: the aggregates of groupby over the
 * whole input, without keys: one result row.
 *
 * The work is in agg.c (shared with groupby); this file holds the
 * parameters and the help. With cols=, fn(*) repeats per column, which is
 * how pipelines/csv_stats.pipe asks for count/mean/std/min/max of each.
 */
#include "agg_internal.h"
#include "stages_internal.h"

typedef struct aggregate_params {
  const char *aggs;
  const char *cols;
} aggregate_params;

static int aggregate_create(sl_stage *st, void **state) {
  const aggregate_params *p = sl_stage_params(st);
  return sl__agg_create(st, NULL, p->aggs, p->cols, state);
}

static const sl_param_def aggregate_params_table[] = {
    {"aggs", SL_PARAM_STRING, offsetof(aggregate_params, aggs), "count", 0, 0, NULL,
     "aggregates: count, count(x), sum(x), mean(x), min(x), max(x), var(x), "
     "std(x), count_distinct(x), first(x), last(x), fn(*)"},
    {"cols", SL_PARAM_STRING, offsetof(aggregate_params, cols), "", 0, 0, NULL,
     "columns that fn(*) in aggs= stands for"},
    SL_PARAM_END,
};

const sl_stage_def sl__stage_aggregate = {
    .name = "aggregate",
    .summary = "aggregate all table rows into one row (count, sum, mean, ...)",
    .help =
        "Consumes TABLE chunks and, after the last one, emits one TABLE item\n"
        "(seq 0, named \"result\") with exactly one row: one column per\n"
        "aggregate. Over no rows, count is 0, sum 0, and the others null.\n"
        SL__AGG_HELP_FUNCTIONS
        "Example (statistics of two columns, as pipelines/csv_stats.pipe):\n"
        "  aggregate cols=x,y aggs=count(*),mean(*),std(*),min(*),max(*)\n"
        "  gives count(x),mean(x),std(x),min(x),max(x),count(y),...",
    .exec = SL_EXEC_CPU,
    .in_kind = SL_KIND_TABLE,
    .out_kind = SL_KIND_TABLE,
    .params = aggregate_params_table,
    .params_size = sizeof(aggregate_params),
    .create = aggregate_create,
    .destroy = sl__agg_destroy,
    .open = sl__agg_open,
    .process = sl__agg_process,
    .finish = sl__agg_finish,
    .receive = sl__agg_receive,
    .close = sl__agg_close,
};
