/*
 * json_write.c -- `json.write`, a sink writing TABLE rows as JSON objects
 * into one file: a JSON array (format=array) or one object per line
 * (format=lines, JSON Lines).
 *
 * Values: numbers as JSON numbers (floats in the shortest form that reads
 * back exactly; NaN and infinities, which JSON cannot express, as null),
 * bools as true/false, nulls as null, strings escaped per RFC 8259. Output
 * is always valid UTF-8: a byte sequence in a string that is not UTF-8
 * becomes U+FFFD (the CSV input is bytes; a JSON reader would reject it).
 *
 * The file is written through the ordered atomic output of csv_write.c
 * (sl__csv_out): items in seq order, temporary renamed at the end, nothing
 * left behind on failure. Rows of an item are formatted outside any lock.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "csv_internal.h"
#include "io_internal.h"

typedef struct jw_params {
  const char *file;
  int format; /* 0 array, 1 lines */
} jw_params;

typedef struct jw_shared {
  sl__csv_out out;
} jw_shared;

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), 0 if it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t k = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3
           : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
  if (k == 0 || n < k) return 0;
  unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the 2nd byte */
  if (c == 0xE0) lo = 0xA0;
  else if (c == 0xED) hi = 0x9F;
  else if (c == 0xF0) lo = 0x90;
  else if (c == 0xF4) hi = 0x8F;
  if (s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < k; i++)
    if ((s[i] & 0xC0) != 0x80) return 0;
  return k;
}

/* Appends s[0, n) as a JSON string literal. */
static void put_json_string(sl__csv_text *t, const char *str, size_t n) {
  const unsigned char *s = (const unsigned char *)str;
  sl__csv_text_putc(t, '"');
  size_t i = 0;
  while (i < n) {
    size_t run = i;
    while (run < n && s[run] >= 0x20 && s[run] < 0x80 && s[run] != '"' && s[run] != '\\')
      run++;
    sl__csv_text_put(t, s + i, run - i);
    if ((i = run) == n) break;
    unsigned char c = s[i];
    char esc[8];
    if (c >= 0x80) {
      size_t k = utf8_len(s + i, n - i);
      if (k) sl__csv_text_put(t, s + i, k);
      else sl__csv_text_put(t, "\\ufffd", 6);
      i += k ? k : 1;
      continue;
    }
    const char *e = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n"
                  : c == '\r' ? "\\r" : c == '\t' ? "\\t" : c == '\b' ? "\\b"
                  : c == '\f' ? "\\f" : NULL;
    if (!e) {
      snprintf(esc, sizeof esc, "\\u%04x", c);
      e = esc;
    }
    sl__csv_text_put(t, e, strlen(e));
    i++;
  }
  sl__csv_text_putc(t, '"');
}

static void put_json_value(sl__csv_text *t, const sl__csv_cell *c) {
  char num[40];
  size_t n;
  switch (c->kind) {
  case SL__CELL_INT: n = sl__csv_format_i64(c->i, num); break;
  case SL__CELL_UINT: n = sl__csv_format_u64(c->u, num); break;
  case SL__CELL_FLOAT:
    if (c->f != c->f || c->f - c->f != 0) { /* NaN or infinite */
      sl__csv_text_put(t, "null", 4);
      return;
    }
    n = sl__csv_format_double(c->f, num);
    break;
  case SL__CELL_BOOL:
    sl__csv_text_put(t, c->i ? "true" : "false", c->i ? 4 : 5);
    return;
  case SL__CELL_STR: put_json_string(t, c->s, c->n); return;
  default: sl__csv_text_put(t, "null", 4); return;
  }
  sl__csv_text_put(t, num, n);
}

/* Formats every row as an object: rows joined by ",\n" (array) or each
 * followed by "\n" (lines). */
static void format_json(sl__csv_text *t, const sl_payload *pl, bool lines) {
  const sl_table_desc *td = &pl->u.table;
  t->len = 0;
  for (uint64_t r = 0; r < td->nrows; r++) {
    if (r && !lines) sl__csv_text_put(t, ",\n", 2);
    sl__csv_text_putc(t, '{');
    for (uint32_t j = 0; j < td->ncols; j++) {
      if (j) sl__csv_text_put(t, ", ", 2);
      const char *nm = td->cols[j].name ? td->cols[j].name : "";
      put_json_string(t, nm, strlen(nm));
      sl__csv_text_put(t, ": ", 2);
      sl__csv_cell c;
      sl__csv_cell_get(pl, &td->cols[j], r, &c);
      put_json_value(t, &c);
    }
    sl__csv_text_putc(t, '}');
    if (lines) sl__csv_text_putc(t, '\n');
  }
}

