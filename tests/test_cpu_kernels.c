/* tests/test_cpu_kernels.c — conformance of the CPU backend plugin: every
 * kernel of tensorplug/backend_iface.h against a naive C implementation here
 * (double accumulation), on random inputs and odd shapes (1, 3, 7, 13, 33,
 * 130 ...). The plugin is loaded exactly as the core loads it: dlopen and
 * tp_plugin_entry.
 *
 * Tolerances: |got - want| <= atol + rtol * |want|, with rtol 1e-5 for f32
 * elementwise kernels (a few ulp after f32 rounding of exp/erf/sqrt), GEMM
 * against 1e-5 of sum |alpha a b| + |beta c| (f32 accumulation over k), and
 * half-precision outputs against their own rounding (2^-8 bf16, 2^-11 f16). */
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>

#include "tensorplug/backend_iface.h"
#include "tensorplug/dtype.h"
#include "tensorplug/error.h"
#include "tensorplug/philox.h"
#include "tensorplug/plugin.h"
#include "tp_test.h"

/* ------------------------------------------------------------ harness */

static const tp_plugin *g_plugin;
static const tp_backend_iface *B;
static tp_backend_dev *D; /* opened with the default thread count */

static bool load_plugin(void) {
  if (g_plugin) return true;
  char *path =
      g_build_filename(tp_test_build_dir(), "plugins", "cpu", "libtp_backend_cpu.so", NULL);
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    TP_FAILF("dlopen %s: %s", path, dlerror());
    g_free(path);
    return false;
  }
  g_free(path);
  tp_plugin_entry_fn entry = (tp_plugin_entry_fn)dlsym(h, TP_PLUGIN_ENTRY_SYMBOL);
  if (!entry) {
    TP_FAILF("no %s in the cpu plugin", TP_PLUGIN_ENTRY_SYMBOL);
    return false;
  }
  g_plugin = entry(); /* the handle stays open for the whole run */
  B = g_plugin->iface;
  return true;
}

static tp_backend_dev *open_dev(int threads) {
  GError *err = NULL;
  tp_backend_dev *d = B->open(0, threads, &err);
  if (!d) {
    TP_FAILF("open cpu device: %s", err ? err->message : "(no error)");
    g_clear_error(&err);
  }
  return d;
}

static bool setup(void) {
  if (!load_plugin()) return false;
  if (!D) D = open_dev(0);
  return D != NULL;
}
#define SETUP()                                                                                    \
  do {                                                                                             \
    if (!setup()) return;                                                                          \
  } while (0)

/* A device buffer and its host pointer (the CPU backend's memory is host memory). */
typedef struct {
  tp_buffer *b;
  void *p;
} tbuf;

static tbuf tb_new(size_t bytes) {
  GError *err = NULL;
  tbuf t;
  t.b = B->buffer_alloc(D, bytes, &err);
  if (!t.b) g_error("buffer_alloc(%zu): %s", bytes, err->message);
  t.p = B->buffer_host_ptr(t.b);
  return t;
}

static tbuf tb_f32(GRand *r, int64_t n, double lo, double hi) {
  tbuf t = tb_new(sizeof(float) * (size_t)(n > 0 ? n : 1));
  float *p = t.p;
  for (int64_t i = 0; i < n; i++) p[i] = (float)g_rand_double_range(r, lo, hi);
  return t;
}

static tbuf tb_dup(const tbuf *src, size_t bytes) {
  tbuf t = tb_new(bytes);
  memcpy(t.p, src->p, bytes);
  return t;
}

static void tb_free(tbuf *t) {
  B->buffer_free(D, t->b);
  t->b = NULL;
  t->p = NULL;
}

static tp_mem M(tbuf t) { return (tp_mem){t.b, 0}; }
static float *F(tbuf t) { return t.p; }
static int32_t *I(tbuf t) { return t.p; }

/* Kernels are checked through synchronize(), as on an asynchronous backend. */
static bool sync_ok(tp_backend_dev *d) {
  GError *err = NULL;
  if (!B->synchronize(d, &err)) {
    TP_FAILF("synchronize: %s", err ? err->message : "(no message)");
    g_clear_error(&err);
    return false;
  }
  return true;
}

/* Counts and reports (the first few) elements outside atol + rtol |want|. */
static int check_close(const char *what, const float *got, const double *want, int64_t n,
                       double rtol, double atol) {
  int bad = 0;
  for (int64_t i = 0; i < n; i++) {
    double diff = fabs((double)got[i] - want[i]);
    if (!(diff <= atol + rtol * fabs(want[i]))) {
      if (bad < 5)
        TP_FAILF("%s[%lld]: got %.9g, want %.9g (diff %.3g)", what, (long long)i, (double)got[i],
                 want[i], diff);
      bad++;
    }
  }
  if (bad > 5) TP_FAILF("%s: %d of %lld elements out of tolerance", what, bad, (long long)n);
  return bad;
}

static double *dalloc(int64_t n) { return g_new0(double, n > 0 ? n : 1); }

/* want = copy of a float array as double (the "+=" starting point) */
static double *dcopy(const float *x, int64_t n) {
  double *d = dalloc(n);
  for (int64_t i = 0; i < n; i++) d[i] = x[i];
  return d;
}

/* The gemm slot with the arguments as a list: A, B and C stored as dt,
 * multiplied in f32. */
static void gemm_call(tp_backend_dev *d, bool ta, bool tb, int m, int n, int k, float alpha,
                      tp_mem a, int lda, int64_t sa, tp_mem b, int ldb, int64_t sb, float beta,
                      tp_mem c, int ldc, int64_t sc, int batch, tp_dtype dt) {
  tp_gemm_args g = {.ta = ta, .tb = tb, .m = m, .n = n, .k = k, .batch = batch, .alpha = alpha,
                    .beta = beta, .a = a, .b = b, .c = c, .lda = lda, .ldb = ldb, .ldc = ldc,
                    .sa = sa, .sb = sb, .sc = sc, .ab_dtype = dt, .c_dtype = dt,
                    .compute = TP_F32};
  B->k.gemm(d, &g);
}

static const int SIZES[] = {1, 3, 7, 13, 33, 130};
#define NSIZES ((int)G_N_ELEMENTS(SIZES))

/* ------------------------------------------------------------ plugin */

TP_TEST(CpuPlugin, EntryAndVtable) {
  SETUP();
  TP_CHECK_INT_EQ(g_plugin->abi_version, TP_PLUGIN_ABI_VERSION);
  TP_CHECK_INT_EQ(g_plugin->kind, TP_PLUGIN_BACKEND);
  TP_CHECK_STR_EQ(g_plugin->name, "cpu");
  TP_CHECK(g_plugin->version != NULL);
  TP_CHECK_INT_EQ(B->struct_size, sizeof(tp_backend_iface));
  /* every kernel slot is filled: the CPU backend is the reference */
  void (*const *slots)(void) = (void (*const *)(void)) & B->k;
  for (size_t i = 0; i < sizeof(tp_kernels) / sizeof(void (*)(void)); i++)
    if (!slots[i]) TP_FAILF("kernel slot %zu is NULL", i);
  TP_CHECK(B->probe && B->open && B->close && B->buffer_alloc && B->buffer_free &&
           B->buffer_host_ptr && B->upload && B->download && B->copy && B->synchronize);
}

TP_TEST(CpuPlugin, ProbeDescribesTheMachine) {
  SETUP();
  tp_device_info info[2];
  GError *err = NULL;
  int n = B->probe(info, 2, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_ASSERT(n == 1);
  TP_CHECK_STR_EQ(info[0].name, "cpu");
  TP_CHECK(strstr(info[0].description, "OpenBLAS") != NULL);
  TP_CHECK(strstr(info[0].description, "threads") != NULL);
  TP_CHECK(info[0].memory_bytes > 0);
  TP_CHECK(info[0].compute_units >= 1);
  TP_CHECK(!info[0].is_software);
  /* a forced kernel variant (the cpu_kernels_<isa> suites) is the one in use */
  const char *isa = g_getenv("TENSORPLUG_CPU_ISA");
  if (isa && *isa) {
    char *want = g_strdup_printf("kernels %s;", isa);
    if (!strstr(info[0].description, want))
      TP_FAILF("TENSORPLUG_CPU_ISA=%s but the probe says: %s", isa, info[0].description);
    g_free(want);
  }
}

TP_TEST(CpuPlugin, OpenValidatesIndexAndThreads) {
  SETUP();
  GError *err = NULL;
  TP_CHECK(B->open(1, 0, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "device 1");

  char *old = g_strdup(g_getenv("TENSORPLUG_NUM_THREADS"));
  g_setenv("TENSORPLUG_NUM_THREADS", "two", TRUE);
  TP_CHECK(B->open(0, 0, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "TENSORPLUG_NUM_THREADS");
  /* an explicit count wins over the environment */
  tp_backend_dev *d = B->open(0, 3, &err);
  TP_CHECK(d != NULL);
  g_clear_error(&err);
  if (d) B->close(d);
  if (old)
    g_setenv("TENSORPLUG_NUM_THREADS", old, TRUE);
  else
    g_unsetenv("TENSORPLUG_NUM_THREADS");
  g_free(old);
}

TP_TEST(CpuPlugin, BuffersAlignedAndCopied) {
  SETUP();
  GError *err = NULL;
  tp_buffer *a = B->buffer_alloc(D, 1000, &err), *b = B->buffer_alloc(D, 1000, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK(((uintptr_t)B->buffer_host_ptr(a) & 63u) == 0);
  TP_CHECK(((uintptr_t)B->buffer_host_ptr(b) & 63u) == 0);
  uint8_t src[1000], dst[1000];
  for (int i = 0; i < 1000; i++) src[i] = (uint8_t)(i * 7 + 3);
  TP_CHECK(B->upload(D, (tp_mem){a, 0}, src, 1000, &err));
  TP_CHECK(B->copy(D, (tp_mem){b, 100}, (tp_mem){a, 0}, 900, &err));
  TP_CHECK(B->download(D, dst, (tp_mem){b, 100}, 900, &err));
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK(memcmp(dst, src, 900) == 0);
  /* out of range is an error, not a write past the end */
  TP_CHECK(!B->upload(D, (tp_mem){a, 500}, src, 600, &err));
  TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "exceed");
  TP_CHECK(B->synchronize(D, &err));
  TP_ASSERT_NO_ERROR(err);
  B->buffer_free(D, a);
  B->buffer_free(D, b);
}

TP_TEST(CpuPlugin, HugeAllocationIsOutOfMemory) {
  SETUP();
  GError *err = NULL;
  size_t huge = SIZE_MAX / 4;
  TP_CHECK(B->buffer_alloc(D, huge, &err) == NULL);
  char *size = g_strdup_printf("%zu", huge);
  TP_CHECK_ERROR(err, TP_ERROR_OUT_OF_MEMORY, size);
  g_free(size);
}

TP_TEST(CpuPlugin, KernelErrorsSurfaceAtSynchronize) {
  SETUP();
  tbuf a = tb_new(64), l = tb_new(8);
  GError *err = NULL;
  gemm_call(D, false, false, 2, 2, 2, 1.0f, M(a), 2, 0, M(a), 2, 0, 0.0f, M(a), 2, 0, 1, TP_I32);
  TP_CHECK(!B->synchronize(D, &err));
  TP_CHECK_ERROR(err, TP_ERROR_UNAVAILABLE, "not supported");
  TP_CHECK(B->synchronize(D, &err)); /* reported once, then cleared */
  TP_ASSERT_NO_ERROR(err);

  gemm_call(D, false, false, 2, 3, 4, 1.0f, M(a), 3, 0, M(a), 3, 0, 0.0f, M(a), 3, 0, 1, TP_F32);
  TP_CHECK(!B->synchronize(D, &err));
  TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "lda=3");

  I(l)[0] = 0;
  I(l)[1] = 5;
  B->k.cross_entropy_fwd(D, M(a), M(a), M(l), 2, 3);
  TP_CHECK(!B->synchronize(D, &err));
  TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "label 5");

  B->k.dropout_fwd(D, M(a), M(a), 4, 1.5f, 1, 0);
  TP_CHECK(!B->synchronize(D, &err));
  TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "p=1.5");
  tb_free(&a);
  tb_free(&l);
}

