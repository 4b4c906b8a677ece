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
 * Pipeline of one image:
 *   [pre-shrink]  optional integer box reduction (like libvips' shrink or
 *                 Pillow's reducing_gap) of a large shrink: a cheap average
 *                 of fx*fy blocks into a float image, after which the exact
 *                 filter only has a small factor left to do.
 *   pass 1        horizontal (or vertical) filtering of source rows into a
 *                 float intermediate sized for this pass only.
 *   pass 2        the other axis, one output row at a time, then clamp,
 *                 round and un-premultiply into the destination.
 * The order is chosen by estimated cost (multiply-adds), so a wide-and-flat
 * shrink of one axis does not pay for a full-size intermediate. An axis
 * whose size does not change gets an identity table (one tap of 1.0), which
 * is exact.
 *
 * Invariants:
 *  - Everything between load and store is float, colour premultiplied by
 *    alpha when the image has alpha (no dark fringes: a transparent pixel
 *    contributes nothing to its neighbours' colour).
 *  - Float rows read by the horizontal pass have SL__RS_ROW_PAD readable
 *    zero (or finite) floats after them: the pass reads whole vectors and
 *    the expanded weights are zero there.
 *  - The inner loops see constant channel and lane counts (the row kernels
 *    are instantiated per channel count), contiguous weights and restrict
 *    pointers, so gcc and clang vectorise them without intrinsics.
 *
 * Threads: sl__rs_resize splits the rows of each pass with sl_parallel_for;
 * every chunk writes disjoint rows and owns its malloc'd scratch. Tables
 * and the source are read-only while passes run. A chunk that cannot get
 * scratch memory sets job->failed (atomic) and the resize returns SL_ENOMEM.
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
#else
#define RS_INLINE static inline
#endif

/* Multiply-adds per parallel chunk: below this, waking threads costs more
 * than it saves, so small images run on the calling thread only. */
#define GRAIN_WORK 400000.0

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

/* One row, C channels, L lanes (both constant after inlining). For each
 * output pixel the weights and the source run side by side as contiguous
 * floats, so the inner loop is L independent multiply-adds: one, two or
 * three SIMD registers of accumulators, no shuffles. Lane l holds partial
 * sums of channel l % C, folded at the end. */
RS_INLINE void hpass_c(const sl__rs_table *t, const float *restrict src,
                       float *restrict dst, const unsigned C, const unsigned L) {
  const size_t xs = t->xstride;
  for (uint32_t i = 0; i < t->out_size; i++) {
    const float *restrict w = t->xw + i * xs;
    const float *restrict s = src + (size_t)t->first[i] * C;
    const size_t n = t->xlen[i];
    float acc[12] = {0};
    for (size_t j = 0; j < n; j += L)
      for (unsigned l = 0; l < L; l++) acc[l] += w[j + l] * s[j + l];
    for (unsigned c = 0; c < C; c++) {
      float v = 0.0f;
      for (unsigned l = c; l < L; l += C) v += acc[l];
      dst[(size_t)i * C + c] = v;
    }
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
static void axpy(size_t n, float w, const float *restrict row,
                 float *restrict dst) {
  for (size_t x = 0; x < n; x++) dst[x] += w * row[x];
}

/* Two taps per sweep halve the loads and stores of dst. */
void sl__rs_vpass_row(const sl__rs_table *t, uint32_t i, const float *rows,
                      size_t row_stride, uint32_t row0, size_t n, float *dst) {
  const float *w = t->w + (size_t)i * t->stride;
  const float *r = rows + (size_t)(t->first[i] - row0) * row_stride;
  uint32_t cnt = t->count[i], k;
  float *restrict d = dst;
  if (cnt & 1) {
    const float *restrict r0 = r;
    const float w0 = w[0];
    for (size_t x = 0; x < n; x++) d[x] = w0 * r0[x];
    k = 1;
  } else {
    const float *restrict r0 = r, *restrict r1 = r + row_stride;
    const float w0 = w[0], w1 = w[1];
    for (size_t x = 0; x < n; x++) d[x] = w0 * r0[x] + w1 * r1[x];
    k = 2;
  }
  for (; k < cnt; k += 2) {
    const float *restrict r0 = r + k * row_stride;
    const float *restrict r1 = r0 + row_stride;
    const float w0 = w[k], w1 = w[k + 1];
    for (size_t x = 0; x < n; x++) d[x] += w0 * r0[x] + w1 * r1[x];
  }
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

static void load_u8(const uint8_t *restrict s, size_t n, float *restrict d) {
  for (size_t i = 0; i < n; i++) d[i] = s[i];
}
static void load_u16(const uint16_t *restrict s, size_t n, float *restrict d) {
  for (size_t i = 0; i < n; i++) d[i] = s[i];
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

#define DEFINE_STORE_PLAIN(NAME, T, MAXV)                                      \
  static void NAME(const float *restrict s, size_t n, T *restrict d) {        \
    for (size_t i = 0; i < n; i++) d[i] = (T)(clampf(s[i], MAXV) + 0.5f);     \
  }
DEFINE_STORE_PLAIN(store_u8, uint8_t, 255.0f)
DEFINE_STORE_PLAIN(store_u16, uint16_t, 65535.0f)

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
 * Whole images: sources, jobs, passes
 * ====================================================================== */

/* Rows the passes read: the caller's 8/16-bit image (converted per row into
 * scratch) or a float premultiplied image made by the pre-shrink (read in
 * place). */
typedef struct rs_source {
  const unsigned char *data;
  size_t stride; /* bytes */
  uint32_t width, height;
  unsigned channels, depth; /* depth 32: float rows, already premultiplied */
  bool premultiply;
} rs_source;

/* Row y as premultiplied floats followed by SL__RS_ROW_PAD readable floats.
 * `scratch` (width*channels + SL__RS_ROW_PAD floats, pad zeroed) is used
 * for integer sources. */
static const float *source_row(const rs_source *s, uint32_t y, float *scratch) {
  const unsigned char *p = s->data + (size_t)y * s->stride;
  if (s->depth == 32) return (const float *)(const void *)p;
  sl__rs_load_row(p, s->width, s->channels, s->depth, s->premultiply, scratch);
  return scratch;
}

/* Everything a pass chunk needs; shared read-only by the chunks except
 * `failed` and the disjoint rows each chunk writes. */
typedef struct rs_job {
  rs_source src;
  const sl__rs_image *dst;
  const sl__rs_table *tx, *ty;
  bool premultiplied; /* store divides by alpha */
  float *inter;       /* intermediate of the first pass */
  size_t istride;     /* floats per intermediate row */
  uint32_t row0;      /* source row of intermediate row 0 (h-first) */
  uint32_t fx, fy;    /* pre-shrink factors */
  float *reduced;     /* pre-shrink output */
  size_t rstride;     /* floats per reduced row */
  atomic_int failed;
} rs_job;

/* Zeroed scratch of n floats plus the row pad; NULL (and job->failed set)
 * when out of memory. */
static float *scratch_alloc(rs_job *job, size_t n) {
  float *p = calloc(n + SL__RS_ROW_PAD, sizeof *p);
  if (!p) atomic_store_explicit(&job->failed, 1, memory_order_relaxed);
  return p;
}

static size_t row_floats(const rs_source *s) {
  return (size_t)s->width * s->channels;
}

static unsigned char *dst_row(const rs_job *job, uint32_t y) {
  return (unsigned char *)job->dst->data + (size_t)y * job->dst->d.stride;
}

/* --- h-first: pass 1 filters source rows row0+b .. row0+e-1 ---------- */
static void hfirst_pass1(void *arg, size_t b, size_t e) {
  rs_job *job = arg;
  float *scratch = NULL;
  if (job->src.depth != 32 && !(scratch = scratch_alloc(job, row_floats(&job->src))))
    return;
  for (size_t r = b; r < e; r++) {
    const float *row = source_row(&job->src, job->row0 + (uint32_t)r, scratch);
    sl__rs_hpass_row(job->tx, row, job->inter + r * job->istride);
  }
  free(scratch);
}

/* --- h-first: pass 2 filters intermediate columns into output rows ---- */
static void hfirst_pass2(void *arg, size_t b, size_t e) {
  rs_job *job = arg;
  size_t n = job->istride;
  float *out = scratch_alloc(job, n);
  if (!out) return;
  const sl_image_desc *d = &job->dst->d;
  for (size_t y = b; y < e; y++) {
    sl__rs_vpass_row(job->ty, (uint32_t)y, job->inter, job->istride, job->row0,
                     n, out);
    sl__rs_store_row(out, d->width, d->channels, d->depth, job->premultiplied,
                     dst_row(job, (uint32_t)y));
  }
  free(out);
}

/* --- v-first: pass 1 scatters each source row into the output rows
 * [b, e) whose window holds it. Source rows are read (and converted) once
 * per chunk; windows move monotonically, so a sliding range of outputs is
 * enough. */
static void vfirst_pass1(void *arg, size_t b, size_t e) {
  rs_job *job = arg;
  const sl__rs_table *ty = job->ty;
  size_t n = row_floats(&job->src);
  float *scratch = NULL;
  if (job->src.depth != 32 && !(scratch = scratch_alloc(job, n))) return;
  memset(job->inter + b * job->istride, 0, (e - b) * job->istride * sizeof(float));
  uint32_t y0 = ty->first[b], y1 = 0;
  for (size_t j = b; j < e; j++)
    if (ty->first[j] + ty->count[j] > y1) y1 = ty->first[j] + ty->count[j];
  size_t lo = b;
  for (uint32_t y = y0; y < y1; y++) {
    const float *row = source_row(&job->src, y, scratch);
    while (lo < e && ty->first[lo] + ty->count[lo] <= y) lo++;
    for (size_t j = lo; j < e && ty->first[j] <= y; j++) {
      uint32_t k = y - ty->first[j];
      if (k < ty->count[j])
        axpy(n, ty->w[j * ty->stride + k], row, job->inter + j * job->istride);
    }
  }
  free(scratch);
}

/* --- v-first: pass 2 filters intermediate rows horizontally ---------- */
static void vfirst_pass2(void *arg, size_t b, size_t e) {
  rs_job *job = arg;
  const sl_image_desc *d = &job->dst->d;
  float *out = scratch_alloc(job, (size_t)d->width * d->channels);
  if (!out) return;
  for (size_t y = b; y < e; y++) {
    sl__rs_hpass_row(job->tx, job->inter + y * job->istride, out);
    sl__rs_store_row(out, d->width, d->channels, d->depth, job->premultiplied,
                     dst_row(job, (uint32_t)y));
  }
  free(out);
}

/* --- pre-shrink: reduced rows [b, e), each the mean of fy source rows
 * and fx columns (fewer in the last, partial block), as Pillow's reduce()
 * does, but kept in float. Rows are summed first (the contiguous, cheap
 * direction), then blocks of fx pixels across. */

/* Sums `rows` 8-bit rows into 16-bit lanes (exact for rows <= 257), then
 * widens to float: integer adds are many lanes per instruction. */
static void vsum_u8(const unsigned char *p, size_t stride, uint32_t rows,
                    size_t n, uint16_t *restrict acc, float *restrict out) {
  for (size_t i = 0; i < n; i++) acc[i] = p[i];
  for (uint32_t r = 1; r < rows; r++) {
    const uint8_t *restrict s = p + r * stride;
    for (size_t i = 0; i < n; i++) acc[i] = (uint16_t)(acc[i] + s[i]);
  }
  for (size_t i = 0; i < n; i++) out[i] = acc[i];
}

/* Sums rows y0..y1-1 of any source into acc (floats); tmp is scratch. */
static void vsum_float(const rs_source *s, uint32_t y0, uint32_t y1,
                       float *restrict acc, float *tmp) {
  size_t n = row_floats(s);
  const float *first = source_row(s, y0, acc);
  if (first != acc) memcpy(acc, first, n * sizeof *acc);
  for (uint32_t y = y0 + 1; y < y1; y++) {
    const float *restrict t = source_row(s, y, tmp);
    for (size_t i = 0; i < n; i++) acc[i] += t[i];
  }
}

/* Means of blocks of fx pixels (C channels, constant after inlining) of a
 * row of column sums over `rows` rows. */
RS_INLINE void hmean_c(const float *restrict acc, uint32_t width, uint32_t fx,
                       uint32_t rows, float *restrict out, const unsigned C) {
  for (uint32_t x0 = 0, X = 0; x0 < width; x0 += fx, X++) {
    uint32_t x1 = x0 + fx < width ? x0 + fx : width;
    float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (uint32_t x = x0; x < x1; x++)
      for (unsigned c = 0; c < C; c++) sum[c] += acc[(size_t)x * C + c];
    const float inv = 1.0f / (float)((x1 - x0) * rows);
    for (unsigned c = 0; c < C; c++) out[(size_t)X * C + c] = sum[c] * inv;
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

static void reduce_rows(void *arg, size_t b, size_t e) {
  rs_job *job = arg;
  const rs_source *s = &job->src;
  size_t n = row_floats(s);
  bool ints = s->depth == 8 && !s->premultiply && job->fy <= 257;
  float *acc = scratch_alloc(job, n), *tmp = scratch_alloc(job, n);
  uint16_t *acc16 = ints ? malloc(n * sizeof *acc16) : NULL;
  if (ints && !acc16) atomic_store_explicit(&job->failed, 1, memory_order_relaxed);
  for (size_t Y = b; Y < e && acc && tmp && (acc16 || !ints); Y++) {
    uint32_t y0 = (uint32_t)Y * job->fy;
    uint32_t y1 = y0 + job->fy < s->height ? y0 + job->fy : s->height;
    if (ints) vsum_u8(s->data + (size_t)y0 * s->stride, s->stride, y1 - y0, n, acc16, acc);
    else vsum_float(s, y0, y1, acc, tmp);
    hmean(acc, s->width, s->channels, job->fx, y1 - y0,
          job->reduced + Y * job->rstride);
  }
  free(acc);
  free(tmp);
  free(acc16);
}

/* Rows per parallel chunk for rows costing `work` multiply-adds each. */
static size_t grain_for(double work) {
  double g = GRAIN_WORK / (work > 1.0 ? work : 1.0);
  return g < 1.0 ? 1 : g > 1e9 ? (size_t)1e9 : (size_t)g;
}

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

/* Runs body over [0, n) rows: split across free cores when there is a
 * worker, on the calling thread otherwise. */
static void run_rows(sl_worker *w, size_t n, size_t grain,
                     void (*body)(void *, size_t, size_t), rs_job *job) {
  if (w) sl_parallel_for(w, n, grain, body, job);
  else body(job, 0, n);
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
  const unsigned bpp = job->src.channels * job->src.depth / 8;
  for (size_t y = b; y < e; y++) {
    const unsigned char *s = job->src.data + (size_t)job->ty->first[y] * job->src.stride;
    unsigned char *d = dst_row(job, (uint32_t)y);
    for (uint32_t x = 0; x < job->tx->out_size; x++)
      copy_px(d + (size_t)x * bpp, s + (size_t)job->tx->first[x] * bpp, bpp);
  }
}

/* Integer pre-shrink factor of one axis for a shrink in -> out. */
static uint32_t reduce_factor(uint32_t in, uint32_t out, double gap) {
  if (gap <= 0.0) return 1;
  double f = (double)in / out / gap;
  return f >= 2.0 ? (uint32_t)f : 1;
}

/* Replaces job->src by its box-reduced float copy when the options ask for
 * a pre-shrink and the shrink is large enough. @return 0 or SL_ENOMEM. */
static int prereduce(sl_worker *w, rs_job *job, const sl__rs_image *dst,
                     const sl__rs_options *opt) {
  job->fx = reduce_factor(job->src.width, dst->d.width, opt->reducing_gap);
  job->fy = reduce_factor(job->src.height, dst->d.height, opt->reducing_gap);
  if (job->fx == 1 && job->fy == 1) return 0;
  uint32_t rw = (job->src.width + job->fx - 1) / job->fx;
  uint32_t rh = (job->src.height + job->fy - 1) / job->fy;
  job->rstride = (size_t)rw * job->src.channels;
  size_t n = job->rstride * rh;
  job->reduced = malloc((n + SL__RS_ROW_PAD) * sizeof(float));
  if (!job->reduced) return SL_ENOMEM;
  memset(job->reduced + n, 0, SL__RS_ROW_PAD * sizeof(float));
  double work = (double)job->fy * row_floats(&job->src);
  run_rows(w, rh, grain_for(work), reduce_rows, job);
  if (atomic_load(&job->failed)) return SL_ENOMEM;
  job->src.data = (const unsigned char *)job->reduced;
  job->src.stride = job->rstride * sizeof(float);
  job->src.width = rw;
  job->src.height = rh;
  job->src.depth = 32;
  return 0;
}

/* Pass order by multiply-adds, ties to horizontal first (as Pillow). */
static bool choose_h_first(const rs_job *job, sl__rs_order order) {
  if (order != SL__RS_ORDER_AUTO) return order == SL__RS_ORDER_H_FIRST;
  const sl__rs_table *tx = job->tx, *ty = job->ty;
  double C = job->src.channels, hx = mean_xlen(tx), vy = mean_count(ty);
  double rows = (double)(ty->first[ty->out_size - 1] +
                         ty->count[ty->out_size - 1] - ty->first[0]);
  double h_first = rows * tx->out_size * hx + (double)ty->out_size * tx->out_size * C * vy;
  double v_first = (double)ty->out_size * job->src.width * C * vy +
                   (double)ty->out_size * tx->out_size * hx;
  return h_first <= v_first;
}

/* Runs the two passes over job->src into job->dst. @return 0 or SL_ENOMEM. */
static int two_passes(sl_worker *w, rs_job *job, bool h_first) {
  const sl__rs_table *tx = job->tx, *ty = job->ty;
  const double C = job->src.channels;
  size_t rows, floats;
  if (h_first) {
    job->row0 = ty->first[0];
    rows = ty->first[ty->out_size - 1] + ty->count[ty->out_size - 1] - job->row0;
    job->istride = (size_t)tx->out_size * job->src.channels;
  } else {
    rows = ty->out_size;
    job->istride = row_floats(&job->src);
  }
  floats = rows * job->istride;
  job->inter = malloc((floats + SL__RS_ROW_PAD) * sizeof(float));
  if (!job->inter) return SL_ENOMEM;
  memset(job->inter + floats, 0, SL__RS_ROW_PAD * sizeof(float));
  if (h_first) {
    double work1 = tx->out_size * mean_xlen(tx) + job->src.width * C;
    run_rows(w, rows, grain_for(work1), hfirst_pass1, job);
    double work2 = (double)job->istride * mean_count(ty);
    if (!atomic_load(&job->failed))
      run_rows(w, ty->out_size, grain_for(work2), hfirst_pass2, job);
  } else {
    double work1 = (double)job->istride * mean_count(ty);
    run_rows(w, rows, grain_for(work1), vfirst_pass1, job);
    double work2 = tx->out_size * mean_xlen(tx);
    if (!atomic_load(&job->failed))
      run_rows(w, ty->out_size, grain_for(work2), vfirst_pass2, job);
  }
  return atomic_load(&job->failed) ? SL_ENOMEM : 0;
}

static bool image_ok(const sl__rs_image *im) {
  const sl_image_desc *d = &im->d;
  return d->width >= 1 && d->height >= 1 && d->channels >= 1 &&
         d->channels <= 4 && (d->depth == 8 || d->depth == 16) && im->data &&
         d->stride >= (size_t)d->width * d->channels * d->depth / 8;
}

int sl__rs_resize(sl_worker *w, const sl__rs_image *src, sl__rs_image *dst,
                  const sl__rs_options *opt) {
  if (!image_ok(src) || !image_ok(dst) || src->d.channels != dst->d.channels ||
      src->d.depth != dst->d.depth)
    return SL_EINVAL;
  rs_job job;
  memset(&job, 0, sizeof job);
  atomic_init(&job.failed, 0);
  unsigned C = src->d.channels;
  job.src = (rs_source){src->data, src->d.stride, src->d.width, src->d.height,
                        C, src->d.depth,
                        (C == 2 || C == 4) && !opt->straight_alpha};
  job.premultiplied = job.src.premultiply;
  job.dst = dst;
  sl__rs_table tx, ty;
  memset(&tx, 0, sizeof tx), memset(&ty, 0, sizeof ty);
  job.tx = &tx, job.ty = &ty;
  int rc = opt->filter == SL__RS_NEAREST ? 0 : prereduce(w, &job, dst, opt);
  if (rc == 0) rc = sl__rs_table_init(&tx, opt->filter, job.src.width,
                                      (double)src->d.width / (job.fx ? job.fx : 1),
                                      dst->d.width);
  if (rc == 0) rc = sl__rs_table_init(&ty, opt->filter, job.src.height,
                                      (double)src->d.height / (job.fy ? job.fy : 1),
                                      dst->d.height);
  if (rc == 0 && opt->filter == SL__RS_NEAREST) {
    run_rows(w, dst->d.height, grain_for((double)dst->d.width * C), nearest_rows, &job);
  } else if (rc == 0 && (rc = sl__rs_table_expand(&tx, C)) == 0) {
    rc = two_passes(w, &job, choose_h_first(&job, opt->order));
  }
  sl__rs_table_free(&tx);
  sl__rs_table_free(&ty);
  free(job.inter);
  free(job.reduced);
  return rc;
}
