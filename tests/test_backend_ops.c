/* tests/test_backend_ops.c — the conformance suite for every backend (in the
 * manner of ggml's test-backend-ops): each kernel of the backend under test
 * ($TP_TEST_BACKEND, default cpu) against the CPU backend, through upload and
 * download only, on the same random inputs and odd shapes (size-1
 * dimensions, sizes that are not a multiple of 8 or of a workgroup, tensors
 * at unaligned offsets). Calls go through tensorplug/kernels.h, so with
 * $TENSORPLUG_MAX_BINDING_BYTES set (meson runs it at 1 MiB too) every work
 * split of the core is exercised; the CPU reference is opened without caps.
 *
 * Metric: max|got - want| / max|want| over each output. Tolerances: 1e-5 for
 * elementwise kernels (including dropout: its mask must be the same bits),
 * 1e-4 for reductions, GEMM and attention. Half-precision outputs: their own
 * rounding (2^-8 bf16, 2^-11 f16). */
#include <math.h>
#include <stdlib.h>

#include "tensorplug/backend.h"
#include "tensorplug/dtype.h"
#include "tensorplug/error.h"
#include "tensorplug/kernels.h"
#include "tensorplug/ops.h"
#include "tensorplug/optim_control.h"
#include "tp_test.h"

#define TOL_EW 1e-5
#define TOL_RED 1e-4

/* ------------------------------------------------------------ harness */

static tp_backend *BE[2]; /* 0: the CPU reference, 1: the backend under test */

static const char *target_name(void) {
  const char *t = g_getenv("TP_TEST_BACKEND");
  return t && *t ? t : "cpu";
}

static tp_backend *open_or_fail(const char *name) {
  GError *err = NULL;
  tp_backend *b = tp_backend_open(NULL, name, -1, 2, &err);
  if (!b) {
    TP_FAILF("cannot open backend %s: %s", name, err ? err->message : "?");
    g_clear_error(&err);
  }
  return b;
}

/* The target with the environment's caps; the reference without them. */
static bool setup(void) {
  if (BE[1]) return true;
  BE[1] = open_or_fail(target_name());
  if (!BE[1]) return false;
  char *bind = g_strdup(g_getenv("TENSORPLUG_MAX_BINDING_BYTES"));
  char *alloc = g_strdup(g_getenv("TENSORPLUG_MAX_ALLOC_BYTES"));
  g_unsetenv("TENSORPLUG_MAX_BINDING_BYTES");
  g_unsetenv("TENSORPLUG_MAX_ALLOC_BYTES");
  BE[0] = open_or_fail("cpu");
  if (bind) g_setenv("TENSORPLUG_MAX_BINDING_BYTES", bind, TRUE);
  if (alloc) g_setenv("TENSORPLUG_MAX_ALLOC_BYTES", alloc, TRUE);
  g_free(bind);
  g_free(alloc);
  return BE[0] != NULL;
}
#define SETUP()                                                                                    \
  do {                                                                                             \
    if (!setup()) return;                                                                          \
  } while (0)

/* One tensor on both backends, at the same (possibly unaligned) offset. */
typedef struct pair {
  tp_buffer *buf[2];
  size_t off, bytes;
} pair;

/* Offsets cycle through aligned, aligned + one element, and the last
 * element before the next alignment boundary. */
static size_t next_offset(size_t es) {
  static unsigned turn;
  size_t align = MAX(BE[1]->info.offset_align, 4u);
  switch (turn++ % 3) {
  case 0: return align;
  case 1: return align + es;
  default: return 2 * align - es;
  }
}

static pair *pr_new(size_t bytes, size_t es) {
  pair *p = g_new0(pair, 1);
  p->off = next_offset(es);
  p->bytes = bytes;
  for (int s = 0; s < 2; s++) {
    GError *err = NULL;
    p->buf[s] = tp_backend_alloc(BE[s], p->off + MAX(bytes, 4), &err);
    if (!p->buf[s]) g_error("alloc %zu on %s: %s", bytes, BE[s]->name, err->message);
  }
  return p;
}

static void pr_upload(pair *p, const void *host) {
  for (int s = 0; s < 2; s++) {
    GError *err = NULL;
    if (!tp_backend_upload(BE[s], (tp_mem){p->buf[s], p->off}, host, p->bytes, &err))
      g_error("upload: %s", err->message);
  }
}

static void pr_free(pair *p) {
  if (!p) return;
  for (int s = 0; s < 2; s++) tp_backend_free(BE[s], p->buf[s]);
  g_free(p);
}

static tp_mem pm(const pair *p, int s) {
  tp_mem m = {p ? p->buf[s] : NULL, p ? p->off : 0};
  return m;
}

/* Random f32 values in [lo, hi) on both sides. */
static pair *pr_f32(GRand *r, int64_t n, double lo, double hi) {
  float *h = g_new(float, MAX(n, 1));
  for (int64_t i = 0; i < n; i++) h[i] = (float)g_rand_double_range(r, lo, hi);
  pair *p = pr_new((size_t)n * 4, 4);
  pr_upload(p, h);
  g_free(h);
  return p;
}

static pair *pr_i32(const int32_t *v, int64_t n) {
  pair *p = pr_new((size_t)n * 4, 4);
  pr_upload(p, v);
  return p;
}

/* Runs `call` on both backends; inside it, `be` is the backend and S(p) the
 * pair's memory on it. */
#define BOTH(...)                                                                                  \
  do {                                                                                             \
    for (int s_ = 0; s_ < 2; s_++) {                                                               \
      tp_backend *be = BE[s_];                                                                     \
      (void)be;                                                                                    \
      __VA_ARGS__;                                                                                 \
    }                                                                                              \
  } while (0)
#define S(p) pm((p), s_)

static bool synced(void) {
  bool ok = true;
  for (int s = 0; s < 2; s++) {
    GError *err = NULL;
    if (!tp_backend_sync(BE[s], &err)) {
      TP_FAILF("%s: %s", BE[s]->name, err ? err->message : "?");
      g_clear_error(&err);
      ok = false;
    }
  }
  return ok;
}

