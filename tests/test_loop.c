/* tests/test_loop.c — the training loop's options, each shown to act:
 * learning-rate warmup and linear decay, gradient clipping, early stopping
 * with patience (item 26 of the hardening issue), on the tiny fixtures of
 * tests/data. */
#include <math.h>

#include "tensorplug/backend.h"
#include "tensorplug/dataset.h"
#include "tensorplug/error.h"
#include "tensorplug/model.h"
#include "tensorplug/tokenizer.h"
#include "tensorplug/train.h"
#include "tp_test.h"

TP_TEST(Schedule, WarmupThenConstantOrLinearDecay) {
  tp_train_options o = {.lr = 1.0, .warmup = 0.1, .schedule = TP_SCHEDULE_CONSTANT};
  /* 100 steps, 10% warmup: (step + 1) / 10 of the rate, then all of it */
  TP_CHECK_NEAR(tp_schedule_lr(&o, 0, 100), 0.1, 1e-12);
  TP_CHECK_NEAR(tp_schedule_lr(&o, 4, 100), 0.5, 1e-12);
  TP_CHECK_NEAR(tp_schedule_lr(&o, 9, 100), 1.0, 1e-12);
  TP_CHECK_NEAR(tp_schedule_lr(&o, 99, 100), 1.0, 1e-12);
  /* linear: from the full rate at the end of warmup down to 0 at the end */
  o.schedule = TP_SCHEDULE_LINEAR;
  TP_CHECK_NEAR(tp_schedule_lr(&o, 10, 100), 1.0, 1e-12);
  TP_CHECK_NEAR(tp_schedule_lr(&o, 55, 100), 0.5, 1e-12);
  TP_CHECK_NEAR(tp_schedule_lr(&o, 99, 100), 1.0 / 90, 1e-12);
  /* warmup >= 1 counts steps */
  o.warmup = 4;
  o.schedule = TP_SCHEDULE_CONSTANT;
  TP_CHECK_NEAR(tp_schedule_lr(&o, 1, 100), 0.5, 1e-12);
  TP_CHECK_NEAR(tp_schedule_lr(&o, 4, 100), 1.0, 1e-12);
  o.warmup = 0;
  TP_CHECK_NEAR(tp_schedule_lr(&o, 0, 100), 1.0, 1e-12);
}

/* The tiny BERT and its 48 reviews, tokenized. */
typedef struct loop_fixture {
  tp_backend *be;
  tp_ctx *ctx;
  const tp_model_iface *iface;
  tp_model_config cfg;
  tp_dataset *d;
  tp_token_seqs *seqs;
  tp_labelled data;
  guint *all;
} loop_fixture;

static bool loop_init(loop_fixture *f) {
  memset(f, 0, sizeof *f);
  GError *err = NULL;
  char *model = g_build_filename(tp_test_source_dir(), "tests", "data", "tiny-bert", NULL);
  char *vocab = g_build_filename(model, "vocab.txt", NULL);
  char *data = g_build_filename(tp_test_source_dir(), "tests", "data", "tiny.jsonl", NULL);
  const char *paths[] = {data, NULL};
  tp_model_source src = {.model = model, .init_random = true};
  char *wp = NULL, *md = NULL;
  tp_tokenizer *tok = NULL;
  bool ok = (f->be = tp_backend_open(NULL, "cpu", -1, 1, &err)) &&
            (f->ctx = tp_ctx_new(f->be, &err)) &&
            tp_model_resolve(NULL, &src, &f->iface, &f->cfg, &wp, &md, &err) &&
            (tok = tp_tokenizer_load(vocab, &err)) && (f->d = tp_dataset_load(paths, false, &err));
  if (ok) {
    f->seqs = tp_tokenizer_encode_batch(tok, (const char *const *)f->d->texts, f->d->n, 32, 1);
    f->data = (tp_labelled){.seqs = f->seqs, .labels = f->d->labels,
                            .pad_id = tp_tokenizer_pad_id(tok)};
    f->all = g_new(guint, f->d->n);
    for (guint i = 0; i < f->d->n; i++) f->all[i] = i;
  } else {
    TP_FAILF("fixture: %s", err ? err->message : "?");
    g_clear_error(&err);
  }
  tp_tokenizer_free(tok);
  g_free(wp);
  g_free(md);
  g_free(model);
  g_free(vocab);
  g_free(data);
  return ok;
}

