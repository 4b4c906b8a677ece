/*
 * test_thumbs_memory.c -- end-to-end: the thumbnails pipeline's peak memory
 * does not grow with the number of images (the issue: a folder of 2000
 * images peaks where 200 do, within 20%).
 *
 * make_images (built next to the sluice binary, in examples/) writes 2000
 * small photo-like PNGs into a temporary folder; every tenth of them, in
 * path order, is hard-linked into a second folder of 200. `sluice run
 * pipelines/thumbnails.pipe` (from $SLUICE_SOURCE_DIR, the binary from
 * $SLUICE_BIN; both set by ctest) makes thumbnails of each folder three
 * times, and the median peak_rss_bytes of its --stats-json must agree
 * within 20% both ways (sanitizer builds: see below). Every run must succeed for every image and write
 * one thumbnail per input, so a run that did nothing cannot pass.
 *
 * Why --queue 8 --queue-bytes 256KiB: with photos (MBs decoded) the
 * default 16 MiB byte cap of each queue binds after 2-3 images, so 200
 * images already reach the plateau. These test images are ~30 KB decoded,
 * so under the default 128-item cap the five queues hold up to 640 of
 * them and a 200-image run would measure a pipeline that never filled
 * (bounded all the same: ~9 MiB at 200, ~20 at 2000, ~22 at 4000).
 * Scaling the caps down keeps the test fast and puts it where photos are:
 * caps bind within the first few dozen images, so any growth left between
 * 200 and 2000 is memory that grows per item (a leak, a stage reading ahead
 * without backpressure, an unbounded reorder window).
 *
 * Under AddressSanitizer (or ThreadSanitizer) RSS is mostly the
 * sanitizer's: shadow memory, redzones and allocator metadata for every
 * live block, which multiply the small record that files.list keeps per
 * file (it walks the tree when the run starts), so the 2000-image run
 * measured 20% above the 200-image one in an ASan build, against 10% in
 * a plain one. There the test runs each folder once and
 * checks the runs (every image converted, no sanitizer report: the child
 * would exit non-zero) but does not compare peaks; the plain build does.
 */
#include "test.h"
#include "sluice.h"
#include "test_files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define N_ALL 2000
#define N_SOME 200

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif

#ifdef SANITIZED
#define RUNS 1 /* one run each: correctness only, see the top */
#else
#define RUNS 3 /* median of three: one disturbed run does not decide */
#endif

/* Runs argv[0] (a path) with stdout and stderr to `log`; returns the exit
 * status, or 128 + signal. The log is kept for the failure message. */
static int run_prog(const char *const *argv, const char *log) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid;
  int rc = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc) SL__FAIL("posix_spawn %s: %s", argv[0], strerror(rc));
  int st;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Like run_prog, but any status other than 0 fails the test with the log. */
static void run_ok(const char *const *argv, const char *log) {
  int status = run_prog(argv, log);
  if (status != 0) {
    char *text = tf_slurp_or_empty(log);
    SL__FAIL("%s exited with %d:\n%s", argv[0], status, text);
  }
}

/* A growable list of relative paths; the list owns the strings. */
typedef struct paths {
  char **v;
  size_t n, cap;
} paths;

static void paths_add(paths *p, const char *s) {
  if (p->n == p->cap) {
    p->cap = p->cap ? 2 * p->cap : 256;
    p->v = realloc(p->v, p->cap * sizeof *p->v);
    ASSERT(p->v);
  }
  p->v[p->n] = strdup(s);
  ASSERT(p->v[p->n]);
  p->n++;
}

static void paths_free(paths *p) {
  for (size_t i = 0; i < p->n; i++) free(p->v[i]);
  free(p->v);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Appends the regular files under root/rel (rel "" for root itself) to p,
 * as paths relative to root. */
static void list_files(const char *root, const char *rel, paths *p) {
  char dir[1024];
  snprintf(dir, sizeof dir, "%s%s%s", root, *rel ? "/" : "", rel);
  DIR *d = opendir(dir);
  if (!d) SL__FAIL("opendir %s: %s", dir, strerror(errno));
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    char sub[1024], full[2048];
    snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
    snprintf(full, sizeof full, "%s/%s", root, sub);
    struct stat st;
    ASSERT_EQ(lstat(full, &st), 0);
    if (S_ISDIR(st.st_mode))
      list_files(root, sub, p);
    else if (S_ISREG(st.st_mode))
      paths_add(p, sub);
  }
  closedir(d);
}

/* Creates the parent folders of `path` (which names a file). */
static void make_parents(const char *path) {
  char buf[2048];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *s = buf + 1; *s; s++) {
    if (*s != '/') continue;
    *s = '\0';
    if (mkdir(buf, 0700) < 0 && errno != EEXIST) SL__FAIL("mkdir %s: %s", buf, strerror(errno));
    *s = '/';
  }
}

/* Hard-links every tenth file of `from` (in path order) into `to`;
 * returns how many. */
