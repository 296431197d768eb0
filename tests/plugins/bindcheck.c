/* A test backend "bindcheck": the CPU backend behind a wall that refuses any
 * kernel argument spanning more than $TENSORPLUG_MAX_BINDING_BYTES from its
 * offset rounded down to 256 bytes — what a Vulkan device with that binding
 * limit could bind. The conformance suite runs on it with a 1 MiB limit:
 * the results prove core/kernels.c splits correctly, and this wall proves no
 * kernel ever saw an argument larger than the limit. Built for tests only. */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "tensorplug/backend_iface.h"
#include "tensorplug/error.h"
#include "tensorplug/plugin.h"

#define ALIGN 256

static const tp_backend_iface *cpu;
static uint64_t limit = UINT64_MAX;

struct tp_backend_dev {
  tp_backend_dev *inner;
  GError *error; /* the first argument over the limit */
};

static GQuark quark(void) { return g_quark_from_static_string("tensorplug-error-quark"); }

static bool load_cpu(GError **err) {
  if (cpu) return true;
  void *h = dlopen(TP_CPU_PLUGIN_PATH, RTLD_NOW | RTLD_LOCAL);
  tp_plugin_entry_fn entry = h ? (tp_plugin_entry_fn)dlsym(h, TP_PLUGIN_ENTRY_SYMBOL) : NULL;
  if (!entry) {
    g_set_error(err, quark(), TP_ERROR_UNAVAILABLE, "bindcheck: cannot load %s: %s",
                TP_CPU_PLUGIN_PATH, dlerror());
    return false;
  }
  cpu = entry()->iface;
  const char *e = g_getenv("TENSORPLUG_MAX_BINDING_BYTES");
  if (e && *e) limit = g_ascii_strtoull(e, NULL, 10);
  return true;
}

/* Records a failure when bytes from m do not fit one binding. */
static void arg(tp_backend_dev *d, const char *kernel, const char *name, tp_mem m,
                uint64_t bytes) {
  if (!m.buf || bytes == 0 || (m.off % ALIGN) + bytes <= limit || d->error) return;
  d->error = g_error_new(quark(), TP_ERROR_BACKEND, "bindcheck: %s argument %s spans %llu bytes "
                         "from offset %zu, over the %llu-byte binding limit", kernel, name,
                         (unsigned long long)bytes, m.off, (unsigned long long)limit);
}

static uint64_t mat(int64_t rows, int64_t cols, int64_t ld, int64_t stride, int batch, size_t es) {
  if (rows <= 0 || cols <= 0 || batch <= 0) return 0;
  uint64_t one = ((uint64_t)(rows - 1) * ld + cols) * es;
  return stride == 0 ? one : (uint64_t)(batch - 1) * stride * es + one;
}

static size_t dsize(tp_dtype t) { return t == TP_BF16 || t == TP_F16 ? 2 : 4; }

/* ---- kernels: check every argument, then run the CPU's ---- */

