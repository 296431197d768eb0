/* plugins/cpu/cpu_gemm.c — the gemm slot of the CPU backend.
 *
 * f32 products go to oneDNN's sgemm where the plugin was built with oneDNN
 * (its own run-time ISA dispatch: AVX-512, AVX2, SSE4.1), else to OpenBLAS.
 * Measured on a 2-core AVX-512 machine, one thread, the shapes of a BERT
 * step: oneDNN 110-160 GFLOP/s, OpenBLAS 0.3.21 20-30 GFLOP/s where it
 * detects the CPU as "Prescott" (SSE3 kernels) and about 100 with
 * OPENBLAS_CORETYPE=Haswell (docs/performance.md, bench_cpu_kernels).
 *
 * bf16 compute (operands rounded to bf16, sums in f32) has two strategies,
 * chosen once per process (cpu_gemm_init):
 *  - NATIVE: operands converted to bf16 and multiplied by oneDNN's bf16
 *    matmul (AVX512-BF16 dot products, or AMX tiles);
 *  - EMULATE: operands rounded to bf16 but kept as f32, then the f32 product.
 *    A product of two bf16 values is exact in f32, so this is the same
 *    arithmetic as NATIVE up to the order of the f32 sums.
 * NATIVE is the default only where bf16 arithmetic is faster than f32: with
 * AMX, or where AVX512-BF16 dot products (vdpbf16ps) measure at least 1.25x
 * the f32 FMA rate. (On a Sapphire Rapids VM without AMX they run at half
 * the FMA rate: there EMULATE is faster.) */
#include <cpuid.h>
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "cpu_kernels.h"
#include "tensorplug/error.h"

#ifdef TP_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CPU_X86 1
#endif

int cpu_gemm_lib_sel = CPU_GEMM_OPENBLAS;
int cpu_bf16_sel = CPU_BF16_EMULATE;

/* What the one-time probe found. */
static struct {
  bool done;
  bool avx512_bf16, amx_bf16;
  double dp_ratio;   /* vdpbf16ps FLOP/s over f32 FMA FLOP/s; 0 when not measured */
  bool native_fast;  /* NATIVE is the faster bf16 strategy here */
  bool isa_capped;   /* dnnl_set_max_cpu_isa was called */
} probe;

static inline void *mem_ptr(tp_mem m) { return (char *)m.buf->ptr + m.off; }
static inline float *f32(tp_mem m) { return (float *)mem_ptr(m); }

/* ------------------------------------------------------------ the probe */

#ifdef CPU_X86
static double thread_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Twelve independent accumulators: throughput, not latency. The asm keeps
 * the compiler from folding the loop. */
#define ACC12(op)                                                                                 \
  op(a0) op(a1) op(a2) op(a3) op(a4) op(a5) op(a6) op(a7) op(a8) op(a9) op(a10) op(a11)

__attribute__((target("avx512f,avx512bf16"), noinline)) static float dp_loop(long n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0,
         a8 = a0, a9 = a0, a10 = a0, a11 = a0;
  __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3c00);
#define DP(a) a = _mm512_dpbf16_ps(a, x, y); __asm__ volatile("" : "+v"(a));
  for (long i = 0; i < n; i++) { ACC12(DP) }
#undef DP
  __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                           _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
  s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
  return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx512f"), noinline)) static float fma_loop(long n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0,
         a8 = a0, a9 = a0, a10 = a0, a11 = a0;
  __m512 x = _mm512_set1_ps(1.0f), y = _mm512_set1_ps(0.0078125f);
#define FM(a) a = _mm512_fmadd_ps(x, y, a); __asm__ volatile("" : "+v"(a));
  for (long i = 0; i < n; i++) { ACC12(FM) }
#undef FM
  __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                           _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
  s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
  return _mm512_reduce_add_ps(s);
}

/* FLOP/s of vdpbf16ps over FLOP/s of vfmadd231ps on one thread: the best of
 * five interleaved runs of about 1 ms each (thread CPU time, so a loaded
 * machine changes little). One vdpbf16ps is 32 multiply-adds, one FMA 16. */
