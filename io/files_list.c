/*
 * files_list.c -- `files.list`, a source with one item per file of a tree.
 *
 * On its first produce() the source walks `dir` (depth first, one directory
 * open at a time, so deep trees do not pile up descriptors), keeps the
 * relative paths of the files it selects in one packed buffer (a NUL after
 * each) plus a pointer array, and sorts the pointers by byte order of the
 * full relative path. Item i of that order gets seq i, which is stable
 * across runs of the same tree, so --resume can skip by name.
 *
 * Each item's name is the relative path ("sub/a.png"); its payload is the
 * path to open (dir joined with the name) as BYTES without a NUL, the
 * convention files.read understands.
 *
 * Selected: regular files, symlinks to regular files, and symlinks that do
 * not resolve (so a broken link is reported by files.read as a failed item
 * instead of vanishing silently). Skipped: other file types, dot entries
 * unless hidden=true, symlinks to directories unless follow=true, and with
 * follow=true any directory that is already one of its own ancestors (a
 * symlink loop). A directory that cannot be read fails the run.
 *
 * All state is per worker (a source has one), so the stage may be run more
 * than once per check; no locking is needed.
 */
#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io_internal.h"

typedef struct list_params {
  const char *dir;
  const char *glob;
  bool recursive;
  bool hidden;
  bool follow;
} list_params;

/* A directory on the path from `dir` to the one being walked. */
typedef struct dir_id {
  dev_t dev;
  ino_t ino;
} dir_id;

/* A subdirectory found while reading a directory, walked after closing it. */
typedef struct subdir {
  char *name;
  dir_id id;
} subdir;

typedef struct list_local {
  const list_params *p;
  sl_worker *w;
  bool walked;
  int walk_rc;    /* error of a failed walk, returned again if called */
  bool glob_all;  /* glob is "*": skip fnmatch */
  bool glob_path; /* glob has a '/': match the relative path */
  char *names;    /* packed relative paths, NUL after each */
  size_t len, cap;
  size_t count;
  char **sorted;  /* count pointers into names, sorted */
  size_t next;    /* index of the next item to consider */
  char *rel;      /* relative path of the directory being walked ("") */
  size_t rel_len, rel_cap;
  dir_id *anc;    /* ancestors of the directory being walked (follow=true) */
  size_t nanc, canc;
} list_local;

enum { ENT_SKIP, ENT_FILE, ENT_DIR };

static int oom(list_local *l) {
  sl_worker_errorf(l->w, "out of memory while listing '%s'", l->p->dir);
  return SL_ENOMEM;
}

/* Ensures room for `more` bytes after *len in the growable buffer *buf. */
static bool reserve(char **buf, size_t *cap, size_t len, size_t more) {
  if (len + more <= *cap) return true;
  size_t ncap = *cap ? *cap : 256;
  while (ncap < len + more) ncap *= 2;
  char *nb = realloc(*buf, ncap);
  if (!nb) return false;
  *buf = nb;
  *cap = ncap;
  return true;
}

/* Path of the directory being walked, as given plus the relative part.
 * @return a malloc'd string (the caller frees it) or NULL. */
static char *current_dir(const list_local *l) {
  if (l->rel_len == 0) return sl__io_asprintf("%s", l->p->dir);
  return sl__io_asprintf("%s/%s", l->p->dir, l->rel);
}

/* Describes a failed stat of entry `name` of the current directory.
 * @return SL_ESTAGE. */
static int stat_error(list_local *l, const char *name, int errnum) {
  char eb[128], *d = current_dir(l);
  sl_worker_errorf(l->w, "cannot stat (%s): '%s/%s'",
                   sl__io_strerror(errnum, eb, sizeof eb), d ? d : l->p->dir,
                   name);
  free(d);
  return SL_ESTAGE;
}

/* Decides what directory entry `de` of the open directory `dfd` is: sets
 * *kind to ENT_FILE, ENT_DIR or ENT_SKIP, and *id for directories when
 * follow=true. Stats only when d_type does not already say enough.
 * @return 0 or SL_ESTAGE (described). */
