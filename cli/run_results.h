/* cli/run_results.h — reading the results.json of training runs: one run's
 * numbers as report and sweep (from_best) need them, and finding every run
 * under a set of folders. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include <json-glib/json-glib.h>

typedef struct tp_run_result {
  char *dir;   /* the run folder */
  char *name;  /* its basename */
  char *sweep; /* the sweep it belongs to (DIR/../sweep.json "name"), or NULL */
  char *study; /* that sweep's study ("max_len_lr", "data_size", "model"), or NULL */
  int index;   /* its position in the sweep's spec (shards keep it), or -1 */
  char *note;  /* from the sweep: "OOM: batch 16 -> 8", or NULL */
  JsonNode *config; /* results.json "config" (the train options) */
  /* the table's columns */
  char *model; /* display name: folder or preset basename, sizes, "random" */
  int max_len, batch;
  double lr, subset;
  int64_t n_train, n_val, n_test;
  char split_hash[13]; /* first 12 hex digits of SHA-256 over the three split hashes */
  int best_epoch;
  double val_acc_best, val_loss_best, test_acc, test_f1;
  double s_per_epoch, train_s, total_s;
  char *backend, *device, *commit;
  GArray *val_loss; /* double, per epoch */
  GArray *val_acc;  /* double, per epoch */
} tp_run_result;

/* Loads DIR/results.json; an error names the file and what is missing. */
tp_run_result *tp_run_result_load(const char *dir, GError **err);
void tp_run_result_free(tp_run_result *r);

/* Every run (a folder holding results.json) under each of dirs, recursively,
 * sorted by sweep, then spec index, then folder. Unreadable results are
 * errors. */
GPtrArray *tp_run_results_find(const char *const *dirs, GError **err);

/* A config member as text, the way a spec or command line writes it
 * ("256", "1e-05", "models/x"); NULL when absent or null. Arrays are
 * comma-joined. */
char *tp_run_config_text(const tp_run_result *r, const char *key);

/* Shortest text that reads back as the same double ("1e-05", not
 * "1.0000000000000001e-05"). */
char *tp_format_double(double v);
