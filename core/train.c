/* core/train.c — the fine-tuning loop, evaluation and checkpoints. */
#include "tensorplug/train.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include "tensorplug/error.h"
#include "tensorplug/kernels.h"
#include "tensorplug/optim_control.h"
#include "tensorplug/fileio.h"
#include "tensorplug/ops.h"
#include "tensorplug/safetensors.h"

/* Dropout counters of step s start at s << 40: every step draws from its own
 * range, so a resumed run draws exactly what an uninterrupted one would. */
#define STEP_RNG_SHIFT 40

/* ---- batches ---- */

typedef struct batch {
  tp_tensor *ids, *mask, *labels; /* [B, T], [B, T], [B] */
  int64_t tokens;                 /* real (unpadded) tokens */
} batch;

static int64_t seq_len(const tp_token_seqs *s, guint i) { return s->offsets[i + 1] - s->offsets[i]; }

/* The longest of examples idx[0..n). */
static int64_t longest(const tp_labelled *d, const guint *idx, int n) {
  int64_t t = 1;
  for (int i = 0; i < n; i++) t = MAX(t, seq_len(d->seqs, idx[i]));
  return t;
}

/* Pads examples idx[0..n) to the longest of them, or to pad_to when longer
 * (a share of a batch is padded as the whole batch is). */
static bool batch_make(tp_ctx *ctx, const tp_labelled *d, const guint *idx, int n, int64_t pad_to,
                       batch *b) {
  int64_t t = MAX(longest(d, idx, n), pad_to);
  size_t cells = (size_t)MAX(n, 0) * (size_t)MAX(t, 1);
  int32_t *ids = g_new(int32_t, cells), *mask = g_new0(int32_t, cells);
  int32_t *lab = g_new(int32_t, (size_t)MAX(n, 0));
  b->tokens = 0;
  for (int i = 0; i < n; i++) {
    int64_t len = seq_len(d->seqs, idx[i]);
    const int32_t *src = d->seqs->ids + d->seqs->offsets[idx[i]];
    for (int64_t j = 0; j < t; j++) {
      ids[i * t + j] = j < len ? src[j] : d->pad_id;
      mask[i * t + j] = j < len;
    }
    lab[i] = d->labels[idx[i]];
    b->tokens += len;
  }
  int64_t shape[2] = {n, t}, ls[1] = {n};
  b->ids = tp_tensor_from_host(ctx, TP_I32, 2, shape, ids);
  b->mask = tp_tensor_from_host(ctx, TP_I32, 2, shape, mask);
  b->labels = tp_tensor_from_host(ctx, TP_I32, 1, ls, lab);
  g_free(ids);
  g_free(mask);
  g_free(lab);
  return tp_ctx_ok(ctx);
}

/* Host-side per-example loss and prediction from logits [n, c]. */
static void score_rows(const float *logits, const int32_t *labels, int n, int c, double *loss_sum,
                       tp_confusion *conf, int64_t *correct) {
  for (int i = 0; i < n; i++) {
    const float *z = logits + (int64_t)i * c;
    int arg = 0;
    double mx = z[0];
    for (int j = 1; j < c; j++)
      if (z[j] > mx) {
        mx = z[j];
        arg = j;
      }
    double se = 0;
    for (int j = 0; j < c; j++) se += exp((double)z[j] - mx);
    *loss_sum += mx + log(se) - z[labels[i]];
    if (conf && c == 2) tp_confusion_add(conf, labels[i], arg);
    if (correct) *correct += arg == labels[i];
  }
}

/* Labels index the logits' columns: each one is checked before any is used
 * (score_rows and the loss kernels read logits[label]). */
static bool labels_in_range(const tp_labelled *d, const guint *idx, guint n, int classes,
                            GError **err) {
  for (guint i = 0; i < n; i++) {
    int l = d->labels[idx[i]];
    if (l < 0 || l >= classes) {
      g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "example %u has label %d, but the model has "
                  "%d labels (0 to %d)", idx[i], l, classes, classes - 1);
      return false;
    }
  }
  return true;
}

/* ---- evaluation ---- */

typedef struct by_len_ctx {
  const tp_token_seqs *seqs;
  const guint *idx;
} by_len_ctx;

static gint cmp_by_len(gconstpointer a, gconstpointer b, gpointer user) {
  const by_len_ctx *c = user;
  guint ia = *(const guint *)a, ib = *(const guint *)b;
  int64_t la = seq_len(c->seqs, c->idx[ia]), lb = seq_len(c->seqs, c->idx[ib]);
  if (la != lb) return la < lb ? -1 : 1;
  return ia < ib ? -1 : ia > ib; /* stable: positions break ties */
}

bool tp_evaluate(tp_model *m, tp_ctx *ctx, const tp_labelled *d, const guint *idx, guint n,
                 int eval_batch, float *probs, float *logits_out, tp_progress_fn progress,
                 void *user, const char *phase, tp_eval_result *out, GError **err) {
  return tp_evaluate_on(NULL, m, ctx, d, idx, n, eval_batch, probs, logits_out, progress, user,
                        phase, out, err);
}

/* The per-example sums of the batches one rank evaluated. */
typedef struct eval_sums {
  double loss_sum;
  int64_t correct, tokens, seen;
} eval_sums;

