/*
 * arena.c -- payload memory: POSIX shared-memory segments, a byte budget and
 * reference-counted blocks.
 *
 * Segments. Every byte of payload lives in a shm segment created with
 * shm_open(O_CREAT|O_EXCL, 0600) under an unpredictable name, unlinked at
 * once (so a crash leaks nothing), sized with ftruncate and reserved with
 * posix_fallocate (so a full /dev/shm is SL_ENOSPC now rather than SIGBUS on
 * first touch), then mapped MAP_SHARED. The fd stays open: a process that has
 * it (fork, SCM_RIGHTS) maps a block with sl_block_map() and sees the very
 * same memory. The fd is close-on-exec (shm_open's default), so an exec'd
 * worker needs SCM_RIGHTS or the flag cleared. Segments are numbered by their
 * slot in `segs`; a freed slot is reused, so ids stay small. Anything meant
 * for another process names a block by (segment id, offset), never pointers.
 *
 * Regular segments hold many blocks; a block bigger than a quarter of
 * segment_bytes (default 64 MiB) gets a dedicated segment. Regular segments
 * grow geometrically: the first is 4 MiB (or segment_bytes if smaller), each
 * one created after it twice the last (or as many doublings as the block
 * that needs it takes), up to segment_bytes. Reserving a segment zeroes all
 * of it (~0.5 ms a MiB here), and it is made before the pipeline starts:
 * a 64 MiB first segment cost every run ~30 ms (two-pass jobs twice) for
 * memory that most runs never touch. One empty regular segment is kept as
 * a spare (so an alloc/free rhythm around a boundary does not create and
 * destroy a segment each time); further segments that become empty are
 * unmapped so RSS falls back, and an empty spare too small for a request
 * is replaced by the bigger segment made for it.
 *
 * Fresh memory is slow, reused memory is fast. Measured on a 2-core VM
 * (tmpfs /dev/shm, 4 KiB pages, 64 MiB): posix_fallocate ~30 ms; then
 * either mapping with MAP_POPULATE ~45 ms, or touching every page of a
 * plain mapping ~54 ms; writing memory already mapped runs at ~13 GB/s.
 * Hence:
 *  - Dedicated segments (one block, all of it used) are mapped with
 *    MAP_POPULATE: page tables in one call. Regular segments are not:
 *    populating costs about what faulting costs, but for every page,
 *    while a run's blocks may never touch most of a segment (and populated
 *    pages count in RSS: a backpressure test's peak went from ~40 to
 *    ~65 MiB when growing segments were populated).
 *  - A dedicated segment whose block dies is kept in a small cache (FIFO,
 *    at most SEG_CACHE_MAX segments and min(budget/2, SEG_CACHE_CAP) bytes;
 *    the oldest go first) and handed to a later large block: best fit among
 *    the cached segments of 1x to 2x the size needed, trimmed (ftruncate,
 *    munmap of the tail) when more than 25% too big. Dedicated sizes are
 *    rounded up to 8 size classes per power of two (at most 12.5% more), so
 *    blocks of similar sizes hit. A cached segment keeps its id and slot
 *    (and counts in `segments`), has no block and no budget charge: the
 *    budget bounds live payload, so the arena may hold up to budget/2 more
 *    in its cache (reported as sl_arena_stats.cached). Creating a segment
 *    that fails for lack of space or memory empties the cache and retries,
 *    so the cache never makes an allocation fail; destroy closes it all.
 *    A worker process still mapping a dead block sees the next block's
 *    data (or SIGBUS past a trim), exactly as with regular segments.
 *  - MADV_HUGEPAGE would cut the page count 512x, but shmem huge pages are
 *    off here (transparent_hugepage/shmem_enabled = never, and the advice
 *    would come after posix_fallocate has placed small pages anyway), so
 *    it is not used: measured, it changed nothing.
 *
 * Allocator. Chunks are multiples of 64 bytes (UNIT) and tile each segment
 * exactly; their descriptors live outside the shared memory (a worker process
 * scribbling past its block cannot corrupt the allocator). A descriptor is
 * both the chunk and, while allocated, the user's sl_block handle. Free chunks
 * sit in two-level segregated-fit bins (TLSF): the first level is the power
 * of two of the size in units, the second splits that range into 16, and two
 * bitmaps find the smallest non-empty bin that is guaranteed to fit in O(1).
 * Allocation splits the chunk it takes; freeing merges with free physical
 * neighbours (doubly linked in address order), so fragmentation stays low.
 * Everything is a few pointer moves, which keeps the critical section short
 * enough for ~1M small allocations a second from several threads under one
 * mutex. Slow work -- creating a segment (fallocate zeroes all of it), unmapping
 * or trimming one -- happens with the mutex released.
 *
 * Budget. in_use is the sum of live chunk sizes (sizes rounded up to 64
 * bytes; a zero-size request is a valid block of size 0 that costs one
 * unit) and never exceeds `budget` (rounded down to whole units), except by
 * overdraft (below). wait_ns sums the time every waiter spent waiting.
 * Budget is reserved before space is looked for. Waiters are served in FIFO
 * order (tickets): a request does not overtake a waiter even when it would
 * fit, so a large request cannot be starved by a stream of small ones. The
 * same rule applies to sl_arena_try_alloc (SL_EAGAIN while anyone waits).
 * After sl_arena_cancel() every waiter returns SL_ECANCELED and any request
 * that would have to wait fails with SL_ECANCELED at once (try_alloc too, as
 * retrying is pointless); a request that fits right away still succeeds, so
 * in-flight work can finish during shutdown.
 *
 * Overdraft. sl_arena_alloc_ex(limit) is for stages downstream of the
 * sources, which must make progress even when the queues hold the whole
 * budget: it never joins the FIFO queue and never yields to it, and waits
 * only while in_use + cost would exceed its own `limit`. So in_use may pass
 * `budget` (up to the largest limit used); budget waiters then simply wait
 * until it falls back. Overdraft waiters are not ordered among themselves.
 *
 * Invariants (under mu): in_use <= max(budget, limits of alloc_ex calls);
 * every chunk of a segment is on its phys list, free ones exactly once in
 * bins; no two free chunks are physical neighbours; seg->live counts
 * allocated chunks; `spare` counts regular segments with live == 0 and is at
 * most MAX_SPARE once the first allocation has happened; seg_cache holds
 * nseg_cache dedicated segments with live == 0 and first == NULL, still in
 * `segs`, whose sizes sum to seg_cache_bytes <= seg_cache_cap.
 *
 * Locking: one mutex, `mu`, guards everything but a block's reference count
 * (atomic) and fields fixed while the block is allocated (data, size, offset,
 * seg, which are read without the lock). A dedicated segment taken out of
 * the cache belongs to the allocating thread until its block is handed out,
 * so it is trimmed and set up without the lock. `mu` is a leaf: nothing else
 * is locked while it is held.
 */
