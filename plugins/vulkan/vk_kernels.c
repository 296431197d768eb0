/* plugins/vulkan/vk_kernels.c — the Vulkan backend's kernels: argument
 * checks on the host, push constants, grid sizes; the work is in
 * the shaders (shaders/). Every kernel is queued (vk_dispatch), never waited for.
 *
 * Indices inside shaders are 32-bit: every tensor argument fits one binding
 * (at most maxStorageBufferRange < 4 GiB, so < 2^30 f32 elements), which the
 * core guarantees (backend_iface.h). Cross-row reductions (bias_grad,
 * layernorm dgamma/dbeta, sumsq) sum fixed chunks in a fixed order and
 * embedding_bwd walks the ids in order per column: results do not depend on
 * the device or on timing. */
#include <math.h>
#include <string.h>

#include "tensorplug/error.h"
#include "vk_internal.h"

#define WG 256u       /* elementwise workgroup size (ew.comp and friends) */
#define RED_CHUNK 64u /* rows per partial sum (colsum.comp, layernorm.comp) */
#define SUM_CHUNK 4096u

static inline vk_arg F(tp_mem m) { return (vk_arg){m, 4}; }
static inline vk_arg I32(tp_mem m) { return (vk_arg){m, 4}; }

static uint32_t groups_for(uint64_t items, uint32_t per_group) {
  uint64_t g = (items + per_group - 1) / per_group;
  return (uint32_t)MIN(g, (uint64_t)65535);
}

/* Workgroups for one subgroup per row (shaders/rows.glsl) in groups of
 * wg invocations; the shaders loop over any rows beyond. */
static uint32_t row_groups(const tp_backend_dev *d, uint64_t rows, uint32_t wg) {
  uint32_t per = MAX(wg / MAX(d->subgroup_size, 1u), 1u);
  return groups_for(rows, per);
}

/* Element counts must fit the shaders' 32-bit indices. */
static bool count_ok(tp_backend_dev *d, const char *what, int64_t n) {
  if (n < 0 || n > (int64_t)UINT32_MAX / 2) {
    vk_set_error(d, TP_ERROR_INVALID_ARGUMENT,
                 "vulkan %s: %lld elements is outside what one call handles (0..2^31)", what,
                 (long long)n);
    return false;
  }
  return true;
}

static uint32_t fbits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

/* ------------------------------------------------------------- messages */

char *vk_status_message(const uint32_t *st) {
  int value = (int)st[1], limit = (int)st[3];
  unsigned pos = st[2];
  switch (st[0]) {
  case VK_ERR_EMBED_FWD_ID:
  case VK_ERR_EMBED_BWD_ID:
    return g_strdup_printf("vulkan %s: id %d at position %u is outside the table's %d rows",
                           st[0] == VK_ERR_EMBED_FWD_ID ? "embedding_fwd" : "embedding_bwd", value,
                           pos, limit);
  case VK_ERR_CE_FWD_LABEL:
  case VK_ERR_CE_BWD_LABEL:
  case VK_ERR_COUNT_LABEL:
    return g_strdup_printf("vulkan %s: label %d at position %u is outside [0, %d)",
                           st[0] == VK_ERR_CE_FWD_LABEL   ? "cross_entropy_fwd"
                           : st[0] == VK_ERR_CE_BWD_LABEL ? "cross_entropy_bwd"
                                                          : "count_correct",
                           value, pos, limit);
  default:
    return g_strdup_printf("vulkan: a kernel reported error %u (value %d, position %u)", st[0],
                           value, pos);
  }
}

/* ------------------------------------------------------------------ GEMM */

typedef struct {
  uint32_t m, n, k, batch, lda, ldb, ldc, sa, sb, sc;
  float alpha, beta;
  uint32_t flags;
} gemm_pc;

static bool dtype_16(tp_dtype t) { return t == TP_BF16 || t == TP_F16; }
static bool dtype_float(tp_dtype t) { return t == TP_F32 || dtype_16(t); }

static void gemm_limited(tp_backend_dev *d, const tp_gemm_args *g);

static void vk_gemm(tp_backend_dev *d, const tp_gemm_args *g) {
  if (g->m < 0 || g->n < 0 || g->k < 0 || g->batch < 0) {
    vk_set_error(d, TP_ERROR_INVALID_ARGUMENT, "vulkan gemm: negative size m=%d n=%d k=%d batch=%d",
                 g->m, g->n, g->k, g->batch);
    return;
  }
  if (!dtype_float(g->ab_dtype) || !dtype_float(g->c_dtype) || !dtype_float(g->compute) ||
      ((dtype_16(g->ab_dtype) || dtype_16(g->c_dtype)) && !d->storage16)) {
    vk_set_error(d, TP_ERROR_UNAVAILABLE,
                 "vulkan gemm: types A/B %d, C %d, compute %d are not supported on this device "
                 "(f32%s)",
                 (int)g->ab_dtype, (int)g->c_dtype, (int)g->compute,
                 d->storage16 ? ", bf16, f16" : " only: no 16-bit storage");
    return;
  }
  if (g->m == 0 || g->n == 0 || g->batch == 0) return;
  int need_a = g->ta ? g->m : g->k, need_b = g->tb ? g->k : g->n;
  if (g->lda < MAX(1, need_a) || g->ldb < MAX(1, need_b) || g->ldc < MAX(1, g->n) || g->sa < 0 ||
      g->sb < 0 || g->sc < 0 || g->sa > UINT32_MAX || g->sb > UINT32_MAX || g->sc > UINT32_MAX) {
    vk_set_error(d, TP_ERROR_INVALID_ARGUMENT,
                 "vulkan gemm: bad strides (lda=%d needs >= %d, ldb=%d needs >= %d, ldc=%d needs "
                 ">= %d; batch strides %lld %lld %lld)",
                 g->lda, need_a, g->ldb, need_b, g->ldc, g->n, (long long)g->sa, (long long)g->sb,
                 (long long)g->sc);
    return;
  }
  gemm_limited(d, g);
}

