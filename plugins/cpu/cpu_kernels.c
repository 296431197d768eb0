/* plugins/cpu/cpu_kernels.c — the CPU backend's kernels: the reference every
 * other backend is tested against.
 *
 * Threading: every parallel region uses the device's team size
 * (num_threads(d->threads)) on the one libgomp pool OpenBLAS also uses.
 * Determinism: each output element is computed by one fixed sequence of
 * float operations that depends on the shapes only, never on the thread
 * count or schedule. Reductions across rows (bias_grad, layernorm dgamma and
 * dbeta, sumsq) sum fixed-size chunks into partials and add the partials in
 * chunk order; embedding_bwd splits the work by columns so each dtable element
 * is accumulated in the order of i. Only GEMM (OpenBLAS) may vary with the
 * thread count.
 * Dispatch: see CPU_VARIANTS below. */
#include "cpu_kernels.h"

#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <string.h>

#include <cblas.h>

#include "tensorplug/error.h"
#include "tensorplug/optim_control.h"

int cpu_isa = CPU_ISA_BASE;

const char *cpu_isa_name(int level) {
  return level >= CPU_ISA_AVX512 ? "avx512" : level >= CPU_ISA_AVX2 ? "avx2" : "baseline";
}

static int cpu_isa_best(void) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return CPU_ISA_AVX512;
  if (__builtin_cpu_supports("avx2")) return CPU_ISA_AVX2;
#endif
  return CPU_ISA_BASE;
}

bool cpu_isa_init(GError **err) {
  int best = cpu_isa_best(), want = best;
  const char *env = g_getenv("TENSORPLUG_CPU_ISA");
  if (env && *env) {
    if (g_ascii_strcasecmp(env, "baseline") == 0) want = CPU_ISA_BASE;
    else if (g_ascii_strcasecmp(env, "avx2") == 0) want = CPU_ISA_AVX2;
    else if (g_ascii_strcasecmp(env, "avx512") == 0) want = CPU_ISA_AVX512;
    else {
      g_set_error(err, CPU_ERROR, TP_ERROR_INVALID_ARGUMENT, "cpu backend: TENSORPLUG_CPU_ISA="
                  "\"%s\" is not one of baseline, avx2, avx512; fix or unset it", env);
      return false;
    }
    if (want > best) {
      g_set_error(err, CPU_ERROR, TP_ERROR_UNAVAILABLE, "cpu backend: TENSORPLUG_CPU_ISA=%s, but "
                  "this CPU runs %s at best; unset it or ask for less", env, cpu_isa_name(best));
      return false;
    }
  }
  cpu_isa = want;
  return cpu_gemm_init(err);
}

/* Below this many elements an elementwise kernel runs on the calling thread:
 * waking the team costs more than the work. Thread-count independent. */
#define PAR_MIN 32768
/* Rows per partial in the cross-row reductions (fixed: results must not
 * depend on the thread count). */
#define RED_CHUNK 64
/* Elements per partial in sumsq. */
#define SUM_CHUNK 4096

/* ---------------------------------------------------------------- helpers */

static inline void *mem_ptr(tp_mem m) { return (char *)m.buf->ptr + m.off; }
static inline float *f32(tp_mem m) { return (float *)mem_ptr(m); }
static inline int32_t *i32(tp_mem m) { return (int32_t *)mem_ptr(m); }

/* -------------------------------------------------------------- embedding */

/* Every id must lie in [0, vocab); the caller gives rows [row0, row0 + rows)
 * of the table, and only those are touched. */
static bool check_ids(tp_backend_dev *d, const char *what, const int32_t *ids, int n, int row0,
                      int rows, int vocab) {
  if (row0 < 0 || rows < 0 || row0 > vocab - rows) {
    cpu_set_error(d, TP_ERROR_INVALID_ARGUMENT, "cpu %s: rows [%d, %d) are not inside a table "
                  "of %d rows", what, row0, row0 + rows, vocab);
    return false;
  }
  for (int i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= vocab) {
      cpu_set_error(d, TP_ERROR_INVALID_ARGUMENT, "cpu %s: id %d at position %d is outside the "
                    "table's %d rows", what, ids[i], i, vocab);
      return false;
    }
  return true;
}

void cpu_embedding_fwd(tp_backend_dev *d, tp_mem out, tp_mem table, tp_mem ids, int n, int h,
                       int row0, int rows, int vocab) {
  const int32_t *id = i32(ids);
  if (!check_ids(d, "embedding_fwd", id, n, row0, rows, vocab)) return;
  float *o = f32(out);
  const float *t = f32(table);
#pragma omp parallel for num_threads(d->threads) schedule(static) if ((int64_t)n * h > PAR_MIN)
  for (int i = 0; i < n; i++) {
    int64_t r = (int64_t)id[i] - row0;
    if (r >= 0 && r < rows) memcpy(o + (int64_t)i * h, t + r * h, sizeof(float) * (size_t)h);
  }
}

/* Column blocks: each thread owns whole columns of dtable and walks i in
 * order, so repeated ids accumulate in the same order as a serial loop. */
#define EMB_COLS 64
void cpu_embedding_bwd(tp_backend_dev *d, tp_mem dtable, tp_mem dout, tp_mem ids, int n, int h,
                       int row0, int rows, int vocab) {
  const int32_t *id = i32(ids);
  if (!check_ids(d, "embedding_bwd", id, n, row0, rows, vocab)) return;
  float *dt = f32(dtable);
  const float *g = f32(dout);
  int blocks = (h + EMB_COLS - 1) / EMB_COLS;
#pragma omp parallel for num_threads(d->threads) schedule(static) if ((int64_t)n * h > PAR_MIN)
  for (int cb = 0; cb < blocks; cb++) {
    int c0 = cb * EMB_COLS, c1 = MIN(h, c0 + EMB_COLS);
    for (int i = 0; i < n; i++) {
      int64_t r = (int64_t)id[i] - row0;
      if (r < 0 || r >= rows) continue;
      float *restrict dst = dt + r * h;
      const float *restrict src = g + (int64_t)i * h;
      for (int c = c0; c < c1; c++) dst[c] += src[c];
    }
  }
}

/* -------------------------------------------------------------- layernorm */

CPU_INLINE void layernorm_row_impl(float *restrict y, float *restrict mean, float *restrict rstd,
                          const float *restrict x, const float *restrict gamma,
                          const float *restrict beta, int cols, float eps) {
  float mu = lanes_sum(x, cols) / (float)cols;
  /* two-pass variance: no cancellation for rows with a large mean */
  float acc[LANES] = {0};
  int j = 0;
  for (; j + LANES <= cols; j += LANES)
    for (int l = 0; l < LANES; l++) acc[l] += (x[j + l] - mu) * (x[j + l] - mu);
  for (int l = 0; j + l < cols; l++) acc[l] += (x[j + l] - mu) * (x[j + l] - mu);
  float var = (((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))) /
              (float)cols;
  float rs = 1.0f / sqrtf(var + eps);
  for (int c = 0; c < cols; c++) y[c] = (x[c] - mu) * rs * gamma[c] + beta[c];
  *mean = mu;
  *rstd = rs;
}
CPU_VARIANTS_256(layernorm_row,
                 (float *restrict y, float *restrict mean, float *restrict rstd, const float *restrict x, const float *restrict gamma, const float *restrict beta, int cols, float eps),
                 (y, mean, rstd, x, gamma, beta, cols, eps))

