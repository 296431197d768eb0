/* plugins/cpu/cpu_backend.c — the CPU backend plugin: device probe, open,
 * host buffers, and the vtable wiring the kernels of cpu_kernels.c.
 *
 * Kernels run synchronously on the calling thread and its OpenMP team; a
 * kernel failure (bad argument, unsupported dtype, out of memory) is kept on
 * the device and reported by the next synchronize(), as on an async GPU. */
#include <errno.h>
#include <omp.h>
#include <sched.h>
#include <stdint.h>
#include <sys/mman.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "cpu_kernels.h"
#include "tensorplug/error.h"
#include "tensorplug/plugin.h"

#define CPU_ALIGN 64
#define CPU_MAX_THREADS 1024

GQuark cpu_error_quark(void) { return g_quark_from_static_string("tensorplug-error-quark"); }

void cpu_set_error(tp_backend_dev *d, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  GError *e = g_error_new_valist(CPU_ERROR, code, fmt, ap);
  va_end(ap);
  g_mutex_lock(&d->lock);
  if (d->error == NULL)
    d->error = e;
  else
    g_error_free(e);
  g_mutex_unlock(&d->lock);
}

/* ----------------------------------------------------------------- probe */

/* CPUs this process may run on (cgroup/taskset aware), else online CPUs. */
static int usable_cpus(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

/* Physical cores: distinct (package, core) pairs in sysfs; 0 when unknown. */
static int physical_cores(void) {
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  GHashTable *seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  for (long c = 0; c < ncpu; c++) {
    char path[128], *pkg = NULL, *core = NULL;
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%ld/topology/physical_package_id", c);
    gboolean ok = g_file_get_contents(path, &pkg, NULL, NULL);
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%ld/topology/core_id", c);
    ok = ok && g_file_get_contents(path, &core, NULL, NULL);
    if (ok) g_hash_table_add(seen, g_strdup_printf("%s/%s", g_strstrip(pkg), g_strstrip(core)));
    g_free(pkg);
    g_free(core);
  }
  int n = (int)g_hash_table_size(seen);
  g_hash_table_destroy(seen);
  return n;
}

static const char *blas_parallel_name(int p) {
  switch (p) {
  case 0: return "sequential";
  case 1: return "pthreads";
  case 2: return "OpenMP";
  default: return "unknown threading";
  }
}

static int cpu_probe(tp_device_info *infos, int max, GError **err) {
  if (!cpu_isa_init(err)) return 0;
  if (max < 1 || infos == NULL) return 1;
  tp_device_info *in = &infos[0];
  memset(in, 0, sizeof *in);
  g_strlcpy(in->name, "cpu", sizeof in->name);
  int threads = usable_cpus(), cores = physical_cores();
  int par = openblas_get_parallel();
  const char *core = openblas_get_corename();
  char gemm[160];
  cpu_gemm_describe(gemm, sizeof gemm);
  g_snprintf(in->description, sizeof in->description,
           "%d cores / %d threads usable; OpenBLAS %s core, %s build%s; kernels %s; %s",
           cores > 0 ? cores : threads, threads, core ? core : "?", blas_parallel_name(par),
           par == 2 ? " (shares the OpenMP pool)" : " (may oversubscribe: OpenMP build recommended)",
           cpu_isa_name(cpu_isa), gemm);
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  in->memory_bytes = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
  in->compute_units = threads;
  in->is_software = false;
  in->is_discrete = false;
  in->host_visible = true;
  in->max_alloc_bytes = in->memory_bytes;
  in->max_binding_bytes = 0; /* a pointer reaches everything */
  in->offset_align = CPU_ALIGN;
  in->gemm_compute = TP_DTYPE_BIT(TP_F32) | TP_DTYPE_BIT(TP_BF16) | TP_DTYPE_BIT(TP_F16);
  if (cpu_gemm_i8_available()) in->gemm_compute |= TP_DTYPE_BIT(TP_I8);
  in->storage_dtypes = TP_DTYPE_BIT(TP_F32) | TP_DTYPE_BIT(TP_BF16) | TP_DTYPE_BIT(TP_F16) |
                       TP_DTYPE_BIT(TP_I32);
  g_snprintf(in->features, sizeof in->features, "%s, OpenBLAS %s, OpenMP, %s kernels",
           cpu_gemm_lib_sel == CPU_GEMM_ONEDNN ? "oneDNN" : "no oneDNN", core ? core : "?",
           cpu_isa_name(cpu_isa));
  return 1;
}

/* ------------------------------------------------------------ open/close */

/* threads > 0, else $TENSORPLUG_NUM_THREADS, else every usable CPU. */
static int resolve_threads(int threads, GError **err) {
  if (threads > 0) return MIN(threads, CPU_MAX_THREADS);
  const char *env = g_getenv("TENSORPLUG_NUM_THREADS");
  if (env && *env) {
    char *end = NULL;
    errno = 0;
    long v = strtol(env, &end, 10);
    if (errno != 0 || *end != '\0' || v < 0 || v > CPU_MAX_THREADS) {
      g_set_error(err, CPU_ERROR, TP_ERROR_INVALID_ARGUMENT,
                  "cpu backend: TENSORPLUG_NUM_THREADS=\"%s\" is not a thread count in "
                  "[0, %d] (0 means all cores); fix or unset it",
                  env, CPU_MAX_THREADS);
      return -1;
    }
    if (v > 0) return (int)v;
  }
  return usable_cpus();
}

static tp_backend_dev *cpu_open(int index, int threads, GError **err) {
  if (index != 0) {
    g_set_error(err, CPU_ERROR, TP_ERROR_INVALID_ARGUMENT,
                "cpu backend: device %d does not exist (the CPU backend has device 0 only)", index);
    return NULL;
  }
  if (!cpu_isa_init(err)) return NULL;
  int n = resolve_threads(threads, err);
  if (n < 1) return NULL;
  tp_backend_dev *d = g_new0(tp_backend_dev, 1);
  g_mutex_init(&d->lock);
  d->threads = n;
  /* One libgomp pool for OpenBLAS and our kernels, one team size. The
   * kernels also pass num_threads(d->threads) explicitly because
   * omp_set_num_threads only affects the calling thread. */
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
  return d;
}

static void cpu_close(tp_backend_dev *d) {
  if (!d) return;
  cpu_gemm_state_free(d->gemm);
  cpu_attention_state_free(d);
  g_clear_error(&d->error);
  g_mutex_clear(&d->lock);
  g_free(d);
}

/* --------------------------------------------------------------- buffers */

/* Buffers of at least this size are their own mapping (2 MiB aligned): the
 * memory goes back to the system at once when freed, so a re-sized
 * activation arena never leaves fragments of the heap resident. (Advising
 * transparent huge pages was measured: 16x fewer page faults, but the
 * kernel's compaction on first touch cost more CPU time than it saved.) */
#define CPU_MAP_MIN (4u << 20)
#define CPU_MAP_ALIGN (2u << 20)

static void *map_large(size_t bytes, size_t *mapped) {
  size_t len = (bytes + CPU_MAP_ALIGN - 1) / CPU_MAP_ALIGN * CPU_MAP_ALIGN;
  size_t span = len + CPU_MAP_ALIGN;
  if (len < bytes || span < len) return NULL;
  char *raw = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return NULL;
  char *p = (char *)(((uintptr_t)raw + CPU_MAP_ALIGN - 1) & ~(uintptr_t)(CPU_MAP_ALIGN - 1));
  if (p > raw) munmap(raw, (size_t)(p - raw));
  size_t tail = (size_t)(raw + span - (p + len));
  if (tail) munmap(p + len, tail);
  *mapped = len;
  return p;
}

static tp_buffer *cpu_buffer_alloc(tp_backend_dev *d, size_t bytes, GError **err) {
  (void)d;
  /* aligned_alloc needs a multiple of the alignment; 0 bytes still gets a
   * distinct valid pointer */
  size_t rounded = bytes == 0 ? CPU_ALIGN : (bytes + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN;
  /* More than the machine's RAM would only thrash (and sanitizers abort on
   * absurd sizes instead of returning NULL): refuse it up front. */
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  bool too_big = pages > 0 && page > 0 && bytes / (size_t)page > (size_t)pages;
  size_t mapped = 0;
  void *p = NULL;
  if (rounded >= bytes && !too_big)
    p = bytes >= CPU_MAP_MIN ? map_large(bytes, &mapped) : aligned_alloc(CPU_ALIGN, rounded);
  if (!p) {
    g_set_error(err, CPU_ERROR, TP_ERROR_OUT_OF_MEMORY,
                "cpu backend: out of host memory allocating %zu bytes (%.1f MiB); "
                "use a smaller batch or sequence length",
                bytes, (double)bytes / 1048576.0);
    return NULL;
  }
  tp_buffer *b = g_new(tp_buffer, 1);
  b->ptr = p;
  b->size = bytes;
  b->mapped = mapped;
  return b;
}

static void cpu_buffer_free(tp_backend_dev *d, tp_buffer *b) {
  (void)d;
  if (!b) return;
  if (b->mapped)
    munmap(b->ptr, b->mapped);
  else
    free(b->ptr);
  g_free(b);
}

static void *cpu_buffer_host_ptr(tp_buffer *b) { return b ? b->ptr : NULL; }

static bool check_range(const char *what, tp_mem m, size_t bytes, GError **err) {
  if (m.buf == NULL || m.off > m.buf->size || bytes > m.buf->size - m.off) {
    g_set_error(err, CPU_ERROR, TP_ERROR_INVALID_ARGUMENT,
                "cpu backend %s: %zu bytes at offset %zu exceed the buffer (%zu bytes)", what,
                bytes, m.off, m.buf ? m.buf->size : (size_t)0);
    return false;
  }
  return true;
}

static bool cpu_upload(tp_backend_dev *d, tp_mem dst, const void *src, size_t bytes, GError **err) {
  (void)d;
  if (!check_range("upload", dst, bytes, err)) return false;
  if (bytes) memcpy((char *)dst.buf->ptr + dst.off, src, bytes);
  return true;
}

static bool cpu_download(tp_backend_dev *d, void *dst, tp_mem src, size_t bytes, GError **err) {
  (void)d;
  if (!check_range("download", src, bytes, err)) return false;
  if (bytes) memcpy(dst, (const char *)src.buf->ptr + src.off, bytes);
  return true;
}

static bool cpu_copy(tp_backend_dev *d, tp_mem dst, tp_mem src, size_t bytes, GError **err) {
  (void)d;
  if (!check_range("copy (source)", src, bytes, err) ||
      !check_range("copy (destination)", dst, bytes, err))
    return false;
  /* memmove: copies within one buffer may overlap */
  if (bytes) memmove((char *)dst.buf->ptr + dst.off, (const char *)src.buf->ptr + src.off, bytes);
  return true;
}

/* Kernels already ran; report (and clear) the first failure they recorded. */
static bool cpu_synchronize(tp_backend_dev *d, GError **err) {
  g_mutex_lock(&d->lock);
  GError *e = d->error;
  d->error = NULL;
  g_mutex_unlock(&d->lock);
  if (e) {
    g_propagate_error(err, e);
    return false;
  }
  return true;
}

/* ------------------------------------------------------------------ entry */

static const tp_backend_iface cpu_iface = {
    .struct_size = sizeof(tp_backend_iface),
    .probe = cpu_probe,
    .open = cpu_open,
    .close = cpu_close,
    .buffer_alloc = cpu_buffer_alloc,
    .buffer_free = cpu_buffer_free,
    .buffer_host_ptr = cpu_buffer_host_ptr,
    .upload = cpu_upload,
    .download = cpu_download,
    .copy = cpu_copy,
    .synchronize = cpu_synchronize,
    .k =
        {
            .gemm = cpu_gemm,
            .embedding_fwd = cpu_embedding_fwd,
            .embedding_bwd = cpu_embedding_bwd,
            .layernorm_fwd = cpu_layernorm_fwd,
            .layernorm_bwd = cpu_layernorm_bwd,
            .softmax_fwd = cpu_softmax_fwd,
            .softmax_bwd = cpu_softmax_bwd,
            .gelu_fwd = cpu_gelu_fwd,
            .gelu_bwd = cpu_gelu_bwd,
            .relu_fwd = cpu_relu_fwd,
            .relu_bwd = cpu_relu_bwd,
            .tanh_fwd = cpu_tanh_fwd,
            .tanh_bwd = cpu_tanh_bwd,
            .bias_add = cpu_bias_add,
            .bias_grad = cpu_bias_grad,
            .add = cpu_add,
            .axpy = cpu_axpy,
            .fill = cpu_fill,
            .dropout_fwd = cpu_dropout_fwd,
            .dropout_bwd = cpu_dropout_bwd,
            .permute_0213 = cpu_permute_0213,
            .first_token_fwd = cpu_first_token_fwd,
            .first_token_bwd = cpu_first_token_bwd,
            .cross_entropy_fwd = cpu_cross_entropy_fwd,
            .cross_entropy_bwd = cpu_cross_entropy_bwd,
            .count_correct = cpu_count_correct,
            .adam_step = cpu_adam_step,
            .optim_control = cpu_optim_control,
            .sumsq = cpu_sumsq,
            .nonfinite = cpu_nonfinite,
            .cast = cpu_cast,
        },
    .dropout_fwd_keep = cpu_dropout_fwd_keep,
    .dropout_bwd_keep = cpu_dropout_bwd_keep,
    .attention_fwd = cpu_attention_fwd,
    .attention_bwd = cpu_attention_bwd,
    .preferred_compute = cpu_preferred_compute,
    .bias_gelu_fwd = cpu_bias_gelu_fwd,
    .bias_gelu_bwd = cpu_bias_gelu_bwd,
    .add_layernorm_fwd = cpu_add_layernorm_fwd,
    .add_layernorm_bwd = cpu_add_layernorm_bwd,
};

static const tp_plugin cpu_plugin = {
    .abi_version = TP_PLUGIN_ABI_VERSION,
    .kind = TP_PLUGIN_BACKEND,
    .name = "cpu",
    .version = "0.1.0",
    .iface = &cpu_iface,
};

TP_PLUGIN_EXPORT const tp_plugin *tp_plugin_entry(void);
TP_PLUGIN_EXPORT const tp_plugin *tp_plugin_entry(void) { return &cpu_plugin; }
