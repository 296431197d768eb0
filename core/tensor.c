/* core/tensor.c — the execution context: activation arena, tape, autograd. */
#include "tensorplug/tensor.h"

#include <string.h>

#include "tensorplug/error.h"

#include "tensorplug/kernels.h"

#define ARENA_ALIGN 256 /* at least; the device's offset_align when larger */
#define ARENA_MIN (16u << 20)
#define SHADOW_MAX (1 << 20) /* i32 elements of an upload kept on the host */

typedef struct arena_chunk {
  tp_buffer *buf;
  size_t cap;
} arena_chunk;

struct tp_ctx {
  tp_backend *be;
  bool training; /* dropout on */
  bool record;   /* ops go on the tape */
  tp_dtype precision; /* compute type of matrix products */
  bool unfused;       /* compose every op of basic kernels (tp_ctx_set_fused) */
  uint64_t rng_seed, rng_counter;
  int64_t share_row0, share_rows, share_batch; /* tp_ctx_set_batch_share (rows 0: none) */
  GError *error; /* sticky: the first failure */

  /* Device arena: chunks of at most max_alloc_bytes, bump-allocated in
   * order. A step that outgrows them adds a chunk (a spill); the next step
   * starts with chunks sized for everything the last one needed. */
  GArray *chunks; /* arena_chunk */
  guint cur;      /* chunk being filled */
  size_t used;    /* bytes used in chunks[cur] */
  bool spilled;
  guint base_chunks; /* chunks at the start of the step; later ones are spills */
  size_t step_bytes; /* most bytes in use at once this step */
  size_t live;       /* bytes in use now (less than asked after tp_ctx_release) */
  uint64_t step_id;  /* tells a mark of this step from an older one */

  /* Host objects of this step: tensors and tape nodes. */
  GPtrArray *host_objs; /* g_free'd at each step */
  GHashTable *shadows;  /* tp_tensor* -> host copy of small i32 uploads (this step) */
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
  c->precision = TP_F32;
  c->chunks = g_array_new(FALSE, TRUE, sizeof(arena_chunk));
  c->host_objs = g_ptr_array_new_with_free_func(g_free);
  c->shadows = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
  c->tape = g_ptr_array_new();
  return c;
}

static void free_chunks(tp_ctx *c) {
  for (guint i = 0; i < c->chunks->len; i++)
    tp_backend_free(c->be, g_array_index(c->chunks, arena_chunk, i).buf);
  g_array_set_size(c->chunks, 0);
  c->cur = 0;
  c->used = 0;
}

void tp_ctx_free(tp_ctx *c) {
  if (!c) return;
  free_chunks(c);
  g_array_unref(c->chunks);
  g_ptr_array_unref(c->host_objs);
  g_hash_table_destroy(c->shadows);
  g_ptr_array_unref(c->tape);
  g_clear_error(&c->error);
  g_free(c);
}

tp_backend *tp_ctx_backend(tp_ctx *c) { return c->be; }
void tp_ctx_set_training(tp_ctx *c, bool t) {
  c->training = t;
  c->record = t;
}
void tp_ctx_set_grad_enabled(tp_ctx *c, bool enabled) { c->record = enabled; }
bool tp_ctx_training(const tp_ctx *c) { return c->training; }

