/* cli/cmd_bench_model.c — `tensorplug bench --model ...`: full training (or
 * inference) steps of one model on each backend, in one run, as one table
 * (in the manner of llama-bench). Backends that cannot run here get a row
 * with the reason instead of disappearing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_options.h"
#include "tensorplug/error.h"
#include "tensorplug/ops.h"
#include "tensorplug/registry.h"

typedef struct bench_model_opts {
  tp_cli_opts o; /* model, device and --json options shared with the other commands */
  char *backends, *mode;
  int batch, seq, steps, warmup;
} bench_model_opts;

typedef struct bench_row {
  char *backend, *device, *precision;
  char *why_not; /* NULL when it ran */
  double ms_median, ms_min, ms_max, tokens_per_s, tflops;
  uint64_t peak_bytes;
  int steps;
} bench_row;

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

/* One timed step (forward, and in training backward and Adam), ended by a
 * synchronisation so that the time is the device's. */
static bool timed_step(tp_cli_session *s, const bench_model_opts *o, bool train, int64_t step,
                       double *ms, GError **err) {
  gint64 t0 = g_get_monotonic_time();
  tp_ctx *ctx = s->ctx;
  tp_ctx_begin_step(ctx);
  tp_ctx_set_training(ctx, train);
  tp_ctx_set_rng(ctx, 1, (uint64_t)step << 40);
  tp_tensor *ids, *mask, *labels;
  synthetic_batch(ctx, &s->model->cfg, o->batch, o->seq, &ids, &mask, &labels);
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
  *ms = (double)(g_get_monotonic_time() - t0) / 1000.0;
  return true;
}

static void run_backend(const bench_model_opts *o, const char *name, bench_row *row,
                        char **desc) {
  row->backend = g_strdup(name);
  tp_cli_run_opts ro = o->o.ro;
  ro.backend = (char *)name;
  tp_cli_session s;
  GError *err = NULL;
  if (!tp_cli_session_open(&s, &o->o.mo, &ro, 1, false, &err)) {
    row->why_not = g_strdup(err->message);
    if (s.be) row->device = g_strdup(s.be->info.name);
    g_clear_error(&err);
    tp_cli_session_close(&s);
    return;
  }
  row->device = g_strdup(s.be->info.name);
  row->precision = g_strdup(tp_dtype_name(tp_ctx_precision(s.ctx)));
  if (!*desc) { /* the model once, without the device of this row */
    *desc = tp_cli_session_describe(&s);
    char *cut = strstr(*desc, "; backend ");
    if (cut) *cut = '\0';
  }
  bool train = strcmp(o->mode, "train") == 0;
  double *ms = g_new(double, o->steps);
  bool ok = true;
  for (int i = 0; ok && i < o->warmup + o->steps; i++) {
    double t = 0;
    ok = timed_step(&s, o, train, i, &t, &err);
    if (ok && i >= o->warmup) ms[i - o->warmup] = t;
  }
  if (ok) {
    qsort(ms, (size_t)o->steps, sizeof *ms, cmp_double);
    row->steps = o->steps;
    row->ms_min = ms[0];
    row->ms_max = ms[o->steps - 1];
    row->ms_median = o->steps % 2 ? ms[o->steps / 2]
                                  : 0.5 * (ms[o->steps / 2 - 1] + ms[o->steps / 2]);
    double tok = (double)o->batch * o->seq;
    row->tokens_per_s = tok / (row->ms_median / 1000.0);
    row->tflops = tp_model_flops(&s.model->cfg, o->batch, o->seq, train) /
                  (row->ms_median / 1000.0) / 1e12;
    row->peak_bytes = s.be->stats.peak_bytes;
  } else {
    row->why_not = g_strdup_printf("failed: %s", err ? err->message : "?");
    g_clear_error(&err);
  }
  g_free(ms);
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
  printf("Model %s\n%s, batch %d x sequence %d, median of %d steps after %d warm-up\n\n", model_desc,
         strcmp(o->mode, "train") == 0 ? "training steps (forward, backward, AdamW)"
                                       : "inference (forward)",
         o->batch, o->seq, o->steps, o->warmup);
  printf("| backend | device | precision | ms/step | min-max ms | tokens/s | TFLOP/s | peak memory |\n");
  printf("|---|---|---|---:|---:|---:|---:|---:|\n");
  for (guint i = 0; i < rows->len; i++) {
    const bench_row *r = &g_array_index(rows, bench_row, i);
    if (r->why_not) {
      printf("| %s | %s | - | - | - | - | - | unavailable: %s |\n", r->backend,
             r->device ? r->device : "-", r->why_not);
      continue;
    }
    char *tok = tp_cli_thousands((int64_t)llround(r->tokens_per_s));
    char *mem = g_format_size_full(r->peak_bytes, G_FORMAT_SIZE_IEC_UNITS);
    printf("| %s | %s | %s | %.1f | %.1f-%.1f | %s | %.3g | %s |\n", r->backend, r->device,
           r->precision, r->ms_median, r->ms_min, r->ms_max, tok, r->tflops, mem);
    g_free(tok);
    g_free(mem);
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

/* Every backend of --backends in turn, then one table (or JSON). Exit 2 when
 * none could run: the request cannot be served here. */
static int run_all(const bench_model_opts *o) {
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
  g_free(desc);
  g_strfreev(names);
  g_array_unref(rows);
  return any ? TP_EXIT_OK : TP_EXIT_USAGE;
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
     .help = "Tokens per sequence", .min = 1, .max = 65536},
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
      "each backend in one run, on a synthetic batch of random tokens without padding.\n"
      "Prints one row per backend: device, precision, median ms/step (and the range),\n"
      "tokens/s, achieved TFLOP/s (the model's nominal FLOPs: every layer in full, the\n"
      "backward counted as twice the forward) and peak device memory. Backends that\n"
      "cannot run here get a row with the reason. (`bench --tokenizer` times the\n"
      "tokenizer instead: `tensorplug bench --tokenizer --help`.)",
      "Example:\n  tensorplug bench --model bert-base-uncased --init random --layers 2 "
      "--hidden 128 --heads 2 --ffn 512 \\\n      --backends all --mode train --batch 8 "
      "--seq 128 --steps 3\n");
  tp_cli_optset_add(set, "Options", bench_model_rows, G_N_ELEMENTS(bench_model_rows), &o);
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
  tp_cli_opts_clear(&o.o);
  g_free(o.backends);
  g_free(o.mode);
  (void)err;
  return rc;
}
