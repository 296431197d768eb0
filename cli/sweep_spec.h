/* cli/sweep_spec.h — experiment spec files (INI, read with GKeyFile).
 *
 *   [sweep]                  optional
 *   name = problem2          the sweep's name [the file's basename]
 *   study = data_size        max_len_lr | data_size | model (what report states answers for)
 *   from_best = runs/p1      earlier sweep folder(s), comma-separated (shards): take the
 *                            settings of its best run (lowest validation loss at its best epoch)
 *   from_best_keys = max_len, lr, batch   which settings [max_len, lr, batch]
 *   oom_fallback = true      on out of memory, halve the batch and run again [false]
 *
 *   [defaults]               train options with underscores: max_len = 256 for --max-len
 *   [grid]                   comma lists; every combination is a run, named key-value_...
 *   [run NAME]               an explicit run, or overrides of the grid run called NAME
 *
 * A run's settings, later ones winning: [defaults], from_best, its grid values,
 * its [run NAME] group, then the command line (--set, device options). Every
 * run's options are validated like `tensorplug train`'s before anything runs. */
#pragma once
#include <stdbool.h>
#include <glib.h>

typedef struct tp_sweep_run {
  char *name;
  int index;            /* position in the spec's run list */
  GHashTable *settings; /* option key with underscores -> value text (owned) */
  bool oom_fallback;
} tp_sweep_run;

typedef struct tp_sweep_spec {
  char *path, *name, *study; /* study may be NULL */
  char *text;                /* the file as read */
  char **from_best;          /* NULL when none */
  char **from_best_keys;
  char *best_dir;            /* resolved from_best run, or NULL */
  double best_val_loss;
  GHashTable *best_settings; /* key -> value taken from it */
  GPtrArray *grid_keys;      /* char *, the keys the grid varies */
  GPtrArray *runs;           /* tp_sweep_run * */
} tp_sweep_spec;

/* Reads and validates a spec; sets are "KEY=VALUE" overrides for every run
 * and from_best folders replace the spec's (both NULL-terminated, may be
 * NULL). Errors name the file, the group and the key. */
tp_sweep_spec *tp_sweep_spec_load(const char *path, char *const *sets, char *const *from_best,
                                  GError **err);
void tp_sweep_spec_free(tp_sweep_spec *s);

/* The arguments of `tensorplug train` for a run (after "train"; settings in
 * key order, then --out run_dir): a NULL-terminated vector of owned strings. */
GPtrArray *tp_sweep_run_train_args(const tp_sweep_run *r, const char *run_dir);

/* The settings whose change would change a finished run's results (every
 * key but threads, backend and device): canonical "key=value\n..." text. */
char *tp_sweep_run_identity(GHashTable *settings);

/* "max_len_lr" ... as a heading: "Problem 1 — max length × learning rate". */
const char *tp_sweep_study_title(const char *study);
