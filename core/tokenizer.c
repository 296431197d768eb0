/* core/tokenizer.c — BERT-style WordPiece with the exact behaviour of Hugging
 * Face `tokenizers` (BertNormalizer + BertPreTokenizer + WordPiece + added
 * tokens matched in the raw text, or in the normalized text when they say
 * "normalized": true; the start/end tokens of the post-processor: [CLS]/[SEP]
 * for BERT, <s>/</s> for MPNet).
 *
 * Design (see docs/tokenizer.md):
 *  - One pass over the raw bytes. ASCII bytes are classified by a 128-entry
 *    table built at load time (word byte already lowercased / whitespace /
 *    punctuation / dropped control), which gives the same result as the full
 *    Unicode pipeline for them. Any other byte sequence is decoded (invalid
 *    bytes become U+FFFD) and goes through the Unicode path for that one
 *    character: clean_text, CJK isolation, NFD + drop Mn, lowercase, then
 *    the pre-tokenizer's whitespace/punctuation split. Normalizing character
 *    by character is what HF does too (its lowercase and NFD are per char;
 *    only canonical reordering of combining marks crosses characters, and
 *    those marks are dropped).
 *  - The vocabulary lives in two open-addressing hash tables of 8-byte slots
 *    (whole tokens, and continuation tokens keyed without their "##"), so a
 *    lookup hashes bytes in place: no allocation per word or per token.
 *  - WordPiece computes the prefix hashes of the remaining word once and then
 *    probes from the longest candidate down.
 *  - Batches are split into chunks that worker threads take in turn; each
 *    chunk's ids are stored separately and concatenated in order, so the
 *    result does not depend on the thread count or on scheduling. */
#include "tensorplug/tokenizer.h"

#include <string.h>

#include <json-glib/json-glib.h>

#include "tensorplug/error.h"
#include "tensorplug/memory.h"
#include "tokenizer_code_id.h"
#include "tokenizer_unicode.h"

/* Byte classes of the ASCII fast path. BC_SLOW is not in the tables: it
 * sends one character through the normalized path while a normalized added
 * token may be under way. */
enum { BC_WORD = 0, BC_SPACE, BC_PUNCT, BC_DROP, BC_NONASCII, BC_ADDED, BC_SLOW };

#define HASH_SEED 0xcbf29ce484222325ULL
#define HASH_MUL 0x100000001b3ULL

typedef struct vocab_slot {
  uint32_t tag; /* high half of the finished hash */
  int32_t id;   /* -1: empty */
} vocab_slot;

typedef struct vocab_table {
  vocab_slot *slots;
  uint32_t mask;
  size_t skip;    /* bytes of the stored token before the key ("##" for continuations) */
  size_t max_key; /* longest key in bytes: longer candidates cannot match */
} vocab_table;

typedef struct added_token {
  char *text;
  size_t len;
  int32_t id;
} added_token;

struct tp_tokenizer {
  int32_t n_ids;      /* largest id + 1 */
  char **id_tokens;   /* id -> token (in pool), NULL for ids nobody uses */
  uint32_t *id_lens;  /* id -> byte length */
  GStringChunk *pool; /* owns the token strings */
  vocab_table words;  /* every vocabulary token */
  vocab_table conts;  /* tokens starting with the continuation prefix, keyed without it */
  int max_word_chars; /* longer words become [UNK] */
  bool clean_text, handle_chinese, strip_accents, lowercase;
  int32_t cls_id, sep_id, pad_id, unk_id;
  added_token *added; /* matched in the raw text before normalization */
  int n_added;
  added_token *norm_added; /* "normalized": true: matched in the normalized text */
  int n_norm_added;
  size_t norm_max_len; /* longest normalized added token, bytes */
  uint8_t byte_class[256];
  uint8_t ascii_class[128]; /* the class behind BC_ADDED bytes */
  uint8_t ascii_norm[128];  /* lowercased when lowercase */
  int32_t ascii_punct_id[128];
};

/* ---------------------------------------------------------------------- */
/* Hashing and the vocabulary tables                                        */

static inline uint64_t hash_step(uint64_t h, uint8_t b) { return (h ^ b) * HASH_MUL; }

/* FNV-1a mixes the low bits poorly; finish with a murmur-style avalanche. */
static inline uint64_t hash_finish(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h;
}

static uint64_t hash_bytes(const char *s, size_t n) {
  uint64_t h = HASH_SEED;
  for (size_t i = 0; i < n; i++) h = hash_step(h, (uint8_t)s[i]);
  return h;
}

static inline int32_t table_find(const tp_tokenizer *t, const vocab_table *vt, const char *key,
                                 size_t n, uint64_t h) {
  uint64_t f = hash_finish(h);
  uint32_t i = (uint32_t)f & vt->mask, tag = (uint32_t)(f >> 32);
  for (;;) {
    vocab_slot sl = vt->slots[i];
    if (sl.id < 0) return -1;
    if (sl.tag == tag && t->id_lens[sl.id] == n + vt->skip &&
        memcmp(t->id_tokens[sl.id] + vt->skip, key, n) == 0)
      return sl.id;
    i = (i + 1) & vt->mask;
  }
}

/* Later duplicates win, as in HF (its vocab map is filled in file order). */
static void table_insert(tp_tokenizer *t, vocab_table *vt, int32_t id) {
  const char *key = t->id_tokens[id] + vt->skip;
  size_t n = t->id_lens[id] - vt->skip;
  uint64_t f = hash_finish(hash_bytes(key, n));
  uint32_t i = (uint32_t)f & vt->mask, tag = (uint32_t)(f >> 32);
  for (;;) {
    vocab_slot *sl = &vt->slots[i];
    if (sl->id < 0) {
      sl->tag = tag;
      sl->id = id;
      if (n > vt->max_key) vt->max_key = n;
      return;
    }
    if (sl->tag == tag && t->id_lens[sl->id] == n + vt->skip &&
        memcmp(t->id_tokens[sl->id] + vt->skip, key, n) == 0) {
      sl->id = id;
      return;
    }
    i = (i + 1) & vt->mask;
  }
}

static void table_init(vocab_table *vt, size_t count, size_t skip) {
  size_t size = 64;
  while (size < 3 * count) size *= 2; /* load <= 1/3: short probe runs on misses */
  vt->slots = g_new(vocab_slot, size);
  for (size_t i = 0; i < size; i++) vt->slots[i] = (vocab_slot){0, -1};
  vt->mask = (uint32_t)(size - 1);
  vt->skip = skip;
  vt->max_key = 0;
}

/* ---------------------------------------------------------------------- */
/* Unicode classification, as HF's BertNormalizer / BertPreTokenizer        */

