/*
 * test_mpi.c -- distributed runs: the same pipeline under `mpirun -np N`.
 *
 * What must hold (sluice.h, "Distributed runs"): reduced results are
 * byte-identical for 1, 2 and 3 ranks (partials merged on rank 0 in item
 * order); per-item outputs are made once each, by the rank that owns the
 * item; a failed item leaves no reduced output and a non-zero exit on the
 * job, with the cause; a sink that would see only one rank's share refuses
 * to start; a rank's fatal error ends the job instead of hanging it.
 *
 * Built only with MPI; mpirun is CMake's MPIEXEC_EXECUTABLE (SLUICE_MPIEXEC). Leak checking is off in the ranks: Open MPI itself
 * leaks at exit, which would make every ASan run fail.
 */
#include "test.h"
#include "sluice.h"
#include "test_files.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Runs `sluice run ARGS` on `np` ranks (np 0: without mpirun) in `dir`,
 * stderr to dir/err.txt. @return the exit status. */
static int sluice_np(const char *dir, int np, const char *args) {
  char cmd[4096];
  if (np == 0)
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' run %s 2>err.txt >/dev/null", dir,
             tf_env("SLUICE_BIN"), args);
  else
    snprintf(cmd, sizeof cmd,
             "cd '%s' && ASAN_OPTIONS=detect_leaks=0 OMPI_MCA_rmaps_base_oversubscribe=1 "
             "timeout 120 '%s' --allow-run-as-root --oversubscribe -np %d '%s' run %s "
             "2>err.txt >/dev/null",
             dir, SLUICE_MPIEXEC, np, tf_env("SLUICE_BIN"), args);
  return tf_sh(cmd);
}

/* A CSV of `rows` rows with quoted commas, doubled quotes and an embedded
 * newline, so that chunk cuts must respect quoting; deterministic. */
static void write_csv(const char *path, int rows, int bad_row) {
  FILE *f = fopen(path, "w");
  ASSERT(f);
  static const char *cats[] = {"Toys", "\"Garden, Outdoor\"", "\"Say \"\"hi\"\"\"",
                               "\"two\nlines\"", "Food"};
  fputs("id,key,x,category\n", f);
  uint64_t z = 42;
  for (int i = 0; i < rows; i++) {
    z = z * 6364136223846793005ULL + 1442695040888963407ULL;
    int key = (int)((z >> 33) % 37);
    double x = (double)((int64_t)((z >> 11) % 2000001) - 1000000) / 10000.0;
    if (i == bad_row) fprintf(f, "%d,%d,not-a-number,%s\n", i, key, cats[i % 5]);
    else fprintf(f, "%d,%d,%.4f,%s\n", i, key, x, cats[(z >> 20) % 5]);
  }
  fclose(f);
}

#define GROUP_PIPE                                                             \
  "csv.read file=${in} chunk=64KiB\n! csv.parse\n"                             \
  "! groupby keys=${keys} aggs=count,sum(x),mean(x),std(x),min(x),max(x),"     \
  "count_distinct(category),first(category),last(x)\n! csv.write file=${out}\n"

TEST(groupby_identical_for_any_rank_count) {
  char *d = tf_mkdtemp("sluice-mpi");
  char p[512];
  snprintf(p, sizeof p, "%s/d.csv", d);
  write_csv(p, 60000, -1); /* ~1.8 MiB: ~28 chunks */
  snprintf(p, sizeof p, "%s/g.pipe", d);
  tf_write(p, GROUP_PIPE);
  const char *keys[] = {"key", "category"};
  for (size_t k = 0; k < 2; k++) {
    char args[256], out[512];
    snprintf(args, sizeof args, "g.pipe in=d.csv keys=%s out=r0.csv --threads 2", keys[k]);
    ASSERT_EQ(sluice_np(d, 0, args), 0);
    snprintf(out, sizeof out, "%s/r0.csv", d);
    char *want = tf_slurp(out);
    ASSERT(want && strlen(want) > 100);
    for (int np = 1; np <= 3; np++) {
      snprintf(args, sizeof args, "g.pipe in=d.csv keys=%s out=r%d.csv --threads 1",
               keys[k], np);
      int rc = sluice_np(d, np, args);
      snprintf(out, sizeof out, "%s/err.txt", d);
      char *err = tf_slurp(out);
      if (rc != 0) SL__FAIL("-np %d: exit %d\n%s", np, rc, err ? err : "");
      free(err);
      snprintf(out, sizeof out, "%s/r%d.csv", d, np);
      char *got = tf_slurp(out);
      ASSERT(got);
      ASSERT_STREQ(got, want);
      free(got);
    }
    free(want);
  }
  tf_rmtree(d);
  free(d);
}