static int classify(list_local *l, int dfd, const struct dirent *de,
                    int *kind, dir_id *id) {
  *kind = ENT_SKIP;
  if (de->d_type == DT_REG) {
    *kind = ENT_FILE;
    return 0;
  }
  if (de->d_type == DT_DIR && !l->p->follow) {
    *kind = ENT_DIR;
    return 0;
  }
  struct stat st;
  if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
    return errno == ENOENT ? 0 /* deleted since readdir */
                           : stat_error(l, de->d_name, errno);
  bool link = S_ISLNK(st.st_mode);
  if (link && fstatat(dfd, de->d_name, &st, 0) < 0) {
    *kind = ENT_FILE; /* a broken link is listed: files.read reports it */
    return 0;
  }
  if (S_ISREG(st.st_mode)) *kind = ENT_FILE;
  else if (S_ISDIR(st.st_mode) && (!link || l->p->follow)) *kind = ENT_DIR;
  id->dev = st.st_dev;
  id->ino = st.st_ino;
  return 0;
}

/* Appends rel/name to the list if it passes the glob. @return 0 or
 * SL_ENOMEM. */
static int add_file(list_local *l, const char *name) {
  size_t nlen = strlen(name), start = l->len;
  if (!reserve(&l->names, &l->cap, l->len, l->rel_len + nlen + 2))
    return oom(l);
  if (l->rel_len) {
    memcpy(l->names + l->len, l->rel, l->rel_len);
    l->names[l->len + l->rel_len] = '/';
    l->len += l->rel_len + 1;
  }
  memcpy(l->names + l->len, name, nlen + 1);
  l->len += nlen + 1;
  bool match = l->glob_all ||
               (l->glob_path ? fnmatch(l->p->glob, l->names + start,
                                       FNM_PATHNAME) == 0
                             : fnmatch(l->p->glob, name, 0) == 0);
  if (match) l->count++;
  else l->len = start;
  return 0;
}

static void free_subdirs(subdir *subs, size_t n) {
  for (size_t i = 0; i < n; i++) free(subs[i].name);
  free(subs);
}

/* Describes a failure to read directory `path`. The cause comes first so
 * that a very long path, not the cause, is what a bounded message loses.
 * @return SL_ESTAGE. */
static int dir_error(list_local *l, const char *path, int errnum) {
  char eb[128];
  return sl_worker_errorf(l->w, "cannot read directory (%s): '%s'",
                          sl__io_strerror(errnum, eb, sizeof eb), path);
}

/* Reads the open directory `d` (at `path`): files go to the list,
 * subdirectories to *subs (owned by the caller, even on failure).
 * @return 0 or an error (described). */
static int read_entries(list_local *l, DIR *d, const char *path,
                        subdir **subs, size_t *nsubs) {
  size_t cap = 0;
  for (;;) {
    errno = 0;
    struct dirent *de = readdir(d);
    if (!de) return errno ? dir_error(l, path, errno) : 0;
    const char *n = de->d_name;
    if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0))) continue;
    if (n[0] == '.' && !l->p->hidden) continue;
    int kind, rc;
    dir_id id = {0, 0};
    if ((rc = classify(l, dirfd(d), de, &kind, &id)) < 0) return rc;
    if (kind == ENT_FILE && (rc = add_file(l, n)) < 0) return rc;
    if (kind != ENT_DIR || !l->p->recursive) continue;
    if (*nsubs == cap) {
      cap = cap ? cap * 2 : 16;
      subdir *ns = realloc(*subs, cap * sizeof *ns);
      if (!ns) return oom(l);
      *subs = ns;
    }
    if (!((*subs)[*nsubs].name = malloc(strlen(n) + 1))) return oom(l);
    strcpy((*subs)[*nsubs].name, n);
    (*subs)[(*nsubs)++].id = id;
  }
}

static int walk_dir(list_local *l);

/* Walks subdirectory `s` of the current directory, skipping a symlink loop
 * back to an ancestor. @return 0 or an error. */