/* Downloads both sides of p as f32 (or widened halves) into a, b. */
static void fetch(const pair *p, tp_dtype dt, int64_t n, double *a, double *b) {
  size_t es = tp_dtype_size(dt);
  void *h = g_malloc(MAX((size_t)n * es, 4));
  for (int s = 0; s < 2; s++) {
    GError *err = NULL;
    if (!tp_backend_download(BE[s], h, pm(p, s), (size_t)n * es, &err)) {
      TP_FAILF("download: %s", err->message);
      g_clear_error(&err);
    }
    double *d = s == 0 ? b : a;
    for (int64_t i = 0; i < n; i++)
      d[i] = dt == TP_F32   ? ((float *)h)[i]
             : dt == TP_I32 ? ((int32_t *)h)[i]
             : dt == TP_BF16 ? tp_bf16_to_f32(((uint16_t *)h)[i])
                             : tp_f16_to_f32(((uint16_t *)h)[i]);
  }
  g_free(h);
}

/* max|a-b|/max|b| of p's n elements, target vs reference, within tol. */
static void expect_close(const char *what, const pair *p, tp_dtype dt, int64_t n, double tol) {
  if (!synced()) return;
  double *a = g_new(double, MAX(n, 1)), *b = g_new(double, MAX(n, 1));
  fetch(p, dt, n, a, b);
  double diff = 0, ref = 0;
  int64_t worst = 0;
  bool nan_mismatch = false;
  for (int64_t i = 0; i < n; i++) {
    if (isnan(a[i]) != isnan(b[i])) nan_mismatch = true;
    if (isnan(a[i]) || isnan(b[i])) continue;
    double d = fabs(a[i] - b[i]);
    if (d > diff) {
      diff = d;
      worst = i;
    }
    ref = fmax(ref, fabs(b[i]));
  }
  double rel = ref > 0 ? diff / ref : diff;
  if (nan_mismatch || !(rel <= tol))
    TP_FAILF("%s on %s: max|a-b|/max|b| = %.3g > %.1g (element %lld: %.9g vs %.9g)%s", what,
             BE[1]->name, rel, tol, (long long)worst, n ? a[worst] : 0.0, n ? b[worst] : 0.0,
             nan_mismatch ? ", NaN where the reference has none" : "");
  g_free(a);
  g_free(b);
}

static const int SIZES[] = {1, 3, 7, 13, 33, 130};
#define NSIZES ((int)G_N_ELEMENTS(SIZES))

/* ------------------------------------------------------------ the backend */

TP_TEST(BackendOps, OpensWithLimits) {
  SETUP();
  const tp_device_info *in = &BE[1]->info;
  TP_CHECK(in->offset_align >= 4 && (in->offset_align & (in->offset_align - 1)) == 0);
  TP_CHECK(in->gemm_compute & TP_DTYPE_BIT(TP_F32));
  TP_CHECK(in->storage_dtypes & TP_DTYPE_BIT(TP_F32));
  const char *cap = g_getenv("TENSORPLUG_MAX_BINDING_BYTES");
  if (cap) TP_CHECK_INT_EQ(in->max_binding_bytes, g_ascii_strtoull(cap, NULL, 10));
  g_test_message("%s: %s (%s)", BE[1]->name, in->name, in->description);
}

/* ------------------------------------------------------------ GEMM */

static void gemm_case(GRand *r, bool ta, bool tb, int m, int n, int k, int batch, float alpha,
                      float beta, bool shared_c, tp_dtype compute) {
  int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
  int lda = ac + 1, ldb = bc + 2, ldc = n + 3;
  int64_t sa = (int64_t)ar * lda + 5, sb = (int64_t)br * ldb, sc = shared_c ? 0 : (int64_t)m * ldc;
  pair *a = pr_f32(r, sa * batch, -1, 1), *b = pr_f32(r, sb * batch, -1, 1);
  int64_t cn = shared_c ? (int64_t)m * ldc : sc * batch;
  pair *c = pr_f32(r, cn, -1, 1);
  BOTH({
    tp_gemm_args g = {.ta = ta, .tb = tb, .m = m, .n = n, .k = k, .batch = batch,
                      .alpha = alpha, .beta = beta, .a = S(a), .b = S(b), .c = S(c),
                      .lda = lda, .ldb = ldb, .ldc = ldc, .sa = sa, .sb = sb, .sc = sc,
                      .ab_dtype = TP_F32, .c_dtype = TP_F32, .compute = compute};
    tp_k_gemm(be, &g);
  });
  char what[128];
  g_snprintf(what, sizeof what, "gemm %s ta=%d tb=%d %dx%dx%d batch %d%s", tp_dtype_name(compute),
             ta, tb, m, n, k, batch, shared_c ? " into one C" : "");
  expect_close(what, c, TP_F32, cn, TOL_RED);
  pr_free(a);
  pr_free(b);
  pr_free(c);
}

TP_TEST(BackendOps, GemmAllTransposesOddShapes) {
  SETUP();
  GRand *r = g_rand_new_with_seed(1);
  static const int shapes[][3] = {{1, 1, 1}, {3, 7, 13}, {33, 1, 130}, {130, 13, 33}, {1, 65, 9}};
  for (int t = 0; t < 4; t++)
    for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++)
      gemm_case(r, t & 1, t & 2, shapes[s][0], shapes[s][1], shapes[s][2], 1, 0.7f, 1.3f, false,
                TP_F32);
  g_rand_free(r);
}

TP_TEST(BackendOps, GemmBatchesBetaZeroAndSharedC) {
  SETUP();
  GRand *r = g_rand_new_with_seed(2);
  for (int t = 0; t < 4; t++) {
    gemm_case(r, t & 1, t & 2, 7, 13, 33, 5, 1.0f, 0.0f, false, TP_F32);
    gemm_case(r, t & 1, t & 2, 13, 9, 7, 3, 0.5f, 1.0f, true, TP_F32);
  }
  gemm_case(r, false, false, 5, 3, 0, 2, 1.0f, 0.5f, false, TP_F32); /* k == 0: C = beta C */
  g_rand_free(r);
}

/* Larger than 1 MiB per operand: under the binding cap every split path runs
 * (batch halves, rows of C, the inner dimension, columns). */