/* Evaluates batches first, first + every, ... of the length-sorted order. */
static bool eval_batches(tp_model *m, tp_ctx *ctx, const tp_labelled *d, const guint *idx,
                         guint n, const guint *order, int eval_batch, int64_t first,
                         int64_t every, float *probs, float *logits_out, tp_progress_fn progress,
                         void *user, const char *phase, gint64 t0, tp_eval_result *out,
                         eval_sums *es, GError **err) {
  int c = m->cfg.num_labels;
  guint *bidx = g_new(guint, eval_batch);
  float *lg = g_new(float, (int64_t)eval_batch * c);
  int32_t *lab = g_new(int32_t, eval_batch);
  int64_t steps = ((int64_t)n + eval_batch - 1) / eval_batch;
  bool ok = true;
  for (int64_t s = first; ok && s < steps; s += every) {
    guint start = (guint)(s * eval_batch), cnt = MIN((guint)eval_batch, n - start);
    for (guint i = 0; i < cnt; i++) {
      bidx[i] = idx[order[start + i]];
      lab[i] = d->labels[bidx[i]];
    }
    tp_ctx_begin_step(ctx);
    batch b;
    batch_make(ctx, d, bidx, (int)cnt, 0, &b);
    tp_tensor *z = tp_model_forward(m, ctx, b.ids, b.mask);
    ok = z && tp_tensor_to_host(ctx, z, lg, err);
    if (!ok) {
      if (err && !*err) tp_ctx_take_error(ctx, err);
      break;
    }
    score_rows(lg, lab, (int)cnt, c, &es->loss_sum, &out->confusion, &es->correct);
    es->tokens += b.tokens;
    es->seen += cnt;
    for (guint i = 0; i < cnt; i++) {
      guint pos = order[start + i];
      if (logits_out) memcpy(logits_out + (int64_t)pos * c, lg + (int64_t)i * c, c * sizeof(float));
      if (probs) {
        const float *zz = lg + (int64_t)i * c;
        double mx = zz[0], se = 0;
        for (int j = 1; j < c; j++) mx = fmax(mx, zz[j]);
        for (int j = 0; j < c; j++) se += exp((double)zz[j] - mx);
        for (int j = 0; j < c; j++) probs[(int64_t)pos * c + j] = (float)(exp((double)zz[j] - mx) / se);
      }
    }
    if (progress) {
      tp_progress p = {.phase = phase, .step = s + 1, .steps = steps,
                       .elapsed_s = (double)(g_get_monotonic_time() - t0) / 1e6,
                       .loss = es->loss_sum / (double)es->seen,
                       .acc = (double)es->correct / (double)es->seen, .tokens = es->tokens};
      progress(&p, user);
    }
  }
  g_free(bidx);
  g_free(lg);
  g_free(lab);
  return ok;
}

/* Adds every rank's sums (and its rows of probs and logits: zeros elsewhere). */
static bool eval_reduce(tp_collective *coll, tp_eval_result *out, eval_sums *es, float *probs,
                        float *logits_out, size_t values, GError **err) {
  double v[7] = {es->loss_sum, (double)es->correct, (double)es->tokens,
                 (double)out->confusion.tn, (double)out->confusion.fp,
                 (double)out->confusion.fn, (double)out->confusion.tp};
  if (!tp_collective_sum_f64(coll, v, G_N_ELEMENTS(v), err)) return false;
  es->loss_sum = v[0];
  es->correct = (int64_t)v[1];
  es->tokens = (int64_t)v[2];
  out->confusion.tn = (int64_t)v[3];
  out->confusion.fp = (int64_t)v[4];
  out->confusion.fn = (int64_t)v[5];
  out->confusion.tp = (int64_t)v[6];
  /* x + 0 is exact: the rows come back bit for bit */
  return (!probs || tp_collective_sum_f32(coll, probs, values, err)) &&
         (!logits_out || tp_collective_sum_f32(coll, logits_out, values, err));
}

bool tp_evaluate_on(tp_collective *coll, tp_model *m, tp_ctx *ctx, const tp_labelled *d,
                    const guint *idx, guint n, int eval_batch, float *probs, float *logits_out,
                    tp_progress_fn progress, void *user, const char *phase, tp_eval_result *out,
                    GError **err) {
  memset(out, 0, sizeof *out);
  if (n == 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "nothing to evaluate (empty %s set)", phase);
    return false;
  }
  if (eval_batch < 1) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "evaluation batch %d: use 1 or more",
                eval_batch);
    return false;
  }
  if (!labels_in_range(d, idx, n, m->cfg.num_labels, err)) return false;
  if ((guint)eval_batch > n) eval_batch = (int)n; /* no buffer larger than the data */
  int rank = coll ? tp_collective_rank(coll) : 0, ranks = coll ? tp_collective_size(coll) : 1;
  gint64 t0 = g_get_monotonic_time();
  /* order[k] = position in idx, sorted by length */
  guint *order = g_new(guint, n);
  for (guint i = 0; i < n; i++) order[i] = i;
  by_len_ctx bl = {d->seqs, idx};
  g_qsort_with_data(order, (gint)n, sizeof(guint), cmp_by_len, &bl);
  size_t values = (size_t)n * (size_t)m->cfg.num_labels;
  if (ranks > 1) { /* rows of other ranks' batches stay 0 for the sum */
    if (probs) memset(probs, 0, values * sizeof(float));
    if (logits_out) memset(logits_out, 0, values * sizeof(float));
  }
  eval_sums es = {0};
  tp_ctx_set_training(ctx, false);
  GError *local = NULL;
  bool ok = eval_batches(m, ctx, d, idx, n, order, eval_batch, rank, ranks, probs, logits_out,
                         rank == 0 ? progress : NULL, user, phase, t0, out, &es, &local);
  g_free(order);
  if (ranks > 1) {
    ok = tp_collective_agree(coll, ok, local, err) &&
         eval_reduce(coll, out, &es, probs, logits_out, values, err);
  } else if (!ok) {
    g_propagate_error(err, local);
  }
  if (!ok) return false;
  if (!isfinite(es.loss_sum)) {
    g_set_error(err, TP_ERROR, TP_ERROR_NON_FINITE, "the %s loss is not finite: the model "
                "produces NaN/Inf logits", phase);
    return false;
  }
  out->n = n;
  out->tokens = es.tokens;
  out->loss = es.loss_sum / n;
  out->accuracy = (double)es.correct / n;
  out->f1 = tp_confusion_f1(&out->confusion);
  out->seconds = (double)(g_get_monotonic_time() - t0) / 1e6;
  return true;
}

