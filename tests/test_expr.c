/*
 * test_expr.c -- the map expression language (stages/expr_*.c) on its own:
 * syntax and name errors with exact messages and columns, every operator
 * and function against values computed here with the C library (or by
 * hand), index variables of chunks placed inside a larger array, and a
 * stress test of random expressions evaluated both by the compiled block
 * program and by a small recursive evaluator written in this file.
 */
#include <math.h>

#include "../stages/expr_internal.h"
#include "test.h"

/* Compiles or fails the test. */
static sl__mprog *compile(const char *text, const sl__mvar *vars, size_t nvars) {
  sl__mprog *p;
  char *err;
  int rc = sl__mprog_compile(text, vars, nvars, &p, &err);
  if (rc < 0) SL__FAIL("compile '%s': %d %s", text, rc, err ? err : "");
  return p;
}

/* The compile error of `text`, or "" (static buffer). */
static const char *compile_error(const char *text, const char *vars) {
  static char buf[600];
  sl__mvar v[16];
  char *err = NULL;
  sl__mprog *p = NULL;
  int rc = sl__map_vars_parse(vars, v, 16, &err);
  if (rc >= 0) rc = sl__mprog_compile(text, v, (size_t)rc, &p, &err);
  snprintf(buf, sizeof buf, "%s", err ? err : "");
  free(err);
  sl__mprog_free(p);
  return buf;
}

/* Evaluates a compiled program over n values of x (a 1-D chunk at `origin`
 * of a whole array of `whole` elements), `bs` elements per block. */
static void run_1d(const sl__mprog *p, const double *x, size_t n, double *out,
                   uint64_t origin, uint64_t whole, size_t bs) {
  unsigned ns = sl__mprog_slots(p);
  double **slot = malloc(ns * sizeof *slot);
  double *mem = calloc((size_t)ns * SL__MAP_BLOCK, sizeof *mem);
  for (unsigned k = 0; k < ns; k++) slot[k] = mem + (size_t)k * SL__MAP_BLOCK;
  sl__mprog_fill_consts(p, slot);
  uint64_t shape[1] = {n}, org[1] = {origin}, wh[1] = {whole};
  for (size_t b = 0; b < n; b += bs) {
    size_t m = n - b < bs ? n - b : bs;
    slot[0] = (double *)(x + b); /* read only: x is never a destination */
    sl__mindex ix = {1, shape, org, wh, b};
    const double *r = sl__mprog_run(p, slot, m, &ix);
    memcpy(out + b, r, m * sizeof *r);
  }
  free(slot);
  free(mem);
}

static bool same(double a, double b) { return (isnan(a) && isnan(b)) || a == b; }

#define ASSERT_SAME(got, want, what)                                           \
  do {                                                                         \
    double sl__g = (got), sl__w = (want);                                      \
    if (!same(sl__g, sl__w))                                                   \
      SL__FAIL("%s: got %.17g, expected %.17g", what, sl__g, sl__w);           \
  } while (0)

/* ======================================================================
 * Errors
 * ====================================================================== */

