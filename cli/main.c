/*
 * main.c -- the `sluice` command: run, plan and stages. Uses the public API
 * only.
 *
 * Signals: SIGINT and SIGTERM are blocked in every thread before the run
 * starts and taken by one thread with sigwait(), which calls sl_run_cancel()
 * on the first signal (a normal function call, so the engine can lock and
 * wake threads) and _exit(130) on the second.
 *
 * Exit status: 0 all items succeeded; 1 the run finished but some items
 * failed; 2 usage or pipeline error; 130 interrupted.
 */
#include "sluice.h"
#include "sluice_io.h"
#include "sluice_stages.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { EXIT_OK = 0, EXIT_ITEMS = 1, EXIT_USAGE = 2, EXIT_INTERRUPTED = 130 };

static const char usage_text[] =
    "usage: sluice run PIPELINE [name=value ...] [options]\n"
    "       sluice plan PIPELINE [name=value ...] [options]\n"
    "       sluice stages [NAME]\n"
    "       sluice --version\n"
    "\n"
    "PIPELINE is a pipeline file, or - to read it from standard input.\n"
    "name=value arguments fill ${name} in the pipeline file.\n"
    "\n"
    "options:\n"
    "  --threads N        core budget (default: OMP_NUM_THREADS or all cores)\n"
    "  --memory SIZE      arena budget for payloads, e.g. 512MiB (default 1GiB)\n"
    "  --queue N          default queue capacity in items (default 128)\n"
    "  --queue-bytes SIZE payload a queue may hold before it counts as full\n"
    "                     (default 16MiB; an empty queue always takes one item)\n"
    "  --on-error POLICY  skip (default): record the item and go on;\n"
    "                     stop: end the run at the first failed item\n"
    "  --retries N        extra attempts for a failed item (default 0)\n"
    "  --journal FILE     record finished items in FILE\n"
    "  --resume           skip items finished by an earlier run (journal, or\n"
    "                     outputs a sink reports complete)\n"
    "  --stats-json FILE  write run statistics as JSON\n"
    "  --trace FILE       write a Chrome trace-event file (open in Perfetto)\n"
    "  --progress         always draw the progress bar (default: on a TTY)\n"
    "  --no-progress      never draw it\n"
    "  --no-fuse          give every cpu stage its own queue and driver (default:\n"
    "                     adjacent cpu stages run item by item on one thread)\n"
    "  --quiet            no end-of-run summary\n"
    "  -h, --help         this help\n"
    "\n"
    "exit status: 0 all items succeeded, 1 some items failed, 2 usage or\n"
    "pipeline error, 130 interrupted.\n";

typedef struct cli {
  const char *cmd, *pipeline;
  const char **vars;
  size_t nvars;
  sl_run_options opt;
  bool quiet;
} cli;

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "sluice: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nrun 'sluice --help' for usage\n");
  return EXIT_USAGE;
}

static int parse_uint(const char *opt, const char *s, unsigned long max,
                      unsigned long *out) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (!*s || *end || errno || v > max || *s == '-') {
    fprintf(stderr, "sluice: %s: '%s' is not a valid number (0..%lu)\n", opt, s, max);
    return -1;
  }
  *out = v;
  return 0;
}

/* Applies one option that takes a value. @return 0, or -1 after a message. */
static int apply_option(cli *c, const char *name, const char *val) {
  unsigned long v;
  if (strcmp(name, "--threads") == 0) {
    if (parse_uint(name, val, 4096, &v) < 0) return -1;
    if (v == 0) return usage_error("--threads must be at least 1", ""), -1;
    c->opt.threads = (unsigned)v;
  } else if (strcmp(name, "--memory") == 0) {
    uint64_t b;
    if (sl_parse_size(val, &b) < 0 || b < 4096) {
      fprintf(stderr, "sluice: --memory: '%s' is not a size of at least 4KiB (e.g. 512MiB)\n", val);
      return -1;
    }
    c->opt.memory_bytes = b;
  } else if (strcmp(name, "--queue") == 0) {
    if (parse_uint(name, val, 1000000, &v) < 0) return -1;
    if (v == 0) return usage_error("--queue must be at least 1", ""), -1;
    c->opt.queue_capacity = v;
  } else if (strcmp(name, "--queue-bytes") == 0) {
    uint64_t b;
    if (sl_parse_size(val, &b) < 0 || b == 0) {
      fprintf(stderr, "sluice: --queue-bytes: '%s' is not a size above 0 (e.g. 64MiB)\n", val);
      return -1;
    }
    c->opt.queue_bytes = b;
  } else if (strcmp(name, "--on-error") == 0) {
    if (strcmp(val, "skip") == 0) c->opt.on_error = SL_ON_ERROR_SKIP;
    else if (strcmp(val, "stop") == 0) c->opt.on_error = SL_ON_ERROR_STOP;
    else return usage_error("--on-error: '%s' must be skip or stop", val), -1;
  } else if (strcmp(name, "--retries") == 0) {
    if (parse_uint(name, val, 1000, &v) < 0) return -1;
    c->opt.retries = (unsigned)v;
  } else if (strcmp(name, "--journal") == 0) {
    c->opt.journal_path = val;
  } else if (strcmp(name, "--stats-json") == 0) {
    c->opt.stats_json_path = val;
  } else if (strcmp(name, "--trace") == 0) {
    c->opt.trace_path = val;
  } else {
    return usage_error("unknown option '%s'", name), -1;
  }
  return 0;
}

