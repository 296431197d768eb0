/* plugins/cpu/cpu_attention.c — the fused attention slots of the CPU backend
 * (semantics: tp_attention_args in tensorplug/backend_iface.h).
 *
 * One (batch entry, head) at a time per thread: its scores live in a Tq x Tk
 * tile of the thread's scratch (1 MiB at 512 x 512), never in a [B, nh, T, T]
 * tensor of the step, so a step keeps no attention matrix at all (the
 * composed path keeps scores, probabilities, the dropped-out probabilities
 * and their mask per layer: about 325 MB per layer of DistilBERT at batch 8 x
 * length 512). Backward recomputes the scores and takes the probabilities
 * from lse; the dropout mask comes again from the Philox counters.
 *
 * Keys after the last unmasked one (the padding of dynamic batches) have
 * probability exactly 0: the products skip them. The products themselves are
 * cpu_sgemm calls on the thread (operands rounded to the compute type first,
 * as the gemm slot rounds them, so the result is the composed path's up to
 * the order of f32 sums). */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "cpu_kernels.h"
#include "tensorplug/error.h"

static inline float *f32(tp_mem m) { return (float *)((char *)m.buf->ptr + m.off); }
static inline const int32_t *i32(tp_mem m) { return (const int32_t *)((char *)m.buf->ptr + m.off); }

/* Floats rounded up to a cache line, so every scratch tile starts aligned. */
static size_t line(size_t floats) { return (floats + 15) / 16 * 16; }

typedef struct att_tiles {
  float *s, *pd, *dp, *r;    /* Tq x Tk: P, P after dropout, dP, a rounded operand */
  float *q, *k, *v, *dout;   /* rounded copies of this head's Q, K, V, dO (half compute) */
  float *u;                  /* Tk uniforms */
} att_tiles;

static size_t tiles_floats(const tp_attention_args *a) {
  size_t tt = line((size_t)a->q_len * a->kv_len), qd = line((size_t)a->q_len * a->head_dim),
         kd = line((size_t)a->kv_len * a->head_dim);
  return 4 * tt + 2 * qd + 2 * kd + line((size_t)a->kv_len);
}

static att_tiles tiles_at(const tp_attention_args *a, float *base) {
  size_t tt = line((size_t)a->q_len * a->kv_len), qd = line((size_t)a->q_len * a->head_dim),
         kd = line((size_t)a->kv_len * a->head_dim);
  att_tiles t;
  t.s = base;
  t.pd = t.s + tt;
  t.dp = t.pd + tt;
  t.r = t.dp + tt;
  t.q = t.r + tt;
  t.dout = t.q + qd;
  t.k = t.dout + qd;
  t.v = t.k + kd;
  t.u = t.v + kd;
  return t;
}

static bool check_args(tp_backend_dev *d, const tp_attention_args *a, const char *what) {
  int64_t H = (int64_t)a->heads * a->head_dim;
  if (a->batch < 0 || a->heads < 1 || a->head_dim < 1 || a->q_len < 0 || a->kv_len < 0 ||
      a->ld_q < H || a->ld_kv < H) {
    cpu_set_error(d, TP_ERROR_INVALID_ARGUMENT, "cpu %s: bad shape B=%d nh=%d hd=%d Tq=%d Tk=%d "
                  "ld_q=%d ld_kv=%d", what, a->batch, a->heads, a->head_dim, a->q_len, a->kv_len,
                  a->ld_q, a->ld_kv);
    return false;
  }
  if (!(a->dropout >= 0.0f && a->dropout < 1.0f)) {
    cpu_set_error(d, TP_ERROR_INVALID_ARGUMENT, "cpu %s: dropout %g is not in [0, 1)", what,
                  (double)a->dropout);
    return false;
  }
  if (a->compute != TP_F32 && a->compute != TP_BF16 && a->compute != TP_F16) {
    cpu_set_error(d, TP_ERROR_UNAVAILABLE, "cpu %s: compute type %d is not supported", what,
                  (int)a->compute);
    return false;
  }
  return true;
}

/* The keys of batch entry b that can have nonzero probability: [0, *n);
 * *dense says every one of them is unmasked (padding only at the end, as a
 * tokenizer pads), so the rows need no mask. FALSE when every key is
 * masked (then P = 1/Tk over all of them). */
static bool live_keys(const tp_attention_args *a, int b, int *n, bool *dense) {
  int Tk = a->kv_len;
  *dense = true;
  if (!a->mask.buf) {
    *n = Tk;
    return true;
  }
  const int32_t *m = i32(a->mask) + (int64_t)b * Tk;
  int last = -1, live = 0;
  for (int j = 0; j < Tk; j++)
    if (m[j] != 0) last = j, live++;
  *n = last < 0 ? Tk : last + 1;
  *dense = live == last + 1;
  return last >= 0;
}

