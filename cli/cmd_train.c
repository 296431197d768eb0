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
#include "tp_commit.h"
#include "tensorplug/dataset.h"
#include "tensorplug/error.h"
#include "tensorplug/fileio.h"

static volatile sig_atomic_t g_stop; /* set by SIGINT/SIGTERM: stop after this step */

static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

typedef struct train_cfg {
  tp_cli_opts o; /* model, device, data, max_len, eval_batch */
  char *out, *resume, *optimizer, *schedule;
  int batch, epochs, patience;
  double lr, weight_decay, warmup, clip_norm, subset;
  gint64 seed;
  gboolean overwrite;
  int grad_accum; /* 0: not given (1, or the checkpoint's on --resume) */
  gboolean distributed;
  double dist_timeout;
} train_cfg;

static void cfg_defaults(train_cfg *c) {
  memset(c, 0, sizeof *c);
  tp_cli_opts_init(&c->o);
  c->batch = 8;
  c->epochs = 3;
  c->patience = 2;
  c->lr = 1e-5;
  c->weight_decay = 0.01;
  c->subset = 1.0;
  c->seed = 42;
  c->dist_timeout = 300;
}

static void cfg_clear(train_cfg *c) {
  tp_cli_opts_clear(&c->o);
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
  put_str(b, "model", c->o.mo.model);
  put_str(b, "weights", c->o.mo.weights);
  put_str(b, "init", c->o.mo.init ? c->o.mo.init : "pretrained");
  put_str(b, "vocab", c->o.mo.vocab);
  put_int(b, "layers", c->o.mo.layers);
  put_int(b, "hidden", c->o.mo.hidden);
  put_int(b, "heads", c->o.mo.heads);
  put_int(b, "ffn", c->o.mo.ffn);
  put_int(b, "max_positions", c->o.mo.max_positions);
  json_builder_set_member_name(b, "data");
  json_builder_begin_array(b);
  for (char **d = c->o.data; d && *d; d++) json_builder_add_string_value(b, *d);
  json_builder_end_array(b);
  put_int(b, "max_len", c->o.max_len);
  put_int(b, "batch", c->batch);
  put_int(b, "grad_accum", MAX(1, c->grad_accum));
  put_int(b, "eval_batch", c->o.eval_batch);
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
  json_builder_add_boolean_value(b, c->o.skip_bad);
  put_str(b, "backend", c->o.ro.backend ? c->o.ro.backend : "auto");
  put_int(b, "device", c->o.ro.device);
  put_int(b, "threads", c->o.ro.threads);
  put_str(b, "precision", c->o.ro.precision ? c->o.ro.precision : "auto");
  put_str(b, "out", c->out);
  json_builder_end_object(b);
  JsonNode *n = json_builder_get_root(b);
  g_object_unref(b);
  return n;
}

/* Typed reads of the options a checkpoint recorded: an absent member keeps
 * the default, a member of the wrong type is an error naming it (never a
 * json-glib warning and a made-up value). */
typedef struct opts_reader {
  JsonObject *o;
  const char *path;
  GError **err;
  bool ok;
} opts_reader;

static JsonNode *opt_member(opts_reader *r, const char *k, GType want, const char *what) {
  JsonNode *n = r->ok ? json_object_get_member(r->o, k) : NULL;
  if (!n || JSON_NODE_HOLDS_NULL(n)) return NULL;
  GType t = JSON_NODE_HOLDS_VALUE(n) ? json_node_get_value_type(n) : G_TYPE_INVALID;
  if (t == want || (want == G_TYPE_DOUBLE && t == G_TYPE_INT64)) return n;
  g_set_error(r->err, TP_ERROR, TP_ERROR_FORMAT, "%s: \"extra\".\"%s\" must be %s; the "
              "checkpoint is damaged (start the run again with --overwrite)", r->path, k, what);
  r->ok = false;
  return NULL;
}

static char *opt_str(opts_reader *r, const char *k) {
  JsonNode *n = opt_member(r, k, G_TYPE_STRING, "a string");
  return n ? g_strdup(json_node_get_string(n)) : NULL;
}

