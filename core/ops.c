/* core/ops.c — differentiable ops: forward kernel + backward on the tape,
 * side by side. Shapes in comments use B batch, T sequence, H hidden,
 * nh heads, hd head size, V vocabulary, C classes. */
#include "tensorplug/ops.h"

#include <math.h>
#include <string.h>

#include "tensorplug/error.h"
#include "tensorplug/kernels.h"

void tp_ctx_take_rng(tp_ctx *c, int64_t n, uint64_t *seed, uint64_t *offset);

#define BE(c) tp_ctx_backend(c)

static bool fail(tp_ctx *c, const char *op, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static bool fail(tp_ctx *c, const char *op, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  tp_ctx_fail(c, g_error_new(TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "%s: %s", op, msg));
  g_free(msg);
  return false;
}

static char *shape_str(const tp_tensor *t) {
  GString *s = g_string_new("[");
  for (int i = 0; i < t->ndim; i++)
    g_string_append_printf(s, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
  g_string_append_c(s, ']');
  return g_string_free(s, FALSE);
}

/* Inputs must exist (earlier ops succeeded) and be of the given dtype. */
static bool ready(tp_ctx *c, const char *op, int n, tp_tensor *const *ts, tp_dtype dt) {
  if (!tp_ctx_ok(c)) return false;
  for (int i = 0; i < n; i++) {
    if (!ts[i]) return fail(c, op, "input %d is missing", i);
    if (ts[i]->dtype != dt)
      return fail(c, op, "input %d has dtype %s, expected %s", i, tp_dtype_name(ts[i]->dtype),
                  tp_dtype_name(dt));
  }
  return true;
}

static bool same_shape(tp_ctx *c, const char *op, const tp_tensor *a, const tp_tensor *b) {
  bool eq = a->ndim == b->ndim;
  for (int i = 0; eq && i < a->ndim; i++) eq = a->shape[i] == b->shape[i];
  if (!eq) {
    char *sa = shape_str(a), *sb = shape_str(b);
    fail(c, op, "shapes %s and %s differ", sa, sb);
    g_free(sa);
    g_free(sb);
  }
  return eq;
}

static tp_tensor *new_like(tp_ctx *c, const tp_tensor *x) {
  return tp_tensor_new(c, TP_F32, x->ndim, x->shape);
}

/* The compute type of products other than activations x weights: i8
 * quantizes only those (tensor.h), the rest stay f32. */
static tp_dtype float_compute(const tp_ctx *c) {
  tp_dtype t = tp_ctx_precision(c);
  return t == TP_I8 ? TP_F32 : t;
}

/* C = alpha op(A) op(B) + beta C, f32 storage, computed in `compute`. */
static void gemm_as(tp_ctx *c, tp_dtype compute, bool ta, bool tb, int m, int n, int k,
                    float alpha, tp_mem a, int lda, int64_t sa, tp_mem b, int ldb, int64_t sb,
                    float beta, tp_mem cc, int ldc, int64_t sc, int batch) {
  tp_gemm_args g = {.ta = ta, .tb = tb, .m = m, .n = n, .k = k, .batch = batch, .alpha = alpha,
                    .beta = beta, .a = a, .b = b, .c = cc, .lda = lda, .ldb = ldb, .ldc = ldc,
                    .sa = sa, .sb = sb, .sc = sc, .ab_dtype = TP_F32, .c_dtype = TP_F32,
                    .compute = compute};
  tp_k_gemm(BE(c), &g);
}

/* The same at the context's precision (f32 for i8). */
static void gemm(tp_ctx *c, bool ta, bool tb, int m, int n, int k, float alpha, tp_mem a, int lda,
                 int64_t sa, tp_mem b, int ldb, int64_t sb, float beta, tp_mem cc, int ldc,
                 int64_t sc, int batch) {
  gemm_as(c, float_compute(c), ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, cc, ldc, sc,
          batch);
}

/* ---- embedding: out [B, T, H] = table[ids] ---- */

static void embedding_bwd(tp_ctx *c, tp_tape_node *n) {
  tp_tensor *table = n->in[0], *ids = n->in[1];
  tp_tensor *dt = tp_tensor_grad(c, table);
  if (dt) tp_k_embedding_bwd(BE(c), dt->mem, n->out->grad->mem, ids->mem, (int)n->i[0],
                             (int)n->i[1], (int)table->shape[0]);
}

tp_tensor *tp_embedding(tp_ctx *c, tp_tensor *table, tp_tensor *ids) {
  if (!ready(c, "embedding", 1, &table, TP_F32) || !ready(c, "embedding", 1, &ids, TP_I32))
    return NULL;
  if (table->ndim != 2) return fail(c, "embedding", "table must be [V, H]"), NULL;
  int64_t shape[TP_MAX_DIMS];
  for (int i = 0; i < ids->ndim; i++) shape[i] = ids->shape[i];
  if (ids->ndim + 1 > TP_MAX_DIMS) return fail(c, "embedding", "ids have too many dims"), NULL;
  shape[ids->ndim] = table->shape[1];
  tp_tensor *out = tp_tensor_new(c, TP_F32, ids->ndim + 1, shape);
  if (!out) return NULL;
  int n = (int)tp_tensor_numel(ids), h = (int)table->shape[1];
  tp_k_embedding_fwd(BE(c), out->mem, table->mem, ids->mem, n, h, (int)table->shape[0]);
  tp_tensor *in[2] = {table, ids};
  tp_tape_node *node = tp_ctx_record(c, embedding_bwd, out, 2, in);
  if (node) {
    node->i[0] = n;
    node->i[1] = h;
  }
  return out;
}

/* ---- add: y = a + b ---- */

/* dx += dy, or dx = dy where nothing wrote dx yet (no zeroing first). */
static void grad_add(tp_ctx *c, tp_tensor *x, tp_tensor *dy) {
  bool acc;
  tp_tensor *g = tp_tensor_grad_acc(c, x, &acc);
  if (!g) return;
  GError *e = NULL;
  if (acc)
    tp_k_axpy(BE(c), g->mem, dy->mem, 1.0f, tp_tensor_numel(x));
  else if (!tp_backend_copy(BE(c), g->mem, dy->mem, tp_tensor_nbytes(x), &e))
    tp_ctx_fail(c, e);
}

static void add_bwd(tp_ctx *c, tp_tape_node *n) {
  for (int i = 0; i < 2; i++)
    if (n->in[i]->requires_grad) grad_add(c, n->in[i], n->out->grad);
}

tp_tensor *tp_add(tp_ctx *c, tp_tensor *a, tp_tensor *b) {
  tp_tensor *in[2] = {a, b};
  if (!ready(c, "add", 2, in, TP_F32) || !same_shape(c, "add", a, b)) return NULL;
  tp_tensor *y = new_like(c, a);
  if (!y) return NULL;
  tp_k_add(BE(c), y->mem, a->mem, b->mem, tp_tensor_numel(a));
  tp_ctx_record(c, add_bwd, y, 2, in);
  return y;
}

/* ---- linear: y [N, out] = x [N, in] @ w^T [in, out] + b ---- */

/* The products of a linear layer's backward for output gradient dy (the
 * bias gradient is the caller's). */
static void linear_bwd_products(tp_ctx *c, tp_tensor *x, tp_tensor *w, tp_mem dy, int rows, int in,
                                int out) {
  if (x->requires_grad) { /* dx [N, in] (+)= dy [N, out] @ w [out, in] */
    bool acc;
    tp_tensor *dx = tp_tensor_grad_acc(c, x, &acc);
    if (dx) gemm(c, false, false, rows, in, out, 1.0f, dy, out, 0, w->mem, in, 0,
                 acc ? 1.0f : 0.0f, dx->mem, in, 0, 1);
  }
  if (w->requires_grad) { /* dw [out, in] += dy^T [out, N] @ x [N, in] */
    tp_tensor *dw = tp_tensor_grad(c, w);
    if (dw) gemm(c, true, false, out, in, rows, 1.0f, dy, out, 0, x->mem, in, 0, 1.0f, dw->mem,
                 in, 0, 1);
  }
}

static void linear_bwd(tp_ctx *c, tp_tape_node *n) {
  tp_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2], *dy = n->out->grad;
  int rows = (int)n->i[0], in = (int)n->i[1], out = (int)n->i[2];
  linear_bwd_products(c, x, w, dy->mem, rows, in, out);
  if (b && b->requires_grad) {
    tp_tensor *db = tp_tensor_grad(c, b);
    if (db) tp_k_bias_grad(BE(c), db->mem, dy->mem, rows, out);
  }
}

/* y = x w^T (+ b), unrecorded; sizes to *rows, *in, *out. */
static tp_tensor *linear_forward(tp_ctx *c, const char *op, tp_tensor *x, tp_tensor *w,
                                 tp_tensor *b, int *rows, int *in, int *out) {
  tp_tensor *in2[2] = {x, w};
  if (!ready(c, op, 2, in2, TP_F32)) return NULL;
  if (b && !ready(c, op, 1, &b, TP_F32)) return NULL;
  if (w->ndim != 2 || x->shape[x->ndim - 1] != w->shape[1] ||
      (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))) {
    char *sx = shape_str(x), *sw = shape_str(w), *sb = b ? shape_str(b) : g_strdup("none");
    fail(c, op, "x %s, weight %s, bias %s do not fit (weight is [out, in])", sx, sw, sb);
    g_free(sx);
    g_free(sw);
    g_free(sb);
    return NULL;
  }
  *in = (int)w->shape[1];
  *out = (int)w->shape[0];
  *rows = (int)(tp_tensor_numel(x) / *in);
  int64_t shape[TP_MAX_DIMS];
  memcpy(shape, x->shape, sizeof shape);
  shape[x->ndim - 1] = *out;
  tp_tensor *y = tp_tensor_new(c, TP_F32, x->ndim, shape);
  if (!y) return NULL;
  /* activations x weight: the product i8 quantizes */
  gemm_as(c, tp_ctx_precision(c), false, true, *rows, *out, *in, 1.0f, x->mem, *in, 0, w->mem,
          *in, 0, 0.0f, y->mem, *out, 0, 1);
  if (b) tp_k_bias_add(BE(c), y->mem, b->mem, *rows, *out);
  return y;
}

