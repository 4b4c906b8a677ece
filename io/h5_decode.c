/*
 * h5_decode.c -- `h5.decode`, the CPU half of h5.read: turns its chunk
 * items (h5_internal.h) into ARRAY items, on all cores.
 *
 * RAW chunks go backwards through their filter pipeline -- fletcher32
 * (checked, as HDF5 does, against the checksum and its pre-1.6.3 byte-swapped
 * variant), deflate (zlib streams, with libdeflate), shuffle -- skipping the
 * filters the chunk's mask says were not applied. The decoded chunk must be
 * exactly chunk-shape x element-size bytes; it is then clipped to the
 * dataset's extent (edge chunks), byte-swapped and converted in one pass
 * into the output block. FILL items are expanded, PLAIN items passed on
 * (converted when dtype= asks). Whenever the bytes can be used as they are
 * (a full chunk, unfiltered, native order and type) the output is a view of
 * the input block: no copy.
 *
 * MAPPED chunks of up to READ_MAX bytes (h5.read's pieces) are read with
 * pread: straight into the output block when they need no work, else into
 * a scratch buffer and decoded as RAW. Larger ones are first mapped from
 * the file (mmap, private, pages populated up front), then decoded as
 * RAW; when the view case applies the output is a view of the mapping
 * itself (a foreign block that unmaps at its last release), so unfiltered
 * data goes from the page cache to the next stage with no copy. Either
 * way the file is opened by name (h5.file) and must be the one h5.read
 * opened (same device and inode) and still hold the chunk; each worker
 * keeps its last file open.
 *
 * The input is checked before use (it is BYTES, which anything could
 * produce): magic, mode, rank, dtypes, shapes within extents, sizes.
 * Per-worker scratch buffers; no shared state, so no locks.
 */
#include <errno.h>
#include <fcntl.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <inttypes.h>
#include <libdeflate.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h5_internal.h"
#include "io_internal.h"

typedef struct dec_local {
  sl_worker *w;
  char prefix[700]; /* "FILE: dataset NAME: chunk [origin]: " for messages */
  struct libdeflate_decompressor *z;
  unsigned char *buf[3]; /* [0], [1]: filters; [2]: bytes read by pread */
  size_t cap[3];
  int fd; /* MAPPED: the last file mapped from, -1 if none */
  uint64_t dev, ino;
} dec_local;

#define MAX_BYTES (UINT64_C(1) << 33)
/* MAPPED chunks up to this size are read with pread, larger ones mapped. */
#define READ_MAX (UINT64_C(1) << 20)

