/*
 * test_queue.c -- the bounded queue and the core budget.
 *
 * Unit cases pin down the documented semantics one at a time. Stress cases
 * sweep capacity x producers x consumers with random tiny delays and check
 * that every element arrives exactly once and in FIFO order; the shutdown
 * sweep closes or abandons the queue mid-flight and checks that nothing is
 * lost or disposed twice. Threads that must be blocked before the test goes
 * on are detected with the engine's test-only waiter counters, never with
 * sleeps.
 */
#include "test.h"
#include "sluice.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

/* Test-only hooks in engine/queue.c and engine/cores.c. */
void sl__queue_waiters(sl_queue *q, unsigned *producers, unsigned *consumers);
unsigned sl__cores_queued(sl_cores *c);

/* --- helpers ---------------------------------------------------------- */

/* Elements are small integers disguised as non-NULL pointers. */
#define ELEM(i) ((void *)(uintptr_t)((i) + 1))
#define ELEM_ID(p) ((size_t)((uintptr_t)(p)-1))

/* Sometimes spins a little, rarely sleeps a few microseconds: enough to
 * shake out interleavings without slowing the sweep much. */
static void jitter(unsigned *seed) {
  int r = rand_r(seed);
  if (r % 16 == 0) {
    for (volatile int i = 0; i < r % 512; i++) {
    }
  } else if (r % 1024 == 1) {
    struct timespec ts = {0, (long)(1000 + r % 20000)};
    nanosleep(&ts, NULL);
  }
}

static void start(pthread_t *t, void *(*fn)(void *), void *arg) {
  ASSERT_EQ(pthread_create(t, NULL, fn, arg), 0);
}

static void join(pthread_t t) { ASSERT_EQ(pthread_join(t, NULL), 0); }

/* Spins (yielding) until `want` producers and consumers wait on q. */
static void await_waiters(sl_queue *q, unsigned want_prod, unsigned want_cons) {
  for (;;) {
    unsigned p, c;
    sl__queue_waiters(q, &p, &c);
    if (p == want_prod && c == want_cons) return;
    sched_yield();
  }
}

/* --- unit: basic semantics -------------------------------------------- */

TEST(queue_create_invalid) {
  sl_queue *q = (sl_queue *)1;
  ASSERT_EQ(sl_queue_create(&q, 0), SL_EINVAL);
  ASSERT(q == NULL);
  sl_queue_destroy(NULL, NULL);
}

TEST(queue_fifo) {
  sl_queue *q;
  ASSERT_OK(sl_queue_create(&q, 4));
  for (size_t i = 0; i < 4; i++) ASSERT_OK(sl_queue_push(q, ELEM(i)));
  ASSERT_EQ(sl_queue_size(q), 4);
  for (size_t i = 0; i < 4; i++) {
    void *e = NULL;
    ASSERT_OK(sl_queue_pop(q, &e));
    ASSERT_EQ(ELEM_ID(e), i);
  }
  ASSERT_EQ(sl_queue_size(q), 0);
  sl_queue_stats st;
  sl_queue_get_stats(q, &st);
  ASSERT_EQ(st.pushed, 4);
  ASSERT_EQ(st.popped, 4);
  ASSERT_EQ(st.capacity, 4);
  ASSERT_EQ(st.max_depth, 4);
  ASSERT_EQ(st.blocked_ns, 0); /* nobody ever waited */
  ASSERT_EQ(st.starved_ns, 0);
  sl_queue_destroy(q, NULL);
}

TEST(queue_try_variants) {
  sl_queue *q;
  void *e;
  ASSERT_OK(sl_queue_create(&q, 2));
  ASSERT_EQ(sl_queue_try_pop(q, &e), SL_EAGAIN);
  ASSERT_OK(sl_queue_try_push(q, ELEM(0)));
  ASSERT_OK(sl_queue_try_push(q, ELEM(1)));
  ASSERT_EQ(sl_queue_try_push(q, ELEM(2)), SL_EAGAIN);
  ASSERT_EQ(sl_queue_size(q), 2);
  ASSERT_OK(sl_queue_try_pop(q, &e));
  ASSERT_EQ(ELEM_ID(e), 0);
  ASSERT_OK(sl_queue_try_push(q, ELEM(2)));
  ASSERT_OK(sl_queue_try_pop(q, &e));
  ASSERT_EQ(ELEM_ID(e), 1);
  ASSERT_OK(sl_queue_try_pop(q, &e));
  ASSERT_EQ(ELEM_ID(e), 2);
  ASSERT_EQ(sl_queue_try_pop(q, &e), SL_EAGAIN);
  sl_queue_stats st;
  sl_queue_get_stats(q, &st);
  ASSERT_EQ(st.pushed, 3);
  ASSERT_EQ(st.popped, 3);
  ASSERT_EQ(st.max_depth, 2);
  sl_queue_destroy(q, NULL);
}

/* Byte limit: elements weigh their id in bytes. */
static size_t weigh_id(const void *e) { return (size_t)(uintptr_t)e; }

