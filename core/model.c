/* core/model.c — model objects: config handling, weights in and out. */
#include "tensorplug/model.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

#include "tensorplug/backend.h"
#include "tensorplug/error.h"
#include "tensorplug/fileio.h"
#include "tensorplug/memory.h"
#include "tensorplug/safetensors.h"

/* ---- config helpers for plugins ---- */

bool tp_config_get_int(JsonObject *o, const char *key, bool required, int *out, GError **err) {
  JsonNode *n = json_object_get_member(o, key);
  if (!n || JSON_NODE_HOLDS_NULL(n)) {
    if (!required) return true;
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "config.json lacks \"%s\"", key);
    return false;
  }
  if (json_node_get_value_type(n) != G_TYPE_INT64) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "config.json: \"%s\" must be an integer", key);
    return false;
  }
  gint64 v = json_node_get_int(n);
  if (v < 0 || v > G_MAXINT) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "config.json: \"%s\" = %" G_GINT64_FORMAT
                " is out of range", key, v);
    return false;
  }
  *out = (int)v;
  return true;
}

bool tp_config_get_string(JsonObject *o, const char *key, const char *fallback,
                          const char **out, GError **err) {
  JsonNode *n = json_object_get_member(o, key);
  if (!n || JSON_NODE_HOLDS_NULL(n)) {
    *out = fallback;
    return true;
  }
  if (json_node_get_value_type(n) != G_TYPE_STRING) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "config.json: \"%s\" must be a string", key);
    return false;
  }
  *out = json_node_get_string(n);
  return true;
}

bool tp_config_get_float(JsonObject *o, const char *key, bool required, float *out, GError **err) {
  JsonNode *n = json_object_get_member(o, key);
  if (!n || JSON_NODE_HOLDS_NULL(n)) {
    if (!required) return true;
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "config.json lacks \"%s\"", key);
    return false;
  }
  GType t = json_node_get_value_type(n);
  if (t != G_TYPE_DOUBLE && t != G_TYPE_INT64) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "config.json: \"%s\" must be a number", key);
    return false;
  }
  *out = (float)json_node_get_double(n);
  return true;
}

bool tp_config_get_labels(JsonObject *o, tp_model_config *cfg, GError **err) {
  if (cfg->num_labels <= 0) cfg->num_labels = 2;
  if (!tp_config_get_int(o, "num_labels", false, &cfg->num_labels, err)) return false;
  JsonNode *n = json_object_get_member(o, "id2label");
  if (n && JSON_NODE_HOLDS_OBJECT(n)) {
    JsonObject *m = json_node_get_object(n);
    int count = (int)json_object_get_size(m);
    if (count < 1 || count > TP_MAX_LABELS) {
      g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "config.json: id2label has %d labels (1 to %d "
                  "supported)", count, TP_MAX_LABELS);
      return false;
    }
    cfg->num_labels = count;
    for (int i = 0; i < count; i++) {
      char key[16];
      g_snprintf(key, sizeof key, "%d", i);
      const char *name = json_object_get_string_member_with_default(m, key, NULL);
      if (!name) {
        g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "config.json: id2label lacks \"%s\"", key);
        return false;
      }
      g_strlcpy(cfg->label_names[i], name, sizeof cfg->label_names[i]);
    }
  }
  if (cfg->num_labels < 1 || cfg->num_labels > TP_MAX_LABELS) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "config.json: num_labels %d out of range 1..%d",
                cfg->num_labels, TP_MAX_LABELS);
    return false;
  }
  for (int i = 0; i < cfg->num_labels; i++)
    if (!cfg->label_names[i][0]) {
      if (cfg->num_labels == 2) g_strlcpy(cfg->label_names[i], i ? "POS" : "NEG", 32);
      else g_snprintf(cfg->label_names[i], 32, "LABEL_%d", i);
    }
  return true;
}

void tp_config_put_int(JsonBuilder *b, const char *key, int v) {
  json_builder_set_member_name(b, key);
  json_builder_add_int_value(b, v);
}

