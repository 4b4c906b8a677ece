/*
 * test_stages.c -- the built-in stages (gen, identity, discard) and file
 * sources/sinks (files.list, files.read, files.write), end to end through
 * the public API: parse a pipeline text, run it, then check the files on
 * disk and the run's counters and failure list.
 *
 * Every case works in its own mkdtemp() directory under /tmp and removes it.
 * Checks that nothing half-written survives compare the exact set of files
 * in an output tree, so a leftover ".*.sluice-tmp-*" fails the test.
 * Tests run as root in CI, so unreadable files are made with dangling
 * symlinks rather than chmod.
 */
#include "test.h"
#include "sluice.h"
#include "test_files.h"
#include "sluice_io.h"
#include "sluice_stages.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- small helpers (abort on failure: they are not under test) ---- */

static char *make_tmpdir(void) {
  char *t = tf_asprintf("/tmp/sl-stages-XXXXXX");
  ASSERT(mkdtemp(t));
  return t;
}

typedef struct strlist {
  char **v;
  size_t n, cap;
} strlist;

static void strlist_add(strlist *l, const char *s) {
  if (l->n == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 16;
    l->v = realloc(l->v, l->cap * sizeof *l->v);
    ASSERT(l->v);
  }
  l->v[l->n++] = tf_asprintf("%s", s);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void strlist_sort(strlist *l) {
  if (l->n > 1) qsort(l->v, l->n, sizeof *l->v, cmp_str);
}

static void strlist_free(strlist *l) {
  for (size_t i = 0; i < l->n; i++) free(l->v[i]);
  free(l->v);
  memset(l, 0, sizeof *l);
}

/* Removes `name` under directory fd `dfd`, recursively; works below
 * PATH_MAX depth too, since it never builds full paths. */
static void rm_rf_at(int dfd, const char *name) {
  struct stat st;
  if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) return;
  if (!S_ISDIR(st.st_mode)) {
    ASSERT_OK(unlinkat(dfd, name, 0));
    return;
  }
  int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  ASSERT(fd >= 0);
  DIR *d = fdopendir(fd);
  ASSERT(d);
  strlist names = {0};
  struct dirent *de;
  while ((de = readdir(d)))
    if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
      strlist_add(&names, de->d_name);
  for (size_t i = 0; i < names.n; i++) rm_rf_at(fd, names.v[i]);
  strlist_free(&names);
  closedir(d);
  ASSERT_OK(unlinkat(dfd, name, AT_REMOVEDIR));
}

static void rm_rf(const char *path) { rm_rf_at(AT_FDCWD, path); }

/* Creates parent directories as needed, then the file. */
static void put_file(const char *root, const char *rel, const void *data,
                     size_t n) {
  char *path = tf_asprintf("%s/%s", root, rel);
  for (char *s = strchr(path + strlen(root) + 1, '/'); s; s = strchr(s + 1, '/')) {
    *s = 0;
    mkdir(path, 0755);
    *s = '/';
  }
  FILE *f = fopen(path, "wb");
  ASSERT(f);
  ASSERT_EQ(fwrite(data, 1, n, f), n);
  ASSERT_EQ(fclose(f), 0);
  free(path);
}

/* @return the whole file (malloc'd, caller frees) or NULL when absent. */
static unsigned char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  ASSERT_EQ(fseek(f, 0, SEEK_END), 0);
  long len = ftell(f);
  ASSERT(len >= 0);
  rewind(f);
  unsigned char *buf = malloc((size_t)len + 1);
  ASSERT(buf);
  ASSERT_EQ(fread(buf, 1, (size_t)len, f), (size_t)len);
  fclose(f);
  *n = (size_t)len;
  return buf;
}

/* Deterministic test content: `n` bytes depending on `tag`. */
static unsigned char *pattern(size_t n, unsigned tag) {
  unsigned char *b = malloc(n + 1);
  ASSERT(b);
  uint32_t x = 2463534242u ^ tag * 2654435761u;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    b[i] = (unsigned char)x;
  }
  return b;
}

/* Every non-directory under root/rel (hidden ones too), relative to root. */
static void list_tree_at(const char *root, const char *rel, strlist *out) {
  char *path = rel[0] ? tf_asprintf("%s/%s", root, rel) : tf_asprintf("%s", root);
  DIR *d = opendir(path);
  ASSERT(d);
  struct dirent *de;
  while ((de = readdir(d))) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
    char *r = rel[0] ? tf_asprintf("%s/%s", rel, de->d_name)
                     : tf_asprintf("%s", de->d_name);
    char *full = tf_asprintf("%s/%s", root, r);
    struct stat st;
    ASSERT_OK(lstat(full, &st));
    if (S_ISDIR(st.st_mode)) list_tree_at(root, r, out);
    else strlist_add(out, r);
    free(r);
    free(full);
  }
  closedir(d);
  free(path);
}

