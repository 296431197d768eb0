/* tests/test_dataset.c — dataset loading (aclImdb, JSONL[.gz], CSV, TSV),
 * malformed records, the stratified split and binary metrics. */
#include <gio/gio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <json-glib/json-glib.h>

#include "tensorplug/dataset.h"
#include "tensorplug/error.h"
#include "tensorplug/metrics.h"
#include "tp_test.h"

/* ---------------------------------------------------------------- helpers */

static char *write_file(const char *dir, const char *name, const char *data, gssize len) {
  char *path = g_build_filename(dir, name, NULL);
  char *parent = g_path_get_dirname(path);
  g_mkdir_with_parents(parent, 0755);
  g_free(parent);
  GError *e = NULL;
  if (!g_file_set_contents(path, data, len, &e)) {
    TP_FAILF("cannot write %s: %s", path, e->message);
    g_error_free(e);
  }
  return path;
}

static GBytes *gzip_bytes_level(const char *data, gsize len, int level) {
  GOutputStream *mem = g_memory_output_stream_new_resizable();
  GZlibCompressor *z = g_zlib_compressor_new(G_ZLIB_COMPRESSOR_FORMAT_GZIP, level);
  GOutputStream *out = g_converter_output_stream_new(mem, G_CONVERTER(z));
  gsize written = 0;
  g_output_stream_write_all(out, data, len, &written, NULL, NULL);
  g_output_stream_close(out, NULL, NULL);
  GBytes *b = g_memory_output_stream_steal_as_bytes(G_MEMORY_OUTPUT_STREAM(mem));
  g_object_unref(out);
  g_object_unref(z);
  g_object_unref(mem);
  return b;
}

static GBytes *gzip_bytes(const char *data, gsize len) { return gzip_bytes_level(data, len, -1); }

static tp_dataset *load1(const char *path, bool skip_bad, GError **err) {
  const char *paths[] = {path, NULL};
  return tp_dataset_load(paths, skip_bad, err);
}

/* The shared IMDB copy, loaded once for all the split tests. */
static tp_dataset *imdb(double *seconds) {
  static tp_dataset *d;
  static double secs;
  if (!d) {
    char *dir = g_build_filename(tp_test_shared_dir(), "data", "imdb", NULL);
    if (!g_file_test(dir, G_FILE_TEST_IS_DIR)) {
      g_free(dir);
      return NULL;
    }
    GError *err = NULL;
    gint64 t0 = g_get_monotonic_time();
    d = load1(dir, false, &err);
    secs = (double)(g_get_monotonic_time() - t0) / 1e6;
    if (err) {
      TP_FAILF("loading %s: %s", dir, err->message);
      g_error_free(err);
    }
    g_free(dir);
  }
  if (seconds) *seconds = secs;
  return d;
}

/* ------------------------------------------------------------ real data */

TP_TEST(Imdb, LoadsFiftyThousandInReadmeOrder) {
  double secs = 0;
  tp_dataset *d = imdb(&secs);
  if (!d) TP_SKIP("../shared/data/imdb is not here");
  fprintf(stderr, "loaded %u IMDB reviews in %.3f s\n", d->n, secs);
  /* The budget is 2 s on a 2-core machine in a plain build; sanitizers slow it. */
  TP_CHECK(secs < 20.0);
  TP_ASSERT(d->n == 50000);
  TP_CHECK_INT_EQ(d->n_labels, 2);
  TP_CHECK_INT_EQ(d->n_skipped, 0);
  TP_CHECK_INT_EQ(tp_split_count_label(d, NULL, 0, 1), 0);
  guint pos = 0;
  for (guint i = 0; i < d->n; i++) pos += d->labels[i] == 1;
  TP_CHECK_INT_EQ(pos, 25000);
  TP_CHECK_STR_EQ(d->ids[0], "train/neg/0_3");
  TP_CHECK(g_str_has_prefix(d->ids[12499], "train/neg/"));
  TP_CHECK(g_str_has_prefix(d->ids[12500], "train/pos/0_"));
  TP_CHECK(g_str_has_prefix(d->ids[25000], "test/neg/0_"));
  TP_CHECK(g_str_has_prefix(d->ids[49999], "test/pos/"));
  /* Sorted as byte strings within train and within test, labels match ids. */
  guint unsorted = 0, mislabelled = 0, bad_utf8 = 0;
  for (guint i = 0; i < d->n; i++) {
    if (i % 25000 && strcmp(d->ids[i - 1], d->ids[i]) >= 0) unsorted++;
    if ((strstr(d->ids[i], "/pos/") != NULL) != (d->labels[i] == 1)) mislabelled++;
    if (!g_utf8_validate(d->texts[i], -1, NULL)) bad_utf8++;
  }
  TP_CHECK_INT_EQ(unsorted, 0);
  TP_CHECK_INT_EQ(mislabelled, 0);
  TP_CHECK_INT_EQ(bad_utf8, 0);
  /* README: review lengths are 32 .. 13,704 characters. */
  glong lmin = G_MAXLONG, lmax = 0;
  for (guint i = 0; i < d->n; i++) {
    glong l = g_utf8_strlen(d->texts[i], -1);
    lmin = MIN(lmin, l);
    lmax = MAX(lmax, l);
  }
  TP_CHECK_INT_EQ(lmin, 32);
  TP_CHECK_INT_EQ(lmax, 13704);
  for (guint i = 0; i < d->n; i++) {
    if (strcmp(d->ids[i], "test/neg/10182_3") == 0) TP_CHECK_INT_EQ(g_utf8_strlen(d->texts[i], -1), 2070);
  }
}

/* The loader's texts, labels and ids agree with json-glib reading the same
 * lines (the first 5,000 of each file, through GIO's own gunzip stream). */