TEST(queue_byte_limit_and_min_items) {
  sl_queue *q;
  void *e;
  ASSERT_OK(sl_queue_create(&q, 16));
  sl_queue_set_byte_limit(q, 100, weigh_id);
  /* An empty queue takes one element however heavy; then it is full. */
  ASSERT_OK(sl_queue_try_push(q, (void *)(uintptr_t)500));
  ASSERT_EQ(sl_queue_try_push(q, (void *)(uintptr_t)1), SL_EAGAIN);
  ASSERT_OK(sl_queue_try_pop(q, &e));
  /* Under the limit it takes more, until the bytes reach it. */
  ASSERT_OK(sl_queue_try_push(q, (void *)(uintptr_t)50));
  ASSERT_OK(sl_queue_try_push(q, (void *)(uintptr_t)40));
  ASSERT_OK(sl_queue_try_push(q, (void *)(uintptr_t)30));
  ASSERT_EQ(sl_queue_try_push(q, (void *)(uintptr_t)1), SL_EAGAIN);
  for (int i = 0; i < 3; i++) ASSERT_OK(sl_queue_try_pop(q, &e));
  /* With a minimum of 3, three heavy ones go in, not a fourth. */
  sl_queue_set_min_items(q, 3);
  for (int i = 0; i < 3; i++) ASSERT_OK(sl_queue_try_push(q, (void *)(uintptr_t)500));
  ASSERT_EQ(sl_queue_try_push(q, (void *)(uintptr_t)500), SL_EAGAIN);
  ASSERT_OK(sl_queue_try_pop(q, &e));
  ASSERT_OK(sl_queue_try_push(q, (void *)(uintptr_t)500));
  /* A light element waits too once three are queued over the limit. */
  ASSERT_EQ(sl_queue_try_push(q, (void *)(uintptr_t)1), SL_EAGAIN);
  ASSERT_EQ(sl_queue_size(q), 3);
  /* 0 means 1. */
  sl_queue_set_min_items(q, 0);
  for (int i = 0; i < 3; i++) ASSERT_OK(sl_queue_try_pop(q, &e));
  ASSERT_OK(sl_queue_try_push(q, (void *)(uintptr_t)500));
  ASSERT_EQ(sl_queue_try_push(q, (void *)(uintptr_t)1), SL_EAGAIN);
  ASSERT_OK(sl_queue_try_pop(q, &e));
  sl_queue_destroy(q, NULL);
}

TEST(queue_close_semantics) {
  sl_queue *q;
  void *e;
  size_t n;
  ASSERT_OK(sl_queue_create(&q, 8));
  for (size_t i = 0; i < 3; i++) ASSERT_OK(sl_queue_push(q, ELEM(i)));
  sl_queue_close(q);
  sl_queue_close(q); /* idempotent */
  ASSERT_EQ(sl_queue_push(q, ELEM(9)), SL_ECLOSED);
  ASSERT_EQ(sl_queue_try_push(q, ELEM(9)), SL_ECLOSED);
  void *batch[2] = {ELEM(9), ELEM(10)};
  n = 99;
  ASSERT_EQ(sl_queue_push_many(q, batch, 2, &n), SL_ECLOSED);
  ASSERT_EQ(n, 0);
  /* Pops drain what was queued before the close, in order. */
  ASSERT_OK(sl_queue_pop(q, &e));
  ASSERT_EQ(ELEM_ID(e), 0);
  ASSERT_OK(sl_queue_try_pop(q, &e));
  ASSERT_EQ(ELEM_ID(e), 1);
  void *out[4];
  uint64_t ticket = 0;
  ASSERT_OK(sl_queue_pop_many(q, out, 4, &n, &ticket));
  ASSERT_EQ(n, 1);
  ASSERT_EQ(ELEM_ID(out[0]), 2);
  ASSERT_EQ(ticket, 2);
  ASSERT_EQ(sl_queue_pop(q, &e), SL_ECLOSED);
  ASSERT_EQ(sl_queue_try_pop(q, &e), SL_ECLOSED);
  n = 99;
  ASSERT_EQ(sl_queue_pop_many(q, out, 4, &n, NULL), SL_ECLOSED);
  ASSERT_EQ(n, 0);
  ASSERT_EQ(sl_queue_pop_many(q, out, 0, &n, NULL), SL_EINVAL);
  sl_queue_destroy(q, NULL);
}

/* Disposal counts per element id, to prove "exactly once". */
static atomic_int disposed_count[64];
static void count_dispose(void *e) {
  atomic_fetch_add(&disposed_count[ELEM_ID(e)], 1);
}

static void reset_disposed(void) {
  for (size_t i = 0; i < 64; i++) atomic_store(&disposed_count[i], 0);
}

TEST(queue_abandon_disposes_once) {
  sl_queue *q;
  void *e;
  reset_disposed();
  ASSERT_OK(sl_queue_create(&q, 8));
  for (size_t i = 0; i < 6; i++) ASSERT_OK(sl_queue_push(q, ELEM(i)));
  ASSERT_OK(sl_queue_pop(q, &e));
  ASSERT_OK(sl_queue_pop(q, &e));
  sl_queue_abandon(q, count_dispose);
  ASSERT_EQ(sl_queue_size(q), 0);
  for (size_t i = 0; i < 6; i++) ASSERT_EQ(disposed_count[i], i < 2 ? 0 : 1);
  /* Abandoned: nothing more comes out, nothing goes in. */
  ASSERT_EQ(sl_queue_pop(q, &e), SL_ECLOSED);
  ASSERT_EQ(sl_queue_try_pop(q, &e), SL_ECLOSED);
  ASSERT_EQ(sl_queue_push(q, ELEM(7)), SL_ECLOSED);
  sl_queue_abandon(q, count_dispose);
  sl_queue_destroy(q, count_dispose);
  for (size_t i = 0; i < 8; i++) ASSERT_EQ(disposed_count[i], (i >= 2 && i < 6));
}

