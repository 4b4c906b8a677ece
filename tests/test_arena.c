/*
 * test_arena.c -- the shared-memory arena: allocation, budget, cancel,
 * segments, zero-copy mapping in another process, stress under threads.
 *
 * Waiting is detected without sleeps: while an allocation waits for budget,
 * the arena serves requests in FIFO order, so a try_alloc that would fit
 * returns SL_EAGAIN exactly when somebody is queued (wait_for_waiter).
 */
#include "sluice.h"
#include "test.h"

#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KiB ((uint64_t)1 << 10)
#define MiB ((uint64_t)1 << 20)
#define GiB ((uint64_t)1 << 30)

static sl_arena *mk(uint64_t budget, uint64_t segment) {
  sl_arena_options o = {budget, segment};
  sl_arena *a = NULL;
  ASSERT_OK(sl_arena_create(&a, &o));
  ASSERT(a != NULL);
  return a;
}

static sl_arena_stats stats(sl_arena *a) {
  sl_arena_stats st;
  sl_arena_get_stats(a, &st);
  return st;
}

static uint64_t round64(uint64_t n) { return n ? (n + 63) / 64 * 64 : 64; }

static uint8_t pat(uint32_t seed, size_t i) {
  return (uint8_t)(seed * 131u + i * 7u + (i >> 8));
}

static void fill(void *p, size_t n, uint32_t seed) {
  uint8_t *d = p;
  for (size_t i = 0; i < n; i++) d[i] = pat(seed, i);
}

static bool check(const void *p, size_t n, uint32_t seed) {
  const uint8_t *d = p;
  for (size_t i = 0; i < n; i++)
    if (d[i] != pat(seed, i)) return false;
  return true;
}

/* Stamps a block: its seed in the first bytes, then a pattern on the first
 * and last bytes and at every 64-byte line in between -- any overlap of two
 * live blocks (at least one 64-byte unit) breaks somebody's stamp. */
static void stamp(sl_block *b, uint32_t seed) {
  uint8_t *d = sl_block_data(b);
  size_t n = sl_block_size(b);
  if (n >= 4) memcpy(d, &seed, 4);
  for (size_t i = 4; i < n; i += (i < 256 || i + 256 >= n) ? 1 : 64)
    d[i] = pat(seed, i);
}

static bool stamped(const sl_block *b, uint32_t seed) {
  const uint8_t *d = sl_block_data(b);
  size_t n = sl_block_size(b);
  uint32_t s = seed;
  if (n >= 4) memcpy(&s, d, 4);
  if (s != seed) return false;
  for (size_t i = 4; i < n; i += (i < 256 || i + 256 >= n) ? 1 : 64)
    if (d[i] != pat(seed, i)) return false;
  return true;
}

/* Returns once some thread is queued for budget in `a`; `probe` bytes must
 * fit in the free budget meanwhile. */
static void wait_for_waiter(sl_arena *a, size_t probe) {
  uint64_t deadline = sl_now_ns() + 20000000000ull; /* a failure, not a wait */
  for (;;) {
    sl_block *b = NULL;
    int rc = sl_arena_try_alloc(a, probe, &b);
    if (rc == SL_EAGAIN) return;
    ASSERT_OK(rc);
    sl_block_release(b);
    if (sl_now_ns() > deadline)
      SL__FAIL("no waiter seen in 20 s: try_alloc overtakes queued waiters?");
    sched_yield();
  }
}

/* ---- unit ------------------------------------------------------------ */

TEST(create_defaults) {
  sl_arena *a = NULL;
  ASSERT_OK(sl_arena_create(&a, NULL));
  ASSERT_EQ(sl_arena_budget(a), GiB);
  sl_arena_stats st = stats(a);
  ASSERT_EQ(st.budget, GiB);
  ASSERT_EQ(st.in_use, 0);
  ASSERT_EQ(st.peak, 0);
  ASSERT_EQ(st.segments, 1); /* one segment up front */
  sl_block *b = NULL;
  ASSERT_OK(sl_arena_alloc(a, 10, &b));
  ASSERT_EQ(sl_block_get_ref(b).segment_size, 4 * MiB); /* the first is small */
  sl_block_release(b);
  sl_arena_destroy(a);
  sl_arena_destroy(NULL);
  sl_block_release(NULL);
  ASSERT_EQ(sl_arena_create(NULL, NULL), SL_EINVAL);
  sl_arena_options o = {MiB, (uint64_t)1 << 60};
  a = (sl_arena *)&o;
  ASSERT_EQ(sl_arena_create(&a, &o), SL_EINVAL);
  ASSERT(a == NULL);
}

/* Regular segments double from 4 MiB up to segment_bytes (64 MiB by
 * default), each as large as the block that needs it takes; an empty spare
 * too small for a request is replaced, not kept beside the new one. */
TEST(regular_segments_grow) {
  sl_arena *a = NULL;
  ASSERT_OK(sl_arena_create(&a, NULL));
  sl_block *b[200];
  uint64_t want[] = {4, 8, 16, 32, 64, 64}, seen = 0;
  int n = 0;
  for (; n < 200 && seen < 6; n++) {
    ASSERT_OK(sl_arena_alloc(a, MiB, &b[n]));
    fill(sl_block_data(b[n]), MiB, (unsigned)n);
    sl_block_ref r = sl_block_get_ref(b[n]);
    if (r.segment + 1 > seen) { /* a new segment, numbered in order */
      ASSERT_EQ(r.segment, seen);
      if (r.segment_size != want[seen] * MiB)
        SL__FAIL("segment %u is %llu MiB, want %llu", (unsigned)seen,
                 (unsigned long long)(r.segment_size / MiB), (unsigned long long)want[seen]);
      seen++;
    }
  }
  ASSERT_EQ(seen, 6);
  for (int i = 0; i < n; i++) {
    ASSERT(check(sl_block_data(b[i]), MiB, (unsigned)i));
    sl_block_release(b[i]);
  }
  ASSERT_EQ(stats(a).segments, 1);
  sl_arena_destroy(a);

  /* A block as large as the doublings take, at once: 12 MiB needs 32. */
  ASSERT_OK(sl_arena_create(&a, NULL));
  ASSERT_OK(sl_arena_alloc(a, 3 * MiB, &b[0]));
  sl_block_release(b[0]);
  ASSERT_EQ(stats(a).segments, 1); /* the 4 MiB one, empty: the spare */
  ASSERT_OK(sl_arena_alloc(a, 12 * MiB, &b[0]));
  ASSERT_EQ(sl_block_get_ref(b[0]).segment_size, 32 * MiB);
  ASSERT_EQ(stats(a).segments, 1); /* the spare was too small: replaced */
  ASSERT_OK(sl_arena_alloc(a, 12 * MiB, &b[1]));
  ASSERT_EQ(stats(a).segments, 1);
  ASSERT_OK(sl_arena_alloc(a, 12 * MiB, &b[2]));
  ASSERT_EQ(sl_block_get_ref(b[2]).segment_size, 64 * MiB);
  ASSERT_EQ(stats(a).segments, 2);
  for (int i = 0; i < 3; i++) sl_block_release(b[i]);
  ASSERT_EQ(stats(a).segments, 1);
  ASSERT_EQ(stats(a).in_use, 0);
  sl_arena_destroy(a);
}

