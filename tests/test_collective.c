/* tests/test_collective.c — the MPI transport of tensorplug/collective.h,
 * run by meson under `mpirun -np 3` (an odd count: parts of uneven size):
 *  - sums come out in rank order, bit for bit the sequential f64 sum of
 *    every rank's values, on every rank, also for lengths that do not divide;
 *  - broadcasts, maxima, strings;
 *  - agreement: one rank's failure reaches all with its code and message;
 *  - device sums through host staging (CPU backend), across buckets. */
#include <math.h>
#include <stdlib.h>

#include "tensorplug/collective.h"
#include "tensorplug/error.h"
#include "tp_test.h"

static tp_collective *g_coll;

static void finish(void) { tp_collective_free(g_coll); }

static tp_collective *coll(void) {
  if (!g_coll) {
    GError *err = NULL;
    g_coll = tp_collective_mpi_new(120, &err);
    if (!g_coll) {
      TP_FAILF("MPI: %s", err->message);
      g_clear_error(&err);
      return NULL;
    }
    atexit(finish);
  }
  return g_coll;
}

/* Rank r's value i: varied magnitudes so that the order of the sum shows. */
static float value_of(int r, size_t i) {
  uint32_t h = (uint32_t)(i * 2654435761u) ^ (uint32_t)(r * 40503u + 17u);
  h ^= h >> 13;
  h *= 0x5bd1e995u;
  h ^= h >> 15;
  float mag = (float)pow(10.0, (double)((h >> 8) % 9) - 4.0);
  return ((float)(h & 0xff) / 255.0f - 0.5f) * mag;
}

static float expected_sum(int ranks, size_t i) {
  double s = 0.0;
  for (int r = 0; r < ranks; r++) s += (double)value_of(r, i);
  return (float)s;
}

static void check_sum_f32(size_t n) {
  tp_collective *c = coll();
  if (!c) return;
  int rank = tp_collective_rank(c), w = tp_collective_size(c);
  float *v = g_new(float, n + 1);
  for (size_t i = 0; i < n; i++) v[i] = value_of(rank, i);
  GError *err = NULL;
  TP_ASSERT_NO_ERROR(err);
  if (!tp_collective_sum_f32(c, v, n, &err)) {
    TP_FAILF("sum_f32: %s", err->message);
    g_clear_error(&err);
  }
  size_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    float e = expected_sum(w, i);
    if (memcmp(&e, &v[i], sizeof e) != 0 && bad++ < 3)
      TP_FAILF("element %zu: %.9g, expected %.9g (rank order)", i, v[i], e);
  }
  TP_CHECK_INT_EQ(bad, 0);
  g_free(v);
}

TP_TEST(CollectiveMpi, RunsAsSeveralRanks) {
  tp_collective *c = coll();
  if (!c) return;
  int launched = 0;
  TP_CHECK(tp_collective_launched(&launched) == (tp_collective_size(c) > 1));
  TP_CHECK_INT_EQ(launched, tp_collective_size(c));
  TP_CHECK_STR_EQ(tp_collective_name(c), "mpi");
  TP_CHECK(tp_collective_mpi_built());
  g_test_message("rank %d of %d", tp_collective_rank(c), tp_collective_size(c));
}

TP_TEST(CollectiveMpi, SumIsInRankOrderBitForBit) {
  check_sum_f32(1);
  check_sum_f32(2);      /* fewer elements than ranks: empty parts */
  check_sum_f32(1000003); /* a prime: parts of unequal size */
}

TP_TEST(CollectiveMpi, BroadcastMaximumAndStrings) {
  tp_collective *c = coll();
  if (!c) return;
  int rank = tp_collective_rank(c), w = tp_collective_size(c);
  GError *err = NULL;
  int64_t buf[5];
  for (int i = 0; i < 5; i++) buf[i] = rank == w - 1 ? 100 + i : -1;
  TP_CHECK(tp_collective_bcast(c, buf, sizeof buf, w - 1, &err));
  for (int i = 0; i < 5; i++) TP_CHECK_INT_EQ(buf[i], 100 + i);
  int64_t mx[2] = {rank, -rank};
  TP_CHECK(tp_collective_max_i64(c, mx, 2, &err));
  TP_CHECK_INT_EQ(mx[0], w - 1);
  TP_CHECK_INT_EQ(mx[1], 0);
  double d[2] = {0.1 * (rank + 1), 1e300};
  TP_CHECK(tp_collective_sum_f64(c, d, 1, &err));
  double e = 0;
  for (int r = 0; r < w; r++) e += 0.1 * (r + 1);
  TP_CHECK(d[0] == e);
  TP_CHECK(d[1] == 1e300); /* n = 1: the second is untouched */
  char *s = rank == 0 ? g_strdup("from rank 0: ünïcode") : g_strdup("stale");
  TP_CHECK(tp_collective_bcast_string(c, &s, 0, &err));
  TP_CHECK_STR_EQ(s, "from rank 0: ünïcode");
  g_free(s);
  s = rank == 0 ? NULL : g_strdup("stale");
  TP_CHECK(tp_collective_bcast_string(c, &s, 0, &err));
  TP_CHECK(s == NULL);
  TP_CHECK(tp_collective_barrier(c, &err));
  TP_ASSERT_NO_ERROR(err);
}