/* Row i's scores (already scale * q.k) -> probabilities over the n live keys,
 * with the bias added and masked keys at exactly 0; returns lse. */
CPU_INLINE float softmax_live_impl(float *restrict s, const float *restrict bias,
                                   const int32_t *restrict mask, int n) {
  if (bias)
    for (int j = 0; j < n; j++) s[j] += bias[j];
  if (mask)
    for (int j = 0; j < n; j++) s[j] = mask[j] != 0 ? s[j] : -INFINITY;
  float mx = lanes_max(s, n);
  for (int j = 0; j < n; j++) s[j] = exp_fast(s[j] - mx); /* masked: exp(-inf) = 0 */
  float sum = lanes_sum(s, n);
  float inv = 1.0f / sum;
  for (int j = 0; j < n; j++) s[j] *= inv;
  return mx + logf(sum);
}
CPU_VARIANTS_RET_ZMM(float, softmax_live,
                 (float *restrict s, const float *restrict bias, const int32_t *restrict mask, int n),
                 (s, bias, mask, n))

/* The same probabilities from the forward's lse (backward). */
CPU_INLINE void probs_from_lse_impl(float *restrict s, const float *restrict bias,
                                    const int32_t *restrict mask, int n, float lse) {
  if (bias)
    for (int j = 0; j < n; j++) s[j] += bias[j];
  for (int j = 0; j < n; j++) {
    float e = exp_fast(s[j] - lse);
    s[j] = !mask || mask[j] != 0 ? e : 0.0f;
  }
}
CPU_VARIANTS(probs_from_lse,
             (float *restrict s, const float *restrict bias, const int32_t *restrict mask, int n, float lse),
             (s, bias, mask, n, lse))

/* pd = keep ? p * scale : 0 with keep = u >= prob. */
CPU_INLINE void drop_row_impl(float *restrict pd, const float *restrict p,
                              const float *restrict u, int n, float prob, float scale) {
  for (int j = 0; j < n; j++) pd[j] = u[j] >= prob ? p[j] * scale : 0.0f;
}
CPU_VARIANTS(drop_row,
             (float *restrict pd, const float *restrict p, const float *restrict u, int n, float prob, float scale),
             (pd, p, u, n, prob, scale))

/* dP = (kept ? dP' * scale : 0) (kept: pd != 0, see below); D = sum_j P dP;
 * dS = P (dP - D), written over dp. */
CPU_INLINE void dscores_row_impl(float *restrict dp, const float *restrict p,
                                 const float *restrict pd, int n, float scale, bool dropped) {
  if (dropped)
    for (int j = 0; j < n; j++) dp[j] = pd[j] != 0.0f ? dp[j] * scale : 0.0f;
  float dot = lanes_dot(dp, p, n);
  for (int j = 0; j < n; j++) dp[j] = p[j] * (dp[j] - dot);
}
CPU_VARIANTS(dscores_row,
             (float *restrict dp, const float *restrict p, const float *restrict pd, int n, float scale, bool dropped),
             (dp, p, pd, n, scale, dropped))

/* The operand at x (rows x cols, row stride ld) as the products see it: x
 * itself in f32, else a rounded dense copy in buf. */
static const float *operand(const tp_attention_args *a, float *buf, const float *x, int64_t ld,
                            int rows, int cols, int64_t *out_ld) {
  if (a->compute == TP_F32) {
    *out_ld = ld;
    return x;
  }
  cpu_round_matrix(buf, cols, x, ld, rows, cols, a->compute);
  *out_ld = cols;
  return buf;
}

/* ---- dropout masks kept from forward to backward ----
 * The mask of P is the Philox stream at the call's counters: backward could
 * draw it again, but that doubles the random numbers (the biggest cost after
 * the products). Forward keeps it as bits (one 64-bit-aligned row per query:
 * a thread owns whole rows), backward takes it when the arguments match and
 * draws it otherwise. Bounded: the oldest masks go first. */
#define MASKS_KEPT 64

typedef struct att_mask {
  uint64_t seed, offset;
  int batch, heads, q_len, kv_len;
  float p;
  int row_words;
  uint64_t *bits;
} att_mask;

static void mask_free(gpointer m) {
  if (!m) return;
  g_free(((att_mask *)m)->bits);
  g_free(m);
}

void cpu_attention_state_free(tp_backend_dev *d) {
  if (d->att_masks) g_queue_free_full(d->att_masks, mask_free);
  d->att_masks = NULL;
}