TEST(basic_alloc_write_release) {
  sl_arena *a = mk(16 * MiB, MiB);
  sl_block *b = NULL;
  ASSERT_OK(sl_arena_alloc(a, 1000, &b));
  ASSERT(b != NULL && sl_block_data(b) != NULL);
  ASSERT_EQ(sl_block_size(b), 1000);
  fill(sl_block_data(b), 1000, 7);
  ASSERT(check(sl_block_data(b), 1000, 7));
  sl_block_ref r = sl_block_get_ref(b);
  ASSERT_EQ(r.size, 1000);
  ASSERT_EQ(r.segment_size, MiB);
  ASSERT_LE(r.offset + r.size, r.segment_size);
  int fd = sl_arena_segment_fd(a, r.segment);
  ASSERT(fd >= 0);
  struct stat sb;
  ASSERT_EQ(fstat(fd, &sb), 0);
  ASSERT_EQ(sb.st_size, (off_t)MiB);
  ASSERT_EQ(sb.st_mode & 0777, 0600);
  ASSERT_EQ(stats(a).in_use, 1024);
  sl_block_release(b);
  ASSERT_EQ(stats(a).in_use, 0);
  ASSERT_EQ(stats(a).peak, 1024);
  sl_arena_destroy(a);
}

TEST(alignment_and_no_overlap) {
  static const size_t sizes[] = {1, 3, 63, 64, 65, 100, 127, 128, 1000,
                                 4095, 4096, 4097, 10000, 65536, 200000};
  enum { N = sizeof sizes / sizeof sizes[0], ROUNDS = 3 };
  sl_arena *a = mk(64 * MiB, MiB);
  sl_block *b[N * ROUNDS];
  for (size_t i = 0; i < N * ROUNDS; i++) {
    ASSERT_OK(sl_arena_alloc(a, sizes[i % N], &b[i]));
    ASSERT_EQ((uintptr_t)sl_block_data(b[i]) % 64, 0);
    ASSERT_EQ(sl_block_get_ref(b[i]).offset % 64, 0);
    fill(sl_block_data(b[i]), sizes[i % N], (uint32_t)i);
  }
  for (size_t i = 0; i < N * ROUNDS; i++)
    ASSERT(check(sl_block_data(b[i]), sizes[i % N], (uint32_t)i));
  for (size_t i = 0; i < N * ROUNDS; i += 2) sl_block_release(b[i]);
  for (size_t i = 1; i < N * ROUNDS; i += 2)
    ASSERT(check(sl_block_data(b[i]), sizes[i % N], (uint32_t)i));
  for (size_t i = 1; i < N * ROUNDS; i += 2) sl_block_release(b[i]);
  ASSERT_EQ(stats(a).in_use, 0);
  sl_arena_destroy(a);
}

TEST(accounting_and_refcount) {
  sl_arena *a = mk(MiB, 256 * KiB);
  sl_block *x, *y, *z;
  ASSERT_OK(sl_arena_alloc(a, 100, &x));
  ASSERT_OK(sl_arena_alloc(a, 5000, &y));
  ASSERT_OK(sl_arena_alloc(a, 0, &z)); /* valid block of size 0, costs 64 */
  ASSERT_EQ(sl_block_size(z), 0);
  ASSERT(sl_block_data(z) != NULL);
  uint64_t want = round64(100) + round64(5000) + 64;
  ASSERT_EQ(stats(a).in_use, want);
  ASSERT_EQ(stats(a).peak, want);
  ASSERT(sl_block_retain(y) == y);
  sl_block_retain(y);
  sl_block_release(y);
  sl_block_release(y);
  ASSERT_EQ(stats(a).in_use, want); /* one reference left */
  sl_block_release(y);
  ASSERT_EQ(stats(a).in_use, want - round64(5000));
  sl_block_release(x);
  sl_block_release(z);
  ASSERT_EQ(stats(a).in_use, 0);
  ASSERT_EQ(stats(a).peak, want);
  sl_arena_destroy(a);
}

/* 16 blocks of 64 KiB tile a 1 MiB segment. Freeing the even ones, then
 * the odd ones (each with both neighbours free, so merging must work both
 * ways) while the last stays allocated must leave 960 KiB in one piece:
 * three quarter-segment blocks then fit without a new segment. */
TEST(coalescing) {
  sl_arena *a = mk(64 * MiB, MiB);
  sl_block *b[17], *q[3];
  for (int i = 0; i < 16; i++) ASSERT_OK(sl_arena_alloc(a, 64 * KiB, &b[i]));
  ASSERT_EQ(stats(a).segments, 1);
  for (int i = 0; i < 15; i += 2) sl_block_release(b[i]);
  for (int i = 1; i < 15; i += 2) sl_block_release(b[i]);
  for (int i = 0; i < 3; i++) {
    ASSERT_OK(sl_arena_alloc(a, 256 * KiB, &q[i])); /* a quarter: shared */
    ASSERT_EQ(sl_block_get_ref(q[i]).segment_size, MiB);
    ASSERT_LE(sl_block_get_ref(q[i]).offset + 256 * KiB, 15 * 64 * KiB);
  }
  ASSERT_EQ(stats(a).segments, 1);
  for (int i = 0; i < 3; i++) sl_block_release(q[i]);
  sl_block_release(b[15]);
  /* A second segment, emptied: one empty segment is kept, not two. */
  for (int i = 0; i < 17; i++) ASSERT_OK(sl_arena_alloc(a, 64 * KiB, &b[i]));
  ASSERT_EQ(stats(a).segments, 2);
  for (int i = 0; i < 17; i++) sl_block_release(b[i]);
  ASSERT_EQ(stats(a).segments, 1);
  ASSERT_EQ(stats(a).in_use, 0);
  sl_arena_destroy(a);
}

