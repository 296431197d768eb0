/* tests/test_models.c — DistilBERT and BERT against PyTorch golden numbers
 * made by ../shared/reference/bert_reference.py (Hugging Face semantics), and
 * MPNet against golden numbers of Hugging Face's MPNetForSequenceClassification
 * (committed fixtures in tests/data/mpnet/, made by
 * tests/reference/make_mpnet_fixtures.sh: transformers is not in Debian), on
 * the CPU backend.
 * Tolerances: logits max|ours - theirs| / max|theirs| <= 1e-4; loss relative
 * 1e-4; each gradient's relative L2 error <= 1e-3; parameters after one
 * Keras-Adam / AdamW step max|diff| <= 1e-6 + 1e-2 * lr (a step moves each
 * parameter by about lr, so this is 1% of the step); the three-step loss
 * trajectory relative 1e-4.
 * Gradients that are zero in exact arithmetic (the attention key bias: adding
 * a constant to every score of a row leaves softmax unchanged) are float
 * noise in both implementations; for a tensor whose reference norm is below
 * 1e-6 of the largest gradient norm, the check is absolute: ||ours - theirs||
 * <= 1e-6 x that largest norm. Likewise Adam's step direction g / (|g| + eps)
 * is undefined for such noise, so elements whose reference gradient is below
 * 1e-5 in magnitude, but not exactly zero, only have to move by at most lr (+
 * weight decay). Exactly zero reference gradients of a real gradient
 * (embedding rows no token of the batch uses) get the strict bound: Adam must
 * leave them where weight decay alone puts them. */
#include <math.h>
#include <stdlib.h>

#include "tensorplug/backend.h"
#include "tensorplug/error.h"
#include "tensorplug/model.h"
#include "tensorplug/ops.h"
#include "tensorplug/safetensors.h"
#include "tp_test.h"

typedef struct fixture {
  char *dir;
  tp_safetensors *golden;
  double lr;
} fixture;

static bool open_golden(fixture *f);

/* Runs bert_reference.py with extra args into a fresh folder. */
static bool make_fixture(fixture *f, const char *arch, const char *extra) {
  f->dir = tp_test_tmpdir();
  char *script = g_build_filename(tp_test_shared_dir(), "reference", "bert_reference.py", NULL);
  char *cmd = g_strdup_printf("/usr/bin/python3 %s --arch %s --vocab-size 300 --max-pos 40 %s "
                              "--out %s", script, arch, extra, f->dir);
  char *out = NULL, *errout = NULL;
  int status = 0;
  GError *err = NULL;
  bool ok = g_spawn_command_line_sync(cmd, &out, &errout, &status, &err) &&
            g_spawn_check_wait_status(status, NULL);
  if (!ok) TP_FAILF("%s failed: %s%s", cmd, err ? err->message : "", errout ? errout : "");
  g_clear_error(&err);
  g_free(out);
  g_free(errout);
  g_free(cmd);
  g_free(script);
  return ok && open_golden(f);
}

/* A committed fixture folder tests/data/mpnet/NAME. */
static bool committed_fixture(fixture *f, const char *name) {
  f->dir = g_build_filename(tp_test_source_dir(), "tests", "data", "mpnet", name, NULL);
  return open_golden(f);
}

/* Opens f->dir/golden.safetensors and reads the learning rate of golden.json. */
static bool open_golden(fixture *f) {
  GError *err = NULL;
  char *gpath = g_build_filename(f->dir, "golden.safetensors", NULL);
  f->golden = tp_safetensors_open(gpath, &err);
  g_free(gpath);
  if (!f->golden) {
    TP_FAILF("golden: %s", err->message);
    g_clear_error(&err);
    return false;
  }
  char *jpath = g_build_filename(f->dir, "golden.json", NULL);
  JsonParser *jp = json_parser_new();
  if (json_parser_load_from_file(jp, jpath, NULL))
    f->lr = json_object_get_double_member(json_node_get_object(json_parser_get_root(jp)), "lr");
  if (!(f->lr > 0)) TP_FAILF("%s: no learning rate", jpath);
  g_object_unref(jp);
  g_free(jpath);
  return f->lr > 0;
}

static void fixture_clear(fixture *f) {
  if (f->golden) tp_safetensors_close(f->golden);
  g_free(f->dir);
}

static float *golden_f32(fixture *f, const char *name, int64_t *n) {
  const tp_st_tensor *t = tp_safetensors_find(f->golden, name);
  if (!t) {
    TP_FAILF("golden has no %s", name);
    return NULL;
  }
  float *v = g_new(float, t->numel + 1);
  GError *err = NULL;
  if (!tp_st_tensor_to_f32(t, v, &err)) {
    TP_FAILF("%s", err->message);
    g_clear_error(&err);
  }
  if (n) *n = t->numel;
  return v;
}

static tp_tensor *golden_i32(fixture *f, tp_ctx *ctx, const char *name) {
  const tp_st_tensor *t = tp_safetensors_find(f->golden, name);
  if (!t) return NULL;
  int32_t *v = g_new(int32_t, t->numel);
  memcpy(v, t->data, t->nbytes);
  tp_tensor *x = tp_tensor_from_host(ctx, TP_I32, t->ndim, t->shape, v);
  g_free(v);
  return x;
}

/* The backend under test: $TP_TEST_BACKEND (meson runs these tests on every
 * backend it built), else the CPU. */
