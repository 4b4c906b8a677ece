/*
 * h5_table.c -- TABLE items for h5.write: reduction and group-by results.
 *
 * Result tables are small (one row per group, or per statistic), so they
 * are copied out of their arena blocks into malloc'd parts as they arrive
 * (releasing the arena at once) and written when the run ends: parts sorted
 * by seq, one 1-D dataset per column in group dataset=. Numbers keep their
 * dtype, bools become uint8, strings variable-length UTF-8. A column that
 * has nulls in any part also gets "<column>.valid" (uint8, 1 = present).
 * Every item must have the same columns (names and types) as the first.
 */
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>

#include "h5_internal.h"

typedef struct tpart {
  uint64_t seq, nrows;
  unsigned char **vals; /* per column: values (strings: uint64 offsets[n+1]) */
  char **chars;         /* per column: string bytes */
  unsigned char **valid;/* per column: flags or NULL */
} tpart;

struct sl__h5_tables {
  uint32_t ncols;
  char **names;
  sl_dtype *types;
  tpart *parts;
  size_t n, cap;
};

static bool inside(const sl_payload *pl, size_t off, uint64_t n) {
  return off <= pl->size && n <= pl->size - off;
}

static void *dup_bytes(const void *p, uint64_t n) {
  void *d = malloc(n ? (size_t)n : 1);
  if (d && n) memcpy(d, p, (size_t)n);
  return d;
}

/* Copies column c of pl into part P. @return 0, SL_ENOMEM, SL_ESTAGE. */
static int copy_col(tpart *P, uint32_t j, const sl_payload *pl, const sl_column *c,
                    char *why, size_t len) {
  const unsigned char *base = pl->data;
  uint64_t n = P->nrows;
  if (c->valid_off != SIZE_MAX) {
    if (!inside(pl, c->valid_off, n)) goto outside;
    if (!(P->valid[j] = dup_bytes(base + c->valid_off, n))) return SL_ENOMEM;
  }
  if (c->dtype == SL_DT_STRING) {
    if (n > SIZE_MAX / 8 - 1 || !inside(pl, c->data_off, (n + 1) * 8)) goto outside;
    uint64_t *off = dup_bytes(base + c->data_off, (n + 1) * 8);
    if (!(P->vals[j] = (unsigned char *)off)) return SL_ENOMEM;
    for (uint64_t r = 0; r < n; r++)
      if (off[r + 1] < off[r]) goto outside;
    if (!inside(pl, c->chars_off, off[n])) goto outside;
    if (!(P->chars[j] = dup_bytes(base + c->chars_off, off[n]))) return SL_ENOMEM;
    return 0;
  }
  size_t es = sl_dtype_size(c->dtype);
  if (es == 0) {
    snprintf(why, len, "column '%s' has an unsupported type", c->name ? c->name : "");
    return SL_ESTAGE;
  }
  if (n > SIZE_MAX / es || !inside(pl, c->data_off, n * es)) goto outside;
  if (!(P->vals[j] = dup_bytes(base + c->data_off, n * es))) return SL_ENOMEM;
  return 0;
outside:
  snprintf(why, len, "column %u of the table lies outside its payload", j + 1);
  return SL_ESTAGE;
}

static int check_columns(sl__h5_tables *T, const sl_table_desc *td, char *why,
                         size_t len) {
  if (T->names) {
    bool same = td->ncols == T->ncols;
    for (uint32_t j = 0; same && j < td->ncols; j++)
      same = td->cols[j].dtype == T->types[j] && td->cols[j].name &&
             strcmp(td->cols[j].name, T->names[j]) == 0;
    if (!same) snprintf(why, len, "this table's columns differ from the first table's");
    return same ? 0 : SL_ESTAGE;
  }
  for (uint32_t j = 0; j < td->ncols; j++) {
    const char *nm = td->cols[j].name;
    if (!nm || !nm[0] || strchr(nm, '/') || strcmp(nm, ".") == 0) {
      snprintf(why, len, "column name '%s' cannot name an HDF5 dataset", nm ? nm : "");
      return SL_ESTAGE;
    }
  }
  T->ncols = td->ncols;
  T->names = calloc(td->ncols + 1, sizeof *T->names);
  T->types = calloc(td->ncols + 1, sizeof *T->types);
  if (!T->names || !T->types) return SL_ENOMEM;
  for (uint32_t j = 0; j < td->ncols; j++) {
    T->types[j] = td->cols[j].dtype;
    if (!(T->names[j] = strdup(td->cols[j].name))) return SL_ENOMEM;
  }
  return 0;
}

static void part_free(tpart *P, uint32_t ncols) {
  for (uint32_t j = 0; j < ncols; j++) {
    if (P->vals) free(P->vals[j]);
    if (P->chars) free(P->chars[j]);
    if (P->valid) free(P->valid[j]);
  }
  free(P->vals);
  free(P->chars);
  free(P->valid);
}

