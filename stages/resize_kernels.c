/*
 * resize_kernels.c -- separable, antialiased image resampling.
 *
 * What it does: resamples an 8- or 16-bit image with 1..4 channels to any
 * size in two separable passes driven by precomputed contribution tables
 * (per output pixel: first source sample, count, normalised weights). The
 * filters and the coordinate convention are Pillow's, so results match
 * Image.resize to within rounding: output pixel i is centred on source
 * coordinate (i + 0.5) * scale, and when shrinking the kernel is widened by
 * the scale so every source pixel contributes (antialiasing).
 *
 * Pipeline of one image, streamed row by row:
 *   pre-shrink   optional integer box reduction of a large shrink (like
 *                libvips' shrink or Pillow's reducing_gap): each row the
 *                filter reads is the float mean of an fx x fy block, so
 *                the exact filter only has a small factor left to do. A
 *                short last block is weighed by its true width and centre,
 *                which keeps the geometry exact.
 *   first pass   horizontal (or vertical) filtering of source rows into a
 *                small ring of float rows, sized for that pass only:
 *                max_count rows (horizontal first) or max_overlap output
 *                accumulators (vertical first), never the whole image.
 *   second pass  the other axis, one output row at a time as soon as its
 *                window is complete, then clamp, round and un-premultiply
 *                into the destination.
 * The order is chosen by estimated cost (multiply-adds), so a one-axis
 * resize filters only that axis at full size. An axis whose size does not
 * change gets an identity table (one tap of 1.0), which is exact.
 *
 * Invariants:
 *  - Everything between load and store is float, colour premultiplied by
 *    alpha when the image has alpha (no dark fringes: a transparent pixel
 *    contributes nothing to its neighbours' colour).
 *  - Windows of a table never move backwards (first and first+count are
 *    non-decreasing): the rings rely on it.
 *  - Float rows read by the horizontal pass have SL__RS_ROW_PAD readable
 *    zero (or finite) floats after them: the pass reads whole vectors and
 *    the expanded weights are zero there.
 *  - The inner loops see constant channel and lane counts (the row kernels
 *    are instantiated per channel count), contiguous weights and restrict
 *    pointers, so gcc and clang vectorise them without intrinsics.
 *
 * Threads: sl__rs_resize splits the output rows into one chunk per worker
 * (when the image is worth it) and runs them with sl_parallel_for, which
 * uses only cores the run's budget has free. A chunk re-reads the few
 * source rows its first window shares with the previous chunk, writes
 * disjoint destination rows and owns its malloc'd scratch; tables and the
 * source are read-only. A chunk that cannot get scratch memory sets
 * job->failed (atomic) and the resize returns SL_ENOMEM; chunks also stop
 * early (SL_ECANCELED) when the run is being cancelled.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "resize_internal.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

#if defined(__GNUC__)
#define RS_INLINE static inline __attribute__((always_inline))
/* Row loops kept out of line: gcc -O2 vectorises them from the `restrict`
 * of their parameters, and loses that when it inlines them. */
#define RS_ROW_FN static __attribute__((noinline))
#else
#define RS_INLINE static inline
#define RS_ROW_FN static
#endif

/* Multiply-adds per parallel chunk: below this, waking threads costs more
 * than it saves, so small images run on the calling thread only. */
#define GRAIN_WORK 400000.0

/* for (i = 0; i < n; i++) BODY, split so that the first part's trip count
 * is a multiple of 16: gcc's -O2 vectoriser (cost model "very cheap")
 * only vectorises loops that need no scalar epilogue, so this keeps the
 * simple row loops vectorised at -O2 as well as -O3. */
#define RS_ROW_LOOP(i, n, ...)                                                 \
  do {                                                                         \
    const size_t rs_n_ = (n), rs_m_ = rs_n_ & ~(size_t)15;                     \
    size_t i = 0;                                                              \
    for (; i < rs_m_; i++) { __VA_ARGS__; }                                    \
    for (; i < rs_n_; i++) { __VA_ARGS__; }                                    \
  } while (0)

/* ======================================================================
 * Filters
 * ====================================================================== */

double sl__rs_filter_support(sl__rs_filter f) {
  switch (f) {
  case SL__RS_NEAREST: return 0.0;
  case SL__RS_BOX: return 0.5;
  case SL__RS_BILINEAR: return 1.0;
  case SL__RS_BICUBIC: return 2.0;
  case SL__RS_LANCZOS3: return 3.0;
  }
  return 0.0;
}

static double sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= M_PI;
  return sin(x) / x;
}

double sl__rs_filter_eval(sl__rs_filter f, double x) {
  const double a = -0.5; /* bicubic sharpness, Pillow's (and Keys') value */
  switch (f) {
  case SL__RS_NEAREST:
  case SL__RS_BOX:
    return x > -0.5 && x <= 0.5 ? 1.0 : 0.0;
  case SL__RS_BILINEAR:
    x = fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
  case SL__RS_BICUBIC:
    x = fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
  case SL__RS_LANCZOS3:
    return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3.0) : 0.0;
  }
  return 0.0;
}

/* ======================================================================
 * Contribution tables
 * ====================================================================== */

void sl__rs_table_free(sl__rs_table *t) {
  if (!t) return;
  free(t->first);
  free(t->count);
  free(t->w);
  free(t->xlen);
  free(t->xw);
  memset(t, 0, sizeof *t);
}

/* One tap of weight 1 at source sample `at`. */
static void set_single(sl__rs_table *t, uint32_t i, uint32_t at) {
  t->first[i] = at;
  t->count[i] = 1;
  t->w[(size_t)i * t->stride] = 1.0f;
}

