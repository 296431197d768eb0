/* tests/test_batch_share.c — computing a batch in parts (the shares of a
 * distributed run's ranks, --grad-accum micro-batches) gives what the whole
 * batch gives, without MPI:
 *  - dropout and attention dropout draw the whole batch's masks for a share;
 *  - tp_train with grad_accum K matches one batch (losses, parameters,
 *    Adam moments), also when K does not divide the batch;
 *  - split steps queue work only: at most one host synchronisation a step;
 *  - the one-process collective, and a share that cannot be split. */
#include <math.h>

#include "tensorplug/backend.h"
#include "tensorplug/collective.h"
#include "tensorplug/error.h"
#include "tensorplug/model.h"
#include "tensorplug/ops.h"
#include "tensorplug/train.h"
#include "tp_test.h"
#include "tp_test_synth.h"

static tp_backend *cpu(void) {
  static tp_backend *be;
  if (!be) {
    GError *err = NULL;
    be = tp_backend_open(NULL, "cpu", -1, 2, &err);
    if (!be) {
      TP_FAILF("cpu backend: %s", err->message);
      g_clear_error(&err);
    }
  }
  return be;
}

static float *host_of(tp_ctx *ctx, tp_tensor *t) {
  float *h = g_new(float, tp_tensor_numel(t));
  GError *err = NULL;
  if (!t || !tp_tensor_to_host(ctx, t, h, &err)) {
    TP_FAILF("to host: %s", err ? err->message : "no tensor");
    g_clear_error(&err);
  }
  return h;
}

/* ---- dropout masks ---- */

/* Two dropout layers over rows [row0, row0 + rows) of a [B, T, H] batch of
 * ones (rows = B: the whole batch). */
static void dropout_rows(tp_ctx *ctx, int64_t row0, int64_t rows, int64_t B, bool share,
                         float *out) {
  const int64_t T = 3, H = 5;
  int64_t shape[3] = {rows, T, H};
  float *ones = g_new(float, rows * T * H);
  for (int64_t i = 0; i < rows * T * H; i++) ones[i] = 1.0f + (float)(row0 * T * H + i);
  tp_ctx_begin_step(ctx);
  tp_ctx_set_training(ctx, true);
  tp_ctx_set_rng(ctx, 99, 7ull << 40);
  if (share) tp_ctx_set_batch_share(ctx, row0, rows, B);
  tp_tensor *x = tp_tensor_from_host(ctx, TP_F32, 3, shape, ones);
  tp_tensor *y1 = tp_dropout(ctx, x, 0.5f);
  tp_tensor *y2 = tp_dropout(ctx, y1, 0.3f);
  tp_ctx_set_batch_share(ctx, 0, 0, 0);
  float *h = host_of(ctx, y2);
  memcpy(out, h, (size_t)(rows * T * H) * sizeof(float));
  g_free(h);
  g_free(ones);
}

TP_TEST(BatchShare, DropoutDrawsTheWholeBatchMasks) {
  if (!cpu()) return;
  GError *err = NULL;
  tp_ctx *ctx = tp_ctx_new(cpu(), &err);
  const int64_t B = 7, per = 3 * 5;
  float *whole = g_new(float, B * per), *parts = g_new(float, B * per);
  dropout_rows(ctx, 0, B, B, true, whole);
  /* shares of 2, 4 and 1 rows, in another order */
  dropout_rows(ctx, 6, 1, B, true, parts + 6 * per);
  dropout_rows(ctx, 2, 4, B, true, parts + 2 * per);
  dropout_rows(ctx, 0, 2, B, true, parts);
  int dropped = 0;
  for (int64_t i = 0; i < B * per; i++) dropped += whole[i] == 0.0f;
  TP_CHECK(dropped > 10 && dropped < B * per - 10); /* a real mask */
  TP_CHECK(memcmp(whole, parts, (size_t)(B * per) * sizeof(float)) == 0);
  /* without the share, the same rows draw other masks (so the check above
   * can fail) */
  dropout_rows(ctx, 2, 4, B, false, parts + 2 * per);
  TP_CHECK(memcmp(whole + 2 * per, parts + 2 * per, (size_t)(4 * per) * sizeof(float)) != 0);
  g_free(whole);
  g_free(parts);
  tp_ctx_free(ctx);
}