#define SKINNY 4     /* at most this many rows or columns of C: gemm_skinny */
#define SKINNY_K 64  /* ... over at least this long an inner dimension */

/* One GEMM dispatch (arguments checked). */
static void gemm_dispatch(tp_backend_dev *d, const tp_gemm_args *g) {
  gemm_pc pc = {
      .m = (uint32_t)g->m, .n = (uint32_t)g->n, .k = (uint32_t)g->k,
      .batch = (uint32_t)g->batch, .lda = (uint32_t)g->lda, .ldb = (uint32_t)g->ldb,
      .ldc = (uint32_t)g->ldc, .sa = (uint32_t)g->sa, .sb = (uint32_t)g->sb,
      .sc = (uint32_t)g->sc, .alpha = g->alpha, .beta = g->beta,
      .flags = (g->ta ? 1u : 0u) | (g->tb ? 2u : 0u) | ((uint32_t)g->ab_dtype << 4) |
               ((uint32_t)g->c_dtype << 6) | ((uint32_t)g->compute << 8),
  };
  bool ab16 = dtype_16(g->ab_dtype), c16 = dtype_16(g->c_dtype);
  vk_arg args[3] = {{g->a, ab16 ? 2u : 4u}, {g->b, ab16 ? 2u : 4u}, {g->c, c16 ? 2u : 4u}};
  uint32_t gx = (pc.n + 63) / 64, gy = (pc.m + 63) / 64, gz = g->sc == 0 ? 1 : pc.batch;
  /* few rows or columns of C over a long inner dimension: a subgroup per
   * element of C (on GPUs: the tiles would sit idle) */
  if (!ab16 && !c16 && MIN(pc.m, pc.n) <= SKINNY && pc.k >= SKINNY_K && !d->gemm_reg) {
    uint64_t elems = (uint64_t)pc.m * pc.n * (g->sc == 0 ? 1 : pc.batch);
    vk_dispatch(d, VK_SH_gemm_skinny, args, 3, &pc, sizeof pc, row_groups(d, elems, 64), 1, 1);
    return;
  }
#ifdef TP_VK_HAVE_COOPMAT_NV
  if (d->coopmat && g->compute == TP_F16 && !ab16 && !c16) {
    vk_dispatch(d, VK_SH_gemm_coopmat_nv, args, 3, &pc, sizeof pc, gx, gy, gz);
    return;
  }
#endif
  if (d->gemm_reg && !ab16 && !c16) {
    /* groups of four along rows of A/B start 16-byte aligned: vec4 loads */
    bool al = (g->a.off % d->align) % 16 == 0 && (g->b.off % d->align) % 16 == 0 &&
              pc.lda % 4 == 0 && pc.ldb % 4 == 0 && pc.sa % 4 == 0 && pc.sb % 4 == 0;
    uint64_t blocks = (uint64_t)((pc.m + 7) / 8) * ((pc.n + 7) / 8);
    vk_dispatch(d, al ? VK_SH_gemm_reg_vec4 : VK_SH_gemm_reg, args, 3, &pc, sizeof pc,
                groups_for(blocks, 64), 1, gz);
    return;
  }
  vk_shader_id sh = ab16 ? (c16 ? VK_SH_gemm_ab16_c16 : VK_SH_gemm_ab16)
                         : (c16 ? VK_SH_gemm_c16 : VK_SH_gemm_f32);
  vk_dispatch(d, sh, args, 3, &pc, sizeof pc, gx, gy, gz);
}

/* Lavapipe ends a shader invocation's loops after 65535 iterations in all
 * (shaders/common.glsl): there a product is cut so that one invocation
 * walks at most LOOP_K inner steps (the batches of sc == 0 add up): by the
 * inner dimension, then by batch, each piece after the first adding into C
 * with beta 1 in the same order. */
#define LOOP_K 32768

