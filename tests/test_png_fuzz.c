/*
 * test_png_fuzz.c -- differential tests of the fast PNG decoder
 * (io/png_read.c + io/png_unfilter.c) against libpng, on PNGs written by
 * libpng's own encoder.
 *
 * Each image is random: colour type and bit depth (all 15 legal pairs), width
 * 1..~70 or near the kernels' block edges (4- and 8-pixel blocks, row pairs),
 * height 1..~12, interlaced or not, tRNS or not, one filter type forced for
 * every row or libpng's adaptive mix, zlib level 0..9, pixels noisy or smooth
 * (so the adaptive filter really picks different types), and the IDAT stream
 * re-split into random chunk sizes. Every image is decoded by the fast path at
 * each SIMD level this CPU has (portable C, SSE2, SSE4.1, AVX2), each into a
 * buffer of the image's size and in place (sl_png_decoder_probe, then
 * sl_png_decoder_decode_into with work_bytes, as png.decode does), by the
 * libpng path, and compared byte for byte with the expected output computed
 * here from the samples that were encoded (an independent normalisation:
 * palette lookup, bit replication, colour key to alpha, native 16-bit order).
 *
 * Then mutations of those images, where both paths must either reject or
 * accept with identical pixels:
 *  - the inflated rows rewritten before recompression: random filter type
 *    bytes (valid ones, so every row-pair combination reaches the kernels,
 *    and invalid ones, which must be rejected), random data bytes;
 *  - bytes of the compressed stream flipped with the chunk CRC fixed, so
 *    the damage reaches inflate rather than the CRC check.
 * Fixed seed; SLUICE_PNG_DIFF_ITERS (images, default 1000) and
 * SLUICE_PNG_DIFF_SEED run it longer or elsewhere.
 */
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "../io/png_internal.h"
#include "sluice.h"
#include "test.h"

/* splitmix64: deterministic, so every failure reproduces from its seed. */
static uint64_t rnd_next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint32_t rnd_below(uint64_t *s, uint32_t n) {
  return n ? (uint32_t)(rnd_next(s) % n) : 0;
}

typedef struct buf {
  uint8_t *p;
  size_t n, cap;
} buf;

static void put(buf *b, const void *src, size_t n) {
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2 + 64;
    b->p = realloc(b->p, b->cap);
    if (!b->p) abort();
  }
  if (n && src) memcpy(b->p + b->n, src, n);
  b->n += n;
}

static void put32(buf *b, uint32_t v) {
  uint8_t q[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8),
                  (uint8_t)v};
  put(b, q, 4);
}

static void put_chunk(buf *b, const char *type, const uint8_t *d, size_t n) {
  put32(b, (uint32_t)n);
  size_t at = b->n;
  put(b, type, 4);
  put(b, d, n);
  put32(b, (uint32_t)crc32(0, b->p + at, (uInt)(n + 4)));
}

static uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
}

/* ---- a random image and what it must decode to -------------------------- */

typedef struct spec {
  uint32_t w, h;
  int ct, depth, interlace, trns, filter, level, smooth;
  int plte_n;            /* palette entries */
  uint8_t plte[256 * 3];
  uint8_t trns_tab[256]; /* palette alpha (the first trns_n entries) */
  int trns_n;
  uint16_t key[3];       /* grey / RGB colour key */
  uint16_t *s;           /* samples, w*h*channels, each < 2^depth */
} spec;

static int chans_of(int ct) { return ct == 0 || ct == 3 ? 1 : ct == 4 ? 2 : ct == 2 ? 3 : 4; }

static uint32_t pick_width(uint64_t *rng) {
  switch (rnd_below(rng, 4)) {
  case 0: return 1 + rnd_below(rng, 3);
  case 1: return 1 + rnd_below(rng, 70);
  default: { /* around a block edge: 4k-1 .. 4k+1, 8k-1 .. 8k+1 */
    uint32_t k = 1 + rnd_below(rng, 12), m = rnd_below(rng, 2) ? 4 : 8;
    return k * m - 1 + rnd_below(rng, 3);
  }
  }
}

