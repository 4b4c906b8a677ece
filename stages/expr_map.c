/*
 * expr_map.c -- the `map` expression language: names, constant folding and
 * compilation to a register program (expr_internal.h; run by expr_eval.c).
 *
 * Every value is a double. Names: x (the element), i (its flat C-order
 * index in the whole array), i0..i7 (its index along each axis), inf, nan,
 * pi, true/false (1/0) and the vars= parameters, which are constants known
 * at create() time and so fold like literals.
 *
 * Compilation is one pass over the parser's node array (children first):
 * a node whose operands are all constant is folded with sl__mop_apply (the
 * kernels' own semantics); x is slot 0; every other node becomes one
 * instruction writing a temporary. A temporary is freed when its parent
 * (each node has one) has been emitted, after the parent's destination was
 * taken, so a destination never aliases an operand. Binary operations with
 * one constant operand take it as a scalar (`2.5*x - 1` is two
 * instructions and no constant block); ternary ones read constants from
 * slots filled once per scratch area.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expr_internal.h"

static const sl__xfunc map_funcs[] = {
    {"where", 3, NULL}, {"abs", 1, NULL},   {"sqrt", 1, NULL},  {"exp", 1, NULL},
    {"log", 1, NULL},   {"log10", 1, NULL}, {"sin", 1, NULL},   {"cos", 1, NULL},
    {"tan", 1, NULL},   {"floor", 1, NULL}, {"ceil", 1, NULL},  {"round", 1, NULL},
    {"min", 2, NULL},   {"max", 2, NULL},   {"clip", 3, NULL},  {"isnan", 1, NULL},
};
static const sl__mop func_ops[] = {
    SL__M_WHERE, SL__M_ABS,  SL__M_SQRT, SL__M_EXP,   SL__M_LOG,  SL__M_LOG10,
    SL__M_SIN,   SL__M_COS,  SL__M_TAN,  SL__M_FLOOR, SL__M_CEIL, SL__M_ROUND,
    SL__M_MIN,   SL__M_MAX,  SL__M_CLIP, SL__M_ISNAN,
};

static const sl__xlang map_lang = {
    .strings = false, .null_lit = false, .int_lits = false, .mod_pow = true,
    .dotted_names = false, .funcs = map_funcs,
    .nfuncs = sizeof map_funcs / sizeof map_funcs[0], .func_hint = NULL};

/* Names that vars= may not redefine. */
static bool reserved(const char *s) {
  static const char *const words[] = {"x", "i", "inf", "nan", "pi", "true", "false"};
  for (size_t k = 0; k < sizeof words / sizeof words[0]; k++)
    if (!strcmp(s, words[k])) return true;
  return s[0] == 'i' && s[1] >= '0' && s[1] <= '9';
}

static int seterr(char **err, const char *fmt, ...) SL_PRINTF(2, 3);
static int seterr(char **err, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (!(*err = strdup(buf))) return SL_ENOMEM;
  return SL_EPARSE;
}

/* One "name=value" of vars=, spaces around either allowed. */
static int parse_var(const char *s, size_t len, sl__mvar *v, char **err) {
  const char *eq = memchr(s, '=', len);
  if (!eq) return seterr(err, "vars: expected name=value, got \"%.*s\"", (int)len, s);
  const char *n0 = s, *n1 = eq;
  while (n0 < n1 && *n0 == ' ') n0++;
  while (n1 > n0 && n1[-1] == ' ') n1--;
  size_t nl = (size_t)(n1 - n0);
  bool ok = nl > 0 && nl < sizeof v->name &&
            ((*n0 >= 'a' && *n0 <= 'z') || (*n0 >= 'A' && *n0 <= 'Z') || *n0 == '_');
  for (size_t k = 0; ok && k < nl; k++) {
    char c = n0[k];
    ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (c >= '0' && c <= '9');
  }
  if (!ok) return seterr(err, "vars: bad name \"%.*s\" (letters, digits and _)", (int)nl, n0);
  memcpy(v->name, n0, nl);
  v->name[nl] = '\0';
  if (reserved(v->name)) return seterr(err, "vars: \"%s\" is a reserved name", v->name);
  char buf[64];
  const char *v0 = eq + 1, *v1 = s + len;
  while (v0 < v1 && *v0 == ' ') v0++;
  while (v1 > v0 && v1[-1] == ' ') v1--;
  size_t vl = (size_t)(v1 - v0);
  char *end = NULL;
  if (vl > 0 && vl < sizeof buf) {
    memcpy(buf, v0, vl);
    buf[vl] = '\0';
    v->value = strtod(buf, &end);
  }
  if (!end || *end)
    return seterr(err, "vars: value of \"%s\" is not a number: \"%.*s\"", v->name, (int)vl, v0);
  return 0;
}

