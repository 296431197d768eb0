/* cli/cli.h — the `tensorplug` command: one function per subcommand
 * (cli/cmd_NAME.c); options declared once in cli/cli_options.c; error
 * reporting in cli/cli_common.c.
 *
 * Exit statuses (DESIGN): 0 success; 1 the work failed (bad input file,
 * non-finite loss, out of memory); 2 bad usage or an unavailable request
 * (unknown flag, value out of range, backend not usable here); 130
 * interrupted by SIGINT after saving what can be resumed. */
#pragma once
#include <stdbool.h>
#include <glib.h>

#include "cli_options.h"

enum { TP_EXIT_OK = 0, TP_EXIT_FAILED = 1, TP_EXIT_USAGE = 2, TP_EXIT_INTERRUPTED = 130 };

/* Each takes argv with argv[0] = "tensorplug SUBCOMMAND". */
int tp_cmd_plugins(int argc, char **argv);
int tp_cmd_tokenize(int argc, char **argv);
int tp_cmd_bench(int argc, char **argv);
int tp_cmd_train(int argc, char **argv);
int tp_cmd_eval(int argc, char **argv);
int tp_cmd_predict(int argc, char **argv);

/* For sweep: parse and validate train's options (argv[0] = program name;
 * argv's array is reordered by the parser) without running anything. */
bool tp_cmd_train_check_args(int argc, char **argv, GError **err);
/* train's option row named name ("max-len"), or NULL. */
const tp_cli_opt *tp_cmd_train_find_option(const char *name);
/* The default of one of train's own numeric options ("batch" -> "8"), or NULL. */
char *tp_cmd_train_default_text(const char *name);
int tp_cmd_sweep(int argc, char **argv);
int tp_cmd_report(int argc, char **argv);

/* Prints "tensorplug: error: MESSAGE" to stderr and returns the exit status
 * for err's code (usage/unavailable -> 2, interrupted -> 130, else 1). Frees err. */
int tp_cli_report(GError *err);
/* The error's kind as a word: "out_of_memory", "interrupted", "usage", ... */
const char *tp_cli_error_code_name(const GError *err);
/* Where the vocabulary comes from: --vocab FILE, else MODEL_DIR/vocab.txt or
 * tokenizer.json when model names a folder; NULL + error otherwise. */
char *tp_cli_resolve_vocab(const char *vocab, const char *model, GError **err);

/* ---- options shared by the commands that build a model ---- */
#include "tensorplug/backend.h"
#include "tensorplug/model.h"
#include "tensorplug/tokenizer.h"
#include "tensorplug/train.h"

/* Everything a model command needs, opened in order: backend, context,
 * tokenizer, model (weights loaded or randomly initialised). */
typedef struct tp_cli_session {
  tp_backend *be;
  tp_ctx *ctx;
  tp_tokenizer *tok;
  char *vocab_path;
  char *model_dir;    /* folder the model came from, or NULL */
  char *weights_path; /* NULL for random init */
  tp_model *model;
  tp_load_report load;
} tp_cli_session;

/* need_vocab: fail without a vocabulary. Prints nothing. */
bool tp_cli_session_open(tp_cli_session *s, const tp_cli_model_opts *mo,
                         const tp_cli_run_opts *ro, uint64_t seed, bool need_vocab, GError **err);
void tp_cli_session_close(tp_cli_session *s);
/* For eval/predict: warns on stderr when the weights lacked the task head
 * (it was initialised randomly, so outputs mean nothing yet). */
void tp_cli_warn_untrained_head(const tp_cli_session *s);
/* One line for humans: "model bert (6 layers, hidden 384, ...): 22,713,986 parameters, weights from ..." */
char *tp_cli_session_describe(const tp_cli_session *s);

/* Token ids of every record of texts, truncated to max_len, from the cache
 * ($TENSORPLUG_CACHE_DIR, else $XDG_CACHE_HOME/tensorplug) when the same
 * texts, vocabulary and max_len were tokenized before. *cached says which. */
tp_token_seqs *tp_cli_tokenize_cached(const tp_tokenizer *tok, const char *vocab_path,
                                      char *const *texts, guint n, int max_len, int threads,
                                      bool *cached, GError **err);

/* "1,234,567" */
char *tp_cli_thousands(int64_t v);
/* "00:02:44" */
char *tp_cli_hms(double seconds);
/* Writes JSON atomically (pretty). */
bool tp_cli_write_json(const char *path, JsonNode *root, GError **err);
/* Keras-like progress display for tp_train / tp_evaluate callbacks. */
typedef struct tp_cli_progress {
  bool tty;
  int last_decile; /* non-TTY: last 10% mark printed */
  const char *last_phase;
  int last_epoch;
} tp_cli_progress;
void tp_cli_progress_cb(const tp_progress *p, void *user);
