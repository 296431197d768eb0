/* cli/cmd_eval.c — `tensorplug eval`: accuracy, F1, confusion matrix and loss
 * of a model on a whole dataset, or (--run DIR) on a training run's own test
 * split, re-derived from its results.json, or (--test-split) on the test split
 * `train --subset F --seed N` makes of the data. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "tensorplug/dataset.h"
#include "tensorplug/error.h"

typedef struct eval_cfg {
  tp_cli_opts o; /* model, device, data, max_len, eval_batch, json */
  char *run;
  double subset; /* from the run's results.json, or --subset with --test-split */
  gint64 seed;
  gboolean test_split;
  char *ids_out;
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
    g_strfreev(c->o.data);
    c->o.data = g_new0(char *, n + 1);
    for (guint i = 0; i < n; i++) c->o.data[i] = g_strdup(json_array_get_string_element(d, i));
    c->o.max_len = (int)json_object_get_int_member_with_default(cfg, "max_len", 512);
    c->subset = json_object_get_double_member_with_default(cfg, "subset", 1.0);
    c->seed = json_object_get_int_member_with_default(cfg, "seed", 42);
    c->o.skip_bad = json_object_get_boolean_member_with_default(cfg, "skip_bad", FALSE);
    *stored_acc = json_object_get_double_member_with_default(test, "accuracy", NAN);
    g_free(c->o.mo.model);
    c->o.mo.model = g_build_filename(c->run, "model", NULL);
  }
  if (!ok && err && *err) g_prefix_error(err, "--run %s: ", c->run);
  g_object_unref(p);
  g_free(rp);
  return ok;
}

static void print_json(const tp_eval_result *r, const tp_cli_session *s, double cpu_s) {
  printf("{\"accuracy\": %.6f, \"f1\": %.6f, \"loss\": %.6f, \"n\": %lld, "
         "\"confusion\": [[%lld, %lld], [%lld, %lld]], \"seconds\": %.3f, \"tokens\": %lld, "
         "\"tokens_per_s\": %.1f, \"reviews_per_s\": %.2f, \"precision\": \"%s\", "
         "\"peak_rss_bytes\": %llu, \"cpu_seconds\": %.3f}\n",
         r->accuracy, r->f1, r->loss, (long long)r->n, (long long)r->confusion.tn,
         (long long)r->confusion.fp, (long long)r->confusion.fn, (long long)r->confusion.tp,
         r->seconds, (long long)r->tokens, (double)r->tokens / fmax(r->seconds, 1e-9),
         (double)r->n / fmax(r->seconds, 1e-9), tp_dtype_name(tp_ctx_precision(s->ctx)),
         (unsigned long long)tp_cli_peak_rss_bytes(), cpu_s);
}

static void print_text(const tp_eval_result *r, const char *what) {
  printf("Evaluated %lld examples (%s) in %.1f s: %.1f reviews/s, %.0f tokens/s (peak memory "
         "%.0f MiB)\n\n",
         (long long)r->n, what, r->seconds, (double)r->n / fmax(r->seconds, 1e-9),
         (double)r->tokens / fmax(r->seconds, 1e-9), (double)tp_cli_peak_rss_bytes() / 1048576.0);
  printf("Accuracy: %.3f   F1: %.3f   Loss: %.4f\n\n", r->accuracy, r->f1, r->loss);
  printf("Confusion matrix:\n [[%lld %lld]\n [%lld %lld]]\n", (long long)r->confusion.tn,
         (long long)r->confusion.fp, (long long)r->confusion.fn, (long long)r->confusion.tp);
}

/* --test-split picks a split the way train does; --run brings its own, and
 * --subset and --seed mean nothing without one of them. */
static bool check_split_opts(const eval_cfg *c, const tp_cli_optset *set, GError **err) {
  if (c->run && c->test_split) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "--run and --test-split: --run "
                "already evaluates that run's own test split; pass one of them");
    return false;
  }
  const char *lone = tp_cli_optset_given(set, "subset") ? "--subset"
                     : tp_cli_optset_given(set, "seed") ? "--seed" : NULL;
  if (lone && !c->test_split) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "%s only chooses the split of "
                "--test-split%s; add --test-split or leave %s out", lone,
                c->run ? " (--run takes the run's own)" : "", lone);
    return false;
  }
  return true;
}

