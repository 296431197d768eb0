/* core/params.c — parameters in four contiguous buffers: values, gradients,
 * Adam m and v, each laid out the same (parameter i at offsets[i] floats). */
#include "tensorplug/params.h"

#include <math.h>
#include <string.h>

#include "tensorplug/error.h"
#include "tensorplug/philox.h"

#define PARAM_ALIGN 16 /* floats: 64-byte aligned slices */

typedef struct param_decl {
  char *name;
  int ndim;
  int64_t shape[TP_MAX_DIMS];
  int64_t numel, offset; /* in floats */
  tp_init init;
  float std;
  int flags;
  tp_tensor value, grad; /* persistent views into the buffers */
} param_decl;

struct tp_params {
  GPtrArray *decls; /* param_decl* */
  GHashTable *by_name;
  int64_t total; /* floats, padded */
  tp_backend *be;
  tp_buffer *buf[4]; /* values, grads, m, v */
};

static void decl_free(gpointer p) {
  param_decl *d = p;
  g_free(d->name);
  g_free(d);
}

tp_params *tp_params_new(void) {
  tp_params *p = g_new0(tp_params, 1);
  p->decls = g_ptr_array_new_with_free_func(decl_free);
  p->by_name = g_hash_table_new(g_str_hash, g_str_equal);
  return p;
}

void tp_params_free(tp_params *p) {
  if (!p) return;
  for (int i = 0; i < 4; i++)
    if (p->buf[i]) p->be->iface->buffer_free(p->be->dev, p->buf[i]);
  g_hash_table_unref(p->by_name);
  g_ptr_array_unref(p->decls);
  g_free(p);
}

int tp_params_declare(tp_params *p, const char *name, int ndim, const int64_t *shape,
                      tp_init init, float std, int flags) {
  g_return_val_if_fail(!p->buf[0] && ndim >= 1 && ndim <= TP_MAX_DIMS, -1);
  g_return_val_if_fail(!g_hash_table_contains(p->by_name, name), -1);
  param_decl *d = g_new0(param_decl, 1);
  d->name = g_strdup(name);
  d->ndim = ndim;
  d->numel = 1;
  for (int i = 0; i < ndim; i++) {
    d->shape[i] = shape[i];
    d->numel *= shape[i];
  }
  d->offset = p->total;
  p->total += (d->numel + PARAM_ALIGN - 1) / PARAM_ALIGN * PARAM_ALIGN;
  d->init = init;
  d->std = std;
  d->flags = flags;
  g_ptr_array_add(p->decls, d);
  g_hash_table_insert(p->by_name, d->name, d);
  return (int)p->decls->len - 1;
}

void tp_params_declare_linear(tp_params *p, const char *name, int64_t out, int64_t in, float std,
                              int flags) {
  char n[256];
  int64_t w[2] = {out, in}, b[1] = {out};
  g_snprintf(n, sizeof n, "%s.weight", name);
  tp_params_declare(p, n, 2, w, TP_INIT_NORMAL, std, flags);
  g_snprintf(n, sizeof n, "%s.bias", name);
  tp_params_declare(p, n, 1, b, TP_INIT_ZEROS, 0, flags);
}

void tp_params_declare_layernorm(tp_params *p, const char *name, int64_t n_, int flags) {
  char n[256];
  int64_t s[1] = {n_};
  g_snprintf(n, sizeof n, "%s.weight", name);
  tp_params_declare(p, n, 1, s, TP_INIT_ONES, 0, flags);
  g_snprintf(n, sizeof n, "%s.bias", name);
  tp_params_declare(p, n, 1, s, TP_INIT_ZEROS, 0, flags);
}

/* Host values of one parameter's initialiser. Each element draws from the
 * Philox stream at its flat offset, so values do not depend on the order or
 * number of other parameters' draws. */