/* Size of the shm object behind segment `id` (what ftruncate made it). */
static uint64_t seg_file_size(sl_arena *a, uint32_t id) {
  int fd = sl_arena_segment_fd(a, id);
  ASSERT(fd >= 0);
  struct stat sb;
  ASSERT_EQ(fstat(fd, &sb), 0);
  return (uint64_t)sb.st_size;
}

/* A block over a quarter segment gets a segment of its own, sized to its
 * size class (8 per power of two), which outlives it in the cache. */
TEST(large_blocks_own_segment) {
  sl_arena *a = mk(64 * MiB, MiB);
  size_t big = 300 * KiB + 5; /* 300 KiB + 64 rounds up to 320 KiB */
  sl_block *b = NULL;
  ASSERT_EQ(stats(a).segments, 1);
  ASSERT_OK(sl_arena_alloc(a, big, &b));
  ASSERT_EQ(stats(a).segments, 2);
  sl_block_ref r = sl_block_get_ref(b);
  ASSERT_EQ(r.offset, 0);
  ASSERT_EQ(r.size, big);
  ASSERT_EQ(r.segment_size, 320 * KiB);
  ASSERT_EQ(seg_file_size(a, r.segment), 320 * KiB);
  ASSERT_EQ(stats(a).in_use, round64(big)); /* the budget counts the block */
  ASSERT_EQ(stats(a).cached, 0);
  fill(sl_block_data(b), big, 3);
  ASSERT(check(sl_block_data(b), big, 3));
  sl_block_release(b);
  sl_arena_stats st = stats(a);
  ASSERT_EQ(st.in_use, 0);
  ASSERT_EQ(st.cached, 320 * KiB);
  ASSERT_EQ(st.segments, 2); /* cached, still a segment */
  ASSERT(sl_arena_segment_fd(a, r.segment) >= 0);
  /* Exact powers of two and page multiples stay as they are. */
  ASSERT_OK(sl_arena_alloc(a, 2 * MiB, &b));
  ASSERT_EQ(sl_block_get_ref(b).segment_size, 2 * MiB);
  ASSERT_NE(sl_block_get_ref(b).segment, r.segment); /* 320 KiB is too small */
  ASSERT_EQ(stats(a).segments, 3);
  sl_block_release(b);
  sl_arena_destroy(a);
}

/* A dead large block's segment goes to the next large block of its size
 * class: same id, same memory, no new segment, however many cycles. A
 * bigger class misses; a smaller one takes a segment up to twice its size,
 * trimmed when over 25% too big. */
TEST(large_segment_reused) {
  sl_arena *a = mk(64 * MiB, MiB); /* cache cap: 32 MiB */
  sl_block *b = NULL, *c = NULL;
  ASSERT_OK(sl_arena_alloc(a, 3 * MiB, &b));
  sl_block_ref r = sl_block_get_ref(b);
  void *p = sl_block_data(b);
  ASSERT_EQ(r.segment_size, 3 * MiB);
  sl_block_release(b);
  ASSERT_EQ(stats(a).cached, 3 * MiB);
  for (uint32_t i = 0; i < 100; i++) {
    size_t size = 3 * MiB - (i * 4099u) % (256 * KiB); /* class 3 MiB */
    ASSERT_OK(sl_arena_alloc(a, size, &b));
    sl_block_ref q = sl_block_get_ref(b);
    ASSERT_EQ(q.segment, r.segment);
    ASSERT_EQ(q.segment_size, 3 * MiB);
    ASSERT(sl_block_data(b) == p);
    sl_arena_stats st = stats(a);
    ASSERT_EQ(st.segments, 2);
    ASSERT_EQ(st.cached, 0);
    ASSERT_EQ(st.in_use, round64(size));
    stamp(b, i);
    ASSERT(stamped(b, i));
    sl_block_release(b);
  }
  ASSERT_EQ(stats(a).cached, 3 * MiB);
  ASSERT_OK(sl_arena_alloc(a, 3 * MiB + 1, &c)); /* class 3.25 MiB: new */
  sl_block_ref rc = sl_block_get_ref(c);
  ASSERT_NE(rc.segment, r.segment);
  ASSERT_EQ(rc.segment_size, 3 * MiB + 256 * KiB);
  ASSERT_EQ(stats(a).segments, 3);
  sl_block_release(c);
  ASSERT_EQ(stats(a).cached, 6 * MiB + 256 * KiB);
  /* 1.5 MiB: the 3 MiB segment (best fit, 2x) is cut to 1.5 MiB. */
  ASSERT_OK(sl_arena_alloc(a, 3 * MiB / 2, &b));
  sl_block_ref q = sl_block_get_ref(b);
  ASSERT_EQ(q.segment, r.segment);
  ASSERT_EQ(q.segment_size, 3 * MiB / 2);
  ASSERT_EQ(seg_file_size(a, q.segment), 3 * MiB / 2);
  ASSERT_EQ(stats(a).cached, 3 * MiB + 256 * KiB);
  fill(sl_block_data(b), q.size, 5);
  void *base, *data;
  size_t len;
  ASSERT_OK(sl_block_map(sl_arena_segment_fd(a, q.segment), q, &base, &len,
                         &data));
  ASSERT(check(data, q.size, 5)); /* the file and our mapping agree */
  sl_block_unmap(base, len);
  /* 2.6 MiB (class 2.75 MiB) takes the 3.25 MiB one, untrimmed (< 25%). */
  ASSERT_OK(sl_arena_alloc(a, 2600 * KiB, &c));
  ASSERT_EQ(sl_block_get_ref(c).segment, rc.segment);
  ASSERT_EQ(sl_block_get_ref(c).segment_size, 3 * MiB + 256 * KiB);
  fill(sl_block_data(c), 2600 * KiB, 6);
  ASSERT(check(sl_block_data(c), 2600 * KiB, 6));
  ASSERT_EQ(stats(a).cached, 0);
  ASSERT_EQ(stats(a).segments, 3);
  sl_block_release(b);
  sl_block_release(c);
  /* 320 KiB: both cached segments are over twice that. */
  ASSERT_OK(sl_arena_alloc(a, 300 * KiB, &b));
  ASSERT_EQ(stats(a).segments, 4);
  sl_block_release(b);
  ASSERT_EQ(stats(a).cached, 3 * MiB / 2 + 3 * MiB + 256 * KiB + 320 * KiB);
  sl_arena_destroy(a);
}

