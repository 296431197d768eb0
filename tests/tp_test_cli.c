/* tests/tp_test_cli.c — running the built `tensorplug` command from tests. */
#include <stdarg.h>
#include <sys/wait.h>

#include "tp_test.h"

int tp_test_run_cli(char **out, const char *first, ...) {
  GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(argv, g_build_filename(tp_test_build_dir(), "cli", "tensorplug", NULL));
  va_list ap;
  va_start(ap, first);
  for (const char *a = first; a; a = va_arg(ap, const char *)) g_ptr_array_add(argv, g_strdup(a));
  va_end(ap);
  g_ptr_array_add(argv, NULL);
  char *so = NULL, *se = NULL;
  int status = -1;
  GError *err = NULL;
  if (!g_spawn_sync(NULL, (char **)argv->pdata, NULL, 0, NULL, NULL, &so, &se, &status, &err)) {
    TP_FAILF("spawn: %s", err->message);
    g_clear_error(&err);
  }
  if (out) *out = g_strconcat(so ? so : "", se ? se : "", NULL);
  g_free(so);
  g_free(se);
  g_ptr_array_unref(argv);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
