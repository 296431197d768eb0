/* cli/cmd_train.c — `tensorplug train`: the homework from one command.
 * Data -> stratified split -> tokenize (cached) -> fine-tune with early
 * stopping and restore-best -> test metrics -> DIR/results.json, DIR/model/,
 * DIR/checkpoint/ (resumable with --resume DIR). */
#include <errno.h>
#include <glib/gstdio.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "tensorplug/dataset.h"
#include "tensorplug/error.h"

static volatile sig_atomic_t g_stop; /* set by SIGINT/SIGTERM: stop after this step */

static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

typedef struct train_cfg {
  tp_cli_model_opts mo;
  tp_cli_run_opts ro;
  char **data;
  char *out, *resume, *optimizer, *schedule;
  int max_len, batch, eval_batch, epochs, patience;
  double lr, weight_decay, warmup, clip_norm, subset;
  gint64 seed;
  gboolean skip_bad;
  int grad_accum; /* 0: not given (1, or the checkpoint's on --resume) */
  gboolean distributed;
  double dist_timeout;
} train_cfg;

static void cfg_defaults(train_cfg *c) {
  memset(c, 0, sizeof *c);
  tp_cli_model_opts_init(&c->mo);
  tp_cli_run_opts_init(&c->ro);
  c->max_len = 512;
  c->batch = 8;
  c->eval_batch = 64;
  c->epochs = 3;
  c->patience = 2;
  c->lr = 1e-5;
  c->weight_decay = 0.01;
  c->subset = 1.0;
  c->seed = 42;
  c->dist_timeout = 300;
}

static void cfg_clear(train_cfg *c) {
  tp_cli_model_opts_clear(&c->mo);
  tp_cli_run_opts_clear(&c->ro);
  g_strfreev(c->data);
  g_free(c->out);
  g_free(c->resume);
  g_free(c->optimizer);
  g_free(c->schedule);
}

/* ---- the run's options as JSON (results.json "config", checkpoint extra) ---- */

static void put_str(JsonBuilder *b, const char *k, const char *v) {
  json_builder_set_member_name(b, k);
  if (v) json_builder_add_string_value(b, v);
  else json_builder_add_null_value(b);
}
static void put_int(JsonBuilder *b, const char *k, gint64 v) {
  json_builder_set_member_name(b, k);
  json_builder_add_int_value(b, v);
}
static void put_dbl(JsonBuilder *b, const char *k, double v) {
  json_builder_set_member_name(b, k);
  if (isfinite(v)) json_builder_add_double_value(b, v);
  else json_builder_add_null_value(b);
}

static JsonNode *cfg_to_json(const train_cfg *c) {
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  put_str(b, "model", c->mo.model);
  put_str(b, "weights", c->mo.weights);
  put_str(b, "init", c->mo.init ? c->mo.init : "pretrained");
  put_str(b, "vocab", c->mo.vocab);
  put_int(b, "layers", c->mo.layers);
  put_int(b, "hidden", c->mo.hidden);
  put_int(b, "heads", c->mo.heads);
  put_int(b, "ffn", c->mo.ffn);
  put_int(b, "max_positions", c->mo.max_positions);
  json_builder_set_member_name(b, "data");
  json_builder_begin_array(b);
  for (char **d = c->data; d && *d; d++) json_builder_add_string_value(b, *d);
  json_builder_end_array(b);
  put_int(b, "max_len", c->max_len);
  put_int(b, "batch", c->batch);
  put_int(b, "grad_accum", MAX(1, c->grad_accum));
  put_int(b, "eval_batch", c->eval_batch);
  put_int(b, "epochs", c->epochs);
  put_dbl(b, "lr", c->lr);
  put_str(b, "optimizer", c->optimizer ? c->optimizer : "adam");
  put_dbl(b, "weight_decay", c->weight_decay);
  put_dbl(b, "warmup", c->warmup);
  put_str(b, "schedule", c->schedule ? c->schedule : "constant");
  put_dbl(b, "clip_norm", c->clip_norm);
  put_int(b, "patience", c->patience);
  put_dbl(b, "subset", c->subset);
  put_int(b, "seed", c->seed);
  json_builder_set_member_name(b, "skip_bad");
  json_builder_add_boolean_value(b, c->skip_bad);
  put_str(b, "backend", c->ro.backend ? c->ro.backend : "auto");
  put_int(b, "device", c->ro.device);
  put_int(b, "threads", c->ro.threads);
  put_str(b, "precision", c->ro.precision ? c->ro.precision : "auto");
  put_str(b, "out", c->out);
  json_builder_end_object(b);
  JsonNode *n = json_builder_get_root(b);
  g_object_unref(b);
  return n;
}

static char *dup_str(JsonObject *o, const char *k) {
  JsonNode *n = json_object_get_member(o, k);
  return n && JSON_NODE_HOLDS_VALUE(n) ? g_strdup(json_node_get_string(n)) : NULL;
}

