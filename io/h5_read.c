/*
 * h5_read.c -- `h5.read`, a source that streams one HDF5 dataset as
 * chunk-aligned hyperslabs, for h5.decode to turn into ARRAY items.
 *
 * Plan. The dataset is cut into tiles: its own chunks when it is chunked,
 * otherwise (contiguous, compact, virtual) blocks of about block= bytes made
 * of whole rows along the first axis (when a single row is larger than
 * block=, of whole rows along the next axis, and so on). Tiles are visited
 * in row-major order of the tile grid; an item's seq is its tile index, its
 * shape the tile clipped to the extent. Nothing is allocated from a size the
 * file declares before checking it: dimensions and tile counts are
 * overflow-checked in 64 bits, a stored chunk must be no larger than its
 * decoded size allows and than the file itself.
 *
 * Three ways to read a tile (see h5_internal.h for the item format):
 *  - MAPPED: RAW chunks (below) whose place in the file is known: the item
 *    says where they are and h5.decode maps them, on all cores, with no
 *    copy. Known when the file is a plain local file (HDF5's sec2 driver)
 *    and its chunk index can be listed cheaply (h5_chunks.c says when).
 *    mmap=false turns it off (e.g. on network file systems). Unfiltered
 *    chunks larger than piece= go out as pieces of whole rows along axis 0
 *    (plan_pieces), each a MAPPED item of its own byte range and its own
 *    stored shape; seq then counts pieces. Contiguous datasets of plain
 *    types stored whole in the file go the same way, block by block
 *    (find_contiguous): no libhdf5 at all after opening.
 *  - RAW: chunked datasets whose filters are only deflate, shuffle and
 *    fletcher32 (or none) and whose type is a plain integer or IEEE float:
 *    H5Dget_chunk_storage_size + H5Dread_chunk copy the stored bytes, and
 *    h5.decode does the CPU work on all cores. Unwritten chunks are FILL
 *    items (one element), so not even the fill is expanded here.
 *  - PLAIN: everything else (other filters, compact, virtual or external
 *    data, half floats, enums): H5Dread converts to the native type.
 * A tile that fails to read becomes an ERROR item (one failed item, the
 * rest go on); failing to open the file or the dataset ends the source.
 *
 * Security. A file is untrusted input. External links, external raw-data
 * files and virtual-dataset sources must resolve to files inside the input
 * file's folder: HDF5 is told to resolve them against that folder (elink,
 * efile and virtual prefixes) and every target is checked before it is
 * used (elink callback; dataset creation properties before any read).
 * libhdf5 itself crashes or hangs on some crafted files. With isolate=true
 * (the default) every libhdf5 call on the input happens in a child process
 * forked for it (h5_isolate.c; protocol below): opening and planning, then
 * each stored-size lookup, raw chunk read and H5Dread, the bytes written
 * by the child straight into the item's block. A crash or hang there
 * fails this source with a message saying so instead of killing the
 * process.
 *
 * Threading: one worker (a source); with isolate=false every HDF5 call is
 * under sl__h5_lock(), which is never held while waiting for arena memory
 * (with isolate=true the lock is taken only for the fork).
 */
#include <errno.h>
#include <hdf5.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h5_internal.h"
#include "io_internal.h"

typedef struct rd_params {
  const char *file;
  const char *dataset;
  int dtype; /* index into SL__H5_DTYPE_CHOICES */
  uint64_t block;
  bool mmap;
  uint64_t piece;
  bool isolate;
  double isolate_timeout;
} rd_params;

typedef struct rd_shared {
  sl_dtype out; /* NONE: native */
} rd_shared;

typedef struct reader {
  const rd_params *p;
  sl_worker *w;
  const char *base; /* file name without folders, for item names */
  sl__h5_guard guard; /* the input's folder; why a link was refused */
  uint64_t file_size;
  hid_t fid, did, dapl, memtype;
  sl_dtype src, out;
  bool big_endian, raw;
  uint32_t nfilters, filters[SL__H5_MAX_FILTERS];
  unsigned char fill[8];
  uint32_t ndim;
  bool empty;
  uint64_t dims[SL_MAX_DIMS], tile[SL_MAX_DIMS], grid[SL_MAX_DIMS];
  uint64_t at[SL_MAX_DIMS]; /* current tile coordinates */
  uint64_t tile_bytes;      /* RAW: decoded bytes of a full chunk */
  uint64_t total, seq;
  uint64_t prow;       /* pieces: rows of axis 0 per item (0: whole tiles) */
  uint64_t piece;      /* pieces: the current one within the tile */
  sl__h5_addr *addrs; /* MAPPED: every stored chunk, by tile; else NULL */
  size_t naddrs;
  bool contig;          /* MAPPED blocks of a contiguous dataset ... */
  uint64_t contig_addr; /* ... whose data starts here in the file */
  uint64_t file_dev, file_ino;
  unsigned failed_in_row; /* tiles that failed since the last good item */
  bool item_failed;       /* the item just produced is an ERROR item */
  char tile_text[SL_MAX_DIMS * 21 + 1];
  bool started, done;
  sl__h5_child x;   /* isolate=true: the process that runs libhdf5 */
  bool iso;
  char *child_msg;  /* in that child: where failures are written */
  size_t child_len;
} reader;

#define MAX_ITEM_BYTES (UINT64_C(1) << 32) /* HDF5's own chunk limit */

static uint64_t page_size(void) {
  long pg = sysconf(_SC_PAGESIZE);
  return pg > 0 ? (uint64_t)pg : 4096;
}

/* ---------------------------------------------------------------------- */
/* errors                                                                  */

/* Reports a failure of the source: to the engine, or in the child that
 * runs libhdf5 (which must not call it) into its answer to the parent. */
static int report(reader *R, const char *fmt, ...) SL_PRINTF(2, 3);
static int report(reader *R, const char *fmt, ...) {
  char msg[SL__ISO_MSG];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (R->child_msg) {
    snprintf(R->child_msg, R->child_len, "%s", msg);
    return SL_ESTAGE;
  }
  return sl_worker_errorf(R->w, "%s", msg);
}

/* Formats "file: dataset NAME: message" into a failure. */
static int fail(reader *R, const char *fmt, ...) SL_PRINTF(2, 3);
static int fail(reader *R, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return report(R, "%s: dataset %s: %s", R->p->file, R->p->dataset, msg);
}

/* Under the lock: the refusal of our link callback if there was one, else
 * HDF5's error stack. */
static const char *h5_why(reader *R, char *buf, size_t len, const char *fb) {
  if (R->guard.refusal[0]) {
    H5Eclear2(H5E_DEFAULT);
    snprintf(buf, len, "%s", R->guard.refusal);
    return buf;
  }
  return sl__h5_error_text(buf, len, fb);
}

/* ---------------------------------------------------------------------- */
/* security                                                                */

/* Under the lock: checks external raw-data files and virtual sources. */
static int check_storage(reader *R, hid_t dcpl) {
  char name[4096], why[600], eb[400];
  int n = H5Pget_external_count(dcpl);
  for (int i = 0; i < n; i++) {
    off_t off;
    hsize_t size;
    if (H5Pget_external(dcpl, (unsigned)i, sizeof name, name, &off, &size) < 0)
      return fail(R, "cannot read its external storage list: %s",
                  sl__h5_error_text(eb, sizeof eb, "unknown error"));
    name[sizeof name - 1] = '\0';
    if (sl__h5_path_inside(R->guard.dir, name, why, sizeof why) != 0)
      return fail(R, "external raw-data file refused: %s", why);
  }
  if (H5Pget_layout(dcpl) != H5D_VIRTUAL) return 0;
  size_t count = 0;
  if (H5Pget_virtual_count(dcpl, &count) < 0)
    return fail(R, "cannot read its virtual mappings: %s",
                sl__h5_error_text(eb, sizeof eb, "unknown error"));
  for (size_t i = 0; i < count; i++) {
    ssize_t k = H5Pget_virtual_filename(dcpl, i, name, sizeof name);
    if (k < 0 || (size_t)k >= sizeof name)
      return fail(R, "cannot read virtual source %zu", i);
    if (strcmp(name, ".") == 0) continue; /* this same file */
    if (sl__h5_path_inside(R->guard.dir, name, why, sizeof why) != 0)
      return fail(R, "virtual dataset source refused: %s", why);
  }
  return 0;
}

