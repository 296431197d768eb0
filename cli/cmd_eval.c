/* cli/cmd_eval.c — `tensorplug eval`: accuracy, F1, confusion matrix and loss
 * of a model on a whole dataset, or (--run DIR) on a training run's own test
 * split, re-derived from its results.json. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "tensorplug/dataset.h"
#include "tensorplug/error.h"

typedef struct eval_cfg {
  tp_cli_model_opts mo;
  tp_cli_run_opts ro;
  char **data;
  char *run;
  int max_len, eval_batch;
  double subset;
  gint64 seed;
  gboolean json, skip_bad;
} eval_cfg;

/* The data, split and max length a run used, from DIR/results.json. */
static bool load_run(eval_cfg *c, double *stored_acc, GError **err) {
  char *rp = g_build_filename(c->run, "results.json", NULL);
  JsonParser *p = json_parser_new();
  bool ok = json_parser_load_from_file(p, rp, err);
  JsonObject *o = NULL, *cfg = NULL, *test = NULL;
  if (ok) {
    JsonNode *root = json_parser_get_root(p);
    o = root && JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
    cfg = o && json_object_has_member(o, "config") ? json_object_get_object_member(o, "config") : NULL;
    test = o && json_object_has_member(o, "test") ? json_object_get_object_member(o, "test") : NULL;
    if (!cfg || !test) {
      g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s lacks \"config\" or \"test\": is it a "
                  "tensorplug results.json?", rp);
      ok = false;
    }
  }
  if (ok) {
    JsonArray *d = json_object_get_array_member(cfg, "data");
    guint n = d ? json_array_get_length(d) : 0;
    g_strfreev(c->data);
    c->data = g_new0(char *, n + 1);
    for (guint i = 0; i < n; i++) c->data[i] = g_strdup(json_array_get_string_element(d, i));
    c->max_len = (int)json_object_get_int_member_with_default(cfg, "max_len", 512);
    c->subset = json_object_get_double_member_with_default(cfg, "subset", 1.0);
    c->seed = json_object_get_int_member_with_default(cfg, "seed", 42);
    c->skip_bad = json_object_get_boolean_member_with_default(cfg, "skip_bad", FALSE);
    *stored_acc = json_object_get_double_member_with_default(test, "accuracy", NAN);
    g_free(c->mo.model);
    c->mo.model = g_build_filename(c->run, "model", NULL);
  }
  if (!ok && err && *err) g_prefix_error(err, "--run %s: ", c->run);
  g_object_unref(p);
  g_free(rp);
  return ok;
}

static void print_json(const tp_eval_result *r) {
  printf("{\"accuracy\": %.6f, \"f1\": %.6f, \"loss\": %.6f, \"n\": %lld, "
         "\"confusion\": [[%lld, %lld], [%lld, %lld]], \"seconds\": %.3f}\n",
         r->accuracy, r->f1, r->loss, (long long)r->n, (long long)r->confusion.tn,
         (long long)r->confusion.fp, (long long)r->confusion.fn, (long long)r->confusion.tp,
         r->seconds);
}

static void print_text(const tp_eval_result *r, const char *what) {
  printf("Evaluated %lld examples (%s) in %.1f s\n\n", (long long)r->n, what, r->seconds);
  printf("Accuracy: %.3f   F1: %.3f   Loss: %.4f\n\n", r->accuracy, r->f1, r->loss);
  printf("Confusion matrix:\n [[%lld %lld]\n [%lld %lld]]\n", (long long)r->confusion.tn,
         (long long)r->confusion.fp, (long long)r->confusion.fn, (long long)r->confusion.tp);
}

