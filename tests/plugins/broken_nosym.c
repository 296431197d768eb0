/* A shared object without the entry symbol: not a tensorplug plugin. */
#include "tensorplug/plugin.h"

TP_PLUGIN_EXPORT int tp_something_else(void);
int tp_something_else(void) { return 42; }