/* Pillow's rule for output i: source samples whose rounded window
 * [center - support, center + support) overlaps, weighed by the kernel at
 * their centre's distance, scaled by 1/fscale, then normalised. Zero
 * weights at the ends are kept: trimming them would let windows move
 * backwards (bicubic is zero at distance 1), and the passes rely on
 * windows whose both ends never decrease.
 * A partial last sample (`last`, the width it stands for, < 1 after a
 * pre-shrink whose last block is short) is weighed at its true centre and
 * by its width, so the pre-shrink keeps the geometry exact at that edge
 * too. `tmp` holds t->stride doubles. */
static void fill_weights(sl__rs_table *t, uint32_t i, sl__rs_filter f,
                         double center, double support, double fscale,
                         double last, double *tmp) {
  const uint32_t n = t->in_size;
  double lo = center - support + 0.5, hi = center + support + 0.5;
  uint32_t xmin = lo <= 0.0 ? 0 : (uint32_t)lo;
  uint32_t xmax = hi >= (double)n ? n : (uint32_t)hi;
  if (last < 1.0 && center + support > n - 1 + last / 2) xmax = n;
  if (xmin >= n) xmin = n - 1; /* cannot happen: center < in_extent */
  if (xmax <= xmin) xmax = xmin + 1;
  if (xmax > xmin + t->stride) xmax = xmin + t->stride;
  double sum = 0.0;
  for (uint32_t x = xmin; x < xmax; x++) {
    bool part = x == n - 1 && last < 1.0;
    double at = part ? x + last / 2 : x + 0.5;
    tmp[x - xmin] = sl__rs_filter_eval(f, (at - center) / fscale) * (part ? last : 1.0);
    sum += tmp[x - xmin];
  }
  float *w = t->w + (size_t)i * t->stride;
  for (uint32_t k = 0; k < xmax - xmin; k++) /* sum 0 cannot happen either */
    w[k] = (float)(sum != 0.0 ? tmp[k] / sum : 1.0 / (xmax - xmin));
  t->first[i] = xmin;
  t->count[i] = xmax - xmin;
}

/* Most windows holding one source sample: the largest number of output
 * rows the vertical-first pass accumulates at once. Windows only move
 * forward, so the windows holding the start of window j are those from the
 * first one not yet ended there, up to j. */
static uint32_t max_overlap(const sl__rs_table *t) {
  uint32_t best = 1, lo = 0;
  for (uint32_t j = 0; j < t->out_size; j++) {
    while (t->first[lo] + t->count[lo] <= t->first[j]) lo++;
    if (j - lo + 1 > best) best = j - lo + 1;
  }
  return best;
}

/* Allocates the arrays of a table with `stride` weights per output. */
static int table_alloc(sl__rs_table *t, uint32_t stride) {
  size_t n = t->out_size;
  t->stride = stride;
  t->first = malloc(n * sizeof *t->first);
  t->count = malloc(n * sizeof *t->count);
  t->w = calloc(n * stride, sizeof *t->w);
  if (!t->first || !t->count || !t->w) return SL_ENOMEM;
  return 0;
}

int sl__rs_table_init(sl__rs_table *t, sl__rs_filter f, uint32_t in_size,
                      double in_extent, uint32_t out_size) {
  memset(t, 0, sizeof *t);
  t->in_size = in_size;
  t->out_size = out_size;
  t->identity = in_size == out_size && in_extent == (double)in_size;
  double scale = in_extent / out_size;
  double fscale = scale < 1.0 ? 1.0 : scale;
  double support = sl__rs_filter_support(f) * fscale;
  bool single = f == SL__RS_NEAREST || t->identity;
  /* +2: Pillow's 2*ceil(support)+1, and room for a partial last sample */
  uint32_t stride = single ? 1 : (uint32_t)ceil(support) * 2 + 2;
  double last = in_extent - (in_size - 1);
  last = last > 0.0 && last < 1.0 ? last : 1.0;
  double *tmp = single ? NULL : malloc(stride * sizeof *tmp);
  if (table_alloc(t, stride) < 0 || (!single && !tmp)) {
    free(tmp);
    sl__rs_table_free(t);
    return SL_ENOMEM;
  }
  double step = scale * 0.5; /* nearest: Pillow steps by adding the scale */
  for (uint32_t i = 0; i < out_size; i++, step += scale) {
    double center = (i + 0.5) * scale;
    if (t->identity) {
      set_single(t, i, i);
    } else if (f == SL__RS_NEAREST) {
      /* floor of the centre, accumulated exactly as Pillow's affine
       * nearest scaler does, so exact-integer centres round the same way */
      uint32_t c = (uint32_t)step;
      set_single(t, i, c < in_size ? c : in_size - 1);
    } else {
      fill_weights(t, i, f, center, support, fscale, last, tmp);
    }
    if (t->count[i] > t->max_count) t->max_count = t->count[i];
  }
  free(tmp);
  t->max_overlap = max_overlap(t);
  return 0;
}

/* Vector lanes of the horizontal kernel for `channels`: a multiple of the
 * channel count, so lane l always accumulates channel l % channels. */
static unsigned lanes_for(unsigned channels) { return channels == 3 ? 12 : 8; }

