/*
 * io_register.c -- adds every built-in source and sink to a registry, and
 * holds the helpers the io/ files share (io_internal.h).
 */
#include <stdlib.h>
#include <string.h>

#include "h5_internal.h"
#include "io_internal.h"
#include "sluice_io.h"

static const sl_stage_def *const builtin[] = {
    &sl__stage_files_list,
    &sl__stage_files_read,
    &sl__stage_files_write,
    &sl__stage_png_decode,
    &sl__stage_png_encode,
    &sl__stage_csv_read,
    &sl__stage_csv_parse,
    &sl__stage_csv_write,
    &sl__stage_json_write,
    &sl__stage_npy_read,
    &sl__stage_npy_write,
    &sl__stage_raw_read,
    &sl__stage_h5_read,
    &sl__stage_h5_decode,
    &sl__stage_h5_write,
};

/* The definitions are static data, so they outlive any registry. */
int sl_io_register_all(sl_registry *reg) {
  for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++) {
    int rc = sl_registry_add(reg, builtin[i]);
    if (rc < 0) return rc;
  }
  return 0;
}

/* The XSI strerror_r (we do not define _GNU_SOURCE), which unlike strerror
 * is required to be thread-safe. */
const char *sl__io_strerror(int errnum, char *buf, size_t len) {
  if (strerror_r(errnum, buf, len) != 0)
    snprintf(buf, len, "error %d", errnum);
  return buf;
}

char *sl__io_asprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return NULL;
  char *s = malloc((size_t)n + 1);
  if (!s) return NULL;
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}

const char *sl__io_format_size(uint64_t bytes, char *buf, size_t len) {
  static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) {
    snprintf(buf, len, "%u bytes", (unsigned)bytes);
    return buf;
  }
  double v = (double)bytes / 1024;
  size_t u = 0;
  while (v >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
    v /= 1024;
    u++;
  }
  snprintf(buf, len, "%.1f %s", v, units[u]);
  return buf;
}

int sl__io_single_output_check(sl_worker *w) {
  if (sl_worker_sees_all(w)) return 0;
  return sl_worker_errorf(w, "rank %u of %u sees only its share of the items, "
                          "and one output file cannot be written by every "
                          "rank: put groupby, aggregate or reduce before it, "
                          "or run without mpirun",
                          sl_worker_rank(w), sl_worker_ranks(w));
}