TEST(queue_destroy_disposes_rest) {
  sl_queue *q;
  void *e;
  reset_disposed();
  ASSERT_OK(sl_queue_create(&q, 3));
  /* Wrap the ring so disposal has to follow head around. */
  for (size_t i = 0; i < 3; i++) ASSERT_OK(sl_queue_push(q, ELEM(i)));
  ASSERT_OK(sl_queue_pop(q, &e));
  ASSERT_OK(sl_queue_pop(q, &e));
  ASSERT_OK(sl_queue_push(q, ELEM(3)));
  ASSERT_OK(sl_queue_push(q, ELEM(4)));
  sl_queue_destroy(q, count_dispose);
  for (size_t i = 0; i < 6; i++) ASSERT_EQ(disposed_count[i], (i >= 2 && i <= 4));
}

TEST(queue_tickets_consecutive) {
  sl_queue *q;
  void *out[16];
  size_t n;
  uint64_t ticket;
  ASSERT_OK(sl_queue_create(&q, 16));
  void *in[10];
  for (size_t i = 0; i < 10; i++) in[i] = ELEM(i);
  ASSERT_OK(sl_queue_push_many(q, in, 10, &n));
  ASSERT_EQ(n, 10);
  ASSERT_OK(sl_queue_pop_many(q, out, 3, &n, &ticket));
  ASSERT_EQ(n, 3);
  ASSERT_EQ(ticket, 0);
  void *e;
  ASSERT_OK(sl_queue_pop(q, &e)); /* single pops consume tickets too */
  ASSERT_EQ(ELEM_ID(e), 3);
  ASSERT_OK(sl_queue_pop_many(q, out, 16, &n, &ticket));
  ASSERT_EQ(n, 6);
  ASSERT_EQ(ticket, 4);
  for (size_t i = 0; i < 6; i++) ASSERT_EQ(ELEM_ID(out[i]), 4 + i);
  sl_queue_destroy(q, NULL);
}

/* Random batch sizes over a small ring against a model of the sequence:
 * covers both wrap-around paths of the batch copies. */
TEST(queue_batch_wraparound) {
  for (size_t cap = 1; cap <= 7; cap++) {
    sl_queue *q;
    ASSERT_OK(sl_queue_create(&q, cap));
    unsigned seed = (unsigned)cap;
    size_t next_in = 0, next_out = 0;
    void *buf[8];
    for (int round = 0; round < 500; round++) {
      size_t room = cap - (next_in - next_out);
      size_t k = room ? 1 + (size_t)rand_r(&seed) % room : 0;
      for (size_t i = 0; i < k; i++) buf[i] = ELEM(next_in + i);
      size_t pushed = 0;
      ASSERT_OK(sl_queue_push_many(q, buf, k, &pushed));
      ASSERT_EQ(pushed, k);
      next_in += k;
      ASSERT_EQ(sl_queue_size(q), next_in - next_out);
      if (next_in == next_out) continue;
      size_t max = 1 + (size_t)rand_r(&seed) % 8, n;
      uint64_t ticket;
      ASSERT_OK(sl_queue_pop_many(q, buf, max, &n, &ticket));
      ASSERT_EQ(ticket, next_out);
      ASSERT_EQ(n, max < next_in - next_out ? max : next_in - next_out);
      for (size_t i = 0; i < n; i++) ASSERT_EQ(ELEM_ID(buf[i]), next_out + i);
      next_out += n;
    }
    sl_queue_stats st;
    sl_queue_get_stats(q, &st);
    ASSERT_EQ(st.max_depth, cap);
    ASSERT_EQ(st.pushed, next_in);
    ASSERT_EQ(st.popped, next_out);
    sl_queue_destroy(q, NULL);
  }
}

/* --- unit: blocking, wake-ups and wait statistics ---------------------- */

typedef struct blocker {
  sl_queue *q;
  void *elem;
  int rc;
} blocker;

static void *push_thread(void *arg) {
  blocker *b = arg;
  b->rc = sl_queue_push(b->q, b->elem);
  return NULL;
}

static void *pop_thread(void *arg) {
  blocker *b = arg;
  b->rc = sl_queue_pop(b->q, &b->elem);
  return NULL;
}

TEST(queue_blocked_ns_counts_real_wait) {
  sl_queue *q;
  ASSERT_OK(sl_queue_create(&q, 1));
  ASSERT_OK(sl_queue_push(q, ELEM(0)));
  blocker b = {q, ELEM(1), -1};
  pthread_t t;
  start(&t, push_thread, &b);
  await_waiters(q, 1, 0); /* the producer is inside its wait on "not full" */
  sl_queue_stats st;
  sl_queue_get_stats(q, &st);
  ASSERT_EQ(st.pushed, 1);
  void *e;
  ASSERT_OK(sl_queue_pop(q, &e));
  ASSERT_EQ(ELEM_ID(e), 0);
  join(t);
  ASSERT_OK(b.rc);
  sl_queue_get_stats(q, &st);
  ASSERT(st.blocked_ns > 0);
  ASSERT_EQ(st.starved_ns, 0);
  ASSERT_EQ(st.max_depth, 1);
  ASSERT_OK(sl_queue_pop(q, &e));
  ASSERT_EQ(ELEM_ID(e), 1);
  sl_queue_destroy(q, NULL);
}