/* ------------------------------------------------------------ philox */

TP_TEST(Philox, KnownAnswers) {
  /* Random123 kat_vectors, philox4x32_10 */
  uint32_t c0[4] = {0, 0, 0, 0}, k0[2] = {0, 0};
  tp_philox4x32_10(c0, k0);
  TP_CHECK_INT_EQ(c0[0], 0x6627e8d5u);
  TP_CHECK_INT_EQ(c0[1], 0xe169c58du);
  TP_CHECK_INT_EQ(c0[2], 0xbc57ac4cu);
  TP_CHECK_INT_EQ(c0[3], 0x9b00dbd8u);
  uint32_t c1[4] = {~0u, ~0u, ~0u, ~0u}, k1[2] = {~0u, ~0u};
  tp_philox4x32_10(c1, k1);
  TP_CHECK_INT_EQ(c1[0], 0x408f276du);
  TP_CHECK_INT_EQ(c1[1], 0x41c83b0eu);
  TP_CHECK_INT_EQ(c1[2], 0xa20bc7c6u);
  TP_CHECK_INT_EQ(c1[3], 0x6d5451fdu);
  /* the uniform is the top 24 bits of word 0 */
  TP_CHECK(tp_philox_uniform(0, 0) == (float)(0x6627e8d5u >> 8) / 16777216.0f);
  float u = tp_philox_uniform(123, 456);
  TP_CHECK(u >= 0.0f && u < 1.0f);
}

/* ------------------------------------------------------------ gemm */

/* One strided-batched product in double; mag gets sum |alpha a b| + |beta c|
 * per element, the scale of f32 rounding error. */
static void ref_gemm(bool ta, bool tb, int m, int n, int k, double alpha, const float *a, int lda,
                     int64_t sa, const float *b, int ldb, int64_t sb, double beta, const float *c,
                     int ldc, int64_t sc, int batch, double *want, double *mag) {
  for (int bt = 0; bt < batch; bt++)
    for (int i = 0; i < m; i++)
      for (int j = 0; j < n; j++) {
        double s = 0, sm = 0;
        for (int l = 0; l < k; l++) {
          double av = ta ? a[bt * sa + (int64_t)l * lda + i] : a[bt * sa + (int64_t)i * lda + l];
          double bv = tb ? b[bt * sb + (int64_t)j * ldb + l] : b[bt * sb + (int64_t)l * ldb + j];
          s += av * bv;
          sm += fabs(av * bv);
        }
        int64_t o = bt * sc + (int64_t)i * ldc + j;
        double cv = beta == 0.0 ? 0.0 : beta * c[o];
        want[o] = alpha * s + cv;
        mag[o] = fabs(alpha) * sm + fabs(cv);
      }
}

static void gemm_case(GRand *r, bool ta, bool tb, int m, int n, int k, float alpha, float beta,
                      int batch, int pad) {
  int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
  int lda = ac + pad, ldb = bc + pad, ldc = n + pad;
  int64_t sa = (int64_t)ar * lda + 5, sb = (int64_t)br * ldb + 3, sc = (int64_t)m * ldc + 1;
  tbuf a = tb_f32(r, sa * batch, -1, 1), b = tb_f32(r, sb * batch, -1, 1);
  tbuf c = tb_f32(r, sc * batch, -1, 1);
  double *want = dcopy(F(c), sc * batch), *mag = dalloc(sc * batch);
  ref_gemm(ta, tb, m, n, k, alpha, F(a), lda, sa, F(b), ldb, sb, beta, F(c), ldc, sc, batch, want,
           mag);
  gemm_call(D, ta, tb, m, n, k, alpha, M(a), lda, sa, M(b), ldb, sb, beta, M(c), ldc, sc, batch,
            TP_F32);
  if (sync_ok(D)) {
    int bad = 0;
    for (int64_t i = 0; i < sc * batch && bad < 3; i++)
      if (!(fabs(F(c)[i] - want[i]) <= 1e-5 * mag[i] + 1e-6)) {
        TP_FAILF("gemm ta=%d tb=%d m=%d n=%d k=%d batch=%d: C[%lld] %.9g vs %.9g", ta, tb, m, n, k,
                 batch, (long long)i, (double)F(c)[i], want[i]);
        bad++;
      }
  }
  g_free(want);
  g_free(mag);
  tb_free(&a);
  tb_free(&b);
  tb_free(&c);
}

TP_TEST(CpuGemm, F32AllTransposesOddShapes) {
  SETUP();
  GRand *r = g_rand_new_with_seed(1);
  static const int shapes[][3] = {{1, 1, 1},    {3, 7, 13},    {13, 33, 7},
                                  {33, 1, 130}, {130, 13, 33}, {7, 130, 3}};
  for (int t = 0; t < 4; t++)
    for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++)
      gemm_case(r, t & 1, t & 2, shapes[s][0], shapes[s][1], shapes[s][2], 0.7f, 1.3f, 1, 3);
  g_rand_free(r);
}

TP_TEST(CpuGemm, F32AlphaBetaAndDenseStrides) {
  SETUP();
  GRand *r = g_rand_new_with_seed(2);
  const float alphas[] = {1.0f, -0.5f}, betas[] = {0.0f, 1.0f, 0.25f};
  for (int t = 0; t < 4; t++)
    for (int ai = 0; ai < 2; ai++)
      for (int bi = 0; bi < 3; bi++)
        gemm_case(r, t & 1, t & 2, 13, 33, 7, alphas[ai], betas[bi], 1, 0);
  g_rand_free(r);
}

TP_TEST(CpuGemm, F32StridedBatches) {
  SETUP();
  GRand *r = g_rand_new_with_seed(3);
  for (int t = 0; t < 4; t++) {
    gemm_case(r, t & 1, t & 2, 7, 13, 33, 1.0f, 0.0f, 5, 2);    /* small: batch-parallel path */
    gemm_case(r, t & 1, t & 2, 33, 7, 130, 0.125f, 1.0f, 3, 1); /* accumulate */
  }
  /* big enough for OpenBLAS's own threads, batch > 1 */
  gemm_case(r, false, true, 130, 257, 520, 1.0f, 0.5f, 2, 0);
  g_rand_free(r);
}

TP_TEST(CpuGemm, BetaZeroIgnoresGarbageAndKZero) {
  SETUP();
  tbuf a = tb_new(64), b = tb_new(64), c = tb_new(4 * 6);
  for (int i = 0; i < 16; i++) F(a)[i] = F(b)[i] = 1.0f;
  for (int i = 0; i < 6; i++) F(c)[i] = NAN;
  /* beta == 0: C is written, never read (BLAS rule), so NaN there vanishes */
  gemm_call(D, false, false, 2, 3, 2, 1.0f, M(a), 2, 0, M(b), 3, 0, 0.0f, M(c), 3, 0, 1, TP_F32);
  TP_ASSERT(sync_ok(D));
  for (int i = 0; i < 6; i++) TP_CHECK_NEAR(F(c)[i], 2.0, 0.0);
  /* k == 0: C = beta * C */
  gemm_call(D, false, false, 2, 3, 0, 1.0f, M(a), 1, 0, M(b), 3, 0, 0.5f, M(c), 3, 0, 1, TP_F32);
  TP_ASSERT(sync_ok(D));
  for (int i = 0; i < 6; i++) TP_CHECK_NEAR(F(c)[i], 1.0, 0.0);
  /* sc == 0: every product lands in the one C, in batch order (beta 1 sums) */
  F(a)[0] = 1.0f, F(a)[1] = 2.0f, F(a)[2] = 3.0f, F(b)[0] = 2.0f, F(c)[0] = 10.0f;
  gemm_call(D, false, false, 1, 1, 1, 1.0f, M(a), 1, 1, M(b), 1, 0, 1.0f, M(c), 1, 0, 3, TP_F32);
  TP_ASSERT(sync_ok(D));
  TP_CHECK_NEAR(F(c)[0], 22.0, 0.0);
  tb_free(&a);
  tb_free(&b);
  tb_free(&c);
}

