/* plugins/cuda/cuda_plan.c — host-side arithmetic of the CUDA backend (see
 * cuda_plan.h). No CUDA here: every function is tested on the CPU. */
#include "cuda_plan.h"

#include <math.h>
#include <stdio.h>

static bool fail(char *why, size_t len, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static bool fail(char *why, size_t len, const char *fmt, ...) {
  if (why && len) {
    va_list ap;
    va_start(ap, fmt);
    g_vsnprintf(why, len, fmt, ap);
    va_end(ap);
  }
  return false;
}

static bool float_dtype(tp_dtype t) { return t == TP_F32 || t == TP_BF16 || t == TP_F16; }

static const char *dtype_name(tp_dtype t) {
  switch (t) {
  case TP_F32: return "f32";
  case TP_BF16: return "bf16";
  case TP_F16: return "f16";
  case TP_I32: return "i32";
  case TP_I8: return "i8";
  }
  return "?";
}

static size_t dtype_bytes(tp_dtype t) { return t == TP_F32 || t == TP_I32 ? 4 : 2; }

static size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

/* ------------------------------------------------------------------ GEMM */

bool tpcu_gemm_check(const tp_gemm_args *g, char *why, size_t len) {
  if (g->m < 0 || g->n < 0 || g->k < 0 || g->batch < 0)
    return fail(why, len, "negative size m=%d n=%d k=%d batch=%d", g->m, g->n, g->k, g->batch);
  if (!float_dtype(g->ab_dtype) || !float_dtype(g->c_dtype) || !float_dtype(g->compute))
    return fail(why, len, "dtypes A/B %s, C %s, compute %s: each must be f32, bf16 or f16",
                dtype_name(g->ab_dtype), dtype_name(g->c_dtype), dtype_name(g->compute));
  int need_a = g->ta ? g->m : g->k, need_b = g->tb ? g->k : g->n;
  if (g->lda < MAX(1, need_a) || g->ldb < MAX(1, need_b) || g->ldc < MAX(1, g->n))
    return fail(why, len,
                "row stride too small (lda=%d needs >= %d, ldb=%d needs >= %d, ldc=%d needs "
                ">= %d)",
                g->lda, MAX(1, need_a), g->ldb, MAX(1, need_b), g->ldc, MAX(1, g->n));
  if (g->sa < 0 || g->sb < 0 || g->sc < 0)
    return fail(why, len, "negative batch stride (sa=%lld sb=%lld sc=%lld)", (long long)g->sa,
                (long long)g->sb, (long long)g->sc);
  return true;
}

size_t tpcu_matrix_span(int rows, int cols, int ld, int64_t stride, int batch) {
  if (rows <= 0 || cols <= 0 || batch <= 0) return 0;
  return (size_t)(batch - 1) * (size_t)stride + (size_t)(rows - 1) * (size_t)ld + (size_t)cols;
}

/* Whether cuBLASLt multiplies A/B of type ab into C of type c (its table of
 * supported types: f32 operands only into f32; bf16 or f16 operands into
 * f32 or their own type). */
static bool lt_supports_c(tp_dtype ab, tp_dtype c) { return c == TP_F32 || c == ab; }

void tpcu_gemm_plan_make(const tp_gemm_args *g, tpcu_gemm_plan *p) {
  memset(p, 0, sizeof *p);
  p->k_zero = g->k == 0;
  p->sum_batches = g->sc == 0 && g->batch > 1;
  p->lt_batch = p->sum_batches ? 1 : g->batch;
  tp_dtype ab = g->ab_dtype;
  switch (g->compute) {
  case TP_BF16:
  case TP_F16:
    if (ab == TP_F32) {
      /* f32 operands rounded to the half type by cuBLASLt itself */
      p->lt_ab = TP_F32;
      p->compute = g->compute == TP_BF16 ? TPCU_LT_32F_FAST_16BF : TPCU_LT_32F_FAST_16F;
    } else {
      /* half operands of the compute type multiply exactly in f32 (tensor
       * cores); the other half type is rounded to it first */
      p->lt_ab = g->compute;
      p->cast_ab = ab != g->compute;
      p->compute = TPCU_LT_32F;
    }
    break;
  default: /* TP_F32: every storage type is widened exactly, f32 math */
    p->lt_ab = ab;
    p->compute = TPCU_LT_32F;
    break;
  }
  p->c_temp = !lt_supports_c(p->lt_ab, g->c_dtype);
  p->lt_c = p->c_temp ? TP_F32 : g->c_dtype;
  if (p->k_zero || g->m == 0 || g->n == 0 || g->batch == 0) {
    p->cast_ab = p->c_temp = false; /* no product: C = beta * C in its own type */
    return;
  }
  int ar = g->ta ? g->k : g->m, ac = g->ta ? g->m : g->k;
  int br = g->tb ? g->n : g->k, bc = g->tb ? g->k : g->n;
  size_t off = 0;
  if (p->cast_ab) {
    p->a_elems = tpcu_matrix_span(ar, ac, g->lda, g->sa, g->batch);
    p->b_elems = tpcu_matrix_span(br, bc, g->ldb, g->sb, g->batch);
    off = round_up(p->a_elems * dtype_bytes(p->lt_ab), 256);
    p->b_off = off;
    off = round_up(off + p->b_elems * dtype_bytes(p->lt_ab), 256);
  }
  if (p->c_temp) {
    p->c_elems = tpcu_matrix_span(g->m, g->n, g->ldc, g->sc, g->batch);
    p->c_off = off;
    off = round_up(off + p->c_elems * sizeof(float), 256);
  }
  p->scratch_bytes = off;
}

void tpcu_lt_problem_make(const tp_gemm_args *g, int batch, tpcu_lt_problem *p) {
  memset(p, 0, sizeof *p);
  p->m = (uint64_t)g->n;
  p->n = (uint64_t)g->m;
  p->k = (uint64_t)g->k;
  /* cuBLASLt's A is our B: stored k x n (or n x k when tb) row-major, which
   * column-major is n x k (k x n); op must give n x k. */
  p->a.trans = g->tb;
  p->a.rows = (uint64_t)(g->tb ? g->k : g->n);
  p->a.cols = (uint64_t)(g->tb ? g->n : g->k);
  p->a.ld = g->ldb;
  p->a.stride = batch > 1 ? g->sb : 0;
  /* cuBLASLt's B is our A: op must give k x m. */
  p->b.trans = g->ta;
  p->b.rows = (uint64_t)(g->ta ? g->m : g->k);
  p->b.cols = (uint64_t)(g->ta ? g->k : g->m);
  p->b.ld = g->lda;
  p->b.stride = batch > 1 ? g->sa : 0;
  p->c.trans = false;
  p->c.rows = (uint64_t)g->n;
  p->c.cols = (uint64_t)g->m;
  p->c.ld = g->ldc;
  p->c.stride = batch > 1 ? g->sc : 0;
}

uint32_t tpcu_alignment(uint32_t cap, uint64_t a, uint64_t b, uint64_t c) {
  uint64_t all = a | b | c;
  uint32_t al = cap;
  while (al > 1 && (all & (al - 1)) != 0) al >>= 1;
  return al;
}

size_t tpcu_lt_workspace_bytes(int cc_major) {
  return cc_major >= 9 ? (size_t)32 << 20 : (size_t)4 << 20;
}

/* -------------------------------------------------------------- launches */

uint32_t tpcu_grid_1d(int64_t n, int threads, int sm_count, int blocks_per_sm) {
  if (n <= 0 || threads <= 0) return 0;
  int64_t need = (n + threads - 1) / threads;
  int64_t cap = (int64_t)MAX(sm_count, 1) * MAX(blocks_per_sm, 1);
  return (uint32_t)MIN(need, cap);
}

uint32_t tpcu_grid_rows(int64_t rows) {
  if (rows <= 0) return 0;
  int64_t b = (rows + TPCU_ROWS_PER_BLOCK - 1) / TPCU_ROWS_PER_BLOCK;
  return (uint32_t)MIN(b, (int64_t)INT32_MAX);
}

int64_t tpcu_red_chunks(int64_t rows) {
  return rows <= 0 ? 0 : (rows + TPCU_RED_ROWS - 1) / TPCU_RED_ROWS;
}

int64_t tpcu_sum_chunks(int64_t n) { return n <= 0 ? 0 : (n + TPCU_SUM_CHUNK - 1) / TPCU_SUM_CHUNK; }

size_t tpcu_stage_chunks(size_t bytes, size_t slot_bytes) {
  return slot_bytes == 0 ? 0 : (bytes + slot_bytes - 1) / slot_bytes;
}

/* ------------------------------------------------------------- attention */

bool tpcu_attention_check(const tpcu_attn_call *a, char *why, size_t len) {
  if (a->batch <= 0 || a->heads <= 0 || a->q_len <= 0 || a->kv_len <= 0 || a->head_dim <= 0)
    return fail(why, len,
                "sizes must be positive (batch=%d heads=%d queries=%d keys=%d head_dim=%d)",
                a->batch, a->heads, a->q_len, a->kv_len, a->head_dim);
  /* grid.y and grid.z of the kernels */
  if (a->batch > 65535 || a->heads > 65535)
    return fail(why, len, "batch %d or heads %d exceeds 65535", a->batch, a->heads);
  int64_t row = (int64_t)a->heads * a->head_dim;
  if (a->ld_q < row || a->ld_kv < row)
    return fail(why, len, "row strides ld_q=%d, ld_kv=%d are below heads * head_dim = %lld",
                a->ld_q, a->ld_kv, (long long)row);
  if (!(a->dropout >= 0.0f && a->dropout < 1.0f))
    return fail(why, len, "dropout p=%g is not in [0, 1)", (double)a->dropout);
  if (!float_dtype((tp_dtype)a->compute))
    return fail(why, len, "compute type %s: must be f32, bf16 or f16",
                dtype_name((tp_dtype)a->compute));
  return true;
}

/* Fills l for tiles br x bc; returns the bytes it needs. */
static uint32_t attn_layout_fill(int kernel, int br, int bc, int hdp, int esize,
                                 tpcu_attn_layout *l) {
  memset(l, 0, sizeof *l);
  l->br = br;
  l->bc = bc;
  l->hdp = hdp;
  l->esize = esize;
  /* Pad rows by 16 bytes: rows start in different banks, and the WMMA
   * stride rule (a multiple of 16 bytes) still holds. */
  int pad_e = 16 / esize;
  l->ld_e = hdp + pad_e;
  l->ld_s = bc + 4;
  l->ld_p = bc + pad_e;
  l->ld_o = hdp + 4;
  l->q = l->k = l->v = l->dout = l->s = l->p = l->dp = l->ds = l->acc = l->acc2 = l->rows =
      TPCU_ATTN_NONE;
  size_t off = 0;
#define TAKE(field, bytes)                                                                         \
  do {                                                                                             \
    l->field = (uint32_t)off;                                                                      \
    off = round_up(off + (size_t)(bytes), 128);                                                    \
  } while (0)
  size_t qrows_e = (size_t)br * l->ld_e * esize, krows_e = (size_t)bc * l->ld_e * esize;
  size_t s_f = (size_t)br * l->ld_s * 4, p_e = (size_t)br * l->ld_p * esize;
  TAKE(q, qrows_e);
  TAKE(k, krows_e);
  TAKE(v, krows_e);
  TAKE(s, s_f);
  switch (kernel) {
  case TPCU_ATTN_FWD:
    TAKE(p, p_e);
    TAKE(acc, (size_t)br * l->ld_o * 4);
    TAKE(rows, (size_t)3 * br * 4);
    break;
  case TPCU_ATTN_DQ:
    TAKE(dout, qrows_e);
    TAKE(dp, s_f);
    TAKE(ds, p_e);
    TAKE(acc, (size_t)br * l->ld_o * 4);
    TAKE(rows, (size_t)2 * br * 4);
    break;
  default: /* TPCU_ATTN_DKDV */
    TAKE(dout, qrows_e);
    TAKE(p, p_e);
    TAKE(dp, s_f);
    TAKE(ds, p_e);
    TAKE(acc, (size_t)bc * l->ld_o * 4);
    TAKE(acc2, (size_t)bc * l->ld_o * 4);
    TAKE(rows, (size_t)2 * br * 4);
    break;
  }
  TAKE(flag, sizeof(int32_t));
#undef TAKE
  l->bytes = (uint32_t)off;
  return l->bytes;
}

bool tpcu_attn_layout_make(int kernel, int head_dim, tp_dtype compute, int q_len, int kv_len,
                           size_t smem_limit, tpcu_attn_layout *l, char *why, size_t len) {
  if (head_dim <= 0 || q_len <= 0 || kv_len <= 0)
    return fail(why, len, "head_dim %d, %d queries, %d keys: each must be positive", head_dim,
                q_len, kv_len);
  if (kernel < TPCU_ATTN_FWD || kernel > TPCU_ATTN_DKDV)
    return fail(why, len, "unknown attention kernel %d", kernel);
  int hdp = (head_dim + 15) / 16 * 16;
  int esize = compute == TP_F32 ? 4 : 2;
  /* Tiles no longer than the sequences need (short ones waste no rows and
   * make more blocks), largest first: bigger tiles reuse each loaded row
   * more. */
  int br_cap = MIN(64, (q_len + 15) / 16 * 16), bc_cap = MIN(64, (kv_len + 15) / 16 * 16);
  static const int tiles[][2] = {{64, 64}, {32, 64}, {64, 32}, {32, 32}, {16, 64},
                                 {64, 16}, {16, 32}, {32, 16}, {16, 16}};
  for (size_t i = 0; i < G_N_ELEMENTS(tiles); i++) {
    if (tiles[i][0] > br_cap || tiles[i][1] > bc_cap) continue;
    if (attn_layout_fill(kernel, tiles[i][0], tiles[i][1], hdp, esize, l) <= smem_limit)
      return true;
  }
  return fail(why, len,
              "head_dim %d needs more than the %zu bytes of shared memory a block may use, even "
              "with 16 x 16 tiles",
              head_dim, smem_limit);
}

int tpcu_attn_max_head_dim(size_t smem_limit) {
  int best = 0;
  tpcu_attn_layout l;
  for (int hd = 16; hd <= 4096; hd += 16) {
    bool all = true; /* f32 tiles are the largest */
    for (int k = TPCU_ATTN_FWD; all && k <= TPCU_ATTN_DKDV; k++)
      all = tpcu_attn_layout_make(k, hd, TP_F32, 16, 16, smem_limit, &l, NULL, 0);
    if (!all) break;
    best = hd;
  }
  return best;
}

/* ------------------------------------------------------------ optimizer */

bool tpcu_adam_coeffs(const tp_adam_args *a, float *step, float *vscale, float *decay) {
  if (a->step < 1) return false;
  double t = (double)a->step;
  double c1 = 1.0 - pow(a->beta1, t), c2 = 1.0 - pow(a->beta2, t);
  if (a->mode == TP_ADAM_W) {
    *step = (float)(a->lr / c1);
    *vscale = (float)(1.0 / sqrt(c2));
    *decay = (float)(1.0 - (double)a->lr * a->weight_decay);
  } else { /* Keras's Adam has no decoupled decay: weight_decay is ignored */
    *step = (float)(a->lr * sqrt(c2) / c1);
    *vscale = 1.0f;
    *decay = 1.0f;
  }
  return true;
}

/* ---------------------------------------------------------------- errors */

static char *human_bytes(size_t b) {
  if (b >= ((size_t)1 << 30)) return g_strdup_printf("%.2f GiB", (double)b / (1u << 30));
  if (b >= ((size_t)1 << 20)) return g_strdup_printf("%.1f MiB", (double)b / (1u << 20));
  return g_strdup_printf("%zu bytes", b);
}

char *tpcu_oom_message(size_t asked, size_t free_bytes, size_t total_bytes) {
  char *a = human_bytes(asked), *f = human_bytes(free_bytes), *t = human_bytes(total_bytes);
  char *msg = g_strdup_printf("cuda: out of GPU memory: asked for %s (%zu bytes) with %s free of "
                              "%s; use a smaller --batch (or --max-len)",
                              a, asked, f, t);
  g_free(a);
  g_free(f);
  g_free(t);
  return msg;
}

char *tpcu_kernel_error_message(const int32_t w[TPCU_KERR_WORDS]) {
  switch (w[0]) {
  case TPCU_KERR_NONE: return NULL;
  case TPCU_KERR_EMBEDDING_FWD_ID:
  case TPCU_KERR_EMBEDDING_BWD_ID:
    return g_strdup_printf("cuda %s: id %d at position %d is outside [0, %d)",
                           w[0] == TPCU_KERR_EMBEDDING_FWD_ID ? "embedding_fwd" : "embedding_bwd",
                           w[2], w[1], w[3]);
  case TPCU_KERR_CE_FWD_LABEL:
  case TPCU_KERR_CE_BWD_LABEL:
  case TPCU_KERR_COUNT_LABEL:
    return g_strdup_printf("cuda %s: label %d at position %d is outside [0, %d)",
                           w[0] == TPCU_KERR_CE_FWD_LABEL   ? "cross_entropy_fwd"
                           : w[0] == TPCU_KERR_CE_BWD_LABEL ? "cross_entropy_bwd"
                                                            : "count_correct",
                           w[2], w[1], w[3]);
  default: return g_strdup_printf("cuda: a kernel reported unknown error code %d", w[0]);
  }
}

bool tpcu_cc_usable(int major, int minor, char *why, size_t len) {
  if (major >= 8) return true;
  return fail(why, len,
              "compute capability %d.%d is below 8.0 (this build has sm_80 and sm_90 code and "
              "needs bf16 tensor cores)",
              major, minor);
}