int sl__rs_table_expand(sl__rs_table *t, unsigned channels) {
  unsigned lanes = lanes_for(channels);
  size_t xs = ((size_t)t->max_count * channels + lanes - 1) / lanes * lanes;
  free(t->xw);
  free(t->xlen);
  t->xw = calloc((size_t)t->out_size * xs, sizeof *t->xw);
  t->xlen = malloc((size_t)t->out_size * sizeof *t->xlen);
  if (!t->xw || !t->xlen) {
    free(t->xw), free(t->xlen);
    t->xw = NULL, t->xlen = NULL;
    return SL_ENOMEM;
  }
  t->channels = channels;
  t->xstride = (uint32_t)xs;
  for (uint32_t i = 0; i < t->out_size; i++) {
    const float *w = t->w + (size_t)i * t->stride;
    float *xw = t->xw + (size_t)i * xs;
    for (uint32_t k = 0; k < t->count[i]; k++)
      for (unsigned c = 0; c < channels; c++) xw[k * channels + c] = w[k];
    size_t n = (size_t)t->count[i] * channels;
    t->xlen[i] = (uint32_t)((n + lanes - 1) / lanes * lanes);
  }
  return 0;
}

/* ======================================================================
 * Horizontal pass
 * ====================================================================== */

#if defined(__GNUC__)
/* Four floats in one SIMD register: the GCC/clang vector extension, which
 * lowers to SSE, NEON, ... (or scalar code) without intrinsics. Used where
 * the autovectoriser would otherwise keep accumulators in memory (gcc -O2
 * does, for an array of partial sums). */
typedef float rs_v4 __attribute__((vector_size(16)));
#define RS_HAVE_V4 1
static inline rs_v4 v4_load(const float *p) {
  rs_v4 v;
  memcpy(&v, p, sizeof v); /* unaligned load */
  return v;
}
#endif

#ifdef RS_HAVE_V4
/* Writes the C channel sums held in the lanes of a0..a2 (lane l of the
 * 4*k-th vector = partial sum of channel (4k + l) % C). Element access,
 * not a copy to memory, keeps the accumulators in registers. */
RS_INLINE void fold_v4(rs_v4 a0, rs_v4 a1, rs_v4 a2, float *restrict out,
                       const unsigned C) {
  rs_v4 v = a0 + a1;
  switch (C) {
  case 1: out[0] = (v[0] + v[1]) + (v[2] + v[3]); break;
  case 2: out[0] = v[0] + v[2], out[1] = v[1] + v[3]; break;
  case 3: /* 12 lanes: (c0 c1 c2 c0) (c1 c2 c0 c1) (c2 c0 c1 c2) */
    out[0] = (a0[0] + a0[3]) + (a1[2] + a2[1]);
    out[1] = (a0[1] + a1[0]) + (a1[3] + a2[2]);
    out[2] = (a0[2] + a1[1]) + (a2[0] + a2[3]);
    break;
  default: memcpy(out, &v, sizeof v); break;
  }
}
#endif

/* One row, C channels, L lanes (both constant after inlining). For each
 * output pixel the weights and the source run side by side as contiguous
 * floats, so the inner loop is L independent multiply-adds: two or three
 * SIMD registers of accumulators, no shuffles. Lane l holds partial sums of
 * channel l % C, folded at the end. */
RS_INLINE void hpass_c(const sl__rs_table *t, const float *restrict src,
                       float *restrict dst, const unsigned C, const unsigned L) {
  const size_t xs = t->xstride;
  for (uint32_t i = 0; i < t->out_size; i++) {
    const float *restrict w = t->xw + i * xs;
    const float *restrict s = src + (size_t)t->first[i] * C;
    const size_t n = t->xlen[i];
#ifdef RS_HAVE_V4
    rs_v4 a0 = {0.0f, 0.0f, 0.0f, 0.0f}, a1 = a0, a2 = a0;
    for (size_t j = 0; j < n; j += L) {
      a0 += v4_load(w + j) * v4_load(s + j);
      a1 += v4_load(w + j + 4) * v4_load(s + j + 4);
      if (L == 12) a2 += v4_load(w + j + 8) * v4_load(s + j + 8);
    }
    fold_v4(a0, a1, a2, dst + (size_t)i * C, C);
#else
    float acc[12] = {0.0f};
    for (size_t j = 0; j < n; j += L)
      for (unsigned l = 0; l < L; l++) acc[l] += w[j + l] * s[j + l];
    for (unsigned c = 0; c < C; c++) {
      float v = 0.0f;
      for (unsigned l = c; l < L; l += C) v += acc[l];
      dst[(size_t)i * C + c] = v;
    }
#endif
  }
}

static void hpass_1(const sl__rs_table *t, const float *s, float *d) { hpass_c(t, s, d, 1, 8); }
static void hpass_2(const sl__rs_table *t, const float *s, float *d) { hpass_c(t, s, d, 2, 8); }
static void hpass_3(const sl__rs_table *t, const float *s, float *d) { hpass_c(t, s, d, 3, 12); }
static void hpass_4(const sl__rs_table *t, const float *s, float *d) { hpass_c(t, s, d, 4, 8); }

void sl__rs_hpass_row(const sl__rs_table *t, const float *src, float *dst) {
  switch (t->channels) {
  case 1: hpass_1(t, src, dst); break;
  case 2: hpass_2(t, src, dst); break;
  case 3: hpass_3(t, src, dst); break;
  default: hpass_4(t, src, dst); break;
  }
}

/* ======================================================================
 * Vertical pass
 * ====================================================================== */

/* dst[x] += w * row[x]: the scatter step of the vertical-first order. */
RS_ROW_FN void axpy(size_t n, float w, const float *restrict row,
                 float *restrict dst) {
  RS_ROW_LOOP(x, n, dst[x] += w * row[x]);
}