static void k_gemm(tp_backend_dev *d, const tp_gemm_args *g) {
  size_t as = dsize(g->ab_dtype), cs = dsize(g->c_dtype);
  if (g->k > 0) {
    arg(d, "gemm", "a", g->a, mat(g->ta ? g->k : g->m, g->ta ? g->m : g->k, g->lda, g->sa, g->batch, as));
    arg(d, "gemm", "b", g->b, mat(g->tb ? g->n : g->k, g->tb ? g->k : g->n, g->ldb, g->sb, g->batch, as));
  }
  arg(d, "gemm", "c", g->c, mat(g->m, g->n, g->ldc, g->sc, g->batch, cs));
  cpu->k.gemm(d->inner, g);
}
static void k_emb_fwd(tp_backend_dev *d, tp_mem out, tp_mem table, tp_mem ids, int n, int h,
                      int row0, int rows, int vocab) {
  arg(d, "embedding_fwd", "out", out, (uint64_t)n * h * 4);
  arg(d, "embedding_fwd", "table", table, (uint64_t)rows * h * 4);
  arg(d, "embedding_fwd", "ids", ids, (uint64_t)n * 4);
  cpu->k.embedding_fwd(d->inner, out, table, ids, n, h, row0, rows, vocab);
}
static void k_emb_bwd(tp_backend_dev *d, tp_mem dt, tp_mem dout, tp_mem ids, int n, int h,
                      int row0, int rows, int vocab) {
  arg(d, "embedding_bwd", "dtable", dt, (uint64_t)rows * h * 4);
  arg(d, "embedding_bwd", "dout", dout, (uint64_t)n * h * 4);
  arg(d, "embedding_bwd", "ids", ids, (uint64_t)n * 4);
  cpu->k.embedding_bwd(d->inner, dt, dout, ids, n, h, row0, rows, vocab);
}
static void k_ln_fwd(tp_backend_dev *d, tp_mem y, tp_mem mean, tp_mem rstd, tp_mem x, tp_mem g,
                     tp_mem b, int rows, int cols, float eps) {
  uint64_t all = (uint64_t)rows * cols * 4;
  arg(d, "layernorm_fwd", "y", y, all);
  arg(d, "layernorm_fwd", "x", x, all);
  arg(d, "layernorm_fwd", "mean", mean, (uint64_t)rows * 4);
  arg(d, "layernorm_fwd", "rstd", rstd, (uint64_t)rows * 4);
  arg(d, "layernorm_fwd", "gamma", g, (uint64_t)cols * 4);
  arg(d, "layernorm_fwd", "beta", b, (uint64_t)cols * 4);
  cpu->k.layernorm_fwd(d->inner, y, mean, rstd, x, g, b, rows, cols, eps);
}
static void k_ln_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dg, tp_mem db, tp_mem dy, tp_mem x,
                     tp_mem mean, tp_mem rstd, tp_mem g, int rows, int cols) {
  uint64_t all = (uint64_t)rows * cols * 4;
  arg(d, "layernorm_bwd", "dx", dx, all);
  arg(d, "layernorm_bwd", "dy", dy, all);
  arg(d, "layernorm_bwd", "x", x, all);
  arg(d, "layernorm_bwd", "mean", mean, (uint64_t)rows * 4);
  arg(d, "layernorm_bwd", "rstd", rstd, (uint64_t)rows * 4);
  arg(d, "layernorm_bwd", "dgamma", dg, (uint64_t)cols * 4);
  arg(d, "layernorm_bwd", "dbeta", db, (uint64_t)cols * 4);
  arg(d, "layernorm_bwd", "gamma", g, (uint64_t)cols * 4);
  cpu->k.layernorm_bwd(d->inner, dx, dg, db, dy, x, mean, rstd, g, rows, cols);
}
static void k_sm_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, tp_mem mask, int b, int h, int r,
                     int c, float scale) {
  uint64_t all = (uint64_t)b * h * r * c * 4;
  arg(d, "softmax_fwd", "y", y, all);
  arg(d, "softmax_fwd", "x", x, all);
  arg(d, "softmax_fwd", "mask", mask, (uint64_t)b * c * 4);
  cpu->k.softmax_fwd(d->inner, y, x, mask, b, h, r, c, scale);
}
static void k_sm_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem y, int b, int h, int r,
                     int c, float scale) {
  uint64_t all = (uint64_t)b * h * r * c * 4;
  arg(d, "softmax_bwd", "dx", dx, all);
  arg(d, "softmax_bwd", "dy", dy, all);
  arg(d, "softmax_bwd", "y", y, all);
  cpu->k.softmax_bwd(d->inner, dx, dy, y, b, h, r, c, scale);
}

