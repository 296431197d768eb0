/* tests/test_gradcheck.c — every differentiable op's backward against central
 * finite differences, on the CPU backend, three shapes per op (each set has a
 * size-1 dimension and a size that is not a multiple of 8).
 *
 * L = sum_i y_i * r_i with a fixed random r, so dL/dy = r is seeded with
 * tp_ctx_backward_from(). Numerical: (L(x + h) - L(x - h)) / 2h in f32 with
 * h = 1e-2, L summed in double. Tolerance: |num - ana| <= 2e-3 + 2e-2 |ana|
 * (f32 round-off of L over h dominates; real errors are far larger). */
#include <math.h>

#include "tensorplug/backend.h"
#include "tensorplug/ops.h"
#include "tp_test.h"

#define MAX_IN 5
#define H_STEP 1e-2f
#define MAX_PROBES 96 /* elements probed per input (all when fewer) */

typedef struct gc_input {
  tp_dtype dtype;
  int ndim;
  int64_t shape[4];
  bool diff;     /* differentiate with respect to this input */
  float *f;      /* f32 host values */
  int32_t *i;    /* i32 host values */
} gc_input;

typedef tp_tensor *(*gc_fn)(tp_ctx *ctx, tp_tensor **in, const void *user);

static int64_t numel_of(const gc_input *g) {
  int64_t n = 1;
  for (int d = 0; d < g->ndim; d++) n *= g->shape[d];
  return n;
}

static tp_backend *cpu(void) {
  static tp_backend *be;
  if (!be) {
    GError *err = NULL;
    be = tp_backend_open(NULL, "cpu", 0, 2, &err);
    if (!be) {
      TP_FAILF("cannot open the cpu backend: %s", err->message);
      g_clear_error(&err);
    }
  }
  return be;
}

static float urand(GRand *r, float lo, float hi) { return (float)g_rand_double_range(r, lo, hi); }

/* Runs the forward; returns L (and y's host copy in *yout when asked). */
static double run_forward(tp_ctx *ctx, gc_input *ins, int n_in, gc_fn fn, const void *user,
                          const float *r, tp_tensor **in_t, tp_tensor **y_t) {
  tp_ctx_begin_step(ctx);
  tp_ctx_set_rng(ctx, 1234, 0); /* dropout draws the same mask every time */
  for (int k = 0; k < n_in; k++) {
    in_t[k] = tp_tensor_from_host(ctx, ins[k].dtype, ins[k].ndim, ins[k].shape,
                                  ins[k].dtype == TP_I32 ? (void *)ins[k].i : (void *)ins[k].f);
    if (in_t[k]) in_t[k]->requires_grad = ins[k].diff;
  }
  tp_tensor *y = fn(ctx, in_t, user);
  GError *err = NULL;
  if (!y || !tp_ctx_check(ctx, &err)) {
    TP_FAILF("forward failed: %s", err ? err->message : "no output");
    g_clear_error(&err);
    return NAN;
  }
  int64_t n = tp_tensor_numel(y);
  float *yh = g_new(float, n);
  if (!tp_tensor_to_host(ctx, y, yh, &err)) {
    TP_FAILF("download failed: %s", err->message);
    g_clear_error(&err);
  }
  double l = 0;
  for (int64_t j = 0; j < n; j++) l += (double)yh[j] * r[j];
  g_free(yh);
  if (y_t) *y_t = y;
  return l;
}

/* When set, gradcheck() counts mismatches without reporting them (the test
 * that the checker itself can fail expects them). */
static bool gc_expect_mismatch;

