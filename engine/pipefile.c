/*
 * pipefile.c -- pipeline files: parsing, validation, and configured stages.
 *
 * THE PIPELINE-FILE LANGUAGE (reference for docs/)
 *
 * A pipeline file describes one chain of stages, source first, sink last:
 *
 *     # thumbnails: every PNG under ${in}, resized, written under ${out}
 *     files.list dir=${in} pattern='*.png'
 *     ! files.read
 *     ! png.decode ! resize width=256 \
 *         height=256 filter=lanczos
 *     ! png.encode ! files.write dir="${out}" order=any
 *
 * Stages. A stage is its name followed by `key=value` parameters separated
 * by blanks (space, tab, CR, FF, VT). Stages are separated by line breaks
 * or by `!` (as in GStreamer's gst-launch): several stages may share a line
 * and a line may begin or end with `!`. Line breaks around a `!` do not
 * separate anything further, but two `!` with no stage between them are an
 * error, as are a `!` before the first stage and after the last.
 * Stage names and keys are runs of bytes other than blanks, line breaks,
 * `!`, `#`, `=` and quotes; there are no blanks around `=`.
 *
 * Comments and blank lines. `#` starts a comment that runs to the end of
 * the line, anywhere outside quotes, including right after a value: an
 * unquoted value ends at a blank, a line break, `!` or `#`, so a value
 * containing any of these must be quoted (`color='#ff0000'`).
 *
 * Continuation. A backslash that is the last character of a line (blanks
 * after it are ignored) joins the next line to it, as if the line break
 * were a blank. A backslash anywhere else outside double quotes is an
 * ordinary character (`dir=C:\data` is fine); one at the end of a comment
 * is part of the comment and continues nothing.
 *
 * Encoding. Text is bytes; names and values may hold any byte but NUL
 * (UTF-8 passes through untouched). A UTF-8 byte-order mark at the very
 * start is skipped. Lines end with LF; a CR before it counts as a blank.
 *
 * Values. A value is a sequence of unquoted text and quoted pieces with no
 * blank between them, concatenated: `name=thumb_"$$x".png` is `thumb_$x.png`.
 *   '...'  single quotes: every byte literal, no substitution.
 *   "..."  double quotes: \" \\ \n \t are escapes (any other backslash is
 *          kept as is), `${...}` and `$$` are substituted.
 * A quote must close on the line where it opens. `key=` is an empty value.
 *
 * Variables. In unquoted text and double quotes, `${name}` is replaced by
 * the value of variable `name` (from "name=value" strings, the command line
 * in the CLI; when one is given twice the last wins), `${name:-default}`
 * by the variable or, when it is unset or empty, by `default` (literal text
 * up to the first `}`). `$$` is a literal `$`; a `$` followed by anything
 * else is literal too. Names are letters, digits and `_`, not starting with
 * a digit. Substituted text is never re-scanned. Substitution applies to
 * values only, not to stage names or keys.
 *
 * Parameters every stage accepts (values kept in struct sl_stage):
 *   order=source|any   output order (Python's map vs as_completed)
 *   workers=1..1024    io workers / cpu thread cap
 *   queue=1..1000000   capacity of the stage's output queue
 * Each stage's own parameters are typed (see params.c); unset ones take
 * their default, and a parameter without a default must be given.
 *
 * Checks, all before anything runs: syntax, stage names, parameter names,
 * values and bounds, duplicates, required parameters, payload kinds between
 * neighbours (the first stage must be a source and the only one, the last a
 * sink, each stage's input must accept what the previous one produces; an
 * input of kind any accepts everything, an output of kind same is the
 * resolved input, an output of kind any connects to anything), then each
 * stage's own create(). Text may be any bytes: a NUL byte is an error.
 *
 * Errors. Every problem is recorded, not just the first (up to MAX_ERRORS;
 * after a syntax error the parser resumes at the next parameter, stage or
 * line), as "file:line:col: message" with 1-based line and column (the
 * column counts bytes; a tab is one), optionally followed by a line
 * "  hint: ...". Stage and kind errors point at the stage name, parameter
 * errors at the key, value errors at the first byte of the value, syntax
 * errors at the offending byte. Quoted user text is escaped and truncated
 * (sl__msg_quote). Stages appended through the C API are reported as file
 * "<api>", line = stage number, column 1.
 *
 * INVARIANTS
 *
 * Every stage written in the text gets a struct sl_stage, even when its
 * name is unknown (def == NULL) or its line is broken, so that kind checks
 * see the chain as written: an unknown stage is a wildcard and produces no
 * kind errors of its own. Such a pipeline always has errors, so it never
 * checks and never runs; stages with def == NULL exist only there.
 * create() is called only when no other error was found, once per stage;
 * st->created records success, and only created stages are destroyed.
 * The parser is a single forward pass (no recursion, no backtracking beyond
 * a bounded look-ahead over blanks), so its time is linear in the input.
 */
#include "internal.h"

#include <limits.h>
#include <string.h>


/* Errors recorded before the parser gives up (one more line says so). */
#define MAX_ERRORS 50
/* Names longer than this get no did-you-mean (registered names are <= 64). */
#define SUGGEST_MAX_LEN 66

static const char HINT_VAR_SYNTAX[] =
    "write ${name} or ${name:-default}; names are letters, digits and '_'; "
    "'$$' is a literal '$'";

