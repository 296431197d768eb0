/* tensorplug/collective_iface.h — what a device collective plugin implements.
 *
 * A data-parallel job sums every rank's gradients before each optimizer
 * step. The core does it through host memory (download, a fixed-order MPI
 * sum, upload: core/collective.c) unless a collective plugin serves the
 * backend in use: then the sum runs in device memory on the device's own
 * queue, with no host synchronisation (NCCL for CUDA, plugins/nccl/).
 *
 * The plugin exports tp_plugin_entry() like every plugin (tensorplug/plugin.h)
 * with kind TP_PLUGIN_COLLECTIVE and iface pointing at a tp_collective_iface.
 * It reaches device memory through the backend's optional `native` slot
 * (tensorplug/backend_iface.h): the device address of a tp_mem and the queue
 * the backend's work runs on, so its reductions are ordered after the
 * backward pass and before the optimizer without waiting on the host. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <glib.h>
#include "tensorplug/backend_iface.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The job's host-side transport (MPI), lent to the plugin for its setup
 * (NCCL's unique id is made on rank 0 and broadcast with it). */
typedef struct tp_host_comm {
  int rank, size;
  void *self;
  /* bytes of buf on every rank become root's; collective. */
  bool (*bcast)(void *self, void *buf, size_t bytes, int root, GError **err);
} tp_host_comm;

typedef struct tp_dev_comm tp_dev_comm; /* defined by each plugin */

typedef struct tp_collective_iface {
  size_t struct_size; /* sizeof(tp_collective_iface) the plugin was built with */
  const char *backend; /* the backend whose memory it reduces: "cuda" */
  /* The communicator of this rank over device dev of backend be; every rank
   * of host calls it at the same time (it may use host->bcast). Fails with a
   * message saying what is missing (library, driver, native handles). */
  tp_dev_comm *(*open)(const tp_host_comm *host, const tp_backend_iface *be, tp_backend_dev *dev,
                       GError **err);
  /* m[0..n) f32 becomes its sum over the ranks, in place, queued on the
   * device's queue after the work queued before (no host synchronisation).
   * Every rank gets the same bits. Collective: same n, same order of calls. */
  bool (*sum_f32)(tp_dev_comm *c, tp_mem m, int64_t n, GError **err);
  void (*close)(tp_dev_comm *c);
} tp_collective_iface;

#ifdef __cplusplus
}
#endif