/* Restores every option of the interrupted run (only --threads and
 * --grad-accum may differ, and the distributed options: neither changes the
 * results beyond summation order). */
static bool cfg_from_json(train_cfg *c, JsonNode *node, GError **err) {
  if (!node || !JSON_NODE_HOLDS_OBJECT(node)) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "the checkpoint does not record its run's options");
    return false;
  }
  JsonObject *o = json_node_get_object(node);
  int threads = c->ro.threads, accum = c->grad_accum;
  gboolean distributed = c->distributed;
  double timeout = c->dist_timeout;
  char *resume = g_steal_pointer(&c->resume);
  cfg_clear(c);
  cfg_defaults(c);
  c->resume = resume;
  c->distributed = distributed;
  c->dist_timeout = timeout;
  c->grad_accum = accum ? accum : (int)json_object_get_int_member_with_default(o, "grad_accum", 1);
  c->mo.model = dup_str(o, "model");
  c->mo.weights = dup_str(o, "weights");
  char *init = dup_str(o, "init");
  if (init && strcmp(init, "random") == 0) c->mo.init = init;
  else g_free(init);
  c->mo.vocab = dup_str(o, "vocab");
  c->mo.layers = (int)json_object_get_int_member_with_default(o, "layers", 0);
  c->mo.hidden = (int)json_object_get_int_member_with_default(o, "hidden", 0);
  c->mo.heads = (int)json_object_get_int_member_with_default(o, "heads", 0);
  c->mo.ffn = (int)json_object_get_int_member_with_default(o, "ffn", 0);
  c->mo.max_positions = (int)json_object_get_int_member_with_default(o, "max_positions", 0);
  JsonArray *d = json_object_get_array_member(o, "data");
  guint nd = d ? json_array_get_length(d) : 0;
  c->data = g_new0(char *, nd + 1);
  for (guint i = 0; i < nd; i++) c->data[i] = g_strdup(json_array_get_string_element(d, i));
  c->max_len = (int)json_object_get_int_member_with_default(o, "max_len", c->max_len);
  c->batch = (int)json_object_get_int_member_with_default(o, "batch", c->batch);
  c->eval_batch = (int)json_object_get_int_member_with_default(o, "eval_batch", c->eval_batch);
  c->epochs = (int)json_object_get_int_member_with_default(o, "epochs", c->epochs);
  c->lr = json_object_get_double_member_with_default(o, "lr", c->lr);
  c->optimizer = dup_str(o, "optimizer");
  c->weight_decay = json_object_get_double_member_with_default(o, "weight_decay", c->weight_decay);
  c->warmup = json_object_get_double_member_with_default(o, "warmup", 0);
  c->schedule = dup_str(o, "schedule");
  c->clip_norm = json_object_get_double_member_with_default(o, "clip_norm", 0);
  c->patience = (int)json_object_get_int_member_with_default(o, "patience", c->patience);
  c->subset = json_object_get_double_member_with_default(o, "subset", 1.0);
  c->seed = json_object_get_int_member_with_default(o, "seed", 42);
  c->skip_bad = json_object_get_boolean_member_with_default(o, "skip_bad", FALSE);
  c->ro.backend = dup_str(o, "backend");
  c->ro.device = (int)json_object_get_int_member_with_default(o, "device", -1);
  c->ro.threads = threads ? threads : (int)json_object_get_int_member_with_default(o, "threads", 0);
  c->ro.precision = dup_str(o, "precision");
  c->out = dup_str(o, "out");
  return true;
}

