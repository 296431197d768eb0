/* tests/test_vulkan_plugin.c — the Vulkan backend plugin on its own: every
 * kernel against a naive C implementation here (double accumulation), and
 * the plugin's own machinery (probe, staging, batched submission, deferred
 * frees, overlapping copies, device-side errors, unaligned bindings, the
 * descriptor-pool path without push descriptors). The plugin is loaded as
 * the core loads it (dlopen, tp_plugin_entry); tests skip when the machine
 * has no Vulkan device. tests/test_backend_ops.c compares it to the CPU
 * backend through the core.
 *
 * Tensors sit at odd offsets inside their buffers (4, 8, 12 bytes past an
 * aligned start) so that every binding carries an element offset. Shapes
 * are tiny: lavapipe (Mesa's CPU implementation) runs these in CI.
 * Tolerances: |got - want| <= rtol * max|want| (the acceptance's measure),
 * 1e-5 for elementwise kernels, 1e-4 for reductions, GEMM and attention. */
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>

#include "tensorplug/backend_iface.h"
#include "tensorplug/dtype.h"
#include "tensorplug/error.h"
#include "tensorplug/optim_control.h"
#include "tensorplug/philox.h"
#include "tensorplug/plugin.h"
#include "tp_test.h"

/* ------------------------------------------------------------ harness */

static const tp_backend_iface *B;
static tp_backend_dev *D;
static tp_device_info INFO;
static char *g_skip; /* why there is no device */

static bool load_plugin(void) {
  if (B) return true;
  char *path = g_build_filename(tp_test_build_dir(), "plugins", "vulkan",
                                "libtp_backend_vulkan.so", NULL);
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    TP_FAILF("dlopen %s: %s", path, dlerror());
    g_free(path);
    return false;
  }
  g_free(path);
  tp_plugin_entry_fn entry = (tp_plugin_entry_fn)dlsym(h, TP_PLUGIN_ENTRY_SYMBOL);
  if (!entry) {
    TP_FAILF("no %s in the vulkan plugin", TP_PLUGIN_ENTRY_SYMBOL);
    return false;
  }
  const tp_plugin *p = entry(); /* the handle stays open for the whole run */
  TP_CHECK_INT_EQ(p->abi_version, TP_PLUGIN_ABI_VERSION);
  TP_CHECK_STR_EQ(p->name, "vulkan");
  B = p->iface;
  return true;
}

/* 1: ready, 0: failed, -1: no device (skip) */
static int setup(void) {
  if (D) return 1;
  if (g_skip) return -1;
  if (!load_plugin()) return 0;
  GError *err = NULL;
  tp_device_info infos[8];
  memset(infos, 0, sizeof infos);
  int n = B->probe(infos, 8, &err);
  if (n <= 0) {
    g_skip = g_strdup_printf("no Vulkan device: %s", err ? err->message : "?");
    g_clear_error(&err);
    return -1;
  }
  INFO = infos[0];
  D = B->open(0, 0, &err);
  if (!D) {
    TP_FAILF("open vulkan device 0: %s", err ? err->message : "(no error)");
    g_clear_error(&err);
    return 0;
  }
  return 1;
}
#define SETUP()                                                                                    \
  do {                                                                                             \
    int s_ = setup();                                                                              \
    if (s_ < 0) TP_SKIP(g_skip);                                                                   \
    if (s_ == 0) return;                                                                           \
  } while (0)

/* A tensor in its own device buffer, `off` bytes in. */
typedef struct {
  tp_buffer *b;
  size_t off, bytes;
} dt;

static tp_mem M(dt t) { return (tp_mem){t.b, t.off}; }

static bool upload(tp_mem m, const void *src, size_t bytes) {
  GError *err = NULL;
  if (!B->upload(D, m, src, bytes, &err)) {
    TP_FAILF("upload: %s", err->message);
    g_error_free(err);
    return false;
  }
  return true;
}

/* A tensor holding host (or, host NULL, NaN bytes that any read would spread). */
static dt dt_new(const void *host, size_t bytes, size_t off) {
  GError *err = NULL;
  dt t = {B->buffer_alloc(D, off + bytes + 16, &err), off, bytes};
  if (!t.b) g_error("buffer_alloc(%zu): %s", off + bytes + 16, err->message);
  guint8 *fill = g_malloc(off + bytes + 16);
  memset(fill, 0xff, off + bytes + 16);
  if (host) memcpy(fill + off, host, bytes);
  upload((tp_mem){t.b, 0}, fill, off + bytes + 16);
  g_free(fill);
  return t;
}

/* f32 tensors start g_off bytes into their buffer: 4 (an element offset in
 * the binding, scalar paths) or 16 (aligned: the kernels' vec4 paths). */
static size_t g_off = 4;
static dt dt_f32(const float *x, int64_t n) { return dt_new(x, sizeof(float) * (size_t)n, g_off); }

/* Runs body once with unaligned and once with aligned f32 tensors. */
#define BOTH_ALIGNMENTS(body)                                                                      \
  do {                                                                                             \
    for (int al_ = 0; al_ < 2; al_++) {                                                            \
      g_off = al_ ? 16 : 4;                                                                        \
      body;                                                                                        \
    }                                                                                              \
    g_off = 4;                                                                                     \
  } while (0)
static dt dt_i32(const int32_t *x, int64_t n) { return dt_new(x, 4 * (size_t)n, 8); }

static bool get(void *dst, dt t) {
  GError *err = NULL;
  if (!B->download(D, dst, M(t), t.bytes, &err)) {
    TP_FAILF("download: %s", err->message);
    g_error_free(err);
    return false;
  }
  return true;
}

static float *get_f32(dt t) {
  float *h = g_malloc(t.bytes + 4);
  if (!get(h, t)) memset(h, 0, t.bytes);
  return h;
}

static void dt_free(dt *t) {
  B->buffer_free(D, t->b);
  t->b = NULL;
}

static float *rnd(GRand *r, int64_t n, double lo, double hi) {
  float *x = g_new(float, n > 0 ? n : 1);
  for (int64_t i = 0; i < n; i++) x[i] = (float)g_rand_double_range(r, lo, hi);
  return x;
}

static bool sync_ok(void) {
  GError *err = NULL;
  if (!B->synchronize(D, &err)) {
    TP_FAILF("synchronize: %s", err ? err->message : "(no message)");
    g_clear_error(&err);
    return false;
  }
  return true;
}

/* max|got - want| <= rtol * max|want| (+ a floor for all-zero wants) */
static bool close_rel(const char *what, const float *got, const double *want, int64_t n,
                      double rtol) {
  double mx = 0, err = 0;
  int64_t at = 0;
  for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(want[i]));
  for (int64_t i = 0; i < n; i++) {
    double e = fabs((double)got[i] - want[i]);
    if (!(e <= err)) { /* NaN counts as the worst */
      err = isnan(e) ? INFINITY : e;
      at = i;
    }
  }
  if (!(err <= rtol * fmax(mx, 1e-30))) {
    TP_FAILF("%s: max|got-want| = %.3g at [%lld] (got %.9g, want %.9g), max|want| %.3g, rtol %g",
             what, err, (long long)at, (double)got[at], want[at], mx, rtol);
    return false;
  }
  return true;
}

static double *dup_d(const float *x, int64_t n) {
  double *d = g_new(double, n > 0 ? n : 1);
  for (int64_t i = 0; i < n; i++) d[i] = x[i];
  return d;
}

/* ------------------------------------------------------------ plugin */