/* ---- training ---- */

/* CPU time of the process (every thread): the work of an epoch whatever the
 * machine's other load. */
static double process_cpu_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void tp_train_state_init(tp_train_state *s) {
  memset(s, 0, sizeof *s);
  s->best_val_loss = INFINITY;
  s->history = g_array_new(FALSE, TRUE, sizeof(tp_epoch_stats));
}

void tp_train_state_clear(tp_train_state *s) {
  if (s->history) g_array_unref(s->history);
  memset(s, 0, sizeof *s);
}

double tp_schedule_lr(const tp_train_options *o, int64_t step, int64_t total) {
  double warm = o->warmup < 1.0 ? o->warmup * (double)total : o->warmup;
  if (warm > 0 && (double)step < warm) return o->lr * (double)(step + 1) / warm;
  if (o->schedule == TP_SCHEDULE_LINEAR && total > warm) {
    double left = (double)(total - step) / ((double)total - warm);
    return o->lr * fmax(0.0, fmin(1.0, left));
  }
  return o->lr;
}

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* The order of epoch e: a seeded shuffle of the training indices. */
static void epoch_order(const guint *train, guint n, uint64_t seed, int epoch, guint *out) {
  memcpy(out, train, n * sizeof(guint));
  uint64_t st = seed * 0x100000001B3ull + (uint64_t)epoch;
  for (guint i = n; i > 1; i--) {
    guint j = (guint)(splitmix64(&st) % i);
    guint t = out[i - 1];
    out[i - 1] = out[j];
    out[j] = t;
  }
}

/* ---- the device-side step record ----
 * One persistent buffer: the optimizer's control block (TP_CTL_WORDS f32),
 * then (loss, correct) per step since the last read-back, then two scratch
 * words for split steps. Steps only queue work; the host reads the record
 * back at the logging interval — one synchronisation for many steps. */
#define STATS_CAP 256 /* steps between read-backs at most */
#define SCRATCH_SEED (TP_CTL_WORDS + 2 * STATS_CAP)  /* d(loss) of a part */
#define SCRATCH_CORRECT (SCRATCH_SEED + 1)           /* a part's correct count */

typedef struct train_dev {
  tp_buffer *buf;
  int pending; /* steps recorded since the last read-back */
  bool use_ctl; /* clipping or loss scaling: adam obeys the control block */
  bool dynamic; /* f16: dynamic loss scaling */
  int ngroups;  /* gradient buffers (distributed sums) */
  tp_mem *grads;
  int64_t *grad_floats;
} train_dev;

static tp_mem dev_at(const train_dev *t, int64_t word) {
  tp_mem m = {t->buf, (size_t)word * sizeof(float)};
  return m;
}
static tp_mem step_slot(const train_dev *t, int slot, int which) {
  return dev_at(t, TP_CTL_WORDS + 2 * slot + which);
}

static bool train_dev_open(train_dev *t, tp_model *m, tp_ctx *ctx, const tp_train_options *o,
                           GError **err) {
  memset(t, 0, sizeof *t);
  tp_backend *be = tp_ctx_backend(ctx);
  t->dynamic = tp_ctx_precision(ctx) == TP_F16;
  t->use_ctl = o->clip_norm > 0 || t->dynamic;
  t->ngroups = MAX(0, tp_params_buffers(m->params, 1, NULL, NULL, 0));
  t->grads = g_new(tp_mem, (guint)t->ngroups + 1u);
  t->grad_floats = g_new(int64_t, (guint)t->ngroups + 1u);
  tp_params_buffers(m->params, 1, t->grads, t->grad_floats, t->ngroups);
  size_t words = SCRATCH_CORRECT + 1;
  t->buf = tp_backend_alloc(be, words * sizeof(float), err);
  if (!t->buf) return false;
  float *init = g_new0(float, words);
  init[TP_CTL_LOSS_SCALE] = t->dynamic ? TP_LOSS_SCALE_INIT : 1.0f;
  init[TP_CTL_GRAD_SCALE] = 1.0f;
  bool ok = tp_backend_upload(be, dev_at(t, 0), init, words * sizeof(float), err);
  g_free(init);
  return ok;
}

