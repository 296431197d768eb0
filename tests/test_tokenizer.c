/* tests/test_tokenizer.c — the WordPiece tokenizer against the Hugging Face
 * golden file (library and `tensorplug tokenize`), invalid UTF-8,
 * truncation, thread-count invariance, special tokens in the text,
 * vocabulary errors, post-processors, and MPNet's tokenizer (all-mpnet-base-v2)
 * on the golden texts and on its special tokens. */
#include <gio/gio.h>
#include <json-glib/json-glib.h>

#include "tensorplug/error.h"
#include "tensorplug/tokenizer.h"
#include "tp_test.h"

#define GOLDEN_RECORDS 2556

/* ---------------------------------------------------------------------- */
/* Fixtures                                                                 */

static char *shared_path(const char *rel) {
  return g_build_filename(tp_test_shared_dir(), rel, NULL);
}

static tp_tokenizer *load_bert(const char *file) {
  char *dir = g_build_filename("data", "bert-base-uncased", file, NULL);
  char *path = shared_path(dir);
  GError *err = NULL;
  tp_tokenizer *tok = tp_tokenizer_load(path, &err);
  if (!tok) TP_FAILF("loading %s: %s", path, err->message);
  g_clear_error(&err);
  g_free(dir);
  g_free(path);
  return tok;
}

/* Decodes the JSON string literal at *p (just past its opening quote) into
 * out, keeping \u0000 as a NUL byte (json-glib's strings cannot hold NUL).
 * Returns the position after the closing quote, or NULL if malformed. */
static const char *json_string_decode(const char *p, GString *out) {
  while (*p && *p != '"') {
    if (*p != '\\') {
      g_string_append_c(out, *p++);
      continue;
    }
    p++;
    switch (*p) {
    case 'n': g_string_append_c(out, '\n'); break;
    case 't': g_string_append_c(out, '\t'); break;
    case 'r': g_string_append_c(out, '\r'); break;
    case 'b': g_string_append_c(out, '\b'); break;
    case 'f': g_string_append_c(out, '\f'); break;
    case '"': case '\\': case '/': g_string_append_c(out, *p); break;
    case 'u': {
      gunichar c = 0;
      for (int k = 1; k <= 4; k++) {
        if (!g_ascii_isxdigit(p[k])) return NULL;
        c = c * 16 + (gunichar)g_ascii_xdigit_value(p[k]);
      }
      p += 4;
      if (c >= 0xD800 && c < 0xDC00 && p[1] == '\\' && p[2] == 'u') {
        gunichar lo = 0;
        for (int k = 3; k <= 6; k++) {
          if (!g_ascii_isxdigit(p[k])) return NULL;
          lo = lo * 16 + (gunichar)g_ascii_xdigit_value(p[k]);
        }
        c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
        p += 6;
      }
      if (c == 0) g_string_append_c(out, '\0');
      else g_string_append_unichar(out, c);
      break;
    }
    default: return NULL;
    }
    p++;
  }
  return *p == '"' ? p + 1 : NULL;
}

/* The string value of member `name` of the flat JSON object `line`. */
static GString *json_member_text(const char *line, const char *name) {
  char *key = g_strdup_printf("\"%s\"", name);
  const char *p = line;
  GString *out = NULL;
  while ((p = strstr(p, key))) {
    const char *q = p + strlen(key);
    while (*q == ' ') q++;
    if (*q == ':') {
      q++;
      while (*q == ' ') q++;
      if (*q == '"') {
        out = g_string_new(NULL);
        if (!json_string_decode(q + 1, out)) {
          g_string_free(out, TRUE);
          out = NULL;
        }
      }
      break;
    }
    p = q;
  }
  g_free(key);
  return out;
}

/* Lines of a .jsonl.gz file. */
static GPtrArray *read_gz_lines(const char *path) {
  GFile *f = g_file_new_for_path(path);
  GFileInputStream *fin = g_file_read(f, NULL, NULL);
  GPtrArray *lines = g_ptr_array_new_with_free_func(g_free);
  if (fin) {
    GZlibDecompressor *dec = g_zlib_decompressor_new(G_ZLIB_COMPRESSOR_FORMAT_GZIP);
    GInputStream *zin = g_converter_input_stream_new(G_INPUT_STREAM(fin), G_CONVERTER(dec));
    GDataInputStream *din = g_data_input_stream_new(zin);
    char *line;
    gsize len;
    while ((line = g_data_input_stream_read_line(din, &len, NULL, NULL))) g_ptr_array_add(lines, line);
    g_object_unref(din);
    g_object_unref(zin);
    g_object_unref(dec);
    g_object_unref(fin);
  }
  g_object_unref(f);
  return lines;
}

typedef struct golden {
  int n;
  char **names;   /* record id */
  GString **texts;
  GArray **ids;   /* expected */
} golden;

static void golden_free(golden *g) {
  for (int i = 0; i < g->n; i++) {
    g_free(g->names[i]);
    g_string_free(g->texts[i], TRUE);
    g_array_unref(g->ids[i]);
  }
  g_free(g->names);
  g_free(g->texts);
  g_free(g->ids);
  g_free(g);
}

/* The golden records with their texts (tricky ones inline, the others from
 * the IMDB train file by id). NULL (and a failure) if anything is missing. */
