/* tensorplug/fileio.h — writing files so that nothing written is lost.
 *
 * A file of a run (checkpoint, model folder, results.json, split ids, token
 * cache) is written to a temporary file in the same folder, fsynced, renamed
 * over its name, and then the folder itself is fsynced, so that after a power
 * cut the name holds either the old complete file or the new complete one —
 * never an empty or partial file (g_file_set_contents only fsyncs files that
 * already existed, and never the folder). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <glib.h>

G_BEGIN_DECLS

/* Writes len bytes of data to path durably (see above). Errors: TP_ERROR_IO
 * naming the path and the reason (no space, no permission...). */
bool tp_file_write_durable(const char *path, const void *data, size_t len, GError **err);

/* The same with the contents streamed by write_fn into the open file
 * descriptor; write_fn returns false with errno set on failure. */
typedef bool (*tp_file_write_fn)(int fd, void *user);
bool tp_file_write_durable_with(const char *path, tp_file_write_fn write_fn, void *user,
                                GError **err);

/* write(2) all of buf, retrying on EINTR and short writes; errno set on failure. */
bool tp_fd_write_all(int fd, const void *buf, size_t len);

/* fsyncs a folder, so that the names created, renamed or removed in it last. */
bool tp_dir_sync(const char *dir, GError **err);

/* rename(2), then fsync of the folder(s) holding both names. */
bool tp_rename_durable(const char *from, const char *to, GError **err);

G_END_DECLS
