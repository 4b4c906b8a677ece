/*
 * png_internal.h -- PNG decoder and encoder shared inside io/ (private).
 *
 * png_read.c implements the decode half (below), png_write.c the encode half
 * (at the end), png_stages.c glues both into the `png.decode` / `png.encode`
 * stages. Nothing here is public API; only "sluice.h" types are used, so the
 * tests can include this header without libpng's or libdeflate's headers.
 */
#ifndef SLUICE_PNG_INTERNAL_H
#define SLUICE_PNG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* ======================================================================
 * Decode (png_read.c)
 * ====================================================================== */

/* Default limits for sl_png_probe(). The pixel cap is Pillow's
 * DecompressionBombError threshold (2 x 89,478,485 px), which users coming
 * from Python already know; the byte cap bounds one decoded image. */
#define SL_PNG_DEFAULT_MAX_PIXELS UINT64_C(178956970)
#define SL_PNG_DEFAULT_MAX_BYTES (UINT64_C(1) << 30)

/* What a PNG decodes to. Output normalisation (both decode paths):
 *   grey 1/2/4 bit       -> 8-bit grey, scaled by bit replication (1 -> 255)
 *   grey/RGB 8 and 16    -> unchanged depth; 16-bit samples in native order
 *   grey/RGB with tRNS   -> grey+alpha / RGBA (alpha 0 where the colour key
 *                           matches, max elsewhere), same depth
 *   palette 1/2/4/8 bit  -> RGB8, or RGBA8 when tRNS is present; indices past
 *                           the end of PLTE decode as opaque black (as libpng
 *                           and libspng do)
 *   grey+alpha, RGBA     -> unchanged
 *   Adam7                -> de-interlaced
 * No gamma correction; gAMA, cHRM, iCCP, sRGB, sBIT, bKGD are ignored. */
typedef struct sl_png_info {
  uint32_t width, height;
  uint32_t channels; /* output: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA */
  uint32_t depth;    /* output bits per sample: 8 or 16 (16: native order) */
  size_t stride;     /* output bytes per row = width*channels*depth/8 */
  size_t work_bytes; /* dst size for sl_png_decoder_decode_into() to
                        decode in place, without a scratch copy of the
                        rows: stride*height, plus height when the rows need
                        no conversion (non-interlaced 8/16-bit grey, GA,
                        RGB, RGBA without tRNS) */
  uint8_t color_type, bit_depth, interlace; /* as in IHDR */
} sl_png_info;

/* Validates the whole chunk stream of the PNG file in buf[0..len) -- the
 * signature, IHDR, every chunk's length, type and CRC-32, chunk order, PLTE and
 * tRNS -- and fills *info. Nothing is allocated. width*height is checked
 * against max_pixels right after IHDR, and the decoded size (stride*height)
 * against max_bytes. Decoding then needs, besides the caller's output, about
 * as much again for the filtered rows plus a copy of the IDAT data. Pass
 * UINT64_MAX for no limit.
 * Policy -- strict, and shared by probe and both decoders, so the two decode
 * paths accept exactly the same files:
 *  - every chunk lies wholly inside the buffer ("truncated: ..." otherwise),
 *    has a length <= 2^31-1, a type of four letters, and a CRC-32 that is
 *    checked: a mismatch in IHDR, PLTE, IDAT, IEND or tRNS rejects the file;
 *    any other ancillary chunk with a bad CRC is ignored (as libpng and
 *    libspng do: it is metadata we do not use);
 *  - IHDR first and once; PLTE at most once, before tRNS and IDAT, 1..256
 *    entries, never in a grey image, required for a palette image; tRNS at
 *    most once, before IDAT, after PLTE, of the right size and in range,
 *    never with an alpha channel; IDAT chunks consecutive; an unknown
 *    critical chunk rejects the file, unknown ancillary chunks are skipped;
 *    a known fixed-size ancillary chunk (gAMA, cHRM, sRGB, pHYs, tIME, oFFs,
 *    sTER, sBIT, bKGD, hIST) of the wrong length rejects the file;
 *  - IEND is required (a file without it is taken as truncated); bytes
 *    after IEND are ignored;
 *  - at decode time: the zlib stream must inflate to exactly the size IHDR
 *    implies (too few rows and too much data are both errors) with a correct
 *    Adler-32; whole IDAT chunks after the end of the stream are ignored,
 *    stray bytes after it inside its last chunk are an error (libpng's rule);
 *    a row filter type above 4 is an error.
 * @return 0; SL_EFORMAT or SL_ELIMIT with a one-line message in err (always
 * NUL-terminated when errlen > 0; err may be NULL), e.g. "not a PNG file (bad
 * signature)", "IHDR: width is 0", "image is 50000x50000 = 2500000000 pixels,
 * above max_pixels=178956970". On SL_ELIMIT *info is filled. Thread-safe. */
int sl_png_probe(const void *buf, size_t len, uint64_t max_pixels,
                 uint64_t max_bytes, sl_png_info *info, char *err,
                 size_t errlen);