TEST(parse_errors) {
  static const struct { const char *expr, *vars, *msg; } cases[] = {
      {"x + sqr(x)", "", "expr: unknown function \"sqr\" at column 5 (did you mean \"sqrt\"?)"},
      {"foo(x)", "", "expr: unknown function \"foo\" at column 1 (functions: where, abs, sqrt, "
                     "exp, log, log10, sin, cos, tan, floor, ceil, round, min, max, clip, isnan)"},
      {"min(x)", "", "expr: min() takes 2 arguments, not 1, at column 1"},
      {"2 * where(x, 1)", "", "expr: where() takes 3 arguments, not 2, at column 5"},
      {"abs()", "", "expr: abs() takes 1 argument, not 0, at column 1"},
      {"clip(x, 0, 1, 2)", "", "expr: clip() takes 3 arguments, not 4, at column 1"},
      {"sqrt(x", "", "expr: missing ')' at column 7 (for '(' of sqrt at column 1)"},
      {"max(x 1)", "", "expr: unexpected number 1 at column 7"},
      {"(x + 1", "", "expr: missing ')' at column 7 (for '(' at column 1)"},
      {"((x + 1)", "", "expr: missing ')' at column 9 (for '(' at column 1)"},
      {"x + 1)", "", "expr: unexpected ')' at column 6"},
      {"x +", "", "expr: unexpected end of expression at column 4"},
      {"x ^ 2", "", "expr: unexpected '^' at column 3 (use ** for powers)"},
      {"x = 1", "", "expr: unexpected '=' at column 3 (use == to compare)"},
      {"x > 1 & x < 2", "", "expr: unexpected '&' at column 7 (use && for 'and')"},
      {"0 < x < 1", "", "expr: unexpected '<' at column 7 (comparisons do not chain; use &&)"},
      {"1e999 * x", "", "expr: number 1e999 out of range at column 1"},
      {"2x", "", "expr: bad number \"2x\" at column 1"},
      {"x * 1.2.3", "", "expr: bad number \"1.2.3\" at column 5"},
      {"x @ 1", "", "expr: unexpected '@' at column 3"},
      {"\"s\"", "", "expr: unexpected '\"' at column 1"},
      {"x.y", "", "expr: unexpected '.' at column 2"},
      {"", "", "expr: empty expression"},
      {" \t", "", "expr: empty expression"},
      {"y * 2", "", "expr: unknown name \"y\" at column 1 (did you mean \"x\"?)"},
      {"2 * scale", "", "expr: unknown name \"scale\" at column 5 (names: x, i, i0..i7, inf, "
                        "nan, pi, true, false; parameters come from vars=)"},
      {"2 * sclae", "scale=2", "expr: unknown name \"sclae\" at column 5 (did you mean \"scale\"?)"},
      {"x + i9", "", "expr: no axis i9 at column 5 (arrays have at most 8)"},
      {"null", "", "expr: unknown name \"null\" at column 1 (names: x, i, i0..i7, inf, nan, pi, "
                   "true, false; parameters come from vars=)"},
      {"x", "a=1,a=2", "vars: \"a\" is given twice"},
      {"x", "x=1", "vars: \"x\" is a reserved name"},
      {"x", "i2=1", "vars: \"i2\" is a reserved name"},
      {"x", "a", "vars: expected name=value, got \"a\""},
      {"x", "a=abc", "vars: value of \"a\" is not a number: \"abc\""},
      {"x", "a=", "vars: value of \"a\" is not a number: \"\""},
      {"x", "2a=1", "vars: bad name \"2a\" (letters, digits and _)"},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
    ASSERT_STREQ(compile_error(cases[k].expr, cases[k].vars), cases[k].msg);
  ASSERT_STREQ(compile_error("x*a + b", " a = 2.5 , b=-1e3"), "");
}

TEST(nesting_limits) {
  char deep[700] = "";
  for (int k = 0; k < 100; k++) strcat(deep, "(");
  strcat(deep, "x");
  ASSERT_STREQ(compile_error(deep, ""), "expr: nested too deeply at column 65");
  strcpy(deep, "x");
  for (int k = 0; k < 100; k++) strcat(deep, "**x");
  ASSERT_CONTAINS(compile_error(deep, ""), "expr: nested too deeply at column");
  memset(deep, '-', 100);
  strcpy(deep + 100, "x");
  ASSERT_STREQ(compile_error(deep, ""), "expr: nested too deeply at column 64");
  /* Long flat chains are not nesting: 2000 terms compile. */
  char *flat = malloc(2000 * 4 + 8);
  strcpy(flat, "x");
  for (int k = 0; k < 2000; k++) strcat(flat, k % 2 ? "+x" : "*x");
  ASSERT_STREQ(compile_error(flat, ""), "");
  free(flat);
}

/* ======================================================================
 * Every operator and function
 * ====================================================================== */

static const double specials[] = {-1e300, -3.5, -2.5, -1, -0.5, -0.0, 0, 0.5, 1, 1.5, 2,
                                  2.5,    3.5,  10,   1e300, INFINITY, -INFINITY, NAN};
#define NSPEC (sizeof specials / sizeof specials[0])

/* Half to even, by hand (independent of nearbyint). */
static double round_even(double v) {
  if (!isfinite(v) || fabs(v) >= 0x1p52) return v;
  double f = floor(v), d = v - f;
  double r = d > 0.5 ? f + 1 : d < 0.5 ? f : fmod(f, 2) == 0 ? f : f + 1;
  return r == 0 ? copysign(0, v) : r;
}
static double ref_min(double a, double b) { return isnan(a) || isnan(b) ? NAN : fmin(a, b); }
static double ref_max(double a, double b) { return isnan(a) || isnan(b) ? NAN : fmax(a, b); }

typedef struct unop { const char *name; double (*f)(double); } unop;
static double ref_neg(double a) { return -a; }
static double ref_not(double a) { return a == 0 ? 1 : 0; }
static double ref_isnan(double a) { return isnan(a) ? 1 : 0; }

TEST(unary_functions) {
  static const unop ops[] = {{"-", ref_neg}, {"!", ref_not}, {"abs", fabs}, {"sqrt", sqrt},
                             {"exp", exp},   {"log", log},   {"log10", log10}, {"sin", sin},
                             {"cos", cos},   {"tan", tan},   {"floor", floor}, {"ceil", ceil},
                             {"round", round_even}, {"isnan", ref_isnan}};
  double out[NSPEC];
  char text[64];
  for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
    bool fn = strlen(ops[k].name) > 1;
    snprintf(text, sizeof text, fn ? "%s(x)" : "%sx", ops[k].name);
    sl__mprog *p = compile(text, NULL, 0);
    run_1d(p, specials, NSPEC, out, 0, NSPEC, SL__MAP_BLOCK);
    for (size_t j = 0; j < NSPEC; j++) {
      char what[128];
      snprintf(what, sizeof what, "%s at x=%g", text, specials[j]);
      ASSERT_SAME(out[j], ops[k].f(specials[j]), what);
      /* Folding a constant argument gives the same. */
      char ctext[128];
      snprintf(ctext, sizeof ctext, fn ? "%s(c)" : "%sc", ops[k].name);
      sl__mvar c = {"c", specials[j]};
      sl__mprog *q = compile(ctext, &c, 1);
      ASSERT_EQ(q->nins, 0);
      ASSERT_SAME(q->consts[q->result - 1], ops[k].f(specials[j]), what);
      sl__mprog_free(q);
    }
    sl__mprog_free(p);
  }
  /* Hand-computed: half to even, and signs. */
  const double xs[] = {0.5, 1.5, 2.5, -0.5, -2.5, 3.49};
  const double want[] = {0, 2, 2, -0.0, -2, 3};
  sl__mprog *p = compile("round(x)", NULL, 0);
  run_1d(p, xs, 6, out, 0, 6, SL__MAP_BLOCK);
  for (int j = 0; j < 6; j++) ASSERT_SAME(out[j], want[j], "round");
  ASSERT(signbit(out[3]));
  sl__mprog_free(p);
}

