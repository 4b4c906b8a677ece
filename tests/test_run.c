/*
 * test_run.c -- the run loop: item flow, ordering, error policy, retries,
 * journal/resume, cancellation, the core budget and the memory budget,
 * swept over queue capacity x threads x stage class x failing items x early
 * shutdown. The test registers its own stages through the public API (which
 * also shows that stages can be added from outside the library).
 */
#include "test.h"
#include "sluice.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

/* ---- shared test state (one run at a time) ---- */
static struct {
  atomic_uint_fast64_t sink_count, sink_sum, order_errors, payload_errors;
  atomic_uint_fast64_t last_seq_plus1;
  atomic_int running, max_running; /* CPU work in flight, incl. parallel_for */
  atomic_uint_fast64_t cancel_at;  /* sink cancels the run at this count */
  sl_run *run;
  /* zero-copy check: payload address of each item at the source */
  _Atomic(const void *) src_data[256];
  atomic_uint_fast64_t moved;
  atomic_uint_fast64_t tallied, tally_sum, tally_reports; /* t.tally */
} g;

static void reset_state(void) {
  memset(&g, 0, sizeof g);
}

static void enter_cpu(void) {
  int now = atomic_fetch_add(&g.running, 1) + 1;
  int m = atomic_load(&g.max_running);
  while (now > m && !atomic_compare_exchange_weak(&g.max_running, &m, now)) {
  }
}
static void leave_cpu(void) { atomic_fetch_sub(&g.running, 1); }

static void tiny_delay(unsigned *seed, unsigned max_us) {
  if (!max_us) return;
  unsigned us = (unsigned)rand_r(seed) % (max_us + 1);
  if (us % 2) {
    struct timespec ts = {0, (long)us * 1000};
    nanosleep(&ts, NULL);
  } else {
    uint64_t end = sl_now_ns() + us * 1000u;
    while (sl_now_ns() < end) {
    }
  }
}

/* ---- t.src: items whose payload is their seq followed by a pattern ---- */
typedef struct src_params {
  int64_t count;
  uint64_t size;
} src_params;
typedef struct src_state {
  int64_t next;
} src_state;

static int src_open(sl_worker *w, void **local) {
  src_state *s = calloc(1, sizeof *s);
  if (!s) return SL_ENOMEM;
  *local = s;
  sl_worker_set_total(w, (uint64_t)((const src_params *)sl_worker_params(w))->count);
  return 0;
}
static void src_close(sl_worker *w) { free(sl_worker_local(w)); }

static int src_produce(sl_worker *w, sl_item **out) {
  const src_params *p = sl_worker_params(w);
  src_state *s = sl_worker_local(w);
  for (;;) {
    if (s->next >= p->count) return SL_DONE;
    char name[32];
    snprintf(name, sizeof name, "t-%06lld", (long long)s->next + 1);
    uint64_t seq = (uint64_t)s->next++;
    if (sl_worker_is_done(w, name)) continue;
    sl_item *it = sl_item_create(seq, name);
    if (!it) return SL_ENOMEM;
    size_t size = p->size < 8 ? 8 : p->size;
    sl_block *b;
    int rc = sl_worker_alloc(w, size, &b);
    if (rc < 0) {
      sl_item_destroy(it);
      return rc;
    }
    unsigned char *d = sl_block_data(b);
    memcpy(d, &seq, 8);
    for (size_t i = 8; i < size; i++) d[i] = (unsigned char)(seq + i);
    sl_item_set_block(it, SL_KIND_BYTES, b, 0, size);
    if (seq < 256) atomic_store(&g.src_data[seq], it->payload.data);
    *out = it;
    return 0;
  }
}

static const sl_param_def src_params_def[] = {
    {"count", SL_PARAM_INT, offsetof(src_params, count), "100", 0, 1e9, NULL, "items"},
    {"size", SL_PARAM_SIZE, offsetof(src_params, size), "64", 0, 0, NULL, "bytes"},
    SL_PARAM_END};

static const sl_stage_def t_src = {
    .name = "t.src", .summary = "test source", .exec = SL_EXEC_CPU,
    .in_kind = SL_KIND_NONE, .out_kind = SL_KIND_BYTES, .flags = SL_STAGE_SOURCE,
    .params = src_params_def, .params_size = sizeof(src_params),
    .open = src_open, .produce = src_produce, .close = src_close};