/* unary (y, x, n) and binary-backward (dx, dy, x, n) elementwise kernels */
#define EW2(name)                                                                                  \
  static void k_##name(tp_backend_dev *d, tp_mem y, tp_mem x, int64_t n) {                         \
    arg(d, #name, "y", y, (uint64_t)n * 4);                                                        \
    arg(d, #name, "x", x, (uint64_t)n * 4);                                                        \
    cpu->k.name(d->inner, y, x, n);                                                                \
  }
#define EW3(name)                                                                                  \
  static void k_##name(tp_backend_dev *d, tp_mem a, tp_mem b, tp_mem c, int64_t n) {               \
    arg(d, #name, "0", a, (uint64_t)n * 4);                                                        \
    arg(d, #name, "1", b, (uint64_t)n * 4);                                                        \
    arg(d, #name, "2", c, (uint64_t)n * 4);                                                        \
    cpu->k.name(d->inner, a, b, c, n);                                                             \
  }
EW2(gelu_fwd)
EW3(gelu_bwd)
EW2(relu_fwd)
EW3(relu_bwd)
EW2(tanh_fwd)
EW3(tanh_bwd)
EW3(add)

static void k_bias_add(tp_backend_dev *d, tp_mem y, tp_mem bias, int64_t rows, int cols) {
  arg(d, "bias_add", "y", y, (uint64_t)rows * cols * 4);
  arg(d, "bias_add", "bias", bias, (uint64_t)cols * 4);
  cpu->k.bias_add(d->inner, y, bias, rows, cols);
}
static void k_bias_grad(tp_backend_dev *d, tp_mem db, tp_mem dy, int64_t rows, int cols) {
  arg(d, "bias_grad", "dbias", db, (uint64_t)cols * 4);
  arg(d, "bias_grad", "dy", dy, (uint64_t)rows * cols * 4);
  cpu->k.bias_grad(d->inner, db, dy, rows, cols);
}
static void k_axpy(tp_backend_dev *d, tp_mem y, tp_mem x, float alpha, int64_t n) {
  arg(d, "axpy", "y", y, (uint64_t)n * 4);
  arg(d, "axpy", "x", x, (uint64_t)n * 4);
  cpu->k.axpy(d->inner, y, x, alpha, n);
}
static void k_fill(tp_backend_dev *d, tp_mem y, float v, int64_t n) {
  arg(d, "fill", "y", y, (uint64_t)n * 4);
  cpu->k.fill(d->inner, y, v, n);
}
static void k_drop_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, int64_t n, float p, uint64_t seed,
                       uint64_t off) {
  arg(d, "dropout_fwd", "y", y, (uint64_t)n * 4);
  arg(d, "dropout_fwd", "x", x, (uint64_t)n * 4);
  cpu->k.dropout_fwd(d->inner, y, x, n, p, seed, off);
}
static void k_drop_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, int64_t n, float p, uint64_t seed,
                       uint64_t off) {
  arg(d, "dropout_bwd", "dx", dx, (uint64_t)n * 4);
  arg(d, "dropout_bwd", "dy", dy, (uint64_t)n * 4);
  cpu->k.dropout_bwd(d->inner, dx, dy, n, p, seed, off);
}
static void k_permute(tp_backend_dev *d, tp_mem y, tp_mem x, int d0, int d1, int d2, int d3,
                      float beta) {
  uint64_t all = (uint64_t)d0 * d1 * d2 * d3 * 4;
  arg(d, "permute_0213", "y", y, all);
  arg(d, "permute_0213", "x", x, all);
  cpu->k.permute_0213(d->inner, y, x, d0, d1, d2, d3, beta);
}
static uint64_t first_rows(int batch, int seq, int h) {
  return batch <= 0 ? 0 : ((uint64_t)(batch - 1) * seq + 1) * h * 4;
}
static void k_ft_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, int batch, int seq, int h) {
  arg(d, "first_token_fwd", "y", y, (uint64_t)batch * h * 4);
  arg(d, "first_token_fwd", "x", x, first_rows(batch, seq, h));
  cpu->k.first_token_fwd(d->inner, y, x, batch, seq, h);
}
static void k_ft_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, int batch, int seq, int h) {
  arg(d, "first_token_bwd", "dy", dy, (uint64_t)batch * h * 4);
  arg(d, "first_token_bwd", "dx", dx, first_rows(batch, seq, h));
  cpu->k.first_token_bwd(d->inner, dx, dy, batch, seq, h);
}
static void k_ce_fwd(tp_backend_dev *d, tp_mem loss, tp_mem z, tp_mem lab, int b, int c) {
  arg(d, "cross_entropy_fwd", "logits", z, (uint64_t)b * c * 4);
  arg(d, "cross_entropy_fwd", "labels", lab, (uint64_t)b * 4);
  cpu->k.cross_entropy_fwd(d->inner, loss, z, lab, b, c);
}
static void k_ce_bwd(tp_backend_dev *d, tp_mem dz, tp_mem dl, tp_mem z, tp_mem lab, int b, int c) {
  arg(d, "cross_entropy_bwd", "dlogits", dz, (uint64_t)b * c * 4);
  arg(d, "cross_entropy_bwd", "logits", z, (uint64_t)b * c * 4);
  arg(d, "cross_entropy_bwd", "labels", lab, (uint64_t)b * 4);
  cpu->k.cross_entropy_bwd(d->inner, dz, dl, z, lab, b, c);
}
static void k_correct(tp_backend_dev *d, tp_mem out, tp_mem z, tp_mem lab, int b, int c) {
  arg(d, "count_correct", "logits", z, (uint64_t)b * c * 4);
  arg(d, "count_correct", "labels", lab, (uint64_t)b * 4);
  cpu->k.count_correct(d->inner, out, z, lab, b, c);
}
static void k_adam(tp_backend_dev *d, tp_mem p, tp_mem g, tp_mem m, tp_mem v, int64_t n,
                   const tp_adam_args *a) {
  arg(d, "adam_step", "p", p, (uint64_t)n * 4);
  arg(d, "adam_step", "g", g, (uint64_t)n * 4);
  arg(d, "adam_step", "m", m, (uint64_t)n * 4);
  arg(d, "adam_step", "v", v, (uint64_t)n * 4);
  cpu->k.adam_step(d->inner, p, g, m, v, n, a);
}
static void k_control(tp_backend_dev *d, tp_mem ctl, const tp_control_args *a) {
  cpu->k.optim_control(d->inner, ctl, a);
}
static void k_sumsq(tp_backend_dev *d, tp_mem out, tp_mem x, int64_t n) {
  arg(d, "sumsq", "x", x, (uint64_t)n * 4);
  cpu->k.sumsq(d->inner, out, x, n);
}
static void k_nonfinite(tp_backend_dev *d, tp_mem out, tp_mem x, int64_t n) {
  arg(d, "nonfinite", "x", x, (uint64_t)n * 4);
  cpu->k.nonfinite(d->inner, out, x, n);
}
static void k_cast(tp_backend_dev *d, tp_mem y, tp_dtype yt, tp_mem x, tp_dtype xt, int64_t n) {
  arg(d, "cast", "y", y, (uint64_t)n * dsize(yt));
  arg(d, "cast", "x", x, (uint64_t)n * dsize(xt));
  cpu->k.cast(d->inner, y, yt, x, xt, n);
}
static void k_drop_fwd_keep(tp_backend_dev *d, tp_mem y, tp_mem keep, tp_mem x, int64_t n,
                            float p, uint64_t seed, uint64_t off) {
  arg(d, "dropout_fwd_keep", "y", y, (uint64_t)n * 4);
  arg(d, "dropout_fwd_keep", "keep", keep, (uint64_t)n);
  arg(d, "dropout_fwd_keep", "x", x, (uint64_t)n * 4);
  cpu->dropout_fwd_keep(d->inner, y, keep, x, n, p, seed, off);
}
static void k_drop_bwd_keep(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem keep, int64_t n,
                            float p) {
  arg(d, "dropout_bwd_keep", "dx", dx, (uint64_t)n * 4);
  arg(d, "dropout_bwd_keep", "dy", dy, (uint64_t)n * 4);
  arg(d, "dropout_bwd_keep", "keep", keep, (uint64_t)n);
  cpu->dropout_bwd_keep(d->inner, dx, dy, keep, n, p);
}

