/*
 * png_write.c -- PNG encoder on libdeflate (whole-buffer deflate).
 *
 * An image payload (8- or 16-bit samples, 1 to 4 channels, native byte
 * order, any row stride) becomes a complete PNG file in one caller-supplied
 * buffer: signature, IHDR, the zlib stream in one or more IDAT chunks, IEND.
 * No other chunks are written (metadata is stripped).
 *
 * Two passes. First every row is converted to PNG order (16-bit samples
 * big-endian) and filtered into one contiguous scratch buffer, one filter
 * type byte in front of each row; then libdeflate compresses that buffer in
 * one call straight into the output, after the first IDAT header. Only when
 * the stream exceeds the chunk limit (2^31-1 bytes, the PNG maximum) is it
 * moved apart, from the end backwards, to make room for further IDAT
 * headers. sl_png_encode_bound() accounts for the worst case of all of it,
 * so a caller can allocate the output before encoding.
 *
 * Filters are computed from raw (unfiltered) neighbours only, so unlike
 * PNG decoding every filter loop is free of loop-carried dependencies and
 * vectorises. `auto` is libpng's heuristic: per row, the filter whose
 * output has the smallest sum of |signed byte| wins; at level 0 (stored
 * blocks) filtering cannot help and `auto` means none.
 *
 * Reuse. An sl_png_encoder keeps its libdeflate compressors (one per level,
 * allocated on first use) and its scratch buffers between images, so a
 * worker encoding thousands of thumbnails allocates once. An encoder is
 * used by one thread at a time; distinct encoders are independent.
 */
#include <libdeflate.h>
#include <stdlib.h>
#include <string.h>

#include "png_internal.h"
#include "sluice.h"

#define IDAT_MAX ((size_t)0x7fffffff) /* PNG chunk length limit, 2^31-1 */
#define HEAD_BYTES ((size_t)8 + 25)   /* signature + IHDR chunk */
#define CHUNK_OVERHEAD ((size_t)12)   /* length, type, CRC */
#define NLEVELS 10

struct sl_png_encoder {
  struct libdeflate_compressor *comp[NLEVELS]; /* by zlib level; lazy */
  unsigned char *filtered; /* filter byte + filtered row, every row */
  size_t filtered_cap;
  unsigned char *rows; /* zero row, 2 big-endian rows, 5 candidates */
  size_t rows_cap;
  size_t idat_max; /* largest IDAT payload written */
};

static const unsigned char png_signature[8] = {0x89, 'P', 'N',  'G',
                                               '\r', '\n', 0x1a, '\n'};

static void put_be32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

static int fail(char *err, size_t errlen, int code, const char *msg) {
  if (err && errlen) snprintf(err, errlen, "%s", msg);
  return code;
}

/* ---------------------------------------------------------------------- */
/* sizes                                                                   */

/* Bytes per unfiltered row, or 0 when the arguments are invalid or the
 * size does not fit in size_t. */
static size_t row_bytes(uint32_t w, uint32_t channels, uint32_t depth) {
  if (w == 0 || channels < 1 || channels > 4 || (depth != 8 && depth != 16))
    return 0;
  size_t bpp = (size_t)channels * (depth / 8);
  if ((size_t)w > (SIZE_MAX - 1) / bpp) return 0;
  return (size_t)w * bpp;
}

/* Bytes of filtered data (rows plus filter bytes), 0 on overflow. */
static size_t filtered_bytes(size_t rowbytes, uint32_t h) {
  if (rowbytes == 0 || h == 0 || (size_t)h > SIZE_MAX / (rowbytes + 1))
    return 0;
  return (size_t)h * (rowbytes + 1);
}

static size_t bound_for(size_t raw, size_t idat_max) {
  size_t z = libdeflate_zlib_compress_bound(NULL, raw);
  if (z < raw) return 0; /* wrapped */
  size_t chunks = z / idat_max + 1;
  size_t fixed = HEAD_BYTES + CHUNK_OVERHEAD * (chunks + 1);
  return z > SIZE_MAX - fixed ? 0 : z + fixed;
}

size_t sl_png_encode_bound(uint32_t w, uint32_t h, uint32_t channels,
                           uint32_t depth) {
  if (w > 0x7fffffffu || h > 0x7fffffffu) return 0;
  size_t raw = filtered_bytes(row_bytes(w, channels, depth), h);
  return raw ? bound_for(raw, IDAT_MAX) : 0;
}

/* ---------------------------------------------------------------------- */
/* encoder object                                                          */

