/* cli/cmd_tokenize.c — `tensorplug tokenize`: the token ids a model sees. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-glib/json-glib.h>

#include "cli.h"
#include "tensorplug/backend.h"
#include "tensorplug/error.h"
#include "tensorplug/tokenizer.h"

/* Texts are encoded and printed in batches: enough to keep every thread
 * busy, small enough that a large stdin is never held in memory at once. */
#define BATCH_TEXTS 4096
#define BATCH_BYTES (16u << 20)

typedef struct tokenize_opts {
  tp_cli_opts o; /* vocab, model folder, threads, json; max_len 0 = no limit */
  gboolean jsonl;
} tokenize_opts;

/* A batch of texts with explicit lengths (JSONL texts may hold NUL). */
typedef struct text_batch {
  GPtrArray *texts; /* owned strings */
  GArray *lens;     /* size_t */
  size_t bytes;
} text_batch;

static void append_int(GString *out, int32_t v) {
  char buf[16];
  int n = 0;
  uint32_t u = v < 0 ? (uint32_t)0 - (uint32_t)v : (uint32_t)v;
  do {
    buf[n++] = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (v < 0) g_string_append_c(out, '-');
  while (n) g_string_append_c(out, buf[--n]);
}

/* One line per sequence: "101 7592 102" or "[101,7592,102]". */
static bool print_seqs(const tp_token_seqs *s, bool json) {
  GString *out = g_string_sized_new(1 << 16);
  bool ok = true;
  for (int64_t i = 0; i < s->n && ok; i++) {
    if (json) g_string_append_c(out, '[');
    for (int64_t k = s->offsets[i]; k < s->offsets[i + 1]; k++) {
      if (k > s->offsets[i]) g_string_append_c(out, json ? ',' : ' ');
      append_int(out, s->ids[k]);
    }
    g_string_append(out, json ? "]\n" : "\n");
    if (out->len > (1u << 20) || i + 1 == s->n) {
      ok = fwrite(out->str, 1, out->len, stdout) == out->len;
      g_string_truncate(out, 0);
    }
  }
  g_string_free(out, TRUE);
  return ok && fflush(stdout) == 0;
}

static bool encode_and_print(const tp_tokenizer *tok, const tokenize_opts *o, text_batch *b,
                             GError **err) {
  if (b->texts->len == 0) return true;
  tp_token_seqs *s = tp_tokenizer_encode_batch_len(
      tok, (const char *const *)b->texts->pdata, (const size_t *)b->lens->data,
      (int64_t)b->texts->len, o->o.max_len, o->o.ro.threads);
  bool ok = print_seqs(s, o->o.json);
  tp_token_seqs_free(s);
  g_ptr_array_set_size(b->texts, 0);
  g_array_set_size(b->lens, 0);
  b->bytes = 0;
  if (!ok)
    g_set_error(err, TP_ERROR, TP_ERROR_IO, "cannot write the ids to stdout: %s",
                g_strerror(errno));
  return ok;
}

static void batch_add(text_batch *b, char *text, size_t len) {
  g_ptr_array_add(b->texts, text);
  g_array_append_val(b->lens, len);
  b->bytes += len;
}

/* json-glib's strings end at the first NUL, so a "\u0000" escape would cut a
 * text short. Each such escape is rewritten (same length) into a
 * noncharacter U+FDD0..U+FDEF that occurs nowhere in the line, and turned
 * back into a NUL byte after parsing. Returns the sentinel, or 0 when the
 * line has no NUL escape. */
static gunichar hide_nul_escapes(char *line, size_t len) {
  bool has_nul = false;
  uint32_t used = 0; /* bit k: U+FDD0+k occurs in the line */
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)line[i];
    if (c == 0xEF && i + 2 < len && (unsigned char)line[i + 1] == 0xB7) {
      unsigned char c2 = (unsigned char)line[i + 2];
      if (c2 >= 0x90 && c2 <= 0xAF) used |= 1u << (c2 - 0x90);
    } else if (c == '\\' && i + 1 < len) {
      if (line[i + 1] == 'u' && i + 5 < len) {
        char hex[5] = {line[i + 2], line[i + 3], line[i + 4], line[i + 5], 0};
        guint64 v;
        if (g_ascii_string_to_unsigned(hex, 16, 0, 0xFFFF, &v, NULL)) {
          if (v == 0) has_nul = true;
          else if (v >= 0xFDD0 && v <= 0xFDEF) used |= 1u << (v - 0xFDD0);
        }
      }
      i++; /* skip the escaped character: "\\u0000" is not a NUL escape */
    }
  }
  if (!has_nul || used == 0xFFFFFFFFu) return 0;
  int k = 0;
  while (used & (1u << k)) k++;
  char hex[5];
  g_snprintf(hex, sizeof hex, "%04X", 0xFDD0 + k);
  for (size_t i = 0; i + 5 < len; i++) {
    if (line[i] != '\\') continue;
    if (line[i + 1] == 'u' && memcmp(line + i + 2, "0000", 4) == 0) memcpy(line + i + 2, hex, 4);
    i++;
  }
  return 0xFDD0 + (gunichar)k;
}

