/* plugins/cuda/cuda_backend.c — the CUDA backend plugin: device probe and
 * open, stream-ordered buffers, pinned uploads, the error word, GEMM through
 * cuBLASLt, and the vtable wiring the kernels of cuda_kernels.cu.
 *
 * Everything of a device runs on its one stream, in call order; nothing
 * here waits for the GPU except synchronize() and download() (and an
 * allocation that failed, before it tries again). Failures found while
 * queuing (a bad argument, a failed launch) and failures the kernels find
 * (an id or label out of range, in the error word) are reported by the next
 * synchronize() or download().
 *
 * The CUDA runtime is linked statically and loads the driver when first
 * called, so the plugin loads where there is no driver and probe() says
 * why there is no device. cuBLASLt (libcublasLt.so.13, hundreds of MiB) is
 * opened only when a device is found. Built with -DTPCU_SIM, the same code
 * runs on the CPU emulation of sim/ (the tests' "cudasim" plugin). */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "cuda_kernels.h"
#include "cuda_plan.h"
#include "tensorplug/error.h"
#include "tensorplug/plugin.h"

#ifdef TPCU_SIM
#define TPCU_NAME "cudasim"
#else
#define TPCU_NAME "cuda"
#endif
#define CUBLASLT_SONAME "libcublasLt.so.13"

#define SAME(a, b) ((int)(a) == (int)(b))
_Static_assert(SAME(TPCU_CTL_SUMSQ, TP_CTL_SUMSQ) && SAME(TPCU_CTL_GRAD_SCALE, TP_CTL_GRAD_SCALE) &&
                   SAME(TPCU_CTL_SKIP, TP_CTL_SKIP) && SAME(TPCU_CTL_LOSS_SCALE, TP_CTL_LOSS_SCALE) &&
                   SAME(TPCU_CTL_GOOD_STEPS, TP_CTL_GOOD_STEPS) &&
                   SAME(TPCU_CTL_SKIPPED, TP_CTL_SKIPPED) &&
                   SAME(TPCU_CTL_GRAD_NORM, TP_CTL_GRAD_NORM) && SAME(TPCU_CTL_WORDS, TP_CTL_WORDS),
               "control block words differ from backend_iface.h");
_Static_assert(TP_F32 == 0 && TP_BF16 == 1 && TP_F16 == 2, "the kernels' dtype codes");

/* The core's error domain (the plugin does not link libtensorplug). */
static GQuark cuda_error_quark(void) { return g_quark_from_static_string("tensorplug-error-quark"); }
#define CUDA_ERROR (cuda_error_quark())

/* -------------------------------------------------------------- cuBLASLt */

typedef struct lt_api {
  __typeof__(&cublasLtCreate) create;
  __typeof__(&cublasLtDestroy) destroy;
  __typeof__(&cublasLtGetVersion) version;
  __typeof__(&cublasLtGetStatusName) status_name;
  __typeof__(&cublasLtMatmulDescCreate) desc_create;
  __typeof__(&cublasLtMatmulDescDestroy) desc_destroy;
  __typeof__(&cublasLtMatmulDescSetAttribute) desc_set;
  __typeof__(&cublasLtMatrixLayoutCreate) layout_create;
  __typeof__(&cublasLtMatrixLayoutDestroy) layout_destroy;
  __typeof__(&cublasLtMatrixLayoutSetAttribute) layout_set;
  __typeof__(&cublasLtMatmulPreferenceCreate) pref_create;
  __typeof__(&cublasLtMatmulPreferenceDestroy) pref_destroy;
  __typeof__(&cublasLtMatmulPreferenceSetAttribute) pref_set;
  __typeof__(&cublasLtMatmulAlgoGetHeuristic) heuristic;
  __typeof__(&cublasLtMatmul) matmul;
} lt_api;

static lt_api LT;
static char *lt_failure; /* why cuBLASLt could not be loaded (kept for the process) */