/* Asserts that the files under `root` are exactly `exp` (any order). */
static void assert_tree(const char *root, const char *const *exp, size_t n) {
  strlist got = {0};
  list_tree_at(root, "", &got);
  strlist_sort(&got);
  strlist want = {0};
  for (size_t i = 0; i < n; i++) strlist_add(&want, exp[i]);
  strlist_sort(&want);
  for (size_t i = 0; i < got.n || i < want.n; i++) {
    if (i < got.n && i < want.n && !strcmp(got.v[i], want.v[i])) continue;
    fprintf(stderr, "tree %s differs at entry %zu:\n", root, i);
    for (size_t j = 0; j < got.n; j++) fprintf(stderr, "  got  %s\n", got.v[j]);
    for (size_t j = 0; j < want.n; j++) fprintf(stderr, "  want %s\n", want.v[j]);
    ASSERT(!"tree mismatch");
  }
  strlist_free(&got);
  strlist_free(&want);
}

/* Asserts the two files exist with identical bytes. */
static void assert_same_file(const char *a, const char *b) {
  size_t na, nb;
  unsigned char *da = slurp(a, &na), *db = slurp(b, &nb);
  if (!da || !db) SL__FAIL("missing: %s%s", da ? "" : a, db ? "" : b);
  ASSERT_EQ(na, nb);
  if (memcmp(da, db, na) != 0) SL__FAIL("%s and %s differ", a, b);
  free(da);
  free(db);
}

/* ---- running pipelines ---- */

typedef struct runner {
  sl_registry *reg;
  sl_pipeline *p;
  sl_run *run;
  sl_run_options opt;
} runner;

static void runner_init(runner *r) {
  memset(r, 0, sizeof *r);
  ASSERT_OK(sl_registry_create(&r->reg));
  ASSERT_OK(sl_stages_register_all(r->reg));
  ASSERT_OK(sl_io_register_all(r->reg));
  ASSERT_OK(sl_pipeline_create(&r->p, r->reg));
  sl_run_options_init(&r->opt);
  r->opt.threads = 2;
  r->opt.memory_bytes = (uint64_t)128 << 20;
  r->opt.progress = SL_PROGRESS_OFF;
  r->opt.report = NULL;
}

static void runner_free(runner *r) {
  sl_run_destroy(r->run);
  sl_pipeline_destroy(r->p);
  sl_registry_destroy(r->reg);
}

/* Parses `text` (must be valid) into r->p. */
static void runner_parse(runner *r, const char *text) {
  int rc = sl_pipeline_parse(r->p, "test.pipe", text, strlen(text), NULL, 0);
  if (rc < 0) SL__FAIL("parse of \"%s\" failed:\n%s", text, sl_pipeline_errors(r->p));
}

/* @return what sl_run_execute returned. */
static int runner_exec(runner *r) {
  ASSERT_OK(sl_run_create(&r->run, r->p, &r->opt));
  int rc = sl_run_execute(r->run);
  if (rc < 0 && rc != SL_EITEMS && rc != SL_ECANCELED)
    fprintf(stderr, "run failed: %s (%s)\n", sl_strerror(rc), sl_run_error(r->run));
  return rc;
}

/* Parses and runs `text` with `retries`; returns the execute result and
 * leaves the runner for inspection (the caller frees it). */
static int run_text(runner *r, const char *text, unsigned retries) {
  runner_init(r);
  r->opt.retries = retries;
  runner_parse(r, text);
  return runner_exec(r);
}

/* Runs `text`, which must succeed with every one of `n` items ok. */
static void run_ok(const char *text, uint64_t n) {
  runner r;
  int rc = run_text(&r, text, 0);
  if (rc != 0) {
    for (size_t i = 0; i < sl_run_failure_count(r.run); i++) {
      const char *it, *st, *msg;
      sl_run_failure(r.run, i, &it, &st, &msg);
      fprintf(stderr, "  failed: %s in %s: %s\n", it, st, msg);
    }
  }
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(sl_run_items_ok(r.run), n);
  ASSERT_EQ(sl_run_items_failed(r.run), 0);
  runner_free(&r);
}

/* The failed items' names, sorted; checks every failure's stage and that
 * its message contains `msg_part`. */
static void failures(const runner *r, const char *stage, const char *msg_part,
                     strlist *names) {
  size_t n = sl_run_failure_count(r->run);
  ASSERT_EQ(n, sl_run_items_failed(r->run));
  for (size_t i = 0; i < n; i++) {
    const char *it, *st, *msg;
    ASSERT_OK(sl_run_failure(r->run, i, &it, &st, &msg));
    ASSERT_STREQ(st, stage);
    ASSERT_CONTAINS(msg, msg_part);
    strlist_add(names, it);
  }
  strlist_sort(names);
}

/* Parses `text`, which must fail; @return the error text (malloc'd). */
static char *parse_error(const char *text) {
  runner r;
  runner_init(&r);
  int rc = sl_pipeline_parse(r.p, "test.pipe", text, strlen(text), NULL, 0);
  ASSERT_EQ(rc, SL_EPARSE);
  char *err = tf_asprintf("%s", sl_pipeline_errors(r.p));
  runner_free(&r);
  return err;
}

/* ---- gen ---- */

/* gen -> files.write: count files of the right size; the same seed gives
 * the same bytes, another seed other bytes, items differ from each other,
 * and a size that is not a multiple of 8 is honoured exactly. */
