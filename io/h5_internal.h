/*
 * h5_internal.h -- what the HDF5 files of io/ share (h5_lock.c, h5_isolate.c,
 * h5_read.c, h5_decode.c, h5_convert.c, h5_write.c, h5_table.c).
 *
 * Threading. Debian's libhdf5 is built without its thread-safety option, so
 * every HDF5 call in the process goes through one lock (sl__h5_lock). Code
 * holding it never waits for anything else: no arena allocation (that may
 * wait for memory that only a later stage frees), no queue operation. Lock
 * order: a stage's own mutex, then the HDF5 lock; never the other way.
 *
 * Chunk items. h5.read emits BYTES items that h5.decode turns into ARRAY
 * items. Each starts with an sl__h5_chunk header (native byte order: both
 * stages run in the same process or in processes of the same machine),
 * padded to SL__H5_HDR_SIZE bytes, followed by `data_size` bytes:
 *   RAW    a chunk exactly as stored (H5Dread_chunk): filters still applied,
 *          file byte order; h5.decode undoes deflate/shuffle/fletcher32,
 *          clips edge chunks to the extent and converts.
 *   FILL   an unwritten chunk: one element (the fill value, file order).
 *   PLAIN  values already read by H5Dread (native `src` dtype, the item's
 *          shape, C order); h5.decode passes them on, converted if asked.
 *   ERROR  reading this item failed; data is the message (NUL-terminated).
 *          h5.decode fails the item with it, so one bad chunk is one failed
 *          item and the others go on.
 *   MAPPED a RAW chunk left in the file: no data, but where it is (file
 *          offset and stored size, in the file h5.file names, which must
 *          still be the file of file_dev/file_ino). h5.decode maps those
 *          bytes (mmap, private; up to 1 MiB: pread into the output or a
 *          scratch buffer) and decodes them as RAW; an unfiltered
 *          chunk in native order then reaches the next stage as a view of
 *          the file's page cache: no copy at all. h5.read sends these when
 *          it knows the chunks' addresses (h5_read.c says when).
 */
#ifndef SLUICE_H5_INTERNAL_H
#define SLUICE_H5_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice.h"

/* ---- the process-wide HDF5 lock (h5_lock.c) --------------------------- */

/* Takes the lock; the first call also initialises HDF5 and turns its
 * automatic error printing off. Not recursive. */
void sl__h5_lock(void);
void sl__h5_unlock(void);
/* Under the lock: describes HDF5's error stack as one line, "what (cause)"
 * (outermost description, innermost cause), into buf, and clears the stack.
 * Writes `fallback` when the stack is empty. @return buf. */
const char *sl__h5_error_text(char *buf, size_t len, const char *fallback);

/* ---- libhdf5 in a child process (h5_isolate.c) ------------------------- */

/* A child forked to run libhdf5 on one file: its pid and our end of the
 * socket between us (-1 when none). */
typedef struct sl__h5_child {
  int fd, pid;
} sl__h5_child;

enum { SL__ISO_GONE = -2000, SL__ISO_LATE = -2001 };
#define SL__ISO_MSG 1536
#define SL__ISO_MEMORY (UINT64_C(4) << 30) /* the child's address space, beyond ours */

/* Forks under the HDF5 lock (call it without). @return 0 in the parent
 * (c filled), 1 in the child (c->fd is its end; it holds the HDF5 lock,
 * calls libhdf5 directly, nothing of the engine, and ends with _exit), or
 * -errno when no child could be started. */
int sl__h5_child_fork(sl__h5_child *c);
/* In the child: its address space capped at its size now plus `extra`
 * bytes (the soft limit; at the fork, SL__ISO_MEMORY). */
void sl__h5_child_allow(uint64_t extra);
/* Writes n bytes. @return 0, or -1 when the other end is gone. */
int sl__h5_child_send(int fd, const void *p, size_t n);
/* sl__h5_child_send with file descriptor `pass` attached (the other
 * process gets a copy of it; < 0: none). */
