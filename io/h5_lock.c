/*
 * h5_lock.c -- the one lock every HDF5 call of the process goes through,
 * HDF5 error stacks as one line, and the path check used by the security
 * rules of h5.read.
 *
 * A libhdf5 built without --enable-threadsafe must never be entered by two
 * threads at once (its property lists, metadata cache and error stack are
 * global). Debian 12's 1.10.8 happens to be built thread-safe, but that
 * build only serialises every API call on its own global lock, so taking
 * ours as well costs nothing and keeps sluice correct on any build.
 * h5.read and h5.write can run in the same pipeline, on different threads,
 * so they share this lock. It is a plain
 * mutex, held only around HDF5 calls: nothing waits for arena memory or a
 * queue while holding it (see h5_internal.h), so it cannot take part in a
 * deadlock. The expensive work -- decompression, byte swapping, type
 * conversion -- runs outside it in h5.decode and h5.write's workers.
 */
#include <hdf5.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5_internal.h"
#include "io_internal.h"

static pthread_mutex_t h5_mu = PTHREAD_MUTEX_INITIALIZER;
/* Error stacks are per thread in thread-safe builds (Debian's reports
 * H5is_library_threadsafe = 1), global otherwise: turn the automatic
 * printing off once per thread, which covers both. */
static _Thread_local bool h5_quiet;

void sl__h5_lock(void) {
  if (pthread_mutex_lock(&h5_mu) != 0) abort(); /* a bug, not an input */
  if (!h5_quiet) {
    h5_quiet = true;
    H5open();
    /* Errors are reported per item by the stages; HDF5 must not print its
     * own stack traces to stderr. */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  }
}

void sl__h5_unlock(void) {
  if (pthread_mutex_unlock(&h5_mu) != 0) abort();
}

typedef struct walk_state {
  char first[256], last[256];
  int n;
} walk_state;

static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *arg) {
  (void)n;
  walk_state *s = arg;
  const char *d = e->desc && e->desc[0] ? e->desc : NULL;
  if (!d) return 0;
  if (s->n == 0) snprintf(s->first, sizeof s->first, "%s", d);
  snprintf(s->last, sizeof s->last, "%s", d);
  s->n++;
  return 0;
}

const char *sl__h5_error_text(char *buf, size_t len, const char *fallback) {
  walk_state s = {{0}, {0}, 0};
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, walk_cb, &s);
  H5Eclear2(H5E_DEFAULT);
  if (s.n == 0)
    snprintf(buf, len, "%s", fallback);
  else if (s.n == 1 || strcmp(s.first, s.last) == 0)
    snprintf(buf, len, "%s", s.first);
  else
    snprintf(buf, len, "%s (%s)", s.first, s.last);
  return buf;
}

int sl__h5_path_inside(const char *dir, const char *target, char *why,
                       size_t len) {
  char *joined = target[0] == '/' ? strdup(target)
                                  : sl__io_asprintf("%s/%s", dir, target);
  if (!joined) {
    snprintf(why, len, "out of memory");
    return 1;
  }
  char real[PATH_MAX];
  int rc = 1;
  if (!realpath(joined, real)) {
    snprintf(why, len, "'%s' does not exist in the input's folder '%s'",
             target, dir);
  } else {
    size_t n = strlen(dir);
    bool inside = strncmp(real, dir, n) == 0 &&
                  (real[n] == '/' || (n == 1 && dir[0] == '/'));
    if (inside) rc = 0;
    else snprintf(why, len, "'%s' points outside the input's folder '%s'",
                  target, dir);
  }
  free(joined);
  return rc;
}

int sl__h5_guard_init(sl__h5_guard *g, const char *file) {
  g->refusal[0] = '\0';
  const char *slash = strrchr(file, '/');
  char *d = slash ? sl__io_asprintf("%.*s", (int)(slash - file), file) : strdup(".");
  if (!d) return -ENOMEM;
  char real[PATH_MAX];
  int rc = realpath(d[0] ? d : "/", real) ? 0 : -errno;
  free(d);
  if (rc == 0) snprintf(g->dir, sizeof g->dir, "%s", real);
  return rc;
}