TEST(queue_starved_ns_counts_real_wait) {
  sl_queue *q;
  ASSERT_OK(sl_queue_create(&q, 4));
  blocker b = {q, NULL, -1};
  pthread_t t;
  start(&t, pop_thread, &b);
  await_waiters(q, 0, 1);
  ASSERT_OK(sl_queue_push(q, ELEM(5)));
  join(t);
  ASSERT_OK(b.rc);
  ASSERT_EQ(ELEM_ID(b.elem), 5);
  sl_queue_stats st;
  sl_queue_get_stats(q, &st);
  ASSERT(st.starved_ns > 0);
  ASSERT_EQ(st.blocked_ns, 0);
  sl_queue_destroy(q, NULL);
}

typedef struct batch_arg {
  sl_queue *q;
  size_t n;
  size_t pushed;
  int rc;
} batch_arg;

static void *push_many_thread(void *arg) {
  batch_arg *a = arg;
  void *in[100];
  for (size_t i = 0; i < a->n; i++) in[i] = ELEM(i);
  a->rc = sl_queue_push_many(a->q, in, a->n, &a->pushed);
  return NULL;
}

/* A batch larger than the queue goes in piece by piece as space frees. */
TEST(queue_push_many_waits_for_space) {
  sl_queue *q;
  ASSERT_OK(sl_queue_create(&q, 3));
  batch_arg a = {q, 100, 0, -1};
  pthread_t t;
  start(&t, push_many_thread, &a);
  await_waiters(q, 1, 0); /* filled the queue, now waits for the rest */
  ASSERT_EQ(sl_queue_size(q), 3);
  for (size_t i = 0; i < 100;) {
    void *out[2];
    size_t n;
    ASSERT_OK(sl_queue_pop_many(q, out, 2, &n, NULL));
    for (size_t j = 0; j < n; j++) ASSERT_EQ(ELEM_ID(out[j]), i + j);
    i += n;
  }
  join(t);
  ASSERT_OK(a.rc);
  ASSERT_EQ(a.pushed, 100);
  sl_queue_stats st;
  sl_queue_get_stats(q, &st);
  ASSERT(st.blocked_ns > 0);
  sl_queue_destroy(q, NULL);
}

/* close() wakes a producer blocked on full (ECLOSED, keeps its element) and
 * consumers blocked on empty (ECLOSED once drained). */
TEST(queue_close_wakes_waiters) {
  for (int mode = 0; mode < 2; mode++) {
    sl_queue *full, *empty;
    reset_disposed();
    ASSERT_OK(sl_queue_create(&full, 1));
    ASSERT_OK(sl_queue_create(&empty, 1));
    ASSERT_OK(sl_queue_push(full, ELEM(0)));
    blocker prod = {full, ELEM(1), -1};
    blocker cons[2] = {{empty, NULL, -1}, {empty, NULL, -1}};
    pthread_t tp, tc[2];
    start(&tp, push_thread, &prod);
    start(&tc[0], pop_thread, &cons[0]);
    start(&tc[1], pop_thread, &cons[1]);
    await_waiters(full, 1, 0);
    await_waiters(empty, 0, 2);
    if (mode == 0) {
      sl_queue_close(full);
      sl_queue_close(empty);
    } else {
      sl_queue_abandon(full, count_dispose);
      sl_queue_abandon(empty, count_dispose);
    }
    join(tp);
    join(tc[0]);
    join(tc[1]);
    ASSERT_EQ(prod.rc, SL_ECLOSED);
    ASSERT_EQ(cons[0].rc, SL_ECLOSED);
    ASSERT_EQ(cons[1].rc, SL_ECLOSED);
    /* The element queued before the close: drained by close, disposed by
     * abandon; the blocked producer's element was never taken. */
    void *e;
    ASSERT_EQ(sl_queue_pop(full, &e), mode == 0 ? 0 : SL_ECLOSED);
    ASSERT_EQ(disposed_count[0], mode);
    ASSERT_EQ(disposed_count[1], 0);
    sl_queue_destroy(full, count_dispose);
    sl_queue_destroy(empty, count_dispose);
    ASSERT_EQ(disposed_count[0], mode);
  }
}

/* --- stress: exactly once, FIFO, all mixes of calls -------------------- */

typedef struct sweep {
  sl_queue *q;
  size_t per_producer; /* elements each producer pushes */
  unsigned nprod;
  atomic_uchar *seen;   /* per element id: times consumed */
  void **by_ticket;     /* element recorded at its pop ticket */
  atomic_size_t consumed;
} sweep;

typedef struct sweep_thread {
  sweep *s;
  unsigned id;
  unsigned seed;
} sweep_thread;

/* Pushes ids id*per .. id*per+per-1 in order, by single pushes, batches and
 * try_push retries, chosen at random. */
