/* tests/test_sweep.c — `tensorplug sweep` and `tensorplug report` on the
 * shipped tiny specs (examples/experiments/problem{1,2,3}-tiny.ini) with real
 * IMDB records: end to end with every plot, summary.csv against each run's
 * results.json, the stale-split warning, kill and resume, shards merged by
 * report, SIGINT, spec errors. Small subsets and 1-2 epochs keep it short. */
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-glib/json-glib.h>

#include "tp_test.h"
#include "tp_test_cli.h"

static char *spec(const char *name) {
  return g_build_filename(tp_test_source_dir(), "examples", "experiments", name, NULL);
}

/* Arguments of `sweep SPEC --out OUT` with the test's data and vocabulary,
 * then extra (NULL-terminated). */
static GPtrArray *sweep_args(const char *spec_name, const char *out, ...) {
  GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(a, g_strdup("sweep"));
  g_ptr_array_add(a, strchr(spec_name, '/') ? g_strdup(spec_name) : spec(spec_name));
  g_ptr_array_add(a, g_strdup("--out"));
  g_ptr_array_add(a, g_strdup(out));
  g_ptr_array_add(a, g_strdup("--set"));
  g_ptr_array_add(a, g_strdup_printf("data=%s/data/imdb", tp_test_shared_dir()));
  g_ptr_array_add(a, g_strdup("--set"));
  g_ptr_array_add(a, g_strdup_printf("vocab=%s/data/bert-base-uncased/vocab.txt", tp_test_shared_dir()));
  va_list ap;
  va_start(ap, out);
  for (const char *x = va_arg(ap, const char *); x; x = va_arg(ap, const char *))
    g_ptr_array_add(a, g_strdup(x));
  va_end(ap);
  g_ptr_array_add(a, NULL);
  return a;
}

static int run_args(GPtrArray *a, char **out) {
  int rc = tp_test_cli_v(out, NULL, (const char *const *)a->pdata);
  g_ptr_array_unref(a);
  return rc;
}

static JsonParser *load_json(const char *path, JsonObject **o) {
  JsonParser *p = json_parser_new();
  GError *err = NULL;
  *o = NULL;
  if (!json_parser_load_from_file(p, path, &err)) {
    TP_FAILF("%s: %s", path, err->message);
    g_clear_error(&err);
  } else {
    *o = json_node_get_object(json_parser_get_root(p));
  }
  return p;
}

/* summary.csv as rows of fields (no quoted fields in these tests). */
static GPtrArray *read_csv(const char *path, char ***header) {
  char *text = NULL;
  GPtrArray *rows = g_ptr_array_new_with_free_func((GDestroyNotify)g_strfreev);
  *header = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL)) {
    TP_FAILF("cannot read %s", path);
    return rows;
  }
  char **lines = g_strsplit(text, "\n", -1);
  for (char **l = lines; *l; l++) {
    if (!**l) continue;
    if (!*header) *header = g_strsplit(*l, ",", -1);
    else g_ptr_array_add(rows, g_strsplit(*l, ",", -1));
  }
  g_strfreev(lines);
  g_free(text);
  return rows;
}

static int col(char **header, const char *name) {
  for (int i = 0; header && header[i]; i++)
    if (!strcmp(header[i], name)) return i;
  TP_FAILF("summary.csv has no column %s", name);
  return 0;
}

/* ---- SVG validity: well-formed XML whose root element is <svg> ---- */

static void svg_start(GMarkupParseContext *c, const char *name, const char **an, const char **av,
                      gpointer user, GError **err) {
  (void)c, (void)an, (void)av, (void)err;
  char **root = user;
  if (!*root) *root = g_strdup(name);
}

static bool valid_svg(const char *data, gsize len, GError **err) {
  char *root = NULL;
  GMarkupParser p = {.start_element = svg_start};
  GMarkupParseContext *c = g_markup_parse_context_new(&p, 0, &root, NULL);
  bool ok = g_markup_parse_context_parse(c, data, (gssize)len, err) &&
            g_markup_parse_context_end_parse(c, err);
  g_markup_parse_context_free(c);
  ok = ok && root && !strcmp(root, "svg");
  g_free(root);
  return ok;
}

static int count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
  return n;
}

