/* core/kernels.c — kernel calls split to the device's binding limit.
 *
 * A device (Vulkan) may bind at most max_binding_bytes of a buffer per kernel
 * argument, counted from the offset rounded down to offset_align. Every
 * kernel call of the core comes through here: when the device has no limit
 * (CPU, CUDA) the call goes straight to the plugin; otherwise the work is cut
 * into calls whose every argument fits. The cuts never change what is
 * computed, only (for GEMM's inner dimension and the reductions) the order of
 * additions. */
#include "tensorplug/kernels.h"

#include "tensorplug/error.h"

#define K(be) (&(be)->iface->k)

static uint64_t limit_of(const tp_backend *be) { return tp_backend_binding_limit(be); }
static bool unlimited(const tp_backend *be) { return limit_of(be) == UINT64_MAX; }

/* Whether bytes starting at m fit one binding. */
static bool fits(const tp_backend *be, tp_mem m, uint64_t bytes) {
  if (bytes == 0 || !m.buf) return true;
  uint64_t lim = limit_of(be);
  return lim == UINT64_MAX || (m.off % be->info.offset_align) + bytes <= lim;
}

/* Elements of es bytes that fit one binding whatever the offset. */
static int64_t per_call(const tp_backend *be, size_t es) {
  uint64_t lim = limit_of(be);
  if (lim == UINT64_MAX) return INT64_MAX;
  return (int64_t)((lim - be->info.offset_align) / es);
}

static tp_mem at(tp_mem m, int64_t elems, size_t es) {
  if (m.buf) m.off += (size_t)elems * es;
  return m;
}

static void too_big(tp_backend *be, const char *kernel, const char *what, uint64_t bytes) {
  tp_backend_fail(be, g_error_new(TP_ERROR, TP_ERROR_OUT_OF_MEMORY,
                                  "%s: one %s takes %.1f MiB, more than %s (%s) can bind in one "
                                  "kernel argument (%.1f MiB): use a smaller --batch or --max-len",
                                  kernel, what, (double)bytes / 1048576.0, be->name,
                                  be->info.name, (double)limit_of(be) / 1048576.0));
}

/* ---- elementwise: chunks of at most per_call elements of the widest type ---- */

#define EW_CHUNKS(es, body)                                                                        \
  do {                                                                                             \
    int64_t step_ = per_call(be, (es));                                                            \
    for (int64_t i0 = 0; i0 < n; i0 += step_) {                                                    \
      int64_t len = MIN(step_, n - i0);                                                            \
      body;                                                                                        \
    }                                                                                              \
  } while (0)

