/* tests/test_cuda_host.c — the CUDA backend's host-side arithmetic, on any
 * machine: element conversions and Philox (the very functions the kernels
 * run, cuda_shared.h), the optimizer's control rule against the core's
 * reference, GEMM plans and their mapping onto cuBLASLt's column-major
 * operands, launch grids, chunk counts, attention tiles and error texts
 * (cuda_plan.c). */
#include <math.h>

#include "cuda_plan.h"
#include "cuda_shared.h"
#include "tensorplug/optim_control.h"
#include "tensorplug/philox.h"
#include "tp_test.h"

/* ---------------------------------------------------------- conversions */

static float bits(uint32_t u) { return tpcu_bits_f32(u); }

TP_TEST(CudaHost, Bf16RoundsToNearestEven) {
  TP_CHECK_INT_EQ(tpcu_f32_to_bf16(1.0f), 0x3f80);
  TP_CHECK_INT_EQ(tpcu_f32_to_bf16(bits(0x3f808000u)), 0x3f80); /* tie, even stays */
  TP_CHECK_INT_EQ(tpcu_f32_to_bf16(bits(0x3f818000u)), 0x3f82); /* tie, odd rounds up */
  TP_CHECK_INT_EQ(tpcu_f32_to_bf16(bits(0x3f808001u)), 0x3f81); /* above the tie */
  TP_CHECK_INT_EQ(tpcu_f32_to_bf16(-2.0f), 0xc000);
  TP_CHECK_INT_EQ(tpcu_f32_to_bf16(INFINITY), 0x7f80);
  TP_CHECK_INT_EQ(tpcu_f32_to_bf16(bits(0x7f7fffffu)), 0x7f80); /* FLT_MAX rounds to Inf */
  TP_CHECK_INT_EQ(tpcu_f32_to_bf16(bits(0x7f800001u)) & 0x7fc0, 0x7fc0); /* NaN stays a quiet NaN */
  TP_CHECK(tpcu_bf16_to_f32(0x3fc0) == 1.5f);
  /* every non-NaN bf16 survives a round trip */
  for (uint32_t h = 0; h < 65536; h++) {
    float f = tpcu_bf16_to_f32((uint16_t)h);
    if (isnan(f)) continue;
    if (tpcu_f32_to_bf16(f) != h) {
      TP_FAILF("bf16 0x%04x does not round-trip", h);
      break;
    }
  }
}

TP_TEST(CudaHost, F16RoundsToNearestEvenWithSubnormalsAndOverflow) {
  TP_CHECK_INT_EQ(tpcu_f32_to_f16(1.0f), 0x3c00);
  TP_CHECK_INT_EQ(tpcu_f32_to_f16(65504.0f), 0x7bff);
  TP_CHECK_INT_EQ(tpcu_f32_to_f16(65519.0f), 0x7bff);
  TP_CHECK_INT_EQ(tpcu_f32_to_f16(65520.0f), 0x7c00); /* the tie above the largest finite */
  TP_CHECK_INT_EQ(tpcu_f32_to_f16(-INFINITY), 0xfc00);
  TP_CHECK_INT_EQ(tpcu_f32_to_f16(ldexpf(1.0f, -24)), 0x0001); /* smallest subnormal */
  TP_CHECK_INT_EQ(tpcu_f32_to_f16(ldexpf(1.0f, -25)), 0x0000); /* tie to even: 0 */
  TP_CHECK_INT_EQ(tpcu_f32_to_f16(ldexpf(3.0f, -25)), 0x0002); /* 1.5 ulp: to even 2 */
  TP_CHECK_INT_EQ(tpcu_f32_to_f16(ldexpf(1.0f, -26)), 0x0000);
  TP_CHECK_INT_EQ(tpcu_f32_to_f16(ldexpf(1023.0f, -24)), 0x03ff); /* largest subnormal */
  TP_CHECK_INT_EQ(tpcu_f32_to_f16(ldexpf(2047.0f, -25)), 0x0400); /* rounds up to the smallest normal */
  TP_CHECK_INT_EQ(tpcu_f32_to_f16(-0.0f), 0x8000);
  TP_CHECK_INT_EQ(tpcu_f32_to_f16(NAN) & 0x7e00, 0x7e00);
  TP_CHECK_INT_EQ(tpcu_f32_to_f16(1.0f + ldexpf(1.0f, -11)), 0x3c00);     /* tie, even */
  TP_CHECK_INT_EQ(tpcu_f32_to_f16(1.0f + 3 * ldexpf(1.0f, -11)), 0x3c02); /* tie, odd up */
  for (uint32_t h = 0; h < 65536; h++) {
    float f = tpcu_f16_to_f32((uint16_t)h);
    if (isnan(f)) continue;
    if (tpcu_f32_to_f16(f) != h) {
      TP_FAILF("f16 0x%04x does not round-trip", h);
      break;
    }
  }
  /* random values against rounding done in double: the nearest f16, ties to even */
  GRand *r = g_rand_new_with_seed(1);
  for (int i = 0; i < 100000; i++) {
    float f = (float)ldexp(g_rand_double_range(r, -1, 1), g_rand_int_range(r, -26, 16));
    uint16_t h = tpcu_f32_to_f16(f);
    double got = tpcu_f16_to_f32(h), best = INFINITY;
    for (int dlt = -1; dlt <= 1; dlt++) {
      float g2 = tpcu_f16_to_f32((uint16_t)(h + dlt));
      if (!isnan(g2) && dlt != 0) best = fmin(best, fabs((double)g2 - f));
    }
    if (fabs(got - f) > best) {
      TP_FAILF("f16 rounding of %.9g gave 0x%04x, a neighbour is nearer", (double)f, h);
      break;
    }
  }
  g_rand_free(r);
}