void tp_config_put_float(JsonBuilder *b, const char *key, float v) {
  json_builder_set_member_name(b, key);
  /* print floats as the short decimal people wrote (0.1, not 0.10000000149) */
  char buf[G_ASCII_DTOSTR_BUF_SIZE];
  g_ascii_formatd(buf, sizeof buf, "%.7g", v);
  json_builder_add_double_value(b, g_ascii_strtod(buf, NULL));
}

void tp_config_put_string(JsonBuilder *b, const char *key, const char *v) {
  json_builder_set_member_name(b, key);
  json_builder_add_string_value(b, v);
}

void tp_config_put_labels(const tp_model_config *cfg, JsonBuilder *b) {
  json_builder_set_member_name(b, "id2label");
  json_builder_begin_object(b);
  for (int i = 0; i < cfg->num_labels; i++) {
    char key[16];
    g_snprintf(key, sizeof key, "%d", i);
    tp_config_put_string(b, key, cfg->label_names[i]);
  }
  json_builder_end_object(b);
  json_builder_set_member_name(b, "label2id");
  json_builder_begin_object(b);
  for (int i = 0; i < cfg->num_labels; i++) tp_config_put_int(b, cfg->label_names[i], i);
  json_builder_end_object(b);
}

tp_tensor *tp_position_ids(tp_ctx *ctx, int64_t batch, int64_t seq) {
  int32_t *h = g_new(int32_t, batch * seq);
  for (int64_t b = 0; b < batch; b++)
    for (int64_t t = 0; t < seq; t++) h[b * seq + t] = (int32_t)t;
  int64_t shape[2] = {batch, seq};
  tp_tensor *p = tp_tensor_from_host(ctx, TP_I32, 2, shape, h);
  g_free(h);
  return p;
}

tp_tensor *tp_position_ids_from_ids(tp_ctx *ctx, tp_tensor *ids, int32_t padding_idx) {
  if (!tp_ctx_ok(ctx) || !ids) return NULL;
  if (ids->dtype != TP_I32 || ids->ndim != 2) {
    tp_ctx_fail(ctx, g_error_new(TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                                 "position ids: ids must be [B, T] i32"));
    return NULL;
  }
  int64_t batch = ids->shape[0], seq = ids->shape[1];
  int32_t *h = g_new(int32_t, MAX(batch * seq, 1));
  GError *e = NULL;
  if (!tp_tensor_to_host(ctx, ids, h, &e)) {
    tp_ctx_fail(ctx, e);
    g_free(h);
    return NULL;
  }
  for (int64_t b = 0; b < batch; b++) {
    int32_t rank = 0;
    for (int64_t t = 0; t < seq; t++) {
      int32_t *x = &h[b * seq + t];
      *x = *x == padding_idx ? padding_idx : padding_idx + ++rank;
    }
  }
  tp_tensor *p = tp_tensor_from_host(ctx, TP_I32, 2, ids->shape, h);
  g_free(h);
  return p;
}

/* ---- configs ---- */

bool tp_model_config_apply(tp_model_config *cfg, const tp_model_overrides *ov, GError **err) {
  if (ov) {
    if (ov->layers > 0) cfg->layers = ov->layers;
    if (ov->hidden > 0) cfg->hidden = ov->hidden;
    if (ov->heads > 0) cfg->heads = ov->heads;
    if (ov->ffn > 0) cfg->ffn = ov->ffn;
    if (ov->max_positions > 0) cfg->max_positions = ov->max_positions;
    if (ov->vocab_size > 0) cfg->vocab_size = ov->vocab_size;
    if (ov->num_labels > 0) cfg->num_labels = ov->num_labels;
  }
  return tp_model_config_check(cfg, err);
}

/* Largest sizes accepted: far above any real BERT-family model, low enough
 * that every product of them (parameter counts, bytes) fits in 64 bits. */
