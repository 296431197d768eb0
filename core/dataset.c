/* core/dataset.c — loading labelled text datasets: the Stanford aclImdb tree,
 * folders of JSON Lines, .jsonl[.gz] files and .csv/.tsv[.gz] files.
 *
 * Files are read as a stream (gzip through GIO's GZlibDecompressor driven by
 * hand, so multi-member .gz files work too) into one growing buffer that holds
 * at least the record being parsed. JSON lines take a fast path for flat
 * objects of strings, integers and literals; any line the fast path is not
 * sure about is handed to json-glib, which is the authority on what the line
 * means and on the error message when it is malformed. */
#include "tensorplug/dataset.h"

#include <errno.h>
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tensorplug/error.h"

#define TP_SKIP_HINT "fix the record or use --skip-bad to skip such records"
/* Labels are small non-negative integers; a larger number is far more likely
 * a wrong column (a star rating, an id) than a real class. */
#define TP_MAX_LABEL 999
/* The longest line (JSONL), record (CSV) or review file (aclImdb) read: far
 * above any review, low enough that a file without line ends or with an
 * unclosed quote fails clearly instead of filling memory. */
#define TP_MAX_RECORD_BYTES ((gsize)64 << 20)
#define TP_MAX_RECORD_TEXT "64 MiB"

/* ---------------------------------------------------------------- builder */

typedef struct {
  tp_dataset *d;
  guint cap;
} ds_builder;

static void builder_init(ds_builder *b) {
  b->d = g_new0(tp_dataset, 1);
  b->d->strings = g_string_chunk_new(1 << 20);
  b->cap = 0;
}

/* A record of file `path` that starts on line `line` (0: a whole file). */
static void builder_add(ds_builder *b, const char *text, gsize text_len, int label,
                        const char *id, gsize id_len, const char *path, guint64 line) {
  tp_dataset *d = b->d;
  if (d->n == b->cap) {
    b->cap = b->cap ? b->cap * 2 : 1024;
    d->texts = g_renew(char *, d->texts, b->cap);
    d->labels = g_renew(int, d->labels, b->cap);
    d->ids = g_renew(char *, d->ids, b->cap);
    d->where = g_renew(char *, d->where, b->cap);
  }
  d->texts[d->n] = g_string_chunk_insert_len(d->strings, text, (gssize)text_len);
  d->ids[d->n] = g_string_chunk_insert_len(d->strings, id, (gssize)id_len);
  char *w = line ? g_strdup_printf("%s:%" G_GUINT64_FORMAT, path, line) : g_strdup(path);
  d->where[d->n] = g_string_chunk_insert(d->strings, w);
  g_free(w);
  d->labels[d->n] = label;
  if (label + 1 > d->n_labels) d->n_labels = label + 1;
  d->n++;
}

void tp_dataset_free(tp_dataset *d) {
  if (!d) return;
  g_free(d->texts);
  g_free(d->labels);
  g_free(d->ids);
  g_free(d->where);
  if (d->strings) g_string_chunk_free(d->strings);
  g_free(d);
}

/* ----------------------------------------------------------------- labels */

/* Parses a label word: a non-negative integer, or pos/neg/positive/negative
 * in any case, surrounding blanks ignored. */
static bool parse_label(const char *s, gsize len, int *out) {
  while (len > 0 && g_ascii_isspace(*s)) s++, len--;
  while (len > 0 && g_ascii_isspace(s[len - 1])) len--;
  if (len == 0) return false;
  static const struct { const char *word; int label; } words[] = {
      {"pos", 1}, {"positive", 1}, {"neg", 0}, {"negative", 0}};
  for (gsize i = 0; i < G_N_ELEMENTS(words); i++) {
    if (strlen(words[i].word) == len && g_ascii_strncasecmp(s, words[i].word, len) == 0) {
      *out = words[i].label;
      return true;
    }
  }
  int v = 0;
  for (gsize i = 0; i < len; i++) {
    if (!g_ascii_isdigit(s[i])) return false;
    v = v * 10 + (s[i] - '0');
    if (v > TP_MAX_LABEL) return false;
  }
  *out = v;
  return true;
}

/* ----------------------------------------------------------------- errors */

/* A record-level problem: an error, or with skip_bad a counted skip. Returns
 * TRUE when loading may go on. */
static bool record_problem(tp_dataset *d, bool skip_bad, GError **err, const char *file,
                           guint64 line, const char *what) {
  if (skip_bad) {
    d->n_skipped++;
    return true;
  }
  if (line)
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s:%" G_GUINT64_FORMAT ": %s; %s", file, line,
                what, TP_SKIP_HINT);
  else /* a whole file */
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s: %s; %s", file, what, TP_SKIP_HINT);
  return false;
}

static bool check_utf8(const char *s, gsize len, char **what, const char *field) {
  const char *end = NULL;
  if (g_utf8_validate_len(s, len, &end)) return true;
  *what = g_strdup_printf("%s is not valid UTF-8 (bad byte at offset %" G_GSIZE_FORMAT
                          "; a NUL byte counts as invalid); re-encode the file as UTF-8",
                          field, (gsize)(end - s));
  return false;
}

/* ----------------------------------------------------------------- reader */

/* A byte stream over a file, gunzipped when the name ends in .gz, read into
 * buf[pos, len). reader_fill() keeps the unconsumed bytes and appends more. */
typedef struct {
  const char *path;
  GInputStream *in;
  GConverter *gz; /* NULL for plain files */
  guint8 *zbuf;
  gsize zpos, zlen;
  bool raw_eof;
  char *buf;
  gsize pos, len, cap;
  bool eof;
} reader;

enum { READ_CHUNK = 1 << 18, MIN_SPACE = 1 << 16 };

