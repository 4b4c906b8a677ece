/*
 * make_images.c -- writes a deterministic set of photo-like PNGs, the
 * sample input of the thumbnails demo and of bench/images.
 *
 *   make_images DIR COUNT [--min WxH] [--max WxH] [--seed N]
 *
 * Image k (0-based) is a pure function of (seed, k): its size (each side
 * uniform between --min and --max, default 640x480..1600x1200), its kind
 * (7 in 10 RGB, 2 in 10 RGBA with fully transparent regions, 1 in 10
 * gray) and every pixel. So the same arguments give byte-identical files
 * whatever the thread count (libpng at zlib level 6, its default filters).
 * Files go to DIR/img-NNNNN.png, DIR/set1/... and DIR/set2/deep/... so a
 * pipeline that mirrors the input tree shows it.
 *
 * "Photo-like" means it compresses and resizes like a photograph: a smooth
 * field (a luminance made of low-frequency plane waves plus a vertical
 * gradient, per-channel chroma waves, soft-edged elliptic "objects" that
 * give edges) plus per-pixel noise of a level drawn per image. A 1920x1080
 * RGB image comes out at a few MB at level 6, like a camera PNG.
 *
 * Plane waves are separable (sin(a + b) = sin a cos b + cos a sin b), so
 * each costs two multiply-adds per pixel from per-column and per-row
 * tables; noise comes from a counter-based generator keyed by (image, row).
 * Images are spread over threads with OpenMP. Uses libpng directly (only
 * public headers, no sluice code).
 */
#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

#define NWAVES 8   /* luminance plane waves: 2 broad, 4 medium, 2 texture */
#define NCHROMA 2  /* plane waves per colour channel */
#define NOBJECTS 10
#define NHOLES 3   /* transparent regions of an RGBA image */

typedef struct options {
  const char *dir;
  unsigned count;
  unsigned min_w, min_h, max_w, max_h;
  uint64_t seed;
} options;

/* One plane wave: amp * sin(fx*x + fy*y + phase), tabulated per column. */
typedef struct wave {
  double fx, fy, phase, amp;
  float *sx, *cx; /* amp*sin(fx*x + phase), amp*cos(fx*x + phase) */
} wave;

typedef struct ellipse {
  double cx, cy, rx, ry, edge;
  double add[4]; /* offset per channel (objects); unused for holes */
} ellipse;

typedef struct image_spec {
  unsigned index, w, h, channels;
  uint64_t key;
  double noise;
  double base[3], grad[3];
  wave luma[NWAVES], chroma[3][NCHROMA];
  ellipse obj[NOBJECTS], hole[NHOLES];
  unsigned nholes;
  bool cutout; /* RGBA: opaque inside hole[0], transparent outside */
} image_spec;

/* ---------------------------------------------------------------------- */
/* deterministic random numbers                                            */

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

static double uniform(uint64_t *s, double lo, double hi) {
  return lo + (hi - lo) * (double)(splitmix(s) >> 11) * 0x1.0p-53;
}

static unsigned between(uint64_t *s, unsigned lo, unsigned hi) {
  return lo + (unsigned)(splitmix(s) % ((uint64_t)hi - lo + 1));
}

/* ---------------------------------------------------------------------- */
/* the image's recipe                                                      */

/* A wave of 0.3..cycles periods across the image, in a random direction. */
static void make_wave(uint64_t *s, wave *wv, const image_spec *im,
                      double cycles, double amp) {
  double ang = uniform(s, 0, 2 * M_PI), per = uniform(s, 0.3, cycles);
  double scale = 2 * M_PI * per / (im->w > im->h ? im->w : im->h);
  wv->fx = cos(ang) * scale;
  wv->fy = sin(ang) * scale;
  wv->phase = uniform(s, 0, 2 * M_PI);
  wv->amp = amp * uniform(s, 0.3, 1.0);
}

static void make_ellipse(uint64_t *s, ellipse *e, const image_spec *im,
                         double min_r, double max_r) {
  double side = im->w < im->h ? im->w : im->h;
  e->cx = uniform(s, 0, im->w);
  e->cy = uniform(s, 0, im->h);
  e->rx = uniform(s, min_r, max_r) * side;
  e->ry = uniform(s, min_r, max_r) * side;
  e->edge = uniform(s, 0.8, 6.0);
  for (int c = 0; c < 4; c++) e->add[c] = uniform(s, -60, 60);
}

