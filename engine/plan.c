/*
 * plan.c -- how a checked pipeline will run: workers and queue capacity per
 * stage (shared with run.c so the plan and the run agree) and the worst-case
 * payload memory printed by `sluice plan`.
 *
 * The bound: every payload lives in the arena. Sources wait when the budget
 * is spent; stages downstream may overdraw it by their outputs in flight (see
 * run.c), up to a hard limit of twice the budget. When every stage declares
 * its item size, the queues and in-flight batches give a tighter bound:
 * sum over queues of capacity x item size, plus per stage the batch it holds.
 */
#include "run_internal.h"

#include <string.h>

unsigned sl__stage_workers(const sl_stage *st, unsigned threads) {
  const sl_stage_def *d = st->def;
  if ((d->flags & SL_STAGE_SOURCE) || d->exec == SL_EXEC_SERIAL) return 1;
  if (d->exec == SL_EXEC_IO) return st->workers ? st->workers : SL__DEFAULT_IO_WORKERS;
  unsigned w = st->workers ? st->workers : threads;
  return w < threads ? w : threads;
}

size_t sl__stage_queue(const sl_stage *st, const sl_run_options *opt) {
  if (st->queue) return st->queue;
  return opt && opt->queue_capacity ? opt->queue_capacity : SL__DEFAULT_QUEUE;
}

uint64_t sl__queue_bytes(const sl_run_options *opt) {
  return opt && opt->queue_bytes ? opt->queue_bytes : SL__DEFAULT_QUEUE_BYTES;
}

unsigned sl__queue_min_items(sl_pipeline *p, size_t consumer, unsigned threads) {
  return sl__stage_workers(p->stages[consumer], threads);
}

/* A cpu stage without finish() hands each output straight to the next cpu
 * stage on the same thread when both have the same workers: no queue hop,
 * and the item is still in that core's cache (cpuexec.c). A stage with
 * finish() may emit items after its last input, which only its own driver
 * could pass on, so it ends a fused chain. */
static bool fusable(const sl_stage *st) {
  return st->def->exec == SL_EXEC_CPU && !(st->def->flags & SL_STAGE_SOURCE);
}

bool sl__fuses_with_next(const sl_pipeline *p, size_t i, unsigned threads,
                         const sl_run_options *opt) {
  if ((opt && opt->no_fuse) || i + 1 >= p->n) return false;
  const sl_stage *a = p->stages[i], *b = p->stages[i + 1];
  return fusable(a) && fusable(b) && !a->def->finish &&
         sl__stage_workers(a, threads) == sl__stage_workers(b, threads);
}

/* Bytes per output item of stage i, following SAME kinds upstream; 0 when
 * unknown. */
static uint64_t out_item_bytes(sl_pipeline *p, size_t i) {
  for (;;) {
    const sl_stage *st = p->stages[i];
    if (st->def->item_bytes) return st->def->item_bytes(st);
    if (st->def->out_kind != SL_KIND_SAME || i == 0) return 0;
    i--;
  }
}

static uint64_t min64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* Bytes a queue can hold: its item capacity, or its byte limit plus the
 * one item that may cross it, or its minimum of `least` items (one per
 * consumer worker) if that is more. */
static uint64_t queue_bound(const sl_stage *st, const sl_run_options *opt,
                            uint64_t ib, unsigned least) {
  uint64_t by_bytes = sl__queue_bytes(opt) + ib;
  if ((uint64_t)least * ib > by_bytes) by_bytes = (uint64_t)least * ib;
  return min64((uint64_t)sl__stage_queue(st, opt) * ib, by_bytes);
}

/* Bytes stage i holds in hand besides its queues: a source's unflushed
 * batch; an io stage's items in its workers (and reorder window); a cpu
 * stage's popped batch, which cannot exceed what its input queue held. */
static uint64_t in_hand(sl_pipeline *p, size_t i, unsigned workers,
                        const sl_run_options *opt, uint64_t ib) {
  const sl_stage *st = p->stages[i];
  if (st->def->flags & SL_STAGE_SOURCE)
    return min64(SL__BATCH_MAX * ib, SL__BATCH_BYTES + ib);
  uint64_t in_ib = out_item_bytes(p, i - 1);
  if (st->def->exec == SL_EXEC_IO) return (uint64_t)(3 * workers + 8) * in_ib;
  return queue_bound(p->stages[i - 1], opt, in_ib, workers);
}

int sl_pipeline_plan(sl_pipeline *p, const sl_run_options *opt, FILE *out) {
  if (sl_pipeline_check(p) < 0) return SL_EPARSE;
  sl_run_options defaults;
  if (!opt) {
    sl_run_options_init(&defaults);
    opt = &defaults;
  }
  unsigned threads = opt->threads ? opt->threads : sl_cores_default();
  uint64_t budget = opt->memory_bytes ? opt->memory_bytes : SL__DEFAULT_MEMORY;
  fprintf(out, "pipeline %s: %zu stages, %u threads\n",
          p->filename ? p->filename : "<api>", p->n, threads);
  fprintf(out, "  %-3s %-16s %-6s %-7s %-7s %-7s %-8s %s\n", "#", "stage",
          "class", "workers", "input", "output", "order", "queue");
  uint64_t queued = 0, hand = 0;
  bool known = true;
  for (size_t i = 0; i < p->n; i++) {
    const sl_stage *st = p->stages[i];
    unsigned w = sl__stage_workers(st, threads);
    bool last = i + 1 == p->n, fused = sl__fuses_with_next(p, i, threads, opt);
    char q[24];
    if (last) snprintf(q, sizeof q, "-");
    else if (fused) snprintf(q, sizeof q, "fused");
    else snprintf(q, sizeof q, "%zu", sl__stage_queue(st, opt));
    fprintf(out, "  %-3zu %-16s %-6s %-7u %-7s %-7s %-8s %s\n", i + 1,
            st->def->name, sl_exec_class_name(st->def->exec), w,
            st->in_kind == SL_KIND_NONE ? "-" : sl_kind_name(st->in_kind),
            st->out_kind == SL_KIND_NONE ? "-" : sl_kind_name(st->out_kind),
            st->order == SL__ORDER_ANY ? "any" : "source", q);
    if (last) continue;
    uint64_t ib = out_item_bytes(p, i);
    if (!ib && st->out_kind != SL_KIND_NONE) known = false;
    if (i > 0 && sl__fuses_with_next(p, i - 1, threads, opt))
      hand += (uint64_t)w * out_item_bytes(p, i - 1); /* one input per thread */
    else
      hand += in_hand(p, i, w, opt, ib);
    if (!fused) queued += queue_bound(st, opt, ib, sl__queue_min_items(p, i + 1, threads));
  }
  uint64_t hard = 2 * budget, bound = known && queued + hand < hard ? queued + hand : hard;
  char b1[24], b2[24], b3[24], b4[24];
  sl__format_bytes(b1, sizeof b1, budget);
  sl__format_bytes(b2, sizeof b2, bound);
  sl__format_bytes(b3, sizeof b3, queued);
  sl__format_bytes(b4, sizeof b4, hand);
  char b5[24];
  sl__format_bytes(b5, sizeof b5, sl__queue_bytes(opt));
  fprintf(out, "memory: arena budget %s (--memory), queues up to %s each (--queue-bytes)\n", b1, b5);
  if (known)
    fprintf(out, "worst case: %s of payload (queues %s + in flight %s, capped at twice the budget)\n",
            b2, b3, b4);
  else
    fprintf(out, "worst case: %s of payload (item sizes not known before running: twice the budget)\n",
            b2);
  return 0;
}
