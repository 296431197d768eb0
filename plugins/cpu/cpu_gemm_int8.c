/* plugins/cpu/cpu_gemm_int8.c — the gemm slot's i8 compute: dynamic int8
 * quantization of activations x weights, for inference.
 *
 * C [m, n] = alpha * A [m, k] @ B^T + beta * C, where B is stored [n, k] (a
 * weight, one row per output channel):
 *   sa[i] = max_k |A[i, k]| / 127      qa[i, k] = round(A[i, k] / sa[i])
 *   sb[j] = max_k |B[j, k]| / 127      qb[j, k] = round(B[j, k] / sb[j])
 *   C[i, j] = alpha * sa[i] * sb[j] * sum_k qa[i, k] qb[j, k] (+ beta C)
 * Symmetric, one scale per row of A (per token) and per output channel, both
 * taken from the operands at every call: nothing is cached, so a weight
 * changed between calls is simply quantized again (a BERT weight costs
 * about 1/m of its product). The sums are exact s32 (|sum| <= 127^2 k, below
 * 2^31 for k < 133,000) from oneDNN's u8 x s8 gemm: VNNI dot products take
 * an unsigned operand, so qa is stored + 128 with zero point 128.
 * Rounding is to nearest even; a row holding NaN or Inf gives NaN for
 * its whole row (of A) or column (of B) of C, never a finite guess.
 * Offered (gemm_compute i8) only with oneDNN on a CPU with VNNI: without it
 * oneDNN pairs products in saturating 16-bit sums (vpmaddubsw), which would
 * silently clip. */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "cpu_kernels.h"
#include "tensorplug/error.h"

#ifdef TP_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif

static inline void *mem_ptr(tp_mem m) { return (char *)m.buf->ptr + m.off; }

bool cpu_gemm_i8_available(void) {
#ifdef TP_HAVE_ONEDNN
  if (cpu_gemm_lib_sel != CPU_GEMM_ONEDNN) return false;
  unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
  unsigned v512 = (unsigned)dnnl_cpu_isa_avx512_core_vnni, v2 = (unsigned)dnnl_cpu_isa_avx2_vnni;
  return (isa & v512) == v512 || (isa & v2) == v2;
#else
  return false;
#endif
}

#ifdef TP_HAVE_ONEDNN

/* max |x[j]|, or NaN when any element is NaN or infinite. On the bits: a
 * float's magnitude orders as its unsigned bits without the sign, and an
 * integer max reduction vectorises where a float one may not (NaN). */
CPU_INLINE float absmax_row_impl(const float *restrict x, int n) {
  uint32_t m = 0;
  for (int j = 0; j < n; j++) {
    uint32_t u;
    memcpy(&u, &x[j], 4);
    u &= 0x7fffffffu;
    m = u > m ? u : m;
  }
  if (m > 0x7f7fffffu) return NAN; /* Inf or NaN */
  float f;
  memcpy(&f, &m, 4);
  return f;
}
CPU_VARIANTS_RET(float, absmax_row, (const float *restrict x, int n), (x, n))

/* q[j] = rne(x[j] * inv) + offset, the rounded value clamped to
 * [-127, 127] (offset 0: s8; 128: the u8 VNNI takes). Round to nearest
 * even, as the vector conversion does. */
static void quant_row_scalar(uint8_t *restrict q, const float *restrict x, int n, float inv,
                             int offset) {
  for (int j = 0; j < n; j++) {
    float v = nearbyintf(x[j] * inv);
    v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
    q[j] = (uint8_t)((int)v + offset);
  }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
/* 16 at a time: multiply, convert (MXCSR: nearest even), clamp, narrow. */
__attribute__((target("avx512f"))) static void quant_row_avx512(uint8_t *restrict q,
                                                                const float *restrict x, int n,
                                                                float inv, int offset) {
  const __m512 s = _mm512_set1_ps(inv);
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127),
                off = _mm512_set1_epi32(offset);
  int j = 0;
  for (; j + 16 <= n; j += 16) {
    __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + j), s));
    v = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(v, lo), hi), off);
    _mm_storeu_si128((__m128i *)(q + j), _mm512_cvtepi32_epi8(v));
  }
  quant_row_scalar(q + j, x + j, n - j, inv, offset);
}

/* c[j] = s * sb[j] * acc[j] (+ beta c[j]); acc may be c itself. */
__attribute__((target("avx512f"))) static void dequant_row_avx512(float *c, const int32_t *acc,
                                                                  const float *restrict sb, int n,
                                                                  float s, float beta) {
  const __m512 sv = _mm512_set1_ps(s), bv = _mm512_set1_ps(beta);
  int j = 0;
  for (; j + 16 <= n; j += 16) {
    __m512 r = _mm512_mul_ps(_mm512_mul_ps(sv, _mm512_loadu_ps(sb + j)),
                             _mm512_cvtepi32_ps(_mm512_loadu_si512(acc + j)));
    if (beta != 0.0f) r = _mm512_fmadd_ps(bv, _mm512_loadu_ps(c + j), r);
    _mm512_storeu_ps(c + j, r);
  }
  for (; j < n; j++) {
    int32_t v;
    memcpy(&v, &acc[j], 4);
    float r = s * sb[j] * (float)v;
    c[j] = beta != 0.0f ? r + beta * c[j] : r;
  }
}
#define HAVE_AVX512_ROWS 1
#endif

