/*
 * png_decode_bench.c -- single-threaded CPU time of png.decode's decoder on
 * a list of files, next to its floor: libdeflate inflating the same zlib
 * stream alone.
 *
 * usage: png_decode_bench [-r REPS] [-s] FILE.png...
 *
 * Each file is read into memory once; then, REPS times (default 3, the
 * minimum is kept), it times with CLOCK_THREAD_CPUTIME_ID:
 *   decode   sl_png_decoder_probe + sl_png_decoder_decode_into through
 *            one kept decoder into work_bytes (what a png.decode worker does
 *            per image: in place where the format allows); with -s the
 *            older way: sl_png_probe, then decode into stride*height bytes
 *            (rows inflated into the decoder's scratch, file scanned twice)
 *   inflate  the IDAT payloads concatenated and libdeflate_zlib_decompress
 *            into a kept buffer of the exact size (the floor under decode:
 *            any decoder must at least inflate)
 * and prints ms per image, MB/s of decoded output pixels and the share of
 * decode that the inflate floor is. Nothing is checked here: the tests
 * compare the decoder against libpng.
 */
#include <libdeflate.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../io/png_internal.h"

static double cpu_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static uint8_t *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *p = malloc(len > 0 ? (size_t)len : 1);
  if (p && fread(p, 1, (size_t)len, f) != (size_t)len) {
    free(p);
    p = NULL;
  }
  fclose(f);
  *n = (size_t)len;
  return p;
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
}

/* Concatenates the IDAT payloads of a valid PNG into *z. @return bytes. */
static size_t gather(const uint8_t *b, size_t n, uint8_t *z) {
  size_t at = 8, off = 0;
  while (at + 12 <= n) {
    uint32_t len = be32(b + at);
    if (!memcmp(b + at + 4, "IDAT", 4)) {
      memcpy(z + off, b + at + 8, len);
      off += len;
    }
    at += (size_t)len + 12;
  }
  return off;
}

int main(int argc, char **argv) {
  int reps = 3, first = 1, use_scratch = 0;
  for (;;) {
    if (first + 1 < argc && !strcmp(argv[first], "-r")) {
      reps = atoi(argv[first + 1]);
      first += 2;
    } else if (first < argc && !strcmp(argv[first], "-s")) {
      use_scratch = 1;
      first++;
    } else {
      break;
    }
  }
  if (first >= argc || reps < 1) {
    fprintf(stderr, "usage: png_decode_bench [-r REPS] [-s] FILE.png...\n");
    return 2;
  }
  sl_png_decoder *dec = sl_png_decoder_create(SIZE_MAX);
  struct libdeflate_decompressor *dc = libdeflate_alloc_decompressor();
  double sum_dec = 0, sum_inf = 0, sum_mb = 0;
  int files = 0;
  printf("%-28s %11s %8s %9s %8s %9s %7s\n", "file", "size", "MB out",
         "decode ms", "MB/s", "inflate ms", "share");
  for (int a = first; a < argc; a++) {
    size_t n;
    uint8_t *b = slurp(argv[a], &n);
    sl_png_info info;
    char err[256];
    if (!b || sl_png_probe(b, n, UINT64_MAX, UINT64_MAX, &info, err,
                           sizeof err) < 0) {
      fprintf(stderr, "%s: %s\n", argv[a], b ? err : "cannot read");
      free(b);
      continue;
    }
    size_t out = info.stride * info.height;
    size_t cap = use_scratch ? out : info.work_bytes;
    uint8_t *dst = malloc(cap), *z = malloc(n);
    /* filtered size: one filter byte per row more than the output (8-bit,
     * non-interlaced, no conversion: what the benchmark set holds; a
     * larger buffer only makes libdeflate report a short result) */
    size_t raw_cap = out + info.height + 16 * (size_t)info.height;
    uint8_t *raw = malloc(raw_cap);
    double best_dec = 1e9, best_inf = 1e9;
    int ok = 1;
    for (int r = 0; r < reps && ok; r++) {
      double t0 = cpu_now();
      sl_png_info pi;
      ok = (use_scratch ? sl_png_probe(b, n, UINT64_MAX, UINT64_MAX, &pi,
                                       err, sizeof err)
                        : sl_png_decoder_probe(dec, b, n, UINT64_MAX,
                                               UINT64_MAX, &pi, err,
                                               sizeof err)) == 0 &&
           sl_png_decoder_decode_into(dec, b, n, &pi, dst, cap, err,
                                      sizeof err) == 0;
      double t1 = cpu_now();
      size_t zn = gather(b, n, z), got = 0;
      libdeflate_zlib_decompress(dc, z, zn, raw, raw_cap, &got);
      double t2 = cpu_now();
      if (t1 - t0 < best_dec) best_dec = t1 - t0;
      if (t2 - t1 < best_inf) best_inf = t2 - t1;
    }
    if (!ok) {
      fprintf(stderr, "%s: %s\n", argv[a], err);
    } else {
      const char *base = strrchr(argv[a], '/');
      double mb = out / 1e6;
      printf("%-28s %5ux%-5u %8.1f %9.1f %8.0f %9.1f %6.0f%%\n",
             base ? base + 1 : argv[a], info.width, info.height, mb,
             best_dec * 1e3, mb / best_dec, best_inf * 1e3,
             100 * best_inf / best_dec);
      sum_dec += best_dec;
      sum_inf += best_inf;
      sum_mb += mb;
      files++;
    }
    free(b);
    free(dst);
    free(z);
    free(raw);
  }
  if (files)
    printf("TOTAL %d files: decode %.1f ms/image, %.0f MB/s; inflate floor "
           "%.1f ms/image (%.0f%% of decode)\n", files, sum_dec * 1e3 / files,
           sum_mb / sum_dec, sum_inf * 1e3 / files, 100 * sum_inf / sum_dec);
  sl_png_decoder_destroy(dec);
  libdeflate_free_decompressor(dc);
  return files ? 0 : 1;
}