/* Each summary.csv row agrees with the results.json of its run folder. */
static void check_summary_against_runs(const char *report_dir, GHashTable *sweep_dirs, guint runs) {
  char *csv = g_build_filename(report_dir, "summary.csv", NULL);
  char **h = NULL;
  GPtrArray *rows = read_csv(csv, &h);
  TP_CHECK_INT_EQ(rows->len, runs);
  for (guint i = 0; i < rows->len; i++) {
    char **row = g_ptr_array_index(rows, i);
    const char *dir = g_hash_table_lookup(sweep_dirs, row[col(h, "sweep")]);
    if (!dir) {
      TP_FAILF("row %u: unknown sweep %s", i, row[col(h, "sweep")]);
      continue;
    }
    char *rp = g_build_filename(dir, row[col(h, "run")], "results.json", NULL);
    JsonObject *o = NULL;
    JsonParser *jp = load_json(rp, &o);
    if (!o) {
      g_object_unref(jp);
      g_free(rp);
      continue;
    }
    JsonObject *cfg = json_object_get_object_member(o, "config");
    JsonObject *sp = json_object_get_object_member(o, "split");
    JsonObject *t = json_object_get_object_member(o, "test");
    TP_CHECK_INT_EQ(atoll(row[col(h, "max_len")]), json_object_get_int_member(cfg, "max_len"));
    TP_CHECK_INT_EQ(atoll(row[col(h, "batch")]), json_object_get_int_member(cfg, "batch"));
    TP_CHECK_NEAR(g_ascii_strtod(row[col(h, "lr")], NULL), json_object_get_double_member(cfg, "lr"), 0);
    TP_CHECK_NEAR(g_ascii_strtod(row[col(h, "subset")], NULL), json_object_get_double_member(cfg, "subset"), 0);
    TP_CHECK_INT_EQ(atoll(row[col(h, "train")]), json_object_get_int_member(sp, "train"));
    TP_CHECK_INT_EQ(atoll(row[col(h, "val")]), json_object_get_int_member(sp, "val"));
    TP_CHECK_INT_EQ(atoll(row[col(h, "test")]), json_object_get_int_member(sp, "test"));
    TP_CHECK_INT_EQ(atoll(row[col(h, "best_epoch")]), json_object_get_int_member(o, "best_epoch"));
    TP_CHECK_NEAR(g_ascii_strtod(row[col(h, "val_acc_best")], NULL),
                  json_object_get_double_member(o, "val_acc_best"), 0);
    TP_CHECK_NEAR(g_ascii_strtod(row[col(h, "val_loss_best")], NULL),
                  json_object_get_double_member(o, "val_loss_best"), 0);
    TP_CHECK_NEAR(g_ascii_strtod(row[col(h, "test_acc")], NULL), json_object_get_double_member(t, "accuracy"), 0);
    TP_CHECK_NEAR(g_ascii_strtod(row[col(h, "test_f1")], NULL), json_object_get_double_member(t, "f1"), 0);
    TP_CHECK_STR_EQ(row[col(h, "commit")], json_object_get_string_member(o, "commit"));
    TP_CHECK_STR_EQ(row[col(h, "backend")], json_object_get_string_member(o, "backend"));
    /* the split hash, recomputed from the run's own three hashes */
    GChecksum *c = g_checksum_new(G_CHECKSUM_SHA256);
    static const char *const keys[] = {"train_sha256", "val_sha256", "test_sha256"};
    for (int k = 0; k < 3; k++) {
      g_checksum_update(c, (const guchar *)json_object_get_string_member(sp, keys[k]), -1);
      g_checksum_update(c, (const guchar *)"\n", 1);
    }
    char want[13];
    g_strlcpy(want, g_checksum_get_string(c), sizeof want);
    g_checksum_free(c);
    TP_CHECK_STR_EQ(row[col(h, "split_hash")], want);
    /* total time and seconds per epoch come from the run too */
    JsonArray *hist = json_object_get_array_member(o, "history");
    double sum = 0;
    for (guint e = 0; e < json_array_get_length(hist); e++)
      sum += json_object_get_double_member(json_array_get_object_element(hist, e), "seconds");
    TP_CHECK_NEAR(g_ascii_strtod(row[col(h, "train_s")], NULL), sum, 1e-9);
    TP_CHECK_NEAR(g_ascii_strtod(row[col(h, "total_s")], NULL), json_object_get_double_member(o, "elapsed_s"), 0);
    g_object_unref(jp);
    g_free(rp);
  }
  g_strfreev(h);
  g_ptr_array_unref(rows);
  g_free(csv);
}

/* report.html: one row per run, every plot inlined byte for byte, every
 * plot file a valid SVG. */
