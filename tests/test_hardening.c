/* tests/test_hardening.c — regressions of the hardening issue that need the
 * whole command: durable writes (checked with strace), run folders that are
 * never mixed, honest messages on interrupts, labels checked against the
 * model, exit statuses by error class. Tiny fixtures (tests/data). */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "tensorplug/backend.h"
#include "tensorplug/error.h"
#include "tensorplug/model.h"
#include "tensorplug/train.h"
#include "tp_cli.h"
#include "tp_test.h"

/* A 1-layer BERT from tests/data/tiny-bert trained for `epochs` on the 48
 * reviews of tests/data/tiny.jsonl (split 33/5/10): about a second. */
#define TINY_TRAIN(model_dir, data, out_dir, epochs)                                           \
  "train", "--model", model_dir, "--init", "random", "--data", data, "--max-len", "32",      \
      "--batch", "8", "--epochs", epochs, "--patience", "0", "--lr", "1e-2", "--seed", "3",  \
      "--threads", "1", "--out", out_dir

typedef struct fixture {
  char *model, *data, *tmp;
} fixture;

static void fixture_init(fixture *f) {
  f->model = tp_cli_data("tiny-bert");
  f->data = tp_cli_data("tiny.jsonl");
  char *t = tp_test_tmpdir();
  /* strace and the kernel report resolved paths */
  char *real = realpath(t, NULL);
  f->tmp = g_strdup(real ? real : t);
  free(real);
}

static void fixture_clear(fixture *f) {
  g_free(f->model);
  g_free(f->data);
  g_free(f->tmp);
}

/* ---- item 16: every file of a run is written to a temporary file, fsynced,
 * renamed, and its folder fsynced ---- */

typedef struct sys_event {
  bool is_rename;
  char *a, *b; /* fsync: a = path of the fd; rename: a -> b */
} sys_event;

static void sys_event_free(gpointer p) {
  sys_event *e = p;
  g_free(e->a);
  g_free(e->b);
  g_free(e);
}

static GPtrArray *parse_strace(const char *log) {
  GPtrArray *ev = g_ptr_array_new_with_free_func(sys_event_free);
  GRegex *fs = g_regex_new("\\b(?:fsync|fdatasync)\\(\\d+<([^>]*)>\\)\\s*=\\s*0", 0, 0, NULL);
  GRegex *rn = g_regex_new("\\brename(?:at2?)?\\((?:[A-Z_0-9]+, )?\"([^\"]*)\", (?:[A-Z_0-9]+, )?"
                           "\"([^\"]*)\"(?:, [^)]*)?\\)\\s*=\\s*0", 0, 0, NULL);
  char **lines = g_strsplit(log, "\n", -1);
  for (char **l = lines; *l; l++) {
    GMatchInfo *m = NULL;
    if (g_regex_match(fs, *l, 0, &m)) {
      sys_event *e = g_new0(sys_event, 1);
      e->a = g_match_info_fetch(m, 1);
      g_ptr_array_add(ev, e);
    } else {
      g_match_info_free(m);
      m = NULL;
      if (g_regex_match(rn, *l, 0, &m)) {
        sys_event *e = g_new0(sys_event, 1);
        e->is_rename = true;
        e->a = g_match_info_fetch(m, 1);
        e->b = g_match_info_fetch(m, 2);
        g_ptr_array_add(ev, e);
      }
    }
    g_match_info_free(m);
  }
  g_strfreev(lines);
  g_regex_unref(fs);
  g_regex_unref(rn);
  return ev;
}

static int find_rename_to(GPtrArray *ev, const char *to) {
  for (guint i = 0; i < ev->len; i++) {
    const sys_event *e = g_ptr_array_index(ev, i);
    if (e->is_rename && strcmp(e->b, to) == 0) return (int)i;
  }
  return -1;
}

static bool fsync_between(GPtrArray *ev, const char *path, int from, int to) {
  for (int i = MAX(from, 0); i < to && i < (int)ev->len; i++) {
    const sys_event *e = g_ptr_array_index(ev, (guint)i);
    if (!e->is_rename && strcmp(e->a, path) == 0) return true;
  }
  return false;
}

/* The file `rel` of run folder `run` (written into a `.tmp` copy of its
 * folder first when in_tmp_dir) went through write-fsync-rename-fsync(dir). */
static void check_durable(GPtrArray *ev, const char *run, const char *rel, bool in_tmp_dir) {
  char *dir_rel = g_path_get_dirname(rel), *base = g_path_get_basename(rel);
  char *dir = strcmp(dir_rel, ".") == 0 ? g_strdup(run)
              : g_strdup_printf("%s/%s%s", run, dir_rel, in_tmp_dir ? ".tmp" : "");
  char *to = g_build_filename(dir, base, NULL);
  int i = find_rename_to(ev, to);
  if (i < 0) {
    TP_FAILF("%s: never renamed into place (no rename to %s)", rel, to);
  } else {
    const sys_event *r = g_ptr_array_index(ev, (guint)i);
    if (!fsync_between(ev, r->a, 0, i)) TP_FAILF("%s: %s not fsynced before its rename", rel, r->a);
    if (!fsync_between(ev, dir, i + 1, (int)ev->len))
      TP_FAILF("%s: folder %s not fsynced after the rename", rel, dir);
  }
  char *final = g_build_filename(run, rel, NULL);
  if (!g_file_test(final, G_FILE_TEST_IS_REGULAR)) TP_FAILF("%s is missing", final);
  g_free(final);
  g_free(to);
  g_free(dir);
  g_free(dir_rel);
  g_free(base);
}