/* Cached bytes stay within budget/2 and at most 8 segments are cached; the
 * oldest go first; a segment over the cap is not cached at all. */
TEST(segment_cache_bounded) {
  sl_arena *a = mk(8 * MiB, MiB); /* cache cap: 4 MiB */
  sl_block *b[12];
  uint32_t id[12];
  for (int i = 0; i < 7; i++) {
    ASSERT_OK(sl_arena_alloc(a, MiB, &b[i]));
    id[i] = sl_block_get_ref(b[i]).segment;
  }
  ASSERT_EQ(stats(a).segments, 8);
  for (int i = 0; i < 7; i++) {
    sl_block_release(b[i]);
    uint64_t kept = i + 1 < 4 ? (uint64_t)i + 1 : 4;
    ASSERT_EQ(stats(a).cached, kept * MiB);
    ASSERT_EQ(stats(a).segments, 1 + (6 - (uint64_t)i) + kept);
  }
  for (int i = 0; i < 7; i++) /* the three released first were dropped */
    ASSERT_EQ(sl_arena_segment_fd(a, id[i]) >= 0, i >= 3);
  bool seen[12] = {false};
  for (int i = 0; i < 4; i++) { /* the four kept are reused */
    ASSERT_OK(sl_arena_alloc(a, MiB, &b[i]));
    uint32_t s = sl_block_get_ref(b[i]).segment;
    ASSERT(s == id[3] || s == id[4] || s == id[5] || s == id[6]);
    ASSERT(!seen[s]);
    seen[s] = true;
  }
  ASSERT_EQ(stats(a).segments, 5);
  ASSERT_EQ(stats(a).cached, 0);
  for (int i = 0; i < 4; i++) sl_block_release(b[i]);
  ASSERT_OK(sl_arena_alloc(a, 5 * MiB, &b[0])); /* over the 4 MiB cap */
  uint32_t big = sl_block_get_ref(b[0]).segment;
  ASSERT_EQ(stats(a).segments, 6);
  sl_block_release(b[0]);
  ASSERT_EQ(stats(a).segments, 5);
  ASSERT_EQ(stats(a).cached, 4 * MiB);
  ASSERT_EQ(sl_arena_segment_fd(a, big), -1);
  sl_arena_destroy(a);

  a = mk(64 * MiB, MiB); /* the count cap: 12 x 320 KiB fit in 32 MiB */
  for (int i = 0; i < 12; i++) ASSERT_OK(sl_arena_alloc(a, 300 * KiB, &b[i]));
  ASSERT_EQ(stats(a).segments, 13);
  for (int i = 0; i < 12; i++) sl_block_release(b[i]);
  ASSERT_EQ(stats(a).cached, 8 * 320 * KiB);
  ASSERT_EQ(stats(a).segments, 9);
  sl_arena_destroy(a);
}

/* Lines of /proc/self/maps naming this process's segments. */
static int count_shm_maps(void) {
  char prefix[64], line[512];
  snprintf(prefix, sizeof prefix, "/dev/shm/sluice-%ld-", (long)getpid());
  FILE *f = fopen("/proc/self/maps", "r");
  ASSERT(f != NULL);
  int n = 0;
  while (fgets(line, sizeof line, f))
    if (strstr(line, prefix)) n++;
  fclose(f);
  return n;
}

static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  ASSERT(d != NULL);
  int n = 0;
  while (readdir(d)) n++;
  closedir(d);
  return n;
}

/* Cached segments stay mapped and open until destroy, which closes and
 * unmaps them all (the heap side is checked by ASan/valgrind). */
TEST(destroy_frees_cache) {
  int fds = count_fds();
  ASSERT_EQ(count_shm_maps(), 0);
  sl_arena *a = mk(64 * MiB, MiB);
  sl_block *b[3];
  for (int i = 0; i < 3; i++)
    ASSERT_OK(sl_arena_alloc(a, (size_t)(i + 1) * MiB, &b[i]));
  for (int i = 0; i < 3; i++) sl_block_release(b[i]);
  ASSERT_EQ(stats(a).cached, 6 * MiB);
  ASSERT_EQ(count_shm_maps(), 4);
  ASSERT_EQ(count_fds(), fds + 4);
  sl_arena_destroy(a);
  ASSERT_EQ(count_shm_maps(), 0);
  ASSERT_EQ(count_fds(), fds);
}

TEST(empty_segments_released) {
  sl_arena *a = mk(64 * MiB, MiB);
  sl_block *b[20];
  for (int i = 0; i < 20; i++) ASSERT_OK(sl_arena_alloc(a, 200 * KiB, &b[i]));
  ASSERT(stats(a).segments >= 4);
  for (int i = 0; i < 20; i++) sl_block_release(b[i]);
  ASSERT_EQ(stats(a).segments, 1);
  ASSERT_EQ(stats(a).in_use, 0);
  sl_arena_destroy(a);
}

typedef struct waiter {
  sl_arena *a;
  size_t size;
  int rc;
  sl_block *b;
  uint64_t limit; /* 0: sl_arena_alloc, else sl_arena_alloc_ex */
} waiter;

static void *waiter_main(void *arg) {
  waiter *w = arg;
  w->rc = w->limit ? sl_arena_alloc_ex(w->a, w->size, w->limit, &w->b)
                   : sl_arena_alloc(w->a, w->size, &w->b);
  return NULL;
}

