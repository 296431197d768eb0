/* tests/tp_test_cli.c — see tp_test_cli.h. */
#include "tp_test_cli.h"

#include <stdarg.h>
#include <sys/wait.h>

#include "tp_test.h"

char *tp_test_cli_exe(void) {
  return g_build_filename(tp_test_build_dir(), "cli", "tensorplug", NULL);
}

int tp_test_cli_v(char **out, const char *const *env, const char *const *args) {
  GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(argv, tp_test_cli_exe());
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

int tp_test_cli(char **out, const char *first, ...) {
  GPtrArray *args = g_ptr_array_new();
  va_list ap;
  va_start(ap, first);
  for (const char *a = first; a; a = va_arg(ap, const char *)) g_ptr_array_add(args, (gpointer)a);
  va_end(ap);
  g_ptr_array_add(args, NULL);
  int rc = tp_test_cli_v(out, NULL, (const char *const *)args->pdata);
  g_ptr_array_unref(args);
  return rc;
}
