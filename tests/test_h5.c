/*
 * test_h5.c -- h5.read, h5.decode and h5.write.
 *
 *  - unit: numeric conversion (exact or an error), small files made here
 *    with h5py (dtype= conversions, block= splitting, security cases made
 *    on the fly), round trips h5.read -> h5.write checked by h5py (values,
 *    attributes, chunks, gzip, shuffle), TABLE output, and that a failed
 *    write leaves no file and no temporary.
 *  - conformance: every dataset of ../shared/conformance/hdf5/{jhdf,
 *    generated} is read and compared element by element with the values
 *    h5py/numpy give (tests/h5_reference.py dumps them); datasets h5py
 *    cannot read, or that h5.read must refuse, must fail with a message
 *    naming the file and the cause. The CVE proof-of-concept files run in a
 *    child process each: every one must end with a result or a clean error;
 *    a crash or a hang is tolerated only for the files on the known-crash
 *    list (crashes inside libhdf5 1.10.8 itself, see docs/hdf5.md).
 *
 * The reference values come from h5py, never from sluice's own output.
 */
#include "test.h"
#include "sluice.h"
#include "test_files.h"
#include "sluice_io.h"
#include "sluice_stages.h"

#include "../io/h5_internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ====================================================================== */
/* helpers                                                                 */

static char *make_tmpdir(void) {
  char *t = tf_asprintf("/tmp/sl-h5-XXXXXX");
  ASSERT(mkdtemp(t));
  return t;
}

static void rm_tree(char *dir) {
  char *cmd = tf_asprintf("rm -rf '%s'", dir);
  ASSERT_EQ(system(cmd), 0);
  free(cmd);
  free(dir);
}

static int dir_count(const char *dir) {
  DIR *d = opendir(dir);
  ASSERT(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
  closedir(d);
  return n;
}

static bool exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static char *shared_dir(const char *sub) {
  const char *d = getenv("SLUICE_SHARED");
  if (!d) SL__FAIL("SLUICE_SHARED is not set: run through ctest");
  char *p = tf_asprintf("%s/conformance/hdf5/%s", d, sub);
  if (!exists(p)) SL__FAIL("missing %s", p);
  return p;
}

/* Runs a Python snippet with Debian's python3 (h5py, numpy). */
static void python(const char *code) {
  char path[] = "/tmp/sl-h5-py-XXXXXX";
  int fd = mkstemp(path);
  ASSERT(fd >= 0);
  ASSERT_EQ(write(fd, code, strlen(code)), (ssize_t)strlen(code));
  close(fd);
  char *cmd = tf_asprintf("/usr/bin/python3 %s", path);
  int st = system(cmd);
  unlink(path);
  free(cmd);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) SL__FAIL("python failed:\n%s", code);
}

/* ====================================================================== */
/* a capturing sink: assembles the whole array from the items             */

static struct capture {
  pthread_mutex_t mu;
  bool assemble;
  unsigned char *buf;
  size_t buf_size;
  sl_dtype dtype;
  uint32_t ndim;
  uint64_t whole[SL_MAX_DIMS];
  uint64_t items, elements, last_origin0;
  sl_run *run;         /* cancel after cancel_after items (0: never) */
  uint64_t cancel_after;
  bool bad;            /* an item disagreed with the first one */
  uint64_t foreign;    /* items whose block is not the arena's (mapped) */
} cap = {PTHREAD_MUTEX_INITIALIZER, 0, NULL, 0, 0, 0, {0}, 0, 0, 0, NULL, 0, 0, 0};

static void cap_reset(bool assemble) {
  free(cap.buf);
  cap.buf = NULL;
  cap.buf_size = 0;
  cap.assemble = assemble;
  cap.items = cap.elements = cap.last_origin0 = 0;
  cap.ndim = 0;
  cap.dtype = SL_DT_NONE;
  cap.run = NULL;
  cap.cancel_after = 0;
  cap.bad = false;
  cap.foreign = 0;
}

static void cap_place(const sl_array_desc *a, const unsigned char *data) {
  size_t es = sl_dtype_size(a->dtype);
  uint64_t n = 1;
  for (uint32_t d = 0; d < a->ndim; d++) n *= a->shape[d];
  uint64_t idx[SL_MAX_DIMS] = {0};
  for (uint64_t i = 0; i < n; i++) {
    uint64_t src = 0, dst = 0;
    for (uint32_t d = 0; d < a->ndim; d++) {
      src += idx[d] * (uint64_t)a->strides[d];
      dst = dst * a->whole[d] + a->origin[d] + idx[d];
    }
    ASSERT((dst + 1) * es <= cap.buf_size);
    memcpy(cap.buf + dst * es, data + src, es);
    for (int d = (int)a->ndim - 1; d >= 0; d--) {
      if (++idx[d] < a->shape[d]) break;
      idx[d] = 0;
    }
  }
}

static int cap_process(sl_worker *w, sl_item *in, sl_item **out) {
  (void)w;
  *out = NULL;
  ASSERT_EQ(in->payload.kind, SL_KIND_ARRAY);
  const sl_array_desc *a = &in->payload.u.array;
  pthread_mutex_lock(&cap.mu);
  if (cap.items == 0) {
    cap.dtype = a->dtype;
    cap.ndim = a->ndim;
    uint64_t n = 1;
    for (uint32_t d = 0; d < a->ndim; d++) n *= (cap.whole[d] = a->whole[d]);
    if (cap.assemble) {
      cap.buf_size = (size_t)n * sl_dtype_size(a->dtype);
      cap.buf = calloc(cap.buf_size + 1, 1);
      ASSERT(cap.buf);
    }
  } else if (a->dtype != cap.dtype || a->ndim != cap.ndim) {
    cap.bad = true;
  }
  uint64_t n = 1;
  for (uint32_t d = 0; d < a->ndim; d++) n *= a->shape[d];
  if (cap.assemble && n) cap_place(a, in->payload.data);
  cap.items++;
  cap.foreign += sl_block_get_ref(in->payload.block).segment == UINT32_MAX;
  cap.elements += n;
  if (a->ndim && a->origin[0] > cap.last_origin0) cap.last_origin0 = a->origin[0];
  if (cap.cancel_after && cap.items == cap.cancel_after) sl_run_cancel(cap.run);
  pthread_mutex_unlock(&cap.mu);
  return 0;
}

static const sl_stage_def capture_def = {
    .name = "test.capture", .summary = "test sink", .exec = SL_EXEC_SERIAL,
    .in_kind = SL_KIND_ARRAY, .out_kind = SL_KIND_NONE, .flags = SL_STAGE_SINK,
    .process = cap_process};

/* A source of hand-made MAPPED chunk items over a plain file of doubles:
 * h5.decode must check that the file is still the one h5.read opened and
 * still holds the chunk. */
typedef struct mapsrc {
  const char *file;
  uint64_t dev, ino, n;
  uint64_t elems; /* doubles per chunk */
} mapsrc;
static mapsrc msrc;