TEST(gen_write_deterministic) {
  char *t = make_tmpdir();
  const char *outs[] = {"a", "b", "c"};
  const int seeds[] = {7, 7, 8};
  for (int i = 0; i < 3; i++) {
    char *text = tf_asprintf("gen count=20 size=1001 seed=%d ! files.write "
                           "dir=%s/%s suffix=.bin", seeds[i], t, outs[i]);
    run_ok(text, 20);
    free(text);
  }
  const char *names[20];
  char buf[20][32];
  for (int i = 0; i < 20; i++) {
    snprintf(buf[i], sizeof buf[i], "item-%06d.bin", i + 1);
    names[i] = buf[i];
  }
  for (int o = 0; o < 3; o++) {
    char *dir = tf_asprintf("%s/%s", t, outs[o]);
    assert_tree(dir, names, 20);
    free(dir);
  }
  for (int i = 0; i < 20; i++) {
    char *a = tf_asprintf("%s/a/%s", t, names[i]), *b = tf_asprintf("%s/b/%s", t, names[i]),
         *c = tf_asprintf("%s/c/%s", t, names[i]);
    assert_same_file(a, b);
    size_t na, nc;
    unsigned char *da = slurp(a, &na), *dc = slurp(c, &nc);
    ASSERT_EQ(na, 1001);
    ASSERT_EQ(nc, 1001);
    ASSERT(memcmp(da, dc, na) != 0);
    if (i > 0) { /* consecutive items differ */
      char *prev = tf_asprintf("%s/a/%s", t, names[i - 1]);
      size_t np;
      unsigned char *dp = slurp(prev, &np);
      ASSERT(memcmp(da, dp, na) != 0);
      free(dp);
      free(prev);
    }
    /* Not constant: the bytes take many values. */
    int seen[256] = {0}, distinct = 0;
    for (size_t k = 0; k < na; k++) distinct += !seen[da[k]]++;
    ASSERT(distinct > 200);
    free(da);
    free(dc);
    free(a);
    free(b);
    free(c);
  }
  rm_rf(t);
  free(t);
}

/* Large items are filled in parallel: the bytes must not depend on the
 * thread count, and item k's bytes are a prefix of the same item's bytes at
 * a larger size (the content is a function of seed, index and offset). */
TEST(gen_parallel_fill_matches_serial) {
  char *t = make_tmpdir();
  const size_t big = ((size_t)9 << 20) + 5;
  const unsigned threads[] = {1, 2};
  for (int i = 0; i < 2; i++) {
    runner r;
    runner_init(&r);
    r.opt.threads = threads[i];
    char *text = tf_asprintf("gen count=2 size=%zu seed=3 ! files.write dir=%s/t%u",
                           big, t, threads[i]);
    runner_parse(&r, text);
    ASSERT_EQ(runner_exec(&r), 0);
    ASSERT_EQ(sl_run_items_ok(r.run), 2);
    runner_free(&r);
    free(text);
  }
  char *small = tf_asprintf("gen count=2 size=1003 seed=3 ! files.write dir=%s/s", t);
  run_ok(small, 2);
  free(small);
  for (int k = 1; k <= 2; k++) {
    char *a = tf_asprintf("%s/t1/item-%06d", t, k), *b = tf_asprintf("%s/t2/item-%06d", t, k),
         *s = tf_asprintf("%s/s/item-%06d", t, k);
    assert_same_file(a, b);
    size_t na, ns;
    unsigned char *da = slurp(a, &na), *ds = slurp(s, &ns);
    ASSERT_EQ(na, big);
    ASSERT_EQ(ns, 1003);
    ASSERT(memcmp(da, ds, ns) == 0);
    /* Every 1 MiB range has its own bytes (no range filled twice from the
     * same counter). */
    for (size_t x = 0; x + 64 <= big; x += (size_t)1 << 20)
      for (size_t y = x + ((size_t)1 << 20); y + 64 <= big; y += (size_t)1 << 20)
        ASSERT(memcmp(da + x, da + y, 64) != 0);
    /* The tail past the last parallel range is filled too. */
    int nonzero = 0;
    for (size_t j = big - 64; j < big; j++) nonzero += da[j] != 0;
    ASSERT(nonzero > 32);
    free(da);
    free(ds);
    free(a);
    free(b);
    free(s);
  }
  rm_rf(t);
  free(t);
}

/* size=0 gives empty BYTES payloads that files.write turns into empty
 * files; a prefix with '/' makes nested outputs. */
TEST(gen_empty_items_and_prefix_dirs) {
  char *t = make_tmpdir();
  char *text = tf_asprintf("gen count=3 size=0 prefix=x/y/n- ! files.write dir=%s/out", t);
  run_ok(text, 3);
  const char *exp[] = {"x/y/n-000001", "x/y/n-000002", "x/y/n-000003"};
  char *out = tf_asprintf("%s/out", t);
  assert_tree(out, exp, 3);
  for (int i = 0; i < 3; i++) {
    char *p = tf_asprintf("%s/%s", out, exp[i]);
    struct stat st;
    ASSERT_OK(stat(p, &st));
    ASSERT_EQ(st.st_size, 0);
    free(p);
  }
  free(out);
  free(text);
  rm_rf(t);
  free(t);
}

/* The pipeline the engine's throughput target is measured on runs and
 * counts every item. */
