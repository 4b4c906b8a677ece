/*
 * params.c -- typed parameter values: text -> params struct field.
 *
 * A stage declares its parameters as a table of sl_param_def rows; this file
 * turns one textual value (from a pipeline file, the C API or a default in
 * the table) into the C value stored at row->offset in the stage's params
 * struct, and checks tables when a stage type is registered.
 *
 * Value syntax per type (the reference for docs):
 *   bool    true|false|yes|no|on|off|1|0, any letter case      -> bool
 *   int     decimal with optional sign, no spaces, no suffix    -> int64_t
 *   float   decimal or exponent notation; nan, inf and hex are
 *           rejected (a parameter is a finite quantity)         -> double
 *   size    bytes with optional binary suffix, via sl_parse_size -> uint64_t
 *   string  any text, copied                                     -> const char *
 *   choice  exactly one of the row's "a|b|c" alternatives        -> int index
 * Bounds (row min < max, inclusive) apply to int, float and size.
 *
 * Error texts are built here so that every caller words them the same way:
 * the caller prefixes "stage 'S': parameter 'P': " to the reason returned.
 * Values quoted in messages go through sl__msg_quote, so hostile bytes
 * (control characters, megabyte-long values) cannot garble a terminal or
 * flood the error report.
 *
 * Functions shared with registry.c and pipefile.c carry the sl__ prefix and
 * are declared in the "shared with" block below (repeated in those files).
 */
#include "internal.h"

#include <ctype.h>
#include <math.h>
#include <stdalign.h>
#include <string.h>
#include <strings.h>


/* Longest piece of a user's value quoted in a message. */
#define MSG_QUOTE_MAX 64
/* Longest stage or parameter name (keeps help tables and suggestions sane). */
#define NAME_MAX_LEN 64

/* The engine-wide parameters. Their values live in struct sl_stage, not in
 * the stage's params struct, so `offset` is unused; `def` is descriptive
 * ("auto" = the engine decides) and is never parsed. */
const sl_param_def sl__common_params[] = {
    {"order", SL_PARAM_CHOICE, 0, "source", 0, 0, "source|any",
     "output order: source keeps input order (like Python's map), any "
     "passes items on as they complete (like as_completed)"},
    {"workers", SL_PARAM_INT, 0, "auto", 1, 1024, NULL,
     "parallel workers for io stages; thread cap for cpu stages"},
    {"queue", SL_PARAM_INT, 0, "auto", 1, 1000000, NULL,
     "capacity of the stage's output queue, in items"},
    SL_PARAM_END};

/* Appends s[0..n) for a message: control bytes escaped, long text cut at a
 * UTF-8 character boundary with "...". Bytes >= 0x80 pass through so that
 * non-ASCII names stay readable. */
void sl__msg_quote(sl__buf *b, const char *s, size_t n) {
  size_t lim = n;
  if (lim > MSG_QUOTE_MAX) {
    lim = MSG_QUOTE_MAX;
    while (lim > 0 && ((unsigned char)s[lim] & 0xC0) == 0x80) lim--;
  }
  for (size_t i = 0; i < lim; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '\n') sl__buf_puts(b, "\\n");
    else if (c == '\t') sl__buf_puts(b, "\\t");
    else if (c == '\r') sl__buf_puts(b, "\\r");
    else if (c < 0x20 || c == 0x7f) sl__buf_printf(b, "\\x%02x", c);
    else sl__buf_append(b, (const char *)&s[i], 1);
  }
  if (lim < n) sl__buf_puts(b, "...");
}

const char *sl__param_type_name(sl_param_type t) {
  switch (t) {
  case SL_PARAM_BOOL: return "bool";
  case SL_PARAM_INT: return "int";
  case SL_PARAM_FLOAT: return "float";
  case SL_PARAM_SIZE: return "size";
  case SL_PARAM_STRING: return "string";
  case SL_PARAM_CHOICE: return "choice";
  }
  return "?";
}

/* Stage and parameter names: [a-z0-9._-]+, at most NAME_MAX_LEN bytes. */
bool sl__name_valid(const char *name) {
  size_t n = name ? strlen(name) : 0;
  if (n == 0 || n > NAME_MAX_LEN) return false;
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-'))
      return false;
  }
  return true;
}

/* --- reasons ----------------------------------------------------------- */

/* malloc'd "'<text>' <what>", NULL when out of memory. */
static char *reason_quoted(const char *text, const char *what) {
  sl__buf b = {0};
  sl__buf_puts(&b, "'");
  sl__msg_quote(&b, text, strlen(text));
  sl__buf_printf(&b, "' %s", what);
  if (b.oom) {
    sl__buf_free(&b);
    return NULL;
  }
  return b.data;
}

/* Bound as people write it: integers without ".0", sizes with a binary
 * suffix when exact ("4KiB"). */
