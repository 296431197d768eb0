/* plugins/nccl/nccl_comm.c — see nccl_comm.h. */
#include "nccl_comm.h"

#include <dlfcn.h>
#include <string.h>

/* the core's error domain (plugins do not link libtensorplug) */
#define TP_ERR g_quark_from_static_string("tensorplug-error-quark")
enum { ERR_UNAVAILABLE = 4, ERR_BACKEND = 5 }; /* TP_ERROR_UNAVAILABLE, TP_ERROR_BACKEND */

struct tp_dev_comm {
  const tp_nccl_api *api;
  ncclComm_t comm;
  const tp_backend_iface *be;
  tp_backend_dev *dev;
  void *queue;
  int rank, size;
};

/* ---- loading the library ---- */

static void *open_first(const char *const *names, GString *tried) {
  for (const char *const *n = names; *n; n++) {
    if (!**n) continue;
    void *h = dlopen(*n, RTLD_NOW | RTLD_LOCAL);
    if (h) return h;
    const char *e = dlerror();
    g_string_append_printf(tried, "%s%s (%s)", tried->len ? "; " : "", *n, e ? e : "not found");
  }
  return NULL;
}

#ifndef TP_NCCL_LIBDIR
#define TP_NCCL_LIBDIR ""
#endif
#ifndef TP_CUDART_LIBDIR
#define TP_CUDART_LIBDIR ""
#endif

bool tp_nccl_api_load(tp_nccl_api *api, GError **err) {
  memset(api, 0, sizeof *api);
  const char *env = g_getenv("TENSORPLUG_NCCL_LIBRARY");
  char *built = g_build_filename(TP_NCCL_LIBDIR, "libnccl.so.2", NULL);
  /* the user's choice alone when given, else the library path, then the
   * folder found at build time */
  const char *names[] = {env ? env : "", env ? "" : "libnccl.so.2",
                         !env && TP_NCCL_LIBDIR[0] ? built : "", NULL};
  GString *tried = g_string_new(NULL);
  api->lib = open_first(names, tried);
  g_free(built);
  if (!api->lib) {
    g_set_error(err, TP_ERR, ERR_UNAVAILABLE, "NCCL is not installed here (tried %s): install "
                "it (NVIDIA's libnccl2 package, or the CUDA toolkit's), or point "
                "TENSORPLUG_NCCL_LIBRARY at libnccl.so.2", tried->str);
    g_string_free(tried, TRUE);
    return false;
  }
  g_string_free(tried, TRUE);
  struct {
    void **slot;
    const char *name;
  } syms[] = {{(void **)&api->get_version, "ncclGetVersion"},
              {(void **)&api->get_unique_id, "ncclGetUniqueId"},
              {(void **)&api->comm_init_rank, "ncclCommInitRank"},
              {(void **)&api->all_reduce, "ncclAllReduce"},
              {(void **)&api->comm_get_async_error, "ncclCommGetAsyncError"},
              {(void **)&api->comm_destroy, "ncclCommDestroy"},
              {(void **)&api->comm_abort, "ncclCommAbort"},
              {(void **)&api->get_error_string, "ncclGetErrorString"}};
  for (size_t i = 0; i < G_N_ELEMENTS(syms); i++) {
    *syms[i].slot = dlsym(api->lib, syms[i].name);
    if (!*syms[i].slot) {
      g_set_error(err, TP_ERR, ERR_UNAVAILABLE, "the NCCL library lacks %s: it is too old "
                  "(NCCL 2.4 or later is needed)", syms[i].name);
      tp_nccl_api_unload(api);
      return false;
    }
  }
  char *rt = g_build_filename(TP_CUDART_LIBDIR, "libcudart.so", NULL);
  const char *rts[] = {"libcudart.so.13", "libcudart.so.12", "libcudart.so",
                       TP_CUDART_LIBDIR[0] ? rt : "", NULL};
  GString *ignored = g_string_new(NULL);
  api->cudart = open_first(rts, ignored);
  g_string_free(ignored, TRUE);
  g_free(rt);
  if (api->cudart) api->set_device = (int (*)(int))dlsym(api->cudart, "cudaSetDevice");
  return true;
}

void tp_nccl_api_unload(tp_nccl_api *api) {
  if (api->cudart) dlclose(api->cudart);
  if (api->lib) dlclose(api->lib);
  memset(api, 0, sizeof *api);
}