static void check_html(const char *report_dir, guint runs, int plots) {
  char *hp = g_build_filename(report_dir, "report.html", NULL), *html = NULL;
  TP_ASSERT(g_file_get_contents(hp, &html, NULL, NULL));
  TP_CHECK_INT_EQ(count(html, "<tr class=\"run"), runs);
  TP_CHECK_INT_EQ(count(html, "src=\"data:image/svg+xml;base64,"), plots);
  static const char *const files[] = {"val_loss.svg", "acc_vs_maxlen.svg", "data_size.svg", "models.svg"};
  for (int i = 0; i < plots && i < 4; i++) {
    char *path = g_build_filename(report_dir, "plots", files[i], NULL), *data = NULL;
    gsize len = 0;
    if (!g_file_get_contents(path, &data, &len, NULL)) {
      TP_FAILF("no plot %s", path);
      g_free(path);
      continue;
    }
    GError *err = NULL;
    if (!valid_svg(data, len, &err)) TP_FAILF("%s is not a valid SVG: %s", path, err ? err->message : "root is not <svg>");
    g_clear_error(&err);
    TP_CHECK(len > 2000); /* axes, labels and data, not an empty canvas */
    char *b64 = g_base64_encode((const guchar *)data, len);
    if (!strstr(html, b64)) TP_FAILF("report.html does not inline %s", files[i]);
    g_free(b64);
    g_free(data);
    g_free(path);
  }
  g_free(html);
  g_free(hp);
}

/* The run with the lowest val_loss_best among rows of one sweep. */
static char *best_of(const char *report_dir, const char *sweep) {
  char *csv = g_build_filename(report_dir, "summary.csv", NULL);
  char **h = NULL;
  GPtrArray *rows = read_csv(csv, &h);
  char *best = NULL;
  double bl = INFINITY;
  for (guint i = 0; i < rows->len; i++) {
    char **row = g_ptr_array_index(rows, i);
    double l = g_ascii_strtod(row[col(h, "val_loss_best")], NULL);
    if (!strcmp(row[col(h, "sweep")], sweep) && l < bl) {
      bl = l;
      g_free(best);
      best = g_strdup(row[col(h, "run")]);
    }
  }
  g_strfreev(h);
  g_ptr_array_unref(rows);
  g_free(csv);
  return best;
}

/* summary.csv without the timing columns (and so comparable across runs). */
static char *summary_without_timing(const char *report_dir) {
  char *csv = g_build_filename(report_dir, "summary.csv", NULL);
  char **h = NULL;
  GPtrArray *rows = read_csv(csv, &h);
  GString *s = g_string_new(NULL);
  int skip[3] = {col(h, "s_per_epoch"), col(h, "train_s"), col(h, "total_s")};
  for (guint i = 0; i < rows->len; i++) {
    char **row = g_ptr_array_index(rows, i);
    for (int c = 0; row[c]; c++)
      if (c != skip[0] && c != skip[1] && c != skip[2]) g_string_append_printf(s, "%s,", row[c]);
    g_string_append_c(s, '\n');
  }
  g_strfreev(h);
  g_ptr_array_unref(rows);
  g_free(csv);
  return g_string_free(s, FALSE);
}

