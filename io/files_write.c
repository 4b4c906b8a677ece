/*
 * files_write.c -- `files.write`, a sink writing each payload to a file.
 *
 * Item "sub/a.png" goes to <dir>/sub/a.png<suffix>, so a files.list tree is
 * mirrored. Outputs are atomic: the payload is written to a temporary in
 * the destination directory (".<base>.sluice-tmp-<pid>-<random>", created
 * with O_EXCL) and renamed over the final name only once complete, so an
 * output file is either complete or absent, and is_done() (for --resume)
 * only has to ask whether the final name exists. Every failure path,
 * cancellation included, unlinks the temporary before returning; only a
 * killed process can leave one behind (their names make them easy to find).
 *
 * Names that could escape `dir` (absolute, empty or ".." components) are
 * refused per item. Parent directories are created on demand (only after
 * the temporary's open fails with ENOENT, so the common case costs no extra
 * syscalls); concurrent workers creating the same one is fine (EEXIST).
 * Thread-safe: the only shared state is read-only configuration and an
 * atomic counter for temporary names.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io_internal.h"

typedef struct write_params {
  const char *dir;
  const char *suffix;
  bool mkdir;
  bool fsync;
} write_params;

#define CHUNK ((size_t)8 << 20) /* bytes per write() between cancel checks */
#define TMP_BASE_MAX 200        /* keeps temporary names under NAME_MAX */

static atomic_uint_fast64_t tmp_counter;

/* @return true when `name` stays inside the output directory: relative,
 * non-empty components, none of them "." or "..". */
static bool name_is_safe(const char *name) {
  if (name[0] == 0 || name[0] == '/') return false;
  for (const char *c = name; *c;) {
    size_t n = strcspn(c, "/");
    if (n == 0 || (n == 1 && c[0] == '.') ||
        (n == 2 && c[0] == '.' && c[1] == '.'))
      return false;
    c += n;
    if (*c == '/' && *++c == 0) return false; /* trailing slash */
  }
  return true;
}

/* @return malloc'd <dir>/<name><suffix> (the caller frees it) or NULL. */
static char *final_path(const write_params *p, const char *name) {
  size_t dlen = strlen(p->dir);
  const char *sep = dlen > 0 && p->dir[dlen - 1] == '/' ? "" : "/";
  return sl__io_asprintf("%s%s%s%s", p->dir, sep, name, p->suffix);
}

/* Creates directory `path` and its missing parents (mode 0777 & ~umask).
 * Modifies `path` temporarily. @return 0 or -errno. */
static int mkdir_p(char *path) {
  if (mkdir(path, 0777) == 0 || errno == EEXIST) return 0;
  if (errno != ENOENT) return -errno;
  char *slash = strrchr(path, '/');
  if (!slash || slash == path) return -ENOENT;
  *slash = 0;
  int rc = mkdir_p(path);
  *slash = '/';
  if (rc < 0) return rc;
  if (mkdir(path, 0777) == 0 || errno == EEXIST) return 0;
  return -errno;
}