TEST(budget_wait_woken_by_release) {
  sl_arena *a = mk(4096, 64 * KiB);
  sl_block *held[3];
  for (int i = 0; i < 3; i++) ASSERT_OK(sl_arena_alloc(a, 1024, &held[i]));
  waiter w = {a, 2048, 1, NULL, 0};
  pthread_t t;
  ASSERT_EQ(pthread_create(&t, NULL, waiter_main, &w), 0);
  wait_for_waiter(a, 64); /* 64 bytes fit, but the queued 2048 goes first */
  ASSERT_EQ(stats(a).in_use, 3072);
  sl_block_release(held[0]);
  ASSERT_EQ(pthread_join(t, NULL), 0);
  ASSERT_OK(w.rc);
  ASSERT_EQ(sl_block_size(w.b), 2048);
  sl_arena_stats st = stats(a);
  ASSERT_EQ(st.in_use, 4096);
  ASSERT_EQ(st.peak, 4096);
  ASSERT(st.wait_ns > 0);
  sl_block_release(w.b);
  sl_block_release(held[1]);
  sl_block_release(held[2]);
  ASSERT_EQ(stats(a).in_use, 0);
  sl_arena_destroy(a);
}

TEST(try_alloc_eagain_when_full) {
  sl_arena *a = mk(4096, 64 * KiB);
  sl_block *b[4], *x = (sl_block *)&b;
  for (int i = 0; i < 4; i++) ASSERT_OK(sl_arena_try_alloc(a, 1000, &b[i]));
  ASSERT_EQ(sl_arena_try_alloc(a, 1, &x), SL_EAGAIN);
  ASSERT(x == NULL);
  ASSERT_EQ(stats(a).in_use, 4096);
  sl_block_release(b[2]);
  ASSERT_OK(sl_arena_try_alloc(a, 1024, &x));
  ASSERT_EQ(sl_arena_try_alloc(a, 0, &b[2]), SL_EAGAIN);
  sl_block_release(x);
  for (int i = 0; i < 4; i++)
    if (i != 2) sl_block_release(b[i]);
  sl_arena_destroy(a);
}

TEST(oversize_is_elimit) {
  sl_arena *a = mk(4096, 64 * KiB);
  sl_block *b = NULL, *hold = NULL;
  ASSERT_OK(sl_arena_alloc(a, 100, &hold)); /* an oversize request must not wait */
  ASSERT_EQ(sl_arena_alloc(a, 4097, &b), SL_ELIMIT);
  ASSERT_EQ(sl_arena_try_alloc(a, 4097, &b), SL_ELIMIT);
  ASSERT_EQ(sl_arena_alloc(a, SIZE_MAX, &b), SL_ELIMIT);
  ASSERT_EQ(sl_arena_alloc(a, SIZE_MAX - 10, &b), SL_ELIMIT);
  ASSERT(b == NULL);
  sl_block_release(hold);
  ASSERT_OK(sl_arena_alloc(a, 4096, &b)); /* exactly the budget is fine */
  sl_block_release(b);
  ASSERT_EQ(stats(a).in_use, 0);
  sl_arena_destroy(a);
}

TEST(cancel_wakes_waiters) {
  enum { N = 3 };
  sl_arena *a = mk(4096, 64 * KiB);
  sl_block *held;
  ASSERT_OK(sl_arena_alloc(a, 3072, &held));
  waiter w[N];
  pthread_t t[N];
  for (int i = 0; i < N; i++) {
    w[i] = (waiter){a, 2048, 1, NULL, 0};
    ASSERT_EQ(pthread_create(&t[i], NULL, waiter_main, &w[i]), 0);
  }
  wait_for_waiter(a, 64);
  sl_arena_cancel(a);
  for (int i = 0; i < N; i++) {
    ASSERT_EQ(pthread_join(t[i], NULL), 0);
    ASSERT_EQ(w[i].rc, SL_ECANCELED);
    ASSERT(w[i].b == NULL);
  }
  /* After cancel: what must wait fails at once, what fits still succeeds. */
  sl_block *b = NULL;
  ASSERT_EQ(sl_arena_alloc(a, 2048, &b), SL_ECANCELED);
  ASSERT_EQ(sl_arena_try_alloc(a, 2048, &b), SL_ECANCELED);
  ASSERT_OK(sl_arena_alloc(a, 512, &b));
  sl_block_release(b);
  sl_arena_cancel(a); /* idempotent */
  sl_block_release(held);
  ASSERT_EQ(stats(a).in_use, 0);
  sl_arena_destroy(a);
}

/* alloc_ex overdraws past the budget up to its limit, ignoring (and not
 * joining) the FIFO queue of budget waiters, and waits only for its limit. */
TEST(overdraft_alloc_ex) {
  sl_arena *a = mk(4096, 64 * KiB);
  sl_block *held[3], *x = NULL, *y = NULL;
  for (int i = 0; i < 3; i++) ASSERT_OK(sl_arena_alloc(a, 1024, &held[i]));
  waiter nw = {a, 2048, 1, NULL, 0}; /* a budget waiter, queued */
  pthread_t nt, xt;
  ASSERT_EQ(pthread_create(&nt, NULL, waiter_main, &nw), 0);
  wait_for_waiter(a, 64);
  ASSERT_OK(sl_arena_alloc_ex(a, 2048, 8192, &x)); /* past budget, at once */
  ASSERT_EQ(stats(a).in_use, 5120);
  ASSERT_EQ(stats(a).peak, 5120);
  ASSERT_EQ(sl_arena_alloc_ex(a, 8193, 8192, &y), SL_ELIMIT);
  ASSERT_EQ(sl_arena_alloc_ex(a, 8190, 8190, &y), SL_ELIMIT); /* 8192 > 8190 */
  ASSERT_EQ(sl_arena_try_alloc(a, 64, &y), SL_EAGAIN); /* still queued */
  /* 5120 + 4096 > 8192: waits until x goes; the budget waiter (needs
   * in_use <= 2048) stays queued meanwhile. */
  waiter xw = {a, 4096, 1, NULL, 8192};
  ASSERT_EQ(pthread_create(&xt, NULL, waiter_main, &xw), 0);
  sl_block_release(x);
  ASSERT_EQ(pthread_join(xt, NULL), 0);
  ASSERT_OK(xw.rc);
  ASSERT_EQ(stats(a).in_use, 3072 + 4096);
  ASSERT_EQ(sl_arena_try_alloc(a, 64, &y), SL_EAGAIN);
  sl_block_release(xw.b);
  sl_block_release(held[0]);
  ASSERT_EQ(pthread_join(nt, NULL), 0); /* 2048 + 2048 <= 4096 */
  ASSERT_OK(nw.rc);
  /* After cancel an overdraft that must wait fails at once; one that fits
   * still succeeds (so the limit really is what it waits for). */
  sl_arena_cancel(a);
  ASSERT_EQ(sl_arena_alloc_ex(a, 4096 + 64, 8192, &y), SL_ECANCELED);
  ASSERT(y == NULL);
  ASSERT_OK(sl_arena_alloc_ex(a, 4096, 8192, &y));
  ASSERT_EQ(stats(a).in_use, 8192);
  sl_block_release(y);
  sl_block_release(nw.b);
  sl_block_release(held[1]);
  sl_block_release(held[2]);
  ASSERT_EQ(stats(a).in_use, 0);
  sl_arena_destroy(a);
}