static golden *golden_load(void) {
  char *gpath = shared_path("reference/tokenizer/golden.jsonl.gz");
  char *ipath = shared_path("data/imdb/train.jsonl.gz");
  GPtrArray *glines = read_gz_lines(gpath), *ilines = read_gz_lines(ipath);
  GHashTable *imdb = g_hash_table_new(g_str_hash, g_str_equal);
  GPtrArray *imdb_ids = g_ptr_array_new_with_free_func(g_free);
  for (guint i = 0; i < ilines->len; i++) {
    GString *id = json_member_text(ilines->pdata[i], "id");
    if (!id) continue;
    g_hash_table_insert(imdb, id->str, ilines->pdata[i]);
    g_ptr_array_add(imdb_ids, g_string_free(id, FALSE));
  }
  golden *g = g_new0(golden, 1);
  g->names = g_new0(char *, glines->len);
  g->texts = g_new0(GString *, glines->len);
  g->ids = g_new0(GArray *, glines->len);
  bool ok = glines->len > 0 && ilines->len > 0;
  if (!ok) TP_FAILF("cannot read %s or %s", gpath, ipath);
  JsonParser *parser = json_parser_new();
  for (guint i = 0; ok && i < glines->len; i++) {
    const char *line = glines->pdata[i];
    GError *err = NULL;
    if (!json_parser_load_from_data(parser, line, -1, &err)) {
      TP_FAILF("golden line %u: %s", i + 1, err->message);
      g_error_free(err);
      ok = false;
      break;
    }
    JsonObject *o = json_node_get_object(json_parser_get_root(parser));
    const char *name = json_object_get_string_member(o, "id");
    JsonArray *arr = json_object_get_array_member(o, "ids");
    GString *text = NULL;
    if (json_object_has_member(o, "text")) {
      text = json_member_text(line, "text");
    } else {
      const char *src = g_hash_table_lookup(imdb, name);
      text = src ? json_member_text(src, "text") : NULL;
    }
    if (!text || !arr) {
      TP_FAILF("golden record %s: no text", name);
      if (text) g_string_free(text, TRUE);
      ok = false;
      break;
    }
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
    for (guint k = 0; k < json_array_get_length(arr); k++) {
      int32_t v = (int32_t)json_array_get_int_element(arr, k);
      g_array_append_val(ids, v);
    }
    g->names[g->n] = g_strdup(name);
    g->texts[g->n] = text;
    g->ids[g->n] = ids;
    g->n++;
  }
  g_object_unref(parser);
  g_hash_table_unref(imdb);
  g_ptr_array_unref(imdb_ids);
  g_ptr_array_unref(glines);
  g_ptr_array_unref(ilines);
  g_free(gpath);
  g_free(ipath);
  if (!ok) {
    golden_free(g);
    return NULL;
  }
  return g;
}

static char *ids_str(const int32_t *ids, size_t n) {
  GString *s = g_string_new("[");
  for (size_t i = 0; i < n; i++) g_string_append_printf(s, i ? ",%d" : "%d", ids[i]);
  g_string_append_c(s, ']');
  return g_string_free(s, FALSE);
}

static bool same_ids(const int32_t *a, size_t na, const GArray *b) {
  return na == b->len && (na == 0 || memcmp(a, b->data, na * sizeof(int32_t)) == 0);
}

static void report_mismatch(const golden *g, int i, const int32_t *got, size_t n, int *shown) {
  if ((*shown)++ >= 5) return;
  char *a = ids_str(got, n), *b = ids_str((const int32_t *)g->ids[i]->data, g->ids[i]->len);
  TP_FAILF("%s: got %s, expected %s", g->names[i], a, b);
  g_free(a);
  g_free(b);
}

/* Every golden record through tp_tokenizer_encode and encode_batch. */
static void check_golden_library(const char *file) {
  golden *g = golden_load();
  TP_ASSERT(g != NULL);
  TP_CHECK_INT_EQ(g->n, GOLDEN_RECORDS);
  tp_tokenizer *tok = load_bert(file);
  TP_ASSERT(tok != NULL);
  int match = 0, shown = 0;
  GArray *out = g_array_new(FALSE, FALSE, sizeof(int32_t));
  for (int i = 0; i < g->n; i++) {
    g_array_set_size(out, 0);
    int n = tp_tokenizer_encode(tok, g->texts[i]->str, g->texts[i]->len, 0, out);
    TP_CHECK_INT_EQ(n, out->len);
    if (same_ids((const int32_t *)out->data, out->len, g->ids[i])) match++;
    else report_mismatch(g, i, (const int32_t *)out->data, out->len, &shown);
  }
  TP_CHECK_INT_EQ(match, GOLDEN_RECORDS);

  const char **texts = g_new(const char *, g->n);
  size_t *lens = g_new(size_t, g->n);
  for (int i = 0; i < g->n; i++) {
    texts[i] = g->texts[i]->str;
    lens[i] = g->texts[i]->len;
  }
  tp_token_seqs *s = tp_tokenizer_encode_batch_len(tok, texts, lens, g->n, 0, 0);
  int batch_match = 0;
  shown = 0;
  for (int i = 0; i < g->n; i++) {
    const int32_t *ids = s->ids + s->offsets[i];
    size_t n = (size_t)(s->offsets[i + 1] - s->offsets[i]);
    if (same_ids(ids, n, g->ids[i])) batch_match++;
    else report_mismatch(g, i, ids, n, &shown);
  }
  TP_CHECK_INT_EQ(batch_match, GOLDEN_RECORDS);
  tp_token_seqs_free(s);
  g_free(texts);
  g_free(lens);
  g_array_unref(out);
  tp_tokenizer_free(tok);
  golden_free(g);
}

TP_TEST(Tokenizer, GoldenVocabTxt) { check_golden_library("vocab.txt"); }
TP_TEST(Tokenizer, GoldenTokenizerJson) { check_golden_library("tokenizer.json"); }

/* ---------------------------------------------------------------------- */
/* The command line                                                         */

static char *cli_path(void) { return g_build_filename(tp_test_build_dir(), "cli", "tensorplug", NULL); }

/* Appends text as a JSON string literal (NUL and controls as \u00XX). */
static void json_escape(GString *out, const char *s, size_t n) {
  g_string_append_c(out, '"');
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') g_string_append_printf(out, "\\%c", c);
    else if (c < 0x20) g_string_append_printf(out, "\\u%04x", c);
    else g_string_append_c(out, (char)c);
  }
  g_string_append_c(out, '"');
}

/* Runs the CLI with argv (NULL-terminated, after the binary) and stdin from
 * stdin_path (or /dev/null); returns the exit status, fills out and errout. */