static void random_spec(spec *sp, uint64_t *rng) {
  static const int pairs[15][2] = {{0, 1}, {0, 2}, {0, 4}, {0, 8}, {0, 16},
                                   {2, 8}, {2, 16}, {3, 1}, {3, 2}, {3, 4},
                                   {3, 8}, {4, 8}, {4, 16}, {6, 8}, {6, 16}};
  const int *pr = pairs[rnd_below(rng, 15)];
  memset(sp, 0, sizeof *sp);
  sp->ct = pr[0];
  sp->depth = pr[1];
  sp->w = pick_width(rng);
  sp->h = 1 + rnd_below(rng, rnd_below(rng, 4) ? 12 : 40);
  sp->interlace = rnd_below(rng, 4) == 0;
  sp->filter = (int)rnd_below(rng, 6); /* 0..4 forced, 5 adaptive */
  sp->level = (int)rnd_below(rng, 10);
  sp->smooth = rnd_below(rng, 2);
  uint32_t maxv = (1u << sp->depth) - 1;
  if (sp->ct == 3) {
    sp->plte_n = 1 + (int)rnd_below(rng, 1u << sp->depth);
    for (int i = 0; i < sp->plte_n * 3; i++) sp->plte[i] = (uint8_t)rnd_next(rng);
    maxv = (uint32_t)sp->plte_n - 1;
  }
  int c = chans_of(sp->ct);
  size_t n = (size_t)sp->w * sp->h * c;
  sp->s = malloc(n * sizeof *sp->s);
  for (size_t i = 0; i < n; i++) {
    size_t x = (i / c) % sp->w, y = i / c / sp->w;
    uint32_t v = sp->smooth ? (uint32_t)(x * 7 + y * 5 + (i % c) * 40 +
                                         rnd_below(rng, 9)) : (uint32_t)rnd_next(rng);
    sp->s[i] = (uint16_t)(v % (maxv + 1));
  }
  if ((sp->ct == 0 || sp->ct == 2 || sp->ct == 3) && rnd_below(rng, 3) == 0) {
    sp->trns = 1;
    if (sp->ct == 3) {
      sp->trns_n = 1 + (int)rnd_below(rng, (uint32_t)sp->plte_n);
      for (int i = 0; i < sp->trns_n; i++) sp->trns_tab[i] = (uint8_t)rnd_next(rng);
    } else { /* a key that occurs in the image */
      size_t px = rnd_below(rng, sp->w * sp->h);
      for (int k = 0; k < c; k++) sp->key[k] = sp->s[px * c + k];
    }
  }
}

/* The decoder's documented output for sp (png_internal.h). */
static uint8_t *expected(const spec *sp, size_t *len) {
  int c = chans_of(sp->ct), outc = sp->ct == 3 ? (sp->trns ? 4 : 3) : c + (sp->trns ? 1 : 0);
  int ob = sp->depth == 16 ? 2 : 1;
  size_t npx = (size_t)sp->w * sp->h;
  uint8_t *o = malloc(npx * outc * ob), *q = o;
  for (size_t i = 0; i < npx; i++) {
    const uint16_t *s = sp->s + i * c;
    if (sp->ct == 3) {
      memcpy(q, sp->plte + 3 * s[0], 3);
      if (sp->trns) q[3] = s[0] < sp->trns_n ? sp->trns_tab[s[0]] : 255;
      q += outc;
      continue;
    }
    int match = sp->trns;
    for (int k = 0; k < c; k++) {
      uint16_t v = s[k];
      match = match && v == sp->key[k];
      if (sp->depth == 16) {
        memcpy(q, &v, 2);
        q += 2;
      } else {
        *q++ = (uint8_t)(v * 255 / ((1u << sp->depth) - 1));
      }
    }
    if (sp->trns) {
      uint16_t a = match ? 0 : (sp->depth == 16 ? 0xffff : 0xff);
      if (ob == 2) memcpy(q, &a, 2); else *q = (uint8_t)a;
      q += ob;
    }
  }
  *len = npx * outc * ob;
  return o;
}

static void write_cb(png_structp png, png_bytep d, size_t n) {
  put(png_get_io_ptr(png), d, n);
}
static void flush_cb(png_structp png) { (void)png; }

