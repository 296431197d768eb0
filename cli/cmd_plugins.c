/* cli/cmd_plugins.c — `tensorplug plugins`: what was found, what loaded, why
 * not, and each backend's devices. Always exits 0 when it could look. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "tensorplug/backend.h"
#include "tensorplug/collective_iface.h"
#include "tensorplug/model.h"
#include "tensorplug/registry.h"

static const char *kind_name(int k) {
  return k == TP_PLUGIN_BACKEND      ? "backend"
         : k == TP_PLUGIN_MODEL      ? "model"
         : k == TP_PLUGIN_COLLECTIVE ? "collective"
                                     : "?";
}

static char *size_str(uint64_t bytes) {
  if (bytes == 0) return g_strdup("no limit");
  return g_format_size_full(bytes, G_FORMAT_SIZE_IEC_UNITS);
}

static char *dtypes_str(uint32_t mask) {
  GString *s = g_string_new(NULL);
  const tp_dtype all[] = {TP_F32, TP_BF16, TP_F16, TP_I32, TP_I8};
  for (size_t i = 0; i < G_N_ELEMENTS(all); i++)
    if (mask & TP_DTYPE_BIT(all[i])) g_string_append_printf(s, "%s%s", s->len ? "," : "",
                                                            tp_dtype_name(all[i]));
  return g_string_free(s, FALSE);
}

static void put_u64(JsonBuilder *jb, const char *k, uint64_t v) {
  json_builder_set_member_name(jb, k);
  json_builder_add_int_value(jb, (gint64)v);
}

static void device_json(JsonBuilder *jb, const tp_device_info *in) {
  char *gc = dtypes_str(in->gemm_compute), *st = dtypes_str(in->storage_dtypes);
  json_builder_begin_object(jb);
  json_builder_set_member_name(jb, "name");
  json_builder_add_string_value(jb, in->name);
  json_builder_set_member_name(jb, "description");
  json_builder_add_string_value(jb, in->description);
  put_u64(jb, "memory_bytes", in->memory_bytes);
  put_u64(jb, "compute_units", (uint64_t)in->compute_units);
  json_builder_set_member_name(jb, "software");
  json_builder_add_boolean_value(jb, in->is_software);
  json_builder_set_member_name(jb, "discrete");
  json_builder_add_boolean_value(jb, in->is_discrete);
  json_builder_set_member_name(jb, "host_visible");
  json_builder_add_boolean_value(jb, in->host_visible);
  put_u64(jb, "max_alloc_bytes", in->max_alloc_bytes);
  put_u64(jb, "max_binding_bytes", in->max_binding_bytes);
  put_u64(jb, "offset_align", in->offset_align);
  json_builder_set_member_name(jb, "gemm_compute");
  json_builder_add_string_value(jb, gc);
  json_builder_set_member_name(jb, "storage_dtypes");
  json_builder_add_string_value(jb, st);
  json_builder_set_member_name(jb, "features");
  json_builder_add_string_value(jb, in->features);
  json_builder_end_object(jb);
  g_free(gc);
  g_free(st);
}

static void device_text(int i, const tp_device_info *in) {
  char *mem = size_str(in->memory_bytes), *alloc = size_str(in->max_alloc_bytes);
  char *bind = size_str(in->max_binding_bytes), *gc = dtypes_str(in->gemm_compute);
  printf("           device %d: %s%s — %s\n", i, in->name,
         in->is_software ? " (a CPU implementation: slow, never chosen by --backend auto)" : "",
         in->description);
  printf("             memory %s; largest buffer %s; binding %s; offsets aligned to %u; "
         "matrix products in %s\n", mem, alloc, bind, in->offset_align, gc);
  if (in->features[0]) printf("             uses: %s\n", in->features);
  g_free(mem);
  g_free(alloc);
  g_free(bind);
  g_free(gc);
}

static void print_devices(const tp_backend_iface *b, JsonBuilder *jb) {
  tp_device_info infos[16];
  char *why = NULL;
  int n = tp_backend_probe(b, infos, 16, &why);
  if (jb) {
    json_builder_set_member_name(jb, "devices");
    json_builder_begin_array(jb);
    for (int i = 0; i < n; i++) device_json(jb, &infos[i]);
    json_builder_end_array(jb);
    if (why) {
      json_builder_set_member_name(jb, "no_device_reason");
      json_builder_add_string_value(jb, why);
    }
  } else {
    if (why) printf("           no usable device: %s\n", why);
    for (int i = 0; i < n; i++) device_text(i, &infos[i]);
  }
  g_free(why);
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
  } else if (r->plugin->kind == TP_PLUGIN_COLLECTIVE) {
    json_builder_set_member_name(jb, "serves_backend");
    json_builder_add_string_value(jb, ((const tp_collective_iface *)r->plugin->iface)->backend);
  } else {
    print_presets(r->plugin->iface, jb);
  }
  json_builder_end_object(jb);
}

int tp_cmd_plugins(int argc, char **argv) {
  tp_cli_opts o;
  tp_cli_opts_init(&o);
  tp_cli_optset *set = tp_cli_optset_new(NULL,
      "Lists every plugin found in the plugin folders: kind, name, version, whether it loaded\n"
      "and why not, each backend's devices and each model plugin's presets.\n"
      "Folders: $TENSORPLUG_PLUGIN_PATH (colon list), the build tree, the install folder.",
      NULL);
  tp_cli_optset_add_json(set, &o, "Print one JSON object");
  int rc = tp_cli_optset_parse(set, &argc, &argv);
  tp_cli_optset_free(set);
  if (rc < 0 && argc > 1) {
    fprintf(stderr, "tensorplug: error: unexpected argument \"%s\"\n", argv[1]);
    rc = TP_EXIT_USAGE;
  }
  if (rc >= 0) return rc;
  bool json = o.json;

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
    else if (r->plugin->kind == TP_PLUGIN_COLLECTIVE)
      printf("           sums gradients of distributed runs in %s device memory\n",
             ((const tp_collective_iface *)r->plugin->iface)->backend);
    else print_presets(r->plugin->iface, NULL);
  }
  if (n == 0) printf("(no plugins found: set TENSORPLUG_PLUGIN_PATH to the folder holding them)\n");
  return TP_EXIT_OK;
}
