/* tests/test_cuda_sim.c — the CUDA backend's code on the CPU: every kernel
 * of the "cudasim" plugin (plugins/cuda/sim: the plugin's own host code and
 * kernels, run by the kernel emulator against a host-memory CUDA runtime
 * and cuBLASLt) against the CPU backend, on random data and odd shapes;
 * fused attention against a naive double-precision reference; the error
 * word, out-of-memory and no-driver paths.
 *
 * Works at the plugin interface (dlopen, no libtensorplug), so it checks
 * exactly what the GPU plugin would run, less the GPU: scripts/gpu-check.sh
 * runs the conformance suite on the real thing. */
#include <dlfcn.h>
#include <math.h>
#include <stdlib.h>

#include "cuda_shared.h"
#include "tensorplug/backend_iface.h"
#include "tensorplug/error.h"
#include "tensorplug/philox.h"
#include "tensorplug/plugin.h"
#include "tp_test.h"

/* ------------------------------------------------------------ harness */

static const tp_backend_iface *load_backend(const char *path, const char *name) {
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    TP_FAILF("cannot load %s: %s", path, dlerror());
    return NULL;
  }
  tp_plugin_entry_fn entry = (tp_plugin_entry_fn)dlsym(h, TP_PLUGIN_ENTRY_SYMBOL);
  if (!entry) {
    TP_FAILF("%s has no %s", path, TP_PLUGIN_ENTRY_SYMBOL);
    return NULL;
  }
  const tp_plugin *p = entry();
  if (p->abi_version != TP_PLUGIN_ABI_VERSION || p->kind != TP_PLUGIN_BACKEND ||
      g_strcmp0(p->name, name) != 0) {
    TP_FAILF("%s: ABI %u kind %u name %s, expected ABI %u backend %s", path, p->abi_version,
             p->kind, p->name, TP_PLUGIN_ABI_VERSION, name);
    return NULL;
  }
  return p->iface;
}

static char *build_path(const char *sub, const char *file) {
  return g_build_filename(tp_test_build_dir(), "plugins", sub, file, NULL);
}

typedef struct side {
  const tp_backend_iface *b;
  tp_backend_dev *d;
} side;

/* The CPU backend (the reference) and the emulated CUDA backend. */
typedef struct pair {
  side cpu, sim;
} pair;

static bool pair_open(pair *p) {
  char *cpu = build_path("cpu", "libtp_backend_cpu.so");
  char *sim = build_path("cuda/sim", "libtp_backend_cudasim.so");
  const char *cpu_env = g_getenv("TP_TEST_CPU_PLUGIN"); /* another reference build */
  p->cpu.b = load_backend(cpu_env && *cpu_env ? cpu_env : cpu, "cpu");
  p->sim.b = load_backend(sim, "cudasim");
  g_free(cpu);
  g_free(sim);
  if (!p->cpu.b || !p->sim.b) return false;
  GError *err = NULL;
  p->cpu.d = p->cpu.b->open(0, 2, &err);
  if (p->cpu.d) p->sim.d = p->sim.b->open(0, 0, &err);
  if (err) {
    TP_FAILF("open: %s", err->message);
    g_clear_error(&err);
    return false;
  }
  return true;
}

static void pair_close(pair *p) {
  if (p->cpu.d) p->cpu.b->close(p->cpu.d);
  if (p->sim.d) p->sim.b->close(p->sim.d);
}

/* One tensor in both backends, with the same contents. */
typedef struct twin {
  tp_buffer *c, *s;
  size_t bytes;
} twin;

static twin twin_new(pair *p, const void *host, size_t bytes) {
  twin t = {.bytes = bytes};
  GError *err = NULL;
  t.c = p->cpu.b->buffer_alloc(p->cpu.d, bytes, &err);
  if (t.c) t.s = p->sim.b->buffer_alloc(p->sim.d, bytes, &err);
  if (err) {
    TP_FAILF("alloc: %s", err->message);
    g_clear_error(&err);
    return t;
  }
  if (host && bytes) {
    p->cpu.b->upload(p->cpu.d, (tp_mem){t.c, 0}, host, bytes, &err);
    if (!err) p->sim.b->upload(p->sim.d, (tp_mem){t.s, 0}, host, bytes, &err);
  }
  if (err) {
    TP_FAILF("upload: %s", err->message);
    g_clear_error(&err);
  }
  return t;
}

static void twin_free(pair *p, twin *t) {
  if (t->c) p->cpu.b->buffer_free(p->cpu.d, t->c);
  if (t->s) p->sim.b->buffer_free(p->sim.d, t->s);
  t->c = t->s = NULL;
}

static tp_mem MC(twin t) { return (tp_mem){t.c, 0}; }
static tp_mem MS(twin t) { return (tp_mem){t.s, 0}; }
static tp_mem NONE(void) { return (tp_mem){NULL, 0}; }

/* Downloads both copies (a host synchronisation on each side): false, with
 * the failure reported, when either backend reports an error. */
static bool twin_read(pair *p, twin t, void *cpu_out, void *sim_out) {
  GError *err = NULL;
  if (!p->cpu.b->download(p->cpu.d, cpu_out, MC(t), t.bytes, &err)) {
    TP_FAILF("cpu: %s", err->message);
    g_clear_error(&err);
    return false;
  }
  if (!p->sim.b->download(p->sim.d, sim_out, MS(t), t.bytes, &err)) {
    TP_FAILF("cudasim: %s", err->message);
    g_clear_error(&err);
    return false;
  }
  return true;
}

static uint16_t to_half(float f, tp_dtype t) {
  return t == TP_BF16 ? tpcu_f32_to_bf16(f) : tpcu_f32_to_f16(f);
}
static float widen(uint16_t h, tp_dtype t) {
  return t == TP_BF16 ? tpcu_bf16_to_f32(h) : tpcu_f16_to_f32(h);
}

/* n values of t from f32 ones. */
static void *store_as(const float *f, size_t n, tp_dtype t) {
  if (t == TP_F32) return g_memdup2(f, n * 4);
  uint16_t *h = g_new(uint16_t, MAX(n, 1));
  for (size_t i = 0; i < n; i++) h[i] = to_half(f[i], t);
  return h;
}

static float *randv(GRand *r, size_t n, double lo, double hi) {
  float *v = g_new(float, MAX(n, 1));
  for (size_t i = 0; i < n; i++) v[i] = (float)g_rand_double_range(r, lo, hi);
  return v;
}

/* max|a - b| / max|b| (with max|b| at least 1e-30), NaN when either is. */
static double max_rel(const float *a, const float *b, size_t n) {
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < n; i++) {
    if (isnan(a[i]) != isnan(b[i])) return NAN;
    if (isnan(a[i])) continue;
    num = fmax(num, fabs((double)a[i] - b[i]));
    den = fmax(den, fabs((double)b[i]));
  }
  return num / den;
}