/* ======================================================================
 * Error recording
 * ====================================================================== */

void sl__pipeline_error(sl_pipeline *p, unsigned line, unsigned col,
                        const char *hint, const char *fmt, ...) {
  if (p->nerrors > MAX_ERRORS) return;
  const char *file = p->filename ? p->filename : "<input>";
  p->nerrors++;
  if (p->nerrors > MAX_ERRORS) {
    sl__buf_printf(&p->errors, "%s:%u:%u: too many errors, giving up\n", file,
                   line, col);
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  char *msg = sl__vasprintf(fmt, ap);
  va_end(ap);
  if (!msg) {
    p->errors.oom = true;
    return;
  }
  sl__buf_printf(&p->errors, "%s:%u:%u: %s\n", file, line, col, msg);
  if (hint) sl__buf_printf(&p->errors, "  hint: %s\n", hint);
  free(msg);
}

static bool too_many_errors(const sl_pipeline *p) {
  return p->nerrors > MAX_ERRORS;
}

/* User text made safe for a message, in a fixed buffer: sl__msg_quote
 * keeps at most 64 bytes, each escaped to at most 4, plus "...". */
typedef struct qstr {
  char s[272];
} qstr;

static const char *quote(qstr *q, const char *s, size_t n) {
  sl__buf b = {0};
  sl__msg_quote(&b, s, n);
  snprintf(q->s, sizeof q->s, "%s", b.data ? b.data : "");
  sl__buf_free(&b);
  return q->s;
}

/* ======================================================================
 * Pipeline and stage objects
 * ====================================================================== */

int sl_pipeline_create(sl_pipeline **out, const sl_registry *reg) {
  *out = NULL;
  if (!reg) return SL_EINVAL;
  sl_pipeline *p = calloc(1, sizeof *p);
  if (!p) return SL_ENOMEM;
  p->reg = reg;
  *out = p;
  return 0;
}

/* Frees a stage; runs def->destroy only for a stage that create() set up. */
static void stage_free(sl_stage *st) {
  if (st->created && st->def->create && st->def->destroy)
    st->def->destroy(st->state);
  for (size_t i = 0; i < st->nstrings; i++) free(st->strings[i]);
  free(st->strings);
  free(st->params);
  free(st->error);
  free(st);
}

void sl_pipeline_destroy(sl_pipeline *p) {
  if (!p) return;
  for (size_t i = p->n; i-- > 0;) stage_free(p->stages[i]); /* sink first */
  free(p->stages);
  free(p->filename);
  sl__buf_free(&p->errors);
  free(p);
}

const char *sl_pipeline_errors(const sl_pipeline *p) {
  return p && p->errors.data ? p->errors.data : "";
}

size_t sl_pipeline_length(const sl_pipeline *p) { return p ? p->n : 0; }
const sl_stage *sl_pipeline_stage(const sl_pipeline *p, size_t i) {
  return p && i < p->n ? p->stages[i] : NULL;
}
void *sl_stage_state(const sl_stage *st) { return st->created ? st->state : NULL; }

const sl_stage_def *sl_stage_definition(const sl_stage *st) { return st->def; }
const void *sl_stage_params(const sl_stage *st) { return st->params; }
size_t sl_stage_index(const sl_stage *st) { return st->index; }

int sl_stage_errorf(sl_stage *st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *msg = sl__vasprintf(fmt, ap);
  va_end(ap);
  free(st->error);
  st->error = msg; /* NULL when out of memory: reported by error code */
  return SL_EPARSE;
}

/* Parse state. Also used by sl_pipeline_append with no text, so that
 * stage building shares one out-of-memory flag. */
typedef struct ctx {
  sl_pipeline *p;
  const char *s; /* the text, len bytes, may hold NULs */
  size_t len, pos;
  unsigned line, col; /* of s[pos], 1-based */
  const char *const *vars;
  size_t nvars;
  bool oom;
} ctx;

/* Appends a stage for `def` (NULL: unknown name or broken line) at the
 * given position. @return the stage, owned by the pipeline, or NULL when
 * out of memory (c->oom set). */
static sl_stage *stage_add(ctx *c, const sl_stage_def *def, unsigned line,
                           unsigned col) {
  sl_pipeline *p = c->p;
  if (p->n == p->cap) {
    size_t cap = p->cap ? p->cap * 2 : 8;
    sl_stage **s = realloc(p->stages, cap * sizeof *s);
    if (!s) return c->oom = true, NULL;
    p->stages = s;
    p->cap = cap;
  }
  sl_stage *st = calloc(1, sizeof *st);
  size_t psize = def && def->params_size ? def->params_size : 1;
  void *params = st ? calloc(1, psize) : NULL;
  if (!params) {
    free(st);
    return c->oom = true, NULL;
  }
  st->def = def;
  st->pipeline = p;
  st->index = p->n;
  st->params = params;
  st->line = line;
  st->col = col;
  p->stages[p->n++] = st;
  return st;
}

/* Hands `s` (malloc'd) to the stage. Capacity grows at powers of two. */
static bool stage_keep_string(sl_stage *st, char *s) {
  size_t n = st->nstrings;
  if ((n & (n - 1)) == 0) { /* 0, 1, 2, 4, ...: full */
    char **a = realloc(st->strings, (n ? 2 * n : 1) * sizeof *a);
    if (!a) return false;
    st->strings = a;
  }
  st->strings[st->nstrings++] = s;
  return true;
}

/* ======================================================================
 * Did you mean
 * ====================================================================== */

static int fold(int ch) { return ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch; }

/* Optimal-string-alignment distance (Levenshtein plus adjacent
 * transpositions), ASCII case folded. Both lengths <= SUGGEST_MAX_LEN. */
static unsigned edit_distance(const char *a, size_t na, const char *b,
                              size_t nb) {
  unsigned d[SUGGEST_MAX_LEN + 1][SUGGEST_MAX_LEN + 1];
  for (size_t i = 0; i <= na; i++) d[i][0] = (unsigned)i;
  for (size_t j = 0; j <= nb; j++) d[0][j] = (unsigned)j;
  for (size_t i = 1; i <= na; i++) {
    for (size_t j = 1; j <= nb; j++) {
      unsigned cost = fold((unsigned char)a[i - 1]) != fold((unsigned char)b[j - 1]);
      unsigned v = d[i - 1][j - 1] + cost;
      if (d[i - 1][j] + 1 < v) v = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
          d[i - 2][j - 2] + 1 < v)
        v = d[i - 2][j - 2] + 1;
      d[i][j] = v;
    }
  }
  return d[na][nb];
}