static bool mask_matches(const att_mask *m, const tp_attention_args *a) {
  return m->seed == a->seed && m->offset == a->offset && m->batch == a->batch &&
         m->heads == a->heads && m->q_len == a->q_len && m->kv_len == a->kv_len &&
         m->p == a->dropout;
}

/* A new mask for a forward's arguments (NULL when out of memory: then
 * backward draws the stream again). */
static att_mask *mask_new(tp_backend_dev *d, const tp_attention_args *a) {
  size_t rows = (size_t)a->batch * a->heads * a->q_len;
  int words = (a->kv_len + 63) / 64;
  uint64_t *bits = g_try_malloc(sizeof(uint64_t) * rows * (size_t)words);
  if (!bits) return NULL;
  if (!d->att_masks) d->att_masks = g_queue_new();
  while (g_queue_get_length(d->att_masks) >= MASKS_KEPT)
    mask_free(g_queue_pop_head(d->att_masks));
  att_mask *m = g_new(att_mask, 1);
  *m = (att_mask){.seed = a->seed, .offset = a->offset, .batch = a->batch, .heads = a->heads,
                  .q_len = a->q_len, .kv_len = a->kv_len, .p = a->dropout, .row_words = words,
                  .bits = bits};
  g_queue_push_tail(d->att_masks, m);
  return m;
}

/* The kept mask for backward's arguments, taken out of the queue (the
 * caller frees it), or NULL. */
static att_mask *mask_take(tp_backend_dev *d, const tp_attention_args *a) {
  if (!d->att_masks) return NULL;
  for (GList *l = d->att_masks->tail; l; l = l->prev)
    if (mask_matches(l->data, a)) {
      att_mask *m = l->data;
      g_queue_delete_link(d->att_masks, l);
      return m;
    }
  return NULL;
}

static uint64_t *mask_row(const att_mask *m, int b, int h, int i) {
  return m->bits + ((((size_t)b * m->heads + h) * m->q_len + i) * (size_t)m->row_words);
}

/* Row bits from the uniforms (kept j: u >= p), j < n. */
static void bits_from_u(uint64_t *row, const float *u, int n, float p) {
  for (int w = 0; w * 64 < n; w++) {
    uint64_t v = 0;
    int end = MIN(64, n - w * 64);
    for (int j = 0; j < end; j++) v |= (uint64_t)(u[w * 64 + j] >= p) << j;
    row[w] = v;
  }
}

/* The uniforms' stand-in from kept bits: 1 (kept) or 0 (dropped, p > 0). */
static void u_from_bits(float *u, const uint64_t *row, int n) {
  for (int j = 0; j < n; j++) u[j] = (float)((row[j >> 6] >> (j & 63)) & 1u);
}

/* Counter of P[b, h, i, 0] in the composed dropout's numbering. */
static uint64_t counter(const tp_attention_args *a, int b, int h, int i) {
  return a->offset + (((uint64_t)b * a->heads + h) * a->q_len + i) * a->kv_len;
}

/* Scores of (b, h) into t->s as Tq x n rows: scale * Q K^T. */
static void scores(tp_backend_dev *d, const tp_attention_args *a, const att_tiles *t, int b, int h,
                   int n, const float **qo, int64_t *ldq, const float **ko, int64_t *ldk) {
  int Tq = a->q_len, hd = a->head_dim;
  const float *q = f32(a->q) + (int64_t)b * Tq * a->ld_q + (int64_t)h * hd;
  const float *k = f32(a->k) + (int64_t)b * a->kv_len * a->ld_kv + (int64_t)h * hd;
  *qo = operand(a, t->q, q, a->ld_q, Tq, hd, ldq);
  *ko = operand(a, t->k, k, a->ld_kv, n, hd, ldk);
  cpu_sgemm(d, false, true, Tq, n, hd, a->scale, *qo, *ldq, *ko, *ldk, 0.0f, t->s, n);
}

