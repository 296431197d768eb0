/* cli/cmd_bench_model.c — `tensorplug bench --model ...`: full training (or
 * inference) steps of one model on each backend, in one run, as one table
 * (in the manner of llama-bench). Backends that cannot run here get a row
 * with the reason instead of disappearing. The batches are random tokens, or
 * (--data) real reviews padded as training pads them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cli_options.h"
#include "tensorplug/dataset.h"
#include "tensorplug/error.h"
#include "tensorplug/ops.h"
#include "tensorplug/registry.h"

typedef struct bench_model_opts {
  tp_cli_opts o; /* model, device, data and --json options shared with the other commands */
  char *backends, *mode;
  int batch, seq, steps, warmup;
  /* --data: the reviews of the steps, in order (borrowed from the dataset) */
  tp_dataset *d;
  char **texts;
  int *labels;
} bench_model_opts;

typedef struct bench_row {
  char *backend, *device, *precision;
  char *why_not; /* NULL when it ran */
  double ms_median, ms_min, ms_max, tokens_per_s, tflops, cpu_ms_per_step;
  int64_t tokens; /* real (unpadded) tokens of the timed steps */
  uint64_t peak_bytes, peak_rss_bytes, arena_bytes;
  int steps;
} bench_row;

/* What one step did. */
typedef struct step_stats {
  double ms, cpu_ms, flops;
  int64_t tokens; /* real tokens */
} step_stats;

