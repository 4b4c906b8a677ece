/*
 * expr_internal.h -- the expression languages of `filter` and `map`.
 *
 * One lexer and parser (expr_parse.c) serve both stages. A language
 * description (sl__xlang) switches on what a stage understands: string
 * literals and `null` (filter), `%` and `**` (map), integer literals (filter
 * keeps int64; map computes in double), dotted names (filter's column
 * names) and a table of functions. The parser produces an array of nodes
 * whose children always come before their parent, so every later pass
 * (typing, folding, compiling, evaluating) is one loop over the array with
 * no recursion, whatever the shape of the tree. The root is the last node.
 *
 * Syntax errors are "expr: <what> at column N[ (hint)]", N counting from 1
 * in the expression text.
 *
 * The map language (expr_map.c compiles, expr_eval.c evaluates) turns a
 * parsed expression into a register program evaluated over blocks of
 * SL__MAP_BLOCK doubles. Private to stages/ (and the tests).
 */
#ifndef SLUICE_EXPR_INTERNAL_H
#define SLUICE_EXPR_INTERNAL_H

#include "sluice.h"

/* ======================================================================
 * Parsed expressions (shared)
 * ====================================================================== */

/* Node operators. The ranges INT..NULL (literals), ADD..POW (arithmetic)
 * and LT..NE (comparisons) are contiguous; filter relies on it. */
typedef enum sl__xop {
  SL__X_NAME,                                                  /* s */
  SL__X_INT, SL__X_NUM, SL__X_STR, SL__X_BOOL, SL__X_NULL,     /* literals */
  SL__X_NEG, SL__X_NOT,                                        /* unary */
  SL__X_ADD, SL__X_SUB, SL__X_MUL, SL__X_DIV, SL__X_MOD, SL__X_POW,
  SL__X_LT, SL__X_LE, SL__X_GT, SL__X_GE, SL__X_EQ, SL__X_NE,
  SL__X_AND, SL__X_OR,
  SL__X_CALL /* fn: index into the language's functions; args a, b, c */
} sl__xop;

typedef struct sl__xnode {
  sl__xop op;
  int a, b, c;  /* children (earlier nodes), -1 when none */
  int fn;       /* SL__X_CALL: function index */
  unsigned pos; /* 1-based column in the expression text */
  int64_t i;    /* SL__X_INT, SL__X_BOOL */
  double f;     /* SL__X_NUM */
  char *s;      /* SL__X_STR bytes; SL__X_NAME name (NUL-terminated) */
  size_t slen;
} sl__xnode;

typedef struct sl__expr {
  sl__xnode *n;
  size_t count, cap;
} sl__expr;

/* A function of a language. */
typedef struct sl__xfunc {
  const char *name;
  unsigned nargs;   /* exact argument count, at most 3 */
  /* When non-NULL, the function takes one "string" and is another way to
   * write a name (filter's col("unit price")); the text says what the
   * argument must be, for the error message. */
  const char *quoted_name;
} sl__xfunc;

typedef struct sl__xlang {
  bool strings;      /* "..." literals */
  bool null_lit;     /* `null` */
  bool int_lits;     /* numbers without . or e are SL__X_INT (else NUM) */
  bool mod_pow;      /* `%` and `**` */
  bool dotted_names; /* '.' may appear inside names */
  const sl__xfunc *funcs;
  size_t nfuncs;
  /* Hint for an unknown function with no close match, e.g. "only
   * col(\"name\")"; NULL lists the functions. */
  const char *func_hint;
} sl__xlang;

/* Parses `text`. @return 0 with *out (caller frees with sl__expr_free),
 * SL_EPARSE with *err (a malloc'd message), or SL_ENOMEM. */
int sl__expr_parse(const char *text, const sl__xlang *lang, sl__expr **out,
                   char **err);
void sl__expr_free(sl__expr *e);
/* The operator as written ("+", "&&", ...); "" for leaves and calls. */
const char *sl__expr_op_text(sl__xop op);
/* The candidate closest to `word` (edit distance at most 1, or 2 for words
 * of 5 letters or more), or NULL: for "did you mean" hints. */
const char *sl__expr_closest(const char *word, const char *const *cands,
                             size_t n);

