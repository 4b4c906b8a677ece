/*
 * resize_internal.h -- the resampling core behind the `resize` stage.
 *
 * Private to stages/ (and tests/test_resize.c, which checks the pieces one
 * at a time). resize.c owns parameters and geometry; resize_kernels.c owns
 * the filters, contribution tables, the two separable passes and the driver
 * that chains them over a whole image. Only the public "sluice.h" is used.
 *
 * Conventions shared by every function here:
 *  - Pixel coordinates are centred as in Pillow: output pixel i covers the
 *    source interval around center = (i + 0.5) * scale, scale = in/out.
 *  - Rows handed between passes are float, channels interleaved, colour
 *    premultiplied by alpha (same units as the samples: 0..255 or 0..65535).
 *  - Float rows read by sl__rs_hpass_row must have SL__RS_ROW_PAD readable,
 *    finite floats after their last sample (weights there are zero).
 */
#ifndef SLUICE_RESIZE_INTERNAL_H
#define SLUICE_RESIZE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice.h"

/* Filters, in the order of the `filter=` choice string. */
typedef enum sl__rs_filter {
  SL__RS_NEAREST = 0,
  SL__RS_BOX,
  SL__RS_BILINEAR,
  SL__RS_BICUBIC,
  SL__RS_LANCZOS3
} sl__rs_filter;
#define SL__RS_FILTER_CHOICES "nearest|box|bilinear|bicubic|lanczos3"

/* Readable floats required after the last sample of a row fed to the
 * horizontal pass (the pass reads whole vectors of 4 or 12 lanes). */
#define SL__RS_ROW_PAD 16

/* Support radius of `f` in source pixels at scale 1 (nearest: 0). */
double sl__rs_filter_support(sl__rs_filter f);
/* The kernel at distance x, exactly as Pillow defines it (box is 1 on
 * (-0.5, 0.5], lanczos3 is sinc(x)sinc(x/3) on [-3, 3)). Nearest: box. */
double sl__rs_filter_eval(sl__rs_filter f, double x);

/* Contribution table of one axis: for each output pixel i, the source
 * samples first[i] .. first[i]+count[i]-1 with normalised weights
 * w[i*stride ..]. Filled by sl__rs_table_init, freed by sl__rs_table_free
 * (the struct itself belongs to the caller). */
typedef struct sl__rs_table {
  uint32_t in_size, out_size;
  uint32_t stride;   /* floats between the weight rows of two outputs */
  uint32_t max_count;
  uint32_t max_overlap; /* most windows that hold one source sample */
  uint32_t *first;   /* [out_size] */
  uint32_t *count;   /* [out_size], each >= 1 */
  float *w;          /* [out_size * stride]; zero past count; sums to 1 */
  bool identity;     /* out == in at scale 1: every weight row is {1} */
  /* Weights spread over interleaved channels for the horizontal pass
   * (sl__rs_table_expand): xw[i*xstride + k*channels + c] = w[i][k],
   * zero-padded to xlen[i] floats, a multiple of the pass's lane count. */
  uint32_t channels, xstride;
  uint32_t *xlen;    /* [out_size] */
  float *xw;         /* [out_size * xstride] */
} sl__rs_table;

/* Builds the table mapping `in_size` source samples spanning `in_extent`
 * source pixels (in_size itself, or in/f after an integer pre-shrink by f
 * whose last block is partial) onto `out_size` samples with filter `f`.
 * When shrinking the kernel is widened by the scale (antialiasing).
 * Nearest gives one tap per output at floor(center). in_size, out_size and
 * in_extent must be positive. @return 0 or SL_ENOMEM (t left empty). */
int sl__rs_table_init(sl__rs_table *t, sl__rs_filter f, uint32_t in_size,
                      double in_extent, uint32_t out_size);
/* Adds the per-channel expansion used by sl__rs_hpass_row for rows of
 * `channels` (1..4) interleaved channels. @return 0 or SL_ENOMEM. */
int sl__rs_table_expand(sl__rs_table *t, unsigned channels);
/* Frees what init/expand allocated; the struct may be reused. NULL ok. */
void sl__rs_table_free(sl__rs_table *t);

/* --- the separable passes, one row at a time ------------------------- */

