/*
 * png_stages.c -- the `png.decode` and `png.encode` stages: glue between
 * the engine's items and the PNG reader (png_read.c) and writer
 * (png_write.c).
 *
 * png.decode turns a BYTES payload (a whole PNG file, as files.read emits)
 * into an IMAGE payload. It reads the header first (sl_png_decoder_probe,
 * which validates every chunk and CRC and gathers the IDAT data on the way)
 * and checks the pixel count and the decoded size against max_pixels and
 * max_bytes before anything is allocated, so a small hostile file cannot
 * make the run allocate gigabytes; only then does it take work_bytes
 * (stride * height, plus one byte per row where the rows need no
 * conversion) from the arena and decode into them: libdeflate inflates
 * straight into the block and the rows are unfiltered in place, so a photo
 * costs no image-sized scratch. The payload is the first stride * height
 * bytes. Each worker keeps one sl_png_decoder (decompressor and scratch, at
 * most about 2 x `scratch` bytes between images), so pages are not
 * re-faulted for every image.
 *
 * png.encode turns an IMAGE payload back into BYTES: it takes the
 * encoder's worst-case bound from the arena, encodes into it and sets the
 * payload size to the real length. Each worker keeps one sl_png_encoder
 * (its libdeflate compressor and scratch buffers) from open() to close(),
 * so thousands of thumbnails cost one set of allocations per thread.
 *
 * Both replace the payload of the incoming item in place and only once
 * everything succeeded: a failed item is left untouched for a retry, and
 * the block allocated for it is released. Errors carry the codec's message
 * ("not a PNG file (bad signature)"); the engine adds item and stage.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "io_internal.h"
#include "png_internal.h"

/* Pillow's decompression-bomb *error* threshold: twice its warning limit
 * of 89 478 485 pixels (= 1024 * 1024 * 1024 / 4 / 3). */
#define DEFAULT_MAX_PIXELS "178956970"

typedef struct decode_params {
  int64_t max_pixels;
  uint64_t max_bytes;
  uint64_t scratch;
} decode_params;

typedef struct encode_params {
  int64_t level;
  int filter; /* index into "auto|none|sub|up|avg|paeth" */
} encode_params;

/* Describes an allocation failure. @return SL_ECANCELED unchanged, else
 * SL_ESTAGE. */
static int alloc_error(sl_worker *w, int rc, size_t size, const char *what) {
  char sz[32];
  if (rc == SL_ECANCELED) return rc;
  return sl_worker_errorf(w, "cannot allocate %s for the %s: %s",
                          sl__io_format_size(size, sz, sizeof sz), what,
                          sl_strerror(rc));
}

/* ---------------------------------------------------------------------- */
/* png.decode                                                              */

/* The worker's decoder (libdeflate decompressor and scratch buffers)
 * lives from open() to close(). */
static int decode_open(sl_worker *w, void **local) {
  const decode_params *p = sl_worker_params(w);
  size_t keep = p->scratch > SIZE_MAX ? SIZE_MAX : (size_t)p->scratch;
  *local = sl_png_decoder_create(keep);
  return *local ? 0 : SL_ENOMEM;
}

static void decode_close(sl_worker *w) {
  sl_png_decoder_destroy(sl_worker_local(w));
}

/* On success the payload of `in` becomes the decoded image and *out = in;
 * on failure `in` is untouched and *out = NULL. */