static int run_cli(const char *const *args, const char *stdin_path, char **out, char **errout) {
  char *bin = cli_path();
  GPtrArray *argv = g_ptr_array_new();
  g_ptr_array_add(argv, bin);
  for (int i = 0; args[i]; i++) g_ptr_array_add(argv, (gpointer)args[i]);
  g_ptr_array_add(argv, NULL);
  GSubprocessLauncher *l =
      g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE);
  g_subprocess_launcher_set_stdin_file_path(l, stdin_path ? stdin_path : "/dev/null");
  GError *err = NULL;
  GSubprocess *p = g_subprocess_launcher_spawnv(l, (const char *const *)argv->pdata, &err);
  int status = -1;
  GBytes *ob = NULL, *eb = NULL;
  if (!p) {
    TP_FAILF("cannot run %s: %s", bin, err->message);
    g_clear_error(&err);
  } else if (g_subprocess_communicate(p, NULL, NULL, &ob, &eb, &err)) {
    status = g_subprocess_get_if_exited(p) ? g_subprocess_get_exit_status(p) : -1;
  } else {
    TP_FAILF("running %s: %s", bin, err->message);
    g_clear_error(&err);
  }
  gsize n;
  const char *d;
  if (out) *out = ob ? (d = g_bytes_get_data(ob, &n), g_strndup(d, n)) : g_strdup("");
  if (errout) *errout = eb ? (d = g_bytes_get_data(eb, &n), g_strndup(d, n)) : g_strdup("");
  if (ob) g_bytes_unref(ob);
  if (eb) g_bytes_unref(eb);
  if (p) g_object_unref(p);
  g_object_unref(l);
  g_ptr_array_unref(argv);
  g_free(bin);
  return status;
}

/* All golden texts as JSONL through `tensorplug tokenize --jsonl --json`. */
TP_TEST(TokenizerCli, GoldenJsonl) {
  golden *g = golden_load();
  TP_ASSERT(g != NULL);
  char *dir = tp_test_tmpdir();
  char *in = g_build_filename(dir, "texts.jsonl", NULL);
  GString *jsonl = g_string_new(NULL);
  for (int i = 0; i < g->n; i++) {
    g_string_append(jsonl, "{\"id\": ");
    json_escape(jsonl, g->names[i], strlen(g->names[i]));
    g_string_append(jsonl, ", \"text\": ");
    json_escape(jsonl, g->texts[i]->str, g->texts[i]->len);
    g_string_append(jsonl, "}\n");
  }
  TP_ASSERT(g_file_set_contents(in, jsonl->str, (gssize)jsonl->len, NULL));
  char *vocab = shared_path("data/bert-base-uncased/vocab.txt");
  const char *args[] = {"tokenize", "--vocab", vocab, "--jsonl", "--json", "--threads", "2", NULL};
  char *out = NULL, *errout = NULL;
  int status = run_cli(args, in, &out, &errout);
  TP_CHECK_INT_EQ(status, 0);
  if (status != 0) TP_FAILF("stderr: %s", errout);
  char **lines = g_strsplit(out, "\n", -1);
  int n_lines = (int)g_strv_length(lines);
  TP_CHECK_INT_EQ(n_lines, g->n + 1); /* trailing newline */
  TP_CHECK_STR_EQ(lines[n_lines - 1], "");
  int match = 0, shown = 0;
  JsonParser *parser = json_parser_new();
  for (int i = 0; i < g->n && i < n_lines; i++) {
    GArray *got = g_array_new(FALSE, FALSE, sizeof(int32_t));
    if (json_parser_load_from_data(parser, lines[i], -1, NULL) &&
        JSON_NODE_HOLDS_ARRAY(json_parser_get_root(parser))) {
      JsonArray *arr = json_node_get_array(json_parser_get_root(parser));
      for (guint k = 0; k < json_array_get_length(arr); k++) {
        int32_t v = (int32_t)json_array_get_int_element(arr, k);
        g_array_append_val(got, v);
      }
    }
    if (same_ids((const int32_t *)got->data, got->len, g->ids[i])) match++;
    else report_mismatch(g, i, (const int32_t *)got->data, got->len, &shown);
    g_array_unref(got);
  }
  TP_CHECK_INT_EQ(match, GOLDEN_RECORDS);
  g_object_unref(parser);
  g_strfreev(lines);
  g_free(out);
  g_free(errout);
  g_free(vocab);
  g_string_free(jsonl, TRUE);
  g_free(in);
  g_free(dir);
  golden_free(g);
}

TP_TEST(TokenizerCli, TextArgumentsAndPlainOutput) {
  char *vocab = shared_path("data/bert-base-uncased/vocab.txt");
  const char *args[] = {"tokenize", "--vocab", vocab, "Hello, World!", "[CLS] x", NULL};
  char *out = NULL, *errout = NULL;
  TP_CHECK_INT_EQ(run_cli(args, NULL, &out, &errout), 0);
  TP_CHECK_STR_EQ(out, "101 7592 1010 2088 999 102\n101 101 1060 102\n");
  g_free(out);
  g_free(errout);

  /* One text per stdin line, truncated. */
  char *dir = tp_test_tmpdir();
  char *in = g_build_filename(dir, "lines.txt", NULL);
  TP_ASSERT(g_file_set_contents(in, "Hello, World!\nthe the the the\n", -1, NULL));
  const char *args2[] = {"tokenize", "--vocab", vocab, "--max-len", "4", "--json", NULL};
  TP_CHECK_INT_EQ(run_cli(args2, in, &out, &errout), 0);
  TP_CHECK_STR_EQ(out, "[101,7592,1010,102]\n[101,1996,1996,102]\n");
  g_free(out);
  g_free(errout);
  g_free(in);
  g_free(dir);
  g_free(vocab);
}