TP_TEST(CudaHost, PhiloxIsTheHeadersBitForBit) {
  const uint64_t seeds[] = {0, 42, 0xfedcba9876543210ull};
  const uint64_t starts[] = {0, 0xfffffff0ull, (7ull << 40) + 3};
  for (size_t s = 0; s < G_N_ELEMENTS(seeds); s++)
    for (size_t t = 0; t < G_N_ELEMENTS(starts); t++)
      for (uint64_t i = starts[t]; i < starts[t] + 4000; i++) {
        float a = tpcu_philox_uniform((uint32_t)seeds[s], (uint32_t)(seeds[s] >> 32), i);
        float b = tp_philox_uniform(seeds[s], i);
        if (a != b) {
          TP_FAILF("philox(seed %llu, %llu): %.9g vs the header's %.9g",
                   (unsigned long long)seeds[s], (unsigned long long)i, (double)a, (double)b);
          return;
        }
      }
  TP_CHECK(tpcu_dropout_scale(0.1f) == 1.0f / 0.9f);
  TP_CHECK(tpcu_dropout_scale(1.0f) == 0.0f);
}

/* ------------------------------------------------------ optimizer control */

static void control_both(float *a, float *b, const tp_control_args *c) {
  tp_optim_control_host(a, c);
  tpcu_optim_control(b, c->max_norm, c->dynamic, c->growth_interval, c->growth, c->backoff);
}