TP_TEST(BackendOps, GemmLargerThanOneBinding) {
  SETUP();
  GRand *r = g_rand_new_with_seed(3);
  gemm_case(r, false, true, 700, 389, 130, 1, 1.0f, 0.0f, false, TP_F32); /* C 1.1 MB */
  gemm_case(r, true, false, 130, 65, 2100, 1, 1.0f, 1.0f, false, TP_F32); /* A, B by k */
  gemm_case(r, false, true, 3, 2100, 130, 1, 1.0f, 0.0f, false, TP_F32);  /* B^T by n */
  gemm_case(r, false, false, 130, 130, 65, 12, 1.0f, 0.0f, false, TP_F32); /* batch */
  g_rand_free(r);
}

TP_TEST(BackendOps, GemmComputeTypes) {
  SETUP();
  GRand *r = g_rand_new_with_seed(4);
  const tp_dtype ct[2] = {TP_BF16, TP_F16};
  for (int i = 0; i < 2; i++) {
    if (!(BE[1]->info.gemm_compute & TP_DTYPE_BIT(ct[i]))) continue;
    for (int t = 0; t < 4; t++) gemm_case(r, t & 1, t & 2, 33, 13, 130, 2, 1.0f, 0.5f, false, ct[i]);
  }
  g_rand_free(r);
}

/* ------------------------------------------------------------ embedding */

TP_TEST(BackendOps, EmbeddingGatherAndScatterAdd) {
  SETUP();
  GRand *r = g_rand_new_with_seed(5);
  const int vocabs[] = {11, 3001}; /* 3001 x 130 floats is more than 1 MiB */
  for (int vi = 0; vi < 2; vi++)
    for (int s = 0; s < NSIZES; s++) {
      int h = SIZES[s], v = vocabs[vi], n = 29 + 517 * vi;
      int32_t *ids = g_new(int32_t, n);
      for (int i = 0; i < n; i++) ids[i] = i % 3 == 0 ? 4 : g_rand_int_range(r, 0, v);
      ids[n - 1] = v - 1;
      pair *table = pr_f32(r, (int64_t)v * h, -1, 1), *id = pr_i32(ids, n);
      pair *out = pr_f32(r, (int64_t)n * h, -1, 1), *dout = pr_f32(r, (int64_t)n * h, -1, 1);
      BOTH(tp_k_embedding_fwd(be, S(out), S(table), S(id), n, h, v));
      expect_close("embedding_fwd", out, TP_F32, (int64_t)n * h, 0);
      BOTH(tp_k_embedding_bwd(be, S(table), S(dout), S(id), n, h, v));
      expect_close("embedding_bwd", table, TP_F32, (int64_t)v * h, TOL_RED);
      g_free(ids);
      pr_free(table);
      pr_free(id);
      pr_free(out);
      pr_free(dout);
    }
  g_rand_free(r);
}

TP_TEST(BackendOps, EmbeddingIdOutsideTheTableIsAnError) {
  SETUP();
  GRand *r = g_rand_new_with_seed(6);
  int32_t ids[3] = {0, 7, 2};
  pair *table = pr_f32(r, 7 * 5, -1, 1), *id = pr_i32(ids, 3), *out = pr_f32(r, 3 * 5, -1, 1);
  tp_k_embedding_fwd(BE[1], pm(out, 1), pm(table, 1), pm(id, 1), 3, 5, 7);
  GError *err = NULL;
  TP_CHECK(!tp_backend_sync(BE[1], &err));
  TP_CHECK(err != NULL && err->code == TP_ERROR_INVALID_ARGUMENT);
  g_clear_error(&err);
  /* backward scatters into the table: the same id must not be written */
  tp_k_embedding_bwd(BE[1], pm(table, 1), pm(out, 1), pm(id, 1), 3, 5, 7);
  TP_CHECK(!tp_backend_sync(BE[1], &err));
  TP_CHECK(err != NULL && err->code == TP_ERROR_INVALID_ARGUMENT);
  g_clear_error(&err);
  pr_free(table);
  pr_free(id);
  pr_free(out);
  g_rand_free(r);
}

/* ------------------------------------------------------------ rows */

TP_TEST(BackendOps, LayerNormForwardBackward) {
  SETUP();
  GRand *r = g_rand_new_with_seed(7);
  const int rows_of[] = {1, 5, 301, 2100};
  for (int ri = 0; ri < 4; ri++)
    for (int s = 0; s < NSIZES; s++) {
      int rows = rows_of[ri], cols = SIZES[s];
      if (ri == 3 && cols != 130) continue; /* 2100 x 130: over 1 MiB */
      int64_t n = (int64_t)rows * cols;
      pair *x = pr_f32(r, n, -3, 3), *g = pr_f32(r, cols, 0.5, 1.5), *b = pr_f32(r, cols, -1, 1);
      pair *y = pr_f32(r, n, -1, 1), *mu = pr_f32(r, rows, 0, 1), *rs = pr_f32(r, rows, 0, 1);
      pair *dy = pr_f32(r, n, -1, 1), *dx = pr_f32(r, n, -1, 1), *dg = pr_f32(r, cols, -1, 1),
           *db = pr_f32(r, cols, -1, 1);
      BOTH(tp_k_layernorm_fwd(be, S(y), S(mu), S(rs), S(x), S(g), S(b), rows, cols, 1e-5f));
      expect_close("layernorm_fwd y", y, TP_F32, n, TOL_RED);
      expect_close("layernorm_fwd mean", mu, TP_F32, rows, TOL_RED);
      expect_close("layernorm_fwd rstd", rs, TP_F32, rows, TOL_RED);
      BOTH(tp_k_layernorm_bwd(be, S(dx), S(dg), S(db), S(dy), S(x), S(mu), S(rs), S(g), rows,
                              cols));
      expect_close("layernorm_bwd dx", dx, TP_F32, n, TOL_RED);
      expect_close("layernorm_bwd dgamma", dg, TP_F32, cols, TOL_RED);
      expect_close("layernorm_bwd dbeta", db, TP_F32, cols, TOL_RED);
      pair *all[] = {x, g, b, y, mu, rs, dy, dx, dg, db};
      for (size_t i = 0; i < G_N_ELEMENTS(all); i++) pr_free(all[i]);
    }
  g_rand_free(r);
}

