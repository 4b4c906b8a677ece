/*
 * csv_read.c -- `csv.read`, a source that cuts a CSV file (or stdin, plain
 * or zstd) into chunks of whole records.
 *
 * Reading. The input is read sequentially in large requests straight into
 * the arena block that becomes the next chunk (zstd input is decoded into
 * it with ZSTD_decompressStream from a 1 MiB input buffer: bounded memory
 * whatever the frame claims, window capped by window_log_max). Nothing is
 * ever allocated from a size the input declares.
 *
 * Cutting. A chunk is cut after the last LF of the block that lies outside
 * quoted fields. Strict RFC 4180 input (the default) makes this a counting
 * problem: every quote toggles "inside quotes" (a doubled quote toggles
 * twice), so an LF is a record boundary iff an even number of quotes
 * precede it in the block (blocks start at a record boundary). One SSE2
 * pass counts quotes and LFs, then a short backward walk finds the last
 * even LF (sl__csv_find_cut). With quotes=lenient (quotes kept literally
 * inside unquoted fields) parity no longer works, so the tokenizer itself
 * finds the last complete record (slower, exact). The bytes after the cut
 * are carried to the next block; a record longer than the block grows it
 * (doubling) up to max_record, beyond which the record is an error naming
 * its first line. Chunks are therefore independent and parsed in
 * parallel downstream.
 *
 * Header. A UTF-8 BOM is skipped; a UTF-16 BOM is an error. With
 * header=true the first record (after blank lines) is the header: split
 * with the shared tokenizer, checked for duplicate names, passed on raw in
 * "csv.header" and not included in any chunk. Types are inferred from the
 * first chunk (infer=true) and attached as "csv.types". A file with a
 * header and no rows yields one empty chunk so that downstream still sees
 * the columns.
 *
 * Line numbers: item->line is the global 1-based line of the chunk's first
 * byte (the header counts), found by counting LFs of every emitted chunk.
 *
 * A source has one worker: all state is in its local `reader`, no locks.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "csv_internal.h"
#include "io_internal.h"

size_t sl__csv_read_chunk_override;

#define ZIN_SIZE ((size_t)1 << 20) /* compressed bytes per read() */

typedef struct read_params {
  const char *file;
  uint64_t chunk;
  const char *delim;
  const char *quote;
  bool header;
  int compression; /* 0 auto, 1 none, 2 zstd */
  int64_t window_log_max;
  bool infer;
  uint64_t max_record;
  int quotes; /* 0 strict, 1 lenient */
} read_params;

typedef struct reader {
  const read_params *p;
  sl_worker *w;
  sl__csv_dialect d;
  int fd;
  bool own_fd;
  const char *shown; /* file name for messages ("stdin" for -) */
  const char *base;  /* basename for item names */
  /* Input: raw bytes in `in` (the first bytes are always read here to
   * sniff the format); zstd decodes from it, plain input is served from it
   * first and then read directly. */
  unsigned char *in;
  size_t in_len, in_pos;
  bool in_eof, in_any;
  ZSTD_DCtx *z;
  size_t zret; /* last ZSTD_decompressStream hint: 0 = at a frame end */
  bool eof;    /* no more decoded bytes */
  /* Bytes read past the last cut, starting at a record boundary. */
  unsigned char *carry;
  size_t carry_len, carry_cap;
  uint64_t line; /* line of carry[0] */
  uint64_t seq;
  size_t chunk;
  char *header, *types;
  size_t ncols;
  char ncols_text[24];
  bool started, done, emitted;
} reader;

/* ---------------------------------------------------------------------- */
/* dialect                                                                 */

const char *sl__csv_dialect_parse(const char *delim, const char *quote,
                                  bool lenient, sl__csv_dialect *d) {
  if (strcmp(delim, "\\t") == 0 || strcmp(delim, "tab") == 0) delim = "\t";
  if (strlen(delim) != 1) return "delim= must be one byte, \\t or tab";
  if (strlen(quote) != 1) return "quote= must be one byte";
  if (*delim == '\n' || *delim == '\r' || *quote == '\n' || *quote == '\r')
    return "delim= and quote= cannot be CR or LF";
  if (*delim == *quote) return "delim= and quote= must differ";
  d->delim = (unsigned char)*delim;
  d->quote = (unsigned char)*quote;
  d->lenient = lenient;
  return NULL;
}

/* ---------------------------------------------------------------------- */
/* boundaries                                                              */