static bool takes_value(const char *name) {
  static const char *const with[] = {"--threads", "--memory", "--queue", "--queue-bytes",
                                     "--on-error", "--retries", "--journal",
                                     "--stats-json", "--trace"};
  for (size_t i = 0; i < sizeof with / sizeof with[0]; i++)
    if (strcmp(name, with[i]) == 0) return true;
  return false;
}

static int parse_flag(cli *c, const char *a) {
  if (strcmp(a, "--resume") == 0) c->opt.resume = true;
  else if (strcmp(a, "--progress") == 0) c->opt.progress = SL_PROGRESS_ON;
  else if (strcmp(a, "--no-progress") == 0) c->opt.progress = SL_PROGRESS_OFF;
  else if (strcmp(a, "--quiet") == 0) c->quiet = true;
  else if (strcmp(a, "--no-fuse") == 0) c->opt.no_fuse = true;
  else return usage_error("unknown option '%s'", a), -1;
  return 0;
}

/* Parses everything after the subcommand. @return 0, 1 for --help, -1. */
static int parse_args(cli *c, int argc, char **argv) {
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) return 1;
    if (a[0] == '-' && a[1] == '-') {
      char name[64];
      const char *eq = strchr(a, '=');
      size_t n = eq ? (size_t)(eq - a) : strlen(a);
      if (n >= sizeof name) return usage_error("unknown option '%s'", a), -1;
      memcpy(name, a, n);
      name[n] = '\0';
      if (!takes_value(name)) {
        if (eq) return usage_error("option '%s' takes no value", name), -1;
        if (parse_flag(c, name) < 0) return -1;
        continue;
      }
      const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
      if (!val) return usage_error("option '%s' needs a value", name), -1;
      if (apply_option(c, name, val) < 0) return -1;
    } else if (!c->pipeline) {
      c->pipeline = a;
    } else if (strchr(a, '=') && a[0] != '=') {
      c->vars[c->nvars++] = a;
    } else {
      return usage_error("unexpected argument '%s' (variables are name=value)", a), -1;
    }
  }
  return 0;
}

/* Reads the whole pipeline file ("-" = stdin). @return malloc'd text. */
static char *read_text(const char *path, size_t *len) {
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "sluice: cannot open pipeline '%s': %s\n", path, strerror(errno));
    return NULL;
  }
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    if (n == cap) {
      char *b = cap > (64u << 20) ? NULL : realloc(buf, cap * 2);
      if (!b) {
        fprintf(stderr, "sluice: pipeline '%s' is too large\n", path);
        free(buf);
        buf = NULL;
        break;
      }
      buf = b;
      cap *= 2;
    }
    size_t r = fread(buf + n, 1, cap - n, f);
    n += r;
    if (r == 0) {
      if (ferror(f)) {
        fprintf(stderr, "sluice: cannot read pipeline '%s': %s\n", path, strerror(errno));
        free(buf);
        buf = NULL;
      }
      break;
    }
  }
  if (f != stdin) fclose(f);
  *len = n;
  return buf;
}

/* --- passes ------------------------------------------------------------ */

/* A pipeline file may hold several passes separated by a line `---`. Pass
 * k is parsed from a copy of the text in which every other pass's bytes
 * are blanked (newlines kept), so messages keep the file's line numbers. */
#define MAX_PASSES 16

typedef struct passes {
  size_t n;
  size_t begin[MAX_PASSES], end[MAX_PASSES];
} passes;