typedef struct binop { const char *text; double (*f)(double, double); } binop;
#define REF2(name, expr) static double name(double a, double b) { return expr; }
REF2(r_add, a + b) REF2(r_sub, a - b) REF2(r_mul, a * b) REF2(r_div, a / b)
REF2(r_lt, a < b) REF2(r_le, a <= b) REF2(r_gt, a > b) REF2(r_ge, a >= b)
REF2(r_eq, a == b) REF2(r_ne, a != b)
REF2(r_and, (a != 0 && b != 0) ? 1 : 0) REF2(r_or, (a != 0 || b != 0) ? 1 : 0)

/* Each binary operation in its three compiled forms: x OP c (scalar right),
 * c OP x (scalar left) and x OP (x + c) (two blocks), for every pair of
 * special values; plus c OP d folded. */
TEST(binary_operators) {
  static const binop ops[] = {
      {"%s + %s", r_add}, {"%s - %s", r_sub}, {"%s * %s", r_mul}, {"%s / %s", r_div},
      {"%s %% %s", fmod}, {"%s ** %s", pow},  {"%s < %s", r_lt},  {"%s <= %s", r_le},
      {"%s > %s", r_gt},  {"%s >= %s", r_ge}, {"%s == %s", r_eq}, {"%s != %s", r_ne},
      {"%s && %s", r_and}, {"%s || %s", r_or}, {"min(%s, %s)", ref_min},
      {"max(%s, %s)", ref_max}};
  double out[NSPEC];
  char text[128], what[200];
  for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
    for (size_t ci = 0; ci < NSPEC; ci++) {
      double c = specials[ci];
      sl__mvar var = {"c", c};
      for (int form = 0; form < 4; form++) {
        const char *l = form == 1 ? "c" : "x", *r = form == 0 ? "c" : form == 1 ? "x"
                                                 : form == 2 ? "(x + c)" : "c";
        if (form == 3) l = "(c)";
        snprintf(text, sizeof text, ops[k].text, l, r);
        sl__mprog *p = compile(text, &var, 1);
        run_1d(p, specials, NSPEC, out, 0, NSPEC, SL__MAP_BLOCK);
        for (size_t j = 0; j < NSPEC; j++) {
          double x = specials[j];
          double want = form == 0 ? ops[k].f(x, c) : form == 1 ? ops[k].f(c, x)
                      : form == 2 ? ops[k].f(x, x + c) : ops[k].f(c, c);
          snprintf(what, sizeof what, "%s at x=%g c=%g", text, x, c);
          ASSERT_SAME(out[j], want, what);
        }
        sl__mprog_free(p);
      }
    }
  }
}