static void format_bound(sl__buf *b, sl_param_type t, double v) {
  static const char *const units[] = {"TiB", "GiB", "MiB", "KiB"};
  if (t == SL_PARAM_SIZE && v >= 1024 && v < 18446744073709551616.0 &&
      v == floor(v)) {
    uint64_t u = (uint64_t)v;
    for (unsigned i = 0; i < 4; i++) {
      unsigned shift = 40 - 10 * i;
      if (u % ((uint64_t)1 << shift) == 0) {
        sl__buf_printf(b, "%llu%s", (unsigned long long)(u >> shift), units[i]);
        return;
      }
    }
  }
  if (v == floor(v) && fabs(v) < 1e15) sl__buf_printf(b, "%.0f", v);
  else sl__buf_printf(b, "%g", v);
}

/* Checks `v` (parsed from `text`) against pd's bounds. @return 0, or
 * SL_ERANGE with *why set (NULL if out of memory). */
static int check_bounds(const sl_param_def *pd, const char *text, double v,
                        char **why) {
  if (!(pd->min < pd->max)) return 0;
  bool low = v < pd->min;
  if (!low && !(v > pd->max)) return 0;
  sl__buf b = {0};
  sl__msg_quote(&b, text, strlen(text));
  sl__buf_puts(&b, low ? " is below the minimum " : " is above the maximum ");
  format_bound(&b, pd->type, low ? pd->min : pd->max);
  if (b.oom) sl__buf_free(&b);
  *why = b.data;
  return SL_ERANGE;
}

/* --- one parser per type ------------------------------------------------ */

static int parse_bool(const char *text, bool *out) {
  static const char *const yes[] = {"true", "yes", "on", "1"};
  static const char *const no[] = {"false", "no", "off", "0"};
  for (unsigned i = 0; i < 4; i++) {
    if (strcasecmp(text, yes[i]) == 0) return *out = true, 0;
    if (strcasecmp(text, no[i]) == 0) return *out = false, 0;
  }
  return SL_EINVAL;
}

/* Strict decimal: [+-]?[0-9]+ and nothing else (strtoll alone would accept
 * leading spaces and stop silently at junk). */
static int parse_int(const char *text, int64_t *out) {
  const char *d = text + (*text == '+' || *text == '-');
  if (!isdigit((unsigned char)*d)) return SL_EINVAL;
  char *end;
  errno = 0;
  long long v = strtoll(text, &end, 10);
  if (*end) return SL_EINVAL;
  if (errno == ERANGE) return SL_ERANGE;
  *out = (int64_t)v;
  return 0;
}

static int parse_float(const char *text, double *out) {
  const char *d = text + (*text == '+' || *text == '-');
  if (!isdigit((unsigned char)*d) && *d != '.') return SL_EINVAL;
  if (strpbrk(text, "xX")) return SL_EINVAL; /* hex floats */
  char *end;
  errno = 0;
  double v = strtod(text, &end);
  if (end == text || *end) return SL_EINVAL;
  if (!isfinite(v)) return SL_ERANGE; /* overflow; underflow to 0 is fine */
  *out = v;
  return 0;
}

/* @return the index of `text` among "a|b|c", or -1. */
static int choice_index(const char *choices, const char *text) {
  size_t n = strlen(text);
  int idx = 0;
  for (const char *p = choices;; idx++) {
    const char *bar = strchr(p, '|');
    size_t len = bar ? (size_t)(bar - p) : strlen(p);
    if (len == n && memcmp(p, text, n) == 0) return idx;
    if (!bar) return -1;
    p = bar + 1;
  }
}

/* Parses a numeric type into a local, reports the reason on failure. */
static int parse_number(const sl_param_def *pd, const char *text,
                        void *field, char **why, const char **hint) {
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0;
  int rc;
  const char *what;
  if (pd->type == SL_PARAM_INT) {
    rc = parse_int(text, &i), f = (double)i, what = "is not an integer";
  } else if (pd->type == SL_PARAM_FLOAT) {
    rc = parse_float(text, &f), what = "is not a number";
  } else {
    rc = sl_parse_size(text, &u), f = (double)u, what = "is not a size";
    if (rc == SL_EINVAL)
      *hint = "write bytes with an optional suffix: 4096, 64k, 1.5MiB, 2G";
  }
  if (rc == 0) rc = check_bounds(pd, text, f, why);
  else *why = reason_quoted(text, rc == SL_ERANGE ? "is out of range" : what);
  if (rc < 0) return *why ? rc : SL_ENOMEM;
  if (pd->type == SL_PARAM_INT) memcpy(field, &i, sizeof i);
  else if (pd->type == SL_PARAM_FLOAT) memcpy(field, &f, sizeof f);
  else memcpy(field, &u, sizeof u);
  return 0;
}

/* Parses `text` as a value of row `pd` and stores it at `field` (the
 * member at pd->offset; bool, int64_t, double, uint64_t, const char * or
 * int by type). STRING: *owned receives a malloc'd copy which `field` now
 * points to; the caller owns it. Other types leave *owned NULL.
 * @return 0; SL_EINVAL/SL_ERANGE with *why = malloc'd reason (caller
 * frees) and *hint = static advice or NULL; SL_ENOMEM. */
