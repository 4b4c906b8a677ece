/*
 * errors.c -- names and messages for SL_E* codes, generated from the one
 * SL_ERRNO_MAP table in sluice.h. Codes outside the table that look like
 * -errno fall back to the C library's description.
 */
#include "internal.h"

#include <string.h>

const char *sl_strerror(int err) {
  switch (err) {
  case SL_OK: return "success";
  case SL_DONE: return "done";
#define SL__ERR_TEXT(name, value, text) case SL_##name: return text;
    SL_ERRNO_MAP(SL__ERR_TEXT)
#undef SL__ERR_TEXT
  default: break;
  }
  if (err < 0 && err > -4000) {
    /* strerrordesc-like lookup without the thread-unsafe strerror buffer:
     * glibc's strerror returns static strings for known codes. */
    return strerror(-err);
  }
  return "unknown error";
}

const char *sl_err_name(int err) {
  switch (err) {
  case SL_OK: return "OK";
  case SL_DONE: return "DONE";
#define SL__ERR_NAME(name, value, text) case SL_##name: return #name;
    SL_ERRNO_MAP(SL__ERR_NAME)
#undef SL__ERR_NAME
  default: return "UNKNOWN";
  }
}