TP_TEST(Durability, EveryFileOfARunIsSyncedRenamedAndItsFolderSynced) {
  char *strace = g_find_program_in_path("strace");
  if (!strace) {
    TP_FAILF("strace is not installed (apt-get install strace; .ci/run installs it)");
    return;
  }
  fixture f;
  fixture_init(&f);
  char *run = g_build_filename(f.tmp, "run", NULL), *log = g_build_filename(f.tmp, "strace.log", NULL);
  char *exe = tp_cli_exe();
  const char *argv[] = {strace, "-f", "-y", "-qq", "-o", log, "-e",
                        "trace=fsync,fdatasync,rename,renameat,renameat2", exe,
                        TINY_TRAIN(f.model, f.data, run, "1"), NULL};
  char *out = NULL, *errs = NULL;
  int status = -1;
  GError *err = NULL;
  TP_ASSERT(g_spawn_sync(NULL, (char **)argv, NULL, 0, NULL, NULL, &out, &errs, &status, &err));
  if (!g_spawn_check_wait_status(status, NULL)) TP_FAILF("traced run failed:\n%s%s", out, errs);
  char *text = NULL;
  TP_ASSERT(g_file_get_contents(log, &text, NULL, NULL));
  GPtrArray *ev = parse_strace(text);
  TP_CHECK(ev->len > 10);
  static const char *const in_tmp[] = {"checkpoint/state.json", "checkpoint/state.safetensors",
                                       "model/config.json", "model/model.safetensors",
                                       "model/vocab.txt"};
  for (size_t i = 0; i < G_N_ELEMENTS(in_tmp); i++) check_durable(ev, run, in_tmp[i], true);
  static const char *const direct[] = {"results.json", "split/train.txt", "split/val.txt",
                                       "split/test.txt"};
  for (size_t i = 0; i < G_N_ELEMENTS(direct); i++) check_durable(ev, run, direct[i], false);
  /* the folders written as NAME.tmp are swapped in, and the run folder synced after */
  static const char *const dirs[] = {"checkpoint", "model"};
  for (size_t i = 0; i < G_N_ELEMENTS(dirs); i++) {
    char *to = g_build_filename(run, dirs[i], NULL);
    int k = find_rename_to(ev, to);
    if (k < 0) TP_FAILF("%s.tmp never renamed to %s", dirs[i], to);
    else if (!fsync_between(ev, run, k + 1, (int)ev->len))
      TP_FAILF("%s not fsynced after renaming %s into place", run, dirs[i]);
    g_free(to);
  }
  g_ptr_array_unref(ev);
  g_free(text);
  g_free(out);
  g_free(errs);
  g_free(exe);
  g_free(run);
  g_free(log);
  g_free(strace);
  fixture_clear(&f);
}

/* ---- runs, interrupts, resume ---- */

static char *read_text(const char *dir, const char *rel) {
  char *p = g_build_filename(dir, rel, NULL), *t = NULL;
  if (!g_file_get_contents(p, &t, NULL, NULL)) t = NULL;
  g_free(p);
  return t;
}

/* results.json's metrics without timings, to compare two runs. */
static char *metrics_of(const char *run) {
  char *text = read_text(run, "results.json");
  if (!text) return g_strdup("(no results.json)");
  JsonParser *p = json_parser_new();
  GString *s = g_string_new(NULL);
  if (json_parser_load_from_data(p, text, -1, NULL)) {
    JsonObject *o = json_node_get_object(json_parser_get_root(p));
    JsonArray *h = json_object_get_array_member(o, "history");
    for (guint i = 0; i < json_array_get_length(h); i++) {
      JsonObject *e = json_array_get_object_element(h, i);
      g_string_append_printf(s, "epoch %lld loss %.17g val_loss %.17g; ",
                             (long long)json_object_get_int_member(e, "epoch"),
                             json_object_get_double_member(e, "loss"),
                             json_object_get_double_member(e, "val_loss"));
    }
    JsonObject *t = json_object_get_object_member(o, "test");
    g_string_append_printf(s, "test acc %.17g loss %.17g",
                           json_object_get_double_member(t, "accuracy"),
                           json_object_get_double_member(t, "loss"));
  }
  g_object_unref(p);
  g_free(text);
  return g_string_free(s, FALSE);
}

static int history_len(const char *run, const char *rel) {
  char *text = read_text(run, rel);
  int n = -1;
  JsonParser *p = json_parser_new();
  if (text && json_parser_load_from_data(p, text, -1, NULL))
    n = (int)json_array_get_length(
        json_object_get_array_member(json_node_get_object(json_parser_get_root(p)), "history"));
  g_object_unref(p);
  g_free(text);
  return n;
}