#include "internal.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define UNIT_SHIFT 6u
#define UNIT ((uint64_t)1 << UNIT_SHIFT)
#define SL_BITS 4u
#define SL_COUNT (1u << SL_BITS)
#define FL_COUNT 64u
#define MAX_SPARE 1u
#define NODE_CACHE_MAX 4096u
#define DEFAULT_BUDGET ((uint64_t)1 << 30)
#define DEFAULT_SEGMENT ((uint64_t)64 << 20)
#define FIRST_SEGMENT ((uint64_t)4 << 20) /* regular ones double from here */
#define MAX_SEGMENT ((uint64_t)1 << 56)
#define SEG_CACHE_MAX 8u                   /* cached dedicated segments */
#define SEG_CACHE_CAP ((uint64_t)1 << 30) /* cached bytes (and <= budget/2) */

typedef struct segment {
  uint32_t id;            /* slot in arena->segs */
  int fd;                 /* kept open for sl_arena_segment_fd */
  char *base;             /* our mapping */
  uint64_t size;          /* bytes, a page multiple */
  uint64_t live;          /* allocated chunks */
  bool dedicated;         /* holds at most one block */
  struct sl_block *first; /* chunk at offset 0; chunks tile the segment;
                             NULL for a cached dedicated segment */
  struct segment *next;   /* in a list of segments to close */
} segment;

/* A chunk descriptor; the user's handle while allocated. */
struct sl_block {
  atomic_uint refs; /* meaningful while allocated */
  bool free;
  sl_arena *arena;
  segment *seg;
  char *data;      /* seg->base + offset, set when allocated */
  uint64_t offset; /* of the chunk in its segment */
  uint64_t csize;  /* chunk bytes, a multiple of UNIT; what in_use counts */
  size_t size;     /* bytes the caller asked for */
  struct sl_block *phys_prev, *phys_next; /* address order, same segment */
  struct sl_block *free_prev, *free_next; /* bin list (or node cache) */
  /* A foreign block (sl_block_wrap): arena and seg are NULL, and this runs
   * at the last release. */
  void (*drop)(void *ctx, void *data, size_t size);
  void *drop_ctx;
};

struct sl_arena {
  pthread_mutex_t mu;
  pthread_cond_t budget_cv; /* in_use fell, the queue moved, or cancel */
  pthread_cond_t grow_cv;   /* a segment creation finished */
  uint64_t budget, seg_bytes, page;
  uint64_t next_seg; /* size of the next regular segment (<= seg_bytes) */
  uint64_t in_use, peak, wait_ns;
  uint64_t next_ticket, serving; /* FIFO order of budget waiters */
  size_t nwaiting;    /* in the FIFO queue */
  size_t nwaiting_ex; /* overdraft requests waiting for their limit */
  bool canceled, growing;
  segment **segs; /* slot = segment id; NULL = free slot */
  uint32_t cap, nsegs, spare;
  uint64_t fl_map;           /* bit f: some sl_map[f] bit set */
  uint32_t sl_map[FL_COUNT]; /* bit s: bins[f][s] non-empty */
  sl_block *bins[FL_COUNT][SL_COUNT];
  sl_block *cache; /* unused descriptors, linked by free_next */
  size_t ncached;
  segment *seg_cache[SEG_CACHE_MAX]; /* free dedicated segments, oldest first */
  uint32_t nseg_cache;
  uint64_t seg_cache_bytes, seg_cache_cap;
};

/* ---- small helpers --------------------------------------------------- */

static unsigned floor_log2(uint64_t x) {
  return 63u - (unsigned)__builtin_clzll(x);
}