static void opt_int(opts_reader *r, const char *k, int *out) {
  JsonNode *n = opt_member(r, k, G_TYPE_INT64, "an integer");
  if (!n) return;
  gint64 v = json_node_get_int(n);
  if (v < G_MININT || v > G_MAXINT) {
    g_set_error(r->err, TP_ERROR, TP_ERROR_FORMAT, "%s: \"extra\".\"%s\" = %" G_GINT64_FORMAT
                " is out of range; the checkpoint is damaged (start the run again with --overwrite)", r->path, k, v);
    r->ok = false;
    return;
  }
  *out = (int)v;
}

static void opt_int64(opts_reader *r, const char *k, gint64 *out) {
  JsonNode *n = opt_member(r, k, G_TYPE_INT64, "an integer");
  if (n) *out = json_node_get_int(n);
}

static void opt_num(opts_reader *r, const char *k, double *out) {
  JsonNode *n = opt_member(r, k, G_TYPE_DOUBLE, "a number");
  if (n) *out = json_node_get_double(n);
}

static void opt_bool(opts_reader *r, const char *k, gboolean *out) {
  JsonNode *n = opt_member(r, k, G_TYPE_BOOLEAN, "true or false");
  if (n) *out = json_node_get_boolean(n);
}

/* Restores every option of the interrupted run, --grad-accum included
 * (only --threads and the distributed options may differ: neither changes
 * the results beyond summation order; run() applies a --grad-accum given
 * with --resume once the restored options are checked). */
static bool cfg_from_json(train_cfg *c, JsonNode *node, const char *path, GError **err) {
  if (!node || !JSON_NODE_HOLDS_OBJECT(node)) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s: the checkpoint does not record its run's "
                "options (no \"extra\" object)", path);
    return false;
  }
  opts_reader r = {.o = json_node_get_object(node), .path = path, .err = err, .ok = true};
  int threads = c->o.ro.threads;
  gboolean distributed = c->distributed;
  double timeout = c->dist_timeout;
  char *resume = g_steal_pointer(&c->resume);
  cfg_clear(c);
  cfg_defaults(c);
  c->resume = resume;
  c->distributed = distributed;
  c->dist_timeout = timeout;
  c->o.mo.model = opt_str(&r, "model");
  c->o.mo.weights = opt_str(&r, "weights");
  char *init = opt_str(&r, "init");
  if (init && strcmp(init, "random") == 0) c->o.mo.init = init;
  else g_free(init);
  c->o.mo.vocab = opt_str(&r, "vocab");
  opt_int(&r, "layers", &c->o.mo.layers);
  opt_int(&r, "hidden", &c->o.mo.hidden);
  opt_int(&r, "heads", &c->o.mo.heads);
  opt_int(&r, "ffn", &c->o.mo.ffn);
  opt_int(&r, "max_positions", &c->o.mo.max_positions);
  JsonNode *dn = r.ok ? json_object_get_member(r.o, "data") : NULL;
  JsonArray *d = dn && JSON_NODE_HOLDS_ARRAY(dn) ? json_node_get_array(dn) : NULL;
  guint nd = d ? json_array_get_length(d) : 0;
  c->o.data = g_new0(char *, nd + 1);
  for (guint i = 0; r.ok && i < nd; i++) {
    JsonNode *e = json_array_get_element(d, i);
    if (!JSON_NODE_HOLDS_VALUE(e) || json_node_get_value_type(e) != G_TYPE_STRING) {
      g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s: \"extra\".\"data\"[%u] must be a "
                  "path string; the checkpoint is damaged (start the run again with --overwrite)", path, i);
      r.ok = false;
    } else {
      c->o.data[i] = g_strdup(json_node_get_string(e));
    }
  }
  if (r.ok && dn && !d) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s: \"extra\".\"data\" must be an array of "
                "paths; the checkpoint is damaged (start the run again with --overwrite)", path);
    r.ok = false;
  }
  opt_int(&r, "max_len", &c->o.max_len);
  opt_int(&r, "batch", &c->batch);
  c->grad_accum = 1; /* runs that recorded none split no batch */
  opt_int(&r, "grad_accum", &c->grad_accum);
  opt_int(&r, "eval_batch", &c->o.eval_batch);
  opt_int(&r, "epochs", &c->epochs);
  opt_num(&r, "lr", &c->lr);
  c->optimizer = opt_str(&r, "optimizer");
  opt_num(&r, "weight_decay", &c->weight_decay);
  opt_num(&r, "warmup", &c->warmup);
  c->schedule = opt_str(&r, "schedule");
  opt_num(&r, "clip_norm", &c->clip_norm);
  opt_int(&r, "patience", &c->patience);
  opt_num(&r, "subset", &c->subset);
  opt_int64(&r, "seed", &c->seed);
  opt_bool(&r, "skip_bad", &c->o.skip_bad);
  c->o.ro.backend = opt_str(&r, "backend");
  opt_int(&r, "device", &c->o.ro.device);
  opt_int(&r, "threads", &c->o.ro.threads);
  if (threads) c->o.ro.threads = threads;
  c->o.ro.precision = opt_str(&r, "precision");
  c->out = opt_str(&r, "out");
  return r.ok;
}

