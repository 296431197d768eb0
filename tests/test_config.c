/* tests/test_config.c — config.json values are range-checked against what
 * the model indexes (items 4, 15, 18 of the hardening issue), and sizes that
 * come from inputs are checked against the machine's memory before they are
 * allocated (items 6, 18). */
#include <json-glib/json-glib.h>

#include "tensorplug/backend.h"
#include "tensorplug/error.h"
#include "tensorplug/memory.h"
#include "tensorplug/model.h"
#include "tensorplug/ops.h"
#include "tensorplug/tensor.h"
#include "tensorplug/tokenizer.h"
#include "tp_test.h"

static bool json_to_file_pretty(JsonNode *root, const char *path) {
  JsonGenerator *g = json_generator_new();
  json_generator_set_root(g, root);
  bool ok = json_generator_to_file(g, path, NULL);
  g_object_unref(g);
  return ok;
}

/* tests/data/tiny-bert/config.json with `key` set to the JSON `value`
 * (NULL: removed), written to a fresh folder; returns its config.json. */
static char *config_with(const char *key, const char *value) {
  char *src = g_build_filename(tp_test_source_dir(), "tests", "data", "tiny-bert", "config.json",
                               NULL);
  JsonParser *p = json_parser_new();
  GError *err = NULL;
  if (!json_parser_load_from_file(p, src, &err)) TP_FAILF("%s: %s", src, err->message);
  g_clear_error(&err);
  JsonObject *o = json_node_get_object(json_parser_get_root(p));
  if (value) {
    JsonNode *v = json_from_string(value, &err);
    if (!v) TP_FAILF("bad test value %s", value);
    g_clear_error(&err);
    json_object_set_member(o, key, v);
  } else {
    json_object_remove_member(o, key);
  }
  char *dir = tp_test_tmpdir(), *dst = g_build_filename(dir, "config.json", NULL);
  if (!json_to_file_pretty(json_parser_get_root(p), dst)) TP_FAILF("cannot write %s", dst);
  g_object_unref(p);
  g_free(src);
  g_free(dir);
  return dst;
}

static void expect_config_error(const char *key, const char *value, const char *part) {
  char *path = config_with(key, value);
  const tp_model_iface *iface = NULL;
  tp_model_config cfg;
  GError *err = NULL;
  if (tp_model_config_load(NULL, path, &iface, &cfg, &err))
    TP_FAILF("config.json with %s = %s was accepted", key, value ? value : "(absent)");
  else if (!strstr(err->message, path))
    TP_FAILF("the error does not name %s: %s", path, err->message);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, part);
  g_free(path);
}

TP_TEST(Config, TypeVocabSizeZeroIsRefused) {
  /* item 4: BERT reads row 0 of the token-type table */
  expect_config_error("type_vocab_size", "0", "type_vocab_size 0: BERT reads token type 0");
}

TP_TEST(Config, EveryValueIsRangeChecked) {
  /* item 15 */
  expect_config_error("layer_norm_eps", "-1e-12", "layer_norm_eps -1e-12 is out of range");
  expect_config_error("layer_norm_eps", "0", "layer_norm_eps 0 is out of range");
  expect_config_error("hidden_dropout_prob", "1.5", "hidden dropout 1.5 is out of range");
  expect_config_error("hidden_dropout_prob", "1", "hidden dropout 1 is out of range");
  expect_config_error("attention_probs_dropout_prob", "-0.1", "attention dropout -0.1 is out");
  expect_config_error("classifier_dropout", "-0.5", "classifier_dropout -0.5 is out of range");
  expect_config_error("initializer_range", "5.5", "initializer_range 5.5 is out of range");
  expect_config_error("pad_token_id", "64", "pad_token_id (a row of the embedding table) 64");
  expect_config_error("num_attention_heads", "32", "number of attention heads 32 is out of range");
  expect_config_error("num_attention_heads", "3", "not divisible by 3 heads");
  expect_config_error("hidden_size", "0", "hidden size 0 is out of range");
  /* item 18: sizes are bounded before any product of them is formed */
  expect_config_error("num_hidden_layers", "100000", "number of layers 100000 is out of range");
  expect_config_error("vocab_size", "2000000000", "vocabulary size 2000000000 is out of range");
  expect_config_error("max_position_embeddings", "2147483647", "number of positions 2147483647");
  expect_config_error("intermediate_size", "1073741824", "feed-forward size 1073741824");
  expect_config_error("hidden_size", "-5", "\"hidden_size\" = -5 is out of range");
  expect_config_error("hidden_size", "\"16\"", "\"hidden_size\" must be an integer");
  /* found by fuzz_config_json: a string option given as a number or an object */
  expect_config_error("hidden_act", "7", "\"hidden_act\" must be a string");
  expect_config_error("position_embedding_type", "{}", "\"position_embedding_type\" must be a");
}