static void loop_clear(loop_fixture *f) {
  if (f->seqs) tp_token_seqs_free(f->seqs);
  tp_dataset_free(f->d);
  g_free(f->all);
  if (f->ctx) tp_ctx_free(f->ctx);
  if (f->be) tp_backend_close(f->be);
}

/* Trains a fresh model (seed 5) with o on the first n_train reviews,
 * validating on the rest; returns its parameters (g_free) and fills *s. */
static float *train_params(loop_fixture *f, tp_train_options o, guint n_train, tp_train_state *s,
                           const tp_train_hooks *h) {
  GError *err = NULL;
  tp_model *m = tp_model_new(f->iface, &f->cfg, f->ctx, 5, &err);
  if (!m) {
    TP_FAILF("model: %s", err->message);
    g_clear_error(&err);
    return NULL;
  }
  o.seed = 5;
  if (!o.eval_batch) o.eval_batch = 16;
  tp_train_state_init(s);
  if (!tp_train(m, f->ctx, &o, &f->data, f->all, n_train, f->all + n_train, f->d->n - n_train, s,
                h, &err)) {
    TP_FAILF("train: %s", err->message);
    g_clear_error(&err);
  }
  int64_t n = tp_params_numel(m->params);
  float *p = g_new(float, n), *at = p;
  for (guint i = 0; i < tp_params_count(m->params); i++) {
    if (!tp_params_get_f32(m->params, f->ctx, i, at, &err)) {
      TP_FAILF("params: %s", err->message);
      g_clear_error(&err);
    }
    at += tp_tensor_numel(tp_params_at(m->params, i));
  }
  tp_model_free(m);
  return p;
}

static int64_t numel(loop_fixture *f) {
  GError *err = NULL;
  tp_model *m = tp_model_new(f->iface, &f->cfg, f->ctx, 5, &err);
  int64_t n = m ? tp_params_numel(m->params) : 0;
  tp_model_free(m);
  g_clear_error(&err);
  return n;
}

static double max_abs_diff(const float *a, const float *b, int64_t n) {
  double w = 0;
  for (int64_t i = 0; i < n; i++) w = fmax(w, fabs((double)a[i] - b[i]));
  return w;
}

TP_TEST(Loop, TheTrainerFollowsTheWarmupSchedule) {
  /* one step with a 1000-step warmup runs at lr / 1000: exactly the step of a
   * constant lr / 1000 */
  loop_fixture f;
  if (!loop_init(&f)) return;
  tp_train_state s1, s2;
  tp_train_options warm = {.batch = 8, .epochs = 1, .lr = 1e-2, .warmup = 1000};
  tp_train_options flat = {.batch = 8, .epochs = 1, .lr = 1e-2 / 1000};
  float *a = train_params(&f, warm, 8, &s1, NULL), *b = train_params(&f, flat, 8, &s2, NULL);
  int64_t n = numel(&f);
  TP_CHECK(a && b && max_abs_diff(a, b, n) == 0.0);
  /* and it differs from a step at the full rate */
  tp_train_state s3;
  tp_train_options full = {.batch = 8, .epochs = 1, .lr = 1e-2};
  float *c = train_params(&f, full, 8, &s3, NULL);
  TP_CHECK(c && max_abs_diff(a, c, n) > 1e-3);
  /* linear decay over 2 steps: the second runs at half the rate, so the run
   * differs from a constant one */
  tp_train_state s4, s5;
  tp_train_options lin = {.batch = 8, .epochs = 1, .lr = 1e-2, .schedule = TP_SCHEDULE_LINEAR};
  float *d = train_params(&f, lin, 16, &s4, NULL), *e = train_params(&f, full, 16, &s5, NULL);
  TP_CHECK(d && e && max_abs_diff(d, e, n) > 1e-4);
  g_free(a), g_free(b), g_free(c), g_free(d), g_free(e);
  tp_train_state_clear(&s1), tp_train_state_clear(&s2), tp_train_state_clear(&s3);
  tp_train_state_clear(&s4), tp_train_state_clear(&s5);
  loop_clear(&f);
}