/* HF's answer where its Unicode tables differ from GLib's (newer characters,
 * a few changed categories, Rust's lowercase of letter-like symbols). */
static const uni_exception *find_exception(gunichar c) {
  size_t lo = 0, hi = G_N_ELEMENTS(uni_exceptions);
  if (c < uni_exceptions[0].cp) return NULL;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (uni_exceptions[mid].cp < c) lo = mid + 1;
    else hi = mid;
  }
  return lo < G_N_ELEMENTS(uni_exceptions) && uni_exceptions[lo].cp == c ? &uni_exceptions[lo]
                                                                          : NULL;
}

/* Rust's char::is_whitespace (the White_Space property). */
static bool is_white(gunichar c) {
  if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
  switch (c) {
  case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F:
  case 0x3000:
    return true;
  default:
    return c >= 0x2000 && c <= 0x200A;
  }
}

/* HF's is_control: the C* categories except unassigned (Cn), minus \t\n\r. */
static bool is_control(gunichar c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  const uni_exception *x = find_exception(c);
  if (x && x->ctl) return x->ctl == 2;
  switch (g_unichar_type(c)) {
  case G_UNICODE_CONTROL: case G_UNICODE_FORMAT: case G_UNICODE_PRIVATE_USE:
  case G_UNICODE_SURROGATE:
    return true;
  default:
    return false;
  }
}

static bool is_ascii_punct(gunichar c) {
  return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
         (c >= 0x7B && c <= 0x7E);
}

/* BertPreTokenizer: ASCII punctuation (includes symbols like $ + < = > ^ ` | ~)
 * or any Unicode P* category. */
static bool is_punct(gunichar c) {
  if (c < 0x80) return is_ascii_punct(c);
  const uni_exception *x = find_exception(c);
  if (x && x->punct) return x->punct == 2;
  switch (g_unichar_type(c)) {
  case G_UNICODE_CONNECT_PUNCTUATION: case G_UNICODE_DASH_PUNCTUATION:
  case G_UNICODE_CLOSE_PUNCTUATION: case G_UNICODE_FINAL_PUNCTUATION:
  case G_UNICODE_INITIAL_PUNCTUATION: case G_UNICODE_OTHER_PUNCTUATION:
  case G_UNICODE_OPEN_PUNCTUATION:
    return true;
  default:
    return false;
  }
}