int sl_png_encoder_create(sl_png_encoder **out) {
  *out = calloc(1, sizeof **out);
  if (!*out) return SL_ENOMEM;
  (*out)->idat_max = IDAT_MAX;
  return 0;
}

void sl_png_encoder_destroy(sl_png_encoder *enc) {
  if (!enc) return;
  for (int i = 0; i < NLEVELS; i++) libdeflate_free_compressor(enc->comp[i]);
  free(enc->filtered);
  free(enc->rows);
  free(enc);
}

void sl_png_encoder_set_idat_max(sl_png_encoder *enc, size_t max) {
  enc->idat_max = max == 0 || max > IDAT_MAX ? IDAT_MAX : max;
}

/* Grows *buf to at least `need` bytes (contents not kept). */
static bool ensure(unsigned char **buf, size_t *cap, size_t need) {
  if (*cap >= need) return true;
  unsigned char *nb = malloc(need);
  if (!nb) return false;
  free(*buf);
  *buf = nb;
  *cap = need;
  return true;
}

/* zlib levels map one to one: libdeflate's 0..9 follow zlib's scale (0
 * stored, 1 fastest, 6 default, 9 best); its 10..12 are not reachable. */
static struct libdeflate_compressor *compressor(sl_png_encoder *enc,
                                                int level) {
  if (!enc->comp[level]) enc->comp[level] = libdeflate_alloc_compressor(level);
  return enc->comp[level];
}

/* ---------------------------------------------------------------------- */
/* filters (PNG spec section 9.2); `prev` is a zero row for the first row */

static void filter_sub(const uint8_t *cur, size_t n, size_t bpp,
                       uint8_t *out) {
  for (size_t i = 0; i < bpp; i++) out[i] = cur[i];
  for (size_t i = bpp; i < n; i++) out[i] = (uint8_t)(cur[i] - cur[i - bpp]);
}

static void filter_up(const uint8_t *cur, const uint8_t *prev, size_t n,
                      uint8_t *out) {
  for (size_t i = 0; i < n; i++) out[i] = (uint8_t)(cur[i] - prev[i]);
}

static void filter_avg(const uint8_t *cur, const uint8_t *prev, size_t n,
                       size_t bpp, uint8_t *out) {
  for (size_t i = 0; i < bpp; i++) out[i] = (uint8_t)(cur[i] - (prev[i] >> 1));
  for (size_t i = bpp; i < n; i++)
    out[i] = (uint8_t)(cur[i] - (((unsigned)cur[i - bpp] + prev[i]) >> 1));
}

static inline uint8_t paeth(int a, int b, int c) {
  int pa = b - c, pb = a - c, pc = a + b - 2 * c;
  pa = pa < 0 ? -pa : pa;
  pb = pb < 0 ? -pb : pb;
  pc = pc < 0 ? -pc : pc;
  return (uint8_t)(pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
}

static void filter_paeth(const uint8_t *cur, const uint8_t *prev, size_t n,
                         size_t bpp, uint8_t *out) {
  for (size_t i = 0; i < bpp; i++) out[i] = (uint8_t)(cur[i] - prev[i]);
  for (size_t i = bpp; i < n; i++)
    out[i] = (uint8_t)(cur[i] - paeth(cur[i - bpp], prev[i], prev[i - bpp]));
}

static void filter_one(int type, const uint8_t *cur, const uint8_t *prev,
                       size_t n, size_t bpp, uint8_t *out) {
  switch (type) {
  case SL_PNG_FILTER_SUB: filter_sub(cur, n, bpp, out); break;
  case SL_PNG_FILTER_UP: filter_up(cur, prev, n, out); break;
  case SL_PNG_FILTER_AVG: filter_avg(cur, prev, n, bpp, out); break;
  case SL_PNG_FILTER_PAETH: filter_paeth(cur, prev, n, bpp, out); break;
  default: memcpy(out, cur, n); break;
  }
}

/* libpng's heuristic cost: the sum of |v| with v read as a signed byte. */
static uint64_t row_cost(const uint8_t *p, size_t n) {
  uint64_t sum = 0;
  for (size_t i = 0; i < n; i++) sum += p[i] < 128 ? p[i] : 256u - p[i];
  return sum;
}

/* Filters one row into out[0] (type byte) and out[1..n]. `cand` has room
 * for five rows when the filter is auto. */
static void filter_row(int filter, const uint8_t *cur, const uint8_t *prev,
                       size_t n, size_t bpp, uint8_t *cand, uint8_t *out) {
  if (filter != SL_PNG_FILTER_AUTO) {
    out[0] = (uint8_t)filter;
    filter_one(filter, cur, prev, n, bpp, out + 1);
    return;
  }
  int best = SL_PNG_FILTER_NONE;
  uint64_t best_cost = row_cost(cur, n);
  for (int t = SL_PNG_FILTER_SUB; t <= SL_PNG_FILTER_PAETH; t++) {
    uint8_t *c = cand + (size_t)t * n;
    filter_one(t, cur, prev, n, bpp, c);
    uint64_t cost = row_cost(c, n);
    if (cost < best_cost) best = t, best_cost = cost;
  }
  out[0] = (uint8_t)best;
  memcpy(out + 1, best == SL_PNG_FILTER_NONE ? cur : cand + (size_t)best * n,
         n);
}

/* 16-bit native samples to PNG's big-endian order. */
static void to_big_endian(const void *src, size_t n, uint8_t *dst) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  memcpy(dst, src, n);
#else
  const uint8_t *s = src;
  for (size_t i = 0; i + 1 < n; i += 2) {
    dst[i] = s[i + 1];
    dst[i + 1] = s[i];
  }
#endif
}

