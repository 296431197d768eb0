/* core/collective_mpi.c — the MPI transport of tensorplug/collective.h
 * (built with -Dmpi=enabled|auto when MPI is found).
 *
 * Sums are deterministic: MPI_Allreduce may add in any order its algorithm
 * likes (it changes with sizes, rank counts and tuning), so we do not use it
 * for floats. Instead each rank owns a contiguous 1/N of the vector;
 * MPI_Alltoallv brings every rank's copy of a part to its owner, the owner
 * adds them in rank order 0..N-1 (in f64, rounded once), and
 * MPI_Allgatherv hands the sums to everyone: the bandwidth of a ring
 * reduce-scatter + all-gather, with one fixed order, the same bits on every
 * rank. Integers (flags) use MPI_Allreduce's MAX, which has no order.
 *
 * A watchdog thread ends this rank (exit status 1, a message naming it)
 * when one call waits longer than its limit for the others: a rank that
 * hangs or loses its network would otherwise keep the job waiting forever.
 * A rank that dies is seen by the launcher itself (mpirun ends the job). */
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tensorplug/collective.h"
#include "tensorplug/error.h"

/* Elements per MPI call: counts are ints, and staging stays bounded. */
#define PART_FLOATS ((size_t)1 << 24)
#define BCAST_BYTES ((size_t)1 << 30)

typedef struct mpi_coll {
  MPI_Comm comm;
  int rank, size;
  bool finalize; /* we initialised MPI, so we finalise it */
  char host[256];
  float *recv;   /* PART_FLOATS * size / size + size floats, on first use */
  size_t recv_cap;
  /* watchdog */
  double limit_s;
  GThread *thread;
  GMutex lock;
  GCond cond;
  const char *what; /* the call under way, NULL between calls */
  gint64 since;
  bool quit;
} mpi_coll;

static gpointer watchdog(gpointer p) {
  mpi_coll *m = p;
  g_mutex_lock(&m->lock);
  while (!m->quit) {
    g_cond_wait_until(&m->cond, &m->lock, g_get_monotonic_time() + G_TIME_SPAN_SECOND / 4);
    if (m->what && (double)(g_get_monotonic_time() - m->since) / 1e6 > m->limit_s) {
      fflush(stdout);
      fprintf(stderr, "tensorplug: error: rank %d of %d (%s, pid %d): waited %.0f s for the other "
              "ranks in %s; one of them stopped, hangs or lost its network: ending the job "
              "(--dist-timeout sets this wait)\n", m->rank, m->size, m->host, (int)getpid(),
              m->limit_s, m->what);
      fflush(stderr);
      _exit(1);
    }
  }
  g_mutex_unlock(&m->lock);
  return NULL;
}

static void watch_enter(mpi_coll *m, const char *what) {
  if (!m->thread) return;
  g_mutex_lock(&m->lock);
  m->what = what;
  m->since = g_get_monotonic_time();
  g_mutex_unlock(&m->lock);
}

static void watch_leave(mpi_coll *m) {
  if (!m->thread) return;
  g_mutex_lock(&m->lock);
  m->what = NULL;
  g_mutex_unlock(&m->lock);
}

static bool mpi_check(mpi_coll *m, int rc, const char *call, GError **err) {
  if (rc == MPI_SUCCESS) return true;
  char msg[MPI_MAX_ERROR_STRING + 1] = {0};
  int len = 0;
  if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) g_strlcpy(msg, "unknown error", sizeof msg);
  g_set_error(err, TP_ERROR, TP_ERROR_BACKEND, "rank %d of %d (%s): %s failed: %s", m->rank,
              m->size, m->host, call, msg);
  return false;
}

static bool mpi_barrier(void *self, GError **err) {
  mpi_coll *m = self;
  watch_enter(m, "a barrier");
  int rc = MPI_Barrier(m->comm);
  watch_leave(m);
  return mpi_check(m, rc, "MPI_Barrier", err);
}

static bool mpi_bcast(void *self, void *buf, size_t bytes, int root, GError **err) {
  mpi_coll *m = self;
  for (size_t done = 0; done < bytes;) {
    size_t len = MIN(BCAST_BYTES, bytes - done);
    watch_enter(m, "a broadcast");
    int rc = MPI_Bcast((char *)buf + done, (int)len, MPI_BYTE, root, m->comm);
    watch_leave(m);
    if (!mpi_check(m, rc, "MPI_Bcast", err)) return false;
    done += len;
  }
  return true;
}