static gpointer lt_load_once(gpointer unused) {
  (void)unused;
#ifdef TPCU_SIM
  LT = (lt_api){cublasLtCreate, cublasLtDestroy, cublasLtGetVersion, cublasLtGetStatusName,
                cublasLtMatmulDescCreate, cublasLtMatmulDescDestroy,
                cublasLtMatmulDescSetAttribute, cublasLtMatrixLayoutCreate,
                cublasLtMatrixLayoutDestroy, cublasLtMatrixLayoutSetAttribute,
                cublasLtMatmulPreferenceCreate, cublasLtMatmulPreferenceDestroy,
                cublasLtMatmulPreferenceSetAttribute, cublasLtMatmulAlgoGetHeuristic,
                cublasLtMatmul};
#else
  /* Never closed: its code may be running on another device's stream. */
  void *h = dlopen(CUBLASLT_SONAME, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    lt_failure = g_strdup_printf("%s could not be loaded (%s): put the CUDA toolkit's lib64, or "
                                 "PyTorch's nvidia/cu13/lib or nvidia/cublas/lib, on "
                                 "LD_LIBRARY_PATH",
                                 CUBLASLT_SONAME, dlerror());
    return NULL;
  }
  struct {
    void **slot;
    const char *name;
  } syms[] = {
      {(void **)&LT.create, "cublasLtCreate"},
      {(void **)&LT.destroy, "cublasLtDestroy"},
      {(void **)&LT.version, "cublasLtGetVersion"},
      {(void **)&LT.status_name, "cublasLtGetStatusName"},
      {(void **)&LT.desc_create, "cublasLtMatmulDescCreate"},
      {(void **)&LT.desc_destroy, "cublasLtMatmulDescDestroy"},
      {(void **)&LT.desc_set, "cublasLtMatmulDescSetAttribute"},
      {(void **)&LT.layout_create, "cublasLtMatrixLayoutCreate"},
      {(void **)&LT.layout_destroy, "cublasLtMatrixLayoutDestroy"},
      {(void **)&LT.layout_set, "cublasLtMatrixLayoutSetAttribute"},
      {(void **)&LT.pref_create, "cublasLtMatmulPreferenceCreate"},
      {(void **)&LT.pref_destroy, "cublasLtMatmulPreferenceDestroy"},
      {(void **)&LT.pref_set, "cublasLtMatmulPreferenceSetAttribute"},
      {(void **)&LT.heuristic, "cublasLtMatmulAlgoGetHeuristic"},
      {(void **)&LT.matmul, "cublasLtMatmul"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(syms); i++) {
    *syms[i].slot = dlsym(h, syms[i].name);
    if (!*syms[i].slot) {
      lt_failure = g_strdup_printf("%s lacks %s: it is not the cuBLASLt this plugin was built "
                                   "for (CUDA 13)",
                                   CUBLASLT_SONAME, syms[i].name);
      return NULL;
    }
  }
#endif
  return NULL;
}

static bool lt_load(GError **err) {
  static GOnce once = G_ONCE_INIT;
  g_once(&once, lt_load_once, NULL);
  if (lt_failure) {
    g_set_error(err, CUDA_ERROR, TP_ERROR_UNAVAILABLE, "no usable CUDA device: %s", lt_failure);
    return false;
  }
  return true;
}

/* --------------------------------------------------------------- devices */

struct tp_buffer {
  void *ptr;
  size_t size;
};

typedef struct lt_plan lt_plan;

struct tp_backend_dev {
  int cuda_index;
  cudaStream_t stream;
  tpcu_ctx ctx;
  int32_t *err_dev;  /* the kernel error word */
  int32_t *err_host; /* its pinned copy, read after a synchronisation */
  GMutex lock;       /* guards error */
  GError *error;     /* the first failure found while queuing */
  cublasLtHandle_t lt;
  void *lt_ws;
  size_t lt_ws_bytes;
  void *scratch; /* kernels' temporaries; reused in stream order */
  size_t scratch_bytes;
  GHashTable *plans; /* GEMM shapes -> cuBLASLt descriptors and algorithm */
  char *stage;       /* pinned upload slots, lazily */
  cudaEvent_t stage_ev[TPCU_STAGE_SLOTS];
  int stage_next;
  size_t smem_optin;
  int cc_major;
};

static void dev_fail(tp_backend_dev *d, int code, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static void dev_fail(tp_backend_dev *d, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  GError *e = g_error_new_valist(CUDA_ERROR, code, fmt, ap);
  va_end(ap);
  g_mutex_lock(&d->lock);
  if (d->error == NULL)
    d->error = e;
  else
    g_error_free(e);
  g_mutex_unlock(&d->lock);
}

/* A launch or queuing call's status: failures are kept for the next sync. */
static bool dev_check(tp_backend_dev *d, const char *what, cudaError_t e) {
  if (e == cudaSuccess) return true;
  dev_fail(d, TP_ERROR_BACKEND, "cuda %s: %s: %s", what, cudaGetErrorName(e), cudaGetErrorString(e));
  return false;
}

/* The process's current CUDA device is per thread and global to the
 * runtime; switch only when another device is used. */
static void use_device(const tp_backend_dev *d) {
  int cur = -1;
  if (cudaGetDevice(&cur) != cudaSuccess || cur != d->cuda_index) cudaSetDevice(d->cuda_index);
}

/* CUDA devices this build can run on, in CUDA's order; why says why others
 * are left out (or why there are none). */
static int usable_devices(int *ids, int max, char *why, size_t len, cudaError_t *status) {
  int n = 0;
  why[0] = '\0';
  *status = cudaGetDeviceCount(&n);
  if (*status != cudaSuccess) {
    snprintf(why, len, "%s: %s", cudaGetErrorName(*status), cudaGetErrorString(*status));
    cudaGetLastError(); /* not sticky: clear it */
    return 0;
  }
  if (n <= 0) {
    snprintf(why, len, "the driver reports no GPU");
    return 0;
  }
  int count = 0;
  for (int i = 0; i < n; i++) {
    struct cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    char r[200];
    if (!tpcu_cc_usable(p.major, p.minor, r, sizeof r)) {
      size_t used = strlen(why);
      snprintf(why + used, len - used, "%sdevice %d (%s): %s", used ? "; " : "", i, p.name, r);
      continue;
    }
    if (count < max) ids[count] = i;
    count++;
  }
  return count;
}

#define MAX_DEVICES 64

static void describe(tp_device_info *in, int cuda_index, const struct cudaDeviceProp *p) {
  memset(in, 0, sizeof *in);
  g_strlcpy(in->name, p->name, sizeof in->name);
  int drv = 0, rt = 0;
  cudaDriverGetVersion(&drv);
  cudaRuntimeGetVersion(&rt);
  snprintf(in->description, sizeof in->description,
           "CUDA device %d, sm_%d%d, %d SMs, %.1f GiB, %d MiB L2, %zu KiB shared memory per block; "
           "driver %d.%d, runtime %d.%d (static)",
           cuda_index, p->major, p->minor, p->multiProcessorCount,
           (double)p->totalGlobalMem / (1u << 30), p->l2CacheSize >> 20,
           p->sharedMemPerBlockOptin >> 10, drv / 1000, drv % 1000 / 10, rt / 1000,
           rt % 1000 / 10);
  in->memory_bytes = p->totalGlobalMem;
  in->compute_units = p->multiProcessorCount;
#ifdef TPCU_SIM
  in->is_software = true; /* never chosen by --backend auto */
#endif
  in->is_discrete = !p->integrated;
  in->host_visible = false;
  in->max_alloc_bytes = p->totalGlobalMem;
  in->max_binding_bytes = 0; /* plain pointers: no limit */
  in->offset_align = 256;
  in->gemm_compute = TP_DTYPE_BIT(TP_F32) | TP_DTYPE_BIT(TP_BF16) | TP_DTYPE_BIT(TP_F16);
  in->storage_dtypes =
      TP_DTYPE_BIT(TP_F32) | TP_DTYPE_BIT(TP_BF16) | TP_DTYPE_BIT(TP_F16) | TP_DTYPE_BIT(TP_I32);
  in->max_head_dim = (uint32_t)tpcu_attn_max_head_dim(p->sharedMemPerBlockOptin);
  size_t v = LT.version ? LT.version() : 0;
  snprintf(in->features, sizeof in->features,
           "cuBLASLt %zu.%zu.%zu (GEMM: f32, and bf16/f16 tensor cores with f32 sums); "
           "flash attention (own kernels, WMMA); stream-ordered allocator",
           v / 10000, v / 100 % 100, v % 100);
}

static int cuda_probe(tp_device_info *infos, int max, GError **err) {
  int ids[MAX_DEVICES];
  char why[1024];
  cudaError_t st;
  int n = usable_devices(ids, MAX_DEVICES, why, sizeof why, &st);
  if (n == 0) {
    g_set_error(err, CUDA_ERROR, TP_ERROR_UNAVAILABLE, "no usable CUDA device: %s", why);
    return 0;
  }
  if (!lt_load(err)) return 0;
  for (int i = 0; i < n && i < max && i < MAX_DEVICES && infos; i++) {
    struct cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, ids[i]) == cudaSuccess) describe(&infos[i], ids[i], &p);
  }
  return n;
}

/* ----------------------------------------------------------- GEMM plans */

/* Everything of a cuBLASLt call but its addresses. */
typedef struct lt_key {
  int32_t m, n, k, batch, lda, ldb, ldc;
  int64_t sa, sb, sc;
  uint8_t ta, tb, ab, c, compute, pad[3];
  uint32_t align_a, align_b, align_c;
} lt_key;

struct lt_plan {
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t la, lb, lc;
  cublasLtMatmulAlgo_t algo;
  size_t ws;
};

