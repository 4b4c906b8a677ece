/*
 * internal.h -- declarations shared between engine files (sl__ prefix).
 * Nothing here is public API: stages, io, cli and examples must not include it.
 */
#ifndef SLUICE_INTERNAL_H
#define SLUICE_INTERNAL_H

#include "sluice.h"

#include <pthread.h>
#include <stdlib.h>

/* Lock helpers: a failing lock is a bug, so they abort (as libuv does). */
void sl__mutex_init(pthread_mutex_t *m);
void sl__mutex_lock(pthread_mutex_t *m);
void sl__mutex_unlock(pthread_mutex_t *m);
void sl__cond_init(pthread_cond_t *c); /* CLOCK_MONOTONIC */
void sl__cond_wait(pthread_cond_t *c, pthread_mutex_t *m);
/* @return 0 or ETIMEDOUT. `deadline_ns` is on sl_now_ns()'s clock. */
int sl__cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m,
                       uint64_t deadline_ns);
void sl__cond_signal(pthread_cond_t *c);
void sl__cond_broadcast(pthread_cond_t *c);
/* Names the calling thread (truncated to 15 chars). */
void sl__thread_name(const char *name);

/* Allocation that aborts on failure is NOT used: callers handle NULL. */
char *sl__strdup(const char *s);
char *sl__strndup(const char *s, size_t n);
/* malloc'd printf. NULL when out of memory. */
char *sl__asprintf(const char *fmt, ...) SL_PRINTF(1, 2);
char *sl__vasprintf(const char *fmt, va_list ap);

/* "1.5 MiB", "512 B": binary units, one decimal. */
void sl__format_bytes(char *buf, size_t n, uint64_t bytes);

/* Growable string buffer. */
typedef struct sl__buf {
  char *data;
  size_t len, cap;
  bool oom; /* set when an append failed; data stays valid */
} sl__buf;
void sl__buf_append(sl__buf *b, const char *s, size_t n);
void sl__buf_puts(sl__buf *b, const char *s);
void sl__buf_printf(sl__buf *b, const char *fmt, ...) SL_PRINTF(2, 3);
/* Appends `s` as a JSON string literal (quotes included). */
void sl__buf_json_string(sl__buf *b, const char *s);
void sl__buf_free(sl__buf *b);

/* Ordering of a stage's output. */
typedef enum sl__order { SL__ORDER_SOURCE = 0, SL__ORDER_ANY = 1 } sl__order;

/* A configured stage in a pipeline (defined here so the parser fills it and
 * the run loop reads it). */
struct sl_stage {
  const sl_stage_def *def;
  sl_pipeline *pipeline;
  size_t index;
  void *params;       /* def->params_size bytes, filled from the table */
  char **strings;     /* owned copies of string values, nstrings of them */
  size_t nstrings;
  void *state;        /* from def->create */
  bool created;
  char *error;        /* from sl_stage_errorf */
  unsigned line, col; /* where the stage name starts in the file */
  /* Engine-wide parameters every stage accepts. */
  sl__order order;    /* order=source|any */
  unsigned workers;   /* workers=N; 0 = engine default */
  size_t queue;       /* queue=N output queue capacity; 0 = run default */
  /* Kinds after resolving SAME/ANY along the chain. */
  sl_kind in_kind, out_kind;
};

struct sl_pipeline {
  const sl_registry *reg;
  char *filename;
  sl_stage **stages;
  size_t n, cap;
  sl__buf errors;
  unsigned nerrors;
  bool checked, check_ok;
};

/* Records "file:line:col: message" (and an optional "  hint: ..." line). */
void sl__pipeline_error(sl_pipeline *p, unsigned line, unsigned col,
                        const char *hint, const char *fmt, ...) SL_PRINTF(5, 6);

/* Parameters every stage accepts, handled by the engine (order, workers,
 * queue); printed by sl_stage_def_print_help. */
extern const sl_param_def sl__common_params[];

/* Parameter tables (params.c), shared by registry.c and pipefile.c. */
/* Appends s[0..n) to a message, control bytes escaped, long text cut. */
void sl__msg_quote(sl__buf *b, const char *s, size_t n);
const char *sl__param_type_name(sl_param_type t);
/* Parses `text` into `field` per pd. Strings are copied into *owned. On
 * error *why is a malloc'd message and *hint a static hint (or NULL). */
int sl__param_parse(const sl_param_def *pd, const char *text, void *field,
                    char **owned, char **why, const char **hint);
/* @return 0 when the table is well formed and its defaults parse. */
int sl__param_table_check(const sl_param_def *tab, size_t params_size);
/* Appends the allowed values of pd ("1..100", "a|b", "-"). */
void sl__param_allowed(const sl_param_def *pd, sl__buf *b);
/* Stage names and parameter names: [a-z0-9._-], 1..64 bytes. */
bool sl__name_valid(const char *name);

#endif /* SLUICE_INTERNAL_H */
