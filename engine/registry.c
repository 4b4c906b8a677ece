/*
 * registry.c -- the set of stage types a pipeline may name, and their help.
 *
 * The registry is an array of borrowed sl_stage_def pointers kept sorted by
 * name: listings come out in name order for free and lookups are a binary
 * search. It is filled once at start-up (sl_registry_add is not
 * thread-safe) and only read afterwards, so concurrent readers need no lock.
 *
 * sl_registry_add refuses inconsistent definitions up front, so that the
 * parser and the run loop can trust every registered def: a valid name, a
 * source has produce() and no input, anything else has process() and an
 * input kind, a sink outputs nothing, and the parameter table is well
 * formed with defaults that parse (see sl__param_table_check in params.c).
 *
 * sl_stage_def_print_help is what `sluice stages NAME` prints. Its layout is
 * stable (tests and docs depend on it):
 *
 *   NAME - SUMMARY
 *   class: io   input: none   output: bytes
 *   <blank line, help text verbatim, when there is one>
 *   <blank line>
 *   parameters:                       (or "parameters: none")
 *     NAME   TYPE  DEFAULT   ALLOWED  DESCRIPTION
 *     count  int   required  1..100   number of items
 *   common parameters:
 *     order  choice  source  source|any  ...
 *
 * The header row heads the first table printed.
 *
 * Columns are aligned across both tables, separated by two spaces, with no
 * trailing blanks. DEFAULT is "required" when there is none; ALLOWED shows
 * bounds ("1..100", sizes as "4KiB..1GiB"), choices or "-".
 */
#include "internal.h"

#include <string.h>


struct sl_registry {
  const sl_stage_def **defs; /* borrowed, sorted by name */
  size_t n, cap;
};

int sl_registry_create(sl_registry **out) {
  *out = calloc(1, sizeof **out);
  return *out ? 0 : SL_ENOMEM;
}

void sl_registry_destroy(sl_registry *reg) {
  if (!reg) return;
  free(reg->defs);
  free(reg);
}