/* A failure of the current item, prefixed with its file and dataset. */
static int derr(dec_local *L, const char *fmt, ...) SL_PRINTF(2, 3);
static int derr(dec_local *L, const char *fmt, ...) {
  char msg[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return sl_worker_errorf(L->w, "%s%s", L->prefix, msg);
}

/* ---------------------------------------------------------------------- */
/* checks                                                                  */

static bool dtype_ok(sl_dtype t) { return t >= SL_DT_I8 && t <= SL_DT_F64; }

/* @return NULL when the header is usable, else why not. */
static const char *header_problem(const sl_payload *pl, const sl__h5_chunk *h,
                                  uint64_t *elems) {
  if (pl->size < SL__H5_HDR_SIZE || h->magic != SL__H5_MAGIC)
    return "not an h5.read chunk (h5.decode must follow h5.read)";
  if (h->data_size != pl->size - SL__H5_HDR_SIZE) return "chunk size mismatch";
  if (h->mode < SL__H5_RAW || h->mode > SL__H5_MAPPED) return "unknown chunk mode";
  if (h->mode == SL__H5_ERROR) return NULL;
  bool raw = h->mode == SL__H5_RAW || h->mode == SL__H5_MAPPED;
  if (h->mode == SL__H5_MAPPED &&
      (h->data_size != 0 || h->stored_size > MAX_BYTES ||
       h->file_offset > (uint64_t)INT64_MAX - h->stored_size))
    return "bad mapped chunk";
  const sl_array_desc *a = &h->array;
  if (a->ndim > SL_MAX_DIMS || h->nfilters > SL__H5_MAX_FILTERS) return "bad rank";
  if (!dtype_ok(h->src) || !dtype_ok(h->out) || a->dtype != h->out) return "bad dtype";
  uint64_t n = 1, c = 1;
  for (uint32_t d = 0; d < a->ndim; d++) {
    if (a->origin[d] > a->whole[d] || a->shape[d] > a->whole[d] - a->origin[d])
      return "chunk outside the dataset";
    if (raw && (h->chunk[d] == 0 || a->shape[d] > h->chunk[d] || h->chunk[d] > MAX_BYTES))
      return "bad chunk shape";
    if (a->shape[d] > MAX_BYTES || (n && a->shape[d] && n > MAX_BYTES / a->shape[d]))
      return "chunk too large";
    n *= a->shape[d];
    if (raw) {
      if (c > MAX_BYTES / h->chunk[d]) return "chunk too large";
      c *= h->chunk[d];
    }
  }
  if (n * sl_dtype_size(h->out) > MAX_BYTES || c * sl_dtype_size(h->src) > MAX_BYTES)
    return "chunk too large";
  if (h->mode == SL__H5_FILL && h->data_size != sl_dtype_size(h->src))
    return "bad fill value";
  if (h->mode == SL__H5_PLAIN && h->data_size != n * sl_dtype_size(h->src))
    return "chunk size mismatch";
  *elems = n;
  return NULL;
}

/* ---------------------------------------------------------------------- */
/* filters                                                                 */

static int grow(dec_local *L, int i, size_t need) {
  if (L->cap[i] >= need) return 0;
  unsigned char *b = realloc(L->buf[i], need ? need : 1);
  if (!b) return SL_ENOMEM;
  L->buf[i] = b;
  L->cap[i] = need;
  return 0;
}

/* HDF5's Fletcher-32 (H5_checksum_fletcher32): 16-bit big-endian words. */
static uint32_t fletcher32(const unsigned char *p, size_t len) {
  uint32_t s1 = 0, s2 = 0;
  size_t words = len / 2;
  while (words) {
    size_t t = words > 360 ? 360 : words;
    words -= t;
    do {
      s1 += (uint32_t)((p[0] << 8) | p[1]);
      p += 2;
      s2 += s1;
    } while (--t);
    s1 = (s1 & 0xffff) + (s1 >> 16);
    s2 = (s2 & 0xffff) + (s2 >> 16);
  }
  if (len % 2) {
    s1 += (uint32_t)(p[0] << 8);
    s2 += s1;
    s1 = (s1 & 0xffff) + (s1 >> 16);
    s2 = (s2 & 0xffff) + (s2 >> 16);
  }
  s1 = (s1 & 0xffff) + (s1 >> 16);
  s2 = (s2 & 0xffff) + (s2 >> 16);
  return (s2 << 16) | s1;
}

static bool fletcher_ok(const unsigned char *p, size_t n) {
  uint32_t stored = (uint32_t)p[n] | (uint32_t)p[n + 1] << 8 |
                    (uint32_t)p[n + 2] << 16 | (uint32_t)p[n + 3] << 24;
  uint32_t f = fletcher32(p, n);
  /* Files from HDF5 < 1.6.3 stored the two 16-bit halves' bytes swapped. */
  uint32_t r = ((f & 0x00ff00ffu) << 8) | ((f & 0xff00ff00u) >> 8);
  return stored == f || stored == r;
}

#if defined(__SSE2__)
/* Elements [0, 16k) of the shuffle of 2-, 4- or 8-byte elements, 16 at a
 * time: byte j of element i is src[j * elems + i]. A byte transpose by
 * unpacking: bytes of two planes interleave into pairs, pairs into
 * quads, quads into eights (SSE2, every x86-64). @return elements done. */
static size_t unshuffle_sse2(unsigned char *dst, const unsigned char *src,
                             size_t elems, size_t es) {
  size_t i = 0;
  const unsigned char *p = src;
  if (es == 2) {
    for (; i + 16 <= elems; i += 16) {
      __m128i a0 = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
      __m128i a1 = _mm_loadu_si128((const __m128i *)(const void *)(p + elems + i));
      __m128i *o = (__m128i *)(void *)(dst + i * 2);
      _mm_storeu_si128(o, _mm_unpacklo_epi8(a0, a1));
      _mm_storeu_si128(o + 1, _mm_unpackhi_epi8(a0, a1));
    }
  } else if (es == 4) {
    for (; i + 16 <= elems; i += 16) {
      __m128i a[4], b[4];
      for (int j = 0; j < 4; j++)
        a[j] = _mm_loadu_si128((const __m128i *)(const void *)(p + j * elems + i));
      b[0] = _mm_unpacklo_epi8(a[0], a[1]);
      b[1] = _mm_unpackhi_epi8(a[0], a[1]);
      b[2] = _mm_unpacklo_epi8(a[2], a[3]);
      b[3] = _mm_unpackhi_epi8(a[2], a[3]);
      __m128i *o = (__m128i *)(void *)(dst + i * 4);
      _mm_storeu_si128(o, _mm_unpacklo_epi16(b[0], b[2]));
      _mm_storeu_si128(o + 1, _mm_unpackhi_epi16(b[0], b[2]));
      _mm_storeu_si128(o + 2, _mm_unpacklo_epi16(b[1], b[3]));
      _mm_storeu_si128(o + 3, _mm_unpackhi_epi16(b[1], b[3]));
    }
  } else if (es == 8) {
    for (; i + 16 <= elems; i += 16) {
      __m128i a[8], b[8], c[8];
      for (int j = 0; j < 8; j++)
        a[j] = _mm_loadu_si128((const __m128i *)(const void *)(p + j * elems + i));
      for (int j = 0; j < 8; j += 2) { /* bytes j, j+1 of elements 0-7, 8-15 */
        b[j] = _mm_unpacklo_epi8(a[j], a[j + 1]);
        b[j + 1] = _mm_unpackhi_epi8(a[j], a[j + 1]);
      }
      for (int j = 0; j < 8; j += 4) { /* bytes j..j+3 of elements 0-3, ... */
        c[j] = _mm_unpacklo_epi16(b[j], b[j + 2]);
        c[j + 1] = _mm_unpackhi_epi16(b[j], b[j + 2]);
        c[j + 2] = _mm_unpacklo_epi16(b[j + 1], b[j + 3]);
        c[j + 3] = _mm_unpackhi_epi16(b[j + 1], b[j + 3]);
      }
      __m128i *o = (__m128i *)(void *)(dst + i * 8);
      for (int q = 0; q < 4; q++) { /* whole elements: 2 per register */
        _mm_storeu_si128(o + 2 * q, _mm_unpacklo_epi32(c[q], c[q + 4]));
        _mm_storeu_si128(o + 2 * q + 1, _mm_unpackhi_epi32(c[q], c[q + 4]));
      }
    }
  }
  return i;
}
#endif

static void unshuffle(unsigned char *dst, const unsigned char *src, size_t n,
                      size_t es) {
  size_t elems = n / es, i0 = 0;
#if defined(__SSE2__)
  i0 = unshuffle_sse2(dst, src, elems, es);
#endif
  for (size_t j = 0; j < es; j++) {
    const unsigned char *s = src + j * elems;
    for (size_t i = i0; i < elems; i++) dst[i * es + j] = s[i];
  }
  memcpy(dst + elems * es, src + elems * es, n - elems * es); /* leftovers */
}

/* The index of the filter undone last when it writes a new buffer
 * (deflate, shuffle), or -1: no filter applies, or the last one undone is
 * fletcher32 (a checksum written before the other filters is still on the
 * writer's output, 4 bytes past the chunk). */
static int last_writer(const sl__h5_chunk *h) {
  for (int i = 0; i < (int)h->nfilters; i++)
    if (!(h->filter_mask & (1u << i))) return h->filters[i] == 3 ? -1 : i;
  return -1;
}

static int wrong_size(dec_local *L, size_t n, uint64_t want) {
  return derr(L, "decoded chunk has %zu bytes, expected %" PRIu64 " (corrupt chunk)", n,
              want);
}

/* Undoes the filters of a RAW chunk. *data and *n give the result: the
 * input itself when no filter applied, else `final` when given (the
 * output block: the last filter writes there, sparing a copy; it must hold
 * `want` bytes), else a scratch buffer. */
static int unfilter(dec_local *L, const sl__h5_chunk *h, uint64_t want,
                    unsigned char *final, const unsigned char **data, size_t *n) {
  int cur = -1; /* scratch buffer holding *data, -1: the input */
  int last = final ? last_writer(h) : -1;
  for (int i = (int)h->nfilters - 1; i >= 0; i--) {
    if (h->filter_mask & (1u << i)) continue;
    int next = cur == 0 ? 1 : 0;
    unsigned char *to = NULL; /* the output block, for the last writer */
    if (i == last) to = final;
    switch (h->filters[i]) {
    case 3:
      if (*n < 4) return derr(L, "fletcher32: chunk shorter than its checksum");
      *n -= 4;
      if (!fletcher_ok(*data, *n))
        return derr(L, "data error detected by the Fletcher32 checksum "
                                   "(the chunk is corrupt)");
      continue;
    case 2:
      if (to && *n != want) return wrong_size(L, *n, want); /* `to` holds want */
      if (!to && grow(L, next, *n) < 0) return SL_ENOMEM;
      unshuffle(to ? to : L->buf[next], *data, *n, sl_dtype_size(h->src));
      break;
    case 1: {
      size_t cap = to ? (size_t)want : (size_t)want + 64, got = 0;
      if (!to && grow(L, next, cap) < 0) return SL_ENOMEM;
      enum libdeflate_result r = libdeflate_zlib_decompress(L->z, *data, *n,
                                                            to ? to : L->buf[next], cap, &got);
      if (r != LIBDEFLATE_SUCCESS)
        return derr(L, "deflate: %s (the chunk is corrupt)",
                                r == LIBDEFLATE_INSUFFICIENT_SPACE
                                    ? "decompresses to more than the chunk size"
                                    : "invalid zlib stream");
      *n = got;
      break;
    }
    default:
      return derr(L, "filter %u is not handled by h5.decode", h->filters[i]);
    }
    *data = to ? to : L->buf[next];
    cur = to ? -1 : next;
  }
  return *n == want ? 0 : wrong_size(L, *n, want);
}

/* ---------------------------------------------------------------------- */
/* output                                                                  */

static void set_desc(sl_item *out, const sl__h5_chunk *h) {
  sl_array_desc a = h->array;
  int64_t s = (int64_t)sl_dtype_size(h->out);
  for (int d = (int)a.ndim - 1; d >= 0; d--) {
    a.strides[d] = s;
    s *= (int64_t)a.shape[d];
  }
  out->payload.u.array = a;
}

/* Global index of flat element `k` of the item, for messages. */
static void element_name(const sl__h5_chunk *h, uint64_t k, char *buf, size_t len) {
  uint64_t idx[SL_MAX_DIMS];
  for (int d = (int)h->array.ndim - 1; d >= 0; d--) {
    uint64_t s = h->array.shape[d] ? h->array.shape[d] : 1;
    idx[d] = h->array.origin[d] + k % s;
    k /= s;
  }
  size_t o = (size_t)snprintf(buf, len, "[");
  for (uint32_t d = 0; d < h->array.ndim && o < len; d++)
    o += (size_t)snprintf(buf + o, len - o, "%s%" PRIu64, d ? "," : "", idx[d]);
  if (o < len) snprintf(buf + o, len - o, "]");
}

static int convert_error(dec_local *L, const sl__h5_chunk *h, uint64_t k) {
  char el[200];
  element_name(h, k, el, sizeof el);
  return derr(L, "element %s: value does not fit %s (dtype=)", el,
                          sl_dtype_name(h->out));
}

/* Copies the clipped shape out of a full chunk (C order), converting. */
static int clip_convert(dec_local *L, const sl__h5_chunk *h, unsigned char *dst,
                        const unsigned char *src, bool swap) {
  const sl_array_desc *a = &h->array;
  size_t ss = sl_dtype_size(h->src), ds = sl_dtype_size(h->out), bad = 0;
  uint32_t nd = a->ndim;
  uint64_t row = nd ? a->shape[nd - 1] : 1, rows = 1, cs[SL_MAX_DIMS];
  bool full = true;
  for (uint32_t d = 0; d < nd; d++) full &= a->shape[d] == h->chunk[d];
  for (uint32_t d = 0; d + 1 < nd; d++) rows *= a->shape[d];
  if (full || nd <= 1) { row *= rows; rows = 1; }
  uint64_t s = 1;
  for (int d = (int)nd - 1; d >= 0; d--) { cs[d] = s; s *= h->chunk[d]; }
  uint64_t idx[SL_MAX_DIMS] = {0};
  for (uint64_t r = 0; r < rows; r++) {
    uint64_t off = 0;
    for (uint32_t d = 0; d + 1 < nd; d++) off += idx[d] * cs[d];
    if (sl__h5_convert(dst + r * row * ds, h->out, src + off * ss, h->src, swap,
                       (size_t)row, &bad))
      return convert_error(L, h, r * row + bad);
    for (int d = (int)nd - 2; d >= 0; d--) { /* next row */
      if (++idx[d] < a->shape[d]) break;
      idx[d] = 0;
    }
  }
  return 0;
}

static int alloc_out(sl_worker *w, const sl_item *in, uint64_t bytes,
                     sl_item **out, unsigned char **data) {
  sl_block *b = NULL;
  int rc = sl_worker_alloc(w, (size_t)bytes, &b);
  if (rc < 0) return rc == SL_ECANCELED ? rc : sl_worker_errorf(w, "cannot "
                      "allocate %" PRIu64 " bytes: %s", bytes, sl_strerror(rc));
  sl_item *it = sl_item_derive(in);
  if (!it) {
    sl_block_release(b);
    return SL_ENOMEM;
  }
  sl_item_set_block(it, SL_KIND_ARRAY, b, 0, (size_t)bytes);
  *out = it;
  *data = sl_block_data(b);
  return 0;
}

/* The output is a view of the input's data (no copy). */
static int view_out(const sl_item *in, const sl__h5_chunk *h, sl_item **out) {
  sl_item *it = sl_item_derive(in);
  if (!it) return SL_ENOMEM;
  sl_item_set_block(it, SL_KIND_ARRAY, sl_block_retain(in->payload.block),
                    (size_t)((const unsigned char *)in->payload.data -
                             (const unsigned char *)sl_block_data(in->payload.block)) +
                        SL__H5_HDR_SIZE,
                    (size_t)h->data_size);
  set_desc(it, h);
  *out = it;
  return 0;
}

/* ---------------------------------------------------------------------- */
/* mapped chunks                                                           */

static void unmap_block(void *ctx, void *data, size_t size) {
  (void)ctx;
  munmap(data, size);
}

/* Opens the file of MAPPED chunk h (kept open for the next chunks) and
 * checks that it is the one h5.read listed and still holds the chunk. */
static int chunk_file(dec_local *L, const sl_item *in, const sl__h5_chunk *h) {
  char eb[128];
  if (L->fd < 0 || L->dev != h->file_dev || L->ino != h->file_ino) {
    const char *f = sl_item_meta_get(in, "h5.file");
    if (!f) return derr(L, "no h5.file metadata (h5.decode must follow h5.read)");
    if (L->fd >= 0) close(L->fd);
    L->fd = open(f, O_RDONLY | O_CLOEXEC);
    if (L->fd < 0)
      return derr(L, "cannot open the file again to read the chunk: %s",
                  sl__io_strerror(errno, eb, sizeof eb));
    struct stat st;
    if (fstat(L->fd, &st) < 0 || (uint64_t)st.st_dev != h->file_dev ||
        (uint64_t)st.st_ino != h->file_ino) {
      close(L->fd);
      L->fd = -1;
      return derr(L, "the file was replaced while it was being read");
    }
    L->dev = h->file_dev;
    L->ino = h->file_ino;
  }
  struct stat st;
  uint64_t end = h->file_offset + h->stored_size;
  if (fstat(L->fd, &st) < 0 || (uint64_t)st.st_size < end)
    return derr(L, "the file shrank while it was being read (the chunk ends at "
                "byte %" PRIu64 ")", end);
  return 0;
}

/* Reads the stored bytes of MAPPED chunk h into dst (pread: for small
 * ranges a copy costs less than a mapping's page-table work, and leaves
 * the bytes in this core's cache). */
static int read_chunk(dec_local *L, const sl_item *in, const sl__h5_chunk *h,
                      unsigned char *dst) {
  int rc = chunk_file(L, in, h);
  if (rc < 0) return rc;
  size_t done = 0, len = (size_t)h->stored_size;
  while (done < len) {
    ssize_t k = pread(L->fd, dst + done, len - done, (off_t)(h->file_offset + done));
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      char eb[128];
      return derr(L, "cannot read %" PRIu64 " bytes of the file at offset %" PRIu64
                  " (it shrank, or an I/O error): %s", h->stored_size, h->file_offset,
                  k < 0 ? sl__io_strerror(errno, eb, sizeof eb) : "end of file");
    }
    done += (size_t)k;
  }
  return 0;
}

