/*
 * reduce_chunk.c -- folds one ARRAY chunk into a partial of `reduce`.
 *
 * Every element type folds as one of three value classes (doubles, int64,
 * uint64; reduce_internal.h). A chunk is cut into *runs*, each folded into
 * one cell in increasing index order:
 *   whole array: maximal stretches that are contiguous both in memory and
 *     in the flat C-order index (the whole chunk when its trailing axes are
 *     full), indices = flat positions in the whole array;
 *   axis=k: for each cell of the chunk's box, the elements along axis k,
 *     indices = positions along axis k (numpy's argmin(axis=k)).
 * A run is folded in blocks of BLK elements, always cut at the same places
 * for the same run, on one thread, so a chunk's partial is a pure function
 * of the chunk. Per block: the sum with 8 independent accumulators (as
 * numpy's pairwise summation does at its leaves; vectorisable), added to
 * the cell with Neumaier compensation; for var/std a second pass over the
 * block (still in L1) gives the block's m2 about its own mean, merged into
 * the cell with Chan's formula (more accurate than per-element Welford and
 * no division per element); min/max lanes, and a scan for the first index
 * only when a block improves the extreme; NaN is looked for only in blocks
 * whose sum is NaN (a NaN always makes the sum NaN).
 *
 * Histograms follow numpy.histogram exactly: edges lo + i*step (step =
 * (hi-lo)/bins, the last edge = hi), the bin from (x-lo)*norm truncated,
 * then corrected by one against the edges; values outside [lo, hi] and NaN
 * are ignored, the last bin is closed. Values are binned as doubles, a
 * block at a time: first every element's bin index without a branch (the
 * same arithmetic in SSE2 and, where the CPU has it, AVX2: 4 elements per
 * instruction; indices are small integers, exact in doubles), then the
 * counts. Long runs count into four interleaved copies of the histogram,
 * summed at the end of the run, so that neighbouring elements in the same
 * bin (smooth data) do not wait on each other's increment.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__) /* every x86-64; AVX2 is chosen at run time */
#include <immintrin.h>
#define HAVE_X86 1
#endif

#include "reduce_internal.h"

#define BLK 256

typedef struct kctx {
  unsigned ops;
  sl__rclass cls;
  uint32_t nbins;
  double lo, hi, norm, step;
  bool need_sum, need_var, need_min, need_max;
  bool simd_bins;   /* step > 0, nbins < 2^31: hist_block bins in batches */
  int simd;         /* kernel level (SL__RSIMD_*) of the lanes and the bins,
                       chosen per fold */
  uint64_t *sub;    /* SL__RSUB * (nbins + 1) counts, or NULL */
  uint32_t stride;  /* the current run counts into sub, copies this far
                       apart; 0: straight into the cell's histogram */
} kctx;

static void kctx_init(kctx *k, const sl__rpart *p) {
  k->ops = p->ops;
  k->cls = sl__rclass_of(p->dtype);
  k->nbins = p->nbins;
  k->lo = p->lo;
  k->hi = p->hi;
  if (k->nbins) {
    k->norm = (double)k->nbins / (k->hi - k->lo);
    k->step = (k->hi - k->lo) / (double)k->nbins;
  }
  k->need_sum = p->ops & (SL__ROP_SUM | SL__ROP_MEAN | SL__ROP_VAR | SL__ROP_STD);
  k->need_var = p->ops & (SL__ROP_VAR | SL__ROP_STD);
  k->need_min = p->ops & (SL__ROP_MIN | SL__ROP_ARGMIN);
  k->need_max = p->ops & (SL__ROP_MAX | SL__ROP_ARGMAX);
  k->simd_bins = k->nbins && k->nbins < INT32_MAX && k->step > 0 && isfinite(k->norm);
}

/* sl__rhist_edge with the step computed once. */
static inline double edge(const kctx *k, int64_t i) {
  if (i >= (int64_t)k->nbins || k->step == 0)
    return sl__rhist_edge(k->lo, k->hi, k->nbins, i);
  double y = (double)i * k->step;
  return y + k->lo;
}