/* Replaces each sentinel character of text by a NUL byte; returns the length. */
static size_t restore_nuls(char *text, gunichar sentinel) {
  char pat[8];
  int plen = g_unichar_to_utf8(sentinel, pat);
  size_t r = 0, w = 0, n = strlen(text);
  while (r < n) {
    if (r + (size_t)plen <= n && memcmp(text + r, pat, (size_t)plen) == 0) {
      text[w++] = '\0';
      r += (size_t)plen;
    } else {
      text[w++] = text[r++];
    }
  }
  return w;
}

/* The "text" member of one JSONL line. */
static char *jsonl_text(JsonParser *parser, char *line, size_t len, long lineno, size_t *out_len,
                        GError **err) {
  gunichar sentinel = hide_nul_escapes(line, len);
  GError *jerr = NULL;
  if (!json_parser_load_from_data(parser, line, (gssize)len, &jerr)) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "stdin line %ld: not valid JSON: %s", lineno,
                jerr->message);
    g_error_free(jerr);
    return NULL;
  }
  JsonNode *root = json_parser_get_root(parser);
  JsonObject *o = root && JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
  JsonNode *tn = o ? json_object_get_member(o, "text") : NULL;
  if (!tn || json_node_get_value_type(tn) != G_TYPE_STRING) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "stdin line %ld: expected a JSON object with a \"text\" string, e.g. "
                "{\"text\": \"a review\"}",
                lineno);
    return NULL;
  }
  char *text = g_strdup(json_node_get_string(tn));
  *out_len = sentinel ? restore_nuls(text, sentinel) : strlen(text);
  return text;
}

/* Reads stdin line by line (plain text or JSONL) and prints in batches. */
static bool tokenize_stdin(const tp_tokenizer *tok, const tokenize_opts *o, GError **err) {
  text_batch b = {g_ptr_array_new_with_free_func(g_free), g_array_new(FALSE, FALSE, sizeof(size_t)), 0};
  JsonParser *parser = o->jsonl ? json_parser_new() : NULL;
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  long lineno = 0;
  bool ok = true;
  while (ok && (n = getline(&line, &cap, stdin)) >= 0) {
    lineno++;
    size_t len = (size_t)n;
    if (len && line[len - 1] == '\n') line[--len] = '\0';
    if (o->jsonl) {
      size_t tlen = 0;
      char *text = jsonl_text(parser, line, len, lineno, &tlen, err);
      if (!text) ok = false;
      else batch_add(&b, text, tlen);
    } else {
      batch_add(&b, g_memdup2(line, len + 1), len);
    }
    if (ok && (b.texts->len >= BATCH_TEXTS || b.bytes >= BATCH_BYTES))
      ok = encode_and_print(tok, o, &b, err);
  }
  if (ok && ferror(stdin)) {
    g_set_error(err, TP_ERROR, TP_ERROR_IO, "cannot read stdin: %s", g_strerror(errno));
    ok = false;
  }
  if (ok) ok = encode_and_print(tok, o, &b, err);
  free(line);
  if (parser) g_object_unref(parser);
  g_ptr_array_unref(b.texts);
  g_array_unref(b.lens);
  return ok;
}