static guint lt_key_hash(gconstpointer k) {
  const unsigned char *p = k;
  guint h = 2166136261u; /* FNV-1a */
  for (size_t i = 0; i < sizeof(lt_key); i++) h = (h ^ p[i]) * 16777619u;
  return h;
}
static gboolean lt_key_equal(gconstpointer a, gconstpointer b) {
  return memcmp(a, b, sizeof(lt_key)) == 0;
}

static void lt_plan_free(gpointer p) {
  lt_plan *x = p;
  if (x->la) LT.layout_destroy(x->la);
  if (x->lb) LT.layout_destroy(x->lb);
  if (x->lc) LT.layout_destroy(x->lc);
  if (x->desc) LT.desc_destroy(x->desc);
  g_free(x);
}

static cudaDataType_t lt_type(tp_dtype t) {
  return t == TP_BF16 ? CUDA_R_16BF : t == TP_F16 ? CUDA_R_16F : CUDA_R_32F;
}

static cublasComputeType_t lt_compute(tpcu_lt_compute c) {
  return c == TPCU_LT_32F_FAST_16BF  ? CUBLAS_COMPUTE_32F_FAST_16BF
         : c == TPCU_LT_32F_FAST_16F ? CUBLAS_COMPUTE_32F_FAST_16F
                                     : CUBLAS_COMPUTE_32F;
}

#define LT_TRY(call)                                                                               \
  do {                                                                                             \
    cublasStatus_t s_ = (call);                                                                    \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                             \
      dev_fail(d, TP_ERROR_BACKEND, "cuda gemm: %s failed: %s", #call, LT.status_name(s_));       \
      goto fail;                                                                                   \
    }                                                                                              \
  } while (0)

static bool lt_layout(tp_backend_dev *d, cublasLtMatrixLayout_t *l, tp_dtype t,
                      const tpcu_lt_layout *x, int batch) {
  LT_TRY(LT.layout_create(l, lt_type(t), x->rows, x->cols, x->ld));
  if (batch > 1) {
    int32_t b = batch;
    int64_t s = x->stride;
    LT_TRY(LT.layout_set(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &b, sizeof b));
    LT_TRY(LT.layout_set(*l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &s, sizeof s));
  }
  return true;
fail:
  return false;
}

static lt_plan *lt_plan_make(tp_backend_dev *d, const tp_gemm_args *g, int batch,
                             tpcu_lt_compute compute, const lt_key *key) {
  lt_plan *p = g_new0(lt_plan, 1);
  cublasLtMatmulPreference_t pref = NULL;
  tpcu_lt_problem pr;
  tpcu_lt_problem_make(g, batch, &pr);
  LT_TRY(LT.desc_create(&p->desc, lt_compute(compute), CUDA_R_32F));
  cublasOperation_t opa = pr.a.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t opb = pr.b.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
  LT_TRY(LT.desc_set(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
  LT_TRY(LT.desc_set(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
  /* cuBLASLt's A is our B (see tpcu_lt_problem_make) */
  if (!lt_layout(d, &p->la, g->ab_dtype, &pr.a, batch) ||
      !lt_layout(d, &p->lb, g->ab_dtype, &pr.b, batch) ||
      !lt_layout(d, &p->lc, g->c_dtype, &pr.c, batch))
    goto fail;
  LT_TRY(LT.pref_create(&pref));
  uint64_t ws = d->lt_ws_bytes;
  LT_TRY(LT.pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  /* the real alignments of these addresses: cuBLASLt assumes 256 otherwise */
  LT_TRY(LT.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &key->align_b,
                     sizeof key->align_b));
  LT_TRY(LT.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &key->align_a,
                     sizeof key->align_a));
  LT_TRY(LT.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &key->align_c,
                     sizeof key->align_c));
  LT_TRY(LT.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &key->align_c,
                     sizeof key->align_c));
  cublasLtMatmulHeuristicResult_t res;
  int found = 0;
  LT_TRY(LT.heuristic(d->lt, p->desc, p->la, p->lb, p->lc, p->lc, pref, 1, &res, &found));
  if (found < 1) {
    dev_fail(d, TP_ERROR_BACKEND,
             "cuda gemm: cuBLASLt has no algorithm for m=%d n=%d k=%d batch=%d (ld %d/%d/%d, "
             "alignment %u/%u/%u bytes)",
             g->m, g->n, g->k, batch, g->lda, g->ldb, g->ldc, key->align_a, key->align_b,
             key->align_c);
    goto fail;
  }
  p->algo = res.algo;
  p->ws = res.workspaceSize;
  LT.pref_destroy(pref);
  return p;
fail:
  if (pref) LT.pref_destroy(pref);
  lt_plan_free(p);
  return NULL;
}

/* One cuBLASLt call: batch products of g's shapes (g's dtypes are what
 * cuBLASLt reads and writes) at addresses a, b, c. */
static void lt_matmul(tp_backend_dev *d, const tp_gemm_args *g, int batch, tpcu_lt_compute compute,
                      const void *a, const void *b, void *c, float beta) {
  size_t ea = g->ab_dtype == TP_F32 ? 4 : 2, ec = g->c_dtype == TP_F32 ? 4 : 2;
  lt_key key;
  memset(&key, 0, sizeof key);
  key.m = g->m;
  key.n = g->n;
  key.k = g->k;
  key.batch = batch;
  key.lda = g->lda;
  key.ldb = g->ldb;
  key.ldc = g->ldc;
  key.sa = batch > 1 ? g->sa : 0;
  key.sb = batch > 1 ? g->sb : 0;
  key.sc = batch > 1 ? g->sc : 0;
  key.ta = g->ta;
  key.tb = g->tb;
  key.ab = (uint8_t)g->ab_dtype;
  key.c = (uint8_t)g->c_dtype;
  key.compute = (uint8_t)compute;
  key.align_a = tpcu_alignment(256, (uintptr_t)a, (uint64_t)key.sa * ea, 0);
  key.align_b = tpcu_alignment(256, (uintptr_t)b, (uint64_t)key.sb * ea, 0);
  key.align_c = tpcu_alignment(256, (uintptr_t)c, (uint64_t)key.sc * ec, 0);
  lt_plan *p = g_hash_table_lookup(d->plans, &key);
  if (!p) {
    p = lt_plan_make(d, g, batch, compute, &key);
    if (!p) return;
    g_hash_table_insert(d->plans, g_memdup2(&key, sizeof key), p);
  }
  float alpha = g->alpha;
  cublasStatus_t s = LT.matmul(d->lt, p->desc, &alpha, b, p->la, a, p->lb, &beta, c, p->lc, c,
                               p->lc, &p->algo, d->lt_ws, p->ws, d->stream);
  if (s != CUBLAS_STATUS_SUCCESS)
    dev_fail(d, TP_ERROR_BACKEND, "cuda gemm: cublasLtMatmul (m=%d n=%d k=%d batch=%d): %s", g->m,
             g->n, g->k, batch, LT.status_name(s));
}

/* ------------------------------------------------------------ open/close */

static void free_async(tp_backend_dev *d, void *p) {
  if (p) cudaFreeAsync(p, d->stream);
}

/* Scratch of at least bytes for the next kernels (stream order makes the
 * old one free once earlier kernels ran); NULL and a recorded error when
 * the GPU is out of memory. */
static char *scratch(tp_backend_dev *d, size_t bytes, const char *what) {
  if (bytes <= d->scratch_bytes) return d->scratch;
  size_t want = MAX(bytes, d->scratch_bytes * 2);
  free_async(d, d->scratch);
  d->scratch = NULL;
  d->scratch_bytes = 0;
  void *p = NULL;
  cudaError_t e = cudaMallocAsync(&p, want, d->stream);
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    char *msg = tpcu_oom_message(want, fr, tot);
    dev_fail(d, TP_ERROR_OUT_OF_MEMORY, "%s (scratch of %s)", msg, what);
    g_free(msg);
    return NULL;
  }
  d->scratch = p;
  d->scratch_bytes = want;
  return p;
}