static tp_backend *test_backend(void) {
  static tp_backend *be;
  const char *name = g_getenv("TP_TEST_BACKEND");
  GError *err = NULL;
  if (!be) be = tp_backend_open(NULL, name && *name ? name : "cpu", -1, 2, &err);
  if (!be) {
    TP_FAILF("backend %s: %s", name ? name : "cpu", err->message);
    g_clear_error(&err);
  }
  return be;
}

static tp_model *load_model(fixture *f, tp_ctx *ctx) {
  GError *err = NULL;
  tp_model_config cfg;
  const tp_model_iface *iface = NULL;
  char *cpath = g_build_filename(f->dir, "config.json", NULL);
  char *wpath = g_build_filename(f->dir, "model.safetensors", NULL);
  tp_model *m = NULL;
  if (tp_model_config_load(NULL, cpath, &iface, &cfg, &err)) {
    m = tp_model_new(iface, &cfg, ctx, 1, &err);
    tp_load_report rep = {0};
    if (m && !tp_model_load_weights(m, ctx, wpath, 1, &rep, &err)) g_clear_pointer(&m, tp_model_free);
    if (m && (rep.initialised || rep.ignored))
      TP_FAILF("load: %u initialised, %u ignored tensors", rep.initialised, rep.ignored);
    tp_load_report_clear(&rep);
  }
  if (err) {
    TP_FAILF("loading %s: %s", f->dir, err->message);
    g_clear_error(&err);
  }
  g_free(cpath);
  g_free(wpath);
  return m;
}

/* loss of the golden batch in eval mode; backward when train */
static tp_tensor *golden_loss(fixture *f, tp_model *m, tp_ctx *ctx, bool backward,
                              tp_tensor **logits_out) {
  tp_ctx_begin_step(ctx);
  tp_ctx_set_training(ctx, false); /* dropout off: the golden gradients are of eval mode */
  tp_ctx_set_grad_enabled(ctx, backward);
  tp_tensor *ids = golden_i32(f, ctx, "input_ids"), *mask = golden_i32(f, ctx, "attention_mask");
  tp_tensor *labels = golden_i32(f, ctx, "labels");
  tp_tensor *logits = tp_model_forward(m, ctx, ids, mask);
  tp_tensor *loss = tp_cross_entropy(ctx, logits, labels);
  GError *err = NULL;
  if (backward && loss && !tp_ctx_backward(ctx, loss, &err)) {
    TP_FAILF("backward: %s", err->message);
    g_clear_error(&err);
  }
  if (logits_out) *logits_out = logits;
  return loss;
}