static void *sweep_producer(void *arg) {
  sweep_thread *t = arg;
  sweep *s = t->s;
  size_t base = t->id * s->per_producer, i = 0;
  void *buf[8];
  while (i < s->per_producer) {
    int how = rand_r(&t->seed) % 4;
    jitter(&t->seed);
    if (how == 0) {
      size_t k = 1 + (size_t)rand_r(&t->seed) % 8, pushed;
      if (k > s->per_producer - i) k = s->per_producer - i;
      for (size_t j = 0; j < k; j++) buf[j] = ELEM(base + i + j);
      ASSERT_OK(sl_queue_push_many(s->q, buf, k, &pushed));
      ASSERT_EQ(pushed, k);
      i += k;
    } else if (how == 1) {
      int rc;
      while ((rc = sl_queue_try_push(s->q, ELEM(base + i))) == SL_EAGAIN)
        sched_yield();
      ASSERT_OK(rc);
      i++;
    } else {
      ASSERT_OK(sl_queue_push(s->q, ELEM(base + i)));
      i++;
    }
  }
  return NULL;
}

/* Checks one received element: first time seen, and later than the last one
 * this consumer got from the same producer (FIFO per producer). */
static void sweep_receive(sweep *s, size_t *last, void *e) {
  size_t id = ELEM_ID(e);
  ASSERT(id < s->per_producer * s->nprod);
  ASSERT_EQ(atomic_fetch_add(&s->seen[id], 1), 0);
  size_t p = id / s->per_producer;
  ASSERT(last[p] == SIZE_MAX || last[p] < id);
  last[p] = id;
}

/* Pops until closed and drained, by single pops, batches with tickets and
 * try_pop polls. */
static void *sweep_consumer(void *arg) {
  sweep_thread *t = arg;
  sweep *s = t->s;
  size_t last[4] = {SIZE_MAX, SIZE_MAX, SIZE_MAX, SIZE_MAX};
  void *buf[8];
  for (;;) {
    int how = rand_r(&t->seed) % 4, rc;
    size_t n = 1;
    uint64_t ticket = UINT64_MAX;
    jitter(&t->seed);
    if (how == 0 || how == 1) {
      size_t max = how == 0 ? 1 : 1 + (size_t)rand_r(&t->seed) % 8;
      rc = sl_queue_pop_many(s->q, buf, max, &n, &ticket);
    } else if (how == 2) {
      while ((rc = sl_queue_try_pop(s->q, buf)) == SL_EAGAIN) sched_yield();
    } else {
      rc = sl_queue_pop(s->q, buf);
    }
    if (rc == SL_ECLOSED) break;
    ASSERT_OK(rc);
    for (size_t j = 0; j < n; j++) {
      sweep_receive(s, last, buf[j]);
      if (ticket != UINT64_MAX) {
        ASSERT(s->by_ticket[ticket + j] == NULL);
        s->by_ticket[ticket + j] = buf[j];
      }
    }
    atomic_fetch_add(&s->consumed, n);
  }
  return NULL;
}

/* Elements recorded by ticket, read in ticket order, must be in each
 * producer's order: the queue hands elements out in push order. */
static void check_ticket_order(const sweep *s, size_t total) {
  size_t last[4] = {SIZE_MAX, SIZE_MAX, SIZE_MAX, SIZE_MAX};
  for (size_t i = 0; i < total; i++) {
    if (!s->by_ticket[i]) continue;
    size_t id = ELEM_ID(s->by_ticket[i]), p = id / s->per_producer;
    ASSERT(last[p] == SIZE_MAX || last[p] < id);
    last[p] = id;
  }
}

static void run_sweep(size_t cap, unsigned nprod, unsigned ncons, size_t per) {
  sweep s = {.per_producer = per, .nprod = nprod};
  size_t total = per * nprod;
  ASSERT_OK(sl_queue_create(&s.q, cap));
  s.seen = calloc(total, sizeof *s.seen);
  s.by_ticket = calloc(total, sizeof *s.by_ticket);
  ASSERT(s.seen && s.by_ticket);
  atomic_init(&s.consumed, 0);
  sweep_thread pt[4], ct[4];
  pthread_t ptid[4], ctid[4];
  for (unsigned i = 0; i < ncons; i++) {
    ct[i] = (sweep_thread){&s, i, (unsigned)(cap * 131 + nprod * 17 + i * 7 + 1000)};
    start(&ctid[i], sweep_consumer, &ct[i]);
  }
  for (unsigned i = 0; i < nprod; i++) {
    pt[i] = (sweep_thread){&s, i, (unsigned)(cap * 131 + ncons * 17 + i * 7)};
    start(&ptid[i], sweep_producer, &pt[i]);
  }
  for (unsigned i = 0; i < nprod; i++) join(ptid[i]);
  sl_queue_close(s.q);
  for (unsigned i = 0; i < ncons; i++) join(ctid[i]);
  ASSERT_EQ(atomic_load(&s.consumed), total);
  for (size_t i = 0; i < total; i++) ASSERT_EQ(s.seen[i], 1);
  check_ticket_order(&s, total);
  sl_queue_stats st;
  sl_queue_get_stats(s.q, &st);
  ASSERT_EQ(st.pushed, total);
  ASSERT_EQ(st.popped, total);
  ASSERT_LE(st.max_depth, cap);
  ASSERT_EQ(sl_queue_size(s.q), 0);
  sl_queue_destroy(s.q, NULL);
  free(s.seen);
  free(s.by_ticket);
}

TEST(queue_stress_sweep) {
  static const size_t caps[] = {1, 2, 64};
  for (size_t c = 0; c < 3; c++)
    for (unsigned np = 1; np <= 4; np++)
      for (unsigned nc = 1; nc <= 4; nc++) run_sweep(caps[c], np, nc, 2000 / np);
}

