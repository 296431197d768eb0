/* tensorplug/backend_iface.h — what a compute backend implements (ABI 2).
 *
 * Layers (as in ggml): the plugin's iface is the registry (probe lists
 * devices), open() gives a device, the device allocates buffers, and kernels
 * run on a device over buffer memory. Memory is addressed as (buffer, byte
 * offset) so backends whose memory is not a plain pointer (Vulkan) fit too.
 *
 * Kernel rules, for every backend:
 *  - All tensors are dense row-major; sizes are element counts; f32 unless a
 *    dtype argument says otherwise; ids and labels are i32.
 *  - "+=" in a comment means the kernel ACCUMULATES into its output (every
 *    gradient output does: the core zeroes gradients before backward).
 *  - Outputs never alias inputs unless the comment says "in place".
 *  - A kernel's errors (bad argument, id out of range, unsupported dtype)
 *    are kept on the device and reported by the next synchronize() or
 *    download(); a kernel never blocks and never prints.
 * The CPU backend is the reference; tests/test_backend_ops.c compares every
 * other backend's kernels to it.
 *
 * Device limits (tp_device_info). The core, never the plugin, keeps every
 * call inside them (core/kernels.c splits the work):
 *  - no buffer is larger than max_alloc_bytes;
 *  - every tensor argument of a kernel, from its first to its last byte,
 *    lies within [align_down(off, offset_align), that + max_binding_bytes):
 *    so a backend can bind it as one descriptor range starting at the
 *    aligned-down offset and pass (off - aligned) as an element offset;
 *  - offsets are multiples of the element size; tensors the core allocates
 *    start at multiples of offset_align, but views and split chunks may not
 *    (a backend that needs aligned bindings handles the remainder itself).
 *
 * Ordering and asynchrony (every backend):
 *  - Each opened device has ONE in-order queue. upload, kernels, copy,
 *    download and buffer_free take effect in the order they are called.
 *  - upload() may return before the data reaches the device; the source may
 *    be reused or freed as soon as it returns (the backend copies it first).
 *  - download() waits for every earlier call, then copies: it is a host
 *    synchronisation, like synchronize(). Both report the first kernel
 *    error since the last report.
 *  - buffer_free() may be called while queued work still reads or writes
 *    the buffer: the backend releases it after that work.
 *  - Memory handed out again by the core (the activation arena is reset at
 *    every step) may be overwritten by later kernels at once: the queue's
 *    order makes earlier readers finish first.
 *  - Kernel arguments are values (structs are copied before the call
 *    returns); nothing a kernel reads from the host outlives the call.
 *  - The core synchronises at most once per training step (see
 *    docs/architecture.md): losses, accuracy, the gradient norm and the
 *    loss scale stay on the device between read-backs. */
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

/* Bit (1u << dtype) in a dtype mask. */
#define TP_DTYPE_BIT(t) (1u << (unsigned)(t))

typedef struct tp_device_info {
  char name[128];        /* "cpu", "NVIDIA H100 80GB HBM3", "llvmpipe (LLVM 15.0.6, 256 bits)" */
  char description[256]; /* details: cores, BLAS core, driver, API version, ... */
  uint64_t memory_bytes; /* device memory (0 when unknown) */
  int compute_units;     /* cores / SMs / CUs */
  bool is_software;      /* a CPU implementation of a GPU API (lavapipe) */
  bool is_discrete;      /* a GPU with its own memory (for device choice) */
  bool host_visible;     /* buffer_host_ptr() returns a pointer (CPU, unified memory) */
  uint64_t max_alloc_bytes;   /* largest buffer_alloc() (0 = memory_bytes) */
  uint64_t max_binding_bytes; /* largest byte range one kernel argument may span (0 = no limit) */
  uint32_t offset_align;      /* alignment of tensor offsets the core allocates (power of 2, >= 4) */
  uint32_t gemm_compute;      /* TP_DTYPE_BIT of every compute type gemm accepts */
  uint32_t storage_dtypes;    /* TP_DTYPE_BIT of every element type kernels accept */
  char features[256];         /* extensions or libraries the backend uses ("VK_KHR_cooperative_matrix, ...") */
  uint32_t max_head_dim;      /* largest head_dim the fused attention slot takes (0 = any) */
} tp_device_info;

