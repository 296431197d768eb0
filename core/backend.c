/* core/backend.c — choosing and opening a compute device. */
#include "tensorplug/backend.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tensorplug/error.h"

int tp_default_threads(void) {
  const char *e = g_getenv("TENSORPLUG_NUM_THREADS");
  if (e && *e) {
    char *end = NULL;
    long v = strtol(e, &end, 10);
    if (end && *end == '\0' && v > 0 && v <= 4096) return (int)v;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

#define TP_MAX_DEVICES 16

/* Opens device `device` (-1: the first suitable) of one named backend. */
static tp_backend *open_named(tp_registry *reg, const char *name, int device, int threads,
                              bool hardware_only, GError **err) {
  const tp_backend_iface *iface = tp_registry_find_backend(reg, name, err);
  if (!iface) return NULL;
  tp_device_info infos[TP_MAX_DEVICES];
  memset(infos, 0, sizeof infos);
  GError *perr = NULL;
  int n = iface->probe(infos, TP_MAX_DEVICES, &perr);
  if (n <= 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_UNAVAILABLE, "backend \"%s\" has no usable device: %s",
                name, perr ? perr->message : "none found");
    g_clear_error(&perr);
    return NULL;
  }
  g_clear_error(&perr);
  if (n > TP_MAX_DEVICES) n = TP_MAX_DEVICES;
  int pick = device;
  if (pick < 0) {
    pick = -1;
    for (int i = 0; i < n && pick < 0; i++)
      if (!hardware_only || !infos[i].is_software) pick = i;
    if (pick < 0) {
      g_set_error(err, TP_ERROR, TP_ERROR_UNAVAILABLE,
                  "backend \"%s\" has only software devices (%s); ask for it by name to use one",
                  name, infos[0].name);
      return NULL;
    }
  } else if (pick >= n) {
    g_set_error(err, TP_ERROR, TP_ERROR_UNAVAILABLE,
                "backend \"%s\" has %d device(s) (0..%d); device %d does not exist", name, n,
                n - 1, pick);
    return NULL;
  }
  tp_backend_dev *dev = iface->open(pick, threads > 0 ? threads : tp_default_threads(), err);
  if (!dev) return NULL;
  tp_backend *b = g_new0(tp_backend, 1);
  b->iface = iface;
  b->dev = dev;
  b->name = g_strdup(name);
  b->device_index = pick;
  b->info = infos[pick];
  return b;
}

tp_backend *tp_backend_open(tp_registry *reg, const char *name, int device, int threads,
                            GError **err) {
  if (!reg) reg = tp_registry_get_default();
  if (!name || strcmp(name, "auto") == 0) {
    /* DESIGN: CUDA, else a hardware Vulkan GPU, else the CPU; never lavapipe. */
    static const char *const order[] = {"cuda", "vulkan"};
    for (size_t i = 0; i < G_N_ELEMENTS(order); i++) {
      tp_backend *b = open_named(reg, order[i], device, threads, true, NULL);
      if (b) return b;
    }
    return open_named(reg, "cpu", device, threads, false, err);
  }
  if (strcmp(name, "cpu") && strcmp(name, "cuda") && strcmp(name, "vulkan")) {
    /* still allow out-of-tree backends by name */
    GError *e = NULL;
    const tp_backend_iface *i = tp_registry_find_backend(reg, name, &e);
    if (!i) {
      g_set_error(err, TP_ERROR, TP_ERROR_UNAVAILABLE,
                  "unknown backend \"%s\": use auto, cpu, cuda or vulkan (%s)", name, e->message);
      g_clear_error(&e);
      return NULL;
    }
  }
  return open_named(reg, name, device, threads, false, err);
}

void tp_backend_close(tp_backend *b) {
  if (!b) return;
  b->iface->close(b->dev);
  g_free(b->name);
  g_free(b);
}
