/* plugins/cuda/cuda_shared.h — what the CUDA backend's host code (C), its
 * kernels (CUDA C++) and the host unit tests share: element conversions,
 * Philox, the optimizer's control rule, the kernel error word and the
 * attention tile layout.
 *
 * Pure C with no GLib, so nvcc compiles it into device code as it is:
 * TPCU_HD functions are __host__ __device__ under nvcc and plain static
 * inline functions elsewhere, which is how tests/test_cuda_host.c checks
 * on the CPU the very code the GPU runs. */
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define TPCU_HD static inline __host__ __device__
#else
#define TPCU_HD static inline
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ elements */

TPCU_HD uint32_t tpcu_f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

TPCU_HD float tpcu_bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* Round to nearest even; NaN stays a quiet NaN (the CPU backend's bits). */
TPCU_HD uint16_t tpcu_f32_to_bf16(float f) {
  uint32_t u = tpcu_f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

TPCU_HD float tpcu_bf16_to_f32(uint16_t h) { return tpcu_bits_f32((uint32_t)h << 16); }

/* Round to nearest even, overflow to Inf, subnormals exact. Integer-only,
 * so host and device give the same bits. */
TPCU_HD uint16_t tpcu_f32_to_f16(float f) {
  uint32_t u = tpcu_f32_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);  /* NaN */
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to Inf */
  if (a < 0x38800000u) {                                   /* f16 subnormal or zero */
    if (a < 0x33000000u) return (uint16_t)sign;            /* below 2^-25: rounds to 0 */
    uint32_t e = a >> 23, mant = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e; /* value / 2^-24 = mant >> shift, shift in [14, 24] */
    uint32_t h = mant >> shift, rest = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (h & 1u))) h++;
    return (uint16_t)(sign | h);
  }
  uint32_t mant = a & 0x7fffffu, e = (a >> 23) - 127u + 15u;
  uint32_t h = (e << 10) | (mant >> 13), rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++; /* a carry moves into the exponent */
  return (uint16_t)(sign | h);
}