static bool cfg_check(const train_cfg *c, tp_train_options *to, GError **err) {
#define BAD(...) (g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, __VA_ARGS__), false)
  if (!c->data || !c->data[0]) return BAD("no data: pass --data PATH (a folder or file; "
                                          "scripts/get-imdb.sh downloads IMDB)");
  if (!c->mo.model) return BAD("no model: pass --model PRESET or --model DIR");
  if (c->max_len < 3 || c->max_len > 1 << 16) return BAD("--max-len %d: use 3 to 65536", c->max_len);
  if (c->batch < 1 || c->batch > 1 << 16) return BAD("--batch %d: use 1 or more", c->batch);
  if (c->eval_batch < 1 || c->eval_batch > 1 << 16) return BAD("--eval-batch %d: use 1 or more", c->eval_batch);
  if (c->epochs < 1 || c->epochs > 100000) return BAD("--epochs %d: use 1 or more", c->epochs);
  if (c->patience < 0) return BAD("--patience %d: use 0 (off) or more", c->patience);
  if (!(c->lr > 0 && c->lr < 10)) return BAD("--lr %g: use a positive rate below 10", c->lr);
  if (!(c->subset > 0 && c->subset <= 1)) return BAD("--subset %g: use a fraction in (0, 1]", c->subset);
  if (c->grad_accum < 0 || c->grad_accum > c->batch)
    return BAD("--grad-accum %d: use 1 to --batch (%d) micro-batches per step", c->grad_accum,
               c->batch);
  if (!(c->dist_timeout >= 0)) return BAD("--dist-timeout %g: use seconds, 0 = wait forever",
                                          c->dist_timeout);
  if (c->warmup < 0 || c->clip_norm < 0 || c->weight_decay < 0)
    return BAD("--warmup, --clip-norm and --weight-decay must not be negative");
  const char *opt = c->optimizer ? c->optimizer : "adam";
  const char *sch = c->schedule ? c->schedule : "constant";
  if (strcmp(opt, "adam") && strcmp(opt, "adamw")) return BAD("--optimizer %s: use adam or adamw", opt);
  if (strcmp(sch, "constant") && strcmp(sch, "linear")) return BAD("--schedule %s: use constant or linear", sch);
#undef BAD
  *to = (tp_train_options){.batch = c->batch, .eval_batch = c->eval_batch, .epochs = c->epochs,
                           .patience = c->patience, .lr = c->lr,
                           .optimizer = strcmp(opt, "adamw") ? TP_ADAM_KERAS : TP_ADAM_W,
                           .weight_decay = c->weight_decay, .warmup = c->warmup,
                           .schedule = strcmp(sch, "linear") ? TP_SCHEDULE_CONSTANT : TP_SCHEDULE_LINEAR,
                           .clip_norm = c->clip_norm, .seed = (uint64_t)c->seed, .stop = &g_stop,
                           .grad_accum = MAX(1, c->grad_accum)};
  return true;
}

/* ---- hooks: best weights and checkpoints under the run folder ---- */

typedef struct run_ctx {
  const char *out;
  const char *vocab_path;
  JsonNode *cfg_json;
  tp_cli_progress progress;
} run_ctx;

static bool save_best(tp_model *m, tp_ctx *ctx, int epoch, void *user, GError **err) {
  (void)epoch;
  run_ctx *r = user;
  char *dir = g_build_filename(r->out, "model", NULL);
  char *tmp = g_strconcat(dir, ".tmp", NULL);
  bool ok = tp_model_save(m, ctx, tmp, r->vocab_path, err) && tp_replace_dir(tmp, dir, err);
  g_free(dir);
  g_free(tmp);
  return ok;
}

static bool checkpoint(tp_model *m, tp_ctx *ctx, const tp_train_state *s, void *user, GError **err) {
  run_ctx *r = user;
  char *dir = g_build_filename(r->out, "checkpoint", NULL);
  bool ok = tp_checkpoint_write(dir, m, ctx, s, r->cfg_json, err);
  g_free(dir);
  return ok;
}

static void on_progress(const tp_progress *p, void *user) {
  tp_cli_progress_cb(p, &((run_ctx *)user)->progress);
}

/* ---- results.json ---- */

static void put_split(JsonBuilder *b, const tp_dataset *d, const tp_split *s) {
  json_builder_set_member_name(b, "split");
  json_builder_begin_object(b);
  const char *names[3] = {"train", "val", "test"};
  const guint *idx[3] = {s->train, s->val, s->test};
  guint n[3] = {s->n_train, s->n_val, s->n_test};
  for (int i = 0; i < 3; i++) {
    char k[32], hash[65];
    put_int(b, names[i], n[i]);
    g_snprintf(k, sizeof k, "%s_pos", names[i]);
    put_int(b, k, tp_split_count_label(d, idx[i], n[i], 1));
    g_snprintf(k, sizeof k, "%s_neg", names[i]);
    put_int(b, k, tp_split_count_label(d, idx[i], n[i], 0));
    tp_split_ids_sha256(d, idx[i], n[i], hash);
    g_snprintf(k, sizeof k, "%s_sha256", names[i]);
    put_str(b, k, hash);
  }
  put_int(b, "total_records", d->n);
  put_int(b, "skipped_records", d->n_skipped);
  json_builder_end_object(b);
}

/* How the run was spread: "distributed": {ranks, transport, gradient_sum}. */
static void put_distributed(JsonBuilder *b, tp_collective *coll, const char *how) {
  json_builder_set_member_name(b, "distributed");
  json_builder_begin_object(b);
  put_int(b, "world_size", coll ? tp_collective_size(coll) : 1);
  put_str(b, "transport", coll ? tp_collective_name(coll) : "single");
  put_str(b, "gradient_sum", how ? how : "none");
  json_builder_end_object(b);
}