static void gemm_half_case(GRand *r, tp_dtype dt, bool ta, bool tb, int m, int n, int k,
                           int batch) {
  int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
  int lda = ac + 1, ldb = bc + 2, ldc = n + 3;
  int64_t sa = (int64_t)ar * lda, sb = (int64_t)br * ldb, sc = (int64_t)m * ldc;
  uint16_t (*to)(float) = dt == TP_BF16 ? tp_f32_to_bf16 : tp_f32_to_f16;
  float (*from)(uint16_t) = dt == TP_BF16 ? tp_bf16_to_f32 : tp_f16_to_f32;
  tbuf a = tb_new(2 * sa * batch), b = tb_new(2 * sb * batch), c = tb_new(2 * sc * batch);
  float *af = g_new(float, sa *batch), *bf = g_new(float, sb *batch), *cf = g_new(float, sc *batch);
  uint16_t *ah = a.p, *bh = b.p, *ch = c.p;
  for (int64_t i = 0; i < sa * batch; i++)
    af[i] = from(ah[i] = to((float)g_rand_double_range(r, -1, 1)));
  for (int64_t i = 0; i < sb * batch; i++)
    bf[i] = from(bh[i] = to((float)g_rand_double_range(r, -1, 1)));
  for (int64_t i = 0; i < sc * batch; i++)
    cf[i] = from(ch[i] = to((float)g_rand_double_range(r, -1, 1)));
  double *want = dcopy(cf, sc * batch), *mag = dalloc(sc * batch);
  ref_gemm(ta, tb, m, n, k, 0.5, af, lda, sa, bf, ldb, sb, 1.0, cf, ldc, sc, batch, want, mag);
  gemm_call(D, ta, tb, m, n, k, 0.5f, M(a), lda, sa, M(b), ldb, sb, 1.0f, M(c), ldc, sc, batch, dt);
  double unit = dt == TP_BF16 ? 1.0 / 256 : 1.0 / 2048; /* one rounding of the output */
  if (sync_ok(D)) {
    int bad = 0;
    for (int bt = 0; bt < batch; bt++)
      for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
          int64_t o = bt * sc + (int64_t)i * ldc + j;
          double got = from(ch[o]);
          if (!(fabs(got - want[o]) <= unit * fabs(want[o]) + 1e-5 * mag[o] + 1e-6) && bad++ < 3)
            TP_FAILF("%s gemm ta=%d tb=%d: C[%lld] %.6g vs %.6g", tp_dtype_name(dt), ta, tb,
                     (long long)o, got, want[o]);
        }
    /* the padding between rows is untouched */
    for (int i = 0; i < m; i++)
      for (int j = n; j < ldc; j++)
        TP_CHECK(ch[(int64_t)i * ldc + j] == to(cf[(int64_t)i * ldc + j]));
  }
  g_free(want);
  g_free(mag);
  g_free(af);
  g_free(bf);
  g_free(cf);
  tb_free(&a);
  tb_free(&b);
  tb_free(&c);
}

TP_TEST(CpuGemm, Bf16AndF16) {
  SETUP();
  GRand *r = g_rand_new_with_seed(4);
  for (int t = 0; t < 4; t++) {
    gemm_half_case(r, TP_BF16, t & 1, t & 2, 7, 13, 33, 2);
    gemm_half_case(r, TP_F16, t & 1, t & 2, 13, 3, 130, 3);
  }
  g_rand_free(r);
}

/* compute = bf16 with f32 storage: the product of the operands rounded to
 * bf16 (the reference rounds them with tp_f32_to_bf16), summed in f32. A
 * product that skipped the rounding is off by about 2^-9 of sum |a b|: far
 * outside 1e-5. Both strategies (native oneDNN bf16, emulated in f32) must
 * pass: meson runs this file with TENSORPLUG_CPU_BF16 set to each. */
static void gemm_bf16_compute_case(GRand *r, bool ta, bool tb, int m, int n, int k, int batch,
                                   float alpha, float beta, bool shared_c) {
  int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
  int lda = ac + 1, ldb = bc + 2, ldc = n + 3;
  int64_t sa = (int64_t)ar * lda + 5, sb = (int64_t)br * ldb, sc = shared_c ? 0 : (int64_t)m * ldc;
  int64_t cn = shared_c ? (int64_t)m * ldc : sc * batch;
  tbuf a = tb_f32(r, sa * batch, -1, 1), b = tb_f32(r, sb * batch, -1, 1), c = tb_f32(r, cn, -1, 1);
  float *ar16 = g_new(float, sa * batch), *br16 = g_new(float, sb * batch);
  for (int64_t i = 0; i < sa * batch; i++) ar16[i] = tp_bf16_to_f32(tp_f32_to_bf16(F(a)[i]));
  for (int64_t i = 0; i < sb * batch; i++) br16[i] = tp_bf16_to_f32(tp_f32_to_bf16(F(b)[i]));
  double *want = dcopy(F(c), cn), *mag = dalloc(cn);
  if (shared_c) { /* every product into the one C, beta once */
    for (int bt = 0; bt < batch; bt++) {
      double *w = dalloc(cn), *mg = dalloc(cn);
      float *cur = g_new(float, cn);
      for (int64_t i = 0; i < cn; i++) cur[i] = (float)want[i];
      ref_gemm(ta, tb, m, n, k, alpha, ar16 + bt * sa, lda, 0, br16 + bt * sb, ldb, 0,
               bt == 0 ? beta : 1.0, cur, ldc, 0, 1, w, mg);
      for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
          int64_t o = (int64_t)i * ldc + j;
          want[o] = w[o];
          mag[o] += mg[o];
        }
      g_free(w);
      g_free(mg);
      g_free(cur);
    }
  } else {
    ref_gemm(ta, tb, m, n, k, alpha, ar16, lda, sa, br16, ldb, sb, beta, F(c), ldc, sc, batch,
             want, mag);
  }
  float *pad = g_memdup2(F(c), sizeof(float) * (size_t)cn);
  tp_gemm_args g = {.ta = ta, .tb = tb, .m = m, .n = n, .k = k, .batch = batch, .alpha = alpha,
                    .beta = beta, .a = M(a), .b = M(b), .c = M(c), .lda = lda, .ldb = ldb,
                    .ldc = ldc, .sa = sa, .sb = sb, .sc = sc, .ab_dtype = TP_F32,
                    .c_dtype = TP_F32, .compute = TP_BF16};
  B->k.gemm(D, &g);
  if (sync_ok(D)) {
    int bad = 0;
    for (int bt = 0; bt < (shared_c ? 1 : batch); bt++)
      for (int i = 0; i < m; i++)
        for (int j = 0; j < ldc; j++) {
          int64_t o = bt * sc + (int64_t)i * ldc + j;
          if (j >= n) { /* the padding between rows is untouched */
            if (F(c)[o] != pad[o] && bad++ < 3) TP_FAILF("bf16 gemm wrote padding C[%lld]",
                                                         (long long)o);
            continue;
          }
          if (!(fabs(F(c)[o] - want[o]) <= 1e-5 * mag[o] + 1e-6) && bad++ < 3)
            TP_FAILF("bf16-compute gemm ta=%d tb=%d %dx%dx%d batch %d%s: C[%lld] %.9g vs %.9g",
                     ta, tb, m, n, k, batch, shared_c ? " shared C" : "", (long long)o,
                     (double)F(c)[o], want[o]);
        }
  }
  g_free(pad);
  g_free(ar16);
  g_free(br16);
  g_free(want);
  g_free(mag);
  tb_free(&a);
  tb_free(&b);
  tb_free(&c);
}

TP_TEST(CpuGemm, Bf16ComputeRoundsOperandsSumsInF32) {
  SETUP();
  GRand *r = g_rand_new_with_seed(41);
  for (int t = 0; t < 4; t++) {
    gemm_bf16_compute_case(r, t & 1, t & 2, 13, 33, 70, 1, 0.7f, 1.3f, false);
    gemm_bf16_compute_case(r, t & 1, t & 2, 7, 13, 33, 5, 1.0f, 0.0f, false); /* batch-parallel */
    gemm_bf16_compute_case(r, t & 1, t & 2, 5, 9, 17, 3, 0.5f, 1.0f, true);   /* shared C */
  }
  /* large enough for the libraries' own threads */
  gemm_bf16_compute_case(r, false, true, 130, 257, 520, 1, 1.0f, 0.0f, false);
  gemm_bf16_compute_case(r, true, false, 257, 130, 300, 2, 0.125f, 1.0f, false);
  g_rand_free(r);
}

/* NaN and infinities survive the rounding of the operands. */
TP_TEST(CpuGemm, Bf16ComputeKeepsNonFinite) {
  SETUP();
  tbuf a = tb_new(4 * 4), b = tb_new(4 * 4), c = tb_new(4 * 4);
  F(a)[0] = NAN, F(a)[1] = 1.0f, F(a)[2] = INFINITY, F(a)[3] = 1.0f;
  for (int i = 0; i < 4; i++) F(b)[i] = 1.0f;
  tp_gemm_args g = {.m = 2, .n = 1, .k = 2, .batch = 1, .alpha = 1.0f, .beta = 0.0f, .a = M(a),
                    .b = M(b), .c = M(c), .lda = 2, .ldb = 1, .ldc = 1, .ab_dtype = TP_F32,
                    .c_dtype = TP_F32, .compute = TP_BF16};
  B->k.gemm(D, &g);
  TP_ASSERT(sync_ok(D));
  TP_CHECK(isnan(F(c)[0]));
  TP_CHECK(isinf(F(c)[1]) && F(c)[1] > 0);
  tb_free(&a);
  tb_free(&b);
  tb_free(&c);
}

/* The GEMM library and bf16 strategy are named, and bad settings refused. */
TP_TEST(CpuGemm, LibraryChoiceFromTheEnvironment) {
  SETUP();
  tp_device_info info;
  GError *err = NULL;
  TP_ASSERT(B->probe(&info, 1, &err) == 1);
  TP_CHECK(strstr(info.description, "GEMM ") != NULL);
  TP_CHECK(strstr(info.description, "bf16 ") != NULL);
  const char *names[2] = {"TENSORPLUG_CPU_GEMM", "TENSORPLUG_CPU_BF16"};
  for (int i = 0; i < 2; i++) {
    char *old = g_strdup(g_getenv(names[i]));
    g_setenv(names[i], "fastest", TRUE);
    TP_CHECK(B->open(0, 1, &err) == NULL);
    TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, names[i]);
    if (old) g_setenv(names[i], old, TRUE);
    else g_unsetenv(names[i]);
    g_free(old);
  }
  /* the environment is read again at the next open */
  tp_backend_dev *d = B->open(0, 1, &err);
  TP_ASSERT_NO_ERROR(err);
  B->close(d);
  TP_CHECK(B->preferred_compute != NULL);
  tp_dtype pc = B->preferred_compute(D);
  TP_CHECK(pc == TP_F32 || pc == TP_BF16);
}

/* ------------------------------------------------------------ embedding */

TP_TEST(CpuKernels, EmbeddingForwardAndScatterAdd) {
  SETUP();
  GRand *r = g_rand_new_with_seed(5);
  for (int s = 0; s < NSIZES; s++) {
    int h = SIZES[s], v = 11, n = 29;
    tbuf table = tb_f32(r, (int64_t)v * h, -1, 1), ids = tb_new(4 * n);
    for (int i = 0; i < n; i++)
      I(ids)[i] = (i % 3 == 0) ? 4 : g_rand_int_range(r, 0, v); /* repeats */
    tbuf out = tb_f32(r, (int64_t)n * h, -1, 1);
    B->k.embedding_fwd(D, M(out), M(table), M(ids), n, h, 0, v, v);
    TP_ASSERT(sync_ok(D));
    for (int i = 0; i < n; i++)
      TP_CHECK(memcmp(F(out) + (int64_t)i * h, F(table) + (int64_t)I(ids)[i] * h, 4 * h) == 0);

    tbuf dout = tb_f32(r, (int64_t)n * h, -1, 1);
    double *want = dcopy(F(table), (int64_t)v * h); /* table as a non-zero dtable */
    for (int i = 0; i < n; i++)
      for (int c = 0; c < h; c++) want[(int64_t)I(ids)[i] * h + c] += F(dout)[(int64_t)i * h + c];
    B->k.embedding_bwd(D, M(table), M(dout), M(ids), n, h, 0, v, v);
    TP_ASSERT(sync_ok(D));
    check_close("embedding_bwd", F(table), want, (int64_t)v * h, 1e-5, 1e-6);
    g_free(want);
    tb_free(&table);
    tb_free(&ids);
    tb_free(&out);
    tb_free(&dout);
  }
  g_rand_free(r);
}

