/* fuzz/fuzz_config_json.c — libFuzzer target for config.json: a config that
 * loads (with the model plugins of the build tree) passes the range checks,
 * and declaring its parameters gives a count that is positive and below the
 * 2^62 its bounds promise. */
#include "fuzz_common.h"
#include "tensorplug/model.h"
#include "tensorplug/params.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *path = fuzz_write("config.json", data, size);
  const tp_model_iface *iface = NULL;
  tp_model_config cfg;
  GError *err = NULL;
  if (!tp_model_config_load(NULL, path, &iface, &cfg, &err)) {
    fuzz_check_error(err);
    g_error_free(err);
  } else {
    if (!tp_model_config_check(&cfg, NULL)) abort();
    tp_params *p = tp_params_new();
    if (iface->declare(&cfg, p, NULL)) {
      int64_t n = tp_params_numel(p);
      if (n <= 0 || n > ((int64_t)1 << 62)) abort();
    }
    tp_params_free(p);
  }
  unlink(path);
  g_free(path);
  return 0;
}