void cpu_layernorm_fwd(tp_backend_dev *d, tp_mem y, tp_mem mean, tp_mem rstd, tp_mem x,
                       tp_mem gamma, tp_mem beta, int rows, int cols, float eps) {
  if (rows <= 0 || cols <= 0) return;
  float *yy = f32(y), *mu = f32(mean), *rs = f32(rstd);
  const float *xx = f32(x), *g = f32(gamma), *b = f32(beta);
#pragma omp parallel for num_threads(d->threads)                                                   \
    schedule(static) if ((int64_t)rows * cols > PAR_MIN)
  for (int r = 0; r < rows; r++)
    layernorm_row(yy + (int64_t)r * cols, mu + r, rs + r, xx + (int64_t)r * cols, g, b, cols, eps);
}

/* dx += rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * gamma.
 * Also adds this row's dy * xhat and dy to the chunk partials pg, pb [cols]. */
CPU_INLINE void layernorm_bwd_row_impl(float *restrict dx, float *restrict pg, float *restrict pb,
                              const float *restrict dy, const float *restrict x, float mu, float rs,
                              const float *restrict gamma, float *restrict tmp, int cols) {
  float *restrict xhat = tmp, *restrict dxhat = tmp + cols;
  for (int c = 0; c < cols; c++) {
    xhat[c] = (x[c] - mu) * rs;
    dxhat[c] = dy[c] * gamma[c];
  }
  float m1 = lanes_sum(dxhat, cols) / (float)cols;
  float m2 = lanes_dot(dxhat, xhat, cols) / (float)cols;
  for (int c = 0; c < cols; c++) {
    dx[c] += rs * (dxhat[c] - m1 - xhat[c] * m2);
    pg[c] += dy[c] * xhat[c];
    pb[c] += dy[c];
  }
}
CPU_VARIANTS(layernorm_bwd_row,
             (float *restrict dx, float *restrict pg, float *restrict pb, const float *restrict dy, const float *restrict x, float mu, float rs, const float *restrict gamma, float *restrict tmp, int cols),
             (dx, pg, pb, dy, x, mu, rs, gamma, tmp, cols))

/* dgamma, dbeta += the per-chunk partials part[ch] = {gamma [cols], beta
 * [cols]}, summed in chunk order (the same for any thread count); called
 * inside a parallel region, it splits the columns across its threads. */
static void gamma_beta_sum(float *dg, float *db, const float *part, int64_t chunks, int cols) {
#pragma omp for schedule(static)
  for (int c = 0; c < cols; c++) {
    float sg = 0.0f, sb = 0.0f;
    for (int64_t ch = 0; ch < chunks; ch++) {
      sg += part[(size_t)ch * 2 * cols + c];
      sb += part[(size_t)ch * 2 * cols + cols + c];
    }
    dg[c] += sg;
    db[c] += sb;
  }
}

void cpu_layernorm_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dgamma, tp_mem dbeta, tp_mem dy,
                       tp_mem x, tp_mem mean, tp_mem rstd, tp_mem gamma, int rows, int cols) {
  if (rows <= 0 || cols <= 0) return;
  int chunks = (rows + RED_CHUNK - 1) / RED_CHUNK;
  /* partials: [chunks][2][cols] (dgamma then dbeta) */
  size_t bytes = sizeof(float) * (size_t)chunks * 2 * (size_t)cols;
  float *part = g_try_malloc0(bytes);
  if (!part) {
    cpu_set_error(d, TP_ERROR_OUT_OF_MEMORY, "cpu layernorm_bwd: out of memory for %zu bytes",
                  bytes);
    return;
  }
  float *ddx = f32(dx), *dg = f32(dgamma), *db = f32(dbeta);
  const float *ddy = f32(dy), *xx = f32(x), *mu = f32(mean), *rs = f32(rstd), *g = f32(gamma);
#pragma omp parallel num_threads(d->threads) if ((int64_t)rows * cols > PAR_MIN)
  {
    float *tmp = g_malloc(sizeof(float) * 2 * (size_t)cols);
#pragma omp for schedule(static)
    for (int ch = 0; ch < chunks; ch++) {
      float *pg = part + (size_t)ch * 2 * cols, *pb = pg + cols;
      for (int r = ch * RED_CHUNK; r < MIN(rows, (ch + 1) * RED_CHUNK); r++) {
        int64_t o = (int64_t)r * cols;
        layernorm_bwd_row(ddx + o, pg, pb, ddy + o, xx + o, mu[r], rs[r], g, tmp, cols);
      }
    }
    g_free(tmp);
    gamma_beta_sum(dg, db, part, chunks, cols);
  }
  g_free(part);
}

/* ---------------------------------------------------------------- softmax */

CPU_INLINE void softmax_row_impl(float *restrict y, const float *restrict x,
                                                const int32_t *restrict mask, int cols,
                                                float scale) {
  int live = 0;
  for (int j = 0; j < cols; j++) {
    bool on = !mask || mask[j] != 0;
    y[j] = on ? scale * x[j] : -INFINITY;
    live += on;
  }
  if (live == 0) { /* PyTorch's finfo.min fill makes every entry equal */
    for (int j = 0; j < cols; j++) y[j] = 1.0f / (float)cols;
    return;
  }
  float mx = lanes_max(y, cols);
  for (int j = 0; j < cols; j++) y[j] = exp_fast(y[j] - mx); /* masked: exp(-inf) = 0 */
  float inv = 1.0f / lanes_sum(y, cols);
  for (int j = 0; j < cols; j++) y[j] = (!mask || mask[j] != 0) ? y[j] * inv : 0.0f;
}
CPU_VARIANTS(softmax_row,
             (float *restrict y, const float *restrict x, const int32_t *restrict mask, int cols, float scale),
             (y, x, mask, cols, scale))

void cpu_softmax_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, tp_mem mask, int batch, int heads,
                     int rows, int cols, float scale) {
  if (batch <= 0 || heads <= 0 || rows <= 0 || cols <= 0) return;
  int64_t nrows = (int64_t)batch * heads * rows;
  float *yy = f32(y);
  const float *xx = f32(x);
  const int32_t *mk = mask.buf ? i32(mask) : NULL;
#pragma omp parallel for num_threads(d->threads) schedule(static) if (nrows * cols > PAR_MIN)
  for (int64_t r = 0; r < nrows; r++) {
    int64_t b = r / ((int64_t)heads * rows);
    softmax_row(yy + r * cols, xx + r * cols, mk ? mk + b * cols : NULL, cols, scale);
  }
}

CPU_INLINE void softmax_bwd_row_impl(float *restrict dx, const float *restrict dy, const float *restrict y,
                            int cols, float scale) {
  float dot = lanes_dot(dy, y, cols);
  for (int j = 0; j < cols; j++) dx[j] += scale * y[j] * (dy[j] - dot);
}
CPU_VARIANTS(softmax_bwd_row,
             (float *restrict dx, const float *restrict dy, const float *restrict y, int cols, float scale),
             (dx, dy, y, cols, scale))

void cpu_softmax_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem y, int batch, int heads,
                     int rows, int cols, float scale) {
  if (batch <= 0 || heads <= 0 || rows <= 0 || cols <= 0) return;
  int64_t nrows = (int64_t)batch * heads * rows;
  float *ddx = f32(dx);
  const float *ddy = f32(dy), *yy = f32(y);
#pragma omp parallel for num_threads(d->threads) schedule(static) if (nrows * cols > PAR_MIN)
  for (int64_t r = 0; r < nrows; r++)
    softmax_bwd_row(ddx + r * cols, ddy + r * cols, yy + r * cols, cols, scale);
}

/* ------------------------------------------------------------ activations */

/* Elementwise kernels run over blocks so each block is a clone-dispatched
 * call with restrict pointers the compiler can vectorise. Uses the caller's
 * `d` (device) and `n` (element count); `call` sees i0 and len. */