static uint64_t rows_b(uint64_t n, uint64_t ld, uint64_t cols) {
  return n == 0 ? 0 : ((n - 1) * ld + cols) * 4;
}
static void att_args(tp_backend_dev *d, const char *k, const tp_attention_args *a) {
  uint64_t B = (uint64_t)a->batch, Tq = (uint64_t)a->q_len, Tk = (uint64_t)a->kv_len;
  uint64_t nh = (uint64_t)a->heads, H = nh * (uint64_t)a->head_dim;
  arg(d, k, "q", a->q, rows_b(B * Tq, (uint64_t)a->ld_q, H));
  arg(d, k, "k", a->k, rows_b(B * Tk, (uint64_t)a->ld_kv, H));
  arg(d, k, "v", a->v, rows_b(B * Tk, (uint64_t)a->ld_kv, H));
  arg(d, k, "out", a->out, B * Tq * H * 4);
  arg(d, k, "lse", a->lse, B * nh * Tq * 4);
  arg(d, k, "mask", a->mask, B * Tk * 4);
  arg(d, k, "bias", a->bias, nh * Tq * Tk * 4);
}
static void k_att_fwd(tp_backend_dev *d, const tp_attention_args *a) {
  att_args(d, "attention_fwd", a);
  cpu->attention_fwd(d->inner, a);
}
static void k_att_bwd(tp_backend_dev *d, const tp_attention_args *a, tp_mem dout, tp_mem dq,
                      tp_mem dk, tp_mem dv, tp_mem dbias) {
  uint64_t B = (uint64_t)a->batch, Tq = (uint64_t)a->q_len, Tk = (uint64_t)a->kv_len;
  uint64_t nh = (uint64_t)a->heads, H = nh * (uint64_t)a->head_dim;
  att_args(d, "attention_bwd", a);
  arg(d, "attention_bwd", "dout", dout, B * Tq * H * 4);
  arg(d, "attention_bwd", "dq", dq, rows_b(B * Tq, (uint64_t)a->ld_q, H));
  arg(d, "attention_bwd", "dk", dk, rows_b(B * Tk, (uint64_t)a->ld_kv, H));
  arg(d, "attention_bwd", "dv", dv, rows_b(B * Tk, (uint64_t)a->ld_kv, H));
  arg(d, "attention_bwd", "dbias", dbias, nh * Tq * Tk * 4);
  cpu->attention_bwd(d->inner, a, dout, dq, dk, dv, dbias);
}

