/* cli/cli_options.c — option tables, parsing, the one validation, help. */
#include "cli_options.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tensorplug/error.h"

typedef struct chunk {
  const tp_cli_opt *rows;
  size_t n;
  void *base;
  const char *section;
} chunk;

struct tp_cli_optset {
  char *params, *summary, *description;
  GPtrArray *chunks;   /* chunk *, owned */
  GPtrArray *sections; /* char *, owned, in first-use order */
  GHashTable *given;   /* row name -> the value as typed (owned) */
  GPtrArray *owned;    /* rows built at run time */
};

tp_cli_optset *tp_cli_optset_new(const char *params, const char *summary, const char *description) {
  tp_cli_optset *s = g_new0(tp_cli_optset, 1);
  s->params = g_strdup(params);
  s->summary = g_strdup(summary);
  s->description = g_strdup(description);
  s->chunks = g_ptr_array_new_with_free_func(g_free);
  s->sections = g_ptr_array_new_with_free_func(g_free);
  s->given = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
  s->owned = g_ptr_array_new_with_free_func(g_free);
  return s;
}

void tp_cli_optset_free(tp_cli_optset *s) {
  if (!s) return;
  g_free(s->params);
  g_free(s->summary);
  g_free(s->description);
  g_ptr_array_unref(s->chunks);
  g_ptr_array_unref(s->sections);
  g_hash_table_unref(s->given);
  g_ptr_array_unref(s->owned);
  g_free(s);
}

static const tp_cli_opt *find_row(const tp_cli_optset *s, const char *name, const chunk **where) {
  for (guint i = 0; i < s->chunks->len; i++) {
    const chunk *c = g_ptr_array_index(s->chunks, i);
    for (size_t j = 0; j < c->n; j++)
      if (strcmp(c->rows[j].name, name) == 0) {
        if (where) *where = c;
        return &c->rows[j];
      }
  }
  return NULL;
}

const tp_cli_opt *tp_cli_optset_find(const tp_cli_optset *s, const char *name) {
  return find_row(s, name, NULL);
}

bool tp_cli_optset_given(const tp_cli_optset *s, const char *name) {
  return g_hash_table_contains(s->given, name);
}

void tp_cli_optset_add(tp_cli_optset *s, const char *section, const tp_cli_opt *rows, size_t n,
                       void *base) {
  for (size_t j = 0; j < n; j++)
    if (find_row(s, rows[j].name, NULL)) g_critical("option --%s declared twice", rows[j].name);
  const char *sec = NULL;
  for (guint i = 0; i < s->sections->len && !sec; i++)
    if (strcmp(g_ptr_array_index(s->sections, i), section) == 0) sec = g_ptr_array_index(s->sections, i);
  if (!sec) {
    sec = g_strdup(section);
    g_ptr_array_add(s->sections, (char *)sec);
  }
  chunk *c = g_new0(chunk, 1);
  *c = (chunk){.rows = rows, .n = n, .base = base, .section = sec};
  g_ptr_array_add(s->chunks, c);
}

static void *value_ptr(const chunk *c, const tp_cli_opt *r) { return (char *)c->base + r->offset; }

/* ---- parsing: every row is a GOption callback that stores strictly parsed values ---- */

static gboolean bad_value(GError **err, const char *name, const char *value, const char *what) {
  g_set_error(err, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "--%s %s: %s", name, value, what);
  return FALSE;
}

static gboolean on_option(const char *option_name, const char *value, gpointer data, GError **err) {
  tp_cli_optset *s = data;
  const char *name = option_name + (option_name[1] == '-' ? 2 : 1);
  const chunk *c = NULL;
  const tp_cli_opt *r = find_row(s, name, &c);
  if (!r) return bad_value(err, name, value ? value : "", "unknown option");
  void *p = value_ptr(c, r);
  switch (r->kind) {
  case TP_OPT_INT:
  case TP_OPT_INT64: {
    gint64 v = 0;
    gint64 lo = r->kind == TP_OPT_INT ? G_MININT : G_MININT64;
    gint64 hi = r->kind == TP_OPT_INT ? G_MAXINT : G_MAXINT64;
    if (!g_ascii_string_to_signed(value, 10, lo, hi, &v, NULL))
      return bad_value(err, name, value, "not a whole number in range");
    if (r->kind == TP_OPT_INT) *(int *)p = (int)v;
    else *(gint64 *)p = v;
    break;
  }
  case TP_OPT_DOUBLE: {
    char *end = NULL;
    double v = g_ascii_strtod(value, &end);
    if (!*value || end == value || *end) return bad_value(err, name, value, "not a number");
    *(double *)p = v; /* non-finite values are refused by the validation */
    break;
  }
  case TP_OPT_STRING:
  case TP_OPT_PATH:
    g_free(*(char **)p);
    *(char **)p = g_strdup(value);
    break;
  case TP_OPT_PATHS:
  case TP_OPT_STRINGS: {
    char ***arr = p;
    guint n = *arr ? g_strv_length(*arr) : 0;
    *arr = g_renew(char *, *arr, n + 2);
    (*arr)[n] = g_strdup(value);
    (*arr)[n + 1] = NULL;
    break;
  }
  case TP_OPT_FLAG:
    *(gboolean *)p = TRUE;
    break;
  }
  g_hash_table_insert(s->given, (gpointer)r->name, g_strdup(value ? value : ""));
  return TRUE;
}