/* Maps the stored bytes of MAPPED chunk h: *base and *len describe the
 * mapping, *data its first byte. */
static int map_chunk(dec_local *L, const sl_item *in, const sl__h5_chunk *h,
                     void **base, size_t *len, const unsigned char **data) {
  char eb[128];
  int rc = chunk_file(L, in, h);
  if (rc < 0) return rc;
  uint64_t end = h->file_offset + h->stored_size;
  long pg = sysconf(_SC_PAGESIZE);
  uint64_t page = pg > 0 ? (uint64_t)pg : 4096;
  uint64_t start = h->file_offset / page * page;
  *len = (size_t)(end - start);
  if (*len == 0) *len = 1;
  /* Private and writable: a later stage may write to its input without
   * touching the file; pages are shared with the page cache until then. */
  void *m = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_PRIVATE, L->fd, (off_t)start);
  if (m == MAP_FAILED)
    return derr(L, "cannot map %" PRIu64 " bytes of the file: %s", h->stored_size,
                sl__io_strerror(errno, eb, sizeof eb));
#ifdef MADV_POPULATE_READ
  /* One call instead of a fault per 64 KiB; and a file cut short since the
   * fstat above fails here (EFAULT), as an error, where touching the
   * missing pages later would raise SIGBUS. EINVAL: a kernel before 5.14. */
  if (madvise(m, *len, MADV_POPULATE_READ) != 0 && errno != EINVAL) {
    int e = errno;
    munmap(m, *len);
    return derr(L, "cannot read %" PRIu64 " bytes of the file at offset %" PRIu64
                " (it shrank, or an I/O error): %s", h->stored_size, h->file_offset,
                sl__io_strerror(e, eb, sizeof eb));
  }
