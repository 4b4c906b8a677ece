/*
 * cpuexec.c -- the CPU executor: runs cpu and serial stages under OpenMP
 * within the run's core budget, and the intra-item parallel-for helper.
 *
 * A cpu stage has one driver thread. It pops a batch of up to SL__BATCH_MAX
 * items, takes k core tokens (1 <= k <= min(batch, workers), waiting for at
 * least one), and runs the batch as an OpenMP parallel-for on k threads; the
 * outputs keep the batch's order, so a cpu stage preserves source order.
 * Many small items therefore run item-parallel; a batch of one huge item runs
 * on one token and sl_parallel_for() borrows whatever tokens are free for
 * the inside of the item. Tokens are the only way to run CPU work, so the
 * number of runnable CPU threads never exceeds the budget.
 *
 * A batch's outputs are all held until the batch ends, so a stage whose
 * outputs are large pops fewer items at once: at most the byte limit of a
 * queue (--queue-bytes) divided by the average output size seen so far,
 * and never fewer than its workers (the first batch pops one per worker).
 * Without this, small inputs with large outputs (h5.decode turning chunk
 * addresses into 16 MiB arrays) would make one batch hold the whole input.
 *
 * Worker slots: OpenMP thread number t of the batch team uses worker slot t,
 * opened lazily on first use; a slot is used by one thread at a time.
 *
 * Fused chains (plan.c says which stages fuse): a cpu stage followed by
 * other cpu stages with as many workers runs them too, item by item on the
 * same thread and worker slot: stage i's output goes straight into stage
 * i+1's process(), while it is still in that core's cache, and the queue
 * between them stays empty. Only the head has a driver thread. The chain's
 * outputs go to its last stage's queue; finish() runs stage by stage in
 * chain order at the end. Only the chain's last stage may have finish(),
 * since an earlier one's emitted items would bypass the stages after it.
 * --no-fuse gives every stage its own driver again.
 */
#include "run_internal.h"

#include <omp.h>

static void process_one(sl__rt *rt, unsigned slot, sl_item *in, sl_item **out) {
  sl_worker *w = &rt->workers[slot];
  *out = NULL;
  if (!w->opened && sl__worker_open(w) < 0) {
    sl_item_destroy(in);
    return;
  }
  sl__process_item(w, in, out);
}

/* Threads worth waking for a batch of n items: starting an OpenMP team
 * costs microseconds, so a batch whose expected work (n x the stage's
 * moving average per item) is below PARALLEL_MIN_NS runs on the driver
 * alone. The first batch measures the average. */
#define PARALLEL_MIN_NS 200000u

static unsigned batch_threads(sl__rt *rt, size_t n, unsigned maxw) {
  uint64_t avg = atomic_load_explicit(&rt->avg_ns, memory_order_relaxed);
  if (n < 2 || maxw < 2 || avg == 0 || avg * n < PARALLEL_MIN_NS) return 1;
  return (unsigned)(n < maxw ? n : maxw);
}

/* Folds a batch's busy time into the stage's per-item average (1/4 weight). */
static void update_average(sl__rt *rt, uint64_t busy_ns, size_t n) {
  uint64_t per = busy_ns / n + 1;
  uint64_t avg = atomic_load_explicit(&rt->avg_ns, memory_order_relaxed);
  avg = avg ? (3 * avg + per) / 4 : per;
  atomic_store_explicit(&rt->avg_ns, avg, memory_order_relaxed);
}

/* One item through a fused chain (rt and the rt->fused stages after it),
 * on one thread and worker slot; each stage's busy time is its own. */
static void process_chain(sl__rt *rt, unsigned slot, sl_item *in, sl_item **out) {
  if (!rt->fused) {
    process_one(rt, slot, in, out);
    return;
  }
  for (unsigned s = 0;; s++) {
    uint64_t t0 = sl_now_ns();
    process_one(&rt[s], slot, in, out);
    rt[s].workers[slot].acc.busy_ns += sl_now_ns() - t0;
    if (s == rt->fused || !*out) return;
    in = *out;
  }
}

static void run_batch(sl__rt *rt, sl_item **in, sl_item **out, size_t n,
                      unsigned k) {
  if (k <= 1 || n == 1) {
    for (size_t i = 0; i < n; i++) process_chain(rt, 0, in[i], &out[i]);
    return;
  }
#pragma omp parallel for num_threads(k) schedule(dynamic, 1)
  for (size_t i = 0; i < n; i++)
    process_chain(rt, (unsigned)omp_get_thread_num(), in[i], &out[i]);
}

/* Items to pop for the next batch, from the average output bytes per
 * item (0: none seen yet). */
static size_t batch_cap(sl__rt *rt, unsigned maxw, uint64_t avg_out) {
  if (avg_out == 0) return maxw;
  uint64_t cap = sl__queue_bytes(&rt->run->opt) / avg_out;
  if (cap < maxw) cap = maxw;
  return cap < SL__BATCH_MAX ? (size_t)cap : SL__BATCH_MAX;
}

/* Pushes the non-NULL outputs in order; destroys what cannot go on.
 * @return the bytes of the outputs. */