/* d = w0 * r0 (+ w1 * r1) (+ d): the sweeps of the vertical pass. Each is
 * its own function because gcc honours `restrict` on parameters, which
 * lets it vectorise without runtime alias checks (-O2 allows none). */
RS_ROW_FN void row_set1(size_t n, float w0, const float *restrict r0,
                     float *restrict d) {
  RS_ROW_LOOP(x, n, d[x] = w0 * r0[x]);
}
RS_ROW_FN void row_set2(size_t n, float w0, const float *restrict r0, float w1,
                     const float *restrict r1, float *restrict d) {
  RS_ROW_LOOP(x, n, d[x] = w0 * r0[x] + w1 * r1[x]);
}
RS_ROW_FN void row_add2(size_t n, float w0, const float *restrict r0, float w1,
                     const float *restrict r1, float *restrict d) {
  RS_ROW_LOOP(x, n, d[x] += w0 * r0[x] + w1 * r1[x]);
}

/* Two taps per sweep halve the loads and stores of dst. */
void sl__rs_vpass_row(const float *w, uint32_t count, const float *const *rows,
                      size_t n, float *dst) {
  uint32_t k;
  if (count & 1) {
    row_set1(n, w[0], rows[0], dst);
    k = 1;
  } else {
    row_set2(n, w[0], rows[0], w[1], rows[1], dst);
    k = 2;
  }
  for (; k < count; k += 2) row_add2(n, w[k], rows[k], w[k + 1], rows[k + 1], dst);
}

/* ======================================================================
 * Load and store
 * ====================================================================== */

/* Pixels of C channels whose last is alpha: colour *= alpha / maxv. */
#define DEFINE_LOAD_PREMUL(NAME, T, C, MAXV)                                   \
  static void NAME(const T *restrict s, uint32_t width, float *restrict d) {  \
    const float inv = 1.0f / (MAXV);                                           \
    for (size_t p = 0; p < width; p++) {                                       \
      const float a = s[p * C + C - 1];                                        \
      const float k = a * inv;                                                 \
      for (unsigned c = 0; c < C - 1; c++) d[p * C + c] = s[p * C + c] * k;    \
      d[p * C + C - 1] = a;                                                    \
    }                                                                          \
  }
DEFINE_LOAD_PREMUL(load_premul2_u8, uint8_t, 2, 255.0f)
DEFINE_LOAD_PREMUL(load_premul4_u8, uint8_t, 4, 255.0f)
DEFINE_LOAD_PREMUL(load_premul2_u16, uint16_t, 2, 65535.0f)
DEFINE_LOAD_PREMUL(load_premul4_u16, uint16_t, 4, 65535.0f)

RS_ROW_FN void load_u8(const uint8_t *restrict s, size_t n, float *restrict d) {
  RS_ROW_LOOP(i, n, d[i] = s[i]);
}
RS_ROW_FN void load_u16(const uint16_t *restrict s, size_t n, float *restrict d) {
  RS_ROW_LOOP(i, n, d[i] = s[i]);
}

void sl__rs_load_row(const void *src, uint32_t width, unsigned channels,
                     unsigned depth, bool premultiply, float *dst) {
  bool pm = premultiply && (channels == 2 || channels == 4);
  if (depth == 8) {
    const uint8_t *s = src;
    if (!pm) load_u8(s, (size_t)width * channels, dst);
    else if (channels == 2) load_premul2_u8(s, width, dst);
    else load_premul4_u8(s, width, dst);
  } else {
    const uint16_t *s = src;
    if (!pm) load_u16(s, (size_t)width * channels, dst);
    else if (channels == 2) load_premul2_u16(s, width, dst);
    else load_premul4_u16(s, width, dst);
  }
}

static inline float clampf(float v, float hi) {
  v = v > 0.0f ? v : 0.0f;
  return v < hi ? v : hi;
}

/* Rounds to nearest, then clamps in integers: that form vectorises (a
 * float clamp written with comparisons does not, in gcc). The conversion
 * is in range: filtered values stay within twice the sample range (the
 * weights of a row sum to 1 and their magnitudes to less than 2). Negative
 * values truncate towards zero and clamp to 0 either way. */
#define DEFINE_STORE_PLAIN(NAME, T, MAXV)                                      \
  RS_ROW_FN void NAME(const float *restrict s, size_t n, T *restrict d) {     \
    RS_ROW_LOOP(i, n, int32_t v = (int32_t)(s[i] + 0.5f); v = v < 0 ? 0 : v;  \
                d[i] = (T)(v > (MAXV) ? (MAXV) : v));                          \
  }
DEFINE_STORE_PLAIN(store_u8, uint8_t, 255)
DEFINE_STORE_PLAIN(store_u16, uint16_t, 65535)

/* Divides colour by alpha; an alpha that rounds to 0 gives colour 0. The
 * float alpha (not the rounded one) keeps the ratio exact under overshoot. */
#define DEFINE_STORE_UNPREMUL(NAME, T, C, MAXV)                                \
  static void NAME(const float *restrict s, uint32_t width, T *restrict d) {  \
    for (size_t p = 0; p < width; p++) {                                       \
      const float a = s[p * C + C - 1];                                        \
      const T ai = (T)(clampf(a, MAXV) + 0.5f);                                \
      const float k = ai ? (MAXV) / a : 0.0f;                                  \
      for (unsigned c = 0; c < C - 1; c++)                                     \
        d[p * C + c] = (T)(clampf(s[p * C + c] * k, MAXV) + 0.5f);             \
      d[p * C + C - 1] = ai;                                                   \
    }                                                                          \
  }