static void gemm_limited(tp_backend_dev *d, const tp_gemm_args *g) {
  uint64_t per = (uint64_t)(g->sc == 0 ? g->batch : 1) * (uint64_t)MAX(g->k, 1);
  if (!d->loop_limited || per <= LOOP_K) {
    gemm_dispatch(d, g);
    return;
  }
  size_t es = dtype_16(g->ab_dtype) ? 2 : 4;
  tp_gemm_args p = *g;
  if (g->k > LOOP_K) {
    for (int k0 = 0; k0 < g->k; k0 += LOOP_K) {
      p.k = MIN(LOOP_K, g->k - k0);
      p.a.off = g->a.off + (size_t)(g->ta ? (int64_t)k0 * g->lda : k0) * es;
      p.b.off = g->b.off + (size_t)(g->tb ? k0 : (int64_t)k0 * g->ldb) * es;
      p.beta = k0 == 0 ? g->beta : 1.0f;
      gemm_limited(d, &p);
    }
    return;
  }
  int step = MAX(1, LOOP_K / MAX(g->k, 1)); /* sc == 0: batches per piece */
  for (int b0 = 0; b0 < g->batch; b0 += step) {
    p.batch = MIN(step, g->batch - b0);
    p.a.off = g->a.off + (size_t)((int64_t)b0 * g->sa) * es;
    p.b.off = g->b.off + (size_t)((int64_t)b0 * g->sb) * es;
    p.beta = b0 == 0 ? g->beta : 1.0f;
    gemm_dispatch(d, &p);
  }
}

/* -------------------------------------------------------------- embedding */

typedef struct {
  uint32_t n, h;
  int32_t row0, rows, vocab;
  uint32_t base;
} embed_pc;

static bool embed_args_ok(tp_backend_dev *d, const char *what, int n, int h, int row0, int rows,
                          int vocab) {
  if (n < 0 || h < 0 || row0 < 0 || rows < 0 || row0 > vocab - rows) {
    vk_set_error(d, TP_ERROR_INVALID_ARGUMENT,
                 "vulkan %s: rows [%d, %d) are not inside a table of %d rows (n=%d, h=%d)", what,
                 row0, row0 + rows, vocab, n, h);
    return false;
  }
  return count_ok(d, what, (int64_t)n * h);
}

static void vk_embedding_fwd(tp_backend_dev *d, tp_mem out, tp_mem table, tp_mem ids, int n, int h,
                             int row0, int rows, int vocab) {
  if (!embed_args_ok(d, "embedding_fwd", n, h, row0, rows, vocab) || n == 0 || h == 0) return;
  embed_pc pc = {(uint32_t)n, (uint32_t)h, row0, rows, vocab, 0};
  vk_arg a[3] = {F(out), F(rows > 0 ? table : out), I32(ids)};
  vk_dispatch(d, VK_SH_embed_fwd, a, 3, &pc, sizeof pc, groups_for((uint64_t)n * h, WG), 1, 1);
}

static void vk_embedding_bwd(tp_backend_dev *d, tp_mem dtable, tp_mem dout, tp_mem ids, int n,
                             int h, int row0, int rows, int vocab) {
  if (!embed_args_ok(d, "embedding_bwd", n, h, row0, rows, vocab) || n == 0 || h == 0) return;
  /* one invocation per column walks the ids in order: pieces of at most
   * LOOP_K ids (lavapipe's loop limit), in order */
  for (int i0 = 0; i0 < n; i0 += LOOP_K) {
    embed_pc pc = {(uint32_t)MIN(LOOP_K, n - i0), (uint32_t)h, row0, rows, vocab, (uint32_t)i0};
    tp_mem dpart = {dout.buf, dout.off + (size_t)i0 * h * 4}, ipart = {ids.buf, ids.off + (size_t)i0 * 4};
    vk_arg a[3] = {F(rows > 0 ? dtable : dpart), F(dpart), I32(ipart)};
    vk_dispatch(d, VK_SH_embed_bwd, a, 3, &pc, sizeof pc, groups_for((uint64_t)h, WG), 1, 1);
  }
}

/* ------------------------------------------------------- column sums */

typedef struct {
  uint32_t rows, cols, acc;
} colsum_pc;

static size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

/* Scratch bytes colsum() needs for rows x cols. */
static size_t colsum_scratch(uint32_t rows, uint32_t cols) {
  size_t total = 0;
  while (rows > RED_CHUNK) {
    rows = (rows + RED_CHUNK - 1) / RED_CHUNK;
    total += round_up((size_t)rows * cols * 4, 256);
  }
  return total;
}

/* out[c] += sum_r in[r, c], by chunks of RED_CHUNK rows in order; partial
 * rows go to scratch (colsum_scratch() bytes at tmp). */
static void colsum(tp_backend_dev *d, tp_mem out, tp_mem in, uint32_t rows, uint32_t cols,
                   tp_mem tmp) {
  while (rows > RED_CHUNK) {
    uint32_t chunks = (rows + RED_CHUNK - 1) / RED_CHUNK;
    colsum_pc pc = {rows, cols, 0};
    vk_arg a[2] = {F(tmp), F(in)};
    vk_dispatch(d, VK_SH_colsum, a, 2, &pc, sizeof pc, groups_for(cols, WG), MIN(chunks, 65535u),
                1);
    in = tmp;
    tmp.off += round_up((size_t)chunks * cols * 4, 256);
    rows = chunks;
  }
  colsum_pc pc = {rows, cols, 1};
  vk_arg a[2] = {F(out), F(in)};
  vk_dispatch(d, VK_SH_colsum, a, 2, &pc, sizeof pc, groups_for(cols, WG), 1, 1);
}

/* -------------------------------------------------------------- layernorm */

typedef struct {
  uint32_t rows, cols;
  float eps;
} ln_pc;