TEST(ternary_and_literals) {
  double out[NSPEC];
  sl__mprog *p = compile("where(x > 1, x * 2, -x)", NULL, 0);
  run_1d(p, specials, NSPEC, out, 0, NSPEC, SL__MAP_BLOCK);
  for (size_t j = 0; j < NSPEC; j++)
    ASSERT_SAME(out[j], specials[j] > 1 ? specials[j] * 2 : -specials[j], "where");
  sl__mprog_free(p);
  /* NaN is true for where, !, && and || (non-zero). */
  p = compile("where(x, 1, 2) + 10 * !x + 100 * (x && 1) + 1000 * (x || 0)", NULL, 0);
  run_1d(p, specials, NSPEC, out, 0, NSPEC, SL__MAP_BLOCK);
  for (size_t j = 0; j < NSPEC; j++) {
    bool t = specials[j] != 0;
    ASSERT_SAME(out[j], (t ? 1 : 2) + 10 * !t + 100 * t + 1000 * t, "truth");
  }
  ASSERT_SAME(out[NSPEC - 1], 1101, "NaN is true");
  sl__mprog_free(p);
  const double lo[] = {-1, NAN, 0}, hi[] = {1, 1, NAN};
  for (int b = 0; b < 3; b++) {
    sl__mvar v[2] = {{"lo", lo[b]}, {"hi", hi[b]}};
    p = compile("clip(x, lo, hi)", v, 2);
    run_1d(p, specials, NSPEC, out, 0, NSPEC, SL__MAP_BLOCK);
    for (size_t j = 0; j < NSPEC; j++)
      ASSERT_SAME(out[j], ref_min(ref_max(specials[j], lo[b]), hi[b]), "clip");
    sl__mprog_free(p);
  }
  /* Literals, constants and precedence, folded to one constant. */
  static const struct { const char *text; double want; } k[] = {
      {"-2 ** 2", -4}, {"2 ** -1", 0.5}, {"2 ** 3 ** 2", 512}, {"1e-3 * 1000", 1},
      {"7 % 3 + -7 % 3", 0}, {"true + true", 2}, {"!false", 1}, {"1 / 0", INFINITY},
      {"-1 / 0", -INFINITY}, {"inf - inf", NAN}, {"isnan(nan)", 1}, {"nan == nan", 0},
      {"nan != nan", 1}, {"(1 < 2) == 1", 1}, {"2 + 3 * 4", 14}, {"(2 + 3) * 4", 20},
      {"10 - 4 - 3", 3}, {"2 * pi", 6.283185307179586}, {"1 || 0 && 0", 1},
      {"-x * 0 + 5", NAN}, /* not folded: x is not constant */
  };
  for (size_t j = 0; j < sizeof k / sizeof k[0] - 1; j++) {
    p = compile(k[j].text, NULL, 0);
    ASSERT_EQ(p->nins, 0);
    ASSERT_SAME(p->consts[p->result - 1], k[j].want, k[j].text);
    sl__mprog_free(p);
  }
  /* 2.5*x - 1 is two instructions with scalar operands: no constant block. */
  p = compile("2.5*x - 1", NULL, 0);
  ASSERT_EQ(p->nins, 2);
  ASSERT_EQ(p->nconst, 0);
  sl__mprog_free(p);
}