#define MAX_LAYERS 1024
#define MAX_HIDDEN 65536
#define MAX_FFN (1 << 20)
#define MAX_POSITIONS (1 << 20)
#define MAX_VOCAB (1 << 24)
#define MAX_TYPE_VOCAB 65536

static bool int_in(int v, int lo, int hi, const char *what, GError **err) {
  if (v >= lo && v <= hi) return true;
  g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "%s %d is out of range (%d to %d)", what,
              v, lo, hi);
  return false;
}

static bool float_ok(bool ok, float v, const char *what, const char *range, GError **err) {
  if (ok && isfinite(v)) return true;
  g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "%s %g is out of range: expected %s",
              what, (double)v, range);
  return false;
}

bool tp_model_config_check(const tp_model_config *c, GError **err) {
  if (!int_in(c->layers, 1, MAX_LAYERS, "number of layers", err) ||
      !int_in(c->hidden, 1, MAX_HIDDEN, "hidden size", err) ||
      !int_in(c->heads, 1, c->hidden, "number of attention heads", err) ||
      !int_in(c->ffn, 1, MAX_FFN, "feed-forward size", err) ||
      !int_in(c->max_positions, 1, MAX_POSITIONS, "number of positions", err) ||
      !int_in(c->vocab_size, 2, MAX_VOCAB, "vocabulary size", err) ||
      !int_in(c->type_vocab_size, 0, MAX_TYPE_VOCAB, "type_vocab_size", err) ||
      !int_in(c->num_labels, 1, TP_MAX_LABELS, "number of labels", err) ||
      !int_in(c->pad_token_id, 0, c->vocab_size - 1, "pad_token_id (a row of the embedding table)",
              err) ||
      !float_ok(c->layer_norm_eps > 0 && c->layer_norm_eps < 1, c->layer_norm_eps,
                "layer_norm_eps", "a number above 0 and below 1", err) ||
      !float_ok(c->hidden_dropout >= 0 && c->hidden_dropout < 1, c->hidden_dropout,
                "hidden dropout", "a probability from 0 up to (not including) 1", err) ||
      !float_ok(c->attention_dropout >= 0 && c->attention_dropout < 1, c->attention_dropout,
                "attention dropout", "a probability from 0 up to (not including) 1", err) ||
      !float_ok(c->classifier_dropout >= 0 && c->classifier_dropout < 1, c->classifier_dropout,
                "classifier dropout", "a probability from 0 up to (not including) 1", err) ||
      !float_ok(c->initializer_range >= 0 && c->initializer_range <= 1, c->initializer_range,
                "initializer_range", "a standard deviation from 0 to 1", err))
    return false;
  if (c->hidden % c->heads != 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                "hidden size %d is not divisible by %d heads: pick --heads dividing --hidden",
                c->hidden, c->heads);
    return false;
  }
  return true;
}

bool tp_model_config_load(tp_registry *reg, const char *path, const tp_model_iface **iface,
                          tp_model_config *cfg, GError **err) {
  if (!reg) reg = tp_registry_get_default();
  JsonParser *p = json_parser_new();
  GError *e = NULL;
  bool ok = false;
  if (!json_parser_load_from_file(p, path, &e)) {
    g_set_error(err, TP_ERROR, e->domain == G_FILE_ERROR ? TP_ERROR_IO : TP_ERROR_FORMAT,
                "%s: %s", path, e->message);
    g_clear_error(&e);
    goto out;
  }
  JsonNode *root = json_parser_get_root(p);
  if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s: not a JSON object", path);
    goto out;
  }
  JsonObject *o = json_node_get_object(root);
  const char *type = json_object_get_string_member_with_default(o, "model_type", NULL);
  if (!type) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s: no \"model_type\" key (is it a Hugging "
                "Face config.json?)", path);
    goto out;
  }
  const tp_model_iface *m = tp_registry_find_model(reg, type, &e);
  if (!m) {
    g_set_error(err, TP_ERROR, TP_ERROR_UNAVAILABLE, "%s: model_type \"%s\" has no model "
                "plugin: %s", path, type, e->message);
    g_clear_error(&e);
    goto out;
  }
  memset(cfg, 0, sizeof *cfg);
  g_strlcpy(cfg->model_type, m->model_type, sizeof cfg->model_type);
  if (!m->config_from_json(o, cfg, &e)) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s: %s", path, e->message);
    g_clear_error(&e);
    goto out;
  }
  *iface = m;
  ok = tp_model_config_apply(cfg, NULL, &e);
  if (!ok) {
    /* a value of the file, not of the command line */
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s: %s", path, e->message);
    g_clear_error(&e);
  }
