/* tests/test_backend_train.c — training on the backend under test
 * ($TP_TEST_BACKEND, default cpu) against the CPU backend:
 *  - host synchronisations per training step (at most one: the read-back
 *    of losses and accuracy at the logging interval);
 *  - a tiny model trained one epoch with the same seed gives the CPU's
 *    validation loss (dropout draws the same Philox masks everywhere);
 *  - one step of full-size DistilBERT and BERT-base (batch 2, length 128)
 *    gives the CPU's loss and gradient norm, whatever the device's binding
 *    limit (420 MiB of BERT-base parameters under lavapipe's 128 MiB). */
#include <math.h>

#include "tensorplug/backend.h"
#include "tensorplug/model.h"
#include "tensorplug/ops.h"
#include "tensorplug/train.h"
#include "tp_test.h"
#include "tp_test_synth.h"

static tp_backend *open_backend(const char *name, bool caps) {
  char *saved[2] = {NULL, NULL};
  const char *vars[2] = {"TENSORPLUG_MAX_BINDING_BYTES", "TENSORPLUG_MAX_ALLOC_BYTES"};
  if (!caps)
    for (int i = 0; i < 2; i++) {
      saved[i] = g_strdup(g_getenv(vars[i]));
      g_unsetenv(vars[i]);
    }
  GError *err = NULL;
  tp_backend *b = tp_backend_open(NULL, name, -1, 2, &err);
  for (int i = 0; i < 2; i++)
    if (saved[i]) g_setenv(vars[i], saved[i], TRUE);
  g_free(saved[0]);
  g_free(saved[1]);
  if (!b) {
    TP_FAILF("backend %s: %s", name, err->message);
    g_clear_error(&err);
  }
  return b;
}

/* 0: the CPU reference (no caps), 1: the backend under test. */
static tp_backend *backend(int which) {
  static tp_backend *be[2];
  if (!be[which]) {
    const char *t = g_getenv("TP_TEST_BACKEND");
    be[which] = which == 0 ? open_backend("cpu", false) : open_backend(t && *t ? t : "cpu", true);
  }
  return be[which];
}

static bool preset(const char *name, tp_model_config *cfg, const tp_model_iface **iface) {
  GError *err = NULL;
  *iface = tp_registry_find_model(tp_registry_get_default(), name, &err);
  if (!*iface || !(*iface)->preset_config(name, cfg)) {
    TP_FAILF("preset %s: %s", name, err ? err->message : "unknown");
    g_clear_error(&err);
    return false;
  }
  return true;
}

/* ---- a tiny model on synthetic data: the label is whether token 7 occurs ---- */

static tp_model *tiny_model(tp_ctx *ctx) {
  tp_model_config cfg;
  const tp_model_iface *iface;
  if (!preset("bert-base-uncased", &cfg, &iface)) return NULL;
  tp_model_overrides ov = {.layers = 2, .hidden = 32, .heads = 2, .ffn = 64, .max_positions = 64,
                           .vocab_size = 100};
  GError *err = NULL;
  tp_model *m = tp_model_config_apply(&cfg, &ov, &err) ? tp_model_new(iface, &cfg, ctx, 5, &err)
                                                         : NULL;
  if (!m) {
    TP_FAILF("tiny model: %s", err->message);
    g_clear_error(&err);
  }
  return m;
}

typedef struct sync_probe {
  tp_backend *be;
  uint64_t at_first_val;
} sync_probe;

static void on_progress(const tp_progress *p, void *user) {
  sync_probe *sp = user;
  if (strcmp(p->phase, "val") == 0 && sp->at_first_val == 0) sp->at_first_val = sp->be->stats.syncs;
}

/* Host synchronisations of one epoch's training steps (before validation). */
static int64_t train_syncs(double read_back_s, int64_t *steps) {
  tp_backend *be = backend(1);
  if (!be) return -1;
  tp_test_synth s;
  tp_test_synth_make(&s, 96, 16);
  GError *err = NULL;
  tp_ctx *ctx = tp_ctx_new(be, &err);
  tp_model *m = tiny_model(ctx);
  tp_labelled data = {.seqs = &s.seqs, .labels = s.labels, .pad_id = 0};
  tp_train_options o = {.batch = 8, .eval_batch = 8, .epochs = 1, .lr = 1e-3, .seed = 3,
                        .optimizer = TP_ADAM_KERAS, .clip_norm = 1.0, .read_back_s = read_back_s};
  tp_train_state st;
  tp_train_state_init(&st);
  sync_probe sp = {.be = be};
  tp_train_hooks h = {.progress = on_progress, .user = &sp};
  uint64_t before = be->stats.syncs;
  bool ok = m && tp_train(m, ctx, &o, &data, s.train, s.n_train, s.val, s.n_val, &st, &h, &err);
  if (!ok) {
    TP_FAILF("training: %s", err ? err->message : "?");
    g_clear_error(&err);
  }
  *steps = 96 / 8;
  /* the first validation batch downloaded its logits once before reporting */
  int64_t n = ok ? (int64_t)(sp.at_first_val - before) - 1 : -1;
  tp_train_state_clear(&st);
  tp_model_free(m);
  tp_ctx_free(ctx);
  tp_test_synth_clear(&s);
  return n;
}