static void row_clear(gpointer p) {
  bench_row *r = p;
  g_free(r->backend);
  g_free(r->device);
  g_free(r->precision);
  g_free(r->why_not);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* A batch of random token ids (no padding) and alternating labels. */
static void synthetic_batch(tp_ctx *ctx, const tp_model_config *cfg, int b, int t, tp_tensor **ids,
                            tp_tensor **mask, tp_tensor **labels) {
  int32_t *hid = g_new(int32_t, (int64_t)b * t), *hm = g_new(int32_t, (int64_t)b * t);
  int32_t *hl = g_new(int32_t, b);
  GRand *r = g_rand_new_with_seed(1);
  for (int64_t i = 0; i < (int64_t)b * t; i++) {
    hid[i] = g_rand_int_range(r, 1, cfg->vocab_size);
    hm[i] = 1;
  }
  for (int i = 0; i < b; i++) hl[i] = i % cfg->num_labels;
  g_rand_free(r);
  int64_t sh[2] = {b, t}, ls[1] = {b};
  *ids = tp_tensor_from_host(ctx, TP_I32, 2, sh, hid);
  *mask = tp_tensor_from_host(ctx, TP_I32, 2, sh, hm);
  *labels = tp_tensor_from_host(ctx, TP_I32, 1, ls, hl);
  g_free(hid);
  g_free(hm);
  g_free(hl);
}

/* Batch `step` of the --data reviews (seqs holds every step's, in order),
 * padded to its longest review as training pads. Returns the padded length. */
static int64_t review_batch(tp_ctx *ctx, const tp_token_seqs *seqs, const int *labels, int32_t pad,
                            int b, int64_t step, tp_tensor **ids, tp_tensor **mask,
                            tp_tensor **lab, int64_t *tokens) {
  int64_t first = step * b, t = 1;
  for (int i = 0; i < b; i++) t = MAX(t, seqs->offsets[first + i + 1] - seqs->offsets[first + i]);
  int32_t *hid = g_new(int32_t, (int64_t)b * t), *hm = g_new(int32_t, (int64_t)b * t);
  int32_t *hl = g_new(int32_t, b);
  *tokens = 0;
  for (int i = 0; i < b; i++) {
    int64_t len = seqs->offsets[first + i + 1] - seqs->offsets[first + i];
    const int32_t *src = seqs->ids + seqs->offsets[first + i];
    for (int64_t j = 0; j < t; j++) {
      hid[i * t + j] = j < len ? src[j] : pad;
      hm[i * t + j] = j < len;
    }
    hl[i] = labels[first + i];
    *tokens += len;
  }
  int64_t sh[2] = {b, t}, ls[1] = {b};
  *ids = tp_tensor_from_host(ctx, TP_I32, 2, sh, hid);
  *mask = tp_tensor_from_host(ctx, TP_I32, 2, sh, hm);
  *lab = tp_tensor_from_host(ctx, TP_I32, 1, ls, hl);
  g_free(hid);
  g_free(hm);
  g_free(hl);
  return t;
}

static double cpu_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One timed step (forward, and in training backward and Adam), ended by a
 * synchronisation so that the time is the device's. seqs: the --data
 * reviews, else NULL (random tokens). */
static bool timed_step(tp_cli_session *s, const bench_model_opts *o, const tp_token_seqs *seqs,
                       bool train, int64_t step, step_stats *st, GError **err) {
  gint64 t0 = g_get_monotonic_time();
  double c0 = cpu_seconds();
  tp_ctx *ctx = s->ctx;
  tp_ctx_begin_step(ctx);
  tp_ctx_set_training(ctx, train);
  tp_ctx_set_rng(ctx, 1, (uint64_t)step << 40);
  tp_tensor *ids, *mask, *labels;
  int64_t t = o->seq;
  if (seqs)
    t = review_batch(ctx, seqs, o->labels, tp_tokenizer_pad_id(s->tok), o->batch, step, &ids,
                     &mask, &labels, &st->tokens);
  else {
    synthetic_batch(ctx, &s->model->cfg, o->batch, o->seq, &ids, &mask, &labels);
    st->tokens = (int64_t)o->batch * o->seq;
  }
  st->flops = tp_model_flops(&s->model->cfg, o->batch, t, train);
  tp_tensor *logits = tp_model_forward(s->model, ctx, ids, mask);
  if (train) {
    tp_tensor *loss = tp_cross_entropy(ctx, logits, labels);
    tp_params_zero_grad(s->model->params, ctx);
    if (!tp_ctx_backward(ctx, loss, err)) return false;
    tp_adam_args a = {.mode = TP_ADAM_W, .lr = 1e-5f, .beta1 = 0.9f, .beta2 = 0.999f,
                      .eps = 1e-8f, .weight_decay = 0.01f, .step = step + 1, .grad_scale = 1.0f};
    tp_params_adam_step(s->model->params, ctx, &a);
  }
  if (!tp_ctx_check(ctx, err)) return false;
  st->ms = (double)(g_get_monotonic_time() - t0) / 1000.0;
  st->cpu_ms = (cpu_seconds() - c0) * 1000.0;
  return true;
}

/* The row's figures from its timed steps. Random tokens: per median step
 * (every step is the same); reviews: totals over the steps (they differ in
 * length). */
static void row_figures(const bench_model_opts *o, const step_stats *st, bench_row *row) {
  int n = o->steps;
  double *ms = g_new(double, n), sum_ms = 0, sum_cpu = 0, sum_flops = 0;
  int64_t tokens = 0;
  for (int i = 0; i < n; i++) {
    ms[i] = st[i].ms;
    sum_ms += st[i].ms;
    sum_cpu += st[i].cpu_ms;
    sum_flops += st[i].flops;
    tokens += st[i].tokens;
  }
  qsort(ms, (size_t)n, sizeof *ms, cmp_double);
  row->steps = n;
  row->ms_min = ms[0];
  row->ms_max = ms[n - 1];
  row->ms_median = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
  row->tokens = tokens;
  row->cpu_ms_per_step = sum_cpu / n;
  if (o->texts) {
    row->tokens_per_s = (double)tokens / (sum_ms / 1000.0);
    row->tflops = sum_flops / (sum_ms / 1000.0) / 1e12;
  } else {
    row->tokens_per_s = (double)st[0].tokens / (row->ms_median / 1000.0);
    row->tflops = st[0].flops / (row->ms_median / 1000.0) / 1e12;
  }
  g_free(ms);
}

/* Runs the row of one backend; a backend that cannot run gets the reason in
 * the row. */
static void run_backend(const bench_model_opts *o, const char *name, bench_row *row,
                        char **desc) {
  row->backend = g_strdup(name);
  tp_cli_run_opts ro = o->o.ro;
  ro.backend = (char *)name;
  tp_cli_session s;
  GError *err = NULL;
  /* the row's own peak, model loading included (where the system cannot
   * reset it, the process's so far) */
  tp_cli_peak_rss_reset();
  if (!tp_cli_session_open(&s, &o->o.mo, &ro, 1, o->texts != NULL, &err)) {
    row->why_not = g_strdup(err->message);
    if (s.be) row->device = g_strdup(s.be->info.name);
    g_clear_error(&err);
    tp_cli_session_close(&s);
    return;
  }
  /* the --data reviews, checked against this model in pick_reviews */
  tp_token_seqs *seqs =
      o->texts ? tp_tokenizer_encode_batch(s.tok, (const char *const *)o->texts,
                                           (int64_t)(o->warmup + o->steps) * o->batch, o->seq,
                                           o->o.ro.threads)
               : NULL;
  row->device = g_strdup(s.be->info.name);
  row->precision = g_strdup(tp_dtype_name(tp_ctx_precision(s.ctx)));
  if (!*desc) { /* the model once, without the device of this row */
    *desc = tp_cli_session_describe(&s);
    char *cut = strstr(*desc, "; backend ");
    if (cut) *cut = '\0';
  }
  bool train = strcmp(o->mode, "train") == 0;
  step_stats *st = g_new0(step_stats, o->steps);
  bool ok = true;
  for (int i = 0; ok && i < o->warmup + o->steps; i++) {
    step_stats one = {0};
    ok = timed_step(&s, o, seqs, train, i, &one, &err);
    if (ok && i >= o->warmup) st[i - o->warmup] = one;
  }
  if (ok) {
    row_figures(o, st, row);
    row->peak_bytes = s.be->stats.peak_bytes;
    row->arena_bytes = tp_ctx_arena_bytes(s.ctx);
    row->peak_rss_bytes = tp_cli_peak_rss_bytes();
  } else {
    row->why_not = g_strdup_printf("failed: %s", err ? err->message : "?");
    g_clear_error(&err);
  }
  g_free(st);
  if (seqs) tp_token_seqs_free(seqs);
  tp_cli_session_close(&s);
}

/* --backends: a comma list, or "all": cpu, vulkan, cuda and any other backend
 * plugin that loaded. */
static char **backend_names(const char *spec) {
  if (strcmp(spec, "all") != 0) return g_strsplit(spec, ",", -1);
  GPtrArray *a = g_ptr_array_new();
  const char *std[] = {"cpu", "vulkan", "cuda"};
  for (size_t i = 0; i < G_N_ELEMENTS(std); i++) g_ptr_array_add(a, g_strdup(std[i]));
  tp_registry *reg = tp_registry_get_default();
  for (guint i = 0; i < tp_registry_count(reg); i++) {
    const tp_plugin_record *r = tp_registry_record(reg, i);
    bool known = false;
    for (size_t j = 0; j < G_N_ELEMENTS(std); j++) known = known || !g_strcmp0(r->name, std[j]);
    if (r->loaded && r->kind == TP_PLUGIN_BACKEND && !known) g_ptr_array_add(a, g_strdup(r->name));
  }
  g_ptr_array_add(a, NULL);
  return (char **)g_ptr_array_free(a, FALSE);
}

static void print_table(const bench_model_opts *o, GArray *rows, const char *model_desc) {
  printf("Model %s\n%s, batch %d x sequence %d, median of %d steps after %d warm-up\n", model_desc,
         strcmp(o->mode, "train") == 0 ? "training steps (forward, backward, AdamW)"
                                       : "inference (forward)",
         o->batch, o->seq, o->steps, o->warmup);
  if (o->texts)
    printf("on %d reviews of --data (at most %d tokens each, padded to the longest of each "
           "batch);\ntokens/s and TFLOP/s over all timed steps, real (unpadded) tokens only\n",
           (o->warmup + o->steps) * o->batch, o->seq);
  else
    printf("on random tokens without padding\n");
  printf("\n| backend | device | precision | ms/step | min-max ms | tokens/s | TFLOP/s | peak memory "
         "| CPU ms/step | peak RSS |\n");
  printf("|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (guint i = 0; i < rows->len; i++) {
    const bench_row *r = &g_array_index(rows, bench_row, i);
    if (r->why_not) {
      /* the reason where the device's name would be */
      printf("| %s | unavailable: %s%s%s | - | - | - | - | - | - | - | - |\n", r->backend,
             r->device ? r->device : "", r->device ? ": " : "", r->why_not);
      continue;
    }
    char *tok = tp_cli_thousands((int64_t)llround(r->tokens_per_s));
    char *mem = g_format_size_full(r->peak_bytes, G_FORMAT_SIZE_IEC_UNITS);
    char *rss = g_format_size_full(r->peak_rss_bytes, G_FORMAT_SIZE_IEC_UNITS);
    printf("| %s | %s | %s | %.1f | %.1f-%.1f | %s | %.3g | %s | %.1f | %s |\n", r->backend,
           r->device, r->precision, r->ms_median, r->ms_min, r->ms_max, tok, r->tflops, mem,
           r->cpu_ms_per_step, rss);
    g_free(tok);
    g_free(mem);
    g_free(rss);
  }
}

static void put_str(JsonBuilder *b, const char *k, const char *v) {
  json_builder_set_member_name(b, k);
  if (v) json_builder_add_string_value(b, v);
  else json_builder_add_null_value(b);
}
static void put_num(JsonBuilder *b, const char *k, double v) {
  json_builder_set_member_name(b, k);
  json_builder_add_double_value(b, v);
}

static void print_json(const bench_model_opts *o, GArray *rows, const char *model_desc) {
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  put_str(b, "model", model_desc);
  put_str(b, "mode", o->mode);
  put_num(b, "batch", o->batch);
  put_num(b, "seq", o->seq);
  put_num(b, "steps", o->steps);
  put_num(b, "warmup", o->warmup);
  json_builder_set_member_name(b, "data"); /* the --data paths; null: random tokens */
  if (o->texts) {
    json_builder_begin_array(b);
    for (char **p = o->o.data; *p; p++) json_builder_add_string_value(b, *p);
    json_builder_end_array(b);
  } else {
    json_builder_add_null_value(b);
  }
  json_builder_set_member_name(b, "rows");
  json_builder_begin_array(b);
  for (guint i = 0; i < rows->len; i++) {
    const bench_row *r = &g_array_index(rows, bench_row, i);
    json_builder_begin_object(b);
    put_str(b, "backend", r->backend);
    put_str(b, "device", r->device);
    json_builder_set_member_name(b, "available");
    json_builder_add_boolean_value(b, r->why_not == NULL);
    if (r->why_not) {
      put_str(b, "reason", r->why_not);
    } else {
      put_str(b, "precision", r->precision);
      put_num(b, "ms_per_step", r->ms_median);
      put_num(b, "ms_min", r->ms_min);
      put_num(b, "ms_max", r->ms_max);
      put_num(b, "tokens_per_s", r->tokens_per_s);
      put_num(b, "tflops", r->tflops);
      put_num(b, "peak_device_bytes", (double)r->peak_bytes);
      put_num(b, "tokens", (double)r->tokens);
      put_num(b, "cpu_ms_per_step", r->cpu_ms_per_step);
      put_num(b, "peak_rss_bytes", (double)r->peak_rss_bytes);
      put_num(b, "arena_bytes", (double)r->arena_bytes);
    }
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  json_builder_end_object(b);
  JsonGenerator *g = json_generator_new();
  json_generator_set_pretty(g, TRUE);
  JsonNode *root = json_builder_get_root(b);
  json_generator_set_root(g, root);
  char *text = json_generator_to_data(g, NULL);
  printf("%s\n", text);
  g_free(text);
  json_node_unref(root);
  g_object_unref(g);
  g_object_unref(b);
}

/* --data needs a vocabulary and --seq within the model's positions (checked
 * once here, from the model's config: no row could run without them). */
static bool check_model_for_reviews(const bench_model_opts *o, int *num_labels, GError **err) {
  const tp_cli_model_opts *mo = &o->o.mo;
  tp_model_source src = {.model = mo->model, .weights_dir = mo->weights,
                         .init_random = mo->init != NULL,
                         .ov = {.layers = mo->layers, .hidden = mo->hidden, .heads = mo->heads,
                                .ffn = mo->ffn, .max_positions = mo->max_positions}};
  const tp_model_iface *iface = NULL;
  tp_model_config cfg;
  char *wp = NULL, *md = NULL, *vocab = NULL;
  bool ok = tp_model_resolve(NULL, &src, &iface, &cfg, &wp, &md, err);
  if (ok && (o->seq < 3 || o->seq > cfg.max_positions)) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "--seq %d with --data: use 3 ([CLS], "
                "text, [SEP]) to the model's %d positions", o->seq, cfg.max_positions);
    ok = false;
  }
  if (ok) ok = (vocab = tp_cli_resolve_vocab(mo->vocab, md, err)) != NULL;
  if (ok) *num_labels = cfg.num_labels;
  g_free(vocab);
  g_free(wp);
  g_free(md);
  return ok;
}