TP_TEST(BackendOps, SoftmaxMaskedForwardBackward) {
  SETUP();
  GRand *r = g_rand_new_with_seed(8);
  /* [batch, heads, rows, cols]; the last is over 1 MiB per batch entry */
  const int shapes[][4] = {{1, 1, 1, 1}, {3, 2, 7, 13}, {2, 3, 1, 130}, {5, 1, 33, 33},
                           {2, 2, 130, 1100}};
  for (size_t si = 0; si < G_N_ELEMENTS(shapes); si++) {
    int B = shapes[si][0], H = shapes[si][1], R = shapes[si][2], C = shapes[si][3];
    int64_t n = (int64_t)B * H * R * C;
    int32_t *mask = g_new(int32_t, (int64_t)B * C);
    for (int64_t i = 0; i < (int64_t)B * C; i++) mask[i] = g_rand_int_range(r, 0, 4) != 0;
    for (int j = 0; j < C && B > 1; j++) mask[(int64_t)(B - 1) * C + j] = 0; /* one fully masked */
    mask[0] = 1;
    pair *x = pr_f32(r, n, -4, 4), *y = pr_f32(r, n, -1, 1), *mk = pr_i32(mask, (int64_t)B * C);
    pair *dy = pr_f32(r, n, -1, 1), *dx = pr_f32(r, n, -1, 1), *y2 = pr_f32(r, n, -1, 1);
    BOTH(tp_k_softmax_fwd(be, S(y), S(x), S(mk), B, H, R, C, 0.37f));
    expect_close("softmax_fwd masked", y, TP_F32, n, TOL_RED);
    BOTH(tp_k_softmax_fwd(be, S(y2), S(x), tp_mem_null(), B, H, R, C, 1.0f));
    expect_close("softmax_fwd unmasked", y2, TP_F32, n, TOL_RED);
    BOTH(tp_k_softmax_bwd(be, S(dx), S(dy), S(y), B, H, R, C, 0.37f));
    expect_close("softmax_bwd", dx, TP_F32, n, TOL_RED);
    g_free(mask);
    pair *all[] = {x, y, mk, dy, dx, y2};
    for (size_t i = 0; i < G_N_ELEMENTS(all); i++) pr_free(all[i]);
  }
  g_rand_free(r);
}

TP_TEST(BackendOps, BiasAddAndGrad) {
  SETUP();
  GRand *r = g_rand_new_with_seed(9);
  const int rows_of[] = {1, 7, 301, 2100};
  for (int ri = 0; ri < 4; ri++)
    for (int s = 0; s < NSIZES; s++) {
      int rows = rows_of[ri], cols = SIZES[s];
      int64_t n = (int64_t)rows * cols;
      pair *y = pr_f32(r, n, -1, 1), *b = pr_f32(r, cols, -1, 1), *db = pr_f32(r, cols, -1, 1);
      BOTH(tp_k_bias_add(be, S(y), S(b), rows, cols));
      expect_close("bias_add", y, TP_F32, n, TOL_EW);
      BOTH(tp_k_bias_grad(be, S(db), S(y), rows, cols));
      expect_close("bias_grad", db, TP_F32, cols, TOL_RED);
      pr_free(y);
      pr_free(b);
      pr_free(db);
    }
  g_rand_free(r);
}

/* ------------------------------------------------------------ elementwise */

/* 300,007 floats: over 1 MiB, and not a multiple of any workgroup. */
static const int64_t EW_N[] = {1, 7, 130, 4099, 300007};

TP_TEST(BackendOps, Activations) {
  SETUP();
  GRand *r = g_rand_new_with_seed(10);
  for (size_t ni = 0; ni < G_N_ELEMENTS(EW_N); ni++) {
    int64_t n = EW_N[ni];
    pair *x = pr_f32(r, n, -6, 6), *dy = pr_f32(r, n, -1, 1), *y = pr_f32(r, n, -1, 1);
    pair *dx = pr_f32(r, n, -1, 1);
    BOTH(tp_k_gelu_fwd(be, S(y), S(x), n));
    expect_close("gelu_fwd", y, TP_F32, n, TOL_EW);
    BOTH(tp_k_gelu_bwd(be, S(dx), S(dy), S(x), n));
    expect_close("gelu_bwd", dx, TP_F32, n, TOL_EW);
    BOTH(tp_k_relu_fwd(be, S(y), S(x), n));
    expect_close("relu_fwd", y, TP_F32, n, TOL_EW);
    BOTH(tp_k_relu_bwd(be, S(dx), S(dy), S(x), n));
    expect_close("relu_bwd", dx, TP_F32, n, TOL_EW);
    BOTH(tp_k_tanh_fwd(be, S(y), S(x), n));
    expect_close("tanh_fwd", y, TP_F32, n, TOL_EW);
    BOTH(tp_k_tanh_bwd(be, S(dx), S(dy), S(y), n));
    expect_close("tanh_bwd", dx, TP_F32, n, TOL_EW);
    pair *all[] = {x, dy, y, dx};
    for (size_t i = 0; i < G_N_ELEMENTS(all); i++) pr_free(all[i]);
  }
  g_rand_free(r);
}

TP_TEST(BackendOps, AddAxpyFill) {
  SETUP();
  GRand *r = g_rand_new_with_seed(11);
  for (size_t ni = 0; ni < G_N_ELEMENTS(EW_N); ni++) {
    int64_t n = EW_N[ni];
    pair *a = pr_f32(r, n, -1, 1), *b = pr_f32(r, n, -1, 1), *y = pr_f32(r, n, -1, 1);
    BOTH(tp_k_add(be, S(y), S(a), S(b), n));
    expect_close("add", y, TP_F32, n, TOL_EW);
    BOTH(tp_k_add(be, S(a), S(a), S(b), n)); /* y aliasing a */
    expect_close("add in place", a, TP_F32, n, TOL_EW);
    BOTH(tp_k_axpy(be, S(y), S(b), -0.3f, n));
    expect_close("axpy", y, TP_F32, n, TOL_EW);
    BOTH(tp_k_fill(be, S(b), 2.5f, n));
    expect_close("fill", b, TP_F32, n, 0);
    pr_free(a);
    pr_free(b);
    pr_free(y);
  }
  g_rand_free(r);
}

