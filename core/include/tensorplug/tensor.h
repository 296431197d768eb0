/* tensorplug/tensor.h — tensors, the execution context and its arena.
 *
 * A tp_ctx runs ops on one backend. Activations of one step are carved from
 * an arena that tp_ctx_begin_step() resets (one device buffer, grown only when
 * a step needed more: no device allocation per op in the steady state).
 * Errors are sticky: the first failing op records a GError in the context and
 * every later op returns NULL; check once with tp_ctx_check(). */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "tensorplug/backend.h"
#include "tensorplug/dtype.h"

G_BEGIN_DECLS

#define TP_MAX_DIMS 4

typedef struct tp_tensor tp_tensor;
struct tp_tensor {
  tp_dtype dtype;
  int ndim;
  int64_t shape[TP_MAX_DIMS];
  tp_mem mem;
  tp_tensor *grad;    /* same shape, f32; allocated by backward when needed */
  bool requires_grad; /* parameters, and every op output that depends on one */
  const char *name;   /* parameters only */
};

int64_t tp_tensor_numel(const tp_tensor *t);
size_t tp_tensor_nbytes(const tp_tensor *t);

typedef struct tp_ctx tp_ctx;

tp_ctx *tp_ctx_new(tp_backend *be, GError **err);
void tp_ctx_free(tp_ctx *ctx);
tp_backend *tp_ctx_backend(tp_ctx *ctx);

/* Training mode enables dropout and records ops on the tape. */
void tp_ctx_set_training(tp_ctx *ctx, bool training);
bool tp_ctx_training(const tp_ctx *ctx);
/* Recording alone, without dropout (PyTorch's eval mode with gradients):
 * call after tp_ctx_set_training(). */
void tp_ctx_set_grad_enabled(tp_ctx *ctx, bool enabled);
/* The compute type of matrix products (gemm and attention): TP_F32 (the
 * default), TP_BF16 or TP_F16 — operands rounded to it, sums in f32, as
 * tensor cores do. Storage stays f32 (master weights, optimizer state and
 * activations); the backend must accept the type (gemm_compute).
 * TP_I8 is for inference only: the products of activations with weights
 * (tp_linear, tp_linear_gelu) are quantized dynamically to int8 (each
 * activation row and each weight row with its own scale, s32 sums, as ONNX
 * Runtime's dynamic quantization); attention stays f32, and an op that
 * would record for gradients fails. */
bool tp_ctx_set_precision(tp_ctx *ctx, tp_dtype compute, GError **err);
tp_dtype tp_ctx_precision(const tp_ctx *ctx);
/* Whether ops use the backend's optional fused slots (fused attention,
 * bias + GELU, residual add + LayerNorm, ...) where it has them, and models
 * skip padding (tp_pack_plan): the default. FALSE composes every op of the
 * basic kernels over the padded batch: the reference they are tested
 * against. */
void tp_ctx_set_fused(tp_ctx *ctx, bool fused);
bool tp_ctx_fused(const tp_ctx *ctx);
/* Dropout masks come from (seed, a counter advanced by every dropout call). */
void tp_ctx_set_rng(tp_ctx *ctx, uint64_t seed, uint64_t counter);
uint64_t tp_ctx_rng_counter(const tp_ctx *ctx);
/* The ops that follow compute rows [row0, row0 + rows) of a batch of
 * batch_rows (a rank's share of a global batch, a micro-batch): dropout then
 * takes the counters the whole batch would give those rows, so its masks do
 * not depend on how a batch is split. Every tensor dropout sees must have
 * the batch as its leading axis. rows = 0 (the default): a whole batch. */
void tp_ctx_set_batch_share(tp_ctx *ctx, int64_t row0, int64_t rows, int64_t batch_rows);

/* Forget the previous step's activations and tape. */
void tp_ctx_begin_step(tp_ctx *ctx);

/* Sticky error handling. */
bool tp_ctx_ok(const tp_ctx *ctx);
void tp_ctx_fail(tp_ctx *ctx, GError *err); /* takes ownership; keeps the first */
/* FALSE and the recorded error (moved to *err, cleared in ctx) after a failure;
 * also synchronizes the backend so asynchronous kernel errors surface. */
bool tp_ctx_check(tp_ctx *ctx, GError **err);
/* The same without synchronizing: only failures the core recorded (shapes,
 * allocation). Kernel failures surface at the next download or check. */
