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

/* ---- options shared by the commands that build a model ---- */
#include "tensorplug/backend.h"
#include "tensorplug/model.h"
#include "tensorplug/tokenizer.h"
#include "tensorplug/train.h"

typedef struct tp_cli_model_opts {
  char *model, *weights, *init, *vocab;
  int layers, hidden, heads, ffn, max_positions;
} tp_cli_model_opts;

typedef struct tp_cli_run_opts {
  char *backend, *precision;
  int device, threads;
} tp_cli_run_opts;

/* GOption groups filling the structs (defaults set by tp_cli_*_opts_init). */
void tp_cli_model_opts_init(tp_cli_model_opts *o);
void tp_cli_run_opts_init(tp_cli_run_opts *o);
GOptionGroup *tp_cli_model_group(tp_cli_model_opts *o);
GOptionGroup *tp_cli_run_group(tp_cli_run_opts *o);
void tp_cli_model_opts_clear(tp_cli_model_opts *o);
void tp_cli_run_opts_clear(tp_cli_run_opts *o);

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