TEST(failed_item_leaves_no_reduced_output) {
  char *d = tf_mkdtemp("sluice-mpi");
  char p[512];
  snprintf(p, sizeof p, "%s/d.csv", d);
  write_csv(p, 60000, 45001); /* a chunk near the end: rank 1 or 2 has it */
  snprintf(p, sizeof p, "%s/g.pipe", d);
  tf_write(p, GROUP_PIPE);
  /* The message names the bad row's line (quoted newlines count). */
  snprintf(p, sizeof p, "%s/d.csv", d);
  char *text = tf_slurp(p);
  ASSERT(text);
  const char *bad = strstr(text, "not-a-number");
  ASSERT(bad);
  unsigned line = 1;
  for (const char *c = text; c < bad; c++) line += *c == '\n';
  free(text);
  char want[128];
  snprintf(want, sizeof want, "d.csv:%u: column \"x\": \"not-a-number\" is not a float64", line);
  for (int np = 2; np <= 3; np++) {
    int rc = sluice_np(d, np, "g.pipe in=d.csv keys=key out=r.csv --threads 1");
    ASSERT(rc != 0 && rc < 124); /* failed, not hung or killed */
    snprintf(p, sizeof p, "%s/r.csv", d);
    ASSERT(!tf_exists(p));
    snprintf(p, sizeof p, "%s/err.txt", d);
    char *err = tf_slurp(p);
    ASSERT(err && strstr(err, want));
    ASSERT(strstr(err, "failed upstream; no result"));
    free(err);
  }
  tf_rmtree(d);
  free(d);
}

TEST(single_file_sink_needs_a_reduction) {
  char *d = tf_mkdtemp("sluice-mpi");
  char p[512];
  snprintf(p, sizeof p, "%s/d.csv", d);
  write_csv(p, 2000, -1);
  snprintf(p, sizeof p, "%s/c.pipe", d);
  tf_write(p, "csv.read file=${in} chunk=64KiB ! csv.parse ! csv.write file=${out}\n");
  int rc = sluice_np(d, 2, "c.pipe in=d.csv out=c.csv");
  ASSERT(rc != 0 && rc < 124);
  snprintf(p, sizeof p, "%s/c.csv", d);
  ASSERT(!tf_exists(p));
  snprintf(p, sizeof p, "%s/err.txt", d);
  char *err = tf_slurp(p);
  ASSERT(err && strstr(err, "sees only its share of the items"));
  free(err);
  tf_rmtree(d);
  free(d);
}

TEST(per_item_outputs_made_once) {
  char *d = tf_mkdtemp("sluice-mpi");
  char p[512];
  snprintf(p, sizeof p, "%s/in", d);
  ASSERT_EQ(mkdir(p, 0700), 0);
  for (int i = 0; i < 25; i++) {
    char f[600], text[64];
    snprintf(f, sizeof f, "%s/in/f%02d.txt", d, i);
    snprintf(text, sizeof text, "file %d\n", i);
    tf_write(f, text);
  }
  snprintf(p, sizeof p, "%s/copy.pipe", d);
  tf_write(p, "files.list dir=${in} ! files.read ! files.write dir=${out}\n");
  ASSERT_EQ(sluice_np(d, 3, "copy.pipe in=in out=out"), 0);
  for (int i = 0; i < 25; i++) {
    char f[600], want[64];
    snprintf(f, sizeof f, "%s/out/f%02d.txt", d, i);
    snprintf(want, sizeof want, "file %d\n", i);
    char *got = tf_slurp(f);
    if (!got) SL__FAIL("%s was not written", f);
    ASSERT_STREQ(got, want);
    free(got);
  }
  /* Each rank made its own third: the summaries add up to 25. */
  snprintf(p, sizeof p, "%s/err.txt", d);
  char *err = tf_slurp(p);
  ASSERT(err);
  int total = 0;
  for (const char *s = err; (s = strstr(s, "sluice: ")) != NULL; s += 8) {
    int ok;
    if (sscanf(s, "sluice: %d ok,", &ok) == 1) total += ok;
  }
  ASSERT_EQ(total, 25);
  free(err);
  tf_rmtree(d);
  free(d);
}

