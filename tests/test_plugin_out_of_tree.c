/* tests/test_plugin_out_of_tree.c — "a preset really is a plugin".
 *
 * Installs this build into a staging folder (meson install --destdir), builds
 * examples/plugin-meanpool/distilbert_meanpool.c in a folder of its own with
 * nothing but `pkg-config --cflags --libs tensorplug` pointed at the staged
 * tensorplug.pc, then drives the build tree's `tensorplug` with
 * TENSORPLUG_PLUGIN_PATH naming that folder: the plugin is listed with its
 * preset, trains for two epochs, saves a model folder whose config.json names
 * its model_type, and that folder predicts. Neither core nor any other plugin
 * knows the model: everything it needs must come through the install. */
#include <json-glib/json-glib.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "tp_test.h"

#define PLUGIN_SO "libtp_model_distilbert_meanpool.so"
#define PLUGIN_SRC "distilbert_meanpool.c"

/* ---- running commands ---- */

typedef struct cmd_result {
  int status; /* exit status, or -1 when it did not exit normally or could not start */
  char *out;  /* stdout then stderr, for failure messages */
  char *stdout_only;
} cmd_result;

static void cmd_result_clear(cmd_result *r) {
  g_free(r->out);
  g_free(r->stdout_only);
  memset(r, 0, sizeof *r);
}

static cmd_result run_cmd(const char *const *argv, char **envp, const char *cwd) {
  cmd_result r = {.status = -1};
  char *out = NULL, *errs = NULL;
  int wait_status = 0;
  GError *err = NULL;
  if (!g_spawn_sync(cwd, (char **)argv, envp, G_SPAWN_DEFAULT, NULL, NULL, &out, &errs,
                    &wait_status, &err)) {
    r.out = g_strdup_printf("cannot run %s: %s", argv[0], err->message);
    r.stdout_only = g_strdup("");
    g_clear_error(&err);
    return r;
  }
  if (WIFEXITED(wait_status)) r.status = WEXITSTATUS(wait_status);
  r.out = g_strdup_printf("%s%s", out ? out : "", errs ? errs : "");
  r.stdout_only = out ? out : g_strdup("");
  g_free(errs);
  return r;
}

static char *joined(const char *const *argv) { return g_strjoinv(" ", (char **)argv); }

/* ---- the staged install and the plugin built against it (done once) ---- */

typedef struct stage {
  bool tried, ok;
  char *root;        /* the test's temporary folder */
  char *destdir;     /* root/stage: meson install --destdir */
  char *pc_dir;      /* the folder of the staged tensorplug.pc */
  char *includedir;  /* staged includedir, canonical */
  char **cflags;     /* pkg-config --cflags tensorplug, split */
  char **libs;       /* pkg-config --libs tensorplug, split */
  char *plugin_dir;  /* the folder holding only the built plugin */
  char *tensorplug;  /* the build tree's CLI */
  char **env;        /* environment with TENSORPLUG_PLUGIN_PATH = plugin_dir */
} stage;

static stage g_stage;

/* realpath(), or a copy of p when it does not exist. */
static char *canonical(const char *p) {
  char *r = realpath(p, NULL);
  char *c = g_strdup(r ? r : p);
  free(r);
  return c;
}

static bool path_is_under(const char *path, const char *dir) {
  char *p = canonical(path), *d = canonical(dir);
  size_t n = strlen(d);
  bool under = strncmp(p, d, n) == 0 && (p[n] == '/' || p[n] == '\0');
  g_free(p);
  g_free(d);
  return under;
}

/* The first file called `name` below dir (depth first), or NULL. */
static char *find_file(const char *dir, const char *name) {
  GDir *d = g_dir_open(dir, 0, NULL);
  if (!d) return NULL;
  char *found = NULL;
  const char *e;
  while (!found && (e = g_dir_read_name(d))) {
    char *p = g_build_filename(dir, e, NULL);
    if (strcmp(e, name) == 0 && g_file_test(p, G_FILE_TEST_IS_REGULAR))
      found = g_strdup(p);
    else if (g_file_test(p, G_FILE_TEST_IS_DIR) && !g_file_test(p, G_FILE_TEST_IS_SYMLINK))
      found = find_file(p, name);
    g_free(p);
  }
  g_dir_close(d);
  return found;
}

