/*
 * test_pool.c -- the I/O thread pool.
 *
 * Unit cases check each documented behaviour (FIFO, backpressure, try_submit,
 * wait, destroy draining, thread names); the stress case has several
 * submitter threads racing with sl_pool_wait callers over random job
 * durations. Blocked submitters are detected with the pool's test-only
 * counter and gates are condition variables, never sleeps.
 */
#define _GNU_SOURCE /* pthread_getname_np */
#include "test.h"
#include "sluice.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

/* Test-only hook in engine/pool.c. */
unsigned sl__pool_waiting_submitters(sl_pool *p);

static void start(pthread_t *t, void *(*fn)(void *), void *arg) {
  ASSERT_EQ(pthread_create(t, NULL, fn, arg), 0);
}

static void join(pthread_t t) { ASSERT_EQ(pthread_join(t, NULL), 0); }

static void jitter(unsigned *seed) {
  int r = rand_r(seed);
  if (r % 8 == 0) {
    for (volatile int i = 0; i < r % 2048; i++) {
    }
  } else if (r % 128 == 1) {
    struct timespec ts = {0, (long)(1000 + r % 50000)};
    nanosleep(&ts, NULL);
  }
}

/* A gate: jobs block in gate_pass until the test opens it; the test can
 * wait until a given number of jobs reached the gate. */
typedef struct gate {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool open;
  int arrived;
} gate;

static void gate_init(gate *g) {
  pthread_mutex_init(&g->lock, NULL);
  pthread_cond_init(&g->cond, NULL);
  g->open = false;
  g->arrived = 0;
}

static void gate_pass(void *arg) {
  gate *g = arg;
  pthread_mutex_lock(&g->lock);
  g->arrived++;
  pthread_cond_broadcast(&g->cond);
  while (!g->open) pthread_cond_wait(&g->cond, &g->lock);
  pthread_mutex_unlock(&g->lock);
}

static void gate_await(gate *g, int n) {
  pthread_mutex_lock(&g->lock);
  while (g->arrived < n) pthread_cond_wait(&g->cond, &g->lock);
  pthread_mutex_unlock(&g->lock);
}

static void gate_open(gate *g) {
  pthread_mutex_lock(&g->lock);
  g->open = true;
  pthread_cond_broadcast(&g->cond);
  pthread_mutex_unlock(&g->lock);
}

static void gate_destroy(gate *g) {
  pthread_mutex_destroy(&g->lock);
  pthread_cond_destroy(&g->cond);
}

static atomic_int ran[4096];

static void reset_ran(void) {
  for (size_t i = 0; i < 4096; i++) atomic_store(&ran[i], 0);
}

static void mark(void *arg) { atomic_fetch_add(&ran[(uintptr_t)arg], 1); }

/* --- unit ------------------------------------------------------------- */

TEST(pool_create_invalid) {
  sl_pool *p = (sl_pool *)1;
  ASSERT_EQ(sl_pool_create(&p, 0, 4, "x"), SL_EINVAL);
  ASSERT(p == NULL);
  ASSERT_EQ(sl_pool_create(&p, 2, 0, "x"), SL_EINVAL);
  sl_pool_destroy(NULL);
}

TEST(pool_runs_every_job_once) {
  static const unsigned threads[] = {1, 2, 4};
  static const size_t caps[] = {1, 2, 64};
  for (size_t t = 0; t < 3; t++) {
    for (size_t c = 0; c < 3; c++) {
      sl_pool *p;
      reset_ran();
      ASSERT_OK(sl_pool_create(&p, threads[t], caps[c], "once"));
      ASSERT_EQ(sl_pool_threads(p), threads[t]);
      for (uintptr_t i = 0; i < 1000; i++) ASSERT_OK(sl_pool_submit(p, mark, (void *)i));
      sl_pool_wait(p);
      for (size_t i = 0; i < 1000; i++) ASSERT_EQ(ran[i], 1);
      sl_pool_wait(p); /* idle: returns at once */
      sl_pool_destroy(p);
      for (size_t i = 0; i < 1000; i++) ASSERT_EQ(ran[i], 1);
    }
  }
}

