/* core/params.c — parameters in four contiguous buffers: values, gradients,
 * Adam m and v, each laid out the same (parameter i at offsets[i] floats). */
#include "tensorplug/params.h"

#include <math.h>
#include <string.h>

#include "tensorplug/error.h"
#include "tensorplug/philox.h"

#include "tensorplug/kernels.h"

#define PARAM_ALIGN 16 /* floats: the flat (checkpoint) layout's 64-byte slices */

typedef struct param_decl {
  char *name;
  int ndim;
  int64_t shape[TP_MAX_DIMS];
  int64_t numel, offset; /* offset: in floats, in the flat layout */
  guint group;           /* the device buffer group holding it */
  int64_t dev_offset;    /* in floats, inside its group's buffers */
  tp_init init;
  float std;
  int flags;
  tp_tensor value, grad; /* persistent views into the buffers */
} param_decl;

/* Parameters live in groups of four buffers (values, grads, m, v) of the
 * same layout, each group at most the device's largest buffer: one group on
 * the CPU, several where buffers are small. */
typedef struct param_group {
  tp_buffer *buf[4];
  int64_t floats;
} param_group;

struct tp_params {
  GPtrArray *decls; /* param_decl* */
  GHashTable *by_name;
  int64_t total; /* floats of the flat layout, padded */
  tp_backend *be;
  GArray *groups; /* param_group */
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
  p->groups = g_array_new(FALSE, TRUE, sizeof(param_group));
  return p;
}

static param_group *group_at(tp_params *p, guint g) {
  return &g_array_index(p->groups, param_group, g);
}

void tp_params_free(tp_params *p) {
  if (!p) return;
  for (guint g = 0; g < p->groups->len; g++)
    for (int i = 0; i < 4; i++) tp_backend_free(p->be, group_at(p, g)->buf[i]);
  g_array_unref(p->groups);
  g_hash_table_unref(p->by_name);
  g_ptr_array_unref(p->decls);
  g_free(p);
}

int tp_params_declare(tp_params *p, const char *name, int ndim, const int64_t *shape,
                      tp_init init, float std, int flags) {
  g_return_val_if_fail(!tp_params_materialized(p) && ndim >= 1 && ndim <= TP_MAX_DIMS, -1);
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
  tp_mem m = {group_at(p, d->group)->buf[which], (size_t)d->dev_offset * sizeof(float)};
  return m;
}

bool tp_params_set_f32(tp_params *p, tp_ctx *ctx, guint i, const float *src, GError **err) {
  (void)ctx;
  param_decl *d = g_ptr_array_index(p->decls, i);
  return tp_backend_upload(p->be, slice(p, 0, d), src, (size_t)d->numel * sizeof(float), err);
}

bool tp_params_get_f32(tp_params *p, tp_ctx *ctx, guint i, float *dst, GError **err) {
  if (!tp_ctx_take_error(ctx, err)) return false;
  param_decl *d = g_ptr_array_index(p->decls, i);
  return tp_backend_download(p->be, dst, slice(p, 0, d), (size_t)d->numel * sizeof(float), err);
}

bool tp_params_reinit(tp_params *p, tp_ctx *ctx, guint i, uint64_t seed, GError **err) {
  param_decl *d = g_ptr_array_index(p->decls, i);
  float *host = g_malloc((size_t)d->numel * sizeof(float) + 1);
  init_values(d, seed, host);
  bool ok = tp_params_set_f32(p, ctx, i, host, err);
  g_free(host);
  return ok;
}

/* Places every parameter in a group: in declaration order, each slice at
 * the device's offset alignment, a new group when the next would pass the
 * device's largest buffer. */
static bool plan_groups(tp_params *p, GError **err) {
  const tp_device_info *in = &p->be->info;
  int64_t align = MAX((int64_t)PARAM_ALIGN, (int64_t)in->offset_align / (int64_t)sizeof(float));
  uint64_t cap = in->max_alloc_bytes ? in->max_alloc_bytes / sizeof(float) : UINT64_MAX;
  param_group cur = {0};
  for (guint i = 0; i < p->decls->len; i++) {
    param_decl *d = g_ptr_array_index(p->decls, i);
    int64_t padded = (d->numel + align - 1) / align * align;
    if ((uint64_t)padded > cap) {
      g_set_error(err, TP_ERROR, TP_ERROR_OUT_OF_MEMORY, "parameter \"%s\" takes %.1f MiB, more "
                  "than the largest buffer %s (%s) can hold (%.1f MiB)", d->name,
                  (double)d->numel * 4 / 1048576.0, p->be->name, in->name,
                  (double)in->max_alloc_bytes / 1048576.0);
      return false;
    }
    if ((uint64_t)(cur.floats + padded) > cap) {
      g_array_append_val(p->groups, cur);
      cur.floats = 0;
    }
    d->group = p->groups->len;
    d->dev_offset = cur.floats;
    cur.floats += padded;
  }
  if (cur.floats == 0) cur.floats = align;
  g_array_append_val(p->groups, cur);
  return true;
}