static void train_dev_close(train_dev *t, tp_ctx *ctx) {
  if (t->buf) tp_backend_free(tp_ctx_backend(ctx), t->buf);
  t->buf = NULL;
  g_free(t->grads);
  g_free(t->grad_floats);
}

static int ranks_of(const tp_train_options *o) { return o->coll ? tp_collective_size(o->coll) : 1; }
static int rank_of(const tp_train_options *o) { return o->coll ? tp_collective_rank(o->coll) : 0; }
static int parts_of(const tp_train_options *o) { return MAX(1, o->grad_accum); }

/* Part k of `parts` of n things: [*start, *start + *len). */
static void part_of(int64_t n, int64_t k, int64_t parts, int64_t *start, int64_t *len) {
  *start = n * k / parts;
  *len = n * (k + 1) / parts - *start;
}

/* One micro-batch of a split step: rows [row0, row0 + rows) of the step's
 * batch of cnt, padded to the batch's longest sequence t. Its mean loss is
 * weighted by rows / cnt — in the seed of its backward pass and in the step
 * record — so the parts add up to the mean over the whole batch. */
static void queue_part(tp_model *m, tp_ctx *ctx, const tp_train_options *o, const tp_labelled *d,
                       const guint *bidx, int cnt, int64_t row0, int64_t rows, int64_t t,
                       int64_t step, train_dev *td, int slot) {
  tp_backend *be = tp_ctx_backend(ctx);
  tp_ctx_begin_step(ctx);
  tp_ctx_set_training(ctx, true);
  tp_ctx_set_rng(ctx, o->seed, (uint64_t)step << STEP_RNG_SHIFT);
  tp_ctx_set_batch_share(ctx, row0, rows, cnt);
  batch b;
  batch_make(ctx, d, bidx + row0, (int)rows, t, &b);
  tp_tensor *logits = tp_model_forward(m, ctx, b.ids, b.mask);
  tp_tensor *loss = tp_cross_entropy(ctx, logits, b.labels);
  tp_ctx_set_batch_share(ctx, 0, 0, 0);
  if (!loss) return; /* the context holds the error */
  float frac = (float)((double)rows / (double)cnt);
  tp_k_fill(be, dev_at(td, SCRATCH_SEED), 0.0f, 1);
  tp_k_axpy(be, dev_at(td, SCRATCH_SEED), dev_at(td, TP_CTL_LOSS_SCALE), frac, 1);
  GError *e = NULL;
  if (!tp_ctx_backward_scaled(ctx, loss, dev_at(td, SCRATCH_SEED), &e)) {
    tp_ctx_fail(ctx, e);
    return;
  }
  tp_k_axpy(be, step_slot(td, slot, 0), loss->mem, frac, 1);
  tp_k_count_correct(be, dev_at(td, SCRATCH_CORRECT), logits->mem, b.labels->mem, (int)rows,
                     m->cfg.num_labels);
  tp_k_axpy(be, step_slot(td, slot, 1), dev_at(td, SCRATCH_CORRECT), 1.0f, 1);
}

/* A step computed in parts: this rank's share of the batch, in grad_accum
 * micro-batches. Gradients accumulate (every backward kernel adds). Nothing
 * is summed over ranks here: see finish_step. */
static bool queue_split_step(tp_model *m, tp_ctx *ctx, const tp_train_options *o,
                             const tp_labelled *d, const guint *bidx, int cnt, int64_t step,
                             train_dev *td, int64_t *tokens, GError **err) {
  tp_backend *be = tp_ctx_backend(ctx);
  int64_t t = longest(d, bidx, cnt), s0, sl;
  *tokens = 0;
  for (int i = 0; i < cnt; i++) *tokens += seq_len(d->seqs, bidx[i]); /* the whole batch's */
  part_of(cnt, rank_of(o), ranks_of(o), &s0, &sl);
  tp_params_zero_grad(m->params, ctx);
  int slot = td->pending++;
  tp_k_fill(be, step_slot(td, slot, 0), 0.0f, 2);
  for (int k = 0; k < parts_of(o); k++) {
    int64_t m0, ml;
    part_of(sl, k, parts_of(o), &m0, &ml);
    if (ml > 0) queue_part(m, ctx, o, d, bidx, cnt, s0 + m0, ml, t, step, td, slot);
  }
  return tp_ctx_take_error(ctx, err);
}

/* Queues one training step's forward and backward; nothing is read back. */
static bool queue_step(tp_model *m, tp_ctx *ctx, const tp_train_options *o, const tp_labelled *d,
                       const guint *bidx, int cnt, int64_t step, train_dev *td, int64_t *tokens,
                       GError **err) {
  if (ranks_of(o) > 1 || parts_of(o) > 1)
    return queue_split_step(m, ctx, o, d, bidx, cnt, step, td, tokens, err);
  tp_backend *be = tp_ctx_backend(ctx);
  tp_ctx_begin_step(ctx);
  tp_ctx_set_training(ctx, true);
  tp_ctx_set_rng(ctx, o->seed, (uint64_t)step << STEP_RNG_SHIFT);
  batch b;
  batch_make(ctx, d, bidx, cnt, 0, &b);
  *tokens = b.tokens;
  tp_tensor *logits = tp_model_forward(m, ctx, b.ids, b.mask);
  tp_tensor *loss = tp_cross_entropy(ctx, logits, b.labels);
  tp_params_zero_grad(m->params, ctx);
  bool ok = td->dynamic ? tp_ctx_backward_scaled(ctx, loss, dev_at(td, TP_CTL_LOSS_SCALE), err)
                        : tp_ctx_backward(ctx, loss, err);
  if (!ok) return false;
  int slot = td->pending++;
  if (!tp_backend_copy(be, step_slot(td, slot, 0), loss->mem, sizeof(float), err)) return false;
  tp_k_count_correct(be, step_slot(td, slot, 1), logits->mem, b.labels->mem, cnt,
                     m->cfg.num_labels);
  return tp_ctx_take_error(ctx, err);
}