DEFINE_STORE_UNPREMUL(store_unpremul2_u8, uint8_t, 2, 255.0f)
DEFINE_STORE_UNPREMUL(store_unpremul4_u8, uint8_t, 4, 255.0f)
DEFINE_STORE_UNPREMUL(store_unpremul2_u16, uint16_t, 2, 65535.0f)
DEFINE_STORE_UNPREMUL(store_unpremul4_u16, uint16_t, 4, 65535.0f)

void sl__rs_store_row(const float *src, uint32_t width, unsigned channels,
                      unsigned depth, bool premultiplied, void *dst) {
  bool pm = premultiplied && (channels == 2 || channels == 4);
  if (depth == 8) {
    uint8_t *d = dst;
    if (!pm) store_u8(src, (size_t)width * channels, d);
    else if (channels == 2) store_unpremul2_u8(src, width, d);
    else store_unpremul4_u8(src, width, d);
  } else {
    uint16_t *d = dst;
    if (!pm) store_u16(src, (size_t)width * channels, d);
    else if (channels == 2) store_unpremul2_u16(src, width, d);
    else store_unpremul4_u16(src, width, d);
  }
}

/* ======================================================================
 * Whole images: the job, row readers (with the pre-shrink), passes
 * ====================================================================== */

/* How a pre-shrink sums a block of source rows. */
typedef enum vsum_kind { VSUM_U8, VSUM_PREMUL_U8, VSUM_FLOAT } vsum_kind;

/* One image's work, shared read-only by the chunks of a pass (except
 * `failed`; each chunk writes its own destination rows). */
typedef struct rs_job {
  const unsigned char *data; /* source row 0 */
  size_t stride;             /* bytes */
  uint32_t width, height;
  unsigned channels, depth;
  bool premultiply;   /* colour * alpha while filtering, divided back at store */
  uint32_t fx, fy;    /* pre-shrink block, 1x1 = none */
  uint32_t rw, rh;    /* source size the tables see (after the pre-shrink) */
  vsum_kind vkind;
  const sl__rs_image *dst;
  const sl__rs_table *tx, *ty;
  sl_worker *worker;  /* for cancellation; may be NULL */
  atomic_int failed;  /* 0, or why a chunk gave up: SL_ENOMEM, SL_ECANCELED */
} rs_job;

/* Records why a chunk gives up (the first reason stays). */
static void job_fail(rs_job *job, int err) {
  int expected = 0;
  atomic_compare_exchange_strong(&job->failed, &expected, err);
}

/* True when the chunk should stop: an error elsewhere, or the run is being
 * cancelled (looked at every 16 rows; a row is at most a few ms). */
static bool job_stopped(rs_job *job, size_t row) {
  if (row % 16 == 0 && job->worker && sl_worker_canceled(job->worker))
    job_fail(job, SL_ECANCELED);
  return atomic_load_explicit(&job->failed, memory_order_relaxed) != 0;
}

static size_t src_floats(const rs_job *job) {
  return (size_t)job->width * job->channels;
}

/* n zeroed floats plus the row pad; NULL (and job->failed set) when out of
 * memory. */
static float *scratch_alloc(rs_job *job, size_t n) {
  float *p = calloc(n + SL__RS_ROW_PAD, sizeof *p);
  if (!p) job_fail(job, SL_ENOMEM);
  return p;
}

static unsigned char *dst_row(const rs_job *job, uint32_t y) {
  return (unsigned char *)job->dst->data + (size_t)y * job->dst->d.stride;
}

/* --- pre-shrink: reduced row Y is the mean of an fx x fy block of source
 * pixels (fewer in the last, partial blocks), as Pillow's reduce() does,
 * but kept in float. Rows are summed first (the contiguous, cheap
 * direction), then blocks of fx pixels across. */

/* Sums `rows` 8-bit rows into 16-bit lanes (exact for rows <= 257), then
 * widens to float: integer adds are many lanes per instruction. */
RS_ROW_FN void vsum_u8(const unsigned char *p, size_t stride, uint32_t rows,
                    size_t n, uint16_t *restrict acc, float *restrict out) {
  RS_ROW_LOOP(i, n, acc[i] = p[i]);
  for (uint32_t r = 1; r < rows; r++) {
    const uint8_t *restrict s = p + r * stride;
    RS_ROW_LOOP(i, n, acc[i] = (uint16_t)(acc[i] + s[i]));
  }
  RS_ROW_LOOP(i, n, out[i] = acc[i]);
}

/* Sums `rows` 8-bit rows of C channels (last = alpha) premultiplied, in
 * 32-bit integers (exact for rows <= 65536), then converts to float in
 * sample units: colour * alpha / 255. */
RS_INLINE void vsum_premul_u8_c(const unsigned char *p, size_t stride, uint32_t rows,
                                uint32_t width, uint32_t *restrict acc,
                                float *restrict out, const unsigned C) {
  memset(acc, 0, (size_t)width * C * sizeof *acc);
  for (uint32_t r = 0; r < rows; r++) {
    const uint8_t *restrict s = p + r * stride;
    for (size_t x = 0; x < width; x++) {
      const uint16_t a = s[x * C + C - 1]; /* 255 * 255 fits 16 bits */
      for (unsigned c = 0; c < C - 1; c++)
        acc[x * C + c] += (uint16_t)(s[x * C + c] * a);
      acc[x * C + C - 1] += a;
    }
  }
  for (size_t x = 0; x < width; x++) {
    for (unsigned c = 0; c < C - 1; c++) out[x * C + c] = (float)acc[x * C + c] * (1.0f / 255.0f);
    out[x * C + C - 1] = (float)acc[x * C + C - 1];
  }
}

