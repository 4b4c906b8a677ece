/*
 * test_png.c -- PNG decoder (io/png_read.c) and encoder (io/png_write.c).
 *
 * Decode tests, in the block below:
 *  - conformance: PngSuite (every must-decode file hashed as RGBA8 against
 *    EXPECTED_RGBA8_SHA256.txt, through both the fast and the libpng path;
 *    every x* file rejected), the libspng crashers in png-hostile/, and the
 *    generated hostile cases with their manifest. Data is read from
 *    $SLUICE_SHARED/conformance at run time (ctest sets it).
 *  - unit: images synthesised here from random samples -- every colour
 *    type, bit depth, interlace, tRNS, random row filters, IDAT split at
 *    random -- decoded by both paths and compared with this file's own
 *    normalisation of the samples; error messages; limits; and a
 *    differential fuzz (thousands of deterministic mutations: both paths
 *    must agree on accept/reject and, when they accept, on every byte).
 *  - stress: several threads decoding at once (TSan).
 * The encoder's cases (png_write.c) follow the decode block; the case table
 * at the bottom lists both.
 */
#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../io/png_internal.h"
#include "sluice.h"
#include "test.h"

/* =====================================================================
 * DECODE TESTS (png_read.c) -- begin
 * ===================================================================== */

/* ---- small self-contained helpers: SHA-256, CRC-32, Adler-32 ---------- */

typedef struct sha256 {
  uint32_t h[8];
  uint8_t block[64];
  size_t fill;
  uint64_t total;
} sha256;

static const uint32_t sha_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
    0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t ror32(uint32_t x, int n) { return x >> n | x << (32 - n); }

static void sha_block(sha256 *s, const uint8_t *p) {
  uint32_t w[64], v[8];
  for (int i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
           (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ w[i - 15] >> 3;
    uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ w[i - 2] >> 10;
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  memcpy(v, s->h, sizeof v);
  for (int i = 0; i < 64; i++) {
    uint32_t t1 = v[7] + (ror32(v[4], 6) ^ ror32(v[4], 11) ^ ror32(v[4], 25)) +
                  ((v[4] & v[5]) ^ (~v[4] & v[6])) + sha_k[i] + w[i];
    uint32_t t2 = (ror32(v[0], 2) ^ ror32(v[0], 13) ^ ror32(v[0], 22)) +
                  ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
    memmove(v + 1, v, 7 * sizeof v[0]);
    v[4] += t1;
    v[0] = t1 + t2;
  }
  for (int i = 0; i < 8; i++) s->h[i] += v[i];
}

static void sha_init(sha256 *s) {
  static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372,
                                 0xa54ff53a, 0x510e527f, 0x9b05688c,
                                 0x1f83d9ab, 0x5be0cd19};
  memcpy(s->h, h0, sizeof h0);
  s->fill = 0;
  s->total = 0;
}

static void sha_update(sha256 *s, const void *data, size_t n) {
  const uint8_t *p = data;
  s->total += n;
  while (n > 0) {
    size_t take = 64 - s->fill < n ? 64 - s->fill : n;
    memcpy(s->block + s->fill, p, take);
    s->fill += take;
    p += take;
    n -= take;
    if (s->fill == 64) {
      sha_block(s, s->block);
      s->fill = 0;
    }
  }
}

/* Writes the digest as 64 lowercase hex digits + NUL. */
static void sha_hex(sha256 *s, char out[65]) {
  uint64_t bits = s->total * 8;
  uint8_t pad = 0x80, len[8];
  sha_update(s, &pad, 1);
  pad = 0;
  while (s->fill != 56) sha_update(s, &pad, 1);
  for (int i = 0; i < 8; i++) len[i] = (uint8_t)(bits >> (56 - 8 * i));
  sha_update(s, len, 8);
  for (int i = 0; i < 8; i++) snprintf(out + 8 * i, 9, "%08x", s->h[i]);
}

static uint32_t crc32_of(const uint8_t *p, size_t n) {
  static uint32_t table[256];
  static int ready; /* benign: every thread computes the same table */
  if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
      __atomic_store_n(&table[i], c, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
  }
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; i++)
    c = __atomic_load_n(&table[(c ^ p[i]) & 0xff], __ATOMIC_RELAXED) ^ (c >> 8);
  return c ^ 0xffffffffu;
}

static uint32_t adler32_of(const uint8_t *p, size_t n) {
  uint32_t a = 1, b = 0;
  for (size_t i = 0; i < n; i++) {
    a = (a + p[i]) % 65521;
    b = (b + a) % 65521;
  }
  return b << 16 | a;
}

/* Deterministic PRNG (splitmix64) so every failure reproduces. */
static uint64_t rnd_next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint32_t rnd_below(uint64_t *s, uint32_t n) {
  return n ? (uint32_t)(rnd_next(s) % n) : 0;
}

/* ---- growable byte buffer and PNG writing ------------------------------ */

typedef struct bytes {
  uint8_t *p;
  size_t n, cap;
} bytes;

static void put(bytes *b, const void *data, size_t n) {
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2 + 64;
    b->p = realloc(b->p, b->cap);
    ASSERT(b->p != NULL);
  }
  if (n) memcpy(b->p + b->n, data, n);
  b->n += n;
}

static void put_be32(bytes *b, uint32_t v) {
  uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8),
                  (uint8_t)v};
  put(b, x, 4);
}

static void put_chunk(bytes *b, const char *type, const uint8_t *data,
                      size_t n) {
  put_be32(b, (uint32_t)n);
  size_t at = b->n;
  put(b, type, 4);
  put(b, data, n);
  put_be32(b, crc32_of(b->p + at, n + 4));
}

static void put_sig(bytes *b) {
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  put(b, sig, 8);
}

static void put_ihdr(bytes *b, uint32_t w, uint32_t h, unsigned depth,
                     unsigned ct, unsigned interlace) {
  uint8_t d[13] = {(uint8_t)(w >> 24), (uint8_t)(w >> 16), (uint8_t)(w >> 8),
                   (uint8_t)w, (uint8_t)(h >> 24), (uint8_t)(h >> 16),
                   (uint8_t)(h >> 8), (uint8_t)h, (uint8_t)depth, (uint8_t)ct,
                   0, 0, (uint8_t)interlace};
  put_chunk(b, "IHDR", d, 13);
}

/* A zlib stream of stored (uncompressed) blocks: valid, and independent of
 * any compressor we might be testing against. */
static void zlib_stored(bytes *z, const uint8_t *raw, size_t n) {
  static const uint8_t hdr[2] = {0x78, 0x01};
  put(z, hdr, 2);
  size_t at = 0;
  do {
    size_t take = n - at > 65535 ? 65535 : n - at;
    uint8_t bh[5] = {(uint8_t)(at + take == n), (uint8_t)take,
                     (uint8_t)(take >> 8), (uint8_t)~take,
                     (uint8_t)(~take >> 8)};
    put(z, bh, 5);
    put(z, raw + at, take);
    at += take;
  } while (at < n);
  put_be32(z, adler32_of(raw, n));
}

/* ---- synthetic images: random samples, our own expected output -------- */

typedef struct synth {
  uint32_t w, h;
  unsigned ct, depth, interlace;
  int trns;        /* add a tRNS chunk */
  unsigned plte_n; /* palette entries */
  uint16_t *samples; /* w*h*nsamp raw sample values */
  uint8_t plte[768], trns_data[256];
  uint16_t key[3];
} synth;

static unsigned nsamp(unsigned ct) {
  static const unsigned n[7] = {1, 0, 3, 1, 2, 0, 4};
  return n[ct];
}

static void synth_random(synth *s, uint64_t *rng) {
  size_t n = (size_t)s->w * s->h * nsamp(s->ct);
  uint32_t maxv = s->depth == 16 ? 0xffff : (1u << s->depth) - 1;
  if (s->ct == 3) {
    s->plte_n = 1 + rnd_below(rng, 1u << s->depth);
    maxv = s->plte_n - 1;
    for (unsigned i = 0; i < 3 * s->plte_n; i++)
      s->plte[i] = (uint8_t)rnd_next(rng);
    for (unsigned i = 0; i < 256; i++) s->trns_data[i] = (uint8_t)rnd_next(rng);
  }
  s->samples = malloc((n ? n : 1) * sizeof *s->samples);
  ASSERT(s->samples != NULL);
  /* Few distinct values so that the tRNS colour key matches some pixels. */
  int few = rnd_below(rng, 2);
  for (size_t i = 0; i < n; i++)
    s->samples[i] = (uint16_t)(few ? rnd_below(rng, 3) * (maxv / 2)
                                   : rnd_below(rng, maxv + 1));
  for (unsigned c = 0; c < 3; c++)
    s->key[c] = s->samples[c % (n ? n : 1)];
  if (s->ct == 0) s->key[0] = s->samples[0];
}

/* Packs row y's pixels x0, x0+dx, ... (count pw) into PNG raw bytes. */
static void pack_row(const synth *s, uint32_t y, uint32_t x0, uint32_t dx,
                     uint32_t pw, uint8_t *out) {
  unsigned ns = nsamp(s->ct);
  size_t bits = 0;
  memset(out, 0, ((size_t)pw * ns * s->depth + 7) / 8);
  for (uint32_t i = 0; i < pw; i++) {
    const uint16_t *px = s->samples + ((size_t)y * s->w + x0 + i * dx) * ns;
    for (unsigned c = 0; c < ns; c++, bits += s->depth) {
      if (s->depth == 16) {
        out[bits / 8] = (uint8_t)(px[c] >> 8);
        out[bits / 8 + 1] = (uint8_t)px[c];
      } else {
        out[bits / 8] |= (uint8_t)(px[c] << (8 - s->depth - bits % 8));
      }
    }
  }
}