static int run(eval_cfg *c) {
  GError *err = NULL;
  double stored = NAN;
  if (c->run && !load_run(c, &stored, &err)) return tp_cli_report(err);
  if (!c->data || !c->data[0])
    return tp_cli_report(g_error_new(TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                                     "no data: pass --data PATH, or --run DIR"));
  if (!c->mo.model)
    return tp_cli_report(g_error_new(TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                                     "no model: pass --model DIR (a trained model folder)"));
  if ((c->max_len != 0 && c->max_len < 3) || c->eval_batch < 1)
    return tp_cli_report(g_error_new(TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                                     "--max-len must be >= 3 and --eval-batch >= 1"));
  tp_cli_session s;
  tp_dataset *d = NULL;
  tp_split sp = {0};
  tp_token_seqs *seqs = NULL;
  guint *idx = NULL, n = 0;
  tp_eval_result r = {0};
  bool ok = tp_cli_session_open(&s, &c->mo, &c->ro, (uint64_t)c->seed, true, &err) &&
            tp_cli_check_max_len(&s, &c->max_len, &err);
  if (ok) tp_cli_warn_untrained_head(&s);
  if (ok) ok = (d = tp_dataset_load((const char *const *)c->data, c->skip_bad, &err)) != NULL;
  if (ok) ok = tp_dataset_check_labels(d, s.model->cfg.num_labels, c->skip_bad, &err);
  if (ok && c->run) {
    ok = tp_split_make(d, c->subset, (uint64_t)c->seed, &sp, &err);
    idx = sp.test;
    n = sp.n_test;
  } else if (ok) {
    idx = g_new(guint, d->n);
    for (guint i = 0; i < d->n; i++) idx[i] = i;
    n = d->n;
  }
  if (ok) {
    bool cached = false;
    seqs = tp_cli_tokenize_cached(s.tok, s.vocab_path, d->texts, d->n, c->max_len, c->ro.threads,
                                  &cached, &err);
    ok = seqs != NULL &&
         tp_cli_check_step_memory(&s, MIN((guint)c->eval_batch, n), tp_cli_longest(seqs), false,
                                  "--eval-batch", &err);
  }
  if (ok) {
    tp_labelled data = {.seqs = seqs, .labels = d->labels, .pad_id = tp_tokenizer_pad_id(s.tok)};
    tp_cli_progress pr = {.tty = isatty(STDERR_FILENO)};
    ok = tp_evaluate(s.model, s.ctx, &data, idx, n, c->eval_batch, NULL, NULL,
                     c->json ? NULL : tp_cli_progress_cb, &pr, "eval", &r, &err);
  }
  if (ok) {
    if (c->json) print_json(&r);
    else print_text(&r, c->run ? "the run's test split" : "the whole dataset");
    if (c->run && !c->json)
      printf("\nThe run's results.json says test accuracy %.6f; this evaluation: %.6f (%s)\n",
             stored, r.accuracy, fabs(stored - r.accuracy) < 1e-9 ? "identical" : "DIFFERENT");
  }
  int rc = ok ? TP_EXIT_OK : tp_cli_report(err);
  if (c->run && ok && fabs(stored - r.accuracy) >= 1e-9) rc = TP_EXIT_FAILED;
  if (!c->run) g_free(idx);
  if (seqs) tp_token_seqs_free(seqs);
  tp_split_clear(&sp);
  if (d) tp_dataset_free(d);
  tp_cli_session_close(&s);
  return rc;
}

int tp_cmd_eval(int argc, char **argv) {
  eval_cfg c = {.max_len = 0, .eval_batch = 64, .subset = 1.0, .seed = 42};
  tp_cli_model_opts_init(&c.mo);
  tp_cli_run_opts_init(&c.ro);
  GOptionEntry e[] = {
      {"data", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &c.data, "Dataset to evaluate on (all of it)", "PATH"},
      {"run", 0, 0, G_OPTION_ARG_FILENAME, &c.run,
       "Evaluate a training run's model on that run's own test split (from DIR/results.json)", "DIR"},
      {"max-len", 0, 0, G_OPTION_ARG_INT, &c.max_len, "Truncate texts to N tokens [the model's positions, at most 512]", "N"},
      {"eval-batch", 0, 0, G_OPTION_ARG_INT, &c.eval_batch, "Batch size [64]", "N"},
      {"skip-bad", 0, 0, G_OPTION_ARG_NONE, &c.skip_bad, "Skip malformed records", NULL},
      {"json", 0, 0, G_OPTION_ARG_NONE, &c.json,
       "Print one JSON object: accuracy, f1, confusion, loss, n", NULL},
      G_OPTION_ENTRY_NULL};
  GOptionContext *oc = g_option_context_new("- evaluate a model");
  g_option_context_set_summary(oc,
      "Accuracy, F1 (of label 1), confusion matrix (rows: true label; columns: predicted) and\n"
      "mean loss of a model folder on a dataset, or of a run on its own test split (--run).");
  g_option_context_add_main_entries(oc, e, NULL);
  g_option_context_add_group(oc, tp_cli_model_group(&c.mo));
  g_option_context_add_group(oc, tp_cli_run_group(&c.ro));
  bool parsed = tp_cli_parse(oc, &argc, &argv);
  g_option_context_free(oc);
  int rc = TP_EXIT_USAGE;
  if (parsed && argc > 1) fprintf(stderr, "tensorplug: error: unexpected argument \"%s\"\n", argv[1]);
  else if (parsed) rc = run(&c);
  tp_cli_model_opts_clear(&c.mo);
  tp_cli_run_opts_clear(&c.ro);
  g_strfreev(c.data);
  g_free(c.run);
  return rc;
}