TP_TEST(BackendTrain, AtMostOneHostSyncPerStep) {
  int64_t steps = 0;
  /* reading back after every step: exactly one synchronisation per step */
  int64_t every = train_syncs(1e-9, &steps);
  TP_CHECK(every >= 1);
  TP_CHECK(every <= steps);
  g_test_message("read back every step: %lld syncs in %lld steps", (long long)every,
                 (long long)steps);
  /* reading back only at the epoch's end: one for the whole epoch */
  int64_t once = train_syncs(1e9, &steps);
  TP_CHECK_INT_EQ(once, 1);
}

/* ---- the same epoch on the CPU and on the backend under test ---- */

static double epoch_val_loss(tp_backend *be, double *train_loss) {
  tp_test_synth s;
  tp_test_synth_make(&s, 64, 32);
  GError *err = NULL;
  tp_ctx *ctx = tp_ctx_new(be, &err);
  tp_model *m = tiny_model(ctx);
  tp_labelled data = {.seqs = &s.seqs, .labels = s.labels, .pad_id = 0};
  tp_train_options o = {.batch = 8, .eval_batch = 16, .epochs = 1, .lr = 1e-3, .seed = 11,
                        .optimizer = TP_ADAM_W, .weight_decay = 0.01, .clip_norm = 1.0};
  tp_train_state st;
  tp_train_state_init(&st);
  double v = NAN;
  if (m && tp_train(m, ctx, &o, &data, s.train, s.n_train, s.val, s.n_val, &st, NULL, &err)) {
    v = g_array_index(st.history, tp_epoch_stats, 0).val_loss;
    *train_loss = g_array_index(st.history, tp_epoch_stats, 0).loss;
  } else {
    TP_FAILF("training on %s: %s", be->name, err ? err->message : "?");
    g_clear_error(&err);
  }
  tp_train_state_clear(&st);
  tp_model_free(m);
  tp_ctx_free(ctx);
  tp_test_synth_clear(&s);
  return v;
}

TP_TEST(BackendTrain, OneEpochGivesTheCpuValidationLoss) {
  if (!backend(0) || !backend(1)) return;
  double tl0 = 0, tl1 = 0;
  double v0 = epoch_val_loss(backend(0), &tl0), v1 = epoch_val_loss(backend(1), &tl1);
  g_test_message("val loss cpu %.9g, %s %.9g", v0, backend(1)->name, v1);
  TP_CHECK(fabs(v1 - v0) <= 1e-4 * fabs(v0));
  TP_CHECK(fabs(tl1 - tl0) <= 1e-4 * fabs(tl0));
}

/* ---- one full-size training step ---- */

static bool full_step(tp_backend *be, const char *name, double *loss, double *norm) {
  tp_model_config cfg;
  const tp_model_iface *iface;
  if (!preset(name, &cfg, &iface)) return false;
  GError *err = NULL;
  tp_ctx *ctx = tp_ctx_new(be, &err);
  tp_model *m = tp_model_new(iface, &cfg, ctx, 9, &err);
  bool ok = m != NULL;
  if (ok) {
    const int B = 2, T = 128;
    int32_t ids[2 * 128], mask[2 * 128], lab[2] = {0, 1};
    GRand *r = g_rand_new_with_seed(8);
    for (int i = 0; i < B * T; i++) {
      ids[i] = i % T == 0 ? 101 : g_rand_int_range(r, 1000, 30000);
      mask[i] = !(i >= T && i % T >= 100); /* the second row is padded after 100 */
    }
    g_rand_free(r);
    int64_t sh[2] = {B, T}, ls[1] = {B};
    tp_ctx_begin_step(ctx);
    tp_ctx_set_training(ctx, true);
    tp_ctx_set_rng(ctx, 4, 1ull << 40);
    tp_tensor *x = tp_tensor_from_host(ctx, TP_I32, 2, sh, ids);
    tp_tensor *mk = tp_tensor_from_host(ctx, TP_I32, 2, sh, mask);
    tp_tensor *y = tp_tensor_from_host(ctx, TP_I32, 1, ls, lab);
    tp_tensor *l = tp_cross_entropy(ctx, tp_model_forward(m, ctx, x, mk), y);
    tp_params_zero_grad(m->params, ctx);
    float lv = NAN;
    ok = tp_ctx_backward(ctx, l, &err) && tp_tensor_to_host(ctx, l, &lv, &err) &&
         tp_params_grad_norm(m->params, ctx, norm, &err);
    *loss = lv;
  }
  if (!ok) {
    TP_FAILF("%s on %s: %s", name, be->name, err ? err->message : "?");
    g_clear_error(&err);
  }
  tp_model_free(m);
  tp_ctx_free(ctx);
  return ok;
}

static void full_size_matches(const char *name) {
  if (!backend(0) || !backend(1)) return;
  double l0 = 0, n0 = 0, l1 = 0, n1 = 0;
  if (!full_step(backend(0), name, &l0, &n0) || !full_step(backend(1), name, &l1, &n1)) return;
  g_test_message("%s: loss cpu %.9g %s %.9g; grad norm cpu %.9g %s %.9g", name, l0,
                 backend(1)->name, l1, n0, backend(1)->name, n1);
  TP_CHECK(fabs(l1 - l0) <= 1e-4 * fabs(l0));
  TP_CHECK(fabs(n1 - n0) <= 1e-4 * fabs(n0));
}

TP_TEST(BackendTrain, FullSizeDistilBertStepMatchesCpu) { full_size_matches("distilbert-base-uncased"); }
TP_TEST(BackendTrain, FullSizeBertBaseStepMatchesCpu) { full_size_matches("bert-base-uncased"); }