int sl__map_vars_parse(const char *text, sl__mvar *vars, size_t max, char **err) {
  *err = NULL;
  size_t n = 0;
  if (!text) return 0;
  for (const char *s = text; *s;) {
    const char *e = strchr(s, ',');
    size_t len = e ? (size_t)(e - s) : strlen(s);
    if (n == max) return seterr(err, "vars: more than %zu variables", max);
    int rc = parse_var(s, len, &vars[n], err);
    if (rc < 0) return rc;
    for (size_t k = 0; k < n; k++)
      if (!strcmp(vars[k].name, vars[n].name))
        return seterr(err, "vars: \"%s\" is given twice", vars[n].name);
    n++;
    s += len + (e != NULL);
  }
  return (int)n;
}

/* What a node is after folding. */
typedef enum vkind { V_CONST, V_X, V_REG } vkind;

typedef struct compiler {
  const sl__expr *e;
  const sl__mvar *vars;
  size_t nvars;
  vkind *kind;     /* per node */
  double *val;     /* per node: V_CONST value */
  int *reg;        /* per node: V_REG temporary */
  bool *busy;      /* per temporary */
  unsigned nregs;
  sl__mprog *p;
  size_t inscap;
  char **err;
} compiler;

static int unknown_name(compiler *c, const sl__xnode *n) {
  const char *cands[8 + 64];
  size_t nc = 0;
  static const char *const fixed[] = {"x", "i", "i0", "i1", "inf", "nan", "pi"};
  for (size_t k = 0; k < sizeof fixed / sizeof fixed[0]; k++) cands[nc++] = fixed[k];
  for (size_t k = 0; k < c->nvars && nc < sizeof cands / sizeof cands[0]; k++)
    cands[nc++] = c->vars[k].name;
  const char *close = sl__expr_closest(n->s, cands, nc);
  char name[48];
  snprintf(name, sizeof name, "%.40s", n->s);
  if (close)
    return seterr(c->err, "expr: unknown name \"%s\" at column %u (did you mean \"%s\"?)",
                  name, n->pos, close);
  return seterr(c->err, "expr: unknown name \"%s\" at column %u (names: x, i, i0..i7, "
                "inf, nan, pi, true, false%s)", name, n->pos,
                c->nvars ? " and vars=" : "; parameters come from vars=");
}

/* Resolves a name node: a constant, x, or an index leaf (opcode in *op). */
static int resolve_name(compiler *c, size_t k, int *op, uint32_t *axis) {
  const sl__xnode *n = &c->e->n[k];
  const char *s = n->s;
  *op = -1;
  if (!strcmp(s, "x")) c->kind[k] = V_X;
  else if (!strcmp(s, "inf")) c->val[k] = INFINITY;
  else if (!strcmp(s, "nan")) c->val[k] = NAN;
  else if (!strcmp(s, "pi")) c->val[k] = 3.14159265358979323846;
  else if (!strcmp(s, "i")) *op = SL__M_IDX;
  else if (s[0] == 'i' && s[1] >= '0' && s[1] <= '9' && !s[2]) {
    if (s[1] - '0' >= SL_MAX_DIMS)
      return seterr(c->err, "expr: no axis %s at column %u (arrays have at most %d)", s,
                    n->pos, SL_MAX_DIMS);
    *op = SL__M_IDXK;
    *axis = (uint32_t)(s[1] - '0');
  } else {
    size_t v = 0;
    while (v < c->nvars && strcmp(c->vars[v].name, s)) v++;
    if (v == c->nvars) return unknown_name(c, n);
    c->val[k] = c->vars[v].value;
  }
  return 0;
}

/* The instruction of a parsed operator. */
static sl__mop op_of(const sl__xnode *n) {
  static const sl__mop bin[] = {SL__M_ADD, SL__M_SUB, SL__M_MUL, SL__M_DIV, SL__M_MOD,
                                SL__M_POW, SL__M_LT,  SL__M_LE,  SL__M_GT,  SL__M_GE,
                                SL__M_EQ,  SL__M_NE,  SL__M_AND, SL__M_OR};
  if (n->op == SL__X_NEG) return SL__M_NEG;
  if (n->op == SL__X_NOT) return SL__M_NOT;
  if (n->op == SL__X_CALL) return func_ops[n->fn];
  return bin[n->op - SL__X_ADD];
}