void sl__csv_count2(const unsigned char *p, size_t n, unsigned char a,
                    unsigned char b, uint64_t *na, uint64_t *nb) {
  uint64_t ca = 0, cb = 0;
  size_t i = 0;
#ifdef SL__CSV_SSE2
  const __m128i va = _mm_set1_epi8((char)a), vb = _mm_set1_epi8((char)b);
  const __m128i zero = _mm_setzero_si128();
  while (n - i >= 16) {
    __m128i acca = zero, accb = zero; /* per-byte counters, < 256 adds */
    size_t blocks = (n - i) / 16 < 255 ? (n - i) / 16 : 255;
    for (size_t k = 0; k < blocks; k++, i += 16) {
      __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
      acca = _mm_sub_epi8(acca, _mm_cmpeq_epi8(x, va));
      accb = _mm_sub_epi8(accb, _mm_cmpeq_epi8(x, vb));
    }
    uint64_t t[2];
    _mm_storeu_si128((__m128i *)(void *)t, _mm_sad_epu8(acca, zero));
    ca += t[0] + t[1];
    _mm_storeu_si128((__m128i *)(void *)t, _mm_sad_epu8(accb, zero));
    cb += t[0] + t[1];
  }
#endif
  for (; i < n; i++) {
    ca += p[i] == a;
    cb += p[i] == b;
  }
  *na = ca;
  *nb = cb;
}

size_t sl__csv_find_cut(const unsigned char *buf, size_t len,
                        unsigned char quote, uint64_t *lines) {
  uint64_t q, nl;
  sl__csv_count2(buf, len, quote, '\n', &q, &nl);
  uint64_t q_after = 0, nl_after = 0;
  for (size_t i = len; i-- > 0;) {
    unsigned char c = buf[i];
    if (c == quote) {
      q_after++;
    } else if (c == '\n') {
      if (((q - q_after) & 1) == 0) {
        *lines = nl - nl_after;
        return i + 1;
      }
      nl_after++;
    }
  }
  *lines = 0;
  return 0;
}

static uint64_t count_lf(const unsigned char *p, size_t n) {
  uint64_t a, b;
  sl__csv_count2(p, n, '\n', '\n', &a, &b);
  return a;
}

size_t sl__csv_find_cut_exact(const unsigned char *buf, size_t len,
                              const sl__csv_dialect *d, uint64_t *lines) {
  sl__csv_scan s;
  sl__csv_scan_init(&s, buf, len, d, 1);
  size_t cut = 0;
  while (sl__csv_row_begin(&s)) {
    int t;
    sl__csv_field f;
    do t = sl__csv_next_field(&s, &f);
    while (t == SL__CSV_FIELD);
    if (t == SL__CSV_EOPEN) break; /* the record continues past buf */
    if (t < 0) { /* malformed: csv.parse reports it; resync at next LF */
      const unsigned char *nl = memchr(s.err, '\n', (size_t)(s.end - s.err));
      if (!nl) break;
      cut = (size_t)(nl + 1 - buf);
      sl__csv_scan_init(&s, nl + 1, (size_t)(s.end - nl - 1), d, 1);
      continue;
    }
    if (s.p[-1] != '\n') break; /* ends at the end of buf: maybe partial */
    cut = (size_t)(s.p - buf);
  }
  *lines = count_lf(buf, cut);
  return cut;
}

/* ---------------------------------------------------------------------- */
/* input                                                                   */

static int sys_error(reader *R, const char *what, int errnum) {
  char eb[128];
  return sl_worker_errorf(R->w, "%s: %s: %s", R->shown, what,
                          sl__io_strerror(errnum, eb, sizeof eb));
}

/* Reads raw bytes into R->in when it is used up. @return 0 or error. */
static int raw_refill(reader *R) {
  if (R->in_pos < R->in_len || R->in_eof) return 0;
  ssize_t n;
  while ((n = read(R->fd, R->in, ZIN_SIZE)) < 0 && errno == EINTR) {}
  if (n < 0) return sys_error(R, "read", errno);
  R->in_len = (size_t)n;
  R->in_pos = 0;
  R->in_eof = n == 0;
  R->in_any |= n > 0;
  return 0;
}

/* Plain input: bytes left in R->in first, then read() into dst.
 * @return bytes (0 at the end) or an error. */
static ssize_t plain_read(reader *R, unsigned char *dst, size_t want) {
  if (R->in_pos < R->in_len) {
    size_t k = R->in_len - R->in_pos < want ? R->in_len - R->in_pos : want;
    memcpy(dst, R->in + R->in_pos, k);
    R->in_pos += k;
    return (ssize_t)k;
  }
  ssize_t n;
  while ((n = read(R->fd, dst, want)) < 0 && errno == EINTR) {}
  if (n < 0) return sys_error(R, "read", errno);
  return n;
}