/* Gradients summed over the ranks, then clipping / loss scaling and one
 * optimizer step (queued). A failure here leaves the ranks out of step: the
 * caller ends the job. */
static bool finish_step(tp_model *m, tp_ctx *ctx, const tp_train_options *o, int64_t step,
                        int64_t total, train_dev *td, double *sum_s, GError **err) {
  tp_backend *be = tp_ctx_backend(ctx);
  if (ranks_of(o) > 1) {
    gint64 t0 = g_get_monotonic_time();
    if (!tp_collective_sum_device(o->coll, be, td->grads, td->grad_floats, td->ngroups, err))
      return false;
    *sum_s += (double)(g_get_monotonic_time() - t0) / 1e6;
  }
  if (td->use_ctl) {
    tp_params_grad_sumsq(m->params, ctx, dev_at(td, TP_CTL_SUMSQ));
    tp_control_args ca = {.max_norm = (float)o->clip_norm, .dynamic = td->dynamic,
                          .growth_interval = TP_LOSS_SCALE_INTERVAL,
                          .growth = TP_LOSS_SCALE_GROWTH, .backoff = TP_LOSS_SCALE_BACKOFF};
    tp_k_optim_control(be, dev_at(td, 0), &ca);
  }
  bool w = o->optimizer == TP_ADAM_W;
  tp_adam_args a = {.mode = o->optimizer, .lr = (float)tp_schedule_lr(o, step, total),
                    .beta1 = 0.9f, .beta2 = 0.999f, .eps = w ? 1e-8f : 1e-7f,
                    .weight_decay = w ? (float)o->weight_decay : 0.0f, .step = step + 1,
                    .grad_scale = 1.0f, .ctl = td->use_ctl ? dev_at(td, 0) : tp_mem_null()};
  tp_params_adam_step(m->params, ctx, &a);
  return tp_ctx_take_error(ctx, err);
}

/* Running sums of one epoch, from the read-backs. */
typedef struct epoch_sums {
  double loss_sum;
  int64_t correct, seen; /* examples read back */
  int64_t steps_read;
  double skipped; /* steps the loss scaler skipped (f16) */
} epoch_sums;

/* Every rank's (loss, correct) records added (collective; a rank whose
 * download failed adds nothing and all ranks learn it). */
static bool stats_sum(const tp_train_options *o, float *rec, guint pending, bool ok,
                      GError *local, GError **err) {
  if (!tp_collective_agree(o->coll, ok, local, err)) return false;
  double *v = g_new(double, 2u * pending);
  for (guint i = 0; i < 2u * pending; i++) v[i] = rec[i];
  ok = tp_collective_sum_f64(o->coll, v, 2u * pending, err);
  for (guint i = 0; ok && i < 2u * pending; i++) rec[i] = (float)v[i];
  g_free(v);
  return ok;
}

/* Reads back the steps recorded since the last read-back (one
 * synchronisation) and adds them, in step order, to e. first_step: the
 * global step of the first of them; sizes: their batch sizes. Collective in
 * a distributed run: each rank's records hold its part of the loss. */
static bool read_back(train_dev *td, tp_ctx *ctx, const tp_train_options *o, int64_t first_step,
                      const int *sizes, epoch_sums *e, GError **err) {
  if (td->pending == 0) return true;
  size_t words = TP_CTL_WORDS + 2 * (size_t)td->pending;
  float *h = g_new0(float, words);
  GError *local = NULL;
  bool ok = tp_ctx_take_error(ctx, &local) &&
            tp_backend_download(tp_ctx_backend(ctx), h, dev_at(td, 0), words * sizeof(float),
                                &local);
  if (ranks_of(o) > 1) ok = stats_sum(o, h + TP_CTL_WORDS, (guint)td->pending, ok, local, err);
  else if (!ok) g_propagate_error(err, local);
  for (int i = 0; ok && i < td->pending; i++) {
    float lv = h[TP_CTL_WORDS + 2 * i], corr = h[TP_CTL_WORDS + 2 * i + 1];
    if (!isfinite(lv)) {
      g_set_error(err, TP_ERROR, TP_ERROR_NON_FINITE, "the training loss became %s at step %lld: "
                  "training stopped; the last epoch's checkpoint is kept (try a lower --lr or "
                  "--clip-norm 1.0)", isnan(lv) ? "NaN" : "infinite",
                  (long long)(first_step + i + 1));
      ok = false;
      break;
    }
    e->loss_sum += (double)lv * sizes[i];
    e->correct += (int64_t)llroundf(corr);
    e->seen += sizes[i];
    e->steps_read++;
  }
  if (ok) e->skipped = h[TP_CTL_SKIPPED];
  td->pending = 0;
  g_free(h);
  return ok;
}