/* --data: loads the dataset, checks its labels against the model's and picks
 * the reviews of every step, spread over the data (files are often sorted by
 * label). */
static bool pick_reviews(bench_model_opts *o, GError **err) {
  int num_labels = 0;
  if (!check_model_for_reviews(o, &num_labels, err)) return false;
  o->d = tp_dataset_load((const char *const *)o->o.data, o->o.skip_bad, err);
  if (!o->d || !tp_dataset_check_labels(o->d, num_labels, o->o.skip_bad, err)) return false;
  int64_t need = (int64_t)(o->warmup + o->steps) * o->batch;
  if (need > o->d->n) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "--data has %u reviews but %d steps "
                "(--warmup %d + --steps %d) of --batch %d need %lld: lower them or add data",
                o->d->n, o->warmup + o->steps, o->warmup, o->steps, o->batch, (long long)need);
    return false;
  }
  guint *order = g_new(guint, o->d->n);
  for (guint i = 0; i < o->d->n; i++) order[i] = i;
  GRand *r = g_rand_new_with_seed(1);
  for (guint i = o->d->n - 1; i > 0; i--) { /* Fisher-Yates */
    guint j = (guint)g_rand_int_range(r, 0, (gint32)i + 1), t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  g_rand_free(r);
  o->texts = g_new(char *, need);
  o->labels = g_new(int, need);
  for (int64_t i = 0; i < need; i++) {
    o->texts[i] = o->d->texts[order[i]];
    o->labels[i] = o->d->labels[order[i]];
  }
  g_free(order);
  return true;
}