TP_TEST(CudaHost, LossScaleStateMachineIsTheCoresRule) {
  float a[TP_CTL_WORDS] = {0}, b[TP_CTL_WORDS] = {0};
  a[TP_CTL_LOSS_SCALE] = b[TP_CTL_LOSS_SCALE] = 8.0f;
  tp_control_args c = {.max_norm = 1.0f, .dynamic = true, .growth_interval = 3, .growth = 2.0f,
                       .backoff = 0.5f};
  /* sums of squares of the scaled gradients, one per step */
  const float sumsq[] = {64.0f * 0.25f, 64.0f * 4.0f, NAN, 16.0f, INFINITY, 1.0f, 1.0f, 1.0f,
                         0.0f, 4.0f};
  for (size_t i = 0; i < G_N_ELEMENTS(sumsq); i++) {
    a[TP_CTL_SUMSQ] = b[TP_CTL_SUMSQ] = sumsq[i];
    control_both(a, b, &c);
    if (memcmp(a, b, sizeof a) != 0) {
      TP_FAILF("step %zu: the device rule differs from tp_optim_control_host", i);
      return;
    }
  }
  /* the trace itself: two skipped steps, the scale 8 -> 4 -> 2, one growth */
  TP_CHECK(b[TP_CTL_SKIPPED] == 2.0f);
  TP_CHECK(b[TP_CTL_SUMSQ] == 0.0f);
  TP_CHECK(b[TP_CTL_SKIP] == 0.0f);
  TP_CHECK(b[TP_CTL_LOSS_SCALE] == 4.0f);
  TP_CHECK(b[TP_CTL_GOOD_STEPS] == 2.0f);

  /* step by step: a non-finite norm skips and backs off, never below 1 */
  float x[TP_CTL_WORDS] = {0};
  x[TP_CTL_LOSS_SCALE] = 1.5f;
  x[TP_CTL_SUMSQ] = NAN;
  tpcu_optim_control(x, 1.0f, 1, 2000, 2.0f, 0.5f);
  TP_CHECK(x[TP_CTL_SKIP] == 1.0f && x[TP_CTL_GRAD_SCALE] == 0.0f);
  TP_CHECK(x[TP_CTL_LOSS_SCALE] == 1.0f);
  /* clipping: norm 4 (unscaled 2 at scale 2) over max 1 -> 1/2 / 2 */
  x[TP_CTL_LOSS_SCALE] = 2.0f;
  x[TP_CTL_SUMSQ] = 16.0f;
  tpcu_optim_control(x, 1.0f, 1, 2000, 2.0f, 0.5f);
  TP_CHECK(x[TP_CTL_GRAD_NORM] == 2.0f);
  TP_CHECK(x[TP_CTL_GRAD_SCALE] == 0.25f);
  TP_CHECK(x[TP_CTL_SKIP] == 0.0f);
  /* growth stops at 2^40 */
  x[TP_CTL_LOSS_SCALE] = TPCU_LOSS_SCALE_MAX;
  x[TP_CTL_SUMSQ] = 1.0f;
  tpcu_optim_control(x, 0.0f, 1, 1, 2.0f, 0.5f);
  TP_CHECK(x[TP_CTL_LOSS_SCALE] == TPCU_LOSS_SCALE_MAX);
  TP_CHECK(TPCU_LOSS_SCALE_MAX == TP_LOSS_SCALE_MAX);
  /* without dynamic scaling a NaN norm skips nothing (the NaN gradients
   * flow on into the weights, and the loss read back reports them) */
  float y[TP_CTL_WORDS];
  x[TP_CTL_LOSS_SCALE] = 1.0f;
  x[TP_CTL_SUMSQ] = NAN;
  memcpy(y, x, sizeof y);
  tp_control_args nd = {.max_norm = 1.0f, .dynamic = false, .growth_interval = 2000,
                        .growth = 2.0f, .backoff = 0.5f};
  control_both(y, x, &nd);
  TP_CHECK(x[TP_CTL_SKIP] == 0.0f && isnan(x[TP_CTL_GRAD_NORM]));
  TP_CHECK(x[TP_CTL_SKIPPED] == y[TP_CTL_SKIPPED] && x[TP_CTL_GRAD_SCALE] == y[TP_CTL_GRAD_SCALE]);
}

TP_TEST(CudaHost, AdamCoefficientsAndUpdate) {
  tp_adam_args a = {.mode = TP_ADAM_KERAS, .lr = 0.001f, .beta1 = 0.9f, .beta2 = 0.999f,
                    .eps = 1e-7f, .weight_decay = 0.1f, .step = 1, .grad_scale = 1.0f};
  float step, vscale, decay;
  TP_ASSERT(tpcu_adam_coeffs(&a, &step, &vscale, &decay));
  /* lr sqrt(1 - b2) / (1 - b1) at t = 1 */
  TP_CHECK_NEAR(step, 0.001 * sqrt(1 - 0.999f) / (1 - 0.9f), 1e-9);
  TP_CHECK(vscale == 1.0f && decay == 1.0f); /* Keras: no decay */
  a.mode = TP_ADAM_W;
  a.step = 10;
  TP_ASSERT(tpcu_adam_coeffs(&a, &step, &vscale, &decay));
  TP_CHECK_NEAR(step, 0.001 / (1 - pow(0.9f, 10)), 1e-9);
  TP_CHECK_NEAR(vscale, 1.0 / sqrt(1 - pow(0.999f, 10)), 1e-6);
  TP_CHECK_NEAR(decay, 1 - 0.001 * 0.1, 1e-7);
  a.step = 0;
  TP_CHECK(!tpcu_adam_coeffs(&a, &step, &vscale, &decay));
  /* one element: m, v, then p as the formula says */
  float p = 1.0f, m = 0.0f, v = 0.0f;
  tpcu_adam_update(&p, &m, &v, 2.0f, 0.5f, 0.9f, 0.999f, 1.0f, 0.01f, 1.0f, 0.0f);
  /* g' = 0.5 * 2 = 1 */
  TP_CHECK(m == (1.0f - 0.9f) * 1.0f);
  TP_CHECK(v == (1.0f - 0.999f) * 1.0f);
  TP_CHECK_NEAR(p, 1.0 - 0.01 * m / sqrt(v), 1e-6);
}

