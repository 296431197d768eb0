/* tensorplug/train.h — the fine-tuning loop: batches padded to their longest
 * sequence, Adam/AdamW with optional warmup + linear decay and clipping,
 * validation each epoch, early stopping on validation loss with restore-best,
 * atomic checkpoints at each epoch end and exact resume. Reports progress
 * through a callback; never prints. */
#pragma once
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "tensorplug/collective.h"
#include "tensorplug/metrics.h"
#include "tensorplug/model.h"
#include "tensorplug/tokenizer.h"

G_BEGIN_DECLS

typedef enum { TP_SCHEDULE_CONSTANT = 0, TP_SCHEDULE_LINEAR = 1 } tp_schedule;

typedef struct tp_train_options {
  int batch, eval_batch, epochs, patience;
  double lr;
  tp_adam_mode optimizer;
  double weight_decay;
  double warmup; /* < 1: fraction of all steps; >= 1: steps */
  tp_schedule schedule;
  double clip_norm; /* 0 = off */
  uint64_t seed;
  const volatile sig_atomic_t *stop; /* set by a signal handler to stop early */
  /* Seconds between read-backs of the device's losses and accuracy (and
   * progress reports): the one host synchronisation steps may have. 0 = 0.5 s;
   * a tiny value reads back after every step. */
  double read_back_s;
  /* Micro-batches per optimizer step (0 or 1: one). A step's batch is
   * computed in grad_accum parts whose gradients add up: the same loss and
   * gradients as the whole batch at once (up to summation order), in the
   * memory of one part. */
  int grad_accum;
  /* The ranks of a data-parallel job (NULL: this process alone). batch stays
   * the global batch: each rank computes a disjoint share of it (padded to
   * the whole batch's longest sequence, with the dropout masks the whole
   * batch would draw), gradients are summed over the ranks, and every rank
   * takes the same optimizer step. Validation is shared out and summed. Only
   * rank 0 calls the hooks (progress, save_best, checkpoint); every rank
   * learns whether they succeeded. */
  tp_collective *coll;
} tp_train_options;

/* Labelled token sequences: example i is seqs[i] with labels[i]. */
typedef struct tp_labelled {
  const tp_token_seqs *seqs;
  const int *labels;
  int32_t pad_id;
} tp_labelled;

typedef struct tp_epoch_stats {
  int epoch; /* 1-based */
  double loss, acc, val_loss, val_acc;
  double seconds, ms_per_step, tokens_per_s;
  double cpu_seconds; /* process CPU time of the training loop, all threads */
  int64_t steps, tokens;
  int64_t skipped_steps; /* cumulative steps skipped by the f16 loss scaler */
  double sum_seconds;    /* time this rank spent summing gradients over the ranks */
} tp_epoch_stats;

typedef struct tp_progress {
  const char *phase; /* "train", "val", "test" */
  int epoch, epochs;
  int64_t step, steps; /* done / total in this phase */
  double elapsed_s, loss, acc;
  int64_t tokens;
  bool epoch_done;            /* the train phase of `epoch` finished; stats final */
  const tp_epoch_stats *stats; /* with epoch_done */
} tp_progress;
typedef void (*tp_progress_fn)(const tp_progress *p, void *user);

/* Evaluation of a model over examples idx[0..n): mean loss, confusion matrix
 * (binary) and, when probs is given, softmax probabilities [n, num_labels]
 * and logits [n, num_labels] in idx order. Batches are formed from examples
 * sorted by length (less padding, same results). */
typedef struct tp_eval_result {
  double loss, accuracy, f1;
  tp_confusion confusion;
  int64_t n, tokens;
  double seconds;
} tp_eval_result;
bool tp_evaluate(tp_model *m, tp_ctx *ctx, const tp_labelled *data, const guint *idx, guint n,
                 int eval_batch, float *probs, float *logits, tp_progress_fn progress,
                 void *user, const char *phase, tp_eval_result *out, GError **err);
/* The same shared out over the ranks of coll (NULL: alone): rank r
 * evaluates batches r, r + N, ... of the same batches, and the sums (loss,
 * confusion, probs and logits rows) are added over the ranks, so every rank
 * gets the whole result. Collective; only rank 0 reports progress. */