static void fwd_unit(tp_backend_dev *d, const tp_attention_args *a, const att_tiles *t, int b,
                     int h, const att_mask *keep) {
  int Tq = a->q_len, Tk = a->kv_len, hd = a->head_dim, n;
  int64_t H = (int64_t)a->heads * hd;
  bool dense, live = live_keys(a, b, &n, &dense);
  float *lse = f32(a->lse) + ((int64_t)b * a->heads + h) * Tq;
  const int32_t *mask = a->mask.buf && !dense ? i32(a->mask) + (int64_t)b * Tk : NULL;
  if (live) {
    const float *qo, *ko;
    int64_t ldq, ldk;
    scores(d, a, t, b, h, n, &qo, &ldq, &ko, &ldk);
    for (int i = 0; i < Tq; i++) {
      const float *bias = a->bias.buf ? f32(a->bias) + ((int64_t)h * Tq + i) * Tk : NULL;
      lse[i] = softmax_live(t->s + (int64_t)i * n, bias, mask, n);
    }
  } else { /* every key masked: PyTorch's finfo.min fill makes P uniform */
    for (int64_t i = 0; i < (int64_t)Tq * n; i++) t->s[i] = 1.0f / (float)Tk;
    for (int i = 0; i < Tq; i++) lse[i] = logf((float)Tk);
  }
  const float *p = t->s;
  if (a->dropout > 0.0f) {
    float scale = 1.0f / (1.0f - a->dropout);
    for (int i = 0; i < Tq; i++) {
      cpu_philox_uniforms(t->u, a->seed, counter(a, b, h, i), n);
      if (keep) bits_from_u(mask_row(keep, b, h, i), t->u, n, a->dropout);
      drop_row(t->pd + (int64_t)i * n, t->s + (int64_t)i * n, t->u, n, a->dropout, scale);
    }
    p = t->pd;
  }
  const float *v = f32(a->v) + (int64_t)b * Tk * a->ld_kv + (int64_t)h * hd;
  int64_t ldp, ldv;
  const float *po = operand(a, t->r, p, n, Tq, n, &ldp);
  const float *vo = operand(a, t->v, v, a->ld_kv, n, hd, &ldv);
  float *out = f32(a->out) + (int64_t)b * Tq * H + (int64_t)h * hd;
  cpu_sgemm(d, false, false, Tq, hd, n, 1.0f, po, ldp, vo, ldv, 0.0f, out, H);
}

/* dbias is summed over the batch: each head's entries in batch order. */
static void bwd_unit(tp_backend_dev *d, const tp_attention_args *a, const att_tiles *t, int b,
                     int h, const float *dout_all, float *dq_all, float *dk_all, float *dv_all,
                     float *dbias, const att_mask *keep) {
  int Tq = a->q_len, Tk = a->kv_len, hd = a->head_dim, n;
  int64_t H = (int64_t)a->heads * hd;
  bool dense, live = live_keys(a, b, &n, &dense);
  const float *lse = f32(a->lse) + ((int64_t)b * a->heads + h) * Tq;
  const int32_t *mask = a->mask.buf && !dense ? i32(a->mask) + (int64_t)b * Tk : NULL;
  const float *qo, *ko;
  int64_t ldq, ldk;
  const float *q = f32(a->q) + (int64_t)b * Tq * a->ld_q + (int64_t)h * hd;
  const float *k = f32(a->k) + (int64_t)b * Tk * a->ld_kv + (int64_t)h * hd;
  if (live) {
    scores(d, a, t, b, h, n, &qo, &ldq, &ko, &ldk);
    for (int i = 0; i < Tq; i++) {
      const float *bias = a->bias.buf ? f32(a->bias) + ((int64_t)h * Tq + i) * Tk : NULL;
      probs_from_lse(t->s + (int64_t)i * n, bias, mask, n, lse[i]);
    }
  } else {
    qo = operand(a, t->q, q, a->ld_q, Tq, hd, &ldq);
    ko = operand(a, t->k, k, a->ld_kv, n, hd, &ldk);
    for (int64_t i = 0; i < (int64_t)Tq * n; i++) t->s[i] = 1.0f / (float)Tk;
  }
  /* P after dropout. A kept entry with P > 0 stays > 0 (scale >= 1), and a
   * dropped one, or P == 0, contributes nothing below either way: so
   * pd != 0 serves as the keep mask. */
  bool dropped = a->dropout > 0.0f;
  float scale = dropped ? 1.0f / (1.0f - a->dropout) : 1.0f;
  const float *pd = t->s;
  if (dropped) {
    for (int i = 0; i < Tq; i++) {
      if (keep) /* the forward's mask: 1 >= p keeps, 0 < p drops */
        u_from_bits(t->u, mask_row(keep, b, h, i), n);
      else
        cpu_philox_uniforms(t->u, a->seed, counter(a, b, h, i), n);
      drop_row(t->pd + (int64_t)i * n, t->s + (int64_t)i * n, t->u, n, a->dropout, scale);
    }
    pd = t->pd;
  }
  const float *v = f32(a->v) + (int64_t)b * Tk * a->ld_kv + (int64_t)h * hd;
  const float *dout = dout_all + (int64_t)b * Tq * H + (int64_t)h * hd;
  int64_t ldo, ldv, ldp;
  const float *doo = operand(a, t->dout, dout, H, Tq, hd, &ldo);
  const float *vo = operand(a, t->v, v, a->ld_kv, n, hd, &ldv);
  const float *po = operand(a, t->r, pd, n, Tq, n, &ldp);
  /* dV [n, hd] += P'^T dO */
  cpu_sgemm(d, true, false, n, hd, Tq, 1.0f, po, ldp, doo, ldo, 1.0f,
            dv_all + (int64_t)b * Tk * a->ld_kv + (int64_t)h * hd, a->ld_kv);
  /* dP' [Tq, n] = dO V^T, then dS = P (dP - sum_j P dP) in place */
  cpu_sgemm(d, false, true, Tq, n, hd, 1.0f, doo, ldo, vo, ldv, 0.0f, t->dp, n);
  for (int i = 0; i < Tq; i++)
    dscores_row(t->dp + (int64_t)i * n, t->s + (int64_t)i * n, pd + (int64_t)i * n, n, scale,
                dropped);
  if (dbias)
    for (int i = 0; i < Tq; i++) {
      float *db = dbias + ((int64_t)h * Tq + i) * Tk;
      const float *ds = t->dp + (int64_t)i * n;
      for (int j = 0; j < n; j++) db[j] += ds[j];
    }
  int64_t lds;
  const float *dso = operand(a, t->r, t->dp, n, Tq, n, &lds);
  /* dQ [Tq, hd] += scale dS K;  dK [n, hd] += scale dS^T Q */
  cpu_sgemm(d, false, false, Tq, hd, n, a->scale, dso, lds, ko, ldk, 1.0f,
            dq_all + (int64_t)b * Tq * a->ld_q + (int64_t)h * hd, a->ld_q);
  cpu_sgemm(d, true, false, n, hd, Tq, a->scale, dso, lds, qo, ldq, 1.0f,
            dk_all + (int64_t)b * Tk * a->ld_kv + (int64_t)h * hd, a->ld_kv);
}