void tp_k_gelu_fwd(tp_backend *be, tp_mem y, tp_mem x, int64_t n) {
  EW_CHUNKS(4, K(be)->gelu_fwd(be->dev, at(y, i0, 4), at(x, i0, 4), len));
}
void tp_k_gelu_bwd(tp_backend *be, tp_mem dx, tp_mem dy, tp_mem x, int64_t n) {
  EW_CHUNKS(4, K(be)->gelu_bwd(be->dev, at(dx, i0, 4), at(dy, i0, 4), at(x, i0, 4), len));
}
void tp_k_relu_fwd(tp_backend *be, tp_mem y, tp_mem x, int64_t n) {
  EW_CHUNKS(4, K(be)->relu_fwd(be->dev, at(y, i0, 4), at(x, i0, 4), len));
}
void tp_k_relu_bwd(tp_backend *be, tp_mem dx, tp_mem dy, tp_mem x, int64_t n) {
  EW_CHUNKS(4, K(be)->relu_bwd(be->dev, at(dx, i0, 4), at(dy, i0, 4), at(x, i0, 4), len));
}
void tp_k_tanh_fwd(tp_backend *be, tp_mem y, tp_mem x, int64_t n) {
  EW_CHUNKS(4, K(be)->tanh_fwd(be->dev, at(y, i0, 4), at(x, i0, 4), len));
}
void tp_k_tanh_bwd(tp_backend *be, tp_mem dx, tp_mem dy, tp_mem y, int64_t n) {
  EW_CHUNKS(4, K(be)->tanh_bwd(be->dev, at(dx, i0, 4), at(dy, i0, 4), at(y, i0, 4), len));
}
void tp_k_add(tp_backend *be, tp_mem y, tp_mem a, tp_mem b, int64_t n) {
  EW_CHUNKS(4, K(be)->add(be->dev, at(y, i0, 4), at(a, i0, 4), at(b, i0, 4), len));
}
void tp_k_axpy(tp_backend *be, tp_mem y, tp_mem x, float alpha, int64_t n) {
  EW_CHUNKS(4, K(be)->axpy(be->dev, at(y, i0, 4), at(x, i0, 4), alpha, len));
}
void tp_k_fill(tp_backend *be, tp_mem y, float value, int64_t n) {
  EW_CHUNKS(4, K(be)->fill(be->dev, at(y, i0, 4), value, len));
}
void tp_k_dropout_fwd(tp_backend *be, tp_mem y, tp_mem x, int64_t n, float p, uint64_t seed,
                      uint64_t offset) {
  EW_CHUNKS(4, K(be)->dropout_fwd(be->dev, at(y, i0, 4), at(x, i0, 4), len, p, seed,
                                  offset + (uint64_t)i0));
}
void tp_k_dropout_bwd(tp_backend *be, tp_mem dx, tp_mem dy, int64_t n, float p, uint64_t seed,
                      uint64_t offset) {
  EW_CHUNKS(4, K(be)->dropout_bwd(be->dev, at(dx, i0, 4), at(dy, i0, 4), len, p, seed,
                                  offset + (uint64_t)i0));
}
void tp_k_adam_step(tp_backend *be, tp_mem p, tp_mem g, tp_mem m, tp_mem v, int64_t n,
                    const tp_adam_args *args) {
  EW_CHUNKS(4, K(be)->adam_step(be->dev, at(p, i0, 4), at(g, i0, 4), at(m, i0, 4), at(v, i0, 4),
                                len, args));
}
void tp_k_sumsq(tp_backend *be, tp_mem out, tp_mem x, int64_t n) {
  EW_CHUNKS(4, K(be)->sumsq(be->dev, out, at(x, i0, 4), len));
}
void tp_k_nonfinite(tp_backend *be, tp_mem out, tp_mem x, int64_t n) {
  EW_CHUNKS(4, K(be)->nonfinite(be->dev, out, at(x, i0, 4), len));
}
void tp_k_cast(tp_backend *be, tp_mem y, tp_dtype ydt, tp_mem x, tp_dtype xdt, int64_t n) {
  size_t ys = tp_dtype_size(ydt), xs = tp_dtype_size(xdt);
  EW_CHUNKS(MAX(ys, xs), K(be)->cast(be->dev, at(y, i0, ys), ydt, at(x, i0, xs), xdt, len));
}
void tp_k_optim_control(tp_backend *be, tp_mem ctl, const tp_control_args *args) {
  K(be)->optim_control(be->dev, ctl, args);
}

bool tp_k_dropout_fwd_keep(tp_backend *be, tp_mem y, tp_mem keep, tp_mem x, int64_t n, float p,
                           uint64_t seed, uint64_t offset) {
  if (!TP_IFACE_HAS(be->iface, dropout_fwd_keep) || !TP_IFACE_HAS(be->iface, dropout_bwd_keep))
    return false;
  EW_CHUNKS(4, be->iface->dropout_fwd_keep(be->dev, at(y, i0, 4), at(keep, i0, 1), at(x, i0, 4),
                                           len, p, seed, offset + (uint64_t)i0));
  return true;
}
bool tp_k_dropout_bwd_keep(tp_backend *be, tp_mem dx, tp_mem dy, tp_mem keep, int64_t n, float p) {
  if (!TP_IFACE_HAS(be->iface, dropout_bwd_keep)) return false;
  EW_CHUNKS(4, be->iface->dropout_bwd_keep(be->dev, at(dx, i0, 4), at(dy, i0, 4),
                                           at(keep, i0, 1), len, p));
  return true;
}

