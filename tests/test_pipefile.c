/*
 * test_pipefile.c -- stage registry, parameter tables and the pipeline-file
 * parser (engine/registry.c, params.c, pipefile.c).
 *
 * The stage types are fakes defined here, so the tests depend on nothing but
 * the engine: a source "src" with one parameter of every type, transforms
 * "xf" (any -> same), "decode" (bytes -> image), "img.blur" (image ->
 * image), "anyout" (bytes -> any), sinks "sink" (any) and "img.sink"
 * (image), and "files.out", a sink with a required parameter whose create()
 * rejects dir=bad through sl_stage_errorf and counts create/destroy calls.
 *
 * Error messages are compared as whole strings (file:line:col, message,
 * hint lines), because their exact wording is part of the interface.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../engine/internal.h" /* struct sl_stage fields: order, kinds, ... */
#include "sluice.h"
#include "test.h"

/* --- fake stage types --------------------------------------------------- */

static int fake_produce(sl_worker *w, sl_item **out) {
  (void)w, (void)out;
  return SL_DONE;
}

static int fake_process(sl_worker *w, sl_item *in, sl_item **out) {
  (void)w;
  *out = in;
  return 0;
}

typedef struct src_params {
  int64_t count;
  uint64_t size;
  const char *name;
  int mode;
  bool flag;
  double ratio;
} src_params;

static const sl_param_def src_tab[] = {
    {"count", SL_PARAM_INT, offsetof(src_params, count), "10", 1, 1000, NULL,
     "number of items"},
    {"size", SL_PARAM_SIZE, offsetof(src_params, size), "4k", 0, 0, NULL,
     "bytes per item"},
    {"name", SL_PARAM_STRING, offsetof(src_params, name), "item", 0, 0, NULL,
     "item name prefix"},
    {"mode", SL_PARAM_CHOICE, offsetof(src_params, mode), "fast", 0, 0,
     "fast|slow|exact", "generation mode"},
    {"flag", SL_PARAM_BOOL, offsetof(src_params, flag), "false", 0, 0, NULL,
     NULL},
    {"ratio", SL_PARAM_FLOAT, offsetof(src_params, ratio), "0.5", 0, 1, NULL,
     "a fraction"},
    SL_PARAM_END};

static const sl_stage_def src_def = {
    .name = "src", .summary = "a test source", .help = "Makes test items.\n",
    .exec = SL_EXEC_IO, .in_kind = SL_KIND_NONE, .out_kind = SL_KIND_BYTES,
    .flags = SL_STAGE_SOURCE, .params = src_tab,
    .params_size = sizeof(src_params), .produce = fake_produce};

static const sl_stage_def xf_def = {
    .name = "xf", .summary = "passes items on", .exec = SL_EXEC_CPU,
    .in_kind = SL_KIND_ANY, .out_kind = SL_KIND_SAME, .process = fake_process};

static const sl_stage_def decode_def = {
    .name = "decode", .summary = "bytes to image", .exec = SL_EXEC_CPU,
    .in_kind = SL_KIND_BYTES, .out_kind = SL_KIND_IMAGE,
    .process = fake_process};

typedef struct blur_params {
  double sigma;
} blur_params;

static const sl_param_def blur_tab[] = {
    {"sigma", SL_PARAM_FLOAT, offsetof(blur_params, sigma), "1.5", 0.1, 100,
     NULL, "blur radius"},
    SL_PARAM_END};

static const sl_stage_def blur_def = {
    .name = "img.blur", .summary = "blurs images", .exec = SL_EXEC_CPU,
    .in_kind = SL_KIND_IMAGE, .out_kind = SL_KIND_IMAGE, .params = blur_tab,
    .params_size = sizeof(blur_params), .process = fake_process};

static const sl_stage_def anyout_def = {
    .name = "anyout", .summary = "unknown output", .exec = SL_EXEC_SERIAL,
    .in_kind = SL_KIND_BYTES, .out_kind = SL_KIND_ANY,
    .process = fake_process};

static const sl_stage_def sink_def = {
    .name = "sink", .summary = "drops items", .exec = SL_EXEC_SERIAL,
    .in_kind = SL_KIND_ANY, .out_kind = SL_KIND_NONE, .flags = SL_STAGE_SINK,
    .process = fake_process};

static const sl_stage_def imgsink_def = {
    .name = "img.sink", .summary = "takes images", .exec = SL_EXEC_SERIAL,
    .in_kind = SL_KIND_IMAGE, .out_kind = SL_KIND_NONE, .flags = SL_STAGE_SINK,
    .process = fake_process};

typedef struct out_params {
  const char *dir;
  uint64_t buffer;
} out_params;

static const sl_param_def out_tab[] = {
    {"dir", SL_PARAM_STRING, offsetof(out_params, dir), NULL, 0, 0, NULL,
     "output directory"},
    {"buffer", SL_PARAM_SIZE, offsetof(out_params, buffer), "64KiB", 4096,
     1073741824.0, NULL, "write buffer"},
    SL_PARAM_END};

static int out_creates, out_destroys;

/* Rejects dir=bad with a message and dir=nomsg with a bare code. */
static int out_create(sl_stage *st, void **state) {
  const out_params *op = sl_stage_params(st);
  out_creates++;
  if (strcmp(op->dir, "bad") == 0)
    return sl_stage_errorf(st, "directory '%s' does not exist", op->dir);
  if (strcmp(op->dir, "nomsg") == 0) return SL_EIO;
  *state = malloc(16); /* leaks under ASan unless destroy runs */
  return *state ? 0 : SL_ENOMEM;
}

static void out_destroy(void *state) {
  out_destroys++;
  free(state);
}

static const sl_stage_def out_def = {
    .name = "files.out", .summary = "writes files",
    .help = "Writes each item to DIR/NAME.", .exec = SL_EXEC_IO,
    .in_kind = SL_KIND_ANY, .out_kind = SL_KIND_NONE, .flags = SL_STAGE_SINK,
    .params = out_tab, .params_size = sizeof(out_params),
    .create = out_create, .destroy = out_destroy, .process = fake_process};

static sl_registry *reg_new(void) {
  const sl_stage_def *defs[] = {&src_def,    &xf_def,   &decode_def,
                                &blur_def,   &anyout_def, &sink_def,
                                &imgsink_def, &out_def};
  sl_registry *reg;
  ASSERT_OK(sl_registry_create(&reg));
  for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
    ASSERT_OK(sl_registry_add(reg, defs[i]));
  out_creates = out_destroys = 0;
  return reg;
}

/* --- helpers ---------------------------------------------------------------- */

static sl_pipeline *parse_n(sl_registry *reg, const char *text, size_t len,
                            const char *const *vars, size_t nvars, int *rc) {
  sl_pipeline *p;
  ASSERT_OK(sl_pipeline_create(&p, reg));
  *rc = sl_pipeline_parse(p, "t.pipe", text, len, vars, nvars);
  return p;
}

/* Parses `text`, which must succeed. */
static sl_pipeline *parse_ok_vars(sl_registry *reg, const char *text,
                                  const char *const *vars, size_t nvars) {
  int rc;
  sl_pipeline *p = parse_n(reg, text, strlen(text), vars, nvars, &rc);
  if (rc != 0)
    SL__FAIL("parse of \"%s\" failed: %d\n%s", text, rc, sl_pipeline_errors(p));
  ASSERT_STREQ(sl_pipeline_errors(p), "");
  return p;
}

static sl_pipeline *parse_ok(sl_registry *reg, const char *text) {
  return parse_ok_vars(reg, text, NULL, 0);
}

/* Parses text[0..len), which must fail with exactly `expected`. */
static void expect_errors_n(sl_registry *reg, const char *text, size_t len,
                            const char *const *vars, size_t nvars,
                            const char *expected) {
  int rc;
  sl_pipeline *p = parse_n(reg, text, len, vars, nvars, &rc);
  ASSERT_EQ(rc, SL_EPARSE);
  ASSERT_STREQ(sl_pipeline_errors(p), expected);
  sl_pipeline_destroy(p);
}