/* ---------------------------------------------------------------------- */
/* types                                                                   */

static sl_dtype int_dtype(size_t size, bool sign) {
  switch (size) {
  case 1: return sign ? SL_DT_I8 : SL_DT_U8;
  case 2: return sign ? SL_DT_I16 : SL_DT_U16;
  case 4: return sign ? SL_DT_I32 : SL_DT_U32;
  case 8: return sign ? SL_DT_I64 : SL_DT_U64;
  default: return SL_DT_NONE;
  }
}

static const char *class_name(H5T_class_t c) {
  switch (c) {
  case H5T_STRING: return "string";
  case H5T_COMPOUND: return "compound (complex numbers are compounds too)";
  case H5T_VLEN: return "variable-length";
  case H5T_ARRAY: return "array";
  case H5T_OPAQUE: return "opaque";
  case H5T_REFERENCE: return "reference";
  case H5T_TIME: return "time";
  default: return "unknown";
  }
}

/* An integer whose bits fill its bytes, in either byte order. */
static bool plain_int(hid_t t) {
  size_t size = H5Tget_size(t);
  H5T_order_t o = H5Tget_order(t);
  return H5Tget_precision(t) == 8 * size && H5Tget_offset(t) == 0 &&
         (o == H5T_ORDER_LE || o == H5T_ORDER_BE);
}

/* Under the lock: decides the element type, how it can be read (raw bytes
 * or H5Dread into R->memtype) and its byte order. */
static int classify(reader *R, hid_t t) {
  char eb[300];
  H5T_class_t c = H5Tget_class(t);
  size_t size = H5Tget_size(t);
  R->big_endian = H5Tget_order(t) == H5T_ORDER_BE;
  if (c == H5T_INTEGER || c == H5T_BITFIELD || c == H5T_ENUM) {
    hid_t base = c == H5T_ENUM ? H5Tget_super(t) : H5Tcopy(t);
    if (base < 0) return fail(R, "bad datatype: %s", sl__h5_error_text(eb, sizeof eb, "?"));
    bool sign = H5Tget_class(base) == H5T_INTEGER && H5Tget_sign(base) == H5T_SGN_2;
    R->src = int_dtype(size, sign);
    bool plain = R->src != SL_DT_NONE && plain_int(base);
    H5Tclose(base);
    if (R->src == SL_DT_NONE)
      return fail(R, "unsupported %zu-byte integer type", size);
    /* HDF5 converts enums only to enums and bitfields only to bitfields;
     * their native versions hold the same integers. */
    R->memtype = c == H5T_INTEGER ? H5Tcopy(sl__h5_native(R->src))
                                  : H5Tget_native_type(t, H5T_DIR_ASCEND);
    R->raw = plain;
  } else if (c == H5T_FLOAT) {
    bool f32 = H5Tequal(t, H5T_IEEE_F32LE) > 0 || H5Tequal(t, H5T_IEEE_F32BE) > 0;
    bool f64 = H5Tequal(t, H5T_IEEE_F64LE) > 0 || H5Tequal(t, H5T_IEEE_F64BE) > 0;
    if (size > 8)
      return fail(R, "unsupported %zu-byte floating-point type (at most 8 bytes)", size);
    /* Half floats and other formats: HDF5 converts them to float32/64. */
    R->src = f64 || size > 4 ? SL_DT_F64 : SL_DT_F32;
    R->memtype = H5Tcopy(sl__h5_native(R->src));
    R->raw = f32 || f64;
  } else {
    return fail(R, "unsupported datatype: %s (h5.read reads integer and "
                "floating-point datasets)", class_name(c));
  }
  if (R->memtype < 0) return fail(R, "bad datatype: %s", sl__h5_error_text(eb, sizeof eb, "?"));
  return 0;
}

/* ---------------------------------------------------------------------- */
/* plan                                                                    */

static const char *filter_name(H5Z_filter_t id) {
  switch (id) {
  case 1: return "deflate";
  case 2: return "shuffle";
  case 3: return "fletcher32";
  case 4: return "szip";
  case 5: return "nbit";
  case 6: return "scaleoffset";
  case 32000: return "lzf";
  case 32001: return "blosc";
  case 32004: return "lz4";
  case 32008: return "bitshuffle";
  case 32015: return "zstd";
  default: return "unknown";
  }
}

/* Under the lock: layout, chunk shape and filters. */
static int inspect_layout(reader *R, hid_t dcpl, bool *chunked) {
  char eb[300];
  H5D_layout_t layout = H5Pget_layout(dcpl);
  *chunked = layout == H5D_CHUNKED;
  if (layout < 0) return fail(R, "bad layout: %s", sl__h5_error_text(eb, sizeof eb, "?"));
  if (!*chunked) {
    R->raw = false;
    return 0;
  }
  hsize_t cd[H5S_MAX_RANK];
  int nd = H5Pget_chunk(dcpl, H5S_MAX_RANK, cd);
  if (nd < 0 || (uint32_t)nd != R->ndim)
    return fail(R, "bad chunk shape: %s", sl__h5_error_text(eb, sizeof eb, "rank differs"));
  for (uint32_t d = 0; d < R->ndim; d++) {
    if (cd[d] == 0) return fail(R, "chunk dimension %u is 0", d);
    R->tile[d] = cd[d];
  }
  int nf = H5Pget_nfilters(dcpl);
  if (nf < 0 || nf > SL__H5_MAX_FILTERS)
    return fail(R, "bad filter pipeline (%d filters)", nf);
  R->nfilters = (uint32_t)nf;
  for (int i = 0; i < nf; i++) {
    unsigned flags = 0, cfg = 0;
    size_t ncd = 0;
    H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &ncd, NULL, 0,
                                     NULL, &cfg);
    if (id < 0) return fail(R, "bad filter %d: %s", i, sl__h5_error_text(eb, sizeof eb, "?"));
    R->filters[i] = (uint32_t)id;
    if (id > 3) R->raw = false;
    if (id > 3 && H5Zfilter_avail(id) <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return fail(R, "filter %d (%s) is not available in this libhdf5 build "
                  "(a plugin is missing)", (int)id, filter_name(id));
    }
  }
  return 0;
}

/* Tiles of about `block` bytes of whole rows along the outermost axis
 * that fits (contiguous, compact, virtual, or any layout read in blocks). */
static void block_tiles(reader *R) {
  uint64_t es = sl_dtype_size(R->src), block = R->p->block;
  uint64_t suffix = 1; /* elements in one index of axis k */
  int k = (int)R->ndim - 1;
  for (int d = (int)R->ndim - 1; d > 0; d--) {
    uint64_t next = R->dims[d] && suffix > UINT64_MAX / R->dims[d]
                        ? UINT64_MAX : suffix * R->dims[d];
    if (next > block / es) break; /* a row of axis d-1 would not fit */
    suffix = next;
    k = d - 1;
  }
  for (uint32_t d = 0; d < R->ndim; d++) {
    if ((int)d < k) R->tile[d] = 1;
    else if ((int)d > k) R->tile[d] = R->dims[d] ? R->dims[d] : 1;
  }
  if (R->ndim) {
    uint64_t n = block / es / suffix;
    if (n < 1) n = 1;
    if (R->dims[k] && n > R->dims[k]) n = R->dims[k];
    R->tile[k] = n;
  }
}