TP_TEST(BatchShare, ATensorWithoutTheBatchAxisIsAnError) {
  if (!cpu()) return;
  GError *err = NULL;
  tp_ctx *ctx = tp_ctx_new(cpu(), &err);
  tp_ctx_begin_step(ctx);
  tp_ctx_set_training(ctx, true);
  tp_ctx_set_batch_share(ctx, 1, 3, 8);
  int64_t shape[1] = {7}; /* 7 elements cannot be 3 rows */
  float v[7] = {1, 2, 3, 4, 5, 6, 7};
  tp_tensor *x = tp_tensor_from_host(ctx, TP_F32, 1, shape, v);
  TP_CHECK(tp_dropout(ctx, x, 0.5f) == NULL || !tp_ctx_ok(ctx));
  TP_CHECK(!tp_ctx_check(ctx, &err));
  TP_CHECK(err && strstr(err->message, "leading axis"));
  g_clear_error(&err);
  tp_ctx_free(ctx);
}

/* Attention with dropout over rows of a [B, T, H] batch. */
static float *attention_rows(tp_ctx *ctx, const float *q, int64_t row0, int64_t rows, int64_t B,
                             int64_t T, int64_t H, bool share) {
  int64_t shape[3] = {rows, T, H}, ms[2] = {rows, T};
  int32_t *mask = g_new(int32_t, rows * T);
  for (int64_t b = 0; b < rows; b++)
    for (int64_t t = 0; t < T; t++) mask[b * T + t] = t < T - (row0 + b) % 3; /* padded rows */
  tp_ctx_begin_step(ctx);
  tp_ctx_set_training(ctx, true);
  tp_ctx_set_rng(ctx, 5, 3ull << 40);
  if (share) tp_ctx_set_batch_share(ctx, row0, rows, B);
  const float *src = q + row0 * T * H;
  tp_tensor *x = tp_tensor_from_host(ctx, TP_F32, 3, shape, src);
  tp_tensor *mk = tp_tensor_from_host(ctx, TP_I32, 2, ms, mask);
  tp_tensor *y = tp_attention(ctx, x, x, x, mk, NULL, 2, 0.4f);
  tp_ctx_set_batch_share(ctx, 0, 0, 0);
  g_free(mask);
  return host_of(ctx, y);
}

TP_TEST(BatchShare, AttentionDropoutDrawsTheWholeBatchMasks) {
  if (!cpu()) return;
  GError *err = NULL;
  tp_ctx *ctx = tp_ctx_new(cpu(), &err);
  const int64_t B = 5, T = 6, H = 8;
  float *q = g_new(float, B * T * H);
  GRand *r = g_rand_new_with_seed(3);
  for (int64_t i = 0; i < B * T * H; i++) q[i] = (float)g_rand_double_range(r, -1, 1);
  g_rand_free(r);
  float *whole = attention_rows(ctx, q, 0, B, B, T, H, true);
  float *a = attention_rows(ctx, q, 0, 2, B, T, H, true);
  float *b = attention_rows(ctx, q, 2, 3, B, T, H, true);
  float *c = attention_rows(ctx, q, 2, 3, B, T, H, false); /* without the share */
  double worst = 0, unshared = 0;
  for (int64_t i = 0; i < B * T * H; i++) {
    float part = i < 2 * T * H ? a[i] : b[i - 2 * T * H];
    worst = fmax(worst, fabs((double)part - whole[i]));
    if (i >= 2 * T * H) unshared = fmax(unshared, fabs((double)c[i - 2 * T * H] - whole[i]));
  }
  g_test_message("attention: largest difference whole vs shares %.3g (without the share %.3g)",
                 worst, unshared);
  TP_CHECK(worst <= 1e-6);
  TP_CHECK(unshared > 1e-3);
  g_free(c);
  g_free(q);
  g_free(whole);
  g_free(a);
  g_free(b);
  tp_ctx_free(ctx);
}

/* ---- training in micro-batches ---- */