/* Checks what the option table cannot (values needed together), then every
 * value against its row (tp_cli_optset_check): also after --resume restored
 * the options from a checkpoint. */
static bool cfg_check(const train_cfg *c, const tp_cli_optset *set, tp_train_options *to,
                      GError **err) {
#define BAD(...) (g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, __VA_ARGS__), false)
  if (!c->o.data || !c->o.data[0]) return BAD("no data: pass --data PATH (a folder or file; "
                                              "scripts/get-imdb.sh downloads IMDB)");
  if (!c->o.mo.model) return BAD("no model: pass --model PRESET or --model DIR");
  if (!tp_cli_optset_check(set, err)) return false;
  if (c->grad_accum > c->batch)
    return BAD("--grad-accum %d: use 1 to --batch (%d) micro-batches per step", c->grad_accum,
               c->batch);
#undef BAD
  const char *opt = c->optimizer ? c->optimizer : "adam";
  const char *sch = c->schedule ? c->schedule : "constant";
  *to = (tp_train_options){.batch = c->batch, .eval_batch = c->o.eval_batch, .epochs = c->epochs,
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
  int raise_signal;     /* test hook: signal to raise ... */
  int64_t raise_step;   /* ... once this many training steps are done (0: never) */
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

static void on_step(int64_t steps_done, void *user) {
  run_ctx *r = user;
  if (r->raise_step > 0 && steps_done == r->raise_step) {
    fflush(stdout);
    raise(r->raise_signal);
  }
}

/* Test hook: TENSORPLUG_TEST_RAISE=SIG@STEP raises signal number SIG right
 * after training step STEP (counted over all epochs, from 1), so that tests
 * interrupt or kill a run at an exact point instead of racing a timer. */
static void read_raise_hook(run_ctx *r) {
  const char *e = g_getenv("TENSORPLUG_TEST_RAISE");
  int sig = 0;
  long long step = 0;
  if (e && sscanf(e, "%d@%lld", &sig, &step) == 2 && sig > 0 && sig < NSIG && step > 0) {
    r->raise_signal = sig;
    r->raise_step = step;
  }
}

/* The files a run writes into its folder (and their temporary siblings). */
static const char *const run_files[] = {"results.json", "model", "model.tmp", "model.old",
                                        "checkpoint", "checkpoint.tmp", "checkpoint.old",
                                        "split", NULL};

static bool remove_tree(const char *path, GError **err) {
  if (g_file_test(path, G_FILE_TEST_IS_DIR) && !g_file_test(path, G_FILE_TEST_IS_SYMLINK)) {
    GDir *d = g_dir_open(path, 0, err);
    if (!d) return false;
    const char *n;
    bool ok = true;
    while (ok && (n = g_dir_read_name(d))) {
      char *p = g_build_filename(path, n, NULL);
      ok = remove_tree(p, err);
      g_free(p);
    }
    g_dir_close(d);
    if (!ok) return false;
  }
  if (g_remove(path) != 0 && errno != ENOENT) {
    int e = errno;
    g_set_error(err, TP_ERROR, TP_ERROR_IO, "cannot remove %s: %s", path, g_strerror(e));
    return false;
  }
  return true;
}

/* A new run never lands beside the files of another one: an --out folder that
 * is not empty is refused unless --overwrite, which first removes what an
 * earlier run wrote (and only that). */
static bool prepare_out(const char *out, bool overwrite, GError **err) {
  GDir *d = g_dir_open(out, 0, NULL);
  if (!d) return true; /* absent: created later */
  bool empty = g_dir_read_name(d) == NULL;
  g_dir_close(d);
  if (empty) return true;
  if (!overwrite) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "--out %s already exists and is not "
                "empty (an earlier run?): pass --overwrite to replace that run, --resume %s to "
                "continue it, or another --out folder", out, out);
    return false;
  }
  for (const char *const *f = run_files; *f; f++) {
    char *p = g_build_filename(out, *f, NULL);
    bool ok = remove_tree(p, err);
    g_free(p);
    if (!ok) return false;
  }
  return tp_dir_sync(out, err);
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
                              const tp_eval_result *test, double elapsed, int resumed_after,
                              double tok_s, tp_collective *coll, const char *how) {
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "config");
  json_builder_add_value(b, json_node_copy(cfg_json));
  put_str(b, "version", TP_VERSION);
  put_str(b, "commit", TP_COMMIT);
  put_distributed(b, coll, how);
  put_str(b, "backend", s->be->name);
  put_str(b, "device", s->be->info.name);
  put_str(b, "device_description", s->be->info.description);
  put_str(b, "precision", tp_dtype_name(tp_ctx_precision(s->ctx)));
  put_int(b, "peak_device_bytes", (gint64)s->be->stats.peak_bytes);
  put_int(b, "peak_rss_bytes", (gint64)tp_cli_peak_rss_bytes());
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
  /* this process's wall time: a resumed run's earlier processes are not in it */
  put_dbl(b, "elapsed_s", elapsed);
  put_int(b, "resumed_after_epoch", resumed_after);
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
    ok = tp_file_write_durable(path, s->str, s->len, err);
    g_free(path);
    g_free(name);
    g_string_free(s, TRUE);
  }
  g_free(dir);
  return ok;
}