int sl__h5_child_send_fd(int fd, int pass, const void *p, size_t n);
/* Reads exactly n bytes, blocking, and the descriptor sent with them into
 * *got (-1 when none; close-on-exec; the caller closes it).
 * @return 0 or SL__ISO_GONE. */
int sl__h5_child_recv_fd(int fd, int *got, void *p, size_t n);
/* Reads exactly n bytes, waiting at most `timeout` seconds (< 0: for
 * ever). @return 0, SL__ISO_GONE (the other end closed or died) or
 * SL__ISO_LATE. */
int sl__h5_child_recv(int fd, void *p, size_t n, double timeout);
/* In the parent: closes our end, kills the child (a dead one keeps its
 * status), reaps it and, when why is given, says how it ended: `how` is
 * what the last receive returned ("no answer within ..." for
 * SL__ISO_LATE, else "signal 11, SIGSEGV, ..." or "exit status 1, ..."). */
void sl__h5_child_end(sl__h5_child *c, int how, double timeout, char *why, size_t len);

/* ---- chunk items ------------------------------------------------------ */

#define SL__H5_MAGIC 0x4B433548u /* "H5CK" */
#define SL__H5_MAX_FILTERS 8
#define SL__H5_HDR_SIZE 512

enum { SL__H5_RAW = 1, SL__H5_FILL = 2, SL__H5_PLAIN = 3, SL__H5_ERROR = 4,
       SL__H5_MAPPED = 5 };

typedef struct sl__h5_chunk {
  uint32_t magic, mode;
  uint32_t filter_mask;  /* RAW: bit i set = filter i was skipped on write */
  uint32_t nfilters;     /* RAW: filter ids in pipeline (write) order */
  uint32_t filters[SL__H5_MAX_FILTERS];
  uint32_t big_endian;   /* RAW, FILL: stored byte order */
  sl_dtype src;          /* element type of the data */
  sl_dtype out;          /* what h5.decode emits */
  uint64_t chunk[SL_MAX_DIMS]; /* RAW: the full chunk shape as stored */
  sl_array_desc array;   /* shape (clipped), origin, whole; dtype = out */
  uint64_t data_size;    /* bytes after the header */
  /* MAPPED: where the stored chunk is, and which file it is in */
  uint64_t file_offset, stored_size;
  uint64_t file_dev, file_ino;
} sl__h5_chunk;

_Static_assert(sizeof(sl__h5_chunk) <= SL__H5_HDR_SIZE, "header too big");

/* ---- numbers (h5_convert.c) ------------------------------------------- */

/* Converts n elements from src (dtype st, byte-swapped when `swap`) to dst
 * (dtype dt). Integer results must be exact: a value out of dt's range, a
 * NaN or an infinity gives an error; floats are truncated toward zero (as
 * numpy's astype). @return 0, or 1 with *bad = the index of the first
 * element that does not fit. */
int sl__h5_convert(void *dst, sl_dtype dt, const void *src, sl_dtype st,
                   bool swap, size_t n, size_t *bad);
/* dtype= is a choice in this order: index 0 ("native") is SL_DT_NONE, the
 * others follow sl_dtype from SL_DT_I8 on. */
#define SL__H5_DTYPE_CHOICES                                                   \
  "native|int8|uint8|int16|uint16|int32|uint32|int64|uint64|float32|float64"
static inline sl_dtype sl__h5_dtype_from_choice(int i) {
  return i <= 0 ? SL_DT_NONE : (sl_dtype)(SL_DT_I8 + i - 1);
}

/* ---- paths ------------------------------------------------------------ */

/* Whether `target` (absolute, or relative to `dir`) resolves (symlinks
 * followed) to an existing file inside directory `dir` (a realpath).
 * @return 0 inside, 1 outside or missing (why in buf). */
int sl__h5_path_inside(const char *dir, const char *target, char *why,
                       size_t len);

