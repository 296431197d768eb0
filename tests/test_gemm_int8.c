/* tests/test_gemm_int8.c — precision i8: the CPU gemm slot against a host
 * reference of its quantization (backend_iface.h, plugins/cpu/cpu_gemm_int8.c),
 * its distance from the f32 product, non-finite inputs, the layouts that stay
 * f32, and the core's rules (inference only; backends without it refuse it).
 *
 * Metric: max|got - want| / max|want|. Against the reference 1e-5 (the sums
 * are exact integers; only the f32 scaling may round differently); against
 * f32 the quantization error itself, bounded by 2% for uniform inputs. */
#include <math.h>
#include <stdlib.h>

#include "tensorplug/backend.h"
#include "tensorplug/error.h"
#include "tensorplug/kernels.h"
#include "tensorplug/model.h"
#include "tensorplug/ops.h"
#include "tensorplug/tensor.h"
#include "tp_test.h"

static tp_backend *cpu(void) {
  static tp_backend *be;
  if (!be) {
    GError *err = NULL;
    be = tp_backend_open(NULL, "cpu", -1, 2, &err);
    if (!be) TP_FAILF("cannot open the cpu backend: %s", err ? err->message : "?");
    g_clear_error(&err);
  }
  return be;
}

static bool has_i8(void) {
  return cpu() && (cpu()->info.gemm_compute & TP_DTYPE_BIT(TP_I8));
}

/* Per-row symmetric quantization, exactly as the slot's spec. */
static void quantize(const float *x, int rows, int cols, int ld, int8_t *q, float *scale) {
  for (int i = 0; i < rows; i++) {
    float m = 0.0f;
    bool bad = false;
    for (int j = 0; j < cols; j++) {
      float a = fabsf(x[(int64_t)i * ld + j]);
      bad = bad || !isfinite(a);
      m = a > m ? a : m;
    }
    scale[i] = bad ? NAN : m / 127.0f;
    float inv = bad || m == 0.0f ? 0.0f : 127.0f / m;
    for (int j = 0; j < cols; j++) {
      float v = bad ? 0.0f : nearbyintf(x[(int64_t)i * ld + j] * inv);
      q[(int64_t)i * cols + j] = (int8_t)fminf(127.0f, fmaxf(-127.0f, v));
    }
  }
}

/* C = alpha * sa[i] * sb[j] * sum_k qa qb + beta * C over A [m, k] and B
 * stored [n, k]. */
static void reference_i8(int m, int n, int k, float alpha, const float *a, int lda,
                         const float *b, int ldb, float beta, float *c, int ldc) {
  int8_t *qa = g_new(int8_t, (size_t)m * k + 1), *qb = g_new(int8_t, (size_t)n * k + 1);
  float *sa = g_new(float, m), *sb = g_new(float, n);
  quantize(a, m, k, lda, qa, sa);
  quantize(b, n, k, ldb, qb, sb);
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) {
      int64_t s = 0;
      for (int p = 0; p < k; p++) s += (int64_t)qa[(int64_t)i * k + p] * qb[(int64_t)j * k + p];
      float r = alpha * sa[i] * sb[j] * (float)s;
      float *o = &c[(int64_t)i * ldc + j];
      *o = beta != 0.0f ? r + beta * *o : r;
    }
  g_free(qa);
  g_free(qb);
  g_free(sa);
  g_free(sb);
}

static void ref_f32(bool ta, bool tb, int m, int n, int k, float alpha, const float *a, int lda,
                    const float *b, int ldb, float beta, float *c, int ldc) {
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) {
      double s = 0.0;
      for (int p = 0; p < k; p++)
        s += (double)(ta ? a[(int64_t)p * lda + i] : a[(int64_t)i * lda + p]) *
             (tb ? b[(int64_t)j * ldb + p] : b[(int64_t)p * ldb + j]);
      float *o = &c[(int64_t)i * ldc + j];
      *o = (float)(alpha * s + (beta != 0.0f ? beta * *o : 0.0f));
    }
}

static float *randoms(GRand *r, int64_t n, float lo, float hi) {
  float *x = g_new(float, n);
  for (int64_t i = 0; i < n; i++) x[i] = (float)g_rand_double_range(r, lo, hi);
  return x;
}