/* --- stress: early shutdown -------------------------------------------- */

/* Each element is heap memory, so a double dispose or a leak shows up
 * under ASan; `fate` records who ended each one. */
enum { FATE_NONE, FATE_CONSUMED, FATE_DISPOSED, FATE_RETURNED };

typedef struct shut {
  sl_queue *q;
  size_t per_producer;
  atomic_uchar *fate; /* per id */
  atomic_size_t pushed_ok, consumed, started_consuming;
} shut;

typedef struct shut_elem {
  size_t id;
  shut *s;
} shut_elem;

static void end_elem(shut_elem *e, int fate) {
  unsigned char old = atomic_exchange(&e->s->fate[e->id], (unsigned char)fate);
  ASSERT_EQ(old, FATE_NONE);
  free(e);
}

static void shut_dispose(void *p) { end_elem(p, FATE_DISPOSED); }

typedef struct shut_thread {
  shut *s;
  unsigned id;
  unsigned seed;
} shut_thread;

static void *shut_producer(void *arg) {
  shut_thread *t = arg;
  shut *s = t->s;
  size_t base = t->id * s->per_producer;
  void *buf[8];
  for (size_t i = 0; i < s->per_producer;) {
    size_t k = rand_r(&t->seed) % 2 ? 1 : 1 + (size_t)rand_r(&t->seed) % 8;
    if (k > s->per_producer - i) k = s->per_producer - i;
    for (size_t j = 0; j < k; j++) {
      shut_elem *e = malloc(sizeof *e);
      ASSERT(e);
      *e = (shut_elem){base + i + j, s};
      buf[j] = e;
    }
    jitter(&t->seed);
    size_t pushed = 0;
    int rc;
    if (k == 1) {
      rc = sl_queue_push(s->q, buf[0]);
      pushed = rc == 0;
    } else {
      rc = sl_queue_push_many(s->q, buf, k, &pushed);
    }
    atomic_fetch_add(&s->pushed_ok, pushed);
    /* What did not go in stays ours. */
    for (size_t j = pushed; j < k; j++) end_elem(buf[j], FATE_RETURNED);
    if (rc == SL_ECLOSED) return NULL;
    ASSERT_OK(rc);
    i += k;
  }
  return NULL;
}

static void *shut_consumer(void *arg) {
  shut_thread *t = arg;
  shut *s = t->s;
  void *buf[8];
  for (;;) {
    size_t n, max = 1 + (size_t)rand_r(&t->seed) % 8;
    jitter(&t->seed);
    int rc = sl_queue_pop_many(s->q, buf, max, &n, NULL);
    if (rc == SL_ECLOSED) return NULL;
    ASSERT_OK(rc);
    for (size_t j = 0; j < n; j++) end_elem(buf[j], FATE_CONSUMED);
    atomic_fetch_add(&s->consumed, n);
  }
}

static void run_shutdown(size_t cap, unsigned np, unsigned nc, bool abandon,
                         unsigned seed) {
  shut s = {.per_producer = 3000};
  size_t total = s.per_producer * np;
  ASSERT_OK(sl_queue_create(&s.q, cap));
  s.fate = calloc(total, sizeof *s.fate);
  ASSERT(s.fate);
  atomic_init(&s.pushed_ok, 0);
  atomic_init(&s.consumed, 0);
  shut_thread pt[4], ct[4];
  pthread_t ptid[4], ctid[4];
  for (unsigned i = 0; i < nc; i++) {
    ct[i] = (shut_thread){&s, i, seed + 100 + i};
    start(&ctid[i], shut_consumer, &ct[i]);
  }
  for (unsigned i = 0; i < np; i++) {
    pt[i] = (shut_thread){&s, i, seed + i};
    start(&ptid[i], shut_producer, &pt[i]);
  }
  /* Shut down mid-flight: once consumers got a random part of the work
   * (below the total, so producers are still running or blocked). */
  size_t threshold = (size_t)rand_r(&seed) % (total / 2);
  while (atomic_load(&s.consumed) < threshold) sched_yield();
  if (abandon)
    sl_queue_abandon(s.q, shut_dispose);
  else
    sl_queue_close(s.q);
  for (unsigned i = 0; i < np; i++) join(ptid[i]);
  for (unsigned i = 0; i < nc; i++) join(ctid[i]);
  size_t n_cons = 0, n_disp = 0, n_ret = 0;
  for (size_t i = 0; i < total; i++) {
    n_cons += s.fate[i] == FATE_CONSUMED;
    n_disp += s.fate[i] == FATE_DISPOSED;
    n_ret += s.fate[i] == FATE_RETURNED;
  }
  ASSERT_EQ(n_cons, atomic_load(&s.consumed));
  ASSERT_EQ(n_cons + n_disp, atomic_load(&s.pushed_ok));
  if (!abandon) ASSERT_EQ(n_disp, 0);
  ASSERT_EQ(sl_queue_size(s.q), 0);
  sl_queue_destroy(s.q, shut_dispose); /* must find nothing left */
  size_t n_disp2 = 0;
  for (size_t i = 0; i < total; i++) n_disp2 += s.fate[i] == FATE_DISPOSED;
  ASSERT_EQ(n_disp2, n_disp);
  (void)n_ret;
  free(s.fate);
}