static bool copy_file(const char *src, const char *dst) {
  char *data = NULL;
  gsize len = 0;
  bool ok = g_file_get_contents(src, &data, &len, NULL) &&
            g_file_set_contents(dst, data, (gssize)len, NULL);
  g_free(data);
  if (!ok) TP_FAILF("cannot copy %s to %s", src, dst);
  return ok;
}

/* Runs pkg-config with PKG_CONFIG_PATH = the staged pkgconfig folder. */
static char *pkg_config(const char *pkgconf, char **env, const char *what) {
  const char *argv[] = {pkgconf, what, "tensorplug", NULL};
  cmd_result r = run_cmd(argv, env, NULL);
  char *out = NULL;
  if (r.status == 0) out = g_strstrip(g_strdup(r.stdout_only));
  else TP_FAILF("pkg-config %s tensorplug failed (%d): %s", what, r.status, r.out);
  cmd_result_clear(&r);
  return out;
}

static bool stage_install(stage *s) {
  /* $MESON names another meson (e.g. a pip-installed one outside PATH). */
  const char *meson = g_getenv("MESON");
  char *meson_path = g_find_program_in_path(meson && *meson ? meson : "meson");
  if (!meson_path) {
    TP_FAILF("meson is not in PATH: it is needed to stage the install");
    return false;
  }
  /* --no-rebuild: the test runs from `meson test`, which has built everything,
   * and a rebuild from inside a test would race the other tests. */
  const char *argv[] = {meson_path, "install", "-C", tp_test_build_dir(), "--destdir",
                        s->destdir, "--no-rebuild", "--quiet", NULL};
  cmd_result r = run_cmd(argv, NULL, NULL);
  bool ok = r.status == 0;
  if (!ok) {
    char *cmd = joined(argv);
    TP_FAILF("`%s` failed (%d):\n%s", cmd, r.status, r.out);
    g_free(cmd);
  }
  cmd_result_clear(&r);
  g_free(meson_path);
  if (!ok) return false;
  char *pc = find_file(s->destdir, "tensorplug.pc");
  if (!pc) {
    TP_FAILF("the install under %s has no tensorplug.pc", s->destdir);
    return false;
  }
  s->pc_dir = g_path_get_dirname(pc);
  g_free(pc);
  return true;
}

/* cflags/libs from the staged .pc; the tensorplug -I must lie in the stage,
 * and no flag may name the source or build tree. */