/* ======================================================================
 * Index variables
 * ====================================================================== */

TEST(index_variables) {
  /* A 3x5 chunk at (2, 7) of a 10x20 array, in blocks of 4 (crossing
   * rows), then a 1-D chunk at 1000. */
  uint64_t shape[2] = {3, 5}, origin[2] = {2, 7}, whole[2] = {10, 20};
  sl__mprog *p = compile("i * 1000000 + i0 * 1000 + i1", NULL, 0);
  unsigned ns = sl__mprog_slots(p);
  double *mem = calloc((size_t)ns * SL__MAP_BLOCK, sizeof *mem), *slot[64];
  for (unsigned k = 0; k < ns; k++) slot[k] = mem + (size_t)k * SL__MAP_BLOCK;
  sl__mprog_fill_consts(p, slot);
  for (uint64_t first = 0; first < 15; first += 4) {
    size_t m = 15 - first < 4 ? (size_t)(15 - first) : 4;
    sl__mindex ix = {2, shape, origin, whole, first};
    const double *r = sl__mprog_run(p, slot, m, &ix);
    for (size_t j = 0; j < m; j++) {
      uint64_t e = first + j, r0 = 2 + e / 5, c0 = 7 + e % 5;
      ASSERT_SAME(r[j], (double)((r0 * 20 + c0) * 1000000 + r0 * 1000 + c0), "index 2-D");
    }
  }
  free(mem);
  sl__mprog_free(p);
  double x[700], out[700];
  for (int j = 0; j < 700; j++) x[j] = j * 0.5;
  p = compile("x + i * 10", NULL, 0);
  run_1d(p, x, 700, out, 1000, 5000, 100);
  for (int j = 0; j < 700; j++) ASSERT_SAME(out[j], j * 0.5 + (1000 + j) * 10, "index 1-D");
  sl__mprog_free(p);
}

/* ======================================================================
 * Random expressions against a recursive reference evaluator
 * ====================================================================== */

typedef struct rnode {
  int kind; /* 0 leaf x, 1 leaf i, 2 const, 3 var a, 4 unary, 5 binary, 6 ternary */
  int op;
  double c;
  struct rnode *k[3];
} rnode;

static uint64_t g_rng = 0x1234567;
static uint64_t rnd(void) {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return g_rng;
}

static const char *const un_names[] = {"-", "!", "abs", "sqrt", "exp", "log", "log10",
                                       "sin", "cos", "tan", "floor", "ceil", "round", "isnan"};
static double (*const un_ref[])(double) = {ref_neg, ref_not, fabs, sqrt, exp, log, log10,
                                           sin, cos, tan, floor, ceil, round_even, ref_isnan};
static const char *const bin_fmt[] = {"(%s + %s)", "(%s - %s)", "(%s * %s)", "(%s / %s)",
                                      "(%s %% %s)", "(%s ** %s)", "(%s < %s)", "(%s <= %s)",
                                      "(%s > %s)", "(%s >= %s)", "(%s == %s)", "(%s != %s)",
                                      "(%s && %s)", "(%s || %s)", "min(%s, %s)", "max(%s, %s)"};
static double (*const bin_ref[])(double, double) = {r_add, r_sub, r_mul, r_div, fmod, pow,
                                                    r_lt, r_le, r_gt, r_ge, r_eq, r_ne,
                                                    r_and, r_or, ref_min, ref_max};