/* The slot on host arrays: C (cn floats) is updated in place. */
static bool run_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float *a,
                     int64_t an, int lda, const float *b, int64_t bn, int ldb, float beta, float *c,
                     int64_t cn, int ldc, tp_dtype compute) {
  GError *err = NULL;
  tp_ctx *ctx = tp_ctx_new(cpu(), &err);
  int64_t sa[1] = {an}, sb[1] = {bn}, sc[1] = {cn};
  tp_tensor *A = tp_tensor_from_host(ctx, TP_F32, 1, sa, a);
  tp_tensor *B = tp_tensor_from_host(ctx, TP_F32, 1, sb, b);
  tp_tensor *C = tp_tensor_from_host(ctx, TP_F32, 1, sc, c);
  bool ok = A && B && C;
  if (ok) {
    tp_gemm_args g = {.ta = ta, .tb = tb, .m = m, .n = n, .k = k, .batch = 1, .alpha = alpha,
                      .beta = beta, .a = A->mem, .b = B->mem, .c = C->mem, .lda = lda,
                      .ldb = ldb, .ldc = ldc, .ab_dtype = TP_F32, .c_dtype = TP_F32,
                      .compute = compute};
    tp_k_gemm(cpu(), &g);
    ok = tp_tensor_to_host(ctx, C, c, &err);
  }
  if (!ok) TP_FAILF("gemm %dx%dx%d: %s", m, n, k, err ? err->message : "?");
  g_clear_error(&err);
  tp_ctx_free(ctx);
  return ok;
}

/* The quantized layout, dense: C [m, n] = A [m, k] @ B^T, B stored [n, k]. */
static bool run_dense_i8(int m, int n, int k, const float *a, const float *b, float *c) {
  return run_gemm(false, true, m, n, k, 1.0f, a, (int64_t)m * k, k, b, (int64_t)n * k, k, 0.0f, c,
                  (int64_t)m * n, n, TP_I8);
}

/* max|got - want| / max|want| over the m x n block (stride ld); the
 * elements between rows must be equal (untouched). */
static double rel_err(const float *got, const float *want, int m, int n, int ld, int64_t total) {
  double num = 0.0, den = 0.0;
  for (int64_t i = 0; i < total; i++) {
    bool inside = i / ld < m && i % ld < n;
    if (!inside && memcmp(&got[i], &want[i], 4) != 0) return INFINITY;
    if (!inside) continue;
    num = fmax(num, fabs((double)got[i] - want[i]));
    den = fmax(den, fabs((double)want[i]));
  }
  return den > 0 ? num / den : num;
}

TP_TEST(GemmInt8, MatchesTheQuantizationReference) {
  if (!has_i8()) TP_SKIP("this CPU or build has no i8 products (oneDNN with VNNI)");
  GRand *r = g_rand_new_with_seed(11);
  /* odd sizes: the 16-wide loops' tails, one row, one column, k = 1 */
  static const int shapes[][3] = {{1, 1, 1}, {3, 7, 13}, {33, 17, 130}, {130, 65, 33},
                                  {200, 389, 384}, {5, 1536, 385}};
  for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++)
    for (int bi = 0; bi < 2; bi++) {
      int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
      int lda = k + 3, ldb = k + 1, ldc = n + 2;
      float alpha = 0.7f, beta = bi ? 1.3f : 0.0f;
      int64_t an = (int64_t)m * lda, bn = (int64_t)n * ldb, cn = (int64_t)m * ldc;
      float *a = randoms(r, an, -2, 3), *b = randoms(r, bn, -0.1f, 0.1f), *c = randoms(r, cn, -1, 1);
      float *want = g_memdup2(c, sizeof(float) * cn);
      reference_i8(m, n, k, alpha, a, lda, b, ldb, beta, want, ldc);
      if (run_gemm(false, true, m, n, k, alpha, a, an, lda, b, bn, ldb, beta, c, cn, ldc, TP_I8)) {
        double e = rel_err(c, want, m, n, ldc, cn);
        if (!(e <= 1e-5)) TP_FAILF("i8 %dx%dx%d beta %g: %.3g from the reference", m, n, k, beta, e);
      }
      g_free(a), g_free(b), g_free(c), g_free(want);
    }
  g_rand_free(r);
}

/* The quantization error is small but real: i8 is not f32 by another name. */
TP_TEST(GemmInt8, CloseToTheF32Product) {
  if (!has_i8()) TP_SKIP("this CPU or build has no i8 products (oneDNN with VNNI)");
  GRand *r = g_rand_new_with_seed(12);
  int m = 64, n = 96, k = 384;
  float *a = randoms(r, (int64_t)m * k, -1, 1), *b = randoms(r, (int64_t)n * k, -1, 1);
  float *c = g_new0(float, m * n), *want = g_new0(float, m * n);
  ref_f32(false, true, m, n, k, 1.0f, a, k, b, k, 0.0f, want, n);
  if (run_dense_i8(m, n, k, a, b, c)) {
    double e = rel_err(c, want, m, n, n, (int64_t)m * n);
    printf("i8 against f32, %dx%dx%d uniform: relative error %.2e\n", m, n, k, e);
    TP_CHECK(e > 1e-5 && e < 2e-2);
  }
  g_free(a), g_free(b), g_free(c), g_free(want);
  g_rand_free(r);
}

