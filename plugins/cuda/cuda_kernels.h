/* plugins/cuda/cuda_kernels.h — launchers of the CUDA backend's kernels
 * (cuda_kernels.cu), callable from C. Each queues its kernels on ctx's
 * stream and returns the launch status (cudaGetLastError()); arguments are
 * device addresses, already checked by cuda_backend.c. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "cuda_shared.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tpcu_ctx {
  cudaStream_t stream;
  int32_t *err; /* the kernel error word (TPCU_KERR_WORDS i32, device memory) */
  int sm_count;
} tpcu_ctx;

/* dtype codes are tp_dtype's (TP_F32 0, TP_BF16 1, TP_F16 2). */
enum { TPCU_ACT_GELU = 0, TPCU_ACT_RELU = 1, TPCU_ACT_TANH = 2 };

cudaError_t tpcu_k_fill(const tpcu_ctx *c, float *y, float value, int64_t n);
cudaError_t tpcu_k_add(const tpcu_ctx *c, float *y, const float *a, const float *b, int64_t n);
cudaError_t tpcu_k_axpy(const tpcu_ctx *c, float *y, const float *x, float alpha, int64_t n);
cudaError_t tpcu_k_act_fwd(const tpcu_ctx *c, int act, float *y, const float *x, int64_t n);
/* xy is x (GELU, ReLU) or y (tanh) */
cudaError_t tpcu_k_act_bwd(const tpcu_ctx *c, int act, float *dx, const float *dy, const float *xy,
                           int64_t n);
cudaError_t tpcu_k_bias_add(const tpcu_ctx *c, float *y, const float *bias, int64_t rows, int cols);
/* scratch: tpcu_red_chunks(rows) * cols f32 */
cudaError_t tpcu_k_bias_grad(const tpcu_ctx *c, float *dbias, const float *dy, int64_t rows,
                             int cols, float *scratch);
cudaError_t tpcu_k_layernorm_fwd(const tpcu_ctx *c, float *y, float *mean, float *rstd,
                                 const float *x, const float *gamma, const float *beta, int rows,
                                 int cols, float eps);
/* scratch: 2 * tpcu_red_chunks(rows) * cols f32 */
cudaError_t tpcu_k_layernorm_bwd(const tpcu_ctx *c, float *dx, float *dgamma, float *dbeta,
                                 const float *dy, const float *x, const float *mean,
                                 const float *rstd, const float *gamma, int rows, int cols,
                                 float *scratch);
cudaError_t tpcu_k_softmax_fwd(const tpcu_ctx *c, float *y, const float *x, const int32_t *mask,
                               int batch, int heads, int rows, int cols, float scale);
cudaError_t tpcu_k_softmax_bwd(const tpcu_ctx *c, float *dx, const float *dy, const float *y,
                               int64_t rows, int cols, float scale);
/* accumulate: y += (backward), else y = ; keep: NULL or n bytes written */
cudaError_t tpcu_k_dropout(const tpcu_ctx *c, float *y, uint8_t *keep, const float *x, int64_t n,
                           float p, uint64_t seed, uint64_t offset, bool accumulate);
cudaError_t tpcu_k_dropout_bwd_keep(const tpcu_ctx *c, float *dx, const float *dy,
                                    const uint8_t *keep, int64_t n, float p);
cudaError_t tpcu_k_permute_0213(const tpcu_ctx *c, float *y, const float *x, int d0, int d1,
                                int d2, int d3, float beta);
cudaError_t tpcu_k_first_token(const tpcu_ctx *c, bool backward, float *y, const float *x,
                               int batch, int seq, int h);
cudaError_t tpcu_k_embedding(const tpcu_ctx *c, bool backward, float *out, const float *in,
                             const int32_t *ids, int n, int h, int row0, int rows, int vocab);
cudaError_t tpcu_k_cross_entropy_fwd(const tpcu_ctx *c, float *loss, const float *logits,
                                     const int32_t *labels, int batch, int classes);
cudaError_t tpcu_k_cross_entropy_bwd(const tpcu_ctx *c, float *dlogits, const float *dloss,
                                     const float *logits, const int32_t *labels, int batch,
                                     int classes);
cudaError_t tpcu_k_count_correct(const tpcu_ctx *c, float *out, const float *logits,
                                 const int32_t *labels, int batch, int classes);
typedef struct tpcu_adam_k {
  float grad_scale, b1, b2, eps, step, vscale, decay;
} tpcu_adam_k;
/* ctl: NULL or the control block */
cudaError_t tpcu_k_adam(const tpcu_ctx *c, float *p, const float *g, float *m, float *v, int64_t n,
                        tpcu_adam_k k, const float *ctl);
cudaError_t tpcu_k_optim_control(const tpcu_ctx *c, float *ctl, float max_norm, bool dynamic,
                                 int growth_interval, float growth, float backoff);
/* scratch: tpcu_sum_chunks(n) f32 */
cudaError_t tpcu_k_sumsq(const tpcu_ctx *c, float *out, const float *x, int64_t n, float *scratch);
cudaError_t tpcu_k_nonfinite(const tpcu_ctx *c, int32_t *out, const float *x, int64_t n);
cudaError_t tpcu_k_cast(const tpcu_ctx *c, void *y, int ydt, const void *x, int xdt, int64_t n);
/* batch x rows x cols matrices at (b * stride + r * ld + c), the same layout
 * in x and y */
cudaError_t tpcu_k_matrix_cast(const tpcu_ctx *c, void *y, int ydt, const void *x, int xdt,
                               int batch, int rows, int cols, int ld, int64_t stride);
/* y = beta * y (beta 0: y = 0, y never read) */
cudaError_t tpcu_k_matrix_scale(const tpcu_ctx *c, void *y, int dt, float beta, int batch, int rows,
                                int cols, int ld, int64_t stride);

cudaError_t tpcu_k_attention_fwd(const tpcu_ctx *c, const tpcu_attn_call *a,
                                 const tpcu_attn_layout *fwd);
cudaError_t tpcu_k_attention_bwd(const tpcu_ctx *c, const tpcu_attn_call *a,
                                 const tpcu_attn_layout *dq, const tpcu_attn_layout *dkdv);

#ifdef __cplusplus
}
#endif