static size_t fifo_log[500], fifo_len;

static void log_job(void *arg) { fifo_log[fifo_len++] = (uintptr_t)arg; }

/* One thread runs jobs exactly in submission order. */
TEST(pool_fifo_single_thread) {
  sl_pool *p;
  fifo_len = 0;
  ASSERT_OK(sl_pool_create(&p, 1, 7, "fifo"));
  for (uintptr_t i = 0; i < 500; i++) ASSERT_OK(sl_pool_submit(p, log_job, (void *)i));
  sl_pool_wait(p); /* orders the worker's writes before our reads */
  ASSERT_EQ(fifo_len, 500);
  for (size_t i = 0; i < 500; i++) ASSERT_EQ(fifo_log[i], i);
  sl_pool_destroy(p);
}

typedef struct submitter {
  sl_pool *p;
  void (*fn)(void *);
  void *arg;
  int rc;
  atomic_bool returned;
} submitter;

static void *submit_thread(void *arg) {
  submitter *s = arg;
  s->rc = sl_pool_submit(s->p, s->fn, s->arg);
  atomic_store(&s->returned, true);
  return NULL;
}

/* With the worker stuck and the pending queue full, try_submit says EAGAIN
 * and submit blocks until the worker frees a slot. */
TEST(pool_backpressure) {
  sl_pool *p;
  gate g;
  gate_init(&g);
  reset_ran();
  ASSERT_OK(sl_pool_create(&p, 1, 2, "bp"));
  ASSERT_OK(sl_pool_submit(p, gate_pass, &g));
  gate_await(&g, 1); /* the only worker is inside the gate job */
  ASSERT_OK(sl_pool_try_submit(p, mark, (void *)0));
  ASSERT_OK(sl_pool_try_submit(p, mark, (void *)1));
  ASSERT_EQ(sl_pool_try_submit(p, mark, (void *)2), SL_EAGAIN);
  submitter s = {p, mark, (void *)3, -1, false};
  pthread_t t;
  start(&t, submit_thread, &s);
  while (sl__pool_waiting_submitters(p) != 1) sched_yield();
  ASSERT(!atomic_load(&s.returned));
  gate_open(&g);
  join(t);
  ASSERT_OK(s.rc);
  sl_pool_wait(p);
  ASSERT_EQ(ran[0], 1);
  ASSERT_EQ(ran[1], 1);
  ASSERT_EQ(ran[2], 0);
  ASSERT_EQ(ran[3], 1);
  sl_pool_destroy(p);
  gate_destroy(&g);
}

/* sl_pool_wait returns only after running jobs finish, not just when the
 * pending queue is empty. */
typedef struct waiter {
  sl_pool *p;
  atomic_bool returned;
} waiter;

static void *wait_thread(void *arg) {
  waiter *w = arg;
  sl_pool_wait(w->p);
  atomic_store(&w->returned, true);
  return NULL;
}

static atomic_bool slow_job_done;

static void slow_job(void *arg) {
  gate_pass(arg);
  atomic_store(&slow_job_done, true);
}

TEST(pool_wait_waits_for_running_jobs) {
  sl_pool *p;
  gate g;
  gate_init(&g);
  atomic_store(&slow_job_done, false);
  ASSERT_OK(sl_pool_create(&p, 2, 4, "wait"));
  ASSERT_OK(sl_pool_submit(p, slow_job, &g));
  gate_await(&g, 1); /* pending is empty, one job running */
  waiter w = {p, false};
  pthread_t t;
  start(&t, wait_thread, &w);
  gate_open(&g);
  join(t);
  ASSERT(atomic_load(&w.returned));
  ASSERT(atomic_load(&slow_job_done)); /* wait saw the job finish */
  sl_pool_destroy(p);
  gate_destroy(&g);
}

/* destroy runs what is still queued. The first job keeps the only worker
 * busy until shutdown has begun: once the test has filled the pending queue
 * (gate), it polls try_submit, which answers EAGAIN while the full queue is
 * open and ECLOSED once destroy started. So the 50 queued jobs are certainly
 * pending when destroy is called. */
typedef struct holder {
  sl_pool *p;
  gate *g;
  int rc;
} holder;