/* Decodes the image into dst, which the caller allocated with
 * info->stride * info->height bytes; *info must come from sl_png_probe() on
 * the same bytes. The fast path: libdeflate inflates the concatenated IDAT
 * data in one call, rows are unfiltered and converted straight into dst. The
 * caller keeps ownership of buf and dst; dst's contents are unspecified after
 * an error. Thread-safe: no process-global state.
 * @return 0; SL_EINVAL when *info does not describe buf; SL_ENOMEM;
 * SL_EFORMAT with a message naming the cause ("IDAT: CRC mismatch",
 * "zlib stream: adler32 mismatch", "truncated: image data ends after 1234 of
 * 5000 rows", "PLTE missing for palette image", ...). */
int sl_png_decode(const void *buf, size_t len, const sl_png_info *info,
                  void *dst, char *err, size_t errlen);

/* A reusable decode context for the fast path: the libdeflate decompressor
 * and the scratch buffers (inflated rows, concatenated IDAT data), kept
 * between calls so a worker decoding many images does not re-allocate and
 * re-fault them for each one (measured on a 12 MP RGB photo: ~90 ms through
 * a kept decoder, ~200 ms one-shot, most of the difference being the kernel
 * zeroing fresh pages). Keep one per worker thread (a stage's
 * per-worker state); a decoder is not itself thread-safe. Scratch buffers
 * larger than retain_bytes are freed at the end of each call, so a worker
 * holds at most about 2 x retain_bytes between images (0: hold nothing).
 * @return the decoder, owned by the caller, or NULL when out of memory. */
typedef struct sl_png_decoder sl_png_decoder;
sl_png_decoder *sl_png_decoder_create(size_t retain_bytes);
/* Frees the decoder and its buffers; NULL is a no-op. */
void sl_png_decoder_destroy(sl_png_decoder *dec);
/* sl_png_decode() through `dec`; same contract and output. */
int sl_png_decoder_decode(sl_png_decoder *dec, const void *buf, size_t len,
                          const sl_png_info *info, void *dst, char *err,
                          size_t errlen);

/* sl_png_probe() through `dec`: same checks, limits and result; besides,
 * the IDAT payloads are concatenated into the decoder's scratch while their
 * CRCs are checked (each chunk copied while it is still in cache), and the
 * scan is kept, so that the next sl_png_decoder_decode*() of the same
 * buffer (same pointer and length, unchanged in between: the caller's
 * promise) skips its own validation pass and the separate copy. Any other
 * decode call forgets it. */
int sl_png_decoder_probe(sl_png_decoder *dec, const void *buf, size_t len,
                         uint64_t max_pixels, uint64_t max_bytes,
                         sl_png_info *info, char *err, size_t errlen);

/* As sl_png_decoder_decode() into dst[0..dst_cap). With dst_cap >=
 * info->work_bytes the zlib stream is inflated into dst itself and the rows
 * are unfiltered in place (no scratch buffer of the image's size: one pass
 * less over memory and nothing to fault in); the bytes past
 * stride*height are then scratch. Otherwise as sl_png_decoder_decode().
 * @return as sl_png_decode(); SL_EINVAL when dst_cap < stride*height. */
int sl_png_decoder_decode_into(sl_png_decoder *dec, const void *buf,
                               size_t len, const sl_png_info *info, void *dst,
                               size_t dst_cap, char *err, size_t errlen);

/* Same contract and same output, decoded by libpng (the reference path, used
 * by differential tests, and by sl_png_decode() itself in the rare case where
 * zlib accepts a deflate stream libdeflate refuses). libpng's messages are
 * returned as they are (prefixed with the chunk name, e.g. "IDAT: incorrect
 * data check"). One known difference: libpng stops reading the zlib stream
 * after the last row when the rest of it (end marker, Adler-32, stray bytes
 * after it) lies in a later IDAT chunk, so it can accept damage there that
 * the fast path, which always checks the stream to its end, rejects. */
int sl_png_decode_libpng(const void *buf, size_t len, const sl_png_info *info,
                         void *dst, char *err, size_t errlen);

/* Unfiltering kernels (png_unfilter.c), shared with the tests so that each
 * SIMD level is checked against libpng on the machine that runs them. */
enum {
  SL_PNG_SIMD_C = 0,    /* portable C only */
  SL_PNG_SIMD_SSE2 = 1, /* x86-64 baseline: pixels of 3..8 bytes */
  SL_PNG_SIMD_SSE41 = 2, /* + 4-pixel blocks, rows interleaved (2 or 8) */
  SL_PNG_SIMD_AVX2 = 3   /* + four rows of 3/4-byte pixels at once */
};
/* @return the highest level this CPU runs (a run-time check). */
int sl_png_simd_best(void);
/* Decodes with at most `level` (SL_PNG_SIMD_*; the CPU's best is used when
 * level is higher). For tests and benchmarks; a new decoder uses the best. */