static void expect_errors(sl_registry *reg, const char *text,
                          const char *expected) {
  expect_errors_n(reg, text, strlen(text), NULL, 0, expected);
}

static const src_params *src_of(sl_pipeline *p) {
  ASSERT(sl_pipeline_length(p) > 0);
  ASSERT(p->stages[0]->def == &src_def);
  return sl_stage_params(p->stages[0]);
}

/* --- registry ----------------------------------------------------------- */

TEST(registry_basics) {
  sl_registry *reg = reg_new();
  ASSERT_EQ(sl_registry_count(reg), 8);
  const char *order[] = {"anyout", "decode",   "files.out", "img.blur",
                         "img.sink", "sink",   "src",       "xf"};
  for (size_t i = 0; i < 8; i++)
    ASSERT_STREQ(sl_registry_at(reg, i)->name, order[i]);
  ASSERT(sl_registry_at(reg, 8) == NULL);
  ASSERT(sl_registry_find(reg, "xf") == &xf_def);
  ASSERT(sl_registry_find(reg, "files.out") == &out_def);
  ASSERT(sl_registry_find(reg, "x") == NULL);
  ASSERT(sl_registry_find(reg, "") == NULL);
  ASSERT_EQ(sl_registry_add(reg, &xf_def), SL_EEXIST);
  sl_stage_def copy = sink_def; /* same name, different def */
  ASSERT_EQ(sl_registry_add(reg, &copy), SL_EEXIST);
  ASSERT_EQ(sl_registry_count(reg), 8);
  sl_registry_destroy(reg);
  sl_registry_destroy(NULL);
}

typedef struct tp {
  int64_t i;
  double f;
  int c;
  bool b;
} tp;

/* Adds a transform "t" with parameter table `tab` to a fresh registry.
 * @return sl_registry_add's code. */
static int add_with_table(const sl_param_def *tab, size_t size) {
  sl_registry *reg;
  ASSERT_OK(sl_registry_create(&reg));
  sl_stage_def d = xf_def;
  d.name = "t", d.params = tab, d.params_size = size;
  int rc = sl_registry_add(reg, &d);
  sl_registry_destroy(reg);
  return rc;
}

static int add_def(const sl_stage_def *d) {
  sl_registry *reg;
  ASSERT_OK(sl_registry_create(&reg));
  int rc = sl_registry_add(reg, d);
  sl_registry_destroy(reg);
  return rc;
}

TEST(registry_rejects_bad_defs) {
  const char *bad_names[] = {"", "Gen", "a b", "x/y", "é", "a=b",
                             /* 65 bytes: one too many */
                             ("a234567890123456789012345678901234567890123456789"
                              "0123456789012345")};
  for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
    sl_stage_def d = xf_def;
    d.name = bad_names[i];
    ASSERT_EQ(add_def(&d), SL_EINVAL);
  }
  sl_stage_def d = xf_def;
  d.name = NULL;
  ASSERT_EQ(add_def(&d), SL_EINVAL);
  ASSERT_EQ(add_def(&xf_def), 0);

  /* Shapes. */
  d = src_def, d.produce = NULL; /* source without produce */
  ASSERT_EQ(add_def(&d), SL_EINVAL);
  d = src_def, d.process = fake_process; /* both callbacks */
  ASSERT_EQ(add_def(&d), SL_EINVAL);
  d = src_def, d.in_kind = SL_KIND_BYTES; /* source with input */
  ASSERT_EQ(add_def(&d), SL_EINVAL);
  d = src_def, d.out_kind = SL_KIND_SAME;
  ASSERT_EQ(add_def(&d), SL_EINVAL);
  d = src_def, d.flags |= SL_STAGE_SINK;
  ASSERT_EQ(add_def(&d), SL_EINVAL);
  d = xf_def, d.process = NULL; /* transform without process */
  ASSERT_EQ(add_def(&d), SL_EINVAL);
  d = xf_def, d.produce = fake_produce;
  ASSERT_EQ(add_def(&d), SL_EINVAL);
  d = xf_def, d.in_kind = SL_KIND_NONE;
  ASSERT_EQ(add_def(&d), SL_EINVAL);
  d = xf_def, d.in_kind = SL_KIND_SAME;
  ASSERT_EQ(add_def(&d), SL_EINVAL);
  d = xf_def, d.out_kind = SL_KIND_NONE; /* outputs nothing, not a sink */
  ASSERT_EQ(add_def(&d), SL_EINVAL);
  d = sink_def, d.out_kind = SL_KIND_BYTES; /* sink that outputs */
  ASSERT_EQ(add_def(&d), SL_EINVAL);
  d = xf_def, d.flags = 0x80;
  ASSERT_EQ(add_def(&d), SL_EINVAL);
  d = xf_def, d.exec = (sl_exec_class)7;
  ASSERT_EQ(add_def(&d), SL_EINVAL);
  d = xf_def, d.out_kind = (sl_kind)42;
  ASSERT_EQ(add_def(&d), SL_EINVAL);

  /* Parameter tables. */
  const sl_param_def ok[] = {
      {"i", SL_PARAM_INT, offsetof(tp, i), "5", 1, 10, NULL, NULL},
      {"f", SL_PARAM_FLOAT, offsetof(tp, f), NULL, 0, 0, NULL, NULL},
      {"c", SL_PARAM_CHOICE, offsetof(tp, c), "b", 0, 0, "a|b", NULL},
      {"b", SL_PARAM_BOOL, offsetof(tp, b), "on", 0, 0, NULL, NULL},
      SL_PARAM_END};
  ASSERT_EQ(add_with_table(ok, sizeof(tp)), 0);
  ASSERT_EQ(add_with_table(ok, offsetof(tp, b)), SL_EINVAL); /* b outside */
  ASSERT_EQ(add_with_table(ok, 0), SL_EINVAL);
  const sl_param_def dup[] = {
      {"i", SL_PARAM_INT, offsetof(tp, i), "5", 0, 0, NULL, NULL},
      {"i", SL_PARAM_FLOAT, offsetof(tp, f), "1", 0, 0, NULL, NULL},
      SL_PARAM_END};
  ASSERT_EQ(add_with_table(dup, sizeof(tp)), SL_EINVAL);
  struct {
    sl_param_def row;
  } bad[] = {
      {{"c", SL_PARAM_CHOICE, offsetof(tp, c), NULL, 0, 0, NULL, NULL}},
      {{"c", SL_PARAM_CHOICE, offsetof(tp, c), NULL, 0, 0, "", NULL}},
      {{"c", SL_PARAM_CHOICE, offsetof(tp, c), NULL, 0, 0, "a||b", NULL}},
      {{"c", SL_PARAM_CHOICE, offsetof(tp, c), NULL, 0, 0, "a|", NULL}},
      {{"c", SL_PARAM_CHOICE, offsetof(tp, c), "z", 0, 0, "a|b", NULL}},
      {{"i", SL_PARAM_INT, offsetof(tp, i), "abc", 0, 0, NULL, NULL}},
      {{"i", SL_PARAM_INT, offsetof(tp, i), "0", 1, 10, NULL, NULL}},
      {{"i", SL_PARAM_INT, offsetof(tp, i) + 1, "1", 0, 0, NULL, NULL}},
      {{"i", SL_PARAM_INT, sizeof(tp), "1", 0, 0, NULL, NULL}},
      {{"f", SL_PARAM_FLOAT, offsetof(tp, f), "inf", 0, 0, NULL, NULL}},
      {{"b", SL_PARAM_BOOL, offsetof(tp, b), "maybe", 0, 0, NULL, NULL}},
      {{"b", (sl_param_type)99, offsetof(tp, b), NULL, 0, 0, NULL, NULL}},
      {{"workers", SL_PARAM_INT, offsetof(tp, i), "1", 0, 0, NULL, NULL}},
      {{"order", SL_PARAM_BOOL, offsetof(tp, b), "1", 0, 0, NULL, NULL}},
      {{"Big", SL_PARAM_BOOL, offsetof(tp, b), "1", 0, 0, NULL, NULL}},
      {{"", SL_PARAM_BOOL, offsetof(tp, b), "1", 0, 0, NULL, NULL}},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    sl_param_def tab[2] = {bad[i].row, SL_PARAM_END};
    if (add_with_table(tab, sizeof(tp)) != SL_EINVAL)
      SL__FAIL("bad table row %zu accepted", i);
  }
}