static int msrc_produce(sl_worker *w, sl_item **out) {
  if (msrc.n == 3) return SL_DONE;
  sl_block *b = NULL;
  ASSERT_OK(sl_worker_alloc(w, SL__H5_HDR_SIZE, &b));
  sl__h5_chunk *h = sl_block_data(b);
  memset(h, 0, SL__H5_HDR_SIZE);
  h->magic = SL__H5_MAGIC;
  h->mode = SL__H5_MAPPED;
  h->src = h->out = SL_DT_F64;
  uint64_t e = msrc.elems;
  h->chunk[0] = e;
  h->array = (sl_array_desc){.dtype = SL_DT_F64, .ndim = 1, .shape = {e}, .whole = {3 * e}};
  h->array.origin[0] = e * msrc.n;
  h->file_offset = 8 * e * msrc.n;
  h->stored_size = 8 * e;
  h->file_dev = msrc.dev;
  h->file_ino = msrc.ino + (msrc.n == 1); /* item 1: another file */
  char name[16];
  snprintf(name, sizeof name, "c%" PRIu64, msrc.n);
  sl_item *it = sl_item_create(msrc.n, name);
  ASSERT(it);
  sl_item_set_block(it, SL_KIND_BYTES, b, 0, SL__H5_HDR_SIZE);
  ASSERT_OK(sl_item_meta_set(it, "h5.file", msrc.file));
  msrc.n++;
  *out = it;
  return 0;
}

static const sl_stage_def mapsrc_def = {
    .name = "test.mapsrc", .summary = "test source", .exec = SL_EXEC_IO,
    .in_kind = SL_KIND_NONE, .out_kind = SL_KIND_BYTES, .flags = SL_STAGE_SOURCE,
    .produce = msrc_produce};

/* ====================================================================== */
/* running                                                                 */

typedef struct outcome {
  int rc;
  char *errors; /* "item: stage: message\n" per failure, and parse errors */
  uint64_t failed;
} outcome;

static void append(char **s, const char *add) {
  size_t a = *s ? strlen(*s) : 0, b = strlen(add);
  *s = realloc(*s, a + b + 1);
  ASSERT(*s);
  memcpy(*s + a, add, b + 1);
}

/* Runs pipeline text (h5.decode is inserted by the parser). */
static outcome run_text(const char *text, unsigned threads) {
  outcome o = {0, NULL, 0};
  append(&o.errors, "");
  sl_registry *reg;
  ASSERT_OK(sl_registry_create(&reg));
  ASSERT_OK(sl_io_register_all(reg));
  (void)sl_stages_register_all(reg);
  ASSERT_OK(sl_registry_add(reg, &capture_def));
  ASSERT_OK(sl_registry_add(reg, &mapsrc_def));
  sl_pipeline *p;
  ASSERT_OK(sl_pipeline_create(&p, reg));
  o.rc = sl_pipeline_parse(p, "t.pipe", text, strlen(text), NULL, 0);
  if (o.rc < 0) {
    append(&o.errors, sl_pipeline_errors(p));
  } else {
    sl_run_options opt;
    sl_run_options_init(&opt);
    opt.threads = threads;
    opt.progress = SL_PROGRESS_OFF;
    sl_run *run;
    ASSERT_OK(sl_run_create(&run, p, &opt));
    cap.run = run;
    o.rc = sl_run_execute(run);
    o.failed = sl_run_items_failed(run);
    for (size_t i = 0; i < sl_run_failure_count(run); i++) {
      const char *it, *st, *msg;
      ASSERT_OK(sl_run_failure(run, i, &it, &st, &msg));
      char *line = tf_asprintf("%s: %s: %s\n", it, st, msg);
      append(&o.errors, line);
      free(line);
    }
    sl_run_destroy(run);
    cap.run = NULL;
  }
  sl_pipeline_destroy(p);
  sl_registry_destroy(reg);
  return o;
}

/* h5.read FILE DATASET [extra params] ! test.capture */
static outcome read_ds(const char *file, const char *dataset, const char *extra,
                       bool assemble) {
  cap_reset(assemble);
  char *text = tf_asprintf("h5.read file='%s' dataset='%s' %s ! test.capture", file,
                         dataset, extra ? extra : "");
  outcome o = run_text(text, 2);
  free(text);
  return o;
}

