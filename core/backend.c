/* core/backend.c — choosing and opening a compute device, and the wrappers
 * every device call of the core goes through (limits, caps, counters). */
#include "tensorplug/backend.h"

#include <errno.h>
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

/* ---- environment caps (tests exercise the limit paths with them) ---- */

/* A byte count from the environment: 0 when unset; FALSE with err when the
 * value is not a positive number. */
static bool env_bytes(const char *name, uint64_t *out, GError **err) {
  *out = 0;
  const char *e = g_getenv(name);
  if (!e || !*e) return true;
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(e, &end, 10);
  if (errno || !end || *end || v == 0 || e[0] == '-') {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "%s=\"%s\" is not a positive byte "
                "count; fix or unset it", name, e);
    return false;
  }
  *out = v;
  return true;
}

static uint64_t min_nonzero(uint64_t a, uint64_t b) { return a == 0 ? b : b == 0 ? a : MIN(a, b); }

static bool apply_caps(tp_backend *b, GError **err) {
  uint64_t bind = 0, alloc = 0;
  if (!env_bytes("TENSORPLUG_MAX_BINDING_BYTES", &bind, err) ||
      !env_bytes("TENSORPLUG_MAX_ALLOC_BYTES", &alloc, err) ||
      !env_bytes("TENSORPLUG_ALLOC_LIMIT_BYTES", &b->alloc_limit, err))
    return false;
  tp_device_info *in = &b->info;
  if (in->offset_align < 4 || (in->offset_align & (in->offset_align - 1)))
    in->offset_align = MAX(4u, in->offset_align ? 1u << g_bit_nth_msf(in->offset_align, -1) : 4u);
  in->max_binding_bytes = min_nonzero(in->max_binding_bytes, bind);
  in->max_alloc_bytes = min_nonzero(min_nonzero(in->max_alloc_bytes, in->memory_bytes), alloc);
  if (in->max_binding_bytes && in->max_binding_bytes < 2ull * in->offset_align) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "backend \"%s\": a binding limit of "
                "%llu bytes leaves no room for data (offset alignment %u)", b->name,
                (unsigned long long)in->max_binding_bytes, in->offset_align);
    return false;
  }
  if (in->gemm_compute == 0) in->gemm_compute = TP_DTYPE_BIT(TP_F32);
  return true;
}

bool tp_device_is_auto_candidate(const tp_device_info *info) { return !info->is_software; }

/* Index of the device to use among n: `device` when >= 0, else the best
 * one: discrete > integrated/virtual > software, the first of equals. */
static int pick_device(const tp_device_info *infos, int n, bool hardware_only) {
  int pick = -1, best = -1;
  for (int i = 0; i < n; i++) {
    if (hardware_only && !tp_device_is_auto_candidate(&infos[i])) continue;
    int rank = infos[i].is_software ? 0 : infos[i].is_discrete ? 2 : 1;
    if (rank > best) {
      best = rank;
      pick = i;
    }
  }
  return pick;
}

/* Opens device `device` (-1: the best suitable) of one named backend. */
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
    pick = pick_device(infos, n, hardware_only);
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
  tp_backend *b = g_new0(tp_backend, 1);
  b->iface = iface;
  b->name = g_strdup(name);
  b->device_index = pick;
  b->info = infos[pick];
  if (!apply_caps(b, err)) {
    tp_backend_close(b);
    return NULL;
  }
  b->dev = iface->open(pick, threads > 0 ? threads : tp_default_threads(), err);
  if (!b->dev) {
    tp_backend_close(b);
    return NULL;
  }
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
  if (b->dev) b->iface->close(b->dev);
  g_clear_error(&b->pending);
  if (b->sizes) g_hash_table_unref(b->sizes);
  g_free(b->name);
  g_free(b);
}

/* ---- probing (tensorplug plugins, bench) ---- */