static bool stage_flags(stage *s, const char *pkgconf, char **env) {
  char *cflags = pkg_config(pkgconf, env, "--cflags");
  char *libs = pkg_config(pkgconf, env, "--libs");
  char *inc = pkg_config(pkgconf, env, "--variable=includedir");
  bool ok = cflags && libs && inc;
  GError *err = NULL;
  if (ok && (!g_shell_parse_argv(cflags, NULL, &s->cflags, &err) ||
             !g_shell_parse_argv(libs, NULL, &s->libs, &err))) {
    TP_FAILF("cannot split pkg-config output \"%s\" / \"%s\": %s", cflags, libs, err->message);
    g_clear_error(&err);
    ok = false;
  }
  if (ok) {
    s->includedir = canonical(inc);
    if (!path_is_under(s->includedir, s->destdir)) {
      TP_FAILF("the staged tensorplug.pc's includedir %s is outside the stage %s: the .pc is "
               "not relocatable", s->includedir, s->destdir);
      ok = false;
    }
  }
  bool tp_include_seen = false;
  for (char **f = ok ? s->cflags : NULL; f && *f; f++) {
    if (!g_str_has_prefix(*f, "-I")) continue;
    const char *dir = *f + 2;
    if (path_is_under(dir, tp_test_source_dir()) || path_is_under(dir, tp_test_build_dir())) {
      TP_FAILF("pkg-config gives %s, inside the source or build tree", *f);
      ok = false;
    }
    char *plugin_h = g_build_filename(dir, "tensorplug", "plugin.h", NULL);
    if (g_file_test(plugin_h, G_FILE_TEST_EXISTS)) {
      /* The only folder with tensorplug headers must be the staged one. */
      if (!path_is_under(dir, s->destdir)) {
        TP_FAILF("pkg-config gives %s, which holds tensorplug headers outside the stage %s", *f,
                 s->destdir);
        ok = false;
      }
      tp_include_seen = true;
    }
    g_free(plugin_h);
  }
  if (ok && !tp_include_seen) {
    TP_FAILF("no -I flag of `pkg-config --cflags tensorplug` (%s) holds tensorplug/plugin.h",
             cflags);
    ok = false;
  }
  bool libdir_seen = false;
  for (char **f = ok ? s->libs : NULL; f && *f; f++)
    if (g_str_has_prefix(*f, "-L") && path_is_under(*f + 2, s->destdir)) libdir_seen = true;
  if (ok && !libdir_seen) {
    TP_FAILF("`pkg-config --libs tensorplug` (%s) has no -L into the stage %s", libs, s->destdir);
    ok = false;
  }
  g_free(cflags);
  g_free(libs);
  g_free(inc);
  return ok;
}

/* cc -shared -fPIC $(pkg-config --cflags --libs tensorplug), run in a folder
 * holding only a copy of the source, so nothing of the tree can be found. */
static bool stage_compile(stage *s, const char *cc) {
  char *src_dir = g_build_filename(s->root, "src", NULL);
  s->plugin_dir = g_build_filename(s->root, "plugins", NULL);
  g_mkdir_with_parents(src_dir, 0755);
  g_mkdir_with_parents(s->plugin_dir, 0755);
  char *from = g_build_filename(tp_test_source_dir(), "examples", "plugin-meanpool", PLUGIN_SRC,
                                NULL);
  char *to = g_build_filename(src_dir, PLUGIN_SRC, NULL);
  char *so = g_build_filename(s->plugin_dir, PLUGIN_SO, NULL);
  bool ok = copy_file(from, to);
  GPtrArray *argv = g_ptr_array_new();
  const char *pre[] = {cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-fPIC",
                       "-fvisibility=hidden", "-shared", "-o", so, PLUGIN_SRC};
  for (size_t i = 0; i < G_N_ELEMENTS(pre); i++) g_ptr_array_add(argv, (gpointer)pre[i]);
  for (char **f = s->cflags; f && *f; f++) g_ptr_array_add(argv, *f);
  for (char **f = s->libs; f && *f; f++) g_ptr_array_add(argv, *f);
  g_ptr_array_add(argv, NULL);
  if (ok) {
    cmd_result r = run_cmd((const char *const *)argv->pdata, NULL, src_dir);
    if (r.status != 0 || !g_file_test(so, G_FILE_TEST_IS_REGULAR)) {
      char *cmd = joined((const char *const *)argv->pdata);
      TP_FAILF("compiling the out-of-tree plugin failed (%d):\n%s\n%s", r.status, cmd, r.out);
      g_free(cmd);
      ok = false;
    }
    cmd_result_clear(&r);
  }
  g_ptr_array_unref(argv);
  g_free(from);
  g_free(to);
  g_free(so);
  g_free(src_dir);
  return ok;
}

/* Everything the other tests need, done once; FALSE (with the failure
 * recorded) when any step failed. Sets *skip when the tools are missing. */
