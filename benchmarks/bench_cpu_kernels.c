/* benchmarks/bench_cpu_kernels.c — micro-benchmark of the CPU backend plugin:
 * GFLOP/s of its gemm slot on the shapes of a BERT step with each GEMM
 * library it can use (OpenBLAS, oneDNN; $TENSORPLUG_CPU_GEMM is set before
 * each open) at f32 and bf16 compute (bf16 both native and emulated where
 * oneDNN is there) and at i8 where the CPU offers it, and the throughput of
 * the fused and plain elementwise kernels. Process CPU time per call (best of several): on a shared machine
 * wall time mostly measures the scheduler.
 *
 * Built by meson (benchmarks/meson.build, not a test):
 *   build/benchmarks/bench_cpu_kernels [threads] [results.json]
 * benchmarks/run_all.sh cpu-kernels writes docs/results/cpu-kernels.json. */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <glib.h>

#include "tensorplug/backend_iface.h"
#include "tensorplug/plugin.h"

static const tp_backend_iface *B;
static tp_backend_dev *D;
static GString *J; /* the JSON results */

static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
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

static void release(tp_mem m) { B->buffer_free(D, m.buf); }

/* Best CPU seconds of reps calls of body (one warm-up first). */
#define BEST(reps, secs, body)                                                                     \
  do {                                                                                             \
    body;                                                                                          \
    B->synchronize(D, NULL);                                                                       \
    secs = 1e30;                                                                                   \
    for (int r_ = 0; r_ < (reps); r_++) {                                                          \
      double t0_ = cpu_now();                                                                      \
      body;                                                                                        \
      B->synchronize(D, NULL);                                                                     \
      double t_ = cpu_now() - t0_;                                                                 \
      if (t_ < secs) secs = t_;                                                                    \
    }                                                                                              \
  } while (0)

static void record(const char *kind, const char *name, const char *variant, double secs,
                   double work, const char *unit) {
  printf("%-8s %-34s %-18s %9.3f ms  %8.1f %s\n", kind, name, variant, secs * 1e3, work / secs * 1e-9,
         unit);
  g_string_append_printf(J, "%s    {\"kind\": \"%s\", \"name\": \"%s\", \"variant\": \"%s\", "
                         "\"cpu_ms\": %.4f, \"%s\": %.2f}",
                         J->str[J->len - 1] == '[' ? "\n" : ",\n", kind, name, variant, secs * 1e3,
                         unit, work / secs * 1e-9);
}

static void bench_gemm(const char *name, const char *variant, bool ta, bool tb, int m, int n,
                       int k, int batch, tp_dtype compute) {
  int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
  tp_mem a = buf((size_t)ar * ac * batch), b = buf((size_t)br * bc * batch),
         c = buf((size_t)m * n * batch);
  tp_gemm_args g = {.ta = ta, .tb = tb, .m = m, .n = n, .k = k, .batch = batch, .alpha = 1.0f,
                    .beta = 0.0f, .a = a, .b = b, .c = c, .lda = ac, .ldb = bc, .ldc = n,
                    .sa = (int64_t)ar * ac, .sb = (int64_t)br * bc, .sc = (int64_t)m * n,
                    .ab_dtype = TP_F32, .c_dtype = TP_F32, .compute = compute};
  double s, flops = 2.0 * m * n * k * batch;
  BEST(flops > 4e9 ? 3 : 6, s, B->k.gemm(D, &g));
  record("gemm", name, variant, s, flops, "gflops");
  release(a);
  release(b);
  release(c);
}

static void open_dev(int threads, const char *gemm, const char *bf16) {
  if (D) B->close(D);
  D = NULL;
  if (gemm) g_setenv("TENSORPLUG_CPU_GEMM", gemm, TRUE);
  else g_unsetenv("TENSORPLUG_CPU_GEMM");
  if (bf16) g_setenv("TENSORPLUG_CPU_BF16", bf16, TRUE);
  else g_unsetenv("TENSORPLUG_CPU_BF16");
  GError *err = NULL;
  D = B->open(0, threads, &err);
  if (!D) {
    fprintf(stderr, "open (%s, %s): %s\n", gemm ? gemm : "default", bf16 ? bf16 : "default",
            err->message);
    g_clear_error(&err);
  }
}