static void init_values(const param_decl *d, uint64_t seed, float *dst) {
  switch (d->init) {
  case TP_INIT_ZEROS:
    memset(dst, 0, (size_t)d->numel * sizeof(float));
    return;
  case TP_INIT_ONES:
    for (int64_t j = 0; j < d->numel; j++) dst[j] = 1.0f;
    return;
  case TP_INIT_NORMAL:
    /* One Philox call gives 4 words = two Box-Muller pairs = 4 normals for
     * the 4 elements of an aligned group (offsets are multiples of 16). */
    for (int64_t j = 0; j < d->numel; j += 4) {
      uint64_t g = (uint64_t)(d->offset + j) / 4;
      uint32_t ctr[4] = {(uint32_t)g, (uint32_t)(g >> 32), 0u, 0x6e6f726du /* "norm" */};
      uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
      tp_philox4x32_10(ctr, key);
      float z[4];
      for (int k = 0; k < 4; k += 2) {
        double u1 = ((double)ctr[k] + 1.0) / 4294967296.0; /* (0, 1] */
        double u2 = (double)ctr[k + 1] / 4294967296.0;
        double r = sqrt(-2.0 * log(u1));
        z[k] = (float)(r * cos(2.0 * G_PI * u2));
        z[k + 1] = (float)(r * sin(2.0 * G_PI * u2));
      }
      for (int k = 0; k < 4 && j + k < d->numel; k++) dst[j + k] = z[k] * d->std;
    }
    return;
  }
}

static tp_mem slice(tp_params *p, int which, const param_decl *d) {
  tp_mem m = {p->buf[which], (size_t)d->offset * sizeof(float)};
  return m;
}

bool tp_params_set_f32(tp_params *p, tp_ctx *ctx, guint i, const float *src, GError **err) {
  (void)ctx;
  param_decl *d = g_ptr_array_index(p->decls, i);
  return p->be->iface->upload(p->be->dev, slice(p, 0, d), src, (size_t)d->numel * sizeof(float),
                              err);
}

bool tp_params_get_f32(tp_params *p, tp_ctx *ctx, guint i, float *dst, GError **err) {
  if (!tp_ctx_check(ctx, err)) return false;
  param_decl *d = g_ptr_array_index(p->decls, i);
  return p->be->iface->download(p->be->dev, dst, slice(p, 0, d),
                                (size_t)d->numel * sizeof(float), err);
}

bool tp_params_reinit(tp_params *p, tp_ctx *ctx, guint i, uint64_t seed, GError **err) {
  param_decl *d = g_ptr_array_index(p->decls, i);
  float *host = g_malloc((size_t)d->numel * sizeof(float) + 1);
  init_values(d, seed, host);
  bool ok = tp_params_set_f32(p, ctx, i, host, err);
  g_free(host);
  return ok;
}

bool tp_params_materialize(tp_params *p, tp_ctx *ctx, uint64_t seed, GError **err) {
  g_return_val_if_fail(!p->buf[0], false);
  p->be = tp_ctx_backend(ctx);
  size_t bytes = (size_t)(p->total > 0 ? p->total : PARAM_ALIGN) * sizeof(float);
  static const char *const what[4] = {"parameters", "gradients", "Adam first moments",
                                      "Adam second moments"};
  for (int w = 0; w < 4; w++) {
    p->buf[w] = p->be->iface->buffer_alloc(p->be->dev, bytes, err);
    if (!p->buf[w]) {
      g_prefix_error(err, "cannot allocate %.1f MiB of %s on %s: ", (double)bytes / 1048576.0,
                     what[w], p->be->name);
      return false;
    }
    /* zero everything, padding included, so whole-buffer kernels see zeros */
    tp_mem all = {p->buf[w], 0};
    tp_ctx_kernels(ctx)->fill(p->be->dev, all, 0.0f, (int64_t)(bytes / sizeof(float)));
  }
  for (guint i = 0; i < p->decls->len; i++) {
    param_decl *d = g_ptr_array_index(p->decls, i);
    d->value = (tp_tensor){.dtype = TP_F32, .ndim = d->ndim, .mem = slice(p, 0, d),
                           .requires_grad = true, .name = d->name};
    memcpy(d->value.shape, d->shape, sizeof d->shape);
    d->grad = d->value;
    d->grad.mem = slice(p, 1, d);
    d->grad.requires_grad = false;
    d->value.grad = &d->grad;
    if (d->init != TP_INIT_ZEROS && !tp_params_reinit(p, ctx, i, seed, err)) return false;
  }
  return true;
}