static double rel_l2(const float *a, const float *b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) {
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

static float host_scalar(tp_ctx *ctx, tp_tensor *t) {
  float v = NAN;
  GError *err = NULL;
  if (!t || !tp_tensor_to_host(ctx, t, &v, &err)) {
    TP_FAILF("download: %s", err ? err->message : "no tensor");
    g_clear_error(&err);
  }
  return v;
}

static double l2(const float *a, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += (double)a[i] * a[i];
  return sqrt(s);
}

/* The largest L2 norm of any reference parameter gradient. */
static double max_grad_norm(fixture *f, tp_model *m) {
  double max_norm = 0;
  for (guint i = 0; i < tp_params_count(m->params); i++) {
    char key[256];
    g_snprintf(key, sizeof key, "grad.%s", tp_params_at(m->params, i)->name);
    int64_t n = 0;
    float *want = golden_f32(f, key, &n);
    if (want) max_norm = fmax(max_norm, l2(want, n));
    g_free(want);
  }
  return max_norm;
}

/* Checks parameters against golden PREFIX.<name> after one optimizer step. */
static void check_step(fixture *f, tp_model *m, tp_ctx *ctx, const char *prefix) {
  double tol = 1e-6 + 1e-2 * f->lr, max_norm = max_grad_norm(f, m);
  int64_t exact_zeros = 0;
  for (guint i = 0; i < tp_params_count(m->params); i++) {
    tp_tensor *p = tp_params_at(m->params, i);
    char key[256], gkey[256], bkey[256];
    g_snprintf(key, sizeof key, "%s.%s", prefix, p->name);
    g_snprintf(gkey, sizeof gkey, "grad.%s", p->name);
    int64_t n = 0;
    float *want = golden_f32(f, key, &n);
    float *gref = golden_f32(f, gkey, NULL);
    if (!want || !gref) continue;
    float *got = g_new(float, n);
    GError *err = NULL;
    if (!tp_params_get_f32(m->params, ctx, i, got, &err)) {
      TP_FAILF("%s: cannot read the parameter: %s", key, err->message);
      g_clear_error(&err);
      g_free(got);
      g_free(want);
      g_free(gref);
      continue;
    }
    (void)bkey;
    /* a tensor whose whole reference gradient is noise (zero in exact
     * arithmetic: the attention key bias) has no exact zeros to trust */
    bool noise_tensor = l2(gref, n) < 1e-6 * max_norm;
    double worst = 0, worst_noise = 0;
    for (int64_t j = 0; j < n; j++) {
      double d = fabs((double)got[j] - want[j]);
      /* an exact zero of a real gradient (an embedding row not in the batch)
       * moves only by weight decay in both implementations: the strict bound */
      bool exact_zero = gref[j] == 0.0f && !noise_tensor;
      exact_zeros += exact_zero;
      if (fabs(gref[j]) >= 1e-5 || exact_zero) worst = fmax(worst, d);
      else worst_noise = fmax(worst_noise, d);
    }
    if (worst > tol) TP_FAILF("%s: max |diff| %.3g > %.3g", key, worst, tol);
    if (worst_noise > 2.05 * f->lr) TP_FAILF("%s: noise-gradient elements moved %.3g", key, worst_noise);
    g_free(got);
    g_free(want);
    g_free(gref);
  }
  /* the golden batch uses few of the 300 embedding rows: the strict bound
   * above did check exact zeros */
  TP_CHECK(exact_zeros > 0);
}

/* Logits and loss of the golden batch, eval mode. */
static void check_logits(fixture *f, tp_model *m, tp_ctx *ctx, const char *label) {
  GError *err = NULL;
  tp_tensor *logits = NULL;
  tp_tensor *loss = golden_loss(f, m, ctx, false, &logits);
  int64_t nl = 0;
  float *want_logits = golden_f32(f, "logits", &nl);
  float *got = g_new(float, nl);
  if (!tp_tensor_to_host(ctx, logits, got, &err)) {
    TP_FAILF("%s: %s", label, err ? err->message : "no logits");
    g_clear_error(&err);
  }
  double maxdiff = 0, maxref = 0;
  for (int64_t i = 0; i < nl; i++) {
    maxdiff = fmax(maxdiff, fabs((double)got[i] - want_logits[i]));
    maxref = fmax(maxref, fabs((double)want_logits[i]));
  }
  if (!(maxdiff / maxref <= 1e-4)) TP_FAILF("%s: logits rel err %.3g", label, maxdiff / maxref);
  float *want_loss = golden_f32(f, "loss", NULL);
  TP_CHECK_NEAR(host_scalar(ctx, loss), want_loss[0], 1e-4 * fabs(want_loss[0]));
  g_free(got);
  g_free(want_logits);
  g_free(want_loss);
}

/* Logits, loss, every gradient, one Keras-Adam and one AdamW step and three
 * steps in a row against the fixture's golden numbers. */
static void check_fixture(fixture *f_, const char *label) {
  fixture f = *f_;
  tp_backend *be = test_backend();
  GError *err = NULL;
  tp_ctx *ctx = tp_ctx_new(be, &err);
  tp_model *m = load_model(&f, ctx);
  if (!m) goto out;
  check_logits(&f, m, ctx, label);

  /* gradients of every parameter */
  tp_params_zero_grad(m->params, ctx);
  golden_loss(&f, m, ctx, true, NULL);
  double max_norm = max_grad_norm(&f, m);
  for (guint i = 0; i < tp_params_count(m->params); i++) {
    tp_tensor *p = tp_params_at(m->params, i);
    char key[256];
    g_snprintf(key, sizeof key, "grad.%s", p->name);
    int64_t n = 0;
    float *want = golden_f32(&f, key, &n);
    if (!want) continue;
    float *g = g_new(float, n);
    TP_ASSERT(tp_tensor_to_host(ctx, p->grad, g, &err));
    if (l2(want, n) >= 1e-6 * max_norm) {
      double e = rel_l2(g, want, n);
      if (!(e <= 1e-3)) TP_FAILF("%s: %s relative L2 error %.3g", label, key, e);
    } else {
      float *d = g_new(float, n);
      for (int64_t j = 0; j < n; j++) d[j] = g[j] - want[j];
      if (!(l2(d, n) <= 1e-6 * max_norm))
        TP_FAILF("%s: %s (zero in exact arithmetic) differs by %.3g", label, key, l2(d, n));
      g_free(d);
    }
    g_free(g);
    g_free(want);
  }

  /* one Keras Adam step from these gradients */
  tp_adam_args keras = {.mode = TP_ADAM_KERAS, .lr = (float)f.lr, .beta1 = 0.9f, .beta2 = 0.999f,
                        .eps = 1e-7f, .step = 1, .grad_scale = 1.0f};
  tp_params_adam_step(m->params, ctx, &keras);
  check_step(&f, m, ctx, "keras_adam");
  tp_model_free(m);

  /* one AdamW step (weight decay 0.01 on every parameter) from fresh weights */
  m = load_model(&f, ctx);
  if (!m) goto out;
  tp_params_zero_grad(m->params, ctx);
  golden_loss(&f, m, ctx, true, NULL);
  tp_adam_args adamw = {.mode = TP_ADAM_W, .lr = (float)f.lr, .beta1 = 0.9f, .beta2 = 0.999f,
                        .eps = 1e-8f, .weight_decay = 0.01f, .step = 1, .grad_scale = 1.0f};
  tp_params_adam_step(m->params, ctx, &adamw);
  check_step(&f, m, ctx, "adamw");
  tp_model_free(m);

  /* three Keras-Adam steps in a row: four losses */
  m = load_model(&f, ctx);
  if (!m) goto out;
  float *want_steps = golden_f32(&f, "steps.loss", NULL);
  tp_params_reset_optimizer(m->params, ctx);
  for (int s = 0; s < 4; s++) {
    tp_params_zero_grad(m->params, ctx);
    float l = host_scalar(ctx, golden_loss(&f, m, ctx, s < 3, NULL));
    if (!(fabs(l - want_steps[s]) <= 1e-4 * fabs(want_steps[s]) + 1e-6))
      TP_FAILF("%s: loss before step %d: %.7g vs PyTorch %.7g", label, s + 1, l, want_steps[s]);
    keras.step = s + 1;
    if (s < 3) tp_params_adam_step(m->params, ctx, &keras);
  }
  g_free(want_steps);
  tp_model_free(m);
out:
  tp_ctx_free(ctx);
}

static void check_against_pytorch(const char *arch, const char *extra) {
  fixture f = {0};
  if (make_fixture(&f, arch, extra)) {
    char *label = g_strdup_printf("%s %s", arch, extra);
    check_fixture(&f, label);
    g_free(label);
  }
  fixture_clear(&f);
}

/* MPNet: fixtures made by Hugging Face's MPNetForSequenceClassification. */
static void check_mpnet(const char *name) {
  fixture f = {0};
  if (committed_fixture(&f, name)) {
    char *label = g_strdup_printf("mpnet %s", name);
    check_fixture(&f, label);
    g_free(label);
  }
  fixture_clear(&f);
}

TP_TEST(DistilBertVsPyTorch, Default) { check_against_pytorch("distilbert", ""); }
TP_TEST(DistilBertVsPyTorch, Hidden48Heads3) {
  check_against_pytorch("distilbert", "--hidden 48 --heads 3 --ffn 80 --layers 3");
}
TP_TEST(DistilBertVsPyTorch, Batch1) { check_against_pytorch("distilbert", "--batch 1 --seq 9"); }
TP_TEST(DistilBertVsPyTorch, SeqLen1) { check_against_pytorch("distilbert", "--batch 2 --seq 1"); }
TP_TEST(DistilBertVsPyTorch, MostlyPadding) {
  check_against_pytorch("distilbert", "--batch 7 --seq 23 --seed 3");
}
TP_TEST(DistilBertVsPyTorch, KeysWithoutPrefixLegacyLayerNorm) {
  check_against_pytorch("distilbert", "--keys-without-prefix --legacy-layernorm-names");
}

TP_TEST(BertVsPyTorch, Default) { check_against_pytorch("bert", ""); }
TP_TEST(BertVsPyTorch, Hidden48Heads3) {
  check_against_pytorch("bert", "--hidden 48 --heads 3 --ffn 80 --layers 3");
}
TP_TEST(BertVsPyTorch, Batch1) { check_against_pytorch("bert", "--batch 1 --seq 9"); }
TP_TEST(BertVsPyTorch, SeqLen1) { check_against_pytorch("bert", "--batch 2 --seq 1"); }
TP_TEST(BertVsPyTorch, MostlyPadding) { check_against_pytorch("bert", "--batch 7 --seq 23 --seed 3"); }
TP_TEST(BertVsPyTorch, KeysWithoutPrefix) { check_against_pytorch("bert", "--keys-without-prefix"); }
TP_TEST(BertVsPyTorch, LegacyLayerNormNames) {
  check_against_pytorch("bert", "--legacy-layernorm-names --seed 5");
}

TP_TEST(MPNetVsHuggingFace, Default) { check_mpnet("default"); }
/* A table of 40 rows: HF still uses 32 buckets, rows 32..39 stay unused. */
TP_TEST(MPNetVsHuggingFace, Hidden24Heads3Table40) { check_mpnet("hidden24-heads3-table40"); }
TP_TEST(MPNetVsHuggingFace, Batch1) { check_mpnet("batch1"); }
TP_TEST(MPNetVsHuggingFace, SeqLen1) { check_mpnet("seqlen1"); }
TP_TEST(MPNetVsHuggingFace, MostlyPadding) { check_mpnet("mostly-padding"); }
/* Distances up to 299: every logarithmic bucket and the clamp past 128. */
TP_TEST(MPNetVsHuggingFace, LongSequenceAllBuckets) { check_mpnet("long-seq300"); }
/* The sentence-transformers layout: no "mpnet." prefix. */
TP_TEST(MPNetVsHuggingFace, KeysWithoutPrefix) { check_mpnet("keys-without-prefix"); }
/* A <pad> among a row's tokens (as the tokenizer gives for a literal "<pad>"):
 * HF numbers positions past it, and so must we. Logits and loss only: HF's
 * nn.Embedding(padding_idx=1) also drops the gradient of that token's rows,
 * which tensorplug's embedding op does not (docs/architecture.md). */
TP_TEST(MPNetVsHuggingFace, PadTokenInsideTextPositions) {
  fixture f = {0};
  if (committed_fixture(&f, "pad-inside")) {
    GError *err = NULL;
    tp_ctx *ctx = tp_ctx_new(test_backend(), &err);
    tp_model *m = load_model(&f, ctx);
    if (m) check_logits(&f, m, ctx, "mpnet pad-inside");
    tp_model_free(m);
    tp_ctx_free(ctx);
  }
  fixture_clear(&f);
}

/* Save -> load gives identical logits, and the saved folder is a valid
 * Hugging Face folder (config keys, canonical names). */
/* Packing (tp_pack_plan): on a mostly padded batch the models run their
 * position-wise layers on the real tokens only; logits and every parameter
 * gradient match the padded reference (tp_ctx_set_fused(false)). */
static void check_packing(const char *arch) {
  fixture f = {0};
  if (!make_fixture(&f, arch, "--batch 7 --seq 23 --seed 3")) return;
  tp_backend *be = test_backend();
  float *res[2][2] = {{0}};
  int64_t cnt[2] = {0, 0};
  for (int s = 0; s < 2; s++) {
    GError *err = NULL;
    tp_ctx *ctx = tp_ctx_new(be, &err);
    tp_ctx_set_fused(ctx, s == 1);
    tp_model *m = load_model(&f, ctx);
    if (!m) {
      tp_ctx_free(ctx);
      break;
    }
    if (s == 1) { /* the plan is taken for this batch */
      tp_ctx_begin_step(ctx);
      tp_pack pk;
      TP_CHECK(tp_pack_plan(ctx, golden_i32(&f, ctx, "attention_mask"), TP_PACK_MAX_FILL, &pk));
      TP_CHECK(pk.n > 0 && pk.n < pk.batch * pk.len);
    }
    tp_params_zero_grad(m->params, ctx);
    tp_tensor *logits = NULL;
    golden_loss(&f, m, ctx, true, &logits);
    cnt[0] = logits ? tp_tensor_numel(logits) : 0;
    cnt[1] = tp_params_flat_floats(m->params);
    res[s][0] = g_new0(float, MAX(cnt[0], 1));
    res[s][1] = g_new0(float, cnt[1]);
    if (!logits || !tp_tensor_to_host(ctx, logits, res[s][0], &err) ||
        !tp_params_read_flat(m->params, ctx, 1, res[s][1], &err)) {
      TP_FAILF("%s: %s", arch, err ? err->message : "no logits");
      g_clear_error(&err);
    }
    tp_model_free(m);
    tp_ctx_free(ctx);
  }
  if (res[0][0] && res[1][0]) {
    double dl = rel_l2(res[1][0], res[0][0], cnt[0]), dg = rel_l2(res[1][1], res[0][1], cnt[1]);
    if (!(dl <= 1e-5)) TP_FAILF("%s packed logits: rel err %.3g", arch, dl);
    if (!(dg <= 1e-4)) TP_FAILF("%s packed gradients: rel err %.3g", arch, dg);
    if (l2(res[1][1], cnt[1]) == 0) TP_FAILF("%s: no gradient at all", arch);
  }
  for (int s = 0; s < 2; s++) {
    g_free(res[s][0]);
    g_free(res[s][1]);
  }
  fixture_clear(&f);
}

TP_TEST(Packing, DistilBertSameAsPadded) { check_packing("distilbert"); }
TP_TEST(Packing, BertSameAsPadded) { check_packing("bert"); }

TP_TEST(ModelFolder, SaveLoadRoundTripIdenticalLogits) {
  const char *archs[2] = {"distilbert", "bert"};
  for (int a = 0; a < 2; a++) {
    fixture f = {0};
    if (!make_fixture(&f, archs[a], "--keys-without-prefix")) return;
    GError *err = NULL;
    tp_ctx *ctx = tp_ctx_new(test_backend(), &err);
    tp_model *m = load_model(&f, ctx);
    TP_ASSERT(m != NULL);
    tp_tensor *l1 = NULL;
    golden_loss(&f, m, ctx, false, &l1);
    int64_t n = tp_tensor_numel(l1);
    float *before = g_new(float, n), *after = g_new(float, n);
    TP_ASSERT(tp_tensor_to_host(ctx, l1, before, &err));
    char *dir = g_build_filename(f.dir, "saved", NULL);
    char *vocab = g_build_filename(tp_test_shared_dir(), "data", "bert-base-uncased", "vocab.txt", NULL);
    TP_ASSERT(tp_model_save(m, ctx, dir, vocab, &err));
    tp_model_free(m);
    /* reload from the saved folder */
    g_free(f.dir);
    f.dir = dir;
    m = load_model(&f, ctx);
    TP_ASSERT(m != NULL);
    tp_tensor *l2 = NULL;
    golden_loss(&f, m, ctx, false, &l2);
    TP_ASSERT(tp_tensor_to_host(ctx, l2, after, &err));
    TP_CHECK(memcmp(before, after, (size_t)n * sizeof(float)) == 0);
    char *cfg_text = NULL, *cfg_path = g_build_filename(dir, "config.json", NULL);
    TP_ASSERT(g_file_get_contents(cfg_path, &cfg_text, NULL, NULL));
    TP_CHECK(strstr(cfg_text, a ? "\"BertForSequenceClassification\"" : "\"DistilBertForSequenceClassification\"") != NULL);
    TP_CHECK(strstr(cfg_text, "\"id2label\"") != NULL);
    char *vpath = g_build_filename(dir, "vocab.txt", NULL);
    TP_CHECK(g_file_test(vpath, G_FILE_TEST_IS_REGULAR));
    /* canonical HF names, with the prefix */
    char *wpath = g_build_filename(dir, "model.safetensors", NULL);
    tp_safetensors *st = tp_safetensors_open(wpath, &err);
    TP_ASSERT_NO_ERROR(err);
    TP_CHECK(tp_safetensors_find(st, a ? "bert.embeddings.word_embeddings.weight"
                                       : "distilbert.embeddings.word_embeddings.weight") != NULL);
    tp_safetensors_close(st);
    g_free(wpath);
    g_free(vpath);
    g_free(cfg_text);
    g_free(cfg_path);
    g_free(vocab);
    g_free(before);
    g_free(after);
    tp_model_free(m);
    tp_ctx_free(ctx);
    fixture_clear(&f);
  }
}

/* Weights that do not fit the config are refused naming file, tensor,
 * expected and found shapes. */
TP_TEST(ModelFolder, WrongShapeForConfigIsRefused) {
  fixture f = {0};
  if (!make_fixture(&f, "bert", "")) return;
  GError *err = NULL;
  tp_ctx *ctx = tp_ctx_new(test_backend(), &err);
  char *cpath = g_build_filename(f.dir, "config.json", NULL);
  char *wpath = g_build_filename(f.dir, "model.safetensors", NULL);
  tp_model_config cfg;
  const tp_model_iface *iface = NULL;
  TP_ASSERT(tp_model_config_load(NULL, cpath, &iface, &cfg, &err));
  cfg.ffn = 40; /* the file has 64 */
  tp_model *m = tp_model_new(iface, &cfg, ctx, 1, &err);
  TP_ASSERT(m != NULL);
  TP_CHECK(!tp_model_load_weights(m, ctx, wpath, 1, NULL, &err));
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "intermediate.dense.weight\" has shape [64, 32], but the config implies [40, 32]");
  tp_model_free(m);
  /* a checkpoint of the other architecture */
  cfg.ffn = 64;
  const tp_model_iface *distil = tp_registry_find_model(tp_registry_get_default(), "distilbert", &err);
  tp_model_config dcfg;
  TP_ASSERT(distil && distil->preset_config("distilbert", &dcfg));
  dcfg.layers = 2;
  dcfg.hidden = 32;
  dcfg.heads = 4;
  dcfg.ffn = 64;
  dcfg.vocab_size = 300;
  dcfg.max_positions = 40;
  m = tp_model_new(distil, &dcfg, ctx, 1, &err);
  TP_ASSERT(m != NULL);
  TP_CHECK(!tp_model_load_weights(m, ctx, wpath, 1, NULL, &err));
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "is missing");
  tp_model_free(m);
  g_free(cpath);
  g_free(wpath);
  tp_ctx_free(ctx);
  fixture_clear(&f);
}