int sl__param_parse(const sl_param_def *pd, const char *text, void *field,
                    char **owned, char **why, const char **hint) {
  *owned = NULL, *why = NULL, *hint = NULL;
  switch (pd->type) {
  case SL_PARAM_BOOL: {
    bool v;
    if (parse_bool(text, &v) == 0) return memcpy(field, &v, sizeof v), 0;
    *hint = "use true|false|yes|no|on|off|1|0";
    *why = reason_quoted(text, "is not a boolean");
    return *why ? SL_EINVAL : SL_ENOMEM;
  }
  case SL_PARAM_INT:
  case SL_PARAM_FLOAT:
  case SL_PARAM_SIZE: return parse_number(pd, text, field, why, hint);
  case SL_PARAM_STRING: {
    char *copy = sl__strdup(text);
    if (!copy) return SL_ENOMEM;
    memcpy(field, &copy, sizeof copy);
    *owned = copy;
    return 0;
  }
  case SL_PARAM_CHOICE: {
    int idx = choice_index(pd->choices, text);
    if (idx >= 0) return memcpy(field, &idx, sizeof idx), 0;
    char *what = sl__asprintf("must be one of %s", pd->choices);
    *why = what ? reason_quoted(text, what) : NULL;
    free(what);
    return *why ? SL_EINVAL : SL_ENOMEM;
  }
  }
  return SL_EINVAL;
}

/* --- table validation (at sl_registry_add) ------------------------------ */

static bool type_layout(sl_param_type t, size_t *size, size_t *align) {
  switch (t) {
  case SL_PARAM_BOOL: *size = sizeof(bool), *align = alignof(bool); break;
  case SL_PARAM_INT: *size = sizeof(int64_t), *align = alignof(int64_t); break;
  case SL_PARAM_FLOAT: *size = sizeof(double), *align = alignof(double); break;
  case SL_PARAM_SIZE: *size = sizeof(uint64_t), *align = alignof(uint64_t); break;
  case SL_PARAM_STRING: *size = sizeof(char *), *align = alignof(char *); break;
  case SL_PARAM_CHOICE: *size = sizeof(int), *align = alignof(int); break;
  default: return false;
  }
  return true;
}

/* "a|b|c": at least one alternative, none empty. */
static bool choices_valid(const char *choices) {
  if (!choices || !*choices) return false;
  for (const char *p = choices; *p; p++)
    if (*p == '|' && (p == choices || p[1] == '|' || p[1] == '\0')) return false;
  return true;
}

static bool is_common_name(const char *name) {
  for (const sl_param_def *c = sl__common_params; c->name; c++)
    if (strcmp(c->name, name) == 0) return true;
  return false;
}

/* One row on its own: name, type, layout, choices, bounds. */
static bool row_valid(const sl_param_def *pd, size_t params_size) {
  size_t size, align;
  if (!sl__name_valid(pd->name) || is_common_name(pd->name)) return false;
  if (!type_layout(pd->type, &size, &align)) return false;
  if (pd->offset % align || pd->offset > params_size ||
      size > params_size - pd->offset)
    return false;
  if (pd->type == SL_PARAM_CHOICE && !choices_valid(pd->choices)) return false;
  return !isnan(pd->min) && !isnan(pd->max);
}

/* A default must parse like a user's value would. */
static bool default_valid(const sl_param_def *pd) {
  if (!pd->def) return true;
  union { bool b; int64_t i; double f; uint64_t u; char *s; int c; } scratch;
  char *owned, *why;
  const char *hint;
  int rc = sl__param_parse(pd, pd->def, &scratch, &owned, &why, &hint);
  free(owned);
  free(why);
  return rc == 0;
}

/* Checks a parameter table (may be NULL) against the params struct size:
 * valid unique names not clashing with the common parameters, known types,
 * fields inside the struct and aligned, choices present, defaults parsing.
 * @return 0 or SL_EINVAL. */
int sl__param_table_check(const sl_param_def *tab, size_t params_size) {
  if (!tab) return 0;
  for (size_t i = 0; tab[i].name; i++) {
    if (!row_valid(&tab[i], params_size) || !default_valid(&tab[i]))
      return SL_EINVAL;
    for (size_t j = 0; j < i; j++)
      if (strcmp(tab[i].name, tab[j].name) == 0) return SL_EINVAL;
  }
  return 0;
}

/* Appends what values `pd` allows, for help tables: "1..100", "a|b",
 * "true|false", or "-" when anything of the type goes. */
void sl__param_allowed(const sl_param_def *pd, sl__buf *b) {
  bool numeric = pd->type == SL_PARAM_INT || pd->type == SL_PARAM_FLOAT ||
                 pd->type == SL_PARAM_SIZE;
  if (pd->type == SL_PARAM_CHOICE && pd->choices) {
    sl__buf_puts(b, pd->choices);
  } else if (pd->type == SL_PARAM_BOOL) {
    sl__buf_puts(b, "true|false");
  } else if (numeric && pd->min < pd->max) {
    format_bound(b, pd->type, pd->min);
    sl__buf_puts(b, "..");
    format_bound(b, pd->type, pd->max);
  } else {
    sl__buf_puts(b, "-");
  }
}
