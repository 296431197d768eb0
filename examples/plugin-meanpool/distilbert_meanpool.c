/* distilbert_meanpool.c — an out-of-tree model plugin: DistilBERT with a
 * masked mean-pooling head instead of the first token.
 *
 * It is built against an installed tensorplug only (pkg-config tensorplug),
 * never against the source tree: it proves that a preset is nothing more than
 * a plugin. The backbone is DistilBERT's, with Hugging Face parameter names
 * (distilbert.*), so a DistilBERT checkpoint loads into it; the head is
 *     pooled[b] = sum_t mask[b,t] x[b,t,:] / sum_t mask[b,t]
 * then pre_classifier + ReLU + dropout + classifier, as in
 * DistilBertForSequenceClassification. Everything is core ops, so backward
 * comes from the core's autograd and it runs on every backend. */
#include <string.h>

#include <tensorplug/error.h>
#include <tensorplug/model.h>
#include <tensorplug/ops.h>
#include <tensorplug/plugin.h>

#define MEANPOOL_MODEL_TYPE "distilbert_meanpool"

static const char *const presets[] = {"distilbert-meanpool", "distilbert-base-uncased-meanpool",
                                      NULL};

static bool meanpool_preset(const char *name, tp_model_config *c) {
  bool known = false;
  for (const char *const *p = presets; *p; p++) known = known || strcmp(*p, name) == 0;
  if (!known) return false;
  /* distilbert-base-uncased sizes: the head adds no parameter of its own. */
  *c = (tp_model_config){.model_type = MEANPOOL_MODEL_TYPE, .vocab_size = 30522, .hidden = 768,
                         .layers = 6, .heads = 12, .ffn = 3072, .max_positions = 512,
                         .type_vocab_size = 0, .num_labels = 2, .pad_token_id = 0,
                         .layer_norm_eps = 1e-12f, .hidden_dropout = 0.1f,
                         .attention_dropout = 0.1f, .classifier_dropout = 0.2f,
                         .initializer_range = 0.02f, .label_names = {"NEG", "POS"}};
  return true;
}

/* The same keys as DistilBERT's config.json, so a DistilBERT folder can be
 * turned into this model by changing model_type alone. */
static bool meanpool_config_from_json(JsonObject *o, tp_model_config *c, GError **err) {
  meanpool_preset(presets[0], c);
  const char *act = NULL;
  if (!tp_config_get_string(o, "activation", "gelu", &act, err)) return false;
  if (strcmp(act, "gelu") != 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "activation \"%s\" is not supported by %s (only \"gelu\")", act,
                MEANPOOL_MODEL_TYPE);
    return false;
  }
  if (json_object_get_boolean_member_with_default(o, "sinusoidal_pos_embds", FALSE)) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "sinusoidal_pos_embds=true is not supported by %s", MEANPOOL_MODEL_TYPE);
    return false;
  }
  return tp_config_get_int(o, "vocab_size", true, &c->vocab_size, err) &&
         tp_config_get_int(o, "dim", true, &c->hidden, err) &&
         tp_config_get_int(o, "n_layers", true, &c->layers, err) &&
         tp_config_get_int(o, "n_heads", true, &c->heads, err) &&
         tp_config_get_int(o, "hidden_dim", true, &c->ffn, err) &&
         tp_config_get_int(o, "max_position_embeddings", true, &c->max_positions, err) &&
         tp_config_get_int(o, "pad_token_id", false, &c->pad_token_id, err) &&
         tp_config_get_float(o, "dropout", false, &c->hidden_dropout, err) &&
         tp_config_get_float(o, "attention_dropout", false, &c->attention_dropout, err) &&
         tp_config_get_float(o, "seq_classif_dropout", false, &c->classifier_dropout, err) &&
         tp_config_get_float(o, "initializer_range", false, &c->initializer_range, err) &&
         tp_config_get_labels(o, c, err);
}

static void meanpool_config_to_json(const tp_model_config *c, JsonBuilder *b) {
  tp_config_put_string(b, "model_type", MEANPOOL_MODEL_TYPE);
  tp_config_put_string(b, "pooling", "mean"); /* for a reader that does not know the type */
  tp_config_put_int(b, "vocab_size", c->vocab_size);
  tp_config_put_int(b, "dim", c->hidden);
  tp_config_put_int(b, "n_layers", c->layers);
  tp_config_put_int(b, "n_heads", c->heads);
  tp_config_put_int(b, "hidden_dim", c->ffn);
  tp_config_put_int(b, "max_position_embeddings", c->max_positions);
  tp_config_put_int(b, "pad_token_id", c->pad_token_id);
  tp_config_put_float(b, "dropout", c->hidden_dropout);
  tp_config_put_float(b, "attention_dropout", c->attention_dropout);
  tp_config_put_float(b, "seq_classif_dropout", c->classifier_dropout);
  tp_config_put_float(b, "initializer_range", c->initializer_range);
  tp_config_put_string(b, "activation", "gelu");
  json_builder_set_member_name(b, "sinusoidal_pos_embds");
  json_builder_add_boolean_value(b, FALSE);
  tp_config_put_int(b, "num_labels", c->num_labels);
  /* id2label and label2id are written by the core after this. */
}

