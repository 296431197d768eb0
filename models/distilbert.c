/* models/distilbert.c — DistilBERT for sequence classification, Hugging Face
 * semantics and names (DistilBertForSequenceClassification): word + learned
 * position embeddings, post-LN blocks with GELU FFN, then pre_classifier +
 * ReLU + classifier on the first token. Core ops only. */
#include <string.h>

#include "tensorplug/error.h"
#include "tensorplug/model.h"
#include "tensorplug/ops.h"
#include "tensorplug/plugin.h"

static const char *const presets[] = {"distilbert-base-uncased", "distil_bert_base_en_uncased",
                                      "distilbert", NULL};

static bool distilbert_preset(const char *name, tp_model_config *c) {
  bool known = false;
  for (const char *const *p = presets; *p; p++) known = known || strcmp(*p, name) == 0;
  if (!known) return false;
  *c = (tp_model_config){.model_type = "distilbert", .vocab_size = 30522, .hidden = 768,
                         .layers = 6, .heads = 12, .ffn = 3072, .max_positions = 512,
                         .type_vocab_size = 0, .num_labels = 2, .pad_token_id = 0,
                         .layer_norm_eps = 1e-12f, .hidden_dropout = 0.1f,
                         .attention_dropout = 0.1f, .classifier_dropout = 0.2f,
                         .initializer_range = 0.02f, .label_names = {"NEG", "POS"}};
  return true;
}

static bool distilbert_config_from_json(JsonObject *o, tp_model_config *c, GError **err) {
  distilbert_preset("distilbert", c);
  const char *act = NULL;
  if (!tp_config_get_string(o, "activation", "gelu", &act, err)) return false;
  if (strcmp(act, "gelu") != 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "activation \"%s\" is not supported (only "
                "\"gelu\")", act);
    return false;
  }
  if (json_object_get_boolean_member_with_default(o, "sinusoidal_pos_embds", FALSE)) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "sinusoidal_pos_embds=true is not supported");
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

static void distilbert_config_to_json(const tp_model_config *c, JsonBuilder *b) {
  tp_config_put_string(b, "model_type", "distilbert");
  json_builder_set_member_name(b, "architectures");
  json_builder_begin_array(b);
  json_builder_add_string_value(b, "DistilBertForSequenceClassification");
  json_builder_end_array(b);
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
  tp_config_put_float(b, "qa_dropout", 0.1f);
  tp_config_put_float(b, "initializer_range", c->initializer_range);
  tp_config_put_string(b, "activation", "gelu");
  json_builder_set_member_name(b, "sinusoidal_pos_embds");
  json_builder_add_boolean_value(b, FALSE);
  json_builder_set_member_name(b, "tie_weights_");
  json_builder_add_boolean_value(b, TRUE);
  tp_config_put_int(b, "num_labels", c->num_labels);
}

static bool distilbert_declare(const tp_model_config *c, tp_params *p, GError **err) {
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
  tp_params_declare_linear(p, "pre_classifier", h, h, sd, TP_PARAM_HEAD);
  tp_params_declare_linear(p, "classifier", c->num_labels, h, sd, TP_PARAM_HEAD);
  return true;
}

#define P(...) tp_params_get(p, ctx, __VA_ARGS__)