bool tp_ctx_set_precision(tp_ctx *c, tp_dtype compute, GError **err) {
  if (compute != TP_F32 && compute != TP_BF16 && compute != TP_F16 && compute != TP_I8) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "precision %s: use f32, bf16, f16 or i8",
                tp_dtype_name(compute));
    return false;
  }
  if (!(c->be->info.gemm_compute & TP_DTYPE_BIT(compute))) {
    g_set_error(err, TP_ERROR, TP_ERROR_UNAVAILABLE, "%s (%s) cannot compute matrix products in "
                "%s: use --precision f32", c->be->name, c->be->info.name, tp_dtype_name(compute));
    return false;
  }
  c->precision = compute;
  return true;
}
tp_dtype tp_ctx_precision(const tp_ctx *c) { return c->precision; }
void tp_ctx_set_fused(tp_ctx *c, bool fused) { c->unfused = !fused; }
bool tp_ctx_fused(const tp_ctx *c) { return !c->unfused; }

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
  if (c->share_rows > 0) { /* the whole batch's range; these rows' part of it */
    if (n % c->share_rows != 0) {
      tp_ctx_fail(c, g_error_new(TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "dropout over %lld "
                                 "elements in a share of %lld batch rows: its tensor does not "
                                 "have the batch as leading axis", (long long)n,
                                 (long long)c->share_rows));
      return;
    }
    int64_t per_row = n / c->share_rows;
    *offset += (uint64_t)(c->share_row0 * per_row);
    c->rng_counter += (uint64_t)(c->share_batch * per_row);
    return;
  }
  c->rng_counter += (uint64_t)n;
}

void tp_ctx_set_batch_share(tp_ctx *c, int64_t row0, int64_t rows, int64_t batch_rows) {
  bool whole = rows <= 0 || (row0 == 0 && rows == batch_rows);
  c->share_row0 = whole ? 0 : row0;
  c->share_rows = whole ? 0 : rows;
  c->share_batch = whole ? 0 : batch_rows;
}

static size_t chunk_limit(const tp_ctx *c) {
  uint64_t m = c->be->info.max_alloc_bytes;
  return m == 0 || m > SIZE_MAX ? SIZE_MAX : (size_t)m;
}

/* Chunks holding `want` bytes, each at most the device's largest buffer. */
static void alloc_chunks(tp_ctx *c, size_t want) {
  size_t lim = chunk_limit(c);
  while (want > 0) {
    size_t sz = MIN(want, lim);
    GError *e = NULL;
    tp_buffer *b = tp_backend_alloc(c->be, sz, &e);
    if (!b) { /* the next allocation retries and reports */
      g_clear_error(&e);
      return;
    }
    arena_chunk ch = {b, sz};
    g_array_append_val(c->chunks, ch);
    want -= sz;
  }
}

void tp_ctx_begin_step(tp_ctx *c) {
  g_ptr_array_set_size(c->tape, 0);
  g_hash_table_remove_all(c->shadows);
  g_ptr_array_set_size(c->host_objs, 0);
  if (c->spilled) {
    /* Size the arena for what the last step needed, plus headroom. The
     * chunks it had stay (their memory is already paged in: re-allocating
     * them all made every longer batch of an evaluation sorted by length
     * fault the whole arena in again); the spill chunks make way for one
     * chunk holding the rest. */
    size_t want = c->step_bytes + c->step_bytes / 4, kept = 0;
    while (c->chunks->len > c->base_chunks) {
      tp_backend_free(c->be, g_array_index(c->chunks, arena_chunk, c->chunks->len - 1).buf);
      g_array_set_size(c->chunks, c->chunks->len - 1);
    }
    for (guint i = 0; i < c->chunks->len; i++) kept += g_array_index(c->chunks, arena_chunk, i).cap;
    if (want > kept) alloc_chunks(c, MAX(want - kept, (size_t)ARENA_MIN));
    c->spilled = false;
  }
  c->base_chunks = c->chunks->len;
  c->cur = 0;
  c->used = 0;
  c->step_bytes = 0;
  c->live = 0;
  c->step_id++;
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
    if (!tp_backend_sync(c->be, &e)) c->error = e;
  }
  return tp_ctx_take_error(c, err);
}

bool tp_ctx_take_error(tp_ctx *c, GError **err) {
  if (!c->error) return true;
  g_propagate_error(err, c->error);
  c->error = NULL;
  return false;
}

size_t tp_ctx_arena_bytes(const tp_ctx *c) {
  size_t n = 0;
  for (guint i = 0; i < c->chunks->len; i++) n += g_array_index(c->chunks, arena_chunk, i).cap;
  return n;
}