/* Returns the number of mismatching elements (0 = pass). */
static int gradcheck(const char *what, gc_input *ins, int n_in, gc_fn fn, const void *user) {
  tp_backend *be = cpu();
  if (!be) return 1;
  GError *err = NULL;
  tp_ctx *ctx = tp_ctx_new(be, &err);
  tp_ctx_set_training(ctx, true);
  GRand *rng = g_rand_new_with_seed(7);
  tp_tensor *in_t[MAX_IN] = {0}, *y = NULL;

  /* analytic: one forward to learn y's size, then forward + backward */
  float dummy_r[1] = {0};
  (void)dummy_r;
  tp_ctx_begin_step(ctx);
  tp_ctx_set_rng(ctx, 1234, 0);
  for (int k = 0; k < n_in; k++) {
    in_t[k] = tp_tensor_from_host(ctx, ins[k].dtype, ins[k].ndim, ins[k].shape,
                                  ins[k].dtype == TP_I32 ? (void *)ins[k].i : (void *)ins[k].f);
    if (in_t[k]) in_t[k]->requires_grad = ins[k].diff;
  }
  y = fn(ctx, in_t, user);
  if (!y || !tp_ctx_check(ctx, &err)) {
    TP_FAILF("%s: forward failed: %s", what, err ? err->message : "no output");
    g_clear_error(&err);
    tp_ctx_free(ctx);
    g_rand_free(rng);
    return 1;
  }
  int64_t ny = tp_tensor_numel(y);
  float *r = g_new(float, ny);
  for (int64_t j = 0; j < ny; j++) r[j] = urand(rng, -1, 1);

  run_forward(ctx, ins, n_in, fn, user, r, in_t, &y);
  if (!tp_ctx_backward_from(ctx, y, r, &err)) {
    TP_FAILF("%s: backward failed: %s", what, err->message);
    g_clear_error(&err);
    tp_ctx_free(ctx);
    g_rand_free(rng);
    g_free(r);
    return 1;
  }
  float *ana[MAX_IN] = {0};
  for (int k = 0; k < n_in; k++) {
    if (!ins[k].diff) continue;
    ana[k] = g_new0(float, numel_of(&ins[k]));
    if (!in_t[k]->grad) continue; /* no gradient reached it: all zeros */
    if (!tp_tensor_to_host(ctx, in_t[k]->grad, ana[k], &err)) {
      TP_FAILF("%s: %s", what, err->message);
      g_clear_error(&err);
    }
  }

  int bad = 0;
  double worst = 0;
  for (int k = 0; k < n_in; k++) {
    if (!ins[k].diff) continue;
    int64_t n = numel_of(&ins[k]);
    int64_t stride = n > MAX_PROBES ? n / MAX_PROBES : 1;
    for (int64_t j = 0; j < n; j += stride) {
      float keep = ins[k].f[j];
      ins[k].f[j] = keep + H_STEP;
      double lp = run_forward(ctx, ins, n_in, fn, user, r, in_t, NULL);
      ins[k].f[j] = keep - H_STEP;
      double lm = run_forward(ctx, ins, n_in, fn, user, r, in_t, NULL);
      ins[k].f[j] = keep;
      double num = (lp - lm) / (2.0 * H_STEP), a = ana[k][j];
      double diff = fabs(num - a);
      if (diff > worst) worst = diff;
      if (!(diff <= 2e-3 + 2e-2 * fabs(a))) {
        if (bad < 5 && !gc_expect_mismatch)
          TP_FAILF("%s: input %d element %lld: numerical %.6g, analytic %.6g", what, k,
                   (long long)j, num, a);
        bad++;
      }
    }
  }
  for (int k = 0; k < n_in; k++) g_free(ana[k]);
  g_free(r);
  g_rand_free(rng);
  tp_ctx_free(ctx);
  return bad;
}

static gc_input f32_input(GRand *rng, int ndim, const int64_t *shape, float lo, float hi) {
  gc_input g = {.dtype = TP_F32, .ndim = ndim, .diff = true};
  memcpy(g.shape, shape, (size_t)ndim * sizeof(int64_t));
  int64_t n = numel_of(&g);
  g.f = g_new(float, n);
  for (int64_t j = 0; j < n; j++) g.f[j] = urand(rng, lo, hi);
  return g;
}