/* Encodes sp with libpng. @return 0 or -1 (libpng error). */
static int encode(const spec *sp, buf *out) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png_create_info_struct(png);
  int c = chans_of(sp->ct);
  size_t rb = ((size_t)sp->w * c * sp->depth + 7) / 8;
  uint8_t *row = calloc(1, rb);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    free(row);
    return -1;
  }
  png_set_write_fn(png, out, write_cb, flush_cb);
  png_set_IHDR(png, info, sp->w, sp->h, sp->depth, sp->ct,
               sp->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  static const int forced[5] = {PNG_FILTER_NONE, PNG_FILTER_SUB, PNG_FILTER_UP,
                                PNG_FILTER_AVG, PNG_FILTER_PAETH};
  png_set_filter(png, 0, sp->filter < 5 ? forced[sp->filter] : PNG_ALL_FILTERS);
  png_set_compression_level(png, sp->level);
  if (sp->ct == 3) png_set_PLTE(png, info, (png_const_colorp)sp->plte, sp->plte_n);
  if (sp->trns) {
    png_color_16 key = {0, sp->key[0], sp->key[1], sp->key[2], sp->key[0]};
    if (sp->ct == 3) png_set_tRNS(png, info, sp->trns_tab, sp->trns_n, NULL);
    else png_set_tRNS(png, info, NULL, 0, &key);
  }
  png_write_info(png, info);
  int passes = png_set_interlace_handling(png);
  for (int p = 0; p < passes; p++)
    for (uint32_t y = 0; y < sp->h; y++) { /* pack samples big-endian */
      memset(row, 0, rb);
      const uint16_t *s = sp->s + (size_t)y * sp->w * c;
      for (size_t i = 0; i < (size_t)sp->w * c; i++) {
        if (sp->depth == 16) {
          row[2 * i] = (uint8_t)(s[i] >> 8);
          row[2 * i + 1] = (uint8_t)s[i];
        } else {
          size_t bit = i * sp->depth;
          row[bit / 8] |= (uint8_t)(s[i] << (8 - sp->depth - bit % 8));
        }
      }
      png_write_row(png, row);
    }
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  free(row);
  return 0;
}

/* Rebuilds png with its IDAT payload `z` cut into random chunk sizes. */
static void resplit(const buf *png, const uint8_t *z, size_t zn, buf *out,
                    uint64_t *rng) {
  out->n = 0;
  size_t at = 8;
  put(out, png->p, 8);
  int done = 0;
  uint32_t max = 1 + rnd_below(rng, rnd_below(rng, 2) ? 64 : 8192);
  while (at + 12 <= png->n) {
    uint32_t n = rd32(png->p + at);
    if (!memcmp(png->p + at + 4, "IDAT", 4)) {
      for (size_t off = 0; !done && off < zn;) {
        size_t take = 1 + rnd_below(rng, max);
        if (take > zn - off) take = zn - off;
        put_chunk(out, "IDAT", z + off, take);
        off += take;
      }
      done = 1;
    } else {
      put(out, png->p + at, (size_t)n + 12);
    }
    at += (size_t)n + 12;
  }
}

/* The concatenated IDAT payload of png. */
static void idat_of(const buf *png, buf *z) {
  z->n = 0;
  for (size_t at = 8; at + 12 <= png->n;) {
    uint32_t n = rd32(png->p + at);
    if (!memcmp(png->p + at + 4, "IDAT", 4)) put(z, png->p + at + 8, n);
    at += (size_t)n + 12;
  }
}

/* ---- decoding both ways --------------------------------------------------- */

typedef struct result {
  int rc;
  char err[256];
  uint8_t *px;
  size_t len;
} result;

/* level < 0: the libpng path; else the fast path at that SIMD level, into
 * a buffer of exactly stride*height bytes or (inplace) of work_bytes, where
 * rows that need no conversion are inflated and unfiltered in place. */