static bool get_stage(bool *skip) {
  stage *s = &g_stage;
  *skip = false;
  char *cc = g_find_program_in_path("cc");
  char *pkgconf = g_find_program_in_path("pkg-config");
  if (!cc || !pkgconf) {
    g_free(cc);
    g_free(pkgconf);
    *skip = true;
    return false;
  }
  if (s->tried) {
    g_free(cc);
    g_free(pkgconf);
    if (!s->ok) TP_FAILF("staging the install or building the plugin failed (see the first test)");
    return s->ok;
  }
  s->tried = true;
  s->root = tp_test_tmpdir();
  s->destdir = g_build_filename(s->root, "stage", NULL);
  s->tensorplug = g_build_filename(tp_test_build_dir(), "cli", "tensorplug", NULL);
  bool ok = stage_install(s);
  char **pc_env = NULL;
  if (ok) {
    pc_env = g_get_environ();
    pc_env = g_environ_setenv(pc_env, "PKG_CONFIG_PATH", s->pc_dir, TRUE);
    /* A sysroot would be prepended to every path and hide what is tested. */
    pc_env = g_environ_unsetenv(pc_env, "PKG_CONFIG_SYSROOT_DIR");
    ok = stage_flags(s, pkgconf, pc_env);
  }
  ok = ok && stage_compile(s, cc);
  if (ok) {
    s->env = g_get_environ();
    s->env = g_environ_setenv(s->env, "TENSORPLUG_PLUGIN_PATH", s->plugin_dir, TRUE);
  }
  g_strfreev(pc_env);
  g_free(cc);
  g_free(pkgconf);
  s->ok = ok;
  return ok;
}

#define NEED_STAGE()                                                         \
  do {                                                                       \
    bool skip_ = false;                                                      \
    if (!get_stage(&skip_)) {                                                \
      if (skip_) TP_SKIP("cc or pkg-config is not installed");               \
      return;                                                                \
    }                                                                        \
  } while (0)

/* ---- the tests ---- */

/* Every public header of core and of the plugin ABI is installed, so a
 * plugin needs nothing from the source tree. */
TP_TEST(PluginOutOfTree, InstallHasEveryPublicHeader) {
  NEED_STAGE();
  const char *dirs[] = {"core/include/tensorplug", "plugins/include/tensorplug"};
  int n = 0;
  for (size_t i = 0; i < G_N_ELEMENTS(dirs); i++) {
    char *src = g_build_filename(tp_test_source_dir(), dirs[i], NULL);
    GDir *d = g_dir_open(src, 0, NULL);
    TP_CHECK(d != NULL);
    const char *e;
    while (d && (e = g_dir_read_name(d))) {
      if (!g_str_has_suffix(e, ".h")) continue;
      char *inst = g_build_filename(g_stage.includedir, "tensorplug", e, NULL);
      if (!g_file_test(inst, G_FILE_TEST_IS_REGULAR))
        TP_FAILF("%s/%s is not installed (no %s)", dirs[i], e, inst);
      g_free(inst);
      n++;
    }
    if (d) g_dir_close(d);
    g_free(src);
  }
  TP_CHECK(n >= 3);
  /* The ones a model plugin includes, by name. */
  const char *need[] = {"plugin.h", "backend_iface.h", "model.h", "ops.h", "error.h"};
  for (size_t i = 0; i < G_N_ELEMENTS(need); i++) {
    char *inst = g_build_filename(g_stage.includedir, "tensorplug", need[i], NULL);
    if (!g_file_test(inst, G_FILE_TEST_IS_REGULAR)) TP_FAILF("%s is not installed", inst);
    g_free(inst);
  }
}

/* `tensorplug plugins --json` lists it, loaded, from the folder named by
 * TENSORPLUG_PLUGIN_PATH, with its model_type and preset. */