TP_TEST(TokenizerCli, Errors) {
  char *vocab = shared_path("data/bert-base-uncased/vocab.txt");
  char *dir = tp_test_tmpdir();
  char *in = g_build_filename(dir, "bad.jsonl", NULL);
  TP_ASSERT(g_file_set_contents(in, "{\"text\": \"fine\"}\n{\"text\": \"broken\n", -1, NULL));
  char *out = NULL, *errout = NULL;
  const char *args[] = {"tokenize", "--vocab", vocab, "--jsonl", NULL};
  TP_CHECK_INT_EQ(run_cli(args, in, &out, &errout), 1);
  TP_CHECK(strstr(errout, "line 2") != NULL);
  g_free(out);
  g_free(errout);

  TP_ASSERT(g_file_set_contents(in, "{\"txt\": \"no text member\"}\n", -1, NULL));
  TP_CHECK_INT_EQ(run_cli(args, in, &out, &errout), 1);
  TP_CHECK(strstr(errout, "line 1") != NULL);
  g_free(out);
  g_free(errout);

  const char *bad_flag[] = {"tokenize", "--vocab", vocab, "--no-such-flag", NULL};
  TP_CHECK_INT_EQ(run_cli(bad_flag, NULL, &out, &errout), 2);
  g_free(out);
  g_free(errout);
  const char *bad_len[] = {"tokenize", "--vocab", vocab, "--max-len", "-3", "x", NULL};
  TP_CHECK_INT_EQ(run_cli(bad_len, NULL, &out, &errout), 2);
  g_free(out);
  g_free(errout);
  const char *no_vocab[] = {"tokenize", "x", NULL};
  TP_CHECK_INT_EQ(run_cli(no_vocab, NULL, &out, &errout), 2);
  g_free(out);
  g_free(errout);
  /* A --vocab that is not there, or one that is unreadable as a vocabulary, is
   * a failed input (1), like any other input file (README: exit statuses). */
  const char *missing[] = {"tokenize", "--vocab", "/nonexistent/vocab.txt", "x", NULL};
  TP_CHECK_INT_EQ(run_cli(missing, NULL, &out, &errout), 1);
  TP_CHECK(strstr(errout, "/nonexistent/vocab.txt") != NULL);
  g_free(out);
  g_free(errout);
  char *corrupt = g_build_filename(dir, "corrupt.json", NULL);
  TP_ASSERT(g_file_set_contents(corrupt, "{\"model\": {\"vocab\": ", -1, NULL));
  const char *bad_vocab[] = {"tokenize", "--vocab", corrupt, "x", NULL};
  TP_CHECK_INT_EQ(run_cli(bad_vocab, NULL, &out, &errout), 1);
  TP_CHECK(strstr(errout, "corrupt.json") != NULL);
  g_free(out);
  g_free(errout);
  g_free(corrupt);
  g_free(in);
  g_free(dir);
  g_free(vocab);
}

/* ---------------------------------------------------------------------- */
/* Behaviour                                                                */

static GArray *enc(const tp_tokenizer *tok, const char *text, size_t len, int max_len) {
  GArray *a = g_array_new(FALSE, FALSE, sizeof(int32_t));
  tp_tokenizer_encode(tok, text, len, max_len, a);
  return a;
}

static bool enc_equal(const tp_tokenizer *tok, const char *a, size_t na, const char *b) {
  GArray *x = enc(tok, a, na, 0), *y = enc(tok, b, strlen(b), 0);
  bool same = same_ids((const int32_t *)x->data, x->len, y);
  g_array_unref(x);
  g_array_unref(y);
  return same;
}

static bool enc_is(const tp_tokenizer *tok, const char *text, const int32_t *want, size_t n) {
  GArray *x = enc(tok, text, strlen(text), 0);
  bool same = x->len == n && memcmp(x->data, want, n * sizeof(int32_t)) == 0;
  if (!same) {
    char *s = ids_str((const int32_t *)x->data, x->len);
    TP_FAILF("\"%s\" gave %s", text, s);
    g_free(s);
  }
  g_array_unref(x);
  return same;
}

TP_TEST(Tokenizer, VocabularyQueries) {
  tp_tokenizer *tok = load_bert("vocab.txt");
  TP_ASSERT(tok != NULL);
  TP_CHECK_INT_EQ(tp_tokenizer_vocab_size(tok), 30522);
  TP_CHECK_INT_EQ(tp_tokenizer_cls_id(tok), 101);
  TP_CHECK_INT_EQ(tp_tokenizer_sep_id(tok), 102);
  TP_CHECK_INT_EQ(tp_tokenizer_pad_id(tok), 0);
  TP_CHECK_INT_EQ(tp_tokenizer_unk_id(tok), 100);
  TP_CHECK_INT_EQ(tp_tokenizer_token_to_id(tok, "hello"), 7592);
  TP_CHECK_INT_EQ(tp_tokenizer_token_to_id(tok, "##s"), 2015);
  TP_CHECK_INT_EQ(tp_tokenizer_token_to_id(tok, "no-such-token"), -1);
  TP_CHECK_STR_EQ(tp_tokenizer_id_to_token(tok, 101), "[CLS]");
  TP_CHECK_STR_EQ(tp_tokenizer_id_to_token(tok, 7592), "hello");
  TP_CHECK(tp_tokenizer_id_to_token(tok, 30522) == NULL);
  TP_CHECK(tp_tokenizer_id_to_token(tok, -1) == NULL);
  tp_tokenizer_free(tok);
}

TP_TEST(Tokenizer, SpecialTokensInText) {
  tp_tokenizer *tok = load_bert("tokenizer.json");
  TP_ASSERT(tok != NULL);
  static const int32_t all[] = {101, 101, 102, 103, 0, 100, 102};
  TP_CHECK(enc_is(tok, "[CLS] [SEP] [MASK] [PAD] [UNK]", all, G_N_ELEMENTS(all)));
  /* Matched inside words too, and case-sensitively (normalized: false). */
  static const int32_t glued[] = {101, 1037, 102, 1038, 102};
  TP_CHECK(enc_is(tok, "a[SEP]b", glued, G_N_ELEMENTS(glued)));
  static const int32_t lower[] = {101, 1031, 18856, 2015, 1033, 102};
  TP_CHECK(enc_is(tok, "[cls]", lower, G_N_ELEMENTS(lower)));
  static const int32_t partial[] = {101, 1031, 18856, 2015, 102};
  TP_CHECK(enc_is(tok, "[CLS", partial, G_N_ELEMENTS(partial)));
  /* A NUL inside breaks the match: the normalizer drops it only afterwards. */
  static const int32_t broken[] = {101, 1031, 18856, 2015, 1033, 102};
  GArray *x = enc(tok, "[CL\0S]", 6, 0);
  TP_CHECK(same_ids(broken, G_N_ELEMENTS(broken), x));
  g_array_unref(x);
  tp_tokenizer_free(tok);
}