static uint64_t round_up(uint64_t x, uint64_t to) {
  return (x + to - 1) / to * to;
}

/* 64 random bits for segment names: getrandom, else /dev/urandom, else a
 * mix of clock and counter (names are created O_EXCL, so a guessable name
 * can only make creation retry, never hand us someone else's memory). */
static uint64_t random_u64(void) {
  uint64_t r = 0;
  if (getrandom(&r, sizeof r, GRND_NONBLOCK) == (ssize_t)sizeof r) return r;
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t n = read(fd, &r, sizeof r);
    close(fd);
    if (n == (ssize_t)sizeof r) return r;
  }
  static atomic_uint_fast64_t counter;
  r = sl_now_ns() ^ ((uint64_t)getpid() << 32);
  r ^= atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed) *
       0x9e3779b97f4a7c15ull;
  return r;
}

/* ---- segments -------------------------------------------------------- */

/* A new, already unlinked shm object. @return its fd (the caller owns it)
 * or -errno. */
static int shm_create(void) {
  for (int tries = 0; tries < 100; tries++) {
    char name[64];
    snprintf(name, sizeof name, "/sluice-%ld-%016" PRIx64, (long)getpid(),
             random_u64());
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd >= 0) {
      /* Unlink at once: the fd and mappings keep the memory alive, and the
       * name exists for the shortest possible time. */
      shm_unlink(name);
      return fd;
    }
    if (errno != EEXIST) return -errno;
  }
  return -EEXIST;
}

/* Creates, reserves and maps a segment of `size` bytes (page multiple);
 * `populate` maps every page at once (see the design comment). No lock
 * needed. @return 0 with *out owned by the caller, or -errno. */
static int segment_open(uint64_t size, bool populate, segment **out) {
  if (size > (uint64_t)INT64_MAX || size > (uint64_t)SIZE_MAX) return -EFBIG;
  segment *s = calloc(1, sizeof *s);
  if (!s) return SL_ENOMEM;
  int rc, fd = shm_create();
  if (fd < 0) {
    rc = fd;
    goto fail;
  }
  if (ftruncate(fd, (off_t)size) != 0) {
    rc = -errno;
    goto fail;
  }
  do rc = posix_fallocate(fd, 0, (off_t)size); /* returns the error */
  while (rc == EINTR);
  if (rc != 0) {
    rc = -rc;
    goto fail;
  }
  int flags = MAP_SHARED | (populate ? MAP_POPULATE : 0);
  void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, flags, fd, 0);
  if (p == MAP_FAILED) {
    rc = -errno;
    goto fail;
  }
  s->fd = fd;
  s->base = p;
  s->size = size;
  *out = s;
  return 0;
fail:
  if (fd >= 0) close(fd);
  free(s);
  return rc;
}

/* Unmaps, closes and frees `s` (already out of the table). */
static void segment_close(segment *s) {
  munmap(s->base, (size_t)s->size);
  close(s->fd);
  free(s);
}

/* segment_close for each segment of a list linked by `next`. Unlocked. */
static void segment_close_all(segment *list) {
  while (list) {
    segment *next = list->next;
    segment_close(list);
    list = next;
  }
}

/* Shrinks `s` (a cached dedicated segment the caller took out of the cache)
 * to `size` bytes, giving the tail's memory back. Unlocked. If truncating
 * fails the segment just stays bigger, which is still correct. */
static void segment_trim(segment *s, uint64_t size) {
  if (ftruncate(s->fd, (off_t)size) != 0) return;
  /* Our mapping of the tail must go too: touching it would now SIGBUS. */
  munmap(s->base + size, (size_t)(s->size - size));
  s->size = size;
}

/* Puts `s` in the lowest free slot, which becomes its id. Locked.
 * @return 0 or SL_ENOMEM. */
static int segment_attach(sl_arena *a, segment *s) {
  uint32_t i = 0;
  while (i < a->cap && a->segs[i]) i++;
  if (i == a->cap) {
    uint32_t cap = a->cap ? a->cap * 2 : 16;
    segment **t = realloc(a->segs, cap * sizeof *t);
    if (!t) return SL_ENOMEM;
    memset(t + a->cap, 0, (cap - a->cap) * sizeof *t);
    a->segs = t;
    a->cap = cap;
  }
  a->segs[i] = s;
  s->id = i;
  a->nsegs++;
  return 0;
}

static void segment_detach(sl_arena *a, segment *s) {
  a->segs[s->id] = NULL;
  a->nsegs--;
}

/* ---- cache of dedicated segments (locked unless said) ---------------- */

/* The segment size for a dedicated block of `cost` bytes: rounded up to one
 * of 8 size classes per power of two (at most 12.5% more), then to pages,
 * so blocks of similar sizes can reuse each other's segments. */
static uint64_t dedicated_size(const sl_arena *a, uint64_t cost) {
  unsigned b = floor_log2(cost);
  uint64_t step = b > 3 ? (uint64_t)1 << (b - 3) : 1;
  return round_up(round_up(cost, step), a->page);
}

/* Removes entry i, keeping the others oldest first. @return it. */
static segment *cache_remove(sl_arena *a, uint32_t i) {
  segment *s = a->seg_cache[i];
  memmove(&a->seg_cache[i], &a->seg_cache[i + 1],
          (a->nseg_cache - i - 1) * sizeof *a->seg_cache);
  a->nseg_cache--;
  a->seg_cache_bytes -= s->size;
  return s;
}