TP_TEST(BackendOps, DropoutSameMaskEverywhere) {
  SETUP();
  GRand *r = g_rand_new_with_seed(12);
  const float ps[] = {0.0f, 0.1f, 0.5f};
  for (size_t ni = 0; ni < G_N_ELEMENTS(EW_N); ni++)
    for (int pi = 0; pi < 3; pi++) {
      int64_t n = EW_N[ni];
      float p = ps[pi];
      uint64_t seed = 0x1234567890abcdefull, off = ((uint64_t)ni << 40) + 0xfffffff0ull;
      pair *x = pr_f32(r, n, -1, 1), *y = pr_f32(r, n, -1, 1), *dx = pr_f32(r, n, -1, 1);
      BOTH(tp_k_dropout_fwd(be, S(y), S(x), n, p, seed, off));
      expect_close("dropout_fwd", y, TP_F32, n, TOL_EW);
      BOTH(tp_k_dropout_bwd(be, S(dx), S(x), n, p, seed, off));
      expect_close("dropout_bwd", dx, TP_F32, n, TOL_EW);
      /* the keep-mask slots where the target has them (else the composition) */
      if (TP_IFACE_HAS(BE[1]->iface, dropout_fwd_keep)) {
        pair *keep = pr_new((size_t)n, 1), *y2 = pr_f32(r, n, -1, 1), *dx2 = pr_f32(r, n, 0, 0);
        tp_k_dropout_fwd_keep(BE[1], pm(y2, 1), pm(keep, 1), pm(x, 1), n, p, seed, off);
        tp_k_dropout_fwd(BE[0], pm(y2, 0), pm(x, 0), n, p, seed, off);
        expect_close("dropout_fwd_keep", y2, TP_F32, n, TOL_EW);
        tp_k_dropout_bwd_keep(BE[1], pm(dx2, 1), pm(x, 1), pm(keep, 1), n, p);
        tp_k_dropout_bwd(BE[0], pm(dx2, 0), pm(x, 0), n, p, seed, off);
        expect_close("dropout_bwd_keep", dx2, TP_F32, n, TOL_EW);
        pr_free(keep);
        pr_free(y2);
        pr_free(dx2);
      }
      pr_free(x);
      pr_free(y);
      pr_free(dx);
    }
  g_rand_free(r);
}

TP_TEST(BackendOps, PermuteAndFirstToken) {
  SETUP();
  GRand *r = g_rand_new_with_seed(13);
  /* [d0, d1, d2, d3]; the last spans more than 1 MiB over d0 */
  const int shapes[][4] = {{1, 1, 1, 1}, {2, 7, 3, 13}, {3, 1, 5, 33}, {9, 130, 12, 33}};
  for (size_t si = 0; si < G_N_ELEMENTS(shapes); si++) {
    const int *d = shapes[si];
    int64_t n = (int64_t)d[0] * d[1] * d[2] * d[3];
    pair *x = pr_f32(r, n, -1, 1), *y = pr_f32(r, n, -1, 1);
    BOTH(tp_k_permute_0213(be, S(y), S(x), d[0], d[1], d[2], d[3], 0.0f));
    expect_close("permute_0213", y, TP_F32, n, 0);
    BOTH(tp_k_permute_0213(be, S(y), S(x), d[0], d[2], d[1], d[3], 1.0f));
    expect_close("permute_0213 beta 1", y, TP_F32, n, TOL_EW);
    /* x as [batch, seq, h] = [d0, d1*d2, d3] */
    int batch = d[0], seq = d[1] * d[2], h = d[3];
    pair *t = pr_f32(r, (int64_t)batch * h, -1, 1);
    BOTH(tp_k_first_token_fwd(be, S(t), S(x), batch, seq, h));
    expect_close("first_token_fwd", t, TP_F32, (int64_t)batch * h, 0);
    BOTH(tp_k_first_token_bwd(be, S(x), S(t), batch, seq, h));
    expect_close("first_token_bwd", x, TP_F32, n, TOL_EW);
    pr_free(x);
    pr_free(y);
    pr_free(t);
  }
  g_rand_free(r);
}

/* ------------------------------------------------------------ loss */

TP_TEST(BackendOps, CrossEntropyAndCountCorrect) {
  SETUP();
  GRand *r = g_rand_new_with_seed(14);
  const int shapes[][2] = {{1, 1}, {1, 2}, {7, 2}, {33, 13}, {130, 3}};
  for (size_t si = 0; si < G_N_ELEMENTS(shapes); si++) {
    int B = shapes[si][0], C = shapes[si][1];
    int32_t *lab = g_new(int32_t, B);
    for (int b = 0; b < B; b++) lab[b] = g_rand_int_range(r, 0, C);
    pair *z = pr_f32(r, (int64_t)B * C, -5, 5), *l = pr_i32(lab, B);
    pair *loss = pr_f32(r, 1, 0, 1), *dz = pr_f32(r, (int64_t)B * C, -1, 1);
    pair *dl = pr_f32(r, 1, 0.5, 2), *cnt = pr_f32(r, 1, 0, 1);
    BOTH(tp_k_cross_entropy_fwd(be, S(loss), S(z), S(l), B, C));
    expect_close("cross_entropy_fwd", loss, TP_F32, 1, TOL_RED);
    BOTH(tp_k_cross_entropy_bwd(be, S(dz), S(dl), S(z), S(l), B, C));
    expect_close("cross_entropy_bwd", dz, TP_F32, (int64_t)B * C, TOL_RED);
    BOTH(tp_k_count_correct(be, S(cnt), S(z), S(l), B, C));
    expect_close("count_correct", cnt, TP_F32, 1, 0);
    g_free(lab);
    pair *all[] = {z, l, loss, dz, dl, cnt};
    for (size_t i = 0; i < G_N_ELEMENTS(all); i++) pr_free(all[i]);
  }
  g_rand_free(r);
}

/* ------------------------------------------------------------ optimizer */