/* item 9 */
TP_TEST(Run, AnExistingRunFolderIsRefusedUnlessOverwrite) {
  fixture f;
  fixture_init(&f);
  char *run = g_build_filename(f.tmp, "run", NULL), *out = NULL;
  int rc = tp_cli_run(&out, TINY_TRAIN(f.model, f.data, run, "2"), NULL);
  if (rc != 0) TP_FAILF("first run exited %d:\n%s", rc, out);
  g_free(out);
  char *before = read_text(run, "results.json");
  rc = tp_cli_run(&out, TINY_TRAIN(f.model, f.data, run, "1"), NULL);
  TP_CHECK_CLI_FAILS(rc, out, 2, "--overwrite");
  g_free(out);
  char *after = read_text(run, "results.json");
  TP_CHECK_STR_EQ(after, before); /* the earlier run is untouched */
  /* --overwrite: the new run alone, nothing of the old one beside it */
  char *stale = g_build_filename(run, "checkpoint.old", NULL);
  TP_ASSERT(g_mkdir(stale, 0755) == 0);
  rc = tp_cli_run(&out, TINY_TRAIN(f.model, f.data, run, "1"), "--overwrite", NULL);
  if (rc != 0) TP_FAILF("--overwrite run exited %d:\n%s", rc, out);
  g_free(out);
  TP_CHECK_INT_EQ(history_len(run, "results.json"), 1);
  TP_CHECK_INT_EQ(history_len(run, "checkpoint/state.json"), 1);
  TP_CHECK(!g_file_test(stale, G_FILE_TEST_EXISTS));
  g_free(stale);
  g_free(before);
  g_free(after);
  g_free(run);
  fixture_clear(&f);
}

/* item 8: an interrupt before the first epoch ended must not claim a checkpoint */
TP_TEST(Interrupt, SigintInTheFirstEpochSaysNothingWasSaved) {
  fixture f;
  fixture_init(&f);
  char *run = g_build_filename(f.tmp, "run", NULL), *out = NULL;
  const char *env[] = {"TENSORPLUG_TEST_RAISE=2@2", NULL}; /* SIGINT after step 2 of 5 */
  int rc = tp_cli_run_env(&out, env, TINY_TRAIN(f.model, f.data, run, "2"), NULL);
  TP_CHECK_CLI_FAILS(rc, out, 130, "nothing was saved");
  TP_CHECK(strstr(out, "interrupted in epoch 1 at step 2/5") != NULL);
  TP_CHECK(strstr(out, "is saved in") == NULL);
  char *ck = g_build_filename(run, "checkpoint", NULL);
  TP_CHECK(!g_file_test(ck, G_FILE_TEST_EXISTS));
  g_free(ck);
  g_free(out);
  g_free(run);
  fixture_clear(&f);
}

/* item 26: SIGTERM in epoch 2 keeps epoch 1, and --resume finishes with the
 * results of an uninterrupted run; --resume of a finished run changes nothing */
TP_TEST(Interrupt, SigtermInTheSecondEpochResumesToTheSameResults) {
  fixture f;
  fixture_init(&f);
  char *full = g_build_filename(f.tmp, "full", NULL), *cut = g_build_filename(f.tmp, "cut", NULL);
  char *out = NULL;
  int rc = tp_cli_run(&out, TINY_TRAIN(f.model, f.data, full, "3"), NULL);
  if (rc != 0) TP_FAILF("uninterrupted run exited %d:\n%s", rc, out);
  g_free(out);
  const char *env[] = {"TENSORPLUG_TEST_RAISE=15@7", NULL}; /* step 2 of epoch 2 */
  rc = tp_cli_run_env(&out, env, TINY_TRAIN(f.model, f.data, cut, "3"), NULL);
  TP_CHECK_CLI_FAILS(rc, out, 130, "epoch 1 (the last completed one) is saved");
  TP_CHECK(strstr(out, "--resume") != NULL);
  g_free(out);
  TP_CHECK_INT_EQ(history_len(cut, "checkpoint/state.json"), 1);
  rc = tp_cli_run(&out, "train", "--resume", cut, NULL);
  if (rc != 0) TP_FAILF("resumed run exited %d:\n%s", rc, out);
  TP_CHECK(strstr(out, "Resuming after epoch 1 of 3") != NULL);
  g_free(out);
  char *mf = metrics_of(full), *mc = metrics_of(cut);
  TP_CHECK_STR_EQ(mc, mf);
  /* resuming the finished run: nothing to train, the same test results */
  rc = tp_cli_run(&out, "train", "--resume", cut, NULL);
  if (rc != 0) TP_FAILF("resume of a finished run exited %d:\n%s", rc, out);
  TP_CHECK(strstr(out, "Epoch ") == NULL);
  g_free(out);
  char *again = metrics_of(cut);
  TP_CHECK_STR_EQ(again, mf);
  g_free(again);
  g_free(mf);
  g_free(mc);
  g_free(full);
  g_free(cut);
  fixture_clear(&f);
}

/* config.grad_accum of a run's results.json (-1 when absent). */
static gint64 recorded_grad_accum(const char *run) {
  char *text = read_text(run, "results.json");
  gint64 k = -1;
  JsonParser *p = json_parser_new();
  if (text && json_parser_load_from_data(p, text, -1, NULL)) {
    JsonObject *cfg = json_object_get_object_member(
        json_node_get_object(json_parser_get_root(p)), "config");
    if (cfg) k = json_object_get_int_member_with_default(cfg, "grad_accum", -1);
  }
  g_object_unref(p);
  g_free(text);
  return k;
}

