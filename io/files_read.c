/*
 * files_read.c -- `files.read`, replaces a path payload with the file's bytes.
 *
 * The input item's BYTES payload is a path (the files.list convention); the
 * output is the same item with the whole file in one arena block. The file
 * is opened non-blocking so a FIFO or device cannot hang a worker (anything
 * but a regular file is refused after fstat), read in bounded chunks with
 * EINTR and short reads handled and cancellation checked between chunks,
 * and its size is checked against fstat's at the end, so a file that grows
 * or shrinks while being read is an error rather than a silently truncated
 * payload. The item is modified only once everything succeeded, so a
 * failed attempt can be retried. Stateless: any number of workers at once.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io_internal.h"

typedef struct read_params {
  uint64_t max_size;
} read_params;

#define CHUNK ((size_t)8 << 20) /* bytes per read() between cancel checks */

/* Writes `v` compactly for messages: "1GiB", "512KiB", "1000". */
static const char *format_param_size(uint64_t v, char *buf, size_t len) {
  static const char *const units[] = {"EiB", "PiB", "TiB", "GiB", "MiB", "KiB"};
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    uint64_t unit = UINT64_C(1) << (10 * (6 - i));
    if (v >= unit && v % unit == 0) {
      snprintf(buf, len, "%" PRIu64 "%s", v / unit, units[i]);
      return buf;
    }
  }
  snprintf(buf, len, "%" PRIu64, v);
  return buf;
}

/* Describes a failed system call `what`. @return SL_ESTAGE. */
static int sys_error(sl_worker *w, const char *what, int errnum) {
  char eb[128];
  return sl_worker_errorf(w, "%s: %s", what,
                          sl__io_strerror(errnum, eb, sizeof eb));
}

/* Copies the path out of the payload, NUL-terminated, into `buf`.
 * @return 0 or SL_ESTAGE (described) when the payload is not a path. */
static int payload_path(sl_worker *w, const sl_item *in, char *buf,
                        size_t len) {
  const sl_payload *pl = &in->payload;
  if (pl->size == 0)
    return sl_worker_errorf(w, "empty payload: expected a file path "
                               "(as files.list emits)");
  if (pl->size >= len || memchr(pl->data, 0, pl->size))
    return sl_worker_errorf(w, "payload is not a file path (%zu bytes%s)",
                            pl->size, pl->size >= len ? ", too long" : "");
  memcpy(buf, pl->data, pl->size);
  buf[pl->size] = 0;
  return 0;
}

/* Reads exactly `size` bytes of `fd` into `dst` and checks the file ends
 * there. @return 0, SL_ECANCELED, or SL_ESTAGE (described). */
static int read_all(sl_worker *w, int fd, unsigned char *dst, size_t size) {
  size_t done = 0;
  while (done < size) {
    if (sl_worker_canceled(w)) return SL_ECANCELED;
    size_t want = size - done < CHUNK ? size - done : CHUNK;
    ssize_t n = read(fd, dst + done, want);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error(w, "read", errno);
    if (n == 0)
      return sl_worker_errorf(w, "file shrank while being read (%zu of %zu "
                                 "bytes)", done, size);
    done += (size_t)n;
  }
  unsigned char extra;
  ssize_t n;
  while ((n = read(fd, &extra, 1)) < 0 && errno == EINTR) {}
  if (n < 0) return sys_error(w, "read", errno);
  if (n > 0) return sl_worker_errorf(w, "file grew while being read");
  return 0;
}

/* Opens `path` and checks it is a regular file of at most max_size bytes.
 * @return the fd (caller closes it) with *size set, or SL_ESTAGE. */