/* A row of A with NaN or Inf poisons its row of C, a row of B its column; a
 * zero row gives zeros; everything else is as if they were not there. */
TP_TEST(GemmInt8, NonFiniteAndZeroRows) {
  if (!has_i8()) TP_SKIP("this CPU or build has no i8 products (oneDNN with VNNI)");
  GRand *r = g_rand_new_with_seed(13);
  int m = 6, n = 20, k = 40;
  float *a = randoms(r, (int64_t)m * k, -1, 1), *b = randoms(r, (int64_t)n * k, -1, 1);
  a[1 * k + 7] = NAN;
  a[3 * k + 0] = INFINITY;
  memset(a + 4 * k, 0, sizeof(float) * k);
  b[17 * k + 39] = -INFINITY;
  float *c = g_new0(float, m * n), *want = g_new0(float, m * n);
  reference_i8(m, n, k, 1.0f, a, k, b, k, 0.0f, want, n);
  if (run_dense_i8(m, n, k, a, b, c))
    for (int i = 0; i < m; i++)
      for (int j = 0; j < n; j++) {
        float got = c[i * n + j];
        if (i == 1 || i == 3 || j == 17) {
          if (!isnan(got)) TP_FAILF("C[%d, %d] = %g: expected NaN", i, j, got);
        } else if (i == 4) {
          if (got != 0.0f) TP_FAILF("C[4, %d] = %g: expected 0 (zero row)", j, got);
        } else if (!(fabsf(got - want[i * n + j]) <= 1e-5f * fmaxf(1.0f, fabsf(want[i * n + j])))) {
          TP_FAILF("C[%d, %d] = %g: expected %g", i, j, got, want[i * n + j]);
        }
      }
  g_free(a), g_free(b), g_free(c), g_free(want);
  g_rand_free(r);
}

/* Only activations x a weight (A [m, k], B stored [n, k]) are quantized;
 * any other layout gives exactly the f32 product. Also where i8 is not
 * offered at all (the slot falls back the same way). */
TP_TEST(GemmInt8, OtherLayoutsAreF32) {
  GRand *r = g_rand_new_with_seed(14);
  int m = 9, n = 11, k = 37;
  for (int t = 0; t < 4; t++) {
    bool ta = t & 1, tb = t & 2;
    if (!ta && tb && has_i8()) continue; /* the quantized layout */
    int lda = ta ? m : k, ldb = tb ? k : n;
    float *a = randoms(r, (int64_t)m * k, -1, 1), *b = randoms(r, (int64_t)n * k, -1, 1);
    float *c8 = randoms(r, (int64_t)m * n, -1, 1), *c32 = g_memdup2(c8, sizeof(float) * m * n);
    bool ok = run_gemm(ta, tb, m, n, k, 0.5f, a, (int64_t)m * k, lda, b, (int64_t)n * k, ldb, 1.0f,
                       c8, (int64_t)m * n, n, TP_I8) &&
              run_gemm(ta, tb, m, n, k, 0.5f, a, (int64_t)m * k, lda, b, (int64_t)n * k, ldb, 1.0f,
                       c32, (int64_t)m * n, n, TP_F32);
    if (ok && memcmp(c8, c32, sizeof(float) * m * n) != 0)
      TP_FAILF("ta=%d tb=%d: compute i8 differs from f32", ta, tb);
    g_free(a), g_free(b), g_free(c8), g_free(c32);
  }
  g_rand_free(r);
}

/* ------------------------------------------------------------ the core */