/* Tile grid, totals and limits. */
static int make_grid(reader *R) {
  uint64_t es = sl_dtype_size(R->src), elems = 1, total = 1;
  for (uint32_t d = 0; d < R->ndim; d++) {
    if (R->dims[d] == 0) R->empty = true;
    if (R->tile[d] > MAX_ITEM_BYTES || elems > MAX_ITEM_BYTES / R->tile[d])
      return fail(R, "tile of %" PRIu64 " elements along axis %u is too large",
                  R->tile[d], d);
    elems *= R->tile[d];
    R->grid[d] = R->dims[d] / R->tile[d] + (R->dims[d] % R->tile[d] != 0);
    if (R->grid[d] && total > UINT64_MAX / R->grid[d])
      return fail(R, "more than 2^64 chunks");
    total *= R->grid[d];
  }
  if (elems * es > MAX_ITEM_BYTES)
    return fail(R, "chunks of %" PRIu64 " bytes are larger than 4 GiB", elems * es);
  R->tile_bytes = elems * es;
  R->total = R->empty ? 1 : total;
  size_t o = 0;
  for (uint32_t d = 0; d < R->ndim; d++)
    o += (size_t)snprintf(R->tile_text + o, sizeof R->tile_text - o, "%s%" PRIu64,
                          d ? "," : "", R->tile[d]);
  return 0;
}

/* Under the lock: a contiguous dataset of plain integers or IEEE floats,
 * stored whole in this file (not external, allocated, inside the file),
 * is read like unfiltered chunks: MAPPED blocks that h5.decode reads
 * straight from the file on every core, no libhdf5 per block (R->contig;
 * mmap=false: H5Dread). Block tiles are whole rows of one axis with 1 on
 * the axes before it, so each is one run of bytes. */
static void find_contiguous(reader *R, hid_t dcpl) {
  struct stat st;
  if (!R->p->mmap || R->ndim == 0 || H5Pget_layout(dcpl) != H5D_CONTIGUOUS ||
      H5Pget_external_count(dcpl) != 0 || sl__h5_file_fd(R->fid, &st) < 0) {
    H5Eclear2(H5E_DEFAULT);
    return;
  }
  haddr_t a = H5Dget_offset(R->did);
  hsize_t stored = H5Dget_storage_size(R->did);
  uint64_t bytes = sl_dtype_size(R->src);
  for (uint32_t d = 0; d < R->ndim; d++) {
    if (R->dims[d] && bytes > UINT64_MAX / R->dims[d]) return;
    bytes *= R->dims[d];
  }
  H5Eclear2(H5E_DEFAULT);
  if (a == HADDR_UNDEF || bytes == 0 || stored != bytes || (uint64_t)st.st_size < bytes ||
      a > (uint64_t)st.st_size - bytes)
    return;
  R->contig = true;
  R->contig_addr = a;
  R->file_dev = (uint64_t)st.st_dev;
  R->file_ino = (uint64_t)st.st_ino;
  R->file_size = (uint64_t)st.st_size;
}

/* Under the lock: shape, type, layout, security, fill. */
static int inspect(reader *R) {
  char eb[300];
  hid_t sid = H5Dget_space(R->did), tid = H5Dget_type(R->did);
  hid_t dcpl = H5Dget_create_plist(R->did);
  int rc = 0;
  if (sid < 0 || tid < 0 || dcpl < 0)
    rc = fail(R, "cannot read its description: %s",
              sl__h5_error_text(eb, sizeof eb, "unknown error"));
  if (rc == 0) rc = check_storage(R, dcpl);
  if (rc == 0) rc = classify(R, tid);
  if (rc == 0) {
    H5S_class_t sc = H5Sget_simple_extent_type(sid);
    int nd = H5Sget_simple_extent_ndims(sid);
    if (sc == H5S_NULL) { /* no elements at all: one empty 1-D item */
      R->ndim = 1;
      R->dims[0] = 0;
    } else if (nd < 0 || nd > SL_MAX_DIMS) {
      rc = fail(R, "rank %d is not supported (at most %d dimensions)", nd, SL_MAX_DIMS);
    } else {
      hsize_t dims[H5S_MAX_RANK];
      R->ndim = (uint32_t)nd;
      if (nd > 0 && H5Sget_simple_extent_dims(sid, dims, NULL) < 0)
        rc = fail(R, "bad dataspace: %s", sl__h5_error_text(eb, sizeof eb, "?"));
      for (int d = 0; rc == 0 && d < nd; d++) R->dims[d] = dims[d];
    }
  }
  bool chunked = false, plain = R->raw;
  if (rc == 0) rc = inspect_layout(R, dcpl, &chunked);
  if (rc == 0 && !chunked) block_tiles(R);
  if (rc == 0 && !chunked && plain) find_contiguous(R, dcpl);
  if (rc == 0 && R->raw) {
    H5D_fill_value_t st = H5D_FILL_VALUE_UNDEFINED;
    memset(R->fill, 0, sizeof R->fill);
    if (H5Pfill_value_defined(dcpl, &st) >= 0 && st != H5D_FILL_VALUE_UNDEFINED &&
        H5Pget_fill_value(dcpl, tid, R->fill) < 0)
      memset(R->fill, 0, sizeof R->fill);
    H5Eclear2(H5E_DEFAULT); /* an undefined fill value reads as zeros */
  }
  if (rc == 0) rc = make_grid(R);
  if (dcpl >= 0) H5Pclose(dcpl);
  if (tid >= 0) H5Tclose(tid);
  if (sid >= 0) H5Sclose(sid);
  return rc;
}

/* ---------------------------------------------------------------------- */
/* opening                                                                 */

static int open_file(reader *R) {
  char eb[600];
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  if (fapl >= 0) H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
  R->fid = H5Fopen(R->p->file, H5F_ACC_RDONLY, fapl);
  /* Read the stack first: every API call (H5Pclose too) clears it. */
  if (R->fid < 0) sl__h5_error_text(eb, sizeof eb, "cannot open");
  if (fapl >= 0) H5Pclose(fapl);
  if (R->fid >= 0) return 0;
  if (strstr(eb, "already open for write") || strstr(eb, "h5clear"))
    return report(R, "%s: the file is marked as open for writing (its writer "
                  "crashed, or is still running: SWMR/consistency flags are "
                  "set); if no writer is running, clear them with `h5clear -s "
                  "%s` (sluice never changes its input files)",
                  R->p->file, R->p->file);
  if (strstr(eb, "signature not found"))
    return report(R, "%s: not an HDF5 file (%s)", R->p->file, eb);
  return report(R, "%s: cannot open as HDF5: %s", R->p->file, eb);
}

static int open_dataset(reader *R) {
  char eb[700];
  R->dapl = sl__h5_guard_dapl(&R->guard);
  if (R->dapl < 0)
    return fail(R, "cannot set up access properties: %s",
                sl__h5_error_text(eb, sizeof eb, "unknown error"));
  R->did = H5Dopen2(R->fid, R->p->dataset, R->dapl);
  if (R->did >= 0) return 0;
  h5_why(R, eb, sizeof eb, "cannot open");
  if (R->guard.refusal[0]) return fail(R, "%s", eb);
  /* Say what the name is when it is not a dataset. */
  hid_t o = H5Oopen(R->fid, R->p->dataset, R->dapl);
  H5I_type_t type = o >= 0 ? H5Iget_type(o) : H5I_BADID;
  if (o >= 0) H5Oclose(o);
  H5Eclear2(H5E_DEFAULT);
  if (type == H5I_GROUP) return fail(R, "is a group, not a dataset");
  if (type == H5I_DATATYPE) return fail(R, "is a named datatype, not a dataset");
  return fail(R, "cannot open: %s", eb);
}