int tp_backend_probe(const tp_backend_iface *iface, tp_device_info *infos, int max, char **why) {
  if (why) *why = NULL;
  memset(infos, 0, sizeof *infos * (size_t)MAX(max, 0));
  GError *err = NULL;
  int n = iface->probe(infos, max, &err);
  if (n <= 0 && why) *why = g_strdup(err ? err->message : "no device found");
  g_clear_error(&err);
  return n <= 0 ? 0 : MIN(n, max);
}

/* ---- wrappers ---- */

static char *mib(uint64_t bytes) { return g_strdup_printf("%.1f MiB", (double)bytes / 1048576.0); }

tp_buffer *tp_backend_alloc(tp_backend *be, size_t bytes, GError **err) {
  const tp_device_info *in = &be->info;
  const char *why = NULL;
  uint64_t limit = 0;
  if (in->max_alloc_bytes && bytes > in->max_alloc_bytes) {
    why = "the device's largest buffer";
    limit = in->max_alloc_bytes;
  } else if (be->alloc_limit && be->stats.live_bytes + bytes > be->alloc_limit) {
    why = "the limit $TENSORPLUG_ALLOC_LIMIT_BYTES";
    limit = be->alloc_limit;
  }
  if (why) {
    char *a = mib(bytes), *l = mib(limit), *live = mib(be->stats.live_bytes);
    g_set_error(err, TP_ERROR, TP_ERROR_OUT_OF_MEMORY, "out of memory on %s (%s): %s asked with "
                "%s in use, and %s is %s; use a smaller --batch (or --max-len)", be->name,
                in->name, a, live, why, l);
    g_free(a);
    g_free(l);
    g_free(live);
    return NULL;
  }
  tp_buffer *b = be->iface->buffer_alloc(be->dev, bytes, err);
  if (!b) return NULL;
  if (!be->sizes) be->sizes = g_hash_table_new(NULL, NULL);
  g_hash_table_insert(be->sizes, b, GSIZE_TO_POINTER(bytes));
  be->stats.live_bytes += bytes;
  be->stats.peak_bytes = MAX(be->stats.peak_bytes, be->stats.live_bytes);
  return b;
}

void tp_backend_free(tp_backend *be, tp_buffer *buf) {
  if (!buf) return;
  if (be->sizes) {
    be->stats.live_bytes -= GPOINTER_TO_SIZE(g_hash_table_lookup(be->sizes, buf));
    g_hash_table_remove(be->sizes, buf);
  }
  be->iface->buffer_free(be->dev, buf);
}

bool tp_backend_upload(tp_backend *be, tp_mem dst, const void *src, size_t bytes, GError **err) {
  be->stats.uploads++;
  return be->iface->upload(be->dev, dst, src, bytes, err);
}

/* A pending core-side failure is reported before anything else. */
static bool take_pending(tp_backend *be, GError **err) {
  if (!be->pending) return true;
  /* still drain the device's own error so it is not reported twice later */
  GError *dev_err = NULL;
  if (!be->iface->synchronize(be->dev, &dev_err)) g_clear_error(&dev_err);
  g_propagate_error(err, be->pending);
  be->pending = NULL;
  return false;
}

bool tp_backend_download(tp_backend *be, void *dst, tp_mem src, size_t bytes, GError **err) {
  be->stats.syncs++;
  if (!take_pending(be, err)) return false;
  return be->iface->download(be->dev, dst, src, bytes, err);
}

bool tp_backend_copy(tp_backend *be, tp_mem dst, tp_mem src, size_t bytes, GError **err) {
  return be->iface->copy(be->dev, dst, src, bytes, err);
}

bool tp_backend_sync(tp_backend *be, GError **err) {
  be->stats.syncs++;
  if (!take_pending(be, err)) return false;
  return be->iface->synchronize(be->dev, err);
}

void tp_backend_fail(tp_backend *be, GError *e) {
  if (!e) return;
  if (be->pending) g_error_free(e);
  else be->pending = e;
}

uint64_t tp_backend_binding_limit(const tp_backend *be) {
  uint64_t b = be->info.max_binding_bytes;
  return b == 0 ? UINT64_MAX : b;
}