static inline void hist_add(const kctx *k, uint64_t *h, double x) {
  if (!(x >= k->lo && x <= k->hi)) return; /* also drops NaN */
  int64_t nb = k->nbins;
  int64_t i = (int64_t)((x - k->lo) * k->norm);
  if (i >= nb) i = nb - 1;
  if (x < edge(k, i)) i--;
  else if (i != nb - 1 && x >= edge(k, i + 1)) i++;
  h[i]++;
}

/* ---- histogram bins, a block at a time -------------------------------- */

/* Bin indices of v[0..m) into out[]: hist_add's arithmetic as the SIMD
 * kernels below do it, in doubles (exact: indices are below 2^31); nbins
 * for values outside [lo, hi] and NaN. Requires k->simd_bins. */
static void bins_scalar(const kctx *k, const double *v, size_t m, int32_t *out) {
  const double top = (double)k->nbins - 1;
  for (size_t j = 0; j < m; j++) {
    double x = v[j];
    bool in = x >= k->lo && x <= k->hi;
    double t = in ? (x - k->lo) * k->norm : 0.0;
    double i = (double)(int32_t)(t < top ? t : top);
    double e0 = i * k->step, e1 = (i + 1) * k->step;
    e0 += k->lo;
    e1 += k->lo;
    if (x < e0) i -= 1;
    else if (i != top && x >= e1) i += 1;
    out[j] = in ? (int32_t)i : (int32_t)k->nbins;
  }
}

#ifdef HAVE_X86
/* The same on 2 doubles: SSE2 (every x86-64). The products and sums are
 * separate instructions (no fused multiply-add), as in bins_scalar. */
static size_t bins_sse2(const kctx *k, const double *v, size_t m, int32_t *out) {
  const __m128d lo = _mm_set1_pd(k->lo), hi = _mm_set1_pd(k->hi);
  const __m128d norm = _mm_set1_pd(k->norm), step = _mm_set1_pd(k->step);
  const __m128d top = _mm_set1_pd((double)k->nbins - 1), one = _mm_set1_pd(1.0);
  const __m128d none = _mm_set1_pd((double)k->nbins);
  size_t j = 0;
  for (; j + 2 <= m; j += 2) {
    __m128d x = _mm_loadu_pd(v + j);
    __m128d in = _mm_and_pd(_mm_cmpge_pd(x, lo), _mm_cmple_pd(x, hi));
    __m128d t = _mm_and_pd(_mm_mul_pd(_mm_sub_pd(x, lo), norm), in);
    __m128d i = _mm_cvtepi32_pd(_mm_cvttpd_epi32(_mm_min_pd(t, top)));
    __m128d e0 = _mm_add_pd(_mm_mul_pd(i, step), lo);
    __m128d e1 = _mm_add_pd(_mm_mul_pd(_mm_add_pd(i, one), step), lo);
    __m128d dec = _mm_cmplt_pd(x, e0);
    __m128d inc = _mm_andnot_pd(dec, _mm_and_pd(_mm_cmpneq_pd(i, top), _mm_cmpge_pd(x, e1)));
    i = _mm_add_pd(_mm_sub_pd(i, _mm_and_pd(dec, one)), _mm_and_pd(inc, one));
    i = _mm_or_pd(_mm_and_pd(in, i), _mm_andnot_pd(in, none));
    _mm_storel_epi64((__m128i *)(void *)(out + j), _mm_cvttpd_epi32(i));
  }
  return j;
}