TEST(gen_identity_discard_counts) {
  run_ok("gen count=20000 size=16 ! identity ! identity ! identity ! identity "
         "! discard", 20000);
  run_ok("gen count=0 ! discard", 0);
}

/* Parameter validation happens at check time. */
TEST(param_errors_at_check_time) {
  char *e = parse_error("gen count=-1 ! discard");
  ASSERT_CONTAINS(e, "count");
  free(e);
  e = parse_error("gen ! identity fail_every=-3 ! discard");
  ASSERT_CONTAINS(e, "fail_every");
  free(e);
  e = parse_error("gen ! files.write");
  ASSERT_CONTAINS(e, "dir");
  free(e);
  e = parse_error("gen ! files.write dir=/tmp suffix=a/b");
  ASSERT_CONTAINS(e, "suffix");
  free(e);
}

/* ---- identity ---- */

/* fail_every=10 over 100 items fails exactly items 10, 20, ..., 100. */
TEST(identity_fail_every) {
  runner r;
  ASSERT_EQ(run_text(&r, "gen count=100 size=16 ! identity fail_every=10 ! discard", 0),
            SL_EITEMS);
  ASSERT_EQ(sl_run_items_ok(r.run), 90);
  ASSERT_EQ(sl_run_items_failed(r.run), 10);
  strlist names = {0};
  failures(&r, "identity", "injected failure (fail_every=10)", &names);
  ASSERT_EQ(names.n, 10);
  for (size_t i = 0; i < names.n; i++) {
    char want[32];
    snprintf(want, sizeof want, "item-%06zu", (i + 1) * 10);
    ASSERT_STREQ(names.v[i], want);
  }
  strlist_free(&names);
  runner_free(&r);
}

/* fail_attempts=K fails exactly the first K attempts: K retries rescue
 * every item, K-1 do not. */
TEST(identity_fail_attempts_with_retries) {
  static const struct {
    unsigned retries;
    int fail_attempts;
    int failed;
  } cases[] = {{2, 1, 0}, {1, 1, 0}, {1, 2, 10}, {2, 2, 0}, {2, 3, 10},
               {0, 1, 10}, {3, 0, 10}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    runner r;
    char *text = tf_asprintf("gen count=100 size=16 ! identity fail_every=10 "
                           "fail_attempts=%d ! discard", cases[i].fail_attempts);
    int rc = run_text(&r, text, cases[i].retries);
    ASSERT_EQ(rc, cases[i].failed ? SL_EITEMS : 0);
    ASSERT_EQ(sl_run_items_failed(r.run), cases[i].failed);
    ASSERT_EQ(sl_run_items_ok(r.run), 100 - cases[i].failed);
    runner_free(&r);
    free(text);
  }
}

/* spin_us and sleep_us take at least the time asked for. */
TEST(identity_spin_and_sleep) {
  uint64_t t0 = sl_now_ns();
  run_ok("gen count=4 size=16 ! identity spin_us=20000 ! discard", 4);
  uint64_t t1 = sl_now_ns();
  run_ok("gen count=4 size=16 ! identity sleep_us=20000 ! discard", 4);
  uint64_t t2 = sl_now_ns();
  /* 4 items x 20 ms over at most 2 threads: >= 40 ms each. */
  ASSERT(t1 - t0 >= 40000000u);
  ASSERT(t2 - t1 >= 40000000u);
}

/* ---- files.list / files.read / files.write ---- */

typedef struct tree_file {
  const char *rel;
  size_t size;
} tree_file;

static const tree_file tree[] = {
    {"a.txt", 100},          {"a-c.txt", 7},          {"b.dat", 0},
    {"big.dat", (17u << 20) + 3}, {"sub/c.txt", 4096}, {"sub/g.dat", 1},
    {"sub/deep/d.txt", 333}, {"sub/deep/e.txt", 65536}, {".f.txt", 12},
    {".hidden/h.txt", 50},   {"sub/.i.txt", 9},
};
#define NTREE (sizeof tree / sizeof tree[0])

static void make_tree(const char *src) {
  ASSERT_OK(mkdir(src, 0755));
  for (size_t i = 0; i < NTREE; i++) {
    unsigned char *b = pattern(tree[i].size, (unsigned)i);
    put_file(src, tree[i].rel, b, tree[i].size);
    free(b);
  }
}

/* Copies with `params` for files.list and checks the output is exactly
 * `exp`, each byte-identical to its source. */
static void check_copy(const char *t, const char *params, const char *const *exp,
                       size_t n) {
  static int serial;
  char *out = tf_asprintf("%s/out%d", t, serial++);
  char *text = tf_asprintf("files.list dir=%s/src %s ! files.read ! files.write dir=%s",
                         t, params, out);
  run_ok(text, n);
  assert_tree(out, exp, n);
  for (size_t i = 0; i < n; i++) {
    char *a = tf_asprintf("%s/src/%s", t, exp[i]), *b = tf_asprintf("%s/%s", out, exp[i]);
    assert_same_file(a, b);
    free(a);
    free(b);
  }
  free(text);
  free(out);
}

