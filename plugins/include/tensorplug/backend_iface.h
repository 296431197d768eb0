/* tensorplug/backend_iface.h — what a compute backend implements.
 *
 * Layers (as in ggml): the plugin's iface is the registry (probe lists
 * devices), open() gives a device, the device allocates buffers, and kernels
 * run on a device over buffer memory. Memory is addressed as (buffer, byte
 * offset) so backends whose memory is not a plain pointer (Vulkan) fit too.
 *
 * Kernel rules, for every backend:
 *  - All tensors are dense row-major; sizes are element counts; f32 unless a
 *    dtype argument says otherwise; ids and labels are i32.
 *  - Kernels may run asynchronously; their errors surface at synchronize().
 *  - "+=" in a comment means the kernel ACCUMULATES into its output (every
 *    gradient output does: the core zeroes gradients before backward).
 *  - Outputs never alias inputs unless the comment says "in place".
 * The CPU backend is the reference; tests compare every other backend to it. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <glib.h>
#include "tensorplug/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tp_buffer tp_buffer;           /* defined by each backend */
typedef struct tp_backend_dev tp_backend_dev; /* an opened device, defined by each backend */

/* A device address: a buffer and a byte offset into it. */
typedef struct tp_mem {
  tp_buffer *buf;
  size_t off;
} tp_mem;

typedef struct tp_device_info {
  char name[128];        /* "cpu", "NVIDIA H100 80GB HBM3", ... */
  char description[256]; /* details: cores, BLAS core, driver, ... */
  uint64_t memory_bytes; /* 0 when unknown */
  int compute_units;     /* cores / SMs / CUs */
  bool is_software;      /* a CPU implementation of a GPU API (lavapipe) */
} tp_device_info;

typedef enum { TP_ADAM_KERAS = 0, TP_ADAM_W = 1 } tp_adam_mode;

typedef struct tp_adam_args {
  tp_adam_mode mode;
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;     /* t, starting at 1 */
  float grad_scale; /* gradients are multiplied by this first (clipping, loss-scale unscale) */
} tp_adam_args;

