/*
 * io_internal.h -- definitions shared between the files of io/.
 * Private to the library: every source/sink file exports its sl_stage_def
 * here, io_register.c adds them all and holds the small helpers below.
 * Only the public "sluice.h" is used.
 */
#ifndef SLUICE_IO_INTERNAL_H
#define SLUICE_IO_INTERNAL_H

#include "sluice.h"

extern const sl_stage_def sl__stage_files_list;  /* files_list.c */
extern const sl_stage_def sl__stage_files_read;  /* files_read.c */
extern const sl_stage_def sl__stage_files_write; /* files_write.c */
extern const sl_stage_def sl__stage_png_decode;  /* png_stages.c */
extern const sl_stage_def sl__stage_png_encode;  /* png_stages.c */
extern const sl_stage_def sl__stage_csv_read;    /* csv_read.c */
extern const sl_stage_def sl__stage_csv_parse;   /* csv_parse.c */
extern const sl_stage_def sl__stage_csv_write;   /* csv_write.c */
extern const sl_stage_def sl__stage_json_write;  /* json_write.c */
extern const sl_stage_def sl__stage_npy_read;    /* npy_read.c */
extern const sl_stage_def sl__stage_npy_write;   /* npy_write.c */
extern const sl_stage_def sl__stage_raw_read;    /* raw_read.c */

/* Thread-safe strerror for a positive errno value; the text is written to
 * `buf` (or is static) and stays valid while `buf` does. */
const char *sl__io_strerror(int errnum, char *buf, size_t len);
/* malloc'd printf; the caller frees it. NULL when out of memory. */
char *sl__io_asprintf(const char *fmt, ...) SL_PRINTF(1, 2);
/* Human-readable byte count into `buf`: "512 bytes", "1.5 MiB". */
const char *sl__io_format_size(uint64_t bytes, char *buf, size_t len);

/* ---- arrays in files (npy_array.c; npy.read, raw.read, npy.write) ---- */

/* "<f8", ">i4", "|b1", "f4", "float64", "uint8", "bool" (numpy's descr
 * codes or names; '<' little, '>' big, '|' not applicable (1-byte types
 * only), '=' or none: native). *swap: the bytes are not in native order.
 * @return 0 or SL_EINVAL. */
int sl__npy_dtype_parse(const char *text, sl_dtype *t, bool *swap);
/* numpy's descr of native-order `t` ("<f8", "|u1") into buf. */
const char *sl__npy_descr(sl_dtype t, char *buf, size_t len);
/* Whether npy_convert converts from -> to (not float to integer). */
bool sl__npy_can_convert(sl_dtype from, sl_dtype to);
/* Converts n elements of type st at src (byte-swapped first, in place,
 * when `swap`) to type dt at dst (dst may equal src when the types match):
 * to float by value, integer to integer wrapping as numpy's astype. */
void sl__npy_convert(void *dst, sl_dtype dt, const void *src, sl_dtype st,
                     bool swap, size_t n);

/* How an array lies in a file: C order from byte `offset`. */
typedef struct sl__npy_layout {
  sl_dtype dtype;  /* as stored */
  bool swap;       /* stored in the other byte order */
  uint32_t ndim;
  uint64_t shape[SL_MAX_DIMS];
  uint64_t offset; /* of the first element */
} sl__npy_layout;

/* Elements and bytes of the layout. @return 0 or SL_ERANGE (overflow). */
int sl__npy_shape_bytes(const sl__npy_layout *L, uint64_t *elems, uint64_t *bytes);
/* "(3, 4)", "(5,)", "()" into buf. */
const char *sl__npy_shape_text(const uint64_t *shape, uint32_t ndim, char *buf,
                               size_t len);

/* Streams an array as ARRAY items (see npy_array.c). One thread. */
typedef struct sl__npy_reader {
  int fd;
  const char *shown, *base; /* path for messages; file name for item names */
  sl__npy_layout L;
  sl_dtype out;    /* element type of the items */
  uint64_t block;  /* bytes per chunk (at least one element) */
  bool started;
  uint32_t k;      /* split axis */
  uint64_t inner, per, elems, pos, seq;
  uint64_t idx[SL_MAX_DIMS];
  void *tmp;       /* conversion buffer */
  size_t tmpcap;
} sl__npy_reader;

/* Opens `path` (a regular file) into R->fd; *size is its size. */
int sl__npy_reader_open(sl_worker *w, sl__npy_reader *R, const char *path,
                        uint64_t *size);
/* Checks R->L against the file size (before anything is allocated from
 * the shape) and plans the chunks. @return 0 or an error on w. */
int sl__npy_reader_start(sl_worker *w, sl__npy_reader *R, uint64_t file_size);
/* The next chunk into *out. @return 0, SL_DONE, or an error. */
int sl__npy_reader_next(sl_worker *w, sl__npy_reader *R, sl_item **out);
void sl__npy_reader_close(sl__npy_reader *R);
/* Check-time test that `path` names a readable file. */
int sl__npy_check_file(sl_stage *st, const char *path);

/* open() of a sink that writes all items into one output (csv.write,
 * json.write, npy.write, h5.write): refuses a distributed run where it
 * would see only this rank's share (sl_worker_sees_all), naming the stage.
 * @return 0 or SL_ESTAGE. */
int sl__io_single_output_check(sl_worker *w);

#endif
