/* plugins/cuda/cuda_kernels.cu — the CUDA backend's kernels (all but the
 * matrix products, which are cuBLASLt's) and their launchers.
 *
 * Built twice: by nvcc into the plugin (sm_80, sm_90), and by the host C++
 * compiler against the emulator of sim/tpsim.h into the tests' "cudasim"
 * plugin, which compares every kernel with the CPU backend on machines
 * without a GPU. So: only what tpcu_compat.cuh provides, block sizes that
 * are multiples of 32, warp shuffles with every lane present, barriers that
 * every thread of the block reaches.
 *
 * Determinism: every output is computed by an order of float operations
 * that depends on the shapes only (fixed-size chunks for reductions, no
 * float atomics), so runs repeat bit for bit. */
#include "cuda_kernels.h"

#include "tpcu_compat.cuh"

#include <float.h>

#include <type_traits>

#define FULL_MASK 0xffffffffu

namespace {

constexpr int kThreads = TPCU_THREADS;             /* elementwise and reduction blocks */
constexpr int kRowsPerBlock = TPCU_ROWS_PER_BLOCK; /* row kernels: one warp per row */
constexpr int kRedRows = TPCU_RED_ROWS;
constexpr int kSumChunk = TPCU_SUM_CHUNK;
constexpr int kAttnThreads = 128; /* four warps */

/* ---------------------------------------------------------------- helpers */

TPCU_DEV int64_t global_index() { return (int64_t)blockIdx.x * blockDim.x + threadIdx.x; }
TPCU_DEV int64_t global_stride() { return (int64_t)gridDim.x * blockDim.x; }

TPCU_DEV float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  return v;
}
TPCU_DEV double warp_sum_d(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  return v;
}
TPCU_DEV float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
  return v;
}
TPCU_DEV int warp_sum_i(int v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  return v;
}

/* Records the first data error of the stream's kernels (see cuda_shared.h). */
TPCU_DEV void report(int32_t *err, int code, int64_t pos, int value, int limit) {
  if (atomicCAS(reinterpret_cast<int *>(err), 0, code) == 0) {
    err[1] = (int32_t)pos;
    err[2] = value;
    err[3] = limit;
  }
}

TPCU_DEV bool nonfinite_bits(float x) {
  return (tpcu_f32_bits(x) & 0x7f800000u) == 0x7f800000u;
}

TPCU_DEV float load_any(const void *p, int dt, int64_t i) {
  if (dt == 0) return static_cast<const float *>(p)[i];
  uint16_t h = static_cast<const uint16_t *>(p)[i];
  return dt == 1 ? tpcu_bf16_to_f32(h) : tpcu_f16_to_f32(h);
}
TPCU_DEV void store_any(void *p, int dt, int64_t i, float v) {
  if (dt == 0)
    static_cast<float *>(p)[i] = v;
  else
    static_cast<uint16_t *>(p)[i] = dt == 1 ? tpcu_f32_to_bf16(v) : tpcu_f32_to_f16(v);
}

/* GELU's normal CDF and density (the erf form, as the CPU backend). */
TPCU_DEV void gelu_cdf_pdf(float x, float *cdf, float *pdf) {
  *cdf = 0.5f * erfcf(-x * 0.70710678118654752f);
  *pdf = 0.3989422804014327f * expf(-0.5f * x * x);
}

/* ------------------------------------------------------------ elementwise */

__global__ void k_fill(float *y, float v, int64_t n) {
  for (int64_t i = global_index(); i < n; i += global_stride()) y[i] = v;
}

__global__ void k_add(float *y, const float *a, const float *b, int64_t n) {
  for (int64_t i = global_index(); i < n; i += global_stride()) y[i] = a[i] + b[i];
}

__global__ void k_axpy(float *y, const float *x, float alpha, int64_t n) {
  for (int64_t i = global_index(); i < n; i += global_stride()) y[i] += alpha * x[i];
}

__global__ void k_act_fwd(int act, float *y, const float *x, int64_t n) {
  for (int64_t i = global_index(); i < n; i += global_stride()) {
    float v = x[i], r;
    if (act == TPCU_ACT_GELU) {
      float cdf, pdf;
      gelu_cdf_pdf(v, &cdf, &pdf);
      r = v * cdf;
    } else if (act == TPCU_ACT_RELU) {
      r = v > 0.0f ? v : 0.0f;
    } else {
      r = tanhf(v);
    }
    y[i] = r;
  }
}

__global__ void k_act_bwd(int act, float *dx, const float *dy, const float *xy, int64_t n) {
  for (int64_t i = global_index(); i < n; i += global_stride()) {
    float v = xy[i], g = dy[i], r;
    if (act == TPCU_ACT_GELU) {
      float cdf, pdf;
      gelu_cdf_pdf(v, &cdf, &pdf);
      r = g * (cdf + v * pdf);
    } else if (act == TPCU_ACT_RELU) {
      r = v > 0.0f ? g : 0.0f;
    } else {
      r = g * (1.0f - v * v);
    }
    dx[i] += r;
  }
}

/* Rows spread over blocks, columns over a block's threads: no division per
 * element. */
__global__ void k_bias_add(float *y, const float *bias, int64_t rows, int cols) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float *yr = y + r * cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) yr[c] += bias[c];
  }
}

__global__ void k_dropout(float *y, uint8_t *keep, const float *x, int64_t n, float p, float scale,
                          uint32_t k0, uint32_t k1, uint64_t offset, bool accumulate) {
  for (int64_t i = global_index(); i < n; i += global_stride()) {
    bool on = p == 0.0f || tpcu_philox_uniform(k0, k1, offset + (uint64_t)i) >= p;
    float v = on ? x[i] * scale : 0.0f;
    if (accumulate)
      y[i] += v;
    else
      y[i] = v;
    if (keep) keep[i] = (uint8_t)on;
  }
}

__global__ void k_dropout_bwd_keep(float *dx, const float *dy, const uint8_t *keep, int64_t n,
                                   float scale) {
  for (int64_t i = global_index(); i < n; i += global_stride())
    dx[i] += keep[i] ? dy[i] * scale : 0.0f;
}

/* y [d0, d2, d1, d3] = x [d0, d1, d2, d3] permuted (+ beta * y): a block
 * per run of d3 contiguous elements of y (divisions per row, not per
 * element). */
__global__ void k_permute_0213(float *y, const float *x, int d0, int d1, int d2, int d3,
                               float beta) {
  int64_t rows = (int64_t)d0 * d2 * d1;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) { /* r = (i0 * d2 + i2) * d1 + i1 */
    int64_t t = r / d1;
    int i1 = (int)(r % d1), i2 = (int)(t % d2);
    int64_t i0 = t / d2;
    const float *xr = x + ((i0 * d1 + i1) * d2 + i2) * d3;
    float *yr = y + r * d3;
    for (int c = threadIdx.x; c < d3; c += blockDim.x)
      yr[c] = beta == 0.0f ? xr[c] : xr[c] + beta * yr[c];
  }
}

__global__ void k_first_token(bool backward, float *y, const float *x, int batch, int seq, int h) {
  int64_t n = (int64_t)batch * h;
  for (int64_t i = global_index(); i < n; i += global_stride()) {
    int64_t b = i / h, c = i % h;
    if (backward)
      y[b * seq * h + c] += x[i]; /* dx[b, 0, :] += dy[b, :] */
    else
      y[i] = x[b * seq * h + c];
  }
}

