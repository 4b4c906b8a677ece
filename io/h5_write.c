/*
 * h5_write.c -- `h5.write`, a sink writing ARRAY items into one dataset of
 * a new HDF5 file (or TABLE items as one 1-D dataset per column).
 *
 * Arrays. Items may come in any order, from any number of workers: each is
 * placed at its origin; the first one fixes dtype and whole shape (which
 * every other must repeat). The file is created at the first item as a
 * temporary next to file= (".<name>.sluice-tmp-<pid>-<random>") and renamed
 * over file= when the last worker finishes, after checking that every
 * element of the whole arrived exactly once (counted: items never overlap
 * when they come from h5.read, and a missing one -- a chunk that failed
 * upstream -- must not leave a file with holes of fill values). On any
 * failure, or when the run stops, the temporary is removed: the output is
 * complete or absent.
 *
 * Chunk-aligned items (those from h5.read, when chunks= matches) are
 * encoded by the worker itself -- padded to the full chunk, shuffled,
 * deflated with libdeflate -- outside every lock, then stored with
 * H5Dwrite_chunk: compression runs on all workers, and only the write
 * itself is serial. Other items are cut along the chunk grid and put
 * together into whole chunks first (assemble(), below). Uncompressed
 * chunks of 256 KiB and more skip even that lock: the dataset is allocated
 * at creation and workers copy chunks straight into the mapped file
 * (map_output(), below).
 *
 * Attributes of the source dataset (item metadata h5.file / h5.dataset,
 * set by h5.read) are copied to the new dataset before it is published;
 * reference-typed ones are skipped (they would point into the old file).
 *
 * Tables (reduction results): gathered in memory by seq (h5_table.c) and
 * written at the end into group dataset=, one dataset per column.
 *
 * Lock order: S->mu, then the HDF5 lock. Encoding holds neither.
 */
#define _GNU_SOURCE /* fallocate(2) */
#include <fcntl.h>
#include <hdf5.h>
#include <inttypes.h>
#include <libdeflate.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h5_internal.h"
#include "io_internal.h"

typedef struct wr_params {
  const char *file, *dataset, *chunks;
  int compress; /* 0 gzip, 1 none */
  int64_t level;
  bool shuffle;
} wr_params;

/* A box of elements: origin and shape in the whole array. */
typedef struct wr_box {
  uint64_t origin[SL_MAX_DIMS], shape[SL_MAX_DIMS];
} wr_box;

/* A chunk of the output being put together from smaller items. */
typedef struct wr_asm {
  uint64_t origin[SL_MAX_DIMS]; /* the chunk's */
  uint64_t filled, expected;    /* elements copied in, of the clipped chunk */
  unsigned users;               /* workers copying into buf now */
  bool complete;                /* every element is in: no longer listed */
  unsigned char *buf;           /* the clipped chunk, C order */
  wr_box *boxes;                /* the parts copied in (for a partial write) */
  size_t nboxes, capboxes;
  struct wr_asm *next;
} wr_asm;

typedef struct wr_shared {
  pthread_mutex_t mu;
  const wr_params *p;
  char *tmp;
  hid_t fid, did;
  bool started, broken, published, arrays;
  sl_dtype dtype;
  uint32_t ndim;
  uint64_t whole[SL_MAX_DIMS], chunk[SL_MAX_DIMS];
  bool chunked;
  uint64_t expected, written;
  char *src_file, *src_dataset;
  sl__h5_tables *tables;
  unsigned finished, closed;
  wr_asm *asms; /* open assemblies, at most MAX_ASM(workers) */
  unsigned nasm;
  wr_asm *spare; /* finished ones, buffers kept for the next chunks (fresh
                    pages cost a fault each) */
  /* Mapped output (uncompressed chunks allocated at creation): */
  unsigned char *map;  /* the file from map_off, shared, writable; or NULL */
  size_t map_len;
  uint64_t map_off;
  sl__h5_addr *addrs;  /* every chunk's place, by row-major chunk index */
  size_t naddrs;
  uint64_t grid[SL_MAX_DIMS];
  uint64_t page, chunk_bytes;
} wr_shared;

#define MAX_ASM(workers) ((workers) + 1u)

typedef struct wr_local {
  struct libdeflate_compressor *z;
  unsigned char *buf[2];
  size_t cap[2];
} wr_local;

static atomic_uint_fast64_t tmp_counter;

/* ---------------------------------------------------------------------- */
/* temporary file                                                          */

/* Under mu and the HDF5 lock: creates the temporary. */
static int create_tmp(wr_shared *S, sl_worker *w) {
  const char *path = S->p->file, *slash = strrchr(path, '/');
  int dlen = slash ? (int)(slash - path) + 1 : 0;
  char eb[400];
  for (int tries = 0; tries < 8; tries++) {
    uint64_t r = atomic_fetch_add(&tmp_counter, 1) * UINT64_C(0x9E3779B97F4A7C15) ^
                 sl_now_ns();
    free(S->tmp);
    S->tmp = sl__io_asprintf("%.*s.%.150s.sluice-tmp-%ld-%016" PRIx64, dlen,
                             path, path + dlen, (long)getpid(), r);
    if (!S->tmp) return SL_ENOMEM;
    S->fid = H5Fcreate(S->tmp, H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT);
    if (S->fid >= 0) return 0;
    sl__h5_error_text(eb, sizeof eb, "cannot create");
    if (access(S->tmp, F_OK) != 0) break; /* not a name clash */
  }
  free(S->tmp);
  S->tmp = NULL;
  return sl_worker_errorf(w, "%s: cannot create a temporary file next to it: %s",
                          path, eb);
}

/* Under the HDF5 lock: closes and removes the temporary (not published). */
static void drop_tmp(wr_shared *S) {
  if (S->did >= 0) H5Dclose(S->did);
  if (S->fid >= 0) H5Fclose(S->fid);
  H5Eclear2(H5E_DEFAULT);
  S->did = S->fid = -1;
  if (S->tmp) unlink(S->tmp);
  free(S->tmp);
  S->tmp = NULL;
}

/* ---------------------------------------------------------------------- */
/* dataset                                                                 */

/* chunks=: "auto" takes h5.read's chunk shape (metadata h5.chunk) when
 * the rank matches, else rows of about 1 MiB; or explicit "a,b,c". Each
 * is clamped to [1, extent]. @return 0 or an error. */