static JsonNode *results_json(const train_cfg *c, JsonNode *cfg_json, const tp_cli_session *s,
                              const tp_dataset *d, const tp_split *sp, const tp_train_state *st,
                              const tp_eval_result *test, double elapsed, double tok_s,
                              tp_collective *coll, const char *how) {
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "config");
  json_builder_add_value(b, json_node_copy(cfg_json));
  put_str(b, "version", TP_VERSION);
  put_distributed(b, coll, how);
  put_str(b, "backend", s->be->name);
  put_str(b, "device", s->be->info.name);
  put_str(b, "device_description", s->be->info.description);
  put_str(b, "precision", tp_dtype_name(tp_ctx_precision(s->ctx)));
  put_int(b, "peak_device_bytes", (gint64)s->be->stats.peak_bytes);
  json_builder_set_member_name(b, "model");
  json_builder_begin_object(b);
  const tp_model_config *mc = &s->model->cfg;
  put_str(b, "model_type", mc->model_type);
  put_int(b, "layers", mc->layers);
  put_int(b, "hidden", mc->hidden);
  put_int(b, "heads", mc->heads);
  put_int(b, "ffn", mc->ffn);
  put_int(b, "parameters", tp_params_numel(s->model->params));
  put_str(b, "weights", s->weights_path);
  put_str(b, "vocab", s->vocab_path);
  json_builder_end_object(b);
  put_split(b, d, sp);
  tp_train_history_to_json(st, b);
  put_int(b, "best_epoch", st->best_epoch);
  double vbest = NAN;
  for (guint i = 0; i < st->history->len; i++) {
    const tp_epoch_stats *e = &g_array_index(st->history, tp_epoch_stats, i);
    if (e->epoch == st->best_epoch) vbest = e->val_acc;
  }
  put_dbl(b, "val_acc_best", vbest);
  put_dbl(b, "val_loss_best", st->best_val_loss);
  json_builder_set_member_name(b, "stopped_early");
  json_builder_add_boolean_value(b, st->stopped_early);
  json_builder_set_member_name(b, "test");
  json_builder_begin_object(b);
  put_dbl(b, "accuracy", test->accuracy);
  put_dbl(b, "f1", test->f1);
  put_dbl(b, "loss", test->loss);
  put_int(b, "n", test->n);
  json_builder_set_member_name(b, "confusion");
  json_builder_begin_array(b);
  json_builder_begin_array(b);
  json_builder_add_int_value(b, test->confusion.tn);
  json_builder_add_int_value(b, test->confusion.fp);
  json_builder_end_array(b);
  json_builder_begin_array(b);
  json_builder_add_int_value(b, test->confusion.fn);
  json_builder_add_int_value(b, test->confusion.tp);
  json_builder_end_array(b);
  json_builder_end_array(b);
  put_dbl(b, "seconds", test->seconds);
  json_builder_end_object(b);
  put_dbl(b, "tokenize_tokens_per_s", tok_s);
  put_dbl(b, "elapsed_s", elapsed);
  (void)c;
  json_builder_end_object(b);
  JsonNode *n = json_builder_get_root(b);
  g_object_unref(b);
  return n;
}

static void print_summary(const tp_train_state *st, const tp_eval_result *t, double elapsed) {
  double vbest = NAN;
  for (guint i = 0; i < st->history->len; i++) {
    const tp_epoch_stats *e = &g_array_index(st->history, tp_epoch_stats, i);
    if (e->epoch == st->best_epoch) vbest = e->val_acc;
  }
  char *hms = tp_cli_hms(elapsed);
  printf("\nValidation acc (best epoch): %.3f\n\n", vbest);
  printf("Test accuracy: %.3f   Test F1: %.3f\n\n", t->accuracy, t->f1);
  printf("Confusion matrix:\n [[%lld %lld]\n [%lld %lld]]\n\n", (long long)t->confusion.tn,
         (long long)t->confusion.fp, (long long)t->confusion.fn, (long long)t->confusion.tp);
  printf("Elapsed time: %s\n", hms);
  g_free(hms);
}

/* DIR/split/{train,val,test}.txt: the record ids of each split, in order, so
 * other tools (benchmarks/hf_finetune.py) train and test on exactly these. */
static bool write_split_ids(const char *out, const tp_dataset *d, const tp_split *sp, GError **err) {
  char *dir = g_build_filename(out, "split", NULL);
  bool ok = g_mkdir_with_parents(dir, 0755) == 0;
  if (!ok) g_set_error(err, TP_ERROR, TP_ERROR_IO, "cannot create %s: %s", dir, g_strerror(errno));
  const char *names[3] = {"train", "val", "test"};
  const guint *idx[3] = {sp->train, sp->val, sp->test};
  guint n[3] = {sp->n_train, sp->n_val, sp->n_test};
  for (int i = 0; ok && i < 3; i++) {
    GString *s = g_string_new(NULL);
    for (guint j = 0; j < n[i]; j++) g_string_append_printf(s, "%s\n", d->ids[idx[i][j]]);
    char *name = g_strdup_printf("%s.txt", names[i]);
    char *path = g_build_filename(dir, name, NULL);
    ok = g_file_set_contents(path, s->str, (gssize)s->len, err);
    g_free(path);
    g_free(name);
    g_string_free(s, TRUE);
  }
  g_free(dir);
  return ok;
}

