/*
 * test_passes.c -- pipeline files of several passes (`---` lines) and the
 * `capture` stage that carries a result from one pass to the next.
 *
 * The expected values are computed here, in C, from the same generated
 * rows, independently of sluice: a mean with long double accumulation, and
 * per-category counts of the rows above it.
 */
#include "test.h"
#include "sluice.h"
#include "test_files.h"

#include <math.h>

static const char *bin(void) {
  const char *b = getenv("SLUICE_BIN");
  if (!b) SL__FAIL("SLUICE_BIN is not set (run through ctest)");
  return b;
}

/* Runs `sluice ARGS` in dir, stderr to dir/err.txt. */
static int sluice(const char *dir, const char *args) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s 2>err.txt >out.txt", dir, bin(), args);
  return tf_sh(cmd);
}

static char *read_in(const char *dir, const char *name) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  return tf_slurp(p);
}

static void write_in(const char *dir, const char *name, const char *text) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  tf_write(p, text);
}

enum { ROWS = 5000, CATS = 3 };

/* Rows "i,x,cat" with x in [-50, 50); returns the x values in xs. */
static void make_csv(const char *dir, double *xs, int *cat) {
  char p[512];
  snprintf(p, sizeof p, "%s/d.csv", dir);
  FILE *f = fopen(p, "w");
  ASSERT(f);
  fputs("i,x,cat\n", f);
  uint64_t z = 7;
  for (int i = 0; i < ROWS; i++) {
    z = z * 6364136223846793005ULL + 1442695040888963407ULL;
    int v = (int)((z >> 33) % 1000000) - 500000;
    xs[i] = v / 10000.0;
    cat[i] = (int)((z >> 13) % CATS);
    fprintf(f, "%d,%.4f,c%d\n", i, xs[i], cat[i]);
  }
  fclose(f);
}

TEST(second_pass_uses_first_pass_result) {
  char *d = tf_mkdtemp("sluice-passes");
  static double xs[ROWS];
  static int cat[ROWS];
  make_csv(d, xs, cat);
  write_in(d, "two.pipe",
           "# pass 1: the mean\n"
           "csv.read file=${in} ! csv.parse ! aggregate aggs=mean(x),count\n"
           "! capture name=s\n"
           "  ---  \n"
           "# pass 2: rows above it, per category\n"
           "csv.read file=${in} ! csv.parse ! filter expr=\"x > ${s_mean_x}\"\n"
           "! groupby keys=cat aggs=count ! csv.write file=${out}\n");
  ASSERT_EQ(sluice(d, "run two.pipe in=d.csv out=r.csv"), 0);
  long double sum = 0;
  for (int i = 0; i < ROWS; i++) sum += xs[i];
  double mean = (double)(sum / ROWS);
  int above[CATS] = {0};
  for (int i = 0; i < ROWS; i++)
    if (xs[i] > mean) above[cat[i]]++;
  char want[256];
  snprintf(want, sizeof want, "cat,count\nc0,%d\nc1,%d\nc2,%d\n", above[0], above[1],
           above[2]);
  char *got = read_in(d, "r.csv");
  ASSERT(got);
  ASSERT_STREQ(got, want);
  free(got);
  char *err = read_in(d, "err.txt");
  ASSERT(err && strstr(err, "pass 1 of 2") && strstr(err, "pass 2 of 2"));
  free(err);
  tf_rmtree(d);
  free(d);
}