/* The CJK ideograph blocks of HF's handle_chinese_chars. */
static bool is_chinese(gunichar c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* Decodes one well-formed UTF-8 sequence (Unicode Table 3-7). Anything else
 * consumes one byte and yields U+FFFD: "each invalid byte is replaced". */
static inline size_t utf8_decode(const uint8_t *s, size_t n, gunichar *cp) {
  uint8_t c = s[0];
  if (c >= 0xC2 && c <= 0xDF) {
    if (n >= 2 && (s[1] & 0xC0) == 0x80) {
      *cp = ((gunichar)(c & 0x1F) << 6) | (s[1] & 0x3F);
      return 2;
    }
  } else if (c >= 0xE0 && c <= 0xEF) {
    uint8_t lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    if (n >= 3 && s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80) {
      *cp = ((gunichar)(c & 0x0F) << 12) | ((gunichar)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
      return 3;
    }
  } else if (c >= 0xF0 && c <= 0xF4) {
    uint8_t lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    if (n >= 4 && s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80) {
      *cp = ((gunichar)(c & 0x07) << 18) | ((gunichar)(s[1] & 0x3F) << 12) |
            ((gunichar)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
      return 4;
    }
  }
  *cp = 0xFFFD;
  return 1;
}

/* ---------------------------------------------------------------------- */
/* Encoding                                                                 */

typedef struct encoder {
  const tp_tokenizer *tok;
  int32_t *ids; /* output of this encoder (several texts for a batch chunk) */
  size_t n, cap;
  size_t pieces, limit; /* pieces emitted for the current text, and the cap */
  bool done;            /* the current text reached its limit */
  uint8_t *word;        /* the current normalized word, UTF-8 */
  size_t wlen, wcap;
  int wchars;
  uint64_t *prefix_hash; /* max key length + 1 */
  int32_t *word_ids;     /* pieces of the current word */
  uint8_t *pend;         /* normalized text that may start a normalized added token */
  size_t plen;
  GString *collect;      /* set: normalized characters go here (normalizing a token) */
} encoder;

static void encoder_init(encoder *e, const tp_tokenizer *t) {
  memset(e, 0, sizeof *e);
  e->tok = t;
  /* Room for max_word_chars + 1 characters of 4 bytes: past that the word is
   * [UNK] whatever its bytes, so the rest is counted but not stored. */
  e->wcap = 4 * ((size_t)t->max_word_chars + 1);
  e->word = g_malloc(e->wcap + 4);
  size_t keys = MAX(t->words.max_key, t->conts.max_key);
  e->prefix_hash = g_new(uint64_t, keys + 1);
  e->word_ids = g_new(int32_t, e->wcap + 1);
  e->pend = g_malloc(t->norm_max_len + 8);
}

static void encoder_clear(encoder *e) {
  g_free(e->word);
  g_free(e->prefix_hash);
  g_free(e->word_ids);
  g_free(e->pend);
  g_free(e->ids);
}

static void out_push(encoder *e, int32_t id) {
  if (G_UNLIKELY(e->n == e->cap)) {
    e->cap = e->cap ? 2 * e->cap : 1024;
    e->ids = g_renew(int32_t, e->ids, e->cap);
  }
  e->ids[e->n++] = id;
}

/* A word piece of the text: counted against the truncation limit. */
static inline void emit(encoder *e, int32_t id) {
  if (e->pieces >= e->limit) {
    e->done = true;
    return;
  }
  e->pieces++;
  out_push(e, id);
}

/* Greedy longest-match-first WordPiece of one normalized word. */
static void wordpiece(encoder *e) {
  const tp_tokenizer *t = e->tok;
  const uint8_t *w = e->word;
  size_t n = e->wlen, start = 0;
  int np = 0;
  if (e->wchars > t->max_word_chars) {
    emit(e, t->unk_id);
    return;
  }
  while (start < n) {
    const vocab_table *vt = start ? &t->conts : &t->words;
    size_t lim = MIN(n - start, vt->max_key);
    uint64_t h = HASH_SEED;
    for (size_t k = 0; k < lim; k++) {
      h = hash_step(h, w[start + k]);
      e->prefix_hash[k + 1] = h;
    }
    int32_t id = -1;
    size_t end = lim;
    for (; end > 0; end--) {
      if (start + end < n && (w[start + end] & 0xC0) == 0x80) continue; /* mid-character */
      id = table_find(t, vt, (const char *)w + start, end, e->prefix_hash[end]);
      if (id >= 0) break;
    }
    if (id < 0) {
      emit(e, t->unk_id);
      return;
    }
    e->word_ids[np++] = id;
    start += end;
  }
  for (int i = 0; i < np && !e->done; i++) emit(e, e->word_ids[i]);
}

static inline void flush_word(encoder *e) {
  if (e->wchars == 0) return;
  wordpiece(e);
  e->wlen = 0;
  e->wchars = 0;
}

static inline void word_push_char(encoder *e, gunichar c) {
  if (e->wlen + 4 <= e->wcap) e->wlen += (size_t)g_unichar_to_utf8(c, (char *)e->word + e->wlen);
  e->wchars++;
}

/* The pre-tokenizer's view of one normalized character. */
static void pretokenize_char(encoder *e, gunichar c) {
  if (is_white(c)) {
    flush_word(e);
  } else if (is_punct(c)) {
    flush_word(e);
    word_push_char(e, c);
    flush_word(e);
  } else {
    word_push_char(e, c);
  }
}

/* Longest token of list at s (leftmost-longest, like HF's matcher), or 0. */
static size_t match_in(const added_token *list, int count, const uint8_t *s, size_t n,
                       int32_t *id) {
  size_t best = 0;
  for (int i = 0; i < count; i++) {
    const added_token *a = &list[i];
    if (a->len > best && a->len <= n && memcmp(a->text, s, a->len) == 0) {
      best = a->len;
      *id = a->id;
    }
  }
  return best;
}

/* Whether some normalized added token is longer than p and starts with it. */
static bool norm_may_grow(const tp_tokenizer *t, const uint8_t *p, size_t n) {
  for (int i = 0; i < t->n_norm_added; i++)
    if (t->norm_added[i].len > n && memcmp(t->norm_added[i].text, p, n) == 0) return true;
  return false;
}

/* Settles the pending normalized text: a normalized added token at its start
 * (the longest) becomes that token, else its first character goes on to the
 * pre-tokenizer; repeated until what is left may still grow into a token
 * (or, when final, until nothing is left). */
static void norm_resolve(encoder *e, bool final) {
  const tp_tokenizer *t = e->tok;
  while (e->plen > 0) {
    if (!final && norm_may_grow(t, e->pend, e->plen)) return;
    int32_t id = -1;
    size_t take = match_in(t->norm_added, t->n_norm_added, e->pend, e->plen, &id);
    if (take) {
      flush_word(e); /* an added token is a word boundary */
      emit(e, id);
    } else {
      take = (size_t)(g_utf8_next_char(e->pend) - (char *)e->pend);
      pretokenize_char(e, g_utf8_get_char((const char *)e->pend));
    }
    memmove(e->pend, e->pend + take, e->plen - take);
    e->plen -= take;
  }
}

/* One character of the normalized text. Normalized added tokens are matched
 * here, between the normalizer and the pre-tokenizer, as HF splits them off
 * the normalized text before pre-tokenizing. */
static void norm_char(encoder *e, gunichar c) {
  if (G_UNLIKELY(e->collect)) {
    g_string_append_unichar(e->collect, c);
    return;
  }
  if (G_LIKELY(e->tok->n_norm_added == 0)) {
    pretokenize_char(e, c);
    return;
  }
  e->plen += (size_t)g_unichar_to_utf8(c, (char *)e->pend + e->plen);
  norm_resolve(e, false);
}

/* End of a stretch of normalized text (end of the text, or a raw added token). */
static void norm_end(encoder *e) {
  norm_resolve(e, true);
  flush_word(e);
}

/* strip_accents (NFD, drop Mn) and lowercase of one character, as HF: NFD
 * then Rust's char::to_lowercase, whose only multi-character result is
 * U+0130 -> "i\u0307". */
static void normalize_char(encoder *e, gunichar c) {
  const tp_tokenizer *t = e->tok;
  gunichar buf[G_UNICHAR_MAX_DECOMPOSITION_LENGTH];
  gsize n = 1;
  buf[0] = c;
  const uni_exception *x = find_exception(c);
  bool keep = false; /* HF neither decomposes nor drops c */
  if (t->strip_accents) {
    if (x && x->strip) {
      keep = x->strip == 1;
      n = keep ? 1 : 0;
    } else {
      n = g_unichar_fully_decompose(c, FALSE, buf, G_N_ELEMENTS(buf));
    }
  }
  for (gsize i = 0; i < n; i++) {
    gunichar d = buf[i];
    if (t->strip_accents && !keep && g_unichar_type(d) == G_UNICODE_NON_SPACING_MARK) continue;
    if (t->lowercase) {
      if (d == 0x130) {
        norm_char(e, 'i');
        norm_char(e, 0x307);
        continue;
      }
      const uni_exception *xd = d == c ? x : find_exception(d);
      d = xd && xd->lower ? xd->lower : g_unichar_tolower(d);
    }
    norm_char(e, d);
  }
}

/* The Unicode path for one non-ASCII character (or U+FFFD for a bad byte). */
static void slow_char(encoder *e, gunichar c) {
  const tp_tokenizer *t = e->tok;
  if (t->clean_text && (c == 0 || c == 0xFFFD || is_control(c))) return;
  if (is_white(c)) { /* clean_text makes it a space */
    norm_char(e, t->clean_text ? ' ' : c);
    return;
  }
  if (t->handle_chinese && is_chinese(c)) { /* padded with spaces */
    norm_char(e, ' ');
    normalize_char(e, c);
    norm_char(e, ' ');
    return;
  }
  normalize_char(e, c);
}

/* The normalized path for one ASCII byte (what the fast path does inline). */
static void ascii_char(encoder *e, uint8_t c) {
  const tp_tokenizer *t = e->tok;
  switch (t->ascii_class[c]) {
  case BC_WORD: norm_char(e, t->ascii_norm[c]); break;
  case BC_SPACE: norm_char(e, t->clean_text ? ' ' : c); break;
  case BC_PUNCT: norm_char(e, c); break;
  default: break; /* dropped */
  }
}

/* One character of the raw text through the normalized path; returns bytes used. */
static size_t one_char(encoder *e, const uint8_t *s, size_t n) {
  if (s[0] < 0x80) {
    ascii_char(e, s[0]);
    return 1;
  }
  gunichar cp;
  size_t used = utf8_decode(s, n, &cp);
  slow_char(e, cp);
  return used;
}

/* Longest raw (not normalized) added token at s, or 0. */
static size_t match_added(const tp_tokenizer *t, const uint8_t *s, size_t n, int32_t *id) {
  return match_in(t->added, t->n_added, s, n, id);
}

/* Appends [CLS] pieces... [SEP] of one text. */
static void encode_text(encoder *e, const uint8_t *s, size_t n, int max_len) {
  const tp_tokenizer *t = e->tok;
  e->pieces = 0;
  e->done = false;
  e->limit = max_len > 0 ? (size_t)MAX(max_len - 2, 0) : SIZE_MAX;
  e->wlen = 0;
  e->wchars = 0;
  e->plen = 0;
  out_push(e, t->cls_id);
  size_t i = 0;
  while (i < n && !e->done) {
    uint8_t c = s[i];
    int cls = t->byte_class[c];
    /* A normalized added token may be under way: character by character. */
    if (G_UNLIKELY(e->plen) && cls != BC_ADDED) cls = BC_SLOW;
    switch (cls) {
    case BC_WORD:
      /* The hot loop: a run of plain ASCII word bytes. */
      do {
        if (G_LIKELY(e->wlen < e->wcap)) e->word[e->wlen++] = t->ascii_norm[c];
        e->wchars++;
        if (++i == n) break;
        c = s[i];
      } while (t->byte_class[c] == BC_WORD);
      break;
    case BC_SPACE:
      flush_word(e);
      i++;
      break;
    case BC_PUNCT:
      flush_word(e);
      emit(e, t->ascii_punct_id[c]);
      i++;
      break;
    case BC_DROP:
      i++;
      break;
    case BC_ADDED: {
      int32_t id;
      size_t m = match_added(t, s + i, n - i, &id);
      if (m > 0) {
        norm_end(e); /* raw added tokens split the text before normalization */
        emit(e, id);
        i += m;
      } else {
        i += one_char(e, s + i, n - i);
      }
      break;
    }
    case BC_SLOW:
      i += one_char(e, s + i, n - i);
      break;
    default: { /* BC_NONASCII */
      gunichar cp;
      i += utf8_decode(s + i, n - i, &cp);
      slow_char(e, cp);
      break;
    }
    }
  }
  if (!e->done) norm_end(e);
  out_push(e, t->sep_id);
}

int tp_tokenizer_encode(const tp_tokenizer *tok, const char *text, size_t len, int max_len,
                        GArray *out) {
  g_return_val_if_fail(tok != NULL && out != NULL && (text != NULL || len == 0), 0);
  encoder e;
  encoder_init(&e, tok);
  encode_text(&e, (const uint8_t *)text, len, max_len);
  g_array_append_vals(out, e.ids, (guint)e.n);
  int n = (int)e.n;
  encoder_clear(&e);
  return n;
}

/* ---------------------------------------------------------------------- */
/* Batches                                                                  */

typedef struct batch_chunk {
  int32_t *ids;
  size_t n;
} batch_chunk;

typedef struct batch_job {
  const tp_tokenizer *tok;
  const char *const *texts;
  const size_t *lens; /* NULL: NUL-terminated */
  int64_t n, chunk, n_chunks;
  int max_len;
  gint next;           /* next chunk to take (atomic) */
  batch_chunk *chunks; /* per chunk, filled by whichever thread took it */
  int64_t *counts;     /* ids per text */
} batch_job;

static gpointer batch_worker(gpointer data) {
  batch_job *job = data;
  encoder e;
  encoder_init(&e, job->tok);
  for (;;) {
    int64_t c = g_atomic_int_add(&job->next, 1);
    if (c >= job->n_chunks) break;
    int64_t lo = c * job->chunk, hi = MIN(lo + job->chunk, job->n);
    e.n = 0;
    for (int64_t i = lo; i < hi; i++) {
      const char *s = job->texts[i] ? job->texts[i] : "";
      size_t len = job->lens ? job->lens[i] : strlen(s);
      size_t before = e.n;
      encode_text(&e, (const uint8_t *)s, len, job->max_len);
      job->counts[i] = (int64_t)(e.n - before);
    }
    /* Hand the buffer to the chunk; the next chunk starts a fresh one. */
    job->chunks[c].ids = e.ids;
    job->chunks[c].n = e.n;
    e.ids = NULL;
    e.n = e.cap = 0;
  }
  encoder_clear(&e);
  return NULL;
}

tp_token_seqs *tp_tokenizer_encode_batch_len(const tp_tokenizer *tok, const char *const *texts,
                                             const size_t *lens, int64_t n, int max_len,
                                             int threads) {
  g_return_val_if_fail(tok != NULL && n >= 0 && (texts != NULL || n == 0), NULL);
  if (threads <= 0) threads = (int)g_get_num_processors();
  batch_job job = {.tok = tok, .texts = texts, .lens = lens, .n = n, .max_len = max_len};
  /* Small chunks balance the load; 16 per thread at least. */
  job.chunk = CLAMP(n / ((int64_t)threads * 16), 1, 256);
  job.n_chunks = (n + job.chunk - 1) / job.chunk;
  job.chunks = g_new0(batch_chunk, MAX(job.n_chunks, 1));
  job.counts = g_new0(int64_t, MAX(n, 1));
  int workers = (int)MIN((int64_t)threads, MAX(job.n_chunks, 1));
  GThread **th = g_new0(GThread *, workers);
  for (int w = 1; w < workers; w++) th[w] = g_thread_new("tp-tokenize", batch_worker, &job);
  batch_worker(&job);
  for (int w = 1; w < workers; w++) g_thread_join(th[w]);
  g_free(th);

  tp_token_seqs *s = g_new0(tp_token_seqs, 1);
  s->n = n;
  s->offsets = g_new(int64_t, n + 1);
  s->offsets[0] = 0;
  for (int64_t i = 0; i < n; i++) s->offsets[i + 1] = s->offsets[i] + job.counts[i];
  s->ids = g_new(int32_t, MAX(s->offsets[n], 1));
  for (int64_t c = 0; c < job.n_chunks; c++) {
    if (job.chunks[c].n)
      memcpy(s->ids + s->offsets[c * job.chunk], job.chunks[c].ids,
             job.chunks[c].n * sizeof(int32_t));
    g_free(job.chunks[c].ids);
  }
  g_free(job.chunks);
  g_free(job.counts);
  return s;
}

tp_token_seqs *tp_tokenizer_encode_batch(const tp_tokenizer *tok, const char *const *texts,
                                         int64_t n, int max_len, int threads) {
  return tp_tokenizer_encode_batch_len(tok, texts, NULL, n, max_len, threads);
}

void tp_token_seqs_free(tp_token_seqs *s) {
  if (!s) return;
  g_free(s->offsets);
  g_free(s->ids);
  g_free(s);
}

/* ---------------------------------------------------------------------- */
/* Loading                                                                  */

/* One (token, id) pair of the file being read. */
typedef struct vocab_entry {
  const char *token;
  int32_t id;
} vocab_entry;

static tp_tokenizer *tokenizer_new(void) {
  tp_tokenizer *t = g_new0(tp_tokenizer, 1);
  t->pool = g_string_chunk_new(1 << 16);
  t->max_word_chars = 100;
  t->clean_text = t->handle_chinese = t->strip_accents = t->lowercase = true;
  t->cls_id = t->sep_id = t->pad_id = t->unk_id = -1;
  return t;
}

void tp_tokenizer_free(tp_tokenizer *tok) {
  if (!tok) return;
  g_free(tok->id_tokens);
  g_free(tok->id_lens);
  g_free(tok->words.slots);
  g_free(tok->conts.slots);
  for (int i = 0; i < tok->n_added; i++) g_free(tok->added[i].text);
  g_free(tok->added);
  for (int i = 0; i < tok->n_norm_added; i++) g_free(tok->norm_added[i].text);
  g_free(tok->norm_added);
  if (tok->pool) g_string_chunk_free(tok->pool);
  g_free(tok);
}

static void set_id_token(tp_tokenizer *t, int32_t id, const char *token) {
  t->id_tokens[id] = g_string_chunk_insert(t->pool, token);
  t->id_lens[id] = (uint32_t)strlen(token);
}

/* Builds the id array and both tables from the vocabulary entries. The id
 * array has one slot per id up to the largest, so an absurd id in a file is
 * checked against the memory it would take before anything is allocated. */
static bool build_vocab(tp_tokenizer *t, const vocab_entry *v, size_t n, const char *prefix,
                        const char *path, GError **err) {
  int32_t max_id = -1;
  const char *max_token = NULL;
  for (size_t i = 0; i < n; i++)
    if (v[i].id > max_id) max_id = v[i].id, max_token = v[i].token;
  for (int i = 0; i < t->n_added; i++)
    if (t->added[i].id > max_id) max_id = t->added[i].id, max_token = t->added[i].text;
  for (int i = 0; i < t->n_norm_added; i++)
    if (t->norm_added[i].id > max_id) max_id = t->norm_added[i].id, max_token = t->norm_added[i].text;
  uint64_t bytes = ((uint64_t)max_id + 1) * (sizeof(char *) + sizeof(uint32_t));
  char what[256];
  g_snprintf(what, sizeof what, "vocabulary '%s': the largest token id, %d (\"%.40s\"), makes "
             "a table of %lld ids that", path, max_id, max_token ? max_token : "",
             (long long)max_id + 1);
  if (!tp_memory_check_host(bytes, what, err)) return false;
  t->n_ids = max_id + 1;
  t->id_tokens = g_new0(char *, MAX(t->n_ids, 1));
  t->id_lens = g_new0(uint32_t, MAX(t->n_ids, 1));
  size_t plen = strlen(prefix), n_cont = 0;
  for (size_t i = 0; i < n; i++) {
    set_id_token(t, v[i].id, v[i].token);
    if (plen && strlen(v[i].token) > plen && strncmp(v[i].token, prefix, plen) == 0) n_cont++;
  }
  for (int i = 0; i < t->n_added; i++)
    if (!t->id_tokens[t->added[i].id]) set_id_token(t, t->added[i].id, t->added[i].text);
  for (int i = 0; i < t->n_norm_added; i++)
    if (!t->id_tokens[t->norm_added[i].id])
      set_id_token(t, t->norm_added[i].id, t->norm_added[i].text);
  table_init(&t->words, n, 0);
  table_init(&t->conts, n_cont, plen);
  for (size_t i = 0; i < n; i++) {
    table_insert(t, &t->words, v[i].id);
    if (plen && t->id_lens[v[i].id] > plen && strncmp(v[i].token, prefix, plen) == 0)
      table_insert(t, &t->conts, v[i].id);
  }
  return true;
}

static void add_added(tp_tokenizer *t, const char *text, int32_t id) {
  t->added = g_renew(added_token, t->added, t->n_added + 1);
  t->added[t->n_added++] = (added_token){g_strdup(text), strlen(text), id};
}

/* A "normalized": true added token; its text is normalized in build_tables. */
static void add_norm_added(tp_tokenizer *t, const char *text, int32_t id) {
  t->norm_added = g_renew(added_token, t->norm_added, t->n_norm_added + 1);
  t->norm_added[t->n_norm_added++] = (added_token){g_strdup(text), strlen(text), id};
}

/* HF matches a normalized added token by its normalized content. */
static void normalize_norm_added(tp_tokenizer *t, encoder *e) {
  int kept = 0;
  for (int i = 0; i < t->n_norm_added; i++) {
    added_token *a = &t->norm_added[i];
    e->collect = g_string_new(NULL);
    for (size_t j = 0; j < a->len;) j += one_char(e, (const uint8_t *)a->text + j, a->len - j);
    g_free(a->text);
    a->len = e->collect->len;
    a->text = g_string_free(e->collect, FALSE);
    e->collect = NULL;
    if (a->len == 0) { /* nothing left to match */
      g_free(a->text);
      continue;
    }
    t->norm_added[kept++] = *a;
    t->norm_max_len = MAX(t->norm_max_len, a->len);
  }
  t->n_norm_added = kept;
}

/* The ASCII tables give, per byte, what the Unicode path would give. */
static void build_tables(tp_tokenizer *t) {
  encoder e;
  encoder_init(&e, t);
  for (int c = 0; c < 128; c++) {
    uint8_t cls;
    if (c == '\t' || c == '\n' || c == '\r' || c == ' ') cls = BC_SPACE;
    else if (t->clean_text && (c == 0 || c < 0x20 || c == 0x7F)) cls = BC_DROP;
    else if (is_white((gunichar)c)) cls = BC_SPACE; /* \v \f without clean_text */
    else if (is_ascii_punct((gunichar)c)) cls = BC_PUNCT;
    else cls = BC_WORD;
    t->ascii_class[c] = cls;
    t->ascii_norm[c] = (uint8_t)(t->lowercase ? g_ascii_tolower((char)c) : c);
    t->ascii_punct_id[c] = t->unk_id;
    if (cls == BC_PUNCT) { /* a punctuation mark is a word of its own */
      e.word[0] = (uint8_t)c;
      e.wlen = 1;
      e.wchars = 1;
      e.n = 0;
      e.pieces = 0;
      e.limit = SIZE_MAX;
      e.done = false;
      wordpiece(&e);
      t->ascii_punct_id[c] = e.ids[0];
    }
  }
  normalize_norm_added(t, &e);
  encoder_clear(&e);
  for (int c = 0; c < 256; c++) t->byte_class[c] = c < 128 ? t->ascii_class[c] : BC_NONASCII;
  for (int i = 0; i < t->n_added; i++)
    if (t->added[i].len) t->byte_class[(uint8_t)t->added[i].text[0]] = BC_ADDED;
  /* ASCII bytes whose normalized form can start a normalized added token
   * leave the fast path (non-ASCII characters always take the Unicode path). */
  for (int i = 0; i < t->n_norm_added; i++) {
    uint8_t first = (uint8_t)t->norm_added[i].text[0];
    for (int c = 0; c < 128; c++) {
      uint8_t cls = t->ascii_class[c];
      uint8_t norm = cls == BC_SPACE && t->clean_text ? ' ' : t->ascii_norm[c];
      if (cls != BC_DROP && norm == first) t->byte_class[c] = BC_ADDED;
    }
  }
}

/* The special tokens of a vocabulary's family: BERT's [CLS] ... [SEP], or
 * <s> ... </s> (MPNet, RoBERTa-style) when the vocabulary has <s> and </s>
 * (MPNet's also has BERT's [CLS] and [SEP], as ordinary tokens). */
typedef struct specials_style {
  const char *cls, *sep, *pad;
} specials_style;

static const specials_style bert_style = {"[CLS]", "[SEP]", "[PAD]"};
static const specials_style roberta_style = {"<s>", "</s>", "<pad>"};

static bool vocab_has(const tp_tokenizer *t, const char *token) {
  return tp_tokenizer_token_to_id(t, token) >= 0;
}

/* The ids the encoder needs. cls_id/sep_id already set (>= 0) by a
 * post-processor are kept; otherwise they come from the vocabulary's style.
 * The pad token may be absent (pad_id -1). */
static bool resolve_specials(tp_tokenizer *t, const char *path, const char *unk, GError **err) {
  const specials_style *st =
      vocab_has(t, "<s>") && vocab_has(t, "</s>") ? &roberta_style : &bert_style;
  t->unk_id = tp_tokenizer_token_to_id(t, unk);
  if (t->cls_id < 0) t->cls_id = tp_tokenizer_token_to_id(t, st->cls);
  if (t->sep_id < 0) t->sep_id = tp_tokenizer_token_to_id(t, st->sep);
  if (t->pad_id < 0) t->pad_id = tp_tokenizer_token_to_id(t, st->pad);
  const char *missing = t->unk_id < 0 ? unk : t->cls_id < 0 ? st->cls : t->sep_id < 0 ? st->sep : NULL;
  if (missing) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "vocabulary '%s' has no %s token: a WordPiece vocabulary needs its unknown "
                "token and the start and end tokens ([CLS] and [SEP], or <s> and </s>)",
                path, missing);
    return false;
  }
  if (t->cls_id >= t->n_ids || t->sep_id >= t->n_ids || t->pad_id >= t->n_ids) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "vocabulary '%s': start/end/pad ids %d/%d/%d of its post-processor or padding "
                "are not ids of the vocabulary (0 .. %d)",
                path, t->cls_id, t->sep_id, t->pad_id, t->n_ids - 1);
    return false;
  }
  return true;
}

