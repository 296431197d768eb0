/* core/registry.c — plugin discovery and loading with dlopen.
 * The registry is the one piece of global mutable state in libtensorplug:
 * it is built once (g_once) and read-only afterwards. */
#include "tensorplug/registry.h"

#include <dlfcn.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <errno.h>

#include "tensorplug/collective_iface.h"
#include "tensorplug/error.h"
#include "tensorplug/model.h"

struct tp_registry {
  GPtrArray *records; /* tp_plugin_record*, in load order */
  char **dirs;        /* searched folders, in order */
};

static void record_free(gpointer p) {
  tp_plugin_record *r = p;
  g_free(r->path);
  g_free(r->name);
  g_free(r->version);
  g_free(r->why_not);
  g_free(r);
}

/* The build tree is searched only when this library itself was loaded from
 * it, so an installed tensorplug never picks up stale development plugins. */
static bool running_from_build_tree(void) {
  Dl_info info;
  if (!dladdr((void *)running_from_build_tree, &info) || !info.dli_fname) return false;
  return g_str_has_prefix(info.dli_fname, TP_BUILD_ROOT "/");
}

static char **default_dirs(void) {
  GPtrArray *dirs = g_ptr_array_new();
  const char *env = g_getenv("TENSORPLUG_PLUGIN_PATH");
  if (env) {
    char **parts = g_strsplit(env, ":", -1);
    for (char **p = parts; *p; p++)
      if (**p) g_ptr_array_add(dirs, g_strdup(*p));
    g_strfreev(parts);
  }
  if (running_from_build_tree()) {
    static const char *const sub[] = {"plugins/cpu", "plugins/cuda", "plugins/vulkan",
                                      "plugins/nccl", "models"};
    for (size_t i = 0; i < G_N_ELEMENTS(sub); i++)
      g_ptr_array_add(dirs, g_build_filename(TP_BUILD_ROOT, sub[i], NULL));
  }
  g_ptr_array_add(dirs, g_strdup(TP_PLUGIN_INSTALL_DIR));
  g_ptr_array_add(dirs, NULL);
  return (char **)g_ptr_array_free(dirs, FALSE);
}

static bool record_is_loaded_name(const tp_registry *r, const char *name) {
  for (guint i = 0; i < r->records->len; i++) {
    const tp_plugin_record *x = g_ptr_array_index(r->records, i);
    if (x->loaded && g_strcmp0(x->name, name) == 0) return true;
  }
  return false;
}

static const char *kind_word(uint32_t k) {
  return k == TP_PLUGIN_BACKEND      ? "backend"
         : k == TP_PLUGIN_MODEL      ? "model"
         : k == TP_PLUGIN_COLLECTIVE ? "collective"
                                     : "unknown";
}

/* Every base slot and every kernel a backend must fill. The kernels are
 * walked as an array of pointer-sized slots, so that the check covers each
 * kernel tp_kernels will ever have without being edited; optional slots only
 * come after k. */
static char *validate_backend(const tp_backend_iface *b) {
  static const struct {
    const char *name;
    size_t off;
  } base[] = {
#define SLOT(s) {#s, offsetof(tp_backend_iface, s)}
      SLOT(probe), SLOT(open), SLOT(close), SLOT(buffer_alloc), SLOT(buffer_free),
      SLOT(upload), SLOT(download), SLOT(copy), SLOT(synchronize),
#undef SLOT
  };
  typedef void (*any_fn)(void);
  for (size_t i = 0; i < G_N_ELEMENTS(base); i++) {
    any_fn f;
    memcpy(&f, (const char *)b + base[i].off, sizeof f);
    if (!f)
      return g_strdup_printf("its backend interface has no %s function (a NULL slot): every "
                             "required slot must be filled", base[i].name);
  }
  G_STATIC_ASSERT(sizeof(tp_kernels) % sizeof(any_fn) == 0);
  const size_t n = sizeof(tp_kernels) / sizeof(any_fn);
  for (size_t i = 0; i < n; i++) {
    any_fn f;
    memcpy(&f, (const char *)&b->k + i * sizeof f, sizeof f);
    if (!f)
      return g_strdup_printf("kernel %zu of %zu in its tp_kernels table is NULL (counting from 0 "
                             "in the order of backend_iface.h): every kernel is required", i, n);
  }
  return NULL;
}