TP_TEST(BackendOps, AdamBothModesWithAndWithoutControl) {
  SETUP();
  GRand *r = g_rand_new_with_seed(15);
  for (size_t ni = 0; ni < G_N_ELEMENTS(EW_N); ni++)
    for (int mode = 0; mode < 2; mode++)
      for (int use_ctl = 0; use_ctl < 3; use_ctl++) { /* none, scale, skip */
        int64_t n = EW_N[ni];
        pair *p = pr_f32(r, n, -1, 1), *g = pr_f32(r, n, -1, 1), *m = pr_f32(r, n, -0.1, 0.1);
        pair *v = pr_f32(r, n, 0, 0.01);
        float ctl_h[TP_CTL_WORDS] = {0};
        ctl_h[TP_CTL_GRAD_SCALE] = 0.25f;
        ctl_h[TP_CTL_SKIP] = use_ctl == 2 ? 1.0f : 0.0f;
        pair *ctl = pr_new(sizeof ctl_h, 4);
        pr_upload(ctl, ctl_h);
        BOTH({
          tp_adam_args a = {.mode = mode ? TP_ADAM_W : TP_ADAM_KERAS, .lr = 1e-3f, .beta1 = 0.9f,
                            .beta2 = 0.999f, .eps = 1e-7f, .weight_decay = 0.01f, .step = 3,
                            .grad_scale = 0.5f, .ctl = use_ctl ? S(ctl) : tp_mem_null()};
          tp_k_adam_step(be, S(p), S(g), S(m), S(v), n, &a);
        });
        expect_close("adam p", p, TP_F32, n, TOL_EW);
        expect_close("adam m", m, TP_F32, n, TOL_EW);
        expect_close("adam v", v, TP_F32, n, TOL_EW);
        pair *all[] = {p, g, m, v, ctl};
        for (size_t i = 0; i < G_N_ELEMENTS(all); i++) pr_free(all[i]);
      }
  g_rand_free(r);
}

TP_TEST(BackendOps, OptimControlMatchesTheReferenceRule) {
  SETUP();
  /* clipping, growth at the interval, and a non-finite step under scaling */
  const float sumsq[] = {4.0f, 0.25f, INFINITY, NAN};
  for (int dyn = 0; dyn < 2; dyn++)
    for (size_t i = 0; i < G_N_ELEMENTS(sumsq); i++) {
      float ctl_h[TP_CTL_WORDS] = {0};
      ctl_h[TP_CTL_SUMSQ] = sumsq[i] * (dyn ? 1024.0f * 1024.0f : 1.0f);
      ctl_h[TP_CTL_LOSS_SCALE] = dyn ? 1024.0f : 1.0f;
      ctl_h[TP_CTL_GOOD_STEPS] = 1.0f;
      pair *ctl = pr_new(sizeof ctl_h, 4);
      pr_upload(ctl, ctl_h);
      tp_control_args a = {.max_norm = 1.0f, .dynamic = dyn, .growth_interval = 2, .growth = 2,
                           .backoff = 0.5f};
      BOTH(tp_k_optim_control(be, S(ctl), &a));
      expect_close("optim_control", ctl, TP_F32, TP_CTL_WORDS, TOL_EW);
      pr_free(ctl);
    }
}

TP_TEST(BackendOps, SumsqNonfiniteCast) {
  SETUP();
  GRand *r = g_rand_new_with_seed(16);
  for (size_t ni = 0; ni < G_N_ELEMENTS(EW_N); ni++) {
    int64_t n = EW_N[ni];
    pair *x = pr_f32(r, n, -2, 2), *acc = pr_f32(r, 1, 0, 1);
    BOTH(tp_k_sumsq(be, S(acc), S(x), n));
    expect_close("sumsq", acc, TP_F32, 1, TOL_RED);
    int32_t zero = 0;
    pair *flag = pr_i32(&zero, 1);
    BOTH(tp_k_nonfinite(be, S(flag), S(x), n));
    expect_close("nonfinite (finite input)", flag, TP_I32, 1, 0);
    float bad = NAN;
    for (int s = 0; s < 2; s++) {
      GError *err = NULL;
      tp_mem at = pm(x, s);
      at.off += (size_t)(n - 1) * 4;
      if (!tp_backend_upload(BE[s], at, &bad, 4, &err)) g_error("%s", err->message);
    }
    BOTH(tp_k_nonfinite(be, S(flag), S(x), n));
    expect_close("nonfinite (a NaN)", flag, TP_I32, 1, 0);
    const tp_dtype dts[3] = {TP_F32, TP_BF16, TP_F16};
    pair *src = pr_f32(r, n, -70000, 70000);
    for (int a = 0; a < 3; a++)
      for (int b = 0; b < 3; b++) {
        if (!(BE[1]->info.storage_dtypes & TP_DTYPE_BIT(dts[a])) ||
            !(BE[1]->info.storage_dtypes & TP_DTYPE_BIT(dts[b])))
          continue;
        pair *mid = pr_new((size_t)n * tp_dtype_size(dts[a]), tp_dtype_size(dts[a]));
        pair *out = pr_new((size_t)n * tp_dtype_size(dts[b]), tp_dtype_size(dts[b]));
        BOTH(tp_k_cast(be, S(mid), dts[a], S(src), TP_F32, n));
        BOTH(tp_k_cast(be, S(out), dts[b], S(mid), dts[a], n));
        char what[64];
        g_snprintf(what, sizeof what, "cast f32 -> %s -> %s", tp_dtype_name(dts[a]),
                   tp_dtype_name(dts[b]));
        expect_close(what, out, dts[b], n, 0); /* rounding is exact: the same bits */
        pr_free(mid);
        pr_free(out);
      }
    pr_free(src);
    pr_free(x);
    pr_free(acc);
    pr_free(flag);
  }
  g_rand_free(r);
}

/* ------------------------------------------------------------ attention */

/* The attention op on both backends (the target's fused slot where it has
 * one, the CPU's composition), forward and backward. */