/* Two passes: rank 0 captures pass 1's result and shares it with all. */
TEST(two_passes_share_captured_values) {
  char *d = tf_mkdtemp("sluice-mpi");
  char p[512];
  snprintf(p, sizeof p, "%s/d.csv", d);
  write_csv(p, 30000, -1);
  snprintf(p, sizeof p, "%s/two.pipe", d);
  tf_write(p, "csv.read file=${in} chunk=64KiB ! csv.parse\n"
              "! aggregate aggs=mean(x) ! capture name=s\n"
              "---\n"
              "csv.read file=${in} chunk=64KiB ! csv.parse\n"
              "! filter expr=\"x > ${s_mean_x}\"\n"
              "! groupby keys=category aggs=count,min(x) ! csv.write file=${out}\n");
  ASSERT_EQ(sluice_np(d, 0, "two.pipe in=d.csv out=r0.csv"), 0);
  int rc = sluice_np(d, 3, "two.pipe in=d.csv out=r3.csv --threads 1");
  snprintf(p, sizeof p, "%s/err.txt", d);
  char *err = tf_slurp(p);
  if (rc != 0) SL__FAIL("exit %d\n%s", rc, err ? err : "");
  free(err);
  snprintf(p, sizeof p, "%s/r0.csv", d);
  char *want = tf_slurp(p);
  snprintf(p, sizeof p, "%s/r3.csv", d);
  char *got = tf_slurp(p);
  ASSERT(want && got && strncmp(want, "category,count,min(x)\n", 22) == 0);
  ASSERT_STREQ(got, want);
  free(want);
  free(got);
  /* Pass 1 fails on rank 0 only (capture keeps one row, a group-by gives
   * five): every rank stops after it, none waits for the others. */
  snprintf(p, sizeof p, "%s/bad.pipe", d);
  tf_write(p, "csv.read file=${in} chunk=64KiB ! csv.parse\n"
              "! groupby keys=category aggs=count ! capture name=s\n"
              "---\n"
              "csv.read file=${in} ! csv.parse ! csv.write file=${out}\n");
  rc = sluice_np(d, 3, "bad.pipe in=d.csv out=never.csv --threads 1");
  ASSERT(rc != 0 && rc < 124); /* failed, not hung */
  snprintf(p, sizeof p, "%s/never.csv", d);
  ASSERT(!tf_exists(p));
  snprintf(p, sizeof p, "%s/err.txt", d);
  err = tf_slurp(p);
  ASSERT(err && strstr(err, "capture keeps one row"));
  ASSERT(strstr(err, "pass 1 failed on another rank"));
  free(err);
  tf_rmtree(d);
  free(d);
}

/* A float64 .npy of n values (version 1 header), deterministic. */
static void write_npy(const char *path, size_t n) {
  FILE *f = fopen(path, "wb");
  ASSERT(f);
  char dict[128];
  int dn = snprintf(dict, sizeof dict, "{'descr': '<f8', 'fortran_order': False, 'shape': (%zu,), }", n);
  int total = 10 + dn + 1;
  int pad = (64 - total % 64) % 64;
  unsigned short hlen = (unsigned short)(dn + pad + 1);
  fwrite("\x93NUMPY\x01\x00", 1, 8, f);
  fwrite(&hlen, 2, 1, f); /* little-endian machine */
  fwrite(dict, 1, (size_t)dn, f);
  for (int i = 0; i < pad; i++) fputc(' ', f);
  fputc('\n', f);
  uint64_t z = 99;
  for (size_t i = 0; i < n; i++) {
    z = z * 6364136223846793005ULL + 1442695040888963407ULL;
    double v = (double)(z >> 11) / 9007199254740992.0 * 200.0 - 100.0;
    fwrite(&v, 8, 1, f);
  }
  fclose(f);
}