/* Elementwise equality; floats: both NaN, or the same bits. */
static bool same_values(const unsigned char *a, const unsigned char *b, size_t n,
                        sl_dtype t, size_t *at) {
  size_t es = sl_dtype_size(t);
  for (size_t i = 0; i < n; i++) {
    if (memcmp(a + i * es, b + i * es, es) == 0) continue;
    if (t == SL_DT_F32) {
      float x, y;
      memcpy(&x, a + i * 4, 4);
      memcpy(&y, b + i * 4, 4);
      if (isnan(x) && isnan(y)) continue;
    } else if (t == SL_DT_F64) {
      double x, y;
      memcpy(&x, a + i * 8, 8);
      memcpy(&y, b + i * 8, 8);
      if (isnan(x) && isnan(y)) continue;
    }
    *at = i;
    return false;
  }
  return true;
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  ASSERT(f);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  ASSERT(s);
  ASSERT_EQ(fread(s, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  s[n] = '\0';
  *len = (size_t)n;
  return s;
}

/* ====================================================================== */
/* unit: conversion                                                        */

TEST(convert_exact_or_error) {
  double d[4] = {1.9, -2.9, 127.0, 128.0};
  int8_t i8[4];
  size_t bad = 99;
  ASSERT_EQ(sl__h5_convert(i8, SL_DT_I8, d, SL_DT_F64, false, 3, &bad), 0);
  ASSERT_EQ(i8[0], 1);
  ASSERT_EQ(i8[1], -2);
  ASSERT_EQ(i8[2], 127);
  ASSERT_EQ(sl__h5_convert(i8, SL_DT_I8, d, SL_DT_F64, false, 4, &bad), 1);
  ASSERT_EQ(bad, 3);
  double nanv[1] = {NAN};
  ASSERT_EQ(sl__h5_convert(i8, SL_DT_I8, nanv, SL_DT_F64, false, 1, &bad), 1);
  uint64_t big[1] = {UINT64_MAX};
  int64_t i64[1];
  ASSERT_EQ(sl__h5_convert(i64, SL_DT_I64, big, SL_DT_U64, false, 1, &bad), 1);
  int16_t neg[1] = {-1};
  uint16_t u16[1];
  ASSERT_EQ(sl__h5_convert(u16, SL_DT_U16, neg, SL_DT_I16, false, 1, &bad), 1);
  /* Byte swap: big-endian 0x0102 is 258. */
  unsigned char be[2] = {1, 2};
  int32_t i32[1];
  ASSERT_EQ(sl__h5_convert(i32, SL_DT_I32, be, SL_DT_I16, true, 1, &bad), 0);
  ASSERT_EQ(i32[0], 258);
  uint64_t u = UINT64_MAX;
  double f;
  ASSERT_EQ(sl__h5_convert(&f, SL_DT_F64, &u, SL_DT_U64, false, 1, &bad), 0);
  ASSERT(f == 18446744073709551615.0);
}

/* ====================================================================== */
/* unit: files made here                                                   */

/* dtype_and_block's contiguous 5x40x30 int32 in 4 KiB blocks: a 4800-byte
 * row does not fit, so blocks are whole rows of axis 1 (34 rows of 120
 * bytes); read as float64. */
static void read_c3(const char *file, const char *extra) {
  char *opts = tf_asprintf("block=4096 dtype=float64 %s", extra);
  outcome o = read_ds(file, "/c3", opts, true);
  ASSERT_STREQ(o.errors, "");
  ASSERT_EQ(cap.dtype, SL_DT_F64);
  ASSERT_EQ(cap.items, 10);
  for (int i = 0; i < 6000; i++) {
    double v;
    memcpy(&v, cap.buf + 8 * i, 8);
    if (v != i - 3000) SL__FAIL("%s: element %d: %g", opts, i, v);
  }
  free(o.errors);
  free(opts);
}

TEST(dtype_and_block) {
  char *dir = make_tmpdir();
  char *code = tf_asprintf(
      "import h5py, numpy as np\n"
      "with h5py.File('%s/a.h5','w') as f:\n"
      "  f['c3'] = np.arange(5*40*30, dtype='>i4').reshape(5,40,30) - 3000\n"
      "  f.create_dataset('g', data=np.linspace(-3,3,1000).reshape(100,10),\n"
      "                   chunks=(7,3), compression='gzip', shuffle=True)\n"
      "  f['big'] = np.array([1, 300], dtype='<u2')\n",
      dir);
  python(code);
  free(code);
  char *file = tf_asprintf("%s/a.h5", dir);
  read_c3(file, "");
  /* Chunked gzip+shuffle with edge chunks, to int8: exact values fit
   * after truncation toward zero. */
  outcome o = read_ds(file, "/g", "dtype=int8", true);
  ASSERT_STREQ(o.errors, "");
  ASSERT_EQ(cap.items, 15 * 4);
  for (int i = 0; i < 1000; i++) {
    double x = -3.0 + 6.0 * i / 999.0;
    if ((int8_t)cap.buf[i] != (int8_t)trunc(x)) SL__FAIL("element %d", i);
  }
  free(o.errors);
  /* 300 does not fit uint8: an error naming the element. */
  o = read_ds(file, "/big", "dtype=uint8", true);
  ASSERT_CONTAINS(o.errors, "element [1]: value does not fit uint8");
  free(o.errors);
  /* libhdf5 in this process: the same values; a failure to open says the
   * same whether the child or this process met it. */
  read_c3(file, "isolate=false");
  outcome p = read_ds(file, "/nope", NULL, true), q = read_ds(file, "/nope", "isolate=false", true);
  ASSERT_CONTAINS(p.errors, "dataset /nope: cannot open");
  ASSERT_STREQ(p.errors, q.errors);
  free(p.errors);
  free(q.errors);
  free(file);
  rm_tree(dir);
}

TEST(security_links_and_storage) {
  char *dir = make_tmpdir();
  char *code = tf_asprintf(
      "import h5py, numpy as np, os\n"
      "d='%s'\n"
      "os.mkdir(d+'/in'); os.mkdir(d+'/out')\n"
      "with h5py.File(d+'/out/secret.h5','w') as f: f['x'] = np.arange(4)\n"
      "with h5py.File(d+'/in/ok.h5','w') as f: f['x'] = np.arange(6)\n"
      "with h5py.File(d+'/in/a.h5','w') as f:\n"
      "  f['inside'] = h5py.ExternalLink('ok.h5', '/x')\n"
      "  f['outside'] = h5py.ExternalLink('../out/secret.h5', '/x')\n"
      "  f['absolute'] = h5py.ExternalLink(d+'/out/secret.h5', '/x')\n"
      "  f.create_dataset('efile', (4,), dtype='<i8', external=[('/etc/hostname', 0, 32)])\n",
      dir);
  python(code);
  free(code);
  char *file = tf_asprintf("%s/in/a.h5", dir);
  outcome o = read_ds(file, "/inside", NULL, true);
  ASSERT_STREQ(o.errors, "");
  ASSERT_EQ(cap.elements, 6);
  free(o.errors);
  const char *refused[] = {"/outside", "/absolute", "/efile"};
  for (int i = 0; i < 3; i++) {
    o = read_ds(file, refused[i], NULL, true);
    ASSERT_CONTAINS(o.errors, "refused");
    ASSERT_CONTAINS(o.errors, "outside the input's folder");
    ASSERT_CONTAINS(o.errors, file);
    ASSERT_EQ(cap.items, 0);
    free(o.errors);
  }
  free(file);
  rm_tree(dir);
}

/* ====================================================================== */
/* unit: writing                                                           */

TEST(roundtrip_read_write) {
  char *dir = make_tmpdir();
  char *code = tf_asprintf(
      "import h5py, numpy as np\n"
      "with h5py.File('%s/src.h5','w') as f:\n"
      "  x = np.sin(np.arange(300*70, dtype='f8')).reshape(300,70)\n"
      "  d = f.create_dataset('g/x', data=x, chunks=(64,32), compression='gzip')\n"
      "  d.attrs['units'] = 'K'\n"
      "  d.attrs['scale'] = np.array([1.5, 2.5])\n"
      "  d.attrs['n'] = np.int32(7)\n"
      "  d.attrs['label'] = np.bytes_(b'fixed')\n"
      "  f.create_dataset('p', data=np.cos(np.arange(1000*1000, dtype='f8')).reshape(1000,1000),\n"
      "                   chunks=(250,1000))\n",
      dir);
  python(code);
  free(code);
  /* Whole chunks, and items cut across the output's chunks (64x32 into
   * 10x70: up to 7 parts each, 30 chunks open at once against 5
   * assemblies, so most are written part by part) and h5.read's pieces (8
   * rows of a 250-row chunk) put back together into whole chunks,
   * compressed or not. */
  struct { const char *src, *opts, *file, *dst; } cut[] = {
      /* whole chunks as they are (aligned), through libdeflate */
      {"/g/x", "compress=gzip level=6 shuffle=true", "out.h5", "/y/z"},
      /* chunks that do not match the items: assembled */
      {"/g/x", "chunks=100,70 compress=none", "out2.h5", "/z"},
      /* aligned, no filter: stored as they are, edge chunks (300 = 4*64 +
       * 44, 70 = 2*32 + 6) padded */
      {"/g/x", "compress=none", "out3.h5", "/w"},
      {"/g/x", "chunks=10,70 compress=gzip", "out4.h5", "/c"},
      {"/p piece=64KiB", "compress=none", "out5.h5", "/c"},
      {"/p piece=64KiB", "compress=gzip shuffle=true", "out6.h5", "/c"},
      {"/p piece=64KiB", "chunks=100,300 compress=none", "out7.h5", "/c"},
      /* 1.7 MB chunks, edges on both axes: mapped output */
      {"/p", "chunks=300,700 compress=none", "out8.h5", "/c"}};
  for (size_t k = 0; k < sizeof cut / sizeof cut[0]; k++) {
    char *t = tf_asprintf("h5.read file=%s/src.h5 dataset=%s ! h5.write file=%s/%s "
                          "dataset=%s %s\n", dir, cut[k].src, dir, cut[k].file, cut[k].dst,
                          cut[k].opts);
    outcome oc = run_text(t, 2);
    ASSERT_STREQ(oc.errors, "");
    ASSERT_EQ(oc.rc, 0);
    free(oc.errors);
    free(t);
  }
  code = tf_asprintf(
      "import h5py, numpy as np\n"
      "f = h5py.File('%s/src.h5','r')\n"
      "for name, src, chunks in [('out4.h5','g/x',(10,70)), ('out5.h5','p',(250,1000)),\n"
      "                          ('out6.h5','p',(250,1000)), ('out7.h5','p',(100,300)),\n"
      "                          ('out8.h5','p',(300,700))]:\n"
      "  d = h5py.File('%s/'+name,'r')['c']\n"
      "  assert d.chunks == chunks, (name, d.chunks)\n"
      "  assert np.array_equal(d[()], f[src][()]), name\n",
      dir, dir);
  python(code);
  free(code);
  code = tf_asprintf(
      "import h5py, numpy as np\n"
      "s = h5py.File('%s/src.h5','r')['g/x']\n"
      "for name, path, chunks, comp, shuf in [('out.h5','/y/z',(64,32),'gzip',True),\n"
      "                                       ('out2.h5','/z',(100,70),None,False),\n"
      "                                       ('out3.h5','/w',(64,32),None,False)]:\n"
      "  d = h5py.File('%s/'+name,'r')[path]\n"
      "  assert d.dtype == np.float64 and d.shape == (300,70), (d.dtype, d.shape)\n"
      "  assert np.array_equal(d[()], s[()])\n"
      "  assert d.chunks == chunks, d.chunks\n"
      "  assert d.compression == comp and d.shuffle == shuf\n"
      "  assert sorted(d.attrs) == ['label','n','scale','units'], sorted(d.attrs)\n"
      "  assert d.attrs['units'] == 'K' and d.attrs['n'] == 7\n"
      "  assert list(d.attrs['scale']) == [1.5, 2.5] and d.attrs['label'] == b'fixed'\n",
      dir, dir);
  python(code);
  free(code);
  ASSERT_EQ(dir_count(dir), 9); /* src, out..out8: no temporaries left */
  rm_tree(dir);
}

/* ====================================================================== */
/* unit: chunks mapped from the file                                       */

/* Chunks of 256 KiB and more are read from the file, not through libhdf5
 * (mapped, or cut into pieces read with pread): values must be those numpy
 * wrote, whatever path a chunk takes (a view of the mapping for whole
 * native unfiltered chunks; pieces of any row count; edge chunks clipped,
 * big-endian swapped, gzip/shuffle/fletcher32 decoded, dtype= converted;
 * unwritten chunks filled), and the same with mmap=false. */
TEST(mapped_chunks) {
  char *dir = make_tmpdir();
  char *code = tf_asprintf(
      "import h5py, numpy as np\n"
      "with h5py.File('%s/m.h5','w') as f:\n"
      "  # sparse first: its chunks then lie at 8-byte aligned offsets (after gz's\n"
      "  # odd-sized chunks they might not, and unaligned chunks are copied)\n"
      "  d = f.create_dataset('sparse', (1024,1024), dtype='<f8', chunks=(256,1024), fillvalue=-7)\n"
      "  d[0:256] = np.arange(256*1024).reshape(256,1024)\n"
      "  d[768:1024] = 1.25\n"
      "  f.create_dataset('le', data=np.arange(300*4096, dtype='<f8').reshape(300,4096) * 0.5,\n"
      "                   chunks=(64,4096))\n"
      "  f.create_dataset('be', data=(np.arange(200*3000) %% 100000 - 50000).astype('>i4').reshape(200,3000),\n"
      "                   chunks=(128,1024))\n"
      "  f['cle'] = np.arange(300*4096, dtype='<f8').reshape(300,4096) * 0.5  # contiguous\n"
      "  f['cbe'] = (np.arange(200*3000) %% 100000 - 50000).astype('>i4').reshape(200,3000)\n"
      "  f.create_dataset('gz', data=np.sin(np.arange(512*1024, dtype='f4')).reshape(512,1024),\n"
      "                   chunks=(256,1024), compression='gzip', shuffle=True, fletcher32=True)\n"
      "np.sin(np.arange(512*1024, dtype='f4')).astype('<f4').tofile('%s/gz.raw')\n",
      dir, dir);
  python(code);
  free(code);
  char *file = tf_asprintf("%s/m.h5", dir);
  /* numpy's float32 sines, bit for bit (the C library's sinf may differ) */
  char *raw = tf_asprintf("%s/gz.raw", dir);
  size_t raw_len = 0;
  char *sines = read_file(raw, &raw_len);
  ASSERT_EQ(raw_len, (size_t)512 * 1024 * 4);
  /* items: mapped, copied (mmap=false never cuts chunks in pieces) */
  struct { const char *ds, *extra; uint64_t items, copied, views; } cases[] = {
      {"/le", "piece=0", 5, 5, 4},              /* the 44-row edge chunk is clipped */
      {"/le", "piece=0 dtype=float32", 5, 5, 0}, /* converted */
      {"/be", "piece=0", 6, 6, 0},              /* swapped, edge chunks clipped */
      {"/gz", "piece=64KiB", 2, 2, 0},          /* filtered: never cut */
      {"/sparse", "piece=0", 4, 4, 2},          /* two chunks never written */
      {"/le", "", 19, 5, 0}, /* 512 KiB: 16 rows, 4 a chunk, 3 of the edge one */
      /* pieces of 2 rows: 32 per chunk, 22 of the 44-row edge chunk */
      {"/le", "piece=64KiB", 150, 5, 0},
      /* 3 rows: 22 per chunk, the last of 1 row; 15 of the edge chunk, the
       * last clipped from 3 stored rows to 2 */
      {"/le", "piece=100KiB dtype=float32", 103, 5, 0},
      /* 16 rows: 8 + 5 per column of chunks, 3 columns, the last clipped */
      {"/be", "piece=64KiB", 39, 6, 0},
      /* contiguous: blocks of whole rows read from the file, like chunks */
      {"/cle", "", 1, 1, 1},                        /* 9.4 MiB: one view */
      {"/cle", "block=100KiB", 100, 100, 0},        /* 3 rows each: pread */
      {"/cle", "block=100KiB dtype=float32", 100, 100, 0},
      {"/cbe", "block=64KiB", 40, 40, 0},           /* 5 rows each, swapped */
      {"/sparse", "piece=256KiB", 32, 4, 0}, /* 8 a chunk, filled ones too */
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    unsigned char *got[2] = {NULL, NULL};
    size_t size = 0;
    for (int m = 0; m < 2; m++) {
      char *extra = tf_asprintf("%s mmap=%s", cases[c].extra, m ? "false" : "true");
      outcome o = read_ds(file, cases[c].ds, extra, true);
      if (o.errors[0]) SL__FAIL("%s %s: %s", cases[c].ds, extra, o.errors);
      if (cap.items != (m ? cases[c].copied : cases[c].items))
        SL__FAIL("%s %s: %" PRIu64 " items", cases[c].ds, extra, cap.items);
      if (cap.foreign != (m ? 0 : cases[c].views))
        SL__FAIL("%s %s: %" PRIu64 " mapped views", cases[c].ds, extra, cap.foreign);
      got[m] = cap.buf;
      size = cap.buf_size;
      cap.buf = NULL;
      free(o.errors);
      free(extra);
    }
    size_t at = 0;
    if (!same_values(got[0], got[1], size / sl_dtype_size(cap.dtype), cap.dtype, &at))
      SL__FAIL("%s: mmap=true and mmap=false differ at element %zu", cases[c].ds, at);
    if (strcmp(cases[c].ds, "/gz") == 0) {
      ASSERT_EQ(size, raw_len);
      ASSERT(memcmp(got[0], sines, size) == 0);
    }
    for (size_t i = 0; strcmp(cases[c].ds, "/gz") != 0 && i < size / sl_dtype_size(cap.dtype); i++) {
      double want, v;
      if (strstr(cases[c].ds, "le")) want = (double)i * 0.5;
      else if (strstr(cases[c].ds, "be")) want = (double)(i % 100000) - 50000;
      else want = i < 256 * 1024 ? (double)i : i >= 768 * 1024 ? 1.25 : -7;
      switch (cap.dtype) {
      case SL_DT_F64: memcpy(&v, got[0] + 8 * i, 8); break;
      case SL_DT_F32: {
        float f;
        memcpy(&f, got[0] + 4 * i, 4);
        v = f;
        if (cases[c].extra[0]) want = (double)(float)want;
        break;
      }
      case SL_DT_I32: {
        int32_t k;
        memcpy(&k, got[0] + 4 * i, 4);
        v = k;
        break;
      }
      default: SL__FAIL("dtype %d", (int)cap.dtype);
      }
      if (v != want)
        SL__FAIL("%s element %zu: %g, want %g", cases[c].ds, i, v, want);
    }
    free(got[0]);
    free(got[1]);
  }
  free(sines);
  free(raw);
  free(file);
  rm_tree(dir);
}

/* Chunks of up to 1 MiB are read (pread), larger ones mapped: either way
 * a replaced file and one cut short are errors of the item. */
TEST(mapped_file_must_not_change) {
  char *dir = make_tmpdir();
  char *file = tf_asprintf("%s/d.bin", dir);
  for (int big = 0; big < 2; big++) {
    uint64_t e = big ? (UINT64_C(1) << 17) + 64 : 64; /* 2 chunks in the file */
    double *v = malloc(2 * e * sizeof *v);
    ASSERT(v);
    for (uint64_t i = 0; i < 2 * e; i++) v[i] = (double)i;
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ASSERT(fd >= 0);
    ASSERT_EQ(write(fd, v, 2 * e * sizeof *v), (ssize_t)(2 * e * sizeof *v));
    close(fd);
    free(v);
    struct stat st;
    ASSERT_EQ(stat(file, &st), 0);
    msrc = (mapsrc){file, (uint64_t)st.st_dev, (uint64_t)st.st_ino, 0, e};
    cap_reset(true);
    outcome o = run_text("test.mapsrc ! h5.decode ! test.capture", 2);
    ASSERT_EQ(o.failed, 2);
    ASSERT_EQ(cap.items, 1);
    ASSERT_EQ(cap.foreign, (uint64_t)big); /* a view of the mapping */
    for (uint64_t i = 0; i < e; i++) {
      double got;
      memcpy(&got, (char *)cap.buf + 8 * i, 8);
      if (got != (double)i) SL__FAIL("chunk 0, element %" PRIu64 ": %g", i, got);
    }
    ASSERT_CONTAINS(o.errors, "c1: ");
    ASSERT_CONTAINS(o.errors, "the file was replaced while it was being read");
    ASSERT_CONTAINS(o.errors, "c2: ");
    char want[120];
    snprintf(want, sizeof want, "the file shrank while it was being read (the chunk "
             "ends at byte %" PRIu64 ")", 3 * 8 * e);
    ASSERT_CONTAINS(o.errors, want);
    free(o.errors);
  }
  free(file);
  rm_tree(dir);
}

/* Shuffled chunks of 1-, 2-, 4- and 8-byte elements, with chunk lengths
 * that are and are not multiples of 16 (the SIMD unshuffle's step). */
TEST(shuffled_widths) {
  char *dir = make_tmpdir();
  char *code = tf_asprintf(
      "import h5py, numpy as np\n"
      "with h5py.File('%s/s.h5','w') as f:\n"
      "  for t in ('i1', '<i2', '>i2', '<f4', '<f8', '>i8'):\n"
      "    for c in (37, 256):\n"
      "      x = ((np.arange(1000) * 7919) %% 251 - 125).astype(t)\n"
      "      f.create_dataset('%%s_%%d' %% (t.strip('<>') + ('be' if t[0] == '>' else ''), c),\n"
      "                       data=x, chunks=(c,), shuffle=True)\n",
      dir);
  python(code);
  free(code);
  char *file = tf_asprintf("%s/s.h5", dir);
  const char *names[] = {"i1", "i2", "i2be", "f4", "f8", "i8be"};
  for (size_t k = 0; k < 6; k++)
    for (int c = 0; c < 2; c++) {
      char ds[32];
      snprintf(ds, sizeof ds, "/%s_%d", names[k], c ? 256 : 37);
      outcome o = read_ds(file, ds, "dtype=float64", true);
      if (o.errors[0]) SL__FAIL("%s: %s", ds, o.errors);
      for (int i = 0; i < 1000; i++) {
        double v;
        memcpy(&v, cap.buf + 8 * i, 8);
        if (v != (double)((i * 7919) % 251 - 125)) SL__FAIL("%s element %d: %g", ds, i, v);
      }
      free(o.errors);
    }
  free(file);
  rm_tree(dir);
}

TEST(write_failure_leaves_nothing) {
  char *dir = make_tmpdir();
  char *src = shared_dir("generated/corrupt_gzip_chunk.h5");
  /* One chunk is corrupt: the others arrive, the dataset is incomplete,
   * so nothing may be written. With the source's own chunks, and with
   * chunks the 64x8 items do not match: they are assembled, the chunks the
   * bad item touches never fill, and are written part by part at the end,
   * or when 5 are open, before the count refuses the file. At 1 to 4
   * threads, so that assemblies are taken in any order. */
  for (unsigned th = 1; th <= 4; th++) {
    /* the last: one 296 kB uncompressed chunk, allocated at creation and
     * mapped */
    const char *params[] = {"", "chunks=100,37", "chunks=30,10", "chunks=1000,1",
                            "chunks=1000,37 compress=none"};
    for (size_t k = 0; k < sizeof params / sizeof *params; k++) {
      char *text = tf_asprintf("h5.read file=%s dataset=/gzip_shuffle_f8 ! "
                               "h5.write file=%s/out.h5 dataset=/d %s\n", src, dir,
                               params[k]);
      outcome o = run_text(text, th);
      ASSERT_NE(o.rc, 0);
      ASSERT_CONTAINS(o.errors, "invalid zlib stream");
      ASSERT_CONTAINS(o.errors, "not written");
      ASSERT_EQ(dir_count(dir), 0);
      free(o.errors);
      free(text);
    }
  }
  free(src);
  rm_tree(dir);
}

TEST(write_tables) {
  char *dir = make_tmpdir();
  char *csv = tf_asprintf("%s/t.csv", dir);
  FILE *f = fopen(csv, "w");
  ASSERT(f);
  fputs("k,x\nb,1.5\na,2\nb,3\n", f);
  fclose(f);
  char *text = tf_asprintf("csv.read file=%s ! csv.parse ! h5.write file=%s/t.h5 "
                         "dataset=/res\n", csv, dir);
  outcome o = run_text(text, 2);
  ASSERT_STREQ(o.errors, "");
  free(o.errors);
  char *code = tf_asprintf(
      "import h5py, numpy as np\n"
      "g = h5py.File('%s/t.h5','r')['res']\n"
      "assert sorted(g) == ['k','x'], sorted(g)\n"
      "assert [s.decode() for s in g['k'][()]] == ['b','a','b']\n"
      "assert list(g['x'][()]) == [1.5, 2.0, 3.0]\n", dir);
  python(code);
  free(code);
  free(text);
  free(csv);
  rm_tree(dir);
}

/* ====================================================================== */
/* conformance                                                             */

/* Expectations that differ from what h5py does (policy). */
static const struct override {
  const char *file, *dataset, *expect;
} overrides[] = {
    /* h5py read /etc/hostname through these: h5.read must refuse. */
    {"external_storage.h5", "/absolute_outside", "refused"},
    {"external_storage.h5", "/dotdot_outside", "refused"},
    /* h5py resolves against the CWD and fails; h5.read uses the file's
     * folder (values 0..15 checked in the test below). */
    {"external_storage.h5", "/relative_ok", NULL},
};

static const char *override_for(const char *file, const char *ds, bool *found) {
  *found = false;
  const char *base = strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
  for (size_t i = 0; i < sizeof overrides / sizeof overrides[0]; i++)
    if (!strcmp(base, overrides[i].file) && !strcmp(ds, overrides[i].dataset)) {
      *found = true;
      return overrides[i].expect;
    }
  return NULL;
}

static void check_ok(char **f) {
  size_t len;
  char *want = read_file(f[5], &len);
  sl_dtype t;
  ASSERT_EQ(sl__h5_dtype_from_choice(0), SL_DT_NONE);
  outcome o = read_ds(f[1], f[2], NULL, true);
  if (o.errors[0]) SL__FAIL("%s %s: %s", f[1], f[2], o.errors);
  ASSERT(!cap.bad);
  t = cap.dtype;
  if (strcmp(sl_dtype_name(t), f[3]) != 0)
    SL__FAIL("%s %s: dtype %s, h5py %s", f[1], f[2], sl_dtype_name(t), f[3]);
  size_t es = sl_dtype_size(t), at = 0;
  if (len != cap.elements * es || len != cap.buf_size)
    SL__FAIL("%s %s: %zu bytes, h5py %zu", f[1], f[2], (size_t)(cap.elements * es), len);
  if (!same_values(cap.buf, (unsigned char *)want, len / es, t, &at))
    SL__FAIL("%s %s: element %zu differs from h5py", f[1], f[2], at);
  free(want);
  free(o.errors);
}

static void check_error(const char *file, const char *ds, const char *what) {
  outcome o = read_ds(file, ds, NULL, false);
  if (o.rc == 0 || !o.errors[0]) SL__FAIL("%s %s: expected an error (%s)", file, ds, what);
  if (what && strcmp(what, "-") != 0 && !strstr(o.errors, what))
    SL__FAIL("%s %s: error does not mention '%s':\n%s", file, ds, what, o.errors);
  if (!strstr(o.errors, file)) SL__FAIL("error does not name the file:\n%s", o.errors);
  free(o.errors);
}

/* Compares every dataset of the files in `sub` with h5py. */
static void conformance_set(const char *sub, const char *glob) {
  char *base = shared_dir(sub), *tmp = make_tmpdir();
  char *cmd = tf_asprintf("cd '%s' && /usr/bin/python3 '%s/tests/h5_reference.py' "
                        "'%s' %s > '%s/list.tsv'", base, getenv("SLUICE_SOURCE_DIR"),
                        tmp, glob, tmp);
  ASSERT_EQ(system(cmd), 0);
  free(cmd);
  char *list = tf_asprintf("%s/list.tsv", tmp);
  size_t len;
  char *text = read_file(list, &len);
  int n_ok = 0, n_err = 0;
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    char *f[6] = {0};
    int k = 0;
    for (char *p = line; k < 6 && p; k++) {
      f[k] = p;
      p = strchr(p, '\t');
      if (p) *p++ = '\0';
    }
    char *file = tf_asprintf("%s/%s", base, f[1]);
    bool found;
    const char *ov = override_for(file, f[2], &found);
    if (found && ov) {
      check_error(file, f[2], ov);
      n_err++;
    } else if (found) {
      /* checked by its own test */
    } else if (!strcmp(f[0], "ok")) {
      f[1] = file;
      check_ok(f);
      n_ok++;
    } else if (!strcmp(f[0], "empty")) {
      outcome o = read_ds(file, f[2], NULL, true);
      ASSERT_STREQ(o.errors, "");
      ASSERT_EQ(cap.items, 1);
      ASSERT_EQ(cap.elements, 0);
      free(o.errors);
    } else if (!strcmp(f[0], "error")) {
      check_error(file, f[2], f[3]);
      n_err++;
    } else if (!strcmp(f[0], "openerror")) {
      check_error(file, "/any", strstr(f[3], "h5clear") ? "h5clear -s" : NULL);
      n_err++;
    }
    free(file);
  }
  fprintf(stderr, "%s: %d datasets equal to h5py, %d clean errors\n", sub, n_ok, n_err);
  ASSERT(n_ok > 0);
  free(text);
  free(list);
  free(base);
  rm_tree(tmp);
}

/* Two halves of the jhdf files, each a few seconds. */
TEST(conformance_jhdf_a) { conformance_set("jhdf", "[!t]*.hdf5 test_[a-l]*.hdf5"); }
TEST(conformance_jhdf_b) { conformance_set("jhdf", "test_[m-z]*.hdf5 *.hdf5bad"); }

TEST(conformance_generated) {
  conformance_set("generated", "*.h5");
  /* Policy cases of MANIFEST.json that are links, not datasets. */
  char *f = shared_dir("generated/groups_and_links.h5");
  check_error(f, "/ext_escape", "refused");
  check_error(f, "/dangling", "cannot open");
  check_error(f, "/ext_missing", "refused");
  check_error(f, "/missing_dataset", "doesn't exist");
  check_error(f, "/a/b", "is a group, not a dataset");
  free(f);
  /* External raw data next to the file, resolved against its folder. */
  f = shared_dir("generated/external_storage.h5");
  outcome o = read_ds(f, "/relative_ok", NULL, true);
  ASSERT_STREQ(o.errors, "");
  for (int i = 0; i < 16; i++) {
    int32_t v;
    memcpy(&v, cap.buf + 4 * i, 4);
    ASSERT_EQ(v, i);
  }
  free(o.errors);
  free(f);
  /* One corrupt chunk fails one item; the other 79 arrive. */
  f = shared_dir("generated/corrupt_gzip_chunk.h5");
  o = read_ds(f, "/gzip_shuffle_f8", NULL, false);
  ASSERT_EQ(o.failed, 1);
  ASSERT_EQ(cap.items, 79);
  ASSERT_CONTAINS(o.errors, "deflate: invalid zlib stream");
  free(o.errors);
  free(f);
}

TEST(conformance_huge) {
  /* 2,147,483,700 uint8 elements: counters must be 64-bit. */
  char *f = shared_dir("jhdf/tiny_huge_1d_over_maxint.hdf5");
  outcome o = read_ds(f, "/huge_1d", NULL, false);
  ASSERT_STREQ(o.errors, "");
  ASSERT_EQ(cap.items, 513);
  ASSERT(cap.elements == UINT64_C(2147483700));
  ASSERT(cap.last_origin0 == UINT64_C(2147483648));
  ASSERT(cap.whole[0] == UINT64_C(2147483700));
  free(o.errors);
  free(f);
  /* 1 TiB of fill values: streams in bounded memory; stopped after 40
   * items (of 1,048,576). */
  f = shared_dir("generated/huge_sparse.h5");
  cap_reset(false);
  cap.cancel_after = 40;
  char *text = tf_asprintf("h5.read file=%s dataset=/one_tib_int8 ! test.capture", f);
  o = run_text(text, 2);
  ASSERT_EQ(o.rc, SL_ECANCELED);
  ASSERT(cap.items >= 40 && cap.items < 1000);
  ASSERT(cap.whole[0] == UINT64_C(1099511627776));
  free(o.errors);
  free(text);
  free(f);
}

/* Files on which libhdf5 1.10.8 itself crashes (SIGSEGV/SIGABRT) or hangs,
 * per the conformance README, plus two more (docs/hdf5.md). h5.read runs
 * libhdf5 in a child process (isolate=true), so on each of them sluice
 * must end with results or clean errors like on any other file; the test
 * shows what it said. */
static const char *const known_crash[] = {
    "cve-2018-11205.h5", "cve-2018-13867.h5", "cve-2018-13871.h5",
    "cve-2018-13875.h5", "cve-2018-14031.h5", "cve-2018-15671.h5",
    "cve-2018-16438.h5", "cve-2019-9152.h5",  "cve-2024-32609.h5",
    "cve-2024-32615.h5", "cve-2024-33877.h5", "cve-2025-6269-1.h5",
    /* Not in the README's list (its harness stopped at an earlier error):
     * SIGSEGV in memcpy under H5Dopen2 -> H5O_msg_read; `h5ls -r` crashes
     * on it too. */
    "cve-2021-46243.h5",
    /* Likewise: SIGFPE in H5T_copy under H5Dopen2 of /BAG_root/tracking_list
     * (`h5ls -r` dies the same way). */
    "cve-2021-46244.h5",
};

static bool is_known_crash(const char *name) {
  for (size_t i = 0; i < sizeof known_crash / sizeof known_crash[0]; i++)
    if (!strcmp(name, known_crash[i])) return true;
  return false;
}

static herr_t collect_cb(hid_t g, const char *name, const H5L_info_t *info, void *op) {
  (void)g;
  (void)info;
  int *left = op;
  char line[1100];
  int n = snprintf(line, sizeof line, "/%s\n", name);
  if (n > 0 && (size_t)n < sizeof line && write(left[1], line, (size_t)n) < 0) return 1;
  return --left[0] > 0 ? 0 : 1;
}

/* Up to 6 object names of the file, as a grandchild lists them: libhdf5
 * may crash or hang listing them (that is the test's own libhdf5 call, not
 * sluice), so each name is sent as soon as it is found. "/" when none. */
static int collect_names(const char *path, char **names) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    close(p[0]);
    alarm(2);
    int left[2] = {6, p[1]};
    sl__h5_lock();
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (fid >= 0) H5Lvisit(fid, H5_INDEX_NAME, H5_ITER_INC, collect_cb, left);
    _exit(0);
  }
  close(p[1]);
  char buf[8192];
  size_t got = 0;
  ssize_t k;
  while (got < sizeof buf - 1 && (k = read(p[0], buf + got, sizeof buf - 1 - got)) > 0)
    got += (size_t)k;
  buf[got] = '\0';
  close(p[0]);
  int st;
  waitpid(pid, &st, 0);
  int n = 0;
  for (char *line = strtok(buf, "\n"); line && n < 6; line = strtok(NULL, "\n"))
    names[n++] = tf_asprintf("%s", line);
  if (n == 0) names[n++] = tf_asprintf("/");
  return n;
}