static bool tokenize_args(const tp_tokenizer *tok, const tokenize_opts *o, int argc, char **argv,
                          GError **err) {
  text_batch b = {g_ptr_array_new_with_free_func(g_free), g_array_new(FALSE, FALSE, sizeof(size_t)), 0};
  for (int i = 1; i < argc; i++) batch_add(&b, g_strdup(argv[i]), strlen(argv[i]));
  bool ok = encode_and_print(tok, o, &b, err);
  g_ptr_array_unref(b.texts);
  g_array_unref(b.lens);
  return ok;
}

static const tp_cli_opt tokenize_rows[] = {
    {.name = "max-len", .kind = TP_OPT_INT, .offset = offsetof(tokenize_opts, o.max_len),
     .arg = "N", .help = "Truncate to N tokens, [CLS] and [SEP] (or <s> and </s>) included", .min = 3,
     .max = 1 << 16, .flags = TP_OPT_AUTO, .auto_value = 0, .shown_def = "no limit"},
    {.name = "jsonl", .kind = TP_OPT_FLAG, .offset = offsetof(tokenize_opts, jsonl),
     .help = "Read stdin as JSON Lines: one object with a \"text\" string per line"},
};

int tp_cmd_tokenize(int argc, char **argv) {
  tokenize_opts o = {0};
  tp_cli_opts_init(&o.o);
  o.o.max_len = 0; /* no limit */
  tp_cli_optset *set = tp_cli_optset_new("[TEXT...]",
      "Tokenizes each TEXT, or each line of stdin when no TEXT is given, with a BERT-style\n"
      "WordPiece tokenizer (BERT, DistilBERT, MPNet; ids identical to Hugging Face\n"
      "tokenizers), and prints one line per text: its ids from [CLS] to [SEP] (<s> to </s>\n"
      "for MPNet), space-separated or as a JSON array.",
      "Examples:\n"
      "  tensorplug tokenize --vocab vocab.txt \"Hello, World!\"\n"
      "      101 7592 1010 2088 999 102\n"
      "  zcat train.jsonl.gz | tensorplug tokenize --model models/bert-base-uncased --jsonl --json\n\n"
      "Special tokens written in the text ([CLS], [SEP], [MASK], [PAD], [UNK]; MPNet's <s>,\n"
      "</s>, <pad>, <mask>, [UNK] and, in any case, <unk>) are read as those tokens.\n"
      "Invalid UTF-8 bytes are dropped (each becomes U+FFFD, which the\n"
      "BERT normalizer removes). With --jsonl, texts may hold any character, escaped\n"
      "(\\n, \\u0000); a malformed line stops with an error naming its line number.\n\n"
      "Exit status: 0 success, 1 unreadable vocabulary or input, 2 bad usage.");
  tp_cli_optset_add_vocab(set, &o.o);
  tp_cli_optset_add(set, "Options", tokenize_rows, G_N_ELEMENTS(tokenize_rows), &o);
  tp_cli_optset_add_json(set, &o.o, "Print each text's ids as a JSON array");
  tp_cli_optset_add_threads(set, &o.o);
  int rc = tp_cli_optset_parse(set, &argc, &argv);
  tp_cli_optset_free(set);
  GError *err = NULL;
  tp_tokenizer *tok = NULL;
  char *path = NULL;
  if (rc >= 0) goto out;
  rc = TP_EXIT_OK;
  if (!o.o.ro.threads) o.o.ro.threads = tp_default_threads(); /* $TENSORPLUG_NUM_THREADS */
  if (o.jsonl && argc > 1)
    g_set_error(&err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                "--jsonl reads the texts from stdin: give no TEXT arguments");
  if (!err) path = tp_cli_resolve_vocab(o.o.mo.vocab, o.o.mo.model, &err);
  if (!err) tok = tp_tokenizer_load(path, &err);
  if (!err) {
    if (argc > 1) tokenize_args(tok, &o, argc, argv, &err);
    else tokenize_stdin(tok, &o, &err);
  }
  if (err) rc = tp_cli_report(err);
out:
  tp_tokenizer_free(tok);
  g_free(path);
  tp_cli_opts_clear(&o.o);
  return rc;
}
