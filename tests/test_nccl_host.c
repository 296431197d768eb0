/* tests/test_nccl_host.c — the NCCL collective plugin's host-side logic
 * (plugins/nccl/nccl_comm.c) against a fake NCCL, without a GPU: two ranks
 * in two threads with a shared-memory "MPI" broadcast.
 *  - rank 0 makes the unique id, every rank joins with it, its rank, the
 *    job's size, on the device the backend's native handles name;
 *  - a sum is one in-place ncclAllReduce of f32 (sum) at the buffer's
 *    address + offset on the backend's queue, and the fake adds the ranks;
 *  - failures name the rank and NCCL's message: a failed id on rank 0
 *    reaches every rank, init and async errors, a backend without native
 *    handles or of another API, a missing library.
 * The real plugin: it loads (NCCL is opened only when a run needs it). */
#include <pthread.h>

#include "../plugins/nccl/nccl_comm.h"
#include "tensorplug/registry.h"
#include "tp_test.h"

#define RANKS 2

/* ---- a fake backend: host memory, native handles of a "cuda" device ---- */

struct tp_buffer {
  float *p;
};
struct tp_backend_dev {
  const char *api;
  int device;
};

static bool fake_native(tp_backend_dev *d, tp_mem m, tp_native_mem *out) {
  out->api = d->api;
  out->device = d->device;
  out->queue = (void *)(uintptr_t)(0x5000 + d->device); /* a recognisable stream */
  out->ptr = m.buf ? (char *)m.buf->p + m.off : NULL;
  return true;
}

static tp_backend_iface fake_backend(bool with_native) {
  tp_backend_iface b;
  memset(&b, 0, sizeof b);
  b.struct_size = with_native ? sizeof b : offsetof(tp_backend_iface, native);
  b.native = with_native ? fake_native : NULL;
  return b;
}

/* ---- a fake NCCL: records calls, adds the ranks' buffers ---- */

static struct {
  GMutex lock;
  GCond cond;
  int set_device[RANKS];
  ncclUniqueId seen_id[RANKS];
  int seen_rank[RANKS], seen_size[RANKS], ids_made;
  /* all-reduce rendezvous */
  float *bufs[RANKS];
  size_t count[RANKS];
  void *stream[RANKS];
  ncclDataType_t type[RANKS];
  ncclRedOp_t op[RANKS];
  bool in_place[RANKS];
  int arrived, generation;
  ncclResult_t id_result, init_result, async_result;
  int destroyed;
} fk;

static __thread int t_rank; /* which fake rank this thread is */

static ncclResult_t f_version(int *v) {
  *v = 22809;
  return ncclSuccess;
}
static ncclResult_t f_unique_id(ncclUniqueId *id) {
  if (fk.id_result != ncclSuccess) return fk.id_result;
  for (int i = 0; i < (int)sizeof id->internal; i++) id->internal[i] = (char)(i * 7 + 3);
  fk.ids_made++;
  return ncclSuccess;
}
static ncclResult_t f_init(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
  fk.seen_id[t_rank] = id;
  fk.seen_rank[t_rank] = rank;
  fk.seen_size[t_rank] = nranks;
  *comm = (ncclComm_t)(uintptr_t)(0x100 + rank);
  return fk.init_result;
}
static ncclResult_t f_all_reduce(const void *send, void *recv, size_t count, ncclDataType_t type,
                                 ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  int r = (int)((uintptr_t)comm - 0x100);
  g_mutex_lock(&fk.lock);
  fk.bufs[r] = recv;
  fk.count[r] = count;
  fk.stream[r] = (void *)stream;
  fk.type[r] = type;
  fk.op[r] = op;
  fk.in_place[r] = send == recv;
  int gen = fk.generation;
  if (++fk.arrived == RANKS) { /* the last one adds, in rank order */
    for (size_t i = 0; i < count; i++) {
      float s = 0;
      for (int k = 0; k < RANKS; k++) s += fk.bufs[k][i];
      for (int k = 0; k < RANKS; k++) fk.bufs[k][i] = s;
    }
    fk.arrived = 0;
    fk.generation++;
    g_cond_broadcast(&fk.cond);
  } else {
    while (gen == fk.generation) g_cond_wait(&fk.cond, &fk.lock);
  }
  g_mutex_unlock(&fk.lock);
  return ncclSuccess;
}
static ncclResult_t f_async(ncclComm_t comm, ncclResult_t *async) {
  (void)comm;
  *async = fk.async_result;
  return ncclSuccess;
}
static ncclResult_t f_destroy(ncclComm_t comm) {
  (void)comm;
  g_mutex_lock(&fk.lock);
  fk.destroyed++;
  g_mutex_unlock(&fk.lock);
  return ncclSuccess;
}
static const char *f_error_string(ncclResult_t r) {
  return r == ncclSystemError ? "unhandled system error" : "remote process exited or there was a network error";
}
static int f_set_device(int device) {
  fk.set_device[t_rank] = device;
  return 0;
}