tp_tensor *tp_linear(tp_ctx *c, tp_tensor *x, tp_tensor *w, tp_tensor *b) {
  int rows, in, out;
  tp_tensor *y = linear_forward(c, "linear", x, w, b, &rows, &in, &out);
  if (!y) return NULL;
  tp_tensor *in3[3] = {x, w, b};
  tp_tape_node *n = tp_ctx_record(c, linear_bwd, y, 3, in3);
  if (n) {
    n->i[0] = rows;
    n->i[1] = in;
    n->i[2] = out;
  }
  return y;
}

/* ---- layernorm over the last axis ---- */

static void layernorm_bwd(tp_ctx *c, tp_tape_node *n) {
  tp_tensor *x = n->in[0], *g = n->in[1], *b = n->in[2];
  tp_tensor *dx = x->requires_grad ? tp_tensor_grad(c, x) : NULL;
  tp_tensor *dg = g->requires_grad ? tp_tensor_grad(c, g) : NULL;
  tp_tensor *db = b->requires_grad ? tp_tensor_grad(c, b) : NULL;
  if (!tp_ctx_ok(c)) return;
  /* The kernel writes all three; route unwanted ones to scratch. */
  int rows = (int)n->i[0], cols = (int)n->i[1];
  int64_t xs[1] = {tp_tensor_numel(x)}, cs[1] = {cols};
  if (!dx) dx = tp_tensor_zeros(c, TP_F32, 1, xs);
  if (!dg) dg = tp_tensor_zeros(c, TP_F32, 1, cs);
  if (!db) db = tp_tensor_zeros(c, TP_F32, 1, cs);
  if (!tp_ctx_ok(c)) return;
  tp_k_layernorm_bwd(BE(c), dx->mem, dg->mem, db->mem, n->out->grad->mem, x->mem,
                      n->saved[0]->mem, n->saved[1]->mem, g->mem, rows, cols);
}

tp_tensor *tp_layernorm(tp_ctx *c, tp_tensor *x, tp_tensor *gamma, tp_tensor *beta, float eps) {
  tp_tensor *in[3] = {x, gamma, beta};
  if (!ready(c, "layernorm", 3, in, TP_F32)) return NULL;
  int cols = (int)x->shape[x->ndim - 1];
  if (gamma->ndim != 1 || beta->ndim != 1 || gamma->shape[0] != cols || beta->shape[0] != cols)
    return fail(c, "layernorm", "gamma/beta must be [%d]", cols), NULL;
  int rows = (int)(tp_tensor_numel(x) / cols);
  int64_t rs[1] = {rows};
  tp_tensor *y = new_like(c, x);
  tp_tensor *mean = tp_tensor_new(c, TP_F32, 1, rs);
  tp_tensor *rstd = tp_tensor_new(c, TP_F32, 1, rs);
  if (!y || !mean || !rstd) return NULL;
  tp_k_layernorm_fwd(BE(c), y->mem, mean->mem, rstd->mem, x->mem, gamma->mem, beta->mem, rows,
                      cols, eps);
  tp_tape_node *n = tp_ctx_record(c, layernorm_bwd, y, 3, in);
  if (n) {
    n->saved[0] = mean;
    n->saved[1] = rstd;
    n->i[0] = rows;
    n->i[1] = cols;
  }
  return y;
}