/* In the child: reads each object of the file with h5.read (which runs
 * libhdf5 in a grandchild of its own); every outcome must be a result or an
 * error naming the file. Exit 0 when so. The outcomes of known-crash files
 * go to stderr (the log), which the parent shows. */
static void cve_child(const char *path, bool known) {
  alarm(60); /* a hang of sluice itself ends as SIGALRM */
  char *names[6] = {0};
  int n = collect_names(path, names);
  for (int i = 0; i < n; i++) {
    outcome o = read_ds(path, names[i], "isolate_timeout=2", false);
    if (o.rc != 0 && !strstr(o.errors, path)) {
      fprintf(stderr, "%s %s: error without the file name: %s\n", path, names[i], o.errors);
      _exit(3);
    }
    if (known) fprintf(stderr, "  %s: %s", names[i], o.rc ? o.errors : "read\n");
    free(o.errors);
  }
  _exit(0);
}

/* Half `half` (0 or 1) of the files, by name order parity, so that each
 * ctest case stays within a few seconds. */
static void cve_pocs(int half) {
  char *dir = shared_dir("cve-pocs");
  DIR *d = opendir(dir);
  ASSERT(d);
  struct dirent *e;
  int files = 0, clean_known = 0;
  char *unexpected = NULL;
  append(&unexpected, "");
  while ((e = readdir(d))) {
    if (strncmp(e->d_name, "cve-", 4) && strncmp(e->d_name, "unknown-", 8)) continue;
    /* readdir order is not sorted but is stable for one folder; parity
     * of a hash of the name splits the set the same way every time. */
    unsigned hsh = 0;
    for (const char *c = e->d_name; *c; c++) hsh = hsh * 31 + (unsigned char)*c;
    if ((int)(hsh & 1) != half) continue;
    /* Under AddressSanitizer libhdf5's own out-of-bounds accesses become
     * reports that end the process (exit 1): in h5.read's child that is a
     * crash like any other, so nothing is tolerated in any build. */
    char *path = tf_asprintf("%s/%s", dir, e->d_name);
    fflush(stderr);
    char *log = tf_asprintf("/tmp/sl-h5-cve-%d.log", (int)getpid());
    pid_t pid = fork();
    ASSERT(pid >= 0);
    bool known = is_known_crash(e->d_name);
    if (pid == 0) {
      int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd >= 0) dup2(fd, 2);
      cve_child(path, known);
    }
    int st;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    files++;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
      /* fine: results or clean errors */
      if (known) {
        clean_known++;
        size_t tlen = 0;
        char *text = read_file(log, &tlen);
        fprintf(stderr, "libhdf5 crashes on %s; sluice said:\n%s", e->d_name, text ? text : "");
        free(text);
      }
    } else {
      char *line = tf_asprintf("  %s: %s %d\n", e->d_name,
                             WIFSIGNALED(st) ? "signal" : "exit",
                             WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
      append(&unexpected, line);
      free(line);
    }
    unlink(log);
    free(log);
    free(path);
  }
  closedir(d);
  fprintf(stderr, "%d CVE files, %d of those that crash libhdf5 ended cleanly\n", files,
          clean_known);
  if (unexpected[0]) SL__FAIL("sluice crashed or hung:\n%s", unexpected);
  free(unexpected);
  ASSERT(files > 40);
  free(dir);
}