/* True when line [b, e) is `---` with optional blanks around. */
static bool is_separator(const char *s, size_t b, size_t e) {
  while (b < e && (s[b] == ' ' || s[b] == '\t')) b++;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r')) e--;
  return e - b == 3 && memcmp(s + b, "---", 3) == 0;
}

static int split_passes(const char *s, size_t len, passes *ps) {
  ps->n = 0;
  size_t start = 0;
  for (size_t b = 0; b <= len;) {
    size_t e = b;
    while (e < len && s[e] != '\n') e++;
    if (is_separator(s, b, e) || e >= len) {
      if (ps->n == MAX_PASSES) {
        fprintf(stderr, "sluice: more than %d passes in one file\n", MAX_PASSES);
        return -1;
      }
      ps->begin[ps->n] = start;
      ps->end[ps->n++] = is_separator(s, b, e) ? b : len;
      start = e + 1;
    }
    if (e >= len) break;
    b = e + 1;
  }
  return 0;
}

/* Pass k's text: the file with every byte outside the pass blanked. */
static char *pass_text(const char *s, size_t len, const passes *ps, size_t k) {
  char *t = malloc(len + 1);
  if (!t) return NULL;
  for (size_t i = 0; i < len; i++) {
    bool in = i >= ps->begin[k] && i < ps->end[k];
    t[i] = in || s[i] == '\n' ? s[i] : ' ';
  }
  t[len] = '\0';
  return t;
}

static int parse_text(cli *c, sl_registry *reg, const char *text, size_t len,
                      const char *const *vars, size_t nvars, sl_pipeline **out) {
  int rc = sl_pipeline_create(out, reg);
  if (rc == 0) {
    const char *name = strcmp(c->pipeline, "-") == 0 ? "<stdin>" : c->pipeline;
    rc = sl_pipeline_parse(*out, name, text, len, vars, nvars);
  }
  if (rc < 0) {
    const char *errs = *out ? sl_pipeline_errors(*out) : "";
    if (*errs) fputs(errs, stderr);
    else fprintf(stderr, "sluice: %s\n", sl_strerror(rc));
    return EXIT_USAGE;
  }
  return EXIT_OK;
}

/* --- signals ----------------------------------------------------------- */

typedef struct sig_ctx {
  sl_run *run;
  sigset_t set;
} sig_ctx;

static void *signal_main(void *arg) {
  sig_ctx *s = arg;
  int count = 0;
  for (;;) {
    int sig;
    if (sigwait(&s->set, &sig) != 0) continue;
    if (sig == SIGUSR1) return NULL; /* the run is over */
    if (++count > 1) {
      static const char msg[] = "\nsluice: aborted\n";
      ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
      (void)w;
      _exit(EXIT_INTERRUPTED);
    }
    static const char msg[] = "\nsluice: interrupted, stopping (again to abort)\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
    sl_run_cancel(s->run);
  }
}

static int exit_code(int rc) {
  if (rc == 0) return EXIT_OK;
  if (rc == SL_ECANCELED) return EXIT_INTERRUPTED;
  if (rc == SL_EITEMS) return EXIT_ITEMS;
  return EXIT_ITEMS;
}

static int cmd_run(cli *c, sl_pipeline *p) {
  /* This run's options: the rank's journal name lives in this frame. */
  sl_run_options opt = c->opt;
  if (!c->quiet) opt.report = stderr;
  unsigned rank = sl_dist_rank(opt.dist), ranks = sl_dist_size(opt.dist);
  char journal[4096];
  if (ranks > 1) {
    /* One progress bar for the job; each rank its own journal and summary. */
    if (rank > 0) opt.progress = SL_PROGRESS_OFF;
    if (opt.journal_path) {
      snprintf(journal, sizeof journal, "%s.rank%u", opt.journal_path, rank);
      opt.journal_path = journal;
    }
    if (!c->quiet) fprintf(stderr, "sluice: rank %u of %u\n", rank, ranks);
  }
  sig_ctx s;
  sigemptyset(&s.set);
  sigaddset(&s.set, SIGINT);
  sigaddset(&s.set, SIGTERM);
  sigaddset(&s.set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &s.set, NULL);
  sl_run *run = NULL;
  int rc = sl_run_create(&run, p, &opt);
  if (rc < 0) {
    fprintf(stderr, "sluice: %s\n", *sl_run_error(run) ? sl_run_error(run) : sl_strerror(rc));
    sl_run_destroy(run);
    return EXIT_USAGE;
  }
  s.run = run;
  pthread_t sig_thread;
  bool have_sig = pthread_create(&sig_thread, NULL, signal_main, &s) == 0;
  rc = sl_run_execute(run);
  if (have_sig) {
    pthread_kill(sig_thread, SIGUSR1);
    pthread_join(sig_thread, NULL);
  }
  if (rc < 0 && rc != SL_EITEMS && rc != SL_ECANCELED)
    fprintf(stderr, "sluice: run failed: %s\n", *sl_run_error(run) ? sl_run_error(run) : sl_strerror(rc));
  else if (c->quiet && *sl_run_error(run))
    fprintf(stderr, "sluice: %s\n", sl_run_error(run));
  sl_run_destroy(run);
  if (ranks > 1 && rc < 0 && rc != SL_EITEMS && rc != SL_ECANCELED) {
    /* The other ranks may wait for this one: end the whole job. */
    fprintf(stderr, "sluice: rank %u of %u failed; ending the job\n", rank, ranks);
    sl_dist_abort(opt.dist, exit_code(rc));
  }
  return exit_code(rc);
}