/* ======================================================================
 * The map language: a register program over blocks of doubles
 * ====================================================================== */

#define SL__MAP_BLOCK 512
/* Most temporaries a program may need (each is one block of doubles). */
#define SL__MAP_MAX_REGS 256

typedef enum sl__mop {
  /* leaves computed per block */
  SL__M_IDX, SL__M_IDXK,
  /* unary */
  SL__M_NEG, SL__M_NOT, SL__M_ABS, SL__M_SQRT, SL__M_EXP, SL__M_LOG,
  SL__M_LOG10, SL__M_SIN, SL__M_COS, SL__M_TAN, SL__M_FLOOR, SL__M_CEIL,
  SL__M_ROUND, SL__M_ISNAN,
  /* binary */
  SL__M_ADD, SL__M_SUB, SL__M_MUL, SL__M_DIV, SL__M_MOD, SL__M_POW,
  SL__M_LT, SL__M_LE, SL__M_GT, SL__M_GE, SL__M_EQ, SL__M_NE,
  SL__M_AND, SL__M_OR, SL__M_MIN, SL__M_MAX,
  /* ternary */
  SL__M_WHERE, SL__M_CLIP,
  SL__M_COUNT
} sl__mop;

/* How a binary instruction takes its operands: both from slots, or one of
 * them as the scalar `k` (the common `2.5*x`, `x - 1`, `x > 0`). */
typedef enum sl__mform { SL__MF_VV, SL__MF_VK, SL__MF_KV } sl__mform;

typedef struct sl__minst {
  uint8_t op;   /* sl__mop */
  uint8_t form; /* sl__mform (binary ops) */
  uint16_t dst, a, b, c; /* slots */
  uint32_t axis;         /* SL__M_IDXK */
  double k;              /* scalar operand */
} sl__minst;

/* Slots: 0 is x; 1..nconst hold constants (filled once per scratch area);
 * then the temporaries. */
typedef struct sl__mprog {
  sl__minst *ins;
  size_t nins;
  double *consts;
  unsigned nconst, nregs;
  unsigned result;    /* slot holding the value after the program ran */
  bool uses_x;
  int max_axis;       /* highest iK used, -1 when none */
  unsigned axis_pos;  /* column of the first use of that iK, for errors */
} sl__mprog;

/* Named parameters of a map expression (vars=). */
typedef struct sl__mvar {
  char name[32];
  double value;
} sl__mvar;

/* Parses "a=1.5, b=2" into at most `max` vars. @return the count, or
 * SL_EPARSE with *err (malloc'd), or SL_ENOMEM. */
int sl__map_vars_parse(const char *text, sl__mvar *vars, size_t max, char **err);

/* Parses, resolves names (x, i, i0..i7, inf, nan, pi, true, false, vars),
 * folds constants and compiles `text`. @return 0 with *out (free with
 * sl__mprog_free), SL_EPARSE with *err, or SL_ENOMEM. */
int sl__mprog_compile(const char *text, const sl__mvar *vars, size_t nvars,
                      sl__mprog **out, char **err);
void sl__mprog_free(sl__mprog *p);
/* Slots a scratch area needs (x buffer, constants, temporaries). */
unsigned sl__mprog_slots(const sl__mprog *p);
/* Fills the constant slots of a scratch area (slots[s] for s in 1..nconst,
 * each SL__MAP_BLOCK doubles). */
void sl__mprog_fill_consts(const sl__mprog *p, double *const *slots);

/* Where a block lies, for the index variables: the chunk's shape, its
 * origin in the whole array and the whole shape, and the block's first
 * element (flat C-order index within the chunk). */
typedef struct sl__mindex {
  uint32_t ndim;
  const uint64_t *shape, *origin, *whole;
  uint64_t first;
} sl__mindex;

/* Runs the program over m <= SL__MAP_BLOCK elements. slots[0] must point at
 * the x values (when uses_x), the other slots at scratch blocks (constants
 * filled). @return the result values (slots[result]). */
const double *sl__mprog_run(const sl__mprog *p, double *const *slots, size_t m,
                            const sl__mindex *ix);

/* The scalar semantics of one operation, used for constant folding; the
 * block kernels compute exactly the same. */
double sl__mop_apply(sl__mop op, double a, double b, double c);

#endif