#endif
  *base = m;
  *data = (const unsigned char *)m + (h->file_offset - start);
  return 0;
}

/* The output is a view of the mapping: it becomes the item's block. */
static int map_view_out(const sl_item *in, const sl__h5_chunk *h, void **base,
                        size_t len, const unsigned char *data, sl_item **out) {
  sl_item *it = sl_item_derive(in);
  if (!it) return SL_ENOMEM;
  sl_block *b = sl_block_wrap(*base, len, unmap_block, NULL);
  if (!b) {
    sl_item_destroy(it);
    return SL_ENOMEM;
  }
  *base = NULL; /* the block owns the mapping now */
  sl_item_set_block(it, SL_KIND_ARRAY, b, (size_t)(data - (const unsigned char *)sl_block_data(b)),
                    (size_t)h->stored_size);
  set_desc(it, h);
  *out = it;
  return 0;
}

/* Ends an output decoded into its own block: described on success,
 * dropped on failure. @return rc. */
static int finish_out(sl_item **out, const sl__h5_chunk *h, int rc) {
  if (rc < 0) {
    sl_item_destroy(*out);
    *out = NULL;
    return rc;
  }
  set_desc(*out, h);
  return 0;
}

static bool native_big(void) {
  const uint16_t one = 1;
  unsigned char b;
  memcpy(&b, &one, 1);
  return b == 0;
}

