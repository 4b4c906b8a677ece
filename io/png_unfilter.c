/*
 * png_unfilter.c -- PNG row reconstruction (filter types None, Sub, Up,
 * Average, Paeth) for the fast decoder in png_read.c: portable C, SSE2,
 * SSE4.1 and AVX2 kernels picked at run time.
 *
 * Where the time goes. Up and None are independent per byte and run at
 * memory speed in any form. Sub, Average and Paeth are a serial chain: byte
 * i needs the reconstructed byte i - bpp, so a row costs (pixels x latency
 * of one step) however wide the machine is. Photos encoded by libpng mostly
 * use Average or Paeth, and unfiltering was ~30% of decoding them (Paeth
 * rows: more than half). The way round the chain: row y+1 only needs row y
 * above it, so several rows can run at once, each a little behind the one
 * above, in different lanes of the same registers.
 *
 * Levels (sl_png_simd_best() picks the highest the CPU has; tests force
 * each one, so every level stays checked against libpng):
 *  - C: byte loops, any bpp. The reference and the fallback.
 *  - SSE2 (x86-64 baseline): one pixel of 3..8 bytes per step in 16-bit
 *    lanes, so the bytes of a pixel go together; bpp 1 and 2 stay in C.
 *  - SSE4.1 (run-time check): 3- and 4-byte pixels (RGB8, RGBA8, GA16) in
 *    blocks of 4 pixels loaded and stored at once (pshufb spreads RGB into
 *    RGBx), two rows at a time: row y+1 one block behind row y in the upper
 *    half of the registers, its upper neighbours being the block row y has
 *    just produced, still in a register (pair_k). 1-byte pixels (grey8,
 *    palette, packed low depths): eight rows at a time on a diagonal
 *    (diag_k).
 *  - AVX2 (run-time check): 3- and 4-byte pixels four rows at a time, the
 *    pair twice over in 256-bit registers (quad_k).
 * Rows of different types mix (compile-time pairs, or lane masks). Rows
 * that are too short for a kernel's blocks go through the next level down.
 * Every kernel computes exactly the spec's arithmetic (mod 256, Paeth's tie
 * order a, b, c), so all levels give identical bytes.
 *
 * Aliasing: `out` may equal `in` (the decoder unfilters in place when rows
 * need a conversion afterwards) or start before it (rows inflated into the
 * output buffer); every block is loaded before anything at or after its
 * output position is stored, and stores cover exactly the block's bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "png_internal.h"

#if defined(__x86_64__) && defined(__SSE2__) && defined(__GNUC__)
#define SL_PNG_X86 1
#include <emmintrin.h>
#include <immintrin.h> /* SSE4.1 and AVX2: only inside target() functions */
#endif

int sl_png_simd_best(void) {
#if SL_PNG_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) return SL_PNG_SIMD_AVX2;
  return __builtin_cpu_supports("sse4.1") ? SL_PNG_SIMD_SSE41
                                          : SL_PNG_SIMD_SSE2;
#else
  return SL_PNG_SIMD_C;
#endif
}

/* ---------------------------------------------------------------------
 * Portable C
 * --------------------------------------------------------------------- */

static inline uint8_t paeth(int a, int b, int c) {
  int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c);
  if (pa <= pb && pa <= pc) return (uint8_t)a;
  return (uint8_t)(pb <= pc ? b : c);
}

/* Branch-free Paeth for the 1-byte loops: photos make the branches of
 * paeth() unpredictable. Same tie order. */
static inline unsigned paeth_nb(unsigned a, unsigned b, unsigned c) {
  int pa = abs((int)b - (int)c), pb = abs((int)a - (int)c);
  int pc = abs((int)a + (int)b - 2 * (int)c);
  unsigned bc = pb <= pc ? b : c;
  return pa <= pb && pa <= pc ? a : bc;
}

/* bpp 1 (grey8, palette8 and packed low depths): the left neighbour is
 * carried in a register. Through memory (out[i - 1]) every byte would wait
 * for the store of the byte before, since out may alias in or prior. */
static inline __attribute__((always_inline)) void
c_range1(uint8_t *out, const uint8_t *in, const uint8_t *prior, size_t i,
         size_t n, unsigned type) {
  unsigned a = i ? out[i - 1] : 0, c = i ? prior[i - 1] : 0;
  for (; i < n; i++) {
    unsigned b = prior[i];
    if (type == 1) a = (uint8_t)(in[i] + a);
    else if (type == 3) a = (uint8_t)(in[i] + ((a + b) >> 1));
    else a = (uint8_t)(in[i] + paeth_nb(a, b, c));
    out[i] = (uint8_t)a;
    c = b;
  }
}

/* Reconstructs bytes [from, n) of a row whose bytes before `from` are done
 * (the tails the vector kernels leave, or whole rows when from = 0). */
