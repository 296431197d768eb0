/* tests/test_bench.c — `tensorplug bench --model`: one row per backend asked
 * for, timings where it ran, the reason where it could not; --json gives
 * the same rows. */
#include <json-glib/json-glib.h>

#include "tp_test.h"
#include "tp_test_cli.h"

#define TINY "--model", "bert", "--init", "random", "--layers", "1", "--hidden", "32", "--heads", \
             "2", "--ffn", "64", "--batch", "2", "--seq", "16", "--steps", "2"

static JsonArray *rows_of(const char *out, JsonParser *p) {
  const char *start = strchr(out, '{');
  GError *err = NULL;
  if (!start || !json_parser_load_from_data(p, start, -1, &err)) {
    TP_FAILF("not JSON: %s (%s)", out, err ? err->message : "no object");
    g_clear_error(&err);
    return NULL;
  }
  return json_object_get_array_member(json_node_get_object(json_parser_get_root(p)), "rows");
}

TP_TEST(Bench, RowsForEveryBackendAskedFor) {
  char *out = NULL;
  TP_ASSERT(tp_test_cli(&out, "bench", TINY, "--backends", "cpu,nosuch", NULL) == 0);
  TP_CHECK(strstr(out, "| cpu | cpu | f32 |") != NULL);
  TP_CHECK(strstr(out, "| nosuch |") != NULL && strstr(out, "unavailable:") != NULL);
  TP_CHECK(strstr(out, "tokens/s") != NULL && strstr(out, "TFLOP/s") != NULL);
  g_free(out);

  TP_ASSERT(tp_test_cli(&out, "bench", TINY, "--backends", "cpu,nosuch", "--json", NULL) == 0);
  JsonParser *p = json_parser_new();
  JsonArray *rows = rows_of(out, p);
  if (rows && json_array_get_length(rows) == 2) {
    JsonObject *cpu = json_array_get_object_element(rows, 0);
    JsonObject *other = json_array_get_object_element(rows, 1);
    TP_CHECK_STR_EQ(json_object_get_string_member(cpu, "backend"), "cpu");
    TP_CHECK(json_object_get_boolean_member(cpu, "available"));
    TP_CHECK(json_object_get_double_member(cpu, "ms_per_step") > 0);
    TP_CHECK(json_object_get_double_member(cpu, "tokens_per_s") > 0);
    TP_CHECK(json_object_get_double_member(cpu, "tflops") > 0);
    TP_CHECK(json_object_get_double_member(cpu, "peak_device_bytes") > 0);
    TP_CHECK_STR_EQ(json_object_get_string_member(other, "backend"), "nosuch");
    TP_CHECK(!json_object_get_boolean_member(other, "available"));
    TP_CHECK(strlen(json_object_get_string_member(other, "reason")) > 10);
  } else {
    TP_FAILF("expected 2 rows: %s", out);
  }
  g_object_unref(p);
  g_free(out);
}

TP_TEST(Bench, NothingRunnableAndBadOptionsExitTwo) {
  char *out = NULL;
  TP_CHECK_INT_EQ(tp_test_cli(&out, "bench", TINY, "--backends", "nosuch", NULL), 2);
  g_free(out);
  TP_CHECK_INT_EQ(tp_test_cli(&out, "bench", TINY, "--mode", "fly", NULL), 2);
  TP_CHECK(strstr(out, "--mode fly") != NULL);
  g_free(out);
  TP_CHECK_INT_EQ(tp_test_cli(&out, "bench", "--backends", "cpu", NULL), 2);
  TP_CHECK(strstr(out, "--model") != NULL);
  g_free(out);
}