TP_TEST(Sweep, TinySpecsEndToEndWithReportAndShards) {
  char *tmp = tp_test_tmpdir();
  char *p1 = g_build_filename(tmp, "p1", NULL), *p2 = g_build_filename(tmp, "p2", NULL);
  char *p3 = g_build_filename(tmp, "p3", NULL), *rep = g_build_filename(tmp, "report", NULL);
  char *out = NULL;
  int rc = run_args(sweep_args("problem1-tiny.ini", p1, "--set", "subset=0.01", "--set", "epochs=1", NULL), &out);
  if (rc != 0) TP_FAILF("problem1-tiny exited %d:\n%s", rc, out);
  g_free(out);
  rc = run_args(sweep_args("problem2-tiny.ini", p2, "--from-best", p1, "--set", "epochs=1", NULL), &out);
  if (rc != 0) TP_FAILF("problem2-tiny exited %d:\n%s", rc, out);
  g_free(out);
  rc = run_args(sweep_args("problem3-tiny.ini", p3, "--from-best", p1, "--set", "subset=0.01",
                           "--set", "epochs=1", NULL), &out);
  if (rc != 0) TP_FAILF("problem3-tiny exited %d:\n%s", rc, out);
  g_free(out);

  rc = tp_test_cli(&out, "report", p1, p2, p3, "--out", rep, NULL);
  if (rc != 0) TP_FAILF("report exited %d:\n%s", rc, out);
  /* the graded answers of the three problems */
  TP_CHECK(strstr(out, "Problem 1 — max length × learning rate: sweep problem1-tiny (6 runs): best run ") != NULL);
  TP_CHECK(strstr(out, "Problem 2 — data size: sweep problem2-tiny (4 runs): best run ") != NULL);
  TP_CHECK(strstr(out, "Problem 3 — model swap: sweep problem3-tiny (2 runs): best run ") != NULL);
  TP_CHECK(strstr(out, "warning") == NULL);
  g_free(out);
  GHashTable *dirs = g_hash_table_new(g_str_hash, g_str_equal);
  g_hash_table_insert(dirs, "problem1-tiny", p1);
  g_hash_table_insert(dirs, "problem2-tiny", p2);
  g_hash_table_insert(dirs, "problem3-tiny", p3);
  check_summary_against_runs(rep, dirs, 12);
  check_html(rep, 12, 4);

  /* the answer is the run with the lowest validation loss, and problems 2
   * and 3 took its settings */
  char *best1 = best_of(rep, "problem1-tiny");
  TP_ASSERT(best1 != NULL);
  char *sj = g_build_filename(rep, "summary.json", NULL);
  JsonObject *so = NULL;
  JsonParser *sp = load_json(sj, &so);
  TP_ASSERT(so != NULL);
  JsonArray *answers = json_object_get_array_member(so, "answers");
  TP_CHECK_INT_EQ(json_array_get_length(answers), 3);
  JsonObject *a1 = json_array_get_object_element(answers, 0);
  TP_CHECK_STR_EQ(json_object_get_string_member(a1, "best_run"), best1);
  char *best_res = g_build_filename(p1, best1, "results.json", NULL);
  JsonObject *bo = NULL;
  JsonParser *bp = load_json(best_res, &bo);
  TP_ASSERT(bo != NULL);
  TP_CHECK_NEAR(json_object_get_double_member(a1, "val_acc_at_min_val_loss"),
                json_object_get_double_member(bo, "val_acc_best"), 0);
  JsonObject *bcfg = json_object_get_object_member(bo, "config");
  char *p2run = g_build_filename(p2, "subset-0.02", "results.json", NULL);
  JsonObject *o2 = NULL;
  JsonParser *jp2 = load_json(p2run, &o2);
  TP_ASSERT(o2 != NULL);
  JsonObject *cfg2 = json_object_get_object_member(o2, "config");
  TP_CHECK_INT_EQ(json_object_get_int_member(cfg2, "max_len"), json_object_get_int_member(bcfg, "max_len"));
  TP_CHECK_INT_EQ(json_object_get_int_member(cfg2, "batch"), json_object_get_int_member(bcfg, "batch"));
  TP_CHECK_NEAR(json_object_get_double_member(cfg2, "lr"), json_object_get_double_member(bcfg, "lr"), 0);
  TP_CHECK_NEAR(json_object_get_double_member(cfg2, "subset"), 0.02, 0);
  g_object_unref(jp2);
  g_object_unref(bp);
  g_object_unref(sp);

  /* the stale-split guard: two runs that declare different subsets but
   * share a split (here: one results.json copied, its subset edited) */
  char *stale = g_build_filename(tmp, "stale", NULL);
  for (int k = 0; k < 2; k++) {
    char *d = g_strdup_printf("%s/run%d", stale, k), *text = NULL;
    g_mkdir_with_parents(d, 0755);
    char *src = g_build_filename(p2, "subset-0.01", "results.json", NULL);
    TP_ASSERT(g_file_get_contents(src, &text, NULL, NULL));
    if (k == 1) {
      char *at = strstr(text, "\"subset\" : 0.01");
      TP_ASSERT(at != NULL);
      memcpy(at, "\"subset\" : 0.02", strlen("\"subset\" : 0.02"));
    }
    char *dst = g_build_filename(d, "results.json", NULL);
    TP_ASSERT(g_file_set_contents(dst, text, -1, NULL));
    g_free(dst);
    g_free(src);
    g_free(text);
    g_free(d);
  }
  rc = tp_test_cli(&out, "report", stale, NULL);
  TP_CHECK_INT_EQ(rc, 0);
  TP_CHECK(strstr(out, "warning: runs run0 (subset 0.01) and run1 (subset 0.02) share the split") != NULL);
  g_free(out);
  char *md = g_build_filename(stale, "report.md", NULL), *mdt = NULL;
  TP_ASSERT(g_file_get_contents(md, &mdt, NULL, NULL));
  TP_CHECK(strstr(mdt, "**Warning:**") != NULL);
  g_free(mdt);
  g_free(md);

  /* shards: 0/2 and 1/2 in two folders, reported together, give the
   * unsharded sweep's summary (timing columns aside) */
  char *s0 = g_build_filename(tmp, "shard0", NULL), *s1 = g_build_filename(tmp, "shard1", NULL);
  char *rs = g_build_filename(tmp, "report-shards", NULL), *r1 = g_build_filename(tmp, "report-p1", NULL);
  rc = run_args(sweep_args("problem1-tiny.ini", s0, "--shard", "0/2", "--set", "subset=0.01", "--set", "epochs=1", NULL), &out);
  if (rc != 0) TP_FAILF("shard 0/2 exited %d:\n%s", rc, out);
  TP_CHECK(strstr(out, "6 runs in the spec, 3 in shard 0/2") != NULL);
  g_free(out);
  rc = run_args(sweep_args("problem1-tiny.ini", s1, "--shard", "1/2", "--set", "subset=0.01", "--set", "epochs=1", NULL), &out);
  if (rc != 0) TP_FAILF("shard 1/2 exited %d:\n%s", rc, out);
  g_free(out);
  TP_CHECK_INT_EQ(tp_test_cli(&out, "report", s0, s1, "--out", rs, NULL), 0);
  g_free(out);
  TP_CHECK_INT_EQ(tp_test_cli(&out, "report", p1, "--out", r1, NULL), 0);
  g_free(out);
  char *whole = summary_without_timing(r1), *merged = summary_without_timing(rs);
  TP_CHECK(strlen(whole) > 100);
  TP_CHECK_STR_EQ(merged, whole);
  g_free(whole);
  g_free(merged);

  /* every shipped spec is valid (its runs pass train's validation) */
  static const char *const shipped[] = {"problem1.ini", "problem2.ini", "problem3.ini",
                                        "minilm/problem1.ini", "minilm/problem2.ini",
                                        "minilm/problem3.ini"};
  for (size_t i = 0; i < G_N_ELEMENTS(shipped); i++) {
    char *path = spec(shipped[i]), *never = g_build_filename(tmp, "never", NULL);
    rc = tp_test_cli(&out, "sweep", path, "--out", never, "--from-best", p1, "--dry-run", NULL);
    if (rc != 0) TP_FAILF("%s --dry-run exited %d:\n%s", shipped[i], rc, out);
    TP_CHECK(!g_file_test(never, G_FILE_TEST_EXISTS));
    g_free(out);
    g_free(never);
    g_free(path);
  }

  g_hash_table_unref(dirs);
  g_free(best_res);
  g_free(p2run);
  g_free(best1);
  g_free(sj);
  g_free(stale);
  g_free(s0);
  g_free(s1);
  g_free(rs);
  g_free(r1);
  g_free(p1);
  g_free(p2);
  g_free(p3);
  g_free(rep);
}