TEST(errors_name_the_pass_line_and_cause) {
  char *d = tf_mkdtemp("sluice-passes");
  static double xs[ROWS];
  static int cat[ROWS];
  make_csv(d, xs, cat);
  /* A variable nobody captured: reported at its line, after pass 1 ran. */
  write_in(d, "typo.pipe",
           "csv.read file=${in} ! csv.parse ! aggregate aggs=mean(x) ! capture name=s\n"
           "---\n"
           "csv.read file=${in} ! csv.parse ! filter expr=\"x > ${s_mean}\"\n"
           "! csv.write file=${out}\n");
  ASSERT_EQ(sluice(d, "run typo.pipe in=d.csv out=r.csv"), 2);
  char *err = read_in(d, "err.txt");
  ASSERT(err && strstr(err, "typo.pipe:3:"));
  ASSERT(strstr(err, "s_mean"));
  free(err);
  ASSERT(!read_in(d, "r.csv"));
  /* capture keeps one row: a group-by result of three is an error, and
   * pass 2 does not run. */
  write_in(d, "rows.pipe",
           "csv.read file=${in} ! csv.parse ! groupby keys=cat aggs=count ! capture name=s\n"
           "---\n"
           "csv.read file=${in} ! csv.parse ! csv.write file=${out}\n");
  ASSERT_EQ(sluice(d, "run rows.pipe in=d.csv out=r.csv"), 1);
  err = read_in(d, "err.txt");
  ASSERT(err && strstr(err, "capture keeps one row (a reduction's result), got 3 rows"));
  ASSERT(!strstr(err, "pass 2 of 2"));
  free(err);
  ASSERT(!read_in(d, "r.csv"));
  /* Bad names are rejected before anything runs. */
  write_in(d, "name.pipe", "csv.read file=${in} ! csv.parse ! aggregate aggs=count "
                           "! capture name=a-b\n");
  ASSERT_EQ(sluice(d, "run name.pipe in=d.csv"), 2);
  err = read_in(d, "err.txt");
  ASSERT(err && strstr(err, "name.pipe:1:") &&
         strstr(err, "only letters, digits and _ may appear in a variable name"));
  free(err);
  tf_rmtree(d);
  free(d);
}

TEST(plan_shows_first_pass_and_defers_the_rest) {
  char *d = tf_mkdtemp("sluice-passes");
  write_in(d, "two.pipe",
           "gen count=10 ! discard\n---\ngen count=${n} ! discard\n");
  ASSERT_EQ(sluice(d, "plan two.pipe"), 0);
  char *out = read_in(d, "out.txt");
  ASSERT(out && strstr(out, "gen") &&
         strstr(out, "pass 2: planned when the passes before it have run"));
  free(out);
  tf_rmtree(d);
  free(d);
}

/* String results pass whole (no length cap); one with a line break cannot
 * be a variable and is an error, not a truncated or split value. */
TEST(captured_strings_whole_or_refused) {
  char *d = tf_mkdtemp("sluice-passes");
  char *big = malloc(3001);
  ASSERT(big);
  memset(big, 'a', 3000);
  big[3000] = '\0';
  size_t n = strlen(big) + 64;
  char *csv = malloc(n);
  ASSERT(csv);
  snprintf(csv, n, "s\n%s\n", big);
  write_in(d, "big.csv", csv);
  write_in(d, "nl.csv", "s\n\"two\nlines\"\n");
  write_in(d, "two.pipe",
           "csv.read file=${in} ! csv.parse ! aggregate aggs=max(s) ! capture name=c\n"
           "---\n"
           "csv.read file=${in} ! csv.parse ! filter expr=\"s == \\\"${c_max_s}\\\"\"\n"
           "! aggregate aggs=count ! csv.write file=${out}\n");
  ASSERT_EQ(sluice(d, "run two.pipe in=big.csv out=r.csv"), 0);
  char *got = read_in(d, "r.csv");
  ASSERT(got);
  ASSERT_STREQ(got, "count\n1\n"); /* the 3000-byte value matched itself */
  free(got);
  ASSERT_EQ(sluice(d, "run two.pipe in=nl.csv out=r2.csv"), 1);
  char *err = read_in(d, "err.txt");
  ASSERT(err && strstr(err, "column \"max(s)\": a value with a line break or a NUL "
                           "byte cannot become a variable"));
  ASSERT(!strstr(err, "pass 2 of 2"));
  free(err);
  ASSERT(!read_in(d, "r2.csv"));
  free(csv);
  free(big);
  tf_rmtree(d);
  free(d);
}

static const sl_test_case cases[] = {
    SL_CASE(captured_strings_whole_or_refused, "e2e"),
    SL_CASE(second_pass_uses_first_pass_result, "e2e"),
    SL_CASE(errors_name_the_pass_line_and_cause, "e2e"),
    SL_CASE(plan_shows_first_pass_and_defers_the_rest, "e2e"),
};
SL_TEST_MAIN(cases)