static int run(eval_cfg *c, const tp_cli_optset *set) {
  GError *err = NULL;
  double stored = NAN;
  if (!check_split_opts(c, set, &err)) return tp_cli_report(err);
  if (c->run && !load_run(c, &stored, &err)) return tp_cli_report(err);
  /* the values a run's results.json supplied pass the same validation */
  if (c->run && !tp_cli_optset_check(set, &err)) {
    g_prefix_error(&err, "--run %s: results.json: ", c->run);
    return tp_cli_report(err);
  }
  if (!c->o.data || !c->o.data[0])
    return tp_cli_report(g_error_new(TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                                     "no data: pass --data PATH, or --run DIR"));
  if (!c->o.mo.model)
    return tp_cli_report(g_error_new(TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                                     "no model: pass --model DIR (a trained model folder)"));
  tp_cli_session s;
  tp_dataset *d = NULL;
  tp_split sp = {0};
  tp_token_seqs *seqs = NULL;
  guint *idx = NULL, n = 0;
  tp_eval_result r = {0};
  double cpu_s = 0; /* process CPU time of the evaluation (all threads) */
  bool ok = tp_cli_session_open(&s, &c->o.mo, &c->o.ro, (uint64_t)c->seed, true, &err) &&
            tp_cli_check_max_len(&s, &c->o.max_len, &err);
  if (ok) tp_cli_warn_untrained_head(&s);
  if (ok) ok = (d = tp_dataset_load((const char *const *)c->o.data, c->o.skip_bad, &err)) != NULL;
  if (ok) ok = tp_dataset_check_labels(d, s.model->cfg.num_labels, c->o.skip_bad, &err);
  if (ok && (c->run || c->test_split)) {
    ok = tp_split_make(d, c->subset, (uint64_t)c->seed, &sp, &err);
    idx = sp.test;
    n = sp.n_test;
  } else if (ok) {
    idx = g_new(guint, d->n);
    for (guint i = 0; i < d->n; i++) idx[i] = i;
    n = d->n;
  }
  if (ok && c->ids_out) { /* the records evaluated, in order: for peers on the same reviews */
    GString *ids = g_string_new(NULL);
    for (guint i = 0; i < n; i++) g_string_append_printf(ids, "%s\n", d->ids[idx[i]]);
    ok = g_file_set_contents(c->ids_out, ids->str, (gssize)ids->len, &err);
    if (!ok) g_prefix_error(&err, "--ids-out %s: ", c->ids_out);
    g_string_free(ids, TRUE);
  }
  if (ok) {
    bool cached = false;
    seqs = tp_cli_tokenize_cached(s.tok, s.vocab_path, d->texts, d->n, c->o.max_len, c->o.ro.threads,
                                  &cached, &err);
    ok = seqs != NULL &&
         tp_cli_check_step_memory(&s, MIN((guint)c->o.eval_batch, n), tp_cli_longest(seqs), false,
                                  "--eval-batch", &err);
  }
  if (ok) {
    tp_labelled data = {.seqs = seqs, .labels = d->labels, .pad_id = tp_tokenizer_pad_id(s.tok)};
    tp_cli_progress pr = {.tty = isatty(STDERR_FILENO)};
    struct timespec c0, c1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    ok = tp_evaluate(s.model, s.ctx, &data, idx, n, c->o.eval_batch, NULL, NULL,
                     c->o.json ? NULL : tp_cli_progress_cb, &pr, "eval", &r, &err);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    cpu_s = (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) * 1e-9;
  }
  if (ok) {
    if (c->o.json) print_json(&r, &s, cpu_s);
    else print_text(&r, c->run ? "the run's test split"
                        : c->test_split ? "the test split" : "the whole dataset");
    if (c->run && !c->o.json)
      printf("\nThe run's results.json says test accuracy %.6f; this evaluation: %.6f (%s)\n",
             stored, r.accuracy, fabs(stored - r.accuracy) < 1e-9 ? "identical" : "DIFFERENT");
  }
  int rc = ok ? TP_EXIT_OK : tp_cli_report(err);
  if (c->run && ok && fabs(stored - r.accuracy) >= 1e-9) rc = TP_EXIT_FAILED;
  if (!c->run && !c->test_split) g_free(idx);
  if (seqs) tp_token_seqs_free(seqs);
  tp_split_clear(&sp);
  if (d) tp_dataset_free(d);
  tp_cli_session_close(&s);
  return rc;
}

static const tp_cli_opt eval_rows[] = {
    {.name = "run", .kind = TP_OPT_PATH, .offset = offsetof(eval_cfg, run), .arg = "DIR",
     .help = "Evaluate a training run's model on that run's own test split (from "
             "DIR/results.json)"},
    {.name = "test-split", .kind = TP_OPT_FLAG, .offset = offsetof(eval_cfg, test_split),
     .help = "Evaluate only the test split that `train --subset F --seed N` makes of --data"},
    {.name = "subset", .kind = TP_OPT_DOUBLE, .offset = offsetof(eval_cfg, subset), .arg = "F",
     .help = "With --test-split: the stratified fraction of the data train used", .min = 0,
     .max = 1, .flags = TP_OPT_MIN_OPEN},
    {.name = "seed", .kind = TP_OPT_INT64, .offset = offsetof(eval_cfg, seed), .arg = "N",
     .help = "With --test-split: the seed of the split", .min = (double)G_MININT64,
     .max = (double)G_MAXINT64},
    {.name = "ids-out", .kind = TP_OPT_PATH, .offset = offsetof(eval_cfg, ids_out), .arg = "FILE",
     .help = "Write the evaluated records' ids, one a line, in order (for a peer on the same "
             "reviews)"},
};

int tp_cmd_eval(int argc, char **argv) {
  eval_cfg c = {.subset = 1.0, .seed = 42};
  tp_cli_opts_init(&c.o);
  tp_cli_optset *set = tp_cli_optset_new(NULL,
      "Accuracy, F1 (of label 1), confusion matrix (rows: true label; columns: predicted) and\n"
      "mean loss of a model folder on a whole dataset, on the test split train makes of it\n"
      "(--test-split), or of a run on its own test split (--run).",
      NULL);
  tp_cli_optset_add_data(set, &c.o);
  tp_cli_optset_add(set, "Options", eval_rows, G_N_ELEMENTS(eval_rows), &c);
  tp_cli_optset_add_text(set, &c.o);
  tp_cli_optset_add_json(set, &c.o, "Print one JSON object: accuracy, f1, confusion, loss, n, "
                         "seconds, tokens per second, peak RSS, CPU seconds");
  tp_cli_optset_add_model(set, &c.o);
  tp_cli_optset_add_device(set, &c.o);
  int rc = tp_cli_optset_parse(set, &argc, &argv);
  if (rc < 0 && argc > 1) {
    fprintf(stderr, "tensorplug: error: unexpected argument \"%s\"\n", argv[1]);
    rc = TP_EXIT_USAGE;
  } else if (rc < 0) {
    rc = run(&c, set);
  }
  tp_cli_optset_free(set);
  tp_cli_opts_clear(&c.o);
  g_free(c.run);
  g_free(c.ids_out);
  return rc;
}
