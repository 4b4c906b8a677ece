/*
 * item.c -- items, payload views and the names of kinds and dtypes.
 *
 * An item owns its name, one reference to its payload's arena block, for
 * tables the column array, and its metadata (a short array of key/value
 * pairs: items carry a handful at most, so a linear search is the fastest
 * lookup). Destroying an item releases all of them.
 */
#include "internal.h"

#include <string.h>

const char *sl_kind_name(sl_kind k) {
  static const char *const names[] = {"none", "bytes", "image", "array",
                                      "table", "agg",   "any",   "same"};
  return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

const char *sl_dtype_name(sl_dtype t) {
  static const char *const names[] = {"none", "bool", "int8",   "uint8",
                                      "int16", "uint16", "int32", "uint32",
                                      "int64", "uint64", "float32", "float64",
                                      "string"};
  return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

size_t sl_dtype_size(sl_dtype t) {
  static const size_t sizes[] = {0, 1, 1, 1, 2, 2, 4, 4, 8, 8, 4, 8, 0};
  return (unsigned)t < sizeof sizes / sizeof sizes[0] ? sizes[t] : 0;
}

const char *sl_exec_class_name(sl_exec_class c) {
  switch (c) {
  case SL_EXEC_IO: return "io";
  case SL_EXEC_CPU: return "cpu";
  case SL_EXEC_SERIAL: return "serial";
  }
  return "?";
}

sl_item *sl_item_create(uint64_t seq, const char *name) {
  sl_item *it = calloc(1, sizeof *it);
  if (!it) return NULL;
  it->seq = seq;
  it->name = sl__strdup(name ? name : "");
  if (!it->name) {
    free(it);
    return NULL;
  }
  return it;
}

struct sl_meta {
  size_t n;
  char **kv; /* key0, value0, key1, value1, ... */
};

static void meta_free(sl_meta *m) {
  if (!m) return;
  for (size_t i = 0; i < 2 * m->n; i++) free(m->kv[i]);
  free(m->kv);
  free(m);
}

const char *sl_item_meta_get(const sl_item *item, const char *key) {
  const sl_meta *m = item->meta;
  for (size_t i = 0; m && i < m->n; i++)
    if (strcmp(m->kv[2 * i], key) == 0) return m->kv[2 * i + 1];
  return NULL;
}

int sl_item_meta_set(sl_item *item, const char *key, const char *value) {
  char *v = sl__strdup(value);
  if (!v) return SL_ENOMEM;
  sl_meta *m = item->meta;
  for (size_t i = 0; m && i < m->n; i++) {
    if (strcmp(m->kv[2 * i], key) == 0) {
      free(m->kv[2 * i + 1]);
      m->kv[2 * i + 1] = v;
      return 0;
    }
  }
  if (!m && !(m = item->meta = calloc(1, sizeof *m))) {
    free(v);
    return SL_ENOMEM;
  }
  char *k = sl__strdup(key);
  char **kv = k ? realloc(m->kv, (2 * m->n + 2) * sizeof *kv) : NULL;
  if (!kv) {
    free(k);
    free(v);
    return SL_ENOMEM;
  }
  m->kv = kv;
  kv[2 * m->n] = k;
  kv[2 * m->n + 1] = v;
  m->n++;
  return 0;
}

sl_item *sl_item_derive(const sl_item *src) {
  sl_item *it = sl_item_create(src->seq, src->name);
  if (!it) return NULL;
  it->attempts = src->attempts;
  it->total_hint = src->total_hint;
  it->line = src->line;
  for (size_t i = 0; src->meta && i < src->meta->n; i++) {
    if (sl_item_meta_set(it, src->meta->kv[2 * i], src->meta->kv[2 * i + 1]) < 0) {
      sl_item_destroy(it);
      return NULL;
    }
  }
  return it;
}

void sl_item_clear_payload(sl_item *item) {
  sl_payload *p = &item->payload;
  if (p->kind == SL_KIND_TABLE && p->u.table.cols) {
    for (uint32_t i = 0; i < p->u.table.ncols; i++) free(p->u.table.cols[i].name);
    free(p->u.table.cols);
  }
  sl_block_release(p->block);
  memset(p, 0, sizeof *p);
}

void sl_item_destroy(sl_item *item) {
  if (!item) return;
  sl_item_clear_payload(item);
  meta_free(item->meta);
  free(item->name);
  free(item);
}

void sl_item_set_block(sl_item *item, sl_kind kind, sl_block *block,
                       size_t offset, size_t size) {
  sl_item_clear_payload(item);
  item->payload.kind = kind;
  item->payload.block = block;
  item->payload.data = block ? (char *)sl_block_data(block) + offset : NULL;
  item->payload.size = size;
}
