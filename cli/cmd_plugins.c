/* cli/cmd_plugins.c — `tensorplug plugins`: what was found, what loaded, why
 * not, and each backend's devices. Always exits 0 when it could look. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "tensorplug/model.h"
#include "tensorplug/registry.h"

static const char *kind_name(int k) {
  return k == TP_PLUGIN_BACKEND ? "backend" : k == TP_PLUGIN_MODEL ? "model" : "?";
}

static void print_devices(const tp_backend_iface *b, JsonBuilder *jb) {
  tp_device_info infos[16];
  memset(infos, 0, sizeof infos);
  GError *err = NULL;
  int n = b->probe(infos, 16, &err);
  if (jb) {
    json_builder_set_member_name(jb, "devices");
    json_builder_begin_array(jb);
  }
  if (n <= 0 && !jb) printf("           no usable device: %s\n", err ? err->message : "none found");
  if (n <= 0 && jb) {
    json_builder_end_array(jb);
    json_builder_set_member_name(jb, "no_device_reason");
    json_builder_add_string_value(jb, err ? err->message : "none found");
  }
  for (int i = 0; i < n && i < 16; i++) {
    if (jb) {
      json_builder_begin_object(jb);
      json_builder_set_member_name(jb, "name");
      json_builder_add_string_value(jb, infos[i].name);
      json_builder_set_member_name(jb, "description");
      json_builder_add_string_value(jb, infos[i].description);
      json_builder_set_member_name(jb, "memory_bytes");
      json_builder_add_int_value(jb, (gint64)infos[i].memory_bytes);
      json_builder_set_member_name(jb, "compute_units");
      json_builder_add_int_value(jb, infos[i].compute_units);
      json_builder_set_member_name(jb, "software");
      json_builder_add_boolean_value(jb, infos[i].is_software);
      json_builder_end_object(jb);
    } else {
      printf("           device %d: %s — %s%s\n", i, infos[i].name, infos[i].description,
             infos[i].is_software ? " (software)" : "");
    }
  }
  if (jb && n > 0) json_builder_end_array(jb);
  g_clear_error(&err);
}

static void print_presets(const tp_model_iface *m, JsonBuilder *jb) {
  const char *(*source)(const char *) = TP_MODEL_IFACE_SLOT(m, preset_source);
  if (jb) {
    json_builder_set_member_name(jb, "model_type");
    json_builder_add_string_value(jb, m->model_type);
    json_builder_set_member_name(jb, "presets");
    json_builder_begin_array(jb);
    for (const char *const *p = m->presets; p && *p; p++) json_builder_add_string_value(jb, *p);
    json_builder_end_array(jb);
    json_builder_set_member_name(jb, "weights");
    json_builder_begin_object(jb); /* preset -> scripts/fetch-model.sh arguments */
    for (const char *const *p = m->presets; p && *p; p++) {
      json_builder_set_member_name(jb, *p);
      json_builder_add_string_value(jb, source && source(*p) ? source(*p) : *p);
    }
    json_builder_end_object(jb);
    return;
  }
  printf("           model_type %s; presets:", m->model_type);
  for (const char *const *p = m->presets; p && *p; p++) printf(" %s", *p);
  printf("\n");
  if (m->description) printf("           %s\n", m->description);
  /* where the weights come from, when not from the Hugging Face id itself;
   * presets sharing a source share a line */
  for (const char *const *p = m->presets; source && p && *p; p++) {
    const char *src = source(*p);
    if (!src || (p != m->presets && g_strcmp0(source(p[-1]), src) == 0)) continue;
    printf("           weights of %s", *p);
    for (const char *const *q = p + 1; *q && g_strcmp0(source(*q), src) == 0; q++) printf(", %s", *q);
    printf(": scripts/fetch-model.sh %s DIR\n", src);
  }
}

