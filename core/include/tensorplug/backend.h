/* tensorplug/backend.h — an opened compute device, as the core uses it.
 *
 * Everything the core does with a device goes through these wrappers (and
 * tensorplug/kernels.h for kernels): they apply the device's limits, the
 * test-time caps from the environment, count host synchronisations and
 * track device memory. */
#pragma once
#include <stdbool.h>
#include <glib.h>
#include "tensorplug/backend_iface.h"
#include "tensorplug/registry.h"

G_BEGIN_DECLS

typedef struct tp_backend_stats {
  uint64_t syncs;      /* host synchronisations: synchronize() and download() calls */
  uint64_t uploads;    /* upload() calls */
  uint64_t live_bytes; /* bytes in buffers allocated and not yet freed */
  uint64_t peak_bytes; /* the most live_bytes ever was */
} tp_backend_stats;

typedef struct tp_backend {
  const tp_backend_iface *iface;
  tp_backend_dev *dev;
  char *name; /* "cpu", "cuda", "vulkan" */
  int device_index;
  tp_device_info info; /* limits as the core applies them (caps included) */
  tp_backend_stats stats;
  uint64_t alloc_limit; /* $TENSORPLUG_ALLOC_LIMIT_BYTES (0 = none) */
  GError *pending;      /* a core-side failure, reported by the next sync */
  GHashTable *sizes;    /* tp_buffer* -> bytes, for live_bytes */
} tp_backend;

/* name: "auto" (CUDA, else a hardware Vulkan GPU, else CPU), "cpu", "cuda",
 * "vulkan", or an out-of-tree backend's name. device: index among the
 * backend's devices (-1 = first suitable). threads: 0 =
 * $TENSORPLUG_NUM_THREADS, else all cores. Fails with TP_ERROR_UNAVAILABLE
 * when that backend cannot run here.
 * Environment caps (tests): $TENSORPLUG_MAX_BINDING_BYTES lowers
 * max_binding_bytes; $TENSORPLUG_MAX_ALLOC_BYTES lowers max_alloc_bytes;
 * $TENSORPLUG_ALLOC_LIMIT_BYTES makes allocations fail with
 * TP_ERROR_OUT_OF_MEMORY once live bytes would exceed it. */
tp_backend *tp_backend_open(tp_registry *reg, const char *name, int device, int threads,
                            GError **err);
/* Waits for the device's queue, then closes it. */
void tp_backend_close(tp_backend *b);

/* Probes one backend plugin's devices: infos (up to max) are zeroed first.
 * Returns the count; 0 with *why (g_free it) when it has none. */
int tp_backend_probe(const tp_backend_iface *iface, tp_device_info *infos, int max, char **why);
/* Whether --backend auto would consider this device (not software). */
bool tp_device_is_auto_candidate(const tp_device_info *info);

/* Buffers (checked against max_alloc_bytes and the allocation limit; out of
 * memory names the bytes asked, the device's memory and what is live). */
tp_buffer *tp_backend_alloc(tp_backend *be, size_t bytes, GError **err);
void tp_backend_free(tp_backend *be, tp_buffer *buf);
bool tp_backend_upload(tp_backend *be, tp_mem dst, const void *src, size_t bytes, GError **err);
/* A host synchronisation (counted). */
bool tp_backend_download(tp_backend *be, void *dst, tp_mem src, size_t bytes, GError **err);
bool tp_backend_copy(tp_backend *be, tp_mem dst, tp_mem src, size_t bytes, GError **err);
/* Waits for the queue; reports the first kernel or core-side failure since
 * the last report. A host synchronisation (counted). */
bool tp_backend_sync(tp_backend *be, GError **err);
/* Records a failure of queued work found by the core (a split that cannot
 * fit the limits); reported by the next tp_backend_sync(). Takes e. */
void tp_backend_fail(tp_backend *be, GError *e);

/* The size of one kernel argument's binding range that the core keeps
 * within max_binding_bytes: UINT64_MAX when unlimited. */
uint64_t tp_backend_binding_limit(const tp_backend *be);

/* Thread count to use when the user gave none: $TENSORPLUG_NUM_THREADS, else
 * the number of online cores. */
int tp_default_threads(void);

G_END_DECLS
