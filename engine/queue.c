/*
 * queue.c -- bounded, blocking, closable queue of opaque pointers.
 *
 * Every hop between two pipeline stages is one of these, so the common case
 * (an uncontended push or pop, or a batch of them) must cost one lock
 * acquisition and no system call. The design follows zstd's pool queue: a
 * ring buffer under one mutex, one condition for "not full" (producers wait
 * on it) and one for "not empty" (consumers wait on it), and a closed flag.
 *
 * Invariants (all under `lock`):
 *   - ring[head], ring[head+1], ... (mod cap) hold the `len` queued elements,
 *     oldest first; 0 <= len <= cap.
 *   - waiting_producers / waiting_consumers count threads inside a wait loop.
 *     We signal a condition only when its count is non-zero, so a push or pop
 *     that nobody waits for never enters the kernel. Every change that makes
 *     a waiter's predicate true wakes at least min(change, waiters) of them,
 *     and waiters re-check the predicate, so no wake-up is lost.
 *   - popped counts every element ever handed to a consumer; it is the pop
 *     ticket of the next element popped.
 *   - with a byte limit, `bytes` is the sum of weigh() over queued elements;
 *     the queue counts as full when bytes >= byte_limit and len >= min_items
 *     (>= 1): a queue holding fewer than min_items elements takes one more,
 *     however heavy, so progress is never blocked by a single large item,
 *     and a consumer with min_items workers can always find work for all
 *     of them (a batch of one huge item would run on one core).
 *   - once closed, nothing is ever pushed again. Once abandoned (implies
 *     closed), consumers get nothing more: the abandoning thread owns and
 *     disposes whatever is left.
 *
 * Lock order: the queue lock is a leaf. dispose callbacks run without it, so
 * they may take any lock (arena, other queues).
 */
#include "internal.h"

#include <string.h>

struct sl_queue {
  pthread_mutex_t lock;
  pthread_cond_t not_full;  /* producers wait here while len == cap */
  pthread_cond_t not_empty; /* consumers wait here while len == 0 */
  void **ring;              /* cap slots */
  size_t cap, head, len;
  bool closed, abandoned;
  unsigned waiting_producers, waiting_consumers;
  uint64_t pushed, popped;
  uint64_t blocked_ns, starved_ns;
  size_t max_depth;
  /* Optional byte limit: weigh(elem) bytes are counted while queued. */
  size_t (*weigh)(const void *elem);
  uint64_t byte_limit, bytes;
  size_t min_items; /* >= 1 */
};

/* For tests only (declared in tests/test_queue.c, not in any header):
 * the number of threads now waiting for space and for elements. */
void sl__queue_waiters(sl_queue *q, unsigned *producers, unsigned *consumers);

int sl_queue_create(sl_queue **out, size_t capacity) {
  *out = NULL;
  if (capacity == 0) return SL_EINVAL;
  if (capacity > SIZE_MAX / sizeof(void *)) return SL_ENOMEM;
  sl_queue *q = calloc(1, sizeof *q);
  if (!q) return SL_ENOMEM;
  q->ring = malloc(capacity * sizeof *q->ring);
  if (!q->ring) {
    free(q);
    return SL_ENOMEM;
  }
  q->cap = capacity;
  q->min_items = 1;
  sl__mutex_init(&q->lock);
  sl__cond_init(&q->not_full);
  sl__cond_init(&q->not_empty);
  *out = q;
  return 0;
}

/* Removes the oldest element. Caller holds the lock and len > 0. */
static void *ring_take_one(sl_queue *q) {
  void *e = q->ring[q->head];
  if (++q->head == q->cap) q->head = 0;
  q->len--;
  if (q->weigh) q->bytes -= q->weigh(e);
  return e;
}

/* How many of src[0..n) may be pushed now. Caller holds the lock. */
static size_t room_for(const sl_queue *q, void *const *src, size_t n) {
  size_t k = q->cap - q->len;
  if (k > n) k = n;
  if (!q->weigh || !q->byte_limit) return k;
  uint64_t bytes = q->bytes;
  size_t len = q->len, i = 0;
  while (i < k && (len < q->min_items || bytes < q->byte_limit)) {
    bytes += q->weigh(src[i++]);
    len++;
  }
  return i;
}

static bool is_full(const sl_queue *q) {
  return q->len == q->cap ||
         (q->weigh && q->byte_limit && q->len >= q->min_items &&
          q->bytes >= q->byte_limit);
}