static int decode(sl_worker *w, dec_local *L, const sl_item *in,
                  const sl__h5_chunk *h, uint64_t n, sl_item **out) {
  const unsigned char *data = (const unsigned char *)h + SL__H5_HDR_SIZE;
  size_t ss = sl_dtype_size(h->src), ds = sl_dtype_size(h->out), bad = 0;
  bool swap = h->mode != SL__H5_PLAIN && (h->big_endian != 0) != native_big() && ss > 1;
  if (h->mode == SL__H5_PLAIN && h->out == h->src) return view_out(in, h, out);
  uint64_t chunk_elems = 1;
  bool full = true;
  for (uint32_t d = 0; d < h->array.ndim; d++) {
    chunk_elems *= h->chunk[d];
    full &= h->chunk[d] == h->array.shape[d];
  }
  size_t len = (size_t)h->data_size;
  void *map = NULL;
  size_t map_len = 0;
  int rc = 0;
  unsigned char *dst = NULL;
  if (h->mode == SL__H5_MAPPED && h->stored_size <= READ_MAX) {
    len = (size_t)h->stored_size;
    /* Whole, unfiltered and native: read straight into the output. */
    if (full && !swap && h->out == h->src && h->nfilters == 0 && len == n * ds) {
      if ((rc = alloc_out(w, in, n * ds, out, &dst)) < 0) return rc;
      return finish_out(out, h, read_chunk(L, in, h, dst));
    }
    if ((rc = grow(L, 2, len)) < 0 || (rc = read_chunk(L, in, h, L->buf[2])) < 0)
      return rc;
    data = L->buf[2];
  } else if (h->mode == SL__H5_MAPPED) {
    if ((rc = map_chunk(L, in, h, &map, &map_len, &data)) < 0) return rc;
    len = (size_t)h->stored_size;
  }
  bool raw = h->mode == SL__H5_RAW || h->mode == SL__H5_MAPPED;
  /* A whole chunk that needs only its filters undone: the last filter
   * writes straight into the output block. */
  bool into = raw && full && !swap && h->out == h->src && last_writer(h) >= 0;
  if (into && (rc = alloc_out(w, in, n * ds, out, &dst)) < 0) {
    if (map) munmap(map, map_len);
    return rc;
  }
  if (raw) {
    const unsigned char *stored = data;
    rc = unfilter(L, h, chunk_elems * ss, dst, &data, &len);
    if (into) { /* decoded into dst, or failed */
      if (map) munmap(map, map_len);
      return finish_out(out, h, rc);
    }
    if (rc == 0 && full && !swap && h->out == h->src && data == stored) {
      if (h->mode == SL__H5_RAW) return view_out(in, h, out);
      if (map && (uintptr_t)data % ss == 0) { /* else copied below */
        rc = map_view_out(in, h, &map, map_len, data, out);
        if (map) munmap(map, map_len);
        return rc;
      }
    }
  }
  if (rc == 0) rc = alloc_out(w, in, n * ds, out, &dst);
  if (rc < 0) {
    if (map) munmap(map, map_len);
    return rc;
  }
  if (h->mode == SL__H5_RAW || h->mode == SL__H5_MAPPED) {
    rc = clip_convert(L, h, dst, data, swap);
  } else if (h->mode == SL__H5_PLAIN) {
    if (sl__h5_convert(dst, h->out, data, h->src, false, (size_t)n, &bad))
      rc = convert_error(L, h, bad);
  } else { /* FILL */
    if (n && sl__h5_convert(dst, h->out, data, h->src, swap, 1, &bad))
      rc = convert_error(L, h, 0);
    for (uint64_t i = 1; rc == 0 && i < n; i++) memcpy(dst + i * ds, dst, ds);
  }
  if (map) munmap(map, map_len);
  return finish_out(out, h, rc);
}

