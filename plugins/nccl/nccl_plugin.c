/* plugins/nccl/nccl_plugin.c — the NCCL collective plugin: sums the
 * gradients of `tensorplug train --distributed` in CUDA memory, on the CUDA
 * backend's stream (no host synchronisation), with one NCCL communicator
 * whose unique id rank 0 broadcasts over MPI. */
#include "nccl_comm.h"
#include "tensorplug/plugin.h"

/* One NCCL library for the process, opened by the first communicator. */
static tp_nccl_api g_api;
static gsize g_loaded;
static GError *g_load_error;

static const tp_nccl_api *api_get(GError **err) {
  if (g_once_init_enter(&g_loaded)) {
    tp_nccl_api a;
    if (tp_nccl_api_load(&a, &g_load_error)) g_api = a;
    g_once_init_leave(&g_loaded, 1);
  }
  if (g_load_error) {
    if (err) *err = g_error_copy(g_load_error);
    return NULL;
  }
  return &g_api;
}

static tp_dev_comm *nccl_open(const tp_host_comm *host, const tp_backend_iface *be,
                              tp_backend_dev *dev, GError **err) {
  const tp_nccl_api *api = api_get(err);
  return api ? tp_nccl_comm_open(api, host, be, dev, err) : NULL;
}

static const tp_collective_iface nccl_iface = {
    .struct_size = sizeof(tp_collective_iface),
    .backend = "cuda",
    .open = nccl_open,
    .sum_f32 = tp_nccl_comm_sum_f32,
    .close = tp_nccl_comm_close,
};

static const tp_plugin nccl_plugin = {
    .abi_version = TP_PLUGIN_ABI_VERSION,
    .kind = TP_PLUGIN_COLLECTIVE,
    .name = "nccl",
    .version = "0.1.0",
    .iface = &nccl_iface,
};

TP_PLUGIN_EXPORT const tp_plugin *tp_plugin_entry(void) { return &nccl_plugin; }
