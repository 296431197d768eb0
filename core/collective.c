/* core/collective.c — a rank's collective operations over a transport, the
 * one-process transport, agreement, and device sums (a collective plugin
 * or host staging). The MPI transport is core/collective_mpi.c. */
#include "tensorplug/collective.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensorplug/collective_iface.h"
#include "tensorplug/error.h"
#include "tensorplug/registry.h"

/* Host staging moves gradients in buckets of this many floats (16 MiB), so
 * the host copy stays small next to the model. */
#define STAGE_FLOATS ((size_t)1 << 22)

struct tp_collective {
  const tp_collective_ops *ops;
  void *self;
  int rank, size;
  char *name;
  /* device sums through a collective plugin (NULL: host staging) */
  const tp_collective_iface *dev_iface;
  tp_dev_comm *dev;
  tp_backend *dev_be;
  float *stage; /* STAGE_FLOATS, allocated on first use */
};

tp_collective *tp_collective_new(const tp_collective_ops *ops, void *self, int rank, int size) {
  tp_collective *c = g_new0(tp_collective, 1);
  c->ops = ops;
  c->self = self;
  c->rank = rank;
  c->size = size;
  c->name = g_strdup(ops->name);
  return c;
}

void tp_collective_free(tp_collective *c) {
  if (!c) return;
  if (c->dev) c->dev_iface->close(c->dev);
  if (c->ops->close) c->ops->close(c->self);
  g_free(c->stage);
  g_free(c->name);
  g_free(c);
}

int tp_collective_rank(const tp_collective *c) { return c->rank; }
int tp_collective_size(const tp_collective *c) { return c->size; }
const char *tp_collective_name(const tp_collective *c) { return c->name; }

/* ---- one process: every operation leaves the data as it is ---- */

static bool single_barrier(void *self, GError **err) {
  (void)self, (void)err;
  return true;
}
static bool single_bcast(void *self, void *buf, size_t bytes, int root, GError **err) {
  (void)self, (void)buf, (void)bytes, (void)root, (void)err;
  return true;
}
static bool single_sum_f32(void *self, float *v, size_t n, GError **err) {
  (void)self, (void)v, (void)n, (void)err;
  return true;
}
static bool single_sum_f64(void *self, double *v, size_t n, GError **err) {
  (void)self, (void)v, (void)n, (void)err;
  return true;
}
static bool single_max_i64(void *self, int64_t *v, size_t n, GError **err) {
  (void)self, (void)v, (void)n, (void)err;
  return true;
}
static void single_abort(void *self, int status) {
  (void)self;
  fflush(stdout);
  _Exit(status);
}

static const tp_collective_ops single_ops = {
    .name = "single", .barrier = single_barrier, .bcast = single_bcast,
    .sum_f32 = single_sum_f32, .sum_f64 = single_sum_f64, .max_i64 = single_max_i64,
    .abort = single_abort, .close = NULL};

tp_collective *tp_collective_single_new(void) {
  return tp_collective_new(&single_ops, NULL, 0, 1);
}

/* ---- host operations ---- */

bool tp_collective_barrier(tp_collective *c, GError **err) { return c->ops->barrier(c->self, err); }

bool tp_collective_bcast(tp_collective *c, void *buf, size_t bytes, int root, GError **err) {
  return c->size == 1 || c->ops->bcast(c->self, buf, bytes, root, err);
}

bool tp_collective_sum_f32(tp_collective *c, float *v, size_t n, GError **err) {
  return c->size == 1 || c->ops->sum_f32(c->self, v, n, err);
}

bool tp_collective_sum_f64(tp_collective *c, double *v, size_t n, GError **err) {
  return c->size == 1 || c->ops->sum_f64(c->self, v, n, err);
}

bool tp_collective_max_i64(tp_collective *c, int64_t *v, size_t n, GError **err) {
  return c->size == 1 || c->ops->max_i64(c->self, v, n, err);
}

void tp_collective_abort(tp_collective *c, int status) {
  c->ops->abort(c->self, status);
  _Exit(status); /* a transport's abort never returns; this keeps G_NORETURN true */
}

bool tp_collective_bcast_string(tp_collective *c, char **s, int root, GError **err) {
  int64_t len = c->rank == root ? (*s ? (int64_t)strlen(*s) : -1) : 0;
  if (!tp_collective_bcast(c, &len, sizeof len, root, err)) return false;
  if (c->rank != root) {
    g_free(*s);
    *s = len < 0 ? NULL : g_malloc0((size_t)len + 1);
  }
  return len <= 0 || tp_collective_bcast(c, *s, (size_t)len, root, err);
}

bool tp_collective_share_error(tp_collective *c, int rank, GError *local, GError **err) {
  /* the failing rank's code and message; a foreign domain reads as a failure */
  int64_t code = TP_ERROR_BACKEND;
  char *msg = NULL;
  if (c->rank == rank) {
    if (local && local->domain == TP_ERROR) code = local->code;
    msg = g_strdup(local ? local->message : "failed");
  }
  if (local) g_error_free(local);
  GError *e = NULL;
  if (!tp_collective_bcast(c, &code, sizeof code, rank, &e) ||
      !tp_collective_bcast_string(c, &msg, rank, &e)) {
    g_propagate_error(err, e);
    g_free(msg);
    return false;
  }
  char *prefix = g_strdup_printf("rank %d of %d: ", rank, c->size);
  const char *m = msg ? msg : "failed";
  if (rank == 0 || g_str_has_prefix(m, prefix)) g_set_error_literal(err, TP_ERROR, (gint)code, m);
  else g_set_error(err, TP_ERROR, (gint)code, "%s%s", prefix, m);
  g_free(prefix);
  g_free(msg);
  return false;
}