TP_TEST(Config, TheFixtureItselfLoads) {
  char *path = config_with("model_type", "\"bert\"");
  const tp_model_iface *iface = NULL;
  tp_model_config cfg;
  GError *err = NULL;
  TP_CHECK(tp_model_config_load(NULL, path, &iface, &cfg, &err));
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK_INT_EQ(cfg.type_vocab_size, 2);
  g_free(path);
}

TP_TEST(Config, CommandLineOverridesAreCheckedToo) {
  tp_model_config cfg;
  const tp_model_iface *iface = NULL;
  GError *err = NULL;
  char *path = config_with("model_type", "\"bert\"");
  TP_ASSERT(tp_model_config_load(NULL, path, &iface, &cfg, &err));
  tp_model_overrides ov = {.layers = 5000};
  TP_CHECK(!tp_model_config_apply(&cfg, &ov, &err));
  TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "number of layers 5000 is out of range");
  g_free(path);
}

/* ---- memory ---- */

TP_TEST(Memory, LimitFromTheEnvironmentAndFormatting) {
  g_setenv("TENSORPLUG_MEMORY_LIMIT", "64M", TRUE);
  TP_CHECK_INT_EQ(tp_memory_host_available(), 64 << 20);
  g_setenv("TENSORPLUG_MEMORY_LIMIT", "1.5G", TRUE);
  TP_CHECK_INT_EQ(tp_memory_host_available(), 3ull << 29);
  g_unsetenv("TENSORPLUG_MEMORY_LIMIT");
  TP_CHECK(tp_memory_host_available() > (16u << 20)); /* the machine itself: some MiB at least */
  char b[32];
  TP_CHECK_STR_EQ(tp_memory_format(12, b, sizeof b), "12 bytes");
  TP_CHECK_STR_EQ(tp_memory_format(3ull << 29, b, sizeof b), "1.5 GiB");
  GError *err = NULL;
  TP_CHECK(!tp_memory_check(35ull << 40, 20ull << 30, "host memory", "the cache", &err));
  TP_CHECK_ERROR(err, TP_ERROR_OUT_OF_MEMORY,
                 "the cache needs 35.0 TiB but only 20.0 GiB of host memory are available");
}

TP_TEST(Memory, AModelThatCannotFitIsRefusedUpFrontWithTheNumbers) {
  /* item 18: bert-base's 109,483,778 parameters x 4 buffers x 4 bytes */
  GError *err = NULL;
  tp_backend *be = tp_backend_open(NULL, "cpu", -1, 1, &err);
  TP_ASSERT_NO_ERROR(err);
  tp_ctx *ctx = tp_ctx_new(be, &err);
  TP_ASSERT_NO_ERROR(err);
  tp_model_config cfg;
  const tp_model_iface *iface = NULL;
  tp_model_source src = {.model = "bert-base-uncased", .init_random = true};
  char *wp = NULL, *md = NULL;
  TP_ASSERT(tp_model_resolve(NULL, &src, &iface, &cfg, &wp, &md, &err));
  g_setenv("TENSORPLUG_MEMORY_LIMIT", "64M", TRUE);
  tp_model *m = tp_model_new(iface, &cfg, ctx, 1, &err);
  g_unsetenv("TENSORPLUG_MEMORY_LIMIT");
  TP_CHECK(m == NULL);
  tp_model_free(m);
  TP_CHECK_ERROR(err, TP_ERROR_OUT_OF_MEMORY,
                 "(109483778 parameters: values, gradients and two Adam moments) needs 1.6 GiB "
                 "but only 64.0 MiB");
  tp_ctx_free(ctx);
  tp_backend_close(be);
}

TP_TEST(Memory, AnAbsurdTokenIdIsCheckedBeforeItsTableIsAllocated) {
  /* item 6: one id near 2^31 would make a 24 GiB id table */
  char *dir = tp_test_tmpdir(), *path = g_build_filename(dir, "tokenizer.json", NULL);
  TP_ASSERT(g_file_set_contents(path,
      "{\"normalizer\": {\"type\": \"BertNormalizer\"}, \"pre_tokenizer\": {\"type\": "
      "\"BertPreTokenizer\"}, \"model\": {\"type\": \"WordPiece\", \"vocab\": {\"[UNK]\": 0, "
      "\"[CLS]\": 1, \"[SEP]\": 2, \"[PAD]\": 3, \"far\": 2147483646}}}", -1, NULL));
  g_setenv("TENSORPLUG_MEMORY_LIMIT", "1G", TRUE);
  GError *err = NULL;
  tp_tokenizer *t = tp_tokenizer_load(path, &err);
  g_unsetenv("TENSORPLUG_MEMORY_LIMIT");
  TP_CHECK(t == NULL);
  tp_tokenizer_free(t);
  TP_CHECK_ERROR(err, TP_ERROR_OUT_OF_MEMORY,
                 "the largest token id, 2147483646 (\"far\"), makes a table of 2147483647 ids "
                 "that needs 24.0 GiB but only 1.0 GiB of host memory are available");
  g_free(path);
  g_free(dir);
}