__global__ void k_adam(float *p, const float *g, float *m, float *v, int64_t n, tpcu_adam_k k,
                       const float *ctl) {
  float gs = k.grad_scale;
  if (ctl) {
    if (ctl[TPCU_CTL_SKIP] != 0.0f) return;
    gs *= ctl[TPCU_CTL_GRAD_SCALE];
  }
  for (int64_t i = global_index(); i < n; i += global_stride())
    tpcu_adam_update(&p[i], &m[i], &v[i], g[i], gs, k.b1, k.b2, k.decay, k.step, k.vscale, k.eps);
}

__global__ void k_optim_control(float *ctl, float max_norm, bool dynamic, int growth_interval,
                                float growth, float backoff) {
  if (threadIdx.x == 0 && blockIdx.x == 0)
    tpcu_optim_control(ctl, max_norm, dynamic ? 1 : 0, growth_interval, growth, backoff);
}

__global__ void k_nonfinite(int32_t *out, const float *x, int64_t n) {
  bool any = false;
  for (int64_t i = global_index(); i < n; i += global_stride()) any = any || nonfinite_bits(x[i]);
  if (any) *out = 1; /* every writer writes the same value */
}

__global__ void k_cast(void *y, int ydt, const void *x, int xdt, int64_t n) {
  for (int64_t i = global_index(); i < n; i += global_stride()) store_any(y, ydt, i, load_any(x, xdt, i));
}

__global__ void k_matrix_cast(void *y, int ydt, const void *x, int xdt, int batch, int rows,
                              int cols, int ld, int64_t stride) {
  int64_t per = (int64_t)rows * cols, n = per * batch;
  for (int64_t i = global_index(); i < n; i += global_stride()) {
    int64_t b = i / per, r = i % per / cols, c = i % cols;
    int64_t at = b * stride + r * ld + c;
    store_any(y, ydt, at, load_any(x, xdt, at));
  }
}

__global__ void k_matrix_scale(void *y, int dt, float beta, int batch, int rows, int cols, int ld,
                               int64_t stride) {
  int64_t per = (int64_t)rows * cols, n = per * batch;
  for (int64_t i = global_index(); i < n; i += global_stride()) {
    int64_t b = i / per, r = i % per / cols, c = i % cols;
    int64_t at = b * stride + r * ld + c;
    store_any(y, dt, at, beta == 0.0f ? 0.0f : beta * load_any(y, dt, at));
  }
}

/* ------------------------------------------------------------- row kernels */

/* One warp per row: block (32, kRowsPerBlock). */
TPCU_DEV int64_t warp_row() { return (int64_t)blockIdx.x * kRowsPerBlock + threadIdx.y; }

__global__ void k_layernorm_fwd(float *y, float *mean, float *rstd, const float *x,
                                const float *gamma, const float *beta, int rows, int cols,
                                float eps) {
  int64_t row = warp_row();
  if (row >= rows) return; /* whole warps */
  int lane = threadIdx.x;
  const float *xr = x + row * cols;
  float s = 0.0f;
  for (int c = lane; c < cols; c += 32) s += xr[c];
  float mu = warp_sum(s) / (float)cols;
  float q = 0.0f; /* two-pass variance, as the CPU backend */
  for (int c = lane; c < cols; c += 32) {
    float d = xr[c] - mu;
    q += d * d;
  }
  float var = warp_sum(q) / (float)cols;
  float rs = 1.0f / sqrtf(var + eps);
  float *yr = y + row * cols;
  for (int c = lane; c < cols; c += 32) yr[c] = (xr[c] - mu) * rs * gamma[c] + beta[c];
  if (lane == 0) {
    mean[row] = mu;
    rstd[row] = rs;
  }
}

/* dx += rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * gamma */
__global__ void k_layernorm_bwd_dx(float *dx, const float *dy, const float *x, const float *mean,
                                   const float *rstd, const float *gamma, int rows, int cols) {
  int64_t row = warp_row();
  if (row >= rows) return;
  int lane = threadIdx.x;
  const float *dyr = dy + row * cols, *xr = x + row * cols;
  float mu = mean[row], rs = rstd[row], s1 = 0.0f, s2 = 0.0f;
  for (int c = lane; c < cols; c += 32) {
    float dxh = dyr[c] * gamma[c];
    s1 += dxh;
    s2 += dxh * ((xr[c] - mu) * rs);
  }
  float m1 = warp_sum(s1) / (float)cols, m2 = warp_sum(s2) / (float)cols;
  float *dxr = dx + row * cols;
  for (int c = lane; c < cols; c += 32) {
    float xh = (xr[c] - mu) * rs;
    dxr[c] += rs * (dyr[c] * gamma[c] - m1 - xh * m2);
  }
}

/* Column sums over a chunk of kRedRows rows: part[chunk][c] = sum dy, and
 * with x: part[chunks + chunk][c] = sum dy * xhat. Block (32, 8). */
__global__ void k_colsum_partial(float *part, const float *dy, const float *x, const float *mean,
                                 const float *rstd, int64_t rows, int cols) {
  __shared__ float sh[2][8][33];
  int tx = threadIdx.x, ty = threadIdx.y;
  int64_t c = (int64_t)blockIdx.x * 32 + tx, chunk = blockIdx.y, chunks = gridDim.y;
  int64_t r0 = chunk * kRedRows, r1 = r0 + kRedRows < rows ? r0 + kRedRows : rows;
  float s1 = 0.0f, s2 = 0.0f;
  if (c < cols)
    for (int64_t r = r0 + ty; r < r1; r += 8) {
      float g = dy[r * cols + c];
      s1 += g;
      if (x) s2 += g * ((x[r * cols + c] - mean[r]) * rstd[r]);
    }
  sh[0][ty][tx] = s1;
  sh[1][ty][tx] = s2;
  __syncthreads();
  if (ty == 0 && c < cols) {
    float a = 0.0f, b = 0.0f;
    for (int k = 0; k < 8; k++) {
      a += sh[0][k][tx];
      b += sh[1][k][tx];
    }
    part[chunk * cols + c] = a;
    if (x) part[(chunks + chunk) * cols + c] = b;
  }
}

/* out[c] += sum over chunks of part[chunk][c], in chunk order; the same for
 * out2 from the second half when given. */
__global__ void k_colsum_final(float *out, float *out2, const float *part, int64_t chunks,
                               int cols) {
  for (int64_t c = global_index(); c < cols; c += global_stride()) {
    float a = 0.0f, b = 0.0f;
    for (int64_t k = 0; k < chunks; k++) {
      a += part[k * cols + c];
      if (out2) b += part[(chunks + k) * cols + c];
    }
    out[c] += a;
    if (out2) out2[c] += b;
  }
}

__global__ void k_softmax_fwd(float *y, const float *x, const int32_t *mask, int64_t nrows,
                              int per_batch, int cols, float scale) {
  int64_t row = warp_row();
  if (row >= nrows) return;
  int lane = threadIdx.x;
  const float *xr = x + row * cols;
  float *yr = y + row * cols;
  const int32_t *mk = mask ? mask + (row / per_batch) * cols : nullptr;
  float mx = -INFINITY;
  int live = 0;
  for (int j = lane; j < cols; j += 32)
    if (!mk || mk[j] != 0) {
      mx = fmaxf(mx, scale * xr[j]);
      live++;
    }
  mx = warp_max(mx);
  live = warp_sum_i(live);
  if (live == 0) { /* PyTorch's finfo.min fill makes every entry equal */
    for (int j = lane; j < cols; j += 32) yr[j] = 1.0f / (float)cols;
    return;
  }
  float s = 0.0f;
  for (int j = lane; j < cols; j += 32)
    if (!mk || mk[j] != 0) s += expf(scale * xr[j] - mx);
  float inv = 1.0f / warp_sum(s);
  for (int j = lane; j < cols; j += 32)
    yr[j] = (!mk || mk[j] != 0) ? expf(scale * xr[j] - mx) * inv : 0.0f;
}