#define EW_BLOCK 4096
/* clang-format off */
#define EW_LOOP(call)                                                                     \
  do {                                                                                    \
    int64_t nb_ = (n + EW_BLOCK - 1) / EW_BLOCK;                                          \
    _Pragma("omp parallel for num_threads(d->threads) schedule(static) if (n > PAR_MIN)") \
    for (int64_t blk = 0; blk < nb_; blk++) {                                             \
      int64_t i0 = blk * EW_BLOCK, len = MIN((int64_t)EW_BLOCK, n - i0);                  \
      call;                                                                               \
    }                                                                                     \
  } while (0)
/* clang-format on */

/* Phi(x) = 0.5 erfc(-x / sqrt 2) and phi(x), branch-free so the loops
 * vectorise (libm's erff is a scalar call and was most of a BERT step's GELU
 * time). erfc(a) for a >= 0 is Abramowitz & Stegun 7.1.26 (absolute error
 * <= 1.5e-7), computed directly as t P(t) exp(-a^2), so the negative tail
 * keeps its relative accuracy instead of cancelling in 1 + erf. The same
 * exp(-x^2/2) serves the density. */
CPU_INLINE void gelu_cdf_pdf(float x, float *cdf, float *pdf) {
  const float p = 0.3275911f, a1 = 0.254829592f, a2 = -0.284496736f, a3 = 1.421413741f,
              a4 = -1.453152027f, a5 = 1.061405429f;
  float z = x * (float)M_SQRT1_2;
  float a = z < 0.0f ? -z : z;
  float t = 1.0f / (1.0f + p * a);
  float poly = t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5))));
  float e = exp_fast(-(a * a));
  float half_q = 0.5f * (poly * e); /* 0.5 erfc(a) */
  *cdf = z < 0.0f ? half_q : 1.0f - half_q;
  *pdf = 0.3989422804014327f * e; /* 1/sqrt(2 pi) exp(-x^2/2) */
}

CPU_INLINE void gelu_fwd_blk_impl(float *restrict y, const float *restrict x,
                                                 int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float cdf, pdf;
    gelu_cdf_pdf(x[i], &cdf, &pdf);
    y[i] = x[i] * cdf;
  }
}
CPU_VARIANTS(gelu_fwd_blk, (float *restrict y, const float *restrict x, int64_t n), (y, x, n))

CPU_INLINE void gelu_bwd_blk_impl(float *restrict dx, const float *restrict dy,
                                                 const float *restrict x, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float cdf, pdf;
    gelu_cdf_pdf(x[i], &cdf, &pdf);
    dx[i] += dy[i] * (cdf + x[i] * pdf);
  }
}
CPU_VARIANTS(gelu_bwd_blk,
             (float *restrict dx, const float *restrict dy, const float *restrict x, int64_t n),
             (dx, dy, x, n))

void cpu_gelu_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, int64_t n) {
  float *yy = f32(y);
  const float *xx = f32(x);
  EW_LOOP(gelu_fwd_blk(yy + i0, xx + i0, len));
}

void cpu_gelu_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem x, int64_t n) {
  float *ddx = f32(dx);
  const float *ddy = f32(dy), *xx = f32(x);
  EW_LOOP(gelu_bwd_blk(ddx + i0, ddy + i0, xx + i0, len));
}

CPU_INLINE void relu_fwd_blk_impl(float *restrict y, const float *restrict x,
                                                 int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}
CPU_VARIANTS(relu_fwd_blk, (float *restrict y, const float *restrict x, int64_t n), (y, x, n))

CPU_INLINE void relu_bwd_blk_impl(float *restrict dx, const float *restrict dy,
                                                 const float *restrict x, int64_t n) {
  for (int64_t i = 0; i < n; i++) dx[i] += x[i] > 0.0f ? dy[i] : 0.0f;
}
CPU_VARIANTS(relu_bwd_blk,
             (float *restrict dx, const float *restrict dy, const float *restrict x, int64_t n),
             (dx, dy, x, n))

void cpu_relu_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, int64_t n) {
  float *yy = f32(y);
  const float *xx = f32(x);
  EW_LOOP(relu_fwd_blk(yy + i0, xx + i0, len));
}

void cpu_relu_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem x, int64_t n) {
  float *ddx = f32(dx);
  const float *ddy = f32(dy), *xx = f32(x);
  EW_LOOP(relu_bwd_blk(ddx + i0, ddy + i0, xx + i0, len));
}

static void tanh_fwd_blk(float *restrict y, const float *restrict x, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = tanhf(x[i]);
}

CPU_INLINE void tanh_bwd_blk_impl(float *restrict dx, const float *restrict dy, const float *restrict y,
                         int64_t n) {
  for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * (1.0f - y[i] * y[i]);
}
CPU_VARIANTS(tanh_bwd_blk,
             (float *restrict dx, const float *restrict dy, const float *restrict y, int64_t n),
             (dx, dy, y, n))

void cpu_tanh_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, int64_t n) {
  float *yy = f32(y);
  const float *xx = f32(x);
  EW_LOOP(tanh_fwd_blk(yy + i0, xx + i0, len));
}

void cpu_tanh_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem y, int64_t n) {
  float *ddx = f32(dx);
  const float *ddy = f32(dy), *yy = f32(y);
  EW_LOOP(tanh_bwd_blk(ddx + i0, ddy + i0, yy + i0, len));
}

/* ------------------------------------------------------------------- bias */

void cpu_bias_add(tp_backend_dev *d, tp_mem y, tp_mem bias, int64_t rows, int cols) {
  if (rows <= 0 || cols <= 0) return;
  float *yy = f32(y);
  const float *b = f32(bias);
#pragma omp parallel for num_threads(d->threads) schedule(static) if (rows * cols > PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    float *restrict row = yy + r * cols;
    for (int c = 0; c < cols; c++) row[c] += b[c];
  }
}

void cpu_bias_grad(tp_backend_dev *d, tp_mem dbias, tp_mem dy, int64_t rows, int cols) {
  if (rows <= 0 || cols <= 0) return;
  int64_t chunks = (rows + RED_CHUNK - 1) / RED_CHUNK;
  size_t bytes = sizeof(float) * (size_t)chunks * (size_t)cols;
  float *part = g_try_malloc0(bytes);
  if (!part) {
    cpu_set_error(d, TP_ERROR_OUT_OF_MEMORY, "cpu bias_grad: out of memory for %zu bytes", bytes);
    return;
  }
  float *db = f32(dbias);
  const float *g = f32(dy);
#pragma omp parallel num_threads(d->threads) if (rows * cols > PAR_MIN)
  {
#pragma omp for schedule(static)
    for (int64_t ch = 0; ch < chunks; ch++) {
      float *restrict p = part + ch * cols;
      for (int64_t r = ch * RED_CHUNK; r < MIN(rows, (ch + 1) * RED_CHUNK); r++) {
        const float *restrict row = g + r * cols;
        for (int c = 0; c < cols; c++) p[c] += row[c];
      }
    }
#pragma omp for schedule(static)
    for (int c = 0; c < cols; c++) {
      float s = 0.0f;
      for (int64_t ch = 0; ch < chunks; ch++) s += part[ch * cols + c];
      db[c] += s;
    }
  }
  g_free(part);
}

/* ------------------------------------------------------------- arithmetic */

/* y may alias a or b: no restrict here. */
static void add_blk(float *y, const float *a, const float *b, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

CPU_INLINE void axpy_blk_impl(float *restrict y, const float *restrict x, float alpha, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] += alpha * x[i];
}
CPU_VARIANTS(axpy_blk,
             (float *restrict y, const float *restrict x, float alpha, int64_t n),
             (y, x, alpha, n))

static void fill_blk(float *restrict y, float v, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = v;
}