static uint8_t paeth_ref(int a, int b, int c) {
  int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
  return (uint8_t)(pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
}

/* Appends filter byte + filtered `cur` (n bytes) to raw. */
static void filter_row(bytes *raw, unsigned type, const uint8_t *cur,
                       const uint8_t *prev, size_t n, unsigned bpp) {
  uint8_t t = (uint8_t)type;
  put(raw, &t, 1);
  for (size_t i = 0; i < n; i++) {
    int a = i >= bpp ? cur[i - bpp] : 0, b = prev[i];
    int c = i >= bpp ? prev[i - bpp] : 0, pred = 0;
    if (type == 1) pred = a;
    if (type == 2) pred = b;
    if (type == 3) pred = (a + b) / 2;
    if (type == 4) pred = paeth_ref(a, b, c);
    uint8_t v = (uint8_t)(cur[i] - pred);
    put(raw, &v, 1);
  }
}

static const uint32_t a7_x0[7] = {0, 4, 0, 2, 0, 1, 0};
static const uint32_t a7_y0[7] = {0, 0, 4, 0, 2, 0, 1};
static const uint32_t a7_dx[7] = {8, 8, 4, 4, 2, 2, 1};
static const uint32_t a7_dy[7] = {8, 8, 8, 4, 4, 2, 2};

/* The filtered image data (all passes) with random filter types. */
static void synth_raw(const synth *s, bytes *raw, uint64_t *rng) {
  unsigned bits = nsamp(s->ct) * s->depth, bpp = bits < 8 ? 1 : bits / 8;
  size_t maxrb = ((size_t)s->w * bits + 7) / 8;
  uint8_t *cur = malloc(maxrb + 1), *prev = malloc(maxrb + 1);
  ASSERT(cur && prev);
  for (int p = s->interlace ? 0 : -1; p < (s->interlace ? 7 : 0); p++) {
    uint32_t x0 = p < 0 ? 0 : a7_x0[p], y0 = p < 0 ? 0 : a7_y0[p];
    uint32_t dx = p < 0 ? 1 : a7_dx[p], dy = p < 0 ? 1 : a7_dy[p];
    uint32_t pw = s->w > x0 ? (s->w - x0 + dx - 1) / dx : 0;
    size_t rb = ((size_t)pw * bits + 7) / 8;
    memset(prev, 0, maxrb + 1);
    for (uint32_t y = y0; pw > 0 && y < s->h; y += dy) {
      pack_row(s, y, x0, dx, pw, cur);
      filter_row(raw, rnd_below(rng, 5), cur, prev, rb, bpp);
      memcpy(prev, cur, rb);
    }
  }
  free(cur);
  free(prev);
}

/* The whole PNG file; IDAT split into chunks of random sizes. */
static void synth_png(const synth *s, bytes *png, uint64_t *rng) {
  bytes raw = {0}, z = {0};
  synth_raw(s, &raw, rng);
  zlib_stored(&z, raw.p, raw.n);
  put_sig(png);
  put_ihdr(png, s->w, s->h, s->depth, s->ct, s->interlace);
  if (s->ct == 3) put_chunk(png, "PLTE", s->plte, 3 * s->plte_n);
  if (s->trns) {
    uint8_t k[6];
    for (int i = 0; i < 3; i++) {
      k[2 * i] = (uint8_t)(s->key[i] >> 8);
      k[2 * i + 1] = (uint8_t)s->key[i];
    }
    if (s->ct == 3)
      put_chunk(png, "tRNS", s->trns_data, 1 + rnd_below(rng, s->plte_n));
    else
      put_chunk(png, "tRNS", k, s->ct == 0 ? 2 : 6);
  }
  for (size_t at = 0; at < z.n;) {
    size_t take = 1 + rnd_below(rng, (uint32_t)(z.n - at));
    put_chunk(png, "IDAT", z.p + at, take);
    at += take;
  }
  put_chunk(png, "IEND", NULL, 0);
  free(raw.p);
  free(z.p);
}

static void put_sample(uint8_t *out, unsigned depth, uint16_t v) {
  if (depth == 16)
    memcpy(out, &v, 2);
  else
    *out = (uint8_t)v;
}

/* What the decoder must produce, computed independently from the samples:
 * the normalisation documented in png_internal.h. */
static uint8_t *synth_expected(const synth *s, const uint8_t *trns_chunk,
                               size_t trns_len, size_t *size) {
  unsigned ns = nsamp(s->ct), od = s->depth == 16 ? 16 : 8, ob = od / 8;
  unsigned och = s->ct == 3 ? 3 : ns;
  if (trns_chunk) och++;
  *size = (size_t)s->w * s->h * och * ob;
  uint8_t *out = malloc(*size ? *size : 1), *o = out;
  ASSERT(out != NULL);
  unsigned scale = s->depth < 8 ? 255 / ((1u << s->depth) - 1) : 1;
  for (size_t i = 0; i < (size_t)s->w * s->h; i++) {
    const uint16_t *px = s->samples + i * ns;
    if (s->ct == 3) {
      memcpy(o, s->plte + 3 * px[0], 3);
      o += 3;
      if (trns_chunk) *o++ = px[0] < trns_len ? trns_chunk[px[0]] : 255;
      continue;
    }
    int match = 1;
    for (unsigned c = 0; c < ns; c++, o += ob) {
      put_sample(o, od, (uint16_t)(s->ct == 0 ? px[c] * scale : px[c]));
      match = match && c < 3 && px[c] == s->key[c];
    }
    if (trns_chunk) {
      put_sample(o, od, match ? 0 : (od == 16 ? 0xffff : 255));
      o += ob;
    }
  }
  return out;
}

/* ---- decoding helpers --------------------------------------------------- */

/* Result of probe + decode through one path. */
typedef struct decoded {
  int rc;           /* 0, or the first failing call's code */
  int probe_rc;
  sl_png_info info;
  uint8_t *px;      /* NULL unless rc == 0 */
  char err[256];
} decoded;

typedef int (*decode_fn)(const void *, size_t, const sl_png_info *, void *,
                         char *, size_t);

static void decode_with(const uint8_t *buf, size_t len, decode_fn fn,
                        uint64_t max_pixels, uint64_t max_bytes, decoded *d) {
  memset(d, 0, sizeof *d);
  d->rc = d->probe_rc = sl_png_probe(buf, len, max_pixels, max_bytes, &d->info,
                                     d->err, sizeof d->err);
  if (d->rc < 0) return;
  size_t n = d->info.stride * d->info.height;
  ASSERT_EQ(d->info.stride, (size_t)d->info.width * d->info.channels *
                                d->info.depth / 8);
  d->px = malloc(n);
  ASSERT(d->px != NULL);
  d->rc = fn(buf, len, &d->info, d->px, d->err, sizeof d->err);
  if (d->rc < 0) {
    free(d->px);
    d->px = NULL;
  }
}

static void decode_default(const uint8_t *buf, size_t len, decode_fn fn,
                           decoded *d) {
  decode_with(buf, len, fn, SL_PNG_DEFAULT_MAX_PIXELS, SL_PNG_DEFAULT_MAX_BYTES,
              d);
}

/* SHA-256 of the decoded image as RGBA8 (16-bit: high byte; grey: g,g,g). */
static void rgba8_sha(const decoded *d, char out[65]) {
  const sl_png_info *in = &d->info;
  sha256 s;
  sha_init(&s);
  unsigned ch = in->channels, bs = in->depth / 8;
  for (uint32_t y = 0; y < in->height; y++) {
    const uint8_t *row = d->px + (size_t)y * in->stride;
    for (uint32_t x = 0; x < in->width; x++) {
      uint8_t v[4] = {0};
      for (unsigned c = 0; c < ch; c++) {
        const uint8_t *p = row + ((size_t)x * ch + c) * bs;
        uint16_t s16;
        if (bs == 2) memcpy(&s16, p, 2);
        v[c] = bs == 2 ? (uint8_t)(s16 >> 8) : *p;
      }
      uint8_t rgba[4] = {v[0], v[0], v[0], 255};
      if (ch == 2) rgba[3] = v[1];
      if (ch >= 3) memcpy(rgba, v, ch);
      sha_update(&s, rgba, 4);
    }
  }
  sha_hex(&s, out);
}

static const char *shared_dir(void) {
  const char *d = getenv("SLUICE_SHARED");
  struct stat st;
  if (!d || !*d)
    SL__FAIL("SLUICE_SHARED is not set: run through ctest, or export "
             "SLUICE_SHARED=/path/to/shared (the folder holding conformance/)");
  char probe[4096];
  snprintf(probe, sizeof probe, "%s/conformance", d);
  if (stat(probe, &st) != 0 || !S_ISDIR(st.st_mode))
    SL__FAIL("conformance data missing: %s is not a directory "
             "(SLUICE_SHARED=%s)", probe, d);
  return d;
}

static uint8_t *load_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) SL__FAIL("cannot open %s", path);
  bytes b = {0};
  uint8_t tmp[65536];
  size_t n;
  while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) put(&b, tmp, n);
  fclose(f);
  *len = b.n;
  if (!b.p) b.p = malloc(1);
  return b.p;
}

static uint8_t *load_conf(const char *sub, const char *name, size_t *len) {
  char path[4096];
  snprintf(path, sizeof path, "%s/conformance/%s/%s", shared_dir(), sub, name);
  return load_file(path, len);
}

/* ---- PngSuite ----------------------------------------------------------- */

static void pngsuite_check(decode_fn fn, const char *path_name) {
  size_t len;
  char *list = (char *)load_conf("pngsuite", "EXPECTED_RGBA8_SHA256.txt", &len);
  list = realloc(list, len + 1);
  list[len] = '\0';
  int files = 0;
  for (char *line = strtok(list, "\n"); line; line = strtok(NULL, "\n")) {
    char name[64], want[65];
    unsigned w, h, bd, ct, il;
    if (line[0] == '#') continue;
    ASSERT_EQ(sscanf(line, "%63s %u %u %u %u %u %64s", name, &w, &h, &bd, &ct,
                     &il, want), 7);
    size_t n;
    uint8_t *buf = load_conf("pngsuite", name, &n);
    decoded d;
    decode_default(buf, n, fn, &d);
    if (d.rc != 0) SL__FAIL("%s (%s path): %s", name, path_name, d.err);
    ASSERT_EQ(d.info.width, w);
    ASSERT_EQ(d.info.height, h);
    ASSERT_EQ(d.info.bit_depth, bd);
    ASSERT_EQ(d.info.color_type, ct);
    ASSERT_EQ(d.info.interlace, il);
    char got[65];
    rgba8_sha(&d, got);
    if (strcmp(got, want) != 0)
      SL__FAIL("%s (%s path): RGBA8 sha256 %s, expected %s", name, path_name,
               got, want);
    free(d.px);
    free(buf);
    files++;
  }
  ASSERT_EQ(files, 161);
  free(list);
}

TEST(png_decode_pngsuite_fast) { pngsuite_check(sl_png_decode, "fast"); }

TEST(png_decode_pngsuite_libpng) {
  pngsuite_check(sl_png_decode_libpng, "libpng");
}

/* Rejected through both paths, with a message. @return the fast path's
 * result (probe or decode) for further checks. */
static void expect_reject(const char *what, const uint8_t *buf, size_t len,
                          decoded *fast) {
  decoded lp;
  decode_default(buf, len, sl_png_decode, fast);
  decode_default(buf, len, sl_png_decode_libpng, &lp);
  if (fast->rc == 0) SL__FAIL("%s: fast path accepted a file it must reject", what);
  if (lp.rc == 0) SL__FAIL("%s: libpng path accepted a file it must reject", what);
  if (!fast->err[0] || !lp.err[0]) SL__FAIL("%s: empty error message", what);
  ASSERT(fast->rc == SL_EFORMAT || fast->rc == SL_ELIMIT);
  free(lp.px);
}

TEST(png_decode_pngsuite_rejects) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/conformance/pngsuite", shared_dir());
  DIR *dp = opendir(dir);
  ASSERT(dp != NULL);
  struct dirent *e;
  int count = 0;
  while ((e = readdir(dp)) != NULL) {
    size_t nl = strlen(e->d_name);
    if (e->d_name[0] != 'x' || nl < 4 || strcmp(e->d_name + nl - 4, ".png"))
      continue;
    size_t n;
    uint8_t *buf = load_conf("pngsuite", e->d_name, &n);
    decoded d;
    expect_reject(e->d_name, buf, n, &d);
    fprintf(stderr, "  %s: %s\n", e->d_name, d.err);
    free(buf);
    count++;
  }
  closedir(dp);
  ASSERT_EQ(count, 14);
}

/* ---- hostile inputs ----------------------------------------------------- */

/* Decodes through both paths; they must agree byte for byte. @return the
 * fast result (caller frees px). */
static void expect_decode(const char *what, const uint8_t *buf, size_t len,
                          decoded *fast) {
  decoded lp;
  decode_default(buf, len, sl_png_decode, fast);
  decode_default(buf, len, sl_png_decode_libpng, &lp);
  if (fast->rc != 0) SL__FAIL("%s: fast path failed: %s", what, fast->err);
  if (lp.rc != 0) SL__FAIL("%s: libpng path failed: %s", what, lp.err);
  ASSERT(memcmp(fast->px, lp.px, fast->info.stride * fast->info.height) == 0);
  free(lp.px);
}

/* Our decisions for the manifest's "policy" cases (documented in
 * png_internal.h): 1 decode, 0 reject. */
static int policy_for(const char *file) {
  static const struct { const char *file; int decode; } table[] = {
      {"bomb_20000x20000_gray1.png", 0}, /* max_pixels */
      {"no_iend.png", 0},                /* IEND required */
      {"bad_crc_text_ancillary.png", 1}, /* bad ancillary CRC: chunk ignored */
      {"idat_extra_data.png", 0},        /* more data than IHDR declares */
      {"palette_index_out_of_range.png", 1}, /* opaque black, like libpng */
      {"ztxt_bomb_64MiB.png", 1},        /* zTXt never inflated */
      {"many_text_chunks_5000.png", 1},  /* text never stored */
  };
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
    if (strcmp(table[i].file, file) == 0) return table[i].decode;
  SL__FAIL("no policy decided for %s: add it to policy_for()", file);
}

/* Copies the string value of "key" in [p, end) into out; 0 if absent. */
static int json_field(const char *p, const char *end, const char *key,
                      char *out, size_t n) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\": \"", key);
  const char *k = strstr(p, pat);
  if (!k || k >= end) return 0;
  k += strlen(pat);
  const char *q = strchr(k, '"');
  ASSERT(q != NULL && (size_t)(q - k) < n);
  memcpy(out, k, (size_t)(q - k));
  out[q - k] = '\0';
  return 1;
}

/* Checks one manifest entry; @return 1 if it was expected to decode. */
static int hostile_case(const char *file, const char *expect,
                        const char *sha) {
  size_t n;
  uint8_t *buf = load_conf("hostile/generated/png", file, &n);
  int want = strcmp(expect, "decode") == 0 ? 1
             : strcmp(expect, "reject") == 0 ? 0 : policy_for(file);
  decoded d;
  if (want) {
    expect_decode(file, buf, n, &d);
    char got[65];
    rgba8_sha(&d, got);
    if (sha[0] && strcmp(got, sha) != 0)
      SL__FAIL("%s: RGBA8 sha256 %s, expected %s", file, got, sha);
    /* hostile images are small: no decode allocates much */
    ASSERT_LE(d.info.stride * d.info.height, 1 << 20);
    free(d.px);
  } else {
    expect_reject(file, buf, n, &d);
    fprintf(stderr, "  %s: %s\n", file, d.err);
  }
  free(buf);
  return want;
}

TEST(png_decode_hostile_generated) {
  size_t len;
  char *json = (char *)load_conf("hostile/generated/png", "png_manifest.json",
                                 &len);
  json = realloc(json, len + 1);
  json[len] = '\0';
  int cases = 0, decodes = 0;
  for (char *p = strstr(json, "\"file\": \""); p;) {
    char *next = strstr(p + 1, "\"file\": \"");
    const char *end = next ? next : json + len;
    char file[128], expect[32], sha[80] = "";
    ASSERT(json_field(p, end, "file", file, sizeof file));
    ASSERT(json_field(p, end, "expect", expect, sizeof expect));
    json_field(p, end, "rgba8_sha256", sha, sizeof sha);
    decodes += hostile_case(file, expect, sha);
    cases++;
    p = next;
  }
  ASSERT_EQ(cases, 30);
  ASSERT_EQ(decodes, 7);
  free(json);
}

TEST(png_decode_hostile_libspng) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/conformance/png-hostile", shared_dir());
  DIR *dp = opendir(dir);
  ASSERT(dp != NULL);
  struct dirent *e;
  int count = 0;
  while ((e = readdir(dp)) != NULL) {
    size_t nl = strlen(e->d_name);
    if (nl < 4 || strcmp(e->d_name + nl - 4, ".png") != 0) continue;
    size_t n;
    uint8_t *buf = load_conf("png-hostile", e->d_name, &n);
    decoded d;
    if (!strcmp(e->d_name, "icc_profile.png") || !strcmp(e->d_name, "unknown.png")) {
      expect_decode(e->d_name, buf, n, &d);
      free(d.px);
    } else {
      expect_reject(e->d_name, buf, n, &d);
      fprintf(stderr, "  %s: %s\n", e->d_name, d.err);
      /* the huge_* chunks are refused by the scan, before any allocation */
      if (!strncmp(e->d_name, "huge_", 5)) ASSERT(d.probe_rc < 0);
    }
    free(buf);
    count++;
  }
  closedir(dp);
  ASSERT_EQ(count, 29);
}