/* --grad-accum is one of the run's options: an interrupted run resumed
 * without it goes on in the same micro-batches, to the same bits. */
TP_TEST(Interrupt, ResumeKeepsTheRecordedGradAccum) {
  fixture f;
  fixture_init(&f);
  char *full = g_build_filename(f.tmp, "full", NULL), *cut = g_build_filename(f.tmp, "cut", NULL);
  char *out = NULL;
  int rc = tp_cli_run(&out, TINY_TRAIN(f.model, f.data, full, "2"), "--grad-accum", "3", NULL);
  if (rc != 0) TP_FAILF("uninterrupted run exited %d:\n%s", rc, out);
  g_free(out);
  const char *env[] = {"TENSORPLUG_TEST_RAISE=15@7", NULL}; /* step 2 of epoch 2 */
  rc = tp_cli_run_env(&out, env, TINY_TRAIN(f.model, f.data, cut, "2"), "--grad-accum", "3",
                      NULL);
  TP_CHECK_CLI_FAILS(rc, out, 130, "epoch 1 (the last completed one) is saved");
  g_free(out);
  rc = tp_cli_run(&out, "train", "--resume", cut, NULL);
  if (rc != 0) TP_FAILF("resumed run exited %d:\n%s", rc, out);
  TP_CHECK(strstr(out, "Resuming after epoch 1 of 2") != NULL);
  g_free(out);
  TP_CHECK_INT_EQ(recorded_grad_accum(full), 3);
  TP_CHECK_INT_EQ(recorded_grad_accum(cut), 3);
  char *mf = metrics_of(full), *mc = metrics_of(cut);
  TP_CHECK_STR_EQ(mc, mf);
  g_free(mf);
  g_free(mc);
  g_free(full);
  g_free(cut);
  fixture_clear(&f);
}

/* item 10: a damaged checkpoint/state.json gives one clear error naming the
 * file and the field: never "nothing to resume", a json-glib warning, or a
 * resume from nonsense */