/* --- variables between passes -------------------------------------------- */

typedef struct vars {
  char **v;
  size_t n, cap;
} vars;

static int vars_add(vars *v, const char *s) {
  if (v->n == v->cap) {
    size_t cap = v->cap ? 2 * v->cap : 16;
    char **a = realloc(v->v, cap * sizeof *a);
    if (!a) return -1;
    v->v = a;
    v->cap = cap;
  }
  if (!(v->v[v->n] = strdup(s))) return -1;
  v->n++;
  return 0;
}

static void vars_free(vars *v) {
  for (size_t i = 0; i < v->n; i++) free(v->v[i]);
  free(v->v);
}

/* Adds what the pass's capture stages set to `v` (later entries win).
 * Under mpirun only rank 0 ran the capture: it sends the lines to all. */
static int capture_vars(cli *c, const sl_pipeline *p, vars *v) {
  const char *const *got = NULL;
  size_t n = sl_stages_captured(p, &got);
  char *joined = NULL;
  size_t len = 1;
  for (size_t i = 0; i < n; i++) len += strlen(got[i]) + 1;
  if (!(joined = malloc(len))) return -1;
  joined[0] = '\0';
  for (size_t i = 0; i < n; i++) {
    strcat(joined, got[i]);
    strcat(joined, "\n");
  }
  if (sl_dist_size(c->opt.dist) > 1 && sl_dist_share(c->opt.dist, &joined) < 0) {
    fprintf(stderr, "sluice: cannot share the captured values between ranks\n");
    free(joined);
    return -1;
  }
  int rc = 0;
  for (char *line = joined, *nl; rc == 0 && (nl = strchr(line, '\n')); line = nl + 1) {
    *nl = '\0';
    if (*line) rc = vars_add(v, line);
  }
  free(joined);
  return rc;
}

/* --- stages ------------------------------------------------------------ */

static int cmd_stages(sl_registry *reg, const char *name) {
  if (name) {
    const sl_stage_def *d = sl_registry_find(reg, name);
    if (!d) {
      fprintf(stderr, "sluice: unknown stage '%s'\nrun 'sluice stages' to list stages\n", name);
      return EXIT_USAGE;
    }
    sl_stage_def_print_help(d, stdout);
    return EXIT_OK;
  }
  printf("%-14s %-7s %-15s %s\n", "STAGE", "CLASS", "INPUT -> OUTPUT", "SUMMARY");
  for (size_t i = 0; i < sl_registry_count(reg); i++) {
    const sl_stage_def *d = sl_registry_at(reg, i);
    char kinds[32];
    snprintf(kinds, sizeof kinds, "%s -> %s", sl_kind_name(d->in_kind), sl_kind_name(d->out_kind));
    printf("%-14s %-7s %-15s %s\n", d->name, sl_exec_class_name(d->exec), kinds,
           d->summary ? d->summary : "");
  }
  printf("\n'sluice stages NAME' shows a stage's parameters.\n");
  return EXIT_OK;
}