/* The smallest cached segment of `need` to 2 * `need` bytes, taken out of
 * the cache (it keeps its id and table slot) for the caller; or NULL. */
static segment *cache_take(sl_arena *a, uint64_t need) {
  uint32_t best = UINT32_MAX;
  for (uint32_t i = 0; i < a->nseg_cache; i++) {
    uint64_t size = a->seg_cache[i]->size;
    if (size >= need && size - need <= need &&
        (best == UINT32_MAX || size < a->seg_cache[best]->size))
      best = i;
  }
  return best == UINT32_MAX ? NULL : cache_remove(a, best);
}

/* Keeps the emptied dedicated segment `s` for reuse, dropping the oldest
 * cached ones while the cache would exceed its count or byte cap.
 * @return the segments dropped (detached, linked by `next`; maybe `s`
 * itself when it alone exceeds the cap) for the caller to close unlocked. */
static segment *cache_put(sl_arena *a, segment *s) {
  segment *gone = NULL;
  s->first = NULL;
  s->live = 0;
  s->next = NULL;
  if (s->size > a->seg_cache_cap) {
    segment_detach(a, s);
    return s;
  }
  while (a->nseg_cache == SEG_CACHE_MAX ||
         a->seg_cache_bytes + s->size > a->seg_cache_cap) {
    segment *old = cache_remove(a, 0);
    segment_detach(a, old);
    old->next = gone;
    gone = old;
  }
  a->seg_cache[a->nseg_cache++] = s;
  a->seg_cache_bytes += s->size;
  return gone;
}

/* Empties the cache. @return its segments, detached and linked by `next`,
 * for the caller to close unlocked. */
static segment *cache_flush(sl_arena *a) {
  segment *gone = NULL;
  while (a->nseg_cache) {
    segment *s = cache_remove(a, a->nseg_cache - 1);
    segment_detach(a, s);
    s->next = gone;
    gone = s;
  }
  return gone;
}

/* segment_open, but when /dev/shm or memory runs short it gives the cached
 * segments back and tries once more: the cache must never be the reason an
 * allocation fails. Unlocked. @return as segment_open. */
static int segment_create(sl_arena *a, uint64_t size, bool populate,
                          segment **out) {
  int rc = segment_open(size, populate, out);
  if (rc != SL_ENOSPC && rc != SL_ENOMEM) return rc;
  sl__mutex_lock(&a->mu);
  segment *gone = cache_flush(a);
  sl__mutex_unlock(&a->mu);
  if (!gone) return rc;
  segment_close_all(gone);
  return segment_open(size, populate, out);
}

/* ---- descriptors ----------------------------------------------------- */

/* A zeroed descriptor from the cache or malloc. Locked. NULL when out of
 * memory. */
static sl_block *node_get(sl_arena *a) {
  sl_block *n = a->cache;
  if (n) {
    a->cache = n->free_next;
    a->ncached--;
  } else if (!(n = malloc(sizeof *n))) {
    return NULL;
  }
  memset(n, 0, sizeof *n);
  return n;
}

/* Returns a descriptor to the cache (bounded) or to malloc. Locked. */
static void node_put(sl_arena *a, sl_block *n) {
  if (a->ncached >= NODE_CACHE_MAX) {
    free(n);
    return;
  }
  n->free_next = a->cache;
  a->cache = n;
  a->ncached++;
}

/* ---- TLSF bins (all locked) ------------------------------------------ */

/* The bin holding free chunks of `units` (rounding down). */
static void bin_index(uint64_t units, unsigned *fl, unsigned *sl) {
  if (units < SL_COUNT) {
    *fl = 0;
    *sl = (unsigned)units;
    return;
  }
  unsigned b = floor_log2(units);
  *fl = b - SL_BITS + 1;
  *sl = (unsigned)(units >> (b - SL_BITS)) & (SL_COUNT - 1);
}

static void bin_insert(sl_arena *a, sl_block *c) {
  unsigned fl, sl;
  bin_index(c->csize >> UNIT_SHIFT, &fl, &sl);
  c->free_prev = NULL;
  c->free_next = a->bins[fl][sl];
  if (c->free_next) c->free_next->free_prev = c;
  a->bins[fl][sl] = c;
  a->sl_map[fl] |= 1u << sl;
  a->fl_map |= (uint64_t)1 << fl;
}

static void bin_remove(sl_arena *a, sl_block *c) {
  unsigned fl, sl;
  bin_index(c->csize >> UNIT_SHIFT, &fl, &sl);
  if (c->free_prev) c->free_prev->free_next = c->free_next;
  else a->bins[fl][sl] = c->free_next;
  if (c->free_next) c->free_next->free_prev = c->free_prev;
  if (!a->bins[fl][sl]) {
    a->sl_map[fl] &= ~(1u << sl);
    if (!a->sl_map[fl]) a->fl_map &= ~((uint64_t)1 << fl);
  }
}

/* A free chunk of at least `units`, or NULL. The request is rounded up to
 * the next bin boundary so that any chunk of the bin found fits. */
