/* tests/tp_test_synth.h — a tiny synthetic classification set for training
 * tests that need no files: the label is whether token 7 occurs, lengths vary
 * from 3 to 23 (so padding matters), token 0 of each is 2 (a [CLS]). */
#pragma once

#include <glib.h>

#include "tensorplug/tokenizer.h"

typedef struct tp_test_synth {
  tp_token_seqs seqs;
  int *labels;
  guint *train, *val; /* indices into seqs: the first n_train, then n_val */
  guint n_train, n_val;
} tp_test_synth;

/* Seeded (42): the same set on every call. */
void tp_test_synth_make(tp_test_synth *s, guint n_train, guint n_val);
void tp_test_synth_clear(tp_test_synth *s);
