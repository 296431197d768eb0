/* cli/cli_common.c — error reporting, option parsing, vocabulary lookup, peak memory. */
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "cli.h"
#include "tensorplug/error.h"

const char *tp_cli_error_code_name(const GError *err) {
  static const char *const names[] = {
      [TP_ERROR_INVALID_ARGUMENT] = "invalid_argument", [TP_ERROR_IO] = "io",
      [TP_ERROR_FORMAT] = "format",                     [TP_ERROR_PLUGIN] = "plugin",
      [TP_ERROR_UNAVAILABLE] = "unavailable",           [TP_ERROR_BACKEND] = "backend",
      [TP_ERROR_OUT_OF_MEMORY] = "out_of_memory",       [TP_ERROR_NON_FINITE] = "non_finite",
      [TP_ERROR_INTERRUPTED] = "interrupted",
  };
  if (err->domain == G_OPTION_ERROR) return "usage";
  if (err->domain == TP_ERROR && err->code >= 0 && (size_t)err->code < G_N_ELEMENTS(names) &&
      names[err->code])
    return names[err->code];
  return "other";
}

/* $TENSORPLUG_ERROR_JSON: where a parent process (tensorplug sweep) wants
 * the error as data: {"code": "out_of_memory", "message": ..., "exit": 1}. */
static void write_error_json(const GError *err, int rc) {
  const char *path = g_getenv("TENSORPLUG_ERROR_JSON");
  if (!path || !*path) return;
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "code");
  json_builder_add_string_value(b, tp_cli_error_code_name(err));
  json_builder_set_member_name(b, "message");
  json_builder_add_string_value(b, err->message);
  json_builder_set_member_name(b, "exit");
  json_builder_add_int_value(b, rc);
  json_builder_end_object(b);
  JsonNode *root = json_builder_get_root(b);
  GError *werr = NULL;
  if (!tp_cli_write_json(path, root, &werr)) {
    fprintf(stderr, "tensorplug: warning: cannot write $TENSORPLUG_ERROR_JSON: %s\n", werr->message);
    g_error_free(werr);
  }
  json_node_unref(root);
  g_object_unref(b);
}

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
  write_error_json(err, rc);
  g_error_free(err);
  return rc;
}

char *tp_cli_resolve_vocab(const char *vocab, const char *model, GError **err) {
  if (vocab) {
    if (!g_file_test(vocab, G_FILE_TEST_IS_REGULAR)) {
      g_set_error(err, TP_ERROR, TP_ERROR_IO, "--vocab %s: no such file", vocab);
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
    g_set_error(err, TP_ERROR, TP_ERROR_IO,
                "model folder %s has no vocab.txt or tokenizer.json: pass --vocab FILE", model);
    return NULL;
  }
  g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
              "no vocabulary: pass --vocab FILE (a vocab.txt or tokenizer.json)%s%s%s",
              model ? ", or a model folder holding one (\"" : "", model ? model : "",
              model ? "\" is a preset name, which carries no vocabulary)" : "");
  return NULL;
}

const char *tp_cli_json_str(JsonObject *o, const char *key, const char *fallback) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING)
    return fallback;
  return json_node_get_string(n);
}

uint64_t tp_cli_peak_rss_bytes(void) {
  /* VmHWM follows tp_cli_peak_rss_reset; ru_maxrss never goes down */
  char *status = NULL;
  uint64_t kib = 0;
  if (g_file_get_contents("/proc/self/status", &status, NULL, NULL)) {
    const char *hwm = strstr(status, "\nVmHWM:");
    if (hwm) kib = g_ascii_strtoull(hwm + 7, NULL, 10);
    g_free(status);
  }
  if (kib == 0) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) kib = (uint64_t)ru.ru_maxrss; /* Linux: KiB */
  }
  return kib * 1024u;
}

bool tp_cli_peak_rss_reset(void) {
  /* "5" resets the peak resident set size (Linux 4.0 and later) */
  FILE *f = fopen("/proc/self/clear_refs", "w");
  if (!f) return false;
  bool ok = fputs("5", f) >= 0;
  return fclose(f) == 0 && ok;
}