static void c_range(uint8_t *out, const uint8_t *in, const uint8_t *prior,
                    size_t from, size_t n, unsigned bpp, unsigned type) {
  size_t i = from;
  if (bpp == 1 && (type == 1 || type >= 3)) {
    if (type == 1) c_range1(out, in, prior, i, n, 1);
    else if (type == 3) c_range1(out, in, prior, i, n, 3);
    else c_range1(out, in, prior, i, n, 4);
    return;
  }
  switch (type) {
  case 0:
    if (out != in) memmove(out + i, in + i, n - i);
    break;
  case 1:
    for (; i < bpp && i < n; i++) out[i] = in[i];
    for (; i < n; i++) out[i] = (uint8_t)(in[i] + out[i - bpp]);
    break;
  case 2:
    for (; i < n; i++) out[i] = (uint8_t)(in[i] + prior[i]);
    break;
  case 3:
    for (; i < bpp && i < n; i++) out[i] = (uint8_t)(in[i] + (prior[i] >> 1));
    for (; i < n; i++)
      out[i] = (uint8_t)(in[i] + ((out[i - bpp] + prior[i]) >> 1));
    break;
  default:
    for (; i < bpp && i < n; i++) out[i] = (uint8_t)(in[i] + prior[i]);
    for (; i < n; i++)
      out[i] = (uint8_t)(in[i] + paeth(out[i - bpp], prior[i], prior[i - bpp]));
    break;
  }
}

#if SL_PNG_X86
/* ---------------------------------------------------------------------
 * SSE2: one whole pixel (3, 4, 6 or 8 bytes) per step in 16-bit lanes.
 * Each helper is inlined with bpp a compile-time constant (PX_DISPATCH),
 * so moving a pixel is a plain load or store, not a memcpy call.
 * --------------------------------------------------------------------- */
#define PX_INLINE static inline __attribute__((always_inline))

/* Odd sizes are loaded and stored in two pieces assembled in a register: a
 * memcpy of 3 or 6 bytes to or from a local goes through the stack and
 * stalls store forwarding on every pixel. */
PX_INLINE __m128i load8(const uint8_t *p, unsigned bpp) {
  uint32_t lo;
  uint16_t lo16, hi16;
  uint64_t v;
  switch (bpp) {
  case 3:
    memcpy(&lo16, p, 2);
    return _mm_cvtsi32_si128((int)(lo16 | (uint32_t)p[2] << 16));
  case 4: memcpy(&lo, p, 4); return _mm_cvtsi32_si128((int)lo);
  case 6:
    memcpy(&lo, p, 4);
    memcpy(&hi16, p + 4, 2);
    return _mm_cvtsi64_si128((long long)(lo | (uint64_t)hi16 << 32));
  default: memcpy(&v, p, 8); return _mm_cvtsi64_si128((long long)v);
  }
}

PX_INLINE void store8(uint8_t *p, __m128i v, unsigned bpp) {
  uint64_t u = (uint64_t)_mm_cvtsi128_si64(v);
  uint32_t lo = (uint32_t)u;
  uint16_t lo16 = (uint16_t)u, hi16 = (uint16_t)(u >> 32);
  switch (bpp) {
  case 3: memcpy(p, &lo16, 2); p[2] = (uint8_t)(u >> 16); break;
  case 4: memcpy(p, &lo, 4); break;
  case 6: memcpy(p, &lo, 4); memcpy(p + 4, &hi16, 2); break;
  default: memcpy(p, &u, 8); break;
  }
}

/* A pixel widened to 16-bit lanes. */
PX_INLINE __m128i load_wide(const uint8_t *p, unsigned bpp) {
  return _mm_unpacklo_epi8(load8(p, bpp), _mm_setzero_si128());
}

PX_INLINE void store_wide(uint8_t *p, __m128i v, unsigned bpp) {
  store8(p, _mm_packus_epi16(v, v), bpp);
}

PX_INLINE __m128i abs16(__m128i x) {
  return _mm_max_epi16(x, _mm_sub_epi16(_mm_setzero_si128(), x));
}

PX_INLINE void sub_px(uint8_t *out, const uint8_t *in, size_t n,
                      unsigned bpp) {
  __m128i a = _mm_setzero_si128();
  for (size_t i = 0; i + bpp <= n; i += bpp) {
    a = _mm_add_epi8(a, load8(in + i, bpp));
    store8(out + i, a, bpp);
  }
}

PX_INLINE void avg_px(uint8_t *out, const uint8_t *in, const uint8_t *prior,
                      size_t n, unsigned bpp) {
  __m128i a = _mm_setzero_si128(), mask = _mm_set1_epi16(0xff);
  for (size_t i = 0; i + bpp <= n; i += bpp) {
    __m128i b = load_wide(prior + i, bpp), x = load_wide(in + i, bpp);
    a = _mm_and_si128(_mm_add_epi16(x, _mm_srli_epi16(_mm_add_epi16(a, b), 1)),
                      mask);
    store_wide(out + i, a, bpp);
  }
}

/* Paeth, branch-free: pick a where pa <= pb and pa <= pc, else b where
 * pb <= pc, else c (the spec's tie order). */