void cpu_add(tp_backend_dev *d, tp_mem y, tp_mem a, tp_mem b, int64_t n) {
  float *yy = f32(y);
  const float *aa = f32(a), *bb = f32(b);
  EW_LOOP(add_blk(yy + i0, aa + i0, bb + i0, len));
}

void cpu_axpy(tp_backend_dev *d, tp_mem y, tp_mem x, float alpha, int64_t n) {
  float *yy = f32(y);
  const float *xx = f32(x);
  EW_LOOP(axpy_blk(yy + i0, xx + i0, alpha, len));
}

void cpu_fill(tp_backend_dev *d, tp_mem y, float value, int64_t n) {
  float *yy = f32(y);
  EW_LOOP(fill_blk(yy + i0, value, len));
}

/* ---------------------------------------------------------------- dropout */

/* tp_philox_uniform(seed, ctr) with the rounds unrolled so a loop over ctr
 * vectorises (the header's loop keeps the caller scalar); the tests check it
 * bit for bit against the header. */
CPU_INLINE float philox_uniform_unrolled(uint32_t k0, uint32_t k1, uint64_t i) {
  uint32_t c0 = (uint32_t)i, c1 = (uint32_t)(i >> 32), c2 = 0, c3 = 0;
#pragma GCC unroll 10
  for (int r = 0; r < 10; r++) {
    uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    c1 = (uint32_t)p1;
    c3 = (uint32_t)p0;
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return (float)(c0 >> 8) * (1.0f / 16777216.0f);
}

/* Philox uniforms for counters ctr0 .. ctr0+n-1 into u[], 16 counters per
 * AVX-512 step with explicit 32x32->64 multiplies (GCC's auto-vectorised
 * unrolled loop spends most of its time shuffling). Integer arithmetic and an
 * exact int->float conversion: bit for bit philox_uniform_unrolled. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define CPU_PHILOX_AVX512 1
static bool have_avx512(void) { return cpu_isa >= CPU_ISA_AVX512; }

__attribute__((target("avx512f"))) static void philox_uniform_avx512(float *restrict u,
                                                                     uint32_t k0, uint32_t k1,
                                                                     uint64_t ctr0, int64_t n) {
  const __m512i m0 = _mm512_set1_epi32((int)0xD2511F53u), m1 = _mm512_set1_epi32((int)0xCD9E8D57u);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512 inv = _mm512_set1_ps(1.0f / 16777216.0f);
  const __mmask16 odd = 0xAAAA;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    uint64_t c = ctr0 + (uint64_t)i;
    uint32_t lo = (uint32_t)c, hi = (uint32_t)(c >> 32);
    if (lo > 0xFFFFFFFFu - 15u) break; /* the high word changes inside the block: scalar */
    __m512i c0 = _mm512_add_epi32(_mm512_set1_epi32((int)lo), lane);
    __m512i c1 = _mm512_set1_epi32((int)hi), c2 = _mm512_setzero_si512(), c3 = c2;
    uint32_t kk0 = k0, kk1 = k1;
    for (int r = 0; r < 10; r++) {
      __m512i e0 = _mm512_mul_epu32(c0, m0), o0 = _mm512_mul_epu32(_mm512_srli_epi64(c0, 32), m0);
      __m512i e2 = _mm512_mul_epu32(c2, m1), o2 = _mm512_mul_epu32(_mm512_srli_epi64(c2, 32), m1);
      __m512i hi0 = _mm512_mask_blend_epi32(odd, _mm512_srli_epi64(e0, 32), o0);
      __m512i lo0 = _mm512_mask_blend_epi32(odd, e0, _mm512_slli_epi64(o0, 32));
      __m512i hi2 = _mm512_mask_blend_epi32(odd, _mm512_srli_epi64(e2, 32), o2);
      __m512i lo2 = _mm512_mask_blend_epi32(odd, e2, _mm512_slli_epi64(o2, 32));
      __m512i n0 = _mm512_xor_si512(_mm512_xor_si512(hi2, c1), _mm512_set1_epi32((int)kk0));
      __m512i n2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32((int)kk1));
      c1 = lo2;
      c3 = lo0;
      c0 = n0;
      c2 = n2;
      kk0 += 0x9E3779B9u;
      kk1 += 0xBB67AE85u;
    }
    _mm512_storeu_ps(u + i, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(c0, 8)), inv));
  }
  for (; i < n; i++) u[i] = philox_uniform_unrolled(k0, k1, ctr0 + (uint64_t)i);
}
#endif

CPU_INLINE void philox_blk_impl(float *restrict u, uint32_t k0, uint32_t k1, uint64_t ctr0,
                                int64_t n) {
  for (int64_t i = 0; i < n; i++) u[i] = philox_uniform_unrolled(k0, k1, ctr0 + (uint64_t)i);
}
CPU_VARIANTS(philox_blk, (float *restrict u, uint32_t k0, uint32_t k1, uint64_t ctr0, int64_t n),
             (u, k0, k1, ctr0, n))

void cpu_philox_uniforms(float *u, uint64_t seed, uint64_t ctr0, int64_t n) {
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
#ifdef CPU_PHILOX_AVX512
  if (have_avx512()) {
    philox_uniform_avx512(u, k0, k1, ctr0, n);
    return;
  }
#endif
  philox_blk(u, k0, k1, ctr0, n);
}

/* The same dropout selects from precomputed uniforms (the AVX-512 path). */
CPU_INLINE void dropout_fwd_u_impl(float *restrict y, uint8_t *restrict keep,
                                                  const float *restrict x,
                                                  const float *restrict u, int64_t n, float p,
                                                  float scale) {
  if (keep)
    for (int64_t i = 0; i < n; i++) {
      bool on = u[i] >= p;
      y[i] = on ? x[i] * scale : 0.0f;
      keep[i] = (uint8_t)on;
    }
  else
    for (int64_t i = 0; i < n; i++) y[i] = u[i] >= p ? x[i] * scale : 0.0f;
}
CPU_VARIANTS(dropout_fwd_u,
             (float *restrict y, uint8_t *restrict keep, const float *restrict x, const float *restrict u, int64_t n, float p, float scale),
             (y, keep, x, u, n, p, scale))

CPU_INLINE void dropout_bwd_u_impl(float *restrict y, const float *restrict x,
                                                  const float *restrict u, int64_t n, float p,
                                                  float scale) {
  for (int64_t i = 0; i < n; i++) y[i] += u[i] >= p ? x[i] * scale : 0.0f;
}
CPU_VARIANTS(dropout_bwd_u,
             (float *restrict y, const float *restrict x, const float *restrict u, int64_t n, float p, float scale),
             (y, x, u, n, p, scale))

/* y[i] = keep ? x[i] * scale : 0, keep = philox(seed, ctr0 + i) >= p */
CPU_INLINE void dropout_fwd_blk_impl(float *restrict y, const float *restrict x,
                                                    int64_t n, float p, float scale, uint64_t seed,
                                                    uint64_t ctr0) {
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  for (int64_t i = 0; i < n; i++)
    y[i] = philox_uniform_unrolled(k0, k1, ctr0 + (uint64_t)i) >= p ? x[i] * scale : 0.0f;
}
CPU_VARIANTS(dropout_fwd_blk,
             (float *restrict y, const float *restrict x, int64_t n, float p, float scale, uint64_t seed, uint64_t ctr0),
             (y, x, n, p, scale, seed, ctr0))

