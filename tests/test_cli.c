/*
 * test_cli.c -- end-to-end tests of the `sluice` command: exact plan output
 * and parser messages, exit statuses, error policy, interrupt + resume with
 * byte-identical outputs, and bounded memory under backpressure. The binary
 * comes from $SLUICE_BIN (set by ctest).
 */
#include "test.h"
#include "sluice.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static const char *bin(void) {
  const char *b = getenv("SLUICE_BIN");
  if (!b) SL__FAIL("SLUICE_BIN is not set (run through ctest)");
  return b;
}

typedef struct proc {
  pid_t pid;
  char out_path[64], err_path[64];
} proc;

/* Starts `sluice args...` with stdin from `in_path` (or /dev/null). */
static proc start(const char *in_path, const char *const *args) {
  proc p;
  static int counter;
  snprintf(p.out_path, sizeof p.out_path, "/tmp/sluice-cli-%d-%d.out", getpid(), counter);
  snprintf(p.err_path, sizeof p.err_path, "/tmp/sluice-cli-%d-%d.err", getpid(), counter++);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, in_path ? in_path : "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, p.out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&fa, 2, p.err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  const char *argv[64];
  size_t n = 0;
  argv[n++] = bin();
  for (; args[n - 1] && n < 63; n++) argv[n] = args[n - 1];
  argv[n] = NULL;
  int rc = posix_spawn(&p.pid, bin(), &fa, NULL, (char *const *)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc) SL__FAIL("posix_spawn: %s", strerror(rc));
  return p;
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return calloc(1, 1);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  size_t got = fread(s, 1, (size_t)n, f);
  s[got] = '\0';
  fclose(f);
  return s;
}

typedef struct result {
  int status; /* exit status, or 128+signal */
  char *out, *err;
} result;

static result finish(proc p) {
  int st;
  ASSERT_EQ(waitpid(p.pid, &st, 0), p.pid);
  result r;
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.out = slurp(p.out_path);
  r.err = slurp(p.err_path);
  unlink(p.out_path);
  unlink(p.err_path);
  return r;
}

static result run_cli(const char *in_path, const char *const *args) {
  return finish(start(in_path, args));
}

static void free_result(result *r) {
  free(r->out);
  free(r->err);
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  ASSERT(f);
  fputs(text, f);
  fclose(f);
}

static char *make_tmpdir(void) {
  char *d = strdup("/tmp/sluice-e2e-XXXXXX");
  ASSERT(mkdtemp(d));
  return d;
}

static void remove_tree(const char *path) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
  ASSERT_EQ(system(cmd), 0);
}

/* ---- tests ---- */

TEST(cli_version_and_help) {
  result r = run_cli(NULL, (const char *[]){"--version", NULL});
  ASSERT_EQ(r.status, 0);
  ASSERT_STREQ(r.out, "sluice " SL_VERSION_STRING "\n");
  free_result(&r);
  r = run_cli(NULL, (const char *[]){"run", "--help", NULL});
  ASSERT_EQ(r.status, 0);
  ASSERT_CONTAINS(r.out, "--on-error POLICY");
  free_result(&r);
  r = run_cli(NULL, (const char *[]){"frobnicate", NULL});
  ASSERT_EQ(r.status, 2);
  ASSERT_CONTAINS(r.err, "unknown command 'frobnicate'");
  free_result(&r);
  r = run_cli(NULL, (const char *[]){"run", "x.pipe", "--bogus", NULL});
  ASSERT_EQ(r.status, 2);
  ASSERT_CONTAINS(r.err, "unknown option '--bogus'");
  free_result(&r);
}

TEST(cli_stages) {
  result r = run_cli(NULL, (const char *[]){"stages", NULL});
  ASSERT_EQ(r.status, 0);
  const char *names[] = {"gen", "identity", "discard", "files.list", "files.read", "files.write"};
  for (size_t i = 0; i < 6; i++) ASSERT_CONTAINS(r.out, names[i]);
  free_result(&r);
  r = run_cli(NULL, (const char *[]){"stages", "gen", NULL});
  ASSERT_EQ(r.status, 0);
  ASSERT_CONTAINS(r.out, "count");
  ASSERT_CONTAINS(r.out, "seed");
  ASSERT_CONTAINS(r.out, "order");
  free_result(&r);
  r = run_cli(NULL, (const char *[]){"stages", "nope", NULL});
  ASSERT_EQ(r.status, 2);
  ASSERT_CONTAINS(r.err, "unknown stage 'nope'");
  free_result(&r);
}