/* Checks the entry's contents; returns a reason to refuse, or NULL. */
static char *validate_entry(const tp_plugin *p) {
  if (!p) return g_strdup("its tp_plugin_entry() returned NULL");
  if (p->abi_version != TP_PLUGIN_ABI_VERSION)
    return g_strdup_printf("plugin ABI version %u, but this tensorplug (%s) speaks ABI version "
                           "%u: rebuild the plugin against this tensorplug's headers",
                           p->abi_version, TP_VERSION, TP_PLUGIN_ABI_VERSION);
  if (!p->name || !*p->name) return g_strdup("the plugin has no name");
  if (p->kind != TP_PLUGIN_BACKEND && p->kind != TP_PLUGIN_MODEL &&
      p->kind != TP_PLUGIN_COLLECTIVE)
    return g_strdup_printf("unknown plugin kind %u (expected %d backend, %d model or %d "
                           "collective)", p->kind, TP_PLUGIN_BACKEND, TP_PLUGIN_MODEL,
                           TP_PLUGIN_COLLECTIVE);
  if (!p->iface) return g_strdup("the plugin has no interface");
  if (p->kind == TP_PLUGIN_BACKEND) {
    const tp_backend_iface *b = p->iface;
    if (b->struct_size < sizeof(tp_backend_iface))
      return g_strdup_printf("backend interface of %zu bytes, expected at least %zu: rebuild "
                             "the plugin", b->struct_size, sizeof(tp_backend_iface));
    return validate_backend(b);
  } else if (p->kind == TP_PLUGIN_COLLECTIVE) {
    const tp_collective_iface *c = p->iface;
    if (c->struct_size < sizeof(tp_collective_iface))
      return g_strdup_printf("collective interface of %zu bytes, expected at least %zu: rebuild "
                             "the plugin", c->struct_size, sizeof(tp_collective_iface));
    if (!c->backend || !c->open || !c->sum_f32 || !c->close)
      return g_strdup("collective interface lacks backend, open, sum_f32 or close");
  } else {
    const tp_model_iface *m = p->iface;
    /* Optional slots at the end may be missing (older plugins): core reads
     * them through TP_MODEL_IFACE_SLOT. */
    if (m->struct_size < TP_MODEL_IFACE_MIN_SIZE)
      return g_strdup_printf("model interface of %zu bytes, expected at least %zu: rebuild "
                             "the plugin", m->struct_size, (size_t)TP_MODEL_IFACE_MIN_SIZE);
    const char *missing = !m->model_type || !*m->model_type ? "model_type"
                          : !m->config_from_json                ? "config_from_json"
                          : !m->config_to_json                  ? "config_to_json"
                          : !m->declare                         ? "declare"
                          : !m->forward                         ? "forward"
                                                                : NULL;
    if (missing)
      return g_strdup_printf("its model interface has no %s (a NULL slot): model_type, "
                             "config_from_json, config_to_json, declare and forward are "
                             "required", missing);
  }
  return NULL;
}

/* Plugins are code run with the user's rights: a file or folder that someone
 * else could have written is refused before anything of it runs (dlopen runs
 * a library's constructors). Trusted: the user and root, and a group-writable
 * entry only when the group is the user's own or root's. */
static char *untrusted_reason(const char *path, const char *what) {
  struct stat st;
  if (stat(path, &st) != 0) return g_strdup_printf("cannot stat the %s: %s", what, g_strerror(errno));
  if (st.st_uid != 0 && st.st_uid != geteuid())
    return g_strdup_printf("the %s %s is owned by another user (uid %u): plugins are only loaded "
                           "from files and folders of this user or root", what, path,
                           (unsigned)st.st_uid);
  if ((st.st_mode & S_IWOTH) ||
      ((st.st_mode & S_IWGRP) && st.st_gid != 0 && st.st_gid != getegid()))
    return g_strdup_printf("the %s %s is writable by other users (mode %04o): plugins are only "
                           "loaded from files and folders that only this user or root can "
                           "change (chmod go-w)", what, path, (unsigned)(st.st_mode & 07777));
  return NULL;
}

static tp_plugin_record *add_refusal(tp_registry *r, const char *path, char *why) {
  tp_plugin_record *rec = g_new0(tp_plugin_record, 1);
  rec->path = g_strdup(path);
  rec->name = g_path_get_basename(path);
  rec->why_not = why;
  g_ptr_array_add(r->records, rec);
  return rec;
}