/* ------------------------------------------------------------ layernorm */

static const int LN_SHAPES[][2] = {{1, 1}, {3, 7}, {13, 33}, {5, 130}, {130, 13}, {70, 768}};

TP_TEST(CpuKernels, LayernormForward) {
  SETUP();
  GRand *r = g_rand_new_with_seed(6);
  for (size_t s = 0; s < G_N_ELEMENTS(LN_SHAPES); s++) {
    int rows = LN_SHAPES[s][0], cols = LN_SHAPES[s][1];
    float eps = 1e-5f;
    tbuf x = tb_f32(r, (int64_t)rows * cols, -3, 5), g = tb_f32(r, cols, 0.5, 1.5),
         be = tb_f32(r, cols, -1, 1), y = tb_f32(r, (int64_t)rows * cols, -1, 1),
         mu = tb_new(4 * rows), rs = tb_new(4 * rows);
    double *wy = dalloc((int64_t)rows * cols), *wm = dalloc(rows), *wr = dalloc(rows);
    for (int i = 0; i < rows; i++) {
      const float *xr = F(x) + (int64_t)i * cols;
      double m = 0, v = 0;
      for (int c = 0; c < cols; c++) m += xr[c];
      m /= cols;
      for (int c = 0; c < cols; c++) v += (xr[c] - m) * (xr[c] - m);
      v /= cols;
      wm[i] = m;
      wr[i] = 1.0 / sqrt(v + eps);
      for (int c = 0; c < cols; c++)
        wy[(int64_t)i * cols + c] = (xr[c] - m) * wr[i] * F(g)[c] + F(be)[c];
    }
    B->k.layernorm_fwd(D, M(y), M(mu), M(rs), M(x), M(g), M(be), rows, cols, eps);
    TP_ASSERT(sync_ok(D));
    check_close("layernorm y", F(y), wy, (int64_t)rows * cols, 1e-5, 2e-5);
    check_close("layernorm mean", F(mu), wm, rows, 1e-5, 1e-6);
    check_close("layernorm rstd", F(rs), wr, rows, 1e-5, 1e-6);
    g_free(wy);
    g_free(wm);
    g_free(wr);
    tb_free(&x);
    tb_free(&g);
    tb_free(&be);
    tb_free(&y);
    tb_free(&mu);
    tb_free(&rs);
  }
  g_rand_free(r);
}

TP_TEST(CpuKernels, LayernormBackwardAccumulates) {
  SETUP();
  GRand *r = g_rand_new_with_seed(7);
  for (size_t s = 0; s < G_N_ELEMENTS(LN_SHAPES); s++) {
    int rows = LN_SHAPES[s][0], cols = LN_SHAPES[s][1];
    int64_t n = (int64_t)rows * cols;
    tbuf x = tb_f32(r, n, -2, 2), dy = tb_f32(r, n, -1, 1), g = tb_f32(r, cols, 0.5, 1.5);
    tbuf mu = tb_new(4 * rows), rs = tb_new(4 * rows);
    for (int i = 0; i < rows; i++) { /* mean and rstd as the forward stores them */
      double m = 0, v = 0;
      for (int c = 0; c < cols; c++) m += F(x)[(int64_t)i * cols + c];
      m /= cols;
      for (int c = 0; c < cols; c++) v += pow(F(x)[(int64_t)i * cols + c] - m, 2);
      F(mu)[i] = (float)m;
      F(rs)[i] = (float)(1.0 / sqrt(v / cols + 1e-5));
    }
    tbuf dx = tb_f32(r, n, -1, 1), dg = tb_f32(r, cols, -1, 1), db = tb_f32(r, cols, -1, 1);
    double *wdx = dcopy(F(dx), n), *wdg = dcopy(F(dg), cols), *wdb = dcopy(F(db), cols);
    double *xh = dalloc(cols), *dxh = dalloc(cols);
    for (int i = 0; i < rows; i++) {
      double m1 = 0, m2 = 0;
      for (int c = 0; c < cols; c++) {
        int64_t o = (int64_t)i * cols + c;
        xh[c] = ((double)F(x)[o] - F(mu)[i]) * F(rs)[i];
        dxh[c] = (double)F(dy)[o] * F(g)[c];
        m1 += dxh[c];
        m2 += dxh[c] * xh[c];
        wdg[c] += F(dy)[o] * xh[c];
        wdb[c] += F(dy)[o];
      }
      m1 /= cols;
      m2 /= cols;
      for (int c = 0; c < cols; c++)
        wdx[(int64_t)i * cols + c] += F(rs)[i] * (dxh[c] - m1 - xh[c] * m2);
    }
    B->k.layernorm_bwd(D, M(dx), M(dg), M(db), M(dy), M(x), M(mu), M(rs), M(g), rows, cols);
    TP_ASSERT(sync_ok(D));
    check_close("layernorm dx", F(dx), wdx, n, 1e-5, 2e-5);
    check_close("layernorm dgamma", F(dg), wdg, cols, 1e-5, 2e-5);
    check_close("layernorm dbeta", F(db), wdb, cols, 1e-5, 2e-5);
    g_free(wdx);
    g_free(wdg);
    g_free(wdb);
    g_free(xh);
    g_free(dxh);
    tb_free(&x);
    tb_free(&dy);
    tb_free(&g);
    tb_free(&mu);
    tb_free(&rs);
    tb_free(&dx);
    tb_free(&dg);
    tb_free(&db);
  }
  g_rand_free(r);
}

/* ------------------------------------------------------------ softmax */

static void ref_softmax(double *y, const float *x, const int32_t *mask, int batch, int heads,
                        int rows, int cols, double scale) {
  for (int b = 0; b < batch; b++)
    for (int64_t r = 0; r < (int64_t)heads * rows; r++) {
      int64_t o = ((int64_t)b * heads * rows + r) * cols;
      const int32_t *mk = mask ? mask + (int64_t)b * cols : NULL;
      double mx = -INFINITY, s = 0;
      for (int j = 0; j < cols; j++)
        if (!mk || mk[j]) mx = fmax(mx, scale * x[o + j]);
      for (int j = 0; j < cols; j++)
        if (!mk || mk[j]) s += exp(scale * x[o + j] - mx);
      for (int j = 0; j < cols; j++)
        y[o + j] =
            mx == -INFINITY ? 1.0 / cols : ((!mk || mk[j]) ? exp(scale * x[o + j] - mx) / s : 0.0);
    }
}

TP_TEST(CpuKernels, SoftmaxForwardMasked) {
  SETUP();
  GRand *r = g_rand_new_with_seed(8);
  static const int shapes[][4] = {
      {1, 1, 1, 1}, {2, 3, 7, 13}, {3, 2, 5, 33}, {2, 1, 3, 130}, {2, 12, 64, 64}};
  for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
    int bt = shapes[s][0], hd = shapes[s][1], rows = shapes[s][2], cols = shapes[s][3];
    int64_t n = (int64_t)bt * hd * rows * cols;
    tbuf x = tb_f32(r, n, -8, 8), y = tb_f32(r, n, -1, 1), mask = tb_new(4 * bt * cols);
    for (int b = 0; b < bt; b++)
      for (int j = 0; j < cols; j++)
        /* batch 0: padding at the end; batch 1: every j masked; others: none */
        I(mask)[b * cols + j] = b == 0 ? (j < cols - cols / 3) : (b == 1 ? 0 : 1);
    double *want = dalloc(n);
    for (int masked = 0; masked < 2; masked++) {
      tp_mem mk = masked ? M(mask) : (tp_mem){NULL, 0};
      ref_softmax(want, F(x), masked ? I(mask) : NULL, bt, hd, rows, cols, 0.125);
      B->k.softmax_fwd(D, M(y), M(x), mk, bt, hd, rows, cols, 0.125f);
      TP_ASSERT(sync_ok(D));
      check_close(masked ? "softmax masked" : "softmax", F(y), want, n, 1e-5, 1e-7);
      if (!masked) continue;
      for (int b = 0; b < bt; b++)
        for (int64_t rr = 0; rr < (int64_t)hd * rows; rr++)
          for (int j = 0; j < cols; j++) {
            float v = F(y)[((int64_t)b * hd * rows + rr) * cols + j];
            if (b == 1) /* all-masked row: uniform, as PyTorch's finfo.min fill gives */
              TP_CHECK(v == 1.0f / (float)cols);
            else if (!I(mask)[b * cols + j])
              TP_CHECK(v == 0.0f); /* masked: exactly zero */
          }
    }
    g_free(want);
    tb_free(&x);
    tb_free(&y);
    tb_free(&mask);
  }
  g_rand_free(r);
}

TP_TEST(CpuKernels, SoftmaxBackwardAccumulates) {
  SETUP();
  GRand *r = g_rand_new_with_seed(9);
  static const int shapes[][4] = {{1, 1, 1, 1}, {2, 3, 7, 13}, {1, 2, 5, 130}, {2, 4, 32, 65}};
  for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
    int bt = shapes[s][0], hd = shapes[s][1], rows = shapes[s][2], cols = shapes[s][3];
    int64_t n = (int64_t)bt * hd * rows * cols, nr = n / cols;
    tbuf x = tb_f32(r, n, -3, 3), y = tb_new(4 * n), dy = tb_f32(r, n, -1, 1),
         dx = tb_f32(r, n, -1, 1);
    B->k.softmax_fwd(D, M(y), M(x), (tp_mem){NULL, 0}, bt, hd, rows, cols, 1.0f);
    TP_ASSERT(sync_ok(D));
    double *want = dcopy(F(dx), n);
    for (int64_t i = 0; i < nr; i++) {
      double dot = 0;
      for (int j = 0; j < cols; j++) dot += (double)F(dy)[i * cols + j] * F(y)[i * cols + j];
      for (int j = 0; j < cols; j++)
        want[i * cols + j] += 0.5 * F(y)[i * cols + j] * (F(dy)[i * cols + j] - dot);
    }
    B->k.softmax_bwd(D, M(dx), M(dy), M(y), bt, hd, rows, cols, 0.5f);
    TP_ASSERT(sync_ok(D));
    check_close("softmax_bwd", F(dx), want, n, 1e-5, 1e-6);
    g_free(want);
    tb_free(&x);
    tb_free(&y);
    tb_free(&dy);
    tb_free(&dx);
  }
  g_rand_free(r);
}