out:
  g_object_unref(p);
  return ok;
}

bool tp_model_resolve(tp_registry *reg, const tp_model_source *src, const tp_model_iface **iface,
                      tp_model_config *cfg, char **weights_path, char **model_dir, GError **err) {
  *weights_path = NULL;
  *model_dir = NULL;
  if (!src->model) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                "no model: pass --model PRESET (e.g. distilbert-base-uncased) or --model DIR");
    return false;
  }
  if (!reg) reg = tp_registry_get_default();
  /* The config comes from the model folder, else the weights folder, else the preset. */
  const char *cfg_dir = NULL;
  if (g_file_test(src->model, G_FILE_TEST_IS_DIR)) cfg_dir = src->model;
  else if (src->weights_dir && !src->init_random) cfg_dir = src->weights_dir;
  if (cfg_dir) {
    char *cp = g_build_filename(cfg_dir, "config.json", NULL);
    bool ok = g_file_test(cp, G_FILE_TEST_IS_REGULAR);
    if (!ok)
      g_set_error(err, TP_ERROR, TP_ERROR_IO, "%s has no config.json: a model "
                  "folder holds config.json and model.safetensors (scripts/fetch-model.sh "
                  "makes one)", cfg_dir);
    ok = ok && tp_model_config_load(reg, cp, iface, cfg, err);
    g_free(cp);
    if (!ok) return false;
    *model_dir = g_strdup(cfg_dir);
  } else {
    const tp_model_iface *m = tp_registry_find_model(reg, src->model, err);
    if (!m) return false;
    memset(cfg, 0, sizeof *cfg);
    g_strlcpy(cfg->model_type, m->model_type, sizeof cfg->model_type);
    if (!m->preset_config || !m->preset_config(src->model, cfg)) {
      g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                  "\"%s\" names the %s architecture but no preset of it", src->model,
                  m->model_type);
      return false;
    }
    *iface = m;
  }
  if (!tp_model_config_apply(cfg, &src->ov, err)) return false;
  if (src->init_random) return true;
  const char *wdir = src->weights_dir ? src->weights_dir : *model_dir;
  if (!wdir) {
    const char *(*source)(const char *) = TP_MODEL_IFACE_SLOT(*iface, preset_source);
    const char *how = source ? source(src->model) : NULL;
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                "preset \"%s\" has no weights here: download them with `scripts/fetch-model.sh "
                "%s DIR` and pass --weights DIR (or --model DIR), or pass --init random to "
                "train from random initialisation", src->model, how ? how : src->model);
    return false;
  }
  *weights_path = g_build_filename(wdir, "model.safetensors", NULL);
  if (!g_file_test(*weights_path, G_FILE_TEST_IS_REGULAR)) {
    g_set_error(err, TP_ERROR, TP_ERROR_IO,
                "%s not found: the model folder needs its weights (scripts/fetch-model.sh), "
                "or pass --init random", *weights_path);
    g_clear_pointer(weights_path, g_free);
    return false;
  }
  return true;
}

/* ---- model objects ---- */