/* |a - b|_2 / |b|_2 over the entries that are not NaN in both (NaN when
 * only one is). */
static double rel_l2(const float *a, const float *b, size_t n) {
  double num = 0, den = 1e-60;
  for (size_t i = 0; i < n; i++) {
    if (isnan(a[i]) != isnan(b[i])) return NAN;
    if (isnan(a[i])) continue;
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return sqrt(num / den);
}

/* Compares an f32 tensor of both sides: sim against cpu. */
static void check_f32(pair *p, twin t, double tol, const char *what) {
  size_t n = t.bytes / 4;
  float *c = g_new(float, MAX(n, 1)), *s = g_new(float, MAX(n, 1));
  if (twin_read(p, t, c, s)) {
    double e = max_rel(s, c, n);
    if (!(e <= tol)) TP_FAILF("%s: max|cuda - cpu| / max|cpu| = %.3g > %.1g", what, e, tol);
  }
  g_free(c);
  g_free(s);
}

static void check_bits(pair *p, twin t, const char *what) {
  char *c = g_malloc(MAX(t.bytes, 1)), *s = g_malloc(MAX(t.bytes, 1));
  if (twin_read(p, t, c, s) && memcmp(c, s, t.bytes) != 0) {
    size_t i = 0;
    while (c[i] == s[i]) i++;
    TP_FAILF("%s: differs from the CPU at byte %zu", what, i);
  }
  g_free(c);
  g_free(s);
}

/* Runs kernel calls on both sides, written once: M(t) is the side's copy of
 * tensor t, KER(name) its kernel, DEV its device. */
#define BOTH(p, ...)                                                                               \
  do {                                                                                             \
    {                                                                                              \
      side *S_ = &(p)->cpu;                                                                        \
      bool is_sim_ = false;                                                                        \
      (void)is_sim_;                                                                               \
      __VA_ARGS__;                                                                                 \
    }                                                                                              \
    {                                                                                              \
      side *S_ = &(p)->sim;                                                                        \
      bool is_sim_ = true;                                                                         \
      (void)is_sim_;                                                                               \
      __VA_ARGS__;                                                                                 \
    }                                                                                              \
  } while (0)
#define M(t) (is_sim_ ? MS(t) : MC(t))
#define KER(name) S_->b->k.name
#define DEV S_->d

#define PAIR_OR_RETURN(p)                                                                          \
  pair p = {0};                                                                                    \
  if (!pair_open(&p)) {                                                                            \
    pair_close(&p);                                                                                \
    return;                                                                                        \
  }

/* ------------------------------------------------------------------ tests */

TP_TEST(CudaSim, ProbeDescribesTheEmulatedDevice) {
  char *sim = build_path("cuda/sim", "libtp_backend_cudasim.so");
  const tp_backend_iface *b = load_backend(sim, "cudasim");
  g_free(sim);
  TP_ASSERT(b != NULL);
  tp_device_info info[2];
  memset(info, 0, sizeof info);
  GError *err = NULL;
  TP_CHECK_INT_EQ(b->probe(info, 2, &err), 1);
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK(info[0].is_software); /* never --backend auto */
  TP_CHECK_INT_EQ(info[0].offset_align, 256);
  TP_CHECK_INT_EQ(info[0].max_binding_bytes, 0);
  TP_CHECK_INT_EQ(info[0].max_alloc_bytes, info[0].memory_bytes);
  TP_CHECK_INT_EQ(info[0].gemm_compute,
                  TP_DTYPE_BIT(TP_F32) | TP_DTYPE_BIT(TP_BF16) | TP_DTYPE_BIT(TP_F16));
  TP_CHECK(info[0].storage_dtypes & TP_DTYPE_BIT(TP_I32));
  TP_CHECK(strstr(info[0].features, "cuBLASLt 13.") != NULL);
  TP_CHECK(strstr(info[0].description, "sm_90") != NULL);
  TP_CHECK(info[0].max_head_dim >= 128); /* the fused kernels take BERT's heads and more */
  TP_CHECK(TP_IFACE_HAS(b, attention_fwd) && TP_IFACE_HAS(b, attention_bwd));
  TP_CHECK(TP_IFACE_HAS(b, dropout_fwd_keep) && TP_IFACE_HAS(b, dropout_bwd_keep));
}

/* Without a driver, probe says so with CUDA's own words, and open fails the
 * same way: what the real plugin does here (tests/test_cuda_plugin.c). */
TP_TEST(CudaSim, NoDriverIsAReasonNotACrash) {
  char *sim = build_path("cuda/sim", "libtp_backend_cudasim.so");
  const tp_backend_iface *b = load_backend(sim, "cudasim");
  g_free(sim);
  TP_ASSERT(b != NULL);
  g_setenv("TPSIM_DRIVER_ERROR", "35", TRUE);
  tp_device_info info[1];
  GError *err = NULL;
  TP_CHECK_INT_EQ(b->probe(info, 1, &err), 0);
  TP_CHECK_ERROR(err, TP_ERROR_UNAVAILABLE,
                 "no usable CUDA device: cudaErrorInsufficientDriver: CUDA driver version is "
                 "insufficient for CUDA runtime version");
  TP_CHECK(b->open(0, 0, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_UNAVAILABLE, "cudaErrorInsufficientDriver");
  g_unsetenv("TPSIM_DRIVER_ERROR");
}

static void gemm_case(pair *p, GRand *r, bool ta, bool tb, int m, int n, int k, int batch,
                      bool share_a, bool sum_c, float alpha, float beta, tp_dtype ab, tp_dtype cdt,
                      tp_dtype compute) {
  int pad = 3;
  int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
  int lda = ac + pad, ldb = bc + 1, ldc = n + 2;
  int64_t sa = share_a ? 0 : (int64_t)ar * lda + 5, sb = (int64_t)br * ldb, sc = sum_c ? 0 : (int64_t)m * ldc + 1;
  size_t na = (size_t)(batch - 1) * sa + (size_t)ar * lda, nb = (size_t)(batch - 1) * sb + (size_t)br * ldb;
  size_t nc = (size_t)(batch - 1) * sc + (size_t)m * ldc;
  size_t eab = ab == TP_F32 ? 4 : 2, ec = cdt == TP_F32 ? 4 : 2;
  float *fa = randv(r, na, -1, 1), *fb = randv(r, nb, -1, 1), *fc = randv(r, nc, -1, 1);
  if (beta == 0.0f)
    for (size_t i = 0; i < nc; i++) fc[i] = NAN; /* beta == 0 never reads C */
  /* the same values stored in each dtype */
  void *ha = store_as(fa, na, ab), *hb = store_as(fb, nb, ab), *hc = store_as(fc, nc, cdt);
  twin A = twin_new(p, ha, na * eab), B = twin_new(p, hb, nb * eab), C = twin_new(p, hc, nc * ec);
  BOTH(p, {
    tp_gemm_args g = {.ta = ta, .tb = tb, .m = m, .n = n, .k = k, .batch = batch, .alpha = alpha,
                      .beta = beta, .a = M(A), .b = M(B), .c = M(C), .lda = lda, .ldb = ldb,
                      .ldc = ldc, .sa = sa, .sb = sb, .sc = sc, .ab_dtype = ab, .c_dtype = cdt,
                      .compute = compute};
    KER(gemm)(DEV, &g);
  });
  char *what = g_strdup_printf("gemm ta=%d tb=%d %dx%dx%d batch %d%s%s beta %g, A/B %d C %d compute %d",
                               ta, tb, m, n, k, batch, share_a ? " (A shared)" : "",
                               sum_c ? " (summed into one C)" : "", (double)beta, ab, cdt, compute);
  /* read C as f32 on both sides; the padding between rows must be untouched */
  void *c1 = g_malloc(nc * ec), *c2 = g_malloc(nc * ec);
  if (twin_read(p, C, c1, c2)) {
    float *x = g_new(float, nc), *y = g_new(float, nc);
    for (size_t i = 0; i < nc; i++) {
      x[i] = cdt == TP_F32 ? ((float *)c1)[i] : widen(((uint16_t *)c1)[i], cdt);
      y[i] = cdt == TP_F32 ? ((float *)c2)[i] : widen(((uint16_t *)c2)[i], cdt);
    }
    bool exact = ab == TP_F32 && cdt == TP_F32 && compute == TP_F32;
    double e = exact ? max_rel(y, x, nc) : rel_l2(y, x, nc);
    double tol = exact ? 1e-5 : 1e-2;
    if (!(e <= tol)) TP_FAILF("%s: error %.3g > %.1g", what, e, tol);
    g_free(x);
    g_free(y);
  }
  g_free(what);
  g_free(c1);
  g_free(c2);
  twin_free(p, &A);
  twin_free(p, &B);
  twin_free(p, &C);
  g_free(fa);
  g_free(fb);
  g_free(fc);
  g_free(ha);
  g_free(hb);
  g_free(hc);
}

TP_TEST(CudaSim, GemmF32MatchesCpu) {
  PAIR_OR_RETURN(p);
  GRand *r = g_rand_new_with_seed(1);
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      gemm_case(&p, r, ta, tb, 7, 5, 9, 1, false, false, 1.0f, 0.0f, TP_F32, TP_F32, TP_F32);
      gemm_case(&p, r, ta, tb, 6, 10, 4, 3, false, false, 0.5f, 1.0f, TP_F32, TP_F32, TP_F32);
    }
  gemm_case(&p, r, false, true, 5, 6, 7, 3, true, false, 1.0f, 0.25f, TP_F32, TP_F32, TP_F32);
  gemm_case(&p, r, true, false, 5, 6, 7, 4, false, true, 1.0f, 0.5f, TP_F32, TP_F32, TP_F32);
  gemm_case(&p, r, false, false, 4, 3, 0, 2, false, false, 1.0f, 2.0f, TP_F32, TP_F32, TP_F32);
  gemm_case(&p, r, false, false, 4, 3, 0, 2, false, true, 1.0f, 0.0f, TP_F32, TP_F32, TP_F32);
  g_rand_free(r);
  pair_close(&p);
}

TP_TEST(CudaSim, GemmEveryStorageAndComputeTypeMatchesCpu) {
  PAIR_OR_RETURN(p);
  GRand *r = g_rand_new_with_seed(2);
  const tp_dtype ts[] = {TP_F32, TP_BF16, TP_F16};
  for (int a = 0; a < 3; a++)
    for (int c = 0; c < 3; c++)
      for (int k = 0; k < 3; k++)
        gemm_case(&p, r, a == 1, k == 2, 9, 17, 33, 2, false, false, 1.0f, c == 0 ? 0.0f : 0.5f,
                  ts[a], ts[c], ts[k]);
  /* conversions together with every product summed into one C */
  gemm_case(&p, r, true, false, 8, 5, 12, 3, false, true, 1.0f, 1.0f, TP_F16, TP_BF16, TP_BF16);
  g_rand_free(r);
  pair_close(&p);
}

TP_TEST(CudaSim, ElementwiseKernelsMatchCpu) {
  PAIR_OR_RETURN(p);
  GRand *r = g_rand_new_with_seed(3);
  const int64_t n = 3001;
  float *x = randv(r, n, -4, 4), *y0 = randv(r, n, -1, 1), *g = randv(r, n, -1, 1);
  twin X = twin_new(&p, x, n * 4), G = twin_new(&p, g, n * 4);
  struct {
    const char *name;
    int which;
  } acts[] = {{"gelu", 0}, {"relu", 1}, {"tanh", 2}};
  for (size_t a = 0; a < G_N_ELEMENTS(acts); a++) {
    twin Y = twin_new(&p, y0, n * 4), DX = twin_new(&p, y0, n * 4);
    int w = acts[a].which;
    BOTH(&p, {
      if (w == 0) KER(gelu_fwd)(DEV, M(Y), M(X), n);
      if (w == 1) KER(relu_fwd)(DEV, M(Y), M(X), n);
      if (w == 2) KER(tanh_fwd)(DEV, M(Y), M(X), n);
      if (w == 0) KER(gelu_bwd)(DEV, M(DX), M(G), M(X), n);
      if (w == 1) KER(relu_bwd)(DEV, M(DX), M(G), M(X), n);
      if (w == 2) KER(tanh_bwd)(DEV, M(DX), M(G), M(Y), n);
    });
    char *f = g_strdup_printf("%s_fwd", acts[a].name), *b = g_strdup_printf("%s_bwd", acts[a].name);
    check_f32(&p, Y, 1e-5, f);
    check_f32(&p, DX, 1e-5, b);
    g_free(f);
    g_free(b);
    twin_free(&p, &Y);
    twin_free(&p, &DX);
  }
  twin Y = twin_new(&p, y0, n * 4), Z = twin_new(&p, y0, n * 4), F = twin_new(&p, y0, n * 4);
  BOTH(&p, {
    KER(add)(DEV, M(Y), M(Y), M(X), n); /* y aliases a */
    KER(axpy)(DEV, M(Z), M(X), -0.75f, n);
    KER(fill)(DEV, M(F), 2.5f, n - 1); /* the last element stays */
  });
  check_bits(&p, Y, "add (aliased)");
  check_bits(&p, Z, "axpy");
  check_bits(&p, F, "fill");
  twin_free(&p, &Y);
  twin_free(&p, &Z);
  twin_free(&p, &F);
  twin_free(&p, &X);
  twin_free(&p, &G);
  g_free(x);
  g_free(y0);
  g_free(g);
  g_rand_free(r);
  pair_close(&p);
}

TP_TEST(CudaSim, RowKernelsMatchCpu) {
  PAIR_OR_RETURN(p);
  GRand *r = g_rand_new_with_seed(4);
  const int rows = 600, cols = 77; /* 3 chunks of the column reductions */
  size_t n = (size_t)rows * cols;
  float *x = randv(r, n, -2, 3), *dy = randv(r, n, -1, 1), *gam = randv(r, cols, 0.5, 1.5);
  float *bet = randv(r, cols, -0.5, 0.5), *z = randv(r, n, -1, 1), *zc = randv(r, cols, -1, 1);
  twin X = twin_new(&p, x, n * 4), DY = twin_new(&p, dy, n * 4), GA = twin_new(&p, gam, cols * 4);
  twin BE = twin_new(&p, bet, cols * 4), Y = twin_new(&p, z, n * 4), MU = twin_new(&p, NULL, rows * 4);
  twin RS = twin_new(&p, NULL, rows * 4), DX = twin_new(&p, z, n * 4);
  twin DG = twin_new(&p, zc, cols * 4), DB = twin_new(&p, zc, cols * 4);
  BOTH(&p, {
    KER(layernorm_fwd)(DEV, M(Y), M(MU), M(RS), M(X), M(GA), M(BE), rows, cols, 1e-5f);
    KER(layernorm_bwd)(DEV, M(DX), M(DG), M(DB), M(DY), M(X), M(MU), M(RS), M(GA), rows, cols);
  });
  check_f32(&p, Y, 1e-5, "layernorm_fwd y");
  check_f32(&p, MU, 1e-5, "layernorm_fwd mean");
  check_f32(&p, RS, 1e-5, "layernorm_fwd rstd");
  check_f32(&p, DX, 1e-4, "layernorm_bwd dx");
  check_f32(&p, DG, 1e-4, "layernorm_bwd dgamma");
  check_f32(&p, DB, 1e-4, "layernorm_bwd dbeta");
  twin BA = twin_new(&p, z, n * 4), BG = twin_new(&p, zc, cols * 4);
  BOTH(&p, {
    KER(bias_add)(DEV, M(BA), M(GA), rows, cols);
    KER(bias_grad)(DEV, M(BG), M(DY), rows, cols);
  });
  check_bits(&p, BA, "bias_add");
  check_f32(&p, BG, 1e-4, "bias_grad");
  twin *all[] = {&X, &DY, &GA, &BE, &Y, &MU, &RS, &DX, &DG, &DB, &BA, &BG};
  for (size_t i = 0; i < G_N_ELEMENTS(all); i++) twin_free(&p, all[i]);
  g_free(x);
  g_free(dy);
  g_free(gam);
  g_free(bet);
  g_free(z);
  g_free(zc);
  g_rand_free(r);
  pair_close(&p);
}

TP_TEST(CudaSim, SoftmaxWithMasksMatchesCpu) {
  PAIR_OR_RETURN(p);
  GRand *r = g_rand_new_with_seed(5);
  const int B = 3, H = 2, R = 5, C = 37;
  size_t n = (size_t)B * H * R * C;
  float *x = randv(r, n, -5, 5), *dy = randv(r, n, -1, 1), *z = randv(r, n, -1, 1);
  int32_t mask[3 * 37];
  for (int b = 0; b < B; b++)
    for (int j = 0; j < C; j++) mask[b * C + j] = b == 1 ? 0 : (j % 5 != 3); /* entry 1: all masked */
  twin X = twin_new(&p, x, n * 4), MK = twin_new(&p, mask, sizeof mask), Y = twin_new(&p, NULL, n * 4);
  twin Y2 = twin_new(&p, NULL, n * 4), DY = twin_new(&p, dy, n * 4), DX = twin_new(&p, z, n * 4);
  BOTH(&p, {
    KER(softmax_fwd)(DEV, M(Y), M(X), M(MK), B, H, R, C, 0.125f);
    KER(softmax_fwd)(DEV, M(Y2), M(X), NONE(), B, H, R, C, 1.0f);
    KER(softmax_bwd)(DEV, M(DX), M(DY), M(Y), B, H, R, C, 0.125f);
  });
  check_f32(&p, Y, 1e-5, "softmax_fwd (masked)");
  check_f32(&p, Y2, 1e-5, "softmax_fwd");
  check_f32(&p, DX, 1e-5, "softmax_bwd");
  twin *all[] = {&X, &MK, &Y, &Y2, &DY, &DX};
  for (size_t i = 0; i < G_N_ELEMENTS(all); i++) twin_free(&p, all[i]);
  g_free(x);
  g_free(dy);
  g_free(z);
  g_rand_free(r);
  pair_close(&p);
}

TP_TEST(CudaSim, DropoutIsBitForBitTheCpusMask) {
  PAIR_OR_RETURN(p);
  GRand *r = g_rand_new_with_seed(6);
  const int64_t n = 2500;
  float *x = randv(r, n, -1, 1), *z = randv(r, n, -1, 1);
  const float ps[] = {0.0f, 0.1f, 0.5f, 1.0f};
  for (size_t i = 0; i < G_N_ELEMENTS(ps); i++) {
    float pp = ps[i];
    uint64_t seed = 0x1234567890abcdefull, off = (5ull << 40) + 77;
    twin X = twin_new(&p, x, n * 4), Y = twin_new(&p, NULL, n * 4), DX = twin_new(&p, z, n * 4);
    twin Y2 = twin_new(&p, NULL, n * 4), KP = twin_new(&p, NULL, n), DX2 = twin_new(&p, z, n * 4);
    BOTH(&p, {
      KER(dropout_fwd)(DEV, M(Y), M(X), n, pp, seed, off);
      KER(dropout_bwd)(DEV, M(DX), M(X), n, pp, seed, off);
      S_->b->dropout_fwd_keep(DEV, M(Y2), M(KP), M(X), n, pp, seed, off);
      S_->b->dropout_bwd_keep(DEV, M(DX2), M(X), M(KP), n, pp);
    });
    check_bits(&p, Y, "dropout_fwd");
    check_bits(&p, DX, "dropout_bwd");
    check_bits(&p, Y2, "dropout_fwd_keep");
    check_bits(&p, KP, "dropout_fwd_keep's mask");
    check_bits(&p, DX2, "dropout_bwd_keep");
    twin *all[] = {&X, &Y, &DX, &Y2, &KP, &DX2};
    for (size_t j = 0; j < G_N_ELEMENTS(all); j++) twin_free(&p, all[j]);
  }
  g_free(x);
  g_free(z);
  g_rand_free(r);
  pair_close(&p);
}

TP_TEST(CudaSim, LayoutKernelsMatchCpu) {
  PAIR_OR_RETURN(p);
  GRand *r = g_rand_new_with_seed(7);
  const int d0 = 2, d1 = 5, d2 = 3, d3 = 7;
  size_t n = (size_t)d0 * d1 * d2 * d3;
  float *x = randv(r, n, -1, 1), *z = randv(r, n, -1, 1);
  twin X = twin_new(&p, x, n * 4), Y = twin_new(&p, NULL, n * 4), Y1 = twin_new(&p, z, n * 4);
  BOTH(&p, {
    KER(permute_0213)(DEV, M(Y), M(X), d0, d1, d2, d3, 0.0f);
    KER(permute_0213)(DEV, M(Y1), M(X), d0, d1, d2, d3, 1.0f);
  });
  check_bits(&p, Y, "permute_0213");
  check_f32(&p, Y1, 1e-6, "permute_0213 (beta 1)");
  /* first token of [2, 15, 7] */
  twin FT = twin_new(&p, z, 2 * 7 * 4), DX = twin_new(&p, z, n * 4);
  BOTH(&p, {
    KER(first_token_fwd)(DEV, M(FT), M(X), 2, 15, 7);
    KER(first_token_bwd)(DEV, M(DX), M(FT), 2, 15, 7);
  });
  check_bits(&p, FT, "first_token_fwd");
  check_bits(&p, DX, "first_token_bwd");
  twin *all[] = {&X, &Y, &Y1, &FT, &DX};
  for (size_t i = 0; i < G_N_ELEMENTS(all); i++) twin_free(&p, all[i]);
  g_free(x);
  g_free(z);
  g_rand_free(r);
  pair_close(&p);
}

TP_TEST(CudaSim, EmbeddingRowRangesAndRepeatedIdsMatchCpu) {
  PAIR_OR_RETURN(p);
  GRand *r = g_rand_new_with_seed(8);
  const int vocab = 50, h = 133, n = 300; /* h: two column blocks */
  int32_t ids[300];
  for (int i = 0; i < n; i++) ids[i] = i % 7 == 0 ? 3 : (int)g_rand_int_range(r, 0, vocab);
  float *table = randv(r, (size_t)vocab * h, -1, 1), *dout = randv(r, (size_t)n * h, -1, 1);
  float *o0 = randv(r, (size_t)n * h, -1, 1), *dt0 = randv(r, (size_t)vocab * h, -1, 1);
  twin ID = twin_new(&p, ids, sizeof ids), TB = twin_new(&p, table, (size_t)vocab * h * 4);
  twin OUT = twin_new(&p, o0, (size_t)n * h * 4), DO = twin_new(&p, dout, (size_t)n * h * 4);
  twin DT = twin_new(&p, dt0, (size_t)vocab * h * 4);
  /* two row ranges, the second given from its first row as the core does */
  BOTH(&p, {
    KER(embedding_fwd)(DEV, M(OUT), M(TB), M(ID), n, h, 0, 20, vocab);
    tp_mem t2 = M(TB), d2 = M(DT);
    t2.off += (size_t)20 * h * 4;
    d2.off += (size_t)20 * h * 4;
    KER(embedding_fwd)(DEV, M(OUT), t2, M(ID), n, h, 20, 30, vocab);
    KER(embedding_bwd)(DEV, M(DT), M(DO), M(ID), n, h, 0, 20, vocab);
    KER(embedding_bwd)(DEV, d2, M(DO), M(ID), n, h, 20, 30, vocab);
  });
  check_bits(&p, OUT, "embedding_fwd");
  check_f32(&p, DT, 1e-6, "embedding_bwd");
  /* an id out of range is reported at the next synchronisation */
  int32_t bad[3] = {1, 50, 2};
  twin BAD = twin_new(&p, bad, sizeof bad);
  p.sim.b->k.embedding_fwd(p.sim.d, MS(OUT), MS(TB), MS(BAD), 3, h, 0, vocab, vocab);
  GError *err = NULL;
  TP_CHECK(!p.sim.b->synchronize(p.sim.d, &err));
  TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "embedding_fwd: id 50 at position 1 is outside [0, 50)");
  TP_CHECK(p.sim.b->synchronize(p.sim.d, &err)); /* reported once */
  TP_ASSERT_NO_ERROR(err);
  twin *all[] = {&ID, &TB, &OUT, &DO, &DT, &BAD};
  for (size_t i = 0; i < G_N_ELEMENTS(all); i++) twin_free(&p, all[i]);
  g_free(table);
  g_free(dout);
  g_free(o0);
  g_free(dt0);
  g_rand_free(r);
  pair_close(&p);
}