static void decode(const buf *png, int level, int inplace, result *r) {
  sl_png_info info;
  r->px = NULL;
  r->len = 0;
  r->rc = sl_png_probe(png->p, png->n, 1 << 24, 1 << 28, &info, r->err, sizeof r->err);
  if (r->rc < 0) return;
  r->len = info.stride * info.height;
  size_t cap = inplace ? info.work_bytes : r->len;
  r->px = malloc(cap ? cap : 1);
  if (level < 0) {
    r->rc = sl_png_decode_libpng(png->p, png->n, &info, r->px, r->err, sizeof r->err);
  } else {
    sl_png_decoder *dec = sl_png_decoder_create(0);
    sl_png_decoder_set_simd(dec, level);
    if (inplace) { /* as png.decode does: the decoder's probe first */
      sl_png_info again;
      char err2[256];
      int rc2 = sl_png_decoder_probe(dec, png->p, png->n, 1 << 24, 1 << 28,
                                     &again, err2, sizeof err2);
      if (rc2 != 0 || memcmp(&again, &info, sizeof info))
        SL__FAIL("sl_png_decoder_probe disagrees with sl_png_probe: %d %s", rc2, err2);
    }
    r->rc = sl_png_decoder_decode_into(dec, png->p, png->n, &info, r->px, cap,
                                       r->err, sizeof r->err);
    sl_png_decoder_destroy(dec);
  }
}

/* Decodes png every way; all must agree with each other (and with `want`
 * when given). @return 1 when accepted. */
static int agree(const buf *png, const uint8_t *want, size_t want_len,
                 const char *what) {
  result lp, f;
  decode(png, -1, 0, &lp);
  int top = sl_png_simd_best();
  for (int run = 0; run <= 2 * top + 1; run++) {
    int level = run / 2, inplace = run % 2;
    decode(png, level, inplace, &f);
    if ((f.rc == 0) != (lp.rc == 0)) {
      /* documented: libpng may not read the stream's end (png_internal.h) */
      int trailer = f.rc == SL_EFORMAT && lp.rc == 0 &&
                    (strstr(f.err, "adler32") || strstr(f.err, "after all image rows") ||
                     strstr(f.err, "after the end of the zlib stream"));
      if (!trailer)
        SL__FAIL("%s: simd level %d%s %s (%s), libpng %s (%s)", what, level,
                 inplace ? " in place" : "",
                 f.rc ? "rejects" : "accepts", f.err, lp.rc ? "rejects" : "accepts",
                 lp.err);
    } else if (f.rc == 0 && (f.len != lp.len || memcmp(f.px, lp.px, f.len))) {
      SL__FAIL("%s: simd level %d%s and libpng decode different pixels", what,
               level, inplace ? " in place" : "");
    }
    free(f.px);
  }
  if (want && lp.rc != 0) SL__FAIL("%s: libpng rejects its own output: %s", what, lp.err);
  if (want && (lp.len != want_len || memcmp(lp.px, want, want_len)))
    SL__FAIL("%s: decoded pixels differ from the encoded samples", what);
  free(lp.px);
  return lp.rc == 0;
}

/* Inflates z (whole stream), changes rows (filter types, data), deflates
 * again at a random level. @return 0, or -1 when z does not inflate. */
static int rewrite_rows(const uint8_t *z, size_t zn, size_t raw_len,
                        uint32_t row_len, buf *out, uint64_t *rng, int *kind) {
  uLongf n = raw_len;
  uint8_t *raw = malloc(raw_len ? raw_len : 1);
  if (uncompress(raw, &n, z, zn) != Z_OK || n != raw_len) {
    free(raw);
    return -1;
  }
  *kind = (int)rnd_below(rng, 3);
  for (size_t i = 0; i < raw_len; i++) {
    int filter_byte = row_len && i % row_len == 0; /* non-interlaced rows */
    if (*kind == 0 && filter_byte) raw[i] = (uint8_t)rnd_below(rng, 5);
    else if (*kind == 1 && rnd_below(rng, 64) == 0) raw[i] = (uint8_t)rnd_next(rng);
    else if (*kind == 2 && filter_byte && rnd_below(rng, 16) == 0)
      raw[i] = (uint8_t)(5 + rnd_below(rng, 251));
  }
  uLongf cap = compressBound(raw_len);
  out->n = 0;
  put(out, NULL, cap); /* room for the stream; n is set below */
  int rc = compress2(out->p, &cap, raw, raw_len, (int)rnd_below(rng, 10));
  out->n = cap;
  free(raw);
  return rc == Z_OK ? 0 : -1;
}