TEST(overdraft_waiter_canceled) {
  sl_arena *a = mk(4096, 16 * KiB);
  sl_block *x;
  ASSERT_OK(sl_arena_alloc_ex(a, 8192, 8192, &x)); /* one block > budget */
  ASSERT_EQ(sl_block_get_ref(x).segment_size, 8192); /* its own segment */
  waiter w = {a, 64, 1, NULL, 8192};
  pthread_t t;
  ASSERT_EQ(pthread_create(&t, NULL, waiter_main, &w), 0);
  sl_arena_cancel(a);
  ASSERT_EQ(pthread_join(t, NULL), 0);
  ASSERT_EQ(w.rc, SL_ECANCELED);
  sl_block_release(x);
  sl_arena_destroy(a);
}

static void xwrite(int fd) {
  char c = 'x';
  if (write(fd, &c, 1) != 1) _exit(10);
}

static void xread(int fd) {
  char c;
  if (read(fd, &c, 1) != 1) _exit(11);
}

/* The child maps the block afresh from the segment fd (not through the
 * mapping inherited over fork) and talks to the parent through it. */
static int child_side(sl_arena *a, sl_block_ref r, const void *parent_ptr,
                      int rd, int wr) {
  void *base, *data;
  size_t len;
  int fd = sl_arena_segment_fd(a, r.segment);
  if (fd < 0) return 2;
  if (sl_block_map(fd, r, &base, &len, &data) != 0) return 3;
  if (data == parent_ptr || (uintptr_t)base % 4096 != 0) return 4;
  if (!check(data, r.size, 1)) return 5;
  fill(data, r.size / 2, 2); /* first half: child's pattern */
  xwrite(wr);
  xread(rd); /* parent has written its second half after the fork */
  if (!check((char *)data + r.size / 2, r.size - r.size / 2, 3)) return 6;
  sl_block_unmap(base, len);
  return 0;
}

TEST(fork_zero_copy) {
  sl_arena *a = mk(16 * MiB, MiB);
  sl_block *pad, *b;
  ASSERT_OK(sl_arena_alloc(a, 100, &pad)); /* so b starts mid-page */
  ASSERT_OK(sl_arena_alloc(a, 10000, &b));
  sl_block_ref r = sl_block_get_ref(b);
  ASSERT(r.offset % 4096 != 0);
  char *p = sl_block_data(b);
  fill(p, r.size, 1);
  int to_child[2], to_parent[2];
  ASSERT_EQ(pipe(to_child), 0);
  ASSERT_EQ(pipe(to_parent), 0);
  fflush(NULL);
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    close(to_child[1]);
    close(to_parent[0]);
    _exit(child_side(a, r, p, to_child[0], to_parent[1]));
  }
  close(to_child[0]);
  close(to_parent[1]);
  char c;
  ASSERT_EQ(read(to_parent[0], &c, 1), 1);
  ASSERT(check(p, r.size / 2, 2)); /* the child's writes, through our pointer */
  fill(p + r.size / 2, r.size - r.size / 2, 3);
  ASSERT_EQ(write(to_child[1], "x", 1), 1);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  close(to_child[1]);
  close(to_parent[0]);
  sl_block_release(b);
  sl_block_release(pad);
  sl_arena_destroy(a);
}

TEST(map_in_same_process) {
  sl_arena *a = mk(16 * MiB, MiB);
  sl_block *b;
  ASSERT_OK(sl_arena_alloc(a, 0, &b)); /* size 0 still maps */
  sl_block_release(b);
  ASSERT_OK(sl_arena_alloc(a, 3 * 4096 + 17, &b));
  sl_block_ref r = sl_block_get_ref(b);
  int fd = sl_arena_segment_fd(a, r.segment);
  void *base, *data;
  size_t len;
  ASSERT_OK(sl_block_map(fd, r, &base, &len, &data));
  ASSERT(data != sl_block_data(b));
  fill(data, r.size, 9);
  ASSERT(check(sl_block_data(b), r.size, 9));
  sl_block_unmap(base, len);
  sl_block_ref bad = r;
  bad.offset = r.segment_size - 64;
  ASSERT_EQ(sl_block_map(fd, bad, &base, &len, &data), SL_EINVAL);
  ASSERT_EQ(sl_block_map(-1, r, &base, &len, &data), SL_EINVAL);
  ASSERT_EQ(sl_arena_segment_fd(a, 999), -1);
  ASSERT_EQ(sl_arena_segment_fd(a, UINT32_MAX), -1);
  sl_block_release(b);
  sl_arena_destroy(a);
}

TEST(shm_names_unlinked) {
  sl_arena *a = mk(64 * MiB, MiB);
  sl_block *b[8];
  for (int i = 0; i < 8; i++) ASSERT_OK(sl_arena_alloc(a, 600 * KiB, &b[i]));
  ASSERT(stats(a).segments >= 8);
  char prefix[64];
  snprintf(prefix, sizeof prefix, "sluice-%ld-", (long)getpid());
  DIR *d = opendir("/dev/shm");
  ASSERT(d != NULL);
  for (struct dirent *e; (e = readdir(d));)
    if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
      SL__FAIL("leaked shm name /dev/shm/%s", e->d_name);
  closedir(d);
  for (int i = 0; i < 8; i++) sl_block_release(b[i]);
  sl_arena_destroy(a);
}

/* A segment bigger than /dev/shm must fail cleanly (posix_fallocate says
 * ENOSPC up front on tmpfs), not SIGBUS later. */