/* A name no other worker or process is using right now (O_EXCL decides). */
static uint64_t tmp_random(void) {
  uint64_t z = atomic_fetch_add_explicit(&tmp_counter, 1, memory_order_relaxed);
  z = z * UINT64_C(0x9E3779B97F4A7C15) ^ sl_now_ns() ^ (uint64_t)getpid() << 40;
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

/* Describes a failed system call on `path`, cause first so that a very
 * long path, not the cause, is what a bounded message loses.
 * @return SL_ESTAGE. */
static int sys_error(sl_worker *w, const char *what, const char *path,
                     int errnum) {
  char eb[128];
  return sl_worker_errorf(w, "%s (%s): '%s'", what,
                          sl__io_strerror(errnum, eb, sizeof eb), path);
}

/* Creates the temporary for `final` in its directory, creating that
 * directory first when mkdir=true and it is missing. @return the fd, with
 * *tmp malloc'd (the caller unlinks and frees it), or SL_ESTAGE/SL_ENOMEM
 * with *tmp NULL. */
static int open_temp(sl_worker *w, const write_params *p, char *final,
                     char **tmp) {
  char *slash = strrchr(final, '/'); /* final_path always has one */
  bool made_dir = false;
  for (int tries = 0; tries < 16; tries++) {
    *slash = 0;
    *tmp = sl__io_asprintf("%s/.%.*s.sluice-tmp-%ld-%016" PRIx64, final,
                           TMP_BASE_MAX, slash + 1, (long)getpid(),
                           tmp_random());
    *slash = '/';
    if (!*tmp) return SL_ENOMEM;
    int fd = open(*tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) return fd;
    int err = errno;
    free(*tmp);
    *tmp = NULL;
    if (err == EEXIST) continue; /* name taken: draw another */
    if (err != ENOENT || !p->mkdir || made_dir)
      return sys_error(w, "create temporary", final, err);
    made_dir = true;
    *slash = 0;
    int rc = mkdir_p(final);
    if (rc < 0) rc = sys_error(w, "mkdir", final, -rc);
    *slash = '/';
    if (rc < 0) return rc;
  }
  return sl_worker_errorf(w, "create temporary (no free name): '%s'", final);
}

/* Writes all `size` bytes of `data` to `fd`. @return 0, SL_ECANCELED, or
 * SL_ESTAGE (described). */
static int write_all(sl_worker *w, int fd, const unsigned char *data,
                     size_t size, const char *final) {
  size_t done = 0;
  while (done < size) {
    if (sl_worker_canceled(w)) return SL_ECANCELED;
    size_t want = size - done < CHUNK ? size - done : CHUNK;
    ssize_t n = write(fd, data + done, want);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error(w, "write", final, errno);
    done += (size_t)n;
  }
  return 0;
}

/* Makes the rename itself durable (fsync=true). Best effort. */
static void sync_parent(char *final) {
  char *slash = strrchr(final, '/');
  *slash = 0;
  int fd = open(final, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  *slash = '/';
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
}

/* Writes `data` to `final` through a temporary. @return 0 or an error
 * (described); the temporary never survives a failure. */
static int write_atomic(sl_worker *w, const write_params *p, char *final,
                        const void *data, size_t size) {
  char *tmp;
  int fd = open_temp(w, p, final, &tmp);
  if (fd < 0) return fd;
  int rc = write_all(w, fd, data, size, final);
  if (rc == 0 && p->fsync && fsync(fd) < 0)
    rc = sys_error(w, "fsync", final, errno);
  if (close(fd) < 0 && rc == 0) rc = sys_error(w, "close", final, errno);
  if (rc == 0 && rename(tmp, final) < 0)
    rc = sys_error(w, "rename", final, errno);
  if (rc < 0) unlink(tmp);
  else if (p->fsync) sync_parent(final);
  free(tmp);
  return rc;
}

/* Consumes `in` (*out = NULL) once its file is written; on failure `in` is
 * untouched. */
static int write_process(sl_worker *w, sl_item *in, sl_item **out) {
  const write_params *p = sl_worker_params(w);
  *out = NULL;
  if (!name_is_safe(in->name))
    return sl_worker_errorf(w, "unsafe output path (absolute, or an empty, "
                               "'.' or '..' component)");
  char *final = final_path(p, in->name);
  if (!final) return SL_ENOMEM;
  int rc = write_atomic(w, p, final, in->payload.data, in->payload.size);
  free(final);
  return rc;
}

/* True when the final file exists: only a completed rename creates it. */
static bool write_is_done(void *state, const char *name) {
  const write_params *p = state;
  if (!name_is_safe(name)) return false;
  char *path = final_path(p, name);
  struct stat st;
  bool done = path && stat(path, &st) == 0 && S_ISREG(st.st_mode);
  free(path);
  return done;
}

/* Checks the configuration; the state is the params (read-only, owned by
 * the pipeline) so is_done can find the output directory. */
static int write_create(sl_stage *st, void **state) {
  const write_params *p = sl_stage_params(st);
  *state = (void *)p;
  if (p->dir[0] == 0) return sl_stage_errorf(st, "dir must not be empty");
  if (strchr(p->suffix, '/'))
    return sl_stage_errorf(st, "suffix '%s' must not contain '/'", p->suffix);
  struct stat sb;
  char eb[128];
  int err = stat(p->dir, &sb) < 0 ? errno : S_ISDIR(sb.st_mode) ? 0 : ENOTDIR;
  if (err == ENOENT && p->mkdir) return 0; /* created when writing */
  if (err)
    return sl_stage_errorf(st, "dir '%s': %s", p->dir,
                           sl__io_strerror(err, eb, sizeof eb));
  return 0;
}

static const sl_param_def write_params_table[] = {
    {"dir", SL_PARAM_STRING, offsetof(write_params, dir), NULL, 0, 0, NULL,
     "the output directory"},
    {"suffix", SL_PARAM_STRING, offsetof(write_params, suffix), "", 0, 0, NULL,
     "appended to each item name, e.g. \".bin\""},
    {"mkdir", SL_PARAM_BOOL, offsetof(write_params, mkdir), "true", 0, 0, NULL,
     "create the output directory and subdirectories as needed"},
    {"fsync", SL_PARAM_BOOL, offsetof(write_params, fsync), "false", 0, 0,
     NULL, "flush each file (and its directory entry) to disk before "
           "counting it done"},
    SL_PARAM_END,
};

const sl_stage_def sl__stage_files_write = {
    .name = "files.write",
    .summary = "write each item's bytes to <dir>/<item name><suffix>",
    .help =
        "Writes every item's payload to <dir>/<name><suffix>, mirroring\n"
        "relative names (\"sub/a.png\" goes to <dir>/sub/a.png), so\n"
        "files.list ! files.read ! ... ! files.write copies a tree.\n"
        "Atomic: each file is written to a temporary next to it\n"
        "(.<name>.sluice-tmp-<pid>-<random>) and renamed into place when\n"
        "complete, so an output is either complete or absent, and temporaries\n"
        "are removed on failure and cancellation. With --resume, items whose\n"
        "output already exists are skipped. Names that would leave <dir>\n"
        "(absolute, or with '..' components) fail with \"unsafe output path\".\n"
        "Existing files are replaced.\n"
        "Example: gen count=10 size=1MiB ! files.write dir=out suffix=.bin",
    .exec = SL_EXEC_IO,
    .in_kind = SL_KIND_BYTES,
    .out_kind = SL_KIND_NONE,
    .flags = SL_STAGE_SINK,
    .params = write_params_table,
    .params_size = sizeof(write_params),
    .create = write_create,
    .process = write_process,
    .is_done = write_is_done,
};
