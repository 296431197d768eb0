/* tests/test_train.c — the `tensorplug train / eval / predict` pipeline on
 * real IMDB records with a tiny BERT: determinism, exact resume after
 * SIGKILL, restore-best bookkeeping, non-finite loss, usage errors. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-glib/json-glib.h>

#include "tensorplug/safetensors.h"
#include "tp_test.h"

static char *exe(void) { return g_build_filename(tp_test_build_dir(), "cli", "tensorplug", NULL); }

static char *vocab(void) {
  return g_build_filename(tp_test_shared_dir(), "data", "bert-base-uncased", "vocab.txt", NULL);
}

static char *imdb(void) { return g_build_filename(tp_test_shared_dir(), "data", "imdb", NULL); }

/* Runs tensorplug with args (NULL-terminated); returns the exit status. */
static int run_cli(char **out, const char *first, ...) {
  GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(argv, exe());
  va_list ap;
  va_start(ap, first);
  for (const char *a = first; a; a = va_arg(ap, const char *)) g_ptr_array_add(argv, g_strdup(a));
  va_end(ap);
  g_ptr_array_add(argv, NULL);
  char *so = NULL, *se = NULL;
  int status = -1;
  GError *err = NULL;
  if (!g_spawn_sync(NULL, (char **)argv->pdata, NULL, 0, NULL, NULL, &so, &se, &status, &err)) {
    TP_FAILF("spawn: %s", err->message);
    g_clear_error(&err);
  }
  if (out) *out = g_strconcat(so ? so : "", se ? se : "", NULL);
  g_free(so);
  g_free(se);
  g_ptr_array_unref(argv);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

#define TINY_ARGS(out_dir, epochs)                                                            \
  "train", "--model", "bert", "--init", "random", "--layers", "1", "--hidden", "32",         \
      "--heads", "2", "--ffn", "64", "--vocab", v, "--data", d, "--subset", "0.03",          \
      "--max-len", "64", "--batch", "16", "--eval-batch", "64", "--epochs", epochs,          \
      "--patience", "0", "--lr", "2e-3", "--seed", "7", "--threads", "2", "--out", out_dir

static JsonObject *load_json(const char *path, JsonParser **keep) {
  *keep = json_parser_new();
  GError *err = NULL;
  if (!json_parser_load_from_file(*keep, path, &err)) {
    TP_FAILF("%s: %s", path, err->message);
    g_clear_error(&err);
    return NULL;
  }
  return json_node_get_object(json_parser_get_root(*keep));
}

/* The metrics of results.json as one string (timings excluded). */
static char *metrics_of(const char *run_dir) {
  char *p = g_build_filename(run_dir, "results.json", NULL);
  JsonParser *jp = NULL;
  JsonObject *o = load_json(p, &jp);
  g_free(p);
  if (!o) {
    g_object_unref(jp);
    return g_strdup("(none)");
  }
  GString *s = g_string_new(NULL);
  JsonArray *h = json_object_get_array_member(o, "history");
  for (guint i = 0; h && i < json_array_get_length(h); i++) {
    JsonObject *e = json_array_get_object_element(h, i);
    g_string_append_printf(s, "epoch %lld loss %.17g acc %.17g val_loss %.17g val_acc %.17g; ",
                           (long long)json_object_get_int_member(e, "epoch"),
                           json_object_get_double_member(e, "loss"),
                           json_object_get_double_member(e, "acc"),
                           json_object_get_double_member(e, "val_loss"),
                           json_object_get_double_member(e, "val_acc"));
  }
  JsonObject *t = json_object_get_object_member(o, "test");
  JsonArray *cm = json_object_get_array_member(t, "confusion");
  g_string_append_printf(s, "best %lld test acc %.17g f1 %.17g loss %.17g tn %lld",
                         (long long)json_object_get_int_member(o, "best_epoch"),
                         json_object_get_double_member(t, "accuracy"),
                         json_object_get_double_member(t, "f1"),
                         json_object_get_double_member(t, "loss"),
                         (long long)json_array_get_int_element(json_array_get_array_element(cm, 0), 0));
  JsonObject *sp = json_object_get_object_member(o, "split");
  g_string_append_printf(s, " split %s", json_object_get_string_member(sp, "test_sha256"));
  g_object_unref(jp);
  return g_string_free(s, FALSE);
}

TP_TEST(Train, SameSeedGivesIdenticalResults) {
  char *v = vocab(), *d = imdb(), *tmp = tp_test_tmpdir();
  char *a = g_build_filename(tmp, "a", NULL), *b = g_build_filename(tmp, "b", NULL);
  char *out = NULL;
  int rc = run_cli(&out, TINY_ARGS(a, "2"), NULL);
  if (rc != 0) TP_FAILF("first run exited %d:\n%s", rc, out);
  g_free(out);
  rc = run_cli(&out, TINY_ARGS(b, "2"), NULL);
  if (rc != 0) TP_FAILF("second run exited %d:\n%s", rc, out);
  g_free(out);
  char *ma = metrics_of(a), *mb = metrics_of(b);
  TP_CHECK_STR_EQ(ma, mb);
  TP_CHECK(strstr(ma, "epoch 2") != NULL);
  g_free(ma);
  g_free(mb);
  g_free(a);
  g_free(b);
  g_free(v);
  g_free(d);
}

static int checkpoint_epochs(const char *run) {
  char *p = g_build_filename(run, "checkpoint", "state.json", NULL);
  int e = -1;
  char *text = NULL;
  if (g_file_get_contents(p, &text, NULL, NULL)) {
    JsonParser *jp = json_parser_new();
    if (json_parser_load_from_data(jp, text, -1, NULL))
      e = (int)json_object_get_int_member(json_node_get_object(json_parser_get_root(jp)), "epochs_done");
    g_object_unref(jp);
  }
  g_free(text);
  g_free(p);
  return e;
}

TP_TEST(Train, ResumeAfterSigkillMatchesUninterrupted) {
  char *v = vocab(), *d = imdb(), *tmp = tp_test_tmpdir();
  char *full = g_build_filename(tmp, "full", NULL), *cut = g_build_filename(tmp, "cut", NULL);
  char *out = NULL;
  int rc = run_cli(&out, TINY_ARGS(full, "3"), NULL);
  if (rc != 0) TP_FAILF("uninterrupted run exited %d:\n%s", rc, out);
  g_free(out);

  /* the same run, SIGKILLed right after step 1 of epoch 2 (66 steps per
   * epoch) by the command's test hook: no race with a timer */
  char *e = exe();
  char *argv[] = {e, TINY_ARGS(cut, "3"), NULL};
  char **envp = g_environ_setenv(g_get_environ(), "TENSORPLUG_TEST_RAISE", "9@67", TRUE);
  int status = 0;
  GError *err = NULL;
  TP_ASSERT(g_spawn_sync(NULL, argv, envp, G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL, NULL,
                         &status, &err));
  g_strfreev(envp);
  TP_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  /* it died in epoch 2: the checkpoint says one epoch, and no results yet */
  TP_CHECK_INT_EQ(checkpoint_epochs(cut), 1);
  char *res = g_build_filename(cut, "results.json", NULL);
  TP_CHECK(!g_file_test(res, G_FILE_TEST_EXISTS));

  rc = run_cli(&out, "train", "--resume", cut, NULL);
  if (rc != 0) TP_FAILF("resumed run exited %d:\n%s", rc, out);
  TP_CHECK(strstr(out, "Resuming after epoch 1 of 3") != NULL);
  g_free(out);
  char *mf = metrics_of(full), *mc = metrics_of(cut);
  TP_CHECK_STR_EQ(mc, mf);
  g_free(mf);
  g_free(mc);
  g_free(res);
  g_free(e);
  g_free(full);
  g_free(cut);
  g_free(v);
  g_free(d);
}

TP_TEST(Train, WritesResultsModelSplitAndEvalRunReproduces) {
  char *v = vocab(), *d = imdb(), *tmp = tp_test_tmpdir();
  char *run = g_build_filename(tmp, "run", NULL);
  char *out = NULL;
  int rc = run_cli(&out, TINY_ARGS(run, "1"), NULL);
  if (rc != 0) TP_FAILF("run exited %d:\n%s", rc, out);
  /* the summary block of the seed notebook */
  TP_CHECK(strstr(out, "Validation acc (best epoch): ") != NULL);
  TP_CHECK(strstr(out, "Test accuracy: ") != NULL && strstr(out, "Test F1: ") != NULL);
  TP_CHECK(strstr(out, "Confusion matrix:\n [[") != NULL);
  TP_CHECK(strstr(out, "Elapsed time: 00:") != NULL);
  g_free(out);
  char *rp = g_build_filename(run, "results.json", NULL);
  JsonParser *jp = NULL;
  JsonObject *o = load_json(rp, &jp);
  TP_ASSERT(o != NULL);
  static const char *const keys[] = {"config", "version", "backend", "device", "split", "history",
                                     "best_epoch", "val_acc_best", "test", "elapsed_s"};
  for (size_t i = 0; i < G_N_ELEMENTS(keys); i++)
    if (!json_object_has_member(o, keys[i])) TP_FAILF("results.json lacks \"%s\"", keys[i]);
  /* the process's CPU time per epoch and its peak memory */
  JsonObject *h0 = json_array_get_object_element(json_object_get_array_member(o, "history"), 0);
  TP_CHECK(json_object_get_double_member(h0, "cpu_seconds") > 0);
  TP_CHECK(json_object_get_int_member(o, "peak_rss_bytes") > 0);
  JsonObject *cfg = json_object_get_object_member(o, "config");
  TP_CHECK_INT_EQ(json_object_get_int_member(cfg, "max_len"), 64);
  TP_CHECK_INT_EQ(json_object_get_int_member(cfg, "batch"), 16);
  JsonObject *sp = json_object_get_object_member(o, "split");
  /* 3% of 50,000: 1,500 -> test 300, val 150, train 1,050, balanced */
  TP_CHECK_INT_EQ(json_object_get_int_member(sp, "train"), 1050);
  TP_CHECK_INT_EQ(json_object_get_int_member(sp, "val"), 150);
  TP_CHECK_INT_EQ(json_object_get_int_member(sp, "test"), 300);
  TP_CHECK_INT_EQ(json_object_get_int_member(sp, "train_pos"), 525);
  TP_CHECK_INT_EQ(strlen(json_object_get_string_member(sp, "test_sha256")), 64);
  JsonObject *t = json_object_get_object_member(o, "test");
  double acc = json_object_get_double_member(t, "accuracy");
  JsonArray *cm = json_object_get_array_member(t, "confusion");
  int64_t total = 0, diag = 0;
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 2; j++) {
      int64_t x = json_array_get_int_element(json_array_get_array_element(cm, i), j);
      total += x;
      if (i == j) diag += x;
    }
  TP_CHECK_INT_EQ(total, 300);
  TP_CHECK_NEAR(acc, (double)diag / 300.0, 1e-12);
  g_object_unref(jp);
  g_free(rp);

  /* the split ids written for other tools */
  char *ids = g_build_filename(run, "split", "test.txt", NULL), *text = NULL;
  TP_ASSERT(g_file_get_contents(ids, &text, NULL, NULL));
  int lines = 0;
  for (char *c = text; *c; c++) lines += *c == '\n';
  TP_CHECK_INT_EQ(lines, 300);
  g_free(text);
  g_free(ids);

  /* eval --run re-derives the split and reproduces the stored accuracy */
  rc = run_cli(&out, "eval", "--run", run, NULL);
  TP_CHECK_INT_EQ(rc, 0);
  TP_CHECK(strstr(out, "(identical)") != NULL);
  g_free(out);
  char *model = g_build_filename(run, "model", NULL);

  /* eval --test-split makes the same split of the same data (for peers that
   * evaluate the run's model on the same reviews: --ids-out) */
  char *ids_out = g_build_filename(tmp, "ids.txt", NULL), *ids_run = NULL, *ids_eval = NULL;
  rc = run_cli(&out, "eval", "--model", model, "--data", d, "--test-split", "--subset", "0.03",
               "--seed", "7", "--max-len", "64", "--ids-out", ids_out, "--json", NULL);
  TP_CHECK_INT_EQ(rc, 0);
  JsonParser *ep = json_parser_new();
  const char *brace = strchr(out, '{');
  if (brace && json_parser_load_from_data(ep, brace, -1, NULL)) {
    JsonObject *eo = json_node_get_object(json_parser_get_root(ep));
    TP_CHECK_INT_EQ(json_object_get_int_member(eo, "n"), 300);
    TP_CHECK_NEAR(json_object_get_double_member(eo, "accuracy"), acc, 1e-6);
    TP_CHECK(json_object_get_double_member(eo, "cpu_seconds") > 0);
    TP_CHECK(json_object_get_int_member(eo, "peak_rss_bytes") > 0);
    TP_CHECK(json_object_get_int_member(eo, "tokens") > 300);
  } else {
    TP_FAILF("eval --json printed no object: %s", out);
  }
  g_object_unref(ep);
  g_free(out);
  char *split_ids = g_build_filename(run, "split", "test.txt", NULL);
  TP_ASSERT(g_file_get_contents(split_ids, &ids_run, NULL, NULL));
  TP_ASSERT(g_file_get_contents(ids_out, &ids_eval, NULL, NULL));
  TP_CHECK_STR_EQ(ids_eval, ids_run);
  g_free(ids_run);
  g_free(ids_eval);
  g_free(split_ids);
  g_free(ids_out);
  /* the split's options alone choose nothing */
  rc = run_cli(&out, "eval", "--model", model, "--data", d, "--subset", "0.03", NULL);
  TP_CHECK_INT_EQ(rc, 2);
  TP_CHECK(strstr(out, "--test-split") != NULL);
  g_free(out);
  rc = run_cli(&out, "eval", "--run", run, "--test-split", NULL);
  TP_CHECK_INT_EQ(rc, 2);
  g_free(out);
  char *small = g_build_filename(tmp, "small.jsonl", NULL);
  GString *lines_s = g_string_new(NULL);
  for (int i = 0; i < 40; i++)
    g_string_append_printf(lines_s, "{\"text\": \"review %d: %s\", \"label\": %d}\n", i,
                           i % 2 ? "a wonderful, moving film" : "a dull and tedious mess", i % 2);
  TP_ASSERT(g_file_set_contents(small, lines_s->str, -1, NULL));
  g_string_free(lines_s, TRUE);
  rc = run_cli(&out, "eval", "--model", model, "--data", small, "--json", "--max-len", "64", NULL);
  TP_CHECK_INT_EQ(rc, 0);
  TP_CHECK(strstr(out, "\"n\": 40") != NULL);
  TP_CHECK(strstr(out, "\"accuracy\": ") != NULL && strstr(out, "\"confusion\": [[") != NULL);
  g_free(small);
  g_free(out);
  rc = run_cli(&out, "predict", "--model", model, "--json", "a wonderful film", "dull", NULL);
  TP_CHECK_INT_EQ(rc, 0);
  TP_CHECK(strstr(out, "{\"text\": \"a wonderful film\", \"label\": ") != NULL);
  TP_CHECK(strstr(out, "\"probs\": [") != NULL && strstr(out, "\"logits\": [") != NULL);
  g_free(out);
  g_free(model);
  g_free(run);
  g_free(v);
  g_free(d);
}

