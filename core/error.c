/* core/error.c — the tensorplug GError domain. */
#include "tensorplug/error.h"

G_DEFINE_QUARK(tensorplug-error-quark, tp_error)