/* The products of one MiniLM (rows 4096 = 32 x 128, H 384, FFN 1536) and one
 * DistilBERT (4096 = 8 x 512, H 768, FFN 3072) training step. */
static void gemm_shapes(const char *variant, tp_dtype compute) {
  bench_gemm("minilm x W^T 4096x384x384", variant, false, true, 4096, 384, 384, 1, compute);
  bench_gemm("minilm dx 4096x384x384", variant, false, false, 4096, 384, 384, 1, compute);
  bench_gemm("minilm dW 384x384x4096", variant, true, false, 384, 384, 4096, 1, compute);
  bench_gemm("minilm FFN up 4096x1536x384", variant, false, true, 4096, 1536, 384, 1, compute);
  bench_gemm("distil x W^T 4096x768x768", variant, false, true, 4096, 768, 768, 1, compute);
  bench_gemm("distil FFN up 4096x3072x768", variant, false, true, 4096, 3072, 768, 1, compute);
  bench_gemm("attention 384 x 128x128x32", variant, false, true, 128, 128, 32, 384, compute);
}

/* i8 quantizes only activations x a weight: those shapes (quantizing both
 * operands is inside the time, as the slot does it at every call). */
static void gemm_shapes_i8(void) {
  bench_gemm("minilm x W^T 4096x384x384", "onednn i8", false, true, 4096, 384, 384, 1, TP_I8);
  bench_gemm("minilm FFN up 4096x1536x384", "onednn i8", false, true, 4096, 1536, 384, 1, TP_I8);
  bench_gemm("distil x W^T 4096x768x768", "onednn i8", false, true, 4096, 768, 768, 1, TP_I8);
  bench_gemm("distil FFN up 4096x3072x768", "onednn i8", false, true, 4096, 3072, 768, 1, TP_I8);
}