/* Fills enc->filtered with every filtered row. @return 0 or SL_ENOMEM. */
static int filter_image(sl_png_encoder *enc, const unsigned char *pixels,
                        size_t stride, uint32_t h, size_t n, size_t bpp,
                        bool wide, int filter) {
  size_t cand = filter == SL_PNG_FILTER_AUTO ? 5 : 0;
  size_t rows = 1 + (wide ? 2 : 0) + cand;
  if (!ensure(&enc->filtered, &enc->filtered_cap, (size_t)h * (n + 1)) ||
      !ensure(&enc->rows, &enc->rows_cap, rows * n))
    return SL_ENOMEM;
  uint8_t *zero = enc->rows, *be[2] = {zero + n, zero + 2 * n};
  uint8_t *cands = zero + (wide ? 3 : 1) * n;
  memset(zero, 0, n);
  const uint8_t *prev = zero;
  for (uint32_t y = 0; y < h; y++) {
    const uint8_t *cur = pixels + (size_t)y * stride;
    if (wide) {
      to_big_endian(cur, n, be[y & 1]);
      cur = be[y & 1];
    }
    filter_row(filter, cur, prev, n, bpp, cands, enc->filtered + y * (n + 1));
    prev = cur;
  }
  return 0;
}

/* ---------------------------------------------------------------------- */
/* chunks                                                                  */

static uint8_t color_type(uint32_t channels) {
  static const uint8_t types[5] = {0, 0 /* gray */, 4 /* gray+alpha */,
                                   2 /* RGB */, 6 /* RGBA */};
  return types[channels];
}

/* Finishes the chunk whose 8-byte header starts at `p` and whose `len`
 * data bytes follow it: writes length, type and CRC. @return the byte
 * after the chunk. */
static unsigned char *close_chunk(unsigned char *p, const char type[4],
                                  size_t len) {
  put_be32(p, (uint32_t)len);
  memcpy(p + 4, type, 4);
  uint32_t crc = libdeflate_crc32(0, p + 4, len + 4);
  put_be32(p + 8 + len, crc);
  return p + 8 + len + 4;
}

static unsigned char *write_head(unsigned char *p, uint32_t w, uint32_t h,
                                 uint32_t channels, uint32_t depth) {
  memcpy(p, png_signature, 8);
  unsigned char *d = p + 8 + 8;
  put_be32(d, w);
  put_be32(d + 4, h);
  d[8] = (unsigned char)depth;
  d[9] = color_type(channels);
  d[10] = d[11] = d[12] = 0; /* deflate, adaptive filtering, no interlace */
  return close_chunk(p + 8, "IHDR", 13);
}

/* The zlib stream of `zlen` bytes sits at idat + 8. Splits it into IDAT
 * chunks of at most `max` bytes, moving the later pieces up (from the last
 * one back, so nothing is overwritten before it moved), and closes every
 * chunk. @return the end of the last chunk. */