TP_TEST(Checkpoint, ADamagedStateJsonIsOneClearErrorNamingFileAndField) {
  fixture f;
  fixture_init(&f);
  char *run = g_build_filename(f.tmp, "run", NULL), *out = NULL;
  int rc = tp_cli_run(&out, TINY_TRAIN(f.model, f.data, run, "2"), NULL);
  if (rc != 0) TP_FAILF("run exited %d:\n%s", rc, out);
  g_free(out);
  char *sj = g_build_filename(run, "checkpoint", "state.json", NULL), *good = NULL;
  TP_ASSERT(g_file_get_contents(sj, &good, NULL, NULL));
  static const struct { const char *text, *part; } cases[] = {
      {"", "is empty"},
      {"garbage", "is not valid JSON"},
      {"[1, 2]", "expected a JSON object, found an array"},
      {"{}", "\"epochs_done\" must be an integer, found no such member"},
      {"{\"epochs_done\": \"2\"}", "\"epochs_done\" must be an integer, found a string"},
      {"{\"epochs_done\": -1}", "\"epochs_done\" = -1 is out of range"},
      {"{\"epochs_done\": 1, \"global_step\": -5}", "\"global_step\" = -5 is out of range"},
      {"{\"epochs_done\": 1, \"global_step\": 5, \"best_val_loss\": 0.5, \"best_epoch\": 3}",
       "\"best_epoch\" = 3 is out of range"},
      {"{\"epochs_done\": 1, \"global_step\": 5, \"best_val_loss\": 0.5, \"best_epoch\": 1, "
       "\"bad_epochs\": 0, \"stopped_early\": false, \"history\": []}",
       "\"history\" has 0 entries but epochs_done is 1"},
      {"{\"epochs_done\": 1, \"global_step\": 5, \"best_val_loss\": 0.5, \"best_epoch\": 1, "
       "\"bad_epochs\": 0, \"stopped_early\": false, \"history\": [{\"epoch\": 1, \"loss\": "
       "\"x\"}]}", "\"history[0].loss\" must be a number or null, found a string"},
      {"{\"epochs_done\": 1, \"global_step\": 5, \"best_val_loss\": 0.5, \"best_epoch\": 1, "
       "\"bad_epochs\": 0, \"stopped_early\": 1, \"history\": []}",
       "\"stopped_early\" must be true or false"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    TP_ASSERT(g_file_set_contents(sj, cases[i].text, -1, NULL));
    rc = tp_cli_run(&out, "train", "--resume", run, NULL);
    if (rc != 1 || !strstr(out, cases[i].part) || !strstr(out, sj) ||
        strstr(out, "nothing to resume") || strstr(out, "CRITICAL") || strstr(out, "WARNING"))
      TP_FAILF("state.json \"%s\": expected exit 1 naming %s and \"%s\"; got exit %d:\n%s",
               cases[i].text, sj, cases[i].part, rc, out);
    g_free(out);
  }
  /* the options the run recorded are checked the same way */
  GRegex *re = g_regex_new("\"batch\" : \\d+", 0, 0, NULL);
  char *bad = g_regex_replace_literal(re, good, -1, 0, "\"batch\" : \"eight\"", 0, NULL);
  g_regex_unref(re);
  TP_CHECK(strstr(bad, "\"eight\"") != NULL);
  TP_ASSERT(g_file_set_contents(sj, bad, -1, NULL));
  rc = tp_cli_run(&out, "train", "--resume", run, NULL);
  TP_CHECK_CLI_FAILS(rc, out, 1, "\"extra\".\"batch\" must be an integer");
  g_free(out);
  /* the intact file still resumes (the run was complete: nothing to train) */
  TP_ASSERT(g_file_set_contents(sj, good, -1, NULL));
  rc = tp_cli_run(&out, "train", "--resume", run, NULL);
  if (rc != 0) TP_FAILF("resume of the intact checkpoint exited %d:\n%s", rc, out);
  g_free(out);
  g_free(bad);
  g_free(good);
  g_free(sj);
  g_free(run);
  fixture_clear(&f);
}

/* ---- item 1: labels are checked against the model when the data meets it ---- */

/* tests/data/tiny.jsonl with every label 1 written as `label` (a string), in
 * a fresh file; returns its path. */
static char *relabelled(const fixture *f, const char *label) {
  char *text = NULL;
  if (!g_file_get_contents(f->data, &text, NULL, NULL)) TP_FAILF("cannot read %s", f->data);
  char *want = g_strdup_printf("\"label\": %s}", label);
  GRegex *re = g_regex_new("\"label\": 1}", 0, 0, NULL);
  char *out = g_regex_replace_literal(re, text, -1, 0, want, 0, NULL);
  char *path = g_strdup_printf("%s/labels-%s.jsonl", f->tmp, label);
  if (!g_file_set_contents(path, out, -1, NULL)) TP_FAILF("cannot write %s", path);
  g_regex_unref(re);
  g_free(want);
  g_free(out);
  g_free(text);
  return path;
}

TP_TEST(Labels, OutsideTheModelsLabelsAreAnErrorNamingFileAndLine) {
  fixture f;
  fixture_init(&f);
  static const char *const labels[] = {"2", "7", "999"};
  for (size_t i = 0; i < G_N_ELEMENTS(labels); i++) {
    char *data = relabelled(&f, labels[i]), *out = NULL;
    char *want = g_strdup_printf("%s:2: label %s is not one of the model's 2 labels", data,
                                 labels[i]);
    /* --eval-batch 1 read past the logits buffer; the default batch gave a wrong accuracy */
    int rc = tp_cli_run(&out, "eval", "--model", f.model, "--data", data, "--eval-batch", "1",
                        NULL);
    TP_CHECK_CLI_FAILS(rc, out, 1, want);
    g_free(out);
    rc = tp_cli_run(&out, "eval", "--model", f.model, "--data", data, NULL);
    TP_CHECK_CLI_FAILS(rc, out, 1, want);
    g_free(out);
    char *run = g_build_filename(f.tmp, "run", NULL);
    rc = tp_cli_run(&out, TINY_TRAIN(f.model, data, run, "1"), NULL);
    TP_CHECK_CLI_FAILS(rc, out, 1, want);
    g_free(out);
    g_free(run);
    g_free(want);
    g_free(data);
  }
  fixture_clear(&f);
}

TP_TEST(Labels, SkipBadSkipsRecordsWhoseLabelTheModelLacks) {
  fixture f;
  fixture_init(&f);
  char *data = relabelled(&f, "2"), *out = NULL;
  /* 24 of the 48 records have label 2: 24 are left, all label 0 */
  int rc = tp_cli_run(&out, "eval", "--model", f.model, "--data", data, "--skip-bad", "--json",
                      NULL);
  TP_CHECK_INT_EQ(rc, 0);
  TP_CHECK(strstr(out, "\"n\": 24") != NULL);
  g_free(out);
  g_free(data);
  fixture_clear(&f);
}

TP_TEST(Labels, TheLibraryRefusesALabelTheModelLacks) {
  /* the evaluation itself, whatever the caller checked before */
  fixture f;
  fixture_init(&f);
  GError *err = NULL;
  tp_backend *be = tp_backend_open(NULL, "cpu", -1, 1, &err);
  TP_ASSERT_NO_ERROR(err);
  tp_ctx *ctx = tp_ctx_new(be, &err);
  tp_model_source src = {.model = f.model};
  const tp_model_iface *iface = NULL;
  tp_model_config cfg;
  char *wp = NULL, *md = NULL;
  TP_ASSERT(tp_model_resolve(NULL, &src, &iface, &cfg, &wp, &md, &err));
  tp_model *m = tp_model_new(iface, &cfg, ctx, 1, &err);
  TP_ASSERT_NO_ERROR(err);
  int64_t offsets[3] = {0, 3, 6};
  int32_t ids[6] = {2, 20, 3, 2, 32, 3};
  tp_token_seqs seqs = {.n = 2, .offsets = offsets, .ids = ids};
  int labels[2] = {0, 2};
  guint idx[2] = {0, 1};
  tp_labelled data = {.seqs = &seqs, .labels = labels, .pad_id = 0};
  tp_eval_result r;
  for (int batch = 1; batch <= 2; batch++) {
    TP_CHECK(!tp_evaluate(m, ctx, &data, idx, 2, batch, NULL, NULL, NULL, NULL, "test", &r, &err));
    TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "example 1 has label 2, but the model has 2 labels");
  }
  tp_model_free(m);
  tp_ctx_free(ctx);
  tp_backend_close(be);
  g_free(wp);
  g_free(md);
  fixture_clear(&f);
}