static void k_bias_gelu_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, tp_mem bias, int64_t rows,
                            int cols) {
  uint64_t n = (uint64_t)rows * (uint64_t)cols * 4;
  arg(d, "bias_gelu_fwd", "y", y, n);
  arg(d, "bias_gelu_fwd", "x", x, n);
  arg(d, "bias_gelu_fwd", "bias", bias, (uint64_t)cols * 4);
  cpu->bias_gelu_fwd(d->inner, y, x, bias, rows, cols);
}
static void k_bias_gelu_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dbias, tp_mem dy, tp_mem pre,
                            int64_t rows, int cols) {
  uint64_t n = (uint64_t)rows * (uint64_t)cols * 4;
  arg(d, "bias_gelu_bwd", "dx", dx, n);
  arg(d, "bias_gelu_bwd", "dy", dy, n);
  arg(d, "bias_gelu_bwd", "pre", pre, n);
  arg(d, "bias_gelu_bwd", "dbias", dbias, (uint64_t)cols * 4);
  cpu->bias_gelu_bwd(d->inner, dx, dbias, dy, pre, rows, cols);
}
static void add_ln_check(tp_backend_dev *d, const char *k, const tp_add_ln_args *a) {
  uint64_t n = (uint64_t)a->rows * (uint64_t)a->cols, r = (uint64_t)a->rows * 4;
  arg(d, k, "y", a->y, n * 4);
  arg(d, k, "s", a->s, n * 4);
  arg(d, k, "a", a->a, n * 4);
  arg(d, k, "b", a->b, n * 4);
  if (a->p > 0.0f) arg(d, k, "keep", a->keep, n);
  arg(d, k, "mean", a->mean, r);
  arg(d, k, "rstd", a->rstd, r);
  arg(d, k, "gamma", a->gamma, (uint64_t)a->cols * 4);
  arg(d, k, "beta", a->beta, (uint64_t)a->cols * 4);
}
static void k_add_ln_fwd(tp_backend_dev *d, const tp_add_ln_args *a) {
  add_ln_check(d, "add_layernorm_fwd", a);
  cpu->add_layernorm_fwd(d->inner, a);
}
static void k_add_ln_bwd(tp_backend_dev *d, const tp_add_ln_args *a, tp_mem dy, tp_mem da,
                         tp_mem db, tp_mem dg, tp_mem dbe, bool acc_a, bool acc_b) {
  uint64_t n = (uint64_t)a->rows * (uint64_t)a->cols * 4;
  add_ln_check(d, "add_layernorm_bwd", a);
  arg(d, "add_layernorm_bwd", "dy", dy, n);
  arg(d, "add_layernorm_bwd", "da", da, n);
  arg(d, "add_layernorm_bwd", "db", db, n);
  cpu->add_layernorm_bwd(d->inner, a, dy, da, db, dg, dbe, acc_a, acc_b);
}

/* ---- device, buffers ---- */

