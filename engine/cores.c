/*
 * cores.c -- the core budget: a counting semaphore of tokens, one per core
 * the run may use.
 *
 * A thread holds a token while it runs CPU work, so CPU stages together never
 * use more cores than the budget. sl_cores_acquire blocks for at least one
 * token; sl_cores_try_acquire lets a worker that already holds one borrow
 * idle tokens for parallelism inside one item without ever waiting.
 *
 * Fairness: blocked acquirers wait in a FIFO list, each on its own
 * condition variable, and only the head of the line may take tokens; a
 * release wakes the head alone (a shared condition would wake every waiting
 * stage driver for each token, which profiling showed dominating tiny-item
 * pipelines). try_acquire leaves one free token per queued waiter, so
 * neither newcomers nor opportunistic borrowers can starve a waiter. A
 * newcomer only skips the line when nobody is queued.
 *
 * Invariants (under `lock`): in_use <= budget; peak >= in_use; `queued`
 * is the length of the waiter list; once canceled, acquire fails forever.
 *
 * Lock order: the cores lock is a leaf.
 */
#include "internal.h"

#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

/* A blocked acquirer; lives on its stack while it waits. */
typedef struct waiter {
  pthread_cond_t cv;
  struct waiter *next;
} waiter;

struct sl_cores {
  pthread_mutex_t lock;
  waiter *head, *tail;  /* FIFO of blocked acquirers */
  unsigned queued;
  unsigned budget;      /* immutable after create */
  unsigned in_use;
  /* Written under the lock, read by sl_cores_peak() without it (it takes a
   * const pointer); relaxed is enough for a monotonic statistic. */
  atomic_uint peak;
  bool canceled;
};

/* For tests only (declared in tests/test_queue.c, not in any header):
 * the number of acquirers queued for tokens. */
unsigned sl__cores_queued(sl_cores *c);

int sl_cores_create(sl_cores **out, unsigned budget) {
  *out = NULL;
  /* acquire returns the count taken as an int. */
  if (budget == 0 || budget > INT_MAX) return SL_EINVAL;
  sl_cores *c = calloc(1, sizeof *c);
  if (!c) return SL_ENOMEM;
  sl__mutex_init(&c->lock);
  c->budget = budget;
  atomic_init(&c->peak, 0);
  *out = c;
  return 0;
}

void sl_cores_destroy(sl_cores *c) {
  if (!c) return;
  pthread_mutex_destroy(&c->lock);
  free(c);
}

/* Takes min(free, max) tokens, which the caller checked is at least one.
 * Caller holds the lock. @return the number taken. */
static unsigned take(sl_cores *c, unsigned avail, unsigned max) {
  unsigned k = avail < max ? avail : max;
  c->in_use += k;
  if (c->in_use > atomic_load_explicit(&c->peak, memory_order_relaxed))
    atomic_store_explicit(&c->peak, c->in_use, memory_order_relaxed);
  return k;
}

/* Wakes the head of the line if it could take a token now. Caller holds
 * the lock. */
static void wake_head(sl_cores *c) {
  if (c->head && (c->in_use < c->budget || c->canceled))
    sl__cond_signal(&c->head->cv);
}

static void dequeue(sl_cores *c, waiter *me) {
  waiter **pp = &c->head, *prev = NULL;
  while (*pp != me) {
    prev = *pp;
    pp = &(*pp)->next;
  }
  *pp = me->next;
  if (c->tail == me) c->tail = prev;
  c->queued--;
}

int sl_cores_acquire(sl_cores *c, unsigned max) {
  if (max == 0) return SL_EINVAL;
  sl__mutex_lock(&c->lock);
  int rc;
  if (c->canceled) {
    rc = SL_ECANCELED;
  } else if (!c->head && c->in_use < c->budget) {
    rc = (int)take(c, c->budget - c->in_use, max); /* nobody queued */
  } else {
    waiter me = {.next = NULL};
    sl__cond_init(&me.cv);
    if (c->tail) c->tail->next = &me;
    else c->head = &me;
    c->tail = &me;
    c->queued++;
    while (!c->canceled && (c->head != &me || c->in_use == c->budget))
      sl__cond_wait(&me.cv, &c->lock);
    dequeue(c, &me);
    rc = c->canceled ? SL_ECANCELED : (int)take(c, c->budget - c->in_use, max);
    wake_head(c); /* the next in line may find tokens left over */
    pthread_cond_destroy(&me.cv);
  }
  sl__mutex_unlock(&c->lock);
  return rc;
}

unsigned sl_cores_try_acquire(sl_cores *c, unsigned max) {
  sl__mutex_lock(&c->lock);
  unsigned got = 0;
  unsigned free_now = c->budget - c->in_use;
  if (!c->canceled && max > 0 && free_now > c->queued)
    got = take(c, free_now - c->queued, max);
  sl__mutex_unlock(&c->lock);
  return got;
}

void sl_cores_release(sl_cores *c, unsigned n) {
  if (n == 0) return;
  sl__mutex_lock(&c->lock);
  if (n > c->in_use) {
    /* Releasing tokens nobody holds is a bug in the caller; carrying on
     * would silently raise the budget. */
    fprintf(stderr, "sluice: fatal: sl_cores_release(%u) with %u held\n", n,
            c->in_use);
    abort();
  }
  c->in_use -= n;
  wake_head(c);
  sl__mutex_unlock(&c->lock);
}

void sl_cores_cancel(sl_cores *c) {
  sl__mutex_lock(&c->lock);
  c->canceled = true;
  for (waiter *w = c->head; w; w = w->next) sl__cond_signal(&w->cv);
  sl__mutex_unlock(&c->lock);
}

unsigned sl__cores_queued(sl_cores *c) {
  sl__mutex_lock(&c->lock);
  unsigned n = c->queued;
  sl__mutex_unlock(&c->lock);
  return n;
}

unsigned sl_cores_budget(const sl_cores *c) { return c->budget; }

unsigned sl_cores_peak(const sl_cores *c) {
  return atomic_load_explicit(&c->peak, memory_order_relaxed);
}

/* Parses the first entry of OMP_NUM_THREADS ("8" or "8,4,2" for nested
 * levels). @return the value, or 0 when unset or not a positive integer. */
static unsigned omp_num_threads(void) {
  const char *s = getenv("OMP_NUM_THREADS");
  if (!s) return 0;
  while (*s == ' ' || *s == '\t') s++;
  unsigned long v = 0;
  const char *p = s;
  for (; *p >= '0' && *p <= '9'; p++) {
    v = v * 10 + (unsigned long)(*p - '0');
    if (v > INT_MAX) return 0;
  }
  if (p == s) return 0;
  while (*p == ' ' || *p == '\t') p++;
  if (*p != '\0' && *p != ',') return 0;
  return (unsigned)v;
}

unsigned sl_cores_default(void) {
  unsigned n = omp_num_threads();
  if (n > 0) return n;
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  if (online < 1) return 1;
  return online > INT_MAX ? INT_MAX : (unsigned)online;
}