static uint64_t forward(sl__rt *rt, sl_item **out, size_t n) {
  size_t m = 0;
  uint64_t bytes = 0;
  for (size_t i = 0; i < n; i++)
    if (out[i]) {
      bytes += out[i]->payload.size;
      out[m++] = out[i];
    }
  if (!m) return 0;
  rt += rt->fused; /* a fused chain's outputs are its last stage's */
  if (!rt->out) {
    for (size_t i = 0; i < m; i++) sl_item_destroy(out[i]);
    return bytes;
  }
  size_t pushed = 0;
  sl_queue_push_many(rt->out, (void *const *)out, m, &pushed);
  for (size_t i = pushed; i < m; i++) sl_item_destroy(out[i]);
  return bytes;
}

void *sl__cpu_driver(void *arg) {
  sl__rt *rt = arg;
  sl_run *r = rt->run;
  sl__thread_name(rt->def->name);
  unsigned maxw = rt->def->exec == SL_EXEC_SERIAL ? 1 : rt->nworkers;
  sl_item *in[SL__BATCH_MAX], *out[SL__BATCH_MAX];
  uint64_t avg_out = 0; /* output bytes per input item, moving average */
  for (;;) {
    size_t n = 0;
    if (sl_queue_pop_many(rt->in, (void **)in, batch_cap(rt, maxw, avg_out), &n, NULL) < 0)
      break;
    unsigned want = batch_threads(rt, n, maxw);
    int k = sl_cores_acquire(r->cores, want);
    if (k < 0) { /* stopping */
      for (size_t i = 0; i < n; i++) sl_item_destroy(in[i]);
      break;
    }
    uint64_t t0 = sl_now_ns();
    run_batch(rt, in, out, n, (unsigned)k);
    uint64_t dt = sl_now_ns() - t0;
    /* The batch kept its k threads busy for dt (the join waits for all);
     * a fused chain measured each stage's share per item instead. */
    if (!rt->fused) rt->workers[0].acc.busy_ns += dt * (uint64_t)k;
    for (unsigned s = 0; s <= rt->fused; s++)
      for (unsigned i = 0; i < (unsigned)k && i < rt[s].nworkers; i++)
        sl__worker_flush(&rt[s].workers[i]);
    update_average(rt, dt * (uint64_t)k, n);
    sl__cores_release_held(rt, (unsigned)k);
    uint64_t per = forward(rt, out, n) / n + 1;
    avg_out = avg_out ? (avg_out + per) / 2 : per;
  }
  /* In chain order, so that what a stage's finish() emits finds the stages
   * after it still open. */
  for (unsigned s = 0; s <= rt->fused; s++) {
    bool finish = !atomic_load(&r->stopping);
    for (unsigned i = 0; i < rt[s].nworkers; i++)
      sl__worker_finish_close(&rt[s].workers[i], finish);
    sl__stage_worker_done(&rt[s]);
  }
  return NULL;
}

void sl_parallel_for(sl_worker *w, size_t n, size_t grain,
                     void (*body)(void *arg, size_t begin, size_t end),
                     void *arg) {
  if (n == 0) return;
  if (grain == 0) grain = 1;
  size_t chunks = (n + grain - 1) / grain;
  sl_cores *cores = w ? w->run->cores : NULL;
  unsigned budget = cores ? sl_cores_budget(cores) : 1;
  size_t want = (chunks < budget ? chunks : budget) - 1;
  unsigned extra = want && cores ? sl_cores_try_acquire(cores, (unsigned)want) : 0;
  if (extra == 0) {
    body(arg, 0, n);
    return;
  }
  /* Chunks are claimed from a shared counter so uneven work balances. */
  atomic_size_t next;
  atomic_init(&next, 0);
#pragma omp parallel num_threads(extra + 1)
  {
    for (;;) {
      size_t c = atomic_fetch_add_explicit(&next, 1, memory_order_relaxed);
      if (c >= chunks) break;
      size_t b = c * grain, e = b + grain < n ? b + grain : n;
      body(arg, b, e);
    }
  }
  sl_cores_release(cores, extra);
}

/* A thread running a cpu/serial stage's callback (or a cpu source's
 * produce) holds exactly one token, so giving one back and taking one again
 * keeps the accounting exact. If the run is stopping, the acquire fails and
 * the worker carries on without a token (it is winding down, and the budget
 * is cancelled anyway): it is marked, so it neither gives back a token it no
 * longer holds nor counts twice, and the batch releases one token less. */
static bool holds_token(const sl_worker *w) {
  return w->rt->def->exec != SL_EXEC_IO;
}

void sl__cores_release_held(sl__rt *rt, unsigned k) {
  unsigned lost = atomic_exchange(&rt->lost_tokens, 0);
  for (unsigned i = 0; i < rt->nworkers; i++) rt->workers[i].no_token = false;
  if (k > lost) sl_cores_release(rt->run->cores, k - lost);
}

void sl_worker_blocking_begin(sl_worker *w) {
  if (w && holds_token(w) && !w->no_token) sl_cores_release(w->run->cores, 1);
}

void sl_worker_blocking_end(sl_worker *w) {
  if (!w || !holds_token(w) || w->no_token) return;
  if (sl_cores_acquire(w->run->cores, 1) < 0) {
    w->no_token = true;
    atomic_fetch_add(&w->rt->lost_tokens, 1);
  }
}