static void record_json(JsonBuilder *jb, const tp_plugin_record *r) {
  json_builder_begin_object(jb);
  json_builder_set_member_name(jb, "path");
  json_builder_add_string_value(jb, r->path);
  json_builder_set_member_name(jb, "kind");
  json_builder_add_string_value(jb, kind_name(r->kind));
  json_builder_set_member_name(jb, "name");
  json_builder_add_string_value(jb, r->name);
  json_builder_set_member_name(jb, "version");
  json_builder_add_string_value(jb, r->version ? r->version : "");
  json_builder_set_member_name(jb, "loaded");
  json_builder_add_boolean_value(jb, r->loaded);
  if (!r->loaded) {
    json_builder_set_member_name(jb, "why_not");
    json_builder_add_string_value(jb, r->why_not);
  } else if (r->plugin->kind == TP_PLUGIN_BACKEND) {
    print_devices(r->plugin->iface, jb);
  } else {
    print_presets(r->plugin->iface, jb);
  }
  json_builder_end_object(jb);
}

int tp_cmd_plugins(int argc, char **argv) {
  gboolean json = FALSE;
  GOptionEntry entries[] = {
      {"json", 0, 0, G_OPTION_ARG_NONE, &json, "Print one JSON object", NULL},
      G_OPTION_ENTRY_NULL};
  GOptionContext *oc = g_option_context_new("- list plugins");
  g_option_context_set_summary(oc,
      "Lists every plugin found in the plugin folders: kind, name, version, whether it loaded\n"
      "and why not, each backend's devices and each model plugin's presets.\n"
      "Folders: $TENSORPLUG_PLUGIN_PATH (colon list), the build tree, the install folder.");
  g_option_context_add_main_entries(oc, entries, NULL);
  bool ok = tp_cli_parse(oc, &argc, &argv);
  g_option_context_free(oc);
  if (!ok) return TP_EXIT_USAGE;

  tp_registry *reg = tp_registry_get_default();
  guint n = tp_registry_count(reg);
  if (json) {
    JsonBuilder *jb = json_builder_new();
    json_builder_begin_object(jb);
    json_builder_set_member_name(jb, "folders");
    json_builder_begin_array(jb);
    for (const char *const *d = tp_registry_dirs(reg); *d; d++) json_builder_add_string_value(jb, *d);
    json_builder_end_array(jb);
    json_builder_set_member_name(jb, "plugins");
    json_builder_begin_array(jb);
    for (guint i = 0; i < n; i++) record_json(jb, tp_registry_record(reg, i));
    json_builder_end_array(jb);
    json_builder_end_object(jb);
    JsonGenerator *gen = json_generator_new();
    json_generator_set_pretty(gen, TRUE);
    JsonNode *root = json_builder_get_root(jb);
    json_generator_set_root(gen, root);
    char *s = json_generator_to_data(gen, NULL);
    printf("%s\n", s);
    g_free(s);
    json_node_unref(root);
    g_object_unref(gen);
    g_object_unref(jb);
    return TP_EXIT_OK;
  }
  printf("Plugin folders searched, in order:\n");
  for (const char *const *d = tp_registry_dirs(reg); *d; d++)
    printf("  %s%s\n", *d, g_file_test(*d, G_FILE_TEST_IS_DIR) ? "" : "  (absent)");
  printf("\n%-8s %-12s %-8s %-8s %s\n", "KIND", "NAME", "VERSION", "STATUS", "PATH");
  for (guint i = 0; i < n; i++) {
    const tp_plugin_record *r = tp_registry_record(reg, i);
    printf("%-8s %-12s %-8s %-8s %s\n", kind_name(r->kind), r->name,
           r->version ? r->version : "-", r->loaded ? "loaded" : "refused", r->path);
    if (!r->loaded) printf("           why: %s\n", r->why_not);
    else if (r->plugin->kind == TP_PLUGIN_BACKEND) print_devices(r->plugin->iface, NULL);
    else print_presets(r->plugin->iface, NULL);
  }
  if (n == 0) printf("(no plugins found: set TENSORPLUG_PLUGIN_PATH to the folder holding them)\n");
  return TP_EXIT_OK;
}