static int decode_process(sl_worker *w, sl_item *in, sl_item **out) {
  const decode_params *p = sl_worker_params(w);
  const sl_payload *pl = &in->payload;
  char err[256] = "";
  sl_png_info info;
  *out = NULL;
  if (pl->kind != SL_KIND_BYTES || pl->size == 0)
    return sl_worker_errorf(w, "not a PNG file (empty input)");
  int rc = sl_png_decoder_probe(sl_worker_local(w), pl->data, pl->size,
                                (uint64_t)p->max_pixels, p->max_bytes, &info,
                                err, sizeof err);
  if (rc < 0) return sl_worker_errorf(w, "%s", err);
  /* work_bytes (at most 0.1% more than the image) lets the decoder inflate
   * into the block itself and unfilter in place: no scratch copy of the
   * image, one pass less over memory */
  size_t size = info.stride * info.height;
  sl_block *block;
  if ((rc = sl_worker_alloc(w, info.work_bytes, &block)) < 0)
    return alloc_error(w, rc, info.work_bytes, "decoded image");
  rc = sl_png_decoder_decode_into(sl_worker_local(w), pl->data, pl->size,
                                  &info, sl_block_data(block),
                                  info.work_bytes, err, sizeof err);
  if (rc < 0) {
    sl_block_release(block);
    return sl_worker_errorf(w, "%s", err);
  }
  sl_item_set_block(in, SL_KIND_IMAGE, block, 0, size);
  in->payload.u.image = (sl_image_desc){info.width, info.height,
                                        info.channels, info.depth,
                                        info.stride};
  *out = in;
  return 0;
}

static const sl_param_def decode_params_table[] = {
    {"max_pixels", SL_PARAM_INT, offsetof(decode_params, max_pixels),
     DEFAULT_MAX_PIXELS, 1, 4.0e18, NULL,
     "images with more pixels fail (their item only) before any memory is "
     "allocated; the default is Pillow's decompression-bomb error limit"},
    {"max_bytes", SL_PARAM_SIZE, offsetof(decode_params, max_bytes), "2GiB", 1,
     1152921504606846976.0 /* 1 EiB */, NULL,
     "images whose decoded pixels would take more bytes fail the same way"},
    {"scratch", SL_PARAM_SIZE, offsetof(decode_params, scratch), "64MiB", 0,
     1152921504606846976.0 /* 1 EiB */, NULL,
     "decode buffers each worker keeps between images (about twice this at "
     "most); larger ones are freed after their image"},
    SL_PARAM_END,
};

const sl_stage_def sl__stage_png_decode = {
    .name = "png.decode",
    .summary = "decode PNG files into images (8/16-bit gray, GA, RGB, RGBA)",
    .help =
        "Decodes a BYTES payload holding a whole PNG file (files.read's\n"
        "output) into an IMAGE: every colour type and bit depth, palette and\n"
        "tRNS, Adam7 interlace, normalised to 8- or 16-bit gray, gray+alpha,\n"
        "RGB or RGBA (16-bit samples in native byte order).\n"
        "The header is checked before any memory is allocated: more than\n"
        "max_pixels pixels (default 178956970, Pillow's decompression-bomb\n"
        "error limit, twice its warning limit) or more than max_bytes of\n"
        "decoded pixels fail the item, so a tiny hostile file cannot claim\n"
        "gigabytes. Corrupt input (bad signature or CRC, truncated data, bad\n"
        "zlib stream, missing PLTE, zero or absurd dimensions) fails its item\n"
        "with the cause, e.g. \"not a PNG file (bad signature)\"; the run's\n"
        "--on-error policy decides what follows.\n"
        "Example: files.list dir=in glob=*.png ! files.read ! png.decode ! ...",
    .exec = SL_EXEC_CPU,
    .in_kind = SL_KIND_BYTES,
    .out_kind = SL_KIND_IMAGE,
    .params = decode_params_table,
    .params_size = sizeof(decode_params),
    .open = decode_open,
    .process = decode_process,
    .close = decode_close,
};

/* ---------------------------------------------------------------------- */
/* png.encode                                                              */

static const int filter_of_choice[] = {
    SL_PNG_FILTER_AUTO, SL_PNG_FILTER_NONE, SL_PNG_FILTER_SUB,
    SL_PNG_FILTER_UP,   SL_PNG_FILTER_AVG,  SL_PNG_FILTER_PAETH};

/* The worker's encoder lives from open() to close(). */
static int encode_open(sl_worker *w, void **local) {
  sl_png_encoder *enc;
  (void)w;
  int rc = sl_png_encoder_create(&enc);
  *local = rc == 0 ? enc : NULL;
  return rc;
}

static void encode_close(sl_worker *w) {
  sl_png_encoder_destroy(sl_worker_local(w));
}