static int jw_process(sl_worker *w, sl_item *in, sl_item **out) {
  const jw_params *p = sl_worker_params(w);
  jw_shared *S = sl_worker_shared(w);
  sl__csv_text *t = sl_worker_local(w);
  *out = NULL;
  int rc = sl__csv_table_check(&in->payload, w);
  if (rc < 0) return rc;
  format_json(t, &in->payload, p->format == 1);
  if (t->oom) {
    sl__csv_text_free(t);
    return sl_worker_errorf(w, "out of memory formatting %" PRIu64 " rows",
                            in->payload.u.table.nrows);
  }
  const char *prefix = p->format == 1 ? "" : "[";
  return sl__csv_out_write(&S->out, w, in->seq, prefix, strlen(prefix),
                           t->data, t->len);
}

static int jw_open(sl_worker *w, void **local) {
  int rc = sl__io_single_output_check(w);
  if (rc < 0) return rc;
  sl__csv_text *t = calloc(1, sizeof *t);
  if (!t) return SL_ENOMEM;
  *local = t;
  return 0;
}

static int jw_finish(sl_worker *w) {
  jw_shared *S = sl_worker_shared(w);
  return sl__csv_out_finish(&S->out, w);
}

static void jw_close(sl_worker *w) {
  jw_shared *S = sl_worker_shared(w);
  sl__csv_text *t = sl_worker_local(w);
  if (t) {
    sl__csv_text_free(t);
    free(t);
  }
  sl__csv_out_close(&S->out, w);
}

static void jw_destroy(void *state);

/* A failed create() frees its state (the engine does not destroy it). */
static int jw_create(sl_stage *st, void **state) {
  const jw_params *p = sl_stage_params(st);
  jw_shared *S = calloc(1, sizeof *S);
  if (!S) return sl_stage_errorf(st, "out of memory");
  sl__csv_out_init(&S->out, p->file);
  if (p->format == 0) { /* "[" + items joined by ",\n" + "\n]" */
    S->out.first_sep = "\n";
    S->out.sep = ",\n";
    S->out.end = "\n]\n";
    S->out.end_empty = "]\n";
    S->out.none = "[]\n";
  }
  int rc = sl__csv_out_check(st, p->file);
  if (rc < 0) {
    jw_destroy(S);
    S = NULL;
  }
  *state = S;
  return rc;
}

static void jw_destroy(void *state) {
  jw_shared *S = state;
  if (!S) return;
  sl__csv_out_destroy(&S->out);
  free(S);
}

static const sl_param_def jw_params_table[] = {
    {"file", SL_PARAM_STRING, offsetof(jw_params, file), NULL, 0, 0, NULL,
     "the output file (replaced atomically when the run completes)"},
    {"format", SL_PARAM_CHOICE, offsetof(jw_params, format), "array", 0, 0,
     "array|lines", "array: one JSON array of objects; lines: one object per "
     "line (JSON Lines)"},
    SL_PARAM_END,
};

const sl_stage_def sl__stage_json_write = {
    .name = "json.write",
    .summary = "write TABLE rows as JSON objects into one file, atomically",
    .help =
        "Writes every row of every TABLE item as {\"column\": value, ...}, items\n"
        "in their source order: format=array gives one JSON array, format=lines\n"
        "one object per line. Numbers are JSON numbers (floats in the shortest\n"
        "form that reads back exactly; NaN and infinities become null), bools\n"
        "true/false, nulls null, strings escaped (bytes that are not UTF-8\n"
        "become U+FFFD, so the file is always valid JSON). The file appears\n"
        "only when the run completes (temporary + rename).\n"
        "Example: ... ! groupby keys=k aggs=count ! json.write file=out.json",
    .exec = SL_EXEC_IO,
    .in_kind = SL_KIND_TABLE,
    .out_kind = SL_KIND_NONE,
    .flags = SL_STAGE_SINK,
    .params = jw_params_table,
    .params_size = sizeof(jw_params),
    .create = jw_create,
    .destroy = jw_destroy,
    .open = jw_open,
    .process = jw_process,
    .finish = jw_finish,
    .close = jw_close,
};