/* The window the frame at the start of the raw input asks for (RFC 8878
 * 3.1.1.1: Window_Descriptor, or the content size of a single-segment
 * frame), for messages. @return 0 when it cannot tell. */
static uint64_t frame_window(const unsigned char *b, size_t n) {
  if (n < 6 || b[0] != 0x28 || b[1] != 0xB5 || b[2] != 0x2F || b[3] != 0xFD) return 0;
  unsigned fhd = b[4];
  if (!(fhd & 0x20)) { /* Window_Descriptor follows */
    unsigned wd = b[5], log = 10 + (wd >> 3);
    uint64_t base = UINT64_C(1) << log;
    return base + (base / 8) * (wd & 7);
  }
  static const size_t did_size[] = {0, 1, 2, 4}, fcs_size[] = {1, 2, 4, 8};
  size_t at = 5 + did_size[fhd & 3], k = fcs_size[fhd >> 6];
  if (n < at + k) return 0;
  uint64_t v = 0;
  for (size_t i = 0; i < k; i++) v |= (uint64_t)b[at + i] << (8 * i);
  return k == 2 ? v + 256 : v;
}

static int zstd_error(reader *R, size_t ret) {
  if (ZSTD_getErrorCode(ret) != ZSTD_error_frameParameter_windowTooLarge)
    return sl_worker_errorf(R->w, "%s: corrupt zstd input: %s", R->shown,
                            ZSTD_getErrorName(ret));
  uint64_t need = frame_window(R->in, R->in_len);
  char a[32] = "a larger", b[32];
  if (need) sl__io_format_size(need, a, sizeof a);
  sl__io_format_size(UINT64_C(1) << R->p->window_log_max, b, sizeof b);
  if (need > (UINT64_C(1) << 31))
    return sl_worker_errorf(R->w, "%s: zstd frame asks for a %s window, more "
                            "than zstd allows (2.0 GiB): corrupt or hostile input",
                            R->shown, a);
  return sl_worker_errorf(R->w, "%s: zstd frame needs %s%s window, above "
                          "window_log_max=%d (%s); raise window_log_max (at most "
                          "31) only for trusted input", R->shown, need ? "a " : "",
                          a, (int)R->p->window_log_max, b);
}

/* zstd input: decodes into dst. @return bytes (0 at a clean end after a
 * complete frame) or an error (truncated, corrupt, empty). */
static ssize_t zstd_read(reader *R, unsigned char *dst, size_t want) {
  for (;;) {
    int rc = raw_refill(R);
    if (rc < 0) return rc;
    ZSTD_inBuffer in = {R->in, R->in_len, R->in_pos};
    ZSTD_outBuffer out = {dst, want, 0};
    bool had_input = in.pos < in.size; /* else the input is at its end */
    size_t ret = ZSTD_decompressStream(R->z, &out, &in);
    if (ZSTD_isError(ret)) return zstd_error(R, ret);
    R->in_pos = in.pos;
    /* The hint of a call without input (a flush) means nothing unless it
     * produced output: after a finished frame it asks for a new header. */
    if (had_input || out.pos) R->zret = ret;
    if (out.pos) return (ssize_t)out.pos;
    if (had_input) continue;
    if (!R->in_any)
      return sl_worker_errorf(R->w, "%s: empty zstd input (no frame)", R->shown);
    if (R->zret != 0)
      return sl_worker_errorf(R->w, "%s: truncated zstd input (the last "
                                    "frame is incomplete)", R->shown);
    return 0;
  }
}

/* Fills buf[*len, cap) as far as the input allows; sets R->eof at the
 * end. @return 0, SL_ECANCELED or an error. */
static int fill(reader *R, unsigned char *buf, size_t *len, size_t cap) {
  while (*len < cap && !R->eof) {
    if (sl_worker_canceled(R->w)) return SL_ECANCELED;
    ssize_t n = R->z ? zstd_read(R, buf + *len, cap - *len)
                     : plain_read(R, buf + *len, cap - *len);
    if (n < 0) return (int)n;
    if (n == 0) R->eof = true;
    *len += (size_t)n;
  }
  return 0;
}

/* ---------------------------------------------------------------------- */
/* opening                                                                 */