TEST(enospc_is_clean) {
  struct statvfs v;
  ASSERT_EQ(statvfs("/dev/shm", &v), 0);
  uint64_t fs = (uint64_t)v.f_blocks * v.f_frsize;
  if (fs == 0) { /* unlimited tmpfs: the kernel would really try */
    fprintf(stderr, "skipped: /dev/shm has no size limit\n");
    return;
  }
  uint64_t req = 512 * GiB;
  while (req <= fs) req *= 2;
  sl_arena *a = mk(2 * req, 0);
  sl_block *b = NULL;
  int rc = sl_arena_alloc(a, (size_t)req, &b);
  ASSERT(rc == SL_ENOSPC || rc == SL_ENOMEM || rc == -EFBIG);
  ASSERT(b == NULL);
  sl_arena_stats st = stats(a);
  ASSERT_EQ(st.in_use, 0);
  ASSERT_EQ(st.segments, 1);
  ASSERT_OK(sl_arena_alloc(a, 100, &b)); /* still usable */
  sl_block_release(b);
  sl_arena_destroy(a);
  /* The same for a regular segment, when one as large as the block takes
   * is made (the first one, 4 MiB, fits). */
  a = mk(2 * req, 4 * req);
  rc = sl_arena_alloc(a, (size_t)req, &b);
  ASSERT(rc == SL_ENOSPC || rc == SL_ENOMEM || rc == -EFBIG);
  ASSERT(b == NULL);
  st = stats(a);
  ASSERT_EQ(st.in_use, 0);
  ASSERT_EQ(st.segments, 1);
  ASSERT_OK(sl_arena_alloc(a, 100, &b));
  sl_block_release(b);
  sl_arena_destroy(a);
}

/* ---- stress ---------------------------------------------------------- */

static uint32_t seed_of(const sl_block *b) {
  uint32_t s;
  memcpy(&s, sl_block_data(b), 4);
  return s;
}

static void spin(unsigned *rs) {
  unsigned n = (unsigned)rand_r(rs) % 512;
  for (volatile unsigned i = 0; i < n; i++) {
  }
}

typedef struct churn {
  sl_arena *a;
  size_t max_size;    /* requests are 0..max_size bytes */
  uint64_t limit;     /* nonzero: blocking allocs overdraw up to it */
  uint64_t most;      /* in_use must never exceed it */
  unsigned iters, id; /* iters 0: until canceled */
  _Atomic(sl_block *) *slot; /* blocks handed between threads; NULL = none */
  atomic_ulong *ops;
  int rc; /* last alloc result */
} churn;

static size_t pick_size(churn *c, unsigned *rs) {
  unsigned r = (unsigned)rand_r(rs);
  if (r % 8 == 0) return (size_t)rand_r(rs) % (c->max_size + 1);
  return (size_t)rand_r(rs) % (c->max_size / 16 + 1); /* mostly small */
}

/* Swaps a small block into the shared slot and releases whatever was there
 * after checking it: references move between threads. */
static void trade(churn *c, sl_block *b) {
  if (!c->slot || sl_block_size(b) < 4 || sl_block_size(b) > c->max_size / 16)
    return;
  sl_block *old = atomic_exchange(c->slot, sl_block_retain(b));
  if (!old) return;
  if (!stamped(old, seed_of(old))) SL__FAIL("traded block corrupted");
  sl_block_release(old);
}

/* One iteration: a blocking alloc while holding nothing (so budget waits
 * can never deadlock), then up to two try_allocs, verify, release. */
static int churn_once(churn *c, unsigned *rs, uint32_t *seed) {
  sl_block *b[3] = {NULL, NULL, NULL};
  uint32_t s[3];
  size_t size = pick_size(c, rs);
  int rc = c->limit ? sl_arena_alloc_ex(c->a, size, c->limit, &b[0])
                    : sl_arena_alloc(c->a, size, &b[0]);
  if (rc < 0) return rc;
  int n = 1;
  for (int k = 1; k < 3 && rand_r(rs) % 2; k++)
    if (sl_arena_try_alloc(c->a, pick_size(c, rs), &b[n]) == 0) n++;
  for (int k = 0; k < n; k++) stamp(b[k], s[k] = (*seed)++);
  spin(rs);
  sl_arena_stats st;
  sl_arena_get_stats(c->a, &st);
  if (st.in_use > c->most)
    SL__FAIL("in_use %" PRIu64 " > %" PRIu64, st.in_use, c->most);
  trade(c, b[0]);
  for (int k = n - 1; k >= 0; k--) {
    if (!stamped(b[k], s[k])) SL__FAIL("block corrupted (thread %u)", c->id);
    sl_block_release(b[k]);
  }
  atomic_fetch_add(c->ops, 1);
  return 0;
}

static void *churn_main(void *arg) {
  churn *c = arg;
  unsigned rs = c->id * 7919u + 1;
  uint32_t seed = c->id << 24;
  c->rc = 0;
  for (unsigned i = 0; c->iters == 0 || i < c->iters; i++)
    if ((c->rc = churn_once(c, &rs, &seed)) < 0) break;
  return NULL;
}

/* Sweep: budget small (threads queue constantly) or large, 1..4 threads,
 * sizes crossing the dedicated-segment threshold (the third mostly above
 * it, so cached segments are reused, trimmed and dropped all the time),
 * with and without threads that overdraw (odd-numbered ones, up to twice
 * the budget). */
static void churn_sweep(unsigned iters, bool overdraft) {
  static const struct {
    uint64_t budget, segment;
    size_t max;
  } cfg[] = {{32 * KiB, 64 * KiB, 24 * KiB},
             {8 * MiB, MiB, 600 * KiB},
             {4 * MiB, 128 * KiB, MiB}};
  for (size_t k = 0; k < 3; k++) {
    for (unsigned nt = 1; nt <= 4; nt++) {
      sl_arena *a = mk(cfg[k].budget, cfg[k].segment);
      _Atomic(sl_block *) slot = NULL;
      atomic_ulong ops = 0;
      churn c[4];
      pthread_t t[4];
      for (unsigned i = 0; i < nt; i++) {
        uint64_t limit = overdraft && i % 2 ? 2 * cfg[k].budget : 0;
        uint64_t most = overdraft && nt > 1 ? 2 * cfg[k].budget : cfg[k].budget;
        c[i] = (churn){a, cfg[k].max, limit, most, iters / nt, i, &slot, &ops, 0};
        ASSERT_EQ(pthread_create(&t[i], NULL, churn_main, &c[i]), 0);
      }
      for (unsigned i = 0; i < nt; i++) {
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
        ASSERT_OK(c[i].rc);
      }
      ASSERT_EQ(atomic_load(&ops), (unsigned long)(iters / nt * nt));
      sl_block_release(atomic_load(&slot));
      sl_arena_stats st = stats(a);
      ASSERT_EQ(st.in_use, 0);
      ASSERT_LE(st.peak, (overdraft && nt > 1 ? 2 : 1) * cfg[k].budget);
      /* Only the spare stays, and the cached large-block segments. */
      ASSERT_LE(st.cached, cfg[k].budget / 2);
      ASSERT_LE(st.segments, 1 + 8);
      ASSERT_EQ(st.segments == 1, st.cached == 0);
      sl_arena_destroy(a);
    }
  }
}