TP_TEST(CudaSim, LossAndAccuracyMatchCpu) {
  PAIR_OR_RETURN(p);
  GRand *r = g_rand_new_with_seed(9);
  const int B = 37, C = 3;
  float *z = randv(r, (size_t)B * C, -3, 3), *dz = randv(r, (size_t)B * C, -1, 1);
  z[4 * C + 1] = NAN; /* a NaN row counts as wrong */
  z[5 * C + 0] = z[5 * C + 2] = 9.0f; /* ties: the first maximum wins */
  int32_t lab[37];
  for (int b = 0; b < B; b++) lab[b] = (int)g_rand_int_range(r, 0, C);
  lab[5] = 2;
  float dl = 1.5f;
  twin Z = twin_new(&p, z, sizeof(float) * B * C), L = twin_new(&p, lab, sizeof lab);
  twin LOSS = twin_new(&p, NULL, 4), DL = twin_new(&p, &dl, 4), DZ = twin_new(&p, dz, sizeof(float) * B * C);
  twin CNT = twin_new(&p, NULL, 4);
  float zc[3 * 37];
  memcpy(zc, z, sizeof zc);
  zc[4 * C + 1] = 0.5f; /* no NaN for the loss */
  twin ZC = twin_new(&p, zc, sizeof zc);
  BOTH(&p, {
    KER(cross_entropy_fwd)(DEV, M(LOSS), M(ZC), M(L), B, C);
    KER(cross_entropy_bwd)(DEV, M(DZ), M(DL), M(ZC), M(L), B, C);
    KER(count_correct)(DEV, M(CNT), M(Z), M(L), B, C);
  });
  check_f32(&p, LOSS, 1e-6, "cross_entropy_fwd");
  check_f32(&p, DZ, 1e-6, "cross_entropy_bwd");
  check_bits(&p, CNT, "count_correct");
  int32_t badlab[2] = {0, 3};
  twin BL = twin_new(&p, badlab, sizeof badlab);
  p.sim.b->k.cross_entropy_fwd(p.sim.d, MS(LOSS), MS(ZC), MS(BL), 2, C);
  GError *err = NULL;
  TP_CHECK(!p.sim.b->synchronize(p.sim.d, &err));
  TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "cross_entropy_fwd: label 3 at position 1 is outside [0, 3)");
  twin *all[] = {&Z, &L, &LOSS, &DL, &DZ, &CNT, &ZC, &BL};
  for (size_t i = 0; i < G_N_ELEMENTS(all); i++) twin_free(&p, all[i]);
  g_free(z);
  g_free(dz);
  g_rand_free(r);
  pair_close(&p);
}

