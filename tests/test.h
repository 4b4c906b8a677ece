/*
 * test.h -- the tiny test harness shared by every test program.
 *
 * Each test file defines its cases with TEST(name) and lists them once in a
 * table of SL_CASE(name, "label") rows; SL_TEST_MAIN(table) provides main().
 * `prog --list` prints "name label" per case (tests/discover.cmake turns that
 * into one ctest test per case, with its label), `prog NAME` runs one case,
 * `prog` runs them all. Assertions print both values and the location, then
 * abort, so a failure under a sanitizer also shows a stack.
 */
#ifndef SLUICE_TEST_H
#define SLUICE_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sl_test_case {
  const char *name;
  void (*fn)(void);
  const char *label; /* unit, stress, e2e, conformance, slow; comma-separated,
                        "serial" = run alone (see discover.cmake) */
} sl_test_case;

#define TEST(name) static void test_##name(void)
#define SL_CASE(name, label) {#name, test_##name, label}

#define SL__FAIL(...)                                                          \
  do {                                                                         \
    fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                            \
    fprintf(stderr, __VA_ARGS__);                                              \
    fputc('\n', stderr);                                                       \
    abort();                                                                   \
  } while (0)

#define ASSERT(c)                                                              \
  do {                                                                         \
    if (!(c)) SL__FAIL("assertion failed: %s", #c);                            \
  } while (0)
#define ASSERT_EQ(a, b)                                                        \
  do {                                                                         \
    long long sl__a = (long long)(a), sl__b = (long long)(b);                  \
    if (sl__a != sl__b)                                                        \
      SL__FAIL("%s == %s failed: %lld != %lld", #a, #b, sl__a, sl__b);         \
  } while (0)
#define ASSERT_NE(a, b)                                                        \
  do {                                                                         \
    long long sl__a = (long long)(a), sl__b = (long long)(b);                  \
    if (sl__a == sl__b) SL__FAIL("%s != %s failed: both %lld", #a, #b, sl__a); \
  } while (0)
#define ASSERT_LE(a, b)                                                        \
  do {                                                                         \
    long long sl__a = (long long)(a), sl__b = (long long)(b);                  \
    if (!(sl__a <= sl__b))                                                     \
      SL__FAIL("%s <= %s failed: %lld > %lld", #a, #b, sl__a, sl__b);          \
  } while (0)
#define ASSERT_OK(e)                                                           \
  do {                                                                         \
    int sl__r = (e);                                                           \
    if (sl__r < 0)                                                             \
      SL__FAIL("%s failed: %d (%s)", #e, sl__r, sl_strerror(sl__r));           \
  } while (0)
#define ASSERT_STREQ(a, b)                                                     \
  do {                                                                         \
    const char *sl__a = (a), *sl__b = (b);                                     \
    if (!sl__a || !sl__b || strcmp(sl__a, sl__b) != 0)                         \
      SL__FAIL("%s == %s failed:\n  got:      \"%s\"\n  expected: \"%s\"", #a, \
               #b, sl__a ? sl__a : "(null)", sl__b ? sl__b : "(null)");        \
  } while (0)
#define ASSERT_CONTAINS(hay, needle)                                           \
  do {                                                                         \
    const char *sl__h = (hay), *sl__n = (needle);                              \
    if (!sl__h || !strstr(sl__h, sl__n))                                       \
      SL__FAIL("\"%s\" does not contain \"%s\"", sl__h ? sl__h : "(null)",     \
               sl__n);                                                         \
  } while (0)

static inline int sl_test_main(int argc, char **argv, const sl_test_case *cases,
                               size_t n) {
  if (argc > 1 && strcmp(argv[1], "--list") == 0) {
    for (size_t i = 0; i < n; i++) printf("%s %s\n", cases[i].name, cases[i].label);
    return 0;
  }
  int ran = 0;
  for (size_t i = 0; i < n; i++) {
    if (argc > 1 && strcmp(argv[1], cases[i].name) != 0) continue;
    fprintf(stderr, "[ RUN  ] %s\n", cases[i].name);
    cases[i].fn();
    fprintf(stderr, "[  OK  ] %s\n", cases[i].name);
    ran++;
  }
  if (ran == 0) {
    fprintf(stderr, "no test called '%s'\n", argc > 1 ? argv[1] : "");
    return 2;
  }
  return 0;
}

#define SL_TEST_MAIN(table)                                                    \
  int main(int argc, char **argv) {                                            \
    return sl_test_main(argc, argv, table, sizeof(table) / sizeof(table[0]));  \
  }

#endif
