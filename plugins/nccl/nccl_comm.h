/* plugins/nccl/nccl_comm.h — the NCCL collective plugin's host-side logic,
 * separate from the library it drives so that tests run it against a fake
 * NCCL without a GPU (tests/test_nccl_host.c).
 *
 * NCCL is opened at run time (dlopen of libnccl.so.2; libcudart for
 * cudaSetDevice), so the plugin loads — and `tensorplug plugins` lists it —
 * on machines without NCCL; only a distributed run on CUDA needs it. */
#pragma once
#include <nccl.h>
#include <stdbool.h>
#include <glib.h>
#include "tensorplug/collective_iface.h"

/* The NCCL (and CUDA runtime) entry points the plugin calls. */
typedef struct tp_nccl_api {
  ncclResult_t (*get_version)(int *version);
  ncclResult_t (*get_unique_id)(ncclUniqueId *id);
  ncclResult_t (*comm_init_rank)(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank);
  ncclResult_t (*all_reduce)(const void *send, void *recv, size_t count, ncclDataType_t type,
                             ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
  ncclResult_t (*comm_get_async_error)(ncclComm_t comm, ncclResult_t *async);
  ncclResult_t (*comm_destroy)(ncclComm_t comm);
  ncclResult_t (*comm_abort)(ncclComm_t comm);
  const char *(*get_error_string)(ncclResult_t r);
  /* cudaSetDevice; NULL when no CUDA runtime was found (NCCL then uses the
   * device current on this thread, the one the CUDA backend opened) */
  int (*set_device)(int device);
  void *lib, *cudart; /* dlopen handles, NULL for a fake */
} tp_nccl_api;

/* Opens libnccl.so.2 ($TENSORPLUG_NCCL_LIBRARY alone when set, else from
 * the library path, else from the folder found at build time) and libcudart. Fails with a message
 * naming what is missing and how to get it. */
bool tp_nccl_api_load(tp_nccl_api *api, GError **err);
void tp_nccl_api_unload(tp_nccl_api *api);

/* The communicator of one rank (collective over host's ranks): rank 0 makes
 * NCCL's unique id and broadcasts it with host->bcast; every rank then joins
 * on the device the backend's native handles name. api is kept (not copied). */
tp_dev_comm *tp_nccl_comm_open(const tp_nccl_api *api, const tp_host_comm *host,
                               const tp_backend_iface *be, tp_backend_dev *dev, GError **err);
/* m[0..n) f32 summed over the ranks in place, queued on the backend's queue. */
bool tp_nccl_comm_sum_f32(tp_dev_comm *c, tp_mem m, int64_t n, GError **err);
void tp_nccl_comm_close(tp_dev_comm *c);
