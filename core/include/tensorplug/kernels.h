/* tensorplug/kernels.h — kernel calls that respect the device's limits.
 *
 * One function per slot of tp_kernels (backend_iface.h), with the slot's
 * exact semantics, taking an opened tp_backend instead of its device. Each
 * splits its work so that no tensor argument spans more than the device's
 * max_binding_bytes (counted from the offset rounded down to offset_align):
 * elementwise kernels by ranges of elements, row kernels by rows, GEMM by
 * batch, then rows of C, then the inner dimension (partial products added
 * with beta 1), then columns; the embedding table by row ranges. Work that
 * cannot be split small enough (one row larger than the limit) is an error.
 * Like kernels, these never block: errors surface at tp_backend_sync().
 *
 * Ops, the optimizer and the trainer call kernels only through here, so the
 * limits hold for every backend, once. $TENSORPLUG_MAX_BINDING_BYTES lowers a
 * device's binding limit (tests use 1 MiB to exercise every split path). */
#pragma once
#include "tensorplug/backend.h"

G_BEGIN_DECLS

void tp_k_gemm(tp_backend *be, const tp_gemm_args *g);
/* vocab: rows of the whole table (at table.off); split into row ranges here. */
void tp_k_embedding_fwd(tp_backend *be, tp_mem out, tp_mem table, tp_mem ids, int n, int h,
                        int vocab);
void tp_k_embedding_bwd(tp_backend *be, tp_mem dtable, tp_mem dout, tp_mem ids, int n, int h,
                        int vocab);
void tp_k_layernorm_fwd(tp_backend *be, tp_mem y, tp_mem mean, tp_mem rstd, tp_mem x,
                        tp_mem gamma, tp_mem beta, int rows, int cols, float eps);
void tp_k_layernorm_bwd(tp_backend *be, tp_mem dx, tp_mem dgamma, tp_mem dbeta, tp_mem dy,
                        tp_mem x, tp_mem mean, tp_mem rstd, tp_mem gamma, int rows, int cols);
void tp_k_softmax_fwd(tp_backend *be, tp_mem y, tp_mem x, tp_mem mask, int batch, int heads,
                      int rows, int cols, float scale);
void tp_k_softmax_bwd(tp_backend *be, tp_mem dx, tp_mem dy, tp_mem y, int batch, int heads,
                      int rows, int cols, float scale);
void tp_k_gelu_fwd(tp_backend *be, tp_mem y, tp_mem x, int64_t n);
void tp_k_gelu_bwd(tp_backend *be, tp_mem dx, tp_mem dy, tp_mem x, int64_t n);
void tp_k_relu_fwd(tp_backend *be, tp_mem y, tp_mem x, int64_t n);
void tp_k_relu_bwd(tp_backend *be, tp_mem dx, tp_mem dy, tp_mem x, int64_t n);
void tp_k_tanh_fwd(tp_backend *be, tp_mem y, tp_mem x, int64_t n);
void tp_k_tanh_bwd(tp_backend *be, tp_mem dx, tp_mem dy, tp_mem y, int64_t n);
void tp_k_bias_add(tp_backend *be, tp_mem y, tp_mem bias, int64_t rows, int cols);
void tp_k_bias_grad(tp_backend *be, tp_mem dbias, tp_mem dy, int64_t rows, int cols);
void tp_k_add(tp_backend *be, tp_mem y, tp_mem a, tp_mem b, int64_t n);
void tp_k_axpy(tp_backend *be, tp_mem y, tp_mem x, float alpha, int64_t n);
void tp_k_fill(tp_backend *be, tp_mem y, float value, int64_t n);
void tp_k_dropout_fwd(tp_backend *be, tp_mem y, tp_mem x, int64_t n, float p, uint64_t seed,
                      uint64_t offset);
void tp_k_dropout_bwd(tp_backend *be, tp_mem dx, tp_mem dy, int64_t n, float p, uint64_t seed,
                      uint64_t offset);
void tp_k_permute_0213(tp_backend *be, tp_mem y, tp_mem x, int d0, int d1, int d2, int d3,
                       float beta);
void tp_k_first_token_fwd(tp_backend *be, tp_mem y, tp_mem x, int batch, int seq, int h);
void tp_k_first_token_bwd(tp_backend *be, tp_mem dx, tp_mem dy, int batch, int seq, int h);
void tp_k_cross_entropy_fwd(tp_backend *be, tp_mem loss, tp_mem logits, tp_mem labels, int batch,
                            int classes);
void tp_k_cross_entropy_bwd(tp_backend *be, tp_mem dlogits, tp_mem dloss, tp_mem logits,
                            tp_mem labels, int batch, int classes);
void tp_k_count_correct(tp_backend *be, tp_mem out, tp_mem logits, tp_mem labels, int batch,
                        int classes);
void tp_k_adam_step(tp_backend *be, tp_mem p, tp_mem g, tp_mem m, tp_mem v, int64_t n,
                    const tp_adam_args *args);
void tp_k_optim_control(tp_backend *be, tp_mem ctl, const tp_control_args *args);
void tp_k_sumsq(tp_backend *be, tp_mem out, tp_mem x, int64_t n);
void tp_k_nonfinite(tp_backend *be, tp_mem out, tp_mem x, int64_t n);
void tp_k_cast(tp_backend *be, tp_mem y, tp_dtype ydt, tp_mem x, tp_dtype xdt, int64_t n);

/* Optional slots: FALSE (and nothing done) when the backend lacks the slot
 * or the call would cross a limit; the caller then composes the op. */
bool tp_k_dropout_fwd_keep(tp_backend *be, tp_mem y, tp_mem keep, tp_mem x, int64_t n, float p,
                           uint64_t seed, uint64_t offset);
bool tp_k_dropout_bwd_keep(tp_backend *be, tp_mem dx, tp_mem dy, tp_mem keep, int64_t n, float p);
bool tp_k_attention_fwd(tp_backend *be, const tp_attention_args *a);
bool tp_k_attention_bwd(tp_backend *be, const tp_attention_args *a, tp_mem dout, tp_mem dq,
                        tp_mem dk, tp_mem dv, tp_mem dbias);
/* Whether tp_k_attention_fwd would run the backend's fused slot for a. */
bool tp_k_has_attention(tp_backend *be, const tp_attention_args *a);
/* The fused elementwise slots (split by rows; a row wider than one binding
 * makes the has-check FALSE, so the caller composes). */
bool tp_k_has_bias_gelu(tp_backend *be, int cols);
bool tp_k_bias_gelu_fwd(tp_backend *be, tp_mem y, tp_mem x, tp_mem bias, int64_t rows, int cols);
bool tp_k_bias_gelu_bwd(tp_backend *be, tp_mem dx, tp_mem dbias, tp_mem dy, tp_mem pre,
                        int64_t rows, int cols);
bool tp_k_has_add_layernorm(tp_backend *be, int cols);
bool tp_k_add_layernorm_fwd(tp_backend *be, const tp_add_ln_args *a);
bool tp_k_add_layernorm_bwd(tp_backend *be, const tp_add_ln_args *a, tp_mem dy, tp_mem da,
                            tp_mem db, tp_mem dgamma, tp_mem dbeta, bool acc_a, bool acc_b);

G_END_DECLS