uint64_t tp_model_step_bytes(const tp_model_config *c, int64_t batch, int64_t seq,
                            bool training, bool fused_attention) {
  /* Activations a step keeps in the arena, in floats per token: the
   * embeddings (about 8 H), then per layer Q, K, V and their per-head copies,
   * context, output, residuals and norms (about 16 H), the FFN (2 F), and the
   * scores, softmax and dropout of every head (3 x heads x T; none with a
   * fused attention, which keeps only its output and lse). Backward
   * allocates about as much again for the gradients of these activations;
   * inference keeps one layer at a time (tp_ctx_release). Measured against the arena of BERT steps it is an upper bound within
   * 2.5x (docs/architecture.md). */
  uint64_t scores = fused_attention ? 0 : 3 * (uint64_t)c->heads * (uint64_t)seq;
  uint64_t h = (uint64_t)c->hidden, per_layer = 16 * h + 2 * (uint64_t)c->ffn + scores;
  /* inference gives each layer's activations back (tp_ctx_release): one
   * layer at a time, and its output moved */
  uint64_t per_token = 8 * h + (training ? (uint64_t)c->layers * per_layer * 2 : per_layer + h);
  return per_token * (uint64_t)batch * (uint64_t)seq * sizeof(float);
}

bool tp_model_attention_fused(const tp_model_config *c, tp_backend *be) {
  uint32_t hd = c->heads > 0 ? (uint32_t)(c->hidden / c->heads) : 0;
  return TP_IFACE_HAS(be->iface, attention_fwd) && TP_IFACE_HAS(be->iface, attention_bwd) &&
         (be->info.max_head_dim == 0 || hd <= be->info.max_head_dim) &&
         tp_backend_binding_limit(be) == UINT64_MAX;
}

/* Parameters, gradients and both Adam moments: four buffers of the same
 * size, checked together against the device before any is allocated. */
static bool check_params_memory(const tp_model *m, tp_ctx *ctx, GError **err) {
  uint64_t bytes = (uint64_t)tp_params_flat_floats(m->params) * sizeof(float) * 4;
  char what[160];
  g_snprintf(what, sizeof what, "the %s model (%lld parameters: values, gradients and two Adam "
             "moments)", m->cfg.model_type, (long long)tp_params_numel(m->params));
  if (tp_memory_check_device(tp_ctx_backend(ctx), bytes, what, err)) return true;
  g_prefix_error(err, "the model does not fit: ");
  return false;
}

tp_model *tp_model_new(const tp_model_iface *iface, const tp_model_config *cfg, tp_ctx *ctx,
                       uint64_t seed, GError **err) {
  tp_model *m = g_new0(tp_model, 1);
  m->iface = iface;
  m->cfg = *cfg;
  m->params = tp_params_new();
  if (!tp_model_config_check(&m->cfg, err) || !iface->declare(&m->cfg, m->params, err) ||
      !check_params_memory(m, ctx, err) || !tp_params_materialize(m->params, ctx, seed, err)) {
    tp_model_free(m);
    return NULL;
  }
  return m;
}

void tp_model_free(tp_model *m) {
  if (!m) return;
  tp_params_free(m->params);
  g_free(m);
}

double tp_model_flops(const tp_model_config *c, int64_t batch, int64_t seq, bool training) {
  double tok = (double)batch * (double)seq, h = c->hidden, f = c->ffn;
  /* per layer: q, k, v, output projections and the FFN, then q k^T and p v */
  double layer = 2.0 * tok * (4.0 * h * h + 2.0 * h * f) + 4.0 * (double)batch * seq * seq * h;
  double head = 2.0 * (double)batch * (h * h + h * c->num_labels); /* pooler + classifier */
  double fwd = c->layers * layer + head;
  return training ? 3.0 * fwd : fwd; /* backward: twice the forward's products */
}

tp_tensor *tp_model_forward(tp_model *m, tp_ctx *ctx, tp_tensor *ids, tp_tensor *mask) {
  return m->iface->forward(ctx, &m->cfg, m->params, ids, mask);
}