static int arity(sl__mop op) {
  if (op <= SL__M_IDXK) return 0;
  if (op <= SL__M_ISNAN) return 1;
  if (op <= SL__M_MAX) return 2;
  return 3;
}

/* Operand encoding during compilation (fixed up by finish()): temporary r
 * is r, x is ENC_X, constant k is ENC_CONST + k. */
#define ENC_CONST SL__MAP_MAX_REGS
#define ENC_X 0xFFFFu
#define MAX_CONSTS 60000u

/* A constant's index (deduplicated by bit pattern), or -1 when out of
 * memory or constants. */
static int const_index(compiler *c, double v) {
  sl__mprog *p = c->p;
  for (unsigned k = 0; k < p->nconst; k++)
    if (!memcmp(&p->consts[k], &v, sizeof v)) return (int)k;
  if (p->nconst == MAX_CONSTS) return -1;
  double *nv = realloc(p->consts, (p->nconst + 1) * sizeof *nv);
  if (!nv) return -1;
  p->consts = nv;
  nv[p->nconst] = v;
  return (int)p->nconst++;
}

/* @return the encoded operand, or -1 (out of memory). */
static int operand(compiler *c, int child) {
  if (c->kind[child] == V_X) return (int)ENC_X;
  if (c->kind[child] == V_REG) return c->reg[child];
  int k = const_index(c, c->val[child]);
  return k < 0 ? -1 : ENC_CONST + k;
}

static int take_reg(compiler *c) {
  for (unsigned r = 0; r < c->nregs; r++)
    if (!c->busy[r]) {
      c->busy[r] = true;
      return (int)r;
    }
  if (c->nregs == SL__MAP_MAX_REGS) return -1;
  c->busy[c->nregs] = true;
  return (int)c->nregs++;
}

static int emit(compiler *c, sl__minst in, size_t k) {
  sl__mprog *p = c->p;
  if (p->nins == c->inscap) {
    size_t cap = c->inscap ? 2 * c->inscap : 16;
    sl__minst *v = realloc(p->ins, cap * sizeof *v);
    if (!v) return SL_ENOMEM;
    p->ins = v;
    c->inscap = cap;
  }
  int r = take_reg(c);
  if (r < 0)
    return seterr(c->err, "expr: too complex at column %u (needs more than %d temporaries)",
                  c->e->n[k].pos, SL__MAP_MAX_REGS);
  in.dst = (uint16_t)r;
  p->ins[p->nins++] = in;
  c->kind[k] = V_REG;
  c->reg[k] = r;
  return 0;
}

/* Folds or emits operator node k. */
static int compile_op(compiler *c, size_t k) {
  const sl__xnode *n = &c->e->n[k];
  sl__mop op = op_of(n);
  int kids[3] = {n->a, n->b, n->c}, na = arity(op);
  bool all_const = true;
  for (int j = 0; j < na; j++) all_const &= c->kind[kids[j]] == V_CONST;
  if (all_const) {
    double v[3] = {0, 0, 0};
    for (int j = 0; j < na; j++) v[j] = c->val[kids[j]];
    c->val[k] = sl__mop_apply(op, v[0], v[1], v[2]);
    return 0;
  }
  sl__minst in = {(uint8_t)op, SL__MF_VV, 0, 0, 0, 0, 0, 0};
  int o[3] = {0, 0, 0};
  if (na == 2 && c->kind[kids[0]] == V_CONST) {
    in.form = SL__MF_KV;
    in.k = c->val[kids[0]];
  } else if (na == 2 && c->kind[kids[1]] == V_CONST) {
    in.form = SL__MF_VK;
    in.k = c->val[kids[1]];
  }
  for (int j = 0; j < na; j++) {
    if ((j == 0 && in.form == SL__MF_KV) || (j == 1 && in.form == SL__MF_VK)) continue;
    if ((o[j] = operand(c, kids[j])) < 0) return SL_ENOMEM;
  }
  in.a = (uint16_t)o[0];
  in.b = (uint16_t)o[1];
  in.c = (uint16_t)o[2];
  int rc = emit(c, in, k);
  for (int j = 0; j < na; j++)
    if (c->kind[kids[j]] == V_REG) c->busy[c->reg[kids[j]]] = false;
  return rc;
}

