/* tests/tp_test_synth.c — see tp_test_synth.h. */
#include "tp_test_synth.h"

void tp_test_synth_make(tp_test_synth *s, guint n_train, guint n_val) {
  GRand *r = g_rand_new_with_seed(42);
  guint n = n_train + n_val;
  s->seqs.n = n;
  s->seqs.offsets = g_new(int64_t, n + 1);
  s->seqs.ids = g_new(int32_t, (int64_t)n * 24);
  s->labels = g_new(int, n);
  s->seqs.offsets[0] = 0;
  for (guint i = 0; i < n; i++) {
    int len = g_rand_int_range(r, 3, 24);
    int32_t *ids = s->seqs.ids + s->seqs.offsets[i];
    ids[0] = 2; /* a [CLS]-like first token */
    s->labels[i] = (int)(i % 2);
    for (int j = 1; j < len; j++) ids[j] = g_rand_int_range(r, 8, 100);
    if (s->labels[i]) ids[g_rand_int_range(r, 1, len)] = 7;
    s->seqs.offsets[i + 1] = s->seqs.offsets[i] + len;
  }
  s->train = g_new(guint, n_train);
  s->val = g_new(guint, n_val);
  for (guint i = 0; i < n_train; i++) s->train[i] = i;
  for (guint i = 0; i < n_val; i++) s->val[i] = n_train + i;
  s->n_train = n_train;
  s->n_val = n_val;
  g_rand_free(r);
}

void tp_test_synth_clear(tp_test_synth *s) {
  g_free(s->seqs.offsets);
  g_free(s->seqs.ids);
  g_free(s->labels);
  g_free(s->train);
  g_free(s->val);
}
