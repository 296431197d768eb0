/* tensorplug/params.h — a model's parameters: contiguous device buffers for
 * values, gradients and the two Adam moments, all of the same layout (as
 * llm.c does), so the optimizer, zeroing and global-norm clipping are one
 * kernel call per buffer group (one group unless the device limits buffer
 * sizes). */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "tensorplug/tensor.h"

G_BEGIN_DECLS

typedef enum {
  TP_INIT_NORMAL = 0, /* N(0, std) */
  TP_INIT_ZEROS = 1,
  TP_INIT_ONES = 2,
} tp_init;

typedef enum {
  TP_PARAM_REQUIRED = 0, /* a checkpoint must have it */
  TP_PARAM_HEAD = 1,     /* task head (pooler, classifier): initialised when absent */
} tp_param_flags;

typedef struct tp_params tp_params;

tp_params *tp_params_new(void);
void tp_params_free(tp_params *p);

/* Declares a parameter (HF name, shape); returns its index. */
int tp_params_declare(tp_params *p, const char *name, int ndim, const int64_t *shape,
                      tp_init init, float std, int flags);

/* NAME.weight [out, in] ~ N(0, std) and NAME.bias [out] = 0 (nn.Linear layout). */
void tp_params_declare_linear(tp_params *p, const char *name, int64_t out, int64_t in, float std,
                              int flags);
/* NAME.weight [n] = 1 and NAME.bias [n] = 0 (nn.LayerNorm). */
void tp_params_declare_layernorm(tp_params *p, const char *name, int64_t n, int flags);

/* Allocates the four buffers on ctx's backend and initialises every value
 * (deterministic: the same seed gives the same values on every backend). */
bool tp_params_materialize(tp_params *p, tp_ctx *ctx, uint64_t seed, GError **err);
bool tp_params_materialized(const tp_params *p);

guint tp_params_count(const tp_params *p);
int64_t tp_params_numel(const tp_params *p);
tp_tensor *tp_params_at(tp_params *p, guint i);
int tp_params_flags(const tp_params *p, guint i);
/* NULL when absent. */
tp_tensor *tp_params_find(tp_params *p, const char *name);
/* The tensor of a printf-formatted name; records an error in ctx when absent. */
tp_tensor *tp_params_get(tp_params *p, tp_ctx *ctx, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

/* Re-initialises one parameter with its declared init (for missing heads). */
bool tp_params_reinit(tp_params *p, tp_ctx *ctx, guint i, uint64_t seed, GError **err);
/* Host copy in / out of one parameter as f32. */
bool tp_params_set_f32(tp_params *p, tp_ctx *ctx, guint i, const float *src, GError **err);
bool tp_params_get_f32(tp_params *p, tp_ctx *ctx, guint i, float *dst, GError **err);

/* The flat layout (checkpoints): every parameter in declaration order, each
 * padded to 16 floats, whatever the device's buffers look like. which: 0
 * values, 1 grads, 2 Adam m, 3 Adam v. */
int64_t tp_params_flat_floats(const tp_params *p);
bool tp_params_read_flat(tp_params *p, tp_ctx *ctx, int which, float *dst, GError **err);
bool tp_params_write_flat(tp_params *p, tp_ctx *ctx, int which, const float *src, GError **err);

/* The whole device buffers of one kind (which: as above), group by group,
 * padding included (zeros), for work over all of them at once (summing
 * gradients over the ranks of a distributed run). Returns the group count;
 * fills mems[g] and floats[g] for the first `max` groups. */
int tp_params_buffers(tp_params *p, int which, tp_mem *mems, int64_t *floats, int max);

void tp_params_zero_grad(tp_params *p, tp_ctx *ctx);
/* out[0] += the sum of squares of all gradients (device f32; no sync). */
void tp_params_grad_sumsq(tp_params *p, tp_ctx *ctx, tp_mem out);
/* Global L2 norm of all gradients (synchronizes: for tests and reports). */
bool tp_params_grad_norm(tp_params *p, tp_ctx *ctx, double *norm, GError **err);
void tp_params_adam_step(tp_params *p, tp_ctx *ctx, const tp_adam_args *args);
/* Zeroes both Adam moments. */
void tp_params_reset_optimizer(tp_params *p, tp_ctx *ctx);

G_END_DECLS