static void cuda_close(tp_backend_dev *d);

static tp_backend_dev *cuda_open(int index, int threads, GError **err) {
  (void)threads; /* host threads are not the GPU's business */
  int ids[MAX_DEVICES];
  char why[1024];
  cudaError_t st;
  int n = usable_devices(ids, MAX_DEVICES, why, sizeof why, &st);
  if (n == 0) {
    g_set_error(err, CUDA_ERROR, TP_ERROR_UNAVAILABLE, "no usable CUDA device: %s", why);
    return NULL;
  }
  if (index < 0 || index >= n) {
    g_set_error(err, CUDA_ERROR, TP_ERROR_INVALID_ARGUMENT,
                "cuda backend: device %d does not exist (there %s %d: 0 to %d)", index,
                n == 1 ? "is" : "are", n, n - 1);
    return NULL;
  }
  if (!lt_load(err)) return NULL;
  tp_backend_dev *d = g_new0(tp_backend_dev, 1);
  g_mutex_init(&d->lock);
  d->cuda_index = ids[index];
  struct cudaDeviceProp p;
  cudaError_t e = cudaSetDevice(d->cuda_index);
  if (e == cudaSuccess) e = cudaGetDeviceProperties(&p, d->cuda_index);
  if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking);
  if (e == cudaSuccess) e = cudaMalloc((void **)&d->err_dev, TPCU_KERR_WORDS * sizeof(int32_t));
  if (e == cudaSuccess) e = cudaMallocHost((void **)&d->err_host, TPCU_KERR_WORDS * sizeof(int32_t));
  if (e == cudaSuccess) e = cudaMemsetAsync(d->err_dev, 0, TPCU_KERR_WORDS * sizeof(int32_t), d->stream);
  if (e != cudaSuccess) {
    g_set_error(err, CUDA_ERROR, TP_ERROR_UNAVAILABLE, "cuda backend: opening device %d: %s: %s",
                d->cuda_index, cudaGetErrorName(e), cudaGetErrorString(e));
    cudaGetLastError();
    cuda_close(d);
    return NULL;
  }
  memset(d->err_host, 0, TPCU_KERR_WORDS * sizeof(int32_t));
  d->smem_optin = p.sharedMemPerBlockOptin;
  d->cc_major = p.major;
  d->ctx.stream = d->stream;
  d->ctx.err = d->err_dev;
  d->ctx.sm_count = p.multiProcessorCount;
  /* Freed memory stays in the pool for the next step's allocations. */
  cudaMemPool_t pool;
  if (cudaDeviceGetDefaultMemPool(&pool, d->cuda_index) == cudaSuccess) {
    uint64_t keep = UINT64_MAX;
    cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
  }
  cublasStatus_t ls = LT.create(&d->lt);
  if (ls != CUBLAS_STATUS_SUCCESS) {
    g_set_error(err, CUDA_ERROR, TP_ERROR_UNAVAILABLE, "cuda backend: cublasLtCreate: %s",
                LT.status_name(ls));
    cuda_close(d);
    return NULL;
  }
  d->lt_ws_bytes = tpcu_lt_workspace_bytes(p.major);
  e = cudaMallocAsync(&d->lt_ws, d->lt_ws_bytes, d->stream);
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    char *msg = tpcu_oom_message(d->lt_ws_bytes, fr, tot);
    g_set_error(err, CUDA_ERROR, TP_ERROR_OUT_OF_MEMORY, "%s (cuBLASLt workspace)", msg);
    g_free(msg);
    cuda_close(d);
    return NULL;
  }
  d->plans = g_hash_table_new_full(lt_key_hash, lt_key_equal, g_free, lt_plan_free);
  return d;
}

static void cuda_close(tp_backend_dev *d) {
  if (!d) return;
  use_device(d);
  if (d->stream) cudaStreamSynchronize(d->stream);
  if (d->plans) g_hash_table_destroy(d->plans);
  if (d->lt) LT.destroy(d->lt);
  if (d->stage) {
    for (int i = 0; i < TPCU_STAGE_SLOTS; i++)
      if (d->stage_ev[i]) cudaEventDestroy(d->stage_ev[i]);
    cudaFreeHost(d->stage);
  }
  if (d->stream) {
    free_async(d, d->lt_ws);
    free_async(d, d->scratch);
    cudaStreamSynchronize(d->stream);
    cudaStreamDestroy(d->stream);
  }
  if (d->err_dev) cudaFree(d->err_dev);
  if (d->err_host) cudaFreeHost(d->err_host);
  g_clear_error(&d->error);
  g_mutex_clear(&d->lock);
  cudaGetLastError();
  g_free(d);
}

/* --------------------------------------------------------------- buffers */

static tp_buffer *cuda_buffer_alloc(tp_backend_dev *d, size_t bytes, GError **err) {
  use_device(d);
  size_t want = MAX(bytes, (size_t)256); /* 0 bytes still gets its own address */
  void *p = NULL;
  cudaError_t e = cudaMallocAsync(&p, want, d->stream);
  if (e == cudaErrorMemoryAllocation) {
    /* Memory freed to the pool but still mapped may be what is missing:
     * wait for queued frees, give the pool's spare memory back, retry. */
    cudaGetLastError();
    cudaStreamSynchronize(d->stream);
    cudaMemPool_t pool;
    if (cudaDeviceGetDefaultMemPool(&pool, d->cuda_index) == cudaSuccess) cudaMemPoolTrimTo(pool, 0);
    e = cudaMallocAsync(&p, want, d->stream);
  }
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    if (e == cudaErrorMemoryAllocation) {
      char *msg = tpcu_oom_message(bytes, fr, tot);
      g_set_error_literal(err, CUDA_ERROR, TP_ERROR_OUT_OF_MEMORY, msg);
      g_free(msg);
    } else {
      g_set_error(err, CUDA_ERROR, TP_ERROR_BACKEND, "cuda: allocating %zu bytes: %s: %s", bytes,
                  cudaGetErrorName(e), cudaGetErrorString(e));
    }
    return NULL;
  }
  tp_buffer *b = g_new(tp_buffer, 1);
  b->ptr = p;
  b->size = bytes;
  return b;
}