RS_ROW_FN void row_add(size_t n, const float *restrict t, float *restrict acc) {
  RS_ROW_LOOP(i, n, acc[i] += t[i]);
}

/* Sums rows y0..y1-1 of any source into acc as premultiplied floats. */
static void vsum_float(const rs_job *job, uint32_t y0, uint32_t y1,
                       float *restrict acc, float *tmp) {
  size_t n = src_floats(job);
  sl__rs_load_row(job->data + (size_t)y0 * job->stride, job->width, job->channels,
                  job->depth, job->premultiply, acc);
  for (uint32_t y = y0 + 1; y < y1; y++) {
    sl__rs_load_row(job->data + (size_t)y * job->stride, job->width, job->channels,
                    job->depth, job->premultiply, tmp);
    row_add(n, tmp, acc);
  }
}

static vsum_kind vsum_kind_for(const rs_job *job) {
  if (job->depth != 8) return VSUM_FLOAT;
  if (!job->premultiply) return job->fy <= 257 ? VSUM_U8 : VSUM_FLOAT;
  return job->fy <= 65536 ? VSUM_PREMUL_U8 : VSUM_FLOAT;
}

/* Means of blocks of fx pixels (C channels, constant after inlining) of a
 * row of column sums over `rows` rows. Named partial sums (not an array)
 * stay in registers at -O2 too. */
RS_INLINE void hmean_c(const float *restrict acc, uint32_t width, uint32_t fx,
                       uint32_t rows, float *restrict out, const unsigned C) {
  for (uint32_t x0 = 0, X = 0; x0 < width; x0 += fx, X++) {
    uint32_t x1 = x0 + fx < width ? x0 + fx : width;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    for (const float *a = acc + (size_t)x0 * C, *end = acc + (size_t)x1 * C; a < end; a += C) {
      s0 += a[0];
      if (C > 1) s1 += a[1];
      if (C > 2) s2 += a[2];
      if (C > 3) s3 += a[3];
    }
    const float inv = 1.0f / (float)((x1 - x0) * rows);
    float *o = out + (size_t)X * C;
    o[0] = s0 * inv;
    if (C > 1) o[1] = s1 * inv;
    if (C > 2) o[2] = s2 * inv;
    if (C > 3) o[3] = s3 * inv;
  }
}

static void hmean(const float *acc, uint32_t width, unsigned C, uint32_t fx,
                  uint32_t rows, float *out) {
  switch (C) {
  case 1: hmean_c(acc, width, fx, rows, out, 1); break;
  case 2: hmean_c(acc, width, fx, rows, out, 2); break;
  case 3: hmean_c(acc, width, fx, rows, out, 3); break;
  default: hmean_c(acc, width, fx, rows, out, 4); break;
  }
}

/* --- row reader: source row y (after the pre-shrink, if any) as
 * premultiplied floats, computed on demand into a chunk's own scratch. */
typedef struct rs_reader {
  rs_job *job;
  float *row;       /* rw * channels floats + pad */
  float *acc, *tmp; /* pre-shrink only: a raw row each */
  void *ints;       /* pre-shrink only: integer column sums */
} rs_reader;

/* @return false when out of memory (job->failed is set); free it anyway. */
static bool reader_init(rs_reader *r, rs_job *job) {
  memset(r, 0, sizeof *r);
  r->job = job;
  r->row = scratch_alloc(job, (size_t)job->rw * job->channels);
  if (job->fx == 1 && job->fy == 1) return r->row != NULL;
  size_t n = src_floats(job);
  r->acc = scratch_alloc(job, n);
  r->tmp = scratch_alloc(job, n);
  r->ints = malloc(n * sizeof(uint32_t));
  if (!r->ints) job_fail(job, SL_ENOMEM);
  return r->row && r->acc && r->tmp && r->ints;
}

static void reader_free(rs_reader *r) {
  free(r->row), free(r->acc), free(r->tmp), free(r->ints);
}

static const float *reader_row(rs_reader *r, uint32_t y) {
  const rs_job *job = r->job;
  const unsigned C = job->channels;
  if (job->fx == 1 && job->fy == 1) {
    sl__rs_load_row(job->data + (size_t)y * job->stride, job->width, C,
                    job->depth, job->premultiply, r->row);
    return r->row;
  }
  uint32_t y0 = y * job->fy;
  uint32_t y1 = y0 + job->fy < job->height ? y0 + job->fy : job->height;
  const unsigned char *p = job->data + (size_t)y0 * job->stride;
  if (job->vkind == VSUM_U8)
    vsum_u8(p, job->stride, y1 - y0, src_floats(job), r->ints, r->acc);
  else if (job->vkind == VSUM_FLOAT)
    vsum_float(job, y0, y1, r->acc, r->tmp);
  else if (C == 2)
    vsum_premul_u8_c(p, job->stride, y1 - y0, job->width, r->ints, r->acc, 2);
  else
    vsum_premul_u8_c(p, job->stride, y1 - y0, job->width, r->ints, r->acc, 4);
  hmean(r->acc, job->width, C, job->fx, y1 - y0, r->row);
  return r->row;
}

/* --- horizontal first, streaming: output rows [b, e). Source rows are
 * filtered horizontally into a ring of max_count rows as the vertical
 * windows advance, so each source row is read once per chunk and the ring
 * stays in cache. A row is overwritten only after every window holding it
 * has been used (windows hold at most max_count rows and only move
 * forward). */