/* ---- the command ---- */

#define OFF(f) offsetof(train_cfg, f)
static const tp_cli_opt train_rows[] = {
    {.name = "batch", .kind = TP_OPT_INT, .offset = OFF(batch), .arg = "N",
     .help = "Training batch size (the global batch: all ranks of --distributed together)",
     .min = 1, .max = 1 << 16},
    {.name = "grad-accum", .kind = TP_OPT_INT, .offset = OFF(grad_accum), .arg = "K",
     .help = "Compute each batch in K micro-batches whose gradients add up (same results, a "
             "K-th of the activation memory); at most --batch",
     .min = 1, .max = 1 << 16, .flags = TP_OPT_AUTO, .auto_value = 0, .shown_def = "1"},
    {.name = "epochs", .kind = TP_OPT_INT, .offset = OFF(epochs), .arg = "N", .help = "Epochs",
     .min = 1, .max = 100000},
    {.name = "lr", .kind = TP_OPT_DOUBLE, .offset = OFF(lr), .arg = "LR", .help = "Learning rate",
     .min = 0, .max = 10, .flags = TP_OPT_MIN_OPEN | TP_OPT_MAX_OPEN},
    {.name = "optimizer", .kind = TP_OPT_STRING, .offset = OFF(optimizer), .arg = "NAME",
     .help = "adam (Keras: eps 1e-7) or adamw (PyTorch: eps 1e-8)", .choices = "adam|adamw",
     .shown_def = "adam"},
    {.name = "weight-decay", .kind = TP_OPT_DOUBLE, .offset = OFF(weight_decay), .arg = "W",
     .help = "AdamW weight decay", .min = 0, .max = 1},
    {.name = "warmup", .kind = TP_OPT_DOUBLE, .offset = OFF(warmup), .arg = "W",
     .help = "Linear warmup: a fraction of all steps (< 1) or a step count", .min = 0, .max = 1e9},
    {.name = "schedule", .kind = TP_OPT_STRING, .offset = OFF(schedule), .arg = "S",
     .help = "constant or linear decay", .choices = "constant|linear", .shown_def = "constant"},
    {.name = "clip-norm", .kind = TP_OPT_DOUBLE, .offset = OFF(clip_norm), .arg = "N",
     .help = "Clip the global gradient norm; 0 = off", .min = 0, .max = 1e9},
    {.name = "patience", .kind = TP_OPT_INT, .offset = OFF(patience), .arg = "N",
     .help = "Early stopping: epochs without a better validation loss; 0 = off", .min = 0,
     .max = 100000},
    {.name = "subset", .kind = TP_OPT_DOUBLE, .offset = OFF(subset), .arg = "F",
     .help = "Stratified fraction of the data", .min = 0, .max = 1, .flags = TP_OPT_MIN_OPEN},
    {.name = "seed", .kind = TP_OPT_INT64, .offset = OFF(seed), .arg = "N",
     .help = "Seed of the split, init, shuffles, dropout", .min = (double)G_MININT64,
     .max = (double)G_MAXINT64},
    {.name = "out", .kind = TP_OPT_PATH, .offset = OFF(out), .arg = "DIR", .help = "Run folder",
     .shown_def = "runs/DATE-TIME-MODEL"},
    {.name = "resume", .kind = TP_OPT_PATH, .offset = OFF(resume), .arg = "DIR",
     .help = "Continue the interrupted run in DIR with its own options"},
    {.name = "overwrite", .kind = TP_OPT_FLAG, .offset = OFF(overwrite),
     .help = "Replace the earlier run in --out (its results, model, checkpoint and split are "
             "removed first)"},
};