typedef enum { TP_ADAM_KERAS = 0, TP_ADAM_W = 1 } tp_adam_mode;

/* The optimizer's device-side control block: TP_CTL_WORDS f32 words. The
 * host never reads it inside a step: sumsq accumulates into SUMSQ,
 * optim_control turns that into GRAD_SCALE and SKIP, adam_step obeys them. */
enum {
  TP_CTL_SUMSQ = 0,      /* sum of squares of the (loss-scaled) gradients, += by sumsq */
  TP_CTL_GRAD_SCALE = 1, /* what adam_step multiplies every gradient by */
  TP_CTL_SKIP = 2,       /* nonzero: adam_step leaves p, m and v unchanged this step */
  TP_CTL_LOSS_SCALE = 3, /* the factor the loss gradient was seeded with (1 without scaling) */
  TP_CTL_GOOD_STEPS = 4, /* finite steps since the loss scale last changed */
  TP_CTL_SKIPPED = 5,    /* steps skipped so far (non-finite gradients under loss scaling) */
  TP_CTL_GRAD_NORM = 6,  /* the last step's global gradient norm, unscaled */
  TP_CTL_WORDS = 8
};

typedef struct tp_adam_args {
  tp_adam_mode mode;
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;     /* t, starting at 1 */
  float grad_scale; /* gradients are multiplied by this first */
  /* A control block (TP_CTL_WORDS f32), or buf NULL: then only grad_scale
   * applies. With one: g' = grad_scale * ctl[GRAD_SCALE] * g, and nothing
   * changes when ctl[SKIP] != 0. */
  tp_mem ctl;
} tp_adam_args;

/* The step's control rule, run once per step after sumsq into ctl[SUMSQ]:
 *   norm = sqrt(ctl[SUMSQ]) / ctl[LOSS_SCALE];  ctl[GRAD_NORM] = norm
 *   dynamic && !finite(norm): SKIP = 1, SKIPPED += 1, GRAD_SCALE = 0,
 *       LOSS_SCALE = max(LOSS_SCALE * backoff, 1), GOOD_STEPS = 0
 *   otherwise: SKIP = 0, clip = max_norm > 0 && norm > max_norm ? max_norm / norm : 1,
 *       GRAD_SCALE = clip / LOSS_SCALE;
 *       dynamic: GOOD_STEPS += 1, and at growth_interval: LOSS_SCALE *= growth, GOOD_STEPS = 0
 *   then SUMSQ = 0.
 * Without dynamic scaling a non-finite norm flows on (GRAD_SCALE NaN), and
 * the loss read back later reports it. tp_optim_control_host() in
 * tensorplug/optim_control.h is the reference implementation. */
typedef struct tp_control_args {
  float max_norm; /* 0 = no clipping */
  bool dynamic;   /* dynamic loss scaling (f16) */
  int growth_interval;
  float growth, backoff;
} tp_control_args;

/* C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b], for b < batch.
 * op(A) is m x k (A stored k x m when ta), op(B) is k x n (B stored n x k
 * when tb), C is m x n; ld* are row strides, s* are batch strides, all in
 * elements. sc == 0 means every product adds into the one C (in batch
 * order, beta applied once, before the first).
 * Storage: A and B are ab_dtype, C is c_dtype (f32 always supported; bf16
 * and f16 where storage_dtypes says so). compute: TP_F32 multiplies in f32;
 * TP_BF16 / TP_F16 round every element of A and B to that type first (as
 * tensor cores / matrix units do), then accumulate in at least f32. TP_I8
 * (inference, where gemm_compute says so): dynamic int8 quantization of A
 * [m, k] times a weight B stored [n, k] (tb), one symmetric scale per row of
 * A and per row of B, exact integer sums (plugins/cpu/cpu_gemm_int8.c is the
 * reference); other layouts may compute in f32. beta == 0 never reads C;
 * k == 0 gives C = beta * C. */
