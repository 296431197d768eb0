/* A model plugin whose interface struct is smaller than this header's:
 * TP_TEST_IFACE_SIZE is TP_MODEL_IFACE_MIN_SIZE (a plugin built before the
 * optional slots existed: it must load, its optional slots read as absent) or
 * less (it must be refused). It is only loaded, never run. */
#include <stddef.h>

#include "tensorplug/model.h"
#include "tensorplug/plugin.h"

static const char *const presets[] = {"old-preset", NULL};

static bool declare(const tp_model_config *c, tp_params *p, GError **err) {
  (void)c, (void)p, (void)err;
  return false;
}

static bool config_from_json(JsonObject *o, tp_model_config *c, GError **err) {
  (void)o, (void)c, (void)err;
  return false;
}

static void config_to_json(const tp_model_config *c, JsonBuilder *b) { (void)c, (void)b; }

static tp_tensor *forward(tp_ctx *ctx, const tp_model_config *c, tp_params *p, tp_tensor *ids,
                          tp_tensor *mask) {
  (void)ctx, (void)c, (void)p, (void)ids, (void)mask;
  return NULL;
}

static bool preset_config(const char *name, tp_model_config *c) {
  (void)name;
  *c = (tp_model_config){.model_type = "oldmodel", .vocab_size = 10, .hidden = 4, .layers = 1,
                         .heads = 1, .ffn = 4, .max_positions = 8, .num_labels = 2,
                         .layer_norm_eps = 1e-12f, .initializer_range = 0.02f};
  return true;
}

/* The bytes after TP_TEST_IFACE_SIZE are garbage on purpose: the loader must
 * not read them. */
static const struct {
  tp_model_iface iface;
} entry_iface = {{
    .struct_size = TP_TEST_IFACE_SIZE,
    .model_type = "oldmodel",
    .presets = presets,
    .description = "test plugin with an older, smaller model interface",
    .preset_config = preset_config,
    .config_from_json = config_from_json,
    .config_to_json = config_to_json,
    .declare = declare,
    .forward = forward,
    .preset_source = (const char *(*)(const char *))1,
}};

static const tp_plugin entry = {
    .abi_version = TP_PLUGIN_ABI_VERSION,
    .kind = TP_PLUGIN_MODEL,
    .name = "oldmodel",
    .version = "0.0.1",
    .iface = &entry_iface.iface,
};

TP_PLUGIN_EXPORT const tp_plugin *tp_plugin_entry(void) { return &entry; }