typedef struct tp_kernels {
  /* C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b], for b < batch.
   * op(A) is m x k (A stored k x m when ta), op(B) is k x n (B stored n x k
   * when tb), C is m x n; ld* are row strides, s* are batch strides, all in
   * elements. dtype is the element type of A, B and C (f32 required; others
   * optional, unsupported ones fail at synchronize). */
  void (*gemm)(tp_backend_dev *d, bool ta, bool tb, int m, int n, int k, float alpha,
               tp_mem a, int lda, int64_t sa, tp_mem b, int ldb, int64_t sb, float beta,
               tp_mem c, int ldc, int64_t sc, int batch, tp_dtype dtype);

  /* out[i, :] = table[ids[i], :]   out [n, h], table [v, h], ids [n] */
  void (*embedding_fwd)(tp_backend_dev *d, tp_mem out, tp_mem table, tp_mem ids, int n, int h);
  /* dtable[ids[i], :] += dout[i, :] */
  void (*embedding_bwd)(tp_backend_dev *d, tp_mem dtable, tp_mem dout, tp_mem ids, int n, int h);

  /* y = (x - mean) * rstd * gamma + beta per row; also stores mean[rows] and
   * rstd[rows] = 1/sqrt(var + eps) (biased variance). x, y [rows, cols]. */
  void (*layernorm_fwd)(tp_backend_dev *d, tp_mem y, tp_mem mean, tp_mem rstd, tp_mem x,
                        tp_mem gamma, tp_mem beta, int rows, int cols, float eps);
  /* dx += ..., dgamma += ..., dbeta += ... (exact LayerNorm gradients). */
  void (*layernorm_bwd)(tp_backend_dev *d, tp_mem dx, tp_mem dgamma, tp_mem dbeta, tp_mem dy,
                        tp_mem x, tp_mem mean, tp_mem rstd, tp_mem gamma, int rows, int cols);

  /* Scaled masked softmax over the last axis of x [batch, heads, rows, cols]:
   * y[b,h,i,j] = softmax_j(scale * x[b,h,i,j]) over the j with mask[b,j] != 0;
   * masked j get exactly 0; a row whose every j is masked gets 1/cols
   * everywhere (as PyTorch's finfo.min fill gives). mask [batch, cols] i32, or
   * mask.buf == NULL for no mask. */
  void (*softmax_fwd)(tp_backend_dev *d, tp_mem y, tp_mem x, tp_mem mask, int batch, int heads,
                      int rows, int cols, float scale);
  /* dx += scale * y * (dy - sum_j dy * y) */
  void (*softmax_bwd)(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem y, int batch, int heads,
                      int rows, int cols, float scale);

  /* Elementwise activations over n elements. GELU is the erf form:
   * 0.5 x (1 + erf(x / sqrt 2)). Backward: dx += dy * f'(x); tanh uses y. */
  void (*gelu_fwd)(tp_backend_dev *d, tp_mem y, tp_mem x, int64_t n);
  void (*gelu_bwd)(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem x, int64_t n);
  void (*relu_fwd)(tp_backend_dev *d, tp_mem y, tp_mem x, int64_t n);
  void (*relu_bwd)(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem x, int64_t n);
  void (*tanh_fwd)(tp_backend_dev *d, tp_mem y, tp_mem x, int64_t n);
  void (*tanh_bwd)(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem y, int64_t n);

  /* y[r, c] += bias[c] (in place), y [rows, cols] */
  void (*bias_add)(tp_backend_dev *d, tp_mem y, tp_mem bias, int64_t rows, int cols);
  /* dbias[c] += sum_r dy[r, c] */
  void (*bias_grad)(tp_backend_dev *d, tp_mem dbias, tp_mem dy, int64_t rows, int cols);

  /* y = a + b (y may alias a or b) */
  void (*add)(tp_backend_dev *d, tp_mem y, tp_mem a, tp_mem b, int64_t n);
  /* y += alpha * x */
  void (*axpy)(tp_backend_dev *d, tp_mem y, tp_mem x, float alpha, int64_t n);
  /* y[i] = value */
  void (*fill)(tp_backend_dev *d, tp_mem y, float value, int64_t n);

  /* Inverted dropout. keep_i = philox_uniform(seed, offset + i) >= p, where
   * philox_uniform is tp_philox_uniform() of tensorplug/philox.h (Philox4x32-10,
   * counter = offset + i, key = seed, top 24 bits of the first output word
   * / 2^24). Identical masks on every backend. y = keep ? x / (1 - p) : 0. */
  void (*dropout_fwd)(tp_backend_dev *d, tp_mem y, tp_mem x, int64_t n, float p, uint64_t seed,
                      uint64_t offset);
  /* dx += keep ? dy / (1 - p) : 0, the same mask recomputed */
  void (*dropout_bwd)(tp_backend_dev *d, tp_mem dx, tp_mem dy, int64_t n, float p, uint64_t seed,
                      uint64_t offset);

  /* Swap the middle axes: x [d0, d1, d2, d3] -> y [d0, d2, d1, d3],
   * y = permuted(x) + beta * y (beta 0 or 1). Head split is (B, T, nh, hd),
   * head merge is (B, nh, T, hd). */
  void (*permute_0213)(tp_backend_dev *d, tp_mem y, tp_mem x, int d0, int d1, int d2, int d3,
                       float beta);

  /* y[b, :] = x[b, 0, :]  x [batch, seq, h], y [batch, h] */
  void (*first_token_fwd)(tp_backend_dev *d, tp_mem y, tp_mem x, int batch, int seq, int h);
  /* dx[b, 0, :] += dy[b, :] */
  void (*first_token_bwd)(tp_backend_dev *d, tp_mem dx, tp_mem dy, int batch, int seq, int h);

  /* loss[0] = mean_b (logsumexp(logits[b]) - logits[b, labels[b]])
   * logits [batch, classes], labels [batch] i32 in [0, classes). */
  void (*cross_entropy_fwd)(tp_backend_dev *d, tp_mem loss, tp_mem logits, tp_mem labels,
                            int batch, int classes);
  /* dlogits += dloss[0] / batch * (softmax(logits) - onehot(labels)) */
  void (*cross_entropy_bwd)(tp_backend_dev *d, tp_mem dlogits, tp_mem dloss, tp_mem logits,
                            tp_mem labels, int batch, int classes);

  /* One optimizer step over n parameters (in place on p, m, v), g read only.
   * g' = grad_scale * g; m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2;
   * KERAS: p -= lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)
   * W:     p *= 1 - lr*wd first; then p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps) */
  void (*adam_step)(tp_backend_dev *d, tp_mem p, tp_mem g, tp_mem m, tp_mem v, int64_t n,
                    const tp_adam_args *args);

  /* out[0] += sum_i x[i]^2 (f32 accumulate; out is one f32) */
  void (*sumsq)(tp_backend_dev *d, tp_mem out, tp_mem x, int64_t n);
  /* out[0] = 1 if any x[i] is NaN or +-Inf, else out[0] unchanged (out is one i32) */
  void (*nonfinite)(tp_backend_dev *d, tp_mem out, tp_mem x, int64_t n);

  /* y[i] = convert(x[i]) between f32, bf16, f16 (round to nearest even). */
  void (*cast)(tp_backend_dev *d, tp_mem y, tp_dtype ydt, tp_mem x, tp_dtype xdt, int64_t n);
} tp_kernels;