TP_TEST(CudaSim, OptimizerKernelsMatchCpu) {
  PAIR_OR_RETURN(p);
  GRand *r = g_rand_new_with_seed(10);
  const int64_t n = 20001; /* three sumsq chunks */
  float *w = randv(r, n, -1, 1), *g = randv(r, n, -0.1, 0.1), *m = randv(r, n, -0.01, 0.01);
  float *v = randv(r, n, 0, 0.001);
  float ctl[TP_CTL_WORDS] = {0};
  ctl[TP_CTL_LOSS_SCALE] = 1024.0f;
  twin W = twin_new(&p, w, n * 4), G = twin_new(&p, g, n * 4), Mm = twin_new(&p, m, n * 4);
  twin V = twin_new(&p, v, n * 4), CTL = twin_new(&p, ctl, sizeof ctl);
  tp_control_args ca = {.max_norm = 0.5f, .dynamic = true, .growth_interval = 2, .growth = 2.0f,
                        .backoff = 0.5f};
  for (int step = 1; step <= 3; step++) {
    tp_adam_args aa = {.mode = step == 2 ? TP_ADAM_W : TP_ADAM_KERAS, .lr = 1e-3f, .beta1 = 0.9f,
                       .beta2 = 0.999f, .eps = 1e-7f, .weight_decay = 0.01f, .step = step,
                       .grad_scale = 1.0f};
    BOTH(&p, {
      aa.ctl = M(CTL);
      KER(sumsq)(DEV, M(CTL), M(G), n);
      KER(optim_control)(DEV, M(CTL), &ca);
      KER(adam_step)(DEV, M(W), M(G), M(Mm), M(V), n, &aa);
    });
    check_f32(&p, CTL, 1e-5, "the control block after sumsq and optim_control");
  }
  check_f32(&p, W, 1e-6, "adam_step p");
  check_f32(&p, Mm, 1e-6, "adam_step m");
  check_f32(&p, V, 1e-6, "adam_step v");
  /* a non-finite gradient: skipped step, loss scale backs off */
  g[17] = INFINITY;
  twin GI = twin_new(&p, g, n * 4), NF = twin_new(&p, NULL, 4);
  int32_t zero = 0;
  BOTH(&p, {
    S_->b->upload(DEV, M(NF), &zero, 4, NULL);
    tp_adam_args aa = {.mode = TP_ADAM_KERAS, .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f,
                       .eps = 1e-7f, .step = 4, .grad_scale = 1.0f, .ctl = M(CTL)};
    KER(sumsq)(DEV, M(CTL), M(GI), n);
    KER(optim_control)(DEV, M(CTL), &ca);
    KER(adam_step)(DEV, M(W), M(GI), M(Mm), M(V), n, &aa);
    KER(nonfinite)(DEV, M(NF), M(GI), n);
  });
  check_bits(&p, NF, "nonfinite");
  check_f32(&p, W, 1e-6, "adam_step p after a skipped step");
  float c1[TP_CTL_WORDS], c2[TP_CTL_WORDS];
  if (twin_read(&p, CTL, c1, c2)) {
    TP_CHECK(c2[TP_CTL_SKIP] == 1.0f);
    TP_CHECK(c2[TP_CTL_SKIPPED] == c1[TP_CTL_SKIPPED]);
    TP_CHECK(c2[TP_CTL_LOSS_SCALE] == c1[TP_CTL_LOSS_SCALE]);
  }
  twin *all[] = {&W, &G, &Mm, &V, &CTL, &GI, &NF};
  for (size_t i = 0; i < G_N_ELEMENTS(all); i++) twin_free(&p, all[i]);
  g_free(w);
  g_free(g);
  g_free(m);
  g_free(v);
  g_rand_free(r);
  pair_close(&p);
}