/* ------------------------------------------------------------ activations */

static const int64_t EW_SIZES[] = {1, 7, 33, 130, 4099, 70001}; /* last: parallel path */

typedef double (*unary_fn)(double);
static double gelu_d(double x) { return 0.5 * x * (1 + erf(x / sqrt(2.0))); }
static double gelu_dd(double x) {
  return 0.5 * (1 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) / sqrt(2 * M_PI);
}
static double relu_d(double x) { return x > 0 ? x : 0; }
static double relu_dd(double x) { return x > 0 ? 1 : 0; }
static double tanh_dd_from_y(double y) { return 1 - y * y; }

typedef void (*fwd_k)(tp_backend_dev *, tp_mem, tp_mem, int64_t);
typedef void (*bwd_k)(tp_backend_dev *, tp_mem, tp_mem, tp_mem, int64_t);

/* y = f(x); dx += dy * f'(u) where u is x, or y when bwd_from_y (tanh) */
static void activation_case(const char *name, fwd_k fwd, bwd_k bwd, unary_fn f, unary_fn df,
                            bool bwd_from_y, double atol) {
  GRand *r = g_rand_new_with_seed(10);
  for (size_t s = 0; s < G_N_ELEMENTS(EW_SIZES); s++) {
    int64_t n = EW_SIZES[s];
    tbuf x = tb_f32(r, n, -6, 6), y = tb_f32(r, n, -1, 1), dy = tb_f32(r, n, -1, 1),
         dx = tb_f32(r, n, -1, 1);
    if (n > 3) F(x)[1] = 0.0f;
    double *wy = dalloc(n), *wdx = dcopy(F(dx), n);
    for (int64_t i = 0; i < n; i++) wy[i] = f(F(x)[i]);
    fwd(D, M(y), M(x), n);
    TP_ASSERT(sync_ok(D));
    char what[64];
    snprintf(what, sizeof what, "%s fwd n=%lld", name, (long long)n);
    check_close(what, F(y), wy, n, 1e-5, atol);
    for (int64_t i = 0; i < n; i++)
      wdx[i] += F(dy)[i] * df(bwd_from_y ? (double)F(y)[i] : (double)F(x)[i]);
    bwd(D, M(dx), M(dy), bwd_from_y ? M(y) : M(x), n);
    TP_ASSERT(sync_ok(D));
    snprintf(what, sizeof what, "%s bwd n=%lld", name, (long long)n);
    check_close(what, F(dx), wdx, n, 1e-5, atol);
    g_free(wy);
    g_free(wdx);
    tb_free(&x);
    tb_free(&y);
    tb_free(&dy);
    tb_free(&dx);
  }
  g_rand_free(r);
}

TP_TEST(CpuKernels, GeluErfForm) {
  SETUP();
  /* atol: erff's absolute error near the tails, where gelu(x) ~ 0 */
  activation_case("gelu", B->k.gelu_fwd, B->k.gelu_bwd, gelu_d, gelu_dd, false, 1e-6);
}

TP_TEST(CpuKernels, Relu) {
  SETUP();
  activation_case("relu", B->k.relu_fwd, B->k.relu_bwd, relu_d, relu_dd, false, 0.0);
}

TP_TEST(CpuKernels, TanhBackwardUsesY) {
  SETUP();
  activation_case("tanh", B->k.tanh_fwd, B->k.tanh_bwd, tanh, tanh_dd_from_y, true, 1e-7);
}

/* ------------------------------------------------------------ bias */

TP_TEST(CpuKernels, BiasAddAndGrad) {
  SETUP();
  GRand *r = g_rand_new_with_seed(11);
  static const int shapes[][2] = {{1, 1}, {3, 7}, {130, 13}, {13, 130}, {1000, 33}, {257, 768}};
  for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
    int64_t rows = shapes[s][0];
    int cols = shapes[s][1];
    int64_t n = rows * cols;
    tbuf y = tb_f32(r, n, -1, 1), bias = tb_f32(r, cols, -1, 1), db = tb_f32(r, cols, -1, 1);
    double *wy = dcopy(F(y), n), *wdb = dcopy(F(db), cols);
    for (int64_t i = 0; i < rows; i++)
      for (int c = 0; c < cols; c++) {
        wy[i * cols + c] += F(bias)[c];
        wdb[c] += F(y)[i * cols + c]; /* the grad of the un-biased y, read before bias_add */
      }
    B->k.bias_grad(D, M(db), M(y), rows, cols);
    B->k.bias_add(D, M(y), M(bias), rows, cols);
    TP_ASSERT(sync_ok(D));
    check_close("bias_add", F(y), wy, n, 1e-6, 0);
    /* f32 sum over rows: rows * eps relative to sum |dy| */
    check_close("bias_grad", F(db), wdb, cols, 1e-5, 1e-6 * rows);
    g_free(wy);
    g_free(wdb);
    tb_free(&y);
    tb_free(&bias);
    tb_free(&db);
  }
  g_rand_free(r);
}

/* ------------------------------------------------------------ arithmetic */

TP_TEST(CpuKernels, AddAxpyFill) {
  SETUP();
  GRand *r = g_rand_new_with_seed(12);
  for (size_t s = 0; s < G_N_ELEMENTS(EW_SIZES); s++) {
    int64_t n = EW_SIZES[s];
    tbuf a = tb_f32(r, n, -1, 1), b = tb_f32(r, n, -1, 1), y = tb_f32(r, n, -1, 1);
    double *w = dalloc(n);
    for (int64_t i = 0; i < n; i++) w[i] = (double)F(a)[i] + F(b)[i];
    B->k.add(D, M(y), M(a), M(b), n);
    TP_ASSERT(sync_ok(D));
    check_close("add", F(y), w, n, 1e-7, 0);
    /* in place: y aliases a */
    B->k.add(D, M(a), M(a), M(b), n);
    TP_ASSERT(sync_ok(D));
    TP_CHECK(memcmp(F(a), F(y), 4 * n) == 0);

    for (int64_t i = 0; i < n; i++) w[i] = (double)F(y)[i] + (double)(-0.75f * F(b)[i]);
    B->k.axpy(D, M(y), M(b), -0.75f, n);
    TP_ASSERT(sync_ok(D));
    check_close("axpy", F(y), w, n, 1e-6, 1e-7);

    B->k.fill(D, M(y), 2.5f, n);
    TP_ASSERT(sync_ok(D));
    for (int64_t i = 0; i < n; i++)
      if (F(y)[i] != 2.5f) {
        TP_FAILF("fill[%lld] = %g", (long long)i, (double)F(y)[i]);
        break;
      }
    g_free(w);
    tb_free(&a);
    tb_free(&b);
    tb_free(&y);
  }
  g_rand_free(r);
}

/* ------------------------------------------------------------ dropout */

TP_TEST(CpuKernels, DropoutMaskIsThePhiloxFormula) {
  SETUP();
  GRand *r = g_rand_new_with_seed(13);
  const int64_t n = 100003;
  const float p = 0.1f;
  const uint64_t seed = 0x1234abcd5678ull, offset = (1ull << 32) - 7; /* crosses the hi word */
  tbuf x = tb_f32(r, n, 0.5, 2), y = tb_new(4 * n), y2 = tb_new(4 * n);
  B->k.dropout_fwd(D, M(y), M(x), n, p, seed, offset);
  TP_ASSERT(sync_ok(D));
  int64_t kept = 0, bad = 0;
  for (int64_t i = 0; i < n; i++) {
    bool keep = tp_philox_uniform(seed, offset + (uint64_t)i) >= p;
    kept += keep;
    float want = keep ? F(x)[i] * (1.0f / (1.0f - p)) : 0.0f;
    if (fabsf(F(y)[i] - want) > 1e-6f * fabsf(want) && bad++ < 3)
      TP_FAILF("dropout[%lld]: %g vs %g (keep=%d)", (long long)i, (double)F(y)[i], (double)want,
               keep);
  }
  /* 1 - p within ~10 standard deviations (sd = sqrt(p(1-p)/n) ~ 1e-3) */
  TP_CHECK_NEAR((double)kept / n, 1.0 - p, 0.01);
  /* same seed + offset: the same mask, bit for bit */
  B->k.dropout_fwd(D, M(y2), M(x), n, p, seed, offset);
  TP_ASSERT(sync_ok(D));
  TP_CHECK(memcmp(F(y), F(y2), 4 * n) == 0);
  /* element i of a launch at offset+5 is element i+5 of the first */
  B->k.dropout_fwd(D, M(y2), M(x), n - 5, p, seed, offset + 5);
  TP_ASSERT(sync_ok(D));
  int64_t diff = 0;
  for (int64_t i = 0; i < n - 5; i++) diff += (F(y2)[i] == 0.0f) != (F(y)[i + 5] == 0.0f);
  TP_CHECK_INT_EQ(diff, 0);
  /* another seed: another mask */
  B->k.dropout_fwd(D, M(y2), M(x), n, p, seed + 1, offset);
  TP_ASSERT(sync_ok(D));
  diff = 0;
  for (int64_t i = 0; i < n; i++) diff += (F(y2)[i] == 0.0f) != (F(y)[i] == 0.0f);
  TP_CHECK(diff > n / 20);
  /* p == 0: a copy */
  B->k.dropout_fwd(D, M(y2), M(x), n, 0.0f, seed, offset);
  TP_ASSERT(sync_ok(D));
  TP_CHECK(memcmp(F(y2), F(x), 4 * n) == 0);
  g_rand_free(r);
  tb_free(&x);
  tb_free(&y);
  tb_free(&y2);
}

TP_TEST(CpuKernels, DropoutBackwardSameMaskAccumulates) {
  SETUP();
  GRand *r = g_rand_new_with_seed(14);
  const float ps[] = {0.0f, 0.1f, 0.5f, 1.0f};
  for (size_t pi = 0; pi < G_N_ELEMENTS(ps); pi++)
    for (size_t s = 0; s < G_N_ELEMENTS(EW_SIZES); s++) {
      int64_t n = EW_SIZES[s];
      float p = ps[pi];
      tbuf dy = tb_f32(r, n, -1, 1), dx = tb_f32(r, n, -1, 1);
      double *want = dcopy(F(dx), n);
      for (int64_t i = 0; i < n; i++)
        if (tp_philox_uniform(77, 1000 + (uint64_t)i) >= p)
          want[i] += (double)(F(dy)[i] * (1.0f / (1.0f - p)));
      B->k.dropout_bwd(D, M(dx), M(dy), n, p, 77, 1000);
      TP_ASSERT(sync_ok(D));
      check_close("dropout_bwd", F(dx), want, n, 1e-6, 1e-7);
      g_free(want);
      tb_free(&dy);
      tb_free(&dx);
    }
  g_rand_free(r);
}

/* Optional slots dropout_fwd_keep / dropout_bwd_keep: bit for bit the basic
 * dropout kernels, with the mask matching the Philox stream. */
