/* tests/tp_test.h — tests are written in C; tests/gtest_bridge.cc registers
 * each TP_TEST with GoogleTest and reports failures through it.
 *
 *   TP_TEST(Suite, Name) { TP_CHECK(x == 1); TP_ASSERT_NO_ERROR(err); }
 *
 * TP_CHECK* record a failure and continue; TP_ASSERT* record and return. */
#pragma once
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <glib.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*tp_test_fn)(void);
void tp_test_register(const char *suite, const char *name, tp_test_fn fn, const char *file,
                      int line);
/* A test found at run time (data-driven suites): fn(data) is its body. Call
 * it from a constructor, before main() hands the tests to GoogleTest. */
typedef void (*tp_test_data_fn)(const void *data);
void tp_test_register_data(const char *suite, const char *name, tp_test_data_fn fn,
                           const void *data, const char *file, int line);
void tp_test_fail(const char *file, int line, const char *msg);
void tp_test_skip(const char *file, int line, const char *msg);

/* ../shared beside the checkout (or $TP_SHARED_DIR): read-only references. */
const char *tp_test_shared_dir(void);
/* A fresh temporary folder for this test (removed at exit unless TP_KEEP_TMP). */
char *tp_test_tmpdir(void);
/* The build tree's root (for plugins and the tensorplug binary). */
const char *tp_test_build_dir(void);
const char *tp_test_source_dir(void);


#ifdef __cplusplus
}
#endif

#define TP_TEST(suite, name)                                                              \
  static void tp_test_##suite##_##name(void);                                             \
  __attribute__((constructor)) static void tp_test_reg_##suite##_##name(void) {           \
    tp_test_register(#suite, #name, tp_test_##suite##_##name, __FILE__, __LINE__);        \
  }                                                                                       \
  static void tp_test_##suite##_##name(void)

#define TP_FAILF(...)                                                                      \
  do {                                                                                     \
    char *tp_msg_ = g_strdup_printf(__VA_ARGS__);                                          \
    tp_test_fail(__FILE__, __LINE__, tp_msg_);                                             \
    g_free(tp_msg_);                                                                       \
  } while (0)

#define TP_CHECK(cond)                                                                     \
  do {                                                                                     \
    if (!(cond)) TP_FAILF("check failed: %s", #cond);                                      \
  } while (0)
#define TP_ASSERT(cond)                                                                    \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      TP_FAILF("assertion failed: %s", #cond);                                             \
      return;                                                                              \
    }                                                                                      \
  } while (0)
#define TP_CHECK_INT_EQ(a, b)                                                              \
  do {                                                                                     \
    long long tp_a_ = (long long)(a), tp_b_ = (long long)(b);                              \
    if (tp_a_ != tp_b_) TP_FAILF("%s == %s: %lld vs %lld", #a, #b, tp_a_, tp_b_);          \
  } while (0)
#define TP_CHECK_STR_EQ(a, b)                                                              \
  do {                                                                                     \
    const char *tp_a_ = (a), *tp_b_ = (b);                                                 \
    if (g_strcmp0(tp_a_, tp_b_) != 0) TP_FAILF("%s == %s: \"%s\" vs \"%s\"", #a, #b,       \
                                               tp_a_ ? tp_a_ : "(null)",                   \
                                               tp_b_ ? tp_b_ : "(null)");                  \
  } while (0)
/* |a - b| <= tol */
#define TP_CHECK_NEAR(a, b, tol)                                                           \
  do {                                                                                     \
    double tp_a_ = (double)(a), tp_b_ = (double)(b);                                       \
    if (!(fabs(tp_a_ - tp_b_) <= (tol)))                                                   \
      TP_FAILF("%s ~ %s: %.9g vs %.9g (tol %g)", #a, #b, tp_a_, tp_b_, (double)(tol));     \
  } while (0)
#define TP_ASSERT_NO_ERROR(err)                                                            \
  do {                                                                                     \
    if ((err) != NULL) {                                                                   \
      TP_FAILF("unexpected error: %s", (err)->message);                                    \
      g_clear_error(&(err));                                                               \
      return;                                                                              \
    }                                                                                      \
  } while (0)
/* err must be set, in the TP_ERROR domain with the given code, and its
 * message must contain `part` (a non-empty fragment: "" would match anything). */
#define TP_CHECK_ERROR(err, code_, part)                                                   \
  do {                                                                                     \
    if (!*(part)) TP_FAILF("TP_CHECK_ERROR needs a non-empty message fragment");           \
    if ((err) == NULL) {                                                                   \
      TP_FAILF("expected an error containing \"%s\", got none", (part));                   \
    } else {                                                                               \
      if ((err)->domain != TP_ERROR)                                                       \
        TP_FAILF("error domain %s, expected %s: %s", g_quark_to_string((err)->domain),     \
                 g_quark_to_string(TP_ERROR), (err)->message);                             \
      if ((err)->code != (int)(code_))                                                     \
        TP_FAILF("error code %d, expected %d (%s): %s", (err)->code, (int)(code_), #code_, \
                 (err)->message);                                                          \
      if (!strstr((err)->message, (part)))                                                 \
        TP_FAILF("error \"%s\" does not mention \"%s\"", (err)->message, (part));          \
      g_clear_error(&(err));                                                               \
    }                                                                                      \
  } while (0)
#define TP_SKIP(msg)                                                                       \
  do {                                                                                     \
    tp_test_skip(__FILE__, __LINE__, (msg));                                               \
    return;                                                                                \
  } while (0)