/* ------------------------------------------------------------------ GEMM */

static tp_gemm_args gemm(int m, int n, int k, tp_dtype ab, tp_dtype c, tp_dtype compute) {
  return (tp_gemm_args){.m = m, .n = n, .k = k, .batch = 1, .alpha = 1, .lda = k, .ldb = n,
                        .ldc = n, .ab_dtype = ab, .c_dtype = c, .compute = compute};
}

TP_TEST(CudaHost, GemmChecksItsArguments) {
  char why[256];
  tp_gemm_args g = gemm(4, 5, 6, TP_F32, TP_F32, TP_F32);
  TP_CHECK(tpcu_gemm_check(&g, why, sizeof why));
  g.lda = 5;
  TP_CHECK(!tpcu_gemm_check(&g, why, sizeof why));
  TP_CHECK_STR_EQ(why, "row stride too small (lda=5 needs >= 6, ldb=5 needs >= 5, ldc=5 needs >= 5)");
  g = gemm(4, 5, 6, TP_F32, TP_F32, TP_F32);
  g.ta = true; /* A stored k x m: lda >= m */
  g.lda = 4;
  TP_CHECK(tpcu_gemm_check(&g, why, sizeof why));
  g.k = -1;
  TP_CHECK(!tpcu_gemm_check(&g, why, sizeof why));
  TP_CHECK(strstr(why, "negative size") != NULL);
  g = gemm(4, 5, 6, TP_I32, TP_F32, TP_F32);
  TP_CHECK(!tpcu_gemm_check(&g, why, sizeof why));
  TP_CHECK(strstr(why, "A/B i32") != NULL);
  g = gemm(4, 5, 6, TP_F32, TP_F32, TP_F32);
  g.sc = -1;
  TP_CHECK(!tpcu_gemm_check(&g, why, sizeof why));
  TP_CHECK(strstr(why, "negative batch stride") != NULL);
}

