/*
 * expr_parse.c -- the lexer and recursive-descent parser shared by the
 * `filter` and `map` expression languages (see expr_internal.h).
 *
 * Grammar, loosest first:
 *   expr    := and ('||' and)*
 *   and     := cmp ('&&' cmp)*
 *   cmp     := add (cmpop add)?          comparisons do not chain
 *   add     := mul (('+'|'-') mul)*
 *   mul     := unary (('*'|'/'|'%') unary)*
 *   unary   := ('-'|'!') unary | power
 *   power   := primary ('**' unary)?     right-associative, binds tighter
 *                                        than unary minus: -x**2 = -(x**2)
 *   primary := number | "string" | name | name '(' args ')' | '(' expr ')'
 * `%` and `**` exist only when the language enables them, strings and null
 * likewise. Nesting (parentheses, unary operators, `**` chains, calls) is
 * limited to MAX_DEPTH so a hostile expression cannot exhaust the stack.
 * Only the first error is kept: later ones are usually its echoes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "expr_internal.h"

#define MAX_DEPTH 64

typedef enum tok { T_END, T_NUM, T_STR, T_NAME, T_OP } tok;

typedef struct parser {
  const char *text;
  const sl__xlang *lang;
  size_t pos;        /* scan position */
  tok t;             /* current token */
  size_t start, len; /* its span in text */
  char *err;         /* first error, malloc'd */
  bool oom;
  unsigned depth;
  sl__expr *e;
} parser;

static const char *const op_texts[] = {
    "", "", "", "", "", "", "-", "!", "+", "-", "*", "/", "%", "**",
    "<", "<=", ">", ">=", "==", "!=", "&&", "||", ""};

const char *sl__expr_op_text(sl__xop op) {
  return (unsigned)op < sizeof op_texts / sizeof op_texts[0] ? op_texts[op] : "";
}

void sl__expr_free(sl__expr *e) {
  if (!e) return;
  for (size_t i = 0; i < e->count; i++) free(e->n[i].s);
  free(e->n);
  free(e);
}

static void perr(parser *ps, const char *fmt, ...) SL_PRINTF(2, 3);
static void perr(parser *ps, const char *fmt, ...) {
  if (ps->err || ps->oom) return;
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  size_t n = strlen(buf) + 1;
  if (!(ps->err = malloc(n))) ps->oom = true;
  else memcpy(ps->err, buf, n);
}

static bool failed(const parser *ps) { return ps->err || ps->oom; }
/* Columns in messages count from 1. */
static unsigned col_of(size_t at) { return (unsigned)at + 1; }

static bool name_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static bool digit(char c) { return c >= '0' && c <= '9'; }
static bool name_char(const parser *ps, char c) {
  return name_start(c) || digit(c) || (c == '.' && ps->lang->dotted_names);
}

/* Scans a number token; letters (or dots) glued to it make it one bad
 * token, so "12abc" and "1.2.3" are reported whole. */
static size_t scan_number(const parser *ps, const char *s) {
  size_t i = 0;
  while (digit(s[i])) i++;
  if (s[i] == '.') for (i++; digit(s[i]); i++) {}
  if ((s[i] == 'e' || s[i] == 'E') &&
      (digit(s[i + 1]) || ((s[i + 1] == '+' || s[i + 1] == '-') && digit(s[i + 2])))) {
    i += 2;
    while (digit(s[i])) i++;
  }
  while (name_char(ps, s[i]) || s[i] == '.') i++;
  return i;
}

/* Scans a string literal from the opening quote; 0 when unterminated. */
static size_t scan_string(const char *s) {
  size_t i = 1;
  for (; s[i] && s[i] != '"'; i++)
    if (s[i] == '\\' && s[i + 1]) i++;
  return s[i] == '"' ? i + 1 : 0;
}

static const char *const two_char_ops[] = {"<=", ">=", "==", "!=", "&&", "||", "**"};