TP_TEST(VulkanPlugin, ProbeFillsEveryField) {
  SETUP();
  TP_CHECK(INFO.name[0] != '\0');
  TP_CHECK(strstr(INFO.description, "Vulkan 1.") != NULL);
  TP_CHECK(INFO.memory_bytes > 0);
  TP_CHECK(INFO.max_alloc_bytes > 0 && INFO.max_alloc_bytes <= INFO.memory_bytes);
  TP_CHECK(INFO.max_binding_bytes >= 1u << 20 && INFO.max_binding_bytes % 16 == 0);
  TP_CHECK(INFO.offset_align >= 4 && (INFO.offset_align & (INFO.offset_align - 1)) == 0);
  TP_CHECK(INFO.storage_dtypes & TP_DTYPE_BIT(TP_F32));
  TP_CHECK(INFO.storage_dtypes & TP_DTYPE_BIT(TP_I32));
  TP_CHECK(INFO.gemm_compute & TP_DTYPE_BIT(TP_F32));
  TP_CHECK(strstr(INFO.features, "subgroup") != NULL);
  /* a CPU implementation says so (lavapipe is one) */
  if (strstr(INFO.name, "llvmpipe")) {
    TP_CHECK(INFO.is_software);
    TP_CHECK(!INFO.is_discrete);
    TP_CHECK(strstr(INFO.description, "CPU implementation") != NULL);
    TP_CHECK(strstr(INFO.description, "driver llvmpipe") != NULL);
  }
  GError *err = NULL;
  TP_CHECK(B->open(99, 0, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_UNAVAILABLE, "device 99 does not exist");
}

TP_TEST(VulkanPlugin, UploadDownloadCopyAcrossStagingChunks) {
  SETUP();
  /* 20 MiB: more than a staging chunk, so uploads and downloads split */
  size_t n = (size_t)5 << 20;
  uint32_t *h = g_new(uint32_t, n), *back = g_new0(uint32_t, n);
  for (size_t i = 0; i < n; i++) h[i] = (uint32_t)(i * 2654435761u);
  dt t = dt_new(h, n * 4, 12);
  TP_ASSERT(get(back, t));
  TP_CHECK(memcmp(h, back, n * 4) == 0);
  /* an odd byte range, then an overlapping copy forwards and backwards */
  GError *err = NULL;
  TP_CHECK(B->copy(D, (tp_mem){t.b, t.off + 3}, (tp_mem){t.b, t.off}, 1001, &err));
  TP_CHECK(B->copy(D, (tp_mem){t.b, t.off + 5000}, (tp_mem){t.b, t.off + 5003}, 4096, &err));
  TP_ASSERT_NO_ERROR(err);
  TP_ASSERT(get(back, t));
  guint8 *want = g_memdup2(h, n * 4);
  memmove(want + 3, want, 1001);
  memmove(want + 5000, want + 5003, 4096);
  TP_CHECK(memcmp(want, back, n * 4) == 0);
  /* out of range is an error, not a crash */
  TP_CHECK(!B->upload(D, (tp_mem){t.b, t.b ? n * 4 + 20 : 0}, h, 64, &err));
  TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "exceed the buffer");
  dt_free(&t);
  g_free(want);
  g_free(h);
  g_free(back);
}

/* Many queued kernels (more than one batch), frees of buffers still in use,
 * one read-back: the order of calls is the order of effects. */
TP_TEST(VulkanPlugin, QueueOrderAcrossBatchesAndDeferredFrees) {
  SETUP();
  enum { N = 1000, STEPS = 600 };
  float ones[N], got[N];
  for (int i = 0; i < N; i++) ones[i] = 1.0f;
  dt acc = dt_f32(NULL, N);
  B->k.fill(D, M(acc), 0.0f, N);
  for (int s = 0; s < STEPS; s++) {
    dt x = dt_f32(ones, N); /* uploaded, used, freed before the work ran */
    B->k.axpy(D, M(acc), M(x), 0.5f, N);
    dt_free(&x);
  }
  TP_ASSERT(get(got, acc));
  int bad = 0;
  for (int i = 0; i < N; i++) bad += got[i] != 0.5f * STEPS;
  TP_CHECK_INT_EQ(bad, 0);
  dt_free(&acc);
}

TP_TEST(VulkanPlugin, HugeAllocationIsOutOfMemory) {
  SETUP();
  GError *err = NULL;
  tp_buffer *b = B->buffer_alloc(D, (size_t)INFO.max_alloc_bytes + 1, &err);
  TP_CHECK(b == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_OUT_OF_MEMORY, "smaller --batch");
}

TP_TEST(VulkanPlugin, KernelErrorsSurfaceAtSynchronize) {
  SETUP();
  float tab[12] = {0}, out[8];
  int32_t ids[2] = {1, 7}, labels[2] = {0, 5};
  dt t = dt_f32(tab, 12), o = dt_f32(NULL, 8), id = dt_i32(ids, 2), lab = dt_i32(labels, 2);
  B->k.embedding_fwd(D, M(o), M(t), M(id), 2, 4, 0, 3, 3);
  GError *err = NULL;
  TP_CHECK(!B->synchronize(D, &err));
  TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "id 7 at position 1");
  TP_CHECK(sync_ok()); /* reported once */
  B->k.cross_entropy_fwd(D, M(o), M(t), M(lab), 2, 3);
  TP_CHECK(!B->download(D, out, M(o), 4, &err));
  TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "label 5 at position 1");
  B->k.count_correct(D, M(o), M(t), M(lab), 2, 3);
  TP_CHECK(!B->synchronize(D, &err));
  TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "count_correct");
  B->k.cast(D, M(o), TP_I32, M(t), TP_F32, 2);
  TP_CHECK(!B->synchronize(D, &err));
  TP_CHECK_ERROR(err, TP_ERROR_UNAVAILABLE, "cast");
  TP_CHECK(sync_ok());
  dt_free(&t);
  dt_free(&o);
  dt_free(&id);
  dt_free(&lab);
}

/* ------------------------------------------------------------ gemm */

static uint16_t to_half(float f, tp_dtype t) {
  return t == TP_BF16 ? tp_f32_to_bf16(f) : tp_f32_to_f16(f);
}
static float from_half(uint16_t h, tp_dtype t) {
  return t == TP_BF16 ? tp_bf16_to_f32(h) : tp_f16_to_f32(h);
}
static float round_ct(float v, tp_dtype ct) {
  return ct == TP_F32 ? v : from_half(to_half(v, ct), ct);
}

typedef struct {
  bool ta, tb;
  int m, n, k, batch, pad;
  float alpha, beta;
  bool sum_batches; /* sc == 0 */
  tp_dtype ab, c, compute;
  bool aligned; /* A and B start 16-byte aligned, strides multiples of 4 */
} gemm_case;

static void run_gemm(GRand *r, gemm_case gc) {
  int m = gc.m, n = gc.n, k = gc.k;
  int ar = gc.ta ? k : m, ac = gc.ta ? m : k, br = gc.tb ? n : k, bc = gc.tb ? k : n;
  int lda = ac + gc.pad, ldb = bc + gc.pad, ldc = n + gc.pad;
  int64_t sa = (int64_t)ar * lda + 3, sb = (int64_t)br * ldb + 1;
  if (gc.aligned) {
    lda = (lda + 3) / 4 * 4;
    ldb = (ldb + 3) / 4 * 4;
    sa = (int64_t)ar * lda + 4;
    sb = (int64_t)br * ldb + 8;
  }
  int64_t sc = gc.sum_batches ? 0 : (int64_t)m * ldc + 2;
  int64_t na = sa * gc.batch, nb = sb * gc.batch, nc = gc.sum_batches ? (int64_t)m * ldc : sc * gc.batch;
  float *a = rnd(r, na, -1, 1), *b = rnd(r, nb, -1, 1), *c = rnd(r, nc, -1, 1);
  /* storage rounding first: the reference sees what the device holds */
  size_t es_ab = gc.ab == TP_F32 ? 4 : 2, es_c = gc.c == TP_F32 ? 4 : 2;
  void *ha = g_malloc(es_ab * (size_t)na), *hb = g_malloc(es_ab * (size_t)nb),
       *hc = g_malloc(es_c * (size_t)nc);
  for (int64_t i = 0; i < na; i++) {
    if (gc.ab == TP_F32) ((float *)ha)[i] = a[i];
    else a[i] = from_half(((uint16_t *)ha)[i] = to_half(a[i], gc.ab), gc.ab);
  }
  for (int64_t i = 0; i < nb; i++) {
    if (gc.ab == TP_F32) ((float *)hb)[i] = b[i];
    else b[i] = from_half(((uint16_t *)hb)[i] = to_half(b[i], gc.ab), gc.ab);
  }
  for (int64_t i = 0; i < nc; i++) {
    if (gc.beta == 0.0f && i % 7 == 0) c[i] = NAN; /* beta 0 never reads C */
    if (gc.c == TP_F32) ((float *)hc)[i] = c[i];
    else c[i] = from_half(((uint16_t *)hc)[i] = to_half(c[i], gc.c), gc.c);
  }
  double *want = dup_d(c, nc);
  for (int bt = 0; bt < (gc.sum_batches ? 1 : gc.batch); bt++)
    for (int i = 0; i < m; i++)
      for (int j = 0; j < n; j++) {
        int64_t o = bt * sc + (int64_t)i * ldc + j;
        want[o] = gc.beta == 0.0f ? 0.0 : (double)gc.beta * c[o];
      }
  for (int bt = 0; bt < gc.batch; bt++)
    for (int i = 0; i < m; i++)
      for (int j = 0; j < n; j++) {
        double s = 0;
        for (int l = 0; l < k; l++) {
          float av = gc.ta ? a[bt * sa + (int64_t)l * lda + i] : a[bt * sa + (int64_t)i * lda + l];
          float bv = gc.tb ? b[bt * sb + (int64_t)j * ldb + l] : b[bt * sb + (int64_t)l * ldb + j];
          s += (double)round_ct(av, gc.compute) * round_ct(bv, gc.compute);
        }
        want[bt * sc + (int64_t)i * ldc + j] += gc.alpha * s;
      }
  dt da = dt_new(ha, es_ab * (size_t)na, gc.aligned ? 16 : gc.ab == TP_F32 ? 4 : 6);
  dt db = dt_new(hb, es_ab * (size_t)nb, gc.aligned ? 32 : 8);
  dt dc = dt_new(hc, es_c * (size_t)nc, gc.c == TP_F32 ? 12 : 2);
  tp_gemm_args g = {.ta = gc.ta, .tb = gc.tb, .m = m, .n = n, .k = k, .batch = gc.batch,
                    .alpha = gc.alpha, .beta = gc.beta, .a = M(da), .b = M(db), .c = M(dc),
                    .lda = lda, .ldb = ldb, .ldc = ldc, .sa = sa, .sb = sb, .sc = sc,
                    .ab_dtype = gc.ab, .c_dtype = gc.c, .compute = gc.compute};
  B->k.gemm(D, &g);
  void *got = g_malloc(es_c * (size_t)nc);
  if (get(got, dc)) {
    float *gf = g_new(float, nc);
    /* entries outside C's m x n blocks (padding) must be untouched */
    bool pad_ok = true;
    for (int64_t i = 0; i < nc; i++) {
      gf[i] = gc.c == TP_F32 ? ((float *)got)[i] : from_half(((uint16_t *)got)[i], gc.c);
      int64_t in_b = sc ? i % sc : i;
      bool inside = in_b / ldc < m && in_b % ldc < n && (!sc || in_b < (int64_t)m * ldc);
      if (!inside && memcmp(&gf[i], &c[i], 4) != 0 && !(isnan(gf[i]) && isnan(c[i])))
        pad_ok = false;
      if (!inside) gf[i] = (float)(want[i] = 0.0); /* compared above */
    }
    TP_CHECK(pad_ok);
    double rtol = gc.c == TP_F32 ? 1e-4 : (gc.c == TP_BF16 ? 1e-2 : 2e-3);
    char *what = g_strdup_printf("gemm ta=%d tb=%d m=%d n=%d k=%d batch=%d sc=%lld ab=%d c=%d "
                                 "compute=%d",
                                 gc.ta, gc.tb, m, n, k, gc.batch, (long long)sc, gc.ab, gc.c,
                                 gc.compute);
    close_rel(what, gf, want, nc, rtol);
    g_free(what);
    g_free(gf);
  }
  g_free(got);
  dt_free(&da);
  dt_free(&db);
  dt_free(&dc);
  g_free(a);
  g_free(b);
  g_free(c);
  g_free(ha);
  g_free(hb);
  g_free(hc);
  g_free(want);
}