/* Horizontal pass: dst (t->out_size * t->channels floats) from src
 * (t->in_size * t->channels floats + SL__RS_ROW_PAD readable floats).
 * The table must be expanded. */
void sl__rs_hpass_row(const sl__rs_table *t, const float *src, float *dst);
/* Vertical pass for one output row: dst[x] = sum over k < count of
 * w[k] * rows[k][x], for x < n (w: the output's weight row, count: its
 * tap count, rows: the source rows first .. first+count-1). */
void sl__rs_vpass_row(const float *w, uint32_t count, const float *const *rows,
                      size_t n, float *dst);

/* Converts `width` pixels of `channels` samples of `depth` bits (8 or 16,
 * native-endian) to float. With `premultiply` (2 or 4 channels, the last
 * being alpha) colour becomes colour * alpha / max. */
void sl__rs_load_row(const void *src, uint32_t width, unsigned channels,
                     unsigned depth, bool premultiply, float *dst);
/* The reverse: clamps, rounds to nearest and, with `premultiplied`, divides
 * colour by alpha (colour 0 where the stored alpha rounds to 0). */
void sl__rs_store_row(const float *src, uint32_t width, unsigned channels,
                      unsigned depth, bool premultiplied, void *dst);

/* --- whole images ------------------------------------------------------ */

typedef enum sl__rs_order {
  SL__RS_ORDER_AUTO = 0, /* by estimated cost (default) */
  SL__RS_ORDER_H_FIRST,
  SL__RS_ORDER_V_FIRST
} sl__rs_order;

typedef struct sl__rs_options {
  sl__rs_filter filter;
  /* Pre-shrink by an integer box factor int(scale / gap) per axis when
   * that is at least 2 (like Pillow's reducing_gap); 0 = never. */
  double reducing_gap;
  sl__rs_order order;  /* tests and benchmarks force one */
  bool straight_alpha; /* tests only: filter alpha images unpremultiplied */
} sl__rs_options;

/* An image in memory: desc (width, height, channels 1..4, depth 8|16,
 * stride) and a pointer to row 0. */
typedef struct sl__rs_image {
  sl_image_desc d;
  void *data;
} sl__rs_image;

/* Resamples src into dst (both described fully by the caller and owned by
 * it; sizes may be anything >= 1, channels and depth must match). Output
 * rows are split across free cores with sl_parallel_for(w, ...) when the
 * image is large enough; w may be NULL (calling thread only, no
 * cancellation). Scratch is a few rows per chunk, malloc'd and freed
 * before returning. @return 0, SL_EINVAL (bad or mismatched descriptors),
 * SL_ENOMEM, or SL_ECANCELED when w's run is being cancelled (dst is then
 * partly written). */
int sl__rs_resize(sl_worker *w, const sl__rs_image *src, sl__rs_image *dst,
                  const sl__rs_options *opt);

/* --- geometry (resize.c) ---------------------------------------------- */

typedef enum sl__rs_mode {
  SL__RS_FIT = 0, /* fit inside box_w x box_h, keep aspect */
  SL__RS_WIDTH,   /* width given, height from aspect */
  SL__RS_HEIGHT,  /* height given, width from aspect */
  SL__RS_EXACT,   /* size=WxH or both width= and height= */
  SL__RS_SCALE
} sl__rs_mode;

typedef struct sl__rs_geometry {
  sl__rs_mode mode;
  uint32_t w, h;  /* box / requested sides (unused ones 0) */
  double scale;   /* SL__RS_SCALE */
  bool enlarge;   /* SL__RS_FIT: may grow the image */
} sl__rs_geometry;

/* Output size for an in_w x in_h input (Pillow's Image.thumbnail rounding
 * for fit; at least 1 per side). @return 0, or SL_ERANGE when a side would
 * exceed SL__RS_MAX_SIDE. */
#define SL__RS_MAX_SIDE UINT32_C(1048576)
int sl__rs_geometry_apply(const sl__rs_geometry *g, uint32_t in_w,
                          uint32_t in_h, uint32_t *out_w, uint32_t *out_h);
/* Parses "WIDTHxHEIGHT" (each 1..SL__RS_MAX_SIDE). @return 0 or SL_EINVAL. */
int sl__rs_parse_wxh(const char *text, uint32_t *w, uint32_t *h);

#endif /* SLUICE_RESIZE_INTERNAL_H */
