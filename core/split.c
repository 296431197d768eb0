/* core/split.c — the homework's seeded stratified split.
 *
 * Like the seed notebook's sklearn train_test_split(stratify=labels) calls:
 * optional stratified subset of floor(subset * n) records, then test =
 * ceil(n_keep / 5), then val = ceil(n_trainval / 8), train = the rest. Sizes
 * are computed in integers (20% and 12.5% are exact fractions) so that no
 * floating-point rounding can change them. Per-class counts of each draw are
 * proportional, rounded by largest remainder (ties: smaller label first).
 *
 * The random source is splitmix64 (Steele, Lea & Flood 2014) seeded with
 * `seed`, with unbiased bounded draws: plain 64-bit integer arithmetic, so the
 * same seed gives the same split on every machine, compiler and run. */
#include <math.h>
#include <string.h>

#include "tensorplug/dataset.h"
#include "tensorplug/error.h"

typedef struct {
  uint64_t s;
} split_rng;

static uint64_t rng_next(split_rng *r) {
  uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Uniform in [0, bound) without modulo bias (rejection of the short tail). */
static uint64_t rng_below(split_rng *r, uint64_t bound) {
  uint64_t threshold = (0 - bound) % bound;
  for (;;) {
    uint64_t x = rng_next(r);
    if (x >= threshold) return x % bound;
  }
}

/* Fisher-Yates. */
static void shuffle(split_rng *r, guint *a, guint n) {
  for (guint i = n; i > 1; i--) {
    guint j = (guint)rng_below(r, i);
    guint t = a[i - 1];
    a[i - 1] = a[j];
    a[j] = t;
  }
}

/* Splits idx[0, n) into `chosen` (k records) and `rest` (n - k), stratified
 * by label; both come out shuffled. Like sklearn, each label present needs
 * two records, and `chosen` (and `rest` when check_rest) at least one record
 * per label present. */
static bool stratified_take(const tp_dataset *d, split_rng *r, const guint *idx, guint n,
                            guint k, bool check_rest, const char *stage, guint **chosen,
                            guint **rest, GError **err) {
  int nl = d->n_labels;
  guint *count = g_new0(guint, nl);
  for (guint i = 0; i < n; i++) count[d->labels[idx[i]]]++;
  guint classes = 0;
  for (int c = 0; c < nl; c++) {
    if (count[c] == 0) continue;
    classes++;
    if (count[c] < 2) {
      g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                  "%s: label %d has only %u record, too few for a stratified split (at "
                  "least 2 per label); use more data or a larger --subset",
                  stage, c, count[c]);
      g_free(count);
      return false;
    }
  }
  if (k < classes || (check_rest && n - k < classes)) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "%s: %u of %u records would go to a part smaller than the number of labels "
                "(%u), which a stratified split cannot fill; use more data or a larger "
                "--subset",
                stage, check_rest && n - k < classes ? n - k : k, n, classes);
    g_free(count);
    return false;
  }
  /* Largest remainder: floor(count * k / n) each, then one more to the
   * classes with the largest remainders until k is reached. */
  guint *take = g_new0(guint, nl);
  uint64_t *remainder = g_new0(uint64_t, nl);
  guint assigned = 0;
  for (int c = 0; c < nl; c++) {
    uint64_t q = (uint64_t)count[c] * k;
    take[c] = (guint)(q / n);
    remainder[c] = q % n;
    assigned += take[c];
  }
  while (assigned < k) {
    int best = -1;
    for (int c = 0; c < nl; c++)
      if (take[c] < count[c] && (best < 0 || remainder[c] > remainder[best])) best = c;
    take[best]++;
    remainder[best] = 0;
    assigned++;
  }
  /* Group by label keeping the given order, shuffle each group, cut. */
  guint *start = g_new0(guint, nl + 1);
  for (int c = 0; c < nl; c++) start[c + 1] = start[c] + count[c];
  guint *grouped = g_new(guint, n ? n : 1);
  guint *fill = g_memdup2(start, sizeof(guint) * (gsize)(nl + 1));
  for (guint i = 0; i < n; i++) grouped[fill[d->labels[idx[i]]]++] = idx[i];
  *chosen = g_new(guint, k ? k : 1);
  *rest = g_new(guint, n - k ? n - k : 1);
  guint nc = 0, nr = 0;
  for (int c = 0; c < nl; c++) {
    guint *g = grouped + start[c];
    shuffle(r, g, count[c]);
    memcpy(*chosen + nc, g, sizeof(guint) * take[c]);
    memcpy(*rest + nr, g + take[c], sizeof(guint) * (count[c] - take[c]));
    nc += take[c];
    nr += count[c] - take[c];
  }
  shuffle(r, *chosen, k);
  shuffle(r, *rest, n - k);
  g_free(count);
  g_free(take);
  g_free(remainder);
  g_free(start);
  g_free(grouped);
  g_free(fill);
  return true;
}