/* vocab.txt: one token per line, id = line number (0-based), trailing
 * whitespace trimmed as HF does. */
static bool load_vocab_txt(tp_tokenizer *t, const char *path, char *data, gsize len,
                           GError **err) {
  GPtrArray *lines = g_ptr_array_new();
  size_t pos = 0;
  int line = 0;
  bool ok = true;
  while (pos < len) {
    char *start = data + pos;
    char *nl = memchr(start, '\n', len - pos);
    size_t n = nl ? (size_t)(nl - start) : len - pos;
    pos += n + (nl ? 1 : 0);
    line++;
    if (memchr(start, '\0', n) || !g_utf8_validate(start, (gssize)n, NULL)) {
      g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                  "vocabulary '%s' line %d is not valid UTF-8 text: expected one token per "
                  "line (vocab.txt) or a tokenizer.json",
                  path, line);
      ok = false;
      break;
    }
    while (n > 0 && g_ascii_isspace(start[n - 1])) n--;
    start[n] = '\0';
    g_ptr_array_add(lines, start);
  }
  if (ok && lines->len == 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "vocabulary '%s' is empty: expected one token per line", path);
    ok = false;
  }
  if (ok) {
    vocab_entry *v = g_new(vocab_entry, lines->len);
    bool has_s = false, has_end = false, has_unk = false;
    for (guint i = 0; i < lines->len; i++) {
      v[i] = (vocab_entry){lines->pdata[i], (int32_t)i};
      has_s = has_s || strcmp(v[i].token, "<s>") == 0;
      has_end = has_end || strcmp(v[i].token, "</s>") == 0;
      has_unk = has_unk || strcmp(v[i].token, "[UNK]") == 0;
    }
    /* The special tokens HF's fast tokenizer of the family adds: BertTokenizerFast's
     * five, or MPNetTokenizerFast's <s> </s> <pad> <mask> and its unknown token
     * [UNK] (MPNet's vocabulary has <s> and </s> as well as BERT's [CLS]). */
    bool roberta = has_s && has_end;
    const char *unk = roberta && !has_unk ? "<unk>" : "[UNK]";
    const char *bert_specials[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    const char *roberta_specials[] = {"<s>", "<pad>", "</s>", unk, "<mask>"};
    const char **specials = roberta ? roberta_specials : bert_specials;
    for (guint s = 0; s < 5; s++)
      for (guint i = lines->len; i-- > 0;)
        if (strcmp(lines->pdata[i], specials[s]) == 0) {
          add_added(t, specials[s], (int32_t)i);
          break;
        }
    ok = build_vocab(t, v, lines->len, "##", path, err);
    g_free(v);
    ok = ok && resolve_specials(t, path, unk, err);
  }
  g_ptr_array_free(lines, TRUE);
  return ok;
}

