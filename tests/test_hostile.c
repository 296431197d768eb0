/* tests/test_hostile.c — the hostile-input suite: one folder per case in
 * tests/hostile/, each a command a new user or an attacker might run, and
 * what tensorplug must answer (tests/hostile/README.md describes the
 * format). Each case is a GoogleTest test of its own, found at start-up. */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "tp_test.h"

typedef struct hostile_case {
  char *name, *dir;
} hostile_case;

static char *case_file(const hostile_case *c, const char *name) {
  char *p = g_build_filename(c->dir, name, NULL), *text = NULL;
  if (!g_file_get_contents(p, &text, NULL, NULL)) text = NULL;
  g_free(p);
  return text;
}

/* ${CASE} ${TMP} ${FIX} ${BUILD} ${BROKEN} ${SHARED} in s. */
static char *expand(const char *s, const hostile_case *c, const char *tmp) {
  char *fix = g_build_filename(tp_test_source_dir(), "tests", "data", NULL);
  const char *broken = g_getenv("TP_BROKEN_PLUGIN_DIR");
  const char *vars[][2] = {{"${CASE}", c->dir}, {"${TMP}", tmp}, {"${FIX}", fix},
                           {"${BUILD}", tp_test_build_dir()}, {"${BROKEN}", broken ? broken : ""},
                           {"${SHARED}", tp_test_shared_dir()}};
  GString *out = g_string_new(s);
  for (size_t i = 0; i < G_N_ELEMENTS(vars); i++) g_string_replace(out, vars[i][0], vars[i][1], 0);
  g_free(fix);
  return g_string_free(out, FALSE);
}

static char **case_env(const hostile_case *c, const char *tmp) {
  char **envp = g_get_environ();
  char *tp = g_build_filename(tp_test_build_dir(), "cli", "tensorplug", NULL);
  char *fix = g_build_filename(tp_test_source_dir(), "tests", "data", NULL);
  envp = g_environ_setenv(envp, "CASE", c->dir, TRUE);
  envp = g_environ_setenv(envp, "TMP", tmp, TRUE);
  envp = g_environ_setenv(envp, "FIX", fix, TRUE);
  envp = g_environ_setenv(envp, "TP", tp, TRUE);
  /* a cache of the case's own: cases never see each other's token ids */
  char *cache = g_build_filename(tmp, ".cache", NULL);
  envp = g_environ_setenv(envp, "TENSORPLUG_CACHE_DIR", cache, TRUE);
  char *text = case_file(c, "env");
  char **lines = g_strsplit(text ? text : "", "\n", -1);
  for (char **l = lines; *l; l++) {
    char *e = expand(g_strstrip(*l), c, tmp), *eq = strchr(e, '=');
    if (eq) {
      *eq = 0;
      envp = g_environ_setenv(envp, e, eq + 1, TRUE);
    }
    g_free(e);
  }
  g_strfreev(lines);
  g_free(text);
  g_free(cache);
  g_free(fix);
  g_free(tp);
  return envp;
}

/* Runs argv in tmp with at most `seconds`; returns the exit status (128 +
 * signal when killed; 124 after the time limit) and the output. */