static void load_one(tp_registry *r, const char *path) {
  char *why = untrusted_reason(path, "plugin file");
  if (!why && !g_file_test(path, G_FILE_TEST_IS_REGULAR))
    why = g_strdup("not a regular file");
  if (why) {
    add_refusal(r, path, why);
    return;
  }
  tp_plugin_record *rec = g_new0(tp_plugin_record, 1);
  rec->path = g_strdup(path);
  g_ptr_array_add(r->records, rec);

  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char *e = dlerror();
    rec->name = g_path_get_basename(path);
    rec->why_not = g_strdup_printf("cannot be loaded: %s", e ? e : "unknown dlopen error");
    return;
  }
  tp_plugin_entry_fn entry = (tp_plugin_entry_fn)dlsym(h, TP_PLUGIN_ENTRY_SYMBOL);
  if (!entry) {
    rec->name = g_path_get_basename(path);
    rec->why_not = g_strdup_printf("no %s symbol: not a tensorplug plugin (a plugin exports it "
                                   "with TP_PLUGIN_EXPORT)", TP_PLUGIN_ENTRY_SYMBOL);
    dlclose(h);
    return;
  }
  const tp_plugin *p = entry();
  if (p && p->name) rec->name = g_strdup(p->name);
  else rec->name = g_path_get_basename(path);
  if (p && p->version) rec->version = g_strdup(p->version);
  if (p) rec->kind = (int)p->kind;
  rec->why_not = validate_entry(p);
  if (!rec->why_not && record_is_loaded_name(r, p->name))
    rec->why_not = g_strdup_printf("a %s plugin named \"%s\" was already loaded from an earlier "
                                   "folder; this one is shadowed", kind_word(p->kind), p->name);
  if (rec->why_not) {
    dlclose(h);
    return;
  }
  rec->loaded = true;
  rec->plugin = p; /* the handle stays open for the life of the process */
}