/* ---- activations ---- */

static void gelu_bwd(tp_ctx *c, tp_tape_node *n) {
  tp_tensor *dx = tp_tensor_grad(c, n->in[0]);
  if (dx) tp_k_gelu_bwd(BE(c), dx->mem, n->out->grad->mem, n->in[0]->mem, tp_tensor_numel(dx));
}
static void relu_bwd(tp_ctx *c, tp_tape_node *n) {
  tp_tensor *dx = tp_tensor_grad(c, n->in[0]);
  if (dx) tp_k_relu_bwd(BE(c), dx->mem, n->out->grad->mem, n->in[0]->mem, tp_tensor_numel(dx));
}
static void tanh_bwd(tp_ctx *c, tp_tape_node *n) {
  tp_tensor *dx = tp_tensor_grad(c, n->in[0]);
  if (dx) tp_k_tanh_bwd(BE(c), dx->mem, n->out->grad->mem, n->out->mem, tp_tensor_numel(dx));
}

typedef void (*unary_fwd)(tp_backend *, tp_mem, tp_mem, int64_t);

static tp_tensor *unary(tp_ctx *c, const char *op, tp_tensor *x, unary_fwd fwd,
                        tp_backward_fn bwd) {
  if (!ready(c, op, 1, &x, TP_F32)) return NULL;
  tp_tensor *y = new_like(c, x);
  if (!y) return NULL;
  fwd(BE(c), y->mem, x->mem, tp_tensor_numel(x));
  tp_ctx_record(c, bwd, y, 1, &x);
  return y;
}

tp_tensor *tp_gelu(tp_ctx *c, tp_tensor *x) { return unary(c, "gelu", x, tp_k_gelu_fwd, gelu_bwd); }
tp_tensor *tp_relu(tp_ctx *c, tp_tensor *x) { return unary(c, "relu", x, tp_k_relu_fwd, relu_bwd); }
tp_tensor *tp_tanh(tp_ctx *c, tp_tensor *x) { return unary(c, "tanh", x, tp_k_tanh_fwd, tanh_bwd); }

/* ---- dropout (inverted; Philox mask recomputed in backward) ---- */

static void dropout_bwd(tp_ctx *c, tp_tape_node *n) {
  tp_tensor *dx = tp_tensor_grad(c, n->in[0]);
  if (!dx) return;
  if (n->saved[0]) /* the mask kept by dropout_fwd_keep */
    tp_k_dropout_bwd_keep(BE(c), dx->mem, n->out->grad->mem, n->saved[0]->mem,
                          tp_tensor_numel(dx), n->f[0]);
  else
    tp_k_dropout_bwd(BE(c), dx->mem, n->out->grad->mem, tp_tensor_numel(dx), n->f[0], n->u[0],
                      n->u[1]);
}

tp_tensor *tp_dropout(tp_ctx *c, tp_tensor *x, float p) {
  if (!ready(c, "dropout", 1, &x, TP_F32)) return NULL;
  if (!tp_ctx_training(c) || p <= 0.0f) return x;
  if (p >= 1.0f) return fail(c, "dropout", "probability %g must be below 1", p), NULL;
  tp_tensor *y = new_like(c, x);
  if (!y) return NULL;
  int64_t cnt = tp_tensor_numel(x);
  uint64_t seed, off;
  tp_ctx_take_rng(c, cnt, &seed, &off);
  /* With a backend that can keep the mask (one byte per element), backward
   * reads it instead of drawing the Philox stream again: same mask, same
   * results, half the random numbers. */
  const tp_backend_iface *bi = tp_ctx_backend(c)->iface;
  tp_tensor *keep = NULL;
  if (x->requires_grad && TP_IFACE_HAS(bi, dropout_fwd_keep) &&
      TP_IFACE_HAS(bi, dropout_bwd_keep)) {
    int64_t words[1] = {(cnt + 3) / 4}; /* n bytes, held as i32 words */
    keep = tp_tensor_new(c, TP_I32, 1, words);
    if (!keep) return NULL;
    tp_k_dropout_fwd_keep(BE(c), y->mem, keep->mem, x->mem, cnt, p, seed, off);
  } else {
    tp_k_dropout_fwd(BE(c), y->mem, x->mem, cnt, p, seed, off);
  }
  tp_tape_node *n = tp_ctx_record(c, dropout_bwd, y, 1, &x);
  if (n) {
    n->f[0] = p;
    n->u[0] = seed;
    n->u[1] = off;
    n->saved[0] = keep;
  }
  return y;
}

/* ---- head split / merge (permute of the middle axes) ---- */

static void permute_bwd(tp_ctx *c, tp_tape_node *n) {
  /* forward mapped [d0, d1, d2, d3] -> [d0, d2, d1, d3]; backward maps back */
  tp_tensor *dx = tp_tensor_grad(c, n->in[0]);
  if (dx) tp_k_permute_0213(BE(c), dx->mem, n->out->grad->mem, (int)n->i[0], (int)n->i[2],
                             (int)n->i[1], (int)n->i[3], 1.0f);
}

static tp_tensor *permute(tp_ctx *c, tp_tensor *x, const int64_t d[4], const int64_t yshape[],
                          int yndim) {
  tp_tensor *y = tp_tensor_new(c, TP_F32, yndim, yshape);
  if (!y) return NULL;
  tp_k_permute_0213(BE(c), y->mem, x->mem, (int)d[0], (int)d[1], (int)d[2], (int)d[3], 0.0f);
  tp_tape_node *n = tp_ctx_record(c, permute_bwd, y, 1, &x);
  if (n) memcpy(n->i, d, 4 * sizeof(int64_t));
  return y;
}

tp_tensor *tp_split_heads(tp_ctx *c, tp_tensor *x, int heads) {
  if (!ready(c, "split_heads", 1, &x, TP_F32)) return NULL;
  if (x->ndim != 3 || heads <= 0 || x->shape[2] % heads)
    return fail(c, "split_heads", "x must be [B, T, H] with H divisible by %d heads", heads), NULL;
  int64_t b = x->shape[0], t = x->shape[1], hd = x->shape[2] / heads;
  int64_t d[4] = {b, t, heads, hd}, ys[4] = {b, heads, t, hd};
  return permute(c, x, d, ys, 4);
}