bool tp_params_materialized(const tp_params *p) { return p->buf[0] != NULL; }
guint tp_params_count(const tp_params *p) { return p->decls->len; }

int64_t tp_params_numel(const tp_params *p) {
  int64_t n = 0;
  for (guint i = 0; i < p->decls->len; i++) n += ((param_decl *)g_ptr_array_index(p->decls, i))->numel;
  return n;
}

tp_tensor *tp_params_at(tp_params *p, guint i) {
  return i < p->decls->len ? &((param_decl *)g_ptr_array_index(p->decls, i))->value : NULL;
}

int tp_params_flags(const tp_params *p, guint i) {
  return ((param_decl *)g_ptr_array_index(p->decls, i))->flags;
}

tp_tensor *tp_params_find(tp_params *p, const char *name) {
  param_decl *d = g_hash_table_lookup(p->by_name, name);
  return d ? &d->value : NULL;
}

int tp_params_index(const tp_params *p, const char *name) {
  for (guint i = 0; i < p->decls->len; i++)
    if (strcmp(((param_decl *)g_ptr_array_index(p->decls, i))->name, name) == 0) return (int)i;
  return -1;
}

tp_tensor *tp_params_get(tp_params *p, tp_ctx *ctx, const char *fmt, ...) {
  if (!tp_ctx_ok(ctx)) return NULL;
  va_list ap;
  va_start(ap, fmt);
  char name[256];
  g_vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  tp_tensor *t = tp_params_find(p, name);
  if (!t)
    tp_ctx_fail(ctx, g_error_new(TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                                 "the model has no parameter \"%s\" (a model plugin bug)", name));
  return t;
}

tp_mem tp_params_buffer(tp_params *p, int which) {
  tp_mem m = {p->buf[which], 0};
  return m;
}

int64_t tp_params_buffer_floats(const tp_params *p) { return p->total > 0 ? p->total : PARAM_ALIGN; }

void tp_params_zero_grad(tp_params *p, tp_ctx *ctx) {
  tp_ctx_kernels(ctx)->fill(p->be->dev, tp_params_buffer(p, 1), 0.0f, p->total);
}

void tp_params_reset_optimizer(tp_params *p, tp_ctx *ctx) {
  tp_ctx_kernels(ctx)->fill(p->be->dev, tp_params_buffer(p, 2), 0.0f, p->total);
  tp_ctx_kernels(ctx)->fill(p->be->dev, tp_params_buffer(p, 3), 0.0f, p->total);
}

bool tp_params_grad_norm(tp_params *p, tp_ctx *ctx, double *norm, GError **err) {
  int64_t one[1] = {1};
  tp_tensor *acc = tp_tensor_zeros(ctx, TP_F32, 1, one);
  if (!acc) return tp_ctx_check(ctx, err);
  tp_ctx_kernels(ctx)->sumsq(p->be->dev, acc->mem, tp_params_buffer(p, 1), p->total);
  float s = 0.0f;
  if (!tp_tensor_to_host(ctx, acc, &s, err)) return false;
  *norm = sqrt((double)s);
  return true;
}

bool tp_params_grad_nonfinite(tp_params *p, tp_ctx *ctx, bool *bad, GError **err) {
  int64_t one[1] = {1};
  tp_tensor *flag = tp_tensor_zeros(ctx, TP_I32, 1, one);
  if (!flag) return tp_ctx_check(ctx, err);
  tp_ctx_kernels(ctx)->nonfinite(p->be->dev, flag->mem, tp_params_buffer(p, 1), p->total);
  int32_t f = 0;
  if (!tp_tensor_to_host(ctx, flag, &f, err)) return false;
  *bad = f != 0;
  return true;
}

void tp_params_adam_step(tp_params *p, tp_ctx *ctx, const tp_adam_args *args) {
  tp_ctx_kernels(ctx)->adam_step(p->be->dev, tp_params_buffer(p, 0), tp_params_buffer(p, 1),
                                 tp_params_buffer(p, 2), tp_params_buffer(p, 3), p->total, args);
}
