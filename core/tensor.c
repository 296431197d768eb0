/* core/tensor.c — the execution context: activation arena, tape, autograd. */
#include "tensorplug/tensor.h"

#include <string.h>

#include "tensorplug/error.h"

#define ARENA_ALIGN 256
#define ARENA_MIN (16u << 20)

struct tp_ctx {
  tp_backend *be;
  const tp_kernels *k;
  bool training; /* dropout on */
  bool record;   /* ops go on the tape */
  uint64_t rng_seed, rng_counter;
  GError *error; /* sticky: the first failure */

  /* Device arena: one buffer; a step that outgrows it spills into extra
   * buffers, and the next step starts with one buffer big enough for all. */
  tp_buffer *arena;
  size_t arena_cap, arena_used;
  GPtrArray *spill;   /* tp_buffer* */
  size_t step_bytes;  /* bytes asked for this step (arena + spill) */

  /* Host objects of this step: tensors and tape nodes. */
  GPtrArray *host_objs; /* g_free'd at each step */
  GPtrArray *tape;      /* tp_tape_node*, in execution order */
};

int64_t tp_tensor_numel(const tp_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

size_t tp_tensor_nbytes(const tp_tensor *t) {
  return (size_t)tp_tensor_numel(t) * tp_dtype_size(t->dtype);
}

tp_ctx *tp_ctx_new(tp_backend *be, GError **err) {
  (void)err;
  tp_ctx *c = g_new0(tp_ctx, 1);
  c->be = be;
  c->k = &be->iface->k;
  c->spill = g_ptr_array_new();
  c->host_objs = g_ptr_array_new_with_free_func(g_free);
  c->tape = g_ptr_array_new();
  return c;
}

static void free_spill(tp_ctx *c) {
  for (guint i = 0; i < c->spill->len; i++)
    c->be->iface->buffer_free(c->be->dev, g_ptr_array_index(c->spill, i));
  g_ptr_array_set_size(c->spill, 0);
}

void tp_ctx_free(tp_ctx *c) {
  if (!c) return;
  free_spill(c);
  if (c->arena) c->be->iface->buffer_free(c->be->dev, c->arena);
  g_ptr_array_unref(c->spill);
  g_ptr_array_unref(c->host_objs);
  g_ptr_array_unref(c->tape);
  g_clear_error(&c->error);
  g_free(c);
}

tp_backend *tp_ctx_backend(tp_ctx *c) { return c->be; }
const tp_kernels *tp_ctx_kernels(tp_ctx *c) { return c->k; }
void tp_ctx_set_training(tp_ctx *c, bool t) {
  c->training = t;
  c->record = t;
}
void tp_ctx_set_grad_enabled(tp_ctx *c, bool enabled) { c->record = enabled; }
bool tp_ctx_training(const tp_ctx *c) { return c->training; }

void tp_ctx_set_rng(tp_ctx *c, uint64_t seed, uint64_t counter) {
  c->rng_seed = seed;
  c->rng_counter = counter;
}

uint64_t tp_ctx_rng_counter(const tp_ctx *c) { return c->rng_counter; }

/* For ops: the seed and a fresh counter range of n draws. */
void tp_ctx_take_rng(tp_ctx *c, int64_t n, uint64_t *seed, uint64_t *offset);
void tp_ctx_take_rng(tp_ctx *c, int64_t n, uint64_t *seed, uint64_t *offset) {
  *seed = c->rng_seed;
  *offset = c->rng_counter;
  c->rng_counter += (uint64_t)n;
}

void tp_ctx_begin_step(tp_ctx *c) {
  g_ptr_array_set_size(c->tape, 0);
  g_ptr_array_set_size(c->host_objs, 0);
  if (c->spill->len > 0) {
    /* Grow the arena to what the last step needed, plus headroom. */
    size_t want = c->step_bytes + c->step_bytes / 4;
    free_spill(c);
    if (c->arena) c->be->iface->buffer_free(c->be->dev, c->arena);
    c->arena = NULL;
    c->arena_cap = 0;
    GError *e = NULL;
    c->arena = c->be->iface->buffer_alloc(c->be->dev, want, &e);
    if (c->arena) c->arena_cap = want;
    else g_clear_error(&e); /* the next allocation retries and reports */
  }
  c->arena_used = 0;
  c->step_bytes = 0;
}

bool tp_ctx_ok(const tp_ctx *c) { return c->error == NULL; }

void tp_ctx_fail(tp_ctx *c, GError *e) {
  if (!e) return;
  if (c->error) g_error_free(e);
  else c->error = e;
}

bool tp_ctx_check(tp_ctx *c, GError **err) {
  if (!c->error) {
    GError *e = NULL;
    if (!c->be->iface->synchronize(c->be->dev, &e)) c->error = e;
  }
  if (c->error) {
    g_propagate_error(err, c->error);
    c->error = NULL;
    return false;
  }
  return true;
}

size_t tp_ctx_arena_bytes(const tp_ctx *c) { return c->arena_cap; }

static tp_mem arena_alloc(tp_ctx *c, size_t bytes) {
  tp_mem m = {NULL, 0};
  size_t sz = (bytes + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
  if (sz == 0) sz = ARENA_ALIGN;
  c->step_bytes += sz;
  if (!c->arena && c->spill->len == 0) {
    size_t cap = sz > ARENA_MIN ? sz : ARENA_MIN;
    GError *e = NULL;
    c->arena = c->be->iface->buffer_alloc(c->be->dev, cap, &e);
    if (!c->arena) {
      tp_ctx_fail(c, e);
      return m;
    }
    c->arena_cap = cap;
  }
  if (c->arena && c->arena_used + sz <= c->arena_cap) {
    m.buf = c->arena;
    m.off = c->arena_used;
    c->arena_used += sz;
    return m;
  }
  GError *e = NULL;
  tp_buffer *b = c->be->iface->buffer_alloc(c->be->dev, sz, &e);
  if (!b) {
    g_prefix_error(&e, "activation memory for one step exceeds what %s can allocate (%.1f MiB "
                       "so far; lower --batch or --max-len): ",
                   c->be->name, (double)c->step_bytes / 1048576.0);
    tp_ctx_fail(c, e);
    return m;
  }
  g_ptr_array_add(c->spill, b);
  m.buf = b;
  return m;
}

static tp_tensor *tensor_struct(tp_ctx *c, tp_dtype dt, int ndim, const int64_t *shape) {
  if (ndim < 1 || ndim > TP_MAX_DIMS) {
    tp_ctx_fail(c, g_error_new(TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                               "tensor of %d dimensions (1 to %d supported)", ndim, TP_MAX_DIMS));
    return NULL;
  }
  tp_tensor *t = g_new0(tp_tensor, 1);
  g_ptr_array_add(c->host_objs, t);
  t->dtype = dt;
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) {
      tp_ctx_fail(c, g_error_new(TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                                 "negative dimension %lld", (long long)shape[i]));
      return NULL;
    }
    t->shape[i] = shape[i];
  }
  return t;
}