/* --- successful parses ---------------------------------------------------- */

TEST(parse_values) {
  sl_registry *reg = reg_new();
  sl_pipeline *p = parse_ok(reg, "src count=5 size=1MiB name='hello world' "
                                 "mode=slow flag=yes ratio=0.25 ! sink\n");
  const src_params *sp = src_of(p);
  ASSERT_EQ(sl_pipeline_length(p), 2);
  ASSERT_EQ(sp->count, 5);
  ASSERT_EQ(sp->size, 1048576);
  ASSERT_STREQ(sp->name, "hello world");
  ASSERT_EQ(sp->mode, 1);
  ASSERT(sp->flag);
  ASSERT(sp->ratio == 0.25);
  ASSERT(sl_stage_definition(p->stages[1]) == &sink_def);
  ASSERT_EQ(sl_stage_index(p->stages[1]), 1);
  sl_pipeline_destroy(p);

  /* Defaults. */
  p = parse_ok(reg, "src ! sink");
  sp = src_of(p);
  ASSERT_EQ(sp->count, 10);
  ASSERT_EQ(sp->size, 4096);
  ASSERT_STREQ(sp->name, "item");
  ASSERT_EQ(sp->mode, 0);
  ASSERT(!sp->flag);
  ASSERT(sp->ratio == 0.5);
  sl_pipeline_destroy(p);

  /* Other spellings: signs, sizes, booleans in any case, bounds inclusive. */
  p = parse_ok(reg, "src count=+1000 size=4k flag=TRUE ratio=1 mode=exact\n"
                    "sink");
  sp = src_of(p);
  ASSERT_EQ(sp->count, 1000);
  ASSERT_EQ(sp->size, 4096);
  ASSERT(sp->flag);
  ASSERT(sp->ratio == 1.0);
  ASSERT_EQ(sp->mode, 2);
  sl_pipeline_destroy(p);
  p = parse_ok(reg, "src count=1 size=2G ratio=0 flag=off ! sink");
  sp = src_of(p);
  ASSERT_EQ(sp->count, 1);
  ASSERT_EQ(sp->size, (uint64_t)2 << 30);
  ASSERT(sp->ratio == 0.0 && !sp->flag);
  sl_pipeline_destroy(p);
  sl_registry_destroy(reg);
}

/* name= value of `src` after parsing `text` (must succeed). */
static void expect_name(sl_registry *reg, const char *text,
                        const char *const *vars, size_t nvars,
                        const char *expected) {
  sl_pipeline *p = parse_ok_vars(reg, text, vars, nvars);
  ASSERT_STREQ(src_of(p)->name, expected);
  sl_pipeline_destroy(p);
}

TEST(parse_quoting) {
  sl_registry *reg = reg_new();
  /* Double quotes: \" \\ \n \t; other backslashes kept. */
  expect_name(reg, "src name=\"a\\\"b\\\\c\\nd\\te\" ! sink", NULL, 0,
              "a\"b\\c\nd\te");
  expect_name(reg, "src name=\"C:\\data\" ! sink", NULL, 0, "C:\\data");
  /* Single quotes: literal. */
  expect_name(reg, "src name='a\\n$x ${in} \"q\" # ! ' ! sink", NULL, 0,
              "a\\n$x ${in} \"q\" # ! ");
  /* Unquoted backslash is literal; pieces concatenate. */
  expect_name(reg, "src name=C:\\data ! sink", NULL, 0, "C:\\data");
  expect_name(reg, "src name=pre\"fix $$\"'lit'post ! sink", NULL, 0,
              "prefix $litpost");
  expect_name(reg, "src name= ! sink", NULL, 0, "");
  expect_name(reg, "src name=\"\" ! sink", NULL, 0, "");
  expect_name(reg, "src name='x'#comment\nsink", NULL, 0, "x");
  expect_name(reg, "src name=a=b ! sink", NULL, 0, "a=b");
  expect_name(reg, "src name=\"a!b#c d\" ! sink", NULL, 0, "a!b#c d");
  expect_name(reg, "src name=\xc3\xa9t\xc3\xa9 ! sink", NULL, 0,
              "\xc3\xa9t\xc3\xa9");
  sl_registry_destroy(reg);
}

TEST(parse_variables) {
  sl_registry *reg = reg_new();
  const char *vars[] = {"dir=photos", "n=7", "empty=", "dir=thumbs", "x_1=y"};
  size_t nv = sizeof vars / sizeof vars[0];
  sl_pipeline *p = parse_ok_vars(reg, "src count=${n} name=${dir}/x ! sink",
                                 vars, nv);
  ASSERT_EQ(src_of(p)->count, 7);
  ASSERT_STREQ(src_of(p)->name, "thumbs/x"); /* the last dir= wins */
  sl_pipeline_destroy(p);
  expect_name(reg, "src name=${missing:-def} ! sink", vars, nv, "def");
  expect_name(reg, "src name=${empty:-def} ! sink", vars, nv, "def");
  expect_name(reg, "src name=${empty}x ! sink", vars, nv, "x");
  expect_name(reg, "src name=${missing:-} ! sink", vars, nv, "");
  expect_name(reg, "src name=${missing:-a b}! sink", vars, nv, "a b");
  expect_name(reg, "src name=${n:-x}y ! sink", vars, nv, "7y");
  expect_name(reg, "src name=\"${n}$$\" ! sink", vars, nv, "7$");
  expect_name(reg, "src name=$$ ! sink", vars, nv, "$");
  expect_name(reg, "src name=$${n} ! sink", vars, nv, "${n}");
  expect_name(reg, "src name=a$b$ ! sink", vars, nv, "a$b$");
  expect_name(reg, "src name='${n}' ! sink", vars, nv, "${n}");
  expect_name(reg, "src name=${x_1} ! sink", vars, nv, "y");
  /* Substituted text is not re-scanned. */
  const char *tricky[] = {"v=${n} 'q' ! #"};
  expect_name(reg, "src name=${v} ! sink", tricky, 1, "${n} 'q' ! #");
  /* Vars must be name=value. */
  const char *bad[] = {"novalue"};
  sl_pipeline *q;
  ASSERT_OK(sl_pipeline_create(&q, reg));
  ASSERT_EQ(sl_pipeline_parse(q, "t", "src ! sink", 10, bad, 1), SL_EINVAL);
  sl_pipeline_destroy(q);
  sl_registry_destroy(reg);
}