TP_TEST(CudaHost, GemmPlansFollowCublasLtsTypeTable) {
  struct {
    tp_dtype ab, c, compute;
    tp_dtype lt_ab, lt_c;
    tpcu_lt_compute lc;
    bool cast_ab, c_temp;
  } rows[] = {
      /* f32 math */
      {TP_F32, TP_F32, TP_F32, TP_F32, TP_F32, TPCU_LT_32F, false, false},
      {TP_F32, TP_BF16, TP_F32, TP_F32, TP_F32, TPCU_LT_32F, false, true},
      {TP_BF16, TP_BF16, TP_F32, TP_BF16, TP_BF16, TPCU_LT_32F, false, false},
      {TP_BF16, TP_F32, TP_F32, TP_BF16, TP_F32, TPCU_LT_32F, false, false},
      {TP_BF16, TP_F16, TP_F32, TP_BF16, TP_F32, TPCU_LT_32F, false, true},
      /* bf16 tensor cores */
      {TP_F32, TP_F32, TP_BF16, TP_F32, TP_F32, TPCU_LT_32F_FAST_16BF, false, false},
      {TP_F32, TP_BF16, TP_BF16, TP_F32, TP_F32, TPCU_LT_32F_FAST_16BF, false, true},
      {TP_BF16, TP_BF16, TP_BF16, TP_BF16, TP_BF16, TPCU_LT_32F, false, false},
      {TP_F16, TP_F32, TP_BF16, TP_BF16, TP_F32, TPCU_LT_32F, true, false},
      {TP_F16, TP_F16, TP_BF16, TP_BF16, TP_F32, TPCU_LT_32F, true, true},
      /* f16 tensor cores */
      {TP_F32, TP_F32, TP_F16, TP_F32, TP_F32, TPCU_LT_32F_FAST_16F, false, false},
      {TP_F16, TP_F16, TP_F16, TP_F16, TP_F16, TPCU_LT_32F, false, false},
      {TP_BF16, TP_F32, TP_F16, TP_F16, TP_F32, TPCU_LT_32F, true, false},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(rows); i++) {
    tp_gemm_args g = gemm(8, 16, 32, rows[i].ab, rows[i].c, rows[i].compute);
    tpcu_gemm_plan p;
    tpcu_gemm_plan_make(&g, &p);
    if (p.lt_ab != rows[i].lt_ab || p.lt_c != rows[i].lt_c || p.compute != rows[i].lc ||
        p.cast_ab != rows[i].cast_ab || p.c_temp != rows[i].c_temp)
      TP_FAILF("row %zu (A/B %d C %d compute %d): plan %d/%d/%d cast %d temp %d", i, rows[i].ab,
               rows[i].c, rows[i].compute, p.lt_ab, p.lt_c, p.compute, p.cast_ab, p.c_temp);
  }
  /* scratch: A (8 x 32) and B (32 x 16) as bf16, C (8 x 16) as f32, each 256-aligned */
  tp_gemm_args g = gemm(8, 16, 32, TP_F16, TP_F16, TP_BF16);
  tpcu_gemm_plan p;
  tpcu_gemm_plan_make(&g, &p);
  TP_CHECK_INT_EQ(p.a_elems, 8 * 32);
  TP_CHECK_INT_EQ(p.b_elems, 32 * 16);
  TP_CHECK_INT_EQ(p.c_elems, 8 * 16);
  TP_CHECK_INT_EQ(p.b_off, 512);
  TP_CHECK_INT_EQ(p.c_off, 512 + 1024);
  TP_CHECK_INT_EQ(p.scratch_bytes, 512 + 1024 + 512);
  /* sc == 0 sums the batch into one C, one product per call */
  g = gemm(8, 16, 32, TP_F32, TP_F32, TP_F32);
  g.batch = 5;
  g.sa = 8 * 32;
  g.sb = 32 * 16;
  tpcu_gemm_plan_make(&g, &p);
  TP_CHECK(p.sum_batches);
  TP_CHECK_INT_EQ(p.lt_batch, 1);
  g.sc = 8 * 16;
  tpcu_gemm_plan_make(&g, &p);
  TP_CHECK(!p.sum_batches);
  TP_CHECK_INT_EQ(p.lt_batch, 5);
  /* k == 0 needs no product and no conversions */
  g = gemm(8, 16, 0, TP_F16, TP_F16, TP_BF16);
  tpcu_gemm_plan_make(&g, &p);
  TP_CHECK(p.k_zero && !p.cast_ab && !p.c_temp);
  TP_CHECK_INT_EQ(p.scratch_bytes, 0);
  TP_CHECK_INT_EQ(tpcu_matrix_span(3, 4, 10, 100, 2), 100 + 2 * 10 + 4);
  TP_CHECK_INT_EQ(tpcu_matrix_span(0, 4, 10, 100, 2), 0);
}

/* Multiplies with the column-major problem exactly as cuBLASLt defines it
 * and checks the row-major product of the original arguments comes out. */
static void lt_mapping_case(bool ta, bool tb, int m, int n, int k) {
  int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
  int lda = ac + 2, ldb = bc + 1, ldc = n + 3;
  double *A = g_new0(double, (size_t)ar * lda), *B = g_new0(double, (size_t)br * ldb);
  double *C = g_new0(double, (size_t)m * ldc);
  for (int i = 0; i < ar * lda; i++) A[i] = (i * 7 % 13) - 6;
  for (int i = 0; i < br * ldb; i++) B[i] = (i * 5 % 11) - 5;
  tp_gemm_args g = {.ta = ta, .tb = tb, .m = m, .n = n, .k = k, .batch = 1, .lda = lda,
                    .ldb = ldb, .ldc = ldc};
  tpcu_lt_problem pr;
  tpcu_lt_problem_make(&g, 1, &pr);
  /* the layouts must fit: op(A') is M x K, op(B') K x N, C' M x N, ld >= rows */
  uint64_t am = pr.a.trans ? pr.a.cols : pr.a.rows, ak = pr.a.trans ? pr.a.rows : pr.a.cols;
  uint64_t bk = pr.b.trans ? pr.b.cols : pr.b.rows, bn = pr.b.trans ? pr.b.rows : pr.b.cols;
  TP_CHECK(am == pr.m && ak == pr.k && bk == pr.k && bn == pr.n);
  TP_CHECK(pr.c.rows == pr.m && pr.c.cols == pr.n);
  TP_CHECK(pr.a.ld >= (int64_t)pr.a.rows && pr.b.ld >= (int64_t)pr.b.rows &&
           pr.c.ld >= (int64_t)pr.c.rows);
  /* cuBLASLt's A is our B, its B our A */
  for (uint64_t j = 0; j < pr.n; j++)
    for (uint64_t i = 0; i < pr.m; i++) {
      double s = 0;
      for (uint64_t p = 0; p < pr.k; p++) {
        double x = pr.a.trans ? B[p + i * pr.a.ld] : B[i + p * pr.a.ld];
        double y = pr.b.trans ? A[j + p * pr.b.ld] : A[p + j * pr.b.ld];
        s += x * y;
      }
      C[i + j * pr.c.ld] = s;
    }
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) {
      double want = 0;
      for (int p = 0; p < k; p++)
        want += (ta ? A[p * lda + i] : A[i * lda + p]) * (tb ? B[j * ldb + p] : B[p * ldb + j]);
      if (C[i * ldc + j] != want) {
        TP_FAILF("ta=%d tb=%d: C[%d][%d] = %g, the row-major product is %g", ta, tb, i, j,
                 C[i * ldc + j], want);
        goto out;
      }
    }