static int choose_chunks(wr_shared *S, sl_worker *w, const sl_item *it) {
  const char *text = strcmp(S->p->chunks, "auto") == 0
                         ? sl_item_meta_get(it, "h5.chunk") : S->p->chunks;
  bool explicit_ = strcmp(S->p->chunks, "auto") != 0;
  uint32_t n = 0;
  uint64_t c[SL_MAX_DIMS];
  for (const char *s = text; s && *s && n < SL_MAX_DIMS + 1;) {
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || v == 0 || (*end && *end != ',')) { n = SL_MAX_DIMS + 1; break; }
    if (n < SL_MAX_DIMS) c[n] = v;
    n++;
    s = *end ? end + 1 : end;
  }
  if (explicit_ && n != S->ndim)
    return sl_worker_errorf(w, "chunks='%s' does not match the array's %u "
                            "dimensions", S->p->chunks, S->ndim);
  if (n != S->ndim) { /* rows of about 1 MiB */
    uint64_t es = sl_dtype_size(S->dtype), row = es;
    for (uint32_t d = 1; d < S->ndim; d++) {
      c[d] = S->whole[d];
      row = c[d] && row > (UINT64_MAX / c[d]) ? UINT64_MAX : row * (c[d] ? c[d] : 1);
    }
    if (S->ndim) c[0] = row >= (1u << 20) ? 1 : (1u << 20) / row;
  }
  uint64_t bytes = sl_dtype_size(S->dtype);
  for (uint32_t d = 0; d < S->ndim; d++) {
    S->chunk[d] = c[d] > S->whole[d] ? S->whole[d] : c[d];
    if (S->chunk[d] == 0) S->chunk[d] = 1;
    if (bytes > (UINT64_C(1) << 32) / S->chunk[d])
      return sl_worker_errorf(w, "chunks of more than 4 GiB (HDF5's limit): "
                              "set chunks=");
    bytes *= S->chunk[d];
  }
  return 0;
}

static bool unfiltered(const wr_shared *S) {
  return S->p->compress != 0 && !S->p->shuffle;
}

/* Under mu and the HDF5 lock, after creating an unfiltered chunked dataset
 * (every chunk already placed): lists the chunks' addresses, reserves the
 * file's blocks (fallocate: a full disk is an error now, not SIGBUS later;
 * not posix_fallocate, which writes zeros where the file system cannot
 * reserve) and maps the chunks' span of the file, shared. Workers then copy
 * finished chunks straight into the page cache, in parallel and outside
 * every lock, where H5Dwrite_chunk would write them one at a time under
 * the HDF5 lock; buffered writes to one file are serialised by the kernel
 * anyway. Leaves S->map NULL (chunks go through HDF5) when the addresses
 * are too dear to list, the file is not a plain local file, or any step
 * fails. */
static void map_output(wr_shared *S) {
  uint64_t total = 1, bytes = sl_dtype_size(S->dtype);
  for (uint32_t d = 0; d < S->ndim; d++) {
    S->grid[d] = S->whole[d] / S->chunk[d] + (S->whole[d] % S->chunk[d] != 0);
    total *= S->grid[d];
    bytes *= S->chunk[d];
  }
  struct stat st;
  int fd = sl__h5_file_fd(S->fid, &st);
  if (fd < 0 || sl__h5_chunk_addrs(S->did, S->ndim, S->whole, S->chunk, S->grid, bytes,
                                   total, &S->addrs, &S->naddrs) < 0)
    return;
  uint64_t lo = UINT64_MAX, hi = 0;
  bool ok = S->naddrs == total;
  for (size_t i = 0; ok && i < S->naddrs; i++) {
    const sl__h5_addr *a = &S->addrs[i];
    ok = a->size == bytes && a->addr <= UINT64_MAX - bytes;
    if (a->addr < lo) lo = a->addr;
    if (a->addr + bytes > hi) hi = a->addr + bytes;
  }
  long pg = sysconf(_SC_PAGESIZE);
  uint64_t page = pg > 0 ? (uint64_t)pg : 4096;
  lo = lo / page * page;
  void *m = MAP_FAILED;
  if (ok && hi > lo && hi - lo <= SIZE_MAX && fallocate(fd, 0, (off_t)lo, (off_t)(hi - lo)) == 0)
    m = mmap(NULL, (size_t)(hi - lo), PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)lo);
  if (m == MAP_FAILED) {
    free(S->addrs);
    S->addrs = NULL;
    S->naddrs = 0;
    return;
  }
  S->map = m;
  S->map_len = (size_t)(hi - lo);
  S->map_off = lo;
  S->page = page;
  S->chunk_bytes = bytes;
}

/* Under the HDF5 lock (or once no worker runs): drops the mapping. */
static void unmap_output(wr_shared *S) {
  if (S->map) munmap(S->map, S->map_len);
  S->map = NULL;
  free(S->addrs);
  S->addrs = NULL;
  S->naddrs = 0;
}