static sl_block *bin_find(sl_arena *a, uint64_t units) {
  if (units >= SL_COUNT)
    units += ((uint64_t)1 << (floor_log2(units) - SL_BITS)) - 1;
  unsigned fl, sl;
  bin_index(units, &fl, &sl);
  uint32_t sm = a->sl_map[fl] & (~0u << sl);
  if (!sm) {
    uint64_t fm = fl + 1 < FL_COUNT ? a->fl_map & (~(uint64_t)0 << (fl + 1)) : 0;
    if (!fm) return NULL;
    fl = (unsigned)__builtin_ctzll(fm);
    sm = a->sl_map[fl];
  }
  return a->bins[fl][__builtin_ctz(sm)];
}

/* ---- chunks (locked) ------------------------------------------------- */

/* Takes `units` from a free chunk, splitting off the rest.
 * @return 0 with *out, 1 when nothing fits, SL_ENOMEM. */
static int chunk_take(sl_arena *a, uint64_t units, sl_block **out) {
  sl_block *c = bin_find(a, units);
  if (!c) return 1;
  uint64_t need = units << UNIT_SHIFT;
  if (c->csize > need) {
    sl_block *r = node_get(a);
    if (!r) return SL_ENOMEM;
    bin_remove(a, c);
    r->free = true;
    r->seg = c->seg;
    r->offset = c->offset + need;
    r->csize = c->csize - need;
    r->phys_prev = c;
    r->phys_next = c->phys_next;
    if (r->phys_next) r->phys_next->phys_prev = r;
    c->phys_next = r;
    c->csize = need;
    bin_insert(a, r);
  } else {
    bin_remove(a, c);
  }
  c->free = false;
  if (c->seg->live++ == 0) a->spare--;
  *out = c;
  return 0;
}

/* Frees chunk `c`, merging with free neighbours. @return a segment that
 * became empty beyond the spare allowance (detached; the caller closes it
 * after unlocking) or NULL. */
static segment *chunk_put(sl_arena *a, sl_block *c) {
  c->free = true;
  sl_block *n = c->phys_next, *p = c->phys_prev;
  if (n && n->free) {
    bin_remove(a, n);
    c->csize += n->csize;
    c->phys_next = n->phys_next;
    if (c->phys_next) c->phys_next->phys_prev = c;
    node_put(a, n);
  }
  if (p && p->free) {
    bin_remove(a, p);
    p->csize += c->csize;
    p->phys_next = c->phys_next;
    if (p->phys_next) p->phys_next->phys_prev = p;
    node_put(a, c);
    c = p;
  }
  segment *s = c->seg;
  if (--s->live > 0 || a->spare < MAX_SPARE) {
    if (s->live == 0) a->spare++;
    bin_insert(a, c);
    return NULL;
  }
  node_put(a, c); /* the one chunk covering the whole segment */
  segment_detach(a, s);
  s->next = NULL;
  return s;
}

/* Makes `s` a regular segment: table slot plus one free chunk covering it.
 * Locked. @return 0 or SL_ENOMEM (s untouched). */
static int segment_add_regular(sl_arena *a, segment *s) {
  sl_block *c = node_get(a);
  if (!c) return SL_ENOMEM;
  if (segment_attach(a, s) < 0) {
    node_put(a, c);
    return SL_ENOMEM;
  }
  c->free = true;
  c->seg = s;
  c->csize = s->size;
  s->first = c;
  a->spare++;
  bin_insert(a, c);
  return 0;
}

/* ---- budget (locked) ------------------------------------------------- */

static void charge(sl_arena *a, uint64_t cost) {
  a->in_use += cost;
  if (a->in_use > a->peak) a->peak = a->in_use;
}

static void uncharge(sl_arena *a, uint64_t cost) {
  a->in_use -= cost;
  if (a->nwaiting || a->nwaiting_ex) sl__cond_broadcast(&a->budget_cv);
}

/* True when `cost` more bytes keep in_use within `limit` (in_use may already
 * exceed it after overdrafts). */
static bool fits(const sl_arena *a, uint64_t cost, uint64_t limit) {
  return a->in_use <= limit && cost <= limit - a->in_use;
}

typedef enum alloc_mode { MODE_WAIT, MODE_TRY, MODE_OVERDRAFT } alloc_mode;

/* Overdraft: no queue, waits only for its own `limit`.
 * @return 0 or SL_ECANCELED. */
static int budget_overdraw(sl_arena *a, uint64_t cost, uint64_t limit) {
  if (!fits(a, cost, limit)) {
    if (a->canceled) return SL_ECANCELED;
    uint64_t t0 = sl_now_ns();
    a->nwaiting_ex++;
    while (!a->canceled && !fits(a, cost, limit))
      sl__cond_wait(&a->budget_cv, &a->mu);
    a->nwaiting_ex--;
    a->wait_ns += sl_now_ns() - t0;
    if (a->canceled) return SL_ECANCELED;
  }
  charge(a, cost);
  return 0;
}

/* Reserves `cost` bytes of budget, waiting in FIFO order in MODE_WAIT.
 * @return 0, SL_EAGAIN or SL_ECANCELED. */