static bool wants_help(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) return false;
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h") || !strcmp(argv[i], "-?")) return true;
  }
  return false;
}

bool tp_cli_optset_parse_quiet(tp_cli_optset *s, int *argc, char ***argv, bool *help, GError **err) {
  *help = wants_help(*argc, *argv);
  if (*help) return true;
  GArray *entries = g_array_new(TRUE, TRUE, sizeof(GOptionEntry));
  for (guint i = 0; i < s->chunks->len; i++) {
    const chunk *c = g_ptr_array_index(s->chunks, i);
    for (size_t j = 0; j < c->n; j++) {
      const tp_cli_opt *r = &c->rows[j];
      GOptionEntry e = {.long_name = r->name, .arg = G_OPTION_ARG_CALLBACK,
                        .arg_data = (gpointer)on_option, .description = r->help,
                        .arg_description = r->arg};
      if (r->kind == TP_OPT_FLAG) e.flags |= G_OPTION_FLAG_NO_ARG;
      if (r->kind == TP_OPT_PATH || r->kind == TP_OPT_PATHS) e.flags |= G_OPTION_FLAG_FILENAME;
      g_array_append_val(entries, e);
    }
  }
  GOptionContext *oc = g_option_context_new(NULL);
  g_option_context_set_help_enabled(oc, FALSE); /* --help is ours: tp_cli_optset_help */
  GOptionGroup *g = g_option_group_new("main", "Options", "Options", s, NULL);
  g_option_group_add_entries(g, (const GOptionEntry *)entries->data);
  g_option_context_set_main_group(oc, g);
  bool ok = g_option_context_parse(oc, argc, argv, err);
  g_option_context_free(oc);
  g_array_unref(entries);
  return ok && tp_cli_optset_check(s, err);
}

int tp_cli_optset_parse(tp_cli_optset *s, int *argc, char ***argv) {
  GError *err = NULL;
  bool help = false;
  if (!tp_cli_optset_parse_quiet(s, argc, argv, &help, &err)) {
    fprintf(stderr, "tensorplug: error: %s\nRun `%s --help` for the options.\n", err->message,
            g_get_prgname());
    g_error_free(err);
    return 2;
  }
  if (help) {
    char *h = tp_cli_optset_help(s);
    fputs(h, stdout);
    g_free(h);
    return 0;
  }
  return -1;
}

/* ---- the one validation ---- */

static double number_of(const chunk *c, const tp_cli_opt *r) {
  const void *p = value_ptr(c, r);
  switch (r->kind) {
  case TP_OPT_INT: return *(const int *)p;
  case TP_OPT_INT64: return (double)*(const gint64 *)p;
  default: return *(const double *)p;
  }
}

/* "use 3 to 65536", "use a finite number in (0, 1]" */
static char *range_text(const tp_cli_opt *r) {
  if (r->kind == TP_OPT_DOUBLE)
    return g_strdup_printf("use a finite number in %c%g, %g%c", r->flags & TP_OPT_MIN_OPEN ? '(' : '[',
                           r->min, r->max, r->flags & TP_OPT_MAX_OPEN ? ')' : ']');
  return g_strdup_printf("use %.0f to %.0f", r->min, r->max);
}

/* "a, b or c" from "a|b|c" */
static char *choices_text(const char *choices) {
  char **v = g_strsplit(choices, "|", -1);
  guint n = g_strv_length(v);
  GString *s = g_string_new(NULL);
  for (guint i = 0; i < n; i++) {
    if (i) g_string_append(s, i + 1 == n ? " or " : ", ");
    g_string_append(s, v[i]);
  }
  g_strfreev(v);
  return g_string_free(s, FALSE);
}