/* Keeps `cand` in *best when it is closer to `typed` than anything so far:
 * within 2 edits and fewer edits than the longer name has bytes (so "ab"
 * does not suggest "xy"). */
static void consider(const char *typed, size_t n, const char *cand,
                     const char **best, unsigned *bestd) {
  size_t m = strlen(cand);
  if (n > SUGGEST_MAX_LEN || m > SUGGEST_MAX_LEN || n > m + 2 || m > n + 2)
    return;
  unsigned d = edit_distance(typed, n, cand, m);
  if (d <= 2 && d < (n > m ? n : m) && d < *bestd) {
    *best = cand;
    *bestd = d;
  }
}

/* Writes "did you mean 'x'?" into `buf` and returns it, or NULL. */
static const char *did_you_mean(char *buf, size_t cap, const char *best) {
  if (!best) return NULL;
  snprintf(buf, cap, "did you mean '%s'?", best);
  return buf;
}

/* ======================================================================
 * Configuring a stage from key=value pairs
 * ====================================================================== */

typedef struct kv {
  char *key, *val; /* owned, NUL-terminated */
  unsigned kline, kcol, vline, vcol;
  bool bad; /* the value already had an error reported */
} kv;

typedef struct kvlist {
  kv *v;
  size_t n, cap;
} kvlist;

static void kvs_free(kvlist *l) {
  for (size_t i = 0; i < l->n; i++) {
    free(l->v[i].key);
    free(l->v[i].val);
  }
  free(l->v);
}

/* Takes ownership of key and val (frees them when out of memory). */
static void kvs_push(ctx *c, kvlist *l, kv item) {
  if (item.key && item.val && l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 8;
    kv *v = realloc(l->v, cap * sizeof *v);
    if (v) l->v = v, l->cap = cap;
  }
  if (!item.key || !item.val || l->n == l->cap) {
    free(item.key);
    free(item.val);
    c->oom = true;
    return;
  }
  l->v[l->n++] = item;
}

static size_t count_params(const sl_param_def *tab) {
  size_t n = 0;
  while (tab && tab[n].name) n++;
  return n;
}

/* Row for `key` among the stage's own parameters (index < own) followed by
 * the common ones (index own + j). */
static const sl_param_def *param_lookup(const sl_stage_def *def, size_t own,
                                        const char *key, size_t *idx) {
  for (size_t i = 0; i < own; i++)
    if (strcmp(def->params[i].name, key) == 0) return *idx = i, &def->params[i];
  for (size_t j = 0; sl__common_params[j].name; j++)
    if (strcmp(sl__common_params[j].name, key) == 0)
      return *idx = own + j, &sl__common_params[j];
  return NULL;
}

static void unknown_param(ctx *c, const sl_stage *st, const kv *e) {
  const char *best = NULL;
  unsigned bestd = UINT_MAX;
  size_t n = strlen(e->key);
  for (size_t i = 0; st->def->params && st->def->params[i].name; i++)
    consider(e->key, n, st->def->params[i].name, &best, &bestd);
  for (size_t j = 0; sl__common_params[j].name; j++)
    consider(e->key, n, sl__common_params[j].name, &best, &bestd);
  char hint[160];
  if (!did_you_mean(hint, sizeof hint, best))
    snprintf(hint, sizeof hint, "run 'sluice stages %s' to list its parameters",
             st->def->name);
  qstr q;
  sl__pipeline_error(c->p, e->kline, e->kcol, hint,
                     "stage '%s': unknown parameter '%s'", st->def->name,
                     quote(&q, e->key, n));
}

/* Stores a parsed common parameter (index j in sl__common_params). */
static void set_common(sl_stage *st, size_t j, int choice, int64_t num) {
  if (j == 0) st->order = choice == 1 ? SL__ORDER_ANY : SL__ORDER_SOURCE;
  else if (j == 1) st->workers = (unsigned)num;
  else st->queue = (size_t)num;
}

/* Parses `text` for row `pd` into the stage: its params struct, or the
 * struct sl_stage fields for common row own + j. Reports value errors at
 * (line, col). */