static int budget_reserve(sl_arena *a, uint64_t cost, alloc_mode mode) {
  if (a->nwaiting == 0 && fits(a, cost, a->budget)) {
    charge(a, cost);
    return 0;
  }
  if (a->canceled) return SL_ECANCELED;
  if (mode == MODE_TRY) return SL_EAGAIN;
  uint64_t ticket = a->next_ticket++, t0 = sl_now_ns();
  a->nwaiting++;
  while (!a->canceled && (ticket != a->serving || !fits(a, cost, a->budget)))
    sl__cond_wait(&a->budget_cv, &a->mu);
  a->nwaiting--;
  a->wait_ns += sl_now_ns() - t0;
  if (a->canceled) return SL_ECANCELED; /* the queue order no longer matters */
  a->serving++;
  charge(a, cost);
  if (a->nwaiting) sl__cond_broadcast(&a->budget_cv); /* next in line */
  return 0;
}

/* ---- allocation ------------------------------------------------------ */

/* The size of the regular segment to create for a chunk of `cost` bytes
 * (at most seg_bytes / 4): next_seg, doubled until it holds the chunk with
 * room to spare, at most seg_bytes. Locked. */
static uint64_t regular_size(const sl_arena *a, uint64_t cost) {
  uint64_t size = a->next_seg;
  while (size < 2 * cost && size < a->seg_bytes) size *= 2;
  return size < a->seg_bytes ? size : a->seg_bytes;
}

/* After a regular segment of `size` bytes was made: the next is twice as
 * large, up to seg_bytes. Locked (or not yet shared). */
static void grew(sl_arena *a, uint64_t size) {
  a->next_seg = size < a->seg_bytes / 2 ? 2 * size : a->seg_bytes;
}

/* Detaches an empty regular segment (the spare) onto *list for the caller
 * to close unlocked. Locked; spare > 0. */
static void spare_drop(sl_arena *a, segment **list) {
  for (uint32_t i = 0; i < a->cap; i++) {
    segment *s = a->segs[i];
    if (!s || s->dedicated || s->live) continue;
    bin_remove(a, s->first); /* the one free chunk covering it */
    node_put(a, s->first);
    segment_detach(a, s);
    a->spare--;
    s->next = *list;
    *list = s;
    return;
  }
}

/* Finds `units` in the regular segments, creating one (unlocked) when none
 * has room. Locked on entry and exit. Segments to close (one created in
 * vain, a spare replaced) go to *discard, a list the caller closes
 * unlocked; keeping them would break spare <= MAX_SPARE.
 * @return 0, SL_ENOMEM or -errno. */
static int alloc_regular(sl_arena *a, uint64_t units, sl_block **out,
                         segment **discard) {
  for (;;) {
    int rc = chunk_take(a, units, out);
    if (rc <= 0) return rc;
    if (a->growing) { /* someone is already adding a segment: use it */
      sl__cond_wait(&a->grow_cv, &a->mu);
      continue;
    }
    a->growing = true;
    uint64_t size = regular_size(a, units << UNIT_SHIFT);
    sl__mutex_unlock(&a->mu);
    segment *s = NULL;
    rc = segment_create(a, size, false, &s);
    sl__mutex_lock(&a->mu);
    a->growing = false;
    sl__cond_broadcast(&a->grow_cv);
    if (rc < 0) return rc;
    grew(a, size);
    /* If space was freed meanwhile, the new segment (already paid for:
     * reserved) is kept as the spare when there is none: discarding it
     * made a pipeline whose blocks fill exactly one segment create and drop
     * 64 MiB each time it briefly needed one block more (29 times in a
     * 64-chunk map). */
    if ((rc = chunk_take(a, units, out)) <= 0) {
      if (rc < 0 || a->spare >= MAX_SPARE || segment_add_regular(a, s) < 0) {
        s->next = *discard;
        *discard = s;
      }
      return rc;
    }
    /* Nothing fits, so an empty segment, if any, is too small for this
     * request: the new one replaces it as the spare. */
    if (a->spare >= MAX_SPARE) spare_drop(a, discard);
    if ((rc = segment_add_regular(a, s)) < 0) {
      s->next = *discard;
      *discard = s;
      return rc;
    }
  }
}

/* A new dedicated segment of `size` bytes, attached. Unlocked.
 * @return 0 with *out, SL_ENOMEM or -errno. */
static int dedicated_create(sl_arena *a, uint64_t size, segment **out) {
  segment *s = NULL;
  int rc = segment_create(a, size, true, &s);
  if (rc < 0) return rc;
  s->dedicated = true;
  sl__mutex_lock(&a->mu);
  rc = segment_attach(a, s);
  sl__mutex_unlock(&a->mu);
  if (rc < 0) {
    segment_close(s);
    return rc;
  }
  *out = s;
  return 0;
}

/* A block in its own segment, a cached one when one fits (trimmed when it
 * is more than two size classes too big), else a new one. Unlocked; budget
 * already reserved. @return 0 with *out, SL_ENOMEM or -errno. */
static int alloc_dedicated(sl_arena *a, uint64_t cost, sl_block **out) {
  if (cost > MAX_SEGMENT) return -EFBIG; /* also keeps round_up safe */
  uint64_t need = dedicated_size(a, cost);
  sl_block *b = calloc(1, sizeof *b);
  if (!b) return SL_ENOMEM;
  sl__mutex_lock(&a->mu);
  segment *s = cache_take(a, need);
  sl__mutex_unlock(&a->mu);
  if (s && s->size - need > need / 4) segment_trim(s, need);
  int rc = s ? 0 : dedicated_create(a, need, &s);
  if (rc < 0) {
    free(b);
    return rc;
  }
  /* No lock: nothing else touches a segment without a block. */
  s->live = 1;
  s->first = b;
  b->seg = s;
  b->csize = cost;
  *out = b;
  return 0;
}

