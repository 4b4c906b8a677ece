/*
 * pool.c -- the I/O pool: a fixed set of named threads running blocking jobs.
 *
 * Jobs (function + argument) wait in a bounded FIFO ring; `threads` workers
 * take them in order and run them without the lock. The ring being bounded
 * is the point: a producer of jobs that outpaces the workers blocks in
 * sl_pool_submit instead of growing memory (backpressure). Jobs may run for
 * as long as they like -- the engine runs whole stage worker loops as jobs --
 * so nothing here times out or assumes a job is short.
 *
 * Invariants (under `lock`):
 *   - ring[head..head+len) (mod cap) are the pending jobs, oldest first.
 *   - running is the number of jobs taken from the ring and not finished;
 *     the pool is idle when len == 0 && running == 0.
 *   - once shutdown is set no job is accepted; workers still drain the ring
 *     and exit only when it is empty, so every accepted job runs exactly once.
 *   - the waiting_* counters count threads blocked on each condition so that
 *     submit and job completion only signal when someone listens.
 *
 * Workers start with every blockable signal blocked, so asynchronous signals
 * (SIGINT, SIGTERM) go to a thread that expects them, never interrupt a
 * blocking read in a job.
 *
 * Lock order: the pool lock is a leaf; jobs run without it.
 */
#include "internal.h"

#include <signal.h>
#include <stdio.h>

typedef struct pool_job {
  void (*fn)(void *);
  void *arg;
} pool_job;

typedef struct pool_worker {
  sl_pool *pool;
  pthread_t tid;
  unsigned index;
} pool_worker;

struct sl_pool {
  pthread_mutex_t lock;
  pthread_cond_t not_empty; /* workers wait for jobs */
  pthread_cond_t not_full;  /* submitters wait for a free slot */
  pthread_cond_t idle;      /* sl_pool_wait waits for len == 0 && running == 0 */
  pool_job *ring;
  size_t cap, head, len;
  size_t running;
  bool shutdown;
  unsigned waiting_workers, waiting_submitters, waiting_idle;
  unsigned nthreads; /* immutable after create */
  unsigned started;  /* threads created, joined by destroy */
  pool_worker *workers;
  char *name;
};

/* For tests only (declared in tests/test_pool.c, not in any header):
 * the number of submitters blocked on a full pending queue. */
unsigned sl__pool_waiting_submitters(sl_pool *p);

/* Takes the next job or reports that the pool is shut down and drained.
 * Caller holds the lock. @return false when the worker should exit. */
static bool next_job(sl_pool *p, pool_job *job) {
  while (p->len == 0 && !p->shutdown) {
    p->waiting_workers++;
    sl__cond_wait(&p->not_empty, &p->lock);
    p->waiting_workers--;
  }
  if (p->len == 0) return false;
  *job = p->ring[p->head];
  if (++p->head == p->cap) p->head = 0;
  p->len--;
  p->running++;
  if (p->waiting_submitters) sl__cond_signal(&p->not_full);
  return true;
}

static void *worker_main(void *arg) {
  pool_worker *w = arg;
  sl_pool *p = w->pool;
  char name[32];
  snprintf(name, sizeof name, "%s-%u", p->name, w->index);
  sl__thread_name(name);

  pool_job job;
  sl__mutex_lock(&p->lock);
  while (next_job(p, &job)) {
    sl__mutex_unlock(&p->lock);
    job.fn(job.arg);
    sl__mutex_lock(&p->lock);
    p->running--;
    if (p->len == 0 && p->running == 0 && p->waiting_idle)
      sl__cond_broadcast(&p->idle);
  }
  sl__mutex_unlock(&p->lock);
  return NULL;
}

/* Sets the shutdown flag, wakes every waiter, joins the started workers.
 * Queued jobs still run: workers exit only once the ring is empty. */
static void shutdown_and_join(sl_pool *p) {
  sl__mutex_lock(&p->lock);
  p->shutdown = true;
  sl__cond_broadcast(&p->not_empty);
  sl__cond_broadcast(&p->not_full);
  sl__mutex_unlock(&p->lock);
  for (unsigned i = 0; i < p->started; i++)
    pthread_join(p->workers[i].tid, NULL);
}