TEST(files_copy_tree) {
  char *t = make_tmpdir();
  char *src = tf_asprintf("%s/src", t);
  make_tree(src);
  const char *all[] = {"a.txt", "a-c.txt", "b.dat", "big.dat", "sub/c.txt",
                       "sub/g.dat", "sub/deep/d.txt", "sub/deep/e.txt"};
  check_copy(t, "", all, 8);
  const char *txt[] = {"a.txt", "a-c.txt", "sub/c.txt", "sub/deep/d.txt",
                       "sub/deep/e.txt"};
  check_copy(t, "glob=*.txt", txt, 5);
  const char *top[] = {"a.txt", "a-c.txt", "b.dat", "big.dat"};
  check_copy(t, "recursive=false", top, 4);
  const char *hid[] = {"a.txt", "a-c.txt", "b.dat", "big.dat", "sub/c.txt",
                       "sub/g.dat", "sub/deep/d.txt", "sub/deep/e.txt", ".f.txt",
                       ".hidden/h.txt", "sub/.i.txt"};
  check_copy(t, "hidden=true", hid, 11);
  /* A '/' in the glob matches the relative path; '*' stops at '/'. */
  const char *path_glob[] = {"sub/c.txt"};
  check_copy(t, "glob=sub/*.txt", path_glob, 1);
  const char *hid_txt[] = {".hidden/h.txt"};
  check_copy(t, "hidden=true glob=.hidden/*", hid_txt, 1);
  rm_rf(t);
  free(src);
  free(t);
}

/* Items come in byte order of the relative path, seq 0, 1, ...: with
 * fail_every=k exactly the items at positions k, 2k, ... fail. */
TEST(files_list_order) {
  char *t = make_tmpdir();
  char *src = tf_asprintf("%s/src", t);
  make_tree(src);
  /* "a-c.txt" < "a.txt" ('-' < '.'), "sub/c.txt" < "sub/deep/..." < "sub/g.dat". */
  const char *sorted[] = {"a-c.txt", "a.txt", "b.dat", "big.dat", "sub/c.txt",
                          "sub/deep/d.txt", "sub/deep/e.txt", "sub/g.dat"};
  const size_t n = 8;
  for (size_t k = 1; k <= n; k++) {
    char *text = tf_asprintf("files.list dir=%s ! identity fail_every=%zu ! discard",
                           src, k);
    runner r;
    ASSERT_EQ(run_text(&r, text, 0), SL_EITEMS);
    ASSERT_EQ(sl_run_items_ok(r.run), n - n / k);
    strlist got = {0};
    failures(&r, "identity", "injected failure", &got);
    ASSERT_EQ(got.n, n / k);
    strlist want = {0};
    for (size_t j = k; j <= n; j += k) strlist_add(&want, sorted[j - 1]);
    strlist_sort(&want);
    for (size_t j = 0; j < got.n; j++) ASSERT_STREQ(got.v[j], want.v[j]);
    strlist_free(&got);
    strlist_free(&want);
    runner_free(&r);
    free(text);
  }
  rm_rf(t);
  free(src);
  free(t);
}

/* A missing or non-directory dir is reported when the pipeline is checked,
 * naming the directory and the cause. */
TEST(files_list_missing_dir) {
  char *t = make_tmpdir();
  char *text = tf_asprintf("files.list dir=%s/nope ! discard", t);
  char *e = parse_error(text);
  char *want = tf_asprintf("dir '%s/nope'", t);
  ASSERT_CONTAINS(e, want);
  ASSERT_CONTAINS(e, "No such file or directory");
  free(e);
  free(want);
  free(text);

  put_file(t, "plain", "x", 1);
  text = tf_asprintf("files.list dir=%s/plain ! discard", t);
  e = parse_error(text);
  ASSERT_CONTAINS(e, "Not a directory");
  free(e);
  free(text);

  text = tf_asprintf("gen ! files.write dir=%s/plain", t);
  e = parse_error(text);
  ASSERT_CONTAINS(e, "Not a directory");
  free(e);
  free(text);

  /* mkdir=false needs the directory to exist already. */
  text = tf_asprintf("gen ! files.write dir=%s/absent mkdir=false", t);
  e = parse_error(text);
  ASSERT_CONTAINS(e, "No such file or directory");
  free(e);
  free(text);
  rm_rf(t);
  free(t);
}

/* A broken symlink is listed and fails in files.read, naming the item and
 * the cause, while every other file is copied; a FIFO is not listed. */