static void vk_layernorm_fwd(tp_backend_dev *d, tp_mem y, tp_mem mean, tp_mem rstd, tp_mem x,
                             tp_mem gamma, tp_mem beta, int rows, int cols, float eps) {
  if (rows <= 0 || cols <= 0 || !count_ok(d, "layernorm_fwd", (int64_t)rows * cols)) return;
  ln_pc pc = {(uint32_t)rows, (uint32_t)cols, eps};
  vk_arg a[6] = {F(y), F(mean), F(rstd), F(x), F(gamma), F(beta)};
  vk_dispatch(d, VK_SH_ln_fwd, a, 6, &pc, sizeof pc, row_groups(d, (uint64_t)rows, 64), 1, 1);
}

static void vk_layernorm_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dgamma, tp_mem dbeta, tp_mem dy,
                             tp_mem x, tp_mem mean, tp_mem rstd, tp_mem gamma, int rows, int cols) {
  if (rows <= 0 || cols <= 0 || !count_ok(d, "layernorm_bwd", (int64_t)rows * cols)) return;
  ln_pc pc = {(uint32_t)rows, (uint32_t)cols, 0.0f};
  vk_arg a[6] = {F(dx), F(dy), F(x), F(mean), F(rstd), F(gamma)};
  vk_dispatch(d, VK_SH_ln_bwd_dx, a, 6, &pc, sizeof pc, row_groups(d, (uint64_t)rows, 64), 1, 1);
  /* dgamma, dbeta: chunk partials [chunks, cols] each, then column sums */
  uint32_t chunks = ((uint32_t)rows + RED_CHUNK - 1) / RED_CHUNK;
  size_t part = round_up((size_t)chunks * cols * 4, 256), extra = colsum_scratch(chunks, cols);
  tp_mem s = vk_scratch(d, 2 * part + extra);
  if (!s.buf) return;
  tp_mem pg = s, pb = {s.buf, s.off + part}, tmp = {s.buf, s.off + 2 * part};
  vk_arg p[6] = {F(pg), F(pb), F(dy), F(x), F(mean), F(rstd)};
  vk_dispatch(d, VK_SH_ln_bwd_part, p, 6, &pc, sizeof pc, groups_for((uint32_t)cols, 64),
              MIN(chunks, 65535u), 1);
  colsum(d, dgamma, pg, chunks, (uint32_t)cols, tmp);
  colsum(d, dbeta, pb, chunks, (uint32_t)cols, tmp);
}

/* ---------------------------------------------------------------- softmax */

typedef struct {
  uint32_t nrows, per_batch, cols;
  float scale;
  uint32_t has_mask;
} softmax_pc;

static void vk_softmax_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, tp_mem mask, int batch, int heads,
                           int rows, int cols, float scale) {
  if (batch <= 0 || heads <= 0 || rows <= 0 || cols <= 0) return;
  int64_t nrows = (int64_t)batch * heads * rows;
  if (!count_ok(d, "softmax_fwd", nrows * cols)) return;
  softmax_pc pc = {(uint32_t)nrows, (uint32_t)(heads * rows), (uint32_t)cols, scale,
                   mask.buf != NULL};
  vk_arg a[3] = {F(y), F(x), I32(mask)};
  vk_dispatch(d, VK_SH_softmax_fwd, a, 3, &pc, sizeof pc, row_groups(d, (uint64_t)nrows, 64), 1, 1);
}

static void vk_softmax_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem y, int batch, int heads,
                           int rows, int cols, float scale) {
  if (batch <= 0 || heads <= 0 || rows <= 0 || cols <= 0) return;
  int64_t nrows = (int64_t)batch * heads * rows;
  if (!count_ok(d, "softmax_bwd", nrows * cols)) return;
  softmax_pc pc = {(uint32_t)nrows, (uint32_t)(heads * rows), (uint32_t)cols, scale, 0};
  vk_arg a[3] = {F(dx), F(dy), F(y)};
  vk_dispatch(d, VK_SH_softmax_bwd, a, 3, &pc, sizeof pc, row_groups(d, (uint64_t)nrows, 64), 1, 1);
}

/* ------------------------------------------------------------ elementwise */

typedef struct {
  uint32_t n;
  float alpha, p, scale;
  uint32_t seed_lo, seed_hi, off_lo, off_hi, cols, al;
} ew_pc;

/* Whether m's element offset within its binding is a multiple of 4 floats. */
static bool vec4_aligned(const tp_backend_dev *d, tp_mem m) {
  return !m.buf || (m.off % d->align) % 16 == 0;
}

/* One elementwise pipeline (shaders/ew.comp) over n elements: y, a, b (an
 * absent operand binds y). */
static void ew(tp_backend_dev *d, const char *what, vk_shader_id sh, tp_mem y, tp_mem a, tp_mem b,
               int64_t n, const ew_pc *extra) {
  if (n <= 0 || !count_ok(d, what, n)) return;
  ew_pc pc = extra ? *extra : (ew_pc){0};
  pc.n = (uint32_t)n;
  pc.al = vec4_aligned(d, y) && vec4_aligned(d, a) && vec4_aligned(d, b) &&
          (sh != VK_SH_ew_bias_add || pc.cols % 4 == 0);
  vk_arg args[3] = {F(y), F(a.buf ? a : y), F(b.buf ? b : y)};
  vk_dispatch(d, sh, args, 3, &pc, sizeof pc, groups_for(((uint64_t)n + 3) / 4, WG), 1, 1);
}