/* y[i] += keep ? x[i] * scale : 0 */
CPU_INLINE void dropout_bwd_blk_impl(float *restrict y, const float *restrict x,
                                                    int64_t n, float p, float scale, uint64_t seed,
                                                    uint64_t ctr0) {
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  for (int64_t i = 0; i < n; i++)
    y[i] += philox_uniform_unrolled(k0, k1, ctr0 + (uint64_t)i) >= p ? x[i] * scale : 0.0f;
}
CPU_VARIANTS(dropout_bwd_blk,
             (float *restrict y, const float *restrict x, int64_t n, float p, float scale, uint64_t seed, uint64_t ctr0),
             (y, x, n, p, scale, seed, ctr0))

/* dropout_fwd_blk that also writes the keep mask (one byte per element). */
CPU_INLINE void dropout_keep_blk_impl(float *restrict y, uint8_t *restrict keep,
                                                     const float *restrict x, int64_t n, float p,
                                                     float scale, uint64_t seed, uint64_t ctr0) {
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  for (int64_t i = 0; i < n; i++) {
    bool on = philox_uniform_unrolled(k0, k1, ctr0 + (uint64_t)i) >= p;
    y[i] = on ? x[i] * scale : 0.0f;
    keep[i] = (uint8_t)on;
  }
}
CPU_VARIANTS(dropout_keep_blk,
             (float *restrict y, uint8_t *restrict keep, const float *restrict x, int64_t n, float p, float scale, uint64_t seed, uint64_t ctr0),
             (y, keep, x, n, p, scale, seed, ctr0))

/* dx[i] += keep[i] ? dy[i] * scale : 0 */
CPU_INLINE void dropout_bwd_keep_blk_impl(float *restrict dx,
                                                         const float *restrict dy,
                                                         const uint8_t *restrict keep, int64_t n,
                                                         float scale) {
  for (int64_t i = 0; i < n; i++) dx[i] += keep[i] ? dy[i] * scale : 0.0f;
}
CPU_VARIANTS(dropout_bwd_keep_blk,
             (float *restrict dx, const float *restrict dy, const uint8_t *restrict keep, int64_t n, float scale),
             (dx, dy, keep, n, scale))

/* One block (<= EW_BLOCK elements): forward (keep may be NULL) or backward
 * (acc), on the AVX-512 Philox path where the CPU has it. */
static void dropout_any_blk(float *y, uint8_t *keep, const float *x, int64_t n, float p,
                            float scale, uint64_t seed, uint64_t ctr0, bool acc) {
#ifdef CPU_PHILOX_AVX512
  if (have_avx512()) {
    float u[EW_BLOCK];
    philox_uniform_avx512(u, (uint32_t)seed, (uint32_t)(seed >> 32), ctr0, n);
    if (acc)
      dropout_bwd_u(y, x, u, n, p, scale);
    else
      dropout_fwd_u(y, keep, x, u, n, p, scale);
    return;
  }
#endif
  if (acc)
    dropout_bwd_blk(y, x, n, p, scale, seed, ctr0);
  else if (keep)
    dropout_keep_blk(y, keep, x, n, p, scale, seed, ctr0);
  else
    dropout_fwd_blk(y, x, n, p, scale, seed, ctr0);
}

static void dropout(tp_backend_dev *d, float *y, const float *x, int64_t n, float p, uint64_t seed,
                    uint64_t offset, bool acc) {
  if (!(p >= 0.0f && p <= 1.0f)) {
    cpu_set_error(d, TP_ERROR_INVALID_ARGUMENT, "cpu dropout: p=%g is not in [0, 1]", (double)p);
    return;
  }
  /* p == 1 drops everything (scale would be inf; 0 * inf must not happen) */
  float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
  if (p == 0.0f) {
    if (acc)
      EW_LOOP(axpy_blk(y + i0, x + i0, 1.0f, len));
    else
      memcpy(y, x, sizeof(float) * (size_t)MAX(n, 0));
    return;
  }
  if (acc)
    EW_LOOP(dropout_any_blk(y + i0, NULL, x + i0, len, p, scale, seed, offset + (uint64_t)i0, true));
  else
    EW_LOOP(dropout_any_blk(y + i0, NULL, x + i0, len, p, scale, seed, offset + (uint64_t)i0, false));
}

void cpu_dropout_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, int64_t n, float p, uint64_t seed,
                     uint64_t offset) {
  dropout(d, f32(y), f32(x), n, p, seed, offset, false);
}

void cpu_dropout_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, int64_t n, float p, uint64_t seed,
                     uint64_t offset) {
  dropout(d, f32(dx), f32(dy), n, p, seed, offset, true);
}

void cpu_dropout_fwd_keep(tp_backend_dev *d, tp_mem y, tp_mem keep, tp_mem x, int64_t n, float p,
                          uint64_t seed, uint64_t offset) {
  if (!(p >= 0.0f && p <= 1.0f)) {
    cpu_set_error(d, TP_ERROR_INVALID_ARGUMENT, "cpu dropout: p=%g is not in [0, 1]", (double)p);
    return;
  }
  float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
  float *yy = f32(y);
  const float *xx = f32(x);
  uint8_t *kk = mem_ptr(keep);
  if (p == 0.0f) { /* as dropout_fwd: a copy, everything kept */
    if (n > 0) {
      memcpy(yy, xx, sizeof(float) * (size_t)n);
      memset(kk, 1, (size_t)n);
    }
    return;
  }
  EW_LOOP(dropout_any_blk(yy + i0, kk + i0, xx + i0, len, p, scale, seed, offset + (uint64_t)i0,
                          false));
}

void cpu_dropout_bwd_keep(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem keep, int64_t n,
                          float p) {
  if (!(p >= 0.0f && p <= 1.0f)) {
    cpu_set_error(d, TP_ERROR_INVALID_ARGUMENT, "cpu dropout: p=%g is not in [0, 1]", (double)p);
    return;
  }
  float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
  float *ddx = f32(dx);
  const float *ddy = f32(dy);
  const uint8_t *kk = mem_ptr(keep);
  if (p == 0.0f) { /* as dropout_bwd: dx += dy */
    EW_LOOP(axpy_blk(ddx + i0, ddy + i0, 1.0f, len));
    return;
  }
  EW_LOOP(dropout_bwd_keep_blk(ddx + i0, ddy + i0, kk + i0, len, scale));
}

/* ---------------------------------------------------------------- permute */

void cpu_permute_0213(tp_backend_dev *d, tp_mem y, tp_mem x, int d0, int d1, int d2, int d3,
                      float beta) {
  if (d0 <= 0 || d1 <= 0 || d2 <= 0 || d3 <= 0) return;
  float *yy = f32(y);
  const float *xx = f32(x);
  int64_t pairs = (int64_t)d0 * d2, total = pairs * d1 * d3;
  /* one (i0, i2) pair: y[i0, i2, :, :] gathers x[i0, :, i2, :] */
#pragma omp parallel for num_threads(d->threads) schedule(static) if (total > PAR_MIN)
  for (int64_t p = 0; p < pairs; p++) {
    int64_t i0 = p / d2, i2 = p % d2;
    for (int i1 = 0; i1 < d1; i1++) {
      float *restrict dst = yy + ((i0 * d2 + i2) * d1 + i1) * d3;
      const float *restrict src = xx + ((i0 * d1 + i1) * d2 + i2) * d3;
      if (beta == 0.0f)
        memcpy(dst, src, sizeof(float) * (size_t)d3);
      else
        for (int c = 0; c < d3; c++) dst[c] = src[c] + beta * dst[c];
    }
  }
}

/* ------------------------------------------------------------ first token */

void cpu_first_token_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, int batch, int seq, int h) {
  (void)d;
  float *yy = f32(y);
  const float *xx = f32(x);
  for (int b = 0; b < batch; b++)
    memcpy(yy + (int64_t)b * h, xx + (int64_t)b * seq * h, sizeof(float) * (size_t)h);
}