/* ---- the child process that runs libhdf5 (h5_isolate.c) ------------- */

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define PROBE_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define PROBE_SANITIZED 1
#endif
#endif

/* In a child: does `what`, then answers "ok!" (3 bytes) on fd. */
static _Noreturn void child_doing(int what, int fd) {
  switch (what) {
  case 1: { volatile int *p = NULL; (void)*p; break; } /* a crash of the "library" */
  case 2: abort();
  case 3: for (;;) pause(); /* a hang: only SIGKILL ends it */
  case 4: _exit(7);         /* gone without an answer */
  case 5: { /* unbounded allocation: fails within the address-space cap */
    size_t n = (size_t)(SL__ISO_MEMORY + (UINT64_C(1) << 30));
    char *big = malloc(n);
    if (big) memset(big, 1, n);
    sl__h5_child_send(fd, big ? "big" : "nom", 3);
    _exit(0);
  }
  default: break;
  }
  sl__h5_child_send(fd, "ok!", 3);
  _exit(0);
}

/* One child: what it answers (or how it failed), and how it ended. */
static int child_outcome(int what, double timeout, char *answer, char *why, size_t len) {
  sl__h5_child c;
  int rc = sl__h5_child_fork(&c);
  ASSERT(rc >= 0);
  if (rc == 1) child_doing(what, c.fd);
  answer[3] = '\0';
  rc = sl__h5_child_recv(c.fd, answer, 3, timeout);
  sl__h5_child_end(&c, rc, timeout, why, len);
  ASSERT_EQ(c.fd, -1);
  ASSERT_EQ(c.pid, -1);
  return rc;
}