TEST(queue_stress_shutdown) {
  static const size_t caps[] = {1, 2, 64};
  static const unsigned counts[] = {1, 2, 4};
  unsigned seed = 1;
  for (size_t c = 0; c < 3; c++)
    for (size_t p = 0; p < 3; p++)
      for (size_t k = 0; k < 3; k++)
        for (int ab = 0; ab < 2; ab++)
          run_shutdown(caps[c], counts[p], counts[k], ab, seed++ * 7919);
}

/* --- cores -------------------------------------------------------------- */

TEST(cores_basic) {
  sl_cores *c = (sl_cores *)1;
  ASSERT_EQ(sl_cores_create(&c, 0), SL_EINVAL);
  ASSERT(c == NULL);
  sl_cores_destroy(NULL);
  ASSERT_OK(sl_cores_create(&c, 4));
  ASSERT_EQ(sl_cores_budget(c), 4);
  ASSERT_EQ(sl_cores_peak(c), 0);
  ASSERT_EQ(sl_cores_acquire(c, 2), 2);
  ASSERT_EQ(sl_cores_try_acquire(c, 5), 2);
  ASSERT_EQ(sl_cores_try_acquire(c, 1), 0);
  ASSERT_EQ(sl_cores_peak(c), 4);
  sl_cores_release(c, 3);
  ASSERT_EQ(sl_cores_acquire(c, 10), 3);
  sl_cores_release(c, 4);
  ASSERT_EQ(sl_cores_acquire(c, 1), 1);
  ASSERT_EQ(sl_cores_try_acquire(c, 0), 0);
  ASSERT_EQ(sl_cores_acquire(c, 0), SL_EINVAL);
  sl_cores_release(c, 1);
  ASSERT_EQ(sl_cores_peak(c), 4);
  sl_cores_destroy(c);
}

typedef struct cores_waiter {
  sl_cores *c;
  unsigned max;
  int rc;
  atomic_int *order; /* next arrival number */
  int arrived;       /* this waiter's arrival number */
} cores_waiter;

static void *cores_wait_thread(void *arg) {
  cores_waiter *w = arg;
  w->rc = sl_cores_acquire(w->c, w->max);
  if (w->rc > 0 && w->order) {
    w->arrived = atomic_fetch_add(w->order, 1);
    sl_cores_release(w->c, (unsigned)w->rc);
  }
  return NULL;
}

static void await_queued(sl_cores *c, unsigned n) {
  while (sl__cores_queued(c) != n) sched_yield();
}

TEST(cores_cancel_wakes_waiters) {
  sl_cores *c;
  ASSERT_OK(sl_cores_create(&c, 2));
  ASSERT_EQ(sl_cores_acquire(c, 2), 2);
  cores_waiter w[3];
  pthread_t t[3];
  for (int i = 0; i < 3; i++) {
    w[i] = (cores_waiter){c, 1, 0, NULL, 0};
    start(&t[i], cores_wait_thread, &w[i]);
  }
  await_queued(c, 3);
  sl_cores_cancel(c);
  for (int i = 0; i < 3; i++) {
    join(t[i]);
    ASSERT_EQ(w[i].rc, SL_ECANCELED);
  }
  /* Later acquires fail at once, even with tokens free. */
  sl_cores_release(c, 2);
  ASSERT_EQ(sl_cores_acquire(c, 1), SL_ECANCELED);
  ASSERT_EQ(sl_cores_try_acquire(c, 1), 0);
  sl_cores_destroy(c);
}

/* Waiters are served in arrival order, and a borrower (try_acquire) cannot
 * take a token a queued waiter is owed. A fifth waiter that keeps its token
 * guarantees that someone is queued or holding the only token whenever the
 * main thread borrows, so the borrow must always fail. */
TEST(cores_fifo_and_no_barging) {
  sl_cores *c;
  atomic_int order;
  atomic_init(&order, 0);
  ASSERT_OK(sl_cores_create(&c, 1));
  ASSERT_EQ(sl_cores_acquire(c, 1), 1);
  cores_waiter w[5];
  pthread_t t[5];
  for (int i = 0; i < 5; i++) {
    w[i] = (cores_waiter){c, 3, 0, i < 4 ? &order : NULL, -1};
    start(&t[i], cores_wait_thread, &w[i]);
    await_queued(c, (unsigned)i + 1); /* fixes the arrival order */
  }
  sl_cores_release(c, 1);
  ASSERT_EQ(sl_cores_try_acquire(c, 1), 0);
  for (int i = 0; i < 5; i++) {
    join(t[i]);
    ASSERT_EQ(w[i].rc, 1);
    if (i < 4) ASSERT_EQ(w[i].arrived, i);
  }
  ASSERT_EQ(sl_cores_try_acquire(c, 1), 0); /* w[4] still holds it */
  sl_cores_release(c, 1);
  ASSERT_EQ(sl_cores_try_acquire(c, 1), 1);
  sl_cores_release(c, 1);
  ASSERT_EQ(sl_cores_peak(c), 1);
  sl_cores_destroy(c);
}

typedef struct cores_stress {
  sl_cores *c;
  atomic_uint in_use, max_seen;
  int iters;
  bool cancel_midway;
  atomic_int done_iters;
} cores_stress;

typedef struct cores_stress_thread {
  cores_stress *s;
  unsigned seed;
} cores_stress_thread;