static bool meanpool_declare(const tp_model_config *c, tp_params *p, GError **err) {
  (void)err;
  float sd = c->initializer_range;
  int64_t h = c->hidden;
  int64_t we[2] = {c->vocab_size, h}, pe[2] = {c->max_positions, h};
  tp_params_declare(p, "distilbert.embeddings.word_embeddings.weight", 2, we, TP_INIT_NORMAL, sd, 0);
  tp_params_declare(p, "distilbert.embeddings.position_embeddings.weight", 2, pe, TP_INIT_NORMAL,
                    sd, 0);
  tp_params_declare_layernorm(p, "distilbert.embeddings.LayerNorm", h, 0);
  for (int l = 0; l < c->layers; l++) {
    char n[160];
#define LAYER(suffix) (g_snprintf(n, sizeof n, "distilbert.transformer.layer.%d.%s", l, suffix), n)
    tp_params_declare_linear(p, LAYER("attention.q_lin"), h, h, sd, 0);
    tp_params_declare_linear(p, LAYER("attention.k_lin"), h, h, sd, 0);
    tp_params_declare_linear(p, LAYER("attention.v_lin"), h, h, sd, 0);
    tp_params_declare_linear(p, LAYER("attention.out_lin"), h, h, sd, 0);
    tp_params_declare_layernorm(p, LAYER("sa_layer_norm"), h, 0);
    tp_params_declare_linear(p, LAYER("ffn.lin1"), c->ffn, h, sd, 0);
    tp_params_declare_linear(p, LAYER("ffn.lin2"), h, c->ffn, sd, 0);
    tp_params_declare_layernorm(p, LAYER("output_layer_norm"), h, 0);
#undef LAYER
  }
  /* Head tensors: a DistilBERT checkpoint's own head is reused when present
   * (the shapes match), and initialised when absent. */
  tp_params_declare_linear(p, "pre_classifier", h, h, sd, TP_PARAM_HEAD);
  tp_params_declare_linear(p, "classifier", c->num_labels, h, sd, TP_PARAM_HEAD);
  return true;
}

/* x [B, T, H], mask [B, T] i32 (NULL = every token) -> [B, H], the mean of
 * the unmasked tokens. The weights w[b, 0, t] = mask[b,t] / len[b] are data,
 * not parameters, so they are built on the host and uploaded; the pooling is
 * then one batched matmul [B, 1, T] @ [B, T, H] whose backward the core
 * already has. A row with no token at all pools to zeros instead of 0/0. */
static tp_tensor *masked_mean(tp_ctx *ctx, tp_tensor *x, tp_tensor *mask) {
  if (!x) return NULL;
  int64_t bsz = x->shape[0], t = x->shape[1], h = x->shape[2];
  gint32 *m = g_new(gint32, bsz * t);
  float *w = g_new(float, bsz * t);
  GError *err = NULL;
  if (!mask) {
    for (int64_t i = 0; i < bsz * t; i++) m[i] = 1;
  } else if (mask->ndim != 2 || mask->shape[0] != bsz || mask->shape[1] != t ||
             mask->dtype != TP_I32) {
    err = g_error_new(TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                      "%s: the attention mask must be [%lld, %lld] i32", MEANPOOL_MODEL_TYPE,
                      (long long)bsz, (long long)t);
  } else {
    tp_tensor_to_host(ctx, mask, m, &err);
  }
  tp_tensor *pooled = NULL;
  if (err) {
    tp_ctx_fail(ctx, err);
  } else {
    for (int64_t b = 0; b < bsz; b++) {
      int64_t len = 0;
      for (int64_t j = 0; j < t; j++) len += m[b * t + j] != 0;
      for (int64_t j = 0; j < t; j++)
        w[b * t + j] = len > 0 && m[b * t + j] ? 1.0f / (float)len : 0.0f;
    }
    int64_t ws[3] = {bsz, 1, t}, ps[2] = {bsz, h};
    tp_tensor *wt = tp_tensor_from_host(ctx, TP_F32, 3, ws, w); /* [B, 1, T] */
    tp_tensor *p = tp_matmul(ctx, wt, x, false, false, 1.0f);   /* [B, 1, H] */
    pooled = tp_reshape(ctx, p, 2, ps);                         /* [B, H] */
  }
  g_free(m);
  g_free(w);
  return pooled;
}