static void set_value(ctx *c, sl_stage *st, size_t own, size_t idx,
                      const sl_param_def *pd, const char *text, unsigned line,
                      unsigned col) {
  bool common = idx >= own;
  int64_t num = 0; /* common rows are int or choice */
  int choice = 0;
  void *field = (char *)st->params + pd->offset;
  if (common) field = pd->type == SL_PARAM_INT ? (void *)&num : (void *)&choice;
  char *owned, *why;
  const char *hint;
  int rc = sl__param_parse(pd, text, field, &owned, &why, &hint);
  if (rc == SL_ENOMEM) {
    c->oom = true;
  } else if (rc < 0) {
    sl__pipeline_error(c->p, line, col, hint, "stage '%s': parameter '%s': %s",
                       st->def->name, pd->name, why);
  } else if (common) {
    set_common(st, idx - own, choice, num);
  } else if (owned && !stage_keep_string(st, owned)) {
    memset(field, 0, sizeof(char *)); /* never leave a dangling pointer */
    free(owned);
    c->oom = true;
  }
  free(why);
}

/* Applies one key=value: known key, first time set, value parses. `seen`
 * remembers which kv set each row, for the duplicate message. */
static void apply_kv(ctx *c, sl_stage *st, size_t own, const kv **seen,
                     const kv *e) {
  size_t idx;
  const sl_param_def *pd = param_lookup(st->def, own, e->key, &idx);
  if (!pd) {
    unknown_param(c, st, e);
    return;
  }
  if (seen[idx]) {
    char hint[96];
    snprintf(hint, sizeof hint, "first set at line %u, column %u",
             seen[idx]->kline, seen[idx]->kcol);
    sl__pipeline_error(c->p, e->kline, e->kcol, hint,
                       "stage '%s': duplicate parameter '%s'", st->def->name,
                       pd->name);
    return;
  }
  seen[idx] = e;
  if (!e->bad) set_value(c, st, own, idx, pd, e->val, e->vline, e->vcol);
}

/* Fills the stage's parameters from `kvs`, then defaults; reports missing
 * required ones unless the stage's text was broken (`complete` false),
 * where they would only be noise. */
static void configure(ctx *c, sl_stage *st, const kvlist *kvs, bool complete) {
  size_t own = count_params(st->def->params);
  size_t total = own + count_params(sl__common_params);
  const kv **seen = calloc(total, sizeof *seen);
  if (!seen) {
    c->oom = true;
    return;
  }
  for (size_t i = 0; i < kvs->n && !too_many_errors(c->p); i++)
    apply_kv(c, st, own, seen, &kvs->v[i]);
  for (size_t i = 0; i < own && !too_many_errors(c->p); i++) {
    const sl_param_def *pd = &st->def->params[i];
    if (seen[i]) continue;
    if (pd->def) /* checked by sl_registry_add, so it parses */
      set_value(c, st, own, i, pd, pd->def, st->line, st->col);
    else if (complete)
      sl__pipeline_error(c->p, st->line, st->col, NULL,
                         "stage '%s': missing required parameter '%s'",
                         st->def->name, pd->name);
  }
  free(seen);
}

/* Looks a stage name up, reporting an unknown one with a suggestion. */
static const sl_stage_def *find_stage(ctx *c, const char *name, size_t n,
                                      unsigned line, unsigned col) {
  const sl_stage_def *def = sl_registry_find(c->p->reg, name);
  if (def) return def;
  const char *best = NULL;
  unsigned bestd = UINT_MAX;
  for (size_t i = 0; i < sl_registry_count(c->p->reg); i++)
    consider(name, n, sl_registry_at(c->p->reg, i)->name, &best, &bestd);
  char hint[96];
  const char *h = did_you_mean(hint, sizeof hint, best);
  qstr q;
  sl__pipeline_error(c->p, line, col, h ? h : "run 'sluice stages' to list stages",
                     "unknown stage '%s'", quote(&q, name, n));
  return NULL;
}

/* ======================================================================
 * Lexer
 * ====================================================================== */

enum { SCAN_OK = 0, SCAN_LINE = 1 /* rest of the line was skipped */ };

static int peek(const ctx *c, size_t k) {
  return c->pos + k < c->len ? (unsigned char)c->s[c->pos + k] : EOF;
}

static void advance(ctx *c) {
  if (c->s[c->pos] == '\n') {
    if (c->line < UINT_MAX) c->line++;
    c->col = 1;
  } else if (c->col < UINT_MAX) {
    c->col++;
  }
  c->pos++;
}

static bool is_blank(int ch) {
  return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\f' || ch == '\v';
}

/* A backslash followed only by blanks up to the end of the line or text.
 * Looks ahead over blanks only, so each byte is looked at a bounded number
 * of times. */
static bool at_continuation(const ctx *c) {
  if (peek(c, 0) != '\\') return false;
  size_t k = 1;
  while (is_blank(peek(c, k))) k++;
  return peek(c, k) == '\n' || peek(c, k) == EOF;
}

/* Moves to the '\n' ending this line (or the end of text). */
static void skip_line(ctx *c) {
  while (c->pos < c->len && c->s[c->pos] != '\n') advance(c);
}

/* Skips blanks and continuations (backslash, blanks, line break). */
static void skip_space(ctx *c) {
  for (;;) {
    if (is_blank(peek(c, 0))) {
      advance(c);
    } else if (at_continuation(c)) {
      skip_line(c);
      if (c->pos < c->len) advance(c);
    } else {
      return;
    }
  }
}