TEST(png_fuzz_libpng_encoder) {
  const char *env_iters = getenv("SLUICE_PNG_DIFF_ITERS");
  const char *env_seed = getenv("SLUICE_PNG_DIFF_SEED");
  long iters = env_iters ? atol(env_iters) : 1000;
  uint64_t rng = env_seed ? strtoull(env_seed, NULL, 0) : 0x5eed2026;
  buf png = {0}, split = {0}, z = {0}, z2 = {0}, mut = {0};
  int images = 0, mutants = 0, accepted = 0, kinds[3] = {0}, tries[3] = {0};
  for (long it = 0; it < iters; it++) {
    spec sp;
    random_spec(&sp, &rng);
    char what[200];
    snprintf(what, sizeof what, "image %ld (%ux%u ct %d depth %d interlace %d "
             "trns %d filter %d level %d)", it, sp.w, sp.h, sp.ct, sp.depth,
             sp.interlace, sp.trns, sp.filter, sp.level);
    png.n = 0;
    ASSERT_EQ(encode(&sp, &png), 0);
    size_t want_len;
    uint8_t *want = expected(&sp, &want_len);
    idat_of(&png, &z);
    resplit(&png, z.p, z.n, &split, &rng);
    ASSERT(agree(&split, want, want_len, what));
    images++;
    /* mutation 1: rows rewritten before deflate (non-interlaced: the
     * filter bytes sit at every row_len-th byte) */
    int c = chans_of(sp.ct);
    uint32_t row_len = (uint32_t)(1 + ((size_t)sp.w * c * sp.depth + 7) / 8);
    size_t raw_len = sp.interlace ? 0 : (size_t)row_len * sp.h;
    int kind;
    if (!sp.interlace && rewrite_rows(z.p, z.n, raw_len, row_len, &z2, &rng, &kind) == 0) {
      resplit(&png, z2.p, z2.n, &mut, &rng);
      char w2[260];
      snprintf(w2, sizeof w2, "%s, rows rewritten (kind %d)", what, kind);
      int ok = agree(&mut, NULL, 0, w2);
      accepted += ok;
      kinds[kind] += ok;
      tries[kind]++;
      mutants++;
    }
    /* mutation 2: a byte of the compressed stream changed, CRC fixed */
    for (int m = 0; m < 2 && z.n > 0; m++) {
      z2.n = 0;
      put(&z2, z.p, z.n);
      size_t at = z.n > 6 && rnd_below(&rng, 4) ? 2 + rnd_below(&rng, (uint32_t)z.n - 6)
                                                 : rnd_below(&rng, (uint32_t)z.n);
      z2.p[at] ^= (uint8_t)(1 + rnd_below(&rng, 255));
      resplit(&png, z2.p, z2.n, &mut, &rng);
      char w2[260];
      snprintf(w2, sizeof w2, "%s, deflate byte %zu changed", what, at);
      accepted += agree(&mut, NULL, 0, w2);
      mutants++;
    }
    free(want);
    free(sp.s);
  }
  fprintf(stderr, "  %d images, %d mutants (%d accepted; rows rewritten "
          "with random types %d/%d accepted, random bytes %d/%d, bad types "
          "%d/%d), simd levels 0..%d\n", images, mutants, accepted, kinds[0],
          tries[0], kinds[1], tries[1], kinds[2], tries[2], sl_png_simd_best());
  /* every valid type sequence decodes; bad types are mostly caught */
  ASSERT_EQ(kinds[0], tries[0]);
  ASSERT(tries[0] > iters / 10);
  ASSERT(kinds[2] < tries[2]);
  free(png.p);
  free(split.p);
  free(z.p);
  free(z2.p);
  free(mut.p);
}

/* Large rows through every SIMD level: widths of many blocks, every pair of
 * chained filter types (rows rewritten with random types), RGB8/RGBA8/GA16
 * (the block kernels) and grey/GA8/RGB16 (the others). */
