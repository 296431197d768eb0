/* tensorplug/ops.h — differentiable ops. Each runs its forward kernel on the
 * context's backend and, in training mode, records its backward on the tape.
 * Every op returns NULL (and records the error in ctx) on a shape mismatch or
 * after an earlier failure, so model code can chain ops and check once. */
#pragma once
#include "tensorplug/tensor.h"

G_BEGIN_DECLS

/* ids [B, T] i32, table [V, H] -> [B, T, H] */
tp_tensor *tp_embedding(tp_ctx *ctx, tp_tensor *table, tp_tensor *ids);
/* a + b, same shapes */
tp_tensor *tp_add(tp_ctx *ctx, tp_tensor *a, tp_tensor *b);
/* x [..., in], w [out, in] (HF/PyTorch layout), b [out] or NULL -> [..., out] */
tp_tensor *tp_linear(tp_ctx *ctx, tp_tensor *x, tp_tensor *w, tp_tensor *b);
/* x [..., H], gamma/beta [H] */
tp_tensor *tp_layernorm(tp_ctx *ctx, tp_tensor *x, tp_tensor *gamma, tp_tensor *beta, float eps);
tp_tensor *tp_gelu(tp_ctx *ctx, tp_tensor *x);
tp_tensor *tp_relu(tp_ctx *ctx, tp_tensor *x);
tp_tensor *tp_tanh(tp_ctx *ctx, tp_tensor *x);
/* Identity unless training and p > 0. */
tp_tensor *tp_dropout(tp_ctx *ctx, tp_tensor *x, float p);
/* x [B, T, nh*hd] -> [B, nh, T, hd] */
tp_tensor *tp_split_heads(tp_ctx *ctx, tp_tensor *x, int heads);
/* x [B, nh, T, hd] -> [B, T, nh*hd] */
tp_tensor *tp_merge_heads(tp_ctx *ctx, tp_tensor *x);
/* Batched over the leading dims: a [..., m, k] (or [..., k, m] when ta),
 * b [..., k, n] (or [..., n, k] when tb) -> alpha * op(a) @ op(b) [..., m, n]. */
tp_tensor *tp_matmul(tp_ctx *ctx, tp_tensor *a, tp_tensor *b, bool ta, bool tb, float alpha);
/* x [B, nh, Tq, Tk], mask [B, Tk] i32 (NULL = none) -> softmax(scale * x) over Tk */
tp_tensor *tp_softmax_masked(tp_ctx *ctx, tp_tensor *x, tp_tensor *mask, float scale);
/* The same elements under another shape (same count); shares x's memory. */
tp_tensor *tp_reshape(tp_ctx *ctx, tp_tensor *x, int ndim, const int64_t *shape);
/* x [B, T, H] -> [B, H] (the [CLS] position) */
tp_tensor *tp_first_token(tp_ctx *ctx, tp_tensor *x);
/* logits [B, C], labels [B] i32 -> mean cross-entropy, shape [1] */
tp_tensor *tp_cross_entropy(tp_ctx *ctx, tp_tensor *logits, tp_tensor *labels);

/* Multi-head self-attention core: q, k, v [B, T, H] -> [B, T, H]:
 * softmax(q k^T / sqrt(hd) + bias, masked) v per head, with dropout on the
 * probabilities. mask [B, T] i32 over the keys (NULL = none); bias [nh, T, T]
 * f32 added to the scaled scores of every batch entry (NULL = none; MPNet's
 * relative positions), differentiable. Composed of the ops above. */
tp_tensor *tp_attention(tp_ctx *ctx, tp_tensor *q, tp_tensor *k, tp_tensor *v, tp_tensor *mask,
                        tp_tensor *bias, int heads, float attn_dropout);
/* gelu(tp_linear(x, w, b)) with b required: one op, so a backend's fused
 * bias + GELU slot replaces two passes over the [..., out] activations. */
tp_tensor *tp_linear_gelu(tp_ctx *ctx, tp_tensor *x, tp_tensor *w, tp_tensor *b);
/* layernorm(dropout(a, p) + b) over the last axis (the post-LN residual
 * block); a and b of one shape, gamma/beta [H]. One pass with a backend's
 * fused slot, which also writes the gradients of a and b without zeroing. */
tp_tensor *tp_add_layernorm(tp_ctx *ctx, tp_tensor *a, tp_tensor *b, tp_tensor *gamma,
                            tp_tensor *beta, float eps, float p);
/* Packing the real tokens of a padded batch (mask [B, T] != 0), so that the
 * position-wise layers (linear, LayerNorm, GELU, dropout) skip the padding:
 * rows [N] i32 lists row b*T + t of every real token in order, first [B] the
 * packed row of each entry's token 0. FALSE (nothing made, no error) when
 * the mask has no host copy (tp_tensor_host_i32), when the real tokens fill
 * more than max_fill of the batch, when an entry's token 0 is padding, or
 * under tp_ctx_set_fused(false) (the reference computes the padding too). */
typedef struct tp_pack {
  tp_tensor *rows, *first;
  int64_t n, batch, len;
} tp_pack;
bool tp_pack_plan(tp_ctx *ctx, tp_tensor *mask, double max_fill, tp_pack *out);
/* The models' max_fill: below 90% real tokens the saved rows outweigh the
 * gathers and scatters around attention. */
#define TP_PACK_MAX_FILL 0.9
/* x viewed as [R, H] (H its last dimension) -> [N, H]: rows idx [N] i32 of x. */
tp_tensor *tp_gather_rows(tp_ctx *ctx, tp_tensor *x, tp_tensor *idx);
/* x [N, H] -> a tensor of the given shape (R rows of H) holding row i of x at
 * row idx[i] (distinct) and zeros elsewhere. */
tp_tensor *tp_scatter_rows(tp_ctx *ctx, tp_tensor *x, tp_tensor *idx, int ndim,
                           const int64_t *shape);
/* tp_attention on packed rows (pk from tp_pack_plan): k, v [N, H]; q [N, H]
 * (every real token asks) or [B, H] (token 0 of each entry only, Tq = 1).
 * The result has q's rows. Padding keys are masked as in tp_attention. */
tp_tensor *tp_attention_rows(tp_ctx *ctx, const tp_pack *pk, tp_tensor *q, tp_tensor *k,
                             tp_tensor *v, tp_tensor *mask, tp_tensor *bias, int heads,
                             float attn_dropout);
/* y [B, ...] = x + bias broadcast over the leading axis: bias has x's shape
 * without its first dimension (numel(x) / B elements). */
tp_tensor *tp_add_broadcast(tp_ctx *ctx, tp_tensor *x, tp_tensor *bias);

G_END_DECLS