TP_TEST(CpuKernels, DropoutKeepMatchesBasicKernels) {
  SETUP();
  TP_ASSERT(TP_IFACE_HAS(B, dropout_fwd_keep) && TP_IFACE_HAS(B, dropout_bwd_keep));
  GRand *r = g_rand_new_with_seed(41);
  const float ps[] = {0.0f, 0.1f, 0.5f, 1.0f};
  for (size_t pi = 0; pi < G_N_ELEMENTS(ps); pi++)
    for (size_t s = 0; s < G_N_ELEMENTS(EW_SIZES); s++) {
      int64_t n = EW_SIZES[s];
      float p = ps[pi];
      /* odd sizes: counters crossing 2^32 (the high counter word changes) */
      uint64_t seed = 0x1234567890abcdefull, offset = s % 2 ? 0xFFFFFFFFull - 20 - s : 999 + s;
      tbuf x = tb_f32(r, n, -2, 2), y = tb_f32(r, n, -1, 1), y2 = tb_dup(&y, 4 * n);
      tbuf keep = tb_new((size_t)n);
      memset(keep.p, 7, (size_t)n);
      B->k.dropout_fwd(D, M(y), M(x), n, p, seed, offset);
      B->dropout_fwd_keep(D, M(y2), M(keep), M(x), n, p, seed, offset);
      TP_ASSERT(sync_ok(D));
      TP_CHECK(memcmp(y.p, y2.p, 4 * (size_t)n) == 0);
      int bad = 0;
      for (int64_t i = 0; i < n; i++) {
        uint8_t want = p == 0.0f ? 1 : tp_philox_uniform(seed, offset + (uint64_t)i) >= p;
        if (((uint8_t *)keep.p)[i] != want && bad++ < 3)
          TP_FAILF("keep[%lld] = %d, want %d (p=%g)", (long long)i, ((uint8_t *)keep.p)[i], want,
                   (double)p);
      }
      /* backward from the mask == backward recomputing it, accumulating */
      tbuf dy = tb_f32(r, n, -1, 1), dx = tb_f32(r, n, -1, 1), dx2 = tb_dup(&dx, 4 * n);
      B->k.dropout_bwd(D, M(dx), M(dy), n, p, seed, offset);
      B->dropout_bwd_keep(D, M(dx2), M(dy), M(keep), n, p);
      TP_ASSERT(sync_ok(D));
      TP_CHECK(memcmp(dx.p, dx2.p, 4 * (size_t)n) == 0);
      tb_free(&x);
      tb_free(&y);
      tb_free(&y2);
      tb_free(&keep);
      tb_free(&dy);
      tb_free(&dx);
      tb_free(&dx2);
    }
  g_rand_free(r);
}

/* ------------------------------------------------------------ fused slots */

/* Bitwise what the basic kernels give (cpu_kernels.c promises it). */
static void check_same_bits(const char *what, const float *got, const float *want, int64_t n) {
  int bad = 0;
  for (int64_t i = 0; i < n; i++)
    if (memcmp(&got[i], &want[i], 4) != 0 && bad++ < 3)
      TP_FAILF("%s[%lld]: %.9g, the basic kernels give %.9g", what, (long long)i, (double)got[i],
               (double)want[i]);
}

TP_TEST(CpuFused, BiasGeluIsBiasAddThenGelu) {
  SETUP();
  TP_ASSERT(TP_IFACE_HAS(B, bias_gelu_fwd) && TP_IFACE_HAS(B, bias_gelu_bwd));
  GRand *r = g_rand_new_with_seed(51);
  const int shapes[][2] = {{1, 1}, {3, 7}, {130, 33}, {200, 1536}};
  for (size_t si = 0; si < G_N_ELEMENTS(shapes); si++) {
    int rows = shapes[si][0], cols = shapes[si][1];
    int64_t n = (int64_t)rows * cols;
    tbuf x = tb_f32(r, n, -4, 4), b = tb_f32(r, cols, -1, 1), dy = tb_f32(r, n, -1, 1);
    tbuf x2 = tb_dup(&x, 4 * n), y = tb_new(4 * n), y2 = tb_new(4 * n);
    /* composed: x += b; y = gelu(x); dpre = 0 + gelu'(x) dy; db += rows of dpre */
    B->k.bias_add(D, M(x), M(b), rows, cols);
    B->k.gelu_fwd(D, M(y), M(x), n);
    B->bias_gelu_fwd(D, M(y2), M(x2), M(b), rows, cols);
    TP_ASSERT(sync_ok(D));
    check_same_bits("bias_gelu_fwd y", F(y2), F(y), n);
    check_same_bits("bias_gelu_fwd pre", F(x2), F(x), n);
    tbuf dx = tb_new(4 * n), dx2 = tb_f32(r, n, -9, 9); /* garbage: it is written, not added */
    tbuf db = tb_f32(r, cols, -1, 1), db2 = tb_dup(&db, 4 * (size_t)cols);
    B->k.fill(D, M(dx), 0.0f, n);
    B->k.gelu_bwd(D, M(dx), M(dy), M(x), n);
    B->k.bias_grad(D, M(db), M(dx), rows, cols);
    B->bias_gelu_bwd(D, M(dx2), M(db2), M(dy), M(x2), rows, cols);
    TP_ASSERT(sync_ok(D));
    check_same_bits("bias_gelu_bwd dx", F(dx2), F(dx), n);
    check_same_bits("bias_gelu_bwd dbias", F(db2), F(db), cols);
    tbuf *all[] = {&x, &b, &dy, &x2, &y, &y2, &dx, &dx2, &db, &db2};
    for (size_t i = 0; i < G_N_ELEMENTS(all); i++) tb_free(all[i]);
  }
  g_rand_free(r);
}

/* layernorm(dropout(a) + b) and its backward against dropout_fwd_keep, add,
 * layernorm_fwd, then layernorm_bwd into zeros, axpy (the add's backward)
 * and dropout_bwd_keep; with the gradients written (acc false) over garbage
 * and added (acc true). */
static void add_ln_case(GRand *r, int rows, int cols, float p, bool acc) {
  int64_t n = (int64_t)rows * cols;
  uint64_t seed = 99, offset = 0xFFFFFFFFull - 1000; /* the counter's high word changes */
  tbuf a = tb_f32(r, n, -2, 2), b = tb_f32(r, n, -2, 2), g = tb_f32(r, cols, 0.5, 1.5),
       be = tb_f32(r, cols, -1, 1), dy = tb_f32(r, n, -1, 1);
  tbuf ad = tb_new(4 * n), keep = tb_new((size_t)n), s = tb_new(4 * n), y = tb_new(4 * n);
  tbuf mu = tb_new(4 * (size_t)rows), rs = tb_new(4 * (size_t)rows);
  tbuf s2 = tb_new(4 * n), y2 = tb_new(4 * n), keep2 = tb_new((size_t)n);
  tbuf mu2 = tb_new(4 * (size_t)rows), rs2 = tb_new(4 * (size_t)rows);
  if (p > 0.0f)
    B->dropout_fwd_keep(D, M(ad), M(keep), M(a), n, p, seed, offset);
  else
    memcpy(ad.p, a.p, 4 * (size_t)n);
  B->k.add(D, M(s), M(ad), M(b), n);
  B->k.layernorm_fwd(D, M(y), M(mu), M(rs), M(s), M(g), M(be), rows, cols, 1e-12f);
  tp_add_ln_args args = {.rows = rows, .cols = cols, .eps = 1e-12f, .p = p, .seed = seed,
                         .offset = offset, .y = M(y2), .s = M(s2), .mean = M(mu2),
                         .rstd = M(rs2), .keep = M(keep2), .a = M(a), .b = M(b), .gamma = M(g),
                         .beta = M(be)};
  B->add_layernorm_fwd(D, &args);
  TP_ASSERT(sync_ok(D));
  check_same_bits("add_layernorm_fwd y", F(y2), F(y), n);
  check_same_bits("add_layernorm_fwd s", F(s2), F(s), n);
  check_same_bits("add_layernorm_fwd mean", F(mu2), F(mu), rows);
  check_same_bits("add_layernorm_fwd rstd", F(rs2), F(rs), rows);
  if (p > 0.0f) TP_CHECK(memcmp(keep.p, keep2.p, (size_t)n) == 0);
  /* backward */
  tbuf dsum = tb_new(4 * n), dad = tb_new(4 * n);
  tbuf da = tb_f32(r, n, -1, 1), db = tb_f32(r, n, -1, 1);
  tbuf da2 = acc ? tb_dup(&da, 4 * n) : tb_f32(r, n, -9, 9);
  tbuf db2 = acc ? tb_dup(&db, 4 * n) : tb_f32(r, n, -9, 9);
  if (!acc) {
    B->k.fill(D, M(da), 0.0f, n);
    B->k.fill(D, M(db), 0.0f, n);
  }
  tbuf dg = tb_f32(r, cols, -1, 1), dbe = tb_f32(r, cols, -1, 1);
  tbuf dg2 = tb_dup(&dg, 4 * (size_t)cols), dbe2 = tb_dup(&dbe, 4 * (size_t)cols);
  B->k.fill(D, M(dsum), 0.0f, n);
  B->k.fill(D, M(dad), 0.0f, n);
  B->k.layernorm_bwd(D, M(dsum), M(dg), M(dbe), M(dy), M(s), M(mu), M(rs), M(g), rows, cols);
  B->k.axpy(D, M(dad), M(dsum), 1.0f, n);
  B->k.axpy(D, M(db), M(dsum), 1.0f, n);
  if (p > 0.0f)
    B->dropout_bwd_keep(D, M(da), M(dad), M(keep), n, p);
  else
    B->k.axpy(D, M(da), M(dad), 1.0f, n);
  B->add_layernorm_bwd(D, &args, M(dy), M(da2), M(db2), M(dg2), M(dbe2), acc, acc);
  TP_ASSERT(sync_ok(D));
  check_same_bits("add_layernorm_bwd da", F(da2), F(da), n);
  check_same_bits("add_layernorm_bwd db", F(db2), F(db), n);
  check_same_bits("add_layernorm_bwd dgamma", F(dg2), F(dg), cols);
  check_same_bits("add_layernorm_bwd dbeta", F(dbe2), F(dbe), cols);
  tbuf *all[] = {&a, &b, &g, &be, &dy, &ad, &keep, &s, &y, &mu, &rs, &s2, &y2, &keep2, &mu2,
                 &rs2, &dsum, &dad, &da, &db, &da2, &db2, &dg, &dbe, &dg2, &dbe2};
  for (size_t i = 0; i < G_N_ELEMENTS(all); i++) tb_free(all[i]);
}

