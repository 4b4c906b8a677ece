/*
 * png_read.c -- PNG decoding: one strict chunk-stream validator and two
 * decoders behind it.
 *
 * Every entry point first runs scan_file(): the signature, IHDR, and then the
 * whole chunk stream up to IEND -- every length bounds-checked against the
 * buffer before anything is read, every CRC-32 verified (libdeflate_crc32),
 * chunk order, PLTE and tRNS validated (the policy is spelled out in
 * png_internal.h). The scan allocates nothing, so sl_png_probe() can refuse
 * a file that declares a gigapixel image, or a 2 GiB chunk in a 48-byte file,
 * before anyone has allocated for it.
 *
 * Fast path (sl_png_decode): the IDAT payloads are concatenated (or used in
 * place when there is a single IDAT; sl_png_decoder_probe copies each one
 * right after checking its CRC), libdeflate inflates the zlib stream in one
 * call into a buffer of exactly the size IHDR implies (the call checks the
 * Adler-32 and fails on too much or too little data), and each row is
 * unfiltered (png_unfilter.c: SIMD kernels, several rows interleaved) --
 * straight into the caller's buffer when the raw rows already are the
 * output format (with room for it, inflated into that buffer itself and
 * unfiltered in place), else in place in scratch and then converted (bit
 * unpacking, palette and tRNS lookup, 16-bit byte order). Adam7 passes are
 * unfiltered the same way and scattered into place. When libdeflate fails, zlib re-reads
 * the stream only to name the cause (truncated after N rows, adler32
 * mismatch, ...); if zlib accepts a stream libdeflate refused, the libpng
 * path decodes the file, so both paths always agree.
 *
 * Reference path (sl_png_decode_libpng): libpng with per-call error and
 * warning callbacks (messages land in the caller's buffer, never on stderr),
 * a bounds-checked memory reader, every ancillary chunk but tRNS skipped
 * unread, benign errors made fatal (too much / too little image data, data
 * after the zlib stream), and the same scan first. Everything libpng
 * allocates hangs off its own structs, freed after the longjmp.
 *
 * Thread-safety: no globals. An sl_png_decoder (one per worker) keeps the
 * libdeflate decompressor and the scratch buffers between images; the
 * one-shot sl_png_decode() makes a temporary one.
 */
#include <inttypes.h>
#include <libdeflate.h>
#include <png.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "png_internal.h"
#include "sluice.h"

#define U31_MAX UINT32_C(0x7fffffff)

/* Where scan_file() found the chunks the decoders need. Pointers are into
 * the caller's buffer. */
typedef struct png_scan {
  const uint8_t *plte; /* PLTE payload or NULL */
  uint32_t plte_entries;
  const uint8_t *trns; /* effective tRNS payload or NULL */
  uint32_t trns_len;
  size_t idat_at;    /* offset of the first IDAT chunk's length field */
  size_t idat_bytes; /* total payload of all IDAT chunks */
  uint32_t idat_chunks;
} png_scan;

/* Writes a message into err (when there is room) and returns `code`. */
static int errf(char *err, size_t errlen, int code, const char *fmt, ...)
    SL_PRINTF(4, 5);