PX_INLINE void paeth_px(uint8_t *out, const uint8_t *in, const uint8_t *prior,
                        size_t n, unsigned bpp) {
  __m128i a = _mm_setzero_si128(), c = _mm_setzero_si128();
  const __m128i one = _mm_set1_epi16(1), mask = _mm_set1_epi16(0xff);
  for (size_t i = 0; i + bpp <= n; i += bpp) {
    __m128i b = load_wide(prior + i, bpp), x = load_wide(in + i, bpp);
    __m128i pa = abs16(_mm_sub_epi16(b, c)), pb = abs16(_mm_sub_epi16(a, c));
    __m128i pc = abs16(_mm_sub_epi16(_mm_add_epi16(a, b), _mm_add_epi16(c, c)));
    __m128i use_a = _mm_and_si128(_mm_cmplt_epi16(pa, _mm_add_epi16(pb, one)),
                                  _mm_cmplt_epi16(pa, _mm_add_epi16(pc, one)));
    __m128i use_b = _mm_cmplt_epi16(pb, _mm_add_epi16(pc, one));
    __m128i pred = _mm_or_si128(_mm_and_si128(use_b, b), _mm_andnot_si128(use_b, c));
    pred = _mm_or_si128(_mm_and_si128(use_a, a), _mm_andnot_si128(use_a, pred));
    a = _mm_and_si128(_mm_add_epi16(x, pred), mask);
    store_wide(out + i, a, bpp);
    c = b;
  }
}

/* Runs filter helper `px` with bpp as a constant for every pixel size >= 3
 * that PNG has (RGB8, RGBA8 / GA16, RGB16, RGBA16). */
#define PX_DISPATCH(px, ...)                                                   \
  switch (bpp) {                                                               \
  case 3: px(__VA_ARGS__, 3); break;                                           \
  case 4: px(__VA_ARGS__, 4); break;                                           \
  case 6: px(__VA_ARGS__, 6); break;                                           \
  default: px(__VA_ARGS__, 8); break;                                          \
  }

static void row_sse2(uint8_t *out, const uint8_t *in, const uint8_t *prior,
                     size_t n, unsigned bpp, unsigned type) {
  if (type == 1) PX_DISPATCH(sub_px, out, in, n)
  else if (type == 3) PX_DISPATCH(avg_px, out, in, prior, n)
  else PX_DISPATCH(paeth_px, out, in, prior, n)
}

/* ---------------------------------------------------------------------
 * SSE4.1: blocks of 4 pixels of 3 or 4 bytes, one or two rows at a time.
 * A pixel sits in 4 16-bit lanes (RGB gets a zero 4th lane); in the pair
 * kernel lanes 0-3 hold row y and lanes 4-7 row y+1.
 * --------------------------------------------------------------------- */
#define V4 __attribute__((target("sse4.1")))
#define V4_INLINE static inline __attribute__((always_inline, target("sse4.1")))

/* Loads the 4 pixels at p (12 or 16 bytes, never more) widened: pixels 0,1
 * in *lo, 2,3 in *hi. */
V4_INLINE void load_blk(const uint8_t *p, unsigned P, __m128i *lo,
                        __m128i *hi) {
  if (P == 4) {
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
    *lo = _mm_unpacklo_epi8(v, _mm_setzero_si128());
    *hi = _mm_unpackhi_epi8(v, _mm_setzero_si128());
  } else {
    uint32_t t;
    memcpy(&t, p + 8, 4);
    __m128i v = _mm_unpacklo_epi64(
        _mm_loadl_epi64((const __m128i *)(const void *)p),
        _mm_cvtsi32_si128((int)t));
    *lo = _mm_shuffle_epi8(v, _mm_setr_epi8(0, -1, 1, -1, 2, -1, -1, -1, 3,
                                            -1, 4, -1, 5, -1, -1, -1));
    *hi = _mm_shuffle_epi8(v, _mm_setr_epi8(6, -1, 7, -1, 8, -1, -1, -1, 9,
                                            -1, 10, -1, 11, -1, -1, -1));
  }
}

/* Stores 4 pixels (lanes as load_blk gives them) to exactly 12 or 16 bytes. */
V4_INLINE void store_blk(uint8_t *p, unsigned P, __m128i lo, __m128i hi) {
  __m128i v = _mm_packus_epi16(lo, hi);
  if (P == 4) {
    _mm_storeu_si128((__m128i *)(void *)p, v);
  } else {
    v = _mm_shuffle_epi8(v, _mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13,
                                          14, -1, -1, -1, -1));
    _mm_storel_epi64((__m128i *)(void *)p, v);
    uint32_t t = (uint32_t)_mm_cvtsi128_si32(_mm_srli_si128(v, 8));
    memcpy(p + 8, &t, 4);
  }
}

/* Paeth's predictor in 16-bit lanes; the two comparisons are those of the
 * spec (pa <= pb && pa <= pc -> a; pb <= pc -> b; else c), written as
 * "pa > min(pb, pc)" and "pb > pc". pa does not depend on a, so it is off
 * the serial chain. */