static void report(const tp_train_options *o, const tp_train_hooks *h, const tp_progress *p) {
  if (h && h->progress && rank_of(o) == 0) h->progress(p, h->user);
}

/* Seconds between read-backs (and progress updates) while training. */
#define READ_BACK_S 0.5

/* What the ranks agree on before each step's gradient sum: whether one
 * failed (then all stop), whether one was asked to stop, and whether rank
 * 0's clock says a read-back is due. One small collective per step, no
 * device synchronisation. */
typedef struct step_vote {
  bool stop, due;
} step_vote;

static bool vote(const tp_train_options *o, bool ok, GError *local, bool stop, bool due,
                 step_vote *v, GError **err) {
  if (ranks_of(o) == 1) {
    if (!ok) g_propagate_error(err, local);
    v->stop = stop;
    v->due = due;
    return ok;
  }
  int64_t f[3] = {ok ? 0 : ranks_of(o) - rank_of(o), stop, rank_of(o) == 0 && due};
  GError *e = NULL;
  if (!tp_collective_max_i64(o->coll, f, 3, &e)) {
    if (local) g_error_free(local);
    g_propagate_error(err, e);
    return false;
  }
  v->stop = f[1] != 0;
  v->due = f[2] != 0;
  if (f[0] == 0) return true;
  return tp_collective_share_error(o->coll, ranks_of(o) - (int)f[0], local, err);
}

/* The hooks of an epoch's end run on rank 0; every rank learns the outcome. */
static bool epoch_hooks(tp_model *m, tp_ctx *ctx, const tp_train_options *o, const tp_train_hooks *h,
                        const tp_train_state *s, bool improved, GError **err) {
  GError *local = NULL;
  bool ok = true;
  if (rank_of(o) == 0 && h) {
    if (improved && h->save_best) ok = h->save_best(m, ctx, s->epochs_done, h->user, &local);
    if (ok && h->checkpoint) ok = h->checkpoint(m, ctx, s, h->user, &local);
  }
  if (ranks_of(o) == 1) {
    if (!ok) g_propagate_error(err, local);
    return ok;
  }
  return tp_collective_agree(o->coll, ok, local, err);
}