TP_TEST(CudaSim, CastsAreBitForBitTheCpus) {
  PAIR_OR_RETURN(p);
  GRand *r = g_rand_new_with_seed(11);
  const int64_t n = 1000;
  float *x = randv(r, n, -70000, 70000);
  x[0] = NAN;
  x[1] = INFINITY;
  x[2] = 1e-6f;  /* an f16 subnormal */
  x[3] = 65520.0f; /* rounds to f16 Inf */
  x[4] = -0.0f;
  const tp_dtype ts[] = {TP_F32, TP_BF16, TP_F16};
  for (int a = 0; a < 3; a++)
    for (int b = 0; b < 3; b++) {
      void *src = store_as(x, n, ts[a]);
      size_t sb = ts[a] == TP_F32 ? 4 : 2, db = ts[b] == TP_F32 ? 4 : 2;
      twin X = twin_new(&p, src, n * sb), Y = twin_new(&p, NULL, n * db);
      BOTH(&p, KER(cast)(DEV, M(Y), ts[b], M(X), ts[a], n));
      char *what = g_strdup_printf("cast %d -> %d", ts[a], ts[b]);
      check_bits(&p, Y, what);
      g_free(what);
      twin_free(&p, &X);
      twin_free(&p, &Y);
      g_free(src);
    }
  g_free(x);
  g_rand_free(r);
  pair_close(&p);
}