static tp_mem arena_alloc(tp_ctx *c, size_t bytes) {
  tp_mem m = {NULL, 0};
  size_t align = MAX((size_t)ARENA_ALIGN, (size_t)c->be->info.offset_align);
  size_t sz = (bytes + align - 1) / align * align;
  if (sz == 0) sz = align;
  c->live += sz;
  c->step_bytes = MAX(c->step_bytes, c->live);
  while (c->cur < c->chunks->len) {
    arena_chunk *ch = &g_array_index(c->chunks, arena_chunk, c->cur);
    if (c->used + sz <= ch->cap) {
      m.buf = ch->buf;
      m.off = c->used;
      c->used += sz;
      return m;
    }
    c->cur++;
    c->used = 0;
  }
  /* A new chunk: at least ARENA_MIN (the first step's start), else this tensor. */
  size_t cap = MIN(MAX(sz, (size_t)ARENA_MIN), MAX(sz, chunk_limit(c)));
  if (c->chunks->len > 0) {
    c->spilled = true;
    cap = sz;
  }
  GError *e = NULL;
  tp_buffer *b = tp_backend_alloc(c->be, cap, &e);
  if (!b) {
    g_prefix_error(&e, "activation memory for one step (%.1f MiB so far): ",
                   (double)c->step_bytes / 1048576.0);
    tp_ctx_fail(c, e);
    return m;
  }
  arena_chunk ch = {b, cap};
  g_array_append_val(c->chunks, ch);
  c->cur = c->chunks->len - 1;
  c->used = sz;
  m.buf = b;
  return m;
}

static tp_tensor *tensor_struct(tp_ctx *c, tp_dtype dt, int ndim, const int64_t *shape);

tp_arena_mark tp_ctx_mark(const tp_ctx *c) {
  return (tp_arena_mark){.step = c->step_id, .chunk = c->cur, .used = c->used, .live = c->live};
}

/* Where t's bytes start in allocation order: (chunk, offset), or FALSE when
 * they are not in the arena (parameters). */
static bool arena_place(const tp_ctx *c, const tp_tensor *t, guint *chunk, size_t *off) {
  for (guint i = 0; i < c->chunks->len; i++)
    if (g_array_index(c->chunks, arena_chunk, i).buf == t->mem.buf) {
      *chunk = i;
      *off = t->mem.off;
      return true;
    }
  return false;
}

tp_tensor *tp_ctx_release(tp_ctx *c, tp_arena_mark m, tp_tensor *keep) {
  if (c->record || c->error || !keep || m.step != c->step_id) return keep;
  guint kc;
  size_t ko;
  bool in_arena = arena_place(c, keep, &kc, &ko);
  guint cur = c->cur;
  size_t used = c->used, live = c->live;
  c->cur = m.chunk;
  c->used = m.used;
  c->live = m.live;
  if (!in_arena || kc < m.chunk || (kc == m.chunk && ko < m.used)) return keep; /* older */
  tp_tensor *t = tensor_struct(c, keep->dtype, keep->ndim, keep->shape);
  size_t n = tp_tensor_nbytes(keep);
  if (t) t->mem = arena_alloc(c, n);
  if (!t || c->error) return NULL;
  if (t->mem.buf == keep->mem.buf && t->mem.off + n > keep->mem.off) {
    /* The kept bytes would overlap their new place: keep everything. */
    c->cur = cur;
    c->used = used;
    c->live = live;
    return keep;
  }
  GError *e = NULL;
  if (n > 0 && !tp_backend_copy(c->be, t->mem, keep->mem, n, &e)) {
    tp_ctx_fail(c, e);
    return NULL;
  }
  return t;
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
  if (bytes % 4 == 0) tp_k_fill(c->be, t->mem, 0.0f, (int64_t)(bytes / 4));
  else {
    void *z = g_malloc0(bytes);
    GError *e = NULL;
    if (!tp_backend_upload(c->be, t->mem, z, bytes, &e)) tp_ctx_fail(c, e);
    g_free(z);
  }
  return t;
}