V4_INLINE __m128i paeth16(__m128i a, __m128i b, __m128i c) {
  __m128i bc = _mm_sub_epi16(b, c), d = _mm_sub_epi16(a, c);
  __m128i pa = _mm_abs_epi16(bc), pb = _mm_abs_epi16(d);
  __m128i pc = _mm_abs_epi16(_mm_add_epi16(d, bc));
  __m128i not_a = _mm_cmpgt_epi16(pa, _mm_min_epi16(pb, pc));
  __m128i b_or_c = _mm_blendv_epi8(b, c, _mm_cmpgt_epi16(pb, pc));
  return _mm_blendv_epi8(a, b_or_c, not_a);
}

/* The predictor of filter type t (1 Sub, 3 Average, 4 Paeth). */
V4_INLINE __m128i pred(unsigned t, __m128i a, __m128i b, __m128i c) {
  if (t == 1) return a;
  if (t == 3) return _mm_srli_epi16(_mm_add_epi16(a, b), 1);
  return paeth16(a, b, c);
}

/* One pixel step: x + predictor, mod 256. Lanes hold 0..255, so a byte add
 * wraps the low byte and leaves the high byte 0. Types ta (lanes 0-3) and
 * tb (lanes 4-7) are compile-time constants. */
V4_INLINE __m128i step(unsigned ta, unsigned tb, __m128i a, __m128i b,
                       __m128i c, __m128i x) {
  __m128i p = pred(ta, a, b, c);
  if (tb != ta) p = _mm_blend_epi16(p, pred(tb, a, b, c), 0xf0);
  return _mm_add_epi8(x, p);
}

/* One row of type t (1, 3, 4), 4-pixel blocks, C for the tail. */
V4_INLINE void row_k(uint8_t *out, const uint8_t *in, const uint8_t *prior,
                     size_t n, unsigned P, unsigned t) {
  size_t nb = n / P / 4;
  __m128i a = _mm_setzero_si128(), c = _mm_setzero_si128();
  for (size_t k = 0; k < nb; k++) {
    __m128i xl, xh, bl, bh;
    load_blk(in + 4 * P * k, P, &xl, &xh);
    load_blk(prior + 4 * P * k, P, &bl, &bh);
    __m128i b1 = _mm_srli_si128(bl, 8), b3 = _mm_srli_si128(bh, 8);
    __m128i r0 = step(t, t, a, bl, c, xl);
    __m128i r1 = step(t, t, r0, b1, bl, _mm_srli_si128(xl, 8));
    __m128i r2 = step(t, t, r1, bh, b1, xh);
    __m128i r3 = step(t, t, r2, b3, bh, _mm_srli_si128(xh, 8));
    store_blk(out + 4 * P * k, P, _mm_unpacklo_epi64(r0, r1),
              _mm_unpacklo_epi64(r2, r3));
    a = r3;
    c = b3;
  }
  c_range(out, in, prior, 4 * P * nb, n, P, t);
}

/* Rows A (in0 -> out0, above it `prior`) and B (in1 -> out1, above it
 * out0), B one block behind A. In iteration k, lanes 0-3 do A's block k and
 * lanes 4-7 B's block k-1, whose upper neighbours are A's block k-1 from
 * the iteration before. At k = 0 B's lanes see only zeros and produce zeros
 * (every predictor of zeros is 0), which is exactly the "left of pixel 0"
 * state B needs at k = 1. Needs at least one whole block. */
V4_INLINE void pair_k(uint8_t *out0, const uint8_t *in0, uint8_t *out1,
                      const uint8_t *in1, const uint8_t *prior, size_t n,
                      unsigned P, unsigned ta, unsigned tb) {
  size_t nb = n / P / 4, blk = 4 * P;
  const __m128i z = _mm_setzero_si128();
  __m128i a = z, c = z, ul = z, uh = z; /* ul/uh: A's previous block */
  for (size_t k = 0; k < nb; k++) {
    __m128i xal, xah, bal, bah, xbl = z, xbh = z;
    load_blk(in0 + blk * k, P, &xal, &xah);
    load_blk(prior + blk * k, P, &bal, &bah);
    if (k > 0) load_blk(in1 + blk * (k - 1), P, &xbl, &xbh);
    __m128i b0 = _mm_unpacklo_epi64(bal, ul), b1 = _mm_unpackhi_epi64(bal, ul);
    __m128i b2 = _mm_unpacklo_epi64(bah, uh), b3 = _mm_unpackhi_epi64(bah, uh);
    __m128i r0 = step(ta, tb, a, b0, c, _mm_unpacklo_epi64(xal, xbl));
    __m128i r1 = step(ta, tb, r0, b1, b0, _mm_unpackhi_epi64(xal, xbl));
    __m128i r2 = step(ta, tb, r1, b2, b1, _mm_unpacklo_epi64(xah, xbh));
    __m128i r3 = step(ta, tb, r2, b3, b2, _mm_unpackhi_epi64(xah, xbh));
    ul = _mm_unpacklo_epi64(r0, r1);
    uh = _mm_unpacklo_epi64(r2, r3);
    store_blk(out0 + blk * k, P, ul, uh);
    if (k > 0)
      store_blk(out1 + blk * (k - 1), P, _mm_unpackhi_epi64(r0, r1),
                _mm_unpackhi_epi64(r2, r3));
    a = r3;
    c = b3;
  }
  /* A's tail, then B's last block and tail (it needs A's tail above it). */
  c_range(out0, in0, prior, blk * nb, n, P, ta);
  c_range(out1, in1, out0, blk * (nb - 1), n, P, tb);
}