/* Under mu: the first item's shape and type create the dataset. */
static int start_array(wr_shared *S, sl_worker *w, const sl_item *it) {
  const sl_array_desc *a = &it->payload.u.array;
  S->dtype = a->dtype;
  S->ndim = a->ndim;
  S->expected = 1;
  for (uint32_t d = 0; d < a->ndim; d++) {
    S->whole[d] = a->whole[d];
    if (a->whole[d] && S->expected > UINT64_MAX / a->whole[d])
      return sl_worker_errorf(w, "whole shape has more than 2^64 elements");
    S->expected *= a->whole[d];
  }
  S->chunked = S->ndim > 0 && S->expected > 0;
  int rc = S->chunked ? choose_chunks(S, w, it) : 0;
  if (rc < 0) return rc;
  const char *f = sl_item_meta_get(it, "h5.file"), *ds = sl_item_meta_get(it, "h5.dataset");
  if (f && ds && (!(S->src_file = strdup(f)) || !(S->src_dataset = strdup(ds))))
    return SL_ENOMEM;
  char eb[400];
  sl__h5_lock();
  rc = create_tmp(S, w);
  hsize_t dims[SL_MAX_DIMS], cd[SL_MAX_DIMS];
  for (uint32_t d = 0; d < S->ndim; d++) dims[d] = S->whole[d], cd[d] = S->chunk[d];
  hid_t sp = -1, dcpl = -1, lcpl = -1;
  if (rc == 0) {
    sp = S->ndim ? H5Screate_simple((int)S->ndim, dims, NULL) : H5Screate(H5S_SCALAR);
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
    lcpl = H5Pcreate(H5P_LINK_CREATE);
    herr_t e = sp < 0 || dcpl < 0 || lcpl < 0 ? -1 : H5Pset_create_intermediate_group(lcpl, 1);
    if (e >= 0 && S->chunked) {
      e = H5Pset_chunk(dcpl, (int)S->ndim, cd);
      if (e >= 0 && S->p->shuffle) e = H5Pset_shuffle(dcpl);
      if (e >= 0 && S->p->compress == 0) e = H5Pset_deflate(dcpl, (unsigned)S->p->level);
      /* Unfiltered chunks have a known size: place them all now (no fill
       * written), so that workers can copy them into the file (map_output). */
      if (e >= 0 && unfiltered(S)) e = H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
      if (e >= 0 && unfiltered(S)) e = H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
    }
    if (e >= 0)
      S->did = H5Dcreate2(S->fid, S->p->dataset, sl__h5_native(S->dtype), sp, lcpl, dcpl,
                          H5P_DEFAULT);
    if (S->did < 0)
      rc = sl_worker_errorf(w, "%s: cannot create dataset %s: %s", S->p->file,
                            S->p->dataset, sl__h5_error_text(eb, sizeof eb, "unknown error"));
  }
  if (sp >= 0) H5Sclose(sp);
  if (dcpl >= 0) H5Pclose(dcpl);
  if (lcpl >= 0) H5Pclose(lcpl);
  if (rc == 0 && S->chunked && unfiltered(S)) map_output(S);
  sl__h5_unlock();
  return rc;
}

/* ---------------------------------------------------------------------- */
/* items                                                                   */

static int grow(wr_local *L, int i, size_t need) {
  if (L->cap[i] >= need) return 0;
  unsigned char *b = realloc(L->buf[i], need);
  if (!b) return SL_ENOMEM;
  L->buf[i] = b;
  L->cap[i] = need;
  return 0;
}

/* The item's elements in C order: its own memory when contiguous, else
 * packed into scratch buffer `slot`. Checks strides against the payload. */
static int item_data(sl_worker *w, wr_local *L, const sl_item *it, int slot,
                     const unsigned char **out) {
  const sl_array_desc *a = &it->payload.u.array;
  size_t es = sl_dtype_size(a->dtype);
  uint64_t n = 1, maxoff = 0;
  bool contiguous = true;
  int64_t expect = (int64_t)es;
  for (int d = (int)a->ndim - 1; d >= 0; d--) {
    n *= a->shape[d];
    if (a->shape[d] > 1 && a->strides[d] != expect) contiguous = false;
    if (a->strides[d] < 0) return sl_worker_errorf(w, "negative strides are not supported");
    if (a->shape[d]) maxoff += (a->shape[d] - 1) * (uint64_t)a->strides[d];
    expect *= (int64_t)a->shape[d];
  }
  if (n && (maxoff + es > it->payload.size || !it->payload.data))
    return sl_worker_errorf(w, "array strides reach outside the payload");
  if (contiguous || n == 0) {
    *out = it->payload.data;
    return 0;
  }
  if (grow(L, slot, (size_t)(n * es)) < 0) return SL_ENOMEM;
  uint64_t idx[SL_MAX_DIMS] = {0};
  for (uint64_t i = 0; i < n; i++) {
    uint64_t off = 0;
    for (uint32_t d = 0; d < a->ndim; d++) off += idx[d] * (uint64_t)a->strides[d];
    memcpy(L->buf[slot] + i * es, (const unsigned char *)it->payload.data + off, es);
    for (int d = (int)a->ndim - 1; d >= 0; d--) {
      if (++idx[d] < a->shape[d]) break;
      idx[d] = 0;
    }
  }
  *out = L->buf[slot];
  return 0;
}

static int check_item(wr_shared *S, sl_worker *w, const sl_array_desc *a) {
  if (a->dtype != S->dtype || a->ndim != S->ndim)
    return sl_worker_errorf(w, "array is %s with %u dimensions, the first was "
                            "%s with %u", sl_dtype_name(a->dtype), a->ndim,
                            sl_dtype_name(S->dtype), S->ndim);
  for (uint32_t d = 0; d < a->ndim; d++) {
    if (a->whole[d] != S->whole[d])
      return sl_worker_errorf(w, "whole shape differs from the first item's "
                              "(axis %u: %" PRIu64 " vs %" PRIu64 ")", d,
                              a->whole[d], S->whole[d]);
    if (a->origin[d] > a->whole[d] || a->shape[d] > a->whole[d] - a->origin[d])
      return sl_worker_errorf(w, "array lies outside the whole shape (axis %u)", d);
  }
  return 0;
}

/* Whether the item is exactly one chunk of the output (clipped at edges). */
static bool chunk_aligned(const wr_shared *S, const sl_array_desc *a) {
  if (!S->chunked) return false;
  for (uint32_t d = 0; d < a->ndim; d++) {
    uint64_t left = S->whole[d] - a->origin[d];
    if (a->origin[d] % S->chunk[d] ||
        a->shape[d] != (left < S->chunk[d] ? left : S->chunk[d]))
      return false;
  }
  return true;
}

/* Encodes one aligned item as a stored chunk: padded to the full chunk,
 * shuffled, deflated, as the dataset's filter pipeline would. */