TP_TEST(CollectiveMpi, AgreementCarriesTheFailingRanksError) {
  tp_collective *c = coll();
  if (!c) return;
  int rank = tp_collective_rank(c), w = tp_collective_size(c);
  GError *err = NULL;
  TP_CHECK(tp_collective_agree(c, true, NULL, &err));
  TP_ASSERT_NO_ERROR(err);
  if (w < 2) return;
  /* ranks 1.. fail, each its own way: rank 1's error reaches everyone */
  bool fail = rank >= 1;
  GError *mine = fail ? g_error_new(TP_ERROR, rank == 1 ? TP_ERROR_IO : TP_ERROR_FORMAT,
                                    "disk of rank %d is full", rank)
                      : NULL;
  TP_CHECK(!tp_collective_agree(c, !fail, mine, &err));
  TP_CHECK(err && err->domain == TP_ERROR && err->code == TP_ERROR_IO);
  char *want = g_strdup_printf("rank 1 of %d: disk of rank 1 is full", w);
  TP_CHECK_STR_EQ(err ? err->message : NULL, want);
  g_free(want);
  g_clear_error(&err);
  /* rank 0's own error comes without a prefix */
  mine = rank == 0 ? g_error_new(TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "--batch 0") : NULL;
  TP_CHECK(!tp_collective_agree(c, rank != 0, mine, &err));
  TP_CHECK(err && err->code == TP_ERROR_INVALID_ARGUMENT);
  TP_CHECK_STR_EQ(err ? err->message : NULL, "--batch 0");
  g_clear_error(&err);
}

TP_TEST(CollectiveMpi, DeviceSumsThroughHostMemory) {
  tp_collective *c = coll();
  if (!c) return;
  GError *err = NULL;
  tp_backend *be = tp_backend_open(NULL, "cpu", -1, 1, &err);
  if (!be) {
    TP_FAILF("cpu: %s", err->message);
    g_clear_error(&err);
    return;
  }
  char *how = NULL, *why = NULL;
  TP_CHECK(tp_collective_use_device(c, be, &how, &why, &err));
  TP_CHECK_STR_EQ(how, "host"); /* no collective plugin serves the CPU */
  TP_CHECK(why == NULL);
  g_free(how);
  int rank = tp_collective_rank(c), w = tp_collective_size(c);
  /* two regions of one buffer: one over a 16 MiB staging bucket, one small */
  const size_t n0 = ((size_t)1 << 22) + 77, n1 = 5, off1 = n0 + 3;
  size_t total = off1 + n1;
  tp_buffer *buf = tp_backend_alloc(be, total * sizeof(float), &err);
  float *h = g_new(float, total);
  for (size_t i = 0; i < total; i++) h[i] = value_of(rank, i);
  TP_CHECK(tp_backend_upload(be, (tp_mem){buf, 0}, h, total * sizeof(float), &err));
  tp_mem mems[2] = {{buf, 0}, {buf, off1 * sizeof(float)}};
  int64_t counts[2] = {(int64_t)n0, (int64_t)n1};
  TP_CHECK(tp_collective_sum_device(c, be, mems, counts, 2, &err));
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK(tp_backend_download(be, h, (tp_mem){buf, 0}, total * sizeof(float), &err));
  size_t bad = 0;
  for (size_t i = 0; i < total; i++) {
    bool summed = i < n0 || i >= off1;
    float e = summed ? expected_sum(w, i) : value_of(rank, i);
    if (memcmp(&e, &h[i], sizeof e) != 0) bad++;
  }
  TP_CHECK_INT_EQ(bad, 0);
  g_free(h);
  tp_backend_free(be, buf);
  tp_backend_close(be);
}