static const tp_mem NONE = {NULL, 0};

static void vk_gelu_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, int64_t n) {
  ew(d, "gelu_fwd", VK_SH_ew_gelu_fwd, y, x, NONE, n, NULL);
}
static void vk_gelu_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem x, int64_t n) {
  ew(d, "gelu_bwd", VK_SH_ew_gelu_bwd, dx, dy, x, n, NULL);
}
static void vk_relu_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, int64_t n) {
  ew(d, "relu_fwd", VK_SH_ew_relu_fwd, y, x, NONE, n, NULL);
}
static void vk_relu_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem x, int64_t n) {
  ew(d, "relu_bwd", VK_SH_ew_relu_bwd, dx, dy, x, n, NULL);
}
static void vk_tanh_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, int64_t n) {
  ew(d, "tanh_fwd", VK_SH_ew_tanh_fwd, y, x, NONE, n, NULL);
}
static void vk_tanh_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem y, int64_t n) {
  ew(d, "tanh_bwd", VK_SH_ew_tanh_bwd, dx, dy, y, n, NULL);
}
static void vk_add(tp_backend_dev *d, tp_mem y, tp_mem a, tp_mem b, int64_t n) {
  ew(d, "add", VK_SH_ew_add, y, a, b, n, NULL);
}
static void vk_axpy(tp_backend_dev *d, tp_mem y, tp_mem x, float alpha, int64_t n) {
  ew_pc pc = {.alpha = alpha};
  ew(d, "axpy", VK_SH_ew_axpy, y, x, NONE, n, &pc);
}

static void vk_bias_add(tp_backend_dev *d, tp_mem y, tp_mem bias, int64_t rows, int cols) {
  if (rows <= 0 || cols <= 0) return;
  ew_pc pc = {.cols = (uint32_t)cols};
  ew(d, "bias_add", VK_SH_ew_bias_add, y, bias, NONE, rows * cols, &pc);
}

static void vk_fill(tp_backend_dev *d, tp_mem y, float value, int64_t n) {
  if (n <= 0) return;
  if (y.off % 4 != 0) {
    vk_set_error(d, TP_ERROR_INVALID_ARGUMENT, "vulkan fill: offset %zu is not a multiple of 4",
                 y.off);
    return;
  }
  vk_fill_words(d, y, fbits(value), (size_t)n * 4);
}

static void dropout(tp_backend_dev *d, const char *what, vk_shader_id op, tp_mem y, tp_mem x, int64_t n,
                    float p, uint64_t seed, uint64_t offset) {
  if (!(p >= 0.0f && p <= 1.0f)) {
    vk_set_error(d, TP_ERROR_INVALID_ARGUMENT, "vulkan %s: p=%g is not in [0, 1]", what,
                 (double)p);
    return;
  }
  ew_pc pc = {
      .p = p,
      /* p == 1 drops everything (scale would be inf; 0 * inf must not happen) */
      .scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f,
      .seed_lo = (uint32_t)seed, .seed_hi = (uint32_t)(seed >> 32),
      .off_lo = (uint32_t)offset, .off_hi = (uint32_t)(offset >> 32),
  };
  ew(d, what, op, y, x, NONE, n, &pc);
}

static void vk_dropout_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, int64_t n, float p,
                           uint64_t seed, uint64_t offset) {
  dropout(d, "dropout_fwd", VK_SH_ew_dropout_fwd, y, x, n, p, seed, offset);
}
static void vk_dropout_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, int64_t n, float p,
                           uint64_t seed, uint64_t offset) {
  dropout(d, "dropout_bwd", VK_SH_ew_dropout_bwd, dx, dy, n, p, seed, offset);
}

/* ------------------------------------------------- permute, first token */

static void vk_permute_0213(tp_backend_dev *d, tp_mem y, tp_mem x, int d0, int d1, int d2, int d3,
                            float beta) {
  if (d0 <= 0 || d1 <= 0 || d2 <= 0 || d3 <= 0) return;
  int64_t n = (int64_t)d0 * d1 * d2 * d3;
  if (!count_ok(d, "permute_0213", n)) return;
  struct {
    uint32_t d0, d1, d2, d3;
    float beta;
  } pc = {(uint32_t)d0, (uint32_t)d1, (uint32_t)d2, (uint32_t)d3, beta};
  vk_arg a[2] = {F(y), F(x)};
  vk_dispatch(d, VK_SH_permute, a, 2, &pc, sizeof pc, groups_for((uint64_t)n, WG), 1, 1);
}

static void first_token(tp_backend_dev *d, tp_mem y, tp_mem x, int batch, int seq, int h,
                        uint32_t bwd) {
  if (batch <= 0 || seq <= 0 || h <= 0 ||
      !count_ok(d, "first_token", (int64_t)batch * seq * h))
    return;
  struct {
    uint32_t batch, seq, h, bwd;
  } pc = {(uint32_t)batch, (uint32_t)seq, (uint32_t)h, bwd};
  vk_arg a[2] = {F(y), F(x)};
  vk_dispatch(d, VK_SH_first_token, a, 2, &pc, sizeof pc, groups_for((uint64_t)batch * h, WG), 1,
              1);
}