static void hold_until_shutdown(void *arg) {
  holder *h = arg;
  gate_pass(h->g);
  while ((h->rc = sl_pool_try_submit(h->p, mark, (void *)4000)) == SL_EAGAIN)
    sched_yield();
}

TEST(pool_destroy_runs_pending) {
  sl_pool *p;
  gate g;
  gate_init(&g);
  reset_ran();
  ASSERT_OK(sl_pool_create(&p, 1, 50, "drain"));
  holder h = {p, &g, 0};
  ASSERT_OK(sl_pool_submit(p, hold_until_shutdown, &h));
  gate_await(&g, 1);
  for (uintptr_t i = 0; i < 50; i++) ASSERT_OK(sl_pool_try_submit(p, mark, (void *)i));
  gate_open(&g);
  sl_pool_destroy(p);
  ASSERT_EQ(h.rc, SL_ECLOSED);
  for (size_t i = 0; i < 50; i++) ASSERT_EQ(ran[i], 1);
  ASSERT_EQ(ran[4000], 0);
  gate_destroy(&g);
}

/* A job blocked submitting to its own full pool is released by shutdown
 * with SL_ECLOSED, so destroy cannot hang on it. Worker 1 is stuck in gate
 * g1, worker 2 runs `relay`, which waits in g2 until the test filled the
 * pending queue, then submits (and must block: nobody can drain), then
 * opens g1 so destroy can finish. */
typedef struct relay_arg {
  sl_pool *p;
  gate *g1, *g2;
  int rc;
} relay_arg;

static void relay(void *arg) {
  relay_arg *r = arg;
  gate_pass(r->g2);
  r->rc = sl_pool_submit(r->p, mark, (void *)4001);
  gate_open(r->g1);
}

TEST(pool_destroy_releases_blocked_submitter) {
  sl_pool *p;
  gate g1, g2;
  gate_init(&g1);
  gate_init(&g2);
  reset_ran();
  ASSERT_OK(sl_pool_create(&p, 2, 1, "rel"));
  relay_arg r = {p, &g1, &g2, 0};
  ASSERT_OK(sl_pool_submit(p, gate_pass, &g1));
  gate_await(&g1, 1);
  ASSERT_OK(sl_pool_submit(p, relay, &r));
  gate_await(&g2, 1);
  ASSERT_OK(sl_pool_submit(p, mark, (void *)0)); /* queue now full */
  gate_open(&g2);
  while (sl__pool_waiting_submitters(p) != 1) sched_yield();
  sl_pool_destroy(p);
  ASSERT_EQ(r.rc, SL_ECLOSED);
  ASSERT_EQ(ran[0], 1);    /* queued before shutdown: ran */
  ASSERT_EQ(ran[4001], 0); /* refused */
  gate_destroy(&g1);
  gate_destroy(&g2);
}

/* Every worker is named "<name>-<i>". Three jobs meet at a barrier so each
 * runs on a different worker. */
typedef struct name_job {
  pthread_barrier_t *barrier;
  char name[16];
} name_job;

static void record_name(void *arg) {
  name_job *j = arg;
  pthread_barrier_wait(j->barrier);
  ASSERT_EQ(pthread_getname_np(pthread_self(), j->name, sizeof j->name), 0);
}

TEST(pool_thread_names) {
  sl_pool *p;
  pthread_barrier_t b;
  ASSERT_EQ(pthread_barrier_init(&b, NULL, 3), 0);
  ASSERT_OK(sl_pool_create(&p, 3, 3, "tpool"));
  name_job jobs[3];
  for (int i = 0; i < 3; i++) {
    jobs[i].barrier = &b;
    ASSERT_OK(sl_pool_submit(p, record_name, &jobs[i]));
  }
  sl_pool_wait(p);
  bool seen[3] = {false, false, false};
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(strncmp(jobs[i].name, "tpool-", 6), 0);
    int idx = jobs[i].name[6] - '0';
    ASSERT(idx >= 0 && idx < 3 && jobs[i].name[7] == '\0');
    ASSERT(!seen[idx]);
    seen[idx] = true;
  }
  sl_pool_destroy(p);
  pthread_barrier_destroy(&b);
}