tp_tensor *tp_merge_heads(tp_ctx *c, tp_tensor *x) {
  if (!ready(c, "merge_heads", 1, &x, TP_F32)) return NULL;
  if (x->ndim != 4) return fail(c, "merge_heads", "x must be [B, nh, T, hd]"), NULL;
  int64_t b = x->shape[0], nh = x->shape[1], t = x->shape[2], hd = x->shape[3];
  int64_t d[4] = {b, nh, t, hd}, ys[3] = {b, t, nh * hd};
  return permute(c, x, d, ys, 3);
}

/* ---- batched matmul: C = alpha * op(A) @ op(B) ---- */

static void matmul_bwd(tp_ctx *c, tp_tape_node *n) {
  tp_tensor *a = n->in[0], *b = n->in[1], *dc = n->out->grad;
  int m = (int)n->i[0], nn = (int)n->i[1], k = (int)n->i[2], batch = (int)n->i[3];
  bool ta = n->i[4] & 1, tb = n->i[4] & 2;
  float alpha = n->f[0];
  int lda = ta ? m : k, ldb = tb ? k : nn;
  int64_t sa = (int64_t)m * k, sb = (int64_t)k * nn, sc = (int64_t)m * nn;
  if (a->requires_grad) {
    tp_tensor *da = tp_tensor_grad(c, a);
    if (da && !ta) /* dA [m,k] += alpha dC [m,n] @ op(B)^T [n,k] */
      gemm(c, false, !tb, m, k, nn, alpha, dc->mem, nn, sc, b->mem, ldb, sb, 1.0f,
                 da->mem, lda, sa, batch);
    else if (da) /* A stored [k,m]: dA += alpha op(B) [k,n] @ dC^T [n,m] */
      gemm(c, tb, true, k, m, nn, alpha, b->mem, ldb, sb, dc->mem, nn, sc, 1.0f,
                 da->mem, lda, sa, batch);
  }
  if (b->requires_grad) {
    tp_tensor *db = tp_tensor_grad(c, b);
    if (db && !tb) /* dB [k,n] += alpha op(A)^T [k,m] @ dC [m,n] */
      gemm(c, !ta, false, k, nn, m, alpha, a->mem, lda, sa, dc->mem, nn, sc, 1.0f,
                 db->mem, ldb, sb, batch);
    else if (db) /* B stored [n,k]: dB += alpha dC^T [n,m] @ op(A) [m,k] */
      gemm(c, true, ta, nn, k, m, alpha, dc->mem, nn, sc, a->mem, lda, sa, 1.0f,
                 db->mem, ldb, sb, batch);
  }
}

tp_tensor *tp_matmul(tp_ctx *c, tp_tensor *a, tp_tensor *b, bool ta, bool tb, float alpha) {
  tp_tensor *in[2] = {a, b};
  if (!ready(c, "matmul", 2, in, TP_F32)) return NULL;
  if (a->ndim < 2 || a->ndim != b->ndim) return fail(c, "matmul", "a and b need the same rank >= 2"), NULL;
  int64_t batch = 1;
  for (int i = 0; i < a->ndim - 2; i++) {
    if (a->shape[i] != b->shape[i]) return fail(c, "matmul", "batch dims differ"), NULL;
    batch *= a->shape[i];
  }
  int64_t ar = a->shape[a->ndim - 2], ac = a->shape[a->ndim - 1];
  int64_t br = b->shape[b->ndim - 2], bc = b->shape[b->ndim - 1];
  int64_t m = ta ? ac : ar, k = ta ? ar : ac, kb = tb ? bc : br, n = tb ? br : bc;
  if (k != kb) {
    char *sa = shape_str(a), *sb = shape_str(b);
    fail(c, "matmul", "inner sizes differ: a %s%s, b %s%s", sa, ta ? "^T" : "", sb, tb ? "^T" : "");
    g_free(sa);
    g_free(sb);
    return NULL;
  }
  int64_t shape[TP_MAX_DIMS];
  memcpy(shape, a->shape, sizeof shape);
  shape[a->ndim - 2] = m;
  shape[a->ndim - 1] = n;
  tp_tensor *y = tp_tensor_new(c, TP_F32, a->ndim, shape);
  if (!y) return NULL;
  gemm(c, ta, tb, (int)m, (int)n, (int)k, alpha, a->mem, (int)ac, ar * ac, b->mem,
             (int)bc, br * bc, 0.0f, y->mem, (int)n, m * n, (int)batch);
  tp_tape_node *node = tp_ctx_record(c, matmul_bwd, y, 2, in);
  if (node) {
    node->i[0] = m;
    node->i[1] = n;
    node->i[2] = k;
    node->i[3] = batch;
    node->i[4] = (ta ? 1 : 0) | (tb ? 2 : 0);
    node->f[0] = alpha;
  }
  return y;
}

/* ---- scaled masked softmax over the last axis ---- */

static void softmax_bwd(tp_ctx *c, tp_tape_node *n) {
  tp_tensor *dx = tp_tensor_grad(c, n->in[0]);
  if (dx) tp_k_softmax_bwd(BE(c), dx->mem, n->out->grad->mem, n->out->mem, (int)n->i[0],
                            (int)n->i[1], (int)n->i[2], (int)n->i[3], n->f[0]);
}

tp_tensor *tp_softmax_masked(tp_ctx *c, tp_tensor *x, tp_tensor *mask, float scale) {
  if (!ready(c, "softmax", 1, &x, TP_F32)) return NULL;
  if (mask && !ready(c, "softmax", 1, &mask, TP_I32)) return NULL;
  if (x->ndim != 4) return fail(c, "softmax", "x must be [B, nh, Tq, Tk]"), NULL;
  int64_t b = x->shape[0], h = x->shape[1], r = x->shape[2], k = x->shape[3];
  if (mask && (mask->ndim != 2 || mask->shape[0] != b || mask->shape[1] != k))
    return fail(c, "softmax", "mask must be [%lld, %lld]", (long long)b, (long long)k), NULL;
  tp_tensor *y = new_like(c, x);
  if (!y) return NULL;
  tp_k_softmax_fwd(BE(c), y->mem, x->mem, mask ? mask->mem : tp_mem_null(), (int)b, (int)h,
                    (int)r, (int)k, scale);
  tp_tape_node *n = tp_ctx_record(c, softmax_bwd, y, 1, &x);
  if (n) {
    n->i[0] = b;
    n->i[1] = h;
    n->i[2] = r;
    n->i[3] = k;
    n->f[0] = scale;
  }
  return y;
}

/* ---- reshape: a view with another shape ---- */

static void reshape_bwd(tp_ctx *c, tp_tape_node *n) { grad_add(c, n->in[0], n->out->grad); }

