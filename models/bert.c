/* models/bert.c — BERT for sequence classification, Hugging Face semantics and
 * names (BertForSequenceClassification): word + position + token-type
 * embeddings, post-LN encoder blocks with GELU FFN, pooler dense + tanh on
 * [CLS], classifier. Written only with core ops; backward is autograd's. */
#include <string.h>

#include "tensorplug/error.h"
#include "tensorplug/model.h"
#include "tensorplug/ops.h"
#include "tensorplug/plugin.h"

static const char *const presets[] = {"bert-base-uncased", "bert_base_en_uncased", "bert", NULL};

static bool bert_preset(const char *name, tp_model_config *c) {
  bool known = false;
  for (const char *const *p = presets; *p; p++) known = known || strcmp(*p, name) == 0;
  if (!known) return false;
  *c = (tp_model_config){.model_type = "bert", .vocab_size = 30522, .hidden = 768, .layers = 12,
                         .heads = 12, .ffn = 3072, .max_positions = 512, .type_vocab_size = 2,
                         .num_labels = 2, .pad_token_id = 0, .layer_norm_eps = 1e-12f,
                         .hidden_dropout = 0.1f, .attention_dropout = 0.1f,
                         .classifier_dropout = 0.1f, .initializer_range = 0.02f,
                         .label_names = {"NEG", "POS"}};
  return true;
}

static bool bert_config_from_json(JsonObject *o, tp_model_config *c, GError **err) {
  bert_preset("bert", c); /* HF defaults for absent optional keys */
  const char *act = NULL;
  if (!tp_config_get_string(o, "hidden_act", "gelu", &act, err)) return false;
  if (strcmp(act, "gelu") != 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "hidden_act \"%s\" is not supported (only the "
                "erf GELU, \"gelu\")", act);
    return false;
  }
  const char *pos = NULL;
  if (!tp_config_get_string(o, "position_embedding_type", "absolute", &pos, err)) return false;
  if (strcmp(pos, "absolute") != 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "position_embedding_type \"%s\" is not "
                "supported (only \"absolute\")", pos);
    return false;
  }
  c->classifier_dropout = -1.0f;
  if (!tp_config_get_int(o, "vocab_size", true, &c->vocab_size, err) ||
      !tp_config_get_int(o, "hidden_size", true, &c->hidden, err) ||
      !tp_config_get_int(o, "num_hidden_layers", true, &c->layers, err) ||
      !tp_config_get_int(o, "num_attention_heads", true, &c->heads, err) ||
      !tp_config_get_int(o, "intermediate_size", true, &c->ffn, err) ||
      !tp_config_get_int(o, "max_position_embeddings", true, &c->max_positions, err) ||
      !tp_config_get_int(o, "type_vocab_size", false, &c->type_vocab_size, err) ||
      !tp_config_get_int(o, "pad_token_id", false, &c->pad_token_id, err) ||
      !tp_config_get_float(o, "layer_norm_eps", false, &c->layer_norm_eps, err) ||
      !tp_config_get_float(o, "hidden_dropout_prob", false, &c->hidden_dropout, err) ||
      !tp_config_get_float(o, "attention_probs_dropout_prob", false, &c->attention_dropout, err) ||
      !tp_config_get_float(o, "classifier_dropout", false, &c->classifier_dropout, err) ||
      !tp_config_get_float(o, "initializer_range", false, &c->initializer_range, err) ||
      !tp_config_get_labels(o, c, err))
    return false;
  /* HF: classifier_dropout null means hidden_dropout_prob (and a negative
   * number given in the file is an error, not a null) */
  JsonNode *cd = json_object_get_member(o, "classifier_dropout");
  if (c->classifier_dropout < 0 && cd && !JSON_NODE_HOLDS_NULL(cd)) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "classifier_dropout %g is out of range (0 to 1, "
                "exclusive)", (double)c->classifier_dropout);
    return false;
  }
  if (c->classifier_dropout < 0) c->classifier_dropout = c->hidden_dropout;
  /* forward() reads row 0 of the token-type table for every token */
  if (c->type_vocab_size < 1) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "type_vocab_size %d: BERT reads token type 0, "
                "so the table needs at least 1 row (bert-base-uncased has 2)", c->type_vocab_size);
    return false;
  }
  return true;
}