/* ---- the command ---- */

static GOptionContext *make_options(train_cfg *c) {
  GOptionEntry e[] = {
      {"data", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &c->data,
       "Dataset: an aclImdb folder, a folder of .jsonl[.gz], or .jsonl[.gz]/.csv/.tsv files "
       "(repeatable)", "PATH"},
      {"max-len", 0, 0, G_OPTION_ARG_INT, &c->max_len, "Truncate reviews to N tokens [512]", "N"},
      {"batch", 0, 0, G_OPTION_ARG_INT, &c->batch,
       "Training batch size [8] (the global batch: all ranks of --distributed together)", "N"},
      {"grad-accum", 0, 0, G_OPTION_ARG_INT, &c->grad_accum,
       "Compute each batch in K micro-batches whose gradients add up (same results, a K-th of "
       "the activation memory) [1]", "K"},
      {"eval-batch", 0, 0, G_OPTION_ARG_INT, &c->eval_batch, "Evaluation batch size [64]", "N"},
      {"epochs", 0, 0, G_OPTION_ARG_INT, &c->epochs, "Epochs [3]", "N"},
      {"lr", 0, 0, G_OPTION_ARG_DOUBLE, &c->lr, "Learning rate [1e-5]", "LR"},
      {"optimizer", 0, 0, G_OPTION_ARG_STRING, &c->optimizer,
       "adam (Keras: eps 1e-7) or adamw (PyTorch: eps 1e-8) [adam]", "NAME"},
      {"weight-decay", 0, 0, G_OPTION_ARG_DOUBLE, &c->weight_decay, "AdamW weight decay [0.01]", "W"},
      {"warmup", 0, 0, G_OPTION_ARG_DOUBLE, &c->warmup,
       "Linear warmup: a fraction of all steps (< 1) or a step count [0]", "W"},
      {"schedule", 0, 0, G_OPTION_ARG_STRING, &c->schedule, "constant or linear decay [constant]", "S"},
      {"clip-norm", 0, 0, G_OPTION_ARG_DOUBLE, &c->clip_norm, "Clip the global gradient norm [off]", "N"},
      {"patience", 0, 0, G_OPTION_ARG_INT, &c->patience,
       "Early stopping: epochs without a better validation loss [2]; 0 = off", "N"},
      {"subset", 0, 0, G_OPTION_ARG_DOUBLE, &c->subset, "Stratified fraction of the data [1.0]", "F"},
      {"seed", 0, 0, G_OPTION_ARG_INT64, &c->seed, "Seed of the split, init, shuffles, dropout [42]", "N"},
      {"skip-bad", 0, 0, G_OPTION_ARG_NONE, &c->skip_bad, "Skip malformed records (and count them)", NULL},
      {"out", 0, 0, G_OPTION_ARG_FILENAME, &c->out, "Run folder [runs/DATE-TIME-MODEL]", "DIR"},
      {"resume", 0, 0, G_OPTION_ARG_FILENAME, &c->resume,
       "Continue the interrupted run in DIR with its own options", "DIR"},
      G_OPTION_ENTRY_NULL};
  GOptionContext *oc = g_option_context_new("- fine-tune a classifier");
  g_option_context_set_summary(oc,
      "Fine-tunes a model on labelled texts: the homework's seeded stratified split (80/20\n"
      "train+val/test, then 12.5% of train+val as validation: 70/10/20), Adam, early stopping\n"
      "on validation loss with restore-best, then test accuracy, F1 and confusion matrix.\n"
      "Writes DIR/results.json, DIR/model/ (best weights, a Hugging Face model folder),\n"
      "DIR/split/{train,val,test}.txt (record ids) and DIR/checkpoint/ (each epoch;\n"
      "--resume DIR continues an interrupted run).");
  g_option_context_set_description(oc,
      "Example (a small BERT from scratch on IMDB):\n"
      "  tensorplug train --model bert-base-uncased --init random --layers 2 --hidden 128 \\\n"
      "    --heads 2 --ffn 512 --vocab ../shared/data/bert-base-uncased/vocab.txt \\\n"
      "    --data ../shared/data/imdb --max-len 256 --batch 32 --lr 1e-3 --epochs 2\n");
  g_option_context_add_main_entries(oc, e, NULL);
  g_option_context_add_group(oc, tp_cli_model_group(&c->mo));
  g_option_context_add_group(oc, tp_cli_run_group(&c->ro));
  GOptionEntry de[] = {
      {"distributed", 0, 0, G_OPTION_ARG_NONE, &c->distributed,
       "Data-parallel training: one rank per process started by mpirun -np N (or srun "
       "--mpi=pmix); docs/distributed.md", NULL},
      {"dist-timeout", 0, 0, G_OPTION_ARG_DOUBLE, &c->dist_timeout,
       "End the job when a rank waits this long for the others (a hung or unreachable rank) "
       "[300]; 0 = wait forever", "S"},
      G_OPTION_ENTRY_NULL};
  GOptionGroup *dg = g_option_group_new("distributed", "Distributed options:",
                                        "Show the distributed options", NULL, NULL);
  g_option_group_add_entries(dg, de);
  g_option_context_add_group(oc, dg);
  return oc;
}