static double measure_dp_ratio(void) {
  const long n = 20000;
  double best_dp = 1e30, best_fma = 1e30;
  volatile float sink = 0.0f;
  for (int r = 0; r < 5; r++) {
    double t0 = thread_seconds();
    sink += dp_loop(n);
    double t1 = thread_seconds();
    sink += fma_loop(n);
    double t2 = thread_seconds();
    best_dp = MIN(best_dp, t1 - t0);
    best_fma = MIN(best_fma, t2 - t1);
  }
  (void)sink;
  if (best_dp <= 0 || best_fma <= 0) return 0.0;
  return (2.0 * best_fma) / best_dp; /* twice the work per instruction */
}
#endif

static void probe_cpu(void) {
  if (probe.done) return;
  probe.done = true;
#ifdef CPU_X86
  unsigned a, b, c, dx;
  if (__get_cpuid_count(7, 1, &a, &b, &c, &dx)) probe.avx512_bf16 = (a >> 5) & 1u;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &dx)) probe.amx_bf16 = (dx >> 22) & 1u;
  __builtin_cpu_init();
  probe.avx512_bf16 = probe.avx512_bf16 && __builtin_cpu_supports("avx512f");
  if (probe.avx512_bf16) probe.dp_ratio = measure_dp_ratio();
#endif
  probe.native_fast = probe.amx_bf16 || (probe.avx512_bf16 && probe.dp_ratio >= 1.25);
}

/* ------------------------------------------------------------ configuration */

#ifdef TP_HAVE_ONEDNN
static const char *dnnl_isa_name(dnnl_cpu_isa_t isa) {
  switch ((int)isa) {
  case dnnl_cpu_isa_sse41: return "sse41";
  case dnnl_cpu_isa_avx: return "avx";
  case dnnl_cpu_isa_avx2: return "avx2";
  case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
  case dnnl_cpu_isa_avx512_core: return "avx512_core";
  case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
  case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
  case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
  default: return "other";
  }
}
#endif

bool cpu_gemm_init(GError **err) {
  probe_cpu();
  const char *lib = g_getenv("TENSORPLUG_CPU_GEMM");
#ifdef TP_HAVE_ONEDNN
  int want_lib = CPU_GEMM_ONEDNN;
#else
  int want_lib = CPU_GEMM_OPENBLAS;
#endif
  if (lib && *lib) {
    if (g_ascii_strcasecmp(lib, "openblas") == 0) want_lib = CPU_GEMM_OPENBLAS;
    else if (g_ascii_strcasecmp(lib, "onednn") == 0) want_lib = CPU_GEMM_ONEDNN;
    else {
      g_set_error(err, CPU_ERROR, TP_ERROR_INVALID_ARGUMENT, "cpu backend: TENSORPLUG_CPU_GEMM="
                  "\"%s\" is not one of openblas, onednn; fix or unset it", lib);
      return false;
    }
#ifndef TP_HAVE_ONEDNN
    if (want_lib == CPU_GEMM_ONEDNN) {
      g_set_error(err, CPU_ERROR, TP_ERROR_UNAVAILABLE, "cpu backend: TENSORPLUG_CPU_GEMM=onednn, "
                  "but this plugin was built without oneDNN (install libdnnl-dev and rebuild)");
      return false;
    }
#endif
  }
  const char *bf = g_getenv("TENSORPLUG_CPU_BF16");
  int want_bf16 = probe.native_fast ? CPU_BF16_NATIVE : CPU_BF16_EMULATE;
  if (bf && *bf) {
    if (g_ascii_strcasecmp(bf, "native") == 0) want_bf16 = CPU_BF16_NATIVE;
    else if (g_ascii_strcasecmp(bf, "emulate") == 0) want_bf16 = CPU_BF16_EMULATE;
    else {
      g_set_error(err, CPU_ERROR, TP_ERROR_INVALID_ARGUMENT, "cpu backend: TENSORPLUG_CPU_BF16="
                  "\"%s\" is not one of native, emulate; fix or unset it", bf);
      return false;
    }
    if (want_bf16 == CPU_BF16_NATIVE && want_lib != CPU_GEMM_ONEDNN) {
      g_set_error(err, CPU_ERROR, TP_ERROR_UNAVAILABLE, "cpu backend: TENSORPLUG_CPU_BF16=native "
                  "needs oneDNN (TENSORPLUG_CPU_GEMM=onednn, and a plugin built with it)");
      return false;
    }
  }
  /* Without oneDNN (or below AVX-512) bf16 can only be emulated. */
  if (want_lib != CPU_GEMM_ONEDNN || (cpu_isa < CPU_ISA_AVX512 && !(bf && *bf)))
    want_bf16 = CPU_BF16_EMULATE;
#ifdef TP_HAVE_ONEDNN
  /* oneDNN follows $TENSORPLUG_CPU_ISA too (once per process: oneDNN only
   * accepts the cap before its first kernel). */
  if (want_lib == CPU_GEMM_ONEDNN && !probe.isa_capped) {
    probe.isa_capped = true;
    dnnl_cpu_isa_t cap = cpu_isa >= CPU_ISA_AVX512 ? dnnl_cpu_isa_all
                         : cpu_isa >= CPU_ISA_AVX2 ? dnnl_cpu_isa_avx2
                                                   : dnnl_cpu_isa_sse41;
    (void)dnnl_set_max_cpu_isa(cap);
  }
#endif
  cpu_gemm_lib_sel = want_lib;
  cpu_bf16_sel = want_bf16;
  return true;
}