TP_TEST(CudaSim, CopyAndOverlappingCopy) {
  PAIR_OR_RETURN(p);
  float x[64];
  for (int i = 0; i < 64; i++) x[i] = (float)i;
  twin X = twin_new(&p, x, sizeof x);
  GError *err = NULL;
  /* memmove semantics within one buffer, both directions */
  TP_CHECK(p.cpu.b->copy(p.cpu.d, (tp_mem){X.c, 8}, (tp_mem){X.c, 0}, 100, &err));
  TP_CHECK(p.sim.b->copy(p.sim.d, (tp_mem){X.s, 8}, (tp_mem){X.s, 0}, 100, &err));
  TP_CHECK(p.cpu.b->copy(p.cpu.d, (tp_mem){X.c, 0}, (tp_mem){X.c, 40}, 120, &err));
  TP_CHECK(p.sim.b->copy(p.sim.d, (tp_mem){X.s, 0}, (tp_mem){X.s, 40}, 120, &err));
  TP_ASSERT_NO_ERROR(err);
  check_bits(&p, X, "overlapping copies");
  /* a range past the buffer's end is refused at once */
  TP_CHECK(!p.sim.b->copy(p.sim.d, (tp_mem){X.s, 200}, (tp_mem){X.s, 0}, 100, &err));
  TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "exceed the buffer");
  twin_free(&p, &X);
  pair_close(&p);
}