/* ---- item 14: a class absent from the data, or from a part of the split ---- */

TP_TEST(Classes, AnAbsentClassIsRefusedWithTheCounts) {
  fixture f;
  fixture_init(&f);
  char *data = relabelled(&f, "0"), *run = g_build_filename(f.tmp, "run", NULL), *out = NULL;
  int rc = tp_cli_run(&out, TINY_TRAIN(f.model, data, run, "1"), NULL);
  TP_CHECK_CLI_FAILS(rc, out, 1, "does not hold every label of the model");
  TP_CHECK(strstr(out, "train: label 0: 33, label 1: 0") != NULL);
  char *res = g_build_filename(run, "results.json", NULL);
  TP_CHECK(!g_file_test(res, G_FILE_TEST_EXISTS));
  g_free(res);
  g_free(out);
  /* two records of label 1 among 40: one lands in test, the other in train,
   * and validation has none */
  char *text = NULL;
  TP_ASSERT(g_file_get_contents(data, &text, NULL, NULL));
  GString *two = g_string_new(NULL);
  char **lines = g_strsplit(text, "\n", -1);
  for (int i = 0; i < 38 && lines[i]; i++) g_string_append_printf(two, "%s\n", lines[i]);
  g_string_append(two, "{\"text\": \"good film\", \"label\": 1}\n{\"text\": \"great\", \"label\": 1}\n");
  char *rare = g_build_filename(f.tmp, "rare.jsonl", NULL);
  TP_ASSERT(g_file_set_contents(rare, two->str, -1, NULL));
  rc = tp_cli_run(&out, TINY_TRAIN(f.model, rare, run, "1"), NULL);
  TP_CHECK_CLI_FAILS(rc, out, 1, "validation: label 0: 4, label 1: 0");
  g_free(out);
  g_strfreev(lines);
  g_string_free(two, TRUE);
  g_free(rare);
  g_free(text);
  g_free(data);
  g_free(run);
  fixture_clear(&f);
}

/* ---- item 12: one exit status per error class (README: "Exit status") ---- */

TP_TEST(ExitStatus, EachErrorClassHasItsDocumentedStatus) {
  fixture f;
  fixture_init(&f);
  char *run = g_build_filename(f.tmp, "run", NULL), *out = NULL;
  char *vocab = g_build_filename(f.model, "vocab.txt", NULL);
  char *bad_jsonl = g_build_filename(f.tmp, "bad.jsonl", NULL);
  TP_ASSERT(g_file_set_contents(bad_jsonl, "{\"text\": \"x\", \"label\": 0}\n{\"text\": 5}\n", -1,
                                NULL));
  char *bad_model = g_build_filename(f.tmp, "badmodel", NULL);
  TP_ASSERT(g_mkdir(bad_model, 0755) == 0);
  char *cfg = g_build_filename(bad_model, "config.json", NULL);
  TP_ASSERT(g_file_set_contents(cfg, "{\"model_type\": \"bert\", \"vocab_size\": ", -1, NULL));
  char *existing = g_build_filename(f.tmp, "existing", NULL);
  TP_ASSERT(g_mkdir(existing, 0755) == 0);
  char *junk = g_build_filename(existing, "results.json", NULL);
  TP_ASSERT(g_file_set_contents(junk, "{}", -1, NULL));
  struct {
    int status;
    const char *what, *part;
    const char *argv[24];
  } cases[] = {
      /* 2: the request cannot be served as asked */
      {2, "unknown option", "--no-such-flag", {"train", "--no-such-flag", NULL}},
      {2, "value out of range", "--batch 0", {"train", "--model", f.model, "--init", "random",
       "--data", f.data, "--batch", "0", NULL}},
      {2, "unknown model", "unknown model \"no-such-model\"", {"predict", "--model",
       "no-such-model", "--vocab", vocab, "x", NULL}},
      {2, "preset without weights", "--init random", {"predict", "--model", "bert-base-uncased",
       "--vocab", vocab, "x", NULL}},
      {2, "backend not available", "cuda", {"predict", "--model", f.model, "--backend", "cuda",
       "x", NULL}},
      {2, "an earlier run in --out", "--overwrite", {TINY_TRAIN(f.model, f.data, existing, "1"),
       NULL}},
      /* 1: an input file or the work failed */
      {1, "missing data file", "/nonexistent/d.jsonl", {"eval", "--model", f.model, "--data",
       "/nonexistent/d.jsonl", NULL}},
      {1, "missing vocabulary", "/nonexistent/vocab.txt", {"predict", "--model", f.model,
       "--vocab", "/nonexistent/vocab.txt", "x", NULL}},
      {1, "malformed record", "bad.jsonl:2", {"eval", "--model", f.model, "--data", bad_jsonl,
       NULL}},
      {1, "malformed config.json", "config.json", {"predict", "--model", bad_model, "--vocab",
       vocab, "x", NULL}},
      {1, "missing model folder file", "has no config.json", {"predict", "--model", f.tmp,
       "--vocab", vocab, "x", NULL}},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    int rc = tp_cli_runv(&out, NULL, cases[i].argv);
    if (rc != cases[i].status || !strstr(out, cases[i].part))
      TP_FAILF("%s: expected exit %d mentioning \"%s\", got %d:\n%s", cases[i].what,
               cases[i].status, cases[i].part, rc, out);
    g_free(out);
  }
  /* 1: not enough memory for the model */
  const char *env[] = {"TENSORPLUG_MEMORY_LIMIT=1M", NULL};
  int rc = tp_cli_run_env(&out, env, "predict", "--model", "bert-base-uncased", "--init",
                          "random", "--vocab", vocab, "x", NULL);
  TP_CHECK_CLI_FAILS(rc, out, 1, "the model does not fit");
  g_free(out);
  g_free(junk);
  g_free(existing);
  g_free(cfg);
  g_free(bad_model);
  g_free(bad_jsonl);
  g_free(vocab);
  g_free(run);
  fixture_clear(&f);
}