TEST(stress_churn) { churn_sweep(2000, false); }

TEST(stress_churn_overdraft) { churn_sweep(2000, true); }

/* Threads churn until the main thread takes nearly the whole budget (in
 * FIFO turn), so every thread ends up waiting; cancel must wake them all
 * with SL_ECANCELED. */
TEST(stress_cancel_while_waiting) {
  for (unsigned round = 0; round < 24; round++) {
    unsigned nt = 1 + round % 4;
    uint64_t budget = 64 * KiB;
    sl_arena *a = mk(budget, 256 * KiB);
    atomic_ulong ops = 0;
    churn c[4];
    pthread_t t[4];
    for (unsigned i = 0; i < nt; i++) {
      c[i] = (churn){a, 16 * KiB, 0, budget, 0, i + 10 * round, NULL, &ops, 0};
      ASSERT_EQ(pthread_create(&t[i], NULL, churn_main, &c[i]), 0);
    }
    unsigned long target = 50 + 40 * round;
    while (atomic_load(&ops) < target) sched_yield();
    sl_block *hog = NULL;
    ASSERT_OK(sl_arena_alloc(a, budget - 64, &hog));
    wait_for_waiter(a, 64);
    uint64_t t0 = sl_now_ns();
    sl_arena_cancel(a);
    for (unsigned i = 0; i < nt; i++) {
      ASSERT_EQ(pthread_join(t[i], NULL), 0);
      ASSERT_EQ(c[i].rc, SL_ECANCELED);
    }
    ASSERT_LE(sl_now_ns() - t0, 5000000000ull);
    sl_block_release(hog);
    ASSERT_EQ(stats(a).in_use, 0);
    sl_arena_destroy(a);
  }
}

/* ---- foreign blocks (sl_block_wrap) ----------------------------------- */

typedef struct drop_log {
  atomic_int calls;
  void *data;
  size_t size;
} drop_log;

static void drop_cb(void *ctx, void *data, size_t size) {
  drop_log *l = ctx;
  l->data = data;
  l->size = size;
  atomic_fetch_add(&l->calls, 1);
}

typedef struct holder {
  sl_block *b;
  unsigned seed;
} holder;

/* Each thread takes and drops references in a random rhythm, then drops
 * the one it was given. */
static void *hold_main(void *arg) {
  holder *h = arg;
  for (int i = 0; i < 2000; i++) {
    sl_block *r = sl_block_retain(h->b);
    ASSERT(sl_block_data(r) == sl_block_data(h->b));
    if (rand_r(&h->seed) % 64 == 0) sched_yield();
    sl_block_release(r);
  }
  sl_block_release(h->b);
  return NULL;
}

TEST(stress_foreign_block_dropped_once) {
  for (unsigned round = 0; round < 50; round++) {
    static char mem[4096];
    drop_log log = {0, NULL, 0};
    sl_block *b = sl_block_wrap(mem + round, 100 + round, drop_cb, &log);
    ASSERT(b);
    ASSERT(sl_block_data(b) == mem + round);
    ASSERT_EQ(sl_block_size(b), 100 + round);
    ASSERT_EQ(sl_block_get_ref(b).segment, UINT32_MAX);
    unsigned nt = 1 + round % 4;
    holder h[4];
    pthread_t t[4];
    for (unsigned i = 0; i < nt; i++) h[i] = (holder){sl_block_retain(b), round * 7 + i};
    sl_block_release(b); /* the threads now hold the only references */
    for (unsigned i = 0; i < nt; i++) ASSERT_EQ(pthread_create(&t[i], NULL, hold_main, &h[i]), 0);
    for (unsigned i = 0; i < nt; i++) ASSERT_EQ(pthread_join(t[i], NULL), 0);
    ASSERT_EQ(atomic_load(&log.calls), 1);
    ASSERT(log.data == mem + round);
    ASSERT_EQ(log.size, 100 + round);
  }
  /* No drop callback: releasing only frees the descriptor. */
  static char one;
  sl_block *b = sl_block_wrap(&one, 1, NULL, NULL);
  ASSERT(b);
  sl_block_release(b);
}

static const sl_test_case cases[] = {
    SL_CASE(create_defaults, "unit"),
    SL_CASE(regular_segments_grow, "unit"),
    SL_CASE(basic_alloc_write_release, "unit"),
    SL_CASE(alignment_and_no_overlap, "unit"),
    SL_CASE(accounting_and_refcount, "unit"),
    SL_CASE(coalescing, "unit"),
    SL_CASE(large_blocks_own_segment, "unit"),
    SL_CASE(large_segment_reused, "unit"),
    SL_CASE(segment_cache_bounded, "unit"),
    SL_CASE(destroy_frees_cache, "unit"),
    SL_CASE(empty_segments_released, "unit"),
    SL_CASE(budget_wait_woken_by_release, "unit"),
    SL_CASE(try_alloc_eagain_when_full, "unit"),
    SL_CASE(oversize_is_elimit, "unit"),
    SL_CASE(cancel_wakes_waiters, "unit"),
    SL_CASE(overdraft_alloc_ex, "unit"),
    SL_CASE(overdraft_waiter_canceled, "unit"),
    SL_CASE(fork_zero_copy, "unit"),
    SL_CASE(map_in_same_process, "unit"),
    SL_CASE(shm_names_unlinked, "unit"),
    SL_CASE(enospc_is_clean, "unit"),
    SL_CASE(stress_churn, "stress"),
    SL_CASE(stress_churn_overdraft, "stress"),
    SL_CASE(stress_cancel_while_waiting, "stress"),
    SL_CASE(stress_foreign_block_dropped_once, "stress"),
};
SL_TEST_MAIN(cases)