/* Every backend of --backends in turn, then one table (or JSON). Exit 2 when
 * none could run: the request cannot be served here. */
static int run_all(bench_model_opts *o) {
  GError *err = NULL;
  if (o->o.data && o->o.data[0] && !pick_reviews(o, &err)) return tp_cli_report(err);
  GArray *rows = g_array_new(FALSE, TRUE, sizeof(bench_row));
  g_array_set_clear_func(rows, row_clear);
  char **names = backend_names(o->backends);
  char *desc = NULL;
  for (char **n = names; *n; n++) {
    bench_row r = {0};
    if (!o->o.json) {
      fprintf(stderr, "bench: %s ...\n", g_strstrip(*n));
      fflush(stderr);
    }
    run_backend(o, g_strstrip(*n), &r, &desc);
    g_array_append_val(rows, r);
  }
  if (!desc) desc = g_strdup_printf("model %s", o->o.mo.model);
  if (o->o.json) print_json(o, rows, desc);
  else print_table(o, rows, desc);
  bool any = false;
  for (guint i = 0; i < rows->len; i++) any = any || !g_array_index(rows, bench_row, i).why_not;
  int rc = any ? TP_EXIT_OK : TP_EXIT_USAGE;
  g_free(desc);
  g_strfreev(names);
  g_array_unref(rows);
  return rc;
}

