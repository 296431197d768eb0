/* fuzz/fuzz_checkpoint_state.c — libFuzzer target for a checkpoint's
 * state.json: what is accepted is consistent (one history entry per epoch
 * done, best epoch among them), what is refused says why. */
#include "fuzz_common.h"
#include "tensorplug/train.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tp_train_state s;
  tp_train_state_init(&s);
  JsonNode *extra = NULL;
  GError *err = NULL;
  if (!tp_train_state_parse((const char *)data, size, "state.json", &s, &extra, &err)) {
    fuzz_check_error(err);
    g_error_free(err);
  } else {
    if (s.epochs_done < 0 || s.history->len != (guint)s.epochs_done) abort();
    if (s.best_epoch < 0 || s.best_epoch > s.epochs_done) abort();
    if (s.bad_epochs < 0 || s.global_step < s.epochs_done) abort();
    for (guint i = 0; i < s.history->len; i++)
      if (g_array_index(s.history, tp_epoch_stats, i).epoch != (int)i + 1) abort();
  }
  if (extra) json_node_unref(extra);
  tp_train_state_clear(&s);
  return 0;
}