int sl__h5_tables_add(sl__h5_tables **tp, uint64_t seq, const sl_payload *pl,
                      char *why, size_t len) {
  const sl_table_desc *td = &pl->u.table;
  if (td->ncols && (!td->cols || !pl->data)) {
    snprintf(why, len, "table without columns");
    return SL_ESTAGE;
  }
  if (!*tp && !(*tp = calloc(1, sizeof **tp))) return SL_ENOMEM;
  sl__h5_tables *T = *tp;
  int rc = check_columns(T, td, why, len);
  if (rc < 0) return rc;
  if (T->n == T->cap) {
    size_t cap = T->cap ? 2 * T->cap : 8;
    tpart *p = realloc(T->parts, cap * sizeof *p);
    if (!p) return SL_ENOMEM;
    T->parts = p;
    T->cap = cap;
  }
  tpart P = {seq, td->nrows, NULL, NULL, NULL};
  P.vals = calloc(T->ncols + 1, sizeof *P.vals);
  P.chars = calloc(T->ncols + 1, sizeof *P.chars);
  P.valid = calloc(T->ncols + 1, sizeof *P.valid);
  rc = P.vals && P.chars && P.valid ? 0 : SL_ENOMEM;
  for (uint32_t j = 0; rc == 0 && j < T->ncols; j++)
    rc = copy_col(&P, j, pl, &td->cols[j], why, len);
  if (rc < 0) {
    part_free(&P, T->ncols);
    return rc;
  }
  T->parts[T->n++] = P;
  return 0;
}

void sl__h5_tables_free(sl__h5_tables *T) {
  if (!T) return;
  for (size_t i = 0; i < T->n; i++) part_free(&T->parts[i], T->ncols);
  for (uint32_t j = 0; T->names && j < T->ncols; j++) free(T->names[j]);
  free(T->names);
  free(T->types);
  free(T->parts);
  free(T);
}

/* ---------------------------------------------------------------------- */
/* writing (under the HDF5 lock)                                           */

static int cmp_part(const void *a, const void *b) {
  const tpart *x = a, *y = b;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int write_1d(hid_t g, const char *name, hid_t type, uint64_t n,
                    const void *data) {
  hsize_t dims[1] = {n};
  hid_t sp = H5Screate_simple(1, dims, NULL);
  hid_t d = sp < 0 ? -1 : H5Dcreate2(g, name, type, sp, H5P_DEFAULT, H5P_DEFAULT,
                                    H5P_DEFAULT);
  herr_t e = d < 0 ? -1 : n ? H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : 0;
  if (d >= 0) H5Dclose(d);
  if (sp >= 0) H5Sclose(sp);
  return e < 0 ? -1 : 0;
}

/* Column j, all parts concatenated. */
static int write_column(sl__h5_tables *T, uint32_t j, hid_t g, uint64_t rows) {
  sl_dtype t = T->types[j];
  bool str = t == SL_DT_STRING, any_valid = false;
  size_t es = str ? sizeof(char *) : sl_dtype_size(t);
  unsigned char *all = calloc(rows + 1, es), *valid = calloc(rows + 1, 1);
  int rc = all && valid ? 0 : -1;
  uint64_t at = 0;
  for (size_t i = 0; rc == 0 && i < T->n; i++) {
    tpart *P = &T->parts[i];
    any_valid |= P->valid[j] != NULL;
    for (uint64_t r = 0; r < P->nrows; r++)
      valid[at + r] = P->valid[j] ? P->valid[j][r] != 0 : 1;
    if (!str) {
      memcpy(all + at * es, P->vals[j], (size_t)(P->nrows * es));
    } else {
      const uint64_t *off = (const uint64_t *)(void *)P->vals[j];
      for (uint64_t r = 0; rc == 0 && r < P->nrows; r++) {
        char *s = malloc((size_t)(off[r + 1] - off[r]) + 1);
        if (!s) { rc = -1; break; }
        memcpy(s, P->chars[j] + off[r], (size_t)(off[r + 1] - off[r]));
        s[off[r + 1] - off[r]] = '\0';
        ((char **)(void *)all)[at + r] = s;
      }
    }
    at += P->nrows;
  }
  hid_t st = -1;
  if (rc == 0 && str) {
    st = H5Tcopy(H5T_C_S1);
    if (st < 0 || H5Tset_size(st, H5T_VARIABLE) < 0 || H5Tset_cset(st, H5T_CSET_UTF8) < 0)
      rc = -1;
  }
  if (rc == 0) rc = write_1d(g, T->names[j], str ? st : sl__h5_native(t), rows, all);
  if (rc == 0 && any_valid) {
    size_t n = strlen(T->names[j]) + 7;
    char *vn = malloc(n);
    if (!vn) rc = -1;
    else snprintf(vn, n, "%s.valid", T->names[j]);
    if (rc == 0) rc = write_1d(g, vn, H5T_NATIVE_UINT8, rows, valid);
    free(vn);
  }
  if (st >= 0) H5Tclose(st);
  if (str && all)
    for (uint64_t r = 0; r < rows; r++) free(((char **)(void *)all)[r]);
  free(all);
  free(valid);
  return rc;
}

int sl__h5_tables_write(sl__h5_tables *T, int64_t fid, const char *group,
                        char *why, size_t len) {
  qsort(T->parts, T->n, sizeof *T->parts, cmp_part);
  uint64_t rows = 0;
  for (size_t i = 0; i < T->n; i++) rows += T->parts[i].nrows;
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  if (lcpl >= 0) H5Pset_create_intermediate_group(lcpl, 1);
  hid_t g = H5Gcreate2(fid, group, lcpl, H5P_DEFAULT, H5P_DEFAULT);
  if (lcpl >= 0) H5Pclose(lcpl);
  char eb[300];
  if (g < 0) {
    snprintf(why, len, "cannot create group %s: %s", group,
             sl__h5_error_text(eb, sizeof eb, "unknown error"));
    return -1;
  }
  int rc = 0;
  for (uint32_t j = 0; rc == 0 && j < T->ncols; j++)
    if (write_column(T, j, g, rows) < 0) {
      snprintf(why, len, "cannot write column '%s': %s", T->names[j],
               sl__h5_error_text(eb, sizeof eb, "out of memory"));
      rc = -1;
    }
  H5Gclose(g);
  return rc;
}
