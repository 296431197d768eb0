/* fuzz/fuzz_dataset_csv.c — libFuzzer target for the csv reader: the
 * input is written to a temporary .csv file (and to a .csv.gz file
 * holding the same bytes, exercising the gzip error paths) and loaded with
 * and without skip_bad. Any crash, leak or sanitizer report is a bug; an
 * error result is fine. Built by meson with -Dfuzz=true (fuzz/README.md). */
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include <glib.h>

#include "fuzz_common.h"
#include "tensorplug/dataset.h"

static void load_bytes(const uint8_t *data, size_t size, const char *suffix) {
  char *name = g_strdup_printf("input%s", suffix);
  char *path = fuzz_write(name, data, size);
  g_free(name);
  {
    const char *paths[] = {path, NULL};
    for (int skip = 0; skip < 2; skip++) {
      GError *err = NULL;
      tp_dataset *d = tp_dataset_load(paths, skip, &err);
      if (d) {
        /* Touch every record so a bad pointer shows up here. */
        for (guint i = 0; i < d->n; i++) {
          if (!g_utf8_validate(d->texts[i], -1, NULL) || d->labels[i] < 0 ||
              d->labels[i] >= d->n_labels || !d->ids[i] || !d->where[i])
            __builtin_trap();
        }
        tp_dataset_free(d);
      } else if (!err) {
        __builtin_trap(); /* failure must come with an error */
      }
      g_clear_error(&err);
    }
    unlink(path);
  }
  g_free(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  load_bytes(data, size, ".csv");
  load_bytes(data, size, ".csv" ".gz");
  return 0;
}