void tp_load_report_clear(tp_load_report *r) {
  if (r->initialised_names) g_string_free(r->initialised_names, TRUE);
  if (r->ignored_names) g_string_free(r->ignored_names, TRUE);
  memset(r, 0, sizeof *r);
}

/* The canonical form of a checkpoint key: without the backbone prefix, and
 * LayerNorm gamma/beta spelled weight/bias (as old TF-converted files do). */
static char *normalize_key(const char *key, const char *prefix) {
  const char *k = key;
  if (prefix && *prefix && g_str_has_prefix(k, prefix)) k += strlen(prefix);
  GString *s = g_string_new(k);
  bool is_ln = strstr(s->str, "LayerNorm") || strstr(s->str, "layer_norm");
  if (is_ln && g_str_has_suffix(s->str, ".gamma")) {
    g_string_truncate(s, s->len - strlen(".gamma"));
    g_string_append(s, ".weight");
  } else if (is_ln && g_str_has_suffix(s->str, ".beta")) {
    g_string_truncate(s, s->len - strlen(".beta"));
    g_string_append(s, ".bias");
  }
  return g_string_free(s, FALSE);
}

static char *shape_text(int ndim, const int64_t *shape) {
  GString *s = g_string_new("[");
  for (int i = 0; i < ndim; i++) g_string_append_printf(s, "%s%lld", i ? ", " : "", (long long)shape[i]);
  g_string_append_c(s, ']');
  return g_string_free(s, FALSE);
}

static void report_add(GString **list, const char *name) {
  if (!*list) *list = g_string_new(NULL);
  g_string_append_printf(*list, "%s%s", (*list)->len ? ", " : "", name);
}

static bool load_one(tp_model *m, tp_ctx *ctx, const char *path, guint i, const tp_st_tensor *t,
                     GError **err) {
  tp_tensor *p = tp_params_at(m->params, i);
  bool same = t->ndim == p->ndim;
  for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == p->shape[d];
  if (!same) {
    char *want = shape_text(p->ndim, p->shape), *got = shape_text(t->ndim, t->shape);
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s: tensor \"%s\" has shape %s, but the config "
                "implies %s for \"%s\": the weights do not belong to this config (check "
                "config.json and the size options)", path, t->name, got, want, p->name);
    g_free(want);
    g_free(got);
    return false;
  }
  if (t->dtype != TP_F32 && t->dtype != TP_F16 && t->dtype != TP_BF16) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s: tensor \"%s\" has dtype %s; parameters "
                "must be F32, F16 or BF16", path, t->name, t->dtype_name);
    return false;
  }
  float *host = g_malloc((size_t)t->numel * sizeof(float) + 1);
  bool ok = tp_st_tensor_to_f32(t, host, err) && tp_params_set_f32(m->params, ctx, i, host, err);
  g_free(host);
  return ok;
}

bool tp_model_load_weights(tp_model *m, tp_ctx *ctx, const char *path, uint64_t seed,
                           tp_load_report *rep, GError **err) {
  tp_safetensors *st = tp_safetensors_open(path, err);
  if (!st) return false;
  const char *prefix = m->iface->weight_prefix;
  GHashTable *by_key = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  for (guint j = 0; j < tp_safetensors_count(st); j++) {
    const tp_st_tensor *t = tp_safetensors_at(st, j);
    g_hash_table_insert(by_key, normalize_key(t->name, prefix), (gpointer)t);
  }
  GHashTable *used = g_hash_table_new(g_direct_hash, g_direct_equal);
  tp_load_report local = {0};
  bool ok = true;
  for (guint i = 0; ok && i < tp_params_count(m->params); i++) {
    tp_tensor *p = tp_params_at(m->params, i);
    char *k = normalize_key(p->name, prefix);
    const tp_st_tensor *t = g_hash_table_lookup(by_key, k);
    g_free(k);
    if (t) {
      ok = load_one(m, ctx, path, i, t, err);
      g_hash_table_add(used, (gpointer)t);
      local.loaded++;
    } else if (tp_params_flags(m->params, i) & TP_PARAM_HEAD) {
      ok = tp_params_reinit(m->params, ctx, i, seed, err);
      local.initialised++;
      report_add(&local.initialised_names, p->name);
    } else {
      char *want = shape_text(p->ndim, p->shape);
      g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s: tensor \"%s\" %s is missing (also "
                  "looked for it without the \"%s\" prefix and with LayerNorm gamma/beta "
                  "names): is this a %s checkpoint?", path, p->name, want,
                  prefix ? prefix : "", m->iface->model_type);
      g_free(want);
      ok = false;
    }
  }
  for (guint j = 0; ok && j < tp_safetensors_count(st); j++) {
    const tp_st_tensor *t = tp_safetensors_at(st, j);
    if (g_hash_table_contains(used, t)) continue;
    local.ignored++;
    report_add(&local.ignored_names, t->name);
  }
  g_hash_table_unref(used);
  g_hash_table_unref(by_key);
  tp_safetensors_close(st);
  if (ok && rep) *rep = local;
  else tp_load_report_clear(&local);
  return ok;
}