#define OFF(f) offsetof(bench_model_opts, f)
static const tp_cli_opt bench_model_rows[] = {
    {.name = "backends", .kind = TP_OPT_STRING, .offset = OFF(backends), .arg = "LIST",
     .help = "Comma list of backends, or all (cpu, vulkan, cuda and any other loaded)",
     .shown_def = "all"},
    {.name = "mode", .kind = TP_OPT_STRING, .offset = OFF(mode), .arg = "MODE",
     .help = "Training steps (forward, backward, AdamW) or inference", .choices = "train|infer",
     .shown_def = "train"},
    {.name = "batch", .kind = TP_OPT_INT, .offset = OFF(batch), .arg = "B",
     .help = "Sequences per step", .min = 1, .max = 65536},
    {.name = "seq", .kind = TP_OPT_INT, .offset = OFF(seq), .arg = "T",
     .help = "Tokens per sequence (with --data: at most, [CLS] and [SEP] included)", .min = 1,
     .max = 65536},
    {.name = "steps", .kind = TP_OPT_INT, .offset = OFF(steps), .arg = "N",
     .help = "Timed steps per backend", .min = 1, .max = 100000},
    {.name = "warmup", .kind = TP_OPT_INT, .offset = OFF(warmup), .arg = "N",
     .help = "Untimed steps first", .min = 0, .max = 1000},
};
#undef OFF