TEST(png_fuzz_wide_rows) {
  static const int pairs[6][2] = {{2, 8}, {6, 8}, {4, 16}, {0, 8}, {4, 8}, {2, 16}};
  uint64_t rng = 77;
  buf png = {0}, split = {0}, z = {0}, z2 = {0};
  for (int i = 0; i < 36; i++) {
    spec sp;
    random_spec(&sp, &rng);
    free(sp.s);
    sp.ct = pairs[i % 6][0];
    sp.depth = pairs[i % 6][1];
    sp.trns = 0;
    sp.interlace = 0;
    sp.w = 200 + rnd_below(&rng, 900);
    sp.h = 2 + rnd_below(&rng, 11);
    sp.filter = (i / 6) % 2 ? 5 : (int)rnd_below(&rng, 5); /* forced or mixed */
    int c = chans_of(sp.ct);
    size_t n = (size_t)sp.w * sp.h * c;
    sp.s = malloc(n * sizeof *sp.s);
    for (size_t k = 0; k < n; k++)
      sp.s[k] = (uint16_t)(rnd_next(&rng) & ((1u << sp.depth) - 1));
    png.n = 0;
    ASSERT_EQ(encode(&sp, &png), 0);
    size_t want_len;
    uint8_t *want = expected(&sp, &want_len);
    idat_of(&png, &z);
    resplit(&png, z.p, z.n, &split, &rng);
    char what[160];
    snprintf(what, sizeof what, "wide %d (%ux%u ct %d depth %d)", i, sp.w, sp.h,
             sp.ct, sp.depth);
    ASSERT(agree(&split, want, want_len, what));
    uint32_t row_len = (uint32_t)(1 + (size_t)sp.w * c * sp.depth / 8);
    int kind = -1;
    while (kind != 0) /* random valid types on every row */
      ASSERT_EQ(rewrite_rows(z.p, z.n, (size_t)row_len * sp.h, row_len, &z2, &rng, &kind), 0);
    resplit(&png, z2.p, z2.n, &split, &rng);
    ASSERT(agree(&split, NULL, 0, what));
    free(want);
    free(sp.s);
  }
  free(png.p);
  free(split.p);
  free(z.p);
  free(z2.p);
}

/* sl_png_decoder_probe's kept scan is used only by the decode of the same
 * buffer right after it: another buffer, a second decode or a failed probe
 * in between all fall back to a fresh scan, and pixels stay right. */