/* ---------------------------------------------------------------------- */
/* callbacks                                                               */

static int dec_process(sl_worker *w, sl_item *in, sl_item **out) {
  dec_local *L = sl_worker_local(w);
  *out = NULL;
  if (in->payload.kind != SL_KIND_BYTES || !in->payload.data)
    return sl_worker_errorf(w, "expected bytes from h5.read, got %s",
                            sl_kind_name(in->payload.kind));
  const sl__h5_chunk *h = in->payload.data;
  const char *f = sl_item_meta_get(in, "h5.file"), *ds = sl_item_meta_get(in, "h5.dataset");
  L->w = w;
  snprintf(L->prefix, sizeof L->prefix, "%.300s: dataset %.200s: chunk %.150s: ",
           f ? f : "?", ds ? ds : "?", in->name);
  uint64_t n = 0;
  const char *why = header_problem(&in->payload, h, &n);
  if (why) return sl_worker_errorf(w, "%s", why);
  if (h->mode == SL__H5_ERROR) {
    const char *msg = (const char *)h + SL__H5_HDR_SIZE;
    size_t len = (size_t)h->data_size;
    return sl_worker_errorf(w, "%.*s", (int)(len ? strnlen(msg, len) : 0), msg);
  }
  return decode(w, L, in, h, n, out);
}