__global__ void k_softmax_bwd(float *dx, const float *dy, const float *y, int64_t nrows, int cols,
                              float scale) {
  int64_t row = warp_row();
  if (row >= nrows) return;
  int lane = threadIdx.x;
  const float *dyr = dy + row * cols, *yr = y + row * cols;
  float d = 0.0f;
  for (int j = lane; j < cols; j += 32) d += dyr[j] * yr[j];
  d = warp_sum(d);
  float *dxr = dx + row * cols;
  for (int j = lane; j < cols; j += 32) dxr[j] += scale * yr[j] * (dyr[j] - d);
}

/* dlogits += dloss[0] / batch * (softmax(logits) - onehot(labels)), in double
 * as the CPU backend. */
__global__ void k_cross_entropy_bwd(float *dlogits, const float *dloss, const float *logits,
                                    const int32_t *labels, int batch, int classes, int32_t *err) {
  int64_t row = warp_row();
  if (row >= batch) return;
  int lane = threadIdx.x, lab = labels[row];
  if (lab < 0 || lab >= classes) {
    if (lane == 0) report(err, TPCU_KERR_CE_BWD_LABEL, row, lab, classes);
    return;
  }
  const float *z = logits + row * classes;
  float mx = -INFINITY;
  for (int c = lane; c < classes; c += 32) mx = fmaxf(mx, z[c]);
  mx = warp_max(mx);
  double s = 0.0;
  for (int c = lane; c < classes; c += 32) s += exp((double)z[c] - mx);
  double lse = mx + log(warp_sum_d(s));
  double g = (double)dloss[0] / batch;
  float *dz = dlogits + row * classes;
  for (int c = lane; c < classes; c += 32)
    dz[c] += (float)(g * (exp((double)z[c] - lse) - (c == lab ? 1.0 : 0.0)));
}

/* ------------------------------------------------------ single-block sums */

/* Sums v over the block in a fixed tree (blockDim.x == kThreads). */
template <class T> TPCU_DEV T block_sum(T v, T *sh) {
  int t = threadIdx.x;
  sh[t] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (t < s) sh[t] += sh[t + s];
    __syncthreads();
  }
  T r = sh[0];
  __syncthreads();
  return r;
}

/* loss[0] = mean_b (logsumexp(logits[b]) - logits[b, labels[b]]), in double. */
__global__ void k_cross_entropy_fwd(float *loss, const float *logits, const int32_t *labels,
                                    int batch, int classes, int32_t *err) {
  __shared__ double sh[kThreads];
  double part = 0.0;
  for (int b = threadIdx.x; b < batch; b += kThreads) {
    int lab = labels[b];
    if (lab < 0 || lab >= classes) {
      report(err, TPCU_KERR_CE_FWD_LABEL, b, lab, classes);
      continue;
    }
    const float *z = logits + (int64_t)b * classes;
    float mx = -INFINITY;
    for (int c = 0; c < classes; c++) mx = fmaxf(mx, z[c]);
    double s = 0.0;
    for (int c = 0; c < classes; c++) s += exp((double)z[c] - mx);
    part += mx + log(s) - z[lab];
  }
  double sum = block_sum(part, sh);
  if (threadIdx.x == 0) loss[0] = (float)(sum / batch);
}

/* out[0] = the number of rows whose first maximum is at the label (a row
 * with a NaN counts as wrong). */
__global__ void k_count_correct(float *out, const float *logits, const int32_t *labels, int batch,
                                int classes, int32_t *err) {
  __shared__ int sh[kThreads];
  int good = 0;
  for (int b = threadIdx.x; b < batch; b += kThreads) {
    int lab = labels[b];
    if (lab < 0 || lab >= classes) {
      report(err, TPCU_KERR_COUNT_LABEL, b, lab, classes);
      continue;
    }
    const float *z = logits + (int64_t)b * classes;
    int best = 0;
    bool nan = isnan(z[0]);
    for (int c = 1; c < classes; c++) {
      nan = nan || isnan(z[c]);
      if (z[c] > z[best]) best = c;
    }
    good += !nan && best == lab;
  }
  int total = block_sum(good, sh);
  if (threadIdx.x == 0) out[0] = (float)total;
}

/* Partial sums of squares of fixed kSumChunk-element chunks. */
__global__ void k_sumsq_partial(float *part, const float *x, int64_t n) {
  __shared__ float sh[kThreads];
  int64_t c0 = (int64_t)blockIdx.x * kSumChunk;
  float s = 0.0f;
  for (int64_t i = c0 + threadIdx.x; i < c0 + kSumChunk && i < n; i += kThreads) s += x[i] * x[i];
  float t = block_sum(s, sh);
  if (threadIdx.x == 0) part[blockIdx.x] = t;
}

/* out[0] += the partials, in a fixed order. */
__global__ void k_sum_final(float *out, const float *part, int64_t chunks) {
  __shared__ float sh[kThreads];
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < chunks; i += kThreads) s += part[i];
  float t = block_sum(s, sh);
  if (threadIdx.x == 0) out[0] += t;
}

/* -------------------------------------------------------------- embedding */

constexpr int kEmbCols = 128; /* columns per block */
constexpr int kEmbIds = 1024; /* ids staged in shared memory at a time */

/* Block (row i, column chunk): out[i] = table[ids[i] - row0] when the id is
 * among the given rows. */
__global__ void k_embedding_fwd(float *out, const float *table, const int32_t *ids, int h, int row0,
                                int rows, int vocab, int32_t *err) {
  int i = blockIdx.x, id = ids[i];
  if (id < 0 || id >= vocab) {
    if (threadIdx.x == 0 && blockIdx.y == 0) report(err, TPCU_KERR_EMBEDDING_FWD_ID, i, id, vocab);
    return;
  }
  if (id < row0 || id - row0 >= rows) return;
  int c = blockIdx.y * kEmbCols + threadIdx.x;
  if (c < h) out[(int64_t)i * h + c] = table[(int64_t)(id - row0) * h + c];
}

/* dtable[ids[i] - row0] += dout[i], repeated ids in order of i without
 * atomics: the block of an id's first occurrence adds all its occurrences,
 * in order; later occurrences' blocks do nothing. */
__global__ void k_embedding_bwd(float *dtable, const float *dout, const int32_t *ids, int n, int h,
                                int row0, int rows, int vocab, int32_t *err) {
  __shared__ int sh_ids[kEmbIds];
  __shared__ int seen;
  int i = blockIdx.x, id = ids[i], t = threadIdx.x;
  if (id < 0 || id >= vocab) {
    if (t == 0 && blockIdx.y == 0) report(err, TPCU_KERR_EMBEDDING_BWD_ID, i, id, vocab);
    return; /* the whole block: id is the block's */
  }
  if (id < row0 || id - row0 >= rows) return;
  if (t == 0) seen = 0;
  __syncthreads();
  for (int j = t; j < i; j += kEmbCols)
    if (ids[j] == id) seen = 1;
  __syncthreads();
  if (seen) return; /* an earlier block adds this id's rows */
  int c = blockIdx.y * kEmbCols + t;
  float acc = c < h ? dtable[(int64_t)(id - row0) * h + c] : 0.0f;
  for (int j0 = i; j0 < n; j0 += kEmbIds) {
    int len = n - j0 < kEmbIds ? n - j0 : kEmbIds;
    __syncthreads();
    for (int j = t; j < len; j += kEmbCols) sh_ids[j] = ids[j0 + j];
    __syncthreads();
    if (c < h)
      for (int j = 0; j < len; j++)
        if (sh_ids[j] == id) acc += dout[(int64_t)(j0 + j) * h + c];
  }
  if (c < h) dtable[(int64_t)(id - row0) * h + c] = acc;
}