/* Where an unquoted word ends. */
static bool at_word_end(const ctx *c) {
  int ch = peek(c, 0);
  return ch == EOF || is_blank(ch) || ch == '\n' || ch == '!' || ch == '#' ||
         at_continuation(c);
}

/* Bytes of stage names and keys. */
static bool at_name_byte(const ctx *c) {
  int ch = peek(c, 0);
  return !at_word_end(c) && ch != '=' && ch != '"' && ch != '\'' && ch != 0;
}

static void nul_error(ctx *c) {
  sl__pipeline_error(c->p, c->line, c->col, NULL, "unexpected NUL byte");
}

/* Value scanning: `out` receives the value (NULL: only find its end),
 * errors are reported when `report`, `bad` notes that one was. */
typedef struct vscan {
  sl__buf *out;
  bool report, bad;
} vscan;

static void emit(vscan *v, const char *s, size_t n) {
  if (v->out) sl__buf_append(v->out, s, n);
}

static void vs_error(ctx *c, vscan *v, unsigned line, unsigned col,
                     const char *hint, const char *msg) {
  v->bad = true;
  if (v->report) sl__pipeline_error(c->p, line, col, hint, "%s", msg);
}

/* Skips the rest of the line after a lexical error. */
static int give_up_line(ctx *c) {
  skip_line(c);
  return SCAN_LINE;
}

/* Last definition of variable name[0..n), or NULL. */
static const char *var_lookup(const ctx *c, const char *name, size_t n) {
  const char *found = NULL;
  for (size_t i = 0; i < c->nvars; i++)
    if (strncmp(c->vars[i], name, n) == 0 && c->vars[i][n] == '=')
      found = c->vars[i] + n + 1;
  return found;
}

static bool is_var_byte(int ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || ch == '_';
}

/* Substitutes name[0..n) (default d[0..dn) when has_default). */
static void substitute(ctx *c, vscan *v, const char *name, size_t n,
                       const char *d, size_t dn, bool has_default,
                       unsigned line, unsigned col) {
  const char *val = var_lookup(c, name, n);
  if (val && (*val || !has_default)) {
    emit(v, val, strlen(val));
    return;
  }
  if (has_default) {
    emit(v, d, dn);
    return;
  }
  v->bad = true;
  if (!v->report) return;
  qstr q;
  quote(&q, name, n);
  char hint[320];
  snprintf(hint, sizeof hint, "pass %s=VALUE on the command line", q.s);
  sl__pipeline_error(c->p, line, col, hint, "undefined variable '%s'", q.s);
}

/* After "${" (the '$' was at line:col): name, optional ":-default", '}'. */
static int scan_reference(ctx *c, vscan *v, unsigned line, unsigned col) {
  size_t ns = c->pos, ds = 0, dn = 0;
  while (is_var_byte(peek(c, 0))) advance(c);
  size_t n = c->pos - ns;
  bool has_default = peek(c, 0) == ':' && peek(c, 1) == '-';
  if (has_default) {
    advance(c), advance(c);
    ds = c->pos;
    for (int ch; (ch = peek(c, 0)) != '}' && ch != '\n' && ch != EOF && ch;)
      advance(c);
    dn = c->pos - ds;
  }
  int ch = peek(c, 0);
  if (ch == 0) {
    if (v->report) nul_error(c);
    v->bad = true;
    return give_up_line(c);
  }
  if (ch != '}') { /* no '}' where it must be: the line cannot be trusted */
    bool open = ch == '\n' || ch == EOF;
    vs_error(c, v, line, col, HINT_VAR_SYNTAX,
             open ? "unterminated '${'" : "invalid variable reference");
    return give_up_line(c);
  }
  advance(c);
  if (n == 0 || (c->s[ns] >= '0' && c->s[ns] <= '9'))
    vs_error(c, v, line, col, HINT_VAR_SYNTAX, "invalid variable reference");
  else
    substitute(c, v, c->s + ns, n, c->s + ds, dn, has_default, line, col);
  return SCAN_OK;
}

/* At '$': "$$", "${name}", "${name:-default}" or a literal '$'. */
static int scan_dollar(ctx *c, vscan *v) {
  unsigned line = c->line, col = c->col;
  int next = peek(c, 1);
  advance(c);
  if (next == '{') {
    advance(c);
    return scan_reference(c, v, line, col);
  }
  if (next == '$') advance(c);
  emit(v, "$", 1);
  return SCAN_OK;
}

/* A quote that does not close on its line. */
static int unterminated(ctx *c, vscan *v, unsigned line, unsigned col,
                        char q) {
  if (peek(c, 0) == 0) {
    if (v->report) nul_error(c);
    v->bad = true;
  } else {
    char hint[64];
    snprintf(hint, sizeof hint, "close the %c on the same line", q);
    vs_error(c, v, line, col, hint, "unterminated quote");
  }
  return give_up_line(c);
}

/* At "'": literal bytes up to the next "'". */
static int scan_single(ctx *c, vscan *v) {
  unsigned line = c->line, col = c->col;
  advance(c);
  size_t start = c->pos;
  int ch;
  while ((ch = peek(c, 0)) != '\'' && ch != '\n' && ch != EOF && ch != 0)
    advance(c);
  if (ch != '\'') return unterminated(c, v, line, col, '\'');
  emit(v, c->s + start, c->pos - start);
  advance(c);
  return SCAN_OK;
}