TEST(cli_plan_exact) {
  char *d = make_tmpdir();
  char path[256];
  snprintf(path, sizeof path, "%s/p.pipe", d);
  write_file(path, "# three stages\ngen count=10 size=1MiB\n! identity\n! discard\n");
  result r = run_cli(NULL, (const char *[]){"plan", path, "--threads", "2", NULL});
  ASSERT_EQ(r.status, 0);
  char want[2048];
  snprintf(want, sizeof want,
           "pipeline %s: 3 stages, 2 threads\n"
           "  #   stage            class  workers input   output  order    queue\n"
           "  1   gen              cpu    1       -       bytes   source   128\n"
           "  2   identity         cpu    2       bytes   bytes   source   fused\n"
           "  3   discard          cpu    2       bytes   -       source   -\n"
           "memory: arena budget 1.0 GiB (--memory), queues up to 16.0 MiB each (--queue-bytes)\n"
           "worst case: 35.2 MiB of payload (queues 17.0 MiB + in flight 18.2 MiB, capped at twice the budget)\n",
           path);
  ASSERT_STREQ(r.out, want);
  free_result(&r);
  /* Unfused, identity's 1 MiB items wait in a queue of their own. */
  r = run_cli(NULL, (const char *[]){"plan", path, "--threads", "2", "--no-fuse", NULL});
  ASSERT_EQ(r.status, 0);
  snprintf(want, sizeof want,
           "pipeline %s: 3 stages, 2 threads\n"
           "  #   stage            class  workers input   output  order    queue\n"
           "  1   gen              cpu    1       -       bytes   source   128\n"
           "  2   identity         cpu    2       bytes   bytes   source   128\n"
           "  3   discard          cpu    2       bytes   -       source   -\n"
           "memory: arena budget 1.0 GiB (--memory), queues up to 16.0 MiB each (--queue-bytes)\n"
           "worst case: 52.2 MiB of payload (queues 34.0 MiB + in flight 18.2 MiB, capped at twice the budget)\n",
           path);
  ASSERT_STREQ(r.out, want);
  free_result(&r);
  remove_tree(d);
  free(d);
}

TEST(cli_parse_errors_exact) {
  char *d = make_tmpdir();
  char path[256];
  snprintf(path, sizeof path, "%s/bad.pipe", d);
  write_file(path, "gen cont=5\n! identiy\n! discard\n");
  result r = run_cli(NULL, (const char *[]){"run", path, NULL});
  ASSERT_EQ(r.status, 2);
  char want[1024];
  snprintf(want, sizeof want,
           "%s:1:5: stage 'gen': unknown parameter 'cont'\n"
           "  hint: did you mean 'count'?\n"
           "%s:2:3: unknown stage 'identiy'\n"
           "  hint: did you mean 'identity'?\n",
           path, path);
  ASSERT_STREQ(r.err, want);
  free_result(&r);

  /* Kinds are checked before anything runs, from stdin too. */
  write_file(path, "gen ! discard ! identity\n");
  r = run_cli(path, (const char *[]){"plan", "-", NULL});
  ASSERT_EQ(r.status, 2);
  ASSERT_STREQ(r.err, "<stdin>:1:17: stage 'identity' cannot follow 'discard': 'discard' produces nothing\n"
                      "<stdin>:1:17: pipeline must end with a sink, 'identity' produces any\n");
  free_result(&r);

  /* Undefined variable. */
  write_file(path, "gen count=${n} ! discard\n");
  r = run_cli(NULL, (const char *[]){"plan", path, NULL});
  ASSERT_EQ(r.status, 2);
  ASSERT_CONTAINS(r.err, ":1:11: ");
  ASSERT_CONTAINS(r.err, "'n'");
  free_result(&r);
  r = run_cli(NULL, (const char *[]){"plan", path, "n=7", NULL});
  ASSERT_EQ(r.status, 0);
  free_result(&r);
  remove_tree(d);
  free(d);
}

static size_t count_lines_with(const char *text, const char *needle) {
  size_t n = 0;
  for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle)) n++;
  return n;
}