/* `limit`: the most in_use may reach (the budget unless overdrawing).
 * @return 0, SL_EINVAL, SL_ELIMIT, SL_EAGAIN, SL_ECANCELED, SL_ENOMEM or
 * -errno from creating a segment. */
static int arena_alloc(sl_arena *a, size_t size, uint64_t limit,
                       alloc_mode mode, sl_block **out) {
  /* Checked before rounding so it cannot overflow; size 0 costs one unit.
   * The budget is whole units, so size <= budget means cost <= budget. */
  if ((uint64_t)size > limit || (uint64_t)size > UINT64_MAX - UNIT)
    return SL_ELIMIT;
  uint64_t cost = size ? round_up(size, UNIT) : UNIT;
  if (cost > limit) return SL_ELIMIT; /* could never be satisfied */
  bool dedicated = cost > a->seg_bytes / 4;
  sl_block *b = NULL;
  segment *discard = NULL;
  sl__mutex_lock(&a->mu);
  int rc = mode == MODE_OVERDRAFT ? budget_overdraw(a, cost, limit)
                                  : budget_reserve(a, cost, mode);
  if (rc < 0) {
    sl__mutex_unlock(&a->mu);
    return rc;
  }
  if (!dedicated) {
    rc = alloc_regular(a, cost >> UNIT_SHIFT, &b, &discard);
  } else {
    sl__mutex_unlock(&a->mu);
    rc = alloc_dedicated(a, cost, &b);
    sl__mutex_lock(&a->mu);
  }
  if (rc < 0) uncharge(a, cost); /* give the reservation back */
  sl__mutex_unlock(&a->mu);
  segment_close_all(discard);
  if (rc < 0) return rc;
  b->arena = a;
  b->size = size;
  b->data = b->seg->base + b->offset;
  /* Relaxed: the handle reaches other threads only through something that
   * synchronises (a queue push), which publishes this store too. */
  atomic_store_explicit(&b->refs, 1, memory_order_relaxed);
  *out = b;
  return 0;
}

/* ---- public: arena --------------------------------------------------- */

int sl_arena_create(sl_arena **out, const sl_arena_options *opt) {
  if (!out) return SL_EINVAL;
  *out = NULL;
  long pg = sysconf(_SC_PAGESIZE);
  uint64_t page = pg > 0 ? (uint64_t)pg : 4096;
  uint64_t budget = opt && opt->budget_bytes ? opt->budget_bytes : DEFAULT_BUDGET;
  uint64_t seg = opt && opt->segment_bytes ? opt->segment_bytes : DEFAULT_SEGMENT;
  if (seg > MAX_SEGMENT) return SL_EINVAL;
  sl_arena *a = calloc(1, sizeof *a);
  if (!a) return SL_ENOMEM;
  a->page = page;
  a->seg_bytes = round_up(seg, page);
  a->next_seg = a->seg_bytes < FIRST_SEGMENT ? a->seg_bytes : FIRST_SEGMENT;
  /* Whole units, so any size <= budget rounds to a cost <= budget. */
  a->budget = budget < UNIT ? UNIT : budget / UNIT * UNIT;
  sl__mutex_init(&a->mu);
  sl__cond_init(&a->budget_cv);
  sl__cond_init(&a->grow_cv);
  /* One segment up front, so a missing or full /dev/shm shows at once. */
  a->seg_cache_cap = a->budget / 2 < SEG_CACHE_CAP ? a->budget / 2 : SEG_CACHE_CAP;
  segment *s = NULL;
  int rc = segment_open(a->next_seg, false, &s);
  if (rc == 0 && (rc = segment_add_regular(a, s)) < 0) segment_close(s);
  if (rc == 0) grew(a, a->next_seg);
  if (rc < 0) {
    sl_arena_destroy(a);
    return rc;
  }
  *out = a;
  return 0;
}

void sl_arena_destroy(sl_arena *a) {
  if (!a) return;
  for (uint32_t i = 0; i < a->cap; i++) {
    segment *s = a->segs[i];
    if (!s) continue;
    for (sl_block *c = s->first, *next; c; c = next) {
      next = c->phys_next;
      free(c);
    }
    segment_close(s);
  }
  for (sl_block *n = a->cache, *next; n; n = next) {
    next = n->free_next;
    free(n);
  }
  free(a->segs);
  pthread_cond_destroy(&a->grow_cv);
  pthread_cond_destroy(&a->budget_cv);
  pthread_mutex_destroy(&a->mu);
  free(a);
}

int sl_arena_alloc(sl_arena *a, size_t size, sl_block **out) {
  if (out) *out = NULL;
  if (!a || !out) return SL_EINVAL;
  return arena_alloc(a, size, a->budget, MODE_WAIT, out);
}

int sl_arena_try_alloc(sl_arena *a, size_t size, sl_block **out) {
  if (out) *out = NULL;
  if (!a || !out) return SL_EINVAL;
  return arena_alloc(a, size, a->budget, MODE_TRY, out);
}