static void note_in_use(cores_stress *s, unsigned k) {
  unsigned now = atomic_fetch_add(&s->in_use, k) + k;
  ASSERT_LE(now, sl_cores_budget(s->c));
  unsigned m = atomic_load(&s->max_seen);
  while (now > m && !atomic_compare_exchange_weak(&s->max_seen, &m, now)) {
  }
}

static void *cores_stress_body(void *arg) {
  cores_stress_thread *t = arg;
  cores_stress *s = t->s;
  for (int i = 0; i < s->iters; i++) {
    unsigned max = 1 + (unsigned)rand_r(&t->seed) % 4;
    int k = sl_cores_acquire(s->c, max);
    if (k == SL_ECANCELED) return NULL;
    ASSERT(k >= 1 && (unsigned)k <= max);
    note_in_use(s, (unsigned)k);
    jitter(&t->seed);
    /* Borrow more for "intra-item parallelism", sometimes. */
    unsigned extra = rand_r(&t->seed) % 2 ? sl_cores_try_acquire(s->c, 2) : 0;
    if (extra) note_in_use(s, extra);
    jitter(&t->seed);
    atomic_fetch_sub(&s->in_use, (unsigned)k + extra);
    sl_cores_release(s->c, (unsigned)k + extra);
    atomic_fetch_add(&s->done_iters, 1);
  }
  return NULL;
}

static void run_cores_stress(unsigned budget, unsigned nthreads, bool cancel) {
  cores_stress s = {.iters = 3000, .cancel_midway = cancel};
  atomic_init(&s.in_use, 0);
  atomic_init(&s.max_seen, 0);
  atomic_init(&s.done_iters, 0);
  ASSERT_OK(sl_cores_create(&s.c, budget));
  cores_stress_thread th[8];
  pthread_t tid[8];
  for (unsigned i = 0; i < nthreads; i++) {
    th[i] = (cores_stress_thread){&s, budget * 100 + i};
    start(&tid[i], cores_stress_body, &th[i]);
  }
  if (cancel) {
    while (atomic_load(&s.done_iters) < s.iters / 2) sched_yield();
    sl_cores_cancel(s.c);
  }
  for (unsigned i = 0; i < nthreads; i++) join(tid[i]);
  if (!cancel) ASSERT_EQ(atomic_load(&s.done_iters), s.iters * (int)nthreads);
  ASSERT_EQ(atomic_load(&s.in_use), 0);
  unsigned peak = sl_cores_peak(s.c);
  ASSERT_LE(peak, budget);
  ASSERT_LE(atomic_load(&s.max_seen), peak);
  ASSERT(peak >= 1);
  sl_cores_destroy(s.c);
}

TEST(cores_stress_budget) {
  for (unsigned budget = 1; budget <= 3; budget++)
    for (unsigned n = 1; n <= 6; n += 2) run_cores_stress(budget, n, false);
  for (unsigned budget = 1; budget <= 3; budget++) run_cores_stress(budget, 6, true);
}

TEST(cores_default_honours_omp_num_threads) {
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  unsigned fallback = online < 1 ? 1 : (unsigned)online;
  const char *old = getenv("OMP_NUM_THREADS");
  char *saved = old ? strdup(old) : NULL;
  static const struct {
    const char *value;
    unsigned expect; /* 0 = falls back to online cores */
  } cases[] = {{"3", 3},   {"5,2", 5}, {" 7 ", 7},   {"12,", 12},
               {"0", 0},   {"", 0},    {"abc", 0},   {"-2", 0},
               {"4x", 0},  {"1.5", 0}, {"99999999999", 0}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ASSERT_EQ(setenv("OMP_NUM_THREADS", cases[i].value, 1), 0);
    unsigned got = sl_cores_default();
    if (got != (cases[i].expect ? cases[i].expect : fallback))
      SL__FAIL("OMP_NUM_THREADS=\"%s\": got %u", cases[i].value, got);
  }
  ASSERT_EQ(unsetenv("OMP_NUM_THREADS"), 0);
  ASSERT_EQ(sl_cores_default(), fallback);
  if (saved) setenv("OMP_NUM_THREADS", saved, 1);
  free(saved);
}

static const sl_test_case cases[] = {
    SL_CASE(queue_create_invalid, "unit"),
    SL_CASE(queue_fifo, "unit"),
    SL_CASE(queue_try_variants, "unit"),
    SL_CASE(queue_byte_limit_and_min_items, "unit"),
    SL_CASE(queue_close_semantics, "unit"),
    SL_CASE(queue_abandon_disposes_once, "unit"),
    SL_CASE(queue_destroy_disposes_rest, "unit"),
    SL_CASE(queue_tickets_consecutive, "unit"),
    SL_CASE(queue_batch_wraparound, "unit"),
    SL_CASE(queue_blocked_ns_counts_real_wait, "unit"),
    SL_CASE(queue_starved_ns_counts_real_wait, "unit"),
    SL_CASE(queue_push_many_waits_for_space, "unit"),
    SL_CASE(queue_close_wakes_waiters, "unit"),
    SL_CASE(queue_stress_sweep, "stress"),
    SL_CASE(queue_stress_shutdown, "stress"),
    SL_CASE(cores_basic, "unit"),
    SL_CASE(cores_cancel_wakes_waiters, "unit"),
    SL_CASE(cores_fifo_and_no_barging, "unit"),
    SL_CASE(cores_stress_budget, "stress"),
    SL_CASE(cores_default_honours_omp_num_threads, "unit"),
};
SL_TEST_MAIN(cases)