static char *default_out(const char *model) {
  GDateTime *now = g_date_time_new_now_local();
  char *stamp = g_date_time_format(now, "%Y%m%d-%H%M%S");
  char *base = g_path_get_basename(model);
  char *name = g_strdup_printf("%s-%s", stamp, base);
  char *out = g_build_filename("runs", name, NULL);
  g_free(stamp);
  g_free(base);
  g_free(name);
  g_date_time_unref(now);
  return out;
}

/* ---- a distributed run's ranks ---- */

static int quiet(GError *err);

typedef struct ranks {
  tp_collective *coll; /* NULL: this process alone */
  int rank;
  char *how;           /* how gradients are summed ("host", "nccl") */
} ranks;

/* Whether every rank's step succeeded (alone: ok). On failure every rank
 * gets the lowest failing rank's error in *err (rank 0 reports it). */
static bool agree(const ranks *r, bool ok, GError **err) {
  if (!r->coll) return ok;
  GError *local = ok ? NULL : g_steal_pointer(err);
  return tp_collective_agree(r->coll, ok, local, err);
}

/* The options of the run to resume, read on rank 0 and sent to the others. */
static bool resume_options(train_cfg *c, const ranks *r, GError **err) {
  char *ck = g_build_filename(c->resume, "checkpoint", NULL);
  JsonNode *x = NULL;
  char *text = NULL;
  if (r->rank == 0) {
    x = tp_checkpoint_read_extra(ck, err);
    if (x) text = json_to_string(x, FALSE);
  }
  bool ok = agree(r, r->rank != 0 || x, err);
  if (ok && r->coll) ok = tp_collective_bcast_string(r->coll, &text, 0, err);
  if (ok && !x) x = json_from_string(text, err);
  ok = ok && x && cfg_from_json(c, x, err);
  if (ok) {
    g_free(c->out);
    c->out = g_strdup(c->resume);
  }
  if (x) json_node_unref(x);
  g_free(text);
  g_free(ck);
  return ok;
}

/* Rank 0 tokenizes (or reads its cache); the others get its sequences. */
static tp_token_seqs *tokenize(const train_cfg *c, const ranks *r, const tp_cli_session *s,
                               const tp_dataset *d, double *tok_s, GError **err) {
  tp_token_seqs *seqs = NULL;
  if (r->rank == 0) {
    gint64 tt = g_get_monotonic_time();
    bool cached = false;
    seqs = tp_cli_tokenize_cached(s->tok, s->vocab_path, d->texts, d->n, c->max_len,
                                  c->ro.threads, &cached, err);
    double sec = (double)(g_get_monotonic_time() - tt) / 1e6;
    if (seqs) {
      *tok_s = (double)seqs->offsets[seqs->n] / fmax(sec, 1e-9);
      printf("Tokenized %u texts (max length %d): %lld tokens in %.1f s%s\n", d->n, c->max_len,
             (long long)seqs->offsets[seqs->n], sec, cached ? " (from the cache)" : "");
      fflush(stdout);
    }
  }
  if (!agree(r, r->rank != 0 || seqs, err)) return NULL;
  if (r->coll && !tp_cli_bcast_seqs(r->coll, &seqs, err)) {
    if (seqs) tp_token_seqs_free(seqs);
    return NULL;
  }
  return seqs;
}

/* The checkpoint, read on rank 0: weights, optimizer and state to all. */
static bool resume_state(const train_cfg *c, const ranks *r, tp_cli_session *s,
                         tp_train_state *st, GError **err) {
  JsonNode *extra = NULL;
  bool ok = true;
  if (r->rank == 0) {
    char *ck = g_build_filename(c->out, "checkpoint", NULL);
    ok = tp_checkpoint_read(ck, s->model, s->ctx, st, &extra, err);
    g_free(ck);
  }
  if (extra) json_node_unref(extra);
  ok = agree(r, ok, err);
  if (ok && r->coll)
    ok = tp_cli_bcast_params(r->coll, s->model, s->ctx, true, err) &&
         tp_cli_bcast_state(r->coll, st, err);
  if (ok && r->rank == 0)
    printf("Resuming after epoch %d of %d (step %lld)\n", st->epochs_done, c->epochs,
           (long long)st->global_step);
  return ok;
}