static void reader_close(reader *r) {
  g_clear_object(&r->in);
  g_clear_object(&r->gz);
  g_free(r->zbuf);
  g_free(r->buf);
  memset(r, 0, sizeof *r);
}

static bool reader_open(reader *r, const char *path, bool gz, GError **err) {
  memset(r, 0, sizeof *r);
  r->path = path;
  GFile *f = g_file_new_for_path(path);
  GError *e = NULL;
  r->in = G_INPUT_STREAM(g_file_read(f, NULL, &e));
  g_object_unref(f);
  if (!r->in) {
    g_set_error(err, TP_ERROR, TP_ERROR_IO, "cannot read %s: %s", path, e->message);
    g_error_free(e);
    return false;
  }
  if (gz) {
    r->gz = G_CONVERTER(g_zlib_decompressor_new(G_ZLIB_COMPRESSOR_FORMAT_GZIP));
    r->zbuf = g_malloc(READ_CHUNK);
  }
  r->cap = 4 * READ_CHUNK;
  r->buf = g_malloc(r->cap + 1);
  return true;
}

static bool raw_read(reader *r, guint8 *dst, gsize n, gsize *got, GError **err) {
  GError *e = NULL;
  gssize k = g_input_stream_read(r->in, dst, n, NULL, &e);
  if (k < 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_IO, "cannot read %s: %s", r->path, e->message);
    g_error_free(e);
    return false;
  }
  *got = (gsize)k;
  return true;
}

/* Decompresses into buf[len, cap); returns bytes written (0 only at the end). */
static bool gz_produce(reader *r, gsize *produced, GError **err) {
  *produced = 0;
  for (;;) {
    if (r->zpos == r->zlen && !r->raw_eof) {
      gsize got;
      if (!raw_read(r, r->zbuf, READ_CHUNK, &got, err)) return false;
      r->zpos = 0;
      r->zlen = got;
      if (got == 0) r->raw_eof = true;
    }
    GConverterFlags flags = r->raw_eof ? G_CONVERTER_INPUT_AT_END : G_CONVERTER_NO_FLAGS;
    gsize rd = 0, wr = 0;
    GError *e = NULL;
    GConverterResult res = g_converter_convert(r->gz, r->zbuf + r->zpos, r->zlen - r->zpos,
                                               r->buf + r->len, r->cap - r->len, flags, &rd,
                                               &wr, &e);
    if (res == G_CONVERTER_ERROR) {
      if (g_error_matches(e, G_IO_ERROR, G_IO_ERROR_PARTIAL_INPUT) && !r->raw_eof) {
        /* zlib wants more input than the chunk holds: keep the tail, read on. */
        g_error_free(e);
        memmove(r->zbuf, r->zbuf + r->zpos, r->zlen - r->zpos);
        r->zlen -= r->zpos;
        r->zpos = 0;
        gsize got;
        if (!raw_read(r, r->zbuf + r->zlen, READ_CHUNK - r->zlen, &got, err)) return false;
        if (got == 0) r->raw_eof = true;
        r->zlen += got;
        continue;
      }
      g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                  "%s: not valid gzip data (%s); check the download or decompress it yourself",
                  r->path, g_error_matches(e, G_IO_ERROR, G_IO_ERROR_PARTIAL_INPUT)
                               ? "the file is truncated" : e->message);
      g_error_free(e);
      return false;
    }
    r->zpos += rd;
    r->len += wr;
    *produced += wr;
    if (res == G_CONVERTER_FINISHED) {
      /* End of one gzip member; concatenated members (pigz, cat a.gz b.gz) go on. */
      if (r->zpos == r->zlen && !r->raw_eof) {
        gsize got;
        if (!raw_read(r, r->zbuf, READ_CHUNK, &got, err)) return false;
        r->zpos = 0;
        r->zlen = got;
        if (got == 0) r->raw_eof = true;
      }
      if (r->zpos == r->zlen && r->raw_eof) {
        r->eof = true;
        return true;
      }
      g_converter_reset(r->gz);
    }
    if (*produced > 0) return true;
  }
}

/* Moves the unconsumed bytes to the front, grows the buffer when needed and
 * appends more data. Sets r->eof once nothing is left. */
static bool reader_fill(reader *r, GError **err) {
  if (r->eof) return true;
  if (r->pos > 0) {
    memmove(r->buf, r->buf + r->pos, r->len - r->pos);
    r->len -= r->pos;
    r->pos = 0;
  }
  if (r->cap - r->len < MIN_SPACE) {
    r->cap *= 2;
    r->buf = g_realloc(r->buf, r->cap + 1);
  }
  if (r->gz) {
    gsize produced;
    return gz_produce(r, &produced, err);
  }
  gsize got;
  if (!raw_read(r, (guint8 *)r->buf + r->len, r->cap - r->len, &got, err)) return false;
  r->len += got;
  if (got == 0) r->eof = true;
  return true;
}

/* Skips a UTF-8 byte order mark at the very start of a file. */
static bool reader_skip_bom(reader *r, GError **err) {
  while (r->len < 3 && !r->eof)
    if (!reader_fill(r, err)) return false;
  if (r->len >= 3 && memcmp(r->buf, "\xEF\xBB\xBF", 3) == 0) r->pos = 3;
  return true;
}

/* --------------------------------------------------------- JSON fast path */

typedef enum { FAST_OK, FAST_FALLBACK } fast_result;

static const char *skip_ws(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) p++;
  return p;
}

static int hex4(const char *p) {
  int v = 0;
  for (int i = 0; i < 4; i++) {
    int c = p[i], h;
    if (c >= '0' && c <= '9') h = c - '0';
    else if (c >= 'a' && c <= 'f') h = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') h = c - 'A' + 10;
    else return -1;
    v = v * 16 + h;
  }
  return v;
}