static bool in_choices(const char *choices, const char *v) {
  char **c = g_strsplit(choices, "|", -1);
  bool ok = g_strv_contains((const char *const *)c, v);
  g_strfreev(c);
  return ok;
}

static bool check_row(const tp_cli_optset *s, const chunk *c, const tp_cli_opt *r, GError **err) {
  if (r->kind == TP_OPT_STRING || r->kind == TP_OPT_PATH) {
    const char *v = *(char *const *)value_ptr(c, r);
    if (!v || !r->choices || in_choices(r->choices, v)) return true;
    char *t = choices_text(r->choices);
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "--%s %s: use %s", r->name, v, t);
    g_free(t);
    return false;
  }
  if (r->kind != TP_OPT_INT && r->kind != TP_OPT_INT64 && r->kind != TP_OPT_DOUBLE) return true;
  double v = number_of(c, r);
  if ((r->flags & TP_OPT_AUTO) && v == r->auto_value && !tp_cli_optset_given(s, r->name)) return true;
  bool lo = r->flags & TP_OPT_MIN_OPEN ? v > r->min : v >= r->min;
  bool hi = r->flags & TP_OPT_MAX_OPEN ? v < r->max : v <= r->max;
  if (isfinite(v) && lo && hi) return true;
  char *t = range_text(r);
  char num[64];
  const char *typed = g_hash_table_lookup(s->given, r->name);
  if (typed) g_snprintf(num, sizeof num, "%s", typed); /* as the user wrote it */
  else if (r->kind == TP_OPT_DOUBLE) g_snprintf(num, sizeof num, "%g", v);
  else g_snprintf(num, sizeof num, "%.0f", v);
  char *aut = (r->flags & TP_OPT_AUTO) && r->shown_def
                  ? g_strdup_printf(" (or leave it out: %s)", r->shown_def) : g_strdup("");
  g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "--%s %s: %s%s", r->name, num, t, aut);
  g_free(aut);
  g_free(t);
  return false;
}

bool tp_cli_optset_check(const tp_cli_optset *s, GError **err) {
  for (guint i = 0; i < s->chunks->len; i++) {
    const chunk *c = g_ptr_array_index(s->chunks, i);
    for (size_t j = 0; j < c->n; j++)
      if (!check_row(s, c, &c->rows[j], err)) return false;
  }
  return true;
}

/* ---- help: one style for every command ---- */

#define HELP_COL 26
#define HELP_WIDTH 100

/* Appends text wrapped at HELP_WIDTH, continuation lines indented to col. */
static void append_wrapped(GString *out, const char *text, size_t col, size_t at) {
  char **words = g_strsplit(text, " ", -1);
  for (char **w = words; *w; w++) {
    if (!**w) continue;
    size_t len = g_utf8_strlen(*w, -1);
    if (at > col && at + 1 + len > HELP_WIDTH) {
      g_string_append_c(out, '\n');
      for (size_t k = 0; k < col; k++) g_string_append_c(out, ' ');
      at = col;
    } else if (at > col) {
      g_string_append_c(out, ' ');
      at++;
    }
    g_string_append(out, *w);
    at += len;
  }
  g_strfreev(words);
}

static char *default_text(const chunk *c, const tp_cli_opt *r) {
  if (r->shown_def) return *r->shown_def ? g_strdup(r->shown_def) : NULL;
  const void *p = value_ptr(c, r);
  switch (r->kind) {
  case TP_OPT_INT: return g_strdup_printf("%d", *(const int *)p);
  case TP_OPT_INT64: return g_strdup_printf("%" G_GINT64_FORMAT, *(const gint64 *)p);
  case TP_OPT_DOUBLE: return g_strdup_printf("%g", *(const double *)p);
  case TP_OPT_STRING:
  case TP_OPT_PATH: return g_strdup(*(char *const *)p);
  default: return NULL;
  }
}

