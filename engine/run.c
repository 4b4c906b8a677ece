/*
 * run.c -- the run loop: builds the runtime of a checked pipeline, starts its
 * threads, moves items, applies the error policy, and stops cleanly.
 *
 * Threads. Each source runs on its own thread. Each cpu or serial stage has
 * one driver thread that pops batches and runs them under OpenMP (cpuexec.c).
 * Each io stage runs `workers` long-lived worker loops on the shared I/O
 * pool. A monitor thread draws the progress bar and flushes the journal.
 * Every stage i > 0 pops from queue in(i) = out(i-1); the last worker of a
 * stage to finish closes its output queue, so "closed and drained" flows
 * down the chain and every thread ends.
 *
 * Memory. Sources allocate within the arena budget and wait when it is
 * spent; downstream stages may overdraw it by their in-flight outputs (at
 * most one per worker), which guarantees progress: only sources wait on the
 * budget, and everything downstream of them drains. sluice plan prints the
 * resulting bound.
 *
 * Stopping. sl__run_stop() (interrupt, or --on-error=stop) sets `stopping`,
 * cancels the arena and the core budget (so no thread waits on them) and
 * abandons every queue: queued items are destroyed, blocked pushes and pops
 * return SL_ECLOSED, in-flight items finish or fail with SL_ECANCELED, and
 * the threads wind down. finish() is not called on a stopped run.
 *
 * Lock order: run->mu is a leaf (never held while taking another lock);
 * reorder->mu may be held while pushing to a queue (queue locks are leaves).
 */
#include "run_internal.h"

#include <omp.h>
#include <string.h>

/* ---------------------------------------------------------------------- */
/* options                                                                 */

void sl_run_options_init(sl_run_options *opt) {
  memset(opt, 0, sizeof *opt);
  opt->on_error = SL_ON_ERROR_SKIP;
  opt->progress = SL_PROGRESS_AUTO;
}

/* ---------------------------------------------------------------------- */
/* worker context API                                                     */

sl_stage *sl_worker_stage(sl_worker *w) { return w->rt->st; }
const void *sl_worker_params(sl_worker *w) { return w->rt->st->params; }
void *sl_worker_shared(sl_worker *w) { return w->rt->st->state; }
void *sl_worker_local(sl_worker *w) { return w->local; }
unsigned sl_worker_index(const sl_worker *w) { return w->index; }
unsigned sl_worker_count(const sl_worker *w) { return w->count; }
sl_arena *sl_worker_arena(sl_worker *w) { return w->run->arena; }

bool sl_worker_canceled(const sl_worker *w) {
  return atomic_load_explicit(&w->run->stopping, memory_order_relaxed);
}

int sl_worker_alloc(sl_worker *w, size_t size, sl_block **out) {
  *out = NULL;
  if (sl_worker_canceled(w)) return SL_ECANCELED;
  if (w->rt->def->flags & SL_STAGE_SOURCE)
    return sl_arena_alloc(w->run->arena, size, out);
  /* Downstream stages overdraw instead of waiting (see the top comment);
   * the hard stop at twice the budget only guards against a runaway. */
  return sl_arena_alloc_ex(w->run->arena, size,
                           2 * sl_arena_budget(w->run->arena), out);
}

int sl_worker_verrorf(sl_worker *w, const char *fmt, va_list ap) {
  vsnprintf(w->err, sizeof w->err, fmt, ap);
  return SL_ESTAGE;
}

int sl_worker_errorf(sl_worker *w, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  sl_worker_verrorf(w, fmt, ap);
  va_end(ap);
  return SL_ESTAGE;
}

void sl_worker_set_total(sl_worker *w, uint64_t total) {
  w->rt->total = total;
  atomic_store(&w->run->total, total);
}

static bool done_before(sl_run *r, const char *name) {
  if (r->journal && sl__journal_has(r->journal, name)) return true;
  sl__rt *sink = &r->rt[r->n - 1];
  return sink->def->is_done && sink->def->is_done(sink->st->state, name);
}

/* Sources ask before producing; a yes counts the item as skipped. The
 * source thread remembers that it asked, so the engine's own check of the
 * produced item (for sources that do not ask) does not ask again. */