/* restore-best: the weights of the best validation epoch, read on rank 0. */
static bool restore_best(const train_cfg *c, const ranks *r, tp_cli_session *s,
                         const tp_train_state *st, GError **err) {
  bool ok = true;
  if (r->rank == 0) {
    char *best = g_build_filename(c->out, "model", "model.safetensors", NULL);
    tp_load_report rep = {0};
    ok = tp_model_load_weights(s->model, s->ctx, best, 0, &rep, err);
    tp_load_report_clear(&rep);
    g_free(best);
    if (ok) printf("Restored the weights of epoch %d (best validation loss %.4f)%s\n",
                   st->best_epoch, st->best_val_loss, st->stopped_early ? "; stopped early" : "");
  }
  ok = agree(r, ok, err);
  return ok && (!r->coll || tp_cli_bcast_params(r->coll, s->model, s->ctx, false, err));
}

/* The ranks of --distributed: MPI, one identical model everywhere, and the
 * way gradients are summed on this backend. */
static bool ranks_start(const train_cfg *c, ranks *r, tp_cli_session *s, GError **err) {
  if (!r->coll) return true;
  bool ok = tp_cli_bcast_params(r->coll, s->model, s->ctx, false, err);
  char *why = NULL;
  ok = ok && tp_collective_use_device(r->coll, s->be, &r->how, &why, err);
  if (ok && r->rank == 0) {
    int n = tp_collective_size(r->coll), k = MAX(1, c->grad_accum);
    char parts[64] = "";
    if (k > 1) g_snprintf(parts, sizeof parts, " in %d micro-batches", k);
    printf("Distributed: %d ranks (%s); global batch %d, %s%d per rank%s; gradients summed %s\n",
           n, tp_collective_name(r->coll), c->batch, c->batch % n ? "about " : "",
           (c->batch + n - 1) / n, parts,
           strcmp(r->how, "host") == 0 ? "through host memory, in rank order"
                                       : "in device memory");
    if (why) printf("note: %s\n", why);
  }
  g_free(why);
  return ok;
}

static int run(train_cfg *c, ranks *r) {
  GError *err = NULL;
  gint64 t0 = g_get_monotonic_time();
  bool lead = r->rank == 0;
  tp_train_options to;
  tp_train_state st;
  tp_train_state_init(&st);
  /* the options first (the model is built from them), the weights below */
  if (c->resume && !resume_options(c, r, &err)) return lead ? tp_cli_report(err) : quiet(err);
  if (!cfg_check(c, &to, &err)) return lead ? tp_cli_report(err) : quiet(err);
  to.coll = r->coll;
  if (!c->out) c->out = default_out(c->mo.model);
  if (r->coll && !tp_collective_bcast_string(r->coll, &c->out, 0, &err))
    return lead ? tp_cli_report(err) : quiet(err);
  JsonNode *cfg_json = cfg_to_json(c);

  tp_cli_session s;
  tp_dataset *d = NULL;
  tp_split sp = {0};
  tp_token_seqs *seqs = NULL;
  int rc = TP_EXIT_OK;
  /* data first: a bad path or record fails before a large model is built.
   * Every rank reads the data and builds the model; only rank 0 writes. */
  memset(&s, 0, sizeof s);
  d = tp_dataset_load((const char *const *)c->data, c->skip_bad, &err);
  bool ok = d != NULL;
  if (ok) ok = tp_split_make(d, c->subset, (uint64_t)c->seed, &sp, &err);
  if (ok && r->coll) tp_cli_rank_device(&c->ro);
  if (ok) ok = tp_cli_session_open(&s, &c->mo, &c->ro, (uint64_t)c->seed, true, &err);
  ok = agree(r, ok, &err);
  if (ok && lead) {
    char *desc = tp_cli_session_describe(&s);
    printf("Model %s\n", desc);
    g_free(desc);
    printf("Data: %u records%s; split train %u / val %u / test %u (subset %g, seed %lld)\n", d->n,
           d->n_skipped ? " (malformed ones skipped)" : "", sp.n_train, sp.n_val, sp.n_test,
           c->subset, (long long)c->seed);
    if (d->n_skipped) printf("Skipped %u malformed records (--skip-bad)\n", d->n_skipped);
    ok = g_mkdir_with_parents(c->out, 0755) == 0;
    if (!ok) g_set_error(&err, TP_ERROR, TP_ERROR_IO, "cannot create %s: %s", c->out, g_strerror(errno));
    if (ok) ok = write_split_ids(c->out, d, &sp, &err);
  }
  if (r->coll) ok = agree(r, ok, &err) && ranks_start(c, r, &s, &err);
  double tok_s = 0;
  if (ok) ok = (seqs = tokenize(c, r, &s, d, &tok_s, &err)) != NULL;
  if (ok && c->resume) ok = resume_state(c, r, &s, &st, &err);
  if (ok && lead) printf("Run folder: %s\n", c->out);
  fflush(stdout);
  run_ctx rx = {.out = c->out, .vocab_path = s.vocab_path, .cfg_json = cfg_json,
                .progress = {.tty = isatty(STDOUT_FILENO)}};
  tp_labelled data = {.seqs = seqs, .labels = d ? d->labels : NULL,
                      .pad_id = s.tok ? tp_tokenizer_pad_id(s.tok) : 0};
  tp_train_hooks hooks = {.save_best = save_best, .checkpoint = checkpoint,
                          .progress = on_progress, .user = &rx};
  struct sigaction sa = {0}, old_int, old_term;
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  bool done_already = ok && (st.epochs_done >= c->epochs || st.stopped_early);
  if (ok && !done_already)
    ok = tp_train(s.model, s.ctx, &to, &data, sp.train, sp.n_train, sp.val, sp.n_val, &st, &hooks, &err);
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
  if (!ok && err && err->domain == TP_ERROR &&
      (err->code == TP_ERROR_INTERRUPTED || err->code == TP_ERROR_NON_FINITE))
    g_prefix_error(&err, "%s; the last completed epoch is saved in %s/checkpoint — continue "
                   "with `tensorplug train --resume %s`: ", "training stopped", c->out, c->out);
  tp_eval_result test = {0};
  if (ok) ok = restore_best(c, r, &s, &st, &err);
  if (ok) ok = tp_evaluate_on(r->coll, s.model, s.ctx, &data, sp.test, sp.n_test, c->eval_batch,
                              NULL, NULL, on_progress, &rx, "test", &test, &err);
  if (ok && lead) {
    double elapsed = (double)(g_get_monotonic_time() - t0) / 1e6;
    JsonNode *res = results_json(c, cfg_json, &s, d, &sp, &st, &test, elapsed, tok_s, r->coll,
                                 r->how);
    char *rp = g_build_filename(c->out, "results.json", NULL);
    ok = tp_cli_write_json(rp, res, &err);
    json_node_unref(res);
    print_summary(&st, &test, elapsed);
    if (ok) printf("\nResults: %s\nModel: %s/model\n", rp, c->out);
    g_free(rp);
  }
  if (r->coll) ok = agree(r, ok, &err);
  if (!ok) {
    if (lead) printf("\n");
    fflush(stdout); /* the progress lines come before the error */
    rc = lead ? tp_cli_report(err) : quiet(err);
  }
  json_node_unref(cfg_json);
  tp_train_state_clear(&st);
  if (seqs) tp_token_seqs_free(seqs);
  tp_split_clear(&sp);
  if (d) tp_dataset_free(d);
  tp_cli_session_close(&s);
  return rc;
}

