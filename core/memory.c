/* core/memory.c — the memory a process may use, and checks of sizes that
 * come from inputs against it (tensorplug/memory.h). */
#include "tensorplug/memory.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensorplug/backend.h"
#include "tensorplug/error.h"

/* "123", "64M", "2.5G" -> bytes; FALSE when it is not such a size. */
static bool parse_size(const char *s, uint64_t *out) {
  char *end = NULL;
  double v = g_ascii_strtod(s, &end);
  if (end == s || !(v >= 0)) return false;
  double mul = 1;
  switch (g_ascii_toupper(*end)) {
  case 'K': mul = 1024.0; end++; break;
  case 'M': mul = 1024.0 * 1024; end++; break;
  case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
  case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
  default: break;
  }
  if (*end == 'B' || *end == 'b') end++;
  if (*end) return false;
  double b = v * mul;
  *out = b >= 1.8e19 ? UINT64_MAX : (uint64_t)b;
  return true;
}

/* A number from the first line of a file ("max" -> not known). */
static bool read_u64_file(const char *path, uint64_t *out) {
  char *text = NULL;
  bool ok = false;
  if (g_file_get_contents(path, &text, NULL, NULL)) {
    char *end = NULL;
    guint64 v = g_ascii_strtoull(text, &end, 10);
    ok = end != text;
    if (ok) *out = v;
  }
  g_free(text);
  return ok;
}

static uint64_t meminfo_available(void) {
  char *text = NULL;
  uint64_t v = UINT64_MAX;
  if (g_file_get_contents("/proc/meminfo", &text, NULL, NULL)) {
    const char *p = strstr(text, "MemAvailable:");
    unsigned long long kb = 0;
    if (p && sscanf(p, "MemAvailable: %llu kB", &kb) == 1) v = (uint64_t)kb * 1024;
  }
  g_free(text);
  return v;
}

uint64_t tp_memory_host_available(void) {
  uint64_t avail = meminfo_available();
  uint64_t max = 0, cur = 0;
  if (read_u64_file("/sys/fs/cgroup/memory.max", &max)) {
    if (!read_u64_file("/sys/fs/cgroup/memory.current", &cur)) cur = 0;
    avail = MIN(avail, max > cur ? max - cur : 0);
  }
  const char *env = g_getenv("TENSORPLUG_MEMORY_LIMIT");
  uint64_t lim = 0;
  if (env && *env && parse_size(env, &lim)) avail = MIN(avail, lim);
  return avail;
}

const char *tp_memory_format(uint64_t bytes, char *buf, size_t n) {
  static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) {
    g_snprintf(buf, n, "%llu bytes", (unsigned long long)bytes);
    return buf;
  }
  double v = (double)bytes / 1024.0;
  size_t u = 0;
  while (v >= 1024.0 && u + 1 < G_N_ELEMENTS(units)) v /= 1024.0, u++;
  g_snprintf(buf, n, "%.1f %s", v, units[u]);
  return buf;
}

bool tp_memory_check(uint64_t bytes, uint64_t available, const char *where, const char *what,
                     GError **err) {
  if (bytes <= available) return true;
  char need[32], have[32];
  g_set_error(err, TP_ERROR, TP_ERROR_OUT_OF_MEMORY, "%s needs %s but only %s of %s are "
              "available", what, tp_memory_format(bytes, need, sizeof need),
              tp_memory_format(available, have, sizeof have), where);
  return false;
}

bool tp_memory_check_host(uint64_t bytes, const char *what, GError **err) {
  return tp_memory_check(bytes, tp_memory_host_available(), "host memory", what, err);
}

uint64_t tp_memory_device_available(const tp_backend *be) {
  uint64_t avail = be->info.memory_bytes ? be->info.memory_bytes : UINT64_MAX;
  /* memory the host can address is the host's */
  if (be->info.host_visible) avail = MIN(avail, tp_memory_host_available());
  return avail;
}

bool tp_memory_check_device(const tp_backend *be, uint64_t bytes, const char *what,
                            GError **err) {
  char where[192];
  g_snprintf(where, sizeof where, "memory on the %s device (%s)", be->name, be->info.name);
  return tp_memory_check(bytes, tp_memory_device_available(be), where, what, err);
}