/* Moves to the next token. */
static void next(parser *ps) {
  const char *s = ps->text;
  size_t i = ps->pos;
  while (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') i++;
  ps->start = i;
  char c = s[i];
  size_t len = 1;
  if (!c) {
    ps->t = T_END;
    len = 0;
  } else if (digit(c) || (c == '.' && digit(s[i + 1]))) {
    ps->t = T_NUM;
    len = scan_number(ps, s + i);
  } else if (c == '"' && ps->lang->strings) {
    ps->t = T_STR;
    if (!(len = scan_string(s + i))) {
      perr(ps, "expr: unterminated string at column %u", col_of(i));
      len = strlen(s + i);
    }
  } else if (name_start(c)) {
    ps->t = T_NAME;
    while (name_char(ps, s[i + len])) len++;
  } else {
    ps->t = T_OP;
    size_t nops = sizeof two_char_ops / sizeof two_char_ops[0] - !ps->lang->mod_pow;
    for (size_t k = 0; k < nops; k++)
      if (c == two_char_ops[k][0] && s[i + 1] == two_char_ops[k][1]) len = 2;
  }
  ps->len = len;
  ps->pos = i + len;
}

static bool is_op(const parser *ps, const char *o) {
  return ps->t == T_OP && ps->len == strlen(o) &&
         strncmp(ps->text + ps->start, o, ps->len) == 0;
}

/* Reports the current token as unexpected, with a hint for common slips. */
static void unexpected(parser *ps, const char *hint) {
  unsigned at = col_of(ps->start);
  const char *tx = ps->text + ps->start;
  int n = (int)(ps->len > 40 ? 40 : ps->len);
  if (!hint && is_op(ps, "=")) hint = " (use == to compare)";
  if (!hint && is_op(ps, "&")) hint = " (use && for 'and')";
  if (!hint && is_op(ps, "|")) hint = " (use || for 'or')";
  if (!hint && is_op(ps, "^") && ps->lang->mod_pow) hint = " (use ** for powers)";
  if (!hint) hint = "";
  switch (ps->t) {
  case T_END: perr(ps, "expr: unexpected end of expression at column %u%s", at, hint); break;
  case T_NUM: perr(ps, "expr: unexpected number %.*s at column %u%s", n, tx, at, hint); break;
  case T_STR: perr(ps, "expr: unexpected string %.*s at column %u%s", n, tx, at, hint); break;
  case T_NAME: perr(ps, "expr: unexpected name \"%.*s\" at column %u%s", n, tx, at, hint); break;
  case T_OP: perr(ps, "expr: unexpected '%.*s' at column %u%s", n, tx, at, hint); break;
  }
}

static bool deeper(parser *ps, size_t at) {
  if (++ps->depth <= MAX_DEPTH) return true;
  perr(ps, "expr: nested too deeply at column %u", col_of(at));
  return false;
}

/* Appends a node. @return its index, or -1 when out of memory. */
static int add_node(parser *ps, sl__xnode nd) {
  sl__expr *e = ps->e;
  if (e->count == e->cap) {
    size_t cap = e->cap ? 2 * e->cap : 16;
    sl__xnode *v = realloc(e->n, cap * sizeof *v);
    if (!v) {
      free(nd.s);
      ps->oom = true;
      return -1;
    }
    e->n = v;
    e->cap = cap;
  }
  e->n[e->count] = nd;
  return (int)e->count++;
}

static sl__xnode leaf(sl__xop op, size_t at) {
  return (sl__xnode){op, -1, -1, -1, -1, col_of(at), 0, 0, NULL, 0};
}

static int node2(parser *ps, sl__xop o, int a, int b, size_t at) {
  if (a < 0 || b < 0) return -1;
  sl__xnode nd = leaf(o, at);
  nd.a = a;
  nd.b = b;
  return add_node(ps, nd);
}

/* Decodes a string literal's escapes. @return bytes (malloc'd) or NULL. */
static char *unescape(parser *ps, size_t start, size_t len, size_t *out_len) {
  const char *s = ps->text + start + 1;
  size_t n = len - 2, k = 0;
  char *d = malloc(n + 1);
  if (!d) {
    ps->oom = true;
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    if (s[i] != '\\') {
      d[k++] = s[i];
      continue;
    }
    char c = s[++i];
    const char *from = "\"\\ntr", *to = "\"\\\n\t\r";
    const char *f = strchr(from, c);
    if (!f || !c) {
      perr(ps, "expr: unknown escape \\%c at column %u", c ? c : ' ',
           col_of(start + i));
      free(d);
      return NULL;
    }
    d[k++] = to[f - from];
  }
  d[k] = '\0';
  *out_len = k;
  return d;
}

static int parse_expr(parser *ps);
static int parse_unary(parser *ps);

/* A number literal: int64 unless it has a '.' or an exponent (or the
 * language computes in double anyway). */
static int parse_number(parser *ps) {
  char buf[64];
  size_t at = ps->start, len = ps->len;
  if (len >= sizeof buf) len = sizeof buf - 1;
  memcpy(buf, ps->text + at, len);
  buf[len] = '\0';
  char *end;
  errno = 0;
  sl__xnode nd = leaf(SL__X_INT, at);
  if (!ps->lang->int_lits || strpbrk(buf, ".eE")) {
    nd.op = SL__X_NUM;
    nd.f = strtod(buf, &end);
  } else {
    nd.i = strtoll(buf, &end, 10);
  }
  if (*end || len != ps->len) {
    perr(ps, "expr: bad number \"%s\" at column %u", buf, col_of(at));
    return -1;
  }
  /* strtod also sets ERANGE for underflow (1e-400 -> 0); only overflow is
   * an error. */
  if (errno == ERANGE && (nd.op == SL__X_INT || nd.f != 0)) {
    perr(ps, "expr: number %s out of range at column %u", buf, col_of(at));
    return -1;
  }
  next(ps);
  return add_node(ps, nd);
}

/* f("text") for a function that quotes a name. */
static int parse_quoted_name(parser *ps, const sl__xfunc *f, size_t at) {
  if (ps->t != T_STR) {
    perr(ps, "expr: %s() needs %s at column %u", f->name, f->quoted_name,
         col_of(ps->start));
    return -1;
  }
  size_t slen = 0;
  char *name = unescape(ps, ps->start, ps->len, &slen);
  if (!name) return -1;
  next(ps);
  if (!is_op(ps, ")")) {
    free(name);
    unexpected(ps, NULL);
    return -1;
  }
  next(ps);
  sl__xnode nd = leaf(SL__X_NAME, at);
  nd.s = name;
  nd.slen = slen;
  return add_node(ps, nd);
}

static void unknown_function(parser *ps, const char *s, size_t len, size_t at) {
  const sl__xlang *l = ps->lang;
  char name[48], list[320] = "";
  snprintf(name, sizeof name, "%.*s", (int)(len > 40 ? 40 : len), s);
  const char *cands[64];
  size_t nc = l->nfuncs < 64 ? l->nfuncs : 64;
  for (size_t k = 0; k < nc; k++) cands[k] = l->funcs[k].name;
  const char *close = sl__expr_closest(name, cands, nc);
  if (close) {
    perr(ps, "expr: unknown function \"%s\" at column %u (did you mean \"%s\"?)",
         name, col_of(at), close);
    return;
  }
  if (l->func_hint) {
    perr(ps, "expr: unknown function \"%s\" at column %u (%s)", name, col_of(at),
         l->func_hint);
    return;
  }
  for (size_t k = 0; k < nc; k++) {
    size_t used = strlen(list);
    snprintf(list + used, sizeof list - used, "%s%s", k ? ", " : "", cands[k]);
  }
  perr(ps, "expr: unknown function \"%s\" at column %u (functions: %s)", name,
       col_of(at), list);
}

/* name(args): the current token is the name; the next one is '('. */
static int parse_call(parser *ps) {
  const char *s = ps->text + ps->start;
  size_t len = ps->len, at = ps->start;
  const sl__xlang *l = ps->lang;
  size_t fn = 0;
  while (fn < l->nfuncs &&
         !(strlen(l->funcs[fn].name) == len && !strncmp(s, l->funcs[fn].name, len)))
    fn++;
  if (fn == l->nfuncs) {
    unknown_function(ps, s, len, at);
    return -1;
  }
  const sl__xfunc *f = &l->funcs[fn];
  next(ps); /* ( */
  next(ps);
  if (f->quoted_name) return parse_quoted_name(ps, f, at);
  if (!deeper(ps, at)) return -1;
  int args[3] = {-1, -1, -1};
  unsigned n = 0;
  while (n > 0 || !is_op(ps, ")")) { /* f() has no arguments */
    int r = parse_expr(ps);
    if (r < 0) return -1;
    if (n < 3) args[n] = r;
    n++;
    if (is_op(ps, ")")) break;
    if (!is_op(ps, ",")) {
      if (ps->t == T_END)
        perr(ps, "expr: missing ')' at column %u (for '(' of %s at column %u)",
             col_of(ps->start), f->name, col_of(at));
      else
        unexpected(ps, NULL);
      return -1;
    }
    next(ps);
  }
  ps->depth--;
  if (n != f->nargs) {
    perr(ps, "expr: %s() takes %u argument%s, not %u, at column %u", f->name,
         f->nargs, f->nargs == 1 ? "" : "s", n, col_of(at));
    return -1;
  }
  next(ps);
  sl__xnode nd = leaf(SL__X_CALL, at);
  nd.fn = (int)fn;
  nd.a = args[0];
  nd.b = args[1];
  nd.c = args[2];
  return add_node(ps, nd);
}

/* A name: true, false, null, a call, or a plain name. */
static int parse_name(parser *ps) {
  const char *s = ps->text + ps->start;
  size_t len = ps->len, at = ps->start;
  size_t after = ps->pos;
  while (ps->text[after] == ' ' || ps->text[after] == '\t') after++;
  sl__xnode nd = leaf(SL__X_BOOL, at);
  if (len == 4 && !strncmp(s, "true", 4)) nd.i = 1;
  else if (len == 5 && !strncmp(s, "false", 5)) nd.i = 0;
  else if (len == 4 && !strncmp(s, "null", 4) && ps->lang->null_lit) nd.op = SL__X_NULL;
  else if (ps->text[after] == '(') return parse_call(ps);
  else nd.op = SL__X_NAME;
  if (nd.op == SL__X_NAME) {
    if (!(nd.s = malloc(len + 1))) {
      ps->oom = true;
      return -1;
    }
    memcpy(nd.s, s, len);
    nd.s[len] = '\0';
    nd.slen = len;
  }
  next(ps);
  return add_node(ps, nd);
}

static int parse_primary(parser *ps) {
  if (ps->t == T_NUM) return parse_number(ps);
  if (ps->t == T_NAME) return parse_name(ps);
  if (ps->t == T_STR) {
    size_t at = ps->start, slen = 0;
    char *s = unescape(ps, ps->start, ps->len, &slen);
    if (!s) return -1;
    next(ps);
    sl__xnode nd = leaf(SL__X_STR, at);
    nd.s = s;
    nd.slen = slen;
    return add_node(ps, nd);
  }
  if (is_op(ps, "(")) {
    size_t open = ps->start;
    next(ps);
    int r = parse_expr(ps);
    if (r < 0) return -1;
    if (!is_op(ps, ")")) {
      unsigned at = col_of(ps->start), o = col_of(open);
      if (ps->t == T_END)
        perr(ps, "expr: missing ')' at column %u (for '(' at column %u)", at, o);
      else
        unexpected(ps, NULL);
      return -1;
    }
    next(ps);
    return r;
  }
  unexpected(ps, NULL);
  return -1;
}

static int parse_power(parser *ps) {
  int l = parse_primary(ps);
  if (l < 0 || !ps->lang->mod_pow || !is_op(ps, "**")) return l;
  size_t at = ps->start;
  if (!deeper(ps, at)) return -1;
  next(ps);
  int r = parse_unary(ps);
  ps->depth--;
  return node2(ps, SL__X_POW, l, r, at);
}

static int parse_unary(parser *ps) {
  if (!is_op(ps, "!") && !is_op(ps, "-")) return parse_power(ps);
  sl__xop o = is_op(ps, "!") ? SL__X_NOT : SL__X_NEG;
  size_t at = ps->start;
  if (!deeper(ps, at)) return -1;
  next(ps);
  int a = parse_unary(ps);
  ps->depth--;
  if (a < 0) return -1;
  sl__xnode nd = leaf(o, at);
  nd.a = a;
  return add_node(ps, nd);
}

/* One left-associative level: operands from `sub`, operators in `ops`. */
static int parse_level(parser *ps, int (*sub)(parser *), const char *const *ops,
                       const sl__xop *codes, size_t nops) {
  int l = sub(ps);
  while (l >= 0) {
    size_t k = 0;
    while (k < nops && !is_op(ps, ops[k])) k++;
    if (k == nops) break;
    size_t at = ps->start;
    next(ps);
    l = node2(ps, codes[k], l, sub(ps), at);
  }
  return l;
}

static int parse_mul(parser *ps) {
  static const char *const ops[] = {"*", "/", "%"};
  static const sl__xop codes[] = {SL__X_MUL, SL__X_DIV, SL__X_MOD};
  return parse_level(ps, parse_unary, ops, codes, ps->lang->mod_pow ? 3 : 2);
}

static int parse_add(parser *ps) {
  static const char *const ops[] = {"+", "-"};
  static const sl__xop codes[] = {SL__X_ADD, SL__X_SUB};
  return parse_level(ps, parse_mul, ops, codes, 2);
}

static const char *const cmp_ops[] = {"<", "<=", ">", ">=", "==", "!="};
static const sl__xop cmp_codes[] = {SL__X_LT, SL__X_LE, SL__X_GT,
                                    SL__X_GE, SL__X_EQ, SL__X_NE};

static int cmp_index(const parser *ps) {
  for (int k = 0; k < 6; k++)
    if (is_op(ps, cmp_ops[k])) return k;
  return -1;
}

/* A comparison does not chain: `a < b < c` is an error. */
static int parse_cmp(parser *ps) {
  int l = parse_add(ps);
  int k = cmp_index(ps);
  if (l < 0 || k < 0) return l;
  size_t at = ps->start;
  next(ps);
  int r = node2(ps, cmp_codes[k], l, parse_add(ps), at);
  if (r >= 0 && cmp_index(ps) >= 0) {
    unexpected(ps, " (comparisons do not chain; use &&)");
    return -1;
  }
  return r;
}

static int parse_and(parser *ps) {
  static const char *const ops[] = {"&&"};
  static const sl__xop codes[] = {SL__X_AND};
  return parse_level(ps, parse_cmp, ops, codes, 1);
}

static int parse_expr(parser *ps) {
  static const char *const ops[] = {"||"};
  static const sl__xop codes[] = {SL__X_OR};
  if (!deeper(ps, ps->start)) return -1;
  int r = parse_level(ps, parse_and, ops, codes, 1);
  ps->depth--;
  return r;
}

int sl__expr_parse(const char *text, const sl__xlang *lang, sl__expr **out,
                   char **err) {
  *out = NULL;
  *err = NULL;
  parser ps = {.text = text, .lang = lang};
  if (!(ps.e = calloc(1, sizeof *ps.e))) return SL_ENOMEM;
  next(&ps);
  if (ps.t == T_END && !failed(&ps)) perr(&ps, "expr: empty expression");
  int root = failed(&ps) ? -1 : parse_expr(&ps);
  if (root >= 0 && ps.t != T_END) unexpected(&ps, NULL);
  if (failed(&ps)) {
    sl__expr_free(ps.e);
    if (ps.oom && !ps.err) return SL_ENOMEM;
    *err = ps.err;
    return SL_EPARSE;
  }
  *out = ps.e; /* the root is the last node */
  return 0;
}

/* Levenshtein distance, capped: names are short. */
static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 31 || lb > 31) return 99;
  size_t d[32][32];
  for (size_t i = 0; i <= la; i++) d[i][0] = i;
  for (size_t j = 0; j <= lb; j++) d[0][j] = j;
  for (size_t i = 1; i <= la; i++)
    for (size_t j = 1; j <= lb; j++) {
      size_t sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
      size_t del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
      d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
    }
  return d[la][lb];
}

const char *sl__expr_closest(const char *word, const char *const *cands, size_t n) {
  size_t limit = strlen(word) >= 5 ? 2 : 1, best = limit + 1;
  const char *pick = NULL;
  for (size_t k = 0; k < n; k++) {
    size_t dist = edit_distance(word, cands[k]);
    if (dist < best) {
      best = dist;
      pick = cands[k];
    }
  }
  return pick;
}
