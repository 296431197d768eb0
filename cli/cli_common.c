/* cli/cli_common.c — error reporting, option parsing, vocabulary lookup. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "tensorplug/error.h"

int tp_cli_report(GError *err) {
  if (!err) return TP_EXIT_OK;
  fprintf(stderr, "tensorplug: error: %s\n", err->message);
  int rc = TP_EXIT_FAILED;
  if (err->domain == G_OPTION_ERROR) rc = TP_EXIT_USAGE;
  else if (err->domain == TP_ERROR) {
    if (err->code == TP_ERROR_INVALID_ARGUMENT || err->code == TP_ERROR_UNAVAILABLE)
      rc = TP_EXIT_USAGE;
    else if (err->code == TP_ERROR_INTERRUPTED)
      rc = TP_EXIT_INTERRUPTED;
  }
  g_error_free(err);
  return rc;
}

bool tp_cli_parse(GOptionContext *oc, int *argc, char ***argv) {
  GError *err = NULL;
  if (!g_option_context_parse(oc, argc, argv, &err)) {
    fprintf(stderr, "tensorplug: error: %s\nRun `%s --help` for the options.\n", err->message,
            g_get_prgname());
    g_error_free(err);
    return false;
  }
  return true;
}

char *tp_cli_resolve_vocab(const char *vocab, const char *model, GError **err) {
  if (vocab) {
    if (!g_file_test(vocab, G_FILE_TEST_IS_REGULAR)) {
      g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "--vocab %s: no such file", vocab);
      return NULL;
    }
    return g_strdup(vocab);
  }
  if (model && g_file_test(model, G_FILE_TEST_IS_DIR)) {
    /* tokenizer.json first: it is what HF's AutoTokenizer reads, and it says
     * more than vocab.txt (the post-processor's special tokens, added tokens
     * matched after normalization, such as MPNet's <unk>). */
    static const char *const names[] = {"tokenizer.json", "vocab.txt"};
    for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
      char *p = g_build_filename(model, names[i], NULL);
      if (g_file_test(p, G_FILE_TEST_IS_REGULAR)) return p;
      g_free(p);
    }
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                "model folder %s has no vocab.txt or tokenizer.json: pass --vocab FILE", model);
    return NULL;
  }
  g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
              "no vocabulary: pass --vocab FILE (a vocab.txt or tokenizer.json)%s%s%s",
              model ? ", or a model folder holding one (\"" : "", model ? model : "",
              model ? "\" is a preset name, which carries no vocabulary)" : "");
  return NULL;
}
