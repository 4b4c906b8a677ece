/*
 * test_files.h -- file helpers for end-to-end tests that run `sluice` and
 * look at what it wrote: temporary folders, whole-file reads and writes.
 * Header-only (static functions); include after test.h and sluice.h.
 */
#ifndef SLUICE_TEST_FILES_H
#define SLUICE_TEST_FILES_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* printf into a malloc'd string. */
static inline char *tf_asprintf(const char *fmt, ...) SL_PRINTF(1, 2);
static inline char *tf_asprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  ASSERT(n >= 0);
  char *s = malloc((size_t)n + 1);
  ASSERT(s);
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}

/* A fresh folder /tmp/PREFIX-XXXXXX (malloc'd path). */
static inline char *tf_mkdtemp(const char *prefix) {
  char *d = malloc(strlen(prefix) + 16);
  ASSERT(d);
  sprintf(d, "/tmp/%s-XXXXXX", prefix);
  ASSERT(mkdtemp(d));
  return d;
}

static inline void tf_rmtree(const char *path) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
  ASSERT_EQ(system(cmd), 0);
}

/* The whole file, NUL-terminated (malloc'd), or NULL when it cannot be read. */
static inline char *tf_slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  ASSERT(s);
  size_t got = fread(s, 1, (size_t)n, f);
  s[got] = '\0';
  fclose(f);
  return s;
}

/* Like tf_slurp, but "" (malloc'd) when the file is missing. */
static inline char *tf_slurp_or_empty(const char *path) {
  char *s = tf_slurp(path);
  if (!s) s = calloc(1, 1);
  ASSERT(s);
  return s;
}

/* The value of an environment variable ctest sets (fails without it). */
static inline const char *tf_env(const char *name) {
  const char *v = getenv(name);
  if (!v) SL__FAIL("%s is not set (run through ctest)", name);
  return v;
}

static inline void tf_write(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  ASSERT(f);
  fputs(text, f);
  fclose(f);
}

static inline bool tf_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* Runs a shell command. @return its exit status, or 128 + signal. */
static inline int tf_sh(const char *cmd) {
  int st = system(cmd);
  ASSERT(st != -1);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

#endif