static gint cmp_str(gconstpointer a, gconstpointer b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void scan_dir(tp_registry *r, const char *dir) {
  if (!g_path_is_absolute(dir)) {
    add_refusal(r, dir, g_strdup_printf("the plugin folder \"%s\" is not an absolute path "
                                        "(TENSORPLUG_PLUGIN_PATH): plugins are only loaded "
                                        "from absolute folders, never relative to the current "
                                        "folder", dir));
    return;
  }
  if (!g_file_test(dir, G_FILE_TEST_IS_DIR)) return; /* absent folders are normal */
  char *why = untrusted_reason(dir, "plugin folder");
  if (why) {
    add_refusal(r, dir, why);
    return;
  }
  GDir *d = g_dir_open(dir, 0, NULL);
  if (!d) return;
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  const char *n;
  while ((n = g_dir_read_name(d)))
    if (g_str_has_suffix(n, ".so")) g_ptr_array_add(names, g_strdup(n));
  g_dir_close(d);
  g_ptr_array_sort(names, cmp_str);
  for (guint i = 0; i < names->len; i++) {
    char *path = g_build_filename(dir, g_ptr_array_index(names, i), NULL);
    load_one(r, path);
    g_free(path);
  }
  g_ptr_array_unref(names);
}

static tp_registry *registry_scan(char **dirs) {
  tp_registry *r = g_new0(tp_registry, 1);
  r->records = g_ptr_array_new_with_free_func(record_free);
  r->dirs = dirs;
  for (char **d = dirs; *d; d++) scan_dir(r, *d);
  return r;
}

/* Backends that use OpenMP (the CPU one, with OpenBLAS's OpenMP build) read
 * the wait policy when libgomp loads, i.e. at our dlopen. libgomp's default
 * spins at every barrier; on a loaded machine (parallel tests, a second job)
 * the spinning threads steal the cores from the working ones and a training
 * step got 3-5x slower in our measurements (docs/performance.md), while
 * PASSIVE cost nothing measurable when idle. The user's own setting wins. */
static void default_openmp_wait_policy(void) {
  if (!g_getenv("OMP_WAIT_POLICY") && !g_getenv("GOMP_SPINCOUNT"))
    g_setenv("OMP_WAIT_POLICY", "PASSIVE", FALSE);
}

tp_registry *tp_registry_get_default(void) {
  static gsize once = 0;
  static tp_registry *reg;
  if (g_once_init_enter(&once)) {
    default_openmp_wait_policy();
    reg = registry_scan(default_dirs());
    g_once_init_leave(&once, 1);
  }
  return reg;
}

tp_registry *tp_registry_new_for_dirs(const char *const *dirs) {
  return registry_scan(g_strdupv((char **)dirs));
}

void tp_registry_free(tp_registry *r) {
  if (!r || r == tp_registry_get_default()) return;
  g_ptr_array_unref(r->records);
  g_strfreev(r->dirs);
  g_free(r);
}

guint tp_registry_count(const tp_registry *r) { return r->records->len; }

const tp_plugin_record *tp_registry_record(const tp_registry *r, guint i) {
  return i < r->records->len ? g_ptr_array_index(r->records, i) : NULL;
}

const char *const *tp_registry_dirs(const tp_registry *r) { return (const char *const *)r->dirs; }

/* "cpu, bert (refused: ...)" — what the registry holds, for error messages. */
static char *registry_summary(const tp_registry *r, uint32_t kind) {
  GString *s = g_string_new(NULL);
  for (guint i = 0; i < r->records->len; i++) {
    const tp_plugin_record *x = g_ptr_array_index(r->records, i);
    if (x->loaded && x->plugin->kind != kind) continue;
    if (!x->loaded && x->kind != 0 && (uint32_t)x->kind != kind) continue;
    if (s->len) g_string_append(s, ", ");
    g_string_append(s, x->name);
    if (!x->loaded) g_string_append_printf(s, " (refused: %s)", x->why_not);
  }
  if (!s->len) g_string_append(s, "none");
  return g_string_free(s, FALSE);
}

const tp_backend_iface *tp_registry_find_backend(const tp_registry *r, const char *name,
                                                 GError **err) {
  for (guint i = 0; i < r->records->len; i++) {
    const tp_plugin_record *x = g_ptr_array_index(r->records, i);
    if (x->loaded && x->plugin->kind == TP_PLUGIN_BACKEND && strcmp(x->name, name) == 0)
      return x->plugin->iface;
  }
  char *have = registry_summary(r, TP_PLUGIN_BACKEND);
  g_set_error(err, TP_ERROR, TP_ERROR_UNAVAILABLE,
              "no backend plugin \"%s\" is loaded (backends found: %s); run `tensorplug "
              "plugins` to see where plugins are searched, or set TENSORPLUG_PLUGIN_PATH",
              name, have);
  g_free(have);
  return NULL;
}

static bool model_answers_to(const tp_model_iface *m, const char *name) {
  if (strcmp(m->model_type, name) == 0) return true;
  for (const char *const *p = m->presets; p && *p; p++)
    if (strcmp(*p, name) == 0) return true;
  return false;
}

const tp_model_iface *tp_registry_find_model(const tp_registry *r, const char *name,
                                             GError **err) {
  for (guint i = 0; i < r->records->len; i++) {
    const tp_plugin_record *x = g_ptr_array_index(r->records, i);
    if (x->loaded && x->plugin->kind == TP_PLUGIN_MODEL && model_answers_to(x->plugin->iface, name))
      return x->plugin->iface;
  }
  GString *known = g_string_new(NULL);
  for (guint i = 0; i < r->records->len; i++) {
    const tp_plugin_record *x = g_ptr_array_index(r->records, i);
    if (!x->loaded || x->plugin->kind != TP_PLUGIN_MODEL) continue;
    const tp_model_iface *m = x->plugin->iface;
    for (const char *const *p = m->presets; p && *p; p++)
      g_string_append_printf(known, "%s%s", known->len ? ", " : "", *p);
  }
  g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
              "unknown model \"%s\": not a folder with config.json, nor a preset of a loaded "
              "model plugin (presets: %s)", name, known->len ? known->str : "none loaded");
  g_string_free(known, TRUE);
  return NULL;
}

const tp_collective_iface *tp_registry_find_collective(const tp_registry *r, const char *backend,
                                                       const char **name) {
  for (guint i = 0; i < r->records->len; i++) {
    const tp_plugin_record *x = g_ptr_array_index(r->records, i);
    if (!x->loaded || x->plugin->kind != TP_PLUGIN_COLLECTIVE) continue;
    const tp_collective_iface *c = x->plugin->iface;
    if (strcmp(c->backend, backend) == 0) {
      if (name) *name = x->name;
      return c;
    }
  }
  return NULL;
}
