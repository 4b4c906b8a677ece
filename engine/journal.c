/*
 * journal.c -- the job log behind --journal and --resume.
 *
 * The journal is a text file with one finished item name per line (newline
 * and backslash escaped as \n and \\). A run appends as items finish and
 * flushes about ten times a second and at the end; a crash loses at most the
 * last unflushed names, whose items are simply redone on resume (sinks write
 * atomically, so redoing is safe). A trailing line without its newline (torn
 * write) is ignored. On --resume the names are loaded into an open-addressing
 * hash set that is read-only while the run goes on, so lookups take no lock;
 * appends take `mu`.
 */
#include "run_internal.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

struct sl__journal {
  pthread_mutex_t mu;
  FILE *f;
  char **set;        /* hash set of loaded names, NULL = empty slot */
  size_t cap, count; /* cap is a power of two */
};

static uint64_t hash_name(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

static int set_add(sl__journal *j, char *name) {
  if (2 * (j->count + 1) > j->cap) {
    size_t cap = j->cap ? 2 * j->cap : 1024;
    char **set = calloc(cap, sizeof *set);
    if (!set) return SL_ENOMEM;
    for (size_t i = 0; i < j->cap; i++) {
      if (!j->set[i]) continue;
      size_t h = hash_name(j->set[i]) & (cap - 1);
      while (set[h]) h = (h + 1) & (cap - 1);
      set[h] = j->set[i];
    }
    free(j->set);
    j->set = set;
    j->cap = cap;
  }
  size_t h = hash_name(name) & (j->cap - 1);
  while (j->set[h]) {
    if (strcmp(j->set[h], name) == 0) {
      free(name);
      return 0;
    }
    h = (h + 1) & (j->cap - 1);
  }
  j->set[h] = name;
  j->count++;
  return 0;
}

bool sl__journal_has(sl__journal *j, const char *name) {
  if (!j || !j->cap) return false;
  size_t h = hash_name(name) & (j->cap - 1);
  while (j->set[h]) {
    if (strcmp(j->set[h], name) == 0) return true;
    h = (h + 1) & (j->cap - 1);
  }
  return false;
}

/* Decodes one escaped line in place. */
static void unescape(char *s) {
  char *d = s;
  for (; *s; s++) {
    if (*s == '\\' && s[1] == 'n') { *d++ = '\n'; s++; }
    else if (*s == '\\' && s[1] == '\\') { *d++ = '\\'; s++; }
    else *d++ = *s;
  }
  *d = '\0';
}

static int load(sl__journal *j, FILE *f) {
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  int rc = 0;
  while (rc == 0 && (len = getline(&line, &cap, f)) > 0) {
    if (line[len - 1] != '\n') break; /* torn last line */
    line[len - 1] = '\0';
    unescape(line);
    char *name = sl__strdup(line);
    rc = name ? set_add(j, name) : SL_ENOMEM;
  }
  free(line);
  return rc;
}

int sl__journal_open(sl__journal **out, const char *path, bool resume,
                     char **err) {
  *out = NULL;
  sl__journal *j = calloc(1, sizeof *j);
  if (!j) return SL_ENOMEM;
  sl__mutex_init(&j->mu);
  int rc = 0;
  if (resume) {
    FILE *in = fopen(path, "r");
    if (in) {
      rc = load(j, in);
      fclose(in);
    } else if (errno != ENOENT) {
      rc = -errno;
    }
  }
  /* Without --resume an old journal is replaced: its items will be redone. */
  if (rc == 0) {
    j->f = fopen(path, resume ? "a" : "w");
    if (!j->f) rc = -errno;
  }
  if (rc < 0) {
    *err = sl__asprintf("journal '%s': %s", path, sl_strerror(rc));
    sl__journal_close(j);
    return rc;
  }
  *out = j;
  return 0;
}

void sl__journal_add(sl__journal *j, const char *name) {
  sl__mutex_lock(&j->mu);
  for (const char *s = name; *s; s++) {
    if (*s == '\n') fputs("\\n", j->f);
    else if (*s == '\\') fputs("\\\\", j->f);
    else putc(*s, j->f);
  }
  putc('\n', j->f);
  sl__mutex_unlock(&j->mu);
}

void sl__journal_flush(sl__journal *j) {
  sl__mutex_lock(&j->mu);
  fflush(j->f);
  sl__mutex_unlock(&j->mu);
}

size_t sl__journal_loaded(const sl__journal *j) { return j ? j->count : 0; }

void sl__journal_close(sl__journal *j) {
  if (!j) return;
  if (j->f) {
    fflush(j->f);
    fsync(fileno(j->f));
    fclose(j->f);
  }
  for (size_t i = 0; i < j->cap; i++) free(j->set[i]);
  free(j->set);
  pthread_mutex_destroy(&j->mu);
  free(j);
}