/* The device's other GEMM kernel (shared-memory tiles on a CPU
 * implementation, register blocks on a GPU), opened once. */
static tp_backend_dev *other_gemm_device(void) {
  static tp_backend_dev *other;
  if (other) return other;
  g_setenv("TENSORPLUG_VULKAN_GEMM", INFO.is_software ? "tiled" : "reg", TRUE);
  GError *err = NULL;
  other = B->open(0, 0, &err);
  g_unsetenv("TENSORPLUG_VULKAN_GEMM");
  if (!other) {
    TP_FAILF("open with the other GEMM kernel: %s", err->message);
    g_error_free(err);
  }
  return other;
}

TP_TEST(VulkanGemm, F32AllTransposesOddShapesBothKernels) {
  SETUP();
  GRand *r = g_rand_new_with_seed(1);
  /* the last three are skinny (a subgroup per element on GPUs) */
  static const int dims[][3] = {{1, 1, 1},    {1, 7, 3},     {5, 1, 9},  {17, 13, 1},
                                {65, 33, 70}, {3, 130, 17},  {64, 64, 64}, {2, 37, 100},
                                {33, 3, 70},  {1, 1, 200}};
  tp_backend_dev *devs[2] = {D, other_gemm_device()};
  for (int dv = 0; dv < 2 && devs[dv]; dv++) {
    tp_backend_dev *saved = D;
    D = devs[dv];
    for (int t = 0; t < 8; t++)
      for (size_t s = 0; s < G_N_ELEMENTS(dims); s++)
        run_gemm(r, (gemm_case){t & 1, (t >> 1) & 1, dims[s][0], dims[s][1], dims[s][2], 1,
                                (int)s % 3, 0.75f, s % 2 ? 0.5f : 0.0f, false, TP_F32, TP_F32,
                                TP_F32, t >> 2});
    run_gemm(r, (gemm_case){false, true, 9, 11, 13, 3, 1, 1.0f, 0.0f, false, TP_F32, TP_F32,
                            TP_F32, true});
    run_gemm(r, (gemm_case){true, false, 9, 11, 13, 4, 2, 1.0f, 1.0f, true, TP_F32, TP_F32, TP_F32,
                            true});
    run_gemm(r, (gemm_case){false, true, 19, 21, 35, 2, 1, 1.0f, 0.0f, false, TP_F32, TP_F32,
                            TP_BF16, true});
    /* a long inner dimension */
    run_gemm(r, (gemm_case){true, false, 130, 65, 2100, 1, 0, 1.0f, 1.0f, false, TP_F32, TP_F32,
                            TP_F32, false});
    D = saved;
  }
  g_rand_free(r);
}

TP_TEST(VulkanGemm, BatchesSummedIntoOneCAndKZero) {
  SETUP();
  GRand *r = g_rand_new_with_seed(2);
  run_gemm(r, (gemm_case){false, true, 9, 11, 13, 3, 1, 1.0f, 0.0f, false, TP_F32, TP_F32, TP_F32, false});
  run_gemm(r, (gemm_case){true, false, 9, 11, 13, 4, 2, 1.0f, 1.0f, true, TP_F32, TP_F32, TP_F32, false});
  run_gemm(r, (gemm_case){false, false, 5, 6, 7, 3, 0, 0.5f, 0.0f, true, TP_F32, TP_F32, TP_F32, false});
  run_gemm(r, (gemm_case){false, false, 5, 6, 0, 2, 1, 1.0f, 0.5f, false, TP_F32, TP_F32, TP_F32, false});
  run_gemm(r, (gemm_case){false, false, 5, 6, 0, 2, 1, 1.0f, 0.0f, false, TP_F32, TP_F32, TP_F32, false});
  g_rand_free(r);
}

TP_TEST(VulkanGemm, HalfComputeAndStorage) {
  SETUP();
  GRand *r = g_rand_new_with_seed(3);
  for (int ct = TP_BF16; ct <= TP_F16; ct++)
    run_gemm(r, (gemm_case){false, true, 19, 21, 35, 2, 1, 1.0f, 0.0f, false, TP_F32, TP_F32,
                            (tp_dtype)ct, false});
  if (!(INFO.storage_dtypes & TP_DTYPE_BIT(TP_BF16))) {
    g_rand_free(r);
    TP_SKIP("no 16-bit storage on this device");
  }
  for (int st = TP_BF16; st <= TP_F16; st++) {
    run_gemm(r, (gemm_case){true, false, 19, 21, 35, 2, 1, 1.0f, 0.0f, false, (tp_dtype)st,
                            TP_F32, TP_F32, false});
    run_gemm(r, (gemm_case){false, false, 19, 21, 35, 2, 1, 1.0f, 1.0f, false, (tp_dtype)st,
                            (tp_dtype)st, (tp_dtype)st, false});
    run_gemm(r, (gemm_case){false, true, 7, 9, 5, 1, 0, 1.0f, 0.5f, false, TP_F32, (tp_dtype)st,
                            TP_F32, false});
  }
  g_rand_free(r);
}

/* ------------------------------------------------------------ elementwise */

static double ref_gelu(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }
static double ref_gelu_d(double x) {
  return 0.5 * (1.0 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) / sqrt(2.0 * G_PI);
}

static void check_Activations(void);
TP_TEST(VulkanKernels, Activations) {
  SETUP();
  BOTH_ALIGNMENTS(check_Activations());
}