static bool json_fail(GError **err, const char *path, const char *what) {
  g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "tokenizer file '%s': %s", path, what);
  return false;
}

/* A string member, or NULL when absent, null or not a string. */
static const char *json_opt_string(JsonObject *o, const char *name) {
  JsonNode *n = o ? json_object_get_member(o, name) : NULL;
  return n && json_node_get_value_type(n) == G_TYPE_STRING ? json_node_get_string(n) : NULL;
}

static const char *json_type_of(JsonObject *o) { return json_opt_string(o, "type"); }

/* A member that is absent or null reads as NULL. */
static JsonObject *json_opt_object(JsonObject *o, const char *name) {
  JsonNode *n = o ? json_object_get_member(o, name) : NULL;
  return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

static bool json_opt_bool(JsonObject *o, const char *name, bool dflt) {
  JsonNode *n = json_object_get_member(o, name);
  return n && json_node_get_value_type(n) == G_TYPE_BOOLEAN ? json_node_get_boolean(n) : dflt;
}

static bool read_normalizer(tp_tokenizer *t, JsonObject *root, const char *path, GError **err) {
  JsonObject *norm = json_opt_object(root, "normalizer");
  if (!norm) {
    t->clean_text = t->handle_chinese = t->strip_accents = t->lowercase = false;
    return true;
  }
  if (g_strcmp0(json_type_of(norm), "BertNormalizer") != 0)
    return json_fail(err, path, "normalizer is not a BertNormalizer (only BERT WordPiece "
                                "tokenizers are supported)");
  t->clean_text = json_opt_bool(norm, "clean_text", true);
  t->handle_chinese = json_opt_bool(norm, "handle_chinese_chars", true);
  t->lowercase = json_opt_bool(norm, "lowercase", true);
  t->strip_accents = json_opt_bool(norm, "strip_accents", t->lowercase); /* null: as lowercase */
  return true;
}

/* added_tokens whose normalized is false are matched in the raw text. */
static bool read_added_tokens(tp_tokenizer *t, JsonObject *root, const char *path,
                              GError **err) {
  JsonNode *an = json_object_get_member(root, "added_tokens");
  if (!an || JSON_NODE_HOLDS_NULL(an)) return true;
  if (!JSON_NODE_HOLDS_ARRAY(an)) return json_fail(err, path, "added_tokens is not an array");
  JsonArray *arr = json_node_get_array(an);
  for (guint i = 0; i < json_array_get_length(arr); i++) {
    JsonNode *en = json_array_get_element(arr, i);
    JsonObject *a = JSON_NODE_HOLDS_OBJECT(en) ? json_node_get_object(en) : NULL;
    JsonNode *idn = a ? json_object_get_member(a, "id") : NULL;
    JsonNode *cn = a ? json_object_get_member(a, "content") : NULL;
    if (!idn || json_node_get_value_type(idn) != G_TYPE_INT64 || !cn ||
        json_node_get_value_type(cn) != G_TYPE_STRING || json_node_get_int(idn) < 0 ||
        json_node_get_int(idn) > INT32_MAX - 1) {
      char *m = g_strdup_printf("added_tokens[%u] needs a string content and an id >= 0", i);
      json_fail(err, path, m);
      g_free(m);
      return false;
    }
    if (!*json_node_get_string(cn)) continue;
    if (json_opt_bool(a, "normalized", false))
      add_norm_added(t, json_node_get_string(cn), (int32_t)json_node_get_int(idn));
    else
      add_added(t, json_node_get_string(cn), (int32_t)json_node_get_int(idn));
  }
  return true;
}

/* An id member: a JSON integer in 0 .. INT32_MAX - 1, else -1. */
static int32_t json_id(JsonNode *n) {
  if (!n || json_node_get_value_type(n) != G_TYPE_INT64) return -1;
  gint64 v = json_node_get_int(n);
  return v >= 0 && v < INT32_MAX ? (int32_t)v : -1;
}

/* BertProcessing / RobertaProcessing: "cls": ["[CLS]", 101]. */
static int32_t processor_pair_id(JsonObject *pp, const char *name) {
  JsonNode *n = json_object_get_member(pp, name);
  if (!n || !JSON_NODE_HOLDS_ARRAY(n) || json_array_get_length(json_node_get_array(n)) != 2)
    return -1;
  return json_id(json_array_get_element(json_node_get_array(n), 1));
}

/* TemplateProcessing item i of "single" when it is a SpecialToken with one id. */
static int32_t template_special_id(JsonObject *pp, JsonArray *single, guint i) {
  JsonNode *en = json_array_get_element(single, i);
  JsonObject *item = JSON_NODE_HOLDS_OBJECT(en) ? json_node_get_object(en) : NULL;
  const char *name = json_opt_string(json_opt_object(item, "SpecialToken"), "id");
  JsonObject *spec = json_opt_object(json_opt_object(pp, "special_tokens"), name ? name : "");
  JsonNode *ids = spec ? json_object_get_member(spec, "ids") : NULL;
  if (!ids || !JSON_NODE_HOLDS_ARRAY(ids) || json_array_get_length(json_node_get_array(ids)) != 1)
    return -1;
  return json_id(json_array_get_element(json_node_get_array(ids), 0));
}

/* The start and end tokens of a single sequence come from the post-processor
 * (HF adds exactly those). Without one, resolve_specials picks them by the
 * vocabulary's style, as before. */
static bool read_post_processor(tp_tokenizer *t, JsonObject *root, const char *path,
                                GError **err) {
  JsonObject *pp = json_opt_object(root, "post_processor");
  if (!pp) return true;
  const char *type = json_type_of(pp);
  if (g_strcmp0(type, "BertProcessing") == 0 || g_strcmp0(type, "RobertaProcessing") == 0) {
    t->cls_id = processor_pair_id(pp, "cls");
    t->sep_id = processor_pair_id(pp, "sep");
    if (t->cls_id < 0 || t->sep_id < 0)
      return json_fail(err, path, "post_processor needs \"cls\" and \"sep\" as [token, id]");
    return true;
  }
  if (g_strcmp0(type, "TemplateProcessing") == 0) {
    JsonNode *sn = json_object_get_member(pp, "single");
    JsonArray *single = sn && JSON_NODE_HOLDS_ARRAY(sn) ? json_node_get_array(sn) : NULL;
    JsonNode *mid = single && json_array_get_length(single) == 3
                        ? json_array_get_element(single, 1) : NULL;
    JsonObject *seq = mid && JSON_NODE_HOLDS_OBJECT(mid)
                          ? json_opt_object(json_node_get_object(mid), "Sequence") : NULL;
    if (seq) {
      t->cls_id = template_special_id(pp, single, 0);
      t->sep_id = template_special_id(pp, single, 2);
    }
    if (!seq || t->cls_id < 0 || t->sep_id < 0)
      return json_fail(err, path, "post_processor template \"single\" is not supported: "
                                  "expected a start token, the sequence, an end token "
                                  "(\"[CLS] $A [SEP]\"), each special token with one id");
    return true;
  }
  char *m = g_strdup_printf("post_processor type '%s' is not supported (BertProcessing, "
                            "RobertaProcessing or TemplateProcessing)", type ? type : "?");
  json_fail(err, path, m);
  g_free(m);
  return false;
}

static bool load_tokenizer_json(tp_tokenizer *t, const char *path, const char *data, gsize len,
                                GError **err) {
  JsonParser *parser = json_parser_new();
  GError *jerr = NULL;
  bool ok = false;
  vocab_entry *v = NULL;
  if (!json_parser_load_from_data(parser, data, (gssize)len, &jerr)) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "tokenizer file '%s' is not valid JSON: %s",
                path, jerr->message);
    g_error_free(jerr);
    goto out;
  }
  JsonNode *rn = json_parser_get_root(parser);
  JsonObject *root = rn && JSON_NODE_HOLDS_OBJECT(rn) ? json_node_get_object(rn) : NULL;
  JsonObject *model = json_opt_object(root, "model");
  JsonObject *vocab = json_opt_object(model, "vocab");
  if (!vocab) {
    json_fail(err, path, "no model.vocab object (expected a Hugging Face tokenizer.json)");
    goto out;
  }
  const char *type = json_type_of(model);
  if (type && strcmp(type, "WordPiece") != 0) {
    char *m = g_strdup_printf("model type '%s' is not supported (only WordPiece)", type);
    json_fail(err, path, m);
    g_free(m);
    goto out;
  }
  JsonObject *pre = json_opt_object(root, "pre_tokenizer");
  if (g_strcmp0(json_type_of(pre), "BertPreTokenizer") != 0) {
    json_fail(err, path, "pre_tokenizer is not a BertPreTokenizer (only BERT WordPiece "
                         "tokenizers are supported)");
    goto out;
  }
  if (!read_normalizer(t, root, path, err) || !read_added_tokens(t, root, path, err)) goto out;
  const char *unk = json_opt_string(model, "unk_token");
  const char *prefix = json_opt_string(model, "continuing_subword_prefix");
  JsonNode *maxn = json_object_get_member(model, "max_input_chars_per_word");
  if (maxn && json_node_get_value_type(maxn) == G_TYPE_INT64)
    t->max_word_chars = (int)CLAMP(json_node_get_int(maxn), 0, 1 << 20);
  GList *members = json_object_get_members(vocab);
  guint n = g_list_length(members), i = 0;
  v = g_new(vocab_entry, MAX(n, 1));
  for (GList *l = members; l; l = l->next, i++) {
    JsonNode *idn = json_object_get_member(vocab, l->data);
    if (json_node_get_value_type(idn) != G_TYPE_INT64 || json_node_get_int(idn) < 0 ||
        json_node_get_int(idn) > INT32_MAX - 1) {
      char *m = g_strdup_printf("model.vocab['%s'] is not an id >= 0", (const char *)l->data);
      json_fail(err, path, m);
      g_free(m);
      g_list_free(members);
      goto out;
    }
    v[i] = (vocab_entry){l->data, (int32_t)json_node_get_int(idn)};
  }
  g_list_free(members);
  if (n == 0) {
    json_fail(err, path, "model.vocab is empty");
    goto out;
  }
  ok = build_vocab(t, v, n, prefix ? prefix : "##", path, err) &&
       read_post_processor(t, root, path, err) &&
       resolve_specials(t, path, unk ? unk : "[UNK]", err);
  /* A declared padding token ("padding": {"pad_token": ..., "pad_id": ...})
   * wins over [PAD]; its id must be a token of the vocabulary. */
  JsonObject *padding = ok ? json_opt_object(root, "padding") : NULL;
  const char *pad_token = json_opt_string(padding, "pad_token");
  if (pad_token) {
    int32_t id = tp_tokenizer_token_to_id(t, pad_token);
    if (id < 0) {
      char *m = g_strdup_printf("padding.pad_token '%s' is not in the vocabulary", pad_token);
      ok = json_fail(err, path, m);
      g_free(m);
    } else {
      t->pad_id = id;
    }
  }