#define P(...) tp_params_get(p, ctx, __VA_ARGS__)

static tp_tensor *meanpool_forward(tp_ctx *ctx, const tp_model_config *c, tp_params *p,
                                   tp_tensor *ids, tp_tensor *mask) {
  if (!ids || ids->ndim != 2) return NULL;
  int64_t bsz = ids->shape[0], t = ids->shape[1];
  if (t > c->max_positions) {
    tp_ctx_fail(ctx, g_error_new(TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "sequence length %lld "
                                 "exceeds the model's %d positions: lower --max-len",
                                 (long long)t, c->max_positions));
    return NULL;
  }
  tp_tensor *pos = tp_position_ids(ctx, bsz, t);
  /* x [B, T, H] */
  tp_tensor *x = tp_add(ctx, tp_embedding(ctx, P("distilbert.embeddings.word_embeddings.weight"), ids),
                        tp_embedding(ctx, P("distilbert.embeddings.position_embeddings.weight"), pos));
  x = tp_layernorm(ctx, x, P("distilbert.embeddings.LayerNorm.weight"),
                   P("distilbert.embeddings.LayerNorm.bias"), c->layer_norm_eps);
  x = tp_dropout(ctx, x, c->hidden_dropout);
  for (int l = 0; l < c->layers; l++) {
    tp_arena_mark layer_start = tp_ctx_mark(ctx);
#define L(s) P("distilbert.transformer.layer.%d.%s", l, s)
    tp_tensor *q = tp_linear(ctx, x, L("attention.q_lin.weight"), L("attention.q_lin.bias"));
    tp_tensor *k = tp_linear(ctx, x, L("attention.k_lin.weight"), L("attention.k_lin.bias"));
    tp_tensor *v = tp_linear(ctx, x, L("attention.v_lin.weight"), L("attention.v_lin.bias"));
    tp_tensor *a = tp_attention(ctx, q, k, v, mask, NULL, c->heads, c->attention_dropout);
    a = tp_linear(ctx, a, L("attention.out_lin.weight"), L("attention.out_lin.bias"));
    x = tp_layernorm(ctx, tp_add(ctx, a, x), L("sa_layer_norm.weight"), L("sa_layer_norm.bias"),
                     c->layer_norm_eps);
    tp_tensor *f = tp_gelu(ctx, tp_linear(ctx, x, L("ffn.lin1.weight"), L("ffn.lin1.bias")));
    f = tp_linear(ctx, f, L("ffn.lin2.weight"), L("ffn.lin2.bias"));
    f = tp_dropout(ctx, f, c->hidden_dropout);
    x = tp_layernorm(ctx, tp_add(ctx, f, x), L("output_layer_norm.weight"),
                     L("output_layer_norm.bias"), c->layer_norm_eps);
#undef L
    x = tp_ctx_release(ctx, layer_start, x); /* inference: one layer's activations at a time */
  }
  tp_tensor *pooled = masked_mean(ctx, x, mask); /* [B, H] */
  tp_tensor *h = tp_relu(ctx, tp_linear(ctx, pooled, P("pre_classifier.weight"),
                                        P("pre_classifier.bias")));
  h = tp_dropout(ctx, h, c->classifier_dropout);
  return tp_linear(ctx, h, P("classifier.weight"), P("classifier.bias")); /* [B, C] */
}

static const tp_model_iface meanpool_iface = {
    .struct_size = sizeof(tp_model_iface),
    .model_type = MEANPOOL_MODEL_TYPE,
    .presets = presets,
    .description = "DistilBERT with a masked mean-pooling head (out-of-tree example plugin); "
                   "distilbert-meanpool has distilbert-base-uncased's sizes",
    .weight_prefix = "distilbert.",
    .preset_config = meanpool_preset,
    .config_from_json = meanpool_config_from_json,
    .config_to_json = meanpool_config_to_json,
    .declare = meanpool_declare,
    .forward = meanpool_forward,
};

static const tp_plugin meanpool_plugin = {
    .abi_version = TP_PLUGIN_ABI_VERSION,
    .kind = TP_PLUGIN_MODEL,
    .name = MEANPOOL_MODEL_TYPE,
    .version = "0.1.0",
    .iface = &meanpool_iface,
};

TP_PLUGIN_EXPORT const tp_plugin *tp_plugin_entry(void) { return &meanpool_plugin; }