static void check_Activations(void) {
  enum { N = 5003 };
  GRand *r = g_rand_new_with_seed(4);
  float *x = rnd(r, N, -6, 6), *dy = rnd(r, N, -1, 1), *acc = rnd(r, N, -1, 1);
  x[0] = 0.0f;
  x[1] = 1e-4f;
  x[2] = -30.0f;
  x[3] = 30.0f;
  dt dx_ = dt_f32(x, N), ddy = dt_f32(dy, N), y = dt_f32(NULL, N);
  double *want = g_new(double, N);
  for (int op = 0; op < 6; op++) {
    dt out = op % 2 ? dt_f32(acc, N) : y;
    const char *name = (const char *[]){"gelu_fwd", "gelu_bwd", "relu_fwd", "relu_bwd", "tanh_fwd",
                                        "tanh_bwd"}[op];
    for (int i = 0; i < N; i++) {
      double xv = x[i], g = dy[i];
      switch (op) {
      case 0: want[i] = ref_gelu(xv); break;
      case 1: want[i] = acc[i] + g * ref_gelu_d(xv); break;
      case 2: want[i] = xv > 0 ? xv : 0; break;
      case 3: want[i] = acc[i] + (xv > 0 ? g : 0); break;
      case 4: want[i] = tanh(xv); break;
      case 5: want[i] = acc[i] + g * (1.0 - xv * xv); break; /* tanh_bwd uses y: x here */
      }
    }
    switch (op) {
    case 0: B->k.gelu_fwd(D, M(out), M(dx_), N); break;
    case 1: B->k.gelu_bwd(D, M(out), M(ddy), M(dx_), N); break;
    case 2: B->k.relu_fwd(D, M(out), M(dx_), N); break;
    case 3: B->k.relu_bwd(D, M(out), M(ddy), M(dx_), N); break;
    case 4: B->k.tanh_fwd(D, M(out), M(dx_), N); break;
    case 5: B->k.tanh_bwd(D, M(out), M(ddy), M(dx_), N); break;
    }
    float *got = get_f32(out);
    close_rel(name, got, want, N, 1e-5);
    /* elementwise: also each element on its own scale */
    int bad = 0;
    for (int i = 0; i < N; i++) bad += !(fabs(got[i] - want[i]) <= 1e-5 * fabs(want[i]) + 1e-6);
    if (bad) TP_FAILF("%s: %d elements off by more than 1e-5 relative", name, bad);
    g_free(got);
    if (op % 2) dt_free(&out);
  }
  dt_free(&dx_);
  dt_free(&ddy);
  dt_free(&y);
  g_free(x);
  g_free(dy);
  g_free(acc);
  g_free(want);
  g_rand_free(r);
}

static void check_AddAxpyFillBias(void);
TP_TEST(VulkanKernels, AddAxpyFillBias) {
  SETUP();
  BOTH_ALIGNMENTS(check_AddAxpyFillBias());
}

static void check_AddAxpyFillBias(void) {
  enum { ROWS = 37, COLS = 29, N = ROWS * COLS };
  GRand *r = g_rand_new_with_seed(5);
  float *a = rnd(r, N, -2, 2), *b = rnd(r, N, -2, 2), *bias = rnd(r, COLS, -1, 1);
  double *want = g_new(double, N);
  dt da = dt_f32(a, N), db = dt_f32(b, N), dbias = dt_f32(bias, COLS), y = dt_f32(NULL, N);
  B->k.add(D, M(y), M(da), M(db), N);
  for (int i = 0; i < N; i++) want[i] = (double)a[i] + b[i];
  float *got = get_f32(y);
  close_rel("add", got, want, N, 1e-6);
  g_free(got);
  B->k.add(D, M(da), M(da), M(db), N); /* y aliases a */
  got = get_f32(da);
  close_rel("add in place", got, want, N, 1e-6);
  g_free(got);
  B->k.axpy(D, M(y), M(db), -0.25f, N);
  for (int i = 0; i < N; i++) want[i] += -0.25 * b[i];
  got = get_f32(y);
  close_rel("axpy", got, want, N, 1e-6);
  g_free(got);
  B->k.bias_add(D, M(y), M(dbias), ROWS, COLS);
  for (int i = 0; i < N; i++) want[i] += bias[i % COLS];
  got = get_f32(y);
  close_rel("bias_add", got, want, N, 1e-6);
  g_free(got);
  /* bias_grad over many rows: the chunked column sums (two levels) */
  enum { GR = 64 * 64 + 70 };
  float *g = rnd(r, (int64_t)GR * COLS, -1, 1);
  dt dg = dt_f32(g, (int64_t)GR * COLS);
  double wb[COLS];
  for (int c = 0; c < COLS; c++) {
    wb[c] = bias[c];
    for (int rr = 0; rr < GR; rr++) wb[c] += g[(int64_t)rr * COLS + c];
  }
  B->k.bias_grad(D, M(dbias), M(dg), GR, COLS);
  got = get_f32(dbias);
  close_rel("bias_grad", got, wb, COLS, 1e-4);
  g_free(got);
  B->k.fill(D, M(y), 2.5f, N - 1);
  got = get_f32(y);
  int bad = 0;
  for (int i = 0; i < N - 1; i++) bad += got[i] != 2.5f;
  TP_CHECK_INT_EQ(bad, 0);
  TP_CHECK(got[N - 1] != 2.5f);
  g_free(got);
  dt_free(&da);
  dt_free(&db);
  dt_free(&dbias);
  dt_free(&y);
  dt_free(&dg);
  g_free(a);
  g_free(b);
  g_free(bias);
  g_free(g);
  g_free(want);
  g_rand_free(r);
}

static void check_DropoutIsThePhiloxStream(void);
TP_TEST(VulkanKernels, DropoutIsThePhiloxStream) {
  SETUP();
  BOTH_ALIGNMENTS(check_DropoutIsThePhiloxStream());
}

static void check_DropoutIsThePhiloxStream(void) {
  enum { N = 4099 };
  GRand *r = g_rand_new_with_seed(6);
  float *x = rnd(r, N, -1, 1), *acc = rnd(r, N, -1, 1);
  const float ps[] = {0.0f, 0.1f, 0.5f, 1.0f};
  /* an offset whose low word wraps inside the call */
  const uint64_t seed = 0x123456789abcdefull, offset = 0xfffffff0ull;
  dt dx_ = dt_f32(x, N), y = dt_f32(NULL, N), dacc = dt_f32(acc, N);
  for (size_t t = 0; t < G_N_ELEMENTS(ps); t++) {
    float p = ps[t], scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    B->k.dropout_fwd(D, M(y), M(dx_), N, p, seed, offset);
    B->k.dropout_bwd(D, M(dacc), M(dx_), N, p, seed, offset);
    float *got = get_f32(y), *gacc = get_f32(dacc);
    int bad = 0;
    for (int i = 0; i < N; i++) {
      bool keep = tp_philox_uniform(seed, offset + (uint64_t)i) >= p;
      float w = keep ? x[i] * scale : 0.0f;
      bad += got[i] != w;
      acc[i] += w;
      bad += gacc[i] != acc[i];
    }
    if (bad) TP_FAILF("dropout p=%g: %d elements differ from the Philox formula", (double)p, bad);
    g_free(got);
    g_free(gacc);
  }
  dt_free(&dx_);
  dt_free(&y);
  dt_free(&dacc);
  g_free(x);
  g_free(acc);
  g_rand_free(r);
}

TP_TEST(VulkanKernels, PermuteAndFirstToken) {
  SETUP();
  enum { D0 = 2, D1 = 5, D2 = 3, D3 = 7, N = D0 * D1 * D2 * D3 };
  GRand *r = g_rand_new_with_seed(7);
  float *x = rnd(r, N, -1, 1), *y0 = rnd(r, N, -1, 1);
  double want[N];
  dt dx_ = dt_f32(x, N), dy = dt_f32(y0, N);
  for (int beta = 0; beta <= 1; beta++) {
    float *cur = get_f32(dy);
    for (int i0 = 0; i0 < D0; i0++)
      for (int i1 = 0; i1 < D1; i1++)
        for (int i2 = 0; i2 < D2; i2++)
          for (int i3 = 0; i3 < D3; i3++) {
            int yi = ((i0 * D2 + i2) * D1 + i1) * D3 + i3, xi = ((i0 * D1 + i1) * D2 + i2) * D3 + i3;
            want[yi] = x[xi] + beta * (double)cur[yi];
          }
    B->k.permute_0213(D, M(dy), M(dx_), D0, D1, D2, D3, (float)beta);
    float *got = get_f32(dy);
    close_rel("permute_0213", got, want, N, 1e-6);
    g_free(got);
    g_free(cur);
  }
  /* first token: x [2, 5, 21] */
  enum { BT = 2, SEQ = 5, H = 21 };
  dt ft = dt_f32(NULL, BT * H);
  B->k.first_token_fwd(D, M(ft), M(dx_), BT, SEQ, H);
  float *got = get_f32(ft);
  double wf[BT * H];
  for (int b = 0; b < BT; b++)
    for (int c = 0; c < H; c++) wf[b * H + c] = x[b * SEQ * H + c];
  close_rel("first_token_fwd", got, wf, BT * H, 0);
  B->k.first_token_bwd(D, M(dx_), M(ft), BT, SEQ, H);
  float *gx = get_f32(dx_);
  double *wx = dup_d(x, BT * SEQ * H);
  for (int b = 0; b < BT; b++)
    for (int c = 0; c < H; c++) wx[b * SEQ * H + c] += got[b * H + c];
  close_rel("first_token_bwd", gx, wx, BT * SEQ * H, 1e-6);
  g_free(got);
  g_free(gx);
  g_free(wx);
  dt_free(&ft);
  dt_free(&dx_);
  dt_free(&dy);
  g_free(x);
  g_free(y0);
  g_rand_free(r);
}