out:
  g_free(v);
  g_object_unref(parser);
  return ok;
}

static bool looks_like_json(const char *path, const char *data, gsize len) {
  if (g_str_has_suffix(path, ".json")) return true;
  for (gsize i = 0; i < len; i++)
    if (!g_ascii_isspace(data[i])) return data[i] == '{';
  return false;
}

tp_tokenizer *tp_tokenizer_load(const char *path, GError **err) {
  g_return_val_if_fail(path != NULL, NULL);
  char *data = NULL;
  gsize len = 0;
  GError *ferr = NULL;
  if (!g_file_get_contents(path, &data, &len, &ferr)) {
    g_set_error(err, TP_ERROR, TP_ERROR_IO,
                "cannot read vocabulary '%s': %s (give a vocab.txt or tokenizer.json)", path,
                ferr->message);
    g_error_free(ferr);
    return NULL;
  }
  tp_tokenizer *t = tokenizer_new();
  bool ok = looks_like_json(path, data, len) ? load_tokenizer_json(t, path, data, len, err)
                                             : load_vocab_txt(t, path, data, len, err);
  g_free(data);
  if (!ok) {
    tp_tokenizer_free(t);
    return NULL;
  }
  build_tables(t);
  return t;
}

/* ---------------------------------------------------------------------- */
/* Queries                                                                  */