TP_TEST(PluginOutOfTree, ListedAsLoadedWithItsPreset) {
  NEED_STAGE();
  const char *argv[] = {g_stage.tensorplug, "plugins", "--json", NULL};
  cmd_result r = run_cmd(argv, g_stage.env, g_stage.root);
  TP_CHECK_INT_EQ(r.status, 0);
  JsonParser *parser = json_parser_new();
  GError *err = NULL;
  bool parsed = json_parser_load_from_data(parser, r.stdout_only, -1, &err);
  if (!parsed) {
    TP_FAILF("`tensorplug plugins --json` output is not JSON (%s):\n%s", err->message, r.out);
    g_clear_error(&err);
  }
  JsonNode *root = parsed ? json_parser_get_root(parser) : NULL;
  JsonObject *o = root && JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
  JsonArray *plugins = o && json_object_has_member(o, "plugins")
                           ? json_object_get_array_member(o, "plugins") : NULL;
  JsonArray *folders = o && json_object_has_member(o, "folders")
                           ? json_object_get_array_member(o, "folders") : NULL;
  TP_CHECK(plugins != NULL);
  /* The plugin path comes first in the search order. */
  TP_CHECK(folders && json_array_get_length(folders) > 0 &&
           g_strcmp0(json_array_get_string_element(folders, 0), g_stage.plugin_dir) == 0);
  JsonObject *mine = NULL;
  for (guint i = 0; plugins && i < json_array_get_length(plugins); i++) {
    JsonObject *p = json_array_get_object_element(plugins, i);
    if (g_strcmp0(json_object_get_string_member_with_default(p, "name", ""),
                  "distilbert_meanpool") == 0)
      mine = p;
  }
  if (!mine) TP_FAILF("distilbert_meanpool is not listed:\n%s", r.out);
  if (mine) {
    TP_CHECK(json_object_get_boolean_member_with_default(mine, "loaded", FALSE));
    TP_CHECK_STR_EQ(json_object_get_string_member_with_default(mine, "kind", ""), "model");
    TP_CHECK_STR_EQ(json_object_get_string_member_with_default(mine, "model_type", ""),
                    "distilbert_meanpool");
    TP_CHECK(path_is_under(json_object_get_string_member_with_default(mine, "path", "/nowhere"),
                           g_stage.plugin_dir));
    JsonArray *presets = json_object_has_member(mine, "presets")
                             ? json_object_get_array_member(mine, "presets") : NULL;
    bool has_preset = false;
    for (guint i = 0; presets && i < json_array_get_length(presets); i++)
      has_preset = has_preset ||
                   g_strcmp0(json_array_get_string_element(presets, i), "distilbert-meanpool") == 0;
    TP_CHECK(has_preset);
  }
  /* The in-tree presets still load beside it: it changed nothing of theirs. */
  bool distilbert = false;
  for (guint i = 0; plugins && i < json_array_get_length(plugins); i++) {
    JsonObject *p = json_array_get_object_element(plugins, i);
    if (g_strcmp0(json_object_get_string_member_with_default(p, "name", ""), "distilbert") == 0)
      distilbert = json_object_get_boolean_member_with_default(p, "loaded", FALSE);
  }
  TP_CHECK(distilbert);
  g_object_unref(parser);
  cmd_result_clear(&r);
}

/* ~60 labelled texts, two easy classes. */
static char *write_data(const char *dir) {
  static const char *const pos[] = {"a wonderful film", "great acting and a moving story",
                                    "i loved every minute of it", "brilliant, funny and warm",
                                    "a delight from start to end", "superb direction and music"};
  static const char *const neg[] = {"a terrible film", "boring and far too long",
                                    "i hated every minute of it", "awful acting, flat jokes",
                                    "a waste of an evening", "dull, predictable and loud"};
  GString *s = g_string_new(NULL);
  for (int i = 0; i < 60; i++) {
    int label = i % 2;
    const char *t = (label ? pos : neg)[(i / 2) % 6];
    g_string_append_printf(s, "{\"id\": %d, \"text\": \"%s, take %d\", \"label\": %d}\n", i, t,
                           i, label);
  }
  char *path = g_build_filename(dir, "reviews.jsonl", NULL);
  if (!g_file_set_contents(path, s->str, (gssize)s->len, NULL)) TP_FAILF("cannot write %s", path);
  g_string_free(s, TRUE);
  return path;
}