TEST(child_outcomes) {
  char answer[4], why[300];
  ASSERT_EQ(child_outcome(0, 10, answer, why, sizeof why), 0);
  ASSERT_STREQ(answer, "ok!");
  /* A sanitizer turns a fault into its report and an exit status of its
   * own (ASan 1, TSan 66); else a signal. */
  ASSERT_EQ(child_outcome(1, 10, answer, why, sizeof why), SL__ISO_GONE);
  ASSERT(strstr(why, "signal 11, SIGSEGV") || strstr(why, "exit status"));
  ASSERT_EQ(child_outcome(2, 10, answer, why, sizeof why), SL__ISO_GONE);
  ASSERT(strstr(why, "signal 6, SIGABRT") || strstr(why, "exit status"));
  ASSERT_EQ(child_outcome(4, 10, answer, why, sizeof why), SL__ISO_GONE);
  ASSERT_STREQ(why, "exit status 7, without an answer");
  uint64_t t0 = sl_now_ns();
  ASSERT_EQ(child_outcome(3, 0.3, answer, why, sizeof why), SL__ISO_LATE);
  uint64_t took = sl_now_ns() - t0;
  ASSERT(took >= 300000000u && took < 30000000000u);
  ASSERT_CONTAINS(why, "no answer within 0.3 s");
#ifndef PROBE_SANITIZED /* sanitizers reserve their own address space */
  ASSERT_EQ(child_outcome(5, 30, answer, why, sizeof why), 0);
  ASSERT_STREQ(answer, "nom");
#endif
  /* This process is unharmed. */
  ASSERT_EQ(child_outcome(0, 10, answer, why, sizeof why), 0);
}