static int dispatch(cli *c, sl_registry *reg, int argc, char **argv) {
  int pr = parse_args(c, argc, argv);
  if (pr == 1) {
    fputs(usage_text, stdout);
    return EXIT_OK;
  }
  if (pr < 0) return EXIT_USAGE;
  if (strcmp(c->cmd, "stages") == 0) {
    if (c->nvars) return usage_error("'stages' takes at most one stage name", "");
    return cmd_stages(reg, c->pipeline);
  }
  if (!c->pipeline) return usage_error("'%s' needs a pipeline file (or - for stdin)", c->cmd);
  size_t len = 0;
  char *text = read_text(c->pipeline, &len);
  if (!text) return EXIT_USAGE;
  passes ps;
  int rc = split_passes(text, len, &ps) < 0 ? EXIT_USAGE : EXIT_OK;
  vars v = {0};
  for (size_t i = 0; i < c->nvars && rc == EXIT_OK; i++)
    if (vars_add(&v, c->vars[i]) < 0) rc = EXIT_USAGE;
  const char *journal = c->opt.journal_path;
  char journal_k[4096];
  for (size_t k = 0; k < ps.n && rc == EXIT_OK; k++) {
    char *t = ps.n == 1 ? text : pass_text(text, len, &ps, k);
    sl_pipeline *p = NULL;
    if (!t) {
      rc = EXIT_USAGE;
      break;
    }
    if (strcmp(c->cmd, "plan") == 0 && k > 0) {
      printf("\npass %zu: planned when the passes before it have run (it may use "
             "the values they capture)\n", k + 1);
    } else {
      rc = parse_text(c, reg, t, len, (const char *const *)v.v, v.n, &p);
      if (rc == EXIT_OK && ps.n > 1 && !c->quiet && sl_dist_rank(c->opt.dist) == 0)
        fprintf(stderr, "sluice: pass %zu of %zu\n", k + 1, ps.n);
      if (rc == EXIT_OK && strcmp(c->cmd, "plan") == 0) {
        rc = sl_pipeline_plan(p, &c->opt, stdout) < 0 ? EXIT_USAGE : EXIT_OK;
      } else if (rc == EXIT_OK) {
        if (journal && k > 0) { /* each pass its own journal */
          snprintf(journal_k, sizeof journal_k, "%s.pass%zu", journal, k + 1);
          c->opt.journal_path = journal_k;
        }
        rc = cmd_run(c, p);
        /* Under mpirun every rank goes on to the next pass, or none does. */
        if (k + 1 < ps.n && !sl_dist_agree(c->opt.dist, rc == EXIT_OK) && rc == EXIT_OK) {
          fprintf(stderr, "sluice: pass %zu failed on another rank; the passes after "
                  "it do not run\n", k + 1);
          rc = EXIT_ITEMS;
        }
        if (rc == EXIT_OK && k + 1 < ps.n && capture_vars(c, p, &v) < 0) rc = EXIT_USAGE;
      }
    }
    sl_pipeline_destroy(p);
    if (t != text) free(t);
  }
  vars_free(&v);
  free(text);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fputs(usage_text, stderr);
    return EXIT_USAGE;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
    printf("sluice %s\n", SL_VERSION_STRING);
    return EXIT_OK;
  }
  if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
    fputs(usage_text, stdout);
    return EXIT_OK;
  }
  if (strcmp(cmd, "run") && strcmp(cmd, "plan") && strcmp(cmd, "stages"))
    return usage_error("unknown command '%s' (run, plan, stages)", cmd);
  sl_registry *reg = NULL;
  if (sl_registry_create(&reg) < 0 || sl_stages_register_all(reg) < 0 ||
      sl_io_register_all(reg) < 0) {
    fprintf(stderr, "sluice: cannot set up the stage registry\n");
    sl_registry_destroy(reg);
    return EXIT_USAGE;
  }
  cli c = {.cmd = cmd};
  sl_run_options_init(&c.opt);
  if (strcmp(cmd, "run") == 0) {
    int drc = sl_dist_init(&argc, &argv, &c.opt.dist);
    if (drc < 0) {
      fprintf(stderr, "sluice: started by mpirun, but %s\n",
              drc == SL_EUNSUPPORTED ? "this sluice was built without MPI "
                                       "(install libopenmpi-dev and rebuild)"
                                     : "MPI failed to start");
      sl_registry_destroy(reg);
      return EXIT_USAGE;
    }
  }
  c.vars = calloc((size_t)argc, sizeof *c.vars);
  int rc = c.vars ? dispatch(&c, reg, argc, argv) : EXIT_USAGE;
  free(c.vars);
  sl_registry_destroy(reg);
  sl_dist_finalize(c.opt.dist);
  return rc;
}