void cpu_gemm_describe(char *out, size_t size) {
  char lib[96];
#ifdef TP_HAVE_ONEDNN
  if (cpu_gemm_lib_sel == CPU_GEMM_ONEDNN) {
    const dnnl_version_t *v = dnnl_version();
    g_snprintf(lib, sizeof lib, "oneDNN %d.%d.%d (%s)", v->major, v->minor, v->patch,
               dnnl_isa_name(dnnl_get_effective_cpu_isa()));
  } else
#endif
    g_strlcpy(lib, "OpenBLAS", sizeof lib);
  char ratio[96] = "";
  if (probe.amx_bf16)
    g_strlcpy(ratio, "AMX-BF16", sizeof ratio);
  else if (probe.avx512_bf16)
    g_snprintf(ratio, sizeof ratio, "AVX512-BF16 dot products at %.2fx f32 FMA", probe.dp_ratio);
  else
    g_strlcpy(ratio, "no bf16 arithmetic", sizeof ratio);
  g_snprintf(out, size, "GEMM %s; bf16 %s (%s); i8 %s", lib,
             cpu_bf16_sel == CPU_BF16_NATIVE ? "native" : "emulated in f32", ratio,
             cpu_gemm_i8_available() ? "VNNI (inference)" : "none (needs oneDNN and VNNI)");
}

tp_dtype cpu_preferred_compute(tp_backend_dev *d) {
  (void)d;
  probe_cpu();
  return probe.native_fast && cpu_gemm_lib_sel == CPU_GEMM_ONEDNN && cpu_isa >= CPU_ISA_AVX512
             ? TP_BF16
             : TP_F32;
}

/* ------------------------------------------------------------ device state */

struct cpu_gemm_state {
  void *scratch[CPU_SCRATCH_SLOTS]; /* rounded or converted operands, attention tiles */
  size_t scratch_bytes[CPU_SCRATCH_SLOTS];
#ifdef TP_HAVE_ONEDNN
  dnnl_engine_t engine;
  dnnl_stream_t stream;
  GHashTable *prims; /* mm_key* -> dnnl_primitive_t */
#endif
};

void cpu_gemm_state_free(cpu_gemm_state *s) {
  if (!s) return;
  for (int i = 0; i < CPU_SCRATCH_SLOTS; i++) free(s->scratch[i]);
#ifdef TP_HAVE_ONEDNN
  if (s->prims) g_hash_table_destroy(s->prims);
  if (s->stream) dnnl_stream_destroy(s->stream);
  if (s->engine) dnnl_engine_destroy(s->engine);
#endif
  g_free(s);
}

static cpu_gemm_state *state(tp_backend_dev *d) {
  if (!d->gemm) d->gemm = g_new0(cpu_gemm_state, 1);
  return d->gemm;
}

void *cpu_scratch(tp_backend_dev *d, int slot, size_t bytes) {
  cpu_gemm_state *s = state(d);
  if (bytes <= s->scratch_bytes[slot]) return s->scratch[slot];
  size_t sz = (bytes + 63) / 64 * 64;
  void *p = aligned_alloc(64, sz);
  if (!p) {
    cpu_set_error(d, TP_ERROR_OUT_OF_MEMORY, "cpu backend: out of memory for %zu bytes of "
                  "scratch", sz);
    return NULL;
  }
  free(s->scratch[slot]);
  s->scratch[slot] = p;
  s->scratch_bytes[slot] = sz;
  return p;
}