/* -------------------------------------------------------- flash attention */

/* Tq query rows attend to Tk key rows (Tq < Tk when a model computes only
 * the [CLS] row of its last layer). q (and dq) rows have stride ld_q, k, v
 * (and dk, dv) ld_kv; out and dout are [B, Tq, nh*hd] dense. */
struct AttnParams {
  int batch, heads, tq, tk, head_dim, ld_q, ld_kv;
  const float *q, *k, *v;
  float *out, *lse;
  const int32_t *mask; /* [B, Tk] */
  const float *bias;   /* [nh, Tq, Tk] */
  float scale, dropout, rscale;
  uint32_t key0, key1;
  uint64_t offset;
  const float *dout;
  float *dq, *dk, *dv, *dbias;
  float *dvec; /* [B, nh, Tq] */
};

/* Rows [r0, r0 + tile_rows) of head h of a [B, T, row_stride] f32 tensor
 * (rows past valid_rows and columns past head_dim are zero) into an
 * element tile. */
template <class E>
TPCU_DEV void load_rows(E *tile, int ld_tile, int tile_rows, int hdp, const float *src,
                        int64_t row_stride, int64_t first, int valid_rows, int hd) {
  for (int e = threadIdx.x; e < tile_rows * hdp; e += kAttnThreads) {
    int r = e / hdp, c = e % hdp;
    float v = r < valid_rows && c < hd ? src[first + (int64_t)r * row_stride + c] : 0.0f;
    tile[r * ld_tile + c] = tpcu_from_float<E>(v);
  }
}

/* C[M x N] (=|+=) A[M x K] B[K x N] over shared-memory tiles; A is read
 * transposed (A[m][k] at k * lda + m) when A_COL, B when B_COL (B[k][n] at
 * n * ldb + k). M, N, K are multiples of 16. Tensor cores (WMMA, f32 sums)
 * for bf16/f16, 4 x 4 register tiles of f32 FMAs for f32. */
template <class E, bool A_COL, bool B_COL>
TPCU_DEV void tile_mma(float *C, int ldc, const E *A, int lda, const E *B, int ldb, int M, int N,
                       int K, bool acc) {
  if constexpr (std::is_same<E, float>::value) {
    int tn = N / 4, tiles = (M / 4) * tn;
    for (int t = threadIdx.x; t < tiles; t += kAttnThreads) {
      int m0 = t / tn * 4, n0 = t % tn * 4;
      float r[4][4];
      for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) r[i][j] = acc ? C[(m0 + i) * ldc + n0 + j] : 0.0f;
      for (int k = 0; k < K; k++) {
        float a[4], b[4];
        for (int i = 0; i < 4; i++) a[i] = A_COL ? A[k * lda + m0 + i] : A[(m0 + i) * lda + k];
        for (int j = 0; j < 4; j++) b[j] = B_COL ? B[(n0 + j) * ldb + k] : B[k * ldb + n0 + j];
        for (int i = 0; i < 4; i++)
          for (int j = 0; j < 4; j++) r[i][j] += a[i] * b[j];
      }
      for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) C[(m0 + i) * ldc + n0 + j] = r[i][j];
    }
  } else {
    typedef typename std::conditional<A_COL, tpwmma::col_major, tpwmma::row_major>::type LA;
    typedef typename std::conditional<B_COL, tpwmma::col_major, tpwmma::row_major>::type LB;
    int warp = threadIdx.x / 32, tn = N / 16, tiles = (M / 16) * tn;
    for (int t = warp; t < tiles; t += kAttnThreads / 32) {
      int tm = t / tn, tc = t % tn;
      float *cp = C + tm * 16 * ldc + tc * 16;
      tpwmma::fragment<tpwmma::accumulator, 16, 16, 16, float> c;
      if (acc)
        tpwmma::load_matrix_sync(c, cp, ldc, tpwmma::mem_row_major);
      else
        tpwmma::fill_fragment(c, 0.0f);
      for (int k = 0; k < K; k += 16) {
        tpwmma::fragment<tpwmma::matrix_a, 16, 16, 16, E, LA> a;
        tpwmma::fragment<tpwmma::matrix_b, 16, 16, 16, E, LB> b;
        tpwmma::load_matrix_sync(a, A_COL ? A + k * lda + tm * 16 : A + tm * 16 * lda + k, lda);
        tpwmma::load_matrix_sync(b, B_COL ? B + tc * 16 * ldb + k : B + k * ldb + tc * 16, ldb);
        tpwmma::mma_sync(c, a, b, c);
      }
      tpwmma::store_matrix_sync(cp, c, ldc, tpwmma::mem_row_major);
    }
  }
}

/* Whether batch entry b has no unmasked key (then P = 1/Tk everywhere);
 * any is an int of shared memory. */
TPCU_DEV bool block_all_masked(int *any, const int32_t *mask, int b, int tk) {
  if (threadIdx.x == 0) *any = 0;
  __syncthreads();
  if (mask)
    for (int j = threadIdx.x; j < tk; j += kAttnThreads)
      if (mask[(int64_t)b * tk + j] != 0) *any = 1; /* racing writers all write 1 */
  __syncthreads();
  bool r = mask != nullptr && *any == 0;
  __syncthreads();
  return r;
}

/* The score of query qi and key kj as the forward pass defines it: -inf for
 * padding and masked keys, 0 everywhere in a fully masked entry. sraw is
 * q . k (unscaled). */
TPCU_DEV float attn_score(const AttnParams &P, int b, int h, int qi, int kj, float sraw,
                          bool all_masked) {
  if (qi >= P.tq || kj >= P.tk) return -INFINITY;
  if (all_masked) return 0.0f;
  if (P.mask && P.mask[(int64_t)b * P.tk + kj] == 0) return -INFINITY;
  float s = P.scale * sraw;
  if (P.bias) s += P.bias[((int64_t)h * P.tq + qi) * P.tk + kj];
  return s;
}

/* Dropout's keep bit: counter ((b*nh + h)*Tq + i)*Tk + j past offset. */
TPCU_DEV bool attn_keep(const AttnParams &P, int b, int h, int qi, int kj) {
  if (P.dropout == 0.0f) return true;
  uint64_t ctr = P.offset + (((uint64_t)b * P.heads + h) * (uint64_t)P.tq + (uint64_t)qi) *
                                (uint64_t)P.tk + (uint64_t)kj;
  return tpcu_philox_uniform(P.key0, P.key1, ctr) >= P.dropout;
}

template <class E> TPCU_DEV E *smem_at(unsigned char *sm, uint32_t off) {
  return reinterpret_cast<E *>(sm + off);
}

TPCU_DEV int64_t q_first(const AttnParams &P, int b, int h) {
  return (int64_t)b * P.tq * P.ld_q + (int64_t)h * P.head_dim;
}
TPCU_DEV int64_t kv_first(const AttnParams &P, int b, int h) {
  return (int64_t)b * P.tk * P.ld_kv + (int64_t)h * P.head_dim;
}
TPCU_DEV int64_t out_ld(const AttnParams &P) { return (int64_t)P.heads * P.head_dim; }
TPCU_DEV int64_t out_first(const AttnParams &P, int b, int h) {
  return (int64_t)b * P.tq * out_ld(P) + (int64_t)h * P.head_dim;
}