bool tp_ctx_take_error(tp_ctx *ctx, GError **err);

/* A new uninitialised activation from the arena (NULL after an error). */
tp_tensor *tp_tensor_new(tp_ctx *ctx, tp_dtype dtype, int ndim, const int64_t *shape);
tp_tensor *tp_tensor_zeros(tp_ctx *ctx, tp_dtype dtype, int ndim, const int64_t *shape);
/* Copies host data (of t's dtype, numel elements) into a new activation. */
tp_tensor *tp_tensor_from_host(tp_ctx *ctx, tp_dtype dtype, int ndim, const int64_t *shape,
                               const void *data);
/* The host copy of an i32 tensor made this step by tp_tensor_from_host (up
 * to 1 Mi elements: ids, masks), else NULL. Lets ops plan from a batch's
 * mask on the host, without reading it back from the device. */
const int32_t *tp_tensor_host_i32(const tp_ctx *ctx, const tp_tensor *t);
/* Copies a tensor's contents to host memory (one host synchronisation). */
bool tp_tensor_to_host(tp_ctx *ctx, const tp_tensor *t, void *dst, GError **err);

/* Reverse-mode autograd over the tape recorded since tp_ctx_begin_step():
 * seeds d(loss) = 1 (loss must have one element) and accumulates into every
 * requires_grad tensor's grad (parameter gradients are not zeroed here).
 * Queues kernels only: no host synchronisation. */
bool tp_ctx_backward(tp_ctx *ctx, tp_tensor *loss, GError **err);
/* The same with d(loss) copied from a device f32 (the loss scale). */
bool tp_ctx_backward_scaled(tp_ctx *ctx, tp_tensor *loss, tp_mem scale, GError **err);
/* The same from any output, seeding d(out) with dout (host f32, numel of out):
 * for vector-Jacobian products, custom losses and gradient checks. */
bool tp_ctx_backward_from(tp_ctx *ctx, tp_tensor *out, const float *dout, GError **err);

/* Activation memory of inference, one block (a layer) at a time. A mark
 * notes how much of the arena is in use; tp_ctx_release() gives back all
 * allocated since, except `keep`, which moves to the mark (one device copy)
 * and comes back as a new tensor. Only while the context does not record
 * (evaluation, prediction): the tape needs every activation, so recording —
 * or with a mark of an earlier step — `keep` comes back unchanged. No other
 * tensor made since the mark may be used afterwards. */
typedef struct tp_arena_mark {
  uint64_t step;
  guint chunk;
  size_t used, live;
} tp_arena_mark;
tp_arena_mark tp_ctx_mark(const tp_ctx *ctx);
tp_tensor *tp_ctx_release(tp_ctx *ctx, tp_arena_mark mark, tp_tensor *keep);

/* Bytes the arena holds (for reports). */
size_t tp_ctx_arena_bytes(const tp_ctx *ctx);

/* ---- for op implementations (core/ops_*.c) ---- */
typedef struct tp_tape_node tp_tape_node;
typedef void (*tp_backward_fn)(tp_ctx *ctx, tp_tape_node *node);
#define TP_NODE_MAX_IN 4
struct tp_tape_node {
  tp_backward_fn backward;
  tp_tensor *out;
  tp_tensor *in[TP_NODE_MAX_IN];
  tp_tensor *saved[2]; /* extra tensors an op keeps (softmax probs, LN stats) */
  int64_t i[6];        /* sizes the backward needs */
  float f[2];
  uint64_t u[2];
};
/* Appends a node when training and some input requires grad; marks out. */
tp_tape_node *tp_ctx_record(tp_ctx *ctx, tp_backward_fn fn, tp_tensor *out, int n_in,
                            tp_tensor *const *in);
/* The gradient buffer of t, allocated and zeroed on first use. */
tp_tensor *tp_tensor_grad(tp_ctx *ctx, tp_tensor *t);
/* The same for a writer that overwrites every element when *acc comes back
 * false (the buffer is new and NOT zeroed), and adds when it comes back true
 * (something wrote it already). Saves zeroing gradients with one writer. */
tp_tensor *tp_tensor_grad_acc(tp_ctx *ctx, tp_tensor *t, bool *acc);
/* A tp_mem for "no tensor" (mask absent). */
static inline tp_mem tp_mem_null(void) { tp_mem m = {NULL, 0}; return m; }

G_END_DECLS