TP_TEST(CpuFused, AddLayernormIsDropoutAddLayernorm) {
  SETUP();
  TP_ASSERT(TP_IFACE_HAS(B, add_layernorm_fwd) && TP_IFACE_HAS(B, add_layernorm_bwd));
  GRand *r = g_rand_new_with_seed(52);
  const int shapes[][2] = {{1, 1}, {3, 7}, {130, 33}, {300, 384}};
  for (size_t si = 0; si < G_N_ELEMENTS(shapes); si++)
    for (int acc = 0; acc < 2; acc++) {
      add_ln_case(r, shapes[si][0], shapes[si][1], 0.0f, acc);
      add_ln_case(r, shapes[si][0], shapes[si][1], 0.1f, acc);
    }
  g_rand_free(r);
}

/* ------------------------------------------------------------ permute */

TP_TEST(CpuKernels, Permute0213) {
  SETUP();
  GRand *r = g_rand_new_with_seed(15);
  static const int shapes[][4] = {{1, 1, 1, 1}, {2, 3, 7, 5}, {3, 13, 4, 33}, {2, 130, 12, 64}};
  for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
    int d0 = shapes[s][0], d1 = shapes[s][1], d2 = shapes[s][2], d3 = shapes[s][3];
    int64_t n = (int64_t)d0 * d1 * d2 * d3;
    tbuf x = tb_f32(r, n, -1, 1), y = tb_f32(r, n, -1, 1);
    for (int beta = 0; beta < 2; beta++) {
      double *want = dcopy(F(y), n);
      for (int a = 0; a < d0; a++)
        for (int b = 0; b < d1; b++)
          for (int c = 0; c < d2; c++)
            for (int e = 0; e < d3; e++) {
              int64_t xi = (((int64_t)a * d1 + b) * d2 + c) * d3 + e;
              int64_t yi = (((int64_t)a * d2 + c) * d1 + b) * d3 + e;
              want[yi] = F(x)[xi] + (beta ? want[yi] : 0.0);
            }
      B->k.permute_0213(D, M(y), M(x), d0, d1, d2, d3, (float)beta);
      TP_ASSERT(sync_ok(D));
      check_close(beta ? "permute beta=1" : "permute beta=0", F(y), want, n, 1e-7, 0);
      g_free(want);
    }
    tb_free(&x);
    tb_free(&y);
  }
  g_rand_free(r);
}

/* ------------------------------------------------------------ first token */

TP_TEST(CpuKernels, FirstToken) {
  SETUP();
  GRand *r = g_rand_new_with_seed(16);
  int batch = 3, seq = 7, h = 13;
  tbuf x = tb_f32(r, batch * seq * h, -1, 1), y = tb_f32(r, batch * h, -1, 1),
       dx = tb_f32(r, batch * seq * h, -1, 1), dy = tb_f32(r, batch * h, -1, 1);
  B->k.first_token_fwd(D, M(y), M(x), batch, seq, h);
  double *want = dcopy(F(dx), batch * seq * h);
  for (int b = 0; b < batch; b++)
    for (int c = 0; c < h; c++) want[(b * seq) * h + c] += F(dy)[b * h + c];
  B->k.first_token_bwd(D, M(dx), M(dy), batch, seq, h);
  TP_ASSERT(sync_ok(D));
  for (int b = 0; b < batch; b++) TP_CHECK(memcmp(F(y) + b * h, F(x) + b * seq * h, 4 * h) == 0);
  check_close("first_token_bwd", F(dx), want, batch * seq * h, 1e-7, 0);
  g_free(want);
  tb_free(&x);
  tb_free(&y);
  tb_free(&dx);
  tb_free(&dy);
  g_rand_free(r);
}

/* ------------------------------------------------------------ cross-entropy */

TP_TEST(CpuKernels, CrossEntropyForwardBackward) {
  SETUP();
  GRand *r = g_rand_new_with_seed(17);
  static const int shapes[][2] = {{1, 1}, {1, 2}, {7, 2}, {13, 3}, {33, 130}};
  for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
    int batch = shapes[s][0], classes = shapes[s][1];
    tbuf z = tb_f32(r, batch * classes, -20, 20), lab = tb_new(4 * batch),
         loss = tb_f32(r, 1, 5, 6), dloss = tb_new(4), dz = tb_f32(r, batch * classes, -1, 1);
    for (int b = 0; b < batch; b++) I(lab)[b] = g_rand_int_range(r, 0, classes);
    F(dloss)[0] = 1.7f;
    double want = 0, *wdz = dcopy(F(dz), batch * classes);
    for (int b = 0; b < batch; b++) {
      const float *row = F(z) + b * classes;
      double mx = -INFINITY, se = 0;
      for (int c = 0; c < classes; c++) mx = fmax(mx, row[c]);
      for (int c = 0; c < classes; c++) se += exp(row[c] - mx);
      double lse = mx + log(se);
      want += lse - row[I(lab)[b]];
      for (int c = 0; c < classes; c++)
        wdz[b * classes + c] += 1.7 / batch * (exp(row[c] - lse) - (c == I(lab)[b]));
    }
    want /= batch;
    B->k.cross_entropy_fwd(D, M(loss), M(z), M(lab), batch, classes);
    B->k.cross_entropy_bwd(D, M(dz), M(dloss), M(z), M(lab), batch, classes);
    TP_ASSERT(sync_ok(D));
    TP_CHECK_NEAR(F(loss)[0], want, 1e-5 * fabs(want) + 1e-6); /* "=", not "+=" */
    check_close("cross_entropy_bwd", F(dz), wdz, batch * classes, 1e-5, 1e-7);
    g_free(wdz);
    tb_free(&z);
    tb_free(&lab);
    tb_free(&loss);
    tb_free(&dloss);
    tb_free(&dz);
  }
  g_rand_free(r);
}

/* ------------------------------------------------------------ Adam */

static void adam_case(tp_adam_mode mode, int steps) {
  GRand *r = g_rand_new_with_seed(18 + (unsigned)mode);
  const int64_t n = 70001; /* parallel path, odd tail */
  tbuf p = tb_f32(r, n, -1, 1), m = tb_f32(r, n, -0.1, 0.1), v = tb_f32(r, n, 0, 0.01),
       g = tb_new(4 * n);
  double *wp = dcopy(F(p), n), *wm = dcopy(F(m), n), *wv = dcopy(F(v), n);
  tp_adam_args a = {.mode = mode,
                    .lr = 1e-3f,
                    .beta1 = 0.9f,
                    .beta2 = 0.999f,
                    .eps = 1e-7f,
                    .weight_decay = 0.01f,
                    .grad_scale = 0.5f};
  for (int t = 1; t <= steps; t++) {
    for (int64_t i = 0; i < n; i++) F(g)[i] = (float)g_rand_double_range(r, -1, 1);
    double b1 = a.beta1, b2 = a.beta2, lr = a.lr, eps = a.eps;
    double c1 = 1 - pow(b1, t), c2 = 1 - pow(b2, t);
    for (int64_t i = 0; i < n; i++) { /* the two formulas of backend_iface.h, in double */
      double gg = a.grad_scale * (double)F(g)[i];
      wm[i] = b1 * wm[i] + (1 - b1) * gg;
      wv[i] = b2 * wv[i] + (1 - b2) * gg * gg;
      if (mode == TP_ADAM_KERAS) {
        wp[i] -= lr * sqrt(c2) / c1 * wm[i] / (sqrt(wv[i]) + eps);
      } else {
        wp[i] *= 1 - lr * a.weight_decay;
        wp[i] -= lr / c1 * wm[i] / (sqrt(wv[i]) / sqrt(c2) + eps);
      }
    }
    a.step = t;
    B->k.adam_step(D, M(p), M(g), M(m), M(v), n, &a);
    TP_ASSERT(sync_ok(D));
    char what[64];
    snprintf(what, sizeof what, "adam %s step %d p", mode == TP_ADAM_W ? "W" : "keras", t);
    /* p moves by ~lr per step: 1e-5 relative to p plus a small share of lr */
    check_close(what, F(p), wp, n, 1e-5, 1e-8);
    /* m = b1 m + (1-b1) g' cancels: error is ~1 ulp of the terms (~0.15), not of m */
    check_close("adam m", F(m), wm, n, 1e-5, 3e-8);
    check_close("adam v", F(v), wv, n, 1e-5, 1e-11);
  }
  g_free(wp);
  g_free(wm);
  g_free(wv);
  tb_free(&p);
  tb_free(&m);
  tb_free(&v);
  tb_free(&g);
  g_rand_free(r);
}

TP_TEST(CpuKernels, AdamKerasSteps1To3) {
  SETUP();
  adam_case(TP_ADAM_KERAS, 3);
}

TP_TEST(CpuKernels, AdamWSteps1To3) {
  SETUP();
  adam_case(TP_ADAM_W, 3);
}

/* ------------------------------------------------------------ reductions */

TP_TEST(CpuKernels, SumsqAccumulates) {
  SETUP();
  GRand *r = g_rand_new_with_seed(20);
  const int64_t sizes[] = {1, 7, 4096, 4097, 300001};
  for (size_t s = 0; s < G_N_ELEMENTS(sizes); s++) {
    int64_t n = sizes[s];
    tbuf x = tb_f32(r, n, -2, 2), out = tb_new(4);
    F(out)[0] = 3.0f;
    double want = 3.0;
    for (int64_t i = 0; i < n; i++) want += (double)F(x)[i] * F(x)[i];
    B->k.sumsq(D, M(out), M(x), n);
    TP_ASSERT(sync_ok(D));
    TP_CHECK_NEAR(F(out)[0], want, 1e-5 * want);
    tb_free(&x);
    tb_free(&out);
  }
  g_rand_free(r);
}

TP_TEST(CpuKernels, NonfiniteFlagsNanAndInf) {
  SETUP();
  GRand *r = g_rand_new_with_seed(21);
  const int64_t n = 100003;
  const float bad[] = {NAN, INFINITY, -INFINITY};
  const int64_t where[] = {0, 4095, n - 1};
  tbuf x = tb_f32(r, n, -3e38, 3e38), out = tb_new(4);
  I(out)[0] = 0;
  B->k.nonfinite(D, M(out), M(x), n);
  TP_ASSERT(sync_ok(D));
  TP_CHECK_INT_EQ(I(out)[0], 0); /* finite (incl. huge): unchanged */
  I(out)[0] = 7;
  B->k.nonfinite(D, M(out), M(x), n);
  TP_ASSERT(sync_ok(D));
  TP_CHECK_INT_EQ(I(out)[0], 7); /* never cleared by the kernel */
  for (size_t b = 0; b < G_N_ELEMENTS(bad); b++)
    for (size_t w = 0; w < G_N_ELEMENTS(where); w++) {
      float keep = F(x)[where[w]];
      F(x)[where[w]] = bad[b];
      I(out)[0] = 0;
      B->k.nonfinite(D, M(out), M(x), n);
      TP_ASSERT(sync_ok(D));
      if (I(out)[0] != 1)
        TP_FAILF("nonfinite missed %g at %lld", (double)bad[b], (long long)where[w]);
      F(x)[where[w]] = keep;
    }
  /* a small array, serial path */
  F(x)[2] = NAN;
  I(out)[0] = 0;
  B->k.nonfinite(D, M(out), M(x), 3);
  TP_ASSERT(sync_ok(D));
  TP_CHECK_INT_EQ(I(out)[0], 1);
  tb_free(&x);
  tb_free(&out);
  g_rand_free(r);
}