TEST(files_read_failure_is_per_item) {
  char *t = make_tmpdir();
  char *src = tf_asprintf("%s/src", t);
  make_tree(src);
  char *link = tf_asprintf("%s/sub/broken.txt", src);
  ASSERT_OK(symlink("does-not-exist", link));
  char *good = tf_asprintf("%s/sub/good-link.txt", src);
  ASSERT_OK(symlink("c.txt", good));
  char *fifo = tf_asprintf("%s/pipe.txt", src);
  ASSERT_OK(mkfifo(fifo, 0644));
  /* /proc files claim size 0 but have content: the read must notice the
   * file is longer than fstat said rather than return a truncated payload. */
  char *proc = tf_asprintf("%s/proc.txt", src);
  ASSERT_OK(symlink("/proc/self/status", proc));

  runner r;
  char *text = tf_asprintf("files.list dir=%s glob=*.txt ! files.read ! files.write "
                         "dir=%s/out", src, t);
  ASSERT_EQ(run_text(&r, text, 1), SL_EITEMS);
  ASSERT_EQ(sl_run_items_ok(r.run), 6);
  ASSERT_EQ(sl_run_items_failed(r.run), 2);
  for (size_t i = 0; i < 2; i++) {
    const char *it, *st, *msg;
    ASSERT_OK(sl_run_failure(r.run, i, &it, &st, &msg));
    ASSERT_STREQ(st, "files.read");
    if (!strcmp(it, "sub/broken.txt"))
      ASSERT_CONTAINS(msg, "open: No such file or directory");
    else if (!strcmp(it, "proc.txt"))
      ASSERT_CONTAINS(msg, "file grew while being read");
    else
      SL__FAIL("unexpected failure of %s: %s", it, msg);
  }
  runner_free(&r);

  char *out = tf_asprintf("%s/out", t);
  const char *exp[] = {"a.txt", "a-c.txt", "sub/c.txt", "sub/deep/d.txt",
                       "sub/deep/e.txt", "sub/good-link.txt"};
  assert_tree(out, exp, 6);
  char *a = tf_asprintf("%s/sub/c.txt", src), *b = tf_asprintf("%s/sub/good-link.txt", out);
  assert_same_file(a, b);
  free(a);
  free(b);
  free(out);
  free(text);
  free(link);
  free(good);
  free(fifo);
  free(proc);
  rm_rf(t);
  free(src);
  free(t);
}

/* A directory that cannot be opened (here: its path is longer than
 * PATH_MAX, which root cannot bypass the way it bypasses permissions)
 * fails the source with a message naming it; nothing is emitted. */
TEST(files_list_unreadable_dir_fails_run) {
  char *t = make_tmpdir();
  char *src = tf_asprintf("%s/src", t);
  make_tree(src);
  int fd = open(src, O_RDONLY | O_DIRECTORY);
  ASSERT(fd >= 0);
  char name[241];
  memset(name, 'd', 240);
  name[240] = 0;
  for (int i = 0; i < 18; i++) { /* 18 x 241 > PATH_MAX */
    ASSERT_OK(mkdirat(fd, name, 0755));
    int sub = openat(fd, name, O_RDONLY | O_DIRECTORY);
    ASSERT(sub >= 0);
    close(fd);
    fd = sub;
  }
  close(fd);
  runner r;
  char *text = tf_asprintf("files.list dir=%s ! files.read ! files.write dir=%s/out",
                         src, t);
  int rc = run_text(&r, text, 0);
  ASSERT(rc < 0);
  ASSERT_EQ(sl_run_items_ok(r.run), 0);
  ASSERT(sl_run_failure_count(r.run) >= 1);
  const char *it, *st, *msg;
  ASSERT_OK(sl_run_failure(r.run, 0, &it, &st, &msg));
  ASSERT_STREQ(st, "files.list");
  ASSERT_CONTAINS(msg, "cannot read directory");
  ASSERT_CONTAINS(msg, "File name too long");
  ASSERT_CONTAINS(msg, t); /* the path (truncated by the engine if long) */
  runner_free(&r);
  free(text);
  rm_rf(t);
  free(src);
  free(t);
}

/* follow=true descends into symlinked directories but not around a loop;
 * follow=false lists neither. */
TEST(files_list_follow_symlinks) {
  char *t = make_tmpdir();
  char *src = tf_asprintf("%s/src", t);
  make_tree(src);
  char *loop = tf_asprintf("%s/sub/loop", src), *ld = tf_asprintf("%s/linkdir", src);
  ASSERT_OK(symlink(".", loop));
  ASSERT_OK(symlink("sub/deep", ld));
  const char *plain[] = {"a.txt", "a-c.txt", "b.dat", "big.dat", "sub/c.txt",
                         "sub/g.dat", "sub/deep/d.txt", "sub/deep/e.txt"};
  check_copy(t, "", plain, 8);
  const char *followed[] = {"a.txt", "a-c.txt", "b.dat", "big.dat", "sub/c.txt",
                            "sub/g.dat", "sub/deep/d.txt", "sub/deep/e.txt",
                            "linkdir/d.txt", "linkdir/e.txt"};
  check_copy(t, "follow=true", followed, 10);
  free(loop);
  free(ld);
  rm_rf(t);
  free(src);
  free(t);
}

/* Files above max_size fail with both sizes in the message. */
TEST(files_read_max_size) {
  char *t = make_tmpdir();
  char *src = tf_asprintf("%s/src", t);
  make_tree(src);
  runner r;
  char *text = tf_asprintf("files.list dir=%s ! files.read max_size=64KiB ! discard",
                         src);
  ASSERT_EQ(run_text(&r, text, 0), SL_EITEMS);
  ASSERT_EQ(sl_run_items_ok(r.run), 7); /* e.txt is exactly 64 KiB: allowed */
  strlist names = {0};
  failures(&r, "files.read", "file is 17.0 MiB, above max_size=64KiB", &names);
  ASSERT_EQ(names.n, 1);
  ASSERT_STREQ(names.v[0], "big.dat");
  strlist_free(&names);
  runner_free(&r);
  free(text);
  /* One byte less and e.txt is over too. */
  text = tf_asprintf("files.list dir=%s ! files.read max_size=65535 ! discard", src);
  ASSERT_EQ(run_text(&r, text, 0), SL_EITEMS);
  failures(&r, "files.read", "above max_size=65535", &names);
  ASSERT_EQ(names.n, 2);
  ASSERT_STREQ(names.v[0], "big.dat");
  ASSERT_STREQ(names.v[1], "sub/deep/e.txt");
  strlist_free(&names);
  runner_free(&r);
  free(text);
  rm_rf(t);
  free(src);
  free(t);
}