/* ---- row kernels: chunks of whole rows ---- */

/* Rows of row_bytes per call; 0 (and an error) when one row is too big. */
static int64_t rows_per_call(tp_backend *be, const char *kernel, uint64_t row_bytes) {
  if (unlimited(be)) return INT64_MAX;
  int64_t r = per_call(be, 1) / (int64_t)MAX(row_bytes, 1);
  if (r < 1) too_big(be, kernel, "row", row_bytes);
  return r;
}

#define ROW_CHUNKS(kernel, row_bytes, total, body)                                                 \
  do {                                                                                             \
    int64_t step_ = rows_per_call(be, (kernel), (row_bytes));                                      \
    for (int64_t r0 = 0; step_ > 0 && r0 < (total); r0 += step_) {                                 \
      int64_t nr = MIN(step_, (total)-r0);                                                         \
      body;                                                                                        \
    }                                                                                              \
  } while (0)

void tp_k_layernorm_fwd(tp_backend *be, tp_mem y, tp_mem mean, tp_mem rstd, tp_mem x,
                        tp_mem gamma, tp_mem beta, int rows, int cols, float eps) {
  ROW_CHUNKS("layernorm_fwd", (uint64_t)cols * 4, rows,
             K(be)->layernorm_fwd(be->dev, at(y, r0 * cols, 4), at(mean, r0, 4), at(rstd, r0, 4),
                                  at(x, r0 * cols, 4), gamma, beta, (int)nr, cols, eps));
}
void tp_k_layernorm_bwd(tp_backend *be, tp_mem dx, tp_mem dgamma, tp_mem dbeta, tp_mem dy,
                        tp_mem x, tp_mem mean, tp_mem rstd, tp_mem gamma, int rows, int cols) {
  ROW_CHUNKS("layernorm_bwd", (uint64_t)cols * 4, rows,
             K(be)->layernorm_bwd(be->dev, at(dx, r0 * cols, 4), dgamma, dbeta,
                                  at(dy, r0 * cols, 4), at(x, r0 * cols, 4), at(mean, r0, 4),
                                  at(rstd, r0, 4), gamma, (int)nr, cols));
}
void tp_k_bias_add(tp_backend *be, tp_mem y, tp_mem bias, int64_t rows, int cols) {
  ROW_CHUNKS("bias_add", (uint64_t)cols * 4, rows,
             K(be)->bias_add(be->dev, at(y, r0 * cols, 4), bias, nr, cols));
}
void tp_k_bias_grad(tp_backend *be, tp_mem dbias, tp_mem dy, int64_t rows, int cols) {
  ROW_CHUNKS("bias_grad", (uint64_t)cols * 4, rows,
             K(be)->bias_grad(be->dev, dbias, at(dy, r0 * cols, 4), nr, cols));
}

void tp_k_softmax_fwd(tp_backend *be, tp_mem y, tp_mem x, tp_mem mask, int batch, int heads,
                      int rows, int cols, float scale) {
  uint64_t row = (uint64_t)cols * 4, entry = row * (uint64_t)heads * rows;
  if (fits(be, x, entry * batch) && fits(be, y, entry * batch) &&
      fits(be, mask, (uint64_t)batch * cols * 4)) {
    K(be)->softmax_fwd(be->dev, y, x, mask, batch, heads, rows, cols, scale);
    return;
  }
  /* whole batch entries, else one (entry, head) at a time, else rows of one */
  int64_t per = per_call(be, 1);
  if ((int64_t)entry <= per) {
    ROW_CHUNKS("softmax_fwd", entry, batch,
               K(be)->softmax_fwd(be->dev, at(y, r0 * entry / 4, 4), at(x, r0 * entry / 4, 4),
                                  at(mask, r0 * cols, 4), (int)nr, heads, rows, cols, scale));
    return;
  }
  for (int b = 0; b < batch; b++)
    for (int h = 0; h < heads; h++) {
      int64_t base = ((int64_t)b * heads + h) * rows * cols;
      ROW_CHUNKS("softmax_fwd", row, rows,
                 K(be)->softmax_fwd(be->dev, at(y, base + r0 * cols, 4),
                                    at(x, base + r0 * cols, 4), at(mask, (int64_t)b * cols, 4), 1,
                                    1, (int)nr, cols, scale));
    }
}