void cpu_first_token_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, int batch, int seq, int h) {
  float *ddx = f32(dx);
  const float *ddy = f32(dy);
  for (int b = 0; b < batch; b++)
    axpy_blk(ddx + (int64_t)b * seq * h, ddy + (int64_t)b * h, 1.0f, h);
  (void)d;
}

/* ---------------------------------------------------------- cross-entropy */

static bool check_labels(tp_backend_dev *d, const char *what, const int32_t *lab, int batch,
                         int classes) {
  for (int b = 0; b < batch; b++)
    if (lab[b] < 0 || lab[b] >= classes) {
      cpu_set_error(d, TP_ERROR_INVALID_ARGUMENT,
                    "cpu %s: label %d at position %d is outside [0, %d)", what, lab[b], b, classes);
      return false;
    }
  return true;
}

/* logsumexp of one row, in double: the loss is a scalar people compare. */
static double row_lse(const float *z, int classes) {
  float mx = lanes_max(z, classes);
  double s = 0.0;
  for (int c = 0; c < classes; c++) s += exp((double)z[c] - mx);
  return mx + log(s);
}

void cpu_cross_entropy_fwd(tp_backend_dev *d, tp_mem loss, tp_mem logits, tp_mem labels, int batch,
                           int classes) {
  if (batch <= 0 || classes <= 0) return;
  const int32_t *lab = i32(labels);
  if (!check_labels(d, "cross_entropy_fwd", lab, batch, classes)) return;
  const float *z = f32(logits);
  double sum = 0.0; /* serial in b: deterministic, and batch is small */
  for (int b = 0; b < batch; b++) {
    const float *row = z + (int64_t)b * classes;
    sum += row_lse(row, classes) - row[lab[b]];
  }
  f32(loss)[0] = (float)(sum / batch);
}

void cpu_cross_entropy_bwd(tp_backend_dev *d, tp_mem dlogits, tp_mem dloss, tp_mem logits,
                           tp_mem labels, int batch, int classes) {
  if (batch <= 0 || classes <= 0) return;
  const int32_t *lab = i32(labels);
  if (!check_labels(d, "cross_entropy_bwd", lab, batch, classes)) return;
  const float *z = f32(logits);
  float *dz = f32(dlogits);
  double g = (double)f32(dloss)[0] / batch;
#pragma omp parallel for num_threads(d->threads)                                                   \
    schedule(static) if ((int64_t)batch * classes > PAR_MIN)
  for (int b = 0; b < batch; b++) {
    const float *row = z + (int64_t)b * classes;
    float *drow = dz + (int64_t)b * classes;
    double lse = row_lse(row, classes);
    for (int c = 0; c < classes; c++)
      drow[c] += (float)(g * (exp((double)row[c] - lse) - (c == lab[b] ? 1.0 : 0.0)));
  }
}

void cpu_count_correct(tp_backend_dev *d, tp_mem out, tp_mem logits, tp_mem labels, int batch,
                       int classes) {
  if (batch < 0 || classes <= 0) return;
  const int32_t *lab = i32(labels);
  if (!check_labels(d, "count_correct", lab, batch, classes)) return;
  const float *z = f32(logits);
  int correct = 0;
  for (int b = 0; b < batch; b++) {
    const float *row = z + (int64_t)b * classes;
    int best = 0;
    bool nan = isnan(row[0]);
    for (int c = 1; c < classes; c++) {
      nan = nan || isnan(row[c]);
      if (row[c] > row[best]) best = c;
    }
    correct += !nan && best == lab[b];
  }
  f32(out)[0] = (float)correct;
}

/* ------------------------------------------------------------------- Adam */

CPU_INLINE void adam_blk_impl(float *restrict p, const float *restrict g,
                                             float *restrict m, float *restrict v, int64_t n,
                                             float b1, float b2, float gs, float decay, float step,
                                             float vscale, float eps) {
  /* KERAS: p -= step * m / (sqrt(v) + eps), step = lr sqrt(1-b2^t)/(1-b1^t), vscale = 1
   * W:     p = p * decay - step * m / (sqrt(v) * vscale + eps), step = lr/(1-b1^t),
   *        vscale = 1/sqrt(1-b2^t) */
  for (int64_t i = 0; i < n; i++) {
    float gg = gs * g[i];
    float mm = b1 * m[i] + (1.0f - b1) * gg;
    float vv = b2 * v[i] + (1.0f - b2) * (gg * gg);
    m[i] = mm;
    v[i] = vv;
    p[i] = p[i] * decay - step * mm / (sqrtf(vv) * vscale + eps);
  }
}
CPU_VARIANTS(adam_blk,
             (float *restrict p, const float *restrict g, float *restrict m, float *restrict v, int64_t n, float b1, float b2, float gs, float decay, float step, float vscale, float eps),
             (p, g, m, v, n, b1, b2, gs, decay, step, vscale, eps))

void cpu_adam_step(tp_backend_dev *d, tp_mem p, tp_mem g, tp_mem m, tp_mem v, int64_t n,
                   const tp_adam_args *a) {
  if (a->step < 1) {
    cpu_set_error(d, TP_ERROR_INVALID_ARGUMENT, "cpu adam_step: step %lld must start at 1",
                  (long long)a->step);
    return;
  }
  /* bias corrections in double once; the loop stays f32 */
  double t = (double)a->step;
  double c1 = 1.0 - pow(a->beta1, t), c2 = 1.0 - pow(a->beta2, t);
  float step, vscale, decay;
  if (a->mode == TP_ADAM_W) {
    step = (float)(a->lr / c1);
    vscale = (float)(1.0 / sqrt(c2));
    decay = (float)(1.0 - (double)a->lr * a->weight_decay);
  } else { /* Keras's Adam has no decoupled decay: weight_decay is ignored */
    step = (float)(a->lr * sqrt(c2) / c1);
    vscale = 1.0f;
    decay = 1.0f;
  }
  float gs = a->grad_scale;
  if (a->ctl.buf) { /* the device-side control block (clipping, loss scale, skip) */
    const float *ctl = f32(a->ctl);
    if (ctl[TP_CTL_SKIP] != 0.0f) return;
    gs *= ctl[TP_CTL_GRAD_SCALE];
  }
  float *pp = f32(p), *mm = f32(m), *vv = f32(v);
  const float *gg = f32(g);
  EW_LOOP(adam_blk(pp + i0, gg + i0, mm + i0, vv + i0, len, a->beta1, a->beta2, gs, decay, step,
                   vscale, a->eps));
}

void cpu_optim_control(tp_backend_dev *d, tp_mem ctl, const tp_control_args *args) {
  (void)d;
  tp_optim_control_host(f32(ctl), args);
}

/* ------------------------------------------------------------- reductions */

void cpu_sumsq(tp_backend_dev *d, tp_mem out, tp_mem x, int64_t n) {
  if (n <= 0) return;
  const float *xx = f32(x);
  int64_t chunks = (n + SUM_CHUNK - 1) / SUM_CHUNK;
  float stack_part[64];
  float *part = chunks <= 64 ? stack_part : g_try_malloc(sizeof(float) * (size_t)chunks);
  if (!part) {
    cpu_set_error(d, TP_ERROR_OUT_OF_MEMORY, "cpu sumsq: out of memory for %zu bytes",
                  sizeof(float) * (size_t)chunks);
    return;
  }
#pragma omp parallel for num_threads(d->threads) schedule(static) if (n > PAR_MIN)
  for (int64_t ch = 0; ch < chunks; ch++) {
    const float *c = xx + ch * SUM_CHUNK;
    int64_t len = MIN((int64_t)SUM_CHUNK, n - ch * SUM_CHUNK);
    part[ch] = lanes_dot(c, c, len);
  }
  float s = 0.0f; /* chunk order: thread-count independent */
  for (int64_t ch = 0; ch < chunks; ch++) s += part[ch];
  f32(out)[0] += s;
  if (part != stack_part) g_free(part);
}

