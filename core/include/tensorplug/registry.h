/* tensorplug/registry.h — finding and loading plugins (the only global state).
 *
 * Search order: each folder of $TENSORPLUG_PLUGIN_PATH (colon list), then the
 * build tree (only when libtensorplug itself runs from the build tree), then
 * the install folder (libdir/tensorplug). Never the current directory. A
 * plugin that fails (missing entry symbol, other ABI version, unresolvable
 * dependency, a NULL required slot) is recorded with the reason and the scan
 * goes on.
 *
 * Plugins are trusted code: loading one runs its constructors with the
 * user's rights. Before anything is loaded, folders must be absolute paths,
 * and each folder and file must be owned by the user or root and not be
 * writable by other users (world, or a group other than the user's or
 * root's); otherwise they are refused with the reason. A plugin refused
 * after loading (ABI version, slots) has already run its constructors. */
#pragma once
#include <stdbool.h>
#include <glib.h>
#include "tensorplug/plugin.h"
#include "tensorplug/backend_iface.h"

G_BEGIN_DECLS

typedef struct tp_model_iface tp_model_iface;

typedef struct tp_plugin_record {
  char *path;    /* the file */
  char *name;    /* from the entry, or the file name when it never loaded */
  char *version; /* NULL when unknown */
  int kind;      /* tp_plugin_kind, 0 when unknown */
  bool loaded;
  char *why_not;           /* reason it was refused, NULL when loaded */
  const tp_plugin *plugin; /* NULL unless loaded */
} tp_plugin_record;

typedef struct tp_registry tp_registry;

/* The process-wide registry, scanned on first use (thread-safe). */
tp_registry *tp_registry_get_default(void);

/* A private registry scanning only `dirs` (NULL-terminated); for tests. */
tp_registry *tp_registry_new_for_dirs(const char *const *dirs);
void tp_registry_free(tp_registry *r);

guint tp_registry_count(const tp_registry *r);
const tp_plugin_record *tp_registry_record(const tp_registry *r, guint i);
/* The folders searched, in order (NULL-terminated, owned by the registry). */
const char *const *tp_registry_dirs(const tp_registry *r);

/* NULL with an error naming what was found when no loaded backend has that name. */
const tp_backend_iface *tp_registry_find_backend(const tp_registry *r, const char *name,
                                                 GError **err);
/* The collective plugin serving a backend's memory (NCCL for "cuda"), and its
 * plugin name; NULL when none is loaded (the core then sums through host
 * memory). */
typedef struct tp_collective_iface tp_collective_iface;
const tp_collective_iface *tp_registry_find_collective(const tp_registry *r, const char *backend,
                                                       const char **name);
/* The model plugin whose model_type or one of whose presets equals `name`. */
const tp_model_iface *tp_registry_find_model(const tp_registry *r, const char *name, GError **err);

G_END_DECLS