TP_TEST(Imdb, MatchesJsonGlibLineByLine) {
  tp_dataset *d = imdb(NULL);
  if (!d) TP_SKIP("../shared/data/imdb is not here");
  const char *files[] = {"train.jsonl.gz", "test.jsonl.gz"};
  JsonParser *parser = json_parser_new();
  guint mismatches = 0;
  for (int f = 0; f < 2; f++) {
    char *path = g_build_filename(tp_test_shared_dir(), "data", "imdb", files[f], NULL);
    GFile *file = g_file_new_for_path(path);
    GInputStream *raw = G_INPUT_STREAM(g_file_read(file, NULL, NULL));
    TP_ASSERT(raw);
    GZlibDecompressor *z = g_zlib_decompressor_new(G_ZLIB_COMPRESSOR_FORMAT_GZIP);
    GInputStream *conv = g_converter_input_stream_new(raw, G_CONVERTER(z));
    GDataInputStream *lines = g_data_input_stream_new(conv);
    for (guint i = 0; i < 5000; i++) {
      char *line = g_data_input_stream_read_line(lines, NULL, NULL, NULL);
      TP_ASSERT(line);
      TP_ASSERT(json_parser_load_from_data(parser, line, -1, NULL));
      JsonObject *o = json_node_get_object(json_parser_get_root(parser));
      guint k = f * 25000 + i;
      if (strcmp(json_object_get_string_member(o, "text"), d->texts[k]) != 0 ||
          strcmp(json_object_get_string_member(o, "id"), d->ids[k]) != 0 ||
          json_object_get_int_member(o, "label") != d->labels[k])
        mismatches++;
      g_free(line);
    }
    g_object_unref(lines);
    g_object_unref(conv);
    g_object_unref(z);
    g_object_unref(raw);
    g_object_unref(file);
    g_free(path);
  }
  TP_CHECK_INT_EQ(mismatches, 0);
  g_object_unref(parser);
}

static void check_split(const tp_dataset *d, double subset, guint ntr, guint nva, guint nte) {
  tp_split s;
  GError *err = NULL;
  TP_ASSERT(tp_split_make(d, subset, 42, &s, &err));
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK_INT_EQ(s.n_train, ntr);
  TP_CHECK_INT_EQ(s.n_val, nva);
  TP_CHECK_INT_EQ(s.n_test, nte);
  const guint *parts[] = {s.train, s.val, s.test};
  const guint sizes[] = {s.n_train, s.n_val, s.n_test};
  guint8 *seen = g_new0(guint8, d->n);
  guint dup = 0;
  for (int p = 0; p < 3; p++) {
    guint c0 = tp_split_count_label(d, parts[p], sizes[p], 0);
    guint c1 = tp_split_count_label(d, parts[p], sizes[p], 1);
    TP_CHECK_INT_EQ(c0 + c1, sizes[p]);
    TP_CHECK(c0 >= c1 ? c0 - c1 <= 1 : c1 - c0 <= 1);
    for (guint i = 0; i < sizes[p]; i++) {
      TP_ASSERT(parts[p][i] < d->n);
      dup += seen[parts[p][i]]++ > 0;
    }
  }
  TP_CHECK_INT_EQ(dup, 0); /* disjoint */
  guint covered = 0;
  for (guint i = 0; i < d->n; i++) covered += seen[i];
  TP_CHECK_INT_EQ(covered, ntr + nva + nte); /* together they are the kept subset */
  /* Training order is shuffled: not train records then test records. */
  guint from_test = 0;
  for (guint i = 0; i < 1000 && i < s.n_train; i++) from_test += s.train[i] >= d->n / 2;
  TP_CHECK(from_test > 350 && from_test < 650);
  g_free(seen);
  tp_split_clear(&s);
  TP_CHECK(s.train == NULL && s.n_train == 0);
}

TP_TEST(Imdb, SplitSizesFull) {
  tp_dataset *d = imdb(NULL);
  if (!d) TP_SKIP("../shared/data/imdb is not here");
  check_split(d, 1.0, 35000, 5000, 10000);
}
TP_TEST(Imdb, SplitSizesThreeQuarters) {
  tp_dataset *d = imdb(NULL);
  if (!d) TP_SKIP("../shared/data/imdb is not here");
  check_split(d, 0.75, 26250, 3750, 7500);
}
TP_TEST(Imdb, SplitSizesQuarter) {
  tp_dataset *d = imdb(NULL);
  if (!d) TP_SKIP("../shared/data/imdb is not here");
  check_split(d, 0.25, 8750, 1250, 2500);
}

TP_TEST(Imdb, SplitHashIsSeeded) {
  tp_dataset *d = imdb(NULL);
  if (!d) TP_SKIP("../shared/data/imdb is not here");
  GError *err = NULL;
  /* Pinned: the same on every machine and run (docs/data.md quotes them). */
  tp_split full;
  char h[65];
  TP_ASSERT(tp_split_make(d, 1.0, 42, &full, &err));
  tp_split_ids_sha256(d, full.train, full.n_train, h);
  TP_CHECK_STR_EQ(h, "fc54af2a88afa9b3ba384eef328dbd2a26de2d750b8a968adfc262a69bb4eba6");
  tp_split_ids_sha256(d, full.test, full.n_test, h);
  TP_CHECK_STR_EQ(h, "5b009d6bf61161f90d0c43c61f287b7eb02893aefdf36b145bd26fefbe566515");
  tp_split_clear(&full);
  tp_split a, b, c;
  TP_ASSERT(tp_split_make(d, 0.25, 7, &a, &err));
  TP_ASSERT(tp_split_make(d, 0.25, 7, &b, &err));
  TP_ASSERT(tp_split_make(d, 0.25, 8, &c, &err));
  TP_ASSERT_NO_ERROR(err);
  char ha[65], hb[65], hc[65], hv[65];
  tp_split_ids_sha256(d, a.train, a.n_train, ha);
  tp_split_ids_sha256(d, b.train, b.n_train, hb);
  tp_split_ids_sha256(d, c.train, c.n_train, hc);
  tp_split_ids_sha256(d, a.val, a.n_val, hv);
  TP_CHECK_INT_EQ(strlen(ha), 64);
  TP_CHECK_STR_EQ(ha, hb);
  TP_CHECK(strcmp(ha, hc) != 0);
  TP_CHECK(strcmp(ha, hv) != 0);
  TP_CHECK(memcmp(a.test, b.test, sizeof(guint) * a.n_test) == 0);
  tp_split_ids_sha256(d, a.test, a.n_test, ha);
  tp_split_ids_sha256(d, c.test, c.n_test, hc);
  TP_CHECK(strcmp(ha, hc) != 0);
  tp_split_clear(&a);
  tp_split_clear(&b);
  tp_split_clear(&c);
}