static const tp_cli_opt dist_rows[] = {
    {.name = "distributed", .kind = TP_OPT_FLAG, .offset = OFF(distributed),
     .help = "Data-parallel training: one rank per process started by mpirun -np N (or srun "
             "--mpi=pmix); docs/distributed.md"},
    {.name = "dist-timeout", .kind = TP_OPT_DOUBLE, .offset = OFF(dist_timeout), .arg = "S",
     .help = "End the job when a rank waits this long for the others (a hung or unreachable "
             "rank); 0 = wait forever",
     .min = 0, .max = 1e9},
};
#undef OFF

static tp_cli_optset *make_options(train_cfg *c) {
  tp_cli_optset *set = tp_cli_optset_new(NULL,
      "Fine-tunes a model on labelled texts: the homework's seeded stratified split (80/20\n"
      "train+val/test, then 12.5% of train+val as validation: 70/10/20), Adam, early stopping\n"
      "on validation loss with restore-best, then test accuracy, F1 and confusion matrix.\n"
      "Writes DIR/results.json, DIR/model/ (best weights, a Hugging Face model folder),\n"
      "DIR/split/{train,val,test}.txt (record ids) and DIR/checkpoint/ (each epoch;\n"
      "--resume DIR continues an interrupted run).",
      "Example (a small BERT from scratch on IMDB):\n"
      "  tensorplug train --model bert-base-uncased --init random --layers 2 --hidden 128 \\\n"
      "    --heads 2 --ffn 512 --vocab ../shared/data/bert-base-uncased/vocab.txt \\\n"
      "    --data ../shared/data/imdb --max-len 256 --batch 32 --lr 1e-3 --epochs 2");
  tp_cli_optset_add_data(set, &c->o);
  tp_cli_optset_add_text(set, &c->o);
  tp_cli_optset_add(set, "Options", train_rows, G_N_ELEMENTS(train_rows), c);
  tp_cli_optset_add_model(set, &c->o);
  tp_cli_optset_add_device(set, &c->o);
  tp_cli_optset_add(set, "Distributed options", dist_rows, G_N_ELEMENTS(dist_rows), c);
  return set;
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

/* Rank 0 (or the process alone) reports the error; every rank exits alike. */
static int fail(const ranks *r, GError *err) {
  return r->rank == 0 ? tp_cli_report(err) : quiet(err);
}

/* Rank 0's part of --resume: the checkpoint's state read strictly (core/
 * train_state.c); *x gets the options it records, *sj the file's name. */
static bool read_resume(const char *ck, const char *resume, JsonNode **x, char **sj,
                        GError **err) {
  tp_train_state probe;
  tp_train_state_init(&probe);
  bool ok = tp_checkpoint_read_state(ck, &probe, x, err);
  tp_train_state_clear(&probe);
  char *dir = tp_existing_dir(ck);
  if (!ok && !dir) {
    g_clear_error(err);
    g_set_error(err, TP_ERROR, TP_ERROR_IO, "no checkpoint in %s: nothing to resume (a run "
                "writes one at the end of each epoch)", resume);
  }
  if (ok) *sj = g_build_filename(dir, "state.json", NULL);
  g_free(dir);
  return ok;
}

/* The options of the run to resume, read on rank 0 and sent to the others;
 * every rank restores and checks them alike. A --grad-accum given with
 * --resume replaces the checkpoint's once those are checked. */
static bool resume_options(train_cfg *c, const tp_cli_optset *set, const ranks *r,
                           tp_train_options *to, GError **err) {
  char *ck = g_build_filename(c->resume, "checkpoint", NULL), *sj = NULL, *text = NULL;
  JsonNode *x = NULL;
  bool ok = r->rank != 0 || read_resume(ck, c->resume, &x, &sj, err);
  ok = agree(r, ok, err);
  if (ok && r->coll) {
    if (r->rank == 0 && x) text = json_to_string(x, FALSE);
    ok = tp_collective_bcast_string(r->coll, &text, 0, err) &&
         tp_collective_bcast_string(r->coll, &sj, 0, err);
    if (ok && r->rank != 0 && text) ok = (x = json_from_string(text, err)) != NULL;
  }
  int accum = c->grad_accum; /* given on the command line; 0: not */
  if (ok) ok = cfg_from_json(c, x, sj, err);
  if (ok) {
    g_free(c->out);
    c->out = g_strdup(c->resume);
    /* options out of range in a checkpoint are a damaged file, not a usage error */
    if (!cfg_check(c, set, to, err)) {
      g_prefix_error(err, "%s records options that are out of range: ", sj);
      (*err)->code = TP_ERROR_FORMAT;
      ok = false;
    }
  }
  if (ok && accum) c->grad_accum = accum; /* the same batches, split differently */
  if (x) json_node_unref(x);
  g_free(text);
  g_free(sj);
  g_free(ck);
  return ok;
}

/* The device this rank opens: under --distributed without --device, its
 * local rank's GPU (tp_cli_rank_device). The run's recorded options keep
 * what was asked, so that a resumed run spreads again. */
static bool open_session(const train_cfg *c, const ranks *r, tp_cli_session *s, GError **err) {
  if (c->o.ro.precision && strcmp(c->o.ro.precision, "i8") == 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "--precision i8 is for inference "
                "(eval, predict, bench --mode infer): train in f32 or bf16, then evaluate the "
                "model with --precision i8");
    return false;
  }
  tp_cli_run_opts ro = c->o.ro;
  ro.backend = g_strdup(ro.backend);
  if (r->coll) tp_cli_rank_device(&ro);
  bool ok = tp_cli_session_open(s, &c->o.mo, &ro, (uint64_t)c->seed, true, err);
  g_free(ro.backend);
  return ok;
}