TEST(cli_error_policy_skip) {
  char *d = make_tmpdir();
  char stats[256];
  snprintf(stats, sizeof stats, "%s/s.json", d);
  result r = run_cli(NULL, (const char *[]){"run", "-", "--stats-json", stats, NULL});
  free_result(&r); /* empty stdin: a pipeline error */
  char pipe_path[256];
  snprintf(pipe_path, sizeof pipe_path, "%s/f.pipe", d);
  write_file(pipe_path, "gen count=200 size=100 ! identity fail_every=10 ! discard\n");
  r = run_cli(NULL, (const char *[]){"run", pipe_path, "--stats-json", stats, "--on-error=skip", NULL});
  ASSERT_EQ(r.status, 1);
  ASSERT_CONTAINS(r.err, "failures (20):");
  for (int k = 10; k <= 200; k += 10) {
    char line[128];
    snprintf(line, sizeof line, "  item-%06d: identity: injected failure (fail_every=10)\n", k);
    ASSERT_CONTAINS(r.err, line);
  }
  char *js = slurp(stats);
  ASSERT_CONTAINS(js, "\"items_ok\": 180");
  ASSERT_CONTAINS(js, "\"items_failed\": 20");
  ASSERT_EQ(count_lines_with(js, "\"stage\": \"identity\""), 20);
  free(js);
  free_result(&r);
  remove_tree(d);
  free(d);
}

TEST(cli_error_policy_stop) {
  char *d = make_tmpdir();
  char pipe_path[256];
  snprintf(pipe_path, sizeof pipe_path, "%s/f.pipe", d);
  write_file(pipe_path, "gen count=1000000 size=100 ! identity fail_every=10 ! discard\n");
  uint64_t t0 = sl_now_ns();
  result r = run_cli(NULL, (const char *[]){"run", pipe_path, "--on-error", "stop", NULL});
  ASSERT_EQ(r.status, 1);
  ASSERT_LE(sl_now_ns() - t0, 10000000000ull);
  ASSERT_CONTAINS(r.err, "sluice: stopped: item 'item-0000");
  ASSERT_CONTAINS(r.err, "failed in stage 'identity': injected failure (fail_every=10)");
  free_result(&r);
  remove_tree(d);
  free(d);
}

static size_t count_files(const char *dir, size_t *temps) {
  DIR *dd = opendir(dir);
  if (!dd) return 0;
  size_t n = 0;
  *temps = 0;
  struct dirent *e;
  while ((e = readdir(dd))) {
    if (e->d_name[0] == '.' && strstr(e->d_name, "sluice-tmp")) (*temps)++;
    else if (e->d_name[0] != '.') n++;
  }
  closedir(dd);
  return n;
}

static bool same_file(const char *a, const char *b) {
  FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
  bool same = fa && fb;
  while (same) {
    int ca = getc(fa), cb = getc(fb);
    if (ca != cb) same = false;
    if (ca == EOF || cb == EOF) break;
  }
  if (fa) fclose(fa);
  if (fb) fclose(fb);
  return same;
}

/* Interrupt a gen ! files.write run with SIGINT, then --resume it: no
 * temporary or partial file, and outputs byte-identical to a clean run. */
TEST(cli_interrupt_resume) {
  char *d = make_tmpdir();
  char pipe_path[256], out1[256], out2[256], journal[256];
  snprintf(pipe_path, sizeof pipe_path, "%s/w.pipe", d);
  snprintf(out1, sizeof out1, "%s/interrupted", d);
  snprintf(out2, sizeof out2, "%s/clean", d);
  snprintf(journal, sizeof journal, "%s/journal", d);
  write_file(pipe_path, "gen count=600 size=200KiB seed=7 ! identity sleep_us=3000 ! files.write dir=${out} suffix=.bin\n");
  char outvar1[300], outvar2[300];
  snprintf(outvar1, sizeof outvar1, "out=%s", out1);
  snprintf(outvar2, sizeof outvar2, "out=%s", out2);
  proc p = start(NULL, (const char *[]){"run", pipe_path, outvar1, "--journal", journal, "--threads", "2", NULL});
  /* Wait (polling the condition, bounded) until some outputs exist. */
  size_t temps = 0;
  for (int i = 0; i < 2000 && count_files(out1, &temps) < 20; i++) {
    struct timespec ts = {0, 5000000};
    nanosleep(&ts, NULL);
  }
  kill(p.pid, SIGINT);
  result r = finish(p);
  ASSERT_EQ(r.status, 130);
  size_t done = count_files(out1, &temps);
  ASSERT_EQ(temps, 0);
  ASSERT(done >= 20 && done < 600);
  free_result(&r);
  r = run_cli(NULL, (const char *[]){"run", pipe_path, outvar1, "--journal", journal, "--resume", NULL});
  ASSERT_EQ(r.status, 0);
  free_result(&r);
  r = run_cli(NULL, (const char *[]){"run", pipe_path, outvar2, NULL});
  ASSERT_EQ(r.status, 0);
  free_result(&r);
  ASSERT_EQ(count_files(out1, &temps), 600);
  ASSERT_EQ(temps, 0);
  for (int i = 1; i <= 600; i++) {
    char a[400], b[400];
    snprintf(a, sizeof a, "%s/item-%06d.bin", out1, i);
    snprintf(b, sizeof b, "%s/item-%06d.bin", out2, i);
    if (!same_file(a, b)) SL__FAIL("%s differs from %s", a, b);
  }
  remove_tree(d);
  free(d);
}

