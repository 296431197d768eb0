/* A plugin built for another ABI version: the loader must refuse it and name
 * both versions. */
#include "tensorplug/plugin.h"

static const tp_plugin entry = {
    .abi_version = 999u, /* a version no tensorplug speaks */
    .kind = TP_PLUGIN_BACKEND,
    .name = "future",
    .version = "9.9.9",
    .iface = &entry, /* never read: the version check comes first */
};

TP_PLUGIN_EXPORT const tp_plugin *tp_plugin_entry(void) { return &entry; }