static unsigned char *write_idats(unsigned char *idat, size_t zlen,
                                  size_t max) {
  size_t chunks = zlen == 0 ? 1 : (zlen + max - 1) / max;
  for (size_t k = chunks - 1; k > 0; k--) {
    size_t from = 8 + k * max, len = k + 1 == chunks ? zlen - k * max : max;
    memmove(idat + k * (max + CHUNK_OVERHEAD) + 8, idat + from, len);
  }
  unsigned char *p = idat;
  for (size_t k = 0; k < chunks; k++) {
    size_t len = k + 1 == chunks ? zlen - k * max : max;
    p = close_chunk(p, "IDAT", len);
  }
  return p;
}

/* ---------------------------------------------------------------------- */
/* encode                                                                  */

static int check_args(uint32_t w, uint32_t h, uint32_t channels,
                      uint32_t depth, size_t stride, int level, int filter,
                      char *err, size_t errlen) {
  if (w == 0 || h == 0 || w > 0x7fffffffu || h > 0x7fffffffu)
    return fail(err, errlen, SL_EINVAL,
                "image dimensions must be 1..2^31-1 for PNG");
  if (channels < 1 || channels > 4)
    return fail(err, errlen, SL_EINVAL, "PNG needs 1 to 4 channels");
  if (depth != 8 && depth != 16)
    return fail(err, errlen, SL_EINVAL, "PNG writer needs 8- or 16-bit samples");
  if (level < 0 || level > 9)
    return fail(err, errlen, SL_EINVAL, "compression level must be 0..9");
  if (filter < SL_PNG_FILTER_NONE || filter > SL_PNG_FILTER_AUTO)
    return fail(err, errlen, SL_EINVAL, "unknown PNG filter");
  size_t n = row_bytes(w, channels, depth);
  if (n == 0 || filtered_bytes(n, h) == 0)
    return fail(err, errlen, SL_ERANGE, "image too large to encode");
  if (stride < n)
    return fail(err, errlen, SL_EINVAL, "row stride smaller than a row");
  return 0;
}

int sl_png_encoder_encode(sl_png_encoder *enc, const void *pixels,
                          size_t stride, uint32_t w, uint32_t h,
                          uint32_t channels, uint32_t depth, int level,
                          int filter, void *dst, size_t dst_cap,
                          size_t *out_len, char *err, size_t errlen) {
  *out_len = 0;
  int rc = check_args(w, h, channels, depth, stride, level, filter, err, errlen);
  if (rc < 0) return rc;
  size_t n = row_bytes(w, channels, depth), raw = filtered_bytes(n, h);
  if (level == 0 && filter == SL_PNG_FILTER_AUTO) filter = SL_PNG_FILTER_NONE;
  struct libdeflate_compressor *c = compressor(enc, level);
  if (!c || filter_image(enc, pixels, stride, h, n, channels * depth / 8,
                         depth == 16, filter) < 0)
    return fail(err, errlen, SL_ENOMEM, "out of memory in PNG encoder");
  /* Room for the head, the first IDAT header and CRC, and IEND; splitting
   * needs CHUNK_OVERHEAD more per extra chunk, checked after compressing. */
  size_t fixed = HEAD_BYTES + 2 * CHUNK_OVERHEAD;
  if (dst_cap <= fixed)
    return fail(err, errlen, SL_ERANGE, "PNG output buffer too small");
  unsigned char *out = dst, *idat = out + HEAD_BYTES;
  size_t zlen = libdeflate_zlib_compress(c, enc->filtered, raw, idat + 8,
                                         dst_cap - fixed);
  size_t extra = zlen ? (zlen - 1) / enc->idat_max * CHUNK_OVERHEAD : 0;
  if (zlen == 0 || extra > dst_cap - fixed - zlen)
    return fail(err, errlen, SL_ERANGE, "PNG output buffer too small");
  write_head(out, w, h, channels, depth);
  unsigned char *end = write_idats(idat, zlen, enc->idat_max);
  end = close_chunk(end, "IEND", 0);
  *out_len = (size_t)(end - out);
  return 0;
}

int sl_png_encode(const void *pixels, size_t stride, uint32_t w, uint32_t h,
                  uint32_t channels, uint32_t depth, int level, int filter,
                  void *dst, size_t dst_cap, size_t *out_len, char *err,
                  size_t errlen) {
  sl_png_encoder *enc;
  *out_len = 0;
  if (sl_png_encoder_create(&enc) < 0)
    return fail(err, errlen, SL_ENOMEM, "out of memory in PNG encoder");
  int rc = sl_png_encoder_encode(enc, pixels, stride, w, h, channels, depth,
                                 level, filter, dst, dst_cap, out_len, err,
                                 errlen);
  sl_png_encoder_destroy(enc);
  return rc;
}