/* values with |v| >= 0.1, away from kinks (ReLU) */
static gc_input f32_input_away_from_zero(GRand *rng, int ndim, const int64_t *shape) {
  gc_input g = f32_input(rng, ndim, shape, 0.1f, 1.5f);
  for (int64_t j = 0; j < numel_of(&g); j++)
    if (g_rand_boolean(rng)) g.f[j] = -g.f[j];
  return g;
}

static gc_input i32_input(GRand *rng, int ndim, const int64_t *shape, int lo, int hi) {
  gc_input g = {.dtype = TP_I32, .ndim = ndim, .diff = false};
  memcpy(g.shape, shape, (size_t)ndim * sizeof(int64_t));
  int64_t n = numel_of(&g);
  g.i = g_new(int32_t, n);
  for (int64_t j = 0; j < n; j++) g.i[j] = g_rand_int_range(rng, lo, hi);
  return g;
}

static void free_inputs(gc_input *ins, int n) {
  for (int k = 0; k < n; k++) {
    g_free(ins[k].f);
    g_free(ins[k].i);
  }
}

/* ---- op wrappers ---- */

static tp_tensor *w_embedding(tp_ctx *c, tp_tensor **in, const void *u) {
  (void)u;
  return tp_embedding(c, in[0], in[1]);
}
static tp_tensor *w_add(tp_ctx *c, tp_tensor **in, const void *u) {
  (void)u;
  return tp_add(c, in[0], in[1]);
}
static tp_tensor *w_linear(tp_ctx *c, tp_tensor **in, const void *u) {
  (void)u;
  return tp_linear(c, in[0], in[1], in[2]);
}
static tp_tensor *w_layernorm(tp_ctx *c, tp_tensor **in, const void *u) {
  (void)u;
  return tp_layernorm(c, in[0], in[1], in[2], 1e-5f);
}
static tp_tensor *w_gelu(tp_ctx *c, tp_tensor **in, const void *u) { (void)u; return tp_gelu(c, in[0]); }
static tp_tensor *w_relu(tp_ctx *c, tp_tensor **in, const void *u) { (void)u; return tp_relu(c, in[0]); }
static tp_tensor *w_tanh(tp_ctx *c, tp_tensor **in, const void *u) { (void)u; return tp_tanh(c, in[0]); }
static tp_tensor *w_dropout(tp_ctx *c, tp_tensor **in, const void *u) {
  return tp_dropout(c, in[0], *(const float *)u);
}
static tp_tensor *w_split(tp_ctx *c, tp_tensor **in, const void *u) {
  return tp_split_heads(c, in[0], *(const int *)u);
}
static tp_tensor *w_merge(tp_ctx *c, tp_tensor **in, const void *u) {
  (void)u;
  return tp_merge_heads(c, in[0]);
}
static tp_tensor *w_matmul(tp_ctx *c, tp_tensor **in, const void *u) {
  const int *t = u;
  return tp_matmul(c, in[0], in[1], t[0], t[1], 0.7f);
}
static tp_tensor *w_softmax(tp_ctx *c, tp_tensor **in, const void *u) {
  (void)u;
  return tp_softmax_masked(c, in[0], in[1], 0.8f);
}
static tp_tensor *w_first(tp_ctx *c, tp_tensor **in, const void *u) {
  (void)u;
  return tp_first_token(c, in[0]);
}
static tp_tensor *w_xent(tp_ctx *c, tp_tensor **in, const void *u) {
  (void)u;
  return tp_cross_entropy(c, in[0], in[1]);
}
static tp_tensor *w_attention(tp_ctx *c, tp_tensor **in, const void *u) {
  return tp_attention(c, in[0], in[1], in[2], in[3], NULL, *(const int *)u, 0.0f);
}
static tp_tensor *w_attention_bias(tp_ctx *c, tp_tensor **in, const void *u) {
  return tp_attention(c, in[0], in[1], in[2], in[3], in[4], *(const int *)u, 0.0f);
}
static tp_tensor *w_add_broadcast(tp_ctx *c, tp_tensor **in, const void *u) {
  (void)u;
  return tp_add_broadcast(c, in[0], in[1]);
}
static tp_tensor *w_attention_dropout(tp_ctx *c, tp_tensor **in, const void *u) {
  return tp_attention(c, in[0], in[1], in[2], in[3], NULL, *(const int *)u, 0.2f);
}