/* Rank 0 tokenizes (or reads its cache); the others get its sequences. */
static tp_token_seqs *tokenize(const train_cfg *c, const ranks *r, const tp_cli_session *s,
                               const tp_dataset *d, double *tok_s, GError **err) {
  tp_token_seqs *seqs = NULL;
  if (r->rank == 0) {
    gint64 tt = g_get_monotonic_time();
    bool cached = false;
    seqs = tp_cli_tokenize_cached(s->tok, s->vocab_path, d->texts, d->n, c->o.max_len,
                                  c->o.ro.threads, &cached, err);
    double sec = (double)(g_get_monotonic_time() - tt) / 1e6;
    if (seqs) {
      *tok_s = (double)seqs->offsets[seqs->n] / fmax(sec, 1e-9);
      printf("Tokenized %u texts (max length %d): %lld tokens in %.1f s%s\n", d->n, c->o.max_len,
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

/* Steps that cannot fit are refused before the first one runs, on every
 * rank's device. One forward pass of a rank takes its share of the batch in
 * --grad-accum micro-batches: at most this many rows. */
static bool check_memory(const train_cfg *c, const ranks *r, const tp_cli_session *s,
                         const tp_split *sp, const tp_token_seqs *seqs, GError **err) {
  int64_t batch = MIN((guint)c->batch, sp->n_train);
  int64_t n = r->coll ? tp_collective_size(r->coll) : 1, k = MAX(1, c->grad_accum);
  int64_t rows = ((batch + n - 1) / n + k - 1) / k, longest = tp_cli_longest(seqs);
  bool ok = tp_cli_check_step_memory(s, rows, longest, true,
                                     rows == batch ? "--batch"
                                                   : "micro-batch rows (raise --grad-accum or "
                                                     "lower --batch)",
                                     err) &&
            tp_cli_check_step_memory(s, MIN((guint)c->o.eval_batch, MAX(sp->n_val, sp->n_test)),
                                     longest, false, "--eval-batch", err);
  return agree(r, ok, err);
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

static int run(train_cfg *c, const tp_cli_optset *set, ranks *r) {
  GError *err = NULL;
  gint64 t0 = g_get_monotonic_time();
  bool lead = r->rank == 0;
  tp_train_options to;
  /* the options first (the model is built from them), the weights below */
  if (c->resume && !resume_options(c, set, r, &to, &err)) return fail(r, err);
  if (!cfg_check(c, set, &to, &err)) return fail(r, err);
  to.coll = r->coll;
  if (!c->out) c->out = default_out(c->o.mo.model);
  /* rank 0's folder (its clock names the default one); only rank 0 writes */
  if (r->coll && !tp_collective_bcast_string(r->coll, &c->out, 0, &err)) return fail(r, err);
  bool ok = c->resume || !lead || prepare_out(c->out, c->overwrite, &err);
  if (!agree(r, ok, &err)) return fail(r, err);
  JsonNode *cfg_json = NULL; /* once --max-len is resolved against the model */

  tp_train_state st;
  tp_train_state_init(&st);
  tp_cli_session s;
  tp_dataset *d = NULL;
  tp_split sp = {0};
  tp_token_seqs *seqs = NULL;
  int rc = TP_EXIT_OK;
  /* data first: a bad path or record fails before a large model is built.
   * Every rank reads the data and builds the model. */
  memset(&s, 0, sizeof s);
  d = tp_dataset_load((const char *const *)c->o.data, c->o.skip_bad, &err);
  ok = d != NULL;
  int num_labels = 0;
  /* the labels meet the model once, here: each one must be a label of it */
  if (ok) ok = tp_cli_model_num_labels(&c->o.mo, &num_labels, &err) &&
               tp_dataset_check_labels(d, num_labels, c->o.skip_bad, &err);
  if (ok) ok = tp_split_make(d, c->subset, (uint64_t)c->seed, &sp, &err) &&
               tp_split_check_classes(d, &sp, num_labels, &err);
  if (ok) ok = open_session(c, r, &s, &err) && tp_cli_check_max_len(&s, &c->o.max_len, &err);
  ok = agree(r, ok, &err);
  cfg_json = cfg_to_json(c);
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
  if (ok) ok = check_memory(c, r, &s, &sp, seqs, &err);
  if (ok && c->resume) ok = resume_state(c, r, &s, &st, &err);
  if (ok && lead) printf("Run folder: %s\n", c->out);
  fflush(stdout);
  run_ctx rx = {.out = c->out, .vocab_path = s.vocab_path, .cfg_json = cfg_json,
                .progress = {.tty = isatty(STDOUT_FILENO)}};
  read_raise_hook(&rx);
  tp_labelled data = {.seqs = seqs, .labels = d ? d->labels : NULL,
                      .pad_id = s.tok ? tp_tokenizer_pad_id(s.tok) : 0};
  tp_train_hooks hooks = {.save_best = save_best, .checkpoint = checkpoint,
                          .progress = on_progress, .step_done = on_step, .user = &rx};
  struct sigaction sa = {0}, old_int, old_term;
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  bool done_already = ok && (st.epochs_done >= c->epochs || st.stopped_early);
  int resumed_after = st.epochs_done; /* 0 unless --resume */
  if (ok && !done_already)
    ok = tp_train(s.model, s.ctx, &to, &data, sp.train, sp.n_train, sp.val, sp.n_val, &st, &hooks, &err);
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
  if (!ok && err && err->domain == TP_ERROR &&
      (err->code == TP_ERROR_INTERRUPTED || err->code == TP_ERROR_NON_FINITE)) {
    if (st.epochs_done > 0)
      g_prefix_error(&err, "training stopped; epoch %d (the last completed one) is saved in "
                     "%s/checkpoint — continue with `tensorplug train --resume %s`: ",
                     st.epochs_done, c->out, c->out);
    else
      g_prefix_error(&err, "training stopped before its first epoch ended, so nothing was "
                     "saved and there is nothing to resume — run the same command again (with "
                     "--overwrite) to start over: ");
  }
  tp_eval_result test = {0};
  if (ok) ok = restore_best(c, r, &s, &st, &err);
  if (ok) ok = tp_evaluate_on(r->coll, s.model, s.ctx, &data, sp.test, sp.n_test, c->o.eval_batch,
                              NULL, NULL, on_progress, &rx, "test", &test, &err);
  if (ok && lead) {
    double elapsed = (double)(g_get_monotonic_time() - t0) / 1e6;
    JsonNode *res = results_json(c, cfg_json, &s, d, &sp, &st, &test, elapsed, resumed_after,
                                 tok_s, r->coll, r->how);
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
    rc = fail(r, err);
  }
  if (cfg_json) json_node_unref(cfg_json);
  tp_train_state_clear(&st);
  if (seqs) tp_token_seqs_free(seqs);
  tp_split_clear(&sp);
  if (d) tp_dataset_free(d);
  tp_cli_session_close(&s);
  return rc;
}

/* --distributed: the supervisor, then MPI; without it, refuse to run as one
 * of several processes (each would train alone and write the same files). */
static int run_ranks(train_cfg *c, const tp_cli_optset *set) {
  int size = 1;
  if (!c->distributed) {
    if (tp_collective_launched(&size)) {
      fprintf(stderr, "tensorplug: error: started by an MPI launcher as rank %s of %d without "
              "--distributed: every process would train alone and write the same files; add "
              "--distributed (docs/distributed.md)\n", tp_cli_launcher_rank(), size);
      return TP_EXIT_USAGE;
    }
    ranks alone = {0};
    return run(c, set, &alone);
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
  int rc = run(c, set, &r);
  tp_collective_free(r.coll);
  g_free(r.how);
  return rc;
}

int tp_cmd_train(int argc, char **argv) {
  train_cfg c;
  cfg_defaults(&c);
  tp_cli_optset *set = make_options(&c);
  int rc = tp_cli_optset_parse(set, &argc, &argv);
  if (rc < 0 && argc > 1) {
    fprintf(stderr, "tensorplug: error: unexpected argument \"%s\"\n", argv[1]);
    rc = TP_EXIT_USAGE;
  } else if (rc < 0) {
    rc = run_ranks(&c, set);
  }
  tp_cli_optset_free(set);
  cfg_clear(&c);
  return rc;
}

bool tp_cmd_train_check_args(int argc, char **argv, GError **err) {
  train_cfg c;
  cfg_defaults(&c);
  tp_cli_optset *set = make_options(&c);
  bool help = false;
  tp_train_options to;
  bool ok = tp_cli_optset_parse_quiet(set, &argc, &argv, &help, err);
  if (ok && argc > 1) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "unexpected argument \"%s\"", argv[1]);
    ok = false;
  }
  if (ok && !c.resume) ok = cfg_check(&c, set, &to, err);
  tp_cli_optset_free(set);
  cfg_clear(&c);
  return ok;
}

char *tp_cmd_train_default_text(const char *name) {
  train_cfg c;
  cfg_defaults(&c);
  const tp_cli_opt *r = NULL;
  for (size_t i = 0; i < G_N_ELEMENTS(train_rows) && !r; i++)
    if (strcmp(train_rows[i].name, name) == 0) r = &train_rows[i];
  char *v = NULL;
  if (r && r->kind == TP_OPT_INT) v = g_strdup_printf("%d", *(int *)((char *)&c + r->offset));
  else if (r && r->kind == TP_OPT_DOUBLE) v = g_strdup_printf("%g", *(double *)((char *)&c + r->offset));
  cfg_clear(&c);
  return v;
}

const tp_cli_opt *tp_cmd_train_find_option(const char *name) {
  train_cfg c;
  cfg_defaults(&c);
  tp_cli_optset *set = make_options(&c);
  const tp_cli_opt *r = tp_cli_optset_find(set, name); /* rows are static */
  tp_cli_optset_free(set);
  cfg_clear(&c);
  return r;
}
