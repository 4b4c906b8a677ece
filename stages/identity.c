/*
 * identity.c -- `identity`, passes items through unchanged.
 *
 * Useful on its own to measure the engine's per-item overhead, and with its
 * knobs to simulate work (spin_us burns CPU, sleep_us blocks) or failures
 * (fail_every, fail_attempts) deterministically, so tests can predict which
 * items fail and whether a retry rescues them. Stateless: safe to call from
 * any number of threads at once.
 */
#include <inttypes.h>
#include <time.h>

#include "stages_internal.h"

typedef struct identity_params {
  int64_t spin_us;
  int64_t sleep_us;
  int64_t fail_every;
  int64_t fail_attempts;
} identity_params;

/* Waits at most this long between looks at sl_worker_canceled(). */
#define SLICE_NS UINT64_C(10000000) /* 10 ms */

/* Busy-spins for `us` microseconds of wall time on the monotonic clock.
 * @return 0, or SL_ECANCELED when the run stops meanwhile. */
static int spin(sl_worker *w, int64_t us) {
  uint64_t start = sl_now_ns(), end = start + (uint64_t)us * 1000;
  uint64_t next_check = start + SLICE_NS;
  for (uint64_t now = start; now < end; now = sl_now_ns()) {
    if (now >= next_check) {
      if (sl_worker_canceled(w)) return SL_ECANCELED;
      next_check = now + SLICE_NS;
    }
  }
  return 0;
}

/* Sleeps `us` microseconds in slices, restarting after signals.
 * @return 0, or SL_ECANCELED when the run stops meanwhile. */
static int nap(sl_worker *w, int64_t us) {
  uint64_t end = sl_now_ns() + (uint64_t)us * 1000;
  int rc = 0;
  /* A sleeping thread is not using its core: give the token back. */
  sl_worker_blocking_begin(w);
  for (uint64_t now = sl_now_ns(); now < end; now = sl_now_ns()) {
    if (sl_worker_canceled(w)) {
      rc = SL_ECANCELED;
      break;
    }
    uint64_t left = end - now < SLICE_NS ? end - now : SLICE_NS;
    struct timespec ts = {(time_t)(left / 1000000000u),
                          (long)(left % 1000000000u)};
    nanosleep(&ts, NULL); /* EINTR: the loop recomputes what is left */
  }
  sl_worker_blocking_end(w);
  return rc;
}

/* Deterministic failure injection: items whose 1-based index is a multiple
 * of fail_every fail on their first fail_attempts attempts (0 = always). */
static bool should_fail(const identity_params *p, const sl_item *in) {
  if (p->fail_every <= 0 || (in->seq + 1) % (uint64_t)p->fail_every != 0)
    return false;
  return p->fail_attempts == 0 || in->attempts < (uint64_t)p->fail_attempts;
}

/* On success *out = in (ownership stays with the engine either way). */
static int identity_process(sl_worker *w, sl_item *in, sl_item **out) {
  const identity_params *p = sl_worker_params(w);
  *out = NULL;
  int rc = 0;
  if (p->spin_us > 0 && (rc = spin(w, p->spin_us)) < 0) return rc;
  if (p->sleep_us > 0 && (rc = nap(w, p->sleep_us)) < 0) return rc;
  if (should_fail(p, in))
    return sl_worker_errorf(w, "injected failure (fail_every=%" PRId64 ")",
                            p->fail_every);
  *out = in;
  return 0;
}

static const sl_param_def identity_params_table[] = {
    {"spin_us", SL_PARAM_INT, offsetof(identity_params, spin_us), "0", 0, 3.6e9,
     NULL, "busy-spin this many microseconds per item (simulated CPU work)"},
    {"sleep_us", SL_PARAM_INT, offsetof(identity_params, sleep_us), "0", 0,
     3.6e9, NULL, "sleep this many microseconds per item (simulated waiting)"},
    {"fail_every", SL_PARAM_INT, offsetof(identity_params, fail_every), "0", 0,
     1e12, NULL,
     "fail items whose 1-based index (seq+1) is a multiple of N; 0 = never"},
    {"fail_attempts", SL_PARAM_INT, offsetof(identity_params, fail_attempts),
     "0", 0, 1e9, NULL,
     "fail those items only on their first K attempts; 0 = on every attempt"},
    SL_PARAM_END,
};

const sl_stage_def sl__stage_identity = {
    .name = "identity",
    .summary = "pass items through unchanged (optionally simulate work or failures)",
    .help =
        "Passes every item through untouched, whatever its payload kind.\n"
        "spin_us and sleep_us simulate per-item CPU work and blocking.\n"
        "fail_every=N fails the items whose index seq+1 is a multiple of N\n"
        "with \"injected failure (fail_every=N)\"; the choice is\n"
        "deterministic, so tests know exactly which items fail. With\n"
        "fail_attempts=K those items fail only on their first K attempts, so\n"
        "--retries K rescues them.\n"
        "Example: gen count=100 ! identity fail_every=10 ! discard\n"
        "  (items item-000010, item-000020, ... item-000100 fail)",
    .exec = SL_EXEC_CPU,
    .in_kind = SL_KIND_ANY,
    .out_kind = SL_KIND_SAME,
    .params = identity_params_table,
    .params_size = sizeof(identity_params),
    .process = identity_process,
};