/* Shape sets: each op runs on three; every set has a 1 and a non-multiple of 8. */

TP_TEST(GradCheck, Embedding) {
  GRand *rng = g_rand_new_with_seed(1);
  const int64_t tab[3][2] = {{11, 5}, {1, 13}, {30, 3}};
  const int64_t ids[3][2] = {{2, 7}, {1, 1}, {3, 9}};
  for (int s = 0; s < 3; s++) {
    gc_input in[2] = {f32_input(rng, 2, tab[s], -1, 1), i32_input(rng, 2, ids[s], 0, (int)tab[s][0])};
    in[1].i[0] = 0; /* repeated ids accumulate */
    if (ids[s][1] > 1) in[1].i[1] = 0;
    TP_CHECK_INT_EQ(gradcheck("embedding", in, 2, w_embedding, NULL), 0);
    free_inputs(in, 2);
  }
  g_rand_free(rng);
}

TP_TEST(GradCheck, Add) {
  GRand *rng = g_rand_new_with_seed(2);
  const int64_t sh[3][3] = {{1, 7, 3}, {2, 1, 13}, {3, 5, 9}};
  for (int s = 0; s < 3; s++) {
    gc_input in[2] = {f32_input(rng, 3, sh[s], -1, 1), f32_input(rng, 3, sh[s], -1, 1)};
    TP_CHECK_INT_EQ(gradcheck("add", in, 2, w_add, NULL), 0);
    free_inputs(in, 2);
  }
  g_rand_free(rng);
}

TP_TEST(GradCheck, Linear) {
  GRand *rng = g_rand_new_with_seed(3);
  const int64_t x[3][3] = {{1, 1, 5}, {2, 3, 7}, {3, 13, 1}};
  const int64_t w[3][2] = {{3, 5}, {1, 7}, {9, 1}};
  for (int s = 0; s < 3; s++) {
    int64_t b[1] = {w[s][0]};
    gc_input in[3] = {f32_input(rng, 3, x[s], -1, 1), f32_input(rng, 2, w[s], -1, 1),
                      f32_input(rng, 1, b, -1, 1)};
    TP_CHECK_INT_EQ(gradcheck("linear", in, 3, w_linear, NULL), 0);
    free_inputs(in, 3);
  }
  g_rand_free(rng);
}

TP_TEST(GradCheck, LayerNorm) {
  GRand *rng = g_rand_new_with_seed(4);
  const int64_t x[3][3] = {{1, 1, 7}, {2, 3, 13}, {4, 1, 33}};
  for (int s = 0; s < 3; s++) {
    int64_t h[1] = {x[s][2]};
    gc_input in[3] = {f32_input(rng, 3, x[s], -2, 2), f32_input(rng, 1, h, 0.5f, 1.5f),
                      f32_input(rng, 1, h, -0.5f, 0.5f)};
    TP_CHECK_INT_EQ(gradcheck("layernorm", in, 3, w_layernorm, NULL), 0);
    free_inputs(in, 3);
  }
  g_rand_free(rng);
}

static void unary_check(const char *what, gc_fn fn, bool away_from_zero, guint32 seed) {
  GRand *rng = g_rand_new_with_seed(seed);
  const int64_t sh[3][2] = {{1, 9}, {5, 1}, {7, 13}};
  for (int s = 0; s < 3; s++) {
    gc_input in[1] = {away_from_zero ? f32_input_away_from_zero(rng, 2, sh[s])
                                     : f32_input(rng, 2, sh[s], -3, 3)};
    TP_CHECK_INT_EQ(gradcheck(what, in, 1, fn, NULL), 0);
    free_inputs(in, 1);
  }
  g_rand_free(rng);
}