/* The arena one step of batch x seq tokens used (the arena is grown to 1.25
 * times the bytes a step asked for, at the start of the next step). */
static double measured_step_bytes(tp_ctx *ctx, tp_model *m, int batch, int seq, bool training) {
  int32_t *ids = g_new0(int32_t, batch * seq), *mask = g_new0(int32_t, batch * seq);
  int32_t *lab = g_new0(int32_t, batch);
  for (int i = 0; i < batch * seq; i++) ids[i] = 5 + i % 50, mask[i] = 1;
  GError *err = NULL;
  for (int s = 0; s < 2; s++) {
    tp_ctx_begin_step(ctx);
    tp_ctx_set_training(ctx, training);
    int64_t sh[2] = {batch, seq}, ls[1] = {batch};
    tp_tensor *ti = tp_tensor_from_host(ctx, TP_I32, 2, sh, ids);
    tp_tensor *tm = tp_tensor_from_host(ctx, TP_I32, 2, sh, mask);
    tp_tensor *tl = tp_tensor_from_host(ctx, TP_I32, 1, ls, lab);
    tp_tensor *z = tp_model_forward(m, ctx, ti, tm);
    if (training) {
      tp_tensor *loss = tp_cross_entropy(ctx, z, tl);
      tp_params_zero_grad(m->params, ctx);
      if (!tp_ctx_backward(ctx, loss, &err)) TP_FAILF("backward: %s", err->message);
    }
    if (!tp_ctx_check(ctx, &err)) TP_FAILF("step: %s", err ? err->message : "?");
    g_clear_error(&err);
  }
  tp_ctx_begin_step(ctx);
  g_free(ids);
  g_free(mask);
  g_free(lab);
  return (double)tp_ctx_arena_bytes(ctx) / 1.25;
}

TP_TEST(Memory, StepEstimateIsAnUpperBoundWithin2p5TimesTheArena) {
  /* docs/architecture.md quotes this: estimate vs the arena of real steps */
  GError *err = NULL;
  tp_backend *be = tp_backend_open(NULL, "cpu", -1, 2, &err);
  TP_ASSERT_NO_ERROR(err);
  static const struct { const char *model; int layers, hidden, heads, ffn, batch, seq; } cases[] = {
      {"bert", 2, 128, 2, 512, 8, 128}, {"bert", 4, 128, 2, 512, 8, 128},
      {"bert", 2, 128, 8, 512, 4, 256}, {"distilbert", 2, 128, 2, 512, 8, 128},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    for (int training = 0; training <= 1; training++) {
      /* a fresh context each time: an arena only ever grows */
      tp_ctx *ctx = tp_ctx_new(be, &err);
      TP_ASSERT_NO_ERROR(err);
      tp_model_source src = {.model = cases[i].model, .init_random = true,
                             .ov = {.layers = cases[i].layers, .hidden = cases[i].hidden,
                                    .heads = cases[i].heads, .ffn = cases[i].ffn,
                                    .vocab_size = 1000}};
      tp_model_config cfg;
      const tp_model_iface *iface = NULL;
      char *wp = NULL, *md = NULL;
      TP_ASSERT(tp_model_resolve(NULL, &src, &iface, &cfg, &wp, &md, &err));
      tp_model *m = tp_model_new(iface, &cfg, ctx, 1, &err);
      TP_ASSERT_NO_ERROR(err);
      double arena = measured_step_bytes(ctx, m, cases[i].batch, cases[i].seq, training);
      double est = (double)tp_model_step_bytes(&cfg, cases[i].batch, cases[i].seq, training,
                                               tp_model_attention_fused(&cfg, be));
      printf("%s %d layers, hidden %d, %d heads, FFN %d, %d x %d tokens, %s: estimate %.1f MB, "
             "arena %.1f MB\n", cases[i].model, cases[i].layers, cases[i].hidden, cases[i].heads,
             cases[i].ffn, cases[i].batch, cases[i].seq, training ? "training" : "forward",
             est / 1e6, arena / 1e6);
      if (!(est >= arena && est <= 2.5 * arena))
        TP_FAILF("case %zu (training %d): estimate %.0f vs arena %.0f bytes", i, training, est,
                 arena);
      tp_model_free(m);
      tp_ctx_free(ctx);
      g_free(wp);
      g_free(md);
    }
  }
  tp_backend_close(be);
}