/* Decodes the JSON string starting after its opening quote into out (when
 * out != NULL). Anything unusual (control bytes, NUL, lone surrogates, bad
 * escapes) is a fallback so that json-glib decides. */
static fast_result fast_string(const char **pp, const char *end, GString *out) {
  const char *p = *pp;
  for (;;) {
    const char *run = p;
    while (p < end && *p != '"' && *p != '\\' && (unsigned char)*p >= 0x20) p++;
    if (out && p > run) g_string_append_len(out, run, p - run);
    if (p >= end || (unsigned char)*p < 0x20) return FAST_FALLBACK;
    if (*p == '"') {
      *pp = p + 1;
      return FAST_OK;
    }
    if (p + 1 >= end) return FAST_FALLBACK;
    char c = p[1];
    p += 2;
    char lit;
    switch (c) {
      case '"': lit = '"'; break;
      case '\\': lit = '\\'; break;
      case '/': lit = '/'; break;
      case 'b': lit = '\b'; break;
      case 'f': lit = '\f'; break;
      case 'n': lit = '\n'; break;
      case 'r': lit = '\r'; break;
      case 't': lit = '\t'; break;
      case 'u': {
        if (end - p < 4) return FAST_FALLBACK;
        int u = hex4(p);
        p += 4;
        if (u <= 0) return FAST_FALLBACK; /* bad hex or \u0000 */
        gunichar ch = (gunichar)u;
        if (u >= 0xD800 && u <= 0xDBFF) {
          if (end - p < 6 || p[0] != '\\' || p[1] != 'u') return FAST_FALLBACK;
          int lo = hex4(p + 2);
          if (lo < 0xDC00 || lo > 0xDFFF) return FAST_FALLBACK;
          p += 6;
          ch = 0x10000 + (((gunichar)u - 0xD800) << 10) + ((gunichar)lo - 0xDC00);
        } else if (u >= 0xDC00 && u <= 0xDFFF) {
          return FAST_FALLBACK;
        }
        if (out) g_string_append_unichar(out, ch);
        continue;
      }
      default: return FAST_FALLBACK;
    }
    if (out) g_string_append_c(out, lit);
  }
}

typedef struct {
  GString *text, *id;
  bool has_text, has_id, has_label;
  bool label_is_string; /* label given as a JSON string (kept in lab_str) */
  GString *lab_str;
  gint64 label_num;
  bool id_is_num;
  gint64 id_num;
} json_rec;

/* Parses `{"k": v, ...}` where each v is a string, an integer or a literal.
 * Duplicate keys, nesting, fractions, keys with escapes: fallback. */
static fast_result fast_object(const char *p, const char *end, json_rec *rec) {
  p = skip_ws(p, end);
  if (p >= end || *p != '{') return FAST_FALLBACK;
  p = skip_ws(p + 1, end);
  if (p < end && *p == '}') return skip_ws(p + 1, end) == end ? FAST_OK : FAST_FALLBACK;
  for (;;) {
    if (p >= end || *p != '"') return FAST_FALLBACK;
    const char *k = ++p;
    while (p < end && *p != '"' && *p != '\\' && (unsigned char)*p >= 0x20) p++;
    if (p >= end || *p != '"') return FAST_FALLBACK;
    gsize klen = (gsize)(p - k);
    p = skip_ws(p + 1, end);
    if (p >= end || *p != ':') return FAST_FALLBACK;
    p = skip_ws(p + 1, end);
    if (p >= end) return FAST_FALLBACK;
    enum { K_OTHER, K_TEXT, K_LABEL, K_ID } key = K_OTHER;
    if (klen == 4 && memcmp(k, "text", 4) == 0) key = K_TEXT;
    else if (klen == 5 && memcmp(k, "label", 5) == 0) key = K_LABEL;
    else if (klen == 2 && memcmp(k, "id", 2) == 0) key = K_ID;
    bool *seen = key == K_TEXT ? &rec->has_text : key == K_LABEL ? &rec->has_label
               : key == K_ID ? &rec->has_id : NULL;
    if (seen && *seen) return FAST_FALLBACK;
    if (*p == '"') {
      GString *dst = key == K_TEXT ? rec->text : key == K_ID ? rec->id
                   : key == K_LABEL ? rec->lab_str : NULL;
      p++;
      if (fast_string(&p, end, dst) != FAST_OK) return FAST_FALLBACK;
      if (key == K_LABEL) rec->label_is_string = true;
      if (seen) *seen = true;
    } else if (*p == '-' || g_ascii_isdigit(*p)) {
      const char *n = p;
      if (*p == '-') p++;
      const char *digits = p;
      while (p < end && g_ascii_isdigit(*p)) p++;
      gsize nd = (gsize)(p - digits);
      /* Only plain integers that fit, without leading zeros, as JSON wants. */
      if (nd == 0 || nd > 15 || (nd > 1 && *digits == '0')) return FAST_FALLBACK;
      if (p < end && (*p == '.' || *p == 'e' || *p == 'E')) return FAST_FALLBACK;
      gint64 v = g_ascii_strtoll(n, NULL, 10);
      if (key == K_TEXT) return FAST_FALLBACK; /* json-glib path reports the type */
      if (key == K_LABEL) rec->label_num = v, rec->has_label = true;
      if (key == K_ID) rec->id_num = v, rec->id_is_num = true, rec->has_id = true;
    } else {
      static const char *const lits[] = {"true", "false", "null"};
      gsize i;
      for (i = 0; i < G_N_ELEMENTS(lits); i++) {
        gsize l = strlen(lits[i]);
        if ((gsize)(end - p) >= l && memcmp(p, lits[i], l) == 0) {
          p += l;
          break;
        }
      }
      if (i == G_N_ELEMENTS(lits) || key != K_OTHER) return FAST_FALLBACK;
    }
    p = skip_ws(p, end);
    if (p >= end) return FAST_FALLBACK;
    if (*p == '}') return skip_ws(p + 1, end) == end ? FAST_OK : FAST_FALLBACK;
    if (*p != ',') return FAST_FALLBACK;
    p = skip_ws(p + 1, end);
  }
}

