/*
 * gen_csv.c -- writes the deterministic CSV that bench/csv/run.sh measures.
 *
 *   gen_csv FILE ROWS [--seed N]       (FILE "-" writes standard output)
 *
 * Columns (header line first, LF line ends, RFC 4180 quoting):
 *   id        0 .. ROWS-1
 *   key       integer 0..999 (so ~1000 distinct groups)
 *   x         uniform in [0, 10000) with exactly 4 decimals, e.g. 1234.5678;
 *             positive so that per-group sums and means are far from 0 and a
 *             relative tolerance between tools is meaningful
 *   y         uniform in (-1000, 1000) with 2 decimals
 *   z         integer 0..99999
 *   category  one of 50 names; 10 of them need quoting: 5 hold a comma
 *             ("Garden, Outdoor") and 5 a doubled quote ("12"" Vinyl")
 *   ts        YYYY-MM-DD HH:MM:SS, rising through 2024 with the row number
 * About 67 bytes a row: 10 M rows make ~650 MB.
 *
 * Row i is a pure function of (seed, i) (splitmix64 of the two), so the
 * same arguments give the same bytes. Fields are formatted by hand rather
 * than with printf: 10 M rows take about a second instead of ten. Uses no
 * sluice code (a benchmark input must not depend on what it measures).
 * The file is written to FILE.tmp and renamed when complete.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The 50 categories as written in the file (quoted where RFC 4180 needs
 * it); the value a parser must produce is the unquoted, un-doubled text. */
static const char *const CATEGORIES[50] = {
    "Toys", "Books", "Music", "Garden", "Tools", "Kitchen", "Sports", "Beauty",
    "Health", "Grocery", "Automotive", "Baby", "Clothing", "Shoes", "Jewelry",
    "Watches", "Electronics", "Computers", "Cameras", "Phones", "Software",
    "Games", "Movies", "Office", "Pets", "Crafts", "Furniture", "Lighting",
    "Bedding", "Bath", "Luggage", "Outdoor", "Fitness", "Cycling", "Camping",
    "Fishing", "Hunting", "Party", "Seasonal", "Industrial",
    "\"Garden, Outdoor\"", "\"Arts, Crafts & Sewing\"", "\"Tools, Hardware\"",
    "\"Food, Drink\"", "\"Books, Used\"",
    "\"12\"\" Vinyl\"", "\"Kid\"\"s Room\"", "\"\"\"Smart\"\" Home\"",
    "\"Men\"\"s, Big & Tall\"", "\"Collectibles \"\"Rare\"\"\""};

static uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* Writes v in decimal at p; returns the end. */
static char *put_u64(char *p, uint64_t v) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n) *p++ = tmp[--n];
  return p;
}

/* Writes v as exactly `width` digits (zero-padded). */
static char *put_fixed(char *p, uint64_t v, int width) {
  for (int i = width - 1; i >= 0; i--) {
    p[i] = (char)('0' + v % 10);
    v /= 10;
  }
  return p + width;
}

/* Writes units / 10^decimals with exactly `decimals` digits after the point. */
static char *put_decimal(char *p, int64_t units, int decimals, uint64_t scale) {
  if (units < 0) {
    *p++ = '-';
    units = -units;
  }
  p = put_u64(p, (uint64_t)units / scale);
  *p++ = '.';
  return put_fixed(p, (uint64_t)units % scale, decimals);
}

/* Civil date of days since 1970-01-01 (Howard Hinnant's algorithm). */
static void civil(int64_t days, int *y, int *m, int *d) {
  days += 719468;
  int64_t era = days / 146097;
  int64_t doe = days - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;
  *d = (int)(doy - (153 * mp + 2) / 5 + 1);
  *m = (int)(mp < 10 ? mp + 3 : mp - 9);
  *y = (int)(yoe + era * 400 + (*m <= 2));
}