static void pool_free(sl_pool *p) {
  pthread_mutex_destroy(&p->lock);
  pthread_cond_destroy(&p->not_empty);
  pthread_cond_destroy(&p->not_full);
  pthread_cond_destroy(&p->idle);
  free(p->ring);
  free(p->workers);
  free(p->name);
  free(p);
}

/* Starts the workers with all signals blocked (they inherit the mask).
 * @return 0 or -errno from pthread_create; p->started says how many run. */
static int start_workers(sl_pool *p) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = 0;
  for (unsigned i = 0; i < p->nthreads && rc == 0; i++) {
    p->workers[i].pool = p;
    p->workers[i].index = i;
    rc = pthread_create(&p->workers[i].tid, NULL, worker_main, &p->workers[i]);
    if (rc == 0) p->started++;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return -rc;
}

int sl_pool_create(sl_pool **out, unsigned threads, size_t capacity,
                   const char *name) {
  *out = NULL;
  if (threads == 0 || capacity == 0) return SL_EINVAL;
  if (capacity > SIZE_MAX / sizeof(pool_job)) return SL_ENOMEM;
  sl_pool *p = calloc(1, sizeof *p);
  if (!p) return SL_ENOMEM;
  p->cap = capacity;
  p->nthreads = threads;
  sl__mutex_init(&p->lock);
  sl__cond_init(&p->not_empty);
  sl__cond_init(&p->not_full);
  sl__cond_init(&p->idle);
  p->ring = malloc(capacity * sizeof *p->ring);
  p->workers = calloc(threads, sizeof *p->workers);
  p->name = sl__strdup(name ? name : "pool");
  if (!p->ring || !p->workers || !p->name) {
    pool_free(p);
    return SL_ENOMEM;
  }
  int rc = start_workers(p);
  if (rc < 0) {
    shutdown_and_join(p);
    pool_free(p);
    return rc;
  }
  *out = p;
  return 0;
}

/* Queues a job; caller holds the lock, the pool is open and not full. */
static void enqueue(sl_pool *p, void (*fn)(void *), void *arg) {
  size_t tail = p->head + p->len;
  if (tail >= p->cap) tail -= p->cap;
  p->ring[tail].fn = fn;
  p->ring[tail].arg = arg;
  p->len++;
  if (p->waiting_workers) sl__cond_signal(&p->not_empty);
}

int sl_pool_submit(sl_pool *p, void (*fn)(void *), void *arg) {
  sl__mutex_lock(&p->lock);
  while (p->len == p->cap && !p->shutdown) {
    p->waiting_submitters++;
    sl__cond_wait(&p->not_full, &p->lock);
    p->waiting_submitters--;
  }
  int rc = SL_ECLOSED;
  if (!p->shutdown) {
    enqueue(p, fn, arg);
    rc = 0;
  }
  sl__mutex_unlock(&p->lock);
  return rc;
}

int sl_pool_try_submit(sl_pool *p, void (*fn)(void *), void *arg) {
  sl__mutex_lock(&p->lock);
  int rc = 0;
  if (p->shutdown)
    rc = SL_ECLOSED;
  else if (p->len == p->cap)
    rc = SL_EAGAIN;
  else
    enqueue(p, fn, arg);
  sl__mutex_unlock(&p->lock);
  return rc;
}

void sl_pool_wait(sl_pool *p) {
  sl__mutex_lock(&p->lock);
  while (p->len > 0 || p->running > 0) {
    p->waiting_idle++;
    sl__cond_wait(&p->idle, &p->lock);
    p->waiting_idle--;
  }
  sl__mutex_unlock(&p->lock);
}

void sl_pool_destroy(sl_pool *p) {
  if (!p) return;
  shutdown_and_join(p);
  pool_free(p);
}

unsigned sl_pool_threads(const sl_pool *p) { return p->nthreads; }

unsigned sl__pool_waiting_submitters(sl_pool *p) {
  sl__mutex_lock(&p->lock);
  unsigned n = p->waiting_submitters;
  sl__mutex_unlock(&p->lock);
  return n;
}