TP_TEST(GradCheck, Gelu) { unary_check("gelu", w_gelu, false, 5); }
TP_TEST(GradCheck, Relu) { unary_check("relu", w_relu, true, 6); }
TP_TEST(GradCheck, Tanh) { unary_check("tanh", w_tanh, false, 7); }

TP_TEST(GradCheck, Dropout) {
  GRand *rng = g_rand_new_with_seed(8);
  const int64_t sh[3][2] = {{1, 17}, {9, 1}, {6, 11}};
  const float p[3] = {0.1f, 0.5f, 0.3f};
  for (int s = 0; s < 3; s++) {
    gc_input in[1] = {f32_input(rng, 2, sh[s], -1, 1)};
    TP_CHECK_INT_EQ(gradcheck("dropout", in, 1, w_dropout, &p[s]), 0);
    free_inputs(in, 1);
  }
  g_rand_free(rng);
}

TP_TEST(GradCheck, SplitHeads) {
  GRand *rng = g_rand_new_with_seed(9);
  const int64_t sh[3][3] = {{1, 5, 6}, {2, 1, 9}, {3, 7, 4}};
  const int heads[3] = {2, 3, 1};
  for (int s = 0; s < 3; s++) {
    gc_input in[1] = {f32_input(rng, 3, sh[s], -1, 1)};
    TP_CHECK_INT_EQ(gradcheck("split_heads", in, 1, w_split, &heads[s]), 0);
    free_inputs(in, 1);
  }
  g_rand_free(rng);
}

TP_TEST(GradCheck, MergeHeads) {
  GRand *rng = g_rand_new_with_seed(10);
  const int64_t sh[3][4] = {{1, 2, 5, 3}, {2, 3, 1, 5}, {3, 1, 7, 2}};
  for (int s = 0; s < 3; s++) {
    gc_input in[1] = {f32_input(rng, 4, sh[s], -1, 1)};
    TP_CHECK_INT_EQ(gradcheck("merge_heads", in, 1, w_merge, NULL), 0);
    free_inputs(in, 1);
  }
  g_rand_free(rng);
}

TP_TEST(GradCheck, MatmulAllTransposes) {
  GRand *rng = g_rand_new_with_seed(11);
  /* batch dims, m, k, n */
  const int64_t dims[3][4] = {{1, 1, 5, 3}, {2, 7, 1, 9}, {3, 4, 13, 2}};
  for (int s = 0; s < 3; s++)
    for (int t = 0; t < 4; t++) {
      int tt[2] = {t & 1, (t >> 1) & 1};
      int64_t bt = dims[s][0], m = dims[s][1], k = dims[s][2], n = dims[s][3];
      int64_t as[3] = {bt, tt[0] ? k : m, tt[0] ? m : k};
      int64_t bs[3] = {bt, tt[1] ? n : k, tt[1] ? k : n};
      gc_input in[2] = {f32_input(rng, 3, as, -1, 1), f32_input(rng, 3, bs, -1, 1)};
      char what[64];
      g_snprintf(what, sizeof what, "matmul shape %d ta %d tb %d", s, tt[0], tt[1]);
      TP_CHECK_INT_EQ(gradcheck(what, in, 2, w_matmul, tt), 0);
      free_inputs(in, 2);
    }
  g_rand_free(rng);
}

