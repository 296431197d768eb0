/* tests/test_cuda_plugin.c — the real CUDA plugin (nvcc build) as a machine
 * without a usable GPU sees it: it loads (static CUDA runtime, cuBLASLt
 * opened only for a device), exports the whole ABI-2 interface, and probe()
 * and open() say why there is no device in CUDA's own words. On a machine
 * with a GPU the same tests check the device description instead. */
#include <dlfcn.h>

#include "tensorplug/backend_iface.h"
#include "tensorplug/error.h"
#include "tensorplug/plugin.h"
#include "tp_test.h"

static const tp_plugin *load_cuda(void) {
  char *path = g_build_filename(tp_test_build_dir(), "plugins", "cuda", "libtp_backend_cuda.so",
                                NULL);
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) TP_FAILF("the CUDA plugin must load without a GPU or driver: %s", dlerror());
  g_free(path);
  if (!h) return NULL;
  tp_plugin_entry_fn entry = (tp_plugin_entry_fn)dlsym(h, TP_PLUGIN_ENTRY_SYMBOL);
  return entry ? entry() : NULL;
}

TP_TEST(CudaPlugin, LoadsAndExportsTheWholeInterface) {
  const tp_plugin *p = load_cuda();
  TP_ASSERT(p != NULL);
  TP_CHECK_INT_EQ(p->abi_version, TP_PLUGIN_ABI_VERSION);
  TP_CHECK_INT_EQ(p->kind, TP_PLUGIN_BACKEND);
  TP_CHECK_STR_EQ(p->name, "cuda");
  const tp_backend_iface *b = p->iface;
  TP_CHECK_INT_EQ(b->struct_size, sizeof(tp_backend_iface));
  /* every kernel slot */
  void (*const *slot)(void) = (void (*const *)(void))&b->k;
  for (size_t i = 0; i < sizeof b->k / sizeof(void (*)(void)); i++)
    if (!slot[i]) TP_FAILF("kernel slot %zu is NULL", i);
  TP_CHECK(TP_IFACE_HAS(b, dropout_fwd_keep) && TP_IFACE_HAS(b, dropout_bwd_keep));
  TP_CHECK(TP_IFACE_HAS(b, attention_fwd) && TP_IFACE_HAS(b, attention_bwd));
}

TP_TEST(CudaPlugin, ProbeSaysWhyThereIsNoDevice) {
  const tp_plugin *p = load_cuda();
  TP_ASSERT(p != NULL);
  const tp_backend_iface *b = p->iface;
  tp_device_info info[4];
  memset(info, 0, sizeof info);
  GError *err = NULL;
  int n = b->probe(info, 4, &err);
  if (n > 0) { /* a machine with a GPU */
    TP_ASSERT_NO_ERROR(err);
    TP_CHECK(info[0].memory_bytes > 0 && info[0].compute_units > 0);
    TP_CHECK(!info[0].is_software && !info[0].host_visible);
    TP_CHECK(strstr(info[0].features, "cuBLASLt") != NULL);
    return;
  }
  TP_CHECK_INT_EQ(n, 0);
  TP_ASSERT(err != NULL);
  TP_CHECK_INT_EQ(err->code, TP_ERROR_UNAVAILABLE);
  /* "no usable CUDA device: cudaErrorInsufficientDriver: CUDA driver version
   * is insufficient for CUDA runtime version" where there is no driver */
  TP_CHECK(g_str_has_prefix(err->message, "no usable CUDA device: "));
  TP_CHECK(strstr(err->message, "cudaError") != NULL || strstr(err->message, "no GPU") != NULL ||
           strstr(err->message, "compute capability") != NULL);
  g_test_message("probe: %s", err->message);
  char *first = g_strdup(err->message);
  g_clear_error(&err);
  /* open says the same, and never crashes */
  TP_CHECK(b->open(0, 0, &err) == NULL);
  TP_ASSERT(err != NULL);
  TP_CHECK_INT_EQ(err->code, TP_ERROR_UNAVAILABLE);
  TP_CHECK_STR_EQ(err->message, first);
  g_clear_error(&err);
  g_free(first);
}
