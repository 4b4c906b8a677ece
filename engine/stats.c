/*
 * stats.c -- what a run tells its user: the progress bar (only on a TTY),
 * the end-of-run summary per stage naming the bottleneck, --stats-json and
 * the Chrome trace-event file (--trace, opens in Perfetto).
 *
 * Per-stage figures: busy is time spent inside the stage's callbacks summed
 * over its workers; blocked is time its producers waited on a full output
 * queue (downstream is slower); starved is time its consumers waited on an
 * empty input queue (upstream is slower). Shares divide by workers x wall.
 * The bottleneck is the stage with the highest busy share.
 */
#include "run_internal.h"

#include <string.h>
#include <unistd.h>

uint64_t sl__peak_rss_bytes(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  uint64_t kb = 0;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "VmHWM:", 6) == 0) {
      kb = strtoull(line + 6, NULL, 10);
      break;
    }
  }
  fclose(f);
  return kb * 1024;
}

typedef struct stage_fig {
  double busy_s, blocked_s, starved_s;
  uint64_t items_in, items_out, bytes_in, bytes_out;
} stage_fig;

static void figures(sl_run *r, size_t i, stage_fig *f) {
  sl__rt *rt = &r->rt[i];
  memset(f, 0, sizeof *f);
  f->busy_s = (double)atomic_load(&rt->busy_ns) / 1e9;
  f->items_in = atomic_load(&rt->items_in);
  f->items_out = atomic_load(&rt->items_out);
  f->bytes_in = atomic_load(&rt->bytes_in);
  f->bytes_out = atomic_load(&rt->bytes_out);
  sl_queue_stats qs;
  if (rt->out) {
    sl_queue_get_stats(rt->out, &qs);
    f->blocked_s = (double)qs.blocked_ns / 1e9;
  }
  if (rt->in) {
    sl_queue_get_stats(rt->in, &qs);
    f->starved_s = (double)qs.starved_ns / 1e9;
  }
}

static double wall_seconds(sl_run *r) {
  uint64_t end = r->t_end ? r->t_end : sl_now_ns();
  return (double)(end - r->t_start) / 1e9;
}

/* Threads that can be busy in stage i at once (for shares). */
static double stage_width(sl_run *r, size_t i) {
  sl__rt *rt = &r->rt[i];
  return rt->nworkers ? (double)rt->nworkers : 1.0;
}

int sl__bottleneck(sl_run *r, double wall_s) {
  int best = -1;
  double best_share = -1;
  for (size_t i = 0; i < r->n; i++) {
    stage_fig f;
    figures(r, i, &f);
    double share = wall_s > 0 ? f.busy_s / (stage_width(r, i) * wall_s) : 0;
    if (share > best_share) {
      best_share = share;
      best = (int)i;
    }
  }
  return best;
}

/* --- progress bar ------------------------------------------------------ */

static bool progress_enabled(sl_run *r) {
  if (r->opt.progress == SL_PROGRESS_OFF) return false;
  if (r->opt.progress == SL_PROGRESS_ON) return true;
  return isatty(STDERR_FILENO);
}

static void fmt_duration(char *buf, size_t n, double s) {
  if (s < 0 || s > 99 * 3600) snprintf(buf, n, "--:--");
  else if (s >= 3600) snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
  else snprintf(buf, n, "%02d:%02d", (int)(s / 60), (int)s % 60);
}

void sl__progress_update(sl_run *r, bool final) {
  if (!progress_enabled(r)) return;
  uint64_t ok = atomic_load(&r->ok), failed = atomic_load(&r->failed);
  uint64_t skipped = atomic_load(&r->skipped), total = atomic_load(&r->total);
  uint64_t done = ok + failed;
  uint64_t todo = total > skipped ? total - skipped : 0;
  double wall = wall_seconds(r);
  double rate = wall > 0 ? (double)done / wall : 0;
  char eta[16], line[160];
  const int width = 24;
  if (todo) {
    double frac = (double)done / (double)todo;
    if (frac > 1) frac = 1;
    char bar[32];
    int fill = (int)(frac * width);
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    fmt_duration(eta, sizeof eta, rate > 0 ? (double)(todo - (done < todo ? done : todo)) / rate : -1);
    snprintf(line, sizeof line, "[%s] %3d%% %llu/%llu items  %.0f/s  ETA %s",
             bar, (int)(frac * 100), (unsigned long long)done,
             (unsigned long long)todo, rate, final ? "00:00" : eta);
  } else {
    snprintf(line, sizeof line, "%llu items  %.0f/s", (unsigned long long)done, rate);
  }
  if (failed)
    snprintf(line + strlen(line), sizeof line - strlen(line), "  %llu failed",
             (unsigned long long)failed);
  fprintf(stderr, "\r%s\033[K%s", line, final ? "\n" : "");
  fflush(stderr);
}