static int open_checked(sl_worker *w, const char *path, uint64_t max_size,
                        size_t *size) {
  int fd;
  while ((fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)) < 0 &&
         errno == EINTR) {}
  if (fd < 0) return sys_error(w, "open", errno);
  struct stat st;
  int rc = 0;
  if (fstat(fd, &st) < 0) rc = sys_error(w, "fstat", errno);
  else if (!S_ISREG(st.st_mode))
    rc = sl_worker_errorf(w, "not a regular file");
  else if ((uint64_t)st.st_size > max_size || (uint64_t)st.st_size > SIZE_MAX) {
    char a[32], b[32];
    rc = sl_worker_errorf(w, "file is %s, above max_size=%s",
                          sl__io_format_size((uint64_t)st.st_size, a, sizeof a),
                          format_param_size(max_size, b, sizeof b));
  }
  if (rc < 0) {
    close(fd);
    return rc;
  }
  /* Back to blocking reads; harmless for regular files, but explicit. */
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  *size = (size_t)st.st_size;
  return fd;
}

/* Loads the file into a new block. @return 0 (caller owns *block, NULL for
 * an empty file), SL_ECANCELED, or another error (described). */
static int load(sl_worker *w, const char *path, uint64_t max_size,
                sl_block **block, size_t *size) {
  int fd = open_checked(w, path, max_size, size);
  if (fd < 0) return fd;
  sl_block *b = NULL;
  int rc = 0;
  if (*size > 0) {
    rc = sl_worker_alloc(w, *size, &b);
    if (rc < 0) {
      b = NULL;
      if (rc != SL_ECANCELED)
        rc = sl_worker_errorf(w, "cannot allocate %zu bytes: %s", *size,
                              sl_strerror(rc));
    }
#ifdef POSIX_FADV_SEQUENTIAL
    if (rc == 0) posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
    if (rc == 0) rc = read_all(w, fd, sl_block_data(b), *size);
  } else {
    rc = read_all(w, fd, NULL, 0); /* still catches a growing file */
  }
  close(fd);
  if (rc < 0) {
    sl_block_release(b);
    b = NULL;
  }
  *block = b;
  return rc;
}

/* On success the payload of `in` is replaced and *out = in; on failure `in`
 * is untouched and *out = NULL. */
static int read_process(sl_worker *w, sl_item *in, sl_item **out) {
  const read_params *p = sl_worker_params(w);
  char path[PATH_MAX];
  sl_block *block = NULL;
  size_t size = 0;
  *out = NULL;
  int rc = payload_path(w, in, path, sizeof path);
  if (rc == 0) rc = load(w, path, p->max_size, &block, &size);
  if (rc < 0) return rc;
  if (block) {
    sl_item_set_block(in, SL_KIND_BYTES, block, 0, size);
  } else {
    sl_item_clear_payload(in);
    in->payload.kind = SL_KIND_BYTES;
  }
  *out = in;
  return 0;
}

static const sl_param_def read_params_table[] = {
    {"max_size", SL_PARAM_SIZE, offsetof(read_params, max_size), "1GiB", 0, 0,
     NULL, "larger files fail (their item only) instead of being read"},
    SL_PARAM_END,
};

const sl_stage_def sl__stage_files_read = {
    .name = "files.read",
    .summary = "read each file named by the payload into memory",
    .help =
        "Takes items whose payload is a file path, as files.list emits (one\n"
        "item per file, payload = the file's path), and replaces the payload\n"
        "with the file's whole content (BYTES, in shared memory); the item\n"
        "keeps its name. Failures are per item and name the cause, e.g.\n"
        "\"open: No such file or directory\", \"not a regular file\",\n"
        "\"file is 5.0 GiB, above max_size=1GiB\", or a file that changed size\n"
        "while being read; the run's --on-error policy decides what follows.\n"
        "Runs on the I/O pool (workers=N reads in parallel).\n"
        "Example: files.list dir=in ! files.read ! files.write dir=out",
    .exec = SL_EXEC_IO,
    .in_kind = SL_KIND_BYTES,
    .out_kind = SL_KIND_BYTES,
    .params = read_params_table,
    .params_size = sizeof(read_params),
    .process = read_process,
};
