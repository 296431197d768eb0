/* Plugins whose interface leaves a required slot NULL (one per build, chosen
 * by -DNULL_SLOT=...): the loader must refuse each with the slot's name and
 * never call into it. Every other slot points at a function that is never
 * called (the plugin is only validated). With -DMARK_CONSTRUCTOR the library
 * also has a constructor that creates $TP_PLUGIN_MARKER, to show whether
 * the loader ran any of its code. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tensorplug/model.h"
#include "tensorplug/plugin.h"

static void never_called(void) { abort(); }

#ifdef MARK_CONSTRUCTOR
__attribute__((constructor)) static void mark(void) {
  const char *p = getenv("TP_PLUGIN_MARKER");
  if (p) {
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) close(fd);
  }
}
#endif

#if defined(NULL_MODEL_SLOT)
static tp_model_iface iface;
static tp_plugin entry = {TP_PLUGIN_ABI_VERSION, TP_PLUGIN_MODEL, "nullmodel", "0", &iface};
TP_PLUGIN_EXPORT const tp_plugin *tp_plugin_entry(void) {
  void (*f)(void) = never_called;
  for (size_t off = offsetof(tp_model_iface, preset_config); off < sizeof iface; off += sizeof f)
    memcpy((char *)&iface + off, &f, sizeof f);
  iface.struct_size = sizeof iface;
  iface.model_type = "nullmodel";
  iface.NULL_MODEL_SLOT = NULL;
  return &entry;
}
#else
static tp_backend_iface iface;
static tp_plugin entry = {TP_PLUGIN_ABI_VERSION, TP_PLUGIN_BACKEND, "nullslot", "0", &iface};
TP_PLUGIN_EXPORT const tp_plugin *tp_plugin_entry(void) {
  /* every slot after struct_size is a function pointer */
  void (*f)(void) = never_called;
  for (size_t off = sizeof(size_t); off + sizeof f <= sizeof iface; off += sizeof f)
    memcpy((char *)&iface + off, &f, sizeof f);
  iface.struct_size = sizeof iface;
#if defined(NULL_KERNEL_INDEX)
  void (*none)(void) = NULL;
  memcpy((char *)&iface.k + NULL_KERNEL_INDEX * sizeof none, &none, sizeof none);
#elif defined(NULL_SLOT)
  iface.NULL_SLOT = NULL;
#endif
  return &entry;
}
#endif