TEST(parse_layout) {
  sl_registry *reg = reg_new();
  const char *text = "# thumbnails\n"
                     "\n"
                     "src count=3 \\\n"
                     "    size=2k   # trailing comment\n"
                     "! xf\n"
                     "xf ! xf   \n"
                     "   ! sink\n"
                     "# end\n";
  sl_pipeline *p = parse_ok(reg, text);
  ASSERT_EQ(sl_pipeline_length(p), 5);
  ASSERT_EQ(src_of(p)->count, 3);
  ASSERT_EQ(src_of(p)->size, 2048);
  unsigned lines[] = {3, 5, 6, 6, 7}, cols[] = {1, 3, 1, 6, 6};
  for (size_t i = 0; i < 5; i++) {
    ASSERT_EQ(p->stages[i]->line, lines[i]);
    ASSERT_EQ(p->stages[i]->col, cols[i]);
    ASSERT_EQ(p->stages[i]->index, i);
    ASSERT(p->stages[i]->pipeline == p);
  }
  sl_pipeline_destroy(p);

  /* CRLF line ends, tabs, blanks after a continuation backslash, '!' at the
   * end of a line, no final newline. */
  p = parse_ok(reg, "src\tcount=4 \\  \r\n\tsize=1k !\r\n\r\nxf\r\n!sink");
  ASSERT_EQ(sl_pipeline_length(p), 3);
  ASSERT_EQ(src_of(p)->count, 4);
  ASSERT_EQ(src_of(p)->size, 1024);
  sl_pipeline_destroy(p);
  p = parse_ok(reg, "src!xf!sink#x");
  ASSERT_EQ(sl_pipeline_length(p), 3);
  sl_pipeline_destroy(p);
  /* A UTF-8 byte-order mark is skipped; a backslash ending a comment
   * continues nothing. */
  p = parse_ok(reg, "\xEF\xBB\xBFsrc # note \\\nsink");
  ASSERT_EQ(sl_pipeline_length(p), 2);
  ASSERT_EQ(p->stages[0]->col, 1);
  sl_pipeline_destroy(p);
  /* Continuation at the very end of the text. */
  p = parse_ok(reg, "src ! sink \\");
  ASSERT_EQ(sl_pipeline_length(p), 2);
  sl_pipeline_destroy(p);
  sl_registry_destroy(reg);
}

TEST(parse_kinds_resolved) {
  sl_registry *reg = reg_new();
  sl_pipeline *p = parse_ok(reg, "src ! decode ! xf ! img.blur ! img.sink");
  sl_kind in[] = {SL_KIND_NONE, SL_KIND_BYTES, SL_KIND_IMAGE, SL_KIND_IMAGE,
                  SL_KIND_IMAGE};
  sl_kind out[] = {SL_KIND_BYTES, SL_KIND_IMAGE, SL_KIND_IMAGE, SL_KIND_IMAGE,
                   SL_KIND_NONE};
  for (size_t i = 0; i < 5; i++) {
    ASSERT_EQ(p->stages[i]->in_kind, in[i]);
    ASSERT_EQ(p->stages[i]->out_kind, out[i]);
  }
  const blur_params *bp = sl_stage_params(p->stages[3]);
  ASSERT(bp->sigma == 1.5);
  sl_pipeline_destroy(p);
  /* An output of kind any connects to anything, and stays unknown. */
  p = parse_ok(reg, "src ! anyout ! xf ! img.sink");
  ASSERT_EQ(p->stages[1]->out_kind, SL_KIND_ANY);
  ASSERT_EQ(p->stages[2]->in_kind, SL_KIND_ANY);
  ASSERT_EQ(p->stages[2]->out_kind, SL_KIND_ANY);
  sl_pipeline_destroy(p);
  sl_registry_destroy(reg);
}

TEST(common_params) {
  sl_registry *reg = reg_new();
  sl_pipeline *p =
      parse_ok(reg, "src order=any workers=4 queue=16 ! xf workers=1024 "
                    "queue=1000000 order=source ! sink");
  ASSERT_EQ(p->stages[0]->order, SL__ORDER_ANY);
  ASSERT_EQ(p->stages[0]->workers, 4);
  ASSERT_EQ(p->stages[0]->queue, 16);
  ASSERT_EQ(p->stages[1]->order, SL__ORDER_SOURCE);
  ASSERT_EQ(p->stages[1]->workers, 1024);
  ASSERT_EQ(p->stages[1]->queue, 1000000);
  /* Unset: engine defaults. */
  ASSERT_EQ(p->stages[2]->order, SL__ORDER_SOURCE);
  ASSERT_EQ(p->stages[2]->workers, 0);
  ASSERT_EQ(p->stages[2]->queue, 0);
  sl_pipeline_destroy(p);
  expect_errors(reg, "src workers=0 ! sink",
                "t.pipe:1:13: stage 'src': parameter 'workers': 0 is below "
                "the minimum 1\n");
  expect_errors(reg, "src queue=2000000 ! sink",
                "t.pipe:1:11: stage 'src': parameter 'queue': 2000000 is "
                "above the maximum 1000000\n");
  expect_errors(reg, "src ! sink order=random",
                "t.pipe:1:18: stage 'sink': parameter 'order': 'random' must "
                "be one of source|any\n");
  expect_errors(reg, "src ! sink workers=x",
                "t.pipe:1:20: stage 'sink': parameter 'workers': 'x' is not "
                "an integer\n");
  sl_registry_destroy(reg);
}

/* --- errors, one kind at a time ------------------------------------------- */

TEST(errors_unknown_stage) {
  sl_registry *reg = reg_new();
  expect_errors(reg, "foo ! sink",
                "t.pipe:1:1: unknown stage 'foo'\n"
                "  hint: run 'sluice stages' to list stages\n");
  expect_errors(reg, "scr ! sink",
                "t.pipe:1:1: unknown stage 'scr'\n"
                "  hint: did you mean 'src'?\n");
  expect_errors(reg, "src ! xff ! sink",
                "t.pipe:1:7: unknown stage 'xff'\n"
                "  hint: did you mean 'xf'?\n");
  expect_errors(reg, "src\n  ! Sink",
                "t.pipe:2:5: unknown stage 'Sink'\n"
                "  hint: did you mean 'sink'?\n");
  expect_errors(reg, "src ! img.blurr ! sink",
                "t.pipe:1:7: unknown stage 'img.blurr'\n"
                "  hint: did you mean 'img.blur'?\n");
  /* Junk bytes are escaped; parameters of an unknown stage are not checked
   * but their syntax is. */
  expect_errors(reg, "src ! f\x01o\tcount ! sink",
                "t.pipe:1:7: unknown stage 'f\\x01o'\n"
                "  hint: run 'sluice stages' to list stages\n"
                "t.pipe:1:11: stage 'f\\x01o': expected key=value, got "
                "'count'\n");
  sl_registry_destroy(reg);
}