static void vk_first_token_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, int batch, int seq, int h) {
  first_token(d, y, x, batch, seq, h, 0);
}
static void vk_first_token_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, int batch, int seq, int h) {
  first_token(d, dy, dx, batch, seq, h, 1);
}

/* ---------------------------------------------------------------- sums */

typedef struct {
  uint32_t n, stage;
  float scale;
  uint32_t acc;
} sum_pc;

/* out[0] = (acc ? out[0] : 0) + scale * sum of x[0..n), in a fixed order
 * (shaders/sumsq.comp, stage 1). */
static void sum_into(tp_backend_dev *d, tp_mem out, tp_mem x, uint32_t n, float scale, bool acc) {
  sum_pc pc = {n, 1, scale, acc};
  vk_arg a[2] = {F(out), F(x)};
  vk_dispatch(d, VK_SH_sumsq, a, 2, &pc, sizeof pc, 1, 1, 1);
}

/* ---------------------------------------------------------- cross-entropy */

typedef struct {
  uint32_t batch, classes;
} ce_pc;

static void vk_cross_entropy_fwd(tp_backend_dev *d, tp_mem loss, tp_mem logits, tp_mem labels,
                                 int batch, int classes) {
  if (batch <= 0 || classes <= 0 ||
      !count_ok(d, "cross_entropy_fwd", (int64_t)batch * classes))
    return;
  tp_mem rows = vk_scratch(d, (size_t)batch * 4); /* per-row losses, then their mean */
  if (!rows.buf) return;
  ce_pc pc = {(uint32_t)batch, (uint32_t)classes};
  vk_arg a[4] = {F(rows), F(logits), I32(labels), F(rows)};
  vk_dispatch(d, VK_SH_ce_fwd, a, 4, &pc, sizeof pc, row_groups(d, (uint64_t)batch, 64), 1, 1);
  sum_into(d, loss, rows, (uint32_t)batch, 1.0f / (float)batch, false);
}

static void vk_cross_entropy_bwd(tp_backend_dev *d, tp_mem dlogits, tp_mem dloss, tp_mem logits,
                                 tp_mem labels, int batch, int classes) {
  if (batch <= 0 || classes <= 0 ||
      !count_ok(d, "cross_entropy_bwd", (int64_t)batch * classes))
    return;
  ce_pc pc = {(uint32_t)batch, (uint32_t)classes};
  vk_arg a[4] = {F(dlogits), F(logits), I32(labels), F(dloss)};
  vk_dispatch(d, VK_SH_ce_bwd, a, 4, &pc, sizeof pc, row_groups(d, (uint64_t)batch, 64), 1, 1);
}

static void vk_count_correct(tp_backend_dev *d, tp_mem out, tp_mem logits, tp_mem labels,
                             int batch, int classes) {
  if (batch < 0 || classes <= 0 || !count_ok(d, "count_correct", (int64_t)batch * classes))
    return;
  if (batch == 0) {
    vk_fill_words(d, out, 0, 4);
    return;
  }
  tp_mem rows = vk_scratch(d, (size_t)batch * 4); /* per-row 1/0, then their sum */
  if (!rows.buf) return;
  ce_pc pc = {(uint32_t)batch, (uint32_t)classes};
  vk_arg a[4] = {F(rows), F(logits), I32(labels), F(rows)};
  vk_dispatch(d, VK_SH_count_correct, a, 4, &pc, sizeof pc, row_groups(d, (uint64_t)batch, 64), 1,
              1);
  sum_into(d, out, rows, (uint32_t)batch, 1.0f, false);
}

/* ------------------------------------------------------------- optimizer */

static void vk_adam_step(tp_backend_dev *d, tp_mem p, tp_mem g, tp_mem m, tp_mem v, int64_t n,
                         const tp_adam_args *a) {
  if (a->step < 1) {
    vk_set_error(d, TP_ERROR_INVALID_ARGUMENT, "vulkan adam_step: step %lld must start at 1",
                 (long long)a->step);
    return;
  }
  if (n <= 0 || !count_ok(d, "adam_step", n)) return;
  /* bias corrections in double once, as the CPU backend does */
  double t = (double)a->step;
  double c1 = 1.0 - pow(a->beta1, t), c2 = 1.0 - pow(a->beta2, t);
  float step, vscale, decay;
  if (a->mode == TP_ADAM_W) {
    step = (float)(a->lr / c1);
    vscale = (float)(1.0 / sqrt(c2));
    decay = (float)(1.0 - (double)a->lr * a->weight_decay);
  } else { /* Keras's Adam has no decoupled decay: weight_decay is ignored */
    step = (float)(a->lr * sqrt(c2) / c1);
    vscale = 1.0f;
    decay = 1.0f;
  }
  struct {
    uint32_t n;
    float b1, b2, gs, decay, step, vscale, eps;
    uint32_t has_ctl, al;
  } pc = {(uint32_t)n, a->beta1, a->beta2, a->grad_scale, decay, step, vscale, a->eps,
          a->ctl.buf != NULL,
          vec4_aligned(d, p) && vec4_aligned(d, g) && vec4_aligned(d, m) && vec4_aligned(d, v)};
  vk_arg args[5] = {F(p), F(g), F(m), F(v), F(a->ctl)};
  vk_dispatch(d, VK_SH_adam, args, 5, &pc, sizeof pc, groups_for(((uint64_t)n + 3) / 4, WG), 1,
              1);
}