/* ---- t.work / t.iowork: delays, failures, optional copy, parallel_for ---- */
typedef struct work_params {
  int64_t delay_us, fail_mod, fail_attempts;
  bool copy, pfor, block;
} work_params;

static bool check_payload(const sl_item *it) {
  if (it->payload.size < 8) return false;
  uint64_t seq;
  memcpy(&seq, it->payload.data, 8);
  if (seq != it->seq) return false;
  const unsigned char *d = it->payload.data;
  for (size_t i = 8; i < it->payload.size; i++)
    if (d[i] != (unsigned char)(seq + i)) return false;
  return true;
}

static void pfor_body(void *arg, size_t b, size_t e) {
  enter_cpu();
  atomic_fetch_add((atomic_uint_fast64_t *)arg, e - b);
  leave_cpu();
}

static int work_process(sl_worker *w, sl_item *in, sl_item **out) {
  const work_params *p = sl_worker_params(w);
  bool cpu = sl_stage_definition(sl_worker_stage(w))->exec == SL_EXEC_CPU;
  unsigned seed = (unsigned)(in->seq * 2654435761u + in->attempts);
  if (p->block) {
    /* A blocking wait: the token goes back, so this is not CPU work. */
    sl_worker_blocking_begin(w);
    tiny_delay(&seed, (unsigned)p->delay_us);
    sl_worker_blocking_end(w);
  } else {
    if (cpu) enter_cpu();
    tiny_delay(&seed, (unsigned)p->delay_us);
    if (cpu) leave_cpu();
  }
  if (!check_payload(in)) atomic_fetch_add(&g.payload_errors, 1);
  if (p->fail_mod && in->seq % (uint64_t)p->fail_mod == (uint64_t)p->fail_mod - 1 &&
      (!p->fail_attempts || in->attempts < (uint64_t)p->fail_attempts))
    return sl_worker_errorf(w, "planned failure of seq %llu", (unsigned long long)in->seq);
  if (p->pfor) {
    atomic_uint_fast64_t n = 0;
    sl_parallel_for(w, 1000, 10, pfor_body, &n);
    if (atomic_load(&n) != 1000) atomic_fetch_add(&g.payload_errors, 1);
  }
  if (!p->copy) {
    *out = in;
    return 0;
  }
  sl_item *o = sl_item_derive(in);
  sl_block *b;
  int rc = o ? sl_worker_alloc(w, in->payload.size, &b) : SL_ENOMEM;
  if (rc < 0) {
    sl_item_destroy(o);
    return rc;
  }
  memcpy(sl_block_data(b), in->payload.data, in->payload.size);
  sl_item_set_block(o, SL_KIND_BYTES, b, 0, in->payload.size);
  *out = o;
  return 0;
}

static const sl_param_def work_params_def[] = {
    {"delay_us", SL_PARAM_INT, offsetof(work_params, delay_us), "0", 0, 1e6, NULL, "max random delay"},
    {"fail_mod", SL_PARAM_INT, offsetof(work_params, fail_mod), "0", 0, 1e9, NULL, "fail seq % m == m-1"},
    {"fail_attempts", SL_PARAM_INT, offsetof(work_params, fail_attempts), "0", 0, 100, NULL, "fail only first K attempts"},
    {"copy", SL_PARAM_BOOL, offsetof(work_params, copy), "false", 0, 0, NULL, "allocate a new output"},
    {"pfor", SL_PARAM_BOOL, offsetof(work_params, pfor), "false", 0, 0, NULL, "use sl_parallel_for"},
    {"block", SL_PARAM_BOOL, offsetof(work_params, block), "false", 0, 0, NULL, "delay inside blocking_begin/end"},
    SL_PARAM_END};

static const sl_stage_def t_work = {
    .name = "t.work", .summary = "test cpu transform", .exec = SL_EXEC_CPU,
    .in_kind = SL_KIND_BYTES, .out_kind = SL_KIND_BYTES,
    .params = work_params_def, .params_size = sizeof(work_params),
    .process = work_process};