static void make_spec(const options *o, unsigned k, image_spec *im) {
  static const unsigned kinds[10] = {3, 3, 4, 3, 3, 1, 3, 3, 4, 3};
  uint64_t s = o->seed * UINT64_C(0xD1B54A32D192ED03) ^ (k + 1);
  memset(im, 0, sizeof *im);
  im->index = k;
  im->key = splitmix(&s);
  im->w = between(&s, o->min_w, o->max_w);
  im->h = between(&s, o->min_h, o->max_h);
  im->channels = kinds[k % 10];
  static const double noise_levels[3] = {3.0, 4.5, 6.5};
  im->noise = noise_levels[splitmix(&s) % 3];
  for (int c = 0; c < 3; c++) {
    im->base[c] = uniform(&s, 70, 170);
    im->grad[c] = uniform(&s, -50, 50);
    for (int j = 0; j < NCHROMA; j++)
      make_wave(&s, &im->chroma[c][j], im, 3.0, 18);
  }
  for (int j = 0; j < NWAVES; j++)
    make_wave(&s, &im->luma[j], im, j < 2 ? 2.0 : j < 6 ? 9.0 : 60.0,
              j < 2 ? 45 : j < 6 ? 14 : 7);
  for (int j = 0; j < NOBJECTS; j++)
    make_ellipse(&s, &im->obj[j], im, 0.03, 0.25);
  if (im->channels == 4) {
    im->cutout = splitmix(&s) & 1;
    im->nholes = im->cutout ? 1 : NHOLES;
    for (unsigned j = 0; j < im->nholes; j++)
      make_ellipse(&s, &im->hole[j], im, im->cutout ? 0.3 : 0.05,
                   im->cutout ? 0.45 : 0.18);
    if (im->cutout) im->hole[0].cx = im->w / 2.0, im->hole[0].cy = im->h / 2.0;
  }
}

/* Tabulates every wave along x. @return false when out of memory. */
static bool tabulate(wave *wv, unsigned w) {
  wv->sx = malloc(2 * (size_t)w * sizeof *wv->sx);
  if (!wv->sx) return false;
  wv->cx = wv->sx + w;
  for (unsigned x = 0; x < w; x++) {
    double a = wv->fx * x + wv->phase;
    wv->sx[x] = (float)(wv->amp * sin(a));
    wv->cx[x] = (float)(wv->amp * cos(a));
  }
  return true;
}

static void free_tables(image_spec *im) {
  for (int j = 0; j < NWAVES; j++) free(im->luma[j].sx);
  for (int c = 0; c < 3; c++)
    for (int j = 0; j < NCHROMA; j++) free(im->chroma[c][j].sx);
}

static bool tabulate_all(image_spec *im) {
  bool ok = true;
  for (int j = 0; j < NWAVES; j++) ok &= tabulate(&im->luma[j], im->w);
  for (int c = 0; c < 3; c++)
    for (int j = 0; j < NCHROMA; j++) ok &= tabulate(&im->chroma[c][j], im->w);
  return ok;
}

/* ---------------------------------------------------------------------- */
/* rendering                                                               */

/* Adds the waves at row y to acc[0..w). */
static void add_waves(const wave *wv, int n, unsigned y, unsigned w,
                      float *acc) {
  for (int j = 0; j < n; j++) {
    float sy = (float)sin(wv[j].fy * y), cy = (float)cos(wv[j].fy * y);
    const float *sx = wv[j].sx, *cx = wv[j].cx;
    for (unsigned x = 0; x < w; x++) acc[x] += sx[x] * cy + cx[x] * sy;
  }
}

/* The columns [*x0, *x1) of row y that ellipse e (with its soft edge)
 * touches, and its half width *half there. @return false when the row
 * misses it. */
static bool ellipse_span(const ellipse *e, unsigned y, unsigned w,
                         unsigned *x0, unsigned *x1, double *half) {
  double dy = (y + 0.5 - e->cy) / (e->ry + e->edge);
  if (dy <= -1 || dy >= 1) return false;
  double in = 1 - ((y + 0.5 - e->cy) / e->ry) * ((y + 0.5 - e->cy) / e->ry);
  *half = in > 0 ? e->rx * sqrt(in) : 0;
  double lo = e->cx - *half - e->edge, hi = e->cx + *half + e->edge;
  if (hi < 0 || lo >= w) return false;
  *x0 = lo < 0 ? 0 : (unsigned)lo;
  *x1 = hi >= w ? w : (unsigned)hi + 1;
  return *x0 < *x1;
}

static double coverage(const ellipse *e, double half, unsigned x) {
  double t = (half - fabs(x + 0.5 - e->cx)) / e->edge + 0.5;
  return t < 0 ? 0 : t > 1 ? 1 : t;
}

