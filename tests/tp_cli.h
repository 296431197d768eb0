/* tests/tp_cli.h — running the tensorplug command from a test, and the tiny
 * fixtures of tests/data (a 1-layer BERT with a 64-token vocabulary, 48 short
 * labelled reviews) that make a full train/eval/predict run take a second. */
#pragma once
#include <stdarg.h>
#include <sys/wait.h>

#include <glib.h>

#include "tp_test.h"

static inline char *tp_cli_exe(void) {
  return g_build_filename(tp_test_build_dir(), "cli", "tensorplug", NULL);
}

/* tests/data/NAME in the source tree. */
static inline char *tp_cli_data(const char *name) {
  return g_build_filename(tp_test_source_dir(), "tests", "data", name, NULL);
}

/* Runs tensorplug with argv (NULL-terminated, without the program) and extra
 * environment entries "K=V" (env may be NULL); returns the exit status (128 +
 * signal when killed) and, when out != NULL, stdout followed by stderr. */
static inline int tp_cli_runv(char **out, const char *const *env, const char *const *args) {
  GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(argv, tp_cli_exe());
  for (const char *const *a = args; *a; a++) g_ptr_array_add(argv, g_strdup(*a));
  g_ptr_array_add(argv, NULL);
  char **envp = g_get_environ();
  for (const char *const *e = env; e && *e; e++) {
    char **kv = g_strsplit(*e, "=", 2);
    envp = g_environ_setenv(envp, kv[0], kv[1] ? kv[1] : "", TRUE);
    g_strfreev(kv);
  }
  char *so = NULL, *se = NULL;
  int status = -1;
  GError *err = NULL;
  if (!g_spawn_sync(NULL, (char **)argv->pdata, envp, 0, NULL, NULL, &so, &se, &status, &err)) {
    TP_FAILF("spawn: %s", err->message);
    g_clear_error(&err);
  }
  if (out) *out = g_strconcat(so ? so : "", se ? se : "", NULL);
  g_free(so);
  g_free(se);
  g_strfreev(envp);
  g_ptr_array_unref(argv);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static inline int tp_cli_run(char **out, const char *first, ...) {
  GPtrArray *a = g_ptr_array_new();
  va_list ap;
  va_start(ap, first);
  for (const char *s = first; s; s = va_arg(ap, const char *)) g_ptr_array_add(a, (gpointer)s);
  va_end(ap);
  g_ptr_array_add(a, NULL);
  int rc = tp_cli_runv(out, NULL, (const char *const *)a->pdata);
  g_ptr_array_free(a, TRUE);
  return rc;
}

static inline int tp_cli_run_env(char **out, const char *const *env, const char *first, ...) {
  GPtrArray *a = g_ptr_array_new();
  va_list ap;
  va_start(ap, first);
  for (const char *s = first; s; s = va_arg(ap, const char *)) g_ptr_array_add(a, (gpointer)s);
  va_end(ap);
  g_ptr_array_add(a, NULL);
  int rc = tp_cli_runv(out, env, (const char *const *)a->pdata);
  g_ptr_array_free(a, TRUE);
  return rc;
}

/* Exit status and message of a command that must fail: records a failure
 * naming the output when either differs. */
#define TP_CHECK_CLI_FAILS(rc, out, want_rc, part)                                          \
  do {                                                                                      \
    if ((rc) != (want_rc) || !strstr((out), (part)))                                        \
      TP_FAILF("expected exit %d and a message containing \"%s\"; got exit %d:\n%s",        \
               (want_rc), (part), (rc), (out));                                             \
  } while (0)
