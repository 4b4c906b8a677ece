/*
 * test_resize.c -- the `resize` stage and its resampling core.
 *
 * unit:        output geometry (Pillow's thumbnail rounding, width/height,
 *              exact, scale, 1-pixel minimum), parameter errors reported at
 *              parse time, contribution tables (weights sum to 1, windows
 *              move monotonically, known weights), each pass against a
 *              naive double-precision sum, load/store round trips, whole
 *              images of random shapes against a direct 2-D sum, constant
 *              images staying constant for every filter/depth/channel count
 *              and pass order, mirror symmetry (no half-pixel shift),
 *              16-bit staying 16-bit, same-size items passing through
 *              uncopied, parallel results equal to one-thread results.
 * alpha:       a transparent red region next to opaque green leaves no red
 *              in any visible output pixel (and the same check does see red
 *              when the kernels are told to filter straight alpha).
 * conformance: PSNR against Pillow (Debian's /usr/bin/python3 with
 *              python3-pil and python3-numpy), through the stage as users
 *              run it; thumbnail sizes against Pillow's Image.thumbnail.
 *
 * Images are generated deterministically ("photo-like": smooth fields,
 * hard-edged blocks and noise). Pillow gets them as raw files in a mkdtemp()
 * directory and answers with raw files, so no image library is needed.
 */
#include "test.h"
#include "sluice.h"
#include "sluice_stages.h"

#include "../stages/resize_internal.h"

#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

/* ======================================================================
 * Images
 * ====================================================================== */

typedef struct img {
  sl__rs_image im; /* im.data is malloc'd, owned */
} img;

static img img_new(uint32_t w, uint32_t h, unsigned C, unsigned depth) {
  img r;
  size_t stride = (size_t)w * C * depth / 8;
  r.im.d = (sl_image_desc){w, h, C, depth, stride};
  r.im.data = calloc(stride * h + 1, 1);
  ASSERT(r.im.data);
  return r;
}
static void img_free(img *r) { free(r->im.data); }
static uint8_t *px8(const img *r, uint32_t x, uint32_t y) {
  return (uint8_t *)r->im.data + y * r->im.d.stride + (size_t)x * r->im.d.channels;
}
static uint16_t *px16(const img *r, uint32_t x, uint32_t y) {
  return (uint16_t *)(void *)((uint8_t *)r->im.data + y * r->im.d.stride) +
         (size_t)x * r->im.d.channels;
}
static unsigned sample(const img *r, uint32_t x, uint32_t y, unsigned c) {
  return r->im.d.depth == 8 ? px8(r, x, y)[c] : px16(r, x, y)[c];
}

static uint32_t lcg(uint32_t *s) {
  *s = *s * 1664525u + 1013904223u;
  return *s >> 8;
}

/* Photo-like pixels: per colour channel a product of smooth waves plus a
 * diagonal wave, blocks with hard edges, and noise; alpha (last of 2 or 4
 * channels) is a smooth field clipped so that it has fully transparent and
 * fully opaque regions. The waves are tabulated per row and column (the
 * generator runs for every test image, also in Debug builds). */
typedef struct photo {
  uint32_t w, h, noise;
  double *wx, *wy, *wd; /* [c][x], [c][y], [c][x + 2y] */
} photo;

static photo photo_new(uint32_t w, uint32_t h, unsigned C, uint32_t seed) {
  photo p = {w, h, 0, NULL, NULL, NULL};
  uint32_t s = seed * 2654435761u + 1;
  double fx[4], fy[4], ph[4];
  for (int k = 0; k < 4; k++) {
    fx[k] = (lcg(&s) % 1000) / 1000.0 * 0.02 + 0.002;
    fy[k] = (lcg(&s) % 1000) / 1000.0 * 0.02 + 0.002;
    ph[k] = (lcg(&s) % 628) / 100.0;
  }
  p.noise = s;
  size_t nd = (size_t)w + 2 * h;
  p.wx = malloc(sizeof(double) * C * w);
  p.wy = malloc(sizeof(double) * C * h);
  p.wd = malloc(sizeof(double) * C * nd);
  ASSERT(p.wx && p.wy && p.wd);
  for (unsigned c = 0; c < C; c++) {
    bool alpha = c == C - 1 && (C == 2 || C == 4);
    unsigned k = alpha ? 3 : c % 3;
    for (uint32_t x = 0; x < w; x++) p.wx[c * w + x] = sin(x * fx[k] + ph[k] + (alpha ? 0 : c));
    for (uint32_t y = 0; y < h; y++) p.wy[c * h + y] = cos(y * fy[k] - (alpha ? 0 : c));
    for (size_t d = 0; d < nd; d++) p.wd[c * nd + d] = sin(d * 0.013 * (c + 1));
  }
  return p;
}

static void photo_free(photo *p) { free(p->wx), free(p->wy), free(p->wd); }

/* Sample (x, y, c) scaled to 0..1. */
static double photo_at(photo *p, uint32_t x, uint32_t y, unsigned c, unsigned C) {
  double v, wave = p->wx[c * p->w + x] * p->wy[c * p->h + y];
  if (c == C - 1 && (C == 2 || C == 4)) {
    v = (128 + 127 * wave) * 1.6 - 60;
  } else {
    v = 120 + 50 * wave + 30 * p->wd[c * ((size_t)p->w + 2 * p->h) + x + 2 * y];
    if ((x / 97 + y / 71) % 5 == 0) v += 40;
    v += (double)(lcg(&p->noise) % 25) - 12;
  }
  v = v < 0 ? 0 : v > 255 ? 255 : v;
  return v / 255.0;
}

/* Fills rows of any stride; 16-bit images get fine noise below 1/255 so
 * that all 16 bits carry information. */
static void fill_photo(void *data, size_t stride, uint32_t w, uint32_t h,
                       unsigned C, unsigned depth, uint32_t seed) {
  photo p = photo_new(w, h, C, seed);
  for (uint32_t y = 0; y < h; y++) {
    unsigned char *row = (unsigned char *)data + y * stride;
    for (uint32_t x = 0; x < w; x++)
      for (unsigned c = 0; c < C; c++) {
        double v = photo_at(&p, x, y, c, C);
        if (depth == 8) {
          row[(size_t)x * C + c] = (uint8_t)(v * 255 + 0.5);
        } else {
          double f = v * 65535 + (double)(lcg(&p.noise) % 200) - 100;
          f = f < 0 ? 0 : f > 65535 ? 65535 : f;
          ((uint16_t *)(void *)row)[(size_t)x * C + c] = (uint16_t)(f + 0.5);
        }
      }
  }
  photo_free(&p);
}

static img photo_img(uint32_t w, uint32_t h, unsigned C, unsigned depth,
                     uint32_t seed) {
  img r = img_new(w, h, C, depth);
  fill_photo(r.im.data, r.im.d.stride, w, h, C, depth, seed);
  return r;
}

static img resize_img(const img *src, uint32_t ow, uint32_t oh,
                      sl__rs_options opt) {
  img d = img_new(ow, oh, src->im.d.channels, src->im.d.depth);
  ASSERT_OK(sl__rs_resize(NULL, &src->im, &d.im, &opt));
  return d;
}

static sl__rs_options opts(sl__rs_filter f, double gap, sl__rs_order order) {
  sl__rs_options o = {f, gap, order, false};
  return o;
}

/* ======================================================================
 * Geometry
 * ====================================================================== */

static void geo_is(sl__rs_geometry g, uint32_t in_w, uint32_t in_h,
                   uint32_t want_w, uint32_t want_h) {
  uint32_t w = 0, h = 0;
  ASSERT_OK(sl__rs_geometry_apply(&g, in_w, in_h, &w, &h));
  if (w != want_w || h != want_h)
    SL__FAIL("mode %d %ux%u on %ux%u: got %ux%u, want %ux%u", (int)g.mode,
             g.w, g.h, in_w, in_h, w, h, want_w, want_h);
}

static sl__rs_geometry fit(uint32_t w, uint32_t h, bool enlarge) {
  sl__rs_geometry g = {SL__RS_FIT, w, h, 0, enlarge};
  return g;
}