bool sl_worker_is_done(sl_worker *w, const char *name) {
  sl_run *r = w->run;
  if (!r->opt.resume) return false;
  w->asked_done = true;
  if (!done_before(r, name)) return false;
  atomic_fetch_add(&r->skipped, 1);
  return true;
}

/* ---------------------------------------------------------------------- */
/* failures and stopping                                                   */

static void add_failure(sl_run *r, const char *item, const char *stage,
                        const char *msg) {
  sl__mutex_lock(&r->mu);
  if (r->nfailures == r->capfailures) {
    size_t cap = r->capfailures ? 2 * r->capfailures : 16;
    sl__failure *f = realloc(r->failures, cap * sizeof *f);
    if (!f) {
      sl__mutex_unlock(&r->mu);
      return; /* the count still says it failed */
    }
    r->failures = f;
    r->capfailures = cap;
  }
  sl__failure *f = &r->failures[r->nfailures];
  f->item = sl__strdup(item);
  f->stage = sl__strdup(stage);
  f->message = sl__strdup(msg);
  if (f->item && f->stage && f->message) {
    r->nfailures++;
  } else {
    free(f->item);
    free(f->stage);
    free(f->message);
  }
  sl__mutex_unlock(&r->mu);
}

void sl__run_add_failure(sl_run *r, const char *item, const char *stage,
                         const char *msg) {
  add_failure(r, item, stage, msg);
  atomic_fetch_add_explicit(&r->failed, 1, memory_order_relaxed);
}

void sl__dispose_item(void *item) { sl_item_destroy(item); }

void sl__run_stop(sl_run *r, const char *why) {
  sl__mutex_lock(&r->mu);
  if (why && !r->error) r->error = sl__strdup(why);
  sl__mutex_unlock(&r->mu);
  if (atomic_exchange(&r->stopping, true)) return;
  sl_arena_cancel(r->arena);
  sl_cores_cancel(r->cores);
  for (size_t i = 0; i < r->n; i++) {
    if (r->rt[i].out) sl_queue_abandon(r->rt[i].out, sl__dispose_item);
    sl__reorder *ro = r->rt[i].reorder;
    if (ro) {
      sl__mutex_lock(&ro->mu);
      sl__cond_broadcast(&ro->room);
      sl__mutex_unlock(&ro->mu);
    }
  }
  sl__mutex_lock(&r->mu);
  sl__cond_broadcast(&r->tick);
  sl__mutex_unlock(&r->mu);
}

void sl_run_cancel(sl_run *run) {
  atomic_store(&run->canceled, true);
  sl__run_stop(run, "interrupted");
}

/* ---------------------------------------------------------------------- */
/* processing one item: retries, failures, completion                     */

void sl__trace_add(sl_run *r, uint32_t stage, uint32_t tid, uint64_t t0,
                   uint64_t t1, uint64_t seq) {
  if (!r->tracing) return;
  uint64_t i = atomic_fetch_add_explicit(&r->ntrace, 1, memory_order_relaxed);
  if (i >= SL__TRACE_MAX_EVENTS) return;
  r->trace[i] = (sl__trace_ev){t0, t1 - t0, seq, stage, tid};
}

static void item_completed(sl_worker *w, const char *name) {
  w->acc.ok++;
  if (w->run->journal) sl__journal_add(w->run->journal, name);
}

void sl__worker_flush(sl_worker *w) {
  sl__rt *rt = w->rt;
  memory_order mo = memory_order_relaxed;
  if (w->acc.items_in) atomic_fetch_add_explicit(&rt->items_in, w->acc.items_in, mo);
  if (w->acc.bytes_in) atomic_fetch_add_explicit(&rt->bytes_in, w->acc.bytes_in, mo);
  if (w->acc.items_out) atomic_fetch_add_explicit(&rt->items_out, w->acc.items_out, mo);
  if (w->acc.bytes_out) atomic_fetch_add_explicit(&rt->bytes_out, w->acc.bytes_out, mo);
  if (w->acc.busy_ns) atomic_fetch_add_explicit(&rt->busy_ns, w->acc.busy_ns, mo);
  if (w->acc.ok) atomic_fetch_add_explicit(&w->run->ok, w->acc.ok, mo);
  memset(&w->acc, 0, sizeof w->acc);
}