static const sl_stage_def t_iowork = {
    .name = "t.iowork", .summary = "test io transform", .exec = SL_EXEC_IO,
    .in_kind = SL_KIND_BYTES, .out_kind = SL_KIND_BYTES,
    .params = work_params_def, .params_size = sizeof(work_params),
    .process = work_process};

/* ---- t.sink: checks source order, counts, may cancel the run ---- */
typedef struct sink_params {
  bool ordered;
} sink_params;

static int sink_process(sl_worker *w, sl_item *in, sl_item **out) {
  const sink_params *p = sl_worker_params(w);
  *out = NULL;
  if (!check_payload(in)) atomic_fetch_add(&g.payload_errors, 1);
  if (p->ordered) {
    uint64_t last = atomic_exchange(&g.last_seq_plus1, in->seq + 1);
    if (in->seq + 1 <= last) atomic_fetch_add(&g.order_errors, 1);
  }
  if (in->seq < 256 && atomic_load(&g.src_data[in->seq]) != in->payload.data)
    atomic_fetch_add(&g.moved, 1);
  atomic_fetch_add(&g.sink_sum, in->seq);
  uint64_t c = atomic_fetch_add(&g.sink_count, 1) + 1;
  uint64_t at = atomic_load(&g.cancel_at);
  if (at && c == at) sl_run_cancel(g.run);
  return 0;
}

static const sl_param_def sink_params_def[] = {
    {"ordered", SL_PARAM_BOOL, offsetof(sink_params, ordered), "false", 0, 0, NULL, "check order"},
    SL_PARAM_END};

static const sl_stage_def t_sink = {
    .name = "t.sink", .summary = "test sink", .exec = SL_EXEC_SERIAL,
    .in_kind = SL_KIND_BYTES, .out_kind = SL_KIND_NONE, .flags = SL_STAGE_SINK,
    .params = sink_params_def, .params_size = sizeof(sink_params),
    .process = sink_process};

/* ---- t.tally: a cpu reduction; finish() emits what each worker saw ---- */
typedef struct tally {
  uint64_t n, sum;
} tally;

static int tally_open(sl_worker *w, void **local) {
  (void)w;
  *local = calloc(1, sizeof(tally));
  return *local ? 0 : SL_ENOMEM;
}

static int tally_process(sl_worker *w, sl_item *in, sl_item **out) {
  tally *t = sl_worker_local(w);
  *out = NULL;
  if (!check_payload(in)) atomic_fetch_add(&g.payload_errors, 1);
  t->n++;
  t->sum += in->seq;
  return 0;
}

/* One item per worker that saw any, payload (seq, n, sum), seq past the
 * source's. */
static int tally_finish(sl_worker *w) {
  tally *t = sl_worker_local(w);
  if (!t->n) return 0;
  uint64_t seq = 1000000 + sl_worker_index(w), v[3] = {seq, t->n, t->sum};
  sl_item *it = sl_item_create(seq, "tally");
  sl_block *b;
  if (!it || sl_worker_alloc(w, sizeof v, &b) < 0) {
    sl_item_destroy(it);
    return SL_ENOMEM;
  }
  memcpy(sl_block_data(b), v, sizeof v);
  sl_item_set_block(it, SL_KIND_BYTES, b, 0, sizeof v);
  return sl_worker_emit(w, it);
}

static void tally_close(sl_worker *w) { free(sl_worker_local(w)); }

static const sl_stage_def t_tally = {
    .name = "t.tally", .summary = "test cpu reduction", .exec = SL_EXEC_CPU,
    .in_kind = SL_KIND_BYTES, .out_kind = SL_KIND_BYTES,
    .open = tally_open, .process = tally_process, .finish = tally_finish,
    .close = tally_close};

/* t.report: a serial sink adding up t.tally's reports. */
static int report_process(sl_worker *w, sl_item *in, sl_item **out) {
  (void)w;
  *out = NULL;
  uint64_t v[3];
  if (in->payload.size != sizeof v) {
    atomic_fetch_add(&g.payload_errors, 1);
    return 0;
  }
  memcpy(v, in->payload.data, sizeof v);
  atomic_fetch_add(&g.tallied, v[1]);
  atomic_fetch_add(&g.tally_sum, v[2]);
  atomic_fetch_add(&g.tally_reports, 1);
  return 0;
}