/* An escaped NUL (\u0000, not \\u0000) somewhere in a JSON line. */
static bool has_nul_escape(const char *p, gsize len) {
  for (gsize i = 0; i < len; i++) {
    if (p[i] != '\\') continue;
    gsize run = 0;
    while (i + run < len && p[i + run] == '\\') run++;
    i += run;
    if (run % 2 == 1 && len - i >= 5 && memcmp(p + i, "u0000", 5) == 0) return true;
  }
  return false;
}

/* The json-glib path: fills rec from a parsed line, or says what is wrong. */
static bool slow_object(JsonParser *parser, const char *line, gsize len, json_rec *rec,
                        char **what) {
  GError *e = NULL;
  /* json-glib ends a string at \u0000: the rest of the review would be lost
   * without a word */
  if (has_nul_escape(line, len)) {
    *what = g_strdup("a string holds \\u0000 (a NUL character), which would cut the text "
                     "short; remove it");
    return false;
  }
  if (!json_parser_load_from_data(parser, line, (gssize)len, &e)) {
    *what = g_strdup_printf("invalid JSON (%s)", e->message);
    g_error_free(e);
    return false;
  }
  JsonNode *root = json_parser_get_root(parser);
  if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
    *what = g_strdup("expected a JSON object {\"text\": ..., \"label\": ...}");
    return false;
  }
  JsonObject *o = json_node_get_object(root);
  JsonNode *t = json_object_get_member(o, "text");
  if (t && JSON_NODE_HOLDS_VALUE(t) && json_node_get_value_type(t) == G_TYPE_STRING) {
    g_string_assign(rec->text, json_node_get_string(t));
    rec->has_text = true;
  } else if (t && !JSON_NODE_HOLDS_NULL(t)) {
    *what = g_strdup("\"text\" is not a string");
    return false;
  }
  JsonNode *l = json_object_get_member(o, "label");
  if (l && JSON_NODE_HOLDS_VALUE(l)) {
    GType ty = json_node_get_value_type(l);
    if (ty == G_TYPE_STRING) {
      g_string_assign(rec->lab_str, json_node_get_string(l));
      rec->label_is_string = true;
      rec->has_label = true;
    } else if (ty == G_TYPE_INT64) {
      rec->label_num = json_node_get_int(l);
      rec->has_label = true;
    } else if (ty == G_TYPE_DOUBLE) {
      double v = json_node_get_double(l);
      /* 1.0 written by a float column still names class 1; anything else is
       * reported as written (never as a made-up -1). */
      if (!(v >= 0 && v <= TP_MAX_LABEL && v == floor(v))) {
        *what = g_strdup_printf("unknown label %.17g (expected 0/1, pos/neg or positive/negative)",
                                v);
        return false;
      }
      rec->label_num = (gint64)v;
      rec->has_label = true;
    } else {
      *what = g_strdup("\"label\" must be 0/1 or \"pos\"/\"neg\"/\"positive\"/\"negative\"");
      return false;
    }
  } else if (l && !JSON_NODE_HOLDS_NULL(l)) {
    *what = g_strdup("\"label\" must be 0/1 or \"pos\"/\"neg\"/\"positive\"/\"negative\"");
    return false;
  }
  JsonNode *i = json_object_get_member(o, "id");
  if (i && JSON_NODE_HOLDS_VALUE(i) && json_node_get_value_type(i) == G_TYPE_STRING) {
    g_string_assign(rec->id, json_node_get_string(i));
    rec->has_id = true;
  } else if (i && JSON_NODE_HOLDS_VALUE(i) && json_node_get_value_type(i) == G_TYPE_INT64) {
    rec->id_num = json_node_get_int(i);
    rec->id_is_num = rec->has_id = true;
  } else if (i && !JSON_NODE_HOLDS_NULL(i)) {
    *what = g_strdup("\"id\" must be a string or an integer");
    return false;
  }
  return true;
}

static void json_rec_reset(json_rec *rec) {
  g_string_truncate(rec->text, 0);
  g_string_truncate(rec->id, 0);
  g_string_truncate(rec->lab_str, 0);
  rec->has_text = rec->has_id = rec->has_label = false;
  rec->label_is_string = rec->id_is_num = false;
}

typedef struct {
  ds_builder *b;
  const char *path;     /* as given, for messages */
  const char *basename; /* for default ids FILE:LINE */
  bool skip_bad;
  GString *scratch;
} load_ctx;