/* ------------------------------------------------------------ row kernels */

TP_TEST(VulkanKernels, EmbeddingRowRangesAndRepeatedIds) {
  SETUP();
  enum { V = 11, H = 37, N = 9, ROW0 = 3, ROWS = 5 };
  GRand *r = g_rand_new_with_seed(8);
  int32_t ids[N] = {4, 3, 7, 4, 0, 10, 4, 5, 7};
  float *tab = rnd(r, (int64_t)ROWS * H, -1, 1), *out0 = rnd(r, (int64_t)N * H, -1, 1);
  float *dout = rnd(r, (int64_t)N * H, -1, 1);
  dt dtab = dt_f32(tab, (int64_t)ROWS * H), dout_ = dt_f32(out0, (int64_t)N * H),
     did = dt_i32(ids, N), dg = dt_f32(dout, (int64_t)N * H);
  B->k.embedding_fwd(D, M(dout_), M(dtab), M(did), N, H, ROW0, ROWS, V);
  float *got = get_f32(dout_);
  double *want = dup_d(out0, (int64_t)N * H);
  for (int i = 0; i < N; i++)
    if (ids[i] >= ROW0 && ids[i] < ROW0 + ROWS)
      for (int c = 0; c < H; c++) want[i * H + c] = tab[(ids[i] - ROW0) * H + c];
  close_rel("embedding_fwd", got, want, (int64_t)N * H, 0);
  g_free(got);
  g_free(want);
  B->k.embedding_bwd(D, M(dtab), M(dg), M(did), N, H, ROW0, ROWS, V);
  got = get_f32(dtab);
  want = dup_d(tab, (int64_t)ROWS * H);
  for (int i = 0; i < N; i++)
    if (ids[i] >= ROW0 && ids[i] < ROW0 + ROWS)
      for (int c = 0; c < H; c++) want[(ids[i] - ROW0) * H + c] += dout[i * H + c];
  close_rel("embedding_bwd", got, want, (int64_t)ROWS * H, 1e-6);
  g_free(got);
  g_free(want);
  dt_free(&dtab);
  dt_free(&dout_);
  dt_free(&did);
  dt_free(&dg);
  g_free(tab);
  g_free(out0);
  g_free(dout);
  g_rand_free(r);
}

static void check_LayernormForwardBackward(void);
TP_TEST(VulkanKernels, LayernormForwardBackward) {
  SETUP();
  BOTH_ALIGNMENTS(check_LayernormForwardBackward());
}

static void check_LayernormForwardBackward(void) {
  GRand *r = g_rand_new_with_seed(9);
  static const int shapes[][2] = {{1, 1}, {3, 7}, {130, 33}, {5, 777}};
  for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
    int R = shapes[s][0], C = shapes[s][1];
    int64_t n = (int64_t)R * C;
    float *x = rnd(r, n, -3, 5), *g = rnd(r, C, 0.5, 1.5), *be = rnd(r, C, -1, 1);
    float *dy = rnd(r, n, -1, 1), *dx0 = rnd(r, n, -1, 1), *dg0 = rnd(r, C, -1, 1),
          *db0 = rnd(r, C, -1, 1);
    const float eps = 1e-5f;
    dt dx_ = dt_f32(x, n), dgam = dt_f32(g, C), dbet = dt_f32(be, C), y = dt_f32(NULL, n),
       mu = dt_f32(NULL, R), rs = dt_f32(NULL, R);
    B->k.layernorm_fwd(D, M(y), M(mu), M(rs), M(dx_), M(dgam), M(dbet), R, C, eps);
    double *wy = g_new(double, n), *wmu = g_new(double, R), *wrs = g_new(double, R);
    double *wdx = dup_d(dx0, n), *wdg = dup_d(dg0, C), *wdb = dup_d(db0, C);
    for (int i = 0; i < R; i++) {
      double m = 0, v = 0;
      for (int c = 0; c < C; c++) m += x[i * C + c];
      m /= C;
      for (int c = 0; c < C; c++) v += (x[i * C + c] - m) * (x[i * C + c] - m);
      v /= C;
      double rsd = 1.0 / sqrt(v + eps), m1 = 0, m2 = 0;
      wmu[i] = m;
      wrs[i] = rsd;
      for (int c = 0; c < C; c++) {
        double xh = (x[i * C + c] - m) * rsd, dxh = dy[i * C + c] * (double)g[c];
        wy[i * C + c] = xh * g[c] + be[c];
        m1 += dxh;
        m2 += dxh * xh;
        wdg[c] += dy[i * C + c] * xh;
        wdb[c] += dy[i * C + c];
      }
      m1 /= C;
      m2 /= C;
      for (int c = 0; c < C; c++) {
        double xh = (x[i * C + c] - m) * rsd, dxh = dy[i * C + c] * (double)g[c];
        wdx[i * C + c] += rsd * (dxh - m1 - xh * m2);
      }
    }
    float *gy = get_f32(y), *gmu = get_f32(mu), *grs = get_f32(rs);
    close_rel("layernorm y", gy, wy, n, 1e-4);
    close_rel("layernorm mean", gmu, wmu, R, 1e-4);
    close_rel("layernorm rstd", grs, wrs, R, 1e-4);
    dt ddx = dt_f32(dx0, n), ddg = dt_f32(dg0, C), ddb = dt_f32(db0, C), ddy = dt_f32(dy, n);
    B->k.layernorm_bwd(D, M(ddx), M(ddg), M(ddb), M(ddy), M(dx_), M(mu), M(rs), M(dgam), R, C);
    float *gdx = get_f32(ddx), *gdg = get_f32(ddg), *gdb = get_f32(ddb);
    close_rel("layernorm dx", gdx, wdx, n, 1e-4);
    close_rel("layernorm dgamma", gdg, wdg, C, 1e-4);
    close_rel("layernorm dbeta", gdb, wdb, C, 1e-4);
    dt *all[] = {&dx_, &dgam, &dbet, &y, &mu, &rs, &ddx, &ddg, &ddb, &ddy};
    for (size_t i = 0; i < G_N_ELEMENTS(all); i++) dt_free(all[i]);
    void *mem[] = {x, g, be, dy, dx0, dg0, db0, wy, wmu, wrs, wdx, wdg, wdb, gy, gmu, grs, gdx,
                   gdg, gdb};
    for (size_t i = 0; i < G_N_ELEMENTS(mem); i++) g_free(mem[i]);
  }
  g_rand_free(r);
}

static void check_SoftmaxMaskedForwardBackward(void);
TP_TEST(VulkanKernels, SoftmaxMaskedForwardBackward) {
  SETUP();
  BOTH_ALIGNMENTS(check_SoftmaxMaskedForwardBackward());
}