typedef struct hfirst_scratch {
  rs_reader rd;
  float *ring, *out;
  const float **rows;
} hfirst_scratch;

static void hfirst_rows(void *arg, size_t b, size_t e) {
  rs_job *job = arg;
  if (b >= e) return;
  const sl__rs_table *tx = job->tx, *ty = job->ty;
  const sl_image_desc *d = &job->dst->d;
  const size_t n = (size_t)d->width * d->channels, R = ty->max_count;
  hfirst_scratch s;
  bool ok = reader_init(&s.rd, job);
  s.ring = scratch_alloc(job, R * n);
  s.out = scratch_alloc(job, n);
  s.rows = malloc(R * sizeof *s.rows);
  if (!s.rows) job_fail(job, SL_ENOMEM);
  uint32_t next = ty->first[b];
  for (size_t j = b; ok && s.ring && s.out && s.rows && j < e && !job_stopped(job, j); j++) {
    uint32_t first = ty->first[j], end = first + ty->count[j];
    if (next < first) next = first; /* rows no window of this chunk needs */
    for (; next < end; next++)
      sl__rs_hpass_row(tx, reader_row(&s.rd, next), s.ring + (next % R) * n);
    for (uint32_t y = first; y < end; y++) s.rows[y - first] = s.ring + (y % R) * n;
    sl__rs_vpass_row(ty->w + j * ty->stride, ty->count[j], s.rows, n, s.out);
    sl__rs_store_row(s.out, d->width, d->channels, d->depth, job->premultiply,
                     dst_row(job, (uint32_t)j));
  }
  reader_free(&s.rd);
  free(s.ring), free(s.out), free(s.rows);
}

/* --- vertical first, streaming: output rows [b, e). Each source row is
 * read once per chunk and added into the accumulators of the output rows
 * whose windows hold it (at most max_overlap at a time, kept in a ring);
 * an output row is filtered horizontally and stored as soon as its window
 * has passed. */

/* Filters accumulator `acc` horizontally into output row j. */
static void vfirst_emit(const rs_job *job, const float *acc, float *out, size_t j) {
  const sl_image_desc *d = &job->dst->d;
  sl__rs_hpass_row(job->tx, acc, out);
  sl__rs_store_row(out, d->width, d->channels, d->depth, job->premultiply,
                   dst_row(job, (uint32_t)j));
}

static void vfirst_rows(void *arg, size_t b, size_t e) {
  rs_job *job = arg;
  if (b >= e) return;
  const sl__rs_table *ty = job->ty;
  const size_t n = (size_t)job->rw * job->channels, A = ty->max_overlap;
  rs_reader rd;
  bool ok = reader_init(&rd, job);
  /* accumulators are read by the horizontal pass: each keeps the row pad */
  const size_t slot = n + SL__RS_ROW_PAD;
  float *acc = scratch_alloc(job, A * slot);
  float *out = scratch_alloc(job, (size_t)job->dst->d.width * job->channels);
  size_t lo = b, hi = b; /* accumulating output rows [lo, hi) */
  uint32_t y1 = ty->first[e - 1] + ty->count[e - 1];
  for (uint32_t y = ty->first[b]; ok && acc && out && y < y1 && !job_stopped(job, y); y++) {
    const float *row = reader_row(&rd, y);
    for (; hi < e && ty->first[hi] <= y; hi++)
      memset(acc + (hi % A) * slot, 0, n * sizeof *acc);
    for (size_t j = lo; j < hi; j++) {
      uint32_t k = y - ty->first[j];
      if (k < ty->count[j]) axpy(n, ty->w[j * ty->stride + k], row, acc + (j % A) * slot);
    }
    for (; lo < hi && ty->first[lo] + ty->count[lo] <= y + 1; lo++)
      vfirst_emit(job, acc + (lo % A) * slot, out, lo);
  }
  reader_free(&rd);
  free(acc), free(out);
}

/* --- nearest: copies samples, no arithmetic (exact, alpha untouched) -- */
static void copy_px(unsigned char *d, const unsigned char *s, unsigned bpp) {
  switch (bpp) { /* constant sizes let the compiler inline the copy */
  case 1: memcpy(d, s, 1); break;
  case 2: memcpy(d, s, 2); break;
  case 3: memcpy(d, s, 3); break;
  case 4: memcpy(d, s, 4); break;
  case 6: memcpy(d, s, 6); break;
  default: memcpy(d, s, 8); break;
  }
}

static void nearest_rows(void *arg, size_t b, size_t e) {
  rs_job *job = arg;
  const unsigned bpp = job->channels * job->depth / 8;
  for (size_t y = b; y < e && !job_stopped(job, y); y++) {
    const unsigned char *s = job->data + (size_t)job->ty->first[y] * job->stride;
    unsigned char *d = dst_row(job, (uint32_t)y);
    for (uint32_t x = 0; x < job->tx->out_size; x++)
      copy_px(d + (size_t)x * bpp, s + (size_t)job->tx->first[x] * bpp, bpp);
  }
}

/* --- driver ----------------------------------------------------------- */

static double mean_count(const sl__rs_table *t) {
  double s = 0.0;
  for (uint32_t i = 0; i < t->out_size; i++) s += t->count[i];
  return s / t->out_size;
}

/* Mean floats per output of the expanded horizontal weights (lane padding
 * included: that is what the pass really computes). */
static double mean_xlen(const sl__rs_table *t) {
  double s = 0.0;
  for (uint32_t i = 0; i < t->out_size; i++) s += t->xlen[i];
  return s / t->out_size;
}