/* One part of at most PART_FLOATS: owners sum in rank order (see the top). */
static bool sum_part(mpi_coll *m, float *v, int n, GError **err) {
  int w = m->size;
  int *cnt = g_new(int, w), *dis = g_new(int, w), *rcnt = g_new(int, w), *rdis = g_new(int, w);
  for (int r = 0; r < w; r++) {
    int a = (int)((int64_t)n * r / w), b = (int)((int64_t)n * (r + 1) / w);
    dis[r] = a;
    cnt[r] = b - a;
  }
  int mine = cnt[m->rank];
  for (int r = 0; r < w; r++) {
    rcnt[r] = mine;
    rdis[r] = r * mine;
  }
  size_t need = (size_t)mine * (size_t)w + 1;
  if (need > m->recv_cap) {
    g_free(m->recv);
    m->recv = g_new(float, need);
    m->recv_cap = need;
  }
  watch_enter(m, "the gradient sum (MPI_Alltoallv)");
  int rc = MPI_Alltoallv(v, cnt, dis, MPI_FLOAT, m->recv, rcnt, rdis, MPI_FLOAT, m->comm);
  watch_leave(m);
  bool ok = mpi_check(m, rc, "MPI_Alltoallv", err);
  if (ok) {
    float *out = v + dis[m->rank];
    for (int i = 0; i < mine; i++) {
      double s = 0.0;
      for (int r = 0; r < w; r++) s += (double)m->recv[(size_t)r * (size_t)mine + (size_t)i];
      out[i] = (float)s;
    }
    watch_enter(m, "the gradient sum (MPI_Allgatherv)");
    rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, v, cnt, dis, MPI_FLOAT, m->comm);
    watch_leave(m);
    ok = mpi_check(m, rc, "MPI_Allgatherv", err);
  }
  g_free(cnt);
  g_free(dis);
  g_free(rcnt);
  g_free(rdis);
  return ok;
}

static bool mpi_sum_f32(void *self, float *v, size_t n, GError **err) {
  mpi_coll *m = self;
  for (size_t done = 0; done < n;) {
    size_t len = MIN(PART_FLOATS, n - done);
    if (!sum_part(m, v + done, (int)len, err)) return false;
    done += len;
  }
  return true;
}

/* Small vectors (metrics): every rank gets all, and adds them in rank order. */
static bool mpi_sum_f64(void *self, double *v, size_t n, GError **err) {
  mpi_coll *m = self;
  if (n == 0) return true;
  if (n > (size_t)INT_MAX / (size_t)m->size) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "sum of %zu doubles over %d ranks is "
                "too large for one call", n, m->size);
    return false;
  }
  double *all = g_new(double, n * (size_t)m->size);
  watch_enter(m, "a sum of metrics (MPI_Allgather)");
  int rc = MPI_Allgather(v, (int)n, MPI_DOUBLE, all, (int)n, MPI_DOUBLE, m->comm);
  watch_leave(m);
  bool ok = mpi_check(m, rc, "MPI_Allgather", err);
  for (size_t i = 0; ok && i < n; i++) {
    double s = 0.0;
    for (int r = 0; r < m->size; r++) s += all[(size_t)r * n + i];
    v[i] = s;
  }
  g_free(all);
  return ok;
}

static bool mpi_max_i64(void *self, int64_t *v, size_t n, GError **err) {
  mpi_coll *m = self;
  watch_enter(m, "an agreement between ranks (MPI_Allreduce)");
  int rc = MPI_Allreduce(MPI_IN_PLACE, v, (int)n, MPI_INT64_T, MPI_MAX, m->comm);
  watch_leave(m);
  return mpi_check(m, rc, "MPI_Allreduce", err);
}

static void mpi_abort(void *self, int status) {
  mpi_coll *m = self;
  fflush(stdout);
  fflush(stderr);
  MPI_Abort(m->comm, status);
  _Exit(status);
}

static void mpi_close(void *self) {
  mpi_coll *m = self;
  if (m->thread) {
    g_mutex_lock(&m->lock);
    m->quit = true;
    g_cond_signal(&m->cond);
    g_mutex_unlock(&m->lock);
    g_thread_join(m->thread);
  }
  g_mutex_clear(&m->lock);
  g_cond_clear(&m->cond);
  MPI_Comm_free(&m->comm);
  if (m->finalize) MPI_Finalize();
  g_free(m->recv);
  g_free(m);
}

static const tp_collective_ops mpi_ops = {
    .name = "mpi", .barrier = mpi_barrier, .bcast = mpi_bcast, .sum_f32 = mpi_sum_f32,
    .sum_f64 = mpi_sum_f64, .max_i64 = mpi_max_i64, .abort = mpi_abort, .close = mpi_close};

bool tp_collective_mpi_built(void) { return true; }

tp_collective *tp_collective_mpi_new(double watchdog_s, GError **err) {
  mpi_coll *m = g_new0(mpi_coll, 1);
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited) {
    int provided = 0;
    /* MPI is called from the main thread only (the watchdog never calls it) */
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
      g_set_error(err, TP_ERROR, TP_ERROR_UNAVAILABLE, "MPI_Init failed: start tensorplug with "
                  "mpirun -np N (or srun --mpi=pmix)");
      g_free(m);
      return NULL;
    }
    m->finalize = true;
  }
  MPI_Comm_dup(MPI_COMM_WORLD, &m->comm);
  /* failures come back as return codes (then GErrors), not as aborts */
  MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(m->comm, &m->rank);
  MPI_Comm_size(m->comm, &m->size);
  if (gethostname(m->host, sizeof m->host - 1) != 0) g_strlcpy(m->host, "?", sizeof m->host);
  g_mutex_init(&m->lock);
  g_cond_init(&m->cond);
  m->limit_s = watchdog_s;
  if (watchdog_s > 0) m->thread = g_thread_new("tp-watchdog", watchdog, m);
  return tp_collective_new(&mpi_ops, m, m->rank, m->size);
}