static void attention_case(GRand *r, int B, int Tq, int T, int heads, int hd, bool with_bias,
                           float dropout, bool masked_entry, tp_dtype compute) {
  int H = heads * hd;
  int64_t qs[3] = {B, Tq, H}, ks[3] = {B, T, H}, ms[2] = {B, T}, bs[3] = {heads, Tq, T};
  int64_t nq = (int64_t)B * Tq * H, nk = (int64_t)B * T * H, nb = (int64_t)heads * Tq * T;
  float *hq = g_new(float, nq), *hk = g_new(float, nk), *hv = g_new(float, nk);
  float *hb = g_new(float, nb), *dout = g_new(float, nq);
  int32_t *hm = g_new(int32_t, (int64_t)B * T);
  for (int64_t i = 0; i < nq; i++) hq[i] = (float)g_rand_double_range(r, -1, 1);
  for (int64_t i = 0; i < nk; i++) hk[i] = (float)g_rand_double_range(r, -1, 1);
  for (int64_t i = 0; i < nk; i++) hv[i] = (float)g_rand_double_range(r, -1, 1);
  for (int64_t i = 0; i < nb; i++) hb[i] = (float)g_rand_double_range(r, -1, 1);
  for (int64_t i = 0; i < nq; i++) dout[i] = (float)g_rand_double_range(r, -1, 1);
  /* mostly a padded tail (dynamic padding), some holes */
  for (int64_t i = 0; i < (int64_t)B * T; i++)
    hm[i] = i % T == 0 || (i % T < T - (i / T) % 4 && g_rand_int_range(r, 0, 6));
  if (masked_entry)
    for (int j = 0; j < T; j++) hm[(int64_t)(B - 1) * T + j] = 0;
  float *res[2][5] = {{0}};
  int64_t cnt[5] = {nq, nq, nk, nk, nb};
  for (int s = 0; s < 2; s++) {
    GError *err = NULL;
    tp_ctx *c = tp_ctx_new(BE[s], &err);
    tp_ctx_set_fused(c, s == 1); /* the reference: the composition */
    if (compute != TP_F32 && !tp_ctx_set_precision(c, compute, &err))
      g_error("precision: %s", err->message);
    tp_ctx_begin_step(c);
    tp_ctx_set_training(c, true);
    tp_ctx_set_rng(c, 77, 1ull << 40);
    tp_tensor *q = tp_tensor_from_host(c, TP_F32, 3, qs, hq);
    tp_tensor *k = tp_tensor_from_host(c, TP_F32, 3, ks, hk);
    tp_tensor *v = tp_tensor_from_host(c, TP_F32, 3, ks, hv);
    tp_tensor *m = tp_tensor_from_host(c, TP_I32, 2, ms, hm);
    tp_tensor *bias = with_bias ? tp_tensor_from_host(c, TP_F32, 3, bs, hb) : NULL;
    q->requires_grad = k->requires_grad = v->requires_grad = true;
    if (bias) bias->requires_grad = true;
    tp_tensor *out = tp_attention(c, q, k, v, m, bias, heads, dropout);
    tp_tensor *ts[5] = {out, NULL, NULL, NULL, NULL};
    bool ok = out && tp_ctx_backward_from(c, out, dout, &err);
    ts[1] = q->grad;
    ts[2] = k->grad;
    ts[3] = v->grad;
    ts[4] = bias ? bias->grad : NULL;
    for (int i = 0; ok && i < 5; i++) {
      if (!ts[i]) continue;
      res[s][i] = g_new(float, cnt[i]);
      ok = tp_tensor_to_host(c, ts[i], res[s][i], &err);
    }
    if (!ok) {
      TP_FAILF("attention on %s: %s", BE[s]->name, err ? err->message : "?");
      g_clear_error(&err);
    }
    tp_ctx_free(c);
  }
  static const char *const names[5] = {"out", "dq", "dk", "dv", "dbias"};
  /* At half precision the CPU's fused slot (also behind bindcheck) rounds
   * exactly the operands the composition rounds; a GPU kernel rounds its own
   * intermediates (P, dS) and is held to a few units of the type instead. */
  bool same_rounding = compute == TP_F32 || !strcmp(BE[1]->name, "cpu") ||
                       !strcmp(BE[1]->name, "bindcheck");
  double tol = same_rounding ? TOL_RED : compute == TP_BF16 ? 1e-2 : 2e-3;
  for (int i = 0; i < 5; i++) {
    if (!res[0][i] || !res[1][i]) continue;
    double diff = 0, ref = 0;
    for (int64_t j = 0; j < cnt[i]; j++) {
      diff = fmax(diff, fabs((double)res[1][i][j] - res[0][i][j]));
      ref = fmax(ref, fabs((double)res[0][i][j]));
    }
    if (!(diff <= tol * fmax(ref, 1e-30)))
      TP_FAILF("attention B=%d Tq=%d T=%d nh=%d hd=%d bias=%d p=%g %s on %s: %s rel %.3g", B, Tq,
               T, heads, hd, with_bias, dropout, tp_dtype_name(compute), BE[1]->name, names[i],
               diff / ref);
    g_free(res[0][i]);
    g_free(res[1][i]);
  }
  g_free(hq);
  g_free(hk);
  g_free(hv);
  g_free(hb);
  g_free(dout);
  g_free(hm);
}

TP_TEST(BackendOps, AttentionFusedOrComposed) {
  SETUP();
  GRand *r = g_rand_new_with_seed(17);
  attention_case(r, 1, 1, 1, 1, 1, false, 0.0f, false, TP_F32);
  attention_case(r, 2, 7, 7, 3, 5, true, 0.0f, true, TP_F32);
  attention_case(r, 3, 13, 13, 2, 33, false, 0.1f, false, TP_F32);
  attention_case(r, 2, 1, 13, 4, 8, false, 0.1f, false, TP_F32); /* the [CLS]-only last layer */
  attention_case(r, 2, 130, 130, 2, 16, true, 0.1f, true, TP_F32);
  attention_case(r, 4, 33, 33, 3, 8, false, 0.5f, false, TP_F32);
  /* a head larger than a backend's fused kernel takes: composed instead */
  attention_case(r, 1, 3, 5, 1, 300, true, 0.0f, false, TP_F32);
  g_rand_free(r);
}

/* The products at half precision: the CPU's fused slot rounds the operands
 * the composed path's matmuls round (Q, K, V, P', dO, dS); other backends'
 * within a few units of the type. */