static const sl_stage_def t_report = {
    .name = "t.report", .summary = "test sink", .exec = SL_EXEC_SERIAL,
    .in_kind = SL_KIND_BYTES, .out_kind = SL_KIND_NONE, .flags = SL_STAGE_SINK,
    .process = report_process};

/* ---- helpers ---- */
static sl_registry *make_registry(void) {
  sl_registry *reg;
  ASSERT_OK(sl_registry_create(&reg));
  ASSERT_OK(sl_registry_add(reg, &t_src));
  ASSERT_OK(sl_registry_add(reg, &t_work));
  ASSERT_OK(sl_registry_add(reg, &t_iowork));
  ASSERT_OK(sl_registry_add(reg, &t_sink));
  ASSERT_OK(sl_registry_add(reg, &t_tally));
  ASSERT_OK(sl_registry_add(reg, &t_report));
  return reg;
}

typedef struct run_result {
  int rc;
  uint64_t ok, failed, skipped;
  size_t nfail;
} run_result;

static run_result run_text(const char *text, sl_run_options *opt,
                           void (*inspect)(sl_run *)) {
  sl_registry *reg = make_registry();
  sl_pipeline *p;
  ASSERT_OK(sl_pipeline_create(&p, reg));
  int prc = sl_pipeline_parse(p, "test.pipe", text, strlen(text), NULL, 0);
  if (prc < 0) SL__FAIL("parse failed:\n%s", sl_pipeline_errors(p));
  sl_run *run;
  ASSERT_OK(sl_run_create(&run, p, opt));
  g.run = run;
  run_result r = {0};
  r.rc = sl_run_execute(run);
  r.ok = sl_run_items_ok(run);
  r.failed = sl_run_items_failed(run);
  r.skipped = sl_run_items_skipped(run);
  r.nfail = sl_run_failure_count(run);
  if (inspect) inspect(run);
  sl_run_destroy(run);
  sl_pipeline_destroy(p);
  sl_registry_destroy(reg);
  return r;
}

static void base_options(sl_run_options *o, unsigned threads, size_t queue) {
  sl_run_options_init(o);
  o->threads = threads;
  o->queue_capacity = queue;
  o->progress = SL_PROGRESS_OFF;
}

/* ---- tests ---- */

TEST(run_basic_flow) {
  reset_state();
  sl_run_options o;
  base_options(&o, 2, 0);
  run_result r = run_text("t.src count=1000 ! t.work ! t.sink ordered=true", &o, NULL);
  ASSERT_EQ(r.rc, 0);
  ASSERT_EQ(r.ok, 1000);
  ASSERT_EQ(r.failed, 0);
  ASSERT_EQ(atomic_load(&g.sink_count), 1000);
  ASSERT_EQ(atomic_load(&g.sink_sum), 999 * 1000 / 2);
  ASSERT_EQ(atomic_load(&g.order_errors), 0);
  ASSERT_EQ(atomic_load(&g.payload_errors), 0);
}

static uint64_t fail_count_expected(uint64_t n, uint64_t mod) {
  return mod ? n / mod : 0;
}

static void check_failures(sl_run *run) {
  /* Every recorded failure names a seq that was planned to fail. */
  for (size_t i = 0; i < sl_run_failure_count(run); i++) {
    const char *item, *stage, *msg;
    ASSERT_OK(sl_run_failure(run, i, &item, &stage, &msg));
    ASSERT_CONTAINS(msg, "planned failure of seq ");
    unsigned long long seq = strtoull(msg + strlen("planned failure of seq "), NULL, 10);
    ASSERT_EQ(seq % 7, 6);
    char want[32];
    snprintf(want, sizeof want, "t-%06llu", seq + 1);
    ASSERT_STREQ(item, want);
  }
}