/* The full-size presets build and run a forward pass on the CPU. */
static void full_size_forward(const char *preset, int64_t want_params) {
  GError *err = NULL;
  const tp_model_iface *iface = tp_registry_find_model(tp_registry_get_default(), preset, &err);
  TP_ASSERT_NO_ERROR(err);
  tp_model_config cfg;
  TP_ASSERT(iface->preset_config(preset, &cfg));
  tp_ctx *ctx = tp_ctx_new(test_backend(), &err);
  tp_model *m = tp_model_new(iface, &cfg, ctx, 42, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK_INT_EQ(tp_params_numel(m->params), want_params);
  tp_ctx_begin_step(ctx);
  tp_ctx_set_training(ctx, false);
  enum { B = 2, T = 128 };
  int32_t ids[B * T], mask[B * T];
  for (int i = 0; i < B * T; i++) {
    ids[i] = 1000 + (i * 7919) % 29000;
    mask[i] = (i / T == 1 && i % T >= 100) ? 0 : 1; /* second row padded */
  }
  ids[0] = ids[T] = 101;
  int64_t shape[2] = {B, T};
  tp_tensor *t_ids = tp_tensor_from_host(ctx, TP_I32, 2, shape, ids);
  tp_tensor *t_mask = tp_tensor_from_host(ctx, TP_I32, 2, shape, mask);
  tp_tensor *logits = tp_model_forward(m, ctx, t_ids, t_mask);
  float out[B * 2];
  TP_ASSERT(logits && tp_tensor_to_host(ctx, logits, out, &err));
  TP_CHECK_INT_EQ(logits->shape[0], B);
  TP_CHECK_INT_EQ(logits->shape[1], 2);
  for (int i = 0; i < B * 2; i++) TP_CHECK(isfinite(out[i]));
  tp_model_free(m);
  tp_ctx_free(ctx);
}

TP_TEST(FullSizePresets, DistilBertBaseUncased) { full_size_forward("distilbert-base-uncased", 66955010); }
TP_TEST(FullSizePresets, BertBaseUncased) { full_size_forward("bert_base_en_uncased", 109483778); }
/* = sum(p.numel()) of transformers' MPNetForSequenceClassification(num_labels=2)
 * with all-mpnet-base-v2's config.json */
TP_TEST(FullSizePresets, AllMpnetBaseV2) { full_size_forward("all-mpnet-base-v2", 109488002); }

/* HF's create_position_ids_from_input_ids: <pad> (1) keeps 1, the others
 * count from 2, skipping <pad> wherever it is. */
TP_TEST(MPNetModel, PositionIdsFromIds) {
  GError *err = NULL;
  tp_ctx *ctx = tp_ctx_new(test_backend(), &err);
  TP_ASSERT_NO_ERROR(err);
  tp_ctx_begin_step(ctx);
  static const int32_t ids[2 * 6] = {0, 7, 1, 9, 2, 1, 0, 5, 2, 1, 1, 1};
  static const int32_t want[2 * 6] = {2, 3, 1, 4, 5, 1, 2, 3, 4, 1, 1, 1};
  int64_t shape[2] = {2, 6};
  tp_tensor *t = tp_tensor_from_host(ctx, TP_I32, 2, shape, ids);
  tp_tensor *pos = tp_position_ids_from_ids(ctx, t, 1);
  int32_t got[2 * 6] = {0};
  TP_ASSERT(pos && tp_tensor_to_host(ctx, pos, got, &err));
  TP_CHECK(memcmp(got, want, sizeof want) == 0);
  tp_ctx_free(ctx);
}

/* Save -> load gives identical logits; the folder is what HF's
 * MPNetForSequenceClassification reads (config keys, canonical names). */
TP_TEST(ModelFolder, MPNetSaveLoadRoundTrip) {
  fixture f = {0};
  if (!committed_fixture(&f, "keys-without-prefix")) return;
  GError *err = NULL;
  tp_ctx *ctx = tp_ctx_new(test_backend(), &err);
  tp_model *m = load_model(&f, ctx);
  TP_ASSERT(m != NULL);
  tp_tensor *l1 = NULL;
  golden_loss(&f, m, ctx, false, &l1);
  int64_t n = tp_tensor_numel(l1);
  float *before = g_new(float, n), *after = g_new(float, n);
  TP_ASSERT(tp_tensor_to_host(ctx, l1, before, &err));
  char *tmp = tp_test_tmpdir();
  char *dir = g_build_filename(tmp, "saved", NULL);
  TP_ASSERT(tp_model_save(m, ctx, dir, NULL, &err));
  tp_model_free(m);
  fixture saved = f; /* same golden, the saved folder */
  saved.dir = dir;
  m = load_model(&saved, ctx);
  TP_ASSERT(m != NULL);
  tp_tensor *l2 = NULL;
  golden_loss(&saved, m, ctx, false, &l2);
  TP_ASSERT(tp_tensor_to_host(ctx, l2, after, &err));
  TP_CHECK(memcmp(before, after, (size_t)n * sizeof(float)) == 0);
  char *cfg_text = NULL, *cfg_path = g_build_filename(dir, "config.json", NULL);
  TP_ASSERT(g_file_get_contents(cfg_path, &cfg_text, NULL, NULL));
  TP_CHECK(strstr(cfg_text, "\"MPNetForSequenceClassification\"") != NULL);
  TP_CHECK(strstr(cfg_text, "\"relative_attention_num_buckets\" : 32") != NULL);
  TP_CHECK(strstr(cfg_text, "\"layer_norm_eps\" : 1.0000000000000001e-05") ||
           strstr(cfg_text, "\"layer_norm_eps\" : 1e-05"));
  char *wpath = g_build_filename(dir, "model.safetensors", NULL);
  tp_safetensors *st = tp_safetensors_open(wpath, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK(tp_safetensors_find(st, "mpnet.encoder.relative_attention_bias.weight") != NULL);
  TP_CHECK(tp_safetensors_find(st, "classifier.out_proj.weight") != NULL);
  tp_safetensors_close(st);
  tp_model_free(m);
  tp_ctx_free(ctx);
  g_free(wpath);
  g_free(cfg_text);
  g_free(cfg_path);
  g_free(before);
  g_free(after);
  g_free(dir);
  g_free(tmp);
  if (f.golden) tp_safetensors_close(f.golden);
  g_free(f.dir);
}

/* Bad configs and inputs are errors that say what to change. */
TP_TEST(MPNetModel, Errors) {
  GError *err = NULL;
  char *dir = tp_test_tmpdir();
  char *cpath = g_build_filename(dir, "config.json", NULL);
  TP_ASSERT(g_file_set_contents(cpath, "{\"model_type\": \"mpnet\", \"vocab_size\": 48, "
                                "\"hidden_size\": 16, \"num_hidden_layers\": 1, "
                                "\"num_attention_heads\": 4, \"intermediate_size\": 32, "
                                "\"relative_attention_num_buckets\": 16}", -1, NULL));
  const tp_model_iface *iface = NULL;
  tp_model_config cfg;
  TP_CHECK(!tp_model_config_load(NULL, cpath, &iface, &cfg, &err));
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "relative_attention_num_buckets is 16, but MPNet puts "
                                       "distances into 32 buckets");
  /* a sequence longer than the positions allow (max_position_embeddings 14: 12 tokens) */
  fixture f = {0};
  if (committed_fixture(&f, "default")) {
    tp_ctx *ctx = tp_ctx_new(test_backend(), &err);
    tp_model *m = load_model(&f, ctx);
    TP_ASSERT(m != NULL);
    tp_ctx_begin_step(ctx);
    int32_t ids[13] = {0};
    int64_t shape[2] = {1, 13};
    tp_tensor *t = tp_tensor_from_host(ctx, TP_I32, 2, shape, ids);
    TP_CHECK(tp_model_forward(m, ctx, t, NULL) == NULL);
    TP_CHECK(!tp_ctx_check(ctx, &err));
    TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "sequence length 13 exceeds MPNet's 12 "
                                                   "positions");
    tp_model_free(m);
    tp_ctx_free(ctx);
  }
  fixture_clear(&f);
  g_free(cpath);
  g_free(dir);
}