static JsonNode *load_json(const char *path) {
  JsonParser *p = json_parser_new();
  GError *err = NULL;
  JsonNode *n = NULL;
  if (json_parser_load_from_file(p, path, &err)) n = json_node_copy(json_parser_get_root(p));
  else TP_FAILF("%s: %s", path, err->message);
  g_clear_error(&err);
  g_object_unref(p);
  return n;
}

static bool member_finite(JsonObject *o, const char *key, double *v) {
  JsonNode *n = json_object_get_member(o, key);
  /* results.json writes a non-finite number as null. */
  if (!n || !JSON_NODE_HOLDS_VALUE(n)) return false;
  *v = json_node_get_double(n);
  return isfinite(*v);
}

/* One --json line of `tensorplug predict`: its logits into out[0..1]. */
static bool parse_prediction(const char *line, double out[2]) {
  JsonParser *p = json_parser_new();
  bool ok = json_parser_load_from_data(p, line, -1, NULL);
  JsonNode *root = ok ? json_parser_get_root(p) : NULL;
  ok = root && JSON_NODE_HOLDS_OBJECT(root);
  JsonObject *o = ok ? json_node_get_object(root) : NULL;
  JsonArray *logits = o && json_object_has_member(o, "logits")
                          ? json_object_get_array_member(o, "logits") : NULL;
  JsonArray *probs = o && json_object_has_member(o, "probs")
                         ? json_object_get_array_member(o, "probs") : NULL;
  ok = logits && probs && json_array_get_length(logits) == 2 && json_array_get_length(probs) == 2;
  if (ok) {
    double p0 = json_array_get_double_element(probs, 0);
    double p1 = json_array_get_double_element(probs, 1);
    out[0] = json_array_get_double_element(logits, 0);
    out[1] = json_array_get_double_element(logits, 1);
    ok = isfinite(out[0]) && isfinite(out[1]) && fabs(p0 + p1 - 1.0) < 1e-4;
    gint64 label = json_object_get_int_member_with_default(o, "label", -1);
    ok = ok && (label == 0 || label == 1);
  }
  g_object_unref(p);
  return ok;
}