/* Dimension bombs are refused by probe (SL_ELIMIT): decode never runs, so
 * nothing of the declared size is ever allocated. */
TEST(png_probe_limits) {
  static const char *const bombs[] = {"bomb_20000x20000_gray1.png",
                                      "dims_100000x100000_gray8.png",
                                      "dims_2147483647x1_rgb8.png"};
  for (size_t i = 0; i < 3; i++) {
    size_t n;
    uint8_t *buf = load_conf("hostile/generated/png", bombs[i], &n);
    sl_png_info info;
    char err[256];
    ASSERT_EQ(sl_png_probe(buf, n, SL_PNG_DEFAULT_MAX_PIXELS,
                           SL_PNG_DEFAULT_MAX_BYTES, &info, err, sizeof err),
              SL_ELIMIT);
    ASSERT_CONTAINS(err, "above max_pixels=178956970");
    free(buf);
  }
  size_t n;
  uint8_t *buf = load_conf("hostile/generated/png", "bomb_20000x20000_gray1.png", &n);
  sl_png_info info;
  char err[256];
  ASSERT_EQ(sl_png_probe(buf, n, 400000000, UINT64_MAX, &info, err, sizeof err), 0);
  ASSERT_EQ(info.channels, 1);
  ASSERT_EQ(sl_png_probe(buf, n, 400000000, 399999999, &info, err, sizeof err),
            SL_ELIMIT);
  ASSERT_CONTAINS(err, "decoded image would take 400000000 bytes");
  ASSERT_EQ(info.width, 20000);
  free(buf);
}

/* ---- synthetic images: every format against our own expectation ------- */

static void synth_check_one(synth *s, uint64_t *rng) {
  bytes png = {0};
  synth_png(s, &png, rng);
  /* find the tRNS payload actually written (palette: random length) */
  const uint8_t *trns = NULL;
  size_t trns_len = 0;
  for (size_t at = 8; at + 12 <= png.n;) {
    uint32_t n = (uint32_t)png.p[at] << 24 | png.p[at + 1] << 16 |
                 png.p[at + 2] << 8 | png.p[at + 3];
    if (!memcmp(png.p + at + 4, "tRNS", 4)) {
      trns = png.p + at + 8;
      trns_len = n;
    }
    at += n + 12;
  }
  size_t size;
  uint8_t *want = synth_expected(s, trns, trns_len, &size);
  decoded f, l;
  decode_default(png.p, png.n, sl_png_decode, &f);
  decode_default(png.p, png.n, sl_png_decode_libpng, &l);
  if (f.rc || l.rc)
    SL__FAIL("synth %ux%u ct %u depth %u il %u trns %d: fast \"%s\", libpng "
             "\"%s\"", s->w, s->h, s->ct, s->depth, s->interlace, s->trns,
             f.err, l.err);
  ASSERT_EQ(f.info.stride * f.info.height, size);
  if (memcmp(f.px, want, size) || memcmp(l.px, want, size))
    SL__FAIL("synth %ux%u ct %u depth %u il %u trns %d: pixels differ (fast "
             "%d, libpng %d)", s->w, s->h, s->ct, s->depth, s->interlace,
             s->trns, memcmp(f.px, want, size) != 0,
             memcmp(l.px, want, size) != 0);
  free(f.px);
  free(l.px);
  free(want);
  free(png.p);
}

TEST(png_decode_synth_all_formats) {
  static const unsigned combos[][2] = {{0, 1}, {0, 2}, {0, 4}, {0, 8},
                                       {0, 16}, {2, 8}, {2, 16}, {3, 1},
                                       {3, 2}, {3, 4}, {3, 8}, {4, 8},
                                       {4, 16}, {6, 8}, {6, 16}};
  uint64_t rng = 42;
  int images = 0;
  for (size_t c = 0; c < sizeof combos / sizeof combos[0]; c++)
    for (unsigned il = 0; il < 2; il++)
      for (int trns = 0; trns < 2; trns++) {
        if (trns && (combos[c][0] == 4 || combos[c][0] == 6)) continue;
        for (int k = 0; k < 12; k++) {
          synth s = {0};
          s.ct = combos[c][0];
          s.depth = combos[c][1];
          s.interlace = il;
          s.trns = trns;
          s.w = 1 + rnd_below(&rng, k < 6 ? 9 : 70);
          s.h = 1 + rnd_below(&rng, k < 6 ? 9 : 40);
          synth_random(&s, &rng);
          synth_check_one(&s, &rng);
          free(s.samples);
          images++;
        }
      }
  ASSERT(images > 500);
}

/* ---- messages, argument checks ------------------------------------------ */

/* A valid 8x8 PNG (RGB8, or 1-entry-per-pixel palette) with None filters;
 * raw_rows limits how many rows' data the zlib stream holds, extra appends
 * rows beyond, bad_filter (when non-zero) is written as row 3's filter. */
static void small_png(bytes *png, unsigned ct, uint32_t raw_rows,
                      uint32_t extra, int plte, int iend, uint8_t bad_filter) {
  uint32_t w = 8, h = 8;
  unsigned ch = ct == 3 ? 1 : 3;
  bytes raw = {0}, z = {0};
  for (uint32_t y = 0; y < raw_rows + extra; y++) {
    uint8_t row[1 + 8 * 3] = {0};
    for (unsigned i = 1; i <= w * ch; i++) row[i] = (uint8_t)(y * 16 + i);
    if (ct == 3)
      for (unsigned i = 1; i <= w; i++) row[i] = (uint8_t)(i % 2);
    if (y == 3) row[0] = bad_filter;
    put(&raw, row, 1 + w * ch);
  }
  zlib_stored(&z, raw.p, raw.n);
  put_sig(png);
  put_ihdr(png, w, h, 8, ct, 0);
  if (plte) {
    static const uint8_t pal[6] = {255, 0, 0, 0, 0, 255};
    put_chunk(png, "PLTE", pal, 6);
  }
  put_chunk(png, "IDAT", z.p, z.n);
  if (iend) put_chunk(png, "IEND", NULL, 0);
  free(raw.p);
  free(z.p);
}

/* Offset of the first chunk of `type`, or 0. */
static size_t find_chunk(const bytes *png, const char *type) {
  for (size_t at = 8; at + 12 <= png->n;) {
    uint32_t n = (uint32_t)png->p[at] << 24 | png->p[at + 1] << 16 |
                 png->p[at + 2] << 8 | png->p[at + 3];
    if (!memcmp(png->p + at + 4, type, 4)) return at;
    if (n > png->n - at - 12) return 0;
    at += (size_t)n + 12;
  }
  return 0;
}

static void fix_crc(bytes *png, size_t at) {
  uint32_t n = (uint32_t)png->p[at] << 24 | png->p[at + 1] << 16 |
               png->p[at + 2] << 8 | png->p[at + 3];
  uint32_t c = crc32_of(png->p + at + 4, (size_t)n + 4);
  uint8_t *q = png->p + at + 8 + n;
  q[0] = (uint8_t)(c >> 24);
  q[1] = (uint8_t)(c >> 16);
  q[2] = (uint8_t)(c >> 8);
  q[3] = (uint8_t)c;
}

/* Fast-path message for png must contain `needle`; libpng must reject too. */
static void expect_message(const bytes *png, const char *needle) {
  decoded d;
  expect_reject(needle, png->p, png->n, &d);
  ASSERT_CONTAINS(d.err, needle);
}

TEST(png_decode_messages) {
  bytes png = {0};
  small_png(&png, 2, 8, 0, 0, 1, 0);
  decoded ok;
  expect_decode("small", png.p, png.n, &ok);
  free(ok.px);

  png.p[1] = 'Q';
  expect_message(&png, "not a PNG file (bad signature)");
  png.p[1] = 'P';
  size_t ihdr = find_chunk(&png, "IHDR"), idat = find_chunk(&png, "IDAT");
  memset(png.p + ihdr + 8, 0, 4);
  fix_crc(&png, ihdr);
  expect_message(&png, "IHDR: width is 0");
  png.p[ihdr + 11] = 8;
  fix_crc(&png, ihdr);
  png.p[idat + 20] ^= 1;
  expect_message(&png, "IDAT: CRC mismatch");
  png.p[idat + 20] ^= 1;
  uint32_t zn = (uint32_t)png.p[idat] << 24 | png.p[idat + 1] << 16 |
                png.p[idat + 2] << 8 | png.p[idat + 3];
  png.p[idat + 8 + zn - 1] ^= 0x40; /* last adler32 byte */
  fix_crc(&png, idat);
  expect_message(&png, "zlib stream: adler32 mismatch");
  free(png.p);

  png = (bytes){0};
  small_png(&png, 2, 8, 0, 0, 1, 9);
  expect_message(&png, "row 3: invalid filter type 9");
  free(png.p);
  png = (bytes){0};
  small_png(&png, 2, 4, 0, 0, 1, 0);
  expect_message(&png, "truncated: image data ends after 4 of 8 rows");
  free(png.p);
  png = (bytes){0};
  small_png(&png, 2, 8, 1, 0, 1, 0);
  expect_message(&png, "zlib stream: more image data than IHDR declares");
  free(png.p);
  png = (bytes){0};
  small_png(&png, 2, 8, 0, 0, 0, 0);
  expect_message(&png, "before IEND");
  png.n -= 30;
  expect_message(&png, "truncated: IDAT chunk at byte 33 declares");
  free(png.p);
  png = (bytes){0};
  small_png(&png, 3, 8, 0, 0, 1, 0);
  expect_message(&png, "PLTE missing for palette image");
  free(png.p);

  /* data after the end of the zlib stream: stray bytes inside the stream's
   * last IDAT chunk are an error, a whole IDAT chunk after it is ignored */
  png = (bytes){0};
  small_png(&png, 2, 8, 0, 0, 0, 0);
  bytes tail = {0};
  put(&tail, png.p + 33, png.n - 33); /* the IDAT chunk */
  png.n = 33;
  static const uint8_t junk[3] = {1, 2, 3};
  put_chunk(&png, "IDAT", junk, 3);
  put_chunk(&png, "IEND", NULL, 0);
  bytes stray = {0};
  put(&stray, png.p, 33);
  put(&stray, tail.p, tail.n); /* stream, then a whole extra IDAT: accepted */
  put(&stray, png.p + 33, png.n - 33);
  expect_decode("IDAT after the zlib stream", stray.p, stray.n, &ok);
  free(ok.px);
  size_t zl = tail.n - 12; /* now the junk inside the stream's chunk */
  stray.n = 33;
  put_be32(&stray, (uint32_t)zl + 3);
  put(&stray, tail.p + 4, 4 + zl);
  put(&stray, junk, 3);
  put_be32(&stray, crc32_of(stray.p + 37, zl + 7));
  put_chunk(&stray, "IEND", NULL, 0);
  expect_message(&stray, "stray bytes after the end of the zlib stream");
  free(stray.p);
  free(tail.p);
  free(png.p);
}

/* Truncating a valid stream mid-way: the message says how far it got. */
TEST(png_decode_truncated_rows) {
  synth s = {0};
  uint64_t rng = 7;
  s.ct = 2;
  s.depth = 8;
  s.w = 64;
  s.h = 50;
  synth_random(&s, &rng);
  bytes raw = {0}, z = {0}, png = {0};
  synth_raw(&s, &raw, &rng);
  zlib_stored(&z, raw.p, raw.n);
  put_sig(&png);
  put_ihdr(&png, s.w, s.h, 8, 2, 0);
  put_chunk(&png, "IDAT", z.p, 2 + 5 + 20 * (1 + 64 * 3) + 7); /* 20 rows + */
  put_chunk(&png, "IEND", NULL, 0);
  expect_message(&png, "truncated: IDAT data ends after 20 of 50 rows");
  free(s.samples);
  free(raw.p);
  free(z.p);
  free(png.p);
}

TEST(png_decode_info_mismatch) {
  bytes a = {0}, b = {0};
  small_png(&a, 2, 8, 0, 0, 1, 0);
  small_png(&b, 3, 8, 0, 1, 1, 0);
  sl_png_info ia, ib;
  char err[256];
  ASSERT_EQ(sl_png_probe(a.p, a.n, 100, 1000, &ia, err, sizeof err), 0);
  ASSERT_EQ(sl_png_probe(b.p, b.n, 100, 1000, &ib, err, sizeof err), 0);
  ASSERT_EQ(ib.channels, 3);
  ib.width = 4; /* a stale info must not make decode overrun dst */
  uint8_t *dst = malloc(ia.stride * ia.height);
  ASSERT_EQ(sl_png_decode(b.p, b.n, &ib, dst, err, sizeof err), SL_EINVAL);
  ASSERT_EQ(sl_png_decode_libpng(b.p, b.n, &ib, dst, err, sizeof err), SL_EINVAL);
  ASSERT_CONTAINS(err, "does not describe");
  /* err may be NULL */
  ASSERT_EQ(sl_png_probe(a.p, 3, 100, 1000, &ia, NULL, 0), SL_EFORMAT);
  ASSERT_EQ(sl_png_probe(a.p, 0, 100, 1000, &ia, err, sizeof err), SL_EFORMAT);
  ASSERT_STREQ(err, "empty file");
  /* a 1-byte err buffer still gets its terminator */
  err[0] = 'x';
  ASSERT_EQ(sl_png_probe(a.p, 3, 100, 1000, &ia, err, 1), SL_EFORMAT);
  ASSERT_EQ(err[0], 0);
  free(dst);
  free(a.p);
  free(b.p);
}