tp_tensor *tp_tensor_new(tp_ctx *c, tp_dtype dt, int ndim, const int64_t *shape) {
  if (c->error) return NULL;
  tp_tensor *t = tensor_struct(c, dt, ndim, shape);
  if (!t) return NULL;
  t->mem = arena_alloc(c, tp_tensor_nbytes(t));
  return c->error ? NULL : t;
}

tp_tensor *tp_tensor_zeros(tp_ctx *c, tp_dtype dt, int ndim, const int64_t *shape) {
  tp_tensor *t = tp_tensor_new(c, dt, ndim, shape);
  if (!t) return NULL;
  /* all dtypes' zero is all-zero bits; fill as f32 words covers i32 too */
  size_t bytes = tp_tensor_nbytes(t);
  if (bytes % 4 == 0) c->k->fill(c->be->dev, t->mem, 0.0f, (int64_t)(bytes / 4));
  else {
    void *z = g_malloc0(bytes);
    GError *e = NULL;
    if (!c->be->iface->upload(c->be->dev, t->mem, z, bytes, &e)) tp_ctx_fail(c, e);
    g_free(z);
  }
  return t;
}

tp_tensor *tp_tensor_from_host(tp_ctx *c, tp_dtype dt, int ndim, const int64_t *shape,
                               const void *data) {
  tp_tensor *t = tp_tensor_new(c, dt, ndim, shape);
  if (!t) return NULL;
  GError *e = NULL;
  if (!c->be->iface->upload(c->be->dev, t->mem, data, tp_tensor_nbytes(t), &e)) {
    tp_ctx_fail(c, e);
    return NULL;
  }
  return t;
}

bool tp_tensor_to_host(tp_ctx *c, const tp_tensor *t, void *dst, GError **err) {
  if (!tp_ctx_check(c, err)) return false;
  return c->be->iface->download(c->be->dev, dst, t->mem, tp_tensor_nbytes(t), err);
}

tp_tape_node *tp_ctx_record(tp_ctx *c, tp_backward_fn fn, tp_tensor *out, int n_in,
                            tp_tensor *const *in) {
  if (!c->record || c->error || !out) return NULL;
  bool any = false;
  for (int i = 0; i < n_in; i++) any = any || (in[i] && in[i]->requires_grad);
  if (!any) return NULL;
  tp_tape_node *n = g_new0(tp_tape_node, 1);
  g_ptr_array_add(c->host_objs, n);
  n->backward = fn;
  n->out = out;
  for (int i = 0; i < n_in && i < TP_NODE_MAX_IN; i++) n->in[i] = in[i];
  out->requires_grad = true;
  g_ptr_array_add(c->tape, n);
  return n;
}

tp_tensor *tp_tensor_grad(tp_ctx *c, tp_tensor *t) {
  if (!t->grad) {
    tp_tensor *g = tp_tensor_zeros(c, TP_F32, t->ndim, t->shape);
    t->grad = g;
  }
  return t->grad;
}

static bool backward_check(tp_tensor *out, GError **err) {
  if (!out || !out->requires_grad) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                "backward from a tensor that depends on no parameter (was training mode on?)");
    return false;
  }
  return true;
}

static void walk_tape(tp_ctx *c) {
  for (guint i = c->tape->len; i-- > 0 && !c->error;) {
    tp_tape_node *n = g_ptr_array_index(c->tape, i);
    if (n->out->grad) n->backward(c, n);
  }
}

bool tp_ctx_backward(tp_ctx *c, tp_tensor *loss, GError **err) {
  if (c->error) return tp_ctx_check(c, err);
  if (loss && tp_tensor_numel(loss) != 1) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                "backward needs a loss with one element");
    return false;
  }
  if (!backward_check(loss, err)) return false;
  tp_tensor *g = tp_tensor_grad(c, loss);
  if (g) c->k->fill(c->be->dev, g->mem, 1.0f, 1);
  walk_tape(c);
  return tp_ctx_check(c, err);
}

bool tp_ctx_backward_from(tp_ctx *c, tp_tensor *out, const float *dout, GError **err) {
  if (c->error) return tp_ctx_check(c, err);
  if (!backward_check(out, err)) return false;
  tp_tensor *g = tp_tensor_grad(c, out);
  GError *e = NULL;
  if (g && !c->be->iface->upload(c->be->dev, g->mem, dout, tp_tensor_nbytes(g), &e))
    tp_ctx_fail(c, e);
  walk_tape(c);
  return tp_ctx_check(c, err);
}