tp_tensor *tp_reshape(tp_ctx *c, tp_tensor *x, int ndim, const int64_t *shape) {
  if (!tp_ctx_ok(c) || !x) return NULL;
  int64_t n = 1;
  for (int i = 0; i < ndim && ndim <= TP_MAX_DIMS; i++) n *= shape[i];
  if (ndim < 1 || ndim > TP_MAX_DIMS || n != tp_tensor_numel(x)) {
    char *sx = shape_str(x);
    fail(c, "reshape", "cannot view %s as %d dims of %lld elements", sx, ndim, (long long)n);
    g_free(sx);
    return NULL;
  }
  int64_t one[1] = {1};
  tp_tensor *y = tp_tensor_new(c, x->dtype, 1, one); /* a header; memory is x's */
  if (!y) return NULL;
  y->ndim = ndim;
  memcpy(y->shape, shape, (size_t)ndim * sizeof(int64_t));
  y->mem = x->mem;
  tp_ctx_record(c, reshape_bwd, y, 1, &x);
  return y;
}

/* ---- first token: [B, T, H] -> [B, H] ---- */

static void first_token_bwd(tp_ctx *c, tp_tape_node *n) {
  tp_tensor *dx = tp_tensor_grad(c, n->in[0]);
  if (dx) tp_k_first_token_bwd(BE(c), dx->mem, n->out->grad->mem, (int)n->i[0], (int)n->i[1],
                                (int)n->i[2]);
}

tp_tensor *tp_first_token(tp_ctx *c, tp_tensor *x) {
  if (!ready(c, "first_token", 1, &x, TP_F32)) return NULL;
  if (x->ndim != 3) return fail(c, "first_token", "x must be [B, T, H]"), NULL;
  int64_t ys[2] = {x->shape[0], x->shape[2]};
  tp_tensor *y = tp_tensor_new(c, TP_F32, 2, ys);
  if (!y) return NULL;
  tp_k_first_token_fwd(BE(c), y->mem, x->mem, (int)x->shape[0], (int)x->shape[1],
                        (int)x->shape[2]);
  tp_tape_node *n = tp_ctx_record(c, first_token_bwd, y, 1, &x);
  if (n) {
    n->i[0] = x->shape[0];
    n->i[1] = x->shape[1];
    n->i[2] = x->shape[2];
  }
  return y;
}

/* ---- mean cross-entropy from logits ---- */

static void cross_entropy_bwd(tp_ctx *c, tp_tape_node *n) {
  tp_tensor *dl = tp_tensor_grad(c, n->in[0]);
  if (dl) tp_k_cross_entropy_bwd(BE(c), dl->mem, n->out->grad->mem, n->in[0]->mem,
                                  n->in[1]->mem, (int)n->i[0], (int)n->i[1]);
}

tp_tensor *tp_cross_entropy(tp_ctx *c, tp_tensor *logits, tp_tensor *labels) {
  if (!ready(c, "cross_entropy", 1, &logits, TP_F32) ||
      !ready(c, "cross_entropy", 1, &labels, TP_I32))
    return NULL;
  if (logits->ndim != 2 || labels->ndim != 1 || labels->shape[0] != logits->shape[0])
    return fail(c, "cross_entropy", "logits must be [B, C] and labels [B]"), NULL;
  int64_t one[1] = {1};
  tp_tensor *loss = tp_tensor_new(c, TP_F32, 1, one);
  if (!loss) return NULL;
  int b = (int)logits->shape[0], cl = (int)logits->shape[1];
  tp_k_cross_entropy_fwd(BE(c), loss->mem, logits->mem, labels->mem, b, cl);
  tp_tensor *in[2] = {logits, labels};
  tp_tape_node *n = tp_ctx_record(c, cross_entropy_bwd, loss, 2, in);
  if (n) {
    n->i[0] = b;
    n->i[1] = cl;
  }
  return loss;
}

/* ---- broadcast add over the leading axis: y [B, ...] = x + bias [...] ---- */

static void add_broadcast_bwd(tp_ctx *c, tp_tape_node *n) {
  tp_tensor *x = n->in[0], *bias = n->in[1], *dy = n->out->grad;
  int64_t rows = n->i[0], cols = n->i[1];
  if (x->requires_grad) {
    tp_tensor *dx = tp_tensor_grad(c, x);
    if (dx) tp_k_axpy(BE(c), dx->mem, dy->mem, 1.0f, rows * cols);
  }
  if (bias->requires_grad) { /* dbias += sum over the leading axis */
    tp_tensor *db = tp_tensor_grad(c, bias);
    if (db) tp_k_bias_grad(BE(c), db->mem, dy->mem, rows, (int)cols);
  }
}

tp_tensor *tp_add_broadcast(tp_ctx *c, tp_tensor *x, tp_tensor *bias) {
  tp_tensor *in[2] = {x, bias};
  if (!ready(c, "add_broadcast", 2, in, TP_F32)) return NULL;
  int64_t cols = tp_tensor_numel(bias);
  bool fits = x->ndim == bias->ndim + 1;
  for (int i = 0; fits && i < bias->ndim; i++) fits = x->shape[i + 1] == bias->shape[i];
  if (!fits || cols > INT32_MAX) {
    char *sx = shape_str(x), *sb = shape_str(bias);
    fail(c, "add_broadcast", "bias %s must be x %s without its first dimension", sb, sx);
    g_free(sx);
    g_free(sb);
    return NULL;
  }
  int64_t rows = x->shape[0];
  tp_tensor *y = new_like(c, x);
  if (!y) return NULL;
  GError *e = NULL;
  if (!tp_backend_copy(BE(c), y->mem, x->mem, tp_tensor_nbytes(x), &e)) tp_ctx_fail(c, e);
  tp_k_bias_add(BE(c), y->mem, bias->mem, rows, (int)cols);
  tp_tape_node *n = tp_ctx_record(c, add_broadcast_bwd, y, 2, in);
  if (n) {
    n->i[0] = rows;
    n->i[1] = cols;
  }
  return y;
}

/* ---- attention: the backend's fused slot, else composed ---- */