out:
  g_free(A);
  g_free(B);
  g_free(C);
}

TP_TEST(CudaHost, RowMajorProductsMapOntoColumnMajorCublasLt) {
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) lt_mapping_case(ta, tb, 5, 7, 3);
  tp_gemm_args g = {.m = 2, .n = 3, .k = 4, .batch = 6, .lda = 4, .ldb = 3, .ldc = 3,
                    .sa = 8, .sb = 12, .sc = 6};
  tpcu_lt_problem pr;
  tpcu_lt_problem_make(&g, 6, &pr);
  TP_CHECK_INT_EQ(pr.a.stride, 12); /* cuBLASLt's A: our B */
  TP_CHECK_INT_EQ(pr.b.stride, 8);
  TP_CHECK_INT_EQ(pr.c.stride, 6);
  tpcu_lt_problem_make(&g, 1, &pr);
  TP_CHECK_INT_EQ(pr.a.stride, 0);
}

TP_TEST(CudaHost, AlignmentsLaunchGridsAndChunks) {
  TP_CHECK_INT_EQ(tpcu_alignment(256, 0x7f0000001000ull, 0, 0), 256);
  TP_CHECK_INT_EQ(tpcu_alignment(256, 0x7f0000001004ull, 0, 0), 4);
  TP_CHECK_INT_EQ(tpcu_alignment(256, 0x7f0000001000ull, 24, 0), 8); /* a batch stride of 24 bytes */
  TP_CHECK_INT_EQ(tpcu_alignment(256, 0x1100, 0x200, 0x40), 64);
  TP_CHECK_INT_EQ(tpcu_lt_workspace_bytes(9), 32u << 20);
  TP_CHECK_INT_EQ(tpcu_lt_workspace_bytes(8), 4u << 20);
  TP_CHECK_INT_EQ(tpcu_grid_1d(0, 256, 132, 8), 0);
  TP_CHECK_INT_EQ(tpcu_grid_1d(1, 256, 132, 8), 1);
  TP_CHECK_INT_EQ(tpcu_grid_1d(257, 256, 132, 8), 2);
  TP_CHECK_INT_EQ(tpcu_grid_1d(1000000000, 256, 132, 8), 132 * 8);
  TP_CHECK_INT_EQ(tpcu_grid_rows(0), 0);
  TP_CHECK_INT_EQ(tpcu_grid_rows(9), 2);
  TP_CHECK_INT_EQ(tpcu_grid_rows(4096), 512);
  TP_CHECK_INT_EQ(tpcu_red_chunks(256), 1);
  TP_CHECK_INT_EQ(tpcu_red_chunks(257), 2);
  TP_CHECK_INT_EQ(tpcu_sum_chunks(110000000), 13428);
  TP_CHECK_INT_EQ(tpcu_stage_chunks(0, TPCU_STAGE_SLOT_BYTES), 0);
  TP_CHECK_INT_EQ(tpcu_stage_chunks(TPCU_STAGE_SLOT_BYTES + 1, TPCU_STAGE_SLOT_BYTES), 2);
}

/* ------------------------------------------------------------- attention */

static tpcu_attn_call attn(int b, int h, int t, int hd) {
  return (tpcu_attn_call){.batch = b, .heads = h, .q_len = t, .kv_len = t, .head_dim = hd,
                          .ld_q = h * hd, .ld_kv = h * hd, .compute = TP_BF16};
}

