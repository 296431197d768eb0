/* fuzz/fuzz_common.h — helpers shared by the libFuzzer targets. */
#pragma once
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <glib.h>

/* A file NAME in a private folder (made once), holding data. */
static inline char *fuzz_write(const char *name, const uint8_t *data, size_t size) {
  static char *dir;
  if (!dir) dir = g_dir_make_tmp("tp-fuzz-XXXXXX", NULL);
  if (!dir) abort();
  char *path = g_build_filename(dir, name, NULL);
  /* no fsync (g_file_set_contents would sync an existing file): speed */
  if (!g_file_set_contents_full(path, (const char *)data, (gssize)size,
                                G_FILE_SET_CONTENTS_NONE, 0644, NULL))
    abort();
  return path;
}

/* A failure must come with a message. */
static inline void fuzz_check_error(GError *err) {
  if (!err || !err->message || !*err->message) abort();
}