TEST(errors_parameters) {
  sl_registry *reg = reg_new();
  expect_errors(reg, "src cont=3 ! sink",
                "t.pipe:1:5: stage 'src': unknown parameter 'cont'\n"
                "  hint: did you mean 'count'?\n");
  expect_errors(reg, "src worker=3 ! sink",
                "t.pipe:1:5: stage 'src': unknown parameter 'worker'\n"
                "  hint: did you mean 'workers'?\n");
  expect_errors(reg, "src zzz=3 ! sink",
                "t.pipe:1:5: stage 'src': unknown parameter 'zzz'\n"
                "  hint: run 'sluice stages src' to list its parameters\n");
  expect_errors(reg, "src count=abc ! sink",
                "t.pipe:1:11: stage 'src': parameter 'count': 'abc' is not "
                "an integer\n");
  expect_errors(reg, "src count=5.0 ! sink",
                "t.pipe:1:11: stage 'src': parameter 'count': '5.0' is not "
                "an integer\n");
  expect_errors(reg, "src count=' 5' ! sink",
                "t.pipe:1:11: stage 'src': parameter 'count': ' 5' is not "
                "an integer\n");
  expect_errors(reg, "src count= ! sink",
                "t.pipe:1:11: stage 'src': parameter 'count': '' is not "
                "an integer\n");
  expect_errors(reg, "src count=0 ! sink",
                "t.pipe:1:11: stage 'src': parameter 'count': 0 is below "
                "the minimum 1\n");
  expect_errors(reg, "src count=5000 ! sink",
                "t.pipe:1:11: stage 'src': parameter 'count': 5000 is above "
                "the maximum 1000\n");
  expect_errors(reg, "src count=99999999999999999999 ! sink",
                "t.pipe:1:11: stage 'src': parameter 'count': "
                "'99999999999999999999' is out of range\n");
  expect_errors(reg, "src ratio=x ! sink",
                "t.pipe:1:11: stage 'src': parameter 'ratio': 'x' is not a "
                "number\n");
  expect_errors(reg, "src ratio=nan ! sink",
                "t.pipe:1:11: stage 'src': parameter 'ratio': 'nan' is not a "
                "number\n");
  expect_errors(reg, "src ratio=-inf ! sink",
                "t.pipe:1:11: stage 'src': parameter 'ratio': '-inf' is not a "
                "number\n");
  expect_errors(reg, "src ratio=0x1p-2 ! sink",
                "t.pipe:1:11: stage 'src': parameter 'ratio': '0x1p-2' is not "
                "a number\n");
  expect_errors(reg, "src ratio=1e999 ! sink",
                "t.pipe:1:11: stage 'src': parameter 'ratio': '1e999' is out "
                "of range\n");
  expect_errors(reg, "src ratio=1.5 ! sink",
                "t.pipe:1:11: stage 'src': parameter 'ratio': 1.5 is above "
                "the maximum 1\n");
  expect_errors(reg, "src flag=maybe ! sink",
                "t.pipe:1:10: stage 'src': parameter 'flag': 'maybe' is not "
                "a boolean\n"
                "  hint: use true|false|yes|no|on|off|1|0\n");
  expect_errors(reg, "src size=12q ! sink",
                "t.pipe:1:10: stage 'src': parameter 'size': '12q' is not a "
                "size\n"
                "  hint: write bytes with an optional suffix: 4096, 64k, "
                "1.5MiB, 2G\n");
  expect_errors(reg, "src size=-1 ! sink",
                "t.pipe:1:10: stage 'src': parameter 'size': '-1' is not a "
                "size\n"
                "  hint: write bytes with an optional suffix: 4096, 64k, "
                "1.5MiB, 2G\n");
  expect_errors(reg, "src mode=quick ! sink",
                "t.pipe:1:10: stage 'src': parameter 'mode': 'quick' must be "
                "one of fast|slow|exact\n");
  expect_errors(reg, "src mode=FAST ! sink",
                "t.pipe:1:10: stage 'src': parameter 'mode': 'FAST' must be "
                "one of fast|slow|exact\n");
  expect_errors(reg, "src ! files.out dir=x buffer=1k",
                "t.pipe:1:30: stage 'files.out': parameter 'buffer': 1k is "
                "below the minimum 4KiB\n");
  expect_errors(reg, "src ! files.out dir=x buffer=2GiB",
                "t.pipe:1:30: stage 'files.out': parameter 'buffer': 2GiB is "
                "above the maximum 1GiB\n");
  /* A long value is cut in the message. */
  char text[256];
  snprintf(text, sizeof text, "src count=%0100dx ! sink", 7);
  expect_errors(reg, text,
                "t.pipe:1:11: stage 'src': parameter 'count': "
                "'0000000000000000000000000000000000000000000000000000000000000000"
                "...' is not an integer\n");
  sl_registry_destroy(reg);
}

TEST(errors_key_value) {
  sl_registry *reg = reg_new();
  expect_errors(reg, "src count ! sink",
                "t.pipe:1:5: stage 'src': expected key=value, got 'count'\n");
  expect_errors(reg, "src count = 5 ! sink",
                "t.pipe:1:5: stage 'src': expected key=value, got 'count'\n"
                "  hint: write key=value with no blanks around '='\n");
  expect_errors(reg, "src =5 ! sink",
                "t.pipe:1:5: stage 'src': expected key=value, got '=5'\n");
  expect_errors(reg, "src \"count\"=5 ! sink",
                "t.pipe:1:5: stage 'src': expected key=value, got "
                "'\"count\"=5'\n");
  expect_errors(reg, "src \\ # x\n! sink",
                "t.pipe:1:5: stage 'src': expected key=value, got '\\'\n"
                "  hint: '\\' continues a line only as its last character\n");
  /* Two stages on a line without '!': the second is taken for a word. */
  expect_errors(reg, "src sink",
                "t.pipe:1:5: stage 'src': expected key=value, got 'sink'\n"
                "  hint: separate stages with '!' or put each on its own "
                "line\n"
                "t.pipe:1:1: pipeline must end with a sink, 'src' produces "
                "bytes\n");
  expect_errors(reg, "src count=1 count=2 ! sink",
                "t.pipe:1:13: stage 'src': duplicate parameter 'count'\n"
                "  hint: first set at line 1, column 5\n");
  expect_errors(reg, "src queue=1 \\\n  queue=2 ! sink",
                "t.pipe:2:3: stage 'src': duplicate parameter 'queue'\n"
                "  hint: first set at line 1, column 5\n");
  expect_errors(reg, "src ! files.out",
                "t.pipe:1:7: stage 'files.out': missing required parameter "
                "'dir'\n");
  expect_errors(reg, "src\n! files.out buffer=8k\n",
                "t.pipe:2:3: stage 'files.out': missing required parameter "
                "'dir'\n");
  /* A stage with a syntax error gets no "missing required" noise. */
  expect_errors(reg, "src ! files.out bogus",
                "t.pipe:1:17: stage 'files.out': expected key=value, got "
                "'bogus'\n");
  expect_errors(reg, "src ! files.out buffer='8k\n",
                "t.pipe:1:24: unterminated quote\n"
                "  hint: close the ' on the same line\n");
  /* Parameters on the next line without a continuation. */
  expect_errors(reg, "src\ncount=5\n! sink",
                "t.pipe:2:1: expected a stage name, got 'count=5'\n"
                "  hint: parameters go on their stage's line; end the line "
                "before with '\\' to continue it\n");
  expect_errors(reg, "src ! 'sink'",
                "t.pipe:1:7: expected a stage name, got ''sink''\n");
  sl_registry_destroy(reg);
}

TEST(errors_syntax) {
  sl_registry *reg = reg_new();
  expect_errors(reg, "src name='abc\n! sink",
                "t.pipe:1:10: unterminated quote\n"
                "  hint: close the ' on the same line\n");
  expect_errors(reg, "src name=\"abc\\\"\n! sink",
                "t.pipe:1:10: unterminated quote\n"
                "  hint: close the \" on the same line\n");
  expect_errors(reg, "src name=x\"abc",
                "t.pipe:1:11: unterminated quote\n"
                "  hint: close the \" on the same line\n"
                "t.pipe:1:1: pipeline must end with a sink, 'src' produces "
                "bytes\n");
  expect_errors_n(reg, "src count=1\n\0\n! sink\n", 20, NULL, 0,
                  "t.pipe:2:1: unexpected NUL byte\n");
  expect_errors_n(reg, "src name=a\0b\n! sink\n", 20, NULL, 0,
                  "t.pipe:1:11: unexpected NUL byte\n");
  expect_errors_n(reg, "src name=\"a\0b\"\n! sink", 21, NULL, 0,
                  "t.pipe:1:12: unexpected NUL byte\n");
  expect_errors(reg, "src ! ! sink", "t.pipe:1:7: empty stage between '!'\n");
  expect_errors(reg, "src !\n! sink", "t.pipe:2:1: empty stage between '!'\n");
  expect_errors(reg, "! src ! sink",
                "t.pipe:1:1: '!' with no stage before it\n");
  expect_errors(reg, "src ! sink !",
                "t.pipe:1:12: '!' with no stage after it\n");
  expect_errors(reg, "", "t.pipe:1:1: pipeline has no stages\n");
  expect_errors(reg, "# nothing\n\n  \\\n",
                "t.pipe:1:1: pipeline has no stages\n");
  sl_registry_destroy(reg);
}