int sl_arena_alloc_ex(sl_arena *a, size_t size, uint64_t limit,
                      sl_block **out) {
  if (out) *out = NULL;
  if (!a || !out) return SL_EINVAL;
  return arena_alloc(a, size, limit, MODE_OVERDRAFT, out);
}

void sl_arena_cancel(sl_arena *a) {
  if (!a) return;
  sl__mutex_lock(&a->mu);
  a->canceled = true;
  sl__cond_broadcast(&a->budget_cv);
  sl__mutex_unlock(&a->mu);
}

void sl_arena_get_stats(sl_arena *a, sl_arena_stats *st) {
  if (!st) return;
  memset(st, 0, sizeof *st);
  if (!a) return;
  sl__mutex_lock(&a->mu);
  st->budget = a->budget;
  st->in_use = a->in_use;
  st->peak = a->peak;
  st->segments = a->nsegs;
  st->wait_ns = a->wait_ns;
  st->cached = a->seg_cache_bytes;
  sl__mutex_unlock(&a->mu);
}

uint64_t sl_arena_budget(const sl_arena *a) {
  return a ? a->budget : 0; /* fixed at creation: no lock needed */
}

int sl_arena_segment_fd(sl_arena *a, uint32_t segment_id) {
  if (!a) return -1;
  sl__mutex_lock(&a->mu);
  int fd = segment_id < a->cap && a->segs[segment_id]
               ? a->segs[segment_id]->fd
               : -1;
  sl__mutex_unlock(&a->mu);
  return fd;
}

/* ---- public: blocks -------------------------------------------------- */

sl_block *sl_block_retain(sl_block *b) {
  /* Relaxed: the caller already holds a reference, so the block cannot die
   * concurrently, and taking a reference publishes nothing. */
  if (b) atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
  return b;
}

void sl_block_release(sl_block *b) {
  if (!b) return;
  /* acq_rel: the release half orders this holder's writes to the block
   * before the decrement; the acquire half makes the thread that reaches
   * zero see every other holder's writes before it frees (and a later
   * allocation reuses) the memory. (A release decrement plus an acquire
   * fence would do, but ThreadSanitizer does not model fences.) */
  if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1) return;
  if (!b->arena) { /* foreign */
    if (b->drop) b->drop(b->drop_ctx, b->data, b->size);
    free(b);
    return;
  }
  sl_arena *a = b->arena;
  segment *s = b->seg, *gone = NULL;
  /* Read now: once unlocked, a regular segment may be freed by another
   * thread's release. */
  bool dedicated = s->dedicated;
  sl__mutex_lock(&a->mu);
  uncharge(a, b->csize);
  gone = dedicated ? cache_put(a, s) : chunk_put(a, b);
  sl__mutex_unlock(&a->mu);
  if (dedicated) free(b);
  segment_close_all(gone); /* munmap outside the lock */
}

void *sl_block_data(const sl_block *b) { return b ? b->data : NULL; }

size_t sl_block_size(const sl_block *b) { return b ? b->size : 0; }

sl_block *sl_block_wrap(void *data, size_t size,
                        void (*drop)(void *ctx, void *data, size_t size), void *ctx) {
  sl_block *b = calloc(1, sizeof *b);
  if (!b) return NULL;
  atomic_init(&b->refs, 1);
  b->data = data;
  b->size = size;
  b->drop = drop;
  b->drop_ctx = ctx;
  return b;
}

sl_block_ref sl_block_get_ref(const sl_block *b) {
  sl_block_ref r = {0, 0, 0, 0};
  if (!b) return r;
  if (!b->seg) { /* foreign: in no segment */
    r.segment = UINT32_MAX;
    r.size = b->size;
    return r;
  }
  r.segment = b->seg->id;
  r.offset = b->offset;
  r.size = b->size;
  r.segment_size = b->seg->size;
  return r;
}

int sl_block_map(int fd, sl_block_ref ref, void **base, size_t *len,
                 void **data) {
  if (fd < 0 || !base || !len || !data) return SL_EINVAL;
  if (ref.offset > (uint64_t)INT64_MAX || ref.size > (uint64_t)INT64_MAX - ref.offset)
    return SL_EINVAL;
  if (ref.segment_size &&
      (ref.offset > ref.segment_size || ref.size > ref.segment_size - ref.offset))
    return SL_EINVAL;
  long pg = sysconf(_SC_PAGESIZE);
  uint64_t page = pg > 0 ? (uint64_t)pg : 4096;
  uint64_t start = ref.offset / page * page;
  uint64_t end = round_up(ref.offset + ref.size, page);
  if (end == start) end += page; /* a size-0 block still maps its page */
  if (end - start > (uint64_t)SIZE_MAX) return SL_EINVAL;
  void *p = mmap(NULL, (size_t)(end - start), PROT_READ | PROT_WRITE,
                 MAP_SHARED, fd, (off_t)start);
  if (p == MAP_FAILED) return -errno;
  *base = p;
  *len = (size_t)(end - start);
  *data = (char *)p + (ref.offset - start);
  return 0;
}

void sl_block_unmap(void *base, size_t len) {
  if (base && len) munmap(base, len);
}
