/* benchmarks/bench_cpu_kernels.c — micro-benchmark of the CPU backend plugin:
 * GEMM GFLOP/s (a projection-shaped sgemm and attention-shaped batched
 * sgemm, both of the plugin's batched strategies) and the throughput of the
 * hot elementwise/row kernels.
 *
 * Not wired into meson yet; build by hand against the OpenMP OpenBLAS:
 *   B=/usr/lib/x86_64-linux-gnu/openblas-openmp
 *   gcc -O2 -std=c11 -D_GNU_SOURCE -Icore/include -Iplugins/include \
 *     -I/usr/include/x86_64-linux-gnu/openblas-openmp \
 *     benchmarks/bench_cpu_kernels.c -o bench_cpu_kernels \
 *     $(pkg-config --cflags --libs glib-2.0) -L$B -Wl,-rpath,$B -lopenblas -fopenmp -ldl -lm
 *   ./bench_cpu_kernels build/plugins/cpu/libtp_backend_cpu.so [threads]
 */
#include <dlfcn.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>
#include <glib.h>

#include "tensorplug/backend_iface.h"
#include "tensorplug/plugin.h"

static const tp_backend_iface *B;
static tp_backend_dev *D;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static tp_mem buf(size_t n_floats) {
  GError *err = NULL;
  tp_buffer *b = B->buffer_alloc(D, n_floats * sizeof(float), &err);
  if (!b) {
    fprintf(stderr, "%s\n", err->message);
    exit(1);
  }
  float *p = B->buffer_host_ptr(b);
  for (size_t i = 0; i < n_floats; i++) p[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
  return (tp_mem){b, 0};
}

static float *host(tp_mem m) { return B->buffer_host_ptr(m.buf); }

/* Best of reps wall-clock seconds of fn. */
#define BEST(reps, secs, body)                                                                     \
  do {                                                                                             \
    secs = 1e30;                                                                                   \
    for (int r_ = 0; r_ < (reps); r_++) {                                                          \
      double t0_ = now();                                                                          \
      body;                                                                                        \
      B->synchronize(D, NULL);                                                                     \
      double t_ = now() - t0_;                                                                     \
      if (t_ < secs) secs = t_;                                                                    \
    }                                                                                              \
  } while (0)

static void bench_gemm(int m, int n, int k, bool tb) {
  tp_mem a = buf((size_t)m * k), b = buf((size_t)k * n), c = buf((size_t)m * n);
  double s;
  B->k.gemm(D, false, tb, m, n, k, 1.0f, a, k, 0, b, tb ? k : n, 0, 0.0f, c, n, 0, 1, TP_F32);
  BEST(5, s,
       B->k.gemm(D, false, tb, m, n, k, 1.0f, a, k, 0, b, tb ? k : n, 0, 0.0f, c, n, 0, 1, TP_F32));
  printf("sgemm %5d x %4d x %4d%s: %7.2f ms  %6.1f GFLOP/s\n", m, n, k, tb ? " (B^T)" : "      ",
         s * 1e3, 2.0 * m * n * k / s * 1e-9);
}

static void batch_parallel(int batch, int m, int n, int k, CBLAS_TRANSPOSE opb, const float *ha,
                           const float *hb, int ldb, float *hc, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int i = 0; i < batch; i++)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, opb, m, n, k, 1.0f, ha + (size_t)i * m * k, k,
                hb + (size_t)i * k * n, ldb, 0.0f, hc + (size_t)i * m * n, n);
}

/* batch products of m x n x k: the plugin's choice, then each strategy forced */
static void bench_batched(int batch, int m, int n, int k, bool tb, int threads) {
  tp_mem a = buf((size_t)batch * m * k), b = buf((size_t)batch * k * n),
         c = buf((size_t)batch * m * n);
  int ldb = tb ? k : n;
  double flops = 2.0 * batch * m * n * k, s;
  BEST(3, s,
       B->k.gemm(D, false, tb, m, n, k, 1.0f, a, k, (int64_t)m * k, b, ldb, (int64_t)k * n, 0.0f, c,
                 n, (int64_t)m * n, batch, TP_F32));
  printf("batched %4d x (%d x %d x %d)%s plugin:          %7.2f ms  %6.1f GFLOP/s\n", batch, m, n,
         k, tb ? " B^T" : "    ", s * 1e3, flops / s * 1e-9);
  float *ha = host(a), *hb = host(b), *hc = host(c);
  CBLAS_TRANSPOSE opb = tb ? CblasTrans : CblasNoTrans;
  openblas_set_num_threads(threads);
  BEST(3, s,
       for (int i = 0; i < batch; i++)
           cblas_sgemm(CblasRowMajor, CblasNoTrans, opb, m, n, k, 1.0f, ha + (size_t)i * m * k, k,
                       hb + (size_t)i * k * n, ldb, 0.0f, hc + (size_t)i * m * n, n));
  printf("batched %4d x (%d x %d x %d)%s BLAS threads:    %7.2f ms  %6.1f GFLOP/s\n", batch, m, n,
         k, tb ? " B^T" : "    ", s * 1e3, flops / s * 1e-9);
  BEST(3, s, batch_parallel(batch, m, n, k, opb, ha, hb, ldb, hc, threads));
  printf("batched %4d x (%d x %d x %d)%s batch-parallel:  %7.2f ms  %6.1f GFLOP/s\n", batch, m, n,
         k, tb ? " B^T" : "    ", s * 1e3, flops / s * 1e-9);
}