static void bert_config_to_json(const tp_model_config *c, JsonBuilder *b) {
  tp_config_put_string(b, "model_type", "bert");
  json_builder_set_member_name(b, "architectures");
  json_builder_begin_array(b);
  json_builder_add_string_value(b, "BertForSequenceClassification");
  json_builder_end_array(b);
  tp_config_put_int(b, "vocab_size", c->vocab_size);
  tp_config_put_int(b, "hidden_size", c->hidden);
  tp_config_put_int(b, "num_hidden_layers", c->layers);
  tp_config_put_int(b, "num_attention_heads", c->heads);
  tp_config_put_int(b, "intermediate_size", c->ffn);
  tp_config_put_int(b, "max_position_embeddings", c->max_positions);
  tp_config_put_int(b, "type_vocab_size", c->type_vocab_size);
  tp_config_put_int(b, "pad_token_id", c->pad_token_id);
  tp_config_put_float(b, "layer_norm_eps", c->layer_norm_eps);
  tp_config_put_float(b, "hidden_dropout_prob", c->hidden_dropout);
  tp_config_put_float(b, "attention_probs_dropout_prob", c->attention_dropout);
  tp_config_put_float(b, "classifier_dropout", c->classifier_dropout);
  tp_config_put_float(b, "initializer_range", c->initializer_range);
  tp_config_put_string(b, "hidden_act", "gelu");
  tp_config_put_string(b, "position_embedding_type", "absolute");
  tp_config_put_int(b, "num_labels", c->num_labels);
}

static bool bert_declare(const tp_model_config *c, tp_params *p, GError **err) {
  (void)err;
  float sd = c->initializer_range;
  int64_t h = c->hidden;
  int64_t we[2] = {c->vocab_size, h}, pe[2] = {c->max_positions, h}, te[2] = {c->type_vocab_size, h};
  tp_params_declare(p, "bert.embeddings.word_embeddings.weight", 2, we, TP_INIT_NORMAL, sd, 0);
  tp_params_declare(p, "bert.embeddings.position_embeddings.weight", 2, pe, TP_INIT_NORMAL, sd, 0);
  tp_params_declare(p, "bert.embeddings.token_type_embeddings.weight", 2, te, TP_INIT_NORMAL, sd, 0);
  tp_params_declare_layernorm(p, "bert.embeddings.LayerNorm", h, 0);
  for (int l = 0; l < c->layers; l++) {
    char n[160];
#define LAYER(suffix) (g_snprintf(n, sizeof n, "bert.encoder.layer.%d.%s", l, suffix), n)
    tp_params_declare_linear(p, LAYER("attention.self.query"), h, h, sd, 0);
    tp_params_declare_linear(p, LAYER("attention.self.key"), h, h, sd, 0);
    tp_params_declare_linear(p, LAYER("attention.self.value"), h, h, sd, 0);
    tp_params_declare_linear(p, LAYER("attention.output.dense"), h, h, sd, 0);
    tp_params_declare_layernorm(p, LAYER("attention.output.LayerNorm"), h, 0);
    tp_params_declare_linear(p, LAYER("intermediate.dense"), c->ffn, h, sd, 0);
    tp_params_declare_linear(p, LAYER("output.dense"), h, c->ffn, sd, 0);
    tp_params_declare_layernorm(p, LAYER("output.LayerNorm"), h, 0);
#undef LAYER
  }
  /* sentence-embedding checkpoints may lack the pooler: it is a head */
  tp_params_declare_linear(p, "bert.pooler.dense", h, h, sd, TP_PARAM_HEAD);
  tp_params_declare_linear(p, "classifier", c->num_labels, h, sd, TP_PARAM_HEAD);
  return true;
}

#define P(...) tp_params_get(p, ctx, __VA_ARGS__)

