/* cli/cli_options.h — every command's options, declared once.
 *
 * An option is a row of a table (tp_cli_opt): its name, kind, where its value
 * lives (an offset into a struct), its accepted range or choices and its help.
 * Commands compose their option set from the shared groups below (model,
 * device, data, text, output) plus tables of their own, then parse argv with
 * tp_cli_optset_parse, which also runs the one validation (tp_cli_optset_check)
 * that every value passes — typed on the command line, read from a sweep spec
 * or restored from a checkpoint alike. The help of every command is printed by
 * the same code: sections, "--name=ARG  text [default]". */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <glib.h>

typedef enum {
  TP_OPT_INT,    /* int */
  TP_OPT_INT64,  /* gint64 */
  TP_OPT_DOUBLE, /* double: must be finite */
  TP_OPT_STRING, /* char * (g_free'd) */
  TP_OPT_PATH,   /* char *, a file name */
  TP_OPT_PATHS,  /* char ** (g_strfreev'd), repeatable */
  TP_OPT_STRINGS, /* char ** (g_strfreev'd), repeatable */
  TP_OPT_FLAG,   /* gboolean, no argument */
} tp_cli_opt_kind;

enum {
  TP_OPT_MIN_OPEN = 1 << 0, /* the value must be > min (else >= min) */
  TP_OPT_MAX_OPEN = 1 << 1, /* the value must be < max (else <= max) */
  TP_OPT_AUTO = 1 << 2,     /* auto_value, when not given, means "automatic" and is not checked */
  TP_OPT_HIDDEN = 1 << 3,   /* parsed but not shown in --help */
};

typedef struct tp_cli_opt {
  const char *name; /* long name without "--": "max-len" */
  tp_cli_opt_kind kind;
  size_t offset;    /* of the value in the struct passed to tp_cli_optset_add */
  const char *arg;  /* argument placeholder in the help: "N", "DIR" */
  const char *help; /* one sentence; the default is appended */
  double min, max;  /* numbers: accepted range (see the flags) */
  unsigned flags;
  double auto_value;     /* with TP_OPT_AUTO */
  const char *choices;   /* strings: accepted values, "adam|adamw"; NULL = any */
  const char *shown_def; /* default as shown in the help; NULL = the initial value */
} tp_cli_opt;

typedef struct tp_cli_optset tp_cli_optset;

/* params: what follows the options in the usage line ("SPEC", "[TEXT...]");
 * summary/description: text before/after the options. */
tp_cli_optset *tp_cli_optset_new(const char *params, const char *summary, const char *description);
void tp_cli_optset_free(tp_cli_optset *s);
/* Adds rows of a table to a section of the help ("Options", "Model options",
 * ...); values live at base + row.offset. Sections keep their first-use order. */
void tp_cli_optset_add(tp_cli_optset *s, const char *section, const tp_cli_opt *rows, size_t n,
                       void *base);

/* Parses (consuming options from argv) and validates. Returns -1 when the
 * command should go on, else its exit status: 0 after printing --help, 2
 * after a usage error (printed with a hint). */
int tp_cli_optset_parse(tp_cli_optset *s, int *argc, char ***argv);
/* Parses without printing: the same as above, with the error returned. */
bool tp_cli_optset_parse_quiet(tp_cli_optset *s, int *argc, char ***argv, bool *help,
                               GError **err);
/* The one validation: every number finite and in its range, every string
 * one of its choices. TP_ERROR_INVALID_ARGUMENT naming the option. */
bool tp_cli_optset_check(const tp_cli_optset *s, GError **err);
/* Whether the option was given on the command line. */
bool tp_cli_optset_given(const tp_cli_optset *s, const char *name);
/* The row of an option ("max-len"), or NULL. */
const tp_cli_opt *tp_cli_optset_find(const tp_cli_optset *s, const char *name);
/* The help text (what --help prints). */
char *tp_cli_optset_help(const tp_cli_optset *s);

/* ---- the options several commands share ---- */

typedef struct tp_cli_model_opts {
  char *model, *weights, *init, *vocab;
  int layers, hidden, heads, ffn, max_positions;
} tp_cli_model_opts;

typedef struct tp_cli_run_opts {
  char *backend, *precision;
  int device, threads; /* -1: first suitable device; 0: $TENSORPLUG_NUM_THREADS, else all cores */
} tp_cli_run_opts;

typedef struct tp_cli_opts {
  tp_cli_model_opts mo;
  tp_cli_run_opts ro;
  char **data;
  gboolean skip_bad;
  int max_len, eval_batch;
  gboolean json;
} tp_cli_opts;

/* Defaults: device -1 (auto), threads 0 (auto), max_len 0 (the model's
 * positions, at most 512: tp_cli_check_max_len), eval_batch 64. */
void tp_cli_opts_init(tp_cli_opts *o);
void tp_cli_opts_clear(tp_cli_opts *o);

/* Section "Model options": --model --weights --init --vocab --layers --hidden
 * --heads --ffn --max-positions. */
void tp_cli_optset_add_model(tp_cli_optset *s, tp_cli_opts *o);
/* Options: --vocab FILE and --model DIR (a folder holding the vocabulary). */
void tp_cli_optset_add_vocab(tp_cli_optset *s, tp_cli_opts *o);
/* Section "Device options": --backend --device --threads --precision. */
void tp_cli_optset_add_device(tp_cli_optset *s, tp_cli_opts *o);
/* Options: --threads only (commands that use no backend). */
void tp_cli_optset_add_threads(tp_cli_optset *s, tp_cli_opts *o);
/* Options: --data (repeatable) and --skip-bad. */
void tp_cli_optset_add_data(tp_cli_optset *s, tp_cli_opts *o);
/* Options: --max-len (3 to 65536) and --eval-batch. */
void tp_cli_optset_add_text(tp_cli_optset *s, tp_cli_opts *o);
/* Options: --json with the given meaning. */
void tp_cli_optset_add_json(tp_cli_optset *s, tp_cli_opts *o, const char *help);