/* @return 0 when the payload really holds the image its descriptor claims
 * (so the encoder reads no byte outside the block), else SL_ESTAGE. */
static int check_image(sl_worker *w, const sl_payload *pl) {
  const sl_image_desc *d = &pl->u.image;
  if (pl->kind != SL_KIND_IMAGE)
    return sl_worker_errorf(w, "expected an image payload, got %s",
                            sl_kind_name(pl->kind));
  uint64_t row = (uint64_t)d->width * d->channels * (d->depth / 8);
  if (d->height == 0 || d->stride < row ||
      (uint64_t)d->stride * (d->height - 1) + row > pl->size)
    return sl_worker_errorf(w, "image payload of %zu bytes does not hold "
                               "%" PRIu32 "x%" PRIu32 "x%" PRIu32 " at stride "
                               "%zu", pl->size, d->width, d->height,
                            d->channels, d->stride);
  return 0;
}

/* On success the payload of `in` becomes the PNG file and *out = in; on
 * failure `in` is untouched and *out = NULL. */
static int encode_process(sl_worker *w, sl_item *in, sl_item **out) {
  const encode_params *p = sl_worker_params(w);
  const sl_image_desc *d = &in->payload.u.image;
  char err[256] = "";
  *out = NULL;
  int rc = check_image(w, &in->payload);
  if (rc < 0) return rc;
  size_t bound = sl_png_encode_bound(d->width, d->height, d->channels,
                                     d->depth);
  if (bound == 0)
    return sl_worker_errorf(w, "cannot write a %" PRIu32 "x%" PRIu32
                               " image with %" PRIu32 " channels of %" PRIu32
                               " bits as PNG", d->width, d->height,
                            d->channels, d->depth);
  sl_block *block;
  if ((rc = sl_worker_alloc(w, bound, &block)) < 0)
    return alloc_error(w, rc, bound, "PNG output");
  size_t len;
  rc = sl_png_encoder_encode(sl_worker_local(w), in->payload.data, d->stride,
                             d->width, d->height, d->channels, d->depth,
                             (int)p->level, filter_of_choice[p->filter],
                             sl_block_data(block), bound, &len, err,
                             sizeof err);
  if (rc < 0) {
    sl_block_release(block);
    return sl_worker_errorf(w, "PNG encoding failed: %s", err);
  }
  sl_item_set_block(in, SL_KIND_BYTES, block, 0, len);
  *out = in;
  return 0;
}

static const sl_param_def encode_params_table[] = {
    {"level", SL_PARAM_INT, offsetof(encode_params, level), "6", 0, 9, NULL,
     "zlib compression level: 0 stores, 1 fastest, 6 the usual default, 9 "
     "smallest"},
    {"filter", SL_PARAM_CHOICE, offsetof(encode_params, filter), "auto", 0, 0,
     "auto|none|sub|up|avg|paeth",
     "PNG row filter; auto picks one per row like libpng (none at level 0)"},
    SL_PARAM_END,
};

const sl_stage_def sl__stage_png_encode = {
    .name = "png.encode",
    .summary = "encode images as PNG files (8/16-bit, 1-4 channels)",
    .help =
        "Encodes an IMAGE payload as a PNG file (BYTES), ready for\n"
        "files.write: 8- or 16-bit gray, gray+alpha, RGB or RGBA, not\n"
        "interlaced. Only IHDR, IDAT and IEND are written (metadata is\n"
        "stripped). Compression uses libdeflate at the zlib-equivalent\n"
        "`level` (6 by default, like zlib and libpng); `filter` chooses the\n"
        "row filter, `auto` picking per row the filter with the smallest sum\n"
        "of absolute differences, as libpng does.\n"
        "Example: ... ! resize fit=256x256 ! png.encode level=6 ! files.write "
        "dir=out",
    .exec = SL_EXEC_CPU,
    .in_kind = SL_KIND_IMAGE,
    .out_kind = SL_KIND_BYTES,
    .params = encode_params_table,
    .params_size = sizeof(encode_params),
    .open = encode_open,
    .process = encode_process,
    .close = encode_close,
};