void tp_k_softmax_bwd(tp_backend *be, tp_mem dx, tp_mem dy, tp_mem y, int batch, int heads,
                      int rows, int cols, float scale) {
  int64_t total = (int64_t)batch * heads * rows; /* no mask: rows are independent */
  ROW_CHUNKS("softmax_bwd", (uint64_t)cols * 4, total,
             K(be)->softmax_bwd(be->dev, at(dx, r0 * cols, 4), at(dy, r0 * cols, 4),
                                at(y, r0 * cols, 4), 1, 1, (int)nr, cols, scale));
}

void tp_k_permute_0213(tp_backend *be, tp_mem y, tp_mem x, int d0, int d1, int d2, int d3,
                       float beta) {
  int64_t slab = (int64_t)d1 * d2 * d3; /* one i0: contiguous in x and in y */
  ROW_CHUNKS("permute_0213", (uint64_t)slab * 4, d0,
             K(be)->permute_0213(be->dev, at(y, r0 * slab, 4), at(x, r0 * slab, 4), (int)nr, d1,
                                 d2, d3, beta));
}

/* x [batch, seq, h]: only row 0 of each entry is read, so an entry that is
 * too big is passed as seq 1. */
void tp_k_first_token_fwd(tp_backend *be, tp_mem y, tp_mem x, int batch, int seq, int h) {
  uint64_t all = ((uint64_t)(batch - 1) * seq + 1) * h * 4;
  if (batch <= 0 || fits(be, x, all)) {
    K(be)->first_token_fwd(be->dev, y, x, batch, seq, h);
    return;
  }
  for (int b = 0; b < batch; b++)
    K(be)->first_token_fwd(be->dev, at(y, (int64_t)b * h, 4), at(x, (int64_t)b * seq * h, 4), 1,
                           1, h);
}
void tp_k_first_token_bwd(tp_backend *be, tp_mem dx, tp_mem dy, int batch, int seq, int h) {
  uint64_t all = ((uint64_t)(batch - 1) * seq + 1) * h * 4;
  if (batch <= 0 || fits(be, dx, all)) {
    K(be)->first_token_bwd(be->dev, dx, dy, batch, seq, h);
    return;
  }
  for (int b = 0; b < batch; b++)
    K(be)->first_token_bwd(be->dev, at(dx, (int64_t)b * seq * h, 4), at(dy, (int64_t)b * h, 4), 1,
                           1, h);
}

/* The loss is a mean over the whole batch: these are never split (logits
 * [B, C] are tiny); a batch too big for one binding is an error. */
static bool whole(tp_backend *be, const char *kernel, tp_mem logits, int batch, int classes) {
  uint64_t bytes = (uint64_t)batch * classes * 4;
  if (fits(be, logits, bytes)) return true;
  too_big(be, kernel, "batch of logits", bytes);
  return false;
}
void tp_k_cross_entropy_fwd(tp_backend *be, tp_mem loss, tp_mem logits, tp_mem labels, int batch,
                            int classes) {
  if (whole(be, "cross_entropy_fwd", logits, batch, classes))
    K(be)->cross_entropy_fwd(be->dev, loss, logits, labels, batch, classes);
}
void tp_k_cross_entropy_bwd(tp_backend *be, tp_mem dlogits, tp_mem dloss, tp_mem logits,
                            tp_mem labels, int batch, int classes) {
  if (whole(be, "cross_entropy_bwd", logits, batch, classes))
    K(be)->cross_entropy_bwd(be->dev, dlogits, dloss, logits, labels, batch, classes);
}
void tp_k_count_correct(tp_backend *be, tp_mem out, tp_mem logits, tp_mem labels, int batch,
                        int classes) {
  if (whole(be, "count_correct", logits, batch, classes))
    K(be)->count_correct(be->dev, out, logits, labels, batch, classes);
}

