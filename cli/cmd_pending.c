/* cli/cmd_pending.c — TEMPORARY during development: replaced by cmd_train.c etc. */
#include <stdio.h>
#include "cli.h"
static int pending(const char *what) {
  fprintf(stderr, "tensorplug: %s is not built yet\n", what);
  return TP_EXIT_USAGE;
}
int tp_cmd_eval(int argc, char **argv) { (void)argc; (void)argv; return pending("eval"); }
int tp_cmd_predict(int argc, char **argv) { (void)argc; (void)argv; return pending("predict"); }
__attribute__((weak)) int tp_cmd_tokenize(int argc, char **argv) { (void)argc; (void)argv; return pending("tokenize"); }
__attribute__((weak)) int tp_cmd_bench(int argc, char **argv) { (void)argc; (void)argv; return pending("bench"); }