/* ---- items 5, 6, 15, 18: inputs that used to fail late or deep ---- */

TP_TEST(Inputs, AVocabularyWithoutPadIsRefusedAtLoad) {
  fixture f;
  fixture_init(&f);
  char *vocab = g_build_filename(f.model, "vocab.txt", NULL), *text = NULL;
  TP_ASSERT(g_file_get_contents(vocab, &text, NULL, NULL));
  GRegex *re = g_regex_new("^\\[PAD\\]$", G_REGEX_MULTILINE, 0, NULL);
  char *nopad = g_regex_replace_literal(re, text, -1, 0, "[NOPAD]", 0, NULL);
  char *path = g_build_filename(f.tmp, "vocab.txt", NULL);
  TP_ASSERT(g_file_set_contents(path, nopad, -1, NULL));
  char *out = NULL;
  int rc = tp_cli_run(&out, "predict", "--model", f.model, "--vocab", path, "good film", "bad",
                      NULL);
  TP_CHECK_CLI_FAILS(rc, out, 1, "has no [PAD] token");
  g_free(out);
  g_regex_unref(re);
  g_free(path);
  g_free(nopad);
  g_free(text);
  g_free(vocab);
  fixture_clear(&f);
}

TP_TEST(Inputs, MaxLenBeyondTheModelsPositionsIsRefused) {
  fixture f;
  fixture_init(&f);
  char *out = NULL;
  int rc = tp_cli_run(&out, "eval", "--model", f.model, "--data", f.data, "--max-len", "1000",
                      NULL);
  TP_CHECK_CLI_FAILS(rc, out, 2, "--max-len 1000 is more than the model's 64 positions");
  g_free(out);
  /* without --max-len, eval and predict use the model's positions */
  rc = tp_cli_run(&out, "eval", "--model", f.model, "--data", f.data, "--json", NULL);
  TP_CHECK_INT_EQ(rc, 0);
  g_free(out);
  fixture_clear(&f);
}

TP_TEST(Inputs, AStepThatCannotFitIsRefusedWithTheNumbers) {
  fixture f;
  fixture_init(&f);
  char *out = NULL;
  const char *env[] = {"TENSORPLUG_MEMORY_LIMIT=1M", NULL};
  /* 48 records of at most 15 tokens: the absurd --eval-batch is the data's size */
  int rc = tp_cli_run_env(&out, env, "eval", "--model", f.model, "--data", f.data,
                          "--eval-batch", "60000", NULL);
  TP_CHECK_CLI_FAILS(rc, out, 1, "one evaluation step of --eval-batch 48 x 15 tokens needs about");
  TP_CHECK(strstr(out, "but only 1.0 MiB of memory on the cpu device are available") != NULL);
  g_free(out);
  char *run = g_build_filename(f.tmp, "run", NULL);
  /* the 4,642 parameters fit in 100 KiB (74 KiB with gradients and moments), a step does not */
  const char *env_train[] = {"TENSORPLUG_MEMORY_LIMIT=100K", NULL};
  rc = tp_cli_run_env(&out, env_train, TINY_TRAIN(f.model, f.data, run, "1"), NULL);
  TP_CHECK_CLI_FAILS(rc, out, 1, "one training step of --batch 8 x ");
  g_free(out);
  /* with the machine's memory, the same absurd --eval-batch just works */
  rc = tp_cli_run(&out, "eval", "--model", f.model, "--data", f.data, "--eval-batch",
                  "60000", "--json", NULL);
  TP_CHECK_INT_EQ(rc, 0);
  TP_CHECK(strstr(out, "\"n\": 48") != NULL);
  g_free(out);
  g_free(run);
  fixture_clear(&f);
}

/* ---- item 2 (the cache's part): a tampered token cache is never trusted ---- */

enum { CACHE_HEADER = 224, CACHE_PAYLOAD_SHA = 192, CACHE_TOTAL = 176 };

static char *only_cache_file(const char *dir) {
  GDir *d = g_dir_open(dir, 0, NULL);
  char *path = NULL;
  const char *n;
  while (d && (n = g_dir_read_name(d)))
    if (g_str_has_prefix(n, "tokens-") && g_str_has_suffix(n, ".bin"))
      path = g_build_filename(dir, n, NULL);
  if (d) g_dir_close(d);
  return path;
}