CPU_INLINE void nonfinite_blk_impl(const float *restrict x, int64_t n, int *out) {
  uint32_t any = 0;
  for (int64_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &x[i], sizeof u);
    any |= (u & 0x7f800000u) == 0x7f800000u;
  }
  *out = any != 0;
}
CPU_VARIANTS(nonfinite_blk, (const float *restrict x, int64_t n, int *out), (x, n, out))

void cpu_nonfinite(tp_backend_dev *d, tp_mem out, tp_mem x, int64_t n) {
  if (n <= 0) return;
  const float *xx = f32(x);
  int64_t nb = (n + EW_BLOCK - 1) / EW_BLOCK;
  int any = 0;
#pragma omp parallel for num_threads(d->threads) schedule(static)                                  \
    reduction(|                                                                                    \
              : any) if (n > PAR_MIN)
  for (int64_t blk = 0; blk < nb; blk++)
  {
    int one = 0;
    nonfinite_blk(xx + blk * EW_BLOCK, MIN((int64_t)EW_BLOCK, n - blk * EW_BLOCK), &one);
    any |= one;
  }
  if (any) i32(out)[0] = 1;
}

/* ------------------------------------------------------------------ casts */

/* The same round-to-nearest-even conversions as core/dtype.c (the plugin does
 * not link libtensorplug). */
static uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static float bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static inline uint16_t to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

static inline float from_bf16(uint16_t h) { return bits_f32((uint32_t)h << 16); }

static uint16_t to_f16(float f) {
  uint32_t u = f32_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u, abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);  /* NaN */
  if (abs >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to Inf */
  if (abs < 0x38800000u) { /* f16 subnormal or zero: value / 2^-24, to nearest even */
    return (uint16_t)(sign | (uint32_t)nearbyintf(bits_f32(abs) * 16777216.0f));
  }
  uint32_t mant = abs & 0x7fffffu, exp = (abs >> 23) - 127 + 15;
  uint32_t h = (exp << 10) | (mant >> 13), rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++; /* carries into exp correctly */
  return (uint16_t)(sign | h);
}

static float from_f16(uint16_t h) {
  uint32_t sign = ((uint32_t)h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0) {
    float v = (float)mant * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (exp == 31) return bits_f32(sign | 0x7f800000u | (mant << 13));
  return bits_f32(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

uint16_t cpu_f32_to_half(float f, tp_dtype t) { return t == TP_BF16 ? to_bf16(f) : to_f16(f); }
float cpu_half_to_f32(uint16_t h, tp_dtype t) {
  return t == TP_BF16 ? from_bf16(h) : from_f16(h);
}

static void cast_blk(void *y, tp_dtype ydt, const void *x, tp_dtype xdt, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float v = xdt == TP_F32 ? ((const float *)x)[i] : cpu_half_to_f32(((const uint16_t *)x)[i], xdt);
    if (ydt == TP_F32)
      ((float *)y)[i] = v;
    else
      ((uint16_t *)y)[i] = cpu_f32_to_half(v, ydt);
  }
}

void cpu_cast(tp_backend_dev *d, tp_mem y, tp_dtype ydt, tp_mem x, tp_dtype xdt, int64_t n) {
  bool ok_y = ydt == TP_F32 || ydt == TP_BF16 || ydt == TP_F16;
  bool ok_x = xdt == TP_F32 || xdt == TP_BF16 || xdt == TP_F16;
  if (!ok_x || !ok_y) {
    cpu_set_error(d, TP_ERROR_UNAVAILABLE,
                  "cpu cast: %d -> %d is not supported (f32, bf16, f16 only)", (int)xdt, (int)ydt);
    return;
  }
  if (n <= 0) return;
  size_t ys = ydt == TP_F32 ? 4 : 2, xs = xdt == TP_F32 ? 4 : 2;
  char *yy = mem_ptr(y);
  const char *xx = mem_ptr(x);
  if (xdt == ydt) {
    memcpy(yy, xx, xs * (size_t)n);
    return;
  }
  EW_LOOP(cast_blk(yy + (size_t)i0 * ys, ydt, xx + (size_t)i0 * xs, xdt, len));
}

/* ------------------------------------------------------------ fused slots */

/* Each fused kernel does, per element and per row, exactly the float
 * operations of the basic kernels it replaces, in the same order (the
 * reductions with the same RED_CHUNK partials): the results are bitwise those
 * of the composition (tests/test_cpu_kernels.c checks it). What goes away is
 * the memory traffic of the intermediate tensors and the zeroing of
 * gradients nothing has written yet. */

CPU_INLINE void bias_gelu_row_impl(float *restrict y, float *restrict x,
                                   const float *restrict b, int cols) {
  for (int c = 0; c < cols; c++) {
    float v = x[c] + b[c], cdf, pdf;
    gelu_cdf_pdf(v, &cdf, &pdf);
    x[c] = v;
    y[c] = v * cdf;
  }
}
CPU_VARIANTS(bias_gelu_row, (float *restrict y, float *restrict x, const float *restrict b, int cols),
             (y, x, b, cols))

void cpu_bias_gelu_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, tp_mem bias, int64_t rows,
                       int cols) {
  if (rows <= 0 || cols <= 0) return;
  float *yy = f32(y), *xx = f32(x);
  const float *b = f32(bias);
#pragma omp parallel for num_threads(d->threads) schedule(static) if (rows * cols > PAR_MIN)
  for (int64_t r = 0; r < rows; r++) bias_gelu_row(yy + r * cols, xx + r * cols, b, cols);
}

/* dx = dy * gelu'(pre) (written: 0 + ... as gelu_bwd into a zeroed tensor
 * gives), and added to the chunk partial. */
CPU_INLINE void bias_gelu_bwd_row_impl(float *restrict dx, float *restrict part,
                                       const float *restrict dy, const float *restrict pre,
                                       int cols) {
  for (int c = 0; c < cols; c++) {
    float cdf, pdf;
    gelu_cdf_pdf(pre[c], &cdf, &pdf);
    float g = 0.0f + dy[c] * (cdf + pre[c] * pdf);
    dx[c] = g;
    part[c] += g;
  }
}
CPU_VARIANTS(bias_gelu_bwd_row,
             (float *restrict dx, float *restrict part, const float *restrict dy, const float *restrict pre, int cols),
             (dx, part, dy, pre, cols))

/* Chunk partials [chunks][n_sums][cols], zeroed; NULL (error recorded) when
 * out of memory. */
static float *chunk_partials(tp_backend_dev *d, const char *what, int64_t rows, int cols,
                             int n_sums, int64_t *chunks) {
  *chunks = (rows + RED_CHUNK - 1) / RED_CHUNK;
  size_t bytes = sizeof(float) * (size_t)*chunks * (size_t)n_sums * (size_t)cols;
  float *part = g_try_malloc0(bytes);
  if (!part)
    cpu_set_error(d, TP_ERROR_OUT_OF_MEMORY, "cpu %s: out of memory for %zu bytes", what, bytes);
  return part;
}

void cpu_bias_gelu_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dbias, tp_mem dy, tp_mem pre,
                       int64_t rows, int cols) {
  if (rows <= 0 || cols <= 0) return;
  int64_t chunks;
  float *part = chunk_partials(d, "bias_gelu_bwd", rows, cols, 1, &chunks);
  if (!part) return;
  float *ddx = f32(dx), *db = f32(dbias);
  const float *ddy = f32(dy), *pp = f32(pre);
#pragma omp parallel num_threads(d->threads) if (rows * cols > PAR_MIN)
  {
#pragma omp for schedule(static)
    for (int64_t ch = 0; ch < chunks; ch++)
      for (int64_t r = ch * RED_CHUNK; r < MIN(rows, (ch + 1) * RED_CHUNK); r++)
        bias_gelu_bwd_row(ddx + r * cols, part + ch * cols, ddy + r * cols, pp + r * cols, cols);
#pragma omp for schedule(static)
    for (int c = 0; c < cols; c++) {
      float sum = 0.0f;
      for (int64_t ch = 0; ch < chunks; ch++) sum += part[ch * cols + c];
      db[c] += sum;
    }
  }
  g_free(part);
}