static void check_SoftmaxMaskedForwardBackward(void) {
  enum { BT = 3, NH = 2, R = 5, C = 131, N = BT * NH * R * C };
  GRand *r = g_rand_new_with_seed(10);
  float *x = rnd(r, N, -8, 8), *dy = rnd(r, N, -1, 1), *dx0 = rnd(r, N, -1, 1);
  int32_t mask[BT * C];
  for (int i = 0; i < BT * C; i++) mask[i] = i / C == 2 ? 0 : (i % 5 != 0); /* batch 2: all masked */
  const float scale = 0.7f;
  dt dx_ = dt_f32(x, N), dm = dt_i32(mask, BT * C), y = dt_f32(NULL, N);
  B->k.softmax_fwd(D, M(y), M(dx_), M(dm), BT, NH, R, C, scale);
  double *wy = g_new(double, N), *wdx = dup_d(dx0, N);
  for (int row = 0; row < BT * NH * R; row++) {
    int b = row / (NH * R);
    double mx = -INFINITY, s = 0;
    int live = 0;
    for (int j = 0; j < C; j++)
      if (mask[b * C + j]) {
        mx = fmax(mx, scale * (double)x[row * C + j]);
        live++;
      }
    for (int j = 0; j < C; j++)
      s += mask[b * C + j] ? exp(scale * (double)x[row * C + j] - mx) : 0;
    for (int j = 0; j < C; j++)
      wy[row * C + j] = live == 0 ? 1.0 / C
                                  : (mask[b * C + j] ? exp(scale * (double)x[row * C + j] - mx) / s
                                                     : 0);
  }
  float *gy = get_f32(y);
  close_rel("softmax_fwd", gy, wy, N, 1e-5);
  for (int row = 0; row < BT * NH * R; row++) {
    double dot = 0;
    for (int j = 0; j < C; j++) dot += (double)dy[row * C + j] * gy[row * C + j];
    for (int j = 0; j < C; j++)
      wdx[row * C + j] += scale * gy[row * C + j] * (dy[row * C + j] - dot);
  }
  dt ddx = dt_f32(dx0, N), ddy = dt_f32(dy, N);
  B->k.softmax_bwd(D, M(ddx), M(ddy), M(y), BT, NH, R, C, scale);
  float *gdx = get_f32(ddx);
  close_rel("softmax_bwd", gdx, wdx, N, 1e-4);
  /* no mask */
  B->k.softmax_fwd(D, M(y), M(dx_), (tp_mem){NULL, 0}, 1, 1, 1, C, 1.0f);
  float *g1 = get_f32(y);
  double w1[C], s1 = 0, mx1 = -INFINITY;
  for (int j = 0; j < C; j++) mx1 = fmax(mx1, x[j]);
  for (int j = 0; j < C; j++) s1 += exp(x[j] - mx1);
  for (int j = 0; j < C; j++) w1[j] = exp(x[j] - mx1) / s1;
  close_rel("softmax_fwd (no mask)", g1, w1, C, 1e-5);
  dt *all[] = {&dx_, &dm, &y, &ddx, &ddy};
  for (size_t i = 0; i < G_N_ELEMENTS(all); i++) dt_free(all[i]);
  void *mem[] = {x, dy, dx0, wy, wdx, gy, gdx, g1};
  for (size_t i = 0; i < G_N_ELEMENTS(mem); i++) g_free(mem[i]);
  g_rand_free(r);
}

TP_TEST(VulkanKernels, CrossEntropyAndCountCorrect) {
  SETUP();
  GRand *r = g_rand_new_with_seed(11);
  static const int shapes[][2] = {{1, 2}, {7, 2}, {300, 3}, {5, 1000}};
  for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
    int Bn = shapes[s][0], C = shapes[s][1];
    float *z = rnd(r, (int64_t)Bn * C, -10, 10), *dz0 = rnd(r, (int64_t)Bn * C, -1, 1);
    int32_t *lab = g_new(int32_t, Bn);
    for (int b = 0; b < Bn; b++) lab[b] = g_rand_int_range(r, 0, C);
    if (s < 2) /* gradients start at 0 (as in training): tiny ones keep their digits */
      memset(dz0, 0, sizeof(float) * (size_t)Bn * C);
    if (Bn >= 7) {
      z[0 * C + 0] = NAN; /* a NaN row counts as wrong */
      for (int c = 0; c < C; c++) z[1 * C + c] = 1.0f; /* a tie: the first maximum wins */
      lab[1] = 0;
    }
    float dl = 1.5f;
    dt dzz = dt_f32(z, (int64_t)Bn * C), dlab = dt_i32(lab, Bn), loss = dt_f32(NULL, 1),
       dloss = dt_f32(&dl, 1), ddz = dt_f32(dz0, (int64_t)Bn * C), cnt = dt_f32(NULL, 1);
    B->k.count_correct(D, M(cnt), M(dzz), M(dlab), Bn, C);
    double want_cnt = 0;
    for (int b = 0; b < Bn; b++) {
      int arg = 0;
      bool nan = false;
      for (int c = 0; c < C; c++) {
        nan |= isnan(z[b * C + c]);
        if (z[b * C + c] > z[b * C + arg]) arg = c;
      }
      want_cnt += !nan && arg == lab[b];
    }
    float *gc = get_f32(cnt);
    TP_CHECK(gc[0] == (float)want_cnt);
    g_free(gc);
    if (Bn >= 7) z[0] = 0.5f; /* finite again for the loss */
    upload(M(dzz), z, sizeof(float) * (size_t)Bn * C);
    B->k.cross_entropy_fwd(D, M(loss), M(dzz), M(dlab), Bn, C);
    B->k.cross_entropy_bwd(D, M(ddz), M(dloss), M(dzz), M(dlab), Bn, C);
    double wl = 0, *wdz = dup_d(dz0, (int64_t)Bn * C);
    for (int b = 0; b < Bn; b++) {
      double mx = -INFINITY, se = 0;
      for (int c = 0; c < C; c++) mx = fmax(mx, z[b * C + c]);
      for (int c = 0; c < C; c++) se += exp(z[b * C + c] - mx);
      double lse = mx + log(se);
      wl += lse - z[b * C + lab[b]];
      for (int c = 0; c < C; c++)
        wdz[b * C + c] += dl / Bn * (exp(z[b * C + c] - lse) - (c == lab[b]));
    }
    wl /= Bn;
    float *gl = get_f32(loss), *gdz = get_f32(ddz);
    close_rel("cross_entropy_fwd", gl, &wl, 1, 1e-5);
    close_rel("cross_entropy_bwd", gdz, wdz, (int64_t)Bn * C, 1e-5);
    dt *all[] = {&dzz, &dlab, &loss, &dloss, &ddz, &cnt};
    for (size_t i = 0; i < G_N_ELEMENTS(all); i++) dt_free(all[i]);
    void *mem[] = {z, dz0, lab, wdz, gl, gdz};
    for (size_t i = 0; i < G_N_ELEMENTS(mem); i++) g_free(mem[i]);
  }
  g_rand_free(r);
}

/* ------------------------------------------------------------ optimizer */

static void adam_case(tp_adam_mode mode, bool with_ctl, float ctl_scale, float skip) {
  enum { N = 1037 };
  GRand *r = g_rand_new_with_seed(12);
  float *p = rnd(r, N, -1, 1), *g = rnd(r, N, -1, 1), *m = rnd(r, N, -0.1, 0.1),
        *v = rnd(r, N, 0, 0.01);
  float ctl[TP_CTL_WORDS] = {0};
  ctl[TP_CTL_GRAD_SCALE] = ctl_scale;
  ctl[TP_CTL_SKIP] = skip;
  dt dp = dt_f32(p, N), dg = dt_f32(g, N), dm = dt_f32(m, N), dv = dt_f32(v, N),
     dc = dt_f32(ctl, TP_CTL_WORDS);
  double *wp = dup_d(p, N), *wm = dup_d(m, N), *wv = dup_d(v, N);
  for (int step = 1; step <= 3; step++) {
    tp_adam_args a = {mode, 1e-2f, 0.9f, 0.999f, 1e-7f, 0.01f, step, 0.5f,
                      with_ctl ? M(dc) : (tp_mem){NULL, 0}};
    B->k.adam_step(D, M(dp), M(dg), M(dm), M(dv), N, &a);
    if (with_ctl && skip != 0.0f) continue;
    double gs = 0.5 * (with_ctl ? ctl_scale : 1.0);
    double c1 = 1 - pow(0.9, step), c2 = 1 - pow(0.999, step);
    for (int i = 0; i < N; i++) {
      double gg = gs * g[i];
      wm[i] = 0.9 * wm[i] + 0.1 * gg;
      wv[i] = 0.999 * wv[i] + 0.001 * gg * gg;
      if (mode == TP_ADAM_W)
        wp[i] = wp[i] * (1 - 1e-2 * 0.01) - 1e-2 / c1 * wm[i] / (sqrt(wv[i]) / sqrt(c2) + 1e-7);
      else
        wp[i] -= 1e-2 * sqrt(c2) / c1 * wm[i] / (sqrt(wv[i]) + 1e-7);
    }
  }
  float *gp = get_f32(dp), *gm = get_f32(dm), *gv = get_f32(dv);
  close_rel("adam p", gp, wp, N, 1e-5);
  close_rel("adam m", gm, wm, N, 1e-5);
  close_rel("adam v", gv, wv, N, 1e-5);
  dt *all[] = {&dp, &dg, &dm, &dv, &dc};
  for (size_t i = 0; i < G_N_ELEMENTS(all); i++) dt_free(all[i]);
  void *mem[] = {p, g, m, v, wp, wm, wv, gp, gm, gv};
  for (size_t i = 0; i < G_N_ELEMENTS(mem); i++) g_free(mem[i]);
  g_rand_free(r);
}

