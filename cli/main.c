/* cli/main.c — `tensorplug SUBCOMMAND [OPTIONS]`: dispatch and global flags. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

typedef struct command {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
} command;

static const command commands[] = {
    {"train", tp_cmd_train, "fine-tune a model on a labelled text dataset"},
    {"eval", tp_cmd_eval, "accuracy, F1 and confusion matrix of a model on a dataset"},
    {"predict", tp_cmd_predict, "label texts with a fine-tuned model"},
    {"sweep", tp_cmd_sweep, "run an experiment spec: many train runs, resumable, shardable"},
    {"report", tp_cmd_report, "tables, plots and the homework's answers from run folders"},
    {"tokenize", tp_cmd_tokenize, "print the token ids a model sees for texts"},
    {"bench", tp_cmd_bench, "measure tokenizer and training speed"},
    {"plugins", tp_cmd_plugins, "list backend and model plugins, their devices and presets"},
};

static void usage(FILE *f) {
  fprintf(f, "Usage: tensorplug COMMAND [OPTIONS]\n\nCommands:\n");
  for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
    fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf(f, "\nGlobal options:\n  --version  print the version\n  --help     this text\n\n"
             "Run `tensorplug COMMAND --help` for a command's options.\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return TP_EXIT_USAGE;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
    printf("tensorplug %s\n", TP_VERSION);
    return TP_EXIT_OK;
  }
  if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
    usage(stdout);
    return TP_EXIT_OK;
  }
  for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
    if (strcmp(cmd, commands[i].name) != 0) continue;
    /* argv[0] becomes "tensorplug NAME" so GOption's help reads right */
    char *prog = g_strdup_printf("tensorplug %s", cmd);
    char **sub = g_new0(char *, argc);
    sub[0] = prog;
    for (int j = 2; j < argc; j++) sub[j - 1] = argv[j];
    g_set_prgname(prog);
    int rc = commands[i].run(argc - 1, sub);
    g_free(sub);
    g_free(prog);
    return rc;
  }
  fprintf(stderr, "tensorplug: unknown command \"%s\"\n\n", cmd);
  usage(stderr);
  return TP_EXIT_USAGE;
}