TP_TEST(CudaHost, AttentionChecksItsArguments) {
  char why[256];
  tpcu_attn_call a = attn(8, 12, 512, 64);
  TP_CHECK(tpcu_attention_check(&a, why, sizeof why));
  a.ld_kv = 700;
  TP_CHECK(!tpcu_attention_check(&a, why, sizeof why));
  TP_CHECK_STR_EQ(why, "row strides ld_q=768, ld_kv=700 are below heads * head_dim = 768");
  a = attn(8, 12, 512, 64);
  a.dropout = 1.0f;
  TP_CHECK(!tpcu_attention_check(&a, why, sizeof why));
  TP_CHECK_STR_EQ(why, "dropout p=1 is not in [0, 1)");
  a = attn(70000, 12, 512, 64);
  TP_CHECK(!tpcu_attention_check(&a, why, sizeof why));
  a = attn(8, 12, 0, 64);
  TP_CHECK(!tpcu_attention_check(&a, why, sizeof why));
  a = attn(8, 12, 512, 64);
  a.compute = TP_I32;
  TP_CHECK(!tpcu_attention_check(&a, why, sizeof why));
}

static void check_layout_rules(const tpcu_attn_layout *l) {
  uint32_t offs[] = {l->q,  l->k,  l->v,   l->dout, l->s,   l->p,
                     l->dp, l->ds, l->acc, l->acc2, l->rows, l->flag};
  for (size_t i = 0; i < G_N_ELEMENTS(offs); i++) {
    if (offs[i] == TPCU_ATTN_NONE) continue;
    TP_CHECK(offs[i] % 128 == 0); /* WMMA wants 32-byte aligned tiles */
    TP_CHECK(offs[i] < l->bytes);
  }
  TP_CHECK(l->ld_e * l->esize % 16 == 0 && l->ld_p * l->esize % 16 == 0);
  TP_CHECK(l->ld_s % 4 == 0 && l->ld_o % 4 == 0);
  TP_CHECK(l->br % 16 == 0 && l->bc % 16 == 0 && l->hdp % 16 == 0);
}