static void item_failed(sl_worker *w, sl_item *in, int rc) {
  sl_run *r = w->run;
  const char *msg = w->err[0] ? w->err : sl_strerror(rc);
  add_failure(r, in->name, w->rt->def->name, msg);
  atomic_fetch_add_explicit(&r->failed, 1, memory_order_relaxed);
  if (r->opt.on_error == SL_ON_ERROR_STOP) {
    char *why = sl__asprintf("stopped: item '%s' failed in stage '%s': %s",
                             in->name, w->rt->def->name, msg);
    sl__run_stop(r, why ? why : "stopped after a failure");
    free(why);
  }
}

/* Runs process() on `in` with retries. @return 0 with *out the output (NULL
 * when the item was consumed: sink, dropped, failed or canceled); `in` is
 * owned by this function. @return < 0 only to tell the caller the item
 * failed (already recorded and destroyed). */
int sl__process_item(sl_worker *w, sl_item *in, sl_item **out) {
  sl__rt *rt = w->rt;
  sl_run *r = w->run;
  *out = NULL;
  w->acc.items_in++;
  w->acc.bytes_in += in->payload.size;
  for (;;) {
    w->err[0] = '\0';
    sl_item *o = NULL;
    /* Busy time is measured per batch by the caller; per item only when
     * tracing, which needs each item's span. */
    uint64_t t0 = r->tracing ? sl_now_ns() : 0;
    int rc = rt->def->process(w, in, &o);
    if (r->tracing)
      sl__trace_add(r, (uint32_t)rt->index, w->index, t0, sl_now_ns(), in->seq);
    if (rc >= 0) {
      if (o) {
        w->acc.items_out++;
        w->acc.bytes_out += o->payload.size;
      } else {
        item_completed(w, in->name); /* sink or dropped by a filter */
      }
      if (o != in) sl_item_destroy(in);
      *out = o;
      return 0;
    }
    if (rc == SL_ECANCELED && sl_worker_canceled(w)) {
      sl_item_destroy(in); /* abandoned, not failed */
      return 0;
    }
    if (in->attempts < r->opt.retries && !sl_worker_canceled(w)) {
      in->attempts++;
      continue;
    }
    item_failed(w, in, rc);
    sl_item_destroy(in);
    return rc;
  }
}

/* ---------------------------------------------------------------------- */
/* worker open / finish / close                                            */

int sl__worker_open(sl_worker *w) {
  if (w->opened) return 0;
  w->local = NULL;
  w->err[0] = '\0';
  if (w->rt->def->open) {
    int rc = w->rt->def->open(w, &w->local);
    if (rc < 0) {
      char *why = sl__asprintf("stage '%s' failed to start: %s",
                               w->rt->def->name,
                               w->err[0] ? w->err : sl_strerror(rc));
      sl__run_stop(w->run, why ? why : "a stage failed to start");
      free(why);
      return rc;
    }
  }
  w->opened = true;
  return 0;
}

/* Emits the results of finish() on the worker's behalf. */
int sl_worker_emit(sl_worker *w, sl_item *item) {
  sl__rt *rt = w->rt;
  if (!rt->out) { /* a sink emitting: the item is complete */
    item_completed(w, item->name);
    sl_item_destroy(item);
    sl__worker_flush(w);
    return 0;
  }
  atomic_fetch_add_explicit(&rt->items_out, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&rt->bytes_out, item->payload.size, memory_order_relaxed);
  if (sl_queue_push(rt->out, item) < 0) {
    sl_item_destroy(item);
    return SL_ECANCELED;
  }
  return 0;
}

void sl__worker_finish_close(sl_worker *w, bool call_finish) {
  if (!w->opened) return;
  if (call_finish) sl__dist_wait_ranks(w); /* rank 0: all partials in */
  if (call_finish && w->rt->def->finish && !sl_worker_canceled(w)) {
    w->err[0] = '\0';
    int rc = w->rt->def->finish(w);
    if (rc < 0 && rc != SL_ECANCELED) {
      add_failure(w->run, "(finish)", w->rt->def->name,
                  w->err[0] ? w->err : sl_strerror(rc));
      atomic_fetch_add(&w->run->failed, 1);
    }
  }
  if (w->rt->def->close) w->rt->def->close(w);
  w->opened = false;
  sl__worker_flush(w);
}

/* The last worker of a stage to leave closes its output queue (and, on a
 * rank > 0, tells rank 0 that the reducing stage sent all its partials). */