char *tp_cli_optset_help(const tp_cli_optset *s) {
  GString *h = g_string_new(NULL);
  g_string_append_printf(h, "Usage:\n  %s [OPTION...]%s%s\n", g_get_prgname(), s->params ? " " : "",
                         s->params ? s->params : "");
  if (s->summary) g_string_append_printf(h, "\n%s\n", s->summary);
  for (guint k = 0; k < s->sections->len; k++) {
    const char *sec = g_ptr_array_index(s->sections, k);
    g_string_append_printf(h, "\n%s:\n", sec);
    if (k == 0) g_string_append(h, "  -h, --help              Show this help\n");
    for (guint i = 0; i < s->chunks->len; i++) {
      const chunk *c = g_ptr_array_index(s->chunks, i);
      if (c->section != sec) continue;
      for (size_t j = 0; j < c->n; j++) {
        const tp_cli_opt *r = &c->rows[j];
        if (r->flags & TP_OPT_HIDDEN) continue;
        char *lhs = r->arg ? g_strdup_printf("  --%s=%s", r->name, r->arg)
                           : g_strdup_printf("  --%s", r->name);
        g_string_append(h, lhs);
        size_t at = strlen(lhs);
        if (at + 2 > HELP_COL) {
          g_string_append_c(h, '\n');
          at = 0;
        }
        for (; at < HELP_COL; at++) g_string_append_c(h, ' ');
        char *def = default_text(c, r);
        char *text = def ? g_strdup_printf("%s [%s]", r->help, def) : g_strdup(r->help);
        append_wrapped(h, text, HELP_COL, HELP_COL);
        g_string_append_c(h, '\n');
        g_free(text);
        g_free(def);
        g_free(lhs);
      }
    }
  }
  if (s->description) g_string_append_printf(h, "\n%s\n", s->description);
  return g_string_free(h, FALSE);
}

/* ---- the shared groups ---- */

void tp_cli_opts_init(tp_cli_opts *o) {
  memset(o, 0, sizeof *o);
  o->ro.device = -1;
  o->max_len = 0; /* the model's positions, at most 512 (tp_cli_check_max_len) */
  o->eval_batch = 64;
}

void tp_cli_opts_clear(tp_cli_opts *o) {
  g_free(o->mo.model);
  g_free(o->mo.weights);
  g_free(o->mo.init);
  g_free(o->mo.vocab);
  g_free(o->ro.backend);
  g_free(o->ro.precision);
  g_strfreev(o->data);
  memset(o, 0, sizeof *o);
}

#define OFF(f) offsetof(tp_cli_opts, f)
#define SIZE(name_, field, what, max_)                                                         \
  {.name = name_, .kind = TP_OPT_INT, .offset = OFF(mo.field), .arg = "N",                     \
   .help = "Override the " what, .min = 1, .max = max_, .flags = TP_OPT_AUTO,                  \
   .auto_value = 0, .shown_def = "from the model"}

static const tp_cli_opt model_rows[] = {
    {.name = "model", .kind = TP_OPT_STRING, .offset = OFF(mo.model), .arg = "NAME|DIR",
     .help = "Preset (distilbert-base-uncased, distil_bert_base_en_uncased, bert-base-uncased, "
             "bert_base_en_uncased) or a model folder (config.json + model.safetensors)"},
    {.name = "weights", .kind = TP_OPT_PATH, .offset = OFF(mo.weights), .arg = "DIR",
     .help = "Load weights from DIR/model.safetensors (a Hugging Face model folder)"},
    {.name = "init", .kind = TP_OPT_STRING, .offset = OFF(mo.init), .arg = "random",
     .help = "\"random\": initialise every weight randomly instead of loading any",
     .choices = "random"},
    {.name = "vocab", .kind = TP_OPT_PATH, .offset = OFF(mo.vocab), .arg = "FILE",
     .help = "vocab.txt or tokenizer.json",
     .shown_def = "the model folder's tokenizer.json, else its vocab.txt"},
    SIZE("layers", layers, "number of layers", 4096),
    SIZE("hidden", hidden, "hidden size", 1 << 16),
    SIZE("heads", heads, "number of attention heads", 4096),
    SIZE("ffn", ffn, "feed-forward size", 1 << 20),
    SIZE("max-positions", max_positions, "number of position embeddings", 1 << 20),
};

static const tp_cli_opt vocab_rows[] = {
    {.name = "vocab", .kind = TP_OPT_PATH, .offset = OFF(mo.vocab), .arg = "FILE",
     .help = "Vocabulary: a vocab.txt or tokenizer.json"},
    {.name = "model", .kind = TP_OPT_PATH, .offset = OFF(mo.model), .arg = "DIR",
     .help = "Model folder holding tokenizer.json (preferred) or vocab.txt"},
};