TP_TEST(GradCheck, SoftmaxMasked) {
  GRand *rng = g_rand_new_with_seed(12);
  const int64_t sh[3][4] = {{1, 1, 1, 5}, {2, 3, 4, 9}, {3, 2, 5, 1}};
  for (int s = 0; s < 3; s++) {
    int64_t ms[2] = {sh[s][0], sh[s][3]};
    gc_input in[2] = {f32_input(rng, 4, sh[s], -2, 2), i32_input(rng, 2, ms, 0, 2)};
    for (int64_t b = 0; b < ms[0]; b++) in[1].i[b * ms[1]] = 1; /* [CLS] always visible */
    if (ms[0] > 1 && ms[1] > 2) /* one row fully padded but its first key */
      for (int64_t j = 1; j < ms[1]; j++) in[1].i[ms[1] + j] = 0;
    TP_CHECK_INT_EQ(gradcheck("softmax", in, 2, w_softmax, NULL), 0);
    free_inputs(in, 2);
  }
  g_rand_free(rng);
}

TP_TEST(GradCheck, FirstToken) {
  GRand *rng = g_rand_new_with_seed(13);
  const int64_t sh[3][3] = {{1, 1, 5}, {2, 7, 1}, {3, 5, 9}};
  for (int s = 0; s < 3; s++) {
    gc_input in[1] = {f32_input(rng, 3, sh[s], -1, 1)};
    TP_CHECK_INT_EQ(gradcheck("first_token", in, 1, w_first, NULL), 0);
    free_inputs(in, 1);
  }
  g_rand_free(rng);
}

TP_TEST(GradCheck, CrossEntropy) {
  GRand *rng = g_rand_new_with_seed(14);
  const int64_t sh[3][2] = {{1, 2}, {5, 1}, {9, 3}};
  for (int s = 0; s < 3; s++) {
    int64_t ls[1] = {sh[s][0]};
    gc_input in[2] = {f32_input(rng, 2, sh[s], -2, 2), i32_input(rng, 1, ls, 0, (int)sh[s][1])};
    TP_CHECK_INT_EQ(gradcheck("cross_entropy", in, 2, w_xent, NULL), 0);
    free_inputs(in, 2);
  }
  g_rand_free(rng);
}

static void attention_check(gc_fn fn, guint32 seed) {
  GRand *rng = g_rand_new_with_seed(seed);
  const int64_t sh[3][3] = {{1, 1, 4}, {2, 5, 6}, {3, 3, 9}};
  const int heads[3] = {2, 3, 1};
  for (int s = 0; s < 3; s++) {
    int64_t ms[2] = {sh[s][0], sh[s][1]};
    gc_input in[4] = {f32_input(rng, 3, sh[s], -1, 1), f32_input(rng, 3, sh[s], -1, 1),
                      f32_input(rng, 3, sh[s], -1, 1), i32_input(rng, 2, ms, 0, 2)};
    for (int64_t b = 0; b < ms[0]; b++) in[3].i[b * ms[1]] = 1;
    TP_CHECK_INT_EQ(gradcheck("attention", in, 4, fn, &heads[s]), 0);
    free_inputs(in, 4);
  }
  g_rand_free(rng);
}

TP_TEST(GradCheck, Attention) { attention_check(w_attention, 15); }
TP_TEST(GradCheck, AttentionWithDropout) { attention_check(w_attention_dropout, 16); }

/* An additive score bias [nh, T, T] shared by the batch (MPNet's relative
 * positions): its gradient sums over the batch. */
TP_TEST(GradCheck, AttentionWithBias) {
  GRand *rng = g_rand_new_with_seed(18);
  const int64_t sh[3][3] = {{1, 1, 4}, {2, 5, 6}, {3, 3, 9}};
  const int heads[3] = {2, 3, 1};
  for (int s = 0; s < 3; s++) {
    int64_t ms[2] = {sh[s][0], sh[s][1]}, bs[3] = {heads[s], sh[s][1], sh[s][1]};
    gc_input in[5] = {f32_input(rng, 3, sh[s], -1, 1), f32_input(rng, 3, sh[s], -1, 1),
                      f32_input(rng, 3, sh[s], -1, 1), i32_input(rng, 2, ms, 0, 2),
                      f32_input(rng, 3, bs, -1, 1)};
    for (int64_t b = 0; b < ms[0]; b++) in[3].i[b * ms[1]] = 1;
    TP_CHECK_INT_EQ(gradcheck("attention+bias", in, 5, w_attention_bias, &heads[s]), 0);
    free_inputs(in, 5);
  }
  g_rand_free(rng);
}