/* ------------------------------------------------------------------ split */

static tp_dataset *synthetic(guint n0, guint n1) {
  GString *s = g_string_new(NULL);
  for (guint i = 0; i < n0 + n1; i++)
    g_string_append_printf(s, "{\"text\":\"t%u\",\"label\":%d,\"id\":\"r%u\"}\n", i,
                           i < n0 ? 0 : 1, i);
  char *dir = tp_test_tmpdir();
  char *path = write_file(dir, "syn.jsonl", s->str, (gssize)s->len);
  GError *err = NULL;
  tp_dataset *d = load1(path, false, &err);
  if (err) {
    TP_FAILF("%s", err->message);
    g_error_free(err);
  }
  g_string_free(s, TRUE);
  g_free(path);
  g_free(dir);
  return d;
}

TP_TEST(Split, KnownOrder) {
  /* Pins the PRNG and the procedure: a change here changes every split. */
  tp_dataset *d = synthetic(6, 6);
  TP_ASSERT(d);
  tp_split s;
  GError *err = NULL;
  TP_ASSERT(tp_split_make(d, 1.0, 1, &s, &err));
  TP_CHECK_INT_EQ(s.n_test, 3);
  TP_CHECK_INT_EQ(s.n_val, 2);
  TP_CHECK_INT_EQ(s.n_train, 7);
  GString *order = g_string_new(NULL);
  for (guint i = 0; i < s.n_train; i++) g_string_append_printf(order, "%u ", s.train[i]);
  TP_CHECK_STR_EQ(order->str, "6 3 8 11 2 5 10 ");
  g_string_free(order, TRUE);
  tp_split_clear(&s);
  tp_dataset_free(d);
}

TP_TEST(Split, ImbalancedLargestRemainder) {
  tp_dataset *d = synthetic(20, 10);
  TP_ASSERT(d);
  tp_split s;
  GError *err = NULL;
  TP_ASSERT(tp_split_make(d, 1.0, 3, &s, &err));
  TP_CHECK_INT_EQ(s.n_test, 6);
  TP_CHECK_INT_EQ(s.n_val, 3);
  TP_CHECK_INT_EQ(s.n_train, 21);
  TP_CHECK_INT_EQ(tp_split_count_label(d, s.test, s.n_test, 1), 2);
  TP_CHECK_INT_EQ(tp_split_count_label(d, s.val, s.n_val, 1), 1);
  TP_CHECK_INT_EQ(tp_split_count_label(d, s.train, s.n_train, 1), 7);
  tp_split_clear(&s);
  /* Subset 0.5 of 30: 15 kept, 10/5 by label. */
  TP_ASSERT(tp_split_make(d, 0.5, 3, &s, &err));
  TP_CHECK_INT_EQ(s.n_train + s.n_val + s.n_test, 15);
  TP_CHECK_INT_EQ(s.n_test, 3);
  TP_CHECK_INT_EQ(s.n_val, 2);
  guint pos = tp_split_count_label(d, s.train, s.n_train, 1) +
              tp_split_count_label(d, s.val, s.n_val, 1) +
              tp_split_count_label(d, s.test, s.n_test, 1);
  TP_CHECK_INT_EQ(pos, 5);
  tp_split_clear(&s);
  tp_dataset_free(d);
}

TP_TEST(Split, RejectsBadSubsetAndTinyData) {
  tp_dataset *d = synthetic(10, 10);
  TP_ASSERT(d);
  tp_split s;
  GError *err = NULL;
  const double bad[] = {0.0, -0.5, 1.5, NAN};
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    TP_CHECK(!tp_split_make(d, bad[i], 1, &s, &err));
    TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "(0, 1]");
  }
  /* 20 records: 14/2/4 works. */
  TP_CHECK(tp_split_make(d, 1.0, 1, &s, &err));
  TP_CHECK_INT_EQ(s.n_val, 2);
  tp_split_clear(&s);
  /* 0.5 of 20 = 10: test 2, val 1 < 2 labels. */
  TP_CHECK(!tp_split_make(d, 0.5, 1, &s, &err));
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "validation split");
  TP_CHECK(!tp_split_make(d, 0.1, 1, &s, &err));
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "too few");
  TP_CHECK(s.train == NULL);
  tp_dataset_free(d);
  d = synthetic(30, 1);
  TP_CHECK(!tp_split_make(d, 1.0, 1, &s, &err));
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "label 1 has only 1 record");
  tp_dataset_free(d);
}

/* ---------------------------------------------------------------- formats */

