/* tensorplug/plugin.h — the plugin ABI: the one symbol every plugin exports.
 *
 * A plugin is a shared object exporting
 *     const tp_plugin *tp_plugin_entry(void);
 * The core dlopens it, calls the entry, and refuses it (with both versions in
 * the message) when abi_version differs from TP_PLUGIN_ABI_VERSION.
 * Interfaces only ever grow at their end; the version changes only when an
 * existing slot changes meaning. Each interface starts with its struct_size so
 * the core can tell which appended slots a plugin knows about. */
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TP_PLUGIN_ABI_VERSION 2u
#define TP_PLUGIN_ENTRY_SYMBOL "tp_plugin_entry"

typedef enum {
  TP_PLUGIN_BACKEND = 1,
  TP_PLUGIN_MODEL = 2,
  TP_PLUGIN_COLLECTIVE = 3, /* device collectives (NCCL): tensorplug/collective_iface.h */
} tp_plugin_kind;

typedef struct tp_plugin {
  uint32_t abi_version; /* TP_PLUGIN_ABI_VERSION the plugin was built against */
  uint32_t kind;        /* tp_plugin_kind */
  const char *name;     /* "cpu", "cuda", "vulkan", "bert", ... */
  const char *version;  /* the plugin's own version string */
  const void *iface;    /* tp_backend_iface*, tp_model_iface* or tp_collective_iface* by kind */
} tp_plugin;

typedef const tp_plugin *(*tp_plugin_entry_fn)(void);

#if defined(__GNUC__)
#define TP_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define TP_PLUGIN_EXPORT
#endif

#ifdef __cplusplus
}
#endif
