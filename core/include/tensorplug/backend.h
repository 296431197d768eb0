/* tensorplug/backend.h — an opened compute device, as the core uses it. */
#pragma once
#include <stdbool.h>
#include <glib.h>
#include "tensorplug/backend_iface.h"
#include "tensorplug/registry.h"

G_BEGIN_DECLS

typedef struct tp_backend {
  const tp_backend_iface *iface;
  tp_backend_dev *dev;
  char *name; /* "cpu", "cuda", "vulkan" */
  int device_index;
  tp_device_info info;
} tp_backend;

/* name: "auto" (CUDA, else a hardware Vulkan GPU, else CPU), "cpu", "cuda",
 * "vulkan". device: index among the backend's devices (-1 = first).
 * threads: 0 = $TENSORPLUG_NUM_THREADS, else all cores.
 * Fails with TP_ERROR_UNAVAILABLE when that backend cannot run here. */
tp_backend *tp_backend_open(tp_registry *reg, const char *name, int device, int threads,
                            GError **err);
void tp_backend_close(tp_backend *b);

/* Thread count to use when the user gave none: $TENSORPLUG_NUM_THREADS, else
 * the number of online cores. */
int tp_default_threads(void);

G_END_DECLS