void sl__stage_worker_done(sl__rt *rt) {
  if (atomic_fetch_sub(&rt->live, 1) != 1) return;
  sl__dist_stage_done(rt);
  if (rt->out) sl_queue_close(rt->out);
}

/* ---------------------------------------------------------------------- */
/* sources                                                                 */

static bool source_skip(sl_worker *w, sl_item *it) {
  bool asked = w->asked_done;
  w->asked_done = false;
  if (!w->run->opt.resume || asked || !done_before(w->run, it->name)) return false;
  atomic_fetch_add(&w->run->skipped, 1);
  sl_item_destroy(it);
  return true;
}

/* Pushes the batch; on a closed queue destroys what did not go in. */
static int push_batch(sl_queue *q, sl_item **batch, size_t n) {
  size_t pushed = 0;
  int rc = sl_queue_push_many(q, (void *const *)batch, n, &pushed);
  for (size_t i = pushed; i < n; i++) sl_item_destroy(batch[i]);
  return rc;
}

static void source_failed(sl_worker *w, int rc) {
  sl_run *r = w->run;
  const char *msg = w->err[0] ? w->err : sl_strerror(rc);
  add_failure(r, "(source)", w->rt->def->name, msg);
  atomic_fetch_add(&r->failed, 1);
  char *why = sl__asprintf("source '%s' failed: %s", w->rt->def->name, msg);
  if (r->opt.on_error == SL_ON_ERROR_STOP) sl__run_stop(r, why);
  free(why);
}

static void *source_main(void *arg) {
  sl__rt *rt = arg;
  sl_worker *w = &rt->workers[0];
  sl__thread_name(rt->def->name);
  bool cpu = rt->def->exec != SL_EXEC_IO;
  sl_item *batch[SL__BATCH_MAX];
  if (sl__worker_open(w) == 0) {
    bool done = false;
    while (!done && !sl_worker_canceled(w)) {
      size_t n = 0, bytes = 0;
      if (cpu && sl_cores_acquire(w->run->cores, 1) < 0) break;
      uint64_t t_batch = sl_now_ns();
      while (n < SL__BATCH_MAX && bytes < SL__BATCH_BYTES) {
        sl_item *it = NULL;
        w->err[0] = '\0';
        uint64_t t0 = sl_now_ns();
        int rc = rt->def->produce(w, &it);
        uint64_t t1 = sl_now_ns();
        w->acc.busy_ns += t1 - t0;
        if (rc == SL_DONE || rc < 0) {
          if (rc < 0 && !(rc == SL_ECANCELED && sl_worker_canceled(w)))
            source_failed(w, rc);
          sl_item_destroy(it);
          done = true;
          break;
        }
        if (!it) continue;
        if (!sl_worker_owns(w, it->seq)) { /* another rank's item */
          sl_item_destroy(it);
          continue;
        }
        sl__trace_add(w->run, (uint32_t)rt->index, 0, t0, t1, it->seq);
        if (source_skip(w, it)) continue;
        w->acc.items_out++;
        w->acc.bytes_out += it->payload.size;
        bytes += it->payload.size;
        batch[n++] = it;
        if (t1 - t_batch > 2000000) break; /* slow producer: flush now */
      }
      if (cpu) sl__cores_release_held(rt, 1);
      sl__worker_flush(w);
      atomic_fetch_add(&w->run->produced, n);
      if (n && push_batch(rt->out, batch, n) < 0) break;
    }
    sl__worker_finish_close(w, false);
  }
  sl__stage_worker_done(rt);
  return NULL;
}

/* ---------------------------------------------------------------------- */
/* io stages: worker loops on the pool, optional reorder                  */

static int reorder_create(sl__reorder **out, unsigned window) {
  sl__reorder *ro = calloc(1, sizeof *ro);
  if (!ro) return SL_ENOMEM;
  ro->slot = calloc(window, sizeof *ro->slot);
  ro->filled = calloc(window, sizeof *ro->filled);
  if (!ro->slot || !ro->filled) {
    free(ro->slot);
    free(ro->filled);
    free(ro);
    return SL_ENOMEM;
  }
  sl__mutex_init(&ro->mu);
  sl__cond_init(&ro->room);
  ro->window = ro->free_slots = window;
  *out = ro;
  return 0;
}