/* ---- inference memory: tp_ctx_release ---- */

static tp_tensor *filled(tp_ctx *ctx, int64_t n, float base) {
  float *v = g_new(float, n);
  for (int64_t i = 0; i < n; i++) v[i] = base + (float)i;
  tp_tensor *t = tp_tensor_from_host(ctx, TP_F32, 1, &n, v);
  g_free(v);
  return t;
}

static bool holds(tp_ctx *ctx, tp_tensor *t, float base) {
  int64_t n = t ? tp_tensor_numel(t) : 0;
  float *v = g_new(float, MAX(n, 1));
  GError *err = NULL;
  bool ok = t && tp_tensor_to_host(ctx, t, v, &err);
  for (int64_t i = 0; ok && i < n; i++) ok = v[i] == base + (float)i;
  g_clear_error(&err);
  g_free(v);
  return ok;
}

TP_TEST(InferenceMemory, ReleaseKeepsOneTensorAtTheMark) {
  GError *err = NULL;
  tp_ctx *ctx = tp_ctx_new(test_backend(), &err);
  TP_ASSERT_NO_ERROR(err);
  tp_ctx_begin_step(ctx);
  tp_ctx_set_training(ctx, false); /* not recording */
  tp_tensor *before = filled(ctx, 1000, 1.0f);
  tp_arena_mark m = tp_ctx_mark(ctx);
  TP_CHECK(filled(ctx, 1 << 18, 5.0f) != NULL); /* an intermediate: 1 MiB */
  tp_tensor *keep = filled(ctx, 257, 7.0f);
  tp_tensor *kept = tp_ctx_release(ctx, m, keep);
  TP_ASSERT(kept != NULL && kept != keep);
  TP_CHECK(kept->ndim == 1 && kept->shape[0] == 257 && kept->dtype == TP_F32);
  TP_CHECK(holds(ctx, kept, 7.0f) && holds(ctx, before, 1.0f));
  /* in use: what was before the mark and the kept tensor (aligned), no more */
  size_t live = tp_ctx_mark(ctx).live;
  TP_CHECK(live > m.live && live - m.live < 4096);
  /* a tensor right at the mark cannot move onto itself: kept as it is */
  tp_arena_mark m2 = tp_ctx_mark(ctx);
  tp_tensor *at = filled(ctx, 300, 3.0f);
  TP_CHECK(tp_ctx_release(ctx, m2, at) == at && holds(ctx, at, 3.0f));
  /* a tensor older than the mark: the mark's later allocations go */
  tp_arena_mark m3 = tp_ctx_mark(ctx);
  TP_CHECK(filled(ctx, 1 << 16, 0.0f) != NULL);
  TP_CHECK(tp_ctx_release(ctx, m3, before) == before && tp_ctx_mark(ctx).live == m3.live);
  /* recording: the tape needs everything, nothing is given back */
  tp_ctx_set_grad_enabled(ctx, true);
  tp_arena_mark m4 = tp_ctx_mark(ctx);
  TP_CHECK(filled(ctx, 1 << 16, 0.0f) != NULL);
  tp_tensor *k4 = filled(ctx, 10, 2.0f);
  TP_CHECK(tp_ctx_release(ctx, m4, k4) == k4 && tp_ctx_mark(ctx).live > m4.live + (1 << 18));
  /* a mark of an earlier step is ignored */
  tp_ctx_set_grad_enabled(ctx, false);
  tp_ctx_begin_step(ctx);
  tp_tensor *k5 = filled(ctx, 10, 4.0f);
  TP_CHECK(tp_ctx_release(ctx, m, k5) == k5 && holds(ctx, k5, 4.0f));
  TP_CHECK(tp_ctx_check(ctx, &err));
  TP_ASSERT_NO_ERROR(err);
  tp_ctx_free(ctx);
}