TP_TEST(BackendOps, AttentionHalfCompute) {
  SETUP();
  GRand *r = g_rand_new_with_seed(18);
  const tp_dtype ct[2] = {TP_BF16, TP_F16};
  for (int i = 0; i < 2; i++) {
    if (!(BE[1]->info.gemm_compute & TP_DTYPE_BIT(ct[i]))) continue;
    attention_case(r, 2, 13, 13, 3, 8, true, 0.1f, true, ct[i]);
    attention_case(r, 3, 1, 33, 2, 16, false, 0.1f, false, ct[i]);
    attention_case(r, 2, 65, 65, 2, 32, false, 0.0f, false, ct[i]);
  }
  g_rand_free(r);
}

/* ------------------------------------------------------------ fused ops */

/* The fused ops on both backends (the target's slots where it has them, the
 * CPU's composition of basic kernels), forward and every gradient. Inputs
 * that already hold a gradient (acc) come from a second consumer. */
static void fused_case(GRand *r, int rows, int in, int cols, float p, bool second_consumer) {
  int64_t xs[2] = {rows, in}, ws[2] = {cols, in}, bs[1] = {cols}, ys[2] = {rows, cols};
  int64_t n = (int64_t)rows * cols;
  float *hx = g_new(float, rows * in), *hw = g_new(float, cols * in), *hb = g_new(float, cols),
        *hr = g_new(float, n), *hg = g_new(float, cols), *hbe = g_new(float, cols),
        *dout = g_new(float, n);
  for (int64_t i = 0; i < (int64_t)rows * in; i++) hx[i] = (float)g_rand_double_range(r, -1, 1);
  for (int64_t i = 0; i < (int64_t)cols * in; i++) hw[i] = (float)g_rand_double_range(r, -1, 1);
  for (int i = 0; i < cols; i++) {
    hb[i] = (float)g_rand_double_range(r, -1, 1);
    hg[i] = (float)g_rand_double_range(r, 0.5, 1.5);
    hbe[i] = (float)g_rand_double_range(r, -1, 1);
  }
  for (int64_t i = 0; i < n; i++) {
    hr[i] = (float)g_rand_double_range(r, -1, 1);
    dout[i] = (float)g_rand_double_range(r, -1, 1);
  }
  float *res[2][7] = {{0}};
  int64_t cnt[7] = {n, (int64_t)rows * in, (int64_t)cols * in, cols, n, cols, cols};
  for (int s = 0; s < 2; s++) {
    GError *err = NULL;
    tp_ctx *c = tp_ctx_new(BE[s], &err);
    tp_ctx_set_fused(c, s == 1);
    tp_ctx_begin_step(c);
    tp_ctx_set_training(c, true);
    tp_ctx_set_rng(c, 5, 3ull << 40);
    tp_tensor *x = tp_tensor_from_host(c, TP_F32, 2, xs, hx);
    tp_tensor *w = tp_tensor_from_host(c, TP_F32, 2, ws, hw);
    tp_tensor *b = tp_tensor_from_host(c, TP_F32, 1, bs, hb);
    tp_tensor *res_in = tp_tensor_from_host(c, TP_F32, 2, ys, hr);
    tp_tensor *g = tp_tensor_from_host(c, TP_F32, 1, bs, hg);
    tp_tensor *be = tp_tensor_from_host(c, TP_F32, 1, bs, hbe);
    x->requires_grad = w->requires_grad = b->requires_grad = res_in->requires_grad = true;
    g->requires_grad = be->requires_grad = true;
    /* out = layernorm(dropout(linear_gelu(x)) + res) (+ res again: a second consumer) */
    tp_tensor *h = tp_linear_gelu(c, x, w, b);
    tp_tensor *out = tp_add_layernorm(c, h, res_in, g, be, 1e-5f, p);
    if (second_consumer) out = tp_add(c, out, res_in);
    tp_tensor *ts[7] = {out};
    bool ok = out && tp_ctx_backward_from(c, out, dout, &err);
    ts[1] = x->grad;
    ts[2] = w->grad;
    ts[3] = b->grad;
    ts[4] = res_in->grad;
    ts[5] = g->grad;
    ts[6] = be->grad;
    for (int i = 0; ok && i < 7; i++) {
      if (!ts[i]) continue;
      res[s][i] = g_new(float, cnt[i]);
      ok = tp_tensor_to_host(c, ts[i], res[s][i], &err);
    }
    if (!ok) {
      TP_FAILF("fused ops on %s: %s", BE[s]->name, err ? err->message : "?");
      g_clear_error(&err);
    }
    tp_ctx_free(c);
  }
  static const char *const names[7] = {"out", "dx", "dw", "db", "dres", "dgamma", "dbeta"};
  for (int i = 0; i < 7; i++) {
    if (!res[0][i] || !res[1][i]) {
      if (res[0][i] || res[1][i]) TP_FAILF("fused ops: %s exists on one side only", names[i]);
      g_free(res[0][i]);
      g_free(res[1][i]);
      continue;
    }
    double diff = 0, ref = 0;
    for (int64_t j = 0; j < cnt[i]; j++) {
      diff = fmax(diff, fabs((double)res[1][i][j] - res[0][i][j]));
      ref = fmax(ref, fabs((double)res[0][i][j]));
    }
    if (!(diff <= TOL_RED * fmax(ref, 1e-30)))
      TP_FAILF("linear_gelu + add_layernorm rows=%d in=%d cols=%d p=%g on %s: %s rel %.3g", rows,
               in, cols, p, BE[1]->name, names[i], diff / ref);
    g_free(res[0][i]);
    g_free(res[1][i]);
  }
  g_free(hx);
  g_free(hw);
  g_free(hb);
  g_free(hr);
  g_free(hg);
  g_free(hbe);
  g_free(dout);
}

TP_TEST(BackendOps, FusedLinearGeluAddLayernorm) {
  SETUP();
  GRand *r = g_rand_new_with_seed(19);
  fused_case(r, 1, 1, 1, 0.0f, false);
  fused_case(r, 7, 5, 13, 0.1f, true);
  fused_case(r, 33, 17, 130, 0.0f, true);
  fused_case(r, 700, 40, 400, 0.1f, false); /* 1.1 MB activations: split at a 1 MiB binding */
  g_rand_free(r);
}