static int run_limited(char **argv, char **envp, const char *tmp, const char *stdin_file,
                       int seconds, char **out) {
  GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(a, g_strdup("timeout"));
  g_ptr_array_add(a, g_strdup("-k"));
  g_ptr_array_add(a, g_strdup("5"));
  g_ptr_array_add(a, g_strdup_printf("%d", seconds));
  if (stdin_file) {
    /* sh reads stdin from the file for the command */
    g_ptr_array_add(a, g_strdup("sh"));
    g_ptr_array_add(a, g_strdup("-c"));
    g_ptr_array_add(a, g_strdup("exec \"$@\" < \"$TP_STDIN\""));
    g_ptr_array_add(a, g_strdup("sh"));
    envp = g_environ_setenv(g_strdupv(envp), "TP_STDIN", stdin_file, TRUE);
  } else {
    envp = g_strdupv(envp);
  }
  for (char **p = argv; *p; p++) g_ptr_array_add(a, g_strdup(*p));
  g_ptr_array_add(a, NULL);
  char *so = NULL, *se = NULL;
  int status = -1;
  GError *err = NULL;
  if (!g_spawn_sync(tmp, (char **)a->pdata, envp, G_SPAWN_SEARCH_PATH, NULL, NULL, &so, &se,
                    &status, &err)) {
    TP_FAILF("spawn: %s", err->message);
    g_clear_error(&err);
  }
  *out = g_strconcat(so ? so : "", se ? se : "", NULL);
  g_free(so);
  g_free(se);
  g_strfreev(envp);
  g_ptr_array_unref(a);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void run_case(const void *data) {
  const hostile_case *c = data;
  char *tmp = tp_test_tmpdir();
  char **envp = case_env(c, tmp);
  char *setup = g_build_filename(c->dir, "setup", NULL);
  if (g_file_test(setup, G_FILE_TEST_EXISTS)) {
    char *argv[] = {"sh", "-eu", setup, NULL}, *out = NULL;
    int rc = run_limited(argv, envp, tmp, NULL, 120, &out);
    if (rc != 0) TP_FAILF("%s: setup failed (exit %d):\n%s", c->name, rc, out);
    g_free(out);
  }
  char *cmd = case_file(c, "cmd"), *status_text = case_file(c, "status");
  char *message = case_file(c, "message");
  if (!cmd || !status_text || !message) {
    TP_FAILF("%s: a case needs the files cmd, status and message", c->name);
  } else {
    char *line = expand(g_strstrip(cmd), c, tmp), **args = NULL;
    GError *err = NULL;
    if (!g_shell_parse_argv(line, NULL, &args, &err)) {
      TP_FAILF("%s: cmd: %s", c->name, err->message);
      g_clear_error(&err);
    } else {
      GPtrArray *argv = g_ptr_array_new();
      char *tp = g_build_filename(tp_test_build_dir(), "cli", "tensorplug", NULL);
      g_ptr_array_add(argv, tp);
      for (char **p = args; *p; p++) g_ptr_array_add(argv, *p);
      g_ptr_array_add(argv, NULL);
      char *in = g_build_filename(c->dir, "stdin", NULL), *out = NULL;
      int rc = run_limited((char **)argv->pdata, envp, tmp,
                           g_file_test(in, G_FILE_TEST_EXISTS) ? in : NULL, 60, &out);
      int want = atoi(g_strstrip(status_text));
      if (rc != want)
        TP_FAILF("%s: `tensorplug %s` exited %d, expected %d:\n%s", c->name, line, rc, want, out);
      char **parts = g_strsplit(message, "\n", -1);
      for (char **p = parts; *p; p++) {
        char *part = expand(*p, c, tmp);
        if (*part && !strstr(out, part))
          TP_FAILF("%s: the output lacks \"%s\":\n%s", c->name, part, out);
        g_free(part);
      }
      /* whatever the case: no sanitizer report, no GLib critical or warning */
      static const char *const never[] = {"AddressSanitizer", "runtime error:", "CRITICAL",
                                          "-WARNING **", "Segmentation"};
      for (size_t i = 0; i < G_N_ELEMENTS(never); i++)
        if (strstr(out, never[i])) TP_FAILF("%s: the output holds \"%s\":\n%s", c->name, never[i], out);
      g_strfreev(parts);
      g_free(out);
      g_free(in);
      g_free(tp);
      g_ptr_array_free(argv, TRUE);
      g_strfreev(args);
    }
    g_free(line);
  }
  g_free(cmd);
  g_free(status_text);
  g_free(message);
  g_free(setup);
  g_strfreev(envp);
}

static gint cmp_names(gconstpointer a, gconstpointer b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One test per folder of tests/hostile (folders starting with '_' hold
 * shared inputs). */
__attribute__((constructor)) static void register_cases(void) {
  char *root = g_build_filename(tp_test_source_dir(), "tests", "hostile", NULL);
  GDir *d = g_dir_open(root, 0, NULL);
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  const char *n;
  while (d && (n = g_dir_read_name(d))) {
    char *p = g_build_filename(root, n, NULL);
    if (n[0] != '_' && g_file_test(p, G_FILE_TEST_IS_DIR)) g_ptr_array_add(names, g_strdup(n));
    g_free(p);
  }
  if (d) g_dir_close(d);
  g_ptr_array_sort(names, cmp_names);
  for (guint i = 0; i < names->len; i++) {
    hostile_case *c = g_new0(hostile_case, 1); /* lives as long as the process */
    const char *folder = g_ptr_array_index(names, i);
    c->dir = g_build_filename(root, folder, NULL);
    c->name = g_strdelimit(g_strdup_printf("c%s", folder), "-.", '_');
    tp_test_register_data("Hostile", c->name, run_case, c, __FILE__, __LINE__);
  }
  g_ptr_array_unref(names);
  g_free(root);
}

TP_TEST(Hostile, TheSuiteHoldsAtLeastSixtyCases) {
  char *root = g_build_filename(tp_test_source_dir(), "tests", "hostile", NULL);
  GDir *d = g_dir_open(root, 0, NULL);
  int count = 0;
  const char *n;
  while (d && (n = g_dir_read_name(d))) count += n[0] != '_' && strchr(n, '.') == NULL;
  if (d) g_dir_close(d);
  if (count < 60) TP_FAILF("%d cases in %s, the issue asks for at least 60", count, root);
  g_free(root);
}