static int input_dir(reader *R) {
  int rc = sl__h5_guard_init(&R->guard, R->p->file);
  if (rc < 0) {
    char eb[128];
    return sl_worker_errorf(R->w, "%s: folder: %s", R->p->file,
                            sl__io_strerror(-rc, eb, sizeof eb));
  }
  struct stat st;
  if (stat(R->p->file, &st) == 0) R->file_size = (uint64_t)st.st_size;
  return 0;
}

/* Under the lock: lists the stored chunks' addresses into R->addrs when
 * that is cheap; else R->addrs stays NULL and chunks are read by
 * H5Dread_chunk. */
static void index_chunks(reader *R) {
  if (!R->p->mmap || !R->raw || R->empty) return;
  struct stat st;
  if (sl__h5_file_fd(R->fid, &st) < 0) return;
  R->file_dev = (uint64_t)st.st_dev;
  R->file_ino = (uint64_t)st.st_ino;
  R->file_size = (uint64_t)st.st_size;
  sl__h5_chunk_addrs(R->did, R->ndim, R->dims, R->tile, R->grid, R->tile_bytes,
                     R->total, &R->addrs, &R->naddrs);
}

/* Rows of axis 0 that tile t0 (its index along axis 0) has inside the
 * extent. */
static uint64_t valid_rows(const reader *R, uint64_t t0) {
  uint64_t left = R->dims[0] - t0 * R->tile[0];
  return left < R->tile[0] ? left : R->tile[0];
}

/* Unfiltered mapped chunks larger than piece= go out in pieces of whole
 * rows along axis 0 (contiguous in the file): small enough to stay in a
 * core's cache from h5.decode's read into the stages fused after it. Sets
 * R->prow and recounts R->total. */
static void plan_pieces(reader *R) {
  if (!R->addrs || R->nfilters || R->ndim == 0 || R->p->piece == 0 ||
      R->tile_bytes <= R->p->piece)
    return;
  uint64_t row = R->tile_bytes / R->tile[0];
  uint64_t prow = R->p->piece / row;
  if (prow == 0) prow = 1;
  if (prow >= R->tile[0]) return;
  uint64_t per_row0 = 0; /* items in one row of tiles along axis 0 ... */
  for (uint64_t t0 = 0; t0 < R->grid[0]; t0++)
    per_row0 += (valid_rows(R, t0) + prow - 1) / prow;
  uint64_t rest = R->total / R->grid[0]; /* ... times the tiles across it */
  if (per_row0 && rest > UINT64_MAX / per_row0) return;
  R->prow = prow;
  R->total = per_row0 * rest;
}

/* ---------------------------------------------------------------------- */
/* libhdf5's reads, without the lock (the caller holds it, or is the child) */

static herr_t do_size(reader *R, const hsize_t *off, hsize_t *size, char *eb, size_t len) {
  herr_t e = H5Dget_chunk_storage_size(R->did, off, size);
  if (e < 0) sl__h5_error_text(eb, len, "unknown error");
  return e;
}

static herr_t do_chunk(reader *R, const hsize_t *off, uint32_t *mask, void *dst, char *eb,
                       size_t len) {
  *mask = 0;
  herr_t e = H5Dread_chunk(R->did, H5P_DEFAULT, off, mask, dst);
  if (e < 0) sl__h5_error_text(eb, len, "unknown error");
  return e;
}

/* The hyperslab at off of cnt elements (the whole scalar when ndim is 0),
 * converted to R->memtype. */
static herr_t do_plain(reader *R, const hsize_t *off, const hsize_t *cnt, void *dst, char *eb,
                       size_t len) {
  hid_t fs = H5Dget_space(R->did), ms = -1;
  herr_t e = fs < 0 ? -1 : 0;
  if (e >= 0 && R->ndim) {
    ms = H5Screate_simple((int)R->ndim, cnt, NULL);
    e = ms < 0 ? -1 : H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL);
  }
  if (e >= 0)
    e = H5Dread(R->did, R->memtype, R->ndim ? ms : H5S_ALL, R->ndim ? fs : H5S_ALL,
                H5P_DEFAULT, dst);
  if (e < 0) sl__h5_error_text(eb, len, "unknown error");
  if (ms >= 0) H5Sclose(ms);
  if (fs >= 0) H5Sclose(fs);
  return e;
}

/* ---------------------------------------------------------------------- */
/* isolate=true: libhdf5 in a child process (h5_isolate.c)                 */
/*
 * The child opens the file and plans the read exactly as start() does,
 * reads the dataset's attributes as h5.write will copy them (so that copy
 * meets no surprise), and answers with an xopen, then its whole reader
 * (the plan: this same binary, so the same layout) and the chunk list.
 * Then it serves one xreq at a time with an xrep. X_CHUNK and X_PLAIN read
 * straight into the item's block, no copy: the request carries the block's
 * arena segment (SCM_RIGHTS) and the child maps exactly the block's data
 * pages (new_item gives the data pages of its own), so a libhdf5 bug that
 * writes out of bounds hits unmapped memory in the child, never another
 * block. The child ends when the parent closes its end (or kills it). The
 * parent restores its own pointers in the copied reader; it never holds an
 * HDF5 handle of the file. Planning runs under the child's address-space
 * cap; then the cap grows by what one item's window may need.
 */

enum { X_SIZE = 1, X_CHUNK = 2, X_PLAIN = 3 };
#define X_DEAD (-2) /* what the front ends return when the child is gone */

typedef struct xreq {
  uint32_t op, pad;
  uint64_t off[SL_MAX_DIMS], cnt[SL_MAX_DIMS];
  uint64_t size;    /* X_CHUNK, X_PLAIN: bytes to read */
  uint64_t seg_off; /* where they go in the arena segment sent with the
                       request (page-aligned) */
} xreq;

typedef struct xrep {
  int32_t rc; /* < 0: msg says why */
  uint32_t mask;
  uint64_t size; /* X_SIZE: the stored size; else the bytes read */
  char msg[700];
} xrep;

typedef struct xopen {
  int32_t rc;
  uint32_t pad;
  uint64_t naddrs;
  char msg[SL__ISO_MSG];
} xopen;

/* Reads an attribute as h5.write's copy does. */
static herr_t child_attr(hid_t loc, const char *name, const H5A_info_t *info, void *op) {
  (void)info;
  (void)op;
  sl__h5_attr at;
  sl__h5_attr_read(loc, name, &at);
  sl__h5_attr_free(&at);
  return 0; /* the next one: only a crash matters here */
}

/* For tests: SLUICE_TEST_H5_CHILD=crash@N or hang@N makes the child crash
 * or stop answering at its Nth request (1 = the first after opening). */
static void child_fault(unsigned long n) {
  const char *f = getenv("SLUICE_TEST_H5_CHILD");
  unsigned long at = 0;
  if (!f) return;
  if (sscanf(f, "crash@%lu", &at) == 1 && at == n) raise(SIGSEGV);
  if (sscanf(f, "hang@%lu", &at) == 1 && at == n)
    for (;;) pause();
}

/* In the child: maps `len` bytes at `off` of arena segment `seg` for
 * writing, or NULL. */
static char *child_direct(int seg, uint64_t off, uint64_t len) {
  if (seg < 0 || len == 0 || len > SIZE_MAX || off % page_size() || off > (uint64_t)INT64_MAX)
    return NULL;
  void *p = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, seg,
                 (off_t)off);
  return p == MAP_FAILED ? NULL : p;
}