TP_TEST(PluginOutOfTree, TrainsSavesAndPredicts) {
  NEED_STAGE();
  char *vocab = g_build_filename(tp_test_shared_dir(), "data", "bert-base-uncased", "vocab.txt",
                                 NULL);
  if (!g_file_test(vocab, G_FILE_TEST_IS_REGULAR)) {
    TP_FAILF("%s is missing (the shared references)", vocab);
    g_free(vocab);
    return;
  }
  char *data = write_data(g_stage.root);
  char *run = g_build_filename(g_stage.root, "run", NULL);
  const char *train[] = {g_stage.tensorplug, "train", "--model", "distilbert-meanpool",
                         "--init", "random", "--layers", "1", "--hidden", "32", "--heads", "2",
                         "--ffn", "64", "--vocab", vocab, "--data", data, "--max-len", "32",
                         "--batch", "8", "--epochs", "2", "--lr", "1e-3", "--out", run, NULL};
  cmd_result r = run_cmd(train, g_stage.env, g_stage.root);
  if (r.status != 0) TP_FAILF("tensorplug train exited %d:\n%s", r.status, r.out);
  cmd_result_clear(&r);

  /* results.json: two epochs of finite losses. */
  char *results = g_build_filename(run, "results.json", NULL);
  JsonNode *res = g_file_test(results, G_FILE_TEST_IS_REGULAR) ? load_json(results) : NULL;
  if (!res) TP_FAILF("no readable %s", results);
  JsonObject *ro = res && JSON_NODE_HOLDS_OBJECT(res) ? json_node_get_object(res) : NULL;
  JsonArray *hist = ro && json_object_has_member(ro, "history")
                        ? json_object_get_array_member(ro, "history") : NULL;
  TP_CHECK(hist != NULL);
  if (hist) {
    TP_CHECK_INT_EQ(json_array_get_length(hist), 2);
    for (guint i = 0; i < json_array_get_length(hist); i++) {
      JsonObject *e = json_array_get_object_element(hist, i);
      double loss = NAN, val_loss = NAN;
      if (!member_finite(e, "loss", &loss) || !member_finite(e, "val_loss", &val_loss))
        TP_FAILF("epoch %u: loss or val_loss is not a finite number", i + 1);
      /* Two balanced classes from random init: about ln 2, never 0 or huge. */
      TP_CHECK(loss > 0.0 && loss < 5.0);
      TP_CHECK_INT_EQ(json_object_get_int_member_with_default(e, "epoch", -1), (gint64)i + 1);
      TP_CHECK(json_object_get_int_member_with_default(e, "steps", 0) > 0);
    }
  }

  /* The saved model folder names the plugin's model_type. */
  char *model = g_build_filename(run, "model", NULL);
  char *config = g_build_filename(model, "config.json", NULL);
  char *weights = g_build_filename(model, "model.safetensors", NULL);
  TP_CHECK(g_file_test(weights, G_FILE_TEST_IS_REGULAR));
  JsonNode *cfg = g_file_test(config, G_FILE_TEST_IS_REGULAR) ? load_json(config) : NULL;
  if (!cfg) TP_FAILF("no readable %s", config);
  if (cfg && JSON_NODE_HOLDS_OBJECT(cfg)) {
    JsonObject *co = json_node_get_object(cfg);
    TP_CHECK_STR_EQ(json_object_get_string_member_with_default(co, "model_type", ""),
                    "distilbert_meanpool");
    TP_CHECK_INT_EQ(json_object_get_int_member_with_default(co, "dim", 0), 32);
    TP_CHECK_INT_EQ(json_object_get_int_member_with_default(co, "n_layers", 0), 1);
  }

  /* predict from the saved folder: config.json's model_type finds the plugin. */
  const char *predict1[] = {g_stage.tensorplug, "predict", "--model", model, "--json", "a text",
                            NULL};
  r = run_cmd(predict1, g_stage.env, g_stage.root);
  double solo[2] = {NAN, NAN};
  if (r.status != 0) TP_FAILF("tensorplug predict exited %d:\n%s", r.status, r.out);
  else if (!parse_prediction(r.stdout_only, solo))
    TP_FAILF("tensorplug predict --json printed no valid prediction:\n%s", r.out);
  cmd_result_clear(&r);

  /* Batched beside a longer text, "a text" is padded: a masked mean must
   * ignore the padding, so its logits do not move. */
  const char *predict2[] = {g_stage.tensorplug, "predict", "--model", model, "--json", "a text",
                            "a much longer text, with many more words in it, so that the first "
                            "one gets padded to its length",
                            NULL};
  r = run_cmd(predict2, g_stage.env, g_stage.root);
  if (r.status != 0) {
    TP_FAILF("tensorplug predict (two texts) exited %d:\n%s", r.status, r.out);
  } else {
    char **lines = g_strsplit(g_strstrip(r.stdout_only), "\n", -1);
    double padded[2] = {NAN, NAN}, other[2];
    TP_CHECK_INT_EQ(g_strv_length(lines), 2);
    if (g_strv_length(lines) == 2) {
      TP_CHECK(parse_prediction(lines[0], padded));
      TP_CHECK(parse_prediction(lines[1], other));
      TP_CHECK_NEAR(padded[0], solo[0], 1e-5);
      TP_CHECK_NEAR(padded[1], solo[1], 1e-5);
    }
    g_strfreev(lines);
  }
  cmd_result_clear(&r);

  if (res) json_node_unref(res);
  if (cfg) json_node_unref(cfg);
  g_free(results);
  g_free(model);
  g_free(config);
  g_free(weights);
  g_free(run);
  g_free(data);
  g_free(vocab);
}