static void reorder_destroy(sl__reorder *ro) {
  if (!ro) return;
  for (unsigned i = 0; i < ro->window; i++) sl_item_destroy(ro->slot[i]);
  pthread_mutex_destroy(&ro->mu);
  pthread_cond_destroy(&ro->room);
  free(ro->slot);
  free(ro->filled);
  free(ro);
}

/* Takes a window slot before popping. @return false when stopping. */
static bool reorder_enter(sl__reorder *ro, sl_run *r) {
  sl__mutex_lock(&ro->mu);
  while (ro->free_slots == 0 && !atomic_load(&r->stopping))
    sl__cond_wait(&ro->room, &ro->mu);
  bool ok = ro->free_slots > 0 && !atomic_load(&r->stopping);
  if (ok) ro->free_slots--;
  sl__mutex_unlock(&ro->mu);
  return ok;
}

static void reorder_cancel_slot(sl__reorder *ro) {
  sl__mutex_lock(&ro->mu);
  ro->free_slots++;
  sl__cond_signal(&ro->room);
  sl__mutex_unlock(&ro->mu);
}

/* Files ticket `t`'s result (item or NULL) and emits every result that is
 * now in order. */
static void reorder_put(sl__rt *rt, uint64_t t, sl_item *item) {
  sl__reorder *ro = rt->reorder;
  sl__mutex_lock(&ro->mu);
  unsigned s = (unsigned)(t % ro->window);
  ro->slot[s] = item;
  ro->filled[s] = true;
  for (;;) {
    unsigned h = (unsigned)(ro->next % ro->window);
    if (!ro->filled[h]) break;
    sl_item *it = ro->slot[h];
    ro->slot[h] = NULL;
    ro->filled[h] = false;
    ro->next++;
    ro->free_slots++;
    sl__cond_signal(&ro->room);
    if (it && sl_queue_push(rt->out, it) < 0) sl_item_destroy(it);
  }
  sl__mutex_unlock(&ro->mu);
}

static void io_worker_main(void *arg) {
  sl_worker *w = arg;
  sl__rt *rt = w->rt;
  if (sl__worker_open(w) == 0) {
    for (;;) {
      if (rt->reorder && !reorder_enter(rt->reorder, w->run)) break;
      void *p;
      size_t n = 0;
      uint64_t ticket = 0;
      if (sl_queue_pop_many(rt->in, &p, 1, &n, &ticket) < 0) {
        if (rt->reorder) reorder_cancel_slot(rt->reorder);
        break;
      }
      sl_item *out = NULL;
      uint64_t t0 = sl_now_ns();
      sl__process_item(w, p, &out);
      w->acc.busy_ns += sl_now_ns() - t0;
      sl__worker_flush(w);
      if (rt->reorder) {
        reorder_put(rt, ticket, out);
      } else if (out && (!rt->out || sl_queue_push(rt->out, out) < 0)) {
        sl_item_destroy(out);
      }
    }
    sl__worker_finish_close(w, !atomic_load(&w->run->stopping));
  }
  sl__stage_worker_done(rt);
}

/* ---------------------------------------------------------------------- */
/* create / execute / destroy                                              */

static size_t item_weight(const void *item) {
  return ((const sl_item *)item)->payload.size;
}

static int build_stage(sl_run *r, size_t i) {
  sl__rt *rt = &r->rt[i];
  rt->st = r->p->stages[i];
  rt->def = rt->st->def;
  rt->run = r;
  rt->index = i;
  rt->nworkers = sl__stage_workers(rt->st, r->threads);
  rt->workers = calloc(rt->nworkers, sizeof *rt->workers);
  if (!rt->workers) return SL_ENOMEM;
  for (unsigned k = 0; k < rt->nworkers; k++) {
    rt->workers[k] = (sl_worker){.rt = rt, .run = r, .index = k,
                                 .count = rt->nworkers};
  }
  if (i + 1 < r->active) {
    int rc = sl_queue_create(&rt->out, sl__stage_queue(rt->st, &r->opt));
    if (rc < 0) return rc;
    sl_queue_set_byte_limit(rt->out, sl__queue_bytes(&r->opt), item_weight);
    sl_queue_set_min_items(rt->out, sl__queue_min_items(r->p, i + 1, r->threads));
  }
  if (i > 0) rt->in = r->rt[i - 1].out;
  if (rt->def->exec == SL_EXEC_IO && rt->nworkers > 1 &&
      rt->st->order == SL__ORDER_SOURCE && rt->out) {
    int rc = reorder_create(&rt->reorder, 2 * rt->nworkers + 8);
    if (rc < 0) return rc;
  }
  bool pooled = rt->def->exec == SL_EXEC_IO && !(rt->def->flags & SL_STAGE_SOURCE);
  atomic_init(&rt->live, pooled ? rt->nworkers : 1);
  return 0;
}