/* Forward: block (query tile, head, batch entry); online softmax over key
 * tiles (FlashAttention-2's loop), O and the row statistics in shared
 * memory. */
template <class E>
__global__ void __launch_bounds__(kAttnThreads) k_attn_fwd(AttnParams P, tpcu_attn_layout L) {
  TPCU_DYN_SMEM(sm);
  E *sQ = smem_at<E>(sm, L.q), *sK = smem_at<E>(sm, L.k), *sV = smem_at<E>(sm, L.v);
  E *sP = smem_at<E>(sm, L.p);
  float *sS = smem_at<float>(sm, L.s), *sO = smem_at<float>(sm, L.acc);
  float *rowm = smem_at<float>(sm, L.rows), *rowl = rowm + L.br;
  int i0 = blockIdx.x * L.br, h = blockIdx.y, b = blockIdx.z;
  int hd = P.head_dim, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  bool all_masked = block_all_masked(smem_at<int>(sm, L.flag), P.mask, b, P.tk);
  int64_t q0 = q_first(P, b, h), kv0 = kv_first(P, b, h);
  load_rows(sQ, L.ld_e, L.br, L.hdp, P.q, P.ld_q, q0 + (int64_t)i0 * P.ld_q, P.tq - i0, hd);
  for (int e = threadIdx.x; e < L.br * L.hdp; e += kAttnThreads)
    sO[e / L.hdp * L.ld_o + e % L.hdp] = 0.0f;
  for (int r = threadIdx.x; r < L.br; r += kAttnThreads) {
    rowm[r] = -INFINITY;
    rowl[r] = 0.0f;
  }
  for (int j0 = 0; j0 < P.tk; j0 += L.bc) {
    __syncthreads();
    load_rows(sK, L.ld_e, L.bc, L.hdp, P.k, P.ld_kv, kv0 + (int64_t)j0 * P.ld_kv, P.tk - j0, hd);
    load_rows(sV, L.ld_e, L.bc, L.hdp, P.v, P.ld_kv, kv0 + (int64_t)j0 * P.ld_kv, P.tk - j0, hd);
    __syncthreads();
    tile_mma<E, false, true>(sS, L.ld_s, sQ, L.ld_e, sK, L.ld_e, L.br, L.bc, L.hdp, false);
    __syncthreads();
    for (int r = warp; r < L.br; r += kAttnThreads / 32) {
      int qi = i0 + r;
      float *srow = sS + r * L.ld_s;
      float mold = rowm[r], mx = -INFINITY;
      for (int j = lane; j < L.bc; j += 32) {
        float s = attn_score(P, b, h, qi, j0 + j, srow[j], all_masked);
        srow[j] = s;
        mx = fmaxf(mx, s);
      }
      float mnew = fmaxf(mold, warp_max(mx));
      float muse = mnew == -INFINITY ? 0.0f : mnew; /* no -inf - -inf */
      float alpha = expf(mold - muse), sum = 0.0f;
      for (int j = lane; j < L.bc; j += 32) {
        float pe = expf(srow[j] - muse);
        sum += pe;
        bool keep = pe == 0.0f || attn_keep(P, b, h, qi, j0 + j);
        sP[r * L.ld_p + j] = tpcu_from_float<E>(keep ? pe * P.rscale : 0.0f);
      }
      sum = warp_sum(sum);
      for (int d = lane; d < L.hdp; d += 32) sO[r * L.ld_o + d] *= alpha;
      if (lane == 0) {
        rowm[r] = mnew;
        rowl[r] = rowl[r] * alpha + sum;
      }
    }
    __syncthreads();
    tile_mma<E, false, false>(sO, L.ld_o, sP, L.ld_p, sV, L.ld_e, L.br, L.hdp, L.bc, true);
  }
  __syncthreads();
  for (int r = warp; r < L.br; r += kAttnThreads / 32) {
    int qi = i0 + r;
    if (qi >= P.tq) break;
    float l = rowl[r], m = rowm[r], inv = 1.0f / l;
    float *o = P.out + out_first(P, b, h) + (int64_t)qi * out_ld(P);
    for (int d = lane; d < hd; d += 32) o[d] = sO[r * L.ld_o + d] * inv;
    if (lane == 0)
      P.lse[((int64_t)b * P.heads + h) * P.tq + qi] = (m == -INFINITY ? 0.0f : m) + logf(l);
  }
}

/* D[b, h, i] = dout[b, i, h] . out[b, i, h]: one warp per row. */
__global__ void k_attn_dvec(AttnParams P) {
  int64_t row = warp_row(), rows = (int64_t)P.batch * P.heads * P.tq;
  if (row >= rows) return;
  int64_t b = row / ((int64_t)P.heads * P.tq), h = row / P.tq % P.heads, t = row % P.tq;
  int64_t at = out_first(P, (int)b, (int)h) + t * out_ld(P);
  float s = 0.0f;
  for (int d = threadIdx.x; d < P.head_dim; d += 32) s += P.dout[at + d] * P.out[at + d];
  s = warp_sum(s);
  if (threadIdx.x == 0) P.dvec[row] = s;
}

/* The lse and D of query rows [i0, i0 + br) into shared memory. */
TPCU_DEV void load_row_stats(float *rlse, float *rD, const AttnParams &P, int b, int h, int i0,
                             int br) {
  for (int r = threadIdx.x; r < br; r += kAttnThreads) {
    int qi = i0 + r;
    int64_t at = ((int64_t)b * P.heads + h) * P.tq + qi;
    rlse[r] = qi < P.tq ? P.lse[at] : 0.0f;
    rD[r] = qi < P.tq ? P.dvec[at] : 0.0f;
  }
}

/* dQ: block (query tile, head, batch entry — or every entry in turn when
 * dbias is wanted, so that this block alone adds dbias's rows, in batch
 * order). */