/* ------------------------------------------------------------ casts */

static uint32_t bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

TP_TEST(CpuKernels, CastsRoundTripAndSpecialValues) {
  SETUP();
  GRand *r = g_rand_new_with_seed(22);
  const int64_t n = 70000;
  tbuf x = tb_new(4 * n), h = tb_new(2 * n), back = tb_new(4 * n), h2 = tb_new(2 * n);
  const float special[] = {0.0f,
                           -0.0f,
                           1.0f,
                           -2.5f,
                           NAN,
                           INFINITY,
                           -INFINITY,
                           65504.0f,
                           65520.0f /* rounds to f16 inf */,
                           5.96046448e-08f /* f16 min subnormal */,
                           6.1e-5f /* f16 subnormal */,
                           1e-40f /* f32 subnormal */,
                           3.0e38f,
                           1.00390625f /* bf16 tie: to even */,
                           1.01171875f /* bf16 tie: up */};
  for (int64_t i = 0; i < n; i++) {
    if (i < (int64_t)G_N_ELEMENTS(special))
      F(x)[i] = special[i];
    else { /* random bits: every exponent, both signs */
      uint32_t u = g_rand_int(r);
      memcpy(&F(x)[i], &u, 4);
    }
  }
  const tp_dtype halves[] = {TP_BF16, TP_F16};
  for (int t = 0; t < 2; t++) {
    tp_dtype dt = halves[t];
    uint16_t (*to)(float) = dt == TP_BF16 ? tp_f32_to_bf16 : tp_f32_to_f16;
    float (*from)(uint16_t) = dt == TP_BF16 ? tp_bf16_to_f32 : tp_f16_to_f32;
    B->k.cast(D, M(h), dt, M(x), TP_F32, n);
    B->k.cast(D, M(back), TP_F32, M(h), dt, n);
    TP_ASSERT(sync_ok(D));
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
      float xi = F(x)[i];
      uint16_t hv = ((uint16_t *)h.p)[i];
      /* the core's round-to-nearest-even conversions are the reference */
      if (isnan(xi)) {
        bool is_nan = dt == TP_BF16 ? (hv & 0x7fffu) > 0x7f80u : (hv & 0x7fffu) > 0x7c00u;
        if (!is_nan || !isnan(F(back)[i])) bad++;
      } else if (hv != to(xi) || bits(F(back)[i]) != bits(from(hv))) {
        if (bad++ < 3)
          TP_FAILF("%s cast of %a: 0x%04x vs 0x%04x", tp_dtype_name(dt), (double)xi, hv, to(xi));
      }
    }
    TP_CHECK_INT_EQ(bad, 0);
  }
  /* a few values by hand */
  B->k.cast(D, M(h), TP_BF16, M(x), TP_F32, 15);
  TP_ASSERT(sync_ok(D));
  uint16_t *hb = h.p;
  TP_CHECK_INT_EQ(hb[2], 0x3f80);  /* 1.0 */
  TP_CHECK_INT_EQ(hb[5], 0x7f80);  /* +inf */
  TP_CHECK_INT_EQ(hb[6], 0xff80);  /* -inf */
  TP_CHECK_INT_EQ(hb[13], 0x3f80); /* tie 1 + 2^-8 -> even (1.0) */
  TP_CHECK_INT_EQ(hb[14], 0x3f82); /* tie 1 + 3*2^-8 -> even (up) */
  B->k.cast(D, M(h), TP_F16, M(x), TP_F32, 15);
  TP_ASSERT(sync_ok(D));
  TP_CHECK_INT_EQ(hb[2], 0x3c00);  /* 1.0 */
  TP_CHECK_INT_EQ(hb[7], 0x7bff);  /* 65504, the f16 max */
  TP_CHECK_INT_EQ(hb[8], 0x7c00);  /* 65520 rounds to inf */
  TP_CHECK_INT_EQ(hb[9], 0x0001);  /* 2^-24, the smallest subnormal */
  TP_CHECK_INT_EQ(hb[11], 0x0000); /* an f32 subnormal underflows to +0 */
  TP_CHECK_INT_EQ(hb[1], 0x8000);  /* -0 keeps its sign */
  /* bf16 <-> f16 directly equals going through f32 */
  B->k.cast(D, M(h), TP_BF16, M(x), TP_F32, n);
  B->k.cast(D, M(h2), TP_F16, M(h), TP_BF16, n);
  TP_ASSERT(sync_ok(D));
  int bad = 0;
  for (int64_t i = 0; i < n; i++) {
    float v = tp_bf16_to_f32(hb[i]);
    if (!isnan(v) && ((uint16_t *)h2.p)[i] != tp_f32_to_f16(v)) bad++;
  }
  TP_CHECK_INT_EQ(bad, 0);
  tb_free(&x);
  tb_free(&h);
  tb_free(&back);
  tb_free(&h2);
  g_rand_free(r);
}

/* ------------------------------------------------------------ determinism */

/* Runs every non-BLAS kernel on device dev over fixed inputs and returns the
 * outputs concatenated, to compare bit for bit across thread counts. The
 * sizes are several times the kernels' parallel threshold (PAR_MIN, 32768
 * elements), odd, and not multiples of the team sizes, so that every
 * parallel kernel really splits its work, unevenly. */
static float *run_all(tp_backend_dev *dev, size_t *count) {
  GRand *r = g_rand_new_with_seed(99);
  const int rows = 1201, cols = 130, n = rows * cols, sr = 7;
  tbuf x = tb_f32(r, n, -3, 3), dy = tb_f32(r, n, -1, 1), g = tb_f32(r, cols, 0.5, 1.5),
       be = tb_f32(r, cols, -1, 1), ids = tb_new(4 * rows), mask = tb_new(4 * 43 * cols);
  for (int i = 0; i < rows; i++) I(ids)[i] = g_rand_int_range(r, 0, 5); /* heavy repeats */
  for (int i = 0; i < 43 * cols; i++) I(mask)[i] = g_rand_int_range(r, 0, 4) != 0;
  G_STATIC_ASSERT(1201 * 130 > 4 * 32768 && 43 * 7 * 130 > 32768);
  const int nout = 16;
  size_t total = (size_t)nout * n + 8;
  float *outs = g_new0(float, total);
  tbuf o = tb_new(4 * total), mu = tb_new(4 * rows), rs = tb_new(4 * rows);
  memset(o.p, 0, 4 * total);
  float *base = F(o);
  tp_mem om[16];
  for (int i = 0; i < nout; i++) om[i] = (tp_mem){o.b, (size_t)i * n * 4};
  const tp_kernels *k = &B->k;
  k->embedding_fwd(dev, om[0], M(x), M(ids), rows, cols, 0, rows, rows);
  k->embedding_bwd(dev, om[1], M(dy), M(ids), rows, cols, 0, rows, rows);
  k->layernorm_fwd(dev, om[2], M(mu), M(rs), M(x), M(g), M(be), rows, cols, 1e-5f);
  k->layernorm_bwd(dev, om[3], om[4], (tp_mem){o.b, (size_t)4 * n * 4 + 4 * cols}, M(dy), M(x),
                   M(mu), M(rs), M(g), rows, cols);
  /* softmax over [43, 1, 7, 130] with a [43, 130] mask */
  k->softmax_fwd(dev, om[5], M(x), M(mask), 43, 1, sr, cols, 0.3f);
  k->softmax_bwd(dev, om[6], M(dy), om[5], 43, 1, sr, cols, 0.3f);
  k->gelu_fwd(dev, om[7], M(x), n);
  k->gelu_bwd(dev, om[8], M(dy), M(x), n);
  k->tanh_fwd(dev, om[9], M(x), n);
  k->bias_grad(dev, om[10], M(dy), rows, cols);
  k->dropout_fwd(dev, om[11], M(x), n, 0.1f, 5, 9);
  k->permute_0213(dev, om[12], M(x), 1, rows, 2, cols / 2, 0.0f);
  k->cross_entropy_bwd(dev, om[13], (tp_mem){g.b, 0}, M(x), M(ids), rows, cols);
  k->sumsq(dev, om[14], M(x), n);
  k->cross_entropy_fwd(dev, (tp_mem){o.b, ((size_t)14 * n + 1) * 4}, M(x), M(ids), rows, cols);
  tp_adam_args a = {TP_ADAM_W, 1e-3f, 0.9f, 0.999f, 1e-7f, 0.01f, 2, 1.0f, {NULL, 0}};
  memcpy(F(o) + 15 * n, F(x), 4 * n);
  tbuf m = tb_dup(&dy, 4 * n), v = tb_new(4 * n);
  for (int i = 0; i < n; i++) F(v)[i] = F(x)[i] * F(x)[i];
  k->adam_step(dev, om[15], M(dy), M(m), M(v), n, &a);
  sync_ok(dev);
  memcpy(outs, base, 4 * total);
  *count = total;
  tb_free(&x);
  tb_free(&dy);
  tb_free(&g);
  tb_free(&be);
  tb_free(&ids);
  tb_free(&mask);
  tb_free(&o);
  tb_free(&mu);
  tb_free(&rs);
  tb_free(&m);
  tb_free(&v);
  g_rand_free(r);
  return outs;
}

TP_TEST(CpuDeterminism, OneToFourThreadsBitwiseEqual) {
  SETUP();
  tp_backend_dev *d1 = open_dev(1);
  TP_ASSERT(d1);
  size_t n1, n;
  float *a = run_all(d1, &n1);
  /* 2 and 4 split evenly, 3 does not; each run twice (run to run) */
  for (int t = 2; t <= 4; t++) {
    tp_backend_dev *dt = open_dev(t);
    TP_ASSERT(dt);
    for (int rep = 0; rep < 2; rep++) {
      float *b = run_all(dt, &n);
      TP_ASSERT(n == n1);
      size_t diff = 0, first = SIZE_MAX;
      for (size_t i = 0; i < n1; i++) {
        if (bits(a[i]) != bits(b[i])) {
          diff++;
          if (first == SIZE_MAX) first = i;
        }
      }
      if (diff) TP_FAILF("1 vs %d threads (run %d): %zu values differ, first at %zu", t, rep + 1,
                         diff, first);
      g_free(b);
    }
    B->close(dt);
  }
  g_free(a);
  B->close(d1);
}