/* Arena after two forwards of batch x seq tokens (the second step starts with
 * the arena the first one needed), and the logits of the last. */
static size_t forward_arena(const char *arch, int layers, bool record, float *logits) {
  GError *err = NULL;
  tp_ctx *ctx = tp_ctx_new(test_backend(), &err);
  tp_model_source src = {.model = arch, .init_random = true,
                         .ov = {.layers = layers, .hidden = 64, .heads = 2, .ffn = 256,
                                .vocab_size = 500}};
  tp_model_config cfg;
  const tp_model_iface *iface = NULL;
  char *wp = NULL, *md = NULL;
  tp_model *m = tp_model_resolve(NULL, &src, &iface, &cfg, &wp, &md, &err)
                    ? tp_model_new(iface, &cfg, ctx, 7, &err) : NULL;
  enum { B = 16, T = 128 };
  int32_t *ids = g_new(int32_t, B * T), *mask = g_new(int32_t, B * T);
  for (int i = 0; i < B * T; i++) ids[i] = 5 + (i * 7) % 400, mask[i] = i % T < T - 3 * (i / T);
  for (int s = 0; m && s < 2; s++) {
    tp_ctx_begin_step(ctx);
    tp_ctx_set_training(ctx, false);
    tp_ctx_set_grad_enabled(ctx, record);
    int64_t sh[2] = {B, T};
    tp_tensor *z = tp_model_forward(m, ctx, tp_tensor_from_host(ctx, TP_I32, 2, sh, ids),
                                    tp_tensor_from_host(ctx, TP_I32, 2, sh, mask));
    if (!z || !tp_tensor_to_host(ctx, z, logits, &err)) break;
  }
  if (!m || err) TP_FAILF("%s, %d layers: %s", arch, layers, err ? err->message : "?");
  g_clear_error(&err);
  size_t bytes = tp_ctx_arena_bytes(ctx);
  tp_model_free(m);
  tp_ctx_free(ctx);
  g_free(ids);
  g_free(mask);
  g_free(wp);
  g_free(md);
  return bytes;
}