/* --- summary ----------------------------------------------------------- */

static double pct(double part, double whole) {
  return whole > 0 ? 100.0 * part / whole : 0;
}

void sl__report_write(sl_run *r, FILE *out) {
  double wall = wall_seconds(r);
  uint64_t ok = atomic_load(&r->ok), failed = atomic_load(&r->failed);
  uint64_t skipped = atomic_load(&r->skipped);
  fprintf(out, "sluice: %llu ok, %llu failed, %llu skipped in %.2f s (%.0f items/s, %u threads)\n",
          (unsigned long long)ok, (unsigned long long)failed,
          (unsigned long long)skipped, wall, wall > 0 ? (double)(ok + failed) / wall : 0,
          r->threads);
  fprintf(out, "  %-3s %-16s %-6s %7s %10s %10s %10s %10s %6s %8s %8s\n", "#",
          "stage", "class", "workers", "items in", "items out", "bytes in",
          "bytes out", "busy", "blocked", "starved");
  for (size_t i = 0; i < r->n; i++) {
    stage_fig f;
    figures(r, i, &f);
    char bi[16], bo[16];
    sl__format_bytes(bi, sizeof bi, f.bytes_in);
    sl__format_bytes(bo, sizeof bo, f.bytes_out);
    double cap = stage_width(r, i) * wall;
    fprintf(out, "  %-3zu %-16s %-6s %7u %10llu %10llu %10s %10s %5.0f%% %7.0f%% %7.0f%%\n",
            i + 1, r->rt[i].def->name, sl_exec_class_name(r->rt[i].def->exec),
            r->rt[i].nworkers, (unsigned long long)f.items_in,
            (unsigned long long)f.items_out, bi, bo, pct(f.busy_s, cap),
            pct(f.blocked_s, wall), pct(f.starved_s, cap));
  }
  int b = sl__bottleneck(r, wall);
  if (b >= 0) fprintf(out, "  bottleneck: %s (stage %d)\n", r->rt[b].def->name, b + 1);
  char rss[16];
  sl__format_bytes(rss, sizeof rss, sl__peak_rss_bytes());
  fprintf(out, "  peak memory: %s RSS\n", rss);
  if (r->nfailures) {
    fprintf(out, "failures (%zu):\n", r->nfailures);
    for (size_t i = 0; i < r->nfailures; i++)
      fprintf(out, "  %s: %s: %s\n", r->failures[i].item, r->failures[i].stage,
              r->failures[i].message);
  }
  if (r->error) fprintf(out, "sluice: %s\n", r->error);
}

/* --- JSON -------------------------------------------------------------- */

static int write_file_atomic(const char *path, const sl__buf *b) {
  char *tmp = sl__asprintf("%s.tmp-%ld", path, (long)getpid());
  if (!tmp) return SL_ENOMEM;
  FILE *f = fopen(tmp, "w");
  int rc = f ? 0 : -errno;
  if (f) {
    if (b->len && fwrite(b->data, 1, b->len, f) != b->len) rc = SL_EIO;
    if (fclose(f) != 0 && rc == 0) rc = -errno;
  }
  if (rc == 0 && rename(tmp, path) != 0) rc = -errno;
  if (rc < 0) {
    unlink(tmp);
    fprintf(stderr, "sluice: cannot write '%s': %s\n", path, sl_strerror(rc));
  }
  free(tmp);
  return rc;
}