static tp_model *tiny_model(tp_ctx *ctx) {
  GError *err = NULL;
  const tp_model_iface *iface = tp_registry_find_model(tp_registry_get_default(),
                                                       "bert-base-uncased", &err);
  tp_model_config cfg;
  tp_model_overrides ov = {.layers = 2, .hidden = 32, .heads = 2, .ffn = 64, .max_positions = 64,
                           .vocab_size = 100};
  tp_model *m = iface && iface->preset_config("bert-base-uncased", &cfg) &&
                        tp_model_config_apply(&cfg, &ov, &err)
                    ? tp_model_new(iface, &cfg, ctx, 5, &err)
                    : NULL;
  if (!m) {
    TP_FAILF("tiny model: %s", err ? err->message : "no bert plugin");
    g_clear_error(&err);
  }
  return m;
}

typedef struct run_out {
  double loss, acc, val_loss, val_acc;
  float *flat[3]; /* values, Adam m, Adam v */
  int64_t nf;
  uint64_t syncs;
} run_out;

static void run_out_clear(run_out *r) {
  for (int i = 0; i < 3; i++) g_free(r->flat[i]);
}

/* One epoch on the synthetic data; clip and f16-free Adam W. */
static bool train_once(int batch, int accum, tp_collective *coll, double read_back_s,
                       run_out *out) {
  memset(out, 0, sizeof *out);
  tp_test_synth s;
  tp_test_synth_make(&s, 70, 24);
  GError *err = NULL;
  tp_ctx *ctx = tp_ctx_new(cpu(), &err);
  tp_model *m = tiny_model(ctx);
  tp_labelled data = {.seqs = &s.seqs, .labels = s.labels, .pad_id = 0};
  tp_train_options o = {.batch = batch, .eval_batch = 16, .epochs = 1, .lr = 2e-3, .seed = 11,
                        .optimizer = TP_ADAM_W, .weight_decay = 0.01, .clip_norm = 1.0,
                        .grad_accum = accum, .coll = coll, .read_back_s = read_back_s};
  tp_train_state st;
  tp_train_state_init(&st);
  uint64_t before = cpu()->stats.syncs;
  bool ok = m && tp_train(m, ctx, &o, &data, s.train, s.n_train, s.val, s.n_val, &st, NULL, &err);
  out->syncs = cpu()->stats.syncs - before;
  if (ok) {
    tp_epoch_stats *e = &g_array_index(st.history, tp_epoch_stats, 0);
    out->loss = e->loss;
    out->acc = e->acc;
    out->val_loss = e->val_loss;
    out->val_acc = e->val_acc;
    out->nf = tp_params_flat_floats(m->params);
    static const int which[3] = {0, 2, 3};
    for (int i = 0; ok && i < 3; i++) {
      out->flat[i] = g_new(float, out->nf);
      ok = tp_params_read_flat(m->params, ctx, which[i], out->flat[i], &err);
    }
  }
  if (!ok) {
    TP_FAILF("training (batch %d, %d micro-batches): %s", batch, accum, err ? err->message : "?");
    g_clear_error(&err);
  }
  tp_train_state_clear(&st);
  tp_model_free(m);
  tp_ctx_free(ctx);
  tp_test_synth_clear(&s);
  return ok;
}

static double rel(double a, double b) { return fabs(a - b) / fmax(fabs(a), 1e-30); }

/* The largest |a - b| over the flat buffers. */
static double max_abs(const run_out *a, const run_out *b, int which) {
  double w = 0;
  for (int64_t i = 0; i < a->nf; i++) w = fmax(w, fabs((double)a->flat[which][i] - b->flat[which][i]));
  return w;
}

static void same_training(const run_out *a, const run_out *b, const char *what) {
  g_test_message("%s: loss %.9g vs %.9g, val_loss %.9g vs %.9g, params max diff %.3g, m %.3g, v %.3g",
                 what, a->loss, b->loss, a->val_loss, b->val_loss, max_abs(a, b, 0),
                 max_abs(a, b, 1), max_abs(a, b, 2));
  TP_CHECK(rel(a->loss, b->loss) <= 1e-5);
  TP_CHECK(rel(a->acc, b->acc) <= 1e-5);
  TP_CHECK(rel(a->val_loss, b->val_loss) <= 1e-5);
  TP_CHECK(rel(a->val_acc, b->val_acc) <= 1e-5);
  TP_CHECK(max_abs(a, b, 0) <= 1e-5);
  TP_CHECK(max_abs(a, b, 1) <= 1e-5);
  TP_CHECK(max_abs(a, b, 2) <= 1e-5);
}