TP_TEST(CudaSim, OutOfMemorySaysWhatAndSuggestsASmallerBatch) {
  char *sim = build_path("cuda/sim", "libtp_backend_cudasim.so");
  const tp_backend_iface *b = load_backend(sim, "cudasim");
  g_free(sim);
  TP_ASSERT(b != NULL);
  g_setenv("TPSIM_MEMORY_BYTES", "268435456", TRUE); /* 256 MiB */
  GError *err = NULL;
  tp_backend_dev *d = b->open(0, 0, &err);
  TP_ASSERT_NO_ERROR(err);
  tp_buffer *x = b->buffer_alloc(d, (size_t)300 << 20, &err);
  TP_CHECK(x == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_OUT_OF_MEMORY, "asked for 300.0 MiB (314572800 bytes) with ");
  x = b->buffer_alloc(d, (size_t)300 << 20, &err);
  TP_CHECK_ERROR(err, TP_ERROR_OUT_OF_MEMORY, "use a smaller --batch");
  tp_buffer *y = b->buffer_alloc(d, (size_t)100 << 20, &err);
  TP_CHECK(y != NULL);
  TP_ASSERT_NO_ERROR(err);
  b->buffer_free(d, y);
  b->close(d);
  g_unsetenv("TPSIM_MEMORY_BYTES");
}

/* ------------------------------------------------------- fused attention */

typedef struct att_case {
  int B, H, T, hd;
  bool mask, bias, dbias, all_masked_entry;
  float p;
  tp_dtype compute;
} att_case;

static double rnd(double x, tp_dtype t) {
  return t == TP_F32 ? x : (double)widen(to_half((float)x, t), t);
}

/* The header's definition, naively in double (operands rounded to the
 * compute type where the tensor cores would see them). qkv is [B, T, ld]
 * with q, k, v at columns 0, H*hd, 2*H*hd; gradients likewise in dqkv. */
static void att_reference(const att_case *c, int ld, const float *qkv, const int32_t *mask,
                          const float *bias, const float *dout, float scale, uint64_t seed,
                          uint64_t off, float *out, float *lse, float *dqkv, float *dbias) {
  int B = c->B, H = c->H, T = c->T, hd = c->hd;
  float pscale = c->p < 1.0f ? 1.0f / (1.0f - c->p) : 0.0f;
  double *S = g_new(double, (size_t)T * T), *P = g_new(double, (size_t)T * T);
  double *Pd = g_new(double, (size_t)T * T), *dP = g_new(double, (size_t)T * T);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++) {
      bool all = mask != NULL;
      for (int j = 0; mask && j < T; j++) all = all && mask[b * T + j] == 0;
#define Q(i, d) rnd(qkv[((size_t)b * T + (i)) * ld + (size_t)h * hd + (d)], c->compute)
#define K_(j, d) rnd(qkv[((size_t)b * T + (j)) * ld + (size_t)(H + h) * hd + (d)], c->compute)
#define V(j, d) rnd(qkv[((size_t)b * T + (j)) * ld + (size_t)(2 * H + h) * hd + (d)], c->compute)
#define DO(i, d) rnd(dout[((size_t)b * T + (i)) * H * hd + (size_t)h * hd + (d)], c->compute)
      for (int i = 0; i < T; i++) {
        double mx = -INFINITY;
        for (int j = 0; j < T; j++) {
          double s;
          if (all)
            s = 0;
          else if (mask && mask[b * T + j] == 0)
            s = -INFINITY;
          else {
            s = 0;
            for (int d = 0; d < hd; d++) s += Q(i, d) * K_(j, d);
            s = s * scale + (bias ? bias[((size_t)h * T + i) * T + j] : 0.0);
          }
          S[i * T + j] = s;
          mx = fmax(mx, s);
        }
        double sum = 0;
        for (int j = 0; j < T; j++) sum += exp(S[i * T + j] - mx);
        lse[((size_t)b * H + h) * T + i] = (float)(mx + log(sum));
        for (int j = 0; j < T; j++) {
          P[i * T + j] = exp(S[i * T + j] - mx) / sum;
          uint64_t ctr = off + (((uint64_t)b * H + h) * T + i) * T + j;
          bool keep = c->p == 0.0f || tp_philox_uniform(seed, ctr) >= c->p;
          Pd[i * T + j] = keep ? P[i * T + j] * pscale : 0.0;
        }
        for (int d = 0; d < hd; d++) {
          double o = 0;
          for (int j = 0; j < T; j++) o += rnd(Pd[i * T + j], c->compute) * V(j, d);
          out[((size_t)b * T + i) * H * hd + (size_t)h * hd + d] = (float)o;
        }
      }
      /* backward */
      for (int i = 0; i < T; i++) {
        double D = 0;
        for (int j = 0; j < T; j++) {
          double x = 0;
          for (int d = 0; d < hd; d++) x += DO(i, d) * V(j, d);
          uint64_t ctr = off + (((uint64_t)b * H + h) * T + i) * T + j;
          bool keep = c->p == 0.0f || tp_philox_uniform(seed, ctr) >= c->p;
          dP[i * T + j] = keep ? x * pscale : 0.0;
          D += P[i * T + j] * dP[i * T + j];
        }
        for (int j = 0; j < T; j++) {
          double ds = P[i * T + j] * (dP[i * T + j] - D);
          if (dbias) dbias[((size_t)h * T + i) * T + j] += (float)ds;
          dP[i * T + j] = rnd(ds, c->compute); /* dS, as the products see it */
        }
      }
      for (int i = 0; i < T; i++)
        for (int d = 0; d < hd; d++) {
          double dq = 0, dk = 0, dv = 0;
          for (int j = 0; j < T; j++) {
            dq += dP[i * T + j] * K_(j, d);
            dk += dP[j * T + i] * Q(j, d);
            dv += rnd(Pd[j * T + i], c->compute) * DO(j, d);
          }
          float *row = dqkv + ((size_t)b * T + i) * ld;
          row[(size_t)h * hd + d] += (float)(scale * dq);
          row[(size_t)(H + h) * hd + d] += (float)(scale * dk);
          row[(size_t)(2 * H + h) * hd + d] += (float)dv;
        }
#undef Q
#undef K_
#undef V
#undef DO
    }
  g_free(S);
  g_free(P);
  g_free(Pd);
  g_free(dP);
}

static tp_buffer *sim_buf(side *s, const void *host, size_t bytes) {
  GError *err = NULL;
  tp_buffer *b = s->b->buffer_alloc(s->d, bytes, &err);
  if (b && host) s->b->upload(s->d, (tp_mem){b, 0}, host, bytes, &err);
  if (err) {
    TP_FAILF("cudasim: %s", err->message);
    g_clear_error(&err);
  }
  return b;
}

static void sim_read(side *s, tp_buffer *b, void *host, size_t bytes) {
  GError *err = NULL;
  if (!s->b->download(s->d, host, (tp_mem){b, 0}, bytes, &err)) {
    TP_FAILF("cudasim: %s", err->message);
    g_clear_error(&err);
  }
}