/* Composed from the ops above: the reference the fused slot must match. */
static tp_tensor *attention_composed(tp_ctx *c, tp_tensor *q, tp_tensor *k, tp_tensor *v,
                                     tp_tensor *mask, tp_tensor *bias, int heads,
                                     float attn_dropout) {
  tp_tensor *qh = tp_split_heads(c, q, heads); /* [B, nh, T, hd] */
  tp_tensor *kh = tp_split_heads(c, k, heads);
  tp_tensor *vh = tp_split_heads(c, v, heads);
  if (!qh) return NULL;
  float scale = 1.0f / sqrtf((float)qh->shape[3]);
  tp_tensor *s = tp_matmul(c, qh, kh, false, true, scale); /* [B, nh, T, T] */
  if (bias) s = tp_add_broadcast(c, s, bias);
  tp_tensor *p = tp_softmax_masked(c, s, mask, 1.0f);
  p = tp_dropout(c, p, attn_dropout);
  tp_tensor *o = tp_matmul(c, p, vh, false, false, 1.0f); /* [B, nh, T, hd] */
  return tp_merge_heads(c, o);                              /* [B, T, H] */
}

/* in: q, k, v, mask, bias (the last two may be NULL); saved[0]: lse. */
static tp_attention_args attention_args(tp_ctx *c, tp_tensor *q, tp_tensor *k, tp_tensor *v,
                                        tp_tensor *mask, tp_tensor *bias, int heads) {
  int64_t hd = q->shape[2] / heads;
  tp_attention_args a = {.batch = (int)q->shape[0], .heads = heads, .head_dim = (int)hd,
                         .q_len = (int)q->shape[1], .kv_len = (int)k->shape[1],
                         .ld_q = (int)q->shape[2], .ld_kv = (int)k->shape[2], .q = q->mem, .k = k->mem,
                         .v = v->mem, .mask = mask ? mask->mem : tp_mem_null(),
                         .bias = bias ? bias->mem : tp_mem_null(),
                         .scale = 1.0f / sqrtf((float)hd), .compute = float_compute(c)};
  return a;
}

static void attention_bwd(tp_ctx *c, tp_tape_node *n) {
  tp_tensor *q = n->in[0], *k = n->in[1], *v = n->in[2], *bias = n->in[3];
  tp_attention_args a = attention_args(c, q, k, v, n->saved[1], bias, (int)n->i[0]);
  a.out = n->out->mem;
  a.lse = n->saved[0]->mem;
  a.dropout = n->f[0];
  a.seed = n->u[0];
  a.offset = n->u[1];
  /* the kernel writes dq, dk, dv together: route unwanted ones to scratch */
  tp_tensor *g[3];
  for (int i = 0; i < 3; i++)
    g[i] = n->in[i]->requires_grad ? tp_tensor_grad(c, n->in[i])
                                   : tp_tensor_zeros(c, TP_F32, n->in[i]->ndim, n->in[i]->shape);
  tp_tensor *db = bias && bias->requires_grad ? tp_tensor_grad(c, bias) : NULL;
  if (!tp_ctx_ok(c)) return;
  tp_k_attention_bwd(BE(c), &a, n->out->grad->mem, g[0]->mem, g[1]->mem, g[2]->mem,
                     db ? db->mem : tp_mem_null());
}

tp_tensor *tp_attention(tp_ctx *c, tp_tensor *q, tp_tensor *k, tp_tensor *v, tp_tensor *mask,
                        tp_tensor *bias, int heads, float attn_dropout) {
  tp_tensor *in[3] = {q, k, v};
  if (!ready(c, "attention", 3, in, TP_F32)) return NULL;
  if (q->ndim != 3 || k->ndim != 3 || heads <= 0 || q->shape[2] % heads ||
      !same_shape(c, "attention", k, v) || q->shape[0] != k->shape[0] ||
      q->shape[2] != k->shape[2]) {
    char *sq = shape_str(q), *sk = shape_str(k);
    fail(c, "attention", "q %s, k/v %s must be [B, Tq, H] and [B, Tk, H] with H divisible by %d "
         "heads", sq, sk, heads);
    g_free(sq);
    g_free(sk);
    return NULL;
  }
  int64_t B = q->shape[0], Tq = q->shape[1], T = k->shape[1];
  if (mask && (!ready(c, "attention", 1, &mask, TP_I32) || mask->ndim != 2 ||
               mask->shape[0] != B || mask->shape[1] != T))
    return fail(c, "attention", "mask must be [%lld, %lld] i32", (long long)B, (long long)T), NULL;
  if (bias && (!ready(c, "attention", 1, &bias, TP_F32) || bias->ndim != 3 ||
               bias->shape[0] != heads || bias->shape[1] != Tq || bias->shape[2] != T))
    return fail(c, "attention", "bias must be [%d, %lld, %lld] f32", heads, (long long)Tq,
                (long long)T),
           NULL;
  float p = tp_ctx_training(c) ? attn_dropout : 0.0f;
  if (p >= 1.0f) return fail(c, "attention", "dropout %g must be below 1", p), NULL;
  tp_attention_args a = attention_args(c, q, k, v, mask, bias, heads);
  if (!tp_ctx_fused(c) || !tp_k_has_attention(BE(c), &a))
    return attention_composed(c, q, k, v, mask, bias, heads, attn_dropout);
  int64_t ls[3] = {B, heads, Tq};
  tp_tensor *out = new_like(c, q), *lse = tp_tensor_new(c, TP_F32, 3, ls);
  if (!out || !lse) return NULL;
  a.out = out->mem;
  a.lse = lse->mem;
  if (p > 0.0f) { /* the counters the composed dropout on P [B, nh, Tq, Tk] would take */
    a.dropout = p;
    tp_ctx_take_rng(c, B * heads * Tq * T, &a.seed, &a.offset);
  }
  tp_k_attention_fwd(BE(c), &a);
  tp_tensor *ins[4] = {q, k, v, bias};
  tp_tape_node *n = tp_ctx_record(c, attention_bwd, out, 4, ins);
  if (n) {
    n->saved[0] = lse;
    n->saved[1] = mask;
    n->i[0] = heads;
    n->f[0] = a.dropout;
    n->u[0] = a.seed;
    n->u[1] = a.offset;
  }
  return out;
}

/* ---- linear + GELU: the backend's fused bias + GELU slot, else composed ---- */

/* in: x, w, b; saved[0]: pre = x w^T + b. */
static void linear_gelu_bwd(tp_ctx *c, tp_tape_node *n) {
  tp_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2], *pre = n->saved[0];
  int rows = (int)n->i[0], in = (int)n->i[1], out = (int)n->i[2];
  int64_t bs[1] = {out};
  /* dpre is this op's own: written whole by the slot, never zeroed */
  tp_tensor *dpre = tp_tensor_new(c, TP_F32, pre->ndim, pre->shape);
  tp_tensor *db = b->requires_grad ? tp_tensor_grad(c, b) : tp_tensor_zeros(c, TP_F32, 1, bs);
  if (!dpre || !db) return;
  tp_k_bias_gelu_bwd(BE(c), dpre->mem, db->mem, n->out->grad->mem, pre->mem, rows, out);
  linear_bwd_products(c, x, w, dpre->mem, rows, in, out);
}