/* ---- embedding: ranges of ids times ranges of table rows ---- */

typedef void (*embedding_fn)(tp_backend_dev *d, tp_mem a, tp_mem b, tp_mem ids, int n, int h,
                             int row0, int rows, int vocab);

/* Ranges of table rows, and inside each range ranges of ids in order (so
 * repeated ids still add in the order of i). The forward's first argument is
 * per id (out), the backward's per table row (dtable). */
static void embedding_split(tp_backend *be, const char *kernel, embedding_fn fn, bool fwd,
                            tp_mem table, tp_mem per_id, tp_mem ids, int n, int h, int vocab) {
  if (unlimited(be)) {
    fn(be->dev, fwd ? per_id : table, fwd ? table : per_id, ids, n, h, 0, vocab, vocab);
    return;
  }
  int64_t rows = rows_per_call(be, kernel, (uint64_t)h * 4);
  for (int64_t t0 = 0; rows > 0 && t0 < vocab; t0 += rows)
    for (int64_t i0 = 0; i0 < n; i0 += rows) {
      tp_mem t = at(table, t0 * h, 4), p = at(per_id, i0 * h, 4);
      fn(be->dev, fwd ? p : t, fwd ? t : p, at(ids, i0, 4), (int)MIN(rows, n - i0), h, (int)t0,
         (int)MIN(rows, vocab - t0), vocab);
    }
}

void tp_k_embedding_fwd(tp_backend *be, tp_mem out, tp_mem table, tp_mem ids, int n, int h,
                        int vocab) {
  embedding_split(be, "embedding_fwd", K(be)->embedding_fwd, true, table, out, ids, n, h, vocab);
}

void tp_k_embedding_bwd(tp_backend *be, tp_mem dtable, tp_mem dout, tp_mem ids, int n, int h,
                        int vocab) {
  embedding_split(be, "embedding_bwd", K(be)->embedding_bwd, false, dtable, dout, ids, n, h,
                  vocab);
}

/* ---- GEMM: batch halves, then halves of the dimension an oversized operand
 * spans ---- */

/* Bytes of a rows x cols matrix with row stride ld. */
static uint64_t mat_bytes(int64_t rows, int64_t cols, int64_t ld, size_t es) {
  return rows <= 0 || cols <= 0 ? 0 : ((uint64_t)(rows - 1) * ld + cols) * es;
}

/* Bytes an operand spans over the whole batch. */
static uint64_t op_bytes(int64_t rows, int64_t cols, int64_t ld, int64_t stride, int batch,
                         size_t es) {
  uint64_t one = mat_bytes(rows, cols, ld, es);
  return stride == 0 || batch <= 1 ? one : (uint64_t)(batch - 1) * stride * es + one;
}

enum { DIM_M, DIM_N, DIM_K };

static void gemm_split(tp_backend *be, tp_gemm_args g);