static int walk_subdir(list_local *l, const subdir *s) {
  if (l->p->follow) {
    for (size_t i = 0; i < l->nanc; i++)
      if (l->anc[i].dev == s->id.dev && l->anc[i].ino == s->id.ino) return 0;
    if (l->nanc == l->canc) {
      size_t nc = l->canc ? l->canc * 2 : 16;
      dir_id *na = realloc(l->anc, nc * sizeof *na);
      if (!na) return oom(l);
      l->anc = na;
      l->canc = nc;
    }
    l->anc[l->nanc++] = s->id;
  }
  size_t saved = l->rel_len, nlen = strlen(s->name);
  if (!reserve(&l->rel, &l->rel_cap, l->rel_len, nlen + 2)) return oom(l);
  if (l->rel_len) l->rel[l->rel_len++] = '/';
  memcpy(l->rel + l->rel_len, s->name, nlen + 1);
  l->rel_len += nlen;
  int rc = walk_dir(l);
  l->rel_len = saved;
  l->rel[saved] = 0;
  if (l->p->follow) l->nanc--;
  return rc;
}

/* Lists the directory at l->rel, then its subdirectories (depth first,
 * after closing it). @return 0 or an error (described). */
static int walk_dir(list_local *l) {
  char *path = current_dir(l);
  if (!path) return oom(l);
  DIR *d = opendir(path);
  if (!d) {
    int rc = dir_error(l, path, errno);
    free(path);
    return rc;
  }
  subdir *subs = NULL;
  size_t nsubs = 0;
  int rc = read_entries(l, d, path, &subs, &nsubs);
  closedir(d);
  free(path);
  for (size_t i = 0; rc == 0 && i < nsubs; i++) {
    if (sl_worker_canceled(l->w)) rc = SL_ECANCELED;
    else rc = walk_subdir(l, &subs[i]);
  }
  free_subdirs(subs, nsubs);
  return rc;
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Walks the tree and sorts the result. @return 0 or an error. */
static int list_walk(list_local *l) {
  if (l->p->follow) {
    struct stat st;
    if (stat(l->p->dir, &st) == 0) {
      l->anc = malloc(16 * sizeof *l->anc);
      if (!l->anc) return oom(l);
      l->canc = 16;
      l->anc[l->nanc++] = (dir_id){st.st_dev, st.st_ino};
    }
  }
  if (!reserve(&l->rel, &l->rel_cap, 0, 64)) return oom(l);
  l->rel[0] = 0;
  int rc = walk_dir(l);
  if (rc < 0) return rc;
  if (l->count && !(l->sorted = malloc(l->count * sizeof *l->sorted)))
    return oom(l);
  char *s = l->names;
  for (size_t i = 0; i < l->count; i++, s += strlen(s) + 1) l->sorted[i] = s;
  qsort(l->sorted, l->count, sizeof *l->sorted, cmp_names);
  return 0;
}

static int list_create(sl_stage *st, void **state) {
  const list_params *p = sl_stage_params(st);
  struct stat sb;
  char eb[128];
  *state = NULL;
  int err = stat(p->dir, &sb) < 0 ? errno : S_ISDIR(sb.st_mode) ? 0 : ENOTDIR;
  if (err)
    return sl_stage_errorf(st, "dir '%s': %s", p->dir,
                           sl__io_strerror(err, eb, sizeof eb));
  return 0;
}

static int list_open(sl_worker *w, void **local) {
  list_local *l = calloc(1, sizeof *l);
  if (!l) return SL_ENOMEM;
  l->p = sl_worker_params(w);
  l->w = w;
  l->glob_all = strcmp(l->p->glob, "*") == 0;
  l->glob_path = strchr(l->p->glob, '/') != NULL;
  *local = l;
  return 0;
}

static void list_close(sl_worker *w) {
  list_local *l = sl_worker_local(w);
  if (!l) return;
  free(l->names);
  free(l->sorted);
  free(l->rel);
  free(l->anc);
  free(l);
}

/* Builds the item for sorted entry i: name = relative path, payload = the
 * path to open. @return 0 (caller owns *out) or an error. */
static int list_make(sl_worker *w, list_local *l, size_t i, sl_item **out) {
  const char *rel = l->sorted[i], *dir = l->p->dir;
  size_t dlen = strlen(dir), rlen = strlen(rel);
  size_t sep = dlen > 0 && dir[dlen - 1] == '/' ? 0 : 1;
  sl_item *item = sl_item_create(i, rel);
  if (!item) return SL_ENOMEM;
  item->total_hint = l->count;
  sl_block *block;
  int rc = sl_worker_alloc(w, dlen + sep + rlen, &block);
  if (rc < 0) {
    sl_item_destroy(item);
    if (rc == SL_ECANCELED) return rc;
    return sl_worker_errorf(w, "cannot allocate %zu bytes: %s",
                            dlen + sep + rlen, sl_strerror(rc));
  }
  char *p = sl_block_data(block);
  memcpy(p, dir, dlen);
  if (sep) p[dlen] = '/';
  memcpy(p + dlen + sep, rel, rlen);
  sl_item_set_block(item, SL_KIND_BYTES, block, 0, dlen + sep + rlen);
  *out = item;
  return 0;
}

/* Walks on the first call, then hands out the files in sorted order,
 * skipping those --resume says are done (they keep their seq). */
static int list_produce(sl_worker *w, sl_item **out) {
  list_local *l = sl_worker_local(w);
  if (l->walk_rc < 0) return l->walk_rc;
  if (!l->walked) {
    int rc = list_walk(l);
    if (rc < 0) return l->walk_rc = rc;
    l->walked = true;
    sl_worker_set_total(w, l->count);
  }
  for (; l->next < l->count; l->next++) {
    if (sl_worker_canceled(w)) return SL_ECANCELED;
    if (sl_worker_is_done(w, l->sorted[l->next])) continue;
    int rc = list_make(w, l, l->next, out);
    if (rc < 0) return rc;
    l->next++;
    return 0;
  }
  return SL_DONE;
}

static const sl_param_def list_params_table[] = {
    {"dir", SL_PARAM_STRING, offsetof(list_params, dir), NULL, 0, 0, NULL,
     "the directory to list"},
    {"glob", SL_PARAM_STRING, offsetof(list_params, glob), "*", 0, 0, NULL,
     "fnmatch pattern for file names; with a '/' it matches the relative "
     "path, '*' not crossing '/'"},
    {"recursive", SL_PARAM_BOOL, offsetof(list_params, recursive), "true", 0,
     0, NULL, "descend into subdirectories"},
    {"hidden", SL_PARAM_BOOL, offsetof(list_params, hidden), "false", 0, 0,
     NULL, "include files and directories whose name starts with '.'"},
    {"follow", SL_PARAM_BOOL, offsetof(list_params, follow), "false", 0, 0,
     NULL, "descend into symlinks to directories (loops are skipped)"},
    SL_PARAM_END,
};

const sl_stage_def sl__stage_files_list = {
    .name = "files.list",
    .summary = "list the files of a directory tree, one item per file",
    .help =
        "Emits one item per file under `dir`, in byte order of the relative\n"
        "path (deterministic: the same tree gives the same names and seqs).\n"
        "The item's name is the path relative to `dir` (e.g. \"sub/a.png\")\n"
        "and its payload is the file's path (BYTES, `dir`/name, no NUL):\n"
        "files.read replaces it with the file's bytes, and sinks such as\n"
        "files.write mirror the relative name into their output directory.\n"
        "Regular files and symlinks to regular files are listed; so are\n"
        "broken symlinks, which files.read then reports as failed items.\n"
        "`glob` matches the base name (\"*.png\"), or the relative path when it\n"
        "contains a '/' (\"2024/*/*.csv\"). Dot files and directories are\n"
        "skipped unless hidden=true. The tree is walked when the run starts;\n"
        "a subdirectory that cannot be read fails the run with its path.\n"
        "A missing `dir` is reported when the pipeline is checked.\n"
        "Example: files.list dir=photos glob=*.png ! files.read ! ...",
    .exec = SL_EXEC_IO,
    .in_kind = SL_KIND_NONE,
    .out_kind = SL_KIND_BYTES,
    .flags = SL_STAGE_SOURCE,
    .params = list_params_table,
    .params_size = sizeof(list_params),
    .create = list_create,
    .open = list_open,
    .produce = list_produce,
    .close = list_close,
};