tp_tensor *tp_tensor_from_host(tp_ctx *c, tp_dtype dt, int ndim, const int64_t *shape,
                               const void *data) {
  tp_tensor *t = tp_tensor_new(c, dt, ndim, shape);
  if (!t) return NULL;
  GError *e = NULL;
  if (!tp_backend_upload(c->be, t->mem, data, tp_tensor_nbytes(t), &e)) {
    tp_ctx_fail(c, e);
    return NULL;
  }
  /* ids and masks: ops may plan on the host without reading them back */
  if (dt == TP_I32 && tp_tensor_numel(t) <= SHADOW_MAX)
    g_hash_table_insert(c->shadows, t, g_memdup2(data, tp_tensor_nbytes(t)));
  return t;
}

const int32_t *tp_tensor_host_i32(const tp_ctx *c, const tp_tensor *t) {
  return t && t->dtype == TP_I32 ? g_hash_table_lookup(c->shadows, t) : NULL;
}

bool tp_tensor_to_host(tp_ctx *c, const tp_tensor *t, void *dst, GError **err) {
  if (!tp_ctx_take_error(c, err)) return false;
  /* one synchronisation: download reports queued kernels' failures too */
  return tp_backend_download(c->be, dst, t->mem, tp_tensor_nbytes(t), err);
}

tp_tape_node *tp_ctx_record(tp_ctx *c, tp_backward_fn fn, tp_tensor *out, int n_in,
                            tp_tensor *const *in) {
  if (!c->record || c->error || !out) return NULL;
  bool any = false;
  for (int i = 0; i < n_in; i++) any = any || (in[i] && in[i]->requires_grad);
  if (!any) return NULL;
  if (c->precision == TP_I8) { /* rounding to int8 has no useful gradient */
    tp_ctx_fail(c, g_error_new(TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "precision i8 is for "
                               "inference only (eval, predict, bench --mode infer): nothing is "
                               "recorded for gradients; train in f32 or bf16"));
    return NULL;
  }
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

tp_tensor *tp_tensor_grad_acc(tp_ctx *c, tp_tensor *t, bool *acc) {
  *acc = t->grad != NULL;
  if (!t->grad) t->grad = tp_tensor_new(c, TP_F32, t->ndim, t->shape);
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
  if (c->error) return tp_ctx_take_error(c, err);
  if (loss && tp_tensor_numel(loss) != 1) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                "backward needs a loss with one element");
    return false;
  }
  if (!backward_check(loss, err)) return false;
  tp_tensor *g = tp_tensor_grad(c, loss);
  if (g) tp_k_fill(c->be, g->mem, 1.0f, 1);
  walk_tape(c);
  return tp_ctx_take_error(c, err);
}

bool tp_ctx_backward_scaled(tp_ctx *c, tp_tensor *loss, tp_mem scale, GError **err) {
  if (c->error) return tp_ctx_take_error(c, err);
  if (loss && tp_tensor_numel(loss) != 1) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                "backward needs a loss with one element");
    return false;
  }
  if (!backward_check(loss, err)) return false;
  tp_tensor *g = tp_tensor_grad(c, loss);
  GError *e = NULL;
  if (g && !tp_backend_copy(c->be, g->mem, scale, sizeof(float), &e)) tp_ctx_fail(c, e);
  walk_tape(c);
  return tp_ctx_take_error(c, err);
}

bool tp_ctx_backward_from(tp_ctx *c, tp_tensor *out, const float *dout, GError **err) {
  if (c->error) return tp_ctx_take_error(c, err);
  if (!backward_check(out, err)) return false;
  tp_tensor *g = tp_tensor_grad(c, out);
  GError *e = NULL;
  if (g && !tp_backend_upload(c->be, g->mem, dout, tp_tensor_nbytes(g), &e))
    tp_ctx_fail(c, e);
  walk_tape(c);
  return tp_ctx_take_error(c, err);
}