static _Noreturn void child_serve(reader *R, int fd) {
  for (unsigned long n = 1;; n++) {
    xreq q;
    int seg = -1;
    if (sl__h5_child_recv_fd(fd, &seg, &q, sizeof q) != 0) _exit(0);
    child_fault(n);
    uint64_t maplen = (q.size + page_size() - 1) / page_size() * page_size();
    char *dst = q.op != X_SIZE ? child_direct(seg, q.seg_off, maplen) : NULL;
    if (seg >= 0) close(seg);
    xrep r;
    memset(&r, 0, sizeof r);
    hsize_t off[H5S_MAX_RANK], cnt[H5S_MAX_RANK];
    for (uint32_t d = 0; d < R->ndim && d < SL_MAX_DIMS; d++) {
      off[d] = q.off[d];
      cnt[d] = q.cnt[d];
    }
    if (q.op == X_SIZE) {
      hsize_t size = 0;
      r.rc = do_size(R, off, &size, r.msg, sizeof r.msg);
      r.size = size;
    } else if (!dst) {
      r.rc = -1;
      snprintf(r.msg, sizeof r.msg, "cannot map the %llu bytes of the block it reads into",
               (unsigned long long)maplen);
    } else {
      r.rc = q.op == X_CHUNK ? do_chunk(R, off, &r.mask, dst, r.msg, sizeof r.msg)
                             : do_plain(R, off, cnt, dst, r.msg, sizeof r.msg);
      r.size = r.rc >= 0 ? q.size : 0;
    }
    if (dst) munmap(dst, (size_t)maplen);
    if (sl__h5_child_send(fd, &r, sizeof r) != 0) _exit(0);
  }
}

/* The child: start()'s libhdf5 work, the attributes, the answer, then
 * requests until the parent goes. */
static _Noreturn void child_main(reader *R, int fd) {
  xopen *a = calloc(1, sizeof *a);
  if (!a) _exit(3);
  R->child_msg = a->msg;
  R->child_len = sizeof a->msg;
  int rc = open_file(R);
  if (rc == 0) rc = open_dataset(R);
  if (rc == 0) rc = inspect(R);
  if (rc == 0) index_chunks(R);
  if (rc == 0) H5Aiterate2(R->did, H5_INDEX_NAME, H5_ITER_INC, NULL, child_attr, NULL);
  H5Eclear2(H5E_DEFAULT);
  a->rc = rc < 0 ? -1 : 0;
  a->naddrs = R->addrs ? R->naddrs : 0;
  if (sl__h5_child_send(fd, a, sizeof *a) != 0 || rc < 0) _exit(0);
  if (sl__h5_child_send(fd, R, sizeof *R) != 0 ||
      (a->naddrs && sl__h5_child_send(fd, R->addrs, a->naddrs * sizeof *R->addrs) != 0))
    _exit(0);
  uint64_t item = R->tile_bytes > R->p->block ? R->tile_bytes : R->p->block;
  sl__h5_child_allow(SL__ISO_MEMORY + (item < MAX_ITEM_BYTES ? item : MAX_ITEM_BYTES) * 2);
  child_serve(R, fd);
}

/* The child is gone (crashed, or killed for not answering): ends it and
 * says so in eb. @return X_DEAD. */
static int x_dead(reader *R, int how, const char *what, char *eb, size_t len) {
  char why[200];
  sl__h5_child_end(&R->x, how, R->p->isolate_timeout, why, sizeof why);
  snprintf(eb, len, "libhdf5 failed %s (%s) in the process that reads the file: the "
           "file is damaged or crafted against libhdf5; %s", what, why,
           strcmp(what, "opening it") ? "the dataset ends here" : "not read");
  return X_DEAD;
}

/* Parent: forks the child and takes its plan. */
static int start_isolated(reader *R) {
  char eb[SL__ISO_MSG + 300];
  int rc = sl__h5_child_fork(&R->x);
  if (rc == 1) child_main(R, R->x.fd);
  if (rc < 0)
    return fail(R, "cannot start the process that reads it (%s); isolate=false reads "
                "it in this one", sl__io_strerror(-rc, eb, sizeof eb));
  R->iso = true;
  double t = R->p->isolate_timeout;
  xopen *a = calloc(1, sizeof *a);
  reader *c = calloc(1, sizeof *c);
  if (!a || !c) {
    free(a);
    free(c);
    return SL_ENOMEM;
  }
  rc = sl__h5_child_recv(R->x.fd, a, sizeof *a, t);
  if (rc == 0 && a->rc < 0) {
    a->msg[sizeof a->msg - 1] = '\0';
    rc = sl_worker_errorf(R->w, "%s", a->msg); /* as this process would say it */
    sl__h5_child_end(&R->x, 0, t, NULL, 0);
    free(a);
    free(c);
    return rc;
  }
  if (rc == 0) rc = sl__h5_child_recv(R->x.fd, c, sizeof *c, t);
  sl__h5_addr *addrs = NULL;
  if (rc == 0 && a->naddrs) {
    if (a->naddrs > SIZE_MAX / sizeof *addrs || !(addrs = malloc(a->naddrs * sizeof *addrs)))
      rc = SL_ENOMEM;
    else
      rc = sl__h5_child_recv(R->x.fd, addrs, a->naddrs * sizeof *addrs, t);
  }
  if (rc == 0) {
    /* The plan as the child made it; our own pointers and no handles. */
    sl__h5_child x = R->x;
    const rd_params *p = R->p;
    sl_worker *w = R->w;
    const char *base = R->base;
    *R = *c;
    R->p = p;
    R->w = w;
    R->base = base;
    R->x = x;
    R->iso = true;
    R->child_msg = NULL;
    R->child_len = 0;
    R->fid = R->did = R->dapl = R->memtype = -1;
    R->addrs = addrs;
    R->naddrs = addrs ? (size_t)a->naddrs : 0;
  }
  free(a);
  free(c);
  if (rc == 0) return 0;
  free(addrs);
  if (rc == SL_ENOMEM) {
    sl__h5_child_end(&R->x, 0, t, NULL, 0);
    return rc;
  }
  x_dead(R, rc, "opening it", eb, sizeof eb);
  return fail(R, "%s", eb);
}

/* Parent: one request. @return 0 with *size (X_SIZE) or `*size` bytes
 * at dst (inside block blk), -1 with libhdf5's error in eb, or X_DEAD. */
static int x_call(reader *R, uint32_t op, const hsize_t *off, const hsize_t *cnt,
                  uint64_t *size, uint32_t *mask, void *dst, sl_block *blk, char *eb,
                  size_t len) {
  static const char *const what[] = {"", "looking up a chunk", "reading a chunk",
                                     "reading values"};
  if (R->x.fd < 0) {
    snprintf(eb, len, "the process that reads the file is gone");
    return X_DEAD;
  }
  xreq q;
  memset(&q, 0, sizeof q);
  q.op = op;
  for (uint32_t d = 0; d < R->ndim; d++) {
    q.off[d] = off[d];
    q.cnt[d] = cnt ? cnt[d] : 0;
  }
  int seg = -1;
  if (op != X_SIZE) { /* new_item made dst start a page of the block's own */
    sl_block_ref ref = sl_block_get_ref(blk);
    uint64_t at = (uint64_t)((char *)dst - (char *)sl_block_data(blk));
    if (ref.segment != UINT32_MAX && (ref.offset + at) % page_size() == 0)
      seg = sl_arena_segment_fd(sl_worker_arena(R->w), ref.segment);
    if (seg < 0) {
      snprintf(eb, len, "cannot share the item's memory with the process that reads "
               "the file");
      return -1;
    }
    q.size = *size;
    q.seg_off = ref.offset + at;
  }
  xrep r;
  double t = R->p->isolate_timeout;
  int rc = sl__h5_child_send_fd(R->x.fd, seg, &q, sizeof q) == 0 ? 0 : SL__ISO_GONE;
  if (rc == 0) rc = sl__h5_child_recv(R->x.fd, &r, sizeof r, t);
  if (rc == 0 && r.rc >= 0 && op != X_SIZE && r.size != q.size) rc = SL__ISO_GONE;
  if (rc != 0) return x_dead(R, rc, what[op], eb, len);
  if (r.rc < 0) {
    r.msg[sizeof r.msg - 1] = '\0';
    snprintf(eb, len, "%s", r.msg);
    return -1;
  }
  if (op == X_SIZE) *size = r.size;
  if (mask) *mask = r.mask;
  return 0;
}