int sl__stats_json_write(sl_run *r, const char *path) {
  sl__buf b = {0};
  double wall = wall_seconds(r);
  int bn = sl__bottleneck(r, wall);
  sl_arena_stats ast;
  sl_arena_get_stats(r->arena, &ast);
  sl__buf_printf(&b, "{\n  \"items_ok\": %llu,\n  \"items_failed\": %llu,\n"
                 "  \"items_skipped\": %llu,\n  \"wall_s\": %.6f,\n"
                 "  \"peak_rss_bytes\": %llu,\n  \"threads\": %u,\n"
                 "  \"memory_budget_bytes\": %llu,\n  \"memory_peak_bytes\": %llu,\n"
                 "  \"interrupted\": %s,\n  \"bottleneck\": ",
                 (unsigned long long)atomic_load(&r->ok),
                 (unsigned long long)atomic_load(&r->failed),
                 (unsigned long long)atomic_load(&r->skipped), wall,
                 (unsigned long long)sl__peak_rss_bytes(), r->threads,
                 (unsigned long long)ast.budget, (unsigned long long)ast.peak,
                 atomic_load(&r->canceled) ? "true" : "false");
  if (bn >= 0) sl__buf_json_string(&b, r->rt[bn].def->name);
  else sl__buf_puts(&b, "null");
  sl__buf_puts(&b, ",\n  \"stages\": [");
  for (size_t i = 0; i < r->n; i++) {
    stage_fig f;
    figures(r, i, &f);
    sl__buf_puts(&b, i ? ",\n    {\"name\": " : "\n    {\"name\": ");
    sl__buf_json_string(&b, r->rt[i].def->name);
    sl__buf_printf(&b, ", \"class\": \"%s\", \"workers\": %u, \"items_in\": %llu, "
                   "\"items_out\": %llu, \"bytes_in\": %llu, \"bytes_out\": %llu, "
                   "\"busy_s\": %.6f, \"blocked_s\": %.6f, \"starved_s\": %.6f}",
                   sl_exec_class_name(r->rt[i].def->exec), r->rt[i].nworkers,
                   (unsigned long long)f.items_in, (unsigned long long)f.items_out,
                   (unsigned long long)f.bytes_in, (unsigned long long)f.bytes_out,
                   f.busy_s, f.blocked_s, f.starved_s);
  }
  sl__buf_puts(&b, "\n  ],\n  \"failures\": [");
  for (size_t i = 0; i < r->nfailures; i++) {
    sl__buf_puts(&b, i ? ",\n    {\"item\": " : "\n    {\"item\": ");
    sl__buf_json_string(&b, r->failures[i].item);
    sl__buf_puts(&b, ", \"stage\": ");
    sl__buf_json_string(&b, r->failures[i].stage);
    sl__buf_puts(&b, ", \"message\": ");
    sl__buf_json_string(&b, r->failures[i].message);
    sl__buf_puts(&b, "}");
  }
  sl__buf_puts(&b, r->nfailures ? "\n  ]\n}\n" : "]\n}\n");
  int rc = b.oom ? SL_ENOMEM : write_file_atomic(path, &b);
  sl__buf_free(&b);
  return rc;
}

/* --- trace ------------------------------------------------------------- */

int sl__trace_write(sl_run *r, const char *path) {
  sl__buf b = {0};
  uint64_t n = atomic_load(&r->ntrace);
  if (n > SL__TRACE_MAX_EVENTS) n = SL__TRACE_MAX_EVENTS;
  sl__buf_puts(&b, "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n");
  /* Thread names: one track per (stage, worker). */
  for (size_t i = 0; i < r->n; i++) {
    for (unsigned k = 0; k < r->rt[i].nworkers; k++) {
      sl__buf_printf(&b, "{\"ph\": \"M\", \"name\": \"thread_name\", \"pid\": 1, "
                     "\"tid\": %zu, \"args\": {\"name\": \"%zu %s #%u\"}},\n",
                     i * 1000 + k, i + 1, r->rt[i].def->name, k);
    }
  }
  for (uint64_t e = 0; e < n; e++) {
    sl__trace_ev *ev = &r->trace[e];
    sl__buf_puts(&b, "{\"ph\": \"X\", \"name\": ");
    sl__buf_json_string(&b, r->rt[ev->stage].def->name);
    sl__buf_printf(&b, ", \"pid\": 1, \"tid\": %llu, \"ts\": %.3f, \"dur\": %.3f, "
                   "\"args\": {\"seq\": %llu}},\n",
                   (unsigned long long)ev->stage * 1000 + ev->tid,
                   (double)(ev->ts_ns - r->t_start) / 1e3, (double)ev->dur_ns / 1e3,
                   (unsigned long long)ev->seq);
  }
  sl__buf_puts(&b, "{\"ph\": \"M\", \"name\": \"process_name\", \"pid\": 1, "
               "\"args\": {\"name\": \"sluice\"}}\n]}\n");
  int rc = b.oom ? SL_ENOMEM : write_file_atomic(path, &b);
  sl__buf_free(&b);
  return rc;
}