static void report(const char *what, double s, double bytes, double n) {
  printf("%-34s %7.2f ms  %6.2f GB/s  %7.1f Melem/s\n", what, s * 1e3, bytes / s * 1e-9,
         n / s * 1e-6);
}

int main(int argc, char **argv) {
  const char *path = argc > 1 ? argv[1] : "build/plugins/cpu/libtp_backend_cpu.so";
  int threads = argc > 2 ? atoi(argv[2]) : 0;
  void *h = dlopen(path, RTLD_NOW);
  if (!h) {
    fprintf(stderr, "%s\n", dlerror());
    return 1;
  }
  const tp_plugin *p = ((tp_plugin_entry_fn)dlsym(h, TP_PLUGIN_ENTRY_SYMBOL))();
  B = p->iface;
  tp_device_info info;
  B->probe(&info, 1, NULL);
  GError *err = NULL;
  D = B->open(0, threads, &err);
  if (!D) {
    fprintf(stderr, "%s\n", err->message);
    return 1;
  }
  if (threads <= 0) threads = omp_get_max_threads();
  printf("%s: %s; %d threads\n\n", info.name, info.description, threads);

  bench_gemm(8192, 512, 128, false);
  bench_gemm(8192, 768, 768, false);
  bench_gemm(8192, 768, 768, true);
  bench_gemm(4096, 3072, 768, true);
  printf("\n");
  /* attention of 8 x 12 heads x 256 tokens x 64: scores then context */
  bench_batched(96, 256, 256, 64, true, threads);
  bench_batched(96, 256, 64, 256, false, threads);
  bench_batched(96, 128, 128, 64, true, threads);
  printf("\n");

  const int rows = 8 * 256, cols = 768;
  const int64_t n = (int64_t)rows * cols;
  tp_mem x = buf(n), y = buf(n), dy = buf(n), dx = buf(n), g = buf(cols), be = buf(cols),
         mu = buf(rows), rs = buf(rows), m = buf(n), v = buf(n);
  double s;
  BEST(10, s, B->k.layernorm_fwd(D, y, mu, rs, x, g, be, rows, cols, 1e-12f));
  report("layernorm_fwd 2048x768", s, 8.0 * n, n);
  BEST(10, s, B->k.layernorm_bwd(D, dx, g, be, dy, x, mu, rs, g, rows, cols));
  report("layernorm_bwd 2048x768", s, 12.0 * n, n);
  BEST(10, s, B->k.gelu_fwd(D, y, x, n));
  report("gelu_fwd 1.5M", s, 8.0 * n, n);
  BEST(10, s, B->k.gelu_bwd(D, dx, dy, x, n));
  report("gelu_bwd 1.5M", s, 16.0 * n, n);
  float *hv = host(v);
  for (int64_t i = 0; i < n; i++) hv[i] = hv[i] * hv[i];
  tp_adam_args a = {TP_ADAM_W, 1e-4f, 0.9f, 0.999f, 1e-7f, 0.01f, 1, 1.0f};
  BEST(10, s, B->k.adam_step(D, y, dy, m, v, n, &a));
  report("adam_step 1.5M", s, 28.0 * n, n);
  BEST(10, s, B->k.dropout_fwd(D, y, x, n, 0.1f, 1, 0));
  report("dropout_fwd 1.5M", s, 8.0 * n, n);

  /* attention softmax over [8, 12, 256, 256] */
  const int sb = 8, sh = 12, st = 256;
  const int64_t sn = (int64_t)sb * sh * st * st;
  tp_mem sx = buf(sn), sy = buf(sn), sm = buf(sb * st);
  int32_t *mk = B->buffer_host_ptr(sm.buf);
  for (int i = 0; i < sb * st; i++) mk[i] = (i % st) < 200;
  BEST(5, s, B->k.softmax_fwd(D, sy, sx, sm, sb, sh, st, st, 0.125f));
  report("softmax_fwd 8x12x256x256 masked", s, 8.0 * sn, sn);
  BEST(5, s, B->k.softmax_bwd(D, sx, sy, sy, sb, sh, st, st, 0.125f));
  report("softmax_bwd 8x12x256x256", s, 12.0 * sn, sn);
  B->close(D);
  return 0;
}