static void attention_case(side *s, const att_case *c) {
  GRand *r = g_rand_new_with_seed(12);
  int B = c->B, H = c->H, T = c->T, hd = c->hd, ld = 3 * H * hd + 5;
  size_t nqkv = (size_t)B * T * ld, nout = (size_t)B * T * H * hd, nb = (size_t)H * T * T;
  float *qkv = randv(r, nqkv, -1.5, 1.5), *dout = randv(r, nout, -1, 1);
  float *bias = randv(r, nb, -1, 1), *g0 = randv(r, nqkv, -0.5, 0.5), *db0 = randv(r, nb, -0.5, 0.5);
  int32_t *mask = g_new(int32_t, (size_t)B * T);
  for (int b = 0; b < B; b++)
    for (int j = 0; j < T; j++)
      mask[b * T + j] = (c->all_masked_entry && b == 1) ? 0 : (j % 4 != 1 || j < 3);
  float scale = 1.0f / sqrtf((float)hd);
  uint64_t seed = 42, off = 7ull << 40;
  float *out = g_new(float, nout), *lse = g_new(float, (size_t)B * H * T);
  float *dqkv = g_memdup2(g0, nqkv * 4), *dbias = g_memdup2(db0, nb * 4);
  att_reference(c, ld, qkv, c->mask ? mask : NULL, c->bias ? bias : NULL, dout, scale, seed, off,
                out, lse, dqkv, c->dbias ? dbias : NULL);

  tp_buffer *Bq = sim_buf(s, qkv, nqkv * 4), *Bo = sim_buf(s, NULL, nout * 4);
  tp_buffer *Bl = sim_buf(s, NULL, (size_t)B * H * T * 4), *Bm = sim_buf(s, mask, (size_t)B * T * 4);
  tp_buffer *Bb = sim_buf(s, bias, nb * 4), *Bdo = sim_buf(s, dout, nout * 4);
  tp_buffer *Bg = sim_buf(s, g0, nqkv * 4), *Bdb = sim_buf(s, db0, nb * 4);
  size_t hb = (size_t)H * hd * 4;
  tp_attention_args a = {.batch = B, .heads = H, .head_dim = hd, .q_len = T, .kv_len = T,
                         .ld_q = ld, .ld_kv = ld,
                         .q = {Bq, 0}, .k = {Bq, hb}, .v = {Bq, 2 * hb}, .out = {Bo, 0},
                         .lse = {Bl, 0}, .mask = {c->mask ? Bm : NULL, 0},
                         .bias = {c->bias ? Bb : NULL, 0}, .scale = scale, .dropout = c->p,
                         .seed = seed, .offset = off, .compute = c->compute};
  s->b->attention_fwd(s->d, &a);
  s->b->attention_bwd(s->d, &a, (tp_mem){Bdo, 0}, (tp_mem){Bg, 0}, (tp_mem){Bg, hb},
                      (tp_mem){Bg, 2 * hb}, (tp_mem){c->dbias ? Bdb : NULL, 0});
  float *o2 = g_new(float, nout), *l2 = g_new(float, (size_t)B * H * T);
  float *g2 = g_new(float, nqkv), *db2 = g_new(float, nb);
  sim_read(s, Bo, o2, nout * 4);
  sim_read(s, Bl, l2, (size_t)B * H * T * 4);
  sim_read(s, Bg, g2, nqkv * 4);
  sim_read(s, Bdb, db2, nb * 4);
  bool exact = c->compute == TP_F32;
  double tol = exact ? 2e-5 : 1e-2;
  struct {
    const char *what;
    const float *got, *want;
    size_t n;
  } cmp[] = {{"out", o2, out, nout}, {"lse", l2, lse, (size_t)B * H * T},
             {"dq/dk/dv (+=, in the fused qkv layout)", g2, dqkv, nqkv},
             {"dbias (+=)", db2, dbias, nb}};
  for (size_t i = 0; i < G_N_ELEMENTS(cmp); i++) {
    double e = exact ? max_rel(cmp[i].got, cmp[i].want, cmp[i].n)
                     : rel_l2(cmp[i].got, cmp[i].want, cmp[i].n);
    if (!(e <= tol))
      TP_FAILF("attention B=%d H=%d T=%d hd=%d compute %d p=%g mask %d bias %d: %s error %.3g > %.1g",
               B, H, T, hd, c->compute, (double)c->p, c->mask, c->bias, cmp[i].what, e, tol);
  }
  tp_buffer *all[] = {Bq, Bo, Bl, Bm, Bb, Bdo, Bg, Bdb};
  for (size_t i = 0; i < G_N_ELEMENTS(all); i++) s->b->buffer_free(s->d, all[i]);
  void *mem[] = {qkv, dout, bias, g0, db0, mask, out, lse, dqkv, dbias, o2, l2, g2, db2};
  for (size_t i = 0; i < G_N_ELEMENTS(mem); i++) g_free(mem[i]);
  g_rand_free(r);
}

static bool sim_open(side *s) {
  char *sim = build_path("cuda/sim", "libtp_backend_cudasim.so");
  s->b = load_backend(sim, "cudasim");
  g_free(sim);
  if (!s->b) return false;
  GError *err = NULL;
  s->d = s->b->open(0, 0, &err);
  if (!s->d) {
    TP_FAILF("open: %s", err->message);
    g_clear_error(&err);
    return false;
  }
  return true;
}

TP_TEST(CudaSim, FusedAttentionF32MatchesTheDefinition) {
  side s;
  if (!sim_open(&s)) return;
  /* two query tiles and two key tiles, the second ones partial; head_dim
   * not a multiple of 16; dropout; a mask and an additive bias with its
   * gradient */
  attention_case(&s, &(att_case){.B = 2, .H = 2, .T = 70, .hd = 24, .mask = true, .bias = true,
                                 .dbias = true, .p = 0.1f, .compute = TP_F32});
  s.b->close(s.d);
}

TP_TEST(CudaSim, FusedAttentionHalfTypesMatchTheDefinition) {
  side s;
  if (!sim_open(&s)) return;
  /* bf16 with a fully masked batch entry (P = 1/T, gradients as if S = 0) */
  attention_case(&s, &(att_case){.B = 2, .H = 2, .T = 40, .hd = 32, .mask = true,
                                 .all_masked_entry = true, .p = 0.0f, .compute = TP_BF16});
  /* f16, head_dim 64, bias without its gradient, dropout */
  attention_case(&s, &(att_case){.B = 1, .H = 3, .T = 33, .hd = 64, .bias = true, .p = 0.2f,
                                 .compute = TP_F16});
  s.b->close(s.d);
}

TP_TEST(CudaSim, FusedAttentionWithSmallSharedMemoryUsesSmallerTiles) {
  g_setenv("TPSIM_SMEM_OPTIN", "49152", TRUE); /* 48 KiB: 32 x 32 or smaller tiles */
  side s;
  if (sim_open(&s)) {
    attention_case(&s, &(att_case){.B = 1, .H = 2, .T = 45, .hd = 40, .mask = true, .bias = true,
                                   .dbias = true, .p = 0.1f, .compute = TP_BF16});
    s.b->close(s.d);
  }
  g_unsetenv("TPSIM_SMEM_OPTIN");
}