/* Logits of a small random BERT-family model at the given precision. */
static bool tiny_logits(const char *arch, tp_dtype precision, float *logits, int n) {
  GError *err = NULL;
  tp_ctx *ctx = tp_ctx_new(cpu(), &err);
  tp_model_source src = {.model = arch, .init_random = true,
                         .ov = {.layers = 2, .hidden = 64, .heads = 2, .ffn = 256,
                                .vocab_size = 500}};
  tp_model_config cfg;
  const tp_model_iface *iface = NULL;
  char *wp = NULL, *md = NULL;
  tp_model *m = ctx && tp_ctx_set_precision(ctx, precision, &err) &&
                        tp_model_resolve(NULL, &src, &iface, &cfg, &wp, &md, &err)
                    ? tp_model_new(iface, &cfg, ctx, 7, &err)
                    : NULL;
  enum { B = 4, T = 40 };
  int32_t ids[B * T], mask[B * T];
  for (int i = 0; i < B * T; i++) ids[i] = 5 + (i * 7) % 400, mask[i] = i % T < T - 5 * (i / T);
  bool ok = m != NULL;
  if (ok) {
    tp_ctx_begin_step(ctx);
    tp_ctx_set_training(ctx, false);
    int64_t sh[2] = {B, T};
    tp_tensor *z = tp_model_forward(m, ctx, tp_tensor_from_host(ctx, TP_I32, 2, sh, ids),
                                    tp_tensor_from_host(ctx, TP_I32, 2, sh, mask));
    ok = z && tp_tensor_numel(z) == n && tp_tensor_to_host(ctx, z, logits, &err);
  }
  if (!ok) TP_FAILF("%s at %s: %s", arch, tp_dtype_name(precision), err ? err->message : "?");
  g_clear_error(&err);
  tp_model_free(m);
  tp_ctx_free(ctx);
  g_free(wp);
  g_free(md);
  return ok;
}

/* A model evaluates at i8 close to f32 (the same random weights). */
TP_TEST(GemmInt8, ModelsEvaluateCloseToF32) {
  if (!has_i8()) TP_SKIP("this CPU or build has no i8 products (oneDNN with VNNI)");
  const char *arch[] = {"bert", "distilbert", "mpnet"};
  for (size_t i = 0; i < G_N_ELEMENTS(arch); i++) {
    float z32[8], z8[8];
    if (!tiny_logits(arch[i], TP_F32, z32, 8) || !tiny_logits(arch[i], TP_I8, z8, 8)) continue;
    double num = 0, den = 0;
    for (int j = 0; j < 8; j++)
      num = fmax(num, fabs((double)z8[j] - z32[j])), den = fmax(den, fabs((double)z32[j]));
    printf("%s logits, i8 against f32: max|diff| %.2e, max|f32| %.2e\n", arch[i], num, den);
    TP_CHECK(num > 0.0);        /* it did quantize */
    TP_CHECK(num < 0.05 * den); /* and stayed close */
  }
}

/* i8 has no gradients: an op that would record fails, naming the fix. */
TP_TEST(GemmInt8, RecordingIsRefused) {
  if (!has_i8()) TP_SKIP("this CPU or build has no i8 products (oneDNN with VNNI)");
  GError *err = NULL;
  tp_ctx *ctx = tp_ctx_new(cpu(), &err);
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK(tp_ctx_set_precision(ctx, TP_I8, &err));
  TP_ASSERT_NO_ERROR(err);
  tp_ctx_begin_step(ctx);
  tp_ctx_set_training(ctx, true);
  float x[6] = {1, 2, 3, 4, 5, 6}, w[6] = {1, 0, 0, 1, 1, 1};
  int64_t sx[2] = {2, 3}, sw[2] = {2, 3};
  tp_tensor *X = tp_tensor_from_host(ctx, TP_F32, 2, sx, x);
  tp_tensor *W = tp_tensor_from_host(ctx, TP_F32, 2, sw, w);
  W->requires_grad = true;
  TP_CHECK(tp_linear(ctx, X, W, NULL) == NULL || !tp_ctx_ok(ctx));
  TP_CHECK(!tp_ctx_check(ctx, &err));
  TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "inference only");
  g_clear_error(&err);
  tp_ctx_free(ctx);
}

/* A backend that does not offer i8 refuses it with the way out: Vulkan, and
 * the CPU itself where it lacks VNNI (meson runs this at TENSORPLUG_CPU_ISA=avx2). */
static void check_refuses(tp_backend *be) {
  GError *err = NULL;
  TP_CHECK(!(be->info.gemm_compute & TP_DTYPE_BIT(TP_I8)));
  tp_ctx *ctx = tp_ctx_new(be, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK(!tp_ctx_set_precision(ctx, TP_I8, &err));
  TP_CHECK_ERROR(err, TP_ERROR_UNAVAILABLE, "--precision f32");
  TP_CHECK(tp_ctx_precision(ctx) == TP_F32);
  tp_ctx_free(ctx);
}

TP_TEST(GemmInt8, BackendsWithoutItRefuse) {
  if (cpu() && !has_i8()) check_refuses(cpu());
  GError *err = NULL;
  tp_backend *vk = tp_backend_open(NULL, "vulkan", -1, 2, &err);
  if (!vk) {
    g_clear_error(&err);
    if (has_i8()) TP_SKIP("no Vulkan device here");
    return;
  }
  check_refuses(vk);
  tp_backend_close(vk);
}