bool tp_params_materialize(tp_params *p, tp_ctx *ctx, uint64_t seed, GError **err) {
  g_return_val_if_fail(!tp_params_materialized(p), false);
  p->be = tp_ctx_backend(ctx);
  if (!plan_groups(p, err)) return false;
  static const char *const what[4] = {"parameters", "gradients", "Adam first moments",
                                      "Adam second moments"};
  for (guint g = 0; g < p->groups->len; g++) {
    param_group *gr = group_at(p, g);
    size_t bytes = (size_t)gr->floats * sizeof(float);
    for (int w = 0; w < 4; w++) {
      gr->buf[w] = tp_backend_alloc(p->be, bytes, err);
      if (!gr->buf[w]) {
        g_prefix_error(err, "cannot allocate %.1f MiB of %s: ", (double)bytes / 1048576.0,
                       what[w]);
        return false;
      }
      /* zero everything, padding included, so whole-buffer kernels see zeros */
      tp_mem all = {gr->buf[w], 0};
      tp_k_fill(p->be, all, 0.0f, gr->floats);
    }
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

bool tp_params_materialized(const tp_params *p) { return p->groups->len > 0; }
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

int64_t tp_params_flat_floats(const tp_params *p) { return p->total > 0 ? p->total : PARAM_ALIGN; }

/* Whole group buffers cross the host boundary; each parameter's slice moves
 * between its group's place and its flat place. */
bool tp_params_read_flat(tp_params *p, tp_ctx *ctx, int which, float *dst, GError **err) {
  if (!tp_ctx_take_error(ctx, err)) return false;
  memset(dst, 0, (size_t)tp_params_flat_floats(p) * sizeof(float));
  bool ok = true;
  for (guint g = 0; ok && g < p->groups->len; g++) {
    param_group *gr = group_at(p, g);
    float *h = g_malloc((size_t)gr->floats * sizeof(float));
    tp_mem all = {gr->buf[which], 0};
    ok = tp_backend_download(p->be, h, all, (size_t)gr->floats * sizeof(float), err);
    for (guint i = 0; ok && i < p->decls->len; i++) {
      param_decl *d = g_ptr_array_index(p->decls, i);
      if (d->group == g)
        memcpy(dst + d->offset, h + d->dev_offset, (size_t)d->numel * sizeof(float));
    }
    g_free(h);
  }
  return ok;
}

bool tp_params_write_flat(tp_params *p, tp_ctx *ctx, int which, const float *src, GError **err) {
  (void)ctx;
  bool ok = true;
  for (guint g = 0; ok && g < p->groups->len; g++) {
    param_group *gr = group_at(p, g);
    float *h = g_malloc0((size_t)gr->floats * sizeof(float));
    for (guint i = 0; i < p->decls->len; i++) {
      param_decl *d = g_ptr_array_index(p->decls, i);
      if (d->group == g)
        memcpy(h + d->dev_offset, src + d->offset, (size_t)d->numel * sizeof(float));
    }
    tp_mem all = {gr->buf[which], 0};
    ok = tp_backend_upload(p->be, all, h, (size_t)gr->floats * sizeof(float), err);
    g_free(h);
  }
  return ok;
}

int tp_params_buffers(tp_params *p, int which, tp_mem *mems, int64_t *floats, int max) {
  for (guint g = 0; g < p->groups->len && (int)g < max; g++) {
    mems[g] = (tp_mem){group_at(p, g)->buf[which], 0};
    floats[g] = group_at(p, g)->floats;
  }
  return (int)p->groups->len;
}

/* fill / sumsq / adam over every group's buffers */
static void fill_all(tp_params *p, int which) {
  for (guint g = 0; g < p->groups->len; g++) {
    tp_mem all = {group_at(p, g)->buf[which], 0};
    tp_k_fill(p->be, all, 0.0f, group_at(p, g)->floats);
  }
}

void tp_params_zero_grad(tp_params *p, tp_ctx *ctx) {
  (void)ctx;
  fill_all(p, 1);
}

void tp_params_reset_optimizer(tp_params *p, tp_ctx *ctx) {
  (void)ctx;
  fill_all(p, 2);
  fill_all(p, 3);
}

void tp_params_grad_sumsq(tp_params *p, tp_ctx *ctx, tp_mem out) {
  (void)ctx;
  for (guint g = 0; g < p->groups->len; g++) {
    tp_mem all = {group_at(p, g)->buf[1], 0};
    tp_k_sumsq(p->be, out, all, group_at(p, g)->floats);
  }
}

bool tp_params_grad_norm(tp_params *p, tp_ctx *ctx, double *norm, GError **err) {
  int64_t one[1] = {1};
  tp_tensor *acc = tp_tensor_zeros(ctx, TP_F32, 1, one);
  if (!acc) return tp_ctx_take_error(ctx, err);
  tp_params_grad_sumsq(p, ctx, acc->mem);
  float s = 0.0f;
  if (!tp_tensor_to_host(ctx, acc, &s, err)) return false;
  *norm = sqrt((double)s);
  return true;
}

void tp_params_adam_step(tp_params *p, tp_ctx *ctx, const tp_adam_args *args) {
  (void)ctx;
  for (guint g = 0; g < p->groups->len; g++) {
    param_group *gr = group_at(p, g);
    tp_mem m[4];
    for (int w = 0; w < 4; w++) m[w] = (tp_mem){gr->buf[w], 0};
    tp_k_adam_step(p->be, m[0], m[1], m[2], m[3], gr->floats, args);
  }
}