static int encode_chunk(wr_shared *S, sl_worker *w, wr_local *L, const sl_array_desc *a,
                        const unsigned char *src, const unsigned char **out, size_t *len) {
  size_t es = sl_dtype_size(S->dtype);
  uint64_t full = es, rows = 1;
  for (uint32_t d = 0; d < S->ndim; d++) full *= S->chunk[d];
  for (uint32_t d = 0; d + 1 < S->ndim; d++) rows *= a->shape[d];
  bool whole = true; /* the item is a full chunk: no padding */
  for (uint32_t d = 0; d < S->ndim; d++) whole &= a->shape[d] == S->chunk[d];
  bool shuffle = S->p->shuffle && es > 1;
  if (whole && !shuffle && S->p->compress != 0) {
    /* Stored as is: src (packed by item_data) is already the chunk. */
    *out = src;
    *len = (size_t)full;
    return 0;
  }
  size_t need = (size_t)full + libdeflate_zlib_compress_bound(L->z, (size_t)full);
  /* src may be L->buf[0] (packed by item_data): build the chunk in buf[1]
   * and grow buf[0] only once src has been copied. */
  if (grow(L, 1, need) < 0) return SL_ENOMEM;
  unsigned char *chunk = L->buf[1];
  if (!whole) memset(chunk, 0, (size_t)full); /* the padding of an edge chunk */
  uint64_t row = a->shape[S->ndim - 1], idx[SL_MAX_DIMS] = {0}, cs[SL_MAX_DIMS], s = 1;
  for (int d = (int)S->ndim - 1; d >= 0; d--) { cs[d] = s; s *= S->chunk[d]; }
  for (uint64_t r = 0; r < rows; r++) {
    uint64_t off = 0;
    for (uint32_t d = 0; d + 1 < S->ndim; d++) off += idx[d] * cs[d];
    memcpy(chunk + off * es, src + r * row * es, (size_t)(row * es));
    for (int d = (int)S->ndim - 2; d >= 0; d--) {
      if (++idx[d] < a->shape[d]) break;
      idx[d] = 0;
    }
  }
  if (grow(L, 0, need) < 0) return SL_ENOMEM;
  unsigned char *other = L->buf[0];
  const unsigned char *cur = chunk;
  size_t n = (size_t)full;
  if (shuffle) {
    size_t elems = n / es;
    for (size_t j = 0; j < es; j++)
      for (size_t i = 0; i < elems; i++) other[j * elems + i] = cur[i * es + j];
    cur = other;
  }
  if (S->p->compress == 0) {
    unsigned char *dst = cur == chunk ? other : chunk;
    size_t z = libdeflate_zlib_compress(L->z, cur, n, dst, need);
    if (z == 0) return sl_worker_errorf(w, "deflate failed");
    cur = dst;
    n = z;
  }
  *out = cur;
  *len = n;
  return 0;
}

/* Under mu: writes chunk a (its len encoded bytes) with H5Dwrite_chunk,
 * or a scalar's one element (a->ndim == 0: every array with elements is
 * chunked, see start_array). */
static int write_locked(wr_shared *S, sl_worker *w, const sl_array_desc *a,
                        const unsigned char *data, size_t len) {
  char eb[400];
  hsize_t off[SL_MAX_DIMS];
  for (uint32_t d = 0; d < a->ndim; d++) off[d] = a->origin[d];
  sl__h5_lock();
  herr_t e = a->ndim ? H5Dwrite_chunk(S->did, H5P_DEFAULT, 0, off, len, data)
                     : H5Dwrite(S->did, sl__h5_native(S->dtype), H5S_ALL, H5S_ALL,
                                H5P_DEFAULT, data);
  if (e < 0) sl__h5_error_text(eb, sizeof eb, "unknown error");
  sl__h5_unlock();
  if (e < 0) return sl_worker_errorf(w, "%s: write failed: %s", S->p->file, eb);
  return 0;
}

/* Where chunk c lies in the mapped output, or NULL when not mapped. */
static unsigned char *mapped_chunk(const wr_shared *S, const sl_array_desc *c) {
  if (!S->map) return NULL; /* set before the first item was let through */
  uint64_t idx = 0;
  for (uint32_t d = 0; d < c->ndim; d++) idx = idx * S->grid[d] + c->origin[d] / S->chunk[d];
  const sl__h5_addr *at = sl__h5_addr_find(S->addrs, S->naddrs, idx);
  return at ? S->map + (at->addr - S->map_off) : NULL;
}

/* Before writing [p, p+len) of the mapping: its pages in one call instead
 * of a fault per page, and a failure (the file cut short by someone else,
 * an I/O error) as an error here rather than SIGBUS in the copy.
 * @return 0 or an errno (EINVAL: a kernel before 5.14, nothing done). */
static int map_begin(const wr_shared *S, unsigned char *p, size_t len) {
#ifdef MADV_POPULATE_WRITE
  uintptr_t pg = (uintptr_t)S->page, b = (uintptr_t)p / pg * pg;
  if (madvise((void *)b, (uintptr_t)p + len - b, MADV_POPULATE_WRITE) != 0 && errno != EINVAL)
    return errno;
#else
  (void)S, (void)p, (void)len;
#endif
  return 0;
}

/* After: the whole pages written leave this process's mapping (they stay
 * in the page cache, dirty; another worker writing next to them faults
 * them back in), so the output does not count as this process's memory. */
static void map_end(const wr_shared *S, unsigned char *p, size_t len) {
  uintptr_t pg = (uintptr_t)S->page, b = ((uintptr_t)p + pg - 1) / pg * pg,
            e = ((uintptr_t)p + len) / pg * pg;
  if (e > b) madvise((void *)b, e - b, MADV_DONTNEED);
}

/* Stores chunk c (its encoded bytes) and counts its n elements: copied
 * into the mapped file outside every lock when the output is mapped, else
 * H5Dwrite_chunk under the locks. */
static int store_chunk(wr_shared *S, sl_worker *w, const sl_array_desc *c,
                       const unsigned char *data, size_t len, uint64_t n) {
  unsigned char *at = len == S->chunk_bytes ? mapped_chunk(S, c) : NULL;
  int err = at ? map_begin(S, at, len) : 0;
  if (at && !err) {
    memcpy(at, data, len);
    map_end(S, at, len);
  }
  pthread_mutex_lock(&S->mu);
  int rc = 0;
  char eb[128];
  if (S->broken) rc = sl_worker_errorf(w, "%s: not written: an earlier item failed", S->p->file);
  else if (err)
    rc = sl_worker_errorf(w, "%s: cannot write %zu bytes of its temporary at offset %" PRIu64
                          ": %s", S->p->file, len, (uint64_t)(at - S->map) + S->map_off,
                          sl__io_strerror(err, eb, sizeof eb));
  if (rc == 0 && !at) rc = write_locked(S, w, c, data, len);
  if (rc == 0) S->written += n;
  if (rc < 0) S->broken = true;
  pthread_mutex_unlock(&S->mu);
  return rc;
}