/* reduce: the result file is byte-identical for 1, 2 and 3 ranks. */
TEST(reduce_identical_for_any_rank_count) {
  char *d = tf_mkdtemp("sluice-mpi");
  char p[512];
  snprintf(p, sizeof p, "%s/x.npy", d);
  write_npy(p, 300000); /* 2.4 MB in 64 KiB blocks: 37 chunks */
  snprintf(p, sizeof p, "%s/s.pipe", d);
  tf_write(p, "npy.read file=${in} block=64KiB\n"
              "! reduce ops=count,sum,mean,var,std,min,max,argmin,argmax,hist(16,-100,100)\n"
              "! json.write file=${out}\n");
  ASSERT_EQ(sluice_np(d, 0, "s.pipe in=x.npy out=r0.json --threads 2"), 0);
  snprintf(p, sizeof p, "%s/r0.json", d);
  char *want = tf_slurp(p);
  ASSERT(want && strstr(want, "\"count\": 300000"));
  for (int np = 1; np <= 3; np++) {
    char args[128];
    snprintf(args, sizeof args, "s.pipe in=x.npy out=r%d.json --threads 1", np);
    int rc = sluice_np(d, np, args);
    snprintf(p, sizeof p, "%s/err.txt", d);
    char *err = tf_slurp(p);
    if (rc != 0) SL__FAIL("-np %d: exit %d\n%s", np, rc, err ? err : "");
    free(err);
    snprintf(p, sizeof p, "%s/r%d.json", d, np);
    char *got = tf_slurp(p);
    ASSERT(got);
    ASSERT_STREQ(got, want);
    free(got);
  }
  free(want);
  tf_rmtree(d);
  free(d);
}

/* pipelines/h5_stats.pipe: the result file is byte-identical for 1 and 2
 * threads and 1, 2 and 3 ranks, on a shuffle+gzip dataset of 16 chunks
 * (made by h5py). */
TEST(h5_stats_identical_for_threads_and_ranks) {
  char *d = tf_mkdtemp("sluice-mpi");
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "cd '%s' && /usr/bin/python3 -c \"import h5py, numpy as np\n"
           "r = np.random.default_rng(5)\n"
           "f = h5py.File('x.h5', 'w')\n"
           "f.create_dataset('t', data=r.normal(3.0, 2.0, (512, 300)), chunks=(32, 300),"
           " compression='gzip', shuffle=True)\"",
           d);
  if (tf_sh(cmd) != 0) SL__FAIL("cannot make the test file (python3-h5py installed?)");
  char src[1024];
  snprintf(src, sizeof src, "%s/pipelines/h5_stats.pipe", tf_env("SLUICE_SOURCE_DIR"));
  char args[1400], p[512];
  snprintf(args, sizeof args, "'%s' in=x.h5 dataset=/t out=r0.json --threads 1", src);
  ASSERT_EQ(sluice_np(d, 0, args), 0);
  snprintf(p, sizeof p, "%s/r0.json", d);
  char *want = tf_slurp(p);
  ASSERT(want && strstr(want, "\"count\": 153600"));
  for (int np = 0; np <= 3; np++) {
    snprintf(args, sizeof args, "'%s' in=x.h5 dataset=/t out=r%d.json --threads %d", src,
             np + 10, np == 0 ? 2 : 1);
    int rc = sluice_np(d, np, args);
    snprintf(p, sizeof p, "%s/err.txt", d);
    char *err = tf_slurp(p);
    if (rc != 0) SL__FAIL("-np %d: exit %d\n%s", np, rc, err ? err : "");
    free(err);
    snprintf(p, sizeof p, "%s/r%d.json", d, np + 10);
    char *got = tf_slurp(p);
    ASSERT(got);
    ASSERT_STREQ(got, want);
    free(got);
  }
  free(want);
  /* One output file cannot be written by every rank. */
  snprintf(args, sizeof args, "'%s/pipelines/h5_map.pipe' in=x.h5 dataset=/t out=y.h5 "
           "out_dataset=y expr=x", tf_env("SLUICE_SOURCE_DIR"));
  ASSERT(sluice_np(d, 2, args) != 0);
  snprintf(p, sizeof p, "%s/y.h5", d);
  ASSERT(!tf_exists(p));
  tf_rmtree(d);
  free(d);
}

static const sl_test_case cases[] = {
    SL_CASE(h5_stats_identical_for_threads_and_ranks, "e2e,mpi"),
    SL_CASE(reduce_identical_for_any_rank_count, "e2e,mpi"),
    SL_CASE(two_passes_share_captured_values, "e2e,mpi"),
    SL_CASE(groupby_identical_for_any_rank_count, "e2e,mpi"),
    SL_CASE(failed_item_leaves_no_reduced_output, "e2e,mpi"),
    SL_CASE(single_file_sink_needs_a_reduction, "e2e,mpi"),
    SL_CASE(per_item_outputs_made_once, "e2e,mpi"),
};
SL_TEST_MAIN(cases)