bool tp_collective_agree(tp_collective *c, bool ok, GError *local, GError **err) {
  if (c->size == 1) {
    if (!ok) g_propagate_error(err, local);
    else if (local) g_error_free(local);
    return ok;
  }
  /* the lowest failing rank speaks: max of (size - rank) over failures */
  int64_t v = ok ? 0 : c->size - c->rank;
  GError *e = NULL;
  if (!tp_collective_max_i64(c, &v, 1, &e)) {
    if (local) g_error_free(local);
    g_propagate_error(err, e);
    return false;
  }
  if (v == 0) {
    if (local) g_error_free(local);
    return true;
  }
  return tp_collective_share_error(c, c->size - (int)v, local, err);
}

/* ---- device sums ---- */

static bool host_bcast(void *self, void *buf, size_t bytes, int root, GError **err) {
  return tp_collective_bcast(self, buf, bytes, root, err);
}

bool tp_collective_use_device(tp_collective *c, tp_backend *be, char **how, char **why,
                              GError **err) {
  *how = NULL;
  *why = NULL;
  const char *plugin = NULL;
  const tp_collective_iface *ci = NULL;
  const char *force = g_getenv("TENSORPLUG_DEVICE_COLLECTIVE");
  if (c->size > 1 && !(force && strcmp(force, "host") == 0))
    ci = tp_registry_find_collective(tp_registry_get_default(), be->name, &plugin);
  /* Every rank must take the same way, or the job waits forever: agree on
   * whether all ranks have the plugin, then on whether all opened it. */
  int64_t have = ci ? 0 : 1;
  if (!tp_collective_max_i64(c, &have, 1, err)) return false;
  if (have == 0) {
    tp_host_comm hc = {.rank = c->rank, .size = c->size, .self = c, .bcast = host_bcast};
    GError *e = NULL;
    tp_dev_comm *d = ci->open(&hc, be->iface, be->dev, &e);
    int64_t failed = d ? 0 : 1;
    if (!tp_collective_max_i64(c, &failed, 1, err)) {
      if (d) ci->close(d);
      g_clear_error(&e);
      return false;
    }
    if (failed == 0) {
      c->dev_iface = ci;
      c->dev = d;
      c->dev_be = be;
      *how = g_strdup(plugin);
      char *n = g_strdup_printf("%s+%s", c->ops->name, plugin);
      g_free(c->name);
      c->name = n;
      return true;
    }
    if (d) ci->close(d);
    *why = g_strdup_printf("the %s collective plugin could not start%s%s; gradients are summed "
                           "through host memory", plugin, e ? ": " : " on another rank",
                           e ? e->message : "");
    g_clear_error(&e);
  }
  *how = g_strdup("host");
  return true;
}

/* Through host memory: each buffer in buckets, download -> sum -> upload. */
static bool sum_staged(tp_collective *c, tp_backend *be, tp_mem m, int64_t n, GError **err) {
  if (!c->stage) c->stage = g_new(float, STAGE_FLOATS);
  for (int64_t done = 0; done < n;) {
    size_t len = (size_t)MIN((int64_t)STAGE_FLOATS, n - done);
    tp_mem at = {m.buf, m.off + (size_t)done * sizeof(float)};
    if (!tp_backend_download(be, c->stage, at, len * sizeof(float), err) ||
        !c->ops->sum_f32(c->self, c->stage, len, err) ||
        !tp_backend_upload(be, at, c->stage, len * sizeof(float), err))
      return false;
    done += (int64_t)len;
  }
  return true;
}

bool tp_collective_sum_device(tp_collective *c, tp_backend *be, const tp_mem *mems,
                              const int64_t *counts, int n, GError **err) {
  if (c->size == 1) return true;
  bool native = c->dev && c->dev_be == be;
  for (int i = 0; i < n; i++) {
    if (counts[i] == 0) continue;
    bool ok = native ? c->dev_iface->sum_f32(c->dev, mems[i], counts[i], err)
                     : sum_staged(c, be, mems[i], counts[i], err);
    if (!ok) return false;
  }
  return true;
}

/* ---- the launcher's environment ---- */

bool tp_collective_launched(int *size) {
  /* Open MPI's mpirun, MPICH's hydra; srun --mpi=pmix (PMIX_RANK marks a
   * task of a step, unlike a batch script's plain SLURM_* variables). */
  const char *v = g_getenv("OMPI_COMM_WORLD_SIZE");
  if (!v) v = g_getenv("PMI_SIZE");
  if (!v && g_getenv("PMIX_RANK")) v = g_getenv("SLURM_STEP_NUM_TASKS");
  *size = v ? MAX(1, atoi(v)) : 1;
  return *size > 1;
}

#ifndef TP_HAVE_MPI
bool tp_collective_mpi_built(void) { return false; }

tp_collective *tp_collective_mpi_new(double watchdog_s, GError **err) {
  (void)watchdog_s;
  g_set_error(err, TP_ERROR, TP_ERROR_UNAVAILABLE, "this tensorplug was built without MPI: "
              "install Open MPI (apt-get install libopenmpi-dev openmpi-bin) and rebuild "
              "(meson setup --reconfigure -Dmpi=enabled BUILD)");
  return NULL;
}
#endif