/* --- stress ------------------------------------------------------------ */

typedef struct stress {
  sl_pool *p;
  unsigned jobs_per_submitter;
  atomic_int *runs; /* per job */
  atomic_bool stop_waiting;
} stress;

typedef struct stress_thread {
  stress *s;
  unsigned id;
  unsigned seed;
} stress_thread;

typedef struct stress_job {
  atomic_int *slot;
  unsigned seed;
} stress_job;

static void stress_job_fn(void *arg) {
  stress_job *j = arg;
  jitter(&j->seed);
  atomic_fetch_add(j->slot, 1);
}

static void *stress_submitter(void *arg) {
  stress_thread *t = arg;
  stress *s = t->s;
  stress_job *jobs = calloc(s->jobs_per_submitter, sizeof *jobs);
  ASSERT(jobs);
  for (unsigned i = 0; i < s->jobs_per_submitter; i++) {
    jobs[i].slot = &s->runs[t->id * s->jobs_per_submitter + i];
    jobs[i].seed = t->seed + i;
    jitter(&t->seed);
    if (rand_r(&t->seed) % 2) {
      ASSERT_OK(sl_pool_submit(s->p, stress_job_fn, &jobs[i]));
    } else {
      int rc;
      while ((rc = sl_pool_try_submit(s->p, stress_job_fn, &jobs[i])) == SL_EAGAIN)
        sched_yield();
      ASSERT_OK(rc);
    }
  }
  /* Our jobs must finish before their memory goes. */
  sl_pool_wait(s->p);
  for (unsigned i = 0; i < s->jobs_per_submitter; i++) ASSERT_EQ(*jobs[i].slot, 1);
  free(jobs);
  return NULL;
}

static void *stress_waiter(void *arg) {
  stress *s = arg;
  while (!atomic_load(&s->stop_waiting)) {
    sl_pool_wait(s->p);
    sched_yield();
  }
  return NULL;
}

static void run_pool_stress(unsigned nsub, unsigned threads, size_t cap) {
  stress s = {.jobs_per_submitter = 2000 / nsub};
  size_t total = (size_t)s.jobs_per_submitter * nsub;
  s.runs = calloc(total, sizeof *s.runs);
  ASSERT(s.runs);
  atomic_init(&s.stop_waiting, false);
  ASSERT_OK(sl_pool_create(&s.p, threads, cap, "stress"));
  stress_thread st[4];
  pthread_t tid[4], wt;
  start(&wt, stress_waiter, &s);
  for (unsigned i = 0; i < nsub; i++) {
    st[i] = (stress_thread){&s, i, nsub * 1000 + threads * 100 + (unsigned)cap + i};
    start(&tid[i], stress_submitter, &st[i]);
  }
  for (unsigned i = 0; i < nsub; i++) join(tid[i]);
  atomic_store(&s.stop_waiting, true);
  join(wt);
  sl_pool_destroy(s.p);
  for (size_t i = 0; i < total; i++) ASSERT_EQ(s.runs[i], 1);
  free(s.runs);
}

TEST(pool_stress) {
  static const unsigned counts[] = {1, 2, 4};
  static const size_t caps[] = {1, 4, 64};
  for (size_t a = 0; a < 3; a++)
    for (size_t b = 0; b < 3; b++)
      for (size_t c = 0; c < 3; c++) run_pool_stress(counts[a], counts[b], caps[c]);
}

static const sl_test_case cases[] = {
    SL_CASE(pool_create_invalid, "unit"),
    SL_CASE(pool_runs_every_job_once, "unit"),
    SL_CASE(pool_fifo_single_thread, "unit"),
    SL_CASE(pool_backpressure, "unit"),
    SL_CASE(pool_wait_waits_for_running_jobs, "unit"),
    SL_CASE(pool_destroy_runs_pending, "unit"),
    SL_CASE(pool_destroy_releases_blocked_submitter, "unit"),
    SL_CASE(pool_thread_names, "unit"),
    SL_CASE(pool_stress, "stress"),
};
SL_TEST_MAIN(cases)