/* ---- the communicator ---- */

static bool nccl_ok(const tp_nccl_api *api, ncclResult_t r, const char *call, int rank, int size,
                    GError **err) {
  if (r == ncclSuccess) return true;
  g_set_error(err, TP_ERR, ERR_BACKEND, "rank %d of %d: %s failed: %s (NCCL error %d; "
              "NCCL_DEBUG=WARN shows NCCL's own account)", rank, size, call,
              api->get_error_string ? api->get_error_string(r) : "?", (int)r);
  return false;
}

/* What rank 0 broadcasts: whether it made an id, and the id. */
typedef struct id_msg {
  int32_t status; /* ncclResult_t of ncclGetUniqueId */
  ncclUniqueId id;
} id_msg;

tp_dev_comm *tp_nccl_comm_open(const tp_nccl_api *api, const tp_host_comm *host,
                               const tp_backend_iface *be, tp_backend_dev *dev, GError **err) {
  tp_native_mem nm = {0};
  if (!TP_IFACE_HAS(be, native) || !be->native(dev, (tp_mem){NULL, 0}, &nm)) {
    g_set_error(err, TP_ERR, ERR_UNAVAILABLE, "the backend gives no native device handles "
                "(its plugin predates the `native` slot): NCCL cannot reach its memory");
    return NULL;
  }
  if (!nm.api || strcmp(nm.api, "cuda") != 0) {
    g_set_error(err, TP_ERR, ERR_UNAVAILABLE, "NCCL works on CUDA memory, not %s memory",
                nm.api ? nm.api : "unnamed");
    return NULL;
  }
  if (api->set_device) {
    int r = api->set_device(nm.device);
    if (r != 0) {
      g_set_error(err, TP_ERR, ERR_BACKEND, "rank %d of %d: cudaSetDevice(%d) failed (CUDA "
                  "error %d)", host->rank, host->size, nm.device, r);
      return NULL;
    }
  }
  /* every rank takes part in the broadcast, also when rank 0 failed */
  id_msg msg;
  memset(&msg, 0, sizeof msg);
  if (host->rank == 0) msg.status = (int32_t)api->get_unique_id(&msg.id);
  if (!host->bcast(host->self, &msg, sizeof msg, 0, err)) return NULL;
  if (msg.status != ncclSuccess) {
    nccl_ok(api, (ncclResult_t)msg.status, "ncclGetUniqueId on rank 0", host->rank, host->size,
            err);
    return NULL;
  }
  tp_dev_comm *c = g_new0(tp_dev_comm, 1);
  c->api = api;
  c->be = be;
  c->dev = dev;
  c->queue = nm.queue;
  c->rank = host->rank;
  c->size = host->size;
  if (!nccl_ok(api, api->comm_init_rank(&c->comm, host->size, msg.id, host->rank),
               "ncclCommInitRank", host->rank, host->size, err)) {
    g_free(c);
    return NULL;
  }
  return c;
}

bool tp_nccl_comm_sum_f32(tp_dev_comm *c, tp_mem m, int64_t n, GError **err) {
  const tp_nccl_api *api = c->api;
  tp_native_mem nm = {0};
  if (!c->be->native(c->dev, m, &nm) || !nm.ptr) {
    g_set_error(err, TP_ERR, ERR_BACKEND, "rank %d of %d: the backend gave no device address "
                "for a gradient buffer", c->rank, c->size);
    return false;
  }
  /* a failure of earlier work (a peer lost) surfaces here, not as a hang */
  ncclResult_t async = ncclSuccess;
  if (!nccl_ok(api, api->comm_get_async_error(c->comm, &async), "ncclCommGetAsyncError", c->rank,
               c->size, err) ||
      !nccl_ok(api, async, "an earlier NCCL operation", c->rank, c->size, err))
    return false;
  return nccl_ok(api, api->all_reduce(nm.ptr, nm.ptr, (size_t)n, ncclFloat, ncclSum, c->comm,
                                      (cudaStream_t)nm.queue),
                 "ncclAllReduce", c->rank, c->size, err);
}

void tp_nccl_comm_close(tp_dev_comm *c) {
  if (!c) return;
  c->api->comm_destroy(c->comm);
  g_free(c);
}