TP_TEST(Loop, ClippingScalesTheGradient) {
  loop_fixture f;
  if (!loop_init(&f)) return;
  int64_t n = numel(&f);
  tp_train_state s0, s1, s2, sc;
  tp_train_options plain = {.batch = 8, .epochs = 1, .lr = 1e-2};
  tp_model *m0 = tp_model_new(f.iface, &f.cfg, f.ctx, 5, NULL);
  float *init = g_new(float, n), *at = init;
  for (guint i = 0; i < tp_params_count(m0->params); i++) {
    TP_ASSERT(tp_params_get_f32(m0->params, f.ctx, i, at, NULL));
    at += tp_tensor_numel(tp_params_at(m0->params, i));
  }
  tp_model_free(m0);
  float *p = train_params(&f, plain, 8, &s0, NULL);
  /* a norm bound far above the gradient's: no clipping, the same step */
  tp_train_options loose = plain;
  loose.clip_norm = 1e9;
  float *l = train_params(&f, loose, 8, &s1, NULL);
  TP_CHECK(max_abs_diff(p, l, n) == 0.0);
  /* a bound of 1e-12: the gradient shrinks below Adam's epsilon, and the
   * parameters barely move, while the unclipped step moves them by ~lr */
  tp_train_options tight = plain;
  tight.clip_norm = 1e-12;
  float *t = train_params(&f, tight, 8, &s2, NULL);
  double moved_plain = max_abs_diff(p, init, n), moved_clipped = max_abs_diff(t, init, n);
  TP_CHECK(moved_plain > 5e-3);
  if (!(moved_clipped < 1e-6))
    TP_FAILF("with --clip-norm 1e-12 the parameters moved %.3g (unclipped: %.3g)", moved_clipped,
             moved_plain);
  /* a bound below the norm scales the gradient: Adam's step g / (|g| + eps)
   * hardly depends on the scale, but eps makes it differ a little */
  tp_train_options mid = plain;
  mid.clip_norm = 1e-3;
  float *c = train_params(&f, mid, 8, &sc, NULL);
  TP_CHECK(max_abs_diff(c, p, n) > 0);
  g_free(init), g_free(p), g_free(l), g_free(t), g_free(c);
  tp_train_state_clear(&s0), tp_train_state_clear(&s1), tp_train_state_clear(&s2);
  tp_train_state_clear(&sc);
  loop_clear(&f);
}

typedef struct counts {
  int checkpoints, bests;
} counts;

static bool count_best(tp_model *m, tp_ctx *ctx, int epoch, void *user, GError **err) {
  (void)m, (void)ctx, (void)epoch, (void)err;
  ((counts *)user)->bests++;
  return true;
}

static bool count_checkpoint(tp_model *m, tp_ctx *ctx, const tp_train_state *s, void *user,
                             GError **err) {
  (void)m, (void)ctx, (void)s, (void)err;
  ((counts *)user)->checkpoints++;
  return true;
}

TP_TEST(Loop, EarlyStoppingAfterPatienceEpochsWithoutImprovement) {
  /* a learning rate of 0 leaves the model, and so the validation loss, as it
   * is: epoch 1 stays the best, and patience 2 stops the run after epoch 3 */
  loop_fixture f;
  if (!loop_init(&f)) return;
  counts c = {0};
  tp_train_hooks h = {.save_best = count_best, .checkpoint = count_checkpoint, .user = &c};
  tp_train_state s;
  tp_train_options o = {.batch = 8, .epochs = 6, .patience = 2, .lr = 0.0};
  g_free(train_params(&f, o, 40, &s, &h));
  TP_CHECK_INT_EQ(s.epochs_done, 3);
  TP_CHECK(s.stopped_early);
  TP_CHECK_INT_EQ(s.best_epoch, 1);
  TP_CHECK_INT_EQ(s.bad_epochs, 2);
  TP_CHECK_INT_EQ(s.history->len, 3);
  TP_CHECK_INT_EQ(c.bests, 1);
  TP_CHECK_INT_EQ(c.checkpoints, 3);
  tp_train_state_clear(&s);
  /* patience 0: all epochs */
  o.patience = 0;
  o.epochs = 3;
  g_free(train_params(&f, o, 40, &s, NULL));
  TP_CHECK_INT_EQ(s.epochs_done, 3);
  TP_CHECK(!s.stopped_early);
  tp_train_state_clear(&s);
  loop_clear(&f);
}