/* files.read refuses payloads that are not paths (e.g. random bytes). */
TEST(files_read_rejects_non_path) {
  runner r;
  ASSERT_EQ(run_text(&r, "gen count=5 size=64 ! files.read ! discard", 0), SL_EITEMS);
  ASSERT_EQ(sl_run_items_failed(r.run), 5);
  strlist names = {0};
  failures(&r, "files.read", "", &names);
  strlist_free(&names);
  runner_free(&r);
}

/* Names that would escape the output directory are refused per item and
 * nothing is written outside it. */
TEST(files_write_unsafe_names) {
  char *t = make_tmpdir();
  char *out = tf_asprintf("%s/out", t);
  ASSERT_OK(mkdir(out, 0755));
  const char *prefixes[] = {"../x", "/abs", "a/../../y", "./z", "sub//w"};
  for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
    runner r;
    char *text = tf_asprintf("gen count=2 size=8 prefix=%s ! files.write dir=%s",
                           prefixes[i], out);
    ASSERT_EQ(run_text(&r, text, 0), SL_EITEMS);
    ASSERT_EQ(sl_run_items_failed(r.run), 2);
    strlist names = {0};
    failures(&r, "files.write", "unsafe output path", &names);
    strlist_free(&names);
    runner_free(&r);
    free(text);
  }
  assert_tree(out, NULL, 0);
  const char *only_out[] = {"out"};
  strlist top = {0};
  DIR *d = opendir(t);
  struct dirent *de;
  while ((de = readdir(d)))
    if (de->d_name[0] != '.') strlist_add(&top, de->d_name);
  closedir(d);
  ASSERT_EQ(top.n, 1);
  ASSERT_STREQ(top.v[0], only_out[0]);
  strlist_free(&top);
  free(out);
  rm_rf(t);
  free(t);
}

/* With mkdir=false a missing subdirectory fails the item (no temporary is
 * left); existing outputs are replaced atomically. */
TEST(files_write_no_mkdir_and_replace) {
  char *t = make_tmpdir();
  runner r;
  char *text = tf_asprintf("gen count=3 size=10 prefix=missing/ ! files.write dir=%s "
                         "mkdir=false", t);
  ASSERT_EQ(run_text(&r, text, 0), SL_EITEMS);
  strlist names = {0};
  failures(&r, "files.write", "No such file or directory", &names);
  ASSERT_EQ(names.n, 3);
  strlist_free(&names);
  runner_free(&r);
  free(text);
  assert_tree(t, NULL, 0);

  /* A directory in the way makes the final rename fail after the
   * temporary was written: the item fails and the temporary goes. */
  char *blocker = tf_asprintf("%s/item-000002", t);
  ASSERT_OK(mkdir(blocker, 0755));
  put_file(blocker, "keep", "k", 1);
  text = tf_asprintf("gen count=3 size=1000 ! files.write dir=%s", t);
  ASSERT_EQ(run_text(&r, text, 0), SL_EITEMS);
  failures(&r, "files.write", "rename", &names);
  ASSERT_EQ(names.n, 1);
  ASSERT_STREQ(names.v[0], "item-000002");
  strlist_free(&names);
  runner_free(&r);
  free(text);
  const char *with_blocker[] = {"item-000001", "item-000002/keep", "item-000003"};
  assert_tree(t, with_blocker, 3);
  rm_rf(blocker);
  free(blocker);

  put_file(t, "item-000001", "old contents that are longer", 28);
  text = tf_asprintf("gen count=2 size=10 ! files.write dir=%s fsync=true", t);
  run_ok(text, 2);
  free(text);
  const char *exp[] = {"item-000001", "item-000002", "item-000003"};
  assert_tree(t, exp, 3);
  char *p = tf_asprintf("%s/item-000001", t);
  struct stat st;
  ASSERT_OK(stat(p, &st));
  ASSERT_EQ(st.st_size, 10);
  free(p);
  rm_rf(t);
  free(t);
}

/* --resume asks files.write which outputs exist: only the missing ones
 * are produced again, with the same bytes. */
TEST(files_write_resume) {
  char *t = make_tmpdir();
  char *text = tf_asprintf("gen count=10 size=300 ! files.write dir=%s", t);
  run_ok(text, 10);
  char *p3 = tf_asprintf("%s/item-000003", t), *p7 = tf_asprintf("%s/item-000007", t);
  size_t n;
  unsigned char *orig = slurp(p3, &n);
  ASSERT_OK(unlink(p3));
  ASSERT_OK(unlink(p7));
  runner r;
  runner_init(&r);
  r.opt.resume = true;
  runner_parse(&r, text);
  ASSERT_EQ(runner_exec(&r), 0);
  ASSERT_EQ(sl_run_items_ok(r.run), 2);
  ASSERT_EQ(sl_run_items_skipped(r.run), 8);
  runner_free(&r);
  size_t n2;
  unsigned char *again = slurp(p3, &n2);
  ASSERT(again);
  ASSERT_EQ(n2, n);
  ASSERT(memcmp(orig, again, n) == 0);
  free(orig);
  free(again);
  free(p3);
  free(p7);
  free(text);
  rm_rf(t);
  free(t);
}