bool tp_train(tp_model *m, tp_ctx *ctx, const tp_train_options *o, const tp_labelled *d,
              const guint *train_idx, guint n_train, const guint *val_idx, guint n_val,
              tp_train_state *s, const tp_train_hooks *h, GError **err) {
  if (n_train == 0 || o->batch < 1 || o->epochs < 1 || o->grad_accum < 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "nothing to train: %u examples, "
                "batch %d, %d epochs, %d micro-batches", n_train, o->batch, o->epochs,
                o->grad_accum);
    return false;
  }
  if (!labels_in_range(d, train_idx, n_train, m->cfg.num_labels, err) ||
      !labels_in_range(d, val_idx, n_val, m->cfg.num_labels, err))
    return false;
  int64_t steps = ((int64_t)n_train + o->batch - 1) / o->batch, total = steps * o->epochs;
  double every = o->read_back_s > 0 ? o->read_back_s : READ_BACK_S;
  bool alone = ranks_of(o) == 1;
  train_dev td;
  GError *open_err = NULL;
  bool ok = train_dev_open(&td, m, ctx, o, &open_err), stop = false;
  if (alone && !ok) g_propagate_error(err, open_err);
  /* every rank enters the loop's collectives, or none does */
  if (!alone) ok = tp_collective_agree(o->coll, ok, open_err, err);
  if (!ok) {
    train_dev_close(&td, ctx);
    return false;
  }
  guint *order = g_new(guint, n_train);
  int sizes[STATS_CAP];
  for (int e = s->epochs_done + 1; ok && e <= o->epochs; e++) {
    epoch_order(train_idx, n_train, o->seed, e, order);
    gint64 t0 = g_get_monotonic_time(), last = t0;
    double c0 = process_cpu_seconds();
    epoch_sums sum = {0};
    int64_t tokens = 0, first = s->global_step;
    double sum_s = 0; /* in gradient sums (host time; queued work on a device) */
    for (int64_t st = 0; ok && st < steps; st++) {
      if (alone ? (o->stop && *o->stop) : stop) {
        g_set_error(err, TP_ERROR, TP_ERROR_INTERRUPTED, "interrupted in epoch %d at step "
                    "%lld/%lld", e, (long long)st, (long long)steps);
        ok = false;
        break;
      }
      guint start = (guint)(st * o->batch), cnt = MIN((guint)o->batch, n_train - start);
      int64_t tok = 0;
      sizes[td.pending] = (int)cnt;
      GError *local = NULL;
      bool step_ok = queue_step(m, ctx, o, d, order + start, (int)cnt, s->global_step, &td, &tok,
                                &local);
      bool asked = o->stop && *o->stop;
      bool late = (double)(g_get_monotonic_time() - last) / 1e6 >= every;
      step_vote v;
      ok = vote(o, step_ok, local, asked, late, &v, err);
      if (!ok) break;
      stop = v.stop;
      if (!finish_step(m, ctx, o, s->global_step, total, &td, &sum_s, err)) {
        ok = false;
        if (!alone) { /* the other ranks are inside the sum: they cannot be told */
          fflush(stdout);
          fprintf(stderr, "tensorplug: error: rank %d of %d: %s; ending the job\n", rank_of(o),
                  ranks_of(o), (*err)->message);
          tp_collective_abort(o->coll, 1);
        }
        break;
      }
      s->global_step++;
      tokens += tok;
      if (h && h->step_done) h->step_done(s->global_step, h->user);
      bool due = td.pending == STATS_CAP || st + 1 == steps || v.due || v.stop;
      if (!due) continue;
      ok = read_back(&td, ctx, o, first, sizes, &sum, err);
      first = s->global_step;
      last = g_get_monotonic_time();
      if (!ok) break;
      tp_progress p = {.phase = "train", .epoch = e, .epochs = o->epochs, .step = st + 1,
                       .steps = steps, .elapsed_s = (double)(last - t0) / 1e6,
                       .loss = sum.loss_sum / (double)sum.seen,
                       .acc = (double)sum.correct / (double)sum.seen, .tokens = tokens};
      report(o, h, &p);
    }
    if (!ok) break;
    tp_epoch_stats es = {.epoch = e, .loss = sum.loss_sum / n_train,
                         .acc = (double)sum.correct / n_train, .steps = steps, .tokens = tokens,
                         .skipped_steps = (int64_t)sum.skipped, .sum_seconds = sum_s};
    es.seconds = (double)(g_get_monotonic_time() - t0) / 1e6;
    es.ms_per_step = es.seconds * 1000.0 / (double)steps;
    es.cpu_seconds = process_cpu_seconds() - c0;
    es.tokens_per_s = (double)tokens / fmax(es.seconds, 1e-9);
    tp_eval_result vr;
    ok = tp_evaluate_on(o->coll, m, ctx, d, val_idx, n_val, o->eval_batch, NULL, NULL,
                        h ? h->progress : NULL, h ? h->user : NULL, "val", &vr, err);
    if (!ok) break;
    es.val_loss = vr.loss;
    es.val_acc = vr.accuracy;
    g_array_append_val(s->history, es);
    s->epochs_done = e;
    bool improved = vr.loss < s->best_val_loss;
    if (improved) {
      s->best_val_loss = vr.loss;
      s->best_epoch = e;
      s->bad_epochs = 0;
    } else {
      s->bad_epochs++;
    }
    bool early = o->patience > 0 && s->bad_epochs >= o->patience;
    s->stopped_early = early && e < o->epochs;
    ok = epoch_hooks(m, ctx, o, h, s, improved, err);
    tp_progress p = {.phase = "train", .epoch = e, .epochs = o->epochs, .step = steps,
                     .steps = steps, .elapsed_s = es.seconds, .loss = es.loss, .acc = es.acc,
                     .tokens = tokens, .epoch_done = true, .stats = &es};
    if (ok) report(o, h, &p);
    if (early) break;
  }
  g_free(order);
  train_dev_close(&td, ctx);
  return ok;
}

/* ---- checkpoints ---- */

static bool remove_flat_dir(const char *dir, GError **err) {
  GDir *d = g_dir_open(dir, 0, NULL);
  if (!d) return true;
  const char *n;
  bool ok = true;
  while ((n = g_dir_read_name(d))) {
    char *p = g_build_filename(dir, n, NULL);
    if (g_remove(p) != 0 && ok) {
      g_set_error(err, TP_ERROR, TP_ERROR_IO, "cannot remove %s: %s", p, g_strerror(errno));
      ok = false;
    }
    g_free(p);
  }
  g_dir_close(d);
  if (ok && g_rmdir(dir) != 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_IO, "cannot remove %s: %s", dir, g_strerror(errno));
    ok = false;
  }
  return ok;
}

bool tp_replace_dir(const char *tmp, const char *dir, GError **err) {
  char *old = g_strconcat(dir, ".old", NULL);
  bool ok = remove_flat_dir(old, err);
  /* tmp's files were synced as they were written; each rename is synced too,
   * so that a power cut leaves dir or dir.old complete (tp_existing_dir). */
  if (ok && g_file_test(dir, G_FILE_TEST_IS_DIR)) ok = tp_rename_durable(dir, old, err);
  if (ok) ok = tp_rename_durable(tmp, dir, err);
  if (ok) ok = remove_flat_dir(old, err);
  g_free(old);
  return ok;
}

char *tp_existing_dir(const char *dir) {
  if (g_file_test(dir, G_FILE_TEST_IS_DIR)) return g_strdup(dir);
  char *old = g_strconcat(dir, ".old", NULL);
  if (g_file_test(old, G_FILE_TEST_IS_DIR)) return old;
  g_free(old);
  return NULL;
}

static void put_double(JsonBuilder *b, const char *k, double v) {
  json_builder_set_member_name(b, k);
  if (isfinite(v)) json_builder_add_double_value(b, v);
  else json_builder_add_null_value(b);
}

static void put_int(JsonBuilder *b, const char *k, gint64 v) {
  json_builder_set_member_name(b, k);
  json_builder_add_int_value(b, v);
}