static bool write_config(tp_model *m, const char *path, GError **err) {
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  m->iface->config_to_json(&m->cfg, b);
  tp_config_put_labels(&m->cfg, b);
  tp_config_put_string(b, "torch_dtype", "float32");
  tp_config_put_string(b, "tensorplug_version", TP_VERSION);
  json_builder_end_object(b);
  JsonGenerator *g = json_generator_new();
  json_generator_set_pretty(g, TRUE);
  JsonNode *root = json_builder_get_root(b);
  json_generator_set_root(g, root);
  gsize len = 0;
  char *text = json_generator_to_data(g, &len);
  bool ok = tp_file_write_durable(path, text, len, err);
  g_free(text);
  json_node_unref(root);
  g_object_unref(g);
  g_object_unref(b);
  return ok;
}

static bool copy_file(const char *src, const char *dst, GError **err) {
  char *data = NULL;
  gsize len = 0;
  bool ok = g_file_get_contents(src, &data, &len, err) &&
            tp_file_write_durable(dst, data, len, err);
  g_free(data);
  return ok;
}

bool tp_model_save(tp_model *m, tp_ctx *ctx, const char *dir, const char *vocab_path,
                   GError **err) {
  if (g_mkdir_with_parents(dir, 0755) != 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_IO, "cannot create %s: %s", dir, g_strerror(errno));
    return false;
  }
  guint n = tp_params_count(m->params);
  tp_st_write_item *items = g_new0(tp_st_write_item, n);
  float **host = g_new0(float *, n);
  bool ok = true;
  for (guint i = 0; ok && i < n; i++) {
    tp_tensor *p = tp_params_at(m->params, i);
    host[i] = g_malloc((size_t)tp_tensor_numel(p) * sizeof(float) + 1);
    ok = tp_params_get_f32(m->params, ctx, i, host[i], err);
    items[i].name = p->name;
    items[i].dtype = TP_F32;
    items[i].ndim = p->ndim;
    for (int d = 0; d < p->ndim; d++) items[i].shape[d] = p->shape[d];
    items[i].data = host[i];
  }
  char *wpath = g_build_filename(dir, "model.safetensors", NULL);
  char *cpath = g_build_filename(dir, "config.json", NULL);
  ok = ok && tp_safetensors_write(wpath, items, n, NULL, err) && write_config(m, cpath, err);
  if (ok && vocab_path) {
    char *base = g_path_get_basename(vocab_path);
    char *vpath = g_build_filename(dir, g_str_has_suffix(base, ".json") ? "tokenizer.json"
                                                                         : "vocab.txt", NULL);
    ok = copy_file(vocab_path, vpath, err);
    g_free(vpath);
    g_free(base);
  }
  for (guint i = 0; i < n; i++) g_free(host[i]);
  g_free(host);
  g_free(items);
  g_free(wpath);
  g_free(cpath);
  return ok;
}