/* At '"': escapes \" \\ \n \t, substitutions, up to the closing '"'. */
static int scan_double(ctx *c, vscan *v) {
  unsigned line = c->line, col = c->col;
  advance(c);
  for (;;) {
    int ch = peek(c, 0);
    if (ch == '"') {
      advance(c);
      return SCAN_OK;
    }
    if (ch == '\n' || ch == EOF || ch == 0)
      return unterminated(c, v, line, col, '"');
    if (ch == '$') {
      if (scan_dollar(c, v) != SCAN_OK) return SCAN_LINE;
      continue;
    }
    int next = ch == '\\' ? peek(c, 1) : EOF;
    const char *esc = next == '"'    ? "\""
                      : next == '\\' ? "\\"
                      : next == 'n'  ? "\n"
                      : next == 't'  ? "\t"
                                     : NULL;
    if (esc) {
      emit(v, esc, 1);
      advance(c);
    } else {
      char b = (char)ch;
      emit(v, &b, 1);
    }
    advance(c);
  }
}

/* A value: unquoted text and quoted pieces up to the end of the word. */
static int scan_value(ctx *c, vscan *v) {
  while (!at_word_end(c)) {
    int ch = peek(c, 0), rc = SCAN_OK;
    if (ch == 0) {
      if (v->report) nul_error(c);
      v->bad = true;
      return give_up_line(c);
    }
    if (ch == '\'') rc = scan_single(c, v);
    else if (ch == '"') rc = scan_double(c, v);
    else if (ch == '$') rc = scan_dollar(c, v);
    else {
      char b = (char)ch;
      emit(v, &b, 1);
      advance(c);
    }
    if (rc != SCAN_OK) return rc;
  }
  return SCAN_OK;
}

/* Skips the rest of a word without reporting anything. */
static int skip_word(ctx *c) {
  vscan v = {NULL, false, false};
  return scan_value(c, &v);
}

/* ======================================================================
 * Parser
 * ====================================================================== */

/* Stage under construction. */
typedef struct pstage {
  const char *name; /* for messages: def->name or the quoted text */
  kvlist kvs;
  bool broken; /* a syntax error in its text */
} pstage;

/* A word that is not key=value, starting at `start` (key bytes scanned). */
static int not_key_value(ctx *c, pstage *ps, size_t start, unsigned line,
                         unsigned col) {
  size_t klen = c->pos - start, k = 0;
  while (is_blank(peek(c, k))) k++;
  const char *hint = NULL;
  int rc = SCAN_OK;
  if (klen > 0 && k > 0 && peek(c, k) == '=') {
    /* "key = value": take the whole thing as one mistake. */
    hint = "write key=value with no blanks around '='";
    while (k-- > 0) advance(c);
    advance(c);
    while (is_blank(peek(c, 0))) advance(c);
    rc = skip_word(c);
  } else {
    rc = skip_word(c);
    klen = c->pos - start;
    char *w = sl__strndup(c->s + start, klen);
    if (!w) c->oom = true;
    else if (strcmp(w, "\\") == 0)
      hint = "'\\' continues a line only as its last character";
    else if (sl_registry_find(c->p->reg, w))
      hint = "separate stages with '!' or put each on its own line";
    free(w);
  }
  qstr q;
  sl__pipeline_error(c->p, line, col, hint,
                     "stage '%s': expected key=value, got '%s'", ps->name,
                     quote(&q, c->s + start, klen));
  ps->broken = true;
  return rc;
}

/* One word of a stage: key=value, or a reported mistake. */
static int parse_param(ctx *c, pstage *ps) {
  unsigned kline = c->line, kcol = c->col;
  size_t start = c->pos;
  while (at_name_byte(c)) advance(c);
  size_t klen = c->pos - start;
  if (klen == 0 || peek(c, 0) != '=')
    return not_key_value(c, ps, start, kline, kcol);
  advance(c);
  kv e = {.kline = kline, .kcol = kcol, .vline = c->line, .vcol = c->col};
  sl__buf val = {0};
  vscan v = {&val, true, false};
  int rc = scan_value(c, &v);
  e.key = sl__strndup(c->s + start, klen);
  e.val = val.oom ? NULL : val.data ? val.data : sl__strdup("");
  if (val.oom) sl__buf_free(&val);
  e.bad = v.bad;
  if (v.bad) ps->broken = true;
  kvs_push(c, &ps->kvs, e);
  return rc;
}

/* Reads the parameters of a stage up to the end of the stage. */
static void parse_params(ctx *c, pstage *ps) {
  for (;;) {
    skip_space(c);
    int ch = peek(c, 0);
    if (ch == EOF || ch == '\n' || ch == '!' || ch == '#') return;
    if (ch == 0) {
      nul_error(c);
      ps->broken = true;
    }
    if (ch == 0 || too_many_errors(c->p) || c->oom) {
      skip_line(c);
      return;
    }
    if (parse_param(c, ps) != SCAN_OK) return;
  }
}

/* Something that cannot be a stage name ("count=5", a quoted word):
 * reported, and the rest of the stage skipped. */
