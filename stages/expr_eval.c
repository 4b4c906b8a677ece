/*
 * expr_eval.c -- runs a compiled map program (expr_internal.h) over one
 * block of at most SL__MAP_BLOCK doubles.
 *
 * Each instruction is one tight loop over the block, so the compiler can
 * vectorise it (built with -O3 -fno-math-errno: sqrt then becomes one
 * instruction instead of a call that may set errno; nothing here reads
 * errno). The block stays in L1 between instructions, so a chain of simple
 * operations costs about one pass over memory.
 *
 * Every operation's meaning is written once, as a macro used both by the
 * block kernels and by sl__mop_apply() (constant folding), so a folded
 * constant equals what the kernel would have computed. Truth: non-zero is
 * true (NaN too, as in C and numpy's bool(nan)); comparisons and logic give
 * 1 or 0; comparisons with NaN are false except !=. min, max and clip
 * propagate NaN (numpy's minimum/maximum/clip). round is half to even
 * (numpy's round); % is C's fmod (the result has the sign of the dividend,
 * unlike numpy's %).
 */
#include <math.h>
#include <string.h>

#include "expr_internal.h"

#define TRUTH(c) ((c) ? 1.0 : 0.0)
#define F_NEG(a) (-(a))
#define F_NOT(a) TRUTH((a) == 0)
#define F_ABS(a) fabs(a)
#define F_SQRT(a) sqrt(a)
#define F_EXP(a) exp(a)
#define F_LOG(a) log(a)
#define F_LOG10(a) log10(a)
#define F_SIN(a) sin(a)
#define F_COS(a) cos(a)
#define F_TAN(a) tan(a)
#define F_FLOOR(a) floor(a)
#define F_CEIL(a) ceil(a)
#define F_ROUND(a) nearbyint(a) /* default rounding mode: half to even */
#define F_ISNAN(a) TRUTH(isnan(a))
#define F_ADD(a, b) ((a) + (b))
#define F_SUB(a, b) ((a) - (b))
#define F_MUL(a, b) ((a) * (b))
#define F_DIV(a, b) ((a) / (b))
#define F_MOD(a, b) fmod(a, b)
#define F_POW(a, b) pow(a, b)
#define F_LT(a, b) TRUTH((a) < (b))
#define F_LE(a, b) TRUTH((a) <= (b))
#define F_GT(a, b) TRUTH((a) > (b))
#define F_GE(a, b) TRUTH((a) >= (b))
#define F_EQ(a, b) TRUTH((a) == (b))
#define F_NE(a, b) TRUTH((a) != (b))
/* Bitwise & and | on the truth values: no short-circuit branch, so the
 * loops have no control flow to stop vectorisation. */
#define F_AND(a, b) TRUTH(((a) != 0) & ((b) != 0))
#define F_OR(a, b) TRUTH(((a) != 0) | ((b) != 0))
/* NaN propagates: a NaN `a` fails the test and is kept, a NaN `b` is
 * taken. Written as one select so that it vectorises. */
#define F_MIN(a, b) (((b) < (a) || isnan(b)) ? (b) : (a))
#define F_MAX(a, b) (((b) > (a) || isnan(b)) ? (b) : (a))
#define F_WHERE(c, a, b) ((c) != 0 ? (a) : (b))

static inline double clip3(double x, double lo, double hi) {
  double t = F_MAX(x, lo);
  return F_MIN(t, hi);
}
#define F_CLIP(x, lo, hi) clip3(x, lo, hi)

/* (The kernels copy operands into locals first: a macro argument written
 * as a[j] inside a ?: would be a conditional load, which stops GCC from
 * vectorising.) */

/* Every unary and binary op, for the generated switch cases. */
#define UNARY_OPS(X)                                                           \
  X(NEG) X(NOT) X(ABS) X(SQRT) X(EXP) X(LOG) X(LOG10) X(SIN) X(COS) X(TAN)     \
  X(FLOOR) X(CEIL) X(ROUND) X(ISNAN)
#define BINARY_OPS(X)                                                          \
  X(ADD) X(SUB) X(MUL) X(DIV) X(MOD) X(POW) X(LT) X(LE) X(GT) X(GE) X(EQ)      \
  X(NE) X(AND) X(OR) X(MIN) X(MAX)

double sl__mop_apply(sl__mop op, double a, double b, double c) {
  switch (op) {
#define U(name) case SL__M_##name: return F_##name(a);
#define B(name) case SL__M_##name: return F_##name(a, b);
    UNARY_OPS(U)
    BINARY_OPS(B)
#undef U
#undef B
  case SL__M_WHERE: return F_WHERE(a, b, c);
  case SL__M_CLIP: return F_CLIP(a, b, c);
  default: return NAN; /* index leaves are never folded */
  }
}

/* One small function per kernel keeps each loop simple enough to
 * vectorise. The compiler never gives an instruction a destination that is
 * also one of its operands, which `restrict` tells the compiler (so it needs
 * no runtime overlap check). */
#define UNARY_KERNEL(name)                                                     \
  static void k_##name(double *restrict d, const double *restrict a, size_t m) {                 \
    for (size_t j = 0; j < m; j++) {                                          \
      double u = a[j];                                                         \
      d[j] = F_##name(u);                                                      \
    }                      \
  }