/* The front ends: in this process under the lock, or by the child.
 * @return >= 0, -1 (libhdf5's error in eb) or X_DEAD (eb says why). */
static int read_size(reader *R, const hsize_t *off, hsize_t *size, char *eb, size_t len) {
  if (R->iso) {
    uint64_t s = 0;
    int rc = x_call(R, X_SIZE, off, NULL, &s, NULL, NULL, NULL, eb, len);
    *size = s;
    return rc;
  }
  sl__h5_lock();
  herr_t e = do_size(R, off, size, eb, len);
  sl__h5_unlock();
  return e < 0 ? -1 : 0;
}

/* X_CHUNK (a raw chunk; its filter mask in *mask) or X_PLAIN (cnt values
 * converted) into dst, `size` bytes inside block blk. */
static int read_data(reader *R, uint32_t op, const hsize_t *off, const hsize_t *cnt,
                     uint64_t size, uint32_t *mask, void *dst, sl_block *blk, char *eb,
                     size_t len) {
  if (R->iso) return x_call(R, op, off, cnt, &size, mask, dst, blk, eb, len);
  sl__h5_lock();
  herr_t e = op == X_CHUNK ? do_chunk(R, off, mask, dst, eb, len)
                           : do_plain(R, off, cnt, dst, eb, len);
  sl__h5_unlock();
  return e < 0 ? -1 : 0;
}

static int start(reader *R) {
  int rc = input_dir(R);
  if (rc < 0) return rc;
  if (R->p->isolate) {
    rc = start_isolated(R);
  } else {
    sl__h5_lock();
    rc = open_file(R);
    if (rc == 0) rc = open_dataset(R);
    if (rc == 0) rc = inspect(R);
    if (rc == 0) index_chunks(R);
    sl__h5_unlock();
  }
  if (rc == 0) plan_pieces(R);
  if (rc < 0) return rc;
  if (R->out == SL_DT_NONE) R->out = R->src;
  sl_worker_set_total(R->w, R->total);
  return 0;
}

/* ---------------------------------------------------------------------- */
/* items                                                                   */

/* Allocates an item of `data` bytes after the header, filled from R's
 * current tile. */
static int new_item(reader *R, uint32_t mode, uint64_t data, sl_item **out,
                    sl__h5_chunk **hdr) {
  if (data > MAX_ITEM_BYTES + 65536) return fail(R, "item too large");
  /* Data the child will read into (isolate=true) starts on a page of its
   * own and ends before the block does, padding included: the child maps
   * exactly those pages, and nothing of another block. */
  uint64_t page = page_size();
  bool own_pages = R->iso && (mode == SL__H5_RAW || mode == SL__H5_PLAIN) && data;
  sl_block *b = NULL;
  int rc = sl_worker_alloc(R->w, SL__H5_HDR_SIZE + (size_t)data + (own_pages ? 2 * page : 0),
                           &b);
  if (rc < 0) {
    if (rc == SL_ECANCELED) return rc;
    char sz[32];
    return fail(R, "cannot allocate %s for a chunk: %s",
                sl__io_format_size(data, sz, sizeof sz), sl_strerror(rc));
  }
  size_t at = 0;
  if (own_pages) {
    uintptr_t d = (uintptr_t)sl_block_data(b) + SL__H5_HDR_SIZE;
    at = (size_t)((page - d % page) % page);
  }
  sl__h5_chunk *h = (sl__h5_chunk *)(void *)((char *)sl_block_data(b) + at);
  memset(h, 0, SL__H5_HDR_SIZE);
  h->magic = SL__H5_MAGIC;
  h->mode = mode;
  h->src = R->src;
  h->out = R->out;
  h->big_endian = R->big_endian;
  h->nfilters = R->nfilters;
  memcpy(h->filters, R->filters, sizeof h->filters);
  h->data_size = data;
  sl_array_desc *a = &h->array;
  a->dtype = R->out;
  a->ndim = R->ndim;
  char name[600];
  size_t nl = (size_t)snprintf(name, 300, "%.150s:%.140s[", R->base, R->p->dataset);
  for (uint32_t d = 0; d < R->ndim; d++) {
    /* A piece is a chunk of its own whose stored rows are the piece's. */
    uint64_t tile = R->tile[d], skip = d == 0 ? R->piece * R->prow : 0;
    if (d == 0 && R->prow) tile = tile - skip < R->prow ? tile - skip : R->prow;
    h->chunk[d] = tile;
    a->whole[d] = R->dims[d];
    a->origin[d] = R->empty ? 0 : R->at[d] * R->tile[d] + skip;
    uint64_t left = R->dims[d] - a->origin[d];
    a->shape[d] = R->empty ? R->dims[d] : left < tile ? left : tile;
    nl += (size_t)snprintf(name + nl, 24, "%s%" PRIu64, d ? "," : "", a->origin[d]);
  }
  snprintf(name + nl, 2, "]");
  sl_item *it = sl_item_create(R->seq, name);
  if (!it) {
    sl_block_release(b);
    return SL_ENOMEM;
  }
  sl_item_set_block(it, SL_KIND_BYTES, b, at, SL__H5_HDR_SIZE + (size_t)data);
  it->total_hint = R->total;
  rc = sl_item_meta_set(it, "h5.file", R->p->file);
  if (rc == 0) rc = sl_item_meta_set(it, "h5.dataset", R->p->dataset);
  if (rc == 0) rc = sl_item_meta_set(it, "h5.chunk", R->tile_text);
  if (rc < 0) {
    sl_item_destroy(it);
    return rc;
  }
  *out = it;
  *hdr = h;
  return 0;
}

#define MAX_FAILED_IN_ROW 16

/* Replaces *it with an ERROR item carrying `msg`; after MAX_FAILED_IN_ROW
 * in a row the file is beyond per-chunk trouble and the source ends. */
static int error_item(reader *R, const char *msg, sl_item **it) {
  sl_item_destroy(*it);
  *it = NULL;
  R->item_failed = true;
  if (R->piece == 0 && ++R->failed_in_row >= MAX_FAILED_IN_ROW)
    return fail(R, "giving up after %d chunks in a row failed; the last: %s",
                MAX_FAILED_IN_ROW, msg);
  char full[1400];
  snprintf(full, sizeof full, "%s: dataset %s: %s", R->p->file, R->p->dataset, msg);
  sl__h5_chunk *h;
  int rc = new_item(R, SL__H5_ERROR, strlen(full) + 1, it, &h);
  if (rc == 0) memcpy((char *)h + SL__H5_HDR_SIZE, full, strlen(full) + 1);
  return rc;
}

static void origin_of(reader *R, hsize_t *o) {
  for (uint32_t d = 0; d < R->ndim; d++) o[d] = R->at[d] * R->tile[d];
}

/* "3,0,128": coordinates for a message. @return buf. */
static const char *coords(const reader *R, const hsize_t *o, char *buf, size_t len) {
  size_t n = 0;
  buf[0] = '\0';
  for (uint32_t d = 0; d < R->ndim && n < len; d++)
    n += (size_t)snprintf(buf + n, len - n, "%s%llu", d ? "," : "", (unsigned long long)o[d]);
  return buf;
}

/* An unwritten chunk: its fill value. */
static int fill_item(reader *R, sl_item **out) {
  sl__h5_chunk *h;
  int rc = new_item(R, SL__H5_FILL, sl_dtype_size(R->src), out, &h);
  if (rc == 0) memcpy((char *)h + SL__H5_HDR_SIZE, R->fill, sl_dtype_size(R->src));
  return rc;
}

/* Largest stored size a chunk may have: its decoded size, plus what
 * deflate may add to incompressible data when filtered. */