static herr_t guard_cb(const char *parent_file, const char *parent_group,
                       const char *child_file, const char *child_object,
                       unsigned *acc_flags, hid_t fapl, void *op) {
  (void)parent_file, (void)parent_group, (void)fapl;
  sl__h5_guard *g = op;
  char why[400];
  if (sl__h5_path_inside(g->dir, child_file, why, sizeof why) != 0) {
    snprintf(g->refusal, sizeof g->refusal,
             "external link to '%s' (object %s) refused: %s", child_file,
             child_object, why);
    return -1;
  }
  *acc_flags = H5F_ACC_RDONLY;
  return 0;
}

int64_t sl__h5_guard_dapl(sl__h5_guard *g) {
  hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
  if (dapl < 0) return -1;
  if (H5Pset_elink_cb(dapl, guard_cb, g) < 0 ||
      H5Pset_elink_prefix(dapl, g->dir) < 0 ||
      H5Pset_elink_acc_flags(dapl, H5F_ACC_RDONLY) < 0 ||
      H5Pset_efile_prefix(dapl, g->dir) < 0 ||
      H5Pset_virtual_prefix(dapl, g->dir) < 0) {
    H5Pclose(dapl);
    return -1;
  }
  return dapl;
}

hid_t sl__h5_native(sl_dtype t) {
  switch (t) {
  case SL_DT_BOOL: case SL_DT_U8: return H5T_NATIVE_UINT8;
  case SL_DT_I8: return H5T_NATIVE_INT8;
  case SL_DT_I16: return H5T_NATIVE_INT16;
  case SL_DT_U16: return H5T_NATIVE_UINT16;
  case SL_DT_I32: return H5T_NATIVE_INT32;
  case SL_DT_U32: return H5T_NATIVE_UINT32;
  case SL_DT_I64: return H5T_NATIVE_INT64;
  case SL_DT_U64: return H5T_NATIVE_UINT64;
  case SL_DT_F32: return H5T_NATIVE_FLOAT;
  default: return H5T_NATIVE_DOUBLE;
  }
}

int sl__h5_attr_read(hid_t loc, const char *name, sl__h5_attr *at) {
  memset(at, 0, sizeof *at);
  at->a = H5Aopen(loc, name, H5P_DEFAULT);
  at->t = at->a >= 0 ? H5Aget_type(at->a) : -1;
  at->s = at->a >= 0 ? H5Aget_space(at->a) : -1;
  if (at->t < 0 || at->s < 0) return -1;
  hssize_t np = H5Sget_simple_extent_npoints(at->s);
  size_t size = H5Tget_size(at->t);
  if (np < 0 || size == 0 || (uint64_t)np > (UINT64_C(64) << 20) / size) return -1;
  if (H5Tdetect_class(at->t, H5T_REFERENCE) > 0) { /* would point into the old file */
    at->skip = true;
    return 0;
  }
  if (!(at->buf = calloc((size_t)np + 1, size))) return -1;
  if (H5Aread(at->a, at->t, at->buf) >= 0) return 0;
  free(at->buf); /* nothing to reclaim: the read failed */
  at->buf = NULL;
  return -1;
}

void sl__h5_attr_free(sl__h5_attr *at) {
  if (at->buf && (H5Tdetect_class(at->t, H5T_VLEN) > 0 || H5Tis_variable_str(at->t) > 0))
    H5Dvlen_reclaim(at->t, at->s, H5P_DEFAULT, at->buf);
  free(at->buf);
  if (at->s >= 0) H5Sclose(at->s);
  if (at->t >= 0) H5Tclose(at->t);
  if (at->a >= 0) H5Aclose(at->a);
  at->buf = NULL;
  at->a = at->t = at->s = -1;
}