static void cuda_buffer_free(tp_backend_dev *d, tp_buffer *b) {
  if (!b) return;
  use_device(d);
  free_async(d, b->ptr); /* after the work queued before it */
  g_free(b);
}

static void *cuda_buffer_host_ptr(tp_buffer *b) {
  (void)b;
  return NULL;
}

static bool check_range(const char *what, tp_mem m, size_t bytes, GError **err) {
  if (m.buf == NULL || m.off > m.buf->size || bytes > m.buf->size - m.off) {
    g_set_error(err, CUDA_ERROR, TP_ERROR_INVALID_ARGUMENT,
                "cuda backend %s: %zu bytes at offset %zu exceed the buffer (%zu bytes)", what,
                bytes, m.off, m.buf ? m.buf->size : (size_t)0);
    return false;
  }
  return true;
}

static inline void *at(tp_mem m) { return m.buf ? (char *)m.buf->ptr + m.off : NULL; }
static inline float *F(tp_mem m) { return (float *)at(m); }
static inline int32_t *I(tp_mem m) { return (int32_t *)at(m); }

/* The copy runs later from a pinned slot, so src may change at once. A slot
 * is reused after the copy that read it ran (its event). */
static bool cuda_upload(tp_backend_dev *d, tp_mem dst, const void *src, size_t bytes,
                        GError **err) {
  if (!check_range("upload", dst, bytes, err)) return false;
  if (bytes == 0) return true;
  use_device(d);
  cudaError_t e = cudaSuccess;
  if (!d->stage) {
    e = cudaMallocHost((void **)&d->stage, TPCU_STAGE_SLOTS * TPCU_STAGE_SLOT_BYTES);
    for (int i = 0; e == cudaSuccess && i < TPCU_STAGE_SLOTS; i++)
      e = cudaEventCreateWithFlags(&d->stage_ev[i], cudaEventDisableTiming);
    if (e != cudaSuccess) {
      g_set_error(err, CUDA_ERROR, TP_ERROR_OUT_OF_MEMORY,
                  "cuda upload: %zu bytes of pinned staging memory: %s: %s",
                  (size_t)(TPCU_STAGE_SLOTS * TPCU_STAGE_SLOT_BYTES), cudaGetErrorName(e),
                  cudaGetErrorString(e));
      cudaGetLastError();
      if (d->stage) cudaFreeHost(d->stage);
      d->stage = NULL;
      return false;
    }
  }
  const char *s = src;
  char *to = at(dst);
  for (size_t done = 0; done < bytes && e == cudaSuccess;) {
    int slot = d->stage_next;
    d->stage_next = (slot + 1) % TPCU_STAGE_SLOTS;
    size_t len = MIN(bytes - done, TPCU_STAGE_SLOT_BYTES);
    char *buf = d->stage + (size_t)slot * TPCU_STAGE_SLOT_BYTES;
    e = cudaEventSynchronize(d->stage_ev[slot]); /* the slot's last copy has run */
    if (e != cudaSuccess) break;
    memcpy(buf, s + done, len);
    e = cudaMemcpyAsync(to + done, buf, len, cudaMemcpyHostToDevice, d->stream);
    if (e == cudaSuccess) e = cudaEventRecord(d->stage_ev[slot], d->stream);
    done += len;
  }
  if (e != cudaSuccess) {
    g_set_error(err, CUDA_ERROR, TP_ERROR_BACKEND, "cuda upload of %zu bytes: %s: %s", bytes,
                cudaGetErrorName(e), cudaGetErrorString(e));
    cudaGetLastError();
    return false;
  }
  return true;
}

/* After the stream has run everything queued: the first failure since the
 * last report (a queuing failure, the GPU's sticky error, or the error
 * word's), then cleared. */
static bool report_failures(tp_backend_dev *d, cudaError_t synced, GError **err) {
  g_mutex_lock(&d->lock);
  GError *e = d->error;
  d->error = NULL;
  g_mutex_unlock(&d->lock);
  char *kerr = synced == cudaSuccess ? tpcu_kernel_error_message(d->err_host) : NULL;
  if (kerr) {
    memset(d->err_host, 0, TPCU_KERR_WORDS * sizeof(int32_t));
    cudaMemsetAsync(d->err_dev, 0, TPCU_KERR_WORDS * sizeof(int32_t), d->stream);
  }
  if (synced != cudaSuccess) {
    GError *g = g_error_new(CUDA_ERROR, TP_ERROR_BACKEND,
                            "cuda: the GPU failed: %s: %s (results of the work queued since the "
                            "last check are lost; the device must be reopened)",
                            cudaGetErrorName(synced), cudaGetErrorString(synced));
    if (e) g_prefix_error(&g, "%s; then ", e->message);
    g_clear_error(&e);
    e = g;
  } else if (kerr) {
    if (e)
      g_prefix_error(&e, "%s; also: ", kerr); /* both happened: keep both */
    else
      e = g_error_new_literal(CUDA_ERROR, TP_ERROR_INVALID_ARGUMENT, kerr);
  }
  g_free(kerr);
  if (e) {
    g_propagate_error(err, e);
    return false;
  }
  return true;
}

static cudaError_t queue_error_word_copy(tp_backend_dev *d) {
  return cudaMemcpyAsync(d->err_host, d->err_dev, TPCU_KERR_WORDS * sizeof(int32_t),
                         cudaMemcpyDeviceToHost, d->stream);
}

static bool cuda_synchronize(tp_backend_dev *d, GError **err) {
  use_device(d);
  cudaError_t e = queue_error_word_copy(d);
  cudaError_t s = cudaStreamSynchronize(d->stream);
  return report_failures(d, e != cudaSuccess ? e : s, err);
}

static bool cuda_download(tp_backend_dev *d, void *dst, tp_mem src, size_t bytes, GError **err) {
  if (!check_range("download", src, bytes, err)) return false;
  use_device(d);
  cudaError_t e = queue_error_word_copy(d);
  if (e == cudaSuccess && bytes)
    e = cudaMemcpyAsync(dst, at(src), bytes, cudaMemcpyDeviceToHost, d->stream);
  cudaError_t s = cudaStreamSynchronize(d->stream);
  return report_failures(d, e != cudaSuccess ? e : s, err);
}