/* Rewrites the payload checksum, as someone who tampers on purpose would. */
static void reseal(guint8 *buf, gsize len) {
  GChecksum *c = g_checksum_new(G_CHECKSUM_SHA256);
  g_checksum_update(c, buf + CACHE_HEADER, len - CACHE_HEADER);
  gsize n = 32;
  g_checksum_get_digest(c, buf + CACHE_PAYLOAD_SHA, &n);
  g_checksum_free(c);
}

TP_TEST(Cache, ATamperedTokenCacheIsDetectedAndRebuilt) {
  fixture f;
  fixture_init(&f);
  char *cache = g_build_filename(f.tmp, "cache", NULL);
  char *env_cache = g_strdup_printf("TENSORPLUG_CACHE_DIR=%s", cache);
  const char *env[] = {env_cache, NULL};
  char *clean = NULL, *out = NULL;
  int rc = tp_cli_run_env(&clean, env, "eval", "--model", f.model, "--data", f.data, "--json",
                          NULL);
  TP_ASSERT(rc == 0);
  char *file = only_cache_file(cache);
  TP_ASSERT(file != NULL);
  guint8 *good = NULL;
  gsize len = 0;
  TP_ASSERT(g_file_get_contents(file, (char **)&good, &len, NULL));
  gsize ids = CACHE_HEADER + 49 * sizeof(gint64); /* 48 texts: 49 offsets */
  TP_ASSERT(len > ids + 8);
  static const struct { const char *what, *why; } cases[] = {
      {"an id changed", "do not match their checksum"},
      {"an id changed and resealed", "outside the vocabulary of 64"},
      {"an offset changed and resealed", "offsets of text"},
      {"the first offset changed and resealed", "do not run from 0"},
      {"a 35 TB id count", "header describes"},
      {"truncated", "header describes"},
      {"emptied", "shorter than its header"},
      {"written by another build of the tokenizer", "another tokenizer build"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    guint8 *b = g_memdup2(good, len);
    gsize blen = len;
    gint32 wild = 1 << 30;
    gint64 off = 3, huge = (gint64)35e12 / 4;
    switch (i) {
    case 0: memcpy(b + ids + 4, &wild, 4); break;
    case 1: memcpy(b + ids + 4, &wild, 4), reseal(b, blen); break;
    case 2: memcpy(b + CACHE_HEADER + 8 * 5, &off, 8), reseal(b, blen); break;
    case 3: memcpy(b + CACHE_HEADER, &off, 8), reseal(b, blen); break;
    case 4: memcpy(b + CACHE_TOTAL, &huge, 8); break;
    case 5: blen -= 4; break;
    case 6: blen = 0; break;
    case 7: b[8] ^= 1; break; /* the code id (the file name alone would keep it apart) */
    }
    TP_ASSERT(g_file_set_contents(file, (char *)b, (gssize)blen, NULL));
    g_free(b);
    rc = tp_cli_run_env(&out, env, "eval", "--model", f.model, "--data", f.data, "--json", NULL);
    if (rc != 0 || !strstr(out, "ignoring the token cache") || !strstr(out, cases[i].why))
      TP_FAILF("%s: expected a warning with \"%s\" and the results of a fresh tokenization; "
               "exit %d:\n%s", cases[i].what, cases[i].why, rc, out);
    /* the same numbers as from clean ids (timing aside; stdout comes first) */
    size_t upto = (size_t)(strstr(clean, "\"seconds\"") - clean);
    TP_CHECK(strncmp(out, clean, upto) == 0);
    g_free(out);
    /* and the file was rebuilt: the next run uses it silently */
    rc = tp_cli_run_env(&out, env, "eval", "--model", f.model, "--data", f.data, "--json", NULL);
    TP_CHECK(rc == 0 && !strstr(out, "ignoring"));
    g_free(out);
  }
  g_free(good);
  g_free(file);
  g_free(clean);
  g_free(env_cache);
  g_free(cache);
  fixture_clear(&f);
}

/* item 26: a fine-tune that starts from a pretrained model folder */
TP_TEST(Run, FineTunesFromAPretrainedModelFolder) {
  fixture f;
  fixture_init(&f);
  char *run = g_build_filename(f.tmp, "run", NULL), *out = NULL;
  /* TINY_TRAIN without --init random: the weights of tests/data/tiny-bert */
  int rc = tp_cli_run(&out, "train", "--model", f.model, "--data", f.data, "--max-len", "32",
                      "--batch", "8", "--epochs", "2", "--lr", "1e-2", "--seed", "3",
                      "--threads", "1", "--out", run, NULL);
  if (rc != 0) TP_FAILF("fine-tune exited %d:\n%s", rc, out);
  char *weights = g_strdup_printf("weights from %s/model.safetensors (25 tensors)", f.model);
  if (!strstr(out, weights)) TP_FAILF("the weights were not loaded from the folder:\n%s", out);
  TP_CHECK(strstr(out, "Test accuracy: ") != NULL);
  g_free(out);
  TP_CHECK_INT_EQ(history_len(run, "results.json"), 2);
  /* the fine-tuned model evaluates to what the run reported */
  rc = tp_cli_run(&out, "eval", "--run", run, NULL);
  TP_CHECK_INT_EQ(rc, 0);
  TP_CHECK(strstr(out, "(identical)") != NULL);
  g_free(out);
  g_free(weights);
  g_free(run);
  fixture_clear(&f);
}
