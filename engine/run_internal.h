/*
 * run_internal.h -- the run loop's objects, shared by run.c (threads, items,
 * errors), cpuexec.c (OpenMP executor), journal.c, stats.c and plan.c.
 * Engine-private.
 */
#ifndef SLUICE_RUN_INTERNAL_H
#define SLUICE_RUN_INTERNAL_H

#include "internal.h"

#include <stdatomic.h>

typedef struct sl__rt sl__rt;
typedef struct sl__journal sl__journal;

/* Defaults, documented in docs/how-it-works.md. */
#define SL__DEFAULT_QUEUE 128u        /* items per queue */
#define SL__DEFAULT_IO_WORKERS 4u     /* workers of an io stage */
#define SL__BATCH_MAX 64u             /* items moved per queue operation */
#define SL__BATCH_BYTES (256u << 10)  /* a source flushes a batch past this */
#define SL__DEFAULT_MEMORY (1ull << 30)
#define SL__DEFAULT_QUEUE_BYTES (16ull << 20) /* per queue, see queue.c */
#define SL__TRACE_MAX_EVENTS 200000u

/* One trace event (Chrome "X" complete event). */
typedef struct sl__trace_ev {
  uint64_t ts_ns, dur_ns, seq;
  uint32_t stage, tid;
} sl__trace_ev;

/* A worker: one per io worker thread, one per cpu worker slot (OpenMP thread
 * number within the stage's team), one for a source or serial stage. Used by
 * one thread at a time. */
struct sl_worker {
  sl__rt *rt;
  sl_run *run;
  unsigned index, count;
  void *local;
  bool opened;
  bool no_token;          /* lost its core token while stopping */
  bool asked_done;         /* source asked sl_worker_is_done this item */
  char err[512];          /* last error message from sl_worker_errorf */
  /* Counters gathered without atomics by the one thread using the worker,
   * added to the stage's and run's totals once per batch (sl__worker_flush):
   * per-item atomics cost more than the work of a tiny item. */
  struct {
    uint64_t items_in, bytes_in, items_out, bytes_out, ok, busy_ns;
  } acc;
};

/* Reorder buffer restoring source order behind a multi-worker stage. At most
 * `window` popped-but-not-emitted tickets exist (a worker takes a window
 * slot before it pops), so ticket t owns slot t % window. The holder of the
 * oldest ticket never waits for the window, which is why it cannot
 * deadlock. */
typedef struct sl__reorder {
  pthread_mutex_t mu;
  pthread_cond_t room;
  unsigned window, free_slots;
  uint64_t next;          /* next ticket to emit */
  sl_item **slot;         /* item or NULL */
  bool *filled;           /* ticket done (item may be NULL: dropped) */
} sl__reorder;

/* Runtime of one stage. */
struct sl__rt {
  sl_stage *st;
  const sl_stage_def *def;
  sl_run *run;
  size_t index;
  sl_queue *in, *out;     /* NULL for source / sink */
  unsigned nworkers;
  sl_worker *workers;
  sl__reorder *reorder;   /* NULL unless io, workers > 1 and order=source */
  atomic_uint live;       /* workers still running; last one closes `out` */
  atomic_uint lost_tokens;/* tokens given back by blocking_begin and not
                             regained because the run was stopping */
  atomic_uint_fast64_t items_in, items_out, bytes_in, bytes_out;
  atomic_uint_fast64_t busy_ns;
  pthread_t thread;       /* source / cpu / serial driver */
  bool has_thread;
  uint64_t total;         /* sources: expected items */
  atomic_uint_fast64_t avg_ns; /* moving average of process() per item */
  unsigned fused;         /* stages after this one its driver runs too */
  bool fused_in;          /* run by an upstream stage's driver: no thread */
};

typedef struct sl__failure {
  char *item, *stage, *message;
} sl__failure;