TP_TEST(Train, NonFiniteLossStopsWithAClearError) {
  char *v = vocab(), *d = imdb(), *tmp = tp_test_tmpdir();
  char *run = g_build_filename(tmp, "run", NULL), *run2 = g_build_filename(tmp, "nan", NULL);
  char *out = NULL;
  TP_ASSERT(run_cli(&out, TINY_ARGS(run, "1"), NULL) == 0);
  g_free(out);
  /* poison the classifier of the trained model with a NaN */
  char *wp = g_build_filename(run, "model", "model.safetensors", NULL);
  GError *err = NULL;
  tp_safetensors *st = tp_safetensors_open(wp, &err);
  TP_ASSERT_NO_ERROR(err);
  guint n = tp_safetensors_count(st);
  tp_st_write_item *items = g_new0(tp_st_write_item, n);
  float **bufs = g_new0(float *, n);
  for (guint i = 0; i < n; i++) {
    const tp_st_tensor *t = tp_safetensors_at(st, i);
    bufs[i] = g_new(float, t->numel + 1);
    TP_ASSERT(tp_st_tensor_to_f32(t, bufs[i], &err));
    if (strcmp(t->name, "classifier.weight") == 0) bufs[i][0] = NAN;
    items[i] = (tp_st_write_item){.name = t->name, .dtype = TP_F32, .ndim = t->ndim, .data = bufs[i]};
    memcpy(items[i].shape, t->shape, sizeof t->shape);
  }
  TP_ASSERT(tp_safetensors_write(wp, items, n, NULL, &err));
  tp_safetensors_close(st);
  char *model = g_build_filename(run, "model", NULL);
  int rc = run_cli(&out, "train", "--model", model, "--data", d, "--subset", "0.02", "--max-len",
                   "32", "--batch", "8", "--epochs", "1", "--out", run2, NULL);
  TP_CHECK_INT_EQ(rc, 1);
  TP_CHECK(strstr(out, "NaN") != NULL);
  /* it stopped in epoch 1: no checkpoint exists, and the message says so */
  TP_CHECK(strstr(out, "nothing was saved") != NULL);
  TP_CHECK(strstr(out, "--resume") == NULL);
  char *res = g_build_filename(run2, "results.json", NULL);
  TP_CHECK(!g_file_test(res, G_FILE_TEST_EXISTS)); /* no garbage results */
  g_free(out);
  g_free(res);
  for (guint i = 0; i < n; i++) g_free(bufs[i]);
  g_free(bufs);
  g_free(items);
  g_free(model);
  g_free(wp);
  g_free(run);
  g_free(run2);
  g_free(v);
  g_free(d);
}

