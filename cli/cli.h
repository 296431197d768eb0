/* cli/cli.h — the `tensorplug` command: one function per subcommand
 * (cli/cmd_NAME.c); options declared once in cli/cli_options.c; error
 * reporting in cli/cli_common.c.
 *
 * Exit statuses (README "Exit status"): 0 success; 1 an input file or the
 * work failed (a missing, unreadable or malformed file, data the model cannot
 * use, out of memory, non-finite loss: TP_ERROR_IO, _FORMAT, _OUT_OF_MEMORY,
 * _NON_FINITE, _BACKEND); 2 the request cannot be served as asked (bad
 * option or value, unknown model, backend not usable here:
 * TP_ERROR_INVALID_ARGUMENT, _UNAVAILABLE, GOption errors); 130 interrupted. */
#pragma once
#include <stdbool.h>
#include <glib.h>

#include "cli_options.h"

enum { TP_EXIT_OK = 0, TP_EXIT_FAILED = 1, TP_EXIT_USAGE = 2, TP_EXIT_INTERRUPTED = 130 };

/* Each takes argv with argv[0] = "tensorplug SUBCOMMAND". */
int tp_cmd_plugins(int argc, char **argv);
int tp_cmd_tokenize(int argc, char **argv);
int tp_cmd_bench(int argc, char **argv);
/* bench without --tokenizer: model steps on each backend (cli/cmd_bench_model.c) */
int tp_cmd_bench_model(int argc, char **argv);
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
/* --max-len within the model's position embeddings (else exit 2); 0 (the
 * default of eval and predict) becomes the model's positions, at most 512. */
bool tp_cli_check_max_len(const tp_cli_session *s, int *max_len, GError **err);
/* The longest sequence of seqs (at least 1). */
int64_t tp_cli_longest(const tp_token_seqs *seqs);
/* Refuses up front, with the numbers, a step of batch x seq tokens whose
 * activations (tp_model_step_bytes) would not fit beside the model;
 * batch_option names the option to lower ("--batch"). TP_ERROR_OUT_OF_MEMORY. */
bool tp_cli_check_step_memory(const tp_cli_session *s, int64_t batch, int64_t seq, bool training,
                              const char *batch_option, GError **err);
/* The number of labels the model of mo has (from its config; nothing built),
 * so that data can be checked against it before a large model is built. */
bool tp_cli_model_num_labels(const tp_cli_model_opts *mo, int *num_labels, GError **err);
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

/* Peak resident set size of this process, in bytes: since the start, or
 * since the last tp_cli_peak_rss_reset (Linux: VmHWM, else getrusage). */
uint64_t tp_cli_peak_rss_bytes(void);
/* Starts a new peak (Linux: /proc/self/clear_refs); false where the system
 * cannot, and the peak stays the process's. */
bool tp_cli_peak_rss_reset(void);

/* "1,234,567" */
char *tp_cli_thousands(int64_t v);
/* "00:02:44" */
char *tp_cli_hms(double seconds);
/* Writes JSON atomically (pretty). */
bool tp_cli_write_json(const char *path, JsonNode *root, GError **err);
/* The string member key of o, or fallback when o is NULL or the member is
 * absent or not a string (files we wrote may have been edited by hand). */
const char *tp_cli_json_str(JsonObject *o, const char *key, const char *fallback);
/* Keras-like progress display for tp_train / tp_evaluate callbacks. */
typedef struct tp_cli_progress {
  bool tty;
  int last_decile; /* non-TTY: last 10% mark printed */
  const char *last_phase;
  int last_epoch;
} tp_cli_progress;
void tp_cli_progress_cb(const tp_progress *p, void *user);

/* ---- distributed runs (cli/cli_dist.c) ---- */
#include "tensorplug/collective.h"

/* The rank the launcher gave this process ("?" when none): for messages
 * before MPI is initialised. */
const char *tp_cli_launcher_rank(void);
/* Forks: returns -1 in the child, which goes on as the rank; the parent
 * waits for it, forwards signals, and returns the exit status to use — 1
 * with a message naming the rank when the child was killed by a signal.
 * $TENSORPLUG_NO_SUPERVISOR skips it (returns -1 at once). */
int tp_cli_supervise(void);
/* Rank 0's token sequences to every rank (*seqs is allocated on the others). */
bool tp_cli_bcast_seqs(tp_collective *c, tp_token_seqs **seqs, GError **err);
/* Rank 0's parameter values (and Adam moments) to every rank. */
bool tp_cli_bcast_params(tp_collective *c, tp_model *m, tp_ctx *ctx, bool with_optimizer,
                         GError **err);
/* Rank 0's training state to every rank. */
bool tp_cli_bcast_state(tp_collective *c, tp_train_state *s, GError **err);
/* A rank of a distributed run without --device takes the device of its
 * local rank (modulo the count) of the GPU backend --backend names or auto
 * picks (CUDA, else Vulkan): one GPU per rank. The CPU is left as it is. */
void tp_cli_rank_device(tp_cli_run_opts *ro);