/* One JSON line: returns FALSE on a fatal error (err set). */
static bool jsonl_line(load_ctx *c, JsonParser *parser, json_rec *rec, const char *line,
                       gsize len, guint64 lineno, GError **err) {
  char *what = NULL;
  bool ok = true;
  json_rec_reset(rec);
  if (!check_utf8(line, len, &what, "the line")) goto bad;
  if (fast_object(line, line + len, rec) != FAST_OK) {
    json_rec_reset(rec);
    if (!slow_object(parser, line, len, rec, &what)) goto bad;
  }
  if (!rec->has_text) {
    what = g_strdup("missing \"text\"");
    goto bad;
  }
  if (!rec->has_label) {
    what = g_strdup("missing \"label\"");
    goto bad;
  }
  int label = -1;
  if (rec->label_is_string) {
    if (!parse_label(rec->lab_str->str, rec->lab_str->len, &label)) label = -1;
  } else if (rec->label_num >= 0 && rec->label_num <= TP_MAX_LABEL) {
    label = (int)rec->label_num;
  }
  if (label < 0) {
    what = rec->label_is_string
               ? g_strdup_printf("unknown label \"%.40s\" (expected 0/1, pos/neg or "
                                 "positive/negative)", rec->lab_str->str)
               : g_strdup_printf("unknown label %" G_GINT64_FORMAT " (expected 0/1, pos/neg "
                                 "or positive/negative)", rec->label_num);
    goto bad;
  }
  /* json-glib turns \u0000 into an early end of string; the text we keep is
   * what a C string holds, so check it again after decoding. */
  if (!check_utf8(rec->text->str, rec->text->len, &what, "\"text\"")) goto bad;
  if (!rec->has_id) {
    g_string_printf(rec->id, "%s:%" G_GUINT64_FORMAT, c->basename, lineno);
  } else if (rec->id_is_num) {
    g_string_printf(rec->id, "%" G_GINT64_FORMAT, rec->id_num);
  } else if (!check_utf8(rec->id->str, rec->id->len, &what, "\"id\"")) {
    goto bad;
  }
  builder_add(c->b, rec->text->str, strlen(rec->text->str), label, rec->id->str,
              strlen(rec->id->str), c->path, lineno);
  return true;
bad:
  ok = record_problem(c->b->d, c->skip_bad, err, c->path, lineno, what);
  g_free(what);
  return ok;
}

static bool load_jsonl(load_ctx *c, bool gz, GError **err) {
  reader r;
  if (!reader_open(&r, c->path, gz, err)) return false;
  JsonParser *parser = json_parser_new_immutable();
  json_rec rec = {.text = g_string_sized_new(4096), .id = g_string_new(NULL),
                  .lab_str = g_string_new(NULL)};
  guint64 lineno = 1;
  gsize scanned = 0; /* bytes after pos known to hold no '\n' */
  bool ok = reader_skip_bom(&r, err);
  while (ok) {
    char *start = r.buf + r.pos;
    char *nl = memchr(start + scanned, '\n', r.len - r.pos - scanned);
    if (!nl && !r.eof) {
      scanned = r.len - r.pos;
      if (scanned > TP_MAX_RECORD_BYTES) {
        g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s:%" G_GUINT64_FORMAT ": a line longer "
                    "than " TP_MAX_RECORD_TEXT " (the limit for one record): is this a JSON "
                    "Lines file, one object per line?", c->path, lineno);
        ok = false;
        break;
      }
      ok = reader_fill(&r, err);
      continue;
    }
    if (!nl && r.pos == r.len) break;
    gsize len = nl ? (gsize)(nl - start) : r.len - r.pos;
    gsize line_len = len;
    if (line_len > 0 && start[line_len - 1] == '\r') line_len--;
    /* Blank lines (a trailing one in particular) are not records. */
    if (skip_ws(start, start + line_len) != start + line_len)
      ok = jsonl_line(c, parser, &rec, start, line_len, lineno, err);
    r.pos += len + (nl ? 1 : 0);
    scanned = 0;
    lineno++;
  }
  g_object_unref(parser);
  g_string_free(rec.text, TRUE);
  g_string_free(rec.id, TRUE);
  g_string_free(rec.lab_str, TRUE);
  reader_close(&r);
  return ok;
}

/* -------------------------------------------------------------------- CSV */

typedef enum { CSV_RECORD, CSV_NEED_MORE, CSV_END, CSV_BAD } csv_result;

/* Parses one RFC 4180 record from p[0, n): fields go to scratch, separated
 * by NULs, with their start offsets in offs. A field that starts with a quote
 * is quoted ("" is a quote; separators and newlines are data); a quote inside
 * an unquoted field is kept as data, as most writers and readers do. */
static csv_result csv_record(const char *p, gsize n, bool eof, char sep, GString *scratch,
                             GArray *offs, gsize *consumed, guint *newlines, const char **what) {
  gsize i = 0;
  *newlines = 0;
  g_string_truncate(scratch, 0);
  g_array_set_size(offs, 0);
  if (n == 0) return eof ? CSV_END : CSV_NEED_MORE;
  for (;;) {
    guint off = (guint)scratch->len;
    g_array_append_val(offs, off);
    if (i < n && p[i] == '"') {
      i++;
      for (;;) {
        gsize run = i;
        while (i < n && p[i] != '"') {
          if (p[i] == '\n') (*newlines)++;
          i++;
        }
        g_string_append_len(scratch, p + run, (gssize)(i - run));
        if (i >= n) {
          if (!eof) return CSV_NEED_MORE;
          *what = "a quoted field is never closed (a lone \" in the text must be written "
                  "as \"\")";
          return CSV_BAD;
        }
        if (i + 1 >= n && !eof) return CSV_NEED_MORE;
        if (i + 1 < n && p[i + 1] == '"') {
          g_string_append_c(scratch, '"');
          i += 2;
          continue;
        }
        i++; /* closing quote */
        break;
      }
      if (i < n && p[i] == '\r') {
        if (i + 1 >= n && !eof) return CSV_NEED_MORE;
        if (i + 1 >= n || p[i + 1] == '\n') i++; /* CRLF, or a CR that ends the file */
      }
      if (i < n && p[i] != sep && p[i] != '\n') {
        *what = "text after the closing quote of a field (a \" inside a quoted field must "
                "be written as \"\")";
        return CSV_BAD;
      }
    } else {
      gsize run = i;
      while (i < n && p[i] != sep && p[i] != '\n') i++;
      if (i >= n && !eof) return CSV_NEED_MORE;
      gsize end = i;
      if ((i >= n || p[i] == '\n') && end > run && p[end - 1] == '\r') end--; /* CRLF */
      g_string_append_len(scratch, p + run, (gssize)(end - run));
    }
    g_string_append_c(scratch, '\0');
    if (i >= n) {
      *consumed = i;
      return CSV_RECORD;
    }
    if (p[i] == '\n') {
      *consumed = i + 1;
      return CSV_RECORD;
    }
    i++; /* separator */
  }
}

