/*
 * h5_convert.c -- byte swapping and numeric conversion for h5.decode.
 *
 * The common cases are straight loops: same type (memcpy) and same type in
 * the other byte order (a swap per element). Anything else goes through one
 * exact intermediate per element: int64, uint64 or double. Conversions to
 * an integer type are checked (out of range, NaN, inf are errors naming the
 * element), because a silently wrapped value is a wrong answer; conversions
 * to float follow C (and numpy): rounding to nearest.
 */
#include <math.h>
#include <string.h>

#include "h5_internal.h"

typedef enum { K_INT, K_UINT, K_FLOAT } kind;

typedef struct value {
  kind k;
  int64_t i;
  uint64_t u;
  double f;
} value;

static kind dtype_kind(sl_dtype t) {
  switch (t) {
  case SL_DT_I8: case SL_DT_I16: case SL_DT_I32: case SL_DT_I64: return K_INT;
  case SL_DT_F32: case SL_DT_F64: return K_FLOAT;
  default: return K_UINT;
  }
}

static void swap_bytes(unsigned char *p, size_t size) {
  for (size_t a = 0, b = size - 1; a < b; a++, b--) {
    unsigned char t = p[a];
    p[a] = p[b];
    p[b] = t;
  }
}

/* Swaps n elements of `size` bytes from src into dst. */
static void swap_copy(unsigned char *dst, const unsigned char *src, size_t size,
                      size_t n) {
  switch (size) {
  case 2:
    for (size_t i = 0; i < n; i++) {
      uint16_t v;
      memcpy(&v, src + 2 * i, 2);
      v = __builtin_bswap16(v);
      memcpy(dst + 2 * i, &v, 2);
    }
    return;
  case 4:
    for (size_t i = 0; i < n; i++) {
      uint32_t v;
      memcpy(&v, src + 4 * i, 4);
      v = __builtin_bswap32(v);
      memcpy(dst + 4 * i, &v, 4);
    }
    return;
  case 8:
    for (size_t i = 0; i < n; i++) {
      uint64_t v;
      memcpy(&v, src + 8 * i, 8);
      v = __builtin_bswap64(v);
      memcpy(dst + 8 * i, &v, 8);
    }
    return;
  default:
    memmove(dst, src, size * n);
  }
}

static value load(const unsigned char *p, sl_dtype t, bool swap) {
  unsigned char b[8];
  size_t size = sl_dtype_size(t);
  memcpy(b, p, size);
  if (swap) swap_bytes(b, size);
  value v = {dtype_kind(t), 0, 0, 0};
  switch (t) {
  case SL_DT_I8: { int8_t x; memcpy(&x, b, 1); v.i = x; break; }
  case SL_DT_I16: { int16_t x; memcpy(&x, b, 2); v.i = x; break; }
  case SL_DT_I32: { int32_t x; memcpy(&x, b, 4); v.i = x; break; }
  case SL_DT_I64: memcpy(&v.i, b, 8); break;
  case SL_DT_BOOL: case SL_DT_U8: v.u = b[0]; break;
  case SL_DT_U16: { uint16_t x; memcpy(&x, b, 2); v.u = x; break; }
  case SL_DT_U32: { uint32_t x; memcpy(&x, b, 4); v.u = x; break; }
  case SL_DT_U64: memcpy(&v.u, b, 8); break;
  case SL_DT_F32: { float x; memcpy(&x, b, 4); v.f = x; break; }
  case SL_DT_F64: memcpy(&v.f, b, 8); break;
  default: break;
  }
  return v;
}

/* Integer range of t: [lo, hi] as int64 for signed, [0, uhi] unsigned. */
static void int_range(sl_dtype t, int64_t *lo, int64_t *hi, uint64_t *uhi) {
  switch (t) {
  case SL_DT_I8: *lo = INT8_MIN; *hi = INT8_MAX; break;
  case SL_DT_I16: *lo = INT16_MIN; *hi = INT16_MAX; break;
  case SL_DT_I32: *lo = INT32_MIN; *hi = INT32_MAX; break;
  case SL_DT_I64: *lo = INT64_MIN; *hi = INT64_MAX; break;
  case SL_DT_U8: case SL_DT_BOOL: *uhi = UINT8_MAX; break;
  case SL_DT_U16: *uhi = UINT16_MAX; break;
  case SL_DT_U32: *uhi = UINT32_MAX; break;
  default: *uhi = UINT64_MAX; break;
  }
}