TEST(geometry_fit) {
  geo_is(fit(256, 256, false), 1200, 900, 256, 192);  /* landscape */
  geo_is(fit(256, 256, false), 900, 1200, 192, 256);  /* portrait */
  geo_is(fit(256, 256, false), 4000, 3000, 256, 192);
  geo_is(fit(256, 256, false), 1920, 1080, 256, 144);
  geo_is(fit(256, 256, false), 1000, 333, 256, 85);   /* 85.248 */
  geo_is(fit(256, 256, false), 1000, 335, 256, 86);   /* 85.76 */
  geo_is(fit(100, 50, false), 400, 400, 50, 50);      /* height limits */
  geo_is(fit(256, 256, false), 100, 80, 100, 80);     /* never enlarges */
  geo_is(fit(256, 256, false), 256, 256, 256, 256);
  geo_is(fit(256, 100, false), 200, 150, 133, 100);   /* one side too big */
  geo_is(fit(256, 256, true), 100, 80, 256, 205);     /* 204.8 */
  geo_is(fit(256, 256, true), 80, 100, 205, 256);
  geo_is(fit(256, 256, false), 10000, 1, 256, 1);     /* 1-pixel minimum */
  geo_is(fit(256, 256, false), 1, 10000, 1, 256);
  geo_is(fit(1, 1, false), 5000, 3000, 1, 1);
}

TEST(geometry_other_modes) {
  sl__rs_geometry g = {SL__RS_WIDTH, 100, 0, 0, false};
  geo_is(g, 1200, 900, 100, 75);
  geo_is(g, 50, 50, 100, 100); /* width= gives the width asked for */
  geo_is(g, 100000, 3, 100, 1);
  g = (sl__rs_geometry){SL__RS_HEIGHT, 0, 90, 0, false};
  geo_is(g, 1200, 900, 120, 90);
  geo_is(g, 3, 100000, 1, 90);
  g = (sl__rs_geometry){SL__RS_EXACT, 33, 44, 0, false};
  geo_is(g, 1200, 900, 33, 44);
  g = (sl__rs_geometry){SL__RS_SCALE, 0, 0, 0.5, false};
  geo_is(g, 1201, 901, 601, 451); /* 600.5 rounds up */
  geo_is(g, 1, 1, 1, 1);
  g.scale = 0.001;
  geo_is(g, 100, 3000, 1, 3);
  g.scale = 2.5;
  geo_is(g, 3, 4, 8, 10);
  g.scale = 1000;
  uint32_t w, h;
  ASSERT_EQ(sl__rs_geometry_apply(&g, 5000, 10, &w, &h), SL_ERANGE);
}