static void check_AdamKerasAndWWithControlBlock(void);
TP_TEST(VulkanKernels, AdamKerasAndWWithControlBlock) {
  SETUP();
  BOTH_ALIGNMENTS(check_AdamKerasAndWWithControlBlock());
}

static void check_AdamKerasAndWWithControlBlock(void) {
  adam_case(TP_ADAM_KERAS, false, 1.0f, 0.0f);
  adam_case(TP_ADAM_W, false, 1.0f, 0.0f);
  adam_case(TP_ADAM_W, true, 0.25f, 0.0f);
  adam_case(TP_ADAM_KERAS, true, 0.25f, 1.0f); /* skipped: nothing changes */
}

TP_TEST(VulkanKernels, SumsqThenOptimControlMatchesTheReference) {
  SETUP();
  enum { N = 3 * 4096 + 77 };
  GRand *r = g_rand_new_with_seed(13);
  float *x = rnd(r, N, -1, 1);
  double ss = 0;
  for (int i = 0; i < N; i++) ss += (double)x[i] * x[i];
  dt dx_ = dt_f32(x, N);
  const tp_control_args cases[] = {
      {0.0f, false, 2000, 2.0f, 0.5f},
      {1.0f, false, 2000, 2.0f, 0.5f},
      {1.0f, true, 2, 2.0f, 0.5f},
  };
  for (size_t c = 0; c < G_N_ELEMENTS(cases); c++) {
    float ctl[TP_CTL_WORDS] = {0.5f, 0, 0, 4.0f, 1.0f, 0, 0, 0}, want[TP_CTL_WORDS];
    dt dc = dt_f32(ctl, TP_CTL_WORDS);
    B->k.sumsq(D, M(dc), M(dx_), N); /* += into SUMSQ (0.5 already there) */
    float *got = get_f32(dc);
    double ws = 0.5 + ss;
    close_rel("sumsq", got, &ws, 1, 1e-5);
    memcpy(want, got, sizeof want);
    g_free(got);
    tp_optim_control_host(want, &cases[c]);
    B->k.optim_control(D, M(dc), &cases[c]);
    got = get_f32(dc);
    double wd[TP_CTL_WORDS];
    for (int i = 0; i < TP_CTL_WORDS; i++) wd[i] = want[i];
    close_rel("optim_control", got, wd, TP_CTL_WORDS, 1e-6);
    g_free(got);
    dt_free(&dc);
  }
  /* dynamic scaling with a non-finite sum: skip, back off */
  float bad[TP_CTL_WORDS] = {INFINITY, 1, 0, 1024.0f, 3, 0, 0, 0}, want[TP_CTL_WORDS];
  memcpy(want, bad, sizeof want);
  tp_control_args dyn = {1.0f, true, 2000, 2.0f, 0.5f};
  tp_optim_control_host(want, &dyn);
  dt dc = dt_f32(bad, TP_CTL_WORDS);
  B->k.optim_control(D, M(dc), &dyn);
  float *got = get_f32(dc);
  for (int i = 0; i < TP_CTL_WORDS; i++)
    if (!(got[i] == want[i] || (isnan(got[i]) && isnan(want[i]))))
      TP_FAILF("optim_control (non-finite) word %d: %g vs %g", i, (double)got[i], (double)want[i]);
  g_free(got);
  dt_free(&dc);
  /* nonfinite */
  int32_t zero = 0;
  dt flag = dt_i32(&zero, 1);
  B->k.nonfinite(D, M(flag), M(dx_), N);
  int32_t f = -1;
  TP_CHECK(get(&f, flag) && f == 0);
  x[N - 3] = -INFINITY;
  upload(M(dx_), x, sizeof(float) * N);
  B->k.nonfinite(D, M(flag), M(dx_), N);
  TP_CHECK(get(&f, flag) && f == 1);
  dt_free(&flag);
  dt_free(&dx_);
  g_free(x);
  g_rand_free(r);
}

TP_TEST(VulkanKernels, CastsRoundToNearestEven) {
  SETUP();
  if (!(INFO.storage_dtypes & TP_DTYPE_BIT(TP_BF16))) TP_SKIP("no 16-bit storage on this device");
  GRand *r = g_rand_new_with_seed(14);
  enum { N = 4096 };
  float *x = g_new(float, N);
  for (int i = 0; i < N; i++) {
    uint32_t u = g_rand_int(r);
    memcpy(&x[i], &u, 4); /* every bit pattern: NaN, Inf, subnormals, ties */
  }
  const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 65504.0f, 65520.0f, 6e-8f,
                           3e-8f, 1e-45f, 1.00390625f, 1.01171875f};
  memcpy(x, special, sizeof special);
  dt dx_ = dt_f32(x, N);
  for (int t = TP_BF16; t <= TP_F16; t++) {
    dt h = dt_new(NULL, 2 * N, 6), back = dt_f32(NULL, N);
    B->k.cast(D, M(h), (tp_dtype)t, M(dx_), TP_F32, N);
    B->k.cast(D, M(back), TP_F32, M(h), (tp_dtype)t, N);
    uint16_t *gh = g_new(uint16_t, N);
    float *gb = get_f32(back);
    int bad = 0;
    if (get(gh, h))
      for (int i = 0; i < N; i++) {
        uint16_t want = to_half(x[i], (tp_dtype)t);
        float wb = from_half(want, (tp_dtype)t);
        bool nan = isnan(x[i]);
        if (nan ? !isnan(from_half(gh[i], (tp_dtype)t)) : gh[i] != want) bad++;
        if (nan ? !isnan(gb[i]) : memcmp(&gb[i], &wb, 4) != 0) bad++;
        if (bad && bad < 4 && (nan ? 0 : gh[i] != want))
          TP_FAILF("cast %s: x=%a (0x%08x) got 0x%04x want 0x%04x", t == TP_BF16 ? "bf16" : "f16",
                   (double)x[i], *(uint32_t *)&x[i], gh[i], want);
      }
    TP_CHECK_INT_EQ(bad, 0);
    /* 16 -> 16 of the same type is a copy; bf16 -> f16 goes through f32 */
    dt h2 = dt_new(NULL, 2 * N, 2);
    B->k.cast(D, M(h2), (tp_dtype)t, M(h), (tp_dtype)t, N);
    uint16_t *g2 = g_new(uint16_t, N);
    TP_CHECK(get(g2, h2) && memcmp(g2, gh, 2 * N) == 0);
    g_free(g2);
    g_free(gh);
    g_free(gb);
    dt_free(&h);
    dt_free(&h2);
    dt_free(&back);
  }
  dt_free(&dx_);
  g_free(x);
  g_rand_free(r);
}

/* ------------------------------------------------------------ attention */

/* The composed reference in double: S = scale q k^T + bias, masked softmax
 * (all-masked entry: uniform), dropout with the Philox counters, out = P'v;
 * backward through the same graph. */
typedef struct {
  int Bn, NH, TQ, TK, HD, LDQ, LDKV;
  bool mask, bias;
  float p;
} att_case;