/* Evaluation keeps one layer's activations at a time (the models call
 * tp_ctx_release after each layer): its arena does not grow with depth, while
 * a recording forward keeps them all; the logits are the same bits. */
static void check_inference_memory(const char *arch) {
  enum { N = 16 * 2 };
  float z2[N], z8[N], z8r[N];
  size_t a2 = forward_arena(arch, 2, false, z2), a8 = forward_arena(arch, 8, false, z8);
  size_t a8r = forward_arena(arch, 8, true, z8r);
  printf("%s forward arena, 16 x 128 tokens: 2 layers %.1f MB, 8 layers %.1f MB, 8 layers "
         "recording %.1f MB\n", arch, a2 / 1e6, a8 / 1e6, a8r / 1e6);
  TP_CHECK(a8 <= a2 + a2 / 4);
  TP_CHECK(a8r > 2 * a8);
  TP_CHECK(memcmp(z8, z8r, sizeof z8) == 0);
  (void)z2;
}

TP_TEST(InferenceMemory, DistilBertOneLayerAtATime) { check_inference_memory("distilbert"); }
TP_TEST(InferenceMemory, BertOneLayerAtATime) { check_inference_memory("bert"); }
TP_TEST(InferenceMemory, MPNetOneLayerAtATime) { check_inference_memory("mpnet"); }