bool tp_evaluate_on(tp_collective *coll, tp_model *m, tp_ctx *ctx, const tp_labelled *data,
                    const guint *idx, guint n, int eval_batch, float *probs, float *logits,
                    tp_progress_fn progress, void *user, const char *phase, tp_eval_result *out,
                    GError **err);

/* The training state that a checkpoint holds. */
typedef struct tp_train_state {
  int epochs_done;
  int64_t global_step;
  double best_val_loss;
  int best_epoch;
  int bad_epochs; /* epochs since the best one */
  bool stopped_early;
  GArray *history; /* tp_epoch_stats */
} tp_train_state;
void tp_train_state_init(tp_train_state *s);
void tp_train_state_clear(tp_train_state *s);
/* Writes member "history": [{epoch, loss, acc, val_loss, val_acc, seconds,
 * ms_per_step, tokens_per_s, cpu_seconds, steps, tokens, skipped_steps,
 * sum_seconds}, ...]
 * into an open object. */
void tp_train_history_to_json(const tp_train_state *s, JsonBuilder *b);

/* Hooks the caller provides: save the best weights when validation loss
 * improves, and write a checkpoint at each epoch end. */
typedef struct tp_train_hooks {
  bool (*save_best)(tp_model *m, tp_ctx *ctx, int epoch, void *user, GError **err);
  bool (*checkpoint)(tp_model *m, tp_ctx *ctx, const tp_train_state *s, void *user, GError **err);
  tp_progress_fn progress;
  /* After each training step is queued (nothing read back): steps done so
   * far over all epochs. May be NULL. */
  void (*step_done)(int64_t steps_done, void *user);
  void *user;
} tp_train_hooks;

/* Runs epochs state->epochs_done+1 .. opts->epochs (or until early stop) over
 * train_idx, validating on val_idx. Fails with TP_ERROR_NON_FINITE on a
 * NaN/Inf loss and TP_ERROR_INTERRUPTED when *opts->stop is set (the last
 * checkpoint stays valid in both cases). */
bool tp_train(tp_model *m, tp_ctx *ctx, const tp_train_options *opts, const tp_labelled *data,
              const guint *train_idx, guint n_train, const guint *val_idx, guint n_val,
              tp_train_state *state, const tp_train_hooks *hooks, GError **err);

/* The learning rate at a step (0-based) of a run of total_steps. */
double tp_schedule_lr(const tp_train_options *o, int64_t step, int64_t total_steps);

/* Checkpoint files: DIR/state.safetensors (parameters, Adam m and v as flat
 * buffers) + DIR/state.json (the training state and history) — written into
 * DIR.tmp and swapped in, so an interrupted write never leaves a broken one. */
bool tp_checkpoint_write(const char *dir, tp_model *m, tp_ctx *ctx, const tp_train_state *s,
                         JsonNode *extra, GError **err);
/* Reads it back into an existing model of the same config; *extra (if asked)
 * gets the JSON the writer stored. */
bool tp_checkpoint_read(const char *dir, tp_model *m, tp_ctx *ctx, tp_train_state *s,
                        JsonNode **extra, GError **err);

/* Reads only DIR/state.json (of DIR, else DIR.old) into *s and, when asked,
 * *extra. Every field is checked — type, range, consistency (history entries
 * = epochs_done, best_epoch <= epochs_done...) — and an error names the file
 * and the field. Errors: TP_ERROR_IO when there is no checkpoint or it cannot
 * be read, TP_ERROR_FORMAT when state.json is malformed. */
bool tp_checkpoint_read_state(const char *dir, tp_train_state *s, JsonNode **extra,
                              GError **err);
/* The same checks over the bytes of a state.json (name stands for its path). */
bool tp_train_state_parse(const char *data, gsize len, const char *name, tp_train_state *s,
                          JsonNode **extra, GError **err);

/* Moves folder tmp to dir, replacing dir's previous contents with at most a
 * moment where only dir.old exists (which readers fall back to). */
bool tp_replace_dir(const char *tmp, const char *dir, GError **err);
/* dir when it holds a complete copy, else dir.old when that does, else NULL. */
char *tp_existing_dir(const char *dir);

G_END_DECLS