typedef struct mem_peaks {
  uint64_t rss, payload; /* peak_rss_bytes, memory_peak_bytes */
} mem_peaks;

static uint64_t json_field(const char *js, const char *key) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\": ", key);
  const char *k = strstr(js, pat);
  ASSERT(k);
  return strtoull(k + strlen(pat), NULL, 10);
}

static mem_peaks peaks_of_run(const char *dir, int count) {
  char pipe_path[256], stats[256], text[256];
  snprintf(pipe_path, sizeof pipe_path, "%s/bp.pipe", dir);
  snprintf(stats, sizeof stats, "%s/bp-%d.json", dir, count);
  snprintf(text, sizeof text, "gen count=%d size=1MiB ! identity sleep_us=1000 ! discard\n", count);
  write_file(pipe_path, text);
  result r = run_cli(NULL, (const char *[]){"run", pipe_path, "--stats-json", stats, "--threads", "2", NULL});
  ASSERT_EQ(r.status, 0);
  free_result(&r);
  char *js = slurp(stats);
  mem_peaks p = {json_field(js, "peak_rss_bytes"), json_field(js, "memory_peak_bytes")};
  free(js);
  return p;
}

/* The worst case of payload that `sluice plan` prints for the pipeline in
 * `dir`, in bytes. */
static uint64_t plan_bound(const char *dir) {
  char pipe_path[256];
  snprintf(pipe_path, sizeof pipe_path, "%s/bp.pipe", dir);
  result r = run_cli(NULL, (const char *[]){"plan", pipe_path, "--threads", "2", NULL});
  ASSERT_EQ(r.status, 0);
  const char *w = strstr(r.out, "worst case: ");
  ASSERT(w);
  double mib = strtod(w + strlen("worst case: "), NULL);
  ASSERT(strstr(w, " MiB of payload"));
  free_result(&r);
  return (uint64_t)((mib + 0.05) * 1048576.0); /* printed to 0.1 MiB */
}

/* Backpressure: memory does not grow with the number of items. The payload
 * alive at once (the arena's peak) stays within the worst case `sluice
 * plan` prints, for 1000 and for 4000 items. Peak RSS also counts every
 * shared-memory page the arena's segments have had touched, and a longer
 * run touches more of the segments it already has (measured: 37-43 MiB
 * for 1000 items against 39-45 MiB for 4000), so it gets 20% or 16 MiB,
 * whichever is more: 4000 items of 1 MiB held at once would be 4 GiB. The
 * smaller run is long enough to reach the steady state (200 against 2000
 * items of 2 ms was bimodal under ASan). */
TEST(cli_backpressure_rss) {
  char *d = make_tmpdir();
  mem_peaks small = peaks_of_run(d, 1000), large = peaks_of_run(d, 4000);
  uint64_t bound = plan_bound(d);
  fprintf(stderr, "peak RSS: N=1000 %llu MiB, N=4000 %llu MiB; payload %.1f / %.1f MiB, "
          "plan's worst case %.1f MiB\n",
          (unsigned long long)(small.rss >> 20), (unsigned long long)(large.rss >> 20),
          (double)small.payload / 1048576.0, (double)large.payload / 1048576.0,
          (double)bound / 1048576.0);
  /* The figure is real: at least one 1 MiB item was alive (under ASan gen
   * is the slow stage and the queues stay nearly empty: 4-5 MiB). */
  ASSERT(small.payload >= (uint64_t)1 << 20 && large.payload >= (uint64_t)1 << 20);
  ASSERT_LE(small.payload, bound);
  ASSERT_LE(large.payload, bound);
  uint64_t slack = small.rss / 5 > ((uint64_t)16 << 20) ? small.rss / 5 : (uint64_t)16 << 20;
  ASSERT_LE(large.rss, small.rss + slack);
  remove_tree(d);
  free(d);
}

static const sl_test_case cases[] = {
    SL_CASE(cli_version_and_help, "e2e"),
    SL_CASE(cli_stages, "e2e"),
    SL_CASE(cli_plan_exact, "e2e"),
    SL_CASE(cli_parse_errors_exact, "e2e"),
    SL_CASE(cli_error_policy_skip, "e2e"),
    SL_CASE(cli_error_policy_stop, "e2e"),
    SL_CASE(cli_interrupt_resume, "e2e"),
    SL_CASE(cli_backpressure_rss, "e2e,serial"),
};
SL_TEST_MAIN(cases)