/* ---- stress ---- */

/* Many workers writing into the same not-yet-existing nested directories
 * race on mkdir; every item must still land. */
TEST(files_write_mkdir_race) {
  char *t = make_tmpdir();
  for (int iter = 0; iter < 8; iter++) {
    char *text = tf_asprintf("gen count=64 size=%d prefix=d%d/e/f/ ! files.write "
                           "dir=%s/o%d workers=8", 16 * iter, iter, t, iter);
    run_ok(text, 64);
    char *dir = tf_asprintf("%s/o%d/d%d/e/f", t, iter, iter);
    strlist got = {0};
    list_tree_at(dir, "", &got);
    ASSERT_EQ(got.n, 64);
    for (size_t i = 0; i < got.n; i++) ASSERT(!strstr(got.v[i], "sluice-tmp"));
    strlist_free(&got);
    free(dir);
    free(text);
  }
  rm_rf(t);
  free(t);
}

typedef struct cancel_ctx {
  sl_run *run;
  const char *out;
  int min_files;
} cancel_ctx;

static int count_files(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d))) n += strncmp(de->d_name, "item-", 5) == 0;
  closedir(d);
  return n;
}

/* Cancels the run once a few outputs exist (polling; the assertions do not
 * depend on when exactly the cancel lands). */
static void *canceller(void *arg) {
  cancel_ctx *c = arg;
  uint64_t deadline = sl_now_ns() + UINT64_C(20000000000);
  while (count_files(c->out) < c->min_files && sl_now_ns() < deadline) {
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL);
  }
  sl_run_cancel(c->run);
  return NULL;
}

/* Canceling mid-run leaves only complete outputs and no temporaries. */
TEST(files_write_cancel_leaves_no_temporaries) {
  for (int iter = 0; iter < 3; iter++) {
    char *t = make_tmpdir();
    const size_t size = iter == 1 ? (size_t)20 << 20 : (size_t)3 << 20;
    runner r;
    runner_init(&r);
    char *text = tf_asprintf("gen count=400 size=%zu ! identity sleep_us=%d ! "
                           "files.write dir=%s workers=4", size, 500 * iter, t);
    runner_parse(&r, text);
    ASSERT_OK(sl_run_create(&r.run, r.p, &r.opt));
    cancel_ctx c = {r.run, t, 2 + iter * 3};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, canceller, &c), 0);
    int rc = sl_run_execute(r.run);
    pthread_join(th, NULL);
    ASSERT(rc == SL_ECANCELED || rc == 0);
    strlist got = {0};
    list_tree_at(t, "", &got);
    fprintf(stderr, "  run returned %s with %zu of 400 outputs\n",
            sl_err_name(rc), got.n);
    for (size_t i = 0; i < got.n; i++) {
      ASSERT(!strstr(got.v[i], "sluice-tmp"));
      char *p = tf_asprintf("%s/%s", t, got.v[i]);
      struct stat st;
      ASSERT_OK(stat(p, &st));
      ASSERT_EQ(st.st_size, size);
      free(p);
    }
    ASSERT_EQ(got.n, sl_run_items_ok(r.run));
    strlist_free(&got);
    runner_free(&r);
    free(text);
    rm_rf(t);
    free(t);
  }
}

static const sl_test_case cases[] = {
    SL_CASE(gen_write_deterministic, "e2e"),
    SL_CASE(gen_parallel_fill_matches_serial, "e2e"),
    SL_CASE(gen_empty_items_and_prefix_dirs, "e2e"),
    SL_CASE(gen_identity_discard_counts, "e2e"),
    SL_CASE(param_errors_at_check_time, "unit"),
    SL_CASE(identity_fail_every, "e2e"),
    SL_CASE(identity_fail_attempts_with_retries, "e2e"),
    SL_CASE(identity_spin_and_sleep, "e2e"),
    SL_CASE(files_copy_tree, "e2e"),
    SL_CASE(files_list_order, "e2e"),
    SL_CASE(files_list_missing_dir, "unit"),
    SL_CASE(files_list_unreadable_dir_fails_run, "e2e"),
    SL_CASE(files_list_follow_symlinks, "e2e"),
    SL_CASE(files_read_failure_is_per_item, "e2e"),
    SL_CASE(files_read_max_size, "e2e"),
    SL_CASE(files_read_rejects_non_path, "e2e"),
    SL_CASE(files_write_unsafe_names, "e2e"),
    SL_CASE(files_write_no_mkdir_and_replace, "e2e"),
    SL_CASE(files_write_resume, "e2e"),
    SL_CASE(files_write_mkdir_race, "stress"),
    SL_CASE(files_write_cancel_leaves_no_temporaries, "stress"),
};
SL_TEST_MAIN(cases)