static int errf(char *err, size_t errlen, int code, const char *fmt, ...) {
  if (err && errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return code;
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
}

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static void store16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* PNG chunk types are four ASCII letters. */
static int type_ok(const uint8_t *t) {
  for (int i = 0; i < 4; i++) {
    int c = t[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'))) return 0;
  }
  return 1;
}

/* A chunk type for messages: the four letters, or hex when not letters. */
static const char *type_name(const uint8_t *t, char out[20]) {
  if (type_ok(t))
    snprintf(out, 20, "%c%c%c%c", t[0], t[1], t[2], t[3]);
  else
    snprintf(out, 20, "0x%02x%02x%02x%02x", t[0], t[1], t[2], t[3]);
  return out;
}

static int is_type(const uint8_t *t, const char *name) {
  return memcmp(t, name, 4) == 0;
}

/* ---------------------------------------------------------------------
 * IHDR and the chunk stream
 * --------------------------------------------------------------------- */

static int depth_ok(unsigned ct, unsigned d) {
  switch (ct) {
  case 0: return d == 1 || d == 2 || d == 4 || d == 8 || d == 16;
  case 3: return d == 1 || d == 2 || d == 4 || d == 8;
  case 2: case 4: case 6: return d == 8 || d == 16;
  default: return 0;
  }
}

static const char *ct_name(unsigned ct) {
  switch (ct) {
  case 0: return "grey";
  case 2: return "RGB";
  case 3: return "palette";
  case 4: return "grey+alpha";
  case 6: return "RGBA";
  default: return "invalid";
  }
}

/* Validates the 13 IHDR bytes at d and copies the fields into *info. */
static int parse_ihdr(const uint8_t *d, sl_png_info *info, char *err,
                      size_t errlen) {
  uint32_t w = be32(d), h = be32(d + 4);
  unsigned depth = d[8], ct = d[9];
  if (w == 0) return errf(err, errlen, SL_EFORMAT, "IHDR: width is 0");
  if (h == 0) return errf(err, errlen, SL_EFORMAT, "IHDR: height is 0");
  if (w > U31_MAX)
    return errf(err, errlen, SL_EFORMAT, "IHDR: width %" PRIu32
                " exceeds 2^31-1", w);
  if (h > U31_MAX)
    return errf(err, errlen, SL_EFORMAT, "IHDR: height %" PRIu32
                " exceeds 2^31-1", h);
  if (ct > 6 || ct == 1 || ct == 5)
    return errf(err, errlen, SL_EFORMAT, "IHDR: colour type %u is invalid",
                ct);
  if (!depth_ok(ct, depth))
    return errf(err, errlen, SL_EFORMAT, "IHDR: bit depth %u is invalid for "
                "colour type %u (%s)", depth, ct, ct_name(ct));
  if (d[10] != 0)
    return errf(err, errlen, SL_EFORMAT, "IHDR: compression method %u is "
                "invalid", d[10]);
  if (d[11] != 0)
    return errf(err, errlen, SL_EFORMAT, "IHDR: filter method %u is invalid",
                d[11]);
  if (d[12] > 1)
    return errf(err, errlen, SL_EFORMAT, "IHDR: interlace method %u is "
                "invalid", d[12]);
  info->width = w;
  info->height = h;
  info->color_type = (uint8_t)ct;
  info->bit_depth = (uint8_t)depth;
  info->interlace = d[12];
  return 0;
}

/* What the scan has seen so far. */
typedef struct scan_state {
  const sl_png_info *hdr;
  png_scan *sc;
  int idat;      /* 0 before the IDAT run, 1 inside it, 2 after it */
  int have_plte; /* a PLTE chunk was seen */
  int have_trns;
  const uint8_t *file;
  uint8_t *gather; /* when not NULL: IDAT payloads concatenated here */
} scan_state;

static int check_plte(scan_state *s, const uint8_t *p, uint32_t n, char *err,
                      size_t errlen) {
  unsigned ct = s->hdr->color_type;
  if (ct == 0 || ct == 4)
    return errf(err, errlen, SL_EFORMAT, "PLTE: not allowed in a %s image",
                ct_name(ct));
  if (s->have_plte) return errf(err, errlen, SL_EFORMAT, "PLTE: duplicate");
  if (s->idat) return errf(err, errlen, SL_EFORMAT, "PLTE: after IDAT");
  if (s->have_trns) return errf(err, errlen, SL_EFORMAT, "PLTE: after tRNS");
  if (n == 0 || n % 3 != 0 || n > 768)
    return errf(err, errlen, SL_EFORMAT, "PLTE: invalid length %" PRIu32
                " (must be 3 to 768, a multiple of 3)", n);
  s->have_plte = 1;
  s->sc->plte = p;
  s->sc->plte_entries = n / 3;
  return 0;
}

/* tRNS changes the output format, so it is validated strictly: a malformed
 * or misplaced one rejects the file instead of being guessed at. */
static int check_trns(scan_state *s, const uint8_t *p, uint32_t n, char *err,
                      size_t errlen) {
  const sl_png_info *h = s->hdr;
  unsigned ct = h->color_type, depth = h->bit_depth;
  uint32_t maxv = depth == 16 ? 0xffff : (UINT32_C(1) << depth) - 1;
  if (ct == 4 || ct == 6)
    return errf(err, errlen, SL_EFORMAT, "tRNS: not allowed in a %s image "
                "(it has an alpha channel)", ct_name(ct));
  if (s->have_trns) return errf(err, errlen, SL_EFORMAT, "tRNS: duplicate");
  if (s->idat) return errf(err, errlen, SL_EFORMAT, "tRNS: after IDAT");
  if (ct == 3) {
    uint32_t cap = s->sc->plte_entries;
    if (!s->have_plte)
      return errf(err, errlen, SL_EFORMAT, "tRNS: before PLTE");
    if (cap > (UINT32_C(1) << depth)) cap = UINT32_C(1) << depth;
    if (n == 0 || n > cap)
      return errf(err, errlen, SL_EFORMAT, "tRNS: %" PRIu32 " entries for a "
                  "palette of %" PRIu32, n, cap);
  } else {
    uint32_t want = ct == 0 ? 2 : 6;
    if (n != want)
      return errf(err, errlen, SL_EFORMAT, "tRNS: length %" PRIu32
                  ", expected %" PRIu32, n, want);
    for (uint32_t i = 0; i < n; i += 2)
      if (be16(p + i) > maxv)
        return errf(err, errlen, SL_EFORMAT, "tRNS: sample %u out of range "
                    "for %u-bit samples", be16(p + i), depth);
  }
  s->have_trns = 1;
  s->sc->trns = p;
  s->sc->trns_len = n;
  return 0;
}

/* @return the exact length a known fixed-size ancillary chunk must have, or
 * -1 when its length is free (or the chunk is unknown). */
static long fixed_length(const scan_state *s, const uint8_t *t) {
  static const struct { char name[5]; long len; } fixed[] = {
      {"gAMA", 4}, {"cHRM", 32}, {"sRGB", 1}, {"pHYs", 9},
      {"tIME", 7}, {"oFFs", 9},  {"sTER", 1}};
  static const long sbit[7] = {1, 0, 3, 3, 2, 0, 4};
  static const long bkgd[7] = {2, 0, 6, 1, 2, 0, 6};
  unsigned ct = s->hdr->color_type;
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
    if (is_type(t, fixed[i].name)) return fixed[i].len;
  if (is_type(t, "sBIT")) return sbit[ct];
  if (is_type(t, "bKGD")) return bkgd[ct];
  if (is_type(t, "hIST")) return 2L * s->sc->plte_entries;
  return -1;
}

static int check_idat(scan_state *s, size_t at, uint32_t n, char *err,
                      size_t errlen) {
  if (s->idat == 2)
    return errf(err, errlen, SL_EFORMAT, "IDAT: not consecutive (other "
                "chunks between IDAT chunks)");
  if (s->hdr->color_type == 3 && !s->have_plte)
    return errf(err, errlen, SL_EFORMAT, "PLTE missing for palette image");
  if (s->idat == 0) s->sc->idat_at = at;
  s->idat = 1;
  /* copied right after its CRC was computed, while it is in cache; a
   * single IDAT is used where it lies, so copying starts at the second */
  if (s->gather && s->sc->idat_chunks == 1)
    memcpy(s->gather, s->file + s->sc->idat_at + 8, s->sc->idat_bytes);
  if (s->gather && s->sc->idat_chunks >= 1)
    memcpy(s->gather + s->sc->idat_bytes, s->file + at + 8, n);
  s->sc->idat_bytes += n;
  s->sc->idat_chunks++;
  return 0;
}

/* Handles one chunk whose bounds are checked. @return 0, 1 at IEND, or an
 * error. */
static int scan_chunk(scan_state *s, const uint8_t *b, size_t at, char *err,
                      size_t errlen) {
  uint32_t n = be32(b + at);
  const uint8_t *t = b + at + 4, *p = b + at + 8;
  int crc_ok = libdeflate_crc32(0, t, (size_t)n + 4) == be32(p + n);
  char tn[20];
  int critical = !(t[0] & 0x20);
  if (!crc_ok && (critical || is_type(t, "tRNS")))
    return errf(err, errlen, SL_EFORMAT, "%s: CRC mismatch", type_name(t, tn));
  if (is_type(t, "IDAT")) return check_idat(s, at, n, err, errlen);
  if (s->idat == 1) s->idat = 2;
  if (is_type(t, "IEND")) {
    if (s->idat == 0)
      return errf(err, errlen, SL_EFORMAT, "IDAT missing (IEND reached "
                  "without image data)");
    if (n != 0)
      return errf(err, errlen, SL_EFORMAT, "IEND: length %" PRIu32
                  ", expected 0", n);
    return 1;
  }
  if (is_type(t, "IHDR")) return errf(err, errlen, SL_EFORMAT, "IHDR: duplicate");
  if (is_type(t, "PLTE")) return check_plte(s, p, n, err, errlen);
  if (critical)
    return errf(err, errlen, SL_EFORMAT, "unknown critical chunk %s",
                type_name(t, tn));
  if (is_type(t, "tRNS")) return check_trns(s, p, n, err, errlen);
  long want = crc_ok ? fixed_length(s, t) : -1;
  if (want >= 0 && (long)n != want)
    return errf(err, errlen, SL_EFORMAT, "%s: length %" PRIu32 ", expected "
                "%ld", type_name(t, tn), n, want);
  return 0; /* other ancillary chunks (or one with a bad CRC): skipped */
}

/* Walks the chunks after IHDR up to IEND, checking every bound before use. */
static int scan_chunks(const uint8_t *b, size_t len, const sl_png_info *hdr,
                       png_scan *sc, uint8_t *gather, char *err,
                       size_t errlen) {
  scan_state s = {hdr, sc, 0, 0, 0, b, gather};
  size_t at = 33; /* signature + IHDR */
  char tn[20];
  for (;;) {
    if (len - at < 8)
      return errf(err, errlen, SL_EFORMAT, "truncated: file ends at byte %zu "
                  "before IEND", len);
    uint32_t n = be32(b + at);
    const uint8_t *t = b + at + 4;
    if (n > U31_MAX)
      return errf(err, errlen, SL_EFORMAT, "%s chunk at byte %zu: length %"
                  PRIu32 " exceeds 2^31-1", type_name(t, tn), at, n);
    type_name(t, tn);
    if (!type_ok(t))
      return errf(err, errlen, SL_EFORMAT, "invalid chunk type %s at byte %zu",
                  tn, at);
    if ((uint64_t)n + 4 > len - at - 8)
      return errf(err, errlen, SL_EFORMAT, "truncated: %s chunk at byte %zu "
                  "declares %" PRIu32 " bytes, the file has %zu left (CRC "
                  "included)", tn, at, n, len - at - 8);
    int rc = scan_chunk(&s, b, at, err, errlen);
    if (rc < 0) return rc;
    if (rc == 1) return 0;
    at += (size_t)n + 12;
  }
}

static int check_signature(const uint8_t *b, size_t len, char *err,
                           size_t errlen) {
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (len == 0) return errf(err, errlen, SL_EFORMAT, "empty file");
  if (len >= 8 && memcmp(b, sig, 8) == 0) return 0;
  if (len >= 8 && memcmp(b, sig, 4) == 0)
    return errf(err, errlen, SL_EFORMAT, "not a PNG file (signature corrupted,"
                " as by a text-mode transfer)");
  if (len < 8 && memcmp(b, sig, len) == 0)
    return errf(err, errlen, SL_EFORMAT, "truncated: file ends inside the PNG "
                "signature");
  return errf(err, errlen, SL_EFORMAT, "not a PNG file (bad signature)");
}

/* Sets channels/depth/stride from IHDR and the presence of tRNS. */
static void output_format(sl_png_info *info, int has_trns) {
  unsigned ct = info->color_type;
  static const uint32_t chans[7] = {1, 0, 3, 3, 2, 0, 4};
  info->channels = chans[ct] + (has_trns ? 1 : 0);
  info->depth = info->bit_depth == 16 ? 16 : 8;
  info->stride = (size_t)((uint64_t)info->width * info->channels *
                          (info->depth / 8));
}

static int check_ihdr_chunk(const uint8_t *b, size_t len, char *err,
                            size_t errlen) {
  char tn[20];
  if (len < 16)
    return errf(err, errlen, SL_EFORMAT, "truncated: file ends %s",
                len == 8 ? "right after the signature" : "inside IHDR");
  if (!is_type(b + 12, "IHDR"))
    return errf(err, errlen, SL_EFORMAT, "first chunk is %s, expected IHDR",
                type_name(b + 12, tn));
  if (be32(b + 8) != 13)
    return errf(err, errlen, SL_EFORMAT, "IHDR: length %" PRIu32
                ", expected 13", be32(b + 8));
  if (len < 33)
    return errf(err, errlen, SL_EFORMAT, "truncated: file ends inside IHDR");
  if (libdeflate_crc32(0, b + 12, 17) != be32(b + 29))
    return errf(err, errlen, SL_EFORMAT, "IHDR: CRC mismatch");
  return 0;
}

/* The whole validation behind probe and both decoders. With `gather` (at
 * least len bytes), the payloads of several IDAT chunks are concatenated
 * there on the way. */
static int scan_file(const uint8_t *b, size_t len, uint64_t max_pixels,
                     uint64_t max_bytes, sl_png_info *info, png_scan *sc,
                     uint8_t *gather, char *err, size_t errlen) {
  memset(info, 0, sizeof *info);
  memset(sc, 0, sizeof *sc);
  if (err && errlen) err[0] = '\0';
  int rc = check_signature(b, len, err, errlen);
  if (rc == 0) rc = check_ihdr_chunk(b, len, err, errlen);
  if (rc == 0) rc = parse_ihdr(b + 16, info, err, errlen);
  if (rc < 0) return rc;
  uint64_t px = (uint64_t)info->width * info->height;
  if (px > max_pixels)
    return errf(err, errlen, SL_ELIMIT, "image is %" PRIu32 "x%" PRIu32
                " = %" PRIu64 " pixels, above max_pixels=%" PRIu64,
                info->width, info->height, px, max_pixels);
  rc = scan_chunks(b, len, info, sc, gather, err, errlen);
  if (rc < 0) return rc;
  output_format(info, sc->trns != NULL);
  uint64_t stride = (uint64_t)info->width * info->channels * info->depth / 8;
  if (stride > max_bytes / info->height || stride > SIZE_MAX / 2 / info->height)
    return errf(err, errlen, SL_ELIMIT, "decoded image would take %" PRIu64
                " bytes (%" PRIu32 "x%" PRIu32 ", %" PRIu32 " x %" PRIu32
                "-bit channels), above max_bytes=%" PRIu64, stride *
                info->height, info->width, info->height, info->channels,
                info->depth, max_bytes);
  /* Rows that need no conversion can be inflated into the output buffer
   * itself and unfiltered in place (sl_png_decoder_decode_into). */
  info->work_bytes = stride * info->height;
  if (!info->interlace && info->bit_depth >= 8 && info->color_type != 3 &&
      !sc->trns)
    info->work_bytes += info->height;
  return 0;
}

int sl_png_probe(const void *buf, size_t len, uint64_t max_pixels,
                 uint64_t max_bytes, sl_png_info *info, char *err,
                 size_t errlen) {
  png_scan sc;
  if (!buf && len) return errf(err, errlen, SL_EINVAL, "no buffer");
  return scan_file(buf, len, max_pixels, max_bytes, info, &sc, NULL, err,
                   errlen);
}

static int same_format(const sl_png_info *a, const sl_png_info *b) {
  return a->width == b->width && a->height == b->height &&
         a->channels == b->channels && a->depth == b->depth &&
         a->stride == b->stride;
}

/* Re-validates buf and checks that *info still describes it (decode must
 * not trust a stale or foreign info for its buffer sizes). */
static int rescan(const void *buf, size_t len, const sl_png_info *info,
                  sl_png_info *fresh, png_scan *sc, char *err, size_t errlen) {
  if (!info || (!buf && len))
    return errf(err, errlen, SL_EINVAL, "no buffer or info");
  int rc = scan_file(buf, len, UINT64_MAX, UINT64_MAX, fresh, sc, NULL, err,
                     errlen);
  if (rc < 0) return rc;
  if (!same_format(fresh, info))
    return errf(err, errlen, SL_EINVAL, "decode: info (%" PRIu32 "x%" PRIu32
                ", %" PRIu32 "x%" PRIu32 "-bit) does not describe this buffer "
                "(%" PRIu32 "x%" PRIu32 ", %" PRIu32 "x%" PRIu32 "-bit)",
                info->width, info->height, info->channels, info->depth,
                fresh->width, fresh->height, fresh->channels, fresh->depth);
  return 0;
}

/* ---------------------------------------------------------------------
 * Fast path: geometry
 * --------------------------------------------------------------------- */

static const uint8_t adam7_x0[7] = {0, 4, 0, 2, 0, 1, 0};
static const uint8_t adam7_y0[7] = {0, 0, 4, 0, 2, 0, 1};
static const uint8_t adam7_dx[7] = {8, 8, 4, 4, 2, 2, 1};
static const uint8_t adam7_dy[7] = {8, 8, 8, 4, 4, 2, 2};

/* The sub-image of pass p (or the whole image for p < 0). */
static void pass_size(const sl_png_info *info, int p, uint32_t *pw,
                      uint32_t *ph) {
  if (p < 0) {
    *pw = info->width;
    *ph = info->height;
    return;
  }
  *pw = (uint32_t)(((uint64_t)info->width + adam7_dx[p] - 1 - adam7_x0[p]) /
                   adam7_dx[p]);
  *ph = (uint32_t)(((uint64_t)info->height + adam7_dy[p] - 1 - adam7_y0[p]) /
                   adam7_dy[p]);
}

static unsigned raw_bits(const sl_png_info *info) {
  static const unsigned samples[7] = {1, 0, 3, 1, 2, 0, 4};
  return samples[info->color_type] * info->bit_depth;
}

static size_t row_bytes(uint32_t w, unsigned bits) {
  return (size_t)(((uint64_t)w * bits + 7) / 8);
}

/* Bytes of filtered data (filter byte + row) the zlib stream must hold. */
static uint64_t raw_size(const sl_png_info *info) {
  unsigned bits = raw_bits(info);
  uint64_t total = 0;
  for (int p = info->interlace ? 0 : -1; p < (info->interlace ? 7 : 0); p++) {
    uint32_t pw, ph;
    pass_size(info, p, &pw, &ph);
    if (pw && ph) total += (uint64_t)ph * (1 + row_bytes(pw, bits));
  }
  return total;
}

/* ---------------------------------------------------------------------
 * Fast path: row conversion to the output format
 * --------------------------------------------------------------------- */

enum {
  CONV_COPY,      /* raw row is the output row (8-bit, no tRNS) */
  CONV_SWAP16,    /* 16-bit, no tRNS: big-endian to native */
  CONV_LOWGREY,   /* grey 1/2/4 bit -> grey8 (+ alpha with tRNS) */
  CONV_GREY8_KEY, /* grey8 + tRNS -> grey+alpha 8 */
  CONV_GREY16_KEY,
  CONV_RGB8_KEY,
  CONV_RGB16_KEY,
  CONV_PALETTE    /* 1/2/4/8-bit indices -> RGB8 / RGBA8 */
};

typedef struct fast_dec {
  const sl_png_info *info;
  unsigned bits;   /* bits per raw pixel */
  unsigned bpp;    /* filter distance: bytes per pixel, at least 1 */
  unsigned out_px; /* output bytes per pixel */
  int conv;
  int has_key;
  int simd;            /* SL_PNG_SIMD_* level of the unfilter kernels */
  uint16_t key[3];     /* tRNS colour key */
  uint8_t lut[256][4]; /* palette RGBA, or grey level of a low-depth sample */
} fast_dec;

static void setup_lut(fast_dec *d, const png_scan *sc) {
  const sl_png_info *info = d->info;
  memset(d->lut, 0, sizeof d->lut);
  if (info->color_type == 3) {
    for (uint32_t i = 0; i < 256; i++) {
      if (i < sc->plte_entries) memcpy(d->lut[i], sc->plte + 3 * i, 3);
      d->lut[i][3] = i < sc->trns_len ? sc->trns[i] : 255;
    }
  } else if (info->bit_depth < 8) {
    unsigned maxv = (1u << info->bit_depth) - 1;
    for (unsigned i = 0; i <= maxv; i++) d->lut[i][0] = (uint8_t)(i * 255 / maxv);
  }
}

static void setup_fast(fast_dec *d, const sl_png_info *info,
                       const png_scan *sc) {
  memset(d, 0, sizeof *d);
  d->info = info;
  d->bits = raw_bits(info);
  d->bpp = d->bits < 8 ? 1 : d->bits / 8;
  d->out_px = info->channels * info->depth / 8;
  d->has_key = sc->trns != NULL && info->color_type != 3;
  for (uint32_t i = 0; d->has_key && i < sc->trns_len / 2; i++)
    d->key[i] = be16(sc->trns + 2 * i);
  unsigned ct = info->color_type, bd = info->bit_depth;
  if (ct == 3)
    d->conv = CONV_PALETTE;
  else if (bd < 8)
    d->conv = CONV_LOWGREY;
  else if (!d->has_key)
    d->conv = bd == 16 ? CONV_SWAP16 : CONV_COPY;
  else if (ct == 0)
    d->conv = bd == 16 ? CONV_GREY16_KEY : CONV_GREY8_KEY;
  else
    d->conv = bd == 16 ? CONV_RGB16_KEY : CONV_RGB8_KEY;
  setup_lut(d, sc);
}

/* Sample x of a row packed at `depth` (1, 2, 4 or 8) bits, MSB first. */
static inline unsigned packed_sample(const uint8_t *row, uint32_t x,
                                     unsigned depth) {
  if (depth == 8) return row[x];
  size_t bit = (size_t)x * depth;
  return (row[bit >> 3] >> (8 - depth - (bit & 7))) & ((1u << depth) - 1);
}

static void conv_lowgrey(const fast_dec *d, const uint8_t *src, uint32_t n,
                         uint8_t *out) {
  unsigned depth = d->info->bit_depth;
  if (!d->has_key) {
    for (uint32_t x = 0; x < n; x++) out[x] = d->lut[packed_sample(src, x, depth)][0];
    return;
  }
  for (uint32_t x = 0; x < n; x++) {
    unsigned v = packed_sample(src, x, depth);
    out[2 * x] = d->lut[v][0];
    out[2 * x + 1] = v == d->key[0] ? 0 : 255;
  }
}

static void conv_palette(const fast_dec *d, const uint8_t *src, uint32_t n,
                         uint8_t *out) {
  unsigned depth = d->info->bit_depth;
  if (d->out_px == 4) {
    for (uint32_t x = 0; x < n; x++)
      memcpy(out + 4 * (size_t)x, d->lut[packed_sample(src, x, depth)], 4);
  } else {
    for (uint32_t x = 0; x < n; x++)
      memcpy(out + 3 * (size_t)x, d->lut[packed_sample(src, x, depth)], 3);
  }
}

/* 8-bit grey or RGB with a tRNS colour key: append alpha. */
static void conv_key8(const fast_dec *d, const uint8_t *src, uint32_t n,
                      uint8_t *out) {
  unsigned c = d->conv == CONV_RGB8_KEY ? 3 : 1;
  for (uint32_t x = 0; x < n; x++, src += c, out += c + 1) {
    int match = src[0] == d->key[0];
    if (c == 3) match = match && src[1] == d->key[1] && src[2] == d->key[2];
    memcpy(out, src, c);
    out[c] = match ? 0 : 255;
  }
}

static void conv_key16(const fast_dec *d, const uint8_t *src, uint32_t n,
                       uint8_t *out) {
  unsigned c = d->conv == CONV_RGB16_KEY ? 3 : 1;
  for (uint32_t x = 0; x < n; x++, src += 2 * c, out += 2 * (c + 1)) {
    int match = 1;
    for (unsigned i = 0; i < c; i++) {
      uint16_t v = be16(src + 2 * i);
      match = match && v == d->key[i];
      store16(out + 2 * i, v);
    }
    store16(out + 2 * c, match ? 0 : 0xffff);
  }
}

static void swap16(const uint8_t *src, size_t samples, uint8_t *out) {
  for (size_t i = 0; i < samples; i++) store16(out + 2 * i, be16(src + 2 * i));
}

/* Converts n unfiltered raw pixels at src into output pixels at out. */
static void convert_row(const fast_dec *d, const uint8_t *src, uint32_t n,
                        uint8_t *out) {
  switch (d->conv) {
  case CONV_COPY: memcpy(out, src, (size_t)n * d->out_px); break;
  case CONV_SWAP16: swap16(src, (size_t)n * d->info->channels, out); break;
  case CONV_LOWGREY: conv_lowgrey(d, src, n, out); break;
  case CONV_PALETTE: conv_palette(d, src, n, out); break;
  case CONV_GREY8_KEY: case CONV_RGB8_KEY: conv_key8(d, src, n, out); break;
  default: conv_key16(d, src, n, out); break;
  }
}

static int bad_filter(const sl_png_info *info, int pass, uint32_t y,
                      unsigned type, char *err, size_t errlen) {
  if (pass < 0)
    return errf(err, errlen, SL_EFORMAT, "row %" PRIu32 ": invalid filter "
                "type %u", y, type);
  return errf(err, errlen, SL_EFORMAT, "Adam7 pass %d row %" PRIu32
              ": invalid filter type %u (image %" PRIu32 "x%" PRIu32 ")",
              pass + 1, y, type, info->width, info->height);
}

/* ---------------------------------------------------------------------
 * Fast path: rows and passes
 * --------------------------------------------------------------------- */

/* Reconstructs the next rows -- eight (1-byte pixels, SSE4.1), four
 * (3/4-byte pixels, AVX2), two or one: as many as the kernels interleave
 * and have valid types; a bad type is
 * reported when its row comes first. in points at a filter byte, rows
 * follow at rb + 1 bytes; row j's output goes to out0 + j * ostride, or,
 * with tmp (in-place decoding, where a later row's output would overwrite
 * an earlier row's unread input), rows j >= 1 go through tmp[(j-1)*rb] and
 * are copied into place afterwards. @return rows done or SL_EFORMAT. */
static int unfilter_step(const fast_dec *d, const uint8_t *in, uint8_t *out0,
                         size_t ostride, uint8_t *tmp, const uint8_t *prior,
                         size_t rb, uint32_t left, int pass, uint32_t y,
                         char *err, size_t errlen) {
  unsigned t[8];
  uint8_t *out[8];
  const uint8_t *rows[8];
  int g = sl_png_unfilter_group(d->simd, d->bpp, rb);
  int k = left >= (uint32_t)g ? g : left >= 2 ? 2 : 1;
  for (int j = 0; j < k; j++) {
    t[j] = in[(size_t)j * (rb + 1)];
    rows[j] = in + (size_t)j * (rb + 1) + 1;
    out[j] = tmp && j ? tmp + (size_t)(j - 1) * rb : out0 + (size_t)j * ostride;
    if (t[j] > 4 && j == 0) return bad_filter(d->info, pass, y, t[0], err, errlen);
    if (t[j] > 4) k = j < 2 ? 1 : 2;
  }
  sl_png_unfilter_rows(d->simd, k, out, rows, t, prior, rb, d->bpp);
  for (int j = 1; tmp && j < k; j++) memcpy(out0 + (size_t)j * ostride, out[j], rb);
  return k;
}

/* Non-interlaced, raw format == output format (up to byte order): unfilter
 * from the inflated rows into dst, the previous dst row being the prior row.
 * 16-bit rows stay big-endian until the next row has used them.
 * In place (raw == dst, inflated there by sl_png_decoder_decode_into): row
 * y's input starts y + 1 bytes after its output, so reconstructing forward
 * never overwrites input not yet read -- except that the later rows of an
 * interleaved group would overwrite the tail of the earlier rows' input;
 * they go through `tmp` and are copied into place after the group. */
static int decode_direct(const fast_dec *d, const uint8_t *raw,
                         const uint8_t *zero, uint8_t *tmp, uint8_t *dst,
                         char *err, size_t errlen) {
  const sl_png_info *info = d->info;
  size_t rb = info->stride, samples = rb / 2;
  int inplace = raw == dst;
  const uint8_t *prior = zero;
  for (uint32_t y = 0; y < info->height;) {
    uint8_t *out = dst + (size_t)y * rb;
    int k = unfilter_step(d, raw + (size_t)y * (rb + 1), out, rb,
                          inplace ? tmp : NULL, prior, rb, info->height - y,
                          -1, y, err, errlen);
    if (k < 0) return k;
    /* rows y-1 .. y+k-2 are no longer anyone's prior */
    for (uint32_t r = y ? y - 1 : 0; d->conv == CONV_SWAP16 && r + 1 < y + k; r++)
      swap16(dst + (size_t)r * rb, samples, dst + (size_t)r * rb);
    prior = out + (size_t)(k - 1) * rb;
    y += (uint32_t)k;
  }
  if (d->conv == CONV_SWAP16)
    swap16(dst + (size_t)(info->height - 1) * rb, samples,
           dst + (size_t)(info->height - 1) * rb);
  return 0;
}

/* Copies pw pixels of `px` bytes from tmp to every dx-th pixel of row;
 * inlined per pixel size so each copy is a plain move. */
static inline __attribute__((always_inline)) void
spread(uint8_t *row, const uint8_t *tmp, uint32_t pw, size_t dx, size_t px) {
  for (uint32_t i = 0; i < pw; i++)
    memcpy(row + (size_t)i * dx * px, tmp + (size_t)i * px, px);
}

/* Copies the converted pixels of row y of pass p to their places in dst. */
static void scatter(const fast_dec *d, const uint8_t *tmp, uint32_t pw, int p,
                    uint32_t y, uint8_t *dst) {
  size_t px = d->out_px, dx = adam7_dx[p];
  uint8_t *row = dst + ((size_t)adam7_y0[p] + (size_t)y * adam7_dy[p]) *
                           d->info->stride + adam7_x0[p] * px;
  switch (px) {
  case 1: spread(row, tmp, pw, dx, 1); break;
  case 2: spread(row, tmp, pw, dx, 2); break;
  case 3: spread(row, tmp, pw, dx, 3); break;
  case 4: spread(row, tmp, pw, dx, 4); break;
  case 6: spread(row, tmp, pw, dx, 6); break;
  default: spread(row, tmp, pw, dx, 8); break;
  }
}

/* Unfilters the rows of one pass (p < 0: the whole image) in place in raw
 * and converts each into dst. @return 0 or SL_EFORMAT. */
static int decode_pass(const fast_dec *d, uint8_t *raw, int p,
                       const uint8_t *zero, uint8_t *tmp, uint8_t *dst,
                       char *err, size_t errlen) {
  uint32_t pw, ph;
  pass_size(d->info, p, &pw, &ph);
  size_t rb = row_bytes(pw, d->bits);
  const uint8_t *prior = zero;
  for (uint32_t y = 0; y < ph && pw > 0;) {
    uint8_t *row = raw + (size_t)y * (rb + 1);
    int k = unfilter_step(d, row, row + 1, rb + 1, NULL, prior, rb, ph - y,
                          p, y, err, errlen);
    if (k < 0) return k;
    for (int j = 0; j < k; j++, y++, row += rb + 1) {
      if (p < 0) {
        convert_row(d, row + 1, pw, dst + (size_t)y * d->info->stride);
      } else {
        convert_row(d, row + 1, pw, tmp);
        scatter(d, tmp, pw, p, y, dst);
      }
      prior = row + 1;
    }
  }
  return 0;
}

/* Turns the inflated rows into the output image. */
static int unfilter_image(const fast_dec *d, uint8_t *raw, uint8_t *dst,
                          char *err, size_t errlen) {
  const sl_png_info *info = d->info;
  size_t rb = row_bytes(info->width, d->bits);
  uint8_t *zero = calloc(1, rb + 1);
  /* tmp: an Adam7 row before scattering, or 7 rows of in-place decoding */
  uint8_t *tmp = malloc(7 * (info->stride > rb ? info->stride : rb));
  int rc = 0;
  if (!zero || !tmp) {
    rc = errf(err, errlen, SL_ENOMEM, "out of memory (row buffers)");
  } else if (!info->interlace &&
             (d->conv == CONV_COPY || d->conv == CONV_SWAP16)) {
    rc = decode_direct(d, raw, zero, tmp, dst, err, errlen);
  } else {
    for (int p = info->interlace ? 0 : -1; rc == 0 && p < (info->interlace ? 7 : 0); p++) {
      uint32_t pw, ph;
      pass_size(info, p, &pw, &ph);
      rc = decode_pass(d, raw, p, zero, tmp, dst, err, errlen);
      if (pw && ph) raw += (size_t)ph * (1 + row_bytes(pw, d->bits));
    }
  }
  free(zero);
  free(tmp);
  return rc;
}

/* ---------------------------------------------------------------------
 * Fast path: inflate
 * --------------------------------------------------------------------- */

/* "1234 of 5000 rows" (or bytes and pass for Adam7) for `done` raw bytes. */
static const char *progress(const sl_png_info *info, uint64_t done,
                            char *buf, size_t len) {
  if (!info->interlace) {
    uint64_t per_row = 1 + row_bytes(info->width, raw_bits(info));
    snprintf(buf, len, "%" PRIu64 " of %" PRIu32 " rows", done / per_row,
             info->height);
  } else {
    snprintf(buf, len, "%" PRIu64 " of %" PRIu64 " bytes (Adam7)", done,
             raw_size(info));
  }
  return buf;
}

/* Runs zlib over z[0..n) (32 KiB window, as libpng is configured) into a
 * scratch buffer until it stops or passes `want` bytes; *out gets the count.
 * @return zlib's last return code; the stream stays open for its message. */
static int inflate_count(z_stream *s, const uint8_t *z, size_t n,
                         uint64_t want, uint64_t *out) {
  uint8_t scratch[16384];
  size_t fed = 0;
  int ret;
  *out = 0;
  do {
    if (s->avail_in == 0 && fed < n) {
      size_t step = n - fed < (1u << 30) ? n - fed : (1u << 30);
      s->next_in = (Bytef *)(uintptr_t)(z + fed);
      s->avail_in = (uInt)step;
      fed += step;
    }
    s->next_out = scratch;
    s->avail_out = sizeof scratch;
    ret = inflate(s, Z_NO_FLUSH);
    *out += sizeof scratch - s->avail_out;
  } while (ret == Z_OK && *out <= want);
  return ret;
}

/* Names why the zlib stream z[0..n) did not inflate to exactly `want` bytes,
 * by running zlib over it into a scratch buffer. @return SL_EFORMAT (message
 * set), SL_ENOMEM, or 1 when zlib inflates it fine (libdeflate disagreed). */
static int diagnose_zlib(const uint8_t *z, size_t n, const sl_png_info *info,
                         uint64_t want, char *err, size_t errlen) {
  z_stream s;
  memset(&s, 0, sizeof s);
  if (inflateInit2(&s, 15) != Z_OK)
    return errf(err, errlen, SL_ENOMEM, "out of memory (zlib)");
  uint64_t out;
  int ret = inflate_count(&s, z, n, want, &out);
  const char *msg = s.msg ? s.msg : "invalid data";
  char where[96] = "all image rows"; /* errors past the rows libpng may miss */
  if (out < want) progress(info, out, where, sizeof where);
  int rc;
  if (out > want)
    rc = errf(err, errlen, SL_EFORMAT, "zlib stream: more image data than "
              "IHDR declares (%" PRIu64 " bytes expected)", want);
  else if (ret == Z_STREAM_END)
    rc = out == want ? 1 : errf(err, errlen, SL_EFORMAT, "truncated: image "
                                "data ends after %s", where);
  else if (ret == Z_BUF_ERROR && out == want)
    rc = errf(err, errlen, SL_EFORMAT, "truncated: zlib stream incomplete "
              "after all image rows (end marker or adler32 missing)");
  else if (ret == Z_BUF_ERROR)
    rc = errf(err, errlen, SL_EFORMAT, "truncated: IDAT data ends after %s",
              where);
  else if (ret == Z_MEM_ERROR)
    rc = errf(err, errlen, SL_ENOMEM, "out of memory (zlib)");
  else if (ret == Z_NEED_DICT)
    rc = errf(err, errlen, SL_EFORMAT, "zlib stream: preset dictionary (not "
              "allowed in PNG)");
  else if (strcmp(msg, "incorrect data check") == 0)
    rc = errf(err, errlen, SL_EFORMAT, "zlib stream: adler32 mismatch");
  else
    rc = errf(err, errlen, SL_EFORMAT, "zlib stream: %s (after %s)", msg,
              where);
  inflateEnd(&s);
  return rc;
}

/* A decode context: the libdeflate decompressor and the two big scratch
 * buffers, kept between calls so that a worker decoding a stream of images
 * neither re-creates the decompressor nor faults in fresh pages for every
 * image (on the VMs we measured, first-touching 36 MB costs ~50 ms, more than
 * inflating it). Buffers larger than `retain` are freed after each call. */
struct sl_png_decoder {
  struct libdeflate_decompressor *dc;
  uint8_t *raw; /* inflated, still filtered rows */
  size_t raw_cap;
  uint8_t *idat; /* IDAT payloads concatenated (when there are several) */
  size_t idat_cap;
  size_t retain;
  int simd; /* unfilter kernels: SL_PNG_SIMD_*, the CPU's best by default */
  /* what sl_png_decoder_probe() found, for the decode that follows */
  int probed;
  const void *probed_buf;
  size_t probed_len;
  sl_png_info probed_info;
  png_scan probed_sc; /* with several IDAT chunks, idat holds them */
  uint8_t probed_crcs[8]; /* IHDR's and the first IDAT's CRC, see below */
};

sl_png_decoder *sl_png_decoder_create(size_t retain_bytes) {
  sl_png_decoder *dec = calloc(1, sizeof *dec);
  if (!dec) return NULL;
  dec->dc = libdeflate_alloc_decompressor();
  if (!dec->dc) {
    free(dec);
    return NULL;
  }
  dec->retain = retain_bytes;
  dec->simd = sl_png_simd_best();
  return dec;
}

void sl_png_decoder_set_simd(sl_png_decoder *dec, int level) {
  int best = sl_png_simd_best();
  if (dec) dec->simd = level < 0 ? 0 : level > best ? best : level;
}

void sl_png_decoder_destroy(sl_png_decoder *dec) {
  if (!dec) return;
  libdeflate_free_decompressor(dec->dc);
  free(dec->raw);
  free(dec->idat);
  free(dec);
}

/* @return a buffer of at least `need` bytes in *p (grown, never copied).
 * It grows to at least twice its size (up to `retain`) and 1/8 above the
 * need, so a run of images does not regrow it, and re-fault every page of
 * a fresh allocation, for each slightly larger one. */
static uint8_t *scratch(uint8_t **p, size_t *cap, size_t need, size_t retain) {
  if (*p && *cap >= need) return *p;
  free(*p);
  size_t want = need + (need < SIZE_MAX / 2 ? need / 8 : 0);
  size_t twice = *cap < SIZE_MAX / 2 ? 2 * *cap : SIZE_MAX;
  if (want < twice && twice <= retain) want = twice;
  *p = malloc(want ? want : 1);
  *cap = *p ? want : 0;
  return *p;
}

static void release_big(sl_png_decoder *dec) {
  if (dec->raw_cap > dec->retain) {
    free(dec->raw);
    dec->raw = NULL;
    dec->raw_cap = 0;
  }
  if (dec->idat_cap > dec->retain) {
    free(dec->idat);
    dec->idat = NULL;
    dec->idat_cap = 0;
  }
}

/* Two CRCs of a scanned file, compared before a probe's scan is trusted
 * for a decode: a cheap guard against a caller that swapped the buffer for
 * another of the same address and length in between. */
static void probe_crcs(const uint8_t *b, const png_scan *sc, uint8_t out[8]) {
  memcpy(out, b + 29, 4);
  memcpy(out + 4, b + sc->idat_at + 8 + be32(b + sc->idat_at), 4);
}

int sl_png_decoder_probe(sl_png_decoder *dec, const void *buf, size_t len,
                         uint64_t max_pixels, uint64_t max_bytes,
                         sl_png_info *info, char *err, size_t errlen) {
  if (!dec || (!buf && len))
    return errf(err, errlen, SL_EINVAL, "no decoder or buffer");
  dec->probed = 0;
  uint8_t *g = scratch(&dec->idat, &dec->idat_cap, len, dec->retain);
  if (!g) return errf(err, errlen, SL_ENOMEM, "out of memory (%zu bytes for "
                      "IDAT data)", len);
  int rc = scan_file(buf, len, max_pixels, max_bytes, info, &dec->probed_sc,
                     g, err, errlen);
  if (rc < 0) {
    release_big(dec);
    return rc;
  }
  dec->probed = 1;
  dec->probed_buf = buf;
  dec->probed_len = len;
  dec->probed_info = *info;
  probe_crcs(buf, &dec->probed_sc, dec->probed_crcs);
  return 0;
}

/* The IDAT payloads as one buffer: in place when there is a single IDAT,
 * already gathered by sl_png_decoder_probe(), else copied into the
 * decoder's scratch. NULL when out of memory. */
static const uint8_t *gather_idat(sl_png_decoder *dec, const uint8_t *b,
                                  const png_scan *sc, int gathered) {
  if (sc->idat_chunks == 1) return b + sc->idat_at + 8;
  if (gathered) return dec->idat;
  uint8_t *z =
      scratch(&dec->idat, &dec->idat_cap, sc->idat_bytes, dec->retain);
  if (!z) return NULL;
  size_t at = sc->idat_at, off = 0;
  for (uint32_t i = 0; i < sc->idat_chunks; i++) {
    uint32_t n = be32(b + at);
    memcpy(z + off, b + at + 8, n);
    off += n;
    at += (size_t)n + 12;
  }
  return z;
}

/* True when the zlib stream ended `used` bytes into the IDAT data but not at
 * the end of an IDAT chunk. Whole IDAT chunks after the stream's end are
 * ignored, stray bytes inside the stream's last chunk are an error: exactly
 * libpng's rule (with its benign errors fatal), so both paths agree. */
static int stray_after_stream(const uint8_t *b, const png_scan *sc,
                              size_t used) {
  size_t at = sc->idat_at, end = 0;
  for (uint32_t i = 0; i < sc->idat_chunks && end < used; i++) {
    uint32_t n = be32(b + at);
    end += n;
    at += (size_t)n + 12;
  }
  return end != used;
}

/* Inflates all IDAT data into raw[0..want). @return 0, 1 when libpng must
 * decode instead, SL_EFORMAT or SL_ENOMEM. */
static int inflate_idat(sl_png_decoder *dec, const uint8_t *b,
                        const png_scan *sc, int gathered,
                        const sl_png_info *info, uint8_t *raw, size_t want,
                        char *err, size_t errlen) {
  const uint8_t *z = gather_idat(dec, b, sc, gathered);
  if (!z) return errf(err, errlen, SL_ENOMEM, "out of memory (%zu bytes of "
                      "IDAT data)", sc->idat_bytes);
  size_t used = 0;
  enum libdeflate_result r = libdeflate_zlib_decompress_ex(
      dec->dc, z, sc->idat_bytes, raw, want, &used, NULL);
  if (r != LIBDEFLATE_SUCCESS)
    return diagnose_zlib(z, sc->idat_bytes, info, want, err, errlen);
  if (stray_after_stream(b, sc, used))
    return errf(err, errlen, SL_EFORMAT, "IDAT: stray bytes after the end of "
                "the zlib stream (%zu of %zu IDAT bytes used)", used,
                sc->idat_bytes);
  return 0;
}

static int fast_decode(sl_png_decoder *dec, const uint8_t *b,
                       const sl_png_info *info, const png_scan *sc,
                       int gathered, uint8_t *dst, size_t dst_cap, char *err,
                       size_t errlen) {
  size_t want = (size_t)raw_size(info);
  int inplace = info->work_bytes > info->stride * info->height &&
                dst_cap >= want;
  uint8_t *raw =
      inplace ? dst : scratch(&dec->raw, &dec->raw_cap, want, dec->retain);
  if (!raw) return errf(err, errlen, SL_ENOMEM, "out of memory (%zu bytes of "
                        "image data)", want);
  int rc = inflate_idat(dec, b, sc, gathered, info, raw, want, err, errlen);
  if (rc == 0) {
    fast_dec d;
    setup_fast(&d, info, sc);
    d.simd = dec->simd;
    rc = unfilter_image(&d, raw, dst, err, errlen);
  }
  return rc;
}

static int libpng_decode(const uint8_t *b, size_t len, const sl_png_info *info,
                         uint8_t *dst, char *err, size_t errlen);

int sl_png_decoder_decode_into(sl_png_decoder *dec, const void *buf,
                               size_t len, const sl_png_info *info, void *dst,
                               size_t dst_cap, char *err, size_t errlen) {
  sl_png_info fresh;
  png_scan sc;
  if (!dec) return errf(err, errlen, SL_EINVAL, "no decoder");
  /* right after sl_png_decoder_probe() of this buffer, its scan (and the
   * IDAT data it gathered) stands in for a second validation pass */
  uint8_t crcs[8];
  int gathered = dec->probed && buf == dec->probed_buf &&
                 len == dec->probed_len && info &&
                 same_format(info, &dec->probed_info);
  if (gathered) probe_crcs(buf, &dec->probed_sc, crcs);
  gathered = gathered && memcmp(crcs, dec->probed_crcs, 8) == 0;
  dec->probed = 0;
  int rc = 0;
  if (gathered) {
    fresh = dec->probed_info;
    sc = dec->probed_sc;
  } else {
    rc = rescan(buf, len, info, &fresh, &sc, err, errlen);
  }
  if (rc < 0) return rc;
  if (dst_cap < fresh.stride * fresh.height)
    return errf(err, errlen, SL_EINVAL, "decode: output buffer of %zu bytes, "
                "%zu needed", dst_cap, fresh.stride * fresh.height);
  rc = fast_decode(dec, buf, &fresh, &sc, gathered, dst, dst_cap, err,
                   errlen);
  release_big(dec);
  if (rc == 1) /* zlib accepts what libdeflate refused: let libpng decide */
    rc = libpng_decode(buf, len, &fresh, dst, err, errlen);
  return rc;
}

int sl_png_decoder_decode(sl_png_decoder *dec, const void *buf, size_t len,
                          const sl_png_info *info, void *dst, char *err,
                          size_t errlen) {
  size_t cap = info ? info->stride * info->height : 0;
  return sl_png_decoder_decode_into(dec, buf, len, info, dst, cap, err,
                                    errlen);
}

int sl_png_decode(const void *buf, size_t len, const sl_png_info *info,
                  void *dst, char *err, size_t errlen) {
  sl_png_decoder *dec = sl_png_decoder_create(0);
  if (!dec) return errf(err, errlen, SL_ENOMEM, "out of memory (decoder)");
  int rc = sl_png_decoder_decode(dec, buf, len, info, dst, err, errlen);
  sl_png_decoder_destroy(dec);
  return rc;
}

/* ---------------------------------------------------------------------
 * Reference path: libpng
 * --------------------------------------------------------------------- */

/* Per-call state reachable from libpng's callbacks. */
typedef struct lp_ctx {
  const uint8_t *buf;
  size_t len, pos;
  char *err;
  size_t errlen;
  int code; /* what lp_run returns after a longjmp */
} lp_ctx;

static void lp_error(png_structp png, png_const_charp msg) {
  lp_ctx *c = png_get_error_ptr(png);
  if (!msg) msg = "libpng error";
  /* libpng says "Out of Memory" / "insufficient memory" when malloc fails */
  c->code = strstr(msg, "emory") ? SL_ENOMEM : SL_EFORMAT;
  errf(c->err, c->errlen, c->code, "%s", msg);
  png_longjmp(png, 1);
}

/* Warnings left after our settings (an ancillary chunk's CRC) are not
 * errors; they are dropped rather than printed. */
static void lp_warning(png_structp png, png_const_charp msg) {
  (void)png;
  (void)msg;
}

static void lp_read(png_structp png, png_bytep out, size_t n) {
  lp_ctx *c = png_get_io_ptr(png);
  if (n > c->len - c->pos) png_error(png, "truncated: read beyond end of data");
  memcpy(out, c->buf + c->pos, n);
  c->pos += n;
}

/* Limits and strictness: see the file comment. No chunk is stored, so no
 * per-chunk allocation limit is needed beyond PLTE/tRNS's own sizes (a lower
 * chunk_malloc_max would make libpng refuse legitimate large iCCP/iTXt
 * chunks that it never reads). */
static void lp_configure(png_structp png) {
  png_set_user_limits(png, U31_MAX, U31_MAX);
  png_set_chunk_malloc_max(png, 0);
  png_set_chunk_cache_max(png, 0);
  png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, -1);
  png_set_benign_errors(png, 0);
  png_set_check_for_invalid_index(png, 0);
  png_set_option(png, PNG_MAXIMUM_INFLATE_WINDOW, PNG_OPTION_ON);
}

/* Everything between setjmp and the end of the image; a libpng error
 * longjmps back here. No local is modified after setjmp and used after the
 * jump, and nothing is allocated outside libpng's structs. */
static int lp_run(png_structp png, png_infop pi, const lp_ctx *ctx,
                  const sl_png_info *info, uint8_t *dst) {
  if (setjmp(png_jmpbuf(png))) return ctx->code;
  png_read_info(png, pi);
  int ct = png_get_color_type(png, pi), bd = png_get_bit_depth(png, pi);
  if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (ct == PNG_COLOR_TYPE_GRAY && bd < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, pi, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  const uint16_t one = 1;
  if (bd == 16 && *(const uint8_t *)&one == 1) png_set_swap(png);
  int passes = png_set_interlace_handling(png);
  png_read_update_info(png, pi);
  if (png_get_rowbytes(png, pi) != info->stride ||
      png_get_channels(png, pi) != info->channels ||
      png_get_bit_depth(png, pi) != info->depth)
    png_error(png, "internal: libpng output format differs from probe's");
  for (int p = 0; p < passes; p++)
    for (uint32_t y = 0; y < info->height; y++)
      png_read_row(png, dst + (size_t)y * info->stride, NULL);
  png_read_end(png, pi);
  return 0;
}

static int libpng_decode(const uint8_t *b, size_t len, const sl_png_info *info,
                         uint8_t *dst, char *err, size_t errlen) {
  lp_ctx ctx = {b, len, 0, err, errlen, SL_EFORMAT};
  png_structp png =
      png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, lp_error, lp_warning);
  if (!png) return errf(err, errlen, SL_ENOMEM, "out of memory (libpng)");
  png_infop pi = png_create_info_struct(png);
  if (!pi) {
    png_destroy_read_struct(&png, NULL, NULL);
    return errf(err, errlen, SL_ENOMEM, "out of memory (libpng)");
  }
  lp_configure(png);
  png_set_read_fn(png, &ctx, lp_read);
  int rc = lp_run(png, pi, &ctx, info, dst);
  png_destroy_read_struct(&png, &pi, NULL);
  return rc;
}

int sl_png_decode_libpng(const void *buf, size_t len, const sl_png_info *info,
                         void *dst, char *err, size_t errlen) {
  sl_png_info fresh;
  png_scan sc;
  int rc = rescan(buf, len, info, &fresh, &sc, err, errlen);
  if (rc < 0) return rc;
  return libpng_decode(buf, len, &fresh, dst, err, errlen);
}
