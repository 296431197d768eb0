/* core/fileio.c — durable writes: temporary file, fsync, rename, fsync of
 * the folder (tensorplug/fileio.h). */
#include "tensorplug/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "tensorplug/error.h"

bool tp_fd_write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t w = write(fd, p, len > (1u << 30) ? (1u << 30) : len);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      if (w == 0) errno = EIO;
      return false;
    }
    p += w;
    len -= (size_t)w;
  }
  return true;
}

bool tp_dir_sync(const char *dir, GError **err) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  bool ok = fd >= 0;
  int saved = errno;
  if (ok) {
    /* Some file systems cannot fsync a folder (EINVAL); nothing more can be done there. */
    if (fsync(fd) != 0 && errno != EINVAL) ok = false, saved = errno;
    close(fd);
  }
  if (!ok)
    g_set_error(err, TP_ERROR, TP_ERROR_IO, "cannot sync the folder %s: %s", dir,
                g_strerror(saved));
  return ok;
}

bool tp_rename_durable(const char *from, const char *to, GError **err) {
  if (g_rename(from, to) != 0) {
    int saved = errno;
    g_set_error(err, TP_ERROR, TP_ERROR_IO, "cannot rename %s to %s: %s", from, to,
                g_strerror(saved));
    return false;
  }
  char *dto = g_path_get_dirname(to), *dfrom = g_path_get_dirname(from);
  bool ok = tp_dir_sync(dto, err) && (strcmp(dto, dfrom) == 0 || tp_dir_sync(dfrom, err));
  g_free(dto);
  g_free(dfrom);
  return ok;
}

bool tp_file_write_durable_with(const char *path, tp_file_write_fn write_fn, void *user,
                                GError **err) {
  char *tmp = g_strdup_printf("%s.tmp-XXXXXX", path);
  int fd = g_mkstemp_full(tmp, O_WRONLY | O_CLOEXEC, 0666);
  bool ok = fd >= 0;
  int saved = errno;
  if (ok) {
    /* (g_mkstemp_full creates it with 0666 less the umask, as open(2) does.) */
    if (!write_fn(fd, user)) ok = false, saved = errno;
    if (ok && fsync(fd) != 0) ok = false, saved = errno;
    if (close(fd) != 0 && ok) ok = false, saved = errno;
    if (ok && g_rename(tmp, path) != 0) ok = false, saved = errno;
    if (!ok) g_unlink(tmp);
  }
  if (!ok) {
    g_set_error(err, TP_ERROR, TP_ERROR_IO, "cannot write %s: %s (check that the folder exists, "
                "is writable and has free space)", path, g_strerror(saved));
  } else {
    char *dir = g_path_get_dirname(path);
    ok = tp_dir_sync(dir, err);
    g_free(dir);
  }
  g_free(tmp);
  return ok;
}

typedef struct {
  const void *data;
  size_t len;
} bytes_job;

static bool write_bytes(int fd, void *user) {
  const bytes_job *j = user;
  return tp_fd_write_all(fd, j->data, j->len);
}

bool tp_file_write_durable(const char *path, const void *data, size_t len, GError **err) {
  bytes_job j = {data, len};
  return tp_file_write_durable_with(path, write_bytes, &j, err);
}