struct sl_run {
  sl_pipeline *p;
  sl_run_options opt;
  size_t n;
  sl__rt *rt;
  sl_arena *arena;
  sl_cores *cores;
  sl_pool *pool;
  sl__journal *journal;
  unsigned threads;

  atomic_bool stopping;   /* sources stop, queues abandoned */
  atomic_bool canceled;   /* stopped by sl_run_cancel */
  atomic_uint_fast64_t ok, failed, skipped, produced, total;

  pthread_mutex_t mu;     /* failures, error, monitor wake-up */
  pthread_cond_t tick;
  bool finished;
  sl__failure *failures;
  size_t nfailures, capfailures;
  char *error;

  uint64_t t_start, t_end;

  /* distributed runs (dist.c) */
  size_t reducer;         /* index of the first reducing stage, or SIZE_MAX */
  size_t active;          /* stages this rank runs (all but after the
                             reducer on ranks > 0) */
  unsigned dist_done;     /* rank 0: DONE messages received (under mu) */
  uint64_t dist_failed;   /* rank 0: items failed on other ranks (under mu) */
  pthread_t comm_thread;
  bool has_comm;

  /* trace */
  bool tracing;
  sl__trace_ev *trace;
  atomic_uint_fast64_t ntrace;
};

/* run.c */
void sl__run_stop(sl_run *r, const char *why);
int sl__process_item(sl_worker *w, sl_item *in, sl_item **out);
void sl__dispose_item(void *item);
int sl__worker_open(sl_worker *w);
void sl__worker_finish_close(sl_worker *w, bool call_finish);
void sl__worker_flush(sl_worker *w);
void sl__trace_add(sl_run *r, uint32_t stage, uint32_t tid, uint64_t t0,
                   uint64_t t1, uint64_t seq);

void sl__run_add_failure(sl_run *r, const char *item, const char *stage,
                         const char *msg);
/* The last worker of a stage to leave: closes its output queue. */
void sl__stage_worker_done(sl__rt *rt);

/* dist.c */
size_t sl__dist_reducer(const sl_pipeline *p);
int sl__dist_start(sl_run *r);
void sl__dist_join(sl_run *r);
void sl__dist_stage_done(sl__rt *rt);
void sl__dist_wait_ranks(sl_worker *w);

/* cpuexec.c: driver thread of a cpu or serial stage. */
void *sl__cpu_driver(void *arg);
/* Releases the k tokens a batch took, less any lost in blocking_end. */
void sl__cores_release_held(sl__rt *rt, unsigned k);

/* journal.c */
int sl__journal_open(sl__journal **out, const char *path, bool resume,
                     char **err);
bool sl__journal_has(sl__journal *j, const char *name);
void sl__journal_add(sl__journal *j, const char *name);
void sl__journal_flush(sl__journal *j);
void sl__journal_close(sl__journal *j);
size_t sl__journal_loaded(const sl__journal *j);

/* stats.c */
void sl__progress_update(sl_run *r, bool final);
void sl__report_write(sl_run *r, FILE *out);
int sl__stats_json_write(sl_run *r, const char *path);
int sl__trace_write(sl_run *r, const char *path);
uint64_t sl__peak_rss_bytes(void);
/* Index of the bottleneck stage (highest busy share), or -1. */
int sl__bottleneck(sl_run *r, double wall_s);

/* plan.c */
unsigned sl__stage_workers(const sl_stage *st, unsigned threads);
size_t sl__stage_queue(const sl_stage *st, const sl_run_options *opt);
uint64_t sl__queue_bytes(const sl_run_options *opt);
/* Elements the queue into stage `consumer` always accepts: its workers. */
unsigned sl__queue_min_items(sl_pipeline *p, size_t consumer, unsigned threads);
/* Whether stage i+1 runs inside stage i's batches (fused; see cpuexec.c). */
bool sl__fuses_with_next(const sl_pipeline *p, size_t i, unsigned threads,
                         const sl_run_options *opt);

#endif