static bool cuda_copy(tp_backend_dev *d, tp_mem dst, tp_mem src, size_t bytes, GError **err) {
  if (!check_range("copy (source)", src, bytes, err) ||
      !check_range("copy (destination)", dst, bytes, err))
    return false;
  if (bytes == 0) return true;
  use_device(d);
  cudaError_t e;
  bool overlap = dst.buf == src.buf && dst.off < src.off + bytes && src.off < dst.off + bytes;
  if (overlap && dst.off != src.off) {
    /* cudaMemcpy's ranges must not overlap: go through scratch */
    char *tmp = scratch(d, bytes, "an overlapping copy");
    if (!tmp) return true; /* reported at the next sync */
    e = cudaMemcpyAsync(tmp, at(src), bytes, cudaMemcpyDeviceToDevice, d->stream);
    if (e == cudaSuccess)
      e = cudaMemcpyAsync(at(dst), tmp, bytes, cudaMemcpyDeviceToDevice, d->stream);
  } else if (!overlap) {
    e = cudaMemcpyAsync(at(dst), at(src), bytes, cudaMemcpyDeviceToDevice, d->stream);
  } else {
    return true; /* the same range */
  }
  if (e != cudaSuccess) {
    g_set_error(err, CUDA_ERROR, TP_ERROR_BACKEND, "cuda copy of %zu bytes: %s: %s", bytes,
                cudaGetErrorName(e), cudaGetErrorString(e));
    cudaGetLastError();
    return false;
  }
  return true;
}

/* --------------------------------------------------------------- kernels */

#define K(what, call)                                                                              \
  do {                                                                                             \
    use_device(d);                                                                                 \
    dev_check(d, what, (call));                                                                    \
  } while (0)

static void cuda_gemm(tp_backend_dev *d, const tp_gemm_args *g) {
  char why[256];
  if (!tpcu_gemm_check(g, why, sizeof why)) {
    dev_fail(d, TP_ERROR_INVALID_ARGUMENT, "cuda gemm: %s", why);
    return;
  }
  if (g->m == 0 || g->n == 0 || g->batch == 0) return;
  use_device(d);
  tpcu_gemm_plan p;
  tpcu_gemm_plan_make(g, &p);
  void *A = at(g->a), *B = at(g->b), *C = at(g->c);
  int cb = g->sc == 0 ? 1 : g->batch; /* distinct C matrices */
  if (p.k_zero) {
    dev_check(d, "gemm (k = 0)",
              tpcu_k_matrix_scale(&d->ctx, C, g->c_dtype, g->beta, cb, g->m, g->n, g->ldc, g->sc));
    return;
  }
  char *scr = NULL;
  if (p.scratch_bytes && !(scr = scratch(d, p.scratch_bytes, "a gemm's conversions"))) return;
  const void *la = A, *lb = B;
  void *lc = C;
  if (p.cast_ab) {
    int ar = g->ta ? g->k : g->m, ac = g->ta ? g->m : g->k;
    int br = g->tb ? g->n : g->k, bc = g->tb ? g->k : g->n;
    if (!dev_check(d, "gemm (operand conversion)",
                   tpcu_k_matrix_cast(&d->ctx, scr, p.lt_ab, A, g->ab_dtype, g->sa ? g->batch : 1,
                                      ar, ac, g->lda, g->sa)) ||
        !dev_check(d, "gemm (operand conversion)",
                   tpcu_k_matrix_cast(&d->ctx, scr + p.b_off, p.lt_ab, B, g->ab_dtype,
                                      g->sb ? g->batch : 1, br, bc, g->ldb, g->sb)))
      return;
    la = scr;
    lb = scr + p.b_off;
  }
  if (p.c_temp) {
    lc = scr + p.c_off;
    if (g->beta != 0.0f &&
        !dev_check(d, "gemm (C conversion)",
                   tpcu_k_matrix_cast(&d->ctx, lc, TP_F32, C, g->c_dtype, cb, g->m, g->n, g->ldc,
                                      g->sc)))
      return;
  }
  tp_gemm_args lg = *g;
  lg.ab_dtype = p.lt_ab;
  lg.c_dtype = p.lt_c;
  if (p.sum_batches) { /* every product into the one C, in batch order */
    size_t ea = p.lt_ab == TP_F32 ? 4 : 2;
    for (int i = 0; i < g->batch; i++)
      lt_matmul(d, &lg, 1, p.compute, (const char *)la + (size_t)i * (size_t)g->sa * ea,
                (const char *)lb + (size_t)i * (size_t)g->sb * ea, lc, i == 0 ? g->beta : 1.0f);
  } else {
    lt_matmul(d, &lg, g->batch, p.compute, la, lb, lc, g->beta);
  }
  if (p.c_temp)
    dev_check(d, "gemm (C conversion)",
              tpcu_k_matrix_cast(&d->ctx, C, g->c_dtype, lc, TP_F32, cb, g->m, g->n, g->ldc, g->sc));
}

static void cuda_embedding_fwd(tp_backend_dev *d, tp_mem out, tp_mem table, tp_mem ids, int n,
                               int h, int row0, int rows, int vocab) {
  K("embedding_fwd",
    tpcu_k_embedding(&d->ctx, false, F(out), F(table), I(ids), n, h, row0, rows, vocab));
}

static void cuda_embedding_bwd(tp_backend_dev *d, tp_mem dtable, tp_mem dout, tp_mem ids, int n,
                               int h, int row0, int rows, int vocab) {
  K("embedding_bwd",
    tpcu_k_embedding(&d->ctx, true, F(dtable), F(dout), I(ids), n, h, row0, rows, vocab));
}

static void cuda_layernorm_fwd(tp_backend_dev *d, tp_mem y, tp_mem mean, tp_mem rstd, tp_mem x,
                               tp_mem gamma, tp_mem beta, int rows, int cols, float eps) {
  K("layernorm_fwd", tpcu_k_layernorm_fwd(&d->ctx, F(y), F(mean), F(rstd), F(x), F(gamma), F(beta),
                                          rows, cols, eps));
}

static void cuda_layernorm_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dgamma, tp_mem dbeta,
                               tp_mem dy, tp_mem x, tp_mem mean, tp_mem rstd, tp_mem gamma,
                               int rows, int cols) {
  if (rows <= 0 || cols <= 0) return;
  float *s = (float *)scratch(d, sizeof(float) * 2 * (size_t)tpcu_red_chunks(rows) * (size_t)cols,
                              "layernorm_bwd");
  if (!s) return;
  K("layernorm_bwd", tpcu_k_layernorm_bwd(&d->ctx, F(dx), F(dgamma), F(dbeta), F(dy), F(x), F(mean),
                                          F(rstd), F(gamma), rows, cols, s));
}

static void cuda_softmax_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, tp_mem mask, int batch,
                             int heads, int rows, int cols, float scale) {
  K("softmax_fwd",
    tpcu_k_softmax_fwd(&d->ctx, F(y), F(x), I(mask), batch, heads, rows, cols, scale));
}

static void cuda_softmax_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem y, int batch,
                             int heads, int rows, int cols, float scale) {
  if (batch <= 0 || heads <= 0 || rows <= 0) return;
  K("softmax_bwd", tpcu_k_softmax_bwd(&d->ctx, F(dx), F(dy), F(y), (int64_t)batch * heads * rows,
                                      cols, scale));
}

