/* cli/cmd_bench.c — `tensorplug bench`: speed measurements. One function per
 * benchmark mode (bench_tokenizer, ...); tp_cmd_bench parses the shared
 * options and dispatches. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tensorplug/backend.h"
#include "tensorplug/dataset.h"
#include "tensorplug/error.h"
#include "tensorplug/tokenizer.h"

#define HF_SCRIPT "bench_tokenizer_hf.py"

typedef struct bench_opts {
  tp_cli_opts o; /* vocab, model folder, data, threads */
  gboolean tokenizer; /* mode: tokenizer throughput */
  int runs;
  gboolean vs_hf;
  char *hf_script;
} bench_opts;

typedef struct bench_result {
  int64_t items, tokens;
  double seconds; /* best run */
} bench_result;

/* ---------------------------------------------------------------------- */
/* --tokenizer                                                              */

/* The best of `runs` encode_batch passes over every text (untruncated). */
static bench_result time_tokenizer(const tp_tokenizer *tok, const tp_dataset *d, int threads,
                                   int runs) {
  bench_result r = {.items = d->n, .seconds = -1};
  for (int i = 0; i < runs; i++) {
    gint64 t0 = g_get_monotonic_time();
    tp_token_seqs *s =
        tp_tokenizer_encode_batch(tok, (const char *const *)d->texts, d->n, 0, threads);
    double sec = (double)(g_get_monotonic_time() - t0) / 1e6;
    r.tokens = s->offsets[s->n];
    tp_token_seqs_free(s);
    if (r.seconds < 0 || sec < r.seconds) r.seconds = sec;
  }
  return r;
}

/* benchmarks/bench_tokenizer_hf.py: --hf-script, $TENSORPLUG_BENCH_DIR, or a
 * benchmarks/ folder above the executable (the build tree sits in the
 * checkout) or in the current folder. */
static char *find_hf_script(const bench_opts *o) {
  if (o->hf_script) return g_strdup(o->hf_script);
  const char *env = g_getenv("TENSORPLUG_BENCH_DIR");
  if (env) return g_build_filename(env, HF_SCRIPT, NULL);
  char *exe = g_file_read_link("/proc/self/exe", NULL);
  char *dir = exe ? g_path_get_dirname(exe) : g_get_current_dir();
  g_free(exe);
  for (int up = 0; up < 5; up++) {
    char *p = g_build_filename(dir, "benchmarks", HF_SCRIPT, NULL);
    if (g_file_test(p, G_FILE_TEST_IS_REGULAR)) {
      g_free(dir);
      return p;
    }
    g_free(p);
    char *parent = g_path_get_dirname(dir);
    g_free(dir);
    dir = parent;
  }
  g_free(dir);
  return g_build_filename("benchmarks", HF_SCRIPT, NULL);
}

/* Reads "key=value" from the script's result line. */
static bool parse_field(const char *line, const char *key, double *out) {
  char *pat = g_strdup_printf(" %s=", key);
  const char *p = strstr(line, pat);
  bool ok = false;
  if (p) {
    char *end;
    *out = g_ascii_strtod(p + strlen(pat), &end);
    ok = end != p + strlen(pat);
  }
  g_free(pat);
  return ok;
}

/* Runs the Hugging Face script on the same data and threads; its stderr
 * (virtualenv setup, pip) passes through to ours. */