void tp_train_history_to_json(const tp_train_state *s, JsonBuilder *b) {
  json_builder_set_member_name(b, "history");
  json_builder_begin_array(b);
  for (guint i = 0; i < s->history->len; i++) {
    const tp_epoch_stats *e = &g_array_index(s->history, tp_epoch_stats, i);
    json_builder_begin_object(b);
    put_int(b, "epoch", e->epoch);
    put_double(b, "loss", e->loss);
    put_double(b, "acc", e->acc);
    put_double(b, "val_loss", e->val_loss);
    put_double(b, "val_acc", e->val_acc);
    put_double(b, "seconds", e->seconds);
    put_double(b, "ms_per_step", e->ms_per_step);
    put_double(b, "tokens_per_s", e->tokens_per_s);
    put_double(b, "cpu_seconds", e->cpu_seconds);
    put_int(b, "steps", e->steps);
    put_int(b, "tokens", e->tokens);
    put_int(b, "skipped_steps", e->skipped_steps);
    put_double(b, "sum_seconds", e->sum_seconds);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
}

static bool write_json_file(const char *path, JsonNode *root, GError **err) {
  JsonGenerator *g = json_generator_new();
  json_generator_set_pretty(g, TRUE);
  json_generator_set_root(g, root);
  gsize len = 0;
  char *text = json_generator_to_data(g, &len);
  bool ok = tp_file_write_durable(path, text, len, err);
  g_free(text);
  g_object_unref(g);
  return ok;
}

bool tp_checkpoint_write(const char *dir, tp_model *m, tp_ctx *ctx, const tp_train_state *s,
                         JsonNode *extra, GError **err) {
  char *tmp = g_strconcat(dir, ".tmp", NULL);
  bool ok = remove_flat_dir(tmp, err);
  if (ok && g_mkdir_with_parents(tmp, 0755) != 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_IO, "cannot create %s: %s", tmp, g_strerror(errno));
    ok = false;
  }
  int64_t nf = tp_params_flat_floats(m->params);
  float *buf[3] = {0};
  tp_st_write_item items[3];
  static const char *const names[3] = {"values", "adam_m", "adam_v"};
  static const int which[3] = {0, 2, 3};
  for (int i = 0; ok && i < 3; i++) {
    buf[i] = g_new(float, nf);
    ok = tp_params_read_flat(m->params, ctx, which[i], buf[i], err);
    items[i] = (tp_st_write_item){.name = names[i], .dtype = TP_F32, .ndim = 1, .shape = {nf},
                                  .data = buf[i]};
  }
  char *st_path = g_build_filename(tmp, "state.safetensors", NULL);
  ok = ok && tp_safetensors_write(st_path, items, 3, NULL, err);
  if (ok) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    put_int(b, "epochs_done", s->epochs_done);
    put_int(b, "global_step", s->global_step);
    put_double(b, "best_val_loss", s->best_val_loss);
    put_int(b, "best_epoch", s->best_epoch);
    put_int(b, "bad_epochs", s->bad_epochs);
    json_builder_set_member_name(b, "stopped_early");
    json_builder_add_boolean_value(b, s->stopped_early);
    tp_train_history_to_json(s, b);
    if (extra) {
      json_builder_set_member_name(b, "extra");
      json_builder_add_value(b, json_node_copy(extra));
    }
    json_builder_end_object(b);
    JsonNode *root = json_builder_get_root(b);
    char *jp = g_build_filename(tmp, "state.json", NULL);
    ok = write_json_file(jp, root, err);
    g_free(jp);
    json_node_unref(root);
    g_object_unref(b);
  }
  ok = ok && tp_replace_dir(tmp, dir, err);
  if (ok == false && err && *err) g_prefix_error(err, "checkpoint %s: ", dir);
  for (int i = 0; i < 3; i++) g_free(buf[i]);
  g_free(st_path);
  g_free(tmp);
  return ok;
}

bool tp_checkpoint_read(const char *dir_in, tp_model *m, tp_ctx *ctx, tp_train_state *s,
                        JsonNode **extra, GError **err) {
  /* the state first: it is checked field by field (core/train_state.c) */
  if (!tp_checkpoint_read_state(dir_in, s, extra, err)) return false;
  char *dir = tp_existing_dir(dir_in);
  char *st_path = g_build_filename(dir, "state.safetensors", NULL);
  tp_safetensors *st = tp_safetensors_open(st_path, err);
  bool ok = st != NULL;
  int64_t nf = tp_params_flat_floats(m->params);
  static const char *const names[3] = {"values", "adam_m", "adam_v"};
  static const int which[3] = {0, 2, 3};
  for (int i = 0; ok && i < 3; i++) {
    const tp_st_tensor *t = tp_safetensors_find(st, names[i]);
    if (!t || t->dtype != TP_F32 || t->numel != nf) {
      g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s: \"%s\" is missing or has %lld floats, "
                  "the model needs %lld: the checkpoint belongs to another model", st_path,
                  names[i], t ? (long long)t->numel : 0LL, (long long)nf);
      ok = false;
      break;
    }
    float *h = g_new(float, nf);
    memcpy(h, t->data, (size_t)nf * sizeof(float));
    ok = tp_params_write_flat(m->params, ctx, which[i], h, err);
    g_free(h);
  }
  if (!ok && extra && *extra) g_clear_pointer(extra, json_node_unref);
  if (st) tp_safetensors_close(st);
  g_free(st_path);
  g_free(dir);
  return ok;
}