static void bench_elementwise(void) {
  const int rows = 4096, cols = 1536, h = 384;
  const int64_t n = (int64_t)rows * cols;
  tp_mem x = buf(n), y = buf(n), dy = buf(n), dx = buf(n), b = buf(cols), db = buf(cols);
  double s;
  BEST(10, s, B->k.bias_add(D, y, b, rows, cols); B->k.gelu_fwd(D, dx, y, n));
  record("ew", "bias_add + gelu_fwd 4096x1536", "basic", s, (double)n, "gelem_s");
  BEST(10, s, B->bias_gelu_fwd(D, y, x, b, rows, cols));
  record("ew", "bias_gelu_fwd 4096x1536", "fused", s, (double)n, "gelem_s");
  BEST(10, s, B->k.fill(D, dx, 0.0f, n); B->k.gelu_bwd(D, dx, dy, x, n);
       B->k.bias_grad(D, db, dx, rows, cols));
  record("ew", "fill + gelu_bwd + bias_grad 4096x1536", "basic", s, (double)n, "gelem_s");
  BEST(10, s, B->bias_gelu_bwd(D, dx, db, dy, x, rows, cols));
  record("ew", "bias_gelu_bwd 4096x1536", "fused", s, (double)n, "gelem_s");
  const int64_t m = (int64_t)rows * h;
  tp_mem a = buf(m), r = buf(m), s_ = buf(m), o = buf(m), keep = buf(m / 4 + 1), mu = buf(rows),
         rs = buf(rows), g = buf(h), be = buf(h), da = buf(m), dr = buf(m), t = buf(m);
  BEST(10, s, B->dropout_fwd_keep(D, t, keep, a, m, 0.1f, 1, 0); B->k.add(D, s_, t, r, m);
       B->k.layernorm_fwd(D, o, mu, rs, s_, g, be, rows, h, 1e-12f));
  record("ew", "dropout + add + layernorm 4096x384", "basic", s, (double)m, "gelem_s");
  tp_add_ln_args al = {.rows = rows, .cols = h, .eps = 1e-12f, .p = 0.1f, .seed = 1, .y = o,
                       .s = s_, .mean = mu, .rstd = rs, .keep = keep, .a = a, .b = r, .gamma = g,
                       .beta = be};
  BEST(10, s, B->add_layernorm_fwd(D, &al));
  record("ew", "add_layernorm_fwd 4096x384", "fused", s, (double)m, "gelem_s");
  BEST(10, s, B->k.fill(D, t, 0.0f, m); B->k.fill(D, dr, 0.0f, m); B->k.fill(D, da, 0.0f, m);
       B->k.layernorm_bwd(D, t, g, be, dy, s_, mu, rs, g, rows, h);
       B->k.axpy(D, dr, t, 1.0f, m); B->k.axpy(D, dx, t, 1.0f, m);
       B->dropout_bwd_keep(D, da, dx, keep, m, 0.1f));
  record("ew", "layernorm_bwd + add + dropout bwd 4096x384", "basic", s, (double)m, "gelem_s");
  BEST(10, s, B->add_layernorm_bwd(D, &al, dy, da, dr, g, be, false, false));
  record("ew", "add_layernorm_bwd 4096x384", "fused", s, (double)m, "gelem_s");
  tp_mem list[] = {x, y, dy, dx, b, db, a, r, s_, o, keep, mu, rs, g, be, da, dr, t};
  for (size_t i = 0; i < G_N_ELEMENTS(list); i++) release(list[i]);
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 1;
  const char *json = argc > 2 ? argv[2] : NULL;
  char *path = g_build_filename(TP_CPU_PLUGIN_DIR, "libtp_backend_cpu.so", NULL);
  void *h = dlopen(path, RTLD_NOW);
  if (!h) {
    fprintf(stderr, "%s\n", dlerror());
    return 1;
  }
  g_free(path);
  B = ((tp_plugin_entry_fn)dlsym(h, TP_PLUGIN_ENTRY_SYMBOL))()->iface;
  tp_device_info info;
  GError *err = NULL;
  if (B->probe(&info, 1, &err) < 1) {
    fprintf(stderr, "%s\n", err ? err->message : "no device");
    return 1;
  }
  J = g_string_new(NULL);
  g_string_append_printf(J, "{\n  \"device\": \"%s\",\n  \"threads\": %d,\n  \"openblas_coretype_env\": "
                         "\"%s\",\n  \"results\": [", info.description, threads,
                         g_getenv("OPENBLAS_CORETYPE") ? g_getenv("OPENBLAS_CORETYPE") : "");
  printf("%s\n%d threads, process CPU time per call (best of several)\n\n", info.description,
         threads);
  open_dev(threads, "openblas", NULL);
  if (D) gemm_shapes("openblas f32", TP_F32);
  if (D) gemm_shapes("openblas bf16", TP_BF16);
  open_dev(threads, "onednn", "emulate");
  if (D) gemm_shapes("onednn f32", TP_F32);
  if (D) gemm_shapes("onednn bf16 emulated", TP_BF16);
  open_dev(threads, "onednn", "native");
  if (D) gemm_shapes("onednn bf16 native", TP_BF16);
  open_dev(threads, NULL, NULL);
  if (D && (info.gemm_compute & TP_DTYPE_BIT(TP_I8))) gemm_shapes_i8();
  if (D) bench_elementwise();
  g_string_append(J, "\n  ]\n}\n");
  if (json && !g_file_set_contents(json, J->str, (gssize)J->len, &err)) {
    fprintf(stderr, "%s\n", err->message);
    return 1;
  }
  if (D) B->close(D);
  return 0;
}