static uint64_t elems_of(const sl_array_desc *a) {
  uint64_t n = 1;
  for (uint32_t d = 0; d < a->ndim; d++) n *= a->shape[d];
  return n;
}

/* ---------------------------------------------------------------------- */
/* assembling chunks from smaller items                                    */

/* The chunk of the output with grid coordinates g, clipped to the extent. */
static void chunk_desc(const wr_shared *S, const uint64_t *g, sl_array_desc *c) {
  memset(c, 0, sizeof *c);
  c->dtype = S->dtype;
  c->ndim = S->ndim;
  for (uint32_t d = 0; d < S->ndim; d++) {
    c->origin[d] = g[d] * S->chunk[d];
    c->whole[d] = S->whole[d];
    uint64_t left = S->whole[d] - c->origin[d];
    c->shape[d] = left < S->chunk[d] ? left : S->chunk[d];
  }
}

static void asm_free(wr_asm *m) {
  if (m) {
    free(m->buf);
    free(m->boxes);
  }
  free(m);
}

/* Under mu and the HDF5 lock: writes what an incomplete assembly holds,
 * box by box (H5Dwrite), and counts it. */
static int asm_flush_locked(wr_shared *S, sl_worker *w, const wr_asm *m) {
  char eb[400];
  hsize_t cd[SL_MAX_DIMS], mo[SL_MAX_DIMS], fo[SL_MAX_DIMS], cnt[SL_MAX_DIMS];
  for (uint32_t d = 0; d < S->ndim; d++) {
    uint64_t left = S->whole[d] - m->origin[d];
    cd[d] = left < S->chunk[d] ? left : S->chunk[d];
  }
  hid_t ms = H5Screate_simple((int)S->ndim, cd, NULL), fs = H5Dget_space(S->did);
  herr_t e = ms < 0 || fs < 0 ? -1 : 0;
  for (size_t b = 0; e >= 0 && b < m->nboxes; b++) {
    for (uint32_t d = 0; d < S->ndim; d++) {
      fo[d] = m->boxes[b].origin[d];
      mo[d] = fo[d] - m->origin[d];
      cnt[d] = m->boxes[b].shape[d];
    }
    e = H5Sselect_hyperslab(ms, H5S_SELECT_SET, mo, NULL, cnt, NULL);
    if (e >= 0) e = H5Sselect_hyperslab(fs, H5S_SELECT_SET, fo, NULL, cnt, NULL);
    if (e >= 0) e = H5Dwrite(S->did, sl__h5_native(S->dtype), ms, fs, H5P_DEFAULT, m->buf);
  }
  if (e < 0) sl__h5_error_text(eb, sizeof eb, "unknown error");
  if (ms >= 0) H5Sclose(ms);
  if (fs >= 0) H5Sclose(fs);
  if (e < 0) return sl_worker_errorf(w, "%s: write failed: %s", S->p->file, eb);
  S->written += m->filled;
  return 0;
}

/* Under mu: the open assembly of chunk c. When all MAX_ASM are open, the
 * oldest idle one is written as it stands (asm_flush_locked) to make
 * room: every worker holds at most one, so one is idle. Buffers hold a
 * full chunk and are kept for the next chunks (fresh pages cost a fault
 * each). */
static int asm_get(wr_shared *S, sl_worker *w, const sl_array_desc *c, wr_asm **out) {
  *out = NULL;
  for (wr_asm *m = S->asms; m; m = m->next)
    if (memcmp(m->origin, c->origin, c->ndim * sizeof *c->origin) == 0) {
      *out = m;
      return 0;
    }
  if (S->nasm >= MAX_ASM(sl_worker_count(w))) {
    wr_asm **old = NULL;
    for (wr_asm **p = &S->asms; *p; p = &(*p)->next)
      if ((*p)->users == 0) old = p; /* the list is newest first */
    if (!old) return sl_worker_errorf(w, "internal error: no idle chunk assembly");
    wr_asm *m = *old;
    *old = m->next;
    S->nasm--;
    sl__h5_lock();
    int rc = asm_flush_locked(S, w, m);
    sl__h5_unlock();
    m->next = S->spare;
    S->spare = m;
    if (rc < 0) return rc;
  }
  wr_asm *m = S->spare;
  if (m) {
    S->spare = m->next;
    m->filled = 0;
    m->users = 0;
    m->complete = false;
    m->nboxes = 0;
  } else {
    uint64_t full = sl_dtype_size(c->dtype);
    for (uint32_t d = 0; d < c->ndim; d++) full *= S->chunk[d];
    m = calloc(1, sizeof *m);
    if (!m || !(m->buf = malloc((size_t)full))) {
      asm_free(m);
      return SL_ENOMEM;
    }
  }
  memcpy(m->origin, c->origin, sizeof m->origin);
  m->expected = elems_of(c);
  m->next = S->asms;
  S->asms = m;
  S->nasm++;
  *out = m;
  return 0;
}

static void asm_unlink(wr_shared *S, wr_asm *m) {
  for (wr_asm **p = &S->asms; *p; p = &(*p)->next)
    if (*p == m) {
      *p = m->next;
      S->nasm--;
      return;
    }
}

/* Under mu: notes that box b of chunk m will be filled. */
static int asm_add_box(wr_asm *m, const wr_box *b) {
  if (m->nboxes == m->capboxes) {
    size_t cap = m->capboxes ? 2 * m->capboxes : 16;
    wr_box *nb = realloc(m->boxes, cap * sizeof *nb);
    if (!nb) return SL_ENOMEM;
    m->boxes = nb;
    m->capboxes = cap;
  }
  m->boxes[m->nboxes++] = *b;
  return 0;
}

/* Copies box b of item a (its elements packed in C order at data) into its
 * place in chunk c, stored at dst_chunk in C order (c's clipped shape). */