TP_TEST(Formats, AclImdbLayout) {
  char *dir = tp_test_tmpdir();
  char *root = g_build_filename(dir, "aclImdb", NULL);
  g_free(write_file(root, "train/pos/10_8.txt", "Ten, great.", -1));
  g_free(write_file(root, "train/pos/2_9.txt", "Two: caf\xc3\xa9<br /><br />ok\n", -1));
  g_free(write_file(root, "train/neg/0_3.txt", "Zero bad", -1));
  g_free(write_file(root, "test/neg/5_1.txt", "awful", -1));
  g_free(write_file(root, "test/pos/7_10.txt", "superb", -1));
  g_free(write_file(root, "train/unsup/9_0.txt", "unlabelled", -1));
  g_free(write_file(root, "train/pos/notes.md", "not a review", -1));
  GError *err = NULL;
  /* Both the aclImdb folder and the folder it was unpacked in. */
  const char *paths[] = {root, dir};
  for (int k = 0; k < 2; k++) {
    tp_dataset *d = load1(paths[k], false, &err);
    TP_ASSERT_NO_ERROR(err);
    TP_ASSERT(d->n == 5);
    const char *ids[] = {"train/neg/0_3", "train/pos/10_8", "train/pos/2_9", "test/neg/5_1",
                         "test/pos/7_10"};
    const int labels[] = {0, 1, 1, 0, 1};
    for (int i = 0; i < 5; i++) {
      TP_CHECK_STR_EQ(d->ids[i], ids[i]);
      TP_CHECK_INT_EQ(d->labels[i], labels[i]);
    }
    TP_CHECK_STR_EQ(d->texts[2], "Two: caf\xc3\xa9<br /><br />ok\n");
    TP_CHECK_INT_EQ(d->n_labels, 2);
    tp_dataset_free(d);
  }
  /* Invalid UTF-8 in a review file. */
  char *bad = write_file(root, "test/pos/8_9.txt", "bad \xff byte", -1);
  TP_CHECK(load1(root, false, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "8_9.txt:1");
  tp_dataset *d = load1(root, true, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK_INT_EQ(d->n, 5);
  TP_CHECK_INT_EQ(d->n_skipped, 1);
  tp_dataset_free(d);
  g_free(bad);
  g_free(root);
  g_free(dir);
}

static const char jsonl_sample[] =
    "{\"text\": \"He said \\\"hi\\\" \\\\ back\\/slash\\n\\ttab \\u00e9 \\ud83d\\ude00 "
    "\\u20ac\", \"label\": 1, \"id\": \"a\"}\n"
    "\n"
    "  {\"label\":\"NEGATIVE\",\"text\":\"caf\xc3\xa9 plain\"}  \r\n"
    "{\"text\": \"nested\", \"meta\": {\"x\": [1, 2.5, null]}, \"label\": \"pos\", "
    "\"id\": 17}\n"
    "{\"text\": \"float label\", \"label\": 0.0, \"extra\": true}\n"
    "{\"text\": \"\", \"label\": \"neg\", \"id\": \"empty\"}";

TP_TEST(Formats, JsonlEscapesAndUnicode) {
  char *dir = tp_test_tmpdir();
  char *path = write_file(dir, "s.jsonl", jsonl_sample, -1);
  GError *err = NULL;
  tp_dataset *d = load1(path, false, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_ASSERT(d->n == 5);
  TP_CHECK_STR_EQ(d->texts[0],
                  "He said \"hi\" \\ back/slash\n\ttab \xc3\xa9 \xf0\x9f\x98\x80 \xe2\x82\xac");
  TP_CHECK_STR_EQ(d->ids[0], "a");
  TP_CHECK_INT_EQ(d->labels[0], 1);
  TP_CHECK_STR_EQ(d->texts[1], "caf\xc3\xa9 plain");
  TP_CHECK_STR_EQ(d->ids[1], "s.jsonl:3");
  TP_CHECK_INT_EQ(d->labels[1], 0);
  TP_CHECK_STR_EQ(d->texts[2], "nested");
  TP_CHECK_STR_EQ(d->ids[2], "17");
  TP_CHECK_INT_EQ(d->labels[2], 1);
  TP_CHECK_INT_EQ(d->labels[3], 0);
  TP_CHECK_STR_EQ(d->texts[4], "");
  TP_CHECK_INT_EQ(d->n_labels, 2);
  tp_dataset_free(d);
  g_free(path);
  g_free(dir);
}

/* The fast path and json-glib must agree on every text: random strings with
 * quotes, backslashes, control characters and non-ASCII, written by
 * json-glib's generator (and with \u escapes by hand), read back both ways. */
TP_TEST(Formats, JsonlFastPathMatchesJsonGlib) {
  GRand *rng = g_rand_new_with_seed(1234);
  GString *file = g_string_new(NULL);
  GPtrArray *lines = g_ptr_array_new_with_free_func(g_free);
  static const gunichar pool[] = {'a', 'Z', ' ', '"', '\\', '/', '\n', '\t', '\r', '\b', 0x01,
                                  0x1f, 0x7f, 0xe9, 0x20ac, 0xfeff, 0x1f600, 0x10ffff, '{',
                                  '}', ',', ':'};
  for (int i = 0; i < 400; i++) {
    GString *t = g_string_new(NULL);
    int len = g_rand_int_range(rng, 0, 40);
    for (int k = 0; k < len; k++)
      g_string_append_unichar(t, pool[g_rand_int_range(rng, 0, G_N_ELEMENTS(pool))]);
    char *line;
    if (i % 3 == 0) {
      /* Hand-written escapes of every character, \uXXXX with surrogate pairs. */
      GString *esc = g_string_new("{\"label\": 1, \"text\": \"");
      for (const char *p = t->str; *p; p = g_utf8_next_char(p)) {
        gunichar c = g_utf8_get_char(p);
        if (c >= 0x10000) {
          c -= 0x10000;
          g_string_append_printf(esc, "\\u%04X\\u%04x", 0xD800 + (c >> 10), 0xDC00 + (c & 0x3ff));
        } else {
          g_string_append_printf(esc, i % 2 ? "\\u%04x" : "\\u%04X", c);
        }
      }
      g_string_append(esc, i % 6 == 0 ? "\", \"x\": [1]}" : "\"}");
      line = g_string_free(esc, FALSE);
    } else {
      JsonBuilder *jb = json_builder_new();
      json_builder_begin_object(jb);
      json_builder_set_member_name(jb, "text");
      json_builder_add_string_value(jb, t->str);
      json_builder_set_member_name(jb, "label");
      json_builder_add_int_value(jb, i % 2);
      json_builder_end_object(jb);
      JsonGenerator *gen = json_generator_new();
      JsonNode *root = json_builder_get_root(jb);
      json_generator_set_root(gen, root);
      line = json_generator_to_data(gen, NULL);
      json_node_unref(root);
      g_object_unref(gen);
      g_object_unref(jb);
    }
    g_string_append_printf(file, "%s\n", line);
    g_ptr_array_add(lines, line);
    g_string_free(t, TRUE);
  }
  char *dir = tp_test_tmpdir();
  char *path = write_file(dir, "rand.jsonl", file->str, (gssize)file->len);
  GError *err = NULL;
  tp_dataset *d = load1(path, false, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_ASSERT(d->n == lines->len);
  JsonParser *parser = json_parser_new();
  guint mismatches = 0;
  for (guint i = 0; i < lines->len; i++) {
    TP_ASSERT(json_parser_load_from_data(parser, g_ptr_array_index(lines, i), -1, NULL));
    JsonObject *o = json_node_get_object(json_parser_get_root(parser));
    const char *want = json_object_get_string_member(o, "text");
    if (strcmp(want, d->texts[i]) != 0) {
      if (mismatches++ < 3) TP_FAILF("line %u: %s", i + 1, (char *)g_ptr_array_index(lines, i));
    }
  }
  TP_CHECK_INT_EQ(mismatches, 0);
  g_object_unref(parser);
  tp_dataset_free(d);
  g_ptr_array_unref(lines);
  g_string_free(file, TRUE);
  g_rand_free(rng);
  g_free(path);
  g_free(dir);
}

TP_TEST(Formats, JsonlGzAndFolderOrder) {
  char *dir = tp_test_tmpdir();
  char *data = g_build_filename(dir, "data", NULL);
  const char *test_lines = "{\"text\": \"t1\", \"label\": 0}\n{\"text\": \"t2\", \"label\": 1}\n";
  GBytes *gz = gzip_bytes(test_lines, strlen(test_lines));
  g_free(write_file(data, "test.jsonl.gz", g_bytes_get_data(gz, NULL),
                    (gssize)g_bytes_get_size(gz)));
  /* Two gzip members back to back (cat a.gz b.gz, pigz): both count. */
  const char *a = "{\"text\": \"r1\", \"label\": \"positive\"}\n";
  const char *b = "{\"text\": \"r2\", \"label\": \"negative\"}\n";
  GBytes *ga = gzip_bytes(a, strlen(a)), *gb = gzip_bytes(b, strlen(b));
  GByteArray *two = g_byte_array_new();
  g_byte_array_append(two, g_bytes_get_data(ga, NULL), (guint)g_bytes_get_size(ga));
  g_byte_array_append(two, g_bytes_get_data(gb, NULL), (guint)g_bytes_get_size(gb));
  g_free(write_file(data, "train.jsonl.gz", (const char *)two->data, two->len));
  g_free(write_file(data, "val.jsonl", "{\"text\": \"v\", \"label\": 1}", -1));
  g_free(write_file(data, "README.md", "ignored", -1));
  GError *err = NULL;
  tp_dataset *d = load1(data, false, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_ASSERT(d->n == 5);
  const char *texts[] = {"r1", "r2", "v", "t1", "t2"};
  for (int i = 0; i < 5; i++) TP_CHECK_STR_EQ(d->texts[i], texts[i]);
  TP_CHECK_STR_EQ(d->ids[0], "train.jsonl.gz:1");
  TP_CHECK_STR_EQ(d->ids[4], "test.jsonl.gz:2");
  tp_dataset_free(d);
  /* Several paths are concatenated in order. */
  char *p1 = g_build_filename(data, "val.jsonl", NULL);
  char *p2 = g_build_filename(data, "test.jsonl.gz", NULL);
  const char *paths[] = {p1, p2, NULL};
  d = tp_dataset_load(paths, false, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK_INT_EQ(d->n, 3);
  tp_dataset_free(d);
  /* Not gzip, truncated gzip. */
  char *notgz = write_file(dir, "plain.jsonl.gz", "{\"text\": \"x\", \"label\": 1}\n", -1);
  TP_CHECK(load1(notgz, false, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "plain.jsonl.gz");
  char *cut = write_file(dir, "cut.jsonl.gz", g_bytes_get_data(gz, NULL),
                         (gssize)g_bytes_get_size(gz) - 6);
  TP_CHECK(load1(cut, false, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "cut.jsonl.gz");
  g_free(notgz);
  g_free(cut);
  g_free(p1);
  g_free(p2);
  g_byte_array_unref(two);
  g_bytes_unref(gz);
  g_bytes_unref(ga);
  g_bytes_unref(gb);
  g_free(data);
  g_free(dir);
}

TP_TEST(Formats, KaggleCsv) {
  const char csv[] =
      "\xEF\xBB\xBFreview,sentiment\r\n"
      "\"A film, with commas\",positive\r\n"
      "\"Two\nlines and \"\"quotes\"\"\",Negative\r\n"
      "plain text with a \"quote\" inside,POS\r\n"
      "\r\n"
      "\"\",neg\r\n"
      "last without newline,1";
  char *dir = tp_test_tmpdir();
  char *path = write_file(dir, "IMDB Dataset.csv", csv, -1);
  GError *err = NULL;
  tp_dataset *d = load1(path, false, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_ASSERT(d->n == 5);
  TP_CHECK_STR_EQ(d->texts[0], "A film, with commas");
  TP_CHECK_STR_EQ(d->texts[1], "Two\nlines and \"quotes\"");
  TP_CHECK_STR_EQ(d->texts[2], "plain text with a \"quote\" inside");
  TP_CHECK_STR_EQ(d->texts[3], "");
  TP_CHECK_STR_EQ(d->texts[4], "last without newline");
  const int labels[] = {1, 0, 1, 0, 1};
  for (int i = 0; i < 5; i++) TP_CHECK_INT_EQ(d->labels[i], labels[i]);
  TP_CHECK_STR_EQ(d->ids[0], "IMDB Dataset.csv:2");
  TP_CHECK_STR_EQ(d->ids[2], "IMDB Dataset.csv:5");
  TP_CHECK_STR_EQ(d->ids[3], "IMDB Dataset.csv:7");
  TP_CHECK_STR_EQ(d->ids[4], "IMDB Dataset.csv:8");
  tp_dataset_free(d);
  g_free(path);
  g_free(dir);
}

TP_TEST(Formats, TsvAndExtraColumns) {
  const char tsv[] = "id\tLabel\tText\n"
                     "1\t0\tbad movie\n"
                     "2\tpos\t\"quoted\ttab\"\n";
  char *dir = tp_test_tmpdir();
  char *path = write_file(dir, "r.tsv", tsv, -1);
  GError *err = NULL;
  tp_dataset *d = load1(path, false, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_ASSERT(d->n == 2);
  TP_CHECK_STR_EQ(d->texts[0], "bad movie");
  TP_CHECK_INT_EQ(d->labels[0], 0);
  TP_CHECK_STR_EQ(d->texts[1], "quoted\ttab");
  TP_CHECK_INT_EQ(d->labels[1], 1);
  TP_CHECK_STR_EQ(d->ids[1], "r.tsv:3");
  tp_dataset_free(d);
  /* gzip-compressed CSV. */
  const char csv[] = "text,label\nx,1\ny,0\n";
  GBytes *gz = gzip_bytes(csv, strlen(csv));
  char *gzp = write_file(dir, "r.csv.gz", g_bytes_get_data(gz, NULL), (gssize)g_bytes_get_size(gz));
  d = load1(gzp, false, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK_INT_EQ(d->n, 2);
  tp_dataset_free(d);
  g_bytes_unref(gz);
  g_free(gzp);
  g_free(path);
  g_free(dir);
}

/* Records far larger than the read buffer, split across refills. */
TP_TEST(Formats, HugeRecords) {
  gsize big = 5u << 20;
  char *text = g_malloc(big + 1);
  for (gsize i = 0; i < big; i++) text[i] = "ab, \"\n"[i % 6];
  text[big] = 0;
  char *dir = tp_test_tmpdir();
  /* JSONL: json-glib writes it (escaping quotes and newlines). */
  JsonNode *s = json_node_init_string(json_node_alloc(), text);
  char *esc = json_to_string(s, FALSE);
  json_node_unref(s);
  GString *jl = g_string_new(NULL);
  g_string_append_printf(jl, "{\"text\": \"small\", \"label\": 0}\n{\"text\": %s, \"label\": 1}\n"
                             "{\"text\": \"after\", \"label\": 0}\n", esc);
  /* CSV: quotes doubled. */
  GString *csv = g_string_new("text,label\n\"");
  for (gsize i = 0; i < big; i++) {
    if (text[i] == '"') g_string_append_c(csv, '"');
    g_string_append_c(csv, text[i]);
  }
  g_string_append(csv, "\",1\nafter,0\n");
  GBytes *gz = gzip_bytes(jl->str, jl->len);
  const struct { const char *name; const char *data; gsize len; } files[] = {
      {"big.jsonl", jl->str, jl->len}, {"big.csv", csv->str, csv->len},
      {"big.jsonl.gz", g_bytes_get_data(gz, NULL), g_bytes_get_size(gz)}};
  for (gsize f = 0; f < G_N_ELEMENTS(files); f++) {
    char *path = write_file(dir, files[f].name, files[f].data, (gssize)files[f].len);
    GError *err = NULL;
    tp_dataset *d = load1(path, false, &err);
    TP_ASSERT_NO_ERROR(err);
    guint bigi = d->n == 3 ? 1 : 0;
    TP_CHECK_INT_EQ(d->n, f == 1 ? 2 : 3);
    TP_CHECK(strcmp(d->texts[bigi], text) == 0);
    TP_CHECK_STR_EQ(d->texts[d->n - 1], "after");
    if (f == 1) TP_CHECK_INT_EQ(atoi(strrchr(d->ids[1], ':') + 1), 2 + (int)(big / 6) + 1);
    tp_dataset_free(d);
    g_free(path);
  }
  g_bytes_unref(gz);
  g_string_free(jl, TRUE);
  g_string_free(csv, TRUE);
  g_free(esc);
  g_free(text);
  g_free(dir);
}

/* -------------------------------------------------------------- malformed */

typedef struct {
  const char *name, *content, *where, *what;
  guint n_good; /* records left with skip_bad */
} bad_case;

TP_TEST(Malformed, ErrorsNameFileAndLine) {
  static const bad_case cases[] = {
      {"badjson.jsonl", "{\"text\": \"a\", \"label\": 1}\n{\"text\": \"a\" \"label\": 1}\n"
                        "{\"text\": \"c\", \"label\": 0}\n", "badjson.jsonl:2", "invalid JSON", 2},
      {"nolabel.jsonl", "{\"text\": \"a\", \"label\": 1}\n\n{\"text\": \"b\"}\n",
       "nolabel.jsonl:3", "missing \"label\"", 1},
      {"notext.jsonl", "{\"label\": 1}\n{\"text\": \"b\", \"label\": 0}\n", "notext.jsonl:1",
       "missing \"text\"", 1},
      {"unknown.jsonl", "{\"text\": \"a\", \"label\": \"meh\"}\n{\"text\": \"b\", \"label\": 0}\n",
       "unknown.jsonl:1", "unknown label \"meh\"", 1},
      {"neglabel.jsonl", "{\"text\": \"a\", \"label\": 1}\n{\"text\": \"b\", \"label\": -1}\n",
       "neglabel.jsonl:2", "unknown label -1", 1},
      {"array.jsonl", "[1, 2]\n{\"text\": \"b\", \"label\": 0}\n", "array.jsonl:1",
       "JSON object", 1},
      {"textnum.jsonl", "{\"text\": 5, \"label\": 0}\n{\"text\": \"b\", \"label\": 0}\n",
       "textnum.jsonl:1", "not a string", 1},
      {"utf8.jsonl", "{\"text\": \"a\", \"label\": 1}\n{\"text\": \"caf\xe9\", \"label\": 0}\n",
       "utf8.jsonl:2", "UTF-8", 1},
      {"surrogate.jsonl", "{\"text\": \"x\\ud800y\", \"label\": 0}\n{\"text\": \"b\", \"label\": 0}\n",
       "surrogate.jsonl:1", "\"text\" is not valid UTF-8", 1},
      {"utf8.csv", "text,label\nok,1\n\"bad \xc3\x28\",0\n", "utf8.csv:3", "UTF-8", 1},
      {"quote.csv", "text,label\n\"closed\" early,1\nfine,0\n", "quote.csv:2",
       "after the closing quote", 1},
      {"open.csv", "text,label\nfine,0\n\"never closed,1\n", "open.csv:3", "never closed", 1},
      {"cols.csv", "review,sentiment\na,b,positive\nok,negative\n", "cols.csv:2",
       "3 fields, but the header has 2", 1},
      {"label.csv", "review,sentiment\nok,positive\nhm,neutral\n", "label.csv:3",
       "unknown label \"neutral\"", 1},
      {"label.tsv", "text\tlabel\nok\t1\nhm\tmaybe\n", "label.tsv:3", "unknown label", 1},
      /* item 15: a NUL must not cut a review short; a label is reported as written */
      {"nul.jsonl", "{\"text\": \"good\\u0000 then awful\", \"label\": 0}\n"
                    "{\"text\": \"a\\\\u0000b\", \"label\": 1}\n", "nul.jsonl:1",
       "a string holds \\u0000 (a NUL character)", 1},
      {"bigfloat.jsonl", "{\"text\": \"a\", \"label\": 1e20}\n{\"text\": \"b\", \"label\": 0}\n",
       "bigfloat.jsonl:1", "unknown label 1e+20", 1},
      {"fraction.jsonl", "{\"text\": \"a\", \"label\": 0}\n{\"text\": \"b\", \"label\": 0.5}\n",
       "fraction.jsonl:2", "unknown label 0.5", 1},
  };
  char *dir = tp_test_tmpdir();
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    const bad_case *c = &cases[i];
    char *path = write_file(dir, c->name, c->content, -1);
    GError *err = NULL;
    tp_dataset *d = load1(path, false, &err);
    TP_CHECK(d == NULL);
    if (err && !strstr(err->message, c->where)) TP_FAILF("%s: %s", c->name, err->message);
    if (err && !strstr(err->message, "--skip-bad")) TP_FAILF("%s: %s", c->name, err->message);
    TP_CHECK_ERROR(err, TP_ERROR_FORMAT, c->what);
    d = load1(path, true, &err);
    TP_ASSERT_NO_ERROR(err);
    if (d->n != c->n_good || d->n_skipped != 1)
      TP_FAILF("%s with skip_bad: %u records, %u skipped", c->name, d->n, d->n_skipped);
    tp_dataset_free(d);
    g_free(path);
  }
  g_free(dir);
}

TP_TEST(Malformed, PathsAndEmptyData) {
  char *dir = tp_test_tmpdir();
  GError *err = NULL;
  char *missing = g_build_filename(dir, "nope.jsonl", NULL);
  TP_CHECK(load1(missing, false, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_IO, missing);
  char *empty = write_file(dir, "empty.jsonl", "\n\n", -1);
  TP_CHECK(load1(empty, false, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "empty dataset");
  char *allbad = write_file(dir, "allbad.jsonl", "{\n", -1);
  TP_CHECK(load1(allbad, true, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "1 malformed records skipped");
  char *hdr = write_file(dir, "hdr.csv", "title,score\nx,1\n", -1);
  TP_CHECK(load1(hdr, false, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "header");
  char *nocsv = write_file(dir, "zero.csv", "", -1);
  TP_CHECK(load1(nocsv, false, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "zero.csv");
  char *txt = write_file(dir, "data.txt", "hello", -1);
  TP_CHECK(load1(txt, false, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "unknown data format");
  char *sub = g_build_filename(dir, "emptydir", NULL);
  g_mkdir_with_parents(sub, 0755);
  TP_CHECK(load1(sub, false, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "aclImdb");
  const char *none[] = {NULL};
  TP_CHECK(tp_dataset_load(none, false, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "--data");
  g_free(missing);
  g_free(empty);
  g_free(allbad);
  g_free(hdr);
  g_free(nocsv);
  g_free(txt);
  g_free(sub);
  g_free(dir);
}

/* ---------------------------------------------------------------- metrics */

TP_TEST(Metrics, ConfusionAccuracyF1) {
  tp_confusion c = {0};
  TP_CHECK_NEAR(tp_confusion_accuracy(&c), 0.0, 0);
  TP_CHECK_NEAR(tp_confusion_f1(&c), 0.0, 0);
  /* tn 50, fp 10, fn 5, tp 35. */
  for (int i = 0; i < 50; i++) tp_confusion_add(&c, 0, 0);
  for (int i = 0; i < 10; i++) tp_confusion_add(&c, 0, 1);
  for (int i = 0; i < 5; i++) tp_confusion_add(&c, 1, 0);
  for (int i = 0; i < 35; i++) tp_confusion_add(&c, 1, 1);
  TP_CHECK_INT_EQ(c.tn, 50);
  TP_CHECK_INT_EQ(c.fp, 10);
  TP_CHECK_INT_EQ(c.fn, 5);
  TP_CHECK_INT_EQ(c.tp, 35);
  TP_CHECK_NEAR(tp_confusion_accuracy(&c), 0.85, 1e-12);
  /* precision 35/45, recall 35/40: F1 = 70 / 85. */
  TP_CHECK_NEAR(tp_confusion_f1(&c), 70.0 / 85.0, 1e-12);
  tp_confusion none_pos = {.tn = 7, .fn = 3};
  TP_CHECK_NEAR(tp_confusion_f1(&none_pos), 0.0, 0);
  TP_CHECK_NEAR(tp_confusion_accuracy(&none_pos), 0.7, 1e-12);
  tp_confusion perfect = {.tn = 4, .tp = 6};
  TP_CHECK_NEAR(tp_confusion_f1(&perfect), 1.0, 1e-12);
}

/* ---- hardening: non-regular files, size limits, linear time ---- */

/* item 11: a FIFO in an aclImdb folder is refused (or skipped), never read */
TP_TEST(Malformed, FifoInAnAclImdbFolderIsNotWaitedFor) {
  char *dir = tp_test_tmpdir();
  g_free(write_file(dir, "train/pos/0_9.txt", "A fine film.", -1));
  g_free(write_file(dir, "train/neg/1_2.txt", "A dull film.", -1));
  char *fifo = g_build_filename(dir, "train", "pos", "2_8.txt", NULL);
  TP_ASSERT(mkfifo(fifo, 0644) == 0);
  GError *err = NULL;
  tp_dataset *d = load1(dir, false, &err);
  TP_CHECK(d == NULL);
  if (err && !strstr(err->message, fifo)) TP_FAILF("does not name the FIFO: %s", err->message);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "not a regular file (a FIFO");
  d = load1(dir, true, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK_INT_EQ(d->n, 2);
  TP_CHECK_INT_EQ(d->n_skipped, 1);
  tp_dataset_free(d);
  /* the same in a folder of JSON Lines */
  char *jdir = g_build_filename(dir, "jsonl", NULL);
  g_free(write_file(jdir, "a.jsonl", "{\"text\": \"x\", \"label\": 0}\n", -1));
  char *jfifo = g_build_filename(jdir, "b.jsonl", NULL);
  TP_ASSERT(mkfifo(jfifo, 0644) == 0);
  d = load1(jdir, false, &err);
  TP_CHECK(d == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "not a regular file");
  g_free(jfifo);
  g_free(jdir);
  g_free(fifo);
  g_free(dir);
}

/* item 18: a line, record or review longer than 64 MiB is a clear error */
TP_TEST(Malformed, RecordsOverTheSizeLimitAreAClearError) {
  gsize big = (64u << 20) + 16;
  char *dir = tp_test_tmpdir();
  GString *s = g_string_sized_new(big + 64);
  g_string_append(s, "{\"text\": \"a\", \"label\": 0}\n{\"text\": \"");
  for (gsize i = 0; i < big; i++) g_string_append_c(s, 'x');
  char *jl = write_file(dir, "long.jsonl", s->str, (gssize)s->len);
  GError *err = NULL;
  tp_dataset *d = load1(jl, true, &err);
  TP_CHECK(d == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "long.jsonl:2: a line longer than 64 MiB");
  /* a CSV quote that is never closed makes the rest of the file one field */
  g_string_assign(s, "text,label\nfine,0\n\"oops,1\n");
  for (gsize i = 0; i < big; i++) g_string_append_c(s, i % 80 ? 'y' : '\n');
  char *csv = write_file(dir, "open.csv", s->str, (gssize)s->len);
  d = load1(csv, true, &err);
  TP_CHECK(d == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "open.csv:3: a record longer than 64 MiB");
  g_string_free(s, TRUE);
  g_free(jl);
  g_free(csv);
  g_free(dir);
}

static double load_seconds(const char *path, guint want_n) {
  gint64 t0 = g_get_monotonic_time();
  GError *err = NULL;
  tp_dataset *d = load1(path, false, &err);
  double sec = (double)(g_get_monotonic_time() - t0) / 1e6;
  if (!d) TP_FAILF("%s: %s", path, err->message);
  else if (d->n != want_n) TP_FAILF("%s: %u records, expected %u", path, d->n, want_n);
  g_clear_error(&err);
  tp_dataset_free(d);
  return sec;
}

/* item 18: a long quoted CSV field is parsed once, not again from its start
 * after every refill (gzip refills are small: that was quadratic) */
TP_TEST(Formats, LongQuotedCsvFieldTakesLinearTime) {
  gsize big = 40u << 20;
  char *dir = tp_test_tmpdir();
  GString *field = g_string_new("text,label\n\""), *rows = g_string_new("text,label\n");
  guint32 x = 12345;
  for (gsize i = 0; i < big; i++) {
    x = x * 1103515245u + 12345u; /* letters a gzip cannot shrink much */
    char c = (char)('a' + (x >> 16) % 26);
    g_string_append_c(field, c);
    g_string_append_c(rows, c);
    if (i % 4096 == 4095) g_string_append(rows, ",1\n");
  }
  g_string_append(field, "\",1\nafter,0\n");
  g_string_append(rows, "after,0\n");
  GBytes *gf = gzip_bytes_level(field->str, field->len, 1);
  GBytes *gr = gzip_bytes_level(rows->str, rows->len, 1);
  char *pf = write_file(dir, "field.csv.gz", g_bytes_get_data(gf, NULL), (gssize)g_bytes_get_size(gf));
  char *pr = write_file(dir, "rows.csv.gz", g_bytes_get_data(gr, NULL), (gssize)g_bytes_get_size(gr));
  double t_rows = load_seconds(pr, (guint)(big / 4096) + 1);
  double t_field = load_seconds(pf, 2);
  printf("40 MiB in one quoted field: %.2f s; in 10,240 records: %.2f s\n", t_field, t_rows);
  if (t_field > 3 * t_rows + 0.5)
    TP_FAILF("one long field took %.2f s, the same bytes as records %.2f s", t_field, t_rows);
  g_bytes_unref(gf);
  g_bytes_unref(gr);
  g_string_free(field, TRUE);
  g_string_free(rows, TRUE);
  g_free(pf);
  g_free(pr);
  g_free(dir);
}