TP_TEST(Tokenizer, InvalidUtf8) {
  tp_tokenizer *tok = load_bert("vocab.txt");
  TP_ASSERT(tok != NULL);
  /* Each invalid byte becomes U+FFFD, which clean_text drops: the pieces
   * around it join. */
  TP_CHECK(enc_equal(tok, "hello\xffworld", 11, "helloworld"));
  TP_CHECK(enc_equal(tok, "caf\xc3 bar", 8, "caf bar"));              /* truncated sequence */
  TP_CHECK(enc_equal(tok, "a\xc0\xafz", 4, "az"));                    /* overlong '/' */
  TP_CHECK(enc_equal(tok, "x\xed\xa0\x80y", 5, "xy"));                /* surrogate */
  TP_CHECK(enc_equal(tok, "x\xf4\x90\x80\x80y", 6, "xy"));            /* > U+10FFFF */
  TP_CHECK(enc_equal(tok, "end\xe2\x82", 5, "end"));                  /* cut at the end */
  TP_CHECK(enc_equal(tok, "\x80\x80\x80", 3, ""));
  TP_CHECK(enc_equal(tok, "caf\xc3\xa9", 5, "cafe"));                 /* valid: e-acute */

  /* Random bytes: never a crash, always [CLS] ... [SEP] with valid ids. */
  GRand *r = g_rand_new_with_seed(42);
  char buf[257];
  int bad = 0;
  for (int iter = 0; iter < 5000; iter++) {
    int n = g_rand_int_range(r, 0, 256);
    for (int i = 0; i < n; i++) buf[i] = (char)g_rand_int_range(r, 0, 256);
    GArray *a = enc(tok, buf, (size_t)n, 0);
    const int32_t *ids = (const int32_t *)a->data;
    if (a->len < 2 || ids[0] != 101 || ids[a->len - 1] != 102) bad++;
    for (guint i = 0; i < a->len; i++)
      if (ids[i] < 0 || ids[i] >= 30522) bad++;
    g_array_unref(a);
  }
  TP_CHECK_INT_EQ(bad, 0);
  g_rand_free(r);
  tp_tokenizer_free(tok);
}

TP_TEST(Tokenizer, Truncation) {
  tp_tokenizer *tok = load_bert("vocab.txt");
  TP_ASSERT(tok != NULL);
  const char *text = "This movie was terrible. I want my 2 hours back!!! unbelievably bad";
  GArray *full = enc(tok, text, strlen(text), 0);
  TP_ASSERT(full->len > 12);
  const int32_t *f = (const int32_t *)full->data;
  for (int max_len = 3; max_len <= 12; max_len++) {
    GArray *t = enc(tok, text, strlen(text), max_len);
    const int32_t *ids = (const int32_t *)t->data;
    TP_CHECK_INT_EQ(t->len, max_len);
    TP_CHECK(memcmp(ids, f, (size_t)(max_len - 1) * sizeof(int32_t)) == 0);
    TP_CHECK_INT_EQ(ids[t->len - 1], 102);
    g_array_unref(t);
  }
  /* A limit above the length changes nothing; 1 or 2 leave [CLS] [SEP]. */
  GArray *same = enc(tok, text, strlen(text), (int)full->len);
  TP_CHECK(same_ids(f, full->len, same));
  g_array_unref(same);
  static const int32_t bare[] = {101, 102};
  for (int max_len = 1; max_len <= 2; max_len++) {
    GArray *t = enc(tok, text, strlen(text), max_len);
    TP_CHECK(same_ids(bare, 2, t));
    g_array_unref(t);
  }
  /* Truncation inside a word split into pieces: "unbelievably" is 4 pieces. */
  static const int32_t cut[] = {101, 4895, 8671, 102};
  GArray *t = enc(tok, "unbelievably", 12, 4);
  TP_CHECK(same_ids(cut, 4, t));
  g_array_unref(t);
  /* The batch gives the same as one at a time. */
  const char *texts[] = {text, "short", ""};
  tp_token_seqs *s = tp_tokenizer_encode_batch(tok, texts, 3, 8, 2);
  TP_CHECK_INT_EQ(s->offsets[1] - s->offsets[0], 8);
  TP_CHECK_INT_EQ(s->offsets[2] - s->offsets[1], 3);
  TP_CHECK_INT_EQ(s->offsets[3] - s->offsets[2], 2);
  TP_CHECK(memcmp(s->ids, f, 7 * sizeof(int32_t)) == 0);
  tp_token_seqs_free(s);
  g_array_unref(full);
  tp_tokenizer_free(tok);
}

TP_TEST(Tokenizer, LongWordsAreUnknown) {
  tp_tokenizer *tok = load_bert("vocab.txt");
  TP_ASSERT(tok != NULL);
  char word[202];
  memset(word, 'a', sizeof word);
  word[100] = '\0'; /* 100 chars: split into pieces */
  GArray *a = enc(tok, word, 100, 0);
  TP_CHECK(a->len > 3);
  g_array_unref(a);
  static const int32_t unk[] = {101, 100, 102};
  word[100] = 'a';
  word[101] = '\0'; /* 101 chars: [UNK] */
  TP_CHECK(enc_is(tok, word, unk, 3));
  /* Characters, not bytes: 60 two-byte letters form a word of 60 chars. */
  GString *s = g_string_new(NULL);
  for (int i = 0; i < 60; i++) g_string_append(s, "\xc3\xa9"); /* e-acute -> e */
  GArray *b = enc(tok, s->str, s->len, 0);
  TP_CHECK(b->len > 3);
  g_array_unref(b);
  g_string_free(s, TRUE);
  tp_tokenizer_free(tok);
}

TP_TEST(Tokenizer, ThreadCountInvariance) {
  golden *g = golden_load();
  TP_ASSERT(g != NULL);
  tp_tokenizer *tok = load_bert("vocab.txt");
  TP_ASSERT(tok != NULL);
  const char **texts = g_new(const char *, g->n);
  for (int i = 0; i < g->n; i++) texts[i] = g->texts[i]->str;
  tp_token_seqs *ref = tp_tokenizer_encode_batch(tok, texts, g->n, 0, 1);
  TP_CHECK_INT_EQ(ref->n, g->n);
  static const int threads[] = {2, 3, 7, 0};
  for (guint t = 0; t < G_N_ELEMENTS(threads); t++) {
    for (int max_len = 0; max_len <= 64; max_len += 64) {
      tp_token_seqs *s = tp_tokenizer_encode_batch(tok, texts, g->n, max_len, threads[t]);
      tp_token_seqs *r = max_len ? tp_tokenizer_encode_batch(tok, texts, g->n, max_len, 1) : ref;
      TP_CHECK_INT_EQ(s->n, r->n);
      TP_CHECK(memcmp(s->offsets, r->offsets, (size_t)(g->n + 1) * sizeof(int64_t)) == 0);
      TP_CHECK(memcmp(s->ids, r->ids, (size_t)r->offsets[g->n] * sizeof(int32_t)) == 0);
      tp_token_seqs_free(s);
      if (r != ref) tp_token_seqs_free(r);
    }
  }
  /* An empty batch. */
  tp_token_seqs *e = tp_tokenizer_encode_batch(tok, texts, 0, 0, 4);
  TP_CHECK_INT_EQ(e->n, 0);
  TP_CHECK_INT_EQ(e->offsets[0], 0);
  tp_token_seqs_free(e);
  tp_token_seqs_free(ref);
  g_free(texts);
  tp_tokenizer_free(tok);
  golden_free(g);
}