int tp_tokenizer_vocab_size(const tp_tokenizer *tok) { return tok->n_ids; }

int32_t tp_tokenizer_token_to_id(const tp_tokenizer *tok, const char *token) {
  g_return_val_if_fail(tok != NULL && token != NULL, -1);
  size_t n = strlen(token);
  for (int i = tok->n_added; i-- > 0;)
    if (tok->added[i].len == n && memcmp(tok->added[i].text, token, n) == 0)
      return tok->added[i].id;
  for (int i = tok->n_norm_added; i-- > 0;)
    if (tok->norm_added[i].len == n && memcmp(tok->norm_added[i].text, token, n) == 0)
      return tok->norm_added[i].id;
  if (!tok->words.slots) return -1;
  return table_find(tok, &tok->words, token, n, hash_bytes(token, n));
}

const char *tp_tokenizer_id_to_token(const tp_tokenizer *tok, int32_t id) {
  g_return_val_if_fail(tok != NULL, NULL);
  return id >= 0 && id < tok->n_ids ? tok->id_tokens[id] : NULL;
}

int32_t tp_tokenizer_cls_id(const tp_tokenizer *tok) { return tok->cls_id; }
int32_t tp_tokenizer_sep_id(const tp_tokenizer *tok) { return tok->sep_id; }
int32_t tp_tokenizer_pad_id(const tp_tokenizer *tok) { return tok->pad_id; }
int32_t tp_tokenizer_unk_id(const tp_tokenizer *tok) { return tok->unk_id; }

const char *tp_tokenizer_code_id(void) { return TP_VERSION "+" TP_TOKENIZER_CODE_SHA256; }