/* ---- differential fuzz ---------------------------------------------------- */

typedef struct chunk_pos {
  size_t at;
  uint32_t len;
} chunk_pos;

/* Lists the chunks of a (valid) PNG. @return how many. */
static size_t list_chunks(const uint8_t *p, size_t n, chunk_pos *out,
                          size_t max) {
  size_t k = 0;
  for (size_t at = 8; at + 12 <= n && k < max;) {
    uint32_t len = (uint32_t)p[at] << 24 | p[at + 1] << 16 | p[at + 2] << 8 |
                   p[at + 3];
    if (len > n - at - 12) break;
    out[k++] = (chunk_pos){at, len};
    at += (size_t)len + 12;
  }
  return k;
}

/* Inserts a small random chunk (of a type that matters) before chunk c. */
static void insert_chunk(const uint8_t *src, size_t n, chunk_pos c, bytes *m,
                         uint64_t *rng, char *what, size_t wl) {
  static const char *const types[] = {"tRNS", "PLTE", "IHDR", "IEND", "IDAT",
                                      "bKGD", "sBIT", "gAMA", "abCD", "tEXt"};
  const char *t = types[rnd_below(rng, 10)];
  uint8_t data[24];
  size_t len = rnd_below(rng, 2) ? rnd_below(rng, 9) : 3 * rnd_below(rng, 8);
  for (size_t i = 0; i < len; i++)
    data[i] = (uint8_t)(rnd_below(rng, 2) ? rnd_below(rng, 3) : rnd_next(rng));
  m->n = c.at;
  put_chunk(m, t, data, len);
  put(m, src + c.at, n - c.at);
  snprintf(what, wl, "insert %s (%zu bytes) at %zu", t, len, c.at);
}

/* One deterministic mutation of src into *m; describes it in `what`. */
static void mutate_once(const uint8_t *src, size_t n, bytes *m, uint64_t *rng,
                        char *what, size_t wl) {
  chunk_pos ch[512];
  size_t nch = list_chunks(src, n, ch, 512);
  m->n = 0;
  put(m, src, n);
  unsigned kind = nch ? rnd_below(rng, 11) : (n ? 0 : 4);
  chunk_pos c = nch ? ch[rnd_below(rng, (uint32_t)nch)] : (chunk_pos){0, 0};
  size_t pos = rnd_below(rng, (uint32_t)n);
  if (kind == 0 && n > 0) { /* raw bit flip, CRC left as is */
    m->p[pos] ^= (uint8_t)(1u << rnd_below(rng, 8));
    snprintf(what, wl, "flip bit at %zu", pos);
  } else if (kind <= 3 && n > 0) { /* change a payload byte, fix the CRC */
    if (kind == 3) /* aim at image data most of the time */
      for (size_t i = 0; i < nch; i++)
        if (!memcmp(src + ch[i].at + 4, "IDAT", 4) && rnd_below(rng, 2)) c = ch[i];
    size_t off = c.at + 8 + rnd_below(rng, c.len ? c.len : 1);
    if (c.len) m->p[off] ^= (uint8_t)(1 + rnd_below(rng, 255));
    fix_crc(m, c.at);
    snprintf(what, wl, "change byte %zu in chunk at %zu, CRC fixed", off, c.at);
  } else if (kind == 4) {
    m->n = pos;
    snprintf(what, wl, "truncate to %zu", pos);
  } else if (kind == 5) { /* edit a length field */
    uint32_t v = rnd_below(rng, 2) ? c.len + rnd_below(rng, 9) - 4
                                   : (uint32_t)rnd_next(rng);
    for (int i = 0; i < 4; i++) m->p[c.at + i] = (uint8_t)(v >> (24 - 8 * i));
    snprintf(what, wl, "length of chunk at %zu set to %u", c.at, v);
  } else if (kind == 6) { /* duplicate a chunk after itself */
    m->n = c.at + 12 + c.len;
    put(m, src + c.at, n - c.at);
    snprintf(what, wl, "duplicate chunk at %zu", c.at);
  } else if (kind == 7) { /* drop a chunk */
    m->n = c.at;
    put(m, src + c.at + 12 + c.len, n - c.at - 12 - c.len);
    snprintf(what, wl, "drop chunk at %zu", c.at);
  } else if (kind == 8) { /* change the chunk type, fix the CRC */
    m->p[c.at + 4 + rnd_below(rng, 4)] ^= rnd_below(rng, 2) ? 0x20 : 0x01;
    fix_crc(m, c.at);
    snprintf(what, wl, "retype chunk at %zu, CRC fixed", c.at);
  } else if (kind == 9) {
    insert_chunk(src, n, c, m, rng, what, wl);
  } else { /* grow a chunk: bytes inserted into its payload, CRC fixed */
    uint32_t add = 1 + rnd_below(rng, 4), off = rnd_below(rng, c.len + 1);
    uint8_t junk[4] = {(uint8_t)rnd_next(rng), 0, 3, 0xff};
    m->n = c.at + 8 + off;
    put(m, junk, add);
    put(m, src + c.at + 8 + off, n - c.at - 8 - off);
    uint32_t len = c.len + add;
    for (int i = 0; i < 4; i++) m->p[c.at + i] = (uint8_t)(len >> (24 - 8 * i));
    fix_crc(m, c.at);
    snprintf(what, wl, "insert %u bytes at %u in chunk at %zu", add, off, c.at);
  }
}

/* One to three stacked mutations of src into *m. */
static void mutate(const uint8_t *src, size_t n, bytes *m, uint64_t *rng,
                   char *what, size_t wl) {
  unsigned times = 1 + (rnd_below(rng, 4) == 0) + (rnd_below(rng, 8) == 0);
  bytes cur = {0};
  put(&cur, src, n);
  size_t used = 0;
  for (unsigned i = 0; i < times; i++) {
    mutate_once(cur.p, cur.n, m, rng, what + used, wl - used);
    used += strlen(what + used);
    if (used + 3 < wl && i + 1 < times) used += (size_t)snprintf(what + used, wl - used, "; ");
    cur.n = 0;
    put(&cur, m->p, m->n);
  }
  free(cur.p);
}

static int fast_stricter; /* cases of the documented difference below */

/* Both paths on one buffer: same verdict, same pixels. @return 1 if
 * accepted. */
static int differential(const uint8_t *p, size_t n, const char *seed,
                        const char *what) {
  decoded f, l;
  decode_with(p, n, sl_png_decode, 1 << 22, 1 << 26, &f);
  decode_with(p, n, sl_png_decode_libpng, 1 << 22, 1 << 26, &l);
  /* Documented difference: the fast path checks the zlib stream to its end;
   * libpng stops after the last row when the rest of the stream (Adler-32,
   * end marker, stray bytes after it) sits in a later IDAT chunk, so it may
   * accept damage there. */
  if (f.rc == SL_EFORMAT && l.rc == 0 &&
      (strstr(f.err, "adler32 mismatch") || strstr(f.err, "after all image rows") ||
       strstr(f.err, "after the end of the zlib stream"))) {
    free(l.px);
    fast_stricter++;
    return 0;
  }
  const char *dump = getenv("SLUICE_PNG_FUZZ_DUMP"); /* debugging aid */
  if (dump && (f.rc == 0) != (l.rc == 0)) {
    FILE *o = fopen(dump, "wb");
    if (o) {
      fwrite(p, 1, n, o);
      fclose(o);
    }
  }
  if ((f.rc == 0) != (l.rc == 0))
    SL__FAIL("%s, %s: fast %s (%s), libpng %s (%s)", seed, what,
             f.rc ? "rejects" : "accepts", f.err, l.rc ? "rejects" : "accepts",
             l.err);
  int accepted = f.rc == 0;
  if (accepted && memcmp(f.px, l.px, f.info.stride * f.info.height) != 0)
    SL__FAIL("%s, %s: both accept, pixels differ", seed, what);
  free(f.px);
  free(l.px);
  return accepted;
}

TEST(png_decode_fuzz_differential) {
  static const char *const suite[] = {
      "basn0g01.png", "basn2c16.png", "basi3p02.png", "tbrn2c08.png",
      "basi6a08.png", "f99n0g04.png", "tp1n3p08.png", "oi4n2c16.png",
      "s09i3p02.png", "z09n2c08.png", "tbbn0g04.png", "basi4a16.png",
      "tbwn0g16.png", "tbyn3p08.png", "ch1n3p04.png", "cs3n2c16.png"};
  /* SLUICE_PNG_FUZZ_ITERS (mutations per seed) and SLUICE_PNG_FUZZ_SEED
   * allow longer runs by hand; the defaults keep ASan under 30 s. */
  const char *env_iters = getenv("SLUICE_PNG_FUZZ_ITERS");
  const char *env_seed = getenv("SLUICE_PNG_FUZZ_SEED");
  long iters = env_iters ? atol(env_iters) : 1000;
  uint64_t rng = env_seed ? strtoull(env_seed, NULL, 0) : 20260101;
  bytes m = {0};
  int accepted = 0, total = 0;
  for (size_t s = 0; s < sizeof suite / sizeof suite[0] + 6; s++) {
    size_t n;
    uint8_t *src;
    char seed[64];
    if (s < sizeof suite / sizeof suite[0]) {
      src = load_conf("pngsuite", suite[s], &n);
      snprintf(seed, sizeof seed, "%s", suite[s]);
    } else { /* synthetic: stored zlib blocks, tRNS, random filters */
      static const unsigned f[6][3] = {{0, 16, 1}, {2, 8, 0}, {3, 4, 1},
                                       {2, 16, 1}, {0, 2, 0}, {3, 8, 0}};
      synth sy = {0};
      bytes b = {0};
      sy.ct = f[s % 6][0], sy.depth = f[s % 6][1], sy.interlace = f[s % 6][2];
      sy.trns = 1, sy.w = 13, sy.h = 11;
      synth_random(&sy, &rng);
      synth_png(&sy, &b, &rng);
      free(sy.samples);
      src = b.p, n = b.n;
      snprintf(seed, sizeof seed, "synthetic ct %u depth %u", sy.ct, sy.depth);
    }
    ASSERT(differential(src, n, seed, "unmodified"));
    for (long i = 0; i < iters; i++) {
      char what[384];
      mutate(src, n, &m, &rng, what, sizeof what);
      accepted += differential(m.p, m.n, seed, what);
      total++;
    }
    free(src);
  }
  fprintf(stderr, "  %d mutations, %d accepted by both paths, %d zlib "
          "trailer errors only the fast path saw\n", total, accepted,
          fast_stricter);
  ASSERT(accepted > total / 20); /* the comparison of pixels was exercised */
  free(m.p);
}

/* One decoder through a run of images of different sizes and formats,
 * failures in between: every result equals libpng's, whatever the decoder
 * kept from the previous image. */
TEST(png_decoder_reuse) {
  static const char *const files[] = {"basn6a16.png", "s01n3p01.png",
                                      "basi2c08.png", "f04n2c08.png",
                                      "oi9n0g16.png", "tbyn3p08.png"};
  for (size_t retain = 0; retain <= (1 << 20); retain += 1 << 20) {
    sl_png_decoder *dec = sl_png_decoder_create(retain);
    ASSERT(dec != NULL);
    uint64_t rng = 99;
    for (int round = 0; round < 3; round++)
      for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        size_t n;
        uint8_t *buf = load_conf("pngsuite", files[i], &n);
        decoded ref;
        decode_default(buf, n, sl_png_decode_libpng, &ref);
        ASSERT_EQ(ref.rc, 0);
        size_t size = ref.info.stride * ref.info.height;
        uint8_t *px = malloc(size);
        char err[256];
        ASSERT_EQ(sl_png_decoder_decode(dec, buf, n, &ref.info, px, err,
                                        sizeof err), 0);
        ASSERT(memcmp(px, ref.px, size) == 0);
        /* damaged image data (CRC fixed, so the inflate itself fails) in
         * between fails cleanly and leaves no trace */
        bytes bb = {buf, n, n};
        size_t idat = find_chunk(&bb, "IDAT");
        uint32_t len = (uint32_t)buf[idat] << 24 | buf[idat + 1] << 16 |
                       buf[idat + 2] << 8 | buf[idat + 3];
        buf[idat + 8 + rnd_below(&rng, len)] ^= 0x5a;
        fix_crc(&bb, idat);
        int rc = sl_png_decoder_decode(dec, buf, n, &ref.info, px, err, sizeof err);
        ASSERT(rc < 0 && err[0]);
        free(px);
        free(ref.px);
        free(buf);
      }
    sl_png_decoder_destroy(dec);
  }
  sl_png_decoder_destroy(NULL);
  char err[64];
  ASSERT_EQ(sl_png_decoder_decode(NULL, "", 0, NULL, NULL, err, sizeof err),
            SL_EINVAL);
}

/* ---- threads ------------------------------------------------------------------ */

typedef struct thread_arg {
  const uint8_t *buf;
  size_t len;
  const uint8_t *want;
  size_t want_len;
  unsigned seed;
  int failures;
} thread_arg;

static void *decode_thread(void *p) {
  thread_arg *a = p;
  sl_png_decoder *dec = sl_png_decoder_create(1 << 20); /* this thread's */
  ASSERT(dec != NULL);
  for (int i = 0; i < 40; i++) {
    decoded d;
    unsigned pick = (unsigned)rand_r(&a->seed) % 3;
    decode_default(a->buf, a->len,
                   pick == 0 ? sl_png_decode : sl_png_decode_libpng, &d);
    if (pick == 2 && d.rc == 0) /* the same image through this thread's decoder */
      d.rc = sl_png_decoder_decode(dec, a->buf, a->len, &d.info, d.px, d.err,
                                   sizeof d.err);
    if (d.rc != 0 || memcmp(d.px, a->want, a->want_len) != 0) a->failures++;
    free(d.px);
    /* an error path too: a cut copy must fail cleanly */
    decode_default(a->buf, a->len / 2, sl_png_decode, &d);
    if (d.rc == 0) a->failures++;
  }
  sl_png_decoder_destroy(dec);
  return NULL;
}