bool tp_split_make(const tp_dataset *d, double subset, uint64_t seed, tp_split *out,
                   GError **err) {
  g_return_val_if_fail(d && out, false);
  memset(out, 0, sizeof *out);
  if (!(subset > 0.0 && subset <= 1.0)) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                "--subset must be in (0, 1] (a fraction of the records), got %g", subset);
    return false;
  }
  for (guint i = 0; i < d->n; i++) {
    if (d->labels[i] < 0 || d->labels[i] >= d->n_labels) {
      g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                  "record %u (%s) has label %d outside 0..%d", i, d->ids[i], d->labels[i],
                  d->n_labels - 1);
      return false;
    }
  }
  split_rng r = {seed};
  guint n = d->n;
  /* floor(subset * n); the tiny relative slack makes 0.29 of 100 keep 29, not
   * the 28 that 0.29 * 100 = 28.999999999999996 would give. */
  guint n_keep = subset >= 1.0 ? n : (guint)floor(subset * n * (1.0 + 1e-12));
  if (n_keep > n) n_keep = n;
  if (n_keep < 3) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "--subset %g of %u records keeps %u, too few for train, validation and test "
                "splits; use more data or a larger --subset", subset, n, n_keep);
    return false;
  }
  guint *all = g_new(guint, n);
  for (guint i = 0; i < n; i++) all[i] = i;
  guint *keep = all, *drop = NULL;
  if (n_keep < n) {
    if (!stratified_take(d, &r, all, n, n_keep, false, "subset", &keep, &drop, err)) {
      g_free(all);
      return false;
    }
    g_free(all);
    g_free(drop);
  }
  guint n_test = (n_keep + 4) / 5;          /* ceil(0.2 * n_keep) */
  guint n_trainval = n_keep - n_test;
  guint n_val = (n_trainval + 7) / 8;       /* ceil(0.125 * n_trainval) */
  guint *test = NULL, *trainval = NULL, *val = NULL, *train = NULL;
  bool ok = stratified_take(d, &r, keep, n_keep, n_test, true, "test split", &test,
                            &trainval, err) &&
            stratified_take(d, &r, trainval, n_trainval, n_val, true, "validation split",
                            &val, &train, err);
  g_free(keep);
  g_free(trainval);
  if (!ok) {
    g_free(test);
    g_free(val);
    g_free(train);
    return false;
  }
  out->train = train;
  out->val = val;
  out->test = test;
  out->n_train = n_trainval - n_val;
  out->n_val = n_val;
  out->n_test = n_test;
  return true;
}

void tp_split_clear(tp_split *s) {
  if (!s) return;
  g_free(s->train);
  g_free(s->val);
  g_free(s->test);
  memset(s, 0, sizeof *s);
}

guint tp_split_count_label(const tp_dataset *d, const guint *idx, guint n, int label) {
  guint c = 0;
  for (guint i = 0; i < n; i++) c += d->labels[idx[i]] == label;
  return c;
}

void tp_split_ids_sha256(const tp_dataset *d, const guint *idx, guint n, char out[65]) {
  GChecksum *ck = g_checksum_new(G_CHECKSUM_SHA256);
  for (guint i = 0; i < n; i++) {
    if (i > 0) g_checksum_update(ck, (const guchar *)"\n", 1);
    g_checksum_update(ck, (const guchar *)d->ids[idx[i]], -1);
  }
  g_strlcpy(out, g_checksum_get_string(ck), 65);
  g_checksum_free(ck);
}

bool tp_split_check_classes(const tp_dataset *d, const tp_split *s, int num_labels,
                            GError **err) {
  const char *names[3] = {"train", "validation", "test"};
  const guint *idx[3] = {s->train, s->val, s->test};
  guint n[3] = {s->n_train, s->n_val, s->n_test};
  bool ok = true;
  for (int p = 0; p < 3; p++)
    for (int c = 0; c < num_labels; c++) ok = ok && tp_split_count_label(d, idx[p], n[p], c) > 0;
  if (ok) return true;
  GString *counts = g_string_new(NULL);
  for (int p = 0; p < 3; p++) {
    g_string_append_printf(counts, "%s%s:", p ? "; " : "", names[p]);
    for (int c = 0; c < num_labels; c++)
      g_string_append_printf(counts, "%s label %d: %u", c ? "," : "", c,
                             tp_split_count_label(d, idx[p], n[p], c));
  }
  g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "the data does not hold every label of the model "
              "in each part of the split (%s): training would succeed but its accuracy and F1 "
              "would mean nothing; use data with records of every label (more of the rare "
              "ones, or a larger --subset)", counts->str);
  g_string_free(counts, TRUE);
  return false;
}