/* Sweep: capacity x threads x class x failing items. */
TEST(run_sweep) {
  const size_t caps[] = {1, 2, 64};
  const char *works[] = {"t.work delay_us=20", "t.iowork delay_us=20 workers=3",
                         "t.iowork delay_us=20 workers=3 order=any",
                         "t.work copy=true pfor=true"};
  for (size_t c = 0; c < 3; c++)
    for (unsigned th = 1; th <= 4; th++)
      for (size_t k = 0; k < 4; k++)
        for (int v = 0; v < 4; v++) {
          int fail = v % 2;
          reset_state();
          sl_run_options o;
          base_options(&o, th, caps[c]);
          o.no_fuse = v >= 2; /* cpu stages fused (default) or not */
          bool ordered = k != 2;
          char text[256];
          snprintf(text, sizeof text, "t.src count=300 size=100 ! %s%s ! t.work ! t.sink ordered=%s",
                   works[k], fail ? " fail_mod=7" : "", ordered ? "true" : "false");
          run_result r = run_text(text, &o, check_failures);
          uint64_t nf = fail_count_expected(300, fail ? 7 : 0);
          ASSERT_EQ(r.rc, nf ? SL_EITEMS : 0);
          ASSERT_EQ(r.failed, nf);
          ASSERT_EQ(r.nfail, nf);
          ASSERT_EQ(r.ok, 300 - nf);
          ASSERT_EQ(atomic_load(&g.sink_count), 300 - nf);
          ASSERT_EQ(atomic_load(&g.order_errors), 0);
          ASSERT_EQ(atomic_load(&g.payload_errors), 0);
          ASSERT_LE(atomic_load(&g.max_running), (int)th);
        }
}

/* Early shutdown: the sink cancels after k items; the run must end
 * promptly with SL_ECANCELED and without leaks (ASan) at any point. */
TEST(run_cancel_sweep) {
  const char *works[] = {"t.work delay_us=50", "t.iowork delay_us=50 workers=4",
                         "t.work copy=true", "t.work delay_us=50 block=true pfor=true"};
  for (unsigned th = 1; th <= 4; th++)
    for (size_t k = 0; k < 4; k++)
      for (uint64_t at = 1; at < 400; at = at * 3 + 1) {
        reset_state();
        atomic_store(&g.cancel_at, at);
        sl_run_options o;
        base_options(&o, th, 4);
        o.no_fuse = at % 2 == 0;
        char text[256];
        snprintf(text, sizeof text, "t.src count=100000 size=64 ! %s ! t.work ! t.sink",
                 works[k]);
        uint64_t t0 = sl_now_ns();
        run_result r = run_text(text, &o, NULL);
        ASSERT_EQ(r.rc, SL_ECANCELED);
        ASSERT_LE(r.ok + r.failed, 100000);
        ASSERT(r.ok >= at);
        ASSERT_LE(sl_now_ns() - t0, 20000000000ull);
      }
}

/* Fused chains (three cpu stages, the last a reduction whose finish()
 * emits): every item that survives the failing head is counted exactly
 * once, fused or not, with random delays, at every thread count, and a
 * cancelled run ends without hanging or leaking, whatever the point. */
TEST(run_fused_chain_stress) {
  for (unsigned th = 1; th <= 4; th++)
    for (int fuse = 0; fuse < 2; fuse++)
      for (uint64_t at = 0; at < 3; at++) {
        reset_state();
        sl_run_options o;
        base_options(&o, th, at ? 2 : 0);
        o.no_fuse = !fuse;
        const char *text = "t.src count=2000 size=100 ! t.work delay_us=20 fail_mod=7 "
                           "! t.work copy=true delay_us=10 ! t.tally ! t.report";
        run_result r = run_text(text, &o, NULL);
        uint64_t nf = 2000 / 7, want_sum = 0;
        for (uint64_t i = 0; i < 2000; i++)
          if (i % 7 != 6) want_sum += i;
        ASSERT_EQ(r.rc, SL_EITEMS);
        ASSERT_EQ(r.failed, nf);
        ASSERT_EQ(atomic_load(&g.tallied), 2000 - nf);
        ASSERT_EQ(atomic_load(&g.tally_sum), want_sum);
        ASSERT(atomic_load(&g.tally_reports) >= 1);
        ASSERT_LE(atomic_load(&g.tally_reports), th);
        ASSERT_EQ(atomic_load(&g.payload_errors), 0);
        ASSERT_LE(atomic_load(&g.max_running), (int)th);
        /* Cancelled from the sink side: the source stops mid-stream. */
        reset_state();
        atomic_store(&g.cancel_at, 1 + at * 37);
        text = "t.src count=100000 size=64 ! t.work delay_us=30 ! t.work copy=true "
               "! t.work ! t.sink";
        r = run_text(text, &o, NULL);
        ASSERT_EQ(r.rc, SL_ECANCELED);
        ASSERT(atomic_load(&g.sink_count) >= 1 + at * 37);
        ASSERT_EQ(atomic_load(&g.payload_errors), 0);
      }
}

