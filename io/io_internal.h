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

/* Thread-safe strerror for a positive errno value; the text is written to
 * `buf` (or is static) and stays valid while `buf` does. */
const char *sl__io_strerror(int errnum, char *buf, size_t len);
/* malloc'd printf; the caller frees it. NULL when out of memory. */
char *sl__io_asprintf(const char *fmt, ...) SL_PRINTF(1, 2);
/* Human-readable byte count into `buf`: "512 bytes", "1.5 MiB". */
const char *sl__io_format_size(uint64_t bytes, char *buf, size_t len);

#endif