/* Where a record ends, found by one pass that can stop at the end of the
 * buffer and resume there after a refill: csv_record then parses the record
 * once, instead of again from its start after every refill (which made a
 * long quoted field quadratic). Offsets are relative to the record's start. */
typedef enum { SCAN_FIELD_START, SCAN_UNQUOTED, SCAN_QUOTED, SCAN_QUOTE_SEEN } scan_mode;
typedef struct {
  gsize at;
  scan_mode mode;
} csv_scan;

/* TRUE once p[0, n) holds the record's ending newline. */
static bool csv_find_end(const char *p, gsize n, char sep, csv_scan *s) {
  while (s->at < n) {
    char c = p[s->at];
    switch (s->mode) {
    case SCAN_QUOTED: {
      const char *q = memchr(p + s->at, '"', n - s->at);
      if (!q) {
        s->at = n;
        return false;
      }
      s->at = (gsize)(q - p) + 1;
      s->mode = SCAN_QUOTE_SEEN;
      continue;
    }
    case SCAN_QUOTE_SEEN:
      s->at++;
      if (c == '"') s->mode = SCAN_QUOTED; /* "" inside a quoted field */
      else if (c == '\n') return true;
      else s->mode = c == sep ? SCAN_FIELD_START : SCAN_UNQUOTED;
      continue;
    case SCAN_FIELD_START:
      if (c == '"') {
        s->at++;
        s->mode = SCAN_QUOTED;
        continue;
      }
      s->mode = SCAN_UNQUOTED;
      continue;
    case SCAN_UNQUOTED:
      s->at++;
      if (c == '\n') return true;
      if (c == sep) s->mode = SCAN_FIELD_START;
      continue;
    }
  }
  return false;
}

/* On a bad record with skip_bad: resume after the line it started on. */
static gsize csv_resync(const char *p, gsize n) {
  const char *nl = memchr(p, '\n', n);
  return nl ? (gsize)(nl - p) + 1 : n;
}

static int find_column(GString *scratch, GArray *offs, const char *const *names) {
  for (guint i = 0; i < offs->len; i++) {
    char *name = g_strstrip(g_strdup(scratch->str + g_array_index(offs, guint, i)));
    for (const char *const *nm = names; *nm; nm++) {
      if (g_ascii_strcasecmp(name, *nm) == 0) {
        g_free(name);
        return (int)i;
      }
    }
    g_free(name);
  }
  return -1;
}

static bool load_csv(load_ctx *c, bool gz, char sep, GError **err) {
  reader r;
  if (!reader_open(&r, c->path, gz, err)) return false;
  GString *scratch = g_string_sized_new(4096);
  GArray *offs = g_array_new(FALSE, FALSE, sizeof(guint));
  GString *id = g_string_new(NULL);
  guint64 lineno = 1;
  int text_col = -1, label_col = -1;
  guint ncols = 0;
  bool header = true;
  bool ok = reader_skip_bom(&r, err);
  csv_scan scan = {0, SCAN_FIELD_START};
  while (ok) {
    gsize consumed = 0;
    guint newlines = 0;
    const char *what = NULL;
    if (!r.eof && !csv_find_end(r.buf + r.pos, r.len - r.pos, sep, &scan)) {
      if (r.len - r.pos > TP_MAX_RECORD_BYTES) {
        g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s:%" G_GUINT64_FORMAT ": a record longer "
                    "than " TP_MAX_RECORD_TEXT " (the limit for one record or field): is a "
                    "quote never closed? (a lone \" in a text must be written as \"\")",
                    c->path, lineno);
        ok = false;
        break;
      }
      ok = reader_fill(&r, err);
      continue;
    }
    csv_result res = csv_record(r.buf + r.pos, r.len - r.pos, r.eof, sep, scratch, offs,
                                &consumed, &newlines, &what);
    scan = (csv_scan){0, SCAN_FIELD_START}; /* the next record starts a new scan */
    if (res == CSV_NEED_MORE) { /* only before the end of the file: cannot happen */
      ok = reader_fill(&r, err);
      continue;
    }
    if (res == CSV_END) break;
    if (res == CSV_BAD) {
      if (header || !c->skip_bad) {
        g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s:%" G_GUINT64_FORMAT ": %s; %s",
                    c->path, lineno, what, TP_SKIP_HINT);
        ok = false;
        break;
      }
      c->b->d->n_skipped++;
      r.pos += csv_resync(r.buf + r.pos, r.len - r.pos);
      lineno++;
      continue;
    }
    guint64 rec_line = lineno;
    r.pos += consumed;
    lineno += newlines + 1;
    if (offs->len == 1 && scratch->len == 1) continue; /* a blank line */
    if (header) {
      static const char *const text_names[] = {"text", "review", NULL};
      static const char *const label_names[] = {"label", "sentiment", NULL};
      text_col = find_column(scratch, offs, text_names);
      label_col = find_column(scratch, offs, label_names);
      if (text_col < 0 || label_col < 0) {
        g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                    "%s:%" G_GUINT64_FORMAT ": the header row has no %s column; the first "
                    "row must name the columns, with the text in \"text\" or \"review\" and "
                    "the label in \"label\" or \"sentiment\"",
                    c->path, rec_line, text_col < 0 ? "text" : "label");
        ok = false;
        break;
      }
      ncols = offs->len;
      header = false;
      continue;
    }
    char *bad = NULL;
    if (offs->len != ncols) {
      bad = g_strdup_printf("%u fields, but the header has %u (quote fields that contain "
                            "\"%s\")", offs->len, ncols, sep == '\t' ? "\\t" : ",");
    }
    const char *text = NULL;
    int label = -1;
    if (!bad) {
      text = scratch->str + g_array_index(offs, guint, text_col);
      const char *lab = scratch->str + g_array_index(offs, guint, label_col);
      if (!check_utf8(text, strlen(text), &bad, "the text")) {
      } else if (!parse_label(lab, strlen(lab), &label)) {
        bad = g_strdup_printf("unknown label \"%.40s\" (expected 0/1, pos/neg or "
                              "positive/negative)", lab);
      }
    }
    if (bad) {
      ok = record_problem(c->b->d, c->skip_bad, err, c->path, rec_line, bad);
      g_free(bad);
      continue;
    }
    g_string_printf(id, "%s:%" G_GUINT64_FORMAT, c->basename, rec_line);
    builder_add(c->b, text, strlen(text), label, id->str, id->len, c->path, rec_line);
  }
  if (ok && header) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "%s: empty file; expected a header row (text,label) and records", c->path);
    ok = false;
  }
  g_string_free(scratch, TRUE);
  g_array_free(offs, TRUE);
  g_string_free(id, TRUE);
  reader_close(&r);
  return ok;
}