TP_TEST(GradCheck, AddBroadcast) {
  GRand *rng = g_rand_new_with_seed(19);
  const int64_t x[3][3] = {{1, 1, 5}, {3, 2, 7}, {4, 9, 1}};
  for (int s = 0; s < 3; s++) {
    int64_t b[2] = {x[s][1], x[s][2]};
    gc_input in[2] = {f32_input(rng, 3, x[s], -1, 1), f32_input(rng, 2, b, -1, 1)};
    TP_CHECK_INT_EQ(gradcheck("add_broadcast", in, 2, w_add_broadcast, NULL), 0);
    free_inputs(in, 2);
  }
  g_rand_free(rng);
}

/* The gradient check itself must be able to fail: an op whose analytic
 * gradient misses a path (a copy of x added through a fresh leaf) is caught. */
static tp_tensor *w_gelu_only(tp_ctx *c, tp_tensor **in, const void *u) {
  (void)u;
  return tp_gelu(c, in[0]);
}

static tp_tensor *w_detached(tp_ctx *c, tp_tensor **in, const void *u) {
  (void)u;
  tp_tensor *y = tp_gelu(c, in[0]);
  /* add x to itself through a path autograd cannot see: y + x, but with x
   * re-uploaded as a fresh leaf (no gradient flows to in[0] through it) */
  int64_t n = tp_tensor_numel(in[0]);
  float *h = g_new(float, n);
  GError *e = NULL;
  if (!tp_tensor_to_host(c, in[0], h, &e)) g_clear_error(&e);
  tp_tensor *copy = tp_tensor_from_host(c, TP_F32, in[0]->ndim, in[0]->shape, h);
  g_free(h);
  return tp_add(c, y, copy);
}

TP_TEST(GradCheck, DetectsAWrongGradient) {
  /* gradcheck() itself, on an op whose autograd gradient is wrong by +1
   * everywhere (the true derivative is gelu'(x) + 1; autograd sees only
   * gelu'(x)): every probed element must be reported as a mismatch */
  GRand *rng = g_rand_new_with_seed(17);
  const int64_t sh[2] = {3, 5};
  gc_input in[1] = {f32_input(rng, 2, sh, -1, 1)};
  gc_expect_mismatch = true;
  int bad = gradcheck("gelu plus a detached copy", in, 1, w_detached, NULL);
  gc_expect_mismatch = false;
  TP_CHECK_INT_EQ(bad, 15);
  /* and the same checker passes the op without the detached path */
  TP_CHECK_INT_EQ(gradcheck("gelu", in, 1, w_gelu_only, NULL), 0);
  free_inputs(in, 1);
  g_rand_free(rng);
}

static tp_tensor *w_reshape(tp_ctx *c, tp_tensor **in, const void *u) {
  (void)u;
  int64_t n = tp_tensor_numel(in[0]);
  int64_t shape[2] = {1, n};
  /* through a non-linear op so the view's gradient is not trivially 1 */
  return tp_tanh(c, tp_reshape(c, in[0], 2, shape));
}

TP_TEST(GradCheck, Reshape) {
  GRand *rng = g_rand_new_with_seed(18);
  const int64_t sh[3][3] = {{1, 3, 5}, {2, 1, 7}, {3, 4, 1}};
  for (int s = 0; s < 3; s++) {
    gc_input in[1] = {f32_input(rng, 3, sh[s], -1, 1)};
    TP_CHECK_INT_EQ(gradcheck("reshape", in, 1, w_reshape, NULL), 0);
    free_inputs(in, 1);
  }
  g_rand_free(rng);
}