TEST(parse_wxh) {
  uint32_t w, h;
  ASSERT_OK(sl__rs_parse_wxh("256x192", &w, &h));
  ASSERT_EQ(w, 256);
  ASSERT_EQ(h, 192);
  ASSERT_OK(sl__rs_parse_wxh("1x1048576", &w, &h));
  const char *bad[] = {"256", "x256", "256x", "256X256", " 256x256", "256x256 ",
                       "-1x5", "+1x5", "1.5x2", "axb", "", "256x256x3"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (sl__rs_parse_wxh(bad[i], &w, &h) != SL_EINVAL) SL__FAIL("accepted '%s'", bad[i]);
  ASSERT_EQ(sl__rs_parse_wxh("0x5", &w, &h), SL_ERANGE);
  ASSERT_EQ(sl__rs_parse_wxh("5x1048577", &w, &h), SL_ERANGE);
  ASSERT_EQ(sl__rs_parse_wxh("99999999999999999999x5", &w, &h), SL_ERANGE);
}

/* ======================================================================
 * Pipelines: a test image source and a grabbing sink
 * ====================================================================== */

#define GRAB_MAX 8

typedef struct grabbed {
  sl_image_desc d;
  uint8_t *px;      /* tight copy of the pixels, malloc'd */
  const void *data; /* where the payload was (pass-through check) */
} grabbed;

static struct {
  grabbed out[GRAB_MAX];
  size_t nout;
  const void *src_data[GRAB_MAX];
  uint8_t *src0; /* tight copy of the first source image */
} g;

static void grab_reset(void) {
  for (size_t i = 0; i < g.nout; i++) free(g.out[i].px);
  free(g.src0);
  memset(&g, 0, sizeof g);
}

typedef struct timg_params {
  int64_t count, width, height, channels, depth, seed;
} timg_params;

typedef struct timg_state {
  int64_t next;
} timg_state;

static int timg_open(sl_worker *w, void **local) {
  (void)w;
  *local = calloc(1, sizeof(timg_state));
  return *local ? 0 : SL_ENOMEM;
}
static void timg_close(sl_worker *w) { free(sl_worker_local(w)); }

/* Rows are padded (stride > row bytes) to check that stride is honoured. */
static size_t timg_stride(const timg_params *p) {
  return (size_t)(p->width * p->channels * p->depth / 8) + 16;
}

static int timg_produce(sl_worker *w, sl_item **out) {
  const timg_params *p = sl_worker_params(w);
  timg_state *s = sl_worker_local(w);
  if (s->next >= p->count) return SL_DONE;
  char name[32];
  snprintf(name, sizeof name, "img-%lld", (long long)s->next);
  sl_item *it = sl_item_create((uint64_t)s->next, name);
  ASSERT(it);
  size_t stride = timg_stride(p), size = stride * (size_t)p->height;
  sl_block *b;
  int rc = sl_worker_alloc(w, size, &b);
  if (rc < 0) {
    sl_item_destroy(it);
    return rc;
  }
  fill_photo(sl_block_data(b), stride, (uint32_t)p->width, (uint32_t)p->height,
             (unsigned)p->channels, (unsigned)p->depth, (uint32_t)(p->seed + s->next));
  sl_item_set_block(it, SL_KIND_IMAGE, b, 0, size);
  it->payload.u.image = (sl_image_desc){(uint32_t)p->width, (uint32_t)p->height,
                                        (uint32_t)p->channels, (uint32_t)p->depth, stride};
  if (s->next < GRAB_MAX) g.src_data[s->next] = it->payload.data;
  if (s->next == 0) { /* for the Pillow reference */
    size_t row = stride - 16;
    ASSERT((g.src0 = malloc(row * (size_t)p->height)));
    for (int64_t y = 0; y < p->height; y++)
      memcpy(g.src0 + y * row, (uint8_t *)sl_block_data(b) + y * stride, row);
  }
  s->next++;
  *out = it;
  return 0;
}

static const sl_param_def timg_table[] = {
    {"count", SL_PARAM_INT, offsetof(timg_params, count), "1", 0, GRAB_MAX, NULL, "items"},
    {"width", SL_PARAM_INT, offsetof(timg_params, width), "64", 1, 1e5, NULL, "w"},
    {"height", SL_PARAM_INT, offsetof(timg_params, height), "48", 1, 1e5, NULL, "h"},
    {"channels", SL_PARAM_INT, offsetof(timg_params, channels), "3", 1, 4, NULL, "c"},
    {"depth", SL_PARAM_INT, offsetof(timg_params, depth), "8", 8, 16, NULL, "8|16"},
    {"seed", SL_PARAM_INT, offsetof(timg_params, seed), "1", 0, 1e9, NULL, "seed"},
    SL_PARAM_END};

static const sl_stage_def t_img = {
    .name = "t.img", .summary = "test images", .exec = SL_EXEC_SERIAL,
    .in_kind = SL_KIND_NONE, .out_kind = SL_KIND_IMAGE, .flags = SL_STAGE_SOURCE,
    .params = timg_table, .params_size = sizeof(timg_params),
    .open = timg_open, .produce = timg_produce, .close = timg_close};

/* Keeps a tight copy of every image (by seq) for the test to inspect. */
static int tgrab_process(sl_worker *w, sl_item *in, sl_item **out) {
  (void)w;
  *out = NULL;
  ASSERT(in->seq < GRAB_MAX);
  ASSERT_EQ(in->payload.kind, SL_KIND_IMAGE);
  grabbed *o = &g.out[in->seq];
  o->d = in->payload.u.image;
  o->data = in->payload.data;
  size_t row = (size_t)o->d.width * o->d.channels * o->d.depth / 8;
  o->px = malloc(row * o->d.height);
  ASSERT(o->px);
  for (uint32_t y = 0; y < o->d.height; y++)
    memcpy(o->px + y * row, (const uint8_t *)in->payload.data + y * o->d.stride, row);
  if (in->seq + 1 > g.nout) g.nout = (size_t)in->seq + 1;
  return 0;
}

static const sl_stage_def t_grab = {
    .name = "t.grab", .summary = "test sink", .exec = SL_EXEC_SERIAL,
    .in_kind = SL_KIND_IMAGE, .out_kind = SL_KIND_NONE, .flags = SL_STAGE_SINK,
    .process = tgrab_process};

static sl_registry *test_registry(void) {
  sl_registry *reg;
  ASSERT_OK(sl_registry_create(&reg));
  ASSERT_OK(sl_stages_register_all(reg));
  ASSERT_OK(sl_registry_add(reg, &t_img));
  ASSERT_OK(sl_registry_add(reg, &t_grab));
  return reg;
}

/* Parses `text`; @return the parse result, errors copied into err. */
static int parse_only(const char *text, char *err, size_t errsz) {
  sl_registry *reg = test_registry();
  sl_pipeline *p;
  ASSERT_OK(sl_pipeline_create(&p, reg));
  int rc = sl_pipeline_parse(p, "t.pipe", text, strlen(text), NULL, 0);
  snprintf(err, errsz, "%s", sl_pipeline_errors(p));
  sl_pipeline_destroy(p);
  sl_registry_destroy(reg);
  return rc;
}

/* Parses and runs `text` on `threads` cores; outputs land in g.out. */
static void run_pipe(const char *text, unsigned threads) {
  grab_reset();
  sl_registry *reg = test_registry();
  sl_pipeline *p;
  ASSERT_OK(sl_pipeline_create(&p, reg));
  if (sl_pipeline_parse(p, "t.pipe", text, strlen(text), NULL, 0) < 0)
    SL__FAIL("pipeline '%s' rejected:\n%s", text, sl_pipeline_errors(p));
  sl_run_options opt;
  sl_run_options_init(&opt);
  opt.threads = threads;
  opt.progress = SL_PROGRESS_OFF;
  sl_run *run;
  ASSERT_OK(sl_run_create(&run, p, &opt));
  int rc = sl_run_execute(run);
  if (rc != 0) {
    const char *item = "", *stage = "", *msg = "";
    if (sl_run_failure_count(run)) sl_run_failure(run, 0, &item, &stage, &msg);
    SL__FAIL("run of '%s': %s (%s); %s: %s: %s", text, sl_strerror(rc),
             sl_run_error(run), item, stage, msg);
  }
  sl_run_destroy(run);
  sl_pipeline_destroy(p);
  sl_registry_destroy(reg);
}

static void rejects(const char *resize_args, const char *message) {
  char text[512], err[4096];
  snprintf(text, sizeof text, "t.img ! resize %s ! t.grab", resize_args);
  ASSERT_EQ(parse_only(text, err, sizeof err), SL_EPARSE);
  ASSERT_CONTAINS(err, message);
}

TEST(params_rejected_at_parse_time) {
  char err[4096];
  ASSERT_EQ(parse_only("t.img ! resize fit=256 ! t.grab", err, sizeof err), SL_EPARSE);
  ASSERT_CONTAINS(err, "t.pipe:1:9: stage 'resize': fit: '256' is not WIDTHxHEIGHT");
  rejects("", "stage 'resize': give one of fit=, width=/height=, size=, scale=");
  rejects("filter=box", "give one of fit=, width=/height=, size=, scale=");
  rejects("fit=10x10 scale=2",
          "give only one of fit=, width=/height=, size=, scale= (got fit= scale=)");
  rejects("width=10 size=5x5", "(got width=/height= size=)");
  rejects("size=256x", "stage 'resize': size: '256x' is not WIDTHxHEIGHT");
  rejects("fit=x256", "fit: 'x256' is not WIDTHxHEIGHT");
  rejects("fit=' 256x256'", "fit: ' 256x256' is not WIDTHxHEIGHT");
  rejects("fit=0x256", "fit: '0x256': each side must be 1..1048576");
  rejects("size=2000000x1", "size: '2000000x1': each side must be 1..1048576");
  rejects("width=100 enlarge=true", "enlarge= applies to fit= only");
  rejects("fit=8x8 reducing_gap=0.5", "reducing_gap: must be 0 (off) or at least 1");
  rejects("fit=8x8 filter=cubic", "filter");
  rejects("scale=-1", "scale");
  /* and the good ones parse */
  const char *good[] = {"fit=256x256", "fit=1x1 enlarge=true", "width=100",
                        "height=100", "width=10 height=20", "size=7x9", "scale=0.5",
                        "fit=8x8 filter=nearest reducing_gap=0", "scale=2 filter=box"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    char text[256];
    snprintf(text, sizeof text, "t.img ! resize %s ! t.grab", good[i]);
    if (parse_only(text, err, sizeof err) != 0) SL__FAIL("'%s' rejected: %s", good[i], err);
  }
}

TEST(stage_output_sizes) {
  struct { const char *args; uint32_t w, h; } cases[] = {
      {"fit=256x256", 256, 192}, {"fit=2000x2000", 320, 240},
      {"fit=1000x1000 enlarge=true", 1000, 750}, {"width=100", 100, 75},
      {"height=100", 133, 100}, {"width=30 height=40", 30, 40},
      {"size=1x1", 1, 1}, {"scale=0.25", 80, 60}, {"fit=5000x1", 1, 1}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char text[256];
    snprintf(text, sizeof text,
             "t.img width=320 height=240 count=2 ! resize %s ! t.grab", cases[i].args);
    run_pipe(text, 2);
    ASSERT_EQ(g.nout, 2);
    for (size_t k = 0; k < 2; k++) {
      if (g.out[k].d.width != cases[i].w || g.out[k].d.height != cases[i].h)
        SL__FAIL("%s: got %ux%u, want %ux%u", cases[i].args, g.out[k].d.width,
                 g.out[k].d.height, cases[i].w, cases[i].h);
      ASSERT_EQ(g.out[k].d.channels, 3);
      ASSERT_EQ(g.out[k].d.depth, 8);
    }
  }
  grab_reset();
}

TEST(same_size_passes_through) {
  const char *args[] = {"fit=2000x2000", "size=300x200", "width=300", "scale=1",
                        "fit=300x200 filter=nearest"};
  for (size_t i = 0; i < sizeof args / sizeof args[0]; i++) {
    char text[256];
    snprintf(text, sizeof text, "t.img width=300 height=200 count=2 ! resize %s ! t.grab",
             args[i]);
    run_pipe(text, 2);
    for (size_t k = 0; k < 2; k++)
      if (g.out[k].data != g.src_data[k] || g.out[k].d.stride != 300 * 3 + 16)
        SL__FAIL("%s: item %zu was copied", args[i], k);
  }
  run_pipe("t.img width=300 height=200 ! resize size=300x199 ! t.grab", 1);
  ASSERT(g.out[0].data != g.src_data[0]);
  grab_reset();
}

TEST(sixteen_bit_stays_sixteen_bit) {
  run_pipe("t.img width=400 height=300 channels=4 depth=16 ! resize fit=100x100 ! t.grab", 2);
  ASSERT_EQ(g.out[0].d.depth, 16);
  ASSERT_EQ(g.out[0].d.channels, 4);
  ASSERT_EQ(g.out[0].d.width, 100);
  ASSERT_EQ(g.out[0].d.height, 75);
  ASSERT_EQ(g.out[0].d.stride, 100 * 4 * 2);
  /* The 16-bit result tracks the 8-bit one (same picture, 257x the scale)
   * yet uses the low byte: it is not an 8-bit result widened. */
  for (unsigned C = 1; C <= 4; C++) {
    img a8 = photo_img(400, 300, C, 8, 5), a16 = img_new(400, 300, C, 16);
    for (uint32_t y = 0; y < 300; y++)
      for (uint32_t x = 0; x < 400; x++)
        for (unsigned c = 0; c < C; c++) px16(&a16, x, y)[c] = (uint16_t)(px8(&a8, x, y)[c] * 257);
    img o8 = resize_img(&a8, 100, 75, opts(SL__RS_LANCZOS3, 2, SL__RS_ORDER_AUTO));
    img o16 = resize_img(&a16, 100, 75, opts(SL__RS_LANCZOS3, 2, SL__RS_ORDER_AUTO));
    unsigned low_bits = 0;
    for (uint32_t y = 0; y < 75; y++)
      for (uint32_t x = 0; x < 100; x++)
        for (unsigned c = 0; c < C; c++) {
          double v16 = px16(&o16, x, y)[c], v8 = px8(&o8, x, y)[c];
          bool visible = !(C == 2 || C == 4) || px8(&o8, x, y)[C - 1] >= 16;
          if (visible && fabs(v16 / 257.0 - v8) > 1.01)
            SL__FAIL("C=%u (%u,%u,%u): 16-bit %g vs 8-bit %g", C, x, y, c, v16, v8);
          low_bits += px16(&o16, x, y)[c] % 257 != 0;
        }
    ASSERT(low_bits > 100);
    img_free(&a8), img_free(&a16), img_free(&o8), img_free(&o16);
  }
  grab_reset();
}

/* Large items are split across cores with sl_parallel_for; rows are
 * computed the same way whichever thread runs them. */
TEST(parallel_equals_serial) {
  const char *args[] = {"size=700x500 reducing_gap=0", "fit=256x256",
                        "size=200x900 filter=bicubic", "scale=1.3 filter=bilinear",
                        "fit=400x400 filter=nearest"};
  for (size_t i = 0; i < sizeof args / sizeof args[0]; i++) {
    char text[256];
    snprintf(text, sizeof text,
             "t.img width=1000 height=800 channels=4 seed=9 ! resize %s ! t.grab", args[i]);
    run_pipe(text, 2);
    grabbed o = g.out[0];
    g.out[0].px = NULL;
    run_pipe(text, 1);
    ASSERT_EQ(o.d.width, g.out[0].d.width);
    ASSERT_EQ(o.d.height, g.out[0].d.height);
    size_t n = (size_t)o.d.width * o.d.height * 4;
    if (memcmp(o.px, g.out[0].px, n) != 0) SL__FAIL("%s: 2 threads differ from 1", args[i]);
    free(o.px);
  }
  grab_reset();
}

/* ======================================================================
 * Tables and passes
 * ====================================================================== */

static const sl__rs_filter smooth_filters[] = {SL__RS_BOX, SL__RS_BILINEAR,
                                               SL__RS_BICUBIC, SL__RS_LANCZOS3};
static const char *const filter_names[] = {"nearest", "box", "bilinear", "bicubic",
                                           "lanczos3"};

TEST(tables_weights_sum_to_one) {
  const uint32_t sizes[] = {1, 2, 3, 7, 10, 99, 256, 1000, 1501};
  for (size_t f = 0; f < 5; f++)
    for (size_t a = 0; a < sizeof sizes / sizeof sizes[0]; a++)
      for (size_t b = 0; b < sizeof sizes / sizeof sizes[0]; b++) {
        uint32_t in = sizes[a], out = sizes[b];
        sl__rs_table t;
        ASSERT_OK(sl__rs_table_init(&t, (sl__rs_filter)f, in, in, out));
        ASSERT_EQ(t.identity, in == out);
        uint32_t prev_first = 0, prev_end = 0;
        for (uint32_t i = 0; i < out; i++) {
          ASSERT(t.count[i] >= 1 && t.count[i] <= t.max_count && t.max_count <= t.stride);
          ASSERT_LE(t.first[i] + t.count[i], in);
          if (!(t.first[i] >= prev_first && t.first[i] + t.count[i] >= prev_end))
            SL__FAIL("%s %u->%u out %u: window [%u,+%u) after [%u,%u)", filter_names[f], in, out,
                     i, t.first[i], t.count[i], prev_first, prev_end);
          prev_first = t.first[i], prev_end = t.first[i] + t.count[i];
          double s = 0;
          for (uint32_t k = 0; k < t.stride; k++) {
            if (k >= t.count[i]) ASSERT(t.w[i * t.stride + k] == 0.0f);
            s += t.w[i * t.stride + k];
          }
          if (fabs(s - 1.0) > 1e-5)
            SL__FAIL("%s %u->%u out %u: weights sum to %.9f", filter_names[f], in, out, i, s);
        }
        /* antialiasing: a shrink widens the kernel by the scale */
        if (f == SL__RS_LANCZOS3 && in == 1000 && out == 10)
          ASSERT(t.max_count >= 590);
        if (f == SL__RS_LANCZOS3 && in == 10 && out == 1000) ASSERT_LE(t.max_count, 6);
        sl__rs_table_free(&t);
      }
}

static void weights_are(sl__rs_filter f, uint32_t in, uint32_t out, uint32_t i,
                        uint32_t first, const double *w, uint32_t n) {
  sl__rs_table t;
  ASSERT_OK(sl__rs_table_init(&t, f, in, in, out));
  ASSERT_EQ(t.first[i], first);
  ASSERT_EQ(t.count[i], n);
  for (uint32_t k = 0; k < n; k++)
    if (fabs(t.w[i * t.stride + k] - w[k]) > 1e-6)
      SL__FAIL("%s %u->%u out %u tap %u: %.7f, want %.7f", filter_names[f], in, out,
               i, k, t.w[i * t.stride + k], w[k]);
  sl__rs_table_free(&t);
}

TEST(tables_known_weights) {
  /* bilinear 4 -> 2: centre 1.0, support 2: distances 0.25, 0.25, 0.75 */
  weights_are(SL__RS_BILINEAR, 4, 2, 0, 0, (double[]){3 / 7.0, 3 / 7.0, 1 / 7.0}, 3);
  weights_are(SL__RS_BILINEAR, 4, 2, 1, 1, (double[]){1 / 7.0, 3 / 7.0, 3 / 7.0}, 3);
  /* box 9 -> 3: exact thirds */
  weights_are(SL__RS_BOX, 9, 3, 1, 3, (double[]){1 / 3.0, 1 / 3.0, 1 / 3.0}, 3);
  /* bilinear 2x upscale: source centres at 0.25 and 0.75 of a pixel */
  weights_are(SL__RS_BILINEAR, 4, 8, 3, 1, (double[]){0.75, 0.25}, 2);
  /* nearest: floor of the centre, (i + 0.5) * 2 = 2i + 1 */
  for (uint32_t i = 0; i < 5; i++) weights_are(SL__RS_NEAREST, 10, 5, i, 2 * i + 1, (double[]){1}, 1);
  /* lanczos 2:1: each centre falls between two pixels, taps are symmetric */
  sl__rs_table t;
  ASSERT_OK(sl__rs_table_init(&t, SL__RS_LANCZOS3, 200, 200, 100));
  for (uint32_t i = 3; i < 97; i++) {
    ASSERT_EQ(t.count[i], 12);
    for (uint32_t k = 0; k < t.count[i] / 2; k++)
      ASSERT(fabs(t.w[i * t.stride + k] - t.w[i * t.stride + t.count[i] - 1 - k]) < 1e-6);
  }
  sl__rs_table_free(&t);
  /* the kernels themselves */
  ASSERT(sl__rs_filter_eval(SL__RS_LANCZOS3, 0) == 1.0);
  ASSERT(fabs(sl__rs_filter_eval(SL__RS_LANCZOS3, 1)) < 1e-12);
  ASSERT(fabs(sl__rs_filter_eval(SL__RS_BICUBIC, 0.5) - 0.5625) < 1e-12);
  ASSERT(fabs(sl__rs_filter_eval(SL__RS_BICUBIC, 1.5) + 0.0625) < 1e-12);
  ASSERT(sl__rs_filter_eval(SL__RS_BOX, 0.5) == 1.0 && sl__rs_filter_eval(SL__RS_BOX, -0.5) == 0.0);
}

/* Deterministic floats in [0, 255]. */
static void random_floats(float *v, size_t n, uint32_t seed) {
  for (size_t i = 0; i < n; i++) v[i] = (float)(lcg(&seed) % 25500) / 100.0f;
}

TEST(hpass_matches_naive_sum) {
  const uint32_t pairs[][2] = {{37, 11}, {11, 37}, {100, 100}, {1, 5}, {5, 1}, {640, 17}};
  for (size_t f = 0; f < 4; f++)
    for (size_t p = 0; p < sizeof pairs / sizeof pairs[0]; p++)
      for (unsigned C = 1; C <= 4; C++) {
        uint32_t in = pairs[p][0], out = pairs[p][1];
        sl__rs_table t;
        ASSERT_OK(sl__rs_table_init(&t, smooth_filters[f], in, in, out));
        ASSERT_OK(sl__rs_table_expand(&t, C));
        float *src = calloc((size_t)in * C + SL__RS_ROW_PAD, sizeof(float));
        float *dst = malloc((size_t)out * C * sizeof(float));
        ASSERT(src && dst);
        random_floats(src, (size_t)in * C, (uint32_t)(in * 7 + C));
        sl__rs_hpass_row(&t, src, dst);
        for (uint32_t i = 0; i < out; i++)
          for (unsigned c = 0; c < C; c++) {
            double s = 0;
            for (uint32_t k = 0; k < t.count[i]; k++)
              s += (double)t.w[i * t.stride + k] * src[(size_t)(t.first[i] + k) * C + c];
            if (fabs(s - dst[(size_t)i * C + c]) > 1e-3)
              SL__FAIL("%s %u->%u C=%u [%u,%u]: %g vs %g", filter_names[smooth_filters[f]],
                       in, out, C, i, c, dst[(size_t)i * C + c], s);
          }
        free(src), free(dst);
        sl__rs_table_free(&t);
      }
}

TEST(vpass_matches_naive_sum) {
  const uint32_t pairs[][2] = {{37, 11}, {11, 37}, {20, 20}, {1, 4}, {300, 7}};
  const size_t n = 29;
  for (size_t f = 0; f < 4; f++)
    for (size_t p = 0; p < sizeof pairs / sizeof pairs[0]; p++) {
      uint32_t in = pairs[p][0], out = pairs[p][1];
      sl__rs_table t;
      ASSERT_OK(sl__rs_table_init(&t, smooth_filters[f], in, in, out));
      float *rows = malloc(in * n * sizeof(float)), *dst = malloc(n * sizeof(float));
      ASSERT(rows && dst);
      random_floats(rows, in * n, in);
      const float **ptrs = malloc(t.max_count * sizeof *ptrs);
      ASSERT(ptrs);
      for (uint32_t i = 0; i < out; i++) {
        for (uint32_t k = 0; k < t.count[i]; k++) ptrs[k] = rows + (t.first[i] + k) * n;
        sl__rs_vpass_row(t.w + i * t.stride, t.count[i], ptrs, n, dst);
        for (size_t x = 0; x < n; x++) {
          double s = 0;
          for (uint32_t k = 0; k < t.count[i]; k++)
            s += (double)t.w[i * t.stride + k] * rows[(t.first[i] + k) * n + x];
          if (fabs(s - dst[x]) > 1e-3) SL__FAIL("%u->%u row %u x %zu: %g vs %g", in, out, i, x, dst[x], s);
        }
      }
      free(rows), free(dst), free(ptrs);
      sl__rs_table_free(&t);
    }
}

/* Premultiplying and dividing back is exact for every 8-bit colour and
 * visible alpha, and fully transparent pixels come back as colour 0. */
TEST(load_store_round_trip) {
  uint8_t src[256 * 256 * 2], back[256 * 256 * 2];
  float *f = malloc(sizeof(float) * (256 * 256 * 2 + SL__RS_ROW_PAD));
  ASSERT(f);
  for (unsigned a = 0; a < 256; a++)
    for (unsigned c = 0; c < 256; c++) src[(a * 256 + c) * 2] = (uint8_t)c, src[(a * 256 + c) * 2 + 1] = (uint8_t)a;
  sl__rs_load_row(src, 256 * 256, 2, 8, true, f);
  ASSERT(fabs(f[(200 * 256 + 100) * 2] - 100 * 200 / 255.0) < 1e-3);
  sl__rs_store_row(f, 256 * 256, 2, 8, true, back);
  for (unsigned i = 0; i < 256 * 256; i++) {
    unsigned a = src[i * 2 + 1], want = a ? src[i * 2] : 0;
    if (back[i * 2] != want || back[i * 2 + 1] != a)
      SL__FAIL("c=%u a=%u came back as c=%u a=%u", src[i * 2], a, back[i * 2], back[i * 2 + 1]);
  }
  /* 16-bit, 4 channels, a sweep of values */
  uint16_t s16[4 * 1000], b16[4 * 1000];
  uint32_t seed = 3;
  for (int i = 0; i < 4 * 1000; i++) s16[i] = (uint16_t)(lcg(&seed) & 0xffff);
  s16[3] = 0, s16[7] = 1, s16[11] = 65535;
  sl__rs_load_row(s16, 1000, 4, 16, true, f);
  sl__rs_store_row(f, 1000, 4, 16, true, b16);
  for (int i = 0; i < 1000; i++)
    for (int c = 0; c < 4; c++) {
      unsigned want = c == 3 || s16[i * 4 + 3] ? s16[i * 4 + c] : 0;
      /* at alpha 1 a colour is only known to 1 part in 65535 of itself */
      unsigned tol = s16[i * 4 + 3] < 8 && c < 3 ? 65535 : 0;
      if (abs((int)b16[i * 4 + c] - (int)want) > (int)tol)
        SL__FAIL("16-bit pixel %d channel %d: %u -> %u", i, c, s16[i * 4 + c], b16[i * 4 + c]);
    }
  /* clamping and rounding */
  float over[4] = {-20.0f, 254.5f, 300.0f, 127.49f};
  uint8_t o8[4];
  sl__rs_store_row(over, 4, 1, 8, false, o8);
  ASSERT(o8[0] == 0 && o8[1] == 255 && o8[2] == 255 && o8[3] == 127);
  free(f);
}

/* ======================================================================
 * Whole images
 * ====================================================================== */

static void fill_const(img *r, const unsigned *v) {
  for (uint32_t y = 0; y < r->im.d.height; y++)
    for (uint32_t x = 0; x < r->im.d.width; x++)
      for (unsigned c = 0; c < r->im.d.channels; c++) {
        if (r->im.d.depth == 8) px8(r, x, y)[c] = (uint8_t)v[c];
        else px16(r, x, y)[c] = (uint16_t)v[c];
      }
}

TEST(constant_images_stay_constant) {
  const uint32_t sizes[][4] = {{37, 23, 11, 7}, {37, 23, 80, 50}, {37, 23, 37, 5},
                               {37, 23, 90, 23}, {200, 150, 19, 14}, {7, 300, 3, 13},
                               {1, 1, 5, 3}, {5, 3, 1, 1}};
  const unsigned v8[][4] = {{13, 200, 255, 77}, {0, 255, 128, 255}, {255, 1, 9, 1}};
  const unsigned v16[][4] = {{1234, 65535, 40000, 30000}, {0, 65535, 1, 65535}};
  const double gaps[] = {0, 2};
  const sl__rs_order orders[] = {SL__RS_ORDER_H_FIRST, SL__RS_ORDER_V_FIRST};
  for (unsigned depth = 8; depth <= 16; depth += 8)
    for (unsigned C = 1; C <= 4; C++)
      for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (unsigned f = 0; f < 5; f++)
          for (size_t k = 0; k < (depth == 8 ? 3u : 2u); k++)
            for (size_t o = 0; o < 4; o++) {
              const unsigned *v = depth == 8 ? v8[k] : v16[k];
              img a = img_new(sizes[s][0], sizes[s][1], C, depth);
              fill_const(&a, C == 2 ? (unsigned[]){v[0], v[3]} : v);
              img b = resize_img(&a, sizes[s][2], sizes[s][3],
                                 opts((sl__rs_filter)f, gaps[o / 2], orders[o % 2]));
              for (uint32_t y = 0; y < b.im.d.height; y++)
                for (uint32_t x = 0; x < b.im.d.width; x++)
                  for (unsigned c = 0; c < C; c++) {
                    unsigned want = C == 2 ? (c ? v[3] : v[0]) : v[c];
                    if (sample(&b, x, y, c) != want)
                      SL__FAIL("%s depth %u C=%u %ux%u->%ux%u order %zu: (%u,%u,%u) = %u, want %u",
                               filter_names[f], depth, C, sizes[s][0], sizes[s][1],
                               sizes[s][2], sizes[s][3], o, x, y, c, sample(&b, x, y, c), want);
                  }
              img_free(&a), img_free(&b);
            }
}

/* A 1-D profile (step plus ramp, deliberately asymmetric) along x or y. */
static img profile_img(uint32_t n, bool vertical, bool mirrored, unsigned depth) {
  img r = vertical ? img_new(3, n, 1, depth) : img_new(n, 3, 1, depth);
  for (uint32_t i = 0; i < n; i++) {
    uint32_t p = mirrored ? n - 1 - i : i;
    unsigned v = p < n / 3 ? 30 : p < n / 2 ? 220 : 60 + (p * 150) / n;
    if (depth == 16) v *= 257;
    for (uint32_t j = 0; j < 3; j++) {
      uint32_t x = vertical ? j : i, y = vertical ? i : j;
      if (depth == 8) *px8(&r, x, y) = (uint8_t)v;
      else *px16(&r, x, y) = (uint16_t)v;
    }
  }
  return r;
}

/* Mirroring the input mirrors the output: pixel centres are where they
 * should be (a half-pixel shift would break this at every edge). */
TEST(mirrored_input_gives_mirrored_output) {
  const uint32_t in_n = 61, outs[] = {17, 30, 61 * 2, 150, 1};
  for (unsigned depth = 8; depth <= 16; depth += 8)
    for (int vertical = 0; vertical < 2; vertical++)
      for (size_t f = 0; f < 4; f++)
        for (size_t o = 0; o < sizeof outs / sizeof outs[0]; o++)
          for (int gap = 0; gap <= 2; gap += 2) {
            img a = profile_img(in_n, vertical, false, depth);
            img m = profile_img(in_n, vertical, true, depth);
            uint32_t on = outs[o], ow = vertical ? 3 : on, oh = vertical ? on : 3;
            sl__rs_options op = opts(smooth_filters[f], gap, SL__RS_ORDER_AUTO);
            img ra = resize_img(&a, ow, oh, op), rm = resize_img(&m, ow, oh, op);
            for (uint32_t i = 0; i < on; i++) {
              uint32_t x = vertical ? 1 : i, y = vertical ? i : 1;
              uint32_t xm = vertical ? 1 : on - 1 - i, ym = vertical ? on - 1 - i : 1;
              int d = (int)sample(&ra, x, y, 0) - (int)sample(&rm, xm, ym, 0);
              if (abs(d) > (depth == 8 ? 1 : 257))
                SL__FAIL("%s %s %u->%u gap %d at %u: %u vs mirrored %u",
                         filter_names[smooth_filters[f]], vertical ? "vertical" : "horizontal",
                         in_n, on, gap, i, sample(&ra, x, y, 0), sample(&rm, xm, ym, 0));
            }
            img_free(&a), img_free(&m), img_free(&ra), img_free(&rm);
          }
}

/* Direct 2-D sum over both tables in double precision: the definition
 * the streamed passes must reproduce (premultiplied when there is alpha). */
static unsigned reference_px(const img *a, const sl__rs_table *tx,
                             const sl__rs_table *ty, uint32_t i, uint32_t j,
                             unsigned c) {
  unsigned C = a->im.d.channels;
  bool alpha = C == 2 || C == 4;
  double maxv = a->im.d.depth == 8 ? 255 : 65535, v = 0, av = 0;
  for (uint32_t ky = 0; ky < ty->count[j]; ky++)
    for (uint32_t kx = 0; kx < tx->count[i]; kx++) {
      uint32_t x = tx->first[i] + kx, y = ty->first[j] + ky;
      double w = (double)tx->w[i * tx->stride + kx] * ty->w[j * ty->stride + ky];
      double al = alpha ? sample(a, x, y, C - 1) / maxv : 1.0;
      v += w * sample(a, x, y, c) * (c == C - 1 ? 1.0 : al);
      av += w * (alpha ? sample(a, x, y, C - 1) : 0);
    }
  if (alpha && c != C - 1) {
    double ar = av < 0 ? 0 : av > maxv ? maxv : av;
    v = floor(ar + 0.5) == 0 ? 0 : v * maxv / av;
  }
  v = v < 0 ? 0 : v > maxv ? maxv : v;
  return (unsigned)floor(v + 0.5);
}

/* Random shapes (including 1-pixel sides, enlarging one axis while
 * shrinking the other), channel counts, depths, filters and both pass
 * orders against the direct 2-D sum. */
TEST(random_shapes_match_direct_sum) {
  uint32_t seed = 99;
  for (int iter = 0; iter < 300; iter++) {
    uint32_t w = 1 + lcg(&seed) % 40, h = 1 + lcg(&seed) % 40;
    uint32_t ow = 1 + lcg(&seed) % 40, oh = 1 + lcg(&seed) % 40;
    unsigned C = 1 + lcg(&seed) % 4, depth = lcg(&seed) % 2 ? 16 : 8;
    sl__rs_filter f = smooth_filters[lcg(&seed) % 4];
    img a = photo_img(w, h, C, depth, (uint32_t)iter);
    sl__rs_table tx, ty;
    ASSERT_OK(sl__rs_table_init(&tx, f, w, w, ow));
    ASSERT_OK(sl__rs_table_init(&ty, f, h, h, oh));
    for (int order = 1; order <= 2; order++) {
      img b = resize_img(&a, ow, oh, opts(f, 0, (sl__rs_order)order));
      for (uint32_t j = 0; j < oh; j++)
        for (uint32_t i = 0; i < ow; i++)
          for (unsigned c = 0; c < C; c++) {
            unsigned want = reference_px(&a, &tx, &ty, i, j, c), got = sample(&b, i, j, c);
            /* float against double: at most a rounding step apart */
            if ((got > want ? got - want : want - got) > 1)
              SL__FAIL("%s %ux%u->%ux%u C=%u depth %u order %d (%u,%u,%u): %u, want %u",
                       filter_names[f], w, h, ow, oh, C, depth, order, i, j, c, got, want);
          }
      img_free(&b);
    }
    sl__rs_table_free(&tx), sl__rs_table_free(&ty);
    img_free(&a);
  }
}

/* Nearest picks source samples, untouched (alpha included). */
TEST(nearest_copies_samples) {
  /* sizes whose centres never land on an integer, where Pillow's stepping
   * rounding (which the table reproduces) would decide */
  img a = photo_img(50, 41, 4, 16, 3);
  img b = resize_img(&a, 20, 90, opts(SL__RS_NEAREST, 2, SL__RS_ORDER_AUTO));
  for (uint32_t y = 0; y < 90; y++)
    for (uint32_t x = 0; x < 20; x++)
      for (unsigned c = 0; c < 4; c++) {
        uint32_t sx = (uint32_t)((x + 0.5) * 50 / 20), sy = (uint32_t)((y + 0.5) * 41 / 90);
        ASSERT_EQ(px16(&b, x, y)[c], px16(&a, sx, sy)[c]);
      }
  img_free(&a), img_free(&b);
}

/* Pre-shrink and both pass orders agree with the plain filter closely. */
TEST(preshrink_and_orders_agree) {
  img a = photo_img(900, 700, 3, 8, 11);
  img ref = resize_img(&a, 128, 100, opts(SL__RS_LANCZOS3, 0, SL__RS_ORDER_H_FIRST));
  img v = resize_img(&a, 128, 100, opts(SL__RS_LANCZOS3, 0, SL__RS_ORDER_V_FIRST));
  img p = resize_img(&a, 128, 100, opts(SL__RS_LANCZOS3, 2, SL__RS_ORDER_AUTO));
  size_t n = 128 * 100 * 3;
  int maxd_v = 0;
  double se = 0;
  for (size_t i = 0; i < n; i++) {
    int dv = abs((int)((uint8_t *)ref.im.data)[i] - ((uint8_t *)v.im.data)[i]);
    maxd_v = dv > maxd_v ? dv : maxd_v;
    double dp = (double)((uint8_t *)ref.im.data)[i] - ((uint8_t *)p.im.data)[i];
    se += dp * dp;
  }
  ASSERT_LE(maxd_v, 1); /* float rounding only */
  double psnr = 10 * log10(255.0 * 255.0 / (se / n));
  fprintf(stderr, "  pre-shrink (reducing_gap=2) vs full filter: %.2f dB\n", psnr);
  ASSERT(psnr >= 45);
  img_free(&a), img_free(&ref), img_free(&v), img_free(&p);
}

/* ======================================================================
 * Alpha
 * ====================================================================== */

/* Left part fully transparent red, right part opaque green. */
static img red_green(uint32_t w, uint32_t h, unsigned depth) {
  img r = img_new(w, h, 4, depth);
  unsigned m = depth == 8 ? 255 : 65535;
  for (uint32_t y = 0; y < h; y++)
    for (uint32_t x = 0; x < w; x++) {
      unsigned v[4] = {0, m, 0, m};
      if (x < w * 3 / 7 || (y < h / 5 && x < w * 5 / 7)) v[0] = m, v[1] = 0, v[3] = 0;
      for (unsigned c = 0; c < 4; c++) {
        if (depth == 8) px8(&r, x, y)[c] = (uint8_t)v[c];
        else px16(&r, x, y)[c] = (uint16_t)v[c];
      }
    }
  return r;
}

/* @return pixels that are visible (alpha > 0) yet show red, or are not
 * fully green (a dark fringe). */
static unsigned fringe_pixels(const img *b, unsigned *visible) {
  unsigned bad = 0, m = b->im.d.depth == 8 ? 255 : 65535;
  *visible = 0;
  for (uint32_t y = 0; y < b->im.d.height; y++)
    for (uint32_t x = 0; x < b->im.d.width; x++) {
      if (sample(b, x, y, 3) == 0) continue;
      (*visible)++;
      if (sample(b, x, y, 0) != 0 || sample(b, x, y, 1) + m / 255 < m) bad++;
    }
  return bad;
}

TEST(alpha_premultiplied_no_fringes) {
  const uint32_t outs[][2] = {{16, 16}, {13, 9}, {29, 31}, {150, 140}};
  for (unsigned depth = 8; depth <= 16; depth += 8)
    for (size_t f = 0; f < 4; f++)
      for (size_t o = 0; o < sizeof outs / sizeof outs[0]; o++)
        for (int order = 1; order <= 2; order++) {
          img a = red_green(64, 70, depth);
          img b = resize_img(&a, outs[o][0], outs[o][1],
                             opts(smooth_filters[f], 2, (sl__rs_order)order));
          unsigned visible, bad = fringe_pixels(&b, &visible);
          ASSERT(visible > 0);
          if (bad)
            SL__FAIL("%s depth %u -> %ux%u: %u of %u visible pixels show red or dark",
                     filter_names[smooth_filters[f]], depth, outs[o][0], outs[o][1], bad, visible);
          img_free(&a), img_free(&b);
        }
}

/* The check above is not vacuous: filtering straight (unpremultiplied)
 * alpha pulls the invisible red into the visible fringe, and it sees it. */
TEST(alpha_check_detects_straight_filtering) {
  for (size_t f = 0; f < 4; f++) {
    img a = red_green(64, 70, 8);
    sl__rs_options op = opts(smooth_filters[f], 0, SL__RS_ORDER_AUTO);
    op.straight_alpha = true;
    img b = resize_img(&a, 13, 9, op);
    unsigned visible;
    ASSERT(fringe_pixels(&b, &visible) > 0);
    img_free(&a), img_free(&b);
  }
}

/* ======================================================================
 * Conformance with Pillow
 * ====================================================================== */

static const char pillow_script[] =
    "import sys\n"
    "import numpy as np\n"
    "from PIL import Image\n"
    "F = {'nearest': Image.NEAREST, 'box': Image.BOX, 'bilinear': Image.BILINEAR,\n"
    "     'bicubic': Image.BICUBIC, 'lanczos3': Image.LANCZOS}\n"
    "op = sys.argv[1]\n"
    "if op == 'resize':\n"
    "    src, dst, mode, filt = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]\n"
    "    w, h, ow, oh = map(int, sys.argv[6:10])\n"
    "    raw = open(src, 'rb').read()\n"
    "    if mode == 'I;16':\n"
    "        a = np.frombuffer(raw, dtype=np.uint16).reshape(h, w).astype(np.int32)\n"
    "        out = Image.fromarray(a, 'I').resize((ow, oh), F[filt], reducing_gap=None)\n"
    "        o = np.clip(np.asarray(out), 0, 65535).astype(np.uint16)\n"
    "        open(dst, 'wb').write(o.tobytes())\n"
    "    else:\n"
    "        im = Image.frombytes(mode, (w, h), raw)\n"
    "        out = im.resize((ow, oh), F[filt], reducing_gap=None)\n"
    "        open(dst, 'wb').write(out.tobytes())\n"
    "elif op == 'thumb':\n"
    "    with open(sys.argv[3], 'w') as out:\n"
    "        for line in open(sys.argv[2]):\n"
    "            W, H, bw, bh = map(int, line.split())\n"
    "            im = Image.new('1', (W, H))\n"
    "            im.thumbnail((bw, bh))\n"
    "            out.write('%d %d\\n' % im.size)\n";

typedef struct pillow {
  char dir[64];
  char script[96], in[96], out[96];
} pillow;

static void write_file(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  ASSERT(f);
  ASSERT_EQ(fwrite(data, 1, n, f), n);
  ASSERT_EQ(fclose(f), 0);
}

static pillow pillow_open(void) {
  if (access("/usr/bin/python3", X_OK) != 0)
    SL__FAIL("conformance tests need Debian's /usr/bin/python3 with python3-pil and "
             "python3-numpy (apt-get install python3-pil python3-numpy)");
  if (system("/usr/bin/python3 -c 'import PIL.Image, numpy' 2>/dev/null") != 0)
    SL__FAIL("/usr/bin/python3 cannot import PIL and numpy: apt-get install "
             "python3-pil python3-numpy");
  pillow p;
  snprintf(p.dir, sizeof p.dir, "/tmp/sl-resize-XXXXXX");
  ASSERT(mkdtemp(p.dir));
  snprintf(p.script, sizeof p.script, "%s/ref.py", p.dir);
  snprintf(p.in, sizeof p.in, "%s/in.raw", p.dir);
  snprintf(p.out, sizeof p.out, "%s/out.raw", p.dir);
  write_file(p.script, pillow_script, sizeof pillow_script - 1);
  return p;
}

static void pillow_close(pillow *p) {
  unlink(p->script), unlink(p->in), unlink(p->out);
  ASSERT_EQ(rmdir(p->dir), 0);
}

static void pillow_run(pillow *p, const char *args) {
  char cmd[1024];
  int n = snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s", p->script, args);
  if (n < 0 || (size_t)n >= sizeof cmd) SL__FAIL("command too long: %s", args);
  int rc = system(cmd);
  if (rc != 0) SL__FAIL("Pillow reference failed (status %d): %s", rc, cmd);
}

/* Pillow's resize of a tight image `src` (mode L/LA/RGB/RGBA, or I;16 for
 * 16-bit gray) to ow x oh with `filter`, reducing_gap=None; the result is
 * malloc'd, tight. */
static void *pillow_resize(pillow *p, const void *src, uint32_t w, uint32_t h,
                           unsigned C, unsigned depth, const char *filter,
                           uint32_t ow, uint32_t oh) {
  static const char *const modes[] = {"", "L", "LA", "RGB", "RGBA"};
  const char *mode = depth == 16 ? "I;16" : modes[C];
  ASSERT(depth == 8 || C == 1);
  write_file(p->in, src, (size_t)w * h * C * depth / 8);
  char args[400];
  snprintf(args, sizeof args, "resize %s %s '%s' %s %u %u %u %u", p->in, p->out,
           mode, filter, w, h, ow, oh);
  pillow_run(p, args);
  size_t n = (size_t)ow * oh * C * depth / 8;
  void *out = malloc(n);
  ASSERT(out);
  FILE *f = fopen(p->out, "rb");
  ASSERT(f);
  ASSERT_EQ(fread(out, 1, n, f), n);
  fclose(f);
  return out;
}

/* PSNR of tight images. With alpha (2 or 4 channels, 8-bit) colour is
 * compared premultiplied, i.e. as it shows over black: Pillow itself
 * premultiplies into 8 bits, so the straight colour of a pixel with alpha
 * 3 is only known to about a third of its range there, and a comparison
 * of straight colour would measure that quantisation, not the filter
 * (Pillow against an exact double-precision computation: 32.6 dB). */
static double psnr(const void *a, const void *b, size_t pixels, unsigned C,
                   unsigned depth) {
  double se = 0, peak = depth == 8 ? 255 : 65535;
  bool alpha = C == 2 || C == 4;
  for (size_t i = 0; i < pixels; i++)
    for (unsigned c = 0; c < C; c++) {
      double x, y;
      if (depth == 8) {
        const uint8_t *p = (const uint8_t *)a + i * C, *q = (const uint8_t *)b + i * C;
        x = p[c], y = q[c];
        if (alpha && c < C - 1) x *= p[C - 1] / 255.0, y *= q[C - 1] / 255.0;
      } else {
        x = ((const uint16_t *)a)[i * C + c], y = ((const uint16_t *)b)[i * C + c];
      }
      se += (x - y) * (x - y);
    }
  if (se == 0) return 200;
  return 10 * log10(peak * peak / (se / (double)(pixels * C)));
}

/* Runs `t.img ... ! resize <args> ! t.grab` (so the stage's defaults are
 * what is tested), asks Pillow to resize the same input to the same size
 * with the same filter, returns the PSNR. */
static double stage_vs_pillow(pillow *p, uint32_t w, uint32_t h, unsigned C,
                              unsigned depth, const char *args, const char *filter) {
  char text[512];
  snprintf(text, sizeof text,
           "t.img width=%u height=%u channels=%u depth=%u seed=21 ! resize %s ! t.grab",
           w, h, C, depth, args);
  run_pipe(text, 2);
  grabbed *o = &g.out[0];
  void *ref = pillow_resize(p, g.src0, w, h, C, depth, filter, o->d.width, o->d.height);
  double db = psnr(o->px, ref, (size_t)o->d.width * o->d.height, C, depth);
  fprintf(stderr, "  %ux%u C=%u %u-bit -> %ux%u [%s] vs Pillow %s: PSNR %.2f dB\n", w, h,
          C, depth, o->d.width, o->d.height, args, filter, db);
  free(ref);
  grab_reset();
  return db;
}

TEST(conformance_lanczos_thumbnails) {
  pillow p = pillow_open();
  ASSERT(stage_vs_pillow(&p, 1200, 900, 3, 8, "fit=256x256", "lanczos3") >= 40);
  ASSERT(stage_vs_pillow(&p, 1200, 900, 4, 8, "fit=256x256", "lanczos3") >= 40);
  ASSERT(stage_vs_pillow(&p, 1200, 900, 1, 8, "fit=256x256", "lanczos3") >= 40);
  ASSERT(stage_vs_pillow(&p, 900, 1200, 2, 8, "fit=256x256", "lanczos3") >= 40);
  pillow_close(&p);
}

/* A shrink large enough for the pre-shrink (reducing_gap) to act, with and
 * without it. */
TEST(conformance_lanczos_large_shrink) {
  pillow p = pillow_open();
  ASSERT(stage_vs_pillow(&p, 1800, 1200, 3, 8, "fit=256x256", "lanczos3") >= 40);
  ASSERT(stage_vs_pillow(&p, 1800, 1200, 4, 8, "fit=256x256", "lanczos3") >= 40);
  ASSERT(stage_vs_pillow(&p, 1800, 1200, 3, 8, "fit=256x256 reducing_gap=0", "lanczos3") >= 40);
  pillow_close(&p);
}

TEST(conformance_lanczos_upscale) {
  pillow p = pillow_open();
  ASSERT(stage_vs_pillow(&p, 160, 120, 3, 8, "scale=2", "lanczos3") >= 40);
  ASSERT(stage_vs_pillow(&p, 160, 120, 4, 8, "scale=2", "lanczos3") >= 40);
  ASSERT(stage_vs_pillow(&p, 200, 100, 3, 8, "size=300x333", "lanczos3") >= 40);
  pillow_close(&p);
}

static const char *const other_filters[] = {"bilinear", "bicubic", "box"};

TEST(conformance_filters_shrink) {
  pillow p = pillow_open();
  for (size_t i = 0; i < 3; i++) {
    char args[64];
    snprintf(args, sizeof args, "fit=256x256 filter=%s", other_filters[i]);
    ASSERT(stage_vs_pillow(&p, 1200, 900, 3, 8, args, other_filters[i]) >= 40);
    snprintf(args, sizeof args, "fit=256x256 filter=%s reducing_gap=0", other_filters[i]);
    ASSERT(stage_vs_pillow(&p, 1200, 900, 4, 8, args, other_filters[i]) >= 40);
  }
  pillow_close(&p);
}

TEST(conformance_filters_enlarge_and_nearest) {
  pillow p = pillow_open();
  for (size_t i = 0; i < 3; i++) {
    char args[64];
    snprintf(args, sizeof args, "scale=2 filter=%s", other_filters[i]);
    ASSERT(stage_vs_pillow(&p, 160, 120, 3, 8, args, other_filters[i]) >= 40);
  }
  /* nearest copies samples: identical */
  ASSERT(stage_vs_pillow(&p, 1200, 900, 3, 8, "fit=256x256 filter=nearest", "nearest") >= 200);
  ASSERT(stage_vs_pillow(&p, 160, 120, 4, 8, "size=333x200 filter=nearest", "nearest") >= 200);
  pillow_close(&p);
}

/* 16-bit gray against Pillow's 32-bit integer mode (filtered in double). */
TEST(conformance_sixteen_bit) {
  pillow p = pillow_open();
  ASSERT(stage_vs_pillow(&p, 1200, 900, 1, 16, "fit=256x256 reducing_gap=0", "lanczos3") >= 70);
  ASSERT(stage_vs_pillow(&p, 1200, 900, 1, 16, "fit=256x256", "lanczos3") >= 40);
  ASSERT(stage_vs_pillow(&p, 160, 120, 1, 16, "scale=2 filter=bicubic", "bicubic") >= 70);
  pillow_close(&p);
}

/* fit= sizes against Image.thumbnail over many shapes. */
TEST(conformance_thumbnail_sizes) {
  pillow p = pillow_open();
  FILE *f = fopen(p.in, "w");
  ASSERT(f);
  uint32_t seed = 17, cases[300][4];
  for (int i = 0; i < 300; i++) {
    cases[i][0] = 1 + lcg(&seed) % (i < 150 ? 5000 : 40);
    cases[i][1] = 1 + lcg(&seed) % (i < 150 ? 5000 : 40);
    cases[i][2] = 1 + lcg(&seed) % (i % 3 ? 300 : 30);
    cases[i][3] = i % 2 ? cases[i][2] : 1 + lcg(&seed) % 300;
    fprintf(f, "%u %u %u %u\n", cases[i][0], cases[i][1], cases[i][2], cases[i][3]);
  }
  ASSERT_EQ(fclose(f), 0);
  char args[256];
  snprintf(args, sizeof args, "thumb %s %s", p.in, p.out);
  pillow_run(&p, args);
  f = fopen(p.out, "r");
  ASSERT(f);
  for (int i = 0; i < 300; i++) {
    unsigned pw, ph;
    ASSERT_EQ(fscanf(f, "%u %u", &pw, &ph), 2);
    geo_is(fit(cases[i][2], cases[i][3], false), cases[i][0], cases[i][1], pw, ph);
  }
  fclose(f);
  pillow_close(&p);
}

static const sl_test_case cases[] = {
    SL_CASE(geometry_fit, "unit"),
    SL_CASE(geometry_other_modes, "unit"),
    SL_CASE(parse_wxh, "unit"),
    SL_CASE(params_rejected_at_parse_time, "unit"),
    SL_CASE(stage_output_sizes, "unit"),
    SL_CASE(same_size_passes_through, "unit"),
    SL_CASE(sixteen_bit_stays_sixteen_bit, "unit"),
    SL_CASE(parallel_equals_serial, "unit"),
    SL_CASE(tables_weights_sum_to_one, "unit"),
    SL_CASE(tables_known_weights, "unit"),
    SL_CASE(hpass_matches_naive_sum, "unit"),
    SL_CASE(vpass_matches_naive_sum, "unit"),
    SL_CASE(load_store_round_trip, "unit"),
    SL_CASE(constant_images_stay_constant, "unit"),
    SL_CASE(mirrored_input_gives_mirrored_output, "unit"),
    SL_CASE(random_shapes_match_direct_sum, "unit"),
    SL_CASE(nearest_copies_samples, "unit"),
    SL_CASE(preshrink_and_orders_agree, "unit"),
    SL_CASE(alpha_premultiplied_no_fringes, "unit"),
    SL_CASE(alpha_check_detects_straight_filtering, "unit"),
    SL_CASE(conformance_lanczos_thumbnails, "conformance"),
    SL_CASE(conformance_lanczos_large_shrink, "conformance"),
    SL_CASE(conformance_lanczos_upscale, "conformance"),
    SL_CASE(conformance_filters_shrink, "conformance"),
    SL_CASE(conformance_filters_enlarge_and_nearest, "conformance"),
    SL_CASE(conformance_sixteen_bit, "conformance"),
    SL_CASE(conformance_thumbnail_sizes, "conformance"),
};
SL_TEST_MAIN(cases)