static void cuda_gelu_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, int64_t n) {
  K("gelu_fwd", tpcu_k_act_fwd(&d->ctx, TPCU_ACT_GELU, F(y), F(x), n));
}
static void cuda_gelu_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem x, int64_t n) {
  K("gelu_bwd", tpcu_k_act_bwd(&d->ctx, TPCU_ACT_GELU, F(dx), F(dy), F(x), n));
}
static void cuda_relu_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, int64_t n) {
  K("relu_fwd", tpcu_k_act_fwd(&d->ctx, TPCU_ACT_RELU, F(y), F(x), n));
}
static void cuda_relu_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem x, int64_t n) {
  K("relu_bwd", tpcu_k_act_bwd(&d->ctx, TPCU_ACT_RELU, F(dx), F(dy), F(x), n));
}
static void cuda_tanh_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, int64_t n) {
  K("tanh_fwd", tpcu_k_act_fwd(&d->ctx, TPCU_ACT_TANH, F(y), F(x), n));
}
static void cuda_tanh_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem y, int64_t n) {
  K("tanh_bwd", tpcu_k_act_bwd(&d->ctx, TPCU_ACT_TANH, F(dx), F(dy), F(y), n));
}

static void cuda_bias_add(tp_backend_dev *d, tp_mem y, tp_mem bias, int64_t rows, int cols) {
  if (rows <= 0 || cols <= 0) return;
  K("bias_add", tpcu_k_bias_add(&d->ctx, F(y), F(bias), rows, cols));
}

static void cuda_bias_grad(tp_backend_dev *d, tp_mem dbias, tp_mem dy, int64_t rows, int cols) {
  if (rows <= 0 || cols <= 0) return;
  float *s = (float *)scratch(d, sizeof(float) * (size_t)tpcu_red_chunks(rows) * (size_t)cols,
                              "bias_grad");
  if (!s) return;
  K("bias_grad", tpcu_k_bias_grad(&d->ctx, F(dbias), F(dy), rows, cols, s));
}

static void cuda_add(tp_backend_dev *d, tp_mem y, tp_mem a, tp_mem b, int64_t n) {
  K("add", tpcu_k_add(&d->ctx, F(y), F(a), F(b), n));
}
static void cuda_axpy(tp_backend_dev *d, tp_mem y, tp_mem x, float alpha, int64_t n) {
  K("axpy", tpcu_k_axpy(&d->ctx, F(y), F(x), alpha, n));
}
static void cuda_fill(tp_backend_dev *d, tp_mem y, float value, int64_t n) {
  K("fill", tpcu_k_fill(&d->ctx, F(y), value, n));
}

static bool check_p(tp_backend_dev *d, float p) {
  if (p >= 0.0f && p <= 1.0f) return true;
  dev_fail(d, TP_ERROR_INVALID_ARGUMENT, "cuda dropout: p=%g is not in [0, 1]", (double)p);
  return false;
}

static void cuda_dropout_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, int64_t n, float p,
                             uint64_t seed, uint64_t offset) {
  if (check_p(d, p))
    K("dropout_fwd", tpcu_k_dropout(&d->ctx, F(y), NULL, F(x), n, p, seed, offset, false));
}
static void cuda_dropout_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, int64_t n, float p,
                             uint64_t seed, uint64_t offset) {
  if (check_p(d, p))
    K("dropout_bwd", tpcu_k_dropout(&d->ctx, F(dx), NULL, F(dy), n, p, seed, offset, true));
}
static void cuda_dropout_fwd_keep(tp_backend_dev *d, tp_mem y, tp_mem keep, tp_mem x, int64_t n,
                                  float p, uint64_t seed, uint64_t offset) {
  if (check_p(d, p))
    K("dropout_fwd_keep",
      tpcu_k_dropout(&d->ctx, F(y), (uint8_t *)at(keep), F(x), n, p, seed, offset, false));
}
static void cuda_dropout_bwd_keep(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem keep, int64_t n,
                                  float p) {
  if (check_p(d, p))
    K("dropout_bwd_keep",
      tpcu_k_dropout_bwd_keep(&d->ctx, F(dx), F(dy), (const uint8_t *)at(keep), n, p));
}

static void cuda_permute_0213(tp_backend_dev *d, tp_mem y, tp_mem x, int d0, int d1, int d2,
                              int d3, float beta) {
  K("permute_0213", tpcu_k_permute_0213(&d->ctx, F(y), F(x), d0, d1, d2, d3, beta));
}

static void cuda_first_token_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, int batch, int seq,
                                 int h) {
  K("first_token_fwd", tpcu_k_first_token(&d->ctx, false, F(y), F(x), batch, seq, h));
}
static void cuda_first_token_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, int batch, int seq,
                                 int h) {
  K("first_token_bwd", tpcu_k_first_token(&d->ctx, true, F(dx), F(dy), batch, seq, h));
}

static void cuda_cross_entropy_fwd(tp_backend_dev *d, tp_mem loss, tp_mem logits, tp_mem labels,
                                   int batch, int classes) {
  K("cross_entropy_fwd",
    tpcu_k_cross_entropy_fwd(&d->ctx, F(loss), F(logits), I(labels), batch, classes));
}
static void cuda_cross_entropy_bwd(tp_backend_dev *d, tp_mem dlogits, tp_mem dloss, tp_mem logits,
                                   tp_mem labels, int batch, int classes) {
  K("cross_entropy_bwd", tpcu_k_cross_entropy_bwd(&d->ctx, F(dlogits), F(dloss), F(logits),
                                                  I(labels), batch, classes));
}
static void cuda_count_correct(tp_backend_dev *d, tp_mem out, tp_mem logits, tp_mem labels,
                               int batch, int classes) {
  K("count_correct",
    tpcu_k_count_correct(&d->ctx, F(out), F(logits), I(labels), batch, classes));
}

static void cuda_adam_step(tp_backend_dev *d, tp_mem p, tp_mem g, tp_mem m, tp_mem v, int64_t n,
                           const tp_adam_args *a) {
  tpcu_adam_k k = {.grad_scale = a->grad_scale, .b1 = a->beta1, .b2 = a->beta2, .eps = a->eps};
  if (!tpcu_adam_coeffs(a, &k.step, &k.vscale, &k.decay)) {
    dev_fail(d, TP_ERROR_INVALID_ARGUMENT, "cuda adam_step: step %lld must start at 1",
             (long long)a->step);
    return;
  }
  K("adam_step", tpcu_k_adam(&d->ctx, F(p), F(g), F(m), F(v), n, k, F(a->ctl)));
}

static void cuda_optim_control(tp_backend_dev *d, tp_mem ctl, const tp_control_args *a) {
  K("optim_control", tpcu_k_optim_control(&d->ctx, F(ctl), a->max_norm, a->dynamic,
                                          a->growth_interval, a->growth, a->backoff));
}

