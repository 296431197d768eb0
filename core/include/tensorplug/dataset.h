/* tensorplug/dataset.h — labelled text datasets and the seeded stratified
 * split of the homework (subset, 80/20 train+val/test, 12.5% of train+val as
 * validation). */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <glib.h>

G_BEGIN_DECLS

typedef struct tp_dataset {
  guint n;
  char **texts;  /* UTF-8, NUL-terminated */
  int *labels;   /* 0 .. n_labels-1 */
  char **ids;    /* a stable id per record ("train/pos/0_9", "file.csv:12") */
  char **where;  /* where each record is: "PATH:LINE", or the file's path */
  int n_labels;  /* 2 for IMDB */
  guint n_skipped; /* malformed records skipped with skip_bad */
  GStringChunk *strings; /* owns texts and ids */
} tp_dataset;

/* Reads and concatenates, in order, each path: an aclImdb-style folder
 * ({train,test}/{pos,neg}/NAME.txt: train then test), a folder of *.jsonl[.gz]
 * (train* before test*), a .jsonl[.gz] file ({"text", "label"[, "id"]}), or a
 * .csv/.tsv with a header (text|review, label|sentiment; labels 0/1 or
 * negative/positive/neg/pos). A malformed record is an error naming file and
 * line unless skip_bad, which skips it and counts it in n_skipped.
 * Errors (TP_ERROR): IO for a missing or unreadable path, FORMAT for malformed
 * contents or an empty dataset, INVALID_ARGUMENT for an unknown file type.
 * docs/data.md describes the formats in full. */
tp_dataset *tp_dataset_load(const char *const *paths, bool skip_bad, GError **err);
void tp_dataset_free(tp_dataset *d);

/* Checks every label against a model's num_labels once the data meets the
 * model: a label outside 0..num_labels-1 is a TP_ERROR_FORMAT naming the
 * record's file and line, or with skip_bad the record is dropped and
 * counted in n_skipped. */
bool tp_dataset_check_labels(tp_dataset *d, int num_labels, bool skip_bad, GError **err);

typedef struct tp_split {
  guint *train, *val, *test; /* indices into the dataset, in training order */
  guint n_train, n_val, n_test;
} tp_split;

/* Stratified subset (subset < 1), stratified 80/20 (train+val / test), then
 * stratified 12.5% of train+val as validation; all seeded. Sizes for the
 * 50,000 IMDB reviews: 1.0 -> 35000/5000/10000, 0.75 -> 26250/3750/7500,
 * 0.25 -> 8750/1250/2500. The same seed gives the same split everywhere.
 * Errors: TP_ERROR_INVALID_ARGUMENT for a subset outside (0, 1];
 * TP_ERROR_FORMAT for data too small to give every label a place in each
 * part (a property of the data). On failure *out is zeroed. */
bool tp_split_make(const tp_dataset *d, double subset, uint64_t seed, tp_split *out,
                   GError **err);
void tp_split_clear(tp_split *s);
/* Every label 0..num_labels-1 has at least one record in train, validation
 * and test; otherwise TP_ERROR_FORMAT with the label counts of each part. */
bool tp_split_check_classes(const tp_dataset *d, const tp_split *s, int num_labels,
                            GError **err);
/* Count of label `label` among idx. */
guint tp_split_count_label(const tp_dataset *d, const guint *idx, guint n, int label);
/* Hex SHA-256 of the ids of idx in order, joined by "\n" (65 bytes with NUL). */
void tp_split_ids_sha256(const tp_dataset *d, const guint *idx, guint n, char out[65]);

G_END_DECLS