/* Brings v to an exact integer of t's kind. @return false when it does
 * not fit. */
static bool to_int(value *v, sl_dtype t) {
  int64_t lo = 0, hi = 0;
  uint64_t uhi = 0;
  int_range(t, &lo, &hi, &uhi);
  bool sign = dtype_kind(t) == K_INT;
  if (v->k == K_FLOAT) {
    double f = v->f;
    if (isnan(f)) return false;
    f = trunc(f);
    if (sign) {
      if (!(f >= -9223372036854775808.0 && f < 9223372036854775808.0)) return false;
      v->i = (int64_t)f;
      v->k = K_INT;
    } else {
      if (!(f >= 0 && f < 18446744073709551616.0)) return false;
      v->u = (uint64_t)f;
      v->k = K_UINT;
    }
  }
  if (sign) {
    if (v->k == K_UINT) {
      if (v->u > (uint64_t)INT64_MAX) return false;
      v->i = (int64_t)v->u;
    }
    return v->i >= lo && v->i <= hi;
  }
  if (v->k == K_INT) {
    if (v->i < 0) return false;
    v->u = (uint64_t)v->i;
  }
  return v->u <= uhi;
}

/* Stores v as t at p. @return false when it does not fit. */
static bool store(unsigned char *p, sl_dtype t, value v) {
  if (t == SL_DT_F32 || t == SL_DT_F64) {
    double f = v.k == K_FLOAT ? v.f : v.k == K_INT ? (double)v.i : (double)v.u;
    if (t == SL_DT_F64) {
      memcpy(p, &f, 8);
    } else {
      /* Integers go straight to float (one rounding, as numpy). */
      float x = v.k == K_FLOAT ? (float)v.f
                : v.k == K_INT ? (float)v.i : (float)v.u;
      memcpy(p, &x, 4);
    }
    return true;
  }
  if (!to_int(&v, t)) return false;
  switch (t) {
  case SL_DT_I8: { int8_t x = (int8_t)v.i; memcpy(p, &x, 1); break; }
  case SL_DT_I16: { int16_t x = (int16_t)v.i; memcpy(p, &x, 2); break; }
  case SL_DT_I32: { int32_t x = (int32_t)v.i; memcpy(p, &x, 4); break; }
  case SL_DT_I64: memcpy(p, &v.i, 8); break;
  case SL_DT_U8: case SL_DT_BOOL: p[0] = (unsigned char)v.u; break;
  case SL_DT_U16: { uint16_t x = (uint16_t)v.u; memcpy(p, &x, 2); break; }
  case SL_DT_U32: { uint32_t x = (uint32_t)v.u; memcpy(p, &x, 4); break; }
  default: memcpy(p, &v.u, 8); break;
  }
  return true;
}

int sl__h5_convert(void *dst, sl_dtype dt, const void *src, sl_dtype st,
                   bool swap, size_t n, size_t *bad) {
  size_t ss = sl_dtype_size(st), ds = sl_dtype_size(dt);
  if (ss <= 1) swap = false;
  if (dt == st) {
    if (swap) swap_copy(dst, src, ss, n);
    else if (dst != src) memmove(dst, src, ss * n);
    return 0;
  }
  if (dt == SL_DT_F64 && st == SL_DT_F32 && !swap) {
    const float *s = src;
    double *d = dst;
    for (size_t i = 0; i < n; i++) d[i] = s[i];
    return 0;
  }
  const unsigned char *s = src;
  unsigned char *d = dst;
  for (size_t i = 0; i < n; i++) {
    if (!store(d + i * ds, dt, load(s + i * ss, st, swap))) {
      *bad = i;
      return 1;
    }
  }
  return 0;
}