TEST(errors_variables) {
  sl_registry *reg = reg_new();
  const char *vars[] = {"n=3"};
  const char *hint = "  hint: write ${name} or ${name:-default}; names are "
                     "letters, digits and '_'; '$$' is a literal '$'\n";
  char want[512];
  expect_errors_n(reg, "src name=${nope} ! sink", 23, vars, 1,
                  "t.pipe:1:10: undefined variable 'nope'\n"
                  "  hint: pass nope=VALUE on the command line\n");
  expect_errors_n(reg, "src name=\"x${in}\" ! sink", 24, vars, 1,
                  "t.pipe:1:12: undefined variable 'in'\n"
                  "  hint: pass in=VALUE on the command line\n");
  /* Every undefined variable is reported, the rest of the stage checked. */
  expect_errors_n(reg, "src name=${a}${b} count=0 ! sink", 32, vars, 1,
                  "t.pipe:1:10: undefined variable 'a'\n"
                  "  hint: pass a=VALUE on the command line\n"
                  "t.pipe:1:14: undefined variable 'b'\n"
                  "  hint: pass b=VALUE on the command line\n"
                  "t.pipe:1:25: stage 'src': parameter 'count': 0 is below "
                  "the minimum 1\n");
  snprintf(want, sizeof want, "t.pipe:1:10: invalid variable reference\n%s",
           hint);
  expect_errors(reg, "src name=${a b}\n! sink", want);
  expect_errors(reg, "src name=${1x}\n! sink", want);
  expect_errors(reg, "src name=${}\n! sink", want);
  snprintf(want, sizeof want, "t.pipe:1:10: unterminated '${'\n%s", hint);
  expect_errors(reg, "src name=${abc\n! sink", want);
  expect_errors(reg, "src name=${abc:-def\n! sink", want);
  sl_registry_destroy(reg);
}

TEST(errors_kinds) {
  sl_registry *reg = reg_new();
  expect_errors(reg, "src ! sink ! xf ! sink",
                "t.pipe:1:14: stage 'xf' cannot follow 'sink': 'sink' "
                "produces nothing\n");
  expect_errors(reg, "src ! src ! sink",
                "t.pipe:1:7: stage 'src' is a source and must come first\n");
  expect_errors(reg, "xf ! sink",
                "t.pipe:1:1: pipeline must start with a source stage, 'xf' "
                "is not one\n");
  expect_errors(reg, "src ! xf",
                "t.pipe:1:7: pipeline must end with a sink, 'xf' produces "
                "bytes\n");
  expect_errors(reg, "src ! decode ! xf",
                "t.pipe:1:16: pipeline must end with a sink, 'xf' produces "
                "image\n");
  expect_errors(reg, "src",
                "t.pipe:1:1: pipeline must end with a sink, 'src' produces "
                "bytes\n");
  expect_errors(reg, "src ! img.blur ! sink",
                "t.pipe:1:7: stage 'img.blur' needs image input but 'src' "
                "produces bytes\n");
  expect_errors(reg, "src ! xf ! img.sink",
                "t.pipe:1:12: stage 'img.sink' needs image input but 'xf' "
                "produces bytes\n");
  expect_errors(reg, "src ! decode ! decode ! sink",
                "t.pipe:1:16: stage 'decode' needs bytes input but 'decode' "
                "produces image\n");
  /* An unknown stage is a wildcard: no kind errors around it. */
  expect_errors(reg, "src ! blur ! img.sink",
                "t.pipe:1:7: unknown stage 'blur'\n"
                "  hint: run 'sluice stages' to list stages\n");
  sl_registry_destroy(reg);
}

TEST(errors_many_collected) {
  sl_registry *reg = reg_new();
  expect_errors(reg,
                "src cont=3 size=12q\n"
                "! xff\n"
                "! files.out buffer=1k\n"
                "! xf\n",
                "t.pipe:1:5: stage 'src': unknown parameter 'cont'\n"
                "  hint: did you mean 'count'?\n"
                "t.pipe:1:17: stage 'src': parameter 'size': '12q' is not a "
                "size\n"
                "  hint: write bytes with an optional suffix: 4096, 64k, "
                "1.5MiB, 2G\n"
                "t.pipe:2:3: unknown stage 'xff'\n"
                "  hint: did you mean 'xf'?\n"
                "t.pipe:3:20: stage 'files.out': parameter 'buffer': 1k is "
                "below the minimum 4KiB\n"
                "t.pipe:3:3: stage 'files.out': missing required parameter "
                "'dir'\n"
                "t.pipe:4:3: stage 'xf' cannot follow 'files.out': "
                "'files.out' produces nothing\n"
                "t.pipe:4:3: pipeline must end with a sink, 'xf' produces "
                "any\n");
  ASSERT_EQ(out_creates, 0); /* create() only runs on a clean pipeline */

  /* After MAX_ERRORS (50) the parser gives up and says so. */
  sl__buf text = {0};
  for (int i = 0; i < 200; i++) sl__buf_puts(&text, "foo\n");
  int rc;
  sl_pipeline *p = parse_n(reg, text.data, text.len, NULL, 0, &rc);
  ASSERT_EQ(rc, SL_EPARSE);
  const char *e = sl_pipeline_errors(p);
  size_t lines = 0;
  for (const char *s = e; *s; s++) lines += *s == '\n';
  ASSERT_EQ(lines, 50 * 2 + 1);
  ASSERT_CONTAINS(e, "t.pipe:50:1: unknown stage 'foo'\n");
  ASSERT_CONTAINS(e, "t.pipe:51:1: too many errors, giving up\n");
  sl_pipeline_destroy(p);
  sl__buf_free(&text);
  sl_registry_destroy(reg);
}

/* --- create(), check(), destroy() ----------------------------------------- */

TEST(create_and_destroy) {
  sl_registry *reg = reg_new();
  expect_errors(reg, "src ! files.out dir=bad",
                "t.pipe:1:7: stage 'files.out': directory 'bad' does not "
                "exist\n");
  ASSERT_EQ(out_creates, 1);
  ASSERT_EQ(out_destroys, 0); /* a failed create is not destroyed */
  expect_errors(reg, "src\n! files.out dir=nomsg",
                "t.pipe:2:3: stage 'files.out': input/output error\n");

  out_creates = out_destroys = 0;
  sl_pipeline *p = parse_ok(reg, "src ! files.out dir=ok buffer=1MiB");
  const out_params *op = sl_stage_params(p->stages[1]);
  ASSERT_STREQ(op->dir, "ok");
  ASSERT_EQ(op->buffer, 1 << 20);
  ASSERT(p->stages[1]->created && p->stages[1]->state);
  ASSERT_EQ(out_creates, 1);
  ASSERT_OK(sl_pipeline_check(p)); /* idempotent */
  ASSERT_OK(sl_pipeline_check(p));
  ASSERT_EQ(out_creates, 1);
  sl_pipeline_destroy(p);
  ASSERT_EQ(out_destroys, 1);

  /* No create() when anything else is wrong. */
  out_creates = 0;
  expect_errors(reg, "src count=0 ! files.out dir=ok",
                "t.pipe:1:11: stage 'src': parameter 'count': 0 is below the "
                "minimum 1\n");
  ASSERT_EQ(out_creates, 0);

  /* A failed check stays failed. */
  int rc;
  p = parse_n(reg, "xf ! files.out dir=ok", 21, NULL, 0, &rc);
  ASSERT_EQ(rc, SL_EPARSE);
  ASSERT_EQ(sl_pipeline_check(p), SL_EPARSE);
  ASSERT_EQ(out_creates, 0);
  /* A pipeline is parsed once. */
  ASSERT_EQ(sl_pipeline_parse(p, "t", "src ! sink", 10, NULL, 0), SL_EINVAL);
  sl_pipeline_destroy(p);
  sl_pipeline_destroy(NULL);
  sl_registry_destroy(reg);
}