void sl_queue_set_byte_limit(sl_queue *q, uint64_t limit,
                             size_t (*weigh)(const void *elem)) {
  sl__mutex_lock(&q->lock);
  q->bytes = 0;
  for (size_t i = 0; weigh && i < q->len; i++)
    q->bytes += weigh(q->ring[(q->head + i) % q->cap]);
  q->weigh = weigh;
  q->byte_limit = weigh ? limit : 0;
  if (q->waiting_producers) sl__cond_broadcast(&q->not_full);
  sl__mutex_unlock(&q->lock);
}

void sl_queue_set_min_items(sl_queue *q, size_t n) {
  sl__mutex_lock(&q->lock);
  q->min_items = n ? n : 1;
  if (q->waiting_producers) sl__cond_broadcast(&q->not_full);
  sl__mutex_unlock(&q->lock);
}

void sl_queue_destroy(sl_queue *q, void (*dispose)(void *)) {
  if (!q) return;
  /* No other thread may touch q now, so no lock is needed. */
  while (q->len > 0) {
    void *e = ring_take_one(q);
    if (dispose) dispose(e);
  }
  pthread_mutex_destroy(&q->lock);
  pthread_cond_destroy(&q->not_full);
  pthread_cond_destroy(&q->not_empty);
  free(q->ring);
  free(q);
}

/* Appends n elements; caller holds the lock and checked n <= cap - len.
 * Ownership of the elements passes to the queue. */
static void ring_put(sl_queue *q, void *const *src, size_t n) {
  size_t tail = q->head + q->len;
  if (tail >= q->cap) tail -= q->cap;
  size_t first = q->cap - tail;
  if (first > n) first = n;
  memcpy(q->ring + tail, src, first * sizeof *src);
  memcpy(q->ring, src + first, (n - first) * sizeof *src);
  for (size_t i = 0; q->weigh && i < n; i++) q->bytes += q->weigh(src[i]);
  q->len += n;
  q->pushed += n;
  if (q->len > q->max_depth) q->max_depth = q->len;
}

/* Moves the n oldest elements to dst; caller holds the lock and n <= len.
 * Ownership passes to the caller. */
static void ring_take(sl_queue *q, void **dst, size_t n) {
  size_t first = q->cap - q->head;
  if (first > n) first = n;
  memcpy(dst, q->ring + q->head, first * sizeof *dst);
  memcpy(dst + first, q->ring, (n - first) * sizeof *dst);
  for (size_t i = 0; q->weigh && i < n; i++) q->bytes -= q->weigh(dst[i]);
  q->head += n;
  if (q->head >= q->cap) q->head -= q->cap;
  q->len -= n;
  q->popped += n;
}

/* Wakes the waiters of `c` after `n` slots or elements became available:
 * nobody when nobody waits (the uncontended fast path), one for a single
 * slot, all when a batch may satisfy several (they re-check and the losers
 * wait again). Caller holds the lock. */
static void wake(pthread_cond_t *c, unsigned waiters, size_t n) {
  if (waiters == 0) return;
  if (n > 1 && waiters > 1)
    sl__cond_broadcast(c);
  else
    sl__cond_signal(c);
}

/* Waits while the queue is full and open. Caller holds the lock; the time
 * is measured only when the thread really waits. */
static void wait_for_space(sl_queue *q) {
  if (!is_full(q) || q->closed) return;
  uint64_t t0 = sl_now_ns();
  q->waiting_producers++;
  do {
    sl__cond_wait(&q->not_full, &q->lock);
  } while (is_full(q) && !q->closed);
  q->waiting_producers--;
  q->blocked_ns += sl_now_ns() - t0;
}

/* Waits while the queue is empty and open. Caller holds the lock. */
static void wait_for_elements(sl_queue *q) {
  if (q->len > 0 || q->closed) return;
  uint64_t t0 = sl_now_ns();
  q->waiting_consumers++;
  do {
    sl__cond_wait(&q->not_empty, &q->lock);
  } while (q->len == 0 && !q->closed);
  q->waiting_consumers--;
  q->starved_ns += sl_now_ns() - t0;
}

int sl_queue_push(sl_queue *q, void *elem) {
  sl__mutex_lock(&q->lock);
  wait_for_space(q);
  int rc = SL_ECLOSED;
  if (!q->closed) {
    ring_put(q, &elem, 1);
    wake(&q->not_empty, q->waiting_consumers, 1);
    rc = 0;
  }
  sl__mutex_unlock(&q->lock);
  return rc;
}