/* ---- 1-byte pixels: eight rows on a diagonal ------------------------------
 * Lane j of a register works on row j, one pixel behind lane j - 1: at step
 * s it reconstructs pixel s - j, whose upper neighbour (pixel s - j of row
 * j - 1) lane j - 1 produced at step s - 1. So "b" is the last result
 * shifted up one lane (lane 0 takes the prior row), "c" is the last b, "a"
 * the last result: eight chains advance per step. Input and output move in
 * blocks of 8 steps: 8 bytes of each row (at offset s0 - j) transposed into
 * 8 per-step vectors and back. Lanes outside their row see zeros, which
 * reproduce PNG's "left of pixel 0 is 0"; their results are not stored. */

/* 8x8 byte transpose: q[j] (low 8 bytes) are the rows; o[i] gets columns
 * 2i and 2i + 1 (8 bytes each). Its own inverse. */
V4_INLINE void tr8(const __m128i q[8], __m128i o[4]) {
  __m128i t0 = _mm_unpacklo_epi8(q[0], q[1]), t1 = _mm_unpacklo_epi8(q[2], q[3]);
  __m128i t2 = _mm_unpacklo_epi8(q[4], q[5]), t3 = _mm_unpacklo_epi8(q[6], q[7]);
  __m128i u0 = _mm_unpacklo_epi16(t0, t1), u1 = _mm_unpackhi_epi16(t0, t1);
  __m128i u2 = _mm_unpacklo_epi16(t2, t3), u3 = _mm_unpackhi_epi16(t2, t3);
  o[0] = _mm_unpacklo_epi32(u0, u2);
  o[1] = _mm_unpackhi_epi32(u0, u2);
  o[2] = _mm_unpacklo_epi32(u1, u3);
  o[3] = _mm_unpackhi_epi32(u1, u3);
}

/* 8 bytes of p at [at, at + 8), zeros outside [0, n). */
V4_INLINE __m128i load8_clip(const uint8_t *p, long at, long n) {
  if (at >= 0 && at + 8 <= n) return _mm_loadl_epi64((const __m128i *)(const void *)(p + at));
  uint8_t t[8] = {0};
  for (long i = 0; i < 8; i++)
    if (at + i >= 0 && at + i < n) t[i] = p[at + i];
  return _mm_loadl_epi64((const __m128i *)(const void *)t);
}

/* Stores the low 8 bytes of v to p[at, at + 8), only inside [0, n). */
V4_INLINE void store8_clip(uint8_t *p, long at, long n, __m128i v) {
  if (at >= 0 && at + 8 <= n) {
    _mm_storel_epi64((__m128i *)(void *)(p + at), v);
    return;
  }
  uint8_t t[8];
  _mm_storel_epi64((__m128i *)(void *)t, v);
  for (long i = 0; i < 8; i++)
    if (at + i >= 0 && at + i < n) p[at + i] = t[i];
}

/* Per-lane predictor: uniform type t (1, 3, 4), or t = 0 with lane masks
 * m[0..3] for Sub, Up, Average, Paeth (a None lane predicts 0). */
V4_INLINE __m128i pred_mix(unsigned t, __m128i a, __m128i b, __m128i c,
                           const __m128i *m) {
  if (t) return pred(t, a, b, c);
  __m128i p = _mm_or_si128(_mm_and_si128(m[0], a), _mm_and_si128(m[1], b));
  p = _mm_or_si128(p, _mm_and_si128(m[2], pred(3, a, b, c)));
  return _mm_or_si128(p, _mm_and_si128(m[3], paeth16(a, b, c)));
}

