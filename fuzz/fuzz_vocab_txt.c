/* fuzz/fuzz_vocab_txt.c — libFuzzer target for the vocab.txt
 * reader: a file that loads must tokenize texts into ids inside its
 * vocabulary, with [CLS] first and [SEP] last. */
#include <string.h>

#include "fuzz_common.h"
#include "tensorplug/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *path = fuzz_write("vocab.txt", data, size);
  GError *err = NULL;
  /* an id table that would not fit in 256 MiB is refused, not allocated */
  g_setenv("TENSORPLUG_MEMORY_LIMIT", "256M", TRUE);
  tp_tokenizer *t = tp_tokenizer_load(path, &err);
  if (!t) {
    fuzz_check_error(err);
    g_error_free(err);
  } else {
    static const char *const texts[] = {"Hello, World!", "caf\xc3\xa9 na\xc3\xafve \xe4\xb8\xad",
                                        "[CLS] un##known [SEP] x", ""};
    int n = tp_tokenizer_vocab_size(t);
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
    for (size_t i = 0; i < G_N_ELEMENTS(texts); i++) {
      g_array_set_size(ids, 0);
      tp_tokenizer_encode(t, texts[i], strlen(texts[i]), 16, ids);
      for (guint j = 0; j < ids->len; j++) {
        int32_t id = g_array_index(ids, int32_t, j);
        if (id < 0 || id >= n || !tp_tokenizer_id_to_token(t, id)) abort();
      }
      if (ids->len < 2 || ids->len > 16) abort();
    }
    g_array_unref(ids);
    tp_tokenizer_free(t);
  }
  unlink(path);
  g_free(path);
  return 0;
}
