/*
 * util.c -- small helpers shared by the engine: lock wrappers that abort on
 * failure (a failing mutex operation is a bug, never a condition to handle),
 * a growable string buffer, printf-to-malloc, byte-size parsing and the
 * monotonic clock.
 */
#include "internal.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#if defined(__linux__)
#include <sys/prctl.h>
#endif

static void die(const char *what, int rc) {
  fprintf(stderr, "sluice: fatal: %s failed: %s\n", what, strerror(rc));
  abort();
}

void sl__mutex_init(pthread_mutex_t *m) {
  int rc = pthread_mutex_init(m, NULL);
  if (rc) die("pthread_mutex_init", rc);
}

void sl__mutex_lock(pthread_mutex_t *m) {
  int rc = pthread_mutex_lock(m);
  if (rc) die("pthread_mutex_lock", rc);
}

void sl__mutex_unlock(pthread_mutex_t *m) {
  int rc = pthread_mutex_unlock(m);
  if (rc) die("pthread_mutex_unlock", rc);
}

void sl__cond_init(pthread_cond_t *c) {
  pthread_condattr_t attr;
  int rc = pthread_condattr_init(&attr);
  if (!rc) rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  if (!rc) rc = pthread_cond_init(c, &attr);
  if (rc) die("pthread_cond_init", rc);
  pthread_condattr_destroy(&attr);
}

void sl__cond_wait(pthread_cond_t *c, pthread_mutex_t *m) {
  int rc = pthread_cond_wait(c, m);
  if (rc) die("pthread_cond_wait", rc);
}

int sl__cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m,
                       uint64_t deadline_ns) {
  struct timespec ts;
  ts.tv_sec = (time_t)(deadline_ns / 1000000000u);
  ts.tv_nsec = (long)(deadline_ns % 1000000000u);
  int rc = pthread_cond_timedwait(c, m, &ts);
  if (rc && rc != ETIMEDOUT) die("pthread_cond_timedwait", rc);
  return rc;
}

void sl__cond_signal(pthread_cond_t *c) {
  int rc = pthread_cond_signal(c);
  if (rc) die("pthread_cond_signal", rc);
}

void sl__cond_broadcast(pthread_cond_t *c) {
  int rc = pthread_cond_broadcast(c);
  if (rc) die("pthread_cond_broadcast", rc);
}

void sl__thread_name(const char *name) {
#if defined(__linux__)
  char buf[16];
  snprintf(buf, sizeof buf, "%s", name);
  prctl(PR_SET_NAME, buf, 0, 0, 0);
#else
  (void)name;
#endif
}

uint64_t sl_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

char *sl__strndup(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (!d) return NULL;
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

char *sl__strdup(const char *s) { return sl__strndup(s, strlen(s)); }

char *sl__vasprintf(const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0) return NULL;
  char *s = malloc((size_t)n + 1);
  if (s) vsnprintf(s, (size_t)n + 1, fmt, ap);
  return s;
}

char *sl__asprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = sl__vasprintf(fmt, ap);
  va_end(ap);
  return s;
}

/* --- string buffer: data is always NUL-terminated once non-empty --- */

static bool buf_reserve(sl__buf *b, size_t extra) {
  if (b->oom) return false;
  if (b->len + extra + 1 <= b->cap) return true;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < b->len + extra + 1) cap *= 2;
  char *d = realloc(b->data, cap);
  if (!d) {
    b->oom = true;
    return false;
  }
  b->data = d;
  b->cap = cap;
  return true;
}

void sl__buf_append(sl__buf *b, const char *s, size_t n) {
  if (!buf_reserve(b, n)) return;
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
}

void sl__buf_puts(sl__buf *b, const char *s) { sl__buf_append(b, s, strlen(s)); }

void sl__buf_printf(sl__buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = sl__vasprintf(fmt, ap);
  va_end(ap);
  if (!s) {
    b->oom = true;
    return;
  }
  sl__buf_puts(b, s);
  free(s);
}

void sl__buf_json_string(sl__buf *b, const char *s) {
  sl__buf_append(b, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    char esc[8];
    switch (*p) {
    case '"': sl__buf_append(b, "\\\"", 2); break;
    case '\\': sl__buf_append(b, "\\\\", 2); break;
    case '\n': sl__buf_append(b, "\\n", 2); break;
    case '\r': sl__buf_append(b, "\\r", 2); break;
    case '\t': sl__buf_append(b, "\\t", 2); break;
    default:
      if (*p < 0x20) {
        snprintf(esc, sizeof esc, "\\u%04x", *p);
        sl__buf_puts(b, esc);
      } else {
        sl__buf_append(b, (const char *)p, 1);
      }
    }
  }
  sl__buf_append(b, "\"", 1);
}

void sl__buf_free(sl__buf *b) {
  free(b->data);
  memset(b, 0, sizeof *b);
}

/* --- sizes: "4096", "4k", "1.5MiB", "2G"; binary multiples throughout --- */

static int size_multiplier(const char *suf, uint64_t *mult) {
  static const struct { const char *s; unsigned shift; } tab[] = {
      {"", 0},   {"b", 0},    {"k", 10},   {"kb", 10}, {"kib", 10},
      {"m", 20}, {"mb", 20},  {"mib", 20}, {"g", 30},  {"gb", 30},
      {"gib", 30}, {"t", 40}, {"tb", 40},  {"tib", 40}};
  char low[8];
  size_t n = strlen(suf);
  if (n >= sizeof low) return SL_EINVAL;
  for (size_t i = 0; i < n; i++) low[i] = (char)tolower((unsigned char)suf[i]);
  low[n] = '\0';
  for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
    if (strcmp(low, tab[i].s) == 0) {
      *mult = (uint64_t)1 << tab[i].shift;
      return 0;
    }
  }
  return SL_EINVAL;
}

int sl_parse_size(const char *text, uint64_t *out) {
  const char *p = text;
  if (!isdigit((unsigned char)*p) && *p != '.') return SL_EINVAL;
  char *end;
  errno = 0;
  double v = strtod(p, &end);
  if (end == p || errno == ERANGE || !isfinite(v) || v < 0) return SL_EINVAL;
  for (const char *q = p; q < end; q++)
    if (*q == 'e' || *q == 'E' || *q == 'x' || *q == 'X') return SL_EINVAL;
  uint64_t mult;
  if (size_multiplier(end, &mult) < 0) return SL_EINVAL;
  double bytes = v * (double)mult;
  if (bytes >= 18446744073709549568.0) return SL_ERANGE;
  if (bytes != floor(bytes)) return SL_EINVAL; /* fractional bytes */
  *out = (uint64_t)bytes;
  return 0;
}

void sl__format_bytes(char *buf, size_t n, uint64_t bytes) {
  static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)bytes;
  int i = 0;
  while (v >= 1024 && i < 4) {
    v /= 1024;
    i++;
  }
  snprintf(buf, n, i ? "%.1f %s" : "%.0f %s", v, unit[i]);
}