static tp_tensor *distilbert_forward(tp_ctx *ctx, const tp_model_config *c, tp_params *p,
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
  tp_tensor *x = tp_add_layernorm(
      ctx, tp_embedding(ctx, P("distilbert.embeddings.word_embeddings.weight"), ids),
      tp_embedding(ctx, P("distilbert.embeddings.position_embeddings.weight"), pos),
      P("distilbert.embeddings.LayerNorm.weight"), P("distilbert.embeddings.LayerNorm.bias"),
      c->layer_norm_eps, 0.0f);
  x = tp_dropout(ctx, x, c->hidden_dropout);
  /* With much padding, the position-wise layers run on the real tokens only
   * (x [N, H]); attention sees them at their padded places. Not while
   * dropout draws masks: packed rows would take other counters than their
   * padded places, and the masks of a batch split into micro-batches or
   * ranks (tp_ctx_set_batch_share) must not depend on the split. */
  bool drops = tp_ctx_training(ctx) && (c->hidden_dropout > 0 || c->attention_dropout > 0);
  tp_pack pk;
  bool packed = !drops && tp_pack_plan(ctx, mask, TP_PACK_MAX_FILL, &pk);
  if (packed) x = tp_gather_rows(ctx, x, pk.rows);
  for (int l = 0; l < c->layers; l++) {
    tp_arena_mark layer_start = tp_ctx_mark(ctx);
#define L(s) P("distilbert.transformer.layer.%d.%s", l, s)
    /* The head reads only the first token: the last layer computes queries,
     * attention output and FFN for that position alone (keys and values still
     * see every token) — same logits and gradients, far less work.
     * xq [B, Tq, H] (packed: [N, H]), Tq = T, or 1 in the last layer ([B, H]
     * packed). */
    tp_tensor *xq = x;
    if (l == c->layers - 1) {
      int64_t one[3] = {bsz, 1, c->hidden};
      xq = packed ? tp_gather_rows(ctx, x, pk.first)
                  : tp_reshape(ctx, tp_first_token(ctx, x), 3, one);
    }
    tp_tensor *q = tp_linear(ctx, xq, L("attention.q_lin.weight"), L("attention.q_lin.bias"));
    tp_tensor *k = tp_linear(ctx, x, L("attention.k_lin.weight"), L("attention.k_lin.bias"));
    tp_tensor *v = tp_linear(ctx, x, L("attention.v_lin.weight"), L("attention.v_lin.bias"));
    tp_tensor *a = packed ? tp_attention_rows(ctx, &pk, q, k, v, mask, NULL, c->heads,
                                              c->attention_dropout)
                          : tp_attention(ctx, q, k, v, mask, NULL, c->heads, c->attention_dropout);
    a = tp_linear(ctx, a, L("attention.out_lin.weight"), L("attention.out_lin.bias"));
    x = tp_add_layernorm(ctx, a, xq, L("sa_layer_norm.weight"), L("sa_layer_norm.bias"),
                         c->layer_norm_eps, 0.0f);
    tp_tensor *f = tp_linear_gelu(ctx, x, L("ffn.lin1.weight"), L("ffn.lin1.bias"));
    f = tp_linear(ctx, f, L("ffn.lin2.weight"), L("ffn.lin2.bias"));
    /* LayerNorm(dropout(f) + x), one op (a fused pass where the backend has it) */
    x = tp_add_layernorm(ctx, f, x, L("output_layer_norm.weight"), L("output_layer_norm.bias"),
                         c->layer_norm_eps, c->hidden_dropout);
#undef L
    /* inference keeps one layer's activations at a time */
    x = tp_ctx_release(ctx, layer_start, x);
  }
  tp_tensor *cls = !packed ? tp_first_token(ctx, x) /* [B, H] */
                   : c->layers > 0 ? x : tp_gather_rows(ctx, x, pk.first);
  tp_tensor *h = tp_relu(ctx, tp_linear(ctx, cls, P("pre_classifier.weight"), P("pre_classifier.bias")));
  h = tp_dropout(ctx, h, c->classifier_dropout);
  return tp_linear(ctx, h, P("classifier.weight"), P("classifier.bias")); /* [B, C] */
}

static const tp_model_iface distilbert_iface = {
    .struct_size = sizeof(tp_model_iface),
    .model_type = "distilbert",
    .presets = presets,
    .description = "DistilBERT (DistilBertForSequenceClassification): distilbert-base-uncased "
                   "is 6 layers, hidden 768, 12 heads, FFN 3072",
    .weight_prefix = "distilbert.",
    .preset_config = distilbert_preset,
    .config_from_json = distilbert_config_from_json,
    .config_to_json = distilbert_config_to_json,
    .declare = distilbert_declare,
    .forward = distilbert_forward,
};

static const tp_plugin distilbert_plugin = {
    .abi_version = TP_PLUGIN_ABI_VERSION,
    .kind = TP_PLUGIN_MODEL,
    .name = "distilbert",
    .version = "0.1.0",
    .iface = &distilbert_iface,
};

TP_PLUGIN_EXPORT const tp_plugin *tp_plugin_entry(void) { return &distilbert_plugin; }