V4_INLINE void diag_k(uint8_t *const out[8], const uint8_t *const in[8],
                      const uint8_t *prior, long n, unsigned t,
                      const __m128i *m) {
  const __m128i z = _mm_setzero_si128(), lane0 = _mm_cvtsi32_si128(0xffff);
  __m128i r = z, c = z;
  for (long s0 = 0; s0 < n + 7; s0 += 8) {
    __m128i q[8], o[4], x[8], res[8];
    for (int j = 0; j < 8; j++) q[j] = load8_clip(in[j], s0 - j, n);
    tr8(q, o);
    for (int i = 0; i < 4; i++) {
      x[2 * i] = _mm_unpacklo_epi8(o[i], z);
      x[2 * i + 1] = _mm_unpackhi_epi8(o[i], z);
    }
    __m128i up = _mm_unpacklo_epi8(load8_clip(prior, s0, n), z);
    for (int k = 0; k < 8; k++) {
      __m128i b = _mm_or_si128(_mm_slli_si128(r, 2), _mm_and_si128(up, lane0));
      r = _mm_add_epi8(x[k], pred_mix(t, r, b, c, m));
      c = b;
      up = _mm_srli_si128(up, 2);
      res[k] = r;
    }
    for (int k = 0; k < 8; k++) q[k] = _mm_packus_epi16(res[k], res[k]);
    tr8(q, o);
    for (int i = 0; i < 4; i++) {
      store8_clip(out[2 * i], s0 - 2 * i, n, o[i]);
      store8_clip(out[2 * i + 1], s0 - 2 * i - 1, n, _mm_srli_si128(o[i], 8));
    }
  }
}

static V4 void diag_v4(uint8_t *const out[8], const uint8_t *const in[8],
                       const unsigned type[8], const uint8_t *prior,
                       size_t n) {
  unsigned t = type[0];
  for (int j = 1; j < 8; j++)
    if (type[j] != t) t = 0;
  if (t == 1) diag_k(out, in, prior, (long)n, 1, NULL);
  else if (t == 3) diag_k(out, in, prior, (long)n, 3, NULL);
  else if (t == 4) diag_k(out, in, prior, (long)n, 4, NULL);
  else {
    __m128i m[4];
    for (int f = 0; f < 4; f++) {
      uint16_t lanes[8];
      for (int j = 0; j < 8; j++) lanes[j] = type[j] == (unsigned)f + 1 ? 0xffff : 0;
      m[f] = _mm_loadu_si128((const __m128i *)(const void *)lanes);
    }
    diag_k(out, in, prior, (long)n, 0, m);
  }
}

static V4 void row_v4(uint8_t *out, const uint8_t *in, const uint8_t *prior,
                      size_t n, unsigned P, unsigned t) {
  if (P == 3) {
    if (t == 1) row_k(out, in, prior, n, 3, 1);
    else if (t == 3) row_k(out, in, prior, n, 3, 3);
    else row_k(out, in, prior, n, 3, 4);
  } else {
    if (t == 1) row_k(out, in, prior, n, 4, 1);
    else if (t == 3) row_k(out, in, prior, n, 4, 3);
    else row_k(out, in, prior, n, 4, 4);
  }
}

/* Instantiates pair_k for each (type A, type B) with P constant. */
#define PAIR_TB(P, TA)                                                         \
  do {                                                                         \
    if (tb == 1) pair_k(out0, in0, out1, in1, prior, n, P, TA, 1);             \
    else if (tb == 3) pair_k(out0, in0, out1, in1, prior, n, P, TA, 3);        \
    else pair_k(out0, in0, out1, in1, prior, n, P, TA, 4);                     \
  } while (0)
#define PAIR_TA(P)                                                             \
  do {                                                                         \
    if (ta == 1) PAIR_TB(P, 1);                                                \
    else if (ta == 3) PAIR_TB(P, 3);                                           \
    else PAIR_TB(P, 4);                                                        \
  } while (0)

static V4 void pair_v4(uint8_t *out0, const uint8_t *in0, uint8_t *out1,
                       const uint8_t *in1, const uint8_t *prior, size_t n,
                       unsigned P, unsigned ta, unsigned tb) {
  if (P == 3) PAIR_TA(3);
  else PAIR_TA(4);
}

/* ---------------------------------------------------------------------
 * AVX2: four rows of 3- or 4-byte pixels, 256-bit registers. Lanes 0-3
 * row A (block k), 4-7 row B (block k-1), 8-11 row C (k-2), 12-15 row D
 * (k-3): the SSE4.1 pair twice over, the upper half taking its upper
 * neighbours from the lower half's previous outputs. Rows of different
 * types (any of the five) mix through lane masks.
 * --------------------------------------------------------------------- */
#define V8 __attribute__((target("avx2")))
#define V8_INLINE static inline __attribute__((always_inline, target("avx2")))

/* Blocks p (lower half) and q (upper half), widened like load_blk. */
V8_INLINE void load_blk2(const uint8_t *p, const uint8_t *q, unsigned P,
                         __m256i *lo, __m256i *hi) {
  __m128i pl, ph, ql, qh;
  const __m128i z = _mm_setzero_si128();
  if (P == 4) {
    __m128i a = p ? _mm_loadu_si128((const __m128i *)(const void *)p) : z;
    __m128i b = q ? _mm_loadu_si128((const __m128i *)(const void *)q) : z;
    __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1);
    *lo = _mm256_unpacklo_epi8(v, _mm256_setzero_si256());
    *hi = _mm256_unpackhi_epi8(v, _mm256_setzero_si256());
    return;
  }
  if (p) load_blk(p, 3, &pl, &ph); else pl = ph = z;
  if (q) load_blk(q, 3, &ql, &qh); else ql = qh = z;
  *lo = _mm256_inserti128_si256(_mm256_castsi128_si256(pl), ql, 1);
  *hi = _mm256_inserti128_si256(_mm256_castsi128_si256(ph), qh, 1);
}