#define THREADS_ROW                                                                            \
  {.name = "threads", .kind = TP_OPT_INT, .offset = OFF(ro.threads), .arg = "N",               \
   .help = "Worker threads", .min = 1, .max = 4096, .flags = TP_OPT_AUTO, .auto_value = 0,     \
   .shown_def = "$TENSORPLUG_NUM_THREADS, else all cores"}

static const tp_cli_opt device_rows[] = {
    {.name = "backend", .kind = TP_OPT_STRING, .offset = OFF(ro.backend), .arg = "NAME",
     .help = "auto (CUDA, else a Vulkan GPU, else CPU), cpu, cuda, vulkan or an out-of-tree "
             "backend",
     .shown_def = "auto"},
    {.name = "device", .kind = TP_OPT_INT, .offset = OFF(ro.device), .arg = "N",
     .help = "Device index within the backend", .min = 0, .max = 255, .flags = TP_OPT_AUTO,
     .auto_value = -1, .shown_def = "the first suitable"},
    THREADS_ROW,
    {.name = "precision", .kind = TP_OPT_STRING, .offset = OFF(ro.precision), .arg = "P",
     .help = "Compute type of matrix products (f32 master weights and optimizer state; f16 "
             "adds dynamic loss scaling; i8: products with weights in dynamic int8, inference "
             "only, CPU with VNNI)",
     .choices = "auto|f32|bf16|f16|i8", .shown_def = "auto: the device's fastest: bf16 on CUDA and on CPUs whose bf16 arithmetic "
                  "outruns f32 (AMX), else f32"},
};

static const tp_cli_opt threads_rows[] = {THREADS_ROW};

static const tp_cli_opt data_rows[] = {
    {.name = "data", .kind = TP_OPT_PATHS, .offset = OFF(data), .arg = "PATH",
     .help = "Dataset: an aclImdb folder, a folder of .jsonl[.gz], or .jsonl[.gz]/.csv/.tsv "
             "files (repeatable)"},
    {.name = "skip-bad", .kind = TP_OPT_FLAG, .offset = OFF(skip_bad),
     .help = "Skip malformed records (and count them)"},
};

static const tp_cli_opt text_rows[] = {
    {.name = "max-len", .kind = TP_OPT_INT, .offset = OFF(max_len), .arg = "N",
     .help = "Truncate texts to N tokens, [CLS] and [SEP] included", .min = 3, .max = 1 << 16,
     .flags = TP_OPT_AUTO, .auto_value = 0, .shown_def = "the model's positions, at most 512"},
    {.name = "eval-batch", .kind = TP_OPT_INT, .offset = OFF(eval_batch), .arg = "N",
     .help = "Evaluation batch size", .min = 1, .max = 1 << 16},
};

void tp_cli_optset_add_model(tp_cli_optset *s, tp_cli_opts *o) {
  tp_cli_optset_add(s, "Model options", model_rows, G_N_ELEMENTS(model_rows), o);
}
void tp_cli_optset_add_vocab(tp_cli_optset *s, tp_cli_opts *o) {
  tp_cli_optset_add(s, "Options", vocab_rows, G_N_ELEMENTS(vocab_rows), o);
}
void tp_cli_optset_add_device(tp_cli_optset *s, tp_cli_opts *o) {
  tp_cli_optset_add(s, "Device options", device_rows, G_N_ELEMENTS(device_rows), o);
}
void tp_cli_optset_add_threads(tp_cli_optset *s, tp_cli_opts *o) {
  tp_cli_optset_add(s, "Options", threads_rows, G_N_ELEMENTS(threads_rows), o);
}
void tp_cli_optset_add_data(tp_cli_optset *s, tp_cli_opts *o) {
  tp_cli_optset_add(s, "Options", data_rows, G_N_ELEMENTS(data_rows), o);
}
void tp_cli_optset_add_text(tp_cli_optset *s, tp_cli_opts *o) {
  tp_cli_optset_add(s, "Options", text_rows, G_N_ELEMENTS(text_rows), o);
}

void tp_cli_optset_add_json(tp_cli_optset *s, tp_cli_opts *o, const char *help) {
  /* the help differs per command, so the row is built here and kept with the set */
  tp_cli_opt *row = g_new0(tp_cli_opt, 1);
  *row = (tp_cli_opt){.name = "json", .kind = TP_OPT_FLAG, .offset = OFF(json), .help = help};
  g_ptr_array_add(s->owned, row);
  tp_cli_optset_add(s, "Options", row, 1, o);
}