static int dec_open(sl_worker *w, void **local) {
  (void)w;
  dec_local *L = calloc(1, sizeof *L);
  if (!L) return SL_ENOMEM;
  if (!(L->z = libdeflate_alloc_decompressor())) {
    free(L);
    return SL_ENOMEM;
  }
  L->fd = -1;
  *local = L;
  return 0;
}

static void dec_close(sl_worker *w) {
  dec_local *L = sl_worker_local(w);
  if (!L) return;
  libdeflate_free_decompressor(L->z);
  if (L->fd >= 0) close(L->fd);
  free(L->buf[0]);
  free(L->buf[1]);
  free(L->buf[2]);
  free(L);
}

const sl_stage_def sl__stage_h5_decode = {
    .name = "h5.decode",
    .summary = "decode h5.read's chunks into arrays (inserted after h5.read)",
    .help =
        "The CPU half of h5.read, which the pipeline inserts right after it:\n"
        "undoes fletcher32 (checked), deflate and shuffle on raw chunks, clips\n"
        "edge chunks to the dataset's extent, fills unwritten chunks with the\n"
        "fill value, swaps big-endian data and converts to h5.read's dtype=.\n"
        "Runs on all cores (one chunk per thread). A corrupt chunk fails its\n"
        "own item only. Chunks that need no work pass through without a copy.",
    .exec = SL_EXEC_CPU,
    .in_kind = SL_KIND_BYTES,
    .out_kind = SL_KIND_ARRAY,
    .open = dec_open,
    .process = dec_process,
    .close = dec_close,
};