static void add_objects(const image_spec *im, unsigned y, int c, float *acc) {
  for (int j = 0; j < NOBJECTS; j++) {
    const ellipse *e = &im->obj[j];
    unsigned x0, x1;
    double half;
    if (!ellipse_span(e, y, im->w, &x0, &x1, &half)) continue;
    for (unsigned x = x0; x < x1; x++)
      acc[x] += (float)(e->add[c] * coverage(e, half, x));
  }
}

/* Alpha of row y into alpha[0..w) (0..1). */
static void alpha_row(const image_spec *im, unsigned y, float *alpha) {
  for (unsigned x = 0; x < im->w; x++) alpha[x] = im->cutout ? 0.0f : 1.0f;
  for (unsigned j = 0; j < im->nholes; j++) {
    const ellipse *e = &im->hole[j];
    unsigned x0, x1;
    double half;
    if (!ellipse_span(e, y, im->w, &x0, &x1, &half)) continue;
    for (unsigned x = x0; x < x1; x++) {
      float cov = (float)coverage(e, half, x);
      alpha[x] = im->cutout ? (cov > alpha[x] ? cov : alpha[x])
                            : (1 - cov < alpha[x] ? 1 - cov : alpha[x]);
    }
  }
}

/* Approximately normal noise, unit variance: four 16-bit uniforms. */
static float noise(uint64_t *s) {
  uint64_t r = splitmix(s);
  double sum = (double)(r & 0xffff) + (double)((r >> 16) & 0xffff) +
               (double)((r >> 32) & 0xffff) + (double)(r >> 48);
  return (float)((sum / 65535.0 - 2.0) * 1.7320508);
}

static uint8_t clamp8(float v) {
  return v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)(v + 0.5f);
}

/* Renders row y into out (channels interleaved). `tmp` has 5 * w floats. */
static void render_row(const image_spec *im, unsigned y, float *tmp,
                       uint8_t *out) {
  unsigned w = im->w, nc = im->channels, color = nc >= 3 ? 3 : 1;
  float *luma = tmp, *acc = tmp + w, *alpha = tmp + 2 * (size_t)w;
  uint64_t s = im->key ^ (uint64_t)(y + 1) * UINT64_C(0x9E3779B97F4A7C15);
  memset(luma, 0, w * sizeof *luma);
  add_waves(im->luma, NWAVES, y, w, luma);
  if (nc == 4) alpha_row(im, y, alpha);
  for (unsigned c = 0; c < color; c++) {
    float base = (float)(im->base[c] + im->grad[c] * ((double)y / im->h - 0.5));
    for (unsigned x = 0; x < w; x++) acc[x] = base + luma[x];
    if (color == 3) add_waves(im->chroma[c], NCHROMA, y, w, acc);
    add_objects(im, y, (int)c, acc);
    for (unsigned x = 0; x < w; x++) {
      float v = acc[x] + (float)im->noise * noise(&s);
      /* Fully transparent pixels are black, as many editors store them. */
      out[(size_t)x * nc + c] = nc == 4 && alpha[x] == 0 ? 0 : clamp8(v);
    }
  }
  if (nc == 4)
    for (unsigned x = 0; x < w; x++)
      out[(size_t)x * nc + 3] = clamp8(alpha[x] * 255.0f);
}

/* ---------------------------------------------------------------------- */
/* output                                                                  */

static const char *subdir_of(unsigned k) {
  static const char *const dirs[3] = {"", "set1/", "set2/deep/"};
  return dirs[k % 3];
}

/* Creates `path` and its parents. @return 0 or -1 (errno set). */
static int mkdir_p(const char *path) {
  char buf[4096];
  size_t n = strlen(path);
  if (n >= sizeof buf) return errno = ENAMETOOLONG, -1;
  memcpy(buf, path, n + 1);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(buf, 0777) < 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  return mkdir(buf, 0777) < 0 && errno != EEXIST ? -1 : 0;
}

/* Writes rows with libpng; errors longjmp back here. @return 0 or -1. */
static int write_png(FILE *f, const image_spec *im, uint8_t *const *rows) {
  static const int types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GA,
                               PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGBA};
  png_structp png =
      png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (!info) {
    png_destroy_write_struct(&png, NULL);
    return -1;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return -1;
  }
  png_init_io(png, f);
  png_set_compression_level(png, 6);
  png_set_IHDR(png, info, im->w, im->h, 8, types[im->channels],
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  png_write_image(png, (png_bytepp)rows);
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  return 0;
}

