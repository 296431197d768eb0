/* cli/bench_train.c — `tensorplug bench --train`: training steps of a model on
 * real reviews at a fixed batch and length, timed one by one, with the
 * process's peak memory. For profiling and memory comparisons; the
 * end-to-end figure is `tensorplug train` (results.json). */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli.h"
#include "tensorplug/dataset.h"
#include "tensorplug/error.h"
#include "tensorplug/ops.h"
#include "tensorplug/params.h"

/* Peak resident set size of this process so far, in bytes. */
uint64_t tp_cli_peak_rss_bytes(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return (uint64_t)ru.ru_maxrss * 1024u; /* Linux: kilobytes */
}

static double cpu_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Batch i: examples [i*batch, (i+1)*batch) of seqs, padded to their longest
 * (as training pads). */
static bool upload_batch(tp_ctx *ctx, const tp_token_seqs *s, const int *labels, int64_t first,
                         int batch, int32_t pad, tp_tensor **ids, tp_tensor **mask,
                         tp_tensor **lab, int64_t *tokens) {
  if (batch < 1 || batch > 65536) return false;
  int64_t t = 1;
  for (int i = 0; i < batch; i++)
    t = MAX(t, s->offsets[first + i + 1] - s->offsets[first + i]);
  guint nb = (guint)batch;
  size_t cells = (size_t)nb * (size_t)MIN(t, (int64_t)1 << 30);
  int32_t *hi = g_new(int32_t, cells), *hm = g_new0(int32_t, cells), *hl = g_new(int32_t, nb);
  *tokens = 0;
  for (int i = 0; i < batch; i++) {
    int64_t len = s->offsets[first + i + 1] - s->offsets[first + i];
    const int32_t *src = s->ids + s->offsets[first + i];
    for (int64_t j = 0; j < t; j++) {
      hi[i * t + j] = j < len ? src[j] : pad;
      hm[i * t + j] = j < len;
    }
    hl[i] = labels[first + i];
    *tokens += len;
  }
  int64_t shape[2] = {batch, t}, ls[1] = {batch};
  *ids = tp_tensor_from_host(ctx, TP_I32, 2, shape, hi);
  *mask = tp_tensor_from_host(ctx, TP_I32, 2, shape, hm);
  *lab = tp_tensor_from_host(ctx, TP_I32, 1, ls, hl);
  g_free(hi);
  g_free(hm);
  g_free(hl);
  return tp_ctx_ok(ctx);
}