static bool is_zstd_magic(const unsigned char *b, size_t n) {
  if (n < 4) return false;
  if (b[0] == 0x28 && b[1] == 0xB5 && b[2] == 0x2F && b[3] == 0xFD) return true;
  return (b[0] & 0xF0) == 0x50 && b[1] == 0x2A && b[2] == 0x4D && b[3] == 0x18;
}

static bool has_suffix(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Opens the input and decides plain or zstd from the first bytes. */
static int open_input(reader *R) {
  const read_params *p = R->p;
  if (strcmp(p->file, "-") == 0) {
    R->fd = 0;
  } else {
    while ((R->fd = open(p->file, O_RDONLY | O_CLOEXEC)) < 0 && errno == EINTR) {}
    if (R->fd < 0) return sys_error(R, "open", errno);
    R->own_fd = true;
    struct stat st;
    if (fstat(R->fd, &st) == 0 && S_ISREG(st.st_mode) && p->compression != 2 &&
        !has_suffix(p->file, ".zst"))
      sl_worker_set_total(R->w, (uint64_t)st.st_size / R->chunk + 1);
  }
  if (!(R->in = malloc(ZIN_SIZE))) return SL_ENOMEM;
  int rc = raw_refill(R);
  if (rc < 0) return rc;
  bool zstd = p->compression == 2 ||
              (p->compression == 0 && (has_suffix(p->file, ".zst") ||
                                       is_zstd_magic(R->in, R->in_len)));
  if (!zstd) return 0;
  if (!(R->z = ZSTD_createDCtx())) return SL_ENOMEM;
  size_t r = ZSTD_DCtx_setParameter(R->z, ZSTD_d_windowLogMax,
                                    (int)p->window_log_max);
  if (ZSTD_isError(r)) return zstd_error(R, r);
  return 0;
}

/* Appends to the carry buffer up to `more` new bytes of input. */
static int carry_more(reader *R, size_t more) {
  if (R->carry_cap - R->carry_len < more) {
    size_t cap = R->carry_cap ? R->carry_cap : 65536;
    while (cap - R->carry_len < more) cap *= 2;
    unsigned char *c = realloc(R->carry, cap);
    if (!c) return SL_ENOMEM;
    R->carry = c;
    R->carry_cap = cap;
  }
  return fill(R, R->carry, &R->carry_len, R->carry_len + more);
}

/* Skips a UTF-8 BOM, refuses UTF-16/32 ones. */
static int check_bom(reader *R) {
  const unsigned char *b = R->carry;
  if (R->carry_len >= 2 && ((b[0] == 0xFF && b[1] == 0xFE) ||
                            (b[0] == 0xFE && b[1] == 0xFF)))
    return sl_worker_errorf(R->w, "%s:1: unsupported encoding: UTF-16 (byte-"
                            "order mark %02X %02X); convert the file to UTF-8",
                            R->shown, b[0], b[1]);
  if (R->carry_len >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF) {
    memmove(R->carry, R->carry + 3, R->carry_len - 3);
    R->carry_len -= 3;
  }
  return 0;
}

enum { REC_MORE = 0, REC_FOUND = 1, REC_NONE = 2 };

/* Finds the first record in carry. @return REC_FOUND with [*start, *end)
 * and *next_line, REC_MORE when more input is needed, REC_NONE when there
 * is no record at all, or an error. */
static int first_record(reader *R, size_t *start, size_t *end,
                        uint64_t *next_line) {
  sl__csv_scan s;
  sl__csv_scan_init(&s, R->carry, R->carry_len, &R->d, R->line);
  if (!sl__csv_row_begin(&s)) return R->eof ? REC_NONE : REC_MORE;
  *start = (size_t)(s.p - R->carry);
  uint64_t line = s.line;
  int t;
  sl__csv_field f;
  do t = sl__csv_next_field(&s, &f);
  while (t == SL__CSV_FIELD);
  if (t == SL__CSV_EOPEN && !R->eof) return REC_MORE;
  if (t < 0)
    return sl_worker_errorf(R->w, "%s:%" PRIu64 ": first record: %s", R->shown,
                            t == SL__CSV_EAFTER ? s.line : line,
                            sl__csv_error_text(t));
  if (s.p == s.end && !R->eof && s.p[-1] != '\n') return REC_MORE;
  *end = (size_t)(s.p - R->carry);
  *next_line = s.line;
  return REC_FOUND;
}

typedef struct named {
  const char *name;
  size_t index;
} named;

static int cmp_named(const void *a, const void *b) {
  const named *x = a, *y = b;
  int c = strcmp(x->name, y->name);
  return c ? c : x->index < y->index ? -1 : x->index > y->index;
}

/* Checks header names for duplicates (sorted copy: O(n log n), so a
 * 100000-column header is fine). */
static int check_duplicates(reader *R, char **names, size_t n) {
  named *v = malloc((n ? n : 1) * sizeof *v);
  if (!v) return SL_ENOMEM;
  for (size_t i = 0; i < n; i++) v[i] = (named){names[i], i};
  qsort(v, n, sizeof *v, cmp_named);
  int rc = 0;
  for (size_t i = 1; i < n && rc == 0; i++)
    if (strcmp(v[i - 1].name, v[i].name) == 0)
      rc = sl_worker_errorf(R->w, "%s:%" PRIu64 ": duplicate column name \"%s\" "
                            "(columns %zu and %zu); rename one", R->shown,
                            R->line, v[i].name, v[i - 1].index + 1,
                            v[i].index + 1);
  free(v);
  return rc;
}

/* Splits the first record into column names (header) or just counts its
 * fields (no header). */
static int read_columns(reader *R, size_t start, size_t end) {
  size_t e = end;
  if (e > start && R->carry[e - 1] == '\n') e--;
  if (e > start && R->carry[e - 1] == '\r') e--;
  char **names = NULL;
  long n = sl__csv_split_record(R->carry + start, e - start, &R->d, &names);
  if (n < 0)
    return n == SL_ENOMEM - 100 ? SL_ENOMEM
                                : sl_worker_errorf(R->w, "%s:%" PRIu64 ": %s",
                                                   R->shown, R->line,
                                                   sl__csv_error_text((int)n));
  R->ncols = (size_t)n;
  int rc = R->p->header ? check_duplicates(R, names, R->ncols) : 0;
  sl__csv_free_names(names, R->ncols);
  if (rc < 0 || !R->p->header) return rc;
  if (!(R->header = malloc(e - start + 1))) return SL_ENOMEM;
  memcpy(R->header, R->carry + start, e - start);
  R->header[e - start] = '\0';
  return 0;
}

/* Reads until the first record is complete; with header=true consumes
 * it. @return 0, SL_DONE (no record at all) or an error. */
static int read_first_record(reader *R) {
  for (;;) {
    size_t start = 0, end = 0;
    uint64_t next_line = R->line;
    int rc = first_record(R, &start, &end, &next_line);
    if (rc == REC_NONE && R->p->header)
      return sl_worker_errorf(R->w, "%s: empty input: no header line", R->shown);
    if (rc == REC_NONE) return SL_DONE;
    if (rc < 0) return rc;
    if (rc == REC_FOUND) {
      if ((rc = read_columns(R, start, end)) < 0) return rc;
      if (R->p->header) {
        memmove(R->carry, R->carry + end, R->carry_len - end);
        R->carry_len -= end;
        R->line = next_line;
      }
      return 0;
    }
    if (R->carry_len >= R->p->max_record)
      return sl_worker_errorf(R->w, "%s:%" PRIu64 ": the first record is longer "
                              "than max_record=%" PRIu64 " bytes", R->shown,
                              R->line, R->p->max_record);
    if ((rc = carry_more(R, R->carry_len ? R->carry_len : 65536)) < 0) return rc;
  }
}

static int start(reader *R) {
  int rc = open_input(R);
  if (rc == 0) rc = carry_more(R, 65536);
  if (rc == 0) rc = check_bom(R);
  if (rc == 0) rc = read_first_record(R);
  if (rc == SL_DONE) R->done = true; /* no header, no records */
  return rc == SL_DONE ? 0 : rc;
}

/* ---------------------------------------------------------------------- */
/* chunks                                                                  */

/* Finds where to cut buf[0, len). @return 0 with *cut (> 0) and *lines,
 * 1 when more input is needed, or an error (unclosed quote at the end). */
static int find_cut(reader *R, const unsigned char *buf, size_t len,
                    size_t *cut, uint64_t *lines) {
  if (!R->eof) {
    *cut = R->d.lenient ? sl__csv_find_cut_exact(buf, len, &R->d, lines)
                        : sl__csv_find_cut(buf, len, R->d.quote, lines);
    return *cut ? 0 : 1;
  }
  /* At the end everything left is the last records, unless a quoted
   * field is still open. Strict parity only says that some quote is
   * unbalanced: the tokenizer tells an unclosed field (reported here)
   * from a stray quote (csv.parse reports it with its column). */
  bool open = false;
  uint64_t line = 0;
  uint64_t q, nl;
  sl__csv_count2(buf, len, R->d.quote, '\n', &q, &nl);
  if (R->d.lenient || (q & 1)) {
    sl__csv_scan s;
    sl__csv_scan_init(&s, buf, len, &R->d, R->line);
    bool bad = false;
    while (!bad && sl__csv_row_begin(&s)) {
      int t;
      sl__csv_field f;
      do t = sl__csv_next_field(&s, &f);
      while (t == SL__CSV_FIELD);
      open = t == SL__CSV_EOPEN;
      bad = t < 0;
    }
    if (open) line = R->line + count_lf(buf, (size_t)(s.err - buf));
  }
  if (open)
    return sl_worker_errorf(R->w, "%s:%" PRIu64 ": unterminated quoted field: "
                            "the quote opened on this line is not closed at "
                            "the end of the input", R->shown, line);
  *cut = len;
  *lines = nl;
  return 0;
}

/* Replaces *b (holding *len bytes) with a block of `cap` bytes. */
static int regrow(reader *R, sl_block **b, size_t len, size_t cap) {
  sl_block *nb = NULL;
  int rc = sl_worker_alloc(R->w, cap, &nb);
  if (rc < 0) {
    if (rc == SL_ECANCELED) return rc;
    return sl_worker_errorf(R->w, "%s:%" PRIu64 ": cannot allocate %zu bytes "
                            "for a long record: %s", R->shown, R->line, cap,
                            sl_strerror(rc));
  }
  if (*b) {
    memcpy(sl_block_data(nb), sl_block_data(*b), len);
    sl_block_release(*b);
  } else if (len) {
    memcpy(sl_block_data(nb), R->carry, len);
  }
  *b = nb;
  return 0;
}

/* Gets the next block of whole records: *b holds [0, *cut) plus a tail
 * up to *len. @return 0, SL_DONE (no more data) or an error. */
static int next_block(reader *R, sl_block **b, size_t *len, size_t *cut,
                      uint64_t *lines) {
  if (R->carry_len == 0 && R->eof) return SL_DONE;
  size_t cap = R->chunk > 2 * R->carry_len ? R->chunk : 2 * R->carry_len;
  *len = R->carry_len;
  int rc = regrow(R, b, *len, cap);
  for (;;) {
    if (rc == 0) rc = fill(R, sl_block_data(*b), len, cap);
    if (rc < 0) return rc;
    if (*len == 0 && R->eof) return SL_DONE;
    rc = find_cut(R, sl_block_data(*b), *len, cut, lines);
    if (rc <= 0) return rc;
    if (cap >= R->p->max_record)
      return sl_worker_errorf(R->w, "%s:%" PRIu64 ": a record starting on this "
                              "line is longer than max_record=%" PRIu64 " bytes%s",
                              R->shown, R->line, R->p->max_record,
                              R->d.lenient ? "" : " (or a quote is unbalanced)");
    size_t ncap = 2 * cap < R->p->max_record ? 2 * cap : (size_t)R->p->max_record;
    rc = regrow(R, b, *len, ncap);
    cap = ncap;
  }
}

/* "csv.types" from the first chunk. */
static int infer(reader *R, const unsigned char *data, size_t len) {
  sl_dtype *t = malloc(R->ncols * sizeof *t);
  if (!t) return SL_ENOMEM;
  int rc = sl__csv_infer_types(data, len, &R->d, R->ncols, t);
  size_t cap = R->ncols * 8 + 1, o = 0;
  if (rc == 0 && !(R->types = malloc(cap))) rc = SL_ENOMEM;
  for (size_t j = 0; rc == 0 && j < R->ncols; j++)
    o += (size_t)snprintf(R->types + o, cap - o, "%s%s", j ? "," : "",
                          sl__csv_type_name(t[j]));
  free(t);
  return rc;
}

static int set_meta(reader *R, sl_item *it) {
  char delim[2] = {(char)R->d.delim, 0}, quote[2] = {(char)R->d.quote, 0};
  int rc = sl_item_meta_set(it, "csv.file", R->shown);
  if (rc == 0) rc = sl_item_meta_set(it, "csv.delim", delim);
  if (rc == 0) rc = sl_item_meta_set(it, "csv.quote", quote);
  if (rc == 0) rc = sl_item_meta_set(it, "csv.ncols", R->ncols_text);
  if (rc == 0 && R->header) rc = sl_item_meta_set(it, "csv.header", R->header);
  if (rc == 0 && R->types) rc = sl_item_meta_set(it, "csv.types", R->types);
  if (rc == 0 && R->d.lenient) rc = sl_item_meta_set(it, "csv.quotes", "lenient");
  return rc;
}

/* Wraps block b[0, size) (b may be NULL for an empty chunk) as item seq. */
static int make_item(reader *R, sl_block *b, size_t size, sl_item **out) {
  char name[320];
  snprintf(name, sizeof name, "%s#%" PRIu64, R->base, R->seq + 1);
  sl_item *it = sl_item_create(R->seq, name);
  if (!it) {
    sl_block_release(b);
    return SL_ENOMEM;
  }
  sl_item_set_block(it, SL_KIND_BYTES, b, 0, size);
  it->line = R->line;
  int rc = set_meta(R, it);
  if (rc < 0) {
    sl_item_destroy(it);
    return rc;
  }
  R->seq++;
  R->emitted = true;
  *out = it;
  return 0;
}

/* Keeps buf[cut, len) for the next block. */
static int keep_tail(reader *R, const unsigned char *buf, size_t cut, size_t len) {
  R->carry_len = 0;
  if (len - cut > R->carry_cap) {
    free(R->carry);
    R->carry_cap = 0;
    if (!(R->carry = malloc(len - cut))) return SL_ENOMEM;
    R->carry_cap = len - cut;
  }
  memcpy(R->carry, buf + cut, len - cut);
  R->carry_len = len - cut;
  return 0;
}

static int next_chunk(reader *R, sl_item **out) {
  sl_block *b = NULL;
  size_t len = 0, cut = 0;
  uint64_t lines = 0;
  int rc = next_block(R, &b, &len, &cut, &lines);
  if (rc == SL_DONE) {
    sl_block_release(b);
    R->done = true;
    if (R->emitted || !R->header) return SL_DONE;
    return make_item(R, NULL, 0, out); /* header only: columns, no rows */
  }
  const unsigned char *data = b ? sl_block_data(b) : NULL;
  if (rc == 0 && R->p->infer && R->seq == 0) rc = infer(R, data, cut);
  if (rc == 0) rc = keep_tail(R, data, cut, len);
  if (rc < 0) {
    sl_block_release(b);
    return rc;
  }
  rc = make_item(R, b, cut, out);
  R->line += lines;
  return rc;
}

/* ---------------------------------------------------------------------- */
/* callbacks                                                               */

typedef struct read_shared {
  sl__csv_dialect d;
} read_shared;

static int read_open(sl_worker *w, void **local) {
  reader *R = calloc(1, sizeof *R);
  if (!R) return SL_ENOMEM;
  const read_shared *S = sl_worker_shared(w);
  R->p = sl_worker_params(w);
  R->w = w;
  R->d = S->d;
  R->fd = -1;
  R->line = 1;
  R->chunk = sl__csv_read_chunk_override ? sl__csv_read_chunk_override
                                         : (size_t)R->p->chunk;
  bool in_stdin = strcmp(R->p->file, "-") == 0;
  R->shown = in_stdin ? "stdin" : R->p->file;
  const char *slash = strrchr(R->p->file, '/');
  R->base = in_stdin ? "stdin" : slash ? slash + 1 : R->p->file;
  *local = R;
  return 0;
}

static int read_produce(sl_worker *w, sl_item **out) {
  reader *R = sl_worker_local(w);
  *out = NULL;
  R->w = w;
  if (!R->started) {
    R->started = true;
    int rc = start(R);
    if (rc < 0) {
      R->done = true;
      return rc;
    }
    snprintf(R->ncols_text, sizeof R->ncols_text, "%zu", R->ncols);
  }
  if (R->done) return SL_DONE;
  int rc = next_chunk(R, out);
  if (rc < 0) R->done = true;
  return rc;
}

static void read_close(sl_worker *w) {
  reader *R = sl_worker_local(w);
  if (!R) return;
  if (R->own_fd && R->fd >= 0) close(R->fd);
  ZSTD_freeDCtx(R->z);
  free(R->in);
  free(R->carry);
  free(R->header);
  free(R->types);
  free(R);
}

/* Validates the parameters and that the file can be read (not for -). */
static int read_check(sl_stage *st, read_shared *S) {
  const read_params *p = sl_stage_params(st);
  const char *why = sl__csv_dialect_parse(p->delim, p->quote, p->quotes == 1, &S->d);
  if (why) return sl_stage_errorf(st, "%s", why);
  if (p->file[0] == '\0') return sl_stage_errorf(st, "file= must not be empty");
  if (strcmp(p->file, "-") == 0) return 0;
  struct stat sb;
  char eb[128];
  if (stat(p->file, &sb) < 0)
    return sl_stage_errorf(st, "file '%s': %s", p->file,
                           sl__io_strerror(errno, eb, sizeof eb));
  if (S_ISDIR(sb.st_mode))
    return sl_stage_errorf(st, "file '%s' is a directory", p->file);
  if (access(p->file, R_OK) < 0)
    return sl_stage_errorf(st, "file '%s': %s", p->file,
                           sl__io_strerror(errno, eb, sizeof eb));
  return 0;
}

static void read_destroy(void *state) { free(state); }

/* The engine never destroys the state of a create() that failed, so a
 * failed check frees it here. */
static int read_create(sl_stage *st, void **state) {
  read_shared *S = calloc(1, sizeof *S);
  if (!S) return sl_stage_errorf(st, "out of memory");
  int rc = read_check(st, S);
  if (rc < 0) {
    read_destroy(S);
    S = NULL;
  }
  *state = S;
  return rc;
}

static uint64_t read_item_bytes(const sl_stage *st) {
  const read_params *p = sl_stage_params(st);
  return p->chunk;
}

static const sl_param_def read_params_table[] = {
    {"file", SL_PARAM_STRING, offsetof(read_params, file), NULL, 0, 0, NULL,
     "the CSV file (.zst is decompressed); - reads standard input"},
    {"chunk", SL_PARAM_SIZE, offsetof(read_params, chunk), "4MiB", 65536,
     1073741824.0, NULL, "bytes per chunk (chunks hold whole records)"},
    {"delim", SL_PARAM_STRING, offsetof(read_params, delim), ",", 0, 0, NULL,
     "field delimiter: one byte, or \\t / tab"},
    {"quote", SL_PARAM_STRING, offsetof(read_params, quote), "\"", 0, 0, NULL,
     "quote character"},
    {"header", SL_PARAM_BOOL, offsetof(read_params, header), "true", 0, 0, NULL,
     "the first record holds the column names (else c1, c2, ...)"},
    {"compression", SL_PARAM_CHOICE, offsetof(read_params, compression), "auto",
     0, 0, "auto|none|zstd", "auto: zstd when the name ends in .zst or the "
     "data starts with a zstd frame"},
    {"window_log_max", SL_PARAM_INT, offsetof(read_params, window_log_max), "27",
     10, 31, NULL, "largest zstd window accepted, as a power of two (27 = 128 "
     "MiB): bounds the decoder's memory whatever a frame asks"},
    {"infer", SL_PARAM_BOOL, offsetof(read_params, infer), "true", 0, 0, NULL,
     "infer column types from the first chunk (attached as csv.types)"},
    {"max_record", SL_PARAM_SIZE, offsetof(read_params, max_record), "64MiB",
     1024, 1073741824.0, NULL, "longest record accepted; a longer one is an "
     "error naming its line"},
    {"quotes", SL_PARAM_CHOICE, offsetof(read_params, quotes), "strict", 0, 0,
     "strict|lenient", "strict: a quote inside an unquoted field is an error "
     "(RFC 4180, fastest chunking); lenient: it is kept literally"},
    SL_PARAM_END,
};

const sl_stage_def sl__stage_csv_read = {
    .name = "csv.read",
    .summary = "read a CSV file (or stdin, plain or zstd) as chunks of whole records",
    .help =
        "Reads file= sequentially and emits chunks of about chunk= bytes that\n"
        "hold whole records only, cut at line ends outside quoted fields, so\n"
        "csv.parse can parse them in parallel. LF and CRLF line ends; a UTF-8\n"
        "BOM is skipped, a UTF-16 one is an error; blank lines are skipped.\n"
        ".zst input (or any input starting with a zstd frame) is decoded as a\n"
        "stream with a bounded window (window_log_max). The header line is\n"
        "not part of any chunk: it travels as metadata (csv.header) with the\n"
        "inferred types (csv.types). Item names are <file>#<n>, line numbers\n"
        "are global. Errors name file and line: an unclosed quote at the end\n"
        "(the line where it opened), a record longer than max_record, corrupt\n"
        "or truncated zstd, duplicate column names.\n"
        "Example: csv.read file=sales.csv.zst ! csv.parse cols=key,x ! ...",
    .exec = SL_EXEC_IO,
    .in_kind = SL_KIND_NONE,
    .out_kind = SL_KIND_BYTES,
    .flags = SL_STAGE_SOURCE,
    .params = read_params_table,
    .params_size = sizeof(read_params),
    .create = read_create,
    .destroy = read_destroy,
    .open = read_open,
    .produce = read_produce,
    .close = read_close,
    .item_bytes = read_item_bytes,
};
