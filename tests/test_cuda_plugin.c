/* tests/test_cuda_plugin.c — the real CUDA plugin (nvcc build) as a machine
 * without a usable GPU sees it: it loads (static CUDA runtime, cuBLASLt
 * opened only for a device), exports the whole ABI-2 interface, and probe()
 * and open() say why there is no device in CUDA's own words. On a machine
 * with a GPU the same tests check the device description instead. */
#include <dlfcn.h>
#include <sys/wait.h>

#include <json-glib/json-glib.h>

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

/* ------------------------------------------------------------------- CLI */

/* Runs the build's tensorplug; stdout and stderr apart; the exit status. */
static int run_cli(char **out, char **err_out, const char *const *args) {
  GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(argv, g_build_filename(tp_test_build_dir(), "cli", "tensorplug", NULL));
  for (const char *const *a = args; *a; a++) g_ptr_array_add(argv, g_strdup(*a));
  g_ptr_array_add(argv, NULL);
  int status = -1;
  GError *err = NULL;
  if (!g_spawn_sync(NULL, (char **)argv->pdata, NULL, 0, NULL, NULL, out, err_out, &status, &err)) {
    TP_FAILF("spawn: %s", err->message);
    g_clear_error(&err);
  }
  g_ptr_array_unref(argv);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Whether this machine has a CUDA device the plugin can use. */
static bool have_gpu(void) {
  const tp_plugin *p = load_cuda();
  if (!p) return false;
  tp_device_info info[1];
  GError *err = NULL;
  int n = ((const tp_backend_iface *)p->iface)->probe(info, 1, &err);
  g_clear_error(&err);
  return n > 0;
}

TP_TEST(CudaPlugin, PluginsCommandShowsTheReason) {
  if (have_gpu()) TP_SKIP("this machine has a CUDA device");
  const char *args[] = {"plugins", NULL};
  char *out = NULL, *err = NULL;
  TP_CHECK_INT_EQ(run_cli(&out, &err, args), 0);
  /* the cuda line, then the reason under it */
  const char *line = out ? strstr(out, "libtp_backend_cuda.so") : NULL;
  TP_ASSERT(line != NULL);
  TP_CHECK(strstr(line, "no usable CUDA device: cuda") != NULL);
  g_free(out);
  g_free(err);
}

TP_TEST(CudaPlugin, TrainOnCudaWithoutADeviceIsOneLineAndExit2) {
  if (have_gpu()) TP_SKIP("this machine has a CUDA device");
  char *vocab = g_build_filename(tp_test_shared_dir(), "data", "bert-base-uncased", "vocab.txt",
                                 NULL);
  char *dir = tp_test_tmpdir();
  char *run = g_build_filename(dir, "run", NULL);
  /* a small data set of its own: the command reads the data before it opens the backend */
  char *data = g_build_filename(dir, "reviews.csv", NULL);
  GString *csv = g_string_new("review,sentiment\n");
  for (int i = 0; i < 40; i++)
    g_string_append_printf(csv, "%s film number %d,%s\n", i % 2 ? "A good" : "A dull", i,
                           i % 2 ? "positive" : "negative");
  TP_ASSERT(g_file_set_contents(data, csv->str, -1, NULL));
  g_string_free(csv, TRUE);
  const char *args[] = {"train", "--backend", "cuda", "--model", "bert", "--init", "random",
                        "--layers", "1", "--hidden", "32", "--heads", "2", "--ffn", "64",
                        "--vocab", vocab, "--data", data, "--max-len", "16",
                        "--epochs", "1", "--out", run, NULL};
  char *out = NULL, *err = NULL;
  TP_CHECK_INT_EQ(run_cli(&out, &err, args), 2);
  TP_ASSERT(err != NULL);
  /* one line: what failed and why, in CUDA's words */
  char *trimmed = g_strstrip(g_strdup(err));
  TP_CHECK(strchr(trimmed, '\n') == NULL);
  TP_CHECK(strstr(trimmed, "cuda") != NULL && strstr(trimmed, "no usable CUDA device: ") != NULL);
  g_test_message("stderr: %s", trimmed);
  TP_CHECK(!g_file_test(run, G_FILE_TEST_EXISTS)); /* nothing written */
  g_free(trimmed);
  g_free(out);
  g_free(err);
  g_free(vocab);
  g_free(data);
  g_free(run);
  g_free(dir);
}

/* bench --model: the CUDA row says why it cannot run, and with no backend
 * able to run the request is unavailable (exit 2). */
TP_TEST(CudaPlugin, BenchRowGivesTheReason) {
  if (have_gpu()) TP_SKIP("this machine has a CUDA device");
  const char *args[] = {"bench", "--model", "distilbert", "--init", "random", "--backends", "cuda",
                        "--batch", "1", "--seq", "8", "--steps", "1", "--warmup", "0", "--json",
                        NULL};
  char *out = NULL, *err = NULL;
  TP_CHECK_INT_EQ(run_cli(&out, &err, args), 2);
  JsonParser *p = json_parser_new();
  GError *e = NULL;
  if (!json_parser_load_from_data(p, out ? out : "", -1, &e)) {
    TP_FAILF("bench --json printed no JSON: %s (stdout %s, stderr %s)", e->message, out, err);
    g_clear_error(&e);
  } else {
    JsonObject *o = json_node_get_object(json_parser_get_root(p));
    JsonArray *rows = json_object_get_array_member(o, "rows");
    TP_ASSERT(rows && json_array_get_length(rows) == 1);
    JsonObject *r = json_array_get_object_element(rows, 0);
    TP_CHECK_STR_EQ(json_object_get_string_member(r, "backend"), "cuda");
    TP_CHECK(!json_object_get_boolean_member(r, "available"));
    TP_CHECK(strstr(json_object_get_string_member(r, "reason"), "no usable CUDA device: ") != NULL);
  }
  g_object_unref(p);
  g_free(out);
  g_free(err);
}