static void *scratch(tp_backend_dev *d, size_t bytes) {
  return cpu_scratch(d, CPU_SCRATCH_GEMM, bytes);
}

/* ------------------------------------------------------------ rounding */

/* f32 -> bf16 -> f32, round to nearest even (NaN stays NaN): branch-free
 * integer arithmetic, so the loops vectorise and every clone agrees. */
CPU_INLINE uint32_t round_bits(uint32_t u) {
  uint32_t nan = (u & 0x7fffffffu) > 0x7f800000u;
  uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  return nan ? (u | 0x00400000u) & 0xffff0000u : r;
}

CPU_INLINE void round_row_impl(float *restrict dst, const float *restrict src, int n) {
  for (int j = 0; j < n; j++) {
    uint32_t u;
    memcpy(&u, &src[j], 4);
    u = round_bits(u);
    memcpy(&dst[j], &u, 4);
  }
}
CPU_VARIANTS(round_row, (float *restrict dst, const float *restrict src, int n), (dst, src, n))

CPU_INLINE void bf16_row_impl(uint16_t *restrict dst, const float *restrict src, int n) {
  for (int j = 0; j < n; j++) {
    uint32_t u;
    memcpy(&u, &src[j], 4);
    dst[j] = (uint16_t)(round_bits(u) >> 16);
  }
}
CPU_VARIANTS(bf16_row, (uint16_t *restrict dst, const float *restrict src, int n), (dst, src, n))

void cpu_round_matrix(float *dst, int64_t ldd, const float *src, int64_t lds, int rows, int cols,
                      tp_dtype ct) {
  for (int i = 0; i < rows; i++) {
    float *o = dst + (int64_t)i * ldd;
    const float *x = src + (int64_t)i * lds;
    if (ct == TP_BF16)
      round_row(o, x, cols);
    else if (ct == TP_F16)
      for (int j = 0; j < cols; j++) o[j] = cpu_half_to_f32(cpu_f32_to_half(x[j], TP_F16), TP_F16);
    else
      memcpy(o, x, sizeof(float) * (size_t)cols);
  }
}

/* rows x cols of src (row stride ld) -> dense dst, rounded to bf16 and kept
 * as f32 (to_bf16 false) or stored as bf16 (to_bf16 true). */
static void round_matrix(tp_backend_dev *d, void *dst, const float *src, int rows, int cols,
                         int64_t ld, bool to_bf16) {
  bool par = !omp_in_parallel() && (int64_t)rows * cols > 32768;
#pragma omp parallel for num_threads(d->threads) schedule(static) if (par)
  for (int i = 0; i < rows; i++) {
    if (to_bf16)
      bf16_row((uint16_t *)dst + (int64_t)i * cols, src + (int64_t)i * ld, cols);
    else
      round_row((float *)dst + (int64_t)i * cols, src + (int64_t)i * ld, cols);
  }
}

/* ------------------------------------------------------------ f32 products */