/* ---------------------------------------------------------------------- */
/* Vocabulary errors                                                        */

static tp_tokenizer *load_text(const char *dir, const char *name, const char *contents,
                               gssize len, GError **err) {
  char *path = g_build_filename(dir, name, NULL);
  g_file_set_contents(path, contents, len, NULL);
  tp_tokenizer *tok = tp_tokenizer_load(path, err);
  g_free(path);
  return tok;
}

TP_TEST(Tokenizer, VocabularyErrors) {
  GError *err = NULL;
  TP_CHECK(tp_tokenizer_load("/nonexistent/dir/vocab.txt", &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_IO, "/nonexistent/dir/vocab.txt");

  char *dir = tp_test_tmpdir();
  TP_CHECK(load_text(dir, "empty.txt", "", 0, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "empty");
  TP_CHECK(load_text(dir, "nocls.txt", "[PAD]\n[UNK]\n[SEP]\nhello\n", -1, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "[CLS]");
  TP_CHECK(load_text(dir, "binary.txt", "[PAD]\n\xff\xfe\x00\x01garbage\n", 15, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "line 2");
  TP_CHECK(load_text(dir, "cut.json", "{\"model\": {\"vocab\": {\"[UNK]\": 0,", -1, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "not valid JSON");
  TP_CHECK(load_text(dir, "novocab.json", "{\"model\": {}}", -1, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "model.vocab");
  TP_CHECK(load_text(dir, "bpe.json",
                     "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}},"
                     " \"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}}",
                     -1, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "BPE");
  TP_CHECK(load_text(dir, "badid.json",
                     "{\"model\": {\"vocab\": {\"a\": \"zero\"}},"
                     " \"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}}",
                     -1, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "model.vocab['a']");

  /* A small valid vocabulary works, ids by line. */
  tp_tokenizer *tok = load_text(dir, "tiny.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhi\n##s\n", -1, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_ASSERT(tok != NULL);
  static const int32_t his[] = {2, 4, 5, 1, 3};
  TP_CHECK(enc_is(tok, "HIS yo", his, G_N_ELEMENTS(his)));
  tp_tokenizer_free(tok);
  g_free(dir);
}

/* item 5: the padding token a tokenizer.json declares; [PAD] otherwise */
TP_TEST(Tokenizer, DeclaredPaddingTokenWinsOverPad) {
  char *dir = tp_test_tmpdir(), *path = g_build_filename(dir, "tokenizer.json", NULL);
  const char *head = "{\"normalizer\": {\"type\": \"BertNormalizer\"}, \"pre_tokenizer\": {\"type\": "
                     "\"BertPreTokenizer\"}, ";
  const char *model = "\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"[UNK]\": 0, \"[CLS]\": "
                      "1, \"[SEP]\": 2, \"<pad>\": 3, \"[PAD]\": 4}}}";
  char *text = g_strconcat(head, "\"padding\": {\"pad_token\": \"<pad>\", \"pad_id\": 3}, ", model,
                           NULL);
  TP_ASSERT(g_file_set_contents(path, text, -1, NULL));
  GError *err = NULL;
  tp_tokenizer *t = tp_tokenizer_load(path, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK_INT_EQ(tp_tokenizer_pad_id(t), 3);
  tp_tokenizer_free(t);
  g_free(text);
  text = g_strconcat(head, model, NULL);
  TP_ASSERT(g_file_set_contents(path, text, -1, NULL));
  t = tp_tokenizer_load(path, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK_INT_EQ(tp_tokenizer_pad_id(t), 4);
  tp_tokenizer_free(t);
  g_free(text);
  text = g_strconcat(head, "\"padding\": {\"pad_token\": \"<nope>\"}, ", model, NULL);
  TP_ASSERT(g_file_set_contents(path, text, -1, NULL));
  t = tp_tokenizer_load(path, &err);
  TP_CHECK(t == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "padding.pad_token '<nope>' is not in the vocabulary");
  g_free(text);
  g_free(path);
}

/* ---------------------------------------------------------------------- */
/* MPNet: all-mpnet-base-v2's tokenizer.json (tests/data/mpnet-tokenizer/,  */
/* gzipped): <s> ... </s>, <pad> 1, "<unk>" matched after normalization.    */

/* The tokenizer.json, decompressed once into a temporary folder. */
static const char *mpnet_json_path(void) {
  static char *path;
  if (path) return path;
  char *gz = g_build_filename(tp_test_source_dir(), "tests", "data", "mpnet-tokenizer",
                              "tokenizer.json.gz", NULL);
  GFile *f = g_file_new_for_path(gz);
  GFileInputStream *fin = g_file_read(f, NULL, NULL);
  GByteArray *bytes = g_byte_array_new();
  if (fin) {
    GZlibDecompressor *dec = g_zlib_decompressor_new(G_ZLIB_COMPRESSOR_FORMAT_GZIP);
    GInputStream *zin = g_converter_input_stream_new(G_INPUT_STREAM(fin), G_CONVERTER(dec));
    guint8 buf[65536];
    gssize n;
    while ((n = g_input_stream_read(zin, buf, sizeof buf, NULL, NULL)) > 0)
      g_byte_array_append(bytes, buf, (guint)n);
    g_object_unref(zin);
    g_object_unref(dec);
    g_object_unref(fin);
  }
  g_object_unref(f);
  char *dir = tp_test_tmpdir();
  char *out = g_build_filename(dir, "tokenizer.json", NULL);
  if (bytes->len > 0 && g_file_set_contents(out, (const char *)bytes->data, bytes->len, NULL)) {
    path = out;
  } else {
    TP_FAILF("cannot read %s", gz);
    g_free(out);
  }
  g_byte_array_unref(bytes);
  g_free(dir);
  g_free(gz);
  return path;
}

static tp_tokenizer *load_mpnet(void) {
  const char *path = mpnet_json_path();
  if (!path) return NULL;
  GError *err = NULL;
  tp_tokenizer *tok = tp_tokenizer_load(path, &err);
  if (!tok) TP_FAILF("loading %s: %s", path, err->message);
  g_clear_error(&err);
  return tok;
}

/* Hugging Face's MPNet ids for every golden text: the records of
 * golden-delta.jsonl.gz in full, the others BERT's golden ids shifted by 4
 * with <s> and </s> at the ends (tests/reference/mpnet_tokenizer_golden.py
 * made the file and checked the shift on every other record). */
TP_TEST(MPNetTokenizer, GoldenTexts) {
  golden *g = golden_load();
  TP_ASSERT(g != NULL);
  TP_CHECK_INT_EQ(g->n, GOLDEN_RECORDS);
  char *dpath = g_build_filename(tp_test_source_dir(), "tests", "data", "mpnet-tokenizer",
                                 "golden-delta.jsonl.gz", NULL);
  GPtrArray *dlines = read_gz_lines(dpath);
  TP_CHECK(dlines->len >= 1); /* tricky/050 writes [CLS] [SEP] ... in the text */
  GHashTable *delta = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                            (GDestroyNotify)g_array_unref);
  JsonParser *parser = json_parser_new();
  for (guint i = 0; i < dlines->len; i++) {
    TP_ASSERT(json_parser_load_from_data(parser, dlines->pdata[i], -1, NULL));
    JsonObject *o = json_node_get_object(json_parser_get_root(parser));
    JsonArray *arr = json_object_get_array_member(o, "ids");
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
    for (guint k = 0; k < json_array_get_length(arr); k++) {
      int32_t v = (int32_t)json_array_get_int_element(arr, k);
      g_array_append_val(ids, v);
    }
    g_hash_table_insert(delta, g_strdup(json_object_get_string_member(o, "id")), ids);
  }
  g_object_unref(parser);
  for (int i = 0; i < g->n; i++) { /* the expected ids replace BERT's */
    GArray *want = g_hash_table_lookup(delta, g->names[i]);
    if (want) {
      g_array_set_size(g->ids[i], 0);
      g_array_append_vals(g->ids[i], want->data, want->len);
      continue;
    }
    int32_t *x = (int32_t *)g->ids[i]->data;
    for (guint k = 0; k < g->ids[i]->len; k++) x[k] += 4;
    x[0] = 0;
    x[g->ids[i]->len - 1] = 2;
  }
  tp_tokenizer *tok = load_mpnet();
  TP_ASSERT(tok != NULL);
  const char **texts = g_new(const char *, g->n);
  size_t *lens = g_new(size_t, g->n);
  for (int i = 0; i < g->n; i++) {
    texts[i] = g->texts[i]->str;
    lens[i] = g->texts[i]->len;
  }
  tp_token_seqs *s = tp_tokenizer_encode_batch_len(tok, texts, lens, g->n, 0, 2);
  int match = 0, shown = 0;
  for (int i = 0; i < g->n; i++) {
    const int32_t *ids = s->ids + s->offsets[i];
    size_t n = (size_t)(s->offsets[i + 1] - s->offsets[i]);
    if (same_ids(ids, n, g->ids[i])) match++;
    else report_mismatch(g, i, ids, n, &shown);
  }
  TP_CHECK_INT_EQ(match, GOLDEN_RECORDS);
  tp_token_seqs_free(s);
  g_free(texts);
  g_free(lens);
  tp_tokenizer_free(tok);
  g_hash_table_unref(delta);
  g_ptr_array_unref(dlines);
  g_free(dpath);
  golden_free(g);
}

/* Ids from Hugging Face `tokenizers` 0.20.3 (Tokenizer.from_file(...).encode). */
TP_TEST(MPNetTokenizer, SpecialTokens) {
  tp_tokenizer *tok = load_mpnet();
  TP_ASSERT(tok != NULL);
  TP_CHECK_INT_EQ(tp_tokenizer_vocab_size(tok), 30527);
  TP_CHECK_INT_EQ(tp_tokenizer_cls_id(tok), 0);   /* <s>, from RobertaProcessing */
  TP_CHECK_INT_EQ(tp_tokenizer_sep_id(tok), 2);   /* </s> */
  TP_CHECK_INT_EQ(tp_tokenizer_pad_id(tok), 1);   /* <pad>, from padding.pad_id */
  TP_CHECK_INT_EQ(tp_tokenizer_unk_id(tok), 104); /* [UNK] */
  static const int32_t mix[] = {0, 7596, 1014, 2092, 1003, 3, 3, 3, 1041, 3, 1042, 0, 2,
                                1, 30526, 104, 1035, 18860, 2019, 1037, 1064, 1030, 4899, 2};
  TP_CHECK(enc_is(tok, "Hello, World! <unk> <UNK> \xe2\x89\xaeunk> a<unk>b <s> </s> <pad> "
                       "<mask> [UNK] [CLS] x<un", mix, G_N_ELEMENTS(mix)));
  /* "<unk>" says normalized: true: it is matched after the normalizer, so a
   * dropped control character inside, upper case or an accent still match */
  static const int32_t unk[] = {0, 3, 2};
  TP_CHECK(enc_is(tok, "<u\x01nk>", unk, G_N_ELEMENTS(unk)));
  TP_CHECK(enc_is(tok, "<UNK\xcc\x80>", unk, G_N_ELEMENTS(unk)));
  static const int32_t cut[] = {0, 1064, 1030, 4899, 2247, 2}; /* an unfinished match */
  TP_CHECK(enc_is(tok, "x<unk", cut, G_N_ELEMENTS(cut)));
  static const int32_t nested[] = {0, 1030, 3, 1032, 2};
  TP_CHECK(enc_is(tok, "<<unk>>", nested, G_N_ELEMENTS(nested)));
  /* raw added tokens split the text first: no <unk> across [UNK] */
  static const int32_t split[] = {0, 1030, 4899, 104, 1051, 1032, 2};
  TP_CHECK(enc_is(tok, "<un[UNK]k>", split, G_N_ELEMENTS(split)));
  static const int32_t cjk[] = {0, 7672, 3, 1750, 2};
  TP_CHECK(enc_is(tok, "caf\xc3\xa9 <unk>\xe4\xb8\xad", cjk, G_N_ELEMENTS(cjk)));
  static const int32_t twice[] = {0, 3, 3, 2};
  TP_CHECK(enc_is(tok, "<unk><unk>", twice, G_N_ELEMENTS(twice)));
  /* truncation keeps <s> and </s> */
  static const int32_t trunc[] = {0, 7596, 1014, 2};
  GArray *x = enc(tok, "Hello, World! <unk>", 19, 4);
  TP_CHECK(same_ids(trunc, G_N_ELEMENTS(trunc), x));
  g_array_unref(x);
  tp_tokenizer_free(tok);
}

/* MPNet's vocab.txt alone: the special tokens of HF's MPNetTokenizer
 * (<s> </s> <pad> <mask> [UNK]); "<unk>" is then ordinary text. Expected ids
 * from transformers 4.46.3 MPNetTokenizer(vocab.txt) and MPNetTokenizerFast. */
TP_TEST(MPNetTokenizer, VocabTxtLikeMPNetTokenizer) {
  tp_tokenizer *json = load_mpnet();
  TP_ASSERT(json != NULL);
  GString *lines = g_string_new(NULL);
  for (int32_t i = 0; i < tp_tokenizer_vocab_size(json); i++)
    g_string_append_printf(lines, "%s\n", tp_tokenizer_id_to_token(json, i));
  tp_tokenizer_free(json);
  char *dir = tp_test_tmpdir();
  GError *err = NULL;
  tp_tokenizer *tok = load_text(dir, "vocab.txt", lines->str, (gssize)lines->len, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK_INT_EQ(tp_tokenizer_cls_id(tok), 0);
  TP_CHECK_INT_EQ(tp_tokenizer_sep_id(tok), 2);
  TP_CHECK_INT_EQ(tp_tokenizer_pad_id(tok), 1);
  TP_CHECK_INT_EQ(tp_tokenizer_unk_id(tok), 104);
  static const int32_t mix[] = {0, 7596, 1014, 2092, 1003, 1030, 4899, 2247, 1032, 1030, 4899,
                                2247, 1032, 1030, 4899, 2247, 1032, 1041, 1030, 4899, 2247, 1032,
                                1042, 0, 2, 1, 30526, 104, 1035, 18860, 2019, 1037, 1064, 1030,
                                4899, 2};
  TP_CHECK(enc_is(tok, "Hello, World! <unk> <UNK> \xe2\x89\xaeunk> a<unk>b <s> </s> <pad> "
                       "<mask> [UNK] [CLS] x<un", mix, G_N_ELEMENTS(mix)));
  tp_tokenizer_free(tok);
  g_string_free(lines, TRUE);
  g_free(dir);
}

/* Post-processors: supported ones give the start/end ids, others are refused
 * with the file's name. */
TP_TEST(Tokenizer, PostProcessors) {
  char *dir = tp_test_tmpdir();
  GError *err = NULL;
  const char *head = "{\"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}, \"model\": {\"type\": "
                     "\"WordPiece\", \"vocab\": {\"[UNK]\": 0, \"<go>\": 1, \"<end>\": 2, "
                     "\"hi\": 3}}, \"post_processor\": ";
  char *text = g_strdup_printf("%s{\"type\": \"TemplateProcessing\", \"single\": ["
                               "{\"SpecialToken\": {\"id\": \"<go>\", \"type_id\": 0}}, "
                               "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}, "
                               "{\"SpecialToken\": {\"id\": \"<end>\", \"type_id\": 0}}], "
                               "\"special_tokens\": {\"<go>\": {\"id\": \"<go>\", \"ids\": [1]}, "
                               "\"<end>\": {\"id\": \"<end>\", \"ids\": [2]}}}}", head);
  tp_tokenizer *tok = load_text(dir, "template.json", text, -1, &err);
  TP_ASSERT_NO_ERROR(err);
  static const int32_t hi[] = {1, 3, 0, 2};
  TP_CHECK(enc_is(tok, "hi yo", hi, G_N_ELEMENTS(hi)));
  TP_CHECK_INT_EQ(tp_tokenizer_pad_id(tok), -1); /* no [PAD], no padding section */
  tp_tokenizer_free(tok);
  g_free(text);
  text = g_strdup_printf("%s{\"type\": \"BertProcessing\", \"cls\": [\"<end>\", 2], "
                         "\"sep\": [\"<go>\", 1]}}", head);
  tok = load_text(dir, "bertproc.json", text, -1, &err);
  TP_ASSERT_NO_ERROR(err);
  static const int32_t swapped[] = {2, 3, 1};
  TP_CHECK(enc_is(tok, "hi", swapped, G_N_ELEMENTS(swapped)));
  tp_tokenizer_free(tok);
  g_free(text);
  text = g_strdup_printf("%s{\"type\": \"ByteLevel\"}}", head);
  TP_CHECK(load_text(dir, "bytelevel.json", text, -1, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "post_processor type 'ByteLevel' is not supported");
  g_free(text);
  text = g_strdup_printf("%s{\"type\": \"TemplateProcessing\", \"single\": [{\"Sequence\": "
                         "{\"id\": \"A\", \"type_id\": 0}}], \"special_tokens\": {}}}", head);
  TP_CHECK(load_text(dir, "nospecials.json", text, -1, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "nospecials.json': post_processor template");
  g_free(text);
  text = g_strdup_printf("%s{\"type\": \"RobertaProcessing\", \"cls\": [\"<s>\", 7], "
                         "\"sep\": [\"</s>\", 2]}}", head);
  TP_CHECK(load_text(dir, "outofrange.json", text, -1, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "not ids of the vocabulary");
  g_free(text);
  g_free(dir);
}