static size_t link_sample(const char *from, const char *to) {
  paths p = {0};
  list_files(from, "", &p);
  ASSERT_EQ(p.n, N_ALL);
  qsort(p.v, p.n, sizeof *p.v, cmp_str);
  size_t linked = 0;
  for (size_t i = 0; i < p.n; i += N_ALL / N_SOME) {
    char a[2048], b[2048];
    snprintf(a, sizeof a, "%s/%s", from, p.v[i]);
    snprintf(b, sizeof b, "%s/%s", to, p.v[i]);
    make_parents(b);
    if (link(a, b) < 0) SL__FAIL("link %s %s: %s", a, b, strerror(errno));
    linked++;
  }
  paths_free(&p);
  return linked;
}

/* The number after "key": in a --stats-json file's text. */
static uint64_t json_u64(const char *js, const char *key) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\": ", key);
  const char *k = strstr(js, pat);
  if (!k) SL__FAIL("no %s in the stats:\n%s", key, js);
  return strtoull(k + strlen(pat), NULL, 10);
}

static void remove_tree(const char *path) {
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
  ASSERT_EQ(system(cmd), 0);
}

/* One thumbnails run of `in` into a fresh `tmp`/out; checks that every
 * image came out, and returns the run's peak RSS. */
static uint64_t thumbs_peak_rss(const char *tmp, const char *in, size_t n) {
  char pipe[1024], in_arg[1200], out[1100], out_arg[1200], stats[1100], log[1100];
  snprintf(pipe, sizeof pipe, "%s/pipelines/thumbnails.pipe", tf_env("SLUICE_SOURCE_DIR"));
  snprintf(in_arg, sizeof in_arg, "in=%s", in);
  snprintf(out, sizeof out, "%s/out", tmp);
  snprintf(out_arg, sizeof out_arg, "out=%s", out);
  snprintf(stats, sizeof stats, "%s/stats.json", tmp);
  snprintf(log, sizeof log, "%s/sluice.log", tmp);
  remove_tree(out);
  const char *argv[] = {tf_env("SLUICE_BIN"), "run", pipe, in_arg, out_arg,
                        "--threads", "2", "--queue", "8", "--queue-bytes", "256KiB",
                        "--quiet", "--stats-json", stats, NULL};
  run_ok(argv, log);
  char *js = tf_slurp_or_empty(stats);
  ASSERT_EQ(json_u64(js, "items_ok"), n);
  ASSERT_EQ(json_u64(js, "items_failed"), 0);
  uint64_t rss = json_u64(js, "peak_rss_bytes");
  free(js);
  paths written = {0};
  list_files(out, "", &written);
  ASSERT_EQ(written.n, n);
  paths_free(&written);
  ASSERT(rss > 0);
  return rss;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Median peak RSS of RUNS thumbnails runs of `in`. */
static uint64_t median_peak_rss(const char *tmp, const char *in, size_t n) {
  uint64_t v[RUNS];
  for (int r = 0; r < RUNS; r++) v[r] = thumbs_peak_rss(tmp, in, n);
  qsort(v, RUNS, sizeof v[0], cmp_u64);
  fprintf(stderr, "  %zu images: peak RSS %.1f / %.1f / %.1f MiB\n", n, v[0] / 1048576.0,
          v[RUNS / 2] / 1048576.0, v[RUNS - 1] / 1048576.0);
  return v[RUNS / 2];
}

/* The sample generator, built next to the sluice binary's folder. */
static void make_images(const char *dir, const char *log) {
  char exe[1024];
  const char *bin = tf_env("SLUICE_BIN");
  const char *slash = strrchr(bin, '/');
  ASSERT(slash);
  snprintf(exe, sizeof exe, "%.*s/../examples/make_images", (int)(slash - bin), bin);
  if (access(exe, X_OK) != 0) SL__FAIL("%s not built (target make_images)", exe);
  char count[16];
  snprintf(count, sizeof count, "%d", N_ALL);
  const char *argv[] = {exe, dir, count, "--min", "64x48", "--max", "160x120", NULL};
  run_ok(argv, log);
}

TEST(thumbs_peak_rss_bounded) {
  char tmp[] = "/tmp/sluice-thumbs-mem-XXXXXX";
  ASSERT(mkdtemp(tmp));
  char all[256], some[256], log[256];
  snprintf(all, sizeof all, "%s/all", tmp);
  snprintf(some, sizeof some, "%s/some", tmp);
  snprintf(log, sizeof log, "%s/make_images.log", tmp);
  make_images(all, log);
  ASSERT_EQ(link_sample(all, some), N_SOME);

  uint64_t small = median_peak_rss(tmp, some, N_SOME);
  uint64_t large = median_peak_rss(tmp, all, N_ALL);
#ifdef SANITIZED
  (void)small, (void)large;
  fprintf(stderr, "  sanitizer build: peaks not compared (see the top of the file)\n");
#else
  ASSERT_LE(large, small + small / 5);
  ASSERT_LE(small, large + large / 5);
#endif
  remove_tree(tmp);
}

static const sl_test_case cases[] = {
    SL_CASE(thumbs_peak_rss_bounded, "e2e,serial"),
};

SL_TEST_MAIN(cases)
