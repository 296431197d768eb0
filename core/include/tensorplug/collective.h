/* tensorplug/collective.h — the processes (ranks) of a data-parallel job and
 * what they do together.
 *
 * A tp_collective is one rank's view of the job: its rank, the job's size,
 * and operations every rank calls at the same point of its program (they
 * block until all ranks arrived). Host operations come from a transport —
 * MPI (core/collective_mpi.c, built with -Dmpi) or "single" (one process:
 * each operation leaves the data as it is). Sums over ranks are added in
 * rank order 0, 1, ..., N-1 whatever the timing, so every rank gets the same
 * bits and a run repeats exactly.
 *
 * Device memory (gradients) is summed by a collective plugin serving the
 * backend when one is loaded (NCCL for CUDA: on the device's queue, no host
 * synchronisation), else through host memory: download, host sum, upload. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <glib.h>
#include "tensorplug/backend.h"

G_BEGIN_DECLS

typedef struct tp_collective tp_collective;

/* A transport's host operations; every one is collective (all ranks call it
 * with the same sizes, in the same order) and reports failures in err. */
typedef struct tp_collective_ops {
  const char *name; /* "mpi", "single" */
  bool (*barrier)(void *self, GError **err);
  /* buf's bytes on every rank become root's. */
  bool (*bcast)(void *self, void *buf, size_t bytes, int root, GError **err);
  /* v[i] = the sum over ranks of v[i], added in rank order (f64 sums for
   * f32 data, rounded once). */
  bool (*sum_f32)(void *self, float *v, size_t n, GError **err);
  bool (*sum_f64)(void *self, double *v, size_t n, GError **err);
  /* v[i] = the maximum over ranks. */
  bool (*max_i64)(void *self, int64_t *v, size_t n, GError **err);
  /* Ends every rank of the job now with this exit status; never returns. */
  void (*abort)(void *self, int status);
  void (*close)(void *self);
} tp_collective_ops;

/* A collective over a transport (takes self; ops->close releases it). */
tp_collective *tp_collective_new(const tp_collective_ops *ops, void *self, int rank, int size);
/* One process alone. */
tp_collective *tp_collective_single_new(void);
/* This process's MPI job (MPI_Init, unless the program did it already).
 * watchdog_s > 0: a collective call that waits longer than that for the
 * other ranks ends this rank with exit status 1 and a message (a rank that
 * hangs or lost its network never hangs the job). Fails with
 * TP_ERROR_UNAVAILABLE when tensorplug was built without MPI. */
tp_collective *tp_collective_mpi_new(double watchdog_s, GError **err);
/* Whether this build has MPI (-Dmpi). */
bool tp_collective_mpi_built(void);
/* Whether this process was started by an MPI launcher (mpirun, srun) as one
 * of several; *size gets the job's size (1 otherwise). Reads the
 * launcher's environment only: MPI is not initialised. */
bool tp_collective_launched(int *size);
/* Releases device collectives, then the transport (MPI_Finalize). */
void tp_collective_free(tp_collective *c);

int tp_collective_rank(const tp_collective *c);
int tp_collective_size(const tp_collective *c);
/* "mpi", "single"; with a device collective, "mpi+nccl". */
const char *tp_collective_name(const tp_collective *c);

bool tp_collective_barrier(tp_collective *c, GError **err);
bool tp_collective_bcast(tp_collective *c, void *buf, size_t bytes, int root, GError **err);
bool tp_collective_sum_f32(tp_collective *c, float *v, size_t n, GError **err);
bool tp_collective_sum_f64(tp_collective *c, double *v, size_t n, GError **err);
bool tp_collective_max_i64(tp_collective *c, int64_t *v, size_t n, GError **err);
/* A string from root to every rank: *s (g_free'd and replaced on the others;
 * NULL stays NULL). */
bool tp_collective_bcast_string(tp_collective *c, char **s, int root, GError **err);
G_NORETURN void tp_collective_abort(tp_collective *c, int status);

/* Agreement: every rank passes whether its part succeeded; returns TRUE on
 * every rank when all did. Otherwise FALSE on every rank with the same
 * error: the lowest failing rank's (its code, its message prefixed with
 * "rank R of N: " unless R is 0), so one rank can report it and all exit
 * alike. local (this rank's error when !ok) is consumed. */
bool tp_collective_agree(tp_collective *c, bool ok, GError *local, GError **err);
/* After every rank learned that `rank` failed: its error to every rank as
 * above (collective). Returns FALSE. */
bool tp_collective_share_error(tp_collective *c, int rank, GError *local, GError **err);

/* Sums f32 device memory over the ranks, in place: mems[i] holds counts[i]
 * floats. Through the collective plugin serving be's backend when one is in
 * use (see tp_collective_use_device), else through host memory in buckets
 * (download: a host synchronisation; sum_f32; upload). */
bool tp_collective_sum_device(tp_collective *c, tp_backend *be, const tp_mem *mems,
                              const int64_t *counts, int n, GError **err);
/* Sets up device sums for be (collective): the registry's collective plugin
 * for be's backend when one is loaded and opens, else host staging.
 * $TENSORPLUG_DEVICE_COLLECTIVE=host forces host staging. Returns the way
 * chosen in *how ("nccl", "host") and, when a plugin was found but failed,
 * its reason in *why (g_free it); never fails for a missing plugin. */
bool tp_collective_use_device(tp_collective *c, tp_backend *be, char **how, char **why,
                              GError **err);

G_END_DECLS