/* ---------------------------------------------------------------- folders */

static bool has_suffix_ci(const char *s, const char *suffix) {
  gsize ls = strlen(s), lx = strlen(suffix);
  return ls >= lx && g_ascii_strcasecmp(s + ls - lx, suffix) == 0;
}

static int cmp_bytes(gconstpointer a, gconstpointer b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names in dir that end with one of suffixes, sorted as byte strings. Only
 * regular files (or links to them) are data: reading a FIFO would wait
 * forever, a device has no end. Anything else is a record problem (an error,
 * or skipped and counted with skip_bad). */
static GPtrArray *list_dir(ds_builder *b, bool skip_bad, const char *dir,
                           const char *const *suffixes, GError **err) {
  GError *e = NULL;
  GDir *d = g_dir_open(dir, 0, &e);
  if (!d) {
    g_set_error(err, TP_ERROR, TP_ERROR_IO, "cannot read folder %s: %s", dir, e->message);
    g_error_free(e);
    return NULL;
  }
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  const char *name;
  bool ok = true;
  while (ok && (name = g_dir_read_name(d))) {
    for (const char *const *s = suffixes; *s; s++) {
      if (!has_suffix_ci(name, *s)) continue;
      char *path = g_build_filename(dir, name, NULL);
      if (g_file_test(path, G_FILE_TEST_IS_REGULAR))
        g_ptr_array_add(names, g_strdup(name));
      else
        ok = record_problem(b->d, skip_bad, err, path, 0, "not a regular file (a FIFO, device, "
                            "socket or folder): a data folder may only hold regular files; "
                            "remove it");
      g_free(path);
      break;
    }
  }
  g_dir_close(d);
  if (!ok) {
    g_ptr_array_unref(names);
    return NULL;
  }
  g_ptr_array_sort(names, cmp_bytes);
  return names;
}

static bool is_acl_imdb(const char *dir) {
  static const char *const subs[] = {"train/pos", "train/neg", "test/pos", "test/neg"};
  for (gsize i = 0; i < G_N_ELEMENTS(subs); i++) {
    char *p = g_build_filename(dir, subs[i], NULL);
    bool yes = g_file_test(p, G_FILE_TEST_IS_DIR);
    g_free(p);
    if (yes) return true;
  }
  return false;
}

/* aclImdb: train/neg, train/pos, test/neg, test/pos, files sorted by name as
 * byte strings: the order (and ids) of the JSONL copy in shared/data/imdb, so
 * both give the same split for the same seed. */
static bool load_acl_imdb(ds_builder *b, const char *dir, bool skip_bad, GError **err) {
  static const char *const splits[] = {"train", "test"};
  static const char *const labels[] = {"neg", "pos"};
  static const char *const txt[] = {".txt", NULL};
  GString *id = g_string_new(NULL);
  bool ok = true;
  for (gsize s = 0; s < 2 && ok; s++) {
    for (int lab = 0; lab < 2 && ok; lab++) {
      char *sub = g_build_filename(dir, splits[s], labels[lab], NULL);
      if (!g_file_test(sub, G_FILE_TEST_IS_DIR)) {
        g_free(sub);
        continue;
      }
      GPtrArray *names = list_dir(b, skip_bad, sub, txt, err);
      if (!names) ok = false;
      for (guint i = 0; ok && i < names->len; i++) {
        const char *name = g_ptr_array_index(names, i);
        char *path = g_build_filename(sub, name, NULL);
        char *text = NULL;
        gsize len = 0;
        GError *e = NULL;
        GStatBuf st;
        if (g_stat(path, &st) == 0 && (guint64)st.st_size > TP_MAX_RECORD_BYTES) {
          ok = record_problem(b->d, skip_bad, err, path, 0, "larger than " TP_MAX_RECORD_TEXT
                              " (the limit for one review)");
        } else if (!g_file_get_contents(path, &text, &len, &e)) {
          g_set_error(err, TP_ERROR, TP_ERROR_IO, "cannot read %s: %s", path, e->message);
          g_error_free(e);
          ok = false;
        } else {
          char *what = NULL;
          if (check_utf8(text, len, &what, "the text")) {
            g_string_printf(id, "%s/%s/%.*s", splits[s], labels[lab],
                            (int)(strlen(name) - 4), name);
            builder_add(b, text, len, lab, id->str, id->len, path, 0);
          } else {
            ok = record_problem(b->d, skip_bad, err, path, 1, what);
            g_free(what);
          }
        }
        g_free(text);
        g_free(path);
      }
      if (names) g_ptr_array_unref(names);
      g_free(sub);
    }
  }
  g_string_free(id, TRUE);
  return ok;
}

static bool load_file(ds_builder *b, const char *path, bool skip_bad, GError **err);

static int jsonl_rank(const char *name) {
  if (g_str_has_prefix(name, "train")) return 0;
  if (g_str_has_prefix(name, "test")) return 2;
  return 1;
}

/* train* first, then other names, then test*; each group in byte order. */
static int cmp_jsonl(gconstpointer a, gconstpointer b) {
  const char *x = *(char *const *)a, *y = *(char *const *)b;
  int rx = jsonl_rank(x), ry = jsonl_rank(y);
  return rx != ry ? rx - ry : strcmp(x, y);
}

static bool load_dir(ds_builder *b, const char *dir, bool skip_bad, GError **err) {
  if (is_acl_imdb(dir)) return load_acl_imdb(b, dir, skip_bad, err);
  /* A folder that holds an aclImdb/ tree (where the tarball was unpacked). */
  char *inner = g_build_filename(dir, "aclImdb", NULL);
  if (is_acl_imdb(inner)) {
    bool ok = load_acl_imdb(b, inner, skip_bad, err);
    g_free(inner);
    return ok;
  }
  g_free(inner);
  static const char *const sfx[] = {".jsonl", ".jsonl.gz", NULL};
  GPtrArray *names = list_dir(b, skip_bad, dir, sfx, err);
  if (!names) return false;
  if (names->len == 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "%s: neither an aclImdb folder ({train,test}/{pos,neg}/*.txt) nor a folder "
                "of *.jsonl or *.jsonl.gz files; run scripts/get-imdb.sh or pass a file",
                dir);
    g_ptr_array_unref(names);
    return false;
  }
  g_ptr_array_sort(names, cmp_jsonl);
  bool ok = true;
  for (guint i = 0; ok && i < names->len; i++) {
    char *path = g_build_filename(dir, (const char *)g_ptr_array_index(names, i), NULL);
    ok = load_file(b, path, skip_bad, err);
    g_free(path);
  }
  g_ptr_array_unref(names);
  return ok;
}