/* Renders and writes image k (via a temporary, renamed when complete).
 * @return its file size, or -1 after printing why. */
static long long make_one(const options *o, unsigned k) {
  image_spec im;
  make_spec(o, k, &im);
  size_t rowbytes = (size_t)im.w * im.channels;
  uint8_t *pix = malloc(rowbytes * im.h);
  uint8_t **rows = malloc(im.h * sizeof *rows);
  float *tmp = malloc(5 * (size_t)im.w * sizeof *tmp);
  char dir[4096], path[4200], tmpname[4300];
  long long size = -1;
  snprintf(dir, sizeof dir, "%s/%s", o->dir, subdir_of(k));
  snprintf(path, sizeof path, "%simg-%05u.png", dir, k);
  snprintf(tmpname, sizeof tmpname, "%s.tmp", path);
  if (pix && rows && tmp && tabulate_all(&im) && mkdir_p(dir) == 0) {
    for (unsigned y = 0; y < im.h; y++) {
      rows[y] = pix + y * rowbytes;
      render_row(&im, y, tmp, rows[y]);
    }
    FILE *f = fopen(tmpname, "wb");
    int rc = f ? write_png(f, &im, rows) : -1;
    if (f && fclose(f) != 0) rc = -1;
    struct stat st;
    if (rc == 0 && rename(tmpname, path) == 0 && stat(path, &st) == 0)
      size = (long long)st.st_size;
    else
      remove(tmpname);
  }
  if (size < 0) fprintf(stderr, "make_images: cannot write %s: %s\n", path,
                        errno ? strerror(errno) : "libpng error");
  free_tables(&im);
  free(tmp);
  free(rows);
  free(pix);
  return size;
}

/* ---------------------------------------------------------------------- */
/* command line                                                            */

static int usage(void) {
  fprintf(stderr,
          "usage: make_images DIR COUNT [--min WxH] [--max WxH] [--seed N]\n"
          "Writes COUNT deterministic photo-like PNGs (70%% RGB, 20%% RGBA\n"
          "with transparent regions, 10%% gray; zlib level 6) under DIR,\n"
          "spread over DIR, DIR/set1 and DIR/set2/deep.\n"
          "Defaults: --min 640x480 --max 1600x1200 --seed 1\n");
  return 2;
}

static bool parse_wxh(const char *s, unsigned *w, unsigned *h) {
  char *end;
  unsigned long a = strtoul(s, &end, 10);
  if (end == s || (*end != 'x' && *end != 'X')) return false;
  const char *t = end + 1;
  unsigned long b = strtoul(t, &end, 10);
  if (end == t || *end || a == 0 || b == 0 || a > 65535 || b > 65535)
    return false;
  *w = (unsigned)a;
  *h = (unsigned)b;
  return true;
}

static bool parse_args(int argc, char **argv, options *o) {
  *o = (options){NULL, 0, 640, 480, 1600, 1200, 1};
  if (argc < 3) return false;
  o->dir = argv[1];
  char *end;
  unsigned long n = strtoul(argv[2], &end, 10);
  if (*end || end == argv[2] || n > 1000000) return false;
  o->count = (unsigned)n;
  for (int i = 3; i < argc; i++) {
    if (i + 1 >= argc) return false;
    const char *opt = argv[i], *val = argv[++i];
    if (strcmp(opt, "--min") == 0 && parse_wxh(val, &o->min_w, &o->min_h)) {
    } else if (strcmp(opt, "--max") == 0 &&
               parse_wxh(val, &o->max_w, &o->max_h)) {
    } else if (strcmp(opt, "--seed") == 0) {
      o->seed = strtoull(val, &end, 10);
      if (*end || end == val) return false;
    } else {
      return false;
    }
  }
  return o->min_w <= o->max_w && o->min_h <= o->max_h;
}

int main(int argc, char **argv) {
  options o;
  if (!parse_args(argc, argv, &o)) return usage();
  if (mkdir_p(o.dir) < 0) {
    fprintf(stderr, "make_images: %s: %s\n", o.dir, strerror(errno));
    return 1;
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  long long total = 0;
  int failed = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : total, failed)
  for (unsigned k = 0; k < o.count; k++) {
    long long size = make_one(&o, k);
    if (size < 0) failed++;
    else total += size;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double secs = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf("make_images: %u images, %.1f MB in %s (%.1f s)\n",
         o.count - (unsigned)failed, total / 1e6, o.dir, secs);
  return failed ? 1 : 0;
}