static bool run_hf(const bench_opts *o, const char *vocab, bench_result *r, bench_result *fast,
                   GError **err) {
  fast->seconds = -1;
  char *script = find_hf_script(o);
  const char *python = g_getenv("PYTHON") ? g_getenv("PYTHON") : "python3";
  GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(argv, g_strdup(python));
  g_ptr_array_add(argv, g_strdup(script));
  g_ptr_array_add(argv, g_strdup("--tokenizer"));
  g_ptr_array_add(argv, g_strdup(vocab));
  for (char **p = o->o.data; *p; p++) {
    g_ptr_array_add(argv, g_strdup("--data"));
    g_ptr_array_add(argv, g_strdup(*p));
  }
  g_ptr_array_add(argv, g_strdup("--threads"));
  g_ptr_array_add(argv, g_strdup_printf("%d", o->o.ro.threads));
  g_ptr_array_add(argv, g_strdup("--runs"));
  g_ptr_array_add(argv, g_strdup_printf("%d", o->runs));
  g_ptr_array_add(argv, NULL);
  char *out = NULL;
  int status = 0;
  GError *serr = NULL;
  bool ok = g_spawn_sync(NULL, (char **)argv->pdata, NULL,
                         G_SPAWN_SEARCH_PATH | G_SPAWN_CHILD_INHERITS_STDIN,
                         NULL, NULL, &out, NULL, &status, &serr);
  if (!ok) {
    g_set_error(err, TP_ERROR, TP_ERROR_UNAVAILABLE, "cannot run %s %s: %s", python, script,
                serr->message);
    g_error_free(serr);
  } else if (!g_spawn_check_wait_status(status, NULL)) {
    g_set_error(err, TP_ERROR, TP_ERROR_UNAVAILABLE,
                "%s failed (see its messages above); it needs python3 with venv and PyPI "
                "access to install `tokenizers` into .venv-bench",
                script);
    ok = false;
  } else {
    const char *line = out ? strstr(out, "hf_tokenizers:") : NULL;
    double items = 0, tokens = 0, sec = 0;
    ok = line && parse_field(line, "reviews", &items) && parse_field(line, "tokens", &tokens) &&
         parse_field(line, "seconds", &sec) && sec > 0;
    if (ok) *r = (bench_result){(int64_t)items, (int64_t)tokens, sec};
    /* encode_batch_fast (no offsets), where the installed tokenizers has it */
    const char *fl = ok && out ? strstr(out, "hf_tokenizers_fast:") : NULL;
    fast->seconds = -1;
    if (fl && parse_field(fl, "reviews", &items) && parse_field(fl, "tokens", &tokens) &&
        parse_field(fl, "seconds", &sec) && sec > 0)
      *fast = (bench_result){(int64_t)items, (int64_t)tokens, sec};
    if (!ok)
      g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s printed no result line: %s", script,
                  out ? out : "");
  }
  g_free(out);
  g_ptr_array_unref(argv);
  g_free(script);
  return ok;
}

static void print_result(const char *name, const bench_result *r) {
  printf("%s: reviews=%" G_GINT64_FORMAT " tokens=%" G_GINT64_FORMAT
         " seconds=%.4f tokens_per_s=%.0f\n",
         name, r->items, r->tokens, r->seconds, (double)r->tokens / r->seconds);
}

static int bench_tokenizer(const bench_opts *o) {
  GError *err = NULL;
  tp_tokenizer *tok = NULL;
  tp_dataset *d = NULL;
  char *vocab = NULL;
  if (!o->o.data || !o->o.data[0])
    g_set_error(&err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                "bench --tokenizer needs --data PATH (e.g. the IMDB folder)");
  if (!err) vocab = tp_cli_resolve_vocab(o->o.mo.vocab, o->o.mo.model, &err);
  if (!err) tok = tp_tokenizer_load(vocab, &err);
  gint64 t0 = g_get_monotonic_time();
  if (!err) d = tp_dataset_load((const char *const *)o->o.data, o->o.skip_bad, &err);
  if (err) goto out;
  double load_s = (double)(g_get_monotonic_time() - t0) / 1e6;
  int threads = o->o.ro.threads > 0 ? o->o.ro.threads : (int)g_get_num_processors();
  printf("tokenizer: %s\ndata: %u texts (loaded in %.2f s, not timed below)\n"
         "threads: %d, best of %d runs of encode_batch, untruncated\n",
         vocab, d->n, load_s, threads, o->runs);
  bench_result ours = time_tokenizer(tok, d, o->o.ro.threads, o->runs);
  print_result("tensorplug", &ours);
  fflush(stdout);
  if (o->vs_hf) {
    bench_result hf = {0}, fast = {.seconds = -1};
    if (!run_hf(o, vocab, &hf, &fast, &err)) goto out;
    print_result("hf_tokenizers", &hf);
    if (fast.seconds > 0) print_result("hf_tokenizers_fast", &fast);
    if (hf.tokens != ours.tokens || hf.items != ours.items)
      printf("warning: HF counted %" G_GINT64_FORMAT " texts / %" G_GINT64_FORMAT
             " tokens, tensorplug %" G_GINT64_FORMAT " / %" G_GINT64_FORMAT "\n",
             hf.items, hf.tokens, ours.items, ours.tokens);
    double ratio = ((double)ours.tokens / ours.seconds) / ((double)hf.tokens / hf.seconds);
    printf("tensorplug %.2f M tokens/s, HF tokenizers %.2f M tokens/s\n",
           (double)ours.tokens / ours.seconds / 1e6, (double)hf.tokens / hf.seconds / 1e6);
    printf("tensorplug/HF = %.2fx\n", ratio);
    if (fast.seconds > 0)
      printf("tensorplug/HF encode_batch_fast (no offsets) = %.2fx\n",
             ((double)ours.tokens / ours.seconds) / ((double)fast.tokens / fast.seconds));
  }
out:
  tp_dataset_free(d);
  tp_tokenizer_free(tok);
  g_free(vocab);
  return err ? tp_cli_report(err) : TP_EXIT_OK;
}