static int compile_node(compiler *c, size_t k) {
  const sl__xnode *n = &c->e->n[k];
  c->kind[k] = V_CONST;
  switch (n->op) {
  case SL__X_NUM: c->val[k] = n->f; return 0;
  case SL__X_INT: c->val[k] = (double)n->i; return 0;
  case SL__X_BOOL: c->val[k] = n->i ? 1.0 : 0.0; return 0;
  case SL__X_NAME: {
    int op;
    uint32_t axis = 0;
    int rc = resolve_name(c, k, &op, &axis);
    if (rc < 0 || op < 0) return rc;
    if (op == SL__M_IDXK && (int)axis > c->p->max_axis) {
      c->p->max_axis = (int)axis;
      c->p->axis_pos = n->pos;
    }
    sl__minst in = {(uint8_t)op, SL__MF_VV, 0, 0, 0, 0, axis, 0};
    return emit(c, in, k);
  }
  case SL__X_STR: case SL__X_NULL:
    return seterr(c->err, "expr: unexpected literal at column %u", n->pos);
  default: return compile_op(c, k);
  }
}

/* Turns encoded operands into slots: x 0, constants 1..nconst, then
 * temporaries; picks the result slot. */
static void finish(compiler *c) {
  sl__mprog *p = c->p;
  unsigned base = 1 + p->nconst;
  for (size_t t = 0; t < p->nins; t++) {
    sl__minst *in = &p->ins[t];
    uint16_t *ops[3] = {&in->a, &in->b, &in->c};
    for (int j = 0; j < 3; j++) {
      unsigned v = *ops[j];
      *ops[j] = (uint16_t)(v == ENC_X ? 0 : v >= ENC_CONST ? 1 + v - ENC_CONST : base + v);
    }
    in->dst = (uint16_t)(base + in->dst);
  }
  p->nregs = c->nregs;
  size_t root = c->e->count - 1;
  if (c->kind[root] == V_X) p->result = 0;
  else if (c->kind[root] == V_REG) p->result = base + (unsigned)c->reg[root];
  else p->result = 1 + (unsigned)const_index(c, c->val[root]); /* exists */
  for (size_t k = 0; k < c->e->count; k++) p->uses_x |= c->kind[k] == V_X;
}

static void compiler_free(compiler *c) {
  free(c->kind);
  free(c->val);
  free(c->reg);
  free(c->busy);
}

int sl__mprog_compile(const char *text, const sl__mvar *vars, size_t nvars,
                      sl__mprog **out, char **err) {
  *out = NULL;
  *err = NULL;
  sl__expr *e;
  int rc = sl__expr_parse(text, &map_lang, &e, err);
  if (rc < 0) return rc;
  compiler c = {e, vars, nvars, calloc(e->count, sizeof(vkind)),
                calloc(e->count, sizeof(double)), calloc(e->count, sizeof(int)),
                calloc(SL__MAP_MAX_REGS, sizeof(bool)), 0,
                calloc(1, sizeof(sl__mprog)), 0, err};
  if (!c.kind || !c.val || !c.reg || !c.busy || !c.p) rc = SL_ENOMEM;
  if (c.p) c.p->max_axis = -1;
  for (size_t k = 0; rc == 0 && k < e->count; k++) rc = compile_node(&c, k);
  /* The result slot of a constant expression needs the constant's slot. */
  if (rc == 0 && c.kind[e->count - 1] == V_CONST &&
      const_index(&c, c.val[e->count - 1]) < 0)
    rc = SL_ENOMEM;
  if (rc == 0) finish(&c);
  compiler_free(&c);
  sl__expr_free(e);
  if (rc < 0) {
    sl__mprog_free(c.p);
    return rc;
  }
  *out = c.p;
  return 0;
}

void sl__mprog_free(sl__mprog *p) {
  if (!p) return;
  free(p->ins);
  free(p->consts);
  free(p);
}

unsigned sl__mprog_slots(const sl__mprog *p) { return 1 + p->nconst + p->nregs; }

void sl__mprog_fill_consts(const sl__mprog *p, double *const *slots) {
  for (unsigned k = 0; k < p->nconst; k++)
    for (size_t j = 0; j < SL__MAP_BLOCK; j++) slots[1 + k][j] = p->consts[k];
}