static const tp_nccl_api fake_api = {
    .get_version = f_version, .get_unique_id = f_unique_id, .comm_init_rank = f_init,
    .all_reduce = f_all_reduce, .comm_get_async_error = f_async, .comm_destroy = f_destroy,
    .comm_abort = f_destroy, .get_error_string = f_error_string, .set_device = f_set_device};

/* ---- a fake MPI: broadcast through shared memory ---- */

static struct {
  GMutex lock;
  GCond cond;
  char buf[256];
  int arrived, generation;
} bc;

static bool fake_bcast(void *self, void *buf, size_t bytes, int root, GError **err) {
  (void)self, (void)err;
  g_mutex_lock(&bc.lock);
  if (t_rank == root) memcpy(bc.buf, buf, bytes);
  int gen = bc.generation;
  if (++bc.arrived == RANKS) {
    bc.arrived = 0;
    bc.generation++;
    g_cond_broadcast(&bc.cond);
  } else {
    while (gen == bc.generation) g_cond_wait(&bc.cond, &bc.lock);
  }
  g_mutex_unlock(&bc.lock);
  if (t_rank != root) memcpy(buf, bc.buf, bytes);
  return true;
}

/* ---- one rank's work ---- */

typedef struct rank_job {
  int rank;
  const tp_backend_iface *be;
  tp_backend_dev dev;
  bool sum; /* also sum a buffer */
  float data[8];
  bool opened, summed;
  GError *err;
} rank_job;

static void *rank_main(void *p) {
  rank_job *j = p;
  t_rank = j->rank;
  tp_host_comm host = {.rank = j->rank, .size = RANKS, .self = NULL, .bcast = fake_bcast};
  tp_dev_comm *c = tp_nccl_comm_open(&fake_api, &host, j->be, &j->dev, &j->err);
  j->opened = c != NULL;
  if (c && j->sum) {
    struct tp_buffer b = {j->data};
    /* elements 2..6 of the buffer: offset 8 bytes */
    j->summed = tp_nccl_comm_sum_f32(c, (tp_mem){&b, 2 * sizeof(float)}, 5, &j->err);
  }
  tp_nccl_comm_close(c);
  return NULL;
}

static void run_ranks(rank_job *jobs, const tp_backend_iface *be, bool sum) {
  pthread_t th[RANKS];
  for (int r = 0; r < RANKS; r++) {
    jobs[r].rank = r;
    jobs[r].be = be;
    jobs[r].dev = (tp_backend_dev){.api = jobs[r].dev.api ? jobs[r].dev.api : "cuda", .device = r + 1};
    jobs[r].sum = sum;
    for (int i = 0; i < 8; i++) jobs[r].data[i] = (float)(10 * r + i);
    pthread_create(&th[r], NULL, rank_main, &jobs[r]);
  }
  for (int r = 0; r < RANKS; r++) pthread_join(th[r], NULL);
}

static void reset(void) {
  fk.id_result = fk.init_result = fk.async_result = ncclSuccess;
  fk.ids_made = fk.destroyed = 0;
  memset(fk.set_device, -1, sizeof fk.set_device);
}

TP_TEST(NcclHost, RanksJoinWithRankZerosIdAndSumInPlace) {
  reset();
  tp_backend_iface be = fake_backend(true);
  rank_job jobs[RANKS];
  memset(jobs, 0, sizeof jobs);
  run_ranks(jobs, &be, true);
  TP_CHECK_INT_EQ(fk.ids_made, 1); /* only rank 0 makes one */
  for (int r = 0; r < RANKS; r++) {
    if (jobs[r].err) TP_FAILF("rank %d: %s", r, jobs[r].err->message);
    TP_CHECK(jobs[r].opened && jobs[r].summed);
    TP_CHECK_INT_EQ(fk.set_device[r], r + 1);
    TP_CHECK_INT_EQ(fk.seen_rank[r], r);
    TP_CHECK_INT_EQ(fk.seen_size[r], RANKS);
    TP_CHECK(memcmp(&fk.seen_id[r], &fk.seen_id[0], sizeof(ncclUniqueId)) == 0);
    TP_CHECK_INT_EQ(fk.seen_id[r].internal[5], 5 * 7 + 3);
    TP_CHECK_INT_EQ(fk.count[r], 5);
    TP_CHECK(fk.type[r] == ncclFloat && fk.op[r] == ncclSum && fk.in_place[r]);
    TP_CHECK(fk.stream[r] == (void *)(uintptr_t)(0x5000 + r + 1));
    /* elements 2..6 hold the sum of both ranks, the others their own */
    for (int i = 0; i < 8; i++) {
      float want = i >= 2 && i < 7 ? (float)(i + (10 + i)) : (float)(10 * r + i);
      if (jobs[r].data[i] != want) TP_FAILF("rank %d element %d: %g, want %g", r, i, jobs[r].data[i], want);
    }
    g_clear_error(&jobs[r].err);
  }
  TP_CHECK_INT_EQ(fk.destroyed, RANKS);
}