static void run_attention(GRand *r, att_case ac) {
  int Bn = ac.Bn, NH = ac.NH, TQ = ac.TQ, TK = ac.TK, HD = ac.HD, LDQ = ac.LDQ, LDKV = ac.LDKV;
  int H = NH * HD;
  int64_t nq = (int64_t)Bn * TQ * LDQ, nk = (int64_t)Bn * TK * LDKV, no = (int64_t)Bn * TQ * H,
          nb = (int64_t)NH * TQ * TK;
  float *q = rnd(r, nq, -1, 1), *k = rnd(r, nk, -1, 1), *v = rnd(r, nk, -1, 1);
  float *bias = rnd(r, nb, -1, 1), *dout = rnd(r, no, -1, 1);
  float *dq0 = rnd(r, nq, -1, 1), *dk0 = rnd(r, nk, -1, 1), *dv0 = rnd(r, nk, -1, 1),
        *db0 = rnd(r, nb, -1, 1);
  int32_t *mask = g_new(int32_t, Bn * TK);
  for (int i = 0; i < Bn * TK; i++) mask[i] = (i / TK == 1) ? 0 : (i % 3 != 1); /* b=1 all masked */
  const float scale = 1.0f / sqrtf((float)HD);
  const uint64_t seed = 77, offset = 1000;
  float dscale = 1.0f / (1.0f - ac.p);
  double *wo = g_new0(double, no), *wl = g_new0(double, (int64_t)Bn * NH * TQ);
  double *wdq = dup_d(dq0, nq), *wdk = dup_d(dk0, nk), *wdv = dup_d(dv0, nk), *wdb = dup_d(db0, nb);
  double *P = g_new(double, TK), *Z = g_new(double, TK), *S = g_new(double, TK);
#define QA(b, i, h, d) ((int64_t)((b) * TQ + (i)) * LDQ + (h) * HD + (d))
#define KA(b, j, h, d) ((int64_t)((b) * TK + (j)) * LDKV + (h) * HD + (d))
#define OA(b, i, h, d) ((int64_t)((b) * TQ + (i)) * H + (h) * HD + (d))
  for (int b = 0; b < Bn; b++) {
    bool all = ac.mask;
    for (int j = 0; j < TK; j++) all &= !mask[b * TK + j];
    for (int h = 0; h < NH; h++)
      for (int i = 0; i < TQ; i++) {
        double mx = -INFINITY, s = 0;
        for (int j = 0; j < TK; j++) {
          double dot = 0;
          for (int d = 0; d < HD; d++) dot += (double)q[QA(b, i, h, d)] * k[KA(b, j, h, d)];
          S[j] = scale * dot + (ac.bias ? bias[(h * TQ + i) * TK + j] : 0);
          if (!ac.mask || mask[b * TK + j]) mx = fmax(mx, S[j]);
        }
        for (int j = 0; j < TK; j++) {
          bool on = !ac.mask || mask[b * TK + j];
          P[j] = all ? 1.0 : (on ? exp(S[j] - mx) : 0);
          s += P[j];
        }
        wl[(b * NH + h) * TQ + i] = all ? log((double)TK) : mx + log(s);
        for (int j = 0; j < TK; j++) {
          P[j] /= s;
          uint64_t ctr = offset + (((uint64_t)(b * NH + h) * TQ + i) * TK + j);
          Z[j] = ac.p == 0.0f ? 1.0 : (tp_philox_uniform(seed, ctr) >= ac.p ? dscale : 0.0);
        }
        double D_ = 0;
        for (int d = 0; d < HD; d++) {
          double o = 0;
          for (int j = 0; j < TK; j++) o += P[j] * Z[j] * v[KA(b, j, h, d)];
          wo[OA(b, i, h, d)] = o;
          D_ += o * dout[OA(b, i, h, d)];
        }
        for (int j = 0; j < TK; j++) {
          double dpp = 0;
          for (int d = 0; d < HD; d++) dpp += (double)dout[OA(b, i, h, d)] * v[KA(b, j, h, d)];
          double ds = P[j] * (Z[j] * dpp - D_);
          wdb[(h * TQ + i) * TK + j] += ds;
          for (int d = 0; d < HD; d++) {
            wdq[QA(b, i, h, d)] += scale * ds * k[KA(b, j, h, d)];
            wdk[KA(b, j, h, d)] += scale * ds * q[QA(b, i, h, d)];
            wdv[KA(b, j, h, d)] += P[j] * Z[j] * dout[OA(b, i, h, d)];
          }
        }
      }
  }
#undef QA
#undef KA
#undef OA
  dt dq_ = dt_f32(q, nq), dk_ = dt_f32(k, nk), dv_ = dt_f32(v, nk), dm = dt_i32(mask, Bn * TK),
     dbias = dt_f32(bias, nb), out = dt_f32(NULL, no), lse = dt_f32(NULL, (int64_t)Bn * NH * TQ),
     ddo = dt_f32(dout, no), gq = dt_f32(dq0, nq), gk = dt_f32(dk0, nk), gv = dt_f32(dv0, nk),
     gb = dt_f32(db0, nb);
  tp_attention_args a = {.batch = Bn, .heads = NH, .head_dim = HD, .q_len = TQ, .kv_len = TK,
                         .ld_q = LDQ, .ld_kv = LDKV, .q = M(dq_), .k = M(dk_), .v = M(dv_),
                         .out = M(out), .lse = M(lse),
                         .mask = ac.mask ? M(dm) : (tp_mem){NULL, 0},
                         .bias = ac.bias ? M(dbias) : (tp_mem){NULL, 0},
                         .scale = scale, .dropout = ac.p, .seed = seed, .offset = offset,
                         .compute = TP_F32};
  B->attention_fwd(D, &a);
  B->attention_bwd(D, &a, M(ddo), M(gq), M(gk), M(gv), ac.bias ? M(gb) : (tp_mem){NULL, 0});
  char *what = g_strdup_printf("attention B=%d nh=%d Tq=%d Tk=%d hd=%d ld=%d/%d mask=%d bias=%d "
                               "p=%g",
                               Bn, NH, TQ, TK, HD, LDQ, LDKV, ac.mask, ac.bias, (double)ac.p);
  float *go = get_f32(out), *gl = get_f32(lse), *g1 = get_f32(gq), *g2 = get_f32(gk),
        *g3 = get_f32(gv), *g4 = get_f32(gb);
  struct {
    const char *name;
    const float *got;
    const double *want;
    int64_t n;
    double rtol;
  } cmp[] = {{"out", go, wo, no, 1e-4},     {"lse", gl, wl, (int64_t)Bn * NH * TQ, 1e-5},
             {"dq", g1, wdq, nq, 1e-4},     {"dk", g2, wdk, nk, 1e-4},
             {"dv", g3, wdv, nk, 1e-4},     {"dbias", g4, wdb, ac.bias ? nb : 0, 1e-4}};
  for (size_t i = 0; i < G_N_ELEMENTS(cmp); i++) {
    char *w = g_strconcat(what, " ", cmp[i].name, NULL);
    close_rel(w, cmp[i].got, cmp[i].want, cmp[i].n, cmp[i].rtol);
    g_free(w);
  }
  g_free(what);
  dt *all[] = {&dq_, &dk_, &dv_, &dm, &dbias, &out, &lse, &ddo, &gq, &gk, &gv, &gb};
  for (size_t i = 0; i < G_N_ELEMENTS(all); i++) dt_free(all[i]);
  void *mem[] = {q, k, v, bias, dout, dq0, dk0, dv0, db0, mask, wo, wl, wdq, wdk, wdv, wdb, P, Z,
                 S, go, gl, g1, g2, g3, g4};
  for (size_t i = 0; i < G_N_ELEMENTS(mem); i++) g_free(mem[i]);
}

TP_TEST(VulkanAttention, FusedMatchesTheComposedReference) {
  SETUP();
  GRand *r = g_rand_new_with_seed(15);
  run_attention(r, (att_case){2, 2, 5, 5, 8, 16, 16, false, false, 0.0f});
  /* slices of one fused QKV row (ld 3H), vec4 loads */
  run_attention(r, (att_case){3, 2, 70, 70, 16, 3 * 32, 3 * 32, true, true, 0.0f});
  run_attention(r, (att_case){2, 3, 9, 9, 7, 21, 23, true, true, 0.25f}); /* odd head size */
  run_attention(r, (att_case){1, 1, 1, 1, 1, 1, 1, false, false, 0.5f});
  /* the [CLS]-only last layer: one query over all keys */
  run_attention(r, (att_case){3, 4, 1, 37, 8, 32, 96, true, true, 0.1f});
  run_attention(r, (att_case){2, 2, 6, 131, 12, 24, 24, true, false, 0.0f});
  g_rand_free(r);
}

/* ------------------------------------------------------------ no push descriptors */

TP_TEST(VulkanPlugin, DescriptorPoolPathWithoutPushDescriptors) {
  SETUP();
  g_setenv("TENSORPLUG_VULKAN_NO_PUSH_DESCRIPTOR", "1", TRUE);
  GError *err = NULL;
  tp_backend_dev *d2 = B->open(0, 0, &err);
  g_unsetenv("TENSORPLUG_VULKAN_NO_PUSH_DESCRIPTOR");
  TP_ASSERT_NO_ERROR(err);
  tp_backend_dev *saved = D;
  D = d2;
  enum { N = 300, STEPS = 700 }; /* more dispatches than one descriptor pool holds */
  float x[N], got[N];
  for (int i = 0; i < N; i++) x[i] = (float)i;
  dt acc = dt_f32(NULL, N), dx_ = dt_f32(x, N);
  B->k.fill(D, M(acc), 0.0f, N);
  for (int s = 0; s < STEPS; s++) B->k.axpy(D, M(acc), M(dx_), 1.0f, N);
  TP_CHECK(get(got, acc));
  int bad = 0;
  for (int i = 0; i < N; i++) bad += got[i] != (float)i * STEPS;
  TP_CHECK_INT_EQ(bad, 0);
  GRand *r = g_rand_new_with_seed(16);
  run_gemm(r, (gemm_case){false, true, 33, 17, 9, 2, 1, 1.0f, 0.0f, false, TP_F32, TP_F32, TP_F32, false});
  g_rand_free(r);
  dt_free(&acc);
  dt_free(&dx_);
  B->close(d2);
  D = saved;
}