int sl_queue_try_push(sl_queue *q, void *elem) {
  sl__mutex_lock(&q->lock);
  int rc = 0;
  if (q->closed) {
    rc = SL_ECLOSED;
  } else if (is_full(q)) {
    rc = SL_EAGAIN;
  } else {
    ring_put(q, &elem, 1);
    wake(&q->not_empty, q->waiting_consumers, 1);
  }
  sl__mutex_unlock(&q->lock);
  return rc;
}

int sl_queue_push_many(sl_queue *q, void *const *elems, size_t n,
                       size_t *pushed) {
  size_t done = 0;
  int rc = 0;
  sl__mutex_lock(&q->lock);
  while (done < n) {
    wait_for_space(q);
    if (q->closed) {
      rc = SL_ECLOSED;
      break;
    }
    /* Push what fits now and let consumers at it before waiting for more. */
    size_t k = room_for(q, elems + done, n - done);
    ring_put(q, elems + done, k);
    wake(&q->not_empty, q->waiting_consumers, k);
    done += k;
  }
  sl__mutex_unlock(&q->lock);
  if (pushed) *pushed = done;
  return rc;
}

int sl_queue_pop_many(sl_queue *q, void **elems, size_t max, size_t *n,
                      uint64_t *ticket) {
  *n = 0;
  if (max == 0) return SL_EINVAL;
  sl__mutex_lock(&q->lock);
  wait_for_elements(q);
  int rc = SL_ECLOSED;
  if (q->len > 0 && !q->abandoned) {
    size_t k = q->len < max ? q->len : max;
    if (ticket) *ticket = q->popped;
    ring_take(q, elems, k);
    wake(&q->not_full, q->waiting_producers, k);
    *n = k;
    rc = 0;
  }
  sl__mutex_unlock(&q->lock);
  return rc;
}

int sl_queue_pop(sl_queue *q, void **elem) {
  size_t n;
  return sl_queue_pop_many(q, elem, 1, &n, NULL);
}

int sl_queue_try_pop(sl_queue *q, void **elem) {
  sl__mutex_lock(&q->lock);
  int rc = 0;
  if (q->abandoned || (q->len == 0 && q->closed)) {
    rc = SL_ECLOSED;
  } else if (q->len == 0) {
    rc = SL_EAGAIN;
  } else {
    ring_take(q, elem, 1);
    wake(&q->not_full, q->waiting_producers, 1);
  }
  sl__mutex_unlock(&q->lock);
  return rc;
}

/* Marks the queue closed and wakes everyone so they re-check. Caller holds
 * the lock. */
static void close_locked(sl_queue *q) {
  q->closed = true;
  if (q->waiting_producers) sl__cond_broadcast(&q->not_full);
  if (q->waiting_consumers) sl__cond_broadcast(&q->not_empty);
}

void sl_queue_close(sl_queue *q) {
  sl__mutex_lock(&q->lock);
  close_locked(q);
  sl__mutex_unlock(&q->lock);
}

void sl_queue_abandon(sl_queue *q, void (*dispose)(void *)) {
  sl__mutex_lock(&q->lock);
  q->abandoned = true;
  close_locked(q);
  /* Consumers now see SL_ECLOSED, so the remaining elements are ours. Take
   * them one at a time and dispose without the lock (dispose may block or
   * take other locks); a concurrent abandon simply shares the work. */
  while (q->len > 0) {
    void *e = ring_take_one(q);
    sl__mutex_unlock(&q->lock);
    if (dispose) dispose(e);
    sl__mutex_lock(&q->lock);
  }
  sl__mutex_unlock(&q->lock);
}

size_t sl_queue_size(sl_queue *q) {
  sl__mutex_lock(&q->lock);
  size_t n = q->len;
  sl__mutex_unlock(&q->lock);
  return n;
}

void sl_queue_get_stats(sl_queue *q, sl_queue_stats *st) {
  sl__mutex_lock(&q->lock);
  st->pushed = q->pushed;
  st->popped = q->popped;
  st->blocked_ns = q->blocked_ns;
  st->starved_ns = q->starved_ns;
  st->capacity = q->cap;
  st->max_depth = q->max_depth;
  sl__mutex_unlock(&q->lock);
}

void sl__queue_waiters(sl_queue *q, unsigned *producers, unsigned *consumers) {
  sl__mutex_lock(&q->lock);
  *producers = q->waiting_producers;
  *consumers = q->waiting_consumers;
  sl__mutex_unlock(&q->lock);
}