/* Index of the first def whose name is >= name (lower bound). */
static size_t lower_bound(const sl_registry *reg, const char *name) {
  size_t lo = 0, hi = reg->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (strcmp(reg->defs[mid]->name, name) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

static bool kind_valid(sl_kind k) { return (unsigned)k <= SL_KIND_SAME; }

/* Shape of the stage: callbacks, flags and kinds agree with each other. */
static bool def_shape_valid(const sl_stage_def *def) {
  const unsigned known = SL_STAGE_SOURCE | SL_STAGE_SINK;
  bool source = def->flags & SL_STAGE_SOURCE, sink = def->flags & SL_STAGE_SINK;
  if ((def->flags & ~known) || (source && sink)) return false;
  if (!kind_valid(def->in_kind) || !kind_valid(def->out_kind)) return false;
  if (def->exec != SL_EXEC_IO && def->exec != SL_EXEC_CPU &&
      def->exec != SL_EXEC_SERIAL)
    return false;
  if (def->in_kind == SL_KIND_SAME) return false;
  if (source)
    return def->produce && !def->process && def->in_kind == SL_KIND_NONE &&
           def->out_kind != SL_KIND_NONE && def->out_kind != SL_KIND_SAME;
  if (!def->process || def->produce || def->in_kind == SL_KIND_NONE)
    return false;
  /* A sink is exactly a stage that outputs nothing. */
  return sink == (def->out_kind == SL_KIND_NONE);
}

int sl_registry_add(sl_registry *reg, const sl_stage_def *def) {
  if (!reg || !def || !sl__name_valid(def->name) || !def_shape_valid(def))
    return SL_EINVAL;
  if (sl__param_table_check(def->params, def->params_size) < 0) return SL_EINVAL;
  size_t at = lower_bound(reg, def->name);
  if (at < reg->n && strcmp(reg->defs[at]->name, def->name) == 0)
    return SL_EEXIST;
  if (reg->n == reg->cap) {
    size_t cap = reg->cap ? reg->cap * 2 : 32;
    const sl_stage_def **d = realloc(reg->defs, cap * sizeof *d);
    if (!d) return SL_ENOMEM;
    reg->defs = d;
    reg->cap = cap;
  }
  memmove(&reg->defs[at + 1], &reg->defs[at], (reg->n - at) * sizeof *reg->defs);
  reg->defs[at] = def;
  reg->n++;
  return 0;
}

const sl_stage_def *sl_registry_find(const sl_registry *reg, const char *name) {
  if (!reg || !name) return NULL;
  size_t at = lower_bound(reg, name);
  if (at < reg->n && strcmp(reg->defs[at]->name, name) == 0) return reg->defs[at];
  return NULL;
}

size_t sl_registry_count(const sl_registry *reg) { return reg ? reg->n : 0; }

const sl_stage_def *sl_registry_at(const sl_registry *reg, size_t i) {
  return reg && i < reg->n ? reg->defs[i] : NULL;
}

/* --- help ----------------------------------------------------------------- */

enum { COLS = 5 };

/* A help table: rows of COLS cells, each a malloc'd string (NULL = ""). */
typedef struct table {
  char *(*rows)[COLS];
  size_t n;
  size_t width[COLS];
} table;

static void table_free(table *t) {
  for (size_t r = 0; r < t->n; r++)
    for (int c = 0; c < COLS; c++) free(t->rows[r][c]);
  free(t->rows);
}

/* How a default reads in the table: required, "" and values with blanks
 * quoted, anything else as written. */
static char *default_text(const char *def) {
  if (!def) return sl__strdup("required");
  if (!*def || strpbrk(def, " \t")) return sl__asprintf("\"%s\"", def);
  return sl__strdup(def);
}

/* Fills row `r` with the cells of `pd` (header row when pd is NULL). */
static void table_fill(table *t, size_t r, const sl_param_def *pd) {
  char **cell = t->rows[r];
  if (!pd) {
    static const char *const head[COLS] = {"NAME", "TYPE", "DEFAULT", "ALLOWED",
                                           "DESCRIPTION"};
    for (int c = 0; c < COLS; c++) cell[c] = sl__strdup(head[c]);
  } else {
    sl__buf allowed = {0};
    sl__param_allowed(pd, &allowed);
    cell[0] = sl__strdup(pd->name);
    cell[1] = sl__strdup(sl__param_type_name(pd->type));
    cell[2] = default_text(pd->def);
    cell[3] = allowed.data; /* NULL if out of memory: printed as "" */
    cell[4] = sl__strdup(pd->help ? pd->help : "");
  }
  for (int c = 0; c < COLS; c++) {
    size_t w = cell[c] ? strlen(cell[c]) : 0;
    if (w > t->width[c]) t->width[c] = w;
  }
}

static size_t count_params(const sl_param_def *tab) {
  size_t n = 0;
  while (tab && tab[n].name) n++;
  return n;
}

/* Rows: header, the stage's own parameters, then the common ones. */
static int table_build(table *t, const sl_stage_def *def) {
  size_t own = count_params(def->params), common = count_params(sl__common_params);
  t->rows = calloc(1 + own + common, sizeof *t->rows);
  if (!t->rows) return SL_ENOMEM;
  t->n = 1 + own + common;
  table_fill(t, 0, NULL);
  for (size_t i = 0; i < own; i++) table_fill(t, 1 + i, &def->params[i]);
  for (size_t i = 0; i < common; i++)
    table_fill(t, 1 + own + i, &sl__common_params[i]);
  return 0;
}

/* Prints one row, columns padded, no trailing blanks. */
static void table_print_row(const table *t, size_t r, FILE *out) {
  int last = COLS - 1;
  while (last > 0 && (!t->rows[r][last] || !*t->rows[r][last])) last--;
  fputs("  ", out);
  for (int c = 0; c <= last; c++) {
    const char *s = t->rows[r][c] ? t->rows[r][c] : "";
    if (c < last) fprintf(out, "%-*s  ", (int)t->width[c], s);
    else fputs(s, out);
  }
  fputc('\n', out);
}

void sl_stage_def_print_help(const sl_stage_def *def, FILE *out) {
  if (!def || !out) return;
  fprintf(out, "%s - %s\n", def->name, def->summary ? def->summary : "");
  fprintf(out, "class: %s   input: %s   output: %s\n",
          sl_exec_class_name(def->exec), sl_kind_name(def->in_kind),
          sl_kind_name(def->out_kind));
  if (def->help && *def->help) {
    size_t n = strlen(def->help);
    fprintf(out, "\n%s%s", def->help, def->help[n - 1] == '\n' ? "" : "\n");
  }
  table t = {0};
  if (table_build(&t, def) < 0) return;
  size_t own = count_params(def->params);
  /* The header row heads whichever table comes first. */
  fputs(own ? "\nparameters:\n" : "\nparameters: none\n", out);
  if (own) table_print_row(&t, 0, out);
  for (size_t r = 1; r <= own; r++) table_print_row(&t, r, out);
  fputs("common parameters:\n", out);
  if (!own) table_print_row(&t, 0, out);
  for (size_t r = 1 + own; r < t.n; r++) table_print_row(&t, r, out);
  table_free(&t);
}
