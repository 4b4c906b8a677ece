/*
 * discard.c -- `discard`, a sink that drops every item.
 *
 * The end of pipelines that are run for their side effects or timed: the
 * engine's per-stage statistics count the items and bytes that reach it.
 * Stateless and thread-safe.
 */
#include "stages_internal.h"

/* Takes nothing: *out = NULL tells the engine to destroy `in`. */
static int discard_process(sl_worker *w, sl_item *in, sl_item **out) {
  (void)w;
  (void)in;
  *out = NULL;
  return 0;
}

const sl_stage_def sl__stage_discard = {
    .name = "discard",
    .summary = "drop every item (a sink for benchmarks and side effects)",
    .help =
        "Consumes items of any kind and drops them, releasing their payload\n"
        "memory. The run's statistics still count the items and bytes that\n"
        "reached it, so `gen ! ... ! discard` measures a pipeline without\n"
        "any output cost.",
    .exec = SL_EXEC_CPU,
    .in_kind = SL_KIND_ANY,
    .out_kind = SL_KIND_NONE,
    .flags = SL_STAGE_SINK,
    .process = discard_process,
};