/* Stores the lower half's block to p and the upper half's to q (NULL:
 * that row is not active in this iteration). */
V8_INLINE void store_blk2(uint8_t *p, uint8_t *q, unsigned P, __m256i lo,
                          __m256i hi) {
  if (p) store_blk(p, P, _mm256_castsi256_si128(lo), _mm256_castsi256_si128(hi));
  if (q) store_blk(q, P, _mm256_extracti128_si256(lo, 1), _mm256_extracti128_si256(hi, 1));
}

V8_INLINE __m256i paeth256(__m256i a, __m256i b, __m256i c) {
  __m256i bc = _mm256_sub_epi16(b, c), d = _mm256_sub_epi16(a, c);
  __m256i pa = _mm256_abs_epi16(bc), pb = _mm256_abs_epi16(d);
  __m256i pc = _mm256_abs_epi16(_mm256_add_epi16(d, bc));
  __m256i not_a = _mm256_cmpgt_epi16(pa, _mm256_min_epi16(pb, pc));
  __m256i b_or_c = _mm256_blendv_epi8(b, c, _mm256_cmpgt_epi16(pb, pc));
  return _mm256_blendv_epi8(a, b_or_c, not_a);
}

/* Uniform type t (1, 3, 4), or t = 0: lane masks m[0..3] for Sub, Up,
 * Average, Paeth (a None lane predicts 0). */
V8_INLINE __m256i pred8(unsigned t, __m256i a, __m256i b, __m256i c,
                        const __m256i *m) {
  __m256i avg = _mm256_srli_epi16(_mm256_add_epi16(a, b), 1);
  if (t == 1) return a;
  if (t == 3) return avg;
  if (t == 4) return paeth256(a, b, c);
  __m256i p = _mm256_or_si256(_mm256_and_si256(m[0], a), _mm256_and_si256(m[1], b));
  p = _mm256_or_si256(p, _mm256_and_si256(m[2], avg));
  return _mm256_or_si256(p, _mm256_and_si256(m[3], paeth256(a, b, c)));
}

V8_INLINE void quad_k(uint8_t *const out[4], const uint8_t *const in[4],
                      const unsigned type[4], const uint8_t *prior, size_t n,
                      unsigned P, unsigned t, const __m256i *m) {
  size_t nb = n / P / 4, blk = 4 * P;
  const __m256i z = _mm256_setzero_si256();
  __m256i a = z, c = z, oacl = z, oach = z, obdl = z, obdh = z;
  for (size_t k = 0; k < nb + 3; k++) {
    /* row R works on block k - R when that block exists */
    const uint8_t *ip[4];
    uint8_t *op[4];
    for (int r = 0; r < 4; r++) {
      int on = k >= (size_t)r && k - r < nb;
      ip[r] = on ? in[r] + blk * (k - r) : NULL;
      op[r] = on ? out[r] + blk * (k - r) : NULL;
    }
    __m256i xacl, xach, xbdl, xbdh, bal, bah;
    load_blk2(ip[0], ip[2], P, &xacl, &xach);
    load_blk2(ip[1], ip[3], P, &xbdl, &xbdh);
    load_blk2(k < nb ? prior + blk * k : NULL, NULL, P, &bal, &bah);
    /* upper neighbours: A <- prior, C <- B's last block; B <- A's, D <- C's */
    __m256i bacl = _mm256_permute2x128_si256(bal, obdl, 0x20);
    __m256i bach = _mm256_permute2x128_si256(bah, obdh, 0x20);
    __m256i b0 = _mm256_unpacklo_epi64(bacl, oacl), b1 = _mm256_unpackhi_epi64(bacl, oacl);
    __m256i b2 = _mm256_unpacklo_epi64(bach, oach), b3 = _mm256_unpackhi_epi64(bach, oach);
    __m256i r0 = _mm256_add_epi8(_mm256_unpacklo_epi64(xacl, xbdl), pred8(t, a, b0, c, m));
    __m256i r1 = _mm256_add_epi8(_mm256_unpackhi_epi64(xacl, xbdl), pred8(t, r0, b1, b0, m));
    __m256i r2 = _mm256_add_epi8(_mm256_unpacklo_epi64(xach, xbdh), pred8(t, r1, b2, b1, m));
    __m256i r3 = _mm256_add_epi8(_mm256_unpackhi_epi64(xach, xbdh), pred8(t, r2, b3, b2, m));
    oacl = _mm256_unpacklo_epi64(r0, r1);
    oach = _mm256_unpacklo_epi64(r2, r3);
    obdl = _mm256_unpackhi_epi64(r0, r1);
    obdh = _mm256_unpackhi_epi64(r2, r3);
    store_blk2(op[0], op[2], P, oacl, oach);
    store_blk2(op[1], op[3], P, obdl, obdh);
    a = r3;
    c = b3;
  }
  for (int r = 0; r < 4; r++) /* tails, each after the row above it */
    c_range(out[r], in[r], r ? out[r - 1] : prior, blk * nb, n, P, type[r]);
}