#define BINARY_KERNEL(name)                                                    \
  static void kvv_##name(double *restrict d, const double *restrict a,         \
                         const double *restrict b, size_t m) {                 \
    for (size_t j = 0; j < m; j++) {                                          \
      double u = a[j], v = b[j];                                               \
      d[j] = F_##name(u, v);                                                   \
    }                \
  }                                                                            \
  static void kvk_##name(double *restrict d, const double *restrict a,         \
                         double k, size_t m) {                                 \
    for (size_t j = 0; j < m; j++) {                                          \
      double u = a[j];                                                         \
      d[j] = F_##name(u, k);                                                   \
    }                   \
  }                                                                            \
  static void kkv_##name(double *restrict d, double k,                         \
                         const double *restrict b, size_t m) {                 \
    for (size_t j = 0; j < m; j++) {                                          \
      double v = b[j];                                                         \
      d[j] = F_##name(k, v);                                                   \
    }                   \
  }
UNARY_OPS(UNARY_KERNEL)
BINARY_OPS(BINARY_KERNEL)

static void k_where(double *restrict d, const double *restrict c,
                    const double *restrict a, const double *restrict b, size_t m) {
  /* Both sides are loaded unconditionally: a select, not a branch. */
  for (size_t j = 0; j < m; j++) {
    double t = c[j], u = a[j], v = b[j];
    d[j] = F_WHERE(t, u, v);
  }
}

static void k_clip(double *restrict d, const double *restrict x,
                   const double *restrict lo, const double *restrict hi, size_t m) {
  for (size_t j = 0; j < m; j++) {
    double u = x[j], l = lo[j], h = hi[j];
    d[j] = F_CLIP(u, l, h);
  }
}

/* The block's elements as positions in the whole array: along axis `axis`
 * (origin + position in the chunk) when axis >= 0, else the flat C-order
 * index in the whole array. Walks the chunk's multi-index, one run of the
 * last axis at a time. Values are exact up to 2^53. */
static void k_index(double *d, const sl__mindex *ix, int axis, size_t m) {
  uint32_t nd = ix->ndim;
  if (nd == 0) {
    for (size_t j = 0; j < m; j++) d[j] = 0;
    return;
  }
  uint64_t pos[SL_MAX_DIMS], rest = ix->first;
  for (uint32_t k = nd; k-- > 0;) {
    pos[k] = ix->shape[k] ? rest % ix->shape[k] : 0;
    rest = ix->shape[k] ? rest / ix->shape[k] : 0;
  }
  size_t j = 0;
  while (j < m) {
    uint64_t run = ix->shape[nd - 1] - pos[nd - 1];
    if (run > m - j) run = m - j;
    if (axis >= 0) {
      double v = (double)(ix->origin[axis] + pos[axis]);
      if ((uint32_t)axis == nd - 1)
        for (uint64_t t = 0; t < run; t++) d[j + t] = v + (double)t;
      else
        for (uint64_t t = 0; t < run; t++) d[j + t] = v;
    } else {
      uint64_t flat = 0;
      for (uint32_t k = 0; k < nd; k++) flat = flat * ix->whole[k] + ix->origin[k] + pos[k];
      for (uint64_t t = 0; t < run; t++) d[j + t] = (double)(flat + t);
    }
    j += (size_t)run;
    pos[nd - 1] += run;
    for (uint32_t k = nd - 1; k > 0 && pos[k] >= ix->shape[k]; k--) {
      pos[k] = 0;
      pos[k - 1]++;
    }
  }
}

static void run_binary(const sl__minst *in, double *const *s, size_t m) {
  double *d = s[in->dst];
  switch ((in->op << 2) | in->form) {
#define B(name)                                                                \
  case (SL__M_##name << 2) | SL__MF_VV: kvv_##name(d, s[in->a], s[in->b], m); break; \
  case (SL__M_##name << 2) | SL__MF_VK: kvk_##name(d, s[in->a], in->k, m); break;    \
  case (SL__M_##name << 2) | SL__MF_KV: kkv_##name(d, in->k, s[in->b], m); break;
    BINARY_OPS(B)
#undef B
  default: break;
  }
}

const double *sl__mprog_run(const sl__mprog *p, double *const *s, size_t m,
                            const sl__mindex *ix) {
  for (size_t t = 0; t < p->nins; t++) {
    const sl__minst *in = &p->ins[t];
    double *d = s[in->dst];
    switch (in->op) {
    case SL__M_IDX: k_index(d, ix, -1, m); break;
    case SL__M_IDXK: k_index(d, ix, (int)in->axis, m); break;
#define U(name) case SL__M_##name: k_##name(d, s[in->a], m); break;
      UNARY_OPS(U)
#undef U
    case SL__M_WHERE: k_where(d, s[in->a], s[in->b], s[in->c], m); break;
    case SL__M_CLIP: k_clip(d, s[in->a], s[in->b], s[in->c], m); break;
    default: run_binary(in, s, m); break;
    }
  }
  return s[p->result];
}