static void run_free(sl_run *r) {
  for (size_t i = 0; r->rt && i < r->n; i++) {
    free(r->rt[i].workers);
    reorder_destroy(r->rt[i].reorder);
    sl_queue_destroy(r->rt[i].out, sl__dispose_item);
  }
  free(r->rt);
  for (size_t i = 0; i < r->nfailures; i++) {
    free(r->failures[i].item);
    free(r->failures[i].stage);
    free(r->failures[i].message);
  }
  free(r->failures);
  free(r->error);
  free(r->trace);
  sl__journal_close(r->journal);
  sl_pool_destroy(r->pool);
  sl_cores_destroy(r->cores);
  sl_arena_destroy(r->arena);
  pthread_mutex_destroy(&r->mu);
  pthread_cond_destroy(&r->tick);
  free(r);
}

static int run_setup(sl_run *r) {
  sl_arena_options ao = {.budget_bytes = r->opt.memory_bytes
                                             ? r->opt.memory_bytes
                                             : SL__DEFAULT_MEMORY};
  int rc = sl_arena_create(&r->arena, &ao);
  if (rc < 0) return rc;
  rc = sl_cores_create(&r->cores, r->threads);
  if (rc < 0) return rc;
  r->rt = calloc(r->n, sizeof *r->rt);
  if (!r->rt) return SL_ENOMEM;
  unsigned io_threads = 0;
  for (size_t i = 0; i < r->n; i++) {
    rc = build_stage(r, i);
    if (rc < 0) return rc;
    /* Fused chains: the head's driver runs the stages after it. */
    if (i > 0 && i < r->active && sl__fuses_with_next(r->p, i - 1, r->threads, &r->opt)) {
      size_t head = i - 1;
      while (r->rt[head].fused_in) head--;
      r->rt[head].fused++;
      r->rt[i].fused_in = true;
    }
    if (i < r->active && r->rt[i].def->exec == SL_EXEC_IO &&
        !(r->rt[i].def->flags & SL_STAGE_SOURCE))
      io_threads += r->rt[i].nworkers; /* pool threads for stages this rank runs */
  }
  if (io_threads) {
    rc = sl_pool_create(&r->pool, io_threads, io_threads, "sl-io");
    if (rc < 0) return rc;
  }
  if (r->opt.trace_path) {
    r->trace = malloc(SL__TRACE_MAX_EVENTS * sizeof *r->trace);
    if (!r->trace) return SL_ENOMEM;
    r->tracing = true;
  }
  return 0;
}

int sl_run_create(sl_run **out, sl_pipeline *p, const sl_run_options *opt) {
  *out = NULL;
  if (!p || sl_pipeline_check(p) < 0) return SL_EINVAL;
  sl_run *r = calloc(1, sizeof *r);
  if (!r) return SL_ENOMEM;
  r->p = p;
  r->n = p->n;
  if (opt) r->opt = *opt;
  else sl_run_options_init(&r->opt);
  r->threads = r->opt.threads ? r->opt.threads : sl_cores_default();
  r->reducer = sl__dist_reducer(p);
  r->active = r->n;
  if (sl_dist_rank(r->opt.dist) > 0 && r->reducer != SIZE_MAX)
    r->active = r->reducer + 1; /* reduced outputs are rank 0's */
  sl__mutex_init(&r->mu);
  sl__cond_init(&r->tick);
  int rc = run_setup(r);
  if (rc == 0 && r->opt.journal_path) {
    char *err = NULL;
    rc = sl__journal_open(&r->journal, r->opt.journal_path, r->opt.resume, &err);
    if (rc < 0) r->error = err;
  }
  if (rc < 0) {
    if (!r->error) r->error = sl__asprintf("cannot start run: %s", sl_strerror(rc));
    *out = r; /* so the caller can read sl_run_error; destroy frees it */
    return rc;
  }
  *out = r;
  return 0;
}