static void bad_stage_name(ctx *c, size_t start, unsigned line, unsigned col) {
  skip_word(c);
  const char *hint = NULL;
  if (memchr(c->s + start, '=', c->pos - start))
    hint = "parameters go on their stage's line; end the line before with "
           "'\\' to continue it";
  qstr q;
  sl__pipeline_error(c->p, line, col, hint, "expected a stage name, got '%s'",
                     quote(&q, c->s + start, c->pos - start));
  for (;;) {
    skip_space(c);
    int ch = peek(c, 0);
    if (ch == EOF || ch == '\n' || ch == '!' || ch == '#') break;
    if (skip_word(c) != SCAN_OK) break;
  }
  stage_add(c, NULL, line, col);
}

/* One stage: name, parameters; always appends a stage (see INVARIANTS). */
static void parse_stage(ctx *c) {
  unsigned line = c->line, col = c->col;
  size_t start = c->pos;
  while (at_name_byte(c)) advance(c);
  size_t n = c->pos - start;
  int ch = peek(c, 0);
  if (n == 0 || ch == '=' || ch == '"' || ch == '\'') {
    bad_stage_name(c, start, line, col);
    return;
  }
  char *name = sl__strndup(c->s + start, n);
  if (!name) {
    c->oom = true;
    return;
  }
  const sl_stage_def *def = find_stage(c, name, n, line, col);
  qstr q;
  pstage ps = {def ? def->name : quote(&q, name, n), {0}, false};
  free(name);
  parse_params(c, &ps);
  sl_stage *st = stage_add(c, def, line, col);
  if (st && def) configure(c, st, &ps.kvs, !ps.broken);
  kvs_free(&ps.kvs);
}

/* The whole text: stages, '!' links, comments, blank lines. */
static void parse_text(ctx *c) {
  bool bang_pending = false, any_stage = false;
  unsigned bline = 0, bcol = 0;
  while (!too_many_errors(c->p) && !c->oom) {
    skip_space(c);
    int ch = peek(c, 0);
    if (ch == EOF) break;
    if (ch == '\n') {
      advance(c);
    } else if (ch == '#') {
      skip_line(c);
    } else if (ch == 0) {
      nul_error(c);
      skip_line(c);
    } else if (ch == '!') {
      if (bang_pending)
        sl__pipeline_error(c->p, c->line, c->col, NULL, "empty stage between '!'");
      else if (!any_stage)
        sl__pipeline_error(c->p, c->line, c->col, NULL,
                           "'!' with no stage before it");
      bang_pending = true, bline = c->line, bcol = c->col;
      advance(c);
    } else {
      parse_stage(c);
      bang_pending = false, any_stage = true;
    }
  }
  if (bang_pending && !too_many_errors(c->p))
    sl__pipeline_error(c->p, bline, bcol, NULL, "'!' with no stage after it");
}

int sl_pipeline_parse(sl_pipeline *p, const char *filename, const char *text,
                      size_t len, const char *const *vars, size_t nvars) {
  if (!p || (!text && len) || (!vars && nvars) || p->n || p->checked)
    return SL_EINVAL;
  for (size_t i = 0; i < nvars; i++)
    if (!vars[i] || !strchr(vars[i], '=')) return SL_EINVAL;
  char *fn = sl__strdup(filename ? filename : "<input>");
  if (!fn) return SL_ENOMEM;
  free(p->filename);
  p->filename = fn;
  ctx c = {.p = p, .s = text ? text : "", .len = len, .line = 1, .col = 1,
           .vars = vars, .nvars = nvars};
  if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) c.pos = 3; /* BOM */
  parse_text(&c);
  if (c.oom || p->errors.oom) return SL_ENOMEM;
  return sl_pipeline_check(p);
}

int sl_pipeline_append(sl_pipeline *p, const char *name,
                       const char *const *params, size_t nparams) {
  if (!p || !name || (!params && nparams) || p->checked) return SL_EINVAL;
  if (!p->filename && !(p->filename = sl__strdup("<api>"))) return SL_ENOMEM;
  unsigned before = p->nerrors;
  unsigned line = p->n < UINT_MAX ? (unsigned)p->n + 1 : UINT_MAX;
  ctx c = {.p = p, .line = line, .col = 1};
  size_t n = strlen(name);
  const sl_stage_def *def = find_stage(&c, name, n, line, 1);
  qstr q;
  pstage ps = {def ? def->name : quote(&q, name, n), {0}, false};
  for (size_t i = 0; i < nparams && !c.oom; i++) {
    const char *eq = params[i] ? strchr(params[i], '=') : NULL;
    if (!eq || eq == params[i]) {
      qstr g;
      const char *got = params[i] ? params[i] : "(null)";
      sl__pipeline_error(p, line, 1, NULL,
                         "stage '%s': expected key=value, got '%s'", ps.name,
                         quote(&g, got, strlen(got)));
      ps.broken = true;
      continue;
    }
    kv e = {sl__strndup(params[i], (size_t)(eq - params[i])),
            sl__strdup(eq + 1), line, 1, line, 1, false};
    kvs_push(&c, &ps.kvs, e);
  }
  sl_stage *st = c.oom ? NULL : stage_add(&c, def, line, 1);
  if (st && def) configure(&c, st, &ps.kvs, !ps.broken);
  kvs_free(&ps.kvs);
  if (c.oom || p->errors.oom) return SL_ENOMEM;
  return p->nerrors > before ? SL_EPARSE : 0;
}

/* ======================================================================
 * Checks: kinds between neighbours, then create()
 * ====================================================================== */