static void cuda_sumsq(tp_backend_dev *d, tp_mem out, tp_mem x, int64_t n) {
  if (n <= 0) return;
  float *s = (float *)scratch(d, sizeof(float) * (size_t)tpcu_sum_chunks(n), "sumsq");
  if (!s) return;
  K("sumsq", tpcu_k_sumsq(&d->ctx, F(out), F(x), n, s));
}

static void cuda_nonfinite(tp_backend_dev *d, tp_mem out, tp_mem x, int64_t n) {
  K("nonfinite", tpcu_k_nonfinite(&d->ctx, I(out), F(x), n));
}

static void cuda_cast(tp_backend_dev *d, tp_mem y, tp_dtype ydt, tp_mem x, tp_dtype xdt,
                      int64_t n) {
  bool ok = (ydt == TP_F32 || ydt == TP_BF16 || ydt == TP_F16) &&
            (xdt == TP_F32 || xdt == TP_BF16 || xdt == TP_F16);
  if (!ok) {
    dev_fail(d, TP_ERROR_UNAVAILABLE, "cuda cast: %d -> %d is not supported (f32, bf16, f16 only)",
             (int)xdt, (int)ydt);
    return;
  }
  K("cast", tpcu_k_cast(&d->ctx, at(y), ydt, at(x), xdt, n));
}

/* ------------------------------------------------------- fused attention */

/* The header's arguments as the kernels take them. */
static tpcu_attn_call attn_call(const tp_attention_args *a) {
  return (tpcu_attn_call){
      .batch = a->batch, .heads = a->heads, .q_len = a->q_len, .kv_len = a->kv_len,
      .head_dim = a->head_dim, .ld_q = a->ld_q, .ld_kv = a->ld_kv, .q = F(a->q), .k = F(a->k),
      .v = F(a->v), .out = F(a->out), .lse = F(a->lse), .mask = I(a->mask), .bias = F(a->bias),
      .scale = a->scale, .dropout = a->dropout, .seed = a->seed, .offset = a->offset,
      .compute = (int)a->compute};
}

static bool attn_layouts(tp_backend_dev *d, const tpcu_attn_call *c, int first, int last,
                         tpcu_attn_layout *l) {
  char why[256];
  if (!tpcu_attention_check(c, why, sizeof why)) {
    dev_fail(d, TP_ERROR_INVALID_ARGUMENT, "cuda attention: %s", why);
    return false;
  }
  for (int k = first; k <= last; k++)
    if (!tpcu_attn_layout_make(k, c->head_dim, (tp_dtype)c->compute, c->q_len, c->kv_len,
                               d->smem_optin, &l[k - first], why, sizeof why)) {
      dev_fail(d, TP_ERROR_INVALID_ARGUMENT, "cuda attention: %s", why);
      return false;
    }
  return true;
}

static void cuda_attention_fwd(tp_backend_dev *d, const tp_attention_args *a) {
  tpcu_attn_call c = attn_call(a);
  tpcu_attn_layout l;
  if (attn_layouts(d, &c, TPCU_ATTN_FWD, TPCU_ATTN_FWD, &l))
    K("attention_fwd", tpcu_k_attention_fwd(&d->ctx, &c, &l));
}

static void cuda_attention_bwd(tp_backend_dev *d, const tp_attention_args *a, tp_mem dout,
                               tp_mem dq, tp_mem dk, tp_mem dv, tp_mem dbias) {
  tpcu_attn_call c = attn_call(a);
  tpcu_attn_layout l[2]; /* dq, dkdv */
  if (!attn_layouts(d, &c, TPCU_ATTN_DQ, TPCU_ATTN_DKDV, l)) return;
  c.dvec = (float *)scratch(d, sizeof(float) * (size_t)c.batch * (size_t)c.heads * (size_t)c.q_len,
                            "attention_bwd");
  if (!c.dvec) return;
  c.dout = F(dout);
  c.dq = F(dq);
  c.dk = F(dk);
  c.dv = F(dv);
  c.dbias = F(dbias);
  K("attention_bwd", tpcu_k_attention_bwd(&d->ctx, &c, &l[0], &l[1]));
}

/* ------------------------------------------------------------------ entry */

static const tp_backend_iface cuda_iface = {
    .struct_size = sizeof(tp_backend_iface),
    .probe = cuda_probe,
    .open = cuda_open,
    .close = cuda_close,
    .buffer_alloc = cuda_buffer_alloc,
    .buffer_free = cuda_buffer_free,
    .buffer_host_ptr = cuda_buffer_host_ptr,
    .upload = cuda_upload,
    .download = cuda_download,
    .copy = cuda_copy,
    .synchronize = cuda_synchronize,
    .k =
        {
            .gemm = cuda_gemm,
            .embedding_fwd = cuda_embedding_fwd,
            .embedding_bwd = cuda_embedding_bwd,
            .layernorm_fwd = cuda_layernorm_fwd,
            .layernorm_bwd = cuda_layernorm_bwd,
            .softmax_fwd = cuda_softmax_fwd,
            .softmax_bwd = cuda_softmax_bwd,
            .gelu_fwd = cuda_gelu_fwd,
            .gelu_bwd = cuda_gelu_bwd,
            .relu_fwd = cuda_relu_fwd,
            .relu_bwd = cuda_relu_bwd,
            .tanh_fwd = cuda_tanh_fwd,
            .tanh_bwd = cuda_tanh_bwd,
            .bias_add = cuda_bias_add,
            .bias_grad = cuda_bias_grad,
            .add = cuda_add,
            .axpy = cuda_axpy,
            .fill = cuda_fill,
            .dropout_fwd = cuda_dropout_fwd,
            .dropout_bwd = cuda_dropout_bwd,
            .permute_0213 = cuda_permute_0213,
            .first_token_fwd = cuda_first_token_fwd,
            .first_token_bwd = cuda_first_token_bwd,
            .cross_entropy_fwd = cuda_cross_entropy_fwd,
            .cross_entropy_bwd = cuda_cross_entropy_bwd,
            .count_correct = cuda_count_correct,
            .adam_step = cuda_adam_step,
            .optim_control = cuda_optim_control,
            .sumsq = cuda_sumsq,
            .nonfinite = cuda_nonfinite,
            .cast = cuda_cast,
        },
    .dropout_fwd_keep = cuda_dropout_fwd_keep,
    .dropout_bwd_keep = cuda_dropout_bwd_keep,
    .attention_fwd = cuda_attention_fwd,
    .attention_bwd = cuda_attention_bwd,
};

static const tp_plugin cuda_plugin = {
    .abi_version = TP_PLUGIN_ABI_VERSION,
    .kind = TP_PLUGIN_BACKEND,
    .name = TPCU_NAME,
    .version = "0.1.0",
    .iface = &cuda_iface,
};

TP_PLUGIN_EXPORT const tp_plugin *tp_plugin_entry(void);
TP_PLUGIN_EXPORT const tp_plugin *tp_plugin_entry(void) { return &cuda_plugin; }
