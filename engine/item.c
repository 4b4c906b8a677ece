/*
 * item.c -- items, payload views and the names of kinds and dtypes.
 *
 * An item owns its name, one reference to its payload's arena block and, for
 * tables, the column array. Destroying an item releases all three.
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

sl_item *sl_item_derive(const sl_item *src) {
  sl_item *it = sl_item_create(src->seq, src->name);
  if (it) {
    it->attempts = src->attempts;
    it->total_hint = src->total_hint;
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
