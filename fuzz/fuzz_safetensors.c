/* fuzz/fuzz_safetensors.c — libFuzzer target for the safetensors reader.
 *
 * Feeds the input to tp_safetensors_open_bytes (the same validation as
 * tp_safetensors_open, without the file system), then touches every byte the
 * reader claims is valid: a tensor's data range must lie inside the input,
 * so ASan reports any validation gap as an out-of-bounds read. Errors are the
 * expected outcome for most inputs and are simply dropped. See README.md. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "tensorplug/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* A private copy: the reader may keep the buffer, libFuzzer's is reused. */
  GBytes *bytes = g_bytes_new(data, size);
  GError *err = NULL;
  tp_safetensors *st = tp_safetensors_open_bytes(bytes, "fuzz-input", &err);
  g_bytes_unref(bytes);
  if (!st) {
    /* Every failure must come with a message. */
    if (!err || !err->message || !*err->message) abort();
    g_error_free(err);
    return 0;
  }
  volatile uint8_t sink = 0;
  for (guint i = 0; i < tp_safetensors_count(st); i++) {
    const tp_st_tensor *t = tp_safetensors_at(st, i);
    if (tp_safetensors_find(st, t->name) != t) abort();
    if ((uint64_t)t->numel * t->elem_size != t->nbytes) abort();
    const uint8_t *p = t->data;
    for (size_t b = 0; b < t->nbytes; b++) sink ^= p[b];
    if (t->dtype >= 0 && t->dtype != TP_I32 && t->numel <= (1 << 20)) {
      float *f = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *f);
      if (f && !tp_st_tensor_to_f32(t, f, NULL)) abort();
      free(f);
    }
  }
  (void)tp_safetensors_metadata(st, "format");
  tp_safetensors_close(st);
  (void)sink;
  return 0;
}