template <class E>
__global__ void __launch_bounds__(kAttnThreads) k_attn_dq(AttnParams P, tpcu_attn_layout L) {
  TPCU_DYN_SMEM(sm);
  E *sQ = smem_at<E>(sm, L.q), *sK = smem_at<E>(sm, L.k), *sV = smem_at<E>(sm, L.v);
  E *sDO = smem_at<E>(sm, L.dout), *sDS = smem_at<E>(sm, L.ds);
  float *sS = smem_at<float>(sm, L.s), *sDP = smem_at<float>(sm, L.dp);
  float *sA = smem_at<float>(sm, L.acc);
  float *rlse = smem_at<float>(sm, L.rows), *rD = rlse + L.br;
  int i0 = blockIdx.x * L.br, h = blockIdx.y;
  int hd = P.head_dim, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int b_first = P.dbias ? 0 : (int)blockIdx.z, b_end = P.dbias ? P.batch : b_first + 1;
  for (int b = b_first; b < b_end; b++) {
    bool all_masked = block_all_masked(smem_at<int>(sm, L.flag), P.mask, b, P.tk);
    int64_t q0 = q_first(P, b, h), kv0 = kv_first(P, b, h), o0 = out_first(P, b, h);
    load_rows(sQ, L.ld_e, L.br, L.hdp, P.q, P.ld_q, q0 + (int64_t)i0 * P.ld_q, P.tq - i0, hd);
    load_rows(sDO, L.ld_e, L.br, L.hdp, P.dout, out_ld(P), o0 + (int64_t)i0 * out_ld(P),
              P.tq - i0, hd);
    load_row_stats(rlse, rD, P, b, h, i0, L.br);
    for (int e = threadIdx.x; e < L.br * L.hdp; e += kAttnThreads)
      sA[e / L.hdp * L.ld_o + e % L.hdp] = 0.0f;
    for (int j0 = 0; j0 < P.tk; j0 += L.bc) {
      __syncthreads();
      load_rows(sK, L.ld_e, L.bc, L.hdp, P.k, P.ld_kv, kv0 + (int64_t)j0 * P.ld_kv, P.tk - j0, hd);
      load_rows(sV, L.ld_e, L.bc, L.hdp, P.v, P.ld_kv, kv0 + (int64_t)j0 * P.ld_kv, P.tk - j0, hd);
      __syncthreads();
      tile_mma<E, false, true>(sS, L.ld_s, sQ, L.ld_e, sK, L.ld_e, L.br, L.bc, L.hdp, false);
      tile_mma<E, false, true>(sDP, L.ld_s, sDO, L.ld_e, sV, L.ld_e, L.br, L.bc, L.hdp, false);
      __syncthreads();
      for (int r = warp; r < L.br; r += kAttnThreads / 32) {
        int qi = i0 + r;
        for (int j = lane; j < L.bc; j += 32) {
          int kj = j0 + j;
          float p = expf(attn_score(P, b, h, qi, kj, sS[r * L.ld_s + j], all_masked) - rlse[r]);
          float dp = attn_keep(P, b, h, qi, kj) ? sDP[r * L.ld_s + j] * P.rscale : 0.0f;
          float ds = p * (dp - rD[r]);
          sDS[r * L.ld_p + j] = tpcu_from_float<E>(ds);
          if (P.dbias && qi < P.tq && kj < P.tk)
            P.dbias[((int64_t)h * P.tq + qi) * P.tk + kj] += ds;
        }
      }
      __syncthreads();
      tile_mma<E, false, false>(sA, L.ld_o, sDS, L.ld_p, sK, L.ld_e, L.br, L.hdp, L.bc, true);
    }
    __syncthreads();
    for (int r = warp; r < L.br; r += kAttnThreads / 32) {
      int qi = i0 + r;
      if (qi >= P.tq) break;
      float *dq = P.dq + q0 + (int64_t)qi * P.ld_q;
      for (int d = lane; d < hd; d += 32) dq[d] += P.scale * sA[r * L.ld_o + d];
    }
    __syncthreads();
  }
}

/* dK, dV: block (key tile, head, batch entry), over every query tile. */
template <class E>
__global__ void __launch_bounds__(kAttnThreads) k_attn_dkdv(AttnParams P, tpcu_attn_layout L) {
  TPCU_DYN_SMEM(sm);
  E *sQ = smem_at<E>(sm, L.q), *sK = smem_at<E>(sm, L.k), *sV = smem_at<E>(sm, L.v);
  E *sDO = smem_at<E>(sm, L.dout), *sP = smem_at<E>(sm, L.p), *sDS = smem_at<E>(sm, L.ds);
  float *sS = smem_at<float>(sm, L.s), *sDP = smem_at<float>(sm, L.dp);
  float *sDK = smem_at<float>(sm, L.acc), *sDV = smem_at<float>(sm, L.acc2);
  float *rlse = smem_at<float>(sm, L.rows), *rD = rlse + L.br;
  int j0 = blockIdx.x * L.bc, h = blockIdx.y, b = blockIdx.z;
  int hd = P.head_dim, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  bool all_masked = block_all_masked(smem_at<int>(sm, L.flag), P.mask, b, P.tk);
  int64_t q0 = q_first(P, b, h), kv0 = kv_first(P, b, h), o0 = out_first(P, b, h);
  load_rows(sK, L.ld_e, L.bc, L.hdp, P.k, P.ld_kv, kv0 + (int64_t)j0 * P.ld_kv, P.tk - j0, hd);
  load_rows(sV, L.ld_e, L.bc, L.hdp, P.v, P.ld_kv, kv0 + (int64_t)j0 * P.ld_kv, P.tk - j0, hd);
  for (int e = threadIdx.x; e < L.bc * L.hdp; e += kAttnThreads) {
    sDK[e / L.hdp * L.ld_o + e % L.hdp] = 0.0f;
    sDV[e / L.hdp * L.ld_o + e % L.hdp] = 0.0f;
  }
  for (int i0 = 0; i0 < P.tq; i0 += L.br) {
    __syncthreads();
    load_rows(sQ, L.ld_e, L.br, L.hdp, P.q, P.ld_q, q0 + (int64_t)i0 * P.ld_q, P.tq - i0, hd);
    load_rows(sDO, L.ld_e, L.br, L.hdp, P.dout, out_ld(P), o0 + (int64_t)i0 * out_ld(P),
              P.tq - i0, hd);
    load_row_stats(rlse, rD, P, b, h, i0, L.br);
    __syncthreads();
    tile_mma<E, false, true>(sS, L.ld_s, sQ, L.ld_e, sK, L.ld_e, L.br, L.bc, L.hdp, false);
    tile_mma<E, false, true>(sDP, L.ld_s, sDO, L.ld_e, sV, L.ld_e, L.br, L.bc, L.hdp, false);
    __syncthreads();
    for (int r = warp; r < L.br; r += kAttnThreads / 32) {
      int qi = i0 + r;
      for (int j = lane; j < L.bc; j += 32) {
        int kj = j0 + j;
        float p = expf(attn_score(P, b, h, qi, kj, sS[r * L.ld_s + j], all_masked) - rlse[r]);
        bool keep = attn_keep(P, b, h, qi, kj);
        float dp = keep ? sDP[r * L.ld_s + j] * P.rscale : 0.0f;
        sP[r * L.ld_p + j] = tpcu_from_float<E>(keep ? p * P.rscale : 0.0f);
        sDS[r * L.ld_p + j] = tpcu_from_float<E>(p * (dp - rD[r]));
      }
    }
    __syncthreads();
    /* dV += P'^T dO, dK += dS^T Q (the [br x bc] tiles read transposed) */
    tile_mma<E, true, false>(sDV, L.ld_o, sP, L.ld_p, sDO, L.ld_e, L.bc, L.hdp, L.br, true);
    tile_mma<E, true, false>(sDK, L.ld_o, sDS, L.ld_p, sQ, L.ld_e, L.bc, L.hdp, L.br, true);
  }
  __syncthreads();
  for (int r = warp; r < L.bc; r += kAttnThreads / 32) {
    int kj = j0 + r;
    if (kj >= P.tk) break;
    float *dk = P.dk + kv0 + (int64_t)kj * P.ld_kv, *dv = P.dv + kv0 + (int64_t)kj * P.ld_kv;
    for (int d = lane; d < hd; d += 32) {
      dk[d] += P.scale * sDK[r * L.ld_o + d];
      dv[d] += sDV[r * L.ld_o + d];
    }
  }
}

AttnParams attn_params(const tpcu_attn_call *a) {
  AttnParams P;
  P.batch = a->batch;
  P.heads = a->heads;
  P.tq = a->q_len;
  P.tk = a->kv_len;
  P.head_dim = a->head_dim;
  P.ld_q = a->ld_q;
  P.ld_kv = a->ld_kv;
  P.q = a->q;
  P.k = a->k;
  P.v = a->v;
  P.out = a->out;
  P.lse = a->lse;
  P.mask = a->mask;
  P.bias = a->bias;
  P.scale = a->scale;
  P.dropout = a->dropout;
  P.rscale = tpcu_dropout_scale(a->dropout);
  P.key0 = (uint32_t)a->seed;
  P.key1 = (uint32_t)(a->seed >> 32);
  P.offset = a->offset;
  P.dout = a->dout;
  P.dq = a->dq;
  P.dk = a->dk;
  P.dv = a->dv;
  P.dbias = a->dbias;
  P.dvec = a->dvec;
  return P;
}