/* Runs g as two calls over halves of dimension dim. */
static void gemm_halves(tp_backend *be, const tp_gemm_args *g, int dim) {
  size_t as = tp_dtype_size(g->ab_dtype), cs = tp_dtype_size(g->c_dtype);
  tp_gemm_args lo = *g, hi = *g;
  int total = dim == DIM_M ? g->m : dim == DIM_N ? g->n : g->k, h = total / 2;
  if (dim == DIM_M) {
    lo.m = h;
    hi.m = total - h;
    hi.a = at(g->a, g->ta ? h : (int64_t)h * g->lda, as);
    hi.c = at(g->c, (int64_t)h * g->ldc, cs);
  } else if (dim == DIM_N) {
    lo.n = h;
    hi.n = total - h;
    hi.b = at(g->b, g->tb ? (int64_t)h * g->ldb : h, as);
    hi.c = at(g->c, h, cs);
  } else { /* the inner dimension: the second half adds onto the first */
    lo.k = h;
    hi.k = total - h;
    hi.a = at(g->a, g->ta ? (int64_t)h * g->lda : h, as);
    hi.b = at(g->b, g->tb ? h : (int64_t)h * g->ldb, as);
    hi.beta = 1.0f;
  }
  gemm_split(be, lo);
  gemm_split(be, hi);
}

static void gemm_split(tp_backend *be, tp_gemm_args g) {
  size_t as = tp_dtype_size(g.ab_dtype), cs = tp_dtype_size(g.c_dtype);
  int ar = g.ta ? g.k : g.m, ac = g.ta ? g.m : g.k, br = g.tb ? g.n : g.k, bc = g.tb ? g.k : g.n;
  bool a_ok = g.k == 0 || fits(be, g.a, op_bytes(ar, ac, g.lda, g.sa, g.batch, as));
  bool b_ok = g.k == 0 || fits(be, g.b, op_bytes(br, bc, g.ldb, g.sb, g.batch, as));
  bool c_ok = fits(be, g.c, op_bytes(g.m, g.n, g.ldc, g.sc, g.batch, cs));
  if (a_ok && b_ok && c_ok) {
    K(be)->gemm(be->dev, &g);
    return;
  }
  if (g.batch > 1) { /* halves of the batch; with sc == 0 the second adds on */
    int h = g.batch / 2;
    tp_gemm_args lo = g, hi = g;
    lo.batch = h;
    hi.batch = g.batch - h;
    hi.a = at(g.a, (int64_t)h * g.sa, as);
    hi.b = at(g.b, (int64_t)h * g.sb, as);
    hi.c = at(g.c, (int64_t)h * g.sc, cs);
    if (g.sc == 0) hi.beta = 1.0f;
    gemm_split(be, lo);
    gemm_split(be, hi);
    return;
  }
  /* the dimensions that shrink the oversized operand: its rows, then its columns */
  int dims[2];
  int size[3] = {g.m, g.n, g.k};
  if (!c_ok) {
    dims[0] = DIM_M;
    dims[1] = DIM_N;
  } else if (!a_ok) {
    dims[0] = g.ta ? DIM_K : DIM_M;
    dims[1] = g.ta ? DIM_M : DIM_K;
  } else {
    dims[0] = g.tb ? DIM_N : DIM_K;
    dims[1] = g.tb ? DIM_K : DIM_N;
  }
  for (int i = 0; i < 2; i++)
    if (size[dims[i]] > 1) {
      gemm_halves(be, &g, dims[i]);
      return;
    }
  too_big(be, "gemm", "element", 4); /* unreachable: a binding holds at least two elements */
}

void tp_k_gemm(tp_backend *be, const tp_gemm_args *g) {
  if (unlimited(be)) K(be)->gemm(be->dev, g);
  else gemm_split(be, *g);
}

/* ---- fused attention: whole call, or one batch entry per call ---- */

/* Bytes of n rows of stride ld of which the last holds cols elements. */
static uint64_t rows_bytes(uint64_t n, uint64_t ld, uint64_t cols) {
  return n == 0 ? 0 : ((n - 1) * ld + cols) * 4;
}