static rnode *gen_tree(int depth) {
  rnode *n = calloc(1, sizeof *n);
  int r = (int)(rnd() % 10);
  if (depth == 0 || r < 3) {
    n->kind = (int)(rnd() % 4);
    if (n->kind == 2)
      n->c = rnd() % 3 ? specials[rnd() % NSPEC] : (double)(int64_t)(rnd() % 2000 - 1000) / 8;
    return n;
  }
  n->kind = r < 5 ? 4 : r < 9 ? 5 : 6;
  n->op = (int)(rnd() % (n->kind == 4 ? 14 : n->kind == 5 ? 16 : 2));
  for (int j = 0; j < n->kind - 3; j++) n->k[j] = gen_tree(depth - 1);
  return n;
}

static void print_tree(const rnode *n, char *buf, size_t len) {
  char a[4096], b[4096], c[4096];
  switch (n->kind) {
  case 0: snprintf(buf, len, "x"); return;
  case 1: snprintf(buf, len, "i"); return;
  case 3: snprintf(buf, len, "a"); return;
  case 2:
    if (isnan(n->c)) snprintf(buf, len, "nan");
    else if (isinf(n->c)) snprintf(buf, len, n->c > 0 ? "inf" : "(-inf)");
    else snprintf(buf, len, "(%.17g)", n->c);
    return;
  case 4:
    print_tree(n->k[0], a, sizeof a);
    snprintf(buf, len, n->op < 2 ? "(%s%s)" : "%s(%s)", un_names[n->op], a);
    return;
  case 5:
    print_tree(n->k[0], a, sizeof a);
    print_tree(n->k[1], b, sizeof b);
    snprintf(buf, len, bin_fmt[n->op], a, b);
    return;
  default:
    print_tree(n->k[0], a, sizeof a);
    print_tree(n->k[1], b, sizeof b);
    print_tree(n->k[2], c, sizeof c);
    snprintf(buf, len, "%s(%s, %s, %s)", n->op ? "clip" : "where", a, b, c);
  }
}

static double eval_tree(const rnode *n, double x, double i, double a) {
  switch (n->kind) {
  case 0: return x;
  case 1: return i;
  case 2: return n->c;
  case 3: return a;
  case 4: return un_ref[n->op](eval_tree(n->k[0], x, i, a));
  case 5: return bin_ref[n->op](eval_tree(n->k[0], x, i, a), eval_tree(n->k[1], x, i, a));
  default: {
    double p = eval_tree(n->k[0], x, i, a), q = eval_tree(n->k[1], x, i, a),
           r = eval_tree(n->k[2], x, i, a);
    return n->op ? ref_min(ref_max(p, q), r) : (p != 0 ? q : r);
  }
  }
}

static void free_tree(rnode *n) {
  if (!n) return;
  for (int j = 0; j < 3; j++) free_tree(n->k[j]);
  free(n);
}

TEST(random_expressions) {
  enum { N = 1100 };
  static double x[N], out[N];
  for (int j = 0; j < N; j++)
    x[j] = j % 5 == 0 ? specials[rnd() % NSPEC] : (double)(int64_t)(rnd() % 4000 - 2000) / 16;
  static char text[16384];
  for (int t = 0; t < 400; t++) {
    rnode *tree = gen_tree(2 + t % 5);
    print_tree(tree, text, sizeof text);
    sl__mvar a = {"a", specials[rnd() % NSPEC]};
    sl__mprog *p = compile(text, &a, 1);
    size_t bs = t % 3 == 0 ? 7 : SL__MAP_BLOCK;
    run_1d(p, x, N, out, 3, N + 3, bs);
    for (int j = 0; j < N; j++) {
      double want = eval_tree(tree, x[j], (double)(3 + j), a.value);
      if (!same(out[j], want))
        SL__FAIL("%s\n  at x=%.17g i=%d a=%g: got %.17g, expected %.17g", text, x[j], 3 + j,
                 a.value, out[j], want);
    }
    sl__mprog_free(p);
    free_tree(tree);
  }
}

static const sl_test_case cases[] = {
    SL_CASE(parse_errors, "unit"),
    SL_CASE(nesting_limits, "unit"),
    SL_CASE(unary_functions, "unit"),
    SL_CASE(binary_operators, "unit"),
    SL_CASE(ternary_and_literals, "unit"),
    SL_CASE(index_variables, "unit"),
    SL_CASE(random_expressions, "stress"),
};
SL_TEST_MAIN(cases)