static bool kinds_connect(sl_kind produced, sl_kind wanted) {
  return wanted == SL_KIND_ANY || produced == SL_KIND_ANY || produced == wanted;
}

/* Problems of stage i given what flows into it (`cur`) from `prev`. */
static void check_link(sl_pipeline *p, size_t i, const sl_stage *prev,
                       sl_kind cur) {
  const sl_stage *st = p->stages[i];
  const sl_stage_def *def = st->def;
  bool source = def->flags & SL_STAGE_SOURCE;
  if (i == 0 && !source)
    sl__pipeline_error(p, st->line, st->col, NULL,
                       "pipeline must start with a source stage, '%s' is not one",
                       def->name);
  if (i > 0 && source) {
    sl__pipeline_error(p, st->line, st->col, NULL,
                       "stage '%s' is a source and must come first", def->name);
    return;
  }
  if (i == 0 || !prev->def) return; /* an unknown stage connects to anything */
  if (cur == SL_KIND_NONE)
    sl__pipeline_error(p, st->line, st->col, NULL,
                       "stage '%s' cannot follow '%s': '%s' produces nothing",
                       def->name, prev->def->name, prev->def->name);
  else if (!kinds_connect(cur, def->in_kind))
    sl__pipeline_error(p, st->line, st->col, NULL,
                       "stage '%s' needs %s input but '%s' produces %s",
                       def->name, sl_kind_name(def->in_kind), prev->def->name,
                       sl_kind_name(cur));
}

/* Walks the chain resolving ANY inputs and SAME outputs into st->in_kind
 * and st->out_kind; ANY stands for "not known before running". */
static void check_kinds(sl_pipeline *p) {
  sl_kind cur = SL_KIND_ANY;
  for (size_t i = 0; i < p->n; i++) {
    sl_stage *st = p->stages[i];
    const sl_stage_def *def = st->def;
    if (!def) {
      st->in_kind = st->out_kind = cur = SL_KIND_ANY;
      continue;
    }
    check_link(p, i, i ? p->stages[i - 1] : NULL, cur);
    sl_kind in = def->in_kind;
    if (def->flags & SL_STAGE_SOURCE) in = SL_KIND_NONE;
    else if (in == SL_KIND_ANY && cur != SL_KIND_NONE) in = cur;
    st->in_kind = in;
    st->out_kind = def->out_kind == SL_KIND_SAME ? in : def->out_kind;
    cur = st->out_kind;
  }
  const sl_stage *last = p->stages[p->n - 1];
  if (last->def && last->out_kind != SL_KIND_NONE)
    sl__pipeline_error(p, last->line, last->col, NULL,
                       "pipeline must end with a sink, '%s' produces %s",
                       last->def->name, sl_kind_name(last->out_kind));
}

/* Calls create() once per stage; a rejection is reported at the stage. */
static void create_stages(sl_pipeline *p) {
  for (size_t i = 0; i < p->n; i++) {
    sl_stage *st = p->stages[i];
    if (st->created) continue;
    if (!st->def->create) {
      st->created = true;
      continue;
    }
    st->state = NULL;
    int rc = st->def->create(st, &st->state);
    if (rc >= 0) {
      st->created = true;
      continue;
    }
    st->state = NULL;
    sl__pipeline_error(p, st->line, st->col, NULL, "stage '%s': %s",
                       st->def->name, st->error ? st->error : sl_strerror(rc));
  }
}

/* Inserts each stage's `then` companion where the pipeline does not already
 * have it right after the stage. */
static void insert_implied(sl_pipeline *p) {
  ctx c = {.p = p, .line = 1, .col = 1};
  for (size_t i = 0; i < p->n && !c.oom; i++) {
    const sl_stage *st = p->stages[i];
    if (!st->def || !st->def->then) continue;
    const sl_stage_def *then = sl_registry_find(p->reg, st->def->then);
    if (!then) {
      sl__pipeline_error(p, st->line, st->col, NULL,
                         "stage '%s' needs stage '%s', which is not registered",
                         st->def->name, st->def->then);
      continue;
    }
    if (i + 1 < p->n && p->stages[i + 1]->def == then) continue;
    sl_stage *ins = stage_add(&c, then, st->line, st->col);
    if (!ins) break;
    /* stage_add appended it: move it to i + 1 and renumber. */
    memmove(&p->stages[i + 2], &p->stages[i + 1],
            (p->n - 1 - (i + 1)) * sizeof *p->stages);
    p->stages[i + 1] = ins;
    for (size_t k = i + 1; k < p->n; k++) p->stages[k]->index = k;
    kvlist none = {0};
    configure(&c, ins, &none, true);
  }
  if (c.oom) p->errors.oom = true;
}

int sl_pipeline_check(sl_pipeline *p) {
  if (!p) return SL_EINVAL;
  if (!p->checked) {
    p->checked = true;
    if (p->nerrors == 0) insert_implied(p);
    if (p->n == 0 && p->nerrors == 0) {
      if (!p->filename) p->filename = sl__strdup("<api>");
      sl__pipeline_error(p, 1, 1, NULL, "pipeline has no stages");
    } else if (p->n > 0 && !too_many_errors(p)) {
      check_kinds(p);
    }
    if (p->nerrors == 0) create_stages(p);
    p->check_ok = p->nerrors == 0;
  }
  return p->check_ok ? 0 : SL_EPARSE;
}