TEST(png_decoder_probe_handoff) {
  uint64_t rng = 5;
  buf a = {0}, b = {0}, za = {0}, zb = {0}, sa = {0}, sb = {0};
  spec sp;
  random_spec(&sp, &rng);
  free(sp.s);
  sp.ct = 2, sp.depth = 8, sp.w = 37, sp.h = 9, sp.interlace = 0, sp.trns = 0;
  sp.filter = 5;
  sp.s = malloc((size_t)sp.w * sp.h * 3 * sizeof *sp.s);
  for (size_t i = 0; i < (size_t)sp.w * sp.h * 3; i++) sp.s[i] = (uint16_t)(rnd_next(&rng) & 255);
  ASSERT_EQ(encode(&sp, &a), 0);
  size_t wa_len, wb_len;
  uint8_t *wa = expected(&sp, &wa_len);
  for (size_t i = 0; i < (size_t)sp.w * sp.h * 3; i++) sp.s[i] = (uint16_t)(255 - sp.s[i]);
  ASSERT_EQ(encode(&sp, &b), 0);
  uint8_t *wb = expected(&sp, &wb_len);
  idat_of(&a, &za);
  idat_of(&b, &zb);
  resplit(&a, za.p, za.n, &sa, &rng); /* several IDAT chunks each */
  resplit(&b, zb.p, zb.n, &sb, &rng);
  sl_png_info ia, ib;
  char err[256];
  sl_png_decoder *dec = sl_png_decoder_create(0);
  uint8_t *px = malloc(wa_len + sp.h);
  ASSERT_EQ(sl_png_probe(sb.p, sb.n, 1 << 20, 1 << 24, &ib, err, sizeof err), 0);
  /* probe a, decode b: b's own data */
  ASSERT_EQ(sl_png_decoder_probe(dec, sa.p, sa.n, 1 << 20, 1 << 24, &ia, err, sizeof err), 0);
  ASSERT_EQ(ib.work_bytes, ia.work_bytes);
  ASSERT_EQ(sl_png_decoder_decode_into(dec, sb.p, sb.n, &ib, px, ib.work_bytes, err, sizeof err), 0);
  ASSERT(memcmp(px, wb, wb_len) == 0);
  /* probe a, decode a same-sized copy of a with one image byte changed
   * (CRC fixed): the copy's own data is decoded (and rejected: adler32) */
  buf c = {0};
  put(&c, sa.p, sa.n);
  size_t mid = 8;
  while (memcmp(c.p + mid + 4, "IDAT", 4) || rd32(c.p + mid) < 2) mid += rd32(c.p + mid) + 12;
  c.p[mid + 9] ^= 0x10;
  uint32_t cc = (uint32_t)crc32(0, c.p + mid + 4, rd32(c.p + mid) + 4);
  for (int k = 0; k < 4; k++) c.p[mid + 8 + rd32(c.p + mid) + k] = (uint8_t)(cc >> (24 - 8 * k));
  ASSERT_EQ(sl_png_decoder_probe(dec, sa.p, sa.n, 1 << 20, 1 << 24, &ia, err, sizeof err), 0);
  int rc = sl_png_decoder_decode_into(dec, c.p, c.n, &ia, px, ia.work_bytes, err, sizeof err);
  ASSERT(rc != 0 || memcmp(px, wa, wa_len) != 0);
  /* the same address and length holding other bytes (first IDAT changed,
   * its CRC fixed) -- a broken promise the decoder still notices */
  size_t first = 8;
  while (memcmp(c.p + first + 4, "IDAT", 4)) first += rd32(c.p + first) + 12;
  memcpy(c.p, sa.p, sa.n);
  c.p[first + 8 + rd32(c.p + first) - 1] ^= 0x01;
  cc = (uint32_t)crc32(0, c.p + first + 4, rd32(c.p + first) + 4);
  for (int k = 0; k < 4; k++) c.p[first + 8 + rd32(c.p + first) + k] = (uint8_t)(cc >> (24 - 8 * k));
  uint8_t *keep = malloc(sa.n);
  memcpy(keep, sa.p, sa.n);
  ASSERT_EQ(sl_png_decoder_probe(dec, sa.p, sa.n, 1 << 20, 1 << 24, &ia, err, sizeof err), 0);
  memcpy(sa.p, c.p, sa.n);
  rc = sl_png_decoder_decode_into(dec, sa.p, sa.n, &ia, px, ia.work_bytes, err, sizeof err);
  ASSERT(rc != 0 || memcmp(px, wa, wa_len) != 0);
  memcpy(sa.p, keep, sa.n);
  free(keep);
  free(c.p);
  /* probe a, decode a (handoff), decode a again (fresh scan) */
  ASSERT_EQ(sl_png_decoder_probe(dec, sa.p, sa.n, 1 << 20, 1 << 24, &ia, err, sizeof err), 0);
  for (int k = 0; k < 2; k++) {
    memset(px, 0, wa_len);
    ASSERT_EQ(sl_png_decoder_decode_into(dec, sa.p, sa.n, &ia, px, ia.work_bytes, err, sizeof err), 0);
    ASSERT(memcmp(px, wa, wa_len) == 0);
  }
  /* a failed probe (CRC) leaves nothing behind for the next decode */
  sb.p[sb.n - 20] ^= 1;
  ASSERT_EQ(sl_png_decoder_probe(dec, sb.p, sb.n, 1 << 20, 1 << 24, &ib, err, sizeof err), SL_EFORMAT);
  ASSERT_CONTAINS(err, "CRC mismatch");
  ASSERT_EQ(sl_png_decoder_decode_into(dec, sa.p, sa.n, &ia, px, ia.work_bytes, err, sizeof err), 0);
  ASSERT(memcmp(px, wa, wa_len) == 0);
  /* the limits apply as in sl_png_probe */
  ASSERT_EQ(sl_png_decoder_probe(dec, sa.p, sa.n, 100, 1 << 24, &ia, err, sizeof err), SL_ELIMIT);
  ASSERT_CONTAINS(err, "above max_pixels=100");
  sl_png_decoder_destroy(dec);
  free(px);
  free(wa);
  free(wb);
  free(sp.s);
  free(a.p), free(b.p), free(za.p), free(zb.p), free(sa.p), free(sb.p);
}

static const sl_test_case cases[] = {
    SL_CASE(png_fuzz_libpng_encoder, "unit"),
    SL_CASE(png_fuzz_wide_rows, "unit"),
    SL_CASE(png_decoder_probe_handoff, "unit"),
};
SL_TEST_MAIN(cases)