/* The child crashing or hanging in the middle of a dataset (a test hook
 * makes it do so at its Nth request): the items before it arrive, the
 * source ends with a message naming the chunk and how the child ended. */
TEST(child_fails_midway) {
  char *dir = make_tmpdir();
  char *code = tf_asprintf(
      "import h5py, numpy as np\n"
      "with h5py.File('%s/a.h5','w') as f:\n"
      "  f.create_dataset('g', data=np.arange(100*10, dtype='f8').reshape(100,10),\n"
      "                   chunks=(10,10), compression='gzip')\n"
      "  f['c'] = np.arange(3000, dtype='i4')\n",
      dir);
  python(code);
  free(code);
  char *file = tf_asprintf("%s/a.h5", dir);
  /* gzip chunks too small to map: each is a size lookup and a read. */
  setenv("SLUICE_TEST_H5_CHILD", "crash@5", 1);
  outcome o = read_ds(file, "/g", "isolate_timeout=5", false);
  ASSERT_CONTAINS(o.errors, "dataset /g: chunk at [20,0]: libhdf5 failed looking up a chunk (");
  ASSERT_CONTAINS(o.errors, "in the process that reads the file");
  ASSERT_EQ(cap.items, 2);
  free(o.errors);
  setenv("SLUICE_TEST_H5_CHILD", "hang@4", 1);
  o = read_ds(file, "/g", "isolate_timeout=0.5", false);
  ASSERT_CONTAINS(o.errors, "dataset /g: chunk at [10,0]: libhdf5 failed reading a chunk "
                            "(no answer within 0.5 s");
  ASSERT_EQ(cap.items, 1);
  free(o.errors);
  /* Contiguous, mmap=false: blocks through H5Dread. */
  setenv("SLUICE_TEST_H5_CHILD", "crash@2", 1);
  o = read_ds(file, "/c", "block=4096 mmap=false", false);
  ASSERT_CONTAINS(o.errors, "dataset /c: block at [1024]: libhdf5 failed reading values (");
  ASSERT_EQ(cap.items, 1);
  free(o.errors);
  unsetenv("SLUICE_TEST_H5_CHILD");
  o = read_ds(file, "/c", "block=4096 mmap=false", false);
  ASSERT_STREQ(o.errors, "");
  ASSERT_EQ(cap.items, 3);
  free(o.errors);
  free(file);
  rm_tree(dir);
}

TEST(conformance_cve_pocs_a) { cve_pocs(0); }
TEST(conformance_cve_pocs_b) { cve_pocs(1); }

static const sl_test_case cases[] = {
    SL_CASE(convert_exact_or_error, "unit"),
    SL_CASE(dtype_and_block, "unit"),
    SL_CASE(security_links_and_storage, "unit"),
    SL_CASE(roundtrip_read_write, "unit"),
    SL_CASE(write_failure_leaves_nothing, "unit"),
    SL_CASE(mapped_chunks, "unit"),
    SL_CASE(shuffled_widths, "unit"),
    SL_CASE(mapped_file_must_not_change, "unit"),
    SL_CASE(write_tables, "unit"),
    SL_CASE(conformance_jhdf_a, "conformance"),
    SL_CASE(conformance_jhdf_b, "conformance"),
    SL_CASE(conformance_generated, "conformance"),
    SL_CASE(conformance_huge, "conformance"),
    SL_CASE(child_outcomes, "unit"),
    SL_CASE(child_fails_midway, "unit"),
    SL_CASE(conformance_cve_pocs_a, "conformance"),
    SL_CASE(conformance_cve_pocs_b, "conformance"),
};
SL_TEST_MAIN(cases)