TP_TEST(CudaHost, AttentionTilesFitSharedMemory) {
  tpcu_attn_layout l;
  char why[256];
  /* BERT's heads (64) in bf16 on an H100/H200 (227 KiB per block) */
  TP_ASSERT(tpcu_attn_layout_make(TPCU_ATTN_FWD, 64, TP_BF16, 512, 512, 232448, &l, why, sizeof why));
  TP_CHECK_INT_EQ(l.br, 64);
  TP_CHECK_INT_EQ(l.bc, 64);
  TP_CHECK_INT_EQ(l.hdp, 64);
  TP_CHECK_INT_EQ(l.ld_e, 72);
  TP_CHECK_INT_EQ(l.k, 9216);
  TP_CHECK_INT_EQ(l.s, 27648);
  TP_CHECK_INT_EQ(l.p, 45056);
  TP_CHECK_INT_EQ(l.acc, 54272);
  TP_CHECK_INT_EQ(l.rows, 71680);
  TP_CHECK_INT_EQ(l.flag, 72448);
  TP_CHECK_INT_EQ(l.bytes, 72576);
  TP_CHECK(l.dout == TPCU_ATTN_NONE && l.acc2 == TPCU_ATTN_NONE);
  check_layout_rules(&l);
  /* head_dim 128's backward on an A100 (163 KiB): 64 x 64 needs 186.5 KiB */
  TP_ASSERT(tpcu_attn_layout_make(TPCU_ATTN_DKDV, 128, TP_BF16, 512, 512, 166912, &l, why, sizeof why));
  TP_CHECK_INT_EQ(l.br, 32);
  TP_CHECK_INT_EQ(l.bc, 64);
  TP_CHECK_INT_EQ(l.bytes, 146816);
  check_layout_rules(&l);
  /* a head_dim that is not a multiple of 16 is padded */
  TP_ASSERT(tpcu_attn_layout_make(TPCU_ATTN_DQ, 24, TP_F32, 100, 100, 232448, &l, why, sizeof why));
  TP_CHECK_INT_EQ(l.hdp, 32);
  TP_CHECK_INT_EQ(l.esize, 4);
  check_layout_rules(&l);
  /* the default 48 KiB forces smaller tiles */
  TP_ASSERT(tpcu_attn_layout_make(TPCU_ATTN_FWD, 64, TP_F32, 512, 512, 49152, &l, why, sizeof why));
  TP_CHECK(l.bytes <= 49152);
  TP_CHECK(l.br * l.bc < 64 * 64);
  check_layout_rules(&l);
  /* too large for anything */
  TP_CHECK(!tpcu_attn_layout_make(TPCU_ATTN_DKDV, 2048, TP_F32, 512, 512, 49152, &l, why, sizeof why));
  TP_CHECK(strstr(why, "head_dim 2048 needs more than the 49152 bytes") != NULL);
  /* the largest head the fused kernels take: an H100/H200's 227 KiB, an
   * A100's 163 KiB, the default 48 KiB; each fits its three kernels in f32 */
  int h90 = tpcu_attn_max_head_dim(232448), h80 = tpcu_attn_max_head_dim(166912);
  int h48 = tpcu_attn_max_head_dim(49152);
  TP_CHECK(h90 >= h80 && h80 >= h48 && h80 >= 256 && h48 >= 64); /* BERT: 64 */
  TP_CHECK(h90 % 16 == 0);
  for (int k = TPCU_ATTN_FWD; k <= TPCU_ATTN_DKDV; k++) {
    TP_CHECK(tpcu_attn_layout_make(k, h90, TP_F32, 512, 512, 232448, &l, why, sizeof why));
    TP_CHECK(tpcu_attn_layout_make(k, h90, TP_BF16, 512, 512, 232448, &l, why, sizeof why));
  }
  TP_CHECK(!tpcu_attn_layout_make(TPCU_ATTN_DKDV, h90 + 16, TP_F32, 512, 512, 232448, &l, why,
                                  sizeof why) ||
           !tpcu_attn_layout_make(TPCU_ATTN_DQ, h90 + 16, TP_F32, 512, 512, 232448, &l, why,
                                  sizeof why) ||
           !tpcu_attn_layout_make(TPCU_ATTN_FWD, h90 + 16, TP_F32, 512, 512, 232448, &l, why,
                                  sizeof why));
  g_test_message("max_head_dim: %d (227 KiB), %d (163 KiB), %d (48 KiB)", h90, h80, h48);
  /* short sequences get short tiles: [CLS] only (1 query) over 24 keys */
  TP_ASSERT(tpcu_attn_layout_make(TPCU_ATTN_FWD, 64, TP_BF16, 1, 24, 232448, &l, why, sizeof why));
  TP_CHECK_INT_EQ(l.br, 16);
  TP_CHECK_INT_EQ(l.bc, 32);
  check_layout_rules(&l);
}

/* ---------------------------------------------------------------- errors */

TP_TEST(CudaHost, ErrorTexts) {
  char *m = tpcu_oom_message((size_t)300 << 20, (size_t)100 << 20, (size_t)1 << 30);
  TP_CHECK_STR_EQ(m, "cuda: out of GPU memory: asked for 300.0 MiB (314572800 bytes) with 100.0 "
                     "MiB free of 1.00 GiB; use a smaller --batch (or --max-len)");
  g_free(m);
  int32_t w[TPCU_KERR_WORDS] = {TPCU_KERR_EMBEDDING_BWD_ID, 17, 30522, 30522};
  m = tpcu_kernel_error_message(w);
  TP_CHECK_STR_EQ(m, "cuda embedding_bwd: id 30522 at position 17 is outside [0, 30522)");
  g_free(m);
  int32_t l[TPCU_KERR_WORDS] = {TPCU_KERR_COUNT_LABEL, 3, -1, 2};
  m = tpcu_kernel_error_message(l);
  TP_CHECK_STR_EQ(m, "cuda count_correct: label -1 at position 3 is outside [0, 2)");
  g_free(m);
  int32_t none[TPCU_KERR_WORDS] = {0};
  TP_CHECK(tpcu_kernel_error_message(none) == NULL);
  char why[256];
  TP_CHECK(tpcu_cc_usable(8, 0, why, sizeof why));
  TP_CHECK(tpcu_cc_usable(8, 9, why, sizeof why));
  TP_CHECK(tpcu_cc_usable(9, 0, why, sizeof why));
  TP_CHECK(tpcu_cc_usable(12, 0, why, sizeof why)); /* runs the compute_90 PTX */
  TP_CHECK(!tpcu_cc_usable(7, 5, why, sizeof why));
  TP_CHECK(strstr(why, "compute capability 7.5 is below 8.0") != NULL);
}