static void box_copy(unsigned char *dst_chunk, const sl_array_desc *c,
                     const sl_array_desc *a, const unsigned char *data, const wr_box *b) {
  size_t es = sl_dtype_size(c->dtype);
  uint32_t nd = c->ndim;
  uint64_t cs[SL_MAX_DIMS], is[SL_MAX_DIMS], s = 1, t = 1, idx[SL_MAX_DIMS] = {0};
  for (int d = (int)nd - 1; d >= 0; d--) {
    cs[d] = s;
    is[d] = t;
    s *= c->shape[d];
    t *= a->shape[d];
  }
  uint64_t row = b->shape[nd - 1], rows = 1;
  for (uint32_t d = 0; d + 1 < nd; d++) rows *= b->shape[d];
  for (uint64_t r = 0; r < rows; r++) {
    uint64_t dst = 0, src = 0;
    for (uint32_t d = 0; d < nd; d++) {
      uint64_t i = d + 1 < nd ? idx[d] : 0;
      dst += (b->origin[d] - c->origin[d] + i) * cs[d];
      src += (b->origin[d] - a->origin[d] + i) * is[d];
    }
    memcpy(dst_chunk + dst * es, data + src * es, (size_t)(row * es));
    for (int d = (int)nd - 2; d >= 0; d--) {
      if (++idx[d] < b->shape[d]) break;
      idx[d] = 0;
    }
  }
}

/* One chunk's share (box b) of an item. */
static int assemble_box(wr_shared *S, sl_worker *w, wr_local *L, const sl_array_desc *a,
                        const sl_array_desc *c, const unsigned char *data, const wr_box *b) {
  uint64_t n = 1;
  for (uint32_t d = 0; d < c->ndim; d++) n *= b->shape[d];
  pthread_mutex_lock(&S->mu);
  wr_asm *m = NULL;
  int rc = S->broken ? sl_worker_errorf(w, "%s: not written: an earlier item failed", S->p->file)
                     : asm_get(S, w, c, &m);
  if (rc == 0 && (rc = asm_add_box(m, b)) == 0) m->users++;
  if (rc < 0) S->broken = true;
  pthread_mutex_unlock(&S->mu);
  if (rc < 0) return rc;
  box_copy(m->buf, c, a, data, b);
  pthread_mutex_lock(&S->mu);
  m->users--;
  m->filled += n;
  if (m->filled == m->expected && !m->complete) {
    m->complete = true;
    asm_unlink(S, m);
  }
  bool mine = m->complete && m->users == 0;
  pthread_mutex_unlock(&S->mu);
  if (!mine) return 0;
  const unsigned char *out = NULL;
  size_t len = 0;
  rc = encode_chunk(S, w, L, c, m->buf, &out, &len);
  if (rc == 0) rc = store_chunk(S, w, c, out, len, m->expected);
  pthread_mutex_lock(&S->mu);
  if (rc < 0) S->broken = true;
  m->next = S->spare;
  S->spare = m;
  pthread_mutex_unlock(&S->mu);
  return rc;
}

/* Items that are not exactly one chunk (h5.read's pieces, other chunk
 * shapes, any hyperslab) are cut along the output's chunk grid, and each
 * part is copied into its chunk's assembly buffer, outside every lock, by
 * whichever worker has the item. The worker whose copy completes a chunk
 * encodes it and writes it like an aligned item: the HDF5 lock covers
 * whole-chunk writes, and compression runs on every worker. At most
 * MAX_ASM chunks are open (items come in about chunk order); past that,
 * and at the end for chunks that never completed (their other items failed
 * upstream, or came whole), what an assembly holds is written part by part
 * with H5Dwrite. Overlapping items are caught by the element count at
 * publish(). */
static int assemble(wr_shared *S, sl_worker *w, wr_local *L, const sl_array_desc *a,
                    const unsigned char *data) {
  uint32_t nd = S->ndim;
  uint64_t first[SL_MAX_DIMS], last[SL_MAX_DIMS], g[SL_MAX_DIMS];
  for (uint32_t d = 0; d < nd; d++) {
    first[d] = g[d] = a->origin[d] / S->chunk[d];
    last[d] = (a->origin[d] + a->shape[d] - 1) / S->chunk[d];
  }
  for (;;) {
    sl_array_desc c;
    chunk_desc(S, g, &c);
    wr_box b;
    memset(&b, 0, sizeof b);
    for (uint32_t d = 0; d < nd; d++) {
      uint64_t lo = a->origin[d] > c.origin[d] ? a->origin[d] : c.origin[d];
      uint64_t ae = a->origin[d] + a->shape[d], ce = c.origin[d] + c.shape[d];
      b.origin[d] = lo;
      b.shape[d] = (ae < ce ? ae : ce) - lo;
    }
    int rc = assemble_box(S, w, L, a, &c, data, &b);
    if (rc < 0) return rc;
    int d = (int)nd - 1;
    for (; d >= 0; d--) {
      if (++g[d] <= last[d]) break;
      g[d] = first[d];
    }
    if (d < 0) return 0;
  }
}

/* Under mu, at the end: writes every chunk left incomplete. */
static int asm_flush_all(wr_shared *S, sl_worker *w) {
  int rc = 0;
  sl__h5_lock();
  while (S->asms) {
    wr_asm *m = S->asms;
    S->asms = m->next;
    S->nasm--;
    if (rc == 0 && !S->broken) rc = asm_flush_locked(S, w, m);
    m->next = S->spare;
    S->spare = m;
  }
  sl__h5_unlock();
  return rc;
}

static int write_array(wr_shared *S, sl_worker *w, wr_local *L, const sl_item *in) {
  const sl_array_desc *a = &in->payload.u.array;
  if (a->ndim > SL_MAX_DIMS || a->dtype < SL_DT_BOOL || a->dtype > SL_DT_F64)
    return sl_worker_errorf(w, "unsupported array (dtype %s, %u dimensions)",
                            sl_dtype_name(a->dtype), a->ndim);
  pthread_mutex_lock(&S->mu);
  int rc = 0;
  if (S->broken) rc = sl_worker_errorf(w, "%s: not written: an earlier item failed", S->p->file);
  else if (S->tables) rc = sl_worker_errorf(w, "cannot mix arrays and tables in one h5.write");
  else if (!S->started) {
    S->started = S->arrays = true;
    rc = start_array(S, w, in);
    if (rc < 0) S->broken = true;
  }
  if (rc == 0) rc = check_item(S, w, a);
  pthread_mutex_unlock(&S->mu);
  if (rc < 0) return rc;
  const unsigned char *data = NULL;
  rc = item_data(w, L, in, 0, &data);
  if (rc < 0) return rc;
  uint64_t n = elems_of(a);
  if (n > 0 && S->chunked) {
    if (!chunk_aligned(S, a)) return assemble(S, w, L, a, data);
    size_t len = 0;
    rc = encode_chunk(S, w, L, a, data, &data, &len);
    return rc < 0 ? rc : store_chunk(S, w, a, data, len, n);
  }
  /* A scalar's one element (an empty array writes nothing). */
  pthread_mutex_lock(&S->mu);
  if (S->broken) rc = sl_worker_errorf(w, "%s: not written: an earlier item failed", S->p->file);
  if (rc == 0 && n) rc = write_locked(S, w, a, data, 0);
  if (rc == 0) S->written += n;
  if (rc < 0) S->broken = true;
  pthread_mutex_unlock(&S->mu);
  return rc;
}