/* s = dropout(a) + b for one row (u: the row's uniforms, NULL when p == 0),
 * keep bytes written when p > 0. */
CPU_INLINE void drop_add_row_impl(float *restrict s, uint8_t *restrict keep,
                                  const float *restrict a, const float *restrict b,
                                  const float *restrict u, int cols, float p, float scale) {
  if (u)
    for (int c = 0; c < cols; c++) {
      bool on = u[c] >= p;
      s[c] = (on ? a[c] * scale : 0.0f) + b[c];
      keep[c] = (uint8_t)on;
    }
  else
    for (int c = 0; c < cols; c++) s[c] = a[c] + b[c];
}
CPU_VARIANTS(drop_add_row,
             (float *restrict s, uint8_t *restrict keep, const float *restrict a, const float *restrict b, const float *restrict u, int cols, float p, float scale),
             (s, keep, a, b, u, cols, p, scale))

static bool add_ln_check(tp_backend_dev *d, const tp_add_ln_args *a, const char *what) {
  if (!(a->p >= 0.0f && a->p < 1.0f)) {
    cpu_set_error(d, TP_ERROR_INVALID_ARGUMENT, "cpu %s: dropout p=%g is not in [0, 1)", what,
                  (double)a->p);
    return false;
  }
  return a->rows > 0 && a->cols > 0;
}

void cpu_add_layernorm_fwd(tp_backend_dev *d, const tp_add_ln_args *a) {
  if (!add_ln_check(d, a, "add_layernorm_fwd")) return;
  int rows = a->rows, cols = a->cols;
  float scale = a->p > 0.0f ? 1.0f / (1.0f - a->p) : 1.0f;
  float *y = f32(a->y), *s = f32(a->s), *mu = f32(a->mean), *rs = f32(a->rstd);
  const float *aa = f32(a->a), *bb = f32(a->b), *g = f32(a->gamma), *be = f32(a->beta);
  uint8_t *keep = a->p > 0.0f ? mem_ptr(a->keep) : NULL;
#pragma omp parallel num_threads(d->threads) if ((int64_t)rows * cols > PAR_MIN)
  {
    float *u = a->p > 0.0f ? g_malloc(sizeof(float) * (size_t)cols) : NULL;
#pragma omp for schedule(static)
    for (int r = 0; r < rows; r++) {
      int64_t o = (int64_t)r * cols;
      if (u) cpu_philox_uniforms(u, a->seed, a->offset + (uint64_t)o, cols);
      drop_add_row(s + o, keep ? keep + o : NULL, aa + o, bb + o, u, cols, a->p, scale);
      layernorm_row(y + o, mu + r, rs + r, s + o, g, be, cols, a->eps);
    }
    g_free(u);
  }
}

/* ds (the LayerNorm gradient, layernorm_bwd's arithmetic into zeros) to db
 * and, through the dropout mask, to da; dy * xhat and dy to the partials. */
CPU_INLINE void add_ln_bwd_row_impl(float *restrict da, float *restrict db, float *restrict pg,
                                    float *restrict pb, const float *restrict dy,
                                    const float *restrict x, float mu, float rs,
                                    const float *restrict gamma, const uint8_t *restrict keep,
                                    float *restrict tmp, int cols, float scale, bool acc_a,
                                    bool acc_b) {
  float *restrict xhat = tmp, *restrict dxhat = tmp + cols, *restrict ds = tmp + 2 * cols;
  for (int c = 0; c < cols; c++) {
    xhat[c] = (x[c] - mu) * rs;
    dxhat[c] = dy[c] * gamma[c];
  }
  float m1 = lanes_sum(dxhat, cols) / (float)cols;
  float m2 = lanes_dot(dxhat, xhat, cols) / (float)cols;
  for (int c = 0; c < cols; c++) {
    ds[c] = 0.0f + rs * (dxhat[c] - m1 - xhat[c] * m2);
    pg[c] += dy[c] * xhat[c];
    pb[c] += dy[c];
  }
  if (db)
    for (int c = 0; c < cols; c++) db[c] = acc_b ? db[c] + ds[c] : 0.0f + ds[c];
  if (da) {
    if (keep)
      for (int c = 0; c < cols; c++) {
        float v = keep[c] ? ds[c] * scale : 0.0f;
        da[c] = acc_a ? da[c] + v : 0.0f + v;
      }
    else
      for (int c = 0; c < cols; c++) da[c] = acc_a ? da[c] + ds[c] : 0.0f + ds[c];
  }
}
CPU_VARIANTS(add_ln_bwd_row,
             (float *restrict da, float *restrict db, float *restrict pg, float *restrict pb, const float *restrict dy, const float *restrict x, float mu, float rs, const float *restrict gamma, const uint8_t *restrict keep, float *restrict tmp, int cols, float scale, bool acc_a, bool acc_b),
             (da, db, pg, pb, dy, x, mu, rs, gamma, keep, tmp, cols, scale, acc_a, acc_b))

void cpu_add_layernorm_bwd(tp_backend_dev *d, const tp_add_ln_args *a, tp_mem dy, tp_mem da,
                           tp_mem db, tp_mem dgamma, tp_mem dbeta, bool acc_a, bool acc_b) {
  if (!add_ln_check(d, a, "add_layernorm_bwd")) return;
  int rows = a->rows, cols = a->cols;
  int64_t chunks;
  /* partials: [chunks][2][cols] (dgamma then dbeta), as layernorm_bwd */
  float *part = chunk_partials(d, "add_layernorm_bwd", rows, cols, 2, &chunks);
  if (!part) return;
  float scale = a->p > 0.0f ? 1.0f / (1.0f - a->p) : 1.0f;
  float *dda = da.buf ? f32(da) : NULL, *ddb = db.buf ? f32(db) : NULL;
  float *dg = f32(dgamma), *dbe = f32(dbeta);
  const float *ddy = f32(dy), *x = f32(a->s), *mu = f32(a->mean), *rs = f32(a->rstd),
              *g = f32(a->gamma);
  const uint8_t *keep = a->p > 0.0f ? mem_ptr(a->keep) : NULL;
#pragma omp parallel num_threads(d->threads) if ((int64_t)rows * cols > PAR_MIN)
  {
    float *tmp = g_malloc(sizeof(float) * 3 * (size_t)cols);
#pragma omp for schedule(static)
    for (int64_t ch = 0; ch < chunks; ch++) {
      float *pg = part + (size_t)ch * 2 * cols, *pb = pg + cols;
      for (int64_t r = ch * RED_CHUNK; r < MIN((int64_t)rows, (ch + 1) * RED_CHUNK); r++) {
        int64_t o = r * cols;
        add_ln_bwd_row(dda ? dda + o : NULL, ddb ? ddb + o : NULL, pg, pb, ddy + o, x + o, mu[r],
                       rs[r], g, keep ? keep + o : NULL, tmp, cols, scale, acc_a, acc_b);
      }
    }
    g_free(tmp);
    gamma_beta_sum(dg, dbe, part, chunks, cols);
  }
  g_free(part);
}