typedef struct tp_gemm_args {
  bool ta, tb;
  int m, n, k, batch;
  float alpha, beta;
  tp_mem a, b, c;
  int lda, ldb, ldc;
  int64_t sa, sb, sc;
  tp_dtype ab_dtype, c_dtype, compute;
} tp_gemm_args;

/* Multi-head attention of Tq queries over Tk keys (Tq may differ from Tk: a
 * model's last layer may compute only the [CLS] row, Tq = 1). q is
 * [B, Tq, ld_q] rows and k, v are [B, Tk, ld_kv] rows; head h of position t is
 * at element (b*T + t)*ld + h*hd (ld >= nh*hd, so q, k and v may be slices of
 * one fused [B, T, 3H] projection):
 *   S[b,h,i,j] = scale * q[b,i,h] . k[b,j,h] + bias[h,i,j]   (bias optional)
 *   P = softmax_j(S) over keys j with mask[b,j] != 0; masked j get exactly 0;
 *       a batch entry whose every key is masked gets P = 1/Tk everywhere and
 *       behaves in backward as if every S there were 0
 *   P' = dropout(P): keep = philox_uniform(seed, offset + ((b*nh + h)*Tq + i)*Tk + j) >= p,
 *       P' = keep ? P / (1 - p) : 0 (the counters tp_dropout gives P [B, nh, Tq, Tk])
 *   out[b, i, h*hd:(h+1)*hd] = sum_j P'[b,h,i,j] v[b,j,h]     out is [B, Tq, nh*hd] dense
 *   lse[b,h,i] = log sum_j exp(S[b,h,i,j]) over unmasked j (log Tk for a fully masked entry)
 * compute: as gemm's (TP_F32, or TP_BF16/TP_F16 operands with f32 sums).
 * The core's composition (core/ops.c) is the reference. */
typedef struct tp_attention_args {
  int batch, heads, head_dim;
  int q_len, kv_len; /* Tq, Tk */
  int ld_q, ld_kv;   /* row strides of q (and dq), of k, v (and dk, dv), in elements */
  tp_mem q, k, v;
  tp_mem out;  /* [B, Tq, nh*hd] */
  tp_mem lse;  /* [B, nh, Tq] f32, written by forward, read by backward */
  tp_mem mask; /* [B, Tk] i32 over keys, buf NULL = none */
  tp_mem bias; /* [nh, Tq, Tk] f32, buf NULL = none */
  float scale;
  float dropout; /* p in [0, 1); 0 = none */
  uint64_t seed, offset;
  tp_dtype compute;
} tp_attention_args;

/* The residual add + LayerNorm slots' tensors (all f32 [rows, cols] but
 * mean, rstd [rows], gamma, beta [cols], keep [rows * cols] bytes). */
typedef struct tp_add_ln_args {
  int rows, cols;
  float eps;
  float p; /* dropout on a, in [0, 1) */
  uint64_t seed, offset;
  tp_mem y, s, mean, rstd, keep, a, b, gamma, beta;
} tp_add_ln_args;