tp_tensor *tp_linear_gelu(tp_ctx *c, tp_tensor *x, tp_tensor *w, tp_tensor *b) {
  if (!tp_ctx_ok(c)) return NULL;
  if (!b || !w) return fail(c, "linear_gelu", "the weight and bias are required"), NULL;
  if (!tp_ctx_fused(c) || !tp_k_has_bias_gelu(BE(c), (int)w->shape[0]))
    return tp_gelu(c, tp_linear(c, x, w, b));
  int rows, in, out;
  if (!ready(c, "linear_gelu", 1, &b, TP_F32)) return NULL;
  if (b->ndim != 1 || b->shape[0] != w->shape[0])
    return fail(c, "linear_gelu", "bias must be [%lld]", (long long)w->shape[0]), NULL;
  /* the product alone, then bias and GELU in the slot */
  tp_tensor *pre = linear_forward(c, "linear_gelu", x, w, NULL, &rows, &in, &out);
  if (!pre) return NULL;
  tp_tensor *y = new_like(c, pre);
  if (!y) return NULL;
  tp_k_bias_gelu_fwd(BE(c), y->mem, pre->mem, b->mem, rows, out);
  tp_tensor *in3[3] = {x, w, b};
  tp_tape_node *n = tp_ctx_record(c, linear_gelu_bwd, y, 3, in3);
  if (n) {
    n->saved[0] = pre;
    n->i[0] = rows;
    n->i[1] = in;
    n->i[2] = out;
  }
  return y;
}

/* ---- residual add + LayerNorm (dropout on a): fused slot, else composed ---- */

/* in: a, b, gamma, beta; saved[0]: s, then mean and rstd ([rows * (cols + 2)]);
 * saved[1]: the keep mask (p > 0). */
static tp_add_ln_args add_ln_args(tp_tape_node *n) {
  int rows = (int)n->i[0], cols = (int)n->i[1];
  tp_mem s = n->saved[0]->mem, mean = s, rstd = s;
  mean.off += (size_t)rows * cols * 4;
  rstd.off = mean.off + (size_t)rows * 4;
  tp_add_ln_args a = {.rows = rows, .cols = cols, .eps = n->f[1], .p = n->f[0],
                      .seed = n->u[0], .offset = n->u[1], .y = n->out->mem, .s = s,
                      .mean = mean, .rstd = rstd,
                      .keep = n->saved[1] ? n->saved[1]->mem : tp_mem_null(),
                      .a = n->in[0]->mem, .b = n->in[1]->mem, .gamma = n->in[2]->mem,
                      .beta = n->in[3]->mem};
  return a;
}

static void add_layernorm_bwd(tp_ctx *c, tp_tape_node *n) {
  tp_tensor *a = n->in[0], *b = n->in[1], *g = n->in[2], *be = n->in[3];
  int64_t cs[1] = {n->i[1]};
  bool acc_a = false, acc_b = false;
  tp_tensor *da = a->requires_grad ? tp_tensor_grad_acc(c, a, &acc_a) : NULL;
  tp_tensor *db = b->requires_grad ? tp_tensor_grad_acc(c, b, &acc_b) : NULL;
  tp_tensor *dg = g->requires_grad ? tp_tensor_grad(c, g) : tp_tensor_zeros(c, TP_F32, 1, cs);
  tp_tensor *dbe = be->requires_grad ? tp_tensor_grad(c, be) : tp_tensor_zeros(c, TP_F32, 1, cs);
  if (!tp_ctx_ok(c)) return;
  tp_add_ln_args args = add_ln_args(n);
  tp_k_add_layernorm_bwd(BE(c), &args, n->out->grad->mem, da ? da->mem : tp_mem_null(),
                         db ? db->mem : tp_mem_null(), dg->mem, dbe->mem, acc_a, acc_b);
}

tp_tensor *tp_add_layernorm(tp_ctx *c, tp_tensor *a, tp_tensor *b, tp_tensor *gamma,
                            tp_tensor *beta, float eps, float p) {
  tp_tensor *in[4] = {a, b, gamma, beta};
  if (!ready(c, "add_layernorm", 4, in, TP_F32) || !same_shape(c, "add_layernorm", a, b))
    return NULL;
  int cols = (int)a->shape[a->ndim - 1];
  if (gamma->ndim != 1 || beta->ndim != 1 || gamma->shape[0] != cols || beta->shape[0] != cols)
    return fail(c, "add_layernorm", "gamma/beta must be [%d]", cols), NULL;
  float pe = tp_ctx_training(c) ? p : 0.0f;
  if (pe >= 1.0f) return fail(c, "add_layernorm", "dropout %g must be below 1", p), NULL;
  if (!tp_ctx_fused(c) || !tp_k_has_add_layernorm(BE(c), cols))
    return tp_layernorm(c, tp_add(c, tp_dropout(c, a, p), b), gamma, beta, eps);
  int64_t rows = tp_tensor_numel(a) / cols;
  int64_t ss[1] = {rows * (cols + 2)}, ks[1] = {(rows * cols + 3) / 4}; /* keep: bytes as i32 */
  tp_tensor *y = new_like(c, a), *s = tp_tensor_new(c, TP_F32, 1, ss);
  tp_tensor *keep = pe > 0.0f ? tp_tensor_new(c, TP_I32, 1, ks) : NULL;
  if (!y || !s || (pe > 0.0f && !keep)) return NULL;
  tp_tape_node tmp = {.out = y, .in = {a, b, gamma, beta}, .saved = {s, keep},
                      .i = {rows, cols}, .f = {pe, eps}};
  if (pe > 0.0f) tp_ctx_take_rng(c, rows * cols, &tmp.u[0], &tmp.u[1]);
  tp_add_ln_args args = add_ln_args(&tmp);
  tp_k_add_layernorm_fwd(BE(c), &args);
  tp_tape_node *n = tp_ctx_record(c, add_layernorm_bwd, y, 4, in);
  if (n) {
    memcpy(n->saved, tmp.saved, sizeof n->saved);
    memcpy(n->i, tmp.i, sizeof n->i);
    memcpy(n->f, tmp.f, sizeof n->f);
    memcpy(n->u, tmp.u, sizeof n->u);
  }
  return y;
}

/* ---- packing the real tokens of a padded batch ---- */

