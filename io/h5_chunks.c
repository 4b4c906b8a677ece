/*
 * h5_chunks.c -- where a chunked dataset's stored chunks lie in its file,
 * for h5.read (which reads or maps them instead of copying them through
 * libhdf5) and h5.write (which copies uncompressed chunks into a mapping
 * of its output; pwrite from every worker was slower than H5Dwrite_chunk,
 * 1.7-2.3 s against 1.0-2.0 s: buffered writes into one file do not run
 * in parallel, where page faults on a shared mapping do).
 *
 * libhdf5 1.10 has no walk over a chunk index, only H5Dget_chunk_info(i),
 * which itself walks the index up to chunk i: listing n chunks costs n^2/2
 * steps, about 20 ns each here (measured: 4000 chunks listed in 0.18 s,
 * 16000 in 2.27 s). The list is made only when that stays under about 2%
 * of moving the data (about 5 GB/s): chunks of at least 256 KiB, at most
 * one chunk per 2500 bytes of chunk size and at most 8192 chunks (16 MiB
 * chunks: up to 6710, about 0.45 s of listing against about 22 s of
 * reading). Otherwise callers use HDF5's own chunk I/O.
 */
#include <hdf5.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "h5_internal.h"

#define MIN_CHUNK_BYTES (UINT64_C(256) << 10)
#define MAX_CHUNKS 8192
#define BYTES_PER_CHUNK 2500

static int by_tile(const void *a, const void *b) {
  const sl__h5_addr *x = a, *y = b;
  return x->tile < y->tile ? -1 : x->tile > y->tile;
}

const sl__h5_addr *sl__h5_addr_find(const sl__h5_addr *a, size_t n, uint64_t tile) {
  sl__h5_addr key = {tile, 0, 0, 0};
  return bsearch(&key, a, n, sizeof key, by_tile);
}

int sl__h5_file_fd(int64_t fid, struct stat *st) {
  hid_t fapl = H5Fget_access_plist(fid);
  bool sec2 = fapl >= 0 && H5Pget_driver(fapl) == H5FD_SEC2;
  if (fapl >= 0) H5Pclose(fapl);
  void *handle = NULL;
  int fd = -1;
  if (sec2 && H5Fget_vfd_handle(fid, H5P_DEFAULT, &handle) >= 0 && handle &&
      fstat(*(int *)handle, st) == 0 && S_ISREG(st->st_mode))
    fd = *(int *)handle;
  H5Eclear2(H5E_DEFAULT);
  return fd;
}

/* Whether listing nchunks chunks of tile_bytes each is cheap enough. */
static bool addrs_cheap(uint64_t tile_bytes, uint64_t nchunks) {
  uint64_t limit = tile_bytes / BYTES_PER_CHUNK;
  if (limit > MAX_CHUNKS) limit = MAX_CHUNKS;
  return tile_bytes >= MIN_CHUNK_BYTES && nchunks <= limit;
}

int sl__h5_chunk_addrs(int64_t did, uint32_t ndim, const uint64_t *dims,
                       const uint64_t *tile, const uint64_t *grid, uint64_t tile_bytes,
                       uint64_t total, sl__h5_addr **out, size_t *count) {
  *out = NULL;
  *count = 0;
  if (!addrs_cheap(tile_bytes, 0)) return -1;
  hid_t sid = H5Dget_space(did);
  hsize_t n = 0;
  sl__h5_addr *a = NULL;
  if (sid < 0 || H5Dget_num_chunks(did, sid, &n) < 0 ||
      !addrs_cheap(tile_bytes, n) || n > total)
    goto fail;
  if (!(a = calloc(n ? n : 1, sizeof *a))) goto fail;
  for (hsize_t i = 0; i < n; i++) {
    hsize_t off[H5S_MAX_RANK];
    haddr_t addr = 0;
    hsize_t size = 0;
    unsigned mask = 0;
    if (H5Dget_chunk_info(did, sid, i, off, &mask, &addr, &size) < 0) goto fail;
    uint64_t t = 0;
    for (uint32_t d = 0; d < ndim; d++) {
      if (off[d] % tile[d] || off[d] >= dims[d]) goto fail;
      t = t * grid[d] + off[d] / tile[d];
    }
    a[i] = (sl__h5_addr){t, (uint64_t)addr, (uint64_t)size, mask};
  }
  qsort(a, n, sizeof *a, by_tile);
  for (hsize_t i = 1; i < n; i++)
    if (a[i].tile == a[i - 1].tile) goto fail;
  H5Sclose(sid);
  *out = a;
  *count = (size_t)n;
  return 0;
fail:
  free(a);
  if (sid >= 0) H5Sclose(sid);
  H5Eclear2(H5E_DEFAULT);
  return -1;
}
