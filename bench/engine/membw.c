/*
 * membw.c -- the machine's memory bandwidth, the physical limit that the
 * zero-copy benchmark (bench/engine/run.sh) compares gen's fill rate with.
 *
 * Measures, on a buffer of SIZE bytes (default 1 GiB) that is touched once
 * beforehand so page faults are not counted:
 *   memset   write bandwidth, one thread and THREADS threads (each thread
 *            sets its own contiguous slice);
 *   memcpy   copy bandwidth, one thread and THREADS threads, counted as the
 *            bytes copied (each copied byte is read once and written once).
 * and, on fresh memory (one thread, FRESH_MIB per pass, each pass on memory
 * never touched before):
 *   fresh_anon  mmap(MAP_ANONYMOUS) then memset: one page fault per page;
 *   fresh_shm   what a new sluice arena segment costs: shm_open,
 *               posix_fallocate, mmap(MAP_SHARED|MAP_POPULATE), memset.
 * Virtual machines often make page faults, and so fresh memory, far slower
 * than memory already touched: this is the limit a payload allocator meets
 * when it does not reuse its memory.
 * Each figure is the best of PASSES passes: the best pass is the one least
 * disturbed by other processes, which is what a "limit" means.
 *
 * Output is one `key=value` line per figure in GiB/s, for run.sh to parse:
 *   memset_1t=...  memset_mt=...  memcpy_1t=...  memcpy_mt=...
 *   fresh_anon=...  fresh_shm=...
 *
 * usage: membw [SIZE_MIB [THREADS [PASSES]]]   (defaults 1024, all cores, 5)
 *
 * Stand-alone on purpose: it uses no sluice code, so it measures the
 * hardware and nothing of ours.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 256
#define FRESH_MIB 256
#define GIB (double)(1u << 30)

/* One thread's share of a pass: set or copy [dst, dst + len). `src` is NULL
 * for memset. The slice belongs to this thread alone while it runs. */
typedef struct slice {
  unsigned char *dst;
  const unsigned char *src;
  size_t len;
  int fill;
} slice;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Tells the compiler that `p`'s memory is read afterwards, so a memset or
 * memcpy into a buffer nobody reads is not removed as a dead store. */
static void keep(void *p) { __asm__ __volatile__("" : : "r"(p) : "memory"); }

static void *slice_run(void *arg) {
  slice *s = arg;
  if (s->src)
    memcpy(s->dst, s->src, s->len);
  else
    memset(s->dst, s->fill, s->len);
  keep(s->dst);
  return NULL;
}

/* Runs one pass over `size` bytes split among `threads` threads.
 * @return its wall time in seconds, or a negative value if a thread could
 * not be started. */
static double pass(unsigned char *dst, const unsigned char *src, size_t size,
                   int threads, int fill) {
  pthread_t tid[MAX_THREADS];
  slice sl[MAX_THREADS];
  size_t chunk = (size / (size_t)threads + 4095) & ~(size_t)4095;
  double t0 = now_s();
  int started = 0;
  for (int i = 0; i < threads; i++) {
    size_t off = (size_t)i * chunk;
    size_t len = off >= size ? 0 : (size - off < chunk ? size - off : chunk);
    sl[i] = (slice){dst + off, src ? src + off : NULL, len, fill};
    if (i == 0) continue; /* slice 0 runs on this thread below */
    if (pthread_create(&tid[i], NULL, slice_run, &sl[i]) != 0) break;
    started = i;
  }
  slice_run(&sl[0]);
  for (int i = 1; i <= started; i++) pthread_join(tid[i], NULL);
  double dt = now_s() - t0;
  return started == threads - 1 ? dt : -1.0;
}

/* Best GiB/s of `passes` passes. */
static double best_rate(unsigned char *dst, const unsigned char *src,
                        size_t size, int threads, int passes) {
  double best = 0;
  for (int p = 0; p < passes; p++) {
    double dt = pass(dst, src, size, threads, p & 0xff);
    if (dt < 0) {
      fprintf(stderr, "membw: cannot start %d threads\n", threads);
      exit(1);
    }
    double rate = (double)size / dt / GIB;
    if (rate > best) best = rate;
  }
  return best;
}

/* Maps `size` fresh bytes: anonymous, or a new shm segment reserved and
 * populated like an arena segment. The caller munmaps them.
 * @return the mapping, or NULL. */
static unsigned char *map_fresh(size_t size, int shm) {
  if (!shm) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
  }
  char name[64];
  snprintf(name, sizeof name, "/membw-%ld-%ld", (long)getpid(),
           (long)(now_s() * 1e9) % 1000000000L);
  int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) return NULL;
  shm_unlink(name);
  void *p = MAP_FAILED;
  if (posix_fallocate(fd, 0, (off_t)size) == 0)
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
             fd, 0);
  close(fd); /* the mapping keeps the memory */
  return p == MAP_FAILED ? NULL : p;
}

/* Best GiB/s of `passes` passes that each map `size` fresh bytes, fill
 * them and unmap them; the mapping is timed with the fill. -1 on failure. */
static double fresh_rate(size_t size, int shm, int passes) {
  double best = 0;
  for (int p = 0; p < passes; p++) {
    double t0 = now_s();
    unsigned char *m = map_fresh(size, shm);
    if (!m) return -1;
    memset(m, p + 1, size);
    keep(m);
    double rate = (double)size / (now_s() - t0) / GIB;
    munmap(m, size);
    if (rate > best) best = rate;
  }
  return best;
}

int main(int argc, char **argv) {
  long mib = argc > 1 ? atol(argv[1]) : 1024;
  long threads = argc > 2 ? atol(argv[2]) : sysconf(_SC_NPROCESSORS_ONLN);
  int passes = argc > 3 ? atoi(argv[3]) : 5;
  if (mib <= 0 || threads <= 0 || threads > MAX_THREADS || passes <= 0) {
    fprintf(stderr, "usage: membw [SIZE_MIB [THREADS [PASSES]]]\n");
    return 2;
  }
  size_t size = (size_t)mib << 20;
  unsigned char *a = malloc(size), *b = malloc(size);
  if (!a || !b) {
    fprintf(stderr, "membw: cannot allocate 2 x %ld MiB\n", mib);
    return 1;
  }
  /* First touch: fault every page in now, outside the timed passes. */
  memset(a, 1, size);
  memset(b, 2, size);
  printf("size_mib=%ld\nthreads=%ld\npasses=%d\n", mib, threads, passes);
  printf("memset_1t=%.2f\n", best_rate(a, NULL, size, 1, passes));
  printf("memset_mt=%.2f\n", best_rate(a, NULL, size, (int)threads, passes));
  printf("memcpy_1t=%.2f\n", best_rate(b, a, size, 1, passes));
  printf("memcpy_mt=%.2f\n", best_rate(b, a, size, (int)threads, passes));
  free(a);
  free(b);
  size_t fresh = (size_t)FRESH_MIB << 20;
  printf("fresh_mib=%d\n", FRESH_MIB);
  printf("fresh_anon=%.2f\n", fresh_rate(fresh, 0, passes < 3 ? passes : 3));
  printf("fresh_shm=%.2f\n", fresh_rate(fresh, 1, passes < 3 ? passes : 3));
  return 0;
}
