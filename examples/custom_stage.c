/*
 * custom_stage.c -- adding your own stage through the public API.
 *
 *   custom_stage ["PIPELINE"]
 *
 * Defines `checksum`, a cpu stage that computes the 64-bit FNV-1a hash of
 * each bytes payload and passes the item on unchanged, registers it next
 * to the built-in stages, runs a pipeline that uses it (by default
 * "gen count=16 size=64KiB seed=7 ! checksum ! discard") and prints one
 * "name hash" line per item in source order. Exit status 0 when every item
 * succeeded and was hashed exactly once.
 *
 * What a stage needs: a parameter table (validated before the run, shown
 * by `sluice stages`), a params struct the engine fills, and callbacks.
 * Here create() sets up state shared by all workers (a results table under
 * a mutex, since cpu stages run on several threads at once), process()
 * does the work per item and may fail it with sl_worker_errorf(), and
 * destroy() frees the state when the pipeline goes away. The results are
 * printed by a `report` hook the example calls before destroying the
 * pipeline, because stage state is owned by the engine.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "sluice.h"
#include "sluice_io.h"
#include "sluice_stages.h"

typedef struct checksum_params {
  bool fail_empty; /* an empty payload fails its item */
} checksum_params;

typedef struct result {
  uint64_t seq, hash;
  char *name;
} result;

/* create()'s state, shared by every worker; `mu` guards the table. */
typedef struct checksum_state {
  pthread_mutex_t mu;
  result *res;
  size_t n, cap;
} checksum_state;

/* The example reads the results of the last pipeline it built here. */
static checksum_state *last_state;

static uint64_t fnv1a(const unsigned char *p, size_t n) {
  uint64_t h = UINT64_C(0xcbf29ce484222325);
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * UINT64_C(0x100000001b3);
  return h;
}

static int checksum_create(sl_stage *st, void **state) {
  (void)st;
  checksum_state *s = calloc(1, sizeof *s);
  if (!s) return SL_ENOMEM;
  pthread_mutex_init(&s->mu, NULL);
  *state = last_state = s;
  return 0;
}

static void checksum_destroy(void *state) {
  checksum_state *s = state;
  if (!s) return;
  for (size_t i = 0; i < s->n; i++) free(s->res[i].name);
  free(s->res);
  pthread_mutex_destroy(&s->mu);
  if (last_state == s) last_state = NULL;
  free(s);
}

/* Records (seq, name, hash). @return 0 or SL_ENOMEM. */
static int record(checksum_state *s, const sl_item *in, uint64_t hash) {
  char *name = malloc(strlen(in->name) + 1);
  if (!name) return SL_ENOMEM;
  strcpy(name, in->name);
  pthread_mutex_lock(&s->mu);
  if (s->n == s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 64;
    result *r = realloc(s->res, cap * sizeof *r);
    if (!r) {
      pthread_mutex_unlock(&s->mu);
      free(name);
      return SL_ENOMEM;
    }
    s->res = r;
    s->cap = cap;
  }
  s->res[s->n++] = (result){in->seq, hash, name};
  pthread_mutex_unlock(&s->mu);
  return 0;
}

/* Hashes the payload; the item itself goes on unchanged (*out = in). On
 * failure the engine keeps `in` and *out must stay NULL. */
static int checksum_process(sl_worker *w, sl_item *in, sl_item **out) {
  const checksum_params *p = sl_worker_params(w);
  *out = NULL;
  if (p->fail_empty && in->payload.size == 0)
    return sl_worker_errorf(w, "empty payload");
  int rc = record(sl_worker_shared(w), in,
                  fnv1a(in->payload.data, in->payload.size));
  if (rc < 0) return rc;
  *out = in;
  return 0;
}

static const sl_param_def checksum_params_table[] = {
    {"fail_empty", SL_PARAM_BOOL, offsetof(checksum_params, fail_empty),
     "false", 0, 0, NULL, "fail items whose payload is empty"},
    SL_PARAM_END,
};

static const sl_stage_def checksum_def = {
    .name = "checksum",
    .summary = "FNV-1a hash of each bytes payload (example stage)",
    .help = "Hashes every bytes payload with 64-bit FNV-1a and passes the "
            "item on.",
    .exec = SL_EXEC_CPU,
    .in_kind = SL_KIND_BYTES,
    .out_kind = SL_KIND_SAME,
    .params = checksum_params_table,
    .params_size = sizeof(checksum_params),
    .create = checksum_create,
    .destroy = checksum_destroy,
    .process = checksum_process,
};

static int by_seq(const void *a, const void *b) {
  const result *x = a, *y = b;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Prints the results in source order. @return false if any seq is missing
 * or was hashed twice. */
static bool report(checksum_state *s, uint64_t expected) {
  qsort(s->res, s->n, sizeof *s->res, by_seq);
  for (size_t i = 0; i < s->n; i++)
    printf("%s %016" PRIx64 "\n", s->res[i].name, s->res[i].hash);
  bool ok = s->n == expected;
  for (size_t i = 1; i < s->n; i++) ok &= s->res[i].seq != s->res[i - 1].seq;
  return ok;
}

/* Builds a registry with the built-ins plus `checksum`, parses and runs
 * `text`. @return the process exit status. */
static int run_text(const char *text) {
  sl_registry *reg = NULL;
  sl_pipeline *p = NULL;
  sl_run *run = NULL;
  int status = 1, rc = sl_registry_create(&reg);
  if (rc == 0) rc = sl_stages_register_all(reg);
  if (rc == 0) rc = sl_io_register_all(reg);
  if (rc == 0) rc = sl_registry_add(reg, &checksum_def);
  if (rc == 0) rc = sl_pipeline_create(&p, reg);
  if (rc == 0 && (rc = sl_pipeline_parse(p, "<example>", text, strlen(text),
                                         NULL, 0)) < 0)
    fprintf(stderr, "%s", sl_pipeline_errors(p));
  sl_run_options opt;
  sl_run_options_init(&opt);
  opt.progress = SL_PROGRESS_OFF;
  if (rc == 0) rc = sl_run_create(&run, p, &opt);
  if (rc == 0) rc = sl_run_execute(run);
  const char *why = run ? sl_run_error(run) : "";
  if (rc < 0)
    fprintf(stderr, "custom_stage: %s%s%s\n", sl_strerror(rc),
            *why ? ": " : "", why);
  for (size_t i = 0; run && i < sl_run_failure_count(run); i++) {
    const char *item, *stage, *msg;
    if (sl_run_failure(run, i, &item, &stage, &msg) == 0)
      fprintf(stderr, "failed: %s in %s: %s\n", item, stage, msg);
  }
  if (rc == 0 && last_state && report(last_state, sl_run_items_ok(run)))
    status = 0;
  sl_run_destroy(run);
  sl_pipeline_destroy(p);
  sl_registry_destroy(reg);
  return status;
}

int main(int argc, char **argv) {
  const char *text = argc > 1 ? argv[1]
                              : "gen count=16 size=64KiB seed=7 ! checksum "
                                "! discard";
  return run_text(text);
}