TEST(run_on_error_stop) {
  reset_state();
  sl_run_options o;
  base_options(&o, 2, 8);
  o.on_error = SL_ON_ERROR_STOP;
  run_result r = run_text("t.src count=100000 ! t.work fail_mod=50 ! t.sink", &o, NULL);
  ASSERT_EQ(r.rc, SL_EITEMS);
  ASSERT(r.failed >= 1);
  ASSERT(r.ok + r.failed < 100000); /* it stopped, it did not finish */
}

static void check_stop_message(sl_run *run) {
  ASSERT_CONTAINS(sl_run_error(run), "stopped: item 't-000050' failed in stage 't.work': planned failure of seq 49");
}

TEST(run_on_error_stop_message) {
  reset_state();
  sl_run_options o;
  base_options(&o, 1, 1);
  o.on_error = SL_ON_ERROR_STOP;
  run_result r = run_text("t.src count=1000 ! t.work fail_mod=50 ! t.sink", &o, check_stop_message);
  ASSERT_EQ(r.rc, SL_EITEMS);
}

TEST(run_retries) {
  reset_state();
  sl_run_options o;
  base_options(&o, 2, 0);
  o.retries = 2;
  run_result r = run_text("t.src count=200 ! t.work fail_mod=10 fail_attempts=2 ! t.sink", &o, NULL);
  ASSERT_EQ(r.rc, 0);
  ASSERT_EQ(r.ok, 200);
  reset_state();
  o.retries = 1; /* one retry is not enough for two planned failures */
  r = run_text("t.src count=200 ! t.iowork fail_mod=10 fail_attempts=2 ! t.sink", &o, NULL);
  ASSERT_EQ(r.rc, SL_EITEMS);
  ASSERT_EQ(r.failed, 20);
}

TEST(run_journal_resume) {
  char path[] = "/tmp/sluice-journal-XXXXXX";
  int fd = mkstemp(path);
  ASSERT(fd >= 0);
  close(fd);
  reset_state();
  sl_run_options o;
  base_options(&o, 2, 4);
  o.journal_path = path;
  atomic_store(&g.cancel_at, 300);
  run_result r = run_text("t.src count=1000 ! t.work ! t.sink", &o, NULL);
  ASSERT_EQ(r.rc, SL_ECANCELED);
  uint64_t first = r.ok;
  ASSERT(first >= 300 && first < 1000);
  /* Resume: exactly the unfinished items run, and together they are all. */
  reset_state();
  o.resume = true;
  r = run_text("t.src count=1000 ! t.work ! t.sink", &o, NULL);
  ASSERT_EQ(r.rc, 0);
  ASSERT_EQ(r.ok, 1000 - first);
  ASSERT_EQ(atomic_load(&g.sink_count), 1000 - first);
  /* A second resume has nothing left to do. */
  reset_state();
  r = run_text("t.src count=1000 ! t.work ! t.sink", &o, NULL);
  ASSERT_EQ(r.rc, 0);
  ASSERT_EQ(r.ok, 0);
  ASSERT_EQ(atomic_load(&g.sink_count), 0);
  unlink(path);
}

/* A budget far smaller than the queues can hold, with transforms that
 * allocate their outputs: must finish (no deadlock) and stay in budget for
 * source data. */
TEST(run_tight_memory) {
  reset_state();
  sl_run_options o;
  base_options(&o, 2, 64);
  o.memory_bytes = 256 << 10;
  run_result r = run_text("t.src count=2000 size=16KiB ! t.work copy=true ! "
                          "t.iowork copy=true workers=3 ! t.work copy=true ! t.sink ordered=true",
                          &o, NULL);
  ASSERT_EQ(r.rc, 0);
  ASSERT_EQ(r.ok, 2000);
  ASSERT_EQ(atomic_load(&g.payload_errors), 0);
  ASSERT_EQ(atomic_load(&g.order_errors), 0);
}