static V8 void quad_v8(uint8_t *const out[4], const uint8_t *const in[4],
                       const unsigned type[4], const uint8_t *prior,
                       size_t n, unsigned P) {
  unsigned t = type[0];
  for (int j = 1; j < 4; j++)
    if (type[j] != t) t = 0;
  if (t != 1 && t != 3 && t != 4) t = 0;
  if (t) {
    if (P == 3) {
      if (t == 1) quad_k(out, in, type, prior, n, 3, 1, NULL);
      else if (t == 3) quad_k(out, in, type, prior, n, 3, 3, NULL);
      else quad_k(out, in, type, prior, n, 3, 4, NULL);
    } else {
      if (t == 1) quad_k(out, in, type, prior, n, 4, 1, NULL);
      else if (t == 3) quad_k(out, in, type, prior, n, 4, 3, NULL);
      else quad_k(out, in, type, prior, n, 4, 4, NULL);
    }
    return;
  }
  __m256i m[4];
  for (int f = 0; f < 4; f++) {
    uint16_t lanes[16];
    for (int j = 0; j < 16; j++) lanes[j] = type[j / 4] == (unsigned)f + 1 ? 0xffff : 0;
    m[f] = _mm256_loadu_si256((const __m256i *)(const void *)lanes);
  }
  if (P == 3) quad_k(out, in, type, prior, n, 3, 0, m);
  else quad_k(out, in, type, prior, n, 4, 0, m);
}
#endif /* SL_PNG_X86 */

/* ---------------------------------------------------------------------
 * Dispatch
 * --------------------------------------------------------------------- */

#if SL_PNG_X86
/* Types with a serial chain: Sub, Average, Paeth. */
static int chained(unsigned type) { return type == 1 || type >= 3; }
#endif

void sl_png_unfilter_row(int simd, uint8_t *out, const uint8_t *in,
                         const uint8_t *prior, size_t n, unsigned bpp,
                         unsigned type) {
#if SL_PNG_X86
  if (chained(type) && simd >= SL_PNG_SIMD_SSE41 && (bpp == 3 || bpp == 4)) {
    row_v4(out, in, prior, n, bpp, type);
    return;
  }
  if (chained(type) && simd >= SL_PNG_SIMD_SSE2 && bpp >= 3) {
    row_sse2(out, in, prior, n, bpp, type);
    return;
  }
#else
  (void)simd;
#endif
  c_range(out, in, prior, 0, n, bpp, type);
}

int sl_png_unfilter_group(int simd, unsigned bpp, size_t n) {
#if SL_PNG_X86
  if (simd >= SL_PNG_SIMD_SSE41 && bpp == 1 && n >= 16) return 8;
  if (simd >= SL_PNG_SIMD_AVX2 && (bpp == 3 || bpp == 4) && n >= 16 * bpp)
    return 4;
#else
  (void)simd, (void)bpp, (void)n;
#endif
  return 2;
}

void sl_png_unfilter_rows(int simd, int k, uint8_t *const out[],
                          const uint8_t *const in[], const unsigned type[],
                          const uint8_t *prior, size_t n, unsigned bpp) {
#if SL_PNG_X86
  if (k == 8 && sl_png_unfilter_group(simd, bpp, n) == 8) {
    diag_v4(out, in, type, prior, n);
    return;
  }
  if (k == 4 && sl_png_unfilter_group(simd, bpp, n) == 4) {
    quad_v8(out, in, type, prior, n, bpp);
    return;
  }
#endif
  for (int j = 0; j < k; j += 2) {
    const uint8_t *above = j ? out[j - 1] : prior;
    if (j + 1 < k)
      sl_png_unfilter_rows2(simd, out[j], in[j], out[j + 1], in[j + 1], above,
                            n, bpp, type[j], type[j + 1]);
    else
      sl_png_unfilter_row(simd, out[j], in[j], above, n, bpp, type[j]);
  }
}

void sl_png_unfilter_rows2(int simd, uint8_t *out0, const uint8_t *in0,
                           uint8_t *out1, const uint8_t *in1,
                           const uint8_t *prior, size_t n, unsigned bpp,
                           unsigned t0, unsigned t1) {
#if SL_PNG_X86
  if (simd >= SL_PNG_SIMD_SSE41 && (bpp == 3 || bpp == 4) && chained(t0) &&
      chained(t1) && n >= 8 * bpp) {
    pair_v4(out0, in0, out1, in1, prior, n, bpp, t0, t1);
    return;
  }
#endif
  sl_png_unfilter_row(simd, out0, in0, prior, n, bpp, t0);
  sl_png_unfilter_row(simd, out1, in1, out0, n, bpp, t1);
}
