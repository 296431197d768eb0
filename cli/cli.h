/* cli/cli.h — the `tensorplug` command: one function per subcommand
 * (cli/cmd_NAME.c), shared option handling in cli/cli_common.c.
 *
 * Exit statuses (DESIGN): 0 success; 1 the work failed (bad input file,
 * non-finite loss, out of memory); 2 bad usage or an unavailable request
 * (unknown flag, value out of range, backend not usable here); 130
 * interrupted by SIGINT after saving what can be resumed. */
#pragma once
#include <stdbool.h>
#include <glib.h>

enum { TP_EXIT_OK = 0, TP_EXIT_FAILED = 1, TP_EXIT_USAGE = 2, TP_EXIT_INTERRUPTED = 130 };

/* Each takes argv with argv[0] = "tensorplug SUBCOMMAND". */
int tp_cmd_plugins(int argc, char **argv);
int tp_cmd_tokenize(int argc, char **argv);
int tp_cmd_bench(int argc, char **argv);
int tp_cmd_train(int argc, char **argv);
int tp_cmd_eval(int argc, char **argv);
int tp_cmd_predict(int argc, char **argv);

/* Prints "tensorplug: error: MESSAGE" to stderr and returns the exit status
 * for err's code (usage/unavailable -> 2, interrupted -> 130, else 1). Frees err. */
int tp_cli_report(GError *err);
/* Parses options with a GOptionContext; on failure prints the error and
 * help hint and returns FALSE (exit 2). */
bool tp_cli_parse(GOptionContext *oc, int *argc, char ***argv);
/* Where the vocabulary comes from: --vocab FILE, else MODEL_DIR/vocab.txt or
 * tokenizer.json when model names a folder; NULL + error otherwise. */
char *tp_cli_resolve_vocab(const char *vocab, const char *model, GError **err);