static void vk_optim_control(tp_backend_dev *d, tp_mem ctl, const tp_control_args *a) {
  struct {
    float max_norm;
    uint32_t dynamic_scaling;
    float growth_interval, growth, backoff;
  } pc = {a->max_norm, a->dynamic, (float)a->growth_interval, a->growth, a->backoff};
  vk_arg args[1] = {F(ctl)};
  vk_dispatch(d, VK_SH_optim_control, args, 1, &pc, sizeof pc, 1, 1, 1);
}

/* ------------------------------------------------------------ reductions */

static void vk_sumsq(tp_backend_dev *d, tp_mem out, tp_mem x, int64_t n) {
  if (n <= 0 || !count_ok(d, "sumsq", n)) return;
  uint32_t chunks = (uint32_t)((n + SUM_CHUNK - 1) / SUM_CHUNK);
  tp_mem part = vk_scratch(d, (size_t)chunks * 4);
  if (!part.buf) return;
  sum_pc pc = {(uint32_t)n, 0, 1.0f, 0};
  vk_arg a1[2] = {F(part), F(x)};
  vk_dispatch(d, VK_SH_sumsq, a1, 2, &pc, sizeof pc, MIN(chunks, 65535u), 1, 1);
  sum_into(d, out, part, chunks, 1.0f, true);
}

static void vk_nonfinite(tp_backend_dev *d, tp_mem out, tp_mem x, int64_t n) {
  if (n <= 0 || !count_ok(d, "nonfinite", n)) return;
  struct {
    uint32_t n;
  } pc = {(uint32_t)n};
  vk_arg a[2] = {I32(out), F(x)};
  vk_dispatch(d, VK_SH_nonfinite, a, 2, &pc, sizeof pc, groups_for((uint64_t)n, WG), 1, 1);
}

static void vk_bias_grad(tp_backend_dev *d, tp_mem dbias, tp_mem dy, int64_t rows, int cols) {
  if (rows <= 0 || cols <= 0 || !count_ok(d, "bias_grad", rows * cols)) return;
  tp_mem tmp = {NULL, 0};
  size_t need = colsum_scratch((uint32_t)rows, (uint32_t)cols);
  if (need) {
    tmp = vk_scratch(d, need);
    if (!tmp.buf) return;
  }
  colsum(d, dbias, dy, (uint32_t)rows, (uint32_t)cols, tmp);
}

/* ------------------------------------------------------------------ cast */

static void vk_cast(tp_backend_dev *d, tp_mem y, tp_dtype ydt, tp_mem x, tp_dtype xdt, int64_t n) {
  if (!dtype_float(ydt) || !dtype_float(xdt) ||
      ((dtype_16(ydt) || dtype_16(xdt)) && xdt != ydt && !d->storage16)) {
    vk_set_error(d, TP_ERROR_UNAVAILABLE,
                 "vulkan cast: %d -> %d is not supported on this device (f32, bf16, f16%s)",
                 (int)xdt, (int)ydt, d->storage16 ? "" : " need 16-bit storage");
    return;
  }
  if (n <= 0 || !count_ok(d, "cast", n)) return;
  if (xdt == ydt) { /* a copy */
    size_t bytes = (size_t)n * (xdt == TP_F32 ? 4 : 2);
    GError *e = NULL;
    if (!vk_copy_queued(d, y, x, bytes, &e)) {
      vk_set_error(d, e->code, "vulkan cast: %s", e->message);
      g_error_free(e);
    }
    return;
  }
  struct {
    uint32_t n, xdt, ydt;
  } pc = {(uint32_t)n, (uint32_t)xdt, (uint32_t)ydt};
  vk_arg a[2] = {{y, ydt == TP_F32 ? 4u : 2u}, {x, xdt == TP_F32 ? 4u : 2u}};
  vk_dispatch(d, VK_SH_cast, a, 2, &pc, sizeof pc, groups_for((uint64_t)n, WG), 1, 1);
}

/* ------------------------------------------------------------- attention */


typedef struct {
  uint32_t B, nh, Tq, Tk, hd, ldq, ldkv;
  float scale, p, dscale;
  uint32_t seed_lo, seed_hi, off_lo, off_hi;
  uint32_t has_mask, has_bias, cdt, al;
} att_pc;