/* A rank other than 0: the same exit status as rank 0, which reports. */
static int quiet(GError *err) {
  int rc = TP_EXIT_FAILED;
  if (err && err->domain == TP_ERROR) {
    if (err->code == TP_ERROR_INVALID_ARGUMENT || err->code == TP_ERROR_UNAVAILABLE)
      rc = TP_EXIT_USAGE;
    else if (err->code == TP_ERROR_INTERRUPTED)
      rc = TP_EXIT_INTERRUPTED;
  }
  g_clear_error(&err);
  return rc;
}

/* --distributed: the supervisor, then MPI; without it, refuse to run as one
 * of several processes (each would train alone and write the same files). */
static int run_ranks(train_cfg *c) {
  int size = 1;
  if (!c->distributed) {
    if (tp_collective_launched(&size)) {
      fprintf(stderr, "tensorplug: error: started by an MPI launcher as rank %s of %d without "
              "--distributed: every process would train alone and write the same files; add "
              "--distributed (docs/distributed.md)\n", tp_cli_launcher_rank(), size);
      return TP_EXIT_USAGE;
    }
    ranks alone = {0};
    return run(c, &alone);
  }
  GError *err = NULL;
  if (!tp_collective_mpi_built()) {
    tp_collective_mpi_new(0, &err);
    return tp_cli_report(err);
  }
  int sup = tp_cli_supervise();
  if (sup >= 0) return sup; /* the supervisor, after its rank ended */
  ranks r = {0};
  r.coll = tp_collective_mpi_new(c->dist_timeout, &err);
  if (!r.coll) return tp_cli_report(err);
  r.rank = tp_collective_rank(r.coll);
  int rc = run(c, &r);
  tp_collective_free(r.coll);
  g_free(r.how);
  return rc;
}

int tp_cmd_train(int argc, char **argv) {
  train_cfg c;
  cfg_defaults(&c);
  GOptionContext *oc = make_options(&c);
  bool parsed = tp_cli_parse(oc, &argc, &argv);
  g_option_context_free(oc);
  int rc = TP_EXIT_USAGE;
  if (parsed && argc > 1) {
    fprintf(stderr, "tensorplug: error: unexpected argument \"%s\"\n", argv[1]);
  } else if (parsed) {
    rc = run_ranks(&c);
  }
  cfg_clear(&c);
  return rc;
}