static tp_tensor *bert_forward(tp_ctx *ctx, const tp_model_config *c, tp_params *p, tp_tensor *ids,
                               tp_tensor *mask) {
  if (!ids || ids->ndim != 2) return NULL;
  int64_t bsz = ids->shape[0], t = ids->shape[1];
  if (t > c->max_positions) {
    tp_ctx_fail(ctx, g_error_new(TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "sequence length %lld "
                                 "exceeds the model's %d positions: lower --max-len",
                                 (long long)t, c->max_positions));
    return NULL;
  }
  tp_tensor *pos = tp_position_ids(ctx, bsz, t);
  int64_t shape[2] = {bsz, t};
  tp_tensor *types = tp_tensor_zeros(ctx, TP_I32, 2, shape);
  /* x [B, T, H] */
  tp_tensor *x = tp_add(ctx, tp_embedding(ctx, P("bert.embeddings.word_embeddings.weight"), ids),
                        tp_embedding(ctx, P("bert.embeddings.position_embeddings.weight"), pos));
  x = tp_add_layernorm(ctx, x,
                       tp_embedding(ctx, P("bert.embeddings.token_type_embeddings.weight"), types),
                       P("bert.embeddings.LayerNorm.weight"), P("bert.embeddings.LayerNorm.bias"),
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
#define L(s) P("bert.encoder.layer.%d.%s", l, s)
    /* The head reads only [CLS]: the last layer computes queries, attention
     * output and FFN for that position alone (keys and values still see every
     * token). Same logits and gradients as the full layer, about 1/T of its
     * query-side work. xq [B, Tq, H] (packed: [N, H]), Tq = T, or 1 in the
     * last layer ([B, H] packed). */
    tp_tensor *xq = x;
    if (l == c->layers - 1) {
      int64_t one[3] = {bsz, 1, c->hidden};
      xq = packed ? tp_gather_rows(ctx, x, pk.first)
                  : tp_reshape(ctx, tp_first_token(ctx, x), 3, one);
    }
    tp_tensor *q = tp_linear(ctx, xq, L("attention.self.query.weight"), L("attention.self.query.bias"));
    tp_tensor *k = tp_linear(ctx, x, L("attention.self.key.weight"), L("attention.self.key.bias"));
    tp_tensor *v = tp_linear(ctx, x, L("attention.self.value.weight"), L("attention.self.value.bias"));
    tp_tensor *a = packed ? tp_attention_rows(ctx, &pk, q, k, v, mask, NULL, c->heads,
                                              c->attention_dropout)
                          : tp_attention(ctx, q, k, v, mask, NULL, c->heads, c->attention_dropout);
    a = tp_linear(ctx, a, L("attention.output.dense.weight"), L("attention.output.dense.bias"));
    /* LayerNorm(dropout(a) + xq), one op (a fused pass where the backend has it) */
    x = tp_add_layernorm(ctx, a, xq, L("attention.output.LayerNorm.weight"),
                         L("attention.output.LayerNorm.bias"), c->layer_norm_eps,
                         c->hidden_dropout);
    tp_tensor *f = tp_linear_gelu(ctx, x, L("intermediate.dense.weight"),
                                  L("intermediate.dense.bias")); /* [B, T, ffn] */
    f = tp_linear(ctx, f, L("output.dense.weight"), L("output.dense.bias"));
    x = tp_add_layernorm(ctx, f, x, L("output.LayerNorm.weight"), L("output.LayerNorm.bias"),
                         c->layer_norm_eps, c->hidden_dropout);
#undef L
    /* inference keeps one layer's activations at a time */
    x = tp_ctx_release(ctx, layer_start, x);
  }
  tp_tensor *cls = !packed ? tp_first_token(ctx, x) /* [B, H] */
                   : c->layers > 0 ? x : tp_gather_rows(ctx, x, pk.first);
  tp_tensor *pooled = tp_tanh(ctx, tp_linear(ctx, cls, P("bert.pooler.dense.weight"),
                                             P("bert.pooler.dense.bias")));
  pooled = tp_dropout(ctx, pooled, c->classifier_dropout);
  return tp_linear(ctx, pooled, P("classifier.weight"), P("classifier.bias")); /* [B, C] */
}

static const tp_model_iface bert_iface = {
    .struct_size = sizeof(tp_model_iface),
    .model_type = "bert",
    .presets = presets,
    .description = "BERT (BertForSequenceClassification): bert-base-uncased is 12 layers, "
                   "hidden 768, 12 heads, FFN 3072",
    .weight_prefix = "bert.",
    .preset_config = bert_preset,
    .config_from_json = bert_config_from_json,
    .config_to_json = bert_config_to_json,
    .declare = bert_declare,
    .forward = bert_forward,
};

static const tp_plugin bert_plugin = {
    .abi_version = TP_PLUGIN_ABI_VERSION,
    .kind = TP_PLUGIN_MODEL,
    .name = "bert",
    .version = "0.1.0",
    .iface = &bert_iface,
};

TP_PLUGIN_EXPORT const tp_plugin *tp_plugin_entry(void) { return &bert_plugin; }