typedef struct tp_kernels {
  void (*gemm)(tp_backend_dev *d, const tp_gemm_args *g);

  /* Rows [row0, row0 + rows) of a table of vocab rows are given (table
   * points at row row0):
   *   out[i, :] = table[ids[i] - row0, :]   for ids[i] in [row0, row0 + rows)
   * other rows of out are left as they are. An id outside [0, vocab) is an
   * error (no table memory outside the given rows is ever read).
   * out [n, h], ids [n]. */
  void (*embedding_fwd)(tp_backend_dev *d, tp_mem out, tp_mem table, tp_mem ids, int n, int h,
                        int row0, int rows, int vocab);
  /* dtable[ids[i] - row0, :] += dout[i, :] for ids[i] in [row0, row0 + rows);
   * repeated ids add in order of i. */
  void (*embedding_bwd)(tp_backend_dev *d, tp_mem dtable, tp_mem dout, tp_mem ids, int n, int h,
                        int row0, int rows, int vocab);

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
  /* y[i] = value (y is n 32-bit words: f32, or i32 when value is 0) */
  void (*fill)(tp_backend_dev *d, tp_mem y, float value, int64_t n);

  /* Inverted dropout. keep_i = philox_uniform(seed, offset + i) >= p, where
   * philox_uniform is tp_philox_uniform() of tensorplug/philox.h (Philox4x32-10,
   * counter = offset + i, key = seed, top 24 bits of the first output word
   * / 2^24). Identical masks on every backend. y = keep ? x / (1 - p) : 0,
   * with 1 / (1 - p) rounded to f32 once. */
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
   * logits [batch, classes], labels [batch] i32 in [0, classes) (others are
   * an error). */
  void (*cross_entropy_fwd)(tp_backend_dev *d, tp_mem loss, tp_mem logits, tp_mem labels,
                            int batch, int classes);
  /* dlogits += dloss[0] / batch * (softmax(logits) - onehot(labels)) */
  void (*cross_entropy_bwd)(tp_backend_dev *d, tp_mem dlogits, tp_mem dloss, tp_mem logits,
                            tp_mem labels, int batch, int classes);
  /* out[0] = (f32) the number of b with argmax_c logits[b, c] == labels[b]
   * (the first maximum wins; a NaN row counts as wrong). */
  void (*count_correct)(tp_backend_dev *d, tp_mem out, tp_mem logits, tp_mem labels, int batch,
                        int classes);

  /* One optimizer step over n parameters (in place on p, m, v), g read only.
   * g' = grad_scale * g (times ctl[GRAD_SCALE] with a control block, and no
   * change at all when ctl[SKIP] != 0); m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2;
   * KERAS: p -= lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)
   * W:     p *= 1 - lr*wd first; then p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps) */
  void (*adam_step)(tp_backend_dev *d, tp_mem p, tp_mem g, tp_mem m, tp_mem v, int64_t n,
                    const tp_adam_args *args);
  /* Applies the step's control rule (tp_control_args) to the block ctl. */
  void (*optim_control)(tp_backend_dev *d, tp_mem ctl, const tp_control_args *args);

  /* out[0] += sum_i x[i]^2 (f32 accumulate; out is one f32) */
  void (*sumsq)(tp_backend_dev *d, tp_mem out, tp_mem x, int64_t n);
  /* out[0] = 1 if any x[i] is NaN or +-Inf, else out[0] unchanged (out is one i32) */
  void (*nonfinite)(tp_backend_dev *d, tp_mem out, tp_mem x, int64_t n);

  /* y[i] = convert(x[i]) between f32, bf16, f16 (round to nearest even). */
  void (*cast)(tp_backend_dev *d, tp_mem y, tp_dtype ydt, tp_mem x, tp_dtype xdt, int64_t n);
} tp_kernels;

/* What `native` gives. Work queued on `queue` by the library runs in order
 * with the backend's own (upload, kernels, copy, download). */
typedef struct tp_native_mem {
  const char *api; /* "cuda" */
  int device;      /* the API's device ordinal (cudaSetDevice) */
  void *queue;     /* the device's in-order queue (cudaStream_t) */
  void *ptr;       /* the device address of m's byte m.off */
} tp_native_mem;