static uint64_t max_stored(const reader *R) {
  return R->nfilters ? R->tile_bytes + R->tile_bytes / 8 + 4096 : R->tile_bytes;
}

/* The current tile from R->addrs: MAPPED, or FILL when never written. */
static int mapped_item(reader *R, sl_item **out) {
  uint64_t tile = 0; /* row-major index of R->at, as the list keys it */
  for (uint32_t d = 0; d < R->ndim; d++) tile = tile * R->grid[d] + R->at[d];
  const sl__h5_addr *c = sl__h5_addr_find(R->addrs, R->naddrs, tile);
  if (!c || c->size == 0) return fill_item(R, out);
  sl__h5_chunk *h;
  int rc = new_item(R, SL__H5_MAPPED, 0, out, &h);
  if (rc < 0) return rc;
  if (c->size > max_stored(R) || c->addr > R->file_size ||
      c->size > R->file_size - c->addr || (R->prow && c->size != R->tile_bytes)) {
    char msg[800];
    snprintf(msg, sizeof msg, "chunk at %s: stored chunk of %" PRIu64 " bytes at "
             "offset %" PRIu64 " does not fit its %" PRIu64 " decoded bytes "
             "or lies outside the %" PRIu64 "-byte file: corrupt chunk index",
             (*out)->name, c->size, c->addr, R->tile_bytes, R->file_size);
    return error_item(R, msg, out);
  }
  h->file_offset = c->addr;
  h->stored_size = c->size;
  if (R->prow) { /* unfiltered: the piece's rows, stored one after another */
    uint64_t row = R->tile_bytes / R->tile[0];
    h->file_offset += R->piece * R->prow * row;
    h->stored_size = h->chunk[0] * row;
  }
  h->filter_mask = c->mask;
  h->file_dev = R->file_dev;
  h->file_ino = R->file_ino;
  return 0;
}

/* The current block of a contiguous dataset, MAPPED: a chunk of its own
 * whose stored shape is the block's. */
static int contig_item(reader *R, sl_item **out) {
  sl__h5_chunk *h;
  int rc = new_item(R, SL__H5_MAPPED, 0, out, &h);
  if (rc < 0) return rc;
  uint64_t first = 0, n = 1; /* flat index of the block's origin; elements */
  for (uint32_t d = 0; d < R->ndim; d++) {
    first = first * R->dims[d] + h->array.origin[d];
    h->chunk[d] = h->array.shape[d];
    n *= h->array.shape[d];
  }
  uint64_t es = sl_dtype_size(R->src);
  h->file_offset = R->contig_addr + first * es;
  h->stored_size = n * es;
  h->file_dev = R->file_dev;
  h->file_ino = R->file_ino;
  return 0;
}

/* A stored chunk (RAW) or an unwritten one (FILL). */
static int raw_item(reader *R, sl_item **out) {
  hsize_t off[H5S_MAX_RANK];
  origin_of(R, off);
  hsize_t size = 0;
  char eb[SL__ISO_MSG], msg[SL__ISO_MSG + 200];
  /* An index lookup (H5Dget_chunk_info_by_coord walks the whole index in
   * 1.10: quadratic over a dataset). 0 bytes: never written. */
  int e = read_size(R, off, &size, eb, sizeof eb);
  if (e == X_DEAD) return fail(R, "chunk at [%s]: %s", coords(R, off, msg, sizeof msg), eb);
  /* 1.10.8 reports an unwritten chunk as this error, not as size 0. */
  if (e < 0 && strstr(eb, "chunk storage is not allocated")) {
    e = 0;
    size = 0;
  }
  /* A broken chunk index is not one bad chunk: every later lookup would
   * fail the same way, so the dataset ends here. */
  if (e < 0) return fail(R, "its chunk index is corrupt: %s", eb);
  sl__h5_chunk *h;
  int rc;
  if (e >= 0 && size == 0) return fill_item(R, out);
  uint64_t max = max_stored(R);
  if (e >= 0 && (size > max || (R->file_size && size > R->file_size))) {
    snprintf(eb, sizeof eb, "stored chunk of %" PRIu64 " bytes is larger than "
             "its %" PRIu64 " decoded bytes allow (or than the file): corrupt "
             "chunk index", (uint64_t)size, R->tile_bytes);
    e = -1;
  }
  rc = new_item(R, SL__H5_RAW, e >= 0 ? size : 0, out, &h);
  if (rc < 0) return rc;
  if (e >= 0) {
    uint32_t m2 = 0;
    e = read_data(R, X_CHUNK, off, NULL, size, &m2, (char *)h + SL__H5_HDR_SIZE,
                  (*out)->payload.block, eb, sizeof eb);
    h->filter_mask = m2;
  }
  if (e == X_DEAD) {
    sl_item_destroy(*out);
    *out = NULL;
    return fail(R, "chunk at [%s]: %s", coords(R, off, msg, sizeof msg), eb);
  }
  if (e >= 0) return 0;
  snprintf(msg, sizeof msg, "chunk at %s: %s", (*out)->name, eb);
  return error_item(R, msg, out);
}

/* A tile read (and converted to native) by H5Dread. */
static int plain_item(reader *R, sl_item **out) {
  uint64_t es = sl_dtype_size(R->src);
  sl__h5_chunk *h;
  sl_item *it = NULL;
  /* Shape first (new_item computes it), then the data size. */
  uint64_t n = 1;
  for (uint32_t d = 0; d < R->ndim; d++) {
    uint64_t o = R->empty ? 0 : R->at[d] * R->tile[d], left = R->dims[d] - o;
    n *= R->empty ? R->dims[d] : left < R->tile[d] ? left : R->tile[d];
  }
  int rc = new_item(R, SL__H5_PLAIN, n * es, &it, &h);
  if (rc < 0) return rc;
  h->src = R->src;
  *out = it;
  if (n == 0) return 0;
  char eb[SL__ISO_MSG], msg[SL__ISO_MSG + 200];
  hsize_t off[H5S_MAX_RANK], cnt[H5S_MAX_RANK];
  origin_of(R, off);
  for (uint32_t d = 0; d < R->ndim; d++) cnt[d] = h->array.shape[d];
  int e = read_data(R, X_PLAIN, off, cnt, n * es, NULL, (char *)h + SL__H5_HDR_SIZE,
                    it->payload.block, eb, sizeof eb);
  if (e == X_DEAD) {
    sl_item_destroy(it);
    *out = NULL;
    return fail(R, "block at [%s]: %s", coords(R, off, msg, sizeof msg), eb);
  }
  if (e >= 0) return 0;
  snprintf(msg, sizeof msg, "reading %s: %s", it->name, eb);
  return error_item(R, msg, out);
}

/* Moves to the next piece, or R->at to the next tile in row-major order. */
static void advance(reader *R) {
  R->seq++;
  if (R->prow && ++R->piece * R->prow < valid_rows(R, R->at[0])) return;
  R->piece = 0;
  for (int d = (int)R->ndim - 1; d >= 0; d--) {
    if (++R->at[d] < R->grid[d]) return;
    R->at[d] = 0;
  }
}

/* ---------------------------------------------------------------------- */
/* callbacks                                                               */

static int rd_open(sl_worker *w, void **local) {
  reader *R = calloc(1, sizeof *R);
  if (!R) return SL_ENOMEM;
  const rd_shared *S = sl_worker_shared(w);
  R->p = sl_worker_params(w);
  R->w = w;
  R->out = S->out;
  R->fid = R->did = R->dapl = R->memtype = -1;
  R->x.fd = R->x.pid = -1;
  const char *slash = strrchr(R->p->file, '/');
  R->base = slash ? slash + 1 : R->p->file;
  *local = R;
  return 0;
}