/* Whether every argument of a fits one binding. */
static bool attention_fits(const tp_backend *be, const tp_attention_args *a) {
  uint64_t B = (uint64_t)a->batch, Tq = (uint64_t)a->q_len, Tk = (uint64_t)a->kv_len;
  uint64_t H = (uint64_t)a->heads * a->head_dim, nh = (uint64_t)a->heads;
  uint64_t kv = rows_bytes(B * Tk, (uint64_t)a->ld_kv, H);
  return fits(be, a->q, rows_bytes(B * Tq, (uint64_t)a->ld_q, H)) && fits(be, a->k, kv) &&
         fits(be, a->v, kv) && fits(be, a->out, B * Tq * H * 4) &&
         fits(be, a->lse, B * nh * Tq * 4) && fits(be, a->mask, B * Tk * 4) &&
         fits(be, a->bias, nh * Tq * Tk * 4);
}

/* The arguments of batch entry b alone. */
static tp_attention_args attention_entry(const tp_attention_args *a, int b) {
  tp_attention_args e = *a;
  int64_t Tq = a->q_len, Tk = a->kv_len, H = (int64_t)a->heads * a->head_dim;
  e.batch = 1;
  e.q = at(a->q, b * Tq * a->ld_q, 4);
  e.k = at(a->k, b * Tk * a->ld_kv, 4);
  e.v = at(a->v, b * Tk * a->ld_kv, 4);
  e.out = at(a->out, b * Tq * H, 4);
  e.lse = at(a->lse, (int64_t)b * a->heads * Tq, 4);
  e.mask = at(a->mask, b * Tk, 4);
  e.offset = a->offset + (uint64_t)b * a->heads * Tq * Tk;
  return e;
}

bool tp_k_has_attention(tp_backend *be, const tp_attention_args *a) {
  if (!TP_IFACE_HAS(be->iface, attention_fwd) || !TP_IFACE_HAS(be->iface, attention_bwd))
    return false;
  if (!(be->info.gemm_compute & TP_DTYPE_BIT(a->compute))) return false;
  if (be->info.max_head_dim && (uint32_t)a->head_dim > be->info.max_head_dim) return false;
  if (unlimited(be) || attention_fits(be, a)) return true;
  tp_attention_args e = attention_entry(a, 0);
  return attention_fits(be, &e);
}

bool tp_k_attention_fwd(tp_backend *be, const tp_attention_args *a) {
  if (!tp_k_has_attention(be, a)) return false;
  if (unlimited(be) || attention_fits(be, a)) {
    be->iface->attention_fwd(be->dev, a);
    return true;
  }
  for (int b = 0; b < a->batch; b++) {
    tp_attention_args e = attention_entry(a, b);
    be->iface->attention_fwd(be->dev, &e);
  }
  return true;
}

bool tp_k_attention_bwd(tp_backend *be, const tp_attention_args *a, tp_mem dout, tp_mem dq,
                        tp_mem dk, tp_mem dv, tp_mem dbias) {
  if (!tp_k_has_attention(be, a)) return false;
  if (unlimited(be) || attention_fits(be, a)) {
    be->iface->attention_bwd(be->dev, a, dout, dq, dk, dv, dbias);
    return true;
  }
  int64_t Tq = a->q_len, Tk = a->kv_len, H = (int64_t)a->heads * a->head_dim;
  for (int b = 0; b < a->batch; b++) {
    tp_attention_args e = attention_entry(a, b);
    be->iface->attention_bwd(be->dev, &e, at(dout, b * Tq * H, 4), at(dq, b * Tq * a->ld_q, 4),
                             at(dk, b * Tk * a->ld_kv, 4), at(dv, b * Tk * a->ld_kv, 4), dbias);
  }
  return true;
}

/* ---- fused elementwise slots: whole rows per call ---- */

/* Rows per call for rows of row_bytes (every argument is at most a row
 * wide per row); 0 when one row does not fit a binding. */
static int64_t fused_rows(const tp_backend *be, uint64_t row_bytes) {
  if (unlimited(be)) return INT64_MAX;
  return per_call(be, 1) / (int64_t)MAX(row_bytes, 1);
}