int tp_cmd_bench_model(int argc, char **argv) {
  bench_model_opts o = {.batch = 8, .seq = 128, .steps = 3, .warmup = 1};
  tp_cli_opts_init(&o.o);
  tp_cli_optset *set = tp_cli_optset_new(
      "--model PRESET|DIR",
      "Times full training steps (forward, backward, AdamW) or inference of a model on\n"
      "each backend in one run, on a synthetic batch of random tokens without padding,\n"
      "or with --data on real reviews (truncated to --seq tokens, padded to the longest\n"
      "of each batch as training pads them). Prints one row per backend: device,\n"
      "precision, median ms/step (and the range), tokens/s (with --data: real tokens over\n"
      "all timed steps), achieved TFLOP/s (the model's nominal FLOPs: every layer in full,\n"
      "the backward counted as twice the forward), peak device memory, the process's CPU\n"
      "time per step (all threads) and its peak resident memory while the row ran.\n"
      "Backends that cannot run here get a row with the reason. (`bench --tokenizer`\n"
      "times the tokenizer instead: `tensorplug bench --tokenizer --help`.)",
      "Examples:\n  tensorplug bench --model bert-base-uncased --init random --layers 2 "
      "--hidden 128 --heads 2 --ffn 512 \\\n      --backends all --mode train --batch 8 "
      "--seq 128 --steps 3\n"
      "  tensorplug bench --model distilbert-base-uncased --data ../shared/data/imdb "
      "--backends cpu \\\n      --batch 8 --seq 512 --steps 5\n");
  tp_cli_optset_add(set, "Options", bench_model_rows, G_N_ELEMENTS(bench_model_rows), &o);
  tp_cli_optset_add_data(set, &o.o);
  tp_cli_optset_add_json(set, &o.o, "Print the rows as JSON");
  tp_cli_optset_add_model(set, &o.o);
  tp_cli_optset_add_device(set, &o.o);
  int rc = tp_cli_optset_parse(set, &argc, &argv);
  tp_cli_optset_free(set);
  GError *err = NULL;
  if (rc < 0 && argc > 1) {
    fprintf(stderr, "tensorplug: error: unexpected argument \"%s\"\n", argv[1]);
    rc = TP_EXIT_USAGE;
  } else if (rc < 0 && !o.o.mo.model) {
    rc = tp_cli_report(g_error_new(TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "bench needs --model "
                                   "PRESET|DIR (or --tokenizer): e.g. --model bert-base-uncased "
                                   "--init random"));
  } else if (rc < 0) {
    if (!o.mode) o.mode = g_strdup("train");
    if (!o.backends) o.backends = g_strdup(o.o.ro.backend ? o.o.ro.backend : "all");
    rc = run_all(&o);
  }
  g_free(o.texts);
  g_free(o.labels);
  if (o.d) tp_dataset_free(o.d);
  tp_cli_opts_clear(&o.o);
  g_free(o.backends);
  g_free(o.mode);
  (void)err;
  return rc;
}