typedef struct tp_backend_iface {
  size_t struct_size; /* sizeof(tp_backend_iface) the plugin was built with */

  /* Devices usable here; fills up to max infos. Returns the count (0 when the
   * driver or hardware is missing: err then says why), never crashes. */
  int (*probe)(tp_device_info *infos, int max, GError **err);

  /* threads: worker threads for host-side work (0 = backend default). */
  tp_backend_dev *(*open)(int index, int threads, GError **err);
  void (*close)(tp_backend_dev *d);

  tp_buffer *(*buffer_alloc)(tp_backend_dev *d, size_t bytes, GError **err);
  void (*buffer_free)(tp_backend_dev *d, tp_buffer *b);
  /* Host pointer to the buffer's first byte when the memory is host-visible
   * (CPU), else NULL. Lets the core skip copies. */
  void *(*buffer_host_ptr)(tp_buffer *b);

  bool (*upload)(tp_backend_dev *d, tp_mem dst, const void *src, size_t bytes, GError **err);
  bool (*download)(tp_backend_dev *d, void *dst, tp_mem src, size_t bytes, GError **err);
  bool (*copy)(tp_backend_dev *d, tp_mem dst, tp_mem src, size_t bytes, GError **err);
  /* Waits for queued kernels; reports any failure they hit. */
  bool (*synchronize)(tp_backend_dev *d, GError **err);

  tp_kernels k;
  /* Optional fused slots are appended after this line (NULL = composed by core). */

  /* Dropout that keeps its mask for the backward pass, so the Philox stream
   * is drawn once per step instead of twice. Exactly dropout_fwd, and also
   * keep[i] = 1 (element kept) or 0 (dropped), one byte each (keep holds n
   * bytes). */
  void (*dropout_fwd_keep)(tp_backend_dev *d, tp_mem y, tp_mem keep, tp_mem x, int64_t n,
                           float p, uint64_t seed, uint64_t offset);
  /* dx += keep[i] ? dy[i] / (1 - p) : 0 — dropout_bwd from the saved mask
   * (the same scale as dropout_fwd: 1 / (1 - p) rounded to f32 once). */
  void (*dropout_bwd_keep)(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem keep, int64_t n,
                           float p);
} tp_backend_iface;

/* Whether the plugin's iface has room for an appended slot (and the slot is
 * set): slots after `k` exist only in plugins built against headers that
 * have them. */
#define TP_IFACE_HAS(iface, slot)                                                                  \
  ((iface)->struct_size >= offsetof(tp_backend_iface, slot) + sizeof((iface)->slot) &&             \
   (iface)->slot != NULL)

#ifdef __cplusplus
}
#endif