/* Multiply-adds of each order. The vertical-first scatter loads and stores
 * its accumulators for every tap; measured on 8-bit RGB (SSE2), one of its
 * multiply-adds costs about 1.2 of the horizontal pass's, which keeps its
 * sums in registers. */
static void order_costs(const rs_job *job, double *h_first, double *v_first) {
  const sl__rs_table *tx = job->tx, *ty = job->ty;
  double C = job->channels, hx = mean_xlen(tx), vy = mean_count(ty);
  double rows = (double)(ty->first[ty->out_size - 1] +
                         ty->count[ty->out_size - 1] - ty->first[0]);
  double ow = tx->out_size, oh = ty->out_size;
  *h_first = rows * ow * hx + oh * ow * C * vy;
  *v_first = 1.2 * oh * job->rw * C * vy + oh * ow * hx;
}

/* Runs body over output rows [0, n), `work` multiply-adds in all: split
 * across free cores when there is a worker and the work is worth it, on
 * the calling thread otherwise. */
static void run_rows(sl_worker *w, size_t n, double work,
                     void (*body)(void *, size_t, size_t), rs_job *job) {
  /* One chunk per GRAIN_WORK multiply-adds, at most one per worker: each
   * chunk re-reads the source rows its first window shares with the
   * previous chunk, so more chunks than threads would only cost. */
  double chunks = work / GRAIN_WORK;
  unsigned most = w ? sl_worker_count(w) : 1;
  if (chunks > most) chunks = most;
  if (!w || chunks < 2.0 || n < 2) {
    body(job, 0, n);
    return;
  }
  size_t grain = (size_t)ceil((double)n / floor(chunks));
  sl_parallel_for(w, n, grain, body, job);
}

/* Integer pre-shrink factor of one axis for a shrink in -> out. */
static uint32_t reduce_factor(uint32_t in, uint32_t out, double gap) {
  if (gap <= 0.0) return 1;
  double f = (double)in / out / gap;
  return f >= 2.0 ? (uint32_t)f : 1;
}

static bool image_ok(const sl__rs_image *im) {
  const sl_image_desc *d = &im->d;
  return d->width >= 1 && d->height >= 1 && d->channels >= 1 &&
         d->channels <= 4 && (d->depth == 8 || d->depth == 16) && im->data &&
         d->stride >= (size_t)d->width * d->channels * d->depth / 8;
}

/* Fills the job's source side and pre-shrink for `opt`. */
static void job_init(rs_job *job, const sl__rs_image *src, const sl__rs_image *dst,
                     const sl__rs_options *opt) {
  const sl_image_desc *d = &src->d;
  memset(job, 0, sizeof *job);
  atomic_init(&job->failed, 0);
  job->data = src->data;
  job->stride = d->stride;
  job->width = d->width, job->height = d->height;
  job->channels = d->channels, job->depth = d->depth;
  job->premultiply = (d->channels == 2 || d->channels == 4) && !opt->straight_alpha;
  bool nearest = opt->filter == SL__RS_NEAREST;
  job->fx = nearest ? 1 : reduce_factor(d->width, dst->d.width, opt->reducing_gap);
  job->fy = nearest ? 1 : reduce_factor(d->height, dst->d.height, opt->reducing_gap);
  job->rw = (d->width + job->fx - 1) / job->fx;
  job->rh = (d->height + job->fy - 1) / job->fy;
  job->vkind = vsum_kind_for(job);
  job->dst = dst;
}

/* Builds both tables and runs the passes. @return 0 or SL_ENOMEM. */
static int run_job(sl_worker *w, rs_job *job, const sl__rs_options *opt,
                   sl__rs_table *tx, sl__rs_table *ty) {
  const sl_image_desc *d = &job->dst->d;
  int rc = sl__rs_table_init(tx, opt->filter, job->rw,
                             (double)job->width / job->fx, d->width);
  if (rc == 0) rc = sl__rs_table_init(ty, opt->filter, job->rh,
                                      (double)job->height / job->fy, d->height);
  if (rc < 0) return rc;
  job->tx = tx, job->ty = ty;
  if (opt->filter == SL__RS_NEAREST) {
    run_rows(w, d->height, (double)d->width * d->height * job->channels,
             nearest_rows, job);
    return atomic_load(&job->failed);
  }
  if ((rc = sl__rs_table_expand(tx, job->channels)) < 0) return rc;
  double hcost, vcost;
  order_costs(job, &hcost, &vcost);
  bool h_first = opt->order == SL__RS_ORDER_AUTO ? hcost <= vcost
                                                 : opt->order == SL__RS_ORDER_H_FIRST;
  run_rows(w, d->height, h_first ? hcost : vcost, h_first ? hfirst_rows : vfirst_rows, job);
  return atomic_load(&job->failed);
}

int sl__rs_resize(sl_worker *w, const sl__rs_image *src, sl__rs_image *dst,
                  const sl__rs_options *opt) {
  if (!image_ok(src) || !image_ok(dst) || src->d.channels != dst->d.channels ||
      src->d.depth != dst->d.depth)
    return SL_EINVAL;
  rs_job job;
  job_init(&job, src, dst, opt);
  job.worker = w;
  sl__rs_table tx, ty;
  memset(&tx, 0, sizeof tx), memset(&ty, 0, sizeof ty);
  int rc = run_job(w, &job, opt, &tx, &ty);
  sl__rs_table_free(&tx);
  sl__rs_table_free(&ty);
  return rc;
}