bool tp_k_has_bias_gelu(tp_backend *be, int cols) {
  return TP_IFACE_HAS(be->iface, bias_gelu_fwd) && TP_IFACE_HAS(be->iface, bias_gelu_bwd) &&
         fused_rows(be, (uint64_t)cols * 4) > 0;
}

bool tp_k_bias_gelu_fwd(tp_backend *be, tp_mem y, tp_mem x, tp_mem bias, int64_t rows, int cols) {
  if (!tp_k_has_bias_gelu(be, cols)) return false;
  int64_t step = fused_rows(be, (uint64_t)cols * 4);
  for (int64_t r0 = 0; r0 < rows; r0 += step)
    be->iface->bias_gelu_fwd(be->dev, at(y, r0 * cols, 4), at(x, r0 * cols, 4), bias,
                             MIN(step, rows - r0), cols);
  return true;
}

bool tp_k_bias_gelu_bwd(tp_backend *be, tp_mem dx, tp_mem dbias, tp_mem dy, tp_mem pre,
                        int64_t rows, int cols) {
  if (!tp_k_has_bias_gelu(be, cols)) return false;
  int64_t step = fused_rows(be, (uint64_t)cols * 4);
  for (int64_t r0 = 0; r0 < rows; r0 += step)
    be->iface->bias_gelu_bwd(be->dev, at(dx, r0 * cols, 4), dbias, at(dy, r0 * cols, 4),
                             at(pre, r0 * cols, 4), MIN(step, rows - r0), cols);
  return true;
}

bool tp_k_has_add_layernorm(tp_backend *be, int cols) {
  return TP_IFACE_HAS(be->iface, add_layernorm_fwd) &&
         TP_IFACE_HAS(be->iface, add_layernorm_bwd) && fused_rows(be, (uint64_t)cols * 4) > 0;
}

/* The arguments of rows [r0, r0 + n) alone (the dropout counters follow). */
static tp_add_ln_args add_ln_rows(const tp_add_ln_args *a, int64_t r0, int64_t n) {
  tp_add_ln_args e = *a;
  int64_t o = r0 * a->cols;
  e.rows = (int)n;
  e.y = at(a->y, o, 4);
  e.s = at(a->s, o, 4);
  e.a = at(a->a, o, 4);
  e.b = at(a->b, o, 4);
  e.keep = at(a->keep, o, 1);
  e.mean = at(a->mean, r0, 4);
  e.rstd = at(a->rstd, r0, 4);
  e.offset = a->offset + (uint64_t)o;
  return e;
}

bool tp_k_add_layernorm_fwd(tp_backend *be, const tp_add_ln_args *a) {
  if (!tp_k_has_add_layernorm(be, a->cols)) return false;
  int64_t step = fused_rows(be, (uint64_t)a->cols * 4);
  for (int64_t r0 = 0; r0 < a->rows; r0 += step) {
    tp_add_ln_args e = add_ln_rows(a, r0, MIN(step, a->rows - r0));
    be->iface->add_layernorm_fwd(be->dev, &e);
  }
  return true;
}

bool tp_k_add_layernorm_bwd(tp_backend *be, const tp_add_ln_args *a, tp_mem dy, tp_mem da,
                            tp_mem db, tp_mem dgamma, tp_mem dbeta, bool acc_a, bool acc_b) {
  if (!tp_k_has_add_layernorm(be, a->cols)) return false;
  int64_t step = fused_rows(be, (uint64_t)a->cols * 4);
  for (int64_t r0 = 0; r0 < a->rows; r0 += step) {
    int64_t o = r0 * a->cols;
    tp_add_ln_args e = add_ln_rows(a, r0, MIN(step, a->rows - r0));
    be->iface->add_layernorm_bwd(be->dev, &e, at(dy, o, 4), at(da, o, 4), at(db, o, 4), dgamma,
                                 dbeta, acc_a, acc_b);
  }
  return true;
}