/* The core budget holds under item parallelism plus sl_parallel_for. */
TEST(run_core_budget) {
  for (unsigned th = 1; th <= 4; th++) {
    reset_state();
    sl_run_options o;
    base_options(&o, th, 16);
    run_result r = run_text("t.src count=500 ! t.work delay_us=30 pfor=true ! "
                            "t.work delay_us=30 block=true ! t.work delay_us=30 pfor=true ! t.sink",
                            &o, NULL);
    ASSERT_EQ(r.rc, 0);
    ASSERT_LE(atomic_load(&g.max_running), (int)th);
    ASSERT_EQ(atomic_load(&g.payload_errors), 0);
  }
}

static void check_stats_file(const char *path) {
  FILE *f = fopen(path, "r");
  ASSERT(f);
  char buf[8192];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = '\0';
  fclose(f);
  const char *keys[] = {"\"items_ok\": 50", "\"items_failed\": 5", "\"wall_s\"",
                        "\"peak_rss_bytes\"", "\"bottleneck\"", "\"stages\"",
                        "\"name\": \"t.work\"", "\"class\": \"cpu\"", "\"workers\"",
                        "\"items_in\"", "\"items_out\"", "\"bytes_in\"",
                        "\"bytes_out\"", "\"busy_s\"", "\"blocked_s\"",
                        "\"starved_s\"", "\"item\": \"t-000010\""};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) ASSERT_CONTAINS(buf, keys[i]);
}

TEST(run_stats_and_trace) {
  char dir[] = "/tmp/sluice-stats-XXXXXX";
  ASSERT(mkdtemp(dir));
  char stats[64], trace[64];
  snprintf(stats, sizeof stats, "%s/s.json", dir);
  snprintf(trace, sizeof trace, "%s/t.json", dir);
  reset_state();
  sl_run_options o;
  base_options(&o, 2, 0);
  o.stats_json_path = stats;
  o.trace_path = trace;
  run_result r = run_text("t.src count=55 ! t.work fail_mod=10 ! t.sink", &o, NULL);
  ASSERT_EQ(r.rc, SL_EITEMS);
  check_stats_file(stats);
  FILE *f = fopen(trace, "r");
  ASSERT(f);
  char buf[512];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = '\0';
  fclose(f);
  ASSERT_CONTAINS(buf, "\"traceEvents\"");
  unlink(stats);
  unlink(trace);
  rmdir(dir);
}

/* Zero copy: through stages that only read (identity), each item reaches the
 * sink with the very payload memory the source wrote -- no stage copied it. */
TEST(run_zero_copy) {
  for (unsigned th = 1; th <= 2; th++) {
    reset_state();
    sl_run_options o;
    base_options(&o, th, 0);
    run_result r = run_text("t.src count=200 size=1MiB ! t.work ! t.iowork workers=3 ! "
                            "t.work ! t.work ! t.sink ordered=true", &o, NULL);
    ASSERT_EQ(r.rc, 0);
    ASSERT_EQ(atomic_load(&g.sink_count), 200);
    ASSERT_EQ(atomic_load(&g.moved), 0);
    /* The check can fail: a copying stage moves every payload. */
    reset_state();
    r = run_text("t.src count=50 size=4KiB ! t.work copy=true ! t.sink", &o, NULL);
    ASSERT_EQ(r.rc, 0);
    ASSERT_EQ(atomic_load(&g.moved), 50);
  }
}

static const sl_test_case cases[] = {
    SL_CASE(run_zero_copy, "unit"),
    SL_CASE(run_basic_flow, "unit"),
    SL_CASE(run_on_error_stop, "unit"),
    SL_CASE(run_on_error_stop_message, "unit"),
    SL_CASE(run_retries, "unit"),
    SL_CASE(run_journal_resume, "unit"),
    SL_CASE(run_stats_and_trace, "unit"),
    SL_CASE(run_sweep, "stress"),
    SL_CASE(run_cancel_sweep, "stress"),
    SL_CASE(run_fused_chain_stress, "stress"),
    SL_CASE(run_tight_memory, "stress"),
    SL_CASE(run_core_budget, "stress"),
};
SL_TEST_MAIN(cases)