/* Writes seconds since the epoch as YYYY-MM-DD HH:MM:SS. */
static char *put_ts(char *p, int64_t t) {
  int y, m, d;
  civil(t / 86400, &y, &m, &d);
  int64_t s = t % 86400;
  p = put_fixed(p, (uint64_t)y, 4);
  *p++ = '-';
  p = put_fixed(p, (uint64_t)m, 2);
  *p++ = '-';
  p = put_fixed(p, (uint64_t)d, 2);
  *p++ = ' ';
  p = put_fixed(p, (uint64_t)(s / 3600), 2);
  *p++ = ':';
  p = put_fixed(p, (uint64_t)(s / 60 % 60), 2);
  *p++ = ':';
  return put_fixed(p, (uint64_t)(s % 60), 2);
}

/* Formats row i at p; returns the end (at most ~120 bytes). */
static char *put_row(char *p, uint64_t seed, uint64_t i, uint64_t rows) {
  uint64_t r1 = splitmix64(seed ^ (i * 0x2545f4914f6cdd1dull));
  uint64_t r2 = splitmix64(r1);
  p = put_u64(p, i);
  *p++ = ',';
  p = put_u64(p, r1 % 1000);
  *p++ = ',';
  p = put_decimal(p, (int64_t)((r1 >> 10) % 100000000u), 4, 10000);
  *p++ = ',';
  p = put_decimal(p, (int64_t)((r2 % 199999u)) - 99999, 2, 100);
  *p++ = ',';
  p = put_u64(p, (r2 >> 20) % 100000u);
  *p++ = ',';
  const char *c = CATEGORIES[(r2 >> 40) % 50];
  size_t n = strlen(c);
  memcpy(p, c, n);
  p += n;
  *p++ = ',';
  /* 2024-01-01 00:00:00 UTC plus the row's share of the year, plus jitter */
  int64_t year = 366 * 86400;
  int64_t t = 1704067200 + (int64_t)((double)i / (double)(rows ? rows : 1) * (double)year) +
              (int64_t)((r2 >> 50) % 60);
  p = put_ts(p, t);
  *p++ = '\n';
  return p;
}

int main(int argc, char **argv) {
  if (argc != 3 && !(argc == 5 && strcmp(argv[3], "--seed") == 0)) {
    fprintf(stderr, "usage: gen_csv FILE ROWS [--seed N]\n");
    return 2;
  }
  const char *path = argv[1];
  char *end;
  errno = 0;
  uint64_t rows = strtoull(argv[2], &end, 10);
  if (errno || *end || end == argv[2]) {
    fprintf(stderr, "gen_csv: ROWS must be a number, not '%s'\n", argv[2]);
    return 2;
  }
  uint64_t seed = argc == 5 ? strtoull(argv[4], NULL, 10) : 42;

  int to_stdout = strcmp(path, "-") == 0;
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = to_stdout ? stdout : fopen(tmp, "wb");
  if (!f) {
    fprintf(stderr, "gen_csv: %s: %s\n", tmp, strerror(errno));
    return 1;
  }
  enum { BUF = 1 << 20, ROW_MAX = 256 };
  static char buf[BUF];
  char *p = buf;
  const char *header = "id,key,x,y,z,category,ts\n";
  memcpy(p, header, strlen(header));
  p += strlen(header);
  for (uint64_t i = 0; i < rows; i++) {
    if (p > buf + BUF - ROW_MAX) {
      if (fwrite(buf, 1, (size_t)(p - buf), f) != (size_t)(p - buf)) break;
      p = buf;
    }
    p = put_row(p, seed, i, rows);
  }
  fwrite(buf, 1, (size_t)(p - buf), f);
  if (ferror(f) || (!to_stdout && fclose(f) != 0) || (to_stdout && fflush(f) != 0)) {
    fprintf(stderr, "gen_csv: writing %s: %s\n", to_stdout ? "stdout" : tmp, strerror(errno));
    if (!to_stdout) remove(tmp);
    return 1;
  }
  if (!to_stdout && rename(tmp, path) != 0) {
    fprintf(stderr, "gen_csv: rename %s -> %s: %s\n", tmp, path, strerror(errno));
    remove(tmp);
    return 1;
  }
  return 0;
}