TEST(append_api) {
  sl_registry *reg = reg_new();
  sl_pipeline *p;
  ASSERT_OK(sl_pipeline_create(&p, reg));
  const char *sp[] = {"count=3", "size=1k", "name=${x} 'q'", "order=any"};
  ASSERT_OK(sl_pipeline_append(p, "src", sp, 4));
  ASSERT_OK(sl_pipeline_append(p, "xf", NULL, 0));
  const char *op[] = {"dir=out"};
  ASSERT_OK(sl_pipeline_append(p, "files.out", op, 1));
  ASSERT_EQ(sl_pipeline_length(p), 3);
  ASSERT_OK(sl_pipeline_check(p));
  ASSERT_EQ(out_creates, 1);
  ASSERT_EQ(src_of(p)->count, 3);
  ASSERT_EQ(src_of(p)->size, 1024);
  ASSERT_STREQ(src_of(p)->name, "${x} 'q'"); /* literal: no substitution */
  ASSERT_EQ(p->stages[0]->order, SL__ORDER_ANY);
  ASSERT_EQ(p->stages[2]->line, 3);
  ASSERT_EQ(sl_pipeline_append(p, "sink", NULL, 0), SL_EINVAL); /* checked */
  sl_pipeline_destroy(p);
  ASSERT_EQ(out_destroys, 1);

  ASSERT_OK(sl_pipeline_create(&p, reg));
  const char *bad1[] = {"count"}, *bad2[] = {"count=abc", "cont=1"};
  ASSERT_EQ(sl_pipeline_append(p, "src", bad1, 1), SL_EPARSE);
  ASSERT_EQ(sl_pipeline_append(p, "nope", NULL, 0), SL_EPARSE);
  ASSERT_EQ(sl_pipeline_append(p, "src", bad2, 2), SL_EPARSE);
  ASSERT_OK(sl_pipeline_append(p, "sink", NULL, 0));
  ASSERT_EQ(sl_pipeline_check(p), SL_EPARSE);
  ASSERT_STREQ(sl_pipeline_errors(p),
               "<api>:1:1: stage 'src': expected key=value, got 'count'\n"
               "<api>:2:1: unknown stage 'nope'\n"
               "  hint: run 'sluice stages' to list stages\n"
               "<api>:3:1: stage 'src': parameter 'count': 'abc' is not an "
               "integer\n"
               "<api>:3:1: stage 'src': unknown parameter 'cont'\n"
               "  hint: did you mean 'count'?\n"
               "<api>:3:1: stage 'src' is a source and must come first\n");
  sl_pipeline_destroy(p);

  ASSERT_OK(sl_pipeline_create(&p, reg));
  ASSERT_EQ(sl_pipeline_check(p), SL_EPARSE);
  ASSERT_STREQ(sl_pipeline_errors(p), "<api>:1:1: pipeline has no stages\n");
  sl_pipeline_destroy(p);
  sl_registry_destroy(reg);
}

/* --- help --------------------------------------------------------------- */

/* sl_stage_def_print_help into a malloc'd string. */
static char *help_of(const sl_stage_def *def) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  ASSERT(f);
  sl_stage_def_print_help(def, f);
  ASSERT_EQ(fclose(f), 0);
  return buf;
}

TEST(help_output) {
  char *h = help_of(&src_def);
  ASSERT_STREQ(
      h,
      "src - a test source\n"
      "class: io   input: none   output: bytes\n"
      "\n"
      "Makes test items.\n"
      "\n"
      "parameters:\n"
      "  NAME     TYPE    DEFAULT  ALLOWED          DESCRIPTION\n"
      "  count    int     10       1..1000          number of items\n"
      "  size     size    4k       -                bytes per item\n"
      "  name     string  item     -                item name prefix\n"
      "  mode     choice  fast     fast|slow|exact  generation mode\n"
      "  flag     bool    false    true|false\n"
      "  ratio    float   0.5      0..1             a fraction\n"
      "common parameters:\n"
      "  order    choice  source   source|any       output order: source "
      "keeps input order (like Python's map), any passes items on as they "
      "complete (like as_completed)\n"
      "  workers  int     auto     1..1024          parallel workers for io "
      "stages; thread cap for cpu stages\n"
      "  queue    int     auto     1..1000000       capacity of the stage's "
      "output queue, in items\n");
  free(h);

  h = help_of(&out_def);
  ASSERT_CONTAINS(h, "files.out - writes files\n"
                     "class: io   input: any   output: none\n"
                     "\nWrites each item to DIR/NAME.\n\nparameters:\n");
  ASSERT_CONTAINS(h, "  dir      string  required  -           output "
                     "directory\n");
  ASSERT_CONTAINS(h, "  buffer   size    64KiB     4KiB..1GiB  write buffer\n");
  free(h);

  /* No parameters of its own: the header heads the common table. */
  h = help_of(&xf_def);
  ASSERT_CONTAINS(h, "xf - passes items on\n"
                     "class: cpu   input: any   output: same\n"
                     "\nparameters: none\ncommon parameters:\n"
                     "  NAME     TYPE    DEFAULT  ALLOWED     DESCRIPTION\n"
                     "  order    choice  source   source|any  ");
  free(h);
}

/* --- robustness ------------------------------------------------------------ */

static uint64_t rng(uint64_t *s) { /* xorshift64* */
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * UINT64_C(2685821657736338717);
}

/* Every line of a failed parse is "t.pipe:L:C: ..." or "  hint: ...". */
static void check_error_format(const char *e) {
  size_t lines = 0;
  for (const char *s = e; *s; lines++) {
    const char *nl = strchr(s, '\n');
    ASSERT(nl != NULL);
    if (strncmp(s, "  hint: ", 8) != 0) {
      unsigned line, col;
      int used = 0;
      if (sscanf(s, "t.pipe:%u:%u: %n", &line, &col, &used) != 2 || used == 0)
        SL__FAIL("malformed error line: %.*s", (int)(nl - s), s);
      ASSERT(line >= 1 && col >= 1);
    }
    s = nl + 1;
  }
  ASSERT(lines > 0 && lines <= 2 * 50 + 1);
}

/* Parses buf[0..len) and checks the invariants that must hold for any
 * input: 0 or SL_EPARSE, errors iff failure, well-formed messages, a
 * successful pipeline fully set up. ASan/UBSan catch the rest. */
static void parse_any(sl_registry *reg, const char *buf, size_t len) {
  static const char *const vars[] = {"in=photos", "n=3", "e="};
  int rc;
  sl_pipeline *p = parse_n(reg, buf, len, vars, 3, &rc);
  if (rc == 0) {
    ASSERT_STREQ(sl_pipeline_errors(p), "");
    ASSERT(sl_pipeline_length(p) >= 1);
    for (size_t i = 0; i < p->n; i++)
      ASSERT(p->stages[i]->def && p->stages[i]->created);
  } else {
    ASSERT_EQ(rc, SL_EPARSE);
    check_error_format(sl_pipeline_errors(p));
  }
  sl_pipeline_destroy(p);
}

static const char *const fuzz_seeds[] = {
    "src count=5 size=1MiB name='hello world' mode=slow ! xf ! sink\n",
    ("# c\nsrc name=\"a\\\"b ${in}\" \\\n  ratio=0.5\n! decode ! img.blur "
     "sigma=2 ! img.sink\n"),
    "src ! files.out dir=${in:-x} buffer=8k order=any workers=2 queue=9\n",
    "src name=$$${n}'lit'\"q\" ! anyout ! xf ! sink # end",
};

