/* tests/tp_test_cli.h — running the built `tensorplug` binary from a test. */
#pragma once
#include <glib.h>

/* build/cli/tensorplug (g_free it). */
char *tp_test_cli_exe(void);
/* Runs `tensorplug ARGS...` (NULL-terminated) and returns its exit status
 * (128 + signal when killed); *out (if given) gets stdout then stderr. */
int tp_test_cli(char **out, const char *first, ...) G_GNUC_NULL_TERMINATED;
/* The same with extra environment entries ("NAME=VALUE", NULL-terminated)
 * and the arguments as a vector. */
int tp_test_cli_v(char **out, const char *const *env, const char *const *args);