TP_TEST(BatchShare, GradAccumMatchesTheWholeBatch) {
  if (!cpu()) return;
  run_out one, two, three;
  /* batch 10 over 70 examples: 7 steps; 3 micro-batches of 3, 3 and 4 rows */
  if (!train_once(10, 1, NULL, 0, &one) || !train_once(10, 2, NULL, 0, &two) ||
      !train_once(10, 3, NULL, 0, &three))
    return;
  TP_CHECK(isfinite(one.loss) && isfinite(one.val_loss));
  same_training(&one, &two, "2 micro-batches");
  same_training(&one, &three, "3 micro-batches");
  /* the parts are not the whole: the parameters did change, and differ a little */
  TP_CHECK(max_abs(&one, &two, 0) > 0 || max_abs(&one, &three, 0) > 0);
  run_out_clear(&one);
  run_out_clear(&two);
  run_out_clear(&three);
}

TP_TEST(BatchShare, MoreMicroBatchesThanRowsInTheLastBatch) {
  if (!cpu()) return;
  run_out one, four;
  /* batch 12 over 70: the last batch has 10 rows; 12 micro-batches leave
   * some empty there */
  if (!train_once(12, 1, NULL, 0, &one) || !train_once(12, 12, NULL, 0, &four)) return;
  same_training(&one, &four, "12 micro-batches");
  run_out_clear(&one);
  run_out_clear(&four);
}

TP_TEST(BatchShare, TheOneProcessCollectiveChangesNothing) {
  if (!cpu()) return;
  tp_collective *c = tp_collective_single_new();
  TP_CHECK_INT_EQ(tp_collective_rank(c), 0);
  TP_CHECK_INT_EQ(tp_collective_size(c), 1);
  TP_CHECK_STR_EQ(tp_collective_name(c), "single");
  run_out a, b;
  if (train_once(10, 1, NULL, 0, &a) && train_once(10, 1, c, 0, &b)) {
    for (int i = 0; i < 3; i++)
      TP_CHECK(memcmp(a.flat[i], b.flat[i], (size_t)a.nf * sizeof(float)) == 0);
    TP_CHECK(a.loss == b.loss && a.val_loss == b.val_loss);
  }
  run_out_clear(&a);
  run_out_clear(&b);
  /* agreement alone: a failure is this rank's own error */
  GError *err = NULL;
  TP_CHECK(tp_collective_agree(c, true, NULL, &err));
  TP_CHECK(!tp_collective_agree(c, false, g_error_new(TP_ERROR, TP_ERROR_IO, "disk full"), &err));
  TP_CHECK(err && err->code == TP_ERROR_IO && strcmp(err->message, "disk full") == 0);
  g_clear_error(&err);
  /* a build without MPI says how to get it */
  if (!tp_collective_mpi_built()) {
    TP_CHECK(tp_collective_mpi_new(0, &err) == NULL);
    TP_CHECK(err && err->code == TP_ERROR_UNAVAILABLE && strstr(err->message, "without MPI"));
    g_clear_error(&err);
  }
  char *how = NULL, *why = NULL;
  TP_CHECK(tp_collective_use_device(c, cpu(), &how, &why, &err));
  TP_CHECK_STR_EQ(how, "host");
  TP_CHECK(why == NULL);
  g_free(how);
  tp_collective_free(c);
}

TP_TEST(BatchShare, SplitStepsSyncOncePerStepAtMost) {
  if (!cpu()) return;
  run_out every, once;
  /* 7 steps of 3 micro-batches; validation (2 batches) downloads twice more */
  if (!train_once(10, 3, NULL, 1e-9, &every) || !train_once(10, 3, NULL, 1e9, &once)) return;
  g_test_message("syncs: read back every step %llu, once per epoch %llu",
                 (unsigned long long)every.syncs, (unsigned long long)once.syncs);
  TP_CHECK(every.syncs <= 7 + 2);
  TP_CHECK_INT_EQ(once.syncs, 1 + 2);
  run_out_clear(&every);
  run_out_clear(&once);
}