/* The block's dynamic shared memory above the default 48 KiB must be
 * allowed per kernel first. */
template <class K> cudaError_t allow_smem(K kern, uint32_t bytes) {
  if (bytes <= 48u * 1024u) return cudaSuccess;
  return cudaFuncSetAttribute(reinterpret_cast<const void *>(kern),
                              cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
}

template <class E>
cudaError_t attention_fwd_t(const tpcu_ctx *c, const AttnParams &P, const tpcu_attn_layout &L) {
  auto kern = k_attn_fwd<E>;
  cudaError_t e = allow_smem(kern, L.bytes);
  if (e != cudaSuccess) return e;
  dim3 grid((unsigned)((P.tq + L.br - 1) / L.br), (unsigned)P.heads, (unsigned)P.batch);
  TPCU_LAUNCH(kern, grid, dim3(kAttnThreads), L.bytes, c->stream, P, L);
  return cudaGetLastError();
}

template <class E>
cudaError_t attention_bwd_t(const tpcu_ctx *c, const AttnParams &P, const tpcu_attn_layout &Lq,
                            const tpcu_attn_layout &Lkv) {
  auto kq = k_attn_dq<E>;
  auto kkv = k_attn_dkdv<E>;
  cudaError_t e = allow_smem(kq, Lq.bytes);
  if (e == cudaSuccess) e = allow_smem(kkv, Lkv.bytes);
  if (e != cudaSuccess) return e;
  int64_t rows = (int64_t)P.batch * P.heads * P.tq;
  TPCU_LAUNCH(k_attn_dvec, dim3(tpcu_grid_rows(rows)), dim3(32, kRowsPerBlock), 0, c->stream, P);
  dim3 gkv((unsigned)((P.tk + Lkv.bc - 1) / Lkv.bc), (unsigned)P.heads, (unsigned)P.batch);
  TPCU_LAUNCH(kkv, gkv, dim3(kAttnThreads), Lkv.bytes, c->stream, P, Lkv);
  dim3 gq((unsigned)((P.tq + Lq.br - 1) / Lq.br), (unsigned)P.heads,
          P.dbias ? 1u : (unsigned)P.batch);
  TPCU_LAUNCH(kq, gq, dim3(kAttnThreads), Lq.bytes, c->stream, P, Lq);
  return cudaGetLastError();
}

} /* namespace */

/* -------------------------------------------------------------- launchers */

#define GRID(n) dim3(tpcu_grid_1d((n), kThreads, c->sm_count, TPCU_BLOCKS_PER_SM))
#define ROWS(n) dim3(tpcu_grid_rows(n))
#define WARP_ROWS dim3(32, kRowsPerBlock)
/* A block per row, rows beyond the grid in turn. */
#define ROWS_1D(rows) dim3((unsigned)((rows) < 65535 * 64 ? (rows) : 65535 * 64))
/* Returns early when there is nothing to do: a launch needs a grid >= 1. */
#define LAUNCH_EW(n, kern, ...)                                                                    \
  do {                                                                                             \
    if ((n) <= 0) return cudaSuccess;                                                              \
    TPCU_LAUNCH(kern, GRID(n), dim3(kThreads), 0, c->stream, __VA_ARGS__);                         \
    return cudaGetLastError();                                                                     \
  } while (0)

extern "C" {

cudaError_t tpcu_k_fill(const tpcu_ctx *c, float *y, float value, int64_t n) {
  LAUNCH_EW(n, k_fill, y, value, n);
}

cudaError_t tpcu_k_add(const tpcu_ctx *c, float *y, const float *a, const float *b, int64_t n) {
  LAUNCH_EW(n, k_add, y, a, b, n);
}

cudaError_t tpcu_k_axpy(const tpcu_ctx *c, float *y, const float *x, float alpha, int64_t n) {
  LAUNCH_EW(n, k_axpy, y, x, alpha, n);
}

cudaError_t tpcu_k_act_fwd(const tpcu_ctx *c, int act, float *y, const float *x, int64_t n) {
  LAUNCH_EW(n, k_act_fwd, act, y, x, n);
}

cudaError_t tpcu_k_act_bwd(const tpcu_ctx *c, int act, float *dx, const float *dy, const float *xy,
                           int64_t n) {
  LAUNCH_EW(n, k_act_bwd, act, dx, dy, xy, n);
}

cudaError_t tpcu_k_bias_add(const tpcu_ctx *c, float *y, const float *bias, int64_t rows,
                            int cols) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  TPCU_LAUNCH(k_bias_add, ROWS_1D(rows), dim3(kThreads), 0, c->stream, y, bias, rows, cols);
  return cudaGetLastError();
}

static cudaError_t colsum(const tpcu_ctx *c, float *out, float *out2, const float *dy,
                          const float *x, const float *mean, const float *rstd, int64_t rows,
                          int cols, float *scratch) {
  int64_t chunks = tpcu_red_chunks(rows);
  if (chunks == 0 || cols <= 0) return cudaSuccess;
  dim3 grid((unsigned)((cols + 31) / 32), (unsigned)chunks);
  TPCU_LAUNCH(k_colsum_partial, grid, dim3(32, 8), 0, c->stream, scratch, dy, x, mean, rstd, rows,
              cols);
  TPCU_LAUNCH(k_colsum_final, GRID(cols), dim3(kThreads), 0, c->stream, out, out2, scratch, chunks,
              cols);
  return cudaGetLastError();
}

cudaError_t tpcu_k_bias_grad(const tpcu_ctx *c, float *dbias, const float *dy, int64_t rows,
                             int cols, float *scratch) {
  return colsum(c, dbias, nullptr, dy, nullptr, nullptr, nullptr, rows, cols, scratch);
}

cudaError_t tpcu_k_layernorm_fwd(const tpcu_ctx *c, float *y, float *mean, float *rstd,
                                 const float *x, const float *gamma, const float *beta, int rows,
                                 int cols, float eps) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  TPCU_LAUNCH(k_layernorm_fwd, ROWS(rows), WARP_ROWS, 0, c->stream, y, mean, rstd, x, gamma, beta,
              rows, cols, eps);
  return cudaGetLastError();
}

cudaError_t tpcu_k_layernorm_bwd(const tpcu_ctx *c, float *dx, float *dgamma, float *dbeta,
                                 const float *dy, const float *x, const float *mean,
                                 const float *rstd, const float *gamma, int rows, int cols,
                                 float *scratch) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  TPCU_LAUNCH(k_layernorm_bwd_dx, ROWS(rows), WARP_ROWS, 0, c->stream, dx, dy, x, mean, rstd,
              gamma, rows, cols);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  /* first half of the partials: sum dy (dbeta), second: sum dy * xhat (dgamma) */
  return colsum(c, dbeta, dgamma, dy, x, mean, rstd, rows, cols, scratch);
}

cudaError_t tpcu_k_softmax_fwd(const tpcu_ctx *c, float *y, const float *x, const int32_t *mask,
                               int batch, int heads, int rows, int cols, float scale) {
  if (batch <= 0 || heads <= 0 || rows <= 0 || cols <= 0) return cudaSuccess;
  int64_t nrows = (int64_t)batch * heads * rows;
  TPCU_LAUNCH(k_softmax_fwd, ROWS(nrows), WARP_ROWS, 0, c->stream, y, x, mask, nrows, heads * rows,
              cols, scale);
  return cudaGetLastError();
}

cudaError_t tpcu_k_softmax_bwd(const tpcu_ctx *c, float *dx, const float *dy, const float *y,
                               int64_t rows, int cols, float scale) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  TPCU_LAUNCH(k_softmax_bwd, ROWS(rows), WARP_ROWS, 0, c->stream, dx, dy, y, rows, cols, scale);
  return cudaGetLastError();
}

