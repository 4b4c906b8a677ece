/*
 * gen.c -- `gen`, a source of synthetic items for tests and benchmarks.
 *
 * Item k (1-based; seq = k-1) is named <prefix><k as %06u> and carries `size`
 * pseudo-random bytes. The bytes are a pure function of (seed, k, offset):
 * word i of item k is splitmix64's output for counter i of a stream keyed by
 * (seed, k). Being counter-based, any range of words can be computed
 * independently, so large items are filled with sl_parallel_for and the
 * result is identical for every thread count. Words are stored little-endian
 * so the bytes are identical on every machine too.
 *
 * The generator cursor lives in per-worker state (open()), not in create()'s
 * state, so a checked pipeline can be run more than once. A source runs on
 * one thread, so the cursor needs no locking.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "stages_internal.h"

typedef struct gen_params {
  int64_t count;
  uint64_t size;
  int64_t seed;
  const char *prefix;
} gen_params;

typedef struct gen_local {
  uint64_t next;  /* index (seq) of the next item to consider */
  bool total_set; /* sl_worker_set_total called */
} gen_local;

#define GOLDEN UINT64_C(0x9E3779B97F4A7C15)
/* Items at least this big are filled in parallel; smaller ones are not worth
 * waking threads for. */
#define PARALLEL_MIN_BYTES ((size_t)4 << 20)
#define PARALLEL_GRAIN_WORDS ((size_t)1 << 17) /* 1 MiB */

/* splitmix64's finaliser: a bijective 64-bit mix. */
static inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

static inline void store_le64(unsigned char *p, uint64_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  memcpy(p, &v, sizeof v);
}

/* The stream key of item `k` (1-based) under `seed`. */
static uint64_t item_key(int64_t seed, uint64_t k) {
  return mix64(mix64((uint64_t)seed) + k * GOLDEN);
}

typedef struct fill_job {
  unsigned char *dst;
  uint64_t key;
} fill_job;

/* Writes words [begin, end) of the stream; `arg` is a fill_job. */
static void fill_words(void *arg, size_t begin, size_t end) {
  const fill_job *job = arg;
  unsigned char *p = job->dst + begin * 8;
  uint64_t s = job->key + (uint64_t)(begin + 1) * GOLDEN;
  for (size_t i = begin; i < end; i++, p += 8, s += GOLDEN)
    store_le64(p, mix64(s));
}

/* Fills `size` bytes at `dst` with item `key`'s bytes. */
static void fill_item(sl_worker *w, unsigned char *dst, size_t size,
                      uint64_t key) {
  fill_job job = {dst, key};
  size_t words = size / 8, tail = size % 8;
  if (size >= PARALLEL_MIN_BYTES)
    sl_parallel_for(w, words, PARALLEL_GRAIN_WORDS, fill_words, &job);
  else
    fill_words(&job, 0, words);
  if (tail) {
    unsigned char last[8];
    store_le64(last, mix64(key + (uint64_t)(words + 1) * GOLDEN));
    memcpy(dst + words * 8, last, tail);
  }
}

static int gen_open(sl_worker *w, void **local) {
  (void)w;
  gen_local *g = calloc(1, sizeof *g);
  if (!g) return SL_ENOMEM;
  *local = g;
  return 0;
}

static void gen_close(sl_worker *w) { free(sl_worker_local(w)); }

/* Builds item `seq` with its payload. On success *out is owned by the caller
 * (the engine). */
static int gen_make(sl_worker *w, const gen_params *p, uint64_t seq,
                    const char *name, sl_item **out) {
  sl_item *item = sl_item_create(seq, name);
  if (!item) return SL_ENOMEM;
  item->total_hint = (uint64_t)p->count;
  item->payload.kind = SL_KIND_BYTES;
  if (p->size > 0) {
    sl_block *block;
    int rc = sl_worker_alloc(w, (size_t)p->size, &block);
    if (rc < 0) {
      sl_item_destroy(item);
      if (rc == SL_ECANCELED) return rc;
      return sl_worker_errorf(w, "cannot allocate %" PRIu64 " bytes: %s",
                              p->size, sl_strerror(rc));
    }
    fill_item(w, sl_block_data(block), (size_t)p->size,
              item_key(p->seed, seq + 1));
    sl_item_set_block(item, SL_KIND_BYTES, block, 0, (size_t)p->size);
  }
  *out = item;
  return 0;
}

/* Produces the next item not already done (--resume); skipped items keep
 * their seq, so names and seqs are the same in every run. */
static int gen_produce(sl_worker *w, sl_item **out) {
  const gen_params *p = sl_worker_params(w);
  gen_local *g = sl_worker_local(w);
  if (!g->total_set) {
    sl_worker_set_total(w, (uint64_t)p->count);
    g->total_set = true;
  }
  char small[128];
  while (g->next < (uint64_t)p->count) {
    if (sl_worker_canceled(w)) return SL_ECANCELED;
    uint64_t seq = g->next;
    int n = snprintf(small, sizeof small, "%s%06" PRIu64, p->prefix, seq + 1);
    char *name = small;
    if (n >= (int)sizeof small) {
      if (!(name = malloc((size_t)n + 1))) return SL_ENOMEM;
      snprintf(name, (size_t)n + 1, "%s%06" PRIu64, p->prefix, seq + 1);
    }
    int rc = 0;
    if (!sl_worker_is_done(w, name)) rc = gen_make(w, p, seq, name, out);
    else *out = NULL;
    if (name != small) free(name);
    if (rc < 0) return rc; /* g->next unchanged: a new call retries it */
    g->next++;
    if (*out) return 0;
  }
  return SL_DONE;
}

static uint64_t gen_item_bytes(const sl_stage *st) {
  const gen_params *p = sl_stage_params(st);
  return p->size;
}

static const sl_param_def gen_params_table[] = {
    {"count", SL_PARAM_INT, offsetof(gen_params, count), "100", 0, 1e12, NULL,
     "number of items to generate"},
    {"size", SL_PARAM_SIZE, offsetof(gen_params, size), "1KiB", 0, 0, NULL,
     "payload bytes per item (0: empty bytes payload)"},
    {"seed", SL_PARAM_INT, offsetof(gen_params, seed), "1", 0, 0, NULL,
     "seed of the pseudo-random bytes; the same seed gives the same bytes"},
    {"prefix", SL_PARAM_STRING, offsetof(gen_params, prefix), "item-", 0, 0,
     NULL, "item names are <prefix><number>, numbers from 000001"},
    SL_PARAM_END,
};

const sl_stage_def sl__stage_gen = {
    .name = "gen",
    .summary = "generate synthetic items of pseudo-random bytes",
    .help =
        "Source of `count` items for tests and benchmarks. Item k (from 1) is\n"
        "named <prefix><k>, zero-padded to six digits (item-000001, ...), has\n"
        "seq k-1, and carries `size` bytes that depend only on (seed, k): the\n"
        "same parameters give byte-identical items on every run, machine and\n"
        "thread count, and a different seed gives different bytes. Large\n"
        "items are filled in parallel under the core budget.\n"
        "With --resume, items already done are skipped without being\n"
        "generated; the others keep their names and seqs.\n"
        "Example: gen count=1000 size=1MiB ! identity ! discard",
    .exec = SL_EXEC_CPU,
    .in_kind = SL_KIND_NONE,
    .out_kind = SL_KIND_BYTES,
    .flags = SL_STAGE_SOURCE,
    .params = gen_params_table,
    .params_size = sizeof(gen_params),
    .open = gen_open,
    .produce = gen_produce,
    .close = gen_close,
    .item_bytes = gen_item_bytes,
};