static bool load_file(ds_builder *b, const char *path, bool skip_bad, GError **err) {
  bool gz = has_suffix_ci(path, ".gz");
  char *plain = gz ? g_strndup(path, strlen(path) - 3) : g_strdup(path);
  char *base = g_path_get_basename(path);
  load_ctx c = {.b = b, .path = path, .basename = base, .skip_bad = skip_bad};
  bool ok;
  if (has_suffix_ci(plain, ".jsonl") || has_suffix_ci(plain, ".ndjson")) {
    ok = load_jsonl(&c, gz, err);
  } else if (has_suffix_ci(plain, ".csv")) {
    ok = load_csv(&c, gz, ',', err);
  } else if (has_suffix_ci(plain, ".tsv")) {
    ok = load_csv(&c, gz, '\t', err);
  } else {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                "%s: unknown data format; give an aclImdb folder, a folder of *.jsonl[.gz], "
                "or a .jsonl, .csv or .tsv file (optionally .gz)", path);
    ok = false;
  }
  g_free(plain);
  g_free(base);
  return ok;
}

tp_dataset *tp_dataset_load(const char *const *paths, bool skip_bad, GError **err) {
  g_return_val_if_fail(err == NULL || *err == NULL, NULL);
  if (!paths || !paths[0]) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                "no data given; pass --data with an aclImdb folder or a .jsonl/.csv/.tsv file");
    return NULL;
  }
  ds_builder b;
  builder_init(&b);
  bool ok = true;
  for (const char *const *p = paths; ok && *p; p++) {
    if (g_file_test(*p, G_FILE_TEST_IS_DIR)) {
      ok = load_dir(&b, *p, skip_bad, err);
    } else if (!g_file_test(*p, G_FILE_TEST_EXISTS)) {
      g_set_error(err, TP_ERROR, TP_ERROR_IO,
                  "%s: no such file or folder; check --data (scripts/get-imdb.sh downloads "
                  "IMDB)", *p);
      ok = false;
    } else {
      ok = load_file(&b, *p, skip_bad, err);
    }
  }
  if (ok && b.d->n == 0) {
    char *all = g_strjoinv(", ", (char **)paths);
    if (b.d->n_skipped)
      g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                  "%s: no usable records (%u malformed records skipped)", all, b.d->n_skipped);
    else
      g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s: no records (empty dataset)", all);
    g_free(all);
    ok = false;
  }
  if (!ok) {
    tp_dataset_free(b.d);
    return NULL;
  }
  return b.d;
}

bool tp_dataset_check_labels(tp_dataset *d, int num_labels, bool skip_bad, GError **err) {
  guint kept = 0;
  for (guint i = 0; i < d->n; i++) {
    if (d->labels[i] >= 0 && d->labels[i] < num_labels) {
      d->texts[kept] = d->texts[i];
      d->labels[kept] = d->labels[i];
      d->ids[kept] = d->ids[i];
      d->where[kept] = d->where[i];
      kept++;
      continue;
    }
    if (!skip_bad) {
      g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s: label %d is not one of the model's %d "
                  "labels (0 to %d); %s", d->where[i], d->labels[i], num_labels, num_labels - 1,
                  TP_SKIP_HINT);
      return false;
    }
    d->n_skipped++;
  }
  d->n = kept;
  d->n_labels = 0;
  for (guint i = 0; i < d->n; i++) d->n_labels = MAX(d->n_labels, d->labels[i] + 1);
  if (d->n == 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "no usable records: every record's label is "
                "outside the model's %d labels (%u skipped)", num_labels, d->n_skipped);
    return false;
  }
  return true;
}