cudaError_t tpcu_k_dropout(const tpcu_ctx *c, float *y, uint8_t *keep, const float *x, int64_t n,
                           float p, uint64_t seed, uint64_t offset, bool accumulate) {
  LAUNCH_EW(n, k_dropout, y, keep, x, n, p, tpcu_dropout_scale(p), (uint32_t)seed,
            (uint32_t)(seed >> 32), offset, accumulate);
}

cudaError_t tpcu_k_dropout_bwd_keep(const tpcu_ctx *c, float *dx, const float *dy,
                                    const uint8_t *keep, int64_t n, float p) {
  LAUNCH_EW(n, k_dropout_bwd_keep, dx, dy, keep, n, tpcu_dropout_scale(p));
}

cudaError_t tpcu_k_permute_0213(const tpcu_ctx *c, float *y, const float *x, int d0, int d1,
                                int d2, int d3, float beta) {
  if (d0 <= 0 || d1 <= 0 || d2 <= 0 || d3 <= 0) return cudaSuccess;
  int64_t rows = (int64_t)d0 * d1 * d2;
  TPCU_LAUNCH(k_permute_0213, ROWS_1D(rows), dim3(d3 >= 128 ? 128 : 32), 0, c->stream, y, x, d0,
              d1, d2, d3, beta);
  return cudaGetLastError();
}

cudaError_t tpcu_k_first_token(const tpcu_ctx *c, bool backward, float *y, const float *x,
                               int batch, int seq, int h) {
  if (batch <= 0 || h <= 0) return cudaSuccess;
  int64_t n = (int64_t)batch * h;
  LAUNCH_EW(n, k_first_token, backward, y, x, batch, seq, h);
}

cudaError_t tpcu_k_embedding(const tpcu_ctx *c, bool backward, float *out, const float *in,
                             const int32_t *ids, int n, int h, int row0, int rows, int vocab) {
  if (n <= 0 || h <= 0) return cudaSuccess;
  dim3 grid((unsigned)n, (unsigned)((h + kEmbCols - 1) / kEmbCols));
  if (backward)
    TPCU_LAUNCH(k_embedding_bwd, grid, dim3(kEmbCols), 0, c->stream, out, in, ids, n, h, row0,
                rows, vocab, c->err);
  else
    TPCU_LAUNCH(k_embedding_fwd, grid, dim3(kEmbCols), 0, c->stream, out, in, ids, h, row0, rows,
                vocab, c->err);
  return cudaGetLastError();
}

cudaError_t tpcu_k_cross_entropy_fwd(const tpcu_ctx *c, float *loss, const float *logits,
                                     const int32_t *labels, int batch, int classes) {
  if (batch <= 0 || classes <= 0) return cudaSuccess;
  TPCU_LAUNCH(k_cross_entropy_fwd, dim3(1), dim3(kThreads), 0, c->stream, loss, logits, labels,
              batch, classes, c->err);
  return cudaGetLastError();
}

cudaError_t tpcu_k_cross_entropy_bwd(const tpcu_ctx *c, float *dlogits, const float *dloss,
                                     const float *logits, const int32_t *labels, int batch,
                                     int classes) {
  if (batch <= 0 || classes <= 0) return cudaSuccess;
  TPCU_LAUNCH(k_cross_entropy_bwd, ROWS(batch), WARP_ROWS, 0, c->stream, dlogits, dloss, logits,
              labels, batch, classes, c->err);
  return cudaGetLastError();
}

cudaError_t tpcu_k_count_correct(const tpcu_ctx *c, float *out, const float *logits,
                                 const int32_t *labels, int batch, int classes) {
  if (batch < 0 || classes <= 0) return cudaSuccess;
  TPCU_LAUNCH(k_count_correct, dim3(1), dim3(kThreads), 0, c->stream, out, logits, labels, batch,
              classes, c->err);
  return cudaGetLastError();
}

cudaError_t tpcu_k_adam(const tpcu_ctx *c, float *p, const float *g, float *m, float *v, int64_t n,
                        tpcu_adam_k k, const float *ctl) {
  LAUNCH_EW(n, k_adam, p, g, m, v, n, k, ctl);
}

cudaError_t tpcu_k_optim_control(const tpcu_ctx *c, float *ctl, float max_norm, bool dynamic,
                                 int growth_interval, float growth, float backoff) {
  TPCU_LAUNCH(k_optim_control, dim3(1), dim3(32), 0, c->stream, ctl, max_norm, dynamic,
              growth_interval, growth, backoff);
  return cudaGetLastError();
}

cudaError_t tpcu_k_sumsq(const tpcu_ctx *c, float *out, const float *x, int64_t n,
                         float *scratch) {
  int64_t chunks = tpcu_sum_chunks(n);
  if (chunks == 0) return cudaSuccess;
  TPCU_LAUNCH(k_sumsq_partial, dim3((unsigned)chunks), dim3(kThreads), 0, c->stream, scratch, x,
              n);
  TPCU_LAUNCH(k_sum_final, dim3(1), dim3(kThreads), 0, c->stream, out, scratch, chunks);
  return cudaGetLastError();
}

cudaError_t tpcu_k_nonfinite(const tpcu_ctx *c, int32_t *out, const float *x, int64_t n) {
  LAUNCH_EW(n, k_nonfinite, out, x, n);
}

cudaError_t tpcu_k_cast(const tpcu_ctx *c, void *y, int ydt, const void *x, int xdt, int64_t n) {
  LAUNCH_EW(n, k_cast, y, ydt, x, xdt, n);
}

cudaError_t tpcu_k_matrix_cast(const tpcu_ctx *c, void *y, int ydt, const void *x, int xdt,
                               int batch, int rows, int cols, int ld, int64_t stride) {
  int64_t n = (int64_t)batch * rows * cols;
  if (batch <= 0 || rows <= 0 || cols <= 0) return cudaSuccess;
  LAUNCH_EW(n, k_matrix_cast, y, ydt, x, xdt, batch, rows, cols, ld, stride);
}

cudaError_t tpcu_k_matrix_scale(const tpcu_ctx *c, void *y, int dt, float beta, int batch, int rows,
                                int cols, int ld, int64_t stride) {
  int64_t n = (int64_t)batch * rows * cols;
  if (batch <= 0 || rows <= 0 || cols <= 0) return cudaSuccess;
  LAUNCH_EW(n, k_matrix_scale, y, dt, beta, batch, rows, cols, ld, stride);
}

cudaError_t tpcu_k_attention_fwd(const tpcu_ctx *c, const tpcu_attn_call *a,
                                 const tpcu_attn_layout *fwd) {
  AttnParams P = attn_params(a);
  switch (a->compute) {
  case 1: return attention_fwd_t<tpcu_bf16>(c, P, *fwd);
  case 2: return attention_fwd_t<tpcu_f16>(c, P, *fwd);
  default: return attention_fwd_t<float>(c, P, *fwd);
  }
}

cudaError_t tpcu_k_attention_bwd(const tpcu_ctx *c, const tpcu_attn_call *a,
                                 const tpcu_attn_layout *dq, const tpcu_attn_layout *dkdv) {
  AttnParams P = attn_params(a);
  switch (a->compute) {
  case 1: return attention_bwd_t<tpcu_bf16>(c, P, *dq, *dkdv);
  case 2: return attention_bwd_t<tpcu_f16>(c, P, *dq, *dkdv);
  default: return attention_bwd_t<float>(c, P, *dq, *dkdv);
  }
}

} /* extern "C" */