/* ---------------------------------------------------------------------- */

#define OFF(f) offsetof(bench_opts, f)
static const tp_cli_opt bench_rows[] = {
    {.name = "tokenizer", .kind = TP_OPT_FLAG, .offset = OFF(tokenizer),
     .help = "Benchmark the WordPiece tokenizer over a dataset"},
    {.name = "runs", .kind = TP_OPT_INT, .offset = OFF(runs), .arg = "N",
     .help = "Timed runs; the best is reported", .min = 1, .max = 1000},
    {.name = "vs-hf", .kind = TP_OPT_FLAG, .offset = OFF(vs_hf),
     .help = "Also run Hugging Face tokenizers on the same data (benchmarks/" HF_SCRIPT
             ", which sets up .venv-bench) and print the ratio"},
    {.name = "hf-script", .kind = TP_OPT_PATH, .offset = OFF(hf_script), .arg = "FILE",
     .help = "Path of " HF_SCRIPT, .shown_def = "found from the executable"},
};
#undef OFF

int tp_cmd_bench(int argc, char **argv) {
  bool tokenizer = false;
  for (int i = 1; i < argc; i++) tokenizer = tokenizer || strcmp(argv[i], "--tokenizer") == 0;
  if (!tokenizer) return tp_cmd_bench_model(argc, argv); /* cli/cmd_bench_model.c */
  bench_opts o = {.runs = 3};
  tp_cli_opts_init(&o.o);
  tp_cli_optset *set = tp_cli_optset_new(NULL,
      "Measures throughput. Modes:\n"
      "  --tokenizer  encode every text of --data with encode_batch (best of --runs,\n"
      "               loading excluded); prints texts, tokens, seconds and tokens/s.\n"
      "               With --vs-hf, Hugging Face tokenizers does the same in the same\n"
      "               run and the ratio tensorplug/HF is printed.",
      "Example:\n  tensorplug bench --tokenizer --vocab vocab.txt --data ../shared/data/imdb "
      "--vs-hf\n\nThe machine's other load changes the numbers: compare runs made together.");
  tp_cli_optset_add(set, "Options", bench_rows, 1, &o);
  tp_cli_optset_add_vocab(set, &o.o);
  tp_cli_optset_add_data(set, &o.o);
  tp_cli_optset_add_threads(set, &o.o);
  tp_cli_optset_add(set, "Options", bench_rows + 1, G_N_ELEMENTS(bench_rows) - 1, &o);
  int rc = tp_cli_optset_parse(set, &argc, &argv);
  tp_cli_optset_free(set);
  if (rc < 0 && argc > 1) {
    fprintf(stderr, "tensorplug: error: unexpected argument \"%s\"\n", argv[1]);
    rc = TP_EXIT_USAGE;
  } else if (rc < 0) {
    if (!o.o.ro.threads) o.o.ro.threads = tp_default_threads(); /* $TENSORPLUG_NUM_THREADS */
    if (o.tokenizer)
      rc = bench_tokenizer(&o);
    else
      rc = tp_cli_report(g_error_new(TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                                     "choose what to benchmark: --tokenizer"));
  }
  tp_cli_opts_clear(&o.o);
  g_free(o.hf_script);
  return rc;
}