bool tp_pack_plan(tp_ctx *c, tp_tensor *mask, double max_fill, tp_pack *out) {
  memset(out, 0, sizeof *out);
  const int32_t *m = tp_tensor_host_i32(c, mask);
  if (!tp_ctx_ok(c) || !tp_ctx_fused(c) || !m || mask->ndim != 2) return false;
  int64_t B = mask->shape[0], T = mask->shape[1], n = 0;
  for (int64_t i = 0; i < B * T; i++) n += m[i] != 0;
  bool firsts = true;
  for (int64_t b = 0; b < B; b++) firsts = firsts && m[b * T] != 0;
  if (n == 0 || !firsts || (double)n > max_fill * (double)(B * T)) return false;
  int32_t *rows = g_new(int32_t, n), *first = g_new(int32_t, B);
  int64_t k = 0;
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++)
      if (m[b * T + t]) {
        if (t == 0) first[b] = (int32_t)k;
        rows[k++] = (int32_t)(b * T + t);
      }
  int64_t ns[1] = {n}, bs[1] = {B};
  out->rows = tp_tensor_from_host(c, TP_I32, 1, ns, rows);
  out->first = tp_tensor_from_host(c, TP_I32, 1, bs, first);
  g_free(rows);
  g_free(first);
  out->n = n;
  out->batch = B;
  out->len = T;
  return out->rows && out->first;
}

static void gather_rows_bwd(tp_ctx *c, tp_tape_node *n) {
  tp_tensor *x = n->in[0], *idx = n->in[1];
  tp_tensor *dx = tp_tensor_grad(c, x); /* zeroed: only the gathered rows get gradient */
  if (dx) tp_k_embedding_bwd(BE(c), dx->mem, n->out->grad->mem, idx->mem, (int)n->i[0],
                             (int)n->i[1], (int)n->i[2]);
}

tp_tensor *tp_gather_rows(tp_ctx *c, tp_tensor *x, tp_tensor *idx) {
  if (!ready(c, "gather_rows", 1, &x, TP_F32) || !ready(c, "gather_rows", 1, &idx, TP_I32))
    return NULL;
  int64_t h = x->shape[x->ndim - 1], r = tp_tensor_numel(x) / MAX(h, 1), cnt = tp_tensor_numel(idx);
  if (idx->ndim != 1 || r > INT32_MAX || cnt > INT32_MAX)
    return fail(c, "gather_rows", "idx must be [N] i32 over at most 2^31 rows"), NULL;
  int64_t ys[2] = {cnt, h};
  tp_tensor *y = tp_tensor_new(c, TP_F32, 2, ys);
  if (!y) return NULL;
  tp_k_embedding_fwd(BE(c), y->mem, x->mem, idx->mem, (int)cnt, (int)h, (int)r);
  tp_tensor *in[2] = {x, idx};
  tp_tape_node *n = tp_ctx_record(c, gather_rows_bwd, y, 2, in);
  if (n) {
    n->i[0] = cnt;
    n->i[1] = h;
    n->i[2] = r;
  }
  return y;
}

static void scatter_rows_bwd(tp_ctx *c, tp_tape_node *n) {
  tp_tensor *x = n->in[0], *idx = n->in[1];
  int cnt = (int)n->i[0], h = (int)n->i[1], r = (int)n->i[2];
  bool acc;
  tp_tensor *dx = tp_tensor_grad_acc(c, x, &acc);
  if (!dx) return;
  if (!acc) { /* every row of dx is some row of dy: a gather writes it whole */
    tp_k_embedding_fwd(BE(c), dx->mem, n->out->grad->mem, idx->mem, cnt, h, r);
    return;
  }
  tp_tensor *t = tp_tensor_new(c, TP_F32, x->ndim, x->shape);
  if (!t) return;
  tp_k_embedding_fwd(BE(c), t->mem, n->out->grad->mem, idx->mem, cnt, h, r);
  tp_k_axpy(BE(c), dx->mem, t->mem, 1.0f, tp_tensor_numel(x));
}

tp_tensor *tp_scatter_rows(tp_ctx *c, tp_tensor *x, tp_tensor *idx, int ndim,
                           const int64_t *shape) {
  if (!ready(c, "scatter_rows", 1, &x, TP_F32) || !ready(c, "scatter_rows", 1, &idx, TP_I32))
    return NULL;
  int64_t h = x->shape[x->ndim - 1], cnt = tp_tensor_numel(idx), total = 1;
  for (int i = 0; i < ndim && ndim <= TP_MAX_DIMS; i++) total *= shape[i];
  if (x->ndim != 2 || idx->ndim != 1 || cnt != x->shape[0] || ndim < 1 || ndim > TP_MAX_DIMS ||
      shape[ndim - 1] != h || total / MAX(h, 1) > INT32_MAX)
    return fail(c, "scatter_rows", "x must be [N, H], idx [N] and the shape end in H"), NULL;
  int64_t r = total / MAX(h, 1);
  tp_tensor *y = tp_tensor_zeros(c, TP_F32, ndim, shape);
  if (!y) return NULL;
  tp_k_embedding_bwd(BE(c), y->mem, x->mem, idx->mem, (int)cnt, (int)h, (int)r);
  tp_tensor *in[2] = {x, idx};
  tp_tape_node *n = tp_ctx_record(c, scatter_rows_bwd, y, 2, in);
  if (n) {
    n->i[0] = cnt;
    n->i[1] = h;
    n->i[2] = r;
  }
  return y;
}

tp_tensor *tp_attention_rows(tp_ctx *c, const tp_pack *pk, tp_tensor *q, tp_tensor *k,
                             tp_tensor *v, tp_tensor *mask, tp_tensor *bias, int heads,
                             float attn_dropout) {
  if (!tp_ctx_ok(c) || !q || !k || !v) return NULL;
  int64_t B = pk->batch, T = pk->len, H = q->shape[q->ndim - 1];
  if (q->ndim != 2 || k->ndim != 2 || v->ndim != 2 || k->shape[0] != pk->n ||
      v->shape[0] != pk->n || (q->shape[0] != pk->n && q->shape[0] != B))
    return fail(c, "attention_rows", "q must be [N or B, H] and k, v [N, H] of the packing"),
           NULL;
  int64_t full[3] = {B, T, H}, one[3] = {B, 1, H}, rows[2] = {B, H};
  bool all = q->shape[0] == pk->n && pk->n != B;
  tp_tensor *qa = all ? tp_scatter_rows(c, q, pk->rows, 3, full) : tp_reshape(c, q, 3, one);
  tp_tensor *ka = tp_scatter_rows(c, k, pk->rows, 3, full);
  tp_tensor *va = tp_scatter_rows(c, v, pk->rows, 3, full);
  tp_tensor *a = tp_attention(c, qa, ka, va, mask, bias, heads, attn_dropout);
  return all ? tp_gather_rows(c, a, pk->rows) : tp_reshape(c, a, 2, rows);
}