void sl_png_decoder_set_simd(sl_png_decoder *dec, int level);
/* Reconstructs one row of n bytes with filter `type` (0..4) from in into out
 * (which may equal in, or start before it: see below); prior is the
 * reconstructed row above (zeros for a first row); bpp is the filter distance
 * (bytes per pixel, >= 1). */
void sl_png_unfilter_row(int simd, uint8_t *out, const uint8_t *in,
                         const uint8_t *prior, size_t n, unsigned bpp,
                         unsigned type);
/* How many consecutive rows the kernels of `simd` reconstruct together for
 * rows of n bytes with filter distance bpp: 8 (1-byte pixels, SSE4.1), 4
 * (3/4-byte pixels, AVX2) or 2. */
int sl_png_unfilter_group(int simd, unsigned bpp, size_t n);
/* k consecutive rows (k = 1, 2 or sl_png_unfilter_group()): in[j] -> out[j]
 * with filter type[j] (0..4), row j's prior being out[j-1] and row 0's
 * `prior`. Same bytes as k sl_png_unfilter_row() calls. Aliasing as for
 * sl_png_unfilter_rows2(); no out[j] may overlap another row's input. */
void sl_png_unfilter_rows(int simd, int k, uint8_t *const out[],
                          const uint8_t *const in[], const unsigned type[],
                          const uint8_t *prior, size_t n, unsigned bpp);
/* Two consecutive rows at once: in0 -> out0 above which is prior, then
 * in1 -> out1 above which is out0. Same bytes as two sl_png_unfilter_row()
 * calls. Each output may equal its input or start before it (forward
 * in-place decoding: every byte is read before anything at or after its
 * output position is written); out0 must not overlap in1 or prior. */
void sl_png_unfilter_rows2(int simd, uint8_t *out0, const uint8_t *in0,
                           uint8_t *out1, const uint8_t *in1,
                           const uint8_t *prior, size_t n, unsigned bpp,
                           unsigned t0, unsigned t1);

/* ======================================================================
 * Encode (png_write.c) -- declarations below this line belong to the
 * encoder.
 * ====================================================================== */

/* Filter strategies. NONE..PAETH are PNG's filter type bytes; AUTO picks
 * one per row (libpng's minimum-sum-of-absolute-differences heuristic). */
enum {
  SL_PNG_FILTER_NONE = 0,
  SL_PNG_FILTER_SUB = 1,
  SL_PNG_FILTER_UP = 2,
  SL_PNG_FILTER_AVG = 3,
  SL_PNG_FILTER_PAETH = 4,
  SL_PNG_FILTER_AUTO = 5
};

/* Worst-case size of the PNG sl_png_encode() writes for such an image, at
 * any level and filter: allocate this much for the output.
 * @return the bound, or 0 when the arguments are invalid (w or h 0 or above
 * 2^31-1, channels outside 1..4, depth not 8/16) or the size overflows. */
size_t sl_png_encode_bound(uint32_t w, uint32_t h, uint32_t channels,
                           uint32_t depth);

/* Encodes an image as PNG into dst[0..dst_cap): 8 or 16 bits per sample
 * (16-bit samples in native byte order), 1..4 channels (gray, gray+alpha,
 * RGB, RGBA), `stride` bytes between row starts, zlib `level` 0..9, filter
 * SL_PNG_FILTER_*. Writes only IHDR, IDAT and IEND (no metadata).
 * Thread-safe (allocates its own scratch; see sl_png_encoder to reuse it).
 * @return 0 with *out_len = bytes written; SL_EINVAL (bad arguments),
 * SL_ERANGE (dst too small: pass sl_png_encode_bound() bytes), SL_ENOMEM.
 * On failure a message goes to err[0..errlen) (may be NULL). The caller
 * keeps ownership of pixels and dst. */
int sl_png_encode(const void *pixels, size_t stride, uint32_t w, uint32_t h,
                  uint32_t channels, uint32_t depth, int level, int filter,
                  void *dst, size_t dst_cap, size_t *out_len, char *err,
                  size_t errlen);

/* A reusable encoder: keeps its libdeflate compressors (one per level used)
 * and scratch buffers between images, so a worker allocates once. One
 * thread at a time; create one per worker. */
typedef struct sl_png_encoder sl_png_encoder;
/* @return 0 or SL_ENOMEM; the caller owns *out. */
int sl_png_encoder_create(sl_png_encoder **out);
void sl_png_encoder_destroy(sl_png_encoder *enc); /* NULL ok */
/* As sl_png_encode(), with enc's cached compressor and scratch. */
int sl_png_encoder_encode(sl_png_encoder *enc, const void *pixels,
                          size_t stride, uint32_t w, uint32_t h,
                          uint32_t channels, uint32_t depth, int level,
                          int filter, void *dst, size_t dst_cap,
                          size_t *out_len, char *err, size_t errlen);
/* Largest IDAT payload enc writes (default and maximum 2^31-1; 0 resets).
 * Smaller values exist for tests of the chunk splitting. */
void sl_png_encoder_set_idat_max(sl_png_encoder *enc, size_t max);

#endif