int tp_bench_train(const tp_bench_train_opts *o, const tp_cli_model_opts *mo,
                   const tp_cli_run_opts *ro) {
  GError *err = NULL;
  tp_cli_session s;
  tp_dataset *d = NULL;
  tp_token_seqs *seqs = NULL;
  double *ms = NULL;
  int rc = TP_EXIT_OK;
  if (!o->data || !o->data[0]) {
    g_set_error(&err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "bench --train needs --data PATH");
    return tp_cli_report(err);
  }
  if (o->batch < 1 || o->max_len < 2 || o->steps < 1 || o->warmup < 0) {
    g_set_error(&err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "bench --train: --batch >= 1, "
                "--max-len >= 2, --steps >= 1 and --warmup >= 0");
    return tp_cli_report(err);
  }
  if (!tp_cli_session_open(&s, mo, ro, o->seed, true, &err)) goto out;
  d = tp_dataset_load((const char *const *)o->data, false, &err);
  if (!d) goto out;
  int64_t need = (int64_t)(o->steps + o->warmup) * o->batch;
  if (need > d->n) {
    g_set_error(&err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "bench --train: %d steps of %d need "
                "%lld reviews, --data has %u", o->steps + o->warmup, o->batch, (long long)need,
                d->n);
    goto out;
  }
  /* reviews spread over the file (IMDB files are sorted by label) */
  char **texts = g_new(char *, (size_t)need);
  int *labels = g_new(int, (size_t)need);
  for (int64_t i = 0; i < need; i++) {
    guint at = (guint)((i * 7919 + 13) % d->n);
    texts[i] = d->texts[at];
    labels[i] = d->labels[at];
  }
  seqs = tp_tokenizer_encode_batch(s.tok, (const char *const *)texts, need, o->max_len, 0);
  g_free(texts);
  char *desc = tp_cli_session_describe(&s);
  printf("%s\n", desc);
  g_free(desc);
  printf("training steps: batch %d, max length %d, %d timed after %d warm-up\n", o->batch,
         o->max_len, o->steps, o->warmup);
  fflush(stdout);
  tp_ctx *ctx = s.ctx;
  ms = g_new(double, (size_t)o->steps);
  int64_t tokens = 0;
  double total_s = 0, cpu_s = 0;
  tp_adam_args aa = {.mode = TP_ADAM_W, .lr = 1e-5f, .beta1 = 0.9f, .beta2 = 0.999f,
                     .eps = 1e-8f, .weight_decay = 0.01f, .grad_scale = 1.0f};
  for (int st = 0; st < o->warmup + o->steps; st++) {
    gint64 t0 = g_get_monotonic_time();
    double c0 = cpu_seconds();
    tp_ctx_begin_step(ctx);
    tp_ctx_set_training(ctx, true);
    tp_ctx_set_rng(ctx, o->seed, (uint64_t)st << 40);
    tp_tensor *ids, *mask, *lab;
    int64_t tok = 0;
    if (!upload_batch(ctx, seqs, labels, (int64_t)st * o->batch, o->batch, 0, &ids, &mask, &lab,
                      &tok))
      break;
    tp_tensor *logits = tp_model_forward(s.model, ctx, ids, mask);
    tp_tensor *loss = tp_cross_entropy(ctx, logits, lab);
    tp_params_zero_grad(s.model->params, ctx);
    if (!tp_ctx_backward(ctx, loss, &err)) break;
    aa.step = st + 1;
    tp_params_adam_step(s.model->params, ctx, &aa);
    float lv;
    if (!tp_tensor_to_host(ctx, loss, &lv, &err)) break; /* one sync: the step is done */
    double sec = (double)(g_get_monotonic_time() - t0) / 1e6;
    if (!isfinite(lv)) {
      g_set_error(&err, TP_ERROR, TP_ERROR_NON_FINITE, "step %d: loss %g", st + 1, (double)lv);
      break;
    }
    if (st >= o->warmup) {
      ms[st - o->warmup] = sec * 1e3;
      tokens += tok;
      total_s += sec;
      cpu_s += cpu_seconds() - c0;
    }
  }
  g_free(labels);
  if (err || !tp_ctx_check(ctx, &err)) goto out;
  qsort(ms, o->steps, sizeof *ms, cmp_double);
  double med = o->steps % 2 ? ms[o->steps / 2] : (ms[o->steps / 2 - 1] + ms[o->steps / 2]) / 2;
  uint64_t rss = tp_cli_peak_rss_bytes();
  printf("bench_train: steps=%d tokens=%lld seconds=%.3f ms_per_step_median=%.1f "
         "ms_per_step_min=%.1f cpu_ms_per_step=%.1f tokens_per_s=%.1f peak_rss_mb=%.1f "
         "arena_mb=%.1f device_peak_mb=%.1f precision=%s\n",
         o->steps, (long long)tokens, total_s, med, ms[0], cpu_s * 1e3 / o->steps,
         (double)tokens / total_s,
         (double)rss / 1048576.0, (double)tp_ctx_arena_bytes(ctx) / 1048576.0,
         (double)s.be->stats.peak_bytes / 1048576.0, tp_dtype_name(tp_ctx_precision(ctx)));
out:
  if (err) rc = tp_cli_report(err);
  g_free(ms);
  if (seqs) tp_token_seqs_free(seqs);
  tp_dataset_free(d);
  tp_cli_session_close(&s);
  return rc;
}