/* A 3-run spec of 3 epochs each, so that a kill lands inside a run. */
static char *write_three_run_spec(const char *tmp) {
  char *path = g_build_filename(tmp, "three.ini", NULL);
  TP_CHECK(g_file_set_contents(path,
      "[sweep]\nname = three\n\n[defaults]\nmodel = bert\ninit = random\nlayers = 1\nhidden = 32\n"
      "heads = 2\nffn = 64\nsubset = 0.02\nmax_len = 48\nbatch = 16\nepochs = 3\npatience = 0\n\n"
      "[grid]\nlr = 2e-3, 1e-3, 5e-4\n", -1, NULL));
  return path;
}

static int checkpoint_epochs(const char *run) {
  char *p = g_build_filename(run, "checkpoint", "state.json", NULL), *text = NULL;
  int e = -1;
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

/* Starts `tensorplug ARGS` in the background (output to log); returns its pid. */
static GPid spawn_bg(GPtrArray *args, const char *log) {
  GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(argv, tp_test_cli_exe());
  for (guint i = 0; i + 1 < args->len; i++) g_ptr_array_add(argv, g_strdup(g_ptr_array_index(args, i)));
  g_ptr_array_add(argv, NULL);
  g_ptr_array_unref(args);
  GPid pid = 0;
  GError *err = NULL;
  int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (!g_spawn_async_with_pipes_and_fds(NULL, (const char *const *)argv->pdata, NULL,
                                        G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, -1, fd, fd, NULL,
                                        NULL, 0, &pid, NULL, NULL, NULL, &err)) {
    TP_FAILF("spawn: %s", err->message);
    g_clear_error(&err);
  }
  close(fd);
  g_ptr_array_unref(argv);
  return pid;
}

static int wait_status(GPid pid) {
  int st = 0;
  waitpid(pid, &st, 0);
  g_spawn_close_pid(pid);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static bool wait_for_checkpoint(const char *run, int epochs, int max_ms) {
  for (int ms = 0; ms < max_ms; ms += 2) {
    if (checkpoint_epochs(run) >= epochs) return true;
    g_usleep(2000);
  }
  return false;
}

TP_TEST(Sweep, KilledDuringTheSecondRunResumesWithoutRepeatingTheFirst) {
  char *tmp = tp_test_tmpdir(), *sp = write_three_run_spec(tmp);
  char *dir = g_build_filename(tmp, "sweep", NULL), *log = g_build_filename(tmp, "log", NULL);
  char *run1 = g_build_filename(dir, "lr-2e-3", NULL), *run2 = g_build_filename(dir, "lr-1e-3", NULL);
  char *res1 = g_build_filename(run1, "results.json", NULL);
  char *res2 = g_build_filename(run2, "results.json", NULL);
  GPid pid = spawn_bg(sweep_args(sp, dir, NULL), log);
  bool got = wait_for_checkpoint(run2, 1, 300000);
  kill(pid, SIGKILL);
  TP_CHECK_INT_EQ(wait_status(pid), 128 + SIGKILL);
  TP_ASSERT(got);
  TP_ASSERT(g_file_test(res1, G_FILE_TEST_EXISTS));
  TP_CHECK(!g_file_test(res2, G_FILE_TEST_EXISTS));
  struct stat before;
  TP_ASSERT(stat(res1, &before) == 0);
  char *first = NULL;
  TP_ASSERT(g_file_get_contents(res1, &first, NULL, NULL));

  /* again: the orphaned run stops within a step (PR_SET_PDEATHSIG), the new
   * sweep waits for its lock, skips run 1, resumes run 2, runs run 3 */
  char *out = NULL;
  int rc = run_args(sweep_args(sp, dir, NULL), &out);
  if (rc != 0) TP_FAILF("restarted sweep exited %d:\n%s", rc, out);
  TP_CHECK(strstr(out, "[1/3] lr-2e-3: finished earlier, skipped") != NULL);
  TP_CHECK(strstr(out, "[2/3] lr-1e-3: resuming from its checkpoint") != NULL);
  TP_CHECK(strstr(out, "Resuming after epoch ") != NULL);
  TP_CHECK(strstr(out, "3 of 3 runs done") != NULL);
  g_free(out);
  struct stat after;
  TP_ASSERT(stat(res1, &after) == 0);
  TP_CHECK(after.st_mtim.tv_sec == before.st_mtim.tv_sec && after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);
  char *again = NULL;
  TP_ASSERT(g_file_get_contents(res1, &again, NULL, NULL));
  TP_CHECK_STR_EQ(again, first);
  TP_CHECK(g_file_test(res2, G_FILE_TEST_EXISTS));

  /* the report is complete: three runs of three epochs */
  TP_CHECK_INT_EQ(tp_test_cli(&out, "report", dir, NULL), 0);
  g_free(out);
  char *csv = g_build_filename(dir, "summary.csv", NULL);
  char **h = NULL;
  GPtrArray *rows = read_csv(csv, &h);
  TP_CHECK_INT_EQ(rows->len, 3);
  for (guint i = 0; i < rows->len; i++) {
    char **row = g_ptr_array_index(rows, i);
    TP_CHECK(atoi(row[col(h, "best_epoch")]) >= 1);
    /* only the resumed run says its total time is its last process's */
    bool resumed = strcmp(row[col(h, "run")], "lr-1e-3") == 0;
    TP_CHECK(g_str_has_prefix(row[col(h, "note")], "resumed after epoch ") == resumed);
  }
  char *sj = g_build_filename(dir, "sweep.json", NULL);
  JsonObject *so = NULL;
  JsonParser *jp = load_json(sj, &so);
  TP_ASSERT(so != NULL);
  JsonArray *runs = json_object_get_array_member(so, "runs");
  for (guint i = 0; i < json_array_get_length(runs); i++)
    TP_CHECK_STR_EQ(json_object_get_string_member(json_array_get_object_element(runs, i), "status"), "done");
  g_object_unref(jp);
  g_strfreev(h);
  g_ptr_array_unref(rows);
  g_free(sj);
  g_free(csv);
  g_free(first);
  g_free(again);
  g_free(res1);
  g_free(res2);
  g_free(run1);
  g_free(run2);
  g_free(log);
  g_free(dir);
  g_free(sp);
}

TP_TEST(Sweep, SigintStopsWithStatus130LeavingTheRunResumable) {
  char *tmp = tp_test_tmpdir(), *sp = write_three_run_spec(tmp);
  char *dir = g_build_filename(tmp, "sweep", NULL), *log = g_build_filename(tmp, "log", NULL);
  char *run1 = g_build_filename(dir, "lr-2e-3", NULL);
  GPid pid = spawn_bg(sweep_args(sp, dir, NULL), log);
  bool got = wait_for_checkpoint(run1, 1, 300000);
  kill(pid, SIGINT); /* to the sweep only: it forwards the interrupt to its run */
  TP_CHECK_INT_EQ(wait_status(pid), 130);
  TP_ASSERT(got);
  char *text = NULL;
  TP_ASSERT(g_file_get_contents(log, &text, NULL, NULL));
  TP_CHECK(strstr(text, "sweep interrupted during run \"lr-2e-3\"") != NULL);
  g_free(text);
  char *sj = g_build_filename(dir, "sweep.json", NULL);
  JsonObject *so = NULL;
  JsonParser *jp = load_json(sj, &so);
  TP_ASSERT(so != NULL);
  JsonArray *runs = json_object_get_array_member(so, "runs");
  TP_CHECK_STR_EQ(json_object_get_string_member(json_array_get_object_element(runs, 0), "status"), "interrupted");
  TP_CHECK_STR_EQ(json_object_get_string_member(json_array_get_object_element(runs, 1), "status"), "pending");
  g_object_unref(jp);
  TP_CHECK(checkpoint_epochs(run1) >= 1);
  g_free(sj);
  g_free(log);
  g_free(run1);
  g_free(dir);
  g_free(sp);
}

TP_TEST(Sweep, SpecErrorsNameTheFileGroupAndKey) {
  char *tmp = tp_test_tmpdir(), *out = NULL;
  char *dir = g_build_filename(tmp, "never", NULL);
  struct {
    const char *text, *expect;
  } cases[] = {
      {"[defaults]\nmax_length = 128\n[run a]\nlr = 1e-3\n", "[defaults]: unknown key \"max_length\""},
      {"[defaults]\nmodel = bert\ninit = random\ndata = x\n[run a]\nmax_len = 2\n", "run \"a\": --max-len 2: use 3 to 65536"},
      {"[defaults]\nmodel = bert\ninit = random\ndata = x\n[run a]\nwarmup = nan\n", "--warmup nan"},
      {"[runs a]\nlr = 1\n", "unknown group [runs a]"},
      {"[run a b]\nlr = 1\n", "[run a b]: a run name is a folder name"},
      {"[defaults]\nout = x\n[run a]\nlr = 1\n", "\"out\" is the sweep's to set"},
      {"[sweep]\nstudy = speed\n[run a]\nlr = 1\n", "study = speed: use max_len_lr, data_size or model"},
      {"[defaults]\nmodel = bert\n", "declares no runs"},
      {"[defaults]\nskip_bad = maybe\n[run a]\nlr = 1\n", "skip_bad = maybe: use true or false"},
      {"[sweep]\nfrom_best = /nonexistent/sweep\n[run a]\nlr = 1\n", "/nonexistent/sweep"},
      {"this is not ini\n", "spec.ini"},
  };
  char *path = g_build_filename(tmp, "spec.ini", NULL);
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    TP_ASSERT(g_file_set_contents(path, cases[i].text, -1, NULL));
    int rc = tp_test_cli(&out, "sweep", path, "--out", dir, NULL);
    if (rc != 2 && rc != 1) TP_FAILF("case %zu exited %d:\n%s", i, rc, out);
    if (!strstr(out, cases[i].expect)) TP_FAILF("case %zu: no \"%s\" in:\n%s", i, cases[i].expect, out);
    if (!strstr(out, path)) TP_FAILF("case %zu does not name the file:\n%s", i, out);
    g_free(out);
  }
  TP_CHECK(!g_file_test(dir, G_FILE_TEST_EXISTS)); /* nothing ran */
  /* a grid key cannot be --set, shards must be I/N */
  char *p2 = spec("problem2-tiny.ini");
  TP_CHECK_INT_EQ(tp_test_cli(&out, "sweep", p2, "--out", dir, "--set", "subset=0.5", "--from-best", tmp, NULL), 2);
  g_free(out);
  char *p1 = spec("problem1-tiny.ini");
  TP_CHECK_INT_EQ(tp_test_cli(&out, "sweep", p1, "--out", dir, "--shard", "2/2", NULL), 2);
  TP_CHECK(strstr(out, "--shard 2/2") != NULL);
  g_free(out);
  /* from_best needs a finished sweep */
  TP_CHECK_INT_EQ(tp_test_cli(&out, "sweep", p2, "--out", dir, "--from-best", tmp, NULL), 2);
  TP_CHECK(strstr(out, "no finished run") != NULL);
  g_free(out);
  /* --dry-run prints each run's train command */
  TP_CHECK_INT_EQ(tp_test_cli(&out, "sweep", p1, "--out", dir, "--dry-run", NULL), 0);
  TP_CHECK(strstr(out, "[6/6] len128-lr5e-4") != NULL);
  TP_CHECK(strstr(out, "tensorplug train --batch 8 ") != NULL && strstr(out, "--max-len 128") != NULL);
  g_free(out);
  TP_CHECK(!g_file_test(dir, G_FILE_TEST_EXISTS));
  g_free(p1);
  g_free(p2);
  g_free(path);
  g_free(dir);
}

TP_TEST(Sweep, OutOfMemoryHalvesTheBatchWhenTheSpecAllowsIt) {
  /* $TENSORPLUG_ALLOC_LIMIT_BYTES (core/backend.c) makes the backend's
   * allocations fail above 50 MiB: this tiny model needs about 62 MiB at
   * batch 64 and 38 MiB at batch 32 (max length 256) */
  char *tmp = tp_test_tmpdir(), *out = NULL;
  char *sp = g_build_filename(tmp, "oom.ini", NULL);
  TP_ASSERT(g_file_set_contents(sp,
      "[sweep]\nname = oom\n\n[defaults]\nmodel = bert\ninit = random\nlayers = 1\nhidden = 32\n"
      "heads = 2\nffn = 64\nsubset = 0.01\nmax_len = 256\nbatch = 64\neval_batch = 4\nepochs = 1\n\n"
      "[run fallback]\noom_fallback = true\n\n[run strict]\noom_fallback = false\n", -1, NULL));
  char *dir = g_build_filename(tmp, "sweep", NULL);
  GPtrArray *a = sweep_args(sp, dir, NULL);
  const char *env[] = {"TENSORPLUG_ALLOC_LIMIT_BYTES=52428800", NULL};
  int rc = tp_test_cli_v(&out, env, (const char *const *)a->pdata);
  g_ptr_array_unref(a);
  TP_CHECK_INT_EQ(rc, 1); /* "strict" failed; the sweep went on and says so */
  TP_CHECK(strstr(out, "[1/2] fallback: out of memory at batch 64: halving the batch to 32") != NULL);
  const char *failed = strstr(out, "[2/2] strict: FAILED (");
  TP_CHECK(failed && strstr(failed, "out of memory") && strstr(failed, "going on with the next run"));
  TP_CHECK(strstr(out, "1 run(s) failed") != NULL);
  g_free(out);
  /* the fallback ran with batch 32, and says so everywhere */
  char *rp = g_build_filename(dir, "fallback", "results.json", NULL);
  JsonObject *o = NULL;
  JsonParser *jp = load_json(rp, &o);
  TP_ASSERT(o != NULL);
  TP_CHECK_INT_EQ(json_object_get_int_member(json_object_get_object_member(o, "config"), "batch"), 32);
  g_object_unref(jp);
  char *sj = g_build_filename(dir, "sweep.json", NULL);
  jp = load_json(sj, &o);
  TP_ASSERT(o != NULL);
  JsonArray *runs = json_object_get_array_member(o, "runs");
  JsonObject *r0 = json_array_get_object_element(runs, 0), *r1 = json_array_get_object_element(runs, 1);
  TP_CHECK_STR_EQ(json_object_get_string_member(r0, "status"), "done");
  TP_CHECK_STR_EQ(json_object_get_string_member(r0, "batch"), "32");
  JsonArray *oom = json_object_get_array_member(r0, "oom");
  TP_ASSERT(json_array_get_length(oom) == 1);
  JsonObject *e = json_array_get_object_element(oom, 0);
  TP_CHECK_INT_EQ(json_object_get_int_member(e, "batch"), 64);
  TP_CHECK(strstr(json_object_get_string_member(e, "message"), "out of memory") != NULL);
  TP_CHECK(strstr(json_object_get_string_member(e, "message"), "--batch") != NULL);
  TP_CHECK_STR_EQ(json_object_get_string_member(r1, "status"), "failed");
  TP_CHECK(strstr(json_object_get_string_member(r1, "error"), "out of memory") != NULL);
  g_object_unref(jp);
  char *att = g_build_filename(dir, "attempts", "fallback-oom-batch64", NULL);
  TP_CHECK(g_file_test(att, G_FILE_TEST_IS_DIR)); /* the failed attempt is kept */
  /* report: the note column */
  TP_CHECK_INT_EQ(tp_test_cli(&out, "report", dir, NULL), 0);
  g_free(out);
  char *csv = g_build_filename(dir, "summary.csv", NULL), *text = NULL;
  TP_ASSERT(g_file_get_contents(csv, &text, NULL, NULL));
  TP_CHECK(strstr(text, ",out of memory at batch 64: ran with batch 32\n") != NULL);
  g_free(text);
  /* started again: the fallback is remembered (skipped), strict fails again */
  a = sweep_args(sp, dir, NULL);
  rc = tp_test_cli_v(&out, env, (const char *const *)a->pdata);
  g_ptr_array_unref(a);
  TP_CHECK_INT_EQ(rc, 1);
  TP_CHECK(strstr(out, "[1/2] fallback: finished earlier, skipped") != NULL);
  g_free(out);
  g_free(csv);
  g_free(att);
  g_free(sj);
  g_free(rp);
  g_free(dir);
  g_free(sp);
}