static int b_probe(tp_device_info *infos, int max, GError **err) {
  if (!load_cpu(err)) return 0;
  int n = cpu->probe(infos, max, err);
  if (n > 0 && max > 0) {
    g_strlcpy(infos[0].name, "cpu behind a binding-limit wall", sizeof infos[0].name);
    infos[0].max_binding_bytes = limit == UINT64_MAX ? 0 : limit;
    infos[0].offset_align = ALIGN;
  }
  return n;
}
static tp_backend_dev *b_open(int index, int threads, GError **err) {
  if (!load_cpu(err)) return NULL;
  tp_backend_dev *inner = cpu->open(index, threads, err);
  if (!inner) return NULL;
  tp_backend_dev *d = g_new0(tp_backend_dev, 1);
  d->inner = inner;
  return d;
}
static void b_close(tp_backend_dev *d) {
  cpu->close(d->inner);
  g_clear_error(&d->error);
  g_free(d);
}
static tp_buffer *b_alloc(tp_backend_dev *d, size_t bytes, GError **err) {
  return cpu->buffer_alloc(d->inner, bytes, err);
}
static void b_free(tp_backend_dev *d, tp_buffer *b) { cpu->buffer_free(d->inner, b); }
static void *b_host(tp_buffer *b) { return cpu->buffer_host_ptr(b); }
static bool b_upload(tp_backend_dev *d, tp_mem dst, const void *src, size_t n, GError **err) {
  return cpu->upload(d->inner, dst, src, n, err);
}
static bool b_sync(tp_backend_dev *d, GError **err) {
  bool inner_ok = cpu->synchronize(d->inner, err);
  if (d->error) {
    if (inner_ok) g_propagate_error(err, d->error);
    else g_error_free(d->error);
    d->error = NULL;
    return false;
  }
  return inner_ok;
}
static bool b_download(tp_backend_dev *d, void *dst, tp_mem src, size_t n, GError **err) {
  return b_sync(d, err) && cpu->download(d->inner, dst, src, n, err);
}
static bool b_copy(tp_backend_dev *d, tp_mem dst, tp_mem src, size_t n, GError **err) {
  return cpu->copy(d->inner, dst, src, n, err);
}

static const tp_backend_iface iface = {
    .struct_size = sizeof(tp_backend_iface),
    .probe = b_probe, .open = b_open, .close = b_close, .buffer_alloc = b_alloc,
    .buffer_free = b_free, .buffer_host_ptr = b_host, .upload = b_upload,
    .download = b_download, .copy = b_copy, .synchronize = b_sync,
    .k = {.gemm = k_gemm, .embedding_fwd = k_emb_fwd, .embedding_bwd = k_emb_bwd,
          .layernorm_fwd = k_ln_fwd, .layernorm_bwd = k_ln_bwd, .softmax_fwd = k_sm_fwd,
          .softmax_bwd = k_sm_bwd, .gelu_fwd = k_gelu_fwd, .gelu_bwd = k_gelu_bwd,
          .relu_fwd = k_relu_fwd, .relu_bwd = k_relu_bwd, .tanh_fwd = k_tanh_fwd,
          .tanh_bwd = k_tanh_bwd, .bias_add = k_bias_add, .bias_grad = k_bias_grad,
          .add = k_add, .axpy = k_axpy, .fill = k_fill, .dropout_fwd = k_drop_fwd,
          .dropout_bwd = k_drop_bwd, .permute_0213 = k_permute, .first_token_fwd = k_ft_fwd,
          .first_token_bwd = k_ft_bwd, .cross_entropy_fwd = k_ce_fwd,
          .cross_entropy_bwd = k_ce_bwd, .count_correct = k_correct, .adam_step = k_adam,
          .optim_control = k_control, .sumsq = k_sumsq, .nonfinite = k_nonfinite,
          .cast = k_cast},
    .dropout_fwd_keep = k_drop_fwd_keep,
    .dropout_bwd_keep = k_drop_bwd_keep,
    .attention_fwd = k_att_fwd,
    .attention_bwd = k_att_bwd,
    .bias_gelu_fwd = k_bias_gelu_fwd,
    .bias_gelu_bwd = k_bias_gelu_bwd,
    .add_layernorm_fwd = k_add_ln_fwd,
    .add_layernorm_bwd = k_add_ln_bwd,
};

static const tp_plugin plugin = {
    .abi_version = TP_PLUGIN_ABI_VERSION,
    .kind = TP_PLUGIN_BACKEND,
    .name = "bindcheck",
    .version = "test",
    .iface = &iface,
};

TP_PLUGIN_EXPORT const tp_plugin *tp_plugin_entry(void);
TP_PLUGIN_EXPORT const tp_plugin *tp_plugin_entry(void) { return &plugin; }