TP_TEST(NcclHost, RankZerosFailedIdReachesEveryRank) {
  reset();
  fk.id_result = ncclSystemError;
  tp_backend_iface be = fake_backend(true);
  rank_job jobs[RANKS];
  memset(jobs, 0, sizeof jobs);
  run_ranks(jobs, &be, false);
  for (int r = 0; r < RANKS; r++) {
    TP_CHECK(!jobs[r].opened);
    const char *m = jobs[r].err ? jobs[r].err->message : "";
    char *who = g_strdup_printf("rank %d of 2", r);
    if (!strstr(m, who) || !strstr(m, "ncclGetUniqueId on rank 0") ||
        !strstr(m, "unhandled system error"))
      TP_FAILF("rank %d: \"%s\"", r, m);
    g_free(who);
    g_clear_error(&jobs[r].err);
  }
}

TP_TEST(NcclHost, InitAndAsyncErrorsAreMessages) {
  reset();
  fk.init_result = ncclSystemError;
  tp_backend_iface be = fake_backend(true);
  rank_job jobs[RANKS];
  memset(jobs, 0, sizeof jobs);
  run_ranks(jobs, &be, false);
  for (int r = 0; r < RANKS; r++) {
    TP_CHECK(!jobs[r].opened && jobs[r].err && strstr(jobs[r].err->message, "ncclCommInitRank"));
    g_clear_error(&jobs[r].err);
  }
  reset();
  fk.async_result = ncclRemoteError;
  memset(jobs, 0, sizeof jobs);
  run_ranks(jobs, &be, true);
  for (int r = 0; r < RANKS; r++) {
    TP_CHECK(jobs[r].opened && !jobs[r].summed);
    TP_CHECK(jobs[r].err && strstr(jobs[r].err->message, "an earlier NCCL operation") &&
             strstr(jobs[r].err->message, "network error"));
    g_clear_error(&jobs[r].err);
  }
}

TP_TEST(NcclHost, OnlyCudaMemoryWithNativeHandles) {
  reset();
  tp_host_comm host = {.rank = 0, .size = 1, .bcast = fake_bcast};
  tp_backend_iface old = fake_backend(false);
  tp_backend_dev dev = {.api = "cuda", .device = 0};
  GError *err = NULL;
  TP_CHECK(tp_nccl_comm_open(&fake_api, &host, &old, &dev, &err) == NULL);
  TP_CHECK(err && strstr(err->message, "native"));
  g_clear_error(&err);
  tp_backend_iface be = fake_backend(true);
  tp_backend_dev vk = {.api = "vulkan", .device = 0};
  TP_CHECK(tp_nccl_comm_open(&fake_api, &host, &be, &vk, &err) == NULL);
  TP_CHECK(err && strstr(err->message, "not vulkan memory"));
  g_clear_error(&err);
  TP_CHECK_INT_EQ(fk.ids_made, 0); /* refused before any NCCL call */
}

TP_TEST(NcclHost, AMissingLibrarySaysHowToGetIt) {
  g_setenv("TENSORPLUG_NCCL_LIBRARY", "/nonexistent/libnccl.so.2", TRUE);
  tp_nccl_api api;
  GError *err = NULL;
  TP_CHECK(!tp_nccl_api_load(&api, &err));
  g_unsetenv("TENSORPLUG_NCCL_LIBRARY");
  TP_CHECK(err && strstr(err->message, "/nonexistent/libnccl.so.2") &&
           strstr(err->message, "TENSORPLUG_NCCL_LIBRARY"));
  g_clear_error(&err);
  /* where NCCL is installed, every entry point resolves */
  if (tp_nccl_api_load(&api, &err)) {
    TP_CHECK(api.all_reduce && api.comm_init_rank && api.get_unique_id && api.comm_destroy);
    int v = 0;
    TP_CHECK(api.get_version(&v) == ncclSuccess && v >= 20400);
    g_test_message("NCCL %d found at run time", v);
    tp_nccl_api_unload(&api);
  } else {
    g_test_message("no NCCL at run time: %s", err->message);
    g_clear_error(&err);
  }
}

TP_TEST(NcclHost, ThePluginLoads) {
  const char *name = NULL;
  const tp_collective_iface *c =
      tp_registry_find_collective(tp_registry_get_default(), "cuda", &name);
  TP_ASSERT(c != NULL);
  TP_CHECK_STR_EQ(name, "nccl");
  TP_CHECK_STR_EQ(c->backend, "cuda");
  /* its open refuses a backend without native handles before touching NCCL */
  tp_backend_iface old = fake_backend(false);
  tp_backend_dev dev = {.api = "cuda", .device = 0};
  tp_host_comm host = {.rank = 0, .size = 1, .bcast = fake_bcast};
  GError *err = NULL;
  tp_dev_comm *d = c->open(&host, &old, &dev, &err);
  TP_CHECK(d == NULL && err != NULL);
  g_test_message("without native handles: %s", err ? err->message : "?");
  g_clear_error(&err);
}