static int rd_produce(sl_worker *w, sl_item **out) {
  reader *R = sl_worker_local(w);
  *out = NULL;
  R->w = w;
  if (!R->started) {
    R->started = true;
    int rc = start(R);
    if (rc < 0) {
      R->done = true;
      return rc;
    }
  }
  /* Distributed runs: skip the tiles of other ranks without reading them. */
  while (!R->done && R->seq < R->total && !sl_worker_owns(w, R->seq)) advance(R);
  if (R->done || R->seq >= R->total) return SL_DONE;
  R->item_failed = false;
  int rc = R->addrs ? mapped_item(R, out)
           : R->contig ? contig_item(R, out)
           : R->raw && !R->empty ? raw_item(R, out) : plain_item(R, out);
  if (rc == 0 && !R->item_failed) R->failed_in_row = 0;
  if (rc < 0) {
    R->done = true;
    return rc;
  }
  advance(R);
  return 0;
}

static void rd_close(sl_worker *w) {
  reader *R = sl_worker_local(w);
  if (!R) return;
  if (R->x.pid > 0) sl__h5_child_end(&R->x, 0, 0, NULL, 0);
  if (R->fid >= 0 || R->dapl >= 0 || R->memtype >= 0) {
    sl__h5_lock();
    if (R->did >= 0) H5Dclose(R->did);
    if (R->fid >= 0) H5Fclose(R->fid);
    if (R->dapl >= 0) H5Pclose(R->dapl);
    if (R->memtype >= 0) H5Tclose(R->memtype);
    H5Eclear2(H5E_DEFAULT);
    sl__h5_unlock();
  }
  free(R->addrs);
  free(R);
}

static void rd_destroy(void *state) { free(state); }

static int rd_create(sl_stage *st, void **state) {
  const rd_params *p = sl_stage_params(st);
  rd_shared *S = calloc(1, sizeof *S);
  if (!S) return sl_stage_errorf(st, "out of memory");
  *state = NULL;
  int rc = 0;
  struct stat sb;
  char eb[128];
  S->out = sl__h5_dtype_from_choice(p->dtype);
  if (!p->file[0])
    rc = sl_stage_errorf(st, "file= must not be empty");
  else if (!p->dataset[0])
    rc = sl_stage_errorf(st, "dataset= must not be empty");
  else if (stat(p->file, &sb) < 0)
    rc = sl_stage_errorf(st, "file '%s': %s", p->file,
                         sl__io_strerror(errno, eb, sizeof eb));
  else if (S_ISDIR(sb.st_mode))
    rc = sl_stage_errorf(st, "file '%s' is a directory", p->file);
  if (rc < 0) {
    free(S);
    return rc;
  }
  *state = S;
  return 0;
}

static uint64_t rd_item_bytes(const sl_stage *st) {
  const rd_params *p = sl_stage_params(st);
  return p->block;
}

static const sl_param_def rd_params_table[] = {
    {"file", SL_PARAM_STRING, offsetof(rd_params, file), NULL, 0, 0, NULL,
     "the HDF5 file"},
    {"dataset", SL_PARAM_STRING, offsetof(rd_params, dataset), NULL, 0, 0, NULL,
     "path of the dataset in the file, e.g. /group/t2m"},
    {"dtype", SL_PARAM_CHOICE, offsetof(rd_params, dtype), "native", 0, 0,
     SL__H5_DTYPE_CHOICES, "element type of the arrays: native (the dataset's "
     "own type, in native byte order) or a conversion (exact: a value that "
     "does not fit an integer type is an error naming the element)"},
    {"block", SL_PARAM_SIZE, offsetof(rd_params, block), "16MiB", 4096,
     1073741824.0, NULL, "bytes per item for datasets that are not chunked "
     "(whole rows along the first axis)"},
    {"mmap", SL_PARAM_BOOL, offsetof(rd_params, mmap), "true", 0, 0, NULL,
     "read stored chunks of 256 KiB or more, and contiguous data, straight "
     "from the file (mapped, or pread for pieces; the file must not be "
     "truncated while it is read); false: copy them through libhdf5"},
    {"piece", SL_PARAM_SIZE, offsetof(rd_params, piece), "512KiB", 0,
     1073741824.0, NULL, "mapped unfiltered chunks larger than this go out in "
     "pieces of whole rows of about this size, so that the stages after "
     "h5.decode find them in the core's cache; 0: whole chunks (cheaper when "
     "the arrays are written back with h5.write, which must put pieces "
     "together again)"},
    {"isolate", SL_PARAM_BOOL, offsetof(rd_params, isolate), "true", 0, 0, NULL,
     "run libhdf5 on this file in a child process (opening it, and every "
     "chunk or block read through libhdf5; mapped chunks are read here): a "
     "file on which libhdf5 crashes or hangs becomes an error of this source "
     "instead of killing sluice; false: in this process (trusted files; "
     "saves a copy of what libhdf5 reads)"},
    {"isolate_timeout", SL_PARAM_FLOAT, offsetof(rd_params, isolate_timeout), "60",
     0.01, 1e6, NULL, "seconds the child may take to open the file or to answer "
     "one read before the file counts as one that hangs libhdf5"},
    SL_PARAM_END,
};

const sl_stage_def sl__stage_h5_read = {
    .name = "h5.read",
    .summary = "stream an HDF5 dataset as chunk-aligned arrays (any rank, int/float)",
    .help =
        "Reads dataset= of file= (1-D to 8-D, or a scalar; integer, enum,\n"
        "bitfield or floating-point elements of either byte order; half floats\n"
        "become float32) and emits one item per chunk of the dataset, in\n"
        "row-major chunk order: ARRAY payloads with the chunk's shape, its\n"
        "origin in the whole dataset and the whole shape. Datasets that are not\n"
        "chunked come in blocks of about block= bytes of whole rows; contiguous\n"
        "ones of plain integers or IEEE floats are read straight from the file\n"
        "by h5.decode, like unfiltered chunks (mmap=false: through libhdf5).\n"
        "h5.decode always follows (the pipeline inserts it): chunks compressed\n"
        "with deflate/shuffle/fletcher32 are read raw and decompressed there on\n"
        "all cores; HDF5 itself is not thread-safe and is called from one\n"
        "thread at a time. Other filters (szip, scaleoffset, nbit) are decoded by\n"
        "HDF5; missing ones (lzf 32000, lz4 32004, bitshuffle 32008) are an\n"
        "error naming the filter. Unwritten chunks read as the fill value.\n"
        "Chunks of 256 KiB or more are mapped from the file (mmap) by h5.decode\n"
        "instead of copied when their addresses can be listed cheaply; whole\n"
        "unfiltered chunks then reach the next stage with no copy. Unfiltered\n"
        "chunks larger than piece= go out in pieces of whole rows, which\n"
        "h5.decode reads (pread) into the core's cache for the stages after it.\n"
        "Security: external links, external raw-data files and virtual-dataset\n"
        "sources must stay inside the input file's folder. A file left open\n"
        "by a crashed writer is refused (clear it with `h5clear -s FILE`).\n"
        "libhdf5 runs on the file in a child process (isolate=true): a file\n"
        "on which libhdf5 crashes or hangs fails this source with a message\n"
        "saying so, and sluice goes on.\n"
        "Item names are FILE:DATASET[origin]; metadata h5.file, h5.dataset\n"
        "and h5.chunk travel with every item (h5.write uses them).\n"
        "Example: h5.read file=climate.h5 dataset=/t2m ! reduce ops=mean",
    .exec = SL_EXEC_IO,
    .in_kind = SL_KIND_NONE,
    .out_kind = SL_KIND_BYTES,
    .flags = SL_STAGE_SOURCE,
    .params = rd_params_table,
    .params_size = sizeof(rd_params),
    .create = rd_create,
    .destroy = rd_destroy,
    .open = rd_open,
    .produce = rd_produce,
    .close = rd_close,
    .item_bytes = rd_item_bytes,
    .then = "h5.decode",
};