TEST(png_decode_threads) {
  static const char *const files[4] = {"basi2c16.png", "basn3p04.png",
                                       "tbrn2c08.png", "oi9n0g16.png"};
  pthread_t th[4];
  thread_arg args[4];
  uint8_t *bufs[4];
  decoded ref[4];
  for (int i = 0; i < 4; i++) {
    size_t n;
    bufs[i] = load_conf("pngsuite", files[i], &n);
    decode_default(bufs[i], n, sl_png_decode_libpng, &ref[i]);
    ASSERT_EQ(ref[i].rc, 0);
    args[i] = (thread_arg){bufs[i], n, ref[i].px,
                           ref[i].info.stride * ref[i].info.height,
                           (unsigned)i + 1, 0};
    ASSERT_EQ(pthread_create(&th[i], NULL, decode_thread, &args[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ(pthread_join(th[i], NULL), 0);
    ASSERT_EQ(args[i].failures, 0);
    free(bufs[i]);
    free(ref[i].px);
  }
}

/* =====================================================================
 * DECODE TESTS -- end. Encoder tests (png_write.c) go below this line.
 * ===================================================================== */

/* =====================================================================
 * ENCODE TESTS (png_write.c) and the png.decode / png.encode stages
 * (png_stages.c) -- begin. Helpers are prefixed pw_.
 *
 * The reference decoder here is plain libpng, independent of png_read.c,
 * so an encoder bug cannot hide behind a matching decoder bug. The
 * pipeline cases go through the public API only (sl_pipeline_parse, run,
 * failures list) and, when SLUICE_BIN is set, through the CLI.
 * ===================================================================== */
#include <dirent.h>
#include <stdarg.h>
#include <math.h>
#include <png.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "sluice_io.h"
#include "sluice_stages.h"

typedef struct pw_image {
  uint32_t w, h, ch, depth;
  size_t stride;
  unsigned char *px;
} pw_image;

static uint64_t pw_rand(uint64_t *s) {
  uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

/* snprintf that must not truncate (paths in these tests are short). */
static void pw_sprintf(char *dst, size_t cap, const char *fmt, ...)
    SL_PRINTF(3, 4);
static void pw_sprintf(char *dst, size_t cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(dst, cap, fmt, ap);
  va_end(ap);
  ASSERT(n >= 0 && (size_t)n < cap);
}

static bool pw_little_endian(void) {
  uint16_t v = 1;
  unsigned char b;
  memcpy(&b, &v, 1);
  return b == 1;
}

static size_t pw_row_bytes(const pw_image *im) {
  return (size_t)im->w * im->ch * (im->depth / 8);
}

/* Fills a w x h image with `pad` spare bytes per row (set to 0xA5, which
 * must never reach the output). style 0: uniform noise, 1: gradients plus
 * a little noise (so every filter has something to win), 2: flat. */
static void pw_image_make(pw_image *im, uint32_t w, uint32_t h, uint32_t ch,
                          uint32_t depth, size_t pad, uint64_t seed,
                          int style) {
  *im = (pw_image){w, h, ch, depth, 0, NULL};
  im->stride = pw_row_bytes(im) + pad;
  im->px = malloc(im->stride * h);
  ASSERT(im->px);
  memset(im->px, 0xA5, im->stride * h);
  uint64_t s = seed;
  for (uint32_t y = 0; y < h; y++)
    for (uint32_t x = 0; x < w; x++)
      for (uint32_t c = 0; c < ch; c++) {
        uint64_t r = pw_rand(&s);
        uint32_t max = depth == 16 ? 65535 : 255, v;
        if (style == 0) v = (uint32_t)(r & max);
        else if (style == 2) v = (uint32_t)(seed % (max + 1));
        else v = ((x * 7 + y * 3 + c * 50) * (max / 255) + (uint32_t)(r % 5)) % (max + 1);
        unsigned char *p = im->px + (size_t)y * im->stride +
                           ((size_t)x * ch + c) * (depth / 8);
        if (depth == 8) p[0] = (unsigned char)v;
        else {
          uint16_t v16 = (uint16_t)v;
          memcpy(p, &v16, 2);
        }
      }
}

static void pw_image_free(pw_image *im) {
  free(im->px);
  im->px = NULL;
}

/* Same size, layout and row bytes (strides may differ). */
static bool pw_image_equal(const pw_image *a, const pw_image *b) {
  if (a->w != b->w || a->h != b->h || a->ch != b->ch || a->depth != b->depth)
    return false;
  size_t n = pw_row_bytes(a);
  for (uint32_t y = 0; y < a->h; y++)
    if (memcmp(a->px + y * a->stride, b->px + y * b->stride, n) != 0)
      return false;
  return true;
}

/* ---- plain libpng: the reference reader and a writer for inputs ---- */

typedef struct pw_src {
  const unsigned char *p;
  size_t len, off;
} pw_src;

static void pw_read_fn(png_structp png, png_bytep dst, size_t n) {
  pw_src *s = png_get_io_ptr(png);
  if (n > s->len - s->off) png_error(png, "read past the end");
  memcpy(dst, s->p + s->off, n);
  s->off += n;
}

/* Decodes with libpng, normalised as png.decode promises (palette to
 * RGB(A), gray < 8 bits to 8, tRNS to alpha, 16-bit native order).
 * @return 0 (out->px malloc'd) or -1. */
static int pw_libpng_read(const void *buf, size_t len, pw_image *out) {
  pw_src src = {buf, len, 0};
  png_structp png =
      png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png_create_info_struct(png);
  unsigned char *volatile px = NULL;
  png_bytep *volatile rows = NULL;
  ASSERT(png && info);
  if (setjmp(png_jmpbuf(png))) {
    free(px);
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    return -1;
  }
  png_set_read_fn(png, &src, pw_read_fn);
  png_read_info(png, info);
  png_set_palette_to_rgb(png);
  png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  if (png_get_bit_depth(png, info) == 16 && pw_little_endian())
    png_set_swap(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  out->w = png_get_image_width(png, info);
  out->h = png_get_image_height(png, info);
  out->ch = png_get_channels(png, info);
  out->depth = png_get_bit_depth(png, info);
  out->stride = png_get_rowbytes(png, info);
  px = malloc(out->stride * out->h);
  rows = malloc(out->h * sizeof *rows);
  ASSERT(px && rows);
  for (uint32_t y = 0; y < out->h; y++) rows[y] = px + y * out->stride;
  png_read_image(png, rows);
  png_read_end(png, NULL);
  png_destroy_read_struct(&png, &info, NULL);
  free(rows);
  out->px = px;
  return 0;
}

/* How pw_libpng_write stores an image. */
typedef enum pw_fmt {
  PW_GRAY8, PW_GA8, PW_RGB8, PW_RGBA8, PW_GRAY16, PW_RGB16, PW_RGBA16,
  PW_RGB8_ADAM7, PW_PALETTE8, PW_PALETTE4_TRNS, PW_GRAY1, PW_RGB8_TRNS,
  PW_NFMT
} pw_fmt;

/* Writes a random w x h image in format f to `path` with libpng. */
static void pw_libpng_write(const char *path, pw_fmt f, uint32_t w,
                            uint32_t h, uint64_t seed) {
  static const struct { int type, depth; uint32_t ch; } fm[PW_NFMT] = {
      {PNG_COLOR_TYPE_GRAY, 8, 1},    {PNG_COLOR_TYPE_GA, 8, 2},
      {PNG_COLOR_TYPE_RGB, 8, 3},     {PNG_COLOR_TYPE_RGBA, 8, 4},
      {PNG_COLOR_TYPE_GRAY, 16, 1},   {PNG_COLOR_TYPE_RGB, 16, 3},
      {PNG_COLOR_TYPE_RGBA, 16, 4},   {PNG_COLOR_TYPE_RGB, 8, 3},
      {PNG_COLOR_TYPE_PALETTE, 8, 1}, {PNG_COLOR_TYPE_PALETTE, 4, 1},
      {PNG_COLOR_TYPE_GRAY, 1, 1},    {PNG_COLOR_TYPE_RGB, 8, 3}};
  size_t rowbytes = ((size_t)w * fm[f].ch * fm[f].depth + 7) / 8;
  unsigned char *px = malloc(rowbytes * h);
  png_bytep *rows = malloc(h * sizeof *rows);
  ASSERT(px && rows);
  uint64_t s = seed;
  for (size_t i = 0; i < rowbytes * h; i++) {
    uint64_t r = pw_rand(&s);
    /* smooth-ish so the files are realistic; palette 4: indices 0..15 */
    px[i] = (unsigned char)((i % 251) + (r & 7));
    if (f == PW_RGB8_TRNS && i % 7 == 0) px[i] = 10; /* hits the key */
  }
  for (uint32_t y = 0; y < h; y++) rows[y] = px + y * rowbytes;
  FILE *fp = fopen(path, "wb");
  ASSERT(fp);
  png_structp png =
      png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png_create_info_struct(png);
  ASSERT(png && info);
  if (setjmp(png_jmpbuf(png))) SL__FAIL("libpng could not write %s", path);
  png_init_io(png, fp);
  png_set_IHDR(png, info, w, h, fm[f].depth, fm[f].type,
               f == PW_RGB8_ADAM7 ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_color pal[256];
  png_byte alpha[16];
  for (int i = 0; i < 256; i++)
    pal[i] = (png_color){(png_byte)i, (png_byte)(255 - i), (png_byte)(i * 7)};
  for (int i = 0; i < 16; i++) alpha[i] = (png_byte)(i * 17);
  if (fm[f].type == PNG_COLOR_TYPE_PALETTE) png_set_PLTE(png, info, pal, 256 >> (8 - fm[f].depth));
  if (f == PW_PALETTE4_TRNS) png_set_tRNS(png, info, alpha, 16, NULL);
  png_color_16 key = {0, 10, 10, 10, 0};
  if (f == PW_RGB8_TRNS) png_set_tRNS(png, info, NULL, 0, &key);
  png_write_info(png, info);
  if (fm[f].depth == 16 && pw_little_endian()) png_set_swap(png);
  png_write_image(png, rows);
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  fclose(fp);
  free(rows);
  free(px);
}

/* ---- PNG structure ---- */

static uint32_t pw_be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
}

/* Walks the chunks of buf, checking the signature and every CRC (with
 * zlib's crc32). Types go to `types` ("IHDR,IDAT,IEND"), the IDAT data,
 * concatenated, to *z (malloc'd, may be NULL). @return number of IDATs. */
static int pw_chunks(const unsigned char *b, size_t len, char *types,
                     size_t tcap, unsigned char **z, size_t *zlen) {
  static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', 13, 10, 26, 10};
  ASSERT(len >= 8 && memcmp(b, sig, 8) == 0);
  int idats = 0;
  size_t off = 8, tl = 0;
  if (z) *z = NULL, *zlen = 0;
  types[0] = 0;
  while (off < len) {
    ASSERT(len - off >= 12);
    uint32_t n = pw_be32(b + off);
    ASSERT(len - off - 12 >= n);
    uLong crc = crc32(0, b + off + 4, n + 4);
    ASSERT_EQ(crc, pw_be32(b + off + 8 + n));
    ASSERT(tl + 6 < tcap);
    tl += (size_t)snprintf(types + tl, tcap - tl, "%s%.4s", tl ? "," : "",
                           (const char *)b + off + 4);
    if (memcmp(b + off + 4, "IDAT", 4) == 0) {
      idats++;
      if (z) {
        *z = realloc(*z, *zlen + n + 1);
        ASSERT(*z);
        memcpy(*z + *zlen, b + off + 8, n);
        *zlen += n;
      }
    }
    off += 12 + (size_t)n;
  }
  return idats;
}

/* Encodes `im` with a fresh bound-sized buffer. @return the PNG (malloc'd)
 * and its length in *len. */
static unsigned char *pw_encode(sl_png_encoder *enc, const pw_image *im,
                                int level, int filter, size_t *len) {
  size_t bound = sl_png_encode_bound(im->w, im->h, im->ch, im->depth);
  ASSERT(bound > 0);
  unsigned char *out = malloc(bound);
  char err[256] = "";
  ASSERT(out);
  int rc = enc ? sl_png_encoder_encode(enc, im->px, im->stride, im->w, im->h,
                                       im->ch, im->depth, level, filter, out,
                                       bound, len, err, sizeof err)
               : sl_png_encode(im->px, im->stride, im->w, im->h, im->ch,
                               im->depth, level, filter, out, bound, len, err,
                               sizeof err);
  if (rc < 0) SL__FAIL("encode failed: %s (%s)", sl_strerror(rc), err);
  ASSERT(*len <= bound);
  return out;
}

/* Encodes, checks the chunk list and decodes with libpng: identical. */
static void pw_check_roundtrip(sl_png_encoder *enc, const pw_image *im,
                               int level, int filter) {
  size_t len;
  unsigned char *png = pw_encode(enc, im, level, filter, &len);
  char types[64];
  ASSERT_EQ(pw_chunks(png, len, types, sizeof types, NULL, NULL), 1);
  ASSERT_STREQ(types, "IHDR,IDAT,IEND"); /* no metadata */
  pw_image got;
  ASSERT_EQ(pw_libpng_read(png, len, &got), 0);
  if (!pw_image_equal(im, &got))
    SL__FAIL("pixels differ: %ux%u ch=%u depth=%u level=%d filter=%d",
             im->w, im->h, im->ch, im->depth, level, filter);
  pw_image_free(&got);
  free(png);
}

/* Every channel count x depth x filter x level, odd sizes incl. 1x1, 1xN
 * and Nx1, padded strides; the reusable encoder and the one-shot call. */
TEST(png_encode_roundtrip) {
  static const uint32_t sizes[][2] = {{1, 1}, {1, 9}, {9, 1}, {13, 5},
                                      {33, 17}, {70, 3}};
  static const int levels[] = {0, 1, 6, 9};
  sl_png_encoder *enc;
  ASSERT_OK(sl_png_encoder_create(&enc));
  uint64_t seed = 1;
  for (uint32_t ch = 1; ch <= 4; ch++)
    for (uint32_t depth = 8; depth <= 16; depth += 8)
      for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (int f = SL_PNG_FILTER_NONE; f <= SL_PNG_FILTER_AUTO; f++)
          for (size_t l = 0; l < sizeof levels / sizeof levels[0]; l++) {
            pw_image im;
            pw_image_make(&im, sizes[s][0], sizes[s][1], ch, depth,
                          (seed % 3) * 5, seed, (int)(seed % 3));
            pw_check_roundtrip(seed % 4 ? enc : NULL, &im, levels[l], f);
            pw_image_free(&im);
            seed++;
          }
  sl_png_encoder_destroy(enc);
}

/* A larger photo-like image through every filter: the filters' edge cases
 * (first row, first pixel) are exercised on every row there too. */
TEST(png_encode_roundtrip_large) {
  sl_png_encoder *enc;
  ASSERT_OK(sl_png_encoder_create(&enc));
  for (uint32_t ch = 1; ch <= 4; ch++) {
    pw_image im;
    pw_image_make(&im, 517, 141, ch, ch % 2 ? 8 : 16, 3, 99 + ch, 1);
    for (int f = SL_PNG_FILTER_NONE; f <= SL_PNG_FILTER_AUTO; f++)
      pw_check_roundtrip(enc, &im, 6, f);
    pw_image_free(&im);
  }
  sl_png_encoder_destroy(enc);
}

/* Reference filter predictor from the PNG specification (9.2). */
static int pw_predict(int f, int a, int b, int c) {
  int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
  switch (f) {
  case 1: return a;
  case 2: return b;
  case 3: return (a + b) / 2;
  case 4: return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
  default: return 0;
  }
}

/* libpng's cost of filter f on row y of `raw` (PNG byte order rows of n
 * bytes, bpp bytes per pixel). */
static uint64_t pw_cost(const unsigned char *raw, size_t n, size_t bpp,
                        uint32_t y, int f) {
  const unsigned char *cur = raw + y * n, *prev = y ? cur - n : NULL;
  uint64_t sum = 0;
  for (size_t i = 0; i < n; i++) {
    int a = i >= bpp ? cur[i - bpp] : 0, b = prev ? prev[i] : 0;
    int c = prev && i >= bpp ? prev[i - bpp] : 0;
    unsigned v = (unsigned char)(cur[i] - pw_predict(f, a, b, c));
    sum += v < 128 ? v : 256 - v;
  }
  return sum;
}

/* The filter type bytes in the zlib stream: a fixed filter everywhere;
 * auto = per row the first filter of minimal cost (libpng's rule, ties to
 * the lower type); auto at level 0 = none. Also checks the zlib stream
 * (adler32) with zlib's own inflate. */
TEST(png_encode_filter_choice) {
  pw_image im;
  pw_image_make(&im, 61, 40, 3, 16, 2, 5, 1);
  /* Rows 20..39 noise, so different rows prefer different filters. */
  pw_image noise;
  pw_image_make(&noise, 61, 20, 3, 16, 2, 6, 0);
  memcpy(im.px + 20 * im.stride, noise.px, 20 * noise.stride);
  pw_image_free(&noise);
  size_t n = pw_row_bytes(&im), bpp = 6;
  unsigned char *raw = malloc(n * im.h);
  ASSERT(raw);
  for (uint32_t y = 0; y < im.h; y++)
    for (size_t i = 0; i < n; i += 2) { /* big-endian samples */
      uint16_t v;
      memcpy(&v, im.px + y * im.stride + i, 2);
      raw[y * n + i] = (unsigned char)(v >> 8);
      raw[y * n + i + 1] = (unsigned char)v;
    }
  int seen[5] = {0};
  for (int f = SL_PNG_FILTER_NONE; f <= SL_PNG_FILTER_AUTO; f++)
    for (int level = 0; level <= 9; level += 9) {
      size_t len, zlen;
      unsigned char *png = pw_encode(NULL, &im, level, f, &len), *z;
      char types[64];
      pw_chunks(png, len, types, sizeof types, &z, &zlen);
      uLongf flen = (uLongf)((n + 1) * im.h);
      unsigned char *filt = malloc(flen + 1);
      ASSERT(filt);
      ASSERT_EQ(uncompress(filt, &flen, z, (uLong)zlen), Z_OK);
      ASSERT_EQ(flen, (n + 1) * im.h);
      for (uint32_t y = 0; y < im.h; y++) {
        int want = f;
        if (f == SL_PNG_FILTER_AUTO && level == 0) want = 0;
        else if (f == SL_PNG_FILTER_AUTO) {
          want = 0;
          for (int t = 1; t < 5; t++)
            if (pw_cost(raw, n, bpp, y, t) < pw_cost(raw, n, bpp, y, want))
              want = t;
          seen[want]++;
        }
        ASSERT_EQ(filt[y * (n + 1)], want);
      }
      free(filt);
      free(z);
      free(png);
    }
  int kinds = 0;
  for (int t = 0; t < 5; t++) kinds += seen[t] > 0;
  ASSERT(kinds >= 2); /* the image really makes auto choose */
  free(raw);
  pw_image_free(&im);
}

/* The zlib stream split over many IDAT chunks (as libpng does with 8 KiB
 * chunks) still decodes, and each chunk is at most the limit. */
TEST(png_encode_idat_split) {
  static const size_t limits[] = {1, 7, 1000};
  pw_image im;
  pw_image_make(&im, 100, 50, 4, 8, 0, 11, 0);
  for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
    sl_png_encoder *enc;
    ASSERT_OK(sl_png_encoder_create(&enc));
    sl_png_encoder_set_idat_max(enc, limits[i]);
    size_t bound = sl_png_encode_bound(im.w, im.h, im.ch, im.depth);
    size_t cap = bound * 13, len; /* room for 12 bytes per extra chunk */
    unsigned char *png = malloc(cap);
    ASSERT(png);
    ASSERT_OK(sl_png_encoder_encode(enc, im.px, im.stride, im.w, im.h, im.ch,
                                    im.depth, 6, SL_PNG_FILTER_AUTO, png, cap,
                                    &len, NULL, 0));
    static char types[1 << 20]; /* up to ~20000 chunk names */
    unsigned char *z;
    size_t zlen;
    int idats = pw_chunks(png, len, types, sizeof types, &z, &zlen);
    ASSERT_EQ(idats, (zlen + limits[i] - 1) / limits[i]);
    /* every chunk but the last is full: total length says so */
    ASSERT_EQ(len, 8 + 25 + 12 * (size_t)idats + zlen + 12);
    pw_image got;
    ASSERT_EQ(pw_libpng_read(png, len, &got), 0);
    ASSERT(pw_image_equal(&im, &got));
    pw_image_free(&got);
    /* Exactly enough room works; one byte less is refused, and the split
     * never writes past the buffer (exact-size allocations for ASan). */
    for (size_t c = len - 1; c <= len; c++) {
      unsigned char *exact = malloc(c);
      size_t l2;
      ASSERT(exact);
      int rc = sl_png_encoder_encode(enc, im.px, im.stride, im.w, im.h, im.ch,
                                     im.depth, 6, SL_PNG_FILTER_AUTO, exact,
                                     c, &l2, NULL, 0);
      ASSERT_EQ(rc, c == len ? 0 : SL_ERANGE);
      if (rc == 0) ASSERT(l2 == len && memcmp(exact, png, len) == 0);
      free(exact);
    }
    free(z);
    free(png);
    sl_png_encoder_destroy(enc);
  }
  pw_image_free(&im);
}

/* Bad arguments are refused with a message; a short buffer is SL_ERANGE
 * and nothing is written past its end (ASan watches the exact-size
 * allocation); the bound holds for incompressible data at every level. */
TEST(png_encode_errors_and_bound) {
  unsigned char px[64] = {0}, out[256];
  char err[128];
  size_t len = 99;
  struct { uint32_t w, h, ch, depth; size_t stride; int level, filter; } bad[] = {
      {0, 1, 1, 8, 1, 6, 0},   {1, 0, 1, 8, 1, 6, 0},  {1, 1, 0, 8, 1, 6, 0},
      {1, 1, 5, 8, 5, 6, 0},   {1, 1, 1, 12, 2, 6, 0}, {4, 1, 1, 8, 3, 6, 0},
      {1, 1, 1, 8, 1, -1, 0},  {1, 1, 1, 8, 1, 10, 0}, {1, 1, 1, 8, 1, 6, 6},
      {0x80000000u, 1, 1, 8, 0x80000000u, 6, 0}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = 0;
    ASSERT_EQ(sl_png_encode(px, bad[i].stride, bad[i].w, bad[i].h, bad[i].ch,
                            bad[i].depth, bad[i].level, bad[i].filter, out,
                            sizeof out, &len, err, sizeof err),
              SL_EINVAL);
    ASSERT(err[0] != 0);
    ASSERT_EQ(len, 0);
  }
  ASSERT_EQ(sl_png_encode_bound(0, 1, 1, 8), 0);
  ASSERT_EQ(sl_png_encode_bound(1, 1, 5, 8), 0);
  ASSERT_EQ(sl_png_encode_bound(1, 1, 3, 1), 0);
  ASSERT_EQ(sl_png_encode_bound(0x80000000u, 1, 1, 8), 0);
  /* Short buffers: every length below the real size fails cleanly. */
  pw_image im;
  pw_image_make(&im, 19, 7, 3, 8, 0, 3, 0);
  size_t full;
  unsigned char *ref = pw_encode(NULL, &im, 6, SL_PNG_FILTER_AUTO, &full);
  for (size_t cap = 0; cap < full; cap += cap < 64 ? 1 : 13) {
    unsigned char *dst = malloc(cap ? cap : 1);
    ASSERT(dst);
    ASSERT_EQ(sl_png_encode(im.px, im.stride, im.w, im.h, im.ch, im.depth, 6,
                            SL_PNG_FILTER_AUTO, dst, cap, &len, err,
                            sizeof err),
              SL_ERANGE);
    ASSERT_CONTAINS(err, "too small");
    free(dst);
  }
  free(ref);
  pw_image_free(&im);
  /* Worst case: noise, exact bound-sized buffers, every level. */
  for (uint32_t ch = 1; ch <= 4; ch++)
    for (int level = 0; level <= 9; level++) {
      pw_image n;
      pw_image_make(&n, 1 + ch * 37, 1 + (uint32_t)level * 5, ch,
                    level % 2 ? 16 : 8, 0, (uint64_t)level * 7 + ch, 0);
      size_t l2;
      free(pw_encode(NULL, &n, level, SL_PNG_FILTER_NONE, &l2));
      pw_image_free(&n);
    }
}

/* Levels do what they say on photo-like data: stored is largest, 9 no
 * larger than 1, and auto filtering beats none at level 6. */
TEST(png_encode_levels_and_auto) {
  pw_image im;
  pw_image_make(&im, 256, 128, 3, 8, 0, 21, 1);
  size_t l0, l1, l6, l9, l6none;
  free(pw_encode(NULL, &im, 0, SL_PNG_FILTER_AUTO, &l0));
  free(pw_encode(NULL, &im, 1, SL_PNG_FILTER_AUTO, &l1));
  free(pw_encode(NULL, &im, 6, SL_PNG_FILTER_AUTO, &l6));
  free(pw_encode(NULL, &im, 9, SL_PNG_FILTER_AUTO, &l9));
  free(pw_encode(NULL, &im, 6, SL_PNG_FILTER_NONE, &l6none));
  ASSERT(l0 > (size_t)256 * 128 * 3);
  ASSERT(l1 < l0);
  ASSERT_LE(l9, l1);
  ASSERT_LE(l6, l1);
  ASSERT(l6 < l6none);
  pw_image_free(&im);
}

typedef struct pw_thread_arg {
  const pw_image *im;
  unsigned char *const *ref; /* [level * 6 + filter] */
  const size_t *ref_len;
  unsigned seed;
  int failures;
} pw_thread_arg;

/* Encodes random (level, filter) pairs, alternating the thread's own
 * encoder and the one-shot call, and compares with the reference. */
static void *pw_encode_thread(void *p) {
  pw_thread_arg *a = p;
  sl_png_encoder *enc;
  if (sl_png_encoder_create(&enc) < 0) return a->failures++, NULL;
  size_t bound = sl_png_encode_bound(a->im->w, a->im->h, a->im->ch,
                                     a->im->depth);
  unsigned char *out = malloc(bound);
  for (int i = 0; out && i < 40; i++) {
    int k = rand_r(&a->seed) % 60, level = k / 6, filter = k % 6;
    size_t len;
    int rc = i % 3 ? sl_png_encoder_encode(enc, a->im->px, a->im->stride,
                                           a->im->w, a->im->h, a->im->ch,
                                           a->im->depth, level, filter, out,
                                           bound, &len, NULL, 0)
                   : sl_png_encode(a->im->px, a->im->stride, a->im->w,
                                   a->im->h, a->im->ch, a->im->depth, level,
                                   filter, out, bound, &len, NULL, 0);
    if (rc < 0 || len != a->ref_len[k] || memcmp(out, a->ref[k], len) != 0)
      a->failures++;
  }
  if (!out) a->failures++;
  free(out);
  sl_png_encoder_destroy(enc);
  return NULL;
}

/* Encoders on several threads at once (TSan): no shared state, and the
 * output is a pure function of the input, level and filter. */
TEST(png_encode_threads) {
  pw_image im;
  pw_image_make(&im, 64, 48, 4, 16, 4, 77, 1);
  unsigned char *ref[60];
  size_t ref_len[60];
  for (int k = 0; k < 60; k++)
    ref[k] = pw_encode(NULL, &im, k / 6, k % 6, &ref_len[k]);
  pthread_t th[4];
  pw_thread_arg args[4];
  for (int i = 0; i < 4; i++) {
    args[i] = (pw_thread_arg){&im, ref, ref_len, (unsigned)i + 1, 0};
    ASSERT_EQ(pthread_create(&th[i], NULL, pw_encode_thread, &args[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ(pthread_join(th[i], NULL), 0);
    ASSERT_EQ(args[i].failures, 0);
  }
  for (int k = 0; k < 60; k++) free(ref[k]);
  pw_image_free(&im);
}

/* ---- pipelines through the public API ---- */

static char *pw_tmpdir(void) {
  char tmpl[] = "/tmp/sluice-pngw-XXXXXX";
  ASSERT(mkdtemp(tmpl));
  char *d = malloc(sizeof tmpl);
  ASSERT(d);
  memcpy(d, tmpl, sizeof tmpl);
  return d;
}

static void pw_rm_rf(const char *path) {
  struct stat st;
  if (lstat(path, &st) < 0) return;
  if (S_ISDIR(st.st_mode)) {
    DIR *d = opendir(path);
    ASSERT(d);
    struct dirent *de;
    while ((de = readdir(d))) {
      if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
      char sub[4096];
      pw_sprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
      pw_rm_rf(sub);
    }
    closedir(d);
    rmdir(path);
  } else {
    unlink(path);
  }
}

static void pw_mkdirs(const char *path) {
  char buf[4096];
  pw_sprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      mkdir(buf, 0777);
      *p = '/';
    }
}

static void pw_write_file(const char *path, const void *p, size_t n) {
  pw_mkdirs(path);
  FILE *f = fopen(path, "wb");
  ASSERT(f);
  ASSERT_EQ(fwrite(p, 1, n, f), n);
  ASSERT_EQ(fclose(f), 0);
}

static unsigned char *pw_read_file(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *p = malloc((size_t)sz + 1);
  ASSERT(p);
  ASSERT_EQ(fread(p, 1, (size_t)sz, f), (size_t)sz);
  fclose(f);
  *n = (size_t)sz;
  return p;
}

/* Decodes the PNG file at path with libpng. */
static void pw_read_png(const char *path, pw_image *im) {
  size_t n;
  unsigned char *b = pw_read_file(path, &n);
  if (!b) SL__FAIL("cannot read %s", path);
  ASSERT_EQ(pw_libpng_read(b, n, im), 0);
  free(b);
}

/* Every regular file or dot-entry under dir, relative, one per line. */
static void pw_list_tree(const char *dir, const char *rel, char *out,
                         size_t cap) {
  char path[4096];
  pw_sprintf(path, sizeof path, "%s%s%s", dir, *rel ? "/" : "", rel);
  DIR *d = opendir(path);
  ASSERT(d);
  struct dirent *de;
  while ((de = readdir(d))) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
    char sub[4096], full[8192];
    pw_sprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", de->d_name);
    pw_sprintf(full, sizeof full, "%s/%s", dir, sub);
    struct stat st;
    ASSERT_EQ(lstat(full, &st), 0);
    if (S_ISDIR(st.st_mode)) pw_list_tree(dir, sub, out, cap);
    else {
      ASSERT(strlen(out) + strlen(sub) + 2 < cap);
      strcat(out, sub);
      strcat(out, "\n");
    }
  }
  closedir(d);
}

/* One parsed pipeline and its run. */
typedef struct pw_job {
  sl_registry *reg;
  sl_pipeline *p;
  sl_run *run;
  int rc;
} pw_job;

static void pw_job_free(pw_job *j) {
  sl_run_destroy(j->run);
  sl_pipeline_destroy(j->p);
  sl_registry_destroy(j->reg);
  memset(j, 0, sizeof *j);
}

/* Parses `text` with the built-ins (plus `extra`, may be NULL) and runs it
 * with `opt` (NULL = defaults, no progress). The result is in j->rc. */
static void pw_job_run(pw_job *j, const char *text, const char *const *vars,
                       size_t nvars, const sl_stage_def *extra,
                       const sl_run_options *opt) {
  memset(j, 0, sizeof *j);
  ASSERT_OK(sl_registry_create(&j->reg));
  ASSERT_OK(sl_stages_register_all(j->reg));
  ASSERT_OK(sl_io_register_all(j->reg));
  if (extra) ASSERT_OK(sl_registry_add(j->reg, extra));
  ASSERT_OK(sl_pipeline_create(&j->p, j->reg));
  if (sl_pipeline_parse(j->p, "<test>", text, strlen(text), vars, nvars) < 0)
    SL__FAIL("pipeline does not parse:\n%s", sl_pipeline_errors(j->p));
  sl_run_options o;
  if (opt) o = *opt;
  else sl_run_options_init(&o);
  o.progress = SL_PROGRESS_OFF;
  ASSERT_OK(sl_run_create(&j->run, j->p, &o));
  j->rc = sl_run_execute(j->run);
}

static void pw_print_failures(const sl_run *run) {
  for (size_t i = 0; i < sl_run_failure_count(run); i++) {
    const char *item, *stage, *msg;
    sl_run_failure(run, i, &item, &stage, &msg);
    fprintf(stderr, "  failed: %s in %s: %s\n", item, stage, msg);
  }
}

/* ---- t.images: a test source of images, so png.encode can be tested
 * without the decoder ---- */

typedef struct pw_src_params {
  int64_t count;
} pw_src_params;

/* Image k of t.images: every channel count and depth, odd sizes. */
static void pw_src_image(uint64_t k, pw_image *im) {
  pw_image_make(im, 1 + (uint32_t)(k * 13 % 47), 1 + (uint32_t)(k * 7 % 29),
                1 + (uint32_t)(k % 4), k / 4 % 2 ? 16 : 8, k % 3 * 8, k + 100,
                (int)(k % 3));
}

static int pw_src_open(sl_worker *w, void **local) {
  (void)w;
  *local = calloc(1, sizeof(uint64_t));
  return *local ? 0 : SL_ENOMEM;
}
static void pw_src_close(sl_worker *w) { free(sl_worker_local(w)); }

static int pw_src_produce(sl_worker *w, sl_item **out) {
  const pw_src_params *p = sl_worker_params(w);
  uint64_t *next = sl_worker_local(w);
  if (*next >= (uint64_t)p->count) return SL_DONE;
  uint64_t k = (*next)++;
  char name[32];
  pw_sprintf(name, sizeof name, "d%u/img-%03u.png", (unsigned)(k % 3),
           (unsigned)k);
  pw_image im;
  pw_src_image(k, &im);
  sl_item *it = sl_item_create(k, name);
  sl_block *b;
  ASSERT(it);
  ASSERT_OK(sl_worker_alloc(w, im.stride * im.h, &b));
  memcpy(sl_block_data(b), im.px, im.stride * im.h);
  sl_item_set_block(it, SL_KIND_IMAGE, b, 0, im.stride * im.h);
  it->payload.u.image = (sl_image_desc){im.w, im.h, im.ch, im.depth, im.stride};
  pw_image_free(&im);
  *out = it;
  return 0;
}

static const sl_param_def pw_src_params_table[] = {
    {"count", SL_PARAM_INT, offsetof(pw_src_params, count), "10", 0, 1e6, NULL,
     "images"},
    SL_PARAM_END,
};

static const sl_stage_def pw_src_def = {
    .name = "t.images",
    .summary = "test images",
    .exec = SL_EXEC_IO,
    .in_kind = SL_KIND_NONE,
    .out_kind = SL_KIND_IMAGE,
    .flags = SL_STAGE_SOURCE,
    .params = pw_src_params_table,
    .params_size = sizeof(pw_src_params),
    .open = pw_src_open,
    .produce = pw_src_produce,
    .close = pw_src_close,
};

/* png.encode in a pipeline (every filter choice, levels 0 and 9): each
 * output file decodes with libpng to exactly the image that went in. */
TEST(png_encode_stage) {
  static const char *const filters[] = {"auto", "none", "sub", "up", "avg",
                                        "paeth"};
  char *dir = pw_tmpdir();
  for (size_t f = 0; f < 6; f++) {
    char text[512];
    pw_sprintf(text, sizeof text,
             "t.images count=24 ! png.encode level=%d filter=%s "
             "! files.write dir=%s/out%zu",
             f % 2 ? 9 : 0, filters[f], dir, f);
    pw_job j;
    pw_job_run(&j, text, NULL, 0, &pw_src_def, NULL);
    if (j.rc != 0) pw_print_failures(j.run);
    ASSERT_EQ(j.rc, 0);
    ASSERT_EQ(sl_run_items_ok(j.run), 24);
    pw_job_free(&j);
    for (uint64_t k = 0; k < 24; k++) {
      char path[4200];
      pw_sprintf(path, sizeof path, "%s/out%zu/d%u/img-%03u.png", dir, f,
               (unsigned)(k % 3), (unsigned)k);
      pw_image want, got;
      pw_src_image(k, &want);
      pw_read_png(path, &got);
      if (!pw_image_equal(&want, &got)) SL__FAIL("%s differs", path);
      pw_image_free(&want);
      pw_image_free(&got);
    }
  }
  /* Parameters are checked before anything runs. */
  const char *bad[] = {"t.images ! png.encode level=10 ! discard",
                       "t.images ! png.encode filter=best ! discard",
                       "gen ! png.encode ! discard"};
  for (size_t i = 0; i < 3; i++) {
    sl_registry *reg;
    sl_pipeline *p;
    ASSERT_OK(sl_registry_create(&reg));
    ASSERT_OK(sl_stages_register_all(reg));
    ASSERT_OK(sl_io_register_all(reg));
    ASSERT_OK(sl_registry_add(reg, &pw_src_def));
    ASSERT_OK(sl_pipeline_create(&p, reg));
    ASSERT_EQ(sl_pipeline_parse(p, "<t>", bad[i], strlen(bad[i]), NULL, 0),
              SL_EPARSE);
    sl_pipeline_destroy(p);
    sl_registry_destroy(reg);
  }
  pw_rm_rf(dir);
  free(dir);
}

/* The input tree of the decode tests: every format png.decode normalises,
 * in subfolders, plus a file the glob must skip. */
static const char *const pw_inputs[] = {
    "gray8.png", "a/ga8.png", "a/rgb8.png", "a/b/rgba8.png", "gray16.png",
    "a/rgb16.png", "rgba16.png", "adam7.png", "a/pal8.png", "pal4trns.png",
    "a/b/gray1.png", "rgbtrns.png"};
#define PW_NINPUTS (sizeof pw_inputs / sizeof pw_inputs[0])

static void pw_make_inputs(const char *in) {
  for (size_t i = 0; i < PW_NINPUTS; i++) {
    char path[4200];
    pw_sprintf(path, sizeof path, "%s/%s", in, pw_inputs[i]);
    pw_mkdirs(path);
    pw_libpng_write(path, (pw_fmt)i, 17 + (uint32_t)i * 5,
                    9 + (uint32_t)i * 3, i + 1);
  }
  char path[4200];
  pw_sprintf(path, sizeof path, "%s/a/notes.txt", in);
  pw_write_file(path, "not an image\n", 13);
}

/* files.list ! files.read ! png.decode ! png.encode ! files.write: every
 * output decodes (libpng) to what the input decodes to (libpng). */
TEST(png_stages_roundtrip) {
  char *dir = pw_tmpdir(), in[4200], out[4200];
  pw_sprintf(in, sizeof in, "%s/in", dir);
  pw_sprintf(out, sizeof out, "%s/out", dir);
  pw_make_inputs(in);
  const char *vars[2];
  char v0[4300], v1[4300];
  pw_sprintf(v0, sizeof v0, "in=%s", in);
  pw_sprintf(v1, sizeof v1, "out=%s", out);
  vars[0] = v0;
  vars[1] = v1;
  const char *text = "files.list dir=${in} glob=*.png ! files.read "
                     "! png.decode ! png.encode ! files.write dir=${out}";
  pw_job j;
  pw_job_run(&j, text, vars, 2, NULL, NULL);
  if (j.rc != 0) pw_print_failures(j.run);
  ASSERT_EQ(j.rc, 0);
  ASSERT_EQ(sl_run_items_ok(j.run), PW_NINPUTS);
  pw_job_free(&j);
  for (size_t i = 0; i < PW_NINPUTS; i++) {
    char a[4300], b[4300];
    pw_sprintf(a, sizeof a, "%s/%s", in, pw_inputs[i]);
    pw_sprintf(b, sizeof b, "%s/%s", out, pw_inputs[i]);
    pw_image want, got;
    pw_read_png(a, &want);
    pw_read_png(b, &got);
    if (!pw_image_equal(&want, &got)) SL__FAIL("%s differs", pw_inputs[i]);
    pw_image_free(&want);
    pw_image_free(&got);
  }
  char tree[8192] = "";
  pw_list_tree(out, "", tree, sizeof tree);
  ASSERT(strstr(tree, "notes.txt") == NULL);
  pw_rm_rf(dir);
  free(dir);
}

/* Rewrites the IHDR of a PNG in place with new dimensions and a valid CRC. */
static void pw_set_ihdr(unsigned char *png, uint32_t w, uint32_t h) {
  unsigned char *d = png + 16;
  for (int i = 0; i < 4; i++) {
    d[i] = (unsigned char)(w >> (24 - 8 * i));
    d[4 + i] = (unsigned char)(h >> (24 - 8 * i));
  }
  uLong crc = crc32(0, png + 12, 17);
  for (int i = 0; i < 4; i++) png[29 + i] = (unsigned char)(crc >> (24 - 8 * i));
}

/* Offset of the first IDAT chunk's data. */
static size_t pw_idat_data(const unsigned char *png, size_t len) {
  size_t off = 8;
  while (off + 12 <= len && memcmp(png + off + 4, "IDAT", 4) != 0)
    off += 12 + pw_be32(png + off);
  ASSERT(off + 12 <= len);
  return off + 8;
}

/* Bad copies of a good PNG: name, and what the failure message says. */
typedef struct pw_bad {
  const char *name, *cause;
} pw_bad;

static const pw_bad pw_bads[] = {
    {"a/bad-truncated.png", ""},  {"bad-crc.png", "CRC"},
    {"a/b/bad-sig.png", "signature"}, {"bad-empty.png", ""},
    {"a/bad-zero.png", "width"},  {"bad-bomb.png", "max_pixels"},
    {"a/b/bad-zlib.png", ""}};
#define PW_NBADS (sizeof pw_bads / sizeof pw_bads[0])

/* Writes the bad copies of `good` (a valid PNG of len bytes) under in. */
static void pw_make_bads(const char *in, const unsigned char *good,
                         size_t len) {
  unsigned char *b = malloc(len);
  ASSERT(b);
  for (size_t i = 0; i < PW_NBADS; i++) {
    char path[4200];
    size_t n = len, idat = pw_idat_data(good, len);
    memcpy(b, good, len);
    switch (i) {
    case 0: n = idat + (len - idat) / 2; break;       /* truncated */
    case 1: b[idat + 5] ^= 0x40; break;               /* CRC mismatch */
    case 2: b[1] = 'J'; break;                        /* signature */
    case 3: n = 0; break;                             /* empty */
    case 4: pw_set_ihdr(b, 0, 10); break;             /* zero width */
    case 5: pw_set_ihdr(b, 100000, 100000); break;    /* 10^10 pixels */
    case 6: {                                         /* bad zlib, good CRC */
      uint32_t clen = pw_be32(b + idat - 8);
      for (uint32_t k = 2; k < clen; k += 3) b[idat + k] ^= 0x5A;
      uLong crc = crc32(0, b + idat - 4, clen + 4);
      for (int s = 0; s < 4; s++)
        b[idat + clen + s] = (unsigned char)(crc >> (24 - 8 * s));
      break;
    }
    }
    pw_sprintf(path, sizeof path, "%s/%s", in, pw_bads[i].name);
    pw_write_file(path, b, n);
  }
  free(b);
}

/* A batch with corrupt files among good ones: every good file gives its
 * output, each bad one is in the failures list (item, stage png.decode, a
 * cause), the run returns SL_EITEMS, and nothing at all -- not even a
 * temporary -- exists for the bad ones. Then the same through the CLI:
 * exit status 1 and the bad names in its report. */
TEST(png_stages_corrupt_batch) {
  char *dir = pw_tmpdir(), in[4200], out[4200], good[4300];
  pw_sprintf(in, sizeof in, "%s/in", dir);
  pw_sprintf(out, sizeof out, "%s/out", dir);
  pw_make_inputs(in);
  pw_sprintf(good, sizeof good, "%s/a/rgb8.png", in);
  size_t len;
  unsigned char *g = pw_read_file(good, &len);
  ASSERT(g);
  pw_make_bads(in, g, len);
  free(g);
  char text[9000];
  pw_sprintf(text, sizeof text,
           "files.list dir=%s glob=*.png ! files.read ! png.decode "
           "! png.encode level=1 ! files.write dir=%s",
           in, out);
  pw_job j;
  pw_job_run(&j, text, NULL, 0, NULL, NULL);
  ASSERT_EQ(j.rc, SL_EITEMS);
  ASSERT_EQ(sl_run_items_ok(j.run), PW_NINPUTS);
  ASSERT_EQ(sl_run_items_failed(j.run), PW_NBADS);
  ASSERT_EQ(sl_run_failure_count(j.run), PW_NBADS);
  bool found[PW_NBADS] = {false};
  for (size_t i = 0; i < PW_NBADS; i++) {
    const char *item, *stage, *msg;
    ASSERT_OK(sl_run_failure(j.run, i, &item, &stage, &msg));
    size_t k = 0;
    while (k < PW_NBADS && strcmp(pw_bads[k].name, item) != 0) k++;
    if (k == PW_NBADS) SL__FAIL("unexpected failure %s: %s", item, msg);
    ASSERT(!found[k]);
    found[k] = true;
    ASSERT_STREQ(stage, "png.decode");
    ASSERT(strlen(msg) > 5);
    ASSERT_CONTAINS(msg, pw_bads[k].cause);
  }
  pw_job_free(&j);
  /* Exactly the good outputs exist: no bad name, no temporary. */
  char tree[8192] = "", want[8192] = "";
  pw_list_tree(out, "", tree, sizeof tree);
  for (size_t i = 0; i < PW_NINPUTS; i++) {
    ASSERT(strstr(tree, pw_inputs[i]) != NULL);
    strcat(want, pw_inputs[i]);
    strcat(want, "\n");
  }
  ASSERT_EQ(strlen(tree), strlen(want));
  ASSERT(strstr(tree, "bad") == NULL && strstr(tree, "sluice-tmp") == NULL);
  /* The command line: exit status 1, each bad file named in the report. */
  const char *bin = getenv("SLUICE_BIN");
  if (bin && access(bin, X_OK) == 0) {
    char pipe[4300], cmd[16384], log[4300];
    pw_sprintf(pipe, sizeof pipe, "%s/job.pipe", dir);
    pw_sprintf(log, sizeof log, "%s/report.txt", dir);
    pw_write_file(pipe, text, strlen(text));
    pw_sprintf(cmd, sizeof cmd, "'%s' run '%s' --no-progress >'%s' 2>&1", bin,
             pipe, log);
    int st = system(cmd);
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 1);
    size_t n;
    char *report = (char *)pw_read_file(log, &n);
    ASSERT(report);
    report[n] = 0;
    for (size_t i = 0; i < PW_NBADS; i++) ASSERT_CONTAINS(report, pw_bads[i].name);
    free(report);
  }
  pw_rm_rf(dir);
  free(dir);
}

/* max_pixels / max_bytes refuse an image before decoding it. */
TEST(png_decode_stage_limits) {
  char *dir = pw_tmpdir(), in[4200], text[9000];
  pw_sprintf(in, sizeof in, "%s/in", dir);
  pw_make_inputs(in);
  const char *limits[] = {"max_pixels=100", "max_bytes=200"};
  for (size_t i = 0; i < 2; i++) {
    pw_sprintf(text, sizeof text,
             "files.list dir=%s glob=rgba16.png ! files.read ! png.decode %s "
             "! discard", in, limits[i]);
    pw_job j;
    pw_job_run(&j, text, NULL, 0, NULL, NULL);
    ASSERT_EQ(j.rc, SL_EITEMS);
    const char *item, *stage, *msg;
    ASSERT_OK(sl_run_failure(j.run, 0, &item, &stage, &msg));
    ASSERT_STREQ(item, "rgba16.png");
    ASSERT_CONTAINS(msg, i == 0 ? "max_pixels" : "max_bytes");
    pw_job_free(&j);
  }
  pw_rm_rf(dir);
  free(dir);
}

/* Reads pipelines/NAME from the source tree (SLUICE_SOURCE_DIR). */
static char *pw_pipeline_file(const char *name, size_t *n) {
  const char *src = getenv("SLUICE_SOURCE_DIR");
  char path[4200];
  pw_sprintf(path, sizeof path, "%s/pipelines/%s", src ? src : "..", name);
  char *t = (char *)pw_read_file(path, n);
  if (!t) SL__FAIL("cannot read %s (set SLUICE_SOURCE_DIR)", path);
  t[*n] = 0;
  return t;
}

/* pipelines/thumbnails.pipe and resize.pipe: the output tree mirrors the
 * input, thumbnails fit the box with the aspect kept, depth and channels
 * are kept, and after losing one output a resumed run redoes exactly that
 * one and counts the others as skipped. */
TEST(png_pipelines_thumbnails_resize) {
  char *dir = pw_tmpdir(), in[4200], out[4200], v[3][4300];
  pw_sprintf(in, sizeof in, "%s/in", dir);
  pw_make_inputs(in);
  for (int which = 0; which < 2; which++) {
    size_t n;
    char *text = pw_pipeline_file(which ? "resize.pipe" : "thumbnails.pipe", &n);
    pw_sprintf(out, sizeof out, "%s/out%d", dir, which);
    pw_sprintf(v[0], sizeof v[0], "in=%s", in);
    pw_sprintf(v[1], sizeof v[1], "out=%s", out);
    pw_sprintf(v[2], sizeof v[2], which ? "width=40" : "size=24x20");
    const char *vars[3] = {v[0], v[1], v[2]};
    for (int pass = 0; pass < 2; pass++) {
      sl_run_options opt;
      sl_run_options_init(&opt);
      opt.resume = pass == 1;
      char lost[8400];
      pw_sprintf(lost, sizeof lost, "%s/%s", out, pw_inputs[3]);
      if (pass == 1) ASSERT_EQ(unlink(lost), 0); /* as if the crash hit it */
      pw_job j;
      pw_job_run(&j, text, vars, 3, NULL, &opt);
      if (j.rc != 0) pw_print_failures(j.run);
      ASSERT_EQ(j.rc, 0);
      ASSERT_EQ(sl_run_items_ok(j.run), pass ? 1 : PW_NINPUTS);
      ASSERT_EQ(sl_run_items_skipped(j.run), pass ? PW_NINPUTS - 1 : 0);
      pw_job_free(&j);
      ASSERT_EQ(access(lost, F_OK), 0);
    }
    for (size_t i = 0; i < PW_NINPUTS; i++) {
      char a[4300], b[4300];
      pw_sprintf(a, sizeof a, "%s/%s", in, pw_inputs[i]);
      pw_sprintf(b, sizeof b, "%s/%s", out, pw_inputs[i]);
      pw_image src, got;
      pw_read_png(a, &src);
      pw_read_png(b, &got);
      ASSERT_EQ(got.ch, src.ch);
      ASSERT_EQ(got.depth, src.depth);
      if (which == 0) {
        ASSERT(got.w <= 24 && got.h <= 20);
        ASSERT(got.w == 24 || got.h == 20 || (got.w == src.w && got.h == src.h));
      } else {
        ASSERT_EQ(got.w, 40);
      }
      /* aspect kept to within a pixel of rounding on either side */
      ASSERT(fabs((double)got.w * src.h - (double)got.h * src.w) <=
             (src.w > src.h ? src.w : src.h));
      pw_image_free(&src);
      pw_image_free(&got);
    }
    free(text);
  }
  pw_rm_rf(dir);
  free(dir);
}

/* =====================================================================
 * ENCODE TESTS -- end.
 * ===================================================================== */

/* =====================================================================
 * Case table: decode cases first; encoder cases are appended after them.
 * ===================================================================== */
static const sl_test_case cases[] = {
    /* decode (png_read.c) */
    SL_CASE(png_decode_pngsuite_fast, "conformance"),
    SL_CASE(png_decode_pngsuite_libpng, "conformance"),
    SL_CASE(png_decode_pngsuite_rejects, "conformance"),
    SL_CASE(png_decode_hostile_generated, "conformance"),
    SL_CASE(png_decode_hostile_libspng, "conformance"),
    SL_CASE(png_probe_limits, "unit"),
    SL_CASE(png_decode_synth_all_formats, "unit"),
    SL_CASE(png_decode_messages, "unit"),
    SL_CASE(png_decode_truncated_rows, "unit"),
    SL_CASE(png_decode_info_mismatch, "unit"),
    SL_CASE(png_decode_fuzz_differential, "unit"),
    SL_CASE(png_decoder_reuse, "unit"),
    SL_CASE(png_decode_threads, "stress"),
    /* encode (png_write.c) and the png stages (png_stages.c) */
    SL_CASE(png_encode_roundtrip, "unit"),
    SL_CASE(png_encode_roundtrip_large, "unit"),
    SL_CASE(png_encode_filter_choice, "unit"),
    SL_CASE(png_encode_idat_split, "unit"),
    SL_CASE(png_encode_errors_and_bound, "unit"),
    SL_CASE(png_encode_levels_and_auto, "unit"),
    SL_CASE(png_encode_threads, "stress"),
    SL_CASE(png_encode_stage, "e2e"),
    SL_CASE(png_stages_roundtrip, "e2e"),
    SL_CASE(png_stages_corrupt_batch, "e2e"),
    SL_CASE(png_decode_stage_limits, "e2e"),
    SL_CASE(png_pipelines_thumbnails_resize, "e2e"),
};
SL_TEST_MAIN(cases)