/* Link-access guard: external links must resolve inside `dir`. */
typedef struct sl__h5_guard {
  char dir[4096];      /* realpath of the input's folder */
  char refusal[600];   /* why the last link was refused; "" if none */
} sl__h5_guard;
/* Fills g->dir from the folder of `file`. @return 0 or -errno. */
int sl__h5_guard_init(sl__h5_guard *g, const char *file);
/* Under the lock: a dataset-access property list that resolves external
 * links, external raw-data files and virtual sources against g->dir and
 * refuses links leaving it (reason in g->refusal). g must outlive it.
 * @return the plist or a negative id. */
int64_t sl__h5_guard_dapl(sl__h5_guard *g);

/* ---- where stored chunks lie (h5_chunks.c) ---------------------------- */

/* A stored chunk: its tile index (row-major over the chunk grid) and its
 * place in the file. */
typedef struct sl__h5_addr {
  uint64_t tile, addr, size;
  uint32_t mask; /* filters skipped on write */
} sl__h5_addr;
struct stat;
/* Under the lock: every stored chunk of dataset `did` (ndim axes, extent
 * dims, chunk shape tile, grid = chunks per axis, tile_bytes per chunk,
 * total = chunks in the grid) sorted by tile, when listing is cheap (see
 * h5_chunks.c). @return 0 with *out (caller frees) and *count, or -1:
 * not listed (too costly, or anything unexpected). */
int sl__h5_chunk_addrs(int64_t did, uint32_t ndim, const uint64_t *dims,
                       const uint64_t *tile, const uint64_t *grid, uint64_t tile_bytes,
                       uint64_t total, sl__h5_addr **out, size_t *count);
/* The entry of `tile` in a list from sl__h5_chunk_addrs, or NULL. */
const sl__h5_addr *sl__h5_addr_find(const sl__h5_addr *a, size_t n, uint64_t tile);
/* Under the lock: the descriptor HDF5 reads file `fid` through, when it is
 * a regular local file opened by the sec2 driver (owned by HDF5: do not
 * close), with its fstat in *st; else -1. */
int sl__h5_file_fd(int64_t fid, struct stat *st);

/* ---- stage definitions ------------------------------------------------ */
extern const sl_stage_def sl__stage_h5_decode; /* h5_decode.c */
extern const sl_stage_def sl__stage_h5_read;   /* h5_read.c */
extern const sl_stage_def sl__stage_h5_write;  /* h5_write.c */

/* h5_table.c: writes TABLE items gathered by h5.write. */
typedef struct sl__h5_tables sl__h5_tables;
/* Copies the table of `pl` (seq orders the rows). @return 0, SL_ENOMEM, or
 * SL_ESTAGE with the reason in why. */
int sl__h5_tables_add(sl__h5_tables **t, uint64_t seq, const sl_payload *pl,
                      char *why, size_t len);
/* Under the HDF5 lock: writes the gathered rows into group `group` of file
 * `fid`, one 1-D dataset per column. @return 0 or -1 (why in buf). */
int sl__h5_tables_write(sl__h5_tables *t, int64_t fid, const char *group,
                        char *why, size_t len);
void sl__h5_tables_free(sl__h5_tables *t);

#ifdef H5_VERS_MAJOR /* for the files that include <hdf5.h> first */
/* The native HDF5 memory type of an sl_dtype (bool as uint8; anything
 * else unknown as double). In h5_lock.c. */
hid_t sl__h5_native(sl_dtype t);

/* An attribute read whole (h5_lock.c), for h5.write's copy and h5.read's
 * child process. Under the lock: opens attribute `name` of `loc` and reads
 * its values (at most 64 MiB; reference-typed ones are not read: skip is
 * set, buf stays NULL). @return 0, or -1 (HDF5's error stack says why). Call
 * sl__h5_attr_free either way. */
typedef struct sl__h5_attr {
  hid_t a, t, s;
  void *buf;
  bool skip;
} sl__h5_attr;
int sl__h5_attr_read(hid_t loc, const char *name, sl__h5_attr *at);
void sl__h5_attr_free(sl__h5_attr *at);
#endif

#endif