TP_TEST(Train, UsageErrorsExitTwo) {
  char *v = vocab(), *d = imdb();
  char *out = NULL;
  TP_CHECK_INT_EQ(run_cli(&out, "train", "--no-such-flag", NULL), 2);
  g_free(out);
  TP_CHECK_INT_EQ(run_cli(&out, "train", "--model", "bert", "--init", "random", "--vocab", v,
                          "--data", d, "--lr", "-1", NULL), 2);
  TP_CHECK(strstr(out, "--lr") != NULL);
  g_free(out);
  TP_CHECK_INT_EQ(run_cli(&out, "train", "--model", "bert", "--init", "random", "--vocab", v,
                          "--data", d, "--subset", "1.5", NULL), 2);
  g_free(out);
  /* a bare preset without weights says how to get them, never trains a random model */
  TP_CHECK_INT_EQ(run_cli(&out, "train", "--model", "distilbert-base-uncased", "--vocab", v,
                          "--data", d, NULL), 2);
  TP_CHECK(strstr(out, "scripts/fetch-model.sh") != NULL);
  TP_CHECK(strstr(out, "--init random") != NULL);
  g_free(out);
  /* a backend that cannot run here */
  TP_CHECK_INT_EQ(run_cli(&out, "train", "--model", "bert", "--init", "random", "--vocab", v,
                          "--data", d, "--backend", "cuda", NULL), 2);
  g_free(out);
  TP_CHECK_INT_EQ(run_cli(&out, "train", "--model", "bert", "--init", "random", "--vocab", v,
                          "--data", d, "--precision", "f64", "--backend", "cpu", NULL), 2);
  TP_CHECK(strstr(out, "--precision f64") != NULL);
  g_free(out);
  /* missing data is a failed run (exit 1) naming the path */
  TP_CHECK_INT_EQ(run_cli(&out, "train", "--model", "bert", "--init", "random", "--vocab", v,
                          "--data", "/nonexistent/data.jsonl", NULL), 1);
  TP_CHECK(strstr(out, "/nonexistent/data.jsonl") != NULL);
  g_free(out);
  g_free(v);
  g_free(d);
}