static void *monitor_main(void *arg) {
  sl_run *r = arg;
  sl__thread_name("sl-monitor");
  sl__mutex_lock(&r->mu);
  while (!r->finished) {
    sl__cond_timedwait(&r->tick, &r->mu, sl_now_ns() + 100000000u);
    sl__mutex_unlock(&r->mu);
    sl__progress_update(r, false);
    if (r->journal) sl__journal_flush(r->journal);
    sl__mutex_lock(&r->mu);
  }
  sl__mutex_unlock(&r->mu);
  return NULL;
}

static int start_stage(sl_run *r, sl__rt *rt) {
  int rc = 0;
  if (rt->def->flags & SL_STAGE_SOURCE) {
    rc = -pthread_create(&rt->thread, NULL, source_main, rt);
    rt->has_thread = rc == 0;
  } else if (rt->def->exec == SL_EXEC_IO) {
    for (unsigned k = 0; k < rt->nworkers && rc == 0; k++)
      rc = sl_pool_submit(r->pool, io_worker_main, &rt->workers[k]);
  } else if (!rt->fused_in) {
    rc = -pthread_create(&rt->thread, NULL, sl__cpu_driver, rt);
    rt->has_thread = rc == 0;
  }
  return rc;
}

int sl_run_execute(sl_run *r) {
  if (!r) return SL_EINVAL;
  omp_set_max_active_levels(3);
  r->t_start = sl_now_ns();
  pthread_t mon;
  bool have_mon = pthread_create(&mon, NULL, monitor_main, r) == 0;
  size_t started = 0;
  int rc = 0;
  if (sl__dist_start(r) < 0) {
    sl__run_stop(r, "cannot start threads");
    rc = SL_ENOMEM;
  }
  /* Start from the sink so consumers wait before producers push. */
  for (size_t i = r->active; rc == 0 && i-- > 0;) {
    rc = start_stage(r, &r->rt[i]);
    if (rc < 0) {
      sl__run_stop(r, "cannot start threads");
      break;
    }
    started++;
  }
  for (size_t i = 0; i < r->n; i++)
    if (r->rt[i].has_thread) pthread_join(r->rt[i].thread, NULL);
  if (r->pool) sl_pool_wait(r->pool);
  sl__dist_join(r);
  r->t_end = sl_now_ns();
  sl__mutex_lock(&r->mu);
  r->finished = true;
  sl__cond_broadcast(&r->tick);
  sl__mutex_unlock(&r->mu);
  if (have_mon) pthread_join(mon, NULL);
  sl__progress_update(r, true);
  if (r->journal) sl__journal_flush(r->journal);
  if (r->opt.report) sl__report_write(r, r->opt.report);
  if (r->opt.stats_json_path) sl__stats_json_write(r, r->opt.stats_json_path);
  if (r->opt.trace_path) sl__trace_write(r, r->opt.trace_path);
  if (rc < 0) return rc;
  if (atomic_load(&r->canceled)) return SL_ECANCELED;
  if (atomic_load(&r->failed) > 0) return SL_EITEMS;
  /* Stopped without a failed item: a stage could not start, or a thread
   * could not be created. sl_run_error says why. */
  if (atomic_load(&r->stopping)) return SL_ESTAGE;
  return 0;
}

void sl_run_destroy(sl_run *run) {
  if (run) run_free(run);
}

const char *sl_run_error(const sl_run *run) {
  return run && run->error ? run->error : "";
}
uint64_t sl_run_items_ok(const sl_run *run) { return atomic_load(&((sl_run *)run)->ok); }
uint64_t sl_run_items_failed(const sl_run *run) { return atomic_load(&((sl_run *)run)->failed); }
uint64_t sl_run_items_skipped(const sl_run *run) { return atomic_load(&((sl_run *)run)->skipped); }
size_t sl_run_failure_count(const sl_run *run) { return run->nfailures; }

int sl_run_failure(const sl_run *run, size_t i, const char **item,
                   const char **stage, const char **message) {
  if (i >= run->nfailures) return SL_ERANGE;
  if (item) *item = run->failures[i].item;
  if (stage) *stage = run->failures[i].stage;
  if (message) *message = run->failures[i].message;
  return 0;
}