static const char *const fuzz_tokens[] = {
    "!", "#", "\"", "'", "\\", "\\\n", "\n", "${", "}", "${in}", "${x:-d}",
    "$$", "=", " ", "\t", "src", "xf", "sink", "count=", "size=1k", "\r\n",
    ":-", "files.out dir=bad", "files.out dir=ok", "name=\"", "\x01", "\xff",
    "decode", "img.sink", "workers=", "1024", "-1", "0x", "e9",
};

/* Applies one random edit to buf (len bytes, capacity cap). */
static size_t mutate(uint64_t *s, char *buf, size_t len, size_t cap) {
  size_t at = len ? rng(s) % (len + 1) : 0;
  switch (rng(s) % 5) {
  case 0: /* overwrite a byte */
    if (len) buf[at % len] = (char)(rng(s) & 0xff);
    return len;
  case 1: { /* insert a token (sometimes a NUL byte) */
    const char *tok = fuzz_tokens[rng(s) % (sizeof fuzz_tokens / sizeof *fuzz_tokens)];
    size_t n = rng(s) % 16 == 0 ? 1 : strlen(tok);
    if (len + n > cap) return len;
    memmove(buf + at + n, buf + at, len - at);
    if (n == 1 && tok[0] != '\0' && rng(s) % 2) memcpy(buf + at, "\0", 1);
    else memcpy(buf + at, tok, n);
    return len + n;
  }
  case 2: { /* delete a range */
    size_t n = rng(s) % 8;
    if (at + n > len) n = len - at;
    memmove(buf + at, buf + at + n, len - at - n);
    return len - n;
  }
  case 3: { /* duplicate a range */
    size_t n = rng(s) % 32;
    if (at + n > len) n = len - at;
    if (len + n > cap) return len;
    memmove(buf + at + n, buf + at, len - at);
    return len + n;
  }
  default: /* truncate */
    return at;
  }
}

TEST(robustness_random_inputs) {
  sl_registry *reg = reg_new();
  enum { CAP = 4096 };
  char *buf = malloc(CAP);
  ASSERT(buf);
  uint64_t s = UINT64_C(0x9E3779B97F4A7C15);
  size_t nseeds = sizeof fuzz_seeds / sizeof fuzz_seeds[0];
  for (int iter = 0; iter < 4000; iter++) {
    const char *seed = fuzz_seeds[iter % nseeds];
    size_t len = strlen(seed);
    memcpy(buf, seed, len);
    int edits = 1 + (int)(rng(&s) % 8);
    for (int k = 0; k < edits; k++) len = mutate(&s, buf, len, CAP);
    parse_any(reg, buf, len);
  }
  /* Random bytes, weighted towards the language's special characters. */
  static const char alphabet[] = "!#\"'\\\n $={}:-=abcsrxf01.\t\r";
  for (int iter = 0; iter < 2000; iter++) {
    size_t len = rng(&s) % 200;
    for (size_t i = 0; i < len; i++) {
      uint64_t r = rng(&s);
      buf[i] = r % 8 == 0 ? (char)(r >> 8) : alphabet[(r >> 8) % (sizeof alphabet - 1)];
    }
    parse_any(reg, buf, len);
  }
  free(buf);
  sl_registry_destroy(reg);
}

/* Long pathological inputs must be handled in linear time (a quadratic
 * parser would take minutes on these under a sanitizer). */
TEST(robustness_long_inputs) {
  sl_registry *reg = reg_new();
  static const char *const units[] = {
      "${", "\\ ", "x", "a=", "${a:-", "!", "'", "\"\\", "$$", " ", "src ",
      "name=${in}", "\\\n", "#\n", "=", "a=${", "a=${b:-", "a='", "a=\"$$",
  };
  enum { N = 1 << 18 };
  char *buf = malloc(N + 64);
  ASSERT(buf);
  for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
    size_t len = 0, n = strlen(units[u]);
    memcpy(buf, "src ", 4), len = 4;
    while (len + n < N) memcpy(buf + len, units[u], n), len += n;
    parse_any(reg, buf, len);
    memcpy(buf + len, " ! sink", 7); /* also as the tail of a real stage */
    parse_any(reg, buf, len + 7);
  }
  /* Many stages. */
  size_t len = 0;
  memcpy(buf, "src", 3), len = 3;
  while (len + 6 < N) memcpy(buf + len, " ! xf ", 6), len += 6;
  memcpy(buf + len, "! sink", 6), len += 6;
  parse_any(reg, buf, len);
  free(buf);
  sl_registry_destroy(reg);
}

/* --- implied stages (sl_stage_def.then) ----------------------------------- */

static const sl_stage_def rawsrc_def = {
    .name = "rawsrc", .summary = "source of encoded bytes", .exec = SL_EXEC_IO,
    .in_kind = SL_KIND_NONE, .out_kind = SL_KIND_BYTES,
    .flags = SL_STAGE_SOURCE, .produce = fake_produce, .then = "decode"};

static const sl_stage_def lost_def = {
    .name = "lost", .summary = "needs a stage nobody registered",
    .exec = SL_EXEC_IO, .in_kind = SL_KIND_NONE, .out_kind = SL_KIND_BYTES,
    .flags = SL_STAGE_SOURCE, .produce = fake_produce, .then = "nowhere"};

TEST(implied_stage_inserted_once) {
  sl_registry *reg = reg_new();
  ASSERT_OK(sl_registry_add(reg, &rawsrc_def));
  ASSERT_OK(sl_registry_add(reg, &lost_def));
  /* Inserted: rawsrc gives bytes, img.blur needs images, decode fills in. */
  sl_pipeline *p = parse_ok(reg, "rawsrc ! img.blur ! img.sink");
  ASSERT_EQ(sl_pipeline_length(p), 4);
  ASSERT(p->stages[1]->def == &decode_def);
  for (size_t i = 0; i < 4; i++) ASSERT_EQ(p->stages[i]->index, i);
  ASSERT_EQ(p->stages[1]->line, 1);
  sl_pipeline_destroy(p);
  /* Written by hand already: not doubled. */
  p = parse_ok(reg, "rawsrc ! decode ! img.sink");
  ASSERT_EQ(sl_pipeline_length(p), 3);
  sl_pipeline_destroy(p);
  /* Before a sink that takes anything. */
  p = parse_ok(reg, "rawsrc ! sink");
  ASSERT_EQ(sl_pipeline_length(p), 3);
  ASSERT(p->stages[1]->def == &decode_def);
  ASSERT_EQ(p->stages[2]->in_kind, SL_KIND_IMAGE);
  sl_pipeline_destroy(p);
  expect_errors(reg, "lost ! sink",
                "t.pipe:1:1: stage 'lost' needs stage 'nowhere', which "
                "is not registered\n");
  sl_registry_destroy(reg);
}

static const sl_test_case cases[] = {
    SL_CASE(registry_basics, "unit"),
    SL_CASE(registry_rejects_bad_defs, "unit"),
    SL_CASE(parse_values, "unit"),
    SL_CASE(parse_quoting, "unit"),
    SL_CASE(parse_variables, "unit"),
    SL_CASE(parse_layout, "unit"),
    SL_CASE(parse_kinds_resolved, "unit"),
    SL_CASE(common_params, "unit"),
    SL_CASE(errors_unknown_stage, "unit"),
    SL_CASE(errors_parameters, "unit"),
    SL_CASE(errors_key_value, "unit"),
    SL_CASE(errors_syntax, "unit"),
    SL_CASE(errors_variables, "unit"),
    SL_CASE(errors_kinds, "unit"),
    SL_CASE(errors_many_collected, "unit"),
    SL_CASE(create_and_destroy, "unit"),
    SL_CASE(append_api, "unit"),
    SL_CASE(help_output, "unit"),
    SL_CASE(robustness_random_inputs, "unit"),
    SL_CASE(robustness_long_inputs, "unit"),
    SL_CASE(implied_stage_inserted_once, "unit"),
};
SL_TEST_MAIN(cases)