/* And on 4 doubles (AVX2 machines; chosen at run time). */
__attribute__((target("avx2"))) static size_t bins_avx2(const kctx *k, const double *v,
                                                         size_t m, int32_t *out) {
  const __m256d lo = _mm256_set1_pd(k->lo), hi = _mm256_set1_pd(k->hi);
  const __m256d norm = _mm256_set1_pd(k->norm), step = _mm256_set1_pd(k->step);
  const __m256d top = _mm256_set1_pd((double)k->nbins - 1), one = _mm256_set1_pd(1.0);
  const __m256d none = _mm256_set1_pd((double)k->nbins);
  size_t j = 0;
  for (; j + 4 <= m; j += 4) {
    __m256d x = _mm256_loadu_pd(v + j);
    __m256d in = _mm256_and_pd(_mm256_cmp_pd(x, lo, _CMP_GE_OQ), _mm256_cmp_pd(x, hi, _CMP_LE_OQ));
    __m256d t = _mm256_and_pd(_mm256_mul_pd(_mm256_sub_pd(x, lo), norm), in);
    __m256d i = _mm256_round_pd(_mm256_min_pd(t, top), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256d e0 = _mm256_add_pd(_mm256_mul_pd(i, step), lo);
    __m256d e1 = _mm256_add_pd(_mm256_mul_pd(_mm256_add_pd(i, one), step), lo);
    __m256d dec = _mm256_cmp_pd(x, e0, _CMP_LT_OQ);
    __m256d inc = _mm256_andnot_pd(dec, _mm256_and_pd(_mm256_cmp_pd(i, top, _CMP_NEQ_OQ),
                                                      _mm256_cmp_pd(x, e1, _CMP_GE_OQ)));
    i = _mm256_add_pd(_mm256_sub_pd(i, _mm256_and_pd(dec, one)), _mm256_and_pd(inc, one));
    i = _mm256_blendv_pd(none, i, in);
    _mm_storeu_si128((__m128i *)(void *)(out + j), _mm256_cvttpd_epi32(i));
  }
  return j;
}

static int simd_cpu(void) {
  static int known; /* 0 unknown, else 1 + level; the same for every thread */
  int v = __atomic_load_n(&known, __ATOMIC_RELAXED);
  if (!v) {
    __builtin_cpu_init();
    v = 1 + (__builtin_cpu_supports("avx2") ? SL__RSIMD_AVX2 : SL__RSIMD_SSE2);
    __atomic_store_n(&known, v, __ATOMIC_RELAXED);
  }
  return v - 1;
}
#endif

static int simd_cap = SL__RSIMD_AVX2;

void sl__reduce_simd_cap(int level) { __atomic_store_n(&simd_cap, level, __ATOMIC_RELAXED); }

static int simd_level(void) {
#ifdef HAVE_X86
  int cap = __atomic_load_n(&simd_cap, __ATOMIC_RELAXED), cpu = simd_cpu();
  return cpu < cap ? cpu : cap;
#else
  return SL__RSIMD_SCALAR;
#endif
}

/* Counts the m values of v into the current run's histogram. */
static void hist_block(const kctx *k, uint64_t *h, const double *v, size_t m) {
  if (!k->simd_bins) {
    for (size_t j = 0; j < m; j++) hist_add(k, h, v[j]);
    return;
  }
  int32_t b[BLK];
  size_t j = 0;
#ifdef HAVE_X86
  if (k->simd == SL__RSIMD_AVX2) j = bins_avx2(k, v, m, b);
  else if (k->simd == SL__RSIMD_SSE2) j = bins_sse2(k, v, m, b);
#endif
  if (j < m) bins_scalar(k, v + j, m - j, b + j);
  if (k->stride) { /* nbins + 1 counts per copy: the last one takes "outside" */
    uint64_t *c = k->sub;
    uint64_t *c1 = c + k->stride, *c2 = c1 + k->stride, *c3 = c2 + k->stride;
    for (j = 0; j + 4 <= m; j += 4) {
      c[b[j]]++;
      c1[b[j + 1]]++;
      c2[b[j + 2]]++;
      c3[b[j + 3]]++;
    }
    for (; j < m; j++) c[b[j]]++;
    return;
  }
  for (j = 0; j < m; j++)
    if ((uint32_t)b[j] < k->nbins) h[b[j]]++;
}

/* Neumaier's compensated addition of x into (s, c). */
static inline void fsum_add(double *s, double *c, double x) {
  double t = *s + x;
  if (fabs(*s) >= fabs(x)) *c += (*s - t) + x;
  else *c += (x - t) + *s;
  *s = t;
}

/* Chan's update of the cell's (n, mean, m2) with a block of m elements of
 * mean mb and m2 m2b. The caller adds m to n afterwards. */
static inline void chan_add(sl__rcell *c, uint64_t m, double mb, double m2b) {
  if (c->n == 0) {
    c->mean = mb;
    c->m2 = m2b;
    return;
  }
  double na = (double)c->n, nb = (double)m, nn = na + nb;
  double delta = mb - c->mean;
  c->mean += delta * (nb / nn);
  c->m2 += m2b + delta * delta * (na * nb / nn);
}

/* ---- one block per class --------------------------------------------- */

#ifdef HAVE_X86
/* The lanes of block_f on 4 doubles per instruction (AVX2 machines): the
 * sum in its 8 lanes exactly as the scalar loop adds them (element j+q into
 * lane q, j a multiple of 8), so the block sum is bit-identical; with ext,
 * the extremes too. Returns how many elements it took (a multiple of 8). */
__attribute__((target("avx2"))) static size_t lanes_avx2(const double *v, size_t m, bool ext,
                                                          double *l, double *mn, double *mx) {
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  __m256d n0 = _mm256_set1_pd(INFINITY), n1 = n0;
  __m256d x0 = _mm256_set1_pd(-INFINITY), x1 = x0;
  size_t j = 0;
  if (ext)
    for (; j + 8 <= m; j += 8) {
      __m256d a = _mm256_loadu_pd(v + j), b = _mm256_loadu_pd(v + j + 4);
      s0 = _mm256_add_pd(s0, a);
      s1 = _mm256_add_pd(s1, b);
      n0 = _mm256_min_pd(a, n0);
      n1 = _mm256_min_pd(b, n1);
      x0 = _mm256_max_pd(a, x0);
      x1 = _mm256_max_pd(b, x1);
    }
  else
    for (; j + 8 <= m; j += 8) {
      s0 = _mm256_add_pd(s0, _mm256_loadu_pd(v + j));
      s1 = _mm256_add_pd(s1, _mm256_loadu_pd(v + j + 4));
    }
  _mm256_storeu_pd(l, s0);
  _mm256_storeu_pd(l + 4, s1);
  _mm256_storeu_pd(mn, _mm256_min_pd(n0, n1));
  _mm256_storeu_pd(mx, _mm256_max_pd(x0, x1));
  return j;
}
#endif

static inline double min2(double a, double b) { return a < b ? a : b; }
static inline double max2(double a, double b) { return a > b ? a : b; }

/* Doubles: the sum in 8 lanes (numpy's pairwise leaves), the extremes in 4
 * (no lane ever holds NaN: a < b is false for it, so the lane keeps its
 * value). Which lane an extreme lands in does not matter: the block's
 * extreme is a value, and what the cell keeps is the first element equal
 * to it, so every kernel level gives the same cell. */
static void block_f(const kctx *k, sl__rcell *c, uint64_t *h, const double *v,
                    size_t m, uint64_t i0) {
  double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  double mn[4] = {INFINITY, INFINITY, INFINITY, INFINITY};
  double mx[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
  bool ext = k->need_min || k->need_max;
  size_t j = 0, je = 0; /* the sum's and the extremes' next element */
#ifdef HAVE_X86
  if (k->simd == SL__RSIMD_AVX2) j = je = lanes_avx2(v, m, ext, l, mn, mx);
#endif
  for (; j + 8 <= m; j += 8)
    for (int q = 0; q < 8; q++) l[q] += v[j + q];
  for (int q = 0; j < m; j++, q++) l[q] += v[j];
  double bs = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
  if (isnan(bs) && c->inan == SL__RNONE)
    for (j = 0; j < m; j++)
      if (isnan(v[j])) {
        c->inan = i0 + j;
        break;
      }
  if (k->need_sum) fsum_add(&c->s, &c->c, bs);
  if (k->need_var) {
    double mb = bs / (double)m, d[4] = {0, 0, 0, 0};
    for (j = 0; j + 4 <= m; j += 4)
      for (int q = 0; q < 4; q++) d[q] += (v[j + q] - mb) * (v[j + q] - mb);
    for (int q = 0; j < m; j++, q++) d[q] += (v[j] - mb) * (v[j] - mb);
    chan_add(c, m, mb, (d[0] + d[1]) + (d[2] + d[3]));
  }
  if (ext) {
    j = je;
#ifdef HAVE_X86
    /* minpd(a, b) is exactly a < b ? a : b, NaN included (compilers keep
     * the scalar loop below scalar for that reason). */
    if (k->simd != SL__RSIMD_SCALAR) {
      __m128d n01 = _mm_loadu_pd(mn), n23 = _mm_loadu_pd(mn + 2);
      __m128d x01 = _mm_loadu_pd(mx), x23 = _mm_loadu_pd(mx + 2);
      for (; j + 4 <= m; j += 4) {
        __m128d a = _mm_loadu_pd(v + j), b = _mm_loadu_pd(v + j + 2);
        n01 = _mm_min_pd(a, n01);
        n23 = _mm_min_pd(b, n23);
        x01 = _mm_max_pd(a, x01);
        x23 = _mm_max_pd(b, x23);
      }
      _mm_storeu_pd(mn, n01);
      _mm_storeu_pd(mn + 2, n23);
      _mm_storeu_pd(mx, x01);
      _mm_storeu_pd(mx + 2, x23);
    }
#endif
    for (; j + 4 <= m; j += 4)
      for (int q = 0; q < 4; q++) {
        mn[q] = min2(v[j + q], mn[q]);
        mx[q] = max2(v[j + q], mx[q]);
      }
    for (int q = 0; j < m; j++, q++) {
      mn[q] = min2(v[j], mn[q]);
      mx[q] = max2(v[j], mx[q]);
    }
    double bmn = min2(min2(mn[0], mn[1]), min2(mn[2], mn[3]));
    double bmx = max2(max2(mx[0], mx[1]), max2(mx[2], mx[3]));
    bool any = !(bmn == INFINITY && bmx == -INFINITY); /* a non-NaN value */
    if (any && (c->imin == SL__RNONE || bmn < c->min.f)) {
      for (j = 0; v[j] != bmn; j++) {
      }
      c->min.f = v[j];
      c->imin = i0 + j;
    }
    if (any && (c->imax == SL__RNONE || bmx > c->max.f)) {
      for (j = 0; v[j] != bmx; j++) {
      }
      c->max.f = v[j];
      c->imax = i0 + j;
    }
  }
  if (h) hist_block(k, h, v, m);
  c->n += m;
}

/* Integer blocks: exact 128-bit sums, extremes with their first index;
 * one body for int64 (field i) and uint64 (field u). */
#define DEFINE_BLOCK_INT(name, T, field)                                       \
  static void name(const kctx *k, sl__rcell *c, uint64_t *h, const T *v,       \
                   size_t m, uint64_t i0) {                                    \
    __int128 bs = 0;                                                           \
    T mn = v[0], mx = v[0];                                                    \
    size_t jmn = 0, jmx = 0;                                                   \
    for (size_t j = 0; j < m; j++) bs += v[j];                                 \
    if (k->need_min || k->need_max)                                            \
      for (size_t j = 1; j < m; j++) {                                         \
        if (v[j] < mn) mn = v[j], jmn = j;                                     \
        if (v[j] > mx) mx = v[j], jmx = j;                                     \
      }                                                                        \
    c->w += bs;                                                                \
    if (k->need_var) {                                                         \
      double mb = (double)bs / (double)m, d = 0;                               \
      for (size_t j = 0; j < m; j++) d += ((double)v[j] - mb) * ((double)v[j] - mb); \
      chan_add(c, m, mb, d);                                                   \
    }                                                                          \
    if (c->imin == SL__RNONE || mn < c->min.field) c->min.field = mn, c->imin = i0 + jmn; \
    if (c->imax == SL__RNONE || mx > c->max.field) c->max.field = mx, c->imax = i0 + jmx; \
    if (h) {                                                                   \
      double f[BLK];                                                           \
      for (size_t j = 0; j < m; j++) f[j] = (double)v[j];                      \
      hist_block(k, h, f, m);                                                  \
    }                                                                          \
    c->n += m;                                                                 \
  }

DEFINE_BLOCK_INT(block_i, int64_t, i)
DEFINE_BLOCK_INT(block_u, uint64_t, u)

/* ---- loading elements as class values ---------------------------------- */

#define LOAD(T, CAST)                                                          \
  for (size_t j = 0; j < m; j++) {                                             \
    T x;                                                                       \
    memcpy(&x, s + j * stride, sizeof x);                                      \
    dst[j] = (CAST)x;                                                          \
  }

static void load_f(double *dst, const char *s, sl_dtype t, size_t m, ptrdiff_t stride) {
  if (t == SL_DT_F32) {
    LOAD(float, double)
  } else {
    LOAD(double, double)
  }
}

static void load_i(int64_t *dst, const char *s, sl_dtype t, size_t m, ptrdiff_t stride) {
  switch (t) {
  case SL_DT_I8: LOAD(int8_t, int64_t) break;
  case SL_DT_I16: LOAD(int16_t, int64_t) break;
  case SL_DT_I32: LOAD(int32_t, int64_t) break;
  default: LOAD(int64_t, int64_t) break;
  }
}

static void load_u(uint64_t *dst, const char *s, sl_dtype t, size_t m, ptrdiff_t stride) {
  switch (t) {
  case SL_DT_BOOL:
    for (size_t j = 0; j < m; j++) dst[j] = s[j * stride] != 0;
    break;
  case SL_DT_U8: LOAD(uint8_t, uint64_t) break;
  case SL_DT_U16: LOAD(uint16_t, uint64_t) break;
  case SL_DT_U32: LOAD(uint32_t, uint64_t) break;
  default: LOAD(uint64_t, uint64_t) break;
  }
}

/* Folds the run of n elements at src (stride bytes apart), indices i0,
 * i0+1, ..., into cell c (and histogram h). */
static void fold_run(const kctx *kc, sl_dtype t, sl__rcell *c, uint64_t *h,
                     const char *src, size_t n, ptrdiff_t stride, uint64_t i0,
                     void *buf) {
  kctx run = *kc, *k = &run;
  size_t width = (size_t)k->nbins + 1;
  k->stride = 0;
  if (h && k->sub && n >= 8 * width) { /* long enough to pay for the copies */
    k->stride = (uint32_t)width;
    memset(k->sub, 0, SL__RSUB * width * sizeof *k->sub);
  }
  bool direct = stride == 8 && (t == SL_DT_F64 || t == SL_DT_I64 || t == SL_DT_U64) &&
                ((uintptr_t)src % 8) == 0;
  for (size_t b = 0; b < n; b += BLK) {
    size_t m = n - b < BLK ? n - b : BLK;
    const char *s = src + (ptrdiff_t)b * stride;
    switch (k->cls) {
    case SL__RC_F:
      if (!direct) load_f(buf, s, t, m, stride);
      block_f(k, c, h, direct ? (const double *)(const void *)s : buf, m, i0 + b);
      break;
    case SL__RC_I:
      if (!direct) load_i(buf, s, t, m, stride);
      block_i(k, c, h, direct ? (const int64_t *)(const void *)s : buf, m, i0 + b);
      break;
    case SL__RC_U:
      if (!direct) load_u(buf, s, t, m, stride);
      block_u(k, c, h, direct ? (const uint64_t *)(const void *)s : buf, m, i0 + b);
      break;
    }
  }
  if (k->stride)
    for (size_t q = 0; q < SL__RSUB; q++)
      for (size_t i = 0; i < k->nbins; i++) h[i] += k->sub[q * width + i];
}

/* ---- a chunk ----------------------------------------------------------- */

void sl__rchunk_box(const sl_array_desc *a, int axis, uint32_t *ndim,
                    uint64_t *origin, uint64_t *shape) {
  *ndim = 0;
  if (axis < 0) return;
  for (uint32_t d = 0; d < a->ndim; d++) {
    if ((int)d == axis) continue;
    origin[*ndim] = a->origin[d];
    shape[*ndim] = a->shape[d];
    (*ndim)++;
  }
}

void sl__rscratch_free(sl__rscratch *s) {
  free(s->buf);
  free(s->sub);
  memset(s, 0, sizeof *s);
}

/* Histograms wider than this count straight into the cell's histogram. */
#define SUB_MAX_BINS 65536

/* Advances the multi-index `idx` over axes [0, nd) of `shape` except
 * `skip`; @return false after the last one. */
static bool next_index(uint64_t *idx, const uint64_t *shape, uint32_t nd, int skip) {
  for (uint32_t d = nd; d-- > 0;) {
    if ((int)d == skip) continue;
    if (++idx[d] < shape[d]) return true;
    idx[d] = 0;
  }
  return false;
}

/* Whole-array fold: runs over the suffix of axes that is contiguous in
 * memory and in the flat index. */
static void fold_whole(const kctx *k, sl__rpart *p, const sl_array_desc *a,
                       const char *data, void *buf) {
  size_t es = sl_dtype_size(a->dtype);
  uint32_t nd = a->ndim;
  if (nd == 0) {
    fold_run(k, a->dtype, &p->cells[0], p->hist, data, 1, (ptrdiff_t)es, 0, buf);
    return;
  }
  /* s: first axis of the run; the run covers axes s..nd-1. */
  uint32_t s = nd - 1;
  int64_t want = (int64_t)es * (int64_t)a->shape[nd - 1];
  if (a->strides[nd - 1] == (int64_t)es)
    while (s > 0 && a->shape[s] == a->whole[s] && a->strides[s - 1] == want) {
      want *= (int64_t)a->shape[s - 1];
      s--;
    }
  uint64_t len = 1, wstride[SL_MAX_DIMS];
  for (uint32_t d = s; d < nd; d++) len *= a->shape[d];
  wstride[nd - 1] = 1;
  for (uint32_t d = nd - 1; d-- > 0;) wstride[d] = wstride[d + 1] * a->whole[d + 1];
  uint64_t idx[SL_MAX_DIMS] = {0};
  do {
    const char *src = data;
    uint64_t flat = 0;
    for (uint32_t d = 0; d < nd; d++) {
      src += (ptrdiff_t)idx[d] * a->strides[d];
      flat += (a->origin[d] + idx[d]) * wstride[d];
    }
    fold_run(k, a->dtype, &p->cells[0], p->hist, src, (size_t)len,
             (ptrdiff_t)a->strides[nd - 1], flat, buf);
  } while (s > 0 && next_index(idx, a->shape, s, -1));
}

/* Along `axis`: one run per cell of the chunk's box, in box order. */
static void fold_axis(const kctx *k, sl__rpart *p, const sl_array_desc *a,
                      const char *data, int axis, void *buf) {
  uint64_t idx[SL_MAX_DIMS] = {0};
  uint64_t cell = 0;
  do {
    const char *src = data;
    for (uint32_t d = 0; d < a->ndim; d++) src += (ptrdiff_t)idx[d] * a->strides[d];
    fold_run(k, a->dtype, &p->cells[cell], p->hist ? p->hist + cell * p->nbins : NULL,
             src, (size_t)a->shape[axis], (ptrdiff_t)a->strides[axis],
             a->origin[axis], buf);
    cell++;
  } while (next_index(idx, a->shape, a->ndim, axis));
}

int sl__rchunk_fold(sl__rpart *p, const sl_array_desc *a, const void *data,
                    int axis, sl__rscratch *scratch) {
  uint64_t n = 1;
  for (uint32_t d = 0; d < a->ndim; d++) n *= a->shape[d];
  if (n == 0) return 0;
  if (!scratch->buf && !(scratch->buf = malloc(BLK * 8))) return SL_ENOMEM;
  kctx k;
  kctx_init(&k, p);
  k.simd = simd_level();
  if (k.simd_bins) {
    size_t want = SL__RSUB * ((size_t)k.nbins + 1);
    if (k.nbins <= SUB_MAX_BINS && scratch->sub_cap < want) {
      free(scratch->sub);
      scratch->sub_cap = 0;
      if (!(scratch->sub = malloc(want * sizeof *scratch->sub))) return SL_ENOMEM;
      scratch->sub_cap = want;
    }
    if (k.nbins <= SUB_MAX_BINS) k.sub = scratch->sub;
  }
  if (axis < 0) fold_whole(&k, p, a, data, scratch->buf);
  else fold_axis(&k, p, a, data, axis, scratch->buf);
  p->elems += n;
  return 0;
}