typedef struct tp_backend_iface {
  size_t struct_size; /* sizeof(tp_backend_iface) the plugin was built with */

  /* Devices usable here; fills up to max infos (zeroed by the caller). Returns
   * the count (0 when the driver or hardware is missing: err then says why),
   * never crashes. */
  int (*probe)(tp_device_info *infos, int max, GError **err);

  /* threads: worker threads for host-side work (0 = backend default). */
  tp_backend_dev *(*open)(int index, int threads, GError **err);
  /* Waits for queued work, then releases everything of the device. */
  void (*close)(tp_backend_dev *d);

  /* A new buffer of at least bytes (<= max_alloc_bytes); its contents are
   * undefined. Out of memory: TP_ERROR_OUT_OF_MEMORY with the bytes asked
   * and the device's memory in the message. */
  tp_buffer *(*buffer_alloc)(tp_backend_dev *d, size_t bytes, GError **err);
  void (*buffer_free)(tp_backend_dev *d, tp_buffer *b);
  /* Host pointer to the buffer's first byte when the device is host_visible,
   * else NULL. For tests and benchmarks; the core uses upload/download. */
  void *(*buffer_host_ptr)(tp_buffer *b);

  bool (*upload)(tp_backend_dev *d, tp_mem dst, const void *src, size_t bytes, GError **err);
  bool (*download)(tp_backend_dev *d, void *dst, tp_mem src, size_t bytes, GError **err);
  /* Device-to-device copy, queued; the ranges may overlap (memmove). */
  bool (*copy)(tp_backend_dev *d, tp_mem dst, tp_mem src, size_t bytes, GError **err);
  /* Waits for queued work; reports any failure it hit. */
  bool (*synchronize)(tp_backend_dev *d, GError **err);

  tp_kernels k;
  /* Optional slots are appended after this line (NULL = composed by core). */

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

  /* Fused attention (tp_attention_args): out and lse, no [T, T] matrix kept. */
  void (*attention_fwd)(tp_backend_dev *d, const tp_attention_args *a);
  /* dq, dk, dv += (the layouts of q, k, v); dbias += when
   * dbias.buf is set (summed over the batch). a is the forward's arguments
   * (out and lse as it wrote them). */
  void (*attention_bwd)(tp_backend_dev *d, const tp_attention_args *a, tp_mem dout, tp_mem dq,
                        tp_mem dk, tp_mem dv, tp_mem dbias);

  /* Native handles, for libraries that work on the device's memory
   * directly (a collective plugin: NCCL, tensorplug/collective_iface.h):
   * fills out for m and returns TRUE; FALSE when the backend has none.
   * m.buf NULL asks for the device and queue only (ptr NULL). */
  bool (*native)(tp_backend_dev *d, tp_mem m, tp_native_mem *out);

  /* The compute type of matrix products this device trains fastest in, of
   * those accurate enough to train with (TP_F32 or TP_BF16): what
   * --precision auto picks. The CPU says TP_BF16 only where bf16 arithmetic
   * outruns f32 (AMX, fast AVX512-BF16). NULL: the CLI's default. */
  tp_dtype (*preferred_compute)(tp_backend_dev *d);

  /* Fused elementwise passes around the matrix products (the core composes
   * them of the basic kernels when a slot is NULL; tensorplug/kernels.h
   * splits them by rows). acc false means the gradient output is written
   * (=), not accumulated: the core passes it for gradients nothing has
   * written yet, so they need no zeroing first. */

  /* The FFN's bias and GELU: x [rows, cols] (a product's output) becomes
   * pre = x + bias in place, and y = gelu(pre) (gelu_fwd's erf form). */
  void (*bias_gelu_fwd)(tp_backend_dev *d, tp_mem y, tp_mem x, tp_mem bias, int64_t rows,
                        int cols);
  /* dx = dy * gelu'(pre) (gelu_bwd's derivative; written, not accumulated:
   * pre is the op's own intermediate); dbias += sum over rows of dx. */
  void (*bias_gelu_bwd)(tp_backend_dev *d, tp_mem dx, tp_mem dbias, tp_mem dy, tp_mem pre,
                        int64_t rows, int cols);

  /* Residual add + LayerNorm, with dropout on the branch (tp_add_ln_args):
   *   s = dropout(a) + b    (dropout_fwd_keep's mask and scale for p > 0:
   *                          keep[i] = 1 or 0, one byte per element; p == 0:
   *                          s = a + b and keep is not touched)
   *   y = layernorm(s), mean and rstd as layernorm_fwd stores them.
   * Backward, with ds = the LayerNorm gradient at s (layernorm_bwd's):
   *   db = ds, da = keep ? ds / (1 - p) : 0 (each = or += by its acc flag;
   *   buf NULL: not wanted); dgamma += ..., dbeta += ... */
  void (*add_layernorm_fwd)(tp_backend_dev *d, const tp_add_ln_args *a);
  void (*add_layernorm_bwd)(tp_backend_dev *d, const tp_add_ln_args *a, tp_mem dy, tp_mem da,
                            tp_mem db, tp_mem dgamma, tp_mem dbeta, bool acc_a, bool acc_b);
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