TPCU_HD float tpcu_f16_to_f32(uint16_t h) {
  uint32_t sign = ((uint32_t)h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (e == 0) {
    float v = (float)mant * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (e == 31) return tpcu_bits_f32(sign | 0x7f800000u | (mant << 13));
  return tpcu_bits_f32(sign | ((e - 15u + 127u) << 23) | (mant << 13));
}

/* ---------------------------------------------------------------- Philox */

/* tp_philox_uniform() of tensorplug/philox.h, rounds unrolled: the first
 * word of Philox4x32-10(counter = (i lo, i hi, 0, 0), key = seed), top 24
 * bits / 2^24. The tests compare it bit for bit with the header. */
TPCU_HD float tpcu_philox_uniform(uint32_t k0, uint32_t k1, uint64_t i) {
  uint32_t c0 = (uint32_t)i, c1 = (uint32_t)(i >> 32), c2 = 0u, c3 = 0u;
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
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

/* 1 / (1 - p) rounded to f32 once; p == 1 drops everything (scale 0). */
TPCU_HD float tpcu_dropout_scale(float p) { return p < 1.0f ? 1.0f / (1.0f - p) : 0.0f; }

/* -------------------------------------------------------------- launches */

#define TPCU_THREADS 256      /* threads per block of the elementwise and reduction kernels */
#define TPCU_ROWS_PER_BLOCK 8 /* row kernels: one warp per row, 8 warps a block */
#define TPCU_BLOCKS_PER_SM 8  /* grid-stride loops: enough blocks to fill the GPU */
/* Column reductions (bias_grad, layernorm's dgamma/dbeta) sum fixed chunks
 * of TPCU_RED_ROWS rows into partials, then the partials in chunk order:
 * the same bits on any GPU. */
#define TPCU_RED_ROWS 256
/* sumsq: fixed TPCU_SUM_CHUNK elements per partial. */
#define TPCU_SUM_CHUNK 8192

/* Host functions (cuda_plan.c). Blocks of a grid-stride loop over n items,
 * threads per block: enough to fill the GPU (blocks_per_sm per SM), never
 * more than the items need; 0 for no items. */
uint32_t tpcu_grid_1d(int64_t n, int threads, int sm_count, int blocks_per_sm);
/* Blocks for one warp per row. */
uint32_t tpcu_grid_rows(int64_t rows);
int64_t tpcu_red_chunks(int64_t rows);
int64_t tpcu_sum_chunks(int64_t n);

/* ------------------------------------------------------ optimizer control */

/* Word indices of the control block (backend_iface.h's TP_CTL_*; the host
 * code asserts they agree). */
enum {
  TPCU_CTL_SUMSQ = 0,
  TPCU_CTL_GRAD_SCALE = 1,
  TPCU_CTL_SKIP = 2,
  TPCU_CTL_LOSS_SCALE = 3,
  TPCU_CTL_GOOD_STEPS = 4,
  TPCU_CTL_SKIPPED = 5,
  TPCU_CTL_GRAD_NORM = 6,
  TPCU_CTL_WORDS = 8
};
#define TPCU_LOSS_SCALE_MAX 1099511627776.0f /* 2^40, as TP_LOSS_SCALE_MAX */

/* The control rule of backend_iface.h (tp_control_args), exactly as
 * tp_optim_control_host() of tensorplug/optim_control.h: clipping and the
 * dynamic loss scale's state machine (skip and back off on a non-finite
 * norm, grow after growth_interval finite steps). One GPU thread runs it. */
TPCU_HD void tpcu_optim_control(float *ctl, float max_norm, int dynamic, int growth_interval,
                                float growth, float backoff) {
  float norm = sqrtf(ctl[TPCU_CTL_SUMSQ]) / ctl[TPCU_CTL_LOSS_SCALE];
  ctl[TPCU_CTL_GRAD_NORM] = norm;
  if (dynamic && !isfinite(norm)) {
    ctl[TPCU_CTL_SKIP] = 1.0f;
    ctl[TPCU_CTL_SKIPPED] += 1.0f;
    ctl[TPCU_CTL_GRAD_SCALE] = 0.0f;
    ctl[TPCU_CTL_LOSS_SCALE] = fmaxf(ctl[TPCU_CTL_LOSS_SCALE] * backoff, 1.0f);
    ctl[TPCU_CTL_GOOD_STEPS] = 0.0f;
  } else {
    float clip = max_norm > 0.0f && norm > max_norm ? max_norm / norm : 1.0f;
    ctl[TPCU_CTL_SKIP] = 0.0f;
    ctl[TPCU_CTL_GRAD_SCALE] = clip / ctl[TPCU_CTL_LOSS_SCALE];
    if (dynamic) {
      ctl[TPCU_CTL_GOOD_STEPS] += 1.0f;
      if (ctl[TPCU_CTL_GOOD_STEPS] >= (float)growth_interval) {
        ctl[TPCU_CTL_LOSS_SCALE] = fminf(ctl[TPCU_CTL_LOSS_SCALE] * growth, TPCU_LOSS_SCALE_MAX);
        ctl[TPCU_CTL_GOOD_STEPS] = 0.0f;
      }
    }
  }
  ctl[TPCU_CTL_SUMSQ] = 0.0f;
}

/* Adam's per-element update with the coefficients of tpcu_adam_coeffs()
 * (the CPU backend's formula, term for term):
 *   KERAS: p -= step * m / (sqrt(v) + eps)                 (decay 1, vscale 1)
 *   W:     p = p * decay - step * m / (sqrt(v) * vscale + eps) */
TPCU_HD void tpcu_adam_update(float *p, float *m, float *v, float g, float gs, float b1, float b2,
                              float decay, float step, float vscale, float eps) {
  float gg = gs * g;
  float mm = b1 * *m + (1.0f - b1) * gg;
  float vv = b2 * *v + (1.0f - b2) * (gg * gg);
  *m = mm;
  *v = vv;
  *p = *p * decay - step * mm / (sqrtf(vv) * vscale + eps);
}

/* ------------------------------------------------------ kernel error word */

/* Data-dependent failures (an id or label out of range) are found on the
 * GPU: the first failing thread writes {code, position, value, limit} into
 * a word of mapped host memory that synchronize()/download() read. */
enum {
  TPCU_KERR_NONE = 0,
  TPCU_KERR_EMBEDDING_FWD_ID = 1,
  TPCU_KERR_EMBEDDING_BWD_ID = 2,
  TPCU_KERR_CE_FWD_LABEL = 3,
  TPCU_KERR_CE_BWD_LABEL = 4,
  TPCU_KERR_COUNT_LABEL = 5,
};
#define TPCU_KERR_WORDS 4

/* -------------------------------------------------- attention tile layout */

/* Shared-memory layout of the flash-attention kernels, computed on the host
 * (tpcu_attn_layout_make in cuda_plan.c, unit-tested) and passed by value.
 * br query rows and bc key rows per tile; head_dim is padded to hdp (a
 * multiple of 16, the tensor-core tile). Element tiles hold the compute
 * type (bf16, f16 or f32), score and accumulator tiles f32. Offsets are
 * bytes from the start of dynamic shared memory; NONE marks an array the
 * kernel does not have.
 *   fwd:  q k v [elem], s [f32 br x bc], p [elem br x bc], acc = O [f32 br x hdp],
 *         rows = m, l, alpha [3 br f32]
 *   dq:   q k v dout [elem], s, dp [f32 br x bc], ds [elem], acc = dQ [f32 br x hdp],
 *         rows = lse, D [2 br f32]
 *   dkdv: q k v dout [elem], s, dp [f32], p, ds [elem], acc = dK, acc2 = dV
 *         [f32 bc x hdp], rows = lse, D [2 br f32] */
#define TPCU_ATTN_NONE 0xffffffffu
typedef struct tpcu_attn_layout {
  int br, bc, hdp;
  int esize; /* bytes per element of the element tiles (2 or 4) */
  int ld_e;  /* row stride (elements) of the [rows x hdp] element tiles */
  int ld_s;  /* row stride of the f32 [br x bc] tiles */
  int ld_p;  /* row stride of the element [br x bc] tiles */
  int ld_o;  /* row stride of the f32 [rows x hdp] accumulators */
  uint32_t q, k, v, dout, s, p, dp, ds, acc, acc2, rows; /* byte offsets */
  uint32_t flag; /* one int the block shares (no static shared memory: it would
                  * shift the dynamic tiles off their alignment) */
  uint32_t bytes; /* total dynamic shared memory */
} tpcu_attn_layout;

/* One fused attention call as the kernels take it (device addresses). */
/* q_len queries over kv_len keys; q, dq rows have stride ld_q; k, v, dk,
 * dv rows ld_kv; out, dout are [B, q_len, heads * head_dim] dense. */
typedef struct tpcu_attn_call {
  int batch, heads, q_len, kv_len, head_dim, ld_q, ld_kv;
  const float *q, *k, *v;
  float *out, *lse;
  const int32_t *mask; /* NULL: none */
  const float *bias;   /* NULL: none */
  float scale, dropout;
  uint64_t seed, offset;
  int compute; /* tp_dtype */
  /* backward only */
  const float *dout;
  float *dq, *dk, *dv, *dbias; /* dbias NULL: not wanted */
  float *dvec;                 /* scratch: batch * heads * q_len f32 */
} tpcu_attn_call;

/* Which kernel a layout is for. */
enum { TPCU_ATTN_FWD = 0, TPCU_ATTN_DQ = 1, TPCU_ATTN_DKDV = 2 };

#ifdef __cplusplus
}
#endif