static bool att_setup(tp_backend_dev *d, const char *what, const tp_attention_args *a, tp_mem dout,
                      att_pc *pc) {
  if (a->batch <= 0 || a->heads <= 0 || a->q_len <= 0 || a->kv_len <= 0 || a->head_dim <= 0)
    return false;
  int64_t H = (int64_t)a->heads * a->head_dim;
  if (a->head_dim > ATT_MAX_HD || a->ld_q < H || a->ld_kv < H ||
      !(a->dropout >= 0.0f && a->dropout < 1.0f) || !dtype_float(a->compute) ||
      !count_ok(d, what, (int64_t)a->batch * a->q_len * a->ld_q) ||
      !count_ok(d, what, (int64_t)a->batch * a->kv_len * a->ld_kv) ||
      !count_ok(d, what, (int64_t)a->heads * a->q_len * a->kv_len)) {
    vk_set_error(d, TP_ERROR_INVALID_ARGUMENT,
                 "vulkan %s: unsupported arguments (head_dim %d, at most %d; ld_q %d and ld_kv %d "
                 ">= heads %d * head_dim; dropout %g in [0, 1); compute type %d)",
                 what, a->head_dim, ATT_MAX_HD, a->ld_q, a->ld_kv, a->heads, (double)a->dropout,
                 (int)a->compute);
    return false;
  }
  bool al = a->head_dim % 4 == 0 && a->ld_q % 4 == 0 && a->ld_kv % 4 == 0 &&
            vec4_aligned(d, a->q) && vec4_aligned(d, a->k) && vec4_aligned(d, a->v) &&
            (!dout.buf || vec4_aligned(d, dout));
  *pc = (att_pc){
      .B = (uint32_t)a->batch, .nh = (uint32_t)a->heads, .Tq = (uint32_t)a->q_len,
      .Tk = (uint32_t)a->kv_len, .hd = (uint32_t)a->head_dim, .ldq = (uint32_t)a->ld_q,
      .ldkv = (uint32_t)a->ld_kv, .scale = a->scale, .p = a->dropout,
      .dscale = 1.0f / (1.0f - a->dropout),
      .seed_lo = (uint32_t)a->seed, .seed_hi = (uint32_t)(a->seed >> 32),
      .off_lo = (uint32_t)a->offset, .off_hi = (uint32_t)(a->offset >> 32),
      .has_mask = a->mask.buf != NULL, .has_bias = a->bias.buf != NULL,
      .cdt = (uint32_t)a->compute, .al = al,
  };
  return true;
}

void vk_attention_fwd(tp_backend_dev *d, const tp_attention_args *a) {
  att_pc pc;
  if (!att_setup(d, "attention_fwd", a, (tp_mem){NULL, 0}, &pc)) return;
  vk_arg args[7] = {F(a->q), F(a->k), F(a->v), F(a->out), F(a->lse), I32(a->mask), F(a->bias)};
  uint32_t rows = pc.B * pc.nh * pc.Tq;
  vk_dispatch(d, VK_SH_attn_fwd, args, 7, &pc, sizeof pc, row_groups(d, rows, 64), 1, 1);
}

void vk_attention_bwd(tp_backend_dev *d, const tp_attention_args *a, tp_mem dout, tp_mem dq,
                      tp_mem dk, tp_mem dv, tp_mem dbias) {
  att_pc pc;
  if (!att_setup(d, "attention_bwd", a, dout, &pc)) return;
  uint32_t rows = pc.B * pc.nh * pc.Tq, keys = pc.B * pc.nh * pc.Tk;
  tp_mem dsum = vk_scratch(d, ((size_t)rows + pc.B) * 4);
  if (!dsum.buf) return;
  vk_arg args[13] = {F(a->q), F(a->k),  F(a->v),  F(a->out), F(a->lse), I32(a->mask), F(a->bias),
                     F(dout), F(dq),    F(dk),    F(dv),     F(dbias),  F(dsum)};
  vk_dispatch(d, VK_SH_attn_bwd_q, args, 13, &pc, sizeof pc, row_groups(d, rows, 64), 1, 1);
  vk_dispatch(d, VK_SH_attn_bwd_kv, args, 13, &pc, sizeof pc, row_groups(d, keys, 64), 1, 1);
  if (dbias.buf)
    vk_dispatch(d, VK_SH_attn_bwd_bias, args, 13, &pc, sizeof pc,
                groups_for((uint64_t)pc.nh * pc.Tq * pc.Tk, 64), 1, 1);
}

/* ------------------------------------------------------------------ table */

const tp_kernels vk_kernels_table = {
    .gemm = vk_gemm,
    .embedding_fwd = vk_embedding_fwd,
    .embedding_bwd = vk_embedding_bwd,
    .layernorm_fwd = vk_layernorm_fwd,
    .layernorm_bwd = vk_layernorm_bwd,
    .softmax_fwd = vk_softmax_fwd,
    .softmax_bwd = vk_softmax_bwd,
    .gelu_fwd = vk_gelu_fwd,
    .gelu_bwd = vk_gelu_bwd,
    .relu_fwd = vk_relu_fwd,
    .relu_bwd = vk_relu_bwd,
    .tanh_fwd = vk_tanh_fwd,
    .tanh_bwd = vk_tanh_bwd,
    .bias_add = vk_bias_add,
    .bias_grad = vk_bias_grad,
    .add = vk_add,
    .axpy = vk_axpy,
    .fill = vk_fill,
    .dropout_fwd = vk_dropout_fwd,
    .dropout_bwd = vk_dropout_bwd,
    .permute_0213 = vk_permute_0213,
    .first_token_fwd = vk_first_token_fwd,
    .first_token_bwd = vk_first_token_bwd,
    .cross_entropy_fwd = vk_cross_entropy_fwd,
    .cross_entropy_bwd = vk_cross_entropy_bwd,
    .count_correct = vk_count_correct,
    .adam_step = vk_adam_step,
    .optim_control = vk_optim_control,
    .sumsq = vk_sumsq,
    .nonfinite = vk_nonfinite,
    .cast = vk_cast,
};
