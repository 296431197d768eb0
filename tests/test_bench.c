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

/* --data: real reviews, padded to the longest of each batch; tokens/s counts
 * the real tokens, and every row has its CPU time and peak RSS. */
TP_TEST(Bench, RealReviewsFromData) {
  char *tmp = tp_test_tmpdir(), *data = g_build_filename(tmp, "reviews.jsonl", NULL);
  char *vocab = g_build_filename(tp_test_shared_dir(), "data", "bert-base-uncased", "vocab.txt",
                                 NULL);
  GString *lines = g_string_new(NULL);
  for (int i = 0; i < 7; i++) /* 6 are needed: (1 warm-up + 2 steps) x batch 2 */
    g_string_append_printf(lines, "{\"text\": \"review %d: %s\", \"label\": %d}\n", i,
                           i % 2 ? "a good film" : "dull", i % 2);
  TP_ASSERT(g_file_set_contents(data, lines->str, -1, NULL));
  g_string_free(lines, TRUE);
  char *out = NULL;
  TP_ASSERT(tp_test_cli(&out, "bench", TINY, "--vocab", vocab, "--data", data, "--backends", "cpu",
                        "--json", NULL) == 0);
  JsonParser *p = json_parser_new();
  JsonArray *rows = rows_of(out, p);
  if (rows && json_array_get_length(rows) == 1) {
    JsonObject *root = json_node_get_object(json_parser_get_root(p));
    JsonObject *cpu = json_array_get_object_element(rows, 0);
    TP_CHECK(json_object_get_array_member(root, "data") != NULL);
    /* each review is [CLS] review N : few words [SEP], far below --seq 16 */
    double tokens = json_object_get_double_member(cpu, "tokens");
    TP_CHECK(tokens >= 2 * 2 * 5 && tokens < 2 * 2 * 16);
    TP_CHECK(json_object_get_double_member(cpu, "tokens_per_s") > 0);
    TP_CHECK(json_object_get_double_member(cpu, "cpu_ms_per_step") > 0);
    TP_CHECK(json_object_get_double_member(cpu, "peak_rss_bytes") > 1 << 20);
  } else {
    TP_FAILF("expected 1 row: %s", out);
  }
  g_object_unref(p);
  g_free(out);

  TP_ASSERT(tp_test_cli(&out, "bench", TINY, "--vocab", vocab, "--data", data, "--backends", "cpu",
                        NULL) == 0);
  TP_CHECK(strstr(out, "real (unpadded) tokens") != NULL && strstr(out, "| peak RSS |") != NULL);
  g_free(out);
  /* without --data the rows say they ran on random tokens, with the same columns */
  TP_ASSERT(tp_test_cli(&out, "bench", TINY, "--backends", "cpu", NULL) == 0);
  TP_CHECK(strstr(out, "random tokens") != NULL && strstr(out, "| CPU ms/step |") != NULL);
  g_free(out);

  /* too few reviews, a --seq beyond the positions, no vocabulary: refused at once */
  TP_CHECK_INT_EQ(tp_test_cli(&out, "bench", TINY, "--vocab", vocab, "--data", data, "--steps",
                              "5", NULL), 2);
  TP_CHECK(strstr(out, "--data has 7 reviews") != NULL);
  g_free(out);
  TP_CHECK_INT_EQ(tp_test_cli(&out, "bench", TINY, "--vocab", vocab, "--data", data,
                              "--max-positions", "8", NULL), 2);
  TP_CHECK(strstr(out, "--seq 16 with --data") != NULL);
  g_free(out);
  TP_CHECK_INT_EQ(tp_test_cli(&out, "bench", TINY, "--data", data, NULL), 2);
  TP_CHECK(strstr(out, "vocab") != NULL);
  g_free(out);
  g_free(vocab);
  g_free(data);
  g_free(tmp);
}