/* Per-thread tiles; NULL (error recorded) when out of memory. */
static float *thread_tiles(tp_backend_dev *d, const tp_attention_args *a, int threads) {
  return cpu_scratch(d, CPU_SCRATCH_ATTENTION, sizeof(float) * tiles_floats(a) * (size_t)threads);
}

void cpu_attention_fwd(tp_backend_dev *d, const tp_attention_args *a) {
  if (!check_args(d, a, "attention_fwd")) return;
  int units = a->batch * a->heads;
  if (units == 0 || a->q_len == 0) return;
  if (a->kv_len == 0) {
    cpu_set_error(d, TP_ERROR_INVALID_ARGUMENT, "cpu attention_fwd: no keys (Tk = 0)");
    return;
  }
  int threads = MIN(d->threads, units);
  float *base = thread_tiles(d, a, threads);
  if (!base) return;
  size_t per = tiles_floats(a);
  att_mask *keep = a->dropout > 0.0f ? mask_new(d, a) : NULL;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int u = 0; u < units; u++) {
    att_tiles t = tiles_at(a, base + per * (size_t)omp_get_thread_num());
    fwd_unit(d, a, &t, u / a->heads, u % a->heads, keep);
  }
}

void cpu_attention_bwd(tp_backend_dev *d, const tp_attention_args *a, tp_mem dout, tp_mem dq,
                       tp_mem dk, tp_mem dv, tp_mem dbias) {
  if (!check_args(d, a, "attention_bwd")) return;
  int units = a->batch * a->heads;
  if (units == 0 || a->q_len == 0 || a->kv_len == 0) return;
  float *db = dbias.buf && a->bias.buf ? f32(dbias) : NULL;
  /* with dbias, a thread owns whole heads (batch entries in order) */
  int par = db ? a->heads : units;
  int threads = MIN(d->threads, par);
  float *base = thread_tiles(d, a, threads);
  if (!base) return;
  size_t per = tiles_floats(a);
  const float *go = f32(dout);
  float *gq = f32(dq), *gk = f32(dk), *gv = f32(dv);
  att_mask *keep = a->dropout > 0.0f ? mask_take(d, a) : NULL;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int u = 0; u < par; u++) {
    att_tiles t = tiles_at(a, base + per * (size_t)omp_get_thread_num());
    if (db)
      for (int b = 0; b < a->batch; b++) bwd_unit(d, a, &t, b, u, go, gq, gk, gv, db, keep);
    else
      bwd_unit(d, a, &t, u / a->heads, u % a->heads, go, gq, gk, gv, NULL, keep);
  }
  mask_free(keep);
}