static int wr_process(sl_worker *w, sl_item *in, sl_item **out) {
  wr_shared *S = sl_worker_shared(w);
  wr_local *L = sl_worker_local(w);
  *out = NULL;
  if (in->payload.kind == SL_KIND_ARRAY) return write_array(S, w, L, in);
  if (in->payload.kind != SL_KIND_TABLE)
    return sl_worker_errorf(w, "expected an array or a table, got %s",
                            sl_kind_name(in->payload.kind));
  char why[300];
  pthread_mutex_lock(&S->mu);
  int rc = 0;
  if (S->arrays) rc = sl_worker_errorf(w, "cannot mix arrays and tables in one h5.write");
  else if ((rc = sl__h5_tables_add(&S->tables, in->seq, &in->payload, why, sizeof why)) < 0)
    rc = rc == SL_ENOMEM ? rc : sl_worker_errorf(w, "%s", why);
  pthread_mutex_unlock(&S->mu);
  return rc;
}

/* ---------------------------------------------------------------------- */
/* attributes                                                              */

static herr_t copy_attr(hid_t loc, const char *name, const H5A_info_t *info, void *op) {
  (void)info;
  hid_t dst = *(hid_t *)op;
  sl__h5_attr at;
  herr_t rc = sl__h5_attr_read(loc, name, &at);
  if (rc == 0 && !at.skip) {
    hid_t b = H5Acreate2(dst, name, at.t, at.s, H5P_DEFAULT, H5P_DEFAULT);
    if (b < 0 || H5Awrite(b, at.t, at.buf) < 0) rc = -1;
    if (b >= 0) H5Aclose(b);
  }
  sl__h5_attr_free(&at);
  return rc;
}