static void quant_row(uint8_t *restrict q, const float *restrict x, int n, float inv, int offset) {
#ifdef HAVE_AVX512_ROWS
  if (cpu_isa >= CPU_ISA_AVX512) {
    quant_row_avx512(q, x, n, inv, offset);
    return;
  }
#endif
  quant_row_scalar(q, x, n, inv, offset);
}

static void dequant_row(float *c, const int32_t *acc, const float *restrict sb, int n, float s,
                        float beta) {
#ifdef HAVE_AVX512_ROWS
  if (cpu_isa >= CPU_ISA_AVX512) {
    dequant_row_avx512(c, acc, sb, n, s, beta);
    return;
  }
#endif
  for (int j = 0; j < n; j++) {
    int32_t v;
    memcpy(&v, &acc[j], 4);
    float r = s * sb[j] * (float)v;
    c[j] = beta != 0.0f ? r + beta * c[j] : r;
  }
}

/* rows x cols (row stride ld) -> dense q and one scale per row. */
static void quantize_rows(tp_backend_dev *d, uint8_t *q, float *scale, const float *src, int rows,
                          int cols, int64_t ld, int offset) {
  bool par = !omp_in_parallel() && (int64_t)rows * cols > 32768;
#pragma omp parallel for num_threads(d->threads) schedule(static) if (par)
  for (int i = 0; i < rows; i++) {
    const float *x = src + (int64_t)i * ld;
    uint8_t *qi = q + (int64_t)i * cols;
    float m = absmax_row(x, cols);
    if (isnan(m) || m == 0.0f) { /* all zero, or poisoned: the scale carries it */
      memset(qi, offset, (size_t)cols);
      scale[i] = m;
      continue;
    }
    scale[i] = m / 127.0f;
    quant_row(qi, x, cols, 127.0f / m, offset);
  }
}

/* Rows of A per block: bounds the scratch (64 MiB of sums). Smaller blocks
 * (sums kept in cache) measured slower here: oneDNN packs B again for
 * every call. */
static int block_rows(int m, int n) {
  int rb = (1 << 26) / (4 * MAX(n, 1));
  rb = MAX(rb, 128) / 16 * 16;
  return MIN(rb, m);
}

bool cpu_gemm_i8(tp_backend_dev *d, const tp_gemm_args *g) {
  int m = g->m, n = g->n, k = g->k;
  if (g->ta || !g->tb || g->batch != 1 || k == 0 || g->ab_dtype != TP_F32 ||
      g->c_dtype != TP_F32 || !cpu_gemm_i8_available())
    return false;
  int rb = block_rows(m, n);
  size_t qa_bytes = ((size_t)rb * k + 63) / 64 * 64, qb_bytes = ((size_t)n * k + 63) / 64 * 64;
  /* s32 sums land in C itself unless beta needs the old C */
  size_t acc_bytes = g->beta != 0.0f ? sizeof(int32_t) * (size_t)rb * n : 0;
  size_t bytes = qa_bytes + qb_bytes + sizeof(float) * ((size_t)rb + n) + acc_bytes;
  uint8_t *qa = cpu_scratch(d, CPU_SCRATCH_GEMM, bytes);
  if (!qa) return true; /* the error is recorded */
  int8_t *qb = (int8_t *)(qa + qa_bytes);
  float *sa = (float *)(qa + qa_bytes + qb_bytes), *sb = sa + rb;
  int32_t *scr = acc_bytes ? (int32_t *)(sb + n) : NULL;
  quantize_rows(d, (uint8_t *)qb, sb, mem_ptr(g->b), n, k, g->ldb, 0);
  if (omp_get_max_threads() != d->threads) omp_set_num_threads(d->threads);
  const float *A = mem_ptr(g->a);
  float *C = mem_ptr(g->c);
  const int32_t co = 0;
  for (int r0 = 0; r0 < m; r0 += rb) {
    int rows = MIN(rb, m - r0);
    float *c = C + (int64_t)r0 * g->ldc;
    int32_t *acc = scr ? scr : (int32_t *)(void *)c;
    int64_t ldacc = scr ? n : g->ldc;
    quantize_rows(d, qa, sa, A + (int64_t)r0 * g->lda, rows, k, g->lda, 128);
    dnnl_status_t st = dnnl_gemm_u8s8s32('N', 'T', 'F', rows, n, k, 1.0f, qa, k, 128, qb, k, 0,
                                         0.0f, acc, ldacc, &co);
    if (st != dnnl_success) {
      cpu_set_error(d, TP_ERROR_INVALID_ARGUMENT, "cpu gemm: oneDNN u8s8s32 gemm failed (status "
                    "%d) for %dx%dx%d", (int)st, rows, n, k);
      return true;
    }
    bool par = !omp_in_parallel() && (int64_t)rows * n > 32768;
#pragma omp parallel for num_threads(d->threads) schedule(static) if (par)
    for (int i = 0; i < rows; i++)
      dequant_row(c + (int64_t)i * g->ldc, acc + (int64_t)i * ldacc, sb, n, g->alpha * sa[i],
                  g->beta);
  }
  return true;
}

#else

bool cpu_gemm_i8(tp_backend_dev *d, const tp_gemm_args *g) {
  (void)d, (void)g;
  return false;
}

#endif