static void scale_matrix(float *c, int m, int n, int64_t ldc, float beta) {
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++)
      c[(int64_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[(int64_t)i * ldc + j];
}

void cpu_sgemm(tp_backend_dev *d, bool ta, bool tb, int m, int n, int k, float alpha,
                   const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                   int64_t ldc) {
#ifdef TP_HAVE_ONEDNN
  if (cpu_gemm_lib_sel == CPU_GEMM_ONEDNN) {
    dnnl_status_t st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb,
                                  beta, c, ldc);
    if (st != dnnl_success)
      cpu_set_error(d, TP_ERROR_INVALID_ARGUMENT, "cpu gemm: oneDNN sgemm failed (status %d) "
                    "for %dx%dx%d", (int)st, m, n, k);
    return;
  }
#endif
  (void)d;
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

/* A batch of small products (attention: batch*heads of 128x128x32) runs one
 * product per thread with the library single-threaded inside; larger ones
 * use the library's own threads. */
#define GEMM_SMALL_FLOPS (2.0 * 512 * 512 * 512)

/* f32 storage: compute f32 (round false) or bf16 emulated in f32 (round
 * true: each product's A and B rounded into dense scratch first). */
static void gemm_f32(tp_backend_dev *d, const tp_gemm_args *g, bool round) {
  int m = g->m, n = g->n, k = g->k;
  const float *A = f32(g->a), *Bm = f32(g->b);
  float *C = f32(g->c);
  if (k == 0) {
    for (int i = 0; i < g->batch; i++)
      scale_matrix(C + i * g->sc, m, n, g->ldc, g->sc == 0 && i > 0 ? 1.0f : g->beta);
    return;
  }
  int ar = g->ta ? k : m, ac = g->ta ? m : k, br = g->tb ? n : k, bc = g->tb ? k : n;
  size_t per = (size_t)ar * ac + (size_t)br * bc; /* scratch floats per product */
  bool disjoint = g->sc >= (int64_t)(m - 1) * g->ldc + n;
  bool par = g->batch > 1 && d->threads > 1 && disjoint && 2.0 * m * n * k <= GEMM_SMALL_FLOPS;
  int slots = par ? d->threads : 1;
  float *scr = round ? scratch(d, sizeof(float) * per * (size_t)slots) : NULL;
  if (round && !scr) return;
  if (cpu_gemm_lib_sel == CPU_GEMM_OPENBLAS && !par && openblas_get_num_threads() != d->threads)
    openblas_set_num_threads(d->threads);
  if (omp_get_max_threads() != d->threads) omp_set_num_threads(d->threads);
#pragma omp parallel for num_threads(d->threads) schedule(static) if (par)
  for (int i = 0; i < g->batch; i++) {
    const float *a = A + i * g->sa, *b = Bm + i * g->sb;
    int64_t lda = g->lda, ldb = g->ldb;
    if (round) {
      float *sa = scr + per * (size_t)(par ? omp_get_thread_num() : 0), *sb = sa + (size_t)ar * ac;
      round_matrix(d, sa, a, ar, ac, lda, false);
      round_matrix(d, sb, b, br, bc, ldb, false);
      a = sa, b = sb, lda = ac, ldb = bc;
    }
    float beta = g->sc == 0 && i > 0 ? 1.0f : g->beta; /* one shared C: beta once */
    cpu_sgemm(d, g->ta, g->tb, m, n, k, g->alpha, a, lda, b, ldb, beta, C + i * g->sc, g->ldc);
  }
}

/* ------------------------------------------------------------ native bf16 */

#ifdef TP_HAVE_ONEDNN
/* A matmul primitive for dense bf16 A [batch, ar, ac] and B [batch, br, bc]
 * (transposes as strides) into f32 C with row stride ldc and batch stride
 * sc; alpha as the output scale, beta as a sum post-op. */
typedef struct mm_key {
  int batch, m, n, k, ta, tb;
  int64_t ldc, sc;
  float alpha, beta;
} mm_key;

static guint mm_hash(gconstpointer p) {
  const unsigned char *b = p;
  guint h = 2166136261u;
  for (size_t i = 0; i < sizeof(mm_key); i++) h = (h ^ b[i]) * 16777619u;
  return h;
}
static gboolean mm_equal(gconstpointer a, gconstpointer b) {
  return memcmp(a, b, sizeof(mm_key)) == 0;
}
static void prim_free(gpointer p) { dnnl_primitive_destroy(p); }

/* Memory descriptors of the key's operands (3-D when batch > 1). */
static void mm_descs(const mm_key *kk, dnnl_memory_desc_t *a, dnnl_memory_desc_t *b,
                     dnnl_memory_desc_t *c) {
  int ar = kk->ta ? kk->k : kk->m, ac = kk->ta ? kk->m : kk->k;
  int br = kk->tb ? kk->n : kk->k, bc = kk->tb ? kk->k : kk->n;
  dnnl_dims_t ad = {kk->batch, kk->m, kk->k}, bd = {kk->batch, kk->k, kk->n},
              cd = {kk->batch, kk->m, kk->n};
  dnnl_dims_t as = {(dnnl_dim_t)ar * ac, kk->ta ? 1 : ac, kk->ta ? ac : 1};
  dnnl_dims_t bs = {(dnnl_dim_t)br * bc, kk->tb ? 1 : bc, kk->tb ? bc : 1};
  dnnl_dims_t cs = {kk->sc, kk->ldc, 1};
  int nd = kk->batch > 1 ? 3 : 2, o = kk->batch > 1 ? 0 : 1;
  dnnl_memory_desc_init_by_strides(a, nd, ad + o, dnnl_bf16, as + o);
  dnnl_memory_desc_init_by_strides(b, nd, bd + o, dnnl_bf16, bs + o);
  dnnl_memory_desc_init_by_strides(c, nd, cd + o, dnnl_f32, cs + o);
}

static dnnl_primitive_t mm_get(tp_backend_dev *d, const mm_key *kk) {
  cpu_gemm_state *s = state(d);
  if (!s->engine) {
    if (dnnl_engine_create(&s->engine, dnnl_cpu, 0) != dnnl_success) return NULL;
    if (dnnl_stream_create(&s->stream, s->engine, dnnl_stream_default_flags) != dnnl_success)
      return NULL;
    s->prims = g_hash_table_new_full(mm_hash, mm_equal, g_free, prim_free);
  }
  dnnl_primitive_t p = g_hash_table_lookup(s->prims, kk);
  if (p) return p;
  /* Dynamic padding gives every batch its own length: bound the cache. */
  if (g_hash_table_size(s->prims) >= 512) g_hash_table_remove_all(s->prims);
  dnnl_memory_desc_t a, b, c;
  mm_descs(kk, &a, &b, &c);
  dnnl_matmul_desc_t md;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  dnnl_primitive_desc_t pd = NULL;
  bool ok = dnnl_matmul_desc_init(&md, &a, &b, NULL, &c) == dnnl_success &&
            dnnl_primitive_attr_create(&attr) == dnnl_success &&
            (kk->alpha == 1.0f ||
             dnnl_primitive_attr_set_output_scales(attr, 1, 0, &kk->alpha) == dnnl_success);
  if (ok && kk->beta != 0.0f)
    ok = dnnl_post_ops_create(&po) == dnnl_success &&
         dnnl_post_ops_append_sum(po, kk->beta) == dnnl_success &&
         dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
  ok = ok && dnnl_primitive_desc_create(&pd, &md, attr, s->engine, NULL) == dnnl_success &&
       dnnl_primitive_create(&p, pd) == dnnl_success;
  if (pd) dnnl_primitive_desc_destroy(pd);
  if (po) dnnl_post_ops_destroy(po);
  if (attr) dnnl_primitive_attr_destroy(attr);
  if (!ok) return NULL;
  g_hash_table_insert(s->prims, g_memdup2(kk, sizeof *kk), p);
  return p;
}

static bool mm_run(tp_backend_dev *d, dnnl_primitive_t p, const mm_key *kk, void *a, void *b,
                   float *c) {
  cpu_gemm_state *s = state(d);
  dnnl_memory_desc_t ad, bd, cd;
  mm_descs(kk, &ad, &bd, &cd);
  dnnl_memory_t am = NULL, bm = NULL, cm = NULL;
  bool ok = dnnl_memory_create(&am, &ad, s->engine, a) == dnnl_success &&
            dnnl_memory_create(&bm, &bd, s->engine, b) == dnnl_success &&
            dnnl_memory_create(&cm, &cd, s->engine, c) == dnnl_success;
  if (ok) {
    dnnl_exec_arg_t args[3] = {
        {DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}};
    ok = dnnl_primitive_execute(p, s->stream, 3, args) == dnnl_success &&
         dnnl_stream_wait(s->stream) == dnnl_success;
  }
  if (am) dnnl_memory_destroy(am);
  if (bm) dnnl_memory_destroy(bm);
  if (cm) dnnl_memory_destroy(cm);
  return ok;
}

/* bf16 compute through oneDNN's bf16 matmul. FALSE (nothing written) when
 * oneDNN cannot take the layout; the caller then emulates. */
static bool gemm_bf16_native(tp_backend_dev *d, const tp_gemm_args *g) {
  int m = g->m, n = g->n, k = g->k, batch = g->batch;
  int ar = g->ta ? k : m, ac = g->ta ? m : k, br = g->tb ? n : k, bc = g->tb ? k : n;
  bool shared = g->sc == 0 && batch > 1;
  int nb = shared ? 1 : batch; /* products per primitive call */
  size_t ael = (size_t)ar * ac, bel = (size_t)br * bc;
  uint16_t *sa = scratch(d, 2 * (ael + bel) * (size_t)batch);
  if (!sa) return true; /* the error is recorded */
  uint16_t *sb = sa + ael * (size_t)batch;
  for (int i = 0; i < batch; i++) {
    round_matrix(d, sa + ael * i, f32(g->a) + i * g->sa, ar, ac, g->lda, true);
    round_matrix(d, sb + bel * i, f32(g->b) + i * g->sb, br, bc, g->ldb, true);
  }
  if (omp_get_max_threads() != d->threads) omp_set_num_threads(d->threads);
  for (int i = 0; i < batch; i += nb) {
    mm_key kk;
    memset(&kk, 0, sizeof kk); /* the padding is hashed */
    kk.batch = nb, kk.m = m, kk.n = n, kk.k = k, kk.ta = g->ta, kk.tb = g->tb;
    kk.ldc = g->ldc, kk.sc = nb > 1 ? g->sc : 0, kk.alpha = g->alpha;
    kk.beta = shared && i > 0 ? 1.0f : g->beta;
    dnnl_primitive_t p = mm_get(d, &kk);
    if (!p) {
      if (i == 0) return false;
      cpu_set_error(d, TP_ERROR_INVALID_ARGUMENT, "cpu gemm: oneDNN bf16 matmul unavailable for "
                    "%dx%dx%d", m, n, k);
      return true;
    }
    if (!mm_run(d, p, &kk, sa + ael * i, sb + bel * i, f32(g->c) + (shared ? 0 : i * g->sc))) {
      cpu_set_error(d, TP_ERROR_INVALID_ARGUMENT, "cpu gemm: oneDNN bf16 matmul failed for "
                    "%dx%dx%d batch %d", m, n, k, nb);
      return true;
    }
  }
  return true;
}
#endif

/* ------------------------------------------------------------ half storage */

static size_t dtype_bytes(tp_dtype t) { return t == TP_F32 || t == TP_I32 ? 4 : 2; }

/* rows x cols of a matrix (row stride ld, element type t) -> dense f32,
 * each element rounded to the compute type ct (bf16/f16) when it is one. */
static void to_dense(float *dst, const void *src, tp_dtype t, int rows, int cols, int ld,
                     tp_dtype ct) {
  for (int i = 0; i < rows; i++)
    for (int j = 0; j < cols; j++) {
      int64_t at = (int64_t)i * ld + j;
      float v =
          t == TP_F32 ? ((const float *)src)[at] : cpu_half_to_f32(((const uint16_t *)src)[at], t);
      if (ct != TP_F32 && ct != t) v = cpu_half_to_f32(cpu_f32_to_half(v, ct), ct);
      dst[(int64_t)i * cols + j] = v;
    }
}

static void from_dense(void *dst, tp_dtype t, const float *src, int rows, int cols, int ld) {
  for (int i = 0; i < rows; i++)
    for (int j = 0; j < cols; j++) {
      int64_t at = (int64_t)i * ld + j;
      float v = src[(int64_t)i * cols + j];
      if (t == TP_F32)
        ((float *)dst)[at] = v;
      else
        ((uint16_t *)dst)[at] = cpu_f32_to_half(v, t);
    }
}

/* bf16/f16 storage (any compute type): each product's A and B are made dense
 * f32 (rounded to the compute type), multiplied in f32, and C is rounded back
 * to its storage type once. Correct, not fast: training keeps f32 storage. */
static void gemm_general(tp_backend_dev *d, const tp_gemm_args *g) {
  int m = g->m, n = g->n, k = g->k;
  int ar = g->ta ? k : m, ac = g->ta ? m : k, br = g->tb ? n : k, bc = g->tb ? k : n;
  size_t floats = (size_t)ar * ac + (size_t)br * bc + (size_t)m * n;
  float *a32 = g_try_malloc(sizeof(float) * MAX(floats, 1));
  if (!a32) {
    cpu_set_error(d, TP_ERROR_OUT_OF_MEMORY,
                  "cpu gemm: out of memory for %zu bytes of f32 temporaries", sizeof(float) * floats);
    return;
  }
  float *b32 = a32 + (size_t)ar * ac, *c32 = b32 + (size_t)br * bc;
  size_t abs_ = dtype_bytes(g->ab_dtype), cs = dtype_bytes(g->c_dtype);
  const char *a = mem_ptr(g->a), *b = mem_ptr(g->b);
  char *c = mem_ptr(g->c);
  for (int i = 0; i < g->batch; i++) {
    float beta = g->sc == 0 && i > 0 ? 1.0f : g->beta;
    char *ci = c + (size_t)(i * g->sc) * cs;
    to_dense(a32, a + (size_t)(i * g->sa) * abs_, g->ab_dtype, ar, ac, g->lda, g->compute);
    to_dense(b32, b + (size_t)(i * g->sb) * abs_, g->ab_dtype, br, bc, g->ldb, g->compute);
    if (beta != 0.0f)
      to_dense(c32, ci, g->c_dtype, m, n, g->ldc, TP_F32);
    else
      memset(c32, 0, sizeof(float) * (size_t)m * n);
    if (k == 0)
      scale_matrix(c32, m, n, n, beta);
    else
      cpu_sgemm(d, g->ta, g->tb, m, n, k, g->alpha, a32, ac, b32, bc, beta, c32, n);
    from_dense(ci, g->c_dtype, c32, m, n, g->ldc);
  }
  g_free(a32);
}

/* ------------------------------------------------------------ the slot */

static bool gemm_dtype_ok(tp_dtype t) { return t == TP_F32 || t == TP_BF16 || t == TP_F16; }

void cpu_gemm(tp_backend_dev *d, const tp_gemm_args *g) {
  int m = g->m, n = g->n, k = g->k;
  if (m < 0 || n < 0 || k < 0 || g->batch < 0) {
    cpu_set_error(d, TP_ERROR_INVALID_ARGUMENT, "cpu gemm: negative size m=%d n=%d k=%d batch=%d",
                  m, n, k, g->batch);
    return;
  }
  if (!gemm_dtype_ok(g->ab_dtype) || !gemm_dtype_ok(g->c_dtype) ||
      !(gemm_dtype_ok(g->compute) || g->compute == TP_I8)) {
    cpu_set_error(d, TP_ERROR_UNAVAILABLE,
                  "cpu gemm: types A/B %d, C %d, compute %d are not supported (f32, bf16, f16; "
                  "compute also i8)",
                  (int)g->ab_dtype, (int)g->c_dtype, (int)g->compute);
    return;
  }
  if (m == 0 || n == 0 || g->batch == 0) return;
  /* The libraries would print (xerbla) and return; report it instead. */
  int need_a = g->ta ? m : k, need_b = g->tb ? k : n;
  if (g->lda < MAX(1, need_a) || g->ldb < MAX(1, need_b) || g->ldc < MAX(1, n)) {
    cpu_set_error(d, TP_ERROR_INVALID_ARGUMENT,
                  "cpu gemm: row stride too small (lda=%d needs >= %d, ldb=%d needs >= %d, "
                  "ldc=%d needs >= %d)",
                  g->lda, need_a, g->ldb, need_b, g->ldc, n);
    return;
  }
  if (g->compute == TP_I8) {
    /* activations x a weight (A [m, k], B stored [n, k]); any other layout
     * is computed in f32, the more precise answer */
    if (cpu_gemm_i8(d, g)) return;
    tp_gemm_args f = *g;
    f.compute = TP_F32;
    cpu_gemm(d, &f);
    return;
  }
  if (g->ab_dtype != TP_F32 || g->c_dtype != TP_F32) {
    gemm_general(d, g);
    return;
  }
  if (g->compute == TP_F32) {
    gemm_f32(d, g, false);
    return;
  }
  if (g->compute == TP_F16) { /* no f16 arithmetic here: round each operand, multiply in f32 */
    gemm_general(d, g);
    return;
  }
#ifdef TP_HAVE_ONEDNN
  if (cpu_bf16_sel == CPU_BF16_NATIVE && k > 0 && gemm_bf16_native(d, g)) return;
#endif
  gemm_f32(d, g, true);
}