/* Under mu and the HDF5 lock. */
static int copy_attributes(wr_shared *S, sl_worker *w) {
  if (!S->src_file) return 0;
  char eb[400];
  sl__h5_guard g;
  if (sl__h5_guard_init(&g, S->src_file) < 0)
    return sl_worker_errorf(w, "%s: cannot find the source %s for its attributes",
                            S->p->file, S->src_file);
  hid_t fid = H5Fopen(S->src_file, H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t dapl = fid >= 0 ? sl__h5_guard_dapl(&g) : -1;
  hid_t did = dapl >= 0 ? H5Dopen2(fid, S->src_dataset, dapl) : -1;
  herr_t e = did < 0 ? -1 : H5Aiterate2(did, H5_INDEX_NAME, H5_ITER_INC, NULL,
                                        copy_attr, &S->did);
  if (e < 0) sl__h5_error_text(eb, sizeof eb, "unknown error");
  if (did >= 0) H5Dclose(did);
  if (dapl >= 0) H5Pclose(dapl);
  if (fid >= 0) H5Fclose(fid);
  if (e < 0)
    return sl_worker_errorf(w, "%s: copying the attributes of %s:%s failed: %s",
                            S->p->file, S->src_file, S->src_dataset, eb);
  return 0;
}

/* ---------------------------------------------------------------------- */
/* publishing                                                              */

/* Under mu: completes and renames the temporary. */
static int publish(wr_shared *S, sl_worker *w) {
  char eb[400];
  if (S->broken) return sl_worker_errorf(w, "%s: not written: an earlier item failed", S->p->file);
  if (!S->started && !S->tables)
    return sl_worker_errorf(w, "%s: not written: no items arrived", S->p->file);
  int frc = asm_flush_all(S, w);
  if (frc < 0) return frc;
  if (S->arrays && S->written != S->expected)
    return sl_worker_errorf(w, "%s: not written: %" PRIu64 " of %" PRIu64
                            " elements arrived (an upstream item failed or was "
                            "dropped, or items overlap)", S->p->file, S->written,
                            S->expected);
  int rc = 0;
  sl__h5_lock();
  unmap_output(S); /* its pages stay in the page cache, the file's */
  if (S->tables) {
    rc = create_tmp(S, w);
    if (rc == 0 && sl__h5_tables_write(S->tables, S->fid, S->p->dataset, eb, sizeof eb) < 0)
      rc = sl_worker_errorf(w, "%s: %s", S->p->file, eb);
  } else {
    rc = copy_attributes(S, w);
  }
  if (S->did >= 0 && H5Dclose(S->did) < 0 && rc == 0) rc = -1;
  S->did = -1;
  if (S->fid >= 0 && H5Fclose(S->fid) < 0 && rc == 0) rc = -1;
  S->fid = -1;
  if (rc == -1)
    rc = sl_worker_errorf(w, "%s: closing failed: %s", S->p->file,
                          sl__h5_error_text(eb, sizeof eb, "unknown error"));
  sl__h5_unlock();
  if (rc == 0 && rename(S->tmp, S->p->file) < 0)
    rc = sl_worker_errorf(w, "%s: rename: %s", S->p->file,
                          sl__io_strerror(errno, eb, sizeof eb));
  if (rc == 0) {
    free(S->tmp);
    S->tmp = NULL;
    S->published = true;
  }
  return rc;
}

static int wr_finish(sl_worker *w) {
  wr_shared *S = sl_worker_shared(w);
  pthread_mutex_lock(&S->mu);
  int rc = 0;
  if (++S->finished == sl_worker_count(w)) {
    rc = publish(S, w);
    if (rc < 0) S->broken = true; /* close() removes the temporary */
  }
  pthread_mutex_unlock(&S->mu);
  return rc;
}

static void cleanup(wr_shared *S) {
  if (S->tmp || S->fid >= 0 || S->map) {
    sl__h5_lock();
    unmap_output(S);
    drop_tmp(S);
    sl__h5_unlock();
  }
  sl__h5_tables_free(S->tables);
  S->tables = NULL;
  while (S->asms) { /* chunks that never completed: the run failed */
    wr_asm *m = S->asms;
    S->asms = m->next;
    asm_free(m);
  }
  S->nasm = 0;
  while (S->spare) {
    wr_asm *m = S->spare;
    S->spare = m->next;
    asm_free(m);
  }
}

static void wr_close(sl_worker *w) {
  wr_shared *S = sl_worker_shared(w);
  wr_local *L = sl_worker_local(w);
  if (L) {
    libdeflate_free_compressor(L->z);
    free(L->buf[0]);
    free(L->buf[1]);
    free(L);
  }
  pthread_mutex_lock(&S->mu);
  if (++S->closed == sl_worker_count(w)) cleanup(S);
  pthread_mutex_unlock(&S->mu);
}

static int wr_open(sl_worker *w, void **local) {
  int rc = sl__io_single_output_check(w);
  if (rc < 0) return rc;
  const wr_params *p = sl_worker_params(w);
  wr_local *L = calloc(1, sizeof *L);
  if (!L) return SL_ENOMEM;
  if (!(L->z = libdeflate_alloc_compressor((int)p->level))) {
    free(L);
    return SL_ENOMEM;
  }
  *local = L;
  return 0;
}

static void wr_destroy(void *state) {
  wr_shared *S = state;
  if (!S) return;
  cleanup(S);
  free(S->src_file);
  free(S->src_dataset);
  pthread_mutex_destroy(&S->mu);
  free(S);
}

static int wr_create(sl_stage *st, void **state) {
  const wr_params *p = sl_stage_params(st);
  *state = NULL;
  if (!p->file[0]) return sl_stage_errorf(st, "file= must not be empty");
  if (!p->dataset[0]) return sl_stage_errorf(st, "dataset= must not be empty");
  const char *slash = strrchr(p->file, '/');
  if (slash && !slash[1]) return sl_stage_errorf(st, "file='%s' names a directory", p->file);
  char *dir = slash ? sl__io_asprintf("%.*s", (int)(slash - p->file), p->file) : strdup(".");
  if (!dir) return sl_stage_errorf(st, "out of memory");
  struct stat sb;
  char eb[128];
  int err = stat(dir[0] ? dir : "/", &sb) < 0 ? errno : S_ISDIR(sb.st_mode) ? 0 : ENOTDIR;
  free(dir);
  if (err) return sl_stage_errorf(st, "folder of file='%s': %s", p->file,
                                  sl__io_strerror(err, eb, sizeof eb));
  if (strcmp(p->chunks, "auto") != 0) {
    for (const char *s = p->chunks; *s; s++)
      if (!((*s >= '0' && *s <= '9') || *s == ','))
        return sl_stage_errorf(st, "chunks='%s': expected auto or sizes like 256,1024",
                               p->chunks);
  }
  wr_shared *S = calloc(1, sizeof *S);
  if (!S) return sl_stage_errorf(st, "out of memory");
  pthread_mutex_init(&S->mu, NULL);
  S->p = p;
  S->fid = S->did = -1;
  *state = S;
  return 0;
}

static const sl_param_def wr_params_table[] = {
    {"file", SL_PARAM_STRING, offsetof(wr_params, file), NULL, 0, 0, NULL,
     "the output HDF5 file (created as a temporary, renamed at the end; an "
     "existing file is replaced)"},
    {"dataset", SL_PARAM_STRING, offsetof(wr_params, dataset), NULL, 0, 0, NULL,
     "path of the new dataset (groups are created); for tables, the group "
     "that receives one dataset per column"},
    {"chunks", SL_PARAM_STRING, offsetof(wr_params, chunks), "auto", 0, 0, NULL,
     "chunk shape, e.g. 256,8192; auto: h5.read's chunks, else rows of ~1 MiB"},
    {"compress", SL_PARAM_CHOICE, offsetof(wr_params, compress), "gzip", 0, 0,
     "gzip|none", "deflate the chunks (readable by every HDF5 reader)"},
    {"level", SL_PARAM_INT, offsetof(wr_params, level), "4", 1, 9, NULL,
     "gzip level"},
    {"shuffle", SL_PARAM_BOOL, offsetof(wr_params, shuffle), "false", 0, 0, NULL,
     "byte-shuffle before compressing (often smaller for floats)"},
    SL_PARAM_END,
};

const sl_stage_def sl__stage_h5_write = {
    .name = "h5.write",
    .summary = "write arrays (or result tables) to a dataset of a new HDF5 file",
    .help =
        "ARRAY items (e.g. from h5.read ! map) are placed at their origin in\n"
        "dataset= of file=, in any order; the first item gives dtype and whole\n"
        "shape. Chunked (chunks=), gzip-compressed (compress=, level=) and\n"
        "optionally shuffled; items aligned with the chunks are compressed by\n"
        "the workers in parallel and stored directly, and smaller items are\n"
        "first put together into whole chunks. The attributes of the\n"
        "source dataset (items from h5.read) are copied. TABLE items (e.g.\n"
        "from reduce or groupby) become group dataset= with one 1-D dataset per\n"
        "column (strings as UTF-8, bools as uint8; a column with nulls gets a\n"
        "uint8 companion <column>.valid), rows in item order.\n"
        "Atomic: written to a temporary next to file= and renamed when every\n"
        "element has arrived; a failed or stopped run leaves no file. --resume\n"
        "does not apply: a rerun writes the whole file again.\n"
        "Example: h5.read file=in.h5 dataset=/x ! map expr='2*x' ! h5.write "
        "file=out.h5 dataset=/y",
    .exec = SL_EXEC_IO,
    .in_kind = SL_KIND_ANY,
    .out_kind = SL_KIND_NONE,
    .flags = SL_STAGE_SINK,
    .params = wr_params_table,
    .params_size = sizeof(wr_params),
    .create = wr_create,
    .destroy = wr_destroy,
    .open = wr_open,
    .process = wr_process,
    .finish = wr_finish,
    .close = wr_close,
};
